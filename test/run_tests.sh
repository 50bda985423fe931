#!/usr/bin/env bash
# test/run_tests.sh: run every test of the whatsapp extension.
#
#   bash test/run_tests.sh
#
# Stages, in order (a failing stage does not stop the ones after it):
#   packages  test/install_deps.sh: apt-get what is missing (root only)
#   build     make clean && make && make install
#   regress   pg_regress and isolation: make installcheck installcheck-rr
#             (their own temporary instances, test/regress.conf)
#   pgtap     pg_prove over test/pgtap/*.sql on a throwaway cluster
#   tap       prove over test/t/*.pl (PostgreSQL::Test::Cluster, test/perl)
#   mock      the mock Cloud API's own self-test, test/mock/selftest.sh
#
# PostgreSQL refuses to run as root.  Run as root, this script installs the
# packages and the extension as root, then runs every stage that starts a
# server as the unprivileged user wa_test (created when missing), in a copy
# of the tree under /tmp.  Run as another user, it skips apt-get and runs
# everything in place; "make install" then needs a writable installation.
#
# Environment: KEEP_TEST_TMP=1 keeps the temporary files even on success;
# WA_TIMEOUT_REGRESS, WA_TIMEOUT_PGTAP, WA_TIMEOUT_TAP, WA_TIMEOUT_MOCK
# (seconds) bound each stage.
#
# The last line printed is "N passed, M failed", counting stages; the exit
# status is non-zero when any stage failed.

set -uo pipefail

