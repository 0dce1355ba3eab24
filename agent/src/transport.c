/*
 * transport.c - TCP, unix and TLS connections with deadlines for the bus.
 *
 * Debian's hiredis 0.14 has no TLS, so the bus speaks RESP over this:
 * getaddrinfo on a thread (a DNS lookup cannot outlive the deadline),
 * non-blocking connect, poll() for every read and write, OpenSSL with SNI
 * and host name or IP verification.  Each failure becomes one line that
 * names the cause (DNS, refused, timeout, TLS verification with the
 * certificate subject).
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ssl_dl.h"

#include "bus.h"

struct transport {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	bool live; /* handshake done, no fatal TLS error */
	bool got_data; /* read anything yet */
	char where[300];
	/* TLS verification: the first failure the callback saw */
	long verr;
	int vdepth;
	char vsubject[256]; /* the certificate that failed */
	char lsubject[256]; /* the server's (leaf) certificate */
	char lissuer[256];
};

const char *
transport_where(const struct transport *t)
{
	return t->where;
}

/* Milliseconds left until deadline, >= 0, capped for poll(). */
static int
left_ms(int64_t deadline)
{
	int64_t l = deadline - now_ms();

	if (l < 0)
		return 0;
	return l > 3600000 ? 3600000 : (int)l;
}

/* Waits for ev on fd; 1 ready, 0 deadline passed, -1 error (errno). */
static int
wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd pfd;
	int rc;

	for (;;) {
		pfd.fd = fd;
		pfd.events = ev;
		pfd.revents = 0;
		rc = poll(&pfd, 1, left_ms(deadline));
		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/*
 * SIGPIPE: OpenSSL writes to the socket with write(2), which raises
 * SIGPIPE on a dead peer.  It is blocked around TLS calls and a SIGPIPE
 * they raised is consumed (the curl/OpenSSL idiom), for callers that do
 * not ignore it.  main() ignores it process-wide as well; every child the
 * agent starts gets default dispositions back from spawn_restore_signals()
 * (spawn.c), so SIG_IGN never reaches Pylon.
 */
struct sigpipe_guard {
	sigset_t old;
	bool pending;
};

static void
sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t s, pend;

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	sigemptyset(&pend);
	sigpending(&pend);
	g->pending = sigismember(&pend, SIGPIPE) == 1;
	pthread_sigmask(SIG_BLOCK, &s, &g->old);
}

