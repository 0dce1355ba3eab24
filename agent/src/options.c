/*
 * options.c - the settings table.  One row per setting drives flag, env
 * and YAML parsing, validation, --help and the effective-config dump.
 * Precedence: flag > environment > --config file > default.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "agent.h"
#include "bus.h"

enum opt_type { T_STR, T_INT, T_BOOL, T_DUR, T_ENUM, T_REPORT };

/* Commands a row applies to (for --help). */
#define C_DECIDE (1u << CMD_DECIDE)
#define C_INIT (1u << CMD_INIT)
#define C_EXEC (1u << CMD_EXEC)
#define C_SERVE (1u << CMD_SERVE)
#define C_PROBE (1u << CMD_PROBE)
#define C_CHECK (1u << CMD_CHECK)
#define C_DISC (C_DECIDE | C_INIT | C_EXEC | C_SERVE | C_PROBE | C_CHECK)
#define C_PROVE (C_INIT | C_EXEC | C_SERVE | C_PROBE | C_CHECK | C_DECIDE)

struct opt_row {
	const char *name; /* flag without dashes = YAML key */
	const char *env; /* NULL: flag only */
	enum opt_type type;
	const char *def; /* NULL: unset */
	size_t off; /* into struct options */
	const char *const *enums; /* T_ENUM: names, index = value */
	unsigned cmds;
	const char *metavar;
	const char *help;
	int min, max; /* T_INT bounds; both 0: 0 .. INT_MAX_DEFAULT */
	unsigned flags; /* OPT_* */
};

#define INT_MAX_DEFAULT 100000
/* The value is a secret: never printed (the config dump redacts it). */
#define OPT_SECRET 0x1u

static const char *const platforms[] = {
    "auto", "kubernetes", "fly", "static", NULL};
static const char *const modes[] = {"auto", "redis", "noop", NULL};
static const char *const disc_policies[] = {
    "fail", "redis-if-configured", "noop", NULL};
