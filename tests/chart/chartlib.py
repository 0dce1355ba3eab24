"""Helpers for the chart and manifest tests: build the offline chart
renderer (Go text/template + Debian's sprig), install the schema validator
(npm kubernetes-models) and run both.

Nothing here needs a cluster, a helm binary or any network but the npm
registry (for the one-time `npm ci`).
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(ROOT, "charts", "pylon")
GOCODE = "/usr/share/gocode"
SPRIG = os.path.join(GOCODE, "src", "github.com", "Masterminds", "sprig")


class Unavailable(Exception):
    """A tool the test needs is missing; the message says which and why."""


def build_renderer():
    """Builds tests/chart/render into build/chart/ (cached by source hash)
    and returns the binary's path."""
    if shutil.which("go") is None:
        raise Unavailable("no `go` (Debian golang-go; scripts/install-deps.sh installs it)")
    if not os.path.isdir(SPRIG):
        raise Unavailable("no sprig sources in %s (Debian golang-github-masterminds-sprig-dev)" % SPRIG)
    src = os.path.join(HERE, "render", "main.go")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out_dir = os.path.join(ROOT, "build", "chart")
    binary = os.path.join(out_dir, "chart-render-" + digest)
    if os.access(binary, os.X_OK):
        return binary
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOCODE, GOFLAGS="",
               GOCACHE=os.path.join(out_dir, "gocache"), CGO_ENABLED="0")
    tmp = binary + ".tmp%d" % os.getpid()
    p = subprocess.run(["go", "build", "-o", tmp, "."], cwd=os.path.join(HERE, "render"),
                       env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError("building the chart renderer failed:\n" + p.stderr)
    os.replace(tmp, binary)
    return binary


def ensure_validator():
    """Installs kubernetes-models into tests/chart/node_modules (npm ci from
    the committed lockfile) once; returns the validate.mjs path."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Unavailable("no node/npm (scripts/install-deps.sh installs them)")
    marker = os.path.join(HERE, "node_modules", "kubernetes-models", "package.json")
    if not os.path.exists(marker):
        try:
            env = dict(os.environ)
            if not env.get("HOME"):
                env["npm_config_cache"] = os.path.join(ROOT, "build", "chart", "npm-cache")
            p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=HERE, capture_output=True, text=True, timeout=240, env=env)
        except subprocess.TimeoutExpired:
            raise Unavailable("npm ci in tests/chart timed out (npm registry unreachable?)")
        if p.returncode != 0 or not os.path.exists(marker):
            raise Unavailable("npm ci in tests/chart failed (npm registry unreachable?): "
                              + (p.stderr.strip().splitlines() or ["?"])[-1])
    return os.path.join(HERE, "validate.mjs")


def render(binary, values_files=(), sets=(), release="pylon", namespace="default",
           values=None, notes=False):
    """Renders the chart; returns (returncode, parsed json or None, stderr).
    values: a dict written to a temporary values file (applied last)."""
    args = [binary, "--release", release, "--namespace", namespace]
    for f in values_files:
        args += ["-f", f]
    tmp = None
    if values is not None:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(values, tmp)  # JSON is YAML
        tmp.close()
        args += ["-f", tmp.name]
    for s in sets:
        args += ["--set-string", s]
    if notes:
        args.append("--notes")
    args.append(CHART)
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    finally:
        if tmp:
            os.unlink(tmp.name)
    doc = json.loads(p.stdout) if p.returncode == 0 else None
    return p.returncode, doc, p.stderr


def validate(validator, items):
    """items: [{"source", "object"}].  Returns (returncode, output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(items, f)
        name = f.name
    try:
        p = subprocess.run(["node", validator, name], capture_output=True, text=True,
                           timeout=120, cwd=HERE)
    finally:
        os.unlink(name)
    return p.returncode, p.stdout + p.stderr


def objects(doc, kind=None):
    objs = [m["object"] for m in doc["manifests"]]
    return [o for o in objs if kind is None or o.get("kind") == kind]


def one(doc, kind):
    objs = objects(doc, kind)
    assert len(objs) == 1, "want one %s, got %d" % (kind, len(objs))
    return objs[0]


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def assert_starts_real_pylon(objs, where):
    """Pylon is started with `pylon start <entry>`, PYLON_PORT is the port
    the Service targets, every Pylon probe is GET /health on that port,
    uid/gid 10001 with /data writable, PYLON_DEV_MODE=false."""
    deps = [o for o in objs if o.get("kind") == "Deployment"]
    svcs = [o for o in objs if o.get("kind") == "Service"]
    assert deps and svcs, where
    for dep in deps:
        spec = dep["spec"]["template"]["spec"]
        pylon = [c for c in spec["containers"] if c["name"] == "pylon"][0]
        args = pylon["args"]
        assert args[1] == "start" and args[2].endswith(".ts"), (where, args)
        env = env_map(pylon)
        port = int(env["PYLON_PORT"]["value"])
        assert env["PYLON_DEV_MODE"]["value"] == "false", where
        ports = {p["name"]: p["containerPort"] for p in pylon["ports"]}
        assert ports["http"] == port, where
        for svc in svcs:
            for sp in svc["spec"]["ports"]:
                tp = sp["targetPort"]
                assert (ports.get(tp) if isinstance(tp, str) else tp) == port, (where, sp)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            g = pylon[probe]["httpGet"]
            assert g["path"] == "/health", (where, probe)
            assert (ports.get(g["port"]) if isinstance(g["port"], str) else g["port"]) == port
        sc = dict(spec.get("securityContext", {}))
        sc.update(pylon.get("securityContext", {}))
        assert sc["runAsUser"] == 10001 and sc["runAsGroup"] == 10001, where
        assert sc.get("readOnlyRootFilesystem") is not True, where
        mounts = {m["mountPath"]: m for m in pylon["volumeMounts"]}
        assert "/data" in mounts and not mounts["/data"].get("readOnly"), where
        vols = {v["name"]: v for v in spec["volumes"]}
        assert mounts["/data"]["name"] in vols, where
        if dep["spec"].get("replicas", 2) > 1 or any(
                o.get("kind") == "HorizontalPodAutoscaler" for o in objs):
            ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"], where