static void
sigpipe_unblock(struct sigpipe_guard *g)
{
	sigset_t s, pend;
	struct timespec zero = {0, 0};

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	if (!g->pending) {
		sigemptyset(&pend);
		sigpending(&pend);
		if (sigismember(&pend, SIGPIPE) == 1)
			(void)sigtimedwait(&s, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- DNS ---------------------------------------------------------------- */

/*
 * getaddrinfo() has no timeout, so it runs on a thread of its own and the
 * caller waits for it until the deadline.  A lookup still running at the
 * deadline is abandoned: the thread is detached and frees the job when
 * getaddrinfo returns (the last of the two references).
 */
struct dns_job {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	bool done;
	int rc;
	int eno;
	struct addrinfo *res;
	char name[256];
	char serv[8];
};

static void
dns_job_unref(struct dns_job *j)
{
	bool last;

	pthread_mutex_lock(&j->mu);
	last = --j->refs == 0;
	pthread_mutex_unlock(&j->mu);
	if (!last)
		return;
	if (j->res != NULL)
		freeaddrinfo(j->res);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	a_free(j);
}

static void
dns_lookup(struct dns_job *j)
{
	struct addrinfo hints, *res = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV; /* as Pylon: no AI_ADDRCONFIG */
	rc = getaddrinfo(j->name, j->serv, &hints, &res);
	pthread_mutex_lock(&j->mu);
	j->rc = rc;
	j->eno = errno;
	j->res = res;
	j->done = true;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

static void *
dns_thread(void *arg)
{
	sigset_t all;

	/* signals stay with the main thread */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	dns_lookup(arg);
	dns_job_unref(arg);
	return NULL;
}

static bool
host_is_numeric(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 ||
	    inet_pton(AF_INET6, host, &a6) == 1;
}

static enum tr_status
resolve(struct transport *t, const struct redis_url *u, int64_t deadline,
    struct addrinfo **res, struct agent_err *err)
{
	struct dns_job *j;
	pthread_condattr_t ca;
	pthread_t th;
	struct timespec ts;
	int64_t ns;
	bool done;
	int rc, eno;

	*res = NULL;
	if ((j = a_calloc(1, sizeof(*j))) == NULL) {
		err_oom(err, "resolve");
		return TR_ERROR;
	}
	snprintf(j->name, sizeof(j->name), "%s", u->host);
	snprintf(j->serv, sizeof(j->serv), "%d", u->port);
	pthread_mutex_init(&j->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	j->refs = 2;
	/* A numeric address needs no DNS: getaddrinfo answers at once, so
	 * it runs inline (no thread to start and join; issue 16). */
	if (host_is_numeric(j->name) ||
	    pthread_create(&th, NULL, dns_thread, j) != 0) {
		/* no thread: look up inline, without a deadline */
		dns_lookup(j);
		j->refs = 1;
		done = true;
	} else {
		/* now_ms() is CLOCK_MONOTONIC too */
		ns = deadline * 1000000LL;
		ts.tv_sec = (time_t)(ns / 1000000000LL);
		ts.tv_nsec = (long)(ns % 1000000000LL);
		pthread_mutex_lock(&j->mu);
		while (!j->done &&
		    pthread_cond_timedwait(&j->cv, &j->mu, &ts) == 0)
			;
		done = j->done;
		pthread_mutex_unlock(&j->mu);
		if (done)
			pthread_join(th, NULL);
		else
			pthread_detach(th);
	}
	if (!done) {
		dns_job_unref(j);
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: DNS lookup of "
		    "'%s' timed out (check the cluster DNS and the host name "
		    "in the Redis URL)",
		    t->where, u->host);
		return TR_TIMEOUT;
	}
	rc = j->rc;
	eno = j->eno;
	*res = j->res;
	j->res = NULL;
	dns_job_unref(j);
	if (rc == 0)
		return TR_OK;
	if (rc == EAI_NONAME || rc == EAI_NODATA || rc == EAI_FAIL)
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: DNS: cannot "
		    "resolve host '%s': %s (check the host name in the Redis "
		    "URL, e.g. the Service name and namespace)",
		    t->where, u->host, gai_strerror(rc));
	else if (rc == EAI_AGAIN)
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: DNS: temporary "
		    "failure resolving '%s': %s (the DNS server did not "
		    "answer; retrying)",
		    t->where, u->host, gai_strerror(rc));
	else if (rc == EAI_SYSTEM)
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: DNS: lookup of "
		    "'%s' failed: %s",
		    t->where, u->host, strerror(eno));
	else
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: DNS: lookup of "
		    "'%s' failed: %s",
		    t->where, u->host, gai_strerror(rc));
	return TR_ERROR;
}

/* ---- connect ------------------------------------------------------------ */

/* Non-blocking connect of fd to sa by deadline; 0 ok, else errno-ish:
 * ETIMEDOUT when the deadline passed. */
static int
connect_fd(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline)
{
	int e;
	socklen_t el = sizeof(e);

	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return errno;
	switch (wait_fd(fd, POLLOUT, deadline)) {
	case 0:
		return ETIMEDOUT;
	case -1:
		return errno;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == -1)
		return errno;
	return e;
}

static enum tr_status
open_tcp(struct transport *t, const struct redis_url *u, int64_t deadline,
    struct agent_err *err)
{
	struct addrinfo *res = NULL, *ai;
	enum tr_status st;
	int64_t start = now_ms();
	int e = 0, one = 1, fd;
	bool refused = false;

