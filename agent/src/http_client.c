/*
 * http_client.c - the libcurl wrapper used by the Kubernetes and Fly
 * adapters.  One easy handle per thread, reset for each request, so the
 * requests of a discovery reuse one connection.  See http_client.h.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include "curl_dl.h"
#include "http_client.h"

#define HTTP_DEFAULT_TIMEOUT_MS 10000L
#define HTTP_DEFAULT_BASE_MS 200L
#define HTTP_DEFAULT_CAP_MS 5000L
#define HTTP_RETRY_AFTER_MAX_MS (10L * 60 * 1000)
/* One response header line; libcurl's own cap (CURL_MAX_HTTP_HEADER) is
 * 100 KiB and it reports a longer line as "out of memory". */
#define HTTP_MAX_HEADER_LINE (16u * 1024)
#define HTTP_CURL_HEADER_CAP (100u * 1024)

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static CURLcode http_init_rc = CURLE_OK;

static pthread_key_t http_key;
static bool http_key_ok;

/* A thread's cached easy handle goes with the thread. */
static void
http_handle_free(void *h)
{
	curl_easy_cleanup(h);
}

static void
http_global_init(void)
{
	http_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	http_key_ok = pthread_key_create(&http_key, http_handle_free) == 0;
}

/*
 * This thread's easy handle, options reset.  Keeping it keeps its
 * connection cache (curl_easy_reset leaves live connections and TLS
 * sessions alone): the requests of one discovery share one TLS
 * connection instead of a handshake (and an SSL_CTX with the CA loaded)
 * each.  One handle per thread: a curl handle is never shared between
 * threads.
 */
static CURL *
http_handle(void)
{
	CURL *h;

	if (!http_key_ok)
		return curl_easy_init();
	if ((h = pthread_getspecific(http_key)) != NULL) {
		curl_easy_reset(h);
		return h;
	}
	if ((h = curl_easy_init()) == NULL)
		return NULL;
	if (pthread_setspecific(http_key, h) != 0) {
		curl_easy_cleanup(h);
		return NULL;
	}
	return h;
}

/* Done with the handle of http_handle(). */
static void
http_handle_done(CURL *h)
{
	if (!http_key_ok)
		curl_easy_cleanup(h);
}

/* The body collected by the write callback, capped. */
struct http_buf {
	char *data;
	size_t len;
	size_t cap; /* allocated */
	size_t max; /* the response size cap */
	bool too_large;
	bool oom;
	size_t header_too_large; /* the length of a line over the cap */
	bool in_headers; /* a status line came, the body not */
	long retry_after_ms;
};

static size_t
http_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_buf *b = arg;
	size_t n = size * nmemb;
	size_t ncap;
	char *p;

	if (n > b->max || b->len > b->max - n) {
		b->too_large = true;
		return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
	}
	if (b->len + n + 1 > b->cap) {
		ncap = b->cap ? b->cap : 4096;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if (ncap > b->max + 1)
			ncap = b->max + 1;
		if ((p = a_realloc(b->data, ncap)) == NULL) {
			b->oom = true;
			return 0;
		}
		b->data = p;
		b->cap = ncap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/*
 * Retry-After: delay-seconds or an HTTP-date.  Returns ms >= 0, or -1
 * when the value is unusable.  now is the current wall-clock time.
 */
STATIC long
http_parse_retry_after(const char *v, time_t now)
{
	char buf[128];
	size_t n;
	char *end;
	long s;
	time_t t;
	struct agent_err e;

	while (*v == ' ' || *v == '\t')
		v++;
	n = strcspn(v, "\r\n");
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	rstrip(buf);
	if (isdigit((unsigned char)buf[0])) {
		s = strtol(buf, &end, 10);
		if (*end != '\0' || s < 0)
			return -1;
		if (s > HTTP_RETRY_AFTER_MAX_MS / 1000)
			return HTTP_RETRY_AFTER_MAX_MS;
		return s * 1000;
	}
	if (dl_need_curl(&e) != 0)
		return -1;
	t = curl_getdate(buf, NULL);
	if (t == (time_t)-1)
		return -1;
	if (t <= now)
		return 0;
	if (t - now > HTTP_RETRY_AFTER_MAX_MS / 1000)
		return HTTP_RETRY_AFTER_MAX_MS;
	return (long)(t - now) * 1000;
}

static size_t
http_header_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_buf *b = arg;
	size_t n = size * nmemb;
	static const char name[] = "retry-after:";
	char line[160];

	if (n > HTTP_MAX_HEADER_LINE) {
		b->header_too_large = n;
		return 0; /* aborts the transfer */
	}
	/* A new response (e.g. after a 100 Continue) starts over. */
	if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
		b->retry_after_ms = -1;
		b->in_headers = true;
	} else if (n <= 2 && (ptr[0] == '\r' || ptr[0] == '\n'))
		b->in_headers = false;
	if (n > sizeof(name) - 1 && n < sizeof(line) &&
	    strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
		memcpy(line, ptr + sizeof(name) - 1, n - (sizeof(name) - 1));
		line[n - (sizeof(name) - 1)] = '\0';
		b->retry_after_ms = http_parse_retry_after(line, time(NULL));
	}
	return n;
}

