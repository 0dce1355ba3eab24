"""serve --bus-proxy: a plain loopback Redis endpoint in front of a
TLS-only redis-server (port 0, tls-port)."""
import socket
import time
import urllib.request

import pytest

from conftest import clean_env, free_port, run_agent, wait_port
from redisfix import RespError, RespReader, make_tls_material, redis_factory, resp_encode  # noqa: F401


@pytest.fixture
def tls_redis(redis_factory, tmp_path):
    mat = make_tls_material(str(tmp_path / "tls"))
    return redis_factory(tls=mat, requirepass="s3cr:et@pw"), mat


def start_serve(procs, r, mat, pport, extra=()):
    hport = free_port()
    env = clean_env(PYLON_AGENT_REDIS_URL=r.url(host="localhost"),
                    PYLON_AGENT_REDIS_CA_FILE=mat.ca,
                    PYLON_AGENT_BUS_PROXY="127.0.0.1:%d" % pport,
                    PYLON_AGENT_MODE="redis", PYLON_AGENT_PLATFORM="static")
    p = procs.start_agent(["serve", "--listen", "127.0.0.1:%d" % hport,
                           "--interval", "1s"] + list(extra), env=env)
    wait_port(pport)
    return p, hport


def startupz(hport):
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/startupz" % hport, timeout=2) as f:
                if f.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def metrics(hport):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % hport, timeout=2) as f:
        return f.read().decode()


def plain(pport, password="s3cr:et@pw", db=None):
    s = socket.create_connection(("127.0.0.1", pport), timeout=5)
    rd = RespReader(s)
    s.sendall(resp_encode("AUTH", password))
    assert rd.read() == "OK"
    if db is not None:
        s.sendall(resp_encode("SELECT", db))
        assert rd.read() == "OK"
    return s, rd


def test_proxy_relays_auth_select_pubsub_and_5mb(procs, tls_redis):
    r, mat = tls_redis
    pport = free_port()
    p, hport = start_serve(procs, r, mat, pport)
    assert startupz(hport), p.stderr.read1().decode() if p.poll() is not None else ""
    # a wrong password is Redis's own answer, passed through
    s = socket.create_connection(("127.0.0.1", pport), timeout=5)
    s.sendall(resp_encode("AUTH", "wrong"))
    assert isinstance(RespReader(s).read(), RespError)
    s.close()
    sub, srd = plain(pport, db=3)
    sub.sendall(resp_encode("SUBSCRIBE", "ch"))
    assert srd.read()[0] == b"subscribe"
    pub, prd = plain(pport, db=3)
    big = b"x" * (5 * 1024 * 1024)
    pub.sendall(resp_encode("PUBLISH", "ch", big))
    assert prd.read() == 1
    m = srd.read()
    assert m[0] == b"message" and m[2] == big
    pub.sendall(resp_encode("SET", "k", "v"))
    assert prd.read() == "OK"
    assert r.cmd("SELECT", 3) == "OK"
    text = metrics(hport)
    assert "pylon_agent_proxy_connections_total" in text
    down = [ln for ln in text.splitlines()
            if ln.startswith('pylon_agent_proxy_bytes_total{direction="down"}')]
    assert down and int(down[0].split()[-1]) > 5 * 1024 * 1024
    up = [ln for ln in text.splitlines()
          if ln.startswith('pylon_agent_proxy_bytes_total{direction="up"}')]
    assert int(up[0].split()[-1]) > 5 * 1024 * 1024
    # the password never shows in the metrics or /status
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % hport, timeout=2) as f:
        st = f.read().decode()
    assert "s3cr" not in st and "s3cr" not in text
    assert "127.0.0.1:%d" % pport in st
    sub.close()
    pub.close()


def test_upstream_failure_closes_client_at_once_and_reconnect_works(procs, tls_redis):
    r, mat = tls_redis
    pport = free_port()
    p, hport = start_serve(procs, r, mat, pport)
    assert startupz(hport)
    sub, srd = plain(pport)
    sub.sendall(resp_encode("SUBSCRIBE", "ch"))
    assert srd.read()[0] == b"subscribe"
    r.kill()
    t0 = time.monotonic()
    sub.settimeout(5)
    with pytest.raises((ConnectionError, OSError)):
        srd.read()
    assert time.monotonic() - t0 < 2.0
    sub.close()
    # nothing upstream: a new client is closed too (not left hanging)
    s = socket.create_connection(("127.0.0.1", pport), timeout=5)
    s.sendall(resp_encode("PING"))
    with pytest.raises((ConnectionError, OSError)):
        RespReader(s).read()
    s.close()
    r.start()
    end = time.monotonic() + 10
    while True:
        try:
            c, rd = plain(pport)
            c.sendall(resp_encode("PING"))
            assert rd.read() == "PONG"
            c.close()
            break
        except (ConnectionError, OSError, AssertionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    text = metrics(hport)
    errs = [ln for ln in text.splitlines()
            if ln.startswith("pylon_agent_proxy_upstream_errors_total ")]
    assert int(errs[0].split()[-1]) >= 1


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def test_slow_subscriber_backpressure_bounds_rss(procs, tls_redis):
    r, mat = tls_redis
    pport = free_port()
    p, hport = start_serve(procs, r, mat, pport)
    assert startupz(hport)
    sub, srd = plain(pport)
    sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sub.sendall(resp_encode("SUBSCRIBE", "flood"))
    assert srd.read()[0] == b"subscribe"
    before = rss_kb(p.pid)
    pub, prd = plain(pport)
    chunk = b"y" * (1024 * 1024)
    # 64 MB published at a subscriber that never reads: the agent stops
    # reading from Redis, so the backlog lands in Redis's output buffer
    # for that client, and client-output-buffer-limit pubsub (32 MB)
    # drops the subscription: later PUBLISHes reach 0 receivers.
    got = []
    for _ in range(64):
        pub.sendall(resp_encode("PUBLISH", "flood", chunk))
        got.append(prd.read())
    time.sleep(0.5)
    after = rss_kb(p.pid)
    assert after - before < 16 * 1024, (before, after)
    assert got[0] == 1 and got[-1] == 0, got
    assert p.poll() is None
    sub.close()
    pub.close()


def test_non_loopback_address_refused(tls_redis):
    r, mat = tls_redis
    for addr in ("0.0.0.0:6380", ":6380", "192.0.2.1:6380"):
        res = run_agent(["serve", "--listen", "127.0.0.1:%d" % free_port(),
                         "--bus-proxy", addr], env=clean_env(
            PYLON_AGENT_REDIS_URL=r.url(host="localhost"), PYLON_AGENT_MODE="redis",
            PYLON_AGENT_PLATFORM="static"), timeout=10)
        assert res.returncode == 78, res.stderr
        assert "loopback" in res.stderr
        assert "s3cr" not in res.stderr


def test_init_writes_the_proxied_url(tls_redis, tmp_path):
    r, mat = tls_redis
    envf = tmp_path / "cluster.env"
    res = run_agent(["init", "--env-file", str(envf), "--bus-proxy", "127.0.0.1:6380"],
                    env=clean_env(PYLON_AGENT_REDIS_URL=r.url(host="localhost", db=2),
                                  PYLON_AGENT_REDIS_CA_FILE=mat.ca, PYLON_AGENT_MODE="redis",
                                  PYLON_AGENT_PLATFORM="static"), timeout=30)
    assert res.returncode == 0, res.stderr
    text = envf.read_text()
    assert "redis://:s3cr%3Aet%40pw@127.0.0.1:6380/2" in text, text
    assert "rediss://" not in text
