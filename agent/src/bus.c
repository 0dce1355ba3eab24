/*
 * bus.c - the bus proof (SPEC 5) and the held session serve checks.
 *
 * RESP requests are built with hiredis's redisFormatCommandArgv and
 * replies parsed with its redisReader, over transport.c (hiredis's own
 * connection code is not used: Debian's 0.14 has no TLS).  Every reply is
 * capped (REPLY_CAP bytes, ARRAY_CAP elements).
 *
 * One attempt:
 *   connection 1: [AUTH] [SELECT db] SUBSCRIBE <channel>
 *   connection 2: [AUTH] [SELECT db] PUBLISH <channel> <envelope>
 *   connection 1: wait for ["message", <channel>, <envelope>]
 * after which serve keeps connection 2 alone for PING and PUBSUB NUMSUB
 * (no steady-state subscription: SPEC 5).
 * docs/bus.md lists every failure message and the one-envelope rule.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "bus.h"

#define REPLY_CAP (4u * 1024 * 1024) /* bytes of one reply */
#define ARRAY_CAP 4096 /* elements of one array */
#define ATTEMPT_MS 10000L /* one attempt's deadline, at most */
#define MIN_ATTEMPT_MS 200L /* no new attempt with less time left */
#define BACKOFF_MS 200L
#define BACKOFF_CAP_MS 5000L
#define ZERO_GRACE_MS 1000L /* wait after "0 receivers" */

/* ---- capped hiredis reader -------------------------------------------- */

struct rconn {
	struct transport *t;
	redisReader *rd;
	size_t fed; /* bytes of the reply in progress */
	bool too_big;
	bool timed_out; /* the last recv */
	char where[300];
};

#define RC_AGAIN (-1) /* rconn_recv polled: nothing there yet */

static redisReplyObjectFunctions capfn;
static void *(*orig_string)(const redisReadTask *, char *, size_t);
static void *(*orig_array)(const redisReadTask *, int);
static pthread_once_t capfn_once = PTHREAD_ONCE_INIT;

static void *
cap_string(const redisReadTask *task, char *s, size_t n)
{
	struct rconn *c = task->privdata;

	if (n > REPLY_CAP) {
		if (c != NULL)
			c->too_big = true;
		return NULL;
	}
	return orig_string(task, s, n);
}

static void *
cap_array(const redisReadTask *task, int n)
{
	struct rconn *c = task->privdata;

	if (n > ARRAY_CAP) {
		if (c != NULL)
			c->too_big = true;
		return NULL;
	}
	return orig_array(task, n);
}

static void
capfn_init(void)
{
	redisReader *r;

	/* Wrap hiredis's default object functions (static in hiredis.c;
	 * reachable through a default reader's fn). */
	if ((r = redisReaderCreate()) == NULL)
		return;
	capfn = *r->fn;
	orig_string = capfn.createString;
	orig_array = capfn.createArray;
	capfn.createString = cap_string;
	capfn.createArray = cap_array;
	redisReaderFree(r);
}

static void
rconn_close(struct rconn *c)
{
	transport_close(c->t);
	c->t = NULL;
	if (c->rd != NULL)
		redisReaderFree(c->rd);
	c->rd = NULL;
	c->too_big = false;
}

/* Printable copy of a server error (never holds our password: Redis
 * does not echo AUTH arguments, and log.c redacts on top). */
STATIC void
server_text(const char *s, size_t len, char *out, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < len && o + 1 < n && i < 200; i++)
		out[o++] = isprint((unsigned char)s[i]) ? s[i] : '?';
	out[o] = '\0';
}

static int
rconn_open(struct rconn *c, const struct redis_url *u, const char *ca,
    int64_t deadline, struct agent_err *err)
{
	enum tr_status st;

	pthread_once(&capfn_once, capfn_init);
	memset(c, 0, sizeof(*c));
	redis_url_where(u, c->where, sizeof(c->where));
	if (capfn.createString == NULL ||
	    (c->rd = redisReaderCreateWithFunctions(&capfn)) == NULL)
		return err_oom(err, "redisReaderCreate");
	c->rd->privdata = c;
	st = transport_open(&c->t, u, ca, deadline, err);
	if (st != TR_OK) {
		rconn_close(c);
		return err->code ? err->code : EXIT_AGENT_UNPROVEN;
	}
	return 0;
}

static int
rconn_send(struct rconn *c, int argc, const char **argv, const size_t *lens,
    int64_t deadline, struct agent_err *err)
{
	char *cmd = NULL;
	int len;

	len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0 || cmd == NULL)
		return err_oom(err, "redisFormatCommandArgv");
	stats_redis_command();
	if (transport_write(c->t, cmd, (size_t)len, deadline, err) != TR_OK) {
		redisFreeCommand(cmd);
		return EXIT_AGENT_UNPROVEN;
	}
	redisFreeCommand(cmd);
	return 0;
}

/*
 * Reads one reply.  what names the command for a timeout message.
 * Returns 0 (*reply set, caller frees), or EXIT_AGENT_UNPROVEN.
 */
