/* Redis URL parsing and redaction, from raw strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "bus.h"

struct ucase {
	const char	*url;
	enum redis_kind	 kind;
	bool		 tls, insecure;
	const char	*user, *pass, *host;
	int		 port;
	const char	*path;
	int		 db;
};

static const struct ucase good[] = {
	{ "redis://redis", REDIS_TCP, false, false, NULL, NULL, "redis",
	  6379, NULL, 0 },
	{ "redis://redis:6380", REDIS_TCP, false, false, NULL, NULL, "redis",
	  6380, NULL, 0 },
	{ "redis://redis:", REDIS_TCP, false, false, NULL, NULL, "redis",
	  6379, NULL, 0 },
	{ "redis://redis/", REDIS_TCP, false, false, NULL, NULL, "redis",
	  6379, NULL, 0 },
	{ "REDIS://Redis.svc.cluster.local:1/15", REDIS_TCP, false, false,
	  NULL, NULL, "Redis.svc.cluster.local", 1, NULL, 15 },
	{ "redis://:secret@h", REDIS_TCP, false, false, NULL, "secret", "h",
	  6379, NULL, 0 },
	{ "redis://default:secret@h:6379/0", REDIS_TCP, false, false,
	  "default", "secret", "h", 6379, NULL, 0 },
	{ "redis://alice@h", REDIS_TCP, false, false, "alice", NULL, "h",
	  6379, NULL, 0 },
	{ "redis://alice:@h", REDIS_TCP, false, false, "alice", NULL, "h",
	  6379, NULL, 0 },
	/* percent-decoding of user and password */
	{ "redis://al%69ce:p%40ss%3Aw%2Frd%27%22%25%20x@h:7/3", REDIS_TCP,
	  false, false, "alice", "p@ss:w/rd'\"% x", "h", 7, NULL, 3 },
	/* invalid escapes stay literal; a raw '@' in the password too
	 * (the last '@' of the authority ends the userinfo) */
	{ "redis://:a%zz%4@b@h", REDIS_TCP, false, false, NULL, "a%zz%4@b",
	  "h", 6379, NULL, 0 },
	{ "redis://[::1]:6390/2", REDIS_TCP, false, false, NULL, NULL, "::1",
	  6390, NULL, 2 },
	{ "redis://[::1]", REDIS_TCP, false, false, NULL, NULL, "::1", 6379,
	  NULL, 0 },
	{ "redis://u:p@[fe80::1]:1", REDIS_TCP, false, false, "u", "p",
	  "fe80::1", 1, NULL, 0 },
	{ "rediss://h:6380", REDIS_TCP, true, false, NULL, NULL, "h", 6380,
	  NULL, 0 },
	{ "rediss://h:6380/#insecure", REDIS_TCP, true, true, NULL, NULL, "h",
	  6380, NULL, 0 },
	{ "rediss://h?insecure", REDIS_TCP, true, true, NULL, NULL, "h", 6379,
	  NULL, 0 },
	{ "rediss://h/1?protocol=resp3&insecure=true", REDIS_TCP, true, true,
	  NULL, NULL, "h", 6379, NULL, 1 },
	{ "redis://h?protocol=resp2", REDIS_TCP, false, false, NULL, NULL,
	  "h", 6379, NULL, 0 },
	{ "redis+unix:///run/redis.sock", REDIS_UNIX, false, false, NULL,
	  NULL, NULL, 0, "/run/redis.sock", 0 },
	{ "unix:///tmp/r%20s.sock?db=4&user=bob&pass=p%26w", REDIS_UNIX,
	  false, false, "bob", "p&w", NULL, 0, "/tmp/r s.sock", 4 },
	{ "redis+unix:///s?pass=&db=0", REDIS_UNIX, false, false, NULL, NULL,
	  NULL, 0, "/s", 0 },
};

static void
check_str(const char *want, const char *got)
{
	if (want == NULL)
		assert_null(got);
	else {
		assert_non_null(got);
		assert_string_equal(want, got);
	}
}

static void
test_good(void **state)
{
	struct redis_url	u;
	struct agent_err	err;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const struct ucase *c = &good[i];

		err_clear(&err);
		if (redis_url_parse(c->url, &u, &err) != 0)
			fail_msg("%s: %s", c->url, err.msg);
		assert_int_equal(c->kind, u.kind);
		assert_int_equal(c->tls, u.tls);
		assert_int_equal(c->insecure, u.insecure);
		check_str(c->user, u.user);
		check_str(c->pass, u.pass);
		check_str(c->host, u.host);
		check_str(c->path, u.path);
		if (c->kind == REDIS_TCP)
			assert_int_equal(c->port, u.port);
		assert_int_equal(c->db, u.db);
		redis_url_release(&u);
	}
}

struct bcase {
	const char	*url;
	const char	*want;		/* substring of the message */
};

/* The password in each is "hunter2xyz" (or a piece of it) and must never
 * appear in the message. */
