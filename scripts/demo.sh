#!/bin/sh
# make demo: the job a user came for, with real processes (scripts/demo.py):
# Kubernetes discovery against the tests' fake API server, two real Pylon
# 0.11.3 processes sharing the bus the agent proved, scale-down and drift,
# a Redis that never answers.  Needs root (a private network namespace for
# Pylon, a chroot); re-runs itself under sudo otherwise.
#
#   PYLON_AGENT_BIN   the agent to demo (default build/pylon-agent)
#   PYLON_AGENT_CACHE the Pylon cache (default /var/cache/pylon-agent)
set -eu
cd "$(dirname "$0")/.."
PYLON_AGENT_DEMO_T0=${PYLON_AGENT_DEMO_T0:-$(date +%s.%N)}
export PYLON_AGENT_DEMO_T0
export PYLON_AGENT_BIN="${PYLON_AGENT_BIN:-$PWD/build/pylon-agent}"
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || {
		echo "demo: needs root (a private network namespace for Pylon, a chroot): run it as root" >&2
		exit 1
	}
	echo "demo: needs root (a private network namespace for Pylon, a chroot): sudo" >&2
	exec sudo env PYLON_AGENT_BIN="$PYLON_AGENT_BIN" \
	    PYLON_AGENT_DEMO_T0="$PYLON_AGENT_DEMO_T0" \
	    ${PYLON_AGENT_CACHE:+PYLON_AGENT_CACHE="$PYLON_AGENT_CACHE"} \
	    ${NO_COLOR:+NO_COLOR="$NO_COLOR"} "$PWD/scripts/demo.sh"
fi
[ -x "$PYLON_AGENT_BIN" ] || { echo "demo: $PYLON_AGENT_BIN is not built: run make" >&2; exit 1; }

cache=${PYLON_AGENT_CACHE:-/var/cache/pylon-agent}
if [ -f "$cache/trixie-root/.pylon-agent-ok" ] &&
   [ -x "$cache/trixie-root/opt/pylon/bin/pylon" ]; then
	echo "demo: the Pylon cache is ready ($cache); the demo takes about 20 s."
else
	echo "demo: the first run caches a Debian 13 root (debootstrap) and the npm packages"
	echo "      of Pylon 0.11.3 and Bun in $cache: a few minutes; later runs take about 20 s."
fi
scripts/pylon-cache.sh >/dev/null
exec /usr/bin/python3 scripts/demo.py
