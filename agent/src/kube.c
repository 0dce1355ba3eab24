/*
 * kube.c - the Kubernetes platform adapter.
 *
 * Discovery walks the own pod's controller chain through ownerReferences
 * (Pod -> ReplicaSet -> Deployment | Argo Rollout, Pod -> StatefulSet, a
 * bare pod) with single GETs, lists HPAs once, and, only with
 * --app-selector, lists Deployments and StatefulSets for the other
 * blue/green colours.  It never lists pods: a plain Deployment decision is
 * four GETs.  The chain is walked over a table of controller kinds
 * (ctl_kinds) and its end is kept in topology.chain: serve's resync
 * (kube_resync) re-reads only that end and the HPAs, with
 * resourceVersion=0 so the API server answers from its watch cache.
 * Reporting merge-patches the own pod's annotations and posts an
 * events.k8s.io/v1 Event about it.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "agent.h"
#include "http_client.h"
#include "kube.h"

#define KUBE_MAX_BODY (4u * 1024 * 1024)
#define KUBE_TOKEN_MAX_AGE_MS 60000
#define KUBE_LIST_LIMIT 500
#define KUBE_LIST_PAGES 50
#define DEFAULT_CONTAINER "pylon-agent"

/* One discovery or report: the connection settings and the pod. */
struct kube {
	const struct options *opts;
	struct kube_config cfg;
	char pod[254];
	char ns[64];
	int requests;
	bool from_cache; /* GETs with resourceVersion=0 */
};

/* What discover learned about the own pod, for report (same process). */
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static char cache_pod[254], cache_ns[64], cache_uid[64];

/* ---- small JSON helpers ------------------------------------------------ */

/* obj["a"]["b"]... along a dot path. */
static cJSON *
j_at(const cJSON *obj, const char *path)
{
	char key[128];
	const char *p = path, *dot;
	size_t n;
	const cJSON *cur = obj;

	while (cur != NULL && *p) {
		dot = strchr(p, '.');
		n = dot ? (size_t)(dot - p) : strlen(p);
		if (n >= sizeof(key))
			return NULL;
		memcpy(key, p, n);
		key[n] = '\0';
		cur = cJSON_IsObject(cur)
		    ? cJSON_GetObjectItemCaseSensitive(cur, key)
		    : NULL;
		p += n + (dot ? 1 : 0);
	}
	return (cJSON *)cur;
}

static const char *
j_str(const cJSON *obj, const char *path)
{
	return cJSON_GetStringValue(j_at(obj, path));
}

/* An integer field; def when absent, -1 when not a sane integer. */
static int
j_int(const cJSON *obj, const char *path, int def)
{
	const cJSON *v = j_at(obj, path);

	if (v == NULL || cJSON_IsNull(v))
		return def;
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
	    v->valuedouble > 1000000)
		return -1;
	return (int)v->valuedouble;
}

/* Appends ", s" (or s) to buf without overflowing it. */
static void
src_append(char *buf, size_t n, const char *s)
{
	size_t len = strlen(buf);

	if (len > 0 && len + 2 < n) {
		memcpy(buf + len, ", ", 3);
		len += 2;
	}
	if (len < n)
		snprintf(buf + len, n - len, "%s", s);
}

/* Copies a server-provided string into a message: bounded, one line,
 * secrets redacted. */
static void
clean_text(const char *in, char *out, size_t n)
{
	char tmp[512];
	size_t i;

	/* Redact before the cut: a token straddling it still matches. */
	redact(in ? in : "", tmp, sizeof(tmp));
	for (i = 0; tmp[i]; i++)
		if ((unsigned char)tmp[i] < 0x20 || tmp[i] == 0x7f)
			tmp[i] = ' ';
	snprintf(out, n, "%s", tmp);
}

/* ---- label selectors ------------------------------------------------- */

enum sel_op { SEL_EQ, SEL_NE, SEL_IN, SEL_NOTIN, SEL_EXISTS, SEL_NOTEXISTS };

static bool
sel_keych(int c)
{
	return isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/';
}

static bool
sel_valch(int c)
{
	return isalnum(c) || c == '.' || c == '_' || c == '-';
}

static const char *
skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Reads a token of class fn into out; returns the end. */
static const char *
sel_token(const char *p, bool (*fn)(int), char *out, size_t n)
{
	size_t i = 0;

	while (*p && fn((unsigned char)*p)) {
		if (i + 1 < n)
			out[i++] = *p;
		p++;
	}
	out[i] = '\0';
	return p;
}

static bool
set_has(const char vals[][64], int nv, const char *v)
{
	int i;

	for (i = 0; i < nv; i++)
		if (strcmp(vals[i], v) == 0)
			return true;
	return false;
}

/* One requirement: the key, the operator and its values. */
struct sel_req {
	char key[320], vals[16][64];
	int nv;
	enum sel_op op;
};

/* Parses "k in (a,b)" and the like at p; returns the end, NULL if bad. */
static const char *
sel_parse_values(const char *p, struct sel_req *r)
{
	if (r->op == SEL_EQ || r->op == SEL_NE) {
		r->nv = 1;
		return sel_token(p, sel_valch, r->vals[0], sizeof(r->vals[0]));
	}
	if (r->op != SEL_IN && r->op != SEL_NOTIN)
		return p;
	if (*p++ != '(')
		return NULL;
	for (;;) {
		if (r->nv >= 16)
			return NULL;
		p = sel_token(skip_ws(p), sel_valch, r->vals[r->nv++],
		    sizeof(r->vals[0]));
		p = skip_ws(p);
		if (*p == ',') {
			p++;
			continue;
		}
		return *p == ')' ? p + 1 : NULL;
	}
}

static const char *
sel_parse_req(const char *p, struct sel_req *r)
{
	r->nv = 0;
	p = skip_ws(p);
	if (*p == '!') {
		r->op = SEL_NOTEXISTS;
		return sel_token(
		    skip_ws(p + 1), sel_keych, r->key, sizeof(r->key));
	}
	p = skip_ws(sel_token(p, sel_keych, r->key, sizeof(r->key)));
	r->op = SEL_EXISTS;
	if (p[0] == '!' && p[1] == '=') {
		r->op = SEL_NE;
		p += 2;
	} else if (p[0] == '=' && p[1] == '=') {
		r->op = SEL_EQ;
		p += 2;
	} else if (p[0] == '=') {
		r->op = SEL_EQ;
		p++;
	} else if (strncmp(p, "notin", 5) == 0 &&
	    !sel_keych((unsigned char)p[5])) {
		r->op = SEL_NOTIN;
		p += 5;
	} else if (strncmp(p, "in", 2) == 0 &&
	    !sel_keych((unsigned char)p[2])) {
		r->op = SEL_IN;
		p += 2;
	}
	return sel_parse_values(skip_ws(p), r);
}

