# 085_hostile_endpoint.pl: a hostile or broken Cloud API endpoint costs the
# worker bounded resources.
#
#   1. An answer body over 64 kB aborts the transfer; the mock sees the
#      client close before it could send everything (announced with a
#      Content-Length, and chunked).  The message is classified by the
#      status alone.
#   2. An HTTP 200 without messages[0].id is not sent: it is retried like a
#      5xx, and wa_log quotes the answer, cut at 512 bytes.
#   3. Retry-After is honored up to one hour, in seconds or as an HTTP
#      date.
#   4. Pooled connections: when the server closes them, when whatsapp.api_url
#      changes and when the server goes away, the worker holds no socket to
#      it a few seconds later (no CLOSE-WAIT).
#   5. Over https: a new api_url forgets that the old server spoke only
#      HTTP/1.1 (and so caps connections for HTTP/2 again until the new
#      one answers).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use IPC::Run;
use POSIX qw(strftime);
use Time::HiRes qw(time usleep);
use WaTest;

my $mock = WaTest::mock_start(name => 'hostile');
my $node = WaTest::node('hostile', mock => $mock,
	'whatsapp.poll_interval' => '60s',
	'whatsapp.max_attempts' => 3);

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAhostilemain', max_mps => 1000);
	SELECT whatsapp.wa_account_set('limited', '1099887767', 'EAAhostilelimited', max_mps => 1000);
}, 'extension and two accounts');
my $wpid = '';
ok(WaTest::wait_until(sub { ($wpid = WaTest::worker_pid($node)) ne '' }, 60, 'the worker'),
	'a worker serves the database');

sub q1
{
	my ($sql) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node, $sql);
	die "query failed: $sql\n$err" if $rc;
	return $out;
}

sub send_text
{
	my ($to, $body, $account) = @_;
	my $acc = defined $account ? ", account => '$account'" : '';
	return q1("SELECT whatsapp.wa_send('$to', '$body'$acc)");
}

sub wa_log
{
	my ($id) = @_;
	return q1("SELECT attempt || '|' || coalesce(http_status::text, '') || '|' || message"
		  . " FROM whatsapp.wa_log($id) WHERE event = 'http' ORDER BY attempt");
}

# The mock's record of the request for message $id, once it knows whether
# the client read the whole answer.
sub settled_record
{
	my ($id) = @_;
	my $rec;
	WaTest::wait_until(
		sub {
			my $r = $mock->requests(0, callback => $id);
			$rec = $r->[0];
			return $rec && defined $rec->{response_complete};
		},
		30, "the mock's record of message $id");
	return $rec;
}

my $big = 64 * 1024 * 1024;

