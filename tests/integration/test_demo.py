"""`make demo` (scripts/demo.sh -> scripts/demo.py) runs its five steps with
real processes and every step's key fact holds; the Redis password never
shows; nothing it started survives it.

The demo enters a private network namespace of its own and stops
everything by pid; this test only runs it (bounded) and reads its output."""
import os
import re
import subprocess
import time

from conftest import AGENT, ROOT, clean_env

DEMO = os.path.join(ROOT, "scripts", "demo.sh")


# Runs CMD as a child subreaper: whatever CMD leaves behind (a daemonized
# postmaster included) becomes our child.  After CMD ends, prints
# "LEFT <pid> <comm>" for each survivor, stops it by pid and reaps it.
REAPER = r"""
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)            # PR_SET_CHILD_SUBREAPER
p = subprocess.Popen(sys.argv[1:])
try:
    rc = p.wait(timeout=170)
except subprocess.TimeoutExpired:          # let the demo clean up, bounded
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    print("TIMEOUT: the demo ran longer than 170 s", file=sys.stderr)
me = str(os.getpid())
while True:                                      # what already exited: reap
    try:
        if os.waitpid(-1, os.WNOHANG)[0] == 0:
            break
    except ChildProcessError:
        break
left = []
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/stat" % pid) as f:
            st = f.read()
    except OSError:
        continue
    if st.rsplit(")", 1)[1].split()[1] == me:
        left.append((int(pid), st.split("(", 1)[1].rsplit(")", 1)[0]))
for pid, comm in left:
    print("LEFT %d %s" % (pid, comm), file=sys.stderr)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
sys.exit(rc)
"""


def test_make_demo_runs_all_five_steps():
    env = clean_env(PYLON_AGENT_BIN=AGENT, NO_COLOR="1")
    if os.environ.get("PYLON_AGENT_CACHE"):
        env["PYLON_AGENT_CACHE"] = os.environ["PYLON_AGENT_CACHE"]
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/python3", "-c", REAPER, DEMO], env=env,
                       capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0
    out = p.stdout
    assert p.returncode == 0, out[-4000:] + p.stderr[-2000:]
    assert "LEFT " not in p.stderr, p.stderr
    assert "leftover" not in p.stderr, p.stderr   # the demo's own sweep found nothing
    assert took < 120, "the demo took %.0f s (warm: under two minutes)" % took

    # the start says what a first run costs, the end how long this one took
    assert "first run caches a Debian 13 root" in out or "the Pylon cache is ready" in out
    assert re.search(r"^demo done in \d+\.\d s .*: 5 of 5 steps held", out, re.M), out[-800:]
    assert "[FAILED]" not in out

    # 1. Kubernetes: 3 replicas + an HPA -> redis, proven, env file written
    assert "[ok] step 1: redis decided for deployment/chat replicas=3 + hpa/chat max=5" in out
    assert "mode:      redis" in out
    assert re.search(r'channel "chat:cluster:bus" proven in [\d.]+ ms', out)
    assert "export PYLON_CLUSTER_BUS='redis://:***@127.0.0.1:" in out
    # 2. the row inserted on A arrives on B's WebSocket client
    assert re.search(r"^B's client, \+\d+ ms: .*\"hello from A", out, re.M), out
    assert re.search(r"\[ok\] step 2: the row inserted on A was seen on B's WebSocket "
                     r"client after \d+ ms", out)
    assert out.count('[cluster] redis bus connected — channel="chat:cluster:bus"') == 2
    # 3. scale-down: noop; serve in the redis-mode pod reports drift
    assert "[ok] step 3: after scale-down decide says noop" in out
    assert "mode:      noop" in out
    assert ("drift: this pod runs redis but the topology now wants noop (1 peer: "
            "deployment/chat replicas=1") in out
    assert '"drift": true' in out and "pylon_agent_drift 1" in out
    assert "[ok] step 3: serve reports drift" in out
    # 4. a silent Redis: Pylon alone hangs, the agent fails in seconds with the cause
    assert re.search(r"alone \| still hanging after \d+ s", out)
    m = re.search(r"\[ok\] step 4: pylon-agent init failed in ([\d.]+) s \(exit 69.*\): "
                  r"read timeout: no reply to SUBSCRIBE within \d+ ms", out)
    assert m and float(m.group(1)) < 10, out
    assert re.search(r"^  verdict    NOT safe: the Redis bus is not usable", out, re.M)
    assert "[ok] step 4: check's verdict: NOT safe" in out
    # 5. where next
    assert "docs/operator-guide.md" in out and "charts/pylon" in out
    assert "[ok] step 5" in out

    # no password anywhere: every Redis URL with a password shows ***
    for u in re.findall(r"rediss?://[^\s'\"]*@", out + p.stderr):
        assert re.match(r"rediss?://[^:@]*:\*\*\*@", u), u
    # nothing it started is left
    assert "LEFT " not in p.stderr, p.stderr
