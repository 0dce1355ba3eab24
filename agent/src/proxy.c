/*
 * proxy.c - serve --bus-proxy: plain RESP on a loopback address, relayed
 * byte for byte to the rediss:// upstream over TLS.
 *
 * The proxy never parses RESP: Pylon's AUTH, SELECT, SUBSCRIBE and
 * PUBLISH pass through unchanged, so Redis sees Pylon's own credentials
 * and Pylon sees Redis's own answers.  Each client connection gets its
 * own upstream connection (pub/sub is connection state).
 *
 * One thread, one epoll set, level-triggered.  Per connection two fixed
 * buffers (client->upstream, upstream->client); a side is read only while
 * the buffer it fills has room, so a subscriber that stops reading stops
 * the agent reading from Redis (Redis's client-output-buffer-limit then
 * applies, as it would to Pylon directly) and a flood from Pylon stops at
 * a full TCP window.  Memory per connection is bounded by PROXY_BUF_SIZE.
 *
 * Closing: a client's FIN is relayed (close_notify + TCP half-close)
 * once everything it sent is written, and its last replies are still
 * carried back, up to PROXY_HALFCLOSE_MS.  An upstream EOF flushes what
 * came before it and closes the client; an upstream error (TLS, reset,
 * connect or handshake failure or timeout) closes the client at once so
 * Pylon's reconnect logic runs.
 *
 * The upstream address is resolved on the loop thread (getaddrinfo
 * blocks) and cached for PROXY_DNS_TTL_MS, dropped after a failed
 * connect so a failover's new address is found.
 */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "proxy.h"
#include "serve.h"
#include "ssl_dl.h"

#define PROXY_DNS_TTL_MS 30000
#define PROXY_MAX_ADDRS 8
#define PROXY_KEEPIDLE_S 30
#define PROXY_KEEPINTVL_S 10
#define PROXY_KEEPCNT 3

#define TAG_LISTEN 0
#define TAG_WAKE 1
#define SIDE_UP 1u /* low bit of the epoll tag: upstream fd */

struct pbuf {
	size_t off; /* first unsent byte */
	size_t len; /* end of data */
	char d[PROXY_BUF_SIZE];
};

enum up_state { UP_CONNECTING, UP_HANDSHAKE, UP_RELAY };

struct pconn {
	struct pconn *next, *prev;
	int cfd, ufd;
	SSL *ssl;
	enum up_state st;
	bool dead;
	bool cli_eof; /* the client sent FIN */
	bool up_shut; /* FIN relayed upstream */
	bool up_eof; /* the upstream closed */
	uint32_t rwant, wwant, hwant; /* what SSL waits for */
	uint32_t cmask, umask; /* registered epoll masks */
	int64_t deadline; /* connect/handshake/half-close */
	struct pbuf c2u, u2c;
};

struct proxy {
	int lfd, efd, wfd;
	pthread_t th;
	bool th_started;
	volatile int stop;
	SSL_CTX *ctx;
	struct redis_url up;
	char where[300];
	char addr[128];
	struct pconn *conns;
	struct pconn *dead;
	int64_t listen_paused_until;
	/* upstream addresses */
	struct sockaddr_storage ua[PROXY_MAX_ADDRS];
	socklen_t ualen[PROXY_MAX_ADDRS];
	int nua, next_ua;
	int64_t ua_time;
	/* counters: written by the loop, read by /metrics (atomics) */
	struct proxy_stats stats;
};

#define STAT_ADD(px, f, n) \
	__atomic_add_fetch(&(px)->stats.f, (n), __ATOMIC_RELAXED)
#define STAT_SUB(px, f, n) \
	__atomic_sub_fetch(&(px)->stats.f, (n), __ATOMIC_RELAXED)

/* ---- address and URL ---------------------------------------------------- */

static bool
sa_is_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in *s4;
	const struct sockaddr_in6 *s6;

	if (sa->sa_family == AF_INET) {
		s4 = (const struct sockaddr_in *)sa;
		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		s6 = (const struct sockaddr_in6 *)sa;
		return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
	}
	return false;
}

/* Resolves addr to its first loopback address (every result must be
 * loopback: "localhost" may not resolve to anything else). */
