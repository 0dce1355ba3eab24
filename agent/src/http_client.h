/*
 * http_client.h - the libcurl wrapper for the Kubernetes and Fly APIs:
 * timeouts, CA per connection, response size cap, retry with capped
 * exponential backoff + jitter on 429/5xx/transport errors, Retry-After.
 * curl_global_init happens lazily on the first request.
 */
#ifndef PYLON_AGENT_HTTP_CLIENT_H
#define PYLON_AGENT_HTTP_CLIENT_H

#include "agent.h"

struct http_request {
	const char	*method;	/* "GET" (default), "POST", "PATCH" */
	const char	*url;
	const char	*authorization;	/* full header value or NULL; never
					 * logged */
	const char	*content_type;	/* for a body */
	const char	*body;
	size_t		 body_len;
	const char	*ca_file;	/* PEM file; NULL: system store */
	const char	*ca_pem;	/* in-memory PEM instead of a file */
	size_t		 ca_pem_len;
	const char	*client_cert_pem;	/* in-memory PEM or NULL */
	const char	*client_key_pem;
	const char	*tls_server_name;	/* SNI + name checked, or NULL */
	bool		 insecure;		/* skip verification */
	const char	*noproxy_host;		/* CURLOPT_NOPROXY */
	long		 timeout_ms;		/* one attempt, connect included */
	size_t		 max_body;		/* default 4 MiB */
	int		 max_attempts;		/* default 1: no retry */
	long		 deadline_ms;		/* all attempts, 0: none */
};

struct http_response {
	long	status;		/* 0 when no HTTP response */
	char	*body;		/* NUL-terminated, owned */
	size_t	 len;
	long	 retry_after_ms;	/* -1 when absent */
	int	 attempts;
};

/* Returns 0 when an HTTP response arrived (any status; the caller maps
 * statuses to messages), else EXIT_AGENT_DISCOVERY with the transport
 * cause (DNS, refused, timeout, TLS, body too large). */
int	http_do(const struct http_request *, struct http_response *,
	    struct agent_err *);
void	http_response_release(struct http_response *);

#endif
