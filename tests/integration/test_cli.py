"""The command line contract (SPEC 2, 3, 8) through the real binary:
every exit code, --help everywhere, the env file, exec, termination log."""
import json
import os
import socket
import stat

import pytest

from conftest import clean_env, free_port, run_agent

COMMANDS = ["decide", "init", "exec", "serve", "probe", "check", "version"]


def closed_port():
    # A port nothing listens on: bind, read the number, close.
    return free_port()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_for_every_command(cmd):
    r = run_agent([cmd, "--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: pylon-agent " + cmd)


def test_main_help_and_usage_errors():
    r = run_agent(["--help"])
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout
    assert run_agent([]).returncode == 64
    r = run_agent(["frobnicate"])
    assert r.returncode == 64
    assert 'unknown command "frobnicate"' in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["decide", "--bogus"], "unknown option --bogus"),
    (["decide", "--namespace"], "needs a value"),
    (["decide", "stray"], "unexpected argument"),
    (["decide", "--timeout", "5"], "invalid duration"),
    (["decide", "--mode", "maybe"], "auto|redis|noop"),
    (["init", "--prove"], "unknown option --prove"),
    (["exec"], "exec needs a command"),
    (["decide", "--", "ls"], "takes no command"),
])
def test_usage_errors_exit_64(args, needle):
    r = run_agent(args)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert needle in r.stderr
    assert r.stderr.count("\n") == 1, "one error line: " + r.stderr


def test_version():
    r = run_agent(["version"])
    assert r.returncode == 0
    assert r.stdout.startswith("pylon-agent 0.1.0")
    assert "libcurl" in r.stdout and "hiredis" in r.stdout


def test_decide_static_defaults_to_one_peer_noop():
    r = run_agent(["decide", "--output", "json"], env=clean_env(HOSTNAME="host-a"))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mode"] == "noop" and d["peers"] == 1 and d["platform"] == "static"
    assert d["instance"] == "host-a"
    assert d["channel"] == "pylon:cluster:bus"
    assert d["redis"]["url"] is None and d["redis"]["proven"] is False


def test_platform_auto_is_static_without_k8s_or_fly():
    r = run_agent(["decide", "--output", "json", "--replicas", "1"])
    assert json.loads(r.stdout)["platform"] == "static"


def test_peers_without_url_is_misconfiguration_78(tmp_path):
    tl = tmp_path / "termination-log"
    tl.write_text("")
    r = run_agent(["decide", "--replicas", "3"],
                  env=clean_env(PYLON_AGENT_TERMINATION_LOG=tl))
    assert r.returncode == 78
    assert "3 peers (static replicas=3)" in r.stderr
    assert "Redis URL" in r.stderr
    # The one-line reason lands in the termination log too.
    assert tl.read_text().strip() in r.stderr
    assert tl.read_text().count("\n") == 1


def test_termination_log_never_created(tmp_path):
    tl = tmp_path / "absent"
    r = run_agent(["decide", "--replicas", "3"],
                  env=clean_env(PYLON_AGENT_TERMINATION_LOG=tl))
    assert r.returncode == 78
    assert not tl.exists()


