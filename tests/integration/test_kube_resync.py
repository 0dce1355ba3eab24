"""serve's Kubernetes resync (SPEC 10): the owner chain is read once per pod
start; every resync then GETs only the chain's end and lists the HPAs, both
with resourceVersion=0 (the API server's watch cache), <= 2 requests; a 429
with Retry-After is honoured (the gap between requests measured); drift,
HPA and blue/green changes are still seen.  The real binary against
tests/fakes/kube_fake.py.
"""
import json
import os
import time
import urllib.parse

import pytest

from conftest import free_port, run_agent
from kube_fake import (KubeFake, deployment, deployment_objects, hpa, pod, replicaset,
                       rollout, statefulset)
from redisfix import redis_factory  # noqa: F401 (the fixture)
from test_kube import POD, fake, kenv  # noqa: F401 (fake: the fixture)
from test_serve import INTERVAL, metrics, start_serve, status_json, value, wait_for




def kargs(port, *extra):
    return ["serve", "--platform", "kubernetes", "--listen", "127.0.0.1:%d" % port,
            "--interval", INTERVAL, "--resync", "1s", "--api-timeout", "3s",
            "--report", "log"] + list(extra)


def rv0(r):
    return urllib.parse.parse_qs(r["query"]).get("resourceVersion") == ["0"]


def resyncs(fake, end_re):
    return [r for r in fake.requests("GET", end_re) if rv0(r)]


def test_resync_gets_the_chain_end_and_hpas_from_the_cache(fake, tmp_path, procs):
    fake.add(*deployment_objects(replicas=1, podname=POD))
    port = free_port()
    start_serve(procs, kargs(port), env=kenv(fake, tmp_path), wait="/readyz")
    # the first discovery: pod, replicaset, deployment, HPA list (quorum reads)
    first = [r for r in fake.log if not rv0(r)]
    assert [r["path"].rsplit("/", 1)[-1] for r in first] == [
        POD, "chat-7d4b9c8f6d", "chat", "horizontalpodautoscalers"], first
    wait_for(lambda: len(resyncs(fake, r"/deployments/chat$")) >= 3, 10, what="3 resyncs")
    later = fake.log[len(first):]
    # every later request is a cached read of the deployment or of the HPAs
    assert all(rv0(r) and r["method"] == "GET" for r in later), later
    kinds = [r["path"].rsplit("/", 1)[-1] for r in later]
    assert set(kinds) <= {"chat", "horizontalpodautoscalers"}, kinds
    n_dep, n_hpa = kinds.count("chat"), kinds.count("horizontalpodautoscalers")
    assert n_dep >= 3 and n_dep - 1 <= n_hpa <= n_dep, kinds   # <= 2 per resync
    assert len(fake.requests("GET", r"/pods/")) == 1            # the chain is cached
    assert len(fake.requests("GET", r"/replicasets/")) == 1
    # the resync still sees a scale-up (drift) and a new HPA
    fake.add(deployment("chat", 3))
    wait_for(lambda: status_json(port)["drift"], 8, what="drift after scale-up")
    assert status_json(port)["peers"] == 3
    fake.add(hpa("chat", "Deployment", "chat", 10))
    wait_for(lambda: status_json(port)["peers"] == 10, 8, what="peers from the new HPA")
    # every request counted by code (one may be in flight while we read)
    before = len(fake.log)
    fams, _ = metrics(port)
    n200 = value(fams, "pylon_agent_api_requests_total", code="200")
    assert before - 2 <= n200 <= len(fake.log), (n200, before)


