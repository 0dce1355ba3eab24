/*
 * The Fly counting rules on raw Machines API JSON, and the token header
 * rule (SPEC 4).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agent.h"

/* fly_auth_header, fly_count: agent.h under -DUNITTEST. */

/* A machine: id, state, metadata object body, extra config members. */
#define M(id, state, meta, extra) \
	"{\"id\":\"" id "\",\"state\":\"" state "\",\"region\":\"ord\"," \
	"\"cordoned\":false,\"host_status\":\"ok\",\"config\":{" \
	"\"env\":{},\"metadata\":{" meta "}" extra "}}"
#define APPG "\"fly_process_group\":\"app\""

struct ccase {
	const char	*name;
	const char	*json;
	const char	*group;
	const char	*self;
	bool		 serving;
	int		 want_rc;
	int		 want_base;
	const char	*want_src;	/* substring of base_src or NULL */
	const char	*want_excl;	/* substring of excluded, "" = empty */
};

static const struct ccase cases[] = {
	{ "empty-list", "[]", "app", NULL, true, 0, 0,
	  "group app: 0 machines", "" },
	{ "empty-list-self-counts", "[]", "app", "s1", true, 0, 1,
	  "this machine s1 not listed yet", "" },
	{ "empty-list-release-self", "[]", "app", "r1", false, 0, 0,
	  "0 machines", "" },
	{ "one", "[" M("a", "started", APPG, "") "]", "app", "a", true, 0, 1,
	  "1 machine (1 started)", "" },
	{ "states", "[" M("a", "started", APPG, "") ","
	  M("b", "stopped", APPG, "") "," M("c", "suspended", APPG, "") ","
	  M("d", "created", APPG, "") "," M("e", "replacing", APPG, "") ","
	  M("f", "starting", APPG, "") "]", "app", "a", true, 0, 6,
	  "6 machines (1 started, 1 stopped, 1 suspended, 1 created, "
	  "1 replacing, 1 starting)", "" },
	{ "dead", "[" M("a", "started", APPG, "") ","
	  M("b", "destroyed", APPG, "") "," M("c", "destroying", APPG, "")
	  "," M("d", "failed", APPG, "") "," M("e", "launch_failed", APPG, "")
	  "]", "app", "a", true, 0, 1, NULL,
	  "2 destroyed/destroying, 2 failed" },
	{ "groups", "[" M("a", "started", APPG, "") ","
	  M("b", "started", "\"fly_process_group\":\"worker\"", "") ","
	  M("c", "started", "\"fly_process_group\":\"cron\"", "") "]",
	  "app", "a", true, 0, 1, NULL, "2 in other groups (worker,cron)" },
	{ "legacy-group", "[" M("a", "started", "\"process_group\":\"app\"", "")
	  "," M("b", "started", "\"process_group\":\"web\"", "") "]", "web",
	  "b", true, 0, 1, "group web: 1 machine", "1 in other groups (app)" },
	{ "no-group-is-app", "[" M("a", "started", "", "") "]", "app", "a",
	  true, 0, 1, NULL, "" },
	{ "env-group", "[{\"id\":\"a\",\"state\":\"started\",\"config\":"
	  "{\"env\":{\"FLY_PROCESS_GROUP\":\"worker\"}}}]", "worker", "a", true,
	  0, 1, NULL, "" },
	{ "reserved", "[" M("a", "started", APPG, "") ","
	  M("r", "started", "\"fly_process_group\":\"fly_app_release_command\"",
	  "") "," M("c", "started", "\"fly_process_group\":\"fly_app_console\"",
	  "") "," M("t", "stopped",
	  "\"fly_process_group\":\"fly_app_test_machine_command\"", "") "]",
	  "app", "a", true, 0, 1, NULL,
	  "1 release_command, 1 console, 1 test_machine" },
	{ "release-env-only", "[{\"id\":\"r\",\"state\":\"started\",\"config\":"
	  "{\"env\":{\"RELEASE_COMMAND\":\"1\"},\"metadata\":{" APPG "}}}]",
	  "app", "x", false, 0, 0, NULL, "1 release_command" },
	{ "canary", "[" M("a", "started", APPG, "") ","
	  M("k", "started", APPG ",\"fly_canary\":\"true\"", "") "]", "app",
	  "a", true, 0, 1, NULL, "1 canary" },
	{ "standby", "[" M("a", "started", APPG, "") ","
	  M("s", "stopped", APPG, ",\"standbys\":[\"a\"]") "]", "app", "a",
	  true, 0, 1, NULL, "1 standby" },
	{ "empty-standbys-counts", "[" M("a", "started", APPG,
	  ",\"standbys\":[]") "]", "app", "a", true, 0, 1, NULL, "" },
	{ "bluegreen", "[" M("b1", "started", APPG, "") ","
	  M("b2", "started", APPG, "") ","
	  M("g1", "started", APPG ",\"fly_bluegreen_deployment_tag\":\"17\"",
	  "") "," M("g2", "started",
	  APPG ",\"fly_bluegreen_deployment_tag\":\"17\"", "") "]", "app",
	  "b1", true, 0, 4, "bluegreen: 2 green + 2 blue counted", "" },
	{ "unreachable", "[" M("a", "started", APPG, "") ","
	  "{\"id\":\"u\",\"state\":\"started\",\"host_status\":\"unreachable\","
	  "\"incomplete_config\":{\"metadata\":{" APPG "}}}]", "app", "a",
	  true, 0, 2, "1 on unreachable hosts", "" },
	{ "unreachable-other-group", "[{\"id\":\"u\",\"state\":\"started\","
	  "\"incomplete_config\":{\"metadata\":{\"fly_process_group\":\"w\"}}}]",
	  "app", NULL, true, 0, 0, NULL, "1 in other groups (w)" },
	{ "top-level-metadata", "[{\"id\":\"a\",\"state\":\"started\","
	  "\"metadata\":{\"fly_process_group\":\"web\"}}]", "web", "a", true,
	  0, 1, NULL, "" },
	{ "malformed-items", "[1,\"x\",{\"state\":\"started\"},"
	  M("a", "started", APPG, "") "]", "app", "a", true, 0, 1, NULL,
	  "3 malformed" },
	{ "not-json", "<html>", "app", NULL, true, EXIT_AGENT_DISCOVERY, 0,
	  NULL, NULL },
	{ "object", "{\"machines\":[]}", "app", NULL, true,
	  EXIT_AGENT_DISCOVERY, 0, NULL, NULL },
	{ "truncated", "[{\"id\":\"a\",\"sta", "app", NULL, true,
	  EXIT_AGENT_DISCOVERY, 0, NULL, NULL },
	{ "hostile-group-name", "[" M("a", "started",
	  "\"fly_process_group\":\"x\\\" y\\n\"", "") "]", "app", NULL, true,
	  0, 0, NULL, "1 in other groups (x??y?)" },
};

