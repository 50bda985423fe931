
=pod

=head1 NAME

WaTest - helpers for the whatsapp extension's TAP tests

=head1 SYNOPSIS

  use lib 'test/perl';           # or PERL5LIB, as test/run_tests.sh sets it
  use WaTest;
  use Test::More;

  my $mock = WaTest::mock_start();
  my $node = WaTest::node('main', mock => $mock,
                          'whatsapp.max_attempts' => 3);
  WaTest::psql_ok($node, 'CREATE EXTENSION whatsapp CASCADE', 'installed');
  ok(WaTest::wait_for($node, 'SELECT count(*) FROM whatsapp.messages', '0'),
     'no messages yet');
  my $reqs = $mock->requests;     # array ref of the mock's records
  done_testing();

=head1 DESCRIPTION

Every cluster made by C<node> preloads the library and serves database
C<postgres>.  No cluster made here can reach anything but 127.0.0.1: without
a mock, C<whatsapp.api_url> points at a closed loopback port.  Mocks are
stopped when their object goes away and at the end of the test, whatever
happens.

Proxy variables are removed from the environment when this module loads, so
neither the servers nor the mock's helpers ever use a proxy.

=cut

package WaTest;

use strict;
use warnings;

use Carp;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

BEGIN
{
	delete @ENV{
		qw(http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
		  ftp_proxy FTP_PROXY)
	};
	$ENV{no_proxy} = $ENV{NO_PROXY} = '127.0.0.1,localhost,::1';
}

# The repository (or test copy) this module lives in: test/perl/..
our $REPO = abs_path(dirname(__FILE__) . '/../..');

# A loopback port nothing should listen on: the API URL of nodes without a
# mock, so that a test that forgot its mock can never reach the internet.
our $DEAD_API_URL = 'http://127.0.0.1:1';

=pod

=head1 FUNCTIONS

=over

=item WaTest::repo()

The absolute path of the tree under test.

=cut

sub repo { return $REPO; }

=pod

=item WaTest::default_version()

C<default_version> from F<whatsapp.control>.

=cut

sub default_version
{
	my $control = PostgreSQL::Test::Utils::slurp_file("$REPO/whatsapp.control");
	$control =~ /^\s*default_version\s*=\s*'([^']*)'/m
	  or croak "no default_version in $REPO/whatsapp.control";
	return $1;
}

# Quote a value for postgresql.conf; plain numbers stay bare.
sub _conf_value
{
	my ($v) = @_;
	return $v if $v =~ /^-?\d+(?:\.\d+)?$/;
	$v =~ s/'/''/g;
	return "'$v'";
}

=pod

=item WaTest::node($name, %conf)

Returns a new, initialized and started PostgreSQL::Test::Cluster.

Options (every other key is a setting name and its value):

  mock      a WaTest::Mock, a port number or a URL: sets whatsapp.api_url
  preload   0 to leave shared_preload_libraries unset (default 1); then
            no whatsapp.* setting is written unless given explicitly
  database  value of whatsapp.database (default 'postgres')
  extra     more postgresql.conf text, a string or an array ref of lines
  init      hash ref of options for $node->init (e.g. allows_streaming)
  start     0 to return the node initialized but not started

Defaults written: log_min_messages = debug1, log_error_verbosity =
verbose (so a pattern for a message in the server log allows the SQLSTATE
before its text: C<qr/WARNING:\s+(?:[0-9A-Z]{5}:\s+)?text/>), whatsapp.api_url as above,
whatsapp.database, shared_preload_libraries.  Explicit settings come last
and win.

=cut

sub node
{
	my ($name, %conf) = @_;
	my $mock = delete $conf{mock};
	my $preload = exists $conf{preload} ? delete $conf{preload} : 1;
	my $database = exists $conf{database} ? delete $conf{database} : 'postgres';
	my $extra = delete $conf{extra};
	my $init = delete $conf{init} || {};
	my $start = exists $conf{start} ? delete $conf{start} : 1;

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%$init);

	my @lines = (
		'', '# Added by WaTest::node',
		"log_min_messages = debug1",
		"log_line_prefix = '%m [%p] %q%a %b '",
		# a LOCATION line names the C function and file of every message,
		# so that test/log_scan.pl can tell the extension's own lines
		# (it also puts the SQLSTATE before each message's text)
		"log_error_verbosity = verbose",
		"max_worker_processes = 16");
	if ($preload)
	{
		push @lines, "shared_preload_libraries = 'whatsapp'";
		push @lines, 'whatsapp.database = ' . _conf_value($database);
		push @lines, 'whatsapp.api_url = ' . _conf_value(mock_url($mock));
	}
	if (defined $extra)
	{
		push @lines, ref $extra eq 'ARRAY' ? @$extra : $extra;
	}
	for my $k (sort keys %conf)
	{
		push @lines, "$k = " . _conf_value($conf{$k});
	}
	$node->append_conf('postgresql.conf', join("\n", @lines) . "\n");
	$node->start if $start;
	return $node;
}

