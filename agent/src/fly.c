/*
 * fly.c - the Fly.io platform adapter (SPEC 4): lists the machines of the
 * app through the Machines API and counts those of the Pylon process
 * group that can serve or be auto-started.  Reports the decision as the
 * machine metadata key pylon_cluster_bus.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "dns.h"
#include "http_client.h"

#define FLY_DEFAULT_JITTER_MS 250 /* decide, check */
#define FLY_MAX_ATTEMPTS 5
#define FLY_DEADLINE_MIN_MS 5000L
#define FLY_DEADLINE_MAX_MS 30000L
#define FLY_NAME_LEN 64
#define FLY_DNS_TIMEOUT_MS 2000L /* fdaa::3 is on the host */
#define FLY_TXT_MAX (64 * 1024)

#ifdef UNITTEST
int fly_auth_header(const char *token, char *out, size_t n);
int fly_count(const char *body, size_t len, const char *app, const char *group,
    const char *self_id, bool self_serving, struct topology *t,
    struct agent_err *err);
struct fly_snap;
int fly_vms_parse(const char *txt, const char *self_id, struct fly_snap *s);
#endif

/* Why a listed machine was not counted (the excluded string's order). */
enum fly_excl {
	FX_DESTROYED,
	FX_FAILED,
	FX_RELEASE,
	FX_CONSOLE,
	FX_TEST,
	FX_CANARY,
	FX_STANDBY,
	FX_GROUP,
	FX_NOID,
	FX_MAX
};

static const char *const fly_excl_names[FX_MAX] = {"destroyed/destroying",
    "failed", "release_command", "console", "test_machine", "canary", "standby",
    "other group", "malformed"};

/*
 * States a machine of the group may be in and still serve now or later
 * (autostart, rolling update).  Unknown states count too: when in doubt,
 * the bus is the safe side.
 */
static const char *const fly_dead_states[] = {"destroyed", "destroying", NULL};
static const char *const fly_failed_states[] = {
    "failed", "launch_failed", "replaced", "migrated", NULL};

static bool
fly_in(const char *s, const char *const *set)
{
	for (; *set != NULL; set++)
		if (strcmp(s, *set) == 0)
			return true;
	return false;
}

static const char *
fly_str(const cJSON *obj, const char *key)
{
	const cJSON *v;

	if (!cJSON_IsObject(obj))
		return NULL;
	v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A printable, bounded copy of an API-provided name for messages. */
static void
fly_clean(const char *in, char *out, size_t n)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < n; i++)
		out[i] = (isalnum((unsigned char)in[i]) || in[i] == '_' ||
		             in[i] == '-' || in[i] == '.')
		    ? in[i]
		    : '?';
	out[i] = '\0';
}

/*
 * The Authorization header for a Machines API token (SPEC 4): as given
 * when it already names its scheme, FlyV1 for macaroons (any part of a
 * comma-joined list), else Bearer.  Returns 0, or -1 when empty or too
 * long for out.
 */