static const char *const drift_policies[] = {"report", "unready", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const deaf_policies[] = {"heal", "report", "off", NULL};
static const char *const outputs[] = {"text", "json", "env", NULL};

#define OFF(f) offsetof(struct options, f)

/* Alphabetical by name (the order of --help and the reference). */
static const struct opt_row rows[] = {
    {"api-timeout", "PYLON_AGENT_API_TIMEOUT", T_DUR, "10s",
        OFF(api_timeout_ms), NULL, C_DISC, "DURATION",
        "one Kubernetes/Fly API request, connect included", 0, 0, 0},
    {"app-selector", "PYLON_AGENT_APP_SELECTOR", T_STR, NULL, OFF(app_selector),
        NULL, C_DISC, "SELECTOR",
        "K8s label selector of every pod of the app across blue/green "
        "colours",
        0, 0, 0},
    {"bus-proxy", "PYLON_AGENT_BUS_PROXY", T_STR, NULL, OFF(bus_proxy), NULL,
        C_INIT | C_SERVE, "HOST:PORT",
        "serve: relay plain Redis on this loopback address to the "
        "rediss:// bus over TLS, and hand Pylon redis://HOST:PORT (init: "
        "write that URL)",
        0, 0, 0},
    {"config", "PYLON_AGENT_CONFIG", T_STR, NULL, OFF(config), NULL, C_DISC,
        "FILE", "YAML file of settings (keys are these flag names)", 0, 0, 0},
    {"count-surge", "PYLON_AGENT_COUNT_SURGE", T_BOOL, "false",
        OFF(count_surge), NULL, C_DISC, NULL,
        "count a rolling update's surge pods as peers", 0, 0, 0},
    {"count-interval", "PYLON_AGENT_COUNT_INTERVAL", T_DUR, "60s",
        OFF(count_interval_ms), NULL, C_SERVE, "DURATION",
        "serve: PUBSUB NUMSUB at most this often (SPEC: a minute), and this "
        "pod's CLIENT LIST check when the count is low",
        0, 0, 0},
    {"deaf-grace", "PYLON_AGENT_DEAF_GRACE", T_DUR, "45s", OFF(deaf_grace_ms),
        NULL, C_SERVE, "DURATION",
        "serve: this pod's Pylon is deaf after no subscription from its "
        "address for this long (Pylon's reconnect backoff tops out at 30 s)",
        0, 0, 0},
    {"deaf-pylon", "PYLON_AGENT_DEAF_PYLON", T_ENUM, "heal", OFF(deaf_pylon),
        deaf_policies, C_SERVE, "heal|report|off",
        "serve: a deaf Pylon in this pod: heal (restart the supervised "
        "command; /pylon-livez 503 for Pylon's livenessProbe), report only, "
        "or off (no CLIENT LIST)",
        0, 0, 0},
    {"env-file", "PYLON_AGENT_ENV_FILE", T_STR, "/pylon-agent/cluster.env",
        OFF(env_file), NULL, C_INIT | C_EXEC | C_SERVE | C_PROBE, "FILE",
        "where init writes the env file (exec: read it, skip discovery)", 0, 0,
        0},
    {"cluster-required", "PYLON_AGENT_CLUSTER_REQUIRED", T_BOOL, "true",
        OFF(cluster_required), NULL, C_PROVE, NULL,
        "in redis mode also export PYLON_CLUSTER_REQUIRED=1 (Pylon then "
        "refuses to boot without a Postgres DATABASE_URL)",
        0, 0, 0},
    {"fly-api-url", "PYLON_AGENT_FLY_API_URL", T_STR,
        "http://_api.internal:4280", OFF(fly_api_url), NULL, C_DISC, "URL",
        "Fly Machines API base URL", 0, 0, 0},
    {"fly-boot-spread", "PYLON_AGENT_FLY_BOOT_SPREAD", T_DUR, "10s",
        OFF(fly_boot_spread_ms), NULL, C_DISC, "DURATION",
        "Fly, serve and init: at most this random delay before the first "
        "Machines API list, 1 s per machine of all.vms beyond 3 (the "
        "list rate: 1/s, burst 3); 0 disables",
        0, 0, 0},
    {"fly-group", "PYLON_AGENT_FLY_GROUP", T_STR, NULL, OFF(fly_group), NULL,
        C_DISC, "GROUP",
        "Fly process group running Pylon (default: FLY_PROCESS_GROUP, or "
        "app for release/console machines)",
        0, 0, 0},
    {"fly-resolver", "PYLON_AGENT_FLY_RESOLVER", T_STR, "[fdaa::3]:53",
        OFF(fly_resolver), NULL, C_DISC, "ADDR|none",
        "Fly internal DNS server serve resyncs from (all.vms and "
        "<group>.process TXT/AAAA); none: resync lists the Machines API",
        0, 0, 0},
    {"interval", "PYLON_AGENT_INTERVAL", T_DUR, "30s", OFF(interval_ms), NULL,
        C_SERVE, "DURATION", "serve: bus health check period (one PING each)",
        0, 0, 0},
    {"kubeconfig", "KUBECONFIG", T_STR, NULL, OFF(kubeconfig), NULL, C_DISC,
        "FILE[:FILE]", "out-of-cluster Kubernetes access", 0, 0, 0},
    {"listen", "PYLON_AGENT_LISTEN", T_STR, "0.0.0.0:4320", OFF(listen), NULL,
        C_SERVE, "HOST:PORT", "serve: HTTP address", 0, 0, 0},
    {"log-format", "PYLON_AGENT_LOG_FORMAT", T_ENUM, "text", OFF(log_format),
        log_formats, C_DISC, "text|json",
        "log lines on stderr: text, or one JSON object per line", 0, 0, 0},
    {"min-peers", "PYLON_AGENT_MIN_PEERS", T_INT, "1", OFF(min_peers), NULL,
        C_DISC, "N", "floor on the discovered peer count", 1, INT_MAX_DEFAULT,
        0},
    {"mode", "PYLON_AGENT_MODE", T_ENUM, "auto", OFF(mode), modes, C_DISC,
        "auto|redis|noop", "forced modes skip the decision, never the proof", 0,
        0, 0},
    {"namespace", "PYLON_AGENT_NAMESPACE", T_STR, "pylon", OFF(namespace), NULL,
        C_DISC, "NAME",
        "PYLON_CLUSTER_NAMESPACE (channel <ns>:cluster:bus): 1 to 64 of "
        "A-Z a-z 0-9 . - _ : + = , ~ # % (e.g. team:app)",
        0, 0, 0},
    {"on-bus-loss", "PYLON_AGENT_ON_BUS_LOSS", T_ENUM, "report",
        OFF(on_bus_loss), drift_policies, C_SERVE, "report|unready",
        "serve: whether 3 failed steady-state bus checks fail /readyz "
        "(report: logged, counted, reported only)",
        0, 0, 0},
    {"on-discovery-error", "PYLON_AGENT_ON_DISCOVERY_ERROR", T_ENUM,
        "redis-if-configured", OFF(on_discovery_error), disc_policies, C_DISC,
        "POLICY", "fail, redis-if-configured or noop", 0, 0, 0},
    {"on-drift", "PYLON_AGENT_ON_DRIFT", T_ENUM, "report", OFF(on_drift),
        drift_policies, C_SERVE, "report|unready",
        "serve: what a topology change that flips the mode does", 0, 0, 0},
    {"output", NULL, T_ENUM, "text", OFF(output), outputs, C_DECIDE | C_CHECK,
        "text|json|env", "decide/check output format", 0, 0, 0},
    {"platform", "PYLON_AGENT_PLATFORM", T_ENUM, "auto", OFF(platform),
        platforms, C_DISC, "auto|kubernetes|fly|static",
        "where to discover the peer count", 0, 0, 0},
    {"prove", NULL, T_BOOL, "false", OFF(prove), NULL, C_DECIDE, NULL,
        "decide: also prove the bus (publishes one envelope)", 0, 0, 0},
    {"pass-env", "PYLON_AGENT_PASS_ENV", T_STR, NULL, OFF(pass_env), NULL,
        C_EXEC | C_SERVE, "LIST",
        "variables the child keeps anyway: CMD's environment is the agent's "
        "minus every PYLON_AGENT_* variable and FLY_API_TOKEN (only the agent "
        "uses them; the Redis URL and the API token stay out of Pylon)",
        0, 0, 0},
    {"pylon-tls", "PYLON_AGENT_PYLON_TLS", T_BOOL, "false", OFF(pylon_tls),
        NULL, C_PROVE, NULL,
        "the Pylon build speaks TLS: allow rediss:// URLs (Pylon 0.11.3 "
        "cannot: it exits 1 at boot on rediss://)",
        0, 0, 0},
    {"redis-ca-file", "PYLON_AGENT_REDIS_CA_FILE", T_STR, NULL,
        OFF(redis_ca_file), NULL, C_PROVE, "FILE",
        "CA bundle for rediss:// (default: system CAs)", 0, 0, 0},
    {"redis-url", "PYLON_AGENT_REDIS_URL", T_STR, NULL, OFF(redis_url), NULL,
        C_PROVE, "URL",
        "the bus handed to Pylon as PYLON_CLUSTER_BUS (prefer "
        "--redis-url-file: argv is visible to every process)",
        0, 0, OPT_SECRET},
    {"redis-url-file", "PYLON_AGENT_REDIS_URL_FILE", T_STR, NULL,
        OFF(redis_url_file), NULL, C_PROVE, "FILE",
        "read the Redis URL from a file (a mounted Secret)", 0, 0, 0},
    {"replicas", "PYLON_AGENT_REPLICAS", T_INT, NULL, OFF(replicas), NULL,
        C_DISC, "N", "static platform: the peer count (default 1)", 0, 0, 0},
    {"report", "PYLON_AGENT_REPORT", T_REPORT, "log", OFF(report), NULL,
        C_INIT | C_EXEC | C_SERVE, "LIST",
        "comma list of log, annotations, events, metadata", 0, 0, 0},
    {"resync", "PYLON_AGENT_RESYNC", T_DUR, "60s", OFF(resync_ms), NULL,
        C_SERVE, "DURATION", "serve: topology re-read period (jittered)", 0, 0,
        0},
    {"serviceaccount-dir", "PYLON_AGENT_SERVICEACCOUNT_DIR", T_STR,
        "/var/run/secrets/kubernetes.io/serviceaccount",
        OFF(serviceaccount_dir), NULL, C_DISC, "DIR",
        "in-cluster token, CA and namespace", 0, 0, 0},
    {"timeout", "PYLON_AGENT_TIMEOUT", T_DUR, "60s", OFF(timeout_ms), NULL,
        C_PROVE, "DURATION",
        "deadline to prove the bus (unless given: check 20s, probe 3s)", 0, 0,
        0},
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

static const struct {
	enum command cmd;
	const char *name;
	const char *usage;
	const char *summary;
} commands[] = {
    {CMD_DECIDE, "decide", "decide [--prove] [--output text|json|env]",
        "discover the topology and print the decision"},
    {CMD_INIT, "init", "init [--env-file FILE]",
        "decide, prove the bus in redis mode, write the env file, exit"},
    {CMD_EXEC, "exec", "exec [--env-file FILE] -- CMD [ARG...]",
        "like init, then execve CMD with the env set (with --env-file: "
        "apply a file written by init)"},
    {CMD_SERVE, "serve", "serve [-- CMD [ARG...]]",
        "sidecar: health endpoints, continuous checks, reports; with CMD "
        "also a supervisor"},
    {CMD_PROBE, "probe", "probe [--timeout DURATION]",
        "one quick check for exec probes and Fly checks"},
    {CMD_CHECK, "check", "check [--output text|json]",
        "preflight for CI and Fly release_command"},
    {CMD_VERSION, "version", "version", "version and build info"},
};

enum command
command_from_name(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(s, commands[i].name) == 0)
			return commands[i].cmd;
	return CMD_NONE;
}

const char *
command_name(enum command c)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].cmd == c)
			return commands[i].name;
	return "?";
}

