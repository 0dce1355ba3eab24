"""The chart's optional API Priority and Fairness objects (SPEC 10, issue 13
part 4): a FlowSchema for the agent's ServiceAccount and a
PriorityLevelConfiguration (or a reference to an existing one), off by
default, rendered with the real renderer and validated against the
Kubernetes schemas (kubernetes-models)."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402
from chartlib import objects, one  # noqa: E402

ON = {"agent": {"shape": "nativeSidecar", "report": ["log", "annotations", "events"],
                "argoRollouts": True},
      "apiPriority": {"enabled": True}}


@pytest.fixture(scope="module")
def renderer():
    return chartlib.build_renderer()


def render(renderer, values=None, namespace="chat-prod"):
    rc, d, err = chartlib.render(renderer, values=values, namespace=namespace)
    assert rc == 0, err
    return d


def test_off_by_default(renderer):
    kinds = {o["kind"] for o in objects(render(renderer))}
    assert "Deployment" in kinds
    assert not kinds & {"FlowSchema", "PriorityLevelConfiguration"}


def test_flowschema_covers_the_agents_role(renderer):
    d = render(renderer, ON)
    fs, plc = one(d, "FlowSchema"), one(d, "PriorityLevelConfiguration")
    sa = one(d, "ServiceAccount")["metadata"]["name"]
    assert fs["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1"
    assert fs["spec"]["priorityLevelConfiguration"]["name"] == plc["metadata"]["name"]
    assert fs["metadata"]["name"].startswith("chat-prod-")    # cluster-scoped: unique
    assert 1 <= fs["spec"]["matchingPrecedence"] < 9000        # before service-accounts
    assert plc["spec"]["type"] == "Limited"
    rule = fs["spec"]["rules"][0]
    assert rule["subjects"] == [{"kind": "ServiceAccount", "serviceAccount": {
        "name": sa, "namespace": "chat-prod"}}]
    rr = rule["resourceRules"][0]
    assert rr["namespaces"] == ["chat-prod"]
    # every request the Role allows falls into this flow
    for r in one(d, "Role")["rules"]:
        for g in r["apiGroups"]:
            assert g in rr["apiGroups"], g
        for res in r["resources"]:
            assert res in rr["resources"], res
        for v in r["verbs"]:
            assert v in rr["verbs"], v


def test_existing_priority_level_is_referenced(renderer):
    d = render(renderer, {"apiPriority": {"enabled": True, "priorityLevel": "workload-low",
                                          "apiVersion": "flowcontrol.apiserver.k8s.io/v1beta3"}})
    assert objects(d, "PriorityLevelConfiguration") == []
    fs = one(d, "FlowSchema")
    assert fs["spec"]["priorityLevelConfiguration"]["name"] == "workload-low"
    assert fs["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1beta3"


def test_rendered_objects_validate(renderer):
    validator = chartlib.ensure_validator()
    d = render(renderer, ON)
    items = [m for m in d["manifests"]
             if m["object"]["kind"] in ("FlowSchema", "PriorityLevelConfiguration")]
    assert len(items) == 2
    rc, out = chartlib.validate(validator, items)
    assert rc == 0 and "0 invalid" in out, out


def test_schema_refuses_bad_values():
    import json
    import jsonschema
    with open(os.path.join(chartlib.CHART, "values.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(chartlib.CHART, "values.yaml")) as f:
        import yaml
        values = yaml.safe_load(f)
    jsonschema.validate(values, schema)
    for bad in ({"handSize": 99}, {"apiVersion": "flowcontrol.apiserver.k8s.io/v1beta1"},
                {"priorityLevl": "x"}):
        v = json.loads(json.dumps(values))
        v["apiPriority"].update(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(v, schema)
