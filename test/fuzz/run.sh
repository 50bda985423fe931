#!/usr/bin/env bash
# test/fuzz/run.sh: fuzz the webhook parser, the signature header parser and
# the phone parser against a throwaway cluster, then check that the server
# stayed up and the database is consistent.
#
#   bash test/fuzz/run.sh                 # 1,000,000 inputs per parser
#   FUZZ_N=20000 bash test/fuzz/run.sh    # a short run
#
# The extension must be installed in the PostgreSQL that PG_BIN names.  As
# root, the server runs as the user wa_test (created when missing).  The
# cluster listens on a Unix socket in its own /tmp directory only, with
# shared_preload_libraries = 'whatsapp' and no worker (whatsapp.database is
# empty: the worker would move the messages the payloads' statuses name).
#
# Environment:
#   FUZZ_N          inputs per parser (1000000)
#   FUZZ_MODES      which parsers ("webhook signature phone")
#   FUZZ_LATIN1_N   inputs of the webhook and phone parsers in a LATIN1
#                   database as well, where they get arbitrary bytes
#                   (FUZZ_N / 10; 0: none)
#   FUZZ_SEED       random seed of the first mode, +1 for each next one
#                   (default: from the clock; printed)
#   PG_BIN          PostgreSQL's binaries (/usr/lib/postgresql/15/bin), e.g.
#                   a --enable-cassert build
#   VALGRIND=1      run the server under valgrind (memcheck); use a small
#                   FUZZ_N.  VALGRIND_SUPP names a suppression file, such as
#                   src/tools/valgrind.supp of PostgreSQL's source tree.
#   FUZZ_OUT        where findings go (test/fuzz/out/RUN-ID)
#   KEEP_FUZZ_TMP=1 keep the cluster directory
#
# Prints each mode's figures, the server's health and the consistency
# checks, and a summary table; exits non-zero on any crash, assertion
# failure, unexpected outcome, property failure, valgrind error or failed
# check.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
FUZZ_N=${FUZZ_N:-1000000}
FUZZ_MODES=${FUZZ_MODES:-webhook signature phone}
FUZZ_LATIN1_N=${FUZZ_LATIN1_N:-$((FUZZ_N / 10))}
FUZZ_SEED=${FUZZ_SEED:-$(( $(date +%s) % 1000000007 ))}
VALGRIND=${VALGRIND:-0}
run_id=$(date +%Y%m%d-%H%M%S)
FUZZ_OUT=${FUZZ_OUT:-$here/out/$run_id}
TEST_USER=wa_test

say() { printf '%s\n' "$*"; }
die() { say "run.sh: $*" >&2; exit 3; }

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
[ -x "$PG_BIN/postgres" ] || die "no postgres in $PG_BIN (set PG_BIN)"
[ -f "$("$PG_BIN/pg_config" --pkglibdir)/whatsapp.so" ] ||
	die "the extension is not installed in $PG_BIN/.. (make PG_CONFIG=$PG_BIN/pg_config install)"

# ---- the driver
make -s -C "$here" PG_CONFIG="$PG_BIN/pg_config" wafuzz || die "could not build wafuzz"

# ---- the cluster
dir=$(mktemp -d /tmp/whatsapp-fuzz.XXXXXX) || die "mktemp failed"
chmod 755 "$dir"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
	if ! id -u "$TEST_USER" >/dev/null 2>&1; then
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$TEST_USER" || die "could not create $TEST_USER"
	fi
	chown "$TEST_USER:" "$dir"
	as_user=(runuser -u "$TEST_USER" --)
fi
mkdir -p "$FUZZ_OUT"
[ "${#as_user[@]}" -gt 0 ] && chown "$TEST_USER:" "$FUZZ_OUT"

