# 050_worker_lifecycle.pl: the launcher and the delivery worker over their
# lives.
#
#   1. whatsapp.database empty: the launcher idles and says so; wa_send
#      warns once per session.
#   2. A listed database that is missing: one WARNING, no restart loop, and
#      a worker once the database is created (the launcher rechecks every
#      5 s).
#   3. SIGHUP: whatsapp.api_url changes take effect; the setting refuses
#      plain http to anything but loopback.
#   4. SIGTERM: a bounded drain; in-doubt messages after a short
#      whatsapp.shutdown_timeout, with whatsapp.in_doubt = retry and fail.
#   5. DROP EXTENSION under load: transfers abandoned, no crash loop,
#      CREATE EXTENSION resumes without a restart.
#   6. Odoo's database manager: CREATE DATABASE ... TEMPLATE and DROP
#      DATABASE of the served database after pg_terminate_backend; the
#      worker never blocks DROP DATABASE of another database.
#   7. Streaming standby: no worker during recovery; after an immediate
#      stop of the primary and promotion, everything is delivered.
#   8. Per-account pacing to max_mps, without slowing other accounts.
#   9. whatsapp.log_retention purges old log rows once a minute.
#  10. A terminated launcher: its successor never starts a second worker
#      for a database whose worker still runs or drains.
#
# Set WA_LIFE_ONLY to a comma-separated list of item numbers to run only
# those (for development; the setup they share always runs).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time usleep);
use WaTest;

my %only = map { $_ => 1 } split /,/, ($ENV{WA_LIFE_ONLY} // '');
sub item { my ($n) = @_; return !%only || $only{$n}; }

my $t_begin = time();

# ---------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------

# One query that must work; its output.
sub q1
{
	my ($node, $sql, %opts) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node, $sql, %opts);
	die "query failed: $sql\n$err" if $rc;
	return $out;
}

# wa_send; returns the new message id.
sub send_text
{
	my ($node, $to, $body, %opts) = @_;
	my $acc = $opts{account} ? ", account => '$opts{account}'" : '';
	return q1($node, "SELECT whatsapp.wa_send('$to', '$body'$acc)", %opts);
}

# A distinct valid recipient for each number.
sub rcpt { return sprintf('+346%08d', $_[0]); }

sub logpos { my ($node) = @_; return -s $node->logfile; }