const char *
mode_name(enum bus_mode m)
{
	return modes[m];
}

const char *
platform_name(enum platform_kind p)
{
	return platforms[p];
}

void
options_usage_main(void *vfp)
{
	FILE *fp = vfp;
	size_t i;

	fprintf(fp,
	    "usage: pylon-agent COMMAND [OPTIONS]\n\n"
	    "Decides whether Pylon needs the Redis cluster bus, proves it, "
	    "and hands\nPYLON_CLUSTER_BUS / PYLON_CLUSTER_NAMESPACE to Pylon."
	    "\n\ncommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(
		    fp, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(fp,
	    "\n`pylon-agent COMMAND --help` lists a command's "
	    "options.  Exit codes: 0 ok, 64 usage,\n69 bus not proven, 75 "
	    "discovery failed, 78 misconfiguration.\n");
}

static void
usage_command(enum command cmd, FILE *fp)
{
	size_t i;
	char flag[64];

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].cmd == cmd)
			fprintf(fp, "usage: pylon-agent %s\n\n%s.\n",
			    commands[i].usage, commands[i].summary);
	if (cmd == CMD_VERSION)
		return;
	fprintf(fp, "\noptions (flag / environment / default):\n");
	for (i = 0; i < NROWS; i++) {
		if ((rows[i].cmds & (1u << cmd)) == 0)
			continue;
		snprintf(flag, sizeof(flag), "--%s%s%s", rows[i].name,
		    rows[i].metavar ? " " : "",
		    rows[i].metavar ? rows[i].metavar : "");
		fprintf(fp, "  %-34s %s\n", flag, rows[i].help);
		if (rows[i].env || rows[i].def)
			fprintf(fp, "  %-34s %s%s%s%s\n", "",
			    rows[i].env ? "env " : "",
			    rows[i].env ? rows[i].env : "",
			    rows[i].def
			        ? (rows[i].env ? ", default " : "default ")
			        : "",
			    rows[i].def ? rows[i].def : "");
	}
	fprintf(fp, "  %-34s %s\n", "-h, --help", "show this help");
}