STATIC int
fly_auth_header(const char *token, char *out, size_t n)
{
	const char *s, *e, *p;
	size_t len;
	bool macaroon = false;
	int w;

	if (token == NULL)
		return -1;
	for (s = token; isspace((unsigned char)*s); s++)
		;
	for (e = s + strlen(s); e > s && isspace((unsigned char)e[-1]); e--)
		;
	len = (size_t)(e - s);
	if (len == 0 || len > 1 << 16)
		return -1;
	/* A control character (CR/LF) would split the HTTP header. */
	for (p = s; p < e; p++)
		if (iscntrl((unsigned char)*p))
			return -1;
	if ((len > 6 && strncmp(s, "FlyV1 ", 6) == 0) ||
	    (len > 7 && strncmp(s, "Bearer ", 7) == 0)) {
		w = snprintf(out, n, "%.*s", (int)len, s);
		return w < 0 || (size_t)w >= n ? -1 : 0;
	}
	for (p = s; p < e;) {
		while (p < e && (*p == ' ' || *p == ','))
			p++;
		if ((size_t)(e - p) >= 5 &&
		    (strncmp(p, "fm1r_", 5) == 0 ||
		        strncmp(p, "fm1a_", 5) == 0))
			macaroon = true;
		if ((size_t)(e - p) >= 4 && strncmp(p, "fm2_", 4) == 0)
			macaroon = true;
		while (p < e && *p != ',')
			p++;
	}
	w = snprintf(
	    out, n, "%s %.*s", macaroon ? "FlyV1" : "Bearer", (int)len, s);
	return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* The configuration object: config, else incomplete_config (machines on
 * an unreachable host). */
static const cJSON *
fly_config(const cJSON *m, bool *incomplete)
{
	const cJSON *c;

	*incomplete = false;
	c = cJSON_GetObjectItemCaseSensitive(m, "config");
	if (cJSON_IsObject(c))
		return c;
	c = cJSON_GetObjectItemCaseSensitive(m, "incomplete_config");
	if (cJSON_IsObject(c)) {
		*incomplete = true;
		return c;
	}
	return NULL;
}

/* A metadata value: top-level metadata (some API versions), then
 * config.metadata. */
static const char *
fly_meta(const cJSON *m, const cJSON *cfg, const char *key)
{
	const char *v;

	v = fly_str(cJSON_GetObjectItemCaseSensitive(m, "metadata"), key);
	if (v == NULL && cfg != NULL)
		v = fly_str(
		    cJSON_GetObjectItemCaseSensitive(cfg, "metadata"), key);
	return v;
}

/* The machine's process group: fly_process_group, legacy process_group,
 * the FLY_PROCESS_GROUP flyctl puts in config.env, else "app". */
static const char *
fly_group_of(const cJSON *m, const cJSON *cfg)
{
	const char *g;

	if ((g = fly_meta(m, cfg, "fly_process_group")) != NULL && *g)
		return g;
	if ((g = fly_meta(m, cfg, "process_group")) != NULL && *g)
		return g;
	if (cfg != NULL &&
	    (g = fly_str(cJSON_GetObjectItemCaseSensitive(cfg, "env"),
	         "FLY_PROCESS_GROUP")) != NULL &&
	    *g)
		return g;
	return "app";
}

static bool
fly_is_standby(const cJSON *cfg)
{
	const cJSON *s;

	if (cfg == NULL)
		return false;
	s = cJSON_GetObjectItemCaseSensitive(cfg, "standbys");
	return cJSON_IsArray(s) && cJSON_GetArraySize(s) > 0;
}

/* Per-state tallies of the counted machines, in first-seen order. */
struct fly_states {
	char name[8][24];
	int count[8];
	int n;
	int other; /* states beyond the table */
};

static void
fly_state_add(struct fly_states *st, const char *state)
{
	char clean[24];
	int i;

	fly_clean(state, clean, sizeof(clean));
	for (i = 0; i < st->n; i++)
		if (strcmp(st->name[i], clean) == 0) {
			st->count[i]++;
			return;
		}
	if (st->n == 8) {
		st->other++;
		return;
	}
	snprintf(st->name[st->n], sizeof(st->name[0]), "%s", clean);
	st->count[st->n++] = 1;
}

/* Appends to a bounded string buffer; silently truncates. */
static void
fly_cat(char *buf, size_t n, const char *fmt, ...) AGENT_PRINTF(3, 4);

static void
fly_cat(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	size_t len = strlen(buf);

	if (len + 1 >= n)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, n - len, fmt, ap);
	va_end(ap);
}

/* What one fly_count pass saw. */
struct fly_tally {
	struct fly_states st;
	int excl[FX_MAX];
	char other_groups[96];
	int total, counted, unreachable, green, cordoned;
	bool self_seen;
};

/* Why a machine of state STATE in group G is not counted, or FX_MAX. */
static enum fly_excl
fly_why(const cJSON *m, const cJSON *cfg, const char *state, const char *g,
    const char *group)
{
	const char *canary = fly_meta(m, cfg, "fly_canary");

	if (fly_in(state, fly_dead_states))
		return FX_DESTROYED;
	if (fly_in(state, fly_failed_states))
		return FX_FAILED;
	if (strcmp(g, "fly_app_release_command") == 0 ||
	    (cfg != NULL &&
	        fly_str(cJSON_GetObjectItemCaseSensitive(cfg, "env"),
	            "RELEASE_COMMAND") != NULL))
		return FX_RELEASE;
	if (strcmp(g, "fly_app_console") == 0)
		return FX_CONSOLE;
	if (strcmp(g, "fly_app_test_machine_command") == 0)
		return FX_TEST;
	if (strcmp(g, group) != 0)
		return FX_GROUP;
	if (canary != NULL && strcmp(canary, "true") == 0)
		return FX_CANARY;
	if (fly_is_standby(cfg))
		return FX_STANDBY;
	return FX_MAX;
}

/* One listed machine into the tally. */
static void
fly_tally_machine(struct fly_tally *ty, const cJSON *m, const char *group,
    const char *self_id)
{
	const cJSON *cfg;
	const char *id, *state, *g, *tag;
	char cg[FLY_NAME_LEN];
	bool incomplete;
	enum fly_excl why;

	ty->total++;
	if (!cJSON_IsObject(m) || (id = fly_str(m, "id")) == NULL) {
		ty->excl[FX_NOID]++;
		return;
	}
	if (self_id != NULL && strcmp(id, self_id) == 0)
		ty->self_seen = true;
	state = fly_str(m, "state");
	if (state == NULL)
		state = "unknown";
	cfg = fly_config(m, &incomplete);
	g = fly_group_of(m, cfg);
	if ((why = fly_why(m, cfg, state, g, group)) != FX_MAX) {
		ty->excl[why]++;
		if (why == FX_GROUP) {
			fly_clean(g, cg, sizeof(cg));
			if (strstr(ty->other_groups, cg) == NULL)
				fly_cat(ty->other_groups,
				    sizeof(ty->other_groups), "%s%s",
				    ty->other_groups[0] ? "," : "", cg);
		}
		return;
	}
	ty->counted++;
	fly_state_add(&ty->st, state);
	if (incomplete)
		ty->unreachable++;
	tag = fly_meta(m, cfg, "fly_bluegreen_deployment_tag");
	if (tag != NULL && strcmp(tag, "safe_to_destroy") != 0)
		ty->green++;
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "cordoned")))
		ty->cordoned++;
}

