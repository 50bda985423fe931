# 056_stats.pl: the whatsapp.stats view (issue 10, item 5).
#
#   - exact counters per account: messages sent through the mock, one
#     retried after a 503, one failed by Meta (131026), one failed and one
#     blocked at enqueue; statuses delivered by signed webhooks in and out
#     of order, redelivered, and a failed status (132015, template);
#   - the worker folds the increments into stats_total and the view does
#     not change;
#   - a clean restart and an immediate shutdown (crash) keep every counter
#     that was committed; the counters agree with the messages table;
#   - wa_stats_reset (admin only), privileges (a role without
#     whatsapp_reader or whatsapp_admin reads nothing), no secret column;
#   - another database has counters of its own;
#   - without shared_preload_libraries the view still works and counts the
#     statuses that wa_receive applies.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $secret = 'tap-stats-secret-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('stats', mock => $mock,
	'whatsapp.poll_interval' => '1s',
	'whatsapp.max_attempts' => 3);

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAstatstoken', app_secret => '$secret',
								   waba_id => '2099887766', max_mps => 1000);
	SELECT whatsapp.wa_account_set('other', '1088776655', 'EAAothertoken', max_mps => 1000);
}, 'extension and two accounts');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

# The counters of one account as one line.
my $cols = 'sent, delivered, read, failed, failed_phone_invalid, failed_opted_out,'
  . ' failed_account, failed_template, failed_whatsapp_recoverable,'
  . ' failed_whatsapp_unrecoverable, failed_network, blocked, retried, requests';
sub counters
{
	my ($account, $db) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT $cols FROM whatsapp.stats WHERE account = '$account'",
		dbname => $db // 'postgres');
	die "stats: $err" if $rc;
	return $out;
}

sub payload
{
	my ($value) = @_;
	return '{"object":"whatsapp_business_account","entry":[{"id":"2099887766","changes":'
	  . '[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":'
	  . '{"display_phone_number":"15550001111","phone_number_id":"1099887766"},'
	  . $value . '}}]}]}';
}

sub status_payload
{
	my ($id, $wamid, $recipient, $status, $ts, $error) = @_;
	my $err = defined $error
	  ? qq~,"errors":[{"code":$error,"title":"Template error","message":"Template error",~
	  . qq~"error_data":{"details":"Template parameters do not match"}}]~
	  : '';
	return payload(qq~"statuses":[{"id":"$wamid","status":"$status","timestamp":"$ts",~
		  . qq~"recipient_id":"$recipient","biz_opaque_callback_data":"$id"$err}]~);
}

# X-Hub-Signature-256 by openssl dgst, never by the code under test.
sub sign
{
	my ($p) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-hmac', $secret ],
		'<', \$p, '>', \$out, '2>', \$err)
	  or BAIL_OUT("openssl dgst failed: $err");
	$out =~ /([0-9a-f]{64})\s*$/ or BAIL_OUT("no digest in: $out");
	return "sha256=$1";
}

sub receive
{
	my ($p) = @_;
	my $sig = sign($p);
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '$sig')");
	die "wa_receive failed: $err" if $rc;
	return $out;
}

sub send_text
{
	my ($to, $body) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_send('$to', '$body', account => 'main')");
	die "wa_send failed: $err" if $rc;
	return $out;
}

sub wamid_of
{
	my ($id) = @_;
	my ($rc, $out) = WaTest::run_psql($node, "SELECT wamid FROM whatsapp.messages WHERE id = $id");
	return $out;
}

# --- 1. Counters start at zero, one row per account ----------------------
WaTest::psql_is($node,
	"SELECT account, sent + delivered + read + failed + blocked + retried + requests, request_time, stats_reset IS NULL"
	  . " FROM whatsapp.stats ORDER BY account",
	"main|0|0|t\nother|0|0|t", 'one row per account, all zero, never reset');

# --- 2. Sending through the mock -----------------------------------------
$mock->add_rule({ match => { to => '+4915123456789' }, action => { meta_error => 131026 } });
$mock->add_rule({ match => { to => '+573001234567' }, times => 1, action => { status => 503 } });

my $a = send_text('+52 55 1234 5678', 'Pedido 1001 confirmado');
my $b = send_text('+49 151 23456789', 'Bestellung 2002');
my $c = send_text('+57 300 1234567', 'Pedido 3003');
my $d = send_text('+54 9 11 2345 6789', 'Factura 4004');
# not a number: failed at enqueue (no default country code)
send_text('12', 'nunca');
# opted out: blocked at enqueue
WaTest::psql_ok($node, "SELECT whatsapp.wa_opt_out('+52 55 2222 3333')", 'an opt-out');
send_text('+52 55 2222 3333', 'bloqueado');

ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($a, $b, $c, $d)",
		'sent,failed,sent,sent', 60),
	'three sent (one after a 503), one failed by Meta');