/* ---- values ----------------------------------------------------------- */

/*
 * A value for an error message with any userinfo masked structurally:
 * everything from after "://" (or the start) to the last '@' becomes
 * "***@".  A Redis URL given in the wrong place is not registered as a
 * secret yet, and a 1-2 character password never is.
 */
STATIC const char *
shown(const char *s, char *buf, size_t n)
{
	const char *at, *from;

	if ((at = strrchr(s, '@')) == NULL)
		return s;
	from = strstr(s, "://");
	from = from != NULL && from < at ? from + 3 : s;
	snprintf(buf, n, "%.*s***%s", (int)(from - s), s, at);
	return buf;
}

enum src { SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG };

struct raw {
	char *val; /* owned */
	enum src src;
	bool set;
};

static void
describe_src(const struct opt_row *r, enum src src, const char *config,
    char *buf, size_t n)
{
	switch (src) {
	case SRC_FLAG:
		snprintf(buf, n, "--%s", r->name);
		break;
	case SRC_ENV:
		snprintf(buf, n, "%s", r->env);
		break;
	case SRC_FILE:
		snprintf(
		    buf, n, "%s: key %s", config ? config : "config", r->name);
		break;
	default:
		snprintf(buf, n, "default of --%s", r->name);
	}
}

STATIC int
parse_int(const char *s, int min, int max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

STATIC int
parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes") ||
	    !strcmp(s, "on")) {
		*out = true;
		return 0;
	}
	if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no") ||
	    !strcmp(s, "off")) {
		*out = false;
		return 0;
	}
	return -1;
}

STATIC int
parse_report(const char *s, unsigned *out)
{
	static const struct {
		const char *n;
		unsigned bit;
	} names[] = {
	    {"log", REPORT_LOG},
	    {"annotations", REPORT_ANNOTATIONS},
	    {"events", REPORT_EVENTS},
	    {"metadata", REPORT_METADATA},
	    {"none", 0},
	};
	const char *p = s, *e;
	size_t i, len;
	unsigned bits = 0;

	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		len = (size_t)(e - p);
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i].n) == len &&
			    !strncmp(names[i].n, p, len))
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return -1;
		bits |= names[i].bit;
		p = e;
	}
	*out = bits;
	return 0;
}

static int
apply_row(struct options *o, const struct opt_row *r, const char *val,
    enum src src, struct agent_err *err)
{
	char where[300], vb[256], vl[128];
	void *field = (char *)o + r->off;
	long ms;
	int i, code;
	struct agent_err tmp;

