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

/* A client certificate or key, PEM text copied by libcurl. */
static void
http_set_pem(CURL *h, CURLoption type, CURLoption blob_opt, const char *pem)
{
	struct curl_blob blob;

	blob.data = (void *)(uintptr_t)pem;
	blob.len = strlen(pem);
	blob.flags = CURL_BLOB_COPY;
	curl_easy_setopt(h, type, "PEM");
	curl_easy_setopt(h, blob_opt, &blob);
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
	if (rq->client_cert_pem != NULL)
		http_set_pem(h, CURLOPT_SSLCERTTYPE, CURLOPT_SSLCERT_BLOB,
		    rq->client_cert_pem);
	if (rq->client_key_pem != NULL)
		http_set_pem(h, CURLOPT_SSLKEYTYPE, CURLOPT_SSLKEY_BLOB,
		    rq->client_key_pem);
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

/* Appends one header line; false when out of memory. */
static bool
http_header_add(struct curl_slist **hdrs, const char *line)
{
	struct curl_slist *sl;

	if ((sl = curl_slist_append(*hdrs, line)) == NULL)
		return false;
	*hdrs = sl;
	return true;
}

/*
 * The request's header list.  The Authorization value is never logged; it
 * goes through a private copy wiped before it is freed (and the list's
 * own copy is wiped by http_headers_free).  False when out of memory.
 */
static bool
http_headers_build(const struct http_request *rq, struct curl_slist **hdrs)
{
	char hline[256];
	char *auth;
	size_t n;
	bool ok;

	snprintf(hline, sizeof(hline), "Accept: %s",
	    rq->accept ? rq->accept : "application/json");
	if (!http_header_add(hdrs, hline))
		return false;
	if (rq->content_type != NULL) {
		snprintf(
		    hline, sizeof(hline), "Content-Type: %s", rq->content_type);
		if (!http_header_add(hdrs, hline))
			return false;
	}
	/* No "Expect: 100-continue" round trip for small bodies. */
	if (!http_header_add(hdrs, "Expect:"))
		return false;
	if (rq->authorization == NULL)
		return true;
	n = strlen(rq->authorization) + sizeof("Authorization: ");
	if ((auth = a_malloc(n)) == NULL)
		return false;
	snprintf(auth, n, "Authorization: %s", rq->authorization);
	ok = http_header_add(hdrs, auth);
	explicit_bzero(auth, n);
	a_free(auth);
	return ok;
}

/* Wipes the Authorization line before freeing the list. */
static void
http_headers_free(struct curl_slist *hdrs)
{
	struct curl_slist *sl;

	for (sl = hdrs; sl != NULL; sl = sl->next)
		if (strncasecmp(sl->data, "Authorization:", 14) == 0)
			explicit_bzero(sl->data, strlen(sl->data));
	curl_slist_free_all(hdrs);
}

/* One call of http_do: what its attempts share, and the last outcome. */
struct http_call {
	const struct http_request *rq;
	const char *method;
	const char *url; /* rq->url, or its rewrite for the SNI name */
	struct curl_slist *hdrs;
	struct curl_slist *connect_to;
	int64_t start;
	long timeout_ms;
	long base, cap;
	int max_attempts;
	/* The last attempt. */
	struct http_buf b;
	CURLcode c;
	long status;
	long tmo;
	char errbuf[CURL_ERROR_SIZE];
};

static void
http_log_attempt(const struct http_call *k, int attempt, int64_t since)
{
	if (!log_debug_enabled())
		return;
	if (k->c == CURLE_OK)
		log_debug(
		    "http %s %s -> %ld (%zu bytes) in %lld ms, attempt %d",
		    k->method, k->rq->url, k->status, k->b.len,
		    (long long)(now_ms() - since), attempt);
	else
		log_debug("http %s %s -> error: %s in %lld ms, attempt %d",
		    k->method, k->rq->url,
		    k->errbuf[0] ? k->errbuf : curl_easy_strerror(k->c),
		    (long long)(now_ms() - since), attempt);
}

/* Whether the last attempt's outcome is final (no retry can change it). */
static bool
http_outcome_final(const struct http_call *k)
{
	if (k->c == CURLE_OK)
		return !http_status_retryable(k->status);
	return k->b.too_large || k->b.header_too_large || k->b.in_headers ||
	    !http_curl_retryable(k->c);
}

/*
 * The pause before the next attempt: full-jitter backoff, on top of
 * Retry-After when given (never sooner than the server asked, and a fleet
 * told "1" at once does not come back at once).  -1 when no attempt would
 * fit the deadline after it.
 */
static long
http_retry_wait(const struct http_call *k, int attempt)
{
	long wait = http_backoff_ms(attempt, k->base, k->cap, random_unit());
	int64_t left;

	if (k->c == CURLE_OK && k->b.retry_after_ms >= 0)
		wait += k->b.retry_after_ms;
	if (k->rq->deadline_ms > 0) {
		left = k->rq->deadline_ms - (now_ms() - k->start);
		if (wait >= left)
			return -1;
	}
	return wait;
}

/*
 * The attempts, until an outcome is final, the attempts or the deadline
 * run out, or stop is set.  Fills rs->attempts; false when our own
 * allocation failed, or libcurl's without a word about a header (an
 * oversized header line is a discovery error, reported by the caller).
 */
static bool
http_attempts(struct http_call *k, struct http_response *rs)
{
	const struct http_request *rq = k->rq;
	int64_t attempt_start, left;
	long wait;
	int attempt;

	for (attempt = 1;; attempt++) {
		k->tmo = k->timeout_ms;
		if (rq->deadline_ms > 0) {
			left = rq->deadline_ms - (now_ms() - k->start);
			if (left <= 0)
				break;
			if (left < k->tmo)
				k->tmo = (long)left;
		}
		http_buf_reset(&k->b);
		attempt_start = now_ms();
		k->c = http_once_do(rq, k->url, k->hdrs, k->connect_to, k->tmo,
		    &k->b, &k->status, k->errbuf);
		rs->attempts = attempt;
		stats_api_request(k->c == CURLE_OK ? k->status : 0);
		if (k->c == CURLE_OK && http_status_retryable(k->status) &&
		    k->b.retry_after_ms >= 0)
			retry_gate_set(k->b.retry_after_ms);
		http_log_attempt(k, attempt, attempt_start);
		if (k->b.oom ||
		    (k->c == CURLE_OUT_OF_MEMORY && !k->b.in_headers))
			return false;
		if (http_outcome_final(k) || attempt >= k->max_attempts)
			break;
		if (rq->stop != NULL && *rq->stop)
			break;
		if ((wait = http_retry_wait(k, attempt)) < 0)
			break;
		if (log_debug_enabled())
			log_debug("http %s %s: retrying in %ld ms", k->method,
			    rq->url, wait);
		sleep_ms(wait, rq->stop);
		if (rq->stop != NULL && *rq->stop)
			break;
	}
	return true;
}

/* The outcome of the attempts, as the response or the error. */
static int
http_conclude(
    struct http_call *k, struct http_response *rs, struct agent_err *err)
{
	const struct http_request *rq = k->rq;
	char why[512];

	rs->elapsed_ms = (double)(now_ms() - k->start);
	if (rs->attempts == 0)
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "%s %s: deadline of "
		    "%ld ms passed before the first attempt",
		    k->method, rq->url, rq->deadline_ms);
	if (k->c != CURLE_OK) {
		http_curl_message(
		    k->c, k->errbuf, &k->b, k->tmo, why, sizeof(why));
		return err_set(err, EXIT_AGENT_DISCOVERY, "%s %s: %s%s",
		    k->method, rq->url, why,
		    rs->attempts > 1 ? " (after retries)" : "");
	}
	rs->status = k->status;
	rs->retry_after_ms = k->b.retry_after_ms;
	if (k->b.data == NULL) {
		if ((k->b.data = a_strdup("")) == NULL)
			return err_oom(err, "http");
	}
	rs->body = k->b.data;
	rs->len = k->b.len;
	k->b.data = NULL;
	return 0;
}

