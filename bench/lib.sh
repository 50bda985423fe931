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
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

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
	[ -x "$PG_BIN/postgres" ] || die "no PostgreSQL 15 in $PG_BIN"
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
	wait_worker
}

# psql on the bench database, as the cluster's owner (a superuser).
bpsql() {
	"${as_user[@]}" "$PG_BIN/psql" -X -h "$BENCH_DIR" -p "$PGPORT_B" -d bench \
		-v ON_ERROR_STOP=1 "$@"
}
bq() { bpsql -At -c "$1"; }

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
