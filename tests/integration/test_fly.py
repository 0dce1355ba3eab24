"""Fly.io platform: the real binary against the fake Machines API.

Every fixture of tests/fakes/fly_fake.py is one case: peers, mode and the
reason naming what was counted and what was excluded.  Faults: 401/403,
404, 429 with and without Retry-After, 5xx, hang, garbage, oversized and
empty bodies.  The request log proves the agent never asks for
summary=true, sends the right token scheme, and never prints the token.
"""
import json
import os
import time

import pytest

from conftest import SLOW, clean_env, run_agent
from fly_fake import APP, RELEASE_ID, SELF_ID, TOKEN

# decide touches no Redis (no --prove); the URL only has to parse.
REDIS_URL = "redis://127.0.0.1:1/0"


def fly_env(**kw):
    base = dict(FLY_APP_NAME=APP, FLY_MACHINE_ID=SELF_ID, FLY_API_TOKEN=TOKEN,
                FLY_PROCESS_GROUP="app", FLY_REGION="ord",
                PYLON_AGENT_FLY_JITTER_MS="0")
    base.update(kw)
    return clean_env(**base)


def decide(fake, *args, env=None, redis=True, timeout=30):
    argv = ["decide", "--platform", "fly", "--output", "json",
            "--fly-api-url", fake.url, "--api-timeout", "2s"]
    if redis:
        argv += ["--redis-url", REDIS_URL]
    argv += list(args)
    return run_agent(argv, env=env if env is not None else fly_env(), timeout=timeout)


def assert_no_token(p):
    secret = TOKEN.split("_", 1)[1]
    for stream in (p.stdout, p.stderr):
        assert TOKEN not in stream and secret not in stream, stream


def ok_json(p):
    assert p.returncode == 0, "rc=%d stderr=%s" % (p.returncode, p.stderr)
    assert_no_token(p)
    return json.loads(p.stdout)


# scenario, extra env, extra args, peers, mode, reason must contain
CASES = [
    ("one", {}, [], 1, "noop",
     ["fly app pylon-demo group app: 1 machine (1 started)"]),
    ("three_regions", {}, [], 3, "redis",
     ["group app: 3 machines (3 started)"]),
    ("started_stopped", {}, [], 2, "redis",
     ["2 machines (1 started, 1 stopped)"]),
    ("suspended", {}, [], 2, "redis",
     ["2 machines (1 started, 1 suspended)"]),
    ("standby", {}, [], 1, "noop",
     ["1 machine (1 started)", "not counted: 1 standby"]),
    ("app_worker", {}, [], 2, "redis",
     ["group app: 2 machines", "not counted: 3 in other groups (worker)"]),
    ("app_worker", {"FLY_PROCESS_GROUP": "worker"}, [], 3, "redis",
     ["group worker: 3 machines", "2 in other groups (app)"]),
    ("app_worker", {}, ["--fly-group", "worker"], 3, "redis",
     ["group worker: 3 machines"]),
    ("release_only", {"FLY_MACHINE_ID": RELEASE_ID, "RELEASE_COMMAND": "1",
                      "FLY_PROCESS_GROUP": "fly_app_release_command"}, [], 1, "noop",
     ["group app: 0 machines", "seen from a release_command machine", "min-peers=1",
      "not counted: 1 release_command"]),
    ("release_only", {"FLY_MACHINE_ID": RELEASE_ID, "RELEASE_COMMAND": "1",
                      "FLY_PROCESS_GROUP": "fly_app_release_command"},
     ["--min-peers", "3"], 3, "redis", ["group app: 0 machines", "min-peers=3"]),
    ("release_old_app", {"FLY_MACHINE_ID": RELEASE_ID, "RELEASE_COMMAND": "1",
                         "FLY_PROCESS_GROUP": "fly_app_release_command"}, [], 3, "redis",
     ["group app: 3 machines (2 started, 1 stopped)", "not counted: 1 release_command"]),
    ("bluegreen", {}, [], 4, "redis",
     ["group app: 4 machines (4 started)", "bluegreen: 2 green + 2 blue counted"]),
    ("canary", {}, [], 1, "noop", ["1 machine (1 started)", "not counted: 1 canary"]),
    ("destroyed", {}, [], 1, "noop",
     ["1 machine (1 started)", "2 destroyed/destroying", "1 failed"]),
    ("unreachable", {}, [], 2, "redis",
     ["2 machines (2 started)", "1 on unreachable hosts"]),
    ("legacy", {}, [], 2, "redis",
     ["group app: 2 machines", "1 in other groups (worker)"]),
    ("empty", {}, [], 1, "noop",
     ["group app: 1 machine", "this machine %s not listed yet, counted" % SELF_ID]),
]


