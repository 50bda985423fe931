# 106_log_privacy.pl: what the server log holds (issue 13, item 5).
#
# At the default log levels (log_min_messages = warning,
# log_min_error_statement = error), after a full cycle with failures and
# bad webhooks, the server log holds no message body, no inbound text, no
# sender's name and no full phone number (the last four digits at most):
#
#   - sends that succeed, that Meta fails (131026), that are retried after a
#     503, to a number that cannot be made E.164, and one outside the
#     24-hour window under whatsapp.window_check = warn (a WARNING);
#   - signed webhooks: delivered, failed with Meta's error, an inbound reply
#     with the sender's name;
#   - bad webhooks, the payload inlined as a literal as most drivers do: a
#     bad signature, a signed body that is not JSON, a wa_receive call with
#     a wrong argument list (an error before the function runs), and an
#     unsigned 16 MB post, which also must not grow the log by its size.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;
use WaMeta;

my $secret = 'tap-app-secret-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('logprivacy', mock => $mock,
	'whatsapp.poll_interval' => '60s',
	'whatsapp.max_attempts' => 3,
	# the defaults, over WaTest's debug1 and the test cluster's log_statement = all
	'log_min_messages' => 'warning',
	'log_min_error_statement' => 'error',
	'log_statement' => 'none');

# NANP 555-01xx numbers are fictional; each must not appear beyond its last 4 digits.
my %numbers = (
	ok => '+14125550173', failed => '+14125550188', retried => '+14125550142',
	window => '+14125550164', sender => '+14125550119');
my $body = 'Zebulon Quartermaine, your parcel PX-88213 is ready';
my $reply = 'Thanks, Quillon here: PX-88213 received';
my $name = 'Quillon Featherstonehaugh';
my $needles = qr/Quartermaine|PX-88213|Featherstonehaugh|Quillon|Zebulon|Gallimaufry/i;

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '$WaMeta::PNID', 'EAAlogprivacytoken',
		app_secret => '$secret', waba_id => '$WaMeta::WABA', max_mps => 1000);
}, 'extension and account with an app secret');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');
my $log_start = -s $node->logfile;

$mock->add_rule({ match => { to => $numbers{failed} }, action => { meta_error => 131026 } });
$mock->add_rule({ match => { to => $numbers{retried} }, times => 1,
	action => { status => 503 } });

sub sql_ok
{
	my ($sql, $what) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node, $sql);
	ok($rc == 0, $what) or diag($err);
	return ($out, $err);
}

# --- a full cycle -------------------------------------------------------------
my ($ok_id) = sql_ok("SELECT whatsapp.wa_send('+1 (412) 555-0173', '$body')", 'send');
my ($failed_id) = sql_ok("SELECT whatsapp.wa_send('$numbers{failed}', '$body (2)')",
	'send to a number Meta refuses');
my ($retried_id) = sql_ok("SELECT whatsapp.wa_send('$numbers{retried}', '$body (3)')",
	'send that meets a 503 first');
sql_ok("SELECT whatsapp.wa_send('+1 412 555 01', '$body (4)')", 'send to a number too short');
my (undef, $warn) = sql_ok("SET whatsapp.window_check = warn; "
	  . "SELECT whatsapp.wa_send('$numbers{window}', '$body (5)')",
	'send outside the 24-hour window, window_check = warn');
like($warn, qr/WARNING:.*outside the 24-hour customer service window/,
	'the client gets the window WARNING');
like($warn, qr/number ending in 0164/, 'naming the number by its last 4 digits');

ok(WaTest::wait_for($node, "SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages"
		  . " WHERE id IN ($ok_id, $failed_id, $retried_id)", 'sent,failed,sent', 60),
	'sent, failed (131026), sent after a retry');
my ($rc, $wamid) = WaTest::run_psql($node, "SELECT wamid FROM whatsapp.messages WHERE id = $ok_id");
(my $wa_id = $numbers{ok}) =~ s/^\+//;
is(WaMeta::receive($node, WaMeta::status_payload($wamid, 'delivered', time() - 5, $wa_id, $ok_id),
		$secret), '1', 'signed webhook: delivered');
(my $sender = $numbers{sender}) =~ s/^\+//;
is(WaMeta::receive($node, WaMeta::text_payload($sender, 'wamid.HBgLMTQxMjU1NTAxMTkVAgASGBQz',
			$reply, $name), $secret), '1', 'signed webhook: an inbound reply with a name');