static int
addr_resolve(const char *addr, struct sockaddr_storage *ss, socklen_t *sl,
    struct agent_err *err)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[16];
	int rc;

	if (addr == NULL || *addr == '\0')
		return err_set(err, EXIT_AGENT_CONFIG,
		    "--bus-proxy: empty "
		    "address (give a loopback HOST:PORT, e.g. 127.0.0.1:6380)");
	if (serve_listen_parse(
	        addr, host, sizeof(host), port, sizeof(port), err) != 0)
		return err_prefix(err, "--bus-proxy");
	if (host[0] == '\0')
		return err_set(err, EXIT_AGENT_CONFIG,
		    "--bus-proxy %s: the "
		    "proxy listens on loopback only, so give the host (e.g. "
		    "127.0.0.1:%s): plain Redis traffic with Pylon's password "
		    "must not leave the pod",
		    addr, port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "--bus-proxy %s: cannot "
		    "resolve '%s': %s (give a loopback address such as "
		    "127.0.0.1:6380)",
		    addr, host, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (!sa_is_loopback(ai->ai_addr)) {
			freeaddrinfo(res);
			return err_set(err, EXIT_AGENT_CONFIG,
			    "--bus-proxy "
			    "%s: '%s' is not a loopback address; the proxy "
			    "listens on loopback only (plain Redis traffic "
			    "with Pylon's password must not leave the pod): "
			    "use 127.0.0.1 or [::1]",
			    addr, host);
		}
	}
	if (res == NULL || (size_t)res->ai_addrlen > sizeof(*ss)) {
		if (res != NULL)
			freeaddrinfo(res);
		return err_set(err, EXIT_AGENT_CONFIG,
		    "--bus-proxy %s: no "
		    "address",
		    addr);
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = (socklen_t)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
proxy_addr_check(const char *addr, struct agent_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;

	return addr_resolve(addr, &ss, &sl, err);
}

/* Appends s percent-encoded (RFC 3986 unreserved kept) to out. */
static bool
pct_append(char *out, size_t n, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t j = strlen(out);
	unsigned char c;

	for (; *s != '\0'; s++) {
		c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~') {
			if (j + 1 >= n)
				return false;
			out[j++] = (char)c;
		} else {
			if (j + 3 >= n)
				return false;
			out[j++] = '%';
			out[j++] = hex[c >> 4];
			out[j++] = hex[c & 15];
		}
	}
	out[j] = '\0';
	return true;
}

char *
proxy_pylon_url(
    const char *upstream_url, const char *addr, struct agent_err *err)
{
	struct redis_url u;
	char out[8192], db[16];
	char *r;
	bool ok = true;

	if (redis_url_parse(upstream_url, &u, err) != 0)
		return NULL;
	if (!u.tls) {
		redis_url_release(&u);
		if ((r = a_strdup(upstream_url)) == NULL)
			err_oom(err, "proxy_pylon_url");
		return r;
	}
	if (proxy_addr_check(addr, err) != 0) {
		redis_url_release(&u);
		return NULL;
	}
	snprintf(out, sizeof(out), "redis://");
	if (u.user != NULL || u.pass != NULL) {
		if (u.user != NULL)
			ok &= pct_append(out, sizeof(out), u.user);
		if (u.pass != NULL) {
			strncat(out, ":", sizeof(out) - strlen(out) - 1);
			ok &= pct_append(out, sizeof(out), u.pass);
		}
		strncat(out, "@", sizeof(out) - strlen(out) - 1);
	}
	strncat(out, addr, sizeof(out) - strlen(out) - 1);
	if (u.db != 0) {
		snprintf(db, sizeof(db), "/%d", u.db);
		strncat(out, db, sizeof(out) - strlen(out) - 1);
	}
	redis_url_release(&u);
	if (!ok || strlen(out) >= sizeof(out) - 1) {
		err_set(err, EXIT_AGENT_CONFIG,
		    "--bus-proxy: the Redis URL is "
		    "too long");
		return NULL;
	}
	if ((r = a_strdup(out)) == NULL)
		err_oom(err, "proxy_pylon_url");
	return r;
}

/* ---- connections ------------------------------------------------------- */

static size_t
buf_room(const struct pbuf *b)
{
	return PROXY_BUF_SIZE - b->len;
}

static size_t
buf_pending(const struct pbuf *b)
{
	return b->len - b->off;
}

