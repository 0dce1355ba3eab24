/* kube.c - Kubernetes platform adapter (stub until the Kubernetes issue). */
#include "agent.h"

static bool
kube_detect(const struct options *o)
{
	(void)o;
	return false;
}

static int
kube_discover(const struct options *o, struct topology *t,
    struct agent_err *err)
{
	(void)o;
	(void)t;
	return err_set(err, EXIT_AGENT_DISCOVERY,
	    "kubernetes discovery is not implemented in this build");
}

const struct platform platform_kubernetes = {
	.name = "kubernetes",
	.detect = kube_detect,
	.discover = kube_discover,
	.report = NULL,
};
