"""The chart's optional monitoring objects (issue 17): rendered with the
real renderer and checked by the real tools of Debian's prometheus
package: `promtool check rules`, and `promtool test rules` with input
series that fire and do not fire every alert
(tests/fixtures/monitoring/alerts.test.yaml); the PodMonitor and the
PrometheusRule validated against the prometheus-operator CRD schemas
(tests/fixtures/crd, no network); every alert's runbook anchor exists in
docs/troubleshooting.md.  The live side (a real Prometheus scraping a
running serve) is test_monitoring_live.py."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402
import crdcheck  # noqa: E402
from chartlib import objects, one  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "monitoring")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

ON = {"agent": {"shape": "nativeSidecar"},
      "monitoring": {"podMonitor": {"enabled": True},
                     "prometheusRule": {"enabled": True},
                     "dashboard": {"enabled": True}}}


@pytest.fixture(scope="module")
def doc():
    rc, d, err = chartlib.render(chartlib.build_renderer(), values=ON)
    assert rc == 0, err
    return d


def test_off_by_default():
    rc, d, err = chartlib.render(chartlib.build_renderer())
    assert rc == 0, err
    kinds = {o["kind"] for o in objects(d)}
    assert not kinds & {"PodMonitor", "PrometheusRule"}


def test_promtool_checks_the_rendered_rules(doc, tmp_path):
    rule = one(doc, "PrometheusRule")
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    for want in ("PylonAgentDeafPylon", "PylonAgentDrift", "PylonAgentBusLost",
                 "PylonAgentDiscoveryErrors", "PylonAgentApiThrottled", "PylonAgentAbsent"):
        assert want in names
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            assert "troubleshooting.md" in r["annotations"]["description"], r["alert"]
    f = tmp_path / "rules.json"
    f.write_text(json.dumps(rule["spec"]))           # JSON is YAML
    p = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "rules",
                        str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: %d rules found" % len(names) in p.stdout + p.stderr


def test_podmonitor_scrapes_the_agent_port(doc):
    pm = one(doc, "PodMonitor")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["path"] == "/metrics" and ep["port"] == "agent-http"
    dep = one(doc, "Deployment")
    ports = [p.get("name") for c in dep["spec"]["template"]["spec"].get("initContainers", [])
             + dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
    assert "agent-http" in ports


def test_dashboard_configmap_is_valid_json(doc):
    cm = [o for o in objects(doc, "ConfigMap")
          if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(cm) == 1
    (body,) = cm[0]["data"].values()
    dash = json.loads(body)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and all("pylon_agent_" in e or "up" in e for e in exprs)


def rule_names(rule):
    return [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_promtool_unit_tests_fire_and_not_fire_every_alert(doc, tmp_path):
    rule = one(doc, "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(json.dumps(rule["spec"], indent=1))
    src = os.path.join(FIXTURES, "alerts.test.yaml")
    shutil.copy(src, tmp_path / "alerts.test.yaml")
    with open(src) as f:
        tests = yaml.safe_load(f)["tests"]
    fires, quiet = set(), set()
    for t in tests:
        for c in t["alert_rule_test"]:
            (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
    names = set(rule_names(rule))
    assert len(names) == 8
    assert names <= fires, "alerts without a firing case: %s" % sorted(names - fires)
    assert names <= quiet, "alerts without a quiet case: %s" % sorted(names - quiet)
    assert (fires | quiet) <= names, "cases for unknown alerts: %s" % sorted((fires | quiet) - names)
    p = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yaml"], cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout + p.stderr


def test_promtool_unit_tests_catch_a_broken_rule(doc, tmp_path):
    """The unit tests are not vacuous: a rule whose threshold is off (the
    drift alert on 2 instead of 1) makes promtool fail."""
    rule = json.loads(json.dumps(one(doc, "PrometheusRule")))
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            if r["alert"] == "PylonAgentDrift":
                assert r["expr"].endswith("== 1")
                r["expr"] = r["expr"][:-1] + "2"
    (tmp_path / "rules.yaml").write_text(json.dumps(rule["spec"]))
    shutil.copy(os.path.join(FIXTURES, "alerts.test.yaml"), tmp_path / "alerts.test.yaml")
    p = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yaml"], cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "PylonAgentDrift" in p.stdout + p.stderr


FULL = {"agent": {"shape": "nativeSidecar"}, "replicaCount": 3,
        "redis": {"existingSecret": "pylon-redis"}, "database": {"existingSecret": "pylon-db"},
        "bluegreen": {"enabled": True, "colour": "blue"},
        "monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kps"},
                                      "interval": "15s", "scrapeTimeout": "5s",
                                      "metricRelabelings": [{"action": "drop",
                                                             "sourceLabels": ["__name__"],
                                                             "regex": "pylon_agent_proxy_.*"}]},
                       "prometheusRule": {"enabled": True, "labels": {"release": "kps"},
                                          "alertLabels": {"team": "realtime"},
                                          "runbookBase": "https://docs.example/troubleshooting.md",
                                          "disabled": ["PylonAgentApiThrottled"]},
                       "dashboard": {"enabled": True}}}


@pytest.mark.parametrize("values", [ON, FULL], ids=["defaults", "every-option"])
def test_objects_validate_against_the_operator_crds(values):
    rc, d, err = chartlib.render(chartlib.build_renderer(), values=values)
    assert rc == 0, err
    for kind, name in (("PodMonitor", "podmonitor"), ("PrometheusRule", "prometheusrule")):
        obj = one(d, kind)
        crd = crdcheck.load(name)
        assert crd["kind"] == kind and crd["openAPIV3Schema"]["properties"]["spec"]
        assert crdcheck.validate(obj, crd) == [], kind
    if values is FULL:
        assert "PylonAgentApiThrottled" not in rule_names(one(d, "PrometheusRule"))
        assert one(d, "PodMonitor")["metadata"]["labels"]["release"] == "kps"


def test_crd_check_rejects_what_the_api_server_would():
    """crdcheck is not vacuous: typos, wrong types, bad enums and duplicate
    rule groups are errors, as they are for the API server."""
    rc, d, err = chartlib.render(chartlib.build_renderer(), values=ON)
    assert rc == 0, err
    pm, pr = one(d, "PodMonitor"), one(d, "PrometheusRule")
    crd_pm, crd_pr = crdcheck.load("podmonitor"), crdcheck.load("prometheusrule")

    def broken(obj, f):
        o = json.loads(json.dumps(obj))
        f(o)
        return o

    cases = [
        (pm, crd_pm, lambda o: o["spec"]["podMetricsEndpoints"][0].update(prot="agent-http")),
        (pm, crd_pm, lambda o: o["spec"]["podMetricsEndpoints"][0].update(scheme="gopher")),
        (pm, crd_pm, lambda o: o["spec"]["podMetricsEndpoints"][0].update(interval="30 s")),
        (pm, crd_pm, lambda o: o["spec"].update(podTargetLabels="pylon.dev/app")),
        (pm, crd_pm, lambda o: o.update(apiVersion="monitoring.coreos.com/v1beta1")),
        (pr, crd_pr, lambda o: o["spec"]["groups"].append(o["spec"]["groups"][0])),
        (pr, crd_pr, lambda o: o["spec"]["groups"][0]["rules"][0].update(expr=None)),
        (pr, crd_pr, lambda o: o["spec"]["groups"][0]["rules"][0].update(For="5m")),
    ]
    for obj, crd, f in cases:
        assert crdcheck.validate(broken(obj, f), crd), f


def github_anchors(md):
    """The anchors GitHub gives the headings of a Markdown file."""
    out = set()
    for line in md.splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(a)
    return out


def test_every_alert_links_a_runbook_that_exists():
    rc, d, err = chartlib.render(chartlib.build_renderer(), values=FULL)
    assert rc == 0, err
    with open(os.path.join(ROOT, "docs", "troubleshooting.md")) as f:
        anchors = github_anchors(f.read())
    assert "alerts" in anchors
    rules = [r for g in one(d, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert len(rules) == 7
    for r in rules:
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://docs.example/troubleshooting.md#"), url
        anchor = url.split("#", 1)[1]
        assert anchor == r["alert"].lower() and anchor in anchors, (r["alert"], anchor)
        assert ("See https://docs.example/troubleshooting.md#%s." % anchor
                in r["annotations"]["description"])
        assert r["labels"]["team"] == "realtime"
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"]
    # Without runbookBase the description names the file in the repository.
    rc, d, err = chartlib.render(chartlib.build_renderer(), values=ON)
    assert rc == 0, err
    for g in one(d, "PrometheusRule")["spec"]["groups"]:
        for r in g["rules"]:
            assert "runbook_url" not in r["annotations"]
            m = re.search(r"See docs/troubleshooting\.md#([\w-]+)\.", r["annotations"]["description"])
            assert m and m.group(1) in anchors, r["alert"]
