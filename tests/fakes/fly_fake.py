#!/usr/bin/env python3
"""A fake Fly Machines API for pylon-agent's tests (python3 stdlib only).

Serves the endpoints the agent uses with the real machine JSON shape
(fly-go's Machine: id, name, state, region, instance_id, private_ip,
image_ref, created_at, updated_at, host_status, cordoned, config{env,
metadata, services, standbys, ...} or incomplete_config, events, checks):

  GET  /v1/apps/{app}/machines            (include_deleted, region, state,
                                           summary, metadata.* filters)
  GET  /v1/apps/{app}/machines/{id}
  GET  /v1/apps/{app}/machines/{id}/metadata
  POST /v1/apps/{app}/machines/{id}/metadata/{key}   {"value": "..."} -> 204

Errors are Fly's {"error": "..."} bodies; every response carries a
fly-request-id.  A scenario (SCENARIOS below) picks the machines or a fault.
Every request is recorded in `requests` (method, path, query, auth, body)
so tests can assert what the agent sent.

In-process:   fake = FlyFake("three_regions").start(); fake.url; fake.stop()
Standalone:   python3 fly_fake.py --scenario three_regions [--port N]
              (prints "port N" on stdout once listening)
"""
import argparse
import json
import os
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

APP = "pylon-demo"
TOKEN = "fm2_fake-macaroon-token-0123456789"
SELF_ID = "3d8d9016b29d89"
RELEASE_ID = "9e784e23ce0683"

_n = [0]


def machine(mid, state="started", region="ord", group="app", services=True,
            metadata=None, env=None, release="63", host_status="ok",
            cordoned=False, standbys=None, autostop=True, legacy=False,
            release_command=False):
    """One machine as GET /v1/apps/{app}/machines returns it."""
    _n[0] += 1
    meta = {"fly_platform_version": "v2", "fly_release_id": "Nj7oGMlVVpZ7JToybJoXLLjMl",
            "fly_release_version": release, "fly_flyctl_version": "0.3.45"}
    if legacy:
        meta = {"process_group": group}
    elif group is not None:
        meta["fly_process_group"] = group
    meta.update(metadata or {})
    cenv = {"PRIMARY_REGION": "ord", "PYLON_PORT": "8080"}
    if group is not None and not legacy:
        cenv["FLY_PROCESS_GROUP"] = group
    cenv.update(env or {})
    config = {
        "image": "registry.fly.io/pylon-demo:deployment-01JA2Q4R3S",
        "env": cenv,
        "init": {},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
        "metadata": meta,
        "restart": {"policy": "on-failure", "max_retries": 10},
    }
    if services:
        config["services"] = [{
            "protocol": "tcp", "internal_port": 8080, "autostop": autostop,
            "autostart": True, "min_machines_running": 1, "force_instance_key": None,
            "ports": [{"port": 80, "handlers": ["http"], "force_https": True},
                      {"port": 443, "handlers": ["tls", "http"]}],
            "checks": [{"type": "http", "interval": "15s", "timeout": "2s",
                        "grace_period": "5s", "method": "GET", "path": "/readyz"}],
            "concurrency": {"type": "connections", "hard_limit": 1000, "soft_limit": 800}}]
    if standbys:
        config["standbys"] = list(standbys)
    if release_command:
        config["init"] = {"cmd": ["pylon-agent", "check"]}
        config["auto_destroy"] = True
        config["restart"] = {"policy": "no"}
        config["dns"] = {"skip_registration": True}
    m = {
        "id": mid,
        "name": "machine-%d" % _n[0],
        "state": state,
        "region": region,
        "instance_id": "01JA2Q5V7W3X9Y1Z4B6C8D%04d" % _n[0],
        "private_ip": "fdaa:0:18:a7b:196:e274:9ce1:%x" % _n[0],
        "image_ref": {"registry": "registry.fly.io", "repository": "pylon-demo",
                      "tag": "deployment-01JA2Q4R3S", "digest": "sha256:5615ef42", "labels": {}},
        "created_at": "2025-01-10T10:00:00Z",
        "updated_at": "2025-01-10T10:02:11Z",
        "host_status": host_status,
        "cordoned": cordoned,
        "events": [{"type": "start", "status": state, "source": "flyd",
                    "timestamp": 1736503331000}],
        "checks": [{"name": "servicecheck-00-http-8080", "status": "passing",
                    "output": "200 OK", "updated_at": "2025-01-10T10:02:30Z"}],
    }
    if host_status == "ok":
        m["config"] = config
    else:
        # Unreachable host: only what flaps still knows.
        m["incomplete_config"] = {"metadata": meta, "env": cenv}
        m.pop("checks")
        m.pop("events")
    return m


def release_machine(mid=RELEASE_ID, release="64"):
    return machine(mid, group="fly_app_release_command", services=False,
                   release=release, env={"RELEASE_COMMAND": "1"}, release_command=True)


