# test/t/020_secrets.pl: the key file, key rotation, and secrets that
# never show up in clear: not in pg_dump, the server log, pg_stat_activity
# or whatsapp.log; secrets set with COPY into whatsapp.account_input; and
# what the log redaction does not cover.
#
# Run through "make prove_installcheck PROVE_TESTS=test/t/020_secrets.pl",
# or with the binaries of the PostgreSQL under test first in PATH:
#   prove -I test/perl -v test/t/020_secrets.pl
#
# The secrets used here are random test values.  Checks for their absence
# use index() rather than unlike(), so that a failure never prints the text
# that holds one.

use strict;
use warnings;

# PostgreSQL's test modules and pg_regress, unless PERL5LIB and PG_REGRESS
# name them: those of the pg_config first in PATH.
my $pgxs;
BEGIN
{
	$pgxs = `pg_config --pkglibdir`;
	chomp $pgxs;
	$pgxs .= '/pgxs';
}
use lib ($ENV{PERL5LIB} ? () : "$pgxs/src/test/perl");

use Digest::SHA qw(sha256_hex);
use File::Copy qw(move);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# ALTER SYSTEM SET log_statement, and wait until the server uses it.
sub set_log_statement
{
	my ($node, $value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET log_statement = '$value'; SELECT pg_reload_conf();");
	$node->poll_query_until('postgres',
		"SELECT current_setting('log_statement') = '$value'")
	  or die 'log_statement did not take effect';
	return;
}

# A random value that no other text of the test contains.
sub random_secret
{
	my ($prefix) = @_;
	my @chars = ('A' .. 'Z', 'a' .. 'z', '0' .. '9');
	return $prefix . join('', map { $chars[ int(rand(@chars)) ] } 1 .. 24);
}

# Does $haystack contain $needle, ignoring case?
sub contains
{
	my ($haystack, $needle) = @_;
	return index(lc($haystack // ''), lc($needle)) >= 0;
}

# like(), but a failure shows the text with the secret masked.
sub like_masked
{
	my ($text, $re, $secret, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $ok = ok(($text // '') =~ $re, $name);
	if (!$ok)
	{
		(my $shown = $text // '') =~ s/\Q$secret\E/<secret>/gi;
		diag("got: $shown\nexpected to match: $re");
	}
	return $ok;
}

sub file_mode
{
	my ($path) = @_;
	return sprintf('%04o', (stat($path))[2] & 07777);
}

# The key lines of a key file.
sub key_lines
{
	my ($path) = @_;
	return grep { /^[0-9a-fA-F]{64}$/ } split(/\r?\n/, slurp_file($path));
}

sub write_key_file
{
	my ($path, $text) = @_;
	my $tmp = "$path.test";
	open(my $fh, '>', $tmp) or die "could not write $tmp: $!";
	print $fh $text;
	close($fh) or die "could not close $tmp: $!";
	chmod(0600, $tmp) or die "could not chmod $tmp: $!";
	rename($tmp, $path) or die "could not rename $tmp: $!";
	return;
}

# psql with terse errors, so that the client prints no statement text.
# It stops at the first error, and then returns non-zero.
sub run_sql
{
	my ($node, $sql) = @_;
	my ($ret, $out, $err) = $node->psql(
		'postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=terse' ]);
	return ($ret, $out, $err);
}

# psql with the default verbosity (DETAIL and HINT shown).
sub run_sql_verbose
{
	my ($node, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	return ($ret, $out, $err);
}

# A psql session in the background, for statements that block.
sub start_session
{
	my ($node) = @_;
	my $s = { in => '', out => '', err => '' };
	$s->{timer} = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
	$s->{h} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'VERBOSITY=terse',
			'-d', $node->connstr('postgres'), '-f', '-'
		],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, $s->{timer});
	return $s;
}

# Send SQL to a session; unless $nowait, wait until it has run.
my $marker_seq = 0;

sub session_send
{
	my ($s, $sql, $nowait) = @_;
	$sql .= ';' unless $sql =~ /;\s*$/;
	$s->{in} .= "$sql\n";
	if ($nowait)
	{
		# hand the text to psql without waiting for an answer
		$s->{h}->pump_nb while length($s->{in}) > 0;
		return;
	}
	session_wait($s);
	return;
}

# Wait until everything sent so far has run; return its output.
sub session_wait
{
	my ($s) = @_;
	my $marker = '__done_' . (++$marker_seq) . '__';
	$s->{in} .= "\\echo $marker\n";
	$s->{timer}->start($PostgreSQL::Test::Utils::timeout_default);
	$s->{h}->pump until $s->{out} =~ /\Q$marker\E/ || $s->{timer}->is_expired;
	die "timed out waiting for a psql session" if $s->{timer}->is_expired;
	my $out = $s->{out};
	$out =~ s/\Q$marker\E\n?//;
	$s->{out} = '';
	return $out;
}

sub session_quit
{
	my ($s) = @_;
	$s->{in} .= "\\q\n";
	$s->{h}->finish;
	return;
}

# PostgreSQL::Test::Cluster runs pg_regress --config-auth at init.
$ENV{PG_REGRESS} //= "$pgxs/src/test/regress/pg_regress";

# Run one pgbench transaction of a script with :tok bound to $token.
sub run_pgbench
{
	my ($node, $label, $mode, $token, $sql, $fails) = @_;
	my $script = $node->basedir . '/set_leak.sql';
	my ($pout, $perr) = ('', '');

	open(my $fh, '>', $script) or die "could not write $script: $!";
	print $fh "$sql\n";
	close($fh);
	my $ok = IPC::Run::run(
		[
			'pgbench', '-n', '-t', '1', '-M', $mode,
			'-h', $node->host, '-p', $node->port,
			'-D', "tok=$token", '-f', $script, 'postgres'
		],
		'>', \$pout, '2>', \$perr);
	ok($fails ? !$ok : $ok,
		$fails ? "$label: the call fails" : "$label: the call succeeds");
	ok(!contains($pout . $perr, $token), "$label: pgbench shows no secret");
	return;
}

my $node = PostgreSQL::Test::Cluster->new('secrets');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'whatsapp'
whatsapp.database = ''
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION whatsapp CASCADE');

my $keyfile = $node->data_dir . '/whatsapp.key';
my ($ret, $out, $err);

# ---------------------------------------------------------------------------
# a. Key file rules
# ---------------------------------------------------------------------------

ok(!-e $keyfile, 'no key file before the first secret is sealed');

# Setting an account without secrets needs no key.
$node->safe_psql('postgres',
	"SELECT whatsapp.wa_account_set('nokey', '1000', '')");
ok(!-e $keyfile, 'an account without secrets creates no key file');

($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_account_set('main', '1001', 'EAAkeyrules1', 'appsecret1', 'verify1')");
is($ret, 0, 'first wa_account_set with a secret succeeds');
ok(-f $keyfile, 'key file created at the first wa_account_set with a secret');
is(file_mode($keyfile), '0600', 'key file created with mode 0600');
my @keys = key_lines($keyfile);
is(scalar(@keys), 1, 'new key file holds one key');
my $key_id = $node->safe_psql('postgres',
	"SELECT key_id FROM whatsapp.accounts WHERE name = 'main'");
is( $key_id,
	substr(sha256_hex('whatsapp-key-id:' . pack('H*', lc($keys[0]))), 0, 16),
	'key id is the fingerprint of the key in the file');
ok($node->log_contains(qr/whatsapp created key file .* with key id \Q$key_id\E/),
	'key creation is logged with its key id');
ok(!contains(slurp_file($node->logfile), $keys[0]),
	'the key itself is not in the server log');

# A group- or world-accessible key file is refused.
chmod(0644, $keyfile);
($ret, $out, $err) = run_sql_verbose($node,
	"SELECT whatsapp.wa_account_set('main', '1001', 'EAAkeyrules2')");
isnt($ret, 0, 'world-readable key file: wa_account_set refused');
like($err, qr/key file ".*" is accessible by group or others/,
	'world-readable key file: message names the problem');
like($err, qr/HINT:\s+Run chmod 600 \S*whatsapp\.key/,
	'world-readable key file: hint says chmod 600');

chmod(0640, $keyfile);
($ret, $out, $err) = run_sql_verbose($node, 'SELECT whatsapp.wa_rebind()');
isnt($ret, 0, 'group-readable key file: wa_rebind refused');
like($err, qr/could not unseal the access_token of account "main"/,
	'group-readable key file: unsealing fails');
like($err, qr/DETAIL:.*accessible by group or others/,
	'group-readable key file: detail says why');
chmod(0600, $keyfile);

# A malformed key file is refused and left alone.
my $good_key_text = slurp_file($keyfile);
write_key_file($keyfile, "# damaged\nnot a key\n");
($ret, $out, $err) = run_sql_verbose($node,
	"SELECT whatsapp.wa_account_set('main', '1001', 'EAAkeyrules3')");
isnt($ret, 0, 'malformed key file: wa_account_set refused');
like($err, qr/key file ".*" is malformed/,
	'malformed key file: message says so');
like($err, qr/DETAIL:\s+Line 2 /, 'malformed key file: detail names the line');
is(slurp_file($keyfile), "# damaged\nnot a key\n",
	'malformed key file: left unchanged');
write_key_file($keyfile, $good_key_text);

# A missing key file is not replaced while secrets are sealed.
move($keyfile, "$keyfile.saved") or die "could not move the key file: $!";
($ret, $out, $err) = run_sql_verbose($node,
	"SELECT whatsapp.wa_account_set('other', '1002', 'EAAkeyrules4')");
isnt($ret, 0, 'missing key file with sealed secrets: wa_account_set refused');
like($err, qr/key file ".*" is missing/,
	'missing key file: message says the key file is missing');
like($err, qr/no new key file is created/,
	'missing key file: detail says no new key is created');
like($err, qr/HINT:\s+Restore the key file/,
	'missing key file: hint says to restore it');
ok(!-e $keyfile, 'missing key file: no new key file was created');
($ret, $out, $err) = run_sql($node, 'SELECT whatsapp.wa_rotate_key()');
isnt($ret, 0, 'missing key file: wa_rotate_key refused');
ok(!-e $keyfile, 'missing key file: wa_rotate_key created no key file');
($ret, $out, $err) = run_sql_verbose($node, 'SELECT whatsapp.wa_rebind()');
like($err, qr/DETAIL:\s+The whatsapp key file is missing/,
	'missing key file: unsealing reports the missing file');
move("$keyfile.saved", $keyfile) or die "could not restore the key file: $!";

# A different key in the file: secrets do not open, no key is minted.
my $wrong_key = join('', map { sprintf('%02x', int(rand(256))) } 1 .. 32);
my $wrong_text = "# another key\n$wrong_key\n";
write_key_file($keyfile, $wrong_text);
($ret, $out, $err) = run_sql_verbose($node, 'SELECT whatsapp.wa_rebind()');
isnt($ret, 0, 'wrong key: wa_rebind refused');
like($err, qr/could not unseal the access_token of account "main"/,
	'wrong key: the error names the account and the secret');
like($err, qr/DETAIL:\s+No key in the whatsapp key file has the key id/,
	'wrong key: detail says the key id is unknown');
($ret, $out, $err) = run_sql($node, 'SELECT whatsapp.wa_rotate_key()');
isnt($ret, 0, 'wrong key: wa_rotate_key refused');
is(slurp_file($keyfile), $wrong_text,
	'wrong key: the key file is unchanged, no new key minted');
write_key_file($keyfile, $good_key_text);
is($node->safe_psql('postgres', 'SELECT whatsapp.wa_rebind()'),
	'3', 'right key restored: secrets open again');

# ---------------------------------------------------------------------------
# b. Rotation
# ---------------------------------------------------------------------------

my $key_id1 = $node->safe_psql('postgres',
	"SELECT key_id FROM whatsapp.accounts WHERE name = 'main'");
is($node->safe_psql('postgres', 'SELECT whatsapp.wa_rotate_key()'),
	'3', 'wa_rotate_key re-seals the three secrets');
my $key_id2 = $node->safe_psql('postgres',
	"SELECT key_id FROM whatsapp.accounts WHERE name = 'main'");
isnt($key_id2, $key_id1, 'rotation changes accounts.key_id');
my @keys2 = key_lines($keyfile);
is(scalar(@keys2), 2, 'rotated key file holds two keys');
is(lc($keys2[1]), lc($keys[0]), 'the old key is kept after the new one');
is( $key_id2,
	substr(sha256_hex('whatsapp-key-id:' . pack('H*', lc($keys2[0]))), 0, 16),
	'the new key is the first key of the file');
is(file_mode($keyfile), '0600', 'rotated key file has mode 0600');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM whatsapp.account WHERE dropped_at IS NULL
		   AND (access_token_key <> '$key_id2' OR app_secret_key <> '$key_id2'
				OR verify_token_key <> '$key_id2')"),
	'0',
	'every secret now carries the new key id');
is($node->safe_psql('postgres', 'SELECT whatsapp.wa_rotate_key()'),
	'3', 'a second rotation unseals and re-seals everything');
is(scalar(key_lines($keyfile)), 3, 'second rotation keeps both older keys');
is($node->safe_psql('postgres', 'SELECT whatsapp.wa_rebind()'),
	'3', 'wa_rebind works after rotations');
ok($node->log_contains(qr/whatsapp wrote a new key to ".*" with key id \Q$key_id2\E/),
	'rotation is logged with the new key id');

# ---------------------------------------------------------------------------
# c. No plaintext anywhere
# ---------------------------------------------------------------------------

my $token = random_secret('EAATESTSECRET');
my $app_secret = random_secret('APPSECRET');
my $verify_token = random_secret('VERIFYTOKEN');
my @secrets = ($token, $app_secret, $verify_token);
my $log_start = -s $node->logfile;

# At default settings (log_min_error_statement = error), failing calls,
# including errors raised before the function runs.
my %failing = (
	'wrong argument type' =>
	  "SELECT whatsapp.wa_account_set('leak', '2001', '$token', max_mps => 'abc'::text)",
	'type input error on the secret' =>
	  "SELECT whatsapp.wa_account_set('leak', '2001', '$token', max_mps => '$token')",
	'misspelled function name' =>
	  "SELECT whatsapp.wa_acount_set('leak', '2001', '$token')",
	'syntax error at the secret' =>
	  "SELECT whatsapp.wa_account_set('leak', '2001' '$token')",
	'unquoted secret' => "SELECT whatsapp.wa_account_set('leak', '2001', $token)",
	'error inside the function' =>
	  "SELECT whatsapp.wa_account_set('leak', '2001', '$token', max_mps => 0)",
	'error inside a DO block' =>
	  "DO \$\$BEGIN PERFORM whatsapp.wa_account_set('leak', '2001', '$token', max_mps => 0); END\$\$"
);
foreach my $name (sort keys %failing)
{
	($ret, $out, $err) = run_sql($node, $failing{$name});
	isnt($ret, 0, "default settings, $name: the call fails");
	ok(!contains($err, $token),
		"default settings, $name: the error sent to the client has no secret");
}
my $log = slurp_file($node->logfile, $log_start);
like($log, qr/ERROR:/, 'default settings: the failing calls were logged');
like($log, qr/invalid input syntax for type integer: "\*\*\*"/,
	'default settings: a type input error shows *** for the value');
ok(!contains($log, $token),
	'default settings: the server log holds no secret');

# Everything logged.
$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET log_statement = 'all';
ALTER SYSTEM SET log_min_duration_statement = 0;
ALTER SYSTEM SET log_error_verbosity = 'verbose';
ALTER SYSTEM SET log_parameter_max_length = -1;
ALTER SYSTEM SET log_parameter_max_length_on_error = -1;
SELECT pg_reload_conf();
});
$node->poll_query_until('postgres',
	"SELECT current_setting('log_statement') = 'all'")
  or die 'log_statement did not take effect';
$log_start = -s $node->logfile;

($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_account_set('leak', '2001', '$token', '$app_secret', '$verify_token', '3001', 80)"
);
is($ret, 0, 'logged: wa_account_set succeeds');
foreach my $name (sort keys %failing)
{
	($ret, $out, $err) = run_sql($node, $failing{$name});
	isnt($ret, 0, "logged, $name: the call fails");
}

# A statement prepared with PREPARE and run with EXECUTE.
($ret, $out, $err) = $node->psql(
	'postgres',
	"PREPARE set_leak(text) AS SELECT whatsapp.wa_account_set('leak', '2001', \$1);
	 EXECUTE set_leak('$token');
	 EXECUTE set_leak('$token' || E'\\n');",
	on_error_stop => 0,
	extra_params => [ '-v', 'VERBOSITY=terse' ]);
like($err, qr/control characters/, 'logged: EXECUTE of a prepared call runs');
ok(!contains($err, $token), 'logged: EXECUTE errors show no secret');

# auto_explain logs the query text of what it explains.
($ret, $out, $err) = run_sql($node,
	"LOAD 'auto_explain';
	 SET auto_explain.log_min_duration = 0;
	 SET auto_explain.log_nested_statements = on;
	 SELECT whatsapp.wa_account_set('leak', '2001', '$token');");
is($ret, 0, 'logged: a call under auto_explain succeeds');

# The extended protocol: pgbench sends the variable as a bind parameter.
foreach my $mode ('extended', 'prepared')
{
	run_pgbench($node, "logged, protocol $mode", $mode, $token,
		"SELECT whatsapp.wa_account_set('leak', '2001', :tok);", 0);
	run_pgbench($node, "logged, protocol $mode, failing call", $mode, $token,
		"SELECT whatsapp.wa_account_set('leak', '2001', :tok, max_mps => 0);", 1);
}

# log_min_duration_statement alone writes the statement on its duration
# line.
set_log_statement($node, 'none');
($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_account_set('leak', '2001', '$token')");
is($ret, 0, 'duration logged: wa_account_set succeeds');
run_pgbench($node, 'duration logged, protocol extended', 'extended', $token,
	"SELECT whatsapp.wa_account_set('leak', '2001', :tok);", 0);
run_pgbench($node, 'duration logged, protocol extended, failing call',
	'extended', $token,
	"SELECT whatsapp.wa_account_set('leak', '2001', :tok, max_mps => 0);", 1);

# pg_stat_activity while a call runs (blocked on the account's row lock)
# and after the session goes idle, for a call that succeeds and one that
# fails.
my $locker = start_session($node);
my $caller = start_session($node);
session_send($caller, 'SELECT pg_backend_pid();', 1);
my $caller_pid = session_wait($caller);
$caller_pid =~ s/\s+//g;
like($caller_pid, qr/^\d+$/, 'pg_stat_activity: the calling session has a pid');

session_send($locker,
	"BEGIN; SELECT 1 FROM whatsapp.account WHERE name = 'leak' AND dropped_at IS NULL FOR UPDATE;"
);
session_send($caller,
	"SELECT whatsapp.wa_account_set('leak', '2001', '$token', '$app_secret', '$verify_token');",
	1);
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $caller_pid"
	),
	'pg_stat_activity: the call waits for the row lock');
my $running = $node->safe_psql('postgres',
	"SELECT state || ' ' || query FROM pg_stat_activity WHERE pid = $caller_pid");
like($running, qr/^active .*wa_account_set\(<redacted>\)/,
	'pg_stat_activity: the running call shows a redacted text');
my $all_queries = $node->safe_psql('postgres',
	'SELECT string_agg(query, E\'\n\') FROM pg_stat_activity WHERE pid <> pg_backend_pid()');
ok(!grep({ contains($all_queries, $_) } @secrets),
	'pg_stat_activity: no session shows a secret while the call runs');

session_send($locker, 'COMMIT;');
session_wait($caller);
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $caller_pid"),
	'pg_stat_activity: the session goes idle after the call');
my $idle = $node->safe_psql('postgres',
	"SELECT query FROM pg_stat_activity WHERE pid = $caller_pid");
like($idle, qr/wa_account_set\(<redacted>\)/,
	'pg_stat_activity: the idle session shows a redacted text');
ok(!grep({ contains($idle, $_) } @secrets),
	'pg_stat_activity: the idle session shows no secret');

foreach my $name (sort keys %failing)
{
	$caller->{err} = '';
	session_send($caller, $failing{$name});
	like($caller->{err}, qr/ERROR:/,
		"pg_stat_activity: the failed call ($name) raised an error");
	ok(!contains($caller->{err}, $token),
		"pg_stat_activity: the error of the failed call ($name) shows no secret");
	my $last = $node->safe_psql('postgres',
		"SELECT state || ' ' || query FROM pg_stat_activity WHERE pid = $caller_pid");
	like($last, qr/^idle .*\(<redacted>\)/,
		"pg_stat_activity: after a failed call ($name) the idle session shows a redacted text");
	ok(!contains($last, $token),
		"pg_stat_activity: after a failed call ($name) the idle session shows no secret");
}
session_quit($caller);
session_quit($locker);

# The server log of all of the above.
$log = slurp_file($node->logfile, $log_start);
like($log, qr/statement: SELECT whatsapp\.wa_account_set\(<redacted>\)/,
	'log: log_statement lines are redacted, not dropped');
like($log, qr/duration: [\d.]+ ms\s+statement: SELECT whatsapp\.wa_account_set\(<redacted>\)/,
	'log: log_min_duration_statement lines are redacted');
like($log, qr/execute \S+: SELECT whatsapp\.wa_account_set\(<redacted>\)/,
	'log: extended protocol execute lines are redacted');
like($log, qr/Query Text: SELECT whatsapp\.wa_account_set\(<redacted>\)/,
	'log: auto_explain query texts are redacted');
foreach my $i (0 .. $#secrets)
{
	ok(!contains($log, $secrets[$i]),
		'log: no secret in the server log (secret ' . ($i + 1) . ' of 3)');
}
ok(!grep({ contains(slurp_file($node->logfile), $_) } key_lines($keyfile)),
	'log: no key in the server log');

# whatsapp.log and the account rows.
my $tables = $node->safe_psql('postgres',
	q{SELECT coalesce(string_agg(row_to_json(l)::text, E'\n'), '') FROM whatsapp.log l});
ok(!grep({ contains($tables, $_) } @secrets), 'whatsapp.log holds no secret');
my $rows = $node->safe_psql('postgres',
	q{SELECT string_agg(row_to_json(a)::text, E'\n') FROM whatsapp.account a});
ok(!grep({ contains($rows, $_) } @secrets), 'account rows hold no secret in clear');
ok(!grep({ contains($rows, unpack('H*', $_)) } @secrets),
	'account rows hold no secret in hex');
my $view = $node->safe_psql('postgres',
	q{SELECT string_agg(row_to_json(a)::text, E'\n') FROM whatsapp.accounts a});
like($view, qr/"has_access_token":true/, 'accounts view says the token is set');

# A plain pg_dump.
my $dumpfile = $node->basedir . '/dump.sql';
command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dumpfile ],
	'pg_dump of the database succeeds');
my $dump = slurp_file($dumpfile);
like($dump, qr/COPY whatsapp\.account /, 'pg_dump holds the account rows');
ok(!grep({ contains($dump, $_) } @secrets), 'pg_dump holds no secret in clear');
ok(!grep({ contains($dump, unpack('H*', $_)) } @secrets),
	'pg_dump holds no secret in hex');
ok(!grep({ contains($dump, $_) } key_lines($keyfile)), 'pg_dump holds no key');

# ---------------------------------------------------------------------------
# d. The verify token of the webhook handshake
# ---------------------------------------------------------------------------

# Odoo's controller sends the handshake as a simple query with the token
# inlined: "SELECT whatsapp.wa_verify_webhook(%s, %s, %s)".  The token is a
# fixed value that no other text of the test contains.
my $vt = 'vt-SECRET-7f3a9c';
my $vt_call = qr/SELECT whatsapp\.wa_verify_webhook\(<redacted>\)/;
$log_start = -s $node->logfile;

($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_account_set('hook', '4001', 'EAAhandshake1', verify_token => '$vt')");
is($ret, 0, 'handshake: an account with a verify token is set');

set_log_statement($node, 'all');

# A simple query, as Odoo sends it; the answer proves the token matched.
($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_verify_webhook('subscribe', '$vt', 'challenge-simple')");
is($out, 'challenge-simple', 'handshake, logged: a simple query answers the challenge');

# A misspelled, mixed-case name is caught too (and fails).
($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.WA_Verify_Webhok('subscribe', '$vt', 'challenge-typo')");
isnt($ret, 0, 'handshake, logged: a misspelled call fails');
ok(!contains($err, $vt), 'handshake, logged: its error shows no token');

# An error raised at the token itself: type input errors quote it.
($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_verify_webhook('subscribe', '$vt'::int::text, 'challenge-type')");
isnt($ret, 0, 'handshake, logged: a type input error at the token fails');
ok(!contains($err, $vt), 'handshake, logged: the type input error shows no token');

# PREPARE, then EXECUTE with the token: the EXECUTE text does not name the
# function.
($ret, $out, $err) = run_sql($node,
	"PREPARE handshake(text, text, text) AS SELECT whatsapp.wa_verify_webhook(\$1, \$2, \$3);
	 EXECUTE handshake('subscribe', '$vt', 'challenge-execute');");
is($ret, 0, 'handshake, logged: EXECUTE of a prepared call runs');
like($out, qr/^challenge-execute$/m,
	'handshake, logged: EXECUTE of a prepared call answers the challenge');

# auto_explain logs the query text of what it explains.
($ret, $out, $err) = run_sql($node,
	"LOAD 'auto_explain';
	 SET auto_explain.log_min_duration = 0;
	 SELECT whatsapp.wa_verify_webhook('subscribe', '$vt', 'challenge-explain');");
like($out, qr/^challenge-explain$/m,
	'handshake, logged: a call under auto_explain answers the challenge');

# The extended protocol: the token as a bind parameter.
foreach my $mode ('extended', 'prepared')
{
	run_pgbench($node, "handshake, logged, protocol $mode", $mode, $vt,
		"SELECT whatsapp.wa_verify_webhook('subscribe', :tok, 'challenge-bind');",
		0);
}

# log_min_duration_statement alone.
set_log_statement($node, 'none');
($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_verify_webhook('subscribe', '$vt', 'challenge-duration')");
is($out, 'challenge-duration',
	'handshake, duration logged: a simple query answers the challenge');
run_pgbench($node, 'handshake, duration logged, protocol extended',
	'extended', $vt,
	"SELECT whatsapp.wa_verify_webhook('subscribe', :tok, 'challenge-bind');", 0);

# pg_stat_activity while a call runs (its lookup waits for a lock on the
# account table) and after the session goes idle.
$locker = start_session($node);
$caller = start_session($node);
session_send($caller, 'SELECT pg_backend_pid();', 1);
$caller_pid = session_wait($caller);
$caller_pid =~ s/\s+//g;
like($caller_pid, qr/^\d+$/, 'handshake, pg_stat_activity: the calling session has a pid');

session_send($locker,
	'BEGIN; LOCK TABLE whatsapp.account IN ACCESS EXCLUSIVE MODE;');
session_send($caller,
	"SELECT whatsapp.wa_verify_webhook('subscribe', '$vt', 'challenge-activity');",
	1);
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $caller_pid"
	),
	'handshake, pg_stat_activity: the call waits for the table lock');
$running = $node->safe_psql('postgres',
	"SELECT state || ' ' || query FROM pg_stat_activity WHERE pid = $caller_pid");
like_masked($running, qr/^active $vt_call$/, $vt,
	'handshake, pg_stat_activity: the running call shows a redacted text');
$all_queries = $node->safe_psql('postgres',
	'SELECT string_agg(query, E\'\n\') FROM pg_stat_activity WHERE pid <> pg_backend_pid()');
ok(!contains($all_queries, $vt),
	'handshake, pg_stat_activity: no session shows the token while the call runs');

session_send($locker, 'COMMIT;');
like(session_wait($caller), qr/^challenge-activity$/m,
	'handshake, pg_stat_activity: the call answers the challenge');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $caller_pid"),
	'handshake, pg_stat_activity: the session goes idle after the call');
$idle = $node->safe_psql('postgres',
	"SELECT state || ' ' || query FROM pg_stat_activity WHERE pid = $caller_pid");
like_masked($idle, qr/^idle $vt_call$/, $vt,
	'handshake, pg_stat_activity: the idle session shows a redacted text');
ok(!contains($idle, $vt),
	'handshake, pg_stat_activity: the idle session shows no token');

$caller->{err} = '';
session_send($caller,
	"SELECT whatsapp.wa_verify_webhook('subscribe', '$vt'::int::text, 'challenge-failed');");
like_masked($caller->{err}, qr/ERROR:/, $vt,
	'handshake, pg_stat_activity: a failing call raised an error');
my $last = $node->safe_psql('postgres',
	"SELECT state || ' ' || query FROM pg_stat_activity WHERE pid = $caller_pid");
like_masked($last, qr/^idle $vt_call$/, $vt,
	'handshake, pg_stat_activity: after a failed call the idle session shows a redacted text');
ok(!contains($last, $vt),
	'handshake, pg_stat_activity: after a failed call the idle session shows no token');
session_quit($caller);
session_quit($locker);

# The server log of all of the above.
$log = slurp_file($node->logfile, $log_start);
like_masked($log, qr/statement: $vt_call/, $vt,
	'handshake, log: log_statement lines are redacted, not dropped');
like_masked($log, qr/duration: [\d.]+ ms\s+statement: $vt_call/, $vt,
	'handshake, log: log_min_duration_statement lines are redacted');
like_masked($log, qr/execute \S+: $vt_call/, $vt,
	'handshake, log: extended protocol execute lines are redacted');
like_masked($log, qr/Query Text: $vt_call/, $vt,
	'handshake, log: auto_explain query texts are redacted');
like_masked($log, qr/invalid input syntax for type integer: "\*\*\*"/, $vt,
	'handshake, log: a type input error shows *** for the token');
ok(!contains(slurp_file($node->logfile), $vt),
	'handshake, log: the verify token is nowhere in the server log');

# ---------------------------------------------------------------------------
# e. Secrets through COPY: whatsapp.account_input
# ---------------------------------------------------------------------------

# The data of COPY ... FROM STDIN is never statement text: no log setting
# writes it.  The statement itself is redacted as well, as it names the
# view.  Errors carry the COPY line number, never the line.
my $ctoken = random_secret('EAACOPYTOKEN');
my $capp = random_secret('COPYAPPSECRET');
my $cverify = random_secret('COPYVERIFY');
my @csecrets = ($ctoken, $capp, $cverify);
my $copy_cols =
  'COPY whatsapp.account_input (name, phone_number_id, access_token, app_secret, verify_token, max_mps) FROM STDIN';

# COPY with its data, as psql reads it from its input.
sub copy_sql
{
	my ($head, @lines) = @_;
	return "$head;\n" . join('', map { "$_\n" } @lines) . "\\.\n";
}

# Does the text hold any of the secrets?
sub holds_secret
{
	my ($text, @list) = @_;
	return scalar grep { contains($text, $_) } @list;
}

set_log_statement($node, 'all');
$log_start = -s $node->logfile;

($ret, $out, $err) = run_sql_verbose($node,
	copy_sql($copy_cols, "copied\t4101\t$ctoken\t$capp\t$cverify\t80"));
is($ret, 0, 'COPY: an account set through account_input');
is($node->safe_psql('postgres',
		q{SELECT has_access_token || ',' || has_app_secret || ',' || has_verify_token
		    FROM whatsapp.accounts WHERE name = 'copied'}),
	'true,true,true', 'COPY: the account has its three secrets');
# The verify token that COPY sealed is the one given.
($ret, $out, $err) = run_sql($node,
	"SELECT whatsapp.wa_verify_webhook('subscribe', '$cverify', 'challenge-copy')");
is($out, 'challenge-copy', 'COPY: the sealed verify token is the one in the data');

# Failing rows, each in a COPY of its own; a client with VERBOSITY default
# sees the CONTEXT line too.
my %copy_failing = (
	'a row the trigger refuses (max_mps 0), line 2' => copy_sql(
		$copy_cols,
		"copied-ok\t4102\t$ctoken\t\\N\t\\N\t80",
		"copied-bad\t4103\t$ctoken\t$capp\t$cverify\t0"),
	'a row with too many fields' =>
	  copy_sql($copy_cols, "copied\t4101\t$ctoken\t$capp\t$cverify\t80\textra"),
	'a row with too few fields' =>
	  copy_sql($copy_cols, "copied\t4101\t$ctoken\t$capp"),
	'a CSV row with quotes and too many fields' => copy_sql(
		"$copy_cols (FORMAT csv)",
		qq{copied,4101,"$ctoken,x","$capp",$cverify,80,extra}),
	'a token where max_mps belongs' =>
	  copy_sql($copy_cols, "copied\t4101\t$capp\t$cverify\t80\t$ctoken"),
	'a phone number id that is not digits' =>
	  copy_sql($copy_cols, "copied\t41O1\t$ctoken\t$capp\t$cverify\t80"));
my %copy_errors;
foreach my $name (sort keys %copy_failing)
{
	($ret, $out, $err) = run_sql_verbose($node, $copy_failing{$name});
	isnt($ret, 0, "COPY, $name: fails");
	like($err, qr/CONTEXT:\s+COPY account_input, line \d+\s*$/m,
		"COPY, $name: the context names the line");
	ok(!holds_secret($out . $err, @csecrets),
		"COPY, $name: the client sees no secret");
	$copy_errors{$name} = $err;
}
like($copy_errors{'a phone number id that is not digits'},
	qr/ERROR:\s+phone_number_id must consist of digits only/,
	'COPY: the trigger raises wa_account_set\'s own error');
like($copy_errors{'a row the trigger refuses (max_mps 0), line 2'},
	qr/CONTEXT:\s+COPY account_input, line 2\s*$/m,
	'COPY: the failing row is line 2');
like($copy_errors{'a token where max_mps belongs'},
	qr/ERROR:\s+max_mps must be a whole number/,
	'COPY: a misplaced token in max_mps is refused without being quoted');
like($copy_errors{'a row with too few fields'},
	qr/ERROR:\s+missing data for column "verify_token"/,
	'COPY: a short line names the missing column');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM whatsapp.account WHERE name IN ('copied-ok', 'copied-bad')}),
	'0', 'COPY: a failing row fails the whole COPY');

# pg_stat_activity while a COPY waits (its row waits for the account's
# lock) and after.
$locker = start_session($node);
$caller = start_session($node);
session_send($caller, 'SELECT pg_backend_pid();', 1);
$caller_pid = session_wait($caller);
$caller_pid =~ s/\s+//g;
session_send($locker,
	"BEGIN; SELECT 1 FROM whatsapp.account WHERE name = 'copied' AND dropped_at IS NULL FOR UPDATE;"
);
# (not session_send: a ";" after the COPY data would stop psql reading)
$caller->{in} .= copy_sql($copy_cols, "copied\t4101\t$ctoken\t$capp\t$cverify\t80");
$caller->{h}->pump_nb while length($caller->{in}) > 0;
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $caller_pid"
	),
	'COPY, pg_stat_activity: the COPY waits for the row lock');