/* t->base, base_src and excluded from the tally. */
static void
fly_tally_topology(struct fly_tally *ty, const char *app, const char *group,
    const char *self_id, bool self_serving, struct topology *t)
{
	char cg[FLY_NAME_LEN], cleaned_app[FLY_NAME_LEN];
	char extra[160] = "";
	int i, counted;

	/* This machine serves Pylon but is not listed yet (eventual
	 * consistency): it is one of the peers all the same. */
	if (self_serving && self_id != NULL && !ty->self_seen) {
		ty->counted++;
		fly_cat(extra, sizeof(extra),
		    ", this machine %s not listed "
		    "yet, counted",
		    self_id);
	}
	counted = ty->counted;
	if (ty->unreachable)
		fly_cat(extra, sizeof(extra), ", %d on unreachable hosts",
		    ty->unreachable);
	if (ty->green)
		fly_cat(extra, sizeof(extra),
		    ", bluegreen: %d green + %d "
		    "blue counted",
		    ty->green, counted - ty->green);
	else if (ty->cordoned)
		fly_cat(extra, sizeof(extra), ", %d cordoned", ty->cordoned);

	t->base = counted;
	fly_clean(app, cleaned_app, sizeof(cleaned_app));
	fly_clean(group, cg, sizeof(cg));
	snprintf(t->base_src, sizeof(t->base_src),
	    "fly app %s group %s: "
	    "%d machine%s",
	    cleaned_app, cg, counted, counted == 1 ? "" : "s");
	if (ty->st.n > 0) {
		fly_cat(t->base_src, sizeof(t->base_src), " (");
		for (i = 0; i < ty->st.n; i++)
			fly_cat(t->base_src, sizeof(t->base_src), "%s%d %s",
			    i ? ", " : "", ty->st.count[i], ty->st.name[i]);
		if (ty->st.other)
			fly_cat(t->base_src, sizeof(t->base_src), ", %d other",
			    ty->st.other);
		fly_cat(t->base_src, sizeof(t->base_src), ")");
	}
	fly_cat(t->base_src, sizeof(t->base_src), "%s", extra);

	t->excluded[0] = '\0';
	for (i = 0; i < FX_MAX; i++) {
		if (ty->excl[i] == 0)
			continue;
		if (i == FX_GROUP)
			fly_cat(t->excluded, sizeof(t->excluded),
			    "%s%d in "
			    "other groups (%s)",
			    t->excluded[0] ? ", " : "", ty->excl[i],
			    ty->other_groups);
		else
			fly_cat(t->excluded, sizeof(t->excluded), "%s%d %s",
			    t->excluded[0] ? ", " : "", ty->excl[i],
			    fly_excl_names[i]);
	}
	log_debug("fly: %d machines listed, %d counted in group %s%s%s",
	    ty->total, counted, cg, t->excluded[0] ? "; not counted: " : "",
	    t->excluded);
}

/*
 * The counting rules (SPEC 4) on a raw GET /v1/apps/{app}/machines body.
 * self_id (may be NULL) is this machine; self_serving says this process
 * is a Pylon machine of the group (not a release/console machine), so
 * it counts itself when the list does not show it yet.  Fills t->base,
 * base_src and excluded.  Returns 0 or EXIT_AGENT_DISCOVERY (malformed).
 */
STATIC int
fly_count(const char *body, size_t len, const char *app, const char *group,
    const char *self_id, bool self_serving, struct topology *t,
    struct agent_err *err)
{
	cJSON *root;
	const cJSON *m;
	struct fly_tally ty;
	long fails = alloc_failures();
	int rc = 0;

	memset(&ty, 0, sizeof(ty));
	root = cJSON_ParseWithLength(body, len);
	if (root == NULL && alloc_failures() != fails)
		return err_oom(err, "fly: machines list");
	if (root == NULL)
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "fly: the Machines "
		    "API answered with a body that is not JSON (%zu bytes); "
		    "is --fly-api-url pointing at the Machines API?",
		    len);
	if (!cJSON_IsArray(root)) {
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "fly: the Machines "
		    "API answered with JSON that is not a list of machines");
		goto out;
	}
	cJSON_ArrayForEach(m, root)
	{
		fly_tally_machine(&ty, m, group, self_id);
	}
	fly_tally_topology(&ty, app, group, self_id, self_serving, t);
out:
	cJSON_Delete(root);
	return rc;
}

static bool
fly_detect(const struct options *o)
{
	const char *a = getenv("FLY_APP_NAME"), *m = getenv("FLY_MACHINE_ID");

	(void)o;
	return a != NULL && *a != '\0' && m != NULL && *m != '\0';
}

