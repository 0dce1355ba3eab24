"""The bus proof (SPEC 5) against real redis-server processes and a few
misbehaving fake servers: every failure cause, TLS, ACLs, unix sockets,
retries, the one-envelope rule, and that the password never leaks."""
import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import SLOW, clean_env, free_port, run_agent
from redisfix import RespReader, make_tls_material, redis_factory, resp_encode  # noqa: F401

NASTY = "p@ss:w/rd'\"% x#?&=é"   # every character a URL parser trips on
ENVELOPE_RE = re.compile(
    rb'^\{"instance_id":"pylon-agent-[0-9a-f]{8}","kind":"agent_probe",'
    rb'"payload":\{"nonce":"[0-9a-f]{32}"\}\}$')


def scaled(duration):
    """The agent's --timeout stretched like the test's own waits under a
    wrapper (valgrind is ~4x slower: a DNS lookup alone can take seconds)."""
    if SLOW == 1.0:
        return duration
    ms = int(duration[:-2]) if duration.endswith("ms") else int(duration[:-1]) * 1000
    return "%dms" % int(ms * SLOW)


def prove(url, timeout="3s", ns=None, extra=(), env=None):
    args = ["decide", "--prove", "--platform", "static", "--replicas", "2",
            "--redis-url", url, "--timeout", scaled(timeout)]
    if ns:
        args += ["--namespace", ns]
    if url.startswith("rediss://"):
        # the compatibility gate (SPEC 5): rediss:// only for a Pylon
        # build with TLS (these tests exercise the agent's TLS transport)
        args.append("--pylon-tls")
    return run_agent(args + list(extra), env=env, timeout=60)


def assert_no_secret(r, *secrets):
    for s in secrets:
        for enc in {s, __import__("urllib.parse").parse.quote(s, safe="")}:
            assert enc not in r.stdout, "secret on stdout: %r" % r.stdout
            assert enc not in r.stderr, "secret on stderr: %r" % r.stderr


def assert_proven(r):
    assert r.returncode == 0, r.stderr
    assert "proven in" in r.stdout, r.stdout


