"""The shape of agent/src that issue 14 asks for, checked on every run:
no function over 100 lines, and platform knowledge only in the adapters
(kube*.c, fly.c and its DNS client dns.c): nothing else branches on a
platform's name or reads a platform's environment."""
import glob
import os
import re
import subprocess
import sys

from conftest import ROOT

ADAPTERS = ("kube.c", "kubeconfig.c", "fly.c", "dns.c")
BRANCH = re.compile(r'(strn?cmp|strcasecmp)\s*\([^;]*"(fly|kubernetes|static)"')
PLATFORM_ENV = re.compile(r'getenv\("(FLY_|KUBERNETES_)')


def test_no_function_over_100_lines():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "long-functions.py")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout


def test_long_functions_script_finds_a_long_one(tmp_path):
    # the checker itself: a 101-line body is reported
    src = tmp_path / "agent" / "src"
    src.mkdir(parents=True)
    (src / "x.c").write_text("static int\nlong_one(void)\n{\n" + "\tf();\n" * 101 + "}\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "long-functions.py")],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "long_one: 101 lines" in p.stdout, p.stdout


def test_platform_knowledge_stays_in_the_adapters():
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "agent", "src", "*.c"))):
        if os.path.basename(path) in ADAPTERS:
            continue
        for n, line in enumerate(open(path), 1):
            if BRANCH.search(line) or PLATFORM_ENV.search(line):
                found.append("%s:%d: %s" % (os.path.basename(path), n, line.strip()))
    assert not found, "\n".join(found)