static bool
sel_req_match(const struct sel_req *r, const char *have)
{
	switch (r->op) {
	case SEL_EXISTS:
		return have != NULL;
	case SEL_NOTEXISTS:
		return have == NULL;
	case SEL_EQ:
		return have != NULL && strcmp(have, r->vals[0]) == 0;
	case SEL_NE:
		return have == NULL || strcmp(have, r->vals[0]) != 0;
	case SEL_IN:
		return have != NULL && set_has(r->vals, r->nv, have);
	case SEL_NOTIN:
		return have == NULL || !set_has(r->vals, r->nv, have);
	}
	return false;
}

int
kube_selector_match(
    const char *selector, const struct cJSON *labels, struct agent_err *err)
{
	const char *p = selector, *have;
	struct sel_req r;
	int match = 1;

	if (selector == NULL)
		return 1;
	p = skip_ws(p);
	if (*p == '\0')
		goto bad;
	while (*p) {
		if ((p = sel_parse_req(p, &r)) == NULL || r.key[0] == '\0')
			goto bad;
		p = skip_ws(p);
		if (*p == ',')
			p++;
		else if (*p != '\0')
			goto bad;
		have = cJSON_GetStringValue(
		    cJSON_GetObjectItemCaseSensitive(labels, r.key));
		match &= sel_req_match(&r, have);
	}
	return match;
bad:
	err_set(err, EXIT_AGENT_CONFIG,
	    "--app-selector \"%.200s\" is not a "
	    "valid label selector; use e.g. app=chat, tier!=db, "
	    "color in (blue,green), !canary",
	    selector);
	return -1;
}

/* ---- IntOrString surge ------------------------------------------------ */

int
kube_surge_resolve(const struct cJSON *v, int replicas)
{
	const char *s;
	char *end;
	long pct;

	if (v == NULL || cJSON_IsNull(v))
		return (replicas * 25 + 99) / 100;
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble < 0 || v->valuedouble > 1000000 ||
		    v->valuedouble != (double)(int)v->valuedouble)
			return -1;
		return (int)v->valuedouble;
	}
	if ((s = cJSON_GetStringValue(v)) == NULL ||
	    !isdigit((unsigned char)*s))
		return -1;
	pct = strtol(s, &end, 10);
	if (strcmp(end, "%") != 0 || pct < 0 || pct > 100000)
		return -1;
	/* Surge rounds up (deployment util ResolveFenceposts). */
	return (int)(((long)replicas * pct + 99) / 100);
}

/* ---- Status errors ------------------------------------------------------ */

int
kube_status_error(long status, const char *body, const char *verb,
    const char *group, const char *resource, const char *name, const char *ns,
    struct agent_err *err)
{
	cJSON *j = NULL;
	const char *msg = NULL, *reason = NULL;
	char m[512], what[400];

	if (body != NULL && (j = cJSON_Parse(body)) != NULL) {
		msg = j_str(j, "message");
		reason = j_str(j, "reason");
	}
	clean_text(msg ? msg : "", m, sizeof(m));
	snprintf(what, sizeof(what), "%s%s%s%s%s", resource,
	    group && *group ? "." : "", group ? group : "", name ? "/" : "",
	    name ? name : "");
	switch (status) {
	case 401:
		err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: %s %s: 401 "
		    "Unauthorized: the API server rejected the token (expired, "
		    "revoked or for another cluster); it is re-read on the "
		    "next attempt - check the service-account token or the "
		    "kubeconfig user",
		    verb, what);
		break;
	case 403:
		err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: forbidden to "
		    "%s %s in namespace \"%s\" (%s); add to the Role: "
		    "{apiGroups: [\"%s\"], resources: [\"%s\"], verbs: "
		    "[\"%s\"]}",
		    verb, what, ns ? ns : "", m[0] ? m : "Forbidden",
		    group ? group : "", resource, verb);
		break;
	case 404:
		if (strstr(m, "could not find the requested resource"))
			err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubernetes: the API "
			    "server does not serve %s%s%s (is its API group "
			    "installed?)",
			    resource, group && *group ? "." : "",
			    group ? group : "");
		else
			err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubernetes: %s not "
			    "found in namespace \"%s\" (%s)",
			    what, ns ? ns : "", m[0] ? m : "NotFound");
		break;
	case 429:
		err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: %s %s: the API "
		    "server kept answering 429 TooManyRequests after retries; "
		    "it is overloaded, try again later",
		    verb, what);
		break;
	default:
		err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: %s %s: HTTP "
		    "%ld%s%s%s%s%s",
		    verb, what, status, reason ? " " : "", reason ? reason : "",
		    m[0] ? ": " : "", m,
		    status >= 500 ? " (the API server failed; retried "
		                    "already)"
		                  : "");
		break;
	}
	cJSON_Delete(j);
	return err->code;
}

/* ---- requests ------------------------------------------------------------ */

static const char *
kube_path_prefix(const char *group)
{
	if (group == NULL || *group == '\0')
		return "/api/v1";
	if (strcmp(group, "apps") == 0)
		return "/apis/apps/v1";
	if (strcmp(group, "autoscaling") == 0)
		return "/apis/autoscaling/v2";
	if (strcmp(group, "argoproj.io") == 0)
		return "/apis/argoproj.io/v1alpha1";
	if (strcmp(group, "events.k8s.io") == 0)
		return "/apis/events.k8s.io/v1";
	return NULL;
}