	if ((st = resolve(t, u, deadline, &res, err)) != TR_OK)
		return st;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1) {
			e = errno;
			continue;
		}
		e = connect_fd(fd, ai->ai_addr, ai->ai_addrlen, deadline);
		if (e == 0) {
			(void)setsockopt(
			    fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			(void)setsockopt(
			    fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
			t->fd = fd;
			break;
		}
		close(fd);
		if (e == ECONNREFUSED)
			refused = true;
		if (e == ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	if (t->fd >= 0)
		return TR_OK;
	if (e == ETIMEDOUT) {
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: connect timed "
		    "out after %ld ms (no answer: a firewall or "
		    "NetworkPolicy dropping packets, or the wrong address)",
		    t->where, (long)(now_ms() - start));
		return TR_TIMEOUT;
	}
	/* "refused" from any address says more than, say, an
	 * unreachable IPv6 address next to it */
	if (e == ECONNREFUSED || refused)
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: connection "
		    "refused (nothing listening there: is Redis running, "
		    "and are the host and port right?)",
		    t->where);
	else
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: connect "
		    "failed: %s",
		    t->where, strerror(e));
	return TR_ERROR;
}

static enum tr_status
open_unix(struct transport *t, const struct redis_url *u, int64_t deadline,
    struct agent_err *err)
{
	struct sockaddr_un sun;
	int fd, e;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(u->path) >= sizeof(sun.sun_path)) {
		err_set(err, EXIT_AGENT_CONFIG,
		    "redis %s: socket path too "
		    "long",
		    t->where);
		return TR_ERROR;
	}
	memcpy(sun.sun_path, u->path, strlen(u->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		err_set(err, EXIT_AGENT_UNPROVEN, "redis %s: socket: %s",
		    t->where, strerror(errno));
		return TR_ERROR;
	}
	e = connect_fd(fd, (struct sockaddr *)&sun, sizeof(sun), deadline);
	if (e == 0) {
		t->fd = fd;
		return TR_OK;
	}
	close(fd);
	switch (e) {
	case ENOENT:
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: no such socket "
		    "file (is Redis running with unixsocket %s, and is the "
		    "directory shared with this container?)",
		    t->where, u->path);
		break;
	case EACCES:
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: permission "
		    "denied (check unixsocketperm and this process's user "
		    "and groups)",
		    t->where);
		break;
	case ECONNREFUSED:
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: connection "
		    "refused (a stale socket file: Redis is not running)",
		    t->where);
		break;
	case ETIMEDOUT:
	case EAGAIN:
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: connect timed "
		    "out (the server's backlog is full)",
		    t->where);
		return TR_TIMEOUT;
	default:
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: connect "
		    "failed: %s",
		    t->where, strerror(e));
	}
	return TR_ERROR;
}

/* ---- TLS ---------------------------------------------------------------- */

static void
name_str(X509_NAME *nm, char *out, size_t n)
{
	BIO *b;
	int r;

	out[0] = '\0';
	if (nm == NULL || (b = BIO_new(BIO_s_mem())) == NULL)
		return;
	X509_NAME_print_ex(b, nm, 0, XN_FLAG_RFC2253);
	r = BIO_read(b, out, (int)n - 1);
	out[r > 0 ? r : 0] = '\0';
	BIO_free(b);
}

static int
verify_cb(int ok, X509_STORE_CTX *ctx)
{
	SSL *ssl;
	struct transport *t;
	X509 *cert;

	if (ok)
		return 1;
	ssl = X509_STORE_CTX_get_ex_data(
	    ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl == NULL || (t = SSL_get_app_data(ssl)) == NULL || t->verr != 0)
		return 0;
	t->verr = X509_STORE_CTX_get_error(ctx);
	t->vdepth = X509_STORE_CTX_get_error_depth(ctx);
	if ((cert = X509_STORE_CTX_get_current_cert(ctx)) != NULL)
		name_str(X509_get_subject_name(cert), t->vsubject,
		    sizeof(t->vsubject));
	if ((cert = X509_STORE_CTX_get0_cert(ctx)) != NULL) {
		name_str(X509_get_subject_name(cert), t->lsubject,
		    sizeof(t->lsubject));
		name_str(
		    X509_get_issuer_name(cert), t->lissuer, sizeof(t->lissuer));
	}
	return 0; /* a failed check stays failed */
}

