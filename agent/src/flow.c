/*
 * flow.c - the steps every command composes: pick the platform, discover,
 * decide (with the discovery-error policy), prove.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "bus.h"

static const struct platform *const platforms[] = {
    &platform_kubernetes, &platform_fly, &platform_static, NULL};

const struct platform *
platform_by_name(const char *name)
{
	size_t i;

	for (i = 0; platforms[i] != NULL; i++)
		if (strcmp(platforms[i]->name, name) == 0)
			return platforms[i];
	return NULL;
}

int
platform_resolve_all(struct options *o, struct agent_err *err)
{
	size_t i;
	int rc;

	for (i = 0; platforms[i] != NULL; i++)
		if (platforms[i]->resolve != NULL &&
		    (rc = platforms[i]->resolve(o, err)) != 0)
			return rc;
	return 0;
}

bool
platform_secret_env(const char *name, size_t n)
{
	const char *const *e;
	size_t i;

	for (i = 0; platforms[i] != NULL; i++)
		for (e = platforms[i]->secret_env; e != NULL && *e != NULL; e++)
			if (strlen(*e) == n && strncmp(*e, name, n) == 0)
				return true;
	return false;
}

const struct platform *
platform_select(const struct options *o)
{
	switch (o->platform) {
	case PLATFORM_KUBERNETES:
		return &platform_kubernetes;
	case PLATFORM_FLY:
		return &platform_fly;
	case PLATFORM_STATIC:
		return &platform_static;
	case PLATFORM_AUTO:
		break;
	}
	if (platform_kubernetes.detect(o))
		return &platform_kubernetes;
	if (platform_fly.detect(o))
		return &platform_fly;
	return &platform_static;
}

/* What this process last discovered and proved, for flow_state_write
 * (init is single-threaded; serve's loop thread also passes here). */
static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static struct topology last_topo;
static double last_latency = -1;
static bool last_proven;

static int
flow_finish(const struct options *o, const struct platform *p, int rc,
    struct topology *t, const struct agent_err *why, struct decision *d,
    struct agent_err *err)
{
	if (rc == 0) {
		pthread_mutex_lock(&last_mu);
		last_topo = *t;
		pthread_mutex_unlock(&last_mu);
		return decide(t, o, d, err);
	}
	/* Bad local configuration is never "discovery trouble". */
	if (rc != EXIT_AGENT_DISCOVERY) {
		*err = *why;
		return rc;
	}
	log_warnx("%s discovery failed: %s", p->name, why->msg);
	rc = decide_discovery_failed(o, p->name, why, d, err);
	if (rc == 0 && t->instance[0])
		snprintf(d->instance, sizeof(d->instance), "%s", t->instance);
	return rc;
}

int
flow_decide(const struct options *o, struct topology *t, struct decision *d,
    struct agent_err *err)
{
	const struct platform *p = platform_select(o);
	struct agent_err why;
	int rc;

	memset(t, 0, sizeof(*t));
	snprintf(t->platform, sizeof(t->platform), "%s", p->name);
	err_clear(&why);
	rc = p->discover(o, t, &why);
	return flow_finish(o, p, rc, t, &why, d, err);
}

int
flow_resync(const struct options *o, struct topology *t, struct decision *d,
    struct agent_err *err)
{
	const struct platform *p = platform_select(o);
	struct topology prev = *t;
	struct agent_err why;
	int rc;

	if (p->resync == NULL || t->chain[0] == '\0' ||
	    strcmp(t->platform, p->name) != 0)
		return flow_decide(o, t, d, err);
	err_clear(&why);
	if ((rc = p->resync(o, t, &why)) == PLATFORM_RESYNC_FULL) {
		log_debug("%s: resync needs a full discovery: %s", p->name,
		    why.msg[0] ? why.msg : "the topology changed");
		return flow_decide(o, t, d, err);
	}
	if (rc != 0)
		*t = prev; /* keep what was known */
	return flow_finish(o, p, rc, t, &why, d, err);
}

int
flow_prove(const struct options *o, const struct decision *d,
    struct bus_result *res, struct agent_err *err)
{
	int rc;

	memset(res, 0, sizeof(*res));
	res->latency_ms = -1;

	if (d->mode != MODE_REDIS)
		return 0;
	/* decide() refused such a URL already; a refused URL is never
	 * proven, whoever calls. */
	if (redis_url_pylon_check(o->redis_url, decide_url_flags(o), err))
		return err->code;
	rc = bus_prove(o->redis_url, o->redis_ca_file, d->channel,
	    o->timeout_ms, res, err);
	pthread_mutex_lock(&last_mu);
	last_proven = rc == 0;
	last_latency = rc == 0 ? res->latency_ms : -1;
	pthread_mutex_unlock(&last_mu);
	return rc;
}

void
flow_state_write(const struct options *o, const struct decision *d)
{
	struct pod_state ps;
	struct agent_err err;

	memset(&ps, 0, sizeof(ps));
	ps.dec = *d;
	pthread_mutex_lock(&last_mu);
	ps.topo = last_topo;
	ps.proven = d->mode == MODE_REDIS && last_proven;
	ps.latency_ms = d->mode == MODE_REDIS ? last_latency : -1;
	/* What init already told the platform; a sidecar reports the rest. */
	ps.reported = o->report & ~REPORT_LOG;
	pthread_mutex_unlock(&last_mu);
	err_clear(&err);
	if (state_write(o->env_file, &ps, &err) != 0)
		log_warnx("cannot write the state file beside %s (a serve "
		          "sidecar will discover and prove again): %s",
		    o->env_file, err.msg);
}

const char *
flow_pylon_url(const struct options *o, const struct decision *d)
{
	return d->mode == MODE_REDIS ? o->redis_url : NULL;
}

int
flow_apply(const struct options *o, const struct decision *d, const char *url,
    struct agent_err *err)
{
	int rc;

	if ((rc = envfile_write(
	         o->env_file, d, d->mode == MODE_REDIS ? url : NULL, err)) != 0)
		return rc;
	flow_state_write(o, d); /* serve adopts it (SPEC 5) */
	log_info(
	    "env file written: %s (mode %s)", o->env_file, mode_name(d->mode));
	return 0;
}
