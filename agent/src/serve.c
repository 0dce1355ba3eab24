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
	case SIGTERM: return "SIGTERM";
	case SIGINT: return "SIGINT";
	case SIGHUP: return "SIGHUP";
	case SIGQUIT: return "SIGQUIT";
	case SIGUSR1: return "SIGUSR1";
	case SIGUSR2: return "SIGUSR2";
	default: return "signal";
	}
}

int
cmd_serve(struct options *opts, struct agent_err *err)
{
	struct serve_ctx *c;
	struct httpd *d = NULL;
	struct timespec ts;
	sigset_t set;
	pthread_t th;
	bool th_started = false, child_done = false, start, done;
	bool restart, restarting = false;
	int64_t kill_at = 0;
	pid_t child = 0;
	int sig, wst = 0, code = 0, fd_floor, i;
	char *red;

	/* Floors: a zero period would hammer Redis or the API server. */
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
	if ((c = a_calloc(1, sizeof(*c))) == NULL)
		return err_oom(err, "serve");
	c->opts = opts;
	c->supervising = opts->cmd_argc > 0 && opts->cmd_argv != NULL;
	pthread_mutex_init(&c->st.mu, NULL);
	serve_snap_init(&c->st.s);
	c->st.s.supervising = c->supervising;
	c->st.s.unready_on_drift = opts->on_drift == DRIFT_UNREADY;
	c->st.s.unready_on_bus_loss = opts->on_bus_loss == DRIFT_UNREADY;
	c->st.s.own_state = opts->deaf_pylon == DEAF_OFF ? OWN_OFF : OWN_UNKNOWN;
	c->st.s.heartbeat_ms = now_ms();
	c->st.s.stale_ms = 2 * opts->timeout_ms + 20 * opts->api_timeout_ms +
	    10 * opts->interval_ms + 60000;
	if ((code = proxy_serve_begin(opts, &c->proxy, err)) != 0)
		goto out;
	if (opts->redis_url != NULL && opts->redis_url[0] != '\0') {
		if ((red = redis_url_redact(opts->redis_url)) != NULL) {
			snprintf(c->st.s.redis_url, sizeof(c->st.s.redis_url),
			    "%s", red);
			a_free(red);
		}
	}

	fd_floor = supervise_fd_floor();
	/* Before any thread exists, so every thread inherits the mask. */
	supervise_block_signals(&set);
	if (c->supervising)
		supervise_subreaper();
	if ((d = serve_http_start(c, err)) == NULL) {
		code = err->code;
		goto out;
	}
	log_info("serve: listening on %s (/livez /startupz /readyz /status "
	    "/metrics)%s", opts->listen, c->supervising ? "; will start the "
	    "command once the bus is decided and proven" : "");

	if ((i = pthread_create(&th, NULL, serve_loop, c)) != 0) {
		code = err_set(err, EXIT_AGENT_SOFTWARE, "serve: cannot start "
		    "the check loop: %s", strerror(i));
		goto out;
	}
	th_started = true;

	ts.tv_sec = 0;
	ts.tv_nsec = 50 * 1000000L;
	for (;;) {
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGCHLD || (sig == -1 && child > 0)) {
			if (supervise_reap(child, &wst))
				child_done = true;
		} else if (sig > 0) {
			if (sig == SIGTERM || sig == SIGINT) {
				pthread_mutex_lock(&c->st.mu);
				c->st.s.shutting_down = true;
				pthread_mutex_unlock(&c->st.mu);
			}
			if (child > 0 && !child_done) {
				log_info("serve: forwarding %s to the command "
				    "(pid %d)", signame(sig), (int)child);
				supervise_forward(child, sig);
			} else if (sig == SIGTERM || sig == SIGINT) {
				log_info("serve: %s: shutting down",
				    signame(sig));
				code = 0;
				break;
			} else
				log_info("serve: %s ignored (no command "
				    "running)", signame(sig));
		}
		if (child_done && restarting) {
			/* A deaf Pylon's heal: the same command, the same
			 * environment, a fresh subscription. */
			restarting = false;
			pthread_mutex_lock(&c->st.mu);
			if (!c->st.s.shutting_down) {
				c->child_start = true;
				child_done = false;
			}
			pthread_mutex_unlock(&c->st.mu);
			if (!child_done) {
				log_info("serve: the command (pid %d) stopped "
				    "(%d); starting it again", (int)child,
				    supervise_exit_code(wst));
				child = 0;
			}
		}
		if (child_done) {
			code = supervise_exit_code(wst);
			log_info("serve: the command (pid %d) exited; exiting "
			    "with %d", (int)child, code);
			break;
		}
		pthread_mutex_lock(&c->st.mu);
		start = c->child_start && child == 0 &&
		    !c->st.s.shutting_down;
		restart = c->child_restart;
		c->child_restart = false;
		if (c->st.s.shutting_down)
			restarting = false;
		if (c->exit_req) {
			code = c->exit_code;
			*err = c->exit_err;
			pthread_mutex_unlock(&c->st.mu);
			break;
		}
		pthread_mutex_unlock(&c->st.mu);
		if (restart && child > 0 && !child_done && !restarting) {
			log_info("serve: restarting the command (pid %d): "
			    "SIGTERM, SIGKILL after 10 s", (int)child);
			supervise_forward(child, SIGTERM);
			restarting = true;
			kill_at = now_ms() + 10000;
		} else if (restarting && now_ms() >= kill_at && kill_at > 0) {
			log_warnx("serve: the command (pid %d) ignored SIGTERM "
			    "for 10 s; SIGKILL", (int)child);
			supervise_forward(child, SIGKILL);
			kill_at = 0;
		}
		if (start) {
			child = supervise_spawn(opts->cmd_argv, fd_floor, err);
			if (child < 0) {
				code = err->code;
				break;
			}
			log_info("serve: started %s (pid %d)",
			    opts->cmd_argv[0], (int)child);
			pthread_mutex_lock(&c->st.mu);
			c->st.s.child = child;
			c->child_start = false;
			pthread_mutex_unlock(&c->st.mu);
		}
	}

out:
	c->stop = 1;
	serve_http_stop(d);
	proxy_stop(c->proxy);
	c->proxy = NULL;
	done = !th_started;
	/* The loop may be inside a Redis or API call with its own deadline;
	 * wait a little for it, no longer. */
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
	if (th_started && done) {
		pthread_join(th, NULL);
		pthread_mutex_destroy(&c->st.mu);
		a_free(c);
	} else if (th_started) {
		/* Still inside a call with its own deadline: exiting must
		 * not wait for it (SPEC 6: exit within a second), nor run
		 * library destructors under its feet. */
		log_debug("serve: the check loop is busy; exiting without it");
		if (code != 0 && err->msg[0] != '\0')
			log_errorx("%s", err->msg);
		fflush(stdout);
		fflush(stderr);
		_exit(code);
	} else {
		pthread_mutex_destroy(&c->st.mu);
		a_free(c);
	}
	if (code == 0)
		err_clear(err);
	return code;
}