def assert_unproven(r, *needles):
    assert r.returncode == 69, (r.returncode, r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert "bus not proven" in last, last
    for n in needles:
        assert n in last, "%r not in %r" % (n, last)


# ---- success paths --------------------------------------------------------

def test_no_auth(redis_factory):
    r = redis_factory()
    res = prove(r.url())
    assert_proven(res)
    res = prove(r.url(), extra=["--output", "json"])
    d = json.loads(res.stdout)
    assert d["redis"]["proven"] is True and d["redis"]["error"] is None
    assert d["redis"]["latency_ms"] >= 0 and d["channel"] == "pylon:cluster:bus"


def test_requirepass_nasty_password(redis_factory):
    r = redis_factory(requirepass=NASTY)
    url = r.url()
    assert "%40" in url and "%3A" in url and "%2F" in url
    res = prove(url, extra=["--output", "json"])
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["redis"]["proven"] is True
    assert "***" in d["redis"]["url"]
    assert_no_secret(res, NASTY)
    # wrong password: WRONGPASS, still no secret anywhere
    bad = r.url(password=NASTY + "zz")
    res = prove(bad, timeout="1s")
    assert_unproven(res, "WRONGPASS", "user 'default'")
    assert_no_secret(res, NASTY, NASTY + "zz")
    # no password at all: NOAUTH
    res = prove("redis://127.0.0.1:%d" % r.port, timeout="1s")
    assert_unproven(res, "NOAUTH")


def test_ipv6_literal(redis_factory):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        pytest.skip("no IPv6 loopback here: %s" % e)
    r = redis_factory(bind="127.0.0.1 ::1", requirepass="v6pw")
    res = prove(r.url(host="::1", db=1))
    assert_proven(res)
    assert "[::1]:%d" % r.port in res.stdout


def test_db3_and_bad_db(redis_factory):
    r = redis_factory(databases=4)
    assert_proven(prove(r.url(db=3)))
    res = prove(r.url(db=7), timeout="1s")
    assert_unproven(res, "SELECT 7 failed", "wrong db", "DB index is out of range")


def test_unix_socket(redis_factory):
    r = redis_factory(unixsocket=True, requirepass=NASTY)
    # Pylon 0.11.3 exits 1 at boot on unix sockets: the gate refuses them
    # (exit 78, nothing proven), probe too (it decides first)
    for scheme in ("redis+unix", "unix"):
        url = r.url(unix=True, scheme=scheme, db=3)
        res = prove(url)
        assert res.returncode == 78, (res.stdout, res.stderr)
        assert "unix socket" in res.stderr and "proven" not in res.stdout
        assert_no_secret(res, NASTY)


def test_acl_channels(redis_factory):
    r = redis_factory(users=[
        "alice on >alicepw ~* resetchannels &other:* +@all",
        "bob on >bobpw ~* resetchannels &ns1:* +@all",
        "carol on >carolpw ~* allchannels +@all -publish",
    ])
    res = prove(r.url(user="alice", password="alicepw"), ns="ns1", timeout="1s")
    assert_unproven(res, "NOPERM", "user 'alice'", '"ns1:cluster:bus"',
                    "ACL SETUSER alice &ns1:cluster:bus")
    assert_no_secret(res, "alicepw")
    res = prove(r.url(user="bob", password="bobpw"), ns="ns1")
    assert_proven(res)
    assert_no_secret(res, "bobpw")
    # allowed to subscribe but not to PUBLISH (a command rule)
    res = prove(r.url(user="carol", password="carolpw"), ns="ns1", timeout="1s")
    assert_unproven(res, "NOPERM", "user 'carol'", "PUBLISH")


def test_acl_minimal_user_documented_in_docs(redis_factory, tmp_path):
    # the least-privilege user docs/bus.md recommends: proof, probe, serve
    r = redis_factory(databases=4, users=[
        "pylon on >pylonpw resetchannels &ns1:cluster:bus resetkeys -@all "
        "+subscribe +publish +ping +pubsub|numsub +select"])
    url = r.url(user="pylon", password="pylonpw", db=2)
    assert_proven(prove(url, ns="ns1"))
    res = run_agent(["probe", "--platform", "static", "--replicas", "2", "--namespace",
                     "ns1", "--redis-url", url, "--timeout", "3s",
                     "--env-file", str(tmp_path / "none.env")])
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "subscriber" in res.stdout


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    good = make_tls_material(str(d / "good"))
    wrong = make_tls_material(str(d / "wrong"), ca_name="some other CA")
    other = make_tls_material(str(d / "other"), cn="otherhost", sans=("otherhost",))
    return good, wrong, other


def test_tls(redis_factory, tls_files):
    good, wrong, _ = tls_files
    r = redis_factory(tls=good, requirepass="tlspw")
    # IP verification, then host name verification with SNI
    assert_proven(prove(r.url(), extra=["--redis-ca-file", good.ca]))
    assert_proven(prove(r.url(host="localhost"), extra=["--redis-ca-file", good.ca]))
    # wrong CA: verification failure naming the certificate subject
    res = prove(r.url(), timeout="1s", extra=["--redis-ca-file", wrong.ca])
    assert_unproven(res, "TLS certificate verification failed",
                    "certificate subject: CN=localhost", "--redis-ca-file")
    assert_no_secret(res, "tlspw")
    # system CAs do not know our test CA
    res = prove(r.url(), timeout="1s")
    assert_unproven(res, "TLS certificate verification failed")
    # #insecure: proven, with a loud warning
    res = prove(r.url(insecure=True), extra=["--redis-ca-file", wrong.ca])
    assert_proven(res)
    assert "verification is DISABLED" in res.stderr
    # plain redis:// against the TLS port: a clear hint, no hang
    res = prove(r.url(scheme="redis"), timeout="2s")
    assert_unproven(res, "rediss://")
    # a CA file that is no PEM: configuration error, at once
    bad = os.path.join(good.dir, "server.key.notpem")
    with open(bad, "w") as f:
        f.write("not a certificate\n")
    res = prove(r.url(), timeout="5s", extra=["--redis-ca-file", bad])
    assert res.returncode == 78, res.stderr
    assert "cannot be loaded" in res.stderr


def test_tls_client_certificate_required(redis_factory, tls_files):
    good, _, _ = tls_files
    r = redis_factory(tls=good, extra=["tls-auth-clients yes"])
    res = prove(r.url(), timeout="1s", extra=["--redis-ca-file", good.ca])
    assert_unproven(res, "client certificate")


def test_tls_hostname_mismatch(redis_factory, tls_files):
    _, _, other = tls_files
    r = redis_factory(tls=other)
    res = prove(r.url(), timeout="1s", extra=["--redis-ca-file", other.ca])
    assert_unproven(res, "TLS certificate verification failed", "mismatch",
                    "CN=otherhost")


# ---- failure causes -------------------------------------------------------

def test_refused():
    port = free_port()
    t0 = time.monotonic()
    res = prove("redis://127.0.0.1:%d" % port, timeout="1500ms")
    assert_unproven(res, "connection refused", "127.0.0.1:%d" % port, "within 1500 ms")
    assert time.monotonic() - t0 < 1.5 + 2 * SLOW
    # it retried with backoff before giving up
    assert "bus attempt 1 failed" in res.stderr


def test_connect_timeout():
    # a listener whose accept queue is full and never drained: Linux drops
    # further SYNs, so connect() hangs like behind a dropping firewall
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fill = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fill.append(c)
        time.sleep(0.2)
        t0 = time.monotonic()
        res = prove("redis://127.0.0.1:%d" % port, timeout="1500ms")
        elapsed = time.monotonic() - t0
        assert_unproven(res, "connect timed out")
        assert elapsed < 1.5 + 1.5 * SLOW, elapsed
    finally:
        for c in fill:
            c.close()
        lst.close()


def test_dns_failure():
    res = prove("redis://nonexistent.invalid:6379", timeout="1s")
    assert_unproven(res, "DNS", "nonexistent.invalid")


class SilentListener:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns, self.stop = [], False
        self.sock.settimeout(0.1)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.t.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_listener_never_answers():
    s = SilentListener()
    try:
        t0 = time.monotonic()
        res = prove("redis://:pw@127.0.0.1:%d" % s.port, timeout="2s")
        elapsed = time.monotonic() - t0
        assert_unproven(res, "read timeout", "no reply to AUTH")
        assert 1.5 <= elapsed < 2 + 1.5 * SLOW, elapsed
        # TLS: the handshake times out
        t0 = time.monotonic()
        res = prove("rediss://127.0.0.1:%d" % s.port, timeout="1s")
        assert_unproven(res, "TLS handshake timed out")
        assert time.monotonic() - t0 < 1 + 1.5 * SLOW
    finally:
        s.close()


def test_redis_starts_after_retrying_began(redis_factory, procs):
    r = redis_factory(start=False)
    p = procs.start_agent(["decide", "--prove", "--platform", "static", "--replicas", "2",
                           "--redis-url", r.url(), "--timeout", "20s"])
    time.sleep(1.0 * SLOW)
    assert p.poll() is None, "the agent gave up before Redis came"
    r.start()
    out, err = p.communicate(timeout=20 * SLOW)
    assert p.returncode == 0, err
    assert "connection refused" in err.decode()     # the retries before
    assert "proven in" in out.decode()


def test_redis_restarted_during_retries(redis_factory, procs):
    r = redis_factory()
    r.stop()
    p = procs.start_agent(["decide", "--prove", "--platform", "static", "--replicas", "2",
                           "--redis-url", r.url(), "--timeout", "20s"])
    time.sleep(0.7 * SLOW)
    r.start()
    out, err = p.communicate(timeout=20 * SLOW)
    assert p.returncode == 0, err
    assert "proven in" in out.decode()


def test_bad_urls_are_config_errors():
    for url, want in [("redis://:hunter2xyz@h:99999", "port"),
                      ("redis://h?foo=1", "unknown query parameter 'foo'"),
                      ("http://h", "unknown scheme"),
                      ("redis://:hunter2/xyz@h", "percent-encode")]:
        res = prove(url, timeout="1s")
        assert res.returncode == 78, (url, res.stderr)
        assert want in res.stderr, res.stderr
        assert "hunter2" not in res.stderr and "hunter2" not in res.stdout


# ---- one envelope per start -----------------------------------------------

def test_one_envelope_per_init_zero_for_decide(redis_factory, tmp_path):
    r = redis_factory(requirepass=NASTY)
    obs = r.subscribe("app1:cluster:bus")
    envf = tmp_path / "cluster.env"
    res = run_agent(["init", "--platform", "static", "--replicas", "2", "--namespace", "app1",
                     "--redis-url", r.url(), "--env-file", str(envf), "--timeout", "5s"])
    assert res.returncode == 0, res.stderr
    msgs = obs.wait_count(1)
    msgs = obs.settle()
    assert len(msgs) == 1, msgs
    assert ENVELOPE_RE.match(msgs[0]), msgs[0]
    env = json.loads(msgs[0])
    assert env["kind"] == "agent_probe"
    # the password: only in the env file's export line
    assert_no_secret(res, NASTY)
    text = envf.read_text()
    lines = [l for l in text.splitlines() if "PYLON_CLUSTER_BUS" in l]
    assert len(lines) == 1 and lines[0].startswith("export PYLON_CLUSTER_BUS=")
    enc = r.url().split("//", 1)[1].split("@")[0].split(":", 1)[1]
    assert enc in lines[0]
    assert sum(enc in l for l in text.splitlines()) == 1
    # decide without --prove: nothing on the channel
    res = run_agent(["decide", "--platform", "static", "--replicas", "2", "--namespace",
                     "app1", "--redis-url", r.url()])
    assert res.returncode == 0, res.stderr
    assert_no_secret(res, NASTY)
    # probe checks the bus without publishing
    res = run_agent(["probe", "--platform", "static", "--replicas", "2", "--namespace",
                     "app1", "--redis-url", r.url(), "--timeout", "3s",
                     "--env-file", str(tmp_path / "none.env")])
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert_no_secret(res, NASTY)
    assert len(obs.settle()) == 1


# ---- fake servers for what a real Redis will not do ------------------------

class FakeRedis:
    """A scripted RESP server: counts PUBLISHes; publish_reply is what
    PUBLISH answers; deliver says whether it reaches subscribers;
    subscribe_reply, when set, replaces the SUBSCRIBE answer (raw bytes)."""

    def __init__(self, publish_reply=1, deliver=False, subscribe_reply=None,
                 flood=False, replies=None):
        self.publish_reply, self.deliver = publish_reply, deliver
        self.subscribe_reply = subscribe_reply
        # replies: {"HELLO": raw bytes, or a function of the command}
        self.replies, self.seen = replies or {}, []
        # flood: after the subscription, messages on the channel without
        # a pause (never the envelope), for at most FLOOD_S seconds
        self.flood, self.flooded = flood, 0
        self.publishes, self.subs, self.lock = 0, [], threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop, self.conns = False, []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        from redisfix import RespReader
        rd = RespReader(c)
        try:
            while True:
                cmd = rd.read()
                name = cmd[0].decode().upper()
                self.seen.append(name)
                if name in self.replies:
                    rep = self.replies[name]
                    c.sendall(rep(cmd) if callable(rep) else rep)
                elif name == "SUBSCRIBE":
                    if self.subscribe_reply is not None:
                        c.sendall(self.subscribe_reply)
                        continue
                    with self.lock:
                        self.subs.append(c)
                    ch = cmd[1]
                    c.sendall(b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(ch), ch))
                    if self.flood:
                        threading.Thread(target=self._flood, args=(c, ch),
                                         daemon=True).start()
                elif name == "PUBLISH":
                    with self.lock:
                        self.publishes += 1
                        subs = list(self.subs)
                    if self.deliver:
                        ch, m = cmd[1], cmd[2]
                        for s in subs:
                            s.sendall(b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" %
                                      (len(ch), ch, len(m), m))
                    c.sendall(b":%d\r\n" % self.publish_reply)
                elif name == "PING":
                    c.sendall(b"+PONG\r\n")
                else:
                    c.sendall(b"+OK\r\n")
        except (OSError, ConnectionError, ValueError, IndexError):
            pass

    FLOOD_S = 30

    def _flood(self, c, ch):
        m = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$5\r\nnoise\r\n" % (len(ch), ch)
        batch, t0 = m * 200, time.monotonic()
        try:
            while not self.stop and time.monotonic() - t0 < self.FLOOD_S:
                c.sendall(batch)
                self.flooded += 200
        except OSError:
            pass

    def close(self):
        self.stop = True
        self.t.join(2)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


