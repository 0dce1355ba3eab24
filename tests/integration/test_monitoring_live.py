"""A real Prometheus (Debian's prometheus package) scrapes running
`pylon-agent serve` processes on loopback and evaluates the chart's
alerts (issue 17):

- agent A: static platform, 2 replicas (redis mode) on a real
  redis-server, namespace "alpha", with a subscriber on its channel
  standing in for its Pylon;
- agent B: Fly platform (tests/fakes/fly_fake.py, 3 machines: redis
  mode), a TLS-only redis-server behind --bus-proxy, namespace "beta",
  nobody on its channel (a deaf Pylon);
- target C: a port nothing listens on (an agent that does not report).

The queries go through Prometheus' HTTP API: the agents' series with
their labels, the types from the scrape metadata, a histogram with
cumulative buckets; docs/serve.md's metric table and the scrape agree
both ways (names, types, labels); every dashboard query uses only scraped
metrics and returns data; the PrometheusRule, loaded into the same
Prometheus, evaluates without errors and puts exactly the deaf Pylon (B)
and the silent target (C) into pending.  Every wait is bounded; every
process is stopped by pid.
"""
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT, Procs, SLOW, clean_env, free_port, wait_port
from redisfix import RedisServer, Subscriber, make_tls_material

sys.path.insert(0, os.path.join(ROOT, "tests", "chart"))
import chartlib  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PASSWORD = "s3cret-Pa55word"
NS = "shop"
JOB_A, JOB_B, JOB_C = NS + "/pylon-a", NS + "/pylon-b", NS + "/pylon-gone"
# Labels Prometheus adds to every series of a target (the PodMonitor's
# targets have these and more: container, endpoint, ...).
TARGET_LABELS = {"__name__", "job", "instance", "namespace", "pod"}


def _get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


