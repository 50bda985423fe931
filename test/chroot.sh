#!/usr/bin/env bash
# test/chroot.sh: Debian chroots for the PostgreSQL major versions that this
# machine's Debian does not ship, so that test/run_tests.sh can build and
# test the extension against each of them.
#
#   bash test/chroot.sh suite VERSION        the Debian suite that ships VERSION
#   bash test/chroot.sh path VERSION         the chroot's directory
#   bash test/chroot.sh create VERSION       make the chroot, or reuse a complete one
#   bash test/chroot.sh run VERSION CMD...   run CMD in it, /proc, /dev/pts and
#                                            /dev/shm mounted for the duration
#
# Versions and suites: 15 bookworm (Debian 12), 17 trixie (Debian 13),
# 18 sid.  PostgreSQL 16 was never in a Debian release and is not offered.
#
# "create" needs root and nothing but Debian and apt: it installs
# debootstrap when missing, runs debootstrap --variant=minbase from the
# mirror this machine's apt uses (WA_DEBIAN_MIRROR overrides it), then
# test/install_deps.sh VERSION inside.  A chroot is complete once its marker
# file .whatsapp-chroot exists, written last; a directory without it is an
# interrupted creation and is made again.  Chroots live in
# ${WA_CHROOT_DIR:-/srv/chroot}/pgVERSION; a lock file beside each one
# serializes the commands that use it.  Nothing is started inside the
# chroot when packages install (policy-rc.d), and no "main" cluster is made.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHROOT_DIR=${WA_CHROOT_DIR:-/srv/chroot}
MARKER=.whatsapp-chroot

say() { printf '%s\n' "$*"; }
die() { printf 'chroot.sh: %s\n' "$*" >&2; exit 1; }

suite_of() {
	case "$1" in
		15) echo bookworm ;;
		17) echo trixie ;;
		18) echo sid ;;
		16) die "PostgreSQL 16 has no Debian package (never in a release); it is not tested" ;;
		*) die "no Debian suite known for PostgreSQL '$1' (known: 15, 17, 18)" ;;
	esac
}

# The Debian archive this machine's apt uses: the first "main" source of
# the archive proper (not -security), from one-line or deb822 files.
host_mirror() {
	local f uri
	if [ -n "${WA_DEBIAN_MIRROR:-}" ]; then
		echo "$WA_DEBIAN_MIRROR"
		return
	fi
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		uri=$(awk '$1 == "deb" {
				i = 2
				if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit }
			}' "$f")
		[ -n "$uri" ] && { echo "${uri%/}"; return; }
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
			{
				u = ""; deb = 0
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^Types:.*(^|[ \t])deb([ \t]|$)/) deb = 1
					if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); u = a[2] }
				}
				if (deb && u ~ /debian\/?$/ && u !~ /security/) { print u; exit }
			}' "$f")
		[ -n "$uri" ] && { echo "${uri%/}"; return; }
	done
	echo http://deb.debian.org/debian
}

# Whatever is mounted at or under a directory, deepest first.
mounts_under() {
	awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts |
		sort -r
}

unmount_all() {
	local m
	for m in $(mounts_under "$1"); do
		umount "$m" 2>/dev/null || umount -l "$m" ||
			say "chroot.sh: could not unmount $m" >&2
	done
}

# Mount what PostgreSQL, perl and node need inside; undone by unmount_all.
mount_all() {
	local c=$1
	unmount_all "$c"	# left over from a run that was killed
	mount -t proc proc "$c/proc" || return 1
	# debootstrap makes the device nodes; where it could not, use the host's.
	if [ ! -c "$c/dev/null" ]; then
		mount --bind /dev "$c/dev" || return 1
	fi
	mkdir -p "$c/dev/pts" "$c/dev/shm"
	mount --bind /dev/pts "$c/dev/pts" || return 1
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$c/dev/shm" || return 1
	# Name resolution for apt.
	cp -L /etc/resolv.conf "$c/etc/resolv.conf" 2>/dev/null
	return 0
}

lock() { # lock DIR: hold DIR.lock until this script exits
	mkdir -p "$(dirname "$1")" || exit 1
	exec {lockfd}>"$1.lock" || die "cannot open $1.lock"
	if ! flock -n "$lockfd"; then
		say "waiting for $1.lock (another run uses this chroot)"
		flock "$lockfd" || die "cannot lock $1.lock"
	fi
}

