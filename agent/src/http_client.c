/* http_client.c - stub until the platform issues land. */
#include <string.h>
#include "http_client.h"

int
http_do(const struct http_request *rq, struct http_response *rs,
    struct agent_err *err)
{
	(void)rq;
	memset(rs, 0, sizeof(*rs));
	return err_set(err, EXIT_AGENT_DISCOVERY, "http not implemented");
}

void
http_response_release(struct http_response *rs)
{
	a_free(rs->body);
	rs->body = NULL;
}