sub log_since
{
	my ($node, $off) = @_;
	return slurp_file($node->logfile, $off // 0);
}

sub count_matches
{
	my ($text, $re) = @_;
	my $n = () = $text =~ /$re/g;
	return $n;
}

# Waits until the worker with $pid is gone from pg_stat_activity.
sub wait_gone
{
	my ($node, $pid, $timeout) = @_;
	return WaTest::wait_for($node,
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0',
		$timeout // 30);
}

# Waits for a worker of $db other than $oldpid; returns its pid or ''.
sub wait_new_worker
{
	my ($node, $db, $oldpid, $timeout) = @_;
	my $pid = '';
	WaTest::wait_until(
		sub {
			$pid = WaTest::worker_pid($node, $db);
			return $pid ne '' && $pid ne ($oldpid // '');
		},
		$timeout // 40, "a new worker for database $db");
	return ($pid ne '' && $pid ne ($oldpid // '')) ? $pid : '';
}

# ALTER SYSTEM + reload, and waits until new sessions see the value (the
# postmaster has then signalled every child).
sub set_system
{
	my ($node, $name, $value, $shown) = @_;
	my $sql = defined $value
	  ? "ALTER SYSTEM SET $name = '$value'"
	  : "ALTER SYSTEM RESET $name";
	q1($node, "$sql;\nSELECT pg_reload_conf();");
	if (defined $shown)
	{
		WaTest::wait_for($node, "SHOW $name", $shown, 30)
		  or die "$name did not become $shown";
	}
	else
	{
		WaTest::wait_for($node,
			"SELECT coalesce(sourcefile, '') NOT LIKE '%postgresql.auto.conf'"
			  . " FROM pg_settings WHERE name = '$name'", 't', 30)
		  or die "$name did not leave postgresql.auto.conf";
	}
	# give the worker a moment to take the SIGHUP
	usleep(300_000);
	return;
}

sub id_list { return join(',', @_); }

# How many requests for message $id reached $mock after sequence $since
# (message ids start over when the extension is created again).
sub times_sent
{
	my ($m, $since, $id) = @_;
	return scalar @{ $m->requests($since, callback => $id) };
}

# ---------------------------------------------------------------------
# 1. whatsapp.database is empty
# ---------------------------------------------------------------------
my $empty;
if (item(1) || item(3))
{
	$empty = WaTest::node('empty', database => '');
}
if (item(1))
{
	ok(WaTest::wait_until(
			sub { slurp_file($empty->logfile) =~ /whatsapp\.database is empty: no database is served/ },
			30, 'the launcher to say it idles'),
		'1. empty whatsapp.database: the launcher logs that it idles');
	WaTest::psql_ok($empty, q{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('main', '1000000001', 'EAAemptytoken');
	}, '1. extension and account');
	usleep(1_000_000);
	WaTest::psql_is($empty,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'",
		'0', '1. no delivery worker runs');
	unlike(slurp_file($empty->logfile), qr/whatsapp worker started/,
		'1. no worker ever started');

	my ($rc, $out, $err) = WaTest::run_psql($empty, q{
		SELECT whatsapp.wa_send('+34600000001', 'first') > 0;
		SELECT whatsapp.wa_send('+34600000002', 'second') > 0;
		SELECT whatsapp.wa_send('+34600000003', 'third') > 0;
	});
	is($rc, 0, '1. wa_send works without a worker');
	is($out, "t\nt\nt", '1. and returns ids');
	is(count_matches($err, qr/WARNING:/), 1,
		'1. three wa_send in one session warn once')
	  or diag($err);
	like($err, qr/WARNING:\s+55000: no whatsapp worker serves database "postgres"/,
		'1. the warning says that no worker serves the database');
	like($err, qr/HINT:\s+[^\n]*whatsapp\.database/,
		'1. its HINT names whatsapp.database');
	($rc, $out, $err) = WaTest::run_psql($empty,
		"SELECT whatsapp.wa_send('+34600000004', 'next session') > 0");
	is(count_matches($err, qr/WARNING:/), 1, '1. a new session warns again, once');
	WaTest::psql_is($empty,
		"SELECT string_agg(DISTINCT state, ',') || ':' || count(*) FROM whatsapp.messages",
		'queued:4', '1. the messages wait, queued');
}

# ---------------------------------------------------------------------
# The main node: serves postgres, served (created at once) and late
# (created later).
# ---------------------------------------------------------------------
my $mock = WaTest::mock_start(name => 'main');
my $mock2 = WaTest::mock_start(name => 'second');
my $node = WaTest::node('main', mock => $mock,
	database => 'postgres, late, served');
my $t_node = time();
q1($node, 'CREATE DATABASE served');
WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAmaintoken', max_mps => 1000);
}, 'main node: extension and account');
my $wpid = wait_new_worker($node, 'postgres', undef, 60);
ok($wpid, 'main node: a worker serves postgres');

# ---------------------------------------------------------------------
# 2. (first part) database "late" is listed but missing
# ---------------------------------------------------------------------
if (item(2))
{
	ok(WaTest::wait_until(
			sub { log_since($node) =~ /WARNING:\s+(?:[0-9A-Z]{5}:\s+)?database "late" listed in whatsapp\.database does not exist/ },
			30, 'the missing-database warning'),
		'2. a WARNING in the log for the missing database');
}

# ---------------------------------------------------------------------
# 3. SIGHUP and whatsapp.api_url
# ---------------------------------------------------------------------
if (item(3))
{
	my ($s1, $s2) = ($mock->last_seq, $mock2->last_seq);
	my $id = send_text($node, '+34600000301', 'before reload');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'3. a message before the reload is sent');
	is(scalar @{ $mock->requests($s1) }, 1, '3. to the first mock');

	set_system($node, 'whatsapp.api_url', $mock2->url, $mock2->url);
	($s1, $s2) = ($mock->last_seq, $mock2->last_seq);
	$id = send_text($node, '+34600000302', 'after reload');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'3. a message after ALTER SYSTEM + pg_reload_conf() is sent');
	is(scalar @{ $mock2->requests($s2) }, 1, '3. to the second mock');
	is(scalar @{ $mock->requests($s1) }, 0, '3. and not to the first');
	is(WaTest::worker_pid($node), $wpid, '3. by the same worker (no restart)');

	set_system($node, 'whatsapp.api_url', undef);
	is(q1($node, 'SHOW whatsapp.api_url'), $mock->url, '3. the URL of postgresql.conf is back');
	($s1, $s2) = ($mock->last_seq, $mock2->last_seq);
	$id = send_text($node, '+34600000303', 'after reset');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'3. after ALTER SYSTEM RESET + reload');
	ok(@{ $mock->requests($s1) } == 1 && @{ $mock2->requests($s2) } == 0,
		'3. messages go to the first mock again');

	# The check hook.  These run on the node without a delivery worker, so
	# an accepted https URL can never be used.
	for my $bad ('http://example.com', 'http://127.0.0.1.example.com/',
		'http://user@127.0.0.1:1', 'ftp://127.0.0.1', 'http://localhost.example.com',
		'graph.facebook.com')
	{
		my $err = WaTest::psql_fails($empty,
			"ALTER SYSTEM SET whatsapp.api_url = '$bad'", '22023',
			"3. ALTER SYSTEM refuses whatsapp.api_url = '$bad'");
		like($err, qr/invalid value for parameter "whatsapp\.api_url"/,
			"3. ... as an invalid value") if $bad eq 'http://example.com';
	}
	for my $good ('https://graph.facebook.com', 'https://graph.facebook.com:443/',
		'http://localhost:8080', 'http://[::1]:8080', 'http://127.0.0.2')
	{
		WaTest::psql_ok($empty, "ALTER SYSTEM SET whatsapp.api_url = '$good'",
			"3. ALTER SYSTEM accepts whatsapp.api_url = '$good'");
	}
	WaTest::psql_ok($empty,
		"ALTER SYSTEM SET whatsapp.api_url = 'https://graph.facebook.com'; SELECT pg_reload_conf();",
		'3. an https URL is accepted and reloaded');
	ok(WaTest::wait_for($empty, 'SHOW whatsapp.api_url', 'https://graph.facebook.com', 20),
		'3. the https URL takes effect');
	like(slurp_file($empty->logfile), qr/received SIGHUP, reloading configuration files/,
		'3. the reload happened');
	usleep(500_000);
	unlike(slurp_file($empty->logfile), qr/background worker "whatsapp launcher".*exited/,
		'3. the idle launcher survived the reload');
}
if (defined $empty)
{
	$empty->stop;
	$empty = undef;
}

# 2. (second part): 15 s after start, still no attempt to serve "late".
if (item(2))
{
	my $left = $t_node + 15 - time();
	usleep(int($left * 1e6)) if $left > 0;
	my $log = log_since($node);
	is(count_matches($log, qr/whatsapp worker started for database "late"/), 0,
		'2. no worker was started for the missing database in 15 s');
	is(count_matches($log, qr/database "late" listed in whatsapp\.database does not exist/), 1,
		'2. and it was warned about once');
	is(count_matches($log, qr/FATAL:.*database "late" does not exist/), 0,
		'2. no FATAL connection attempts to it');
	is(count_matches($log, qr/whatsapp launcher.*exited|terminating background worker "whatsapp launcher"/), 0,
		'2. the launcher did not restart');
	q1($node, 'CREATE DATABASE late');
	my $created = q1($node, 'SELECT extract(epoch FROM now())');
	WaTest::psql_ok($node, q{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('late', '1055500000', 'EAAlatetoken', max_mps => 1000);
	}, '2. CREATE DATABASE late and CREATE EXTENSION there', dbname => 'late');
	our $late_created = $created;
}

# ---------------------------------------------------------------------
# 4. SIGTERM: bounded drain, and in-doubt messages
# ---------------------------------------------------------------------
if (item(4))
{
	# 4a. the drain records the answers in flight
	$mock->latency(2000);
	my $seq = $mock->last_seq;
	my @ids = map { send_text($node, rcpt(400 + $_), "drain $_") } 1 .. 3;
	my $ids = id_list(@ids);
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE id IN ($ids) AND state = 'sending'", '3', 20),
		'4. three messages in flight (sending)');
	ok($mock->wait_requests(3, 10, since => $seq), '4. the mock holds their requests');
	my $off = logpos($node);
	WaTest::psql_is($node, "SELECT pg_terminate_backend($wpid)", 't',
		'4. pg_terminate_backend of the worker');
	my $t_term = time();
	my $extra = send_text($node, rcpt(410), 'during the drain');
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE id IN ($ids) AND state = 'sent'", '3', 15),
		'4. the in-flight messages end sent');
	ok(wait_gone($node, $wpid, 15), '4. the worker exits after the drain');
	my $t_exit = time();
	cmp_ok($t_exit - $t_term, '<', 8, '4. well within the shutdown timeout')
	  or diag(sprintf('exit after %.1f s', $t_exit - $t_term));
	WaTest::psql_is($node,
		"SELECT state, attempts FROM whatsapp.messages WHERE id = $extra", 'queued|0',
		'4. a message enqueued during the drain is not claimed by the stopping worker');
	my $new = wait_new_worker($node, 'postgres', $wpid, 40);
	my $t_new = time();
	ok($new, '4. a new worker appears');
	cmp_ok($t_new - $t_exit, '>=', 8.5, '4. after the restart delay (about 10 s)');
	cmp_ok($t_new - $t_exit, '<=', 25, '4. but not much later')
	  or diag(sprintf('new worker %.1f s after the exit', $t_new - $t_exit));
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $extra", 'sent', 30),
		'4. the new worker sends the message left queued');
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.messages m, pg_stat_activity a"
		  . " WHERE m.id IN ($ids) AND a.pid = $new AND m.sent_at < a.backend_start AND m.attempts = 1",
		'3', '4. the in-flight ones were recorded by the draining worker, on the first attempt');
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.log WHERE message_id IN ($ids) AND event = 'in_doubt'",
		'0', '4. none of them was in doubt');
	is(join(',', map { times_sent($mock, $seq, $_) } @ids), '1,1,1',
		'4. each reached the mock exactly once');
	unlike(log_since($node, $off), qr/they will be in doubt/, '4. no in-doubt warning in the log');
	$mock->latency(0);
	$wpid = $new;

	# 4b. whatsapp.shutdown_timeout = 1s and a mock that hangs: in doubt,
	# requeued (in_doubt = retry, the default)
	set_system($node, 'whatsapp.shutdown_timeout', '1s', '1s');
	my @hang = (rcpt(420), rcpt(421));
	$mock->add_rule({ match => { to => \@hang }, action => { hang => JSON::PP::true } });
	$seq = $mock->last_seq;
	@ids = map { send_text($node, $_, 'hang') } @hang;
	$ids = id_list(@ids);
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE id IN ($ids) AND state = 'sending'", '2', 20),
		'4. two messages in flight to a hanging mock');
	ok($mock->wait_requests(2, 10, since => $seq), '4. the mock holds them');
	$off = logpos($node);
	q1($node, "SELECT pg_terminate_backend($wpid)");
	$t_term = time();
	ok(wait_gone($node, $wpid, 15), '4. terminated with shutdown_timeout = 1s');
	$t_exit = time();
	cmp_ok($t_exit - $t_term, '>=', 0.8, '4. the worker waited about the shutdown timeout');
	cmp_ok($t_exit - $t_term, '<', 5, '4. and not longer')
	  or diag(sprintf('exit after %.1f s', $t_exit - $t_term));
	like(log_since($node, $off),
		qr/whatsapp worker stopping with 2 requests in flight; they will be in doubt/,
		'4. the log says 2 requests are in doubt');
	WaTest::psql_is($node,
		"SELECT string_agg(state, ',') FROM whatsapp.messages WHERE id IN ($ids)",
		'sending,sending', '4. they stay sending while no worker runs');
	$mock->clear_rules;
	$mock->release;
	$new = wait_new_worker($node, 'postgres', $wpid, 40);
	ok($new, '4. a new worker after the restart delay');
	ok(WaTest::wait_for($node,
			"SELECT string_agg(state || ':' || attempts, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($ids)",
			'sent:2,sent:2', 30),
		'4. in_doubt = retry: they are queued again and sent on a second attempt');
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.messages m, LATERAL whatsapp.wa_log(m.id) l"
		  . " WHERE m.id IN ($ids) AND l.event = 'in_doubt' AND l.message LIKE '%queued again%'",
		'2', "4. wa_log has an 'in_doubt' event for each");
	like(log_since($node, $off), qr/found 2 messages in doubt/, '4. the new worker logs what it found');
	is(join(',', map { times_sent($mock, $seq, $_) } @ids), '2,2',
		'4. the mock saw each twice (the documented cost of retry)');
	$wpid = $new;

	# 4c. whatsapp.in_doubt = fail
	set_system($node, 'whatsapp.in_doubt', 'fail', 'fail');
	@hang = (rcpt(430), rcpt(431));
	$mock->add_rule({ match => { to => \@hang }, action => { hang => JSON::PP::true } });
	$seq = $mock->last_seq;
	@ids = map { send_text($node, $_, 'hang, fail') } @hang;
	$ids = id_list(@ids);
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE id IN ($ids) AND state = 'sending'", '2', 20),
		'4. in_doubt = fail: two messages in flight to a hanging mock');
	ok($mock->wait_requests(2, 10, since => $seq), '4. the mock holds them');
	q1($node, "SELECT pg_terminate_backend($wpid)");
	ok(wait_gone($node, $wpid, 15), '4. the worker stops');
	$mock->clear_rules;
	$mock->release;
	$new = wait_new_worker($node, 'postgres', $wpid, 40);
	ok($new, '4. and a new one starts');
	ok(WaTest::wait_for($node,
			"SELECT string_agg(state || ':' || failure_type, ',') FROM whatsapp.messages WHERE id IN ($ids)",
			'failed:network,failed:network', 30),
		"4. in_doubt = fail: they end failed with failure_type 'network'");
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.log WHERE message_id IN ($ids) AND event = 'in_doubt'"
		  . " AND message LIKE '%in_doubt = fail%'",
		'2', "4. with an 'in_doubt' log event");
	usleep(500_000);
	is(join(',', map { times_sent($mock, $seq, $_) } @ids), '1,1',
		'4. and are not sent again');
	$wpid = $new;
	set_system($node, 'whatsapp.in_doubt', undef);
	set_system($node, 'whatsapp.shutdown_timeout', undef);
}