# ---------------------------------------------------------------------
# 1. Oversized answers are aborted, not drained
# ---------------------------------------------------------------------
{
	# 64 MB announced with Content-Length, as a 200: cut before the body
	$mock->add_rule({ match => { to => '+4915112340001' }, times => 1,
			action => { body_bytes => $big } });
	my $t0 = time();
	my $id = send_text('+4915112340001', 'huge 200');
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
			'sent:2', 30), '1. a 200 with a 64 MB body is not sent; its retry is');
	my $rec = settled_record($id);
	is($rec->{response_bytes}, $big, '1. the mock offered 64 MB');
	ok(defined $rec->{response_complete} && !$rec->{response_complete},
		'1. and the worker closed the connection before reading it');
	is(wa_log($id),
		"1|200|HTTP 200 with an answer over 65536 bytes; answer: ... (over 65536 bytes; not read further)\n"
		  . "2|200|accepted: " . q1("SELECT wamid FROM whatsapp.messages WHERE id = $id"),
		'1. wa_log: the aborted answer, then the accepted retry');

	# 64 MB chunked (no length announced), as a Meta 5xx: cut while reading
	$mock->add_rule({ match => { to => '+4915112340002' }, times => 1,
			action => { meta_error => 131000, body_bytes => $big, chunked => JSON::PP::true } });
	$id = send_text('+4915112340002', 'huge 500');
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
			'sent:2', 30), '1. a 500 with a 64 MB chunked body is retried like a 5xx');
	$rec = settled_record($id);
	ok(defined $rec->{response_complete} && !$rec->{response_complete},
		'1. the chunked body was not read to its end');
	like(wa_log($id),
		qr/^1\|500\|HTTP 500, answer over 65536 bytes: not read further; answer: \{"error":\{"message":"\(#131000\) Something went wrong".{300,}\.\.\. \(over 65536 bytes; not read further\)\n2\|200\|accepted: wamid\.MOCK\d+$/,
		'1. wa_log: status, the start of the answer, and that it was cut');

	# an oversized 4xx fails at once, by its status
	$mock->add_rule({ match => { to => '+4915112340003' }, times => 1,
			action => { status => 400, body_bytes => 200_000 } });
	$id = send_text('+4915112340003', 'huge 400');
	ok(WaTest::wait_for($node,
			"SELECT state || ':' || failure_type || ':' || http_status || ':' || error_title FROM whatsapp.messages WHERE id = $id",
			'failed:whatsapp_unrecoverable:400:HTTP 400', 30),
		'1. a 400 with an oversized body fails at once, by its status');
	ok(time() - $t0 < 30, '1. none of this took long');
}

# ---------------------------------------------------------------------
# 2. HTTP 200 without messages[0].id
# ---------------------------------------------------------------------
{
	my $to = '+573001230004';
	my $answer = '{"messaging_product":"whatsapp","contacts":[{"input":"' . $to
	  . '","wa_id":"573001230004"}],"messages":[]}';
	$mock->add_rule({ match => { to => $to }, action => { status => 200, body => $answer } });
	my $seq = $mock->last_seq;
	my $id = send_text($to, 'no id');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'failed', 40),
		'2. a 200 without messages[0].id never counts as sent');
	is(q1("SELECT failure_type || '|' || attempts || '|' || error_title || '|' || (wamid IS NULL) || '|' || (sent_at IS NULL)"
			  . " FROM whatsapp.messages WHERE id = $id"),
		'whatsapp_recoverable|3|HTTP 200 without messages[0].id|true|true',
		'2. it is retried like a 5xx until max_attempts, then fails as whatsapp_recoverable');
	is(scalar @{ $mock->requests($seq, callback => $id) }, 3, '2. the mock got exactly 3 requests for it');
	my $line = "HTTP 200 without messages[0].id; answer: $answer";
	is(wa_log($id), join("\n", map { "$_|200|$line" } 1 .. 3), '2. each attempt in wa_log, with the answer');
	$mock->clear_rules;

	# a long answer without an id is quoted up to 512 bytes
	$to = '+573001230005';
	$mock->add_rule({ match => { to => $to }, times => 1,
			action => { status => 200, body => { messaging_product => 'whatsapp', messages => [ { status => 'accepted' } ] },
				body_bytes => 3000 } });
	$id = send_text($to, 'long no id');
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id", 'sent:2', 30),
		'2. a long answer without an id is retried, and the retry is sent');
	my ($first) = split /\n/, wa_log($id);
	# (WaTest sends rules with their keys sorted)
	my $quoted = '{"messages":[{"status":"accepted"}],"messaging_product":"whatsapp","padding":"';
	$quoted .= 'x' x (512 - length($quoted));
	is($first, "1|200|HTTP 200 without messages[0].id; answer: $quoted... (3000 bytes)",
		'2. wa_log quotes its first 512 bytes and its length');

	# bytes outside printable ASCII are quoted as \xNN, whatever the encoding
	$to = '+573001230006';
	$mock->add_rule({ match => { to => $to }, times => 1,
			action => { status => 200, body => "{\"messages\":[{\"id\":\"\"}],\"note\":\"caf\x{e9}\\\\\"}" } });
	$id = send_text($to, 'empty id');
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id", 'sent:2', 30),
		'2. an empty id is no id either');
	($first) = split /\n/, wa_log($id);
	is($first, '1|200|HTTP 200 without messages[0].id; answer: {"messages":[{"id":""}],"note":"caf\xc3\xa9\x5c\x5c"}',
		'2. non-ASCII bytes and backslashes are quoted as \xNN');
}

# ---------------------------------------------------------------------
# 3. Retry-After is capped at one hour
# ---------------------------------------------------------------------

# The back-off of account "limited", in seconds from now (empty: none).
sub backoff_s
{
	return q1("SELECT round(extract(epoch FROM backoff_until - now()))"
		  . " FROM whatsapp.accounts WHERE name = 'limited'");
}

# wa_account_set clears a back-off.
sub clear_backoff
{
	q1("SELECT whatsapp.wa_account_set('limited', '1099887767', NULL, max_mps => 1000)");
	WaTest::wait_for($node,
		"SELECT backoff_until IS NULL FROM whatsapp.accounts WHERE name = 'limited'", 't', 10);
	return;
}

