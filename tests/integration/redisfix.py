"""Real redis-server processes for tests, on free loopback ports.

    from redisfix import RedisServer, redis_factory, make_tls_material

    def test_x(redis_factory):
        r = redis_factory(requirepass="p@ss w", users=["alice on >pw ~* &ns:* +@all"])
        r.url(user="alice", password="pw", db=3)     # percent-encoded for you
        r.cmd("PUBLISH", "ns:cluster:bus", "x")      # raw RESP over a socket
        sub = r.subscribe("ns:cluster:bus")          # background subscriber
        r.restart()                                  # same port (and socket)

Options: requirepass, users (ACL rules, one string per user, as for the
`user` config directive), tls (a TLSMaterial: CA + server cert made at
test time with python3-cryptography, else the openssl CLI), unixsocket
(True: a socket in the server's directory), databases, port, extra
(config lines), bind (default "127.0.0.1"; "127.0.0.1 ::1" for IPv6 too).  Every server is pid-tracked and stopped (SIGTERM, then
SIGKILL) when the fixture ends, also when the test fails.  Every wait is
bounded.
"""
import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

from conftest import SLOW, free_port

REDIS_SERVER = shutil.which("redis-server")


def _q(v):
    """Quotes a value for redis.conf (sdssplitargs syntax)."""
    out = '"'
    for o in str(v).encode():
        ch = chr(o)
        if ch in '"\\':
            out += "\\" + ch
        elif o < 0x20 or o >= 0x7f:
            out += "\\x%02x" % o
        else:
            out += ch
    return out + '"'


# ---- TLS material ---------------------------------------------------------

class TLSMaterial:
    """A CA and a server certificate signed by it, in files under dir."""

    def __init__(self, dir, ca, cert, key, subject, host):
        self.dir, self.ca, self.cert, self.key = dir, ca, cert, key
        self.subject, self.host = subject, host


def make_tls_material(dir, cn="localhost", sans=("localhost", "127.0.0.1"),
                      ca_name="pylon-agent test CA"):
    """Writes ca.pem, server.pem, server.key under dir (created)."""
    os.makedirs(dir, exist_ok=True)
    ca_p, crt_p, key_p = (os.path.join(dir, n) for n in ("ca.pem", "server.pem", "server.key"))
    try:
        _make_tls_cryptography(ca_p, crt_p, key_p, cn, sans, ca_name)
    except ImportError:
        _make_tls_openssl(dir, ca_p, crt_p, key_p, cn, sans, ca_name)
    return TLSMaterial(dir, ca_p, crt_p, key_p, "CN=%s" % cn, sans[0])


def _make_tls_cryptography(ca_p, crt_p, key_p, cn, sans, ca_name):
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name_x = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name_x).issuer_name(ca_name_x)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt = []
    for s in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            alt.append(x509.DNSName(s))
    crt = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .issuer_name(ca_name_x).public_key(key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5))
           .not_valid_after(now + datetime.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName(alt), critical=False)
           .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                          critical=False)
           .sign(ca_key, hashes.SHA256()))
    with open(ca_p, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(crt_p, "wb") as f:
        f.write(crt.public_bytes(serialization.Encoding.PEM))
    with open(key_p, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(key_p, 0o600)


def _make_tls_openssl(dir, ca_p, crt_p, key_p, cn, sans, ca_name):
    ca_key = os.path.join(dir, "ca.key")
    csr = os.path.join(dir, "server.csr")
    ext = os.path.join(dir, "ext.cnf")
    alt = ",".join(("IP:" if s.replace(".", "").replace(":", "").isalnum() and
                    any(c.isdigit() for c in s) and not any(c.isalpha() for c in s.replace(":", ""))
                    else "DNS:") + s for s in sans)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % alt)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=30)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", ca_key, "-out", ca_p, "-days", "2", "-subj", "/CN=" + ca_name)
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key_p, "-out", csr, "-subj", "/CN=" + cn)
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_p, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt_p, "-days", "2", "-extfile", ext)


# ---- a minimal RESP client ------------------------------------------------

