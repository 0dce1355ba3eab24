/* Table-driven tests of the pure decision function. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agent.h"

struct dcase {
	const char	*name;
	int		 base, hpa, colours, surge;
	bool		 count_surge;
	int		 min_peers;
	enum bus_mode	 forced;
	const char	*url;
	int		 want_rc, want_peers;
	enum bus_mode	 want_mode;
	const char	*want_in_reason;	/* substring, or NULL */
};

static const struct dcase cases[] = {
	{ "single", 1, 0, 0, 0, false, 1, MODE_AUTO, NULL, 0, 1, MODE_NOOP,
	  "deployment/pylon replicas=1" },
	{ "three", 3, 0, 0, 0, false, 1, MODE_AUTO, "redis://r", 0, 3,
	  MODE_REDIS, "replicas=3" },
	{ "three-no-url", 3, 0, 0, 0, false, 1, MODE_AUTO, NULL,
	  EXIT_AGENT_CONFIG, 3, MODE_REDIS, NULL },
	{ "hpa-max-wins", 2, 10, 0, 0, false, 1, MODE_AUTO, "redis://r", 0,
	  10, MODE_REDIS, "hpa/pylon max=10" },
	{ "hpa-below-replicas", 4, 3, 0, 0, false, 1, MODE_AUTO, "redis://r",
	  0, 4, MODE_REDIS, NULL },
	{ "hpa-lifts-single", 1, 2, 0, 0, false, 1, MODE_AUTO, "redis://r", 0,
	  2, MODE_REDIS, NULL },
	{ "colours-add", 2, 0, 2, 0, false, 1, MODE_AUTO, "redis://r", 0, 4,
	  MODE_REDIS, "+ deployment/pylon-green" },
	{ "colour-lifts-single", 1, 0, 1, 0, false, 1, MODE_AUTO, "redis://r",
	  0, 2, MODE_REDIS, NULL },
	{ "surge-not-counted", 1, 0, 0, 1, false, 1, MODE_AUTO, NULL, 0, 1,
	  MODE_NOOP, "not counted: --count-surge" },
	{ "surge-counted", 1, 0, 0, 1, true, 1, MODE_AUTO, "redis://r", 0, 2,
	  MODE_REDIS, "+ surge 1" },
	{ "min-peers-floor", 0, 0, 0, 0, false, 2, MODE_AUTO, "redis://r", 0,
	  2, MODE_REDIS, "min-peers=2" },
	{ "forced-noop", 5, 0, 0, 0, false, 1, MODE_NOOP, NULL, 0, 5,
	  MODE_NOOP, "forced by --mode noop" },
	{ "forced-redis", 1, 0, 0, 0, false, 1, MODE_REDIS, "redis://r", 0, 1,
	  MODE_REDIS, "forced by --mode redis" },
	{ "forced-redis-no-url", 1, 0, 0, 0, false, 1, MODE_REDIS, NULL,
	  EXIT_AGENT_CONFIG, 1, MODE_REDIS, NULL },
};

static void
fill(const struct dcase *c, struct topology *t, struct options *o)
{
	memset(t, 0, sizeof(*t));
	memset(o, 0, sizeof(*o));
	strcpy(t->platform, "kubernetes");
	strcpy(t->instance, "pylon-abc");
	t->base = c->base;
	snprintf(t->base_src, sizeof(t->base_src),
	    "deployment/pylon replicas=%d", c->base);
	t->hpa_max = c->hpa;
	snprintf(t->hpa_src, sizeof(t->hpa_src), "hpa/pylon max=%d", c->hpa);
	t->colours = c->colours;
	snprintf(t->colours_src, sizeof(t->colours_src),
	    "deployment/pylon-green replicas=%d", c->colours);
	t->surge = c->surge;
	strcpy(t->surge_src, "maxSurge=25%");
	o->count_surge = c->count_surge;
	o->min_peers = c->min_peers;
	o->mode = c->forced;
	o->namespace = (char *)"my-app";
	o->redis_url = (char *)c->url;
}

