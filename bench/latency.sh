#!/usr/bin/env bash
# bench/latency.sh: idle latency, from a client's COMMIT to the request
# reaching the Cloud API (the mock).
#
#   bash bench/latency.sh
#
# COUNT (1,000) single-message transactions, GAP_MS (50) ms apart, from one
# Perl DBD::Pg session (bench/latency.pl): BEGIN; SELECT wa_send(...);
# COMMIT; then Time::HiRes::time right after COMMIT returns.  The mock
# records its arrival time `t` for every request; the script joins the two
# by message id (biz_opaque_callback_data) and reports min, median, p90,
# p99 and max.  What is measured: the commit callback sets the worker's
# latch, the worker wakes, claims the message in a transaction that commits
# durably (synchronous_commit on: one WAL flush), and libcurl sends the
# request over a kept-alive connection.
#
# Run on a fresh outbox, then again after HISTORY (1,000,000) delivered
# messages were added and analyzed (PHASES, default "fresh steady").
#
# Needs DBD::Pg (Debian: libdbd-pg-perl; installed when missing and run as
# root).  Environment: COUNT, GAP_MS, PHASES, HISTORY, BENCH_EXTRA_CONF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-1000}
GAP_MS=${GAP_MS:-50}
PHASES=${PHASES:-fresh steady}
TARGET=1
TARGET_P99=5

if ! perl -MDBD::Pg -e 1 2>/dev/null; then
	if [ "$(id -u)" -eq 0 ]; then
		say "installing libdbd-pg-perl"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			libdbd-pg-perl >/dev/null || die "could not install libdbd-pg-perl"
	else
		die "DBD::Pg is missing: apt-get install libdbd-pg-perl"
	fi
fi

bench_init latency
machine_note
step "mock (recording arrival times, instant answers) and cluster"
start_mock
start_cluster "$MOCK_URL"
say "mock $MOCK_URL, cluster in $BENCH_DIR, worker pid $(worker_pid)"

for phase in $PHASES; do
	case "$phase" in
	fresh) label="fresh outbox" ;;
	steady)
		step "steady state: history of ${HISTORY:-1000000} delivered messages"
		load_history
		label="steady state (${HISTORY:-1000000} delivered, analyzed)"
		;;
	*) die "unknown phase $phase (fresh, steady)" ;;
	esac
	step "$label: $COUNT commits of one message each, $GAP_MS ms apart (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	out=$("${as_user[@]}" perl "$BENCH_HOME/latency.pl" "$BENCH_DIR" "$PGPORT_B" bench \
		"$MOCK_URL" "$COUNT" "$GAP_MS") || die "latency.pl failed"
	grep -v '^RESULT' <<<"$out"
	IFS=$'\t' read -r _ med p90 p99 max < <(grep '^RESULT' <<<"$out")
	say "  median $med ms, p99 $p99 ms (target: median <= $TARGET ms, p99 <= $TARGET_P99 ms)"
	summary "Idle latency COMMIT -> request at the mock, $label ($COUNT msgs, ${GAP_MS} ms apart): median / p90 / p99" \
		"median <= $TARGET ms, p99 <= $TARGET_P99 ms" "$med / $p90 / $p99 ms" "bash bench/latency.sh"
done
