"""The Helm chart (charts/pylon), rendered without helm or a cluster.

Every value set under charts/pylon/ci/ renders with the offline renderer
(tests/chart/render: Go text/template + sprig) and every object validates
against the Kubernetes schemas (npm kubernetes-models).  Then the wiring
the agent depends on is asserted: RBAC per reporter set, probes per shape,
downward API and secret-file env, the blue/green selector, no secret in
values.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402
from chartlib import env_map, objects, one  # noqa: E402

CI_VALUES = sorted(glob.glob(os.path.join(chartlib.CHART, "ci", "*-values.yaml")))
SECRET = {"redis": {"existingSecret": "pylon-redis"}, "database": {"existingSecret": "pylon-db"}}


@pytest.fixture(scope="module")
def renderer():
    try:
        return chartlib.build_renderer()
    except chartlib.Unavailable as e:
        print("SKIP reason:", e)
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def validator():
    try:
        return chartlib.ensure_validator()
    except chartlib.Unavailable as e:
        print("SKIP reason:", e)
        pytest.skip(str(e))


def merge(*dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = v
    return out


def rendered(renderer, values=None, files=(), **kw):
    rc, doc, err = chartlib.render(renderer, values_files=files, values=values, **kw)
    assert rc == 0, "render failed: " + err
    return doc


def pod_spec(doc):
    return one(doc, "Deployment")["spec"]["template"]["spec"]


def container(spec, name):
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        if c["name"] == name:
            return c
    return None


def rules_as_set(role):
    out = set()
    for r in role["rules"]:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    out.add((g, res, v))
    return out


# ---- every CI value set renders and validates ---------------------------

def test_ci_value_sets_exist():
    names = {os.path.basename(f) for f in CI_VALUES}
    for want in ("native-sidecar-values.yaml", "init-values.yaml",
                 "classic-sidecar-values.yaml", "bluegreen-values.yaml",
                 "hpa-values.yaml"):
        assert want in names


@pytest.mark.parametrize("values_file", CI_VALUES, ids=os.path.basename)
def test_ci_values_render_and_validate(renderer, validator, values_file):
    doc = rendered(renderer, files=[values_file])
    kinds = sorted(o["kind"] for o in objects(doc))
    assert "Deployment" in kinds and "Role" in kinds and "RoleBinding" in kinds
    assert "ServiceAccount" in kinds and "Service" in kinds
    rc, out = chartlib.validate(validator, doc["manifests"])
    print(out)
    assert rc == 0, out
    assert "0 invalid" in out


def test_validator_rejects_a_broken_object(renderer, validator):
    # The validator must be able to fail: corrupt one rendered field.
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci", "init-values.yaml")])
    dep = one(doc, "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc != 0 and "containerPort" in out, out
    # and a misspelt field, which the API server would drop or reject
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci", "init-values.yaml")])
    spec = one(doc, "Deployment")["spec"]["template"]["spec"]
    spec["initContainers"][1]["volumeMount"] = spec["initContainers"][1].pop("volumeMounts")
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc != 0 and "volumeMount is not a field of Container" in out, out


def test_values_match_schema(renderer):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(chartlib.CHART, "values.schema.json")) as f:
        schema = json.load(f)
    for vf in CI_VALUES:
        doc = rendered(renderer, files=[vf])
        jsonschema.validate(doc["values"], schema)
    # and the schema rejects what it should
    doc = rendered(renderer, values=merge(SECRET, {"agent": {"shape": "init"}}))
    for bad in ({"agent": {"shape": "sidecar"}}, {"agent": {"report": ["metadata"]}},
                {"agent": {"timeout": "60"}}, {"redis": {"url": "redis://x"}},
                {"agent": {"namespace": "bad ns"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(merge(doc["values"], bad), schema)


# ---- no secret in values -------------------------------------------------

def test_values_yaml_holds_no_secret():
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(chartlib.CHART, "values.yaml")) as f:
        text = f.read()
    values = yaml.safe_load(text)
    # no URL with credentials, no redis URL at all, anywhere in the file
    assert not re.search(r"rediss?://[^\s\"']*@", text)
    assert not re.search(r"^\s*[A-Za-z_]*(password|token|url)\s*:\s*\S", text,
                         re.I | re.M), "a credential-like key holds a value"

    def walk(v, path):
        if isinstance(v, dict):
            for k, e in v.items():
                lk = k.lower()
                if any(w in lk for w in ("password", "token", "secret", "url")):
                    # only names/keys of existing Secrets are allowed
                    assert lk in ("existingsecret", "secretkey", "casecret",
                                  "imagepullsecrets"), path + k
                    assert "://" not in str(e) and "@" not in str(e), path + k
                walk(e, path + k + ".")
        elif isinstance(v, list):
            for i, e in enumerate(v):
                walk(e, path + str(i) + ".")
    walk(values, "")
    assert values["redis"]["existingSecret"] == ""


def test_redis_url_only_from_secret_file(renderer):
    for vf in CI_VALUES:
        doc = rendered(renderer, files=[vf])
        spec = pod_spec(doc)
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["redis-url"]["secret"]["secretName"] == "pylon-redis"
        assert vols["redis-url"]["secret"]["items"] == [{"key": "url", "path": "url"}]
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = env_map(c)
            assert "PYLON_AGENT_REDIS_URL" not in env
            assert "PYLON_CLUSTER_BUS" not in env
            for e in c.get("env", []):
                if e["name"] == "PYLON_CORS_ORIGIN":
                    continue
                assert "://" not in e.get("value", ""), (c["name"], e)
            if c["name"] in ("pylon-agent-init", "pylon-agent"):
                f = env["PYLON_AGENT_REDIS_URL_FILE"]["value"]
                mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
                assert f == mounts["redis-url"] + "/url"
        # nothing in the rendered output carries a literal URL
        assert "redis://" not in json.dumps(doc["manifests"])


def test_missing_secret_fails_with_instructions(renderer):
    rc, _, err = chartlib.render(renderer, values={"replicaCount": 3})
    assert rc != 0
    assert "redis.existingSecret is required" in err and "kubectl create secret" in err
    # several Pylons need one Postgres: DATABASE_URL from an existing Secret
    rc, _, err = chartlib.render(renderer, values={
        "replicaCount": 3, "redis": {"existingSecret": "r"}})
    assert rc != 0
    assert "database.existingSecret is required" in err and "postgres://" in err
    assert len(err.strip().splitlines()) == 1
    doc = rendered(renderer, values={"replicaCount": 3, "redis": {"existingSecret": "r"},
                                     "database": {"existingSecret": "pylon-db"}})
    db = env_map(container(pod_spec(doc), "pylon"))["DATABASE_URL"]
    assert db == {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {
        "name": "pylon-db", "key": "url"}}}
    # HPA and blue/green count as several peers too
    rc, _, err = chartlib.render(renderer, values={"replicaCount": 1,
                                                   "autoscaling": {"enabled": True}})
    assert rc != 0 and "redis.existingSecret" in err
    # a single replica is fine without Redis: NoopBus, no secret volume
    doc = rendered(renderer, values={"replicaCount": 1})
    spec = pod_spec(doc)
    assert "redis-url" not in {v["name"] for v in spec["volumes"]}
    assert "PYLON_AGENT_REDIS_URL_FILE" not in env_map(container(spec, "pylon-agent"))
    # forced noop at scale is the operator's explicit choice
    rendered(renderer, values={"replicaCount": 3, "agent": {"mode": "noop"},
                               "database": {"existingSecret": "pylon-db"}})


@pytest.mark.parametrize("bad,msg", [
    ({"agent": {"shape": "sidecar"}}, "agent.shape"),
    ({"agent": {"report": ["log", "metadata"]}}, "not a Kubernetes reporter"),
    ({"agent": {"mode": "redis"}, "redis": {"existingSecret": ""}, "replicaCount": 1},
     "agent.mode=redis"),
    ({"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
     "not both"),
    ({"agent": {"shape": "init"}, "pylon": {"probes": {"liveness": {"fromAgent": True}}}},
     "needs agent.shape nativeSidecar or classicSidecar"),
    ({"agent": {"deafPylon": "report"},
      "pylon": {"probes": {"liveness": {"fromAgent": True}}}}, "needs agent.deafPylon heal"),
    ({"agent": {"shape": "init", "busProxy": {"enabled": True}}},
     "agent.busProxy.enabled needs agent.shape nativeSidecar"),
    ({"agent": {"shape": "classicSidecar", "busProxy": {"enabled": True}}},
     "agent.busProxy.enabled needs agent.shape nativeSidecar"),
])
def test_bad_values_fail_render(renderer, bad, msg):
    rc, _, err = chartlib.render(renderer, values=merge(SECRET, bad))
    assert rc != 0 and msg in err, err


# ---- RBAC ----------------------------------------------------------------

BASE_RULES = {("", "pods", "get"), ("apps", "replicasets", "get"),
              ("apps", "deployments", "get"), ("apps", "statefulsets", "get"),
              ("autoscaling", "horizontalpodautoscalers", "list")}


@pytest.mark.parametrize("shape", ["nativeSidecar", "init", "classicSidecar"])
@pytest.mark.parametrize("report,selector,argo", [
    (["log"], False, False),
    (["log", "annotations"], False, False),
    (["log", "events"], False, False),
    (["log", "annotations", "events"], True, False),
    (["log"], True, True),
])
def test_rbac_exactly_what_is_needed(renderer, shape, report, selector, argo):
    values = merge(SECRET, {"agent": {"shape": shape, "report": report,
                                      "argoRollouts": argo}})
    if selector:
        values["agent"]["appSelector"] = "pylon.dev/app=chat"
    doc = rendered(renderer, values=values)
    kinds = [o["kind"] for o in objects(doc)]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    role = one(doc, "Role")
    want = set(BASE_RULES)
    if "annotations" in report:
        want.add(("", "pods", "patch"))
    if "events" in report:
        want.add(("events.k8s.io", "events", "create"))
    if selector:
        want |= {("apps", "deployments", "list"), ("apps", "statefulsets", "list")}
    if argo:
        want.add(("argoproj.io", "rollouts", "get"))
    got = rules_as_set(role)
    assert got == want
    for g, res, v in got:
        assert "*" not in (g, res, v)
        assert res != "secrets"
    # bound to the chart's own service account, which the pod uses
    rb = one(doc, "RoleBinding")
    sa = one(doc, "ServiceAccount")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": role["metadata"]["name"]}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                               "namespace": "default"}]
    assert pod_spec(doc)["serviceAccountName"] == sa["metadata"]["name"]


def test_rbac_can_be_disabled(renderer):
    doc = rendered(renderer, values=merge(SECRET, {"rbac": {"create": False}}))
    kinds = [o["kind"] for o in objects(doc)]
    assert "Role" not in kinds and "RoleBinding" not in kinds


# ---- shapes and probes ---------------------------------------------------

def http_probe(c, kind):
    p = c.get(kind)
    if p is None:
        return None
    return (p["httpGet"]["path"], p["httpGet"]["port"])


def agent_port(c):
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    return ports.get("agent-http")


def test_native_sidecar_shape(renderer):
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci",
                                                 "native-sidecar-values.yaml")])
    spec = pod_spec(doc)
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["pylon-agent-install", "pylon-agent-init", "pylon-agent"]
    assert [c["name"] for c in spec["containers"]] == ["pylon"]
    serve = spec["initContainers"][2]
    assert serve["restartPolicy"] == "Always"
    assert serve["command"][-1] == "serve"
    assert http_probe(serve, "startupProbe") == ("/startupz", "agent-http")
    assert http_probe(serve, "readinessProbe") == ("/readyz", "agent-http")
    assert http_probe(serve, "livenessProbe") == ("/livez", "agent-http")
    assert agent_port(serve) == 4320
    assert env_map(serve)["PYLON_AGENT_LISTEN"]["value"] == "0.0.0.0:4320"
    # startup budget covers the agent's proof deadline (60s)
    sp = serve["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] > 60
    for c in spec["initContainers"][:2]:
        assert "restartPolicy" not in c
        assert "readinessProbe" not in c and "startupProbe" not in c


@pytest.mark.parametrize("shape", ["nativeSidecar", "classicSidecar"])
def test_deaf_pylon_liveness_from_agent(renderer, shape):
    """Opt-in (issue 20): Pylon's livenessProbe on the agent's /pylon-livez,
    so the kubelet restarts only this pod's deaf Pylon."""
    doc = rendered(renderer, values=merge(SECRET, {"agent": {"shape": shape}}))
    spec = pod_spec(doc)
    assert http_probe(container(spec, "pylon"), "livenessProbe") == ("/health", "http")
    agents = [c for c in spec["initContainers"] + spec["containers"]
              if c["name"] == "pylon-agent"]
    assert env_map(agents[0])["PYLON_AGENT_DEAF_PYLON"]["value"] == "heal"
    doc = rendered(renderer, values=merge(SECRET, {
        "agent": {"shape": shape},
        "pylon": {"probes": {"liveness": {"fromAgent": True}}}}))
    spec = pod_spec(doc)
    pylon = container(spec, "pylon")
    assert http_probe(pylon, "livenessProbe") == ("/pylon-livez", 4320)
    # readiness and startup still ask Pylon itself
    assert http_probe(pylon, "readinessProbe") == ("/health", "http")
    assert http_probe(pylon, "startupProbe") == ("/health", "http")


