#!/usr/bin/env python3
"""Generates manifests/<shape>/ (plain YAML for `kubectl apply -k`) from
charts/pylon, so the chart and the plain manifests never disagree.

    python3 tests/chart/gen_manifests.py           # rewrite manifests/
    python3 tests/chart/gen_manifests.py --check   # exit 1 when stale

The chart's comments are kept; Helm-only labels are dropped.  Every
directory is self-contained (its own ServiceAccount, Role, RoleBinding,
Deployment, Service) and uses namespace "pylon" and the Secret
"pylon-redis" (key "url") and "pylon-db" (key "url", a Postgres
DATABASE_URL) that the operator creates first.  manifests/fly/
is not generated here.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chartlib  # noqa: E402

NAMESPACE = "pylon"
HEADER = ("# Generated from charts/pylon by tests/chart/gen_manifests.py: edit the\n"
          "# chart, then regenerate (a test fails when this file is stale).\n")

COMMON = {"redis": {"existingSecret": "pylon-redis"}, "replicaCount": 3,
          "database": {"existingSecret": "pylon-db"},
          "pylon": {"corsOrigin": "https://app.example"}}

# directory -> [(file, release, values)]
LAYOUT = {
    "native-sidecar": [("pylon.yaml", "pylon", {
        "agent": {"shape": "nativeSidecar", "report": ["log", "annotations", "events"]}})],
    "init": [("pylon.yaml", "pylon", {
        "agent": {"shape": "init", "report": ["log", "annotations"]}})],
    "classic-sidecar": [("pylon.yaml", "pylon", {
        "agent": {"shape": "classicSidecar", "report": ["log", "events"]}})],
    "bluegreen": [
        ("blue.yaml", "pylon-blue", {
            "appName": "pylon", "agent": {"shape": "nativeSidecar",
                                          "report": ["log", "annotations"]},
            "bluegreen": {"enabled": True, "colour": "blue", "sharedService": True,
                          "activeColour": "blue"}}),
        ("green.yaml", "pylon-green", {
            "appName": "pylon", "agent": {"shape": "nativeSidecar",
                                          "report": ["log", "annotations"]},
            "bluegreen": {"enabled": True, "colour": "green", "sharedService": False}}),
    ],
}

DROP = ("helm.sh/chart:", "app.kubernetes.io/managed-by:")


def render_yaml(binary, release, values):
    import json
    import tempfile
    vals = dict(COMMON)
    vals.update(values)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(vals, f)
        name = f.name
    try:
        p = subprocess.run([binary, "--format", "yaml", "--release", release,
                            "--namespace", NAMESPACE, "-f", name, chartlib.CHART],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(name)
    if p.returncode != 0:
        raise SystemExit("gen_manifests: render failed: " + p.stderr)
    lines = [ln for ln in p.stdout.splitlines()
             if not ln.strip().startswith(DROP) and not ln.startswith("# Source:")]
    return "\n".join(lines).strip() + "\n"


def kustomization(files, comment):
    body = HEADER + "# " + comment + "\n"
    body += "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
    body += "namespace: %s\n" % NAMESPACE
    body += "resources:\n" + "".join("  - %s\n" % f for f in files)
    body += ("images:\n  - name: pylon\n    newTag: \"0.1.0\"\n"
             "  - name: pylon-agent\n    newTag: \"0.1.0\"\n")
    return body


COMMENTS = {
    "native-sidecar": "Pylon + pylon-agent as a native sidecar (Kubernetes >= 1.29).",
    "init": "Pylon + pylon-agent as a blocking init container only.",
    "classic-sidecar": "Pylon + pylon-agent as a classic sidecar container.",
    "bluegreen": "A blue/green pair sharing one channel; Service pylon follows blue.",
}


def generate(binary):
    out = {}
    for d, items in LAYOUT.items():
        files = []
        for fname, release, values in items:
            out[os.path.join(d, fname)] = HEADER + render_yaml(binary, release, values)
            files.append(fname)
        out[os.path.join(d, "kustomization.yaml")] = kustomization(files, COMMENTS[d])
    return out


def main():
    check = "--check" in sys.argv[1:]
    binary = chartlib.build_renderer()
    root = os.path.join(chartlib.ROOT, "manifests")
    stale = []
    for rel, text in sorted(generate(binary).items()):
        path = os.path.join(root, rel)
        try:
            with open(path) as f:
                cur = f.read()
        except OSError:
            cur = None
        if cur == text:
            continue
        stale.append(rel)
        if not check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if check and stale:
        print("stale: " + ", ".join(stale) + " (run python3 tests/chart/gen_manifests.py)")
        return 1
    for rel in stale:
        print("wrote manifests/" + rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