@pytest.mark.parametrize("scenario,env,args,peers,mode,reason", CASES,
                         ids=["%s%s" % (c[0], "-" + "-".join(c[2]).strip("-") if c[2] else
                                        ("-env" if c[1] else "")) + str(i)
                              for i, c in enumerate(CASES)])
def test_fixture_counts(fly, scenario, env, args, peers, mode, reason):
    fake = fly(scenario)
    p = decide(fake, *args, env=fly_env(**env))
    j = ok_json(p)
    assert j["platform"] == "fly"
    assert j["peers"] == peers, j
    assert j["mode"] == mode, j
    for r in reason:
        assert r in j["reason"], (r, j["reason"])
    assert j["discovery_failed"] is False
    assert j["instance"] == env.get("FLY_MACHINE_ID", SELF_ID)
    lists = fake.list_requests()
    assert len(lists) == 1
    assert lists[0]["path"] == "/v1/apps/%s/machines" % APP
    assert "summary" not in lists[0]["query"]
    assert lists[0]["auth"] == "FlyV1 " + TOKEN


def test_text_output_and_no_url_needed_for_one(fly):
    fake = fly("one")
    p = run_agent(["decide", "--platform", "fly", "--fly-api-url", fake.url],
                  env=fly_env())
    assert p.returncode == 0, p.stderr
    assert "mode:      noop" in p.stdout
    assert "group app: 1 machine (1 started)" in p.stdout
    assert_no_token(p)


def test_auto_platform_detects_fly(fly):
    fake = fly("three_regions")
    p = run_agent(["decide", "--output", "json", "--fly-api-url", fake.url,
                   "--redis-url", REDIS_URL], env=fly_env())
    j = ok_json(p)
    assert j["platform"] == "fly" and j["peers"] == 3


def test_several_machines_without_redis_url_is_78(fly):
    fake = fly("three_regions")
    p = decide(fake, redis=False)
    assert p.returncode == 78, p.stderr
    assert "3 peers" in p.stderr and "group app: 3 machines" in p.stderr
    assert_no_token(p)


@pytest.mark.parametrize("token,header", [
    ("plain-token-abc", "Bearer plain-token-abc"),
    ("Bearer already-bearer", "Bearer already-bearer"),
    ("FlyV1 fm2_aaa,fm2_bbb", "FlyV1 fm2_aaa,fm2_bbb"),
    ("fm1r_readonly", "FlyV1 fm1r_readonly"),
    ("fm1a_abc", "FlyV1 fm1a_abc"),
    ("  fm2_padded  ", "FlyV1 fm2_padded"),
])
def test_token_header_scheme(fly, token, header):
    bare = header.split(" ", 1)[1]
    fake = fly("one", token=bare)
    p = decide(fake, env=fly_env(FLY_API_TOKEN=token))
    j = ok_json(p)
    assert j["peers"] == 1
    assert fake.list_requests()[0]["auth"] == header
    assert bare not in p.stdout + p.stderr


def test_debug_log_has_request_but_no_token(fly):
    fake = fly("three_regions")
    p = decide(fake, env=fly_env(PYLON_AGENT_DEBUG="1"))
    j = ok_json(p)
    assert j["peers"] == 3
    assert "GET %s/v1/apps/%s/machines -> 200" % (fake.url, APP) in p.stderr
    assert "Authorization" not in p.stderr


# ---- faults ------------------------------------------------------------

