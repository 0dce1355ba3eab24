"""The real Pylon 0.11.3 for tests: cache, private network namespace,
Postgres, Pylon processes (alone or through pylon-agent) and a client.

    from realpylon import (cache_root, private_netns, Postgres, Pylon,
                           PylonPorts, make_app, guest_token, insert, WSClient)

    with private_netns():                      # this process and its children
        r = RedisServer(dir, requirepass="pw").start()   # redisfix, in the netns
        app = make_app(dir)                    # app.ts printing the manifest
        a = Pylon(dir, app, port=ports.next(), agent_args=["exec", "--platform",
                  "static", "--replicas", "2", "--redis-url-file", f,
                  "--cluster-required=false", "--"], env=env)
        # (redis mode hands Pylon PYLON_CLUSTER_REQUIRED=1, which needs a
        #  Postgres DATABASE_URL: pass Postgres(dir).start().url() in env,
        #  or --cluster-required=false as here)
        a.start(); a.wait_health()
        tok = guest_token(a.port)
        ws = WSClient(b.port, tok)             # collects frames in a thread
        insert(a.port, tok, "Note", {"body": "x"})
        ws.wait_for("x")
        a.stop()                               # SIGTERM by pid, bounded

Pylon runs unmodified in the cached Debian 13 root (it needs glibc >= 2.38)
through tests/integration/pylon-chroot.sh, which mounts /proc and /dev in a
mount namespace of its own and chroots; the agent (when given) runs on the
host side and execs that wrapper, so the pid started is Pylon's pid.

Pylon binds every interface and has no bind option, so everything that
starts it runs in a private network namespace: `private_netns()` moves the
calling process (pytest) into a fresh one with only `lo` up, and back to
the original one on exit; Redis, Postgres, the agent, Pylon and the test's
own HTTP/WebSocket client all live there.  Needs root (CAP_SYS_ADMIN).

Python standard library only (the WebSocket client is a minimal RFC 6455
client).  Every wait is bounded; every process is stopped by pid.
"""
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WRAPPER = os.path.join(HERE, "pylon-chroot.sh")
PYLON_IN_ROOT = "/opt/pylon/bin/pylon"
PG_BIN = "/usr/lib/postgresql/15/bin"
CORS_ORIGIN = "http://pylon-agent-tests.invalid"

_root = None


def cache_root():
    """Builds the cache once (scripts/pylon-cache.sh) and returns the root."""
    global _root
    if _root is None:
        p = subprocess.run([os.path.join(REPO, "scripts", "pylon-cache.sh")],
                           capture_output=True, text=True, timeout=1800)
        roots = [l[5:] for l in p.stdout.splitlines() if l.startswith("root=")]
        if p.returncode != 0 or not roots:
            raise RuntimeError("scripts/pylon-cache.sh failed (exit %d): %s"
                               % (p.returncode, p.stderr[-2000:]))
        _root = roots[-1]
    return _root


# ---- the network namespace ------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def private_netns():
    """Moves this process into a fresh network namespace (lo up) and back."""
    old = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "unshare(CLONE_NEWNET): %s (needs root)" % os.strerror(e))
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10,
                           capture_output=True)
            yield
        finally:
            if _libc.setns(old, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "setns back to the host network: %s" % os.strerror(e))
    finally:
        os.close(old)


def netns_inode(pid="self"):
    return os.stat("/proc/%s/ns/net" % pid).st_ino


class PylonPorts:
    """Ports for Pylon instances, 10 apart (--port N takes N..N+3)."""

    def __init__(self, base=14000):
        self.n = base

    def next(self):
        for _ in range(200):
            p, self.n = self.n, self.n + 10
            if all(_port_free(p + i) for i in range(4)):
                return p
        raise RuntimeError("no 4 free ports in a row from %d" % self.n)


def _port_free(p):
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        try:
            s.bind(("::", p))
            return True
        except OSError:
            return False


# ---- the app --------------------------------------------------------------

def manifest(name="rp-test", entity="Note"):
    return {
        "manifest_version": 1, "name": name, "version": "0.0.1",
        "routes": [], "queries": [], "actions": [],
        "entities": [{"name": entity, "indexes": [], "fields": [
            {"name": "body", "type": "string", "optional": False, "unique": False}]}],
        "policies": [{"name": "open_" + entity.lower(), "entity": entity,
                      "allowRead": "true", "allowInsert": "true",
                      "allowUpdate": "true", "allowDelete": "true"}],
    }