static bool
token_has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* The request of one attempt: connection settings and the bearer token
 * (authz is the caller's buffer for the header value). */
static int
kube_request(struct kube *k, struct http_request *rq, const char *method,
    const char *url, const char *ctype, const char *body, char *authz,
    size_t authz_len, struct agent_err *err)
{
	long t = k->opts->api_timeout_ms > 0 ? k->opts->api_timeout_ms : 10000;

	memset(rq, 0, sizeof(*rq));
	rq->method = method;
	rq->url = url;
	if (k->cfg.token != NULL) {
		/* A line break would split the header (the part after it an
		 * injected header, the part before it echoed unredacted). */
		if (token_has_ctl(k->cfg.token))
			return err_set(err, EXIT_AGENT_CONFIG,
			    "kubernetes: "
			    "the bearer token%s%s holds a line break or "
			    "control character inside; it must be one line (a "
			    "broken token file?)",
			    k->cfg.token_file ? " in " : "",
			    k->cfg.token_file ? k->cfg.token_file : "");
		snprintf(authz, authz_len, "Bearer %s", k->cfg.token);
		rq->authorization = authz;
	}
	rq->content_type = ctype;
	rq->body = body;
	rq->body_len = body ? strlen(body) : 0;
	rq->ca_file = k->cfg.ca_file;
	rq->ca_pem = k->cfg.ca_pem;
	rq->ca_pem_len = k->cfg.ca_pem_len;
	rq->client_cert_pem = k->cfg.client_cert_pem;
	rq->client_key_pem = k->cfg.client_key_pem;
	rq->tls_server_name = k->cfg.tls_server_name;
	rq->insecure = k->cfg.insecure;
	rq->noproxy_host = k->cfg.noproxy_host;
	rq->timeout_ms = t;
	rq->max_body = KUBE_MAX_BODY;
	rq->max_attempts = 4;
	rq->deadline_ms = 3 * t + 2000;
	rq->backoff_base_ms = 500;
	rq->backoff_cap_ms = 5000;
	return 0;
}

/* After a 401: whether a re-read token file (or a re-run exec plugin)
 * gave a new credential worth one more try, like client-go's next call. */
static bool
kube_token_renewed(struct kube *k, struct agent_err *err)
{
	char *old;
	bool same;
	int rc;

	if (k->cfg.token_file == NULL && k->cfg.exec_command == NULL)
		return false;
	old = k->cfg.token ? a_strdup(k->cfg.token) : NULL;
	rc = kube_config_refresh_token(&k->cfg, 0, true, err);
	same = rc != 0 ||
	    (old && k->cfg.token && strcmp(old, k->cfg.token) == 0 &&
	        k->cfg.exec_command == NULL);
	a_free(old);
	err_clear(err);
	return !same;
}

/* A 2xx body into *out: a JSON object, or an error naming the server. */
static int
kube_parse_body(struct kube *k, const struct http_response *rs,
    const char *verb, const char *resource, const char *name, cJSON **out,
    struct agent_err *err)
{
	long fails = alloc_failures();

	if (out == NULL || rs->len == 0)
		return 0;
	*out = cJSON_ParseWithLength(rs->body, rs->len);
	if (*out == NULL && alloc_failures() != fails)
		return err_oom(err, "kubernetes: API response");
	if (*out != NULL && cJSON_IsObject(*out))
		return 0;
	cJSON_Delete(*out);
	*out = NULL;
	return err_set(err, EXIT_AGENT_DISCOVERY,
	    "kubernetes: %s %s%s%s: the "
	    "API server answered %zu bytes that are not a JSON object; is %s "
	    "a Kubernetes API server?",
	    verb, resource, name ? "/" : "", name ? name : "", rs->len,
	    k->cfg.server);
}

/*
 * One API call.  verb is the RBAC verb (for messages); query is appended
 * after '?' when non-NULL.  On a 2xx the JSON object body is in *out.
 * *status gets the HTTP status (0 on transport errors).
 */
static int
kube_call(struct kube *k, const char *method, const char *verb,
    const char *group, const char *resource, const char *name,
    const char *query, const char *ctype, const char *body, cJSON **out,
    long *status, struct agent_err *err)
{
	struct http_request rq;
	struct http_response rs;
	char url[2048], authz[16384], rvq[4200];
	const char *prefix = kube_path_prefix(group);
	int rc, tries;

	*out = NULL;
	*status = 0;
	/* resync: any version is fine, so the API server answers from its
	 * watch cache instead of a quorum read of etcd.  Not with continue
	 * (the server refuses both). */
	if (k->from_cache && strcmp(method, "GET") == 0 &&
	    (query == NULL || strstr(query, "continue=") == NULL)) {
		snprintf(rvq, sizeof(rvq), "resourceVersion=0%s%s",
		    query ? "&" : "", query ? query : "");
		query = rvq;
	}
	snprintf(url, sizeof(url), "%s%s/namespaces/%s/%s%s%s%s%s",
	    k->cfg.server, prefix, k->ns, resource, name ? "/" : "",
	    name ? name : "", query ? "?" : "", query ? query : "");
	for (tries = 0; tries < 2; tries++) {
		/* The 401 branch below already forced the re-read. */
		if ((rc = kube_config_refresh_token(
		         &k->cfg, KUBE_TOKEN_MAX_AGE_MS, false, err)) ||
		    (rc = kube_request(k, &rq, method, url, ctype, body, authz,
		         sizeof(authz), err)))
			return rc;
		rc = http_do(&rq, &rs, err);
		explicit_bzero(authz, sizeof(authz));
		k->requests += rs.attempts;
		if (rc) {
			http_response_release(&rs);
			return err_prefix(err, "kubernetes: %s %s%s%s", verb,
			    resource, name ? "/" : "", name ? name : "");
		}
		*status = rs.status;
		if (rs.status == 401 && tries == 0 &&
		    kube_token_renewed(k, err)) {
			http_response_release(&rs);
			continue;
		}
		break;
	}
	if (rs.status < 200 || rs.status > 299)
		rc = kube_status_error(rs.status, rs.body, verb, group,
		    resource, name, k->ns, err);
	else
		rc = kube_parse_body(k, &rs, verb, resource, name, out, err);
	http_response_release(&rs);
	return rc;
}

static int
kube_get(struct kube *k, const char *group, const char *resource,
    const char *name, cJSON **out, long *status, struct agent_err *err)
{
	return kube_call(k, "GET", "get", group, resource, name, NULL, NULL,
	    NULL, out, status, err);
}

static void
url_escape(const char *in, char *out, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *in && o + 4 < n; in++) {
		unsigned char c = (unsigned char)*in;

		if (isalnum(c) || c == '-' || c == '_' || c == '.' ||
		    c == '~') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

typedef int (*item_fn)(void *ctx, const cJSON *item, struct agent_err *);
typedef void (*reset_fn)(void *ctx);

/* LIST with limit/continue; an expired continue token (410) restarts the
 * list once, after reset undid what the earlier pages added. */
static int
kube_list(struct kube *k, const char *group, const char *resource, item_fn fn,
    reset_fn reset, void *ctx, struct agent_err *err)
{
	cJSON *page = NULL, *it;
	char query[4096], cont[2048] = "", esc[3000];
	const char *c;
	long status;
	int rc = 0, pages = 0, restarts = 0;

	for (;;) {
		if (cont[0]) {
			url_escape(cont, esc, sizeof(esc));
			snprintf(query, sizeof(query), "limit=%d&continue=%s",
			    KUBE_LIST_LIMIT, esc);
		} else
			snprintf(
			    query, sizeof(query), "limit=%d", KUBE_LIST_LIMIT);
		rc = kube_call(k, "GET", "list", group, resource, NULL, query,
		    NULL, NULL, &page, &status, err);
		if (rc && status == 410 && cont[0] && restarts++ == 0) {
			cont[0] = '\0';
			err_clear(err);
			pages = 0;
			reset(ctx);
			continue;
		}
		if (rc)
			return rc;
		if (!cJSON_IsArray(j_at(page, "items"))) {
			cJSON_Delete(page);
			return err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubernetes: "
			    "list %s: the answer has no items array",
			    resource);
		}
		cJSON_ArrayForEach(
		    it, j_at(page, "items")) if ((rc = fn(ctx, it, err)) !=
		    0) break;
		c = j_str(page, "metadata.continue");
		snprintf(cont, sizeof(cont), "%s", c ? c : "");
		cJSON_Delete(page);
		page = NULL;
		if (rc || cont[0] == '\0')
			return rc;
		if (++pages >= KUBE_LIST_PAGES)
			return err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubernetes: "
			    "list %s: more than %d pages; giving up",
			    resource, KUBE_LIST_PAGES);
	}
}

