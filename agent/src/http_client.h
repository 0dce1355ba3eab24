/*
 * http_client.h - the libcurl wrapper for the Kubernetes and Fly APIs:
 * timeouts, CA per connection, response size cap, retry with capped
 * exponential backoff + full jitter on 429/5xx/transport errors,
 * Retry-After.  curl_global_init happens lazily on the first request.
 *
 * Thread safety: http_do may be called from several threads once the
 * first call has returned (curl_global_init is not thread-safe; the
 * first call is made from the main thread at start).
 */
#ifndef PYLON_AGENT_HTTP_CLIENT_H
#define PYLON_AGENT_HTTP_CLIENT_H

#include "agent.h"

#define HTTP_DEFAULT_MAX_BODY (4u * 1024 * 1024)

/*
 * Every pointer is borrowed for the duration of http_do.  Zeroed fields
 * take the defaults noted.
 */
struct http_request {
	const char *method; /* "GET" (default), "POST", "PATCH" */
	const char *url;
	const char *authorization; /* full header value or NULL; never
					 * logged */
	const char *content_type; /* for a body */
	const char *accept; /* default "application/json" */
	const char *body;
	size_t body_len; /* 0: strlen(body) */
	const char *ca_file; /* PEM file; NULL: system store */
	const char *ca_pem; /* in-memory PEM instead of a file */
	size_t ca_pem_len; /* 0: strlen(ca_pem) */
	const char *client_cert_pem; /* in-memory PEM or NULL */
	const char *client_key_pem;
	const char *tls_server_name; /* SNI + name checked, or NULL;
						 * the Host header becomes it
						 * too */
	bool insecure; /* skip verification */
	const char *noproxy_host; /* CURLOPT_NOPROXY ("*": no
						 * proxy at all) */
	long timeout_ms; /* one attempt, connect included;
						 * default 10 s */
	size_t max_body; /* default 4 MiB */
	int max_attempts; /* default 1: no retry */
	long deadline_ms; /* all attempts incl. waits,
						 * 0: none */
	long backoff_base_ms; /* default 200 */
	long backoff_cap_ms; /* default 5000 */
	volatile int *stop; /* non-NULL and set: stop
						 * retrying (shutdown) */
};

struct http_response {
	long status; /* 0 when no HTTP response */
	char *body; /* NUL-terminated, owned; never NULL after
				 * a 0 return */
	size_t len;
	long retry_after_ms; /* -1 when absent */
	int attempts;
	double elapsed_ms; /* all attempts */
};

/*
 * Returns 0 when an HTTP response arrived (any status; the caller maps
 * statuses to messages; 429/5xx were retried within max_attempts and
 * deadline_ms first), else EXIT_AGENT_DISCOVERY with the transport cause
 * in err (DNS, refused, timeout, TLS, body too large), naming the method
 * and URL.  rs is always initialized; release it either way.
 */
int http_do(
    const struct http_request *, struct http_response *, struct agent_err *);
void http_response_release(struct http_response *);

/* Whether a status is worth a retry (429, 5xx). */
bool http_status_retryable(long status);
/*
 * Extracts the "error" (else "message") string of a JSON error body into
 * out (size n), or a sanitized first line of a non-JSON body; "" when
 * empty.  Used for error messages.
 */
void http_error_text(const struct http_response *, char *out, size_t n);

#ifdef UNITTEST
#include <time.h>
long http_parse_retry_after(const char *v, time_t now);
long http_backoff_ms(int attempt, long base, long cap, double u);
#endif

#endif