$running = $node->safe_psql('postgres',
	"SELECT state || ' ' || query FROM pg_stat_activity WHERE pid = $caller_pid");
like($running, qr/^active COPY whatsapp\.account_input <redacted>$/,
	'COPY, pg_stat_activity: the running COPY shows a redacted text');
$all_queries = $node->safe_psql('postgres',
	'SELECT string_agg(query, E\'\n\') FROM pg_stat_activity WHERE pid <> pg_backend_pid()');
ok(!holds_secret($all_queries, @csecrets),
	'COPY, pg_stat_activity: no session shows a secret');
session_send($locker, 'COMMIT;');
session_wait($caller);
session_quit($caller);
session_quit($locker);

# With log_statement off, the duration line of the COPY.
set_log_statement($node, 'none');
($ret, $out, $err) = run_sql_verbose($node,
	copy_sql($copy_cols, "copied\t4101\t$ctoken\t$capp\t$cverify\t80"));
is($ret, 0, 'COPY, duration logged: the COPY succeeds');

$log = slurp_file($node->logfile, $log_start);
like($log, qr/statement: COPY whatsapp\.account_input <redacted>/,
	'COPY, log: the statement is logged, redacted');
like($log, qr/duration: [\d.]+ ms\s+statement: COPY whatsapp\.account_input <redacted>/,
	'COPY, log: the duration line is redacted');
