/*
 * serve_int.h - what the serve_*.c files share and nothing else sees: the
 * context of one `serve` run and the calls between its threads.
 */
#ifndef PYLON_AGENT_SERVE_INT_H
#define PYLON_AGENT_SERVE_INT_H

#include "serve.h"

#define SERVE_MIN_INTERVAL_MS 100
#define SERVE_MIN_RESYNC_MS 1000

struct serve_ctx {
	struct options *opts;
	struct agent_state st;
	volatile int stop;
	bool supervising;
	/* loop -> main, under st.mu */
	bool child_start;
	bool child_restart; /* deaf Pylon: restart CMD */
	bool loop_done;
	bool exit_req;
	int exit_code;
	struct agent_err exit_err;
	struct proxy *proxy; /* --bus-proxy, or NULL */
};

struct httpd;

/* serve_http.c: listens on opts->listen and answers from snapshots. */
struct httpd *serve_http_start(struct serve_ctx *, struct agent_err *);
void serve_http_stop(struct httpd *);
void serve_snap_take(struct serve_ctx *, struct serve_snap *);

/* serve_loop.c: the loop thread's body (pthread start routine). */
void *serve_loop(void *);

#endif
