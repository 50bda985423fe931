# Many requests in flight over HTTP/1.1, spread over several libcurl multi
# handles (src/http.c, "Several multi handles"): with whatsapp.max_inflight
# at 300 the worker uses three pools of connections.  Checked here:
#   1. never more than max_inflight requests open at the server, even with
#      more messages queued than that;
#   2. every message reaches the server once and ends 'sent';
#   3. the pools keep their connections while idle, and a second burst of
#      max_inflight requests reuses them all: the server sees no new
#      connection.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $MAX_INFLIGHT = 300;
my $QUEUED = 700;
my $HOLD_MS = 2500;

my $mock = WaTest::mock_start(name => 'manyconn');
my $node = WaTest::node('manyconn', mock => $mock,
	'whatsapp.poll_interval' => '60s',
	'whatsapp.max_inflight' => $MAX_INFLIGHT);

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('bulk', '1099880122', 'EAAmanyconnections', max_mps => 100000);
}, 'extension and an account');
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

# Queues $n messages to +1 415 55x xxxx (x: the burst), each answered after
# $HOLD_MS ms; returns the recipients' prefix.
sub burst
{
	my ($burst, $n) = @_;
	my $prefix = sprintf('+1415%d', 550 + $burst);
	my @to = map { sprintf('%s%04d', $prefix, $_) } 1 .. $n;
	$mock->add_rule({ match => { to => \@to }, times => $n, action => { latency_ms => $HOLD_MS } });
	q1("SELECT count(whatsapp.wa_send('$prefix' || lpad(g::text, 4, '0'), 'Your parcel ' || g || ' is on its way.'))"
		  . " FROM generate_series(1, $n) g");
	return $prefix;
}

# The most requests open at the mock at once, sampled until $done returns
# true or $secs pass.
sub peak_connections
{
	my ($done, $secs) = @_;
	my $peak = 0;
	my $deadline = time() + $secs;
	while (time() < $deadline)
	{
		my $open = $mock->connections;
		$peak = $open if $open > $peak;
		last if $done->();
		select(undef, undef, undef, 0.05);
	}
	return $peak;
}

# 1 and 2: more queued than may be in flight
{
	my $prefix = burst(1, $QUEUED);
	my $sent = sub {
		q1("SELECT count(*) FROM whatsapp.messages WHERE state = 'sent' AND recipient LIKE '$prefix%'")
		  == $QUEUED;
	};
	ok(WaTest::wait_for($node,
			"SELECT requests_in_flight FROM whatsapp.status WHERE database = current_database()",
			"$MAX_INFLIGHT", 30), "1. $MAX_INFLIGHT requests in flight with $QUEUED queued");
	my $peak = peak_connections($sent, 60);
	cmp_ok($peak, '<=', $MAX_INFLIGHT, "1. at most $MAX_INFLIGHT connections open at the server");
	cmp_ok($peak, '>=', $MAX_INFLIGHT * 0.9, '1. and about that many: one per request (HTTP/1.1)');
	ok(WaTest::wait_until($sent, 30, 'all sent'), "2. all $QUEUED messages sent");
	my $c = $mock->counts;
	is($c->{messages}, $QUEUED, "2. the server got $QUEUED requests");
	is(q1("SELECT count(*) FROM whatsapp.log l JOIN whatsapp.messages m ON m.id = l.message_id"
			  . " WHERE m.recipient LIKE '$prefix%' AND l.event = 'http' AND l.http_status = 200"),
		$QUEUED, '2. one answered attempt each in the log');
}

# 3: the idle pools keep their connections, and the next burst reuses them
{
	my $idle = WaTest::tcp_sockets($wpid, $mock->port);
	die "cannot inspect the worker's sockets" unless defined $idle;
	is(scalar(grep { $_ eq 'ESTABLISHED' } @$idle), $MAX_INFLIGHT,
		"3. the idle worker keeps $MAX_INFLIGHT connections in its pools");
	my $before = $mock->connections;
	my $prefix = burst(2, $MAX_INFLIGHT);
	my $sent = sub {
		q1("SELECT count(*) FROM whatsapp.messages WHERE state = 'sent' AND recipient LIKE '$prefix%'")
		  == $MAX_INFLIGHT;
	};
	my $peak = peak_connections($sent, 30);
	ok(WaTest::wait_until($sent, 30, 'the second burst'), "3. a second burst of $MAX_INFLIGHT sent");
	is($peak, $before, '3. on the same connections: the server saw no new one')
	  or diag("open before: $before, peak during the burst: $peak");
}

done_testing();
