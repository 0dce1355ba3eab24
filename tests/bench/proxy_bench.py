#!/usr/bin/python3
"""tests/bench/proxy_bench.py - `make bench-proxy`: pub/sub through
serve --bus-proxy, through Debian's stunnel4 in the same role (client
mode, CA + host name verified), and with a direct TLS client, against one
TLS-only redis-server, in one run.  Writes its section of
docs/benchmarks.md between the bench-proxy markers.

Measures, per path: publish->receive latency of N sequential 256-byte
messages (p50/p99), throughput of M pipelined 1 KiB messages published on
one connection and received on another (msg/s, MB/s), and the relay's
peak RSS (VmHWM of the whole agent process, HTTP server included, vs the
stunnel process).  The clients are Python for every path alike, so the
numbers compare the relays, not the clients.
"""
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from redisfix import RedisServer, RespReader, make_tls_material, resp_encode  # noqa: E402

AGENT = os.path.join(ROOT, os.environ.get("BUILD", "build"), "pylon-agent")
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "docs", "benchmarks.md"))
N_LAT = int(os.environ.get("BENCH_PROXY_LAT", "3000"))
N_TPUT = int(os.environ.get("BENCH_PROXY_MSGS", "50000"))
PASS = "bench-pass-0123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nothing listening on %d" % port)


def connect(path, port, mat):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if path == "direct TLS":
        ctx = ssl.create_default_context(cafile=mat.ca)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    rd = RespReader(s)
    s.sendall(resp_encode("AUTH", PASS))
    assert rd.read() == "OK"
    return s, rd


def latency(path, port, mat):
    sub, srd = connect(path, port, mat)
    sub.sendall(resp_encode("SUBSCRIBE", "lat"))
    srd.read()
    pub, prd = connect(path, port, mat)
    msg = b"m" * 256
    lat = []
    for i in range(N_LAT + 100):
        t0 = time.perf_counter()
        pub.sendall(resp_encode("PUBLISH", "lat", msg))
        srd.read()
        t1 = time.perf_counter()
        prd.read()
        if i >= 100:	# warm-up
            lat.append((t1 - t0) * 1000)
    sub.close()
    pub.close()
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


def throughput(path, port, mat):
    sub, srd = connect(path, port, mat)
    sub.sendall(resp_encode("SUBSCRIBE", "tput"))
    srd.read()
    pub, prd = connect(path, port, mat)
    msg = b"t" * 1024
    cmd = resp_encode("PUBLISH", "tput", msg)
    done = threading.Event()

    def recv():
        for _ in range(N_TPUT):
            srd.read()
        done.set()

    def replies():
        for _ in range(N_TPUT):
            prd.read()

    th = threading.Thread(target=recv, daemon=True)
    th2 = threading.Thread(target=replies, daemon=True)
    th.start()
    th2.start()
    t0 = time.perf_counter()
    batch = cmd * 100
    for _ in range(N_TPUT // 100):
        pub.sendall(batch)
    done.wait(120)
    dt = time.perf_counter() - t0
    th2.join(30)
    sub.close()
    pub.close()
    return N_TPUT / dt, N_TPUT * len(cmd) / dt / 1e6


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
    return 0


def main():
    w = tempfile.mkdtemp(prefix="pylon-bench-proxy.")
    procs = []
    r = None
    try:
        mat = make_tls_material(os.path.join(w, "tls"))
        r = RedisServer(w, tls=mat, requirepass=PASS, extra=["client-output-buffer-limit pubsub 0 0 0"]).start()
        url = "rediss://:%s@localhost:%d" % (PASS, r.port)
        # the agent
        aport, hport = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_")}
        env.update(PYLON_AGENT_REDIS_URL=url, PYLON_AGENT_REDIS_CA_FILE=mat.ca,
                   PYLON_AGENT_MODE="redis", PYLON_AGENT_PLATFORM="static",
                   PYLON_AGENT_SERVICEACCOUNT_DIR="/nonexistent")
        a = subprocess.Popen([AGENT, "serve", "--listen", "127.0.0.1:%d" % hport,
                              "--bus-proxy", "127.0.0.1:%d" % aport],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(a)
        # stunnel4 in the same role
        sport = free_port()
        conf = os.path.join(w, "stunnel.conf")
        with open(conf, "w") as f:
            f.write("foreground = yes\npid =\ndebug = 3\n[redis]\nclient = yes\n"
                    "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\nCAfile = %s\n"
                    "verifyChain = yes\ncheckHost = localhost\nsni = localhost\n"
                    % (sport, r.port, mat.ca))
        st = subprocess.Popen(["stunnel4", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(st)
        wait_port(aport)
        wait_port(sport)
        paths = [("direct TLS", r.port, None), ("pylon-agent --bus-proxy", aport, a),
                 ("stunnel4", sport, st)]
        rows = []
        for name, port, p in paths:
            p50, p99 = latency(name, port, mat)
            mps, mbs = throughput(name, port, mat)
            rss = "%.1f MB" % (hwm_kb(p.pid) / 1024) if p else "-"
            rows.append((name, p50, p99, mps, mbs, rss))
            print("%-26s p50 %.3f ms  p99 %.3f ms  %8.0f msg/s  %6.1f MB/s  RSS %s"
                  % (name, p50, p99, mps, mbs, rss))
        ver = subprocess.run(["stunnel4", "-version"], capture_output=True,
                             text=True).stderr.splitlines()
        sver = next((ln.strip() for ln in ver if ln.startswith("stunnel")), "stunnel4")
        lines = ["<!-- bench-proxy -->", "## The bus proxy (`serve --bus-proxy`)", "",
                 "`make bench-proxy` (tests/bench/proxy_bench.py), one run on this "
                 "machine, loopback, one TLS-only redis-server (TLS 1.3, certificate "
                 "and host name verified on every path), %d sequential 256-byte "
                 "messages for latency, %d pipelined 1 KiB messages for throughput. "
                 "%s. RSS is the peak (VmHWM) of the relay process: for the agent "
                 "the whole `serve` (HTTP server, bus checks) included."
                 % (N_LAT, N_TPUT, sver), "",
                 "| path | publish→receive p50 | p99 | throughput | | relay RSS |",
                 "|---|---|---|---|---|---|"]
        for name, p50, p99, mps, mbs, rss in rows:
            lines.append("| %s | %.3f ms | %.3f ms | %.0f msg/s | %.1f MB/s | %s |"
                         % (name, p50, p99, mps, mbs, rss))
        lines += ["", "<!-- /bench-proxy -->"]
        sect = "\n".join(lines) + "\n"
        try:
            doc = open(OUT).read()
        except FileNotFoundError:
            doc = "# Benchmarks\n"
        if "<!-- bench-proxy -->" in doc:
            doc = re.sub(r"<!-- bench-proxy -->.*?<!-- /bench-proxy -->\n?", lambda m: sect,
                         doc, flags=re.S)
        else:
            doc = doc.rstrip("\n") + "\n\n" + sect
        with open(OUT, "w") as f:
            f.write(doc)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if r is not None:
            r.stop()


if __name__ == "__main__":
    main()
