/*
 * check.c - `pylon-agent check`: the preflight for CI and Fly's
 * release_command (SPEC 2).  Decides like init, proves the bus when it
 * will be used (or a Redis URL is configured), looks for
 * misconfigurations, and prints what it saw as a short table (or JSON).
 * Exits 0 only when a deploy with this configuration is safe.
 *
 * Deadline: unless --timeout is given, the proof gets CHECK_TIMEOUT_MS
 * (20 s), not init's 60 s: a preflight must answer within the release
 * window and a bus that needs longer than that is itself a finding.  In
 * noop mode the proof only feeds a warning (nothing uses the bus yet), so
 * it gets CHECK_NOOP_PROOF_MS: a dead Redis must not hold a one-machine
 * release for 20 s.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agent.h"
#include "bus.h"

#define CHECK_TIMEOUT_MS 20000L
#define CHECK_NOOP_PROOF_MS 5000L
/* The proof row says why; the verdict repeats it once. */
#define CHECK_BUS_PROBLEM "the Redis bus is not usable"
#define CHECK_MAX_NOTES 8
#define CHECK_NOTE_LEN AGENT_ERR_LEN

struct check_notes {
	char text[CHECK_MAX_NOTES][CHECK_NOTE_LEN];
	int n;
};

struct check_result {
	struct topology t;
	struct decision d;
	bool decided;
	const struct platform *p; /* the decision's adapter, or NULL */
	struct platform_identity id;
	bool proof_tried;
	bool proven;
	struct bus_result br;
	char proof_error[AGENT_ERR_LEN];
	char redis_url[512]; /* redacted */
	struct check_notes problems; /* unsafe */
	struct check_notes warnings; /* safe, but look */
	int code; /* exit code */
	char verdict[AGENT_ERR_LEN];
};

static void
check_note(struct check_notes *n, const char *fmt, ...) AGENT_PRINTF(2, 3);

