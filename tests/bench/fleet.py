#!/usr/bin/env python3
"""make bench-fleet: a simulated fleet of pylon-agent pods on this machine
(SPEC 10, issue 13 part 6).

For each size N (default 100, 500, 1000): one real redis-server (password),
the fake Kubernetes API (tests/fakes/kube_fake.py, TLS, bearer token, with
TCP_NODELAY as in tests/bench/kube_fake_nodelay.py) serving one Deployment
(replicas N) -> ReplicaSet -> N pods and an HPA, and N simulated pods in the
chart's default shape (agent.shape nativeSidecar): the `init` container,
then the `serve` sidecar, both real processes of build/pylon-agent with the
environment the chart renders (tests/chart/render), in-cluster
configuration (service-account dir, KUBERNETES_SERVICE_HOST/PORT).

Phases:
  rollout   all N pods start (at most --concurrency inits at a time, as
            a kubelet per node would; serve starts when its init exited 0)
  steady    --steady seconds with every pod's serve running; time is scaled
            down (--interval, --resync shorter than the chart's 30s/60s) and
            the per-minute figures are extrapolated to the chart's defaults
  scale-up  the Deployment grows by --scale-up (fraction of N); the new pods
            start; the old ones see the new count at their next resync

Counted: API requests from the fake's request log (a request with
resourceVersion=0 is a resync's, any other one a start's), Redis commands
from INFO commandstats (CONFIG RESETSTAT between phases; no MONITOR),
connections and client memory from INFO clients / INFO memory, agent memory
from /proc/PID/status (VmRSS) and /proc/PID/smaps_rollup (Pss).

Writes the table between <!-- bench-fleet --> markers in docs/benchmarks.md
(BENCH_OUT).  Not a test: it fails only when something cannot run at all.
Every process it starts is stopped by its pid.
"""
import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakes"))
sys.path.insert(0, os.path.join(ROOT, "tests", "chart"))
import chartlib  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import write_section  # noqa: E402
import kube_fake  # noqa: E402
from kube_fake import KubeFake, deployment, hpa, pod, replicaset  # noqa: E402

NS = "prod"
DEP = "chat"
RS = "chat-7d4b9c8f6d"
PASS = "fleet-pass-0123"
BUDGET = {"start_api": 4, "resync_api": 2, "publish": 1, "conns": 1, "cmds_min": 3}


def log(*a):
    print("fleet:", *a, file=sys.stderr, flush=True)