def test_resync_honours_retry_after(fake, tmp_path, procs):
    fake.add(*deployment_objects(replicas=1, podname=POD))
    port = free_port()
    start_serve(procs, kargs(port), env=kenv(fake, tmp_path), wait="/readyz")
    # APF's answer when the agent's flow is over its share: 429, Retry-After: 2
    f = fake.fault(r"/deployments/chat$", status=429, retry_after=2, times=2,
                   query="resourceVersion=0", reason="TooManyRequests",
                   message="Too many requests, please try again later.")

    def from_first_429():
        reqs = resyncs(fake, r"/deployments/chat$")
        first = next((i for i, r in enumerate(reqs) if r.get("fault") == 429), None)
        return [] if first is None else reqs[first:first + 3]
    # the two 429s and the retry after them, whatever was in flight when the fault went in
    wait_for(lambda: f.hits >= 2 and len(from_first_429()) == 3, 20,
             what="two 429s and a retry")
    reqs = from_first_429()
    assert [r.get("fault") for r in reqs] == [429, 429, None], reqs
    gaps = [b["time"] - a["time"] for a, b in zip(reqs, reqs[1:])]
    assert all(g >= 2.0 for g in gaps), "Retry-After: 2 not honoured: %r" % gaps
    # jittered on top, bounded: backoff cap (5 s) + Retry-After
    assert all(g <= 2.0 + 5.5 for g in gaps), gaps
    fams, _ = metrics(port)
    assert value(fams, "pylon_agent_api_requests_total", code="429") == 2
    assert status_json(port)["mode"] == "noop"


def test_rollout_bluegreen_preview_seen_on_resync(fake, tmp_path, procs):
    bg = {"blueGreen": {"activeService": "chat", "previewService": "chat-preview",
                        "previewReplicaCount": 0}}
    fake.add(pod(POD, owner=("apps/v1", "ReplicaSet", "chat-6cbccd9f99")),
             replicaset("chat-6cbccd9f99", ("argoproj.io/v1alpha1", "Rollout", "chat"), 1),
             rollout("chat", 1, strategy=bg))
    port = free_port()
    start_serve(procs, kargs(port), env=kenv(fake, tmp_path), wait="/readyz")
    assert status_json(port)["peers"] == 1 and status_json(port)["mode"] == "noop"
    bg["blueGreen"]["previewReplicaCount"] = 2
    fake.add(rollout("chat", 1, strategy=bg))
    wait_for(lambda: status_json(port)["drift"], 8, what="drift: a preview on resync")
    assert status_json(port)["peers"] == 3
    later = [r for r in fake.log if rv0(r)]
    assert later and {r["path"].rsplit("/", 1)[-1] for r in later} <= {
        "chat", "horizontalpodautoscalers"}
    assert all("/rollouts/" in r["path"] or r["path"].endswith("/horizontalpodautoscalers")
               for r in later)


def test_selector_colours_seen_on_resync(fake, tmp_path, procs):
    blue, green = {"app": "chat", "color": "blue"}, {"app": "chat", "color": "green"}
    fake.add(*deployment_objects("chat-blue", 1, podname=POD, labels=blue))
    fake.add(deployment("chat-green", 0, labels=green))
    port = free_port()
    start_serve(procs, kargs(port, "--app-selector", "app=chat"), env=kenv(fake, tmp_path),
                wait="/readyz")
    assert status_json(port)["mode"] == "noop"
    fake.add(deployment("chat-green", 2, labels=green))
    wait_for(lambda: status_json(port)["drift"], 8, what="drift: green scaled up")
    assert status_json(port)["peers"] == 3
    cached = [r for r in fake.log if rv0(r)]
    # with --app-selector: + the two colour lists, also from the cache
    assert {r["path"].rsplit("/", 1)[-1] for r in cached} == {
        "chat-blue", "horizontalpodautoscalers", "deployments", "statefulsets"}
    assert len(fake.requests("GET", r"/pods/")) == 1


