#!/usr/bin/env bash
# bench/throughput.sh: end-to-end delivery throughput.
#
#   bash bench/throughput.sh
#
# One transaction enqueues N messages (default 50,000) with
# whatsapp.wa_send to distinct recipients.  Right after its COMMIT returns,
# the same session takes the server's clock_timestamp(): that is the start.
# The end is max(sent_at), the time of the last record transaction.
# Rate = N / (max(sent_at) - commit time).
#
# Two phases, each variant RUNS times (default 3) in each; medians are
# reported side by side with their ratio:
#   fresh     a freshly created outbox, never analyzed, truncated before each
#             run (how the figures were measured before issue 11)
#   steady    the outbox of a server that has been running: HISTORY
#             (1,000,000) delivered messages and their log rows, VACUUM
#             ANALYZE, autovacuum on at its defaults; each run adds its
#             messages to the history.  The worker keeps the plans it made
#             in the fresh phase, as a worker started on an empty outbox
#             would.
# Variants:
#   instant   the mock answers at once
#   lat100    the mock answers every request after 100 ms (Little's law:
#             10,000/s at 100 ms needs >= 1,000 in flight; max_inflight
#             LAT_INFLIGHT, 1,500, as docs/performance-steady.md recommends)
#   tls100    (not run by default) lat100 through an nginx TLS front with
#             HTTP/2 offered, as in bench/memory.sh
#
# For each run it also prints the mock's CPU time (/_mock/cpu), the
# worker's CPU time (/proc/PID/stat utime + stime), the CPU used by the
# whole machine meanwhile (to see how busy it was), the number of record
# transactions (distinct sent_at values), and checks that every message
# ended 'sent' and that the mock saw exactly N distinct callbacks, each once.
#
# Environment: MESSAGES (50000), RUNS (3), MAX_INFLIGHT (1000, instant),
# LAT_INFLIGHT (1500, lat100 and tls100),
# BATCH_SIZE (whatsapp.batch_size; default: the extension's),
# VARIANTS ("instant lat100"), PHASES ("fresh steady"), HISTORY (1000000),
# PERF=1 (a perf profile, by cpu-clock, of the worker and of the
# enqueueing backend in every run; PERF_FREQ 499 Hz, PERF_TOP 20 lines),
# BENCH_EXTRA_CONF (more postgresql.conf lines),
# KEEP_BENCH_TMP=1 (keep the directory, for the server log).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MESSAGES=${MESSAGES:-50000}
RUNS=${RUNS:-3}
MAX_INFLIGHT=${MAX_INFLIGHT:-1000}
# what docs/performance-steady.md recommends for 10,000 msg/s at 100 ms:
# 1.5 x rate x latency
LAT_INFLIGHT=${LAT_INFLIGHT:-1500}
BATCH_SIZE=${BATCH_SIZE:-}
VARIANTS=${VARIANTS:-instant lat100}
PHASES=${PHASES:-fresh steady}
TARGET=10000

bench_init throughput
machine_note
step "mock (--no-record) and cluster (max_inflight $MAX_INFLIGHT${BATCH_SIZE:+, batch_size $BATCH_SIZE})"
start_mock --no-record
start_cluster "$MOCK_URL" "whatsapp.max_inflight = $MAX_INFLIGHT
${BATCH_SIZE:+whatsapp.batch_size = $BATCH_SIZE}"
say "mock $MOCK_URL (pid $(mock_pid)), cluster in $BENCH_DIR, worker pid $(worker_pid)"

# set_inflight N: whatsapp.max_inflight = N, on reload
set_inflight() {
	[ "$(bq "SHOW whatsapp.max_inflight")" = "$1" ] && return 0
	bpsql -q -o /dev/null -c "ALTER SYSTEM SET whatsapp.max_inflight = $1" -c "SELECT pg_reload_conf()"
	sleep 1
	wait_worker
}

# perf_report LABEL PID: where PID spent its samples, by shared object and
# by function
perf_report() {
	local rows
	rows=$({ perf report -i "$BENCH_DIR/perf.data" --pid="$2" --no-children -g none \
		--percentage relative --sort dso,sym --stdio 2>/dev/null || true; } |
		grep -v '^#' | grep -v '^$' || true)
	say "  perf, $1: share of its samples by shared object"
	awk '{ sub(/%/, "", $1); s[$2] += $1 } END { for (d in s) printf "    %6.2f%%  %s\n", s[d], d }' \
		<<<"$rows" | sort -rn | head -n 8
	say "  perf, $1: by function (top ${PERF_TOP:-20})"
	head -n "${PERF_TOP:-20}" <<<"$rows" | sed 's/^/    /'
}

