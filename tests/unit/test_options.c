/* The options table: precedence flag > env > file > default, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent.h"

static char	cfg_path[64];

static void
write_cfg(const char *text)
{
	FILE	*fp;

	snprintf(cfg_path, sizeof(cfg_path), "/tmp/pa-test-cfg-%d.yaml",
	    (int)getpid());
	fp = fopen(cfg_path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static int
setup(void **state)
{
	(void)state;
	unsetenv("PYLON_AGENT_NAMESPACE");
	unsetenv("PYLON_AGENT_TIMEOUT");
	unsetenv("PYLON_AGENT_CONFIG");
	unsetenv("PYLON_AGENT_REPLICAS");
	unsetenv("PYLON_AGENT_REPORT");
	unsetenv("FLY_PROCESS_GROUP");
	unsetenv("KUBECONFIG");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (cfg_path[0])
		unlink(cfg_path);
	return setup(state);
}

static int
parse(struct options *o, struct agent_err *err, int argc, char **argv)
{
	bool	help;

	return options_parse(o, CMD_DECIDE, argc, argv, &help, err);
}

static void
test_defaults(void **state)
{
	struct options		o;
	struct agent_err	err;
	char			*argv[] = { "decide", NULL };

	(void)state;
	assert_int_equal(parse(&o, &err, 1, argv), 0);
	assert_string_equal(o.namespace, "pylon");
	assert_int_equal(o.timeout_ms, 60000);
	assert_int_equal(o.interval_ms, 30000);
	assert_int_equal(o.resync_ms, 60000);
	assert_int_equal(o.api_timeout_ms, 10000);
	assert_string_equal(o.listen, "0.0.0.0:4320");
	assert_string_equal(o.env_file, "/pylon-agent/cluster.env");
	assert_string_equal(o.fly_api_url, "http://_api.internal:4280");
	assert_string_equal(o.fly_group, "app");
	assert_int_equal(o.mode, MODE_AUTO);
	assert_int_equal(o.platform, PLATFORM_AUTO);
	assert_int_equal(o.on_discovery_error, DISC_REDIS_IF_CONFIGURED);
	assert_int_equal(o.report, REPORT_LOG);
	assert_int_equal(o.replicas, 1);
	assert_false(o.replicas_set);
	assert_false(o.timeout_set);
	assert_int_equal(o.min_peers, 1);
	assert_null(o.redis_url);
	options_release(&o);
}

static void
test_precedence(void **state)
{
	struct options		o;
	struct agent_err	err;
	char			*argv_flag[] = { "decide", "--namespace",
				    "from-flag", "--config", cfg_path, NULL };
	char			*argv_noflag[] = { "decide", "--config",
				    cfg_path, NULL };

	(void)state;
	write_cfg("namespace: from-file\ntimeout: 7s\nreplicas: 4\n"
	    "report: [log, events]\n");
	setenv("PYLON_AGENT_NAMESPACE", "from-env", 1);
	setenv("PYLON_AGENT_TIMEOUT", "9s", 1);

	assert_int_equal(parse(&o, &err, 5, argv_flag), 0);
	assert_string_equal(o.namespace, "from-flag");	/* flag > env */
	assert_int_equal(o.timeout_ms, 9000);		/* env > file */
	assert_int_equal(o.replicas, 4);		/* file > default */
	assert_true(o.replicas_set);
	/* Only --timeout on the command line counts as "given" (probe and
	 * check keep their short deadlines against an env meant for init). */
	assert_false(o.timeout_set);
	assert_int_equal(o.report, REPORT_LOG | REPORT_EVENTS);
	options_release(&o);

	unsetenv("PYLON_AGENT_NAMESPACE");
	assert_int_equal(parse(&o, &err, 3, argv_noflag), 0);
	assert_string_equal(o.namespace, "from-file");	/* file > default */
	options_release(&o);

	/* The config path itself may come from the environment. */
	setenv("PYLON_AGENT_CONFIG", cfg_path, 1);
	argv_noflag[1] = NULL;
	assert_int_equal(parse(&o, &err, 1, argv_noflag), 0);
	assert_string_equal(o.namespace, "from-file");
	options_release(&o);
}

