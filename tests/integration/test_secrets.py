"""Secrets never reach output: an adversarial sweep.

The Redis password and the API tokens (Kubernetes bearer token, Fly
token) must not appear on stdout, stderr (text or JSON logs, debug on),
the termination log, /status or /metrics -- on the usual paths and on
unusual ones: malformed URLs, a URL given in the wrong place, a Redis
that echoes the AUTH arguments, an API that echoes the Authorization
header.  Every test drives the real binary and checks real output.
"""
import json
import os
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SLOW, clean_env, free_port, run_agent, wait_port
from redisfix import redis_factory  # noqa: F401  (fixture)

# Passwords: special characters, 1-2 characters (below log.c's 3-character
# string-redaction floor), a plain one.
PASSWORDS = ["p@ss w/#?%:x", "ab", "Q", "plain-secret-pw"]


def q(pw):
    return urllib.parse.quote(pw, safe="")


def leaks(text, secret):
    """True when secret (decoded or percent-encoded) is in text.

    A 1-2 character secret matches innocent text too, so for those only
    the userinfo form ':<pw>@' counts."""
    if len(secret) < 3:
        return (":%s@" % secret) in text or (":%s@" % q(secret)) in text
    return secret in text or q(secret) in text


def assert_clean(secret, *texts):
    for t in texts:
        assert not leaks(t, secret), "secret %r leaked in:\n%s" % (secret, t)


@pytest.fixture
def term_log(tmp_path):
    p = tmp_path / "termination-log"
    p.write_text("")
    return p


def env_with(term_log=None, **kw):
    extra = dict(PYLON_AGENT_DEBUG="1")
    if term_log is not None:
        extra["PYLON_AGENT_TERMINATION_LOG"] = str(term_log)
    extra.update(kw)
    return clean_env(**extra)


# ---- a Redis that echoes the AUTH arguments ---------------------------------

@pytest.mark.parametrize("pw", ["ab", "x" * 150, "sec\x01retpw", "longenoughpw"],
                         ids=["short", "longer-than-redis-echo", "unprintable", "plain"])
def test_auth_reply_echo_is_not_shown(redis_factory, pw, term_log):  # noqa: F811
    """AUTH renamed away: Redis answers 'ERR unknown command 'AUTH', with
    args beginning with: '<password>''.  It cuts the echo at 128 bytes
    and the agent prints unprintables as '?': neither form, nor a short
    password, may be printed."""
    r = redis_factory(extra=['rename-command AUTH ""'])
    url = "redis://:%s@127.0.0.1:%d" % (q(pw), r.port)
    p = run_agent(["decide", "--platform", "static", "--mode", "redis", "--prove",
                   "--timeout", "1s", "--output", "json"],
                  env=env_with(term_log, PYLON_AGENT_REDIS_URL=url))
    assert p.returncode == 69, p.stderr
    out = p.stdout + p.stderr + term_log.read_text()
    assert "AUTH failed" in out
    assert "unknown command" in out          # the cause stays readable
    assert "withheld" in out
    for form in (pw, pw[:100], pw.replace("\x01", "?"), pw[:20]):
        assert form not in out.replace("pylon-agent", ""), out


def test_wrong_password_message_has_no_password(redis_factory, term_log):  # noqa: F811
    r = redis_factory(requirepass="right-one")
    for pw in PASSWORDS:
        url = "redis://:%s@127.0.0.1:%d" % (q(pw), r.port)
        for log_format in ("text", "json"):
            p = run_agent(["init", "--platform", "static", "--mode", "redis",
                           "--timeout", "1s", "--log-format", log_format,
                           "--env-file", str(term_log) + ".env"],
                          env=env_with(term_log, PYLON_AGENT_REDIS_URL=url))
            assert p.returncode == 69, p.stderr
            assert "WRONGPASS" in p.stderr
            assert_clean(pw, p.stdout, p.stderr, term_log.read_text())
            assert not os.path.exists(str(term_log) + ".env")


# ---- a Redis URL in the wrong place ------------------------------------------

