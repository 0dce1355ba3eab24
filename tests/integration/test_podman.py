"""The agent's image, built and run for real with podman, and the chart's
pods run with `podman kube play` against a real Redis, Postgres and Pylon.

No image registry is reachable: the bases are cached debootstrap roots
(scripts/bookworm-cache.sh: Debian 12 for the agent image's two stages;
scripts/pylon-cache.sh: Debian 13 with the npm Pylon binary and Bun)
imported with `podman import`.  agent/Dockerfile is built unchanged but
for its BASE/BUILD_BASE arguments.  podman runs with a configuration and
an image store of this module's own (podmanlib.py), everything it created
is removed by name at the end, and the store is deleted.

What podman does not do that Kubernetes does (probes, native sidecars,
Secrets, the API server) is listed in docs/containers.md; the pods here
are rewritten only for those gaps (see kube_pod()).
"""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from conftest import ROOT
import podmanlib
from podmanlib import Podman

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chart"))
import chartlib  # noqa: E402

TAG = "t%d" % os.getpid()
AGENT_IMG = "localhost/pylon-agent-test:" + TAG
PYLON_IMG = "localhost/pylon-test:" + TAG
# the agent image's measured size must stay near the base's
MAX_IMAGE_BYTES = 130 * 1000 * 1000


def cache(script, keys):
    p = subprocess.run([os.path.join(ROOT, "scripts", script)], capture_output=True,
                       text=True, timeout=1800)
    out = dict(l.split("=", 1) for l in p.stdout.splitlines() if "=" in l)
    assert p.returncode == 0 and all(k in out for k in keys), \
        "scripts/%s failed (exit %d): %s" % (script, p.returncode, p.stderr[-2000:])
    return [out[k] for k in keys]


@pytest.fixture(scope="module")
def pm(tmp_path_factory):
    try:
        pm = Podman(tmp_path_factory.mktemp("podman"))
    except podmanlib.Unavailable as e:
        # scripts/install-deps.sh (make test) installs podman, buildah, runc
        pytest.fail(str(e))
    try:
        yield pm
    finally:
        errors, left = pm.cleanup()
        # nothing of ours may survive: then the store goes too
        shutil.rmtree(pm.dir, ignore_errors=True)
        assert not errors, errors
        assert not left, "containers left behind: %s" % left


@pytest.fixture(scope="module")
def images(pm):
    """Builds the agent image (agent/Dockerfile) and a Pylon-like image;
    returns timings and the build log."""
    bookworm, build = cache("bookworm-cache.sh", ["bookworm", "bookworm-build"])
    (trixie,) = cache("pylon-cache.sh", ["root"])
    t0 = time.monotonic()
    pm.import_root(bookworm, "localhost/pylon-agent-test-base:" + TAG)
    pm.import_root(build, "localhost/pylon-agent-test-build:" + TAG)
    t_import = time.monotonic() - t0
    t_build, log = pm.build(AGENT_IMG, ROOT, os.path.join(ROOT, "agent", "Dockerfile"), {
        "BASE": "localhost/pylon-agent-test-base:" + TAG,
        "BUILD_BASE": "localhost/pylon-agent-test-build:" + TAG,
        "GIT_REV": "podman-test"})
    # a Pylon-like image: Debian 13 + Pylon + Bun (the cached root), uid
    # 10001, /data writable, an app whose app.ts prints its manifest
    from realpylon import manifest
    ctx = os.path.join(pm.dir, "pylon-ctx")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "app.ts"), "w") as f:
        f.write("console.log(JSON.stringify(%s));\n" % json.dumps(manifest("podman-test")))
    t1 = time.monotonic()
    pm.import_root(trixie, "localhost/pylon-test-base:" + TAG)
    pm.build(PYLON_IMG, ctx, os.path.join(HERE, "pylon-image", "Containerfile"),
             {"BASE": "localhost/pylon-test-base:" + TAG})
    t_pylon = time.monotonic() - t1
    print("podman: import %.1fs, agent image build %.1fs, Pylon-like image %.1fs"
          % (t_import, t_build, t_pylon))
    return {"build_log": log}


# ---- the agent image ------------------------------------------------------

