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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_longest_match_wins),
		cmocka_unit_test(test_rotated_tokens_keep_being_redacted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
