#!/usr/bin/env bash
# bench/enqueue.sh: what wa_send costs the caller, against a plain INSERT.
#
#   bash bench/enqueue.sh
#
# Alternating pgbench runs (-n, CLIENTS clients, autocommit: one statement
# per transaction, DURATION s each), PAIRS pairs of
#   insert   INSERT INTO public.plain_message ... (the table below)
#   wa_send  SELECT whatsapp.wa_send(...)
# with the worker delivering to the mock (instant answers) during the
# wa_send runs.  After each wa_send run the script waits until the queue is
# empty, so that no delivery spills into the next insert run.  Each run
# starts after a CHECKPOINT.  Ratio = TPS(insert) / TPS(wa_send) per pair;
# the median of the pairs is the result.  A short warm-up of each comes
# first and is not counted.
#
# public.plain_message is what an application would write to an outbox of
# its own: the same row shape as whatsapp.message (bigserial key, account,
# recipient, kind, jsonb payload, state, two timestamps) with the primary
# key and the two partial indexes the worker uses on whatsapp.message
# (claim order and per-recipient order).  wa_send does more: it normalizes
# the number, looks up the account and opt-outs, builds the payload, and
# registers a commit callback that wakes the worker.
#
# After the warm-up the script runs VACUUM ANALYZE on the tables, as
# autovacuum would have by then in a server that has been running: the
# worker's cached plans were made for an empty outbox.  COLD=1 skips it and
# measures a freshly created outbox instead.
#
# Environment: PAIRS (3), DURATION (15), CLIENTS (2), WARMUP (5), COLD,
# QUERY_MODE (pgbench -M: simple, the protocol psycopg2 and so Odoo use;
# or extended, prepared), BENCH_EXTRA_CONF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PAIRS=${PAIRS:-3}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-2}
WARMUP=${WARMUP:-5}
QUERY_MODE=${QUERY_MODE:-simple}
TARGET=1.5

bench_init enqueue
machine_note
step "mock (--no-record, instant) and cluster"
start_mock --no-record
start_cluster "$MOCK_URL"
say "mock $MOCK_URL, cluster in $BENCH_DIR, worker pid $(worker_pid)"

bpsql -q <<'EOF'
CREATE TABLE public.plain_message (
	id				bigserial PRIMARY KEY,
	account_id		integer NOT NULL,
	recipient		text NOT NULL,
	kind			text NOT NULL,
	payload			jsonb NOT NULL,
	state			text NOT NULL DEFAULT 'queued',
	created_at		timestamptz NOT NULL DEFAULT now(),
	next_attempt_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plain_message_claim_idx ON public.plain_message
	(account_id, next_attempt_at, id) WHERE state = 'queued';
CREATE INDEX plain_message_pair_idx ON public.plain_message
	(account_id, recipient, id) WHERE state IN ('queued', 'sending');
EOF

cat >"$BENCH_DIR/insert.sql" <<'EOF'
\set n random(1, 999999999)
INSERT INTO public.plain_message (account_id, recipient, kind, payload) VALUES (1, '+4915' || lpad(:n::text, 9, '0'), 'text', jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'Your order S' || :n || ' is confirmed. Thank you for shopping with us!')));
EOF
cat >"$BENCH_DIR/wa_send.sql" <<'EOF'
\set n random(1, 999999999)
SELECT whatsapp.wa_send('+4915' || lpad(:n::text, 9, '0'), 'Your order S' || :n || ' is confirmed. Thank you for shopping with us!');
EOF
chmod 644 "$BENCH_DIR"/*.sql

# pgbench_run SCRIPT SECONDS: prints a line, sets RUN_TPS
pgbench_run() {
	local script=$1 secs=$2 out wpid w0 w1 c0 c1 busy0 total0 busy1 total1 left i t0 drain= n
	bpsql -q -c "CHECKPOINT"
	wpid=$(worker_pid)
	sleep 0.2	# let the postmaster reap the sessions above
	w0=$(proc_cpu_ms "$wpid")
	c0=$(children_cpu_ms)
	read -r busy0 total0 < <(machine_cpu_ms)
	out=$("${as_user[@]}" "$PG_BIN/pgbench" -n -h "$BENCH_DIR" -p "$PGPORT_B" \
		-c "$CLIENTS" -j "$CLIENTS" -T "$secs" -M "$QUERY_MODE" \
		-f "$BENCH_DIR/$script.sql" bench 2>&1) || {
		say "$out"
		die "pgbench failed"
	}
	read -r busy1 total1 < <(machine_cpu_ms)
	w1=$(proc_cpu_ms "$wpid")
	sleep 0.2
	c1=$(children_cpu_ms)
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	RUN_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
	[ -n "$RUN_TPS" ] || {
		say "$out"
		die "no tps in the pgbench output"
	}
	if [ "$script" = wa_send ]; then
		t0=$(date +%s.%N)
		for i in $(seq 1 1200); do
			left=$(bq "SELECT count(*) FROM whatsapp.message WHERE state IN ('queued', 'sending')") ||
				die "the server stopped answering"
			[ "$left" -eq 0 ] && break
			sleep 0.25
		done
		[ "$left" -eq 0 ] || die "the queue did not drain"
		drain=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	fi
	printf '  %-8s %9.1f tps  CPU per transaction: backends %4.0f us, worker %4.0f us  machine busy %3.0f%% of %d cores%s\n' \
		"$script" "$RUN_TPS" \
		"$(awk -v d=$((c1 - c0)) -v n="$n" 'BEGIN { print d * 1000 / n }')" \
		"$(awk -v d=$((w1 - w0)) -v n="$n" 'BEGIN { print d * 1000 / n }')" \
		"$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) 'BEGIN { print (t > 0) ? 100 * b / t : 0 }')" \
		"$(nproc)" "${drain:+  (queue drained ${drain} s after the run)}"
}

step "warm-up: $WARMUP s of each (not counted)"
pgbench_run insert "$WARMUP"
pgbench_run wa_send "$WARMUP"
if [ -z "${COLD:-}" ]; then
	# Steady state: give the planner the statistics autovacuum would have
	# gathered by now.  Without them the worker keeps the plans it made
	# for an empty outbox until autovacuum's first pass, up to a minute
	# or more into the run (COLD=1 measures that).
	bpsql -q -c "VACUUM ANALYZE whatsapp.message, whatsapp.log, public.plain_message"
	say "  VACUUM ANALYZE after the warm-up (COLD=1 skips it)"
fi

step "$PAIRS pairs of $DURATION s runs, $CLIENTS clients, -M $QUERY_MODE"
ratios=()
for p in $(seq 1 "$PAIRS"); do
	say " pair $p"
	pgbench_run insert "$DURATION"
	ins=$RUN_TPS
	pgbench_run wa_send "$DURATION"
	snd=$RUN_TPS
	ratio=$(awk -v a="$ins" -v b="$snd" 'BEGIN { printf "%.2f", a / b }')
	ratios+=("$ratio")
	say "  ratio insert/wa_send = $ratio"
done
med=$(median "${ratios[@]}")
say "  ratios: ${ratios[*]}; median $med (target <= $TARGET)"
bq "SELECT 'outbox rows: ' || count(*) || ', all sent: ' || bool_and(state = 'sent') FROM whatsapp.message"
summary "Enqueue cost: TPS(plain INSERT) / TPS(wa_send), $CLIENTS clients, median of $PAIRS pairs" \
	"<= $TARGET" "$med (${ratios[*]})" "bash bench/enqueue.sh"