# 2. (last part): the late database got its worker within ~40 s.
if (item(2))
{
	our $late_created;
	my $lpid = wait_new_worker($node, 'late', undef, 50);
	ok($lpid, '2. a worker serves the database once it exists');
	my $delay = q1($node,
		"SELECT round((extract(epoch FROM backend_start) - $late_created)::numeric, 1)"
		  . " FROM pg_stat_activity WHERE pid = " . ($lpid || 0));
	cmp_ok($delay, '<=', 42, '2. within about 40 s of CREATE DATABASE')
	  or diag("worker started $delay s after CREATE DATABASE");
	note("worker for late started $delay s after CREATE DATABASE");
	my $seq = $mock->last_seq;
	my $id = send_text($node, '+34600000201', 'late', dbname => 'late');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30,
			dbname => 'late'), '2. and delivers its messages');
	is(count_matches(log_since($node), qr/whatsapp worker started for database "late"/), 1,
		'2. started exactly once');
}

# ---------------------------------------------------------------------
# 5. DROP EXTENSION with messages queued and in flight
# ---------------------------------------------------------------------
if (item(5))
{
	my @slow = map { rcpt(500 + $_) } 1 .. 4;
	$mock->add_rule({ match => { to => \@slow }, action => { latency_ms => 8000 } });
	my $seq = $mock->last_seq;
	my @ids = map { send_text($node, $_, 'in flight at drop') } @slow;
	# three more behind the first recipient, and a few plain queued ones
	push @ids, send_text($node, $slow[0], "behind $_") for 1 .. 3;
	my $ids = id_list(@ids);
	ok(WaTest::wait_for($node,
			"SELECT count(*) FILTER (WHERE state = 'sending') || '/' || count(*) FILTER (WHERE state = 'queued')"
			  . " FROM whatsapp.messages WHERE id IN ($ids)", '4/3', 20),
		'5. four messages in flight, three queued');
	# (at least the first: on a fresh connection libcurl may hold the others
	# until it knows whether the server multiplexes)
	ok($mock->wait_requests(1, 10, since => $seq), '5. the mock holds requests');
	my $pid = WaTest::worker_pid($node);
	my $off = logpos($node);
	my $t0 = time();
	WaTest::psql_ok($node, 'DROP EXTENSION whatsapp', '5. DROP EXTENSION whatsapp',
		timeout => 30);
	cmp_ok(time() - $t0, '<', 5, '5. DROP EXTENSION is not blocked by the worker');
	$seq = $mock->last_seq;
	q1($node, 'NOTIFY whatsapp');
	ok(WaTest::wait_until(
			sub { log_since($node, $off) =~ /whatsapp extension was dropped: (\d+) requests in flight abandoned/ },
			20, 'the abandon message'),
		'5. the worker abandons its transfers');
	my ($n) = log_since($node, $off) =~ /whatsapp extension was dropped: (\d+) requests in flight abandoned/;
	is($n, 4, '5. all four of them');
	# the doorbell rings on: Odoo's bus notifies all the time
	for (1 .. 6)
	{
		q1($node, 'NOTIFY whatsapp');
		usleep(1_000_000);
	}
	my $log = log_since($node, $off);
	cmp_ok(count_matches($log, qr/whatsapp worker cycle failed/), '<=', 2,
		'5. no repeated cycle failures')
	  or diag(join("\n", grep { /cycle failed/ } split /\n/, $log));
	is(count_matches($log, qr/whatsapp worker started|background worker "whatsapp worker" \(PID \d+\) exited/), 0,
		'5. no worker restart');
	is(WaTest::worker_pid($node), $pid, '5. the same worker keeps running');
	is(scalar @{ $mock->requests($seq) }, 0, '5. nothing is sent after the drop');
	unlike($log, qr/(?:ERROR|FATAL|PANIC):.*whatsapp/, '5. no errors from the worker');

	$seq = $mock->last_seq;
	WaTest::psql_ok($node, q{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAmaintoken2', max_mps => 1000);
	}, '5. CREATE EXTENSION again and a new account');
	my $id = send_text($node, rcpt(510), 'after recreate');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'5. a new message is delivered');
	my @req = @{ $mock->requests($seq) };
	is(scalar @req, 1, '5. exactly one request');
	is($req[0]{headers}{authorization} // '', 'Bearer EAAmaintoken2', '5. with the new token');
	is(WaTest::worker_pid($node), $pid, '5. without a worker restart');
	$mock->clear_rules;
	$wpid = $pid;
}