# run_once PHASE LATENCY_MS: prints a line; sets RUN_RATE, RUN_WCPU, RUN_MCPU (ms)
run_once() {
	local phase=$1 latency=$2 wpid t_start out commit_ts t_enq
	local w0 w1 m0 m1 busy0 total0 busy1 total1 i left res
	local sent total last_sent batches not_sent msgs distinct maxper rate span
	local first=0

	if [ "$phase" = fresh ]; then
		# same starting point for every run: empty tables, nothing to flush
		bpsql -q -o /dev/null -c "TRUNCATE whatsapp.message, whatsapp.log" -c "CHECKPOINT"
	else
		# the history stays; this run's messages are those after it
		first=$(bq "SELECT coalesce(max(id), 0) FROM whatsapp.message")
		bpsql -q -o /dev/null -c "CHECKPOINT"
	fi
	mock_post reset
	mock_post latency "{\"ms\": $latency}"
	wpid=$(worker_pid)

	w0=$(proc_cpu_ms "$wpid")
	m0=$(mock_cpu_ms)
	if [ -n "${PERF:-}" ]; then
		# the whole machine, by the kernel's clock (this machine's CPUs
		# count no cycles for perf); reported per process below
		perf record -q -e cpu-clock -F "${PERF_FREQ:-499}" -g -a \
			-o "$BENCH_DIR/perf.data" >"$BENCH_DIR/perf.log" 2>&1 &
		perf_pid=$!
		sleep 0.5
	fi
	t_start=$(date +%s.%N)
	out=$(bpsql -q -At <<EOF
BEGIN;
SELECT count(whatsapp.wa_send('+4915' || pg_catalog.lpad(g::text, 9, '0'),
                              'Benchmark message ' || g || ': your order has shipped.'))
  FROM pg_catalog.generate_series(1, $MESSAGES) g;
COMMIT;
SELECT extract(epoch FROM clock_timestamp());
SELECT pg_backend_pid();
EOF
)
	read -r busy0 total0 < <(machine_cpu_ms)
	commit_ts=$(sed -n 2p <<<"$out")
	[ "$(sed -n 1p <<<"$out")" = "$MESSAGES" ] || die "enqueue failed: $out"
	t_enq=$(awk -v a="$t_start" -v b="$commit_ts" 'BEGIN { printf "%.2f", b - a }')

	for i in $(seq 1 2400); do
		left=$(pending_count) ||
			die "the server stopped answering"
		[ "$left" -eq 0 ] && break
		sleep 0.25
	done
	[ "$left" -eq 0 ] || die "still $left messages queued or sending after 600 s"
	read -r busy1 total1 < <(machine_cpu_ms)
	w1=$(proc_cpu_ms "$wpid")
	m1=$(mock_cpu_ms)
	[ "$(worker_pid)" = "$wpid" ] || die "the worker restarted during the run"
	if [ -n "${PERF:-}" ]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
		perf_report "worker (pid $wpid)" "$wpid"
		perf_report "enqueueing backend (pid $(sed -n 3p <<<"$out"))" "$(sed -n 3p <<<"$out")"
	fi

	res=$(bq "SELECT count(*) FILTER (WHERE state = 'sent'), count(*),
	                 extract(epoch FROM max(sent_at)), count(DISTINCT sent_at)
	            FROM whatsapp.message WHERE id > $first")
	IFS='|' read -r sent total last_sent batches <<<"$res"
	msgs=$(mock_counts_field messages)
	distinct=$(mock_counts_field distinct_callbacks)
	maxper=$(mock_counts_field max_per_callback)
	[ "$sent" = "$MESSAGES" ] && [ "$total" = "$MESSAGES" ] ||
		die "only $sent of $total messages ended 'sent' (expected $MESSAGES)"
	if ! { [ "$msgs" = "$MESSAGES" ] && [ "$distinct" = "$MESSAGES" ] && [ "$maxper" = 1 ]; }; then
		# say why: retries after timeouts or errors show in the log
		bq "SELECT 'attempts ' || attempts || ': ' || count(*) FROM whatsapp.message
		     WHERE id > $first GROUP BY attempts ORDER BY attempts"
		bq "SELECT 'log: ' || event || ' ' || coalesce(http_status::text, '-') || ' '
		           || coalesce(left(message, 80), '') || ': ' || count(*)
		      FROM whatsapp.log WHERE message_id > $first GROUP BY 1 ORDER BY 1"
		die "the mock saw $msgs requests, $distinct distinct callbacks, at most $maxper per callback"
	fi

	span=$(awk -v a="$commit_ts" -v b="$last_sent" 'BEGIN { printf "%.3f", b - a }')
	rate=$(awk -v n="$MESSAGES" -v s="$span" 'BEGIN { printf "%.0f", n / s }')
	printf '  %-8s %8s/s  %7.2f s  enqueue %6.2f s  worker CPU %6.1f s (%3.0f us/msg)  mock CPU %6.1f s (%3.0f us/msg)  machine busy %3.0f%% of %d cores  record txns %d  all %d sent, %d distinct callbacks\n' \
		"$label" "$rate" "$span" "$t_enq" \
		"$(awk -v d=$((w1 - w0)) 'BEGIN { print d / 1000 }')" \
		"$(awk -v d=$((w1 - w0)) -v n="$MESSAGES" 'BEGIN { print d * 1000 / n }')" \
		"$(awk -v a="$m0" -v b="$m1" 'BEGIN { print (b - a) / 1000 }')" \
		"$(awk -v a="$m0" -v b="$m1" -v n="$MESSAGES" 'BEGIN { print (b - a) * 1000 / n }')" \
		"$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) 'BEGIN { print (t > 0) ? 100 * b / t : 0 }')" \
		"$(nproc)" "$batches" "$sent" "$distinct"
	RUN_RATE=$rate
	RUN_WCPU=$((w1 - w0))
	RUN_MCPU=$(awk -v a="$m0" -v b="$m1" 'BEGIN { printf "%.0f", b - a }')
}

declare -A med_rate
for phase in $PHASES; do
case "$phase" in
fresh) ;;
steady)
	step "steady state: history of ${HISTORY:-1000000} delivered messages"
	bpsql -q -o /dev/null -c "TRUNCATE whatsapp.message, whatsapp.log"
	load_history
	;;
