# 111_log_scan.pl: the scan of the server logs after the suite
# (test/log_scan.pl, test/perl/WaLogScan.pm; issue 13, item 5) finds what it
# must, and only that.
#
#   1. A crafted log: a full number or a body in the extension's own lines
#      (an ERROR, a WARNING, a LOG, its DETAIL, a number written with
#      spaces and parentheses), and in the STATEMENT of a failed wa_receive
#      or wa_account_set call, are leaks; the same texts in PostgreSQL's
#      statement echo, in an error of another statement, in a DEBUG line, in
#      a PostgreSQL function of a file named as one of the extension's, and
#      the last 4 digits anywhere, are not.  Texts too short to be telling,
#      or that the extension's source holds, are not looked for.
#   2. A real server of the version under test: a send outside the 24-hour
#      window under window_check = warn gets a WARNING from the extension;
#      its LOCATION line names a function of src/*.c (so the scan recognizes
#      the extension's lines on this version), the mock's record of the send
#      gives the scan the number and the body, and the log holds neither in
#      the extension's lines, while the statement echo holds both.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;
use WaMeta;
use WaLogScan;

my $repo = WaTest::repo();
my $number = '+14125550164';
my $body = 'Ottoline Vanterpool, your fitting is on Thursday';

# --- 1. a crafted log ---------------------------------------------------------
my $ts = '2026-12-03 10:00:00.000 UTC';
my $crafted = <<"EOF";
$ts [101] psql client backend LOG:  00000: statement: SELECT whatsapp.wa_send('$number', '$body')
$ts [101] psql client backend LOCATION:  exec_simple_query, postgres.c:1071
$ts [101] psql client backend WARNING:  01000: the recipient (number ending in 0164) is outside the 24-hour customer service window
$ts [101] psql client backend LOCATION:  wa_recipient_check, recipient.c:326
$ts [102] psql client backend ERROR:  22023: recipient 14125550164 is not allowed
$ts [102] psql client backend LOCATION:  resolve_account, enqueue.c:199
$ts [102] psql client backend STATEMENT:  SELECT whatsapp.wa_send('$number', '$body')
$ts [103] WARNING:  01000: whatsapp worker: message 8 to +1 (412) 555-0164 failed
$ts [103] LOCATION:  log_setting, launcher.c:787
$ts [104] LOG:  00000: whatsapp worker sent message 9
$ts [104] DETAIL:  The text was "$body".
$ts [104] LOCATION:  log_setting, launcher.c:787
$ts [105] psql client backend ERROR:  28000: webhook signature has the wrong length
$ts [105] psql client backend LOCATION:  parse_signature, webhook.c:505
$ts [105] psql client backend STATEMENT:  SELECT whatsapp.wa_receive('{"text":{"body":"hi"},
	"from":"14125550164"}', 'sha256=00')
$ts [106] psql client backend ERROR:  42883: function whatsapp.wa_account_set(unknown) does not exist
$ts [106] psql client backend LOCATION:  ParseFuncOrColumn, parse_func.c:636
$ts [106] psql client backend STATEMENT:  SELECT whatsapp.wa_account_set('$body')
$ts [107] DEBUG:  00000: whatsapp worker: sending to $number
$ts [107] LOCATION:  log_setting, launcher.c:787
$ts [108] LOG:  00000: logical replication apply worker for $number
$ts [108] LOCATION:  ApplyLauncherMain, launcher.c:1000
$ts [109] psql client backend ERROR:  22P02: invalid input syntax for type json
$ts [109] psql client backend DETAIL:  Token "$body" is invalid.
$ts [109] psql client backend LOCATION:  json_errsave_error, jsonfuncs.c:621
$ts [109] psql client backend STATEMENT:  SELECT '$body'::json, '$number'
EOF
my $file = PostgreSQL::Test::Utils::tempdir() . '/crafted.log';
PostgreSQL::Test::Utils::append_to_file($file, $crafted);

my $scan = WaLogScan->new(repo => $repo);
$scan->add_numbers($number);
$scan->add_bodies($body, 'will fail', 'webhook signature does not match the payload');
is_deeply([ keys %{ $scan->{bodies} } ], [ substr($body, 0, 30) ],
	'texts shorter than 12 characters, or that the extension\'s source holds, are not looked for');
