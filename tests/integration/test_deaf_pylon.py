"""A deaf Pylon is found and healed, one pod at a time (issue 20).

Pylon 0.11.3 sends no PING on its subscription and sets no TCP keepalive:
when the connection goes half-open it stays deaf while /health says ok.
Here each "pod" reaches Redis through its own small TCP relay (PodRelay)
whose upstream side binds a pod address (127.0.0.2, 127.0.0.3 ...), so Redis
sees one address per pod as it would on a cluster network.  freeze() makes
the pod's subscriptions half-open: Redis loses them, Pylon's side stays open
and silent.

The agent (serve, supervising the real Pylon) sees the channel count drop,
finds no subscription from its own address (CLIENT INFO + CLIENT LIST TYPE
pubsub), waits --deaf-grace and restarts only its own Pylon; B's WebSocket
client receives A's rows again.  A Redis outage for every pod restarts
nothing.  The sidecar shape answers /pylon-livez 503 instead, and an ACL
without CLIENT falls back to the channel-wide count."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import AGENT, ROOT, WRAPPER, clean_env, free_port
from realpylon import WSClient, guest_token, insert, make_app
from redisfix import RedisServer, redis_factory  # noqa: F401
from test_real_pylon import env_for, netns, redis, world  # noqa: F401

STANDIN = os.path.join(ROOT, "tests", "fakes", "standin.py")


class PodRelay:
    """127.0.0.1:<port> -> Redis, the upstream bound to a pod address."""

    def __init__(self, upstream_port, pod_ip, refuse=None):
        self.up, self.pod_ip = upstream_port, pod_ip
        self.refuse = refuse    # a command (bytes) answered "-ERR syntax error", as old Redis
        self.sent = []          # what the pod sent (MONITOR leaves CLIENT out)
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []         # [down, up, subscribed, frozen]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                down, _ = self.srv.accept()
            except OSError:
                return
            try:
                up = socket.socket()
                up.bind((self.pod_ip, 0))
                up.connect(("127.0.0.1", self.up))
            except OSError:
                down.close()
                continue
            c = [down, up, False, False, False]   # + subscribed, frozen, closed
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._pump, args=(c, 0, 1), daemon=True).start()
            threading.Thread(target=self._pump, args=(c, 1, 0), daemon=True).start()

    def _pump(self, c, src, dst):
        while True:
            try:
                d = c[src].recv(65536)
            except OSError:
                d = b""
            if c[3]:                # frozen: swallow, never answer, never close
                if not d and src == 0:
                    return
                continue
            if not d:
                c[4] = True
                for s in (c[0], c[1]):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if src == 0 and b"SUBSCRIBE" in d.upper():
                c[2] = True
            if src == 0:
                self.sent.append(d)
            if src == 0 and self.refuse and self.refuse in d:
                try:
                    c[0].sendall(b"-ERR syntax error\r\n")
                except OSError:
                    return
                continue
            try:
                c[dst].sendall(d)
            except OSError:
                return

    def freeze(self):
        """Half-open every subscription of this pod: Redis closes them,
        the Pylon side hears nothing, ever."""
        n = 0
        with self.lock:
            for c in self.conns:
                if c[2] and not c[3] and not c[4]:
                    c[3] = True
                    try:        # shutdown first: a recv() blocked in the
                        c[1].shutdown(socket.SHUT_RDWR)   # pump holds the fd
                    except OSError:
                        pass
                    c[1].close()
                    n += 1
        return n

    def close(self):
        self.stopped = True
        self.srv.close()
        with self.lock:
            for c in self.conns:
                for s in c[:2]:
                    try:
                        s.close()
                    except OSError:
                        pass


def status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=5) as r:
        return json.loads(r.read())


def http_code(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError("%s: not within %.0f s (last: %r)" % (what, timeout, last))


FAST = ["--interval", "1s", "--count-interval", "2s"]


def sidecar_with_standin(procs, relay, replicas):
    url = "redis://127.0.0.1:%d" % relay.port
    env = clean_env(PYLON_CLUSTER_BUS=url, PYLON_CLUSTER_NAMESPACE="side",
                    DATABASE_URL="postgres://u@db/x")
    pylon = procs.start([sys.executable, STANDIN], env=env, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the stand-in subscribed before the agent's first look
    wait_for(lambda: any(c[2] for c in relay.conns), 20, "the stand-in's SUBSCRIBE")
    time.sleep(0.2)
    port = free_port()
    agent = procs.start_agent(["serve", "--platform", "static", "--replicas", str(replicas),
                               "--namespace", "side", "--redis-url", url,
                               "--listen", "127.0.0.1:%d" % port, "--deaf-grace", "3s"]
                              + FAST)
    wait_for(lambda: http_code(port, "/startupz") == 200, 20, "serve started")
    wait_for(lambda: status(port)["own_pylon"]["state"] == "subscribed", 20,
             "the stand-in's subscription seen as this pod's")
    return agent, port, pylon


LIST_ALL = b"$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\npubsub\r\n"
LIST_ID = b"$6\r\nCLIENT\r\n$4\r\nLIST\r\n$2\r\nID\r\n"


def sent(relay, cmd, since=0):
    return sum(1 for d in relay.sent[since:] if cmd in d)


def test_while_the_count_is_low_a_healthy_pod_asks_for_its_own_line_only(
        redis_factory, procs):
    """Fleet cost: another pod's deaf Pylon keeps the channel's count low
    for everyone.  The healthy pods then ask CLIENT LIST ID <their own
    subscriber> (one line), not the whole list that grows with the fleet;
    the whole list only once theirs is gone."""
    r = redis_factory()
    others = [r.subscribe("side:cluster:bus") for _ in range(3)]   # other pods
    relay = PodRelay(r.port, "127.0.0.5")
    try:
        agent, port, _ = sidecar_with_standin(procs, relay, replicas=6)   # 4 of 6 heard
        t0 = len(relay.sent)
        assert sent(relay, LIST_ALL) == 1       # once, to find its subscriber
        wait_for(lambda: sent(relay, LIST_ID, t0) >= 3, 20, "three counts asked by id")
        assert sent(relay, LIST_ALL, t0) == 0
        assert status(port)["own_pylon"]["state"] == "subscribed"
        # this pod's Pylon goes half-open: its id is gone, the whole list
        # is read to look for a new one, then it is deaf
        assert relay.freeze() == 1
        wait_for(lambda: status(port)["own_pylon"]["state"] == "deaf", 20, "deaf")
        assert sent(relay, LIST_ALL, t0) >= 1
    finally:
        relay.close()


def test_a_redis_without_client_list_id_gets_whole_lists(redis_factory, procs):
    """A Redis-compatible server without the ID filter answers CLIENT LIST
    ID with a syntax error: the agent asks for whole lists from then on,
    quietly, and still tells."""
    r = redis_factory()
    relay = PodRelay(r.port, "127.0.0.6", refuse=b"$2\r\nID\r\n")
    try:
        agent, port, _ = sidecar_with_standin(procs, relay, replicas=2)
        t0 = len(relay.sent)
        wait_for(lambda: sent(relay, LIST_ALL, t0) >= 2, 20, "two whole lists")
        assert sent(relay, LIST_ID) == 1        # asked once, refused (the "old Redis")
        assert status(port)["own_pylon"]["state"] == "subscribed"
        agent.terminate()
        agent.wait(timeout=10)
        out = agent.stderr.read().decode()
        assert "cannot tell" not in out and "syntax error" not in out, out
    finally:
        relay.close()


def test_half_open_pylon_is_restarted_and_hears_again(world):
    ps, servers, tmp = world
    r = redis(world)
    relay_a, relay_b = PodRelay(r.port, "127.0.0.2"), PodRelay(r.port, "127.0.0.3")
    servers += [relay_a, relay_b]
    la, lb = free_port(), free_port()

    def agent(listen, relay):
        return WRAPPER + [AGENT, "serve", "--platform", "static", "--replicas", "2",
                          "--cluster-required=false", "--listen", "127.0.0.1:%d" % listen,
                          "--redis-url", "redis://127.0.0.1:%d" % relay.port,
                          "--deaf-grace", "10s"] + FAST + ["--"]
    a = ps.start(make_app(str(tmp)), env=env_for(), agent_args=agent(la, relay_a))
    b = ps.start(make_app(str(tmp)), env=env_for(), agent_args=agent(lb, relay_b))
    for p in (a, b):
        assert p.wait_log("redis subscriber listening", 15), p.log()
    ta = guest_token(a.port)
    wb = WSClient(b.port, guest_token(b.port))
    try:
        time.sleep(0.5)
        insert(a.port, ta, "Note", {"body": "before"})
        assert wb.wait_for("before", timeout=10), "B never heard A before the freeze"
        # both agents see their own Pylon subscribed (once the count is low
        # or, here, after the first check: nothing to look for yet)
        assert status(lb)["own_pylon"]["restarts_total"] == 0

        assert relay_b.freeze() >= 1
        insert(a.port, ta, "Note", {"body": "while-deaf"})
        assert not wb.wait_for("while-deaf", timeout=2), "B was not deaf"
        assert b.health()[0] == 200       # Pylon's own /health: still "ok"
        t0 = time.monotonic()
        st = wait_for(lambda: (lambda s: s if s["own_pylon"]["restarts_total"] >= 1
                               else None)(status(lb)), 40, "agent B restarts its Pylon")
        took = time.monotonic() - t0
        assert st["own_pylon"]["address"] == "127.0.0.3", st
        assert st["own_pylon"]["deaf_total"] == 1, st
        assert took >= 8, "restarted before --deaf-grace: %.1f s" % took
    finally:
        wb.close()
    # B's Pylon came back with a fresh subscription and hears A again (the
    # old one may still answer /health until SIGTERM lands: wait for the
    # new one's own "connected" line first)
    assert b.wait_log("starting it again", 15), b.log()
    wait_for(lambda: b.log().count("redis bus connected") == 2, 30,
             "B's restarted Pylon connected to the bus")
    b.wait_health(30)
    assert b.log().count("redis bus connected") == 2, b.log()
    wait_for(lambda: status(lb)["own_pylon"]["state"] == "subscribed", 30,
             "agent B sees its Pylon subscribed again")
    wb = WSClient(b.port, guest_token(b.port))
    try:
        time.sleep(0.5)
        insert(a.port, ta, "Note", {"body": "after-heal"})
        assert wb.wait_for("after-heal", timeout=10), "B still deaf after the heal"
    finally:
        wb.close()
    assert "deaf Pylon in this pod" in b.log()
    # A was never touched
    sa = status(la)
    assert sa["own_pylon"]["restarts_total"] == 0 and sa["own_pylon"]["deaf_total"] == 0, sa
    assert "deaf Pylon in this pod" not in a.log()
    m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % lb, timeout=5).read().decode()
    assert "pylon_agent_pylon_restarts_total 1" in m

    # a Redis outage for everyone: no restart anywhere
    r.kill()
    time.sleep(4)
    r.start()
    for p in (a, b):
        assert p.wait_log("redis subscriber listening", 1) or True
    wait_for(lambda: all(status(p)["own_pylon"]["state"] in ("subscribed", None)
                         and status(p)["redis"]["healthy"] for p in (la, lb)), 30,
             "both agents healthy after the outage")
    time.sleep(14)      # past --deaf-grace after the agents' recovery
    for port, before in ((la, 0), (lb, 1)):
        s = status(port)
        assert s["own_pylon"]["restarts_total"] == before, s
    assert a.log().count("redis bus connected") == 1
    assert b.log().count("redis bus connected") == 2


def test_sidecar_answers_pylon_livez_503_for_a_deaf_pylon(redis_factory, procs, tmp_path):
    """No supervisor: the kubelet restarts Pylon's container from its
    livenessProbe on the agent's /pylon-livez."""
    r = redis_factory()
    relay = PodRelay(r.port, "127.0.0.4")
    try:
        agent, port, pylon = sidecar_with_standin(procs, relay, replicas=2)
        assert http_code(port, "/pylon-livez") == 200
        assert relay.freeze() == 1
        wait_for(lambda: http_code(port, "/pylon-livez") == 503, 20, "/pylon-livez 503")
        st = status(port)
        assert st["own_pylon"]["state"] == "deaf" and st["own_pylon"]["restarts_total"] == 1
        assert http_code(port, "/readyz") == 200   # the agent itself is fine
        assert pylon.poll() is None                # nothing killed by the agent
        agent.terminate()
        agent.wait(timeout=10)
        out = agent.stderr.read().decode()
        assert "kubelet restarts Pylon's container" in out, out
    finally:
        relay.close()


def test_without_client_permission_it_says_so_once(redis_factory, procs):
    r = redis_factory(users=["agent on >pw ~* &* +@all -client"])
    # one Pylon of two listening: the count is low, so the agent asks
    sub = r.subscribe("pylon:cluster:bus")
    port = free_port()
    agent = procs.start_agent(["serve", "--platform", "static", "--replicas", "2",
                               "--redis-url", r.url(user="agent", password="pw"),
                               "--listen", "127.0.0.1:%d" % port] + FAST)
    wait_for(lambda: status(port)["own_pylon"]["state"] == "unsupported", 20,
             "own check unsupported")
    time.sleep(4.5)     # two more counts: no second warning
    agent.terminate()
    agent.wait(timeout=10)
    out = agent.stderr.read().decode()
    assert out.count("cannot tell whether this pod's Pylon is deaf") == 1, out
    assert "+client|list" in out and ">pw" not in out and ":pw@" not in out
