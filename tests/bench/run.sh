#!/bin/sh
# tests/bench/run.sh - `make bench`: measures pylon-agent on loopback against
# the fake Kubernetes API (tests/fakes/kube_fake.py, with TCP_NODELAY:
# tests/bench/kube_fake_nodelay.py) and a real redis-server, side by side
# with a shell script doing the same job (tests/bench/baseline_init.sh), and
# writes docs/benchmarks.md (results and the exact commands).
#
# Environment: BUILD (default build), BENCH_RUNS (timed runs, default 30),
# BENCH_OUT (default docs/benchmarks.md), BENCH_WRK_SECONDS (default 5).
# Not a test: it only fails when something cannot run at all.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
AGENT=$ROOT/$BUILD/pylon-agent
RUNS=${BENCH_RUNS:-30}
OUT=${BENCH_OUT:-docs/benchmarks.md}
WRK_S=${BENCH_WRK_SECONDS:-5}
POD=chat-7d4b9c8f6d-x2k9p
PASS=bench-pass-0123
W=$(mktemp -d /tmp/pylon-bench.XXXXXX)
PIDS=""
SHM=""

cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	for p in $PIDS; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
	[ -z "$SHM" ] || rm -rf "$SHM"
}
trap cleanup EXIT INT TERM

say() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

[ -x "$AGENT" ] || die "$AGENT not built (make BUILD=$BUILD)"

# ---- tools ----------------------------------------------------------------
need_pkg() {	# command package
	command -v "$1" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "installing $2"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" \
		    >/dev/null 2>&1 || true
	fi
	command -v "$1" >/dev/null 2>&1
}
need_pkg redis-server redis-server || die "redis-server missing"
need_pkg redis-cli redis-tools || die "redis-cli missing"
need_pkg jq jq || die "jq missing (baseline script)"
HAVE_HF=0; need_pkg hyperfine hyperfine && HAVE_HF=1
HAVE_WRK=0; need_pkg wrk wrk && HAVE_WRK=1
need_pkg /usr/bin/time time || true
# Peak RSS (kB) of a command, from GNU time (a Python parent would count
# its own pages: a forked child has them until it execs).
peak_rss() {
	if [ -x /usr/bin/time ]; then
		/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1
	else
		echo "?"
	fi
}
HAVE_KUBECTL=0; command -v kubectl >/dev/null 2>&1 && HAVE_KUBECTL=1

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
	python3 - "$1" <<'EOF' || die "nothing listening on port $1"
import socket, sys, time
end = time.monotonic() + 10
while time.monotonic() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.02)
sys.exit(1)
EOF
}

# ---- servers ------------------------------------------------------------------
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --requirepass "$PASS" --dir "$W" >"$W/redis.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$RPORT"
URL="redis://default:$PASS@127.0.0.1:$RPORT/0"
rcli() { redis-cli -p "$RPORT" -a "$PASS" --no-auth-warning "$@"; }

python3 - "$W/scenario.json" "$POD" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join("tests", "fakes"))
import kube_fake as k
objs = k.deployment_objects("chat", 3, podname=sys.argv[2]) + \
    [k.hpa("chat", "Deployment", "chat", 10)]
json.dump({"objects": objs}, open(sys.argv[1], "w"))
EOF
python3 tests/bench/kube_fake_nodelay.py --dir "$W/kube" \
    --scenario "$W/scenario.json" >"$W/kube.log" 2>&1 &
PIDS="$PIDS $!"
i=0
while [ ! -s "$W/kube/port" ]; do
	i=$((i + 1)); [ $i -lt 200 ] || die "kube fake did not start: $(cat "$W/kube.log")"
	sleep 0.05
done
KC=$W/kube/kubeconfig
REQLOG=$W/kube/requests.jsonl