static int
rconn_recv(struct rconn *c, redisReply **reply, int64_t deadline,
    const char *what, struct agent_err *err)
{
	char buf[16384], tmp[AGENT_ERR_LEN];
	void *r = NULL;
	size_t got;
	enum tr_status st;
	long waited;
	int64_t start = now_ms();

	*reply = NULL;
	c->timed_out = false;
	for (;;) {
		if (redisReaderGetReply(c->rd, &r) != REDIS_OK) {
			if (c->too_big)
				return err_set(err, EXIT_AGENT_UNPROVEN,
				    "redis %s: a reply larger than the agent "
				    "accepts (%u bytes, %d elements) while "
				    "waiting for %s",
				    c->where, REPLY_CAP, ARRAY_CAP, what);
			return err_set(err, EXIT_AGENT_UNPROVEN,
			    "redis %s: "
			    "protocol error while waiting for %s: %s (is "
			    "this a Redis server? for TLS use rediss://)",
			    c->where, what, c->rd->errstr);
		}
		if (r != NULL) {
			/* what is left belongs to the next reply */
			c->fed = c->rd->len - c->rd->pos;
			*reply = r;
			return 0;
		}
		/* Every byte fed since the last complete reply belongs to
		 * this one (hiredis consumes parsed elements of an
		 * unfinished array, so its buffer alone says too little). */
		if (c->fed > REPLY_CAP)
			return err_set(err, EXIT_AGENT_UNPROVEN,
			    "redis %s: a "
			    "reply larger than %u bytes while waiting for %s",
			    c->where, REPLY_CAP, what);
		/* The deadline is checked before every read, not only when
		 * the socket is idle: a server that keeps sending (a reply
		 * trickled byte by byte, a flood of pushes) always has data
		 * ready, and recv() would never reach poll()'s timeout. */
		if (deadline > start && now_ms() >= deadline)
			st = TR_TIMEOUT;
		else
			st = transport_read(
			    c->t, buf, sizeof(buf), &got, deadline, err);
		if (st == TR_TIMEOUT) {
			waited = (long)(now_ms() - start);
			c->timed_out = true;
			if (deadline <= start) /* a poll, not a wait */
				return RC_AGAIN;
			return err_set(err, EXIT_AGENT_UNPROVEN,
			    "redis %s: "
			    "read timeout: no reply to %s within %ld ms (the "
			    "server accepted the connection but does not "
			    "answer: is it Redis, is it overloaded, or does "
			    "it expect TLS (rediss://)?)",
			    c->where, what, waited);
		}
		if (st != TR_OK) {
			snprintf(tmp, sizeof(tmp), "%s", err->msg);
			return err_set(err,
			    err->code ? err->code : EXIT_AGENT_UNPROVEN,
			    "%s (waiting for %s)", tmp, what);
		}
		c->fed += got;
		if (redisReaderFeed(c->rd, buf, got) != REDIS_OK)
			return err_oom(err, "redisReaderFeed");
	}
}

/* ---- command helpers ---------------------------------------------------- */

/*
 * Set by reply_error() for answers that no retry can change (WRONGPASS,
 * NOAUTH, NOPERM): configuration, not weather (SPEC 5).  session_run()
 * fails at once on it.  One proof runs per thread at a time.
 */
static __thread bool reply_fatal;

static const char *
user_name(const struct redis_url *u)
{
	return u->user ? u->user : "default";
}

static bool
err_is(const redisReply *r, const char *prefix)
{
	size_t n = strlen(prefix);

	return r->type == REDIS_REPLY_ERROR && r->len >= n &&
	    strncmp(r->str, prefix, n) == 0;
}

/* Cuts a reply to AUTH before anything that may echo an argument. */
STATIC void
auth_text_cut(char *txt, size_t n)
{
	size_t cut;
	char *w;

	cut = strcspn(txt, "'`\"");
	if ((w = strstr(txt, "with args")) != NULL && (size_t)(w - txt) < cut)
		cut = (size_t)(w - txt);
	if (txt[cut] == '\0')
		return;
	while (cut > 0 && (txt[cut - 1] == ' ' || txt[cut - 1] == ','))
		cut--;
	snprintf(txt + cut, n - cut,
	    " [rest withheld: it may echo the "
	    "password]");
}

/*
 * Turns an error reply to cmd into the one-line cause.  verb: what the
 * command does to the channel, for NOPERM ("subscribe to").
 */
STATIC int
reply_error(const struct bus_ctx *x, const char *where, const char *cmd,
    const char *verb, const redisReply *r, struct agent_err *err)
{
	char txt[256];

	server_text(r->str, r->len, txt, sizeof(txt));
	/* A server that does not know AUTH (renamed, a proxy) echoes its
	 * arguments, the password among them, cut at 128 bytes and with
	 * '?' for unprintables: string redaction misses those and short
	 * passwords.  Keep the text only up to the first quote. */
	if (strcmp(cmd, "AUTH") == 0)
		auth_text_cut(txt, sizeof(txt));
	if (err_is(r, "NOAUTH") || err_is(r, "WRONGPASS") ||
	    err_is(r, "NOPERM") ||
	    (strcmp(cmd, "AUTH") == 0 &&
	        (err_is(r, "ERR invalid password") ||
	            err_is(r, "ERR invalid username"))))
		reply_fatal = true;
	if (err_is(r, "NOAUTH"))
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: NOAUTH: "
		    "the server requires a password and the URL has none "
		    "(server: %s); put it in the URL: "
		    "redis://:PASSWORD@host:port, or USER:PASSWORD@ for an "
		    "ACL user",
		    where, txt);
	if (err_is(r, "WRONGPASS") ||
	    (strcmp(cmd, "AUTH") == 0 &&
	        (err_is(r, "ERR invalid password") ||
	            err_is(r, "ERR invalid username"))))
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: "
		    "WRONGPASS: AUTH as user '%s' was rejected (server: %s); "
		    "check the user name and password in the Redis URL "
		    "(percent-encode special characters) and that the ACL "
		    "user is enabled",
		    where, user_name(x->u), txt);
	if (strcmp(cmd, "AUTH") == 0 &&
	    strstr(txt,
	        "without any password "
	        "configured") != NULL)
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: AUTH "
		    "failed: the server has no password configured but the "
		    "URL carries one (server: %s); drop the password from "
		    "the URL or set requirepass on the server",
		    where, txt);
	if (err_is(r, "NOPERM")) {
		if (verb != NULL && strstr(txt, "channel") != NULL)
			return err_set(err, EXIT_AGENT_UNPROVEN,
			    "redis %s: "
			    "NOPERM: ACL user '%s' may not %s channel \"%s\" "
			    "(server: %s); allow it with: ACL SETUSER %s "
			    "&%s",
			    where, user_name(x->u), verb, x->channel, txt,
			    user_name(x->u), x->channel);
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: NOPERM: "
		    "ACL user '%s' may not run %s%s%s (server: %s); the "
		    "agent needs: ACL SETUSER %s +subscribe +publish "
		    "+ping +pubsub|numsub +select &%s",
		    where, user_name(x->u), cmd, verb ? " on channel " : "",
		    verb ? x->channel : "", txt, user_name(x->u), x->channel);
	}
	if (err_is(r, "DENIED"))
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: DENIED: "
		    "Redis runs in protected mode and refuses clients from "
		    "other hosts (server: %s); set a password (requirepass, "
		    "and put it in the URL) or configure bind and "
		    "protected-mode",
		    where, txt);
	if (err_is(r, "LOADING"))
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: %s failed: "
		    "Redis is still loading its dataset (server: %s); the "
		    "agent retries",
		    where, cmd, txt);
	if (strcmp(cmd, "SELECT") == 0)
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: SELECT %d "
		    "failed: wrong db: %s (the server has fewer databases, "
		    "or is a cluster that only has db 0; fix /%d in the "
		    "Redis URL)",
		    where, x->u->db, txt, x->u->db);
	return err_set(err, EXIT_AGENT_UNPROVEN, "redis %s: %s failed: %s",
	    where, cmd, txt);
}

