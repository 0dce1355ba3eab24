/*
 * fuzz_fly.c - libFuzzer target: the Fly Machines API list
 * (fly_count() in fly.c, STATIC, visible with -DUNITTEST), and the token
 * header rule.  The first input byte picks the options (group, whether
 * this machine is a serving one); the rest is the response body.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

int	fly_auth_header(const char *, char *, size_t);
int	fly_count(const char *, size_t, const char *, const char *,
	    const char *, bool, struct topology *, struct agent_err *);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char *const groups[] = { "app", "web", "worker", "" };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct topology		 t;
	struct agent_err	 err;
	char			 hdr[512], *tok;
	uint8_t			 sel = 0;
	int			 rc;

	if (size > 0) {
		sel = data[0];
		data++;
		size--;
	}
	memset(&t, 0, sizeof(t));
	err_clear(&err);
	rc = fly_count((const char *)data, size, "my-app", groups[sel & 3],
	    (sel & 4) ? "e286065f969386" : NULL, (sel & 8) != 0, &t, &err);
	if (rc == 0) {
		if (t.base < 0 || memchr(t.base_src, '\0',
		    sizeof(t.base_src)) == NULL ||
		    memchr(t.excluded, '\0', sizeof(t.excluded)) == NULL)
			abort();
	} else if (err.msg[0] == '\0')
		abort();

	/* The token header rule on the same bytes as a token. */
	if ((tok = a_strndup((const char *)data, size < 400 ? size : 400))) {
		if (fly_auth_header(tok, hdr, sizeof(hdr)) == 0 &&
		    memchr(hdr, '\0', sizeof(hdr)) == NULL)
			abort();
		a_free(tok);
	}
	return 0;
}
