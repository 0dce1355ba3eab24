/*
 * serve.c - the long-running sidecar's main thread: the period floors,
 * the HTTP server and the loop thread started, signals (sigtimedwait),
 * the supervised child, and shutdown.
 *
 * Threads: the main thread owns signals and the child; the loop thread
 * (serve_loop.c) does every network call; libmicrohttpd's thread
 * (serve_http.c) answers from a copy of struct serve_snap taken under the
 * lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include "bus.h"
#include "httpd.h"
#include "proxy.h"
#include "serve.h"
#include "serve_int.h"

/* ---- cmd_serve: the main thread ------------------------------------- */

static const char *
signame(int sig)
{
	switch (sig) {
	case SIGTERM:
		return "SIGTERM";
	case SIGINT:
		return "SIGINT";
	case SIGHUP:
		return "SIGHUP";
	case SIGQUIT:
		return "SIGQUIT";
	case SIGUSR1:
		return "SIGUSR1";
	case SIGUSR2:
		return "SIGUSR2";
	default:
		return "signal";
	}
}

/* The main thread's view of the supervised command. */
struct child_ctl {
	pid_t pid; /* 0: none running */
	int wstatus;
	bool done; /* reaped */
	bool restarting; /* a deaf Pylon's heal is under way */
	int64_t kill_at; /* SIGKILL then, unless reaped; 0: sent */
	int fd_floor;
};

/* Floors (a zero period would hammer Redis or the API server) and the
 * context, before any thread exists. */
static struct serve_ctx *
serve_ctx_new(struct options *opts, struct agent_err *err)
{
	struct serve_ctx *c;

	if (opts->interval_ms < SERVE_MIN_INTERVAL_MS) {
		log_warnx("serve: --interval %ld ms is too short; using %d ms",
		    opts->interval_ms, SERVE_MIN_INTERVAL_MS);
		opts->interval_ms = SERVE_MIN_INTERVAL_MS;
	}
	if (opts->resync_ms < SERVE_MIN_RESYNC_MS) {
		log_warnx("serve: --resync %ld ms is too short; using %d ms",
		    opts->resync_ms, SERVE_MIN_RESYNC_MS);
		opts->resync_ms = SERVE_MIN_RESYNC_MS;
	}
	if ((c = a_calloc(1, sizeof(*c))) == NULL) {
		err_oom(err, "serve");
		return NULL;
	}
	c->opts = opts;
	c->supervising = opts->cmd_argc > 0 && opts->cmd_argv != NULL;
	pthread_mutex_init(&c->st.mu, NULL);
	serve_snap_init(&c->st.s);
	c->st.s.supervising = c->supervising;
	c->st.s.unready_on_drift = opts->on_drift == DRIFT_UNREADY;
	c->st.s.unready_on_bus_loss = opts->on_bus_loss == DRIFT_UNREADY;
	c->st.s.own_state =
	    opts->deaf_pylon == DEAF_OFF ? OWN_OFF : OWN_UNKNOWN;
	c->st.s.heartbeat_ms = now_ms();
	c->st.s.stale_ms = 2 * opts->timeout_ms + 20 * opts->api_timeout_ms +
	    10 * opts->interval_ms + 60000;
	return c;
}

/* The URL /status shows, redacted: after proxy_serve_begin, which points
 * opts->redis_url at the local proxy (the path Pylon uses). */
static void
serve_show_url(struct serve_ctx *c)
{
	const char *url = c->opts->redis_url;
	char *red;

	if (url != NULL && url[0] != '\0' &&
	    (red = redis_url_redact(url)) != NULL) {
		snprintf(
		    c->st.s.redis_url, sizeof(c->st.s.redis_url), "%s", red);
		a_free(red);
	}
}

/* One signal: shutdown, forwarded to the command, or ignored.  True when
 * serve itself should stop now. */
static bool
on_signal(struct serve_ctx *c, struct child_ctl *ch, int sig)
{
	if (sig == SIGTERM || sig == SIGINT) {
		pthread_mutex_lock(&c->st.mu);
		c->st.s.shutting_down = true;
		pthread_mutex_unlock(&c->st.mu);
	}
	if (ch->pid > 0 && !ch->done) {
		log_info("serve: forwarding %s to the command (pid %d)",
		    signame(sig), (int)ch->pid);
		supervise_forward(ch->pid, sig);
		return false;
	}
	if (sig == SIGTERM || sig == SIGINT) {
		log_info("serve: %s: shutting down", signame(sig));
		return true;
	}
	log_info("serve: %s ignored (no command running)", signame(sig));
	return false;
}

/* A reaped command that the heal stopped: start it again (same command,
 * same environment) unless serve is shutting down. */
static void
child_reaped_for_restart(struct serve_ctx *c, struct child_ctl *ch)
{
	ch->restarting = false;
	pthread_mutex_lock(&c->st.mu);
	if (!c->st.s.shutting_down) {
		c->child_start = true;
		ch->done = false;
	}
	pthread_mutex_unlock(&c->st.mu);
	if (!ch->done) {
		log_info("serve: the command (pid %d) stopped (%d); starting "
		         "it again",
		    (int)ch->pid, supervise_exit_code(ch->wstatus));
		ch->pid = 0;
	}
}

/* What the loop thread asked for: an exit, a first start or a restart.
 * Returns 1 to stop with *code, -1 on a spawn failure, else 0. */
static int
child_step(
    struct serve_ctx *c, struct child_ctl *ch, int *code, struct agent_err *err)
{
	bool start, restart;