class Prom:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def api(self, path, **params):
        q = urllib.parse.urlencode(params)
        j = _get("%s/api/v1/%s%s" % (self.base, path, "?" + q if q else ""))
        assert j["status"] == "success", j
        return j["data"]

    def query(self, expr):
        d = self.api("query", query=expr)
        assert d["resultType"] == "vector", d
        return d["result"]


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
        except (OSError, ValueError, AssertionError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    pytest.fail("timed out after %ds waiting for %s (last: %r)" % (timeout, what, last))


def rules_for_live():
    """The chart's PrometheusRule, selecting this test's jobs."""
    values = {"agent": {"shape": "nativeSidecar"},
              "monitoring": {"podMonitor": {"enabled": True},
                             "prometheusRule": {"enabled": True,
                                                "selector": 'job=~"%s/.*"' % NS}}}
    rc, doc, err = chartlib.render(chartlib.build_renderer(), values=values)
    assert rc == 0, err
    return chartlib.one(doc, "PrometheusRule")["spec"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from fly_fake import APP, SELF_ID, TOKEN, FlyFake
    tmp = tmp_path_factory.mktemp("live")
    procs, servers, closers = Procs(), [], []
    try:
        r1 = RedisServer(str(tmp), requirepass=PASSWORD)
        servers.append(r1)
        r1.start()
        sub = Subscriber(r1, "alpha:cluster:bus")     # A's Pylon, listening
        closers.append(sub.close)
        mat = make_tls_material(str(tmp / "tls"))
        r2 = RedisServer(str(tmp), requirepass=PASSWORD, tls=mat)
        servers.append(r2)
        r2.start()
        fake = FlyFake("three_regions").start()
        closers.append(fake.stop)

        pa, pb, pc, pproxy = free_port(), free_port(), free_port(), free_port()
        procs.start_agent(["serve", "--platform", "static", "--replicas", "2",
                           "--namespace", "alpha", "--listen", "127.0.0.1:%d" % pa,
                           "--interval", "200ms"],
                          env=clean_env(PYLON_AGENT_REDIS_URL=r1.url()))
        procs.start_agent(["serve", "--platform", "fly", "--fly-api-url", fake.url,
                           "--namespace", "beta", "--listen", "127.0.0.1:%d" % pb,
                           "--interval", "200ms", "--resync", "1s", "--api-timeout", "5s"],
                          env=clean_env(FLY_APP_NAME=APP, FLY_MACHINE_ID=SELF_ID,
                                        FLY_API_TOKEN=TOKEN, FLY_PROCESS_GROUP="app",
                                        PYLON_AGENT_FLY_RESOLVER="none",
                                        PYLON_AGENT_FLY_JITTER_MS="0",
                                        PYLON_AGENT_REDIS_URL=r2.url(host="localhost"),
                                        PYLON_AGENT_REDIS_CA_FILE=mat.ca,
                                        PYLON_AGENT_BUS_PROXY="127.0.0.1:%d" % pproxy))
        wait_port(pa)
        wait_port(pb)

        (tmp / "rules.yaml").write_text(json.dumps(rules_for_live(), indent=1))
        scrape = []
        for job, port, pod in ((JOB_A, pa, "pylon-a-0"), (JOB_B, pb, "pylon-b-0"),
                               (JOB_C, pc, "pylon-gone-0")):
            scrape.append({"job_name": job, "metrics_path": "/metrics", "scheme": "http",
                           "static_configs": [{"targets": ["127.0.0.1:%d" % port],
                                               "labels": {"namespace": NS, "pod": pod}}]})
        cfg = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                          "evaluation_interval": "1s"},
               "rule_files": [str(tmp / "rules.yaml")],
               "scrape_configs": scrape}
        (tmp / "prometheus.yml").write_text(json.dumps(cfg, indent=1))   # JSON is YAML
        pport = free_port()
        prom_log = open(str(tmp / "prometheus.log"), "wb")
        closers.append(prom_log.close)
        procs.start([PROMETHEUS, "--config.file=%s" % (tmp / "prometheus.yml"),
                     "--storage.tsdb.path=%s" % (tmp / "data"),
                     "--storage.tsdb.retention.time=1h",
                     "--web.listen-address=127.0.0.1:%d" % pport,
                     "--log.level=warn"], stdout=prom_log, stderr=prom_log)
        prom = Prom(pport)
        wait_until(lambda: urllib.request.urlopen(prom.base + "/-/ready", timeout=2).status
                   == 200, 30, "Prometheus ready")

        def settled():
            return (len(prom.query("pylon_agent_bus_subscribers")) == 2
                    and prom.query('pylon_agent_api_requests_total{code="200"}')
                    and len(prom.query("pylon_agent_bus_check_seconds_count > 0")) == 2
                    and prom.query("pylon_agent_proxy_connections")
                    # two scrapes of growing counters: rate() has data
                    and len(prom.query("rate(pylon_agent_redis_commands_total[1m]) > 0")) == 2
                    and prom.query("up == 0"))
        try:
            wait_until(settled, 40, "both agents scraped with subscribers, API "
                       "requests, checks and proxy metrics")
        except BaseException:
            sys.stderr.write(open(str(tmp / "prometheus.log")).read()[-3000:])
            raise
        yield {"prom": prom, "ports": (pa, pb, pc), "tmp": tmp}
    finally:
        procs.stop_all()
        for c in reversed(closers):
            c()
        for s in reversed(servers):
            s.stop()


def by_job(result):
    out = {}
    for s in result:
        out.setdefault(s["metric"]["job"], []).append(s)
    return out


