#!/bin/sh
# Builds (once) and prints the Debian 12 roots the image test imports as
# base images (`podman import`), since no image registry is reachable here.
# A sibling of scripts/pylon-cache.sh (which builds the Debian 13 root
# Pylon runs in); lives outside the checkout; rebuilt when missing.
#
#   $PYLON_AGENT_CACHE (default /var/cache/pylon-agent)
#     bookworm-root/        Debian 12 minbase + ca-certificates, without docs,
#                           man pages and translations: the agent image's
#                           runtime base (debian:bookworm-slim's role)
#     bookworm-build-root/  the same + the build packages agent/Dockerfile's
#                           build stage installs (so a warm build needs no
#                           mirror; the Dockerfile skips apt when present)
#
# Prints "bookworm=<dir>" and "bookworm-build=<dir>" on success.  Needs
# root (debootstrap) and the Debian mirror the first time only.
set -eu
CACHE=${PYLON_AGENT_CACHE:-/var/cache/pylon-agent}
mkdir -p "$CACHE"

# Keep in step with agent/Dockerfile's build stage.
BUILD_PKGS="build-essential,pkg-config,libcurl4-openssl-dev,libcjson-dev,\
libhiredis-dev,libyaml-dev,libssl-dev,libmicrohttpd-dev,patchelf,ca-certificates"

# The Debian mirror this machine's apt uses (scripts/mirror.sh).
. "$(dirname "$0")/mirror.sh"

# root NAME INCLUDE: debootstraps $CACHE/NAME once (into a temporary
# directory, renamed when complete, so an interrupted run leaves no
# half-built root behind under the final name).
root() {
	dir=$CACHE/$1
	[ -f "$dir/.pylon-agent-ok" ] && return 0
	command -v debootstrap >/dev/null 2>&1 || {
		echo "bookworm-cache: debootstrap missing; run scripts/install-deps.sh" >&2
		exit 1
	}
	tmp=$CACHE/$1.tmp.$$
	rm -rf "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	echo "bookworm-cache: debootstrap bookworm into $dir (first run, a few minutes)" >&2
	debootstrap --variant=minbase --include="$2" bookworm "$tmp" "$(mirror)" >&2 || {
		echo "bookworm-cache: debootstrap bookworm ($1) failed; see above" >&2
		exit 1
	}
	# An image has no use for apt's downloaded .debs.
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
	touch "$tmp/.pylon-agent-ok"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
}

# slim DIR: what debian:bookworm-slim leaves out (docs but their copyright
# files, man pages, info, translations), here and for later apt installs.
# Idempotent; quick when already done.
slim() {
	[ -f "$1/etc/dpkg/dpkg.cfg.d/pylon-agent-slim" ] && return 0
	mkdir -p "$1/etc/dpkg/dpkg.cfg.d"
	cat > "$1/etc/dpkg/dpkg.cfg.d/pylon-agent-slim" <<-EOF
	path-exclude /usr/share/doc/*
	path-include /usr/share/doc/*/copyright
	path-exclude /usr/share/man/*
	path-exclude /usr/share/info/*
	path-exclude /usr/share/locale/*
	path-include /usr/share/locale/locale.alias
	EOF
	find "$1/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
	find "$1/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$1"/usr/share/man/* "$1"/usr/share/info/*
	find "$1/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
	    -exec rm -rf {} +
}

root bookworm-root ca-certificates
slim "$CACHE/bookworm-root"
root bookworm-build-root "$BUILD_PKGS"
echo "bookworm=$CACHE/bookworm-root"
echo "bookworm-build=$CACHE/bookworm-build-root"