# The agent's environment: nothing but what it needs.
agent_env() {
	env -i PATH="$PATH" HOME="$W" PYLON_AGENT_SERVICEACCOUNT_DIR=/nonexistent \
	    "$@"
}
INIT_ENV="POD_NAME=$POD KUBECONFIG=$KC PYLON_AGENT_REDIS_URL=$URL"
INIT_CMD="$AGENT init --platform kubernetes --env-file $W/cluster.env"
DECIDE_CMD="$AGENT decide --platform static --replicas 3 --redis-url redis://127.0.0.1:6379/0"
BASE_CMD="sh tests/bench/baseline_init.sh $KC prod $POD $URL $W/baseline.env"
# Per command, beside /bin/true (issue 16).  The Redis URL comes from the
# environment (PYLON_AGENT_REDIS_URL, exported for the timed run), as in a pod.
VERSION_CMD="$AGENT version"
NOOP_INIT_CMD="$AGENT init --platform static --replicas 1 --env-file $W/noop-init.env"
REDIS_INIT_CMD="$AGENT init --platform static --replicas 3 --env-file $W/redis-init.env"
EXEC_CMD="$AGENT exec --env-file $W/noop.env -- /bin/true"
PROBE_CMD="$AGENT probe --platform static --replicas 3 --env-file $W/redis.env"
# The Kubernetes init taken apart (issue 16): discovery alone (start,
# libcurl, the four GETs), + the proof, + the env file on tmpfs (no disk
# flush), beside the full init on the run's directory (a disk: fsync).
K8S_DECIDE_CMD="$AGENT decide --platform kubernetes"
K8S_PROVE_CMD="$AGENT decide --platform kubernetes --prove"
SHM=""
[ -d /dev/shm ] && [ -w /dev/shm ] && SHM=$(mktemp -d /dev/shm/pylon-bench.XXXXXX)
K8S_SHM_CMD="$AGENT init --platform kubernetes --env-file $SHM/cluster.env"

# Sanity: each command works before it is timed.
# shellcheck disable=SC2086
agent_env $INIT_ENV $INIT_CMD 2>"$W/init.err" ||
    die "init failed: $(cat "$W/init.err")"
grep -q "mode=redis peers=10" "$W/cluster.env" ||
    die "init decided otherwise: $(head -1 "$W/cluster.env")"
agent_env $AGENT init --platform static --replicas 1 --env-file "$W/noop.env" \
    2>"$W/init.err" || die "init (noop) failed: $(cat "$W/init.err")"
agent_env PYLON_AGENT_REDIS_URL="$URL" $AGENT init --platform static --replicas 3 \
    --env-file "$W/redis.env" 2>"$W/init.err" ||
    die "init (redis) failed: $(cat "$W/init.err")"
# shellcheck disable=SC2086
agent_env $EXEC_CMD 2>"$W/exec.err" || die "exec failed: $(cat "$W/exec.err")"
# shellcheck disable=SC2086
agent_env $PROBE_CMD >/dev/null 2>"$W/probe.err" || die "probe failed: $(cat "$W/probe.err")"

# ---- per-start counts -------------------------------------------------------
: >"$REQLOG"
pub0=$(rcli INFO commandstats | sed -n 's/^cmdstat_publish:calls=\([0-9]*\),.*/\1/p')
sub0=$(rcli INFO commandstats | sed -n 's/^cmdstat_subscribe:calls=\([0-9]*\),.*/\1/p')
# shellcheck disable=SC2086
agent_env $INIT_ENV $INIT_CMD 2>/dev/null
API_REQS=$(wc -l <"$REQLOG")
API_PATHS=$(sed -n 's/.*"method": "\([A-Z]*\)", "path": "\([^"]*\)".*/\1 \2/p' "$REQLOG" |
    tr '\n' ';' | sed 's/;$//; s/;/; /g')
pub1=$(rcli INFO commandstats | sed -n 's/^cmdstat_publish:calls=\([0-9]*\),.*/\1/p')
sub1=$(rcli INFO commandstats | sed -n 's/^cmdstat_subscribe:calls=\([0-9]*\),.*/\1/p')
PUBS=$(( ${pub1:-0} - ${pub0:-0} ))
SUBS=$(( ${sub1:-0} - ${sub0:-0} ))