def test_delivered_but_not_received_never_republishes():
    f = FakeRedis(publish_reply=1, deliver=False)
    try:
        t0 = time.monotonic()
        res = prove("redis://127.0.0.1:%d" % f.port, timeout="3s")
        assert res.returncode == 69, res.stderr
        assert "envelope not received" in res.stderr
        assert "not retrying" in res.stderr and "at most one per start" in res.stderr
        assert f.publishes == 1
        assert time.monotonic() - t0 < 3 + 1.5 * SLOW
    finally:
        f.close()


def test_zero_receivers_may_republish():
    f = FakeRedis(publish_reply=0, deliver=False)
    try:
        res = prove("redis://127.0.0.1:%d" % f.port, timeout="2500ms")
        assert res.returncode == 69
        last = res.stderr.strip().splitlines()[-1]
        assert "envelope not received" in last and "0 receivers" in last
        assert "different servers" in last
        # PUBLISH said nobody got it: the retry is allowed to publish
        assert f.publishes >= 2, f.publishes
    finally:
        f.close()


def test_fake_that_delivers_is_proven():
    f = FakeRedis(publish_reply=1, deliver=True)
    try:
        assert_proven(prove("redis://127.0.0.1:%d" % f.port))
        assert f.publishes == 1
    finally:
        f.close()