=pod

=item WaTest::mock_url($mock)

The API URL for a WaTest::Mock, a port or a URL; the dead loopback URL for
undef.

=cut

sub mock_url
{
	my ($mock) = @_;
	return $DEAD_API_URL unless defined $mock;
	return $mock->url if ref $mock;
	return "http://127.0.0.1:$mock" if $mock =~ /^\d+$/;
	croak "not a loopback URL: $mock"
	  unless $mock =~ m{^http://(?:127\.\d+\.\d+\.\d+|localhost|\[::1\])(?::\d+)?/?$};
	return $mock;
}

=pod

=item WaTest::mock_start(%opts)

Starts the mock Cloud API (F<test/mock/start.sh>, or C<$WA_MOCK_DIR/start.sh>)
and returns a WaTest::Mock.  Options: C<latency> (ms), C<record> (0 for
C<--no-record>), C<strict>, C<max_records>, C<tls_cert> and C<tls_key>
(PEM files: the API over HTTPS too, see C<tls_url>), C<args> (array ref of
more arguments), C<name> (names its directory).  Every mock appends what
its C</messages> endpoint received to
F<tmp_check/log/mock_received_TEST_NAME_PID.jsonl> (C<--received>), for the
scan of the server logs after the suite (F<test/log_scan.pl>).

=cut

my $mock_count = 0;

sub mock_start
{
	my (%opts) = @_;
	return WaTest::Mock->_start(%opts);
}

=pod

=item WaTest::run_psql($node, $sql, %opts)

Runs $sql (psql script text; meta-commands allowed) with
C<\set VERBOSITY verbose> and ON_ERROR_STOP.  Returns ($rc, $stdout,
$stderr, $sqlstate), where $sqlstate is that of the first ERROR, or ''.
Options: C<dbname> (default 'postgres'), C<timeout> (seconds; a timeout
gives a non-zero $rc), C<connstr> (instead of dbname) and C<extra_params>
(array ref of more psql arguments).

=cut

sub run_psql
{
	my ($node, $sql, %opts) = @_;
	my ($out, $err) = ('', '');
	my $db = $opts{dbname} // 'postgres';
	my %extra;
	$extra{connstr} = $opts{connstr} if defined $opts{connstr};
	$extra{extra_params} = $opts{extra_params} if $opts{extra_params};
	if ($opts{timeout})
	{
		my $timed_out = 0;
		$extra{timeout} = $opts{timeout};
		$extra{timed_out} = \$timed_out;
	}
	my $rc = $node->psql(
		$db, "\\set VERBOSITY verbose\n$sql",
		stdout => \$out,
		stderr => \$err,
		on_error_stop => 1,
		%extra);
	if (!defined $rc)
	{
		$rc = 124;
		$err .= "\npsql timed out after $opts{timeout} s";
	}
	my $state = '';
	$state = $1 if $err =~ /(?:ERROR|FATAL|PANIC):\s+([0-9A-Z]{5}):/;
	return ($rc, $out, $err, $state);
}

=pod

=item WaTest::psql_ok($node, $sql, $name, %opts)

A test that $sql runs without error.  Returns its standard output.

=cut

sub psql_ok
{
	my ($node, $sql, $name, %opts) = @_;
	my ($rc, $out, $err) = run_psql($node, $sql, %opts);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok($rc == 0, $name) or diag("psql failed (rc $rc):\n$err");
	return $out;
}

=pod

=item WaTest::psql_is($node, $sql, $expected, $name, %opts)

A test that $sql's output (unaligned, tuples only) equals $expected.

=cut

sub psql_is
{
	my ($node, $sql, $expected, $name, %opts) = @_;
	my ($rc, $out, $err) = run_psql($node, $sql, %opts);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	if ($rc != 0)
	{
		fail($name);
		diag("psql failed (rc $rc):\n$err");
		return undef;
	}
	is($out, $expected, $name);
	return $out;
}

=pod

=item WaTest::psql_like($node, $sql, $regexp, $name, %opts)

A test that $sql's output matches $regexp.

=cut

sub psql_like
{
	my ($node, $sql, $re, $name, %opts) = @_;
	my ($rc, $out, $err) = run_psql($node, $sql, %opts);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	if ($rc != 0)
	{
		fail($name);
		diag("psql failed (rc $rc):\n$err");
		return undef;
	}
	like($out, $re, $name);
	return $out;
}

=pod

=item WaTest::psql_fails($node, $sql, $sqlstate, $name, %opts)

A test that $sql fails with SQLSTATE $sqlstate (undef: any error).
Returns the error text, so that callers can check the message too.

=cut

sub psql_fails
{
	my ($node, $sql, $sqlstate, $name, %opts) = @_;
	my ($rc, $out, $err, $state) = run_psql($node, $sql, %opts);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	if ($rc == 0)
	{
		fail($name);
		diag("expected an error" . (defined $sqlstate ? " $sqlstate" : '')
			  . ", but it succeeded; output:\n$out");
	}
	elsif (defined $sqlstate)
	{
		is($state, $sqlstate, $name) or diag("error was:\n$err");
	}
	else
	{
		pass($name);
	}
	return $err;
}

=pod

=item WaTest::wait_for($node, $sql, $expected, $timeout_s, %opts)

Polls $sql (every 100 ms) until its output equals $expected, or, when
$expected is a Regexp, matches it.  Errors count as "not yet".  Returns
true on success; on timeout (default 60 s) it prints a diagnostic with the
last output and returns false.  It is not a test itself:
C<ok(wait_for(...), 'name')>.  Options as for run_psql.

=cut

sub wait_for
{
	my ($node, $sql, $expected, $timeout_s, %opts) = @_;
	$timeout_s //= 60;
	my $deadline = time() + $timeout_s;
	my ($rc, $out, $err);
	while (1)
	{
		($rc, $out, $err) = run_psql($node, $sql, %opts);
		if ($rc == 0)
		{
			return 1
			  if ref $expected eq 'Regexp'
			  ? $out =~ $expected
			  : $out eq $expected;
		}
		last if time() >= $deadline;
		usleep(100_000);
	}
	diag("wait_for timed out after ${timeout_s}s\n  query: $sql\n"
		  . "  expected: $expected\n  last output: $out\n"
		  . ($rc ? "  last error: $err\n" : ''));
	return 0;
}

=pod

=item WaTest::wait_until($code, $timeout_s, $what)

Polls $code (every 100 ms) until it returns true; returns that value, or
false after $timeout_s (default 60) with a diagnostic naming $what.

=cut

sub wait_until
{
	my ($code, $timeout_s, $what) = @_;
	$timeout_s //= 60;
	my $deadline = time() + $timeout_s;
	while (1)
	{
		my $v = $code->();
		return $v if $v;
		last if time() >= $deadline;
		usleep(100_000);
	}
	diag("timed out after ${timeout_s}s waiting for " . ($what // 'a condition'));
	return 0;
}

=pod

=item WaTest::worker_pid($node, $dbname)

The pid of the whatsapp worker serving $dbname (default 'postgres'), from
pg_stat_activity, or '' when none runs.

=cut

sub worker_pid
{
	my ($node, $dbname) = @_;
	$dbname //= 'postgres';
	my ($rc, $out) = run_psql($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'whatsapp worker%' "
		  . "AND datname = '$dbname' ORDER BY backend_start DESC LIMIT 1");
	return $rc == 0 ? $out : '';
}

=pod

=item WaTest::tcp_sockets($pid, $port)

The TCP sockets that process $pid holds to port $port on loopback, from
F</proc/$pid/fd> and F</proc/$pid/net/tcp{,6}>: an array ref of their
states as names (C<ESTABLISHED>, C<CLOSE_WAIT>, ...), or undef when the
process cannot be inspected.

=cut

my %tcp_state = (
	'01' => 'ESTABLISHED', '02' => 'SYN_SENT', '03' => 'SYN_RECV',
	'04' => 'FIN_WAIT1', '05' => 'FIN_WAIT2', '06' => 'TIME_WAIT',
	'07' => 'CLOSE', '08' => 'CLOSE_WAIT', '09' => 'LAST_ACK',
	'0A' => 'LISTEN', '0B' => 'CLOSING');

sub tcp_sockets
{
	my ($pid, $port) = @_;
	my %mine;
	opendir(my $dh, "/proc/$pid/fd") or return undef;
	for my $fd (readdir $dh)
	{
		my $link = readlink("/proc/$pid/fd/$fd") // next;
		$mine{$1} = 1 if $link =~ /^socket:\[(\d+)\]$/;
	}
	closedir $dh;
	my @states;
	for my $table ("/proc/$pid/net/tcp", "/proc/$pid/net/tcp6")
	{
		open(my $fh, '<', $table) or next;
		<$fh>;    # header
		while (my $line = <$fh>)
		{
			my @f = split ' ', $line;
			next unless @f > 9 && $mine{ $f[9] };
			my ($rport) = $f[2] =~ /:([0-9A-F]{4})$/;
			next unless defined $rport && hex($rport) == $port;
			push @states, $tcp_state{ $f[3] } // $f[3];
		}
		close $fh;
	}
	return \@states;
}

=pod

=back

=head1 WaTest::Mock

=over

=item $mock->port, $mock->url, $mock->pid, $mock->dir

=item $mock->tls_url

The HTTPS URL of a mock started with C<tls_cert> and C<tls_key>.

=item $mock->requests($since, %filter)

Records with C<seq> greater than $since (default 0), oldest first, as an
array ref.  Filters: C<callback>, C<to>, C<limit>.

=item $mock->counts(%filter)

The C</_mock/counts> object (hash ref); C<callback =E<gt> ID> for one id.

=item $mock->last_seq

The highest record sequence number so far: pass it to C<requests> later to
see only what came after.

=item $mock->reset

Clears records, counters and rules; returns the last sequence number.

=item $mock->add_rule(\%rule) or add_rule([\%rule, ...])

Appends rules; returns the array ref of their ids.

=item $mock->clear_rules, $mock->rules, $mock->release

=item $mock->connections

How many TCP connections the mock has open (not counting the one asking).

=item $mock->close_connections

Closes every connection the mock has open (as a server does with idle
keep-alive connections); returns how many.

=item $mock->latency($ms)

Sets the default latency (without $ms: returns it).

=item $mock->wait_requests($n, $timeout_s, %filter)

Waits until at least $n records match %filter (as for requests, plus
C<since>); returns them, or undef on timeout.

=item $mock->log

The mock's own log text.

=item $mock->stop

Stops it (also done on destruction and at the end of the test).

=back

=cut

package WaTest::Mock;

use strict;
use warnings;

use Carp;
use JSON::PP;
use Time::HiRes qw(usleep);

# dir => pid of every mock this process started and has not stopped yet.
my %running;
my $json = JSON::PP->new->utf8->canonical;

sub _mock_home
{
	return $ENV{WA_MOCK_DIR} || "$WaTest::REPO/test/mock";
}

sub _start
{
	my ($class, %opts) = @_;
	my $home = _mock_home();
	my $start = "$home/start.sh";
	croak "no mock at $start" unless -f $start;

	$mock_count++;
	my $name = $opts{name} // "mock$mock_count";
	$name =~ s/[^A-Za-z0-9_.-]/_/g;
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/${name}_$$";
	File::Path::rmtree($dir) if -d $dir;
	File::Path::make_path($dir);

	my @args;
	push @args, '--latency', $opts{latency} if defined $opts{latency};
	push @args, '--no-record' if defined $opts{record} && !$opts{record};
	push @args, '--strict' if $opts{strict};
	push @args, '--max-records', $opts{max_records} if defined $opts{max_records};
	push @args, '--tls-cert', $opts{tls_cert}, '--tls-key', $opts{tls_key}
	  if defined $opts{tls_cert};
	push @args, @{ $opts{args} } if $opts{args};
	# Every number and text the API is given, for the scan of the server
	# logs after the suite (test/log_scan.pl): kept in the log directory,
	# which outlives the test.
	my $test = $0;
	$test =~ s{.*/}{};
	$test =~ s/\.pl$//;
	push @args, '--received',
	  "$PostgreSQL::Test::Utils::log_path/mock_received_${test}_${name}_$$.jsonl";

	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'bash', $start, $dir, @args ],
		'<', \undef, '>', \$out, '2>', \$err);
	chomp $out;
	croak "mock did not start: $err" unless $ok && $out =~ /^(\d+)$/m;
	my $port = $1;
	my $pid = PostgreSQL::Test::Utils::slurp_file("$dir/mock.pid");
	$pid =~ s/\D//g;

	my $self = bless {
		dir => $dir,
		home => $home,
		port => $port,
		pid => $pid,
		owner => $$,
		http => HTTP::Tiny->new(
			timeout => 30,
			proxy => undef,
			http_proxy => undef,
			https_proxy => undef,
			keep_alive => 0),
	}, $class;
	$running{$dir} = $pid;
	Test::More::note("mock $name listening on port $port (pid $pid)");
	return $self;
}

sub port { return $_[0]{port}; }
sub pid { return $_[0]{pid}; }
sub dir { return $_[0]{dir}; }
sub url { return "http://127.0.0.1:$_[0]{port}"; }

sub tls_url
{
	my ($self) = @_;
	my $p = $self->config->{tls_port};
	croak "mock on port $self->{port} has no TLS port" unless $p;
	return "https://127.0.0.1:$p";
}

sub log
{
	my ($self) = @_;
	my $f = "$self->{dir}/mock.log";
	return -f $f ? PostgreSQL::Test::Utils::slurp_file($f) : '';
}

# One control-API call; croaks unless the answer is 2xx JSON.
sub _call
{
	my ($self, $method, $path, $body) = @_;
	croak "mock on port $self->{port} is stopped" if $self->{stopped};
	my %o;
	if (defined $body)
	{
		$o{content} = $json->encode($body);
		$o{headers} = { 'Content-Type' => 'application/json' };
	}
	my $r = $self->{http}->request($method, $self->url . $path, \%o);
	croak "mock $method $path: $r->{status} $r->{reason}: " . ($r->{content} // '')
	  unless $r->{success};
	return $json->decode($r->{content});
}

sub _query
{
	my (%q) = @_;
	my @p;
	for my $k (sort keys %q)
	{
		next unless defined $q{$k};
		my $v = $q{$k};
		$v =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord($1))/ge;
		push @p, "$k=$v";
	}
	return @p ? '?' . join('&', @p) : '';
}

sub requests
{
	my ($self, $since, %filter) = @_;
	return $self->_call('GET',
		'/_mock/requests' . _query(since => $since // 0, %filter));
}

sub counts
{
	my ($self, %filter) = @_;
	return $self->_call('GET', '/_mock/counts' . _query(%filter));
}

sub last_seq { return $_[0]->counts->{last_seq}; }

sub reset
{
	my ($self) = @_;
	return $self->_call('POST', '/_mock/reset', {})->{last_seq};
}

sub add_rule
{
	my ($self, $rule) = @_;
	return $self->_call('POST', '/_mock/rules', $rule)->{ids};
}

sub rules { return $_[0]->_call('GET', '/_mock/rules'); }
sub connections { return $_[0]->_call('GET', '/_mock/connections')->{open}; }
sub close_connections { return $_[0]->_call('POST', '/_mock/close_connections', {})->{closed}; }
sub clear_rules { $_[0]->_call('DELETE', '/_mock/rules'); return; }
sub release { return $_[0]->_call('POST', '/_mock/release', {}); }
sub config { return $_[0]->_call('GET', '/_mock/config'); }
sub cpu { return $_[0]->_call('GET', '/_mock/cpu'); }

sub latency
{
	my ($self, $ms) = @_;
	return $self->_call('GET', '/_mock/latency')->{ms} unless defined $ms;
	return $self->_call('POST', '/_mock/latency', { ms => $ms + 0 })->{ms};
}

sub wait_requests
{
	my ($self, $n, $timeout_s, %filter) = @_;
	my $since = delete $filter{since};
	my $found;
	my $ok = WaTest::wait_until(
		sub {
			$found = $self->requests($since, %filter);
			return @$found >= $n;
		},
		$timeout_s // 60,
		"$n request(s) at the mock");
	return $ok ? $found : undef;
}

# Is $pid still our mock process?
sub _alive
{
	my ($pid) = @_;
	return 0 unless $pid && kill(0, $pid);
	open my $fh, '<', "/proc/$pid/cmdline" or return 1;
	local $/;
	my $cmd = <$fh> // '';
	close $fh;
	return $cmd =~ /mock_cloud_api\.js/ ? 1 : 0;
}

sub _stop_dir
{
	my ($home, $dir, $pid) = @_;
	system('bash', "$home/stop.sh", $dir) if -f "$home/stop.sh";
	if (_alive($pid))
	{
		kill 'KILL', $pid;
	}
	delete $running{$dir};
	return;
}

sub stop
{
	my ($self) = @_;
	return if $self->{stopped} || $self->{owner} != $$;
	_stop_dir($self->{home}, $self->{dir}, $self->{pid});
	$self->{stopped} = 1;
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $!, $@);
	$self->stop;
	return;
}

# Whatever else happened, no mock outlives the test script.  A forked child
# (which never started a mock) leaves them alone.
my $owner_pid = $$;
END
{
	local ($?, $!, $@);
	if ($$ == $owner_pid)
	{
		for my $dir (keys %running)
		{
			_stop_dir(_mock_home(), $dir, $running{$dir});
		}
	}
}

1;