/* ---- identity and connection ------------------------------------------ */

static bool
dns_name_ok(const char *s, size_t max)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > max)
		return false;
	for (i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) ||
		        isdigit((unsigned char)s[i]) || s[i] == '-' ||
		        s[i] == '.'))
			return false;
	return true;
}

static int
kube_open(struct kube *k, const struct options *opts, struct agent_err *err)
{
	const char *pod, *ns;
	int rc;

	memset(k, 0, sizeof(*k));
	k->opts = opts;
	if (opts->kubeconfig != NULL && *opts->kubeconfig)
		rc = kube_config_kubeconfig(opts->kubeconfig, &k->cfg, err);
	else
		rc = kube_config_incluster(opts->serviceaccount_dir
		        ? opts->serviceaccount_dir
		        : "/var/run/secrets/kubernetes.io/serviceaccount",
		    &k->cfg, err);
	if (rc)
		return rc;
	pod = getenv("POD_NAME");
	if (pod == NULL || *pod == '\0')
		pod = getenv("HOSTNAME");
	if (pod == NULL || *pod == '\0') {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: POD_NAME is "
		    "not set; add it from the downward API (fieldRef "
		    "metadata.name)");
		goto fail;
	}
	if (!dns_name_ok(pod, 253)) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: POD_NAME "
		    "\"%.100s\" is not a pod name; set it from the downward "
		    "API (fieldRef metadata.name)",
		    pod);
		goto fail;
	}
	ns = getenv("POD_NAMESPACE");
	if (ns == NULL || *ns == '\0')
		ns = k->cfg.namespace;
	if (ns == NULL || *ns == '\0')
		ns = opts->kubeconfig ? "default" : NULL;
	if (ns == NULL) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: the pod's "
		    "namespace is unknown: POD_NAMESPACE is not set and the "
		    "service-account namespace file is missing; add "
		    "POD_NAMESPACE from the downward API (fieldRef "
		    "metadata.namespace)");
		goto fail;
	}
	if (!dns_name_ok(ns, 63) || strchr(ns, '.') != NULL) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: namespace "
		    "\"%.100s\" is not a valid namespace name",
		    ns);
		goto fail;
	}
	snprintf(k->pod, sizeof(k->pod), "%s", pod);
	snprintf(k->ns, sizeof(k->ns), "%s", ns);
	return 0;
fail:
	kube_config_release(&k->cfg);
	return rc;
}

static void
kube_close(struct kube *k)
{
	kube_config_release(&k->cfg);
}

/* ---- discovery ---------------------------------------------------------- */

/* The ownerReference with controller: true, or NULL. */
static const cJSON *
controller_of(const cJSON *obj)
{
	const cJSON *r;

	cJSON_ArrayForEach(r,
	    j_at(obj,
	        "metadata.ownerReferences")) if (cJSON_IsTrue(j_at(r,
	                                             "controller"))) return r;
	return NULL;
}

/* "apps/v1" -> "apps"; "v1" -> "". */
static void
api_group(const char *api_version, char *out, size_t n)
{
	const char *slash;

	if (api_version == NULL || (slash = strchr(api_version, '/')) == NULL) {
		snprintf(out, n, "%s", "");
		return;
	}
	snprintf(out, n, "%.*s", (int)(slash - api_version), api_version);
}

/* The agent's own container name (the sidecar's, in the chart). */
const char *
kube_container_name(void)
{
	const char *me = getenv("PYLON_AGENT_CONTAINER_NAME");

	return me == NULL || *me == '\0' ? DEFAULT_CONTAINER : me;
}

static bool
native_sidecar_dropped(const cJSON *pod)
{
	const cJSON *c;
	const char *me = kube_container_name();
	const char *nm, *rp;

	cJSON_ArrayForEach(c, j_at(pod, "spec.initContainers"))
	{
		nm = j_str(c, "name");
		if (nm == NULL || strcmp(nm, me) != 0)
			continue;
		rp = j_str(c, "restartPolicy");
		return rp == NULL || strcmp(rp, "Always") != 0;
	}
	return false;
}

struct hpa_ctx {
	const char *group, *kind, *name;
	int max;
	char src[SRC_LEN];
};

static void
hpa_reset(void *vctx)
{
	struct hpa_ctx *c = vctx;

	c->max = 0;
	c->src[0] = '\0';
}

static int
hpa_item(void *vctx, const cJSON *it, struct agent_err *err)
{
	struct hpa_ctx *c = vctx;
	char g[128], s[SRC_LEN];
	const char *kind, *name, *hname;
	int max;

	(void)err;
	kind = j_str(it, "spec.scaleTargetRef.kind");
	name = j_str(it, "spec.scaleTargetRef.name");
	api_group(j_str(it, "spec.scaleTargetRef.apiVersion"), g, sizeof(g));
	if (kind == NULL || name == NULL || strcmp(kind, c->kind) != 0 ||
	    strcmp(name, c->name) != 0 || strcmp(g, c->group) != 0)
		return 0;
	max = j_int(it, "spec.maxReplicas", 0);
	hname = j_str(it, "metadata.name");
	if (max <= 0)
		return 0;
	snprintf(s, sizeof(s), "hpa/%s max=%d", hname ? hname : "?", max);
	if (max > c->max) {
		c->max = max;
		snprintf(c->src, sizeof(c->src), "%s", s);
	}
	return 0;
}

