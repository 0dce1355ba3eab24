"""scripts/bundle.sh: the relocatable bundle the agent image ships and the
chart's install container copies into Pylon's pod.

The bundle must run from wherever it is copied, with LD_LIBRARY_PATH unset,
and take every non-glibc library from its own lib/.
"""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import AGENT, ROOT
from redisfix import redis_factory  # noqa: F401

BUNDLE = os.path.join(ROOT, "scripts", "bundle.sh")
GLIBC = ("linux-vdso", "linux-gate", "ld-linux", "ld64", "libc.so", "libm.so", "libmvec",
         "libpthread", "libdl.so", "librt.so", "libresolv", "libutil", "libanl", "libnsl")


def plain_env():
    return {"PATH": "/usr/bin:/bin", "LANG": "C"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if shutil.which("patchelf") is None:
        print("SKIP reason: patchelf not installed (apt-get install patchelf / make deps)")
        pytest.skip("no patchelf")
    if not os.access(AGENT, os.X_OK):
        pytest.fail("no agent binary at %s (make first)" % AGENT)
    out = tmp_path_factory.mktemp("bundle")
    p = subprocess.run(["sh", BUNDLE, AGENT, str(out)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    print(p.stdout)
    return out


def ldd_map(binary):
    p = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30,
                       env=plain_env())
    assert p.returncode == 0, p.stderr
    libs = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            libs[parts[0]] = parts[2]
    assert "not found" not in p.stdout, p.stdout
    return libs


def test_usage_errors(tmp_path):
    p = subprocess.run(["sh", BUNDLE], capture_output=True, text=True, timeout=10)
    assert p.returncode == 64 and "usage" in p.stderr
    p = subprocess.run(["sh", BUNDLE, str(tmp_path / "nope"), str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "not an executable" in p.stderr


def test_layout_and_runpath(bundle):
    d = bundle / "pylon-agent"
    # lib/: what the binary links (all `exec --env-file` needs, the part the
    # chart copies into Pylon's container); lib-dlopen/: the libraries the
    # .note.dlopen metadata declares (libcurl, libmicrohttpd, OpenSSL) and
    # what they need.
    assert sorted(os.listdir(d)) == ["bin", "lib", "lib-dlopen"]
    assert os.listdir(d / "bin") == ["pylon-agent"]
    libs = os.listdir(d / "lib")
    dl = os.listdir(d / "lib-dlopen")
    assert libs and dl, "no libraries bundled"
    for name in libs + dl:
        assert not name.startswith(GLIBC), "glibc library bundled: " + name
    for want in ("libcjson", "libyaml", "libhiredis"):
        assert any(n.startswith(want) for n in libs), want
    for want in ("libcurl", "libmicrohttpd", "libssl", "libcrypto"):
        assert any(n.startswith(want) for n in dl), want
        assert not any(n.startswith(want) for n in libs), want + " in lib/"
    p = subprocess.run(["patchelf", "--print-rpath", str(d / "bin" / "pylon-agent")],
                       capture_output=True, text=True, timeout=10)
    assert p.stdout.strip() == "$ORIGIN/../lib:$ORIGIN/../lib-dlopen"


def test_runs_from_a_copied_location(bundle, tmp_path):
    # copied somewhere else entirely, like the install init container does
    dest = tmp_path / "elsewhere" / "pylon-agent"
    shutil.copytree(bundle / "pylon-agent", dest, symlinks=True)
    binary = str(dest / "bin" / "pylon-agent")
    env = plain_env()
    assert "LD_LIBRARY_PATH" not in env
    p = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10,
                       env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("pylon-agent ")
    # the libraries really work (options, decision, JSON)
    p = subprocess.run([binary, "decide", "--platform", "static", "--output", "json"],
                       capture_output=True, text=True, timeout=10, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["mode"] == "noop"
    # every non-glibc library resolves from the copied bundle's lib/
    lib = os.path.realpath(dest / "lib")
    resolved = ldd_map(binary)
    bundled = 0
    for name, path in resolved.items():
        if name.startswith(GLIBC):
            continue
        assert os.path.dirname(os.path.realpath(path)) == lib, (name, path)
        bundled += 1
    assert bundled == len(os.listdir(dest / "lib"))


def test_tarball(bundle, tmp_path):
    tars = [n for n in os.listdir(bundle) if n.endswith(".tar.gz")]
    assert len(tars) == 1 and tars[0].startswith("pylon-agent-")
    with tarfile.open(bundle / tars[0]) as t:
        names = t.getnames()
        assert all(n == "pylon-agent" or n.startswith("pylon-agent/") for n in names)
        for m in t.getmembers():
            assert m.uid == 0 and m.gid == 0
        t.extractall(tmp_path)
    p = subprocess.run([str(tmp_path / "pylon-agent" / "bin" / "pylon-agent"), "version"],
                       capture_output=True, text=True, timeout=10, env=plain_env())
    assert p.returncode == 0, p.stderr
    # small enough for the chart's 64Mi emptyDir with room to spare
    total = sum(os.path.getsize(os.path.join(r, f))
                for r, _, fs in os.walk(tmp_path / "pylon-agent") for f in fs)
    assert total < 48 * 1024 * 1024, total


def test_dockerfile_recipe():
    """The Dockerfile, read (test_podman.py builds and runs it):
    multi-stage, the build stage runs the same make + make bundle the tests
    run, the runtime stage holds only the bundle at the path the chart
    copies from, as a non-root user."""
    with open(os.path.join(ROOT, "agent", "Dockerfile")) as f:
        lines = [ln.strip() for ln in f.read().replace("\\\n", " ").splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) == 2
    # the base is a build argument (debian:bookworm-slim by default; the
    # image test imports a debootstrap root instead)
    assert "ARG BASE=debian:bookworm-slim" in lines
    assert "ARG BUILD_BASE=${BASE}" in lines
    assert froms[0].split()[1] == "${BUILD_BASE}" and froms[0].endswith("AS build")
    assert froms[1].split()[1] == "${BASE}"
    runtime = lines[lines.index(froms[1]):]
    build = lines[lines.index(froms[0]):lines.index(froms[1])]
    build_run = " ".join(ln for ln in build if ln.startswith("RUN"))
    for pkg in ("libcurl4-openssl-dev", "libcjson-dev", "libhiredis-dev", "libyaml-dev",
                "libssl-dev", "libmicrohttpd-dev", "patchelf"):
        assert pkg in build_run, pkg
    assert "make bundle" in build_run
    copies = [ln for ln in runtime if ln.startswith("COPY")]
    assert copies == ["COPY --from=build /src/build/bundle/pylon-agent/ /opt/pylon-agent/"]
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER")]
    assert users and users[-1] == "10001:10001"
    entry = [ln for ln in runtime if ln.startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["/opt/pylon-agent/bin/pylon-agent"]']
    # the chart copies from and runs exactly these paths
    with open(os.path.join(ROOT, "charts", "pylon", "templates", "_helpers.tpl")) as f:
        helpers = f.read()
    assert '{{- define "pylon.agentBundleDir" -}}/opt/pylon-agent{{- end }}' in helpers
    assert '{{- define "pylon.agentBin" -}}/opt/pylon-agent/bin/pylon-agent{{- end }}' in helpers
    # the Makefile's bundle target writes where the Dockerfile copies from
    with open(os.path.join(ROOT, "Makefile")) as f:
        mk = f.read()
    assert "scripts/bundle.sh $(BUILD)/pylon-agent $(BUILD)/bundle" in mk
    assert "BUILD\t?= build" in mk or "BUILD ?= build" in mk


# ---- the exec tree: what the chart copies into Pylon's container (issue 16) ----

EXEC_TREE_MAX = 1024 * 1024   # issue 16: <= 1 MiB copied into each pod


def du_sb(*paths):
    p = subprocess.run(["du", "-sb", "--total"] + [str(x) for x in paths],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.splitlines()[-1].split()[0])


SANITIZER_RUNTIMES = ("libasan.", "libubsan.", "liblsan.", "libtsan.")


def exec_tree_bytes(dest):
    """The bytes the budget counts: bin/ + lib/.  An ASan/UBSan build (`make
    asan`) links sanitizer runtimes and its binary is several times larger;
    there only lib/ less the runtimes is counted (what a release copies
    besides the binary)."""
    lib = os.path.join(str(dest), "lib")
    san = [n for n in os.listdir(lib) if n.startswith(SANITIZER_RUNTIMES)]
    if not san:
        return du_sb(os.path.join(str(dest), "bin"), lib)
    # and what the runtimes themselves link (libstdc++, libgcc_s)
    san += [n for n in os.listdir(lib) if n.startswith(("libstdc++.", "libgcc_s."))]
    return du_sb(lib) - sum(os.path.getsize(os.path.join(lib, n)) for n in san)


def copy_exec_tree(bundle, dest):
    """Exactly what the chart's pylon-agent-install container runs
    (test_chart.py checks the rendered command is this one)."""
    os.makedirs(dest)
    src = bundle / "pylon-agent"
    p = subprocess.run(["cp", "-R", str(src / "bin"), str(src / "lib"), str(dest) + "/"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return dest


def run_hiding(sonames, argv, env, timeout=30):
    """argv with the system's copies of sonames unloadable: in a private
    mount namespace each is covered by /dev/null (as in test_footprint.py),
    so only a library the binary itself carries could be found."""
    real = set()
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                         timeout=30).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in sonames:
            real.add(os.path.realpath(parts[-1]))
    assert real, "none of %s installed: nothing to hide" % (sonames,)
    script = "; ".join("mount --bind /dev/null '%s'" % r for r in sorted(real))
    script += "; exec " + " ".join("'%s'" % a for a in argv)
    return subprocess.run(["unshare", "-m", "sh", "-c", script], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_exec_tree_is_small_and_only_what_the_binary_links(bundle, tmp_path):
    src = bundle / "pylon-agent"
    dest = copy_exec_tree(bundle, tmp_path / "shared")
    assert sorted(os.listdir(dest)) == ["bin", "lib"]
    size = exec_tree_bytes(dest)
    assert size <= EXEC_TREE_MAX, size
    # the whole bundle (what the chart copied before issue 16) is ~17 MiB
    assert du_sb(src) > 10 * size
    # bundle.sh reports the same figure
    p = subprocess.run(["sh", BUNDLE, AGENT, str(tmp_path / "again")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "exec tree bin/ + lib/" in p.stdout and ": %d bytes (du -sb)" % du_sb(
        tmp_path / "again" / "pylon-agent" / "bin",
        tmp_path / "again" / "pylon-agent" / "lib") in p.stdout, p.stdout
    # lib/ is exactly the non-glibc libraries of the DT_NEEDED closure
    need = {n for n in ldd_map(AGENT) if not n.startswith(GLIBC)}
    assert set(os.listdir(dest / "lib")) == need
    for n in os.listdir(dest / "lib"):
        assert not n.startswith(("libcurl", "libmicrohttpd", "libssl", "libcrypto",
                                 "libgnutls", "libnghttp2")), n
    p = subprocess.run(["patchelf", "--print-rpath", str(dest / "bin" / "pylon-agent")],
                       capture_output=True, text=True, timeout=10)
    assert p.stdout.strip().split(":")[0] == "$ORIGIN/../lib"


def test_exec_from_the_exec_tree(bundle, tmp_path, redis_factory):  # noqa: F811
    """Pylon's container: init (the agent's image, the full bundle) writes
    the env file, exec from the exec tree applies it, with LD_LIBRARY_PATH
    unset and the system's libcurl, libmicrohttpd and OpenSSL hidden."""
    r = redis_factory(requirepass="tree-s3cret")
    envfile = tmp_path / "cluster.env"
    env = plain_env()
    assert "LD_LIBRARY_PATH" not in env
    full = str(bundle / "pylon-agent" / "bin" / "pylon-agent")
    p = subprocess.run([full, "init", "--platform", "static", "--replicas", "3",
                        "--redis-url", r.url(), "--env-file", str(envfile)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    dest = copy_exec_tree(bundle, tmp_path / "shared")
    binary = str(dest / "bin" / "pylon-agent")
    p = run_hiding(["libcurl.so.4", "libmicrohttpd.so.12", "libssl.so.3", "libcrypto.so.3"],
                   [binary, "exec", "--env-file", str(envfile), "--", "/bin/sh", "-c",
                    "echo $PYLON_CLUSTER_BUS"], env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == r.url(), p.stdout
    assert "tree-s3cret" not in p.stderr


def test_kubernetes_from_the_exec_tree_fails_clearly(bundle, tmp_path):
    """decide --platform kubernetes from the exec tree needs libcurl, which
    the tree does not carry: one line naming it, exit 70, no crash."""
    dest = copy_exec_tree(bundle, tmp_path / "shared")
    kc = tmp_path / "kubeconfig"
    kc.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: ns}}]
current-context: x
""")
    env = dict(plain_env(), POD_NAME="p1")
    p = run_hiding(["libcurl.so.4"],
                   [str(dest / "bin" / "pylon-agent"), "decide", "--platform", "kubernetes",
                    "--kubeconfig", str(kc), "--on-discovery-error", "fail"], env)
    assert p.returncode == 70, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("[pylon-agent] error: ")
    assert "libcurl.so.4 is needed for the Kubernetes and Fly APIs" in lines[0]
    assert "install the Debian package libcurl4" in lines[0]
    assert "full pylon-agent bundle" in lines[0]
    # the same command from the full bundle loads libcurl from lib-dlopen/
    p = run_hiding(["libcurl.so.4"],
                   [str(bundle / "pylon-agent" / "bin" / "pylon-agent"), "decide",
                    "--platform", "kubernetes", "--kubeconfig", str(kc),
                    "--on-discovery-error", "fail"], env)
    assert "libcurl.so.4 is needed" not in p.stderr, p.stderr
    assert p.returncode == 75, p.stderr   # discovery fails: nothing listens on :1