	/* Bad values on the command line are usage errors; in the
	 * environment or the file they are misconfiguration. */
	code = src == SRC_FLAG ? EXIT_AGENT_USAGE : EXIT_AGENT_CONFIG;
	describe_src(r, src, o->config, where, sizeof(where));
	if (r->type != T_STR)
		val = shown(val, vb, sizeof(vb));
	switch (r->type) {
	case T_STR:
		a_free(*(char **)field);
		if ((*(char **)field = a_strdup(val)) == NULL)
			return err_oom(err, "options");
		return 0;
	case T_INT:
		if (parse_int(val, r->max ? r->min : 0,
		        r->max ? r->max : INT_MAX_DEFAULT, (int *)field) == -1)
			return err_set(err, code,
			    "%s: \"%s\" is not a whole "
			    "number between %d and %d",
			    where, val, r->max ? r->min : 0,
			    r->max ? r->max : INT_MAX_DEFAULT);
		return 0;
	case T_BOOL:
		if (parse_bool(val, (bool *)field) == -1)
			return err_set(err, code,
			    "%s: \"%s\" is not a "
			    "boolean: use true or false",
			    where, val);
		return 0;
	case T_DUR:
		if (parse_duration(val, &ms, &tmp))
			return err_set(err, code, "%s: %s", where, tmp.msg);
		if (ms == 0)
			return err_set(err, code,
			    "%s: \"%s\": the duration must "
			    "be greater than zero, e.g. 500ms or 5s",
			    where, val);
		*(long *)field = ms;
		return 0;
	case T_ENUM:
		for (i = 0; r->enums[i]; i++)
			if (!strcmp(r->enums[i], val)) {
				*(int *)field = i;
				return 0;
			}
		/* The accepted values, not the metavar (e.g. "POLICY"). */
		vl[0] = '\0';
		for (i = 0; r->enums[i]; i++)
			snprintf(vl + strlen(vl), sizeof(vl) - strlen(vl),
			    "%s%s", i ? "|" : "", r->enums[i]);
		return err_set(
		    err, code, "%s: \"%s\" is not one of %s", where, val, vl);
	case T_REPORT:
		if (parse_report(val, (unsigned *)field) == -1)
			return err_set(err, code,
			    "%s: \"%s\": use a comma list "
			    "of log, annotations, events, metadata",
			    where, val);
		return 0;
	}
	return 0;
}

static const struct opt_row *
row_find(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < NROWS; i++)
		if (strlen(rows[i].name) == len &&
		    !strncmp(rows[i].name, name, len))
			return &rows[i];
	return NULL;
}

/* ---- YAML config ------------------------------------------------------ */

#define CONFIG_MAX (64 * 1024)

/* The flat mapping being read: the key waiting for its value, and the
 * values of a sequence joined so far. */
struct cfg_state {
	const char *path;
	struct raw *raws;
	const struct opt_row *r; /* the row of key */
	char *key;
	char *seq;
	int depth;
	bool in_seq;
};

/* A key's value (the scalar, or the joined sequence) into its row. */
static int
cfg_store(struct cfg_state *st, struct agent_err *err)
{
	size_t idx = (size_t)(st->r - rows);

	a_free(st->raws[idx].val);
	st->raws[idx].val = st->seq ? st->seq : a_strdup("");
	st->seq = NULL;
	if (st->raws[idx].val == NULL)
		return err_oom(err, "config");
	st->raws[idx].src = SRC_FILE;
	st->raws[idx].set = true;
	a_free(st->key);
	st->key = NULL;
	return 0;
}

static int
cfg_scalar(struct cfg_state *st, const yaml_event_t *ev, struct agent_err *err)
{
	size_t slen, vlen = ev->data.scalar.length;
	char *tmp, kb[256];

	if (st->depth != 1)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "%s: expected a "
		    "mapping of settings, e.g. `namespace: my-app`",
		    st->path);
	if (st->key == NULL) {
		if ((st->key = a_strdup((char *)ev->data.scalar.value)) == NULL)
			return err_oom(err, "config");
		st->r = row_find(st->key, strlen(st->key));
		if (st->r == NULL || st->r->env == NULL ||
		    !strcmp(st->r->name, "config"))
			return err_set(err, EXIT_AGENT_CONFIG,
			    "%s: line %zu: "
			    "unknown key \"%s\" (keys are the flag names "
			    "without dashes; see pylon-agent init --help)",
			    st->path, ev->start_mark.line + 1,
			    shown(st->key, kb, sizeof(kb)));
		return 0;
	}
	slen = st->seq ? strlen(st->seq) : 0;
	if ((tmp = a_realloc(st->seq, slen + vlen + 2)) == NULL)
		return err_oom(err, "config");
	st->seq = tmp;
	if (slen)
		st->seq[slen++] = ',';
	memcpy(st->seq + slen, ev->data.scalar.value, vlen);
	st->seq[slen + vlen] = '\0';
	return st->in_seq ? 0 : cfg_store(st, err);
}