def make_app(parent, name="rp-test", entity="Note"):
    """A fresh app dir holding an app.ts that prints the manifest JSON
    (`pylon start app.ts` runs `bun run -- app.ts` to get it)."""
    d = tempfile.mkdtemp(prefix="pylon-app-", dir=parent)
    with open(os.path.join(d, "app.ts"), "w") as f:
        f.write("console.log(JSON.stringify(%s));\n" % json.dumps(manifest(name, entity)))
    os.chmod(d, 0o755)
    return d


def pylon_env(base=None, **extra):
    """The environment Pylon needs to boot outside dev mode, on top of base
    (default: the caller's, minus PYLON_*), plus extra (None removes)."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if base is not None or not k.startswith(("PYLON_", "FLY_", "KUBERNETES_"))}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if "/usr/local/bin" not in env["PATH"].split(":"):
        env["PATH"] = "/usr/local/bin:" + env["PATH"]
    env["PYLON_CORS_ORIGIN"] = CORS_ORIGIN
    env["PYLON_DEV_MODE"] = "false"
    env["NO_COLOR"] = "1"
    env["RUST_LOG_STYLE"] = "never"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


# ---- a Pylon process ------------------------------------------------------

class Pylon:
    """One `pylon start app.ts --port N`, alone or behind pylon-agent.

    agent_args: None -> Pylon alone; else argv of the agent up to and
    including "--" (e.g. [AGENT, "exec", "--env-file", f, "--"]); the
    wrapper and Pylon's argv follow.  stdout+stderr go to self.log_path.
    """

    def __init__(self, workdir, app, port, env=None, agent_args=None, pylon_args=()):
        self.app, self.port = app, port
        self.env = env if env is not None else pylon_env()
        self.agent_args = list(agent_args) if agent_args else None
        self.pylon_args = list(pylon_args)
        self.log_path = os.path.join(workdir, "pylon-%d.log" % port)
        self.proc = None

    def argv(self):
        cmd = [WRAPPER, cache_root(), self.app, PYLON_IN_ROOT, "start", "app.ts",
               "--port", str(self.port)] + self.pylon_args
        return (self.agent_args or []) + cmd

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def health(self, timeout=1.0):
        """(status, body) of GET /health, or None when nothing answers."""
        try:
            return http("GET", self.port, "/health", timeout=timeout)
        except (OSError, ValueError):
            return None

    def wait_health(self, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("Pylon on :%d exited %s before /health:\n%s"
                                   % (self.port, self.proc.returncode, self.log()[-3000:]))
            h = self.health(timeout=0.5)
            if h and h[0] == 200:
                return h
            time.sleep(0.05)
        raise TimeoutError("Pylon on :%d: no /health within %.0fs:\n%s"
                           % (self.port, timeout, self.log()[-3000:]))

    def wait_log(self, needle, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.log():
                return True
            time.sleep(0.05)
        return False

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def environ(self):
        """Pylon's environment, read from /proc/<pid>/environ (the wrapper
        execs all the way, so the pid is Pylon's)."""
        with open("/proc/%d/environ" % self.pid, "rb") as f:
            raw = f.read()
        return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0")
                    if "=" in kv)

    def comm(self):
        with open("/proc/%d/comm" % self.pid) as f:
            return f.read().strip()

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        return p.returncode if p else None


class Pylons:
    """Every Pylon a test or module started; stop_all() at teardown."""

    def __init__(self, workdir, ports=None):
        self.workdir, self.ports = workdir, ports or PylonPorts()
        self.items = []

    def start(self, app, env=None, agent_args=None, port=None, wait=True, **kw):
        p = Pylon(self.workdir, app, port or self.ports.next(), env=env,
                  agent_args=agent_args, **kw)
        self.items.append(p)
        p.start()
        if wait:
            p.wait_health()
        return p

    def stop_all(self):
        for p in reversed(self.items):
            p.stop()


# ---- Postgres -------------------------------------------------------------

