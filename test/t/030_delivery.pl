# Delivery through the worker against the mock Cloud API: the exact
# requests, transactional sending, commit and NOTIFY wakes, per-recipient
# order, and the error table (pause, back-off, retry, fail).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(usleep);
use WaTest;

my $mock = WaTest::mock_start();
my $node = WaTest::node('delivery', mock => $mock,
	'whatsapp.poll_interval' => '60s',
	'whatsapp.max_attempts' => 3);

my $token = 'EAAdeliverytoken' . int(rand(1e9));
WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', '} . $token . q{', max_mps => 1000);
}, 'extension and account');

ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60,
		'the worker'), 'a worker serves the database');

sub msg_state
{
	my ($id) = @_;
	my ($rc, $out) = WaTest::run_psql($node,
		"SELECT state FROM whatsapp.messages WHERE id = $id");
	return $out;
}

sub send_text
{
	my ($to, $body) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_send('$to', '$body')");
	die "wa_send failed: $err" if $rc;
	chomp $out;
	return $out;
}

# --- 1. One text message: the exact request -----------------------------
my $seq0 = $mock->last_seq;
my $id = send_text('+52 55 1234 5678', 'Hola desde PostgreSQL');
ok(WaTest::wait_for($node,
		"SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
	'a text message reaches sent');
my @req = @{ $mock->requests($seq0) };
is(scalar(@req), 1, 'exactly one request');
my $r = $req[0];
is($r->{method}, 'POST', 'method POST');
is($r->{path}, '/v24.0/1099887766/messages', 'path has version and phone number id');
is($r->{headers}{authorization}, "Bearer $token", 'Authorization: Bearer with the unsealed token');
is($r->{headers}{'content-type'}, 'application/json', 'JSON content type');
is($r->{body},
	'{"to": "+525512345678", "text": {"body": "Hola desde PostgreSQL"}, "type": "text", '
	  . '"recipient_type": "individual", "messaging_product": "whatsapp", '
	  . qq{"biz_opaque_callback_data": "$id"}
	  . '}',
	'the exact JSON body');
WaTest::psql_is($node,
	"SELECT wamid IS NOT NULL AND wamid LIKE 'wamid.%', wa_id, attempts, sent_at IS NOT NULL"
	  . " FROM whatsapp.messages WHERE id = $id",
	't|525512345678|1|t', 'wamid, wa_id, attempts and sent_at recorded');
WaTest::psql_is($node,
	"SELECT event, attempt, http_status FROM whatsapp.wa_log($id)",
	'http|1|200', 'one log row for the attempt');

# --- 2. Transactional: rollback sends nothing, savepoint rollback neither --
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	BEGIN;
	SELECT whatsapp.wa_send('+5491122334455', 'rolled back');
	ROLLBACK;
	BEGIN;
	SAVEPOINT s;
	SELECT whatsapp.wa_send('+5491122334455', 'savepoint rolled back');
	ROLLBACK TO SAVEPOINT s;
	SELECT whatsapp.wa_send('+5491122334455', 'kept');
	COMMIT;
}, 'rolled back and committed sends');
ok(WaTest::wait_for($node,
		"SELECT count(*) FROM whatsapp.messages WHERE state = 'sent' AND recipient = '+5491122334455'",
		'1', 30), 'only the committed message is sent');
usleep(300_000);
@req = @{ $mock->requests($seq0) };
is(scalar(@req), 1, 'the mock saw exactly one request');
like($req[0]{body}, qr/"kept"/, 'and it is the committed one');

# --- 3. Nothing leaves before commit ------------------------------------
{
	my $bg = $node->background_psql('postgres');
	$seq0 = $mock->last_seq;
	my $out = $bg->query_safe(q{BEGIN; SELECT whatsapp.wa_send('+34612345678', 'after commit');});
	usleep(1_000_000);
	is(scalar(@{ $mock->requests($seq0) }), 0, 'no request while the transaction is open');
	$bg->query_safe('COMMIT');
	ok($mock->wait_requests(1, 10), 'the request leaves after COMMIT');
	$bg->quit;
	# Recording an answer makes the worker claim once more (the
	# recipient's next message may go): let that claim pass before 4.
	chomp $out;
	ok(WaTest::wait_for($node,
			"SELECT state FROM whatsapp.messages WHERE id = $out", 'sent', 10),
		'and is recorded as sent');
	usleep(200_000);
}

# --- 4. NOTIFY whatsapp is a doorbell: rows inserted behind the API -------
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload)
	SELECT id, '+5511912345678', 'text', '{"type": "text", "text": {"body": "direct"}}'
	  FROM whatsapp.account WHERE name = 'main';
}, 'a row inserted directly');
usleep(500_000);
is(scalar(@{ $mock->requests($seq0) }), 0, 'a direct insert does not wake the worker');
WaTest::psql_ok($node, 'NOTIFY whatsapp', 'NOTIFY whatsapp');
ok($mock->wait_requests(1, 10), 'NOTIFY wakes the worker');

# --- 5. Per-recipient order, at most one in flight -----------------------
$mock->add_rule({ match => { to => '+56912345678' }, action => { latency_ms => 150 } });
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_send('+56912345678', 'm' || g) FROM generate_series(1, 5) g;
}, 'five messages to one recipient in one transaction');
ok(WaTest::wait_for($node,
		"SELECT count(*) FROM whatsapp.messages WHERE recipient = '+56912345678' AND state = 'sent'",
		'5', 30), 'all five sent');