# Run a command inside the chroot with a clean environment.
in_chroot() { # in_chroot DIR CMD...
	local c=$1
	shift
	chroot "$c" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

cmd_create() {
	local v=$1 suite c mirror t0
	suite=$(suite_of "$v") || exit 1
	c=$CHROOT_DIR/pg$v
	[ "$(id -u)" -eq 0 ] || die "making a chroot needs root"
	lock "$c"

	if [ -f "$c/$MARKER" ]; then
		say "reusing $c ($(sed -n 's/^made=//p' "$c/$MARKER"))"
	else
		if [ -e "$c" ]; then
			say "$c is incomplete (no $MARKER): making it again"
			unmount_all "$c"
			[ -z "$(mounts_under "$c")" ] || die "$c still has mounts; not removing it"
			rm -rf --one-file-system "$c" || die "cannot remove $c"
		fi
		if ! command -v debootstrap >/dev/null 2>&1; then
			say "installing debootstrap"
			DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap ||
				{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap; } ||
				die "cannot install debootstrap"
		fi
		mirror=$(host_mirror)
		say "debootstrap --variant=minbase $suite $c $mirror"
		t0=$SECONDS
		debootstrap --variant=minbase "$suite" "$c" "$mirror" >"$c.debootstrap.log" 2>&1 ||
			{ tail -n 30 "$c.debootstrap.log"; [ -f "$c/debootstrap/debootstrap.log" ] &&
				tail -n 30 "$c/debootstrap/debootstrap.log"; die "debootstrap $suite failed"; }
		rm -f "$c.debootstrap.log"
		say "debootstrap: $((SECONDS - t0)) s"

		printf 'deb %s %s main\n' "$mirror" "$suite" >"$c/etc/apt/sources.list"
		# sid's index may be older than its Valid-Until on a mirror snapshot.
		cat >"$c/etc/apt/apt.conf.d/90whatsapp-tests" <<-'EOF'
		Acquire::Check-Valid-Until "false";
		Acquire::Languages "none";
		APT::Install-Recommends "false";
		APT::Install-Suggests "false";
		Dpkg::Options { "--force-confdef"; "--force-confold"; };
		EOF
		printf '#!/bin/sh\nexit 101\n' >"$c/usr/sbin/policy-rc.d"
		chmod 755 "$c/usr/sbin/policy-rc.d"
		mkdir -p "$c/etc/postgresql-common"
		printf 'create_main_cluster = false\n' >"$c/etc/postgresql-common/createcluster.conf"
	fi

	# Install (or complete) the packages, the same list a run checks.
	t0=$SECONDS
	trap 'unmount_all "'"$c"'"' EXIT
	mount_all "$c" || die "cannot mount /proc, /dev/pts, /dev/shm in $c"
	cp "$here/install_deps.sh" "$c/tmp/whatsapp-install_deps.sh" || exit 1
	if ! in_chroot "$c" bash /tmp/whatsapp-install_deps.sh "$v"; then
		die "installing the packages in $c failed"
	fi
	rm -f "$c/tmp/whatsapp-install_deps.sh"
	unmount_all "$c"
	trap - EXIT
	say "packages: $((SECONDS - t0)) s"

	if [ ! -f "$c/$MARKER" ]; then
		printf 'suite=%s\nmirror=%s\nmade=%s\n' "$suite" "$mirror" \
			"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$c/$MARKER"
	fi
	say "$c is ready"
}

cmd_run() {
	local v=$1 c rc pid
	shift
	suite_of "$v" >/dev/null || exit 1
	c=$CHROOT_DIR/pg$v
	[ "$(id -u)" -eq 0 ] || die "entering a chroot needs root"
	[ -f "$c/$MARKER" ] || die "$c is not complete: bash test/chroot.sh create $v"
	lock "$c"
	trap 'unmount_all "'"$c"'"' EXIT
	mount_all "$c" || die "cannot mount /proc, /dev/pts, /dev/shm in $c"
	# In the background, so that INT and TERM are passed on at once; the
	# mounts go once the command has ended.
	chroot "$c" "$@" &
	pid=$!
	trap 'kill -TERM "$pid" 2>/dev/null' INT TERM
	wait "$pid"
	rc=$?
	while kill -0 "$pid" 2>/dev/null; do
		wait "$pid"
		rc=$?
	done
	unmount_all "$c"
	trap - EXIT
	return "$rc"
}

case "${1:-}" in
	suite) suite_of "${2:?VERSION}" ;;
	path) suite_of "${2:?VERSION}" >/dev/null && echo "$CHROOT_DIR/pg$2" ;;
	create) cmd_create "${2:?VERSION}" ;;
	run) [ $# -ge 3 ] || die "usage: chroot.sh run VERSION CMD..."; v=$2; shift 2; cmd_run "$v" "$@" ;;
	*) say "usage: bash test/chroot.sh suite|path|create|run VERSION [CMD...]" >&2; exit 2 ;;
esac
