/* The pure pieces of bus.c: envelope, instance id, backoff, the one-line
 * causes made from Redis error replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "bus.h"

/* bus.c's file-local pieces: bus.h under -DUNITTEST. */

static void
test_instance_id(void **state)
{
	char	a[32], b[32];
	size_t	i;

	(void)state;
	make_instance_id(a, sizeof(a));
	make_instance_id(b, sizeof(b));
	assert_int_equal(20, strlen(a));
	assert_memory_equal("pylon-agent-", a, 12);
	for (i = 12; i < 20; i++)
		assert_non_null(strchr("0123456789abcdef", a[i]));
	assert_string_not_equal(a, b);
}

static void
test_envelope(void **state)
{
	char	*s, *s2;
	cJSON	*o, *p, *n;

	(void)state;
	s = make_envelope("pylon-agent-0123abcd");
	assert_non_null(s);
	/* exact key order and shape, compact: Pylon's envelope */
	assert_memory_equal("{\"instance_id\":\"pylon-agent-0123abcd\","
	    "\"kind\":\"agent_probe\",\"payload\":{\"nonce\":\"", s, 79);
	o = cJSON_Parse(s);
	assert_non_null(o);
	assert_int_equal(3, cJSON_GetArraySize(o));
	p = cJSON_GetObjectItemCaseSensitive(o, "payload");
	assert_true(cJSON_IsObject(p));
	n = cJSON_GetObjectItemCaseSensitive(p, "nonce");
	assert_true(cJSON_IsString(n));
	assert_int_equal(32, strlen(n->valuestring));
	cJSON_Delete(o);
	s2 = make_envelope("pylon-agent-0123abcd");
	assert_string_not_equal(s, s2);	/* a fresh nonce each time */
	cJSON_free(s);
	cJSON_free(s2);
}

static void
test_backoff(void **state)
{
	int	n, i;
	long	b, lo, hi;

	(void)state;
	for (n = 1; n < 20; n++) {
		hi = 200L << (n - 1 > 5 ? 5 : n - 1);
		if (hi > 5000)
			hi = 5000;
		lo = hi / 2;
		for (i = 0; i < 50; i++) {
			b = backoff_ms(n);
			if (b < lo || b > hi)
				fail_msg("backoff(%d) = %ld not in [%ld,%ld]",
				    n, b, lo, hi);
		}
	}
}

static void
test_server_text(void **state)
{
	char	out[16];

	(void)state;
	server_text("ab\r\ncd", 6, out, sizeof(out));
	assert_string_equal("ab??cd", out);
	server_text("0123456789abcdefghij", 20, out, sizeof(out));
	assert_int_equal(15, strlen(out));
}

static void
err_reply(redisReply *r, const char *s)
{
	memset(r, 0, sizeof(*r));
	r->type = REDIS_REPLY_ERROR;
	r->str = (char *)s;
	r->len = strlen(s);
}

struct ecase {
	const char	*cmd, *verb, *reply;
	const char	*want[3];
};

static const struct ecase ecases[] = {
	{ "AUTH", NULL, "WRONGPASS invalid username-password pair or user "
	  "is disabled.", { "WRONGPASS", "user 'alice'", "password" } },
	{ "AUTH", NULL, "ERR invalid password", { "WRONGPASS", NULL } },
	{ "AUTH", NULL, "ERR AUTH <password> called without any password "
	  "configured for the default user. Are you sure your configuration "
	  "is correct?", { "no password configured", NULL } },
	{ "SUBSCRIBE", "subscribe to", "NOAUTH Authentication required.",
	  { "NOAUTH", "requires a password", NULL } },
	{ "SUBSCRIBE", "subscribe to", "NOPERM this user has no permissions "
	  "to access one of the channels used as arguments",
	  { "NOPERM", "subscribe to channel \"ns:cluster:bus\"",
	  "ACL SETUSER alice &ns:cluster:bus" } },
	{ "PUBLISH", "publish to", "NOPERM this user has no permissions to "
	  "access one of the channels used as arguments",
	  { "NOPERM", "publish to channel \"ns:cluster:bus\"", NULL } },
	{ "PUBLISH", "publish to", "NOPERM this user has no permissions to "
	  "run the 'publish' command", { "NOPERM", "may not run PUBLISH",
	  "+publish" } },
	{ "SELECT", NULL, "ERR DB index is out of range",
	  { "SELECT 3 failed", "wrong db", "/3" } },
	{ "PUBSUB", NULL, "ERR something", { "PUBSUB failed: ERR something",
	  NULL } },
	{ "SUBSCRIBE", "subscribe to", "DENIED Redis is running in protected "
	  "mode because protected mode is enabled", { "DENIED",
	  "protected mode", "requirepass" } },
	{ "SELECT", NULL, "LOADING Redis is loading the dataset in memory",
	  { "still loading", "retries", NULL } },
};