def _scenarios():
    s = {}
    s["one"] = [machine(SELF_ID)]
    s["three_regions"] = [machine(SELF_ID, region="ord"), machine("e784e23ce06838", region="ams"),
                          machine("148e272b4d3989", region="syd")]
    s["started_stopped"] = [machine(SELF_ID), machine("e784e23ce06838", state="stopped",
                                                      region="ams")]
    s["suspended"] = [machine(SELF_ID, autostop="suspend"),
                      machine("e784e23ce06838", state="suspended", autostop="suspend")]
    # A group without services: one started machine and its stopped standby.
    s["standby"] = [machine(SELF_ID, group="app", services=False),
                    machine("e784e23ce06838", state="stopped", services=False,
                            standbys=[SELF_ID])]
    s["app_worker"] = [machine(SELF_ID), machine("e784e23ce06838", region="ams"),
                       machine("5683d920b5d38e", group="worker", services=False),
                       machine("1781973f2d9d89", group="worker", services=False),
                       machine("91857e93c56383", group="worker", services=False)]
    # First deploy: only the release_command machine exists (it is self).
    s["release_only"] = [release_machine()]
    # A later deploy: the release machine (new release) and the older app machines.
    s["release_old_app"] = [release_machine(),
                            machine(SELF_ID, release="63"),
                            machine("e784e23ce06838", release="63", region="ams"),
                            machine("148e272b4d3989", release="63", state="stopped")]
    # Bluegreen window: two blues and their cordoned greens, tagged.
    s["bluegreen"] = [machine(SELF_ID, release="63"), machine("e784e23ce06838", release="63"),
                      machine("2874d3e9b17e18", release="64", cordoned=True,
                              metadata={"fly_bluegreen_deployment_tag": "1736503331"}),
                      machine("7811e42a49d389", release="64", cordoned=True,
                              metadata={"fly_bluegreen_deployment_tag": "1736503331"})]
    s["canary"] = [machine(SELF_ID), machine("6e82d476c40987", release="64",
                                             metadata={"fly_canary": "true"})]
    s["destroyed"] = [machine(SELF_ID), machine("e784e23ce06838", state="destroyed"),
                      machine("148e272b4d3989", state="destroying"),
                      machine("0e286039f42e86", state="failed")]
    s["unreachable"] = [machine(SELF_ID),
                        machine("e784e23ce06838", state="started", host_status="unreachable")]
    s["legacy"] = [machine(SELF_ID, legacy=True), machine("e784e23ce06838", legacy=True),
                   machine("5683d920b5d38e", group="worker", legacy=True)]
    s["empty"] = []
    return s


SCENARIOS = _scenarios()
# Faults: the list is served normally after `fault_count` faulty answers
# (default: every answer is faulty).
FAULTS = {"401", "403", "404", "429", "429_retry_after", "429_date", "500", "503",
          "hang", "garbage", "truncated", "object", "huge"}


class FlyFake:
    def __init__(self, scenario="one", app=APP, token=TOKEN, fault=None, fault_count=None,
                 machines=None, hang_s=30.0, fault_on=None):
        if scenario in FAULTS and fault is None:
            fault, scenario = scenario, "one"
        if machines is None:
            machines = json.loads(json.dumps(SCENARIOS[scenario]))
        self.scenario = scenario
        self.app = app
        self.token = token
        self.fault = fault
        self.fault_count = fault_count
        self.machines = machines
        self.hang_s = hang_s
        self.fault_on = fault_on    # None: every method; "GET"/"POST": only that one
        self.requests = []
        self.lock = threading.Lock()
        self.server = None
        self.thread = None
        self.stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------
    def start(self, port=0):
        fake = self

        class Handler(_Handler):
            pass
        Handler.fake = fake
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    # -- helpers for tests ----------------------------------------------
    def list_requests(self):
        with self.lock:
            return [r for r in self.requests if r["method"] == "GET"
                    and r["path"].endswith("/machines")]

    def metadata_posts(self):
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST"
                    and "/metadata/" in r["path"]]

    def take_fault(self, method):
        with self.lock:
            if self.fault is None:
                return None
            if self.fault_on is not None and method != self.fault_on:
                return None
            if self.fault_count is not None:
                if self.fault_count <= 0:
                    return None
                self.fault_count -= 1
            return self.fault


