#!/usr/bin/env bash
# bench/memory.sh: the worker's private memory with ~1,000 requests in flight.
#
#   bash bench/memory.sh
#
# The mock answers every request after HOLD_MS (2,000) ms, so with
# whatsapp.max_inflight = MAX_INFLIGHT (1000) and MESSAGES (3,000) queued
# the worker keeps ~1,000 requests in flight for several seconds.  Every
# 100 ms the script samples requests_in_flight (whatsapp.status) and the
# worker's RssAnon (/proc/PID/status: private memory; VmRSS would also
# count the shared buffers the worker touched).  Reported: the largest
# RssAnon among the samples taken while at least 95% of max_inflight were
# in flight, next to the idle worker's RssAnon.
#
# Two variants, each on a freshly restarted server (so the worker starts
# with no memory of the previous one):
#   http   plain HTTP/1.1 to the Node mock: one connection per request
#   tls    https through nginx (ssl + http2 on the listen socket, proxy_pass
#          to the mock over kept-alive HTTP/1.1 connections), with a
#          throwaway CA and server certificate for 127.0.0.1 made with the
#          openssl CLI; whatsapp.ca_file names the CA.  nginx's access log
#          records $server_protocol, which shows whether libcurl negotiated
#          HTTP/2, and $connection, which counts the TLS connections.
#
# Environment: MAX_INFLIGHT (1000), MESSAGES (3000), HOLD_MS (2000),
# H2_STREAMS (nginx http2_max_concurrent_streams, 128 as nginx's default),
# VARIANTS ("http tls"), BENCH_EXTRA_CONF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAX_INFLIGHT=${MAX_INFLIGHT:-1000}
MESSAGES=${MESSAGES:-3000}
HOLD_MS=${HOLD_MS:-2000}
H2_STREAMS=${H2_STREAMS:-128}
VARIANTS=${VARIANTS:-http tls}
TARGET_MB=64

bench_init memory
machine_note
step "mock (answers after $HOLD_MS ms) and cluster (max_inflight $MAX_INFLIGHT)"
start_mock --no-record --latency "$HOLD_MS"
start_cluster "$MOCK_URL" "whatsapp.max_inflight = $MAX_INFLIGHT
whatsapp.http_timeout = '60s'"
say "mock $MOCK_URL, cluster in $BENCH_DIR"

restart_cluster() {
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" \
		-m fast -w -t 60 restart >/dev/null || die "the cluster did not restart"
	wait_worker
}

# measure LABEL: prints the samples' summary; sets RUN_MB
measure() {
	local label=$1 wpid idle out inflight rss maxrss=0 maxin=0 n=0 i left socks maxsocks=0 vmrss
	bpsql -q -o /dev/null -c "TRUNCATE whatsapp.message, whatsapp.log"
	mock_post reset
	wpid=$(worker_pid)
	sleep 1
	idle=$(rss_anon_kb "$wpid")
	bpsql -q -o /dev/null <<EOF
BEGIN;
SELECT count(whatsapp.wa_send('+4917' || pg_catalog.lpad(g::text, 9, '0'), 'Memory probe ' || g))
  FROM pg_catalog.generate_series(1, $MESSAGES) g;
COMMIT;
EOF
	for i in $(seq 1 1200); do
		inflight=$(bq "SELECT requests_in_flight FROM whatsapp.status WHERE database = current_database()")
		rss=$(rss_anon_kb "$wpid")
		[ "$inflight" -gt "$maxin" ] && maxin=$inflight
		if [ "$inflight" -ge $((MAX_INFLIGHT * 95 / 100)) ]; then
			n=$((n + 1))
			[ "$rss" -gt "$maxrss" ] && maxrss=$rss
			# (find fails when a descriptor closes under it: not an error here)
			socks=$({ find "/proc/$wpid/fd" -mindepth 1 -maxdepth 1 -lname 'socket:*' 2>/dev/null || true; } | wc -l)
			[ "$socks" -gt "$maxsocks" ] && maxsocks=$socks
			vmrss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$wpid/status")
		fi
		left=$(pending_count) ||
			die "the server stopped answering"
		[ "$left" -eq 0 ] && break
		sleep 0.1
	done
	[ "$left" -eq 0 ] || die "$left messages still queued or sending"
	[ "$(bq "SELECT count(*) FROM whatsapp.message WHERE state = 'sent'")" = "$MESSAGES" ] ||
		die "not every message ended 'sent'"
	[ "$n" -gt 0 ] || die "never saw $((MAX_INFLIGHT * 95 / 100)) requests in flight (at most $maxin)"
	RUN_MB=$(awk -v k="$maxrss" 'BEGIN { printf "%.1f", k / 1024 }')
	printf '  %-5s RssAnon %s MB with >= %d in flight (max %d in flight, %d samples; idle worker %.1f MB; VmRSS %.1f MB; %d sockets open)\n' \
		"$label" "$RUN_MB" $((MAX_INFLIGHT * 95 / 100)) "$maxin" "$n" \
		"$(awk -v k="$idle" 'BEGIN { print k / 1024 }')" \
		"$(awk -v k="$vmrss" 'BEGIN { print k / 1024 }')" "$maxsocks"
}

for variant in $VARIANTS; do
	case "$variant" in
	http)
		step "plain HTTP/1.1 to the mock: $MESSAGES messages, answers after $HOLD_MS ms"
		measure http
		summary "Worker RssAnon, $MAX_INFLIGHT requests in flight, plain HTTP/1.1" \
			"<= $TARGET_MB MB" "$RUN_MB MB" "bash bench/memory.sh"
		;;
	tls)
		step "TLS through nginx (http2 offered): $MESSAGES messages, answers after $HOLD_MS ms"
		start_nginx
		say "  nginx $NGINX_URL -> $MOCK_URL; http2_max_concurrent_streams $H2_STREAMS"
		bpsql -q -o /dev/null -c "ALTER SYSTEM SET whatsapp.api_url = '$NGINX_URL'" \
			-c "ALTER SYSTEM SET whatsapp.ca_file = '$NGINX_DIR/ca.crt'"
		restart_cluster
		measure tls
		protos=$(awk '{ print $1 }' "$NGINX_DIR/access.log" | sort | uniq -c | awk '{ printf "%s%s x %s", sep, $2, $1; sep = ", " }')
		conns=$(awk '{ print $2 }' "$NGINX_DIR/access.log" | sort -u | wc -l)
		say "  nginx saw: $protos over $conns TLS connections"
		summary "Worker RssAnon, $MAX_INFLIGHT requests in flight, TLS via nginx ($protos, $conns connections)" \
			"<= $TARGET_MB MB" "$RUN_MB MB" "bash bench/memory.sh"
		;;
	*) die "unknown variant $variant (http, tls)" ;;
	esac
done