static void
test_count_cases(void **state)
{
	const struct ccase	*c;
	struct topology		 t;
	struct agent_err	 err;
	size_t			 i;
	int			 rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = &cases[i];
		memset(&t, 0, sizeof(t));
		err_clear(&err);
		rc = fly_count(c->json, strlen(c->json), "demo", c->group,
		    c->self, c->serving, &t, &err);
		if (rc != c->want_rc)
			fail_msg("%s: rc %d, want %d (%s)", c->name, rc,
			    c->want_rc, err.msg);
		if (rc != 0) {
			assert_true(strstr(err.msg, "fly:") != NULL);
			continue;
		}
		if (t.base != c->want_base)
			fail_msg("%s: base %d, want %d (%s)", c->name, t.base,
			    c->want_base, t.base_src);
		if (c->want_src && strstr(t.base_src, c->want_src) == NULL)
			fail_msg("%s: base_src \"%s\" lacks \"%s\"", c->name,
			    t.base_src, c->want_src);
		if (c->want_excl && *c->want_excl == '\0' &&
		    t.excluded[0] != '\0')
			fail_msg("%s: excluded \"%s\", want empty", c->name,
			    t.excluded);
		if (c->want_excl && *c->want_excl &&
		    strstr(t.excluded, c->want_excl) == NULL)
			fail_msg("%s: excluded \"%s\" lacks \"%s\"", c->name,
			    t.excluded, c->want_excl);
		assert_true(strstr(t.base_src, "fly app demo group ") ==
		    t.base_src);
	}
}