class _Handler(BaseHTTPRequestHandler):
    fake = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        # Answer at once (no Nagle/delayed-ACK wait between header and body).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _send(self, status, obj=None, raw=None, headers=None):
        body = raw if raw is not None else (b"" if obj is None else json.dumps(obj).encode())
        self.send_response(status)
        self.send_header("fly-request-id", uuid.uuid4().hex[:26])
        if body or status not in (204,):
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _err(self, status, msg, headers=None):
        self._send(status, {"error": msg}, headers=headers)

    def _record(self, body):
        u = urlsplit(self.path)
        rec = {"method": self.command, "path": u.path, "query": parse_qs(u.query),
               "raw_query": u.query, "auth": self.headers.get("Authorization"),
               "user_agent": self.headers.get("User-Agent"),
               "content_type": self.headers.get("Content-Type"),
               "body": body.decode("utf-8", "replace") if body else None,
               "time": time.monotonic()}
        with self.fake.lock:
            self.fake.requests.append(rec)
        return u

    def _authorized(self):
        a = self.headers.get("Authorization") or ""
        tok = self.fake.token
        return a in ("Bearer " + tok, "FlyV1 " + tok)

    def _fault(self):
        f = self.fake.take_fault(self.command)
        if f is None:
            return False
        if f in ("401", "403"):
            self._err(int(f), "unauthorized" if f == "401" else
                      "Forbidden: token lacks permission")
        elif f == "404":
            self._err(404, "app not found")
        elif f == "429":
            self._err(429, "rate limit exceeded")
        elif f == "429_retry_after":
            self._err(429, "rate limit exceeded", headers={"Retry-After": "1"})
        elif f == "429_date":
            when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
            self._err(429, "rate limit exceeded", headers={"Retry-After": when})
        elif f in ("500", "503"):
            self._err(int(f), "internal error, request id 01ABC")
        elif f == "hang":
            self.fake.stopping.wait(self.fake.hang_s)
            self.close_connection = True
        elif f == "garbage":
            self._send(200, raw=b"<html><body>502 Bad Gateway</body></html>")
        elif f == "truncated":
            self._send(200, raw=json.dumps(self.fake.machines).encode()[:40])
        elif f == "object":
            self._send(200, {"machines": []})
        elif f == "huge":
            self._send(200, raw=b"[" + b" " * (5 * 1024 * 1024) + b"]")
        return True

    def _split(self, path):
        parts = [p for p in path.split("/") if p]
        # v1 apps {app} machines [id] [metadata [key]]
        if len(parts) < 4 or parts[0] != "v1" or parts[1] != "apps" or parts[3] != "machines":
            return None
        return parts[2], parts[4:]

    def do_GET(self):
        u = self._record(None)
        sp = self._split(u.path)
        if sp is None:
            return self._err(404, "not found")
        if not self._authorized():
            return self._err(401, "unauthorized")
        if self._fault():
            return
        app, rest = sp
        if app != self.fake.app:
            return self._err(404, "app not found")
        with self.fake.lock:
            ms = json.loads(json.dumps(self.fake.machines))
        if not rest:
            q = parse_qs(u.query)
            if q.get("include_deleted", ["false"])[0] != "true":
                # Real Fly sometimes still lists destroyed machines: keep
                # them, so the agent's own filtering is exercised.
                pass
            if "region" in q:
                ms = [m for m in ms if m["region"] == q["region"][0]]
            if "state" in q:
                states = q["state"][0].split(",")
                ms = [m for m in ms if m["state"] in states]
            for k, v in q.items():
                if k.startswith("metadata."):
                    key = k[len("metadata."):]
                    ms = [m for m in ms if (m.get("config") or {}).get("metadata", {}).get(key) == v[0]]
            if q.get("summary", ["false"])[0] == "true":
                for m in ms:
                    for k in ("config", "checks", "events", "host_status", "nonce",
                              "incomplete_config"):
                        m.pop(k, None)
            return self._send(200, ms)
        mid = rest[0]
        found = [m for m in ms if m["id"] == mid]
        if not found:
            return self._err(404, "machine not found")
        if len(rest) == 1:
            return self._send(200, found[0])
        if rest[1] == "metadata" and len(rest) == 2:
            return self._send(200, (found[0].get("config") or {}).get("metadata", {}))
        return self._err(404, "not found")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        u = self._record(body)
        sp = self._split(u.path)
        if sp is None:
            return self._err(404, "not found")
        if not self._authorized():
            return self._err(401, "unauthorized")
        if self._fault():
            return
        app, rest = sp
        if app != self.fake.app:
            return self._err(404, "app not found")
        if len(rest) != 3 or rest[1] != "metadata":
            return self._err(404, "not found")
        try:
            value = json.loads(body)["value"]
            if not isinstance(value, str):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self._err(400, "invalid body: want {\"value\": \"...\"}")
        with self.fake.lock:
            for m in self.fake.machines:
                if m["id"] == rest[0]:
                    (m.get("config") or m.get("incomplete_config")).setdefault(
                        "metadata", {})[rest[2]] = value
                    break
            else:
                return self._err(404, "machine not found")
        self._send(204)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="one",
                    choices=sorted(list(SCENARIOS) + list(FAULTS)))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--app", default=APP)
    ap.add_argument("--token", default=os.environ.get("FLY_FAKE_TOKEN", TOKEN))
    ap.add_argument("--fault-count", type=int, default=None)
    a = ap.parse_args()
    fake = FlyFake(a.scenario, app=a.app, token=a.token, fault_count=a.fault_count)
    fake.start(a.port)
    print("port %d" % fake.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    sys.exit(main())
