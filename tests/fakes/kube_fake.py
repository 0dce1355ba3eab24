#!/usr/bin/env python3
"""A fake kube-apiserver for pylon-agent's tests (python3 stdlib + cryptography).

It serves, over TLS with a test CA generated at start and bearer-token or
client-certificate auth, the paths the agent uses, with the real JSON shapes
and Status errors:

  GET   /api/v1/namespaces/NS/pods[/NAME]            (labelSelector, limit/continue)
  PATCH /api/v1/namespaces/NS/pods/NAME              (merge-patch; 415 otherwise)
  GET   /apis/apps/v1/namespaces/NS/{replicasets,deployments,statefulsets}[/NAME]
  GET   /apis/argoproj.io/v1alpha1/namespaces/NS/rollouts[/NAME]   (only with the CRD)
  GET   /apis/autoscaling/v2/namespaces/NS/horizontalpodautoscalers[/NAME]
  POST  /api/v1/namespaces/NS/events, /apis/events.k8s.io/v1/namespaces/NS/events
        (validated like pkg/apis/core/validation/events.go; 409 on duplicates)

Scripted faults per path (403 with the real message, 401, 404, 410, 429 +
Retry-After, 500, hang, garbage, huge body), RBAC denials, token rotation
(the valid token is the content of a file the test rewrites), and a request
log (in memory, and JSON lines in DIR/requests.jsonl).

Use in-process:   fake = KubeFake(tmpdir); fake.add(*deployment_objects(...));
                  fake.start(); ...; fake.stop()
Or as a process:  python3 kube_fake.py --dir D [--scenario S.json]
                  (writes D/port, D/ca.crt, D/token, D/kubeconfig; SIGTERM stops)
"""
import argparse
import base64
import copy
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# kind -> (group, version, plural)
KINDS = {
    "Pod": ("", "v1", "pods"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Rollout": ("argoproj.io", "v1alpha1", "rollouts"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "Event": ("", "v1", "events"),
}
PLURAL_KIND = {v[2]: k for k, v in KINDS.items()}

_PKI = None
_PKI_LOCK = threading.Lock()


def _pki():
    """One CA, server and client certificate per test process (EC P-256)."""
    global _PKI
    with _PKI_LOCK:
        if _PKI:
            return _PKI
        now = datetime.datetime.now(datetime.timezone.utc)

        def pem_key(k):
            return k.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())

        def cert(subject_cn, key, issuer_name, issuer_key, ca=False, sans=None, client=False):
            b = (x509.CertificateBuilder()
                 .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
                 .issuer_name(issuer_name)
                 .public_key(key.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(hours=1))
                 .not_valid_after(now + datetime.timedelta(days=2))
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
            if ca:
                b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                                  False, False), critical=True)
                b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                    critical=False)
            else:
                b = b.add_extension(x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                    critical=False)
                b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer_key.public_key()), critical=False)
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            return b.sign(issuer_key, hashes.SHA256())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-fake-ca")])
        ca_cert = cert("kube-fake-ca", ca_key, ca_name, ca_key, ca=True)
        srv_key = ec.generate_private_key(ec.SECP256R1())
        srv_cert = cert("kube-apiserver", srv_key, ca_name, ca_key, sans=[
            x509.DNSName("localhost"), x509.DNSName("kube.test"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))])
        cli_key = ec.generate_private_key(ec.SECP256R1())
        cli_cert = cert("pylon-client", cli_key, ca_name, ca_key, client=True)
        enc = serialization.Encoding.PEM
        _PKI = {
            "ca.crt": ca_cert.public_bytes(enc),
            "server.crt": srv_cert.public_bytes(enc),
            "server.key": pem_key(srv_key),
            "client.crt": cli_cert.public_bytes(enc),
            "client.key": pem_key(cli_key),
        }
        return _PKI


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def status_body(code, reason, message, details=None):
    b = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details is not None:
        b["details"] = details
    return b