static void
check_note(struct check_notes *n, const char *fmt, ...)
{
	va_list ap;
	char raw[CHECK_NOTE_LEN];

	if (n->n == CHECK_MAX_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	redact(raw, n->text[n->n++], CHECK_NOTE_LEN);
}

/* The first problem decides the exit code. */
static void check_problem(
    struct check_result *r, int code, const char *fmt, ...) AGENT_PRINTF(3, 4);

static void
check_problem(struct check_result *r, int code, const char *fmt, ...)
{
	va_list ap;
	char raw[CHECK_NOTE_LEN];

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	check_note(&r->problems, "%s", raw);
	if (r->code == 0)
		r->code = code;
}

static void
check_fill_identity(const struct options *o, struct check_result *r)
{
	size_t i;

	memset(&r->id, 0, sizeof(r->id));
	r->p = platform_by_name(r->d.platform);
	if (r->p == NULL || r->p->identity == NULL)
		return;
	r->p->identity(o, &r->t, &r->id);
	/* From the environment: printable only in the table. */
	for (i = 0; r->id.scope[i] != '\0'; i++)
		if (!isprint((unsigned char)r->id.scope[i]))
			r->id.scope[i] = '?';
}

/* The proof, with the check's own deadline. */
static void
check_prove(const struct options *o, struct check_result *r)
{
	struct agent_err err;
	long timeout = o->timeout_set ? o->timeout_ms : CHECK_TIMEOUT_MS;
	int rc;

	if (o->redis_url == NULL)
		return;
	if (r->d.mode != MODE_REDIS && !o->timeout_set)
		timeout = CHECK_NOOP_PROOF_MS;
	err_clear(&err);
	if (redis_url_pylon_check(o->redis_url, decide_url_flags(o), &err)) {
		/* Never proven, never called safe (SPEC 5).  In redis mode
		 * decide() refused it already. */
		if (r->d.mode != MODE_REDIS)
			check_note(&r->warnings,
			    "the configured Redis URL "
			    "cannot be used by Pylon (%s): fine while this app "
			    "runs one machine, but scaling out will need one "
			    "it can use",
			    err.msg);
		return;
	}
	r->proof_tried = true;
	memset(&r->br, 0, sizeof(r->br));
	rc = bus_prove(o->redis_url, o->redis_ca_file, r->d.channel, timeout,
	    &r->br, &err);
	if (rc == 0) {
		r->proven = true;
		return;
	}
	redact(err.msg, r->proof_error, sizeof(r->proof_error));
	/* The cause is in the proof row (and the JSON's redis.error). */
	if (r->d.mode == MODE_REDIS)
		check_problem(r, rc, CHECK_BUS_PROBLEM);
	else
		check_note(&r->warnings,
		    "the configured Redis URL does not "
		    "work (see proof): fine while this app runs one machine, "
		    "but scaling out will need it");
}

/*
 * Several Pylons need one Postgres (SQLite is one machine's file).  check
 * sees Pylon's environment where it runs with it (Fly's release_command
 * inherits the app's secrets): a DATABASE_URL that is not Postgres is
 * unsafe anywhere; none at all is unsafe on a release machine.
 */
static void
check_database(struct check_result *r)
{
	const char *db = getenv("DATABASE_URL");
	bool pg;

	if (!r->decided || r->d.peers <= 1)
		return;
	pg = db != NULL &&
	    (strncmp(db, "postgres://", 11) == 0 ||
	        strncmp(db, "postgresql://", 13) == 0);
	if (db != NULL && *db != '\0' && !pg)
		check_problem(r, EXIT_AGENT_CONFIG,
		    "%d peers but DATABASE_URL "
		    "is not Postgres: several Pylons cannot share a SQLite "
		    "file; set DATABASE_URL=postgres://... (a secret) for "
		    "every machine",
		    r->d.peers);
	else if (!pg && r->id.release_machine)
		check_problem(r, EXIT_AGENT_CONFIG,
		    "%d peers but no "
		    "DATABASE_URL: each Pylon would keep its own SQLite under "
		    "/data; set DATABASE_URL=postgres://... (fly secrets set "
		    "DATABASE_URL=...)",
		    r->d.peers);
}

static void
check_run(const struct options *o, struct check_result *r)
{
	struct agent_err err;
	char *red;
	int rc;

	err_clear(&err);
	memset(&r->d, 0, sizeof(r->d));
	rc = flow_decide(o, &r->t, &r->d, &err);
	/* decide() fills the decision before refusing peers > 1 without a
	 * URL, so the table still shows what was counted. */
	r->decided = r->d.platform[0] != '\0';
	if (!r->decided)
		snprintf(
		    r->d.platform, sizeof(r->d.platform), "%s", r->t.platform);
	check_fill_identity(o, r);
	if (o->redis_url != NULL && (red = redis_url_redact(o->redis_url))) {
		snprintf(r->redis_url, sizeof(r->redis_url), "%s", red);
		a_free(red);
	}
	if (rc != 0) {
		check_problem(r, rc, "%s", err.msg);
		return;
	}
	if (r->d.discovery_failed) {
		/* A preflight that cannot see the topology cannot call the
		 * deploy safe, unless the bus is on and proven anyway. */
		if (r->d.mode != MODE_REDIS)
			check_problem(r, EXIT_AGENT_DISCOVERY,
			    "discovery "
			    "failed, so the peer count is unknown: %s",
			    r->d.reason);
		else
			check_note(&r->warnings,
			    "discovery failed; the bus "
			    "is on because a Redis URL is configured: %s",
			    r->d.reason);
	}
	if (r->d.forced && r->d.mode == MODE_NOOP && r->d.peers > 1)
		check_problem(r, EXIT_AGENT_CONFIG,
		    "--mode noop with %d "
		    "peers: clients on one machine will not see mutations "
		    "made on another; use --mode auto and a Redis URL",
		    r->d.peers);
	if (r->d.mode == MODE_REDIS && strcmp(r->d.namespace, "pylon") == 0)
		check_note(&r->warnings,
		    "namespace is the default \"pylon\": "
		    "two apps sharing this Redis would cross-talk; set "
		    "--namespace to the app's name");
	check_database(r);
	if (r->id.release_machine && r->decided && r->t.base == 0 &&
	    !r->d.discovery_failed)
		check_note(&r->warnings,
		    "no machine of group %s exists yet "
		    "(first deploy?): the count is --min-peers=%d; set "
		    "--min-peers to the machine count you will deploy",
		    r->id.group, o->min_peers);
	check_prove(o, r);
}

static void
check_verdict(struct check_result *r)
{
	if (r->code == 0 && r->problems.n == 0) {
		if (r->d.mode == MODE_REDIS)
			snprintf(r->verdict, sizeof(r->verdict),
			    "safe: %d "
			    "peers share the proven bus on channel %s",
			    r->d.peers, r->d.channel);
		else
			snprintf(r->verdict, sizeof(r->verdict),
			    "safe: %d "
			    "peer%s, NoopBus",
			    r->d.peers, r->d.peers == 1 ? "" : "s");
		return;
	}
	if (strcmp(r->problems.text[0], CHECK_BUS_PROBLEM) == 0 &&
	    r->proof_error[0] != '\0')
		snprintf(r->verdict, sizeof(r->verdict), "NOT safe: %s: %s",
		    CHECK_BUS_PROBLEM, r->proof_error);
	else
		snprintf(r->verdict, sizeof(r->verdict), "NOT safe: %s",
		    r->problems.text[0]);
}

static void
check_row(const char *k, const char *v)
{
	char clean[2 * AGENT_ERR_LEN];

	printf("  %-10s %s\n", k, redact(v, clean, sizeof(clean)));
}

static void
check_print_text(const struct options *o, const struct check_result *r)
{
	char buf[2 * AGENT_ERR_LEN];
	int i;

	printf("pylon-agent check\n");
	snprintf(buf, sizeof(buf), "%s%s%s", r->d.platform,
	    r->d.instance[0] ? " instance " : "", r->d.instance);
	if (r->id.release_machine)
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
		    " (release_command machine: counting group %s)",
		    r->id.group);
	check_row("platform", buf);
	if (r->id.scope[0] && r->id.scope_label != NULL) {
		snprintf(buf, sizeof(buf), "%s%s%s", r->id.scope,
		    r->id.group[0] ? " / group " : "", r->id.group);
		check_row(r->id.scope_label, buf);
	}
	if (r->decided && !r->d.discovery_failed) {
		snprintf(buf, sizeof(buf), "%d (%s)", r->t.base,
		    r->t.base_src[0] ? r->t.base_src : "-");
		check_row("counted", buf);
		check_row(
		    "excluded", r->t.excluded[0] ? r->t.excluded : "none");
	}
	if (r->decided) {
		snprintf(buf, sizeof(buf), "%d", r->d.peers);
		check_row("peers", buf);
		snprintf(buf, sizeof(buf), "%s%s", mode_name(r->d.mode),
		    r->d.forced ? " (forced)" : "");
		check_row("mode", buf);
		/* The count is the whole reason, already shown. */
		if (!r->id.count_is_reason || r->d.discovery_failed ||
		    r->d.forced || r->d.peers != r->t.base)
			check_row("reason", r->d.reason);
		snprintf(
		    buf, sizeof(buf), "%s (%s)", r->d.namespace, r->d.channel);
		check_row("namespace", buf);
	}
	check_row("redis", r->redis_url[0] ? r->redis_url : "(none)");
	if (!r->proof_tried)
		check_row("proof",
		    o->redis_url ? "not run" : "not needed (no Redis URL)");
	else if (r->proven) {
		snprintf(buf, sizeof(buf),
		    "proven in %.1f ms "
		    "(publish/subscribe round trip)",
		    r->br.latency_ms);
		check_row("proof", buf);
	} else {
		snprintf(buf, sizeof(buf), "FAILED: %s", r->proof_error);
		check_row("proof", buf);
	}
	for (i = 0; i < r->problems.n; i++)
		check_row("problem", r->problems.text[i]);
	for (i = 0; i < r->warnings.n; i++)
		check_row("warning", r->warnings.text[i]);
	check_row("verdict", r->verdict);
}