/* AUTH and SELECT on a fresh connection. */
static int
conn_setup(const struct bus_ctx *x, struct rconn *c, int64_t deadline,
    struct agent_err *err)
{
	const char *argv[3];
	size_t lens[3];
	char dbs[16];
	redisReply *r = NULL;
	int rc, argc = 0;

	if ((rc = rconn_open(c, x->u, x->ca, deadline, err)) != 0)
		return rc;
	if (x->u->pass != NULL) {
		argv[argc] = "AUTH";
		lens[argc++] = 4;
		if (x->u->user != NULL) {
			argv[argc] = x->u->user;
			lens[argc] = strlen(x->u->user);
			argc++;
		}
		argv[argc] = x->u->pass;
		lens[argc] = strlen(x->u->pass);
		argc++;
		if ((rc = rconn_send(c, argc, argv, lens, deadline, err)) ||
		    (rc = rconn_recv(c, &r, deadline, "AUTH", err)))
			goto fail;
		if (r->type != REDIS_REPLY_STATUS) {
			rc = reply_error(x, c->where, "AUTH", NULL, r, err);
			goto fail;
		}
		freeReplyObject(r);
		r = NULL;
	}
	if (x->u->db != 0) {
		snprintf(dbs, sizeof(dbs), "%d", x->u->db);
		argv[0] = "SELECT";
		lens[0] = 6;
		argv[1] = dbs;
		lens[1] = strlen(dbs);
		if ((rc = rconn_send(c, 2, argv, lens, deadline, err)) ||
		    (rc = rconn_recv(c, &r, deadline, "SELECT", err)))
			goto fail;
		if (r->type != REDIS_REPLY_STATUS) {
			rc = reply_error(x, c->where, "SELECT", NULL, r, err);
			goto fail;
		}
		freeReplyObject(r);
		r = NULL;
	}
	return 0;
fail:
	if (r != NULL)
		freeReplyObject(r);
	rconn_close(c);
	return rc ? rc : EXIT_AGENT_UNPROVEN;
}

/* A pub/sub push: ["message", channel, payload] (RESP2). */
static bool
is_push(const redisReply *r, const char *kind)
{
	return r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_STRING &&
	    strcasecmp(r->element[0]->str, kind) == 0;
}

static int
do_subscribe(const struct bus_ctx *x, struct rconn *c, int64_t deadline,
    struct agent_err *err)
{
	const char *argv[2] = {"SUBSCRIBE", x->channel};
	size_t lens[2] = {9, strlen(x->channel)};
	redisReply *r = NULL;
	int rc;

	if ((rc = rconn_send(c, 2, argv, lens, deadline, err)) ||
	    (rc = rconn_recv(c, &r, deadline, "SUBSCRIBE", err)))
		return rc;
	if (r->type == REDIS_REPLY_ERROR)
		rc = reply_error(
		    x, c->where, "SUBSCRIBE", "subscribe to", r, err);
	else if (!is_push(r, "subscribe") || r->elements != 3)
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: SUBSCRIBE "
		    "%s: unexpected reply (is this a Redis server that "
		    "supports pub/sub? proxies like Twemproxy do not)",
		    c->where, x->channel);
	freeReplyObject(r);
	return rc;
}

/* PING; on a subscribed connection the reply is ["pong", ""] and pushes
 * that arrived before it are skipped. */
static int
do_ping(
    struct rconn *c, bool subscribed, int64_t deadline, struct agent_err *err)
{
	const char *argv[1] = {"PING"};
	size_t lens[1] = {4};
	redisReply *r = NULL;
	int rc, skipped = 0;

	if ((rc = rconn_send(c, 1, argv, lens, deadline, err)) != 0)
		return rc;
	for (;;) {
		if ((rc = rconn_recv(c, &r, deadline,
		         subscribed ? "PING on the subscription" : "PING",
		         err)) != 0)
			return rc;
		if (subscribed && is_push(r, "message")) {
			/* pushes before the pong: skipped, to the deadline */
			freeReplyObject(r);
			if (++skipped > 1000000 || now_ms() >= deadline)
				return err_set(err, EXIT_AGENT_UNPROVEN,
				    "redis %s: PING on the subscription: no "
				    "answer before the deadline (%d other "
				    "messages arrived first)",
				    c->where, skipped);
			continue;
		}
		break;
	}
	if (subscribed ? is_push(r, "pong")
	               : (r->type == REDIS_REPLY_STATUS &&
	                     strcasecmp(r->str, "PONG") == 0))
		rc = 0;
	else if (r->type == REDIS_REPLY_ERROR) {
		char txt[256];

		server_text(r->str, r->len, txt, sizeof(txt));
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: PING%s "
		    "failed: %s",
		    c->where, subscribed ? " on the subscription" : "", txt);
	} else
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: PING%s: "
		    "unexpected reply (the subscription is not alive)",
		    c->where, subscribed ? " on the subscription" : "");
	freeReplyObject(r);
	return rc;
}

/* ---- RESP3: HELLO 3 for ?protocol=resp3 --------------------------------- */