def test_serve_after_init_resyncs_from_the_state_file(fake, tmp_path, procs):
    # The chart's sidecar shape: init discovers (4 requests) and writes the
    # chain's end into the state file; serve adopts it and never walks the
    # chain again.
    fake.add(*deployment_objects(replicas=1, podname=POD))
    env = kenv(fake, tmp_path)
    env_file = tmp_path / "cluster.env"
    r = run_agent(["init", "--platform", "kubernetes", "--env-file", str(env_file),
                   "--report", "log"], env=env)
    assert r.returncode == 0, r.stderr
    state = json.loads(open(str(env_file) + ".state").read())
    assert json.dumps(state).count("deployment/chat") >= 1
    assert len(fake.log) == 4
    port = free_port()
    start_serve(procs, kargs(port, "--env-file", str(env_file)), env=env, wait="/readyz")
    assert status_json(port)["adopted_from_init"] is True
    wait_for(lambda: len(resyncs(fake, r"/deployments/chat$")) >= 2, 8, what="2 resyncs")
    later = fake.log[4:]
    assert all(rv0(r) for r in later), later
    assert len(fake.requests("GET", r"/pods/")) == 1
    assert os.path.exists(str(env_file))


def test_retry_after_longer_than_a_request_holds_the_next_resync(fake, tmp_path, procs):
    # Retry-After (6 s) beyond one request's deadline (--api-timeout 1s: 5 s):
    # the request gives up at once, and the next resync (due ~2 s later)
    # still waits for the pause to end instead of calling sooner.
    fake.add(*deployment_objects(replicas=1, podname=POD))
    port = free_port()
    args = kargs(port)
    args[args.index("--api-timeout") + 1] = "1s"
    start_serve(procs, args, env=kenv(fake, tmp_path), wait="/readyz")
    f = fake.fault(r"/deployments/chat$", status=429, retry_after=6, times=1,
                   query="resourceVersion=0")

    def the_429():
        return next((r for r in fake.log if r.get("fault") == 429), None)
    wait_for(lambda: f.hits >= 1 and the_429() and
             any(r["time"] > the_429()["time"] for r in fake.log), 20,
             what="a 429 and the next request")
    first_429 = the_429()
    after = [r for r in fake.log if r["time"] > first_429["time"]]
    assert after, "nothing after the 429"
    gap = after[0]["time"] - first_429["time"]
    assert gap >= 6.0, "called %.2fs after Retry-After: 6" % gap
    fams, _ = metrics(port)
    assert value(fams, "pylon_agent_discovery_errors_total") >= 1


@pytest.mark.parametrize("shape", ["statefulset", "orphan-replicaset", "bare-pod"])
def test_resync_of_each_chain_end(fake, tmp_path, procs, shape):
    if shape == "statefulset":
        fake.add(pod(POD, owner=("apps/v1", "StatefulSet", "chat")), statefulset("chat", 1))
        end = r"/statefulsets/chat$"
    elif shape == "orphan-replicaset":
        fake.add(pod(POD, owner=("apps/v1", "ReplicaSet", "chat-7d4b9c8f6d")),
                 replicaset("chat-7d4b9c8f6d", None, 1))
        end = r"/replicasets/chat-7d4b9c8f6d$"
    else:
        fake.add(pod(POD))
        end = None
    port = free_port()
    start_serve(procs, kargs(port), env=kenv(fake, tmp_path), wait="/readyz")
    n_start = len([r for r in fake.log if not rv0(r)])
    if end is None:
        # nothing of a bare pod can change: its resyncs make no request
        time.sleep(2.5)
        assert len(fake.log) == n_start == 1, fake.log
        return
    wait_for(lambda: len(resyncs(fake, end)) >= 2, 8, what="2 resyncs")
    cached = [r for r in fake.log if rv0(r)]
    assert {r["path"].rsplit("/", 1)[-1] for r in cached} == {
        end.rstrip("$").rsplit("/", 1)[-1], "horizontalpodautoscalers"}
    assert len(fake.log) == n_start + len(cached)
    if shape == "statefulset":
        fake.add(statefulset("chat", 3))
        wait_for(lambda: status_json(port)["drift"], 8, what="drift: statefulset scaled")