static void
check_add_notes(cJSON *root, const char *key, const struct check_notes *n)
{
	cJSON *a;
	int i;

	if ((a = cJSON_AddArrayToObject(root, key)) == NULL)
		return;
	for (i = 0; i < n->n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(n->text[i]));
}

static int
check_print_json(const struct check_result *r, struct agent_err *err)
{
	cJSON *root, *redis;
	char *s, *clean;
	size_t n;

	if ((root = cJSON_CreateObject()) == NULL)
		return err_oom(err, "check: json");
	cJSON_AddBoolToObject(root, "safe", r->code == 0);
	cJSON_AddNumberToObject(root, "exit_code", r->code);
	cJSON_AddStringToObject(root, "verdict", r->verdict);
	cJSON_AddStringToObject(root, "platform", r->d.platform);
	cJSON_AddStringToObject(root, "instance", r->d.instance);
	if (r->p != NULL && r->p->identity_json != NULL)
		r->p->identity_json(&r->id, root);
	if (r->decided) {
		cJSON_AddStringToObject(root, "mode", mode_name(r->d.mode));
		cJSON_AddBoolToObject(root, "forced", r->d.forced);
		cJSON_AddNumberToObject(root, "peers", r->d.peers);
		cJSON_AddStringToObject(root, "reason", r->d.reason);
		cJSON_AddBoolToObject(
		    root, "discovery_failed", r->d.discovery_failed);
		cJSON_AddNumberToObject(root, "counted", r->t.base);
		cJSON_AddStringToObject(root, "counted_source", r->t.base_src);
		cJSON_AddStringToObject(root, "excluded", r->t.excluded);
		cJSON_AddStringToObject(root, "namespace", r->d.namespace);
		cJSON_AddStringToObject(root, "channel", r->d.channel);
	} else {
		cJSON_AddNullToObject(root, "mode");
		cJSON_AddNullToObject(root, "peers");
	}
	if ((redis = cJSON_AddObjectToObject(root, "redis")) != NULL) {
		if (r->redis_url[0])
			cJSON_AddStringToObject(redis, "url", r->redis_url);
		else
			cJSON_AddNullToObject(redis, "url");
		cJSON_AddBoolToObject(redis, "proof_tried", r->proof_tried);
		cJSON_AddBoolToObject(redis, "proven", r->proven);
		if (r->proven)
			cJSON_AddNumberToObject(redis, "latency_ms",
			    latency_round(r->br.latency_ms));
		else
			cJSON_AddNullToObject(redis, "latency_ms");
		if (r->proof_error[0])
			cJSON_AddStringToObject(redis, "error", r->proof_error);
		else
			cJSON_AddNullToObject(redis, "error");
	}
	check_add_notes(root, "problems", &r->problems);
	check_add_notes(root, "warnings", &r->warnings);
	cJSON_AddStringToObject(root, "version", AGENT_VERSION);
	s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (s == NULL)
		return err_oom(err, "check: json");
	n = 2 * strlen(s) + 64;
	if ((clean = a_malloc(n)) == NULL) {
		a_free(s);
		return err_oom(err, "check: json");
	}
	puts(redact(s, clean, n));
	a_free(clean);
	a_free(s);
	return 0;
}

int
cmd_check(struct options *o, struct agent_err *err)
{
	struct check_result *r;
	int rc;

	if ((r = a_calloc(1, sizeof(*r))) == NULL)
		return err_oom(err, "check");
	check_run(o, r);
	check_verdict(r);
	if (o->output == OUT_JSON)
		rc = check_print_json(r, err);
	else {
		check_print_text(o, r);
		rc = 0;
	}
	fflush(stdout);
	if (rc == 0 && r->code != 0)
		rc = err_set(err, r->code, "check: %s", r->verdict);
	a_free(r);
	return rc;
}