def resp_encode(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class RespError(Exception):
    pass


class RespReader:
    """Parses RESP2 replies from a socket (bytes in, Python values out)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _n(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("connection closed")
            self.buf += d
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._n(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("bad RESP type %r" % t)


class Subscriber:
    """SUBSCRIBEs on its own connection (before returning) and records
    every message of the channel in a background thread."""

    def __init__(self, server, channel, user=None, password=None):
        self.channel, self.messages, self._stop = channel, [], False
        self.sock = server._connect(user, password)
        self.reader = RespReader(self.sock)
        self.sock.sendall(resp_encode("SUBSCRIBE", channel))
        rep = self.reader.read()
        if not (isinstance(rep, list) and rep[0] == b"subscribe"):
            raise RuntimeError("SUBSCRIBE failed: %r" % (rep,))
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                m = self.reader.read()
            except socket.timeout:
                continue
            except (OSError, ConnectionError, ValueError):
                return
            if isinstance(m, list) and len(m) == 3 and m[0] == b"message":
                with self.lock:
                    self.messages.append(m[2])

    def wait_count(self, n, timeout=5.0):
        end = time.monotonic() + timeout * SLOW
        while time.monotonic() < end:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        with self.lock:
            return list(self.messages)

    def settle(self, quiet=0.3):
        """Returns the messages after a quiet period with nothing new."""
        time.sleep(quiet * SLOW)
        with self.lock:
            return list(self.messages)

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(timeout=2)


# ---- the server -----------------------------------------------------------

class RedisServer:
    def __init__(self, workdir, requirepass=None, users=(), tls=None, unixsocket=False,
                 databases=16, port=None, extra=(), bind="127.0.0.1"):
        if REDIS_SERVER is None:
            pytest.skip("redis-server not installed (make deps installs redis-server)")
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=workdir)
        self.requirepass, self.users, self.tls = requirepass, list(users), tls
        self.port = port or free_port()
        self.unixsocket = os.path.join(self.dir, "redis.sock") if unixsocket else None
        self.databases, self.extra, self.bind = databases, list(extra), bind
        self.proc = None
        self.log = os.path.join(self.dir, "redis.log")
        self._subs = []
        self._write_conf()

    def _write_conf(self):
        lines = [
            "bind %s" % self.bind,
            "protected-mode no",
            "save %s" % _q(""),
            "appendonly no",
            "dir %s" % _q(self.dir),
            "logfile %s" % _q(self.log),
            "databases %d" % self.databases,
            "daemonize no",
        ]
        if self.tls:
            lines += ["port 0", "tls-port %d" % self.port,
                      "tls-cert-file %s" % _q(self.tls.cert),
                      "tls-key-file %s" % _q(self.tls.key),
                      "tls-ca-cert-file %s" % _q(self.tls.ca),
                      "tls-auth-clients no"]
        else:
            lines.append("port %d" % self.port)
        if self.unixsocket:
            lines += ["unixsocket %s" % _q(self.unixsocket), "unixsocketperm 700"]
        if self.requirepass is not None:
            lines.append("requirepass %s" % _q(self.requirepass))
        for u in self.users:
            lines.append("user " + " ".join(_q(w) for w in u.split()))
        lines += list(self.extra)
        self.conf = os.path.join(self.dir, "redis.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf, 0o600)

    # lifecycle
    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen([REDIS_SERVER, self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + timeout * SLOW
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited %s: %s" % (self.proc.returncode,
                                                                    self._log_tail()))
            try:
                if self._ready():
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError("redis-server did not answer within %.0fs: %s" %
                           (timeout, self._log_tail()))

    def _ready(self):
        if self.tls and any("tls-auth-clients yes" in e for e in self.extra):
            # no client certificate here: a TCP accept is all we can see
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        return self.ping()

    def _log_tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        for s in self._subs:
            s.close()
        self._subs = []
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(sig)
            p.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass

    def kill(self):
        self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # URLs
    def url(self, user=None, password=None, db=None, scheme=None, unix=False, insecure=False,
            host="127.0.0.1"):
        """The URL a client uses; user and password are percent-encoded.
        password=None uses requirepass when the user is None."""
        if password is None and user is None:
            password = self.requirepass
        if unix:
            q = []
            if db is not None:
                q.append("db=%d" % db)
            if user is not None:
                q.append("user=" + urllib.parse.quote(user, safe=""))
            if password is not None:
                q.append("pass=" + urllib.parse.quote(password, safe=""))
            return "%s://%s%s" % (scheme or "redis+unix", self.unixsocket,
                                  ("?" + "&".join(q)) if q else "")
        auth = ""
        if user is not None or password is not None:
            auth = urllib.parse.quote(user or "", safe="")
            if password is not None:
                auth += ":" + urllib.parse.quote(password, safe="")
            auth += "@"
        h = "[%s]" % host if ":" in host else host
        u = "%s://%s%s:%d" % (scheme or ("rediss" if self.tls else "redis"), auth, h, self.port)
        if db is not None:
            u += "/%d" % db
        if insecure:
            u += "#insecure"
        return u

    # raw client
    def _connect(self, user=None, password=None, timeout=5.0):
        if self.unixsocket and not self.tls:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unixsocket)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            if self.tls:
                ctx = ssl.create_default_context(cafile=self.tls.ca)
                s = ctx.wrap_socket(s, server_hostname=self.tls.host)
        if password is None and user is None:
            password = self.requirepass
        if password is not None:
            args = ["AUTH"] + ([user] if user else []) + [password]
            s.sendall(resp_encode(*args))
            rep = RespReader(s).read()
            if isinstance(rep, RespError):
                s.close()
                raise RuntimeError("AUTH failed: %s" % rep)
        return s

    def cmd(self, *args, user=None, password=None):
        s = self._connect(user, password)
        try:
            s.sendall(resp_encode(*args))
            rep = RespReader(s).read()
        finally:
            s.close()
        if isinstance(rep, RespError):
            raise rep
        return rep

    def ping(self):
        try:
            return self.cmd("PING") == "PONG"
        except (OSError, RuntimeError, RespError, ValueError, ConnectionError):
            return False

    def subscribe(self, channel, user=None, password=None):
        s = Subscriber(self, channel, user, password)
        self._subs.append(s)
        return s


@pytest.fixture
def redis_factory(tmp_path):
    """redis_factory(**options) -> a started RedisServer; all stopped at
    teardown."""
    servers = []

    def make(start=True, **kw):
        r = RedisServer(str(tmp_path), **kw)
        servers.append(r)
        return r.start() if start else r

    try:
        yield make
    finally:
        for r in reversed(servers):
            r.stop()
