# bench/lib.sh: helpers shared by the benchmark scripts.  Sourced, not run.
#
# Each benchmark starts its own throwaway PostgreSQL cluster (as the
# unprivileged user wa_test when run as root: PostgreSQL refuses root) and
# its own mock Cloud API, in a fresh directory under /tmp, and removes
# everything on exit, also on error or Ctrl-C.  All traffic is loopback:
# the cluster listens on a Unix socket only, the mock on 127.0.0.1.
#
# The extension must be built and installed (make && make install); the
# scripts do not build it, so that a colleague's half-finished edit cannot
# change what is measured in the middle of a run.

set -euo pipefail

BENCH_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_HOME/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RUN_USER=${RUN_USER:-wa_test}
CLK_TCK=$(getconf CLK_TCK)

# Never let a proxy setting route benchmark traffic anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export no_proxy='127.0.0.1,localhost' NO_PROXY='127.0.0.1,localhost'

as_user=()
BENCH_DIR=
PGPORT_B=
MOCK_URL=
_cleanups=()

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
die() {
	printf 'bench: %s\n' "$*" >&2
	# a crashed server process is the usual reason: say so
	if [ -n "$BENCH_DIR" ] && [ -f "$BENCH_DIR/server.log" ]; then
		grep -E 'terminated by signal|PANIC|was terminated|exited with exit code' \
			"$BENCH_DIR/server.log" | head -n 5 | sed 's/^/bench: server log: /' >&2
	fi
	exit 1
}

# Run COMMAND on exit, last registered first.
at_exit() { _cleanups=("$*" "${_cleanups[@]}"); }

_run_cleanups() {
	local rc=$? c
	trap - EXIT INT TERM
	for c in "${_cleanups[@]}"; do
		eval "$c" >/dev/null 2>&1 || true
	done
	exit "$rc"
}

# bench_init NAME: user, temporary directory, exit trap.
bench_init() {
	local name=$1
	[ -x "$PG_BIN/postgres" ] || die "no PostgreSQL in $PG_BIN"
	[ -f "$("$PG_BIN/pg_config" --pkglibdir)/whatsapp.so" ] ||
		die "the extension is not installed: cd $REPO && make && make install"
	command -v node >/dev/null || die "node is missing (test/install_deps.sh installs it)"
	command -v curl >/dev/null || die "curl is missing"
	if [ "$(id -u)" -eq 0 ]; then
		id -u "$RUN_USER" >/dev/null 2>&1 ||
			useradd --system --user-group --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin "$RUN_USER"
		as_user=(runuser -u "$RUN_USER" --)
	fi
	BENCH_DIR=$(mktemp -d "/tmp/whatsapp-bench-$name.XXXXXX")
	chmod 755 "$BENCH_DIR"
	[ "${#as_user[@]}" -eq 0 ] || chown "$RUN_USER:" "$BENCH_DIR"
	if [ -z "${KEEP_BENCH_TMP:-}" ]; then
		at_exit "rm -rf '$BENCH_DIR'"
	else
		at_exit "echo 'kept $BENCH_DIR' >&2"
	fi
	trap _run_cleanups EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port"
}

# start_mock [mock args...]: the project's Node mock, as the unprivileged
# user; sets MOCK_URL.
start_mock() {
	local port
	mkdir -p "$BENCH_DIR/mock"
	[ "${#as_user[@]}" -eq 0 ] || chown "$RUN_USER:" "$BENCH_DIR/mock"
	at_exit "bash '$REPO/test/mock/stop.sh' '$BENCH_DIR/mock'"
	port=$("${as_user[@]}" bash "$REPO/test/mock/start.sh" "$BENCH_DIR/mock" "$@") ||
		die "the mock did not start"
	MOCK_URL=http://127.0.0.1:$port
}

mock_pid() { cat "$BENCH_DIR/mock/mock.pid"; }
mock_get() { curl -sf --max-time 30 "$MOCK_URL/_mock/$1"; }
mock_post() {
	local body=${2:-'{}'}
	curl -sf --max-time 30 -X POST -H 'Content-Type: application/json' -d "$body" \
		"$MOCK_URL/_mock/$1" >/dev/null
}

# The mock's CPU time so far, in ms (user + system), from /_mock/cpu.
mock_cpu_ms() {
	mock_get cpu | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
		const c=JSON.parse(s);console.log(((c.user_us+c.system_us)/1000).toFixed(1));})'
}

# mock_counts_field FIELD: one field of /_mock/counts (by_callback left out).
mock_counts_field() {
	mock_get counts | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
		const c=JSON.parse(s);console.log(c[process.argv[1]]);})' "$1"
}