# ---- timings ---------------------------------------------------------------------
# median_ms NAME ENV... -- CMD...: prints "median mean min max" in ms
HF_CMDS=""
time_cmds() {	# label=cmd pairs on stdin, env already exported
	if [ $HAVE_HF -eq 1 ]; then
		args=""
		while IFS='=' read -r label cmd; do
			set -- "$@" -n "$label" "$cmd"
		done
		hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/hf.json" \
		    --show-output \
		    "$@" >"$W/hf.out" 2>&1 ||
		    die "hyperfine failed: $(cat "$W/hf.out")"
		python3 - "$W/hf.json" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(r["times"])
    print("%s %.2f %.2f %.2f %.2f" % (r["command"], r["median"] * 1e3,
          r["mean"] * 1e3, t[0] * 1e3, t[-1] * 1e3))
EOF
	else
		while IFS='=' read -r label cmd; do
			python3 - "$RUNS" "$label" "$cmd" <<'EOF'
import shlex, statistics, subprocess, sys, time
n, label, cmd = int(sys.argv[1]), sys.argv[2], shlex.split(sys.argv[3])
for _ in range(3):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t = []
for _ in range(n):
    s = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.append((time.perf_counter() - s) * 1e3)
t.sort()
print("%s %.2f %.2f %.2f %.2f" % (label, statistics.median(t), statistics.mean(t), t[0], t[-1]))
EOF
		done
	fi
}
TIMER="hyperfine -N --warmup 3 --runs $RUNS"
[ $HAVE_HF -eq 1 ] || TIMER="a python loop ($RUNS runs after 3 warm-ups, median)"

say "timing every command in one run beside /bin/true"
# shellcheck disable=SC2086
export $INIT_ENV
export PYLON_AGENT_SERVICEACCOUNT_DIR=/nonexistent
PER_CMD=$(printf '%s\n' "true=/bin/true" "version=$VERSION_CMD" "decide=$DECIDE_CMD" \
    "init-noop=$NOOP_INIT_CMD" "init-redis=$REDIS_INIT_CMD" "exec-noop=$EXEC_CMD" \
    "probe-redis=$PROBE_CMD" "init=$INIT_CMD")
T1=$(echo "$PER_CMD" | time_cmds)
# Peak RSS (median of 5 runs, GNU time; after exec: the larger of the two
# images) and the shared objects the dynamic loader initialised (dlopen()
# included: LD_DEBUG=files, distinct "calling init" objects).
objects_loaded() {
	rm -f "$W"/ld.*
	# shellcheck disable=SC2086
	LD_DEBUG=files LD_DEBUG_OUTPUT="$W/ld" $1 >/dev/null 2>&1 || true
	cat "$W"/ld.* 2>/dev/null | sed -n 's/.*calling init: //p' | sort -u | wc -l
}
PER_ROWS=""
while IFS='=' read -r label cmd; do
	rss=$(for i in 1 2 3 4 5; do
		# shellcheck disable=SC2086
		peak_rss $cmd
	done | sort -n | sed -n 3p)
	PER_ROWS="$PER_ROWS$label $rss $(objects_loaded "$cmd")
"
done <<PEREOF
$PER_CMD
PEREOF
# CPU time of one init (user+sys), the agent's own cost without waiting
CPU_INIT=$(python3 - "$INIT_CMD" <<'EOF'
import os, resource, shlex, subprocess, sys
cmd = shlex.split(sys.argv[1])
best = None
for _ in range(10):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1e3
    best = c if best is None else min(best, c)
print("%.1f" % best)
EOF
)
# The fake's own latency for the same four requests over one kept-alive
# TLS connection (curl, one process): the floor no client can beat.
FAKE_MS=$(python3 - "$W/kube" "$POD" <<'EOF'
import json, os, ssl, sys, time, http.client
d, pod = sys.argv[1], sys.argv[2]
port = int(open(os.path.join(d, "port")).read())
tok = open(os.path.join(d, "token")).read().strip()
ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
paths = ["/api/v1/namespaces/prod/pods/" + pod,
         "/apis/apps/v1/namespaces/prod/replicasets/chat-7d4b9c8f6d",
         "/apis/apps/v1/namespaces/prod/deployments/chat",
         "/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers?limit=500"]
ts = []
for _ in range(15):
    s = time.perf_counter()
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    for p in paths:
        c.request("GET", p, headers={"Authorization": "Bearer " + tok})
        c.getresponse().read()
    c.close()
    ts.append((time.perf_counter() - s) * 1e3)
ts.sort()
print("%.1f" % ts[len(ts) // 2])
EOF
)
# The Kubernetes init taken apart, interleaved (round-robin, alternating
# order): the load here moves within seconds, and one block of runs after
# another would charge it to whichever command ran then.
say "the Kubernetes init taken apart (interleaved)"
K8S_RR=$(python3 - "$RUNS" "start=$VERSION_CMD" "discovery=$K8S_DECIDE_CMD" \
    "proof=$K8S_PROVE_CMD" ${SHM:+"tmpfs=$K8S_SHM_CMD"} "disk=$INIT_CMD" <<'EOF'
import shlex, statistics, subprocess, sys, time
rounds = int(sys.argv[1])
vs = [(a.split("=", 1)[0], shlex.split(a.split("=", 1)[1])) for a in sys.argv[2:]]
t = {n: [] for n, _ in vs}
for r in range(rounds + 3):
    for n, c in (vs if r % 2 == 0 else vs[::-1]):
        s = time.perf_counter()
        subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r >= 3:
            t[n].append((time.perf_counter() - s) * 1e3)
for n, _ in vs:
    x = sorted(t[n])
    q = statistics.quantiles(x, n=4)
    print("%s %.2f %.2f %.2f %.2f" % (n, statistics.median(x), q[0], q[2], x[0]))
EOF
)
k8s_rows() {
	prev=""
	echo "$K8S_RR" | while read -r n med p25 p75 mn; do
		case $n in
		start) what="\`version\`: process start, the linked libraries" ;;
		discovery) what="+ libcurl loaded, the four API GETs: \`decide --platform kubernetes\`" ;;
		proof) what="+ the bus proof: \`decide --platform kubernetes --prove\`" ;;
		tmpfs) what="+ env file and state file on tmpfs: \`init\` into /dev/shm/\$D" ;;
		disk) what="+ on the run's directory (a disk: fsync): \`init\` as timed above" ;;
		*) what=$n ;;
		esac
		step=""
		[ -z "$prev" ] || step=$(awk -v a="$med" -v b="$prev" 'BEGIN { printf "%+.2f ms", a - b }')
		echo "| $what | $med ms | $p25 … $p75 ms | $mn ms | $step |"
		prev=$med
	done
}
unset POD_NAME KUBECONFIG PYLON_AGENT_REDIS_URL

