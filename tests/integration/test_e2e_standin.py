"""End to end: `init` writes the env file, two Pylon stand-ins start through
`pylon-agent exec --env-file`, and a mutation on A reaches B (not A) over the
real Redis bus; with a noop env file nothing crosses."""
import json
import os
import queue
import subprocess
import sys
import threading
import time

from conftest import ROOT, SLOW, clean_env, free_port, run_agent
from redisfix import redis_factory  # noqa: F401

STANDIN = os.path.join(ROOT, "tests", "fakes", "standin.py")
NASTY = "e2e p@ss:w/rd'\"%"
# PYLON_CLUSTER_REQUIRED=1 (the agent's default in redis mode) makes Pylon
# and the stand-in refuse to boot without a Postgres DATABASE_URL; the
# stand-in only checks its form (the real-Pylon tests run real Postgres).
PG_ENV = {"DATABASE_URL": "postgres://standin@127.0.0.1:1/none"}


class Standin:
    """A stand-in started through `pylon-agent exec --env-file F`."""

    def __init__(self, procs, envfile, name):
        self.name = name
        self.p = procs.start_agent(["exec", "--env-file", str(envfile), "--",
                                    sys.executable, STANDIN], env=clean_env(**PG_ENV),
                                   stdin=subprocess.PIPE, text=True, bufsize=1)
        self.lines, self.err = queue.Queue(), []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err.append),
                         daemon=True).start()
        self.ready = self.expect("ready ")
        self.listening()

    def listening(self, timeout=5.0):
        """As Pylon, the stand-in subscribes in a thread after its ready
        line: wait for "redis subscriber listening" before publishing."""
        if "bus=redis" not in self.ready:
            return
        end = time.monotonic() + timeout * SLOW
        while time.monotonic() < end:
            if any("redis subscriber listening" in e for e in self.err):
                return
            time.sleep(0.02)
        raise AssertionError("%s: never subscribed: %r" % (self.name, self.err))

    @staticmethod
    def _pump(f, put):
        for line in f:
            put(line.rstrip("\n"))

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def expect(self, prefix, timeout=5.0):
        end = time.monotonic() + timeout * SLOW
        seen = []
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    break
                continue
            seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError("%s: no %r line within %.0fs; saw %r; stderr %r; rc %r" %
                             (self.name, prefix, timeout, seen, self.err, self.p.poll()))

    def drain(self, quiet=0.4):
        """Every stdout line that arrives until quiet seconds pass."""
        out = []
        end = time.monotonic() + quiet * SLOW
        while time.monotonic() < end:
            try:
                out.append(self.lines.get(timeout=0.05))
            except queue.Empty:
                pass
        return out


def init(envfile, url, replicas, ns="e2e"):
    res = run_agent(["init", "--platform", "static", "--replicas", str(replicas),
                     "--namespace", ns, "--redis-url", url, "--env-file", str(envfile),
                     "--timeout", "5s"])
    assert res.returncode == 0, res.stderr
    return res


def test_redis_mutation_crosses(redis_factory, procs, tmp_path):
    r = redis_factory(requirepass=NASTY)
    envf = tmp_path / "cluster.env"
    res = init(envf, r.url(), 2)
    assert "mode=redis" in envf.read_text()
    assert NASTY not in res.stderr and NASTY not in res.stdout

    a = Standin(procs, envf, "A")
    b = Standin(procs, envf, "B")
    for s in (a, b):
        assert "bus=redis" in s.ready and "channel=e2e:cluster:bus" in s.ready, s.ready
    assert a.ready != b.ready   # two instance ids

    obs = r.subscribe("e2e:cluster:bus")
    a.send('mutate {"row": 1, "table": "todos"}')
    a.expect("published ")
    got = b.expect("received ")
    assert json.loads(got.split(" ", 1)[1]) == {"row": 1, "table": "todos"}
    assert not any(l.startswith("received") for l in a.drain()), "A received its own change"
    # as Pylon: one insert publishes a change and a crdt envelope
    kinds = sorted(json.loads(m)["kind"] for m in obs.wait_count(2))
    assert kinds == ["change", "crdt"], kinds

    b.send('mutate {"row": 2}')
    assert json.loads(a.expect("received ").split(" ", 1)[1]) == {"row": 2}
    assert not any(l.startswith("received") for l in b.drain())

    # an envelope of an unknown kind (the agent's probe) is dropped by both,
    # without a log line (as Pylon 0.11.3)
    n_err = len(a.err) + len(b.err)
    r.cmd("PUBLISH", "e2e:cluster:bus",
          '{"instance_id":"pylon-agent-00000000","kind":"agent_probe","payload":{"nonce":"0"}}')
    for s in (a, b):
        assert not any(l.startswith("received") for l in s.drain())
    assert len(a.err) + len(b.err) == n_err, (a.err, b.err)

    for s in (a, b):
        s.send("quit")
        assert s.p.wait(timeout=5 * SLOW) == 0


