# 095_fuzz.pl: a short fuzz run of the three input parsers (test/fuzz).
#
#   - webhook:   mutated Meta payloads, each signed with the account's app
#                secret, through wa_receive();
#   - signature: mutated X-Hub-Signature-256 headers through wa_receive();
#   - phone:     mutated numbers and country codes through
#                normalize_phone(), _identity_forms() and wa_send();
#
# WA_FUZZ_N inputs each (20,000 by default), and a quarter of that for the
# webhook and phone parsers in a LATIN1 database, where inputs are arbitrary
# bytes; then: no backend lost, no
# assertion failure (TRAP, on a --enable-cassert build), no PANIC, the
# same postmaster, and test/fuzz/check.sql's consistency checks.  Last, a
# backend killed by SIGSEGV in the middle of a run must be reported as a
# crash, by the driver and by the server log check: the test can fail.
#
# The seed is random and printed; WA_FUZZ_SEED=N repeats a run.  The long
# run (1,000,000 inputs each) is test/fuzz/run.sh; see test/fuzz/README.md.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WaTest;

my $fuzz = WaTest::repo() . '/test/fuzz';
my $n = $ENV{WA_FUZZ_N} // 20000;
my $seed = $ENV{WA_FUZZ_SEED} // int(rand(1_000_000_000));
my $outdir = "$PostgreSQL::Test::Utils::tmp_check/fuzz-out";
# wafuzz creates only the last directory of -o (the self-test writes to
# $outdir/selftest, maybe before any finding has created $outdir).
mkdir $outdir unless -d $outdir;
diag("fuzz seed $seed (WA_FUZZ_SEED=$seed repeats this run), $n inputs per parser");

# The driver, against this installation's libpq headers.
my ($out, $err) = ('', '');
IPC::Run::run([ 'make', '-s', '-C', $fuzz, 'wafuzz' ], '>', \$out, '2>', \$err)
  or BAIL_OUT("cannot build test/fuzz/wafuzz: $out$err");
my $wafuzz = "$fuzz/wafuzz";

# No worker: it would move the messages that the payloads' statuses name.
my $node = WaTest::node('fuzz', database => '', restart_after_crash => 'on');
my %secret = map { $_ => join('', map { sprintf '%02x', int(rand(256)) } 1 .. 24) } qw(main outlet gone);

$node->safe_psql('postgres',
	"CREATE DATABASE fuzz_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
for my $db (qw(postgres fuzz_latin1))
{
	my ($rc, $setup_out, $setup_err) = ('', '', '');
	local $ENV{PGCLIENTENCODING} = 'UTF8';
	$rc = $node->psql($db, PostgreSQL::Test::Utils::slurp_file("$fuzz/setup.sql"),
		stdout => \$setup_out, stderr => \$setup_err, on_error_stop => 1,
		extra_params => [ '-v', "secret=$secret{main}", '-v', "secret2=$secret{outlet}",
			'-v', "secret3=$secret{gone}" ]);
	is($rc, 0, "test/fuzz/setup.sql in $db: accounts, messages, batch functions")
	  or BAIL_OUT($setup_err);
}

my $postmaster_pid = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my %connstr = map { $_ => $node->connstr($_) } qw(postgres fuzz_latin1);
my $connstr = $connstr{postgres};
local $ENV{WAFUZZ_SECRET} = $secret{main};
local $ENV{WAFUZZ_VALID_SECRETS} = $secret{outlet};
local $ENV{WAFUZZ_OTHER_SECRETS} = $secret{gone};

# Run one mode; returns (exit status, stdout, stderr).
sub fuzz
{
	my ($db, $mode, @args) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ $wafuzz, $mode, '-d', $connstr{$db}, '-c', "$fuzz/corpus", '-o', $outdir,
			'-q', @args ], '>', \$o, '2>', \$e);
	return ($? >> 8, $o, $e);
}