/* Groups of Fly's one-off machines: never the Pylon group by default. */
static const char *const fly_reserved_groups[] = {"fly_app_release_command",
    "fly_app_console", "fly_app_test_machine_command", NULL};

/* --fly-group's default: FLY_PROCESS_GROUP unless reserved, else "app". */
static int
fly_resolve(struct options *o, struct agent_err *err)
{
	const char *g;

	if (o->fly_group != NULL && *o->fly_group != '\0')
		return 0;
	g = getenv("FLY_PROCESS_GROUP");
	if (g == NULL || *g == '\0' || fly_in(g, fly_reserved_groups))
		g = "app";
	a_free(o->fly_group);
	if ((o->fly_group = a_strdup(g)) == NULL)
		return err_oom(err, "options");
	return 0;
}

static void
fly_identity(const struct options *o, const struct topology *t,
    struct platform_identity *id)
{
	const char *s = getenv("FLY_APP_NAME");

	(void)t;
	id->scope_label = "app";
	snprintf(id->scope, sizeof(id->scope), "%s", s ? s : "");
	snprintf(id->group, sizeof(id->group), "%s",
	    o->fly_group && *o->fly_group ? o->fly_group : "app");
	id->count_is_reason = true;
	s = getenv("RELEASE_COMMAND");
	id->release_machine = s != NULL && strcmp(s, "1") == 0;
}

static void
fly_identity_json(const struct platform_identity *id, struct cJSON *root)
{
	cJSON *fly;

	if ((fly = cJSON_AddObjectToObject(root, "fly")) == NULL)
		return;
	cJSON_AddStringToObject(fly, "app", id->scope);
	cJSON_AddStringToObject(fly, "group", id->group);
	cJSON_AddBoolToObject(fly, "release_command", id->release_machine);
}

/* App names are lowercase letters, digits and dashes; machine ids hex.
 * Checked so they can go in a URL path as they are. */
static bool
fly_name_ok(const char *s)
{
	size_t i;

	if (s == NULL || *s == '\0' || strlen(s) >= FLY_NAME_LEN)
		return false;
	for (i = 0; s[i] != '\0'; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
			return false;
	return true;
}

/* The base URL without a trailing slash, in out. */
static int
fly_base(const struct options *o, char *out, size_t n, struct agent_err *err)
{
	const char *u = o->fly_api_url;
	size_t len;

	if (u == NULL || *u == '\0')
		u = "http://_api.internal:4280";
	/* user:password@ would be printed with every URL. */
	if (url_has_userinfo(u))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "fly: --fly-api-url "
		    "holds a user name or password (USER:PASSWORD@); drop it: "
		    "the API is authenticated by FLY_API_TOKEN");
	len = strlen(u);
	while (len > 0 && u[len - 1] == '/')
		len--;
	if (len + 1 > n)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "fly: --fly-api-url is "
		    "too long");
	memcpy(out, u, len);
	out[len] = '\0';
	return 0;
}

/* Registers every ", "-separated part of the header's token. */
static void
fly_token_parts(const char *hdr)
{
	const char *p, *e;
	char *part;

	if ((p = strchr(hdr, ' ')) == NULL || strchr(p, ',') == NULL)
		return;
	while (*p != '\0') {
		while (*p == ' ' || *p == ',')
			p++;
		for (e = p; *e != '\0' && *e != ',' && *e != ' '; e++)
			;
		/* The system allocator, as log.c: allocation-failure
		 * injection must not switch redaction off. */
		if (e > p && (part = strndup(p, (size_t)(e - p))) != NULL) {
			log_add_secret(part);
			explicit_bzero(part, (size_t)(e - p));
			free(part);
		}
		p = e;
	}
}

/* The token header, registered as a secret.  *have is false when
 * FLY_API_TOKEN is unset (the request goes without, and a 401 says so). */
static int
fly_token(char *out, size_t n, bool *have, struct agent_err *err)
{
	const char *tok = getenv("FLY_API_TOKEN");

	*have = false;
	out[0] = '\0';
	if (tok == NULL || *tok == '\0')
		return 0;
	log_add_secret(tok);
	if (fly_auth_header(tok, out, n) != 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "fly: FLY_API_TOKEN is "
		    "blank, too long or holds a control character (a line "
		    "break inside the token?); set it to a token from `fly tokens "
		    "create readonly`");
	log_add_secret(out);
	/* The bare token part too, for the FlyV1/Bearer-prefixed form. */
	if (strchr(out, ' ') != NULL)
		log_add_secret(strchr(out, ' ') + 1);
	/* And each macaroon of a comma-joined list: an error body may
	 * echo one alone. */
	fly_token_parts(out);
	*have = true;
	return 0;
}