# start_cluster API_URL [extra postgresql.conf lines]: a cluster serving
# database "bench", the extension created, one account "bench" (max_mps
# 100000) that is the default.  Sets PGPORT_B.
start_cluster() {
	local api_url=$1 extra=${2:-}
	PGPORT_B=$(free_port)
	"${as_user[@]}" "$PG_BIN/initdb" -D "$BENCH_DIR/data" -A trust -E UTF8 \
		--locale=C.UTF-8 >"$BENCH_DIR/initdb.log" 2>&1 || {
		cat "$BENCH_DIR/initdb.log" >&2
		die "initdb failed"
	}
	cat >>"$BENCH_DIR/data/postgresql.conf" <<EOF
# --- bench/lib.sh
listen_addresses = ''
port = $PGPORT_B
unix_socket_directories = '$BENCH_DIR'
shared_preload_libraries = 'whatsapp${BENCH_PRELOAD_EXTRA:+,$BENCH_PRELOAD_EXTRA}'
whatsapp.database = 'bench'
whatsapp.api_url = '$api_url'
max_wal_size = 2GB
$extra
${BENCH_EXTRA_CONF:-}
EOF
	at_exit "${as_user[*]} '$PG_BIN/pg_ctl' -D '$BENCH_DIR/data' -m immediate -w stop"
	# BENCH_CORE=1: let a crashing server process leave a core file in the data directory
	[ -z "${BENCH_CORE:-}" ] || ulimit -c unlimited
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" \
		-w -t 60 start >/dev/null || {
		tail -n 40 "$BENCH_DIR/server.log" >&2
		die "the cluster did not start"
	}
	"${as_user[@]}" "$PG_BIN/createdb" -h "$BENCH_DIR" -p "$PGPORT_B" bench
	bpsql -q -o /dev/null <<'EOF'
SET client_min_messages = warning;
CREATE EXTENSION whatsapp CASCADE;
SELECT whatsapp.wa_account_set('bench', '1000000001', 'bench-not-a-real-token',
                               max_mps => 100000);
EOF
	# The launcher retries a database that did not exist only every 30 s:
	# restart instead of waiting.
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" \
		-m fast -w -t 60 restart >/dev/null || die "the cluster did not restart"
	# (experiments: BENCH_EXTRA_CONF="whatsapp.database = 'postgres'" and
	# BENCH_NO_WORKER=1 give a cluster where nothing delivers)
	[ -n "${BENCH_NO_WORKER:-}" ] || wait_worker
}

# start_nginx: a TLS front for the mock.  A throwaway CA and a server
# certificate for 127.0.0.1 (openssl CLI), nginx as the unprivileged user
# with ssl + http2 on its listen socket and proxy_pass to the mock over
# kept-alive HTTP/1.1.  Sets NGINX_URL and NGINX_DIR (ca.crt, access.log
# with "$server_protocol $connection $status" per request).
# H2_STREAMS sets http2_max_concurrent_streams (nginx's default: 128).
start_nginx() {
	local d=$BENCH_DIR/nginx port mock_port=${MOCK_URL##*:}
	mkdir -p "$d/tmp"
	port=$(free_port)
	# a throwaway CA and a server certificate for 127.0.0.1
	(
		cd "$d"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout ca.key -out ca.crt -days 2 -subj '/CN=whatsapp bench CA' \
			-addext 'basicConstraints=critical,CA:TRUE' \
			-addext 'keyUsage=critical,keyCertSign,cRLSign'
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout server.key -out server.csr -subj '/CN=127.0.0.1'
		printf '%s\n' 'subjectAltName=IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
			'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext
		openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-days 2 -extfile server.ext -out server.crt
	) >"$BENCH_DIR/openssl.log" 2>&1 || {
		cat "$BENCH_DIR/openssl.log" >&2
		die "openssl failed"
	}
	cat >"$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
	log_format proto '\$server_protocol \$connection \$status';
	access_log $d/access.log proto;
	client_body_temp_path $d/tmp/body;
	proxy_temp_path $d/tmp/proxy;
	fastcgi_temp_path $d/tmp/fastcgi;
	uwsgi_temp_path $d/tmp/uwsgi;
	scgi_temp_path $d/tmp/scgi;
	upstream mock {
		server 127.0.0.1:$mock_port;
		keepalive 1024;
		keepalive_requests 1000000;
	}
	server {
		listen 127.0.0.1:$port ssl http2;
		ssl_certificate $d/server.crt;
		ssl_certificate_key $d/server.key;
		http2_max_concurrent_streams ${H2_STREAMS:-128};
		keepalive_requests 1000000;
		keepalive_timeout 75s;
		location / {
			proxy_pass http://mock;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_read_timeout 120s;
		}
	}
}
EOF
	[ "${#as_user[@]}" -eq 0 ] || chown -R "$RUN_USER:" "$d"
	at_exit "kill -QUIT \$(cat '$d/nginx.pid')"
	"${as_user[@]}" "${NGINX:-/usr/sbin/nginx}" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" ||
		die "nginx did not start: $(cat "$d/error.log")"
	curl -sf --cacert "$d/ca.crt" "https://127.0.0.1:$port/_mock/health" >/dev/null ||
		die "nginx does not answer over TLS"
	: >"$d/access.log"	# count only the worker's requests
	NGINX_URL=https://127.0.0.1:$port
	NGINX_DIR=$d
}