# ---------------------------------------------------------------------
# 6. DROP DATABASE and CREATE DATABASE ... TEMPLATE of the served database
# ---------------------------------------------------------------------
if (item(6))
{
	my $spid = wait_new_worker($node, 'served', undef, 50);
	ok($spid, '6. a worker serves database served');
	WaTest::psql_ok($node, q{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('served', '1066600000', 'EAAservedtoken', max_mps => 1000);
	}, '6. extension and account in served', dbname => 'served');

	# Another database is created and dropped while the worker is busy.
	my @busy = map { rcpt(600 + $_) } 1 .. 20;
	$mock->add_rule({ match => { to => \@busy }, action => { latency_ms => 3000 } });
	q1($node, 'SELECT whatsapp.wa_send(r, $$busy$$) FROM unnest(ARRAY[' . join(',', map { "'$_'" } @busy)
		  . ']) r', dbname => 'served');
	ok(WaTest::wait_for($node, "SELECT count(*) > 0 FROM whatsapp.messages WHERE state = 'sending'",
			't', 20, dbname => 'served'), '6. the worker of served is busy');
	my $t0 = time();
	WaTest::psql_ok($node, 'CREATE DATABASE unrelated', '6. CREATE DATABASE of another database',
		timeout => 60);
	WaTest::psql_ok($node, 'DROP DATABASE unrelated', '6. DROP DATABASE of another database',
		timeout => 60);
	my $took = time() - $t0;
	cmp_ok($took, '<', 5, '6. ... finishes within a few seconds while the worker delivers')
	  or diag(sprintf('took %.1f s', $took));
	ok(WaTest::wait_for($node, "SELECT count(*) FROM whatsapp.messages WHERE state = 'sent'",
			'20', 30, dbname => 'served'), '6. the busy messages are delivered');
	$mock->clear_rules;

	# Odoo's "duplicate database": terminate the connections, copy at once.
	# The worker has requests in flight that Meta answers within 1.5 s.
	my @dup = map { rcpt(620 + $_) } 1 .. 5;
	$mock->add_rule({ match => { to => \@dup }, action => { latency_ms => 1500 } });
	q1($node, 'SELECT whatsapp.wa_send(r, $$dup$$) FROM unnest(ARRAY[' . join(',', map { "'$_'" } @dup)
		  . ']) r', dbname => 'served');
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE state = 'sending'", '5', 20,
			dbname => 'served'), '6. five requests in flight');
	my $bg = $node->background_psql('served');	# an Odoo session on the database
	$bg->query_safe('SELECT 1');
	$t0 = time();
	my ($rc, $out, $err) = WaTest::run_psql($node, q{
		SELECT count(*) > 0 FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		  WHERE datname = 'served' AND pid <> pg_backend_pid()) t;
		CREATE DATABASE served_copy TEMPLATE served;
	}, timeout => 60);
	is($rc, 0, '6. pg_terminate_backend, then at once CREATE DATABASE served_copy TEMPLATE served')
	  or diag($err);
	note(sprintf('the copy took %.1f s', time() - $t0));
	eval { $bg->quit };
	ok(wait_gone($node, $spid, 15), '6. the worker of served stopped');
	WaTest::psql_is($node,
		"SELECT string_agg(state, ',') FROM (SELECT DISTINCT state FROM whatsapp.message) s",
		'sent', '6. the copy has no message left sending: the worker recorded before leaving',
		dbname => 'served_copy');
	WaTest::psql_is($node,
		"SELECT count(*) FROM pg_stat_activity WHERE datname = 'served_copy' AND backend_type = 'whatsapp worker'",
		'0', '6. no worker serves the copy');
	$mock->clear_rules;

	# The launcher serves served again, then Odoo drops it.
	$spid = wait_new_worker($node, 'served', $spid, 40);
	ok($spid, '6. the launcher starts the worker of served again');
	my $off = logpos($node);
	($rc, $out, $err) = WaTest::run_psql($node, q{
		SELECT count(*) > 0 FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		  WHERE datname = 'served' AND pid <> pg_backend_pid()) t;
		DROP DATABASE served;
	}, timeout => 60);
	is($rc, 0, '6. pg_terminate_backend, then at once DROP DATABASE served') or diag($err);
	ok(WaTest::wait_until(
			sub { log_since($node, $off) =~ /WARNING:\s+(?:[0-9A-Z]{5}:\s+)?database "served" listed in whatsapp\.database does not exist/ },
			30, 'the missing-database warning'),
		'6. the launcher warns that the database is missing');
	q1($node, 'DROP DATABASE served_copy');
	our $served_drop_off = $off;
}