#define HELLO_CAP 65536 /* bytes of HELLO 3's answer (~200 in practice) */
#define RESP3_DEPTH 8

/* The length of "\r\n"-terminated line at p, CRLF included; 0: more
 * bytes needed; -1: no CRLF in a line longer than the cap. */
static long
resp3_line(const char *p, size_t n)
{
	const char *e = memchr(p, '\n', n);

	if (e == NULL)
		return n >= HELLO_CAP ? -1 : 0;
	if (e == p || e[-1] != '\r' || e - p >= HELLO_CAP)
		return -1;
	return (long)(e - p) + 1;
}

/* The length field between p and end ([-]digits, nothing else); the
 * input is not NUL-terminated, so no strtoll. */
static bool
resp3_len(const char *p, const char *end, long long *out)
{
	long long v = 0;
	bool neg = p < end && *p == '-';

	if (neg)
		p++;
	if (p == end || end - p > 18)
		return false;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	*out = neg ? -v : v;
	return true;
}

/*
 * The length of one complete RESP3 value at p (n bytes), 0 when more
 * bytes are needed, -1 when it is not RESP3 (or over the caps).  Only a
 * scanner: hiredis 0.14 cannot parse RESP3, and HELLO 3's answer is only
 * checked for its type, never used.
 */
STATIC long
resp3_scan(const char *p, size_t n, int depth)
{
	long l, sub, used;
	long long cnt;

	if (n == 0)
		return 0;
	if (depth > RESP3_DEPTH)
		return -1;
	if ((l = resp3_line(p, n)) <= 0)
		return l;
	switch (p[0]) {
	case '+':
	case '-':
	case ':':
	case '_':
	case '#':
	case ',':
	case '(':
		return l;
	case '$':
	case '!':
	case '=':
		if (!resp3_len(p + 1, p + l - 2, &cnt))
			return -1;
		if (cnt == -1 && p[0] == '$')
			return l;
		if (cnt < 0 || cnt > (long long)REPLY_CAP)
			return -1;
		if ((size_t)l + (size_t)cnt + 2 > n)
			return 0;
		if (p[l + cnt] != '\r' || p[l + cnt + 1] != '\n')
			return -1;
		return l + (long)cnt + 2;
	case '*':
	case '~':
	case '>':
	case '%':
	case '|':
		if (!resp3_len(p + 1, p + l - 2, &cnt))
			return -1;
		if (cnt == -1 && p[0] == '*')
			return l;
		if (cnt < 0 || cnt > ARRAY_CAP)
			return -1;
		if (p[0] == '%' || p[0] == '|')
			cnt *= 2;
		for (used = l; cnt > 0; cnt--) {
			if ((sub = resp3_scan(
			         p + used, n - (size_t)used, depth + 1)) <= 0)
				return sub;
			used += sub;
		}
		if (p[0] == '|') {
			/* an attribute comes before the value it describes */
			if ((sub = resp3_scan(
			         p + used, n - (size_t)used, depth + 1)) <= 0)
				return sub;
			used += sub;
		}
		return used;
	}
	return -1;
}

/*
 * Reads the whole answer to HELLO 3 into buf (HELLO_CAP bytes), starting
 * with the bytes the reader already holds.  Sets *len to the bytes read
 * and *used to the answer's length, -1 when it is not RESP3.
 */
static int
hello3_read(struct rconn *c, char *buf, size_t *len, long *used,
    int64_t deadline, struct agent_err *err)
{
	char tmp[AGENT_ERR_LEN];
	size_t got, left;
	enum tr_status st;

	*len = 0;
	left = c->rd->len - c->rd->pos;
	if (left > 0 && left <= HELLO_CAP) {
		memcpy(buf, c->rd->buf + c->rd->pos, left);
		*len = left;
		c->rd->pos = c->rd->len;
	}
	while ((*used = resp3_scan(buf, *len, 0)) == 0) {
		if (*len == HELLO_CAP)
			*used = -1;
		if (*used < 0)
			break;
		if (now_ms() >= deadline)
			st = TR_TIMEOUT;
		else
			st = transport_read(c->t, buf + *len, HELLO_CAP - *len,
			    &got, deadline, err);
		if (st == TR_TIMEOUT)
			return err_set(err, EXIT_AGENT_UNPROVEN,
			    "redis %s: read "
			    "timeout: no answer to HELLO 3 (?protocol=resp3)",
			    c->where);
		if (st != TR_OK) {
			snprintf(tmp, sizeof(tmp), "%s", err->msg);
			return err_set(err,
			    err->code ? err->code : EXIT_AGENT_UNPROVEN,
			    "%s (waiting for HELLO 3)", tmp);
		}
		*len += got;
	}
	return 0;
}

/* HELLO 3 answered an error (simple '-' or blob '!'): the error to give. */
static int
hello3_refused(const struct bus_ctx *x, struct rconn *c, const char *buf,
    long used, struct agent_err *err)
{
	const char *t = buf + 1;
	size_t tl = (size_t)used - 3;
	redisReply fake;
	char txt[256];

	if (buf[0] == '!') { /* !<len>\r\n<text>\r\n */
		t = (const char *)memchr(buf, '\n', (size_t)used) + 1;
		tl = (size_t)(buf + used - 2 - t);
	}
	memset(&fake, 0, sizeof(fake));
	fake.type = REDIS_REPLY_ERROR;
	fake.str = (char *)t;
	fake.len = tl;
	if (err_is(&fake, "NOPERM") || err_is(&fake, "NOAUTH") ||
	    err_is(&fake, "WRONGPASS"))
		return reply_error(x, c->where, "HELLO", NULL, &fake, err);
	server_text(t, tl, txt, sizeof(txt));
	reply_fatal = true; /* a server's version does not heal */
	return err_set(err, EXIT_AGENT_UNPROVEN,
	    "redis %s: HELLO 3 "
	    "failed: %s: the server does not speak RESP3, and Pylon "
	    "with ?protocol=resp3 in its URL cannot use it; remove "
	    "?protocol=resp3 or use Redis 6 or later",
	    c->where, txt);
}