void
tls_last_error(char *buf, size_t n, const char *none)
{
	unsigned long e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		snprintf(buf, n, "%s", none);
	else
		ERR_error_string_n(last, buf, n);
}

static void
ssl_errstr(char *buf, size_t n)
{
	tls_last_error(buf, n, "unexpected end of the handshake");
}

static bool
is_ip(const char *h)
{
	unsigned char a[16];

	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

static enum tr_status
tls_fail(struct transport *t, const struct redis_url *u, const char *why,
    struct agent_err *err)
{
	const char *hint;

	if (t->verr == X509_V_ERR_HOSTNAME_MISMATCH ||
	    t->verr == X509_V_ERR_IP_ADDRESS_MISMATCH)
		hint = "connect with a host name the certificate is issued "
		       "for (its subjectAltName), or reissue the certificate";
	else if (t->verr == X509_V_ERR_CERT_HAS_EXPIRED ||
	    t->verr == X509_V_ERR_CERT_NOT_YET_VALID)
		hint = "renew the server certificate (or fix this machine's "
		       "clock)";
	else
		hint = "give the CA that signed the server certificate with "
		       "--redis-ca-file";
	if (t->verr != 0) {
		char failing[300] = "";

		if (t->vdepth > 0)
			snprintf(failing, sizeof(failing),
			    "; failing "
			    "certificate at depth %d: %s",
			    t->vdepth, t->vsubject[0] ? t->vsubject : "(none)");
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: TLS certificate "
		    "verification failed: %s (certificate subject: %s, "
		    "issuer: %s%s; server name %s); %s",
		    t->where, X509_verify_cert_error_string(t->verr),
		    t->lsubject[0]       ? t->lsubject
		        : t->vsubject[0] ? t->vsubject
		                         : "(none)",
		    t->lissuer[0] ? t->lissuer : "(unknown)", failing, u->host,
		    hint);
		return TR_ERROR;
	}
	err_set(err, EXIT_AGENT_UNPROVEN,
	    "redis %s: TLS handshake "
	    "failed: %s (does this port speak TLS? rediss:// needs Redis's "
	    "tls-port)",
	    t->where, why);
	return TR_ERROR;
}

SSL_CTX *
transport_tls_ctx(
    const struct redis_url *u, const char *ca_file, struct agent_err *err)
{
	SSL_CTX *ctx;
	char why[256];

	if (dl_need_ssl(err) != 0)
		return NULL;
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		err_oom(err, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (!u->insecure) {
		if (ca_file != NULL && *ca_file != '\0') {
			if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) !=
			    1) {
				ssl_errstr(why, sizeof(why));
				err_set(err, EXIT_AGENT_CONFIG,
				    "redis CA file "
				    "%s cannot be loaded: %s (--redis-ca-file "
				    "must be a PEM bundle)",
				    ca_file, why);
				SSL_CTX_free(ctx);
				return NULL;
			}
		} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			ssl_errstr(why, sizeof(why));
			err_set(err, EXIT_AGENT_CONFIG,
			    "the system CA "
			    "certificates cannot be loaded: %s (install "
			    "ca-certificates or use --redis-ca-file)",
			    why);
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	} else
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

