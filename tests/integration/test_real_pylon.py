"""The released Pylon 0.11.3, unmodified, in a cached Debian 13 root, inside
a private network namespace (it binds all interfaces), with real
redis-server processes: what the agent decides is what Pylon does.

Harness: realpylon.py (scripts/pylon-cache.sh builds the root on the first
run).  Every Pylon is stopped by pid at the end, also when a test fails."""
import os
import signal
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
    # an API token the agent's environment holds (Fly secrets are every
    # process's environment): Pylon must never see it (issue 18)
    env.update(PYLON_AGENT_NAMESPACE="rp-app", FLY_API_TOKEN="fm2_rp-token-s3cret", **extra)
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
        assert "FLY_API_TOKEN" not in env
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
    # the URL by environment this time (the two-replica test gives a file)
    a = ps.start(make_app(str(tmp)),
                 env=env_for(PYLON_AGENT_REDIS_URL=r.url(password=PASSWORD)),
                 agent_args=agent_exec())
    assert a.wait_log("running with single-machine fanout (NoopBus)", 10)
    env = a.environ()
    assert "FLY_API_TOKEN" not in env
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
    # a namespace with ':' (issue 11): Pylon takes it as is
    ef = tmp / "team.env"
    p = __import__("subprocess").run(
        WRAPPER + [AGENT, "init", "--platform", "static", "--replicas", "2",
                   "--cluster-required=false", "--namespace", "team:app",
                   "--env-file", str(ef)],
        env=env_for(PYLON_AGENT_REDIS_URL=url), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    via = ps.start(make_app(str(tmp)), env=env_for(),
                   agent_args=WRAPPER + [AGENT, "exec", "--env-file", str(ef), "--"])
    assert 'redis bus connected — channel="team:app:cluster:bus"' in via.log(), via.log()


def test_two_pylons_on_postgres_with_cluster_required(world):
    """The agent hands over PYLON_CLUSTER_REQUIRED=1 (its default): Pylon
    boots only because DATABASE_URL is Postgres, and the bus works."""
    import shutil
    import tempfile
    from realpylon import Postgres
    ps, servers, tmp = world
    # the postgres user must reach its data directory: not under pytest's
    # 0700 tmp tree
    pgdir = tempfile.mkdtemp(prefix="pylon-agent-pg-")
    os.chmod(pgdir, 0o711)
    pg = Postgres(pgdir)
    servers.append(pg)
    try:
        pg.start()
        _two_pylons_on_postgres(ps, tmp, pg.url(), world)
    finally:
        pg.stop()
        servers.remove(pg)
        shutil.rmtree(pgdir, ignore_errors=True)


def _two_pylons_on_postgres(ps, tmp, db, world):
    r = redis(world, requirepass=PASSWORD)
    uf = url_file(tmp, r.url(password=PASSWORD))
    args = agent_exec("--replicas", "2")
    a = ps.start(make_app(str(tmp)), env=env_for(uf, DATABASE_URL=db), agent_args=args)
    b = ps.start(make_app(str(tmp)), env=env_for(uf, DATABASE_URL=db), agent_args=args)
    for p in (a, b):
        assert p.environ()["PYLON_CLUSTER_REQUIRED"] == "1"
        assert "redis bus connected" in p.log()
    ta, tb = guest_token(a.port), guest_token(b.port)
    wb = WSClient(b.port, tb)
    try:
        time.sleep(0.5)
        marker = "pg-row-%d" % os.getpid()
        insert(a.port, ta, "Note", {"body": marker})
        assert wb.wait_for(marker, timeout=10), "B never saw A's row"
        wb.settle(1.0)
        assert len(wb.matching(marker)) == 1
    finally:
        wb.close()
    # without Postgres the same handover makes Pylon refuse to boot
    c = ps.start(make_app(str(tmp)), env=env_for(uf), agent_args=args, wait=False)
    assert c.wait_exit(20) == 1, c.log()
    assert "PYLON_CLUSTER_REQUIRED needs a Postgres DATABASE_URL" in c.log()


@pytest.mark.parametrize("acl,missing", [
    ("on >pw ~* &* +@all -subscribe", "subscribe"),       # Pylon alone: deaf
    ("on >pw ~* &other:* +@all", "channel"),               # Pylon alone: mute and deaf
])
def test_half_right_acl_pylon_boots_broken_agent_refuses(world, acl, missing):
    ps, _, tmp = world
    r = redis(world, users=["pylonuser " + acl])
    url = r.url(user="pylonuser", password="pw")
    alone = ps.start(make_app(str(tmp)), env=env_for(PYLON_CLUSTER_BUS=url,
                     PYLON_CLUSTER_NAMESPACE="rp-app"))
    assert alone.wait_log("NOPERM", 10), alone.log()       # boots, only warns
    assert alone.health()[0] == 200
    via = ps.start(make_app(str(tmp)), env=env_for(PYLON_AGENT_REDIS_URL=url),
                   agent_args=agent_exec("--replicas", "2", "--timeout", "30s"), wait=False)
    t0 = time.monotonic()
    rc = via.wait_exit(40)
    assert rc == 69, (rc, via.log())
    assert time.monotonic() - t0 < 10, via.log()
    assert "NOPERM" in via.log() or "permission" in via.log().lower(), via.log()
    assert "pw@" not in via.log()
    assert "[cluster]" not in via.log()


def test_wrong_password_agent_refuses_without_echoing_it(world):
    ps, _, tmp = world
    r = redis(world, requirepass=PASSWORD)
    url = r.url(password="not-the-password")
    t0 = time.monotonic()
    via = ps.start(make_app(str(tmp)), env=env_for(PYLON_AGENT_REDIS_URL=url),
                   agent_args=agent_exec("--replicas", "2", "--timeout", "30s"), wait=False)
    rc = via.wait_exit(40)
    assert rc == 69, (rc, via.log())
    # configuration, not weather: at once, not at the 30 s deadline
    assert time.monotonic() - t0 < 10, via.log()
    assert "not retried" in via.log()
    assert "WRONGPASS" in via.log() or "password" in via.log().lower(), via.log()
    assert "not-the-password" not in via.log()
    assert "[cluster]" not in via.log()


def test_supervisor_shape_health_readyz_and_sigterm(world):
    import signal as _signal
    import urllib.request
    from conftest import free_port
    ps, _, tmp = world
    r = redis(world, requirepass=PASSWORD)
    uf = url_file(tmp, r.url(password=PASSWORD))
    lp = free_port()
    args = WRAPPER + [AGENT, "serve", "--platform", "static", "--replicas", "2",
                      "--cluster-required=false", "--listen", "127.0.0.1:%d" % lp, "--"]
    a = ps.start(make_app(str(tmp)), env=env_for(uf), agent_args=args)
    end = time.monotonic() + 20
    code = None
    while time.monotonic() < end:
        try:
            code = urllib.request.urlopen("http://127.0.0.1:%d/readyz" % lp, timeout=1).status
            break
        except OSError:
            time.sleep(0.1)
    assert code == 200
    assert a.health()[0] == 200
    a.proc.send_signal(_signal.SIGTERM)
    rc = a.wait_exit(15)
    assert rc is not None, "serve did not end after SIGTERM"
    assert rc in (0, 143), (rc, a.log()[-2000:])


# ---- the stand-in agrees with the real Pylon (issue 11) ---------------------

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes",
                       "standin.py")