static void
test_flag_forms(void **state)
{
	struct options		o;
	struct agent_err	err;
	char			*argv[] = { "decide", "--namespace=eq-form",
				    "--count-surge", "--mode", "noop",
				    "--output=json", "--prove=false", NULL };

	(void)state;
	assert_int_equal(parse(&o, &err, 7, argv), 0);
	assert_string_equal(o.namespace, "eq-form");
	assert_true(o.count_surge);
	assert_int_equal(o.mode, MODE_NOOP);
	assert_int_equal(o.output, OUT_JSON);
	assert_false(o.prove);
	assert_false(o.timeout_set);
	options_release(&o);
	{
		char *targv[] = { "decide", "--timeout", "2s", NULL };

		assert_int_equal(parse(&o, &err, 3, targv), 0);
		assert_true(o.timeout_set);
		assert_int_equal(o.timeout_ms, 2000);
		options_release(&o);
	}
}

static void
test_errors(void **state)
{
	struct options		o;
	struct agent_err	err;
	char			*unknown[] = { "decide", "--nope", NULL };
	char			*noval[] = { "decide", "--namespace", NULL };
	char			*badns[] = { "decide", "--namespace", "a b",
				    NULL };
	char			*baddur[] = { "decide", "--timeout", "5", NULL };
	char			*badenum[] = { "decide", "--mode", "maybe",
				    NULL };
	char			*positional[] = { "decide", "extra", NULL };
	char			*cfg[] = { "decide", "--config", cfg_path,
				    NULL };
	char			*missing[] = { "decide", "--config",
				    "/nonexistent/x.yaml", NULL };

	(void)state;
	assert_int_equal(parse(&o, &err, 2, unknown), EXIT_AGENT_USAGE);
	assert_non_null(strstr(err.msg, "--nope"));
	options_release(&o);
	assert_int_equal(parse(&o, &err, 2, noval), EXIT_AGENT_USAGE);
	options_release(&o);
	assert_int_equal(parse(&o, &err, 3, badns), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "namespace"));
	options_release(&o);
	assert_int_equal(parse(&o, &err, 3, baddur), EXIT_AGENT_USAGE);
	assert_non_null(strstr(err.msg, "--timeout"));
	options_release(&o);
	assert_int_equal(parse(&o, &err, 3, badenum), EXIT_AGENT_USAGE);
	options_release(&o);
	assert_int_equal(parse(&o, &err, 2, positional), EXIT_AGENT_USAGE);
	options_release(&o);

	setenv("PYLON_AGENT_TIMEOUT", "soon", 1);
	assert_int_equal(parse(&o, &err, 1, unknown), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "PYLON_AGENT_TIMEOUT"));
	options_release(&o);
	unsetenv("PYLON_AGENT_TIMEOUT");

	write_cfg("namespace: ok\nbogus-key: 1\n");
	assert_int_equal(parse(&o, &err, 3, cfg), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "bogus-key"));
	options_release(&o);

	write_cfg("namespace: [unclosed\n");
	assert_int_equal(parse(&o, &err, 3, cfg), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "YAML"));
	options_release(&o);

	write_cfg("nested:\n  a: b\n");
	assert_int_equal(parse(&o, &err, 3, cfg), EXIT_AGENT_CONFIG);
	options_release(&o);

	write_cfg("timeout: forever\n");
	assert_int_equal(parse(&o, &err, 3, cfg), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "key timeout"));
	options_release(&o);

	assert_int_equal(parse(&o, &err, 3, missing), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "/nonexistent/x.yaml"));
	options_release(&o);
}

static void
test_fly_group_default(void **state)
{
	struct options		o;
	struct agent_err	err;
	char			*argv[] = { "decide", NULL };

	(void)state;
	setenv("FLY_PROCESS_GROUP", "web", 1);
	assert_int_equal(parse(&o, &err, 1, argv), 0);
	assert_string_equal(o.fly_group, "web");
	options_release(&o);
	setenv("FLY_PROCESS_GROUP", "fly_app_release_command", 1);
	assert_int_equal(parse(&o, &err, 1, argv), 0);
	assert_string_equal(o.fly_group, "app");
	options_release(&o);
}

static void
test_redis_url_file(void **state)
{
	struct options		o;
	struct agent_err	err;
	char			*argv[] = { "decide", "--redis-url-file",
				    cfg_path, NULL };
	char			*both[] = { "decide", "--redis-url-file",
				    cfg_path, "--redis-url", "redis://x", NULL };

	(void)state;
	write_cfg("redis://user:pa55word@redis:6379/2\n");
	assert_int_equal(parse(&o, &err, 3, argv), 0);
	assert_string_equal(o.redis_url, "redis://user:pa55word@redis:6379/2");
	options_release(&o);
	assert_int_equal(parse(&o, &err, 5, both), EXIT_AGENT_CONFIG);
	options_release(&o);
	write_cfg("\n");
	assert_int_equal(parse(&o, &err, 3, argv), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "empty"));
	options_release(&o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_precedence, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_flag_forms, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fly_group_default, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_redis_url_file, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
