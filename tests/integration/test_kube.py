"""Kubernetes platform: the real binary against tests/fakes/kube_fake.py.

Every test starts its own fake API server (TLS, test CA, bearer auth) on a
random loopback port and asserts on the decision, the error line, and the
fake's request log (counts, paths, verbs).
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import time

import pytest

from conftest import SLOW, clean_env, free_port, run_agent, wait_port
from kube_fake import (KubeFake, deployment, deployment_objects, hpa, pod, replicaset,
                       rollout, statefulset, write_atomic)

POD = "chat-7d4b9c8f6d-x2k9p"
REDIS = "redis://default:s3cret@127.0.0.1:%d/0"


@pytest.fixture
def fake(tmp_path):
    f = KubeFake(str(tmp_path / "fake"))
    f.start()
    try:
        yield f
    finally:
        f.stop()


def kenv(fake, tmp_path, pod_name=POD, redis=True, **extra):
    kc = fake.kubeconfig(str(tmp_path / "kubeconfig"))
    env = clean_env(KUBECONFIG=kc, POD_NAME=pod_name, **extra)
    if redis:
        env["PYLON_AGENT_REDIS_URL"] = REDIS % free_port()
    return env


def decide(env, *args, timeout=30):
    r = run_agent(["decide", "--output", "json", "--platform", "kubernetes"] + list(args),
                  env=env, timeout=timeout)
    out = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None
    return r, out


def paths(fake):
    return [(r["method"], r["path"]) for r in fake.log]


def assert_no_pod_list(fake):
    lists = [r for r in fake.log if r["method"] == "GET" and r["path"].endswith("/pods")]
    assert lists == [], "the agent listed pods: %r" % lists


# ---- shapes -------------------------------------------------------------

def test_deployment_one_replica_is_noop_in_four_requests(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1))
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert d["mode"] == "noop" and d["peers"] == 1
    assert d["platform"] == "kubernetes" and d["instance"] == POD
    assert "deployment/chat replicas=1" in d["reason"]
    # the surge that was not counted is named (SPEC 4)
    assert "surge 1 (maxSurge=25%) not counted" in d["reason"]
    assert paths(fake) == [
        ("GET", "/api/v1/namespaces/prod/pods/" + POD),
        ("GET", "/apis/apps/v1/namespaces/prod/replicasets/chat-7d4b9c8f6d"),
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/chat"),
        ("GET", "/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers"),
    ]
    assert all(r["auth"] == "bearer" for r in fake.log)
    assert_no_pod_list(fake)


def test_deployment_n_replicas_is_redis(fake, tmp_path):
    fake.add(*deployment_objects(replicas=3))
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert d["mode"] == "redis" and d["peers"] == 3
    assert d["reason"].startswith("deployment/chat replicas=3")
    assert len(fake.log) <= 4
    assert_no_pod_list(fake)


def test_deployment_n_without_redis_url_is_config_error(fake, tmp_path):
    fake.add(*deployment_objects(replicas=3))
    r, _ = decide(kenv(fake, tmp_path, redis=False))
    assert r.returncode == 78
    assert "3" in r.stderr and "deployment/chat" in r.stderr


def test_hpa_max_counts_and_only_matching_target(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.add(hpa("chat", "Deployment", "chat", 10),
             hpa("other", "Deployment", "other", 50),
             # same kind and name, other API group: not ours
             hpa("impostor", "Deployment", "chat", 99, api_version="example.com/v1"))
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 10 and d["mode"] == "redis"
    assert "hpa/chat max=10" in d["reason"]
    assert "impostor" not in d["reason"] and "other" not in d["reason"]


def test_hpa_below_replicas_keeps_replicas(fake, tmp_path):
    fake.add(*deployment_objects(replicas=5))
    fake.add(hpa("chat", "Deployment", "chat", 3))
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 5


def test_statefulset(fake, tmp_path):
    fake.add(pod("chat-0", owner=("apps/v1", "StatefulSet", "chat")), statefulset("chat", 3))
    r, d = decide(kenv(fake, tmp_path, pod_name="chat-0"))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 3 and d["mode"] == "redis"
    assert "statefulset/chat replicas=3" in d["reason"]
    assert "surge" not in d["reason"]     # a StatefulSet never surges
    assert paths(fake)[1] == ("GET", "/apis/apps/v1/namespaces/prod/statefulsets/chat")
    assert len(fake.log) == 3


def test_statefulset_hpa(fake, tmp_path):
    fake.add(pod("chat-0", owner=("apps/v1", "StatefulSet", "chat")), statefulset("chat", 1),
             hpa("chat-hpa", "StatefulSet", "chat", 4))
    r, d = decide(kenv(fake, tmp_path, pod_name="chat-0"))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 4 and "hpa/chat-hpa max=4" in d["reason"]


def test_bare_pod_counts_one_in_one_request(fake, tmp_path):
    fake.add(pod("lonely"))
    r, d = decide(kenv(fake, tmp_path, pod_name="lonely"))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 1 and d["mode"] == "noop"
    assert "pod/lonely" in d["reason"] and "bare pod" in d["reason"]
    assert paths(fake) == [("GET", "/api/v1/namespaces/prod/pods/lonely")]


def test_orphaned_replicaset(fake, tmp_path):
    fake.add(pod(POD, owner=("apps/v1", "ReplicaSet", "chat-7d4b9c8f6d")),
             replicaset("chat-7d4b9c8f6d", None, replicas=2))
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2 and "replicaset/chat-7d4b9c8f6d replicas=2" in d["reason"]


def _rollout_objects(fake, strategy=None, replicas=2):
    fake.add(pod(POD, owner=("apps/v1", "ReplicaSet", "chat-6cbccd9f99")),
             replicaset("chat-6cbccd9f99", ("argoproj.io/v1alpha1", "Rollout", "chat"),
                        replicas),
             rollout("chat", replicas, strategy=strategy))


def test_argo_rollout_bluegreen_counts_preview(fake, tmp_path):
    _rollout_objects(fake, replicas=1)
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    # active + preview both serve during a switch: 1 + 1
    assert d["peers"] == 2 and d["mode"] == "redis"
    assert "rollout/chat replicas=1 strategy=blueGreen" in d["reason"]
    assert "preview replicas=1" in d["reason"]
    assert ("GET", "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/chat") in paths(fake)
    assert len(fake.log) == 4


def test_argo_rollout_bluegreen_preview_replica_count_and_hpa(fake, tmp_path):
    _rollout_objects(fake, replicas=3, strategy={"blueGreen": {
        "activeService": "chat", "previewService": "chat-preview", "previewReplicaCount": 1}})
    fake.add(hpa("chat", "Rollout", "chat", 6, api_version="argoproj.io/v1alpha1"))
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 7, d      # max(3, hpa 6) + preview 1
    assert "hpa/chat max=6" in d["reason"]


def test_argo_rollout_canary_surge(fake, tmp_path):
    _rollout_objects(fake, replicas=4, strategy={"canary": {"maxSurge": "50%", "steps": []}})
    env = kenv(fake, tmp_path)
    r, d = decide(env)
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 4 and "strategy=canary" in d["reason"]
    r, d = decide(env, "--count-surge")
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 6 and "canary maxSurge=50%" in d["reason"]


def test_argo_rollouts_not_installed(tmp_path):
    f = KubeFake(str(tmp_path / "fake"), crds=()).start()
    try:
        _rollout_objects(f)
        r, _ = decide(kenv(f, tmp_path), "--on-discovery-error", "fail")
        assert r.returncode == 75
        assert "Argo Rollouts is not installed" in r.stderr
        assert "rollout/chat" in r.stderr
    finally:
        f.stop()


# ---- blue/green by selector ------------------------------------------------

def _bluegreen(fake, green_replicas=2):
    blue = {"app": "chat", "color": "blue"}
    green = {"app": "chat", "color": "green"}
    fake.add(*deployment_objects("chat-blue", 3, podname=POD, labels=blue))
    fake.add(deployment("chat-green", green_replicas, labels=green),
             deployment("billing", 7, labels={"app": "billing"}),
             statefulset("chat-cache", 2, labels={"app": "chat", "color": "cache"}),
             statefulset("db", 3, labels={"app": "db"}))


def test_bluegreen_by_selector_counts_other_colours(fake, tmp_path):
    _bluegreen(fake)
    r, d = decide(kenv(fake, tmp_path), "--app-selector", "app=chat")
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 3 + 2 + 2, d
    assert "deployment/chat-green replicas=2" in d["reason"]
    assert "statefulset/chat-cache replicas=2" in d["reason"]
    assert "billing" not in d["reason"] and "db" not in d["reason"]
    assert "chat-blue replicas=3" in d["reason"]
    assert ("GET", "/apis/apps/v1/namespaces/prod/deployments") in paths(fake)
    assert ("GET", "/apis/apps/v1/namespaces/prod/statefulsets") in paths(fake)
    assert_no_pod_list(fake)


def test_bluegreen_set_based_selector(fake, tmp_path):
    _bluegreen(fake)
    r, d = decide(kenv(fake, tmp_path), "--app-selector", "app in (chat, chat2),color notin (cache)")
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 5 and "chat-cache" not in d["reason"]
    r, d = decide(kenv(fake, tmp_path), "--app-selector", "app=chat,!color")
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 3       # no colour matches: only the own deployment


def test_bluegreen_list_pagination(fake, tmp_path):
    _bluegreen(fake)
    fake.add(*[deployment("filler-%03d" % i, 1, labels={"app": "filler"}) for i in range(510)])
    r, d = decide(kenv(fake, tmp_path), "--app-selector", "app=chat")
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 7
    deps = fake.requests("GET", r"/deployments$")
    assert len(deps) == 2 and "continue=" in deps[1]["query"] and "limit=500" in deps[0]["query"]


def test_expired_continue_token_restarts_the_list(fake, tmp_path):
    _bluegreen(fake)
    fake.add(*[deployment("filler-%03d" % i, 1, labels={"app": "filler"}) for i in range(510)])
    fake.fault(r"/deployments$", query="continue=", status=410, times=1)
    r, d = decide(kenv(fake, tmp_path), "--app-selector", "app=chat")
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 7         # nothing counted twice after the restart
    deps = fake.requests("GET", r"/deployments$")
    assert ["continue=" in x["query"] for x in deps] == [False, True, False, True]


def test_bad_selector_is_config_error(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1))
    r, _ = decide(kenv(fake, tmp_path), "--app-selector", "app in (chat")
    assert r.returncode == 78
    assert "--app-selector" in r.stderr and "not a valid label selector" in r.stderr
    assert fake.log == []


# ---- surge ------------------------------------------------------------------

@pytest.mark.parametrize("replicas,strategy,surge", [
    (1, None, 1),                                                   # default 25% of 1 -> 1
    (10, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}, 3),  # rounds up
    (3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}, 2),
    (3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, 0),
    (3, {"type": "RollingUpdate"}, 1),                              # default when absent
    (3, {"type": "Recreate"}, 0),
])
def test_surge(fake, tmp_path, replicas, strategy, surge):
    objs = deployment_objects(replicas=replicas)
    if strategy is not None:
        objs[2]["spec"]["strategy"] = strategy
    else:
        del objs[2]["spec"]["strategy"]
    fake.add(*objs)
    env = kenv(fake, tmp_path)
    r, off = decide(env)
    assert r.returncode == 0, r.stderr
    assert off["peers"] == replicas
    if surge:
        assert "not counted" in off["reason"]
    r, on = decide(env, "--count-surge")
    assert r.returncode == 0, r.stderr
    assert on["peers"] == replicas + surge, on
    if surge:
        assert "+ surge %d" % surge in on["reason"]
    if replicas == 1 and surge:
        assert off["mode"] == "noop" and on["mode"] == "redis"


# ---- kubeconfig -----------------------------------------------------------

def _kc(fake, tmp_path, name="kc", **kw):
    return fake.kubeconfig(str(tmp_path / name), **kw)


@pytest.mark.parametrize("auth,ca", [("cert-data", "data"), ("cert-file", "file"),
                                     ("tokenFile", "file"), ("token", "insecure")])
def test_kubeconfig_auth_forms(fake, tmp_path, auth, ca):
    fake.add(*deployment_objects(replicas=2))
    kc = _kc(fake, tmp_path, auth=auth, ca=ca)
    env = clean_env(KUBECONFIG=kc, POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1)
    r, d = decide(env)
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2
    want = "cert" if auth.startswith("cert") else "bearer"
    assert {x["auth"] for x in fake.log} == {want}


def test_kubeconfig_flag_and_context_namespace(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2, ns="staging"))
    kc = _kc(fake, tmp_path, namespace="staging")
    env = clean_env(POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1)
    r = run_agent(["decide", "--output", "json", "--kubeconfig", kc], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["platform"] == "kubernetes"   # auto-detected
    assert fake.log[0]["path"] == "/api/v1/namespaces/staging/pods/" + POD
    # POD_NAMESPACE wins over the context namespace
    env["POD_NAMESPACE"] = "prod"
    fake.clear_log()
    r = run_agent(["decide", "--output", "json", "--kubeconfig", kc], env=env)
    assert r.returncode == 75 or r.returncode == 0
    assert fake.log[0]["path"] == "/api/v1/namespaces/prod/pods/" + POD


def test_kubeconfig_without_namespace_uses_default(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1, ns="default"))
    kc = _kc(fake, tmp_path, namespace=None)
    r, d = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD))
    assert r.returncode == 0, r.stderr
    assert fake.log[0]["path"].startswith("/api/v1/namespaces/default/")


def test_kubeconfig_tls_server_name(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1))
    good = _kc(fake, tmp_path, "good", tls_server_name="kube.test")
    r, d = decide(clean_env(KUBECONFIG=good, POD_NAME=POD))
    assert r.returncode == 0, r.stderr
    bad = _kc(fake, tmp_path, "bad", tls_server_name="wrong.example")
    r, _ = decide(clean_env(KUBECONFIG=bad, POD_NAME=POD), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert "TLS" in r.stderr or "certificate" in r.stderr


def test_kubeconfig_wrong_ca_fails_tls(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1))
    kc = _kc(fake, tmp_path, ca=None)       # system CAs: our test CA is unknown
    r, _ = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert "certificate" in r.stderr.lower() or "tls" in r.stderr.lower()


def test_kubeconfig_list_merge_first_wins_and_relative_paths(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    d1 = tmp_path / "one"
    d2 = tmp_path / "two"
    d1.mkdir()
    d2.mkdir()
    shutil.copy(fake.ca_file, d2 / "ca.crt")
    # file one: current-context and the user; file two: clusters, contexts,
    # and a different current-context that must lose.
    (d1 / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        "users:\n- name: u\n  user:\n    token: %s\n" % fake.valid_token())
    (d2 / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\n"
        "clusters:\n- name: fake\n  cluster:\n    server: %s\n"
        "    certificate-authority: ca.crt\n"
        "- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\n"
        "contexts:\n- name: fake\n  context: {cluster: fake, user: u, namespace: prod}\n"
        "- name: elsewhere\n  context: {cluster: nowhere, user: u}\n" % fake.server)
    kc = "%s:%s:%s" % (d1 / "config", tmp_path / "missing", d2 / "config")
    r = run_agent(["decide", "--output", "json", "--platform", "kubernetes"],
                  env=clean_env(KUBECONFIG=kc, POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1),
                  cwd="/")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["peers"] == 2


@pytest.mark.parametrize("text,msg", [
    ("clusters: [unclosed\n", "invalid YAML"),
    ("- just\n- a list\n", "not a mapping"),
    ("apiVersion: v1\nkind: Config\n", "no current-context"),
    ("current-context: x\ncontexts: []\n", "not among its contexts"),
    ("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
     "clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', "
     "certificate-authority-data: '!!notbase64', insecure-skip-tls-verify: false}\n"
     "users:\n- name: u\n  user: {token: t}\n", "not valid base64"),
    ("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
     "clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', "
     "certificate-authority: /nonexistent/ca.crt, insecure-skip-tls-verify: true}\n"
     "users:\n- name: u\n  user: {token: t}\n", "certificate-authority"),
    ("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
     "clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n"
     "users:\n- name: u\n  user:\n    auth-provider: {name: gcp}\n", "auth-provider"),
    ("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
     "clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n"
     "users:\n- name: u\n  user:\n    exec: {command: aws, interactiveMode: Always, "
     "apiVersion: client.authentication.k8s.io/v1}\n", "interactiveMode"),
])
def test_kubeconfig_errors_are_config_errors(tmp_path, text, msg):
    p = tmp_path / "kc"
    p.write_text(text)
    r, _ = decide(clean_env(KUBECONFIG=str(p), POD_NAME=POD))
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _exec_kubeconfig(fake, tmp_path, script, **exec_extra):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(script)
    plugin.chmod(0o755)
    ex = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
          "args": ["--cluster", "fake"], "env": [{"name": "PLUGIN_TOKEN",
                                                 "value": fake.valid_token()}],
          "interactiveMode": "Never"}
    ex.update(exec_extra)
    return _kc(fake, tmp_path, auth=None, extra_user={"exec": ex})


def test_kubeconfig_exec_plugin_token(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    kc = _exec_kubeconfig(fake, tmp_path, """#!/usr/bin/env python3
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False
assert sys.argv[1:] == ["--cluster", "fake"]
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": os.environ["PLUGIN_TOKEN"],
                             "expirationTimestamp": "2099-01-01T00:00:00Z"}}))