def parse_selector(sel):
    """k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b) -> list of predicates."""
    reqs = []
    parts, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    for p in parts:
        p = p.strip()
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", p)
        if m:
            vals = {v.strip() for v in m.group(3).split(",")}
            if m.group(2) == "in":
                reqs.append(lambda l, k=m.group(1), vs=vals: l.get(k) in vs)
            else:
                reqs.append(lambda l, k=m.group(1), vs=vals: l.get(k) not in vs)
            continue
        m = re.match(r"^([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)$", p)
        if m:
            k, op, v = m.groups()
            if op == "!=":
                reqs.append(lambda l, k=k, v=v: l.get(k) != v)
            else:
                reqs.append(lambda l, k=k, v=v: l.get(k) == v)
            continue
        m = re.match(r"^!\s*([\w./-]+)$", p)
        if m:
            reqs.append(lambda l, k=m.group(1): k not in l)
            continue
        m = re.match(r"^([\w./-]+)$", p)
        if m:
            reqs.append(lambda l, k=m.group(1): k in l)
            continue
        raise ValueError("unable to parse requirement: %r" % p)
    return reqs


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def validate_event(ev, ns, v1beta):
    """Causes like pkg/apis/core/validation/events.go (a subset)."""
    causes = []

    def bad(field, msg, reason="FieldValueInvalid"):
        causes.append({"reason": reason, "message": msg, "field": field})

    md = ev.get("metadata") or {}
    name = md.get("name", "")
    if not name:
        bad("metadata.name", "name or generateName is required", "FieldValueRequired")
    elif len(name) > 253 or not _DNS1123_SUB.match(name):
        bad("metadata.name", "a lowercase RFC 1123 subdomain must consist of lower case "
            "alphanumeric characters, '-' or '.'")
    if md.get("namespace", ns) != ns:
        bad("metadata.namespace", "does not match the namespace of the request")
    if v1beta:
        regarding = ev.get("regarding") or {}
        et = ev.get("eventTime")
        if not et:
            bad("eventTime", "Required value", "FieldValueRequired")
        elif not _MICROTIME.match(et):
            bad("eventTime", "must be RFC 3339 with 6 fractional digits (MicroTime)")
        if ev.get("type") not in ("Normal", "Warning"):
            bad("type", "Unsupported value: %r: supported values: \"Normal\", \"Warning\""
                % ev.get("type"), "FieldValueNotSupported")
        for f in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount",
                  "deprecatedSource"):
            if ev.get(f):
                bad(f, "needs to be unset", "FieldValueForbidden")
        note = ev.get("note", "")
        if len(note) > 1024:
            bad("note", "can have at most 1024 characters", "FieldValueTooLong")
        if regarding.get("namespace") not in (None, "", ns):
            bad("regarding.namespace", "does not match event.namespace")
    else:
        regarding = ev.get("involvedObject") or {}
        et = ev.get("eventTime")
        if not et and regarding.get("namespace", ns) != ns:
            bad("involvedObject.namespace", "does not match event.namespace")
        if len(ev.get("message", "")) > 1024:
            bad("message", "can have at most 1024 characters", "FieldValueTooLong")
    if ev.get("eventTime"):
        rc = ev.get("reportingController") if v1beta else ev.get("reportingComponent")
        field = "reportingController" if v1beta else "reportingComponent"
        if not rc:
            bad(field, "Required value", "FieldValueRequired")
        elif not _QUALIFIED.match(rc):
            bad(field, "must be a qualified name")
        ri = ev.get("reportingInstance", "")
        if not ri:
            bad("reportingInstance", "Required value", "FieldValueRequired")
        elif len(ri) > 128:
            bad("reportingInstance", "can have at most 128 characters", "FieldValueTooLong")
        for f in ("action", "reason"):
            v = ev.get(f, "")
            if not v:
                bad(f, "Required value", "FieldValueRequired")
            elif len(v) > 128:
                bad(f, "can have at most 128 characters", "FieldValueTooLong")
    return causes


class Fault:
    """What a matching request gets instead of the real answer."""

    def __init__(self, path, method=None, kind="status", status=500, times=None,
                 retry_after=None, delay=30.0, message=None, reason=None, query=None):
        self.path = re.compile(path)
        self.query = re.compile(query) if query else None
        self.method = method
        self.kind = kind          # status | hang | garbage | huge | deny
        self.status = status
        self.times = times        # None: forever
        self.retry_after = retry_after
        self.delay = delay
        self.message = message
        self.reason = reason
        self.hits = 0

    def matches(self, method, path, query=""):
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.query and not self.query.search(query):
            return False
        return bool(self.path.search(path))