static void
buf_compact(struct pbuf *b)
{
	if (b->off == b->len)
		b->off = b->len = 0;
	else if (b->off > 0 && b->len == PROXY_BUF_SIZE) {
		memmove(b->d, b->d + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
}

static void
ep_set(struct proxy *px, int fd, uint64_t tag, uint32_t *cur, uint32_t want)
{
	struct epoll_event ev;

	if (*cur == want)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = want;
	ev.data.u64 = tag;
	(void)epoll_ctl(px->efd, EPOLL_CTL_MOD, fd, &ev);
	*cur = want;
}

static void
conn_close(struct proxy *px, struct pconn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->cfd >= 0)
		close(c->cfd);
	if (c->ufd >= 0)
		close(c->ufd);
	c->cfd = c->ufd = -1;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		px->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	/* freed after this batch of events: later events may name it */
	c->next = px->dead;
	c->prev = NULL;
	px->dead = c;
	STAT_SUB(px, connections_active, 1);
}

/* An upstream failure: log it, count it, close the client at once. */
static void AGENT_PRINTF(3, 4)
    up_fail(struct proxy *px, struct pconn *c, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	STAT_ADD(px, upstream_errors_total, 1);
	log_warnx("bus proxy: upstream %s: %s; closing the client "
	          "connection (the client reconnects)",
	    px->where, msg);
	if (c->st == UP_CONNECTING || c->st == UP_HANDSHAKE)
		px->ua_time = 0; /* look the address up again */
	conn_close(px, c);
}

static void
ssl_why(char *buf, size_t n)
{
	tls_last_error(buf, n, "the connection was closed");
}

static void
up_resolve(struct proxy *px)
{
	struct addrinfo hints, *res = NULL, *ai;
	char serv[8];
	int rc;

	if (px->nua > 0 && now_ms() - px->ua_time < PROXY_DNS_TTL_MS &&
	    px->ua_time != 0)
		return;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(serv, sizeof(serv), "%d", px->up.port);
	if ((rc = getaddrinfo(px->up.host, serv, &hints, &res)) != 0) {
		/* keep the old addresses, if any */
		log_warnx("bus proxy: upstream %s: DNS: %s", px->where,
		    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return;
	}
	px->nua = 0;
	for (ai = res; ai != NULL && px->nua < PROXY_MAX_ADDRS;
	     ai = ai->ai_next) {
		if ((size_t)ai->ai_addrlen > sizeof(px->ua[0]))
			continue;
		memcpy(&px->ua[px->nua], ai->ai_addr, ai->ai_addrlen);
		px->ualen[px->nua++] = (socklen_t)ai->ai_addrlen;
	}
	freeaddrinfo(res);
	px->next_ua = 0;
	px->ua_time = now_ms();
}

static void
sock_tune(int fd, bool upstream)
{
	int one = 1, v;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!upstream)
		return;
	/* Pylon sets no keepalive: a half-open upstream would stay deaf */
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	v = PROXY_KEEPIDLE_S;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
	v = PROXY_KEEPINTVL_S;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
	v = PROXY_KEEPCNT;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
	/* unacknowledged data: give up as keepalive would */
	v = (PROXY_KEEPIDLE_S + PROXY_KEEPINTVL_S * PROXY_KEEPCNT) * 1000;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v));
}

static int
ep_add(struct proxy *px, int fd, uint64_t tag, uint32_t ev)
{
	struct epoll_event e;

	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.u64 = tag;
	return epoll_ctl(px->efd, EPOLL_CTL_ADD, fd, &e);
}

