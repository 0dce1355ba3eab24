/* platform_static.c - the peer count is given: --replicas (default 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

static bool
static_detect(const struct options *o)
{
	(void)o;
	return true;
}

static int
static_discover(
    const struct options *o, struct topology *t, struct agent_err *err)
{
	const char *h = getenv("HOSTNAME");
	char host[256];

	(void)err;
	if (h == NULL || *h == '\0') {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "unknown");
		host[sizeof(host) - 1] = '\0';
		h = host;
	}
	snprintf(t->instance, sizeof(t->instance), "%s", h);
	t->base = o->replicas;
	snprintf(t->base_src, sizeof(t->base_src), "static replicas=%d%s",
	    o->replicas, o->replicas_set ? "" : " (default)");
	return 0;
}

const struct platform platform_static = {
    .name = "static",
    .detect = static_detect,
    .discover = static_discover,
    .report = NULL,
};
