# 052_many_databases.pl: one server, one database per customer, databases
# created and dropped while it runs (Odoo hosting), whatsapp.database = '*'.
#
#   1. whatsapp.database changes on reload, from a list to '*': the worker
#      of a listed database without the extension leaves it, and a template
#      database is never served.
#   2. Twenty databases are created while the server runs and delivers:
#      ten copies of a template that has the extension (CREATE DATABASE ...
#      TEMPLATE, never held up) and ten with CREATE EXTENSION.  Each is
#      served within seconds.
#   3. Under load, six go: DROP DATABASE plain, after pg_terminate_backend
#      (Odoo's database manager), WITH (FORCE), and DROP EXTENSION.  Each
#      command finishes at once and nothing is sent from that database
#      afterwards.  A copy of a served database (Odoo's "duplicate") is
#      made at once, served, and sends nothing with the original's token.
#      A dropped name is created again and served as the new database it
#      is.
#   4. Every message of every remaining database reaches the mock exactly
#      once; whatsapp.status has one row per served database.  From '*'
#      to a list of two and back on reload.
#   5. More databases than background worker slots (a restart with
#      max_worker_processes = 8): the rest are refused with a WARNING that
#      names them, and served, with their queued messages, once slots are
#      free.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WaTest;

my $t_begin = time();

sub q1
{
	my ($node, $sql, %opts) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node, $sql, %opts);
	die "query failed: $sql\n$err" if $rc;
	return $out;
}

sub count_matches
{
	my ($text, $re) = @_;
	my $n = () = $text =~ /$re/g;
	return $n;
}

my $mock = WaTest::mock_start(name => 'many', latency => 20);
my $node = WaTest::node('many', mock => $mock,
	database => 'postgres',
	'max_worker_processes' => 40,
	'whatsapp.poll_interval' => '2s');

# Customers: name => number (their phone number id and recipients follow).
my %num;			# live database => its customer number
my %sent;			# live database => messages it queued
my %drop_seq;		# phone number id => mock sequence after its database went
my $next_rcpt = 0;

sub phone_id { return sprintf('30%08d', $_[0]); }

# NANP recipients: +1 415 NXX XXXX with NXX 2xx, one exchange per customer.
sub send_batch
{
	my ($db, $n) = @_;
	my $nxx = 200 + $num{$db};
	my $from = $next_rcpt + 1;
	$next_rcpt += $n;
	q1($node,
		"SELECT count(whatsapp.wa_send('+1415$nxx' || lpad(g::text, 4, '0'), 'order ' || g))"
		  . " FROM generate_series($from, $next_rcpt) g",
		dbname => $db);
	$sent{$db} += $n;
	return;
}

sub worker_of { return WaTest::worker_pid($node, $_[0]); }

sub wait_served
{
	my ($db, $timeout) = @_;
	return WaTest::wait_until(sub { worker_of($db) ne '' }, $timeout // 10,
		"a worker for $db");
}

sub add_account
{
	my ($db, $n) = @_;
	$num{$db} = $n;
	$sent{$db} = 0;
	q1($node,
		"SELECT whatsapp.wa_account_set('customer', '" . phone_id($n)
		  . "', 'EAAcustomer${n}token', max_mps => 1000)",
		dbname => $db);
	return;
}

# ---------------------------------------------------------------------
# 1. From a list to '*' on reload
# ---------------------------------------------------------------------
ok(WaTest::wait_until(sub { worker_of('postgres') ne '' }, 30, 'the listed worker'),
	'1. whatsapp.database = postgres: a worker serves it (without the extension)');
my $pg_pid = worker_of('postgres');
q1($node, 'CREATE DATABASE tpl');
q1($node, 'CREATE EXTENSION whatsapp CASCADE', dbname => 'tpl');
q1($node, 'ALTER DATABASE tpl IS_TEMPLATE true');

