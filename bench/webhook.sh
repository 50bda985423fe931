#!/usr/bin/env bash
# bench/webhook.sh: how many signed status webhooks wa_receive takes per second.
#
#   bash bench/webhook.sh
#
# A throwaway cluster (as user wa_test when run as root) with the library
# preloaded and one account with an app secret.  First the fresh figure:
# FRESH_MESSAGES (100,000) messages "sent" with a wamid, never analyzed,
# one READ COMMITTED run of FRESH_DURATION (10) s with 16 clients.  Then
# the steady state: HISTORY (1,000,000) delivered messages (bench/lib.sh
# load_history) and ROWS (400,000) more "sent" with a wamid, as the worker
# leaves them, all analyzed.  Payloads are made beforehand: for PAYLOAD_MESSAGES random
# messages a "delivered" status (n from 0) and, PAYLOAD_MESSAGES later, its
# "read", shaped as Meta sends them (metadata, pricing, conversation,
# biz_opaque_callback_data) and signed with pgcrypto's hmac() (never with
# the code under test), in table bench_payload(n, body, sig).  Then
# pgbench (-n, THREADS threads, -M prepared, DURATION s) runs, each
# transaction one
#
#   SELECT whatsapp.wa_receive(body, sig) FROM public.bench_payload
#    WHERE n = (SELECT nextval('public.bench_next'))
#
# so every payload is taken once, in order, and every status moves its
# message forward (one UPDATE, one log row, one stored payload):
#
#   receive-rc   at READ COMMITTED, once per client count in CLIENTS (the
#                target, >= 5,000 payloads/s, is judged on the best count)
#   receive-rr   at REPEATABLE READ, Odoo's level, with that count
#                (reported; pgbench retries the rare 40001)
#   verify-only  whatsapp._verify_signature(body, sig): parsing, the
#                account lookup and the HMAC check, nothing stored
#   lookup-only  SELECT length(body) ... : the cost of the harness itself
#
# Each run also prints how many times it updated whatsapp.message and the
# share of HOT updates (no new index entry; 0.3 on, see docs/performance.md).
# verify-only and lookup-only take random payloads (they write nothing).
# The difference between receive and verify-only is what applying and
# storing costs; verify-only minus lookup-only is the signature check.
#
# Several client counts, because on 2 cores 32 clients spend much of the
# machine switching between backends that wait for the WAL flush (and each
# new connection first faults in the shared buffers it touches), while 8
# leave group commit half empty.  Every count is printed.
#
# The server is set up as one that holds such a table would be:
# shared_buffers 1GB (table and indexes fit), max_wal_size 8GB and
# checkpoint_timeout 30min.  synchronous_commit and fsync stay on: a webhook
# is acknowledged only when it is durable, or Meta would not send it again.
# The tables are prewarmed and a warm-up run comes first.  No checkpoint is
# forced before the runs: right after one, the first change of each of the
# table's 30,000-odd random pages writes a full-page image (8 kB of WAL),
# which in steady state happens once per page per checkpoint_timeout.  The
# full-page images per payload are printed with each run.
#
# Environment: ROWS (400000), PAYLOAD_MESSAGES (400000), HISTORY (1000000),
# FRESH_MESSAGES (100000; 0 skips the fresh run), FRESH_DURATION (10),
# CLIENTS ("8 16 32"), THREADS (2), DURATION (20), WARMUP (10),
# BENCH_EXTRA_CONF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${ROWS:-400000}
PAYLOAD_MESSAGES=${PAYLOAD_MESSAGES:-400000}
FRESH_MESSAGES=${FRESH_MESSAGES:-100000}
FRESH_DURATION=${FRESH_DURATION:-10}
CLIENT_COUNTS=${CLIENTS:-8 16 32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-10}
TARGET=10000
SECRET=bench-app-secret-not-real

bench_init webhook
machine_note
step "cluster (no Cloud API needed: nothing is queued)"
# Loopback port 1: nothing listens, nothing can leave.
start_cluster "http://127.0.0.1:1" "shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min"
say "cluster in $BENCH_DIR, worker pid $(worker_pid)"

bq "SELECT whatsapp.wa_account_set('bench', '1000000001', NULL, app_secret => '$SECRET', waba_id => '2000000001') IS NULL" >/dev/null

