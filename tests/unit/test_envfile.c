/* Env file: quoting, rendering, strict reading, atomic write. */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent.h"

static void
mkdecision(struct decision *d, enum bus_mode m, const char *ns)
{
	memset(d, 0, sizeof(*d));
	d->mode = m;
	d->peers = m == MODE_REDIS ? 3 : 1;
	snprintf(d->namespace, sizeof(d->namespace), "%s", ns);
	snprintf(d->reason, sizeof(d->reason), "deployment/\"pylon\"\nx=3");
}

static void
test_quote(void **state)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "plain", "'plain'" },
		{ "it's", "'it'\\''s'" },
		{ "a \"b\" $c `d` \\e", "'a \"b\" $c `d` \\e'" },
		{ "", "''" },
	};
	size_t	 i;
	char	*q;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		q = shell_quote(cases[i].in);
		assert_non_null(q);
		assert_string_equal(q, cases[i].out);
		a_free(q);
	}
	assert_null(shell_quote("line\nbreak"));
	assert_null(shell_quote("cr\r"));
}

static void
roundtrip(const char *url, const char *ns)
{
	struct decision		d;
	struct envfile		ef;
	struct agent_err	err;
	char			*text;

	mkdecision(&d, url ? MODE_REDIS : MODE_NOOP, ns);
	text = envfile_render(&d, url, &err);
	assert_non_null(text);
	/* The header stays one line whatever the reason holds. */
	assert_non_null(strstr(text, "source=\"deployment/'pylon' x=3\"\n"));
	assert_int_equal(envfile_parse(text, strlen(text), &ef, &err), 0);
	if (url) {
		assert_non_null(ef.bus);
		assert_string_equal(ef.bus, url);
		assert_string_equal(ef.mode, "redis");
	} else {
		assert_null(ef.bus);
		assert_non_null(strstr(text, "\nunset PYLON_CLUSTER_BUS\n"));
		assert_string_equal(ef.mode, "noop");
	}
	assert_string_equal(ef.namespace, ns);
	envfile_release(&ef);
	a_free(text);
}

static void
test_roundtrip(void **state)
{
	(void)state;
	roundtrip("redis://default:secret@redis:6379/0", "my-app");
	roundtrip("redis://u:p%27q%22%24%20x@h:1/3", "a.b_c-d");
	roundtrip("redis://u:it's'\"$x y`z@h", "ns");
	roundtrip(NULL, "pylon");
}

static void
test_render_rejects_newline(void **state)
{
	struct decision		d;
	struct agent_err	err;

	(void)state;
	mkdecision(&d, MODE_REDIS, "ns");
	err_clear(&err);
	assert_null(envfile_render(&d, "redis://h\nexport X=1", &err));
	assert_int_equal(err.code, EXIT_AGENT_CONFIG);
	assert_null(strstr(err.msg, "export X"));
}

static void
test_parse_rejects(void **state)
{
	static const char *bad[] = {
		"",					/* nothing set */
		"export PYLON_CLUSTER_NAMESPACE='x'\n",	/* no bus line */
		"unset PYLON_CLUSTER_BUS\n",		/* no namespace */
		"unset PYLON_CLUSTER_BUS\nexport PYLON_CLUSTER_NAMESPACE=x\n",
		"unset PYLON_CLUSTER_BUS\nexport PYLON_CLUSTER_NAMESPACE='x\n",
		"unset PYLON_CLUSTER_BUS\nexport PYLON_CLUSTER_NAMESPACE='x'y\n",
		"unset PYLON_CLUSTER_BUS\nexport PYLON_CLUSTER_NAMESPACE='a b'\n",
		"unset PYLON_CLUSTER_BUS\nexport PYLON_CLUSTER_NAMESPACE='x'\n"
		    "rm -rf /\n",
		"export PYLON_CLUSTER_BUS='redis://u:pw@h'\n"
		    "export LD_PRELOAD='/x.so'\n",
	};
	struct envfile		ef;
	struct agent_err	err;
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err_clear(&err);
		if (envfile_parse(bad[i], strlen(bad[i]), &ef, &err) == 0)
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(err.code, EXIT_AGENT_CONFIG);
		assert_null(strstr(err.msg, "pw@"));
		assert_null(ef.bus);
	}
	/* A NUL byte inside. */
	assert_int_not_equal(envfile_parse("unset\0x", 7, &ef, &err), 0);
}

static void
test_write_atomic_0600(void **state)
{
	struct decision		d;
	struct envfile		ef;
	struct agent_err	err;
	struct stat		st;
	char			dir[] = "/tmp/pa-envfile-XXXXXX", path[64];

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cluster.env", dir);
	mkdecision(&d, MODE_REDIS, "my-app");
	umask(022);
	assert_int_equal(envfile_write(path, &d, "redis://:pw@h:6379", &err),
	    0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(envfile_read(path, &ef, &err), 0);
	assert_string_equal(ef.bus, "redis://:pw@h:6379");
	envfile_release(&ef);
	/* Overwrite in place (rename over the old file). */
	mkdecision(&d, MODE_NOOP, "my-app");
	assert_int_equal(envfile_write(path, &d, NULL, &err), 0);
	assert_int_equal(envfile_read(path, &ef, &err), 0);
	assert_null(ef.bus);
	envfile_release(&ef);
	unlink(path);
	rmdir(dir);
	/* A missing directory is a clear error, not a crash. */
	assert_int_equal(envfile_write("/nonexistent-dir/x.env", &d, NULL,
	    &err), EXIT_AGENT_CANTCREAT);
	assert_non_null(strstr(err.msg, "/nonexistent-dir"));
	assert_int_equal(envfile_read("/nonexistent-dir/x.env", &ef, &err),
	    EXIT_AGENT_CONFIG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_render_rejects_newline),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_write_atomic_0600),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
