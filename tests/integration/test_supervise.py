"""serve -- CMD (the Fly shape, SPEC 2): CMD starts with the decided env only
after the proof, signals are forwarded, zombies reaped, the agent exits with
CMD's status (128+signal when killed), and a Redis outage never touches CMD.
"""
import os
import signal
import sys
import time

import pytest

from conftest import SLOW, clean_env, free_port
from test_serve import (status_json, INTERVAL, Redis, http, metrics, serve_args, start_serve, value,
                        wait_for)

# A CMD that records its env and every signal it gets, and exits 3 on
# SIGTERM after a short grace (so the agent's shutdown state is visible).
TRAPPER = r"""
import os, signal, sys, time
out = sys.argv[1]
def w(s):
    with open(out, "a") as f:
        f.write(s + "\n")
w("pid=%d" % os.getpid())
w("bus=%s" % os.environ.get("PYLON_CLUSTER_BUS", "<unset>"))
w("ns=%s" % os.environ.get("PYLON_CLUSTER_NAMESPACE", "<unset>"))
def h(sig, frame):
    w("sig=%s" % signal.Signals(sig).name)
    if sig == signal.SIGTERM:
        time.sleep(0.6)
        sys.exit(3)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
          signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, h)
w("ready")
while True:
    time.sleep(0.05)
"""


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def trapper(tmp_path):
    script = tmp_path / "trapper.py"
    script.write_text(TRAPPER)
    out = tmp_path / "out.txt"
    return [sys.executable, str(script), str(out)], str(out)


def test_cmd_gets_env_after_proof_and_signals_are_forwarded(procs, tmp_path):
    r = Redis(procs, tmp_path)          # not running: CMD must wait
    cmd, out = trapper(tmp_path)
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--namespace", "fly-app",
                                         "--redis-url", r.url, "--") + cmd)
    time.sleep(1.0)
    assert lines(out) == [], "CMD started before the bus was proven"
    assert http(port, "/startupz")[0] == 503
    r.start()
    wait_for(lambda: "ready" in lines(out), 15, what="CMD started")
    got = lines(out)
    assert "bus=%s" % r.url in got
    assert "ns=fly-app" in got
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
                signal.SIGQUIT):
        p.send_signal(sig)
        wait_for(lambda: "sig=%s" % sig.name in lines(out), 5, what=sig.name + " forwarded")
    assert p.poll() is None, "the agent must survive forwarded signals"
    assert http(port, "/readyz")[0] == 503  # SIGINT means shutting down
    p.send_signal(signal.SIGTERM)
    wait_for(lambda: "sig=SIGTERM" in lines(out), 5, what="SIGTERM forwarded")
    # CMD is still finishing: readiness fails at once, liveness holds.
    code, body, _ = http(port, "/readyz")
    assert (code, body) == (503, "shutting down\n")
    assert http(port, "/livez")[0] == 200
    assert p.wait(timeout=10 * SLOW) == 3


def test_sigterm_shutdown_state_then_cmd_status(procs, tmp_path):
    cmd, out = trapper(tmp_path)
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--") + cmd, wait="/readyz")
    wait_for(lambda: "ready" in lines(out), 10, what="CMD started")
    assert "bus=<unset>" in lines(out)       # noop: PYLON_CLUSTER_BUS unset
    assert "ns=pylon" in lines(out)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    wait_for(lambda: http(port, "/readyz")[0] == 503, 2, step=0.01, what="/readyz 503")
    assert http(port, "/livez")[0] == 200
    assert p.wait(timeout=10 * SLOW) == 3
    assert time.monotonic() - t0 >= 0.5   # it waited for CMD


@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 7", 7),
                                         ("kill -TERM $$", 128 + 15),
                                         ("kill -KILL $$", 128 + 9)])
def test_exit_status_is_cmds(procs, script, code):
    port = free_port()
    p = procs.start_agent(serve_args(port, "--", "sh", "-c", script))
    assert p.wait(timeout=15 * SLOW) == code


def test_killed_cmd_gives_128_plus_signal(procs, tmp_path):
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--", "sleep", "30"), wait="/readyz")
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)          # forwarded; sleep dies of it
    assert p.wait(timeout=10 * SLOW) == 128 + signal.SIGTERM


def test_exec_errors_127_and_126(procs, tmp_path):
    port = free_port()
    p = procs.start_agent(serve_args(port, "--", "/nonexistent/pylon"))
    assert p.wait(timeout=15 * SLOW) == 127
    assert "/nonexistent/pylon" in p.stderr.read().decode()
    f = tmp_path / "notexec"
    f.write_text("#!/bin/sh\n")
    os.chmod(f, 0o644)
    port = free_port()
    p = procs.start_agent(serve_args(port, "--", str(f)))
    assert p.wait(timeout=15 * SLOW) == 126


