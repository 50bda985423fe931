#!/usr/bin/env bash
# bench/retention.sh: what a turn of the content purge costs, with and
# without a long history.
#
#   bash bench/retention.sh
#
# The worker's own purge statements are timed by auto_explain (preloaded,
# log_nested_statements on, log_min_duration 0, log_analyze on), which logs
# each statement's duration and plan to the server log.  Two rounds:
#
#   empty    DUE messages older than content_retention, nothing else;
#   history  the same, after HISTORY more messages: half already purged
#            (older than the retention), half young (within it, so still
#            in the partial index but not due).
#
# A reload starts a purge; the worker then takes 500 rows per table per
# turn, a turn every 200 ms, until none is due.  The script prints, per
# round, the number of message-purge statements and their median and
# maximum duration, the minimum (the last turn, which finds nothing due:
# what every minute costs once the history is purged), and whether each
# used message_retention_idx.  A purge that stays cheap with history has
# about the same per-turn time in both rounds; a turn's time is mostly the
# writing of its 500 rows, which is noisy on a loaded machine.
#
# Environment: HISTORY (1000000), DUE (5000), PG_BIN.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

HISTORY=${HISTORY:-1000000}
DUE=${DUE:-5000}

bench_init retention
start_mock
BENCH_PRELOAD_EXTRA=auto_explain
start_cluster "$MOCK_URL" "auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
auto_explain.log_analyze = on
auto_explain.log_timing = on
log_min_messages = log"

# due_rows N: N delivered messages 100 days old, content still there.
due_rows() {
	bq "INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state, created_at, sent_at)
	    SELECT 1, '+1213555' || lpad((g % 10000)::text, 4, '0'), 'text',
	           jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'old ' || g)),
	           'delivered', now() - interval '100 days', now() - interval '100 days'
	      FROM generate_series(1, $1) g" >/dev/null
}

# round NAME: purge the due rows, report the statements' durations.
round() {
	local name=$1 from n
	bq "VACUUM ANALYZE whatsapp.message" >/dev/null
	from=$(stat -c %s "$BENCH_DIR/server.log")
	bq "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 1 600); do
		n=$(bq "SELECT count(*) FROM whatsapp.message WHERE payload IS NOT NULL AND created_at < now() - interval '95 days'")
		[ "$n" = 0 ] && break
		sleep 0.2
	done
	[ "$n" = 0 ] || die "the purge did not finish in 120 s ($n rows left)"
	sleep 1
	tail -c +"$((from + 1))" "$BENCH_DIR/server.log" | awk '
		/duration: [0-9.]+ ms  plan:/ { if (k) print d, idx; d = $0; sub(/.*duration: /, "", d); sub(/ ms.*/, "", d); k = 0; idx = 0; next }
		/Query Text: UPDATE whatsapp.message m/ { k = 1; next }
		k && /message_retention_idx/ { idx = 1 }
		END { if (k) print d, idx }' | sort -n >"$BENCH_DIR/$name.durations"
	n=$(wc -l <"$BENCH_DIR/$name.durations")
	[ "$n" -gt 0 ] || die "$name: no purge statement logged"
	local median max min used
	median=$(awk -v m=$(((n + 1) / 2)) 'NR == m { print $1 }' "$BENCH_DIR/$name.durations")
	max=$(tail -n 1 "$BENCH_DIR/$name.durations" | cut -d' ' -f1)
	min=$(head -n 1 "$BENCH_DIR/$name.durations" | cut -d' ' -f1)
	used=$(awk '$2 == 1' "$BENCH_DIR/$name.durations" | wc -l)
	say "$name: $n message purge statements, median $median ms, max $max ms, min $min ms (the last turn, with nothing due), $used of them via message_retention_idx"
	summary "purge turn, messages ($name)" "-" "$median ms median" "bash bench/retention.sh"
}

step "round 1: $DUE due messages, no other history"
due_rows "$DUE"
round empty

step "round 2: $DUE due messages after $HISTORY messages of history"
bq "INSERT INTO whatsapp.message (account_id, recipient, kind, payload, state, created_at, sent_at)
    SELECT 1, '+1213555' || lpad((g % 10000)::text, 4, '0'), 'text',
           CASE WHEN g % 2 = 0 THEN NULL
                ELSE jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'young ' || g)) END,
           'delivered',
           CASE WHEN g % 2 = 0 THEN now() - interval '200 days' ELSE now() - interval '30 days' END
             + make_interval(secs => g % 86400),
           now() - interval '30 days'
      FROM generate_series(1, $HISTORY) g" >/dev/null
due_rows "$DUE"
round history