class KubeFake:
    def __init__(self, dirpath, token="token-one", namespace="prod", crds=("rollouts",),
                 user="system:serviceaccount:prod:pylon", host="127.0.0.1"):
        self.host = host
        self.dir = dirpath
        os.makedirs(dirpath, exist_ok=True)
        pki = _pki()
        for name, data in pki.items():
            with open(os.path.join(dirpath, name), "wb") as f:
                f.write(data)
        self.ca_file = os.path.join(dirpath, "ca.crt")
        self.ca_pem = pki["ca.crt"]
        self.client_cert = os.path.join(dirpath, "client.crt")
        self.client_key = os.path.join(dirpath, "client.key")
        self.token_file = os.path.join(dirpath, "token")
        self.on_401 = None        # callable run (once) before a 401 is sent
        self.set_token(token)
        self.namespace = namespace
        self.crds = set(crds)
        self.user = user
        self.objects = {}         # (group, plural, ns, name) -> obj
        self.faults = []
        self.denied = set()       # (verb, group, plural)
        self.log = []
        self.events = []
        self.lock = threading.Lock()
        self.rv = 1000
        self.httpd = None
        self.port = None

    # ---- scenario -----------------------------------------------------
    def set_token(self, token, rotate_file=True):
        """The only bearer token the server accepts from now on; also written
        to DIR/token (a kubeconfig tokenFile) unless rotate_file is False."""
        self.tokens = {token}
        if rotate_file:
            write_atomic(self.token_file, token + "\n")

    def valid_token(self):
        return sorted(self.tokens)[0]

    def add(self, *objs):
        with self.lock:
            for o in objs:
                o = copy.deepcopy(o)
                group, _ver, plural = KINDS[o["kind"]]
                md = o.setdefault("metadata", {})
                md.setdefault("namespace", self.namespace)
                md.setdefault("uid", "uid-%s-%s" % (plural, md["name"]))
                self.rv += 1
                md.setdefault("resourceVersion", str(self.rv))
                md.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
                self.objects[(group, plural, md["namespace"], md["name"])] = o

    def get(self, kind, name, ns=None):
        group, _v, plural = KINDS[kind]
        with self.lock:
            return copy.deepcopy(self.objects.get((group, plural, ns or self.namespace, name)))

    def fault(self, path, **kw):
        f = Fault(path, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def deny(self, verb, group, plural):
        """RBAC: answer 403 Forbidden for verb on group/plural."""
        self.denied.add((verb, group, plural))

    def clear_log(self):
        with self.lock:
            self.log.clear()

    def requests(self, method=None, path_re=None):
        with self.lock:
            out = list(self.log)
        return [r for r in out if (method is None or r["method"] == method) and
                (path_re is None or re.search(path_re, r["path"]))]

    # ---- connection material -----------------------------------------
    @property
    def server(self):
        if ":" in self.host:
            return "https://[%s]:%d" % (self.host, self.port)
        return "https://%s:%d" % (self.host, self.port)

    def kubeconfig(self, path, auth="token", namespace="prod", ca="data", server=None,
                   tls_server_name=None, extra_user=None, token=None):
        cluster = {"server": server or self.server}
        if ca == "data":
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        elif ca == "file":
            cluster["certificate-authority"] = self.ca_file
        elif ca == "insecure":
            cluster["insecure-skip-tls-verify"] = True
        if tls_server_name:
            cluster["tls-server-name"] = tls_server_name
        user = {}
        if auth == "token":
            user["token"] = token or self.valid_token()
        elif auth == "tokenFile":
            user["tokenFile"] = self.token_file
        elif auth == "cert-data":
            user["client-certificate-data"] = base64.b64encode(open(self.client_cert, "rb").read()).decode()
            user["client-key-data"] = base64.b64encode(open(self.client_key, "rb").read()).decode()
        elif auth == "cert-file":
            user["client-certificate"] = self.client_cert
            user["client-key"] = self.client_key
        if extra_user:
            user.update(extra_user)
        ctx = {"cluster": "fake", "user": "u"}
        if namespace:
            ctx["namespace"] = namespace
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
               "clusters": [{"name": "fake", "cluster": cluster}],
               "users": [{"name": "u", "user": user}],
               "contexts": [{"name": "fake", "context": ctx}]}
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)   # JSON is YAML
        return path

    def serviceaccount_dir(self, path, namespace="prod"):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "token"), "w") as f:
            f.write(self.valid_token() + "\n")
        with open(os.path.join(path, "ca.crt"), "wb") as f:
            f.write(self.ca_pem)
        if namespace is not None:
            with open(os.path.join(path, "namespace"), "w") as f:
                f.write(namespace)
        return path

    # ---- server ---------------------------------------------------------
    def start(self):
        fake = self

        class Handler(_Handler):
            pass
        Handler.fake = fake
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.dir, "server.crt"),
                            os.path.join(self.dir, "server.key"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(self.ca_file)
        cls = ThreadingHTTPServer
        if ":" in self.host:
            class cls(ThreadingHTTPServer):
                address_family = socket.AF_INET6
        httpd = cls((self.host, 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                       do_handshake_on_connect=False)
        self.httpd = httpd
        self.port = httpd.server_address[1]
        self.thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        # A real apiserver answers at once; without TCP_NODELAY Python's
        # separate header/body writes wait ~40 ms for a delayed ACK.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True

    # ---- plumbing ---------------------------------------------------------
    def _send(self, code, obj=None, raw=None, headers=None, ctype="application/json"):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Audit-Id", "fake-%d" % int(time.time() * 1000))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def _status(self, code, reason, message, details=None, headers=None):
        self._send(code, status_body(code, reason, message, details), headers=headers)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method):
        fake = self.fake
        u = urllib.parse.urlsplit(self.path)
        path, query = u.path, urllib.parse.parse_qs(u.query, keep_blank_values=True)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        auth = self.headers.get("Authorization", "")
        try:
            peer = self.connection.getpeercert()
        except (ValueError, AttributeError):
            peer = None
        entry = {"method": method, "path": path, "query": u.query,
                 "content_type": self.headers.get("Content-Type"),
                 "accept": self.headers.get("Accept"),
                 "user_agent": self.headers.get("User-Agent"),
                 "auth": "bearer" if auth.startswith("Bearer ") else ("cert" if peer else "none"),
                 "token": auth[7:] if auth.startswith("Bearer ") else None,
                 "body": body.decode("utf-8", "replace"), "time": time.time()}
        with fake.lock:
            fake.log.append(entry)
            try:
                with open(os.path.join(fake.dir, "requests.jsonl"), "a") as f:
                    f.write(json.dumps(entry) + "\n")
            except OSError:
                pass
        # authentication first, as the real server does
        if auth.startswith("Bearer "):
            if auth[7:] not in fake.tokens:
                hook, fake.on_401 = fake.on_401, None
                if hook:
                    hook()
                return self._status(401, "Unauthorized", "Unauthorized")
        elif not peer:
            return self._status(401, "Unauthorized", "Unauthorized")
        # faults
        with fake.lock:
            f = next((f for f in fake.faults if f.matches(method, path, u.query)), None)
            if f:
                f.hits += 1
                entry["fault"] = f.status if f.kind == "status" else f.kind
        if f:
            return self._fault(f, method, path)
        return self._route(method, path, query, body)

    def _fault(self, f, method, path):
        if f.kind == "hang":
            time.sleep(f.delay)
            self.close_connection = True
            return
        if f.kind == "garbage":
            return self._send(200, raw=b"<html><body>502 Bad Gateway... not JSON {{{", ctype="text/html")
        if f.kind == "huge":
            chunk = b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x","annotations":{"a":"'
            return self._send(200, raw=chunk + b"x" * (6 * 1024 * 1024) + b'"}}}')
        if f.kind == "truncated":
            return self._send(200, raw=b'{"kind":"Pod","metadata":{"name":')
        headers = {}
        if f.retry_after is not None:
            headers["Retry-After"] = str(f.retry_after)
        reasons = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                   410: "Expired", 429: "TooManyRequests", 500: "InternalError",
                   503: "ServiceUnavailable", 504: "Timeout"}
        msgs = {429: "Too many requests, please try again later.",
                500: "Internal error occurred: etcdserver: request timed out",
                503: "the server is currently unable to handle the request",
                410: "The provided continue parameter is too old to display a consistent "
                     "list result. You can start a new list without the continue parameter.",
                401: "Unauthorized", 404: "the server could not find the requested resource"}
        if f.status == 403 and not f.message:
            return self._forbidden(method, path)
        return self._status(f.status, f.reason or reasons.get(f.status, "InternalError"),
                            f.message or msgs.get(f.status, "error"), headers=headers)

    def _parse(self, path):
        m = re.match(r"^/api/v1/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?(?:/(status))?$", path)
        if m:
            return ("", "v1") + m.groups()
        m = re.match(r"^/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?(?:/(status))?$",
                     path)
        if m:
            return m.groups()
        return None

    def _forbidden(self, method, path):
        p = self._parse(path)
        verb = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete"}[method]
        if p is None:
            return self._status(403, "Forbidden", "forbidden")
        group, _v, ns, plural, name, _sub = p
        if method == "GET" and not name:
            verb = "list"
        res = plural + ("." + group if group else "")
        who = 'User "%s" cannot %s resource "%s" in API group "%s" in the namespace "%s"' % (
            self.fake.user, verb, plural, group, ns)
        details = {"kind": plural}
        if group:
            details["group"] = group
        if name:
            details["name"] = name
            msg = '%s "%s" is forbidden: %s' % (res, name, who)
        else:
            msg = "%s is forbidden: %s" % (res, who)
        return self._status(403, "Forbidden", msg, details)

    def _route(self, method, path, query, body):
        fake = self.fake
        p = self._parse(path)
        if p is None:
            return self._status(404, "NotFound", "the server could not find the requested resource")
        group, version, ns, plural, name, sub = p
        served = {("", "v1"), ("apps", "v1"), ("autoscaling", "v2"), ("autoscaling", "v1"),
                  ("events.k8s.io", "v1")}
        if "rollouts" in fake.crds:
            served.add(("argoproj.io", "v1alpha1"))
        kind = PLURAL_KIND.get(plural)
        if (group, version) not in served or kind is None or KINDS[kind][0] != group and \
                not (plural == "events" and group in ("", "events.k8s.io")) and \
                not (plural == "horizontalpodautoscalers" and group == "autoscaling"):
            return self._status(404, "NotFound", "the server could not find the requested resource")
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
                "PUT": "update", "DELETE": "delete"}[method]
        if (verb, group, plural) in fake.denied:
            return self._forbidden(method, path)
        if method == "GET" and name:
            with fake.lock:
                o = copy.deepcopy(fake.objects.get((group, plural, ns, name)))
            if o is None:
                res = plural + ("." + group if group else "")
                d = {"name": name, "kind": plural}
                if group:
                    d["group"] = group
                return self._status(404, "NotFound", '%s "%s" not found' % (res, name), d)
            o.setdefault("apiVersion", (group + "/" if group else "") + version)
            return self._send(200, o)
        if method == "GET":
            return self._list(group, version, ns, plural, kind, query)
        if method == "PATCH" and name and plural == "pods" and not sub:
            ct = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ct not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                return self._status(415, "UnsupportedMediaType",
                                    "the body of the request was in an unknown format - "
                                    "accepted media types include: application/json-patch+json, "
                                    "application/merge-patch+json, "
                                    "application/apply-patch+yaml")
            try:
                patch = json.loads(body)
            except ValueError as e:
                return self._status(400, "BadRequest", "error decoding patch: %s" % e)
            with fake.lock:
                key = (group, plural, ns, name)
                o = fake.objects.get(key)
                if o is None:
                    return self._status(404, "NotFound", 'pods "%s" not found' % name,
                                        {"name": name, "kind": "pods"})
                for k, v in ((patch.get("metadata") or {}).get("annotations") or {}).items():
                    if v is not None and not isinstance(v, str):
                        return self._status(
                            400, "BadRequest",
                            "json: cannot unmarshal %s into Go struct field "
                            "ObjectMeta.metadata.annotations of type string" % type(v).__name__)
                o = merge_patch(o, patch)
                fake.rv += 1
                o["metadata"]["resourceVersion"] = str(fake.rv)
                fake.objects[key] = o
                o = copy.deepcopy(o)
            return self._send(200, o)
        if method == "POST" and plural == "events" and not name:
            try:
                ev = json.loads(body)
            except ValueError as e:
                return self._status(400, "BadRequest", "couldn't get version/kind; json parse "
                                    "error: %s" % e)
            v1 = group == "events.k8s.io"
            causes = validate_event(ev, ns, v1)
            ename = (ev.get("metadata") or {}).get("name", "")
            if causes:
                msg = 'Event.%s "%s" is invalid: %s' % (
                    "events.k8s.io" if v1 else "", ename,
                    "; ".join("%s: %s" % (c["field"], c["message"]) for c in causes))
                return self._status(422, "Invalid", msg,
                                    {"name": ename, "group": group, "kind": "Event",
                                     "causes": causes})
            with fake.lock:
                key = ("events.k8s.io" if v1 else "", "events", ns, ename)
                if key in fake.objects:
                    dup = True
                else:
                    dup = False
                    ev.setdefault("metadata", {})["namespace"] = ns
                    ev["metadata"]["uid"] = "uid-event-%d" % len(fake.events)
                    fake.objects[key] = ev
                    fake.events.append(ev)
            if dup:
                return self._status(409, "AlreadyExists", 'events "%s" already exists' % ename,
                                    {"name": ename, "kind": "events"})
            return self._send(201, ev)
        return self._status(405, "MethodNotAllowed",
                            "the server does not allow this method on the requested resource")

    def _list(self, group, version, ns, plural, kind, query):
        fake = self.fake
        sel = query.get("labelSelector", [""])[0]
        try:
            preds = parse_selector(sel) if sel else []
        except ValueError as e:
            return self._status(400, "BadRequest", "unable to parse requirement: %s" % e)
        with fake.lock:
            items = [copy.deepcopy(o) for (g, pl, n, _nm), o in sorted(fake.objects.items())
                     if pl == plural and n == ns and (g == group or plural == "events")]
            rv = str(fake.rv)
        items = [o for o in items
                 if all(p(o.get("metadata", {}).get("labels") or {}) for p in preds)]
        start = 0
        cont = query.get("continue", [""])[0]
        if cont and query.get("resourceVersion", [""])[0]:
            # as the real server (apiserver/pkg/storage/cacher, etcd3)
            return self._status(400, "BadRequest", "specifying resource version is not "
                                "allowed when using continue")
        if cont:
            try:
                c = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start = int(c["start"])
                rv = c["rv"]
            except (ValueError, KeyError, TypeError):
                return self._status(400, "BadRequest", "continue key is not valid: "
                                    "illegal base64 data")
        limit = int(query.get("limit", ["0"])[0] or 0)
        page = items[start:start + limit] if limit > 0 else items[start:]
        meta = {"resourceVersion": rv}
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"start": start + limit, "rv": rv}).encode()).decode()
            if not sel:
                meta["remainingItemCount"] = len(items) - start - limit
        for o in page:
            o.setdefault("apiVersion", (group + "/" if group else "") + version)
            o.setdefault("kind", kind)
        return self._send(200, {"kind": kind + "List",
                                "apiVersion": (group + "/" if group else "") + version,
                                "metadata": meta, "items": page})