*) die "unknown phase $phase (fresh, steady)" ;;
esac
for variant in $VARIANTS; do
	case "$variant" in
	instant) latency=0 inflight=$MAX_INFLIGHT ;;
	lat100) latency=100 inflight=$LAT_INFLIGHT ;;
	tls100)
		latency=100 inflight=$LAT_INFLIGHT
		if [ -z "${NGINX_URL:-}" ]; then
			start_nginx
			bpsql -q -o /dev/null -c "ALTER SYSTEM SET whatsapp.api_url = '$NGINX_URL'" \
				-c "ALTER SYSTEM SET whatsapp.ca_file = '$NGINX_DIR/ca.crt'" -c "SELECT pg_reload_conf()"
			sleep 1
			wait_worker
		fi
		;;
	*) die "unknown variant $variant (instant, lat100, tls100)" ;;
	esac
	set_inflight "$inflight"
	step "$phase, $variant: $MESSAGES messages in one transaction, mock latency $latency ms, max_inflight $inflight, $RUNS runs (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	rates=()
	wcpu=()
	mcpu=()
	for r in $(seq 1 "$RUNS"); do
		label="run $r"
		run_once "$phase" "$latency"
		rates+=("$RUN_RATE")
		wcpu+=("$RUN_WCPU")
		mcpu+=("$RUN_MCPU")
	done
	med=$(median "${rates[@]}")
	med_rate[$phase.$variant]=$med
	say "  median: $med messages/s (target >= $TARGET); worker CPU median $(median "${wcpu[@]}") ms, mock CPU median $(median "${mcpu[@]}") ms"
	if [ "$variant" = tls100 ]; then
		say "  nginx saw: $(awk '{ print $1 }' "$NGINX_DIR/access.log" | sort | uniq -c | awk '{ printf "%s%s x %s", sep, $2, $1; sep = ", " }') over $(awk '{ print $2 }' "$NGINX_DIR/access.log" | sort -u | wc -l) TLS connections"
	fi
done
done

step "fresh outbox against steady state (medians, msg/s)"
for variant in $VARIANTS; do
	case "$variant" in
	instant) metric="Throughput, mock instant" ;;
	lat100) metric="Throughput, mock 100 ms latency, max_inflight $LAT_INFLIGHT" ;;
	tls100) metric="Throughput, TLS via nginx, mock 100 ms latency, max_inflight $LAT_INFLIGHT" ;;
	esac
	f=${med_rate[fresh.$variant]:-}
	st=${med_rate[steady.$variant]:-}
	ratio=-
	[ -z "$f" ] || [ -z "$st" ] || ratio=$(awk -v a="$st" -v b="$f" 'BEGIN { printf "%.2f", a / b }')
	say "  $variant: fresh ${f:--}, steady ${st:--}, steady/fresh $ratio"
	[ -z "$st" ] || summary "$metric, steady state: ${HISTORY:-1000000} delivered, analyzed ($MESSAGES msgs, median of $RUNS)" \
		">= $TARGET msg/s" "$st msg/s" "bash bench/throughput.sh"
	[ -z "$f" ] || summary "$metric, fresh outbox ($MESSAGES msgs, median of $RUNS)" \
		"(beside steady)" "$f msg/s" "bash bench/throughput.sh"
done
