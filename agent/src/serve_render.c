/*
 * serve_render.c - serve's pure pieces: the snapshot predicates behind
 * /livez /startupz /readyz, the /status JSON, the /metrics text and the
 * --listen parser.  No I/O, no locks: the unit tests drive them with
 * hand-made snapshots.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include "bus.h"
#include "httpd.h"
#include "proxy.h"
#include "serve.h"
#include "serve_int.h"

#ifndef AGENT_GIT_REV
#define AGENT_GIT_REV "unknown"
#endif

const double serve_hist_bounds[SERVE_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

/* ---- pure pieces: snapshot predicates and renderers ------------------- */

void
serve_snap_init(struct serve_snap *s)
{
	memset(s, 0, sizeof(*s));
	s->start_mode = MODE_AUTO;
	s->latency_ms = -1;
	s->numsub = -1;
	s->own_subscribers = -1;
	snprintf(s->phase, sizeof(s->phase), "discovering the topology");
}

int
serve_liveness(const struct serve_snap *s, int64_t now, char *reason, size_t n)
{
	if (s->stale_ms > 0 && now - s->heartbeat_ms > s->stale_ms) {
		snprintf(reason, n, "check loop stuck for %" PRId64 " ms",
		    now - s->heartbeat_ms);
		return 503;
	}
	snprintf(reason, n, "ok");
	return 200;
}

int
serve_pylon_liveness(
    const struct serve_snap *s, int64_t now, char *reason, size_t n)
{
	if (s->pylon_livez_fail_until > now) {
		snprintf(reason, n,
		    "deaf Pylon: no subscription from %s on "
		    "\"%s\"; restart Pylon's container",
		    s->own_ip, s->dec.channel);
		return 503;
	}
	snprintf(reason, n, "ok%s",
	    s->own_state == OWN_OK            ? ": subscribed"
	        : s->own_state == OWN_MISSING ? ": no subscription yet (grace)"
	                                      : "");
	return 200;
}

int
serve_startup(const struct serve_snap *s, char *reason, size_t n)
{
	if (s->started) {
		snprintf(reason, n, "ok");
		return 200;
	}
	if (s->bus_error[0] != '\0')
		snprintf(reason, n, "starting: %s: %s", s->phase, s->bus_error);
	else
		snprintf(reason, n, "starting: %s", s->phase);
	return 503;
}

bool
serve_bus_ready(const struct serve_snap *s)
{
	if (!s->started)
		return false;
	if (s->start_mode == MODE_REDIS)
		return s->proven && s->bus_ok;
	return true;
}

int
serve_readiness(const struct serve_snap *s, char *reason, size_t n)
{
	if (s->shutting_down) {
		snprintf(reason, n, "shutting down");
		return 503;
	}
	if (!s->started)
		return serve_startup(s, reason, n);
	if (!serve_bus_ready(s) &&
	    (s->start_mode != MODE_REDIS || !s->proven ||
	        s->unready_on_bus_loss)) {
		snprintf(reason, n, "bus check failed %d times in a row: %s",
		    s->consecutive_failures,
		    s->bus_error[0] != '\0' ? s->bus_error : "unknown error");
		return 503;
	}
	if (s->drift && s->unready_on_drift) {
		snprintf(
		    reason, n, "drift (--on-drift unready): %s", s->drift_msg);
		return 503;
	}
	snprintf(reason, n, "ok");
	return 200;
}

void
serve_hist_observe(struct serve_snap *s, double seconds)
{
	int i;

	if (!(seconds >= 0))
		seconds = 0;
	for (i = 0; i < SERVE_HIST_BUCKETS; i++)
		if (seconds <= serve_hist_bounds[i])
			break;
	if (i < SERVE_HIST_BUCKETS)
		s->hist_bucket[i]++;
	s->hist_count++;
	s->hist_sum += seconds;
}

enum numsub_state
serve_numsub_judge(long numsub, int peers, int expected, int under)
{
	if (numsub < 0)
		return NUMSUB_UNKNOWN;
	if (peers < 1)
		peers = 1;
	if (expected < 1)
		expected = 1;
	if (numsub > peers)
		return NUMSUB_OVER;
	if (numsub < expected && under >= NUMSUB_UNDER_READINGS)
		return NUMSUB_UNDER;
	return NUMSUB_OK;
}

static const char *
mode_str(enum bus_mode m)
{
	switch (m) {
	case MODE_REDIS:
		return "redis";
	case MODE_NOOP:
		return "noop";
	default:
		return NULL;
	}
}

