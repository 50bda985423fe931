# Crashes and shutdowns during delivery: nothing is lost, and what is sent
# twice stays within the in-doubt bound.
#
# Four scenarios, each with a fresh batch of 10,000 messages (one per
# recipient, queued in one transaction) that the worker is delivering to
# the mock with 20-50 ms of latency when the disruption comes, after
# 2,000 requests reached the mock:
#
#   immediate  pg_ctl -m immediate, then start
#   kill9      kill -9 of the worker: a crash restart of the cluster
#   terminate  pg_terminate_backend(worker): it drains, the launcher
#              starts it again about 10 s later
#   fast       pg_ctl -m fast (the worker drains), then start
#
# The mock's own counters are the record of what "Meta" received.  Every
# sent message reached it; a message that reached it more than once is an
# in-doubt duplicate, which whatsapp.in_doubt = retry allows after a crash,
# at most max_inflight + one result batch of them, each logged as an
# in_doubt event.  After a graceful stop there are none.
#
# One line per scenario is printed (and written to $WA_RELIABILITY_OUT when
# set) for the reliability table of docs/reliability.md:
#   RELIABILITY scenario=immediate queued=10000 sent=10000 failed=0 lost=0 ...
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WaTest;

my $N = 10_000;
my $MAX_INFLIGHT = 200;
my $STOP_AFTER = 2_000;		# requests at the mock before the disruption

# No per-request records: the counters (by_callback included) are enough,
# and 40,000 records would only slow the mock down.
my $mock = WaTest::mock_start(record => 0, latency => 30);
my $node = WaTest::node('crash', mock => $mock,
	'whatsapp.max_inflight' => $MAX_INFLIGHT,
	'whatsapp.in_doubt' => 'retry',
	# PostgreSQL::Test::Cluster turns it off; kill -9 needs the crash restart
	'restart_after_crash' => 'on');

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766',
		'EAAcrash' || md5(random()::text), max_mps => 100000);
}, 'extension and account');

my ($rc, $batch_size) = WaTest::run_psql($node, 'SHOW whatsapp.batch_size');
$batch_size = 500 unless $rc == 0 && $batch_size =~ /^\d+$/;
my $BOUND = $MAX_INFLIGHT + $batch_size;

ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

my @summary;

sub write_summary
{
	my $file = $ENV{WA_RELIABILITY_OUT};
	return unless defined $file && $file ne '';
	open my $fh, '>', $file or do { diag("cannot write $file: $!"); return; };
	print $fh "$_\n" for @summary;
	close $fh;
	return;
}

sub query
{
	my ($sql) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node, $sql);
	die "query failed: $sql\n$err" if $rc;
	return $out;
}

# Queue a batch in one transaction; returns (first id, last id).
sub enqueue
{
	my ($area) = @_;
	my $out = query(qq{
		WITH s AS (
			SELECT whatsapp.wa_send('+52$area' || lpad(g::text, 8, '0'),
									'crash test ' || g) AS id
			  FROM generate_series(1, $N) g)
		SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM s});
	my ($lo, $hi, $n) = split ' ', $out;
	die "enqueued $n, not $N" unless $n == $N;
	return ($lo, $hi);
}

# Wait until $n requests reached the mock, changing its latency between
# 20 and 50 ms as we go so that answers come back out of order.
sub wait_mock_total
{
	my ($n, $timeout) = @_;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		my $c = $mock->counts;
		return $c->{total} if $c->{total} >= $n;
		$mock->latency(20 + int(rand(31)));
		usleep(20_000);
	}
	return undef;
}

sub server_up
{
	my ($rc) = WaTest::run_psql($node, 'SELECT 1', timeout => 5);
	return $rc == 0;
}

