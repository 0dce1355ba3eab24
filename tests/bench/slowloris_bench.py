#!/usr/bin/python3
"""tests/bench/slowloris_bench.py - `serve`'s HTTP under slowloris and
connection bursts (issue 21 item 1, docs/hardening.md).  Not a test: it
prints figures and fails only when something cannot run at all.

One `serve --platform static` on 0.0.0.0:PORT.  From 127.0.0.1: SLOWLORIS
connections that send a request line and then one header line a second,
never finishing (a cut one is reopened at once), and BURSTS connections 50
at a time (connect, send a request, close).  From 127.0.0.2 - the kubelet's
stand-in, so the per-address limit of the attacker is not the prober's -
PROBES sequential `GET /livez` 20 ms apart, each timed from connect to the
end of the answer.  Prints p50/p99/max, failures, and what the attack saw.
Repeats RUNS times.

    BUILD=build tests/bench/slowloris_bench.py
    (env: SLOWLORIS=200 BURSTS=2000 PROBES=500 RUNS=3)
"""
import http.client
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import stop  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AGENT = os.environ.get("PYLON_AGENT_BIN",
                       os.path.join(ROOT, os.environ.get("BUILD", "build"), "pylon-agent"))
SLOWLORIS = int(os.environ.get("SLOWLORIS", "200"))
BURSTS = int(os.environ.get("BURSTS", "2000"))
PROBES = int(os.environ.get("PROBES", "500"))
RUNS = int(os.environ.get("RUNS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_conns(port, peer="127.0.0.1"):
    """Server-side ESTABLISHED connections of port from peer (/proc/net/tcp)."""
    want = "%08X" % int.from_bytes(socket.inet_aton(peer), "little")
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fl = line.split()
            if fl[3] == "01" and int(fl[1].split(":")[1], 16) == port and \
                    fl[2].split(":")[0] == want:
                n += 1
    return n


def slowloris(port, stop, st):
    socks = [None] * SLOWLORIS
    try:
        while not stop.is_set():
            for i in range(SLOWLORIS):
                if stop.is_set():
                    break
                s = socks[i]
                try:
                    if s is None:
                        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
                        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                        socks[i] = s
                        st["opened"] += 1
                    else:
                        s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    if s is not None:
                        s.close()
                    socks[i] = None
                    st["cut"] += 1
            st["open_max"] = max(st["open_max"], server_conns(port))
            stop.wait(1.0)
    finally:
        for s in socks:
            if s is not None:
                s.close()


def bursts(port, stop, st):
    done = 0
    while done < BURSTS and not stop.is_set():
        batch = []
        for _ in range(min(50, BURSTS - done)):
            s = socket.socket()
            try:
                s.settimeout(1.0)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                batch.append(s)
            except OSError:
                st["burst_errors"] += 1
                s.close()
            done += 1
        for s in batch:
            s.close()
    st["bursts"] = done


def probe(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0,
                                   source_address=("127.0.0.2", 0))
    try:
        c.request("GET", "/livez")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def one_run(port):
    stop = threading.Event()
    st = {"opened": 0, "cut": 0, "open_max": 0, "burst_errors": 0, "bursts": 0}
    th = [threading.Thread(target=slowloris, args=(port, stop, st)),
          threading.Thread(target=bursts, args=(port, stop, st))]
    lat, fails = [], 0
    for t in th:
        t.start()
    time.sleep(1.0)
    try:
        for _ in range(PROBES):
            t0 = time.monotonic()
            try:
                if probe(port) != 200:
                    fails += 1
            except OSError:
                fails += 1
            lat.append((time.monotonic() - t0) * 1000)
            time.sleep(0.02)
    finally:
        stop.set()
        for t in th:
            t.join(60)
    lat.sort()
    return {"p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max": lat[-1], "fails": fails, **st}


def main():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYLON_", "KUBERNETES_"))}
    p = subprocess.Popen([AGENT, "serve", "--platform", "static", "--listen",
                          "0.0.0.0:%d" % port, "--interval", "5s"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if probe(port) == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("serve did not answer /livez")
        idle = []
        for _ in range(100):
            t0 = time.monotonic()
            probe(port)
            idle.append((time.monotonic() - t0) * 1000)
        idle.sort()
        print("no attack: /livez p50 %.2f ms, p99 %.2f ms (100 probes)" %
              (idle[50], idle[98]))
        print("attack: %d slowloris + %d bursts from 127.0.0.1; %d probes from 127.0.0.2"
              % (SLOWLORIS, BURSTS, PROBES))
        for i in range(RUNS):
            r = one_run(port)
            print("run %d: p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d failed; slowloris: "
                  "server held at most %d, opened %d, cut %d; bursts %d (%d refused)" %
                  (i + 1, r["p50"], r["p99"], r["max"], r["fails"], r["open_max"],
                   r["opened"], r["cut"], r["bursts"], r["burst_errors"]))
    finally:
        stop(p, 10)


if __name__ == "__main__":
    main()
