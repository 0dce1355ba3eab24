/*
 * serve.c - the long-running sidecar: HTTP endpoints on libmicrohttpd, the
 * loop thread (first decision, proof, steady-state bus checks, topology
 * resync, drift), shutdown, and the probe command.
 *
 * Threads: the main thread owns signals (sigtimedwait) and the supervised
 * child; the loop thread does every network call; libmicrohttpd's thread
 * answers requests from a copy of struct serve_snap taken under the lock.
 * Nothing in a handler waits on Redis or an API.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
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

#ifndef AGENT_GIT_REV
#define AGENT_GIT_REV "unknown"
#endif

#define PROBE_DEFAULT_MS	3000
#define SERVE_MIN_INTERVAL_MS	100
#define SERVE_MIN_RESYNC_MS	1000
#define NUMSUB_GRACE_CHECKS	10

const double serve_hist_bounds[SERVE_HIST_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1.0, 2.5
};

/* ---- pure pieces: snapshot predicates and renderers ------------------- */

void
serve_snap_init(struct serve_snap *s)
{
	memset(s, 0, sizeof(*s));
	s->start_mode = MODE_AUTO;
	s->latency_ms = -1;
	s->numsub = -1;
	snprintf(s->phase, sizeof(s->phase), "discovering the topology");
}