static void
test_table(void **state)
{
	struct topology		t;
	struct options		o;
	struct decision		d;
	struct agent_err	err;
	size_t			i;
	int			rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct dcase *c = &cases[i];

		fill(c, &t, &o);
		err_clear(&err);
		rc = decide(&t, &o, &d, &err);
		if (rc != c->want_rc || d.peers != c->want_peers ||
		    d.mode != c->want_mode || (c->want_in_reason &&
		    strstr(d.reason, c->want_in_reason) == NULL))
			fail_msg("case %s: rc=%d peers=%d mode=%d reason=%s "
			    "err=%s", c->name, rc, d.peers, d.mode, d.reason,
			    err.msg);
		assert_string_equal(d.channel, "my-app:cluster:bus");
		assert_string_equal(d.namespace, "my-app");
		if (rc == EXIT_AGENT_CONFIG)
			assert_non_null(strstr(err.msg, "Redis URL"));
	}
}

static void
test_no_url_message_names_count_and_source(void **state)
{
	struct topology		t;
	struct options		o;
	struct decision		d;
	struct agent_err	err;

	(void)state;
	fill(&cases[2], &t, &o);
	assert_int_equal(decide(&t, &o, &d, &err), EXIT_AGENT_CONFIG);
	assert_non_null(strstr(err.msg, "3 peers"));
	assert_non_null(strstr(err.msg, "deployment/pylon replicas=3"));
}

static void
test_excluded_in_reason(void **state)
{
	struct topology		t;
	struct options		o;
	struct decision		d;
	struct agent_err	err;

	(void)state;
	fill(&cases[0], &t, &o);
	strcpy(t.excluded, "1 standby, 2 destroyed");
	assert_int_equal(decide(&t, &o, &d, &err), 0);
	assert_non_null(strstr(d.reason, "not counted: 1 standby, 2 destroyed"));
}

static void
test_discovery_policies(void **state)
{
	struct options		o;
	struct decision		d;
	struct agent_err	why, err;

	(void)state;
	memset(&o, 0, sizeof(o));
	o.namespace = (char *)"pylon";
	o.min_peers = 1;
	err_set(&why, EXIT_AGENT_DISCOVERY, "GET pods/x: 503");

	o.on_discovery_error = DISC_FAIL;
	assert_int_equal(decide_discovery_failed(&o, "kubernetes", &why, &d,
	    &err), EXIT_AGENT_DISCOVERY);
	assert_non_null(strstr(err.msg, "503"));

	o.on_discovery_error = DISC_NOOP;
	assert_int_equal(decide_discovery_failed(&o, "kubernetes", &why, &d,
	    &err), 0);
	assert_int_equal(d.mode, MODE_NOOP);
	assert_true(d.discovery_failed);

	o.on_discovery_error = DISC_REDIS_IF_CONFIGURED;
	assert_int_equal(decide_discovery_failed(&o, "kubernetes", &why, &d,
	    &err), 0);
	assert_int_equal(d.mode, MODE_NOOP);
	o.redis_url = (char *)"redis://r";
	assert_int_equal(decide_discovery_failed(&o, "kubernetes", &why, &d,
	    &err), 0);
	assert_int_equal(d.mode, MODE_REDIS);
	assert_non_null(strstr(d.reason, "discovery failed"));

	/* A forced mode needs no topology, whatever the policy. */
	o.on_discovery_error = DISC_FAIL;
	o.mode = MODE_NOOP;
	assert_int_equal(decide_discovery_failed(&o, "kubernetes", &why, &d,
	    &err), 0);
	assert_int_equal(d.mode, MODE_NOOP);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_no_url_message_names_count_and_source),
		cmocka_unit_test(test_excluded_in_reason),
		cmocka_unit_test(test_discovery_policies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
