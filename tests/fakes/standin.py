#!/usr/bin/env python3
"""A Pylon stand-in: the cluster-bus behaviour of Pylon 0.11.3, nothing else.

It behaves as the released binary measurably does
(../shared/research/pylon-real.md; tests/integration/test_standin_agreement.py
runs both side by side and checks that they agree).  It exists because it
starts in milliseconds and is driven line by line; everything else tests
against the real Pylon.

Environment, read as Pylon reads it:
  PYLON_CLUSTER_BUS        unset or "" -> NoopBus; starts with exactly
                           "redis://" -> Redis bus; "rediss://" -> exit 1 (no
                           TLS in the build); anything else (unix://,
                           redis+unix://, REDIS://, " redis://") -> exit 1
  PYLON_CLUSTER_NAMESPACE  not validated; unset -> "pylon"; "" gives the
                           channel ":cluster:bus"
  PYLON_CLUSTER_REQUIRED   "1": refuses to boot unless DATABASE_URL is
                           Postgres and the bus is set
  DATABASE_URL             only looked at for the rule above
  STANDIN_CRDT_BYTES       size of the crdt snapshot each mutation publishes
                           (default 1024; Pylon's grows with the document)

Boot, as Pylon: a publish connection (AUTH [user] pass, SELECT db when not 0,
CLIENT SETINFO with its errors ignored; no timeout anywhere, so an endpoint
that accepts and never answers hangs the boot forever, with no log line),
then a subscriber thread.  Connection refused, DNS failure, a wrong password:
exit 1, and the log line prints the URL with the password, as Pylon's does.
An ACL that forbids SUBSCRIBE or the channel: it boots anyway and warns
"subscriber connection ended: NOPERM ..." every second (deaf); one that
forbids PUBLISH warns "publish failed (NOPERM ...)" on every mutation (mute).
At run time a lost subscription reconnects with backoff 1, 2, 4 ... 30 s;
what is published meanwhile is lost.  Mutations never fail.

Envelopes {"instance_id", "kind", "payload"}: one mutation publishes a
"change" and a "crdt" ({entity,row_id,snapshot_b64}).  Own envelopes, unknown
kinds (the agent's "agent_probe") and malformed ones are dropped without any
log line.

Control (for tests), line-based, flushed:
  stdin:  mutate <json>      a local change (an insert)
          quit               exit 0 (EOF too)
  stdout: ready instance=<id> bus=<redis|noop> channel=<ch>
          published <json>   (redis; also when the PUBLISH failed, as Pylon
                             answers 201) / local <json> (noop)
          received <json>    a change from another instance
  stderr: Pylon's log lines ("INFO [cluster] ...", "WARN [cluster] ...")

Python 3 standard library only: raw sockets and a minimal RESP codec.
"""
import base64
import json
import os
import secrets
import socket
import sys
import threading
import time
import urllib.parse

KNOWN_KINDS = {"change", "crdt", "presence", "session-changed"}


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(level, msg):
    sys.stderr.write("%s [cluster] %s\n" % (level, msg))
    sys.stderr.flush()


def die(msg):
    sys.stderr.write("Error: %s\n" % msg)
    sys.stderr.flush()
    sys.exit(1)


def enc(*args):
    b = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        b += b"$%d\r\n%s\r\n" % (len(a), a)
    return b


class RespError(Exception):
    pass


class Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("connection closed by server")
        self.buf += d

    def read(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("bad RESP")


def parse_url(url):
    """Only what Pylon 0.11.3 boots with: exactly redis://."""
    if url.startswith("rediss://"):
        die("failed to open the cluster bus: can't connect with TLS, the feature "
            "is not enabled")
    if not url.startswith("redis://"):
        die("PYLON_CLUSTER_BUS=%r is not supported — use relay, redis://, or "
            "rediss://. Refusing to boot." % url)
    u = urllib.parse.urlsplit(url)
    db = u.path.strip("/")
    return {"host": u.hostname or "127.0.0.1", "port": u.port or 6379,
            "user": urllib.parse.unquote(u.username) if u.username else None,
            "password": urllib.parse.unquote(u.password) if u.password else None,
            "db": int(db) if db else 0}


def connect(cfg):
    """One connection the way Pylon opens it: no timeout at all."""
    s = socket.create_connection((cfg["host"], cfg["port"]))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    r = Reader(s)
    cmds = []
    if cfg["password"] is not None:
        cmds.append(["AUTH"] + ([cfg["user"]] if cfg["user"] else []) + [cfg["password"]])
    if cfg["db"]:
        cmds.append(["SELECT", str(cfg["db"])])
    cmds.append(["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"])
    cmds.append(["CLIENT", "SETINFO", "LIB-VER", "0.27.6"])
    s.sendall(b"".join(enc(*c) for c in cmds))
    for c in cmds:
        rep = r.read()
        if isinstance(rep, RespError) and c[0] != "CLIENT":
            s.close()
            raise ConnectionError(str(rep))

    def call(*args):
        s.sendall(enc(*args))
        rep = r.read()
        if isinstance(rep, RespError):
            raise RespError(str(rep))
        return rep
    return s, r, call


class NoopBus:
    name = "noop"

    def publish(self, env):
        pass


class RedisBus:
    name = "redis"

    def __init__(self, url, cfg, channel, on_envelope):
        self.cfg, self.channel, self.on_envelope = cfg, channel, on_envelope
        try:
            self.pub, _, self.pub_call = connect(cfg)
        except (OSError, ConnectionError) as e:
            # Pylon's crash line: the whole URL, password included.
            die("failed to connect to the cluster bus at %s: %s" % (url, e))
        self.lock = threading.Lock()
        threading.Thread(target=self._subscriber, daemon=True).start()

    def _subscribe_once(self):
        s, r, call = connect(self.cfg)
        try:
            s.sendall(enc("SUBSCRIBE", self.channel))
            rep = r.read()
            if isinstance(rep, RespError):
                raise RespError(str(rep))
            log("INFO", "redis subscriber listening on channel %s" % self.channel)
            while True:
                m = r.read()
                if isinstance(m, list) and len(m) == 3 and m[0] == b"message":
                    self.on_envelope(m[2])
        finally:
            s.close()

    def _subscriber(self):
        backoff = 1
        while True:
            try:
                self._subscribe_once()
            except RespError as e:
                # NOPERM and the like: retried every second, forever (deaf)
                log("WARN", "subscriber connection ended: %s" % e)
                time.sleep(1)
                continue
            except (OSError, ConnectionError, ValueError) as e:
                log("WARN", "subscriber connection ended: %s; reconnecting in %ds" %
                    (e, backoff))
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)

    def publish(self, env):
        with self.lock:
            try:
                self.pub_call("PUBLISH", self.channel, env)
                return True
            except RespError as e:
                log("WARN", "publish failed (%s)" % e)
            except (OSError, ConnectionError, ValueError) as e:
                log("WARN", "publish failed (%s)" % e)
                try:
                    self.pub, _, self.pub_call = connect(self.cfg)
                except (OSError, ConnectionError):
                    pass
            return False


def boot_rules(url):
    if os.environ.get("PYLON_CLUSTER_REQUIRED") == "1":
        db = os.environ.get("DATABASE_URL", "")
        if not url or not db.startswith(("postgres://", "postgresql://")):
            die("PYLON_CLUSTER_REQUIRED needs a Postgres DATABASE_URL. Horizontal "
                "scaling cannot use local SQLite job and workflow stores.")


def main():
    instance = "pylon-" + secrets.token_hex(4)
    ns = os.environ.get("PYLON_CLUSTER_NAMESPACE")
    channel = ("pylon" if ns is None else ns) + ":cluster:bus"
    url = os.environ.get("PYLON_CLUSTER_BUS") or ""
    crdt_bytes = int(os.environ.get("STANDIN_CRDT_BYTES", "1024"))
    boot_rules(url)

    def on_envelope(raw):
        try:
            env = json.loads(raw)
        except ValueError:
            return
        if not isinstance(env, dict) or not all(k in env for k in
                                                ("instance_id", "kind", "payload")):
            return
        if env["instance_id"] == instance or env["kind"] not in KNOWN_KINDS:
            return
        if env["kind"] == "change":
            out("received " + json.dumps(env["payload"], sort_keys=True,
                                         separators=(",", ":")))

    if url:
        bus = RedisBus(url, parse_url(url), channel, on_envelope)
        log("INFO", 'redis bus connected — channel="%s" instance_id=%s' % (channel, instance))
    else:
        bus = NoopBus()
        log("INFO", "PYLON_CLUSTER_BUS unset — running with single-machine fanout (NoopBus)")
    out("ready instance=%s bus=%s channel=%s" % (instance, bus.name, channel))

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line == "quit":
            break
        cmd, _, arg = line.partition(" ")
        if cmd != "mutate":
            sys.stderr.write("standin: unknown command %r\n" % cmd)
            continue
        try:
            payload = json.loads(arg)
        except ValueError:
            sys.stderr.write("standin: bad json\n")
            continue
        p = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if isinstance(bus, NoopBus):
            out("local " + p)
            continue
        row = secrets.token_hex(8)
        bus.publish(json.dumps({"instance_id": instance, "kind": "change",
                                "payload": payload}, separators=(",", ":")))
        snap = base64.b64encode(os.urandom(crdt_bytes)).decode()
        bus.publish(json.dumps({"instance_id": instance, "kind": "crdt", "payload": {
            "entity": "Note", "row_id": row, "snapshot_b64": snap}}, separators=(",", ":")))
        out("published " + p)
    sys.exit(0)


if __name__ == "__main__":
    main()