def failing(fake, *args, env=None, timeout=30):
    """decide with --on-discovery-error fail: the error itself."""
    p = decide(fake, "--on-discovery-error", "fail", *args, env=env, timeout=timeout)
    assert_no_token(p)
    return p


def test_401_names_the_token_and_how_to_fix(fly):
    fake = fly("401")
    p = failing(fake)
    assert p.returncode == 75, p.stderr
    assert "HTTP 401" in p.stderr and "unauthorized" in p.stderr
    assert "FLY_API_TOKEN is wrong" in p.stderr
    assert "fly tokens create readonly" in p.stderr
    assert len(fake.list_requests()) == 1, "4xx must not be retried"


def test_403_under_scoped_token(fly):
    fake = fly("403")
    p = failing(fake)
    assert p.returncode == 75
    assert "HTTP 403" in p.stderr and "not allowed to read app pylon-demo" in p.stderr


def test_missing_token(fly):
    fake = fly("one")
    env = fly_env()
    env.pop("FLY_API_TOKEN")
    p = failing(fake, env=env)
    assert p.returncode == 75
    assert "FLY_API_TOKEN is not set" in p.stderr
    assert "fly tokens create readonly" in p.stderr
    assert fake.list_requests()[0]["auth"] is None


def test_404_unknown_app(fly):
    fake = fly("one")
    p = failing(fake, env=fly_env(FLY_APP_NAME="other-app"))
    assert p.returncode == 75
    assert "HTTP 404" in p.stderr and "app other-app not found" in p.stderr
    assert '"app not found"' in p.stderr
    assert len(fake.list_requests()) == 1


def test_bad_app_name_is_config_error(fly):
    fake = fly("one")
    p = failing(fake, env=fly_env(FLY_APP_NAME="../etc"))
    assert p.returncode == 78
    assert "FLY_APP_NAME" in p.stderr
    assert fake.requests == []


def test_429_without_retry_after_is_retried(fly):
    fake = fly("429", fault_count=2)
    j = ok_json(decide(fake))
    assert j["peers"] == 1 and j["discovery_failed"] is False
    assert len(fake.list_requests()) == 3


def test_429_retry_after_seconds_is_honoured(fly):
    fake = fly("429_retry_after", fault_count=1)
    j = ok_json(decide(fake))
    assert j["peers"] == 1
    reqs = fake.list_requests()
    assert len(reqs) == 2
    gap = reqs[1]["time"] - reqs[0]["time"]
    assert 0.9 <= gap < 3.0 * SLOW, gap


def test_429_retry_after_http_date_is_honoured(fly):
    fake = fly("429_date", fault_count=1)
    j = ok_json(decide(fake, "--api-timeout", "3s"))
    assert j["peers"] == 1
    reqs = fake.list_requests()
    assert len(reqs) == 2
    # The date has one-second resolution: 1-2 s later.
    assert 0.5 <= reqs[1]["time"] - reqs[0]["time"] < 3.5 * SLOW


def test_429_forever_gives_up_bounded(fly):
    fake = fly("429")
    t0 = time.monotonic()
    p = failing(fake)
    assert p.returncode == 75
    assert "HTTP 429" in p.stderr and "rate limited" in p.stderr
    n = len(fake.list_requests())
    assert 2 <= n <= 5, n
    assert time.monotonic() - t0 < 15 * SLOW


def test_500_then_ok(fly):
    fake = fly("500", fault_count=1)
    j = ok_json(decide(fake))
    assert j["peers"] == 1
    assert len(fake.list_requests()) == 2


def test_500_forever_names_fly_error(fly):
    fake = fly("500")
    p = failing(fake)
    assert p.returncode == 75
    assert "HTTP 500" in p.stderr and "internal error, request id 01ABC" in p.stderr


def test_hang_times_out(fly):
    fake = fly("hang", hang_s=20)
    t0 = time.monotonic()
    p = failing(fake, "--api-timeout", "500ms")
    took = time.monotonic() - t0
    assert p.returncode == 75
    assert "timed out" in p.stderr
    assert took < 10 * SLOW, took