my $off = -s $node->logfile;
q1($node, "ALTER SYSTEM SET whatsapp.database = '*'; SELECT pg_reload_conf();");
ok(WaTest::wait_for($node, 'SHOW whatsapp.database', '*', 10),
	"1. ALTER SYSTEM SET whatsapp.database = '*' and a reload: no restart");
ok(WaTest::wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pg_pid", '0', 10),
	'1. the worker of postgres, which has no extension, leaves within seconds');
like(slurp_file($node->logfile, $off),
	qr/whatsapp launcher serves every database in which the extension is installed/,
	'1. the launcher says that it serves every database with the extension');
usleep(2_500_000);
WaTest::psql_is($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'",
	'0', '1. no worker runs: tpl is a template, postgres has no extension');

# ---------------------------------------------------------------------
# 2. Twenty databases created while the server delivers
# ---------------------------------------------------------------------
my (@copy_s, @found_s);
for my $n (1 .. 20)
{
	my $db = sprintf('cust%02d', $n);
	my $t0 = time();
	if ($n <= 10)
	{
		q1($node, "CREATE DATABASE $db TEMPLATE tpl", timeout => 60);
		push @copy_s, time() - $t0;
	}
	else
	{
		q1($node, "CREATE DATABASE $db");
		$t0 = time();
		q1($node, 'CREATE EXTENSION whatsapp CASCADE', dbname => $db);
	}
	my $t_ext = time();
	wait_served($db, 15);
	push @found_s, time() - $t_ext;
	add_account($db, $n);
	send_batch($db, 10);
	# load on three of the databases made before
	if ($n > 1)
	{
		send_batch(sprintf('cust%02d', 1 + ($n * 7 + $_) % ($n - 1)), 5) for 0 .. 2;
	}
}
my $max_found = (sort { $b <=> $a } @found_s)[0];
my $max_copy = (sort { $b <=> $a } @copy_s)[0];
note(sprintf('served %.2f s (at most) after CREATE DATABASE ... TEMPLATE or CREATE EXTENSION;'
		  . ' copies took at most %.2f s', $max_found, $max_copy));
cmp_ok(scalar(grep { $_ < 5 } @found_s), '==', 20,
	'2. each of 20 new databases is served within 5 s of its CREATE DATABASE or CREATE EXTENSION');
cmp_ok($max_copy, '<', 5, '2. CREATE DATABASE ... TEMPLATE of the template is never held up');
WaTest::psql_is($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'",
	'20', '2. twenty workers, one per database');
WaTest::psql_is($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'"
	  . " AND datname IN ('tpl', 'postgres', 'template1')",
	'0', '2. none in the template or in postgres');

# ---------------------------------------------------------------------
# 3. Six databases go under load; one name comes back
# ---------------------------------------------------------------------
# Answers take 600 ms for the customers that go, so requests are in flight.
my @going = qw(cust03 cust07 cust12 cust15 cust18 cust20);
$mock->add_rule({ match => { phone_number_id => [ map { phone_id($num{$_}) } @going ] },
		action => { latency_ms => 600 } });

sub drop_under_load
{
	my ($db, $how) = @_;
	send_batch($db, 20);
	ok(WaTest::wait_for($node,
			"SELECT count(*) > 0 FROM whatsapp.message WHERE state = 'sending'", 't', 10,
			dbname => $db),
		"3. $db has requests in flight");
	my $pid = worker_of($db);
	my $sql = {
		plain => "DROP DATABASE $db",
		odoo => "SELECT count(pg_terminate_backend(pid)) >= 0 FROM pg_stat_activity"
		  . " WHERE datname = '$db' AND pid <> pg_backend_pid();\nDROP DATABASE $db",
		force => "DROP DATABASE $db WITH (FORCE)",
	}->{$how};
	my $t0 = time();
	my ($rc, $out, $err) = WaTest::run_psql($node, $sql, timeout => 60);
	my $took = time() - $t0;
	is($rc, 0, "3. DROP DATABASE $db ($how) succeeds while its worker delivers")
	  or diag($err);
	cmp_ok($took, '<', 6, "3. ... within the worker's drain, not after a 5 s wait and an error")
	  or diag(sprintf('took %.1f s', $took));
	$drop_seq{ phone_id($num{$db}) } = $mock->last_seq;
	WaTest::psql_is($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0',
		"3. the worker of $db is gone");
	delete $num{$db};
	delete $sent{$db};
	return;
}

