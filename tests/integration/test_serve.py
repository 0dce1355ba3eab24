"""serve (SPEC 2, 6, 7) through the real binary: every endpoint's codes and
bodies over real HTTP, Prometheus text that a strict parser accepts, a real
redis-server killed and restarted under it, exactly one bus message per
start, no password anywhere, drift through the fake Fly API, SIGTERM, and
flat memory over 10k requests.

The helpers at the top are shared with test_supervise.py and test_probe.py.
"""
import json
import math
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, clean_env, free_port, wait_port
from redisfix import RedisServer, Subscriber

PASSWORD = "s3cret-Pa55word"
INTERVAL = "200ms"


# ---- helpers ---------------------------------------------------------------

def wait_for(pred, timeout, step=0.05, what="condition"):
    """Polls pred() until truthy; returns its value or fails the test."""
    end = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(step)
    pytest.fail("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


def http(port, path, method="GET", host="127.0.0.1", timeout=5.0):
    """One real HTTP request; returns (status, body text, headers)."""
    url = "http://%s:%d%s" % (host if ":" not in host else "[%s]" % host, port, path)
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def http_from(src, port, path, timeout=5.0):
    """GET path from source address src (a second loopback address keeps
    the per-IP connection limit of the server out of the way)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                   source_address=(src, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(), r.headers
    finally:
        c.close()


def status_json(port):
    code, body, hdr = http(port, "/status")
    assert code == 200
    assert hdr["Content-Type"] == "application/json"
    return json.loads(body)


class Redis:
    """A real redis-server (tests/integration/redisfix.py) on a free loopback
    port with a password, killable and restartable on the same port; every
    process is registered with `procs` so teardown stops it by pid."""

    def __init__(self, procs, tmp_path, password=PASSWORD, port=None):
        self.procs = procs
        self.password = password
        self.server = RedisServer(str(tmp_path), requirepass=password, port=port)
        self.port = self.server.port

    @property
    def url(self):
        return self.server.url()

    def start(self):
        self.server.start()
        self.procs.items.append(self.server.proc)
        return self

    def kill(self):
        self.server.kill()


def serve_args(port, *extra, interval=INTERVAL):
    return ["serve", "--platform", "static", "--listen", "127.0.0.1:%d" % port,
            "--interval", interval] + list(extra)


def start_serve(procs, args, env=None, wait="/livez"):
    """Starts serve and waits for its HTTP server (and `wait` == 200)."""
    port = int(re.search(r":(\d+)$", args[args.index("--listen") + 1]).group(1))
    p = procs.start_agent(args, env=env if env is not None else clean_env())
    wait_port(port, timeout=10)
    if wait:
        wait_for(lambda: http(port, wait)[0] == 200, 15, what=wait + " == 200")
    return p, port


def stderr_of(procs, p, sig=signal.SIGTERM):
    procs.stop(p, sig)
    return p.stderr.read().decode()


# ---- a strict Prometheus text-format (0.0.4) parser -------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)?\})? (\S+)(?: (-?\d+))?$" % (_NAME, _LABEL, _LABEL))
_VALUE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$")


def parse_prometheus(text):
    """Returns {family: {"type", "help", "samples": [(name, labels, value)]}};
    fails on anything the 0.0.4 text format does not allow."""
    assert text.endswith("\n"), "exposition must end with a newline"
    fams, current = {}, None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        assert line == line.strip() and line, "line %d: blank or padded: %r" % (n, line)
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            assert re.fullmatch(_NAME, name), line
            assert name not in fams, "duplicate family %s" % name
            fams[name] = {"help": help_, "type": None, "samples": []}
            current = name
            continue
        if line.startswith("# TYPE "):
            name, typ = line[7:].split(" ")
            assert name == current, "TYPE for %s after HELP for %s" % (name, current)
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert fams[name]["type"] is None and not fams[name]["samples"]
            fams[name]["type"] = typ
            continue
        assert not line.startswith("#"), "line %d: stray comment %r" % (n, line)
        m = _SAMPLE.match(line)
        assert m, "line %d: not a sample: %r" % (n, line)
        name, labels, value = m.group(1), m.group(2), m.group(3)
        assert _VALUE.match(value), "line %d: bad value %r" % (n, value)
        fam = current
        typ = fams[fam]["type"]
        if typ == "histogram":
            assert name in (fam + "_bucket", fam + "_sum", fam + "_count"), line
        elif typ == "counter":
            assert name == fam and fam.endswith("_total"), line
        else:
            assert name == fam, "sample %s outside its family %s" % (name, fam)
        lab = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        fams[fam]["samples"].append((name, lab, float(value)))
    for name, f in fams.items():
        assert f["type"], "family %s without TYPE" % name
        if f["type"] == "histogram":
            buckets = [(s[1]["le"], s[2]) for s in f["samples"] if s[0].endswith("_bucket")]
            assert buckets and buckets[-1][0] == "+Inf"
            les = [float(b[0]) for b in buckets]
            assert les == sorted(les), "buckets out of order"
            counts = [b[1] for b in buckets]
            assert counts == sorted(counts), "buckets not cumulative"
            count = [s[2] for s in f["samples"] if s[0].endswith("_count")]
            assert count == [counts[-1]], "+Inf bucket != _count"
            assert len([s for s in f["samples"] if s[0].endswith("_sum")]) == 1
    return fams


def metrics(port):
    code, body, hdr = http(port, "/metrics")
    assert code == 200
    assert hdr["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(body), body


def value(fams, name, **labels):
    """The value of the first sample called name with these labels."""
    for fam in fams.values():
        for s in fam["samples"]:
            if s[0] == name and all(s[1].get(k) == v for k, v in labels.items()):
                return s[2]
    return None


REQUIRED = ["pylon_agent_bus_mode", "pylon_agent_peers", "pylon_agent_bus_ready",
            "pylon_agent_bus_check_seconds", "pylon_agent_bus_check_failures_total",
            "pylon_agent_bus_subscribers", "pylon_agent_drift",
            "pylon_agent_discovery_errors_total", "pylon_agent_build_info"]


# ---- endpoints ---------------------------------------------------------------

def test_noop_endpoints_codes_and_bodies(procs):
    port = free_port()
    p, _ = start_serve(procs, serve_args(port), wait="/startupz")
    for path in ("/livez", "/startupz", "/readyz"):
        code, body, hdr = http(port, path)
        assert (code, body) == (200, "ok\n"), path
        assert hdr["Content-Type"].startswith("text/plain")
    st = status_json(port)
    assert list(st) == ["mode", "reason", "platform", "peers", "namespace", "channel",
                        "redis", "instance", "drift", "discovery_failed",
                        "adopted_from_init", "version", "own_pylon"]
    assert st["mode"] == "noop" and st["peers"] == 1 and st["platform"] == "static"
    assert st["channel"] == "pylon:cluster:bus" and st["drift"] is False
    assert st["redis"] == {"url": None, "proven": False, "latency_ms": None, "error": None,
                           "healthy": False, "consecutive_failures": 0,
                           "check_failures_total": 0, "subscribers": None,
                           "subscribers_state": None}
    assert st["adopted_from_init"] is False
    assert st["version"] == "0.1.0" and st["instance"]
    fams, _ = metrics(port)
    for name in REQUIRED:
        assert name in fams, name
    assert value(fams, "pylon_agent_bus_mode", mode="noop") == 1
    assert value(fams, "pylon_agent_bus_mode", mode="redis") == 0
    assert value(fams, "pylon_agent_peers") == 1
    assert value(fams, "pylon_agent_bus_ready") == 1
    assert value(fams, "pylon_agent_build_info", version="0.1.0") == 1

    code, body, _ = http(port, "/nope")
    assert code == 404 and body.endswith("\n") and body.count("\n") == 1
    code, body, hdr = http(port, "/readyz", method="POST")
    assert code == 405 and "GET" in hdr["Allow"]
    assert http(port, "/metrics", method="DELETE")[0] == 405
    assert http(port, "/readyz", method="HEAD")[0] == 200
    assert p.poll() is None


def test_redis_mode_status_metrics_and_no_password(procs, tmp_path):
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "3", "--namespace", "my-app",
                                         "--redis-url", r.url), wait="/startupz")
    assert http(port, "/readyz")[:2] == (200, "ok\n")
    wait_for(lambda: value(metrics(port)[0], "pylon_agent_bus_check_seconds_count") >= 3,
             10, what="three checks")
    st = status_json(port)
    assert st["mode"] == "redis" and st["peers"] == 3
    assert st["channel"] == "my-app:cluster:bus" and st["namespace"] == "my-app"
    assert st["redis"]["proven"] is True and st["redis"]["error"] is None
    assert st["redis"]["url"] == "redis://:***@127.0.0.1:%d" % r.port
    assert isinstance(st["redis"]["latency_ms"], (int, float)) and st["redis"]["latency_ms"] >= 0
    fams, text = metrics(port)
    assert value(fams, "pylon_agent_bus_mode", mode="redis") == 1
    assert value(fams, "pylon_agent_bus_ready") == 1
    # The agent holds no subscription: NUMSUB counts Pylon processes only.
    assert value(fams, "pylon_agent_bus_subscribers") == 0
    assert value(fams, "pylon_agent_bus_check_failures_total") == 0
    for path in ("/status", "/metrics", "/readyz", "/startupz", "/livez"):
        assert PASSWORD not in http(port, path)[1], path
    assert PASSWORD not in text
    err = stderr_of(procs, p)
    assert PASSWORD not in err
    assert "bus mode: redis" in err


def test_startup_waits_for_the_proof(procs, tmp_path):
    r = Redis(procs, tmp_path)  # not started yet
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url))
    # The agent retries the proof; meanwhile startup and readiness fail
    # with a one-line reason and liveness holds.
    code, body, _ = http(port, "/startupz")
    assert code == 503 and body.startswith("starting: ") and body.count("\n") == 1
    wait_for(lambda: "refused" in http(port, "/startupz")[1], 10, what="refused in /startupz")
    code, body, _ = http(port, "/readyz")
    assert code == 503 and "proving the bus" in body
    assert http(port, "/livez")[0] == 200
    st = status_json(port)
    assert st["mode"] == "redis" and st["redis"]["proven"] is False
    assert "refused" in st["redis"]["error"]
    assert PASSWORD not in json.dumps(st)
    r.start()
    wait_for(lambda: http(port, "/startupz")[0] == 200, 20, what="proof after Redis starts")
    assert http(port, "/readyz")[0] == 200
    assert status_json(port)["redis"]["proven"] is True


def _flood(server, channel, stop, size=5 * 1024 * 1024):
    """Publishes size-byte envelopes on channel until stop is set (Pylon's
    whole-document crdt snapshots); tolerates Redis going away."""
    from redisfix import RespReader, resp_encode
    msg = resp_encode("PUBLISH", channel, "x" * size)
    while not stop.is_set():
        try:
            s = server._connect()
            try:
                while not stop.is_set():
                    s.sendall(msg)
                    RespReader(s).read()
                    stop.wait(0.05)
            finally:
                s.close()
        except (OSError, RuntimeError, ValueError):
            stop.wait(0.1)


@pytest.mark.parametrize("policy", ["report", "unready"])
def test_redis_outage_and_recovery(procs, tmp_path, policy):
    # SPEC 6: steady-state bus loss is logged, counted and reported; only
    # --on-bus-loss unready fails /readyz (after 3 failed checks).  Pylon's
    # 5 MB envelopes flow on the channel all along: the agent holds no
    # subscription, so they cost it nothing and never fail a check.
    import threading
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url,
                                         "--namespace", "big", "--on-bus-loss", policy),
                       wait="/readyz")
    stop = threading.Event()
    th = threading.Thread(target=_flood, args=(r.server, "big:cluster:bus", stop), daemon=True)
    th.start()
    try:
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_bus_check_seconds_count") >= 5,
                 10, what="five checks under the flood")
        fams, _ = metrics(port)
        assert value(fams, "pylon_agent_bus_check_failures_total") == 0
        assert http(port, "/readyz")[0] == 200
        r.kill()
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_bus_check_failures_total") >= 3,
                 4.0, step=0.02, what="3 failed checks")
        code, body, _ = http(port, "/readyz")
        if policy == "unready":
            wait_for(lambda: http(port, "/readyz")[0] == 503, 1.0, what="/readyz 503")
            code, body, _ = http(port, "/readyz")
            assert body.startswith("bus check failed") and body.count("\n") == 1
        else:
            assert (code, body) == (200, "ok\n")
        assert http(port, "/livez")[0] == 200
        assert http(port, "/startupz")[0] == 200
        fams, _ = metrics(port)
        assert value(fams, "pylon_agent_bus_ready") == 0
        assert value(fams, "pylon_agent_ready") == (0 if policy == "unready" else 1)
        st = status_json(port)
        assert st["redis"]["healthy"] is False and st["redis"]["consecutive_failures"] >= 3
        assert st["redis"]["error"] and PASSWORD not in st["redis"]["error"]
        # Back on the same port: healthy again without a restart of the agent.
        r.start()
        wait_for(lambda: status_json(port)["redis"]["healthy"], 10, what="healthy after restart")
        assert http(port, "/readyz")[0] == 200
        fams, _ = metrics(port)
        assert value(fams, "pylon_agent_bus_ready") == 1
        assert value(fams, "pylon_agent_bus_reconnects_total") >= 1
        assert status_json(port)["redis"]["error"] is None
        assert p.poll() is None
    finally:
        stop.set()
        th.join(5)
    err = stderr_of(procs, p)
    assert "bus unavailable after 3 failed checks" in err and "bus recovered" in err
    assert ("/readyz now answers 503" in err) == (policy == "unready")
    assert PASSWORD not in err


def test_hung_redis_fails_readiness_then_recovers(procs, tmp_path):
    # A Redis that accepts nothing (SIGSTOP) must fail the checks by their
    # timeout (interval clamped to >= 500 ms), not hang the loop.
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url,
                                         "--on-bus-loss", "unready"), wait="/readyz")
    os.kill(r.server.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_for(lambda: http(port, "/readyz")[0] == 503, 6, what="/readyz 503")
        assert time.monotonic() - t0 < 3 * (0.2 + 0.5) + 2.0 * SLOW
        # Handlers never wait on Redis.
        t1 = time.monotonic()
        for path in ("/livez", "/status", "/metrics"):
            assert http(port, path, timeout=1.0)[0] == 200
        assert time.monotonic() - t1 < 1.0 * SLOW
        assert "timeout" in status_json(port)["redis"]["error"].lower() or \
            "timed out" in status_json(port)["redis"]["error"].lower()
    finally:
        os.kill(r.server.pid, signal.SIGCONT)
    wait_for(lambda: http(port, "/readyz")[0] == 200, 10, what="/readyz 200 after SIGCONT")


def test_exactly_one_bus_message_per_start(procs, tmp_path):
    r = Redis(procs, tmp_path).start()
    sub = Subscriber(r.server, "one:cluster:bus", password=PASSWORD)
    try:
        port = free_port()
        p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--namespace", "one",
                                             "--redis-url", r.url), wait="/readyz")
        # Many intervals: at 200 ms, 3 s is ~15 checks.
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_bus_check_seconds_count") >= 12,
                 10, what="12 checks")
        msgs = sub.settle(0.3)
        assert len(msgs) == 1, msgs
        env = json.loads(msgs[0])
        assert env["kind"] == "agent_probe"
        assert re.fullmatch(r"pylon-agent-[0-9a-f]{8}", env["instance_id"])
        # Our raw subscriber only: the agent keeps no subscription.
        assert value(metrics(port)[0], "pylon_agent_bus_subscribers") == 1
    finally:
        sub.close()


def test_numsub_warning_when_namespace_is_shared(procs, tmp_path):
    r = Redis(procs, tmp_path).start()
    subs = [Subscriber(r.server, "shared:cluster:bus", password=PASSWORD)
            for _ in range(4)]
    try:
        port = free_port()
        p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--namespace", "shared",
                                             "--redis-url", r.url), wait="/readyz")
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_bus_subscribers") == 4, 5,
                 what="4 subscribers")
        assert value(metrics(port)[0], "pylon_agent_bus_namespace_shared") == 1
        assert status_json(port)["redis"]["subscribers_state"] == "shared"
        err = stderr_of(procs, p)
        assert "4 Pylon subscribers on the channel, more than 2 peers" in err
    finally:
        for s in subs:
            s.close()


def test_idle_and_slow_clients_do_not_block_probes(procs):
    port = free_port()
    p, _ = start_serve(procs, serve_args(port), wait="/readyz")
    idle = []
    try:
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            if i % 2:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")   # never finished
            idle.append(s)
        # Probes come from another address: 127.0.0.1 is at its per-IP
        # connection limit (httpd.h), which is the point of that limit.
        t0 = time.monotonic()
        for _ in range(20):
            assert http_from("127.0.0.2", port, "/readyz", timeout=2.0)[0] == 200
        assert time.monotonic() - t0 < 2.0 * SLOW
        # A huge header is refused, not buffered without bound.
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=("127.0.0.2", 0)) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 +
                      b"\r\n\r\n")
            head = s.recv(200)
        assert head.startswith(b"HTTP/1.1 4"), head
    finally:
        for s in idle:
            s.close()
    assert http_from("127.0.0.2", port, "/livez")[0] == 200


# ---- shutdown -----------------------------------------------------------------

def test_sigterm_alone_exits_0_quickly(procs):
    port = free_port()
    p, _ = start_serve(procs, serve_args(port), wait="/readyz")
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=5 * SLOW)
    assert rc == 0
    assert time.monotonic() - t0 < 1.0 * SLOW
    assert "shutting down" in p.stderr.read().decode()


def test_sigterm_while_proof_is_retrying(procs, tmp_path):
    # The loop is inside a Redis attempt with its own deadline; the agent
    # must not wait for it.
    r = Redis(procs, tmp_path)
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url,
                                         "--timeout", "60s"))
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=5 * SLOW) == 0
    assert time.monotonic() - t0 < 1.0 * SLOW


# ---- configuration errors -------------------------------------------------------

@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:0", "[::1", "999.1.1.1:80"])
def test_bad_listen_is_config_error(listen):
    from conftest import run_agent
    r = run_agent(["serve", "--platform", "static", "--listen", listen], timeout=10)
    assert r.returncode == 78, r.stderr
    assert "--listen" in r.stderr and r.stderr.count("\n") == 1


def test_listen_port_in_use(procs):
    from conftest import run_agent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run_agent(["serve", "--platform", "static", "--listen", "127.0.0.1:%d" % port],
                      timeout=10)
    assert r.returncode == 78
    assert "in use" in r.stderr


def test_listen_ipv6(procs):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    p = procs.start_agent(["serve", "--platform", "static", "--listen", "[::]:%d" % port])
    wait_for(lambda: _connects("::1", port), 10, what="listening on [::1]")
    assert http(port, "/livez", host="::1")[0] == 200
    # [::] is dual-stack: IPv4 clients get in too.
    assert http(port, "/livez")[0] == 200


def _connects(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def test_peers_without_redis_url_exits_78():
    from conftest import run_agent
    port = free_port()
    r = run_agent(serve_args(port, "--replicas", "3"), timeout=10)
    assert r.returncode == 78, r.stderr
    assert "3" in r.stderr


# ---- drift and discovery errors via the fake Fly API ----------------------------

def _fly_env(fake):
    from fly_fake import APP, SELF_ID, TOKEN
    # The Machines API resync (--fly-resolver none); the DNS one is in
    # test_fly.py.
    return clean_env(FLY_APP_NAME=APP, FLY_MACHINE_ID=SELF_ID, FLY_API_TOKEN=TOKEN,
                     FLY_PROCESS_GROUP="app", PYLON_AGENT_FLY_RESOLVER="none",
                     PYLON_AGENT_FLY_JITTER_MS="0")


def _fly_args(port, fake, *extra):
    return ["serve", "--platform", "fly", "--fly-api-url", fake.url,
            "--listen", "127.0.0.1:%d" % port, "--interval", INTERVAL,
            "--resync", "1s", "--api-timeout", "2s"] + list(extra)


@pytest.mark.parametrize("policy", ["report", "unready"])
def test_drift_noop_pod_scaled_to_three(procs, tmp_path, policy):
    fly_fake = pytest.importorskip("fly_fake")
    r = Redis(procs, tmp_path).start()
    fake = fly_fake.FlyFake("one").start()
    try:
        port = free_port()
        p, _ = start_serve(procs, _fly_args(port, fake, "--redis-url", r.url,
                                            "--on-drift", policy), env=_fly_env(fake),
                           wait="/readyz")
        st = status_json(port)
        assert st["mode"] == "noop" and st["drift"] is False and st["platform"] == "fly"
        with fake.lock:
            fake.machines = json.loads(json.dumps(fly_fake.SCENARIOS["three_regions"]))
        wait_for(lambda: status_json(port)["drift"], 8, what="drift in /status")
        st = status_json(port)
        assert st["mode"] == "noop" and st["peers"] == 3
        fams, _ = metrics(port)
        assert value(fams, "pylon_agent_drift") == 1
        assert value(fams, "pylon_agent_peers") == 3
        code, body, _ = http(port, "/readyz")
        if policy == "unready":
            assert code == 503 and body.startswith("drift")
        else:
            assert code == 200
        assert http(port, "/livez")[0] == 200
        # Back to one machine: drift clears.
        with fake.lock:
            fake.machines = json.loads(json.dumps(fly_fake.SCENARIOS["one"]))
        wait_for(lambda: not status_json(port)["drift"], 8, what="drift cleared")
        assert http(port, "/readyz")[0] == 200
        err = stderr_of(procs, p)
        assert "drift: this pod runs noop but the topology now wants redis" in err
        assert "drift cleared" in err
    finally:
        fake.stop()


@pytest.mark.parametrize("policy", ["report", "unready"])
def test_env_file_from_init_is_the_pods_mode(procs, tmp_path, policy):
    # Kubernetes shapes with an init container: Pylon runs with the env
    # file init wrote.  When the topology changed in between, serve must
    # report the pod's real mode and drift from its first decision.
    from conftest import run_agent
    r = Redis(procs, tmp_path).start()
    env_file = tmp_path / "cluster.env"
    res = run_agent(["init", "--platform", "static", "--env-file", str(env_file)])
    assert res.returncode == 0, res.stderr
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "3", "--redis-url", r.url,
                                         "--env-file", str(env_file), "--on-drift", policy,
                                         "--resync", "1s"),
                       wait="/startupz")
    # serve adopts init's decision (no second discovery at start); the
    # first resync (at a random point of --resync) finds the drift.
    assert status_json(port)["adopted_from_init"] is True
    wait_for(lambda: status_json(port)["drift"], 5, what="drift after the first resync")
    st = status_json(port)
    assert st["mode"] == "noop" and st["drift"] is True and st["peers"] == 3
    assert value(metrics(port)[0], "pylon_agent_drift") == 1
    assert http(port, "/readyz")[0] == (503 if policy == "unready" else 200)
    # The same file with a matching topology: no drift.
    procs.stop(p)
    port = free_port()
    start_serve(procs, serve_args(port, "--env-file", str(env_file)), wait="/readyz")
    st = status_json(port)
    assert st["mode"] == "noop" and st["drift"] is False


def test_discovery_errors_keep_the_last_decision(procs):
    fly_fake = pytest.importorskip("fly_fake")
    fake = fly_fake.FlyFake("one").start()
    try:
        port = free_port()
        p, _ = start_serve(procs, _fly_args(port, fake), env=_fly_env(fake), wait="/readyz")
        with fake.lock:
            fake.fault = "500"
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_discovery_errors_total") >= 1,
                 15, what="a discovery error counted")
        st = status_json(port)
        assert st["mode"] == "noop" and st["peers"] == 1 and st["drift"] is False
        assert http(port, "/readyz")[0] == 200
        assert p.poll() is None
    finally:
        fake.stop()


# ---- memory ---------------------------------------------------------------------

def _sanitized():
    from conftest import AGENT
    with open(AGENT, "rb") as f:
        return b"__asan_init" in f.read()


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_rss_flat_over_10k_requests(procs, tmp_path):
    # Under valgrind/ASan RSS says nothing about the agent (shadow memory,
    # quarantine): there every answer is still checked, and ASan's leak
    # check at exit does the memory part.
    measured = not (SLOW > 1 or _sanitized())
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--redis-url", r.url),
                       wait="/readyz")
    paths = ["/metrics", "/status", "/readyz", "/livez", "/startupz", "/nope"]
    for i in range(1000):
        _raw_get(port, paths[i % len(paths)])
    before = _rss_kb(p.pid)
    for i in range(10000 if SLOW == 1 else 1000):
        data = _raw_get(port, paths[i % len(paths)])
        assert data.startswith(b"HTTP/1.")
        assert data.split(b" ", 2)[1] == (b"404" if paths[i % len(paths)] == "/nope" else b"200")
    after = _rss_kb(p.pid)
    if measured:
        assert after - before < 1024, "RSS grew %d kB over 10k requests" % (after - before)
    assert http(port, "/readyz")[0] == 200


# ---- Kubernetes: native-sidecar fallback, events on ready/unavailable/drift -----

KPOD = "chat-7d4b9c8f6d-x2k9p"


@pytest.fixture
def kfake(tmp_path):
    kube_fake = pytest.importorskip("kube_fake")
    f = kube_fake.KubeFake(str(tmp_path / "kfake"))
    f.start()
    try:
        yield f
    finally:
        f.stop()


def _kenv(kfake, tmp_path):
    kc = kfake.kubeconfig(str(tmp_path / "kubeconfig"))
    return clean_env(KUBECONFIG=kc, POD_NAME=KPOD, POD_NAMESPACE="prod")


def _event_reasons(kfake):
    with kfake.lock:
        return [e.get("reason") for e in kfake.events]


def test_kube_init_fallback_acts_as_init(procs, kfake, tmp_path):
    # A cluster without SidecarContainers dropped restartPolicy: Always, so
    # the agent runs as a plain init container: it must write the env file
    # and exit 0 instead of blocking the pod forever.
    from kube_fake import deployment_objects
    kfake.add(*deployment_objects("chat", replicas=3, sidecar=False))
    r = Redis(procs, tmp_path).start()
    env_file = tmp_path / "cluster.env"
    port = free_port()
    p = procs.start_agent(["serve", "--platform", "kubernetes", "--listen",
                           "127.0.0.1:%d" % port, "--redis-url", r.url,
                           "--env-file", str(env_file)], env=_kenv(kfake, tmp_path))
    assert p.wait(timeout=20 * SLOW) == 0, p.stderr.read().decode()
    text = env_file.read_text()
    assert "mode=redis" in text and "export PYLON_CLUSTER_BUS=" in text
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "acting as init" in p.stderr.read().decode()


def test_kube_native_sidecar_serves_and_reports_drift(procs, kfake, tmp_path):
    from kube_fake import deployment, deployment_objects
    kfake.add(*deployment_objects("chat", replicas=1, sidecar=True))
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, ["serve", "--platform", "kubernetes", "--listen",
                               "127.0.0.1:%d" % port, "--redis-url", r.url,
                               "--interval", INTERVAL, "--resync", "1s",
                               "--report", "log,events,annotations"],
                       env=_kenv(kfake, tmp_path), wait="/readyz")
    st = status_json(port)
    assert st["mode"] == "noop" and st["platform"] == "kubernetes" and st["instance"] == KPOD
    wait_for(lambda: "ClusterBusReady" in _event_reasons(kfake), 5, what="ClusterBusReady")
    # kubectl scale deployment/chat --replicas=3
    kfake.add(deployment("chat", replicas=3))
    wait_for(lambda: status_json(port)["drift"], 10, what="drift")
    assert status_json(port)["peers"] == 3
    wait_for(lambda: "ClusterBusDrift" in _event_reasons(kfake), 5, what="ClusterBusDrift")
    assert http(port, "/readyz")[0] == 200     # --on-drift report
    assert p.poll() is None


def test_kube_events_for_unavailable_and_recovery(procs, kfake, tmp_path):
    from kube_fake import deployment_objects
    kfake.add(*deployment_objects("chat", replicas=2, sidecar=True))
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, ["serve", "--platform", "kubernetes", "--listen",
                               "127.0.0.1:%d" % port, "--redis-url", r.url,
                               "--interval", INTERVAL, "--report", "events"],
                       env=_kenv(kfake, tmp_path), wait="/readyz")
    wait_for(lambda: "ClusterBusReady" in _event_reasons(kfake), 5, what="ClusterBusReady")
    r.kill()
    wait_for(lambda: "ClusterBusUnavailable" in _event_reasons(kfake), 10,
             what="ClusterBusUnavailable")
    with kfake.lock:
        msgs = json.dumps(kfake.events)
    assert PASSWORD not in msgs
    r.start()
    wait_for(lambda: _event_reasons(kfake).count("ClusterBusReady") == 2, 10,
             what="a second ClusterBusReady after recovery")
    assert http(port, "/readyz")[0] == 200


def test_too_short_periods_are_raised(procs):
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--resync", "10ms", interval="1ms"), wait="/readyz")
    time.sleep(0.5)
    assert http(port, "/readyz")[0] == 200
    err = stderr_of(procs, p)
    assert "--interval 1 ms is too short; using 100 ms" in err
    assert "--resync 10 ms is too short; using 1000 ms" in err


def test_sidecar_after_init_adopts_decision_and_proof(procs, tmp_path):
    # SPEC 5, 10: one decision and one PUBLISH per pod start over all the
    # pod's containers.  init proves and writes the env file and its state
    # file; serve adopts both: no second PUBLISH, no discovery, and in
    # steady state one connection without a subscription.
    from conftest import run_agent
    r = Redis(procs, tmp_path).start()
    sub = Subscriber(r.server, "pod:cluster:bus", password=PASSWORD)
    try:
        env_file = tmp_path / "cluster.env"
        env = clean_env(POD_NAME="pylon-abc-1")
        res = run_agent(["init", "--platform", "static", "--replicas", "2", "--namespace",
                         "pod", "--redis-url", r.url, "--env-file", str(env_file)], env=env)
        assert res.returncode == 0, res.stderr
        port = free_port()
        # (--deaf-pylon off: one subscriber for 2 replicas would make the
        # first count look for this pod's Pylon, 2 CLIENT commands more;
        # test_deaf_pylon.py covers those)
        p, _ = start_serve(procs, serve_args(port, "--replicas", "2", "--namespace", "pod",
                                             "--redis-url", r.url, "--env-file", str(env_file),
                                             "--deaf-pylon", "off"),
                           env=env, wait="/readyz")
        st = status_json(port)
        assert st["adopted_from_init"] is True and st["redis"]["proven"] is True
        assert st["instance"] == socket.gethostname()   # static: the host name
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_bus_check_seconds_count") >= 5,
                 10, what="five checks")
        msgs = [m for m in sub.settle(0.3) if b"agent_probe" in m]
        assert len(msgs) == 1, msgs          # init's, none from serve
        fams, _ = metrics(port)
        assert "pylon_agent_api_requests_total" in fams
        assert not fams["pylon_agent_api_requests_total"]["samples"]
        # one command per check (PING or NUMSUB); the open adds none here
        # (no AUTH user: AUTH <pass> is one more on each connect).
        checks = value(fams, "pylon_agent_bus_check_seconds_count")
        assert value(fams, "pylon_agent_redis_commands_total") <= checks + 2
        agent = [l for l in r.server.cmd("CLIENT", "LIST").decode().splitlines()
                 if "cmd=client" not in l and
                 ("addr=127.0.0.1:%d " % sub.sock.getsockname()[1]) not in l]
        assert len(agent) == 1 and " sub=0 " in agent[0], agent
        err = stderr_of(procs, p)
        assert "adopting init's decision" in err
    finally:
        sub.close()


def test_steady_state_commands_per_minute_at_defaults(procs, tmp_path):
    # SPEC 10: <= 3 Redis commands per agent per minute at the defaults
    # (--interval 30s: 2 PINGs, of which one is PUBSUB NUMSUB instead).
    r = Redis(procs, tmp_path).start()
    port = free_port()
    p, _ = start_serve(procs, ["serve", "--platform", "static", "--listen",
                               "127.0.0.1:%d" % port, "--replicas", "2",
                               "--redis-url", r.url], wait="/readyz")
    c0 = value(metrics(port)[0], "pylon_agent_redis_commands_total")
    time.sleep(61)
    c1 = value(metrics(port)[0], "pylon_agent_redis_commands_total")
    assert c1 - c0 <= 3, (c0, c1)
    assert p.poll() is None