def test_agent_image_non_root_and_version(pm, images):
    assert pm.inspect("image", AGENT_IMG, "{{.User}}") == "10001:10001"
    p = pm.run(["--rm", "--network", "none", AGENT_IMG, "version"])
    assert p.stdout.startswith("pylon-agent 0.") and "(git podman-test)" in p.stdout, p.stdout
    assert "libcurl" in p.stdout and "OpenSSL" in p.stdout, p.stdout
    p = pm.run(["--rm", "--network", "none", "--entrypoint", "id", AGENT_IMG])
    assert p.stdout.startswith("uid=10001") and "gid=10001" in p.stdout, p.stdout
    # the runtime stage holds the bundle, not the build tools
    p = pm.run(["--rm", "--network", "none", "--entrypoint", "sh", AGENT_IMG, "-c",
                "command -v cc gcc make patchelf; ls /opt/pylon-agent; ulimit -n"],
               check=False)
    # (no compiler, make or patchelf on PATH; containers.conf's nofile)
    assert p.stdout.split() == ["bin", "lib", "lib-dlopen",
                                str(podmanlib.hard_limits()[0])], p.stdout
    size = pm.image_size(AGENT_IMG)
    base = pm.image_size("localhost/pylon-agent-test-base:" + TAG)
    print("agent image: %d bytes (%.1f MB; base %.1f MB)" % (size, size / 1e6, base / 1e6))
    assert size < MAX_IMAGE_BYTES, size
    assert size - base < 25 * 1000 * 1000, (size, base)


def test_agent_image_decides(pm, images):
    p = pm.run(["--rm", "--network", "none", AGENT_IMG, "decide", "--platform", "static",
                "--replicas", "1", "--output", "json"])
    d = json.loads(p.stdout)
    assert d["mode"] == "noop" and d["peers"] == 1 and d["platform"] == "static", d
    # a usage error inside the image is the agent's own, with its exit code
    p = pm.run(["--rm", "--network", "none", AGENT_IMG, "decide", "--replicas", "x"],
               check=False)
    assert p.returncode == 64, (p.returncode, p.stderr)


def test_bundle_runs_in_a_pylon_like_image(pm, images, tmp_path):
    """The chart's install container copies bin/ and lib/ out of the agent
    image; Pylon's image (Debian 13, uid 10001, no agent) then starts
    through `exec --env-file` with the file `init` wrote."""
    shared = tmp_path / "pylon-agent"
    shared.mkdir()
    os.chown(shared, 10001, 10001)
    vol = "%s:/pylon-agent" % shared
    name = "pa-install-" + TAG
    pm.run(["--rm", "--name", name, "--network", "none", "-v", vol, "--entrypoint", "cp",
            AGENT_IMG, "-R", "/opt/pylon-agent/bin", "/opt/pylon-agent/lib", "/pylon-agent/"])
    assert sorted(os.listdir(shared)) == ["bin", "lib"]
    name = "pa-init-" + TAG
    pm.run(["--rm", "--name", name, "--network", "none", "-v", vol, AGENT_IMG, "init",
            "--platform", "static", "--replicas", "1", "--env-file",
            "/pylon-agent/cluster.env"])
    with open(shared / "cluster.env") as f:
        text = f.read()
    assert "mode=noop" in text, text
    # Pylon's image: the agent is only what the install container copied
    p = pm.run(["--rm", "--network", "none", "-v", vol + ":ro", "--entrypoint", "sh",
                PYLON_IMG, "-c", "id -u; . /etc/os-release; echo $VERSION_CODENAME; "
                "command -v pylon-agent || echo no-agent-on-path"])
    assert p.stdout.split() == ["10001", "trixie", "no-agent-on-path"], p.stdout
    name = "pa-exec-" + TAG
    p = pm.run(["--rm", "--name", name, "--network", "none", "-v", vol + ":ro",
                "--entrypoint", "/pylon-agent/bin/pylon-agent", PYLON_IMG,
                "exec", "--env-file", "/pylon-agent/cluster.env", "--",
                "sh", "-c", 'echo "bus=[${PYLON_CLUSTER_BUS-unset}]"; pylon --version'])
    # noop mode (one replica): the agent leaves Pylon's bus unset (NoopBus)
    assert "bus=[unset]" in p.stdout and "pylon 0.11.3" in p.stdout, p.stdout + p.stderr


# ---- kube play: the chart's pods, two of them sharing a Redis ---------------

