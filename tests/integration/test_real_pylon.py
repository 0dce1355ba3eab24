"""The released Pylon 0.11.3, unmodified, in a cached Debian 13 root, inside
a private network namespace (it binds all interfaces), with real
redis-server processes: what the agent decides is what Pylon does.

Harness: realpylon.py (scripts/pylon-cache.sh builds the root on the first
run).  Every Pylon is stopped by pid at the end, also when a test fails."""
import os
import socket
import time

import pytest

from conftest import AGENT, WRAPPER, clean_env
from realpylon import (Pylons, SilentServer, cache_root, guest_token, insert,
                       make_app, private_netns, pylon_env, WSClient)
from redisfix import RedisServer

PASSWORD = "real-pylon-s3cret"


@pytest.fixture(scope="module")
def netns():
    cache_root()            # builds the cache before entering the namespace
    with private_netns():
        yield


@pytest.fixture
def world(netns, tmp_path):
    ps = Pylons(str(tmp_path))
    servers = []
    yield ps, servers, tmp_path
    ps.stop_all()
    for s in servers:
        if hasattr(s, "stop"):
            s.stop()
        else:
            s.close()


def redis(world, **kw):
    ps, servers, tmp = world
    d = tmp / ("redis%d" % len(servers))
    d.mkdir()
    r = RedisServer(str(d), **kw).start()
    servers.append(r)
    return r


def agent_exec(*args):
    return WRAPPER + [AGENT, "exec", "--platform", "static"] + list(args) + ["--"]


def env_for(url_file=None, **extra):
    env = pylon_env(base=clean_env())
    env.update(PYLON_AGENT_NAMESPACE="rp-app", **extra)
    if url_file:
        env["PYLON_AGENT_REDIS_URL_FILE"] = url_file
    return env


def url_file(tmp, url):
    f = tmp / "redis-url"
    f.write_text(url + "\n")
    os.chmod(f, 0o600)
    return str(f)


def test_two_pylons_share_the_bus_the_agent_proved(world):
    ps, _, tmp = world
    r = redis(world, requirepass=PASSWORD)
    uf = url_file(tmp, r.url(password=PASSWORD))
    args = agent_exec("--replicas", "2", "--cluster-required=false")
    a = ps.start(make_app(str(tmp)), env=env_for(uf), agent_args=args)
    b = ps.start(make_app(str(tmp)), env=env_for(uf), agent_args=args)
    for p in (a, b):
        assert 'redis bus connected — channel="rp-app:cluster:bus"' in p.log()
        env = p.environ()
        assert env["PYLON_CLUSTER_BUS"] == r.url(password=PASSWORD)
        assert not [k for k in env if k.startswith("PYLON_AGENT_")], env
    ta, tb = guest_token(a.port), guest_token(b.port)
    wa, wb = WSClient(a.port, ta), WSClient(b.port, tb)
    try:
        time.sleep(0.5)
        marker = "row-%d" % os.getpid()
        insert(a.port, ta, "Note", {"body": marker})
        assert wb.wait_for(marker, timeout=10), "B never saw A's row"
        wa.wait_for(marker, timeout=10)
        wb.settle(1.0)
        wa.settle(0.2)
        assert len(wb.matching(marker)) == 1, wb.matching(marker)
        assert len(wa.matching(marker)) == 1, wa.matching(marker)
        # the agent's proof while both run: no client message, no Pylon error
        before_a, before_b = len(wa.frames), len(wb.frames)
        p = __import__("subprocess").run(
            WRAPPER + [AGENT, "init", "--platform", "static", "--replicas", "2",
                       "--env-file", str(tmp / "again.env")],
            env=env_for(uf), capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        wa.settle(1.0)
        wb.settle(0.2)
        assert len(wa.frames) == before_a and len(wb.frames) == before_b
        for pl in (a, b):
            assert "agent_probe" not in pl.log() and " ERROR" not in pl.log()
    finally:
        wa.close()
        wb.close()


def test_one_replica_is_noop_and_pylon_gets_no_bus(world):
    ps, _, tmp = world
    r = redis(world, requirepass=PASSWORD)
    uf = url_file(tmp, r.url(password=PASSWORD))
    a = ps.start(make_app(str(tmp)), env=env_for(uf), agent_args=agent_exec())
    assert a.wait_log("running with single-machine fanout (NoopBus)", 10)
    env = a.environ()
    assert "PYLON_CLUSTER_BUS" not in env
    assert "PYLON_CLUSTER_REQUIRED" not in env
    assert not [k for k in env if k.startswith("PYLON_AGENT_")], env
    assert not [v for v in env.values() if PASSWORD in v]


def test_silent_endpoint_pylon_hangs_agent_fails_fast(world):
    ps, servers, tmp = world
    s = SilentServer()
    servers.append(s)
    url = "redis://127.0.0.1:%d" % s.port
    # Pylon alone: neither exits nor answers /health
    alone = ps.start(make_app(str(tmp)), env=env_for(PYLON_CLUSTER_BUS=url,
                     PYLON_CLUSTER_NAMESPACE="rp-app"), wait=False)
    assert alone.wait_exit(4) is None, alone.log()
    assert alone.health(timeout=0.5) is None
    # the agent: a timeout within --timeout, Pylon never started
    t0 = time.monotonic()
    via = ps.start(make_app(str(tmp)),
                   env=env_for(PYLON_AGENT_REDIS_URL=url),
                   agent_args=agent_exec("--replicas", "2", "--timeout", "2s"), wait=False)
    rc = via.wait_exit(15)
    assert rc == 69, (rc, via.log())
    assert time.monotonic() - t0 < 10
    assert "timeout" in via.log().lower() or "timed out" in via.log().lower(), via.log()
    assert "pylon start" not in via.log() and "[cluster]" not in via.log()


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:{port}", "unix:///tmp/r.sock",
                                 "redis+unix:///tmp/r.sock", "REDIS://127.0.0.1:{port}",
                                 " redis://127.0.0.1:{port}"])
def test_url_pylon_refuses_agent_refuses(world, url):
    ps, _, tmp = world
    r = redis(world)
    url = url.format(port=r.port)
    alone = ps.start(make_app(str(tmp)), env=env_for(PYLON_CLUSTER_BUS=url),
                     wait=False)
    assert alone.wait_exit(15) == 1, alone.log()
    via = ps.start(make_app(str(tmp)), env=env_for(PYLON_AGENT_REDIS_URL=url),
                   agent_args=agent_exec("--replicas", "2"), wait=False)
    assert via.wait_exit(15) == 78, via.log()
    assert "[cluster]" not in via.log()


def test_url_pylon_accepts_agent_accepts(world):
    ps, _, tmp = world
    r = redis(world)
    url = "redis://127.0.0.1:%d" % r.port
    alone = ps.start(make_app(str(tmp)),
                     env=env_for(PYLON_CLUSTER_BUS=url, PYLON_CLUSTER_NAMESPACE="rp-app"))
    assert "redis bus connected" in alone.log()
    via = ps.start(make_app(str(tmp)), env=env_for(PYLON_AGENT_REDIS_URL=url),
                   agent_args=agent_exec("--replicas", "2", "--cluster-required=false"))
    assert "redis bus connected" in via.log()