/* HELLO 2: the connection back to RESP2 for the rest of the proof. */
static int
hello2_back(const struct bus_ctx *x, struct rconn *c, int64_t deadline,
    struct agent_err *err)
{
	const char *argv[2] = {"HELLO", "2"};
	size_t lens[2] = {5, 1};
	redisReply *r = NULL;
	int rc;

	if ((rc = rconn_send(c, 2, argv, lens, deadline, err)) != 0 ||
	    (rc = rconn_recv(c, &r, deadline, "HELLO 2", err)) != 0)
		return rc;
	if (r->type == REDIS_REPLY_ERROR)
		rc = reply_error(x, c->where, "HELLO 2", NULL, r, err);
	else if (r->type != REDIS_REPLY_ARRAY)
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: HELLO 2: "
		    "unexpected reply type %d",
		    c->where, r->type);
	freeReplyObject(r);
	return rc;
}

/*
 * ?protocol=resp3: Pylon's client sends HELLO 3 after AUTH/SELECT, so the
 * proof does too, on the subscription's connection before SUBSCRIBE.  The
 * answer must be a RESP3 map; then HELLO 2 puts the connection back to
 * RESP2 for the rest of the proof (docs/decisions.md).
 */
static int
do_hello3(const struct bus_ctx *x, struct rconn *c, int64_t deadline,
    struct agent_err *err)
{
	const char *argv[2] = {"HELLO", "3"};
	size_t lens[2] = {5, 1}, len = 0;
	char *buf;
	long used;
	int rc;

	if ((rc = rconn_send(c, 2, argv, lens, deadline, err)) != 0)
		return rc;
	if ((buf = a_malloc(HELLO_CAP)) == NULL)
		return err_oom(err, "HELLO 3");
	if ((rc = hello3_read(c, buf, &len, &used, deadline, err)) != 0)
		goto out;
	if (used < 0) {
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: HELLO 3 "
		    "(?protocol=resp3): the answer is not RESP3",
		    c->where);
		goto out;
	}
	if (buf[0] == '-' || buf[0] == '!') {
		rc = hello3_refused(x, c, buf, used, err);
		goto out;
	}
	if (buf[0] != '%') {
		reply_fatal = true;
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: HELLO 3 "
		    "answered '%c', not a RESP3 map: the server (or a proxy "
		    "in front of it) does not switch to RESP3; remove "
		    "?protocol=resp3",
		    c->where, isprint((unsigned char)buf[0]) ? buf[0] : '?');
		goto out;
	}
	/* Anything after it belongs to the next reply. */
	if ((size_t)used < len &&
	    redisReaderFeed(c->rd, buf + used, len - (size_t)used) !=
	        REDIS_OK) {
		rc = err_oom(err, "redisReaderFeed");
		goto out;
	}
	c->fed = len - (size_t)used;
	rc = hello2_back(x, c, deadline, err);
out:
	a_free(buf);
	return rc;
}

/* ---- the envelope ------------------------------------------------------- */