$scan->scan_file($file);
my %at = map { $_->[1] => $_->[2] } @{ $scan->{leaks} };
my $line = sub { my ($re) = @_; my @l = split /\n/, $crafted; for (0 .. $#l) { return $_ + 1 if $l[$_] =~ $re; } die "no line $re"; };
is(join(',', sort { $a <=> $b } keys %at),
	join(',', sort { $a <=> $b } map { $line->($_) }
		qr/\[102\] .*ERROR/, qr/\[103\] WARNING/, qr/\[104\] LOG/, qr/\[105\] .*ERROR/, qr/\[106\] .*ERROR/),
	'crafted log: the leaks are found in exactly the five messages that hold them')
  or diag(explain($scan->{leaks}));
like($at{ $line->(qr/\[102\] .*ERROR/) }, qr/phone number \(\+14125550164\)/,
	'the bare digits in an extension ERROR');
like($at{ $line->(qr/\[103\] WARNING/) }, qr/phone number/, 'a number written with spaces and parentheses');
like($at{ $line->(qr/\[104\] LOG/) }, qr/message body/, 'a body in the DETAIL of an extension LOG line');
like($at{ $line->(qr/\[105\] .*ERROR/) }, qr/phone number/,
	'a number in the STATEMENT of a failed wa_receive, over two lines');
like($at{ $line->(qr/\[106\] .*ERROR/) }, qr/message body/,
	'a body in the STATEMENT of a failed wa_account_set call, whoever raised the error');
is($scan->{own}, 5, 'five messages at the default levels are the extension\'s own');
is($scan->{statements}, 2, 'two STATEMENT lines of wa_receive/wa_account_set errors are looked at');

# --- 2. a real server -----------------------------------------------------------
my $mock = WaTest::mock_start(name => 'logscan');
my $node = WaTest::node('logscan', mock => $mock, 'whatsapp.poll_interval' => '1s');
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '$WaMeta::PNID', 'EAAlogscantoken',
		waba_id => '$WaMeta::WABA', max_mps => 1000);
}, 'extension and account');
my ($rc, $id, $err) = WaTest::run_psql($node,
	"SET whatsapp.window_check = warn; SELECT whatsapp.wa_send('$number', '$body')");
like($err, qr/WARNING:.*ending in 0164/, 'the extension warns about the window, naming the last 4 digits');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 60),
	'the message is sent');
$mock->stop;
$node->stop;

my @received = glob("$PostgreSQL::Test::Utils::log_path/mock_received_111_log_scan_logscan_*.jsonl");
is(scalar(@received), 1, 'the mock wrote what it received into the log directory');
$scan = WaLogScan->new(repo => $repo);
$scan->add_received(@received);
ok($scan->{numbers}{14125550164} && grep({ index($body, $_) == 0 } keys %{ $scan->{bodies} }),
	'from which the scan takes the number and the body');
$scan->scan_file($node->logfile);
ok($scan->{own} >= 1, "the extension's lines are recognized by their LOCATION (PostgreSQL "
	  . $node->pg_version . ')');
is_deeply($scan->{leaks}, [], 'neither the number nor the body is in them');
my $log = slurp_file($node->logfile);
like($log, qr/statement: .*\Q$number\E.*\Q$body\E/, 'though the statement echo holds both');
my ($func, $cfile) = $log =~ /WARNING:  01000: the recipient \(number ending in 0164\)[^\n]*\n(?:[^\n]*(?:DETAIL|HINT):  [^\n]*\n)*[^\n]*LOCATION:  (\w+), (\S+):\d+\n/;
is("$func, $cfile", 'wa_recipient_check, recipient.c',
	'the WARNING\'s LOCATION names the function and the file without its directory');

# the control: the WARNING's own words, looked for as a body (set directly:
# add_bodies skips what the extension's source holds), are found in that line
$scan = WaLogScan->new(repo => $repo);
$scan->{bodies}{'customer service window'} = 1;
$scan->scan_file($node->logfile);
ok(scalar(grep { $_->[3] =~ /WARNING:.*ending in 0164/ } @{ $scan->{leaks} }),
	'control: the window WARNING is scanned as the extension\'s own line')
  or diag(explain($scan->{leaks}));

done_testing();