my %stored = (postgres => 0, fuzz_latin1 => 0);
my $k = 0;
for my $run ([ 'postgres', 'webhook', $n, 'UTF8' ], [ 'postgres', 'signature', $n, 'UTF8' ],
	[ 'postgres', 'phone', $n, 'UTF8' ], [ 'fuzz_latin1', 'webhook', int($n / 4), 'LATIN1' ],
	[ 'fuzz_latin1', 'phone', int($n / 4), 'LATIN1' ])
{
	my ($db, $mode, $count, $enc) = @$run;
	my $what = $enc eq 'UTF8' ? $mode : "$mode in LATIN1";
	my ($status, $o, $e) = fuzz($db, $mode, '-n', $count, '-s', $seed + $k++, '-E', $enc);
	note($o);
	my ($inputs) = $o =~ /^inputs: (\d+)$/m;
	my ($crashes) = $o =~ /^crashes: (\d+)$/m;
	my ($failures) = $o =~ /^failures: (\d+)$/m;
	my ($rate) = $o =~ /^inputs per second: (\d+)$/m;
	is($inputs, $count, "$what: $count inputs" . (defined $rate ? " ($rate/s)" : ''));
	is($crashes, 0, "$what: no crash");
	is($failures, 0, "$what: every outcome expected, every property held")
	  or diag("$e\n$o\nfindings in $outdir");
	is($status, 0, "$what: wafuzz exit status 0");
	$stored{$db} += $1 if $o =~ /^payloads stored by committed batches: (\d+)$/m;
}

# The server afterwards.
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $postmaster_pid,
	'the same postmaster still runs');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my @bad = $log =~ /^.*(?:TRAP:|terminated by signal|exited with exit code [1-9]|PANIC:).*$/mg;
is(scalar(@bad), 0, 'no assertion failure, no backend lost, no PANIC in the server log')
  or diag(join("\n", @bad[ 0 .. ($#bad < 9 ? $#bad : 9) ]));
ok(index($log, $secret{main}) < 0 && index($log, $secret{outlet}) < 0,
	'no app secret in the server log');

for my $db (qw(postgres fuzz_latin1))
{
	my ($crc, $checks, $cerr) = ('', '', '');
	$crc = $node->psql($db, PostgreSQL::Test::Utils::slurp_file("$fuzz/check.sql"),
		stdout => \$checks, stderr => \$cerr, on_error_stop => 1,
		extra_params => [ '-A', '-t', '-q', '-v', "stored=$stored{$db}",
			'-v', "secret=$secret{main}", '-v', "secret2=$secret{outlet}" ]);
	is($crc, 0, "check.sql ran in $db (amcheck raised nothing)") or diag($cerr);
	ok($checks =~ /^checks failed: 0$/m, "$db is consistent afterwards")
	  or diag(join("\n", grep { /^FAIL/ } split /\n/, $checks));
}

# The checks can fail: a backend that dies in the middle of a run.
my ($o, $e) = ('', '');
my $h = IPC::Run::start([ $wafuzz, 'phone', '-d', $connstr, '-c', "$fuzz/corpus",
		'-o', "$outdir/selftest", '-n', 100_000_000, '-m', 1, '-q', '-s', $seed ],
	'>', \$o, '2>', \$e);
my $pid = '';
for (1 .. 300)
{
	$pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = 'wafuzz' AND state = 'active'");
	last if $pid ne '';
	usleep(100_000);
}
ok($pid ne '', 'a fuzz run in progress');
kill 'SEGV', $pid if $pid ne '';
$h->finish;
is($h->result(0), 2, 'wafuzz exits with 2 when its backend dies');
like($o, qr/^crashes: 1$/m, 'and counts the crash') or diag("$e\n$o");
$log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
like($log, qr/terminated by signal 11/, 'the server log check sees it');
ok(WaTest::wait_until(sub { ($node->psql('postgres', 'SELECT 1'))[0] == 0 }, 60, 'recovery'),
	'the server recovered');

$node->stop('fast');
done_testing();
