"""Allocation-failure injection: fail the Nth allocation (and every later
one) for every N along the main paths, with the real binary.

PYLON_AGENT_FAIL_ALLOC=N makes alloc.c (the one allocator; cJSON goes
through it too) fail from the Nth allocation on; PYLON_AGENT_ALLOC_STATS=1
makes main.c print alloc_count at exit (or before execve), which caps the
loop: a baseline run counts the path's allocations, then N = 1..count.

For every N the agent must:
  - not die of a signal, and exit 0 or one of its documented codes;
  - on failure, print exactly one error line ("[pylon-agent] error: ...")
    with no sanitizer report or backtrace;
  - on success, produce exactly the baseline's output (a swallowed
    allocation failure must never yield a silently different result).
Leaks: under `make asan` LeakSanitizer checks every run; otherwise a sample
of N per path runs under valgrind (definite leaks fail).
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import AGENT, WRAPPER, clean_env, free_port, wait_port

OK_CODES = {0, 64, 69, 70, 73, 75, 78}
# Every N up to MAX_RUNS per path; longer paths (discovery over TLS costs
# ~0.1 s a run) are sampled evenly.  PYLON_ALLOC_SWEEP=full sweeps every N
# of every path (docs/hardening.md records such a run).
MAX_RUNS = 10 ** 6 if os.environ.get("PYLON_ALLOC_SWEEP") == "full" else 150
VALGRIND_SAMPLES = 4    # per path, when not under ASan/valgrind already
PASSWORD = "alloc-secret-pw"

# Misreported allocation failures already reported to the owner of the
# file (see docs/hardening.md): tolerated, listed, and the test xfails so
# they stay visible.  Anything else fails.
KNOWN = [
    # (what, substring of the misleading error line)
]

_STATS = re.compile(r"alloc_count=(\d+) at (exit|exec)")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_LAT = re.compile(r"(proven in |\"latency_ms\":)[0-9.]+")


def _under_asan():
    try:
        out = subprocess.run(["ldd", AGENT], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libasan" in out


ASAN = _under_asan()


def _norm(s):
    """Output that may legitimately differ between runs: timestamps,
    latencies."""
    return _LAT.sub(r"\g<1>0", _TS.sub("T", s))


def _run(argv, env, fail_at=None, wrapper=None, timeout=60):
    env = dict(env)
    env["PYLON_AGENT_ALLOC_STATS"] = "1"
    if fail_at is not None:
        env["PYLON_AGENT_FAIL_ALLOC"] = str(fail_at)
    if ASAN:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=97")
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:exitcode=97")
    cmd = (wrapper if wrapper is not None else WRAPPER) + [AGENT] + argv
    return subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _error_lines(stderr):
    return [l for l in stderr.splitlines() if " error: " in l or l.startswith("error:")]


def _check_run(name, n, p, baseline, result_of):
    where = "%s: FAIL_ALLOC=%d" % (name, n)
    assert p.returncode >= 0, "%s: killed by signal %d\n%s" % (where, -p.returncode, p.stderr)
    assert p.returncode in OK_CODES, "%s: exit %d\n%s" % (where, p.returncode, p.stderr)
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation",
                "Aborted", "double free", "==ERROR", "Assertion"):
        assert bad not in p.stderr, "%s: %s\n%s" % (where, bad, p.stderr)
    assert PASSWORD not in p.stderr + p.stdout, where
    if p.returncode == 0:
        got = result_of(p)
        assert got == baseline, "%s: exit 0 with a different result:\n%r\n!=\n%r" % (
            where, got, baseline)
    else:
        errs = _error_lines(p.stderr)
        assert len(errs) == 1, "%s: exit %d with %d error lines:\n%s" % (
            where, p.returncode, len(errs), p.stderr)
        msg = errs[0].split(" error: ", 1)[-1].strip()
        assert len(msg) > 5, "%s: empty error message: %r" % (where, errs[0])
        # The cause is named: an allocation failure must not pass for a
        # bad file, a bad URL or an API fault.
        if "memory" not in msg:
            for what, pat in KNOWN:
                if pat in msg:
                    return what
        assert "memory" in msg, "%s: exit %d, the error hides the cause:\n%s" % (
            where, p.returncode, p.stderr)
    return None


def _valgrind_leaks(name, argv, env, ns):
    """Definite leaks at a few N, under valgrind (skipped when the agent
    already runs under ASan or a wrapper, which check every run)."""
    if ASAN or WRAPPER or shutil.which("valgrind") is None:
        return
    vg = ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
          "--error-exitcode=99", "--trace-children=no", "--run-libc-freeres=no"]
    for n in ns:
        p = _run(argv, env, n, wrapper=vg, timeout=120)
        assert p.returncode != 99, "%s: FAIL_ALLOC=%d: valgrind found errors/leaks:\n%s" % (
            name, n, p.stderr)


def sweep(name, argv, env, result_of=lambda p: _norm(p.stdout), before=None):
    """Baseline, then every N from 1 to the path's allocation count."""
    if before:
        before()
    base = _run(argv, env)
    assert base.returncode == 0, "%s: baseline failed: %s" % (name, base.stderr)
    m = _STATS.findall(base.stderr)
    assert m, "%s: no alloc_count line (PYLON_AGENT_ALLOC_STATS): %s" % (name, base.stderr)
    total = int(m[-1][0])
    assert total > 0, name
    baseline = result_of(base)
    step = -(-total // MAX_RUNS)
    ns = sorted(set(list(range(1, total + 1, step)) + [total]))
    # Under valgrind every run costs ~1 s: sample instead of sweeping.
    if WRAPPER:
        ns = sorted(set(ns[:: max(1, len(ns) // 12)] + [ns[-1]]))
    codes = {}
    known = {}
    for n in ns:
        if before:
            before()
        p = _run(argv, env, n)
        k = _check_run(name, n, p, baseline, result_of)
        if k:
            known.setdefault(k, []).append(n)
        codes[p.returncode] = codes.get(p.returncode, 0) + 1
    # The injection really fired: the first allocation failing is an error.
    assert 0 not in codes or len(codes) > 1, "%s: no N failed: %s" % (name, codes)
    sample = sorted(set([1, total // 3 or 1, (2 * total) // 3 or 1, total]))
    _valgrind_leaks(name, argv, env, sample[:VALGRIND_SAMPLES])
    print("%s: %d allocations, %d runs, exit codes %s" % (name, total, len(ns), codes))
    if known:
        pytest.xfail("%s: known misreported allocation failures: %s" % (
            name, "; ".join("%s at N=%s" % (k, v) for k, v in known.items())))
    return total


# ---- static paths ----------------------------------------------------------

URL = "redis://user:%s@127.0.0.1:1/0" % PASSWORD


def test_decide_static_text():
    sweep("decide", ["decide", "--replicas", "3", "--redis-url", URL], clean_env())


def test_decide_static_json():
    def result(p):
        return json.loads(_norm(p.stdout))
    sweep("decide-json", ["decide", "--output", "json", "--replicas", "3",
                          "--namespace", "my-app", "--redis-url", URL], clean_env(), result)


def test_decide_static_env():
    sweep("decide-env", ["decide", "--output", "env", "--replicas", "2",
                         "--redis-url", URL], clean_env())


def test_init_noop(tmp_path):
    envf = tmp_path / "cluster.env"

    def result(p):
        return _norm(envf.read_text())

    state = tmp_path / "cluster.env.state"

    def before():
        for f in (envf, state):
            if f.exists():
                f.unlink()
    sweep("init-noop", ["init", "--env-file", str(envf)], clean_env(), result, before)
    # A failed run never leaves a partial file or a temp file behind; the
    # state file (what serve adopts) exists only beside a written env file.
    leftovers = [f for f in os.listdir(tmp_path)
                 if f not in ("cluster.env", "cluster.env.state")]
    assert leftovers == [], leftovers
    assert envf.exists() or not state.exists()


def test_config_file(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("replicas: 4\nnamespace: from-file\nredis-url: %s\n"
                   "report:\n  - log\ntimeout: 5s\nmin-peers: 2\n" % URL)
    sweep("config", ["decide", "--output", "json", "--config", str(cfg)], clean_env(),
          lambda p: json.loads(_norm(p.stdout)))


def test_exec_env_file(tmp_path):
    envf = tmp_path / "cluster.env"
    envf.write_text("# pylon-agent 0.1.0 2026-11-28T23:00:00Z mode=redis peers=3 "
                    "source=\"static\"\nexport PYLON_CLUSTER_BUS='%s'\n"
                    "export PYLON_CLUSTER_NAMESPACE='my-app'\n" % URL)
    envf.chmod(0o600)
    argv = ["exec", "--env-file", str(envf), "--", "sh", "-c",
            'echo "bus=$PYLON_CLUSTER_BUS ns=$PYLON_CLUSTER_NAMESPACE" | md5sum']
    sweep("exec-env-file", argv, clean_env())


# ---- against a real redis-server ---------------------------------------------

@pytest.fixture
def redis_url(procs, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--requirepass", PASSWORD, "--dir", str(tmp_path)])
    wait_port(port)
    return "redis://:%s@127.0.0.1:%d/0" % (PASSWORD, port)


def test_init_redis(tmp_path, redis_url):
    envf = tmp_path / "cluster.env"

    def result(p):
        return _norm(envf.read_text())

    def before():
        if envf.exists():
            envf.unlink()
    env = clean_env(PYLON_AGENT_REDIS_URL=redis_url)
    sweep("init-redis", ["init", "--replicas", "3", "--env-file", str(envf),
                         "--timeout", "3s"], env, result, before)


def test_decide_prove_json(redis_url):
    env = clean_env(PYLON_AGENT_REDIS_URL=redis_url)
    sweep("decide-prove", ["decide", "--prove", "--output", "json", "--replicas", "2",
                           "--timeout", "3s"], env,
          lambda p: json.loads(_norm(p.stdout)))


# ---- discovery against the fakes -------------------------------------------------

def test_fly_discovery():
    from fly_fake import APP, SELF_ID, TOKEN, FlyFake
    fake = FlyFake("three_regions").start()
    try:
        env = clean_env(FLY_APP_NAME=APP, FLY_MACHINE_ID=SELF_ID, FLY_API_TOKEN=TOKEN,
                        FLY_PROCESS_GROUP="app", PYLON_AGENT_FLY_JITTER_MS="0")
        argv = ["decide", "--platform", "fly", "--output", "json", "--fly-api-url",
                fake.url, "--api-timeout", "2s", "--redis-url", URL]
        sweep("fly", argv, env, lambda p: json.loads(_norm(p.stdout)))
    finally:
        fake.stop()


def test_kube_discovery(tmp_path):
    kf = pytest.importorskip("kube_fake")
    fake = kf.KubeFake(str(tmp_path / "fake"))
    pod_name = "chat-7d4b9c8f6d-x2k9p"
    fake.add(*kf.deployment_objects("chat", replicas=3, podname=pod_name))
    fake.add(kf.hpa("chat", "Deployment", "chat", 10))
    fake.start()
    try:
        kc = fake.kubeconfig(str(tmp_path / "kubeconfig"))
        env = clean_env(KUBECONFIG=kc, POD_NAME=pod_name)
        argv = ["decide", "--platform", "kubernetes", "--output", "json",
                "--api-timeout", "2s", "--redis-url", URL]
        base = _run(argv, env)
        if base.returncode != 0 and "not implemented" in base.stderr:
            pytest.skip("kubernetes discovery is not in this build")
        sweep("kube", argv, env, lambda p: json.loads(_norm(p.stdout)))
    finally:
        fake.stop()


# ---- serve: start, answer, stop -------------------------------------------------

def test_serve(redis_url):
    """serve with the Nth allocation failing: it either exits at once with
    one clean error, or runs (answering /livez from its cached state) and
    stops on SIGTERM with a clean exit code; never a signal death."""
    import signal
    import time
    import urllib.request
    port = free_port()
    argv = ["serve", "--replicas", "3", "--listen", "127.0.0.1:%d" % port,
            "--interval", "200ms"]
    env = clean_env(PYLON_AGENT_REDIS_URL=redis_url, PYLON_AGENT_ALLOC_STATS="1")
    slow = 4 if (WRAPPER or ASAN) else 1

    def one(fail_at):
        e = dict(env)
        if fail_at:
            e["PYLON_AGENT_FAIL_ALLOC"] = str(fail_at)
        p = subprocess.Popen(WRAPPER + [AGENT] + argv, env=e, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        codes = []
        end = time.monotonic() + 2.0 * slow
        while time.monotonic() < end and p.poll() is None:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/livez" % port,
                                            timeout=1) as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as ex:
                codes.append(ex.code)
            except OSError:
                time.sleep(0.05)
                continue
            if codes:
                break
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=10 * slow)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError("serve FAIL_ALLOC=%s: no exit 10 s after SIGTERM\n%s"
                                 % (fail_at, err))
        return p, codes, err

    p, codes, err = one(None)
    assert p.returncode == 0 and codes == [200], err
    total = int(_STATS.findall(err)[-1][0])
    step = -(-total // (MAX_RUNS // 5))
    ns = sorted(set(list(range(1, total + 1, step)) + [total]))
    if WRAPPER:
        ns = ns[:: max(1, len(ns) // 6)]
    seen = {}
    for n in ns:
        p, codes, err = one(n)
        where = "serve: FAIL_ALLOC=%d" % n
        assert p.returncode >= 0, "%s: killed by signal %d\n%s" % (where, -p.returncode, err)
        assert p.returncode in OK_CODES, "%s: exit %d\n%s" % (where, p.returncode, err)
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "==ERROR"):
            assert bad not in err, "%s: %s\n%s" % (where, bad, err)
        assert PASSWORD not in err, where
        if p.returncode != 0:
            errs = _error_lines(err)
            assert len(errs) == 1 and "memory" in errs[0], "%s: exit %d:\n%s" % (
                where, p.returncode, err)
        seen[p.returncode] = seen.get(p.returncode, 0) + 1
    print("serve: %d allocations, %d runs, exit codes %s" % (total, len(ns), seen))