@pytest.mark.parametrize("fault,words", [
    ("garbage", "not JSON"),
    ("truncated", "not JSON"),
    ("object", "not a list of machines"),
    ("huge", "response larger than 4194304 bytes"),
])
def test_malformed_bodies(fly, fault, words):
    fake = fly(fault)
    p = failing(fake)
    assert p.returncode == 75, p.stderr
    assert words in p.stderr


def test_refused_port(fly):
    fake = fly("one")
    url = fake.url
    fake.stop()
    p = run_agent(["decide", "--platform", "fly", "--output", "json",
                   "--fly-api-url", url, "--api-timeout", "500ms",
                   "--on-discovery-error", "fail"], env=fly_env())
    assert p.returncode == 75
    assert "connection refused" in p.stderr


def test_discovery_error_default_policy_uses_configured_redis(fly):
    fake = fly("401")
    p = decide(fake)
    j = ok_json(p)
    assert j["mode"] == "redis" and j["discovery_failed"] is True
    assert "HTTP 401" in j["reason"]
    assert "fly discovery failed" in p.stderr


def test_discovery_error_without_url_is_noop(fly):
    fake = fly("500")
    j = ok_json(decide(fake, redis=False))
    assert j["mode"] == "noop" and j["discovery_failed"] is True


def test_jitter_default_delays_first_call_within_bound(fly):
    fake = fly("one")
    env = fly_env()
    env.pop("PYLON_AGENT_FLY_JITTER_MS")
    t0 = time.monotonic()
    j = ok_json(decide(fake, env=env))
    assert j["peers"] == 1
    assert time.monotonic() - t0 < 5 * SLOW


# ---- metadata reporting --------------------------------------------------

def run_init(fake, tmp_path, *args, env=None):
    envfile = tmp_path / "cluster.env"
    p = run_agent(["init", "--platform", "fly", "--fly-api-url", fake.url,
                   "--api-timeout", "2s", "--env-file", str(envfile)] + list(args),
                  env=env if env is not None else fly_env())
    assert_no_token(p)
    return p, envfile


def test_report_metadata_posts_mode(fly, tmp_path):
    fake = fly("one")
    p, envfile = run_init(fake, tmp_path, "--report", "log,metadata")
    assert p.returncode == 0, p.stderr
    assert "unset PYLON_CLUSTER_BUS" in envfile.read_text()
    posts = fake.metadata_posts()
    assert len(posts) == 1
    assert posts[0]["path"] == "/v1/apps/%s/machines/%s/metadata/pylon_cluster_bus" % (APP, SELF_ID)
    assert json.loads(posts[0]["body"]) == {"value": "noop"}
    assert posts[0]["auth"] == "FlyV1 " + TOKEN
    assert posts[0]["content_type"] == "application/json"
    m = [m for m in fake.machines if m["id"] == SELF_ID][0]
    assert m["config"]["metadata"]["pylon_cluster_bus"] == "noop"


def test_report_metadata_failure_is_a_warning(fly, tmp_path):
    fake = fly("500", fault_on="POST")
    p, envfile = run_init(fake, tmp_path, "--report", "metadata")
    assert p.returncode == 0, p.stderr
    assert envfile.exists()
    assert "reporting to fly failed" in p.stderr and "HTTP 500" in p.stderr
    assert len(fake.metadata_posts()) >= 1


def test_no_metadata_without_report_metadata(fly, tmp_path):
    fake = fly("one")
    p, _ = run_init(fake, tmp_path)
    assert p.returncode == 0, p.stderr
    assert fake.metadata_posts() == []


def test_report_metadata_redis_mode_after_proof(fly, tmp_path, procs):
    import shutil
    from conftest import free_port, wait_port
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path)])
    wait_port(port)
    fake = fly("three_regions")
    p, envfile = run_init(fake, tmp_path, "--report", "log,metadata", "--redis-url",
                          "redis://127.0.0.1:%d/0" % port, "--namespace", "demo")
    assert p.returncode == 0, p.stderr
    assert "export PYLON_CLUSTER_BUS=" in envfile.read_text()
    posts = fake.metadata_posts()
    assert [json.loads(x["body"]) for x in posts] == [{"value": "redis"}]
    assert "bus mode: redis — 3 peers (fly app pylon-demo group app: 3 machines" in p.stderr