{
	$mock->add_rule({ match => { to => '+34611000001' }, times => 1,
			action => { meta_error => 130429, retry_after => 999999999 } });
	my $id = send_text('+34611000001', 'throttled for years', 'limited');
	ok(WaTest::wait_for($node,
			"SELECT state || ':' || attempts || ':' || (next_attempt_at > now()) FROM whatsapp.messages WHERE id = $id",
			'queued:0:true', 30),
		'3. a 130429 with Retry-After: 999999999 requeues the message, its attempt given back');
	my $b = backoff_s();
	ok($b >= 3500 && $b <= 3601, '3. the account backs off for one hour, not 31 years')
	  or diag("back-off: $b s");
	is(q1("SELECT round(extract(epoch FROM next_attempt_at - now())) BETWEEN 3500 AND 3601"
			  . " FROM whatsapp.messages WHERE id = $id"), 't', '3. so does the message');
	is(wa_log($id), '1|429|HTTP 429, code 130429: (#130429) Rate limit hit; Retry-After 999999999 s cut to 3600 s',
		'3. wa_log says the Retry-After was cut');

	# an HTTP date far ahead is cut too; a near one is honored
	clear_backoff();
	$mock->add_rule({ match => { to => '+34611000002' }, times => 1,
			action => { meta_error => 130429, headers => { 'Retry-After' => 'Thu, 31 Dec 2099 23:59:59 GMT' } } });
	$id = send_text('+34611000002', 'throttled until 2099', 'limited');
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
			'queued:0', 30), '3. Retry-After as an HTTP date in 2099: requeued');
	$b = backoff_s();
	ok($b >= 3500 && $b <= 3601, '3. and backed off for one hour') or diag("back-off: $b s");
	like(wa_log($id), qr/; Retry-After \d+ s cut to 3600 s$/, '3. reported as cut');

	clear_backoff();
	my $date = strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime(time() + 120));
	$mock->add_rule({ match => { to => '+34611000003' }, times => 1,
			action => { meta_error => 130429, headers => { 'Retry-After' => $date } } });
	$id = send_text('+34611000003', 'throttled for two minutes', 'limited');
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
			'queued:0', 30), '3. Retry-After as an HTTP date two minutes ahead: requeued');
	$b = backoff_s();
	ok($b >= 100 && $b <= 121, '3. and honored as it is') or diag("back-off: $b s");
	is(wa_log($id), '1|429|HTTP 429, code 130429: (#130429) Rate limit hit', '3. not reported as cut');

	clear_backoff();
	$id = send_text('+34611000004', 'after the back-off', 'limited');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'3. the account sends again once the back-off is cleared');
}

# ---------------------------------------------------------------------
# 4. Pooled connections do not outlive the server's side
# ---------------------------------------------------------------------

# Sends $n messages at once, answered after 300 ms, so that each needs a
# connection of its own; returns when all are sent.
my $burst_no = 0;
sub burst
{
	my ($n, $what) = @_;
	$burst_no++;
	my $first = sprintf('+3465%02d%05d', $burst_no, 0);
	my @to = map { sprintf('+3465%02d%05d', $burst_no, $_) } 1 .. $n;
	$mock->add_rule({ match => { to => \@to }, times => $n, action => { latency_ms => 300 } });
	q1("SELECT whatsapp.wa_send('+3465' || lpad('$burst_no', 2, '0') || lpad(g::text, 5, '0'), 'burst')"
		  . " FROM generate_series(1, $n) g");
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE state = 'sent' AND recipient LIKE '"
			  . substr($first, 0, 7) . "%'", "$n", 30), "4. $what: $n messages sent at once");
	return;
}

sub sockets
{
	my ($port) = @_;
	my $s = WaTest::tcp_sockets($wpid, $port);
	die "cannot inspect the worker's sockets" unless defined $s;
	return $s;
}

# Waits up to $secs for the worker to hold no socket to $port.
sub no_sockets_within
{
	my ($port, $secs) = @_;
	my $left;
	my $ok = WaTest::wait_until(sub { $left = sockets($port); return @$left == 0; },
		$secs, "the worker to close its sockets to port $port");
	diag('still held: ' . join(', ', @$left)) unless $ok;
	return $ok;
}

