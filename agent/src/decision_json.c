/*
 * decision_json.c - the decision as JSON, one writer for `decide --output
 * json` and serve's /status (SPEC 6 order): mode, reason, platform, peers,
 * namespace, channel, redis {url, proven, latency_ms, error, ...}, instance,
 * drift, discovery_failed.  Callers add their own keys around it.
 */
#include <stdint.h>

#include <cjson/cJSON.h>

#include "agent.h"

double
latency_round(double ms)
{
	/* to the microsecond; >= 0, so no round() and no libm (whose mapped
	 * pages would be a quarter MiB of serve's RSS) */
	return ms < 0 ? ms : (double)(int64_t)(ms * 1000 + 0.5) / 1000;
}

bool
json_str_or_null(cJSON *o, const char *k, const char *s)
{
	if (s == NULL || s[0] == '\0')
		return cJSON_AddNullToObject(o, k) != NULL;
	return cJSON_AddStringToObject(o, k, s) != NULL;
}

cJSON *
decision_json_begin(cJSON *root, const struct decision_json *v, bool *ok)
{
	const struct decision *d = v->d;
	cJSON *redis;

	*ok &= json_str_or_null(root, "mode", d ? mode_name(v->mode) : NULL);
	*ok &= json_str_or_null(root, "reason", d ? d->reason : v->reason);
	*ok &= json_str_or_null(root, "platform", d ? d->platform : NULL);
	if (d != NULL)
		*ok &= cJSON_AddNumberToObject(root, "peers", d->peers) != NULL;
	else
		*ok &= cJSON_AddNullToObject(root, "peers") != NULL;
	*ok &= json_str_or_null(root, "namespace", d ? d->namespace : NULL);
	*ok &= json_str_or_null(root, "channel", d ? d->channel : NULL);
	if ((redis = cJSON_AddObjectToObject(root, "redis")) == NULL) {
		*ok = false;
		return NULL;
	}
	*ok &= json_str_or_null(redis, "url", v->redis_url);
	*ok &= cJSON_AddBoolToObject(redis, "proven", v->proven) != NULL;
	if (v->proven && v->latency_ms >= 0)
		*ok &= cJSON_AddNumberToObject(redis, "latency_ms",
		           latency_round(v->latency_ms)) != NULL;
	else
		*ok &= cJSON_AddNullToObject(redis, "latency_ms") != NULL;
	*ok &= json_str_or_null(redis, "error", v->error);
	return redis;
}

void
decision_json_end(cJSON *root, const struct decision_json *v, bool *ok)
{
	*ok &= json_str_or_null(root, "instance", v->d ? v->d->instance : NULL);
	*ok &= cJSON_AddBoolToObject(root, "drift", v->drift) != NULL;
	*ok &= cJSON_AddBoolToObject(root, "discovery_failed",
	           v->d != NULL && v->d->discovery_failed) != NULL;
}