# start_responder: nginx answering every request itself, the way the
# Cloud API answers a send: HTTP 200, Content-Type application/json, Meta's
# shape {"messaging_product", "contacts", "messages": [{"id": wamid}]} with a
# wamid unique per request (built from nginx's $request_id, 32 random hex
# digits).  Plain HTTP/1.1 on 127.0.0.1 with kept-alive connections, one
# nginx worker process.  nginx does not parse the request body, so the
# contacts entry cannot echo the recipient: it is left empty, and the
# worker keeps the wa_id that wa_send stored.  This costs the machine far
# less CPU per answer than the Node mock (which parses the body, checks
# the request and keeps counters); Meta's CPU is not on the database
# server in production.  Sets RESPONDER_URL and RESPONDER_DIR (access.log:
# "$status $request_length" per request).
start_responder() {
	local d=$BENCH_DIR/responder port
	[ -x "${NGINX:-/usr/sbin/nginx}" ] ||
		die "nginx is missing: apt-get install nginx-light (or ANSWER=mock for the Node mock)"
	mkdir -p "$d/tmp"
	port=$(free_port)
	cat >"$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
	log_format answered '\$status \$request_length';
	access_log $d/access.log answered buffer=64k flush=1s;
	client_body_temp_path $d/tmp/body;
	proxy_temp_path $d/tmp/proxy;
	fastcgi_temp_path $d/tmp/fastcgi;
	uwsgi_temp_path $d/tmp/uwsgi;
	scgi_temp_path $d/tmp/scgi;
	keepalive_requests 1000000;
	keepalive_timeout 75s;
	client_body_buffer_size 64k;
	server {
		listen 127.0.0.1:$port;
		location / {
			default_type application/json;
			return 200 '{"messaging_product":"whatsapp","contacts":[],"messages":[{"id":"wamid.HBgM\$request_id"}]}';
		}
	}
}
EOF
	[ "${#as_user[@]}" -eq 0 ] || chown -R "$RUN_USER:" "$d"
	at_exit "kill -QUIT \$(cat '$d/nginx.pid')"
	"${as_user[@]}" "${NGINX:-/usr/sbin/nginx}" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" ||
		die "nginx did not start: $(cat "$d/error.log")"
	curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' \
		"http://127.0.0.1:$port/v21.0/1000000001/messages" ||
		die "the nginx responder does not answer"
	RESPONDER_URL=http://127.0.0.1:$port
	RESPONDER_DIR=$d
}

# psql on the bench database, as the cluster's owner (a superuser).
bpsql() {
	"${as_user[@]}" "$PG_BIN/psql" -X -h "$BENCH_DIR" -p "$PGPORT_B" -d bench \
		-v ON_ERROR_STOP=1 "$@"
}
bq() { bpsql -At -c "$1"; }

# pending_count: the messages still queued or sending.  From 0.3 on, the
# outbox's partial indexes on those states name the generated column
# phase, not state, and a count by state alone reads the whole outbox:
# polled four times a second in the steady state (1,000,000 rows), that
# took a large part of a core from the worker.  So the count names phase
# when the column exists (builds before 0.3 have none).
pending_count() {
	local cond="state IN ('queued', 'sending')"
	[ "$(bq "SELECT count(*) FROM pg_catalog.pg_attribute
		WHERE attrelid = 'whatsapp.message'::regclass AND attname = 'phase'
		  AND NOT attisdropped")" = 1 ] && cond="$cond AND phase IS NOT NULL"
	bq "SELECT count(*) FROM whatsapp.message WHERE $cond"
}