/* One event of the document; *done at its end. */
static int
cfg_event(struct cfg_state *st, const yaml_event_t *ev, bool *done,
    struct agent_err *err)
{
	switch (ev->type) {
	case YAML_STREAM_END_EVENT:
		*done = true;
		return 0;
	case YAML_MAPPING_START_EVENT:
		if (++st->depth > 1 || st->key != NULL)
			return err_set(err, EXIT_AGENT_CONFIG,
			    "%s: line %zu: "
			    "nested mappings are not supported: the file is a "
			    "flat mapping like `namespace: my-app`",
			    st->path, ev->start_mark.line + 1);
		return 0;
	case YAML_MAPPING_END_EVENT:
		st->depth--;
		return 0;
	case YAML_SEQUENCE_START_EVENT:
		if (st->key == NULL || st->in_seq)
			return err_set(err, EXIT_AGENT_CONFIG,
			    "%s: line %zu: "
			    "expected a flat mapping of settings",
			    st->path, ev->start_mark.line + 1);
		st->in_seq = true;
		return 0;
	case YAML_SEQUENCE_END_EVENT:
		st->in_seq = false;
		return cfg_store(st, err);
	case YAML_SCALAR_EVENT:
		return cfg_scalar(st, ev, err);
	case YAML_ALIAS_EVENT:
		return err_set(err, EXIT_AGENT_CONFIG,
		    "%s: YAML aliases are "
		    "not supported",
		    st->path);
	default:
		return 0;
	}
}

/* Flat mapping of scalars (a sequence of scalars is joined with ","). */
STATIC int
config_parse(const char *path, const char *text, size_t len, struct raw *raws,
    struct agent_err *err)
{
	struct cfg_state st;
	yaml_parser_t p;
	yaml_event_t ev;
	bool done = false;
	int rc = 0;

	memset(&st, 0, sizeof(st));
	st.path = path;
	st.raws = raws;
	if (!yaml_parser_initialize(&p))
		return err_oom(err, "yaml");
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&p, &ev)) {
			rc = err_set(err, EXIT_AGENT_CONFIG,
			    "%s: invalid YAML at line %zu: %s", path,
			    p.problem_mark.line + 1,
			    p.problem ? p.problem : "parse error");
			break;
		}
		rc = cfg_event(&st, &ev, &done, err);
		yaml_event_delete(&ev);
	}
	a_free(st.key);
	a_free(st.seq);
	yaml_parser_delete(&p);
	return rc;
}

/* ---- the whole parse -------------------------------------------------- */

static int
resolve(
    struct options *o, bool *set, const char *url_where, struct agent_err *err)
{
	struct redis_url u;
	char *text = NULL, nb[256];
	int rc;

	if (o->redis_url && *o->redis_url == '\0') {
		a_free(o->redis_url);
		o->redis_url = NULL;
	}
	if (o->redis_url_file && *o->redis_url_file) {
		if (o->redis_url)
			return err_set(err, EXIT_AGENT_CONFIG,
			    "both a Redis URL"
			    " and --redis-url-file (%s) are set: keep one",
			    o->redis_url_file);
		if ((rc = read_file(o->redis_url_file, 8192, &text, NULL, err)))
			return err_prefix(err, "--redis-url-file");
		rstrip(text);
		if (strchr(text, '\n'))
			rc = err_set(err, EXIT_AGENT_CONFIG,
			    "%s holds several "
			    "lines: it must hold only the Redis URL",
			    o->redis_url_file);
		if (*text == '\0')
			rc = err_set(err, EXIT_AGENT_CONFIG,
			    "%s is empty: it "
			    "must hold the Redis URL",
			    o->redis_url_file);
		if (rc) {
			a_free(text);
			return rc;
		}
		o->redis_url = text;
	}
	if (o->redis_url) {
		/* Say where the bad URL came from (never the URL itself). */
		if ((rc = redis_url_parse(o->redis_url, &u, err)))
			return err_prefix(err, "%s",
			    o->redis_url_file && *o->redis_url_file
			        ? o->redis_url_file
			        : url_where);
		redis_url_release(&u);
		/* Decoded and raw (percent-encoded) forms, unix ?pass= too. */
		redis_url_register_secrets(o->redis_url);
	}
	if (!namespace_valid(o->namespace))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "namespace \"%s\" is "
		    "invalid: use 1 to 64 characters of A-Z a-z 0-9 . - _ : + = "
		    ", ~ # %% (no spaces, quotes, /, @, $ or globs)",
		    shown(o->namespace, nb, sizeof(nb)));
	/* The adapters' defaults (the Fly process group). */
	if ((rc = platform_resolve_all(o, err)) != 0)
		return rc;
	if (o->kubeconfig && *o->kubeconfig == '\0') {
		a_free(o->kubeconfig);
		o->kubeconfig = NULL;
	}
	(void)set;
	return 0;
}