def test_noop_nothing_crosses(redis_factory, procs, tmp_path):
    r = redis_factory()
    obs = r.subscribe("e2e:cluster:bus")
    envf = tmp_path / "cluster.env"
    init(envf, r.url(), 1)
    text = envf.read_text()
    assert "unset PYLON_CLUSTER_BUS" in text and "mode=noop" in text
    assert obs.settle() == []   # noop: no proof, nothing published

    a = Standin(procs, envf, "A")
    b = Standin(procs, envf, "B")
    assert "bus=noop" in a.ready and "bus=noop" in b.ready
    a.send('mutate {"row": 1}')
    a.expect("local ")
    assert not any(l.startswith("received") for l in b.drain(0.6))
    assert obs.settle() == []
    for s in (a, b):
        s.send("quit")
        assert s.p.wait(timeout=5 * SLOW) == 0


def test_standin_exits_on_refused_bus_printing_the_url(procs):
    # the Pylon behaviour the agent protects against: exit 1, and the crash
    # line carries the URL with its password (docs/bus.md warns about it)
    url = "redis://:pw-in-crash-line@127.0.0.1:%d" % free_port()
    env = clean_env(PYLON_CLUSTER_BUS=url, PYLON_CLUSTER_NAMESPACE="e2e")
    p = subprocess.run([sys.executable, STANDIN], env=env, input="", text=True,
                       capture_output=True, timeout=20)
    assert p.returncode == 1, p.stderr
    assert url in p.stderr
    assert "ready" not in p.stdout


def test_standin_hangs_on_a_silent_endpoint(procs):
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        env = clean_env(PYLON_CLUSTER_BUS="redis://127.0.0.1:%d" % srv.getsockname()[1])
        p = procs.start([sys.executable, STANDIN], env=env, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2.0)
        assert p.poll() is None          # neither exits ...
        p.kill()
        out, err = p.communicate(timeout=10)
        assert b"ready" not in out and err == b""   # ... nor says anything
    finally:
        srv.close()


def test_exec_without_env_file_proves_then_runs(redis_factory, procs, tmp_path):
    # the Fly shape: exec decides, proves (one envelope), then execs Pylon
    r = redis_factory(requirepass=NASTY)
    obs = r.subscribe("e2e:cluster:bus")
    envf = tmp_path / "cluster.env"
    init(envf, r.url(), 2)
    assert len(obs.wait_count(1)) == 1
    a = Standin(procs, envf, "A")

    class Direct(Standin):
        def __init__(self):
            self.name = "B"
            self.p = procs.start_agent(
                ["exec", "--platform", "static", "--replicas", "2", "--namespace", "e2e",
                 "--redis-url", r.url(), "--timeout", "5s", "--", sys.executable, STANDIN],
                env=clean_env(**PG_ENV), stdin=subprocess.PIPE, text=True, bufsize=1)
            self.lines, self.err = queue.Queue(), []
            threading.Thread(target=self._pump, args=(self.p.stdout, self.lines.put),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(self.p.stderr, self.err.append),
                             daemon=True).start()
            self.ready = self.expect("ready ")
            self.listening()

    b = Direct()
    assert "bus=redis" in b.ready
    # B's agent published its one probe; A dropped it silently (unknown kind)
    assert len([m for m in obs.settle() if b"agent_probe" in m]) == 2
    assert not any(l.startswith("received") for l in a.drain())
    assert not any("agent_probe" in e for e in a.err), a.err
    a.send('mutate {"from": "A"}')
    assert json.loads(b.expect("received ").split(" ", 1)[1]) == {"from": "A"}
    assert not any(l.startswith("received") for l in a.drain())
    assert NASTY not in "".join(a.err + b.err)
    for s in (a, b):
        s.send("quit")
        assert s.p.wait(timeout=5 * SLOW) == 0