my $failed_status = WaMeta::payload(qq~"statuses":[{"id":"wamid.HBgLMTQxMjU1NTAxODgVAgARGBI5","status":"failed",~
	  . qq~"timestamp":"~ . (time() - 3) . qq~","recipient_id":"14125550188","biz_opaque_callback_data":"$failed_id",~
	  . qq~"errors":[{"code":131026,"title":"Message undeliverable","message":"Message undeliverable",~
	  . qq~"error_data":{"details":"Message Undeliverable for Gallimaufry 14125550188"}}]}]~);
WaMeta::receive($node, $failed_status, $secret);
pass('signed webhook: a failed status with Meta\'s error');

# --- bad webhooks, inlined ------------------------------------------------------
my $inbound = WaMeta::text_payload('14125550173', 'wamid.HBgLMTQxMjU1NTAxNzMVAgASGBQ0',
	"$reply again", $name);
my $bad_sig = 'sha256=' . ('0' x 64);
my ($rc1, $o1, $e1) = WaTest::run_psql($node, "SELECT whatsapp.wa_receive('$inbound', '$bad_sig')");
like($e1, qr/28000/, 'a bad signature: 28000');
my $not_json = '{"contacts":[{"profile":{"name":"Quillon Featherstonehaugh"},"wa_id":"14125550173"}], Quillon 14125550173}';
my ($rc2, $o2, $e2) = WaTest::run_psql($node,
	"SELECT whatsapp.wa_receive('$not_json', '" . WaMeta::sign($not_json, $secret) . "')");
like($e2, qr/22P02/, 'a signed body that is not JSON: 22P02');
unlike($e2, $needles, 'whose error quotes no part of the payload');
my ($rc3, $o3, $e3) = WaTest::run_psql($node, "SELECT whatsapp.wa_receive('$inbound')");
like($e3, qr/42883/, 'a call with a wrong argument list: 42883, before the function runs');

my $chunk = WaMeta::text_payload('14125550173', 'wamid.BIG', $reply, $name);
my $big = '{"pad":[' . join(',', ($chunk) x int(16 * 1024 * 1024 / length($chunk))) . ']}';
my $before_big = -s $node->logfile;
my ($rc4, $o4, $e4) = WaTest::run_psql($node, "SELECT whatsapp.wa_receive('$big', '$bad_sig')",
	timeout => 120);
like($e4, qr/28000/, sprintf('an unsigned %.0f MB post: 28000', length($big) / 1024 / 1024));
cmp_ok((-s $node->logfile) - $before_big, '<', 16 * 1024,
	'and the server log grew by less than 16 kB');

# --- the server log -------------------------------------------------------------
WaTest::psql_ok($node, 'SELECT pg_reload_conf()', 'a last turn of the worker');
sleep 2;
my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_start);
ok(length($log) > 0 && $log =~ /ERROR:.*webhook signature/, 'the log holds the errors of the cycle');
my @body_lines = grep { $_ =~ $needles } split /\n/, $log;
is(scalar(@body_lines), 0, 'no body, text or name in the server log')
  or diag(join("\n", map { substr($_, 0, 300) } @body_lines[0 .. ($#body_lines < 4 ? $#body_lines : 4)]));
for my $k (sort keys %numbers)
{
	my $d = substr($numbers{$k}, 2);					# the national number
	my ($area, $ex, $line) = $d =~ /^(\d{3})(\d{3})(\d{4})$/;
	my @hits = grep { /\Q$ex\E[\s.\-)]*\Q$line\E/ } split /\n/, $log;
	is(scalar(@hits), 0, "the $k number ($area...$line) appears by its last 4 digits at most")
	  or diag(substr($hits[0], 0, 300));
}

# After the scan (its statement text is not redacted): wa_receive called
# through a function of the application's own, which the log redaction
# cannot see.  The error still quotes nothing of the payload.
WaTest::psql_ok($node, q{
	CREATE FUNCTION public.webhook_in(body text, sig text) RETURNS integer
	LANGUAGE sql AS $$ SELECT whatsapp.wa_receive(body, sig) $$;
}, 'an application function that calls wa_receive');
{
	my ($r, $o, $e) = WaTest::run_psql($node,
		"SELECT public.webhook_in('$not_json', '" . WaMeta::sign($not_json, $secret) . "')");
	like($e, qr/22P02/, 'through it, a signed body that is not JSON: 22P02');
	unlike(join("\n", grep { /(ERROR|DETAIL|HINT):/ } split /\n/, $e), $needles,
		'whose message, detail and hint quote no part of the payload');
}

done_testing();