def test_the_agents_series_are_scraped_with_their_labels(live):
    prom = live["prom"]
    up = {s["metric"]["job"]: s["value"][1] for s in prom.query("up")}
    assert up == {JOB_A: "1", JOB_B: "1", JOB_C: "0"}
    modes = {(s["metric"]["job"], s["metric"]["mode"]): s["value"][1]
             for s in prom.query("pylon_agent_bus_mode")}
    assert modes == {(JOB_A, "redis"): "1", (JOB_A, "noop"): "0",
                     (JOB_B, "redis"): "1", (JOB_B, "noop"): "0"}
    peers = {s["metric"]["job"]: s["value"][1] for s in prom.query("pylon_agent_peers")}
    assert peers == {JOB_A: "2", JOB_B: "3"}
    subs = {s["metric"]["job"]: s["value"][1] for s in prom.query("pylon_agent_bus_subscribers")}
    assert subs == {JOB_A: "1", JOB_B: "0"}
    ready = {s["metric"]["job"]: s["value"][1] for s in prom.query("pylon_agent_bus_ready")}
    assert ready == {JOB_A: "1", JOB_B: "1"}
    (bi,) = prom.query('pylon_agent_build_info{job="%s"}' % JOB_A)
    assert bi["value"][1] == "1"
    assert re.match(r"\d+\.\d+", bi["metric"]["version"]) and bi["metric"]["revision"]
    assert bi["metric"]["microhttpd"]
    codes = {s["metric"]["code"] for s in prom.query("pylon_agent_api_requests_total")}
    assert codes == {"200"}
    assert set(by_job(prom.query("pylon_agent_api_requests_total"))) == {JOB_B}
    dirs = {s["metric"]["direction"] for s in prom.query("pylon_agent_proxy_bytes_total")}
    assert dirs == {"up", "down"}
    # No secret reaches Prometheus: not in any label of any series.
    every = prom.api("series", **{"match[]": '{job=~"%s/.*"}' % NS})
    assert every and PASSWORD not in json.dumps(every)


def test_histogram_has_cumulative_buckets(live):
    prom = live["prom"]
    for job in (JOB_A, JOB_B):
        res = prom.query('pylon_agent_bus_check_seconds_bucket{job="%s"}' % job)
        buckets = sorted(((float(s["metric"]["le"]), float(s["value"][1])) for s in res))
        assert len(buckets) >= 5 and buckets[-1][0] == float("inf")
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), "buckets are not cumulative: %r" % buckets
        (cnt,) = prom.query('pylon_agent_bus_check_seconds_count{job="%s"}' % job)
        assert float(cnt["value"][1]) >= buckets[-1][1] > 0
        (q,) = prom.query('histogram_quantile(0.5, rate(pylon_agent_bus_check_seconds_bucket'
                          '{job="%s"}[1m]))' % job)
        assert 0 < float(q["value"][1]) < 2.5


def scraped_families(prom):
    """{family: (type, set of label names)} from the scrape metadata and
    the series of both agents."""
    fams = {}
    for job in (JOB_A, JOB_B):
        for m in prom.api("targets/metadata", match_target='{job="%s"}' % job):
            if m["metric"].startswith("pylon_agent_"):
                t = fams.setdefault(m["metric"], [m["type"], set()])
                assert t[0] == m["type"], m
    series = prom.api("series", **{"match[]": '{__name__=~"pylon_agent_.+"}'})
    for s in series:
        name = s["__name__"]
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in fams else name
        assert fam in fams, "series %s has no metadata" % name
        labels = set(s) - TARGET_LABELS - ({"le"} if name.endswith("_bucket") else set())
        fams[fam][1] |= labels
    return {k: (v[0], v[1]) for k, v in fams.items()}


def documented_families():
    """{family: (type, set of label names)} from docs/serve.md's /metrics table."""
    with open(os.path.join(ROOT, "docs", "serve.md")) as f:
        text = f.read()
    section = text[text.index("### `/metrics`"):text.index("## 2. ")]
    out = {}
    for m in re.finditer(r"^\| `(pylon_agent_\w+)(\{[^`]*\})?` \| (\w+) \|", section, re.M):
        labels = set(re.findall(r"(\w+)(?:=|,|\})", m.group(2) or ""))
        out[m.group(1)] = (m.group(3), labels)
    return out


