#!/usr/bin/perl
# bench/latency.pl: the client side of bench/latency.sh.
#
#   perl bench/latency.pl SOCKET_DIR PORT DBNAME MOCK_URL COUNT GAP_MS
#
# COUNT times, GAP_MS apart (on a fixed schedule): BEGIN; SELECT
# whatsapp.wa_send(...); COMMIT; and the wall-clock time right after COMMIT
# returns (Time::HiRes, CLOCK_REALTIME).  Then it waits until the mock has
# seen every message and matches the mock's arrival time `t` of each request
# (epoch ms, performance.timeOrigin + performance.now()) to the message id
# in biz_opaque_callback_data.  Latency = t(mock) - t(after COMMIT).
#
# Both times come from the same machine's clock, but the mock's `t` is a
# monotonic offset from the clock reading Node took at start.  Calibration
# requests before and after the run bound the difference between the two
# clocks: the script posts to the mock itself and checks that the mock's `t`
# lies between its own times before and after the request.
#
# Prints the latencies' min, median, p90, p99, max (ms) and a SUMMARY line.
use strict;
use warnings;
use DBI;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);

my ($sockdir, $port, $dbname, $mock, $count, $gap_ms) = @ARGV;
die "usage: $0 SOCKET_DIR PORT DBNAME MOCK_URL COUNT GAP_MS\n" unless defined $gap_ms;

my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0, proxy => undef,
						   http_proxy => undef, https_proxy => undef);
my $json = JSON::PP->new;

sub http_json
{
	my ($method, $url, $body) = @_;
	my $r = $http->request($method, $url,
		defined $body ? { content => $body, headers => { 'Content-Type' => 'application/json' } } : {});
	die "$method $url: $r->{status} $r->{reason}\n" unless $r->{success};
	return $json->decode($r->{content});
}

# One calibration request: [client time before, mock t, client time after].
sub calibrate
{
	my ($tag) = @_;
	my $body = encode_json({ messaging_product => 'whatsapp', to => '+4915000000000',
							 type => 'text', text => { body => 'calibration' },
							 biz_opaque_callback_data => $tag });
	my $before = time() * 1000;
	my $r = $http->request('POST', "$mock/v24.0/1000000001/messages",
		{ content => $body, headers => { 'Content-Type' => 'application/json' } });
	my $after = time() * 1000;
	die "calibration request failed: $r->{status}\n" unless $r->{success};
	my $rec = http_json('GET', "$mock/_mock/requests?callback=$tag");
	die "calibration request not recorded\n" unless @$rec == 1;
	return [$before, $rec->[0]{t}, $after];
}

my $dbh = DBI->connect("dbi:Pg:dbname=$dbname;host=$sockdir;port=$port", '', '',
					   { AutoCommit => 1, RaiseError => 1, PrintError => 0 });
my $sth = $dbh->prepare('SELECT whatsapp.wa_send(?, ?)');

http_json('POST', "$mock/_mock/reset", '{}');
my @cal;
push @cal, calibrate("calib-$_") for 1 .. 5;

my %committed;		# message id => client time after COMMIT (epoch ms)
my $start = time();
for my $i (1 .. $count)
{
	my $due = $start + ($i - 1) * $gap_ms / 1000;
	my $wait = $due - time();
	sleep($wait) if $wait > 0;
	$dbh->begin_work;
	$sth->execute(sprintf('+4916%09d', $i), "Latency probe $i");
	my ($id) = $sth->fetchrow_array;
	$dbh->commit;
	$committed{$id} = time() * 1000;
}
my $elapsed = time() - $start;

# Wait for the last requests to arrive.
my $deadline = time() + 60;
my $seen = 0;
while (time() < $deadline)
{
	$seen = http_json('GET', "$mock/_mock/counts")->{messages};
	last if $seen >= $count + @cal;
	sleep(0.1);
}
push @cal, calibrate("calib-end-$_") for 1 .. 5;

my $reqs = http_json('GET', "$mock/_mock/requests");
my @lat;
my %arrived;
for my $r (@$reqs)
{
	my $cb = $r->{callback};
	next unless defined $cb && exists $committed{$cb};
	die "message $cb arrived twice\n" if exists $arrived{$cb};
	$arrived{$cb} = 1;
	push @lat, $r->{t} - $committed{$cb};
}
die sprintf("only %d of %d messages reached the mock\n", scalar @lat, $count)
	unless @lat == $count;

# Clock check: the mock's t must lie within [before, after] of each calibration.
my ($lo, $hi) = (-1e9, 1e9);
for my $c (@cal)
{
	my ($b, $t, $a) = @$c;
	# offset = mock clock - client clock lies in [t - a, t - b]
	$lo = $t - $a if $t - $a > $lo;
	$hi = $t - $b if $t - $b < $hi;
}

@lat = sort { $a <=> $b } @lat;
sub pct
{
	my ($p) = @_;
	my $k = int($p / 100 * @lat + 0.999999) - 1;
	$k = 0 if $k < 0;
	return $lat[$k];
}
my $median = @lat % 2 ? $lat[$#lat / 2] : ($lat[@lat / 2 - 1] + $lat[@lat / 2]) / 2;

printf "  %d commits in %.1f s; all %d reached the mock once\n", $count, $elapsed, scalar @lat;
printf "  clock check: mock clock - client clock within [%.3f, %.3f] ms (5 requests before, 5 after)\n",
	$lo, $hi;
printf "  latency COMMIT -> mock, ms: min %.2f  median %.2f  p90 %.2f  p99 %.2f  max %.2f\n",
	$lat[0], $median, pct(90), pct(99), $lat[-1];
printf "RESULT\t%.2f\t%.2f\t%.2f\t%.2f\n", $median, pct(90), pct(99), $lat[-1];