# sent_messages N: N messages 'sent' with a wamid, as the worker leaves them
sent_messages() {
	bpsql -q -o /dev/null -v rows="$1" <<'EOF'
INSERT INTO whatsapp.message (account_id, recipient, wa_id, kind, payload, state,
                              attempts, wamid, created_at, claimed_at, sent_at)
SELECT a.id, '+52155' || lpad(g::text, 8, '0'), '52155' || lpad(g::text, 8, '0'), 'text',
       '{"type": "text", "text": {"body": "Your order is confirmed."}}', 'sent', 1,
       'wamid.HBgNNTIxNTUxMjM0NTY3OBUCABEYEjBENUU' || g || 'X' || (SELECT count(*) FROM whatsapp.message),
       now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour'
  FROM whatsapp.account a, generate_series(1, :rows) g
 WHERE a.name = 'bench';
EOF
}

# make_payloads TABLE SEQUENCE N: for N random messages that are 'sent', a
# "delivered" status (n from 0) and, N later, its "read", shaped as Meta
# sends them and signed with pgcrypto's hmac() (not with the code under
# test).
make_payloads() {
	bpsql -q -o /dev/null -v tab="$1" -v seq="$2" -v pm="$3" -v secret="$SECRET" <<'EOF'
CREATE TABLE public.:tab (n integer PRIMARY KEY, body text NOT NULL, sig text NOT NULL);
INSERT INTO public.:tab
SELECT s.k * :pm + m.r - 1, p.body,
       'sha256=' || encode(public.hmac(p.body, :'secret', 'sha256'), 'hex')
  FROM (SELECT id, wamid, wa_id, row_number() OVER () AS r
          FROM (SELECT id, wamid, wa_id FROM whatsapp.message WHERE state = 'sent'
                 ORDER BY random() LIMIT :pm) r) m,
       (VALUES ('delivered', 0), ('read', 1)) s(status, k),
       LATERAL (SELECT format('{"object":"whatsapp_business_account","entry":[{"id":"2000000001","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"1000000001"},"statuses":[{"id":"%s","status":"%s","timestamp":"%s","recipient_id":"%s","biz_opaque_callback_data":"%s","conversation":{"id":"c0a1b2c3d4e5f60718293a4b5c6d7e8f","origin":{"type":"utility"}},"pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}]},"field":"messages"}]}]}',
                              m.wamid, s.status, extract(epoch FROM now())::bigint + s.k + 1,
                              m.wa_id, m.id) AS body) p;
CREATE SEQUENCE public.:seq MINVALUE 0 START 0;
EOF
}

# run NAME SCRIPT ISOLATION SECONDS CLIENTS: prints a line, sets RUN_TPS, RUN_LAT
run() {
	local name=$1 script=$2 iso=$3 secs=$4 clients=$5 out c0 c1 busy0 total0 busy1 total1 n failed upd0 upd1
	bq "SELECT pg_stat_reset_shared('wal')" >/dev/null
	upd0=$(bq "$upd_sql")
	sleep 0.2
	c0=$(children_cpu_ms)
	read -r busy0 total0 < <(machine_cpu_ms)
	out=$("${as_user[@]}" env PGOPTIONS="-c default_transaction_isolation=${iso// /\\ }" \
		"$PG_BIN/pgbench" -n -h "$BENCH_DIR" -p "$PGPORT_B" \
		-c "$clients" -j "$THREADS" -T "$secs" -M prepared --max-tries=10 \
		-f "$BENCH_DIR/$script.sql" bench 2>&1) || {
		say "$out"
		die "pgbench failed"
	}
	read -r busy1 total1 < <(machine_cpu_ms)
	# the backends' CPU time is counted once they have exited
	for _ in $(seq 50); do
		[ "$(bq "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'")" = 0 ] && break
		sleep 0.1
	done
	sleep 0.2
	c1=$(children_cpu_ms)
	upd1=$(bq "$upd_sql")
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
	RUN_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
	RUN_LAT=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
	[ -n "$RUN_TPS" ] || {
		say "$out"
		die "no tps in the pgbench output"
	}
	# a receive run past the last payload would count empty transactions
	[ "$script" != receive ] || [ "$(bq "SELECT last_value < $npayloads FROM public.bench_next")" = t ] ||
		die "the payloads ran out: raise PAYLOAD_MESSAGES"
	[ "$script" != receive_fresh ] ||
		[ "$(bq "SELECT last_value < $((FRESH_MESSAGES * 2)) FROM public.bench_next_fresh")" = t ] ||
		die "the fresh payloads ran out: raise FRESH_MESSAGES"
	RUN_WAL=$(bq "SELECT round(wal_fpi::numeric / greatest($n, 1), 2) || ' FPI, ' || round(wal_bytes / greatest($n, 1)) || ' B WAL' FROM pg_stat_wal")
	printf '  %-12s %-15s %3d clients %7.0f /s  latency %6.3f ms  backend CPU %4.0f us/call  %s/call  machine busy %3.0f%%  retried %s, failed %s%s\n' \
		"$name" "$iso" "$clients" "$RUN_TPS" "$RUN_LAT" \
		"$(awk -v d=$((c1 - c0)) -v n="$n" 'BEGIN { print (n > 0) ? d * 1000 / n : 0 }')" \
		"$RUN_WAL" \
		"$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) 'BEGIN { print (t > 0) ? 100 * b / t : 0 }')" \
		"$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' <<<"$out")" "${failed:-0}" \
		"$(awk -v a="$upd0" -v b="$upd1" 'BEGIN { split(a, x, " "); split(b, y, " "); u = y[1] - x[1]; h = y[2] - x[2]
			if (u > 0) printf ", message updates %d, HOT %.0f%%", u, 100 * h / u }')"
}