def _verdict(rc, log):
    """What a Pylon did with its bus settings, in the terms operators see."""
    if rc is not None:
        return "exit %d" % rc
    if "NOPERM" in log:
        return "boots deaf or mute (NOPERM warnings)"
    if "NoopBus" in log:
        return "boots NoopBus"
    if "redis bus connected" in log:
        return "boots redis"
    return "hangs"


def _channel(log):
    import re
    m = re.search(r'channel="([^"]*)"', log)
    return m.group(1) if m else None


def _standin(env, settle):
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, STANDIN], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        rc = p.wait(timeout=settle)
    except subprocess.TimeoutExpired:
        rc = None
        p.kill()
    out = p.communicate(timeout=10)[0].decode(errors="replace")
    return rc, out


AGREE = [
    # (name, bus URL template, extra environment)
    ("unset", None, {}),
    ("reachable", "redis://127.0.0.1:{port}", {}),
    ("empty namespace", "redis://127.0.0.1:{port}", {"PYLON_CLUSTER_NAMESPACE": ""}),
    ("rediss", "rediss://127.0.0.1:{port}", {}),
    ("unix", "unix:///tmp/r.sock", {}),
    ("redis+unix", "redis+unix:///tmp/r.sock", {}),
    ("upper-case scheme", "REDIS://127.0.0.1:{port}", {}),
    ("leading space", " redis://127.0.0.1:{port}", {}),
    ("refused", "redis://:crash-pw@127.0.0.1:{closed}", {}),
    ("wrong password", "redis://:not-it@127.0.0.1:{auth}", {}),
    ("no +subscribe", "redis://pylonuser:pw@127.0.0.1:{acl}", {}),
    ("silent endpoint", "redis://127.0.0.1:{silent}", {}),
    ("required, no Postgres", "redis://127.0.0.1:{port}", {"PYLON_CLUSTER_REQUIRED": "1"}),
]


