/*
 * httpd.c - serve's libmicrohttpd server with its limits, and the reaper
 * that enforces the whole-request deadline.  See httpd.h.
 *
 * Every connection gets a slot (via MHD's socket context) holding its fd
 * and when its current request began: at accept, then at the end of each
 * response.  A small thread looks at the slots every HTTPD_TICK_MS and
 * shuts down (shutdown(2), not close: the fd stays MHD's) each connection
 * whose request is older than the deadline; MHD then sees EOF and closes
 * it.  MHD reports a connection CLOSED before it closes the fd, and the
 * slot is cleared under the same lock the reaper holds, so the reaper
 * never touches an fd that may have been reused.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"

#define HTTPD_TICK_MS 100
#define HTTPD_REAPER_STACK (64 * 1024)

struct httpd_slot {
	int fd; /* -1: free */
	bool reaped;
	int64_t start_ms; /* the current request began */
};

struct httpd {
	struct MHD_Daemon *d;
	pthread_t reaper;
	bool reaper_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	unsigned long reaped; /* connections cut */
	struct httpd_slot slots[HTTPD_CONN_LIMIT];
};

static void
httpd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];

	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	rstrip(buf);
	log_debug("http: %s", buf);
}

static void
httpd_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode code)
{
	struct httpd *h = cls;
	struct httpd_slot *s;
	const union MHD_ConnectionInfo *ci;
	size_t i;

	pthread_mutex_lock(&h->mu);
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		ci = MHD_get_connection_info(
		    conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		for (i = 0; ci != NULL && i < HTTPD_CONN_LIMIT; i++) {
			s = &h->slots[i];
			if (s->fd != -1)
				continue;
			s->fd = ci->connect_fd;
			s->reaped = false;
			s->start_ms = now_ms();
			*socket_context = s;
			break;
		}
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED &&
	    (s = *socket_context) != NULL) {
		s->fd = -1;
		*socket_context = NULL;
	}
	pthread_mutex_unlock(&h->mu);
}

/* A response went out: the next request's deadline starts now. */
static void
httpd_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct httpd *h = cls;
	struct httpd_slot *s;
	const union MHD_ConnectionInfo *ci;

	(void)con_cls;
	(void)toe;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	pthread_mutex_lock(&h->mu);
	if (ci != NULL && (s = ci->socket_context) != NULL && s->fd != -1)
		s->start_ms = now_ms();
	pthread_mutex_unlock(&h->mu);
}

static void *
httpd_reaper(void *arg)
{
	struct httpd *h = arg;
	struct timespec ts;
	int64_t now;
	size_t i;

	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		now = now_ms();
		for (i = 0; i < HTTPD_CONN_LIMIT; i++) {
			struct httpd_slot *s = &h->slots[i];

			if (s->fd == -1 || s->reaped ||
			    now - s->start_ms < HTTPD_REQUEST_DEADLINE_MS)
				continue;
			shutdown(s->fd, SHUT_RDWR);
			s->reaped = true;
			h->reaped++;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += HTTPD_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

struct httpd *
httpd_start(int lfd, MHD_AccessHandlerCallback handler, void *cls,
    const char *listen, struct agent_err *err)
{
	struct httpd *h;
	pthread_attr_t attr;
	size_t i;
	int e;

	if (dl_need_mhd(err) != 0) {
		close(lfd);
		return NULL;
	}
	if ((h = a_calloc(1, sizeof(*h))) == NULL) {
		close(lfd);
		err_oom(err, "serve: HTTP server");
		return NULL;
	}
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	for (i = 0; i < HTTPD_CONN_LIMIT; i++)
		h->slots[i].fd = -1;

	h->d =
	    MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
	        0, NULL, NULL, handler, cls, MHD_OPTION_LISTEN_SOCKET, lfd,
	        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTPD_CONN_LIMIT,
	        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTPD_PER_IP,
	        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTPD_IDLE_TIMEOUT_S,
	        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTPD_CONN_MEMORY,
	        MHD_OPTION_NOTIFY_CONNECTION, httpd_notify, h,
	        MHD_OPTION_NOTIFY_COMPLETED, httpd_completed, h,
	        MHD_OPTION_EXTERNAL_LOGGER, httpd_log, NULL, MHD_OPTION_END);
	if (h->d == NULL) {
		close(lfd);
		err_set(err, EXIT_AGENT_SOFTWARE,
		    "serve: cannot start the "
		    "HTTP server on %s",
		    listen);
		goto fail;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, HTTPD_REAPER_STACK);
	e = pthread_create(&h->reaper, &attr, httpd_reaper, h);
	pthread_attr_destroy(&attr);
	if (e != 0) {
		err_set(err, EXIT_AGENT_SOFTWARE,
		    "serve: cannot start the "
		    "HTTP deadline thread: %s",
		    strerror(e));
		MHD_stop_daemon(h->d);
		goto fail;
	}
	h->reaper_started = true;
	return h;
fail:
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	a_free(h);
	return NULL;
}

void
httpd_stop(struct httpd *h)
{
	if (h == NULL)
		return;
	if (h->reaper_started) {
		pthread_mutex_lock(&h->mu);
		h->stop = true;
		pthread_cond_signal(&h->cv);
		pthread_mutex_unlock(&h->mu);
		pthread_join(h->reaper, NULL);
	}
	/* MHD closes the listening socket it was given. */
	MHD_stop_daemon(h->d);
	if (h->reaped > 0)
		log_debug("http: %lu connections cut at the %d ms request "
		          "deadline",
		    h->reaped, HTTPD_REQUEST_DEADLINE_MS);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	a_free(h);
}

const char *
httpd_version(void)
{
	static char built[16];

	if (dl_loaded_mhd())
		return MHD_get_version();
	snprintf(built, sizeof(built), "%x.%x.%x", (MHD_VERSION >> 24) & 0xff,
	    (MHD_VERSION >> 16) & 0xff, (MHD_VERSION >> 8) & 0xff);
	return built;
}