/*
 * Full-jitter backoff: uniform in [0, min(cap, base * 2^(attempt-1))],
 * attempt counting from 1.  u is a uniform random number in [0,1).
 */
STATIC long
http_backoff_ms(int attempt, long base, long cap, double u)
{
	long ceil_ms = base;
	int i;

	for (i = 1; i < attempt && ceil_ms < cap; i++)
		ceil_ms *= 2;
	if (ceil_ms > cap)
		ceil_ms = cap;
	return (long)(u * (double)(ceil_ms + 1));
}

bool
http_status_retryable(long status)
{
	return status == 429 || (status >= 500 && status <= 599);
}

/* Whether a transport error may go away on its own. */
static bool
http_curl_retryable(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* Precise words for a transport failure. */
static void
http_curl_message(CURLcode c, const char *errbuf, const struct http_buf *b,
    long timeout_ms, char *out, size_t n)
{
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(c);

	if (b->too_large) {
		snprintf(out, n,
		    "response larger than %zu bytes (cap): "
		    "refusing to read further",
		    b->max);
		return;
	}
	if (b->oom) {
		snprintf(out, n, "out of memory reading the response");
		return;
	}
	if (b->header_too_large > 0) {
		snprintf(out, n,
		    "response header line of %zu bytes is over the "
		    "%u-byte cap: refusing it (a proxy or API server sending "
		    "oversized headers?)",
		    b->header_too_large, HTTP_MAX_HEADER_LINE);
		return;
	}
	/* libcurl refuses a header line over its own cap before our header
	 * callback sees it, and calls that "out of memory". */
	if (c == CURLE_OUT_OF_MEMORY && b->in_headers) {
		snprintf(out, n,
		    "response header line over libcurl's %u-byte "
		    "cap (libcurl says \"%s\"): refusing it (a proxy or API "
		    "server sending oversized headers?)",
		    HTTP_CURL_HEADER_CAP, detail);
		return;
	}
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(out, n,
		    "DNS: cannot resolve the host (%s); check "
		    "the URL and the resolver",
		    detail);
		break;
	case CURLE_COULDNT_CONNECT:
		snprintf(out, n,
		    "connection refused or unreachable (%s); "
		    "is the API up and reachable from here?",
		    detail);
		break;
	case CURLE_OPERATION_TIMEDOUT:
		snprintf(out, n,
		    "timed out after %ld ms (%s); raise "
		    "--api-timeout or check the network",
		    timeout_ms, detail);
		break;
	case CURLE_PEER_FAILED_VERIFICATION:
		snprintf(out, n,
		    "TLS verification failed: the server "
		    "certificate is not trusted by the configured CA or "
		    "does not match the host name (%s)",
		    detail);
		break;
	case CURLE_SSL_CACERT_BADFILE:
		snprintf(out, n, "TLS: cannot load the CA certificates (%s)",
		    detail);
		break;
	case CURLE_SSL_CERTPROBLEM:
		snprintf(out, n,
		    "TLS: cannot use the client certificate "
		    "(%s)",
		    detail);
		break;
	case CURLE_SSL_CONNECT_ERROR:
		snprintf(out, n, "TLS handshake failed (%s)", detail);
		break;
	case CURLE_GOT_NOTHING:
		snprintf(out, n,
		    "the server closed the connection without "
		    "a response");
		break;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		snprintf(out, n, "bad URL (%s)", detail);
		break;
	default:
		snprintf(out, n, "%s", detail);
		break;
	}
}

/*
 * tls-server-name: curl has no SNI override, so the URL's host becomes
 * the server name (SNI, verification and Host header use it) and
 * CURLOPT_CONNECT_TO sends the connection to the original host.
 * Returns the rewritten URL (owned) and fills *connect_to.
 */
static int
http_rewrite_for_sni(const char *url, const char *server_name, char **out_url,
    struct curl_slist **connect_to, struct agent_err *err)
{
	CURLU *u = NULL;
	char *host = NULL, *port = NULL, *nurl = NULL;
	char line[600];
	struct curl_slist *sl;
	int rc = 0;