char *
serve_status_json(const struct serve_snap *s)
{
	struct decision_json v;
	cJSON *o, *r;
	char *txt = NULL, *out = NULL, safe[sizeof(s->bus_error)];
	bool ok = true;

	if ((o = cJSON_CreateObject()) == NULL)
		return NULL;
	memset(&v, 0, sizeof(v));
	v.d = s->decided ? &s->dec : NULL;
	v.reason = s->phase;
	v.mode = s->start_mode;
	v.redis_url = s->redis_url;
	v.proven = s->proven && s->start_mode == MODE_REDIS;
	v.latency_ms = s->start_mode == MODE_REDIS ? s->latency_ms : -1;
	/* The bus layer never puts the password in a message; redact()
	 * is the belt to those braces. */
	redact(s->bus_error, safe, sizeof(safe));
	v.error = safe;
	v.drift = s->drift;
	if ((r = decision_json_begin(o, &v, &ok)) == NULL)
		goto out;
	ok &=
	    cJSON_AddBoolToObject(r, "healthy",
	        s->start_mode == MODE_REDIS && s->proven && s->bus_ok) != NULL;
	ok &= cJSON_AddNumberToObject(
	          r, "consecutive_failures", s->consecutive_failures) != NULL;
	ok &= cJSON_AddNumberToObject(r, "check_failures_total",
	          (double)s->check_failures_total) != NULL;
	if (s->numsub >= 0)
		ok &= cJSON_AddNumberToObject(
		          r, "subscribers", (double)s->numsub) != NULL;
	else
		ok &= cJSON_AddNullToObject(r, "subscribers") != NULL;
	ok &= json_str_or_null(r, "subscribers_state",
	    s->numsub_state == NUMSUB_UNDER      ? "deaf"
	        : s->numsub_state == NUMSUB_OVER ? "shared"
	        : s->numsub_state == NUMSUB_OK   ? "ok"
	                                         : NULL);
	decision_json_end(o, &v, &ok);
	ok &= cJSON_AddBoolToObject(o, "adopted_from_init", s->adopted) != NULL;
	ok &= cJSON_AddStringToObject(o, "version", AGENT_VERSION) != NULL;
	/* issue 20: this pod's own Pylon (after SPEC 6's keys) */
	if ((r = cJSON_AddObjectToObject(o, "own_pylon")) == NULL)
		goto out;
	ok &= json_str_or_null(r, "state",
	    s->own_state == OWN_OK                ? "subscribed"
	        : s->own_state == OWN_MISSING     ? "missing"
	        : s->own_state == OWN_DEAF        ? "deaf"
	        : s->own_state == OWN_UNSUPPORTED ? "unsupported"
	        : s->own_state == OWN_OFF         ? "off"
	                                          : NULL);
	if (s->own_subscribers >= 0)
		ok &= cJSON_AddNumberToObject(
		          r, "subscriptions", s->own_subscribers) != NULL;
	else
		ok &= cJSON_AddNullToObject(r, "subscriptions") != NULL;
	ok &= json_str_or_null(r, "address", s->own_ip[0] ? s->own_ip : NULL);
	ok &= cJSON_AddNumberToObject(r, "deaf_total", (double)s->deaf_total) !=
	    NULL;
	ok &= cJSON_AddNumberToObject(
	          r, "restarts_total", (double)s->pylon_restarts_total) != NULL;
	if (!ok)
		goto out;
	if ((txt = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	out = a_strdup(txt);
out:
	if (txt != NULL)
		cJSON_free(txt);
	cJSON_Delete(o);
	return out;
}

/* A growing text buffer; any failure sticks and makes the result NULL. */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
	bool failed;
};

static void sb_printf(struct sbuf *, const char *, ...) AGENT_PRINTF(2, 3);

static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	size_t need;
	char *np;

	if (b->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(
	    b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return;
	}
	if (b->p != NULL && b->len + (size_t)n < b->cap) {
		b->len += (size_t)n;
		return;
	}
	need = b->len + (size_t)n + 1;
	if (need < b->cap * 2)
		need = b->cap * 2;
	if (need < 4096)
		need = 4096;
	if ((np = a_realloc(b->p, need)) == NULL) {
		b->failed = true;
		return;
	}
	b->p = np;
	b->cap = need;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || b->len + (size_t)n >= b->cap) {
		b->failed = true;
		return;
	}
	b->len += (size_t)n;
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static void
sb_label(struct sbuf *b, const char *v)
{
	char tmp[256];
	size_t i, j = 0;

	for (i = 0; v[i] != '\0' && j < sizeof(tmp) - 3; i++) {
		if (v[i] == '\\' || v[i] == '"') {
			tmp[j++] = '\\';
			tmp[j++] = v[i];
		} else if (v[i] == '\n') {
			tmp[j++] = '\\';
			tmp[j++] = 'n';
		} else
			tmp[j++] = v[i];
	}
	tmp[j] = '\0';
	sb_printf(b, "%s", tmp);
}

static void
sb_family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* What this agent costs the services it talks to (SPEC 10). */
static void
sb_costs(struct sbuf *b)
{
	long codes[16];
	uint64_t counts[16], dok, derr;
	int i, n = stats_api_get(codes, counts, 16);

	sb_family(b, "pylon_agent_redis_commands_total", "counter",
	    "Redis commands this process sent (proof, PING, PUBSUB NUMSUB, "
	    "AUTH/SELECT on connects).");
	sb_printf(b, "pylon_agent_redis_commands_total %" PRIu64 "\n",
	    stats_redis_commands());
	sb_family(b, "pylon_agent_api_requests_total", "counter",
	    "Kubernetes / Fly API requests by HTTP status (every attempt; "
	    "code=\"error\": no HTTP answer).");
	for (i = 0; i < n; i++) {
		if (codes[i] == -1)
			sb_printf(b,
			    "pylon_agent_api_requests_total"
			    "{code=\"error\"} %" PRIu64 "\n",
			    counts[i]);
		else if (codes[i] == -2)
			sb_printf(b,
			    "pylon_agent_api_requests_total"
			    "{code=\"other\"} %" PRIu64 "\n",
			    counts[i]);
		else
			sb_printf(b,
			    "pylon_agent_api_requests_total"
			    "{code=\"%ld\"} %" PRIu64 "\n",
			    codes[i], counts[i]);
	}
	stats_dns_queries(&dok, &derr);
	sb_family(b, "pylon_agent_dns_queries_total", "counter",
	    "Questions to Fly's internal DNS (--fly-resolver) by result "
	    "(serve's resync on Fly).");
	sb_printf(b,
	    "pylon_agent_dns_queries_total{result=\"ok\"} %" PRIu64
	    "\npylon_agent_dns_queries_total{result=\"error\"} %" PRIu64 "\n",
	    dok, derr);
}

/* The bus: mode, peers, readiness and its checks. */
static void
sb_bus_metrics(struct sbuf *b, const struct serve_snap *s)
{
	uint64_t cum = 0;
	int i;
	const char *m = s->decided ? mode_str(s->start_mode) : NULL;

	sb_family(b, "pylon_agent_bus_mode", "gauge",
	    "The bus mode this pod runs with (1 for the active mode).");
	sb_printf(b, "pylon_agent_bus_mode{mode=\"redis\"} %d\n",
	    m != NULL && s->start_mode == MODE_REDIS);
	sb_printf(b, "pylon_agent_bus_mode{mode=\"noop\"} %d\n",
	    m != NULL && s->start_mode == MODE_NOOP);
	sb_family(b, "pylon_agent_peers", "gauge",
	    "Pylon processes that may serve this app at once "
	    "(latest decision).");
	sb_printf(b, "pylon_agent_peers %d\n", s->decided ? s->dec.peers : 0);
	sb_family(b, "pylon_agent_bus_ready", "gauge",
	    "1 when the bus is usable: decided and, in redis mode, proven "
	    "with fewer than 3 consecutive failed checks (/readyz follows "
	    "it only with --on-bus-loss unready).");
	sb_printf(b, "pylon_agent_bus_ready %d\n", serve_bus_ready(s));
	sb_family(b, "pylon_agent_bus_check_seconds", "histogram",
	    "Duration of the steady-state bus checks (PING or PUBSUB "
	    "NUMSUB), reconnects included.");
	for (i = 0; i < SERVE_HIST_BUCKETS; i++) {
		cum += s->hist_bucket[i];
		sb_printf(b,
		    "pylon_agent_bus_check_seconds_bucket{le=\"%g\"} "
		    "%" PRIu64 "\n",
		    serve_hist_bounds[i], cum);
	}
	sb_printf(b,
	    "pylon_agent_bus_check_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
	    s->hist_count);
	sb_printf(b, "pylon_agent_bus_check_seconds_sum %.9g\n", s->hist_sum);
	sb_printf(b, "pylon_agent_bus_check_seconds_count %" PRIu64 "\n",
	    s->hist_count);
	sb_family(b, "pylon_agent_bus_check_failures_total", "counter",
	    "Failed bus checks and reconnect attempts.");
	sb_printf(b, "pylon_agent_bus_check_failures_total %" PRIu64 "\n",
	    s->check_failures_total);
	sb_family(b, "pylon_agent_bus_reconnects_total", "counter",
	    "Successful reconnects of the bus connection after a failure.");
	sb_printf(b, "pylon_agent_bus_reconnects_total %" PRIu64 "\n",
	    s->reconnects_total);
}

/* Who listens on the channel: PUBSUB NUMSUB and this pod's own Pylon. */
static void
sb_listener_metrics(struct sbuf *b, const struct serve_snap *s)
{
	sb_family(b, "pylon_agent_bus_subscribers", "gauge",
	    "PUBSUB NUMSUB of the channel (Pylon processes listening; the "
	    "agent holds no subscription), at most once a minute; absent "
	    "until measured, and in noop mode.");
	if (s->numsub >= 0)
		sb_printf(b, "pylon_agent_bus_subscribers %ld\n", s->numsub);
	sb_family(b, "pylon_agent_bus_deaf", "gauge",
	    "1 when fewer Pylon processes listen on the channel than run "
	    "(PUBSUB NUMSUB, two readings a minute apart).");
	sb_printf(
	    b, "pylon_agent_bus_deaf %d\n", s->numsub_state == NUMSUB_UNDER);
	sb_family(b, "pylon_agent_bus_namespace_shared", "gauge",
	    "1 when more Pylon processes listen on the channel than this "
	    "app has peers (another deploy shares the namespace).");
	sb_printf(b, "pylon_agent_bus_namespace_shared %d\n",
	    s->numsub_state == NUMSUB_OVER);
	sb_family(b, "pylon_agent_pylon_deaf", "gauge",
	    "1 while this pod's own Pylon has no subscription on the channel "
	    "(CLIENT LIST from this pod's address, past --deaf-grace).");
	sb_printf(b, "pylon_agent_pylon_deaf %d\n", s->own_state == OWN_DEAF);
	sb_family(b, "pylon_agent_pylon_restarts_total", "counter",
	    "Heals of a deaf Pylon: restarts of the supervised command, or "
	    "/pylon-livez failure windows for the kubelet.");
	sb_printf(b, "pylon_agent_pylon_restarts_total %" PRIu64 "\n",
	    s->pylon_restarts_total);
}

/* The agent itself: drift, discovery, readiness and its build. */
static void
sb_agent_metrics(struct sbuf *b, const struct serve_snap *s)
{
	sb_family(b, "pylon_agent_drift", "gauge",
	    "1 when a resync would pick another mode than this pod "
	    "started with.");
	sb_printf(b, "pylon_agent_drift %d\n", s->drift);
	sb_family(b, "pylon_agent_discovery_errors_total", "counter",
	    "Failed topology discoveries (the last decision is kept).");
	sb_printf(b, "pylon_agent_discovery_errors_total %" PRIu64 "\n",
	    s->discovery_errors_total);
	sb_family(
	    b, "pylon_agent_ready", "gauge", "1 when /readyz answers 200.");
	{
		char r[8];

		sb_printf(b, "pylon_agent_ready %d\n",
		    serve_readiness(s, r, sizeof(r)) == 200);
	}
	sb_family(b, "pylon_agent_build_info", "gauge",
	    "Build information; the value is always 1.");
	sb_printf(b, "pylon_agent_build_info{version=\"");
	sb_label(b, AGENT_VERSION);
	sb_printf(b, "\",revision=\"");
	sb_label(b, AGENT_GIT_REV);
	sb_printf(b, "\",microhttpd=\"");
	sb_label(b, httpd_version());
	sb_printf(b, "\"} 1\n");
}

char *
serve_metrics_text(const struct serve_snap *s, size_t *len)
{
	struct sbuf b = {NULL, 0, 0, false};

	sb_bus_metrics(&b, s);
	sb_listener_metrics(&b, s);
	sb_costs(&b);
	sb_agent_metrics(&b, s);
	if (b.failed) {
		a_free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

int
serve_listen_parse(const char *s, char *host, size_t hn, char *port, size_t pn,
    struct agent_err *err)
{
	const char *colon, *h, *p;
	size_t hl;
	char *end;
	long v;

	if (s == NULL || s[0] == '\0')
		return err_set(err, EXIT_AGENT_CONFIG,
		    "--listen is empty; "
		    "give host:port, e.g. 0.0.0.0:4320 or [::]:4320");
	if (s[0] == '[') {
		if ((colon = strchr(s, ']')) == NULL || colon[1] != ':')
			goto bad;
		h = s + 1;
		hl = (size_t)(colon - h);
		p = colon + 2;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			goto bad;
		if (memchr(s, ':', (size_t)(colon - s)) != NULL)
			goto bad; /* bare IPv6 needs brackets */
		h = s;
		hl = (size_t)(colon - s);
		p = colon + 1;
	}
	errno = 0;
	v = strtol(p, &end, 10);
	if (p[0] == '\0' || *end != '\0' || errno || v < 1 || v > 65535)
		goto bad;
	if (hl >= hn || strlen(p) >= pn)
		goto bad;
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(port, pn, "%ld", v);
	return 0;
bad:
	return err_set(err, EXIT_AGENT_CONFIG,
	    "--listen \"%s\" is not "
	    "host:port (e.g. 0.0.0.0:4320, [::]:4320, :4320)",
	    s);
}