def kube_pod(doc, pod_name, secrets, secret_dir, namespace="default"):
    """The chart's Deployment as one Pod for `podman kube play`, rewritten
    only where podman has no equivalent: Secrets become files (hostPath) and
    secretKeyRef values literal env (so does the downward API's
    metadata.namespace, which podman 4.3 lacks), the projected service-account volume
    (no API server; the static platform needs none) is dropped, and the pod
    uses the host network (the test's private namespace)."""
    dep = [m["object"] for m in doc["manifests"] if m["object"]["kind"] == "Deployment"][0]
    tmpl = copy.deepcopy(dep["spec"]["template"])
    spec = tmpl["spec"]
    dropped = set()
    vols = []
    for v in spec["volumes"]:
        if "projected" in v:
            dropped.add(v["name"])
            continue
        if "secret" in v:
            d = os.path.join(secret_dir, pod_name, v["name"])
            os.makedirs(d)
            for item in v["secret"]["items"]:
                path = os.path.join(d, item["path"])
                with open(path, "w") as f:
                    f.write(secrets[v["secret"]["secretName"]][item["key"]])
                os.chown(path, 10001, 10001)
                os.chmod(path, 0o400)
            os.chown(d, 10001, 10001)
            v = {"name": v["name"], "hostPath": {"path": d, "type": "Directory"}}
        vols.append(v)
    spec["volumes"] = vols
    for c in spec.get("initContainers", []) + spec["containers"]:
        c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] not in dropped]
        # podman 4.3 turns every containerPort into a port mapping, which
        # the host network refuses; a probe's named port becomes a number
        named = {p["name"]: p["containerPort"] for p in c.pop("ports", []) if "name" in p}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            g = c.get(probe, {}).get("httpGet")
            if g and isinstance(g["port"], str):
                g["port"] = named[g["port"]]
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                e.pop("valueFrom")
                e["value"] = secrets[ref["name"]][ref["key"]]
            # podman 4.3's downward API has metadata.name but not .namespace
            ref = e.get("valueFrom", {}).get("fieldRef")
            if ref and ref["fieldPath"] == "metadata.namespace":
                e.pop("valueFrom")
                e["value"] = namespace
    for k in ("serviceAccountName", "automountServiceAccountToken"):
        spec.pop(k, None)
    # the test's private network namespace (podman's ports need a bridge)
    spec["hostNetwork"] = True
    ann = dict(tmpl["metadata"].get("annotations", {}))
    # with the default "once" type podman 4.3 waited 20 s for conmon after
    # the quick install container (cf. podman#16343), then failed removing
    # it as still running; "always" keeps init containers (and works)
    ann["io.podman.annotations.init.container.type"] = "always"
    # ...but podman applies the pod's restartPolicy to init containers too:
    # Always (a Deployment's) would rerun them forever
    spec["restartPolicy"] = "OnFailure"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "labels": tmpl["metadata"]["labels"],
                         "annotations": ann},
            "spec": spec}


def render_pod(renderer, shape, port, agent_port, pod_name, secrets, secret_dir):
    from realpylon import CORS_ORIGIN
    values = {
        "replicaCount": 2,
        "redis": {"existingSecret": "pylon-redis"},
        "database": {"existingSecret": "pylon-db"},
        "image": {"repository": PYLON_IMG.split(":")[0], "tag": TAG},
        "pylon": {"port": port, "corsOrigin": CORS_ORIGIN},
        "agent": {"shape": shape, "port": agent_port, "report": ["log"],
                  "image": {"repository": AGENT_IMG.split(":")[0], "tag": TAG},
                  # no API server under podman: the static platform, told
                  # the Deployment's replica count
                  "extraEnv": [{"name": "PYLON_AGENT_PLATFORM", "value": "static"},
                               {"name": "PYLON_AGENT_REPLICAS", "value": "2"}]},
    }
    rc, doc, err = chartlib.render(renderer, values=values)
    assert rc == 0, err
    return kube_pod(doc, pod_name, secrets, secret_dir)


@pytest.fixture(scope="module")
def renderer():
    try:
        return chartlib.build_renderer()
    except chartlib.Unavailable as e:
        pytest.fail(str(e))


def wait_health(port, timeout, what):
    from realpylon import http
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = http("GET", port, "/health", timeout=1.0)
            if last[0] == 200:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.25)
    what()
    raise TimeoutError("no /health on :%d within %.0fs (last: %r)" % (port, timeout, last))


