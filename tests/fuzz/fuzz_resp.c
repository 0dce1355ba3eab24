/*
 * fuzz_resp.c - libFuzzer target: RESP replies as the bus reads them,
 * through hiredis's reader (the reader bus.c feeds from its own
 * transport).  The input is fed in pieces of varying size, as a socket
 * would deliver it; every reply is walked like bus.c inspects them, and
 * error/status texts go through bus.c's server_text().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include "agent.h"

/* bus.c (STATIC, visible with -DUNITTEST): the printable copy of a
 * server's error reply that goes into the one-line error. */
void	server_text(const char *, size_t, char *, size_t);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static size_t
walk(const redisReply *r, int depth)
{
	size_t	i, n = 1;
	char	txt[256];

	if (depth > 64)
		abort();	/* hiredis caps nesting at 7 */
	switch (r->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
		if (r->str == NULL || r->str[r->len] != '\0')
			abort();
		server_text(r->str, r->len, txt, sizeof(txt));
		if (strlen(txt) >= sizeof(txt) || strchr(txt, '\n'))
			abort();
		break;
	case REDIS_REPLY_ARRAY:
		for (i = 0; i < r->elements; i++)
			if (r->element[i] != NULL)
				n += walk(r->element[i], depth + 1);
		break;
	default:
		break;
	}
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader	*rd;
	void		*reply;
	size_t		 off = 0, step;
	int		 i;

	if (size < 1)
		return 0;
	if ((rd = redisReaderCreate()) == NULL)
		return 0;
	/* Bounded like bus.c's connections. */
	rd->maxbuf = 64 * 1024;
	step = (data[0] % 16) + 1;
	data++;
	size--;
	while (off < size) {
		if (step > size - off)
			step = size - off;
		if (redisReaderFeed(rd, (const char *)data + off, step) !=
		    REDIS_OK)
			break;
		off += step;
		for (i = 0; i < 1024; i++) {
			reply = NULL;
			if (redisReaderGetReply(rd, &reply) != REDIS_OK)
				goto out;	/* protocol error: err set */
			if (reply == NULL)
				break;
			walk(reply, 0);
			freeReplyObject(reply);
		}
	}
out:
	if (rd->err && rd->errstr[0] == '\0')
		abort();
	redisReaderFree(rd);
	return 0;
}