""")
    r, d = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2
    assert fake.log[0]["token"] == fake.valid_token()


def test_kubeconfig_exec_plugin_starts_with_default_signals(fake, tmp_path):
    """Issue 14: the exec credential plugin, like exec's and serve's child,
    starts with no ignored signal and an empty mask (the agent ignores
    SIGPIPE; neither that nor a mask may leak into the plugin)."""
    fake.add(*deployment_objects(replicas=2))
    dump = tmp_path / "plugin-status"
    kc = _exec_kubeconfig(fake, tmp_path, """#!/bin/sh
grep -E '^Sig(Ign|Blk):' /proc/self/status > %s
printf '{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", '
printf '"status": {"token": "%%s"}}\\n' "$PLUGIN_TOKEN"
""" % str(dump))
    r, d = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2
    sig = dict(l.split(":\t") for l in dump.read_text().splitlines())
    assert int(sig["SigIgn"], 16) == 0, sig
    assert int(sig["SigBlk"], 16) == 0, sig


def test_kubeconfig_exec_plugin_cluster_info(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    kc = _exec_kubeconfig(fake, tmp_path, """#!/usr/bin/env python3
import base64, json, os
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
cl = info["spec"]["cluster"]
assert cl["server"].startswith("https://127.0.0.1:"), cl
assert base64.b64decode(cl["certificate-authority-data"]).startswith(b"-----BEGIN CERT")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": os.environ["PLUGIN_TOKEN"]}}))
""", provideClusterInfo=True)
    r, d = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1))
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2


def test_kubeconfig_exec_plugin_rerun_after_401(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    count = tmp_path / "runs"
    kc = _exec_kubeconfig(fake, tmp_path, """#!/usr/bin/env python3