port=$((20000 + RANDOM % 30000))
log=$dir/server.log
vg_pid=
cleanup() {
	if [ -f "$dir/data/postmaster.pid" ]; then
		# under valgrind a fast stop, so that every process writes its report
		"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -t 600 -w \
			-m "$([ -n "$vg_pid" ] && echo fast || echo immediate)" stop >/dev/null 2>&1
	fi
	[ -n "$vg_pid" ] && wait "$vg_pid" 2>/dev/null
	if [ -n "${KEEP_FUZZ_TMP:-}" ] || [ "${status:-1}" -ne 0 ]; then
		say "kept $dir"
	else
		rm -rf "$dir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${as_user[@]}" "$PG_BIN/initdb" -D "$dir/data" -A trust -N -E UTF8 --locale=C.UTF-8 \
	>"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; die "initdb failed"; }
cat >>"$dir/data/postgresql.conf" <<EOF

# test/fuzz/run.sh: a throwaway cluster for fuzzing
listen_addresses = ''
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'whatsapp'
whatsapp.database = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
log_line_prefix = '%m [%p] %q%a '
log_min_messages = warning
EOF

if [ "$VALGRIND" = 1 ]; then
	vg_args=(valgrind --trace-children=yes --error-limit=no --num-callers=30
		--leak-check=no --read-var-info=yes --track-origins=yes
		--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END
		--log-file="$dir/valgrind.%p.log")
	[ -n "${VALGRIND_SUPP:-}" ] && vg_args+=(--suppressions="$VALGRIND_SUPP")
	"${as_user[@]}" "${vg_args[@]}" "$PG_BIN/postgres" -D "$dir/data" >"$log" 2>&1 &
	vg_pid=$!
	for _ in $(seq 300); do
		"$PG_BIN/pg_isready" -q -h "$dir" -p "$port" && break
		sleep 1
	done
else
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$log" -w -t 60 start >/dev/null ||
		{ cat "$log"; die "the server did not start"; }
fi
"$PG_BIN/pg_isready" -q -h "$dir" -p "$port" || { cat "$log"; die "the server did not start"; }
postmaster_pid=$(head -1 "$dir/data/postmaster.pid")

db_user=$([ "${#as_user[@]}" -gt 0 ] && echo "$TEST_USER" || id -un)
conn_for() { echo "host=$dir port=$port dbname=$1 user=$db_user"; }
conninfo=$(conn_for fuzz)
secret=$(openssl rand -hex 24)
secret2=$(openssl rand -hex 24)
secret3=$(openssl rand -hex 24)
psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$conninfo" "$@"; }

# fuzz (UTF-8) for every parser; fuzz_latin1 for the webhook and phone
# parsers with arbitrary bytes
dbs=(fuzz)
"$PG_BIN/createdb" -h "$dir" -p "$port" -U "$db_user" fuzz || die "createdb failed"
if [ "$FUZZ_LATIN1_N" -gt 0 ]; then
	"$PG_BIN/createdb" -h "$dir" -p "$port" -U "$db_user" -E LATIN1 --locale=C -T template0 \
		fuzz_latin1 || die "createdb failed"
	dbs+=(fuzz_latin1)
fi
for db in "${dbs[@]}"; do
	PGCLIENTENCODING=UTF8 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$(conn_for "$db")" \
		-v secret="$secret" -v secret2="$secret2" -v secret3="$secret3" \
		-f "$here/setup.sql" >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log"; die "setup.sql failed in $db"; }
done

say "cluster $dir (PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}')," \
	"$("$PG_BIN/pg_config" --configure | grep -q enable-cassert && echo 'assertions on' || echo 'no assertions')$([ "$VALGRIND" = 1 ] && echo ', under valgrind'))"
say "findings, if any, go to $FUZZ_OUT"

# ---- the runs
declare -A m_inputs m_secs m_rate m_crashes m_hangs m_failures m_rc stored
labels=()
seed=$FUZZ_SEED
# run_mode LABEL DATABASE MODE INPUTS ENCODING
run_mode() {
	local label=$1 db=$2 mode=$3 n=$4 enc=$5 out rc s extra=()
	say ""
	say "==== $label: $n inputs, seed $seed"
	[ "$VALGRIND" = 1 ] && extra=(-t 3600 -b 20)
	out=$(WAFUZZ_SECRET=$secret WAFUZZ_VALID_SECRETS=$secret2 WAFUZZ_OTHER_SECRETS=$secret3 \
		"$here/wafuzz" "$mode" -d "$(conn_for "$db")" -n "$n" -s "$seed" -E "$enc" \
		-c "$here/corpus" -o "$FUZZ_OUT" "${extra[@]}")
	rc=$?
	say "$out"
	labels+=("$label")
	m_rc[$label]=$rc
	m_inputs[$label]=$(sed -n 's/^inputs: //p' <<<"$out")
	m_secs[$label]=$(sed -n 's/^seconds: //p' <<<"$out")
	m_rate[$label]=$(sed -n 's/^inputs per second: //p' <<<"$out")
	m_crashes[$label]=$(sed -n 's/^crashes: //p' <<<"$out")
	m_hangs[$label]=$(sed -n 's/^hangs: //p' <<<"$out")
	m_failures[$label]=$(sed -n 's/^failures: //p' <<<"$out")
	s=$(sed -n 's/^payloads stored by committed batches: //p' <<<"$out")
	stored[$db]=$(( ${stored[$db]:-0} + ${s:-0} ))
	seed=$((seed + 1))
}
for mode in $FUZZ_MODES; do
	run_mode "$mode" fuzz "$mode" "$FUZZ_N" UTF8
