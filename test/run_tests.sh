#!/usr/bin/env bash
# test/run_tests.sh: run every test of the whatsapp extension.
#
#   bash test/run_tests.sh [VERSION | all]
#
# VERSION is a PostgreSQL major version: 15, 17 or 18.  "all" (the default)
# runs the suite on each of the three in turn.  With WA_PG_BIN set and no
# argument, only the version of that installation is tested.
#
# Where each version runs: natively when it is installed here (or is the
# one this Debian ships: 15 on Debian 12), else in a Debian chroot that
# test/chroot.sh makes on the first run and reuses afterwards (17 from
# Debian 13 "trixie", 18 from "sid"; root only).  PostgreSQL 16 has no Debian
# package and is not tested.
#
# Stages for each version, in order (a failing stage does not stop the ones
# after it); their names carry the version, "17:tap":
#   chroot    test/chroot.sh create VERSION (only where a chroot is used)
#   packages  test/install_deps.sh VERSION: apt-get what is missing (root only)
#   build     make clean && make COPT=-Werror && make install
#   regress   pg_regress and the isolation specs against a throwaway
#             cluster (test/regress.conf): make installcheck TAP_TESTS=,
#             then make installcheck-rr
#   pgtap     pg_prove over test/pgtap/*.sql on a throwaway cluster
#   tap       make prove_installcheck: prove over test/t/*.pl
#             (PostgreSQL::Test::Cluster, test/perl)
#   logscan   test/log_scan.pl over the server logs the three stages
#             before left (kept in test/tmp/logs and tmp_check/log): no
#             message body or full phone number in the extension's own lines
#   mock      the mock Cloud API's own self-test, test/mock/selftest.sh
#
# PostgreSQL refuses to run as root.  Run as root, this script installs the
# packages and the extension as root, then runs every stage that starts a
# server as the unprivileged user wa_test (created when missing), in a copy
# of the tree under /tmp.  Run as another user, it skips apt-get and runs
# everything in place; "make install" then needs a writable installation.
#
# Environment: KEEP_TEST_TMP=1 keeps the temporary files even on success;
# WA_TIMEOUT_REGRESS, WA_TIMEOUT_PGTAP, WA_TIMEOUT_TAP, WA_TIMEOUT_LOGSCAN,
# WA_TIMEOUT_MOCK (seconds) bound each stage; WA_WERROR=0 builds without
# -Werror (for a compiler newer than the ones tested that warns about
# something new);
# WA_CHROOT_DIR (default /srv/chroot) holds the chroots.
#
# The last line printed is "N passed, M failed", counting stages; the exit
# status is non-zero when any stage failed.

set -uo pipefail