def test_report_metadata_unavailable_when_bus_fails(fly, tmp_path):
    from conftest import free_port
    fake = fly("three_regions")
    p, envfile = run_init(fake, tmp_path, "--report", "metadata", "--redis-url",
                          "redis://127.0.0.1:%d/0" % free_port(), "--timeout", "500ms")
    assert p.returncode == 69, p.stderr
    assert not envfile.exists()
    assert [json.loads(x["body"]) for x in fake.metadata_posts()] == [{"value": "unavailable"}]


# ---- serve's steady state: drift from Fly's internal DNS (SPEC 10) --------
#
# serve lists the Machines API once at boot; every --resync it reads
# all.vms.<app>.internal TXT and <group>.process.<app>.internal AAAA from
# --fly-resolver (here tests/fakes/fly_dns_fake.py on loopback) and lists
# again only when the DNS shows a change that could flip the mode.

from fly_fake import SCENARIOS  # noqa: E402

RESYNC = "400ms"
M_SELF = (SELF_ID, "ord", "app", True)
M_AMS = ("e784e23ce06838", "ams", "app", True)
M_SYD = ("148e272b4d3989", "syd", "app", True)


@pytest.fixture
def dns():
    from fly_dns_fake import FlyDnsFake
    f = FlyDnsFake().start()
    try:
        yield f
    finally:
        f.stop()


def serve_fly(procs, fake, dns, *extra, env=None):
    from conftest import free_port, wait_port
    from test_serve import http, wait_for
    port = free_port()
    argv = ["serve", "--platform", "fly", "--fly-api-url", fake.url, "--fly-resolver",
            dns.addr, "--listen", "127.0.0.1:%d" % port, "--interval", "200ms",
            "--resync", RESYNC, "--api-timeout", "2s"] + list(extra)
    p = procs.start_agent(argv, env=env if env is not None else fly_env())
    wait_port(port, timeout=10)
    wait_for(lambda: http(port, "/startupz")[0] == 200, 15, what="/startupz")
    return p, port


def resyncs(dns):
    """Resyncs seen by the DNS fake (one all.vms TXT question each)."""
    return dns.count("all.vms.%s.internal" % APP, "TXT")


def test_serve_steady_state_makes_no_api_call(fly, dns, procs):
    from test_serve import metrics, status_json, value, wait_for
    fake = fly("one")
    dns.set_machines(APP, [M_SELF, ("e1", "ord", "worker", True)])
    p, port = serve_fly(procs, fake, dns)
    assert len(fake.list_requests()) == 1
    # The boot read plus 6 resyncs: the DNS answer never changes.
    wait_for(lambda: resyncs(dns) >= 7, 20, what="6 resyncs from the DNS")
    assert len(fake.list_requests()) == 1, fake.requests
    assert dns.count("app.process.%s.internal" % APP, "AAAA") >= 7
    st = status_json(port)
    assert st["mode"] == "noop" and st["drift"] is False and st["peers"] == 1
    fams = metrics(port)[0]
    assert value(fams, "pylon_agent_discovery_errors_total") == 0
    # The agent's own counters agree: one API request, 2 questions a resync.
    assert api_total(fams) == 1
    assert value(fams, "pylon_agent_dns_queries_total", result="ok") >= 14
    assert value(fams, "pylon_agent_dns_queries_total", result="error") == 0
    assert p.poll() is None


def api_total(fams):
    return sum(s[2] for fam in fams.values() for s in fam["samples"]
               if s[0] == "pylon_agent_api_requests_total")