$off = -s $node->logfile;
drop_under_load('cust03', 'plain');
drop_under_load('cust07', 'odoo');
drop_under_load('cust12', 'force');
drop_under_load('cust15', 'plain');

# DROP EXTENSION: the worker abandons what it has in flight and leaves.
{
	my $db = 'cust18';
	send_batch($db, 20);
	ok(WaTest::wait_for($node,
			"SELECT count(*) > 0 FROM whatsapp.message WHERE state = 'sending'", 't', 10,
			dbname => $db), "3. $db has requests in flight");
	my $pid = worker_of($db);
	q1($node, 'DROP EXTENSION whatsapp CASCADE', dbname => $db);
	my $t0 = time();
	ok(WaTest::wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0', 10),
		'3. DROP EXTENSION: the worker leaves the database');
	cmp_ok(time() - $t0, '<', 5, '3. ... within seconds');
	$drop_seq{ phone_id($num{$db}) } = $mock->last_seq;
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.status WHERE database = '$db'", '0',
		'3. whatsapp.status has no row for it any more', dbname => 'cust01');
	usleep(3_000_000);
	is(worker_of($db), '', '3. and no worker comes back to the database without the extension');
	delete $num{$db};
	delete $sent{$db};
	# and it goes for good
	drop_under_load_after_extension($db);
}

sub drop_under_load_after_extension
{
	my ($db) = @_;
	my $t0 = time();
	WaTest::psql_ok($node, "DROP DATABASE $db", "3. DROP DATABASE $db, which has no extension",
		timeout => 60);
	cmp_ok(time() - $t0, '<', 3, '3. ... at once');
	return;
}

drop_under_load('cust20', 'plain');
$mock->clear_rules;

my $log = slurp_file($node->logfile, $off);
is(count_matches($log, qr/is being accessed by other users/), 0,
	'3. no DROP DATABASE waited for, or failed on, a worker');
is(count_matches($log, qr/FATAL:.*database .* does not exist/), 0,
	'3. no worker tried to connect to a dropped database');

# Odoo's "duplicate database": a copy of a served database, made at once,
# without terminating anything first.
{
	$mock->add_rule({ match => { phone_number_id => phone_id($num{cust05}) },
			action => { latency_ms => 600 } });
	send_batch('cust05', 20);
	ok(WaTest::wait_for($node,
			"SELECT count(*) > 0 FROM whatsapp.message WHERE state = 'sending'", 't', 10,
			dbname => 'cust05'), '3. cust05 has requests in flight');
	my $pid = worker_of('cust05');
	my $t0 = time();
	my ($rc, $out, $err) = WaTest::run_psql($node, 'CREATE DATABASE cust05_copy TEMPLATE cust05',
		timeout => 60);
	is($rc, 0, '3. CREATE DATABASE cust05_copy TEMPLATE cust05 succeeds while cust05 is served')
	  or diag($err);
	cmp_ok(time() - $t0, '<', 6, '3. ... within the drain of the worker');
	$mock->clear_rules;
	WaTest::psql_is($node,
		"SELECT count(*) FROM whatsapp.message WHERE state = 'sending'", '0',
		'3. the copy has nothing left sending: the worker recorded its answers first',
		dbname => 'cust05_copy');
	ok(wait_served('cust05_copy', 10), '3. the copy has the extension, so it is served');
	ok(WaTest::wait_for($node, 'SELECT paused_kind FROM whatsapp.account', 'binding', 15,
			dbname => 'cust05_copy'),
		"3. ... but its account pauses: the copied token is bound to cust05");
	ok(WaTest::wait_until(sub { my $p = worker_of('cust05'); $p ne '' && $p ne $pid }, 20,
			'cust05 served again'),
		'3. cust05 is served again after the restart delay');
	WaTest::psql_ok($node, 'DROP DATABASE cust05_copy', '3. and the copy is dropped',
		timeout => 60);
}