	*out_url = NULL;
	if ((u = curl_url()) == NULL)
		return err_oom(err, "http: tls-server-name");
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
	        CURLUE_OK) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "http: cannot parse the "
		    "URL %s to apply tls-server-name",
		    url);
		goto out;
	}
	if (curl_url_set(u, CURLUPART_HOST, server_name, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &nurl, 0) != CURLUE_OK) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "http: tls-server-name "
		    "\"%s\" is not a valid host name",
		    server_name);
		goto out;
	}
	if ((size_t)snprintf(line, sizeof(line), "%s:%s:%s:%s", server_name,
	        port, host, port) >= sizeof(line)) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "http: tls-server-name "
		    "too long");
		goto out;
	}
	if ((sl = curl_slist_append(*connect_to, line)) == NULL) {
		rc = err_oom(err, "http: tls-server-name");
		goto out;
	}
	*connect_to = sl;
	if ((*out_url = a_strdup(nurl)) == NULL)
		rc = err_oom(err, "http: tls-server-name");
out:
	curl_free(host);
	curl_free(port);
	curl_free(nurl);
	curl_url_cleanup(u);
	return rc;
}

/* One attempt.  Returns the CURLcode; fills rs->status and the buffer. */
static CURLcode
http_once_do(const struct http_request *rq, const char *url,
    struct curl_slist *hdrs, struct curl_slist *connect_to, long timeout_ms,
    struct http_buf *b, long *status, char *errbuf)
{
	CURL *h;
	CURLcode c;
	struct curl_blob blob;
	const char *method = rq->method ? rq->method : "GET";

	*status = 0;
	errbuf[0] = '\0';
	if ((h = http_handle()) == NULL)
		return CURLE_OUT_OF_MEMORY;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "pylon-agent/" AGENT_VERSION);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, b);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	if (connect_to != NULL)
		curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
	if (rq->noproxy_host != NULL)
		curl_easy_setopt(h, CURLOPT_NOPROXY, rq->noproxy_host);

	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (rq->body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)(rq->body_len ? rq->body_len
		                              : strlen(rq->body)));
	} else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}

	/* TLS: a given CA replaces the system store entirely (no bundle
	 * load: it costs tens of ms at start). */
	if (rq->ca_pem != NULL) {
		blob.data = (void *)(uintptr_t)rq->ca_pem;
		blob.len = rq->ca_pem_len ? rq->ca_pem_len : strlen(rq->ca_pem);
		blob.flags = CURL_BLOB_COPY;
		curl_easy_setopt(h, CURLOPT_CAINFO, NULL);
		curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
	} else if (rq->ca_file != NULL) {
		curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(h, CURLOPT_CAINFO, rq->ca_file);
	}
	if (rq->client_cert_pem != NULL) {
		blob.data = (void *)(uintptr_t)rq->client_cert_pem;
		blob.len = strlen(rq->client_cert_pem);
		blob.flags = CURL_BLOB_COPY;
		curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &blob);
	}
	if (rq->client_key_pem != NULL) {
		blob.data = (void *)(uintptr_t)rq->client_key_pem;
		blob.len = strlen(rq->client_key_pem);
		blob.flags = CURL_BLOB_COPY;
		curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
		curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &blob);
	}
	if (rq->insecure) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}

	c = curl_easy_perform(h);
	if (c == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	http_handle_done(h);
	return c;
}

static void
http_buf_reset(struct http_buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
	b->too_large = false;
	b->oom = false;
	b->header_too_large = 0;
	b->in_headers = false;
	b->retry_after_ms = -1;
}

/*
 * The server's last Retry-After, for the whole process: a request that
 * gave up before the pause ended (its deadline was shorter) must not let
 * the next one (serve's next resync) call sooner than the server asked.
 */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t gate_until_ms;

static void
retry_gate_set(long retry_after_ms)
{
	int64_t until = now_ms() + retry_after_ms;

	pthread_mutex_lock(&gate_mu);
	if (until > gate_until_ms)
		gate_until_ms = until;
	pthread_mutex_unlock(&gate_mu);
}

/* Waits out the pause when it fits the deadline, else refuses to send. */
static int
retry_gate(
    const struct http_request *rq, const char *method, struct agent_err *err)
{
	int64_t left;

	pthread_mutex_lock(&gate_mu);
	left = gate_until_ms - now_ms();
	pthread_mutex_unlock(&gate_mu);
	if (left <= 0)
		return 0;
	if (rq->deadline_ms > 0 && left >= rq->deadline_ms)
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "%s %s: not sent: the "
		    "server asked for a pause (Retry-After) that ends in %lld "
		    "ms, after this request's deadline; it is tried again "
		    "later",
		    method, rq->url, (long long)left);
	sleep_ms((long)left, rq->stop);
	return 0;
}

