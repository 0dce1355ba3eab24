"""probe (SPEC 2): one quick check for exec probes and Fly checks.  Redis
mode: is the bus usable now (never a PUBLISH); noop: is the decision still
noop.  Deadline --timeout, else 3 s."""
import time

from conftest import SLOW, clean_env, free_port, run_agent
from redisfix import Subscriber
from test_serve import PASSWORD, Redis


def probe(*args, env=None):
    t0 = time.monotonic()
    r = run_agent(["probe", "--platform", "static"] + list(args), env=env, timeout=20)
    return r, time.monotonic() - t0


def test_noop_is_usable():
    r, _ = probe()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("noop: the decision is still noop")


def test_redis_usable_and_publishes_nothing(procs, tmp_path):
    red = Redis(procs, tmp_path).start()
    sub = Subscriber(red.server, "pr:cluster:bus", password=PASSWORD)
    try:
        for _ in range(3):
            r, _ = probe("--replicas", "2", "--namespace", "pr", "--redis-url", red.url)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("redis: bus usable")
            assert '"pr:cluster:bus"' in r.stdout
            assert PASSWORD not in r.stdout + r.stderr
        assert sub.settle(0.2) == []
    finally:
        sub.close()


def test_redis_down_fails_69_within_default_deadline(procs, tmp_path):
    red = Redis(procs, tmp_path)     # nothing listening
    r, took = probe("--replicas", "2", "--redis-url", red.url)
    assert r.returncode == 69, r.stderr
    assert "refused" in r.stderr and r.stderr.count("\n") >= 1
    assert PASSWORD not in r.stderr
    assert took < 3.0 * SLOW + 1.0


def test_timeout_flag_is_the_deadline(procs, tmp_path):
    red = Redis(procs, tmp_path)
    r, took = probe("--replicas", "2", "--redis-url", red.url, "--timeout", "500ms")
    assert r.returncode == 69
    assert took < 0.5 * SLOW + 1.0


def test_wrong_password_is_69_and_redacted(procs, tmp_path):
    red = Redis(procs, tmp_path).start()
    bad = "redis://:not-the-password@127.0.0.1:%d/0" % red.port
    r, _ = probe("--replicas", "2", "--redis-url", bad, "--timeout", "1s")
    assert r.returncode == 69, r.stderr
    assert "not-the-password" not in r.stderr
    assert "WRONGPASS" in r.stderr or "password" in r.stderr.lower()


def test_bad_url_is_78():
    r, _ = probe("--replicas", "2", "--redis-url", "http://nope")
    assert r.returncode == 78, r.stderr


def test_noop_pod_whose_topology_now_wants_redis_fails(procs, tmp_path):
    red = Redis(procs, tmp_path).start()
    env_file = tmp_path / "cluster.env"
    # The pod started alone: init wrote a noop env file.
    r = run_agent(["init", "--platform", "static", "--env-file", str(env_file)])
    assert r.returncode == 0, r.stderr
    r, _ = probe("--env-file", str(env_file))
    assert r.returncode == 0, r.stderr
    # Now the app has three replicas: this noop pod is deaf to the others.
    r, _ = probe("--env-file", str(env_file), "--replicas", "3", "--redis-url", red.url)
    assert r.returncode == 69, r.stderr
    assert "drift" in r.stderr


def test_redis_pod_checks_the_bus_from_its_env_file(procs, tmp_path):
    red = Redis(procs, tmp_path).start()
    env_file = tmp_path / "cluster.env"
    r = run_agent(["init", "--platform", "static", "--replicas", "2", "--redis-url", red.url,
                   "--env-file", str(env_file)])
    assert r.returncode == 0, r.stderr
    # The probe runs where only the env file is at hand (no --redis-url):
    # it checks the bus this pod uses, even if the topology shrank.
    r, _ = probe("--env-file", str(env_file))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("redis: bus usable")
    red.kill()
    r, _ = probe("--env-file", str(env_file), "--timeout", "500ms")
    assert r.returncode == 69
