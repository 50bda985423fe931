# 060_webhooks.pl: webhooks with the delivery worker and the mock Cloud API.
#
#   - a status that arrives while the worker's request is in flight (before
#     the wamid is recorded) is held and applied when the worker records it,
#     with and without biz_opaque_callback_data;
#   - 131050 from the API fails the message and records a marketing opt-out;
#   - a recipient opted out after enqueue but before the claim is blocked at
#     the claim and never sent, and so is one that Odoo's phone_blacklist
#     (created after enqueue) lists as active;
#   - an inbound STOP, then wa_send: blocked, never sent;
#   - the signature is checked against an independent HMAC (pgcrypto, and
#     one computed by openssl dgst).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $secret = 'tap-app-secret-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('webhooks', mock => $mock,
	'whatsapp.poll_interval' => '60s',
	'whatsapp.max_attempts' => 3);

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAwebhooktoken', app_secret => '$secret',
								   waba_id => '2099887766', max_mps => 1000);
}, 'extension and account with an app secret');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

# A Meta payload of one change, as text.
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
	my ($wamid, $status, $ts, $callback) = @_;
	my $cb = defined $callback ? qq~,"biz_opaque_callback_data":"$callback"~ : '';
	return payload(qq~"statuses":[{"id":"$wamid","status":"$status","timestamp":"$ts",~
		  . qq~"recipient_id":"5215512345678"$cb}]~);
}

sub text_payload
{
	my ($wa_id, $wamid, $body, $ts) = @_;
	$ts //= '1749416383';
	return payload(qq~"contacts":[{"profile":{"name":"Cliente"},"wa_id":"$wa_id"}],~
		  . qq~"messages":[{"from":"$wa_id","id":"$wamid","timestamp":"$ts",~
		  . qq~"type":"text","text":{"body":"$body"}}]~);
}

# X-Hub-Signature-256 of a payload, by openssl dgst (never the code under
# test, and the secret never goes to the server in SQL text).
sub sign
{
	my ($p, $key) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-hmac', $key // $secret ],
		'<', \$p, '>', \$out, '2>', \$err)
	  or BAIL_OUT("openssl dgst failed: $err");
	$out =~ /([0-9a-f]{64})\s*$/ or BAIL_OUT("no digest in: $out");
	return "sha256=$1";
}

# wa_receive of a signed payload; returns its result.
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
		"SELECT whatsapp.wa_send('$to', '$body')");
	die "wa_send failed: $err" if $rc;
	return $out;
}

sub state_of
{
	my ($id) = @_;
	my ($rc, $out) = WaTest::run_psql($node,
		"SELECT state FROM whatsapp.messages WHERE id = $id");
	return $out;
}

# --- 1. The signature ----------------------------------------------------
{
	my $p = text_payload('5215500000001', 'wamid.OPENSSL', 'hola');
	my $sig = sign($p);
	WaTest::psql_is($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '$sig')",
		'1', 'a payload signed by openssl dgst is accepted and stored');
	my $bad = substr($sig, 0, 70) . (substr($sig, 70) eq '0' ? '1' : '0');
	my $e = WaTest::psql_fails($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '$bad')",
		'28000', 'one digit off: 28000');
	like($e, qr/webhook signature does not match the payload/, 'and says so');
	unlike($e, qr/\Q$secret\E/, 'the error does not show the app secret');
	WaTest::psql_fails($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$ || ' ', '$sig')",
		'28000', 'one byte more in the body: 28000');
	WaTest::psql_fails($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, NULL)",
		'28000', 'no signature: 28000');
	WaTest::psql_fails($node, "SELECT whatsapp.wa_receive('{\"object\": ', '$sig')",
		'28000', 'not JSON and signed for other bytes: 28000 (checked before parsing)');
	my $junk = '{"object": ';
	$e = WaTest::psql_fails($node,
		"SELECT whatsapp.wa_receive('$junk', '" . sign($junk) . "')",
		'22P02', 'not JSON, correctly signed: 22P02');
	WaTest::psql_is($node, "SELECT count(*) FROM whatsapp.webhook", '1',
		'only the correctly signed payload was stored');
}

# --- 2. The race: a status before the worker recorded the wamid ----------
# The mock answers after 3 s with a wamid of our choosing; the statuses are
# posted while the request is in flight.
$mock->add_rule({ match => { to => '+525511110001' },
	action => { latency_ms => 3000, status => 200,
		body => { messaging_product => 'whatsapp',
			contacts => [ { input => '+525511110001', wa_id => '5215511110001' } ],
			messages => [ { id => 'wamid.RACE1' } ] } } });