static int
find_hpa(struct kube *k, const char *group, const char *kind, const char *name,
    struct topology *t, struct agent_err *err)
{
	struct hpa_ctx c;
	int rc;

	memset(&c, 0, sizeof(c));
	c.group = group;
	c.kind = kind;
	c.name = name;
	if ((rc = kube_list(k, "autoscaling", "horizontalpodautoscalers",
	         hpa_item, hpa_reset, &c, err)))
		return rc;
	t->hpa_max = c.max;
	snprintf(t->hpa_src, sizeof(t->hpa_src), "%s", c.src);
	return 0;
}

struct colour_ctx {
	const char *selector;
	const char *kind; /* "deployment" / "statefulset" */
	const char *own_kind, *own_name;
	struct topology *t;
	int saved; /* before this list */
	char saved_src[SRC_LEN];
};

static void
colour_reset(void *vctx)
{
	struct colour_ctx *c = vctx;

	c->t->colours = c->saved;
	memcpy(c->t->colours_src, c->saved_src, sizeof(c->saved_src));
}

static void
colour_save(struct colour_ctx *c)
{
	c->saved = c->t->colours;
	memcpy(c->saved_src, c->t->colours_src, sizeof(c->saved_src));
}

static int
colour_item(void *vctx, const cJSON *it, struct agent_err *err)
{
	struct colour_ctx *c = vctx;
	const char *name = j_str(it, "metadata.name");
	char s[SRC_LEN];
	int m, r;

	if (name == NULL)
		return 0;
	if (strcmp(c->kind, c->own_kind) == 0 && strcmp(name, c->own_name) == 0)
		return 0;
	m = kube_selector_match(
	    c->selector, j_at(it, "spec.template.metadata.labels"), err);
	if (m < 0)
		return err->code;
	if (m == 0)
		return 0;
	if ((r = j_int(it, "spec.replicas", 1)) < 0)
		r = 1;
	c->t->colours += r;
	snprintf(s, sizeof(s), "%s/%s replicas=%d", c->kind, name, r);
	src_append(c->t->colours_src, sizeof(c->t->colours_src), s);
	return 0;
}

static int
find_colours(struct kube *k, const char *own_kind, const char *own_name,
    struct topology *t, struct agent_err *err)
{
	struct colour_ctx c;
	int rc;

	memset(&c, 0, sizeof(c));
	c.selector = k->opts->app_selector;
	c.own_kind = own_kind;
	c.own_name = own_name;
	c.t = t;
	c.kind = "deployment";
	colour_save(&c);
	if ((rc = kube_list(
	         k, "apps", "deployments", colour_item, colour_reset, &c, err)))
		return rc;
	c.kind = "statefulset";
	colour_save(&c);
	return kube_list(
	    k, "apps", "statefulsets", colour_item, colour_reset, &c, err);
}

/* Fills surge from a Deployment's (or canary Rollout's) strategy. */
static void
deployment_surge(const cJSON *d, const char *kind, const char *name,
    int replicas, struct topology *t)
{
	const char *type = j_str(d, "spec.strategy.type");
	const cJSON *ms;
	char v[64];
	int s;

	if (type != NULL && strcmp(type, "Recreate") == 0) {
		t->surge = 0;
		snprintf(t->surge_src, sizeof(t->surge_src),
		    "%s/%s strategy=Recreate (no surge)", kind, name);
		return;
	}
	ms = strcmp(kind, "rollout") == 0
	    ? j_at(d, "spec.strategy.canary.maxSurge")
	    : j_at(d, "spec.strategy.rollingUpdate.maxSurge");
	if (ms == NULL || cJSON_IsNull(ms))
		snprintf(v, sizeof(v), "25%% (default)");
	else if (cJSON_IsNumber(ms))
		snprintf(v, sizeof(v), "%d", (int)ms->valuedouble);
	else
		snprintf(v, sizeof(v), "%.40s",
		    cJSON_GetStringValue(ms) ? cJSON_GetStringValue(ms) : "?");
	s = kube_surge_resolve(ms, replicas);
	if (s < 0) {
		t->surge = 1;
		snprintf(t->surge_src, sizeof(t->surge_src),
		    "%s/%s maxSurge=%s unparseable, assumed 1", kind, name, v);
		return;
	}
	t->surge = s;
	snprintf(t->surge_src, sizeof(t->surge_src), "%smaxSurge=%s",
	    strcmp(kind, "rollout") == 0 ? "canary " : "", v);
	(void)name;
}

/* ---- the owner chain: a table of controller kinds --------------------- */

/* What a controller's object adds to the topology (base, surge, colours). */
typedef int (*ctl_read_fn)(
    const cJSON *obj, const char *name, struct topology *t);

struct ctl_kind {
	const char *group, *kind, *resource;
	const char *label; /* "deployment": messages, chain key */
	bool owns_pods; /* may be a pod's controller */
	bool owns_rs; /* may be a ReplicaSet's owner */
	ctl_read_fn read;
	const char *missing; /* a 404 "does not serve": why */
};

static int
read_replicas(const cJSON *obj, int *r)
{
	return (*r = j_int(obj, "spec.replicas", 1)) < 0 ? -1 : 0;
}

static int
read_statefulset(const cJSON *obj, const char *name, struct topology *t)
{
	int r;

	if (read_replicas(obj, &r))
		return -1;
	t->base = r;
	snprintf(t->base_src, sizeof(t->base_src),
	    "statefulset/%s "
	    "replicas=%d",
	    name, r);
	return 0;
}

static int
read_deployment(const cJSON *obj, const char *name, struct topology *t)
{
	int r;

	if (read_replicas(obj, &r))
		return -1;
	t->base = r;
	snprintf(t->base_src, sizeof(t->base_src),
	    "deployment/%s "
	    "replicas=%d",
	    name, r);
	deployment_surge(obj, "deployment", name, r, t);
	return 0;
}

