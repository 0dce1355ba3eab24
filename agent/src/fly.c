/* fly.c - Kubernetes platform adapter (stub until the Kubernetes issue). */
#include "agent.h"

static bool
fly_detect(const struct options *o)
{
	(void)o;
	return false;
}

static int
fly_discover(const struct options *o, struct topology *t,
    struct agent_err *err)
{
	(void)o;
	(void)t;
	return err_set(err, EXIT_AGENT_DISCOVERY,
	    "flyrnetes discovery is not implemented in this build");
}

const struct platform platform_flyrnetes = {
	.name = "flyrnetes",
	.detect = fly_detect,
	.discover = fly_discover,
	.report = NULL,
};