def nodelay():
    """TCP_NODELAY on the fake's connections (see kube_fake_nodelay.py)."""
    setup = kube_fake._Handler.setup

    def _setup(self):
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        setup(self)
    kube_fake._Handler.setup = _setup


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def port_free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ports(n):
    """n free ports below the ephemeral range: the agents' own outgoing
    connections take ephemeral ports and would collide with listeners."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    start = 20000 if low > 20000 + n + 100 else low + 20000
    out, p = [], start
    while len(out) < n and p < 65000:
        if port_free(p):
            out.append(p)
        p += 1
    if len(out) < n:
        raise SystemExit("fleet: not %d free loopback ports above %d" % (n, start))
    return out


# ---- the chart's shape -----------------------------------------------------

def chart_env():
    """(init env, serve env) as the chart renders them for nativeSidecar."""
    rnd = chartlib.build_renderer()
    rc, doc, err = chartlib.render(rnd, namespace=NS, values={
        "agent": {"shape": "nativeSidecar"}, "redis": {"existingSecret": "pylon-redis"}})
    if rc != 0:
        raise SystemExit("fleet: rendering the chart failed: " + err)
    dep = chartlib.one(doc, "Deployment")
    inits = {c["name"]: c for c in dep["spec"]["template"]["spec"]["initContainers"]}
    out = []
    for name, cmd in (("pylon-agent-init", "init"), ("pylon-agent", "serve")):
        c = inits[name]
        assert c["command"][-1] == cmd, c["command"]
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
        out.append((cmd, env, c.get("restartPolicy")))
    assert out[1][2] == "Always", "serve is not a native sidecar in the rendered chart"
    return out[0][1], out[1][1]


# ---- redis -------------------------------------------------------------------

class Redis:
    def __init__(self, wd):
        self.port = free_port()
        self.dir = os.path.join(wd, "redis")
        os.makedirs(self.dir)
        conf = os.path.join(self.dir, "redis.conf")
        with open(conf, "w") as f:
            f.write("bind 127.0.0.1\nport %d\nsave \"\"\nappendonly no\ndir %s\n"
                    "logfile %s/redis.log\nrequirepass %s\nmaxclients 10000\n"
                    % (self.port, self.dir, self.dir, PASS))
        self.proc = subprocess.Popen([shutil.which("redis-server"), conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if self.cli("PING").strip() == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        raise SystemExit("fleet: redis-server did not start")

    @property
    def url(self):
        return "redis://default:%s@127.0.0.1:%d/0" % (PASS, self.port)

    def cli(self, *args):
        return subprocess.run(["redis-cli", "--no-auth-warning", "-a", PASS, "-p",
                               str(self.port)] + list(args), capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def info(self, section):
        out = {}
        for line in self.cli("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out

    def commandstats(self):
        """{command: calls}, e.g. {"ping": 10, "pubsub|numsub": 1}."""
        out = {}
        for k, v in self.info("commandstats").items():
            m = re.match(r"calls=(\d+)", v)
            if k.startswith("cmdstat_") and m:
                out[k[len("cmdstat_"):]] = int(m.group(1))
        return out

    def agent_clients(self):
        """(count, tot-mem bytes) of the clients that are not subscribers
        (the Pylon stand-ins) nor this redis-cli: the agents'."""
        n = mem = 0
        for line in self.cli("CLIENT", "LIST").splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if f.get("sub") != "0" or f.get("psub") != "0" or f.get("cmd") == "client|list":
                continue
            n += 1
            mem += int(f.get("tot-mem", 0))
        return n, mem

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pylons(threading.Thread):
    """Stand-ins for the pods' Pylon processes: one connection per pod,
    SUBSCRIBEd to Pylon's channel from the moment the pod's init exited (as
    Pylon starts after it), counting the messages delivered to them.  One
    thread, non-blocking sockets: no process per Pylon."""
    MSG = b"$7\r\nmessage\r\n"

    def __init__(self, redis, channel):
        super().__init__(daemon=True)
        self.redis, self.channel = redis, channel.encode()
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.delivered = 0
        self.tails = {}
        self.stop_flag = False
        self.socks = []

    def add(self):
        s = socket.create_connection(("127.0.0.1", self.redis.port), 5)
        cmd = b""
        for args in ((b"AUTH", b"default", PASS.encode()), (b"SUBSCRIBE", self.channel)):
            cmd += b"*%d\r\n" % len(args) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        s.sendall(cmd)
        s.setblocking(False)
        with self.lock:
            self.socks.append(s)
            self.tails[s.fileno()] = b""
            self.sel.register(s, selectors.EVENT_READ)

    def count(self):
        with self.lock:
            return self.delivered

    def run(self):
        while not self.stop_flag:
            with self.lock:
                empty = not self.socks
            if empty:
                time.sleep(0.05)
                continue
            for key, _ in self.sel.select(0.2):
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                with self.lock:
                    fd = key.fileobj.fileno()
                    if not data:
                        self.sel.unregister(key.fileobj)
                        continue
                    buf = self.tails[fd] + data
                    self.delivered += buf.count(self.MSG) - self.tails[fd].count(self.MSG)
                    self.tails[fd] = buf[-(len(self.MSG) - 1):]

    def close(self):
        self.stop_flag = True
        self.join(5)
        for s in self.socks:
            s.close()


# ---- pods --------------------------------------------------------------------