# WA_PG_BIN points the whole run at another installation of PostgreSQL (for
# example a private copy, so that two runs do not install over each other).
PG_BIN=${WA_PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PG_BIN/pg_config
TEST_USER=wa_test

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*"; }
banner() { printf '\n==== %s ====\n' "$*"; }

# Never let a proxy setting route test traffic off this machine: every
# request the tests make goes to 127.0.0.1.
drop_proxies() {
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY \
		ftp_proxy FTP_PROXY
	export no_proxy='127.0.0.1,localhost,::1' NO_PROXY='127.0.0.1,localhost,::1'
}

# A TCP port nothing listens on (the clusters use it only to name their
# private socket, but keep it unique anyway).
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# ---------------------------------------------------------------------------
# Stages that start PostgreSQL.  The main script runs each of them as
#   bash test/run_tests.sh --stage NAME
# inside the tree the tests use, as the user that runs the servers.
# ---------------------------------------------------------------------------

stage_regress() {
	local rc
	rm -rf tmp_check* results output_iso regression.diffs regression.out
	# pg_regress and the isolation specs, then pg_regress again at
	# REPEATABLE READ (Odoo's level).
	make PG_CONFIG="$PG_CONFIG" installcheck &&
		make PG_CONFIG="$PG_CONFIG" installcheck-rr
	rc=$?
	if [ "$rc" -ne 0 ]; then
		for f in regression.diffs output_iso/regression.diffs; do
			if [ -s "$f" ]; then
				banner "$f"
				cat "$f"
			fi
		done
		if [ -f tmp_check/log/postmaster.log ]; then
			banner "tail of tmp_check/log/postmaster.log"
			tail -n 60 tmp_check/log/postmaster.log
		fi
	fi
	return "$rc"
}

stage_pgtap() {
	local files=(test/pgtap/*.sql)
	local dir port rc
	if [ ! -e "${files[0]}" ]; then
		say "no test/pgtap/*.sql files"
		return 0
	fi
	mkdir -p test/tmp
	dir=$(mktemp -d "$PWD/test/tmp/pgtap.XXXXXX") || return 1
	port=$(free_port) || { say "no free port"; return 1; }

	# Stop and remove the cluster whatever happens.
	trap 'pg_ctl -D "'"$dir"'/data" -m immediate -w stop >/dev/null 2>&1; rm -rf "'"$dir"'"' EXIT
	trap 'exit 130' INT TERM

	initdb -D "$dir/data" -A trust -N -E UTF8 --locale=C.UTF-8 \
		>"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
	cat >>"$dir/data/postgresql.conf" <<-EOF

	# test/run_tests.sh: throwaway cluster for pgTAP
	listen_addresses = ''
	port = $port
	unix_socket_directories = '$dir'
	fsync = off
	shared_preload_libraries = 'whatsapp'
	whatsapp.database = ''
	EOF
	if ! pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
		say "the pgTAP cluster did not start"
		cat "$dir/server.log"
		return 1
	fi
	export PGHOST=$dir PGPORT=$port
	if ! createdb wa_pgtap ||
		! psql -X -q -v ON_ERROR_STOP=1 -d wa_pgtap -c 'CREATE EXTENSION pgtap'; then
		tail -n 40 "$dir/server.log"
		return 1
	fi

	pg_prove --timer --dbname wa_pgtap "${files[@]}"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		banner "tail of the pgTAP cluster's server log"
		tail -n 60 "$dir/server.log"
	fi
	return "$rc"
}

stage_tap() {
	local files=(test/t/*.pl)
	local out rc t log
	if [ ! -e "${files[0]}" ]; then
		say "no test/t/*.pl files"
		return 0
	fi
	local pgxs_dir
	pgxs_dir=$("$PG_CONFIG" --pkglibdir)/pgxs
	mkdir -p test/tmp/tap
	export TESTDIR=$PWD/test/tmp/tap
	export PERL5LIB=$pgxs_dir/src/test/perl:$PWD/test/perl${PERL5LIB:+:$PERL5LIB}
	export PG_REGRESS=$pgxs_dir/src/test/regress/pg_regress
	export WA_MOCK_DIR=$PWD/test/mock
	out=$TESTDIR/prove.out
	prove --timer "${files[@]}" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		# Show the end of the log of each test that failed.
		sed -n '/^Test Summary Report/,$p' "$out" |
			grep -oE '^test/t/[^ ]+\.pl' | sort -u |
			while read -r t; do
				log=$TESTDIR/tmp_check/log/regress_log_$(basename "$t" .pl)
				if [ -f "$log" ]; then
					banner "tail of $log"
					tail -n 80 "$log"
				fi
			done
		say "TAP logs: $TESTDIR/tmp_check/log"
	fi
	return "$rc"
}

stage_mock() {
	bash test/mock/selftest.sh
}

# The Debian package (test/deb_test.sh): built with dpkg-buildpackage in a
# bookworm chroot, installed with apt-get in a clean one, the demo run there
# against it.  Run by the main script as root, not as a --stage: it makes
# chroots.  About 2 minutes once the chroot base and the packages are
# cached (3 the first time); WA_TIMEOUT_DEB (seconds) bounds it.  As
# another user, or with WA_DEB_TEST=0, only the versions and generated files
# are checked (--check); a run inside one of the version chroots leaves it
# to the run outside.
stage_deb() {
	local t0=$SECONDS
	banner "deb"
	if [ -n "${WA_IN_CHROOT:-}" ]; then
		say "not run inside a chroot"
		record deb skipped 0
		return
	fi
	if ! $is_root || [ "${WA_DEB_TEST:-1}" = 0 ]; then
		say "only bash test/deb_test.sh --check (the package is built as root, unless WA_DEB_TEST=0)"
		set -- --check
	fi
	if run_child timeout -k 30 "${WA_TIMEOUT_DEB:-1200}" bash "$repo/test/deb_test.sh" "$@"; then
		record deb pass $((SECONDS - t0))
	else
		record deb FAIL $((SECONDS - t0))
	fi
}

if [ "${1:-}" = "--stage" ]; then
	cd "$repo" || exit 1
	drop_proxies
	case "${2:-}" in
		regress) stage_regress ;;
		pgtap) stage_pgtap ;;
		tap) stage_tap ;;
		mock) stage_mock ;;
		*) say "unknown stage ${2:-}" >&2; exit 2 ;;
	esac
	exit $?
fi

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

cd "$repo" || exit 1
is_root=false
[ "$(id -u)" -eq 0 ] && is_root=true

names=()
results=()
times=()
failed_any=false

record() { # record NAME pass|FAIL|skipped SECONDS
	names+=("$1")
	results+=("$2")
	times+=("$3")
	[ "$2" = FAIL ] && failed_any=true
	say "---- stage $1: $2 ($3 s)"
}

# Run a command in the background so that INT and TERM reach it at once.
child=
on_signal() {
	say "interrupted"
	[ -n "$child" ] && kill -TERM "$child" 2>/dev/null
	[ -n "$child" ] && wait "$child" 2>/dev/null
	cleanup
	exit 130
}
run_child() {
	"$@" &
	child=$!
	wait "$child"
	local rc=$?
	child=
	return "$rc"
}

work=
cleanup() {
	if [ -n "$work" ] && [ -d "$work" ]; then
		if $failed_any || [ -n "${KEEP_TEST_TMP:-}" ]; then
			say "kept the test tree: $work"
		else
			rm -rf "$work"
		fi
	fi
}
trap on_signal INT TERM

# ---- packages (test/install_deps.sh installs what is missing, as root)
banner "packages"
t0=$SECONDS
if run_child bash "$repo/test/install_deps.sh"; then
	record packages pass $((SECONDS - t0))
else
	record packages FAIL $((SECONDS - t0))
fi

drop_proxies

# ---- build
banner "build"
t0=$SECONDS
if run_child make PG_CONFIG="$PG_CONFIG" clean &&
	run_child make PG_CONFIG="$PG_CONFIG" &&
	run_child make PG_CONFIG="$PG_CONFIG" install; then
	record build pass $((SECONDS - t0))
	built=true
else
	if ! $is_root; then
		say "hint: make install writes into $("$PG_CONFIG" --pkglibdir) and" \
			"$("$PG_CONFIG" --sharedir)/extension; run this script as root" \
			"if you cannot write there"
	fi
	record build FAIL $((SECONDS - t0))
	built=false
fi

# ---- the tree and the user the servers run as
tree=$repo
as_tester=()
stage_env=(
	"PATH=$PG_BIN:/usr/local/bin:/usr/bin:/bin:$PATH"
	"LANG=C.UTF-8"
	"no_proxy=127.0.0.1,localhost,::1"
	"NO_PROXY=127.0.0.1,localhost,::1"
)
# Pass the tests' own knobs through.
while IFS='=' read -r k _; do
	case "$k" in
		WA_*|PG_TEST_*|PROVE_*|KEEP_TEST_TMP) stage_env+=("$k=${!k}") ;;
	esac
done < <(env)

if $is_root; then
	if ! id -u "$TEST_USER" >/dev/null 2>&1; then
		say "creating user $TEST_USER"
		useradd --system --user-group --no-create-home \
			--home-dir /nonexistent --shell /usr/sbin/nologin "$TEST_USER" ||
			say "could not create user $TEST_USER"
	fi
	work=$(mktemp -d /tmp/whatsapp-tests.XXXXXX)
	chmod 755 "$work"
	mkdir "$work/repo" "$work/home"
	tar -C "$repo" --exclude=./.git --exclude=./test/tmp --exclude=./tmp_check \
		--exclude=./results --exclude=./log --exclude=./regression.diffs \
		--exclude=./regression.out -cf - . | tar -C "$work/repo" -xf -
	chown -R "$TEST_USER:" "$work"
	tree=$work/repo
	as_tester=(runuser -u "$TEST_USER" --)
	stage_env+=("HOME=$work/home" "USER=$TEST_USER" "LOGNAME=$TEST_USER")
	say "servers run as $TEST_USER in $tree"
else
	stage_env+=("HOME=${HOME:-$repo}" "USER=$(id -un)" "LOGNAME=$(id -un)")
	rm -rf "$repo/test/tmp"
	mkdir -p "$repo/test/tmp"
fi

run_stage() { # run_stage NAME TIMEOUT
	local name=$1 limit=$2 rc t0=$SECONDS
	banner "$name"
	run_child timeout -k 30 "$limit" "${as_tester[@]}" env -i "${stage_env[@]}" \
		bash "$tree/test/run_tests.sh" --stage "$name"
	rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		say "stage $name timed out after $limit s"
	fi
	if [ "$rc" -eq 0 ]; then
		record "$name" pass $((SECONDS - t0))
	else
		record "$name" FAIL $((SECONDS - t0))
	fi
}

for stage in regress pgtap tap; do
	if ! $built; then
		banner "$stage"
		say "not run: the build failed"
		record "$stage" FAIL 0
		continue
	fi
	case $stage in
		regress) run_stage regress "${WA_TIMEOUT_REGRESS:-900}" ;;
		pgtap) run_stage pgtap "${WA_TIMEOUT_PGTAP:-600}" ;;
		tap) run_stage tap "${WA_TIMEOUT_TAP:-2100}" ;;
	esac
done

if [ -f "$tree/test/mock/selftest.sh" ]; then
	run_stage mock "${WA_TIMEOUT_MOCK:-300}"
else
	banner "mock"
	say "no test/mock/selftest.sh"
	record mock skipped 0
fi

stage_deb

cleanup

# ---- summary
banner "summary"
npass=0
nfail=0
for i in "${!names[@]}"; do
	printf '%-10s %-8s %5s s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
	case "${results[$i]}" in
		pass) npass=$((npass + 1)) ;;
		FAIL) nfail=$((nfail + 1)) ;;
	esac
done
say "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