def test_serve_autostop_in_redis_mode_lists_nothing(fly, dns, procs, tmp_path):
    # 3 machines, 2 then autostopped: fewer AAAA, all.vms unchanged (a
    # stopped machine stays deployed and the list would count it): the
    # mode cannot flip, no list.
    from test_serve import Redis, status_json, wait_for
    r = Redis(procs, tmp_path).start()
    fake = fly("three_regions")
    dns.set_machines(APP, [M_SELF, M_AMS, M_SYD])
    p, port = serve_fly(procs, fake, dns, "--redis-url", r.url)
    assert status_json(port)["mode"] == "redis"
    n = resyncs(dns)
    dns.set_machines(APP, [M_SELF, M_AMS[:3] + (False,), M_SYD[:3] + (False,)])
    wait_for(lambda: resyncs(dns) >= n + 4, 20, what="4 resyncs after the autostop")
    assert len(fake.list_requests()) == 1
    st = status_json(port)
    assert st["mode"] == "redis" and st["peers"] == 3 and st["drift"] is False
    # Then the two stopped machines are destroyed: ids gone from all.vms
    # and one started machine left: one list, drift (redis pod, noop
    # topology).
    with fake.lock:
        fake.machines = json.loads(json.dumps(SCENARIOS["one"]))
    dns.set_machines(APP, [M_SELF])
    wait_for(lambda: status_json(port)["drift"], 10, what="drift after the scale-down")
    n = resyncs(dns)
    wait_for(lambda: resyncs(dns) >= n + 3, 20, what="3 resyncs after the scale-down")
    assert len(fake.list_requests()) == 2
    st = status_json(port)
    assert st["mode"] == "redis" and st["peers"] == 1


def test_serve_dns_change_that_flips_lists_once_and_reports_drift(fly, dns, procs, tmp_path):
    from test_serve import Redis, metrics, status_json, value, wait_for
    r = Redis(procs, tmp_path).start()
    fake = fly("one")
    dns.set_machines(APP, [M_SELF])
    p, port = serve_fly(procs, fake, dns, "--redis-url", r.url)
    wait_for(lambda: resyncs(dns) >= 3, 10, what="2 resyncs")
    assert len(fake.list_requests()) == 1
    # Scaled to three: the API and the DNS say so.
    with fake.lock:
        fake.machines = json.loads(json.dumps(SCENARIOS["three_regions"]))
    dns.set_machines(APP, [M_SELF, M_AMS, M_SYD])
    wait_for(lambda: status_json(port)["drift"], 10, what="drift in /status")
    st = status_json(port)
    assert st["mode"] == "noop" and st["peers"] == 3
    assert value(metrics(port)[0], "pylon_agent_drift") == 1
    n = resyncs(dns)
    wait_for(lambda: resyncs(dns) >= n + 4, 20, what="4 resyncs after the change")
    # Exactly one list for the change: the new DNS answer is the baseline.
    assert len(fake.list_requests()) == 2, [r["time"] for r in fake.list_requests()]
    err = stderr_of_serve(procs, p)
    assert "DNS shows 2 other machines in app %s (new ones), 3 started in group app" % APP \
        in err
    assert "drift: this pod runs noop but the topology now wants redis" in err
    assert TOKEN not in err


def stderr_of_serve(procs, p):
    from test_serve import stderr_of
    return stderr_of(procs, p)


def test_serve_dns_failure_keeps_the_last_decision(fly, dns, procs):
    from test_serve import metrics, status_json, value, wait_for
    fake = fly("one")
    dns.set_machines(APP, [M_SELF])
    p, port = serve_fly(procs, fake, dns)
    for fault in ("drop", "servfail", "garbage", "wrong_id"):
        before = value(metrics(port)[0], "pylon_agent_discovery_errors_total")
        with dns.lock:
            dns.fault = fault
        wait_for(lambda: value(metrics(port)[0], "pylon_agent_discovery_errors_total")
                 > before, 15, what="a discovery error counted (%s)" % fault)
        st = status_json(port)
        assert st["mode"] == "noop" and st["peers"] == 1 and st["drift"] is False, st
    with dns.lock:
        dns.fault = None
    # No fallback to the Machines API while the DNS fails.
    assert len(fake.list_requests()) == 1
    fams = metrics(port)[0]
    assert value(fams, "pylon_agent_dns_queries_total", result="error") >= 4
    assert api_total(fams) == 1
    err = stderr_of_serve(procs, p)
    assert "resync from the internal DNS (the last decision stays; --fly-resolver)" in err
    assert "no reply within 2000 ms" in err
    assert "SERVFAIL" in err
    assert "keeping the last decision" in err


