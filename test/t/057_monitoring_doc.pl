# 057_monitoring_doc.pl: the SQL of docs/monitoring.md runs, as written, as
# the monitoring role it describes, on a cluster that serves two databases
# (whatsapp.database = '*') with traffic through the mock; and what it
# reports is right: the worker, the queue, a paused account, the counters.
#
#   - every ```sql block of the page: the role setup as a superuser, the
#     reset as a member of whatsapp_admin, every other one as wa_monitor;
#   - every query of the postgres_exporter block, in both databases: it
#     runs, and returns the columns its metrics name;
#   - a database no worker serves any more shows worker_running = 0 and the
#     plain-SQL check says "worker not running";
#   - when promtool is installed, the alert rules pass "promtool check
#     rules" and test/monitoring/rules_test.yaml (skipped otherwise).
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $doc_file = WaTest::repo() . '/docs/monitoring.md';
open(my $fh, '<', $doc_file) or BAIL_OUT("cannot read $doc_file: $!");
my $doc = do { local $/; <$fh> };
close $fh;

my @sql = ($doc =~ /^```sql\n(.*?)^```/msg);
my @yaml = ($doc =~ /^```yaml\n(.*?)^```/msg);
ok(@sql >= 6, 'the page has its sql blocks (' . scalar(@sql) . ')');
is(scalar(@yaml), 2, 'the page has the exporter queries and the alert rules');

# The exporter's queries: "name:" at column 0, then "query: |" and the
# lines indented under it, then the metric names.
my %queries;
my %metrics;
{
	my $name;
	my $in_query = 0;
	for my $line (split /\n/, $yaml[0])
	{
		if ($line =~ /^(\w+):\s*$/)
		{
			$name = $1;
			$in_query = 0;
		}
		elsif ($line =~ /^  query: \|\s*$/)
		{
			$in_query = 1;
		}
		elsif ($in_query && $line =~ /^    (.*)$/)
		{
			$queries{$name} .= "$1\n";
		}
		elsif ($line =~ /^    - (\w+): \{usage:/)
		{
			$in_query = 0;
			push @{ $metrics{$name} }, $1;
		}
		else
		{
			$in_query = 0;
		}
	}
}
is(join(',', sort keys %queries), 'whatsapp_failed,whatsapp_health,whatsapp_processes,whatsapp_stats',
	'four exporter queries');

my $mock = WaTest::mock_start();
my $node = WaTest::node('monitoring', mock => $mock, database => '*',
	'whatsapp.poll_interval' => '1s',
	'whatsapp.max_attempts' => 3);

for my $db ('shop', 'shop2')
{
	WaTest::psql_ok($node, "CREATE DATABASE $db", "database $db");
	WaTest::psql_ok($node, q{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAmonitoring', max_mps => 1000);
		SELECT whatsapp.wa_account_set('promo', '1099887767', 'EAAmonitoring2', max_mps => 1000);
	}, "extension and accounts in $db", dbname => $db);
}
ok(WaTest::wait_until(sub {
	my ($rc, $out) = WaTest::run_psql($node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'");
	return $out eq '2';
}, 60, 'two workers'), 'a worker serves each database');

# Traffic: sent, one failed by Meta, one not a number, promo's token rejected.
$mock->add_rule({ match => { to => '+4915123456789' }, action => { meta_error => 131026 } });
$mock->add_rule({ match => { phone_number_id => '1099887767' }, action => { meta_error => 190 } });
WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	SELECT count(whatsapp.wa_send('+52 55 1234 ' || lpad(i::text, 4, '0'), 'Pedido ' || i, account => 'main'))
	  FROM generate_series(1, 20) i;
	SELECT whatsapp.wa_send('+49 151 23456789', 'Bestellung 2002', account => 'main');
	SELECT whatsapp.wa_send('12', 'nunca', account => 'main');
	SELECT count(whatsapp.wa_send('+52 55 9999 ' || lpad(i::text, 4, '0'), 'Promo ' || i, account => 'promo'))
	  FROM generate_series(1, 3) i;
}, 'messages queued in shop', dbname => 'shop');
ok(WaTest::wait_for($node,
		"SELECT sent || ',' || failed || ',' || failed_whatsapp_unrecoverable FROM whatsapp.stats WHERE account = 'main'",
		'20,2,1', 60, dbname => 'shop'),
	'shop: 20 sent, 2 failed');
ok(WaTest::wait_for($node, "SELECT cardinality(paused_accounts) FROM whatsapp.status WHERE database = 'shop'",
		'1', 60, dbname => 'shop'),
	'shop: promo is paused');

# --- The page's SQL --------------------------------------------------------
my @setup = grep { /CREATE ROLE wa_monitor/ } @sql;
my @grants = grep { /GRANT USAGE ON SCHEMA whatsapp/ } @sql;
my @reset = grep { /wa_stats_reset/ } @sql;
my @monitor = grep { !/CREATE ROLE wa_monitor|GRANT USAGE ON SCHEMA whatsapp|wa_stats_reset/ } @sql;
my @check = grep { /'worker not running'/ } @monitor;
is(scalar(@setup) . scalar(@grants) . scalar(@reset) . scalar(@check), '1111',
	'one block each for role, grants, reset and the plain-SQL check');