def test_init_shape(renderer):
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci", "init-values.yaml")])
    spec = pod_spec(doc)
    assert [c["name"] for c in spec["initContainers"]] == ["pylon-agent-install",
                                                           "pylon-agent-init"]
    assert [c["name"] for c in spec["containers"]] == ["pylon"]
    init = spec["initContainers"][1]
    assert init["command"][-1] == "init"
    for c in spec["initContainers"]:
        assert "restartPolicy" not in c and "readinessProbe" not in c
    # with no sidecar, init does the pod-level reporting
    assert env_map(init)["PYLON_AGENT_REPORT"]["value"] == "log,annotations"
    assert "prometheus.io/scrape" not in one(doc, "Deployment")["spec"]["template"][
        "metadata"]["annotations"]


def test_classic_sidecar_shape(renderer):
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci",
                                                 "classic-sidecar-values.yaml")])
    spec = pod_spec(doc)
    assert [c["name"] for c in spec["initContainers"]] == ["pylon-agent-install",
                                                           "pylon-agent-init"]
    assert [c["name"] for c in spec["containers"]] == ["pylon", "pylon-agent"]
    serve = spec["containers"][1]
    assert "restartPolicy" not in serve
    assert serve["command"][-1] == "serve"
    assert http_probe(serve, "readinessProbe") == ("/readyz", "agent-http")
    assert http_probe(serve, "livenessProbe") == ("/livez", "agent-http")
    assert "startupProbe" not in serve
    # serve reports; init only logs (no duplicate events)
    assert env_map(serve)["PYLON_AGENT_REPORT"]["value"] == "log,events"
    assert env_map(spec["initContainers"][1])["PYLON_AGENT_REPORT"]["value"] == "log"
    pdb = one(doc, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == one(doc, "Deployment")["spec"][
        "selector"]["matchLabels"]


@pytest.mark.parametrize("shape", ["nativeSidecar", "init", "classicSidecar"])
def test_env_and_start_wiring(renderer, shape):
    doc = rendered(renderer, values=merge(SECRET, {
        "agent": {"shape": shape, "namespace": "chat", "onDrift": "unready"},
        "pylon": {"command": ["/usr/bin/pylon"], "args": ["--verbose"]}}))
    spec = pod_spec(doc)
    install = container(spec, "pylon-agent-install")
    # only the exec tree (bin/ + lib/: what `exec --env-file` links), never
    # lib-dlopen/ (libcurl, libmicrohttpd, OpenSSL: ~17 MiB) nor the bundle
    assert install["command"] == ["cp", "-R", "/opt/pylon-agent/bin", "/opt/pylon-agent/lib",
                                  "/pylon-agent/"]
    agents = [c for c in (container(spec, "pylon-agent-init"), container(spec, "pylon-agent"))
              if c is not None]
    assert len(agents) == (1 if shape == "init" else 2)
    for c in agents:
        env = env_map(c)
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["POD_NAMESPACE"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["PYLON_AGENT_PLATFORM"]["value"] == "kubernetes"
        assert env["PYLON_AGENT_NAMESPACE"]["value"] == "chat"
        assert env["PYLON_AGENT_ENV_FILE"]["value"] == "/pylon-agent/cluster.env"
        for e in c["env"]:
            if "value" in e:
                assert isinstance(e["value"], str), e
        assert c["command"][0] == "/opt/pylon-agent/bin/pylon-agent"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["pylon-agent"]["mountPath"] == "/pylon-agent"
        assert mounts["kube-api-access"]["mountPath"] == \
            "/var/run/secrets/kubernetes.io/serviceaccount"
    if shape != "init":
        assert env_map(container(spec, "pylon-agent"))["PYLON_AGENT_ON_DRIFT"]["value"] == \
            "unready"
    # Pylon: started through exec --env-file, no shell, no API token, no
    # Redis secret, the shared volume read-only
    pylon = container(spec, "pylon")
    assert pylon["command"] == ["/pylon-agent/bin/pylon-agent", "exec", "--env-file",
                                "/pylon-agent/cluster.env", "--"]
    assert pylon["args"] == ["/usr/bin/pylon", "start", "app.ts", "--verbose"]
    assert pylon["volumeMounts"] == [{"name": "pylon-agent", "mountPath": "/pylon-agent",
                                      "readOnly": True},
                                     {"name": "pylon-data", "mountPath": "/data"}]
    assert spec["automountServiceAccountToken"] is False
    # the env file (0600) is readable by Pylon only as the same user
    assert spec["securityContext"]["runAsUser"] == 10001
    assert pylon["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_agent_resources_are_small(renderer):
    doc = rendered(renderer, values=SECRET)
    for c in pod_spec(doc)["initContainers"]:
        req = c["resources"]["requests"]
        assert req["cpu"] == "5m" and req["memory"] == "16Mi"
        assert c["resources"]["limits"]["memory"] == "64Mi"


# ---- HPA and blue/green --------------------------------------------------

def test_hpa(renderer):
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci", "hpa-values.yaml")])
    dep = one(doc, "Deployment")
    hpa = one(doc, "HorizontalPodAutoscaler")
    assert "replicas" not in dep["spec"]  # the HPA owns it
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    spec = pod_spec(doc)
    assert spec["volumes"][0]["emptyDir"]["medium"] == "Memory"
    env = env_map(container(spec, "pylon-agent"))
    assert env["PYLON_AGENT_REDIS_CA_FILE"]["value"] == \
        "/var/run/secrets/pylon-agent/redis-ca/ca.crt"


def selector_matches(selector, labels):
    for term in selector.split(","):
        k, v = term.split("=", 1)
        if labels.get(k.strip()) != v.strip():
            return False
    return True


def test_bluegreen_pair(renderer, validator):
    bg = os.path.join(chartlib.CHART, "ci", "bluegreen-values.yaml")
    blue = rendered(renderer, files=[bg], release="pylon-blue")
    green = rendered(renderer, files=[bg], release="pylon-green",
                     values={"bluegreen": {"colour": "green", "sharedService": False}})
    rc, out = chartlib.validate(validator, blue["manifests"] + green["manifests"])
    assert rc == 0, out
    deps = [one(blue, "Deployment"), one(green, "Deployment")]
    assert [d["metadata"]["name"] for d in deps] == ["pylon-blue", "pylon-green"]
    sels, nss = set(), set()
    for d in deps:
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        for name in ("pylon-agent-init", "pylon-agent"):
            env = env_map(container(spec, name))
            sels.add(env["PYLON_AGENT_APP_SELECTOR"]["value"])
            nss.add(env["PYLON_AGENT_NAMESPACE"]["value"])
        # own selector never matches the other colour, the app selector does
        assert labels["pylon.dev/app"] == "pylon"
        assert d["spec"]["selector"]["matchLabels"]["pylon.dev/colour"] in ("blue", "green")
    assert sels == {"pylon.dev/app=pylon"}
    assert nss == {"pylon"}  # one channel for both colours
    for d in deps:
        assert selector_matches("pylon.dev/app=pylon", d["spec"]["template"]["metadata"]["labels"])
    b_sel = deps[0]["spec"]["selector"]["matchLabels"]
    g_labels = deps[1]["spec"]["template"]["metadata"]["labels"]
    assert any(g_labels.get(k) != v for k, v in b_sel.items())
    # list on deployments/statefulsets for the other colour
    for doc in (blue, green):
        assert ("apps", "deployments", "list") in rules_as_set(one(doc, "Role"))
    # exactly one shared Service, following the active colour
    shared = [s for s in objects(blue, "Service") + objects(green, "Service")
              if s["metadata"]["name"] == "pylon"]
    assert len(shared) == 1
    assert shared[0]["spec"]["selector"] == {"pylon.dev/app": "pylon", "pylon.dev/colour": "blue"}
    names = [(o["kind"], o["metadata"]["name"]) for o in objects(blue) + objects(green)
             if o["kind"] in ("Role", "RoleBinding", "ServiceAccount")]
    # Role, RoleBinding, ServiceAccount per colour, none shared
    assert len(names) == 6 and len(set(names)) == 6


def test_standard_labels(renderer):
    doc = rendered(renderer, values=SECRET, release="chat")
    for o in objects(doc):
        labels = o["metadata"]["labels"]
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                  "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                  "helm.sh/chart"):
            assert k in labels, (o["kind"], k)
        assert labels["app.kubernetes.io/instance"] == "chat"


def test_notes_render_for_every_shape(renderer):
    for vf in CI_VALUES:
        rc, doc, err = chartlib.render(renderer, values_files=[vf], notes=True)
        assert rc == 0, err
        notes = doc["notes"]
        assert "kubectl" in notes and "docs/troubleshooting.md" in notes
        assert "pylon-agent exec --env-file /pylon-agent/cluster.env" in notes
        assert "<no value>" not in notes and "redis://" not in notes


# ---- the rendered pod, run for real -------------------------------------
#
# No cluster here, so the pod's containers run as local processes in the
# order the kubelet runs them, with the chart's own commands and env: the
# absolute paths are mapped into a temporary root, the downward API and
# the service-account mount are filled in, and the API server is
# tests/fakes/kube_fake.py denying everything the chart's Role does not
# grant.  Pylon is tests/fakes/standin.py.


from conftest import AGENT, free_port  # noqa: E402
from kube_fake import KINDS, KubeFake, deployment_objects  # noqa: E402
from redisfix import redis_factory  # noqa: E402,F401

POD = "chat-7d4b9c8f6d-x2k9p"
STANDIN = os.path.join(chartlib.ROOT, "tests", "fakes", "standin.py")
VERBS = ("get", "list", "create", "patch", "update", "delete")


def role_denials(role):
    """Every (verb, group, plural) the fake knows that the Role does not grant."""
    granted = rules_as_set(role)
    plurals = {(g, p) for g, _v, p in KINDS.values()} | {("events.k8s.io", "events")}
    return {(v, g, p) for g, p in plurals for v in VERBS if (g, p, v) not in granted}


def request_rule(method, path):
    import re as _re
    m = _re.match(r"^/api/v1/namespaces/[^/]+/([^/]+)(?:/([^/]+))?", path)
    if m:
        group, plural, name = "", m.group(1), m.group(2)
    else:
        m = _re.match(r"^/apis/([^/]+)/[^/]+/namespaces/[^/]+/([^/]+)(?:/([^/]+))?", path)
        assert m, path
        group, plural, name = m.groups()
    verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
            "PUT": "update", "DELETE": "delete"}[method]
    return (group, plural, verb)


class PodSim:
    def __init__(self, root, fake, spec, agent_dir):
        self.root, self.fake, self.spec = str(root), fake, spec
        self.maps = [("/opt/pylon-agent", agent_dir),
                     ("/var/run/secrets/kubernetes.io/serviceaccount",
                      os.path.join(self.root, "sa")),
                     ("/var/run/secrets/pylon-agent", os.path.join(self.root, "secrets")),
                     ("/pylon-agent", os.path.join(self.root, "shared"))]
        os.makedirs(os.path.join(self.root, "shared"), exist_ok=True)
        fake.serviceaccount_dir(os.path.join(self.root, "sa"), namespace="prod")
        self.port = free_port()

    def path(self, s):
        for a, b in self.maps:
            if s == a or s.startswith(a + "/"):
                return b + s[len(a):]
        return s

    def env(self, c):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C",
               "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": str(self.fake.port),
               "PYLON_AGENT_SERVICEACCOUNT_DIR": self.path(
                   "/var/run/secrets/kubernetes.io/serviceaccount")}
        for e in c.get("env", []):
            if "value" in e:
                v = self.path(e["value"])
                if e["name"] == "PYLON_AGENT_LISTEN":
                    v = "127.0.0.1:%d" % self.port
                env[e["name"]] = v
            else:
                field = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = {"metadata.name": POD, "metadata.namespace": "prod"}[field]
        return env

    def argv(self, c):
        return [self.path(a) for a in c["command"] + c.get("args", [])]


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def wait_http(port, path, want=200, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        code, body = http_get(port, path)
        if code == want:
            return body
        time.sleep(0.05)
    raise AssertionError("%s never answered %d (last %r)" % (path, want, http_get(port, path)))


def readline_within(p, timeout):
    """The first stdout line of p, waiting at most timeout seconds."""
    import threading
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise AssertionError("no output from %r within %.0fs" % (p.args, timeout))
    return box[0]


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory):
    """The agent image's /opt/pylon-agent: the bundle when patchelf is
    there, else the plain binary (system libraries)."""
    out = tmp_path_factory.mktemp("image")
    if shutil.which("patchelf"):
        p = subprocess.run(["sh", os.path.join(chartlib.ROOT, "scripts", "bundle.sh"),
                            AGENT, str(out)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return str(out / "pylon-agent")
    print("note: patchelf missing, using the unbundled binary")
    os.makedirs(out / "pylon-agent" / "bin")
    os.makedirs(out / "pylon-agent" / "lib")
    shutil.copy(AGENT, out / "pylon-agent" / "bin" / "pylon-agent")
    return str(out / "pylon-agent")



@pytest.mark.parametrize("shape,report,old_cluster", [
    ("nativeSidecar", ["log", "annotations", "events"], False),
    # a cluster without SidecarContainers drops restartPolicy: Always; the
    # "sidecar" must then act like init and exit, or the pod never starts
    ("nativeSidecar", ["log", "annotations"], True),
    ("init", ["log", "annotations"], False),
    ("classicSidecar", ["log", "events"], False),
])
def test_rendered_pod_runs(renderer, agent_dir, redis_factory, procs, tmp_path, shape, report,
                           old_cluster):
    if not os.access(AGENT, os.X_OK):
        pytest.fail("no agent binary at %s" % AGENT)
    r = redis_factory(requirepass="pod-s3cret")
    doc = rendered(renderer, release="chat", namespace="prod", values={
        "replicaCount": 3, "redis": {"existingSecret": "chat-redis"},
        "database": {"existingSecret": "chat-db"},
        "agent": {"shape": shape, "report": report, "namespace": "chat", "timeout": "20s"},
        "pylon": {"command": [sys.executable, STANDIN]}})
    spec = pod_spec(doc)
    labels = one(doc, "Deployment")["spec"]["template"]["metadata"]["labels"]
    fake = KubeFake(str(tmp_path / "fake")).start()
    try:
        for verb, group, plural in role_denials(one(doc, "Role")):
            fake.deny(verb, group, plural)
        fake.add(*deployment_objects(dep="chat", replicas=3, podname=POD, labels=labels,
                                     sidecar=not old_cluster))
        sim = PodSim(tmp_path / "root", fake, spec, agent_dir)
        # the kubelet's secret volume: the URL as a file
        os.makedirs(sim.path("/var/run/secrets/pylon-agent/redis"))
        with open(sim.path("/var/run/secrets/pylon-agent/redis/url"), "w") as f:
            f.write(r.url() + "\n")

        serve = None
        for c in spec["initContainers"]:
            if c.get("restartPolicy") == "Always" and not old_cluster:
                serve = procs.start(sim.argv(c), env=sim.env(c))
                # the kubelet starts Pylon only after the startup probe passes
                wait_http(sim.port, "/startupz")
                continue
            p = subprocess.run(sim.argv(c), env=sim.env(c), capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, "%s: %s" % (c["name"], p.stderr)
            assert "pod-s3cret" not in p.stderr + p.stdout
        envfile = sim.path("/pylon-agent/cluster.env")
        assert os.stat(envfile).st_mode & 0o777 == 0o600
        # the install container copied the exec tree only: <= 1 MiB (issue 16)
        shared = sim.path("/pylon-agent")
        # (besides it: the env file and, with serve, its state file)
        assert sorted(n for n in os.listdir(shared)
                      if os.path.isdir(os.path.join(shared, n))) == ["bin", "lib"]
        assert all(n.startswith("cluster.env") for n in os.listdir(shared)
                   if n not in ("bin", "lib")), os.listdir(shared)
        from test_bundle import exec_tree_bytes   # (ASan builds: see there)
        copied = exec_tree_bytes(shared)
        assert 0 < copied <= 1024 * 1024, copied
        with open(envfile) as f:
            text = f.read()
        assert "export PYLON_CLUSTER_BUS=" in text and "PYLON_CLUSTER_NAMESPACE='chat'" in text

        for c in spec["containers"]:
            if c["name"] == "pylon-agent":  # classic sidecar
                serve = procs.start(sim.argv(c), env=sim.env(c))
        # Pylon: only PATH and what the env file gives it
        pylon = container(spec, "pylon")
        # (+ the chart's DATABASE_URL, from the chat-db Secret: the stand-in,
        # as Pylon, refuses PYLON_CLUSTER_REQUIRED=1 without Postgres)
        pp = procs.start(sim.argv(pylon), env={"PATH": "/usr/bin:/bin",
                                               "DATABASE_URL": "postgres://u@db:5432/chat"},
                         stdin=subprocess.PIPE, text=True)
        line = readline_within(pp, 15.0)
        assert "bus=redis" in line and "channel=chat:cluster:bus" in line, line
        pp.stdin.write("quit\n")
        pp.stdin.flush()
        assert pp.wait(timeout=10) == 0

        if old_cluster:
            assert serve is None  # it ran to completion like init, above
        if serve is not None:
            wait_http(sim.port, "/readyz")
            code, body = http_get(sim.port, "/status")
            st = json.loads(body)
            assert (st["mode"], st["peers"], st["namespace"]) == ("redis", 3, "chat")
            assert "pod-s3cret" not in body
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=10) == 0

        # every API request the agent made is one the Role grants
        granted = rules_as_set(one(doc, "Role"))
        reqs = [(q["method"], q["path"]) for q in fake.log]
        assert reqs, "the agent made no API request"
        for method, path in reqs:
            assert request_rule(method, path) in granted, (method, path)
        pod_obj = fake.get("Pod", POD)
        anns = pod_obj["metadata"].get("annotations", {})
        if "annotations" in report:
            assert anns.get("pylon.dev/cluster-bus") == "redis"
            assert anns.get("pylon.dev/cluster-peers") == "3"
        else:
            assert "pylon.dev/cluster-bus" not in anns
        posted = [p for m, p in reqs if m == "POST" and p.endswith("/events")]
        assert bool(posted) == ("events" in report)
    finally:
        fake.stop()


def test_bus_proxy_refusal_names_the_shapes_that_work(renderer):
    for shape in ("init", "classicSidecar"):
        rc, _, err = chartlib.render(renderer, values=merge(SECRET, {
            "agent": {"shape": shape, "busProxy": {"enabled": True}}}))
        assert rc != 0, shape
        assert "nativeSidecar" in err and "supervisor shape on Fly" in err, err
        assert "agent.shape %s" % shape in err, err


def test_bus_proxy_native_sidecar_wiring(renderer, validator):
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci",
                                                 "native-sidecar-values.yaml")],
                   values={"agent": {"busProxy": {"enabled": True}}})
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc == 0 and "0 invalid" in out, out
    spec = pod_spec(doc)
    for name in ("pylon-agent-init", "pylon-agent"):
        env = env_map(container(spec, name))
        assert env["PYLON_AGENT_BUS_PROXY"]["value"] == "127.0.0.1:6380", name
    # Pylon's container gets no proxy setting and no URL: the env file does
    assert "PYLON_AGENT_BUS_PROXY" not in env_map(container(spec, "pylon"))
    assert "PYLON_CLUSTER_BUS" not in env_map(container(spec, "pylon"))
    # off by default
    doc = rendered(renderer, files=[os.path.join(chartlib.CHART, "ci",
                                                 "native-sidecar-values.yaml")])
    for c in pod_spec(doc)["initContainers"]:
        assert "PYLON_AGENT_BUS_PROXY" not in env_map(c)