def test_serve_truncated_udp_answer_is_read_over_tcp(fly, dns, procs):
    from test_serve import status_json, wait_for
    fake = fly("one")
    # 40 machines of another group: the TXT is over 512 bytes.
    dns.set_machines(APP, [M_SELF] + [("%014x" % (0xabc000 + i), "ord", "worker", True)
                                      for i in range(40)])
    dns.fault = "udp_limit"
    p, port = serve_fly(procs, fake, dns)
    wait_for(lambda: resyncs(dns) >= 8, 20, what="resyncs")
    with dns.lock:
        tcp = [q for q in dns.queries if q["proto"] == "tcp" and q["type"] == "TXT"]
    assert len(tcp) >= 3
    assert len(fake.list_requests()) == 1
    assert status_json(port)["mode"] == "noop"


def test_serve_boot_429_retry_after_is_waited(fly, dns, procs):
    from test_serve import status_json
    fake = fly("429_retry_after", fault_count=1)
    dns.set_machines(APP, [M_SELF])
    _, port = serve_fly(procs, fake, dns)
    reqs = fake.list_requests()
    assert len(reqs) == 2
    assert reqs[1]["time"] - reqs[0]["time"] >= 0.95   # Retry-After: 1
    st = status_json(port)
    assert st["mode"] == "noop" and st["peers"] == 1


def test_serve_boot_spread_bound_from_all_vms(fly, dns, procs):
    # PYLON_AGENT_FLY_JITTER_MS unset: serve's own bound.  50 machines in
    # all.vms and --fly-boot-spread 1500ms: bound 1.5 s; one machine: 0.
    env = fly_env(PYLON_AGENT_DEBUG="1")
    env.pop("PYLON_AGENT_FLY_JITTER_MS")
    fake = fly("one")
    dns.set_machines(APP, [M_SELF] + [("%014x" % (0xdef000 + i), "ord", "worker", False)
                                      for i in range(49)])
    p, _ = serve_fly(procs, fake, dns, "--fly-boot-spread", "1500ms", env=env)
    err = stderr_of_serve(procs, p)
    assert "before listing machines (bound 1500 ms)" in err, err
    dns.set_machines(APP, [M_SELF])
    t0 = time.monotonic()
    p, _ = serve_fly(procs, fake, dns, "--fly-boot-spread", "60s", env=env)
    assert time.monotonic() - t0 < 10 * SLOW
    err = stderr_of_serve(procs, p)
    assert "before listing machines" not in err


def test_serve_dns_over_ipv6_loopback(fly, procs):
    # Fly's resolver is IPv6 ([fdaa::3]:53): the same client on [::1].
    from fly_dns_fake import FlyDnsFake
    from test_serve import status_json, wait_for
    try:
        d6 = FlyDnsFake(host="::1").start()
    except OSError as e:
        pytest.fail("no IPv6 loopback on this machine: %s" % e)
    try:
        assert d6.addr.startswith("[::1]:")
        fake = fly("one")
        d6.set_machines(APP, [M_SELF])
        p, port = serve_fly(procs, fake, d6)
        wait_for(lambda: resyncs(d6) >= 4, 15, what="3 resyncs over IPv6")
        assert len(fake.list_requests()) == 1
        assert status_json(port)["mode"] == "noop"
    finally:
        d6.stop()


@pytest.mark.parametrize("resolver", ["dns.example:53", "[fdaa::3", "127.0.0.1:0"])
def test_serve_bad_resolver_is_a_config_error(fly, procs, resolver):
    from conftest import free_port
    fake = fly("one")
    p = run_agent(["serve", "--platform", "fly", "--fly-api-url", fake.url,
                   "--fly-resolver", resolver, "--listen", "127.0.0.1:%d" % free_port(),
                   "--api-timeout", "2s"], env=fly_env(), timeout=20)
    assert p.returncode == 78, p.stderr
    assert 'dns: resolver "%s" is not a numeric address' % resolver in p.stderr
    assert fake.list_requests() == []