static const struct bcase bad[] = {
	{ "", "empty" },
	{ "http://h", "unknown scheme" },
	{ "redis:/h", "unknown scheme" },
	{ "redis://", "no host" },
	{ "redis://:hunter2xyz@", "no host" },
	{ "redis://:hunter2xyz@:6379", "no host" },
	{ "redis://h:0", "port" },
	{ "redis://h:65536", "port" },
	{ "redis://h:hunter2xyz", "port" },
	{ "redis://h:6379x", "port" },
	{ "redis://::1:6379", "IPv6" },
	{ "redis://[::1", "unterminated" },
	{ "redis://[nothunter2xyz]:1", "IPv6" },
	{ "redis://[::1]x", "after ']'" },
	{ "redis://h/abc", "/<database number>" },
	{ "redis://h/1/2", "/<database number>" },
	{ "redis://h/-1", "/<database number>" },
	{ "redis://h?foo=1", "unknown query parameter 'foo'" },
	{ "redis://h?db=2", "unknown query parameter 'db'" },
	{ "redis://h?protocol=resp4", "protocol" },
	{ "redis://h#frag", "unknown fragment" },
	{ "redis://h?insecure=maybe", "insecure" },
	{ "redis://:hunter2/xyz@h", "percent-encode" },
	{ "redis://:hunter2?xyz@h", "percent-encode" },
	{ "redis://:hunter2#xyz@h", "percent-encode" },
	{ "redis://:hunter2xyz%00@h", "%00" },
	{ "redis://:hunter2 xyz@h", "space" },
	{ "redis://:hunter2xyz@h\n", "control" },
	{ "redis://h!x", "not allowed" },
	{ "redis+unix://host/tmp/s", "no host" },
	{ "unix://", "no socket path" },
	{ "unix:///", "no socket path" },
	{ "unix:///s?db=x", "db=" },
	{ "unix:///s?insecure", "unknown query parameter 'insecure'" },
	{ "unix:///s#insecure", "rediss:// only" },
	{ "unix:///s?nope", "unknown query parameter 'nope'" },
	{ "unix:///s?pass=hunter2xyz&x=1", "unknown query parameter 'x'" },
};

static void
test_bad(void **state)
{
	struct redis_url	u;
	struct agent_err	err;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err_clear(&err);
		if (redis_url_parse(bad[i].url, &u, &err) == 0)
			fail_msg("accepted: %s", bad[i].url);
		assert_int_equal(EXIT_AGENT_CONFIG, err.code);
		if (strstr(err.msg, bad[i].want) == NULL)
			fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].url,
			    err.msg, bad[i].want);
		if (strstr(err.msg, "hunter2") != NULL)
			fail_msg("%s: message leaks the password: %s",
			    bad[i].url, err.msg);
		/* nothing to release, and releasing is harmless */
		assert_null(u.host);
		assert_null(u.pass);
		redis_url_release(&u);
	}
}

static void
test_long(void **state)
{
	struct redis_url	u;
	struct agent_err	err;
	char			buf[5000];

	(void)state;
	memset(buf, 'a', sizeof(buf) - 1);
	buf[sizeof(buf) - 1] = '\0';
	memcpy(buf, "redis://", 8);
	assert_int_equal(EXIT_AGENT_CONFIG, redis_url_parse(buf, &u, &err));
	/* a 254-character host */
	snprintf(buf, sizeof(buf), "redis://%0254d:1", 0);
	assert_int_equal(EXIT_AGENT_CONFIG, redis_url_parse(buf, &u, &err));
	/* a unix path over 107 bytes */
	snprintf(buf, sizeof(buf), "unix:///%0120d", 0);
	assert_int_equal(EXIT_AGENT_CONFIG, redis_url_parse(buf, &u, &err));
}

struct rcase {
	const char	*url;
	const char	*want;
};

static const struct rcase red[] = {
	{ "redis://h:6379/0", "redis://h:6379/0" },
	{ "redis://:secret@h:6379/0", "redis://:***@h:6379/0" },
	{ "redis://default:secret@h", "redis://default:***@h" },
	{ "redis://alice@h", "redis://alice@h" },
	{ "redis://u:p%40ss%3Aw%2Frd%27%22%25%20x@h:7/3",
	  "redis://u:***@h:7/3" },
	{ "rediss://u:a@b@h#insecure", "rediss://u:***@h#insecure" },
	{ "unix:///s?db=1&pass=p%26w&user=u",
	  "unix:///s?db=1&pass=***&user=u" },
	{ "redis://h?bad", "(invalid Redis URL)" },
	{ "redis://:secret/x@h", "(invalid Redis URL)" },
	{ "ftp://secret", "(invalid Redis URL)" },
};

static void
test_redact(void **state)
{
	size_t	 i;
	char	*s;

	(void)state;
	for (i = 0; i < sizeof(red) / sizeof(red[0]); i++) {
		s = redis_url_redact(red[i].url);
		assert_non_null(s);
		if (strcmp(s, red[i].want) != 0)
			fail_msg("%s -> %s, want %s", red[i].url, s,
			    red[i].want);
		a_free(s);
	}
	s = redis_url_redact(NULL);
	assert_non_null(s);
	a_free(s);
}

