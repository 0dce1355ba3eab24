"""Shared pytest fixtures for driving the real pylon-agent binary.

Every process a test starts is registered with `procs` and stopped by pid
when the test ends, also when it fails.  Every wait is bounded.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakes"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

AGENT = os.environ.get("PYLON_AGENT_BIN", os.path.join(ROOT, "build", "pylon-agent"))
# e.g. "valgrind -q --error-exitcode=99" (make valgrind)
WRAPPER = os.environ.get("PYLON_AGENT_WRAPPER", "").split()
# Slower under valgrind/ASan: scale time-sensitive waits.
SLOW = 4.0 if WRAPPER else 1.0

# Environment variables that would change the agent's behaviour; tests
# start from a clean slate and set what they need.
_SCRUB_PREFIXES = ("PYLON_", "KUBERNETES_", "FLY_", "KUBECONFIG", "POD_")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    env["PYLON_AGENT_SERVICEACCOUNT_DIR"] = "/nonexistent-sa-dir"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_cmd(args):
    return WRAPPER + [AGENT] + list(args)


def run_agent(args, env=None, timeout=30, input=None, cwd=None):
    """Runs the agent to completion; returns CompletedProcess (text)."""
    return subprocess.run(agent_cmd(args), env=env if env is not None else clean_env(),
                          capture_output=True, text=True, timeout=timeout * SLOW,
                          input=input, cwd=cwd)


def wait_port(port, host="127.0.0.1", timeout=10.0):
    end = time.monotonic() + timeout * SLOW
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing listening on %s:%d after %.1fs" % (host, port, timeout))


class Procs:
    """Processes started by one test; stopped by pid at teardown."""

    def __init__(self):
        self.items = []

    def start(self, argv, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(argv, **kw)
        self.items.append(p)
        return p

    def start_agent(self, args, env=None, **kw):
        return self.start(agent_cmd(args), env=env if env is not None else clean_env(), **kw)

    def stop(self, p, sig=signal.SIGTERM, timeout=5.0):
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        return p.returncode

    def stop_all(self):
        for p in reversed(self.items):
            self.stop(p)


@pytest.fixture
def procs():
    ps = Procs()
    try:
        yield ps
    finally:
        ps.stop_all()


@pytest.fixture
def fly():
    """Factory: fly(scenario, **kw) -> a started fake Fly Machines API
    (tests/fakes/fly_fake.py), stopped at teardown."""
    from fly_fake import FlyFake
    fakes = []

    def start(scenario="one", **kw):
        f = FlyFake(scenario, **kw).start()
        fakes.append(f)
        return f
    try:
        yield start
    finally:
        for f in fakes:
            f.stop()


@pytest.fixture
def agent_env():
    return clean_env()