import json, os
p = %r
n = int(open(p).read()) + 1 if os.path.exists(p) else 1
open(p, "w").write(str(n))
# the first credential is stale; the plugin's second answer is valid
tok = "stale-token" if n == 1 else os.environ["PLUGIN_TOKEN"]
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": tok}}))
""" % str(count))
    r, d = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD, PYLON_AGENT_REDIS_URL=REDIS % 1))
    assert r.returncode == 0, r.stderr
    assert count.read_text() == "2"        # re-run once after the 401, then cached
    toks = [x["token"] for x in fake.log]
    assert toks[0] == "stale-token" and set(toks[1:]) == {fake.valid_token()}
    assert len(toks) == 5


def test_kubeconfig_exec_plugin_failure(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    kc = _exec_kubeconfig(fake, tmp_path, "#!/bin/sh\necho 'no creds' >&2\nexit 3\n")
    r, _ = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert "credential plugin failed (exit 3)" in r.stderr
    kc = _exec_kubeconfig(fake, tmp_path, "#!/bin/sh\necho '{\"kind\":\"Nope\"}'\n")
    r, _ = decide(clean_env(KUBECONFIG=kc, POD_NAME=POD), "--on-discovery-error", "fail")
    assert r.returncode == 75 and "ExecCredential" in r.stderr


# ---- in-cluster -----------------------------------------------------------------

def incluster_env(fake, tmp_path, host="127.0.0.1", namespace="prod", **extra):
    sa = fake.serviceaccount_dir(str(tmp_path / "sa"), namespace=namespace)
    env = clean_env(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=str(fake.port),
                    PYLON_AGENT_SERVICEACCOUNT_DIR=sa, POD_NAME=POD,
                    PYLON_AGENT_REDIS_URL=REDIS % 1, **extra)
    return env, sa


def test_incluster_serviceaccount(fake, tmp_path):
    fake.add(*deployment_objects(replicas=3))
    env, _ = incluster_env(fake, tmp_path,
                           https_proxy="http://127.0.0.1:%d" % free_port(),
                           HTTPS_PROXY="http://127.0.0.1:%d" % free_port())
    r = run_agent(["decide", "--output", "json"], env=env)    # platform auto
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["platform"] == "kubernetes" and d["peers"] == 3
    # namespace from the service-account file, proxy bypassed for the API host
    assert fake.log[0]["path"] == "/api/v1/namespaces/prod/pods/" + POD
    assert fake.log[0]["token"] == fake.valid_token()


def test_incluster_hostname_fallback_and_pod_namespace(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1, ns="other"))
    env, _ = incluster_env(fake, tmp_path, POD_NAMESPACE="other", HOSTNAME=POD)
    del env["POD_NAME"]
    r, d = decide(env)
    assert r.returncode == 0, r.stderr
    assert fake.log[0]["path"] == "/api/v1/namespaces/other/pods/" + POD


def test_incluster_ipv6_bracketed(tmp_path):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    f = KubeFake(str(tmp_path / "fake6"), host="::1").start()
    try:
        f.add(*deployment_objects(replicas=2))
        env, _ = incluster_env(f, tmp_path, host="::1")
        r, d = decide(env)
        assert r.returncode == 0, r.stderr
        assert d["peers"] == 2
    finally:
        f.stop()


def test_incluster_missing_token_is_config_error(fake, tmp_path):
    env, sa = incluster_env(fake, tmp_path)
    os.unlink(os.path.join(sa, "token"))
    r, _ = decide(env)
    assert r.returncode == 78
    assert "service-account token" in r.stderr and "automountServiceAccountToken" in r.stderr


def test_incluster_missing_namespace_needs_pod_namespace(fake, tmp_path):
    env, _ = incluster_env(fake, tmp_path, namespace=None)
    r, _ = decide(env)
    assert r.returncode == 78 and "POD_NAMESPACE" in r.stderr


def test_missing_pod_name(fake, tmp_path):
    env, _ = incluster_env(fake, tmp_path)
    del env["POD_NAME"]
    env.pop("HOSTNAME", None)
    r, _ = decide(env)
    assert r.returncode == 78 and "POD_NAME" in r.stderr and "downward API" in r.stderr


# ---- tokens -------------------------------------------------------------------

def test_token_rotation_after_401(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    env, sa = incluster_env(fake, tmp_path)
    # The server now accepts only the new token; the kubelet rotates the
    # file the moment the old token is refused (the agent must re-read it).
    fake.set_token("token-two", rotate_file=False)
    fake.on_401 = lambda: write_atomic(os.path.join(sa, "token"), "token-two\n")
    r, d = decide(env)
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2
    toks = [x["token"] for x in fake.log]
    assert toks[0] == "token-one" and set(toks[1:]) == {"token-two"}
    assert "token-two" not in r.stderr and "token-one" not in r.stderr


def test_rejected_token(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    env, sa = incluster_env(fake, tmp_path)
    fake.set_token("token-other", rotate_file=False)
    r, _ = decide(env, "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert "401 Unauthorized" in r.stderr and "token" in r.stderr
    assert "token-one" not in r.stderr
    # the file was re-read after the 401; the same token is not retried
    assert len(fake.log) == 1
    # rotate the file: the next run reads it
    write_atomic(os.path.join(sa, "token"), "token-other\n")
    r, d = decide(env)
    assert r.returncode == 0, r.stderr


# ---- faults -------------------------------------------------------------------

def test_forbidden_names_the_rbac_rule(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.deny("get", "apps", "deployments")
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75
    line = r.stderr.strip().splitlines()[-1]
    assert ('add to the Role: {apiGroups: ["apps"], resources: ["deployments"], '
            'verbs: ["get"]}') in line
    assert 'cannot get resource "deployments"' in line


def test_forbidden_hpa_list(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.deny("list", "autoscaling", "horizontalpodautoscalers")
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert ('{apiGroups: ["autoscaling"], resources: ["horizontalpodautoscalers"], '
            'verbs: ["list"]}') in r.stderr


def test_forbidden_pod_get_core_group(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.deny("get", "", "pods")
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert '{apiGroups: [""], resources: ["pods"], verbs: ["get"]}' in r.stderr
    assert len(fake.log) == 1          # 403 is not retried


def test_missing_controller_names_the_object(fake, tmp_path):
    objs = deployment_objects(replicas=2)
    fake.add(objs[0], objs[1])        # no Deployment
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert ("deployment/chat, the owner of replicaset/chat-7d4b9c8f6d, is not found in "
            'namespace "prod"') in r.stderr
    assert len(fake.log) == 3         # 404 is not retried


def test_missing_pod(fake, tmp_path):
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert 'pod "%s" not found in namespace "prod"' % POD in r.stderr


def test_429_retry_after_then_success(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.fault(r"/deployments/chat$", status=429, retry_after=1, times=2)
    t0 = time.monotonic()
    r, d = decide(kenv(fake, tmp_path))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert d["peers"] == 2
    assert len(fake.requests("GET", r"/deployments/chat$")) == 3
    assert took >= 1.8, "Retry-After: 1 was not honoured (%.2fs)" % took


def test_429_forever_is_bounded(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.fault(r"/pods/", status=429, retry_after=1)
    t0 = time.monotonic()
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail", "--api-timeout", "2s")
    assert r.returncode == 75
    assert "429" in r.stderr
    assert time.monotonic() - t0 < 15 * SLOW
    assert 2 <= len(fake.log) <= 4


def test_500_is_retried(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.fault(r"/replicasets/", status=500, times=1)
    r, d = decide(kenv(fake, tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(fake.requests("GET", r"/replicasets/")) == 2


def test_500_forever_reports_status(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.fault(r"/replicasets/", status=503)
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail", "--api-timeout", "1s")
    assert r.returncode == 75
    assert "HTTP 503" in r.stderr and "replicasets.apps/chat-7d4b9c8f6d" in r.stderr


def test_hang_times_out(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.fault(r"/pods/", kind="hang", delay=20)
    t0 = time.monotonic()
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail", "--api-timeout", "500ms",
                  timeout=20)
    assert r.returncode == 75
    assert "tim" in r.stderr.lower()
    assert time.monotonic() - t0 < 8 * SLOW


@pytest.mark.parametrize("kind,msg", [("garbage", "not a JSON object"),
                                      ("truncated", "not a JSON object"),
                                      ("huge", "")])
def test_bad_bodies(fake, tmp_path, kind, msg):
    fake.add(*deployment_objects(replicas=2))
    fake.fault(r"/deployments/", kind=kind)
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75, r.stderr
    assert msg in r.stderr
    if kind == "huge":
        assert "large" in r.stderr.lower() or "MiB" in r.stderr or "bytes" in r.stderr


def test_unsupported_controller(fake, tmp_path):
    fake.add(pod(POD, owner=("batch/v1", "Job", "migrate")))
    r, _ = decide(kenv(fake, tmp_path), "--on-discovery-error", "fail")
    assert r.returncode == 75
    assert "job/migrate" in r.stderr.lower() and "--platform static" in r.stderr


# ---- --on-discovery-error -------------------------------------------------------

def test_discovery_error_policies(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    fake.deny("get", "apps", "replicasets")
    env = kenv(fake, tmp_path)
    r, _ = decide(env, "--on-discovery-error", "fail")
    assert r.returncode == 75
    r, d = decide(env, "--on-discovery-error", "redis-if-configured")
    assert r.returncode == 0, r.stderr
    assert d["mode"] == "redis" and d["discovery_failed"] is True
    assert "replicasets" in r.stderr          # the cause is still logged
    r, d = decide(env, "--on-discovery-error", "noop")
    assert r.returncode == 0 and d["mode"] == "noop"
    env.pop("PYLON_AGENT_REDIS_URL")
    r, d = decide(env)                          # default: redis-if-configured
    assert r.returncode == 0 and d["mode"] == "noop"


# ---- reporting --------------------------------------------------------------------

def test_init_reports_annotations_and_event(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1))
    env = kenv(fake, tmp_path, redis=False)
    envfile = tmp_path / "cluster.env"
    r = run_agent(["init", "--platform", "kubernetes", "--report", "log,annotations,events",
                   "--env-file", str(envfile)], env=env)
    assert r.returncode == 0, r.stderr
    assert "reporting" not in r.stderr, r.stderr
    patches = fake.requests("PATCH")
    assert len(patches) == 1
    assert patches[0]["content_type"] == "application/merge-patch+json"
    ann = fake.get("Pod", POD)["metadata"]["annotations"]
    assert ann == {"pylon.dev/cluster-bus": "noop", "pylon.dev/cluster-peers": "1"}
    posts = fake.requests("POST")
    assert [p["path"] for p in posts] == ["/apis/events.k8s.io/v1/namespaces/prod/events"]
    ev = fake.events[0]
    assert ev["reason"] == "ClusterBusReady" and ev["type"] == "Normal"
    assert ev["regarding"]["name"] == POD and ev["regarding"]["kind"] == "Pod"
    assert ev["regarding"]["uid"] == fake.get("Pod", POD)["metadata"]["uid"]
    assert ev["metadata"]["name"].startswith(POD + ".")
    assert "deployment/chat replicas=1" in ev["note"]
    # no extra pod GET for the uid: discovery's answer was reused
    assert len(fake.requests("GET", r"/pods/")) == 1


def test_unavailable_event_never_carries_the_password(fake, tmp_path):
    fake.add(*deployment_objects(replicas=2))
    env = kenv(fake, tmp_path)        # redis URL with a password, nobody listening
    r = run_agent(["init", "--platform", "kubernetes", "--report", "annotations,events",
                   "--env-file", str(tmp_path / "e.env"), "--timeout", "1s"], env=env,
                  timeout=30)
    assert r.returncode == 69, r.stderr
    assert len(fake.events) == 1
    ev = fake.events[0]
    assert ev["reason"] == "ClusterBusUnavailable" and ev["type"] == "Warning"
    blob = json.dumps(fake.log)
    assert "s3cret" not in blob
    assert "s3cret" not in r.stderr
    ann = fake.get("Pod", POD)["metadata"]["annotations"]
    assert ann["pylon.dev/cluster-bus"] == "redis" and ann["pylon.dev/cluster-peers"] == "2"


def test_report_failures_are_warnings(fake, tmp_path):
    fake.add(*deployment_objects(replicas=1))
    fake.deny("patch", "", "pods")
    fake.deny("create", "events.k8s.io", "events")
    env = kenv(fake, tmp_path, redis=False)
    envfile = tmp_path / "cluster.env"
    r = run_agent(["init", "--platform", "kubernetes", "--report", "annotations,events",
                   "--env-file", str(envfile)], env=env)
    assert r.returncode == 0, r.stderr
    assert envfile.exists()
    assert "reporting to kubernetes failed" in r.stderr
    assert '{apiGroups: ["events.k8s.io"], resources: ["events"], verbs: ["create"]}' in r.stderr
    assert '{apiGroups: [""], resources: ["pods"], verbs: ["patch"]}' in r.stderr


# ---- native sidecar fallback -------------------------------------------------

def _serve(procs, env, tmp_path, name):
    port = free_port()
    envfile = tmp_path / (name + ".env")
    p = procs.start_agent(["serve", "--platform", "kubernetes", "--listen",
                           "127.0.0.1:%d" % port, "--env-file", str(envfile)], env=env)
    return p, port, envfile


def test_native_sidecar_dropped_behaves_like_init(fake, tmp_path, procs):
    fake.add(*deployment_objects(replicas=1, sidecar=False))
    env = kenv(fake, tmp_path, redis=False)
    p, _, envfile = _serve(procs, env, tmp_path, "fallback")
    try:
        rc = p.wait(timeout=20 * SLOW)
    except subprocess.TimeoutExpired:
        pytest.fail("serve kept running although the pod's init container has no "
                    "restartPolicy: Always")
    assert rc == 0, p.stderr.read().decode()
    assert envfile.exists()


def test_native_sidecar_present_keeps_serving(fake, tmp_path, procs):
    fake.add(*deployment_objects(replicas=1, sidecar=True))
    env = kenv(fake, tmp_path, redis=False)
    p, port, envfile = _serve(procs, env, tmp_path, "sidecar")
    wait_port(port, timeout=10)
    time.sleep(0.5)
    assert p.poll() is None, p.stderr.read().decode()


def test_container_name_env(fake, tmp_path, procs):
    # the agent's own container is named differently: the plain init
    # container called pylon-agent is someone else
    fake.add(*deployment_objects(replicas=1, sidecar=False))
    env = kenv(fake, tmp_path, redis=False, PYLON_AGENT_CONTAINER_NAME="agent-sidecar")
    p, port, _ = _serve(procs, env, tmp_path, "named")
    wait_port(port, timeout=10)
    time.sleep(0.5)
    assert p.poll() is None


# ---- kubectl reads the fake ---------------------------------------------------

def test_kubectl_get_raw_reads_the_fake(fake, tmp_path):
    kubectl = shutil.which("kubectl") or ("/usr/bin/kubectl" if os.path.exists("/usr/bin/kubectl")
                                          else None)
    if kubectl is None:
        print("SKIP reason: kubectl is not installed")
        pytest.skip("kubectl is not installed")
    fake.add(*deployment_objects(replicas=2))
    base = [kubectl, "--kubeconfig", "/dev/null", "--server", fake.server,
            "--token", fake.valid_token(), "--certificate-authority", fake.ca_file]
    env = clean_env(HOME=str(tmp_path))
    r = subprocess.run(base + ["get", "--raw", "/api/v1/namespaces/prod/pods/" + POD],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["kind"] == "Pod" and obj["metadata"]["name"] == POD
    r = subprocess.run(base + ["get", "--raw", "/api/v1/namespaces/prod/pods?labelSelector=app%3Dchat&limit=1"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "PodList"
    r = subprocess.run(base + ["get", "--raw", "/api/v1/namespaces/prod/pods/nope"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode != 0
    assert 'Error from server (NotFound): pods "nope" not found' in r.stderr
    assert any(x["user_agent"] and x["user_agent"].startswith("kubectl") for x in fake.log)


def test_fake_validates_events_like_the_api_server(fake):
    """The fake's Event validation is real: a bad Event gets 422 Invalid."""
    import ssl
    import urllib.error
    import urllib.request
    ctx = ssl.create_default_context(cafile=fake.ca_file)

    def post(ev):
        rq = urllib.request.Request(
            fake.server + "/apis/events.k8s.io/v1/namespaces/prod/events",
            data=json.dumps(ev).encode(), method="POST",
            headers={"Authorization": "Bearer " + fake.valid_token(),
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(rq, context=ctx, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    good = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "p.181a2b3c4d5e6f70", "namespace": "prod"},
            "eventTime": "2025-01-01T00:00:06.123456Z", "reportingController": "pylon.dev/agent",
            "reportingInstance": "pylon-agent-p", "action": "ProveBus",
            "reason": "ClusterBusReady", "type": "Normal", "note": "ok",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "prod"}}
    assert post(good)[0] == 201
    code, st = post(good)
    assert code == 409 and st["reason"] == "AlreadyExists"
    bad = dict(good, metadata={"name": "p.2", "namespace": "prod"},
               eventTime="2025-01-01T00:00:06Z", type="Info")
    del bad["action"]
    code, st = post(bad)
    assert code == 422 and st["reason"] == "Invalid"
    fields = {c["field"] for c in st["details"]["causes"]}
    assert fields == {"eventTime", "type", "action"}


def test_serve_reports_annotations_and_event(fake, tmp_path, procs):
    fake.add(*deployment_objects(replicas=1, sidecar=True))
    env = kenv(fake, tmp_path, redis=False)
    port = free_port()
    p = procs.start_agent(["serve", "--platform", "kubernetes", "--listen",
                           "127.0.0.1:%d" % port, "--env-file", str(tmp_path / "s.env"),
                           "--report", "log,annotations,events"], env=env)
    end = time.monotonic() + 15 * SLOW
    while time.monotonic() < end and not fake.events:
        assert p.poll() is None, p.stderr.read().decode()
        time.sleep(0.05)
    assert fake.events, "serve posted no Event within 15 s"
    assert fake.events[0]["reason"] == "ClusterBusReady"
    ann = fake.get("Pod", POD)["metadata"].get("annotations", {})
    end = time.monotonic() + 5 * SLOW
    while time.monotonic() < end and "pylon.dev/cluster-bus" not in ann:
        time.sleep(0.05)
        ann = fake.get("Pod", POD)["metadata"].get("annotations", {})
    assert ann.get("pylon.dev/cluster-bus") == "noop"
    assert_no_pod_list(fake)