/* Words for a non-2xx status of the Machines API. */
static int
fly_status_error(const char *what, const struct http_response *rs,
    const char *app, bool have_token, struct agent_err *err)
{
	char raw[256], text[256], clean[FLY_NAME_LEN];
	char body[300] = "";

	http_error_text(rs, raw, sizeof(raw));
	redact(raw, text, sizeof(text));
	if (text[0])
		snprintf(body, sizeof(body), " (\"%s\")", text);
	fly_clean(app, clean, sizeof(clean));
	switch (rs->status) {
	case 401:
	case 403:
		if (!have_token)
			return err_set(err, EXIT_AGENT_DISCOVERY,
			    "fly: %s: "
			    "HTTP %ld%s: FLY_API_TOKEN is not set; create a "
			    "read-only token with `fly tokens create readonly` "
			    "and set it with `fly secrets set FLY_API_TOKEN=...`",
			    what, rs->status, body);
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "fly: %s: HTTP %ld%s: "
		    "FLY_API_TOKEN is wrong, expired or not allowed to read "
		    "app %s; create a read-only token with `fly tokens create "
		    "readonly` (org scope) and set it with `fly secrets set "
		    "FLY_API_TOKEN=...`",
		    what, rs->status, body, clean);
	case 404:
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "fly: %s: HTTP 404%s: "
		    "app %s not found; check FLY_APP_NAME and that the token "
		    "belongs to the app's organization",
		    what, body, clean);
	case 429:
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "fly: %s: HTTP 429%s: "
		    "rate limited by the Machines API after %d attempts; "
		    "retry later",
		    what, body, rs->attempts);
	default:
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "fly: %s: HTTP %ld%s%s", what, rs->status, body,
		    rs->status >= 500 ? ": the Machines API failed; retry later"
		                      : "");
	}
}

static void
fly_request_defaults(const struct options *o, struct http_request *rq)
{
	long deadline;

	rq->timeout_ms = o->api_timeout_ms > 0 ? o->api_timeout_ms : 10000;
	rq->noproxy_host = "*"; /* _api.internal is never behind a proxy */
	rq->max_attempts = FLY_MAX_ATTEMPTS;
	deadline = rq->timeout_ms * 3;
	if (deadline < FLY_DEADLINE_MIN_MS)
		deadline = FLY_DEADLINE_MIN_MS;
	if (deadline > FLY_DEADLINE_MAX_MS)
		deadline = FLY_DEADLINE_MAX_MS;
	rq->deadline_ms = deadline;
}

/* ---- Fly's internal DNS: serve's steady state (no token, no rate) ---- */

/*
 * What the DNS shows: the app's other machines (all.vms.<app>.internal
 * TXT, "<id> <region>" entries separated by commas, every group) as
 * sorted hashes of their ids, whether this machine is listed, and the
 * started machines of the group
 * (<group>.process.<app>.internal AAAA).
 */
struct fly_snap {
	uint64_t *ids;
	size_t nids;
	int group_n;
	bool self_listed;
};

/* The snapshot the last Machines API list was judged with (serve). */
static struct fly_snap fly_base_snap;
static bool fly_have_base;

static void
fly_snap_release(struct fly_snap *s)
{
	a_free(s->ids);
	memset(s, 0, sizeof(*s));
}

static uint64_t
fly_hash(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	while (n-- > 0) {
		h ^= (unsigned char)*p++;
		h *= 1099511628211ULL;
	}
	return h;
}

static int
fly_u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Parses the all.vms TXT text.  An entry's id is its first word, ids are
 * lowercase letters and digits; an entry that is not is malformed.
 * Returns 0, or -1 (malformed) or -2 (out of memory).
 */
STATIC int
fly_vms_parse(const char *txt, const char *self_id, struct fly_snap *s)
{
	const char *p = txt, *e, *w;
	size_t cap = 0, i, j;
	uint64_t *n;

	s->nids = 0;
	s->self_listed = false;
	while (*p != '\0') {
		while (*p == ',' || *p == ' ')
			p++;
		if (*p == '\0')
			break;
		for (w = p; *w != '\0' && *w != ' ' && *w != ','; w++)
			if (!islower((unsigned char)*w) &&
			    !isdigit((unsigned char)*w))
				return -1;
		if (w - p > 32)
			return -1;
		/* This machine is not one of the changes: its own DNS
		 * registration after the boot read must not cost a list. */
		if (self_id != NULL && strlen(self_id) == (size_t)(w - p) &&
		    strncmp(self_id, p, (size_t)(w - p)) == 0) {
			s->self_listed = true;
			while (*w != '\0' && *w != ',')
				w++;
			p = w;
			continue;
		}
		if (s->nids == cap) {
			cap = cap ? cap * 2 : 16;
			if ((n = a_calloc(cap, sizeof(*n))) == NULL)
				return -2;
			if (s->nids)
				memcpy(n, s->ids, s->nids * sizeof(*n));
			a_free(s->ids);
			s->ids = n;
		}
		s->ids[s->nids++] = fly_hash(p, (size_t)(w - p));
		/* The region word, up to the next comma. */
		for (e = w; *e != '\0' && *e != ','; e++)
			;
		p = e;
	}
	if (s->nids > 1)
		qsort(s->ids, s->nids, sizeof(*s->ids), fly_u64_cmp);
	for (i = j = 0; i < s->nids; i++)
		if (j == 0 || s->ids[j - 1] != s->ids[i])
			s->ids[j++] = s->ids[i];
	s->nids = j;
	return 0;
}