/* The request's settings, with the defaults filled in. */
static void
http_call_init(struct http_call *k, const struct http_request *rq)
{
	memset(k, 0, sizeof(*k));
	k->rq = rq;
	k->b.retry_after_ms = -1;
	k->b.max = rq->max_body ? rq->max_body : HTTP_DEFAULT_MAX_BODY;
	k->method = rq->method ? rq->method : "GET";
	k->url = rq->url;
	k->timeout_ms =
	    rq->timeout_ms > 0 ? rq->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	k->max_attempts = rq->max_attempts > 0 ? rq->max_attempts : 1;
	k->base = rq->backoff_base_ms > 0 ? rq->backoff_base_ms
	                                  : HTTP_DEFAULT_BASE_MS;
	k->cap =
	    rq->backoff_cap_ms > 0 ? rq->backoff_cap_ms : HTTP_DEFAULT_CAP_MS;
	k->c = CURLE_OK;
	k->start = now_ms();
}

int
http_do(const struct http_request *rq, struct http_response *rs,
    struct agent_err *err)
{
	struct http_call k;
	char *sni_url = NULL;
	int rc = 0;

	memset(rs, 0, sizeof(*rs));
	rs->retry_after_ms = -1;
	http_call_init(&k, rq);

	if (rq->url == NULL || *rq->url == '\0')
		return err_set(err, EXIT_AGENT_SOFTWARE, "http: no URL");

	if ((rc = dl_need_curl(err)) != 0 ||
	    (rc = retry_gate(rq, k.method, err)) != 0)
		return rc;
	pthread_once(&http_once, http_global_init);
	if (http_init_rc != CURLE_OK)
		return err_set(err, EXIT_AGENT_SOFTWARE,
		    "http: libcurl "
		    "initialization failed: %s",
		    curl_easy_strerror(http_init_rc));

	if (!http_headers_build(rq, &k.hdrs)) {
		rc = err_oom(err, "http");
		goto out;
	}
	if (rq->tls_server_name != NULL && *rq->tls_server_name != '\0') {
		rc = http_rewrite_for_sni(
		    rq->url, rq->tls_server_name, &sni_url, &k.connect_to, err);
		if (rc)
			goto out;
		k.url = sni_url;
	}
	if (!http_attempts(&k, rs))
		rc = err_oom(err, "http");
	else
		rc = http_conclude(&k, rs, err);
out:
	a_free(k.b.data);
	a_free(sni_url);
	curl_slist_free_all(k.connect_to);
	http_headers_free(k.hdrs);
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