static void
hex(const unsigned char *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* "pylon-agent-<8 hex>" into id (>= 21 bytes). */
STATIC void
make_instance_id(char *id, size_t n)
{
	unsigned char b[4];
	char h[9];

	random_bytes(b, sizeof(b));
	hex(b, sizeof(b), h);
	snprintf(id, n, "pylon-agent-%s", h);
}

/* {"instance_id":id,"kind":"agent_probe","payload":{"nonce":<32 hex>}} */
STATIC char *
make_envelope(const char *instance_id)
{
	cJSON *o, *p;
	unsigned char b[16];
	char nonce[33], *s = NULL;

	random_bytes(b, sizeof(b));
	hex(b, sizeof(b), nonce);
	if ((o = cJSON_CreateObject()) == NULL)
		return NULL;
	if (cJSON_AddStringToObject(o, "instance_id", instance_id) == NULL ||
	    cJSON_AddStringToObject(o, "kind", "agent_probe") == NULL ||
	    (p = cJSON_AddObjectToObject(o, "payload")) == NULL ||
	    cJSON_AddStringToObject(p, "nonce", nonce) == NULL)
		goto out;
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

/* ---- one attempt -------------------------------------------------------- */

/* What the earlier PUBLISHes of this proof may have done. */
enum pub_state {
	PUB_NONE, /* none reached anybody: publishing is ok */
	PUB_DELIVERED, /* "N > 0 receivers" */
	PUB_UNKNOWN, /* sent, reply never seen */
};

struct attempt {
	struct rconn sub;
	struct rconn pub;
	enum pub_state pub_state;
	long long receivers;
	double latency_ms;
};

static void
attempt_close(struct attempt *a)
{
	rconn_close(&a->sub);
	rconn_close(&a->pub);
}

/* Waits on the subscription for the exact envelope. */
static int
await_envelope(const struct bus_ctx *x, struct attempt *a, const char *env,
    int64_t deadline, struct agent_err *err)
{
	redisReply *r = NULL;
	size_t elen = strlen(env);
	long others = 0;
	int rc;
	int64_t start = now_ms();

	/* "0 receivers" although our subscription was confirmed: the two
	 * connections reached different servers.  A short grace for a
	 * Redis Cluster, where PUBLISH counts local subscribers only. */
	if (a->receivers == 0 && deadline > start + ZERO_GRACE_MS)
		deadline = start + ZERO_GRACE_MS;
	for (;;) {
		/* Other messages on the channel (Pylon's own traffic, or a
		 * flood) are counted and skipped, never past the deadline. */
		if (others > 0 && now_ms() >= deadline) {
			a->sub.timed_out = true;
			rc = EXIT_AGENT_UNPROVEN;
		} else
			rc = rconn_recv(
			    &a->sub, &r, deadline, "the envelope", err);
		if (rc != 0) {
			if (!a->sub.timed_out)
				return rc;
			if (others >= 1000)
				return err_set(err, EXIT_AGENT_UNPROVEN,
				    "redis %s: envelope not received on "
				    "channel \"%s\" within %ld ms: %ld other "
				    "messages arrived on it and were skipped "
				    "(something else floods the channel: "
				    "another application on the same "
				    "--namespace, or a hostile server?)",
				    a->sub.where, x->channel,
				    (long)(now_ms() - start), others);
			if (a->receivers == 0)
				return err_set(err, EXIT_AGENT_UNPROVEN,
				    "redis %s: envelope not received on "
				    "channel \"%s\": PUBLISH reported 0 "
				    "receivers although the subscription was "
				    "confirmed: the two connections reached "
				    "different servers (a load balancer in "
				    "front of independent Redis servers?)",
				    a->sub.where, x->channel);
			return err_set(err, EXIT_AGENT_UNPROVEN,
			    "redis %s: "
			    "envelope not received on channel \"%s\" within "
			    "%ld ms although PUBLISH reported %lld "
			    "receiver(s) (%ld other message(s) seen): "
			    "pub/sub does not deliver here (a proxy without "
			    "pub/sub support, or two different servers "
			    "behind one address?)",
			    a->sub.where, x->channel, (long)(now_ms() - start),
			    a->receivers, others);
		}
		if (is_push(r, "message") && r->elements == 3 &&
		    r->element[2]->type == REDIS_REPLY_STRING &&
		    r->element[2]->len == elen &&
		    memcmp(r->element[2]->str, env, elen) == 0) {
			freeReplyObject(r);
			return 0;
		}
		others++;
		freeReplyObject(r);
	}
}

static int
attempt_run(const struct bus_ctx *x, struct attempt *a, const char *env,
    int64_t deadline, struct agent_err *err)
{
	const char *argv[3];
	size_t lens[3];
	redisReply *r = NULL;
	double t0;
	int rc;

	a->receivers = 0;
	if (env == NULL) {
		/* Steady-state session: one connection, no subscription on
		 * Pylon's channel (SPEC 5); it answers PING. */
		if ((rc = conn_setup(x, &a->pub, deadline, err)) != 0 ||
		    (rc = do_ping(&a->pub, false, deadline, err)) != 0)
			goto fail;
		return 0;
	}
	if ((rc = conn_setup(x, &a->sub, deadline, err)) != 0)
		return rc;
	if (x->u->resp3 && (rc = do_hello3(x, &a->sub, deadline, err)) != 0)
		goto fail;
	if ((rc = do_subscribe(x, &a->sub, deadline, err)) != 0)
		goto fail;
	if ((rc = conn_setup(x, &a->pub, deadline, err)) != 0)
		goto fail;
	argv[0] = "PUBLISH";
	lens[0] = 7;
	argv[1] = x->channel;
	lens[1] = strlen(x->channel);
	argv[2] = env;
	lens[2] = strlen(env);
	t0 = now_ms_f();
	/* An incomplete command is never executed: a failed write
	 * delivered nothing. */
	if ((rc = rconn_send(&a->pub, 3, argv, lens, deadline, err)) != 0)
		goto fail;
	a->pub_state = PUB_UNKNOWN;
	if ((rc = rconn_recv(&a->pub, &r, deadline, "PUBLISH", err)) != 0)
		goto fail;
	if (r->type == REDIS_REPLY_ERROR) {
		a->pub_state = PUB_NONE;
		rc = reply_error(
		    x, a->pub.where, "PUBLISH", "publish to", r, err);
		freeReplyObject(r);
		goto fail;
	}
	if (r->type != REDIS_REPLY_INTEGER) {
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: PUBLISH: "
		    "unexpected reply type %d",
		    a->pub.where, r->type);
		freeReplyObject(r);
		goto fail;
	}
	a->receivers = r->integer;
	a->pub_state = r->integer > 0 ? PUB_DELIVERED : PUB_NONE;
	freeReplyObject(r);
	if ((rc = await_envelope(x, a, env, deadline, err)) != 0)
		goto fail;
	a->latency_ms = now_ms_f() - t0;
	return 0;
fail:
	attempt_close(a);
	return rc ? rc : EXIT_AGENT_UNPROVEN;
}

/* ---- the proof with retries --------------------------------------------- */

struct bus_session {
	struct redis_url u;
	char *ca;
	char *channel;
	struct rconn sub;
	struct rconn pub;
	bool broken;
};

/* Set once an envelope of this process may have reached subscribers:
 * the agent publishes at most one per start (SPEC 5). */
static int envelope_out;

#ifdef UNITTEST
void
bus_test_reset_envelope(void)
{
	__atomic_store_n(&envelope_out, 0, __ATOMIC_SEQ_CST);
}
#endif

/* Backoff before attempt n+1 (n >= 1): equal jitter, capped. */
STATIC long
backoff_ms(int n)
{
	return backoff_jitter_ms(BACKOFF_MS, n - 1, BACKOFF_CAP_MS);
}

static int
session_run(struct bus_session *s, const char *url, long timeout_ms,
    bool publish, struct bus_result *res, struct agent_err *err)
{
	struct bus_ctx x = {&s->u, s->ca, s->channel};
	struct attempt a;
	struct agent_err last;
	char *env = NULL, where[300];
	int64_t start = now_ms(), deadline, ad;
	long wait;
	int rc, n = 0;

	memset(&a, 0, sizeof(a));
	memset(res, 0, sizeof(*res));
	err_clear(&last);
	deadline = start + (timeout_ms > 0 ? timeout_ms : 1);
	redis_url_where(&s->u, where, sizeof(where));
	redis_url_register_secrets(url);
	if (s->u.tls && s->u.insecure)
		log_warnx(
		    "TLS certificate verification is DISABLED for "
		    "redis %s (insecure in the Redis URL): anyone on the "
		    "network path can impersonate the server and read the "
		    "bus; remove #insecure and pass --redis-ca-file instead",
		    where);
	make_instance_id(res->instance_id, sizeof(res->instance_id));
	if (publish && __atomic_load_n(&envelope_out, __ATOMIC_SEQ_CST))
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "bus not proven: this "
		    "start already published its one probe envelope and it "
		    "did not come back; restart the agent to prove the bus "
		    "again");
	if (publish && (env = make_envelope(res->instance_id)) == NULL)
		return err_oom(err, "make_envelope");

	for (;;) {
		n++;
		ad = now_ms() + ATTEMPT_MS;
		if (ad > deadline)
			ad = deadline;
		reply_fatal = false;
		rc = attempt_run(&x, &a,
		    publish && a.pub_state == PUB_NONE ? env : NULL, ad, &last);
		if (a.pub_state != PUB_NONE)
			__atomic_store_n(&envelope_out, 1, __ATOMIC_SEQ_CST);
		if (rc == 0)
			break;
		if (rc == EXIT_AGENT_CONFIG || rc == EXIT_AGENT_SOFTWARE) {
			*err = last;
			goto out;
		}
		if (reply_fatal) {
			/* A password or an ACL is wrong: waiting until the
			 * deadline would only delay the same answer. */
			rc = err_set(err, EXIT_AGENT_UNPROVEN,
			    "bus not proven "
			    "(not retried: a wrong password or ACL does not "
			    "heal by waiting): %s",
			    last.msg);
			goto out;
		}
		if (publish && a.pub_state != PUB_NONE) {
			/* One envelope per start: it may have reached
			 * Pylon's subscribers, so no second one. */
			rc = err_set(err, EXIT_AGENT_UNPROVEN,
			    "bus not proven "
			    "(attempt %d): %s; not retrying: the envelope "
			    "may already have reached subscribers and the "
			    "agent publishes at most one per start",
			    n, last.msg);
			goto out;
		}
		wait = backoff_ms(n);
		if (now_ms() + wait + MIN_ATTEMPT_MS > deadline) {
			rc = err_set(err, EXIT_AGENT_UNPROVEN,
			    "bus not proven "
			    "within %ld ms (%d attempt%s): %s",
			    timeout_ms, n, n == 1 ? "" : "s", last.msg);
			goto out;
		}
		log_warnx("bus attempt %d failed: %s; retrying in %ld ms", n,
		    last.msg, wait);
		sleep_ms(wait, NULL);
	}
	res->attempts = n;
	res->latency_ms = a.latency_ms;
	res->published = env != NULL;
	/* The proof's subscription is not kept: in steady state the
	 * session is the one plain connection (SPEC 5, 10). */
	rconn_close(&a.sub);
	s->pub = a.pub;
	s->pub.rd->privdata = &s->pub;
	rc = 0;
out:
	if (rc != 0) {
		res->attempts = n;
		res->published = a.pub_state != PUB_NONE;
	}
	if (env != NULL)
		cJSON_free(env);
	return rc;
}