def test_rendered_pod_with_bus_proxy_gives_pylon_a_local_url(
        renderer, agent_dir, redis_factory, procs, tmp_path):
    """helm template of the native-sidecar values with the proxy enabled,
    run as the kubelet would against a TLS-only Redis: the env file holds
    redis://:pw@127.0.0.1:PORT, /startupz passes through the proxy, and
    Pylon (the stand-in) talks plain RESP to it."""
    from redisfix import make_tls_material
    if not os.access(AGENT, os.X_OK):
        pytest.fail("no agent binary at %s" % AGENT)
    mat = make_tls_material(str(tmp_path / "tls"))
    r = redis_factory(tls=mat, requirepass="pod-s3cret")
    pport = free_port()
    doc = rendered(renderer, release="chat", namespace="prod",
                   files=[os.path.join(chartlib.CHART, "ci", "native-sidecar-values.yaml")],
                   values={"redis": {"existingSecret": "chat-redis", "caSecret": "chat-redis-ca"},
                           "database": {"existingSecret": "chat-db"},
                           "agent": {"namespace": "chat", "timeout": "20s",
                                     "report": ["log"],
                                     "busProxy": {"enabled": True,
                                                  "address": "127.0.0.1:%d" % pport}},
                           "pylon": {"command": [sys.executable, STANDIN]}})
    spec = pod_spec(doc)
    labels = one(doc, "Deployment")["spec"]["template"]["metadata"]["labels"]
    fake = KubeFake(str(tmp_path / "fake")).start()
    try:
        fake.add(*deployment_objects(dep="chat", replicas=3, podname=POD, labels=labels,
                                     sidecar=True))
        sim = PodSim(tmp_path / "root", fake, spec, agent_dir)
        os.makedirs(sim.path("/var/run/secrets/pylon-agent/redis"))
        with open(sim.path("/var/run/secrets/pylon-agent/redis/url"), "w") as f:
            f.write(r.url(host="localhost") + "\n")
        os.makedirs(sim.path("/var/run/secrets/pylon-agent/redis-ca"))
        shutil.copy(mat.ca, sim.path("/var/run/secrets/pylon-agent/redis-ca/ca.crt"))
        init = container(spec, "pylon-agent-init")
        assert init["env"][[e["name"] for e in init["env"]].index(
            "PYLON_AGENT_BUS_PROXY")]["value"] == "127.0.0.1:%d" % pport
        serve = None
        for c in spec["initContainers"]:
            if c.get("restartPolicy") == "Always":
                serve = procs.start(sim.argv(c), env=sim.env(c))
                wait_http(sim.port, "/startupz")
                continue
            p = subprocess.run(sim.argv(c), env=sim.env(c), capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, "%s: %s" % (c["name"], p.stderr)
            assert "pod-s3cret" not in p.stderr + p.stdout
        assert serve is not None
        with open(sim.path("/pylon-agent/cluster.env")) as f:
            text = f.read()
        assert "PYLON_CLUSTER_BUS='redis://:pod-s3cret@127.0.0.1:%d'" % pport in text, text
        assert "rediss://" not in text
        pylon = container(spec, "pylon")
        pp = procs.start(sim.argv(pylon), env={"PATH": "/usr/bin:/bin",
                                               "DATABASE_URL": "postgres://u@db:5432/chat"},
                         stdin=subprocess.PIPE, text=True)
        line = readline_within(pp, 15.0)
        assert "bus=redis" in line and "channel=chat:cluster:bus" in line, line
        pp.stdin.write("quit\n")
        pp.stdin.flush()
        assert pp.wait(timeout=10) == 0
        code, body = http_get(sim.port, "/metrics")
        conns = [ln for ln in body.splitlines()
                 if ln.startswith("pylon_agent_proxy_connections_total")]
        # the startup proof and the stand-in's connections came through it
        assert conns and int(float(conns[0].split()[-1])) >= 2, body
        assert "pod-s3cret" not in body
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=10) == 0
    finally:
        fake.stop()


