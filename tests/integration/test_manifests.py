"""manifests/: plain YAML for `kubectl apply -k`, one directory per agent
shape plus a blue/green pair.  Every object validates against the
Kubernetes schemas (npm kubernetes-models), every kustomization builds
(kubectl kustomize, when kubectl is installed), the files match the chart
they are generated from, and RBAC is least-privilege.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402

yaml = pytest.importorskip("yaml")

MANIFESTS = os.path.join(chartlib.ROOT, "manifests")
SHAPE_DIRS = ["native-sidecar", "init", "classic-sidecar", "bluegreen"]


def object_files():
    out = []
    for path in sorted(glob.glob(os.path.join(MANIFESTS, "**", "*.yaml"), recursive=True)):
        rel = os.path.relpath(path, MANIFESTS)
        if rel.startswith("fly" + os.sep) or os.path.basename(path) == "kustomization.yaml":
            continue
        out.append(path)
    return out


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.fixture(scope="module")
def validator():
    try:
        return chartlib.ensure_validator()
    except chartlib.Unavailable as e:
        print("SKIP reason:", e)
        pytest.skip(str(e))


def test_layout():
    for d in SHAPE_DIRS:
        assert os.path.isfile(os.path.join(MANIFESTS, d, "kustomization.yaml")), d
    assert len(object_files()) >= 5


def test_every_file_is_schema_valid(validator):
    items = []
    for path in object_files():
        for obj in load(path):
            items.append({"source": os.path.relpath(path, chartlib.ROOT), "object": obj})
    assert items
    rc, out = chartlib.validate(validator, items)
    print(out)
    assert rc == 0, out


def test_kustomizations_list_existing_files():
    for path in glob.glob(os.path.join(MANIFESTS, "**", "kustomization.yaml"), recursive=True):
        k = load(path)[0]
        assert k["kind"] == "Kustomization"
        for r in k.get("resources", []):
            assert os.path.exists(os.path.join(os.path.dirname(path), r)), (path, r)


@pytest.mark.parametrize("d", SHAPE_DIRS)
def test_kustomize_build_validates(validator, d):
    if shutil.which("kubectl") is None:
        print("SKIP reason: no kubectl (kustomize) installed")
        pytest.skip("no kubectl")
    p = subprocess.run(["kubectl", "kustomize", os.path.join(MANIFESTS, d)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    objs = [o for o in yaml.safe_load_all(p.stdout) if o]
    for o in objs:
        assert o["metadata"].get("namespace") == "pylon", (o["kind"], o["metadata"]["name"])
        if o["kind"] == "RoleBinding":
            for s in o["subjects"]:
                assert s["namespace"] == "pylon"
    rc, out = chartlib.validate(validator, [{"source": d, "object": o} for o in objs])
    assert rc == 0, out


def test_generated_from_the_chart():
    try:
        chartlib.build_renderer()
    except chartlib.Unavailable as e:
        print("SKIP reason:", e)
        pytest.skip(str(e))
    p = subprocess.run([sys.executable, os.path.join(chartlib.HERE, "gen_manifests.py"),
                        "--check"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_no_secret_and_no_cluster_scope():
    for path in object_files() + glob.glob(os.path.join(MANIFESTS, "*", "kustomization.yaml")):
        with open(path) as f:
            text = f.read()
        assert "redis://" not in text and "rediss://" not in text, path
        assert "secretGenerator" not in text, path
    for path in object_files():
        for o in load(path):
            assert o["kind"] not in ("Secret", "ClusterRole", "ClusterRoleBinding"), path
            if o["kind"] == "Role":
                for r in o["rules"]:
                    for field in ("apiGroups", "resources", "verbs"):
                        assert "*" not in r[field], (path, r)
                    assert "secrets" not in r["resources"], (path, r)


def role_verbs(path):
    out = set()
    for o in load(path):
        if o["kind"] == "Role":
            for r in o["rules"]:
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        for v in r["verbs"]:
                            out.add((g, res, v))
    return out


def deployment(path):
    return [o for o in load(path) if o["kind"] == "Deployment"][0]


def test_shapes_and_rbac():
    native = os.path.join(MANIFESTS, "native-sidecar", "pylon.yaml")
    spec = deployment(native)["spec"]["template"]["spec"]
    serve = [c for c in spec["initContainers"] if c["name"] == "pylon-agent"][0]
    assert serve["restartPolicy"] == "Always"
    assert serve["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ("", "pods", "patch") in role_verbs(native)
    assert ("events.k8s.io", "events", "create") in role_verbs(native)

    init = os.path.join(MANIFESTS, "init", "pylon.yaml")
    spec = deployment(init)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["pylon"]
    assert all("restartPolicy" not in c for c in spec["initContainers"])
    assert ("", "pods", "patch") in role_verbs(init)
    assert ("events.k8s.io", "events", "create") not in role_verbs(init)

    classic = os.path.join(MANIFESTS, "classic-sidecar", "pylon.yaml")
    spec = deployment(classic)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["pylon", "pylon-agent"]
    assert ("", "pods", "patch") not in role_verbs(classic)
    assert ("events.k8s.io", "events", "create") in role_verbs(classic)

    for colour in ("blue", "green"):
        path = os.path.join(MANIFESTS, "bluegreen", colour + ".yaml")
        dep = deployment(path)
        spec = dep["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for c in spec["initContainers"]
               for e in c.get("env", [])}
        assert env["PYLON_AGENT_APP_SELECTOR"] == "pylon.dev/app=pylon"
        assert env["PYLON_AGENT_NAMESPACE"] == "pylon"
        assert dep["spec"]["template"]["metadata"]["labels"]["pylon.dev/colour"] == colour
        assert ("apps", "deployments", "list") in role_verbs(path)


def test_fly_toml_release_command():
    path = os.path.join(MANIFESTS, "fly", "fly.toml")
    if not os.path.exists(path):
        print("SKIP reason: manifests/fly/fly.toml not written yet")
        pytest.skip("no fly.toml")
    tomllib = pytest.importorskip("tomllib")
    with open(path, "rb") as f:
        fly = tomllib.load(f)
    assert "pylon-agent check" in fly["deploy"]["release_command"]


def test_error_index_in_troubleshooting():
    """docs/troubleshooting.md ends with every error line, generated from
    the err_set() calls (scripts/gen-error-index.py).  A stale index is a
    warning, not a failure: a reworded message must not break the build,
    and the generator is one command."""
    import importlib.util
    import warnings
    path = os.path.join(chartlib.ROOT, "scripts", "gen-error-index.py")
    spec = importlib.util.spec_from_file_location("gen_error_index", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    msgs = gen.messages()
    assert len(msgs) >= 100, len(msgs)
    codes = {c for _, c, _ in msgs}
    assert {"64", "69", "73", "75", "78"} <= codes, codes
    # the exit codes the troubleshooting page documents all occur
    with open(gen.DOC) as f:
        doc = f.read()
    for code in ("64", "69", "70", "73", "75", "78"):
        assert "| %s |" % code in doc
    for name, _, _ in msgs:
        target = gen.SEE.get(name)
        assert target, "no troubleshooting pointer for %s" % name
        m = re.match(r"\[[^\]]*\]\(([^)#]+)", target)
        if m:
            assert os.path.exists(os.path.join(chartlib.ROOT, "docs", m.group(1))), target
    # a known message is indexed with its code
    assert "| 78 | `… peers (…) need the Redis cluster bus but no Redis URL" in doc
    p = subprocess.run([sys.executable, path, "--check"], capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        warnings.warn(p.stdout.strip())


@pytest.mark.parametrize("path", object_files(), ids=lambda p: os.path.relpath(p, MANIFESTS))
def test_every_manifest_starts_real_pylon(path):
    chartlib.assert_starts_real_pylon(load(path), os.path.relpath(path, MANIFESTS))


def test_fly_toml_starts_real_pylon():
    import tomllib
    with open(os.path.join(MANIFESTS, "fly", "fly.toml"), "rb") as f:
        fly = tomllib.load(f)
    cmd = fly["processes"]["app"].split()
    assert cmd[:2] == ["pylon-agent", "serve"] and cmd[cmd.index("--") + 1:] == \
        ["pylon", "start", "app.ts"]
    port = int(fly["env"]["PYLON_PORT"])
    assert port == fly["http_service"]["internal_port"] == 4321
    assert fly["env"]["PYLON_DEV_MODE"] == "false"
    assert [c["path"] for c in fly["http_service"]["checks"]] == ["/health"]
    with open(os.path.join(MANIFESTS, "fly", "fly.toml")) as f:
        text = f.read()
    # Pylon 0.11.3 cannot use rediss://: the example URL is redis:// on
    # Fly's private network
    assert "rediss://" not in text.split("Pylon 0.11.3")[0]
    assert re.search(r'PYLON_AGENT_REDIS_URL="redis://[^"]*\.internal:6379', text)
