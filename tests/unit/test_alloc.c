/*
 * Allocation-failure injection, in process: alloc.c's fail-after hook and
 * cJSON routing, then every parser swept with the Nth allocation (and all
 * later ones) failing, for every N up to the parser's allocation count.
 * Each run must fail cleanly (the out-of-memory code and a message naming
 * memory) or succeed with exactly the unfailed result; leaks show under
 * `make asan` (LeakSanitizer) and `make valgrind`.
 * The integration counterpart (whole commands) is
 * tests/integration/test_alloc_failure.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "agent.h"
#include "bus.h"
#include "kube.h"

/* Parsers reachable with -DUNITTEST: fly_count (agent.h). */

/* options.c's file-local struct raw, mirrored (as tests/fuzz/fuzz_config.c). */
enum t_src { T_SRC_DEFAULT, T_SRC_FILE, T_SRC_ENV, T_SRC_FLAG };
struct raw {
	char		*val;
	enum t_src	 src;
	bool		 set;
};
#define T_ROWS	128
int	config_parse(const char *, const char *, size_t, struct raw *,
	    struct agent_err *);

#define SWEEP_MAX	5000

/*
 * One parse under test: returns 0 or an exit code, and renders what it
 * produced into out (for comparing a successful run with the baseline).
 */
typedef int (*parse_fn)(char *out, size_t n, struct agent_err *);

static void
sweep(const char *name, parse_fn fn)
{
	struct agent_err	 err;
	char			 base[4096], got[4096];
	long			 c0, total, n;
	int			 rc, fails = 0, oks = 0;

	alloc_fail_after(0);
	err_clear(&err);
	c0 = alloc_count();
	rc = fn(base, sizeof(base), &err);
	total = alloc_count() - c0;
	if (rc != 0)
		fail_msg("%s: baseline failed: %s", name, err.msg);
	assert_true(total > 0 && total < SWEEP_MAX);
	for (n = 1; n <= total; n++) {
		err_clear(&err);
		got[0] = '\0';
		alloc_fail_after(n);
		rc = fn(got, sizeof(got), &err);
		alloc_fail_after(0);
		if (rc == 0) {
			if (strcmp(got, base) != 0)
				fail_msg("%s: N=%ld: success with a different "
				    "result:\n%s\n!=\n%s", name, n, got, base);
			oks++;
			continue;
		}
		fails++;
		if (rc != EXIT_AGENT_SOFTWARE || strstr(err.msg, "memory") ==
		    NULL)
			fail_msg("%s: N=%ld of %ld: exit %d \"%s\" (an "
			    "allocation failure must be reported as one)",
			    name, n, total, rc, err.msg);
	}
	/* The first allocation failing can never succeed. */
	assert_true(fails > 0);
	print_message("%s: %ld allocations swept: %d failed cleanly, %d "
	    "succeeded identically\n", name, total, fails, oks);
}

/* ---- the hook itself --------------------------------------------------- */

static void
test_fail_after(void **state)
{
	void	*a, *b, *c;

	(void)state;
	alloc_fail_after(3);
	a = a_malloc(8);
	b = a_strdup("x");
	c = a_calloc(1, 8);
	assert_non_null(a);
	assert_non_null(b);
	assert_null(c);			/* the 3rd */
	assert_null(a_malloc(1));	/* and every later one */
	assert_null(a_realloc(NULL, 4));
	alloc_fail_after(0);
	assert_non_null(c = a_malloc(1));
	a_free(a);
	a_free(b);
	a_free(c);
}

static void
test_cjson_routed(void **state)
{
	cJSON	*j;

	(void)state;
	alloc_init_cjson();
	alloc_fail_after(1);
	assert_null(cJSON_Parse("{\"a\":[1,2,3]}"));
	assert_null(cJSON_CreateObject());
	alloc_fail_after(0);
	assert_non_null(j = cJSON_Parse("{\"a\":[1,2,3]}"));
	cJSON_Delete(j);
}

/* ---- the parsers --------------------------------------------------------- */

static int
p_envfile(char *out, size_t n, struct agent_err *err)
{
	static const char text[] = "# pylon-agent 0.1.0 "
	    "2026-11-28T23:00:00Z mode=redis peers=3 source=\"x\"\n"
	    "export PYLON_CLUSTER_BUS='redis://u:it'\\''s@h:1/2'\n"
	    "export PYLON_CLUSTER_NAMESPACE='my-app'\n";
	struct envfile	ef;
	int		rc;

	if ((rc = envfile_parse(text, sizeof(text) - 1, &ef, err)))
		return rc;
	snprintf(out, n, "%s|%s|%s", ef.bus, ef.namespace, ef.mode);
	envfile_release(&ef);
	return 0;
}