void
bus_session_close(struct bus_session *s)
{
	if (s == NULL)
		return;
	rconn_close(&s->sub);
	rconn_close(&s->pub);
	redis_url_release(&s->u);
	a_free(s->ca);
	a_free(s->channel);
	a_free(s);
}

int
bus_session_open(struct bus_session **sp, const char *url, const char *ca_file,
    const char *channel, long timeout_ms, bool publish_probe,
    struct bus_result *res, struct agent_err *err)
{
	struct bus_session *s;
	struct bus_result tmp;
	int rc;

	*sp = NULL;
	if (res == NULL)
		res = &tmp;
	memset(res, 0, sizeof(*res));
	if (channel == NULL || *channel == '\0')
		return err_set(err, EXIT_AGENT_CONFIG, "bus: no channel");
	if ((s = a_calloc(1, sizeof(*s))) == NULL)
		return err_oom(err, "bus_session_open");
	if ((rc = redis_url_parse(url, &s->u, err)) != 0) {
		a_free(s);
		return rc;
	}
	if ((ca_file != NULL && (s->ca = a_strdup(ca_file)) == NULL) ||
	    (s->channel = a_strdup(channel)) == NULL) {
		bus_session_close(s);
		return err_oom(err, "bus_session_open");
	}
	rc = session_run(s, url, timeout_ms, publish_probe, res, err);
	if (rc != 0) {
		bus_session_close(s);
		return rc;
	}
	*sp = s;
	return 0;
}

int
bus_prove(const char *url, const char *ca_file, const char *channel,
    long timeout_ms, struct bus_result *res, struct agent_err *err)
{
	struct bus_session *s = NULL;
	int rc;

	rc = bus_session_open(
	    &s, url, ca_file, channel, timeout_ms, true, res, err);
	bus_session_close(s);
	return rc;
}

int
bus_session_check(struct bus_session *s, long timeout_ms, double *latency_ms,
    long *numsub, struct agent_err *err)
{
	struct bus_ctx x;
	const char *argv[3];
	size_t lens[3];
	redisReply *r = NULL;
	double t0 = now_ms_f();
	int64_t deadline;
	int rc;

	deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 1);
	if (latency_ms != NULL)
		*latency_ms = 0;
	if (numsub != NULL)
		*numsub = -1;
	if (s == NULL || s->broken || s->pub.t == NULL)
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "bus session is "
		    "closed after an earlier failure; reconnect");
	x.u = &s->u;
	x.ca = s->ca;
	x.channel = s->channel;
	err_clear(err);
	if (numsub == NULL) {
		/* One command: PING. */
		if ((rc = do_ping(&s->pub, false, deadline, err)) != 0)
			goto fail;
		if (latency_ms != NULL)
			*latency_ms = now_ms_f() - t0;
		return 0;
	}
	/* One command: PUBSUB NUMSUB, which is a round trip too. */
	argv[0] = "PUBSUB";
	lens[0] = 6;
	argv[1] = "NUMSUB";
	lens[1] = 6;
	argv[2] = s->channel;
	lens[2] = strlen(s->channel);
	if ((rc = rconn_send(&s->pub, 3, argv, lens, deadline, err)) != 0 ||
	    (rc = rconn_recv(&s->pub, &r, deadline, "PUBSUB NUMSUB", err)) != 0)
		goto fail;
	if (r->type == REDIS_REPLY_ERROR) {
		rc = reply_error(&x, s->pub.where, "PUBSUB", NULL, r, err);
		goto fail;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_INTEGER) {
		rc = err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: PUBSUB "
		    "NUMSUB: unexpected reply",
		    s->pub.where);
		goto fail;
	}
	if (numsub != NULL)
		*numsub = (long)r->element[1]->integer;
	freeReplyObject(r);
	if (latency_ms != NULL)
		*latency_ms = now_ms_f() - t0;
	return 0;