{
	my $n = 20;
	my $port = $mock->port;

	# a server that closes its idle connections
	burst($n, 'the server closes its side');
	my $held = sockets($port);
	ok(@$held >= $n && !grep({ $_ ne 'ESTABLISHED' } @$held),
		"4. the idle worker keeps its $n connections open") or diag("held: @$held");
	ok(WaTest::wait_until(sub { $mock->connections == @$held }, 5, 'the mock to agree'),
		'4. the mock counts as many');
	my $logpos = -s $node->logfile;
	ok($mock->close_connections >= @$held, '4. the mock closes them all');
	ok(no_sockets_within($port, 5), '4. within 5 s the worker holds no socket to it (none in CLOSE-WAIT)');
	like(slurp_file($node->logfile, $logpos),
		qr/whatsapp worker closed \d+ pooled connections: the server closed some of them/,
		'4. the log says so (debug1)');
	is(WaTest::worker_pid($node), $wpid, '4. the same worker');

	my $id = send_text('+34600000401', 'after the close');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'4. it sends again on fresh connections');

	# whatsapp.api_url changes: the connections to the old server go
	burst($n, 'before api_url changes');
	ok(@{ sockets($port) } >= $n, '4. the worker holds its connections again');
	my $mock2 = WaTest::mock_start(name => 'hostile2');
	$logpos = -s $node->logfile;
	q1("ALTER SYSTEM SET whatsapp.api_url = '" . $mock2->url . "'; SELECT pg_reload_conf();");
	ok(no_sockets_within($port, 5), '4. within 5 s of the reload, no socket to the old server');
	ok(WaTest::wait_until(sub { $mock->connections == 0 }, 5, 'the old mock to see them closed'),
		'4. which sees them closed');
	like(slurp_file($node->logfile, $logpos), qr/whatsapp worker: the API endpoint changed/,
		'4. the log says the endpoint changed');
	my $seq2 = $mock2->last_seq;
	$id = send_text('+34600000402', 'to the new server');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'4. messages go to the new URL');
	is(scalar @{ $mock2->requests($seq2) }, 1, '4. the new server got it');

	# the server goes away altogether
	$mock = $mock2;
	burst($n, 'a server that then goes away');
	my $port2 = $mock2->port;
	ok(@{ sockets($port2) } >= $n, '4. the worker holds connections to the new server');
	$mock2->stop;
	ok(no_sockets_within($port2, 5), '4. within 5 s of the server going away, no socket to it');
	is(WaTest::worker_pid($node), $wpid, '4. still the same worker');
}

# ---------------------------------------------------------------------
# 5. Over https, what the old server spoke is forgotten with api_url
# ---------------------------------------------------------------------
{
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/tls_080";
	mkdir $dir;
	my ($rc, $out, $err) = ('', '', '');
	ok( IPC::Run::run(
			[
				'openssl', 'req', '-x509', '-newkey', 'ec',
				'-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
				'-keyout', "$dir/key.pem", '-out', "$dir/cert.pem", '-days', '2',
				'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'
			],
			'<', \undef, '>', \$out, '2>', \$err),
		'5. a self-signed certificate for 127.0.0.1') or diag($err);
	my %tls = (tls_cert => "$dir/cert.pem", tls_key => "$dir/key.pem");
	my $ta = WaTest::mock_start(name => 'tls_a', %tls);
	my $tb = WaTest::mock_start(name => 'tls_b', %tls);
	my $h1 = qr/whatsapp worker: the API server answers over HTTP\/1\.x/;

	my $logpos = -s $node->logfile;
	q1("ALTER SYSTEM SET whatsapp.ca_file = '$dir/cert.pem';"
		  . " ALTER SYSTEM SET whatsapp.api_url = '" . $ta->tls_url . "'; SELECT pg_reload_conf();");
	ok(WaTest::wait_until(sub { slurp_file($node->logfile, $logpos) =~ /the API endpoint changed/ },
			20, 'the reload'), '5. api_url now https to server A');
	my $id = send_text('+34600000501', 'over https to A');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'5. sent over https, the certificate verified against whatsapp.ca_file');
	is(scalar @{ $ta->requests(0, callback => $id) }, 1, '5. server A got it');
	my $log = slurp_file($node->logfile, $logpos);
	ok($log =~ $h1, '5. the worker learns that A speaks only HTTP/1.1 (it spoke HTTP/1.1 before too)');

	$logpos = -s $node->logfile;
	q1("ALTER SYSTEM SET whatsapp.api_url = '" . $tb->tls_url . "'; SELECT pg_reload_conf();");
	ok(WaTest::wait_until(sub { slurp_file($node->logfile, $logpos) =~ /the API endpoint changed/ },
			20, 'the reload'), '5. api_url now https to server B');
	$id = send_text('+34600000502', 'over https to B');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'5. sent to B');
	is(scalar @{ $tb->requests(0, callback => $id) }, 1, '5. server B got it');
	like(slurp_file($node->logfile, $logpos), $h1,
		'5. what A spoke was forgotten: B is found to speak HTTP/1.1 anew');
	ok(no_sockets_within($ta->config->{tls_port}, 5), '5. and no socket to A is left');
}

$node->stop;
done_testing();
