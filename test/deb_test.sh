#!/usr/bin/env bash
# test/deb_test.sh: the Debian package, built and used as a DBA would.
#
#   bash test/deb_test.sh           every step below (root)
#   bash test/deb_test.sh --check   the first step only (seconds, any user)
#
# Steps, each timed:
#   check    the version agrees everywhere: whatsapp.control's
#            default_version, debian/changelog, META.json and CHANGELOG.md;
#            META.json parses; debian/control is what pg_buildext makes
#            from debian/control.in for this machine's PostgreSQL versions
#   base     debootstrap --variant=minbase bookworm, from the mirror this
#            machine's apt uses; kept and reused, never entered, so that a
#            copy of it is a clean Debian 12 (WA_DEB_FRESH=1 makes it again)
#   build    in a copy of the base: apt-get build-dep on the tree's
#            debian/control (so that Build-Depends is checked too), then
#            dpkg-buildpackage -us -uc; the .deb must hold the library, the
#            control file and every sql/whatsapp--*.sql of the tree
#   install  in another, clean copy of the base: apt-get install
#            ./postgresql-15-whatsapp_VERSION_ARCH.deb, nothing else first
#   demo     in that chroot, debian/tests/demo: docs/demo.sh with
#            WA_DEMO_INSTALLED=1 against the installed package, with only
#            docs/, test/mock/ and debian/ of the tree copied in (no sources,
#            no compiler), and its checks of where each message ended
#
# Environment: WA_DEB_DIR (default /srv/chroot/whatsapp-deb) holds the base,
# the downloaded packages (reused by later runs) and each run's chroots,
# which are removed at the end unless KEEP_TEST_TMP=1; WA_DEBIAN_MIRROR
# overrides the mirror; WA_DEB_OUT (default test/tmp/deb) receives the
# built packages.
#
# The last line is "deb test: passed" or "deb test: FAILED (step)"; the exit
# status is non-zero on failure.

set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
PGV=15
DEB_DIR=${WA_DEB_DIR:-/srv/chroot/whatsapp-deb}
OUT=${WA_DEB_OUT:-$repo/test/tmp/deb}

say() { printf '%s\n' "$*"; }
step_names=()
step_times=()
step() { # step NAME: start timing NAME
	step_names+=("$1")
	step_times+=("$SECONDS")
	printf '\n==== deb test: %s ====\n' "$1"
}
finish() { # finish passed|FAILED
	local i end
	printf '\n'
	for i in "${!step_names[@]}"; do
		end=${step_times[$((i + 1))]:-$SECONDS}
		printf '%-8s %5s s\n' "${step_names[$i]}" $((end - step_times[i]))
	done
	if [ "$1" = passed ]; then
		say "deb test: passed"
		exit 0
	fi
	say "deb test: FAILED (${step_names[-1]})"
	exit 1
}
fail() { say "deb test: $*"; finish FAILED; }

ext_version() {
	sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$repo/whatsapp.control"
}

