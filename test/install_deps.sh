#!/usr/bin/env bash
# test/install_deps.sh: install the Debian packages that building, the demo
# and the tests need, when they are missing.
#
#   bash test/install_deps.sh [VERSION]
#
# VERSION is the PostgreSQL major version (default 15, Debian 12's).  Needs
# root to install; as another user it only reports what is missing.  Exit
# status 0 when everything is present afterwards.  test/chroot.sh runs it
# inside the chroots of the other versions.
set -uo pipefail

V=${1:-${WA_PG_VERSION:-15}}
case "$V" in
	'' | *[!0-9]*) echo "install_deps.sh: not a PostgreSQL major version: $V" >&2; exit 2 ;;
esac

# contrib (pgcrypto) is part of postgresql-N itself.
PACKAGES=(
	build-essential
	"postgresql-$V"
	"postgresql-server-dev-$V"
	libcurl4-openssl-dev
	libssl-dev
	"postgresql-$V-pgtap"
	libtap-parser-sourcehandler-pgtap-perl
	libipc-run-perl
	nodejs
	curl
	openssl
	python3-psycopg2	# docs/examples/webhook.py, run by test/t/097_examples.pl
)

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "no dpkg-query: not a Debian system, packages not checked"
	exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "all packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages (run as root to install them): ${missing[*]}"
	exit 1
fi
echo "installing: ${missing[*]}"
apt-get update &&
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}"