class Postgres:
    """A throwaway PostgreSQL 15 cluster (Debian's binaries) on 127.0.0.1:port,
    trust auth, run as the postgres user when we are root."""

    def __init__(self, workdir, port=None):
        self.dir = tempfile.mkdtemp(prefix="pg-", dir=workdir)
        self.data = os.path.join(self.dir, "data")
        self.port = port or _free_tcp_port()
        self.log = os.path.join(self.dir, "pg.log")
        self.started = False
        self._pre = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            for d in (workdir, self.dir):
                os.chmod(d, os.stat(d).st_mode | 0o711)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._pre = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv, timeout=60):
        return subprocess.run(self._pre + list(argv), capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir)

    def start(self):
        p = self._run(os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A", "trust",
                      "-U", "postgres", "--no-sync", "-E", "UTF8")
        if p.returncode:
            raise RuntimeError("initdb failed: %s" % p.stderr[-2000:])
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.dir)
        p = self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                      "-o", opts, "-w", "-t", "30", "start")
        if p.returncode:
            raise RuntimeError("pg_ctl start failed: %s %s" % (p.stderr[-1000:],
                                                               self._log_tail()))
        self.started = True
        return self

    def _log_tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def url(self, db="postgres"):
        return "postgres://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def createdb(self, name):
        p = self._run(os.path.join(PG_BIN, "postgres"), "--version")
        p = self._run("/usr/bin/psql" if os.path.exists("/usr/bin/psql") else
                      os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", "postgres", "-d", "postgres", "-c", 'CREATE DATABASE "%s"' % name)
        if p.returncode:
            raise RuntimeError("CREATE DATABASE failed: %s" % p.stderr)
        return self.url(name)

    def stop(self):
        if self.started:
            self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                      "-w", "-t", "20", "stop")
            self.started = False


def _free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a silent endpoint ----------------------------------------------------

class SilentServer:
    """Accepts TCP connections on 127.0.0.1:port and never sends a byte
    (a Redis that hangs)."""

    def __init__(self, port=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns, self._stop = [], False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self._stop = True
        self.thread.join(timeout=2)
        for c in self.conns:
            c.close()
        self.sock.close()


# ---- the client -----------------------------------------------------------

def http(method, port, path, body=None, token=None, timeout=5.0, host="127.0.0.1"):
    """(status, parsed JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://%s:%d%s" % (host, port, path), data=data,
                                 method=method)
    req.add_header("Origin", CORS_ORIGIN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def guest_token(port):
    st, body = http("POST", port, "/api/auth/guest", body={})
    if st >= 300 or not isinstance(body, dict) or "token" not in body:
        raise RuntimeError("POST /api/auth/guest on :%d: %s %r" % (port, st, body))
    return body["token"]


def insert(port, token, entity, row):
    st, body = http("POST", port, "/api/entities/" + entity, body=row, token=token)
    if st != 201:
        raise RuntimeError("insert on :%d: %s %r" % (port, st, body))
    return body


class WSClient:
    """A minimal RFC 6455 client at /api/sync/ws, subprotocol bearer.<token>,
    collecting text frames (decoded) in a background thread."""

    def __init__(self, port, token, path="/api/sync/ws", timeout=5.0):
        self.port, self.frames, self._stop = port, [], False
        self.lock = threading.Lock()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: bearer.%s\r\nOrigin: %s\r\n\r\n"
               % (path, port, key, token, CORS_ORIGIN))
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(4096)
            if not d:
                raise ConnectionError("WebSocket handshake: connection closed")
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError("WebSocket handshake on :%d: %s" % (port, status.decode()))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _need(self, n):
        while len(self.buf) < n:
            if self._stop:
                raise EOFError
            try:
                d = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not d:
                raise EOFError
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, opcode, payload=b""):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def _run(self):
        msg, mop = b"", None
        try:
            while not self._stop:
                b0, b1 = self._need(2)
                op, n = b0 & 0x0f, b1 & 0x7f
                if n == 126:
                    n = struct.unpack(">H", self._need(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._need(8))[0]
                mask = self._need(4) if b1 & 0x80 else None
                data = self._need(n)
                if mask:
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                if op == 0x9:
                    self._send(0xA, data)
                    continue
                if op == 0x8:
                    return
                if op in (0x1, 0x2):
                    msg, mop = data, op
                elif op == 0x0:
                    msg += data
                else:
                    continue
                if b0 & 0x80:
                    with self.lock:
                        self.frames.append(msg.decode(errors="replace"))
                    msg = b""
        except (EOFError, OSError, ValueError):
            return

    def matching(self, needle):
        with self.lock:
            return [f for f in self.frames if needle in f]

    def wait_for(self, needle, timeout=10.0, count=1):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self.matching(needle)
            if len(m) >= count:
                return m
            time.sleep(0.05)
        return self.matching(needle)

    def settle(self, quiet=1.0):
        time.sleep(quiet)
        with self.lock:
            return list(self.frames)

    def close(self):
        self._stop = True
        try:
            self._send(0x8, b"\x03\xe8")
        except OSError:
            pass
        self.thread.join(timeout=2)
        self.sock.close()


def change_frames(frames, marker):
    """The frames that carry a row change with marker in them (Pylon may
    send other frames: hello, snapshots, presence)."""
    return [f for f in frames if marker in f]
