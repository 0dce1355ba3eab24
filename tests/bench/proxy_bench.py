#!/usr/bin/python3
"""tests/bench/proxy_bench.py - `make bench-proxy`: pub/sub through
serve --bus-proxy, through Debian's stunnel4 in the same role (client
mode, CA + host name verified), and with a direct TLS client, against one
TLS-only redis-server, in one run.  Writes its section of
docs/benchmarks.md between the bench-proxy markers.

Measures, per path: publish->receive latency of N sequential 256-byte
messages (p50/p99), throughput of M pipelined 1 KiB messages published on
one connection and received on another (msg/s, MB/s; the receivers count
bytes rather than parse, so the relay is what limits), and the relay's
peak RSS (VmHWM of the whole agent process, HTTP server included, vs the
stunnel process).  The clients are Python for every path alike, so the
numbers compare the relays, not the clients.
"""
import os
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import stop, write_section  # noqa: E402

AGENT = os.path.join(ROOT, os.environ.get("BUILD", "build"), "pylon-agent")
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "docs", "benchmarks.md"))
N_LAT = int(os.environ.get("BENCH_PROXY_LAT", "3000"))
N_TPUT = int(os.environ.get("BENCH_PROXY_MSGS", "200000"))
ROUNDS = int(os.environ.get("BENCH_PROXY_ROUNDS", "3"))
PASS = "bench-pass-0123"


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


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

    # The receivers count bytes (every message and every reply has a
    # known length) instead of parsing RESP in Python: the relay, not the
    # client, must be what limits the rate.
    frame = resp_encode("message", "tput", msg)   # what SUBSCRIBE delivers
    reply = b":1\r\n"

    def drain(sock, rd, total):
        got = len(rd.buf)
        buf = bytearray(1 << 20)
        while got < total:
            n = sock.recv_into(buf)
            if n == 0:
                raise ConnectionError("connection closed after %d of %d bytes"
                                      % (got, total))
            got += n
        return got

    def recv():
        drain(sub, srd, N_TPUT * len(frame))
        done.set()

    th = threading.Thread(target=recv, daemon=True)
    th.start()
    t0 = time.perf_counter()
    batch = cmd * 100
    for _ in range(N_TPUT // 100):
        pub.sendall(batch)
    if not done.wait(120):
        raise SystemExit("%s: the subscriber did not receive every message" % path)
    dt = time.perf_counter() - t0
    # the replies are read after the run, in this thread: an SSL socket
    # must not be read and written by two threads at once (Redis keeps
    # the 4-byte replies in its output buffer meanwhile)
    drain(pub, prd, N_TPUT * len(reply))
    sub.close()
    pub.close()
    return N_TPUT / dt, N_TPUT * len(cmd) / dt / 1e6


def cpu_s(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        # serve without --bus-proxy on the same rediss:// URL (its own
        # checks over TLS): what the agent costs without the relay
        bport = free_port()
        b = subprocess.Popen([AGENT, "serve", "--listen", "127.0.0.1:%d" % bport,
                              "--pylon-tls"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(b)
        wait_port(bport)
        paths = [("direct TLS", r.port, None), ("pylon-agent --bus-proxy", aport, a),
                 ("stunnel4", sport, st)]
        # ROUNDS rounds, the paths interleaved in each, medians reported:
        # the machine is shared, so a burst of someone else's load lands
        # on one round of every path rather than on all of one path
        res = {name: {"p50": [], "p99": [], "mps": [], "mbs": [], "cpu": []}
               for name, _, _ in paths}
        for rnd in range(ROUNDS):
            for name, port, p in paths:
                p50, p99 = latency(name, port, mat)
                c0 = cpu_s(p.pid) if p else 0
                mps, mbs = throughput(name, port, mat)
                c1 = cpu_s(p.pid) if p else 0
                d = res[name]
                d["p50"].append(p50)
                d["p99"].append(p99)
                d["mps"].append(mps)
                d["mbs"].append(mbs)
                d["cpu"].append((c1 - c0) * 1e6 / N_TPUT)
                print("round %d %-26s p50 %.3f ms  p99 %.3f ms  %8.0f msg/s  %6.1f MB/s"
                      "  relay CPU %.2f us/msg" % (rnd + 1, name, p50, p99, mps, mbs,
                                                   d["cpu"][-1]), flush=True)
        rows = []
        for name, port, p in paths:
            d = res[name]
            rss = "%.1f MB" % (hwm_kb(p.pid) / 1024) if p else "-"
            cpu = "%.2f µs" % median(d["cpu"]) if p else "-"
            rows.append((name, median(d["p50"]), median(d["p99"]), median(d["mps"]),
                         median(d["mbs"]), cpu, rss))
        alone = hwm_kb(b.pid) / 1024
        ver = subprocess.run(["stunnel4", "-version"], capture_output=True,
                             text=True).stderr.splitlines()
        sver = next((ln.strip() for ln in ver if ln.startswith("stunnel")), "stunnel4")
        lines = ["<!-- bench-proxy -->", "## The bus proxy (`serve --bus-proxy`)", "",
                 "`make bench-proxy` (tests/bench/proxy_bench.py), one run on this "
                 "machine, loopback, one TLS-only redis-server (TLS 1.3, certificate "
                 "and host name verified on every path); %d rounds with the paths "
                 "interleaved, medians shown. Latency: %d sequential 256-byte "
                 "messages; throughput: %d pipelined 1 KiB messages published on one "
                 "connection and received on another (the receivers count bytes, so "
                 "the relay is what limits). Relay CPU: user+system time of the relay "
                 "process per message during the throughput run. %s. RSS is the peak "
                 "(VmHWM) of the relay process over the whole run: for the agent the "
                 "whole `serve` (HTTP server, bus checks) included; `serve` without "
                 "`--bus-proxy` on the same `rediss://` URL peaked at %.1f MB."
                 % (ROUNDS, N_LAT, N_TPUT, sver, alone), "",
                 "| path | publish→receive p50 | p99 | throughput | | relay CPU/msg "
                 "| relay RSS |",
                 "|---|---|---|---|---|---|---|"]
        for name, p50, p99, mps, mbs, cpu, rss in rows:
            lines.append("| %s | %.3f ms | %.3f ms | %.0f msg/s | %.1f MB/s | %s | %s |"
                         % (name, p50, p99, mps, mbs, cpu, rss))
        lines += ["", "<!-- /bench-proxy -->"]
        write_section(OUT, "bench-proxy", "\n".join(lines) + "\n")
    finally:
        for p in procs:
            stop(p)
        if r is not None:
            r.stop()


if __name__ == "__main__":
    main()