static void
conn_new(struct proxy *px, int cfd)
{
	struct pconn *c;
	int i, fd;

	if ((c = a_calloc(1, sizeof(*c))) == NULL) {
		log_warnx("bus proxy: out of memory; refusing a connection");
		close(cfd);
		return;
	}
	c->cfd = cfd;
	c->ufd = -1;
	c->next = px->conns;
	if (px->conns != NULL)
		px->conns->prev = c;
	px->conns = c;
	STAT_ADD(px, connections_total, 1);
	STAT_ADD(px, connections_active, 1);
	sock_tune(cfd, false);
	c->deadline = now_ms() + PROXY_CONNECT_MS;

	up_resolve(px);
	if (px->nua == 0) {
		up_fail(px, c, "DNS: cannot resolve '%s'", px->up.host);
		return;
	}
	i = px->next_ua % px->nua;
	fd = socket(
	    px->ua[i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		up_fail(px, c, "socket: %s", strerror(errno));
		return;
	}
	c->ufd = fd;
	sock_tune(fd, true);
	if (connect(fd, (struct sockaddr *)&px->ua[i], px->ualen[i]) == 0)
		c->st = UP_HANDSHAKE;
	else if (errno == EINPROGRESS)
		c->st = UP_CONNECTING;
	else {
		px->next_ua++;
		up_fail(px, c, "connect: %s", strerror(errno));
		return;
	}
	if ((c->ssl = SSL_new(px->ctx)) == NULL ||
	    transport_tls_name(c->ssl, &px->up) != 0 ||
	    SSL_set_fd(c->ssl, fd) != 1) {
		up_fail(px, c, "cannot set up TLS");
		return;
	}
	SSL_set_connect_state(c->ssl);
	c->hwant = EPOLLOUT;
	c->cmask = EPOLLIN;
	c->umask = EPOLLOUT;
	if (ep_add(px, cfd, (uint64_t)(uintptr_t)c, c->cmask) != 0 ||
	    ep_add(px, fd, (uint64_t)(uintptr_t)c | SIDE_UP, c->umask) != 0) {
		log_warn("bus proxy: epoll_ctl");
		conn_close(px, c);
	}
}

/* 0 on progress or nothing to do, -1 when c was closed. */
static int
handshake(struct proxy *px, struct pconn *c)
{
	char why[256];
	long vr;
	int rc, e;

	ERR_clear_error();
	rc = SSL_connect(c->ssl);
	if (rc == 1) {
		c->st = UP_RELAY;
		c->deadline = 0;
		c->rwant = EPOLLIN;
		c->wwant = EPOLLOUT;
		return 0;
	}
	e = SSL_get_error(c->ssl, rc);
	if (e == SSL_ERROR_WANT_READ) {
		c->hwant = EPOLLIN;
		return 0;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		c->hwant = EPOLLOUT;
		return 0;
	}
	vr = SSL_get_verify_result(c->ssl);
	if (vr != X509_V_OK) {
		ERR_clear_error();
		up_fail(px, c,
		    "TLS certificate verification failed: %s "
		    "(server name %s; give the CA with --redis-ca-file)",
		    X509_verify_cert_error_string(vr), px->up.host);
	} else {
		if (e == SSL_ERROR_SYSCALL && errno != 0 &&
		    ERR_peek_error() == 0)
			snprintf(why, sizeof(why), "%s", strerror(errno));
		else
			ssl_why(why, sizeof(why));
		up_fail(px, c,
		    "TLS handshake failed: %s (does this port "
		    "speak TLS?)",
		    why);
	}
	return -1;
}

/* A failed SSL_read/SSL_write (e from SSL_get_error): WANT_* sets *want
 * and returns 0, anything else is the upstream's failure (c closed, -1). */
static int
ssl_io_fail(
    struct proxy *px, struct pconn *c, int e, uint32_t *want, const char *what)
{
	char why[256];

	if (e == SSL_ERROR_WANT_READ) {
		*want = EPOLLIN;
		return 0;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		*want = EPOLLOUT;
		return 0;
	}
	if (e == SSL_ERROR_SYSCALL && errno != 0)
		snprintf(why, sizeof(why), "%s", strerror(errno));
	else if (e == SSL_ERROR_SYSCALL)
		snprintf(why, sizeof(why), "the server closed the connection");
	else
		ssl_why(why, sizeof(why));
	up_fail(px, c, "%s: %s", what, why);
	return -1;
}

/* What pump knows of both sides while it moves bytes. */
struct pump_state {
	bool progress;
	bool cli_empty, up_empty; /* the source is known to hold nothing */
	bool cli_full, up_full; /* the sink takes nothing more now */
};

/* client -> buffer; -1 when c was closed (client reset). */
static int
pump_from_client(struct proxy *px, struct pconn *c, struct pump_state *p)
{
	ssize_t r;
	size_t room;

	while (!c->cli_eof && !p->cli_empty && (room = buf_room(&c->c2u)) > 0) {
		r = recv(c->cfd, c->c2u.d + c->c2u.len, room, 0);
		if (r > 0) {
			c->c2u.len += (size_t)r;
			p->progress = true;
			if ((size_t)r < room)
				p->cli_empty = true;
		} else if (r == 0) {
			c->cli_eof = true;
			p->progress = true;
		} else if (errno == EAGAIN || errno == EINTR)
			p->cli_empty = true;
		else {
			conn_close(px, c); /* client reset */
			return -1;
		}
	}
	return 0;
}

/* buffer -> upstream; -1 when c was closed. */
static int
pump_to_upstream(struct proxy *px, struct pconn *c, struct pump_state *p)
{
	int rc;

	while (c->st == UP_RELAY && !c->up_shut && !p->up_full &&
	    buf_pending(&c->c2u) > 0) {
		ERR_clear_error();
		errno = 0;
		rc = SSL_write(
		    c->ssl, c->c2u.d + c->c2u.off, (int)buf_pending(&c->c2u));
		if (rc > 0) {
			c->c2u.off += (size_t)rc;
			STAT_ADD(px, bytes_up_total, (uint64_t)rc);
			c->wwant = EPOLLOUT;
			p->progress = true;
			continue;
		}
		if (ssl_io_fail(px, c, SSL_get_error(c->ssl, rc), &c->wwant,
		        "write") != 0)
			return -1;
		p->up_full = true;
		/* a WANT_READ write waits for upstream bytes */
		if (c->wwant == EPOLLIN)
			p->up_empty = false;
	}
	/* the client is done sending and all of it went up */
	if (c->st == UP_RELAY && c->cli_eof && !c->up_shut &&
	    buf_pending(&c->c2u) == 0) {
		ERR_clear_error();
		(void)SSL_shutdown(c->ssl); /* close_notify */
		(void)shutdown(c->ufd, SHUT_WR);
		c->up_shut = true;
		c->deadline = now_ms() + PROXY_HALFCLOSE_MS;
		p->progress = true;
	}
	return 0;
}

/* upstream -> buffer; -1 when c was closed. */
static int
pump_from_upstream(struct proxy *px, struct pconn *c, struct pump_state *p)
{
	size_t room;
	int rc, e;

	while (c->st == UP_RELAY && !c->up_eof && !p->up_empty &&
	    (room = buf_room(&c->u2c)) > 0) {
		ERR_clear_error();
		errno = 0;
		rc = SSL_read(c->ssl, c->u2c.d + c->u2c.len, (int)room);
		if (rc > 0) {
			c->u2c.len += (size_t)rc;
			STAT_ADD(px, bytes_down_total, (uint64_t)rc);
			c->rwant = EPOLLIN;
			p->progress = true;
			if (!SSL_has_pending(c->ssl))
				p->up_empty = true;
			/* reading unblocks a write that wanted it */
			if (c->wwant == EPOLLIN)
				p->up_full = false;
			continue;
		}
		e = SSL_get_error(c->ssl, rc);
		if (e == SSL_ERROR_ZERO_RETURN ||
		    (c->up_shut && e != SSL_ERROR_SSL &&
		        e != SSL_ERROR_WANT_READ &&
		        e != SSL_ERROR_WANT_WRITE)) {
			c->up_eof = true;
			p->progress = true;
			break;
		}
		if (ssl_io_fail(px, c, e, &c->rwant, "read") != 0)
			return -1;
		p->up_empty = true;
	}
	return 0;
}

/* buffer -> client; -1 when c was closed. */
static int
pump_to_client(struct proxy *px, struct pconn *c, struct pump_state *p)
{
	ssize_t r;

	while (!p->cli_full && buf_pending(&c->u2c) > 0) {
		r = send(c->cfd, c->u2c.d + c->u2c.off, buf_pending(&c->u2c),
		    MSG_NOSIGNAL);
		if (r > 0) {
			c->u2c.off += (size_t)r;
			p->progress = true;
			if (buf_pending(&c->u2c) > 0)
				p->cli_full = true;
		} else if (r == -1 && (errno == EAGAIN || errno == EINTR))
			p->cli_full = true;
		else {
			conn_close(px, c);
			return -1;
		}
	}
	return 0;
}

/* Closes c when nothing is left to move; -1 then. */
static int
pump_ended(struct proxy *px, struct pconn *c)
{
	if (c->up_eof && buf_pending(&c->u2c) == 0) {
		conn_close(px, c); /* clean end, all delivered */
		return -1;
	}
	/* the client left before the upstream was up */
	if (c->cli_eof && c->st != UP_RELAY && buf_pending(&c->c2u) == 0) {
		conn_close(px, c);
		return -1;
	}
	return 0;
}

/*
 * Moves every byte it can, both ways; -1 when c was closed.
 *
 * Each direction fills its buffer as far as the source allows, then
 * drains it in as few writes as the sink takes (one send() for many TLS
 * records read, one SSL_write per 16 KiB record).  A source is known to
 * be empty without asking again: a recv() shorter than the room left
 * means the socket queue was emptied; after SSL_read, SSL_has_pending()
 * says whether OpenSSL still holds bytes (read-ahead is on, so one read()
 * takes many records) - if not, level-triggered epoll reports the socket
 * when more arrives.  So an event costs no EAGAIN probe in the common
 * case, and bytes OpenSSL buffered are never left unseen.  Likewise a
 * side whose input epoll watches is not read until epoll reports it.
 */
static int
pump(struct proxy *px, struct pconn *c, bool up, uint32_t ev)
{
	struct pump_state p = {0};

	/* A side epoll watches for input and did not report is empty (for
	 * the upstream: unless OpenSSL holds bytes); a side not watched
	 * (its buffer was full) must be tried. */
	p.cli_empty = (c->cmask & EPOLLIN) && !(!up && (ev & EPOLLIN));
	p.up_empty = c->st == UP_RELAY && c->rwant == EPOLLIN &&
	    (c->umask & EPOLLIN) && !(up && (ev & EPOLLIN)) &&
	    !SSL_has_pending(c->ssl);
	for (;;) {
		p.progress = false;
		if (c->st == UP_HANDSHAKE) {
			if (handshake(px, c) != 0)
				return -1;
			if (c->st != UP_RELAY)
				break;
			p.progress = true;
		}
		if (pump_from_client(px, c, &p) != 0 ||
		    pump_to_upstream(px, c, &p) != 0 ||
		    pump_from_upstream(px, c, &p) != 0 ||
		    pump_to_client(px, c, &p) != 0)
			return -1;
		buf_compact(&c->c2u);
		buf_compact(&c->u2c);
		if (pump_ended(px, c) != 0)
			return -1;
		if (!p.progress)
			break;
	}
	return 0;
}

static void
conn_masks(struct proxy *px, struct pconn *c)
{
	uint32_t cm = 0, um = 0;

	if (!c->cli_eof && buf_room(&c->c2u) > 0)
		cm |= EPOLLIN;
	if (buf_pending(&c->u2c) > 0)
		cm |= EPOLLOUT;
	if (c->st == UP_CONNECTING)
		um = EPOLLOUT;
	else if (c->st == UP_HANDSHAKE)
		um = c->hwant;
	else {
		if (!c->up_eof && buf_room(&c->u2c) > 0)
			um |= c->rwant;
		if (!c->up_shut && buf_pending(&c->c2u) > 0)
			um |= c->wwant;
	}
	ep_set(px, c->cfd, (uint64_t)(uintptr_t)c, &c->cmask, cm);
	ep_set(px, c->ufd, (uint64_t)(uintptr_t)c | SIDE_UP, &c->umask, um);
}

static void
conn_event(struct proxy *px, struct pconn *c, bool up, uint32_t ev)
{
	int e = 0;
	socklen_t el = sizeof(e);

	if (c->dead)
		return;
	if (!up && (ev & EPOLLERR)) {
		conn_close(px, c);
		return;
	}
	if (up && c->st == UP_CONNECTING) {
		if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &e, &el) == -1)
			e = errno;
		if (e != 0) {
			px->next_ua++;
			up_fail(px, c, "connect: %s", strerror(e));
			return;
		}
		c->st = UP_HANDSHAKE;
	}
	if (pump(px, c, up, ev) != 0)
		return;
	/* a hang-up that reading cannot clear (buffer full, not reading) */
	if (!up && (ev & EPOLLHUP)) {
		conn_close(px, c);
		return;
	}
	if (up && (ev & (EPOLLHUP | EPOLLERR)) && !(c->umask & EPOLLIN)) {
		up_fail(px, c, "the connection was closed");
		return;
	}
	conn_masks(px, c);
}

