#!/usr/bin/python3
"""make demo: the job a user came for, with real processes.

  1. Kubernetes (the fake API server the tests use): a Deployment with 3
     replicas and an HPA -> decide redis, prove the bus on a real
     password-protected redis-server, write the env file;
  2. two real Pylon 0.11.3 processes started through `pylon-agent exec`:
     a row inserted on A reaches B's WebSocket client;
  3. scale down to 1 -> decide says noop; `serve` in the pod that started
     in redis mode reports the drift;
  4. a Redis that accepts and never answers: Pylon alone hangs, the agent
     fails in seconds with the cause, `check` says NOT safe;
  5. where to go next.

Run by scripts/demo.sh (make demo), as root: everything runs in a private
network namespace (Pylon binds every interface) and Pylon in the cached
Debian 13 root (scripts/pylon-cache.sh).  Uses the test harness
(tests/integration/realpylon.py, redisfix.py, tests/fakes/kube_fake.py).
Every process it starts is stopped by pid in finally blocks (also on a
failure or Ctrl-C); every wait is bounded.  The Redis password is never
printed.  Exits 0 only when every step's key fact held.
"""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "integration"), os.path.join(REPO, "tests", "fakes")]

from conftest import clean_env, free_port  # noqa: E402
from kube_fake import KubeFake, deployment, deployment_objects, hpa, pod, replicaset  # noqa: E402
from realpylon import (Postgres, Pylons, SilentServer, WSClient, cache_root,  # noqa: E402
                       guest_token, insert, make_app, private_netns, pylon_env)
from redisfix import RedisServer  # noqa: E402

AGENT = os.path.abspath(os.environ.get("PYLON_AGENT_BIN")
                        or os.path.join(REPO, "build", "pylon-agent"))
NS = "prod"                                   # the Kubernetes namespace
DEP, RS = "chat", "chat-7d4b9c8f6d"
POD_A, POD_B = RS + "-x2k9p", RS + "-m4n8q"
HPA_MAX = 5
HANG_S = 4                                    # how long Pylon alone is watched
AGENT_TIMEOUT = "3s"                          # step 4's --timeout
COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


class StepFailed(Exception):
    pass


# ---- output ----------------------------------------------------------------

class Out:
    """Prints captions, commands and real output; the Redis password is
    replaced by *** in everything printed, and a password seen where the
    agent must never print it fails the demo."""

    def __init__(self):
        self.password = None
        self.leaks = []

    def redact(self, text, where=None):
        if self.password and self.password in text:
            if where:
                self.leaks.append(where)
            text = text.replace(self.password, "***")
        return text

    def line(self, text="", where=None):
        print(self.redact(text, where), flush=True)

    def block(self, text, where=None, prefix=""):
        for ln in self.redact(text, where).rstrip("\n").splitlines():
            print(prefix + ln, flush=True)

    def caption(self, n, title, text):
        bar = "-" * max(3, 74 - len(title))
        head = "== %d/5  %s %s" % (n, title, bar)
        print("\n" + ("\033[1m%s\033[0m" % head if COLOR else head), flush=True)
        for ln in text.strip("\n").splitlines():
            print("   " + ln.strip(), flush=True)

    def cmd(self, text):
        print(("\033[1m$ %s\033[0m" % text) if COLOR else "$ " + text, flush=True)

    def ok(self, n, text):
        print(("\033[32m[ok]\033[0m" if COLOR else "[ok]") + " step %d: %s" % (n, text),
              flush=True)

    def failed(self, n, text):
        print(("\033[31m[FAILED]\033[0m" if COLOR else "[FAILED]") +
              (" step %d: %s" % (n, text) if n else " " + text), flush=True)


out = Out()


def need(cond, what):
    if not cond:
        raise StepFailed(what)


# ---- processes -----------------------------------------------------------------

class Cleanup:
    """Stop callbacks, run last-in first-out; each runs once."""

    def __init__(self):
        self.items = []

    def add(self, fn, what):
        self.items.append((fn, what))
        return fn

    def run(self):
        while self.items:
            fn, what = self.items.pop()
            try:
                fn()
            except Exception as e:          # keep stopping the others
                print("demo: stopping %s: %s" % (what, e), file=sys.stderr)


cleanup = Cleanup()


