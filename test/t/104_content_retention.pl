# 104_content_retention.pl: whatsapp.content_retention (issue 13, item 1).
#
#   1. A distinctive text, a template parameter and a phone number go through
#      a full cycle: wa_send and wa_send_template through the worker and the
#      mock, Meta's "delivered" status and an inbound reply with the
#      sender's name, both by signed webhook.  While young, they are where
#      one expects them, and a purge turn leaves them.
#   2. Time is advanced by back-dating: as superuser, every timestamptz
#      column of every table in schema whatsapp (but account) is moved 91
#      days into the past; the server clock is not touched.  A reload makes
#      the worker run its purge turn at once.  Then EVERY column of EVERY
#      table in the schema (from the catalog, so tables added later are
#      covered too) is scanned for the texts, the name and the number in
#      any form (+1..., 1..., national, with any separators).  None is
#      left; ids, states, times, wamids and pricing are.
#   3. Bounded batches: 1,200 old messages are purged in several
#      transactions of at most 500 rows each (told by their xmin), through
#      the partial index on created_at, without a sequential scan.
#   4. Never blocking: a message another session holds locked is skipped,
#      the rest are purged meanwhile, and a new message is sent meanwhile;
#      once the lock is gone, the next turn purges it.  Queued and in-flight
#      messages are never purged, and a purged message cannot be retried.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WaTest;
use WaMeta;

my $secret = 'tap-app-secret-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('retention', mock => $mock,
	'whatsapp.poll_interval' => '60s');

# What must not outlive the retention.
my $number = '+14125550173';		# NANP, a 555-01xx number: fictional
my $number_digits = '4125550173';	# in every form: +1..., 1..., wa_id, national
my $wa_id = '14125550173';
my $body = 'Zebulon Quartermaine, your parcel PX-88213 is ready';
my $param = 'Quartermaine-Voucher-7731';
my $reply = 'Thanks, Quillon here: PX-88213 received';
my $name = 'Quillon Featherstonehaugh';
my $needles = 'Quartermaine|PX-88213|Featherstonehaugh|Quillon|Zebulon|Voucher-7731';

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '$WaMeta::PNID', 'EAAretentiontoken',
		app_secret => '$secret', waba_id => '$WaMeta::WABA', max_mps => 1000);
	INSERT INTO whatsapp.templates (account, name, language, category)
		VALUES (NULL, 'parcel_ready', 'en_US', 'UTILITY');
}, 'extension, account with an app secret, a template');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

# Every column of every table in schema whatsapp where the texts or the
# number are found, as "table.column"; '' for none.
sub scan
{
	my ($rc, $cols) = WaTest::run_psql($node, q{
		SELECT string_agg(format('%I|%I|%s', c.relname, a.attname,
								 a.atttypid = 'bytea'::regtype), E'\n' ORDER BY c.relname, a.attnum)
		  FROM pg_class c
		  JOIN pg_namespace n ON n.oid = c.relnamespace
		  JOIN pg_attribute a ON a.attrelid = c.oid
		 WHERE n.nspname = 'whatsapp' AND c.relkind IN ('r', 'p')
		   AND a.attnum > 0 AND NOT a.attisdropped});
	die "catalog query failed" if $rc;
	my %cols;
	for my $line (split /\n/, $cols)
	{
		my ($t, $c, $bytea) = split /\|/, $line;
		push @{ $cols{$t} }, [ $c, $bytea eq 'true' ];
	}
	my @found;
	for my $t (sort keys %cols)
	{
		my @checks;
		for my $col (@{ $cols{$t} })
		{
			my ($c, $bytea) = @$col;
			my $v = $bytea ? "encode($c, 'escape')" : "${c}::text";
			push @checks,
			  "CASE WHEN bool_or($v ~* '$needles' OR "
			  . "regexp_replace($v, '[^0-9]', '', 'g') LIKE '%$number_digits%') "
			  . "THEN '$t.$c' END";
		}
		my ($rc2, $out, $err) = WaTest::run_psql($node,
			"SELECT concat_ws(' ', " . join(', ', @checks) . ") FROM whatsapp.$t");
		die "scan of $t failed: $err" if $rc2;
		push @found, $out if $out ne '';
	}
	return join(' ', @found);
}

# Run one purge turn now: a reload makes the worker purge at once.  The
# turn is seen done when the worker is idle again after the reload.
sub purge_now
{
	WaTest::psql_ok($node, 'SELECT pg_reload_conf()', 'reload: the worker purges now');
	usleep(1_500_000);
}