static int
p_config(char *out, size_t n, struct agent_err *err)
{
	static const char text[] = "redis-url: redis://h:1/0\n"
	    "namespace: my-app\nreport:\n  - log\n  - events\n"
	    "timeout: 5s\nmin-peers: 2\n";
	static struct raw	raws[T_ROWS];
	size_t			i, o = 0;
	int			rc;

	memset(raws, 0, sizeof(raws));
	rc = config_parse("t.yaml", text, sizeof(text) - 1, raws, err);
	out[0] = '\0';
	for (i = 0; i < T_ROWS; i++) {
		if (rc == 0 && raws[i].set && o < n)
			o += (size_t)snprintf(out + o, n - o, "%zu=%s;", i,
			    raws[i].val);
		a_free(raws[i].val);
	}
	return rc;
}

static int
p_redis_url(char *out, size_t n, struct agent_err *err)
{
	static const char url[] = "rediss://us%40er:p%3Ass@[::1]:6380/3";
	struct redis_url	 u;
	char			*red;
	int			 rc;

	if ((rc = redis_url_parse(url, &u, err)))
		return rc;
	if ((red = redis_url_redact(url)) == NULL) {
		redis_url_release(&u);
		return err_oom(err, "redact");
	}
	snprintf(out, n, "%s|%s|%s|%d|%d|%s", u.user, u.pass, u.host,
	    u.port, u.db, red);
	a_free(red);
	redis_url_release(&u);
	return 0;
}

static int
p_fly(char *out, size_t n, struct agent_err *err)
{
	static const char body[] = "["
	    "{\"id\":\"a1\",\"state\":\"started\",\"config\":{\"metadata\":"
	    "{\"fly_process_group\":\"app\"}}},"
	    "{\"id\":\"a2\",\"state\":\"stopped\",\"config\":{\"metadata\":"
	    "{\"fly_process_group\":\"app\"}}},"
	    "{\"id\":\"w1\",\"state\":\"started\",\"config\":{\"metadata\":"
	    "{\"fly_process_group\":\"worker\"}}}]";
	struct topology	t;
	int		rc;

	memset(&t, 0, sizeof(t));
	if ((rc = fly_count(body, sizeof(body) - 1, "app1", "app", "a1", true,
	    &t, err)))
		return rc;
	snprintf(out, n, "%d|%s|%s", t.base, t.base_src, t.excluded);
	return 0;
}

static int
p_kubeconfig(char *out, size_t n, struct agent_err *err)
{
	static const char text[] = "current-context: dev\n"
	    "contexts:\n- name: dev\n  context: {cluster: c, user: u, "
	    "namespace: apps}\n"
	    "clusters:\n- name: c\n  cluster:\n"
	    "    server: https://127.0.0.1:6443/\n"
	    "    certificate-authority-data: Zm9vYmFy\n"
	    "users:\n- name: u\n  user:\n    token: tok-0123456789\n";
	struct kube_kubeconfig	*kc;
	struct kube_config	 cfg;
	int			 rc;

	memset(&cfg, 0, sizeof(cfg));
	if ((kc = kube_kubeconfig_new()) == NULL)
		return err_oom(err, "kubeconfig");
	rc = kube_kubeconfig_add(kc, text, sizeof(text) - 1, "/nonexistent",
	    "kc", err);
	if (rc == 0)
		rc = kube_kubeconfig_resolve(kc, &cfg, err);
	if (rc == 0)
		snprintf(out, n, "%s|%s|%zu|%s", cfg.server, cfg.namespace,
		    cfg.ca_pem_len, cfg.token);
	kube_config_release(&cfg);
	kube_kubeconfig_free(kc);
	return rc;
}

static int
p_envfile_render(char *out, size_t n, struct agent_err *err)
{
	struct decision	 d;
	char		*s;

	memset(&d, 0, sizeof(d));
	d.mode = MODE_REDIS;
	d.peers = 3;
	snprintf(d.namespace, sizeof(d.namespace), "my-app");
	snprintf(d.reason, sizeof(d.reason), "static replicas=3");
	if ((s = envfile_render(&d, "redis://h:1/0", err)) == NULL)
		return err->code ? err->code : err_oom(err, "render");
	/* The header holds a timestamp: compare the rest. */
	snprintf(out, n, "%s", strchr(s, '\n') ? strchr(s, '\n') : s);
	a_free(s);
	return 0;
}

static void
test_sweep_envfile(void **state)
{
	(void)state;
	sweep("envfile_parse", p_envfile);
	sweep("envfile_render", p_envfile_render);
}

static void
test_sweep_config(void **state)
{
	(void)state;
	sweep("config_parse", p_config);
}

static void
test_sweep_redis_url(void **state)
{
	(void)state;
	sweep("redis_url_parse", p_redis_url);
}

static void
test_sweep_fly(void **state)
{
	(void)state;
	sweep("fly_count", p_fly);
}

static void
test_sweep_kubeconfig(void **state)
{
	(void)state;
	sweep("kubeconfig", p_kubeconfig);
	log_clear_secrets();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fail_after),
		cmocka_unit_test(test_cjson_routed),
		cmocka_unit_test(test_sweep_envfile),
		cmocka_unit_test(test_sweep_config),
		cmocka_unit_test(test_sweep_redis_url),
		cmocka_unit_test(test_sweep_fly),
		cmocka_unit_test(test_sweep_kubeconfig),
	};

	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
