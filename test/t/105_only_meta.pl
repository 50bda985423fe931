# 105_only_meta.pl: nothing leaves but to Meta (issue 13, item 5).
#
# The worker connects only to whatsapp.api_url's host.  Small listeners on
# other loopback ports count every connection made to them.  They are
# named, as a non-superuser can name them, in:
#   - media links of messages (image, document, video, audio, sticker, an
#     interactive header, a template's document header): sent to Meta as
#     links, never fetched by the extension;
#   - context and dedupe_key;
#   - an inbound media message's url, by signed webhook;
#   - every whatsapp.* setting: SET, ALTER ROLE ... SET and ALTER DATABASE
#     ... SET by a non-superuser who owns the database (each refused, or
#     without effect on where requests go);
#   - wa_account_set's phone_number_id and waba_id (refused).
# After the messages went to the mock, no listener saw a connection, and
# the worker holds sockets to the mock's port only.  The control: a
# superuser pointing whatsapp.api_url at a listener makes it see one, so
# the listeners do notice connections.
use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WaTest;
use WaMeta;

my $secret = 'tap-app-secret-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('onlymeta', mock => $mock, 'whatsapp.poll_interval' => '60s');

# --- listeners: each accepted connection appends its port to a file -------
my $hits_file = PostgreSQL::Test::Utils::tempdir() . '/hits';
my @socks = map {
	IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16,
		Proto => 'tcp', ReuseAddr => 1) or BAIL_OUT("listen: $!")
} 1 .. 6;
my @ports = map { $_->sockport } @socks;
my $listener = fork();
BAIL_OUT("fork: $!") unless defined $listener;
if ($listener == 0)
{
	my $sel = IO::Select->new(@socks);
	while (1)
	{
		for my $s ($sel->can_read(1))
		{
			my $c = $s->accept or next;
			open(my $fh, '>>', $hits_file) or exit 1;
			print $fh $s->sockport, "\n";
			close $fh;
			close $c;
		}
	}
}
close $_ for @socks;
END { kill 'TERM', $listener if $listener; }

sub hits
{
	return [] unless -e $hits_file;
	my @h = split /\n/, PostgreSQL::Test::Utils::slurp_file($hits_file);
	return \@h;
}

# The listeners work: one connection of the test's own is counted.
{
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ports[5], Proto => 'tcp');
	ok($c, 'the test connects to a listener itself');
	close $c if $c;
	ok(WaTest::wait_until(sub { scalar(@{ hits() }) == 1 }, 10, 'the listener'),
		'and the listener counts it');
	unlink $hits_file;
}
my @url = map { "http://127.0.0.1:$_" } @ports;

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	CREATE ROLE shop LOGIN;
	GRANT whatsapp_admin, whatsapp_sender, whatsapp_reader TO shop;
	ALTER DATABASE postgres OWNER TO shop;
	SELECT whatsapp.wa_account_set('main', '$WaMeta::PNID', 'EAAonlymetatoken',
		app_secret => '$secret', waba_id => '$WaMeta::WABA', max_mps => 1000);
	INSERT INTO whatsapp.templates (account, name, language, category)
		VALUES (NULL, 'invoice_ready', 'en_US', 'UTILITY');
}, 'extension, account; role shop (not a superuser) administers and owns the database');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

sub as_shop
{
	my ($sql) = @_;
	return WaTest::run_psql($node, $sql,
		connstr => $node->connstr('postgres') . ' user=shop');
}

# --- every whatsapp.* setting, as shop ---------------------------------------
my ($rc, $settings) = WaTest::run_psql($node,
	"SELECT string_agg(name, ' ' ORDER BY name) FROM pg_settings WHERE name LIKE 'whatsapp.%'");
my @settings = split / /, $settings;
cmp_ok(scalar(@settings), '>=', 10, scalar(@settings) . ' whatsapp.* settings');
my @accepted;
for my $s (@settings)
{
	for my $how ("SET $s = '$url[0]/'", "ALTER ROLE shop SET $s = '$url[0]/'",
		"ALTER DATABASE postgres SET $s = '$url[0]/'", "ALTER SYSTEM SET $s = '$url[0]/'")
	{
		my ($r) = as_shop($how);
		push @accepted, $how if $r == 0;
	}
}
note('accepted from shop: ' . (@accepted ? join('; ', @accepted) : 'none'));
ok(!(grep { /whatsapp\.(api_url|api_version|proxy|ca_file|key_file|database)\b/ } @accepted),
	'shop can set none of api_url, api_version, proxy, ca_file, key_file, database, in any way');