class Pod:
    def __init__(self, fleet, i):
        self.name = "%s-%05d" % (RS, i)
        self.dir = os.path.join(fleet.wd, "pods", self.name)
        os.makedirs(self.dir)
        self.port = fleet.next_port()
        self.fleet = fleet
        self.init = self.serve = None
        self.init_rc = None
        self.t_start = self.t_init_done = None

    def env(self, base, serve):
        f = self.fleet
        e = {"PATH": "/usr/bin:/bin", "HOME": self.dir, "LANG": "C.UTF-8"}
        e.update(base)
        e.update({"POD_NAME": self.name, "POD_NAMESPACE": NS, "HOSTNAME": self.name,
                  "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                  "KUBERNETES_SERVICE_PORT": str(f.fake.port),
                  "PYLON_AGENT_SERVICEACCOUNT_DIR": f.sa_dir,
                  "PYLON_AGENT_REDIS_URL_FILE": f.url_file,
                  "PYLON_AGENT_ENV_FILE": os.path.join(self.dir, "cluster.env")})
        if serve:
            e.update({"PYLON_AGENT_LISTEN": "127.0.0.1:%d" % self.port,
                      "PYLON_AGENT_INTERVAL": f.args.interval,
                      "PYLON_AGENT_RESYNC": f.args.resync})
        return e

    def start_init(self):
        self.t_start = time.monotonic()
        with open(os.path.join(self.dir, "init.log"), "wb") as out:
            self.init = subprocess.Popen([self.fleet.agent, "init"], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, cwd=self.dir,
                                         env=self.env(self.fleet.init_env, False))

    def start_serve(self):
        while not port_free(self.port):
            self.port = self.fleet.next_port()
        with open(os.path.join(self.dir, "serve.log"), "wb") as out:
            self.serve = subprocess.Popen([self.fleet.agent, "serve"],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          cwd=self.dir, env=self.env(self.fleet.serve_env, True))

    def http(self, path, timeout=2.0):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                        timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def mem(self):
        """(RSS kB, PSS kB) of the serve process."""
        pid = self.serve.pid
        rss = pss = 0
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss = int(line.split()[1])
        except OSError:
            pass
        return rss, pss


