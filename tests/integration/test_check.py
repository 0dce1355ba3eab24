"""`pylon-agent check`: the preflight table and JSON, against the fake Fly
Machines API and a real redis-server.  Exit 0 only when the deploy is safe.
"""
import json
import shutil
import time

import pytest

from conftest import SLOW, clean_env, free_port, run_agent, wait_port
from fly_fake import APP, RELEASE_ID, SELF_ID, TOKEN

PASSWORD = "chk-s3cret-pw"


@pytest.fixture
def redis(procs, tmp_path):
    """A real redis-server with a password on a free loopback port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
                 "--dir", str(tmp_path)])
    wait_port(port)
    return "redis://:%s@127.0.0.1:%d/0" % (PASSWORD, port)


def release_env(**kw):
    """The environment of a Fly release_command machine."""
    base = dict(FLY_APP_NAME=APP, FLY_MACHINE_ID=RELEASE_ID, FLY_API_TOKEN=TOKEN,
                FLY_PROCESS_GROUP="fly_app_release_command", RELEASE_COMMAND="1",
                PYLON_AGENT_FLY_JITTER_MS="0",
                DATABASE_URL="postgres://pylon:dbpass@pylon-db.flycast:5432/pylon")
    base.update(kw)
    return clean_env(**base)


def check(fake, *args, env=None, timeout=60):
    p = run_agent(["check", "--fly-api-url", fake.url, "--api-timeout", "2s"] + list(args),
                  env=env if env is not None else release_env(), timeout=timeout)
    secret = TOKEN.split("_", 1)[1]
    for s in (p.stdout, p.stderr):
        assert PASSWORD not in s, s
        assert secret not in s, s
    return p


def rows(text):
    """The table as {key: [values]}."""
    out = {}
    for line in text.splitlines()[1:]:
        k, _, v = line.strip().partition(" ")
        out.setdefault(k, []).append(v.strip())
    return out


def test_release_command_safe_with_proven_bus(fly, redis):
    fake = fly("release_old_app")
    p = check(fake, "--redis-url", redis, "--namespace", "pylon-demo")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("pylon-agent check\n")
    r = rows(p.stdout)
    assert "release_command machine: counting group app" in r["platform"][0]
    assert r["app"] == ["pylon-demo / group app"]
    assert r["counted"][0].startswith("3 (fly app pylon-demo group app: 3 machines "
                                      "(2 started, 1 stopped)")
    assert r["excluded"] == ["1 release_command"]
    assert r["peers"] == ["3"] and r["mode"] == ["redis"]
    assert r["redis"] == ["redis://:***@127.0.0.1:%s/0" % redis.rsplit(":", 1)[1].split("/")[0]]
    assert r["proof"][0].startswith("proven in ")
    assert r["verdict"][0].startswith("safe: 3 peers share the proven bus")
    assert "problem" not in r and "warning" not in r
    assert len(fake.list_requests()) == 1


@pytest.mark.parametrize("db,why", [(None, "no DATABASE_URL"),
                                    ("sqlite:///data/pylon.db", "is not Postgres")])
def test_several_peers_without_postgres_are_unsafe(fly, redis, db, why):
    """release_command inherits Pylon's secrets: 3 machines need Postgres."""
    fake = fly("release_old_app")
    p = check(fake, "--redis-url", redis, env=release_env(DATABASE_URL=db))
    assert p.returncode == 78, p.stdout + p.stderr
    r = rows(p.stdout)
    assert any(why in x and "DATABASE_URL=postgres://" in x for x in r["problem"]), r
    assert r["verdict"][0].startswith("NOT safe")