def test_timeout_holds_under_a_push_flood():
    # issue 21 item 2: messages that are not the envelope keep the socket
    # readable; the deadline is checked on every reply, so --timeout holds.
    f = FakeRedis(publish_reply=1, deliver=False, flood=True)
    try:
        t0 = time.monotonic()
        res = prove("redis://127.0.0.1:%d" % f.port, timeout="2s")
        took = time.monotonic() - t0
        assert_unproven(res, "other messages arrived on it and were skipped",
                        "floods the channel")
        assert f.flooded > 1000, f.flooded
        assert took < 2 + 2.0 * SLOW, "--timeout 2s took %.1f s" % took
        assert f.publishes == 1
    finally:
        f.close()


def test_proven_while_another_client_floods_the_channel(redis_factory):
    # A real redis-server, another client publishing on the proof's channel
    # without a pause: the envelope is found among the other messages.
    r = redis_factory()
    stop, sent = threading.Event(), [0]

    def flood():
        s = r._connect()
        cmd = resp_encode("PUBLISH", "pylon:cluster:bus", "noise" * 20) * 100
        rd = s.makefile("rb")
        t0 = time.monotonic()
        try:
            while not stop.is_set() and time.monotonic() - t0 < 30:
                s.sendall(cmd)
                for _ in range(100):
                    rd.readline()
                sent[0] += 100
        finally:
            s.close()

    t = threading.Thread(target=flood)
    t.start()
    try:
        for _ in range(500):
            if sent[0] >= 1000:
                break
            time.sleep(0.01)
        t0 = time.monotonic()
        res = prove(r.url(), timeout="5s")
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join(35)
    assert_proven(res)
    assert took < 5 + 2.0 * SLOW
    assert sent[0] > 1000


