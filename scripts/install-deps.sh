#!/bin/sh
# Installs the Debian packages pylon-agent's build, tests and demo need.
# Idempotent and quick when everything is present; needs root (or sudo)
# only when something is missing.
set -eu
PKGS="build-essential pkg-config libcurl4-openssl-dev libcjson-dev
libhiredis-dev libyaml-dev libssl-dev libmicrohttpd-dev libcmocka-dev
redis-server redis-tools python3 python3-pytest python3-cryptography
openssl curl valgrind clang libclang-rt-14-dev golang-go
golang-github-masterminds-sprig-dev patchelf python3-yaml python3-jsonschema
debootstrap podman buildah runc catatonit postgresql prometheus stunnel4 cppcheck
iproute2 util-linux hyperfine"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    missing="$missing $p"
done
# Node.js (for schema validation of rendered manifests) may come from
# Debian or from NodeSource; only install Debian's when none is present.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