def stop_proc(p, timeout=5.0):
    """SIGTERM by pid, then SIGKILL; bounded."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
    return p.returncode


def agent(args, env, timeout=30):
    """Runs the agent to completion (bounded); returns (rc, stdout, stderr, s).
    Killed and reaped on a timeout or an interrupt."""
    t0 = time.monotonic()
    p = subprocess.Popen([AGENT] + list(args), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        so, se = p.communicate(timeout=timeout)
    except BaseException:
        p.kill()
        p.wait(timeout=5)
        raise
    return p.returncode, so, se, time.monotonic() - t0


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Orphans of what the demo starts (a daemonized postmaster, the initdb
    of a runuser killed by Ctrl-C) become its children, so sweep() finds them."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children():
    me, kids = str(os.getpid()), {}
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read()
        except OSError:
            continue
        comm, rest = st.split("(", 1)[1].rsplit(")", 1)
        state, ppid = rest.split()[:2]
        if ppid == me:
            kids[int(pid)] = (comm, state)
    return kids


def sweep(timeout=5.0):
    """The last step of every run: reaps what already exited; anything still
    alive under the demo is stopped by pid (SIGTERM, then SIGKILL), bounded.
    Returns what had to be stopped."""
    stopped = []
    for pid, (comm, state) in _children().items():
        if state != "Z":
            stopped.append("%d (%s)" % (pid, comm))
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline, killed = time.monotonic() + timeout, False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break                                # no child left
        if pid:
            continue
        if time.monotonic() > deadline:
            if killed:
                break
            for pid in _children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline, killed = time.monotonic() + timeout, True
        time.sleep(0.05)
    return stopped


def show_agent(args, env, shown=None, timeout=30):
    out.cmd("pylon-agent " + (shown if shown is not None else " ".join(args)))
    rc, so, se, dt = agent(args, env, timeout)
    out.block(so, where="pylon-agent %s stdout" % args[0])
    out.block(se, where="pylon-agent %s stderr" % args[0])
    out.line("(exit %d, %.1f s)" % (rc, dt))
    return rc, so, se, dt


def http_get(port, path, timeout=2.0):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return None, ""


def wait_until(fn, timeout, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


# ---- the world -----------------------------------------------------------------

class World:
    """What the steps share: the work dir, the fake API server, Redis."""

    def __init__(self, work):
        self.work = work
        self.fake = None
        self.redis = None
        self.url_file = os.path.join(work, "redis-url")
        self.env_file = os.path.join(work, "cluster.env")
        self.sa = None

    def subdir(self, name):
        d = os.path.join(self.work, name)
        os.mkdir(d)
        os.chmod(d, 0o755)
        return d

    def kube_env(self, pod_name=POD_A, url_file=None, base=None):
        """A pod's environment as the chart sets it: in-cluster service
        account, the downward API, the Redis URL as a mounted Secret."""
        env = dict(base) if base is not None else clean_env()
        env.update(KUBERNETES_SERVICE_HOST="127.0.0.1",
                   KUBERNETES_SERVICE_PORT=str(self.fake.port),
                   PYLON_AGENT_SERVICEACCOUNT_DIR=self.sa,
                   POD_NAME=pod_name, POD_NAMESPACE=NS,
                   PYLON_AGENT_REDIS_URL_FILE=url_file or self.url_file,
                   PYLON_AGENT_NAMESPACE="chat")
        return env

    def scale(self, replicas, with_hpa):
        """kubectl scale (and the HPA created or deleted)."""
        self.fake.add(deployment(DEP, replicas, NS),
                      replicaset(RS, ("apps/v1", "Deployment", DEP), replicas, NS))
        key = ("autoscaling", "horizontalpodautoscalers", NS, DEP)
        if with_hpa:
            self.fake.add(hpa(DEP, "Deployment", DEP, HPA_MAX, ns=NS, min_replicas=replicas))
        else:
            with self.fake.lock:
                self.fake.objects.pop(key, None)


def write_secret_file(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


# ---- step 1 --------------------------------------------------------------------

def step1(w):
    out.caption(1, "Kubernetes: a Deployment with 3 replicas and an HPA", """
        The fake kube-apiserver the tests use (TLS with a test CA, bearer token) holds
        deployment/chat (replicas 3, RollingUpdate), hpa/chat (max %d) and the pod
        %s; the agent runs in that pod with the in-cluster service account,
        POD_NAME/POD_NAMESPACE from the downward API and the Redis URL in a file
        (mode 0600) as a mounted Secret, as charts/pylon sets them up.  Redis is a
        real redis-server with a password on a free loopback port.""" % (HPA_MAX, POD_A))
    env = w.kube_env()
    rc, so, se, _ = show_agent(["decide"], env)
    need(rc == 0, "decide exited %d" % rc)
    need("mode:      redis" in so, "decide did not say mode redis")
    need("deployment/chat replicas=3" in so and "hpa/chat max=%d" % HPA_MAX in so,
         "decide's reason does not name the 3 replicas and the HPA")
    need("peers:     %d" % HPA_MAX in so, "decide did not count the HPA's max")

    out.line()
    w.fake.clear_log()
    rc, so, se, _ = show_agent(["init", "--env-file", w.env_file], env,
                               shown="init --env-file %s" % w.env_file)
    need(rc == 0, "init exited %d" % rc)
    need("proven in" in se, "init did not prove the bus")
    reqs = w.fake.requests()
    out.line("API requests the agent made for this pod start (%d, %s):"
             % (len(reqs), ", ".join(sorted({r["auth"] for r in reqs}))))
    for r in reqs:
        out.line("  %s %s" % (r["method"], r["path"]))
    need(0 < len(reqs) <= 4, "init made %d API requests (SPEC: at most 4)" % len(reqs))

    out.line()
    out.cmd("cat %s   # the password shown as *** here" % w.env_file)
    st = os.stat(w.env_file)
    with open(w.env_file) as f:
        text = f.read()
    out.line("(mode %o)" % (st.st_mode & 0o777))
    out.block(text)                          # the file holds the password: redacted
    need(st.st_mode & 0o777 == 0o600, "the env file is mode %o" % (st.st_mode & 0o777))
    need("mode=redis peers=%d" % HPA_MAX in text, "the env file does not say mode=redis")
    need("export PYLON_CLUSTER_BUS='%s'" % w.redis.url() in text,
         "the env file does not hand Pylon the proven Redis URL")
    need("export PYLON_CLUSTER_NAMESPACE='chat'" in text, "no PYLON_CLUSTER_NAMESPACE")
    out.ok(1, "redis decided for deployment/chat replicas=3 + hpa/chat max=%d (%d peers), "
           "bus proven, env file written" % (HPA_MAX, HPA_MAX))


# ---- step 2 --------------------------------------------------------------------

def step2(w):
    out.caption(2, "Two real Pylons, one bus: a row made on A reaches a client of B", """
        Two pods of that Deployment each start the released Pylon 0.11.3, unmodified
        (in a Debian 13 root, in this demo's private network namespace), through
        `pylon-agent exec`: it discovers, decides, proves the bus, then execs Pylon
        with PYLON_CLUSTER_BUS/PYLON_CLUSTER_NAMESPACE/PYLON_CLUSTER_REQUIRED set.
        Both share one PostgreSQL, as production does.""")
    w.fake.add(pod(POD_B, NS, ("apps/v1", "ReplicaSet", RS)))
    pg = Postgres(w.work)
    cleanup.add(pg.stop, "postgres")
    ps = Pylons(w.subdir("pylons"))
    cleanup.add(ps.stop_all, "the Pylons")
    clients = []
    try:
        pg.start()
        pylons = {}
        for name, pod_name in (("A", POD_A), ("B", POD_B)):
            env = w.kube_env(pod_name, base=pylon_env(base=clean_env(),
                                                     DATABASE_URL=pg.url()))
            port = ps.ports.next()
            out.cmd("pylon-agent exec -- pylon start app.ts --port %d   # pod %s (%s)"
                    % (port, pod_name, name))
            t0 = time.monotonic()
            p = ps.start(make_app(w.work, name="chat"), env=env,
                         agent_args=[AGENT, "exec", "--"], port=port)
            dt = time.monotonic() - t0
            log = p.log()
            out.block("\n".join(l for l in log.splitlines()
                                if "[pylon-agent]" in l or "[cluster]" in l
                                or "Backend:" in l), where="Pylon %s's log" % name,
                      prefix="%s | " % name)
            penv = p.environ()
            shown = ["%s=%s" % (k, penv[k]) for k in sorted(penv)
                     if k.startswith("PYLON_CLUSTER_")]
            out.line("%s | /health 200 after %.1f s; Pylon's environment (/proc/%d/environ): %s"
                     % (name, dt, p.pid, " ".join(shown)))
            need(penv.get("PYLON_CLUSTER_BUS") == w.redis.url(),
                 "Pylon %s did not get the proven bus" % name)
            need(not [k for k in penv if k.startswith("PYLON_AGENT_")],
                 "Pylon %s got PYLON_AGENT_* variables" % name)
            need('redis bus connected — channel="chat:cluster:bus"' in log,
                 "Pylon %s did not connect to the bus" % name)
            pylons[name] = p
        a, b = pylons["A"], pylons["B"]
        ta, tb = guest_token(a.port), guest_token(b.port)
        wb = WSClient(b.port, tb)
        clients.append(wb)
        time.sleep(0.5)                      # the subscription settles
        seen = len(wb.frames)
        marker = "hello from A, %s" % time.strftime("%H:%M:%S")
        out.line()
        out.line("B's WebSocket client is connected to :%d/api/sync/ws." % b.port)
        out.cmd("curl -X POST :%d/api/entities/Note -d '{\"body\": \"%s\"}'   # on A"
                % (a.port, marker))
        t0 = time.monotonic()
        row = insert(a.port, ta, "Note", {"body": marker})
        out.line(json.dumps(row))
        got = None
        end = t0 + 10
        while time.monotonic() < end and got is None:
            with wb.lock:
                new = wb.frames[seen:]
            for f in new:
                ms = (time.monotonic() - t0) * 1000
                out.line("B's client, +%.0f ms: %s" % (ms, f if len(f) < 300 else f[:297] + "..."),
                         where="B's WebSocket frames")
                if marker in f:
                    got = ms
            seen += len(new)
            time.sleep(0.01)
        need(got is not None, "B's client never saw the row inserted on A (waited 10 s)")
        out.ok(2, "the row inserted on A was seen on B's WebSocket client after %.0f ms"
               % got)
    finally:
        for c in clients:
            c.close()
        ps.stop_all()
        pg.stop()


# ---- step 3 --------------------------------------------------------------------

def step3(w):
    out.caption(3, "Scale down to 1: noop, and the drift a running pod reports", """
        kubectl delete hpa chat; kubectl scale deployment chat --replicas=1.
        A new pod would now get NoopBus.  The pod from step 1 still runs Pylon with
        the redis env file init wrote: its `serve` sidecar re-reads the topology
        every --resync (1s here; 60s by default) and reports the mismatch.""")
    need(os.path.exists(w.env_file), "no env file from step 1")
    w.scale(1, with_hpa=False)
    env = w.kube_env()
    rc, so, se, _ = show_agent(["decide"], env)
    need(rc == 0, "decide exited %d" % rc)
    need("mode:      noop" in so and "peers:     1" in so, "decide did not say noop")
    out.ok(3, "after scale-down decide says noop (deployment/chat replicas=1)")

    out.line()
    port = free_port()
    log_path = os.path.join(w.work, "serve.log")
    args = ["serve", "--env-file", w.env_file, "--resync", "1s",
            "--listen", "127.0.0.1:%d" % port]
    out.cmd("pylon-agent " + " ".join(args) + "   # the sidecar of pod " + POD_A)
    with open(log_path, "wb") as logf:
        p = subprocess.Popen([AGENT] + args, env=env, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    cleanup.add(lambda: stop_proc(p), "pylon-agent serve")

    def status():
        code, body = http_get(port, "/status")
        if code != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None
    try:
        st = wait_until(lambda: (status() or {}).get("drift") and status(), 10)
        rc = p.poll()
        with open(log_path, errors="replace") as f:
            log = f.read()
        out.block(log, where="serve's log")
        need(rc is None, "serve exited %s" % rc)
        need(st, "no drift in /status within 10 s")
        out.cmd("curl -s 127.0.0.1:%d/status" % port)
        keep = {k: st.get(k) for k in ("mode", "peers", "drift", "reason", "adopted_from_init")}
        out.line(json.dumps(keep), where="/status")
        _, metrics = http_get(port, "/metrics")
        out.cmd("curl -s 127.0.0.1:%d/metrics | grep -E '^pylon_agent_(drift|peers) '" % port)
        out.block("\n".join(l for l in metrics.splitlines()
                            if l.startswith(("pylon_agent_drift ", "pylon_agent_peers "))),
                  where="/metrics")
        drift_line = "drift: this pod runs redis but the topology now wants noop"
        need(drift_line in log, "serve did not log the drift")
        need(st["mode"] == "redis" and st["drift"] is True and st["peers"] == 1,
             "/status does not say mode redis, drift true, peers 1")
        out.ok(3, "serve reports drift: this pod runs redis but the topology now wants noop "
               "(/status drift=true)")
    finally:
        stop_proc(p)


# ---- step 4 --------------------------------------------------------------------

def step4(w):
    out.caption(4, "A Redis that accepts and never answers", """
        Back to 3 replicas; the Redis URL now points at a server that accepts
        connections and never sends a byte (a hung Redis, a TLS-only port, a proxy
        with nothing behind it).  First Pylon alone, then the agent.""")
    w.scale(3, with_hpa=False)
    silent = SilentServer()
    cleanup.add(silent.close, "the silent server")
    url = "redis://127.0.0.1:%d" % silent.port
    silent_file = os.path.join(w.work, "silent-url")
    write_secret_file(silent_file, url)
    ps = Pylons(w.subdir("alone"))          # its own log (pylon-<port>.log)
    cleanup.add(ps.stop_all, "Pylon alone")
    try:
        env = pylon_env(base=clean_env(), PYLON_CLUSTER_BUS=url,
                        PYLON_CLUSTER_NAMESPACE="chat")
        port = ps.ports.next()
        out.cmd("PYLON_CLUSTER_BUS=%s pylon start app.ts --port %d   # no agent" % (url, port))
        t0 = time.monotonic()
        alone = ps.start(make_app(w.work, name="chat"), env=env, port=port, wait=False)
        end = t0 + HANG_S
        while time.monotonic() < end:
            need(alone.proc.poll() is None,
                 "Pylon alone exited %s (expected it to hang)" % alone.proc.returncode)
            need(alone.health(timeout=0.3) is None, "Pylon alone answered /health")
            time.sleep(0.2)
        hung = time.monotonic() - t0
        log = alone.log()
        last = [l for l in log.splitlines() if l.strip()][-1:]
        out.block("\n".join(last) + "\n(and then nothing: no [cluster] line, no listening)",
                  prefix="alone | ")
        need("[cluster]" not in log and "listening" not in log,
             "Pylon alone got further than the bus: %s" % log[-500:])
        out.line("alone | still hanging after %.0f s: not exited, no answer on /health; "
                 "its readiness probe would fail forever.  Stopped (pid %d)." % (hung, alone.pid))
        alone.stop()
    finally:
        ps.stop_all()

    out.line()
    env = w.kube_env(url_file=silent_file)
    ef = os.path.join(w.work, "silent.env")
    rc, so, se, dt = show_agent(["init", "--timeout", AGENT_TIMEOUT, "--env-file", ef], env)
    need(rc == 69, "init exited %d, not 69" % rc)
    need(dt < 10, "init took %.1f s" % dt)
    need("read timeout: no reply to SUBSCRIBE" in se, "init's error does not name the timeout")
    need(not os.path.exists(ef), "init wrote an env file for a bus it did not prove")
    m = re.search(r"redis [^ ]+: (read timeout: [^(]*[^ (])", se)
    need(m, "init's error names no cause")
    out.ok(4, "pylon-agent init failed in %.1f s (exit 69, no env file, so no Pylon "
           "started on a dead bus): %s" % (dt, m.group(1)))

    out.line()
    rc, so, se, dt = show_agent(["check", "--timeout", AGENT_TIMEOUT], env)
    verdict = [l for l in so.splitlines() if l.strip().startswith("verdict")]
    need(rc != 0, "check exited 0")
    need(verdict and "NOT safe" in verdict[0], "check printed no NOT safe verdict")
    out.ok(4, "check's verdict: NOT safe (exit %d): the deploy would be stopped" % rc)


# ---- step 5 --------------------------------------------------------------------

def step5(w):
    out.caption(5, "Where to go next", "")
    items = [
        ("docs/operator-guide.md", "Kubernetes (native sidecar, init container, classic "
         "sidecar), Fly.io, blue/green: from zero to a verified 3-replica deploy"),
        ("charts/pylon/", "the Helm chart: helm install chat charts/pylon "
         "--set replicaCount=3 --set redis.existingSecret=pylon-redis ..."),
        ("docs/serve.md", "the sidecar: /readyz, /status, metrics, drift"),
        ("docs/troubleshooting.md", "every error line, what it means, what to do"),
        ("docs/reference.md", "every option, command and exit code"),
    ]
    for path, what in items:
        need(os.path.exists(os.path.join(REPO, path)), "%s is missing" % path)
        out.line("   %-24s %s" % (path, what))
    out.ok(5, "next: docs/operator-guide.md and the chart in charts/pylon")


# ---- main ----------------------------------------------------------------------

def main():
    t_start = float(os.environ.get("PYLON_AGENT_DEMO_T0") or time.time())
    t0 = time.monotonic()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if os.geteuid() != 0:
        print("demo: needs root (a private network namespace for Pylon, a chroot); "
              "run `sudo make demo`", file=sys.stderr)
        return 1
    if not os.access(AGENT, os.X_OK):
        print("demo: %s is not built: run `make`" % AGENT, file=sys.stderr)
        return 1
    become_subreaper()
    cache_root()                              # scripts/pylon-cache.sh (cached: instant)
    print("pylon-agent demo: %s, with the released Pylon 0.11.3, redis-server, PostgreSQL "
          "and the fake Kubernetes API server of the tests, all in a private network "
          "namespace." % AGENT, flush=True)
    results = {}
    work = tempfile.mkdtemp(prefix="pylon-agent-demo-")
    os.chmod(work, 0o711)                     # the postgres user reaches its data dir
    rc = 1
    try:
        with private_netns():
            w = World(work)
            w.fake = KubeFake(os.path.join(work, "kube"), namespace=NS)
            w.fake.start()
            cleanup.add(w.fake.stop, "the fake API server")
            w.fake.add(*deployment_objects(DEP, replicas=3, podname=POD_A, ns=NS))
            w.fake.add(hpa(DEP, "Deployment", DEP, HPA_MAX, ns=NS, min_replicas=3))
            w.sa = w.fake.serviceaccount_dir(os.path.join(work, "serviceaccount"), namespace=NS)
            out.password = secrets.token_hex(12)
            rdir = os.path.join(work, "redis")
            os.mkdir(rdir)
            w.redis = RedisServer(rdir, requirepass=out.password)
            cleanup.add(w.redis.stop, "redis-server")
            w.redis.start()
            write_secret_file(w.url_file, w.redis.url())
            for n, fn in ((1, step1), (2, step2), (3, step3), (4, step4), (5, step5)):
                try:
                    fn(w)
                    results[n] = True
                except StepFailed as e:
                    out.failed(n, str(e))
                    results[n] = False
                except Exception as e:         # a broken step: say it, go on
                    out.failed(n, "%s: %s" % (type(e).__name__, out.redact(str(e))))
                    results[n] = False
            cleanup.run()
        if out.leaks:
            out.failed(None, "the Redis password appeared in: %s"
                       % ", ".join(sorted(set(out.leaks))))
        held = sum(1 for v in results.values() if v)
        rc = 0 if held == 5 and not out.leaks else 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\ndemo: interrupted; stopping what it started", file=sys.stderr, flush=True)
        rc = 130
    except Exception as e:                     # setting up failed: say what, stop all
        print("\ndemo: %s: %s" % (type(e).__name__, out.redact(str(e))), file=sys.stderr,
              flush=True)
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup.run()
        left = sweep()
        if left:
            print("demo: stopped leftover processes: %s" % ", ".join(left), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    if rc != 130:
        held = sum(1 for v in results.values() if v)
        print("\ndemo %s in %.1f s (this script %.1f s): %d of 5 steps held; everything it "
              "started is stopped." % ("done" if rc == 0 else "FAILED", time.time() - t_start,
                                       time.monotonic() - t0, held), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