T2=""
if [ $HAVE_KUBECTL -eq 1 ]; then
	say "timing the shell baseline (kubectl get --raw + jq + redis-cli)"
	T2=$(printf '%s\n' "baseline=$BASE_CMD" | RUNS=$(( RUNS > 10 ? 10 : RUNS )) time_cmds)
fi
med() { echo "$1" | awk -v l="$2" '$1 == l { print $2 }'; }
fld() { echo "$1" | awk -v l="$2" -v f="$3" '$1 == l { print $f }'; }
INIT_MED=$(med "$T1" init)
DECIDE_MED=$(med "$T1" decide)
TRUE_MED=$(med "$T1" true)
BASE_MED=$(med "$T2" baseline)

# ---- serve ---------------------------------------------------------------------
say "serve: RSS and /readyz throughput"
SPORT=$(free_port)
env -i PATH="$PATH" HOME="$W" PYLON_AGENT_SERVICEACCOUNT_DIR=/nonexistent \
    PYLON_AGENT_REDIS_URL="$URL" "$AGENT" serve --replicas 3 \
    --listen "127.0.0.1:$SPORT" --interval 1s >"$W/serve.out" 2>"$W/serve.err" &
SPID=$!
PIDS="$PIDS $SPID"
wait_port "$SPORT"
i=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SPORT/readyz")" = 200 ]; do
	i=$((i + 1)); [ $i -lt 200 ] || die "serve never ready: $(cat "$W/serve.err")"
	sleep 0.05
done
mem() {	# field of /proc/PID/status or smaps_rollup, in kB
	awk -v k="$2:" '$1 == k { print $2 }' "/proc/$SPID/$1"
}
RSS0=$(mem status VmRSS)
# 10k requests first (exactly), then the throughput run
python3 - "$SPORT" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
bad = 0
for i in range(10000):
    c.request("GET", "/readyz")
    r = c.getresponse()
    r.read()
    bad += r.status != 200
    if r.getheader("Connection", "").lower() == "close":
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
if bad:
    sys.exit("%d of 10000 /readyz were not 200" % bad)
EOF
HWM_10K=$(mem status VmHWM)
RSS_10K=$(mem status VmRSS)
PD_10K=$(mem smaps_rollup Private_Dirty)
ANON_10K=$(mem smaps_rollup Anonymous)
if [ $HAVE_WRK -eq 1 ]; then
	wrk -t1 -c8 -d"${WRK_S}s" --latency "http://127.0.0.1:$SPORT/readyz" >"$W/wrk.out" 2>&1 || true
	RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$W/wrk.out")
	NREQ=$(awk '/requests in/ { print $1 }' "$W/wrk.out")
	P99=$(awk '$1 == "99%" { print $2 }' "$W/wrk.out")
	LOADER="wrk -t1 -c8 -d${WRK_S}s --latency"