# ---- ?protocol=resp3: proven with HELLO 3 (issue 11) -----------------------

def hello_calls(r):
    info = r.cmd("INFO", "commandstats")
    if isinstance(info, bytes):
        info = info.decode()
    m = re.search(r"cmdstat_hello:calls=(\d+)", info)
    return int(m.group(1)) if m else 0


def test_resp3_url_is_proven_with_hello_3(redis_factory):
    r = redis_factory(requirepass=NASTY, databases=4)
    res = prove(r.url(password=NASTY, db=2) + "?protocol=resp3")
    assert_proven(res)
    assert_no_secret(res, NASTY)
    # HELLO 3 (the answer checked as a RESP3 map), then HELLO 2 back
    assert hello_calls(r) == 2
    # without ?protocol=resp3 no HELLO at all
    r2 = redis_factory()
    assert_proven(prove(r2.url()))
    assert hello_calls(r2) == 0


# (An ACL rule cannot refuse HELLO: Redis exempts it, like AUTH, from ACL
# checks, so "-hello" has no effect; a server that refuses it is faked.)


HELLO2 = b"*2\r\n$5\r\nproto\r\n:2\r\n"


@pytest.mark.parametrize("answer,needle,retried", [
    (b"-ERR unknown command 'HELLO', with args beginning with: '3' \r\n",
     "the server does not speak RESP3", False),
    (b"-NOPROTO unsupported protocol version\r\n", "the server does not speak RESP3", False),
    (b"!37\r\nNOPROTO sorry, this is a blob error..\r\n", "the server does not speak RESP3",
     False),
    (b"*2\r\n$5\r\nproto\r\n:2\r\n", "not a RESP3 map", False),
    (b"%1\r\n$5\r\npro", "read timeout: no answer to HELLO 3", True),
    (b"%1\r\n@x\r\n", "the answer is not RESP3", True),
])
def test_resp3_hello_answers_that_pylon_could_not_use(answer, needle, retried):
    f = FakeRedis(deliver=True, replies={"HELLO": answer})
    try:
        res = prove("redis://127.0.0.1:%d?protocol=resp3" % f.port, timeout="2s")
        assert_unproven(res, needle)
        assert f.seen.count("PUBLISH") == 0 and f.seen.count("SUBSCRIBE") == 0
        if not retried:
            # a server's protocol version does not heal by waiting
            assert "not retried" in res.stderr, res.stderr
            assert f.seen.count("HELLO") == 1
    finally:
        f.close()