@pytest.mark.parametrize("pw", ["ab", "long-enough-pw"])
def test_misplaced_url_is_not_echoed(tmp_path, pw):
    url = "redis://:%s@h.example:6379" % pw
    cfg = tmp_path / "c.yaml"
    cfg.write_text("namespace: x\n%s: 1\n" % url)
    cases = [
        # --timeout swallows --redis-url: the URL is a stray argument
        (["probe", "--timeout", "--redis-url", url], {}),
        (["decide", "--prove", url], {}),
        (["decide", "--mode", url], {}),
        (["decide", "--min-peers", url], {}),
        (["decide", "--timeout", url], {}),
        (["decide", "--report", url], {}),
        (["decide"], dict(PYLON_AGENT_MODE=url)),
        (["decide"], dict(PYLON_AGENT_NAMESPACE=url)),
        (["decide", "--config", str(cfg)], {}),
    ]
    for args, extra in cases:
        p = run_agent(args, env=env_with(**extra))
        assert p.returncode in (64, 78), (args, p.stderr)
        assert "h.example" in p.stderr, (args, p.stderr)   # still says which
        assert_clean(pw, p.stdout, p.stderr)


# ---- malformed URLs ----------------------------------------------------------

MALFORMED = [
    ("redis://u:pa ss@127.0.0.1:1", "pa ss"),
    ("redis://:pw\nline@127.0.0.1:1", "pw\nline"),
    ("redis://:sek/rit@127.0.0.1:1", "sek/rit"),
    ("redis://:sek#rit@127.0.0.1:1", "sek#rit"),
    ("redis://:sek?rit@127.0.0.1:1", "sek?rit"),
    ("redis://:sekrit@127.0.0.1:1/notadb", "sekrit"),
    ("redis://:sekrit@127.0.0.1:99999", "sekrit"),
    ("redis://:sekrit@[::1:1", "sekrit"),
    ("redis://:sekrit@127.0.0.1:1?foo=bar", "sekrit"),
    ("redis://:sekrit@127.0.0.1:1#frag", "sekrit"),
    ("http://:sekrit@127.0.0.1:1", "sekrit"),
    ("redis://:sekrit%00@127.0.0.1:1", "sekrit"),
    ("unix:///tmp/x.sock?pass=sekrit&bogus=1", "sekrit"),
    ("unix://host/x.sock?pass=sekrit", "sekrit"),
    ("rediss://:sekrit@127.0.0.1:1#insecure?x", "sekrit"),
]


def test_unescaped_at_in_password_is_redacted(term_log):
    """redis://:p@ss@h parses (the last '@' ends the userinfo)."""
    url = "redis://:p@ss@127.0.0.1:1"
    p = run_agent(["decide", "--mode", "redis", "--platform", "static", "--prove",
                   "--timeout", "1s", "--output", "json"],
                  env=env_with(term_log, PYLON_AGENT_REDIS_URL=url))
    assert p.returncode == 69, p.stderr
    assert json.loads(p.stdout)["redis"]["url"] == "redis://:***@127.0.0.1:1"
    assert_clean("p@ss", p.stdout, p.stderr, term_log.read_text())