else
	RPS=$(python3 - "$SPORT" "$WRK_S" <<'EOF'
import http.client, sys, threading, time
port, dur = int(sys.argv[1]), float(sys.argv[2])
n = [0] * 4
def run(i):
    c = http.client.HTTPConnection("127.0.0.1", port)
    end = time.monotonic() + dur
    while time.monotonic() < end:
        c.request("GET", "/readyz"); c.getresponse().read(); n[i] += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("%.0f" % (sum(n) / dur))
EOF
)
	NREQ="?"; P99="?"
	LOADER="a python keep-alive loop (4 threads, ${WRK_S}s; wrk not installed)"
fi
HWM=$(mem status VmHWM)
RSS=$(mem status VmRSS)
PD=$(mem smaps_rollup Private_Dirty)
ANON=$(mem smaps_rollup Anonymous)
THREADS=$(mem status Threads)
kill "$SPID" 2>/dev/null || true
wait "$SPID" 2>/dev/null || true

# ---- startup breakdown --------------------------------------------------------------
NLIBS=$(ldd "$AGENT" | grep -c '=>' || true)
LDSTAT=$(LD_DEBUG=statistics "$AGENT" version 2>&1 >/dev/null |
    sed -n 's/.*total startup time in dynamic loader: *\([0-9]*\) cycles.*/\1/p' | head -1)
LDRELOC=$(LD_DEBUG=statistics "$AGENT" version 2>&1 >/dev/null |
    sed -n 's/.*number of relocations: *\([0-9]*\).*/\1/p' | head -1)
STARTRSS=$(peak_rss "$AGENT" version)
DECIDERSS=$(peak_rss "$AGENT" decide --replicas 3)