def test_kube_play_two_pods_exchange_a_change(pm, images, renderer, tmp_path):
    """Pod A in the chart's init shape, pod B in the classic-sidecar shape,
    both `podman kube play`ed on one private network namespace with a real
    Redis (password) and Postgres: each agent init container writes the env
    file, each real Pylon starts through `exec --env-file` on the Redis bus,
    answers /health, and a row inserted on A reaches B's WebSocket."""
    from realpylon import (Postgres, WSClient, guest_token, insert, private_netns)
    from redisfix import RedisServer
    pgdir = tempfile.mkdtemp(prefix="pylon-agent-pg-")
    os.chmod(pgdir, 0o711)
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    os.chmod(tmp_path, 0o711)
    pods = [("pa-init-" + TAG, "init", 4321, 4320),
            ("pa-classic-" + TAG, "classicSidecar", 4331, 4330)]
    r = pg = ws = None
    with private_netns():
        try:
            r = RedisServer(str(tmp_path), requirepass="s3cret-pw").start()
            pg = Postgres(pgdir).start()
            secrets = {"pylon-redis": {"url": r.url(password="s3cret-pw")},
                       "pylon-db": {"url": pg.url()}}
            for name, shape, port, aport in pods:
                pod = render_pod(renderer, shape, port, aport, name, secrets, str(secret_dir))
                path = tmp_path / (name + ".yaml")
                with open(path, "w") as f:
                    yaml.safe_dump(pod, f)
                pm.play(str(path), [name])

            def dump():
                for name, shape, _, _ in pods:
                    for c in ("pylon-agent-init", "pylon", "pylon-agent"):
                        print("---- %s-%s\n%s" % (name, c, pm.logs(name + "-" + c)[-3000:]))
            for name, shape, port, aport in pods:
                wait_health(port, 60, dump)
            # the init container wrote the env file; Pylon (PID 1 of its
            # container: exec all the way) started with it, on the bus
            for name, shape, port, aport in pods:
                ctr = name + "-pylon"
                env = pm.cmd(["exec", ctr, "cat", "/pylon-agent/cluster.env"]).stdout
                assert "mode=redis" in env and "peers=2" in env, env
                log = pm.logs(name + "-pylon-agent-init")
                assert log.count("env file written: /pylon-agent/cluster.env (mode redis)") \
                    == 1, log
                # of Pylon's three probes podman keeps only the liveness one,
                # as a healthcheck (curl in the image, a systemd timer)
                hc = json.loads(pm.inspect("container", ctr, "{{json .Config.Healthcheck}}"))
                assert "http://localhost:%d/health" % port in hc["Test"], hc
                p = pm.cmd(["exec", ctr, "sh", "-c",
                            "cat /proc/1/comm; tr '\\0' '\\n' < /proc/1/environ"])
                lines = p.stdout.splitlines()
                assert lines[0] == "pylon", lines[0]
                penv = dict(l.split("=", 1) for l in lines[1:] if "=" in l)
                assert penv["PYLON_CLUSTER_BUS"] == secrets["pylon-redis"]["url"]
                assert penv["PYLON_CLUSTER_REQUIRED"] == "1"
                assert penv["PYLON_PORT"] == str(port) and penv["DATABASE_URL"] == pg.url()
                plog = pm.logs(ctr)
                assert "redis bus connected" in plog, plog[-3000:]
                for c in ("pylon-agent-init", "pylon-agent"):
                    log = pm.logs(name + "-" + c)
                    assert "s3cret-pw" not in log, "the Redis password in %s's log" % c
            ta, tb = guest_token(4321), guest_token(4331)
            ws = WSClient(4331, tb)
            time.sleep(0.5)
            marker = "podman-row-%d" % os.getpid()
            insert(4321, ta, "Note", {"body": marker})
            assert ws.wait_for(marker, timeout=15), "pod B never saw pod A's row"
            # the classic sidecar's serve answers its readiness probe path
            from realpylon import http
            st, _ = http("GET", 4330, "/readyz", timeout=2.0)
            assert st == 200, st
        finally:
            if ws:
                ws.close()
            for name, _, _, _ in pods:
                pm.cmd(["pod", "rm", "-f", "-t", "0", name], check=False, timeout=60)
            if pg:
                pg.stop()
            if r:
                r.stop()
            shutil.rmtree(pgdir, ignore_errors=True)


def test_kube_play_refuses_the_native_sidecar_shape(pm, images, renderer, tmp_path):
    """The chart's default shape (serve as an init container with
    restartPolicy: Always and probes) cannot run under podman 4.3: kube
    play refuses an init container with probes, before starting anything.
    docs/containers.md says so; this test notices when podman changes."""
    from realpylon import private_netns
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    name = "pa-native-" + TAG
    secrets = {"pylon-redis": {"url": "redis://:unused@127.0.0.1:1"},
               "pylon-db": {"url": "postgres://unused@127.0.0.1:1/x"}}
    pod = render_pod(renderer, "nativeSidecar", 4341, 4340, name, secrets, str(secret_dir))
    init = [c for c in pod["spec"]["initContainers"] if c["name"] == "pylon-agent"]
    assert init and init[0]["restartPolicy"] == "Always" and "startupProbe" in init[0]
    path = tmp_path / (name + ".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(pod, f)
    # in a private network namespace all the same: should a later podman
    # start it, Pylon would bind every interface of the host network
    with private_netns():
        try:
            p = pm.play(str(path), [name], timeout=60, check=False)
        finally:
            pm.cmd(["pod", "rm", "-f", "-t", "0", name], check=False, timeout=60)
    assert p.returncode == 125, (p.returncode, p.stdout, p.stderr)
    assert "cannot create an init container that has either of lifecycle, livenessProbe, " \
        "readinessProbe, or startupProbe set" in p.stderr, p.stderr
