/*
 * main.c - command dispatch, exit codes, printing the one error.
 */
#include <sys/prctl.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curlver.h>
#include <hiredis/hiredis.h>
#include <openssl/opensslv.h>
#include <yaml.h>

#include "agent.h"
#include "bus.h"
#include "proxy.h"
#include "serve.h"
#include "httpd.h"

#ifndef AGENT_GIT_REV
#define AGENT_GIT_REV "unknown"
#endif

extern char **environ;

void
termination_log_write(const char *msg)
{
	const char *path = getenv("PYLON_AGENT_TERMINATION_LOG");
	char clean[AGENT_ERR_LEN + 2];
	size_t n;
	int fd;

	if (path == NULL)
		path = "/dev/termination-log";
	/* Only when it exists and is writable: never create it. */
	/* O_NONBLOCK: a FIFO without a reader is skipped, not waited on. */
	if ((fd = open(path,
	         O_WRONLY | O_TRUNC | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) == -1)
		return;
	redact(msg, clean, sizeof(clean) - 1);
	fold_controls(clean);
	n = strlen(clean);
	clean[n++] = '\n';
	(void)!write(fd, clean, n);
	close(fd);
}

static int
cmd_version(void)
{
	printf("pylon-agent %s (git %s)\n", AGENT_VERSION, AGENT_GIT_REV);
	printf("built with: libcurl %s, cJSON %d.%d.%d, libyaml %s, "
	       "hiredis %d.%d.%d, %s, libmicrohttpd %s\n",
	    LIBCURL_VERSION, CJSON_VERSION_MAJOR, CJSON_VERSION_MINOR,
	    CJSON_VERSION_PATCH, yaml_get_version_string(), HIREDIS_MAJOR,
	    HIREDIS_MINOR, HIREDIS_PATCH, OPENSSL_VERSION_TEXT,
	    httpd_version());
	return 0;
}

/* The decision as JSON (the shape of /status). Caller frees. */
static char *
decision_json(const struct decision *d, const struct options *o,
    const struct bus_result *br, const struct agent_err *proof_err)
{
	struct decision_json v;
	cJSON *root;
	char *red = NULL, *out = NULL, clean[AGENT_ERR_LEN];
	bool ok = true; /* an allocation failed: no partial JSON */

	if ((root = cJSON_CreateObject()) == NULL)
		return NULL;
	memset(&v, 0, sizeof(v));
	v.d = d;
	v.mode = d->mode;
	if (o->redis_url && (red = redis_url_redact(o->redis_url)) == NULL)
		ok = false;
	v.redis_url = red;
	v.proven = br != NULL && br->latency_ms >= 0 &&
	    (proof_err == NULL || proof_err->code == 0);
	v.latency_ms = v.proven ? br->latency_ms : -1;
	if (proof_err && proof_err->code) {
		redact(proof_err->msg, clean, sizeof(clean));
		v.error = clean;
	}
	(void)decision_json_begin(root, &v, &ok);
	decision_json_end(root, &v, &ok);
	ok &= cJSON_AddStringToObject(root, "version", AGENT_VERSION) != NULL;
	if (ok)
		out = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	a_free(red);
	return out;
}

static int
cmd_decide(struct options *o, struct agent_err *err)
{
	struct topology t;
	struct decision d;
	struct bus_result br;
	struct agent_err perr;
	char *s, *red = NULL, clean[AGENT_ERR_LEN];
	int rc;

	if ((rc = flow_decide(o, &t, &d, err)))
		return rc;
	/* The reason can quote an API's error text: every output form
	 * (text, env header, JSON) gets it through the redaction point. */
	redact(d.reason, clean, sizeof(clean));
	snprintf(d.reason, sizeof(d.reason), "%s", clean);
	memset(&br, 0, sizeof(br));
	br.latency_ms = -1;
	err_clear(&perr);
	if (o->prove && d.mode == MODE_REDIS)
		flow_prove(o, &d, &br, &perr);
	switch (o->output) {
	case OUT_JSON:
		if ((s = decision_json(&d, o, &br, &perr)) == NULL)
			return err_oom(err, "json");
		/* Redaction never lengthens (secrets are 3+ bytes, "***"
		 * replaces them), so a buffer of the same size holds it;
		 * a fixed one would cut long reasons/errors. */
		if ((red = a_malloc(strlen(s) + 1)) == NULL) {
			a_free(s);
			return err_oom(err, "json");
		}
		puts(redact(s, red, strlen(s) + 1));
		a_free(red);
		red = NULL;
		a_free(s);
		break;
	case OUT_ENV:
		/* What init would write, password masked: a usable file
		 * only ever comes from init (0600, atomic). */
		red = o->redis_url ? redis_url_redact(o->redis_url) : NULL;
		if (o->redis_url && red == NULL)
			return err_oom(err, "decide");
		if ((s = envfile_render(&d, red, err)) == NULL) {
			a_free(red);
			return err->code;
		}
		fputs(s, stdout);
		a_free(s);
		a_free(red);
		break;
	case OUT_TEXT:
		red = o->redis_url ? redis_url_redact(o->redis_url) : NULL;
		if (o->redis_url && red == NULL)
			return err_oom(err, "decide");
		printf("mode:      %s%s\npeers:     %d\nreason:    %s\n"
		       "platform:  %s\ninstance:  %s\nnamespace: %s\n"
		       "channel:   %s\n",
		    mode_name(d.mode), d.forced ? " (forced)" : "", d.peers,
		    d.reason, d.platform, d.instance, d.namespace, d.channel);
		printf("redis:     %s", red ? red : "(none)");
		if (perr.code)
			printf(" (not proven: %s)\n",
			    redact(perr.msg, clean, sizeof(clean)));
		else if (br.latency_ms >= 0)
			printf(" (proven in %.*f ms)\n",
			    br.latency_ms < 1 ? 2 : 1, br.latency_ms);
		else
			printf("%s\n",
			    d.mode == MODE_REDIS && !o->prove
			        ? " (not checked: add --prove)"
			        : "");
		a_free(red);
		break;
	}
	fflush(stdout);
	if (perr.code) {
		*err = perr;
		return perr.code;
	}
	return 0;
}

/* Decide and, in redis mode, prove.  Reports like init. */
static int
decide_and_prove(struct options *o, struct decision *d, struct agent_err *err)
{
	struct topology t;
	struct bus_result br;
	int rc;

	if ((rc = flow_decide(o, &t, d, err)))
		return rc;
	if ((rc = flow_prove(o, d, &br, err))) {
		report_log_decision(d, -1);
		report_platform(o, d, REPORT_KIND_UNAVAILABLE, err->msg);
		return rc;
	}
	if (o->report & REPORT_LOG)
		report_log_decision(d, br.latency_ms);
	report_platform(o, d, REPORT_KIND_READY, d->reason);
	return 0;
}

static int
cmd_init(struct options *o, struct agent_err *err)
{
	struct decision d;
	char *url = NULL;
	int rc;

	/* --bus-proxy: the proof goes to the upstream directly (serve's
	 * proxy does not run yet); the file gets Pylon's local URL and
	 * serve's startup proof then goes through the proxy. */
	if (o->bus_proxy != NULL && o->bus_proxy[0] != '\0' &&
	    (rc = proxy_addr_check(o->bus_proxy, err)))
		return rc;
	if ((rc = decide_and_prove(o, &d, err)))
		return rc;
	if (d.mode == MODE_REDIS && o->bus_proxy != NULL &&
	    o->bus_proxy[0] != '\0' &&
	    (url = proxy_pylon_url(o->redis_url, o->bus_proxy, err)) == NULL)
		return err->code ? err->code : EXIT_AGENT_CONFIG;
	rc = flow_apply(o, &d, url != NULL ? url : flow_pylon_url(o, &d), err);
	a_free(url);
	return rc;
}

/* PYLON_AGENT_ALLOC_STATS=1: print how many allocations went through
 * alloc.c (tests/integration/test_alloc_failure.py caps its loop by it). */
static void
alloc_stats(const char *when)
{
	if (getenv("PYLON_AGENT_ALLOC_STATS") != NULL)
		fprintf(stderr, "[pylon-agent] alloc_count=%ld at %s\n",
		    alloc_count(), when);
}

static int
run_cmd(char **argv, struct agent_err *err)
{
	int e;

	char **envp;

	alloc_stats("exec");
	if ((envp = spawn_child_env()) == NULL)
		return err_oom(err, "exec environment");
	fflush(NULL);
	/* main ignored SIGPIPE; ignoring survives execve (tini's order:
	 * restore signals, then exec). */
	spawn_restore_signals();
	execvpe(argv[0], argv, envp);
	e = errno;
	a_free(envp);
	return err_set(err, e == ENOENT ? 127 : 126, "cannot execute %s: %s%s",
	    argv[0], strerror(e),
	    e == ENOENT ? " (is it on PATH, or give "
	                  "its absolute path)"
	                : "");
}

static int
cmd_exec(struct options *o, struct agent_err *err)
{
	struct envfile ef;
	struct decision d;
	int rc;

	if (o->env_file_set) {
		if ((rc = envfile_read(o->env_file, &ef, err)))
			return rc;
		rc = env_apply(ef.bus, ef.namespace, ef.required, err);
		envfile_release(&ef);
		if (rc)
			return rc;
		return run_cmd(o->cmd_argv, err);
	}
	if ((rc = decide_and_prove(o, &d, err)))
		return rc;
	if ((rc = env_apply(
	         flow_pylon_url(o, &d), d.namespace, d.cluster_required, err)))
		return rc;
	return run_cmd(o->cmd_argv, err);
}

int
main(int argc, char **argv)
{
	struct options o;
	struct agent_err err;
	enum command cmd;
	const char *e;
	bool help = false;
	int rc = 0;

	/* Before any secret is read: no core dump, and another process of
	 * the same uid cannot ptrace us or read /proc/<pid>/{mem,environ}
	 * (the Redis password, API tokens).  Root (CAP_SYS_PTRACE) still
	 * can.  execve() of a normal binary resets the flag: Pylon and a
	 * supervised CMD are dumpable as usual (docs/hardening.md). */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	if ((e = getenv("PYLON_AGENT_FAIL_ALLOC")) != NULL)
		alloc_fail_after(atol(e));
	alloc_init_cjson();
	err_clear(&err);
	memset(&o, 0, sizeof(o));
	if (argc < 2) {
		options_usage_main(stderr);
		return EXIT_AGENT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		options_usage_main(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version"))
		return cmd_version();
	if ((cmd = command_from_name(argv[1])) == CMD_NONE) {
		log_errorx(
		    "unknown command \"%s\" (commands: decide, init, "
		    "exec, serve, probe, check, version; see pylon-agent "
		    "--help)",
		    argv[1]);
		return EXIT_AGENT_USAGE;
	}
	if (cmd == CMD_VERSION && argc == 3 &&
	    !strcmp(argv[2], "--reference")) {
		options_reference(stdout);
		return 0;
	}
	if ((rc = options_parse(&o, cmd, argc - 1, argv + 1, &help, &err)))
		goto out;
	if (help)
		goto out;
	spawn_set_pass_env(o.pass_env);
	switch (cmd) {
	case CMD_DECIDE:
		rc = cmd_decide(&o, &err);
		break;
	case CMD_INIT:
		rc = cmd_init(&o, &err);
		break;
	case CMD_EXEC:
		rc = cmd_exec(&o, &err);
		break;
	case CMD_SERVE:
		rc = cmd_serve(&o, &err);
		break;
	case CMD_PROBE:
		rc = cmd_probe(&o, &err);
		break;
	case CMD_CHECK:
		rc = cmd_check(&o, &err);
		break;
	case CMD_VERSION:
		rc = cmd_version();
		break;
	case CMD_NONE:
		break;
	}
out:
	if (rc && err.msg[0]) {
		log_errorx("%s", err.msg);
		termination_log_write(err.msg);
	}
	options_release(&o);
	log_clear_secrets();
	alloc_stats("exit");
	return rc;
}