def _children(pid):
    """(pid, state) of every process whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == pid:
            out.append((int(d), rest[0]))
    return out


def test_orphans_are_adopted_and_reaped(procs, tmp_path):
    # CMD forks grandchildren and lets their parents die: they become
    # orphans of the agent (subreaper) and must not stay zombies.
    script = "for i in 1 2 3; do (sleep 0.8 & ); done; exec sleep 30"
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--", "sh", "-c", script), wait="/readyz")
    adopted = wait_for(lambda: [c for c in _children(p.pid) if c[0] != _cmd_pid(p.pid)]
                       or None, 5, what="orphans adopted by the agent")
    assert len(adopted) >= 1
    time.sleep(1.5)
    zombies = [c for c in _children(p.pid) if c[1] == "Z"]
    assert zombies == [], zombies
    # Only CMD is left.
    assert len(_children(p.pid)) == 1
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10 * SLOW) == 128 + signal.SIGTERM


def _cmd_pid(agent_pid):
    for pid, _ in _children(agent_pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] in (b"sleep", b"sh") and b"30" in argv:
            return pid
    return None


def test_redis_outage_never_touches_cmd(procs, tmp_path):
    r = Redis(procs, tmp_path).start()
    cmd, out = trapper(tmp_path)
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url,
                                         "--") + cmd, wait="/readyz")
    wait_for(lambda: "ready" in lines(out), 10, what="CMD started")
    before = [l for l in lines(out) if l.startswith("pid=")]
    r.kill()
    # --on-bus-loss report (default): the loss shows in /status, /readyz
    # stays 200, and CMD is left alone.
    wait_for(lambda: status_json(port)["redis"]["consecutive_failures"] >= 3, 5,
             what="3 failed checks")
    assert http(port, "/readyz")[0] == 200
    time.sleep(0.5)
    r.start()
    wait_for(lambda: status_json(port)["redis"]["healthy"], 10, what="healthy again")
    assert [l for l in lines(out) if l.startswith("pid=")] == before, "CMD restarted"
    assert not [l for l in lines(out) if l.startswith("sig=")], "CMD got a signal"
    assert p.poll() is None


def test_sigterm_before_cmd_started_exits_0(procs, tmp_path):
    r = Redis(procs, tmp_path)       # never started: the proof keeps retrying
    cmd, out = trapper(tmp_path)
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url,
                                         "--") + cmd)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=5 * SLOW) == 0
    assert lines(out) == []


def test_cmd_inherits_no_agent_sockets(procs, tmp_path):
    r = Redis(procs, tmp_path).start()
    out = tmp_path / "fds.txt"
    script = ("import os\n"
              "fds = {}\n"
              "for f in os.listdir('/proc/self/fd'):\n"
              "    try:\n"
              "        fds[f] = os.readlink('/proc/self/fd/' + f)\n"
              "    except OSError:\n"
              "        pass\n"
              "open(%r, 'w').write(repr(fds))\n" % str(out))
    port = free_port()
    p = procs.start_agent(serve_args(port, "--replicas", "2", "--redis-url", r.url, "--",
                                     sys.executable, "-c", script))
    assert p.wait(timeout=15 * SLOW) == 0, p.stderr.read().decode()
    fds = eval(out.read_text())
    sockets = {k: v for k, v in fds.items() if v.startswith("socket:")}
    assert "0" in fds and "2" in fds
    assert sockets == {}, "CMD inherited the agent's sockets: %r" % sockets


def test_as_pid_1_reaps_and_gets_signals(tmp_path):
    # In a container the supervisor is PID 1: signals from inside the
    # namespace reach it only because it blocks and collects them, and
    # every orphan of the namespace is its child.
    import shutil
    import subprocess
    from conftest import AGENT, WRAPPER
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ps") is None or WRAPPER:
        pytest.skip("needs unshare(1), ps(1) and no wrapper")
    probe = subprocess.run([unshare, "-fp", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a PID namespace here: %s" % probe.stderr.decode().strip())
    port = free_port()
    script = ("for i in 1 2 3; do (sleep 0.2 &); done; sleep 0.8; "
              "ps -o stat= ax > %s; kill -TERM 1; sleep 5" % (tmp_path / "ps.txt"))
    r = subprocess.run([unshare, "-fp", "--mount-proc", AGENT] +
                       serve_args(port, "--", "sh", "-c", script),
                       env=clean_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert "forwarding SIGTERM" in r.stderr
    states = (tmp_path / "ps.txt").read_text().split()
    assert states and not [s for s in states if s.startswith("Z")], states
