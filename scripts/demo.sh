#!/bin/sh
# make demo: the main job on one machine.  Starts a throwaway redis-server
# on a free loopback port (with a password), then shows pylon-agent
# deciding, proving the bus and writing the env file for 1 and 3 replicas,
# and Pylon's environment as `exec` hands it over.
set -eu
cd "$(dirname "$0")/.."
AGENT=${AGENT:-build/pylon-agent}
work=$(mktemp -d /tmp/pylon-agent-demo.XXXXXX)
redis_pid=""
cleanup() {
	[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pass=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
redis-server --port "$port" --bind 127.0.0.1 --requirepass "$pass" \
    --save '' --appendonly no --dir "$work" --daemonize no \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
i=0
until redis-cli -p "$port" -a "$pass" --no-auth-warning ping >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "redis-server did not start"; exit 1; }
	sleep 0.05
done
# The URL goes in a 0600 file, as a mounted Secret would: never in argv.
printf 'redis://:%s@127.0.0.1:%s/0\n' "$pass" "$port" >"$work/redis-url"
chmod 600 "$work/redis-url"
export PYLON_AGENT_REDIS_URL_FILE="$work/redis-url"
export PYLON_AGENT_NAMESPACE=demo-app

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "== redis-server pid $redis_pid on 127.0.0.1:$port (password in $work/redis-url)"
for n in 1 3; do
	echo
	echo "=============== $n replica(s) ==============="
	step pylon-agent decide --platform static --replicas $n
	"$AGENT" decide --platform static --replicas $n
	step pylon-agent init --platform static --replicas $n --env-file "$work/cluster-$n.env"
	"$AGENT" init --platform static --replicas $n --timeout 10s \
	    --env-file "$work/cluster-$n.env"
	step "cat $work/cluster-$n.env   # mode 0600, password shown as *** here"
	ls -l "$work/cluster-$n.env" | awk '{print $1, $NF}'
	sed "s/$pass/***/" "$work/cluster-$n.env"
	step pylon-agent exec --env-file "$work/cluster-$n.env" -- sh -c 'env | grep PYLON_CLUSTER'
	"$AGENT" exec --env-file "$work/cluster-$n.env" -- sh -c \
	    'env | grep ^PYLON_CLUSTER || true' | sed "s/$pass/***/"
done
echo
echo "=============== misconfiguration: 3 replicas, no Redis URL ==============="
step pylon-agent decide --platform static --replicas 3   '# (no URL)'
PYLON_AGENT_REDIS_URL_FILE= "$AGENT" decide --platform static --replicas 3 || echo "exit code $?"
echo
echo "demo done; redis-server stopped."
