# A database restored from pg_dump does not deliver with the original's
# secrets: its worker pauses the account (binding) and keeps the messages
# queued until wa_rebind() confirms, and ids continue after the restore.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WaTest;

my $mock = WaTest::mock_start();
my $node = WaTest::node('restore', mock => $mock,
	database => 'postgres,copy',
	'whatsapp.poll_interval' => '1s');

my $token = 'EAArestoretoken' . int(rand(1e9));
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', '$token');
	SELECT whatsapp.wa_send('+525512340001', 'before the dump');
}, 'the original database sends');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = 1", 'sent', 30),
	'and delivers');

my $dump = $node->basedir . '/restore.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump -Fc');
$node->command_ok([ 'createdb', '-h', $node->host, '-p', $node->port, 'copy' ], 'createdb copy');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('copy'), $dump ], 'pg_restore into copy');

my $seq = $mock->last_seq;
my ($rc, $out, $err) = WaTest::run_psql($node,
	"SELECT whatsapp.wa_send('+525512340002', 'from the copy')", dbname => 'copy');
is($rc, 0, 'wa_send works in the restored database') or diag($err);
chomp $out;
cmp_ok($out, '>', 1, 'the ids continue after the restore');
my $id = $out;

ok(WaTest::wait_for($node,
		"SELECT paused_reason IS NOT NULL FROM whatsapp.accounts WHERE name = 'main'",
		't', 40, dbname => 'copy'),
	"the copy's worker pauses the account");
WaTest::psql_like($node, "SELECT paused_reason FROM whatsapp.accounts",
	qr/another account, field, database or cluster/, 'the reason names the binding',
	dbname => 'copy');
usleep(1_500_000);
WaTest::psql_is($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'queued',
	'the message stays queued', dbname => 'copy');
is(scalar @{ $mock->requests($seq) }, 0, 'nothing left the copy');

WaTest::psql_is($node, 'SELECT whatsapp.wa_rebind()', '1', 'wa_rebind() confirms the copy',
	dbname => 'copy');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 40,
		dbname => 'copy'),
	'then the copy delivers');
my @req = @{ $mock->requests($seq) };
is(scalar @req, 1, 'one request from the copy');
is($req[0]{headers}{authorization}, "Bearer $token", "with the original's token");

$node->stop;
$mock->stop;
done_testing();