	pthread_mutex_lock(&c->st.mu);
	start = c->child_start && ch->pid == 0 && !c->st.s.shutting_down;
	restart = c->child_restart;
	c->child_restart = false;
	if (c->st.s.shutting_down)
		ch->restarting = false;
	if (c->exit_req) {
		*code = c->exit_code;
		*err = c->exit_err;
		pthread_mutex_unlock(&c->st.mu);
		return 1;
	}
	pthread_mutex_unlock(&c->st.mu);
	if (restart && ch->pid > 0 && !ch->done && !ch->restarting) {
		log_info("serve: restarting the command (pid %d): SIGTERM, "
		         "SIGKILL after 10 s",
		    (int)ch->pid);
		supervise_forward(ch->pid, SIGTERM);
		ch->restarting = true;
		ch->kill_at = now_ms() + 10000;
	} else if (ch->restarting && ch->kill_at > 0 &&
	    now_ms() >= ch->kill_at) {
		log_warnx("serve: the command (pid %d) ignored SIGTERM for "
		          "10 s; SIGKILL",
		    (int)ch->pid);
		supervise_forward(ch->pid, SIGKILL);
		ch->kill_at = 0;
	}
	if (!start)
		return 0;
	if ((ch->pid = supervise_spawn(c->opts->cmd_argv, ch->fd_floor, err)) <
	    0) {
		*code = err->code;
		return -1;
	}
	log_info(
	    "serve: started %s (pid %d)", c->opts->cmd_argv[0], (int)ch->pid);
	pthread_mutex_lock(&c->st.mu);
	c->st.s.child = ch->pid;
	c->child_start = false;
	pthread_mutex_unlock(&c->st.mu);
	return 0;
}

/* The main thread: signals (sigtimedwait, 50 ms), the command, the loop
 * thread's requests.  Returns serve's exit code. */
static int
serve_wait(struct serve_ctx *c, const sigset_t *set, int fd_floor,
    struct agent_err *err)
{
	struct child_ctl ch;
	struct timespec ts;
	int sig, code = 0;

	memset(&ch, 0, sizeof(ch));
	ch.fd_floor = fd_floor;
	ts.tv_sec = 0;
	ts.tv_nsec = 50 * 1000000L;
	for (;;) {
		sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGCHLD || (sig == -1 && ch.pid > 0)) {
			if (supervise_reap(ch.pid, &ch.wstatus))
				ch.done = true;
		} else if (sig > 0 && on_signal(c, &ch, sig))
			return 0;
		if (ch.done && ch.restarting)
			child_reaped_for_restart(c, &ch);
		if (ch.done) {
			code = supervise_exit_code(ch.wstatus);
			log_info("serve: the command (pid %d) exited; exiting "
			         "with %d",
			    (int)ch.pid, code);
			return code;
		}
		if (child_step(c, &ch, &code, err) != 0)
			return code;
	}
}

/* Stops the HTTP server and the proxy, and waits a little for the loop
 * thread (it may be inside a call with its own deadline); never longer:
 * SPEC 6 wants an exit within a second. */
static int
serve_finish(struct serve_ctx *c, struct httpd *d, pthread_t th,
    bool th_started, int code, struct agent_err *err)
{
	struct timespec ts;
	bool done = !th_started;
	int i;

	c->stop = 1;
	serve_http_stop(d);
	proxy_stop(c->proxy);
	c->proxy = NULL;
	for (i = 0; th_started && i < 25; i++) {
		pthread_mutex_lock(&c->st.mu);
		done = c->loop_done;
		pthread_mutex_unlock(&c->st.mu);
		if (done)
			break;
		ts.tv_sec = 0;
		ts.tv_nsec = 20 * 1000000L;
		nanosleep(&ts, NULL);
	}
	if (th_started && !done) {
		/* Still inside a call with its own deadline: exiting must
		 * not wait for it, nor run library destructors under its
		 * feet. */
		log_debug("serve: the check loop is busy; exiting without it");
		if (code != 0 && err->msg[0] != '\0')
			log_errorx("%s", err->msg);
		fflush(stdout);
		fflush(stderr);
		_exit(code);
	}
	if (th_started)
		pthread_join(th, NULL);
	pthread_mutex_destroy(&c->st.mu);
	a_free(c);
	if (code == 0)
		err_clear(err);
	return code;
}

int
cmd_serve(struct options *opts, struct agent_err *err)
{
	struct serve_ctx *c;
	struct httpd *d = NULL;
	sigset_t set;
	pthread_t th;
	bool th_started = false;
	int code = 0, fd_floor, i;

	memset(&th, 0, sizeof(th));
	if ((c = serve_ctx_new(opts, err)) == NULL)
		return err->code;
	if ((code = proxy_serve_begin(opts, &c->proxy, err)) != 0)
		return serve_finish(c, d, th, false, code, err);
	serve_show_url(c);
	fd_floor = supervise_fd_floor();
	/* Before any thread exists, so every thread inherits the mask. */
	supervise_block_signals(&set);
	if (c->supervising)
		supervise_subreaper();
	if ((d = serve_http_start(c, err)) == NULL)
		return serve_finish(c, d, th, false, err->code, err);
	log_info("serve: listening on %s (/livez /startupz /readyz "
	         "/pylon-livez /status /metrics)%s",
	    opts->listen,
	    c->supervising ? "; will start the command once the bus is "
	                     "decided and proven"
	                   : "");
	if ((i = pthread_create(&th, NULL, serve_loop, c)) != 0) {
		code = err_set(err, EXIT_AGENT_SOFTWARE,
		    "serve: cannot start "
		    "the check loop: %s",
		    strerror(i));
		return serve_finish(c, d, th, false, code, err);
	}
	th_started = true;
	code = serve_wait(c, &set, fd_floor, err);
	return serve_finish(c, d, th, th_started, code, err);
}