# --- 1. A full cycle --------------------------------------------------------
my ($text_id, $tpl_id);
{
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_send('+1 (412) 555-0173', '$body')");
	die $err if $rc;
	$text_id = $out;
	($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_send_template('$number', 'parcel_ready', 'en-US', '[\"$param\"]')");
	die $err if $rc;
	$tpl_id = $out;
}
ok(WaTest::wait_for($node,
		"SELECT string_agg(state, ',' ORDER BY id) FROM whatsapp.messages WHERE id IN ($text_id, $tpl_id)",
		'sent,sent', 30),
	'both messages are sent through the mock');
my $reqs = $mock->requests;
ok((grep { ($_->{body} // '') =~ /\QPX-88213\E/ } @$reqs), 'the mock received the body');

my ($rc, $wamid) = WaTest::run_psql($node, "SELECT wamid FROM whatsapp.messages WHERE id = $text_id");
is(WaMeta::receive($node, WaMeta::status_payload($wamid, 'delivered', time() - 5, $wa_id, $text_id),
		$secret), '1', 'signed webhook: delivered');
is(WaMeta::receive($node, WaMeta::text_payload($wa_id, 'wamid.HBgLMTQxMjU1NTAxNzMVAgASGBQz', $reply,
			$name), $secret), '1', 'signed webhook: an inbound reply with the sender\'s name');
WaTest::psql_is($node, "SELECT state, pricing IS NOT NULL FROM whatsapp.messages WHERE id = $text_id",
	'delivered|t', 'the message is delivered, with pricing');
WaTest::psql_is($node, "SELECT phone, name, text FROM whatsapp.inbound",
	"$number|$name|$reply", 'the reply is stored with its number and name');

purge_now();
my $young = scan();
like($young, qr/\bmessage\.payload\b/, 'young: the body is in message.payload');
like($young, qr/\bmessage\.recipient\b/, 'young: the number is in message.recipient');
like($young, qr/\binbound_message\.profile_name\b/, 'young: the name is in inbound_message');
like($young, qr/\binbound_message\.body\b/, 'young: the reply is in inbound_message.body');
like($young, qr/\bwebhook\.payload\b/, 'young: the payloads are in webhook.payload');
note("young content found in: $young");

# --- 2. Advance time, purge, scan -----------------------------------------
WaTest::psql_ok($node, q{
	DO $$
	DECLARE r record;
	BEGIN
		FOR r IN SELECT c.oid::regclass AS t, a.attname
				   FROM pg_class c
				   JOIN pg_namespace n ON n.oid = c.relnamespace
				   JOIN pg_attribute a ON a.attrelid = c.oid
				  WHERE n.nspname = 'whatsapp' AND c.relkind = 'r'
					AND c.relname <> 'account'
					AND c.relname <> 'audit'	-- append-only; holds no content
					AND a.atttypid = 'timestamptz'::regtype
					AND a.attnum > 0 AND NOT a.attisdropped
		LOOP
			EXECUTE format('UPDATE %s SET %I = %I - interval ''91 days''',
						   r.t, r.attname, r.attname);
		END LOOP;
	END $$;
}, 'back-dated every timestamptz column outside the audit by 91 days (the default retention is 90)');
purge_now();
ok(WaTest::wait_for($node,
		"SELECT count(*) FROM whatsapp.message WHERE payload IS NOT NULL", '0', 30),
	'the worker purged the old messages');
my $old = scan();
is($old, '', 'after the retention: no text, name or number left in any column of any table');

WaTest::psql_is($node, qq{
	SELECT id = $text_id, state, wamid = '$wamid', sent_at IS NOT NULL, delivered_at IS NOT NULL,
		   pricing ->> 'category', kind, recipient IS NULL, payload IS NULL
	  FROM whatsapp.messages WHERE id = $text_id},
	't|delivered|t|t|t|utility|text|t|t',
	'the message keeps its id, state, wamid, times, kind and pricing');
WaTest::psql_is($node, qq{
	SELECT account, wamid, type, sent_at IS NOT NULL, phone IS NULL, name IS NULL, text IS NULL
	  FROM whatsapp.inbound},
	'main|wamid.HBgLMTQxMjU1NTAxNzMVAgASGBQz|text|t|t|t|t',
	'the inbound message keeps its account, wamid, type and time');
WaTest::psql_is($node, "SELECT count(*), count(*) FILTER (WHERE payload IS NULL) FROM whatsapp.webhook",
	'2|2', 'the stored payloads are NULL, their rows stay until log_retention deletes them');

# --- 3. Bounded batches, through the index --------------------------------
WaTest::psql_ok($node, qq{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state, created_at, sent_at)
	SELECT a.id, '+1213555' || lpad(g::text, 4, '0'), 'text',
		   jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'old ' || g)),
		   'sent', now() - interval '100 days', now() - interval '100 days'
	  FROM whatsapp.account a, generate_series(1, 1200) g WHERE a.name = 'main';
}, '1,200 sent messages 100 days old');
# Only the purge uses message_retention_idx (its predicate names phase: no queued or sending message).
my $idx_scans = q{SELECT idx_scan FROM pg_stat_user_indexes
	 WHERE indexrelid = 'whatsapp.message_retention_idx'::regclass};
my ($rc2, $scans0) = WaTest::run_psql($node, $idx_scans);
purge_now();
ok(WaTest::wait_for($node,
		"SELECT count(*) FROM whatsapp.message WHERE payload IS NOT NULL AND created_at < now() - interval '90 days'",
		'0', 30),
	'all 1,200 are purged, turn after turn');
WaTest::psql_like($node, q{
	SELECT count(*) || '|' || max(n) FROM (
		SELECT xmin, count(*) AS n FROM whatsapp.message
		 WHERE payload IS NULL AND kind = 'text' AND created_at > now() - interval '101 days'
		   AND created_at < now() - interval '99 days'
		 GROUP BY xmin) t},
	qr/^([3-9]|\d\d+)\|(\d+)$/, 'in at least three transactions');
{
	my ($rc3, $max) = WaTest::run_psql($node, q{
		SELECT max(n) FROM (SELECT xmin, count(*) AS n FROM whatsapp.message
		 WHERE payload IS NULL AND created_at > now() - interval '101 days'
		   AND created_at < now() - interval '99 days' GROUP BY xmin) t});
	cmp_ok($max, '<=', 500, 'of at most 500 rows each');
}
# The worker flushes its statistics at most once a second: two more turns.
purge_now();
purge_now();
ok(WaTest::wait_until(sub {
		my ($r, $s) = WaTest::run_psql($node, $idx_scans);
		return $s >= $scans0 + 3;
	}, 20, 'the purge\'s index scans in the statistics'),
	'the purge found its rows through message_retention_idx');

# --- 4. Never blocking ----------------------------------------------------
{
	WaTest::psql_ok($node, q{
		INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state, created_at)
		SELECT a.id, '+14125559' || s.n, 'text', '{"type": "text", "text": {"body": "old"}}',
			   s.state, now() - interval '100 days'
		  FROM whatsapp.account a,
			   (VALUES (101, 'delivered'), (102, 'failed'), (103, 'sending')) s(n, state)
		 WHERE a.name = 'main';
	}, 'three old messages: delivered, failed, in flight (sending)');
	my ($r0, $failed_id) = WaTest::run_psql($node,
		"SELECT id FROM whatsapp.message WHERE recipient = '+14125559102'");
	my $bg = $node->background_psql('postgres');
	$bg->query_safe(q{BEGIN; SELECT id FROM whatsapp.message WHERE recipient = '+14125559101' FOR UPDATE;});
	purge_now();
	WaTest::psql_is($node, q{
		SELECT string_agg(recipient || ':' || (payload IS NULL), ',' ORDER BY recipient)
		  FROM whatsapp.message WHERE recipient LIKE '+14125559%'},
		'+14125559101:false,+14125559103:false',
		'while another session holds one locked: it is skipped, the in-flight one is kept, the failed one is purged');
	my ($rc4, $new) = WaTest::run_psql($node, "SELECT whatsapp.wa_send('+14125550199', 'sent while a row is locked')");
	ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $new", 'sent', 30),
		'and a new message is sent meanwhile');
	WaTest::psql_is($node, "SELECT whatsapp.wa_retry($failed_id)", 'f',
		'a purged failed message cannot be retried (wa_retry returns false)');
	WaTest::psql_fails($node, "UPDATE whatsapp.message SET state = 'queued' WHERE id = $failed_id",
		'23514', 'nor queued again by hand: message_payload_check');
	$bg->query_safe('COMMIT');
	$bg->quit;
	purge_now();
	ok(WaTest::wait_for($node,
			"SELECT count(*) FROM whatsapp.message WHERE recipient = '+14125559101'", '0', 30),
		'once the lock is gone, the next turn purges it');
	WaTest::psql_is($node, "SELECT payload IS NOT NULL FROM whatsapp.message WHERE recipient = '+14125559103'",
		't', 'a message in flight is never purged, however old');
}

done_testing();