$mock->clear_rules;

WaTest::psql_is($node, "SELECT attempts, failure_type FROM whatsapp.messages WHERE id IN ($b, $c) ORDER BY id",
	"1|whatsapp_unrecoverable\n2|", 'the 131026 failure and the retried message as expected');

#            sent del read failed pi oo acc tpl rec unrec net blocked retried requests
is(counters('main'), '3|0|0|2|1|0|0|0|0|1|0|1|1|5',
	'sent 3, failed 2 (phone_invalid, whatsapp_unrecoverable), blocked 1, retried 1, requests 5');
is(counters('other'), '0|0|0|0|0|0|0|0|0|0|0|0|0|0', 'the other account counts nothing');
WaTest::psql_is($node,
	"SELECT request_time > 0, abs(request_time - (SELECT sum(latency_ms) FROM whatsapp.log l"
	  . " JOIN whatsapp.messages m ON m.id = l.message_id WHERE l.event = 'http' AND m.account = 'main')) < 0.001"
	  . " FROM whatsapp.stats WHERE account = 'main'",
	't|t', 'request_time is the sum of the logged request latencies');

# --- 3. Statuses by signed webhooks --------------------------------------
my ($wa, $wc, $wd) = (wamid_of($a), wamid_of($c), wamid_of($d));
is(receive(status_payload($a, $wa, '5215512345678', 'delivered', '1749416400')), '1', 'a: delivered');
is(receive(status_payload($a, $wa, '5215512345678', 'read', '1749416460')), '1', 'a: read');
# the same bytes again: a redelivery, nothing applied
is(receive(status_payload($a, $wa, '5215512345678', 'delivered', '1749416400')), '0', 'a: redelivered');
# the same status with another timestamp: nothing new
receive(status_payload($a, $wa, '5215512345678', 'delivered', '1749416500'));
# c: read arrives before delivered; the later delivered only moves the time
is(receive(status_payload($c, $wc, '573001234567', 'read', '1749416600')), '1', 'c: read first');
receive(status_payload($c, $wc, '573001234567', 'delivered', '1749416550'));
# d: Meta fails it after sending (a template error)
is(receive(status_payload($d, $wd, '5491123456789', 'failed', '1749416700', 132015)), '1', 'd: failed');
# a failed status after read is only logged
receive(status_payload($a, $wa, '5215512345678', 'failed', '1749416800', 132015));

WaTest::psql_is($node, "SELECT string_agg(state || ':' || coalesce(failure_type, ''), ',' ORDER BY id)"
	  . " FROM whatsapp.messages WHERE id IN ($a, $c, $d)",
	'read:,read:,failed:template', 'the states the statuses made');
is(counters('main'), '3|2|2|3|1|0|0|1|0|1|0|1|1|5',
	'delivered 2 and read 2 (each message once), failed 3 with template 1');

# --- 4. The fold changes nothing in the view -----------------------------
ok(WaTest::wait_for($node, 'SELECT count(*) FROM whatsapp.stats_delta', '0', 30),
	'the worker folded every increment');
WaTest::psql_is($node, "SELECT sent, delivered, read, failed, requests FROM whatsapp.stats_total t"
	  . " JOIN whatsapp.account a ON a.id = t.account_id WHERE a.name = 'main'",
	'3|2|2|3|5', 'stats_total holds the folded counters');
is(counters('main'), '3|2|2|3|1|0|0|1|0|1|0|1|1|5', 'the view is the same after the fold');

# The counters agree with the outbox.
my $agree = "SELECT s.sent = (SELECT count(*) FROM whatsapp.messages WHERE account = s.account AND sent_at IS NOT NULL)"
  . " AND s.delivered = (SELECT count(*) FROM whatsapp.messages WHERE account = s.account AND delivered_at IS NOT NULL)"
  . " AND s.read = (SELECT count(*) FROM whatsapp.messages WHERE account = s.account AND read_at IS NOT NULL)"
  . " AND s.failed = (SELECT count(*) FROM whatsapp.messages WHERE account = s.account AND state = 'failed')"
  . " AND s.blocked = (SELECT count(*) FROM whatsapp.messages WHERE account = s.account AND state = 'blocked')"
  . " AND s.requests = (SELECT count(*) FROM whatsapp.log l JOIN whatsapp.messages m ON m.id = l.message_id"
  . "                    WHERE m.account = s.account AND l.event = 'http')"
  . " FROM whatsapp.stats s WHERE s.account = 'main'";