static void
accept_all(struct proxy *px)
{
	int fd, n;

	for (n = 0; n < 64; n++) {
		fd = accept4(px->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				log_warn("bus proxy: accept on %s", px->addr);
				/* level-triggered: pause instead of spinning */
				(void)epoll_ctl(
				    px->efd, EPOLL_CTL_DEL, px->lfd, NULL);
				px->listen_paused_until = now_ms() + 1000;
			}
			return;
		}
		if (__atomic_load_n(&px->stats.connections_active,
		        __ATOMIC_RELAXED) >= PROXY_MAX_CONNS) {
			STAT_ADD(px, rejected_total, 1);
			log_warnx("bus proxy: %d connections open; refusing "
			          "one more on %s",
			    PROXY_MAX_CONNS, px->addr);
			close(fd);
			continue;
		}
		conn_new(px, fd);
	}
}

static void
timers(struct proxy *px, int64_t now)
{
	struct pconn *c, *next;

	for (c = px->conns; c != NULL; c = next) {
		next = c->next;
		if (c->deadline == 0 || now < c->deadline)
			continue;
		if (c->st != UP_RELAY)
			up_fail(px, c,
			    "connect and TLS handshake timed out "
			    "after %d ms",
			    PROXY_CONNECT_MS);
		else
			conn_close(px, c); /* half-closed too long */
	}
	if (px->listen_paused_until != 0 && now >= px->listen_paused_until) {
		px->listen_paused_until = 0;
		(void)ep_add(px, px->lfd, TAG_LISTEN, EPOLLIN);
	}
}