done
if [ "$FUZZ_LATIN1_N" -gt 0 ]; then
	for mode in $FUZZ_MODES; do
		[ "$mode" = signature ] && continue
		run_mode "$mode/LATIN1" fuzz_latin1 "$mode" "$FUZZ_LATIN1_N" LATIN1
	done
fi

# ---- the server afterwards
say ""
say "==== the server"
problems=0
if "$PG_BIN/pg_isready" -q -h "$dir" -p "$port" && psql_ -c 'SELECT 1' >/dev/null; then
	say "up: yes"
else
	say "up: NO"
	problems=$((problems + 1))
fi
now_pid=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null)
if [ "$now_pid" = "$postmaster_pid" ]; then
	say "same postmaster: yes (pid $postmaster_pid)"
else
	say "same postmaster: NO ($postmaster_pid, now $now_pid)"
	problems=$((problems + 1))
fi
count_log() { grep -cE "$1" "$log"; }
traps=$(count_log 'TRAP:')
signals=$(count_log 'terminated by signal|was terminated by exception')
exits=$(count_log 'exited with exit code [1-9]')
panics=$(count_log 'PANIC:')
restarts=$(count_log 'all server processes terminated; reinitializing')
say "assertion failures (TRAP) in the server log: $traps"
say "backends terminated by a signal: $signals"
say "backends exited with an error code: $exits"
say "PANICs: $panics"
say "crash restarts: $restarts"
problems=$((problems + traps + signals + exits + panics + restarts))
if grep -qF -e "$secret" -e "$secret2" -e "$secret3" "$log"; then
	say "an app secret is in the server log: YES"
	problems=$((problems + 1))
else
	say "an app secret is in the server log: no"
fi
vg_errors=
if [ "$VALGRIND" = 1 ]; then
	vg_errors=$(cat "$dir"/valgrind.*.log 2>/dev/null | grep -c 'VALGRINDERROR-BEGIN')
	say "valgrind errors: $vg_errors (in $(ls "$dir"/valgrind.*.log | wc -l) process logs)"
	if [ "$vg_errors" -gt 0 ]; then
		cp "$dir"/valgrind.*.log "$FUZZ_OUT/" 2>/dev/null
		grep -l VALGRINDERROR-BEGIN "$dir"/valgrind.*.log | head -3 | xargs -r sed -n '/VALGRINDERROR-BEGIN/,/VALGRINDERROR-END/p' | head -80
	fi
	problems=$((problems + vg_errors))
fi

failed_checks=0
for db in "${dbs[@]}"; do
	say ""
	say "==== consistency of $db"
	checks=$("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$(conn_for "$db")" -A -t \
		-v stored="${stored[$db]:-0}" -v secret="$secret" -v secret2="$secret2" \
		-f "$here/check.sql" 2>&1)
	crc=$?
	say "$checks"
	f=$(sed -n 's/^checks failed: //p' <<<"$checks")
	if [ "$crc" -ne 0 ] || [ "${f:-x}" != 0 ]; then
		problems=$((problems + 1))
		failed_checks=$((failed_checks + ${f:-1}))
	fi
done

# ---- summary
say ""
say "==== summary (seed $FUZZ_SEED, PG_BIN $PG_BIN)"
printf '| %-16s | %9s | %7s | %8s | %7s | %5s | %8s |\n' parser inputs seconds inputs/s crashes hangs failures
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ------------------ ----------- --------- ---------- --------- ------- ----------
for label in "${labels[@]}"; do
	printf '| %-16s | %9s | %7s | %8s | %7s | %5s | %8s |\n' "$label" "${m_inputs[$label]:-?}" \
		"${m_secs[$label]:-?}" "${m_rate[$label]:-?}" "${m_crashes[$label]:-?}" \
		"${m_hangs[$label]:-?}" "${m_failures[$label]:-?}"
	[ "${m_rc[$label]}" -ne 0 ] && problems=$((problems + 1))
done
say "assertion failures: $traps; backends lost: $((signals + exits)); server up afterwards:" \
	"$([ "$now_pid" = "$postmaster_pid" ] && echo yes || echo no);" \
	"consistency checks failed: $failed_checks${vg_errors:+; valgrind errors: $vg_errors}"
status=$([ "$problems" -eq 0 ] && echo 0 || echo 1)
if [ "$status" -eq 0 ]; then
	say "RESULT: pass"
	rmdir "$FUZZ_OUT" 2>/dev/null
else
	say "RESULT: FAIL ($problems problems; server log: $log)"
	cp "$log" "$FUZZ_OUT/server.log" 2>/dev/null
fi
exit "$status"