# ---------------------------------------------------------------------
# 10. The launcher is terminated too ("terminate every other backend")
# ---------------------------------------------------------------------
sub launcher_pid
{
	return q1($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'whatsapp launcher'");
}

if (item(10))
{
	# (a) the launcher alone: the worker keeps serving, no second one
	my $lpid = launcher_pid();
	ok($lpid, '10. the launcher shows in pg_stat_activity');
	my $pid = WaTest::worker_pid($node);
	q1($node, "SELECT pg_terminate_backend($lpid)");
	my $new_l = '';
	WaTest::wait_until(sub { $new_l = launcher_pid(); $new_l ne '' && $new_l ne $lpid }, 30,
		'a new launcher');
	ok($new_l && $new_l ne $lpid, '10. the postmaster restarts a terminated launcher');
	usleep(3_000_000);
	WaTest::psql_is($node,
		"SELECT string_agg(pid::text, ',') FROM pg_stat_activity"
		  . " WHERE backend_type = 'whatsapp worker' AND datname = 'postgres'",
		$pid, '10. the new launcher starts no second worker beside the running one');
	my $id = send_text($node, rcpt(1001), 'after launcher restart');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30),
		'10. the running worker goes on delivering');

	# (b) launcher and worker together, while a request is in flight
	# (the answer takes longer than the postmaster's 5 s before it restarts
	# the launcher: the new launcher finds the old worker still draining)
	# a drain longer than the answer (the default shutdown_timeout is 4 s)
	q1($node, "ALTER SYSTEM SET whatsapp.shutdown_timeout = '15s'");
	q1($node, 'SELECT pg_reload_conf()');
	usleep(300_000);
	$mock->add_rule({ match => { to => rcpt(1002) }, action => { latency_ms => 8000 } });
	my $seq = $mock->last_seq;
	$id = send_text($node, rcpt(1002), 'in flight while everything is terminated');
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sending', 20),
		'10. a message in flight');
	ok($mock->wait_requests(1, 10, since => $seq), '10. the mock holds it');
	$lpid = launcher_pid();
	q1($node, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
		  . " WHERE backend_type IN ('whatsapp launcher', 'whatsapp worker') AND datname IS DISTINCT FROM 'late'");
	my $max_workers = 0;
	my $t_exit;
	WaTest::wait_until(
		sub {
			my $n = q1($node, "SELECT count(*) FROM pg_stat_activity"
				  . " WHERE backend_type = 'whatsapp worker' AND datname = 'postgres'");
			$max_workers = $n if $n > $max_workers;
			my $old = q1($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid");
			$t_exit //= time() if $old eq '0';
			return $old eq '0';
		},
		30, 'the old worker to drain and exit');
	is($max_workers, 1, '10. never two workers for one database, even while the old one drains');
	WaTest::psql_is($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $id",
		'sent:1', '10. the draining worker records its answer');
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.log WHERE message_id = $id AND event = 'in_doubt'", '0',
		'10. nothing in doubt');
	my $new = wait_new_worker($node, 'postgres', $pid, 40);
	ok($new, '10. a new worker starts after the old one left');
	cmp_ok(time() - ($t_exit // 0), '>=', 8, '10. keeping the restart delay')
	  or diag(sprintf('new worker %.1f s after the old one left', time() - ($t_exit // 0)));
	usleep(300_000);
	# (ids start over after item 5's DROP EXTENSION: count from $seq only)
	is(scalar @{ $mock->requests($seq, callback => $id) }, 1,
		'10. the message reached the mock once');
	$mock->clear_rules;
	q1($node, 'ALTER SYSTEM RESET whatsapp.shutdown_timeout');
	q1($node, 'SELECT pg_reload_conf()');
	$wpid = $new;
}

# ---------------------------------------------------------------------
# 8. Per-account pacing
# ---------------------------------------------------------------------
if (item(8))
{
	WaTest::psql_ok($node, q{
		SELECT whatsapp.wa_account_set('slow', '2000000020', 'EAAslowtoken', max_mps => 20);
		SELECT whatsapp.wa_account_set('fast', '2000001000', 'EAAfasttoken', max_mps => 1000);
	}, '8. accounts with max_mps 20 and 1000');
	usleep(500_000);
	my $seq = $mock->last_seq;
	q1($node, q{
		SELECT whatsapp.wa_send('+347' || lpad(g::text, 8, '0'), 'paced', account => 'slow'),
		       whatsapp.wa_send('+348' || lpad(g::text, 8, '0'), 'fast', account => 'fast')
		  FROM generate_series(1, 100) g;
	});
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.messages WHERE account IN ('slow', 'fast') AND state = 'sent'",
			'200', 60), '8. 200 messages sent');
	my @req = @{ $mock->requests($seq) };
	my @slow = sort { $a <=> $b } map { $_->{t} } grep { $_->{phone_number_id} eq '2000000020' } @req;
	my @fast = sort { $a <=> $b } map { $_->{t} } grep { $_->{phone_number_id} eq '2000001000' } @req;
	is(scalar @slow, 100, '8. 100 requests of the paced account');
	is(scalar @fast, 100, '8. 100 requests of the fast account');
	my $span = ($slow[-1] - $slow[0]) / 1000;
	cmp_ok($span, '>=', (100 - 20) / 20 - 0.3,
		'8. the paced account takes at least (100 - 20) / 20 s');
	cmp_ok($span, '<=', 12, '8. but is not starved');
	# token bucket: by time t after the first, at most 20 + 20 t requests
	my ($worst, $violations) = (0, 0);
	for my $i (0 .. $#slow)
	{
		my $dt = ($slow[$i] - $slow[0]) / 1000;
		my $allowed = 20 + 20 * $dt;
		$violations++ if $i + 1 > $allowed + 2;
		$worst = $i + 1 - $allowed if $i + 1 - $allowed > $worst;
	}
	is($violations, 0, '8. the rate never exceeds 20/s after the 1-second burst')
	  or diag("worst excess $worst requests");
	my $max1 = 0;
	for my $i (0 .. $#slow)
	{
		my $j = $i;
		$j++ while $j + 1 <= $#slow && $slow[$j + 1] - $slow[$i] < 1000;
		$max1 = $j - $i + 1 if $j - $i + 1 > $max1;
	}
	cmp_ok($max1, '<=', 42, '8. at most burst + rate requests in any 1-second window');
	my $fspan = ($fast[-1] - $fast[0]) / 1000;
	cmp_ok($fspan, '<', 2.5, '8. the fast account is not slowed by the paced one');
	cmp_ok($fast[-1], '<', $slow[-1] - 1500, '8. it finished long before the paced one');
	diag(sprintf('pacing: max_mps 20 took %.2f s for 100 (max %d in 1 s); max_mps 1000 took %.2f s',
			$span, $max1, $fspan));
}

# ---------------------------------------------------------------------
# 9. Log retention
# ---------------------------------------------------------------------
if (item(9))
{
	set_system($node, 'whatsapp.log_retention', '1min', '1min');
	q1($node, q{
		INSERT INTO whatsapp.log (at, event, message)
		SELECT now() - interval '2 hours', 'test_old', 'old ' || g FROM generate_series(1, 50) g;
		INSERT INTO whatsapp.log (at, event, message)
		SELECT now(), 'test_recent', 'recent ' || g FROM generate_series(1, 5) g;
	});
	my $t0 = time();
	ok(WaTest::wait_for($node, "SELECT count(*) FROM whatsapp.log WHERE event = 'test_old'", '0', 75),
		'9. rows older than whatsapp.log_retention are purged within ~70 s');
	my $took = time() - $t0;
	WaTest::psql_is($node, "SELECT count(*) FROM whatsapp.log WHERE event = 'test_recent'", '5',
		'9. recent rows are kept');
	cmp_ok($took, '<=', 70, '9. the purge runs at least once a minute');
	note(sprintf('old rows purged after %.1f s', $took));
	set_system($node, 'whatsapp.log_retention', undef);
}

# The end of the main node: no restart loop of the dropped database.
if (item(6))
{
	our $served_drop_off;
	my $log = log_since($node, $served_drop_off);
	is(count_matches($log, qr/whatsapp worker started for database "served"/), 0,
		'6. no worker start for the dropped database since');
	is(count_matches($log, qr/FATAL:.*database "served" does not exist/), 0,
		'6. no FATAL connection attempts to it');
	# one warning per launcher (item 10 restarts the launcher)
	my %per_launcher;
	$per_launcher{$1}++
	  while $log =~ /\[(\d+)\] WARNING:\s+(?:[0-9A-Z]{5}:\s+)?database "served" listed in whatsapp\.database does not exist/g;
	ok(%per_launcher && !grep({ $_ != 1 } values %per_launcher),
		'6. each launcher warned once only')
	  or diag(explain(\%per_launcher));
}
my $mainlog = log_since($node);
is(count_matches($mainlog, qr/server process .* was terminated by signal|terminated by signal/), 0,
	'main node: no process crashed');
$node->stop;
$mock2->stop;

# ---------------------------------------------------------------------
# 7. Streaming standby and promotion
# ---------------------------------------------------------------------
if (item(7))
{
	my $mock3 = WaTest::mock_start(name => 'standby', latency => 150);
	my $primary = WaTest::node('primary', mock => $mock3,
		init => { allows_streaming => 1 });
	WaTest::psql_ok($primary, q{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('main', '3000000001', 'EAAprimarytoken', max_mps => 10);
	}, '7. primary: extension and account');
	ok(wait_new_worker($primary, 'postgres', undef, 60), '7. the primary has a worker');
	$primary->backup('bk');
	my $standby = PostgreSQL::Test::Cluster->new('standby');
	$standby->init_from_backup($primary, 'bk', has_streaming => 1);
	# pg_basebackup keeps the key file's mode 0600, but the test framework's
	# copy of the backup into the new data directory does not (the worker
	# rightly refuses a group- or world-readable key)
	my $bk_key = $primary->backup_dir . '/bk/whatsapp.key';
	is(sprintf('%o', (stat $bk_key)[2] & 07777), '600',
		'7. the base backup carries the key file, mode 0600');
	chmod 0600, $standby->data_dir . '/whatsapp.key';
	$standby->start;
	WaTest::psql_is($standby, 'SELECT pg_is_in_recovery()', 't', '7. the standby is in recovery');
	my ($rc, $sp) = WaTest::run_psql($standby, 'SHOW shared_preload_libraries');
	is($sp, 'whatsapp', '7. the standby preloads the library');

	q1($primary, q{
		SELECT whatsapp.wa_send('+349' || lpad(g::text, 8, '0'), 'standby ' || g)
		  FROM generate_series(1, 40) g;
	});
	$primary->wait_for_catchup($standby);
	WaTest::psql_is($standby, 'SELECT count(*) FROM whatsapp.message', '40',
		'7. the standby has the queued messages');
	usleep(1_000_000);
	WaTest::psql_is($standby,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'whatsapp%'", '0',
		'7. no whatsapp worker runs on the standby');
	unlike(slurp_file($standby->logfile), qr/whatsapp worker started/, '7. none ever started there');

	ok(WaTest::wait_for($primary,
			"SELECT count(*) >= 15 FROM whatsapp.messages WHERE state = 'sent'", 't', 30),
		'7. the primary is delivering');
	my ($r2, $before) = WaTest::run_psql($primary,
		"SELECT string_agg(state || ':' || n, ',') FROM (SELECT state, count(*) n FROM whatsapp.message GROUP BY 1 ORDER BY 1) s");
	$primary->stop('immediate');
	note("primary at the immediate stop: $before");
	my $seen = $mock3->counts->{distinct_callbacks};

	my $off = logpos($standby);
	$standby->promote;
	ok(WaTest::wait_for($standby, 'SELECT pg_is_in_recovery()', 'f', 60), '7. the standby is promoted');
	ok(wait_new_worker($standby, 'postgres', undef, 60), '7. its worker starts');
	ok(WaTest::wait_for($standby,
			"SELECT string_agg(state || ':' || n, ',') FROM (SELECT state, count(*) n FROM whatsapp.message GROUP BY 1) s",
			'sent:40', 60),
		'7. every message ends sent');
	my $c = $mock3->counts;
	is($c->{distinct_callbacks}, 40, '7. the mock saw all 40 messages');
	my ($r3, $indoubt) = WaTest::run_psql($standby,
		"SELECT count(*) FROM whatsapp.log WHERE event = 'in_doubt'");
	diag("standby promotion: $seen of 40 had reached the mock before the primary stopped ($before); "
		  . "$c->{duplicated_callbacks} were sent twice (max $c->{max_per_callback} per message), "
		  . "$indoubt were in doubt on the promoted standby");
	cmp_ok($c->{max_per_callback}, '<=', 2, '7. none more than twice');
	$standby->stop;
	$mock3->stop;
}

$mock->stop;
note(sprintf('total runtime %.0f s', time() - $t_begin));
done_testing();