# ---- scenario helpers ---------------------------------------------------

def pod(name, ns="prod", owner=None, labels=None, sidecar=True, container="pylon-agent",
        node="node-1"):
    """A Pod; owner is (apiVersion, kind, name) of the controller or None."""
    md = {"name": name, "namespace": ns, "labels": labels or {"app": "chat"}}
    if owner:
        md["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": owner[2],
                                  "uid": "uid-owner-%s" % owner[2], "controller": True,
                                  "blockOwnerDeletion": True}]
    init = {"name": container, "image": "pylon-agent:1"}
    if sidecar:
        init["restartPolicy"] = "Always"
    return {"kind": "Pod", "apiVersion": "v1", "metadata": md,
            "spec": {"serviceAccountName": "pylon", "nodeName": node,
                     "initContainers": [init],
                     "containers": [{"name": "pylon", "image": "pylon:1"}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3"}}


def replicaset(name, owner, replicas=3, ns="prod"):
    md = {"name": name, "namespace": ns, "labels": {"app": "chat"},
          "annotations": {"deployment.kubernetes.io/desired-replicas": str(replicas)}}
    if owner:
        md["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": owner[2],
                                  "uid": "uid-owner-%s" % owner[2], "controller": True,
                                  "blockOwnerDeletion": True}]
    return {"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": md,
            "spec": {"replicas": replicas,
                     "selector": {"matchLabels": {"app": "chat"}}},
            "status": {"replicas": replicas}}


def deployment(name, replicas=3, ns="prod", strategy=None, labels=None):
    labels = labels or {"app": "chat"}
    d = {"kind": "Deployment", "apiVersion": "apps/v1",
         "metadata": {"name": name, "namespace": ns, "generation": 1, "labels": labels},
         "spec": {"selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
                  "strategy": strategy or {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxSurge": "25%",
                                                             "maxUnavailable": "25%"}}},
         "status": {"replicas": replicas, "readyReplicas": replicas}}
    if replicas is not None:
        d["spec"]["replicas"] = replicas
    return d


def statefulset(name, replicas=3, ns="prod", labels=None):
    labels = labels or {"app": "chat"}
    return {"kind": "StatefulSet", "apiVersion": "apps/v1",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"replicas": replicas, "serviceName": name,
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}},
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"partition": 0}}},
            "status": {"replicas": replicas}}


