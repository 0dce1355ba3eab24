/*
 * serve_http.c - serve's HTTP side on libmicrohttpd: the listening
 * socket and the handlers, which answer from a copy of the snapshot taken
 * under the lock and never wait on Redis or an API.
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

/* ---- state, HTTP ---------------------------------------------------- */

void
serve_snap_take(struct serve_ctx *c, struct serve_snap *out)
{
	pthread_mutex_lock(&c->st.mu);
	*out = c->st.s;
	pthread_mutex_unlock(&c->st.mu);
}

static enum MHD_Result
respond(struct MHD_Connection *conn, unsigned code, const char *ctype,
    const char *body, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(
	    len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
respond_line(struct MHD_Connection *conn, int code, const char *line)
{
	char body[1100];
	int n;

	n = snprintf(body, sizeof(body), "%s\n", line);
	if (n < 0 || (size_t)n >= sizeof(body)) {
		body[sizeof(body) - 2] = '\n';
		n = (int)sizeof(body) - 1;
	}
	return respond(
	    conn, (unsigned)code, "text/plain; charset=utf-8", body, (size_t)n);
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_len, void **con_cls)
{
	struct serve_ctx *c = cls;
	struct serve_snap s;
	char reason[1024], *body;
	size_t len;
	enum MHD_Result ret;
	int code;

	(void)version;
	(void)upload;
	(void)con_cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		*upload_len = 0;
		return respond_line(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method not allowed: use GET");
	}
	if (strcmp(url, "/livez") == 0) {
		serve_snap_take(c, &s);
		code = serve_liveness(&s, now_ms(), reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/pylon-livez") == 0) {
		serve_snap_take(c, &s);
		code =
		    serve_pylon_liveness(&s, now_ms(), reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/startupz") == 0) {
		serve_snap_take(c, &s);
		code = serve_startup(&s, reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/readyz") == 0) {
		serve_snap_take(c, &s);
		code = serve_readiness(&s, reason, sizeof(reason));
		return respond_line(conn, code, reason);
	}
	if (strcmp(url, "/status") == 0) {
		serve_snap_take(c, &s);
		if ((body = serve_status_json(&s)) == NULL)
			return respond_line(conn, 500, "out of memory");
		ret = respond(
		    conn, MHD_HTTP_OK, "application/json", body, strlen(body));
		a_free(body);
		return ret;
	}
	if (strcmp(url, "/metrics") == 0) {
		serve_snap_take(c, &s);
		if ((body = serve_metrics_text(&s, &len)) == NULL)
			return respond_line(conn, 500, "out of memory");
		if (c->proxy != NULL &&
		    (body = proxy_metrics_append(c->proxy, body, &len)) == NULL)
			return respond_line(conn, 500, "out of memory");
		ret = respond(conn, MHD_HTTP_OK,
		    "text/plain; version=0.0.4; charset=utf-8", body, len);
		a_free(body);
		return ret;
	}
	return respond_line(conn, MHD_HTTP_NOT_FOUND,
	    "not found: the "
	    "endpoints are /livez /startupz /readyz /pylon-livez /status "
	    "/metrics");
}

static int
listen_socket(const char *spec, struct agent_err *err)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[8];
	int fd = -1, one = 1, zero = 0, rc, e = 0;

	if ((rc = serve_listen_parse(
	         spec, host, sizeof(host), port, sizeof(port), err)) != 0)
		return -1;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] != '\0' ? host : "::", port, &hints, &res);
	if (rc != 0 && host[0] == '\0')
		rc = getaddrinfo(NULL, port, &hints, &res);
	if (rc != 0) {
		err_set(err, EXIT_AGENT_CONFIG,
		    "--listen %s: cannot resolve "
		    "\"%s\": %s",
		    spec, host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* ":port" and "[::]:port" take IPv4 too. */
		if (ai->ai_family == AF_INET6)
			setsockopt(
			    fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, HTTPD_BACKLOG) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		err_set(err, EXIT_AGENT_CONFIG,
		    "--listen %s: cannot listen: "
		    "%s; choose a free address with --listen",
		    spec, strerror(e));
	return fd;
}

struct httpd *
serve_http_start(struct serve_ctx *c, struct agent_err *err)
{
	int lfd;

	if ((lfd = listen_socket(c->opts->listen, err)) == -1)
		return NULL;
	return httpd_start(lfd, handle, c, c->opts->listen, err);
}

void
serve_http_stop(struct httpd *d)
{
	httpd_stop(d);
}