# Wait until the worker serves the database and is ready to deliver.
wait_worker() {
	local i st
	for i in $(seq 1 300); do
		st=$(bq "SELECT worker_state FROM whatsapp.status WHERE database = current_database()" 2>/dev/null || true)
		case "$st" in
		waiting | delivering) return 0 ;;
		esac
		sleep 0.1
	done
	tail -n 40 "$BENCH_DIR/server.log" >&2
	die "the worker did not become ready (state: ${st:-none})"
}

worker_pid() { bq "SELECT worker_pid FROM whatsapp.status WHERE database = current_database()"; }

# CPU time (user + system) of a process so far, in ms, from /proc/PID/stat.
proc_cpu_ms() {
	local rest
	rest=$(sed 's/^.*) //' "/proc/$1/stat")
	# after "pid (comm) ": field 1 is state; utime and stime are 12 and 13
	awk -v tck="$CLK_TCK" '{ printf "%.0f\n", ($12 + $13) * 1000 / tck }' <<<"$rest"
}

# CPU time (user + system) of the postmaster's exited children so far, in
# ms: the backends of finished sessions, autovacuum workers, ...
children_cpu_ms() {
	local rest
	rest=$(sed 's/^.*) //' "/proc/$(head -n 1 "$BENCH_DIR/data/postmaster.pid")/stat")
	awk -v tck="$CLK_TCK" '{ printf "%.0f\n", ($14 + $15) * 1000 / tck }' <<<"$rest"
}

# RssAnon of a process, in kB.
rss_anon_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }

# median of the arguments (numbers)
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) exit 1
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# One line of the summary that bench/run_all.sh turns into a table.
#   summary METRIC TARGET MEASURED COMMAND
summary() { printf 'SUMMARY\t%s\t%s\t%s\t%s\n' "$@"; }

# Busy and total CPU time of the whole machine so far, in ms: "BUSY TOTAL".
machine_cpu_ms() {
	awk -v tck="$CLK_TCK" '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i
		printf "%.0f %.0f\n", (t - $5 - $6) * 1000 / tck, t * 1000 / tck; exit }' /proc/stat
}

# A note about the machine, printed at the start of each benchmark.
machine_note() {
	say "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo)," \
		"load average $(cut -d' ' -f1-3 /proc/loadavg); $("$PG_BIN/postgres" --version)"
}

# load_history [ROWS]: the steady state of a server that has been running:
# ROWS (HISTORY, default 1,000,000) delivered messages of the bench account
# spread over the last 20 days, with realistic values (200,000 recipients,
# a unique wamid each, sent 60-140 ms and delivered 1-3 s after the claim),
# one 'http' log row each, then VACUUM ANALYZE and a CHECKPOINT.  One
# INSERT ... SELECT per table: about 20 s for 1,000,000 on a quiet
# 2-core machine.  Autovacuum stays on at its defaults (and the outbox's
# own reloptions), so it analyzes the outbox again during the runs as it
# would in production.  Sets HISTORY_SECONDS.
load_history() {
	local rows=${1:-${HISTORY:-1000000}} t0
	t0=$(date +%s.%N)
	bpsql -q -o /dev/null -v rows="$rows" <<'EOF2'
SET synchronous_commit = off;
INSERT INTO whatsapp.message (account_id, recipient, wa_id, kind, payload, state,
        attempts, next_attempt_at, http_status, wamid, created_at, claimed_at,
        sent_at, delivered_at)
SELECT a.id, '+4917' || lpad(r::text, 8, '0'), '4917' || lpad(r::text, 8, '0'), 'text',
       jsonb_build_object('type', 'text', 'text', jsonb_build_object('body',
           'Your order S' || lpad(g::text, 7, '0') || ' has shipped and arrives tomorrow.')),
       'delivered', 1, t, 200,
       'wamid.HBgMNDkxNzAw' || upper(md5(g::text)) || 'FQIAEhgU',
       t, t, t + (60 + g % 80) * interval '1 ms', t + (1 + g % 3) * interval '1 s'
  FROM whatsapp.account a,
       generate_series(1, :rows) g,
       LATERAL (SELECT (g::bigint * 7919) % 200000 AS r,
                       now() - interval '20 days' + g * (interval '20 days' / :rows) AS t) x
 WHERE a.name = 'bench';
INSERT INTO whatsapp.log (at, message_id, attempt, event, http_status, latency_ms)
SELECT sent_at, id, 1, 'http', 200, extract(epoch FROM sent_at - claimed_at) * 1000
  FROM whatsapp.message WHERE state = 'delivered';
VACUUM ANALYZE whatsapp.message;
VACUUM ANALYZE whatsapp.log;
CHECKPOINT;
EOF2
	HISTORY_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
	say "  history: $rows delivered messages and their log rows, analyzed, in $HISTORY_SECONDS s"
}