def rollout(name, replicas=3, ns="prod", strategy=None):
    return {"kind": "Rollout", "apiVersion": "argoproj.io/v1alpha1",
            "metadata": {"name": name, "namespace": ns, "generation": 4},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": strategy or {"blueGreen": {"activeService": name,
                                                            "previewService": name + "-preview",
                                                            "autoPromotionEnabled": False}}},
            "status": {"replicas": replicas * 2, "HPAReplicas": replicas}}


def hpa(name, target_kind, target_name, max_replicas, api_version="apps/v1", ns="prod",
        min_replicas=2):
    return {"kind": "HorizontalPodAutoscaler", "apiVersion": "autoscaling/v2",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": target_kind,
                                        "name": target_name},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": 70}}}]},
            "status": {"currentReplicas": min_replicas, "desiredReplicas": min_replicas}}


def deployment_objects(dep="chat", replicas=3, podname=None, ns="prod", strategy=None,
                       sidecar=True, labels=None):
    """Pod -> ReplicaSet -> Deployment."""
    rs = dep + "-7d4b9c8f6d"
    podname = podname or rs + "-x2k9p"
    return [pod(podname, ns, ("apps/v1", "ReplicaSet", rs), sidecar=sidecar, labels=labels),
            replicaset(rs, ("apps/v1", "Deployment", dep), replicas or 1, ns),
            deployment(dep, replicas, ns, strategy, labels)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--scenario", help="JSON: {objects:[...], faults:[{path,...}], "
                    "deny:[[verb,group,plural]], crds:[...]}")
    a = ap.parse_args()
    sc = {}
    if a.scenario:
        with open(a.scenario) as f:
            sc = json.load(f)
    fake = KubeFake(a.dir, crds=sc.get("crds", ("rollouts",)))
    fake.add(*sc.get("objects", []))
    for f in sc.get("faults", []):
        fake.fault(f.pop("path"), **f)
    for d in sc.get("deny", []):
        fake.deny(*d)
    fake.start()
    fake.kubeconfig(os.path.join(a.dir, "kubeconfig"))
    with open(os.path.join(a.dir, "port.tmp"), "w") as f:
        f.write(str(fake.port))
    os.replace(os.path.join(a.dir, "port.tmp"), os.path.join(a.dir, "port"))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
