# A status is a HOT update of whatsapp.message (issue 11).
#
# The partial indexes on queued and sending messages name the generated
# column phase ('q', 's' or NULL) instead of state, so a status (sent ->
# delivered -> read) changes no indexed column, and PostgreSQL updates the
# row in its page without a new entry in any index.  Checked here:
#   1. the indexes name phase, never state; phase follows state;
#   2. statuses applied by wa_receive, each in its own transaction as Meta
#      posts them, are HOT updates (pg_stat_user_tables.n_tup_hot_upd), and
#      still apply in order (never backwards);
#   3. a database at 0.2 is served by this library before ALTER EXTENSION
#      UPDATE and after it: the worker sends from both, and the update
#      computes phase for the rows already there.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $secret = 'hot-status-app-secret-not-real';
my $mock = WaTest::mock_start();
my $node = WaTest::node('status_hot', mock => $mock, database => '*',
	'whatsapp.poll_interval' => '1s');

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1077665544', 'EAAhotstatus-not-a-real-token',
								   app_secret => '$secret', waba_id => '2077665544', max_mps => 1000);
}, 'extension and an account with an app secret');

# --- 1. The indexes and phase ---------------------------------------------
WaTest::psql_is($node, q{
	SELECT string_agg(c.relname, ',' ORDER BY c.relname)
	  FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
	 WHERE x.indrelid = 'whatsapp.message'::regclass
	   AND pg_get_expr(x.indpred, x.indrelid) ~ 'phase'},
	'message_claim_idx,message_pair_idx,message_retention_idx',
	'the claim, pair and retention indexes name phase');
WaTest::psql_is($node, q{
	SELECT count(*) FROM pg_index x
	 WHERE x.indrelid = 'whatsapp.message'::regclass
	   AND (pg_get_expr(x.indpred, x.indrelid) ~ '\mstate\M'
			OR pg_get_indexdef(x.indexrelid) ~ '\(.*\mstate\M.*\)$')},
	'0', 'no index of whatsapp.message names state');
WaTest::psql_is($node, q{
	SELECT pg_get_expr(d.adbin, d.adrelid) || ' ' || a.attgenerated::text
	  FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	 WHERE a.attrelid = 'whatsapp.message'::regclass AND a.attname = 'phase'},
	'whatsapp._message_phase(state) s', 'phase is a stored column generated from state');

# Sent messages, as the worker leaves them.
my $n = 60;
WaTest::psql_ok($node, qq{
	INSERT INTO whatsapp.message (account_id, recipient, wa_id, kind, payload, state,
								  attempts, wamid, created_at, claimed_at, sent_at)
	SELECT a.id, '+5215520' || lpad(g::text, 6, '0'), '5215520' || lpad(g::text, 6, '0'), 'text',
		   '{"type": "text", "text": {"body": "Su pedido va en camino."}}', 'sent', 1,
		   'wamid.HBgNNTIxNTUyMDAwMDAwFQIAERgSQ0ZGMDAw' || lpad(g::text, 6, '0'),
		   now() - interval '5 minutes', now() - interval '5 minutes', now() - interval '5 minutes'
	  FROM whatsapp.account a, generate_series(1, $n) g WHERE a.name = 'main';
	ANALYZE whatsapp.message;
}, "$n sent messages");
WaTest::psql_is($node, q{
	SELECT string_agg(DISTINCT coalesce(phase, '-'), ',') FROM whatsapp.message},
	'-', 'a sent message has no phase');
# phase as PostgreSQL computes it for every state (rolled back).
WaTest::psql_is($node, q{
	BEGIN;
	CREATE TEMP TABLE seen (state text, phase text);
	DO $$
	DECLARE s text;
	BEGIN
		FOREACH s IN ARRAY ARRAY['queued', 'sending', 'sent', 'delivered', 'read', 'failed',
								 'cancelled', 'blocked'] LOOP
			WITH u AS (UPDATE whatsapp.message SET state = s
						WHERE id = (SELECT min(id) FROM whatsapp.message) RETURNING state, phase)
			INSERT INTO seen SELECT * FROM u;
		END LOOP;
	END $$;
	SELECT string_agg(state || ':' || coalesce(phase, '-'), ',' ORDER BY state) FROM seen;
	ROLLBACK;},
	'blocked:-,cancelled:-,delivered:-,failed:-,queued:q,read:-,sending:s,sent:-',
	'phase is q for queued, s for sending, NULL for every other state');

# --- 2. Statuses are HOT updates ------------------------------------------
sub sign
{
	my ($p) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-hmac', $secret ],
		'<', \$p, '>', \$out, '2>', \$err)
	  or BAIL_OUT("openssl dgst failed: $err");
	$out =~ /([0-9a-f]{64})\s*$/ or BAIL_OUT("no digest in: $out");
	return "sha256=$1";
}