static int
read_rollout(const cJSON *obj, const char *name, struct topology *t)
{
	int r, pr;

	if (read_replicas(obj, &r))
		return -1;
	t->base = r;
	if (!cJSON_IsObject(j_at(obj, "spec.strategy.blueGreen"))) {
		snprintf(t->base_src, sizeof(t->base_src),
		    "rollout/%s "
		    "replicas=%d strategy=canary",
		    name, r);
		deployment_surge(obj, "rollout", name, r, t);
		return 0;
	}
	if ((pr = j_int(
	         obj, "spec.strategy.blueGreen.previewReplicaCount", r)) < 0)
		pr = r;
	snprintf(t->base_src, sizeof(t->base_src),
	    "rollout/%s replicas=%d "
	    "strategy=blueGreen",
	    name, r);
	/* Active and preview both serve during a switch. */
	t->colours += pr;
	snprintf(t->colours_src, sizeof(t->colours_src),
	    "rollout/%s preview "
	    "replicas=%d",
	    name, pr);
	return 0;
}

/* A ReplicaSet that no Deployment or Rollout owns. */
static int
read_replicaset(const cJSON *obj, const char *name, struct topology *t)
{
	int r;

	if (read_replicas(obj, &r))
		return -1;
	t->base = r;
	snprintf(t->base_src, sizeof(t->base_src),
	    "replicaset/%s replicas=%d "
	    "(no deployment)",
	    name, r);
	return 0;
}

static const struct ctl_kind ctl_kinds[] = {
    {"apps", "StatefulSet", "statefulsets", "statefulset", true, false,
        read_statefulset, NULL},
    {"apps", "ReplicaSet", "replicasets", "replicaset", true, false,
        read_replicaset, NULL},
    {"apps", "Deployment", "deployments", "deployment", false, true,
        read_deployment, NULL},
    {"argoproj.io", "Rollout", "rollouts", "rollout", false, true, read_rollout,
        "Argo Rollouts is not installed (or its CRD was "
        "removed)"},
};
#define CTL_REPLICASET (&ctl_kinds[1])

#define CTL_KINDS (sizeof(ctl_kinds) / sizeof(ctl_kinds[0]))

/* The table entry of an ownerReference's group and kind, or NULL. */
static const struct ctl_kind *
ctl_by_kind(const char *group, const char *kind)
{
	size_t i;

	for (i = 0; i < CTL_KINDS; i++)
		if (strcmp(ctl_kinds[i].group, group) == 0 &&
		    strcmp(ctl_kinds[i].kind, kind) == 0)
			return &ctl_kinds[i];
	return NULL;
}

/* The table entry of a chain key's label ("deployment"), or NULL. */
static const struct ctl_kind *
ctl_by_label(const char *label)
{
	size_t i;

	for (i = 0; i < CTL_KINDS; i++)
		if (strcmp(ctl_kinds[i].label, label) == 0)
			return &ctl_kinds[i];
	return NULL;
}

/* One link of the chain: the object (label/name) and who it belongs to. */
struct link {
	const struct ctl_kind *ck; /* NULL: the pod */
	char name[254];
	const char *rel; /* "controller" / "owner" */
	const char *of_label; /* "pod" / "replicaset" */
	char of[254];
};

/* A 404 on a link of the controller chain, e.g. "deployment/chat, the
 * owner of replicaset/chat-7d4b, is not found". */
static int
chain_gone(struct kube *k, const struct link *l, struct agent_err *err)
{
	if (l->ck->missing != NULL && strstr(err->msg, "does not serve"))
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: %s/%s "
		    "is owned by %s/%s, but the API server does not serve "
		    "%s.%s/%s: %s",
		    l->of_label, l->of, l->ck->label, l->name, l->ck->resource,
		    l->ck->group,
		    strrchr(kube_path_prefix(l->ck->group), '/') + 1,
		    l->ck->missing);
	return err_set(err, EXIT_AGENT_DISCOVERY,
	    "kubernetes: %s/%s, the %s "
	    "of %s/%s, is not found in namespace \"%s\"; was it deleted?",
	    l->ck->label, l->name, l->rel, l->of_label, l->of, k->ns);
}

/* GETs the link's object into *obj (a 404 named as a broken chain). */
static int
link_get(
    struct kube *k, const struct link *l, cJSON **obj, struct agent_err *err)
{
	long status;
	int rc;

	rc = kube_get(
	    k, l->ck->group, l->ck->resource, l->name, obj, &status, err);
	if (rc && status == 404)
		chain_gone(k, l, err);
	return rc;
}

/*
 * The next link from obj's controller ownerReference.  Returns 0 with
 * l->ck set, 0 with l->ck NULL when obj has no controller, or an error
 * (malformed or uncountable owner).
 */
static int
link_next(
    struct kube *k, const cJSON *obj, struct link *l, struct agent_err *err)
{
	const cJSON *ref = controller_of(obj);
	const char *kind, *name;
	const struct ctl_kind *ck;
	bool of_pod = l->ck == NULL;
	char g[128];

	snprintf(l->of, sizeof(l->of), "%s", of_pod ? k->pod : l->name);
	l->of_label = of_pod ? "pod" : l->ck->label;
	l->rel = of_pod ? "controller" : "owner";
	l->ck = NULL;
	if (ref == NULL)
		return 0;
	kind = j_str(ref, "kind");
	name = j_str(ref, "name");
	api_group(j_str(ref, "apiVersion"), g, sizeof(g));
	if (kind == NULL || name == NULL || !dns_name_ok(name, 253))
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: %s/%s "
		    "has a malformed controller ownerReference",
		    l->of_label, l->of);
	ck = ctl_by_kind(g, kind);
	if (ck == NULL || !(of_pod ? ck->owns_pods : ck->owns_rs)) {
		if (of_pod)
			return err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubernetes: "
			    "pod/%s is controlled by %s/%s (%s), which "
			    "pylon-agent cannot count; run it under a "
			    "Deployment, StatefulSet or Argo Rollout, or use "
			    "--platform static --replicas N",
			    k->pod, kind, name, g[0] ? g : "core");
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: %s/%s "
		    "is owned by %s/%s (%s), which pylon-agent cannot count; "
		    "use --platform static --replicas N",
		    l->of_label, l->of, kind, name, g[0] ? g : "core");
	}
	l->ck = ck;
	snprintf(l->name, sizeof(l->name), "%s", name);
	return 0;
}

/* What the chain's end adds: its object, its HPAs, the other colours. */
static int
read_end(struct kube *k, const struct ctl_kind *ck, const char *name,
    const cJSON *obj, struct topology *t, struct agent_err *err)
{
	int rc;

	if (ck->read(obj, name, t))
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubernetes: the "
		    "controller of pod/%s (%s/%s) has a malformed "
		    "spec.replicas",
		    k->pod, ck->label, name);
	snprintf(t->chain, sizeof(t->chain), "%s/%s", ck->label, name);
	if ((rc = find_hpa(k, ck->group, ck->kind, name, t, err)))
		return rc;
	if (k->opts->app_selector != NULL && ck != CTL_REPLICASET)
		return find_colours(k, ck->label, name, t, err);
	return 0;
}