static void
free_dead(struct proxy *px)
{
	struct pconn *c;

	while ((c = px->dead) != NULL) {
		px->dead = c->next;
		a_free(c);
	}
}

static void *
proxy_loop(void *arg)
{
	struct proxy *px = arg;
	struct epoll_event evs[64];
	sigset_t all;
	uint64_t tag;
	struct pconn *c;
	int n, i;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!px->stop) {
		n = epoll_wait(px->efd, evs, 64, 1000);
		if (n == -1 && errno != EINTR) {
			log_warn("bus proxy: epoll_wait");
			break;
		}
		for (i = 0; i < n; i++) {
			tag = evs[i].data.u64;
			if (tag == TAG_LISTEN)
				accept_all(px);
			else if (tag == TAG_WAKE)
				continue;
			else {
				c = (struct pconn *)(uintptr_t)(tag &
				    ~(uint64_t)SIDE_UP);
				conn_event(
				    px, c, (tag & SIDE_UP) != 0, evs[i].events);
			}
		}
		timers(px, now_ms());
		free_dead(px);
	}
	while (px->conns != NULL)
		conn_close(px, px->conns);
	free_dead(px);
	return NULL;
}

/* ---- start, stop, stats ------------------------------------------------ */

int
proxy_start(struct proxy **pp, const char *addr, const char *upstream_url,
    const char *ca_file, struct agent_err *err)
{
	struct proxy *px;
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1, rc;

	*pp = NULL;
	if ((px = a_calloc(1, sizeof(*px))) == NULL)
		return err_oom(err, "proxy_start");
	px->lfd = px->efd = px->wfd = -1;
	snprintf(px->addr, sizeof(px->addr), "%s", addr);
	if ((rc = addr_resolve(addr, &ss, &sl, err)) != 0)
		goto fail;
	if ((rc = redis_url_parse(upstream_url, &px->up, err)) != 0)
		goto fail;
	if (!px->up.tls || px->up.kind != REDIS_TCP) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "--bus-proxy relays to a "
		    "rediss:// URL; this Redis URL is not TLS (Pylon can use "
		    "it directly: drop --bus-proxy)");
		goto fail;
	}
	redis_url_where(&px->up, px->where, sizeof(px->where));
	if ((px->ctx = transport_tls_ctx(&px->up, ca_file, err)) == NULL) {
		rc = err->code ? err->code : EXIT_AGENT_CONFIG;
		goto fail;
	}
	SSL_CTX_set_mode(px->ctx,
	    SSL_MODE_ENABLE_PARTIAL_WRITE |
	        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* one read() takes every record the socket holds (pump() asks
	 * SSL_has_pending() so none is left unseen by epoll) */
	SSL_CTX_set_read_ahead(px->ctx, 1);

	px->lfd =
	    socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (px->lfd == -1 ||
	    setsockopt(px->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ==
	        -1 ||
	    bind(px->lfd, (struct sockaddr *)&ss, sl) == -1 ||
	    listen(px->lfd, 128) == -1) {
		rc = err_set(err,
		    errno == EADDRINUSE ? EXIT_AGENT_CONFIG
		                        : EXIT_AGENT_SOFTWARE,
		    "--bus-proxy %s: cannot listen: %s "
		    "(another process on that port? pick a free one)",
		    addr, strerror(errno));
		goto fail;
	}
	if ((px->efd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (px->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    ep_add(px, px->lfd, TAG_LISTEN, EPOLLIN) != 0 ||
	    ep_add(px, px->wfd, TAG_WAKE, EPOLLIN) != 0) {
		rc = err_set(err, EXIT_AGENT_SOFTWARE,
		    "--bus-proxy: epoll: "
		    "%s",
		    strerror(errno));
		goto fail;
	}
	if ((rc = pthread_create(&px->th, NULL, proxy_loop, px)) != 0) {
		rc = err_set(err, EXIT_AGENT_SOFTWARE,
		    "--bus-proxy: cannot "
		    "start the proxy thread: %s",
		    strerror(rc));
		goto fail;
	}
	px->th_started = true;
	log_info("bus proxy: listening on %s (plain Redis), relaying to %s "
	         "over TLS",
	    addr, px->where);
	*pp = px;
	return 0;
fail:
	proxy_stop(px);
	return rc;
}

void
proxy_stop(struct proxy *px)
{
	uint64_t one = 1;

	if (px == NULL)
		return;
	if (px->th_started) {
		px->stop = 1;
		if (write(px->wfd, &one, sizeof(one)) == -1)
			log_debug("bus proxy: wake: %s", strerror(errno));
		pthread_join(px->th, NULL);
	}
	if (px->lfd >= 0)
		close(px->lfd);
	if (px->efd >= 0)
		close(px->efd);
	if (px->wfd >= 0)
		close(px->wfd);
	if (px->ctx != NULL)
		SSL_CTX_free(px->ctx);
	redis_url_release(&px->up);
	a_free(px);
}

void
proxy_stats_get(const struct proxy *px, struct proxy_stats *s)
{
	const uint64_t *src = (const uint64_t *)&px->stats;
	uint64_t *dst = (uint64_t *)s;
	size_t i;

	for (i = 0; i < sizeof(*s) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

char *
proxy_metrics_text(const struct proxy_stats *s)
{
	char buf[2048];
	int n;

	n = snprintf(buf, sizeof(buf),
	    "# HELP pylon_agent_proxy_connections_total Client connections "
	    "the bus proxy accepted.\n"
	    "# TYPE pylon_agent_proxy_connections_total counter\n"
	    "pylon_agent_proxy_connections_total %" PRIu64 "\n"
	    "# HELP pylon_agent_proxy_connections Client connections open "
	    "now.\n"
	    "# TYPE pylon_agent_proxy_connections gauge\n"
	    "pylon_agent_proxy_connections %" PRIu64 "\n"
	    "# HELP pylon_agent_proxy_rejected_total Client connections "
	    "refused over the limit of %d.\n"
	    "# TYPE pylon_agent_proxy_rejected_total counter\n"
	    "pylon_agent_proxy_rejected_total %" PRIu64 "\n"
	    "# HELP pylon_agent_proxy_bytes_total Bytes relayed, by "
	    "direction (up: client to Redis).\n"
	    "# TYPE pylon_agent_proxy_bytes_total counter\n"
	    "pylon_agent_proxy_bytes_total{direction=\"up\"} %" PRIu64 "\n"
	    "pylon_agent_proxy_bytes_total{direction=\"down\"} %" PRIu64 "\n"
	    "# HELP pylon_agent_proxy_upstream_errors_total Upstream "
	    "failures (DNS, connect, TLS, I/O); each closed a client.\n"
	    "# TYPE pylon_agent_proxy_upstream_errors_total counter\n"
	    "pylon_agent_proxy_upstream_errors_total %" PRIu64 "\n",
	    s->connections_total, s->connections_active, PROXY_MAX_CONNS,
	    s->rejected_total, s->bytes_up_total, s->bytes_down_total,
	    s->upstream_errors_total);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return NULL;
	return a_strdup(buf);
}

int
proxy_serve_begin(struct options *o, struct proxy **pp, struct agent_err *err)
{
	struct redis_url u;
	char *local;
	bool tls;
	int rc;

	*pp = NULL;
	if (o->bus_proxy == NULL || o->bus_proxy[0] == '\0')
		return 0;
	if ((rc = proxy_addr_check(o->bus_proxy, err)) != 0)
		return rc;
	if (o->redis_url == NULL || o->redis_url[0] == '\0') {
		log_info("bus proxy: no Redis URL configured; the proxy is "
		         "not started");
		return 0;
	}
	if ((rc = redis_url_parse(o->redis_url, &u, err)) != 0)
		return rc;
	tls = u.tls;
	redis_url_release(&u);
	if (!tls) {
		log_info("bus proxy: the Redis URL is not rediss://, so Pylon "
		         "uses it directly and the proxy is not started");
		return 0;
	}
	if ((local = proxy_pylon_url(o->redis_url, o->bus_proxy, err)) == NULL)
		return err->code ? err->code : EXIT_AGENT_CONFIG;
	if ((rc = proxy_start(
	         pp, o->bus_proxy, o->redis_url, o->redis_ca_file, err)) != 0) {
		a_free(local);
		return rc;
	}
	/* From here on the agent's own proof and checks, the env handed to
	 * Pylon and /status all use Pylon's path through the proxy. */
	redis_url_register_secrets(local);
	a_free(o->redis_url);
	o->redis_url = local;
	return 0;
}

char *
proxy_metrics_append(const struct proxy *px, char *body, size_t *len)
{
	struct proxy_stats s;
	char *t, *nb;
	size_t tl;

	proxy_stats_get(px, &s);
	if ((t = proxy_metrics_text(&s)) == NULL) {
		a_free(body);
		return NULL;
	}
	tl = strlen(t);
	if ((nb = a_realloc(body, *len + tl + 1)) == NULL) {
		a_free(t);
		a_free(body);
		return NULL;
	}
	memcpy(nb + *len, t, tl + 1);
	*len += tl;
	a_free(t);
	return nb;
}
