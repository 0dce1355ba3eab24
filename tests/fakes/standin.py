#!/usr/bin/env python3
"""A Pylon stand-in: the cluster-bus behaviour of a Pylon process, nothing else.

It reads the environment exactly as Pylon does:
  PYLON_CLUSTER_BUS        unset/empty -> NoopBus (fanout in-process only);
                           set -> Redis bus; unreachable -> fatal, exit 1
  PYLON_CLUSTER_NAMESPACE  channel prefix, default "pylon";
                           channel "<ns>:cluster:bus"
Envelope: {"instance_id": ..., "kind": ..., "payload": {...}}.  Envelopes with
its own instance_id and unknown kinds (e.g. the agent's "agent_probe") are
skipped.

Control (for tests), line-based, flushed:
  stdin:  mutate <json>      a local change: publish a "change" envelope
          quit               exit 0 (EOF too)
  stdout: ready instance=<id> bus=<redis|noop> channel=<ch>
          published <json>   (redis) / local <json> (noop)
          received <json>    a change from another instance
  stderr: skipped own|kind=<k>, fatal errors

Python 3 standard library only: raw sockets (+ssl) and a minimal RESP codec.
"""
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import urllib.parse

KNOWN_KINDS = {"change"}


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(line):
    sys.stderr.write("[standin] " + line + "\n")
    sys.stderr.flush()


def fatal(msg):
    err("fatal: " + msg)
    sys.exit(1)


def enc(*args):
    b = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        b += b"$%d\r\n%s\r\n" % (len(a), a)
    return b


class Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("the Redis server closed the connection")
        self.buf += d

    def read(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Exception(rest.decode())
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
    """The URL forms Pylon's Redis client accepts."""
    u = urllib.parse.urlsplit(url)
    cfg = {"tls": False, "insecure": u.fragment == "insecure", "db": 0,
           "user": None, "password": None}
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    if u.scheme in ("redis", "rediss"):
        cfg["tls"] = u.scheme == "rediss"
        cfg["host"] = u.hostname
        cfg["port"] = u.port or 6379
        if u.username:
            cfg["user"] = urllib.parse.unquote(u.username)
        if u.password:
            cfg["password"] = urllib.parse.unquote(u.password)
        if u.path.strip("/"):
            cfg["db"] = int(u.path.strip("/"))
        if "insecure" in q:
            cfg["insecure"] = True
    elif u.scheme in ("redis+unix", "unix"):
        cfg["path"] = urllib.parse.unquote(u.path)
        cfg["db"] = int(q.get("db", ["0"])[0] or 0)
        cfg["user"] = q.get("user", [None])[0] or None
        cfg["password"] = q.get("pass", [None])[0] or None
    else:
        raise ValueError("unsupported scheme %r" % u.scheme)
    return cfg


def connect(cfg, timeout=5.0):
    if "path" in cfg:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(cfg["path"])
    else:
        s = socket.create_connection((cfg["host"], cfg["port"]), timeout=timeout)
        if cfg["tls"]:
            ctx = ssl.create_default_context(cafile=os.environ.get("STANDIN_CA_FILE"))
            if cfg["insecure"]:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=cfg["host"])
    r = Reader(s)

    def call(*args):
        s.sendall(enc(*args))
        rep = r.read()
        if isinstance(rep, Exception):
            raise ConnectionError("%s: %s" % (args[0], rep))
        return rep

    if cfg["password"] is not None:
        call(*(["AUTH"] + ([cfg["user"]] if cfg["user"] else []) + [cfg["password"]]))
    if cfg["db"]:
        call("SELECT", str(cfg["db"]))
    return s, r, call


class NoopBus:
    name = "noop"

    def publish(self, env):
        pass


class RedisBus:
    name = "redis"

    def __init__(self, url, channel, on_envelope):
        cfg = parse_url(url)
        self.channel = channel
        self.sub, self.sub_reader, sub_call = connect(cfg)
        rep = sub_call("SUBSCRIBE", channel)
        if not (isinstance(rep, list) and rep[0] == b"subscribe"):
            raise ConnectionError("SUBSCRIBE failed: %r" % (rep,))
        self.pub, _, self.pub_call = connect(cfg)
        self.lock = threading.Lock()
        self.sub.settimeout(None)
        t = threading.Thread(target=self._listen, args=(on_envelope,), daemon=True)
        t.start()

    def _listen(self, on_envelope):
        try:
            while True:
                m = self.sub_reader.read()
                if isinstance(m, list) and len(m) == 3 and m[0] == b"message":
                    on_envelope(m[2])
        except (OSError, ConnectionError, ValueError) as e:
            err("subscription lost: %s" % e)
            os._exit(3)

    def publish(self, env):
        with self.lock:
            self.pub_call("PUBLISH", self.channel, env)


def main():
    instance = "standin-" + secrets.token_hex(4)
    ns = os.environ.get("PYLON_CLUSTER_NAMESPACE") or "pylon"
    channel = ns + ":cluster:bus"
    url = os.environ.get("PYLON_CLUSTER_BUS") or ""

    def on_envelope(raw):
        try:
            env = json.loads(raw)
        except ValueError:
            err("skipped malformed envelope")
            return
        if not isinstance(env, dict):
            err("skipped malformed envelope")
            return
        if env.get("instance_id") == instance:
            err("skipped own")
            return
        if env.get("kind") not in KNOWN_KINDS:
            err("skipped kind=%s" % env.get("kind"))
            return
        out("received " + json.dumps(env.get("payload"), sort_keys=True,
                                     separators=(",", ":")))

    if url:
        try:
            bus = RedisBus(url, channel, on_envelope)
        except (OSError, ConnectionError, ValueError) as e:
            # Pylon refuses to boot when the bus is set but unreachable.
            fatal("PYLON_CLUSTER_BUS is set but the cluster bus is unreachable: %s" %
                  (str(e).replace(url, "<url>")))
    else:
        bus = NoopBus()
    out("ready instance=%s bus=%s channel=%s" % (instance, bus.name, channel))

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line == "quit":
            break
        cmd, _, arg = line.partition(" ")
        if cmd != "mutate":
            err("unknown command %r" % cmd)
            continue
        try:
            payload = json.loads(arg)
        except ValueError:
            err("bad json")
            continue
        p = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if isinstance(bus, NoopBus):
            out("local " + p)
            continue
        env = json.dumps({"instance_id": instance, "kind": "change", "payload": payload},
                         separators=(",", ":"))
        try:
            bus.publish(env)
        except (OSError, ConnectionError) as e:
            fatal("publish failed: %s" % e)
        out("published " + p)
    sys.exit(0)


if __name__ == "__main__":
    main()