WaTest::psql_ok($node, $setup[0], 'the role block runs as written');
for my $db ('shop', 'shop2')
{
	WaTest::psql_ok($node, $grants[0], "the grants block runs in $db", dbname => $db);
}

sub as_monitor
{
	my ($sql, $db) = @_;
	return WaTest::run_psql($node, "\\pset tuples_only off\n\\pset footer off\n$sql",
		connstr => $node->connstr($db) . ' user=wa_monitor',
		extra_params => [ '-A', '-F', '|' ]);
}

my $i = 0;
for my $block (@monitor)
{
	$i++;
	my ($rc, $out, $err) = as_monitor($block, 'shop');
	ok($rc == 0, "sql block $i runs as wa_monitor") or diag("$block\n$err");
}

my (undef, $problems) = as_monitor($check[0], 'shop');
like($problems, qr/^paused account\|promo: access token rejected by Meta \(code 190\)$/m,
	'the plain-SQL check reports the paused account');
unlike($problems, qr/worker not running/, 'and no missing worker in shop');

WaTest::psql_ok($node, q{CREATE ROLE wa_doc_admin LOGIN IN ROLE whatsapp_admin}, 'an admin role');
{
	my ($rc, $out, $err) = WaTest::run_psql($node, $reset[0],
		connstr => $node->connstr('shop') . ' user=wa_doc_admin');
	ok($rc == 0, 'the reset block runs as a member of whatsapp_admin') or diag($err);
}

# --- The exporter's queries ------------------------------------------------
for my $db ('shop', 'shop2')
{
	for my $q (sort keys %queries)
	{
		my ($rc, $out, $err) = as_monitor($queries{$q}, $db);
		ok($rc == 0, "$db: exporter query $q runs as wa_monitor") or diag($err);
		my ($header) = split /\n/, $out;
		is(join(',', sort split /\|/, $header // ''), join(',', sort @{ $metrics{$q} }),
			"$db: $q returns the columns its metrics name");
	}
}
{
	my (undef, $out) = as_monitor($queries{whatsapp_health}, 'shop');
	like($out, qr/^shop\|1\|3\|[0-9.]+\|0\|1$/m,
		'whatsapp_health in shop: a worker, promo\'s 3 queued, one paused account');
	(undef, $out) = as_monitor($queries{whatsapp_processes}, 'shop');
	like($out, qr/^1\|2$/m, 'whatsapp_processes: one launcher, two workers');
	(undef, $out) = as_monitor($queries{whatsapp_failed}, 'shop');
	like($out, qr/^shop\|main\|whatsapp_unrecoverable\|0$/m,
		'whatsapp_failed: by failure_type (after the reset: 0)');
}

# --- A database no worker serves ------------------------------------------
WaTest::psql_ok($node, q{ALTER SYSTEM SET whatsapp.database = 'shop'; SELECT pg_reload_conf();},
	'serve shop only');
ok(WaTest::wait_until(sub {
	my ($rc, $out) = WaTest::run_psql($node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'whatsapp worker'");
	return $out eq '1';
}, 60, 'one worker'), 'shop2 lost its worker');
{
	my (undef, $out) = as_monitor($queries{whatsapp_health}, 'shop2');
	like($out, qr/^shop2\|0\|/m, 'whatsapp_health in shop2: worker_running 0');
	(undef, $out) = as_monitor($check[0], 'shop2');
	like($out, qr/^worker not running\|shop2$/m, 'the plain-SQL check says so');
}

# --- The alert rules --------------------------------------------------------
SKIP:
{
	my $promtool = `command -v promtool 2>/dev/null`;
	chomp $promtool;
	skip 'promtool is not installed', 2 unless $promtool;
	my $dir = tempdir(CLEANUP => 1);
	open(my $rf, '>', "$dir/rules.yaml") or die;
	print $rf $yaml[1];
	close $rf;
	my $t = WaTest::repo() . '/test/monitoring/rules_test.yaml';
	IPC::Run::run([ 'cp', $t, "$dir/rules_test.yaml" ]) or die;
	my ($out, $err) = ('', '');
	ok(IPC::Run::run([ $promtool, 'check', 'rules', "$dir/rules.yaml" ], '>', \$out, '2>', \$err),
		'promtool check rules accepts the alert rules') or diag("$out$err");
	($out, $err) = ('', '');
	ok(IPC::Run::run([ $promtool, 'test', 'rules', "$dir/rules_test.yaml" ], '>', \$out, '2>', \$err),
		'promtool test rules: each alert fires when it should') or diag("$out$err");
}

$node->stop;
$mock->stop;
done_testing();