$mock->add_rule({ match => { to => '+525511110002' },
	action => { latency_ms => 3000, status => 200,
		body => { messaging_product => 'whatsapp',
			contacts => [ { input => '+525511110002', wa_id => '5215511110002' } ],
			messages => [ { id => 'wamid.RACE2' } ] } } });
my $r1 = send_text('+52 55 1111 0001', 'race with callback data');
my $r2 = send_text('+52 55 1111 0002', 'race by wamid alone');
ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($r1, $r2)",
		'sending,sending', 30),
	'both requests are in flight');
is(receive(status_payload('wamid.RACE1', 'delivered', '1749416400', $r1)), '1',
	'"delivered" with callback data arrives first: accepted (held)');
is(receive(status_payload('wamid.RACE2', 'read', '1749416460', undef)), '1',
	'"read" without callback data arrives first: accepted (held)');
WaTest::psql_is($node,
	"SELECT string_agg(coalesce((message_id - $r1)::text, '-') || ':' || wamid, ',' ORDER BY id) FROM whatsapp.status_held",
	'0:wamid.RACE1,-:wamid.RACE2', 'both are held');
is(state_of($r1) . ',' . state_of($r2), 'sending,sending', 'the messages are still sending');
ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($r1, $r2)",
		'delivered,read', 30),
	'after the worker recorded the answers, the held statuses are applied');
WaTest::psql_is($node,
	"SELECT wamid, extract(epoch FROM delivered_at)::bigint, extract(epoch FROM read_at)::bigint"
	  . " FROM whatsapp.messages WHERE id IN ($r1, $r2) ORDER BY id",
	"wamid.RACE1|1749416400|\nwamid.RACE2|1749416460|1749416460",
	'with the wamids from the 200 and Meta\'s times');
WaTest::psql_is($node, 'SELECT count(*) FROM whatsapp.status_held', '0', 'nothing stays held');
WaTest::psql_like($node,
	"SELECT string_agg(event || ': ' || message, ' | ' ORDER BY at, event) FROM whatsapp.log WHERE message_id = $r1",
	qr/webhook: status delivered wamid\.RACE1; held until the worker records the message.*webhook: status delivered wamid\.RACE1; message is delivered/,
	'the log shows the status held, then applied');
$mock->clear_rules;

# --- 3. 131050 from the API: failed, and a marketing opt-out -------------
$mock->add_rule({ match => { to => '+573001230050' }, action => { meta_error => 131050 } });
my $seq0 = $mock->last_seq;
my $m50 = send_text('+57 300 123 0050', 'promo');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $m50", 'failed', 30),
	'131050 fails the message');
WaTest::psql_is($node, "SELECT error_code, failure_type FROM whatsapp.messages WHERE id = $m50",
	'131050|whatsapp_unrecoverable', 'with the code');
WaTest::psql_is($node,
	"SELECT identifier, scope, source FROM whatsapp.opt_out WHERE identifier = '+573001230050'",
	'+573001230050|marketing|error 131050', 'and a marketing opt-out is recorded');
WaTest::psql_is($node,
	"SELECT action, scope, source FROM whatsapp.consents WHERE identifier = '+573001230050'",
	'opt_out|marketing|error 131050', 'shown in the consents view');
$mock->clear_rules;
# a marketing template to that number is now blocked; a text is not
WaTest::psql_ok($node,
	"INSERT INTO whatsapp.templates (name, language, category) VALUES ('weekly_offer', 'es', 'MARKETING')",
	'a MARKETING template');
my ($rc, $mt) = WaTest::run_psql($node,
	"SELECT whatsapp.wa_send_template('+57 300 123 0050', 'weekly_offer', 'es')");
WaTest::psql_is($node, "SELECT state, failure_type FROM whatsapp.messages WHERE id = $mt",
	'blocked|opted_out', 'a marketing template to that number is blocked at enqueue');