fail:
	if (r != NULL)
		freeReplyObject(r);
	s->broken = true;
	rconn_close(&s->sub);
	rconn_close(&s->pub);
	return rc ? rc : EXIT_AGENT_UNPROVEN;
}

/* One command with no channel argument; the reply in *r (the caller frees
 * it).  An error reply is *denied (NOPERM, an unknown subcommand on an
 * old Redis): the session stays usable. */
static int
session_command(struct bus_session *s, int argc, const char **argv,
    int64_t deadline, const char *what, redisReply **r, bool *denied,
    struct agent_err *err)
{
	size_t lens[3 + BUS_OWN_IDS];
	int i, rc;

	*r = NULL;
	if (argc > (int)(sizeof(lens) / sizeof(lens[0])))
		return err_set(
		    err, EXIT_AGENT_SOFTWARE, "%s: too many arguments", what);
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	if ((rc = rconn_send(&s->pub, argc, argv, lens, deadline, err)) != 0 ||
	    (rc = rconn_recv(&s->pub, r, deadline, what, err)) != 0)
		return rc;
	if ((*r)->type == REDIS_REPLY_ERROR) {
		char txt[256];

		server_text((*r)->str, (*r)->len, txt, sizeof(txt));
		err_set(err, EXIT_AGENT_UNPROVEN, "redis %s: %s: %s",
		    s->pub.where, what, txt);
		*denied = true;
		freeReplyObject(*r);
		*r = NULL;
		return 0;
	}
	if ((*r)->type != REDIS_REPLY_STRING &&
	    (*r)->type != REDIS_REPLY_STATUS) {
		freeReplyObject(*r);
		*r = NULL;
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: %s: "
		    "unexpected reply",
		    s->pub.where, what);
	}
	return 0;
}

/* CLIENT INFO once: our address as Redis sees it (through NAT or a proxy
 * too), kept in mine->ip for the process's life. */
static int
own_address(struct bus_session *s, int64_t deadline, struct bus_own *mine,
    bool *denied, struct agent_err *err)
{
	static const char *info[] = {"CLIENT", "INFO"};
	redisReply *r = NULL;
	int rc;

	if (mine->ip[0] != '\0')
		return 0;
	if ((rc = session_command(
	         s, 2, info, deadline, "CLIENT INFO", &r, denied, err)) != 0 ||
	    *denied)
		return rc;
	if (!deaf_client_ip(r->str, r->len, mine->ip, sizeof(mine->ip))) {
		mine->ip[0] = '\0';
		*denied = true;
		err_set(err, EXIT_AGENT_UNPROVEN,
		    "redis %s: CLIENT INFO: no addr= field", s->pub.where);
	}
	freeReplyObject(r);
	return 0;
}

/* CLIENT LIST ID <the ids seen last time>: *own > 0 when one of them is
 * still subscribed from our address.  A Redis that refuses the ID filter
 * (a Redis-compatible server without it) is asked for full lists from
 * then on. */
static int
own_by_id(struct bus_session *s, int64_t deadline, struct bus_own *mine,
    int *own, int *total, struct agent_err *err)
{
	const char *argv[3 + BUS_OWN_IDS];
	char num[BUS_OWN_IDS][24];
	redisReply *r = NULL;
	bool refused = false;
	int i, rc, n = 0;

	argv[n++] = "CLIENT";
	argv[n++] = "LIST";
	argv[n++] = "ID";
	for (i = 0; i < mine->nids && i < BUS_OWN_IDS; i++) {
		snprintf(num[i], sizeof(num[i]), "%lld", mine->ids[i]);
		argv[n++] = num[i];
	}
	if ((rc = session_command(s, n, argv, deadline, "CLIENT LIST ID", &r,
	         &refused, err)) != 0)
		return rc;
	if (refused) {
		log_debug(
		    "serve: %s; asking for full lists from now on", err->msg);
		mine->no_id_filter = true;
		err_clear(err);
		return 0;
	}
	*own = deaf_own_ids(r->str, r->len, mine->ip, total, mine->ids,
	    BUS_OWN_IDS, &mine->nids);
	freeReplyObject(r);
	return 0;
}

int
bus_session_own_subscribers(struct bus_session *s, long timeout_ms, int *own,
    int *total, struct bus_own *mine, bool *denied, struct agent_err *err)
{
	static const char *list[] = {"CLIENT", "LIST", "TYPE", "pubsub"};
	redisReply *r = NULL;
	int64_t deadline;
	int rc;

	*own = *total = 0;
	*denied = false;
	deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 1);
	if (s == NULL || s->broken || s->pub.t == NULL)
		return err_set(err, EXIT_AGENT_UNPROVEN,
		    "bus session is "
		    "closed after an earlier failure; reconnect");
	err_clear(err);
	if ((rc = own_address(s, deadline, mine, denied, err)) != 0)
		goto fail;
	if (*denied)
		return 0;
	if (mine->nids > 0 && !mine->no_id_filter) {
		if ((rc = own_by_id(s, deadline, mine, own, total, err)) != 0)
			goto fail;
		if (*own > 0)
			return 0;
	}
	/* Our subscribers are new (Pylon reconnected), gone, or never seen:
	 * the one answer that grows with the fleet. */
	if ((rc = session_command(s, 4, list, deadline,
	         "CLIENT LIST TYPE pubsub", &r, denied, err)) != 0)
		goto fail;
	if (*denied)
		return 0;
	*own = deaf_own_ids(r->str, r->len, mine->ip, total, mine->ids,
	    BUS_OWN_IDS, &mine->nids);
	freeReplyObject(r);
	return 0;
fail:
	s->broken = true;
	rconn_close(&s->sub);
	rconn_close(&s->pub);
	return rc ? rc : EXIT_AGENT_UNPROVEN;
}
