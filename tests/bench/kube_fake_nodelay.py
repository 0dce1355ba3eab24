#!/usr/bin/env python3
"""tests/fakes/kube_fake.py for benchmarks: the same server with TCP_NODELAY
on every connection.  Without it the fake's separate header and body writes
meet the client's delayed ACK (Nagle), adding ~40 ms to each response and
to the TLS handshake; that is the fake's latency, not the agent's.

Same command line as kube_fake.py (--dir D --scenario S.json)."""
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
import kube_fake  # noqa: E402

_setup = kube_fake._Handler.setup


def _setup_nodelay(self):
    try:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    _setup(self)


kube_fake._Handler.setup = _setup_nodelay

if __name__ == "__main__":
    sys.exit(kube_fake.main())