# What linking each library costs before main(): empty programs linked
# (--no-as-needed) against each of the agent's dependencies.
LIBCOST=""
if command -v cc >/dev/null 2>&1; then
	say "startup cost of each linked library"
	printf 'int main(void) { return 0; }\n' >"$W/empty.c"
	for set in "none:" "openssl:-lssl -lcrypto" "cjson+yaml+hiredis:-lcjson -lyaml -lhiredis" \
	    "libmicrohttpd:-lmicrohttpd" "libcurl:-lcurl" \
	    "all (as the agent):-lcurl -lcjson -lyaml -lhiredis -lmicrohttpd -lssl -lcrypto -lpthread -lm"; do
		n=${set%%:*}
		l=${set#*:}
		f="$W/empty-$(echo "$n" | tr -c 'a-z0-9\n' '_')"
		# shellcheck disable=SC2086
		cc -O2 -Wl,--no-as-needed "$W/empty.c" -o "$f" $l 2>/dev/null || continue
		nl=$(ldd "$f" | grep -c '=>' || true)
		rss=$(peak_rss "$f")
		ms=$(printf '%s\n' "$n=$f" | time_cmds | awk '{ print $(NF-3) }')
		LIBCOST="$LIBCOST| $n | $nl | $ms ms | $rss kB |
"
	done
	# ... and what initialising them costs.
	cat >"$W/c_curl.c" <<'EOF'
#include <curl/curl.h>
int main(void) { curl_global_init(CURL_GLOBAL_DEFAULT); return 0; }
EOF
	cat >"$W/c_ctx.c" <<'EOF'
#include <openssl/ssl.h>
int main(void) { SSL_CTX *c = SSL_CTX_new(TLS_client_method()); SSL_CTX_free(c); return 0; }
EOF
	cat >"$W/c_ca.c" <<'EOF'
#include <openssl/ssl.h>
int main(void) { SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_default_verify_paths(c);
	X509_STORE_load_file(SSL_CTX_get_cert_store(c), "/etc/ssl/certs/ca-certificates.crt");
	SSL_CTX_free(c); return 0; }
EOF
	for set in "libcurl + curl_global_init():c_curl:-lcurl" \
	    "openssl + SSL_CTX_new():c_ctx:-lssl -lcrypto" \
	    "openssl + SSL_CTX_new() + system CA bundle:c_ca:-lssl -lcrypto"; do
		n=${set%%:*}
		rest=${set#*:}
		src=${rest%%:*}
		l=${rest#*:}
		f="$W/$src"
		# shellcheck disable=SC2086
		cc -O2 "$W/$src.c" -o "$f" $l 2>/dev/null || continue
		nl=$(ldd "$f" | grep -c '=>' || true)
		rss=$(peak_rss "$f")
		ms=$(printf '%s\n' "$n=$f" | time_cmds | awk '{ print $(NF-3) }')
		LIBCOST="$LIBCOST| $n | $nl | $ms ms | $rss kB |
"
	done
fi

# ---- sizes ------------------------------------------------------------------------------
BIN_SIZE=$(stat -c %s "$AGENT")
cp "$AGENT" "$W/stripped" && strip "$W/stripped"
STRIP_SIZE=$(stat -c %s "$W/stripped")
TEXT_SIZE=$(size "$AGENT" | awk 'NR == 2 { print $1 + $2 + $3 }')
BUNDLE="not built (scripts/bundle.sh needs patchelf)"
COPIED=""
COPIED_ALL=""
if [ -x scripts/bundle.sh ] && command -v patchelf >/dev/null 2>&1; then
	if scripts/bundle.sh "$AGENT" "$W/bundle" >"$W/bundle.log" 2>&1; then
		tgz=$(ls "$W"/bundle/*.tar.gz 2>/dev/null | head -1)
		[ -n "$tgz" ] && BUNDLE="$(stat -c %s "$tgz") bytes ($(basename "$tgz"), $(ls "$W/bundle/pylon-agent/lib" | wc -l) libraries linked, $(ls "$W/bundle/pylon-agent/lib-dlopen" | wc -l) loaded on first use)"
		# Bytes copied into each pod for Pylon's container: the chart's
		# install container runs `cp -R bin lib` (the exec tree); before
		# issue 16 lib/ held every library, as the whole bundle does now.
		b=$W/bundle/pylon-agent
		COPIED=$(du -sb --total "$b/bin" "$b/lib" | tail -1 | cut -f1)
		COPIED_ALL=$(du -sb "$b" | cut -f1)
	else
		BUNDLE="bundle.sh failed: $(tail -1 "$W/bundle.log")"
	fi
fi

# ---- verdicts -----------------------------------------------------------------------------
verdict() {	# value op limit
	awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
		if (v == "") { print "not measured"; exit }
		ok = (op == "<=") ? (v + 0 <= l + 0) : (v + 0 >= l + 0)
		print ok ? "met" : "**missed**" }'
}
SPEEDUP=$(awk -v a="$BASE_MED" -v b="$INIT_MED" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.1f", a / b }')
HWM_MIB=$(awk -v k="$HWM" 'BEGIN { printf "%.2f", k / 1024 }')
PD_MIB=$(awk -v k="$PD" 'BEGIN { printf "%.2f", k / 1024 }')
ANON_MIB=$(awk -v k="$ANON" 'BEGIN { printf "%.2f", k / 1024 }')

# One row per command: label, timings, RSS, objects, goal and verdict.
per_goal() {	# label -> "ms kB" goal (empty: none)
	case $1 in
	version|decide|exec-noop) echo "2.5 3072" ;;
	probe-redis) echo "3 -" ;;
	init) echo "16 -" ;;
	*) echo "" ;;
	esac
}
per_name() {
	case $1 in
	init) echo "init, Kubernetes discovery + proof (fake API)" ;;
	init-noop) echo "init, static, 1 replica (noop, no Redis)" ;;
	init-redis) echo "init, static, 3 replicas + bus proof" ;;
	exec-noop) echo "exec --env-file (noop) -- /bin/true" ;;
	probe-redis) echo "probe, redis mode (one PING)" ;;
	true) echo "/bin/true" ;;
	*) echo "$1" ;;
	esac
}
per_table() {
	echo "$PER_ROWS" | while read -r label rss objs; do
		[ -n "$label" ] || continue
		med=$(fld "$T1" "$label" 2); mean=$(fld "$T1" "$label" 3)
		min=$(fld "$T1" "$label" 4); max=$(fld "$T1" "$label" 5)
		g=$(per_goal "$label"); gms=${g% *}; gkb=${g#* }
		goal=""; v=""
		if [ -n "$g" ]; then
			goal="<= $gms ms"
			v=$(verdict "$med" "<=" "$gms")
			if [ "$gkb" != "-" ]; then
				goal="$goal, <= $(awk -v k="$gkb" 'BEGIN { printf "%g", k / 1024 }') MiB"
				[ "$(verdict "$rss" "<=" "$gkb")" = met ] || v="**missed**"
			fi
		fi
		rssm=$(awk -v k="$rss" 'BEGIN { if (k + 0 > 0) printf "%.2f MiB", k / 1024; else print "?" }')
		echo "| $(per_name "$label") | $med ms | $mean ms | $min … $max ms | $rssm | $objs | $goal | $v |"
	done
}
per_commands() {
	echo "$PER_CMD" | while IFS='=' read -r label cmd; do
		echo "- $(per_name "$label"): \`$(echo "$cmd" | sed "s|$W|\$W|g; s|${SHM:-/nonexistent}|/dev/shm/\$D|g; s|$ROOT/||g")\`"
	done
}

mkdir -p "$(dirname "$OUT")"
{
cat <<EOF
# Benchmarks

Generated by \`make bench\` (tests/bench/run.sh) on $(date -u +%Y-%m-%dT%H:%MZ),
$(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load average
at the end: $(cut -d' ' -f1-3 /proc/loadavg).  Binary: \`$BUILD/pylon-agent\`
($("$AGENT" version | head -1)).  Everything on loopback: a real
\`redis-server\` with a password, and the fake Kubernetes API
(\`tests/fakes/kube_fake.py\`, Python, TLS, bearer token) serving
Pod -> ReplicaSet -> Deployment (replicas 3) + an HPA (max 10).

## Results

| what | measured | target | |
|---|---|---|---|
| \`init\`, K8s discovery + bus proof, median | $INIT_MED ms (mean $(fld "$T1" init 3), min $(fld "$T1" init 4), max $(fld "$T1" init 5)) | <= 10 ms | $(verdict "$INIT_MED" "<=" 10) |
| shell baseline (\`kubectl get --raw\` + jq + \`redis-cli\`), median | ${BASE_MED:-n/a} ms | | |
| speed-up over the baseline | ${SPEEDUP:-n/a}x | >= 20x | $(verdict "$SPEEDUP" ">=" 20) |
| \`init\` CPU time (user+sys, best of 10) | $CPU_INIT ms | | |
| the fake API alone: same 4 GETs on one kept-alive TLS connection (Python client), median | $FAKE_MS ms | | |
| \`decide\` static, median | $DECIDE_MED ms | | |
| \`/bin/true\`, median (process start floor) | $TRUE_MED ms | | |
| API requests per pod start | $API_REQS | | |
| bus messages per start (PUBLISH / SUBSCRIBE) | $PUBS / $SUBS | PUBLISH <= 1 | $(verdict "$PUBS" "<=" 1) |
| \`serve\` VmHWM after 10k \`/readyz\` | $(awk -v k="$HWM_10K" 'BEGIN { printf "%.2f", k / 1024 }') MiB | | |
| \`serve\` VmHWM after the throughput run too | $HWM_MIB MiB | <= 10 MiB | $(verdict "$HWM_MIB" "<=" 10) |
| \`serve\` private dirty / anonymous (smaps_rollup) | $PD_MIB / $ANON_MIB MiB | <= 3 MiB | $(verdict "$PD_MIB" "<=" 3) |
| \`serve\` threads | $THREADS | | |
| \`/readyz\` requests/s | $RPS ($NREQ requests, p99 $P99) | | |
| binary size (as built, with debug info) | $BIN_SIZE bytes | | |
| binary size stripped | $STRIP_SIZE bytes (text+data+bss $TEXT_SIZE) | <= 300 KB | $(verdict "$STRIP_SIZE" "<=" 307200) |
| bundle (\`scripts/bundle.sh\`) | $BUNDLE | | |
| bytes copied into each pod for Pylon's container (the exec tree \`bin/\` + \`lib/\`: \`du -sb --total bin lib\`) | ${COPIED:-n/a} bytes ($(awk -v b="$COPIED" 'BEGIN { printf "%.2f", b / 1048576 }') MiB) | <= 1 MiB | $(verdict "$COPIED" "<=" 1048576) |
| the whole bundle (\`du -sb\`; what the chart copied per pod before issue 16) | ${COPIED_ALL:-n/a} bytes ($(awk -v b="$COPIED_ALL" 'BEGIN { printf "%.2f", b / 1048576 }') MiB) | | |
| shared libraries loaded | $NLIBS | | |
| dynamic loader startup (\`LD_DEBUG=statistics\`) | ${LDSTAT:-?} cycles, ${LDRELOC:-?} relocations | | |
| peak RSS of \`pylon-agent version\` / \`decide --replicas 3\` | $STARTRSS / $DECIDERSS kB | | |

API requests of one start: $API_PATHS.

### Per command, beside \`/bin/true\` (one run)

All in the same hyperfine run as the table above ($TIMER); peak RSS is
the median of 5 runs of GNU \`time -f %M\` (for \`exec\` the larger of the
agent's and \`/bin/true\`'s image); shared objects: the distinct objects
the dynamic loader initialised, \`dlopen()\` included (\`LD_DEBUG=files\`,
"calling init" lines; the loader itself counts). Goals: issue 16.

| command | median | mean | min … max | peak RSS | shared objects | goal | |
|---|---|---|---|---|---|---|---|
$(per_table)

Exact commands (environment: \`PYLON_AGENT_REDIS_URL\` = the password URL of
the local \`redis-server\`, and \`POD_NAME\`, \`KUBECONFIG\` as for \`init\` below,
which the static ones ignore; \`\$W\` is the run's temporary directory,
\`/dev/shm/\$D\` one on tmpfs):

$(per_commands)

The Kubernetes \`init\` taken apart: each row adds one part to the one
above; timed interleaved (round-robin in alternating order, $RUNS rounds
after 3 warm-ups, Python \`subprocess\` + \`perf_counter\`, so a few tenths of
a millisecond above hyperfine), same environment as \`init\`:

| | median | p25 … p75 | min | vs the row above (medians) |
|---|---|---|---|---|
$(k8s_rows)

Start-up cost of the linked libraries alone (an empty \`main\` linked with
\`-Wl,--no-as-needed\` against each set; median of the same timer, peak RSS):

| libraries | shared objects loaded | median start | peak RSS |
|---|---|---|---|
$LIBCOST

Memory of \`serve\` before the load: VmRSS $RSS0 kB; after 10k requests VmRSS
$RSS_10K kB, private dirty $PD_10K kB, anonymous $ANON_10K kB; after the
throughput run VmRSS $RSS kB.

## How it was measured (exact commands)

- Timings: $TIMER, commands run without a shell; environment of \`init\`:
  \`$INIT_ENV PYLON_AGENT_SERVICEACCOUNT_DIR=/nonexistent\` (URL with a password).
  - init: \`$INIT_CMD\`
  - decide: \`$DECIDE_CMD\`
  - baseline: \`$BASE_CMD\` (tests/bench/baseline_init.sh: 4 \`kubectl get --raw\`, jq, \`redis-cli SUBSCRIBE\` + \`PUBLISH\`; ${RUNS} runs capped at 10)
- CPU time: \`getrusage(RUSAGE_CHILDREN)\` around 10 runs of init, minimum.
- API requests: lines of the fake's \`requests.jsonl\` during one \`init\`;
  bus messages: \`INFO commandstats\` (cmdstat_publish, cmdstat_subscribe) before and after.
- serve: \`pylon-agent serve --replicas 3 --listen 127.0.0.1:PORT --interval 1s\`
  (PYLON_AGENT_REDIS_URL set); 10 000 sequential keep-alive \`GET /readyz\`
  (Python http.client), then \`VmHWM\`/\`VmRSS\` from /proc/PID/status and
  \`Private_Dirty\`/\`Anonymous\` from /proc/PID/smaps_rollup; then
  $LOADER.
- Sizes: \`stat -c %s\`, \`strip\`, \`size\`; libraries: \`ldd | grep -c '=>'\`.

Raw hyperfine/wrk output of this run:

\`\`\`
$(echo "$T1"; echo "$T2")
$( [ -f "$W/wrk.out" ] && cat "$W/wrk.out")
\`\`\`
EOF
} >"$OUT.tmp"
# The hand-written analysis (why each number is what it is) follows.
if [ -f tests/bench/analysis.md ]; then
	{ echo; cat tests/bench/analysis.md; } >>"$OUT.tmp"
fi
# Keep `make bench-proxy`'s section (tests/bench/proxy_bench.py) of the
# previous file: it is rewritten only by that benchmark.
if [ -f "$OUT" ] && grep -q '^<!-- bench-proxy -->' "$OUT"; then
	{ echo; sed -n '/^<!-- bench-proxy -->/,/^<!-- \/bench-proxy -->/p' "$OUT"; } >>"$OUT.tmp"
fi
mv "$OUT.tmp" "$OUT"
say "wrote $OUT"
sed -n '/^## Results/,/^## How/p' "$OUT" | head -30
