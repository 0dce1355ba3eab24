/* Durations, namespace validation, redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "agent.h"

static void
test_durations(void **state)
{
	static const struct { const char *in; long ms; } good[] = {
		{ "500ms", 500 }, { "5s", 5000 }, { "2m", 120000 },
		{ "1h", 3600000 }, { "0s", 0 }, { "60s", 60000 },
	};
	static const char *bad[] = { "", "5", "5x", "s", "-1s", "1.5s",
		"5 s", "5S", "99999999999999999999s", "8000h", "5sm" };
	struct agent_err	err;
	long			ms;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(parse_duration(good[i].in, &ms, &err), 0);
		assert_int_equal(ms, good[i].ms);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_duration(bad[i], &ms, &err) == 0)
			fail_msg("\"%s\" parsed as %ld", bad[i], ms);
		assert_non_null(strstr(err.msg, "500ms"));
	}
	assert_int_not_equal(parse_duration(NULL, &ms, &err), 0);
}

static void
test_namespace(void **state)
{
	char	long_ns[70];

	(void)state;
	assert_true(namespace_valid("pylon"));
	assert_true(namespace_valid("my-app.v2_x"));
	assert_false(namespace_valid(""));
	assert_false(namespace_valid("a b"));
	assert_true(namespace_valid("team:app"));	/* issue 11 */
	assert_false(namespace_valid("redis://:pw@h:6379"));
	assert_false(namespace_valid("a'b"));
	assert_false(namespace_valid("a$b"));
	assert_false(namespace_valid("a\tb"));
	assert_false(namespace_valid("a*"));
	memset(long_ns, 'a', 64);
	long_ns[64] = '\0';
	assert_true(namespace_valid(long_ns));
	long_ns[64] = 'a';
	long_ns[65] = '\0';
	assert_false(namespace_valid(long_ns));
}

static void
test_redact(void **state)
{
	char	out[128];

	(void)state;
	log_clear_secrets();
	log_add_secret("hunter2");
	log_add_secret("hunter2");
	log_add_secret("ab");		/* too short: ignored */
	redact("pw=hunter2 and hunter2!", out, sizeof(out));
	assert_string_equal(out, "pw=*** and ***!");
	redact("ab cd", out, sizeof(out));
	assert_string_equal(out, "ab cd");
	redact("hunter2", out, 3);	/* tiny buffer: no overflow */
	assert_true(strlen(out) < 3);
	log_clear_secrets();
	redact("hunter2", out, sizeof(out));
	assert_string_equal(out, "hunter2");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_namespace),
		cmocka_unit_test(test_redact),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
