/* bus.c - the bus proof (stub until the bus-proof issue lands). */
#include "bus.h"

int
bus_prove(const char *url, const char *ca_file, const char *channel,
    long timeout_ms, struct bus_result *res, struct agent_err *err)
{
	(void)url; (void)ca_file; (void)channel; (void)timeout_ms; (void)res;
	return err_set(err, EXIT_AGENT_UNPROVEN,
	    "bus proof is not implemented in this build: refusing to claim "
	    "redis mode without proving it");
}

int
bus_session_open(struct bus_session **s, const char *url,
    const char *ca_file, const char *channel, long timeout_ms,
    bool publish_probe, struct bus_result *res, struct agent_err *err)
{
	(void)publish_probe;
	*s = NULL;
	return bus_prove(url, ca_file, channel, timeout_ms, res, err);
}

int
bus_session_check(struct bus_session *s, long timeout_ms, double *lat,
    long *numsub, struct agent_err *err)
{
	(void)s; (void)timeout_ms; (void)lat; (void)numsub;
	return err_set(err, EXIT_AGENT_UNPROVEN, "not implemented");
}

void
bus_session_close(struct bus_session *s)
{
	(void)s;
}