def test_probe_of_a_redis_pod_asks_the_api_nothing(fake, tmp_path, redis_factory):
    """An exec probe runs every few seconds on every pod: a pod that runs
    redis only needs the bus checked, so no API request at all."""
    r = redis_factory()
    fake.add(*deployment_objects(replicas=3, podname=POD))
    env = kenv(fake, tmp_path, redis=False, PYLON_AGENT_REDIS_URL=r.url(),
               PYLON_AGENT_NAMESPACE="pk")
    env_file = str(tmp_path / "cluster.env")
    res = run_agent(["init", "--platform", "kubernetes", "--report", "log",
                     "--env-file", env_file], env=env)
    assert res.returncode == 0, res.stderr
    before = len(fake.log)
    for _ in range(3):
        res = run_agent(["probe", "--platform", "kubernetes", "--env-file", env_file],
                        env=env, timeout=20)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("redis: bus usable") and '"pk:cluster:bus"' in res.stdout
    assert fake.log[before:] == []
    # the bus down: 69, still without asking the API
    r.kill()
    res = run_agent(["probe", "--platform", "kubernetes", "--env-file", env_file,
                     "--timeout", "500ms"], env=env, timeout=20)
    assert res.returncode == 69, res.stderr
    assert fake.log[before:] == []


def test_probe_of_a_noop_pod_resyncs_from_inits_state(fake, tmp_path):
    """A noop pod's probe asks whether the topology still says noop: from
    the chain init found, 2 reads from the watch cache, not 4 quorum reads;
    a scale-up is drift (69)."""
    fake.add(*deployment_objects(replicas=1, podname=POD))
    env = kenv(fake, tmp_path)
    env_file = str(tmp_path / "cluster.env")
    res = run_agent(["init", "--platform", "kubernetes", "--report", "log",
                     "--env-file", env_file], env=env)
    assert res.returncode == 0, res.stderr
    before = len(fake.log)
    res = run_agent(["probe", "--platform", "kubernetes", "--env-file", env_file],
                    env=env, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("noop: the decision is still noop")
    later = fake.log[before:]
    assert [r["path"].rsplit("/", 1)[-1] for r in later] == [
        "chat", "horizontalpodautoscalers"], later
    assert all(rv0(r) for r in later), later
    fake.add(deployment("chat", 3))
    res = run_agent(["probe", "--platform", "kubernetes", "--env-file", env_file],
                    env=env, timeout=20)
    assert res.returncode == 69, res.stderr
    assert "drift" in res.stderr and "3 peers" in res.stderr
    # no state next to the env file (an env file from elsewhere): a discovery
    os.unlink(env_file + ".state")
    n = len(fake.log)
    res = run_agent(["probe", "--platform", "kubernetes", "--env-file", env_file],
                    env=env, timeout=20)
    assert res.returncode == 69, res.stderr
    assert len(fake.requests("GET", r"/pods/")) == 2 and len(fake.log) - n == 4


def test_drift_without_a_redis_url_shows_the_new_count(fake, tmp_path, procs):
    """A noop pod whose Deployment is scaled to 3 while no Redis URL is
    configured: drift says the bus is missing, and /status shows the 3 peers
    counted (not the 1 of the start)."""
    fake.add(*deployment_objects(replicas=1, podname=POD))
    port = free_port()
    start_serve(procs, kargs(port), env=kenv(fake, tmp_path, redis=False), wait="/readyz")
    assert status_json(port)["peers"] == 1 and status_json(port)["mode"] == "noop"
    fake.add(deployment("chat", 3))
    wait_for(lambda: status_json(port)["drift"], 8, what="drift after scale-up")
    st = status_json(port)
    assert st["peers"] == 3 and st["mode"] == "noop", st
    assert "replicas=3" in st["reason"], st
    fams, _ = metrics(port)
    assert value(fams, "pylon_agent_drift") == 1