def test_docs_name_every_scraped_metric_and_nothing_else(live):
    scraped = scraped_families(live["prom"])
    documented = documented_families()
    assert len(documented) >= 15 and len(scraped) >= 15
    assert sorted(set(scraped) - set(documented)) == [], "scraped but not in docs/serve.md"
    assert sorted(set(documented) - set(scraped)) == [], "in docs/serve.md but not scraped"
    for name, (typ, labels) in documented.items():
        assert scraped[name][0] == typ, "%s: docs say %s, the scrape %s" % (
            name, typ, scraped[name][0])
        assert scraped[name][1] == labels, "%s: docs list labels %s, the scrape has %s" % (
            name, sorted(labels), sorted(scraped[name][1]))


def dashboard_queries():
    with open(os.path.join(ROOT, "charts", "pylon", "dashboards", "pylon-agent.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict) and "label_values(" in q.get("query", ""):
            exprs.append(re.match(r"label_values\((.*), \w+\)$", q["query"]).group(1))
    return exprs


def test_dashboard_queries_use_scraped_metrics_and_return_data(live):
    prom = live["prom"]
    names = set(prom.api("label/__name__/values"))
    exprs = dashboard_queries()
    assert len(exprs) >= 15
    for e in exprs:
        for ident in re.findall(r"\b(pylon_agent_\w+|up)\b(?=\s*[{\[)])", e):
            assert ident in names, "dashboard query %r uses %s, which no agent exports" % (e, ident)
        q = (e.replace("$namespace", ".*").replace("$job", ".*")
             .replace("$__rate_interval", "1m"))
        assert prom.query(q), "dashboard query %r returns nothing from live agents" % q


def test_alerts_evaluate_on_the_live_series(live):
    """The rules load and evaluate without errors; exactly the deaf Pylon
    (B: one pod in redis mode, nobody on its channel) and the silent
    target (C) are pending (each alert has a `for:` of minutes)."""
    prom = live["prom"]

    def rules():
        d = prom.api("rules", type="alert")
        rs = {r["name"]: r for g in d["groups"] for r in g["rules"]}
        evaluated = all(not r.get("lastEvaluation", "0001").startswith("0001")
                        for r in rs.values())
        if len(rs) == 8 and evaluated and rs["PylonAgentDeafPylon"]["alerts"] \
                and rs["PylonAgentDown"]["alerts"]:
            return rs
        return None
    rs = wait_until(rules, 20, "every alert rule evaluated")
    for name, r in rs.items():
        assert r["health"] == "ok", (name, r.get("lastError"))
    states = {n: r["state"] for n, r in rs.items()}
    assert states == {"PylonAgentDown": "pending", "PylonAgentDeafPylon": "pending",
                      "PylonAgentAbsent": "inactive", "PylonAgentDrift": "inactive",
                      "PylonAgentBusLost": "inactive", "PylonAgentBusChecksFailing": "inactive",
                      "PylonAgentDiscoveryErrors": "inactive",
                      "PylonAgentApiThrottled": "inactive"}
    (deaf,) = rs["PylonAgentDeafPylon"]["alerts"]
    assert deaf["labels"] == {"alertname": "PylonAgentDeafPylon", "severity": "critical",
                              "job": JOB_B, "namespace": NS}
    assert deaf["annotations"]["description"].startswith("Only 0 subscriber(s)")
    (down,) = rs["PylonAgentDown"]["alerts"]
    assert down["labels"]["job"] == JOB_C and down["labels"]["pod"] == "pylon-gone-0"
    # The same expressions, queried directly.
    deaf_expr = rs["PylonAgentDeafPylon"]["query"]
    assert [s["metric"]["job"] for s in prom.query(deaf_expr)] == [JOB_B]
    assert prom.query(rs["PylonAgentBusLost"]["query"]) == []