struct fly_txt {
	char *buf;
	size_t used;
	bool full;
};

static int
fly_txt_cb(const uint8_t *rd, size_t len, void *arg)
{
	struct fly_txt *t = arg;

	/* Several TXT records are one list. */
	if (t->used > 0 && t->used + 2 < FLY_TXT_MAX)
		t->buf[t->used++] = ',';
	if (dns_txt_append(rd, len, t->buf, FLY_TXT_MAX, &t->used) != 0)
		t->full = true;
	return 0;
}

static int
fly_aaaa_cb(const uint8_t *rd, size_t len, void *arg)
{
	(void)rd;
	(void)len;
	(*(int *)arg)++;
	return 0;
}

static bool
fly_dns_off(const struct options *o)
{
	return o->fly_resolver != NULL && strcmp(o->fly_resolver, "none") == 0;
}

static long
fly_dns_timeout(const struct options *o)
{
	long t = o->api_timeout_ms > 0 ? o->api_timeout_ms : 10000;

	return t > FLY_DNS_TIMEOUT_MS ? FLY_DNS_TIMEOUT_MS : t;
}

/* Reads both names into *s.  Returns 0 or an exit code with err set. */
static int
fly_dns_read(const struct options *o, const char *app, const char *group,
    struct fly_snap *s, struct agent_err *err)
{
	const char *srv = o->fly_resolver && *o->fly_resolver ? o->fly_resolver
	                                                      : "[fdaa::3]:53";
	const char *self = getenv("FLY_MACHINE_ID");
	struct fly_txt txt;
	char name[300];
	int rc, n = 0;

	memset(s, 0, sizeof(*s));
	memset(&txt, 0, sizeof(txt));
	if ((txt.buf = a_malloc(FLY_TXT_MAX)) == NULL)
		return err_oom(err, "fly: DNS answer");
	txt.buf[0] = '\0';
	snprintf(name, sizeof(name), "all.vms.%s.internal", app);
	rc = dns_query(
	    srv, name, DNS_T_TXT, fly_dns_timeout(o), fly_txt_cb, &txt, err);
	if (rc == 0 && txt.full)
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "dns: TXT %s from %s: "
		    "more than %d bytes of machines",
		    name, srv, FLY_TXT_MAX);
	if (rc == 0) {
		switch (fly_vms_parse(txt.buf, self, s)) {
		case -1:
			rc = err_set(err, EXIT_AGENT_DISCOVERY,
			    "dns: TXT %s "
			    "from %s: not a list of \"<machine id> <region>\" "
			    "entries",
			    name, srv);
			break;
		case -2:
			rc = err_oom(err, "fly: DNS machine list");
			break;
		}
	}
	a_free(txt.buf);
	if (rc == 0) {
		snprintf(
		    name, sizeof(name), "%s.process.%s.internal", group, app);
		rc = dns_query(srv, name, DNS_T_AAAA, fly_dns_timeout(o),
		    fly_aaaa_cb, &n, err);
		s->group_n = n;
	}
	if (rc != 0)
		fly_snap_release(s);
	else
		log_debug("fly: DNS: %zu other machines in app %s, %d started "
		          "in group %s%s",
		    s->nids, app, s->group_n, group,
		    self && !s->self_listed ? " (this machine not listed)"
		                            : "");
	return rc;
}

/* Whether a has an id that b lacks (both sorted, unique). */
static bool
fly_snap_more(const struct fly_snap *a, const struct fly_snap *b)
{
	size_t i = 0, j = 0;

	while (i < a->nids) {
		if (j == b->nids || a->ids[i] < b->ids[j])
			return true;
		if (a->ids[i] == b->ids[j])
			i++;
		j++;
	}
	return false;
}

static void
fly_base_set(struct fly_snap *s)
{
	fly_snap_release(&fly_base_snap);
	fly_base_snap = *s;
	memset(s, 0, sizeof(*s));
	fly_have_base = true;
}

/*
 * The random delay before the first list of a process (SPEC 10): a fleet
 * booting at once must stay near the per-app rate (1 list/s, burst 3).
 * serve and init wait uniformly in [0, min(--fly-boot-spread, 1 s per
 * machine of all.vms beyond 3)] (the full bound when DNS did not tell);
 * the one-off commands (decide, check) at most 250 ms.
 * PYLON_AGENT_FLY_JITTER_MS, when set, is the bound of every command
 * (tests set 0).
 */
static void
fly_spread(const struct options *o, const struct fly_snap *s, bool have)
{
	static bool done;
	const char *env = getenv("PYLON_AGENT_FLY_JITTER_MS");
	long max = FLY_DEFAULT_JITTER_MS, v;
	char *end;

	if (done)
		return;
	done = true;
	if (env != NULL && *env != '\0') {
		v = strtol(env, &end, 10);
		if (*end == '\0' && v >= 0 && v <= 600000)
			max = v;
	} else if (o->command == CMD_SERVE || o->command == CMD_INIT) {
		long all = have ? (long)s->nids + 1 : 0; /* + this one */

		max = o->fly_boot_spread_ms;
		if (have && all <= 3)
			max = 0;
		else if (have && (all - 3) * 1000 < max)
			max = (all - 3) * 1000;
	}
	if (max > 0) {
		v = (long)(random_unit() * (double)max);
		log_debug("fly: waiting %ld ms before listing machines (bound "
		          "%ld ms)",
		    v, max);
		sleep_ms(v, NULL);
	}
}