WaTest::psql_ok($node, 'SELECT pg_reload_conf()', 'reload');

for my $arg ("'$url[1]'", "'1099887766', waba_id => '$url[1]'")
{
	my ($r, $o, $e) = as_shop("SELECT whatsapp.wa_account_set('other', $arg, 'EAAother')");
	like($e, qr/ERROR/, "wa_account_set refuses a URL ($arg)");
}

# --- messages whose content names the listeners ----------------------------------
my ($r1, $ids, $err) = as_shop(qq{
	SELECT string_agg(id::text, ',') FROM (
	SELECT whatsapp.wa_send_message('+14125550173', '{"type": "image", "image": {"link": "$url[1]/photo.jpg", "caption": "your order"}}') AS id
	UNION ALL SELECT whatsapp.wa_send_message('+14125550174', '{"type": "document", "document": {"link": "$url[2]/invoice.pdf", "filename": "INV-0042.pdf"}}')
	UNION ALL SELECT whatsapp.wa_send_message('+14125550175', '{"type": "video", "video": {"link": "$url[3]/clip.mp4"}}')
	UNION ALL SELECT whatsapp.wa_send_message('+14125550176', '{"type": "audio", "audio": {"link": "$url[3]/note.ogg"}}')
	UNION ALL SELECT whatsapp.wa_send_message('+14125550177', '{"type": "sticker", "sticker": {"link": "$url[3]/s.webp"}}')
	UNION ALL SELECT whatsapp.wa_send_message('+14125550178', '{"type": "interactive", "interactive": {"type": "button", "header": {"type": "image", "image": {"link": "$url[4]/h.png"}}, "body": {"text": "Confirm?"}, "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]}}}')
	UNION ALL SELECT whatsapp.wa_send_template('+14125550179', 'invoice_ready', 'en_US',
		'[{"type": "header", "parameters": [{"type": "document", "document": {"link": "$url[2]/inv.pdf"}}]}]')
	UNION ALL SELECT whatsapp.wa_send('+14125550180', 'see $url[4]/track', context => '{"url": "$url[4]/ctx"}',
		dedupe_key => '$url[4]/dedupe')) s});
is($r1, 0, 'shop queues eight messages naming the listeners') or diag($err);
my $n = scalar(split /,/, $ids);
ok(WaTest::wait_for($node, "SELECT count(*) FROM whatsapp.messages WHERE id IN ($ids) AND state = 'sent'",
		"$n", 60), 'all of them were sent, through the mock');
my @links = grep { ($_->{body} // '') =~ m{127\.0\.0\.1:\d+/(photo|invoice|clip|note|s\.webp|h\.png|inv\.pdf)} }
  @{ $mock->requests };
is(scalar(@links), 7, 'the seven media links went to Meta as links');

# an inbound image with a url, signed
my $inbound = WaMeta::payload(qq~"contacts":[{"profile":{"name":"Ana"},"wa_id":"14125550173"}],~
	  . qq~"messages":[{"from":"14125550173","id":"wamid.HBgLMTQxMjU1NTAxNzMVAgASGBQ1","timestamp":"~ . time()
	  . qq~","type":"image","image":{"id":"1234567890123456","mime_type":"image/jpeg",~
	  . qq~"sha256":"abc","url":"$url[5]/media/1234567890123456"}}]~);
is(WaMeta::receive($node, $inbound, $secret), '1', 'an inbound image with a url (signed webhook) is applied');

WaTest::psql_ok($node, 'SELECT pg_reload_conf()', 'a reload (settings, purge turn)');
sleep 2;
is_deeply(hits(), [], 'no listener saw a connection');
my $pid = WaTest::worker_pid($node);
for my $p (@ports)
{
	my $s = WaTest::tcp_sockets($pid, $p);
	is_deeply($s, [], "the worker holds no socket to port $p");
}

# --- the control: a superuser points api_url at a listener ----------------------
WaTest::psql_ok($node, "ALTER SYSTEM SET whatsapp.api_url = '$url[0]'; SELECT pg_reload_conf();",
	'a superuser points whatsapp.api_url at a listener');
sleep 1;
WaTest::psql_ok($node, "SELECT whatsapp.wa_send('+14125550181', 'control')", 'one more message');
ok(WaTest::wait_until(sub { grep { $_ == $ports[0] } @{ hits() } }, 30, 'a connection to the listener'),
	'that listener sees the worker connect: the listeners do notice connections');

done_testing();