# The disruptions.  Each returns a short note for the diagnostics and the
# number of requests the mock had seen when the worker went down.
my %disrupt = (
	immediate => sub {
		$node->stop('immediate');
		my $down = $mock->counts->{total};
		$node->start;
		return ('stopped -m immediate and started', $down);
	},
	kill9 => sub {
		my $pid = WaTest::worker_pid($node);
		my $off = -s $node->logfile;
		ok($pid =~ /^\d+$/, 'kill9: found the worker pid');
		is(kill('KILL', $pid), 1, 'kill9: SIGKILL sent to the worker');
		my $down = $mock->counts->{total};
		ok(WaTest::wait_until(
				sub {
					slurp_file($node->logfile, $off) =~ /all server processes terminated; reinitializing/;
				},
				60, 'the crash restart'),
			'kill9: the postmaster restarts the cluster');
		ok(WaTest::wait_until(\&server_up, 120, 'the server after the crash restart'),
			'kill9: the server accepts connections again');
		my $new = '';
		ok(WaTest::wait_until(
				sub { $new = WaTest::worker_pid($node); $new ne '' && $new ne $pid }, 60,
				'a new worker'),
			'kill9: a new worker runs');
		return ("worker $pid killed, new worker $new", $down);
	},
	terminate => sub {
		my $pid = WaTest::worker_pid($node);
		ok($pid =~ /^\d+$/, 'terminate: found the worker pid');
		my $off = -s $node->logfile;
		my $t = time();
		WaTest::psql_is($node, "SELECT pg_terminate_backend($pid)", 't',
			'terminate: pg_terminate_backend');
		ok(WaTest::wait_for($node,
				"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0', 30),
			'terminate: the worker drains and exits');
		my $gone = time();
		my $drain = $gone - $t;
		# Nothing more leaves while no worker runs.
		my $total = $mock->counts->{total};
		usleep(2_000_000);
		is($mock->counts->{total}, $total, 'terminate: no request after the worker stopped');
		unlike(slurp_file($node->logfile, $off), qr/stopping with \d+ requests in flight/,
			'terminate: no request was left in flight');
		my $new = '';
		ok(WaTest::wait_until(
				sub { $new = WaTest::worker_pid($node); $new ne '' && $new ne $pid }, 60,
				'the restarted worker'),
			'terminate: the launcher starts the worker again');
		my $delay = time() - $gone;
		cmp_ok($delay, '>=', 5, 'terminate: it stays away for a while (DROP DATABASE room)');
		cmp_ok($delay, '<', 30, 'terminate: and comes back within 30 s');
		return (sprintf('drained in %.1f s; new worker %s after %.1f s', $drain, $new, $delay),
			$total);
	},
	fast => sub {
		my $off = -s $node->logfile;
		my $t = time();
		$node->stop('fast');
		my $stopped = time() - $t;
		my $down = $mock->counts->{total};
		unlike(slurp_file($node->logfile, $off), qr/stopping with \d+ requests in flight/,
			'fast: no request was left in flight');
		$node->start;
		return (sprintf('stopped -m fast in %.1f s and started', $stopped), $down);
	},
);

my @scenarios = (
	[ immediate => '55', 1 ],
	[ kill9 => '33', 1 ],
	[ terminate => '81', 0 ],
	[ fast => '22', 0 ]);

for my $s (@scenarios)
{
	my ($name, $area, $crash) = @$s;

	# Nothing is in flight between scenarios: start from clean counters.
	$mock->reset;
	my $since = query('SELECT now()');
	my ($lo, $hi) = enqueue($area);
	my $t0 = time();
	my $range = "id BETWEEN $lo AND $hi";

	my $at = wait_mock_total($STOP_AFTER, 60);
	ok(defined $at, "$name: $STOP_AFTER requests reached the mock")
	  or BAIL_OUT("$name: the worker does not deliver");
	my ($note, $down) = $disrupt{$name}->();
	cmp_ok($down, '<', $N, "$name: the disruption came during delivery");
	$mock->latency(30);

	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE $range AND state IN ('queued', 'sending')",
			'0', 180),
		"$name: no message of the batch is left queued or sending");
	my $seconds = time() - $t0;

	my %state = map { split /\|/ } split /\n/,
	  query("SELECT state, count(*) FROM whatsapp.messages WHERE $range GROUP BY state");
	my $sent = $state{sent} // 0;
	my $failed = $state{failed} // 0;
	my %sent_id = map { $_ => 1 } split /\n/,
	  query("SELECT id FROM whatsapp.messages WHERE $range AND state = 'sent'");
	my %in_doubt = map { $_ => 1 } split /\n/,
	  query("SELECT DISTINCT message_id FROM whatsapp.wa_log(NULL, '$since', 1000000)"
		  . " WHERE event = 'in_doubt' AND message_id BETWEEN $lo AND $hi");
	my $in_doubt = scalar keys %in_doubt;

	my $c = $mock->counts;
	my $by = $c->{by_callback} // {};
	my @unseen = grep { !$by->{$_} } keys %sent_id;			# sent, never received
	my @foreign = grep { $_ !~ /^\d+$/ || $_ < $lo || $_ > $hi } keys %$by;
	my @dups = grep { $by->{$_} > 1 } keys %$by;
	my @dups_unlogged = grep { !$in_doubt{$_} } @dups;
	my $unfinished = $N - $sent - $failed;
	my $lost = @unseen + $unfinished;
	my $duplicated = $c->{duplicated_callbacks} // 0;

	is($lost, 0, "$name: no message lost");
	is($sent + $failed, $N, "$name: every message ended sent or failed");
	is($failed, 0, "$name: none failed");
	is(scalar(@unseen), 0, "$name: every sent message reached the mock");
	is($c->{distinct_callbacks}, $sent, "$name: distinct callbacks at the mock = sent messages");
	is(scalar(@foreign), 0, "$name: the mock saw no callback outside the batch");
	is($duplicated, scalar(@dups), "$name: the mock's duplicate count agrees with by_callback");
	diag("$name: $note; $at requests before the disruption, $down when the worker was down; "
		  . "$duplicated duplicated, $in_doubt in doubt, max per message "
		  . ($c->{max_per_callback} // 0));
	if ($crash)
	{
		cmp_ok($in_doubt, '>', 0, "$name: messages in flight at the crash are logged in_doubt");
		cmp_ok($in_doubt, '<=', $BOUND, "$name: in doubt <= max_inflight + batch_size ($BOUND)");
		cmp_ok($duplicated, '<=', $BOUND, "$name: duplicates <= max_inflight + batch_size ($BOUND)");
		cmp_ok($duplicated, '<=', $in_doubt, "$name: no more duplicates than messages in doubt");
		is(scalar(@dups_unlogged), 0, "$name: every duplicate has an in_doubt log event")
		  or diag('without one: ' . join(',', grep { defined } (sort { $a <=> $b } @dups_unlogged)[0 .. 19]));
		cmp_ok($c->{max_per_callback}, '<=', 2, "$name: one crash sends a message at most twice");
	}
	else
	{
		is($duplicated, 0, "$name: no duplicate after a graceful stop");
		is($in_doubt, 0, "$name: nothing was in doubt");
		is($c->{max_per_callback}, 1, "$name: every message reached the mock exactly once");
	}

	my $line = sprintf(
		'RELIABILITY scenario=%s queued=%d sent=%d failed=%d lost=%d duplicated=%d '
		  . 'in_doubt=%d bound=%d requests=%d seconds=%.1f',
		$name, $N, $sent, $failed, $lost, $duplicated, $in_doubt, $BOUND,
		$c->{total}, $seconds);
	diag($line);
	push @summary, $line;
	write_summary();
}

$node->stop;
$mock->stop;
done_testing();