@req = grep { ($_->{to} // '') eq '+56912345678' } @{ $mock->requests($seq0) };
is(join(',', map { decode_json($_->{body})->{text}{body} } @req), 'm1,m2,m3,m4,m5',
	'they arrive in enqueue order');
my $overlap = 0;
for my $i (1 .. $#req)
{
	# a request may not start before the previous one was answered
	$overlap++ if $req[$i]{t} < $req[$i - 1]{t} + 140;
}
is($overlap, 0, 'never two in flight for one recipient');
$mock->clear_rules;

# --- 6. Errors ------------------------------------------------------------
# permanent: 131026 fails at once with Meta's details
$mock->add_rule({ match => { to => '+4915123456789' }, action => { meta_error => 131026 } });
$id = send_text('+49 151 23456789', 'undeliverable');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'failed', 30),
	'131026 fails');
WaTest::psql_is($node,
	"SELECT failure_type, error_code, http_status, error_title, fbtrace_id IS NOT NULL, attempts"
	  . " FROM whatsapp.messages WHERE id = $id",
	'whatsapp_unrecoverable|131026|400|(#131026) Message undeliverable|t|1',
	'failure type, code, title and fbtrace_id recorded');

# template error
$mock->add_rule({ match => { to => '+393331234567' }, action => { meta_error => 132001 } });
WaTest::psql_ok($node,
	q{SELECT whatsapp.wa_send_template('+39 333 1234567', 'order_ready', 'it')}, 'a template');
ok(WaTest::wait_for($node,
		"SELECT failure_type FROM whatsapp.messages WHERE recipient = '+393331234567'",
		'template', 30), '132001 fails as template');

# retryable: two 5xx then success
$mock->add_rule({ match => { to => '+573001234567' }, times => 2, action => { status => 503 } });
$id = send_text('+57 300 1234567', 'retry me');
ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
		'sent:3', 30), '5xx is retried with backoff until it succeeds');

# retryable until attempts run out: connection resets
$mock->add_rule({ match => { to => '+56987654321' }, action => { reset => JSON::PP::true } });
$id = send_text('+56987654321', 'reset');
ok(WaTest::wait_for($node, "SELECT state || ':' || failure_type || ':' || attempts FROM whatsapp.messages WHERE id = $id",
		'failed:network:3', 40), 'connection resets fail as network after max_attempts');

# malformed success answer: no wamid, so not sent; retried like a 5xx
$mock->add_rule({ match => { to => '+34699887766' }, times => 1, action => { malformed => JSON::PP::true } });
$id = send_text('+34699887766', 'malformed');
ok(WaTest::wait_for($node, "SELECT state || ':' || attempts || ':' || (wamid LIKE 'wamid.MOCK%') FROM whatsapp.messages WHERE id = $id",
		'sent:2:true', 30), 'a malformed 200 answer is retried, and the retry is sent');
{
	my (undef, $wamid) = WaTest::run_psql($node, "SELECT wamid FROM whatsapp.messages WHERE id = $id");
	WaTest::psql_is($node,
		"SELECT attempt, http_status, message FROM whatsapp.wa_log($id) ORDER BY attempt",
		qq~1|200|HTTP 200 without messages[0].id; answer: {"messages":[{"id":\n2|200|accepted: $wamid~,
		'wa_log: the malformed answer quoted, then the accepted retry');
}

# account back-off: 130429 with Retry-After holds the whole account
$mock->add_rule({ match => { to => '+525598765432' }, times => 1,
		action => { meta_error => 130429, retry_after => 2 } });
$id = send_text('+52 55 9876 5432', 'throttled');
ok(WaTest::wait_for($node, "SELECT backoff_until > now() FROM whatsapp.accounts WHERE name = 'main'",
		't', 20), '130429 sets the account back-off');
WaTest::psql_is($node, "SELECT state, attempts FROM whatsapp.messages WHERE id = $id",
	'queued|0', 'the throttled message is queued again without using an attempt');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
	'and sent once Retry-After has passed');

# token rejected: pause, keep queued, resume with wa_account_set
$mock->add_rule({ match => { any => JSON::PP::true }, action => { meta_error => 190 } });
$id = send_text('+525511112222', 'token');
ok(WaTest::wait_for($node, "SELECT paused FROM whatsapp.accounts WHERE name = 'main'", 't', 20),
	'190 pauses the account');
WaTest::psql_is($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'queued',
	'the message stays queued');
WaTest::psql_like($node, "SELECT array_to_string(paused_accounts, ',') FROM whatsapp.status", qr/main: access token rejected/,
	'the status view says why') if WaTest->can('psql_like');
my ($rc, $log) = WaTest::run_psql($node, "SELECT string_agg(message, ' ') FROM whatsapp.log");
unlike($log, qr/\Q$token\E/, 'no token in whatsapp.log');
unlike(slurp_file($node->logfile), qr/\Q$token\E/, 'no token in the server log');
$mock->clear_rules;
my $token2 = $token . 'b';
WaTest::psql_ok($node,
	"SELECT whatsapp.wa_account_set('main', '1099887766', '$token2')", 'a new token');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
	'wa_account_set resumes delivery');
@req = @{ $mock->requests($mock->last_seq - 1) };
is($req[-1]{headers}{authorization}, "Bearer $token2", 'with the new token');

# --- 7. wa_cancel and wa_retry ---------------------------------------------
$mock->add_rule({ match => { to => '+4917600000001' }, action => { meta_error => 131000 } });
$id = send_text('+4917600000001', 'will fail');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'failed', 40),
	'131000 fails as recoverable after max_attempts');
$mock->clear_rules;
WaTest::psql_is($node, "SELECT whatsapp.wa_retry($id)", 't', 'wa_retry requeues a failed message');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
	'and it is sent');
WaTest::psql_is($node, "SELECT whatsapp.wa_retry($id), whatsapp.wa_cancel($id)", 'f|f',
	'retry and cancel refuse a sent message');

$node->stop;
$mock->stop;
done_testing();
