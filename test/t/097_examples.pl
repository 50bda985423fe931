# 097_examples.pl: the webhook receivers of docs/examples/ work as documented.
#
#   - docs/examples/webhook.py, the receiver without Odoo, runs unchanged
#     (only WEBHOOK_PORT and libpq's PGHOST/PGPORT set) against a cluster
#     with the extension and a message the worker sent to the mock; over
#     127.0.0.1 it gets Meta's handshake, then Meta-shaped payloads signed
#     with the app secret (HMAC-SHA256 of the body, X-Hub-Signature-256):
#     a delivered status moves the message to delivered, an inbound text
#     lands in whatsapp.inbound, a wrong signature gets 403 and stores
#     nothing, a correctly signed body that is not JSON gets 400;
#   - the Odoo module docs/examples/whatsapp_pg needs Odoo to run: its files
#     are only compiled (python3 -m py_compile), and a broken copy shows
#     that the compile check fails on a syntax error.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WaTest;

my $repo = WaTest::repo();
my $examples = "$repo/docs/examples";
my $cache = tempdir('wa_pycache_XXXXXX', TMPDIR => 1, CLEANUP => 1);

# Python's byte code goes to a temporary directory, never into the tree.
local $ENV{PYTHONPYCACHEPREFIX} = $cache;
local $ENV{PYTHONDONTWRITEBYTECODE} = '1';

# --- 1. python3 and psycopg2 -----------------------------------------------
{
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'python3', '-c', 'import psycopg2; print(psycopg2.__version__)' ],
		'>', \$out, '2>', \$err);
	ok($ok, 'python3 imports psycopg2 (Debian: python3-psycopg2, which test/install_deps.sh installs)')
	  or do { diag($err); done_testing(); exit 0; };
}

# --- 2. Every example compiles; a broken one does not ------------------------
my @py = (
	"$examples/webhook.py",
	"$examples/whatsapp_pg/__init__.py",
	"$examples/whatsapp_pg/__manifest__.py",
	"$examples/whatsapp_pg/controllers/__init__.py",
	"$examples/whatsapp_pg/controllers/webhook.py");
for my $f (@py)
{
	my ($out, $err) = ('', '');
	ok(IPC::Run::run([ 'python3', '-m', 'py_compile', $f ], '>', \$out, '2>', \$err),
		'compiles: ' . substr($f, length($repo) + 1))
	  or diag($err);
}
{
	my $broken = "$cache/broken_controller.py";
	my $src = PostgreSQL::Test::Utils::slurp_file("$examples/whatsapp_pg/controllers/webhook.py");
	$src =~ s/def webhook\(self, \*\*kwargs\):/def webhook(self, **kwargs)/
	  or BAIL_OUT('the controller no longer defines webhook(self, **kwargs)');
	PostgreSQL::Test::Utils::append_to_file($broken, $src);
	my ($out, $err) = ('', '');
	ok(!IPC::Run::run([ 'python3', '-m', 'py_compile', $broken ], '>', \$out, '2>', \$err),
		'the compile check fails on a copy of the controller with a syntax error');
	like($err, qr/SyntaxError/, 'and names the syntax error');
}

# --- 3. The standalone receiver against a cluster ---------------------------
my $secret = 'examples-app-secret-' . int(rand(1e9));
my $verify = 'examples-verify-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('examples', mock => $mock, database => 'shop',
	'whatsapp.poll_interval' => '60s');
$node->safe_psql('postgres', 'CREATE DATABASE shop');

my %shop = (dbname => 'shop');
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	CREATE ROLE webhook LOGIN;
	GRANT whatsapp_sender TO webhook;
	\\set secret '$secret'
	\\set verify '$verify'
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAexamplestoken',
								   app_secret => :'secret', verify_token => :'verify',
								   waba_id => '2099887766', max_mps => 80);
}, 'database shop: the extension, role webhook (whatsapp_sender), an account with an app secret',
	%shop);

my $id = WaTest::psql_ok($node,
	"SELECT whatsapp.wa_send('+52 55 1234 5678', 'Hola Ana, tu pedido S00042 está confirmado.')",
	'a message is queued', %shop);
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 60, %shop),
	'the worker sent it to the mock');
my $wamid = WaTest::psql_ok($node, "SELECT wamid FROM whatsapp.messages WHERE id = $id",
	'its wamid', %shop);
like($wamid, qr/^wamid\./, 'the mock gave it a wamid');

my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($py_out, $py_err) = ('', '');
my $receiver;
{
	local $ENV{WEBHOOK_PORT} = $port;
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	delete local $ENV{WEBHOOK_DSN};    # the example's default: dbname=shop user=webhook
	delete local $ENV{PGDATABASE};
	delete local $ENV{PGUSER};
	$receiver = IPC::Run::start([ 'python3', "$examples/webhook.py" ],
		'<', \undef, '>', \$py_out, '2>', \$py_err);
}
END { $receiver->kill_kill if $receiver && $receiver->pumpable; }

