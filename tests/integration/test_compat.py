"""The compatibility gate (SPEC 5, issue 11): decide, init, exec and check
never prove, write or call safe a Redis URL that Pylon 0.11.3 cannot use
(research/pylon-real.md "The bus").  Agent side only; the test that runs
real Pylon on the same forms lives with the real-Pylon harness."""
import json
import os

import pytest

from conftest import clean_env, run_agent
from redisfix import redis_factory  # noqa: F401

# (URL template, flags, refused?, needle in the one error line)
FORMS = [
    ("redis://127.0.0.1:{port}", [], False, None),
    ("redis://127.0.0.1:{port}/0", [], False, None),
    ("redis://127.0.0.1:{port}?protocol=resp2", [], False, None),
    ("rediss://127.0.0.1:{port}", [], True, "cannot speak TLS"),
    ("unix:///tmp/redis.sock", [], True, "unix socket"),
    ("redis+unix:///tmp/redis.sock", [], True, "unix socket"),
    ("REDIS://127.0.0.1:{port}", [], True, "upper-case scheme"),
    ("Redis://127.0.0.1:{port}", [], True, "upper-case scheme"),
    ("redis://127.0.0.1:{port}?insecure", [], True, "?insecure"),
    ("redis://127.0.0.1:{port}#insecure", [], True, "rediss:// only"),
    ("redis://127.0.0.1:{port}?protocol=3", [], True, "protocol=resp3"),
]


@pytest.mark.parametrize("tmpl,flags,refused,needle", FORMS)
def test_gate_forms(redis_factory, tmp_path, tmpl, flags, refused, needle):
    r = redis_factory()
    url = tmpl.format(port=r.port)
    env_file = tmp_path / "cluster.env"
    res = run_agent(["init", "--platform", "static", "--replicas", "2",
                     "--redis-url", url, "--timeout", "3s",
                     "--env-file", str(env_file)] + flags)
    if not refused:
        assert res.returncode == 0, res.stderr
        assert "export PYLON_CLUSTER_BUS=" in env_file.read_text()
        return
    assert res.returncode == 78, (res.returncode, res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    assert "refused for Pylon" in last and needle in last, last
    assert not env_file.exists()
    # nothing was published: the gate runs before any connection
    assert "bus attempt" not in res.stderr


def test_whitespace_refused(tmp_path):
    for url in (" redis://127.0.0.1:1", "redis://127.0.0.1:1 ", "redis://h:1\n"):
        res = run_agent(["decide", "--platform", "static", "--replicas", "2",
                         "--redis-url", url])
        assert res.returncode == 78, (url, res.stderr)
        assert "surrounding whitespace" in res.stderr


def test_rediss_with_pylon_tls_passes_gate():
    # the gate lets it through; nothing listens, so the proof fails (69)
    res = run_agent(["decide", "--platform", "static", "--replicas", "2",
                     "--redis-url", "rediss://127.0.0.1:1", "--pylon-tls",
                     "--prove", "--timeout", "1s"])
    assert res.returncode == 69, res.stderr
    res = run_agent(["decide", "--platform", "static", "--replicas", "2",
                     "--redis-url", "rediss://127.0.0.1:1", "--prove",
                     "--timeout", "1s"])
    assert res.returncode == 78, res.stderr
    env = dict(clean_env(), PYLON_AGENT_PYLON_TLS="true")
    res = run_agent(["decide", "--platform", "static", "--replicas", "2",
                     "--redis-url", "rediss://127.0.0.1:1"], env=env)
    assert res.returncode == 0, res.stderr


def test_exec_never_starts_with_refused_url(tmp_path):
    marker = tmp_path / "ran"
    res = run_agent(["exec", "--platform", "static", "--replicas", "2",
                     "--redis-url", "unix:///tmp/x.sock", "--",
                     "touch", str(marker)])
    assert res.returncode == 78 and not marker.exists(), res.stderr


def test_check_refused_url(redis_factory):
    # redis mode: unsafe, exit 78, never proven
    res = run_agent(["check", "--platform", "static", "--replicas", "2",
                     "--redis-url", "REDIS://127.0.0.1:1", "--output", "json"])
    assert res.returncode == 78, res.stderr
    d = json.loads(res.stdout)
    assert d["safe"] is False and d["redis"]["proof_tried"] is False
    # noop mode: safe, but a warning, and still no proof
    r = redis_factory()
    res = run_agent(["check", "--platform", "static", "--replicas", "1",
                     "--redis-url", "rediss://127.0.0.1:%d" % r.port,
                     "--output", "json"])
    d = json.loads(res.stdout)
    assert res.returncode == 0 and d["redis"]["proof_tried"] is False, res.stdout
    assert any("cannot be used by Pylon" in w for w in d["warnings"]), d