int
transport_tls_name(SSL *ssl, const struct redis_url *u)
{
	X509_VERIFY_PARAM *vp;
	int rc;

	if (!is_ip(u->host))
		SSL_set_tlsext_host_name(ssl, u->host);
	if (u->insecure)
		return 0;
	vp = SSL_get0_param(ssl);
	X509_VERIFY_PARAM_set_hostflags(
	    vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (is_ip(u->host))
		rc = X509_VERIFY_PARAM_set1_ip_asc(vp, u->host);
	else
		rc = X509_VERIFY_PARAM_set1_host(vp, u->host, 0);
	return rc == 1 ? 0 : -1;
}

static enum tr_status
open_tls(struct transport *t, const struct redis_url *u, const char *ca_file,
    int64_t deadline, struct agent_err *err)
{
	struct sigpipe_guard g;
	char why[256];
	int rc, e, w;

	if ((t->ctx = transport_tls_ctx(u, ca_file, err)) == NULL)
		return TR_ERROR;
	if ((t->ssl = SSL_new(t->ctx)) == NULL) {
		err_oom(err, "SSL_new");
		return TR_ERROR;
	}
	SSL_set_app_data(t->ssl, t);
	if (transport_tls_name(t->ssl, u) != 0) {
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: cannot "
		    "set up host name verification",
		    t->where);
		return TR_ERROR;
	}
	SSL_set_fd(t->ssl, t->fd);
	for (;;) {
		ERR_clear_error();
		sigpipe_block(&g);
		rc = SSL_connect(t->ssl);
		e = SSL_get_error(t->ssl, rc);
		sigpipe_unblock(&g);
		if (rc == 1) {
			t->live = true;
			return TR_OK;
		}
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			w = wait_fd(t->fd,
			    e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
			    deadline);
			if (w == 1)
				continue;
			if (w == 0) {
				err_set(err, EXIT_AGENT_UNPROVEN,
				    "redis %s: "
				    "TLS handshake timed out (does this port "
				    "speak TLS? rediss:// needs Redis's "
				    "tls-port)",
				    t->where);
				return TR_TIMEOUT;
			}
			snprintf(why, sizeof(why), "%s", strerror(errno));
			return tls_fail(t, u, why, err);
		}
		if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
			snprintf(why, sizeof(why),
			    "the server closed the "
			    "connection");
		else
			ssl_errstr(why, sizeof(why));
		if (t->verr == 0 && SSL_get_verify_result(t->ssl) != X509_V_OK)
			t->verr = SSL_get_verify_result(t->ssl);
		return tls_fail(t, u, why, err);
	}
}

enum tr_status
transport_open(struct transport **tp, const struct redis_url *u,
    const char *ca_file, int64_t deadline, struct agent_err *err)
{
	struct transport *t;
	enum tr_status st;

	*tp = NULL;
	if ((t = a_calloc(1, sizeof(*t))) == NULL) {
		err_oom(err, "transport_open");
		return TR_ERROR;
	}
	t->fd = -1;
	redis_url_where(u, t->where, sizeof(t->where));
	if (u->kind == REDIS_UNIX)
		st = open_unix(t, u, deadline, err);
	else
		st = open_tcp(t, u, deadline, err);
	if (st == TR_OK && u->tls)
		st = open_tls(t, u, ca_file, deadline, err);
	if (st != TR_OK) {
		transport_close(t);
		return st;
	}
	*tp = t;
	return TR_OK;
}

/* ---- I/O ---------------------------------------------------------------- */

static enum tr_status
io_timeout(struct transport *t, const char *what, struct agent_err *err)
{
	err_set(
	    err, EXIT_AGENT_UNPROVEN, "redis %s: %s timed out", t->where, what);
	return TR_TIMEOUT;
}

/* Why a fresh connection may be dropped before its first reply. */
static const char *
early_hint(const struct transport *t)
{
	if (t->got_data)
		return "";
	if (t->ssl != NULL)
		return " (a TLS server that demands a client certificate, "
		       "tls-auth-clients yes, drops the agent here: that is not "
		       "supported)";
	return " (if it expects TLS, use rediss://)";
}

static enum tr_status
io_eof(struct transport *t, struct agent_err *err)
{
	err_set(err, EXIT_AGENT_UNPROVEN,
	    "redis %s: the server closed the "
	    "connection%s",
	    t->where, early_hint(t));
	return TR_EOF;
}

static enum tr_status
io_error(struct transport *t, const char *what, int e, struct agent_err *err)
{
	if (e == ECONNRESET || e == EPIPE)
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: the server "
		    "reset the connection during %s%s",
		    t->where, what, early_hint(t));
	else
		err_set(err, EXIT_AGENT_UNPROVEN, "redis %s: %s failed: %s",
		    t->where, what, strerror(e));
	return e == ECONNRESET || e == EPIPE ? TR_EOF : TR_ERROR;
}

/*
 * After SSL_read/SSL_write returned <= 0 with SSL_get_error() e: sets *ev to
 * the poll event to wait for and returns TR_OK, or returns the failure.
 */
