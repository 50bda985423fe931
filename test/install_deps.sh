#!/usr/bin/env bash
# test/install_deps.sh: install the Debian packages that building, the demo
# and the tests need, when they are missing.  Needs root to install; as
# another user it only reports what is missing.  Exit status 0 when
# everything is present afterwards.
set -uo pipefail

PACKAGES=(
	build-essential
	postgresql-15
	postgresql-server-dev-15
	postgresql-contrib
	libcurl4-openssl-dev
	libssl-dev
	postgresql-15-pgtap
	libtap-parser-sourcehandler-pgtap-perl
	libipc-run-perl
	nodejs
	curl
	openssl
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
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