def test_every_optional_value_renders_and_validates(renderer, validator):
    jsonschema = pytest.importorskip("jsonschema")
    values = merge(SECRET, {
        "imagePullSecrets": [{"name": "regcred"}],
        "podLabels": {"team": "rt"}, "podAnnotations": {"a": "b"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": {
                                                    "app.kubernetes.io/name": "pylon"}}}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "pylon": {"env": [{"name": "RUST_LOG", "value": "info"}],
                  "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                  "probes": {"readiness": {"periodSeconds": 3}},
                  "data": {"existingClaim": "pylon-data"},
                  "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                  "securityContext": {"readOnlyRootFilesystem": False}},
        "extraVolumes": [{"name": "tmp", "emptyDir": {}}],
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1,
                                                                "maxUnavailable": 0}},
        "agent": {"shape": "classicSidecar", "extraEnv": [{"name": "HTTPS_PROXY",
                                                           "value": "http://proxy:3128"}],
                  "install": False, "binaryPath": "/usr/local/bin/pylon-agent",
                  "logFormat": "json", "countSurge": True, "minPeers": 2,
                  "onDiscoveryError": "fail"},
        "serviceAccount": {"annotations": {"x": "y"}},
        "service": {"annotations": {"s": "t"}, "type": "LoadBalancer"},
        "podDisruptionBudget": {"enabled": True, "minAvailable": "50%", "maxUnavailable": ""},
    })
    doc = rendered(renderer, values=values)
    with open(os.path.join(chartlib.CHART, "values.schema.json")) as f:
        jsonschema.validate(doc["values"], json.load(f))
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc == 0, out
    spec = pod_spec(doc)
    assert [c["name"] for c in spec["initContainers"]] == ["pylon-agent-init"]
    pylon = container(spec, "pylon")
    assert pylon["command"][0] == "/usr/local/bin/pylon-agent"
    assert pylon["env"][-1] == {"name": "RUST_LOG", "value": "info"}
    assert pylon["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pylon["readinessProbe"]["periodSeconds"] == 3
    assert pylon["volumeMounts"][2] == {"name": "tmp", "mountPath": "/tmp"}
    assert {"name": "pylon-data", "persistentVolumeClaim": {"claimName": "pylon-data"}} \
        in spec["volumes"]
    assert pylon["securityContext"]["readOnlyRootFilesystem"] is False
    assert pylon["securityContext"]["runAsUser"] == 10001
    assert container(spec, "pylon-agent")["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]
    assert one(doc, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1
    serve = container(spec, "pylon-agent")
    env = env_map(serve)
    assert env["HTTPS_PROXY"]["value"] == "http://proxy:3128"
    assert env["PYLON_AGENT_LOG_FORMAT"]["value"] == "json"
    assert env["PYLON_AGENT_COUNT_SURGE"]["value"] == "true"
    assert env["PYLON_AGENT_MIN_PEERS"]["value"] == "2"
    assert env["PYLON_AGENT_ON_DISCOVERY_ERROR"]["value"] == "fail"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert one(doc, "PodDisruptionBudget")["spec"] == {
        "minAvailable": "50%", "selector": one(doc, "PodDisruptionBudget")["spec"]["selector"]}
    labels = one(doc, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "rt"


# ---- the renderer behaves like Helm where the chart relies on it ----------

def test_renderer_helm_semantics(renderer, tmp_path):
    chart = tmp_path / "mini"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mini\nversion: 1.2.3\n"
                                      "appVersion: \"9.9\"\n")
    (chart / "values.yaml").write_text("a: {b: 1, c: 2}\nn: 3\nmsg: hi\nlist: [x, z]\n"
                                       "tplv: '{{ .Values.msg }}-{{ .Release.Name }}'\n")
    (chart / "templates" / "_h.tpl").write_text(
        '{{- define "mini.name" -}}{{ .Chart.Name }}-{{ .Release.Name }}{{- end }}\n')
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        "  name: {{ include \"mini.name\" . }}\n"
        "  namespace: {{ .Release.Namespace }}\n"
        "data:\n"
        "  a: {{ .Values.a | toJson | quote }}\n"
        "  n: {{ .Values.n | quote }}\n"
        "  kind: {{ kindOf .Values.n | quote }}\n"
        "  tpl: {{ tpl .Values.tplv . | quote }}\n"
        "  req: {{ required \"need msg\" .Values.msg | quote }}\n"
        "  missing: {{ .Values.nope | quote }}\n"
        "  list: |\n    {{- toYaml .Values.list | nindent 4 }}\n"
        "  app: {{ .Chart.AppVersion | quote }}\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    (chart / "templates" / "NOTES.txt").write_text("notes for {{ .Release.Name }}\n")
    over = tmp_path / "over.yaml"
    over.write_text("a: {c: null, d: 4}\n")
    p = subprocess.run([renderer, "--release", "r1", "--namespace", "ns1", "-f", str(over),
                        "--notes", str(chart)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["values"]["a"] == {"b": 1, "d": 4}         # null deletes, maps merge
    (m,) = doc["manifests"]
    assert m["source"] == "mini/templates/cm.yaml"
    data = m["object"]["data"]
    assert m["object"]["metadata"] == {"name": "mini-r1", "namespace": "ns1"}
    assert json.loads(data["a"]) == {"b": 1, "d": 4}
    assert data["n"] == "3" and data["kind"] == "float64"  # Helm decodes numbers as floats
    # sprig quote drops nil, as in Helm: an empty YAML value
    assert data["tpl"] == "hi-r1" and data["req"] == "hi" and data["missing"] is None
    assert data["list"].split() == ["-", "x", "-", "z"]
    assert data["app"] == "9.9" and data["kube"].startswith("v1.")
    assert doc["notes"] == "notes for r1\n"
    # required and fail stop the render with the message
    p = subprocess.run([renderer, "--set-string", "msg=", str(chart)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and "need msg" in p.stderr
    (chart / "templates" / "bad.yaml").write_text("a: b\na: c\n")
    p = subprocess.run([renderer, str(chart)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "rendered YAML is invalid" in p.stderr  # duplicate key


def test_rendered_bluegreen_pods_count_both_colours(renderer, agent_dir, redis_factory,
                                                    tmp_path):
    """Blue's init container, with the chart's selector and Role, counts
    green's replicas too (3 + 2 = 5 peers)."""
    if not os.access(AGENT, os.X_OK):
        pytest.fail("no agent binary at %s" % AGENT)
    from kube_fake import deployment
    r = redis_factory()
    bg = os.path.join(chartlib.CHART, "ci", "bluegreen-values.yaml")
    docs = {}
    for colour, replicas in (("blue", 3), ("green", 2)):
        docs[colour] = rendered(renderer, files=[bg], release="pylon-" + colour,
                                namespace="prod", values={
                                    "replicaCount": replicas,
                                    "bluegreen": {"colour": colour,
                                                  "sharedService": colour == "blue"}})
    labels = {c: one(d, "Deployment")["spec"]["template"]["metadata"]["labels"]
              for c, d in docs.items()}
    fake = KubeFake(str(tmp_path / "fake")).start()
    try:
        for verb, group, plural in role_denials(one(docs["blue"], "Role")):
            fake.deny(verb, group, plural)
        fake.add(*deployment_objects(dep="pylon-blue", replicas=3, podname=POD,
                                     labels=labels["blue"]))
        fake.add(deployment("pylon-green", replicas=2, labels=labels["green"]))
        spec = pod_spec(docs["blue"])
        sim = PodSim(tmp_path / "root", fake, spec, agent_dir)
        os.makedirs(sim.path("/var/run/secrets/pylon-agent/redis"))
        with open(sim.path("/var/run/secrets/pylon-agent/redis/url"), "w") as f:
            f.write(r.url() + "\n")
        for name in ("pylon-agent-install", "pylon-agent-init"):
            c = container(spec, name)
            p = subprocess.run(sim.argv(c), env=sim.env(c), capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, "%s: %s" % (name, p.stderr)
        with open(sim.path("/pylon-agent/cluster.env")) as f:
            text = f.read()
        assert "mode=redis" in text and "peers=5" in text, text
        assert "pylon-green" in text  # the reason names the other colour
        assert "PYLON_CLUSTER_NAMESPACE='pylon'" in text
        granted = rules_as_set(one(docs["blue"], "Role"))
        for q in fake.log:
            assert request_rule(q["method"], q["path"]) in granted, q["path"]
        assert any(q["method"] == "GET" and q["path"].endswith("/deployments")
                   for q in fake.log), "the selector did not list deployments"
    finally:
        fake.stop()


def test_rendered_hpa_pod_counts_max_replicas(renderer, agent_dir, redis_factory, tmp_path):
    """The chart's own HPA object, served by the fake API: the first pod
    already counts maxReplicas (10) while the Deployment runs 2."""
    if not os.access(AGENT, os.X_OK):
        pytest.fail("no agent binary at %s" % AGENT)
    r = redis_factory()
    doc = rendered(renderer, release="chat", namespace="prod",
                   files=[os.path.join(chartlib.CHART, "ci", "hpa-values.yaml")],
                   values={"redis": {"caSecret": ""}})
    labels = one(doc, "Deployment")["spec"]["template"]["metadata"]["labels"]
    fake = KubeFake(str(tmp_path / "fake")).start()
    try:
        for verb, group, plural in role_denials(one(doc, "Role")):
            fake.deny(verb, group, plural)
        dep_name = one(doc, "Deployment")["metadata"]["name"]
        fake.add(*deployment_objects(dep=dep_name, replicas=2, podname=POD, labels=labels))
        fake.add(one(doc, "HorizontalPodAutoscaler"))
        spec = pod_spec(doc)
        sim = PodSim(tmp_path / "root", fake, spec, agent_dir)
        os.makedirs(sim.path("/var/run/secrets/pylon-agent/redis"))
        with open(sim.path("/var/run/secrets/pylon-agent/redis/url"), "w") as f:
            f.write(r.url() + "\n")
        for name in ("pylon-agent-install", "pylon-agent-init"):
            c = container(spec, name)
            p = subprocess.run(sim.argv(c), env=sim.env(c), capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, "%s: %s" % (name, p.stderr)
        with open(sim.path("/pylon-agent/cluster.env")) as f:
            text = f.read()
        assert "mode=redis" in text and "peers=10" in text, text
    finally:
        fake.stop()


def _workloads():
    """(name, values files, values) of every rendered workload the issue
    names: the defaults and each charts/pylon/ci/*.yaml."""
    out = [("defaults", [], None)]
    for vf in CI_VALUES:
        out.append((os.path.basename(vf), [vf], None))
    return out


@pytest.mark.parametrize("name,files,values", _workloads(), ids=lambda x: str(x)[:40])
def test_every_workload_starts_real_pylon(renderer, validator, name, files, values):
    doc = rendered(renderer, files=files, values=values)
    chartlib.assert_starts_real_pylon(objects(doc), name)
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc == 0, out


def test_defaults_render_one_replica_no_secrets(renderer):
    doc = rendered(renderer)
    dep = one(doc, "Deployment")
    assert dep["spec"]["replicas"] == 1
    spec = pod_spec(doc)
    assert not [v for v in spec["volumes"] if "secret" in v]
    pylon = container(spec, "pylon")
    assert pylon["args"] == ["pylon", "start", "app.ts"]
    assert env_map(pylon)["PYLON_PORT"]["value"] == "4321"
    assert "DATABASE_URL" not in env_map(pylon)
    assert {"name": "pylon-data", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