# WA_PG_BIN points the run at another installation of PostgreSQL (for
# example a private copy, so that two runs do not install over each other).
# The stages get the installation under test in WA_PG_BIN.
PG_BIN=${WA_PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PG_BIN/pg_config
TEST_USER=wa_test
ALL_VERSIONS=(15 17 18)

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

# Start a throwaway cluster in a new directory under test/tmp, stopped and
# removed when the stage exits; PGHOST and PGPORT point at it.  Extra lines
# for postgresql.conf come from the files named.
start_cluster() { # start_cluster NAME [CONF_FILE...]
	local name=$1 dir port f
	shift
	mkdir -p test/tmp
	dir=$(mktemp -d "$PWD/test/tmp/$name.XXXXXX") || return 1
	port=$(free_port) || { say "no free port"; return 1; }
	cluster_dir=$dir

	# Stop and remove the cluster whatever happens; its server log stays in
	# test/tmp/logs for the logscan stage.
	mkdir -p test/tmp/logs
	trap 'pg_ctl -D "'"$dir"'/data" -m immediate -w stop >/dev/null 2>&1; cp "'"$dir"'/server.log" "'"$PWD/test/tmp/logs/$name.log"'" 2>/dev/null; rm -rf "'"$dir"'"' EXIT
	trap 'exit 130' INT TERM

	initdb -D "$dir/data" -A trust -N -E UTF8 --locale=C.UTF-8 \
		>"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
	{
		printf '\n# test/run_tests.sh: throwaway cluster for stage %s\n' "$name"
		printf "listen_addresses = ''\nport = %s\nunix_socket_directories = '%s'\nfsync = off\n" \
			"$port" "$dir"
		for f in "$@"; do
			cat "$f"
		done
	} >>"$dir/data/postgresql.conf"
	if ! pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
		say "the $name cluster did not start"
		cat "$dir/server.log"
		return 1
	fi
	export PGHOST=$dir PGPORT=$port
}

stage_regress() {
	local rc
	rm -rf results output_iso regression.diffs regression.out
	start_cluster regress test/regress.conf || return 1
	# pg_regress and the isolation specs against the running cluster (the
	# TAP tests are a stage of their own), then pg_regress again at
	# REPEATABLE READ (Odoo's level).
	make PG_CONFIG="$PG_CONFIG" installcheck TAP_TESTS= &&
		make PG_CONFIG="$PG_CONFIG" installcheck-rr
	rc=$?
	if [ "$rc" -ne 0 ]; then
		for f in regression.diffs output_iso/regression.diffs; do
			if [ -s "$f" ]; then
				banner "$f"
				cat "$f"
			fi
		done
		banner "tail of the regress cluster's server log"
		tail -n 60 "$cluster_dir/server.log"
	fi
	return "$rc"
}

stage_pgtap() {
	local files=(test/pgtap/*.sql)
	local rc
	if [ ! -e "${files[0]}" ]; then
		say "no test/pgtap/*.sql files"
		return 0
	fi
	start_cluster pgtap test/regress.conf || return 1
	if ! createdb wa_pgtap ||
		! psql -X -q -v ON_ERROR_STOP=1 -d wa_pgtap -c 'CREATE EXTENSION pgtap'; then
		tail -n 40 "$cluster_dir/server.log"
		return 1
	fi

	pg_prove --timer --dbname wa_pgtap "${files[@]}"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		banner "tail of the pgTAP cluster's server log"
		tail -n 60 "$cluster_dir/server.log"
	fi
	return "$rc"
}

stage_tap() {
	local files=(test/t/*.pl)
	local out rc t log logdir
	if [ ! -e "${files[0]}" ]; then
		say "no test/t/*.pl files"
		return 0
	fi
	# make prove_installcheck: TESTDIR is the tree, the logs go to
	# tmp_check/log, the perl modules and pg_regress come from pg_config's
	# installation.
	mkdir -p test/tmp
	out=$PWD/test/tmp/prove.out
	logdir=$PWD/tmp_check/log
	make PG_CONFIG="$PG_CONFIG" prove_installcheck PROVE_FLAGS=--timer 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		# Show the end of the log of each test that failed.
		sed -n '/^Test Summary Report/,$p' "$out" |
			grep -oE '^test/t/[^ ]+\.pl' | sort -u |
			while read -r t; do
				log=$logdir/regress_log_$(basename "$t" .pl)
				if [ -f "$log" ]; then
					banner "tail of $log"
					tail -n 80 "$log"
				fi
			done
		say "TAP logs: $logdir"
	fi
	return "$rc"
}

# After the other stages: the extension's own lines in every server log they
# left (test/tmp/logs, tmp_check/log) hold no message body and no full phone
# number (test/log_scan.pl; docs/privacy.md).
stage_logscan() {
	perl test/log_scan.pl "$PWD"
}

stage_mock() {
	bash test/mock/selftest.sh
}

# The Debian package for 15 (test/deb_test.sh): built with dpkg-buildpackage
# in a bookworm chroot, installed with apt-get in a clean one, the demo run
# there against it.  Run by the main script as root, not as a --stage: it
# makes chroots.  About 2 minutes once the chroot base and the packages are
# cached (3 the first time); WA_TIMEOUT_DEB (seconds) bounds it.  As
# another user, or with WA_DEB_TEST=0, only the versions and generated files
# are checked (--check).
stage_deb() {
	local t0=$SECONDS
	banner "15: deb"
	if ! $is_root || [ "${WA_DEB_TEST:-1}" = 0 ]; then
		say "only bash test/deb_test.sh --check (the package is built as root, unless WA_DEB_TEST=0)"
		set -- --check
	fi
	if run_child timeout -k 30 "${WA_TIMEOUT_DEB:-1200}" bash "$repo/test/deb_test.sh" "$@"; then
		record 15:deb pass $((SECONDS - t0))
	else
		record 15:deb FAIL $((SECONDS - t0))
	fi
}

if [ "${1:-}" = "--stage" ]; then
	cd "$repo" || exit 1
	drop_proxies
	case "${2:-}" in
		regress) stage_regress ;;
		pgtap) stage_pgtap ;;
		tap) stage_tap ;;
		logscan) stage_logscan ;;
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
	# A run inside a chroot hands its results to the run outside.
	if [ -n "${WA_RESULTS_FILE:-}" ]; then
		printf '%s %s %s\n' "$1" "$2" "$3" >>"$WA_RESULTS_FILE"
	fi
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
	work=
}
trap on_signal INT TERM

# The major version of the installation whose bin directory is $1.
version_of_bin() {
	"$1/pg_config" --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p'
}

# The PostgreSQL version this Debian ships, if it is one of ours.
host_version() {
	local codename v
	codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || return 0
	for v in "${ALL_VERSIONS[@]}"; do
		if [ "$(bash "$repo/test/chroot.sh" suite "$v" 2>/dev/null)" = "$codename" ]; then
			echo "$v"
			return 0
		fi
	done
}

# The bin directory to test version $1 with here, or nothing when it needs
# a chroot.
native_bin() {
	local v=$1
	if [ -n "${WA_PG_BIN:-}" ] && [ "$(version_of_bin "$WA_PG_BIN")" = "$v" ]; then
		echo "$WA_PG_BIN"
	elif [ -x "/usr/lib/postgresql/$v/bin/pg_config" ] || [ "$(host_version)" = "$v" ] ||
		[ -n "${WA_IN_CHROOT:-}" ]; then
		echo "/usr/lib/postgresql/$v/bin"
	fi
}

# ---- one version, on this machine
run_native() { # run_native VERSION BIN
	local v=$1 t0 built tree as_tester stage_env k stage
	PG_BIN=$2
	PG_CONFIG=$PG_BIN/pg_config
	say "PostgreSQL $v: $PG_BIN"

	# ---- packages (test/install_deps.sh installs what is missing, as root)
	banner "$v: packages"
	t0=$SECONDS
	if run_child bash "$repo/test/install_deps.sh" "$v"; then
		record "$v:packages" pass $((SECONDS - t0))
	else
		record "$v:packages" FAIL $((SECONDS - t0))
	fi

	# ---- build: warnings are errors here (and so in CI), not in the Makefile
	banner "$v: build"
	local copt=(COPT=-Werror)
	[ "${WA_WERROR:-1}" = 0 ] && copt=()
	t0=$SECONDS
	if run_child make PG_CONFIG="$PG_CONFIG" clean &&
		run_child make PG_CONFIG="$PG_CONFIG" "${copt[@]}" &&
		run_child make PG_CONFIG="$PG_CONFIG" install; then
		record "$v:build" pass $((SECONDS - t0))
		built=true
	else
		if ! $is_root; then
			say "hint: make install writes into $("$PG_CONFIG" --pkglibdir) and" \
				"$("$PG_CONFIG" --sharedir)/extension; run this script as root" \
				"if you cannot write there"
		fi
		record "$v:build" FAIL $((SECONDS - t0))
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
			WA_PG_BIN | WA_RESULTS_FILE) ;;
			WA_*|PG_TEST_*|PROVE_*|KEEP_TEST_TMP) stage_env+=("$k=${!k}") ;;
		esac
	done < <(env)
	stage_env+=("WA_PG_BIN=$PG_BIN")

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
		rm -rf "$repo/test/tmp" "$repo/tmp_check"
		mkdir -p "$repo/test/tmp"
	fi

	run_stage() { # run_stage NAME TIMEOUT
		local name=$1 limit=$2 rc t0=$SECONDS
		banner "$v: $name"
		run_child timeout -k 30 "$limit" "${as_tester[@]}" env -i "${stage_env[@]}" \
			bash "$tree/test/run_tests.sh" --stage "$name"
		rc=$?
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			say "stage $name timed out after $limit s"
		fi
		if [ "$rc" -eq 0 ]; then
			record "$v:$name" pass $((SECONDS - t0))
		else
			record "$v:$name" FAIL $((SECONDS - t0))
		fi
	}

	for stage in regress pgtap tap logscan; do
		if ! $built; then
			banner "$v: $stage"
			say "not run: the build failed"
			record "$v:$stage" FAIL 0
			continue
		fi
		case $stage in
			regress) run_stage regress "${WA_TIMEOUT_REGRESS:-900}" ;;
			pgtap) run_stage pgtap "${WA_TIMEOUT_PGTAP:-600}" ;;
			tap) run_stage tap "${WA_TIMEOUT_TAP:-2100}" ;;
			logscan) run_stage logscan "${WA_TIMEOUT_LOGSCAN:-600}" ;;
		esac
	done

	if [ -f "$tree/test/mock/selftest.sh" ]; then
		run_stage mock "${WA_TIMEOUT_MOCK:-300}"
	else
		banner "$v: mock"
		say "no test/mock/selftest.sh"
		record "$v:mock" skipped 0
	fi

	cleanup
}

# ---- one version, in its chroot: the same script runs there natively
run_in_chroot() { # run_in_chroot VERSION
	local v=$1 t0 c run inner k env_in=() line name result secs
	banner "$v: chroot"
	t0=$SECONDS
	if ! $is_root; then
		say "PostgreSQL $v is not installed here, and making its chroot needs root"
		record "$v:chroot" FAIL 0
		return
	fi
	if ! run_child bash "$repo/test/chroot.sh" create "$v"; then
		record "$v:chroot" FAIL $((SECONDS - t0))
		return
	fi
	c=$(bash "$repo/test/chroot.sh" path "$v")
	# A copy of the tree inside the chroot, and the file the run there
	# writes its stages' results to.
	run=$(mktemp -d "$c/tmp/whatsapp-run.XXXXXX") || { record "$v:chroot" FAIL $((SECONDS - t0)); return; }
	inner=${run#"$c"}
	mkdir "$run/repo"
	tar -C "$repo" --exclude=./.git --exclude=./test/tmp --exclude='./tmp_check*' \
		--exclude=./results --exclude=./log --exclude=./output_iso \
		--exclude='*.o' --exclude='*.so' --exclude='*.bc' -cf - . |
		tar -C "$run/repo" -xf -
	: >"$run/results"
	record "$v:chroot" pass $((SECONDS - t0))

	while IFS='=' read -r k _; do
		case "$k" in
			WA_PG_BIN | WA_RESULTS_FILE | WA_IN_CHROOT) ;;
			WA_*|PG_TEST_*|PROVE_*|KEEP_TEST_TMP|CI) env_in+=("$k=${!k}") ;;
		esac
	done < <(env)
	run_child bash "$repo/test/chroot.sh" run "$v" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 "${env_in[@]}" \
		WA_IN_CHROOT=1 WA_RESULTS_FILE="$inner/results" \
		bash "$inner/repo/test/run_tests.sh" "$v"
	local n=0
	while read -r name result secs; do
		[ -n "$name" ] || continue
		names+=("$name")
		results+=("$result")
		times+=("$secs")
		[ "$result" = FAIL ] && failed_any=true
		n=$((n + 1))
	done <"$run/results"
	if [ "$n" -eq 0 ]; then
		record "$v:run" FAIL 0
	fi
	if $failed_any || [ -n "${KEEP_TEST_TMP:-}" ]; then
		say "kept the chroot's copy of the tree: $run (paths that the run" \
			"in the chroot printed are under $c)"
	else
		rm -rf "$run"
	fi
}

# ---- which versions
arg=${1:-}
if [ -z "$arg" ]; then
	if [ -n "${WA_PG_BIN:-}" ]; then
		arg=$(version_of_bin "$WA_PG_BIN")
		[ -n "$arg" ] || { say "no pg_config in WA_PG_BIN=$WA_PG_BIN"; exit 2; }
	else
		arg=all
	fi
fi
case "$arg" in
	all) versions=("${ALL_VERSIONS[@]}") ;;
	*[!0-9]*) say "usage: bash test/run_tests.sh [VERSION | all]  (versions: ${ALL_VERSIONS[*]})" >&2; exit 2 ;;
	*) versions=("$arg") ;;
esac

drop_proxies
start=$SECONDS
for v in "${versions[@]}"; do
	bin=$(native_bin "$v")
	if [ -n "$bin" ]; then
		run_native "$v" "$bin"
	elif [ -n "${WA_IN_CHROOT:-}" ]; then
		banner "$v"
		say "PostgreSQL $v is not installed in this chroot"
		record "$v:packages" FAIL 0
	elif [ "$v" = 16 ]; then
		banner "$v"
		say "PostgreSQL 16 has no Debian package and is not tested here;" \
			"install it and run again to test it natively"
		record "$v:packages" FAIL 0
	else
		run_in_chroot "$v"
	fi
done

# The package is tested once, with 15, by the run outside any chroot.
if [ -z "${WA_IN_CHROOT:-}" ] && [[ " ${versions[*]} " == *" 15 "* ]]; then
	stage_deb
fi

# ---- summary (inside a chroot, the run outside prints it)
if [ -n "${WA_RESULTS_FILE:-}" ]; then
	say "stage results handed to the run outside the chroot"
	[ "$failed_any" = false ]
	exit
fi
banner "summary"
npass=0
nfail=0
for i in "${!names[@]}"; do
	printf '%-12s %-8s %5s s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
	case "${results[$i]}" in
		pass) npass=$((npass + 1)) ;;
		FAIL) nfail=$((nfail + 1)) ;;
	esac
done
say "versions: ${versions[*]}; total $((SECONDS - start)) s"
say "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