@pytest.mark.parametrize("url,pw", MALFORMED)
def test_malformed_url_never_echoes_password(tmp_path, term_log, url, pw):
    f = tmp_path / "url"
    f.write_text(url + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis-url: %s\n" % json.dumps(url))
    for args, extra in [
            (["decide", "--mode", "redis"], dict(PYLON_AGENT_REDIS_URL=url)),
            (["check", "--output", "json"], {}),
            (["init", "--mode", "redis", "--redis-url", url], {}),
            (["probe", "--redis-url-file", str(f)], {}),
            (["decide", "--config", str(cfg), "--log-format", "json"], {})]:
        if args[0] == "check":
            extra = dict(PYLON_AGENT_REDIS_URL=url)
        p = run_agent(args + ["--platform", "static"] if args[0] != "probe" else args,
                      env=env_with(term_log, **extra))
        assert p.returncode != 0, (args, p.stdout, p.stderr)
        assert "Redis URL" in p.stdout + p.stderr, (args, p.stderr)
        assert_clean(pw, p.stdout, p.stderr, term_log.read_text())


def test_config_yaml_error_on_url_line(tmp_path):
    pw = "yaml-secret-pw"
    cfg = tmp_path / "c.yaml"
    # an unquoted ': ' inside the URL makes libyaml fail on that line
    cfg.write_text("namespace: x\nredis-url: redis://:%s: x@h:1\n" % pw)
    p = run_agent(["decide", "--config", str(cfg)], env=env_with())
    assert p.returncode == 78
    assert "invalid YAML at line 2" in p.stderr
    assert_clean(pw, p.stdout, p.stderr)


# ---- every command and output, a working Redis --------------------------------

def test_matrix_commands_and_outputs(redis_factory, tmp_path, term_log):  # noqa: F811
    for pw in PASSWORDS:
        r = redis_factory(requirepass=pw)
        url = "redis://:%s@127.0.0.1:%d" % (q(pw), r.port)
        f = tmp_path / "url"
        f.write_text(url + "\n")
        envf = tmp_path / "cluster.env"
        runs = [
            ["decide", "--mode", "redis", "--prove"],
            ["decide", "--mode", "redis", "--prove", "--output", "json",
             "--log-format", "json"],
            ["decide", "--mode", "redis", "--output", "env"],
            ["check"],
            ["check", "--output", "json"],
            ["probe"],
            ["init", "--mode", "redis", "--env-file", str(envf)],
            ["exec", "--mode", "redis", "--env-file", str(envf), "--",
             "/bin/sh", "-c", "echo child-ran"],
        ]
        for args in runs:
            for how in ("env", "file"):
                extra = (dict(PYLON_AGENT_REDIS_URL=url) if how == "env"
                         else dict(PYLON_AGENT_REDIS_URL_FILE=str(f)))
                a = list(args)
                if a[0] != "probe" and a[0] != "exec":
                    a += ["--platform", "static"]
                p = run_agent(a, env=env_with(term_log, **extra))
                assert p.returncode == 0, (pw, a, p.stderr)
                out = p.stdout.replace("child-ran", "")
                assert_clean(pw, out, p.stderr, term_log.read_text())
        # proven, and the redacted URL is what is shown
        p = run_agent(["decide", "--mode", "redis", "--prove", "--output", "json",
                       "--platform", "static"],
                      env=env_with(PYLON_AGENT_REDIS_URL=url))
        j = json.loads(p.stdout)
        assert j["redis"]["proven"] is True
        assert j["redis"]["url"] == "redis://:***@127.0.0.1:%d" % r.port
        # init's file does hold the real URL (that is its job), 0600
        assert ("PYLON_CLUSTER_BUS=" in envf.read_text())
        assert oct(os.stat(envf).st_mode & 0o777) == "0o600"
        r.stop()


def test_help_version_and_dump_have_no_password():
    pw = "dump-secret-pw"
    url = "redis://:%s@127.0.0.1:1" % pw
    for args in (["--help"], ["init", "--help"], ["version"], ["decide", "--help"],
                 ["serve", "--help"]):
        p = run_agent(args, env=env_with(PYLON_AGENT_REDIS_URL=url))
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout.strip()
        assert_clean(pw, p.stdout, p.stderr)


# ---- serve: /status, /metrics, logs ----------------------------------------------

def _get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=5 * SLOW) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


@pytest.mark.parametrize("pw", ["ab", "p@ss w/#?%:x"])
def test_serve_status_metrics_logs(redis_factory, procs, pw, tmp_path):  # noqa: F811
    r = redis_factory(requirepass=pw)
    port = free_port()
    good = "redis://:%s@127.0.0.1:%d" % (q(pw), r.port)
    p = procs.start_agent(["serve", "--platform", "static", "--mode", "redis",
                           "--listen", "127.0.0.1:%d" % port, "--interval", "200ms",
                           "--log-format", "json"],
                          env=env_with(PYLON_AGENT_REDIS_URL=good))
    wait_port(port)
    deadline = time.monotonic() + 10 * SLOW
    st = {}
    while time.monotonic() < deadline:
        st = json.loads(_get(port, "/status"))
        if st.get("redis", {}).get("proven"):
            break
        time.sleep(0.1)
    body = _get(port, "/status") + _get(port, "/metrics") + _get(port, "/readyz")
    assert "127.0.0.1:%d" % r.port in body
    assert ":***@" in body
    r.stop()                           # the checks now fail: errors get logged
    time.sleep(1.0 * SLOW)
    body += _get(port, "/status") + _get(port, "/metrics")
    procs.stop(p)
    out, err = p.communicate(timeout=10)
    assert_clean(pw, body, out.decode(), err.decode())
    assert err.decode().strip()


