"""The released Pylon 0.11.3 over a TLS-only Redis through serve --bus-proxy
(issue 15): Pylon speaks plain RESP to 127.0.0.1:<port>, the agent relays it
to rediss:// (SNI, the CA from --redis-ca-file).

Two shapes:
- supervisor (Fly): `serve --bus-proxy 127.0.0.1:P ... -- pylon start`; the
  child's PYLON_CLUSTER_BUS is redis://:pw@127.0.0.1:P.
- native sidecar: `init --bus-proxy` writes the env file, `serve --bus-proxy`
  runs without a command for the pod's life, Pylon starts separately with
  the env file (`exec --env-file F --`).  Here serve can be killed and
  started again without killing Pylon.

Harness: realpylon.py in a private network namespace; Redis by redisfix
with tls-port only.  Every process is stopped by pid; every wait is bounded."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import AGENT, WRAPPER, clean_env, free_port, wait_port
from realpylon import WSClient, guest_token, insert, make_app
from redisfix import RespReader, make_tls_material, resp_encode
from test_real_pylon import env_for, netns, redis, world  # noqa: F401

PASSWORD = "rp-proxy-s3cret"
CHANNEL = "rp-app:cluster:bus"


@pytest.fixture
def tls(world):
    ps, servers, tmp = world
    mat = make_tls_material(str(tmp / "tls"))
    r = redis(world, tls=mat, requirepass=PASSWORD)
    return r, mat


def agent_env(r, mat, **extra):
    # the URL names localhost: the certificate's SAN, and SNI
    return env_for(PYLON_AGENT_REDIS_URL=r.url(host="localhost"),
                   PYLON_AGENT_REDIS_CA_FILE=mat.ca, **extra)


def serve_args(pport, hport, command=True, extra=()):
    a = WRAPPER + [AGENT, "serve", "--platform", "static", "--replicas", "2",
                   "--cluster-required=false", "--listen", "127.0.0.1:%d" % hport,
                   "--bus-proxy", "127.0.0.1:%d" % pport, "--interval", "1s"] + list(extra)
    return a + ["--"] if command else a


def http_status(hport, path, timeout=1.0):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (hport, path),
                                    timeout=timeout) as f:
            return f.status, f.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def wait_status(hport, path, want=200, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if http_status(hport, path)[0] == want:
            return True
        time.sleep(0.1)
    return False


def child_pid(pid, timeout=10.0):
    """The supervised Pylon: serve's only child."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.05)
    return None


def environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        raw = f.read()
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0")
                if "=" in kv)


