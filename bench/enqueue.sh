#!/usr/bin/env bash
# bench/enqueue.sh: what wa_send costs the caller, against a plain INSERT.
#
#   bash bench/enqueue.sh
#
# Alternating pgbench runs (-n, CLIENTS clients, autocommit: one statement
# per transaction, DURATION s each), PAIRS pairs of
#   insert   INSERT INTO public.plain_message ... (the table below)
#   wa_send  SELECT whatsapp.wa_send(...)
# with the worker delivering during the wa_send runs to ANSWER:
#   nginx (the default) an nginx that answers every request itself with
#         Meta's JSON and a unique wamid (start_responder in lib.sh), as in
#         the issue's reference figures: it takes little of this machine's
#         CPU, as Meta's servers take none of a production database's;
#   mock  the project's Node mock (instant answers, --no-record), which
#         takes 27-38 us of CPU per answer on the same two cores.  After each wa_send run the script waits until the queue is
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
# Two phases (PHASES, default "fresh steady"), PAIRS pairs each:
#   fresh    right after the warm-up, on freshly created tables never
#            analyzed (how the figure was measured before issue 11);
#   steady   after HISTORY (1,000,000) delivered messages were added to
#            both tables (the same rows) and both were analyzed, with
#            autovacuum on at its defaults.
# Each prints its pairs' ratios and their median; the two medians are
# printed side by side at the end.
#
# Environment: PAIRS (3), DURATION (10), CLIENTS (2), WARMUP (5), PHASES,
# HISTORY, ANSWER (nginx or mock),
# QUERY_MODE (pgbench -M: simple, the protocol psycopg2 and so Odoo use;
# or extended, prepared), BENCH_EXTRA_CONF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PAIRS=${PAIRS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}
WARMUP=${WARMUP:-5}
QUERY_MODE=${QUERY_MODE:-simple}
PHASES=${PHASES:-fresh steady}
TARGET=1.25

bench_init enqueue
machine_note
ANSWER=${ANSWER:-nginx}
case "$ANSWER" in
nginx)
	step "nginx responder (Meta's answer, a unique wamid each) and cluster"
	start_responder
	ANSWER_URL=$RESPONDER_URL
	ANSWER_NOTE="nginx responder $RESPONDER_URL (ANSWER=nginx)"
	;;
mock)
	step "mock (--no-record, instant) and cluster"
	start_mock --no-record
	ANSWER_URL=$MOCK_URL
	ANSWER_NOTE="Node mock $MOCK_URL (ANSWER=mock)"
	;;
*) die "ANSWER must be nginx or mock, not $ANSWER" ;;
esac
start_cluster "$ANSWER_URL"
say "the worker's requests are answered by the $ANSWER_NOTE; cluster in $BENCH_DIR, worker pid $(worker_pid)"

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
			left=$(pending_count) ||
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

# run_pairs LABEL: PAIRS alternating pairs; sets PHASE_MED and PHASE_RATIOS
run_pairs() {
	local p ins snd ratio ratios=()
	step "$1: $PAIRS pairs of $DURATION s runs, $CLIENTS clients, -M $QUERY_MODE, answered by $ANSWER (load average $(cut -d' ' -f1-3 /proc/loadavg))"
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
	PHASE_MED=$(median "${ratios[@]}")
	PHASE_RATIOS="${ratios[*]}"
	say "  ratios: $PHASE_RATIOS; median $PHASE_MED (target <= $TARGET)"
}

step "warm-up: $WARMUP s of each (not counted)"
pgbench_run insert "$WARMUP"
pgbench_run wa_send "$WARMUP"

fresh_med=
steady_med=
for phase in $PHASES; do
	case "$phase" in
	fresh)
		# a freshly created outbox, never analyzed: the worker's plans are
		# the ones it made for an empty table
		run_pairs "fresh outbox"
		fresh_med=$PHASE_MED
		fresh_ratios=$PHASE_RATIOS
		;;
	steady)
		# Steady state: both tables hold the same history, analyzed; the
		# worker's plans are whatever the new statistics make of them.
		step "steady state: history of ${HISTORY:-1000000} delivered messages in both tables"
		load_history
		bpsql -q -o /dev/null <<'EOF2'
INSERT INTO public.plain_message (account_id, recipient, kind, payload, state, created_at, next_attempt_at)
SELECT account_id, recipient, kind, payload, state, created_at, next_attempt_at
  FROM whatsapp.message WHERE state = 'delivered';
VACUUM ANALYZE public.plain_message;
CHECKPOINT;
EOF2
		run_pairs "steady state"
		steady_med=$PHASE_MED
		steady_ratios=$PHASE_RATIOS
		;;
	*) die "unknown phase $phase (fresh, steady)" ;;
	esac
done
bq "SELECT 'outbox: ' || string_agg(state || ' ' || n, ', ' ORDER BY state) FROM (SELECT state, count(*) n FROM whatsapp.message GROUP BY state) s"
step "fresh outbox against steady state (median ratio insert/wa_send)"
say "  fresh ${fresh_med:--}, steady ${steady_med:--}"
[ -z "$steady_med" ] || summary "Enqueue cost, steady state: TPS(plain INSERT) / TPS(wa_send), $CLIENTS clients, median of $PAIRS pairs, answered by $ANSWER" \
	"<= $TARGET" "$steady_med ($steady_ratios)" "bash bench/enqueue.sh"
[ -z "$fresh_med" ] || summary "Enqueue cost, fresh outbox: TPS(plain INSERT) / TPS(wa_send), $CLIENTS clients, median of $PAIRS pairs, answered by $ANSWER" \
	"(beside steady)" "$fresh_med ($fresh_ratios)" "bash bench/enqueue.sh"