my $http = HTTP::Tiny->new(timeout => 30);
my $base = "http://127.0.0.1:$port";

# The handshake, once the receiver listens.
my $r;
ok( WaTest::wait_until(
		sub {
			$r = $http->get("$base/whatsapp/webhook?hub.mode=subscribe"
				  . "&hub.verify_token=$verify&hub.challenge=1158201444");
			return $r->{status} != 599;
		},
		60,
		'the receiver to listen on 127.0.0.1'),
	'the receiver listens')
  or diag("receiver output:\n$py_out\n$py_err");
is($r->{status}, 200, 'handshake with the verify token: 200');
is($r->{content}, '1158201444', 'and the challenge as the body');
$r = $http->get("$base/whatsapp/webhook?hub.mode=subscribe"
	  . "&hub.verify_token=not-the-token&hub.challenge=1158201444");
is($r->{status}, 403, 'handshake with another token: 403');

sub payload
{
	my ($value) = @_;
	return '{"object":"whatsapp_business_account","entry":[{"id":"2099887766","changes":'
	  . '[{"value":{"messaging_product":"whatsapp","metadata":'
	  . '{"display_phone_number":"15550783881","phone_number_id":"1099887766"},'
	  . $value . '},"field":"messages"}]}]}';
}

sub post
{
	my ($body, $signature) = @_;
	my %h = ('Content-Type' => 'application/json');
	$h{'X-Hub-Signature-256'} = $signature if defined $signature;
	return $http->post("$base/whatsapp/webhook", { headers => \%h, content => $body });
}

sub sign { return 'sha256=' . hmac_sha256_hex($_[0], $_[1] // $secret); }

my $now = time();
my $delivered = payload(
	qq~"statuses":[{"id":"$wamid","status":"delivered","timestamp":"$now",~
	  . qq~"recipient_id":"525512345678","biz_opaque_callback_data":"$id",~
	  . qq~"conversation":{"id":"c5f2a7d9e8b14f0a9c3d2e1f0a9b8c7d","origin":{"type":"utility"}},~
	  . qq~"pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}]~);
my $inbound_wamid = 'wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFjNFQjBDNzE0QTlGMjNCODQ0RTdEMDgA';
my $inbound = payload(
	qq~"contacts":[{"profile":{"name":"Ana García"},"wa_id":"5215512345678"}],~
	  . qq~"messages":[{"from":"5215512345678","id":"$inbound_wamid","timestamp":"$now",~
	  . qq~"type":"text","text":{"body":"¿A qué hora llega mi pedido?"}}]~);
# (no "use utf8": the literals above are already the UTF-8 bytes Meta signs)

# A wrong signature first: refused, nothing stored, nothing changed.
my $bad = sign($delivered);
substr($bad, -1) = substr($bad, -1) eq '0' ? '1' : '0';
$r = post($delivered, $bad);
is($r->{status}, 403, 'a status with one digit of its signature wrong: 403');
$r = post($delivered, sign($delivered, 'another-apps-secret'));
is($r->{status}, 403, 'a status signed with another app secret: 403');
$r = post($delivered);
is($r->{status}, 403, 'a status without X-Hub-Signature-256: 403');
WaTest::psql_is($node, "SELECT count(*) FROM whatsapp.webhooks", '0',
	'no refused payload was stored', %shop);
WaTest::psql_is($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent',
	'the message is still sent', %shop);

# Correctly signed: applied.
$r = post($delivered, sign($delivered));
is($r->{status}, 200, 'a correctly signed delivered status: 200');
WaTest::psql_is($node,
	"SELECT state || ' ' || (delivered_at = to_timestamp($now)) FROM whatsapp.messages WHERE id = $id",
	'delivered true', 'the message is delivered, at the status time', %shop);

$r = post($inbound, sign($inbound));
is($r->{status}, 200, 'a correctly signed inbound message: 200');
WaTest::psql_is($node,
	"SELECT phone || '|' || type || '|' || text || '|' || name FROM whatsapp.inbound WHERE wamid = '$inbound_wamid'",
	'+525512345678|text|¿A qué hora llega mi pedido?|Ana García',
	'it is in whatsapp.inbound, with the E.164 number, text and profile name', %shop);

my $junk = '{"object": "whatsapp_business_account", ';
$r = post($junk, sign($junk));
is($r->{status}, 400, 'a correctly signed body that is not JSON: 400');

WaTest::psql_is($node, "SELECT count(*) FROM whatsapp.webhooks", '2',
	'exactly the two correctly signed JSON payloads were stored', %shop);
WaTest::psql_like($node,
	"SELECT count(*) FROM pg_stat_activity WHERE usename = 'webhook' AND datname = 'shop'",
	qr/^[1-8]$/, 'the receiver is connected as role webhook to database shop, 8 connections at most',
	%shop);

$receiver->kill_kill;
unlike($py_out . $py_err, qr/\Q$secret\E/, 'the receiver printed no app secret');
unlike($py_err, qr/Traceback/, 'the receiver raised no Python exception');

done_testing();
