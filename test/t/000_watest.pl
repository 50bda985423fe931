# 000_watest.pl: the test helpers themselves (test/perl/WaTest.pm).
#
# The mock starts, records, obeys rules and stops, also when its object
# goes out of scope; nodes get the settings they were asked for; the psql
# helpers report SQLSTATEs; wait_for waits and gives up.

use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $http = HTTP::Tiny->new(proxy => undef, http_proxy => undef, timeout => 10);

sub post_message
{
	my ($url, $to, $callback) = @_;
	return $http->request('POST', "$url/v24.0/1234567890/messages",
		{
			headers => { 'Content-Type' => 'application/json',
						 Authorization => 'Bearer TEST' },
			content => encode_json({
				messaging_product => 'whatsapp',
				to => $to,
				type => 'text',
				text => { body => 'hola' },
				biz_opaque_callback_data => $callback })
		});
}

# True once $pid has exited (a zombie waiting for init counts as gone).
sub gone
{
	my ($pid) = @_;
	return WaTest::wait_until(
		sub {
			return 1 unless kill(0, $pid);
			open my $fh, '<', "/proc/$pid/stat" or return 1;
			my $stat = <$fh> // '';
			return $stat =~ /^\d+ \(.*\) Z/ ? 1 : 0;
		},
		10, "process $pid to exit");
}

# ---------------------------------------------------------------------
# The mock
# ---------------------------------------------------------------------
my $mock = WaTest::mock_start(name => 'helpers');
like($mock->port, qr/^\d+$/, 'the mock has a port');
is($mock->url, 'http://127.0.0.1:' . $mock->port, 'and a loopback URL');

my $seq0 = $mock->last_seq;
my $r = post_message($mock->url, '+525512345678', '7');
is($r->{status}, 200, 'the mock answers a message');
my $reqs = $mock->requests($seq0);
is(scalar @$reqs, 1, 'requests() returns the recorded request');
is($reqs->[0]{callback}, '7', 'with its callback data');
is($mock->counts->{messages}, 1, 'counts() counts it');

my $ids = $mock->add_rule({ match => { callback => '8' }, times => 1,
							action => { meta_error => 131026 } });
is(scalar @$ids, 1, 'add_rule() returns the new rule id');
is(post_message($mock->url, '+525512345678', '8')->{status}, 400,
	'the rule applies');
is(post_message($mock->url, '+525512345678', '8')->{status}, 200,
	'once');

is($mock->latency(5), 5, 'latency() sets the latency');
is($mock->latency, 5, 'and reads it back');
my $last = $mock->reset;
ok($last >= 3, 'reset() returns the last sequence number');
is($mock->counts->{messages}, 0, 'and clears the counters');
is($mock->latency, 0, 'and the latency');

my $got = $mock->wait_requests(1, 0.5);
ok(!defined $got, 'wait_requests() gives up when nothing comes');
post_message($mock->url, '+14155550100', '9');
$got = $mock->wait_requests(1, 5, callback => '9');
ok($got && $got->[0]{to} eq '+14155550100', 'wait_requests() with a filter');

my $pid = $mock->pid;
$mock->stop;
ok(gone($pid), 'stop() ends the mock process');

{
	my $scoped = WaTest::mock_start(name => 'scoped');
	$pid = $scoped->pid;
	ok(kill(0, $pid), 'a second mock runs');
}
ok(gone($pid), 'a mock that goes out of scope is stopped');

# ---------------------------------------------------------------------
# Nodes and the psql helpers
# ---------------------------------------------------------------------
$mock = WaTest::mock_start(name => 'node');
my $node = WaTest::node('helpers', mock => $mock, work_mem => '8MB',
	'whatsapp.default_country_code' => '52');
WaTest::psql_is($node, 'SHOW shared_preload_libraries', 'whatsapp',
	'the node preloads the library');
WaTest::psql_is($node, 'SHOW whatsapp.api_url', $mock->url,
	'whatsapp.api_url points at the mock');
WaTest::psql_is($node, 'SHOW whatsapp.database', 'postgres',
	'whatsapp.database serves postgres');
WaTest::psql_is($node, 'SHOW work_mem', '8MB', 'extra settings are written');
WaTest::psql_is($node, 'SHOW whatsapp.default_country_code', '52',
	'including whatsapp.* ones');

my ($rc, $out, $err, $state) = WaTest::run_psql($node, 'SELECT 1/0');
is($state, '22012', 'run_psql() reports the SQLSTATE');
WaTest::psql_fails($node, 'SELECT 1/0', '22012', 'psql_fails() checks it');
is(WaTest::psql_ok($node, 'SELECT 40 + 2', 'psql_ok()'), '42',
	'psql_ok() returns the output');
WaTest::psql_like($node, 'SELECT version()', qr/^PostgreSQL \d+/,
	'psql_like()');
is(WaTest::worker_pid($node, 'nosuchdb'), '',
	'worker_pid() is empty for a database nobody serves');

$node->safe_psql('postgres',
	'CREATE TABLE later AS SELECT 0 AS n;'
	  . 'CREATE FUNCTION bump() RETURNS void LANGUAGE sql AS $$UPDATE later SET n = n + 1$$');
ok(WaTest::wait_for($node, 'SELECT bump(); SELECT n >= 3 FROM later', "\nt", 10),
	'wait_for() polls until the answer comes');
ok(!WaTest::wait_for($node, 'SELECT false', 't', 1),
	'wait_for() gives up after its timeout');
ok(WaTest::wait_for($node, 'SELECT 12345', qr/^123/, 5),
	'wait_for() takes a regular expression');

my $dead = WaTest::node('nomock', start => 0);
my $conf = slurp_file($dead->data_dir . '/postgresql.conf');
like($conf, qr/^whatsapp\.api_url = 'http:\/\/127\.0\.0\.1:1'$/m,
	'a node without a mock points at a closed loopback port');

$node->stop;
$mock->stop;

done_testing();