/* The index of a row every build has (a NUL-terminated name). */
static size_t
row_index(const char *name)
{
	const struct opt_row *r = row_find(name, strlen(name));

	return r != NULL ? (size_t)(r - rows) : 0;
}

/* 1. The command line into raws; "--" ends it (CMD for exec/serve). */
static int
parse_argv(struct options *o, enum command cmd, int argc, char **argv,
    struct raw *raws, bool *help_shown, struct agent_err *err)
{
	const struct opt_row *r;
	const char *a, *eq, *val;
	char ab[256];
	size_t i, len;
	int k;

	for (k = 1; k < argc; k++) {
		a = argv[k];
		if (!strcmp(a, "--")) {
			o->cmd_argc = argc - k - 1;
			o->cmd_argv = argv + k + 1;
			break;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage_command(cmd, stdout);
			*help_shown = true;
			return 0;
		}
		if (strncmp(a, "--", 2) != 0)
			return err_set(err, EXIT_AGENT_USAGE,
			    "unexpected "
			    "argument \"%s\"%s (see pylon-agent %s --help)",
			    shown(a, ab, sizeof(ab)),
			    cmd == CMD_EXEC || cmd == CMD_SERVE
			        ? ": put the command after --"
			        : "",
			    command_name(cmd));
		a += 2;
		eq = strchr(a, '=');
		len = eq ? (size_t)(eq - a) : strlen(a);
		r = row_find(a, len);
		if (r == NULL ||
		    (cmd != CMD_NONE && (r->cmds & (1u << cmd)) == 0 &&
		        r->env == NULL))
			return err_set(err, EXIT_AGENT_USAGE,
			    "unknown option "
			    "--%.*s for %s (see pylon-agent %s --help)",
			    (int)len, a, command_name(cmd), command_name(cmd));
		if (eq)
			val = eq + 1;
		else if (r->type == T_BOOL)
			val = "true";
		else if (k + 1 < argc)
			val = argv[++k];
		else
			return err_set(err, EXIT_AGENT_USAGE,
			    "option --%s "
			    "needs a value (%s)",
			    r->name, r->metavar);
		i = (size_t)(r - rows);
		a_free(raws[i].val);
		if ((raws[i].val = a_strdup(val)) == NULL)
			return err_oom(err, "options");
		raws[i].src = SRC_FLAG;
		raws[i].set = true;
	}
	if (o->cmd_argc > 0 && cmd != CMD_EXEC && cmd != CMD_SERVE)
		return err_set(err, EXIT_AGENT_USAGE,
		    "%s takes no command "
		    "after --",
		    command_name(cmd));
	if (cmd == CMD_EXEC && o->cmd_argc == 0)
		return err_set(err, EXIT_AGENT_USAGE,
		    "exec needs a command: "
		    "pylon-agent exec [OPTIONS] -- CMD [ARG...]");
	return 0;
}

/* 2. The environment, for what the command line left unset. */
static int
read_env(struct raw *raws, struct agent_err *err)
{
	const char *val;
	size_t i;

	for (i = 0; i < NROWS; i++) {
		if (raws[i].set || rows[i].env == NULL ||
		    (val = getenv(rows[i].env)) == NULL)
			continue;
		if ((raws[i].val = a_strdup(val)) == NULL)
			return err_oom(err, "options");
		raws[i].src = SRC_ENV;
		raws[i].set = true;
	}
	return 0;
}

/* 3. The config file (--config), below both. */
static int
read_config(struct raw *raws, char **text, struct agent_err *err)
{
	struct raw fraws[NROWS];
	size_t i, len, c = row_index("config");
	const char *cfg = raws[c].set ? raws[c].val : NULL;
	int rc;

	if (cfg == NULL || *cfg == '\0')
		return 0;
	if ((rc = read_file(cfg, CONFIG_MAX, text, &len, err))) {
		err_prefix(err, "--config");
		return rc;
	}
	memset(fraws, 0, sizeof(fraws));
	if ((rc = config_parse(cfg, *text, len, fraws, err))) {
		for (i = 0; i < NROWS; i++)
			a_free(fraws[i].val);
		return rc;
	}
	for (i = 0; i < NROWS; i++) {
		if (fraws[i].set && !raws[i].set) {
			raws[i] = fraws[i];
			continue;
		}
		a_free(fraws[i].val);
	}
	return 0;
}

/* 4. Every row: what was set, else its default. */
static int
apply_rows(
    struct options *o, const struct raw *raws, bool *set, struct agent_err *err)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < NROWS && rc == 0; i++) {
		if (raws[i].set) {
			set[i] = true;
			rc = apply_row(
			    o, &rows[i], raws[i].val, raws[i].src, err);
		} else if (rows[i].def)
			rc = apply_row(
			    o, &rows[i], rows[i].def, SRC_DEFAULT, err);
	}
	return rc;
}

