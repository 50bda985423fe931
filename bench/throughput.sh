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
# Two variants, each run RUNS times (default 3); the median is reported:
#   instant   the mock answers at once
#   lat100    the mock answers every request after 100 ms (Little's law:
#             5,000/s at 100 ms needs >= 500 in flight; max_inflight 1000)
#   tls100    (not run by default) lat100 through an nginx TLS front with
#             HTTP/2 offered, as in bench/memory.sh
#
# For each run it also prints the mock's CPU time (/_mock/cpu), the
# worker's CPU time (/proc/PID/stat utime + stime), the CPU used by the
# whole machine meanwhile (to see how busy it was), the number of record
# transactions (distinct sent_at values), and checks that every message
# ended 'sent' and that the mock saw exactly N distinct callbacks, each once.
#
# Environment: MESSAGES (50000), RUNS (3), MAX_INFLIGHT (1000),
# BATCH_SIZE (whatsapp.batch_size; default: the extension's),
# VARIANTS ("instant lat100"), BENCH_EXTRA_CONF (more postgresql.conf lines),
# KEEP_BENCH_TMP=1 (keep the directory, for the server log).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MESSAGES=${MESSAGES:-50000}
RUNS=${RUNS:-3}
MAX_INFLIGHT=${MAX_INFLIGHT:-1000}
BATCH_SIZE=${BATCH_SIZE:-}
VARIANTS=${VARIANTS:-instant lat100}
TARGET=5000

bench_init throughput
machine_note
step "mock (--no-record) and cluster (max_inflight $MAX_INFLIGHT${BATCH_SIZE:+, batch_size $BATCH_SIZE})"
start_mock --no-record
start_cluster "$MOCK_URL" "whatsapp.max_inflight = $MAX_INFLIGHT
${BATCH_SIZE:+whatsapp.batch_size = $BATCH_SIZE}"
say "mock $MOCK_URL (pid $(mock_pid)), cluster in $BENCH_DIR, worker pid $(worker_pid)"

# run_once LATENCY_MS: prints a line; sets RUN_RATE, RUN_WCPU, RUN_MCPU (ms)
run_once() {
	local latency=$1 wpid t_start out commit_ts t_enq
	local w0 w1 m0 m1 busy0 total0 busy1 total1 i left res
	local sent total last_sent batches not_sent msgs distinct maxper rate span

	# same starting point for every run: empty tables, nothing to flush
	bpsql -q -o /dev/null -c "TRUNCATE whatsapp.message, whatsapp.log" -c "CHECKPOINT"
	mock_post reset
	mock_post latency "{\"ms\": $latency}"
	wpid=$(worker_pid)

	w0=$(proc_cpu_ms "$wpid")
	m0=$(mock_cpu_ms)
	t_start=$(date +%s.%N)
	out=$(bpsql -q -At <<EOF
BEGIN;
SELECT count(whatsapp.wa_send('+4915' || pg_catalog.lpad(g::text, 9, '0'),
                              'Benchmark message ' || g || ': your order has shipped.'))
  FROM pg_catalog.generate_series(1, $MESSAGES) g;
COMMIT;
SELECT extract(epoch FROM clock_timestamp());
EOF
)
	read -r busy0 total0 < <(machine_cpu_ms)
	commit_ts=$(sed -n 2p <<<"$out")
	[ "$(sed -n 1p <<<"$out")" = "$MESSAGES" ] || die "enqueue failed: $out"
	t_enq=$(awk -v a="$t_start" -v b="$commit_ts" 'BEGIN { printf "%.2f", b - a }')

	for i in $(seq 1 2400); do
		left=$(bq "SELECT count(*) FROM whatsapp.message WHERE state IN ('queued', 'sending')") ||
			die "the server stopped answering"
		[ "$left" -eq 0 ] && break
		sleep 0.25
	done
	[ "$left" -eq 0 ] || die "still $left messages queued or sending after 600 s"
	read -r busy1 total1 < <(machine_cpu_ms)
	w1=$(proc_cpu_ms "$wpid")
	m1=$(mock_cpu_ms)
	[ "$(worker_pid)" = "$wpid" ] || die "the worker restarted during the run"

	res=$(bq "SELECT count(*) FILTER (WHERE state = 'sent'), count(*),
	                 extract(epoch FROM max(sent_at)), count(DISTINCT sent_at)
	            FROM whatsapp.message")
	IFS='|' read -r sent total last_sent batches <<<"$res"
	msgs=$(mock_counts_field messages)
	distinct=$(mock_counts_field distinct_callbacks)
	maxper=$(mock_counts_field max_per_callback)
	[ "$sent" = "$MESSAGES" ] && [ "$total" = "$MESSAGES" ] ||
		die "only $sent of $total messages ended 'sent' (expected $MESSAGES)"
	[ "$msgs" = "$MESSAGES" ] && [ "$distinct" = "$MESSAGES" ] && [ "$maxper" = 1 ] ||
		die "the mock saw $msgs requests, $distinct distinct callbacks, at most $maxper per callback"

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

for variant in $VARIANTS; do
	case "$variant" in
	instant) latency=0 ;;
	lat100) latency=100 ;;
	tls100)
		latency=100
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
	step "$variant: $MESSAGES messages in one transaction, mock latency $latency ms, $RUNS runs"
	rates=()
	wcpu=()
	mcpu=()
	for r in $(seq 1 "$RUNS"); do
		label="run $r"
		run_once "$latency"
		rates+=("$RUN_RATE")
		wcpu+=("$RUN_WCPU")
		mcpu+=("$RUN_MCPU")
	done
	med=$(median "${rates[@]}")
	say "  median: $med messages/s (target >= $TARGET); worker CPU median $(median "${wcpu[@]}") ms, mock CPU median $(median "${mcpu[@]}") ms"
	if [ "$variant" = tls100 ]; then
		metric="Throughput, TLS via nginx, mock 100 ms latency, max_inflight $MAX_INFLIGHT ($MESSAGES msgs, median of $RUNS)"
		say "  nginx saw: $(awk '{ print $1 }' "$NGINX_DIR/access.log" | sort | uniq -c | awk '{ printf "%s%s x %s", sep, $2, $1; sep = ", " }') over $(awk '{ print $2 }' "$NGINX_DIR/access.log" | sort -u | wc -l) TLS connections"
	elif [ "$latency" -eq 0 ]; then
		metric="Throughput, mock instant ($MESSAGES msgs, median of $RUNS)"
	else
		metric="Throughput, mock 100 ms latency, max_inflight $MAX_INFLIGHT ($MESSAGES msgs, median of $RUNS)"
	fi
	summary "$metric" ">= $TARGET msg/s" "$med msg/s" "bash bench/throughput.sh"
done
