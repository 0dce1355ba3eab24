#!/usr/bin/python3
"""tests/bench/deaf_bench.py - `make bench-deaf`: what the deaf-Pylon look
(issue 20) costs Redis while one pod's deaf Pylon keeps the channel's count
low for everyone.  Writes its section of docs/benchmarks.md between the
bench-deaf markers.

One real redis-server.  N "other pods' Pylons" subscribe to the channel
from 127.0.0.2 (raw sockets); this pod's Pylon subscribes from 127.0.0.1,
as does the agent (`serve`, static replicas N+2, so the count stays low and
the agent looks every --count-interval).  The agent reaches Redis through a
byte-counting relay, so what Redis sends it is measured, not estimated.
Side by side in one run, per N:

  - the agent as built: CLIENT LIST ID <its own subscriber>;
  - the same agent behind a relay that answers CLIENT LIST ID with
    "-ERR syntax error" (a server without the ID filter): whole CLIENT LIST TYPE pubsub
    every look, which is what every agent did before the ID filter.

Also the two replies' sizes asked directly, and the fleet's total at the
defaults (N agents, one look a minute each).
"""
import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from redisfix import RedisServer, RespReader, resp_encode  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import stop, write_section  # noqa: E402

AGENT = os.path.join(ROOT, os.environ.get("BUILD", "build"), "pylon-agent")
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "docs", "benchmarks.md"))
CHANNEL = "deaf:cluster:bus"
LOOK_S = 1


class CountingRelay:
    """127.0.0.1:<port> -> Redis; counts the bytes Redis sends back."""

    def __init__(self, upstream, refuse_id=False):
        self.up, self.refuse_id = upstream, refuse_id
        self.down_bytes = 0
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.srv.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.up))
            self.socks += [down, up]
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src, dst, upward):
        while True:
            try:
                d = src.recv(65536)
            except OSError:
                return
            if not d:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if upward and self.refuse_id and b"$2\r\nID\r\n" in d:
                src.sendall(b"-ERR syntax error\r\n")
                continue
            if not upward:
                with self.lock:
                    self.down_bytes += len(d)
            try:
                dst.sendall(d)
            except OSError:
                return

    def close(self):
        self.srv.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def subscriber(port, src_ip):
    s = socket.socket()
    s.bind((src_ip, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(resp_encode("SUBSCRIBE", CHANNEL))
    RespReader(s).read()
    return s


def reply_bytes(port, *cmd):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(resp_encode(*cmd))
        rep = RespReader(s).read()
    return len(rep) if isinstance(rep, (bytes, str)) else 0


def own_id(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(resp_encode("CLIENT", "LIST", "TYPE", "pubsub"))
        rep = RespReader(s).read()
    text = rep.decode() if isinstance(rep, bytes) else rep
    for line in text.splitlines():
        if " addr=127.0.0.1:" in line:
            return re.search(r"\bid=(\d+)", line).group(1)
    raise SystemExit("this pod's subscriber is not in CLIENT LIST")


def get_status(port):
    import json
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=5) as r:
        return json.loads(r.read())


def run_agent(redis_port, n, refuse_id, seconds):
    relay = CountingRelay(redis_port, refuse_id)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http = s.getsockname()[1]
    p = subprocess.Popen([AGENT, "serve", "--platform", "static", "--replicas", str(n + 2),
                          "--namespace", "deaf", "--redis-url",
                          "redis://127.0.0.1:%d" % relay.port,
                          "--listen", "127.0.0.1:%d" % http, "--interval", "%ds" % LOOK_S,
                          "--count-interval", "%ds" % LOOK_S, "--deaf-pylon", "report"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                if get_status(http)["own_pylon"]["state"] == "subscribed":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the agent never saw its own Pylon")
        with relay.lock:
            b0 = relay.down_bytes
        time.sleep(seconds)
        with relay.lock:
            b1 = relay.down_bytes
        looks = seconds / LOOK_S
        return (b1 - b0) / looks
    finally:
        stop(p)
        relay.close()


def human(b):
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return "%.1f %s" % (b / k, unit)
    return "%.0f B" % b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=os.environ.get("DEAF_SIZES", "100,1000"))
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        r = RedisServer(tmp)
        r.start()
        socks = []
        try:
            socks.append(subscriber(r.port, "127.0.0.1"))     # this pod's Pylon
            for n in sizes:
                while len(socks) - 1 < n:
                    socks.append(subscriber(r.port, "127.0.0.2"))
                full = reply_bytes(r.port, "CLIENT", "LIST", "TYPE", "pubsub")
                one = reply_bytes(r.port, "CLIENT", "LIST", "ID", own_id(r.port))
                new = run_agent(r.port, n, False, a.seconds)
                old = run_agent(r.port, n, True, a.seconds)
                rows.append((n, full, one, new, old))
                print("N=%d: full list %d B, by id %d B; agent per look %.0f B (id) vs "
                      "%.0f B (whole lists)" % (n, full, one, new, old), flush=True)
        finally:
            for s in socks:
                s.close()
            r.stop()
    ver = subprocess.run(["redis-server", "--version"], capture_output=True,
                         text=True).stdout.split()
    rver = next((w for w in ver if w.startswith("v=")), "v=?")[2:]
    lines = ["<!-- bench-deaf -->", "## The deaf-Pylon look while the count is low "
             "(`make bench-deaf`)", "",
             "`make bench-deaf` (tests/bench/deaf_bench.py), one run, redis-server %s on "
             "loopback. N other pods' Pylons subscribe from one address, this pod's "
             "Pylon and agent from another; the agent (`serve`, static replicas N+2, so "
             "the channel's count stays below the replicas, as when one pod's Pylon is "
             "deaf) looks for its own Pylon every %d s for %d s, through a relay that "
             "counts the bytes Redis sends it (PING and NUMSUB replies included). "
             "\"whole lists\" is the same binary behind a relay that refuses "
             "`CLIENT LIST ID` as a server without the ID filter does: every look reads the whole "
             "`CLIENT LIST TYPE pubsub`, which is what every agent did before. Fleet "
             "column: N agents each looking once a minute (`--count-interval 60s`)."
             % (rver, LOOK_S, a.seconds), "",
             "| N | `CLIENT LIST TYPE pubsub` reply | `CLIENT LIST ID <own>` reply "
             "| Redis → agent per count interval: by id | whole lists | fleet per minute: by id "
             "| whole lists |",
             "|---|---|---|---|---|---|---|"]
    for n, full, one, new, old in rows:
        lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            n, human(full), human(one), human(new), human(old), human(new * n),
            human(old * n)))
    lines += ["", "Reproduce: `make bench-deaf` (sizes: `DEAF_SIZES=100,1000`).", "",
              "<!-- /bench-deaf -->"]
    write_section(OUT, "bench-deaf", "\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