/* Many machines: the bounded strings stay bounded and NUL-terminated. */
static void
test_count_many(void **state)
{
	struct topology		 t;
	struct agent_err	 err;
	char			*buf;
	size_t			 cap = 1 << 20, len = 0;
	int			 i;

	(void)state;
	buf = a_malloc(cap);
	assert_non_null(buf);
	len += snprintf(buf + len, cap - len, "[");
	for (i = 0; i < 500; i++)
		len += snprintf(buf + len, cap - len, "%s{\"id\":\"m%d\","
		    "\"state\":\"state%d\",\"config\":{\"metadata\":{"
		    "\"fly_process_group\":\"%s\"}}}", i ? "," : "", i, i % 20,
		    i % 3 == 0 ? "app" : i % 3 == 1 ? "w" : "longer-group");
	len += snprintf(buf + len, cap - len, "]");
	memset(&t, 0, sizeof(t));
	assert_int_equal(fly_count(buf, len, "demo", "app", NULL, true, &t,
	    &err), 0);
	assert_int_equal(t.base, 167);
	assert_true(strlen(t.base_src) < sizeof(t.base_src));
	assert_non_null(strstr(t.excluded, "333 in other groups "
	    "(w,longer-group)"));
	a_free(buf);
}

struct tcase {
	const char	*token;
	const char	*want;	/* NULL: rejected */
};

static const struct tcase tcases[] = {
	{ "abc", "Bearer abc" },
	{ "Bearer abc", "Bearer abc" },
	{ "FlyV1 fm2_x,fm2_y", "FlyV1 fm2_x,fm2_y" },
	{ "fm1r_abc", "FlyV1 fm1r_abc" },
	{ "fm1a_abc", "FlyV1 fm1a_abc" },
	{ "fm2_abc", "FlyV1 fm2_abc" },
	{ "fm2_a,fm2_b", "FlyV1 fm2_a,fm2_b" },
	{ "plain,fm2_b", "FlyV1 plain,fm2_b" },
	{ "  fm2_abc\n", "FlyV1 fm2_abc" },
	{ "\tabc  ", "Bearer abc" },
	{ "fm3_abc", "Bearer fm3_abc" },
	{ "xfm2_abc", "Bearer xfm2_abc" },
	{ "FlyV1", "Bearer FlyV1" },
	{ "", NULL },
	{ "   ", NULL },
};

static void
test_auth_header(void **state)
{
	char	out[256];
	size_t	i;
	int	rc;

	(void)state;
	for (i = 0; i < sizeof(tcases) / sizeof(tcases[0]); i++) {
		rc = fly_auth_header(tcases[i].token, out, sizeof(out));
		if (tcases[i].want == NULL) {
			if (rc != -1)
				fail_msg("\"%s\": accepted as \"%s\"",
				    tcases[i].token, out);
			continue;
		}
		if (rc != 0 || strcmp(out, tcases[i].want) != 0)
			fail_msg("\"%s\": \"%s\", want \"%s\"",
			    tcases[i].token, rc ? "(rejected)" : out,
			    tcases[i].want);
	}
	assert_int_equal(fly_auth_header(NULL, out, sizeof(out)), -1);
	/* Too small an output buffer is an error, never a truncation. */
	assert_int_equal(fly_auth_header("fm2_abcdef", out, 8), -1);
	/* A line break inside would split the HTTP header: refused. */
	assert_int_equal(fly_auth_header("abc\r\nX-Evil: 1", out,
	    sizeof(out)), -1);
	assert_int_equal(fly_auth_header("Bearer a\nb", out, sizeof(out)), -1);
	/* Surrounding whitespace (a trailing newline) is trimmed, not refused. */
	assert_int_equal(fly_auth_header("tok123\n", out, sizeof(out)), 0);
	assert_string_equal(out, "Bearer tok123");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_count_cases),
		cmocka_unit_test(test_count_many),
		cmocka_unit_test(test_auth_header),
	};

	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
