/* log.c's secret list: longest match first, and room for rotated tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agent.h"

/* A secret that is a prefix of another must not leave the other's tail:
 * "secret" then "secret-token-xyz" redacted "***-token-xyz". */
static void
test_longest_match_wins(void **state)
{
	char	out[256];

	(void)state;
	log_clear_secrets();
	log_add_secret("secret");
	log_add_secret("secret-token-xyz");
	redact("a secret-token-xyz and a secret.", out, sizeof(out));
	assert_string_equal(out, "a *** and a ***.");
	log_clear_secrets();
}

/* serve re-reads a rotating service-account token: every new token is
 * registered.  With 16 fixed slots the 17th secret was dropped and
 * printed in clear; the first secrets (the Redis password) must stay. */
static void
test_rotated_tokens_keep_being_redacted(void **state)
{
	char	tok[64], in[128], out[128];
	int	i;

	(void)state;
	log_clear_secrets();
	log_add_secret("redis-password");
	for (i = 0; i < 500; i++) {
		snprintf(tok, sizeof(tok), "rotated-token-%04d-abcdef", i);
		log_add_secret(tok);
		snprintf(in, sizeof(in), "echo %s", tok);
		redact(in, out, sizeof(out));
		if (strcmp(out, "echo ***") != 0)
			fail_msg("token %d not redacted: %s", i, out);
	}
	redact("pw redis-password", out, sizeof(out));
	assert_string_equal(out, "pw ***");
	log_clear_secrets();
}

/* issue 21: an echo of the password with a control character, a '?'
 * (what output folds one to) or a colour escape inserted is still the
 * password; a password holding a control character matches its folded
 * form; the match never eats text around the secret. */
static void
test_redaction_looks_through_inserted_controls(void **state)
{
	static const struct {
		const char	*in, *want;
	} cases[] = {
		{ "pw=hunter2xyz", "pw=***" },
		{ "pw=hun\x01ter2xyz", "pw=***" },
		{ "pw=hun?ter2xyz", "pw=***" },
		{ "pw=h\r\nunter2xyz!", "pw=***!" },
		{ "pw=hun\x1b[31mter2\x1b[0mxyz.", "pw=***." },
		{ "pw=hun?[1;31mter2xyz", "pw=***" },
		{ "pw=h\x7fu\x01n\x02t\x03" "er2xyz", "pw=***" },
		/* not the password: text before and after is kept */
		{ "?hunter2xy?", "?hunter2xy?" },
		{ "hunter2xyZ", "hunter2xyZ" },
		{ "?\x01hunter2xyz\x01?", "?\x01***\x01?" },
		/* the secret with a control character, echoed folded */
		{ "tab=ab?cdef", "tab=***" },
		{ "tab=ab\tcdef", "tab=***" },
		/* a '?' of the secret, echoed as a control character that
		 * output folds back to '?' */
		{ "q=wh\x01t-now", "q=***" },
		{ "q=wh?t-now", "q=***" },
	};
	char	out[256];
	size_t	i;

	(void)state;
	log_clear_secrets();
	log_add_secret("hunter2xyz");
	log_add_secret("ab\tcdef");
	log_add_secret("wh?t-now");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		redact(cases[i].in, out, sizeof(out));
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("case %zu: redact(%s) = %s, want %s", i,
			    cases[i].in, out, cases[i].want);
	}
	log_clear_secrets();
}

/* A text log line is one line: \r, \n, ESC and DEL are folded to '?'
 * so a URL or a server's error cannot forge a second line. */
static void
test_fold_controls(void **state)
{
	char	s[] = "bad url\r\n[pylon-agent] info: bus proven\x1b[2K\x7f\t.";

	(void)state;
	fold_controls(s);
	assert_string_equal(s, "bad url??[pylon-agent] info: bus proven?[2K??.");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_longest_match_wins),
		cmocka_unit_test(test_rotated_tokens_keep_being_redacted),
		cmocka_unit_test(test_redaction_looks_through_inserted_controls),
		cmocka_unit_test(test_fold_controls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
