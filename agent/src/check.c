/* check.c - preflight (stub until the Fly issue lands). */
#include "agent.h"

int
cmd_check(struct options *o, struct agent_err *err)
{
	(void)o;
	return err_set(err, EXIT_AGENT_USAGE, "check is not implemented yet");
}