# ---- API tokens echoed by an API -----------------------------------------------

class _Echo(BaseHTTPRequestHandler):
    """Answers everything 401 with a body that echoes the request headers
    (Authorization included), whole and in comma-separated parts; with
    pad > 0, after pad filler characters so that the token straddles
    where the agent cuts a long error text."""

    pad = 0

    def log_message(self, *a):
        pass

    def _answer(self):
        auth = self.headers.get("Authorization") or ""
        parts = auth.split(" ", 1)[-1].split(",")
        msg = "denied: Authorization: %s; parts: %s" % (auth, " ".join(parts))
        if self.pad:
            msg = "y" * self.pad + auth.split(" ", 1)[-1]
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": msg, "reason": "Unauthorized",
                           "error": msg}).encode()
        # kube shows the message of a 403, Fly of a 401
        self.send_response(403 if self.pad and self.path.startswith("/api") else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer


def _echo(pad):
    class H(_Echo):
        pass
    H.pad = pad
    return H


@pytest.fixture
def echo_server(request):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _echo(getattr(request, "param", 0)))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_kube_token_echoed_by_api(echo_server, tmp_path, term_log):
    tok = "kube-bearer-token-0123456789abcdef"
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": echo_server}}],
        "users": [{"name": "u", "user": {"token": tok}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    for args in (["decide", "--on-discovery-error", "fail"],
                 ["decide", "--output", "json", "--log-format", "json"],
                 ["check", "--output", "json"]):
        p = run_agent(args + ["--platform", "kubernetes", "--kubeconfig", str(kc),
                              "--api-timeout", "2s"],
                      env=env_with(term_log, POD_NAME="chat-1", POD_NAMESPACE="prod"))
        out = p.stdout + p.stderr + term_log.read_text()
        assert "401" in out or "Unauthorized" in out or "denied" in out, out
        assert tok not in out, out


def test_kube_token_file_with_trailing_newline(echo_server, tmp_path):
    tok = "file-token-abcdefghijklmnop"
    tf = tmp_path / "tok"
    tf.write_text(tok + "\n\n")
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": echo_server}}],
        "users": [{"name": "u", "user": {"tokenFile": str(tf)}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    p = run_agent(["decide", "--platform", "kubernetes", "--kubeconfig", str(kc),
                   "--on-discovery-error", "fail", "--api-timeout", "2s"],
                  env=env_with(POD_NAME="chat-1", POD_NAMESPACE="prod"))
    assert p.returncode == 75, p.stderr
    assert tok not in p.stdout + p.stderr


@pytest.mark.parametrize("tok", [
    "fm2_aaaaaaaaaaaaaaaa,fm2_bbbbbbbbbbbbbbbb",
    "FlyV1 fm2_cccccccccccccccc,fm2_dddddddddddddddd",
    "plain-bearer-token-123456",
])
def test_fly_token_echoed_by_api(echo_server, tok, term_log):
    env = env_with(term_log, FLY_APP_NAME="pylon-demo", FLY_MACHINE_ID="e784079b449483",
                   FLY_API_TOKEN=tok, FLY_PROCESS_GROUP="app", FLY_REGION="ord",
                   PYLON_AGENT_FLY_JITTER_MS="0")
    p = run_agent(["decide", "--platform", "fly", "--fly-api-url", echo_server,
                   "--on-discovery-error", "fail", "--api-timeout", "2s"], env=env)
    assert p.returncode == 75, p.stderr
    out = p.stdout + p.stderr + term_log.read_text()
    assert "401" in out
    bare = tok.split(" ", 1)[-1]
    for part in [tok, bare] + bare.split(","):
        assert part not in out, (part, out)
    # A fallback decision quotes the API's error in its reason: every
    # output form of decide shows it redacted.
    for fmt in ("text", "env", "json"):
        p = run_agent(["decide", "--platform", "fly", "--fly-api-url", echo_server,
                       "--on-discovery-error", "noop", "--api-timeout", "2s",
                       "--output", fmt], env=env)
        assert p.returncode == 0, p.stderr
        assert "discovery failed" in p.stdout, p.stdout
        assert "401" in p.stdout, p.stdout
        for part in [tok, bare] + bare.split(","):
            assert part not in p.stdout + p.stderr, (fmt, part, p.stdout)


KUBE_TOK = "kube-cut-token-0123456789abcdefghij"


# The kube messages are cut at 511 characters, Fly's at 200: a token that
# straddles the cut must not leave its first half behind.
@pytest.mark.parametrize("echo_server", [490, 500, 505], indirect=True)
def test_kube_token_straddling_the_cut(echo_server, tmp_path):
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": echo_server}}],
        "users": [{"name": "u", "user": {"token": KUBE_TOK}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    p = run_agent(["decide", "--platform", "kubernetes", "--kubeconfig", str(kc),
                   "--on-discovery-error", "fail", "--api-timeout", "2s"],
                  env=env_with(POD_NAME="chat-1", POD_NAMESPACE="prod"))
    assert p.returncode == 75, p.stderr
    assert "yyyyyyyy" in p.stderr            # the body was shown
    assert KUBE_TOK[:8] not in p.stdout + p.stderr, p.stderr


@pytest.mark.parametrize("echo_server", [170, 180, 190], indirect=True)
def test_fly_token_straddling_the_cut(echo_server):
    tok = "plain-bearer-cut-0123456789abcdef"
    env = env_with(FLY_APP_NAME="pylon-demo", FLY_MACHINE_ID="e784079b449483",
                   FLY_API_TOKEN=tok, FLY_PROCESS_GROUP="app", FLY_REGION="ord",
                   PYLON_AGENT_FLY_JITTER_MS="0")
    p = run_agent(["decide", "--platform", "fly", "--fly-api-url", echo_server,
                   "--on-discovery-error", "fail", "--api-timeout", "2s"], env=env)
    assert p.returncode == 75, p.stderr
    assert "yyyyyyyy" in p.stderr
    assert tok[:8] not in p.stdout + p.stderr, p.stderr


@pytest.mark.parametrize("echo_server", [1], indirect=True)
def test_kube_token_file_with_inner_newline(echo_server, tmp_path):
    """A token file with a line break inside: sent as is, the header was
    split (an injected header line) and an API echoing the header showed
    the part before the break, which matches no registered secret."""
    tf = tmp_path / "tok"
    tf.write_text("firsthalfAAAA\nsecondhalfBBBB\n")
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": echo_server}}],
        "users": [{"name": "u", "user": {"tokenFile": str(tf)}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    p = run_agent(["decide", "--platform", "kubernetes", "--kubeconfig", str(kc),
                   "--api-timeout", "2s"],
                  env=env_with(POD_NAME="chat-1", POD_NAMESPACE="prod"))
    assert p.returncode == 78, p.stderr
    assert "line break" in p.stderr and str(tf) in p.stderr
    assert "firsthalf" not in p.stderr and "secondhalf" not in p.stderr


@pytest.mark.parametrize("echo_server", [1], indirect=True)
def test_exec_plugin_stderr_goes_through_the_log(echo_server, tmp_path):
    """The credential plugin's stderr was passed through raw: a plugin that
    prints its token there (a debug mode) leaked it, and broke JSON logs."""
    tok = "exec-plugin-token-0123456789"
    cred = json.dumps({"kind": "ExecCredential",
                       "apiVersion": "client.authentication.k8s.io/v1",
                       "status": {"token": tok}})
    plugin = tmp_path / "plugin.sh"
    plugin.write_text("#!/bin/sh\necho 'plugin: minted token=%s' >&2\necho '%s'\n"
                      % (tok, cred))
    plugin.chmod(0o755)
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": echo_server}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin), "interactiveMode": "Never"}}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    p = run_agent(["decide", "--platform", "kubernetes", "--kubeconfig", str(kc),
                   "--api-timeout", "2s", "--log-format", "json",
                   "--on-discovery-error", "fail"],
                  env=env_with(POD_NAME="chat-1", POD_NAMESPACE="prod"))
    assert p.returncode == 75, p.stderr
    lines = [json.loads(ln) for ln in p.stderr.splitlines()]   # all JSON
    assert any("plugin: minted token=***" in ln["msg"] for ln in lines), p.stderr
    assert tok not in p.stdout + p.stderr


def test_exec_plugin_failure_stderr_is_logged(tmp_path):
    plugin = tmp_path / "plugin.sh"
    plugin.write_text("#!/bin/sh\necho 'error: not logged in, run login' >&2\nexit 3\n")
    plugin.chmod(0o755)
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin), "interactiveMode": "Never"}}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    p = run_agent(["decide", "--platform", "kubernetes", "--kubeconfig", str(kc),
                   "--on-discovery-error", "fail"],
                  env=env_with(POD_NAME="chat-1", POD_NAMESPACE="prod"))
    assert p.returncode == 75, p.stderr
    assert "stderr: error: not logged in, run login" in p.stderr
    assert "exit 3" in p.stderr


def test_unix_url_with_two_passwords_masks_both():
    """The query may give the password twice (the last wins); the redacted
    URL masked only the one that wins and printed the other."""
    url = "unix:///tmp/pylon-none.sock?pass=first-pw-value&db=2&password=second-pw"
    for args in (["decide"], ["decide", "--output", "json"], ["check", "--output", "json"]):
        p = run_agent(args + ["--platform", "static", "--timeout", "1s"],
                      env=env_with(PYLON_AGENT_REDIS_URL=url))
        assert "unix:///tmp/pylon-none.sock?pass=***&db=2&password=***" in p.stdout, \
            (args, p.stdout, p.stderr)
        assert_clean("first-pw-value", p.stdout, p.stderr)
        assert_clean("second-pw", p.stdout, p.stderr)


def test_env_file_bad_line_echoes_no_value(tmp_path):
    """A hand-edited env file line was echoed (its first 40 characters,
    unless they held '://'): a password line printed in clear."""
    for line, shown in (("REDIS_PASSWORD=hunter2-secret", "REDIS_PASSWORD=..."),
                        ("  hunter2-secret-bare-line", "not a NAME=value line"),
                        ("PYLON_CLUSTER_BUS=rediss://:hunter2-secret@h", "PYLON_CLUSTER_BUS=...")):
        f = tmp_path / "cluster.env"
        f.write_text("export PYLON_CLUSTER_NAMESPACE='pylon'\n%s\n" % line)
        for args in (["exec", "--env-file", str(f), "--", "/bin/true"],
                     ["probe", "--env-file", str(f), "--platform", "static"]):
            p = run_agent(args, env=env_with())
            if args[0] == "exec":
                assert p.returncode == 78, p.stderr
                assert "line 2" in p.stderr and shown in p.stderr, p.stderr
            assert_clean("hunter2", p.stdout, p.stderr)


def test_api_urls_with_userinfo_are_refused_unechoed(tmp_path):
    """user:password@ in the kubeconfig server or --fly-api-url was sent as
    basic auth and printed in clear with every URL (debug lines, errors)."""
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {
            "server": "http://admin:kube-basic-pw@127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "some-token-value"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "prod"}}]}))
    p = run_agent(["decide", "--platform", "kubernetes", "--kubeconfig", str(kc),
                   "--api-timeout", "1s"], env=env_with(POD_NAME="chat-1"))
    assert p.returncode == 78, p.stderr
    assert "basic auth is not supported" in p.stderr
    assert_clean("kube-basic-pw", p.stdout, p.stderr)
    p = run_agent(["decide", "--platform", "fly", "--api-timeout", "1s",
                   "--fly-api-url", "http://u:fly-basic-pw@127.0.0.1:9"],
                  env=env_with(FLY_APP_NAME="pylon-demo", FLY_MACHINE_ID="e784079b449483",
                               FLY_API_TOKEN="plain-bearer-token-123456"))
    assert p.returncode == 78, p.stderr
    assert "--fly-api-url holds a user name or password" in p.stderr
    assert_clean("fly-basic-pw", p.stdout, p.stderr)


# ---- the agent's memory (issue 21: PR_SET_DUMPABLE) -------------------------

# As root the agent and the reader drop to uid 65534 (root could read any
# process anyway); as any other user both simply run as that user.
NOBODY = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
          if os.geteuid() == 0 else [])
UID = 65534 if os.geteuid() == 0 else os.geteuid()


def _read_as_nobody(path):
    import subprocess
    return subprocess.run(NOBODY + ["cat", path], capture_output=True,
                          timeout=10)


def test_agent_memory_is_not_readable_by_the_same_uid(procs):
    # Another process of the agent's uid (as root: nobody) cannot read the
    # agent's /proc/<pid>/environ or mem (the Redis password is in its
    # environment); the control, a plain process of that uid, can.
    secret = "dump-me-not-42"
    port = free_port()
    from conftest import agent_cmd
    p = procs.start(NOBODY + agent_cmd(
        ["serve", "--platform", "static", "--mode", "redis", "--listen",
         "127.0.0.1:%d" % port, "--interval", "200ms"]),
        env=env_with(PYLON_AGENT_REDIS_URL="redis://:%s@127.0.0.1:1" % secret))
    ctl = procs.start(NOBODY + ["sleep", "30"], env=clean_env())
    wait_port(port)
    for who in (p, ctl):
        for _ in range(100):      # until setpriv has exec'd its command
            with open("/proc/%d/cmdline" % who.pid, "rb") as f:
                if not f.read().startswith(b"setpriv"):
                    break
            time.sleep(0.02)
    assert os.stat("/proc/%d/environ" % ctl.pid).st_uid == UID
    assert _read_as_nobody("/proc/%d/environ" % ctl.pid).returncode == 0
    # a non-dumpable process's /proc files belong to root
    assert os.stat("/proc/%d/environ" % p.pid).st_uid == 0, "the agent is dumpable"
    for f in ("environ", "mem"):
        r = _read_as_nobody("/proc/%d/%s" % (p.pid, f))
        assert r.returncode != 0, f
        assert b"Permission denied" in r.stderr, r.stderr
        assert secret.encode() not in r.stdout


CHECK_DUMPABLE = ("import ctypes, sys; "
                  "d = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0); "  # PR_GET_DUMPABLE
                  "open(sys.argv[1], 'w').write('dumpable=%d' % d)")


def test_exec_and_supervised_children_stay_dumpable(procs, tmp_path):
    import sys
    out = tmp_path / "exec.txt"
    r = run_agent(["exec", "--", sys.executable, "-c", CHECK_DUMPABLE, str(out)])
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "dumpable=1"
    out2 = tmp_path / "supervised.txt"
    port = free_port()
    procs.start_agent(["serve", "--platform", "static", "--listen",
                       "127.0.0.1:%d" % port, "--interval", "200ms", "--",
                       sys.executable, "-c", CHECK_DUMPABLE, str(out2)])
    for _ in range(int(200 * SLOW)):
        if out2.exists() and out2.read_text():
            break
        time.sleep(0.05)
    assert out2.read_text() == "dumpable=1"


# ---- control characters (issue 21: redaction and one line per message) ----

def test_echo_with_an_inserted_control_character_is_redacted(term_log):
    # A server that echoes the password with a control character inside:
    # output folds it to '?', and redaction looks through it.
    from test_bus import FakeRedis, prove
    pw = "hunter2xyz-secret"
    for echo in (b"hunter2\x01xyz-secret", b"hun\x1b[31mter2xyz-sec\x1b[0mret",
                 b"h\x7fu\x02nter2xyz-secret"):
        f = FakeRedis(subscribe_reply=b"-ERR no such channel: " + echo + b"\r\n")
        try:
            r = prove("redis://:%s@127.0.0.1:%d" % (pw, f.port), timeout="1s",
                      env=env_with(term_log))
        finally:
            f.close()
        assert r.returncode == 69, r.stderr
        assert "no such channel: ***" in r.stderr, r.stderr
        with open(term_log) as t:
            text = t.read()
        for out in (r.stderr, r.stdout, text):
            assert "hunter2" not in out and "xyz-sec" not in out, out
            assert "\x1b" not in out and "\x7f" not in out, repr(out)


def test_line_breaks_in_an_echoed_value_cannot_forge_log_lines(term_log):
    # An invalid value is echoed in its error line (here --namespace, whose
    # error quotes it): \r, \n and escapes are folded, one message one line.
    forged = "[pylon-agent] info: bus proven in 1 ms"
    r = run_agent(["decide", "--platform", "static", "--replicas", "2",
                   "--namespace", "app\r\n%s\x1b[2K" % forged],
                  env=env_with(term_log))
    assert r.returncode == 78, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    for line in r.stderr.splitlines():
        assert not line.startswith(forged), r.stderr
    assert "\r" not in r.stderr and "\x1b" not in r.stderr, repr(r.stderr)
    with open(term_log) as t:
        text = t.read()
    assert text.count("\n") == 1 and "\x1b" not in text, repr(text)