def test_resp3_map_then_hello_2_is_proven():
    # A RESP3 map (split over reads by its size: a long server string) is
    # accepted, HELLO 2 turns the connection back to RESP2.
    big = b"x" * 40000
    hello3 = b"%%2\r\n$5\r\nproto\r\n:3\r\n$6\r\nserver\r\n$%d\r\n%s\r\n" % (len(big), big)
    f = FakeRedis(deliver=True, replies={
        "HELLO": lambda cmd: hello3 if cmd[1] == b"3" else HELLO2})
    try:
        assert_proven(prove("redis://127.0.0.1:%d?protocol=resp3" % f.port))
        assert f.seen[:3] == ["HELLO", "HELLO", "SUBSCRIBE"], f.seen
        assert f.seen.count("PUBLISH") == 1
    finally:
        f.close()


def test_oversized_replies_are_refused():
    for reply, want in [(b"*100000\r\n", "larger than"),
                        (b"$99999999\r\n" + b"x" * (5 << 20), "larger than"),
                        # many small elements: 6 MB in one reply
                        (b"*3000\r\n" + (b"$2000\r\n" + b"x" * 2000 + b"\r\n") * 3000,
                         "larger than"),
                        (b"!garbage\r\n", "protocol error")]:
        f = FakeRedis(subscribe_reply=reply)
        try:
            res = prove("redis://127.0.0.1:%d" % f.port, timeout="1s")
            assert_unproven(res, want)
        finally:
            f.close()


# ---- the held session under serve -----------------------------------------

def _get(port, path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=2) as f:
            return f.status, f.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def _wait(cond, timeout, what):
    end = time.monotonic() + timeout * SLOW
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_session_holds_no_subscription_and_reconnects(redis_factory, procs):
    # SPEC 5: in steady state the agent holds one plain connection and no
    # subscription on Pylon's channel, so Pylon's traffic never reaches it.
    r = redis_factory(requirepass=NASTY)
    obs = r.subscribe("sess:cluster:bus")
    port = free_port()
    p = procs.start_agent(["serve", "--platform", "static", "--replicas", "2",
                           "--namespace", "sess", "--redis-url", r.url(),
                           "--interval", "300ms", "--listen", "127.0.0.1:%d" % port])
    _wait(lambda: _get(port, "/readyz")[0] == 200, 15, "/readyz 200")
    time.sleep(0.6 * SLOW)   # the proof's subscription is gone
    big = b'{"instance_id":"other","kind":"change","payload":"' + b"x" * 8000 + b'"}'
    s = r._connect()
    try:
        s.sendall(b"".join(resp_encode("PUBLISH", "sess:cluster:bus", big)
                           for _ in range(128)))
        rd = RespReader(s)
        for _ in range(128):
            assert rd.read() == 1   # the observer only
    finally:
        s.close()
    obs_port = obs.sock.getsockname()[1]
    clients = [l for l in r.cmd("CLIENT", "LIST").decode().splitlines()
               if ("addr=127.0.0.1:%d " % obs_port) not in l and "cmd=client" not in l]
    assert len(clients) == 1, clients            # <= 1 connection held
    assert " sub=0 " in clients[0], clients
    err = []
    threading.Thread(target=lambda: [err.append(l.decode()) for l in p.stderr],
                     daemon=True).start()
    r.cmd("CLIENT", "KILL", "ID", clients[0].split()[0].split("=")[1])
    _wait(lambda: any("bus reconnected" in l for l in list(err)), 15,
          "reconnect after the connection was killed")
    assert any("bus check failed" in l for l in err), err
    # one envelope for the whole life of serve, none for checks/reconnects
    msgs = [m for m in obs.settle() if b"agent_probe" in m]
    assert len(msgs) == 1, msgs
    assert NASTY not in "".join(err)
