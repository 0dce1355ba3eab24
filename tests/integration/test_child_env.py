"""The child's environment and signal state (issues 18 and 14).

`exec` and the supervisor (`serve -- CMD`) hand CMD the agent's environment
minus what only the agent uses (every PYLON_AGENT_* variable, FLY_API_TOKEN)
plus exactly the bus variables of the decision; --pass-env keeps named ones.
CMD starts with no ignored signal and an empty mask.  Each child writes its
own /proc/self/environ and status to a file the test reads."""
import os
import time

from conftest import SLOW, clean_env, free_port, run_agent
from redisfix import redis_factory  # noqa: F401

PASSWORD = "child-env-s3cret"
DUMP = ("tr '\\0' '\\n' < /proc/self/environ > {out}.env; "
        "grep -E '^Sig(Ign|Blk):' /proc/self/status > {out}.sig")


def read_child(out):
    env = dict(line.split("=", 1) for line in open(out + ".env").read().splitlines()
               if "=" in line)
    sig = dict(line.split(":\t") for line in open(out + ".sig").read().splitlines())
    return env, sig


def assert_clean(env, sig, mode, url=None, kept=()):
    for k in env:
        assert not k.startswith("PYLON_AGENT_") or k in kept, k
    assert "FLY_API_TOKEN" not in env or "FLY_API_TOKEN" in kept
    assert env["PYLON_CLUSTER_NAMESPACE"] == "pylon"
    if mode == "redis":
        assert env["PYLON_CLUSTER_BUS"] == url
        assert env["PYLON_CLUSTER_REQUIRED"] == "1"
    else:
        assert "PYLON_CLUSTER_BUS" not in env
        assert "PYLON_CLUSTER_REQUIRED" not in env
        assert not any(PASSWORD in v for v in env.values())
    assert int(sig["SigIgn"], 16) == 0, sig
    assert int(sig["SigBlk"], 16) == 0, sig


def agent_env(url, how, tmp_path, **extra):
    env = clean_env(FLY_API_TOKEN="fm2_secret-token", PYLON_CLUSTER_REQUIRED="1", **extra)
    if how == "env":
        env["PYLON_AGENT_REDIS_URL"] = url
    else:
        f = tmp_path / "url"
        f.write_text(url + "\n")
        env["PYLON_AGENT_REDIS_URL_FILE"] = str(f)
    return env


def test_exec_child_env_noop_and_redis(redis_factory, tmp_path):
    r = redis_factory(requirepass=PASSWORD)
    url = r.url(password=PASSWORD)
    for how in ("env", "file"):
        for replicas, mode in ((1, "noop"), (2, "redis")):
            out = str(tmp_path / ("exec-%s-%d" % (how, replicas)))
            p = run_agent(["exec", "--platform", "static", "--replicas", str(replicas),
                           "--", "sh", "-c", DUMP.format(out=out)],
                          env=agent_env(url, how, tmp_path))
            assert p.returncode == 0, p.stderr
            env, sig = read_child(out)
            assert_clean(env, sig, mode, url)


def test_exec_env_file_child_and_pass_env(redis_factory, tmp_path):
    r = redis_factory(requirepass=PASSWORD)
    url = r.url(password=PASSWORD)
    ef = tmp_path / "cluster.env"
    p = run_agent(["init", "--platform", "static", "--replicas", "3", "--env-file", str(ef)],
                  env=agent_env(url, "env", tmp_path))
    assert p.returncode == 0, p.stderr
    assert "export PYLON_CLUSTER_REQUIRED='1'" in ef.read_text().splitlines()
    out = str(tmp_path / "execfile")
    env = agent_env(url, "env", tmp_path, PYLON_AGENT_PASS_ENV="FLY_API_TOKEN,PYLON_AGENT_X",
                    PYLON_AGENT_X="kept")
    p = run_agent(["exec", "--env-file", str(ef), "--", "sh", "-c", DUMP.format(out=out)],
                  env=env)
    assert p.returncode == 0, p.stderr
    cenv, sig = read_child(out)
    assert_clean(cenv, sig, "redis", url, kept=("FLY_API_TOKEN", "PYLON_AGENT_X",
                                                "PYLON_AGENT_PASS_ENV"))
    assert cenv["FLY_API_TOKEN"] == "fm2_secret-token"
    assert cenv["PYLON_AGENT_X"] == "kept"
    assert "PYLON_AGENT_REDIS_URL" not in cenv


def test_cluster_required_false(redis_factory, tmp_path):
    r = redis_factory(requirepass=PASSWORD)
    url = r.url(password=PASSWORD)
    ef = tmp_path / "cluster.env"
    p = run_agent(["init", "--platform", "static", "--replicas", "2", "--env-file", str(ef),
                   "--cluster-required=false"], env=agent_env(url, "env", tmp_path))
    assert p.returncode == 0, p.stderr
    lines = ef.read_text().splitlines()
    assert "unset PYLON_CLUSTER_REQUIRED" in lines
    assert "export PYLON_CLUSTER_REQUIRED='1'" not in lines


def test_supervised_child_env(procs, redis_factory, tmp_path):
    r = redis_factory(requirepass=PASSWORD)
    url = r.url(password=PASSWORD)
    for how, replicas, mode in (("file", 1, "noop"), ("env", 1, "noop"),
                                ("file", 2, "redis"), ("env", 2, "redis")):
        out = str(tmp_path / ("sup-%s-%d" % (how, replicas)))
        port = free_port()
        p = procs.start_agent(["serve", "--platform", "static", "--replicas", str(replicas),
                               "--listen", "127.0.0.1:%d" % port, "--",
                               "sh", "-c", DUMP.format(out=out) + "; exec sleep 30"],
                              env=agent_env(url, how, tmp_path))
        end = time.monotonic() + 15 * SLOW
        while not os.path.exists(out + ".sig") and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.1)
        env, sig = read_child(out)
        assert_clean(env, sig, mode, url)
        p.terminate()
        p.wait(timeout=10 * SLOW)
