/* serve.c - stub until the serve issue lands. */
#include "serve.h"

int
cmd_serve(struct options *o, struct agent_err *err)
{
	(void)o;
	return err_set(err, EXIT_AGENT_USAGE, "serve is not implemented yet");
}

int
cmd_probe(struct options *o, struct agent_err *err)
{
	(void)o;
	return err_set(err, EXIT_AGENT_USAGE, "probe is not implemented yet");
}
