/*
 * fuzz_redis_url.c - libFuzzer target: Redis URLs (redis_url_parse and
 * redis_url_redact in redis_url.c).  Properties: no crash; a parse error
 * has a message; the redacted form is the same URL with "***" as its
 * password.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int
streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* red must parse to *u with the password "***". */
static void
same_but_password(const struct redis_url *u, const char *red)
{
	struct redis_url	 v;
	struct agent_err	 err;

	memset(&v, 0, sizeof(v));
	err_clear(&err);
	if (redis_url_parse(red, &v, &err) != 0)
		abort();
	if (!streq(v.pass, "***") || !streq(v.user, u->user) ||
	    !streq(v.host, u->host) || !streq(v.path, u->path) ||
	    v.kind != u->kind || v.tls != u->tls ||
	    v.insecure != u->insecure || v.port != u->port ||
	    v.db != u->db || v.resp3 != u->resp3)
		abort();
	redis_url_release(&v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct redis_url	 u;
	struct agent_err	 err;
	char			*url, *red;
	int			 rc;

	if ((url = a_strndup((const char *)data, size)) == NULL)
		return 0;
	memset(&u, 0, sizeof(u));
	err_clear(&err);
	rc = redis_url_parse(url, &u, &err);
	red = redis_url_redact(url);
	if (rc != 0) {
		if (err.msg[0] == '\0')
			abort();
	} else {
		if (u.kind == REDIS_TCP && (u.host == NULL ||
		    u.port <= 0 || u.port > 65535))
			abort();
		if (u.kind == REDIS_UNIX && u.path == NULL)
			abort();
		if (u.db < 0)
			abort();
		/* Redaction replaces the password and nothing else: the
		 * redacted URL parses to the same URL with "***" as its
		 * password.  (Counting the password's bytes in the output
		 * cannot tell them from the same bytes in the user, host or
		 * path: "rediss://usp@sse:p%40s@[::1]" keeps "p@s" in its
		 * user, legitimately.) */
		if (u.pass != NULL && u.pass[0] != '\0' && red != NULL &&
		    strlen(red) <= 4096)
			same_but_password(&u, red);
	}
	a_free(red);
	redis_url_release(&u);
	a_free(url);
	return 0;
}