static void
test_reply_error(void **state)
{
	struct redis_url	u;
	struct bus_ctx		x;
	struct agent_err	err;
	redisReply		r;
	size_t			i, j;

	(void)state;
	assert_int_equal(0, redis_url_parse("redis://alice:s3cr3tpw@h/3", &u,
	    &err));
	x.u = &u;
	x.ca = NULL;
	x.channel = "ns:cluster:bus";
	for (i = 0; i < sizeof(ecases) / sizeof(ecases[0]); i++) {
		err_reply(&r, ecases[i].reply);
		assert_int_equal(EXIT_AGENT_UNPROVEN, reply_error(&x, "h:6379",
		    ecases[i].cmd, ecases[i].verb, &r, &err));
		assert_non_null(strstr(err.msg, "redis h:6379: "));
		assert_null(strstr(err.msg, "s3cr3tpw"));
		assert_null(strchr(err.msg, '\n'));
		for (j = 0; j < 3 && ecases[i].want[j] != NULL; j++)
			if (strstr(err.msg, ecases[i].want[j]) == NULL)
				fail_msg("%s: \"%s\" lacks \"%s\"",
				    ecases[i].reply, err.msg,
				    ecases[i].want[j]);
	}
	redis_url_release(&u);
}

/* Nothing listening: the proof gives up at the deadline with the cause
 * and exit 69, without publishing. */
static void
test_prove_refused(void **state)
{
	struct bus_result	res;
	struct agent_err	err;
	int64_t			t0 = now_ms();
	int			rc;

	(void)state;
	err_clear(&err);
	rc = bus_prove("unix:///nonexistent-dir/redis.sock", NULL,
	    "pylon:cluster:bus", 600, &res, &err);
	assert_int_equal(EXIT_AGENT_UNPROVEN, rc);
	assert_non_null(strstr(err.msg, "no such socket file"));
	assert_non_null(strstr(err.msg, "within 600 ms"));
	assert_true(res.attempts >= 2);
	assert_false(res.published);
	assert_true(now_ms() - t0 < 1500);
	/* a bad URL is a configuration error at once */
	rc = bus_prove("redis://h?x", NULL, "c", 600, &res, &err);
	assert_int_equal(EXIT_AGENT_CONFIG, rc);
}

/* The RESP3 scanner behind ?protocol=resp3's HELLO 3: the length of one
 * complete value, 0 for "more bytes", -1 for "not RESP3"; every proper
 * prefix of a complete value asks for more. */
static void
test_resp3_scan(void **state)
{
	static const char *hello =
	    "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"
	    "$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n"
	    "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n"
	    "$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
	static const struct {
		const char	*in;
		long		 want;
	} cases[] = {
		{ "+OK\r\n", 5 },
		{ "-ERR unknown command 'HELLO'\r\n", 30 },
		{ "_\r\n", 3 }, { "#t\r\n", 4 }, { ",1.5\r\n", 6 },
		{ "(12345678901234567890\r\n", 23 },
		{ "$-1\r\n", 5 }, { "$0\r\n\r\n", 6 },
		{ "!9\r\nNOPROTO x\r\n", 15 },
		{ "=8\r\ntxt:abcd\r\n", 14 },
		{ "*-1\r\n", 5 }, { "~1\r\n:1\r\n", 8 },
		{ ">2\r\n+a\r\n+b\r\n", 12 },
		{ "|1\r\n+k\r\n+v\r\n:1\r\n", 16 },
		{ "+OK\r\n+next\r\n", 5 },	/* one value only */
		/* not RESP3 */
		{ "x\r\n", -1 }, { "+OK\n", -1 }, { "$5\r\nabcdefg\r\n", -1 },
		{ "$-2\r\n", -1 },
		/* strtoll would skip the CRLF and read on (found by fuzz_resp) */
		{ "$\r\n\r\n5\r\nabcde\r\n", -1 }, { "* 1\r\n:1\r\n", -1 },
		{ "$+3\r\nabc\r\n", -1 }, { "*\r\n", -1 }, { "*x\r\n", -1 }, { "%-1\r\n", -1 },
		{ "*99999\r\n", -1 }, { "$99999999\r\n", -1 },
		{ "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
		  -1 },	/* deeper than RESP3_DEPTH */
	};
	size_t	i, k, n;
	long	got;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		got = resp3_scan(cases[i].in, strlen(cases[i].in), 0);
		if (got != cases[i].want)
			fail_msg("case %zu (%s): %ld, want %ld", i, cases[i].in,
			    got, cases[i].want);
	}
	n = strlen(hello);
	assert_int_equal((long)n, resp3_scan(hello, n, 0));
	for (k = 0; k < n; k++)
		if (resp3_scan(hello, k, 0) != 0)
			fail_msg("prefix %zu of HELLO 3's answer is not 'more'",
			    k);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_instance_id),
		cmocka_unit_test(test_envelope),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_server_text),
		cmocka_unit_test(test_reply_error),
		cmocka_unit_test(test_resp3_scan),
		cmocka_unit_test(test_prove_refused),
	};

	log_init(LOG_TEXT);
	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