like($log, qr/CONTEXT:\s+COPY account_input, line 2\n/,
	'COPY, log: a failing row is named by its line number');
like($log, qr/ERROR:\s+(?:\S+:\s+)?extra data after last expected column/,
	'COPY, log: the errors of COPY itself are logged');
ok(!holds_secret($log, @csecrets), 'COPY, log: no secret in the server log');

# INSERT INTO the view names it, so it is redacted like wa_account_set.
($ret, $out, $err) = run_sql($node,
	"INSERT INTO whatsapp.account_input (name, phone_number_id, access_token) VALUES ('inserted', '4104', '$ctoken')"
);
is($ret, 0, 'INSERT into account_input works');
ok(!holds_secret(slurp_file($node->logfile, $log_start), @csecrets),
	'INSERT into account_input: no secret in the server log');

# ---------------------------------------------------------------------------
# f. What redaction does not cover (docs/security.md, "What the secrecy promises do
#	 not cover"): statement text that spells the function another way, or
#	 that calls it from a function of the caller's own, reaches the log.
#	 COPY into account_input is the way that does not depend on it.
# ---------------------------------------------------------------------------
set_log_statement($node, 'all');
$log_start = -s $node->logfile;
my $gap_unicode = random_secret('EAAGAPUNICODE');
my $gap_wrapper = random_secret('EAAGAPWRAPPER');

