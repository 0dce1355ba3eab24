#!/bin/sh
# Builds (once) and prints the cache the real-Pylon tests, the image build
# and the demo use.  Lives outside the checkout; rebuilt when missing.
#
#   $PYLON_AGENT_CACHE (default /var/cache/pylon-agent)
#     trixie-root/   Debian 13 minbase root (Pylon 0.11.3 needs glibc >= 2.38)
#                    with /opt/pylon/bin/pylon and /usr/local/bin/bun inside
#     npm/           npm prefix holding @pylonsync/cli-linux-x64 and Bun
#
# Prints "root=<dir>" on success.  Needs root (debootstrap) and the Debian
# mirror plus the npm registry the first time; later runs touch neither.
set -eu
CACHE=${PYLON_AGENT_CACHE:-/var/cache/pylon-agent}
PYLON_VERSION=0.11.3
ROOT=$CACHE/trixie-root
NPM=$CACHE/npm
mkdir -p "$CACHE"
# One builder at a time (parallel test runs, the demo); a killed run's
# temporary root is removed by the next one.
exec 9>"$CACHE/.pylon-cache.lock"
flock 9
rm -rf "$CACHE"/trixie-root.tmp.*

# The Debian mirror this machine's apt uses (scripts/mirror.sh).
. "$(dirname "$0")/mirror.sh"

if [ ! -x "$NPM/node_modules/@pylonsync/cli-linux-x64/bin/pylon" ] ||
   [ ! -x "$NPM/node_modules/@oven/bun-linux-x64/bin/bun" ]; then
	echo "pylon-cache: npm install @pylonsync/cli-linux-x64@$PYLON_VERSION @oven/bun-linux-x64" >&2
	mkdir -p "$NPM"
	npm install --no-audit --no-fund --loglevel=error --prefix "$NPM" \
	    "@pylonsync/cli-linux-x64@$PYLON_VERSION" @oven/bun-linux-x64 >&2
fi

if [ ! -f "$ROOT/.pylon-agent-ok" ]; then
	command -v debootstrap >/dev/null 2>&1 || {
		echo "pylon-cache: debootstrap missing; run scripts/install-deps.sh" >&2
		exit 1
	}
	if [ ! -f "$ROOT/etc/debian_version" ]; then
		tmp=$CACHE/trixie-root.tmp.$$
		rm -rf "$tmp"
		trap 'rm -rf "$tmp"' EXIT
		echo "pylon-cache: debootstrap trixie (first run, a few minutes)" >&2
		# trixie renamed libxmlsec1-openssl to libxmlsec1t64-openssl
		# (the 64-bit time_t transition); try the current name first.
		for xmlsec in libxmlsec1t64-openssl libxmlsec1-openssl; do
			rm -rf "$tmp"
			debootstrap --variant=minbase \
			    --include=$xmlsec,ca-certificates \
			    trixie "$tmp" "$(mirror)" >&2 && break
			echo "pylon-cache: debootstrap with $xmlsec failed" >&2
			[ "$xmlsec" = libxmlsec1-openssl ] && exit 1
		done
		rm -rf "$ROOT"
		mv "$tmp" "$ROOT"
	fi
	touch "$ROOT/.pylon-agent-ok"
fi

# The binaries inside the root (cheap; refreshed when npm changed them).
mkdir -p "$ROOT/opt/pylon/bin" "$ROOT/usr/local/bin"
cmp -s "$NPM/node_modules/@pylonsync/cli-linux-x64/bin/pylon" "$ROOT/opt/pylon/bin/pylon" ||
    cp "$NPM/node_modules/@pylonsync/cli-linux-x64/bin/pylon" "$ROOT/opt/pylon/bin/pylon"
cmp -s "$NPM/node_modules/@oven/bun-linux-x64/bin/bun" "$ROOT/usr/local/bin/bun" ||
    cp "$NPM/node_modules/@oven/bun-linux-x64/bin/bun" "$ROOT/usr/local/bin/bun"
chmod 0755 "$ROOT/opt/pylon/bin/pylon" "$ROOT/usr/local/bin/bun"
# Pylon links libxmlsec1 (openssl) and libxml2 (in --include above).
v=$(chroot "$ROOT" /opt/pylon/bin/pylon --version 2>&1) || {
	echo "pylon-cache: pylon does not run in $ROOT: $v" >&2
	echo "pylon-cache: remove $ROOT and run again" >&2
	exit 1
}
echo "root=$ROOT"
