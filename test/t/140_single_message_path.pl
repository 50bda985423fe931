# The worker's single-message path (issue 11's idle latency and enqueue
# targets): when messages arrive one per transaction, each claim finds the
# queue empty after the one it takes.  The claim then used to ask the
# outbox for the earliest future due time (the next-due query) every time.
# The worker now keeps the value it read until something can have queued a
# message for later: its own record requeueing a retry, an Odoo PDF wait,
# a NOTIFY whatsapp, a poll, or the time it named passing.
#
# auto_explain logs every statement the worker runs (as in test 110); the
# test counts the claim statements and the next-due query's executions in
# the server log.  After an answer the account is claimable again only when
# the recipient had more queued at the claim, a claim ran since, or the
# message is queued again; before, every answer made it claimable, and each
# single message cost a second, empty claim transaction.
#   1. single-message transactions, spaced so that each is claimed alone:
#      delivered, with no next-due query;
#   2. a 5xx answer: the retry is queued for later, the next claim reads
#      the due time again, and the worker wakes for the retry by itself
#      (poll_interval is 60 s);
#   3. a message queued for later by SQL outside the extension's functions,
#      followed by NOTIFY whatsapp: the worker reads the due time and sends
#      it when it falls due, not at the next poll;
#   4. a message blocked at its claim (an opt-out since enqueue): the
#      recipient's next message is claimed at once, not at the next poll.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WaTest;

my $mock = WaTest::mock_start();
my $node = WaTest::node('single_path', mock => $mock,
	'shared_preload_libraries' => 'whatsapp,auto_explain',
	'auto_explain.log_min_duration' => '0',
	'auto_explain.log_nested_statements' => 'on',
	'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1099887766', 'EAAsinglepath00000token', max_mps => 80);
}, 'extension and account');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

sub send_text
{
	my ($to, $body) = @_;
	my ($rc, $out, $err) = WaTest::run_psql($node, "SELECT whatsapp.wa_send('$to', '$body')");
	die "wa_send failed: $err" if $rc;
	chomp $out;
	return $out;
}

# Executions of the worker's next-due query logged since byte $from.
sub next_due_queries
{
	my ($from) = @_;
	my $pid = WaTest::worker_pid($node);
	my $log = substr(slurp_file($node->logfile), $from);
	my $n = 0;
	my $mine = 0;
	for my $line (split /\n/, $log)
	{
		if ($line =~ /^\d{4}-\d\d-\d\d [\d:.]+ \w+ \[(\d+)\]/)
		{
			$mine = ($1 eq $pid && $line =~ /duration: [\d.]+ ms  plan:/);
		}
		elsif ($mine && $line =~ /^\tQuery Text: SELECT pg_catalog\.min\(next_attempt_at\)/)
		{
			$n++;
		}
	}
	return $n;
}

# A first message: the worker's first claim reads the due time.
my $first = send_text('+1 202 555 0140', 'Your table for two is booked for 19:30.');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $first", 'sent', 30),
	'the first message is sent');

# --- 1. one message per transaction, each claimed alone --------------------
my $from = -s $node->logfile;
my @ids;
for my $i (1 .. 8)
{
	push @ids, send_text(sprintf('+1 202 555 %04d', 141 + $i),
		"Order S0000$i is confirmed. Thank you for shopping with us!");
	usleep(150_000);
}
ok(WaTest::wait_for($node,
		'SELECT count(*) FROM whatsapp.messages WHERE id IN (' . join(',', @ids) . ") AND state = 'sent'",
		'8', 30), 'eight single-message transactions are sent');
cmp_ok($mock->counts->{messages}, '>=', 9, 'the mock saw their requests');
my $claims = () = substr(slurp_file($node->logfile), $from) =~ /Query Text: UPDATE whatsapp\.message m\s+SET state = 'sending'/g;
cmp_ok($claims, '>=', 8, "each was claimed ($claims claim statements logged)");
# Before, every record set the account claimable again, so each message
# cost a second claim transaction that found nothing.
cmp_ok($claims, '<=', 9, 'one claim per message: no empty claim after each answer');
is(next_due_queries($from), 0, 'no next-due query for claims that found nothing queued for later');

# --- 2. a retry queued for later wakes the worker by itself ----------------
$from = -s $node->logfile;
$mock->add_rule({ match => { to => '+12025550160' }, times => 1, action => { status => 503 } });
my $t0 = time();
my $retry = send_text('+1 202 555 0160', 'Your parcel ships tomorrow.');
ok(WaTest::wait_for($node, "SELECT state || ':' || attempts FROM whatsapp.messages WHERE id = $retry",
		'sent:2', 30), 'a 503 is retried and the retry is sent');
cmp_ok(time() - $t0, '<', 20, 'the retry went out at its due time, not at the 60 s poll');
cmp_ok(next_due_queries($from), '>=', 1, 'after the retry was queued, the worker read the due time again');

# --- 3. queued for later by SQL, then NOTIFY whatsapp ----------------------
$from = -s $node->logfile;
$t0 = time();
my ($rc, $later, $err) = WaTest::run_psql($node, q{
	BEGIN;
	SELECT whatsapp.wa_send('+1 202 555 0170', 'Reminder: your appointment is tomorrow at 10:00.') AS id \gset
	UPDATE whatsapp.message SET next_attempt_at = now() + interval '3 seconds' WHERE id = :id;
	NOTIFY whatsapp;
	COMMIT;
	SELECT :id;
});
is($rc, 0, 'a message queued for 3 s later, and NOTIFY whatsapp') or diag($err);
($later) = $later =~ /(\d+)\s*$/;
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $later", 'sent', 30),
	'the message queued for later is sent');
my $took = time() - $t0;
cmp_ok($took, '>=', 2.5, sprintf('not before its due time (%.1f s)', $took));
cmp_ok($took, '<', 20, 'at its due time, not at the 60 s poll');
cmp_ok(next_due_queries($from), '>=', 1, 'the NOTIFY made the worker read the due time');

# --- 4. a message blocked at its claim: the recipient's next one goes ---
# The recipient opts out of marketing while a marketing template and a
# text wait behind a message in flight.  The claim blocks the template; the
# text behind it must be claimed next, not at the next poll: no answer
# will announce it.
WaTest::psql_ok($node,
	"INSERT INTO whatsapp.templates (name, language, category) VALUES ('spring_sale', 'en_US', 'MARKETING')",
	'a MARKETING template');
$mock->add_rule({ match => { to => '+12025550180' }, times => 1, action => { latency_ms => 3000 } });
my $head = send_text('+1 202 555 0180', 'Your order S00042 has shipped.');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $head", 'sending', 20),
	'4. the first message is in flight (answered after 3 s)');
my ($rc4, $out4, $err4) = WaTest::run_psql($node, q{
	SELECT whatsapp.wa_send_template('+1 202 555 0180', 'spring_sale', 'en_US');
	SELECT whatsapp.wa_send('+1 202 555 0180', 'Your parcel arrives tomorrow between 9:00 and 12:00.');
	SELECT whatsapp.wa_opt_out('+1 202 555 0180', 'marketing', 'replied STOP to offers');
});
is($rc4, 0, '4. a marketing template and a text queued behind it, then a marketing opt-out') or diag($err4);
my ($tpl, $txt) = $out4 =~ /^(\d+)\s+(\d+)/;
$t0 = time();
ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($head, $tpl, $txt)",
		'sent,blocked,sent', 30), '4. the template is blocked at its claim, the text behind it is sent');
cmp_ok(time() - $t0, '<', 20, '4. the text went out after the blocked template, not at the 60 s poll');

done_testing();