static void
test_where(void **state)
{
	struct redis_url	u;
	struct agent_err	err;
	char			buf[128];

	(void)state;
	assert_int_equal(0, redis_url_parse("redis://[::1]:7", &u, &err));
	redis_url_where(&u, buf, sizeof(buf));
	assert_string_equal("[::1]:7", buf);
	redis_url_release(&u);
	assert_int_equal(0, redis_url_parse("redis://:pw@h", &u, &err));
	redis_url_where(&u, buf, sizeof(buf));
	assert_string_equal("h:6379", buf);
	redis_url_release(&u);
	assert_int_equal(0, redis_url_parse("unix:///a/b", &u, &err));
	redis_url_where(&u, buf, sizeof(buf));
	assert_string_equal("unix:/a/b", buf);
	redis_url_release(&u);
}

static void
test_secrets(void **state)
{
	char	out[256];

	(void)state;
	redis_url_register_secrets("redis://u:p%40ssword@h");
	redact("x p@ssword y p%40ssword z", out, sizeof(out));
	assert_null(strstr(out, "ssword"));
	log_clear_secrets();
}

/* Every allocation failure is an error, never a crash or a leak. */
static void
test_oom(void **state)
{
	struct redis_url	u;
	struct agent_err	err;
	long			n;
	int			rc;
	char			*s;

	(void)state;
	for (n = 1; n < 20; n++) {
		alloc_fail_after(n);
		rc = redis_url_parse("unix:///s?user=a&pass=b", &u, &err);
		alloc_fail_after(0);
		if (rc == 0) {
			redis_url_release(&u);
			break;
		}
		assert_int_equal(EXIT_AGENT_SOFTWARE, rc);
	}
	for (n = 1; n < 20; n++) {
		alloc_fail_after(n);
		rc = redis_url_parse("redis://a:b@[::1]:1/2", &u, &err);
		alloc_fail_after(0);
		if (rc == 0) {
			redis_url_release(&u);
			break;
		}
		assert_int_equal(EXIT_AGENT_SOFTWARE, rc);
	}
	alloc_fail_after(1);
	s = redis_url_redact("redis://:x@h");
	alloc_fail_after(0);
	a_free(s);
}

/* The compatibility gate: research/pylon-real.md "The bus" verdicts. */
static void
test_pylon_gate(void **state)
{
	static const struct {
		const char	*url;
		unsigned	 flags;
		const char	*needle;	/* NULL: accepted */
	} c[] = {
		{ "redis://h:6379", 0, NULL },
		{ "redis://u:p@h:6379/3", 0, NULL },
		{ "redis://h?protocol=resp3", 0, NULL },
		{ "redis://h?protocol=resp2", 0, NULL },
		{ "rediss://h", 0, "cannot speak TLS" },
		{ "rediss://h", PYLON_URL_TLS, NULL },
		{ "rediss://h#insecure", PYLON_URL_TLS, NULL },
		{ "rediss://h", PYLON_URL_PROXY, NULL },
		{ "unix:///s", PYLON_URL_TLS, "unix socket" },
		{ "redis+unix:///s", 0, "unix socket" },
		{ "REDIS://h", 0, "upper-case" },
		{ "Rediss://h", PYLON_URL_TLS, "upper-case" },
		{ " redis://h", 0, "whitespace" },
		{ "redis://h\n", 0, "whitespace" },
		{ "redis://h?db=2", 0, "'db' is ignored" },
		{ "redis://h?protocol=3", 0, "protocol=resp3" },
		{ "redis://h?insecure", 0, "?insecure" },
		{ "redis://h#insecure", 0, "rediss:// only" },
		{ "http://h", 0, "unknown scheme" },
		{ "", 0, "empty" },
		{ "redis://:secret@h?pw=secret", 0, "'pw' is ignored" },
	};
	struct agent_err	err;
	size_t			i;
	int			rc;

	(void)state;
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		err_clear(&err);
		rc = redis_url_pylon_check(c[i].url, c[i].flags, &err);
		if (c[i].needle == NULL) {
			if (rc != 0)
				fail_msg("%s refused: %s", c[i].url, err.msg);
			continue;
		}
		if (rc != EXIT_AGENT_CONFIG)
			fail_msg("%s accepted", c[i].url);
		if (strstr(err.msg, c[i].needle) == NULL)
			fail_msg("%s: \"%s\" lacks \"%s\"", c[i].url, err.msg,
			    c[i].needle);
		if (strstr(err.msg, "secret") != NULL)
			fail_msg("%s: message echoes the URL", c[i].url);
	}
	assert_int_equal(EXIT_AGENT_CONFIG, redis_url_pylon_check(NULL, 0,
	    &err));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_long),
		cmocka_unit_test(test_redact),
		cmocka_unit_test(test_where),
		cmocka_unit_test(test_secrets),
		cmocka_unit_test(test_oom),
		cmocka_unit_test(test_pylon_gate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
