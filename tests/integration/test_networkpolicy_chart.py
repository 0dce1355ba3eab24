"""The chart's optional NetworkPolicy (issue 21, docs/hardening.md):
rendered with the offline renderer (tests/chart/render), validated against
the Kubernetes schemas like every other object of the chart."""
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402
from chartlib import objects, one  # noqa: E402

SECRETS = {"replicaCount": 3, "redis": {"existingSecret": "pylon-redis"},
           "database": {"existingSecret": "pylon-db"}}
PROM = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
REDIS = [{"podSelector": {"matchLabels": {"app": "redis"}}}]
PG = [{"ipBlock": {"cidr": "10.20.0.5/32"}}]


def merge(*dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def renderer():
    return chartlib.build_renderer()


@pytest.fixture(scope="module")
def validator():
    return chartlib.ensure_validator()


def render(renderer, values):
    rc, doc, err = chartlib.render(renderer, values=values)
    assert rc == 0, err
    return doc


def test_off_by_default(renderer):
    doc = render(renderer, SECRETS)
    assert "NetworkPolicy" not in {o["kind"] for o in objects(doc)}
    with open(os.path.join(chartlib.CHART, "values.yaml")) as f:
        assert "networkPolicy:\n  enabled: false" in f.read()


def test_ingress_only(renderer, validator):
    doc = render(renderer, merge(SECRETS, {"networkPolicy": {"enabled": True,
                                                            "agentFrom": PROM}}))
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc == 0, out
    np = one(doc, "NetworkPolicy")["spec"]
    dep = one(doc, "Deployment")
    # the policy selects exactly this release's pods
    assert np["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert np["policyTypes"] == ["Ingress"] and "egress" not in np
    pylon_rule, agent_rule = np["ingress"]
    # Pylon's port from anyone (no from), the agent's port from Prometheus
    assert pylon_rule == {"ports": [{"port": 4321, "protocol": "TCP"}]}
    assert agent_rule == {"ports": [{"port": 4320, "protocol": "TCP"}], "from": PROM}


def test_agent_port_is_node_only_by_default_and_absent_without_serve(renderer):
    # agentFrom empty: no rule names the agent's port, so only the node (the
    # kubelet's probes, always allowed) reaches it.
    for shape in ("nativeSidecar", "classicSidecar", "init"):
        vals = merge(SECRETS, {"agent": {"shape": shape},
                               "networkPolicy": {"enabled": True,
                                                 "pylonFrom": [{"podSelector": {}}]}})
        np = one(render(renderer, vals), "NetworkPolicy")["spec"]
        ports = [p["port"] for r in np["ingress"] for p in r["ports"]]
        assert ports == [4321], (shape, np)
        assert np["ingress"][0]["from"] == [{"podSelector": {}}]
    # with agentFrom but no serve (init shape) nothing listens: no rule either
    vals = merge(SECRETS, {"agent": {"shape": "init"},
                           "networkPolicy": {"enabled": True, "agentFrom": PROM}})
    np = one(render(renderer, vals), "NetworkPolicy")["spec"]
    assert [p["port"] for r in np["ingress"] for p in r["ports"]] == [4321]


def test_egress(renderer, validator):
    extra = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]
    vals = merge(SECRETS, {"agent": {"port": 9000}, "pylon": {"port": 8080},
                           "networkPolicy": {"enabled": True, "egress": {
                               "enabled": True,
                               "apiServer": {"cidrs": ["172.18.0.2/32"]},
                               "redis": {"to": REDIS, "ports": [6380]},
                               "database": {"to": PG},
                               "extra": extra}}})
    doc = render(renderer, vals)
    rc, out = chartlib.validate(validator, doc["manifests"])
    assert rc == 0, out
    np = one(doc, "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    dns, api, redis, db, ext = np["egress"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert api == {"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
                   "ports": [{"port": 443, "protocol": "TCP"},
                             {"port": 6443, "protocol": "TCP"}]}
    assert redis == {"to": REDIS, "ports": [{"port": 6380, "protocol": "TCP"}]}
    assert db == {"to": PG, "ports": [{"port": 5432, "protocol": "TCP"}]}
    assert ext == extra[0]
    # dns: false drops the DNS rule
    vals["networkPolicy"]["egress"]["dns"] = False
    np = one(render(renderer, vals), "NetworkPolicy")["spec"]
    assert len(np["egress"]) == 4 and np["egress"][0] == api


@pytest.mark.parametrize("egress,needle", [
    ({}, "networkPolicy.egress.apiServer.cidrs"),
    ({"apiServer": {"cidrs": ["10.0.0.1/32"]}}, "networkPolicy.egress.redis.to"),
    ({"apiServer": {"cidrs": ["10.0.0.1/32"]}, "redis": {"to": REDIS}},
     "networkPolicy.egress.database.to"),
])
def test_egress_without_the_peers_the_pod_needs_fails_render(renderer, egress, needle):
    vals = merge(SECRETS, {"networkPolicy": {"enabled": True,
                                             "egress": merge({"enabled": True}, egress)}})
    rc, _, err = chartlib.render(renderer, values=vals)
    assert rc != 0
    assert needle in err, err


def test_schema_refuses_unknown_keys_and_bad_cidrs(renderer):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(chartlib.CHART, "values.schema.json")) as f:
        schema = json.load(f)
    doc = render(renderer, SECRETS)
    jsonschema.validate(doc["values"], schema)
    for bad in ({"enabled": True, "agentfrom": []},
                {"egress": {"apiServer": {"cidrs": ["kubernetes.default"]}}},
                {"egress": {"redis": {"ports": [70000]}}}):
        v = merge(doc["values"], {"networkPolicy": bad})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(v, schema)
