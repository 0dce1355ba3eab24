/*
 * serve.h - the long-running sidecar (serve.c) and the child supervisor
 * (supervise.c).
 *
 * serve keeps one struct agent_state guarded by a mutex.  The loop thread
 * (decision, proof, checks, resync) writes it; the HTTP handlers copy the
 * plain-data struct serve_snap under the lock and render from the copy,
 * never waiting on Redis or an API.  The renderers below are pure so the
 * unit tests can drive them with hand-made snapshots.
 */
#ifndef PYLON_AGENT_SERVE_H
#define PYLON_AGENT_SERVE_H

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

#include "agent.h"

/* serve [-- CMD...]: returns the process exit status. */
int cmd_serve(struct options *, struct agent_err *);
/* probe: one quick check; returns 0 usable, else an exit code. */
int cmd_probe(struct options *, struct agent_err *);

/* Consecutive failed checks that make /readyz fail (SPEC 6). */
#define SERVE_FAILS_UNREADY 3
/* Finite buckets of pylon_agent_bus_check_seconds (+Inf is implied). */
#define SERVE_HIST_BUCKETS 12

enum numsub_state { NUMSUB_UNKNOWN, NUMSUB_OK, NUMSUB_OVER, NUMSUB_UNDER };
/* This pod's own Pylon subscription (CLIENT LIST, issue 20). */
enum own_state {
	OWN_UNKNOWN,
	OWN_OK,
	OWN_MISSING,
	OWN_DEAF,
	OWN_UNSUPPORTED,
	OWN_OFF
};
/* /pylon-livez answers 503 this long after a deaf judgment (sidecar
 * shape: the kubelet's livenessProbe restarts Pylon's container). */
#define SERVE_PYLON_LIVEZ_WINDOW_MS 60000
/* Restarts of a deaf Pylon per rolling hour, at most. */
#define SERVE_DEAF_RESTARTS_PER_HOUR 3

/* Everything a handler may show: plain data, copied by value. */
struct serve_snap {
	bool decided; /* the first decision is made */
	bool started; /* decided and, redis mode, proven */
	bool proven; /* redis: proven once (publish) */
	bool bus_ok; /* < SERVE_FAILS_UNREADY failures */
	bool shutting_down;
	bool drift;
	bool unready_on_drift; /* --on-drift unready */
	bool unready_on_bus_loss; /* --on-bus-loss unready */
	bool adopted; /* decision and proof from init's
					 * state file (no second proof) */
	bool supervising;
	enum bus_mode start_mode; /* the mode this pod runs with */
	struct decision dec; /* start mode; latest peers/reason */
	char phase[256]; /* what startup is waiting for */
	char redis_url[512]; /* redacted; "" when none */
	char bus_error[512]; /* last bus error; "" when none */
	char drift_msg[1280];
	double latency_ms; /* last good check/proof; < 0: none */
	int consecutive_failures;
	uint64_t check_failures_total;
	uint64_t discovery_errors_total;
	uint64_t reconnects_total;
	long numsub; /* < 0: unknown */
	int numsub_expected; /* Pylon processes running
						 * (the controller's count) */
	enum numsub_state numsub_state;
	uint64_t hist_bucket[SERVE_HIST_BUCKETS]; /* non-cumulative */
	uint64_t hist_count;
	double hist_sum; /* seconds */
	int64_t heartbeat_ms; /* loop thread's last sign of life */
	long stale_ms; /* heartbeat older than this: dead */
	pid_t child; /* supervised CMD, 0 none */
	enum own_state own_state;
	int own_subscribers; /* < 0: not measured */
	char own_ip[64]; /* this pod as Redis sees it */
	uint64_t deaf_total; /* deaf judgments */
	uint64_t pylon_restarts_total; /* heals (restart or 503) */
	int64_t pylon_livez_fail_until; /* now_ms() bound of 503 */
};

struct agent_state {
	pthread_mutex_t mu;
	struct serve_snap s;
};

extern const double serve_hist_bounds[SERVE_HIST_BUCKETS];

/* Pure renderers and predicates (serve.c). */
void serve_snap_init(struct serve_snap *);
/* HTTP status (200/503) and a one-line reason (no newline). */
int
serve_liveness(const struct serve_snap *, int64_t now, char *reason, size_t n);
int serve_startup(const struct serve_snap *, char *reason, size_t n);
int serve_readiness(const struct serve_snap *, char *reason, size_t n);
/* /pylon-livez: 503 while this pod's Pylon is judged deaf (for a bounded
 * window), else 200. */
int serve_pylon_liveness(
    const struct serve_snap *, int64_t now, char *reason, size_t n);
/* The bus is usable: decided and, redis mode, proven and < 3 failures.
 * (/readyz follows it only with --on-bus-loss unready.) */
bool serve_bus_ready(const struct serve_snap *);
/* malloc'd (a_malloc) renderings; NULL when out of memory. */
char *serve_status_json(const struct serve_snap *);
char *serve_metrics_text(const struct serve_snap *, size_t *len);
void serve_hist_observe(struct serve_snap *, double seconds);
/* What PUBSUB NUMSUB says about the channel.  The agent holds no
 * subscription, so it counts exactly the Pylon processes listening: more
 * than peers means another deploy shares the namespace; fewer than
 * expected (the processes running, at least 1) for NUMSUB_UNDER_READINGS
 * readings in a row (a minute apart: a rollout's churn passes) means a
 * deaf Pylon.  under is the count of low readings so far, this one
 * included. */
#define NUMSUB_UNDER_READINGS 2
enum numsub_state
serve_numsub_judge(long numsub, int peers, int expected, int under);
/* "host:port", "[v6]:port", ":port" (every address).  host gets "" for
 * the wildcard. */
int serve_listen_parse(const char *, char *host, size_t hn, char *port,
    size_t pn, struct agent_err *);

/* Supervisor (supervise.c), modelled on tini. */

/* The signals serve collects with sigtimedwait: SIGTERM, SIGINT, SIGHUP,
 * SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD.  Blocks them in the calling thread
 * (threads created later inherit the mask) and ignores SIGPIPE. */
void supervise_block_signals(sigset_t *set);
/* Marks this process a child subreaper (orphans of CMD come back to us
 * for reaping) unless it is PID 1 already. */
void supervise_subreaper(void);
/* The lowest file descriptor CMD must not inherit: everything open now
 * (the agent's own stdin/out/err and what its parent passed) is kept. */
int supervise_fd_floor(void);
/* fork + execvp argv with the current environment, signal mask and
 * dispositions reset; descriptors >= fd_floor are closed on exec.  An
 * exec failure makes the child exit 127 (not found) or 126. */
pid_t supervise_spawn(char *const argv[], int fd_floor, struct agent_err *);
/* Reaps every exited child (orphans included) without blocking.  Returns
 * true when child was among them, with its wait status in *wstatus. */
bool supervise_reap(pid_t child, int *wstatus);
/* Exit code for a wait status: the code, or 128 + signal. */
int supervise_exit_code(int wstatus);
/* Sends sig to the child; ESRCH is not an error. */
void supervise_forward(pid_t child, int sig);

#endif