# updates of whatsapp.message and how many were HOT (no index entry); the
# pgbench backends have exited, so their counts are in
upd_sql="SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'whatsapp.message'::regclass"

# Fresh: an outbox of FRESH_MESSAGES sent messages, never analyzed, as the
# figure was measured before issue 11.  Its messages stay in the outbox
# for the steady state below.
fresh_tps=
if [ "$FRESH_MESSAGES" -gt 0 ]; then
	step "fresh outbox: $FRESH_MESSAGES messages sent, never analyzed, $((FRESH_MESSAGES * 2)) signed payloads"
	sent_messages "$FRESH_MESSAGES"
	make_payloads bench_payload_fresh bench_next_fresh "$FRESH_MESSAGES"
	cat >"$BENCH_DIR/receive_fresh.sql" <<EOF
SELECT whatsapp.wa_receive(body, sig) FROM public.bench_payload_fresh
 WHERE n = (SELECT nextval('public.bench_next_fresh'));
EOF
	chmod 644 "$BENCH_DIR/receive_fresh.sql"
	run receive-rc receive_fresh "read committed" "$FRESH_DURATION" 16
	fresh_tps=$RUN_TPS
fi

step "steady state: ${HISTORY:-1000000} delivered messages, $ROWS sent, $((PAYLOAD_MESSAGES * 2)) signed payloads"
t0=$(date +%s)
load_history
sent_messages "$ROWS"
make_payloads bench_payload bench_next "$PAYLOAD_MESSAGES"
bpsql -q -o /dev/null <<'EOF'
VACUUM ANALYZE;
CREATE EXTENSION pg_prewarm;
SELECT sum(pg_prewarm(c.oid)) AS pages FROM pg_class c
 WHERE c.relnamespace IN ('whatsapp'::regnamespace, 'public'::regnamespace)
   AND c.relkind IN ('r', 'i') \gset
EOF
npayloads=$(bq "SELECT count(*) FROM public.bench_payload")
say "  ready in $(( $(date +%s) - t0 )) s: $(bq "SELECT count(*) FROM whatsapp.message") messages," \
	"$npayloads payloads of $(bq "SELECT round(avg(length(body))) FROM public.bench_payload") bytes"

cat >"$BENCH_DIR/receive.sql" <<EOF
SELECT whatsapp.wa_receive(body, sig) FROM public.bench_payload
 WHERE n = (SELECT nextval('public.bench_next'));