int
options_parse(struct options *o, enum command cmd, int argc, char **argv,
    bool *help_shown, struct agent_err *err)
{
	struct raw raws[NROWS];
	char *text = NULL, uw[300];
	size_t i, t, u;
	bool set[NROWS];
	int rc;

	memset(o, 0, sizeof(*o));
	memset(raws, 0, sizeof(raws));
	memset(set, 0, sizeof(set));
	o->command = cmd;
	*help_shown = false;
	if ((rc = parse_argv(o, cmd, argc, argv, raws, help_shown, err)) ||
	    *help_shown || (rc = read_env(raws, err)) ||
	    (rc = read_config(raws, &text, err)) ||
	    (rc = apply_rows(o, raws, set, err)))
		goto out;
	o->replicas_set = set[row_index("replicas")];
	if (!o->replicas_set)
		o->replicas = 1;
	/* probe (3 s) and check (20 s) have their own short deadlines; only
	 * --timeout on their command line overrides them, not a
	 * PYLON_AGENT_TIMEOUT meant for init in the same pod's env. */
	t = row_index("timeout");
	o->timeout_set = raws[t].set && raws[t].src == SRC_FLAG;
	o->env_file_set = set[row_index("env-file")];
	log_init(o->log_format);
	if (cmd == CMD_CHECK && o->output == OUT_ENV) {
		rc = err_set(err, EXIT_AGENT_USAGE,
		    "check --output env is not "
		    "supported: use text or json (decide --output env prints "
		    "the env file)");
		goto out;
	}
	u = row_index("redis-url");
	describe_src(&rows[u], raws[u].src, o->config, uw, sizeof(uw));
	rc = resolve(o, set, uw, err);
out:
	for (i = 0; i < NROWS; i++)
		a_free(raws[i].val);
	a_free(text);
	return rc;
}

void
options_release(struct options *o)
{
	size_t i;

	for (i = 0; i < NROWS; i++)
		if (rows[i].type == T_STR) {
			a_free(*(char **)((char *)o + rows[i].off));
			*(char **)((char *)o + rows[i].off) = NULL;
		}
}

void
options_dump(const struct options *o, void *vfp)
{
	FILE *fp = vfp;
	const struct opt_row *r;
	const void *f;
	char *red;
	size_t i;

	for (i = 0; i < NROWS; i++) {
		r = &rows[i];
		f = (const char *)o + r->off;
		fprintf(fp, "%s: ", r->name);
		switch (r->type) {
		case T_STR:
			if (*(char *const *)f == NULL)
				fprintf(fp, "~\n");
			else if (r->flags & OPT_SECRET) {
				red = redis_url_redact(*(char *const *)f);
				fprintf(fp, "'%s'\n", red ? red : "***");
				a_free(red);
			} else
				fprintf(fp, "'%s'\n", *(char *const *)f);
			break;
		case T_INT:
			fprintf(fp, "%d\n", *(const int *)f);
			break;
		case T_BOOL:
			fprintf(
			    fp, "%s\n", *(const bool *)f ? "true" : "false");
			break;
		case T_DUR:
			fprintf(fp, "%ldms\n", *(const long *)f);
			break;
		case T_ENUM:
			fprintf(fp, "%s\n", r->enums[*(const int *)f]);
			break;
		case T_REPORT:
			fprintf(fp, "'%s%s%s%s'\n",
			    o->report & REPORT_LOG ? "log," : "",
			    o->report & REPORT_ANNOTATIONS ? "annotations,"
			                                   : "",
			    o->report & REPORT_EVENTS ? "events," : "",
			    o->report & REPORT_METADATA ? "metadata," : "");
			break;
		}
	}
}

/* The reference table (docs/reference.md is checked against this). */
static void
md_cell(FILE *fp, const char *pre, const char *s, const char *post)
{
	fputs(pre, fp);
	for (; s && *s; s++) {
		if (*s == '|')
			fputc('\\', fp);
		fputc(*s, fp);
	}
	fputs(post, fp);
}

void
options_reference(void *vfp)
{
	FILE *fp = vfp;
	size_t i;

	fprintf(fp, "| flag | env | default | meaning |\n|---|---|---|---|\n");
	for (i = 0; i < NROWS; i++) {
		md_cell(fp, "| `--", rows[i].name, "");
		md_cell(
		    fp, rows[i].metavar ? " " : "", rows[i].metavar, "` | ");
		md_cell(fp, rows[i].env ? "`" : "—", rows[i].env,
		    rows[i].env ? "` | " : " | ");
		md_cell(fp, rows[i].def ? "`" : "—", rows[i].def,
		    rows[i].def ? "` | " : " | ");
		md_cell(fp, "", rows[i].help, " |\n");
	}
}
