/*
 * fuzz_resp.c - libFuzzer target: RESP replies as the bus reads them,
 * through hiredis's reader (the reader bus.c feeds from its own
 * transport).  The input is fed in pieces of varying size, as a socket
 * would deliver it; every reply is walked like bus.c inspects them, and
 * error/status texts go through bus.c's server_text().  The same bytes go
 * through bus.c's resp3_scan() (the ?protocol=resp3 HELLO 3 check).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include "agent.h"
#include "bus.h" /* server_text, resp3_scan: STATIC, visible with -DUNITTEST */

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

/*
 * bus.c's reader: hiredis's default object functions wrapped with caps
 * (bus.c REPLY_CAP, ARRAY_CAP; its capfn is file-local, so mirrored here).
 * Without them hiredis 0.14 callocs whatever array length the server
 * announces ("*1222222222" asks for 9.7 GB).
 */
#define FUZZ_REPLY_CAP	(4u * 1024 * 1024)
#define FUZZ_ARRAY_CAP	4096

static redisReplyObjectFunctions	 capfn;
static void *(*orig_string)(const redisReadTask *, char *, size_t);
static void *(*orig_array)(const redisReadTask *, int);

static void *
cap_string(const redisReadTask *task, char *s, size_t n)
{
	return n > FUZZ_REPLY_CAP ? NULL : orig_string(task, s, n);
}

static void *
cap_array(const redisReadTask *task, int n)
{
	return n > FUZZ_ARRAY_CAP ? NULL : orig_array(task, n);
}

static redisReader *
reader_new(void)
{
	redisReader	*r;

	if ((r = redisReaderCreate()) == NULL)
		return NULL;
	if (orig_string == NULL) {
		capfn = *r->fn;
		orig_string = capfn.createString;
		orig_array = capfn.createArray;
		capfn.createString = cap_string;
		capfn.createArray = cap_array;
	}
	r->fn = &capfn;
	return r;
}

/*
 * resp3_scan's properties: a result is -1, 0 or a length within the
 * input; a complete value is found again in exactly its own bytes; and a
 * proper prefix of it always asks for more (never "not RESP3", which
 * would fail the proof on a short read).
 */
static void
resp3_check(const char *p, size_t n)
{
	long	l = resp3_scan(p, n, 0);

	if (l < -1 || l > (long)n)
		abort();
	if (l <= 0)
		return;
	if (resp3_scan(p, (size_t)l, 0) != l ||
	    resp3_scan(p, (size_t)l / 2, 0) != 0 ||
	    resp3_scan(p, (size_t)l - 1, 0) != 0)
		abort();
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
	if ((rd = reader_new()) == NULL)
		return 0;
	/* Bounded like bus.c's connections. */
	rd->maxbuf = 64 * 1024;
	step = (data[0] % 16) + 1;
	data++;
	size--;
	resp3_check((const char *)data, size);
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
