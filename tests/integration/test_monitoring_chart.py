"""The chart's optional monitoring objects (issue 17, partly): rendered with
the real renderer, checked by the real promtool from Debian's prometheus
package.  (The live-scrape and `promtool test rules` parts are not built
yet; see the closing note.)"""
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402
from chartlib import objects, one  # noqa: E402

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
