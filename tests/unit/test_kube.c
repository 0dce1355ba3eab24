/* kube.c's pure pieces: label selectors, IntOrString surge, the one-line
 * messages made from API Status bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "kube.h"

static int
match(const char *sel, const char *labels_json)
{
	struct agent_err	 err = { 0 };
	cJSON			*l = cJSON_Parse(labels_json);
	int			 m;

	assert_non_null(l);
	m = kube_selector_match(sel, l, &err);
	if (m < 0)
		assert_non_null(strstr(err.msg, "not a valid label selector"));
	cJSON_Delete(l);
	return m;
}

static void
test_selector(void **state)
{
	const char	*l = "{\"app\":\"chat\",\"color\":\"blue\","
	    "\"app.kubernetes.io/instance\":\"chat\"}";

	(void)state;
	assert_int_equal(1, match("app=chat", l));
	assert_int_equal(1, match("app==chat", l));
	assert_int_equal(0, match("app=billing", l));
	assert_int_equal(1, match("app!=billing", l));
	assert_int_equal(1, match("tier!=db", l));	/* absent key */
	assert_int_equal(1, match("app.kubernetes.io/instance=chat", l));
	assert_int_equal(1, match("app=chat,color=blue", l));
	assert_int_equal(0, match("app=chat,color=green", l));
	assert_int_equal(1, match(" app = chat , color in (green, blue) ", l));
	assert_int_equal(0, match("color in (green)", l));
	assert_int_equal(1, match("color notin (green)", l));
	assert_int_equal(0, match("color notin (blue,green)", l));
	assert_int_equal(1, match("tier notin (db)", l));
	assert_int_equal(1, match("color", l));
	assert_int_equal(0, match("tier", l));
	assert_int_equal(1, match("!tier", l));
	assert_int_equal(0, match("!color", l));
	assert_int_equal(1, match("app in (chat),!canary,color", l));
	assert_int_equal(0, match("app=", l));
	/* malformed */
	assert_int_equal(-1, match("", l));
	assert_int_equal(-1, match("app in chat", l));
	assert_int_equal(-1, match("app in (chat", l));
	assert_int_equal(-1, match("=chat", l));
	assert_int_equal(-1, match("app=chat extra", l));
	assert_int_equal(-1, match("app in (a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q)",
	    l));
	/* no labels at all */
	assert_int_equal(0, match("app=chat", "{}"));
	assert_int_equal(1, match("!app", "{}"));
}

static int
surge(const char *json, int replicas)
{
	cJSON	*v = json ? cJSON_Parse(json) : NULL;
	int	 s = kube_surge_resolve(v, replicas);

	cJSON_Delete(v);
	return s;
}

static void
test_surge(void **state)
{
	(void)state;
	assert_int_equal(1, surge(NULL, 1));		/* default 25% */
	assert_int_equal(1, surge(NULL, 3));
	assert_int_equal(3, surge(NULL, 10));		/* 2.5 rounds up */
	assert_int_equal(0, surge(NULL, 0));
	assert_int_equal(1, surge("\"25%\"", 1));
	assert_int_equal(2, surge("\"50%\"", 3));
	assert_int_equal(3, surge("\"100%\"", 3));
	assert_int_equal(0, surge("\"0%\"", 3));
	assert_int_equal(2, surge("2", 3));
	assert_int_equal(0, surge("0", 3));
	assert_int_equal(1, surge("\"1%\"", 1));
	assert_int_equal(-1, surge("\"2\"", 3));	/* no % */
	assert_int_equal(-1, surge("\"abc\"", 3));
	assert_int_equal(-1, surge("\"-5%\"", 3));
	assert_int_equal(-1, surge("-1", 3));
	assert_int_equal(-1, surge("1.5", 3));
	assert_int_equal(-1, surge("true", 3));
	assert_int_equal(1, surge("null", 3));
}

static void
expect_status(long code, const char *body, const char *verb,
    const char *group, const char *res, const char *name,
    const char *needle)
{
	struct agent_err	err = { 0 };

	assert_int_equal(EXIT_AGENT_DISCOVERY, kube_status_error(code, body,
	    verb, group, res, name, "prod", &err));
	if (strstr(err.msg, needle) == NULL)
		fail_msg("\"%s\" not in \"%s\"", needle, err.msg);
	assert_null(strchr(err.msg, '\n'));
}

static void
test_status(void **state)
{
	(void)state;
	expect_status(403, "{\"kind\":\"Status\",\"apiVersion\":\"v1\","
	    "\"status\":\"Failure\",\"message\":\"deployments.apps \\\"chat\\\""
	    " is forbidden: User \\\"system:serviceaccount:prod:pylon\\\" "
	    "cannot get resource \\\"deployments\\\" in API group \\\"apps\\\" "
	    "in the namespace \\\"prod\\\"\",\"reason\":\"Forbidden\","
	    "\"details\":{\"name\":\"chat\",\"group\":\"apps\",\"kind\":"
	    "\"deployments\"},\"code\":403}", "get", "apps", "deployments",
	    "chat", "add to the Role: {apiGroups: [\"apps\"], resources: "
	    "[\"deployments\"], verbs: [\"get\"]}");
	expect_status(403, "{\"message\":\"x\"}", "list", "", "pods", NULL,
	    "{apiGroups: [\"\"], resources: [\"pods\"], verbs: [\"list\"]}");
	expect_status(403, "not json", "create", "events.k8s.io", "events",
	    NULL, "forbidden to create events.events.k8s.io");
	expect_status(401, "{\"kind\":\"Status\",\"message\":\"Unauthorized\","
	    "\"reason\":\"Unauthorized\",\"code\":401}", "get", "", "pods",
	    "p", "401 Unauthorized: the API server rejected the token");
	expect_status(404, "{\"message\":\"pods \\\"p\\\" not found\"}", "get",
	    "", "pods", "p", "pods/p not found in namespace \"prod\"");
	expect_status(404, "{\"message\":\"the server could not find the "
	    "requested resource\"}", "get", "argoproj.io", "rollouts", "r",
	    "does not serve rollouts.argoproj.io");
	expect_status(429, "{}", "get", "", "pods", "p", "429");
	expect_status(500, "{\"message\":\"etcd\\u0000\\nboom\","
	    "\"reason\":\"InternalError\"}", "get", "apps", "replicasets",
	    "rs", "HTTP 500 InternalError: etcd");
	expect_status(422, NULL, "create", "events.k8s.io", "events", NULL,
	    "HTTP 422");
	/* secrets in a server message are redacted */
	log_add_secret("hunter2");
	expect_status(400, "{\"message\":\"bad token hunter2\"}", "get", "",
	    "pods", "p", "bad token ***");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_selector),
		cmocka_unit_test(test_surge),
		cmocka_unit_test(test_status),
	};

	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
