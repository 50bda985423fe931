# The worker's claim and record plans do not depend on the outbox's
# statistics (issue 11): whatever the statistics say, every scan of
# whatsapp.message in them has an index condition, so none reads a whole
# index or the whole table.  auto_explain logs the plan of every statement
# the worker runs; the test reads them back from the server log.
#
# Two states that used to give bad plans:
#   1. an outbox analyzed while empty, then a burst;
#   2. an outbox of delivered messages, analyzed (nothing queued or sending
#      in its statistics), then a burst.
# In both, the record step used to scan all of message_pair_idx (every
# queued and sending message) once per answer of the batch.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $mock = WaTest::mock_start();
my $node = WaTest::node('steady_plans', mock => $mock,
	'shared_preload_libraries' => 'whatsapp,auto_explain',
	'auto_explain.log_min_duration' => '0',
	'auto_explain.log_nested_statements' => 'on',
	'whatsapp.poll_interval' => '60s',
	'whatsapp.batch_size' => '200');

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAsteadyplans0000token', max_mps => 100000);
}, 'extension and account');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

# The worker's plans in the server log since byte $from: a list of
# [query text, plan text].
sub worker_plans
{
	my ($from) = @_;
	my $pid = WaTest::worker_pid($node);
	my $log = slurp_file($node->logfile);
	my @plans;
	my $cur;
	for my $line (split /\n/, substr($log, $from))
	{
		if ($line =~ /^\d{4}-\d\d-\d\d [\d:.]+ \w+ \[(\d+)\]/)
		{
			push @plans, $cur if $cur;
			$cur = undef;
			$cur = [ '', '' ] if $1 eq $pid && $line =~ /LOG:  (?:[0-9A-Z]{5}:\s+)?duration: [\d.]+ ms  plan:/;
		}
		elsif ($cur)
		{
			if ($line =~ /^\tQuery Text: (.*)/) { $cur->[0] = $1; }
			else { $cur->[1] .= "$line\n"; }
		}
	}
	push @plans, $cur if $cur;
	return @plans;
}

# Scans of whatsapp.message without an index condition in a plan.
sub whole_scans
{
	my ($plan) = @_;
	my @lines = split /\n/, $plan;
	my @bad;
	for my $i (0 .. $#lines)
	{
		next unless $lines[$i] =~ /^(\s*)(?:->\s+)?((?:Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)(?: Backward)?(?: using \S+)? on message \w+)/;
		my ($indent, $what) = (length($1), $2);
		my $cond = 0;
		for my $j ($i + 1 .. $#lines)
		{
			my ($ind) = $lines[$j] =~ /^(\s*)/;
			last if length($ind) <= $indent || $lines[$j] =~ /->/;
			$cond = 1 if $lines[$j] =~ /Index Cond:|Recheck Cond:/;
		}
		push @bad, $what unless $cond;
	}
	return @bad;
}

sub burst_and_check
{
	my ($label, $n) = @_;
	my $from = -s $node->logfile;
	WaTest::psql_ok($node, qq{
		SELECT count(whatsapp.wa_send('+1202555' || lpad(g::text, 4, '0'), 'Steady plans ' || g))
		  FROM generate_series(1, $n) g;
	}, "$label: $n messages queued in one transaction");
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.message WHERE state IN ('queued', 'sending')",
			'0', 120),
		"$label: all delivered");
	my @plans = worker_plans($from);
	my @claim = grep { $_->[0] =~ /SET state = 'sending'/ } @plans;
	my @record = grep { $_->[0] =~ /state = r\.new_state/ } @plans;
	ok(@claim > 0, "$label: the claim's plans are in the log (" . scalar(@claim) . ')');
	ok(@record > 1, "$label: the record's plans are in the log (" . scalar(@record) . ')');
	my %bad;
	for my $p (@claim, @record)
	{
		$bad{$_}++ for whole_scans($p->[1]);
	}
	is(join(', ', map { "$_ ($bad{$_} times)" } sort keys %bad), '',
		"$label: no claim or record plan scans whatsapp.message without an index condition");
	diag("a record plan:\n$record[-1][1]") if %bad && @record;
}

# 1. Analyzed while empty: the statistics say the outbox has no rows.
WaTest::psql_ok($node, 'VACUUM ANALYZE whatsapp.message', 'analyzed empty');
burst_and_check('analyzed empty', 1000);

# 2. 20,000 delivered messages, analyzed: nothing queued or sending in the
#    statistics.
WaTest::psql_ok($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, wa_id, kind, payload, state,
	        attempts, http_status, wamid, created_at, claimed_at, sent_at, delivered_at)
	SELECT a.id, '+1303555' || lpad((g % 5000)::text, 4, '0'), '1303555' || lpad((g % 5000)::text, 4, '0'),
	       'text', '{"type": "text", "text": {"body": "Your order has shipped."}}', 'delivered', 1, 200,
	       'wamid.HBgLMTMwMzU1NTAwMDAVAgARGBI' || g, now() - interval '1 day', now() - interval '1 day',
	       now() - interval '1 day', now() - interval '1 day'
	  FROM whatsapp.account a, generate_series(1, 20000) g WHERE a.name = 'main';
	VACUUM ANALYZE whatsapp.message;
}, 'history of delivered messages, analyzed');
burst_and_check('history analyzed', 2000);

done_testing();
