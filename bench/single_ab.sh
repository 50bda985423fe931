#!/usr/bin/env bash
# bench/single_ab.sh: two builds of the extension compared on the worker's
# single-message path, alternating on one cluster in one run.
#
#   OLD_PG_BIN=/opt/pg-old/lib/postgresql/15/bin \
#   PG_BIN=/opt/pg-new/lib/postgresql/15/bin bash bench/single_ab.sh
#
# OLD_PG_BIN and PG_BIN are two copies of the same PostgreSQL, each with
# one build of the extension installed (the same SQL version).  One
# cluster is made with PG_BIN and loaded with HISTORY (1,000,000) delivered
# messages (load_history: the steady state of the other benchmarks).  Then
# ROUNDS (3) rounds; in each, for each build in turn (old first in odd
# rounds, new first in even ones), the cluster is restarted on that build's
# binaries, warmed up (2 s, then 20 messages, not counted), and measured
# twice:
#   latency  COUNT (300) single-message transactions GAP_MS (50) ms apart
#            (bench/latency.pl): COMMIT -> request at the mock, median and
#            p99, and the worker's CPU per message (the one-message-per-
#            transaction path: a claim, a request and a record each);
#   load     DURATION (10) s of pgbench, CLIENTS (2) clients, one wa_send
#            per transaction (as bench/enqueue.sh): TPS, and CPU per
#            message of the worker (/proc/PID/stat) and of the backends.
# The worker delivers to the Node mock (instant answers, recording arrival
# times for latency.pl).  The medians over the rounds are printed per build,
# with new/old ratios.  The machine is shared: compare the builds' figures
# within the run, not with other runs.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OLD_PG_BIN=${OLD_PG_BIN:?set OLD_PG_BIN to the bin directory of the old build\'s PostgreSQL copy}
NEW_PG_BIN=$PG_BIN
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-300}
GAP_MS=${GAP_MS:-50}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}

perl -MDBD::Pg -e 1 2>/dev/null || die "DBD::Pg is missing: apt-get install libdbd-pg-perl"
[ -f "$("$OLD_PG_BIN/pg_config" --pkglibdir)/whatsapp.so" ] ||
	die "the old build is not installed in $OLD_PG_BIN's copy"

bench_init single_ab
machine_note
step "mock (recording arrival times, instant answers) and cluster"
start_mock
start_cluster "$MOCK_URL"
step "steady state: history of ${HISTORY:-1000000} delivered messages"
load_history

cat >"$BENCH_DIR/wa_send.sql" <<'EOF'
\set n random(1, 999999999)
SELECT whatsapp.wa_send('+4915' || lpad(:n::text, 9, '0'), 'Your order S' || :n || ' is confirmed. Thank you for shopping with us!');
EOF
chmod 644 "$BENCH_DIR/wa_send.sql"

# use_build BIN: restart the cluster on that copy's binaries
use_build() {
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -m fast -w -t 60 stop >/dev/null ||
		die "the cluster did not stop"
	PG_BIN=$1
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" \
		-w -t 60 start >/dev/null || die "the cluster did not start on $PG_BIN"
	wait_worker
	# not measured: the new worker's first turns (accounts, plans, the
	# first poll and purges) and a few messages
	sleep 2
	"${as_user[@]}" perl "$BENCH_HOME/latency.pl" "$BENCH_DIR" "$PGPORT_B" bench \
		"$MOCK_URL" 20 "$GAP_MS" >/dev/null || die "latency.pl (warm-up) failed"
	sleep 1
}

drain() {
	local i left
	for i in $(seq 1 1200); do
		left=$(pending_count)
		[ "$left" -eq 0 ] && return 0
		sleep 0.25
	done
	die "the queue did not drain"
}

# measure NAME: one latency and one load measurement; appends to NAME's lists
declare -A MED P99 LCPU TPS WCPU BCPU
measure() {
	local name=$1 out med p99 wpid w0 w1 c0 c1 n tps wcpu bcpu lcpu
	wpid=$(worker_pid)
	w0=$(proc_cpu_ms "$wpid")
	out=$("${as_user[@]}" perl "$BENCH_HOME/latency.pl" "$BENCH_DIR" "$PGPORT_B" bench \
		"$MOCK_URL" "$COUNT" "$GAP_MS") || die "latency.pl failed"
	w1=$(proc_cpu_ms "$wpid")
	IFS=$'\t' read -r _ med _ p99 _ < <(grep '^RESULT' <<<"$out")
	lcpu=$(awk -v d=$((w1 - w0)) -v n="$COUNT" 'BEGIN { printf "%.1f", d * 1000 / n }')
	bq "CHECKPOINT" >/dev/null
	wpid=$(worker_pid)
	sleep 0.2
	w0=$(proc_cpu_ms "$wpid")
	c0=$(children_cpu_ms)
	out=$("${as_user[@]}" "$PG_BIN/pgbench" -n -h "$BENCH_DIR" -p "$PGPORT_B" \
		-c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" -M simple \
		-f "$BENCH_DIR/wa_send.sql" bench 2>&1) || die "pgbench failed: $out"
	drain
	w1=$(proc_cpu_ms "$wpid")
	sleep 0.2
	c1=$(children_cpu_ms)
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
	wcpu=$(awk -v d=$((w1 - w0)) -v n="$n" 'BEGIN { printf "%.1f", d * 1000 / n }')
	bcpu=$(awk -v d=$((c1 - c0)) -v n="$n" 'BEGIN { printf "%.1f", d * 1000 / n }')
	LCPU[$name]+="$lcpu "
	MED[$name]+="$med "
	P99[$name]+="$p99 "
	TPS[$name]+="$tps "
	WCPU[$name]+="$wcpu "
	BCPU[$name]+="$bcpu "
	printf '  %-4s latency median %s ms, p99 %s ms, worker CPU %s us per message; load %s tps, CPU per message: worker %s us, backends %s us\n' \
		"$name" "$med" "$p99" "$lcpu" "$tps" "$wcpu" "$bcpu"
}

for r in $(seq 1 "$ROUNDS"); do
	step "round $r (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	if [ $((r % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
	for b in $order; do
		if [ "$b" = old ]; then use_build "$OLD_PG_BIN"; else use_build "$NEW_PG_BIN"; fi
		measure "$b"
	done
done

step "medians of $ROUNDS rounds"
for k in old new; do
	# shellcheck disable=SC2086
	say "  $k: latency median $(median ${MED[$k]}) ms, p99 $(median ${P99[$k]}) ms, worker CPU $(median ${LCPU[$k]}) us per message; load $(median ${TPS[$k]}) tps; CPU per message: worker $(median ${WCPU[$k]}) us, backends $(median ${BCPU[$k]}) us"
done
# shellcheck disable=SC2086
say "  new/old: latency median $(awk -v a="$(median ${MED[new]})" -v b="$(median ${MED[old]})" 'BEGIN { printf "%.2f", a / b }'), worker CPU per single message $(awk -v a="$(median ${LCPU[new]})" -v b="$(median ${LCPU[old]})" 'BEGIN { printf "%.2f", a / b }'), worker CPU per message $(awk -v a="$(median ${WCPU[new]})" -v b="$(median ${WCPU[old]})" 'BEGIN { printf "%.2f", a / b }'), backend CPU per message $(awk -v a="$(median ${BCPU[new]})" -v b="$(median ${BCPU[old]})" 'BEGIN { printf "%.2f", a / b }')"
