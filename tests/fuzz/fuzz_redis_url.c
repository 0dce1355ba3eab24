/*
 * fuzz_redis_url.c - libFuzzer target: Redis URLs (redis_url_parse and
 * redis_url_redact in redis_url.c).  Properties: no crash; a parse error
 * has a message; the redacted form never holds the password.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Occurrences of needle in hay, overlapping ones included. */
static size_t
count(const char *hay, const char *needle)
{
	size_t	n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay++;
	}
	return n;
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
		/* A password of 3+ bytes must not survive redaction: the
		 * redacted URL holds it fewer times than the raw URL (the
		 * same bytes may also be part of the host or the user). */
		if (u.pass != NULL && strlen(u.pass) >= 3 && red != NULL &&
		    count(red, u.pass) > 0 &&
		    count(red, u.pass) >= count(url, u.pass))
			abort();
	}
	a_free(red);
	redis_url_release(&u);
	a_free(url);
	return 0;
}