static int
fly_discover(const struct options *o, struct topology *t, struct agent_err *err)
{
	const char *app = getenv("FLY_APP_NAME");
	const char *self = getenv("FLY_MACHINE_ID");
	const char *rel = getenv("RELEASE_COMMAND");
	const char *pg = getenv("FLY_PROCESS_GROUP");
	const char *group =
	    o->fly_group && *o->fly_group ? o->fly_group : "app";
	struct http_request rq;
	struct http_response rs;
	struct fly_snap snap;
	struct agent_err derr;
	char base[512], url[768], auth[4096], what[800];
	bool have_token, serving, have_snap = false;
	bool boot = o->command == CMD_SERVE || o->command == CMD_INIT;
	int rc;

	memset(&rs, 0, sizeof(rs));
	memset(&snap, 0, sizeof(snap));
	if (!fly_name_ok(app))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "fly: FLY_APP_NAME is "
		    "%s; the fly platform needs the app name Fly sets in "
		    "every machine",
		    app == NULL || *app == '\0' ? "not set"
		                                : "not a valid app name");
	if (self != NULL && *self == '\0')
		self = NULL;
	snprintf(t->platform, sizeof(t->platform), "fly");
	snprintf(t->instance, sizeof(t->instance), "%s", self ? self : "");
	if ((rc = fly_base(o, base, sizeof(base), err)) != 0)
		return rc;
	if ((rc = fly_token(auth, sizeof(auth), &have_token, err)) != 0)
		return rc;
	/* Never summary=true: it drops config.metadata (the group). */
	snprintf(url, sizeof(url), "%s/v1/apps/%s/machines", base, app);
	snprintf(what, sizeof(what), "GET %s", url);

	memset(&rq, 0, sizeof(rq));
	rq.url = url;
	rq.authorization = have_token ? auth : NULL;
	fly_request_defaults(o, &rq);
	/* serve's DNS baseline, read before the list (a change in between
	 * shows at the next resync), and the boot spread's bound. */
	if (boot && !fly_dns_off(o) &&
	    (o->command == CMD_SERVE ||
	        getenv("PYLON_AGENT_FLY_JITTER_MS") == NULL)) {
		err_clear(&derr);
		if ((rc = fly_dns_read(o, app, group, &snap, &derr)) == 0)
			have_snap = true;
		else if (rc == EXIT_AGENT_CONFIG) {
			*err = derr;
			explicit_bzero(auth, sizeof(auth));
			return rc;
		} else if (o->command == CMD_SERVE)
			log_warnx("fly: %s; serve's first resync takes its DNS "
			          "baseline",
			    derr.msg);
	}
	fly_spread(o, &snap, have_snap);
	rc = http_do(&rq, &rs, err);
	explicit_bzero(auth, sizeof(auth));
	t->api_requests += rs.attempts;
	if (rc) {
		err_prefix(err, "fly: listing machines");
		goto out;
	}
	if (rs.status != 200) {
		rc = fly_status_error(what, &rs, app, have_token, err);
		goto out;
	}
	/* A release_command, console or test machine is not a Pylon peer:
	 * it counts the group it will deploy, not itself. */
	serving = (rel == NULL || strcmp(rel, "1") != 0) &&
	    (pg == NULL || strncmp(pg, "fly_app_", 8) != 0);
	rc = fly_count(rs.body, rs.len, app, group, self, serving, t, err);
	if (rc == 0 && !serving)
		fly_cat(t->base_src, sizeof(t->base_src),
		    ", seen from a %s "
		    "machine",
		    rel != NULL && strcmp(rel, "1") == 0 ? "release_command"
		                                         : "non-app");
	/* serve resyncs from the DNS against this list's snapshot. */
	if (rc == 0 && o->command == CMD_SERVE && !fly_dns_off(o)) {
		snprintf(t->chain, sizeof(t->chain), "dns");
		if (have_snap)
			fly_base_set(&snap);
		else
			fly_have_base = false;
	}
out:
	fly_snap_release(&snap);
	http_response_release(&rs);
	return rc;
}

/*
 * serve's resync (SPEC 10: no Machines API call in steady state): reads
 * the DNS and asks for a full discovery (one list) only when what it
 * shows could flip the mode since the last list:
 *   noop now:  a machine id in all.vms the last list did not see, or
 *              2+ started machines in the group, more than then;
 *   redis now: at most 1 started machine in the group and an id gone
 *              from all.vms (stopped machines stay in all.vms and are
 *              counted by the list: an autostop alone flips nothing).
 * A DNS failure is a discovery error: the last decision stays.
 */