def raw_client(pport, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", pport), timeout=timeout)
    rd = RespReader(s)
    s.sendall(resp_encode("AUTH", PASSWORD))
    assert rd.read() == "OK"
    return s, rd


def exchange(a, b, wb, tag, timeout=10.0):
    """A row inserted on A reaches B's WebSocket client, exactly once."""
    ta = guest_token(a.port)
    marker = "%s-%d-%d" % (tag, os.getpid(), time.monotonic_ns())
    insert(a.port, ta, "Note", {"body": marker})
    got = wb.wait_for(marker, timeout=timeout)
    return marker, got


def wait_exchange(a, b, wb, tag, timeout):
    """Rows inserted on A (one a second) until one reaches B: Pylon's
    subscriber reconnects with backoff 1, 2, 4 ... s after an outage."""
    end = time.monotonic() + timeout
    n = 0
    while time.monotonic() < end and n < 60:
        n += 1
        _, got = exchange(a, b, wb, tag, timeout=1.0)
        if got:
            return True
    return False


def supervised_pair(world, r, mat):
    ps, _, tmp = world
    out = []
    for _ in range(2):
        pport, hport = free_port(), free_port()
        p = ps.start(make_app(str(tmp)), env=agent_env(r, mat),
                     agent_args=serve_args(pport, hport))
        p.pport, p.hport = pport, hport
        out.append(p)
    return out


def test_two_supervised_pylons_exchange_a_change_over_tls_redis(world, tls):
    r, mat = tls
    a, b = supervised_pair(world, r, mat)
    for p in (a, b):
        assert p.wait_log("redis bus connected", 10), p.log()[-3000:]
        assert 'channel="%s"' % CHANNEL in p.log()
        kid = child_pid(p.pid)
        assert kid is not None, p.log()[-2000:]
        env = environ(kid)
        assert env["PYLON_CLUSTER_BUS"] == "redis://:%s@127.0.0.1:%d" % (PASSWORD, p.pport)
        assert not [k for k in env if k.startswith("PYLON_AGENT_")], env
        assert "FLY_API_TOKEN" not in env
        # the startup proof went through the proxy: /startupz says Pylon's path works
        assert http_status(p.hport, "/startupz")[0] == 200
        st, body = http_status(p.hport, "/status")
        assert PASSWORD not in body and "127.0.0.1:%d" % p.pport in body
    # Redis sees only TLS clients: each Pylon's two connections come through a proxy
    clients = r.cmd("CLIENT", "LIST")
    clients = clients.decode() if isinstance(clients, bytes) else clients
    assert clients.count("cmd=subscribe") >= 2, clients
    wb = WSClient(b.port, guest_token(b.port))
    try:
        time.sleep(0.5)
        marker, got = exchange(a, b, wb, "tls-row")
        assert got, "B never saw A's row through the proxies"
        wb.settle(1.0)
        assert len(wb.matching(marker)) == 1, wb.matching(marker)
        for p in (a, b):
            _, m = http_status(p.hport, "/metrics")
            conns = [ln for ln in m.splitlines()
                     if ln.startswith("pylon_agent_proxy_connections_total")]
            assert conns and int(float(conns[0].split()[-1])) >= 2, m
            assert " ERROR" not in p.log()
    finally:
        wb.close()


def _captured_change(pport, a, marker_row):
    """One real `change` envelope as Pylon publishes it (subscribed through
    the proxy while A inserts a row)."""
    sub, srd = raw_client(pport)
    sub.sendall(resp_encode("SUBSCRIBE", CHANNEL))
    assert srd.read()[0] == b"subscribe"
    insert(a.port, guest_token(a.port), "Note", {"body": marker_row})
    env = None
    end = time.monotonic() + 10
    while time.monotonic() < end and env is None:
        m = srd.read()
        if m[0] == b"message":
            e = json.loads(m[2])
            if e.get("kind") == "change" and marker_row in m[2].decode():
                env = e
    sub.close()
    return env


def _replace(obj, old, new):
    if isinstance(obj, dict):
        return {k: _replace(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace(v, old, new) for v in obj]
    if isinstance(obj, str):
        return obj.replace(old, new)
    return obj


def test_a_5mb_change_envelope_passes_both_proxies(world, tls):
    r, mat = tls
    a, b = supervised_pair(world, r, mat)
    wb = WSClient(b.port, guest_token(b.port))
    try:
        time.sleep(0.5)
        small = "small-%d" % os.getpid()
        env = _captured_change(a.pport, a, small)
        assert env is not None, "no change envelope seen on %s" % CHANNEL
        assert wb.wait_for(small, timeout=10)
        # the same change with a 5 MB body, from another instance id,
        # published through A's proxy; B receives it through its own
        big_marker = "big-%d-" % os.getpid()
        big = big_marker + "z" * (5 * 1024 * 1024)
        env5 = _replace(env, small, big)
        env5["instance_id"] = "pylon-0badc0de"
        payload = json.dumps(env5).encode()
        assert len(payload) > 5 * 1024 * 1024
        pub, prd = raw_client(a.pport, timeout=30)
        pub.sendall(resp_encode("PUBLISH", CHANNEL, payload))
        assert prd.read() >= 2          # both Pylons' subscriptions, via both proxies
        pub.close()
        got = wb.wait_for(big_marker, timeout=30)
        assert got, "B's client never received the 5 MB change"
        assert any(big in f for f in got), [len(f) for f in got]
        # the stream is intact after it: an ordinary row still passes
        _, got = exchange(a, b, wb, "after-big")
        assert got, "B deaf after the 5 MB envelope"
        for p in (a, b):
            assert p.proc.poll() is None, p.log()[-2000:]
    finally:
        wb.close()


def test_redis_restarted_under_load_pylon_reconnects_through_proxy(world, tls):
    r, mat = tls
    a, b = supervised_pair(world, r, mat)
    wb = WSClient(b.port, guest_token(b.port))
    stop = threading.Event()
    results = []

    def load():
        ta = guest_token(a.port)
        for i in range(2000):
            if stop.is_set():
                return
            try:
                insert(a.port, ta, "Note", {"body": "load-%d" % i})
                results.append(True)
            except (OSError, RuntimeError):
                results.append(False)
            time.sleep(0.01)

    t = threading.Thread(target=load, daemon=True)
    try:
        time.sleep(0.5)
        assert exchange(a, b, wb, "before")[1], "no exchange before the restart"
        t.start()
        time.sleep(1.0)
        before = len(wb.frames)
        assert before > 0
        r.kill()
        time.sleep(1.0)
        r.start()
        time.sleep(1.0)
        stop.set()
        t.join(timeout=10)
        assert wait_exchange(a, b, wb, "after-restart", 45), \
            "B never heard A again after the Redis restart:\n" + b.log()[-3000:]
        for p in (a, b):
            assert p.proc.poll() is None, p.log()[-2000:]
            _, m = http_status(p.hport, "/metrics")
            errs = [ln for ln in m.splitlines()
                    if ln.startswith("pylon_agent_proxy_upstream_errors_total ")]
            assert errs and int(float(errs[0].split()[-1])) >= 1, m
        assert results and all(results[:10])     # the load really ran
    finally:
        stop.set()
        wb.close()


class Agent:
    """A serve without a command (the native sidecar): started, killed and
    started again by pid."""

    def __init__(self, argv, env, log):
        self.argv, self.env, self.log_path = argv, env, log
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


def test_native_sidecar_shape_proxy_killed_pylon_reconnects_when_back(world, tls):
    r, mat = tls
    ps, servers, tmp = world
    pylons, agents = [], []
    try:
        for i in range(2):
            pport, hport = free_port(), free_port()
            ef = tmp / ("cluster-%d.env" % i)
            env = agent_env(r, mat)
            res = subprocess.run(
                WRAPPER + [AGENT, "init", "--platform", "static", "--replicas", "2",
                           "--cluster-required=false", "--env-file", str(ef),
                           "--bus-proxy", "127.0.0.1:%d" % pport],
                env=env, capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr
            text = ef.read_text()
            assert "redis://:%s@127.0.0.1:%d" % (PASSWORD, pport) in text, text
            assert "rediss://" not in text
            ag = Agent(serve_args(pport, hport, command=False,
                                  extra=["--env-file", str(ef)]),
                       env, str(tmp / ("serve-%d.log" % i))).start()
            agents.append(ag)
            servers.append(ag)          # world's teardown stops it by pid too
            assert wait_port(pport), ag.log()
            assert wait_status(hport, "/startupz"), ag.log()
            # Pylon from the env file alone: no URL, no CA in its environment
            p = ps.start(make_app(str(tmp)), env=env_for(),
                         agent_args=WRAPPER + [AGENT, "exec", "--env-file", str(ef), "--"])
            assert p.wait_log("redis bus connected", 10), p.log()[-3000:]
            assert environ(p.pid)["PYLON_CLUSTER_BUS"] == \
                "redis://:%s@127.0.0.1:%d" % (PASSWORD, pport)
            p.pport, p.hport = pport, hport
            pylons.append(p)
        a, b = pylons
        wb = WSClient(b.port, guest_token(b.port))
        try:
            time.sleep(0.5)
            assert exchange(a, b, wb, "sidecar")[1], "B never saw A's row"
            # B's proxy dies: B's subscription goes with it, Pylon lives
            agents[1].stop(signal.SIGKILL)
            assert agents[1].proc.returncode == -signal.SIGKILL
            t0 = time.monotonic()
            _, got = exchange(a, b, wb, "while-down", timeout=2.0)
            assert not got, "B heard A with its proxy down"
            assert b.proc.poll() is None and b.health()[0] == 200
            # the same serve again: Pylon reconnects to it by itself
            agents[1].start()
            assert wait_port(b.pport), agents[1].log()
            assert wait_exchange(a, b, wb, "back", 45), \
                "B never heard A after its proxy came back:\n" + b.log()[-3000:]
            assert time.monotonic() - t0 < 60
            assert b.proc.poll() is None and a.proc.poll() is None
            assert PASSWORD not in agents[1].log()
        finally:
            wb.close()
    finally:
        for p in pylons:
            p.stop()
        for ag in agents:
            ag.stop()
