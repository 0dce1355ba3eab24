/*
 * fuzz_kube_json.c - libFuzzer target: Kubernetes API JSON as kube.c reads
 * it through its pure helpers (kube.h): label selectors matched against an
 * object's labels (--app-selector over Deployment/StatefulSet templates),
 * IntOrString maxSurge resolution, and Status error bodies turned into the
 * one-line error.
 *
 * Input: byte 0 picks the HTTP status and replicas; the rest is split at
 * the first two NUL bytes into selector, object JSON and Status body
 * (without NULs the whole rest is both the object and the body).
 *
 * The controller-chain and HPA item handlers in kube.c are file-local
 * (static, not STATIC); they only read objects through the same cJSON
 * accessors exercised here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agent.h"
#include "kube.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const long statuses[] = { 401, 403, 404, 409, 410, 422, 429, 500,
	503, 200, 0, 418, 301, 504, 400, 999 };

static const cJSON *
at(const cJSON *o, const char *a, const char *b, const char *c)
{
	o = cJSON_GetObjectItemCaseSensitive(o, a);
	if (b != NULL)
		o = cJSON_GetObjectItemCaseSensitive(o, b);
	if (c != NULL)
		o = cJSON_GetObjectItemCaseSensitive(o, c);
	return o;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_err	 err;
	char			*buf, *sel = NULL, *obj, *body, *z;
	cJSON			*j;
	const cJSON		*labels;
	uint8_t			 b = 0;
	int			 m, s, replicas;

	if (size > 0) {
		b = data[0];
		data++;
		size--;
	}
	if ((buf = malloc(size + 1)) == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	obj = body = buf;
	if ((z = memchr(buf, '\0', size)) != NULL) {
		sel = buf;
		obj = body = z + 1;
		if ((size_t)(obj - buf) <= size &&
		    (z = memchr(obj, '\0', size - (size_t)(obj - buf))) != NULL)
			body = z + 1;
	}
	replicas = (b >> 4) * 7;

	if ((j = cJSON_Parse(obj)) != NULL) {
		/* --app-selector against a template's labels */
		labels = at(j, "spec", "template", "metadata");
		labels = cJSON_GetObjectItemCaseSensitive(labels, "labels");
		if (labels == NULL)
			labels = at(j, "metadata", "labels", NULL);
		err_clear(&err);
		m = kube_selector_match(sel ? sel : "app=chat,color in "
		    "(blue,green),!canary", labels, &err);
		if (m < -1 || m > 1 || (m == -1 && err.msg[0] == '\0'))
			abort();
		/* maxSurge of a Deployment or a canary Rollout */
		s = kube_surge_resolve(at(j, "spec", "strategy",
		    "rollingUpdate") ? cJSON_GetObjectItemCaseSensitive(
		    at(j, "spec", "strategy", "rollingUpdate"), "maxSurge") :
		    cJSON_GetObjectItemCaseSensitive(at(j, "spec", "strategy",
		    "canary"), "maxSurge"), replicas);
		if (s < -1)
			abort();
		s = kube_surge_resolve(j, replicas);
		if (s < -1)
			abort();
		cJSON_Delete(j);
	}
	/* A non-2xx answer: one line, never empty. */
	err_clear(&err);
	if (kube_status_error(statuses[b & 15], body, "get", (b & 16) ?
	    "apps" : "", "deployments", (b & 32) ? "chat" : NULL,
	    (b & 64) ? "prod" : NULL, &err) != EXIT_AGENT_DISCOVERY ||
	    err.msg[0] == '\0' || strchr(err.msg, '\n') != NULL)
		abort();
	free(buf);
	log_clear_secrets();
	return 0;
}