static int
fly_resync(const struct options *o, struct topology *t, struct agent_err *err)
{
	const char *app = getenv("FLY_APP_NAME");
	const char *group =
	    o->fly_group && *o->fly_group ? o->fly_group : "app";
	struct fly_snap s;
	bool redis, gained, lost, relist;
	int rc, peers;

	if (fly_dns_off(o))
		return PLATFORM_RESYNC_FULL;
	if (!fly_name_ok(app))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "fly: FLY_APP_NAME is "
		    "not a valid app name");
	if ((rc = fly_dns_read(o, app, group, &s, err)) != 0) {
		err_prefix(err,
		    "fly: resync from the internal DNS (the last "
		    "decision stays; --fly-resolver)");
		return rc;
	}
	peers = t->base > o->min_peers ? t->base : o->min_peers;
	redis = peers > 1;
	if (!fly_have_base) {
		/* The boot read failed: this one is the baseline. */
		relist = !redis && s.group_n >= 2;
		gained = lost = false;
	} else {
		gained = fly_snap_more(&s, &fly_base_snap);
		lost = fly_snap_more(&fly_base_snap, &s);
		relist = redis ? s.group_n <= 1 && lost
		               : gained ||
		        (s.group_n >= 2 && s.group_n > fly_base_snap.group_n);
	}
	if (relist) {
		/* Not an error: the reason flow_resync logs for the list. */
		snprintf(err->msg, sizeof(err->msg),
		    "DNS shows %zu other "
		    "machine%s in app %s (%s), %d "
		    "started in group %s: the mode may flip, listing the "
		    "machines",
		    s.nids, s.nids == 1 ? "" : "s", app,
		    gained     ? "new ones"
		        : lost ? "some gone"
		               : "no baseline",
		    s.group_n, group);
		log_info("fly: %s", err->msg);
		fly_snap_release(&s);
		return PLATFORM_RESYNC_FULL;
	}
	if (!fly_have_base || gained || lost ||
	    s.group_n != fly_base_snap.group_n)
		log_debug("fly: DNS changed (%zu other machines, %d started in "
		          "group %s); the mode cannot flip: no list",
		    s.nids, s.group_n, group);
	if (!fly_have_base)
		fly_base_set(&s);
	fly_snap_release(&s);
	return 0;
}

static int
fly_report(const struct options *o, const struct decision *d,
    enum report_kind kind, const char *message, struct agent_err *err)
{
	const char *app = getenv("FLY_APP_NAME");
	const char *self = getenv("FLY_MACHINE_ID");
	const char *value;
	struct http_request rq;
	struct http_response rs;
	char base[512], url[900], auth[4096], body[64], what[960];
	bool have_token;
	int rc;

	(void)message;
	if ((o->report & REPORT_METADATA) == 0)
		return 0;
	memset(&rs, 0, sizeof(rs));
	if (!fly_name_ok(app) || !fly_name_ok(self))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "fly: --report metadata "
		    "needs FLY_APP_NAME and FLY_MACHINE_ID");
	switch (kind) {
	case REPORT_KIND_READY:
		value = d->mode == MODE_REDIS ? "redis" : "noop";
		break;
	case REPORT_KIND_UNAVAILABLE:
		value = "unavailable";
		break;
	case REPORT_KIND_DEAF:
		value = "deaf";
		break;
	case REPORT_KIND_DRIFT:
	default:
		value = "drift";
		break;
	}
	if ((rc = fly_base(o, base, sizeof(base), err)) != 0)
		return rc;
	if ((rc = fly_token(auth, sizeof(auth), &have_token, err)) != 0)
		return rc;
	snprintf(url, sizeof(url),
	    "%s/v1/apps/%s/machines/%s/metadata/"
	    "pylon_cluster_bus",
	    base, app, self);
	snprintf(what, sizeof(what), "POST %s", url);
	snprintf(body, sizeof(body), "{\"value\":\"%s\"}", value);

	memset(&rq, 0, sizeof(rq));
	rq.method = "POST";
	rq.url = url;
	rq.authorization = have_token ? auth : NULL;
	rq.content_type = "application/json";
	rq.body = body;
	fly_request_defaults(o, &rq);
	rc = http_do(&rq, &rs, err);
	explicit_bzero(auth, sizeof(auth));
	if (rc) {
		err_prefix(err, "fly: reporting machine metadata");
		goto out;
	}
	if (rs.status < 200 || rs.status > 299) {
		rc = fly_status_error(what, &rs, app, have_token, err);
		goto out;
	}
	log_debug("fly: machine metadata pylon_cluster_bus=%s", value);
out:
	http_response_release(&rs);
	return rc;
}

/* Only the agent uses the token: Pylon, which runs the app's own code and
 * its npm dependencies, never gets it (issue 18). */
static const char *const fly_secret_env[] = {"FLY_API_TOKEN", NULL};

const struct platform platform_fly = {
    .name = "fly",
    .detect = fly_detect,
    .discover = fly_discover,
    .report = fly_report,
    .resync = fly_resync,
    .resolve = fly_resolve,
    .identity = fly_identity,
    .identity_json = fly_identity_json,
    .secret_env = fly_secret_env,
};