def test_standin_agrees_with_real_pylon(world):
    """Every URL form and boot failure of pylon-real.md: the stand-in the
    fast tests use does what the released binary does (exit code, boots
    in which mode, hangs, warns NOPERM, channel name, password in the crash
    line)."""
    ps, servers, tmp = world
    plain = redis(world)
    auth = redis(world, requirepass=PASSWORD)
    acl = redis(world, users=["pylonuser on >pw ~* &* +@all -subscribe"])
    silent = SilentServer()
    servers.append(silent)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    ports = dict(port=plain.port, auth=auth.port, acl=acl.port, silent=silent.port,
                 closed=closed)
    mismatches, seen = [], set()
    for name, tmpl, extra in AGREE:
        env = env_for(**dict({"PYLON_CLUSTER_NAMESPACE": "rp-app"}, **extra))
        if tmpl is not None:
            env["PYLON_CLUSTER_BUS"] = tmpl.format(**ports)
        settle = 4.0
        real = ps.start(make_app(str(tmp)), env=env, wait=False)
        rc = real.wait_exit(settle)
        if rc is None and name not in ("silent endpoint",):
            real.wait_log("[cluster]", 6)
            if name == "no +subscribe":
                real.wait_log("NOPERM", 6)
        real_v, real_log = _verdict(rc, real.log()), real.log()
        real.stop(signal.SIGKILL)
        st_rc, st_log = _standin(env, settle)
        st_v = _verdict(st_rc, st_log)
        seen.add(real_v)
        print("%-22s real: %-40s stand-in: %s" % (name, real_v, st_v))
        if real_v != st_v:
            mismatches.append((name, real_v, st_v, real_log[-400:], st_log[-400:]))
        if "boots" in real_v and _channel(real_log) != _channel(st_log):
            mismatches.append((name, "channel", _channel(real_log), _channel(st_log)))
        if name == "refused":   # both print the URL with its password
            if ("crash-pw" in real_log) != ("crash-pw" in st_log):
                mismatches.append((name, "password in crash line", real_log, st_log))
        if name == "empty namespace":
            assert _channel(real_log) == ":cluster:bus", real_log
    assert not mismatches, "\n".join(repr(m) for m in mismatches)
    # the scenarios really cover every class of pylon-real.md's tables
    assert seen == {"exit 1", "boots redis", "boots NoopBus", "hangs",
                    "boots deaf or mute (NOPERM warnings)"}, seen
def test_resp3_url_agent_sends_hello_3_and_pylon_connects(world):
    # ?protocol=resp3 (issue 11): the agent's proof sends HELLO 3 like
    # Pylon's client; on a Redis that speaks RESP3 both go ahead.
    ps, _, tmp = world
    r = redis(world, requirepass=PASSWORD)
    uf = url_file(tmp, r.url(password=PASSWORD) + "?protocol=resp3")
    a = ps.start(make_app(str(tmp)), env=env_for(uf),
                 agent_args=agent_exec("--replicas", "2", "--cluster-required=false"))
    assert "redis bus connected" in a.log(), a.log()
    info = r.cmd("INFO", "commandstats")
    info = info.decode() if isinstance(info, bytes) else info
    import re
    calls = int(re.search(r"cmdstat_hello:calls=(\d+)", info).group(1))
    assert calls >= 3, info          # the agent's HELLO 3 + HELLO 2, Pylon's HELLO 3
    assert PASSWORD not in a.log()