WaTest::psql_is($node, $agree, 't', 'the counters agree with the messages and the log');

# --- 5. A clean restart ---------------------------------------------------
$node->restart;
is(counters('main'), '3|2|2|3|1|0|0|1|0|1|0|1|1|5', 'after a clean restart: the same counters');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'the worker is back');

# --- 6. A crash (immediate shutdown) -------------------------------------
my $e = send_text('+52 55 8765 4321', 'Pedido 5005');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $e", 'sent', 60),
	'another message sent');
my $we = wamid_of($e);
# A synchronous commit (the webhook) also makes the worker's asynchronous
# record of e durable: its commit record is earlier in the WAL.
is(receive(status_payload($e, $we, '5215587654321', 'delivered', '1749417000')), '1', 'e: delivered');
# Increments not folded yet (poll every 1 s; the status is counted at once).
is(counters('main'), '4|3|2|3|1|0|0|1|0|1|0|1|1|6', 'sent 4, delivered 3, requests 6 before the crash');
$node->stop('immediate');
$node->start;
is(counters('main'), '4|3|2|3|1|0|0|1|0|1|0|1|1|6',
	'after an immediate shutdown: every committed counter is there');
WaTest::psql_is($node, $agree, 't', 'and they agree with the messages and the log');

# --- 7. wa_stats_reset ----------------------------------------------------
WaTest::psql_fails($node, "SELECT whatsapp.wa_stats_reset('nosuch')", '42704',
	'resetting an unknown account: 42704');
WaTest::psql_ok($node, "SELECT whatsapp.wa_stats_reset('main')", 'reset main');
is(counters('main'), '0|0|0|0|0|0|0|0|0|0|0|0|0|0', 'main is zero after its reset');
WaTest::psql_is($node, "SELECT account, stats_reset IS NOT NULL, stats_reset <= now() FROM whatsapp.stats ORDER BY account",
	"main|t|t\nother|f|", 'stats_reset is set for main only');
is(receive(status_payload($d, $wd, '5491123456789', 'failed', '1749416700', 132016)), '0',
	'a status that changes nothing');
is(counters('main'), '0|0|0|0|0|0|0|0|0|0|0|0|0|0', 'counts nothing');

# --- 8. Privileges ---------------------------------------------------------
WaTest::psql_ok($node, q{
	CREATE ROLE stats_nobody LOGIN;
	CREATE ROLE stats_reader LOGIN IN ROLE whatsapp_reader;
	CREATE ROLE stats_sender LOGIN IN ROLE whatsapp_sender;
	CREATE ROLE stats_admin LOGIN IN ROLE whatsapp_admin;
}, 'roles');
WaTest::psql_fails($node, 'SET ROLE stats_nobody; SELECT * FROM whatsapp.stats', '42501',
	'a role without grants cannot read whatsapp.stats');
WaTest::psql_fails($node, 'SET ROLE stats_sender; SELECT * FROM whatsapp.stats', '42501',
	'whatsapp_sender cannot read whatsapp.stats');
WaTest::psql_is($node, "SET ROLE stats_reader; SELECT count(*) FROM whatsapp.stats", '2',
	'whatsapp_reader reads whatsapp.stats');
WaTest::psql_is($node, "SET ROLE stats_admin; SELECT count(*) FROM whatsapp.stats", '2',
	'whatsapp_admin reads whatsapp.stats');
WaTest::psql_fails($node, "SET ROLE stats_reader; SELECT * FROM whatsapp.stats_total", '42501',
	'whatsapp_reader cannot read the tables behind it');
WaTest::psql_fails($node, "SET ROLE stats_reader; SELECT whatsapp.wa_stats_reset()", '42501',
	'whatsapp_reader cannot reset');
WaTest::psql_fails($node, "SET ROLE stats_nobody; SELECT whatsapp.wa_stats_reset()", '42501',
	'nor can a role without grants');
WaTest::psql_ok($node, "SET ROLE stats_admin; SELECT whatsapp.wa_stats_reset()", 'whatsapp_admin resets every account');
WaTest::psql_is($node, "SELECT count(*) FROM whatsapp.stats WHERE stats_reset IS NOT NULL", '2',
	'both accounts were reset');