int
serve_liveness(const struct serve_snap *s, int64_t now, char *reason,
    size_t n)
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
	if (!serve_bus_ready(s)) {
		snprintf(reason, n, "bus check failed %d times in a row: %s",
		    s->consecutive_failures, s->bus_error[0] != '\0' ?
		    s->bus_error : "unknown error");
		return 503;
	}
	if (s->drift && s->unready_on_drift) {
		snprintf(reason, n, "drift (--on-drift unready): %s",
		    s->drift_msg);
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
serve_numsub_judge(long numsub, int peers, int good_checks)
{
	long hi;

	if (numsub < 0)
		return NUMSUB_UNKNOWN;
	if (peers < 1)
		peers = 1;
	hi = 2L * peers;
	if (numsub > hi)
		return NUMSUB_OVER;
	if (good_checks >= NUMSUB_GRACE_CHECKS && numsub < 2)
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

/* Adds s as a string, or null when s is NULL or empty. */
static bool
json_str(cJSON *o, const char *k, const char *s)
{
	if (s == NULL || s[0] == '\0')
		return cJSON_AddNullToObject(o, k) != NULL;
	return cJSON_AddStringToObject(o, k, s) != NULL;
}

char *
serve_status_json(const struct serve_snap *s)
{
	cJSON *o, *r;
	char *txt = NULL, *out = NULL, safe[sizeof(s->bus_error)];
	bool ok = true;
	const char *mode = s->decided ? mode_str(s->start_mode) : NULL;

	if ((o = cJSON_CreateObject()) == NULL)
		return NULL;
	ok &= json_str(o, "mode", mode);
	ok &= json_str(o, "reason", s->decided ? s->dec.reason : s->phase);
	ok &= json_str(o, "platform", s->decided ? s->dec.platform : NULL);
	if (s->decided)
		ok &= cJSON_AddNumberToObject(o, "peers", s->dec.peers) != NULL;
	else
		ok &= cJSON_AddNullToObject(o, "peers") != NULL;
	ok &= json_str(o, "namespace", s->decided ? s->dec.namespace : NULL);
	ok &= json_str(o, "channel", s->decided ? s->dec.channel : NULL);
	if ((r = cJSON_AddObjectToObject(o, "redis")) == NULL)
		goto out;
	ok &= json_str(r, "url", s->redis_url);
	ok &= cJSON_AddBoolToObject(r, "proven", s->proven &&
	    s->start_mode == MODE_REDIS) != NULL;
	if (s->latency_ms >= 0 && s->start_mode == MODE_REDIS)
		ok &= cJSON_AddNumberToObject(r, "latency_ms",
		    round(s->latency_ms * 1000) / 1000) != NULL;
	else
		ok &= cJSON_AddNullToObject(r, "latency_ms") != NULL;
	/* The bus layer never puts the password in a message; redact()
	 * is the belt to those braces. */
	redact(s->bus_error, safe, sizeof(safe));
	ok &= json_str(r, "error", safe);
	ok &= json_str(o, "instance", s->decided ? s->dec.instance : NULL);
	ok &= cJSON_AddBoolToObject(o, "drift", s->drift) != NULL;
	ok &= cJSON_AddStringToObject(o, "version", AGENT_VERSION) != NULL;
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
	char	*p;
	size_t	 len;
	size_t	 cap;
	bool	 failed;
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
	n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0,
	    fmt, ap);
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
sb_family(struct sbuf *b, const char *name, const char *type,
    const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *
serve_metrics_text(const struct serve_snap *s, size_t *len)
{
	struct sbuf b = { NULL, 0, 0, false };
	uint64_t cum = 0;
	int i;
	const char *m = s->decided ? mode_str(s->start_mode) : NULL;

	sb_family(&b, "pylon_agent_bus_mode", "gauge",
	    "The bus mode this pod runs with (1 for the active mode).");
	sb_printf(&b, "pylon_agent_bus_mode{mode=\"redis\"} %d\n",
	    m != NULL && s->start_mode == MODE_REDIS);
	sb_printf(&b, "pylon_agent_bus_mode{mode=\"noop\"} %d\n",
	    m != NULL && s->start_mode == MODE_NOOP);
	sb_family(&b, "pylon_agent_peers", "gauge",
	    "Pylon processes that may serve this app at once "
	    "(latest decision).");
	sb_printf(&b, "pylon_agent_peers %d\n", s->decided ? s->dec.peers : 0);
	sb_family(&b, "pylon_agent_bus_ready", "gauge",
	    "1 when the bus is usable: decided and, in redis mode, proven "
	    "with fewer than 3 consecutive failed checks.");
	sb_printf(&b, "pylon_agent_bus_ready %d\n", serve_bus_ready(s));
	sb_family(&b, "pylon_agent_bus_check_seconds", "histogram",
	    "Duration of the steady-state bus checks (PING, subscription, "
	    "PUBSUB NUMSUB), reconnects included.");
	for (i = 0; i < SERVE_HIST_BUCKETS; i++) {
		cum += s->hist_bucket[i];
		sb_printf(&b, "pylon_agent_bus_check_seconds_bucket{le=\"%g\"} "
		    "%" PRIu64 "\n", serve_hist_bounds[i], cum);
	}
	sb_printf(&b, "pylon_agent_bus_check_seconds_bucket{le=\"+Inf\"} %"
	    PRIu64 "\n", s->hist_count);
	sb_printf(&b, "pylon_agent_bus_check_seconds_sum %.9g\n", s->hist_sum);
	sb_printf(&b, "pylon_agent_bus_check_seconds_count %" PRIu64 "\n",
	    s->hist_count);
	sb_family(&b, "pylon_agent_bus_check_failures_total", "counter",
	    "Failed bus checks and reconnect attempts.");
	sb_printf(&b, "pylon_agent_bus_check_failures_total %" PRIu64 "\n",
	    s->check_failures_total);
	sb_family(&b, "pylon_agent_bus_reconnects_total", "counter",
	    "Successful reconnects of the held subscription after a failure.");
	sb_printf(&b, "pylon_agent_bus_reconnects_total %" PRIu64 "\n",
	    s->reconnects_total);
	sb_family(&b, "pylon_agent_bus_subscribers", "gauge",
	    "PUBSUB NUMSUB of the channel at the last good check "
	    "(absent until measured, and in noop mode).");
	if (s->numsub >= 0)
		sb_printf(&b, "pylon_agent_bus_subscribers %ld\n", s->numsub);
	sb_family(&b, "pylon_agent_drift", "gauge",
	    "1 when a resync would pick another mode than this pod "
	    "started with.");
	sb_printf(&b, "pylon_agent_drift %d\n", s->drift);
	sb_family(&b, "pylon_agent_discovery_errors_total", "counter",
	    "Failed topology discoveries (the last decision is kept).");
	sb_printf(&b, "pylon_agent_discovery_errors_total %" PRIu64 "\n",
	    s->discovery_errors_total);
	sb_family(&b, "pylon_agent_ready", "gauge",
	    "1 when /readyz answers 200.");
	{
		char r[8];

		sb_printf(&b, "pylon_agent_ready %d\n",
		    serve_readiness(s, r, sizeof(r)) == 200);
	}
	sb_family(&b, "pylon_agent_build_info", "gauge",
	    "Build information; the value is always 1.");
	sb_printf(&b, "pylon_agent_build_info{version=\"");
	sb_label(&b, AGENT_VERSION);
	sb_printf(&b, "\",revision=\"");
	sb_label(&b, AGENT_GIT_REV);
	sb_printf(&b, "\",microhttpd=\"");
	sb_label(&b, httpd_version());
	sb_printf(&b, "\"} 1\n");
	if (b.failed) {
		a_free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

int
serve_listen_parse(const char *s, char *host, size_t hn, char *port,
    size_t pn, struct agent_err *err)
{
	const char *colon, *h, *p;
	size_t hl;
	char *end;
	long v;

	if (s == NULL || s[0] == '\0')
		return err_set(err, EXIT_AGENT_CONFIG, "--listen is empty; "
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
			goto bad;	/* bare IPv6 needs brackets */
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
	return err_set(err, EXIT_AGENT_CONFIG, "--listen \"%s\" is not "
	    "host:port (e.g. 0.0.0.0:4320, [::]:4320, :4320)", s);
}

/* ---- serve: state, HTTP ---------------------------------------------- */

struct serve_ctx {
	struct options		*opts;
	struct agent_state	 st;
	volatile int		 stop;
	bool			 supervising;
	/* loop -> main, under st.mu */
	bool			 child_start;
	bool			 loop_done;
	bool			 exit_req;
	int			 exit_code;
	struct agent_err	 exit_err;
	struct proxy		*proxy;		/* --bus-proxy, or NULL */
};

static void
snap_take(struct serve_ctx *c, struct serve_snap *out)
{
	pthread_mutex_lock(&c->st.mu);
	*out = c->st.s;
	pthread_mutex_unlock(&c->st.mu);
}

static void
heartbeat(struct serve_ctx *c)
{
	pthread_mutex_lock(&c->st.mu);
	c->st.s.heartbeat_ms = now_ms();
	pthread_mutex_unlock(&c->st.mu);
}

static enum MHD_Result
respond(struct MHD_Connection *conn, unsigned code, const char *ctype,
    const char *body, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body,
	    MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
respond_line(struct MHD_Connection *conn, int code, const char *line)
{
	char body[1100];
	int n;

	n = snprintf(body, sizeof(body), "%s\n", line);
	if (n < 0 || (size_t)n >= sizeof(body)) {
		body[sizeof(body) - 2] = '\n';
		n = (int)sizeof(body) - 1;
	}
	return respond(conn, (unsigned)code, "text/plain; charset=utf-8",
	    body, (size_t)n);
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_len, void **con_cls)
{
	struct serve_ctx *c = cls;
	struct serve_snap s;
	char reason[1024], *body;
	size_t len;
	enum MHD_Result ret;
	int code;

	(void)version;
	(void)upload;
	(void)con_cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		*upload_len = 0;
		return respond_line(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method not allowed: use GET");
	}
	if (strcmp(url, "/livez") == 0) {
		snap_take(c, &s);
		code = serve_liveness(&s, now_ms(), reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/startupz") == 0) {
		snap_take(c, &s);
		code = serve_startup(&s, reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/readyz") == 0) {
		snap_take(c, &s);
		code = serve_readiness(&s, reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/status") == 0) {
		snap_take(c, &s);
		if ((body = serve_status_json(&s)) == NULL)
			return respond_line(conn, 500, "out of memory");
		ret = respond(conn, MHD_HTTP_OK, "application/json", body,
		    strlen(body));
		a_free(body);
		return ret;
	}
	if (strcmp(url, "/metrics") == 0) {
		snap_take(c, &s);
		if ((body = serve_metrics_text(&s, &len)) == NULL)
			return respond_line(conn, 500, "out of memory");
		if (c->proxy != NULL && (body = proxy_metrics_append(c->proxy,
		    body, &len)) == NULL)
			return respond_line(conn, 500, "out of memory");
		ret = respond(conn, MHD_HTTP_OK,
		    "text/plain; version=0.0.4; charset=utf-8", body, len);
		a_free(body);
		return ret;
	}
	return respond_line(conn, MHD_HTTP_NOT_FOUND, "not found: the "
	    "endpoints are /livez /startupz /readyz /status /metrics");
}

static int
listen_socket(const char *spec, struct agent_err *err)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[8];
	int fd = -1, one = 1, zero = 0, rc, e = 0;

	if ((rc = serve_listen_parse(spec, host, sizeof(host), port,
	    sizeof(port), err)) != 0)
		return -1;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] != '\0' ? host : "::", port, &hints, &res);
	if (rc != 0 && host[0] == '\0')
		rc = getaddrinfo(NULL, port, &hints, &res);
	if (rc != 0) {
		err_set(err, EXIT_AGENT_CONFIG, "--listen %s: cannot resolve "
		    "\"%s\": %s", spec, host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* ":port" and "[::]:port" take IPv4 too. */
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero,
			    sizeof(zero));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, HTTPD_BACKLOG) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		err_set(err, EXIT_AGENT_CONFIG, "--listen %s: cannot listen: "
		    "%s; choose a free address with --listen", spec,
		    strerror(e));
	return fd;
}

/* ---- the loop thread ------------------------------------------------- */

static void
loop_exit(struct serve_ctx *c, int code, const struct agent_err *err)
{
	pthread_mutex_lock(&c->st.mu);
	c->exit_req = true;
	c->exit_code = code;
	if (err != NULL)
		c->exit_err = *err;
	pthread_mutex_unlock(&c->st.mu);
}

static void
set_phase(struct serve_ctx *c, const char *phase, const char *error)
{
	pthread_mutex_lock(&c->st.mu);
	snprintf(c->st.s.phase, sizeof(c->st.s.phase), "%s", phase);
	if (error != NULL)
		redact(error, c->st.s.bus_error, sizeof(c->st.s.bus_error));
	c->st.s.heartbeat_ms = now_ms();
	pthread_mutex_unlock(&c->st.mu);
}

/* Sleeps ms in slices, keeping the heartbeat fresh; false when stopping. */
static bool
nap(struct serve_ctx *c, long ms)
{
	int64_t end = now_ms() + ms, left;

	while (!c->stop && (left = end - now_ms()) > 0) {
		sleep_ms(left > 200 ? 200 : left, &c->stop);
		heartbeat(c);
	}
	return !c->stop;
}

static long
backoff_ms(long base, int n, long cap)
{
	long d = base;

	while (n-- > 0 && d < cap)
		d *= 2;
	if (d > cap)
		d = cap;
	/* Jitter: 50-100% of the step so pods do not march in lockstep. */
	return (long)(d * (0.5 + 0.5 * random_unit()));
}

/* The first decision; discovery trouble is retried, config is fatal. */
static int
first_decision(struct serve_ctx *c, struct topology *topo,
    struct decision *dec, struct agent_err *err)
{
	const struct options *o = c->opts;
	int rc, n = 0;

	for (;;) {
		memset(topo, 0, sizeof(*topo));
		memset(dec, 0, sizeof(*dec));
		err_clear(err);
		heartbeat(c);
		rc = flow_decide(o, topo, dec, err);
		if (rc == 0) {
			if (dec->discovery_failed) {
				pthread_mutex_lock(&c->st.mu);
				c->st.s.discovery_errors_total++;
				pthread_mutex_unlock(&c->st.mu);
			}
			return 0;
		}
		if (rc != EXIT_AGENT_DISCOVERY)
			return rc;
		pthread_mutex_lock(&c->st.mu);
		c->st.s.discovery_errors_total++;
		pthread_mutex_unlock(&c->st.mu);
		log_warnx("serve: discovery failed (retrying): %s", err->msg);
		set_phase(c, "discovering the topology", err->msg);
		if (!nap(c, backoff_ms(1000, n++, 30000)))
			return -1;
	}
}

/* Native-sidecar fallback: behave like init (SPEC 6). */
static int
act_as_init(struct serve_ctx *c, const struct decision *dec,
    struct agent_err *err)
{
	const struct options *o = c->opts;
	struct bus_result res;
	int rc;

	if (c->proxy != NULL)
		return err_set(err, EXIT_AGENT_CONFIG, "serve: --bus-proxy "
		    "needs the agent running beside Pylon for the pod's life, "
		    "but this cluster ran it as a plain init container (no "
		    "SidecarContainers); use a cluster with native sidecars, "
		    "or the supervisor shape (serve -- pylon start)");
	log_info("serve: this container is a plain init container (the "
	    "cluster has no SidecarContainers); acting as init: writing %s "
	    "and exiting", o->env_file);
	memset(&res, 0, sizeof(res));
	res.latency_ms = -1;
	if ((rc = flow_prove(o, dec, &res, err)) != 0)
		return rc;
	if ((rc = envfile_write(o->env_file, dec, dec->mode == MODE_REDIS ?
	    o->redis_url : NULL, err)) != 0)
		return rc;
	report_log_decision(dec, dec->mode == MODE_REDIS ? res.latency_ms : -1);
	report_platform(o, dec, REPORT_KIND_READY, "bus proven; env file "
	    "written (init fallback)");
	return 0;
}

/*
 * Kubernetes shapes with an init container: Pylon already runs with the
 * env file `init` wrote in this pod, so that file, not our own (slightly
 * later) decision, is the mode this pod started with.  A difference is
 * drift from the start.  Returns true when the file's mode was adopted.
 */
static bool
adopt_env_file(struct serve_ctx *c, struct decision *dec)
{
	const struct options *o = c->opts;
	struct envfile ef;
	struct agent_err err;
	enum bus_mode fm;

	if (c->supervising || o->env_file == NULL ||
	    access(o->env_file, F_OK) != 0)
		return false;
	memset(&ef, 0, sizeof(ef));
	if (envfile_read(o->env_file, &ef, &err) != 0) {
		log_warnx("serve: ignoring %s: %s", o->env_file, err.msg);
		return false;
	}
	fm = ef.bus != NULL ? MODE_REDIS : MODE_NOOP;
	envfile_release(&ef);
	if (fm == dec->mode)
		return false;
	if (fm == MODE_REDIS && (o->redis_url == NULL || !o->redis_url[0])) {
		log_warnx("serve: %s says redis but no Redis URL is configured "
		    "here; checking the decision's mode instead", o->env_file);
		return false;
	}
	log_warnx("serve: Pylon in this pod runs %s (%s) while the topology "
	    "now wants %s", mode_name(fm), o->env_file, mode_name(dec->mode));
	dec->mode = fm;
	return true;
}

/* The first proof: publish one envelope, retrying until it works. */
static int
first_proof(struct serve_ctx *c, const struct decision *dec,
    struct bus_session **sess, struct bus_result *res, struct agent_err *err)
{
	const struct options *o = c->opts;
	int rc, n = 0;

	set_phase(c, "proving the bus", NULL);
	for (;;) {
		memset(res, 0, sizeof(*res));
		err_clear(err);
		heartbeat(c);
		/* Bounded attempts so /startupz and the log show the cause
		 * while it lasts and a shutdown is not held up. */
		rc = bus_session_open(sess, o->redis_url, o->redis_ca_file,
		    dec->channel, o->timeout_ms < 10000 ? o->timeout_ms :
		    10000, true, res, err);
		if (rc == 0)
			return 0;
		*sess = NULL;
		if (rc == EXIT_AGENT_CONFIG)
			return rc;
		log_warnx("serve: bus not proven yet (retrying): %s", err->msg);
		set_phase(c, "proving the bus", err->msg);
		if (!nap(c, backoff_ms(1000, n++, 10000)))
			return -1;
	}
}

static void
numsub_note(struct serve_ctx *c, long numsub, int peers, int good)
{
	enum numsub_state ns = serve_numsub_judge(numsub, peers, good), old;

	pthread_mutex_lock(&c->st.mu);
	old = c->st.s.numsub_state;
	c->st.s.numsub_state = ns;
	pthread_mutex_unlock(&c->st.mu);
	if (ns == old)
		return;
	if (ns == NUMSUB_OVER)
		log_warnx("serve: %ld subscribers on the channel, more than %d "
		    "peers and their agents can account for: another app or "
		    "deploy may share this namespace; give each app its own "
		    "--namespace", numsub, peers);
	else if (ns == NUMSUB_UNDER)
		log_warnx("serve: only %ld subscriber(s) on the channel: no "
		    "Pylon is listening; check that Pylon runs with "
		    "PYLON_CLUSTER_NAMESPACE matching --namespace", numsub);
	else if (ns == NUMSUB_OK &&
	    (old == NUMSUB_OVER || old == NUMSUB_UNDER))
		log_info("serve: %ld subscribers on the channel, as expected",
		    numsub);
}

struct loop_vars {
	struct bus_session	*sess;
	struct decision		 dec;	/* in force: start mode */
	int			 good_checks;
	int			 disc_fails;
};

/* One steady-state check, or a reconnect when the session is gone. */
static void
bus_tick(struct serve_ctx *c, struct loop_vars *v)
{
	const struct options *o = c->opts;
	struct agent_err err;
	struct bus_result res;
	double t0, lat = -1, dur;
	long numsub = -1, tmo;
	bool reconnected = false, became_unready = false, recovered = false;
	int rc, fails;

	tmo = o->interval_ms < 500 ? 500 : o->interval_ms;
	if (tmo > 5000)
		tmo = 5000;
	err_clear(&err);
	t0 = now_ms_f();
	if (v->sess == NULL) {
		memset(&res, 0, sizeof(res));
		rc = bus_session_open(&v->sess, o->redis_url, o->redis_ca_file,
		    v->dec.channel, tmo, false, &res, &err);
		if (rc == 0)
			reconnected = true;
		else
			v->sess = NULL;
	} else
		rc = 0;
	if (rc == 0)
		rc = bus_session_check(v->sess, tmo, &lat, &numsub, &err);
	dur = (now_ms_f() - t0) / 1000.0;
	if (rc != 0 && v->sess != NULL) {
		bus_session_close(v->sess);
		v->sess = NULL;
	}

	pthread_mutex_lock(&c->st.mu);
	serve_hist_observe(&c->st.s, dur);
	c->st.s.heartbeat_ms = now_ms();
	if (rc == 0) {
		recovered = !c->st.s.bus_ok;
		c->st.s.bus_ok = true;
		c->st.s.consecutive_failures = 0;
		c->st.s.latency_ms = lat;
		c->st.s.numsub = numsub;
		c->st.s.bus_error[0] = '\0';
		if (reconnected)
			c->st.s.reconnects_total++;
	} else {
		c->st.s.consecutive_failures++;
		c->st.s.check_failures_total++;
		redact(err.msg, c->st.s.bus_error, sizeof(c->st.s.bus_error));
		if (c->st.s.consecutive_failures >= SERVE_FAILS_UNREADY &&
		    c->st.s.bus_ok) {
			c->st.s.bus_ok = false;
			became_unready = true;
		}
	}
	fails = c->st.s.consecutive_failures;
	pthread_mutex_unlock(&c->st.mu);

	if (rc == 0) {
		v->good_checks++;
		if (reconnected)
			log_info("serve: bus reconnected (subscription on "
			    "\"%s\" restored, nothing published)",
			    v->dec.channel);
		if (recovered) {
			log_info("serve: bus recovered; /readyz answers 200");
			report_platform(o, &v->dec, REPORT_KIND_READY,
			    "bus recovered");
		}
		numsub_note(c, numsub, v->dec.peers, v->good_checks);
		return;
	}
	v->good_checks = 0;
	/* Every failure up to unready, then 4, 8, 16...: an outage of
	 * hours does not flood the log. */
	if (fails <= SERVE_FAILS_UNREADY || (fails & (fails - 1)) == 0)
		log_warnx("serve: bus check failed (%d in a row): %s", fails,
		    err.msg);
	if (became_unready) {
		char msg[AGENT_ERR_LEN + 64];

		snprintf(msg, sizeof(msg), "bus unavailable after %d failed "
		    "checks: %s", fails, err.msg);
		log_warnx("serve: %s; /readyz now answers 503", msg);
		report_platform(o, &v->dec, REPORT_KIND_UNAVAILABLE, msg);
	}
}

static void drift_apply(struct serve_ctx *, struct loop_vars *, int,
    const struct decision *, const struct agent_err *);

/* Re-reads the topology; drift when the new mode differs from ours. */
static void
resync_tick(struct serve_ctx *c, struct loop_vars *v)
{
	const struct options *o = c->opts;
	struct topology topo;
	struct decision nd;
	struct agent_err err;
	int rc;

	memset(&topo, 0, sizeof(topo));
	memset(&nd, 0, sizeof(nd));
	err_clear(&err);
	rc = flow_decide(o, &topo, &nd, &err);
	if (rc == EXIT_AGENT_DISCOVERY || (rc == 0 && nd.discovery_failed)) {
		v->disc_fails++;
		pthread_mutex_lock(&c->st.mu);
		c->st.s.discovery_errors_total++;
		pthread_mutex_unlock(&c->st.mu);
		log_warnx("serve: resync: discovery failed, keeping the last "
		    "decision: %s", rc ? err.msg : nd.reason);
		return;
	}
	v->disc_fails = 0;
	drift_apply(c, v, rc, &nd, &err);
}

/* Compares a new decision (or decide's refusal rc) with the pod's mode. */
static void
drift_apply(struct serve_ctx *c, struct loop_vars *v, int rc,
    const struct decision *ndp, const struct agent_err *errp)
{
	const struct options *o = c->opts;
	const struct decision nd = *ndp;
	const struct agent_err err = *errp;
	enum bus_mode want;
	bool drift, was, cfg = false;
	char msg[1200];

	if (rc == EXIT_AGENT_CONFIG && v->dec.mode == MODE_NOOP) {
		/* Peers > 1 without a Redis URL: the topology wants the
		 * bus and this pod could not even get it. */
		want = MODE_REDIS;
		cfg = true;
	} else if (rc != 0) {
		log_warnx("serve: resync failed, keeping the last decision: %s",
		    err.msg);
		return;
	} else
		want = nd.mode;
	drift = want != v->dec.mode;
	if (cfg)
		snprintf(msg, sizeof(msg), "this pod runs %s but the topology "
		    "now wants redis: %s", mode_name(v->dec.mode), err.msg);
	else if (drift)
		snprintf(msg, sizeof(msg), "this pod runs %s but the topology "
		    "now wants %s (%d peers: %s); restart the pods so every "
		    "process uses the same bus", mode_name(v->dec.mode),
		    mode_name(want), nd.peers, nd.reason);
	else
		msg[0] = '\0';

	pthread_mutex_lock(&c->st.mu);
	was = c->st.s.drift;
	c->st.s.drift = drift;
	snprintf(c->st.s.drift_msg, sizeof(c->st.s.drift_msg), "%s", msg);
	if (!cfg) {
		c->st.s.dec.peers = nd.peers;
		snprintf(c->st.s.dec.reason, sizeof(c->st.s.dec.reason), "%s",
		    nd.reason);
		v->dec.peers = nd.peers;
	}
	pthread_mutex_unlock(&c->st.mu);

	if (drift && !was) {
		log_warnx("serve: drift: %s%s", msg, o->on_drift ==
		    DRIFT_UNREADY ? "; /readyz answers 503 (--on-drift "
		    "unready)" : "");
		report_platform(o, &v->dec, REPORT_KIND_DRIFT, msg);
	} else if (!drift && was)
		log_info("serve: drift cleared: the topology wants %s again",
		    mode_name(v->dec.mode));
}

/* The next check: every interval; once /readyz failed, reconnects back
 * off to 10 intervals (1 s at least, 30 s at most). */
static long
check_delay(struct serve_ctx *c)
{
	long iv = c->opts->interval_ms, cap = iv * 10;
	int f;

	pthread_mutex_lock(&c->st.mu);
	f = c->st.s.consecutive_failures;
	pthread_mutex_unlock(&c->st.mu);
	if (f < SERVE_FAILS_UNREADY)
		return iv;
	if (cap < 1000)
		cap = 1000;
	if (cap > 30000)
		cap = 30000;
	return backoff_ms(iv, f - SERVE_FAILS_UNREADY + 1, cap);
}

/* The next resync: --resync +-10 %, doubled per failed discovery (x8). */
static long
resync_delay(const struct options *o, int disc_fails)
{
	int shift = disc_fails > 3 ? 3 : disc_fails;

	return (long)(o->resync_ms * (double)(1L << shift) *
	    (0.9 + 0.2 * random_unit()));
}

static void *
serve_loop(void *arg)
{
	struct serve_ctx *c = arg;
	const struct options *o = c->opts;
	struct loop_vars v;
	struct decision first;
	struct topology topo;
	bool adopted;
	struct bus_result res;
	struct agent_err err;
	int64_t now, next_check, next_resync, next;
	char msg[256];
	int rc;

	memset(&v, 0, sizeof(v));
	err_clear(&err);
	rc = first_decision(c, &topo, &v.dec, &err);
	if (rc < 0)
		goto out;
	if (rc > 0) {
		loop_exit(c, rc, &err);
		goto out;
	}
	/* Pylon has not started yet in this shape: our decision is the
	 * one to write. */
	if (topo.init_fallback && !c->supervising) {
		rc = act_as_init(c, &v.dec, &err);
		loop_exit(c, rc, rc ? &err : NULL);
		goto out;
	}
	first = v.dec;
	adopted = adopt_env_file(c, &v.dec);
	pthread_mutex_lock(&c->st.mu);
	c->st.s.decided = true;
	c->st.s.dec = v.dec;
	c->st.s.start_mode = v.dec.mode;
	c->st.s.heartbeat_ms = now_ms();
	pthread_mutex_unlock(&c->st.mu);
	if (adopted)
		drift_apply(c, &v, 0, &first, &err);

	memset(&res, 0, sizeof(res));
	res.latency_ms = -1;
	if (v.dec.mode == MODE_REDIS) {
		rc = first_proof(c, &v.dec, &v.sess, &res, &err);
		if (rc < 0)
			goto out;
		if (rc > 0) {
			loop_exit(c, rc, &err);
			goto out;
		}
		pthread_mutex_lock(&c->st.mu);
		c->st.s.proven = true;
		c->st.s.bus_ok = true;
		c->st.s.latency_ms = res.latency_ms;
		c->st.s.bus_error[0] = '\0';
		pthread_mutex_unlock(&c->st.mu);
	}

	if (c->supervising) {
		rc = env_apply(v.dec.mode == MODE_REDIS ? o->redis_url : NULL,
		    v.dec.namespace, v.dec.cluster_required, &err);
		if (rc != 0) {
			loop_exit(c, rc, &err);
			goto out;
		}
	}
	report_log_decision(&v.dec, v.dec.mode == MODE_REDIS ?
	    res.latency_ms : -1);
	pthread_mutex_lock(&c->st.mu);
	c->st.s.started = true;
	c->st.s.phase[0] = '\0';
	if (c->supervising)
		c->child_start = true;
	pthread_mutex_unlock(&c->st.mu);
	if (v.dec.mode == MODE_REDIS)
		snprintf(msg, sizeof(msg), "bus proven in %.1f ms",
		    res.latency_ms);
	else
		snprintf(msg, sizeof(msg), "NoopBus: PYLON_CLUSTER_BUS left "
		    "unset");
	report_platform(o, &v.dec, REPORT_KIND_READY, msg);

	/* Measure NUMSUB right away so /metrics has it. */
	if (v.dec.mode == MODE_REDIS && !c->stop)
		bus_tick(c, &v);
	now = now_ms();
	next_check = now + o->interval_ms;
	next_resync = now + resync_delay(o, 0);
	while (!c->stop) {
		now = now_ms();
		next = next_resync;
		if (v.dec.mode == MODE_REDIS && next_check < next)
			next = next_check;
		if (now < next) {
			nap(c, next - now > 200 ? 200 : next - now);
			continue;
		}
		if (v.dec.mode == MODE_REDIS && now >= next_check) {
			bus_tick(c, &v);
			next_check = now_ms() + check_delay(c);
		}
		if (!c->stop && now_ms() >= next_resync) {
			resync_tick(c, &v);
			next_resync = now_ms() + resync_delay(o, v.disc_fails);
		}
	}
out:
	if (v.sess != NULL)
		bus_session_close(v.sess);
	pthread_mutex_lock(&c->st.mu);
	c->loop_done = true;
	pthread_mutex_unlock(&c->st.mu);
	return NULL;
}

/* ---- cmd_serve: the main thread ------------------------------------- */

static const char *
signame(int sig)
{
	switch (sig) {
	case SIGTERM: return "SIGTERM";
	case SIGINT: return "SIGINT";
	case SIGHUP: return "SIGHUP";
	case SIGQUIT: return "SIGQUIT";
	case SIGUSR1: return "SIGUSR1";
	case SIGUSR2: return "SIGUSR2";
	default: return "signal";
	}
}

int
cmd_serve(struct options *opts, struct agent_err *err)
{
	struct serve_ctx *c;
	struct httpd *d = NULL;
	struct timespec ts;
	sigset_t set;
	pthread_t th;
	bool th_started = false, child_done = false, start, done;
	pid_t child = 0;
	int lfd, sig, wst = 0, code = 0, fd_floor, i;
	char *red;

	/* Floors: a zero period would hammer Redis or the API server. */
	if (opts->interval_ms < SERVE_MIN_INTERVAL_MS) {
		log_warnx("serve: --interval %ld ms is too short; using %d ms",
		    opts->interval_ms, SERVE_MIN_INTERVAL_MS);
		opts->interval_ms = SERVE_MIN_INTERVAL_MS;
	}
	if (opts->resync_ms < SERVE_MIN_RESYNC_MS) {
		log_warnx("serve: --resync %ld ms is too short; using %d ms",
		    opts->resync_ms, SERVE_MIN_RESYNC_MS);
		opts->resync_ms = SERVE_MIN_RESYNC_MS;
	}
	if ((c = a_calloc(1, sizeof(*c))) == NULL)
		return err_oom(err, "serve");
	c->opts = opts;
	c->supervising = opts->cmd_argc > 0 && opts->cmd_argv != NULL;
	pthread_mutex_init(&c->st.mu, NULL);
	serve_snap_init(&c->st.s);
	c->st.s.supervising = c->supervising;
	c->st.s.unready_on_drift = opts->on_drift == DRIFT_UNREADY;
	c->st.s.heartbeat_ms = now_ms();
	c->st.s.stale_ms = 2 * opts->timeout_ms + 20 * opts->api_timeout_ms +
	    10 * opts->interval_ms + 60000;
	if ((code = proxy_serve_begin(opts, &c->proxy, err)) != 0)
		goto out;
	if (opts->redis_url != NULL && opts->redis_url[0] != '\0') {
		if ((red = redis_url_redact(opts->redis_url)) != NULL) {
			snprintf(c->st.s.redis_url, sizeof(c->st.s.redis_url),
			    "%s", red);
			a_free(red);
		}
	}

	fd_floor = supervise_fd_floor();
	if ((lfd = listen_socket(opts->listen, err)) == -1) {
		code = err->code;
		goto out;
	}
	/* Before any thread exists, so every thread inherits the mask. */
	supervise_block_signals(&set);
	if (c->supervising)
		supervise_subreaper();

	if ((d = httpd_start(lfd, handle, c, opts->listen, err)) == NULL) {
		code = err->code;
		goto out;
	}
	log_info("serve: listening on %s (/livez /startupz /readyz /status "
	    "/metrics)%s", opts->listen, c->supervising ? "; will start the "
	    "command once the bus is decided and proven" : "");

	if ((i = pthread_create(&th, NULL, serve_loop, c)) != 0) {
		code = err_set(err, EXIT_AGENT_SOFTWARE, "serve: cannot start "
		    "the check loop: %s", strerror(i));
		goto out;
	}
	th_started = true;

	ts.tv_sec = 0;
	ts.tv_nsec = 50 * 1000000L;
	for (;;) {
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGCHLD || (sig == -1 && child > 0)) {
			if (supervise_reap(child, &wst))
				child_done = true;
		} else if (sig > 0) {
			if (sig == SIGTERM || sig == SIGINT) {
				pthread_mutex_lock(&c->st.mu);
				c->st.s.shutting_down = true;
				pthread_mutex_unlock(&c->st.mu);
			}
			if (child > 0 && !child_done) {
				log_info("serve: forwarding %s to the command "
				    "(pid %d)", signame(sig), (int)child);
				supervise_forward(child, sig);
			} else if (sig == SIGTERM || sig == SIGINT) {
				log_info("serve: %s: shutting down",
				    signame(sig));
				code = 0;
				break;
			} else
				log_info("serve: %s ignored (no command "
				    "running)", signame(sig));
		}
		if (child_done) {
			code = supervise_exit_code(wst);
			log_info("serve: the command (pid %d) exited; exiting "
			    "with %d", (int)child, code);
			break;
		}
		pthread_mutex_lock(&c->st.mu);
		start = c->child_start && child == 0 &&
		    !c->st.s.shutting_down;
		if (c->exit_req) {
			code = c->exit_code;
			*err = c->exit_err;
			pthread_mutex_unlock(&c->st.mu);
			break;
		}
		pthread_mutex_unlock(&c->st.mu);
		if (start) {
			child = supervise_spawn(opts->cmd_argv, fd_floor, err);
			if (child < 0) {
				code = err->code;
				break;
			}
			log_info("serve: started %s (pid %d)",
			    opts->cmd_argv[0], (int)child);
			pthread_mutex_lock(&c->st.mu);
			c->st.s.child = child;
			c->child_start = false;
			pthread_mutex_unlock(&c->st.mu);
		}
	}

out:
	c->stop = 1;
	httpd_stop(d);
	proxy_stop(c->proxy);
	c->proxy = NULL;
	done = !th_started;
	/* The loop may be inside a Redis or API call with its own deadline;
	 * wait a little for it, no longer. */
	for (i = 0; th_started && i < 25; i++) {
		pthread_mutex_lock(&c->st.mu);
		done = c->loop_done;
		pthread_mutex_unlock(&c->st.mu);
		if (done)
			break;
		ts.tv_sec = 0;
		ts.tv_nsec = 20 * 1000000L;
		nanosleep(&ts, NULL);
	}
	if (th_started && done) {
		pthread_join(th, NULL);
		pthread_mutex_destroy(&c->st.mu);
		a_free(c);
	} else if (th_started) {
		/* Still inside a call with its own deadline: exiting must
		 * not wait for it (SPEC 6: exit within a second), nor run
		 * library destructors under its feet. */
		log_debug("serve: the check loop is busy; exiting without it");
		if (code != 0 && err->msg[0] != '\0')
			log_errorx("%s", err->msg);
		fflush(stdout);
		fflush(stderr);
		_exit(code);
	} else {
		pthread_mutex_destroy(&c->st.mu);
		a_free(c);
	}
	if (code == 0)
		err_clear(err);
	return code;
}

/* ---- probe ----------------------------------------------------------- */

int
cmd_probe(struct options *opts, struct agent_err *err)
{
	struct options o = *opts;	/* shallow: only limits change */
	struct topology topo;
	struct decision dec;
	struct envfile ef;
	struct agent_err ignored;
	struct bus_session *s = NULL;
	struct bus_result res;
	enum bus_mode started = MODE_AUTO, check;
	const char *url, *env;
	long budget, left, numsub = -1;
	int64_t deadline;
	double lat = -1;
	int rc;

	budget = opts->timeout_set ? opts->timeout_ms : PROBE_DEFAULT_MS;
	deadline = now_ms() + budget;
	if (o.api_timeout_ms > budget)
		o.api_timeout_ms = budget;
	o.timeout_ms = budget;

	/* The mode this pod started with: the env file init wrote, else
	 * the environment exec gave Pylon. */
	memset(&ef, 0, sizeof(ef));
	if (opts->env_file != NULL && access(opts->env_file, F_OK) == 0 &&
	    envfile_read(opts->env_file, &ef, &ignored) == 0) {
		if (strcmp(ef.mode, "redis") == 0 || ef.bus != NULL)
			started = MODE_REDIS;
		else if (strcmp(ef.mode, "noop") == 0 || ef.bus == NULL)
			started = MODE_NOOP;
		if (o.redis_url == NULL && ef.bus != NULL)
			o.redis_url = ef.bus;
	} else if ((env = getenv("PYLON_CLUSTER_BUS")) != NULL &&
	    env[0] != '\0') {
		started = MODE_REDIS;
		if (o.redis_url == NULL)
			o.redis_url = (char *)(uintptr_t)env;
	}

	memset(&topo, 0, sizeof(topo));
	memset(&dec, 0, sizeof(dec));
	if ((rc = flow_decide(&o, &topo, &dec, err)) != 0) {
		err_prefix(err, "probe");
		goto out;
	}
	check = started != MODE_AUTO ? started : dec.mode;
	if (check == MODE_NOOP) {
		if (dec.mode == MODE_REDIS) {
			rc = err_set(err, EXIT_AGENT_UNPROVEN, "probe: drift: "
			    "this pod runs noop but the topology now wants "
			    "redis (%d peers: %s); restart the pods",
			    dec.peers, dec.reason);
			goto out;
		}
		printf("noop: the decision is still noop (%d peer%s: %s)\n",
		    dec.peers, dec.peers == 1 ? "" : "s", dec.reason);
		rc = 0;
		goto out;
	}
	url = o.redis_url;
	if (url == NULL || url[0] == '\0') {
		rc = err_set(err, EXIT_AGENT_CONFIG, "probe: redis mode but no "
		    "Redis URL; set --redis-url or --redis-url-file");
		goto out;
	}
	if ((left = (long)(deadline - now_ms())) < 100)
		left = 100;
	memset(&res, 0, sizeof(res));
	rc = bus_session_open(&s, url, o.redis_ca_file, dec.channel, left,
	    false, &res, err);
	if (rc == 0) {
		if ((left = (long)(deadline - now_ms())) < 100)
			left = 100;
		rc = bus_session_check(s, left, &lat, &numsub, err);
	}
	if (rc != 0) {
		if (rc != EXIT_AGENT_CONFIG)
			rc = EXIT_AGENT_UNPROVEN;
		err_prefix(err, "probe: bus not usable");
		goto out;
	}
	printf("redis: bus usable: PING %.1f ms, %ld subscriber%s on \"%s\"\n",
	    lat, numsub, numsub == 1 ? "" : "s", dec.channel);
out:
	if (s != NULL)
		bus_session_close(s);
	envfile_release(&ef);
	return rc;
}