def test_release_command_json(fly, redis):
    fake = fly("release_old_app")
    p = check(fake, "--redis-url", redis, "--output", "json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["safe"] is True and j["exit_code"] == 0
    assert j["fly"] == {"app": APP, "group": "app", "release_command": True}
    assert j["peers"] == 3 and j["mode"] == "redis" and j["counted"] == 3
    assert j["excluded"] == "1 release_command"
    assert j["redis"]["proven"] is True and j["redis"]["latency_ms"] >= 0
    assert j["redis"]["url"].startswith("redis://:***@127.0.0.1:")
    # The default namespace with a shared Redis is worth a warning.
    assert any("namespace is the default" in w for w in j["warnings"])
    assert j["problems"] == []


def test_several_machines_without_url_is_unsafe(fly):
    fake = fly("release_old_app")
    p = check(fake)
    assert p.returncode == 78
    r = rows(p.stdout)
    assert r["peers"] == ["3"]
    assert "no Redis URL is configured" in r["problem"][0]
    assert r["verdict"][0].startswith("NOT safe:")
    assert r["proof"] == ["not needed (no Redis URL)"]
    assert "check: NOT safe" in p.stderr


def test_single_machine_noop_is_safe(fly):
    fake = fly("one")
    env = release_env(FLY_MACHINE_ID=SELF_ID, FLY_PROCESS_GROUP="app")
    env.pop("RELEASE_COMMAND")
    p = check(fake, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = rows(p.stdout)
    assert r["mode"] == ["noop"] and r["peers"] == ["1"]
    assert r["verdict"] == ["safe: 1 peer, NoopBus"]
    assert "release_command" not in r["platform"][0]


def test_first_deploy_warns_about_min_peers(fly):
    fake = fly("release_only")
    p = check(fake, "--output", "json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["peers"] == 1 and j["counted"] == 0 and j["mode"] == "noop"
    assert any("first deploy" in w and "--min-peers" in w for w in j["warnings"])


def test_first_deploy_with_min_peers_proves_the_bus(fly, redis):
    fake = fly("release_only")
    p = check(fake, "--min-peers", "2", "--redis-url", redis, "--namespace", "demo",
              "--output", "json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["peers"] == 2 and j["mode"] == "redis" and j["redis"]["proven"] is True


def test_unreachable_redis_is_unsafe_69(fly):
    fake = fly("three_regions")
    port = free_port()
    t0 = time.monotonic()
    p = check(fake, "--redis-url", "redis://:%s@127.0.0.1:%d" % (PASSWORD, port),
              "--timeout", "1s")
    assert time.monotonic() - t0 < 15
    assert p.returncode == 69, p.stdout + p.stderr
    r = rows(p.stdout)
    assert r["proof"][0].startswith("FAILED:") and "refused" in r["proof"][0]
    assert r["verdict"][0].startswith("NOT safe: the Redis bus is not usable")


def test_wrong_password_named(fly, redis):
    fake = fly("three_regions")
    bad = redis.replace(PASSWORD, "not-the-password")
    p = check(fake, "--redis-url", bad, "--timeout", "2s", "--output", "json")
    assert p.returncode == 69
    j = json.loads(p.stdout)
    assert j["safe"] is False and j["redis"]["proven"] is False
    assert "WRONGPASS" in j["redis"]["error"] or "invalid" in j["redis"]["error"].lower()
    assert "not-the-password" not in p.stdout + p.stderr


def test_noop_with_broken_url_is_a_warning(fly):
    fake = fly("one")
    env = release_env(FLY_MACHINE_ID=SELF_ID, FLY_PROCESS_GROUP="app")
    env.pop("RELEASE_COMMAND")
    p = check(fake, "--redis-url", "redis://127.0.0.1:%d" % free_port(), "--timeout", "1s",
              env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = rows(p.stdout)
    assert r["mode"] == ["noop"]
    assert r["proof"][0].startswith("FAILED:")
    assert "the configured Redis URL does not work" in r["warning"][0]


def test_noop_with_dead_redis_does_not_hold_the_release(fly):
    """One machine, noop: the proof only feeds a warning, so it gets 5 s,
    not the 20 s a redis-mode release waits for its bus."""
    fake = fly("one")
    env = release_env(FLY_MACHINE_ID=SELF_ID, FLY_PROCESS_GROUP="app")
    env.pop("RELEASE_COMMAND")
    t0 = time.monotonic()
    p = check(fake, "--redis-url", "redis://127.0.0.1:%d" % free_port(), env=env)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    assert took < 5.0 * SLOW + 2.0, took
    r = rows(p.stdout)
    assert "within 5000 ms" in r["proof"][0] and "refused" in r["proof"][0]
    assert "refused" not in r["warning"][0]          # said once, in the proof row


def test_bus_problem_cause_said_in_proof_and_verdict_only(fly):
    fake = fly("three_regions")
    p = check(fake, "--redis-url", "redis://127.0.0.1:%d" % free_port(), "--timeout", "1s")
    assert p.returncode == 69, p.stdout + p.stderr
    r = rows(p.stdout)
    assert r["problem"] == ["the Redis bus is not usable"]
    assert "refused" in r["proof"][0] and "refused" in r["verdict"][0]
    assert p.stdout.count("connection refused") == 2


def test_forced_noop_with_several_peers_is_unsafe(fly):
    fake = fly("three_regions")
    p = check(fake, "--mode", "noop")
    assert p.returncode == 78
    assert "--mode noop with 3 peers" in rows(p.stdout)["problem"][0]


def test_bad_token_is_unsafe(fly):
    fake = fly("401")
    p = check(fake, "--output", "json")
    assert p.returncode == 75, p.stderr
    j = json.loads(p.stdout)
    assert j["safe"] is False and j["discovery_failed"] is True
    assert "fly tokens create readonly" in j["problems"][0]


def test_bad_token_with_url_proves_and_warns(fly, redis):
    fake = fly("401")
    p = check(fake, "--redis-url", redis, "--namespace", "demo", "--output", "json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["mode"] == "redis" and j["redis"]["proven"] is True
    assert any("discovery failed" in w for w in j["warnings"])


def test_check_help():
    p = run_agent(["check", "--help"], env=clean_env())
    assert p.returncode == 0
    assert "check" in p.stdout


def test_fly_toml_manifest_runs_check_as_release_command():
    tomllib = pytest.importorskip("tomllib")
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "manifests", "fly", "fly.toml"), "rb") as f:
        d = tomllib.load(f)
    assert d["deploy"]["release_command"] == "pylon-agent check"
    assert d["processes"]["app"].startswith("pylon-agent serve -- ")
    assert d["checks"]["cluster_bus"]["port"] == 4320
    assert d["checks"]["cluster_bus"]["path"] == "/readyz"
    # No secret in the file.
    assert "FLY_API_TOKEN" not in d.get("env", {})
    assert "PYLON_AGENT_REDIS_URL" not in d.get("env", {})