/* Caches the pod's uid for report_event (same process). */
static void
cache_pod_uid(struct kube *k, const cJSON *pod)
{
	const char *uid = j_str(pod, "metadata.uid");

	pthread_mutex_lock(&cache_mu);
	snprintf(cache_pod, sizeof(cache_pod), "%s", k->pod);
	snprintf(cache_ns, sizeof(cache_ns), "%s", k->ns);
	snprintf(cache_uid, sizeof(cache_uid), "%s", uid ? uid : "");
	pthread_mutex_unlock(&cache_mu);
}

/*
 * The first discovery: GET the pod, follow controller ownerReferences
 * through the table (Pod -> StatefulSet | ReplicaSet -> Deployment |
 * Rollout), then read the chain's end.  t->chain keeps the end for
 * kube_resync: the chain does not change for the pod's life.
 */
static int
discover_chain(struct kube *k, struct topology *t, struct agent_err *err)
{
	cJSON *pod = NULL, *obj = NULL;
	struct link l, end;
	long status;
	int rc;

	rc = kube_get(k, "", "pods", k->pod, &pod, &status, err);
	if (rc) {
		if (status == 404)
			err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubernetes: pod "
			    "\"%s\" not found in namespace \"%s\": POD_NAME and "
			    "POD_NAMESPACE must name this pod (set them from "
			    "the downward API)",
			    k->pod, k->ns);
		goto out;
	}
	t->init_fallback = native_sidecar_dropped(pod);
	snprintf(t->fallback_of, sizeof(t->fallback_of), "%s",
	    kube_container_name());
	cache_pod_uid(k, pod);
	memset(&l, 0, sizeof(l));
	if ((rc = link_next(k, pod, &l, err)))
		goto out;
	if (l.ck == NULL) {
		t->base = 1;
		snprintf(t->base_src, sizeof(t->base_src),
		    "pod/%s (bare pod, no controller)", k->pod);
		snprintf(t->chain, sizeof(t->chain), "pod/%s", k->pod);
		goto out;
	}
	/* At most two links: a ReplicaSet's owner ends the chain. */
	for (;;) {
		if ((rc = link_get(k, &l, &obj, err)))
			goto out;
		if (l.ck != CTL_REPLICASET)
			break;
		end = l;
		if ((rc = link_next(k, obj, &l, err)))
			goto out;
		if (l.ck == NULL) {
			l = end; /* an orphaned ReplicaSet ends it */
			break;
		}
		cJSON_Delete(obj);
		obj = NULL;
	}
	rc = read_end(k, l.ck, l.name, obj, t, err);
out:
	cJSON_Delete(pod);
	cJSON_Delete(obj);
	return rc;
}

static bool
kube_detect(const struct options *o)
{
	const char *h = getenv("KUBERNETES_SERVICE_HOST");

	return (h != NULL && *h != '\0') ||
	    (o->kubeconfig != NULL && *o->kubeconfig != '\0');
}

static int
kube_discover(
    const struct options *opts, struct topology *t, struct agent_err *err)
{
	struct kube k;
	int rc;

	if (opts->app_selector != NULL &&
	    kube_selector_match(opts->app_selector, NULL, err) < 0)
		return err->code;
	if ((rc = kube_open(&k, opts, err)))
		return rc;
	snprintf(t->platform, sizeof(t->platform), "kubernetes");
	snprintf(t->instance, sizeof(t->instance), "%s", k.pod);
	snprintf(t->pod_namespace, sizeof(t->pod_namespace), "%s", k.ns);
	rc = discover_chain(&k, t, err);
	t->api_requests = k.requests;
	log_debug(
	    "kubernetes: %d API requests via %s", k.requests, k.cfg.source);
	kube_close(&k);
	return rc;
}

/* ---- reporting ---------------------------------------------------------- */

static int
report_annotations(
    struct kube *k, const struct decision *d, struct agent_err *err)
{
	cJSON *patch, *ann, *out = NULL;
	char *body = NULL, peers[16];
	long status;
	int rc;

	snprintf(peers, sizeof(peers), "%d", d->peers);
	patch = cJSON_CreateObject();
	if (patch == NULL)
		return err_oom(err, "annotations");
	ann = cJSON_AddObjectToObject(
	    cJSON_AddObjectToObject(patch, "metadata"), "annotations");
	if (ann == NULL ||
	    !cJSON_AddStringToObject(
	        ann, "pylon.dev/cluster-bus", mode_name(d->mode)) ||
	    !cJSON_AddStringToObject(ann, "pylon.dev/cluster-peers", peers) ||
	    (body = cJSON_PrintUnformatted(patch)) == NULL) {
		cJSON_Delete(patch);
		return err_oom(err, "annotations");
	}
	cJSON_Delete(patch);
	rc = kube_call(k, "PATCH", "patch", "", "pods", k->pod, NULL,
	    "application/merge-patch+json", body, &out, &status, err);
	cJSON_Delete(out);
	a_free(body);
	return rc;
}

