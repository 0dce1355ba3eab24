/*
 * serve.h - the long-running sidecar (serve.c) and the child supervisor
 * (supervise.c).
 */
#ifndef PYLON_AGENT_SERVE_H
#define PYLON_AGENT_SERVE_H

#include "agent.h"

/* serve [-- CMD...]: returns the process exit status. */
int	cmd_serve(struct options *, struct agent_err *);
/* probe: one quick check; returns 0 usable, else an exit code. */
int	cmd_probe(struct options *, struct agent_err *);

#endif
