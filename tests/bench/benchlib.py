"""tests/bench/benchlib.py - what the bench scripts share: stopping a
process they started, and writing their section of docs/benchmarks.md."""
import re
import signal
import subprocess


def stop(p, timeout=5):
    """SIGTERM, then SIGKILL after timeout s; p is a Popen we started."""
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def write_section(path, name, sect):
    """Replaces the text between <!-- name --> and <!-- /name --> in path
    with sect (which holds both markers), or appends it."""
    begin, end = "<!-- %s -->" % name, "<!-- /%s -->" % name
    try:
        doc = open(path).read()
    except FileNotFoundError:
        doc = "# Benchmarks\n"
    if begin in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", lambda m: sect, doc,
                     flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + sect
    with open(path, "w") as f:
        f.write(doc)
