"""The env file and the state file against what a shared volume can hold
(issue 21 items 4 and 5, docs/hardening.md): a FIFO or a device at the path
is a clear error at once (never a block), and temp files a killed writer
left behind are removed before the next write (only ours, only stale)."""
import os
import stat
import time

from conftest import SLOW, free_port, run_agent
from test_serve import http, serve_args, start_serve, stderr_of, wait_for

STALE = time.time() - 120      # TMP_STALE_S is 10 s


def test_exec_env_file_fifo_is_refused_at_once(tmp_path):
    path = tmp_path / "cluster.env"
    os.mkfifo(path)
    t0 = time.monotonic()
    r = run_agent(["exec", "--env-file", str(path), "--", "true"], timeout=20)
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert time.monotonic() - t0 < 5 * SLOW
    last = r.stderr.strip().splitlines()[-1]
    assert "it is a FIFO (named pipe), expected a regular file" in last, last
    assert str(path) in last


def test_exec_env_file_device_is_refused():
    r = run_agent(["exec", "--env-file", "/dev/null", "--", "true"], timeout=20)
    assert r.returncode == 78, r.stderr
    assert "it is a character device, expected a regular file" in r.stderr


def test_init_env_file_fifo_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "cluster.env"
    os.mkfifo(path)
    r = run_agent(["init", "--env-file", str(path)], timeout=20)
    assert r.returncode == 73, (r.returncode, r.stderr)
    assert "cannot write the env file %s: it is a FIFO" % path in r.stderr
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert os.listdir(tmp_path) == ["cluster.env"]


def test_state_file_fifo_does_not_block_serve(tmp_path, procs):
    # serve reads <env-file>.state (init's decision) before discovering:
    # a FIFO there is ignored with a line, /livez and /readyz answer.
    env_file = tmp_path / "cluster.env"
    os.mkfifo(str(env_file) + ".state")
    os.mkfifo(env_file)
    port = free_port()
    p, _ = start_serve(procs, serve_args(port, "--env-file", str(env_file)),
                       wait="/livez")
    wait_for(lambda: http(port, "/readyz")[0] in (200, 503), 10,
             what="/readyz answers")
    err = stderr_of(procs, p)
    assert "FIFO" in err, err


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    d = tmp_path
    secret = "pw-left-behind-123"
    made = {}
    for name, age in [("cluster.env.tmp.AbC123", STALE),       # stale: ours
                      ("cluster.env.tmp.zzzzzz", STALE),       # stale: ours
                      ("cluster.env.state.tmp.Q1w2E3", STALE), # the state file's
                      ("cluster.env.tmp.fresh1", None),        # a live writer's
                      ("cluster.env.tmp.abc", STALE),          # not our pattern
                      ("cluster.env.tmp.AbC1234", STALE),      # not our pattern
                      ("other.env.tmp.AbC123", STALE),         # another file's
                      ("cluster.env.bak", STALE)]:
        f = d / name
        f.write_text("export PYLON_CLUSTER_BUS='redis://:%s@h'\n" % secret)
        f.chmod(0o600)
        if age:
            os.utime(f, (age, age))
        made[name] = f
    # a symlink with our pattern: never followed, never removed
    target = d / "elsewhere"
    target.write_text("keep")
    link = d / "cluster.env.tmp.L1nk00"
    os.symlink(target, link)
    os.utime(link, (STALE, STALE), follow_symlinks=False)

    r = run_agent(["init", "--env-file", str(d / "cluster.env")])
    assert r.returncode == 0, r.stderr
    left = sorted(os.listdir(d))
    assert left == sorted(["cluster.env", "cluster.env.state", "elsewhere",
                           "cluster.env.tmp.L1nk00", "cluster.env.tmp.fresh1",
                           "cluster.env.tmp.abc", "cluster.env.tmp.AbC1234",
                           "other.env.tmp.AbC123", "cluster.env.bak"]), left
    assert target.read_text() == "keep"
    assert "removed 2 stale temp files of %s" % (d / "cluster.env") in r.stderr
    assert "removed 1 stale temp file of %s" % (d / "cluster.env.state") in r.stderr
    assert secret not in r.stderr


def test_directory_at_the_env_file_path_is_refused_before_any_temp_file(tmp_path):
    (tmp_path / "cluster.env").mkdir()
    r = run_agent(["init", "--env-file", str(tmp_path / "cluster.env")])
    assert r.returncode == 73, r.stderr
    assert "it is a directory, expected a regular file" in r.stderr
    assert os.listdir(tmp_path) == ["cluster.env"]