# --- 4. Opted out between enqueue and the claim: blocked at the claim ----
# The first message holds the pair (3 s at the mock); the second waits
# behind it, queued, while the recipient opts out.
$mock->add_rule({ match => { to => '+34612000001' }, action => { latency_ms => 3000 } });
$seq0 = $mock->last_seq;
my ($a1, $a2);
{
	my ($rc1, $out, $err) = WaTest::run_psql($node, q{
		SELECT whatsapp.wa_send('+34 612 000 001', 'first') || ',' ||
			   whatsapp.wa_send('+34 612 000 001', 'second')});
	($a1, $a2) = split /,/, $out;
}
ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($a1, $a2)",
		'sending,queued', 30),
	'the first is in flight, the second queued behind it');
WaTest::psql_is($node, "SELECT whatsapp.wa_opt_out('+34 612 000 001', reason => 'called the shop')",
	't', 'the recipient opts out meanwhile');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $a2", 'blocked', 30),
	'the second is blocked at the claim');
WaTest::psql_is($node,
	"SELECT m.failure_type, l.event FROM whatsapp.messages m JOIN whatsapp.log l ON l.message_id = m.id WHERE m.id = $a2",
	'opted_out|blocked', 'as opted_out, with a log row');
is(state_of($a1), 'sent', 'the first (already in flight) was sent');
my @req = grep { ($_->{to} // '') eq '+34612000001' } @{ $mock->requests($seq0) };
is(scalar(@req), 1, 'the mock saw only the first');
$mock->clear_rules;

# --- 4b. The same with Odoo's phone_blacklist, created after enqueue ------
# Odoo's phone module may be installed at any time: the worker's claim
# picks the table up when it appears and lets it go when it is dropped.
$mock->add_rule({ match => { to => '+34612000002' }, action => { latency_ms => 3000 } });
$seq0 = $mock->last_seq;
my ($k1, $k2);
{
	my ($rc1, $out, $err) = WaTest::run_psql($node, q{
		SELECT whatsapp.wa_send('+34 612 000 002', 'first') || ',' ||
			   whatsapp.wa_send('+34 612 000 002', 'second')});
	($k1, $k2) = split /,/, $out;
}
ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($k1, $k2)",
		'sending,queued', 30),
	'4b. the first is in flight, the second queued behind it');
WaTest::psql_ok($node, q{
	CREATE TABLE public.phone_blacklist (id serial PRIMARY KEY, number varchar NOT NULL,
										 active boolean,
										 CONSTRAINT phone_blacklist_unique_number UNIQUE (number));
	INSERT INTO public.phone_blacklist (number, active) VALUES ('+34612000002', true);
}, '4b. Odoo blacklists the number meanwhile (the table is new)');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $k2", 'blocked', 30),
	'4b. the second is blocked at the claim');
WaTest::psql_is($node, "SELECT failure_type FROM whatsapp.messages WHERE id = $k2",
	'opted_out', '4b. as opted_out');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $k1", 'sent', 30),
	'4b. the first (already in flight) was sent');
@req = grep { ($_->{to} // '') eq '+34612000002' } @{ $mock->requests($seq0) };
is(scalar(@req), 1, '4b. the mock saw only the first');
$mock->clear_rules;
# an inactive entry blocks nothing; dropping the table leaves the worker well
WaTest::psql_ok($node, "UPDATE public.phone_blacklist SET active = false",
	'4b. the entry is deactivated');
my $k3 = send_text('+34 612 000 002', 'third');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $k3", 'sent', 30),
	'4b. an inactive blacklist entry blocks nothing');
WaTest::psql_ok($node, "DROP TABLE public.phone_blacklist", '4b. Odoo drops the table');
my $k4 = send_text('+34 612 000 003', 'after the drop');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $k4", 'sent', 30),
	'4b. the worker claims without the table once it is gone');

# --- 5. An inbound STOP, then wa_send: blocked, never sent ---------------
is(receive(text_payload('5215512345678', 'wamid.STOP1', 'STOP')), '1', 'an inbound STOP from 521 55 1234 5678');
$seq0 = $mock->last_seq;
my $b1 = send_text('+52 55 1234 5678', 'after STOP');
WaTest::psql_is($node, "SELECT state, failure_type FROM whatsapp.messages WHERE id = $b1",
	'blocked|opted_out', 'wa_send to +52 55 1234 5678 is blocked at once');
# a later ordinary message does not lift it; the message was never sent
is(receive(text_payload('5215512345678', 'wamid.STOP2', 'gracias', '1749416400')), '1', 'an ordinary message later');
my $b2 = send_text('+52 55 1234 5678', 'still blocked');
is(state_of($b2), 'blocked', 'still blocked');
# a message to someone else goes, and proves the worker looked
my $c1 = send_text('+52 55 9999 0000', 'someone else');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $c1", 'sent', 30),
	'a message to someone else is sent');