static int
report_event(struct kube *k, const struct decision *d, enum report_kind kind,
    const char *message, struct agent_err *err)
{
	static const char *reasons[] = {"ClusterBusReady",
	    "ClusterBusUnavailable", "ClusterBusDrift", "ClusterBusDeafPylon"};
	static const char *actions[] = {
	    "ProveBus", "CheckBus", "CheckTopology", "CheckBus"};
	cJSON *ev, *md, *reg, *out = NULL;
	char name[254], inst[129], when[40];
	char note[1025], red[1025];
	char uid[64] = "", *body = NULL;
	struct timespec ts;
	long status;
	int rc, ki = kind >= 0 && kind <= 3 ? (int)kind : 0;
	size_t n;

	pthread_mutex_lock(&cache_mu);
	if (strcmp(cache_pod, k->pod) == 0 && strcmp(cache_ns, k->ns) == 0)
		snprintf(uid, sizeof(uid), "%s", cache_uid);
	pthread_mutex_unlock(&cache_mu);
	if (uid[0] == '\0') {
		/* kubectl describe matches events on the pod's uid. */
		rc = kube_get(k, "", "pods", k->pod, &out, &status, err);
		if (rc)
			return rc;
		snprintf(uid, sizeof(uid), "%s",
		    j_str(out, "metadata.uid") ? j_str(out, "metadata.uid")
		                               : "");
		cJSON_Delete(out);
		out = NULL;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	/* <pod>.<hex unix nanos>, like client-go; a DNS subdomain. */
	n = strlen(k->pod);
	if (n > 253 - 17)
		n = 253 - 17;
	snprintf(name, sizeof(name), "%.*s.%llx", (int)n, k->pod,
	    (unsigned long long)ts.tv_sec * 1000000000ull +
	        (unsigned long long)ts.tv_nsec);
	snprintf(inst, sizeof(inst), "pylon-agent-%s", k->pod);
	iso8601_now_micro(when, sizeof(when));
	snprintf(note, sizeof(note), "%s",
	    message && *message ? message : d->reason);
	redact(note, red, sizeof(red));
	red[1024] = '\0';

	if ((ev = cJSON_CreateObject()) == NULL)
		return err_oom(err, "event");
	cJSON_AddStringToObject(ev, "apiVersion", "events.k8s.io/v1");
	cJSON_AddStringToObject(ev, "kind", "Event");
	md = cJSON_AddObjectToObject(ev, "metadata");
	cJSON_AddStringToObject(md, "name", name);
	cJSON_AddStringToObject(md, "namespace", k->ns);
	cJSON_AddStringToObject(ev, "eventTime", when);
	cJSON_AddStringToObject(ev, "reportingController", "pylon.dev/agent");
	cJSON_AddStringToObject(ev, "reportingInstance", inst);
	cJSON_AddStringToObject(ev, "action", actions[ki]);
	cJSON_AddStringToObject(ev, "reason", reasons[ki]);
	cJSON_AddStringToObject(ev, "type", ki == 0 ? "Normal" : "Warning");
	cJSON_AddStringToObject(ev, "note", red);
	reg = cJSON_AddObjectToObject(ev, "regarding");
	cJSON_AddStringToObject(reg, "apiVersion", "v1");
	cJSON_AddStringToObject(reg, "kind", "Pod");
	cJSON_AddStringToObject(reg, "name", k->pod);
	cJSON_AddStringToObject(reg, "namespace", k->ns);
	if (uid[0])
		cJSON_AddStringToObject(reg, "uid", uid);
	body = cJSON_PrintUnformatted(ev);
	cJSON_Delete(ev);
	if (body == NULL)
		return err_oom(err, "event");
	rc = kube_call(k, "POST", "create", "events.k8s.io", "events", NULL,
	    NULL, "application/json", body, &out, &status, err);
	cJSON_Delete(out);
	a_free(body);
	return rc;
}

static int
kube_report(const struct options *opts, const struct decision *d,
    enum report_kind kind, const char *message, struct agent_err *err)
{
	struct kube k;
	struct agent_err e2;
	int rc = 0, rc2;

	if ((opts->report & (REPORT_ANNOTATIONS | REPORT_EVENTS)) == 0)
		return 0;
	if ((rc = kube_open(&k, opts, err)))
		return rc;
	if (opts->report & REPORT_ANNOTATIONS)
		rc = report_annotations(&k, d, err);
	if (opts->report & REPORT_EVENTS) {
		memset(&e2, 0, sizeof(e2));
		rc2 = report_event(&k, d, kind, message, &e2);
		if (rc2 && rc) {
			char first[AGENT_ERR_LEN];

			memcpy(first, err->msg, sizeof(first));
			err_set(err, rc, "%.500s; and %.500s", first, e2.msg);
		} else if (rc2) {
			*err = e2;
			rc = rc2;
		}
	}
	kube_close(&k);
	return rc;
}

/*
 * serve's resync: the owner chain does not change for a pod's life, so
 * only its end (t->chain, "deployment/chat") and the HPAs are re-read,
 * from the API server's watch cache: 2 requests (a bare pod: none).
 */
static int
kube_resync(
    const struct options *opts, struct topology *t, struct agent_err *err)
{
	const struct ctl_kind *ck;
	struct topology n;
	struct kube k;
	struct link l;
	cJSON *obj = NULL;
	const char *slash = strchr(t->chain, '/');
	char label[32];
	int rc;

	if (slash == NULL || (size_t)(slash - t->chain) >= sizeof(label))
		return PLATFORM_RESYNC_FULL;
	snprintf(
	    label, sizeof(label), "%.*s", (int)(slash - t->chain), t->chain);
	ck = ctl_by_label(label);
	if (ck == NULL && strcmp(label, "pod") != 0)
		return PLATFORM_RESYNC_FULL;
	if ((rc = kube_open(&k, opts, err)))
		return rc;
	if (strcmp(k.pod, t->instance) != 0 ||
	    strcmp(k.ns, t->pod_namespace) != 0) {
		kube_close(&k);
		return PLATFORM_RESYNC_FULL; /* another pod's state */
	}
	t->api_requests = 0;
	if (ck == NULL) { /* a bare pod: nothing moves */
		kube_close(&k);
		return 0;
	}
	k.from_cache = true;
	memset(&n, 0, sizeof(n));
	memcpy(n.platform, t->platform, sizeof(n.platform));
	memcpy(n.instance, t->instance, sizeof(n.instance));
	memcpy(n.pod_namespace, t->pod_namespace, sizeof(n.pod_namespace));
	memcpy(n.fallback_of, t->fallback_of, sizeof(n.fallback_of));
	n.init_fallback = t->init_fallback;
	memset(&l, 0, sizeof(l));
	l.ck = ck;
	snprintf(l.name, sizeof(l.name), "%s", slash + 1);
	l.rel = "controller";
	l.of_label = "pod";
	snprintf(l.of, sizeof(l.of), "%s", k.pod);
	if ((rc = link_get(&k, &l, &obj, err)) == 0 &&
	    (rc = read_end(&k, ck, l.name, obj, &n, err)) == 0)
		*t = n;
	t->api_requests = k.requests;
	log_debug(
	    "kubernetes: resync of %s: %d API requests", t->chain, k.requests);
	cJSON_Delete(obj);
	kube_close(&k);
	return rc;
}

static void
kube_identity(const struct options *o, const struct topology *t,
    struct platform_identity *id)
{
	(void)o;
	if (t->pod_namespace[0] == '\0')
		return;
	id->scope_label = "namespace";
	snprintf(id->scope, sizeof(id->scope), "%s", t->pod_namespace);
}

const struct platform platform_kubernetes = {
    .name = "kubernetes",
    .detect = kube_detect,
    .discover = kube_discover,
    .report = kube_report,
    .resync = kube_resync,
    .identity = kube_identity,
};