int
http_do(const struct http_request *rq, struct http_response *rs,
    struct agent_err *err)
{
	struct http_buf b;
	struct curl_slist *hdrs = NULL, *connect_to = NULL, *sl;
	char errbuf[CURL_ERROR_SIZE];
	char why[512];
	char hline[256];
	char *sni_url = NULL, *auth = NULL;
	const char *url, *method;
	CURLcode c = CURLE_OK;
	int64_t start, attempt_start, left;
	long timeout_ms, wait, base, cap, tmo, status = 0;
	int max_attempts, attempt, rc = 0;

	memset(rs, 0, sizeof(*rs));
	rs->retry_after_ms = -1;
	memset(&b, 0, sizeof(b));
	b.retry_after_ms = -1;
	b.max = rq->max_body ? rq->max_body : HTTP_DEFAULT_MAX_BODY;
	method = rq->method ? rq->method : "GET";
	url = rq->url;
	timeout_ms =
	    rq->timeout_ms > 0 ? rq->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	max_attempts = rq->max_attempts > 0 ? rq->max_attempts : 1;
	base = rq->backoff_base_ms > 0 ? rq->backoff_base_ms
	                               : HTTP_DEFAULT_BASE_MS;
	cap = rq->backoff_cap_ms > 0 ? rq->backoff_cap_ms : HTTP_DEFAULT_CAP_MS;
	start = now_ms();

	if (url == NULL || *url == '\0')
		return err_set(err, EXIT_AGENT_SOFTWARE, "http: no URL");

	if ((rc = dl_need_curl(err)) != 0 ||
	    (rc = retry_gate(rq, method, err)) != 0)
		return rc;
	pthread_once(&http_once, http_global_init);
	if (http_init_rc != CURLE_OK)
		return err_set(err, EXIT_AGENT_SOFTWARE,
		    "http: libcurl "
		    "initialization failed: %s",
		    curl_easy_strerror(http_init_rc));

	/* Headers.  The Authorization value is never logged; it is kept
	 * in a private copy freed (and wiped) at the end. */
	snprintf(hline, sizeof(hline), "Accept: %s",
	    rq->accept ? rq->accept : "application/json");
	if ((sl = curl_slist_append(hdrs, hline)) == NULL)
		goto oom;
	hdrs = sl;
	if (rq->content_type != NULL) {
		snprintf(
		    hline, sizeof(hline), "Content-Type: %s", rq->content_type);
		if ((sl = curl_slist_append(hdrs, hline)) == NULL)
			goto oom;
		hdrs = sl;
	}
	/* No "Expect: 100-continue" round trip for small bodies. */
	if ((sl = curl_slist_append(hdrs, "Expect:")) == NULL)
		goto oom;
	hdrs = sl;
	if (rq->authorization != NULL) {
		size_t n =
		    strlen(rq->authorization) + sizeof("Authorization: ");

		if ((auth = a_malloc(n)) == NULL)
			goto oom;
		snprintf(auth, n, "Authorization: %s", rq->authorization);
		sl = curl_slist_append(hdrs, auth);
		explicit_bzero(auth, n);
		a_free(auth);
		auth = NULL;
		if (sl == NULL)
			goto oom;
		hdrs = sl;
	}
	if (rq->tls_server_name != NULL && *rq->tls_server_name != '\0') {
		rc = http_rewrite_for_sni(
		    url, rq->tls_server_name, &sni_url, &connect_to, err);
		if (rc)
			goto out;
		url = sni_url;
	}