@pytest.mark.parametrize("extra,needle", [
    (["--namespace", "bad ns"], "namespace"),
    (["--redis-url", "http://nope"], ""),
    (["--redis-url-file", "/nonexistent/redis-url"], "/nonexistent/redis-url"),
    (["--config", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml"),
])
def test_misconfiguration_exits_78(extra, needle):
    r = run_agent(["decide"] + extra)
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert needle in r.stderr


def test_unknown_config_key_is_78(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("namespace: ok\nreplica: 3\n")
    r = run_agent(["decide", "--config", str(cfg)])
    assert r.returncode == 78
    assert 'unknown key "replica"' in r.stderr


def test_precedence_flag_env_file_default(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("namespace: from-file\nreplicas: 1\nmin-peers: 1\n")
    base = ["decide", "--output", "json", "--config", str(cfg)]
    d = json.loads(run_agent(base).stdout)
    assert d["namespace"] == "from-file"
    env = clean_env(PYLON_AGENT_NAMESPACE="from-env")
    d = json.loads(run_agent(base, env=env).stdout)
    assert d["namespace"] == "from-env"
    d = json.loads(run_agent(base + ["--namespace", "from-flag"], env=env).stdout)
    assert d["namespace"] == "from-flag"
    # env config path
    d = json.loads(run_agent(["decide", "--output", "json"],
                             env=clean_env(PYLON_AGENT_CONFIG=cfg)).stdout)
    assert d["namespace"] == "from-file"


def test_bus_not_proven_exits_69_within_deadline():
    port = closed_port()
    r = run_agent(["init", "--replicas", "2", "--timeout", "700ms",
                   "--redis-url", "redis://127.0.0.1:%d" % port,
                   "--env-file", "/tmp/never-written.env"], timeout=20)
    assert r.returncode == 69, r.stderr
    assert not os.path.exists("/tmp/never-written.env")


def test_discovery_failure_policy_fail_exits_75():
    port = closed_port()
    env = clean_env(FLY_APP_NAME="chat", FLY_MACHINE_ID="m1", FLY_API_TOKEN="tok-abc123",
                    PYLON_AGENT_FLY_NO_JITTER="1")
    r = run_agent(["decide", "--platform", "fly", "--fly-api-url",
                   "http://127.0.0.1:%d" % port, "--api-timeout", "1s",
                   "--on-discovery-error", "fail"], env=env)
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert "tok-abc123" not in r.stderr
    # noop policy: same failure, a decision
    r = run_agent(["decide", "--platform", "fly", "--fly-api-url",
                   "http://127.0.0.1:%d" % port, "--api-timeout", "1s",
                   "--on-discovery-error", "noop", "--output", "json"], env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mode"] == "noop" and d["discovery_failed"] is True


def test_init_noop_writes_0600_env_file(tmp_path):
    path = tmp_path / "cluster.env"
    r = run_agent(["init", "--namespace", "my-app", "--env-file", str(path)])
    assert r.returncode == 0, r.stderr
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# pylon-agent 0.1.0 ")
    assert "mode=noop peers=1" in lines[0]
    assert lines[1:] == ["unset PYLON_CLUSTER_BUS",
                         "export PYLON_CLUSTER_NAMESPACE='my-app'",
                         "unset PYLON_CLUSTER_REQUIRED"]
    assert "bus mode: noop — 1 peer" in r.stderr
    # no temp files left behind; the state file for a serve sidecar
    assert sorted(os.listdir(tmp_path)) == ["cluster.env", "cluster.env.state"]
    assert stat.S_IMODE(os.stat(str(path) + ".state").st_mode) == 0o600


def test_init_unwritable_dir_fails_clearly():
    r = run_agent(["init", "--env-file", "/nonexistent-dir/cluster.env"])
    assert r.returncode == 73
    assert "/nonexistent-dir" in r.stderr


def test_exec_env_file_applies_and_sources_in_sh(tmp_path):
    path = tmp_path / "cluster.env"
    assert run_agent(["init", "--namespace", "ns1", "--env-file", str(path)]).returncode == 0
    env = clean_env(PYLON_CLUSTER_BUS="redis://stale:6379")
    r = run_agent(["exec", "--env-file", str(path), "--", "sh", "-c",
                   'echo "bus=${PYLON_CLUSTER_BUS-unset} ns=$PYLON_CLUSTER_NAMESPACE"'],
                  env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "bus=unset ns=ns1"
    # and the same file is POSIX-sh sourceable
    r2 = run_agent(["version"])  # keep agent in the loop; the file is plain sh
    assert r2.returncode == 0
    import subprocess
    out = subprocess.run(["sh", "-c", '. "$1"; echo "${PYLON_CLUSTER_BUS-unset} $PYLON_CLUSTER_NAMESPACE"',
                          "sh", str(path)], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "unset ns1"


def test_exec_without_env_file_decides_and_execs():
    r = run_agent(["exec", "--namespace", "direct", "--", "sh", "-c",
                   'echo "${PYLON_CLUSTER_BUS-unset} $PYLON_CLUSTER_NAMESPACE"'])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "unset direct"


def test_exec_errno_126_127(tmp_path):
    r = run_agent(["exec", "--", "/nonexistent/pylon"])
    assert r.returncode == 127
    assert "cannot execute /nonexistent/pylon" in r.stderr
    notexec = tmp_path / "script"
    notexec.write_text("#!/bin/sh\n")
    notexec.chmod(0o644)
    r = run_agent(["exec", "--", str(notexec)])
    assert r.returncode == 126


def test_exec_env_file_rejects_foreign_file(tmp_path):
    path = tmp_path / "evil.env"
    path.write_text("export PYLON_CLUSTER_BUS='redis://:pw123@h'\nexport LD_PRELOAD='/x'\n")
    r = run_agent(["exec", "--env-file", str(path), "--", "true"])
    assert r.returncode == 78
    assert "pw123" not in r.stderr
    r = run_agent(["exec", "--env-file", str(tmp_path / "missing.env"), "--", "true"])
    assert r.returncode == 78
    assert "missing.env" in r.stderr


def test_forced_modes():
    r = run_agent(["decide", "--mode", "noop", "--replicas", "5", "--output", "json"])
    d = json.loads(r.stdout)
    assert d["mode"] == "noop" and d["peers"] == 5 and "forced" in d["reason"]
    r = run_agent(["decide", "--mode", "redis"])
    assert r.returncode == 78 and "--mode redis needs a Redis URL" in r.stderr


def test_decide_output_env_masks_password():
    r = run_agent(["decide", "--replicas", "2", "--output", "env",
                   "--redis-url", "redis://u:sup3rsecret@h:6379/0"])
    assert r.returncode == 0, r.stderr
    assert "sup3rsecret" not in r.stdout + r.stderr
    assert "export PYLON_CLUSTER_BUS='redis://u:***@h:6379/0'" in r.stdout


def test_json_log_format():
    r = run_agent(["init", "--log-format", "json", "--env-file", "/tmp/pa-json-test.env"])
    assert r.returncode == 0
    for line in r.stderr.splitlines():
        obj = json.loads(line)
        assert obj["logger"] == "pylon-agent" and obj["level"] in ("info", "warning")
    first = json.loads(r.stderr.splitlines()[0])
    assert first["mode"] == "noop" and first["peers"] == 1
    os.unlink("/tmp/pa-json-test.env")


def test_reference_doc_matches_options_table():
    """docs/reference.md's generated table is the binary's options table."""
    import conftest
    doc = open(os.path.join(conftest.ROOT, "docs", "reference.md")).read()
    start = doc.index("<!-- BEGIN GENERATED -->\n") + len("<!-- BEGIN GENERATED -->\n")
    end = doc.index("<!-- END GENERATED -->")
    r = run_agent(["version", "--reference"])
    assert r.returncode == 0
    assert doc[start:end] == r.stdout, "run scripts/gen-reference.sh"
    # and every SPEC env var is in the table
    for env in ["PYLON_AGENT_PLATFORM", "PYLON_AGENT_MODE", "PYLON_AGENT_REDIS_URL",
                "PYLON_AGENT_REDIS_URL_FILE", "PYLON_AGENT_REDIS_CA_FILE",
                "PYLON_AGENT_NAMESPACE", "PYLON_AGENT_REPLICAS", "PYLON_AGENT_MIN_PEERS",
                "PYLON_AGENT_FLY_GROUP", "PYLON_AGENT_APP_SELECTOR",
                "PYLON_AGENT_COUNT_SURGE", "PYLON_AGENT_ON_DISCOVERY_ERROR",
                "PYLON_AGENT_ENV_FILE", "PYLON_AGENT_TIMEOUT", "PYLON_AGENT_INTERVAL",
                "PYLON_AGENT_RESYNC", "PYLON_AGENT_LISTEN", "PYLON_AGENT_REPORT",
                "PYLON_AGENT_ON_DRIFT", "PYLON_AGENT_API_TIMEOUT", "KUBECONFIG",
                "PYLON_AGENT_SERVICEACCOUNT_DIR", "PYLON_AGENT_FLY_API_URL",
                "PYLON_AGENT_LOG_FORMAT"]:
        assert "`%s`" % env in r.stdout, env


def test_zero_duration_is_rejected():
    r = run_agent(["init", "--timeout", "0s"])
    assert r.returncode == 64
    assert "greater than zero" in r.stderr
    r = run_agent(["decide"], env=clean_env(PYLON_AGENT_API_TIMEOUT="0ms"))
    assert r.returncode == 78
    assert "PYLON_AGENT_API_TIMEOUT" in r.stderr


def test_check_output_env_is_a_usage_error():
    r = run_agent(["check", "--output", "env"])
    assert r.returncode == 64
    assert "check --output env is not supported" in r.stderr


def test_probe_deadline_ignores_timeout_from_env():
    """probe keeps its 3 s deadline when only the pod's env sets
    PYLON_AGENT_TIMEOUT (meant for init); --timeout on its command line
    overrides it."""
    import socket as s_
    import time
    lst = s_.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)          # accepts, never answers: the deadline decides
    port = lst.getsockname()[1]
    try:
        env = clean_env(PYLON_AGENT_TIMEOUT="30s")
        base = ["probe", "--platform", "static", "--replicas", "2",
                "--redis-url", "redis://127.0.0.1:%d" % port]
        t0 = time.monotonic()
        r = run_agent(base, env=env, timeout=40)
        took = time.monotonic() - t0
        assert r.returncode == 69, r.stderr
        assert took < 10, took
        t0 = time.monotonic()
        r = run_agent(base + ["--timeout", "1s"], env=env, timeout=40)
        assert r.returncode == 69
        assert time.monotonic() - t0 < 6
    finally:
        lst.close()


def test_discovery_failure_never_reports_zero_peers():
    port = closed_port()
    env = clean_env(FLY_APP_NAME="chat", FLY_MACHINE_ID="m1", FLY_API_TOKEN="tok-abc123",
                    PYLON_AGENT_FLY_JITTER_MS="0")
    r = run_agent(["decide", "--platform", "fly", "--fly-api-url",
                   "http://127.0.0.1:%d" % port, "--api-timeout", "1s",
                   "--on-discovery-error", "noop", "--output", "json"], env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["discovery_failed"] is True and d["peers"] == 1
