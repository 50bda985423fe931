# 090_worker_errors.pl: the worker's error paths leave the database
# consistent.
#
#   1. whatsapp.test_fail_start, the fault injection for tests, is out of
#      reach of roles that are not superusers.
#   2. Starting a request raises after the claim committed (injected): the
#      requests already started go on, the claimed messages that did not
#      start are queued again at once, with their attempt given back and a
#      wa_log row, not only after a restart; the later messages of their
#      recipients follow, in order, each sent exactly once.  The server log
#      has the whole error report (DETAIL and HINT too), and the status view
#      the last error.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time usleep);
use WaTest;

my $mock = WaTest::mock_start(name => 'errors');
my $node = WaTest::node('errors', mock => $mock,
	'whatsapp.poll_interval' => '60s',
	'whatsapp.max_attempts' => 3);

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAerrorstoken', max_mps => 1000);
	CREATE ROLE clerk LOGIN;
	GRANT whatsapp_sender TO clerk;
}, 'extension, account, and a role that is not a superuser');
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

# ---------------------------------------------------------------------
# 1. The fault injection is for superusers only
# ---------------------------------------------------------------------
{
	my $as_clerk = 'SET ROLE clerk; ';
	WaTest::psql_fails($node, $as_clerk . 'SET whatsapp.test_fail_start = 1', '55P02',
		'1. it cannot be SET in a session');
	WaTest::psql_fails($node, $as_clerk . 'ALTER SYSTEM SET whatsapp.test_fail_start = 1', '42501',
		'1. a role that is not a superuser cannot ALTER SYSTEM it');
	WaTest::psql_fails($node, $as_clerk . 'SHOW whatsapp.test_fail_start', '42501',
		'1. nor read it');
	is(q1('SHOW whatsapp.test_fail_start'), '0', '1. it is 0 by default');
}

# ---------------------------------------------------------------------
# 2. The second request start of a batch fails
# ---------------------------------------------------------------------
{
	my $logpos = -s $node->logfile;
	q1('ALTER SYSTEM SET whatsapp.test_fail_start = 2; SELECT pg_reload_conf();');
	ok(WaTest::wait_until(
			sub {
				slurp_file($node->logfile, $logpos) =~
				  /whatsapp\.test_fail_start = 2: the request start number 2 from now will fail/;
			},
			30, 'the worker to arm the fault'),
		'2. the worker says the fault is armed');

	# A1 A2 to one recipient, B1 B2 to another, C1 to a third, in one
	# transaction.  The claim takes A1, B1, C1 (one per recipient); A1
	# starts, B1's start fails, C1 never starts.
	my ($a, $b, $c) = ('+573001110001', '+573001110002', '+573001110003');
	my $seq = $mock->last_seq;
	my $t0 = time();
	my $ids = q1(qq{
		SELECT string_agg(whatsapp.wa_send(r, b)::text, ',' ORDER BY o)
		  FROM (VALUES (1, '$a', 'A1'), (2, '$a', 'A2'), (3, '$b', 'B1'), (4, '$b', 'B2'),
		               (5, '$c', 'C1')) v(o, r, b)});
	my ($a1, $a2, $b1, $b2, $c1) = split /,/, $ids;

	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE id IN ($ids) AND state = 'sent'", '5', 30),
		'2. all five messages are sent');
	my $took = time() - $t0;
	ok($took < 10, '2. promptly, not after a restart') or diag("took $took s");
	is(WaTest::worker_pid($node), $wpid, '2. by the same worker');

	is(q1("SELECT string_agg(attempts::text, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($ids)"),
		'1,1,1,1,1', '2. each with one attempt: the failed start was given back');

	# the exact requests: one per message, each recipient's in order
	my $reqs = $mock->requests($seq);
	my %count;
	$count{ $_->{callback} }++ for @$reqs;
	is(join(',', map { $count{$_} // 0 } ($a1, $a2, $b1, $b2, $c1)), '1,1,1,1,1',
		'2. the mock got exactly one request per message');
	for my $r ([ $a, 'A1,A2' ], [ $b, 'B1,B2' ])
	{
		my @bodies = map { decode_json($_->{body})->{text}{body} }
		  grep { $_->{to} eq $r->[0] } @$reqs;
		is(join(',', @bodies), $r->[1], "2. $r->[1] arrive in order");
	}

	# wa_log: the two that did not start
	my $note = "request not started: could not start the request of whatsapp message $b1;"
	  . " queued again, the attempt not counted";
	is(q1("SELECT string_agg(message_id || '|' || attempt || '|' || message, E'\\n' ORDER BY message_id)"
			  . " FROM whatsapp.log WHERE event = 'not_started'"),
		"$b1|1|$note\n$c1|1|$note",
		'2. wa_log: B1 and C1 were queued again, not counted as an attempt');
	is(q1("SELECT count(*) FROM whatsapp.log WHERE event = 'http' AND message_id IN ($ids)"), '5',
		'2. and one http row per message');

	# the whole error report in the server log
	my $log = slurp_file($node->logfile, $logpos);
	like($log,
		qr/ERROR:  (?:[0-9A-Z]{5}:\s+)?could not start the request of whatsapp message $b1\n[^\n]*DETAIL:  The failure was injected by whatsapp\.test_fail_start = 2\.\n[^\n]*HINT:  Set whatsapp\.test_fail_start to 0; it exists for tests only\./,
		'2. the server log has the whole error report: message, DETAIL and HINT');
	like($log, qr/LOG:  (?:[0-9A-Z]{5}:\s+)?whatsapp worker queued 2 messages again: their requests could not be started/,
		'2. and says the two were queued again');
	unlike($log, qr/EAAerrorstoken/, '2. no token in the server log');
	like(q1('SELECT last_error FROM whatsapp.status'),
		qr/^could not start the request of whatsapp message $b1$/, '2. the status view shows the last error');

	# once only: later messages go through
	my $id = q1("SELECT whatsapp.wa_send('+573001110004', 'after')");
	ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
			'sent:1', 30), '2. the fault fires once');
	q1('ALTER SYSTEM RESET whatsapp.test_fail_start; SELECT pg_reload_conf();');
}

$node->stop;
done_testing();
