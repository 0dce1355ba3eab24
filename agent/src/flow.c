/*
 * flow.c - the steps every command composes: pick the platform, discover,
 * decide (with the discovery-error policy), prove.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "bus.h"

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

int
flow_decide(const struct options *o, struct topology *t, struct decision *d,
    struct agent_err *err)
{
	const struct platform	*p = platform_select(o);
	struct agent_err	 why;
	int			 rc;

	memset(t, 0, sizeof(*t));
	snprintf(t->platform, sizeof(t->platform), "%s", p->name);
	err_clear(&why);
	if ((rc = p->discover(o, t, &why)) == 0)
		return decide(t, o, d, err);
	/* Bad local configuration is never "discovery trouble". */
	if (rc != EXIT_AGENT_DISCOVERY) {
		*err = why;
		return rc;
	}
	log_warnx("%s discovery failed: %s", p->name, why.msg);
	rc = decide_discovery_failed(o, p->name, &why, d, err);
	if (rc == 0 && t->instance[0])
		snprintf(d->instance, sizeof(d->instance), "%s", t->instance);
	return rc;
}

int
flow_prove(const struct options *o, const struct decision *d,
    struct bus_result *res, struct agent_err *err)
{
	memset(res, 0, sizeof(*res));
	res->latency_ms = -1;
	if (d->mode != MODE_REDIS)
		return 0;
	/* decide() refused such a URL already; a refused URL is never
	 * proven, whoever calls. */
	if (redis_url_pylon_check(o->redis_url, decide_url_flags(o), err))
		return err->code;
	return bus_prove(o->redis_url, o->redis_ca_file, d->channel,
	    o->timeout_ms, res, err);
}