class Fleet:
    def __init__(self, args, agent, init_env, serve_env, n):
        self.args, self.agent, self.n = args, agent, n
        self.init_env, self.serve_env = init_env, serve_env
        self.wd = tempfile.mkdtemp(prefix="pylon-fleet-%d-" % n)
        self.pods = []
        self._ports = iter(ports(int(n * (1 + args.scale_up)) + 200))
        self.fake = KubeFake(os.path.join(self.wd, "fake"), namespace=NS)
        self.redis = None

    def next_port(self):
        return next(self._ports)

    def __enter__(self):
        self.redis = Redis(self.wd)
        self.url_file = os.path.join(self.wd, "redis-url")
        with open(self.url_file, "w") as f:
            f.write(self.redis.url + "\n")
        os.chmod(self.url_file, 0o600)
        self.fake.add(deployment(DEP, self.n), replicaset(RS, ("apps/v1", "Deployment", DEP),
                                                         self.n),
                      hpa(DEP, "Deployment", DEP, self.n))   # max N: a scale-up shows
        self.fake.start()
        self.sa_dir = self.fake.serviceaccount_dir(os.path.join(self.wd, "sa"), NS)
        self.pylons = Pylons(self.redis, self.init_env["PYLON_AGENT_NAMESPACE"] +
                             ":cluster:bus")
        self.pylons.start()
        return self

    def __exit__(self, *exc):
        for p in self.pods:
            for proc in (p.init, p.serve):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 20
        for p in self.pods:
            for proc in (p.init, p.serve):
                if proc is None:
                    continue
                try:
                    proc.wait(max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.fake.stop()
        self.pylons.close()
        if self.redis:
            self.redis.stop()
        if not self.args.keep:
            shutil.rmtree(self.wd, ignore_errors=True)

    # ---- phases --------------------------------------------------------
    def add_pods(self, count):
        new = []
        for _ in range(count):
            p = Pod(self, len(self.pods))
            self.pods.append(p)
            new.append(p)
        self.fake.add(*[pod(p.name, NS, ("apps/v1", "ReplicaSet", RS)) for p in new])
        return new

    def start_pods(self, new, deadline_s):
        """Starts new pods (init, then serve) and waits until every serve
        answers /readyz 200.  Returns the wall time."""
        t0 = time.monotonic()
        end = t0 + deadline_s
        waiting, running, starting = list(new), [], []
        while (waiting or running or starting) and time.monotonic() < end:
            while waiting and len(running) < self.args.concurrency:
                p = waiting.pop(0)
                p.start_init()
                running.append(p)
            for p in list(running):
                rc = p.init.poll()
                if rc is None:
                    continue
                running.remove(p)
                p.init_rc = rc
                p.t_init_done = time.monotonic()
                if rc != 0:
                    log("init of %s exited %d; see %s/init.log" % (p.name, rc, p.dir))
                    continue
                p.start_serve()
                self.pylons.add()      # the pod's Pylon starts after its init
                starting.append(p)
            for p in list(starting[:50]):
                if p.http("/readyz", 1.0)[0] == 200:
                    starting.remove(p)
                elif p.serve.poll() is not None:
                    log("serve of %s exited %d" % (p.name, p.serve.returncode))
                    starting.remove(p)
            time.sleep(0.02)
        if waiting or running or starting:
            log("deadline: %d not started, %d in init, %d not ready" % (
                len(waiting), len(running), len(starting)))
        return time.monotonic() - t0


def rv0(r):
    return urllib.parse.parse_qs(r["query"]).get("resourceVersion") == ["0"]


def api_split(reqs):
    start = [r for r in reqs if not rv0(r)]
    res = [r for r in reqs if rv0(r)]
    resyncs = [r for r in res if r["path"].endswith("/deployments/" + DEP)]
    return start, res, resyncs


def run_size(args, agent, init_env, serve_env, n):
    res = {"n": n}
    with Fleet(args, agent, init_env, serve_env, n) as f:
        # ---- rollout
        f.redis.cli("CONFIG", "RESETSTAT")
        f.fake.clear_log()
        d0 = f.pylons.count()
        new = f.add_pods(n)
        log("N=%d: rollout" % n)
        res["rollout_s"] = f.start_pods(new, args.deadline)
        ok = [p for p in new if p.init_rc == 0 and p.serve and p.serve.poll() is None]
        res["started"] = len(ok)
        cs = f.redis.commandstats()
        start, _res, _rs = api_split(list(f.fake.log))
        res["start_api"] = len(start) / n
        res["start_api_total"] = len(start)
        res["publish"] = cs.get("publish", 0) / n
        res["publish_total"] = cs.get("publish", 0)
        res["subscribe_total"] = cs.get("subscribe", 0)
        time.sleep(1)
        res["deliveries_total"] = f.pylons.count() - d0
        # init's PUBLISH reaches the subscribers of the channel at that moment:
        # here only the prover itself (no Pylon runs in the simulation).
        # ---- steady
        log("N=%d: steady %ds (interval %s, resync %s)" % (n, args.steady, args.interval,
                                                          args.resync))
        time.sleep(2)
        f.redis.cli("CONFIG", "RESETSTAT")
        mark = len(f.fake.log)
        t0 = time.monotonic()
        time.sleep(args.steady)
        w = time.monotonic() - t0
        cs = f.redis.commandstats()
        reqs = list(f.fake.log)[mark:]
        start, cached, resyncs = api_split(reqs)
        clients = f.redis.info("clients")
        mem = f.redis.info("memory")
        live = [p for p in f.pods if p.serve and p.serve.poll() is None]
        res["live"] = len(live)
        res["steady_s"] = w
        res["steady_start_api"] = len(start)
        res["resyncs"] = len(resyncs)
        res["resync_api"] = len(cached) / max(1, len(resyncs))
        res["api_per_min_scaled"] = len(reqs) / len(live) / (w / 60)
        res["api_per_min_default"] = res["resync_api"] * 60 / 60.0     # --resync 60s
        # minus the bench's own: RESETSTAT, and redis-cli's AUTH + INFO now
        cmds = sum(cs.values()) - cs.get("info", 0) - cs.get("config|resetstat", 0) \
            - min(1, cs.get("auth", 0))
        res["cmds_steady"] = dict(cs)
        res["cmds_per_min_scaled"] = cmds / len(live) / (w / 60)
        checks = len(live) * w / parse_dur(args.interval)
        per_check = (cs.get("ping", 0) + cs.get("pubsub|numsub", 0)) / checks
        res["cmds_per_check"] = per_check
        res["numsub_per_min"] = cs.get("pubsub|numsub", 0) / len(live) / (w / 60)
        # chart defaults: a check each 30 s, NUMSUB instead of one PING a minute
        res["cmds_per_min_default"] = per_check * 60 / 30.0
        res["load"] = os.getloadavg()[0]
        res["conns_all"] = int(clients.get("connected_clients", 0)) - 1   # minus redis-cli
        res["conns"], res["mem_clients"] = f.redis.agent_clients()
        res["conns_per_pod"] = res["conns"] / len(live)
        res["mem_clients_all"] = int(mem.get("mem_clients_normal", 0))
        res["mem_client_per_pod"] = res["mem_clients"] / max(1, res["conns"])
        rss = [p.mem() for p in live]
        res["rss_kb"] = sum(r for r, _ in rss) / len(rss)
        res["rss_max_kb"] = max(r for r, _ in rss)
        res["pss_kb"] = sum(s for _, s in rss) / len(rss)
        # cross-check with the agents' own counters (a sample)
        sample = live[:: max(1, len(live) // 10)][:10]
        own = []
        for p in sample:
            code, body = p.http("/metrics")
            m = re.search(r"^pylon_agent_redis_commands_total (\d+)", body, re.M)
            if code == 200 and m:
                own.append(int(m.group(1)))
        res["own_cmds_sample"] = own
        # ---- scale-up
        m = max(1, int(n * args.scale_up))
        log("N=%d: scale-up by %d" % (n, m))
        f.redis.cli("CONFIG", "RESETSTAT")
        mark = len(f.fake.log)
        d0 = f.pylons.count()
        f.fake.add(deployment(DEP, n + m), replicaset(RS, ("apps/v1", "Deployment", DEP),
                                                      n + m))
        new = f.add_pods(m)
        res["scale_up"] = m
        res["scale_up_s"] = f.start_pods(new, args.deadline)
        cs = f.redis.commandstats()
        start, _c, _r = api_split(list(f.fake.log)[mark:])
        res["scale_start_api"] = len(start) / m
        res["scale_publish"] = cs.get("publish", 0) / m
        time.sleep(1)
        res["scale_deliveries"] = f.pylons.count() - d0
        # the old pods see n+m at their next resync (a sample)
        old = [p for p in live[:: max(1, len(live) // 10)][:10]]
        t1 = time.monotonic()
        end = t1 + parse_dur(args.resync) * 1.2 + 10
        seen = set()
        while len(seen) < len(old) and time.monotonic() < end:
            for p in old:
                if p.name in seen:
                    continue
                code, body = p.http("/status")
                if code == 200 and json.loads(body).get("peers", 0) >= n + m:
                    seen.add(p.name)
            time.sleep(0.5)
        res["scale_seen"] = "%d/%d" % (len(seen), len(old))
        res["scale_seen_s"] = time.monotonic() - t1
    return res


def parse_dur(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", s)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v * 60 if m.group(2) == "m" else v


def table(args, results, meta):
    L = ["<!-- bench-fleet -->", "## A simulated fleet (`make bench-fleet`)", "",
         "`make bench-fleet` (tests/bench/fleet.py), %s, %s.  One real redis-server "
         "(password) and the fake Kubernetes API (Python, TLS, bearer token; "
         "Deployment -> ReplicaSet -> pods, one HPA), all on loopback.  Each "
         "simulated pod is the chart's default shape (`agent.shape: nativeSidecar`, "
         "environment taken from the rendered chart): `init` (discovers, proves, "
         "writes the env file and its state file), then `serve` as the sidecar "
         "(adopts init's decision and proof), both real processes of "
         "`build/pylon-agent`, in-cluster configuration.  At most %d inits at a "
         "time.  Pylon itself does not run: a stand-in connection per pod subscribes to "
         "Pylon's channel once the pod's init exited (Pylon's start), so NUMSUB and "
         "the deliveries of the proofs' PUBLISHes are as with Pylon." % (
             meta["when"], meta["machine"], args.concurrency), "",
         "**Time is scaled down** in the steady phase: `--interval %s --resync %s` "
         "for %d s instead of the chart's 30 s / 60 s.  \"at defaults\" columns are "
         "extrapolated: API requests per resync × 1 resync a minute; Redis commands "
         "per check × 2 checks a minute (NUMSUB stands in for one PING a minute "
         "whatever the interval).  The measured rates at the scaled settings are "
         "beside them." % (args.interval, args.resync, args.steady), ""]
    L += ["| per pod | budget (SPEC §10) | " + " | ".join("N=%d" % r["n"] for r in results)
          + " |", "|---|---|" + "---|" * len(results)]

    def row(name, budget, fmt, key):
        L.append("| %s | %s | %s |" % (name, budget, " | ".join(
            fmt(r) if callable(fmt) else fmt % r[key] for r in results)))
    row("pods started and ready", "—", lambda r: "%d/%d in %.0f s" % (
        r["live"], r["n"], r["rollout_s"]), None)
    row("API requests per start (init + serve)", "≤ 4", "%.2f", "start_api")
    row("PUBLISH on Pylon's channel per start", "≤ 1", "%.2f", "publish")
    row("deliveries to Pylons per start (mean)", "—", lambda r: "%.0f" % (
        r["deliveries_total"] / r["n"]), None)
    row("API requests per resync", "≤ 2", "%.2f", "resync_api")
    row("API requests outside resyncs in steady state", "0", "%d", "steady_start_api")
    row("API requests a minute, at defaults", "≤ 2", "%.2f", "api_per_min_default")
    row("API requests a minute, measured (scaled)", "—", "%.1f", "api_per_min_scaled")
    row("Redis connections held", "≤ 1", "%.2f", "conns_per_pod")
    row("Redis commands a minute, at defaults", "≤ 3", "%.2f", "cmds_per_min_default")
    row("Redis commands a minute, measured (scaled)", "—", "%.1f", "cmds_per_min_scaled")
    row("PUBSUB NUMSUB a minute", "≤ 1", "%.2f", "numsub_per_min")
    row("Redis memory per agent client (CLIENT LIST tot-mem)", "—",
        lambda r: "%.1f KiB" % (r["mem_client_per_pod"] / 1024), None)
    row("agent RSS (serve), mean / max", "—", lambda r: "%.1f / %.1f MiB" % (
        r["rss_kb"] / 1024, r["rss_max_kb"] / 1024), None)
    row("agent PSS (serve), mean", "—", lambda r: "%.2f MiB" % (r["pss_kb"] / 1024), None)
    row("scale-up: new pods, API requests per start", "≤ 4", lambda r: "+%d, %.2f" % (
        r["scale_up"], r["scale_start_api"]), None)
    row("scale-up: PUBLISH per new pod", "≤ 1", "%.2f", "scale_publish")
    row("scale-up: old pods seeing the new count (s after the new pods were ready)",
        "next resync", lambda r: "%s in %.0f s" % (
        r["scale_seen"], r["scale_seen_s"]), None)
    L += ["", "| for the fleet | " + " | ".join("N=%d" % r["n"] for r in results) + " |",
          "|---|" + "---|" * len(results)]

    def frow(name, fmt):
        L.append("| %s | %s |" % (name, " | ".join(fmt(r) for r in results)))
    frow("API requests for the rollout", lambda r: "%d" % r["start_api_total"])
    frow("PUBLISHes for the rollout", lambda r: "%d" % r["publish_total"])
    frow("deliveries of those to Pylons (stand-ins)", lambda r: "%d" % r["deliveries_total"])
    frow("scale-up: PUBLISHes, deliveries", lambda r: "%d, %d" % (
        r["scale_publish"] * r["scale_up"], r["scale_deliveries"]))
    frow("API requests per second at defaults (2 per pod a minute)",
         lambda r: "%.1f" % (r["api_per_min_default"] * r["live"] / 60))
    frow("Redis commands per second at defaults",
         lambda r: "%.1f" % (r["cmds_per_min_default"] * r["live"] / 60))
    frow("Redis connections: agents (all, with the Pylons)", lambda r: "%d (%d)" % (
        r["conns"], r["conns_all"]))
    frow("Redis memory for the agents' clients (all clients)", lambda r: "%.1f MiB (%.1f MiB)" % (
        r["mem_clients"] / 1048576, r["mem_clients_all"] / 1048576))
    frow("load average (1 min) at the end of the steady phase", lambda r: "%.1f" % r["load"])
    frow("agents' RSS, summed (PSS)", lambda r: "%.0f MiB (%.0f MiB)" % (
        r["rss_kb"] * r["live"] / 1024, r["pss_kb"] * r["live"] / 1024))
    L += ["", "Deliveries grow as N²/2 over a rollout: each pod's one proof reaches "
          "every Pylon already running (the proof travels on Pylon's own channel, "
          "which is what proves that channel); each is one small envelope that "
          "Pylon ignores."]
    L += ["", "Before issue 13 the same shape cost, per pod: 8 API requests and 2 "
          "PUBLISHes per start (init, then serve discovering and proving again), 4 "
          "quorum reads per resync (pod, ReplicaSet, Deployment, HPA list), and in "
          "Redis 2 connections (one subscribed to Pylon's channel, so every envelope "
          "Pylon publishes was buffered for every agent) and a PING every 5 s plus "
          "NUMSUB (figures of issue 13).  At N=1000 and the "
          "defaults the fleet now makes about 33 API requests a second, all from the "
          "watch cache (it was 67 quorum reads)."]
    L += ["", "Steady-phase commands by name (all pods, %d s): " % args.steady + "; ".join(
        "N=%d: %s" % (r["n"], ", ".join("%s %d" % kv for kv in sorted(r["cmds_steady"].items())))
        for r in results) + ".  The agents' own `pylon_agent_redis_commands_total` "
        "(a sample of 10 pods, since their start): " + "; ".join(
            "N=%d: %s" % (r["n"], r["own_cmds_sample"]) for r in results) + ".", "",
          "Reproduce: `make bench-fleet` (sizes: `FLEET_SIZES=100,500,1000`; "
          "`tests/bench/fleet.py --help`).  Command of this run: `%s`." % meta["cmd"], "",
          "<!-- /bench-fleet -->"]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=os.environ.get("FLEET_SIZES", "100,500,1000"))
    ap.add_argument("--interval", default="2s", help="serve --interval (chart: 30s)")
    ap.add_argument("--resync", default="20s", help="serve --resync (chart: 60s)")
    ap.add_argument("--steady", type=int, default=60, help="steady phase, seconds")
    ap.add_argument("--scale-up", type=float, default=0.2, help="fraction of N added")
    ap.add_argument("--concurrency", type=int, default=16, help="inits at a time")
    ap.add_argument("--deadline", type=float, default=600, help="seconds per start phase")
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT",
                                                    os.path.join(ROOT, "docs", "benchmarks.md")))
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    args = ap.parse_args()
    agent = os.path.join(ROOT, os.environ.get("BUILD", "build"), "pylon-agent")
    if not os.access(agent, os.X_OK):
        raise SystemExit("fleet: %s not built" % agent)
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            raise SystemExit("fleet: %s missing (make deps)" % tool)
    # SIGTERM (timeout, make interrupted) unwinds like ^C: every pod stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    nodelay()
    init_env, serve_env = chart_env()
    results = []
    for n in [int(x) for x in args.sizes.split(",") if x]:
        r = run_size(args, agent, init_env, serve_env, n)
        log(json.dumps(r))
        results.append(r)
    ver = subprocess.run([agent, "version"], capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    meta = {"when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
            "machine": "%d CPUs shared with other work, tree %s, binary %s" % (
                os.cpu_count(), rev or "?", ver.splitlines()[0] if ver else "?"),
            "cmd": " ".join(["tests/bench/fleet.py"] + sys.argv[1:])}
    sect = table(args, results, meta)
    write_section(args.out, "bench-fleet", sect)
    print(sect)


if __name__ == "__main__":
    main()