WaTest::psql_is($node,
	"SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute"
	  . " WHERE attrelid = 'whatsapp.stats'::regclass AND attnum > 0",
	'account,sent,delivered,read,failed,failed_phone_invalid,failed_opted_out,failed_account,'
	  . 'failed_template,failed_whatsapp_recoverable,failed_whatsapp_unrecoverable,failed_network,'
	  . 'blocked,retried,requests,request_time,stats_reset',
	'the columns of the view: counters and the account name, no secret, no number');

# --- 8b. The worker's other paths -----------------------------------------
# Opted out after enqueue, in the same transaction: blocked by the claim.
WaTest::psql_ok($node, q{
	BEGIN;
	SELECT whatsapp.wa_send('+52 55 4444 5555', 'tarde', account => 'main');
	SELECT whatsapp.wa_opt_out('+52 55 4444 5555');
	COMMIT;
}, 'queued, then opted out before the claim');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE recipient = '+525544445555'",
		'blocked', 30), 'blocked at the claim');
# An account without a token: the worker fails its queued messages as
# "account" when it loads the accounts (here after the second
# wa_account_set, which changes only max_mps and keeps no token).
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_account_set('notoken', '1066554433', '');
	SELECT whatsapp.wa_send('+52 55 6666 7777', 'sin token', account => 'notoken');
	SELECT whatsapp.wa_account_set('notoken', '1066554433', NULL, max_mps => 500);
}, 'an account without a token, and a message for it');
ok(WaTest::wait_for($node, "SELECT state || ':' || failure_type FROM whatsapp.messages WHERE recipient = '+525566667777'",
		'failed:account', 30), 'failed as account by the worker');
# In doubt: in flight when the server stops at once; whatsapp.in_doubt = fail.
$mock->add_rule({ match => { to => '+525588889999' }, action => { latency_ms => 8000 } });
my $g = send_text('+52 55 8888 9999', 'en vuelo');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $g", 'sending', 30),
	'a request in flight');
$node->stop('immediate');
$node->append_conf('postgresql.conf', "whatsapp.in_doubt = 'fail'\n");
$node->start;
ok(WaTest::wait_for($node, "SELECT state || ':' || failure_type FROM whatsapp.messages WHERE id = $g",
		'failed:network', 60), 'failed in doubt after the restart');
$mock->clear_rules;
#            sent del read failed pi oo acc tpl rec unrec net blocked retried requests
is(counters('main'), '0|0|0|1|0|0|0|0|0|0|1|1|0|0',
	'main: blocked 1 at the claim, failed 1 in doubt (network), no request (its answer was lost)');
is(counters('notoken'), '0|0|0|1|0|0|1|0|0|0|0|0|0|0', 'notoken: failed 1 as account');
WaTest::psql_ok($node, 'SELECT whatsapp.wa_stats_reset()', 'every account reset again');

# --- 9. Another database counts on its own -------------------------------
WaTest::psql_ok($node, q{CREATE DATABASE stats2}, 'a second database');
WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1077665544', 'EAAsecond', max_mps => 1000);
	SELECT whatsapp.wa_send('34', 'nunca', account => 'main');
}, 'the extension, an account and a failed send there', dbname => 'stats2');
is(counters('main', 'stats2'), '0|0|0|1|1|0|0|0|0|0|0|0|0|0', 'stats2: its own failure');
is(counters('main'), '0|0|0|0|0|0|0|0|0|0|0|0|0|0', 'postgres: nothing of stats2');

# --- 10. Without shared_preload_libraries ---------------------------------
my $f = send_text('+52 55 3333 4444', 'Pedido 6006');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $f", 'sent', 60),
	'one more message sent');
my $wf = wamid_of($f);
ok(WaTest::wait_for($node, 'SELECT count(*) FROM whatsapp.stats_delta', '0', 30),
	'folded before the restart');
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''\n");
$node->restart;
WaTest::psql_is($node, "SHOW shared_preload_libraries", '', 'the library is not preloaded');
is(receive(status_payload($f, $wf, '5215533334444', 'read', '1749418000')), '1', 'f: read, without preloading');
is(counters('main'), '1|1|1|0|0|0|0|0|0|0|0|0|0|1',
	'the view works and counts what wa_receive applied (not folded: no worker)');
WaTest::psql_is($node, 'SELECT count(*) > 0 FROM whatsapp.stats_delta', 't', 'the increments wait unfolded');

$node->stop;
$mock->stop;
done_testing();