EOF
cat >"$BENCH_DIR/verify.sql" <<EOF
\set n random(0, $((npayloads - 1)))
SELECT whatsapp._verify_signature(body, sig) FROM public.bench_payload WHERE n = :n;
EOF
cat >"$BENCH_DIR/lookup.sql" <<EOF
\set n random(0, $((npayloads - 1)))
SELECT length(body) + length(sig) FROM public.bench_payload WHERE n = :n;
EOF
chmod 644 "$BENCH_DIR"/*.sql
step "warm-up: $WARMUP s, 16 clients (not counted)"
run warm-up receive "read committed" "$WARMUP" 16

step "$THREADS pgbench threads, $DURATION s each, -M prepared"
say "  server: $(bq "SELECT string_agg(name || ' = ' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'synchronous_commit', 'fsync')")"
rc_tps=0
rc_all=""
for c in $CLIENT_COUNTS; do
	run receive-rc receive "read committed" "$DURATION" "$c"
	rc_all="$rc_all${rc_all:+ / }$(printf '%.0f' "$RUN_TPS") at $c"
	if awk -v a="$RUN_TPS" -v b="$rc_tps" 'BEGIN { exit !(a > b) }'; then
		rc_tps=$RUN_TPS
		rc_lat=$RUN_LAT
		best=$c
	fi
done
run receive-rr receive "repeatable read" "$DURATION" "$best"
rr_tps=$RUN_TPS
run verify-only verify "read committed" "$DURATION" "$best"
v_tps=$RUN_TPS
v_lat=$RUN_LAT
run lookup-only lookup "read committed" "$DURATION" "$best"
l_tps=$RUN_TPS

bq "SELECT 'messages: ' || string_agg(state || ' ' || n, ', ' ORDER BY state) FROM (SELECT state, count(*) n FROM whatsapp.message GROUP BY state) s"
bq "SELECT 'payloads taken: ' || (SELECT last_value + 1 FROM public.bench_next) || ', stored: ' || count(*) || ', held statuses: ' || (SELECT count(*) FROM whatsapp.status_held) || ', log rows: ' || (SELECT count(*) FROM whatsapp.log) FROM whatsapp.webhook"

# per-call time on the whole machine: cores / throughput
per_call() { awk -v t="$1" -v c="$(nproc)" 'BEGIN { printf "%.0f", (t > 0) ? c * 1e6 / t : 0 }'; }
say ""
say "  wa_receive, READ COMMITTED    $(printf '%6.0f' "$rc_tps") payloads/s  with $best clients ($(per_call "$rc_tps") us of machine time each; target >= $TARGET/s)"
say "                                (per client count: $rc_all)"
say "  wa_receive, REPEATABLE READ   $(printf '%6.0f' "$rr_tps") payloads/s  ($(per_call "$rr_tps") us each)"
say "  signature check only          $(printf '%6.0f' "$v_tps") checks/s    ($(per_call "$v_tps") us each, harness included)"
say "  harness only (payload lookup) $(printf '%6.0f' "$l_tps") lookups/s   ($(per_call "$l_tps") us each)"
say "  (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); other work on the machine lowers every figure)"
[ -z "$fresh_tps" ] || say "  fresh outbox ($FRESH_MESSAGES messages, never analyzed), 16 clients: $(printf '%.0f' "$fresh_tps") payloads/s; steady/fresh $(awk -v a="$rc_tps" -v b="$fresh_tps" 'BEGIN { printf "%.2f", a / b }')"
verdict=$(awk -v t="$rc_tps" -v g="$TARGET" 'BEGIN { print (t >= g) ? "meets" : "MISSES" }')
say "  => $verdict the target of $TARGET payloads/s at READ COMMITTED"

summary "Webhooks: signed single-status payloads/s, READ COMMITTED, steady state (${HISTORY:-1000000} delivered + $ROWS sent, analyzed), best of $CLIENT_COUNTS clients" \
	">= $TARGET" "$(printf '%.0f' "$rc_tps") with $best clients (latency ${rc_lat} ms; $rc_all)" "bash bench/webhook.sh"
[ -z "$fresh_tps" ] || summary "Webhooks: the same on a fresh outbox ($FRESH_MESSAGES sent, never analyzed), 16 clients" \
	"(beside steady)" "$(printf '%.0f' "$fresh_tps")" "bash bench/webhook.sh"
summary "Webhooks: the same at REPEATABLE READ" "reported" "$(printf '%.0f' "$rr_tps") with $best clients" "bash bench/webhook.sh"
summary "Webhooks: signature check alone (parse, accounts, HMAC-SHA256)" "reported" \
	"$(printf '%.0f' "$v_tps") checks/s (latency ${v_lat} ms)" "bash bench/webhook.sh"
