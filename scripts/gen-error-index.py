#!/usr/bin/env python3
"""Regenerates the "Every error line" index at the end of
docs/troubleshooting.md from the err_set() calls in agent/src/*.c.

    python3 scripts/gen-error-index.py           # rewrite the index
    python3 scripts/gen-error-index.py --check   # exit 1 when it is stale

Each row is one message format as the agent prints it (after
"[pylon-agent] error: "), with the printf placeholders shown as "…", its
exit code and the page that explains it.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "agent", "src")
DOC = os.path.join(ROOT, "docs", "troubleshooting.md")
BEGIN = "<!-- BEGIN ERROR INDEX (scripts/gen-error-index.py) -->"
END = "<!-- END ERROR INDEX -->"

CODES = {"EXIT_AGENT_USAGE": "64", "EXIT_AGENT_UNPROVEN": "69",
         "EXIT_AGENT_SOFTWARE": "70", "EXIT_AGENT_CANTCREAT": "73",
         "EXIT_AGENT_DISCOVERY": "75", "EXIT_AGENT_CONFIG": "78"}
SEE = {
    "bus.c": "[bus.md](bus.md#failure-messages)",
    "transport.c": "[bus.md](bus.md#failure-messages)",
    "redis_url.c": "[bus.md](bus.md#redis-urls)",
    "kube.c": "[kubernetes.md](kubernetes.md#6-error-lines-and-what-to-do)",
    "kubeconfig.c": "[kubernetes.md](kubernetes.md#1-connecting-to-the-api-server)",
    "fly.c": "[fly.md](fly.md#2-secrets)",
    "dns.c": "[fly.md](fly.md#7a-steady-state-drift-from-the-internal-dns)",
    "http_client.c": "[75](#75--discovery-failed)",
    "options.c": "[reference.md](reference.md)",
    "util.c": "[64](#64--usage) / [78](#78--misconfiguration)",
    "envfile.c": "[73](#73--env-file-not-written) / [78](#78--misconfiguration)",
    "decide.c": "[78](#78--misconfiguration)",
    "serve.c": "[serve.md](serve.md)",
    "supervise.c": "[serve.md](serve.md)",
    "main.c": "[70, 126, 127](#70-126-127)",
    "dl.c": "[70, 126, 127](#70-126-127) (a library missing: install the package named)",
    "spawn.c": "[70, 126, 127](#70-126-127)",
    "httpd.c": "[serve.md](serve.md)",
    "proxy.c": "[bus.md](bus.md#the-bus-proxy-serve---bus-proxy-addr)",
    "serve_http.c": "[serve.md](serve.md)",
    "serve_loop.c": "[serve.md](serve.md)",
    "serve_probe.c": "[serve.md](serve.md)",
    "serve_render.c": "[serve.md](serve.md)",
    "state.c": "[serve.md](serve.md)",
    "stats.c": "[serve.md](serve.md)",
    "check.c": "[fly.md](fly.md#4-pylon-agent-check-the-release_command)",
    "err.c": "[70, 126, 127](#70-126-127)",
}

CALL = re.compile(r"\berr_set\s*\(\s*[\w>.-]+\s*,\s*")
PLACEHOLDER = re.compile(r"%[-+ #0-9.*]*(?:hh|h|ll|l|z|j|t)?[diouxXeEfgGcspm]")


def split_args(text, start):
    """The argument list of a call whose '(' precedes start."""
    depth, i, args, cur, instr = 1, start, [], "", False
    while i < len(text) and depth:
        c = text[i]
        if instr:
            cur += c
            if c == "\\":
                cur += text[i + 1]
                i += 1
            elif c == '"':
                instr = False
        elif c == '"':
            instr = True
            cur += c
        elif c == "(":
            depth += 1
            cur += c
        elif c == ")":
            depth -= 1
            if depth:
                cur += c
        elif c == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    args.append(cur.strip())
    return args


def code_of(expr):
    names = re.findall(r"EXIT_AGENT_\w+", expr)
    if expr.strip() in CODES:
        return CODES[expr.strip()]
    if names:
        return "/".join(sorted({CODES.get(n, "?") for n in names})) + " (or the cause's)"
    if expr.strip() == "code":
        return "64/78"
    if "127" in expr or "126" in expr:
        return "126/127"
    return "varies"


def messages():
    out = []
    for name in sorted(os.listdir(SRC)):
        if not name.endswith(".c"):
            continue
        with open(os.path.join(SRC, name)) as f:
            text = f.read()
        for m in CALL.finditer(text):
            args = split_args(text, m.end())
            if len(args) < 2:
                continue
            code, fmt = args[0], args[1]
            lits = re.findall(r'"((?:[^"\\]|\\.)*)"', fmt)
            if not lits or not re.fullmatch(r'(\s*"(?:[^"\\]|\\.)*"\s*)+', fmt):
                continue
            msg = "".join(lits).replace('\\"', '"').replace("\\\\", "\\")
            msg = PLACEHOLDER.sub("…", msg).replace("%%", "%")
            if not re.sub(r'[…:\s"().,;-]', "", msg):
                continue  # passes another error's text through
            out.append((name, code_of(code), msg))
    return out


def render(msgs):
    def order(r):
        m = re.match(r"\d+", r[1])
        return (int(m.group()) if m else 999, r[1], r[0], r[2])
    rows = sorted(set(msgs), key=order)
    lines = [BEGIN,
             "<!-- generated: do not edit by hand; run python3 scripts/gen-error-index.py -->",
             "",
             "| exit | line (`…` = filled in at run time) | source | see |",
             "|---|---|---|---|"]
    for name, code, msg in rows:
        cell = msg.replace("|", "\\|").replace("`", "'")
        lines.append("| %s | `%s` | `%s` | %s |" % (code, cell, name, SEE.get(name, "")))
    lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main():
    with open(DOC) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        print("gen-error-index: %s has no %s ... %s block" % (DOC, BEGIN, END))
        return 1
    new = doc[:doc.index(BEGIN)] + render(messages()) + doc[doc.index(END) + len(END):]
    if "--check" in sys.argv[1:]:
        if new != doc:
            print("docs/troubleshooting.md: the error index is stale; "
                  "run python3 scripts/gen-error-index.py")
            return 1
        return 0
    if new != doc:
        with open(DOC, "w") as f:
            f.write(new)
        print("wrote the error index in docs/troubleshooting.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