@req = grep { ($_->{to} // '') eq '+525512345678' } @{ $mock->requests($seq0) };
is(scalar(@req), 0, 'nothing went to the opted-out number');
# START lifts it
is(receive(text_payload('5215512345678', 'wamid.START1', 'Start', '1749416500')), '1', 'START, sent after the STOP');
my $b3 = send_text('+52 55 1234 5678', 'welcome back');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $b3", 'sent', 30),
	'after START, messages go again');

# --- 6. A changed app secret reaches sessions that cached the old one ---
{
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $p1 = text_payload('5215500000061', 'wamid.CACHE1', 'hola');
	my $sig1 = sign($p1);
	is($bg->query_safe("SELECT whatsapp.wa_receive(\$p\$$p1\$p\$, '$sig1')"), '1',
		'a long-lived session verifies with the app secret');
	my $secret2 = $secret . '-rotated';
	my $sig2 = sign($p1, $secret2);
	WaTest::psql_ok($node,
		"SELECT whatsapp.wa_account_set('main', '1099887766', NULL, app_secret => '$secret2', waba_id => '2099887766', max_mps => 1000)",
		'another session changes the app secret');
	my $p2 = text_payload('5215500000061', 'wamid.CACHE2', 'hola');
	my ($out, $ret) = $bg->query("SELECT whatsapp.wa_receive(\$p\$$p2\$p\$, '" . sign($p2) . "')");
	like($bg->{stderr}, qr/webhook signature does not match the payload/,
		'the long-lived session no longer accepts the old secret');
	$bg->{stderr} = '';
	is($bg->query_safe("SELECT whatsapp.wa_receive(\$p\$$p2\$p\$, '" . sign($p2, $secret2) . "')"), '1',
		'and accepts the new one');
	$bg->quit;
	$secret = $secret2;
}

# --- 6b. Meta bans the WABA: the worker holds the account's messages ----
# account_update DISABLED_UPDATE with DISABLE (Meta's documented shape):
# the account is paused, status and accounts say why, nothing is sent;
# REINSTATE resumes it and the queued message goes.
{
	my $ban = '{"object":"whatsapp_business_account","entry":[{"id":"2099887766","time":1749500000,'
	  . '"changes":[{"value":{"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":"DISABLE",'
	  . '"waba_ban_date":"June 20, 2025"}},"field":"account_update"}]}]}';
	is(receive($ban), '1', 'account_update DISABLE is applied');
	WaTest::psql_like($node, "SELECT paused || ' ' || paused_reason FROM whatsapp.accounts WHERE name = 'main'",
		qr/^true Meta disabled \(banned\) WABA 2099887766 on June 20, 2025/, 'accounts says the account is paused, and why');
	WaTest::psql_like($node, "SELECT array_to_string(paused_accounts, ';') FROM whatsapp.status",
		qr/^main: Meta disabled \(banned\) WABA 2099887766/, 'and so does status');
	$seq0 = $mock->last_seq;
	my $held = send_text('+52 55 9999 0061', 'while banned');
	sleep 3;
	is(state_of($held), 'queued', 'a message of the banned account stays queued');
	@req = grep { ($_->{to} // '') eq '+525599990061' } @{ $mock->requests($seq0) };
	is(scalar(@req), 0, 'and nothing reaches the API');
	(my $reinstate = $ban) =~ s/"DISABLE"/"REINSTATE"/;
	$reinstate =~ s/June 20/June 21/;
	is(receive($reinstate), '1', 'REINSTATE is applied');
	WaTest::psql_is($node, "SELECT paused FROM whatsapp.accounts WHERE name = 'main'", 'f',
		'the account is resumed');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $held", 'sent', 30),
		'and the held message is sent');
}

# --- 7. Nothing secret anywhere ------------------------------------------
($rc, my $dump) = WaTest::run_psql($node,
	"SELECT string_agg(message, ' ') FROM whatsapp.log");
unlike($dump, qr/\Q$secret\E/, 'no app secret in whatsapp.log');
unlike(slurp_file($node->logfile), qr/\Q$secret\E/, 'no app secret in the server log');

$node->stop;
$mock->stop;
done_testing();