	for (attempt = 1;; attempt++) {
		tmo = timeout_ms;
		if (rq->deadline_ms > 0) {
			left = rq->deadline_ms - (now_ms() - start);
			if (left <= 0)
				break;
			if (left < tmo)
				tmo = (long)left;
		}
		http_buf_reset(&b);
		attempt_start = now_ms();
		c = http_once_do(
		    rq, url, hdrs, connect_to, tmo, &b, &status, errbuf);
		rs->attempts = attempt;
		stats_api_request(c == CURLE_OK ? status : 0);
		if (c == CURLE_OK && http_status_retryable(status) &&
		    b.retry_after_ms >= 0)
			retry_gate_set(b.retry_after_ms);
		if (log_debug_enabled()) {
			if (c == CURLE_OK)
				log_debug("http %s %s -> %ld (%zu bytes) in "
				          "%lld ms, attempt %d",
				    method, rq->url, status, b.len,
				    (long long)(now_ms() - attempt_start),
				    attempt);
			else
				log_debug("http %s %s -> error: %s in %lld "
				          "ms, attempt %d",
				    method, rq->url,
				    errbuf[0] ? errbuf : curl_easy_strerror(c),
				    (long long)(now_ms() - attempt_start),
				    attempt);
		}
		/* Our own allocation failed, or libcurl's without a word
		 * about a header (an oversized header line is a discovery
		 * error, below). */
		if (b.oom || (c == CURLE_OUT_OF_MEMORY && !b.in_headers))
			goto oom;
		if (c == CURLE_OK && !http_status_retryable(status))
			break;
		if (c != CURLE_OK &&
		    (b.too_large || b.header_too_large || b.in_headers ||
		        !http_curl_retryable(c)))
			break;
		if (attempt >= max_attempts)
			break;
		if (rq->stop != NULL && *rq->stop)
			break;
		/* Wait: full-jitter backoff, on top of Retry-After when
		 * given (never sooner than the server asked, and a fleet
		 * told "1" at once does not come back at once). */
		wait = http_backoff_ms(attempt, base, cap, random_unit());
		if (c == CURLE_OK && b.retry_after_ms >= 0)
			wait += b.retry_after_ms;
		if (rq->deadline_ms > 0) {
			left = rq->deadline_ms - (now_ms() - start);
			/* Not worth waiting when no attempt would fit. */
			if (wait >= left)
				break;
		}
		if (log_debug_enabled())
			log_debug("http %s %s: retrying in %ld ms", method,
			    rq->url, wait);
		sleep_ms(wait, rq->stop);
		if (rq->stop != NULL && *rq->stop)
			break;
	}

	rs->elapsed_ms = (double)(now_ms() - start);
	if (rs->attempts == 0) {
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "%s %s: deadline of "
		    "%ld ms passed before the first attempt",
		    method, rq->url, rq->deadline_ms);
		goto out;
	}
	if (c != CURLE_OK) {
		http_curl_message(c, errbuf, &b, tmo, why, sizeof(why));
		rc = err_set(err, EXIT_AGENT_DISCOVERY, "%s %s: %s%s", method,
		    rq->url, why, rs->attempts > 1 ? " (after retries)" : "");
		goto out;
	}
	rs->status = status;
	rs->retry_after_ms = b.retry_after_ms;
	if (b.data == NULL) {
		if ((b.data = a_strdup("")) == NULL)
			goto oom;
	}
	rs->body = b.data;
	rs->len = b.len;
	b.data = NULL;
	goto out;
oom:
	rc = err_oom(err, "http");
out:
	a_free(b.data);
	a_free(sni_url);
	curl_slist_free_all(connect_to);
	if (hdrs != NULL) {
		/* Wipe the Authorization line before freeing it. */
		for (sl = hdrs; sl != NULL; sl = sl->next)
			if (strncasecmp(sl->data, "Authorization:", 14) == 0)
				explicit_bzero(sl->data, strlen(sl->data));
		curl_slist_free_all(hdrs);
	}
	return rc;
}

void
http_response_release(struct http_response *rs)
{
	a_free(rs->body);
	rs->body = NULL;
	rs->len = 0;
}

void
http_error_text(const struct http_response *rs, char *out, size_t n)
{
	cJSON *j = NULL, *e;
	const char *s = NULL;
	char red[256];
	size_t i, k;

	if (n == 0)
		return;
	out[0] = '\0';
	if (rs->body == NULL || rs->len == 0)
		return;
	j = cJSON_ParseWithLength(rs->body, rs->len);
	if (j != NULL && cJSON_IsObject(j)) {
		e = cJSON_GetObjectItemCaseSensitive(j, "error");
		if (!cJSON_IsString(e))
			e = cJSON_GetObjectItemCaseSensitive(j, "message");
		if (cJSON_IsString(e))
			s = e->valuestring;
	}
	if (s == NULL)
		s = rs->body;
	/* Redact before the cut: a token straddling it still matches. */
	redact(s, red, sizeof(red));
	s = red;
	/* First line, printable ASCII only, bounded. */
	for (i = 0, k = 0; s[i] != '\0' && s[i] != '\n' && s[i] != '\r' &&
	     k + 1 < n && k < 200;
	     i++)
		out[k++] = isprint((unsigned char)s[i]) ? s[i] : '?';
	out[k] = '\0';
	rstrip(out);
	cJSON_Delete(j);
}