# A dropped name comes back as a new customer.
{
	my $t0 = time();
	q1($node, 'CREATE DATABASE cust07 TEMPLATE tpl', timeout => 60);
	ok(wait_served('cust07', 15), '3. cust07 created again is served');
	cmp_ok(time() - $t0, '<', 6, '3. ... within seconds');
	add_account('cust07', 27);
	send_batch('cust07', 10);
}

# More load on the survivors.
send_batch($_, 10) for sort keys %num;

# ---------------------------------------------------------------------
# 4. Every message delivered once; none from a database that is gone
# ---------------------------------------------------------------------
my @live = sort keys %num;
for my $db (@live)
{
	ok(WaTest::wait_for($node,
			"SELECT count(*) FILTER (WHERE state = 'sent') || '/' || count(*) FROM whatsapp.message",
			"$sent{$db}/$sent{$db}", 60, dbname => $db),
		"4. $db: all $sent{$db} messages sent");
}
my $all = $mock->requests(0);
my %at_mock;		# phone number id => { callback => count }
my %late;			# phone number id => requests after its database went
for my $r (@$all)
{
	my $p = $r->{phone_number_id} // '';
	$at_mock{$p}{ $r->{callback} // '' }++;
	$late{$p}++ if defined $drop_seq{$p} && $r->{seq} > $drop_seq{$p};
}
for my $db (@live)
{
	my $ids = q1($node, "SELECT string_agg(id::text, ',' ORDER BY id) FROM whatsapp.message",
		dbname => $db);
	my $seen = $at_mock{ phone_id($num{$db}) } // {};
	my @dups = grep { $seen->{$_} > 1 } keys %$seen;
	is(join(',', sort { $a <=> $b } keys %$seen), $ids,
		"4. $db: the mock got exactly its messages");
	is(scalar(@dups), 0, "4. $db: none twice");
}
is(join(',', map { "$_:" . ($late{$_} // 0) } sort keys %drop_seq),
	join(',', map { "$_:0" } sort keys %drop_seq),
	'4. no request from a database after it was dropped (or lost its extension)');
WaTest::psql_is($node,
	"SELECT string_agg(database || ':' || worker_running, ',' ORDER BY database) FROM whatsapp.status",
	join(',', map { "$_:true" } @live),
	'4. whatsapp.status: one row per served database, each with its worker running',
	dbname => $live[0]);

# From '*' to a list of two, and back, on reload: the others' workers
# drain and leave, the two keep theirs; then every database is served again.
{
	my @two = @live[ 0, 1 ];
	my %pid = map { $_ => worker_of($_) } @two;
	q1($node, "ALTER SYSTEM SET whatsapp.database = '$two[0], $two[1]'; SELECT pg_reload_conf();");
	ok(WaTest::wait_for($node,
			"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity"
			  . " WHERE backend_type = 'whatsapp worker'",
			join(',', @two), 15),
		'4. whatsapp.database set to a list of two on reload: only their workers stay');
	is(join(',', map { worker_of($_) } @two), join(',', map { $pid{$_} } @two),
		'4. ... the same workers, not restarted');
	WaTest::psql_is($node,
		"SELECT string_agg(database, ',' ORDER BY database) FROM whatsapp.status",
		join(',', @two), '4. whatsapp.status follows', dbname => $two[0]);
	send_batch($live[2], 3);
	q1($node, "ALTER SYSTEM SET whatsapp.database = '*'; SELECT pg_reload_conf();");
	ok(WaTest::wait_for($node, 'SHOW whatsapp.database', '*', 10), "4. back to '*'");
	ok(WaTest::wait_for($node,
			"SELECT count(DISTINCT datname) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'",
			scalar(@live), 15),
		'4. every database is served again');
	ok(WaTest::wait_for($node,
			"SELECT count(*) FILTER (WHERE state = 'sent') || '/' || count(*) FROM whatsapp.message",
			"$sent{$live[2]}/$sent{$live[2]}", 30, dbname => $live[2]),
		'4. what was queued meanwhile is sent');
}

# ---------------------------------------------------------------------
# 5. More databases than background worker slots
# ---------------------------------------------------------------------
# Down to nine customers, then a server with room for six workers
# (max_worker_processes 8: the logical replication launcher and ours).
for my $db (@live[ 9 .. $#live ])
{
	WaTest::psql_ok($node, "DROP DATABASE $db", "5. DROP DATABASE $db", timeout => 60);
	delete $num{$db};
}
@live = sort keys %num;
is(scalar(@live), 9, '5. nine customer databases');
$node->stop('fast');
$node->append_conf('postgresql.conf', "max_worker_processes = 8\n");
$off = -s $node->logfile;
$node->start;
my $statics = q1($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('logical replication launcher', 'whatsapp launcher')");
my $room = 8 - $statics;
my @served;
WaTest::wait_until(
	sub {
		@served = grep { worker_of($_) ne '' } @live;
		return @served == $room;
	},
	30, "$room workers");
is(scalar(@served), $room, "5. max_worker_processes = 8: $room databases are served");
my %is_served = map { $_ => 1 } @served;
my @refused = grep { !$is_served{$_} } @live;
usleep(1_000_000);
WaTest::psql_is($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'",
	$room, '5. no more than that');
# (the launcher looks again every 2 s, a few databases at a time)
for my $db (@refused)
{
	my $re = qr/WARNING:\s+(?:[0-9A-Z]{5}:\s+)?(?:whatsapp cannot serve database "$db": all 8 worker slots are taken|could not look for the whatsapp extension in database "$db": no background worker slot is free)/;
	ok(WaTest::wait_until(sub { slurp_file($node->logfile, $off) =~ $re }, 10,
			"the refusal of $db"),
		"5. the log says that $db is refused, and why");
}
$log = slurp_file($node->logfile, $off);
like($log, qr/HINT:\s+Raise max_worker_processes \(it takes a server restart\)\./,
	'5. ... and what to do');

# The refused ones queue; once three served customers leave, they are served.
my %before = map { $_ => $sent{$_} } @refused;
send_batch($_, 5) for @refused;
for my $db (@served[ 0 .. 2 ])
{
	q1($node, "DROP DATABASE $db", timeout => 60);
	delete $num{$db};
}
for my $db (@refused)
{
	ok(wait_served($db, 30), "5. $db is served once a slot is free");
	ok(WaTest::wait_for($node,
			"SELECT count(*) FILTER (WHERE state = 'sent') || '/' || count(*) FROM whatsapp.message",
			"$sent{$db}/$sent{$db}", 30, dbname => $db),
		"5. and its queued messages are sent");
}

# Each refusal is logged once, not at every retry of the launcher.
$log = slurp_file($node->logfile, $off);
is(join(',', map { count_matches($log, qr/WARNING:\s+(?:[0-9A-Z]{5}:\s+)?whatsapp cannot serve database "$_"/) > 1
			  || count_matches($log, qr/WARNING:\s+(?:[0-9A-Z]{5}:\s+)?could not look for the whatsapp extension in database "$_"/) > 1
			  ? "$_ again" : () } @refused),
	'', '5. each refusal is logged once, not at every retry');

my $total = time() - $t_begin;
note(sprintf('052 took %.0f s', $total));
cmp_ok($total, '<', 170, 'the whole test stays well under 3 minutes');

$node->stop;
done_testing();