($ret, $out, $err) = run_sql($node,
	qq{SELECT whatsapp.U&"wa\\005faccount_set"('gap', '4201', '$gap_unicode')});
is($ret, 0, 'not covered: a call spelled with U&"..." escapes works');
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION public.set_whatsapp_token(t text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM whatsapp.wa_account_set('gap', '4201', t);
END
$$;});
($ret, $out, $err) = run_sql($node,
	"SELECT public.set_whatsapp_token('$gap_wrapper')");
is($ret, 0, 'not covered: a call through a plpgsql wrapper works');

$log = slurp_file($node->logfile, $log_start);
ok(contains($log, $gap_unicode),
	'not covered: the U&"..." spelling puts the token in the log');
ok(contains($log, $gap_wrapper),
	'not covered: the wrapper\'s call puts the token in the log');

# The same two through COPY: nothing.
($ret, $out, $err) = run_sql_verbose($node,
	copy_sql('COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN',
		"gap\t4201\t$ctoken"));
is($ret, 0, 'not covered, by COPY instead: the token is set');
ok(!holds_secret(slurp_file($node->logfile, $log_start), @csecrets),
	'not covered, by COPY instead: no COPY secret in the log');

$node->stop;

# ---------------------------------------------------------------------------
# g. Without preloading: COPY's data still never is statement text, and a
#	 row the trigger refuses is still named by its line only; but a line
#	 COPY itself cannot parse is quoted by COPY's CONTEXT (docs/security.md).
# ---------------------------------------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('secrets_nopreload');
$plain->init;
$plain->append_conf(
	'postgresql.conf', q{
log_statement = 'all'
log_min_duration_statement = 0
});
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION whatsapp CASCADE');
my $ptoken = random_secret('EAAPLAINTOKEN');
my $pparse = random_secret('EAAPLAINPARSE');