# ---------------------------------------------------------------------------
# check: cheap, needs no root and no network
# ---------------------------------------------------------------------------
check_versions() {
	local v sv dv bad=0 meta
	v=$(ext_version)
	[ -n "$v" ] || { say "no default_version in whatsapp.control"; return 1; }
	say "whatsapp.control: default_version $v"

	dv=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$repo/debian/changelog")
	if [ "$dv" = "$v" ]; then
		say "debian/changelog: $dv"
	else
		say "debian/changelog's version is '$dv', whatsapp.control's default_version '$v':" \
			"add a debian/changelog entry for $v"
		bad=1
	fi

	# META.json: valid JSON, its version and the extension's.
	if command -v node >/dev/null 2>&1; then
		meta=$(node -e '
			const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
			const p = (m.provides || {}).whatsapp || {};
			console.log([m.version, p.version, (m["meta-spec"] || {}).version].join(" "));
		' "$repo/META.json") || { say "META.json does not parse"; bad=1; }
	elif command -v python3 >/dev/null 2>&1; then
		meta=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(m.get("version"), m.get("provides", {}).get("whatsapp", {}).get("version"),
      m.get("meta-spec", {}).get("version"))
' "$repo/META.json") || { say "META.json does not parse"; bad=1; }
	else
		say "neither node nor python3: META.json not parsed"
		meta=
	fi
	# PGXN wants semantic versions: 0.3 is 0.3.0 there.
	sv=$v
	[[ $v =~ ^[0-9]+\.[0-9]+$ ]] && sv=$v.0
	if [ -n "$meta" ]; then
		if [ "$meta" = "$sv $sv 1.0.0" ]; then
			say "META.json: version $sv, provides whatsapp $sv, meta-spec 1.0.0"
		else
			say "META.json has version, provides.whatsapp.version, meta-spec.version" \
				"'$meta'; expected '$sv $sv 1.0.0'"
			bad=1
		fi
	fi

	if grep -Eq "^## \\[?$v\\]?( |$)" "$repo/CHANGELOG.md" &&
		grep -Eq '^## \[?0\.1\]?( |$)' "$repo/CHANGELOG.md"; then
		say "CHANGELOG.md: sections for 0.1 and $v"
	else
		say "CHANGELOG.md needs a '## $v' section (and starts at '## 0.1')"
		bad=1
	fi

	if command -v pg_buildext >/dev/null 2>&1 &&
		[ -e /usr/share/postgresql-common/supported-versions ]; then
		if (cd "$repo" && pg_buildext checkcontrol); then
			say "debian/control matches debian/control.in for PostgreSQL" \
				"$(cd "$repo" && pg_buildext supported-versions | tr '\n' ' ')"
		else
			bad=1
		fi
	else
		say "no pg_buildext here: debian/control not compared with debian/control.in"
	fi
	return "$bad"
}

step check
check_versions || fail "the versions or the generated files disagree"
[ "${1:-}" = --check ] && finish passed
[ $# -eq 0 ] || { say "usage: bash test/deb_test.sh [--check]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || fail "making chroots needs root (bash test/deb_test.sh --check runs without)"

VERSION=$(ext_version)

# ---------------------------------------------------------------------------
# chroots
# ---------------------------------------------------------------------------

# The Debian archive and its security archive as this machine's apt uses
# them (one-line .list files or deb822 .sources files).
host_uris() {
	{
		cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }'
		cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
			awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
	} | sed 's:/*$::'
}
mirror=${WA_DEBIAN_MIRROR:-$(host_uris | grep -E '/debian$' | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
security=$(host_uris | grep -E '/debian-security$' | head -n 1)
security=${security:-${mirror%/debian}/debian-security}

# Whatever is mounted at or below DIR, deepest first.
mounts_under() {
	awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

# Stop what still runs inside a chroot (only processes whose root is that
# directory, which this script started there), then unmount everything.
release_chroot() { # release_chroot DIR
	local c=$1 p root pids=() m i
	for p in /proc/[0-9]*; do
		root=$(readlink "$p/root" 2>/dev/null) || continue
		[ "$root" = "$c" ] && pids+=("${p#/proc/}")
	done
	if [ "${#pids[@]}" -gt 0 ]; then
		say "stopping ${#pids[@]} processes left in $c: ${pids[*]}"
		kill -TERM "${pids[@]}" 2>/dev/null
		for i in 1 2 3 4 5; do
			sleep 1
			kill -0 "${pids[@]}" 2>/dev/null || break
		done
		kill -KILL "${pids[@]}" 2>/dev/null
	fi
	for m in $(mounts_under "$c"); do
		umount "$m" 2>/dev/null || umount -l "$m" || say "could not unmount $m" >&2
	done
}

remove_chroot() { # remove_chroot DIR
	release_chroot "$1"
	if [ -n "$(mounts_under "$1")" ]; then
		say "$1 still has mounts; left in place" >&2
		return 1
	fi
	rm -rf --one-file-system "$1"
}

# A clean copy of the base at DIR, with /proc, /dev/pts and /dev/shm and the
# shared package cache mounted, the mirror and its security archive in
# sources.list, and no service started by package scripts.
new_chroot() { # new_chroot DIR
	local c=$1
	cp -a "$DEB_DIR/base" "$c" || return 1
	chroots+=("$c")
	mount -t proc proc "$c/proc" &&
		mount --bind /dev/pts "$c/dev/pts" &&
		mkdir -p "$c/dev/shm" &&
		mount -t tmpfs -o mode=1777,nosuid,nodev shm "$c/dev/shm" &&
		mount --bind "$DEB_DIR/archives" "$c/var/cache/apt/archives" || return 1
	cp -L /etc/resolv.conf "$c/etc/resolv.conf" 2>/dev/null
	cat >"$c/etc/apt/sources.list" <<-EOF
	deb $mirror $SUITE main
	deb $mirror $SUITE-updates main
	deb $security $SUITE-security main
	EOF
	cat >"$c/etc/apt/apt.conf.d/90whatsapp-deb-test" <<-'EOF'
	APT::Install-Suggests "false";
	Acquire::Languages "none";
	APT::Sandbox::User "root";
	EOF
	printf '#!/bin/sh\nexit 101\n' >"$c/usr/sbin/policy-rc.d"
	chmod 755 "$c/usr/sbin/policy-rc.d"
}

in_chroot() { # in_chroot DIR COMMAND...: COMMAND as root, in a clean environment
	local c=$1
	shift
	chroot "$c" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# apt-get in any chroot of any run, one at a time: they share the package
# cache, and apt refuses a cache whose lock another apt holds.
apt_in_chroot() { # apt_in_chroot DIR SHELL-COMMAND
	flock "$DEB_DIR/apt.lock" chroot "$1" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive sh -c "$2"
}

chroots=()
run=
cleanup() {
	local c
	for c in "${chroots[@]}"; do
		if [ -n "${KEEP_TEST_TMP:-}" ]; then
			release_chroot "$c"
		else
			remove_chroot "$c"
		fi
	done
	if [ -n "$run" ] && [ -d "$run" ]; then
		if [ -n "${KEEP_TEST_TMP:-}" ]; then
			say "kept $run"
		else
			rmdir "$run" 2>/dev/null
		fi
	fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

mkdir -p "$DEB_DIR/archives/partial" || fail "cannot create $DEB_DIR"
# The real path: release_chroot compares it with /proc/PID/root.
DEB_DIR=$(cd "$DEB_DIR" && pwd -P) || fail "cannot enter $DEB_DIR"

# ---------------------------------------------------------------------------
# base
# ---------------------------------------------------------------------------
step base
exec {lockfd}>"$DEB_DIR/base.lock" || fail "cannot open $DEB_DIR/base.lock"
flock "$lockfd" || fail "cannot lock $DEB_DIR/base.lock"
if [ -n "${WA_DEB_FRESH:-}" ] || [ ! -f "$DEB_DIR/base/.whatsapp-base" ]; then
	remove_chroot "$DEB_DIR/base" || fail "cannot remove the old base"
	command -v debootstrap >/dev/null 2>&1 ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap ||
		fail "debootstrap is missing and could not be installed"
	say "debootstrap --variant=minbase $SUITE $DEB_DIR/base $mirror"
	if ! debootstrap --variant=minbase "$SUITE" "$DEB_DIR/base" "$mirror" \
		>"$DEB_DIR/debootstrap.log" 2>&1; then
		tail -n 30 "$DEB_DIR/debootstrap.log"
		fail "debootstrap failed (log: $DEB_DIR/debootstrap.log)"
	fi
	# Written last: a base without it is incomplete and made again.
	printf 'suite=%s\nmirror=%s\nmade=%s\n' "$SUITE" "$mirror" \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$DEB_DIR/base/.whatsapp-base"
else
	say "reusing $DEB_DIR/base ($(sed -n 's/^made=//p' "$DEB_DIR/base/.whatsapp-base"))"
fi
# Copies are taken with the lock shared, so that no run remakes the base
# under another's feet.
flock -s "$lockfd"

run=$(mktemp -d "$DEB_DIR/run.XXXXXX") || fail "cannot create a run directory"

# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------
step build
b=$run/build
new_chroot "$b" || fail "cannot prepare the build chroot"
src=/build/postgresql-whatsapp-$VERSION
mkdir -p "$b$src"
# The tree as it is (uncommitted changes included), without build results.
tar -C "$repo" --exclude=./.git --exclude=./test/tmp --exclude='./tmp_check*' \
	--exclude=./results --exclude=./log --exclude=./output_iso \
	--exclude=./regression.diffs --exclude=./regression.out --exclude=./bench/out \
	--exclude='*.o' --exclude='*.so' --exclude='*.bc' -cf - . |
	tar -C "$b$src" -xf - || fail "cannot copy the tree into the build chroot"
apt_in_chroot "$b" "apt-get update -q" || fail "apt-get update failed in the build chroot"
apt_in_chroot "$b" "apt-get install -y -q --no-install-recommends build-essential" ||
	fail "cannot install build-essential"
apt_in_chroot "$b" "cd '$src' && apt-get build-dep -y -q --no-install-recommends ./" ||
	fail "cannot install the Build-Depends of debian/control"
in_chroot "$b" sh -c "cd '$src' && dpkg-buildpackage -us -uc" ||
	fail "dpkg-buildpackage failed"

arch=$(in_chroot "$b" dpkg --print-architecture)
deb=postgresql-${PGV}-whatsapp_${VERSION}_$arch.deb
[ -f "$b/build/$deb" ] || { ls -l "$b/build"; fail "no $deb was built"; }
mkdir -p "$OUT" && cp "$b"/build/*.deb "$b"/build/*.dsc "$b"/build/*.tar.* "$OUT"/ ||
	fail "cannot copy the packages to $OUT"
say "built: $(cd "$b/build" && ls ./*.deb ./*.dsc | tr '\n' ' ')(copied to $OUT)"

# What the package must hold: the library, the control file and every
# install and upgrade script of the tree.
contents=$(dpkg-deb -c "$OUT/$deb" | awk '{ print $NF }' | sed 's:^\./:/:')
missing=()
want=("/usr/lib/postgresql/$PGV/lib/whatsapp.so"
	"/usr/share/postgresql/$PGV/extension/whatsapp.control")
for f in "$repo"/sql/whatsapp--*.sql; do
	want+=("/usr/share/postgresql/$PGV/extension/$(basename "$f")")
done
for f in "${want[@]}"; do
	grep -Fxq "$f" <<<"$contents" || missing+=("$f")
done
if [ "${#missing[@]}" -gt 0 ]; then
	dpkg-deb -c "$OUT/$deb"
	fail "$deb lacks ${missing[*]}"
fi
say "$deb holds whatsapp.so, whatsapp.control and the $((${#want[@]} - 2)) scripts of sql/"
dpkg-deb -f "$OUT/$deb" Package Version Depends Recommends
# Its disk space back before the next chroot, unless it is to be kept.
[ -n "${KEEP_TEST_TMP:-}" ] || remove_chroot "$b"

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
step install
c=$run/clean
new_chroot "$c" || fail "cannot prepare the clean chroot"
mkdir -p "$c/tmp/deb" && cp "$OUT/$deb" "$c/tmp/deb/" || fail "cannot copy $deb"
apt_in_chroot "$c" "apt-get update -q" || fail "apt-get update failed in the clean chroot"
apt_in_chroot "$c" "cd /tmp/deb && apt-get install -y -q ./$deb" ||
	fail "apt-get install ./$deb failed"
in_chroot "$c" dpkg -s "postgresql-$PGV-whatsapp" | sed -n '/^Status/p;/^Version/p'

# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------
step demo
# What the demo needs besides the package, then the three directories it
# reads, nothing to build from.
apt_in_chroot "$c" "apt-get install -y -q --no-install-recommends curl nodejs openssl" ||
	fail "cannot install the demo's tools (curl, nodejs, openssl)"
if in_chroot "$c" sh -c 'command -v cc || command -v gcc || command -v make'; then
	fail "the clean chroot has a compiler or make: the demo could build"
fi
d=/tmp/whatsapp-demo-tree
mkdir -p "$c$d"
tar -C "$repo" -cf - docs test/mock debian | tar -C "$c$d" -xf - ||
	fail "cannot copy docs/, test/mock/ and debian/ into the clean chroot"
in_chroot "$c" sh -c "cd '$d' && debian/tests/demo" || fail "the demo against the package failed"

finish passed