sub status_payload
{
	my ($id, $wamid, $status, $ts) = @_;
	return '{"object":"whatsapp_business_account","entry":[{"id":"2077665544","changes":'
	  . '[{"value":{"messaging_product":"whatsapp","metadata":'
	  . '{"display_phone_number":"15550001111","phone_number_id":"1077665544"},'
	  . qq~"statuses":[{"id":"$wamid","status":"$status","timestamp":"$ts",~
	  . qq~"recipient_id":"5215520000001","biz_opaque_callback_data":"$id",~
	  . '"conversation":{"id":"c0a1b2c3d4e5f60718293a4b5c6d7e8f","origin":{"type":"utility"}},'
	  . '"pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}]},'
	  . '"field":"messages"}]}]}';
}

my ($rc, $rows) = WaTest::run_psql($node,
	q{SELECT id || ' ' || wamid FROM whatsapp.message ORDER BY id});
my @msgs = map { [ split / / ] } split /\n/, $rows;
is(scalar @msgs, $n, 'the messages and their wamids');

my $upd = q{SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables
	 WHERE relid = 'whatsapp.message'::regclass};
my ($rc0, $before) = WaTest::run_psql($node, $upd);
my ($u0, $h0) = split / /, $before;

# One session, one transaction per payload (autocommit), as Meta posts
# them; the session's counters reach pg_stat_user_tables when it exits.
my $script = '';
for my $status ([ 'delivered', 1749416400 ], [ 'read', 1749416460 ])
{
	for my $m (@msgs)
	{
		my $p = status_payload($m->[0], $m->[1], @$status);
		$script .= "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '" . sign($p) . "');\n";
	}
}
WaTest::psql_ok($node, $script, 2 * $n . ' signed statuses, one transaction each');
my $after;
ok(WaTest::wait_until(sub {
			(undef, $after) = WaTest::run_psql($node, $upd);
			(split / /, $after)[0] - $u0 >= 2 * $n;
		}, 30, 'the counters'),
	'the session\'s updates are counted');
my ($u1, $h1) = split / /, $after;
note("whatsapp.message: " . ($u1 - $u0) . " updates, " . ($h1 - $h0) . " of them HOT");
is($u1 - $u0, 2 * $n, 'each status updated its message once');
# Most, not all: a HOT update needs room in the page, and the first status
# adds about 190 bytes (pricing, conversation) to each row of the page.
# Before phase, none was (state was in the indexes' predicates).
cmp_ok($h1 - $h0, '>=', int(0.8 * 2 * $n), 'and at least 80% of them were HOT updates');

WaTest::psql_is($node, q{
	SELECT k || ' ' || count(*)
	  FROM (SELECT state || ' ' || (delivered_at IS NOT NULL) || ' ' || (read_at IS NOT NULL)
				   || ' ' || (pricing ->> 'category') AS k FROM whatsapp.message) m GROUP BY k},
	"read true true utility $n", 'every message was delivered, then read, with its pricing');
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.log WHERE event = 'webhook'},
	2 * $n, 'one log row per status');

# A late "delivered" after "read" moves nothing back.
{
	my $m = $msgs[0];
	my $p = status_payload($m->[0], $m->[1], 'delivered', 1749416500);
	WaTest::psql_ok($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '" . sign($p) . "')",
		'a late delivered status');
	WaTest::psql_is($node, "SELECT state || ' ' || coalesce(phase, '-') FROM whatsapp.message WHERE id = $m->[0]",
		'read -', 'the message stays read');
}

# Every scan the worker's claim and the status view need uses its index.
WaTest::psql_like($node, q{
	SET enable_seqscan = off;
	EXPLAIN (COSTS OFF) SELECT * FROM whatsapp.status},
	qr/Index (?:Only )?Scan using message_claim_idx/, 'the status view counts the queue on message_claim_idx');

# --- 3. A database at 0.2, before and after ALTER EXTENSION UPDATE ---------
$node->safe_psql('postgres', 'CREATE DATABASE upgrade');
WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp VERSION '0.2' CASCADE;
	SELECT whatsapp.wa_account_set('old', '1077665545', 'EAAhotstatus-old-not-a-real-token', max_mps => 1000);
	SELECT whatsapp.wa_send('+5215520999001', 'enviado con 0.2');
}, 'a database at 0.2 with a queued message', dbname => 'upgrade');
ok(WaTest::wait_for($node, q{SELECT state FROM whatsapp.message}, 'sent', 60, dbname => 'upgrade'),
	'the worker sends it with the 0.2 objects');
WaTest::psql_ok($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state, next_attempt_at)
	SELECT id, '+5215520999002', 'text', '{"type": "text", "text": {"body": "despues"}}', 'queued',
		   now() + interval '1 hour'
	  FROM whatsapp.account;
	ALTER EXTENSION whatsapp UPDATE;
}, 'a message due later, then ALTER EXTENSION UPDATE', dbname => 'upgrade');
WaTest::psql_is($node, q{
	SELECT string_agg(state || ':' || coalesce(phase, '-'), ',' ORDER BY id) FROM whatsapp.message},
	'sent:-,queued:q', 'the update computed phase for the rows already there', dbname => 'upgrade');
WaTest::psql_ok($node, q{
	UPDATE whatsapp.message SET next_attempt_at = now() WHERE state = 'queued';
	SELECT whatsapp.wa_send('+5215520999003', 'enviado con 0.3');
}, 'both due now', dbname => 'upgrade');
ok(WaTest::wait_for($node, q{SELECT string_agg(state || ':' || coalesce(phase, '-'), ',' ORDER BY id) FROM whatsapp.message},
		'sent:-,sent:-,sent:-', 60, dbname => 'upgrade'),
	'the worker sends them after the update');
ok(!$node->log_contains(qr/column "?[a-z.]*phase"? does not exist/),
	'no statement named phase before it existed');

$node->stop;
$mock->stop;
done_testing();