static enum tr_status
ssl_io_status(struct transport *t, int e, const char *what, int *ev,
    struct agent_err *err)
{
	char why[256];

	if (e == SSL_ERROR_WANT_READ) {
		*ev = POLLIN;
		return TR_OK;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		*ev = POLLOUT;
		return TR_OK;
	}
	t->live = false;
	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && errno == 0))
		return io_eof(t, err);
	if (e == SSL_ERROR_SYSCALL)
		return io_error(t, what, errno, err);
	ssl_errstr(why, sizeof(why));
	err_set(err, EXIT_AGENT_UNPROVEN, "redis %s: TLS %s failed: %s%s",
	    t->where, what, why, early_hint(t));
	return TR_ERROR;
}

enum tr_status
transport_write(struct transport *t, const void *buf, size_t n,
    int64_t deadline, struct agent_err *err)
{
	const char *p = buf;
	struct sigpipe_guard g;
	enum tr_status st;
	ssize_t w;
	int rc, e, ev = POLLIN;

	while (n > 0) {
		if (t->ssl == NULL) {
			w = send(t->fd, p, n, MSG_NOSIGNAL);
			if (w > 0) {
				p += w;
				n -= (size_t)w;
				continue;
			}
			if (w == -1 && errno == EINTR)
				continue;
			if (w == -1 && errno != EAGAIN)
				return io_error(t, "write", errno, err);
			ev = POLLOUT;
		} else {
			ERR_clear_error();
			errno = 0;
			sigpipe_block(&g);
			rc = SSL_write(
			    t->ssl, p, n > 1048576 ? 1048576 : (int)n);
			e = SSL_get_error(t->ssl, rc);
			sigpipe_unblock(&g);
			if (rc > 0) {
				p += rc;
				n -= (size_t)rc;
				continue;
			}
			if ((st = ssl_io_status(t, e, "write", &ev, err)) !=
			    TR_OK)
				return st;
		}
		switch (wait_fd(t->fd, (short)ev, deadline)) {
		case 0:
			return io_timeout(t, "write", err);
		case -1:
			return io_error(t, "write", errno, err);
		}
	}
	return TR_OK;
}

enum tr_status
transport_read(struct transport *t, void *buf, size_t n, size_t *got,
    int64_t deadline, struct agent_err *err)
{
	struct sigpipe_guard g;
	enum tr_status st;
	ssize_t r;
	int rc, e, ev = POLLIN;

	*got = 0;
	if (n > 1048576)
		n = 1048576;
	for (;;) {
		if (t->ssl == NULL) {
			r = recv(t->fd, buf, n, 0);
			if (r > 0) {
				*got = (size_t)r;
				t->got_data = true;
				return TR_OK;
			}
			if (r == 0)
				return io_eof(t, err);
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return io_error(t, "read", errno, err);
			ev = POLLIN;
		} else {
			ERR_clear_error();
			errno = 0;
			sigpipe_block(&g);
			rc = SSL_read(t->ssl, buf, (int)n);
			e = SSL_get_error(t->ssl, rc);
			sigpipe_unblock(&g);
			if (rc > 0) {
				*got = (size_t)rc;
				t->got_data = true;
				return TR_OK;
			}
			if ((st = ssl_io_status(t, e, "read", &ev, err)) !=
			    TR_OK)
				return st;
		}
		switch (wait_fd(t->fd, (short)ev, deadline)) {
		case 0:
			return io_timeout(t, "read", err);
		case -1:
			return io_error(t, "read", errno, err);
		}
	}
}

void
transport_close(struct transport *t)
{
	struct sigpipe_guard g;

	if (t == NULL)
		return;
	if (t->ssl != NULL) {
		/* close_notify, best effort, never waiting */
		ERR_clear_error();
		if (t->live) {
			sigpipe_block(&g);
			(void)SSL_shutdown(t->ssl);
			sigpipe_unblock(&g);
		}
		SSL_free(t->ssl);
		ERR_clear_error();
	}
	if (t->ctx != NULL)
		SSL_CTX_free(t->ctx);
	if (t->fd >= 0)
		close(t->fd);
	a_free(t);
}