($ret, $out, $err) = run_sql_verbose($plain,
	copy_sql('COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN',
		"plain\t4301\t$ptoken"));
is($ret, 0, 'no preload, COPY: the account is set');
($ret, $out, $err) = run_sql_verbose($plain,
	copy_sql('COPY whatsapp.account_input (name, phone_number_id, access_token, max_mps) FROM STDIN',
		"plain\t4301\t$ptoken\t80", "plain\t4301\t$ptoken\t0"));
isnt($ret, 0, 'no preload, COPY: a row the trigger refuses fails');
like($err, qr/CONTEXT:\s+COPY account_input, line 2\s*$/m,
	'no preload, COPY: its context names the line');
ok(!contains($out . $err, $ptoken), 'no preload, COPY: the client sees no token');
# Where no log hook runs at all (the message does not go to the log, so
# the hook is not called), the trigger's own errors still show the client
# the line number only.
($ret, $out, $err) = run_sql_verbose($plain,
	"SET log_min_messages = fatal;\n"
	  . copy_sql('COPY whatsapp.account_input (name, phone_number_id, access_token, max_mps) FROM STDIN',
		"plain\t4301\t$ptoken\t0"));
isnt($ret, 0, 'no hook, COPY: a row the trigger refuses fails');
like($err, qr/CONTEXT:\s+COPY account_input, line 1\s*$/m,
	'no hook, COPY: its context names the line');
ok(!contains($out . $err, $ptoken), 'no hook, COPY: the client sees no token');
($ret, $out, $err) = run_sql_verbose($plain,
	copy_sql('COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN',
		"plain\t4301\t$pparse\textra"));
isnt($ret, 0, 'no preload, COPY: a line with too many fields fails');
my $plain_log = slurp_file($plain->logfile);
ok(!contains($plain_log, $ptoken),
	'no preload, COPY: no token of a row the trigger handled is in the log');
ok(contains($plain_log, $pparse),
	'not covered, no preload: COPY quotes a line it cannot parse in the log');
$plain->stop;

done_testing();
