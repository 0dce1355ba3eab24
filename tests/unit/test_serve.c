/* serve's pure pieces: probe predicates, /status JSON, /metrics text,
 * the histogram, NUMSUB judgement, --listen parsing, exit statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "serve.h"

static void
snap_redis(struct serve_snap *s)
{
	serve_snap_init(s);
	s->decided = s->started = s->proven = s->bus_ok = true;
	s->start_mode = MODE_REDIS;
	s->dec.mode = MODE_REDIS;
	s->dec.peers = 3;
	snprintf(s->dec.reason, sizeof(s->dec.reason),
	    "deployment/pylon replicas=3");
	snprintf(s->dec.platform, sizeof(s->dec.platform), "kubernetes");
	snprintf(s->dec.namespace, sizeof(s->dec.namespace), "my-app");
	snprintf(s->dec.channel, sizeof(s->dec.channel), "my-app:cluster:bus");
	snprintf(s->dec.instance, sizeof(s->dec.instance), "pylon-abc");
	snprintf(s->redis_url, sizeof(s->redis_url),
	    "redis://default:***@redis:6379/0");
	s->latency_ms = 1.8;
	s->numsub = 6;
}

static void
test_probes(void **state)
{
	struct serve_snap s;
	char r[1024];

	(void)state;
	serve_snap_init(&s);
	assert_int_equal(serve_startup(&s, r, sizeof(r)), 503);
	assert_non_null(strstr(r, "discovering"));
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 503);
	assert_int_equal(serve_liveness(&s, 0, r, sizeof(r)), 200);

	s.decided = true;
	s.start_mode = MODE_REDIS;
	snprintf(s.phase, sizeof(s.phase), "proving the bus");
	snprintf(s.bus_error, sizeof(s.bus_error), "connection refused");
	assert_int_equal(serve_startup(&s, r, sizeof(r)), 503);
	assert_string_equal(r, "starting: proving the bus: connection "
	    "refused");
	assert_false(serve_bus_ready(&s));

	snap_redis(&s);
	assert_int_equal(serve_startup(&s, r, sizeof(r)), 200);
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 200);
	assert_true(serve_bus_ready(&s));

	/* Failures below the threshold keep it ready: bus_ok is the
	 * loop's verdict after SERVE_FAILS_UNREADY. */
	s.consecutive_failures = 2;
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 200);
	s.consecutive_failures = 3;
	s.bus_ok = false;
	snprintf(s.bus_error, sizeof(s.bus_error), "PING: timeout");
	/* --on-bus-loss report (the default): reported, still ready. */
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 200);
	assert_false(serve_bus_ready(&s));
	s.unready_on_bus_loss = true;
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 503);
	assert_string_equal(r, "bus check failed 3 times in a row: PING: "
	    "timeout");
	assert_null(strchr(r, '\n'));

	snap_redis(&s);
	s.drift = true;
	snprintf(s.drift_msg, sizeof(s.drift_msg), "wants noop");
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 200);
	s.unready_on_drift = true;
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 503);
	assert_non_null(strstr(r, "drift"));

	s.shutting_down = true;
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 503);
	assert_string_equal(r, "shutting down");
	assert_int_equal(serve_liveness(&s, 0, r, sizeof(r)), 200);

	/* A wedged loop fails liveness. */
	s.heartbeat_ms = 1000;
	s.stale_ms = 5000;
	assert_int_equal(serve_liveness(&s, 5999, r, sizeof(r)), 200);
	assert_int_equal(serve_liveness(&s, 6001, r, sizeof(r)), 503);

	/* noop needs no proof. */
	serve_snap_init(&s);
	s.decided = s.started = true;
	s.start_mode = MODE_NOOP;
	assert_true(serve_bus_ready(&s));
	assert_int_equal(serve_readiness(&s, r, sizeof(r)), 200);
}

static void
test_status_json(void **state)
{
	struct serve_snap s;
	cJSON *o, *r;
	char *txt;

	(void)state;
	snap_redis(&s);
	txt = serve_status_json(&s);
	assert_non_null(txt);
	o = cJSON_Parse(txt);
	assert_non_null(o);
	assert_string_equal(cJSON_GetObjectItem(o, "mode")->valuestring,
	    "redis");
	assert_int_equal(cJSON_GetObjectItem(o, "peers")->valueint, 3);
	assert_string_equal(cJSON_GetObjectItem(o, "channel")->valuestring,
	    "my-app:cluster:bus");
	assert_string_equal(cJSON_GetObjectItem(o, "instance")->valuestring,
	    "pylon-abc");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(o, "drift")));
	assert_string_equal(cJSON_GetObjectItem(o, "version")->valuestring,
	    AGENT_VERSION);
	r = cJSON_GetObjectItem(o, "redis");
	assert_non_null(r);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "proven")));
	assert_true(cJSON_GetObjectItem(r, "latency_ms")->valuedouble == 1.8);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(r, "error")));
	assert_string_equal(cJSON_GetObjectItem(r, "url")->valuestring,
	    "redis://default:***@redis:6379/0");
	/* The SPEC keys in the SPEC order, plus adopted_from_init and the
	 * steady-state health (healthy, consecutive_failures,
	 * check_failures_total, subscribers, subscribers_state),
	 * discovery_failed as decide shows it (one writer, issue 14), and
	 * last this pod's own Pylon (issue 20). */
	assert_string_equal(o->child->string, "mode");
	assert_int_equal(cJSON_GetArraySize(o), 13);
	assert_string_equal(cJSON_GetArrayItem(o, 9)->string, "discovery_failed");
	assert_string_equal(cJSON_GetArrayItem(o, 12)->string, "own_pylon");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(o,
	    "own_pylon"), "state")));
	assert_int_equal(cJSON_GetArraySize(r), 9);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "healthy")));
	cJSON_Delete(o);
	a_free(txt);

	/* Before the decision: nulls, never garbage. */
	serve_snap_init(&s);
	txt = serve_status_json(&s);
	o = cJSON_Parse(txt);
	assert_non_null(o);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "mode")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "peers")));
	assert_string_equal(cJSON_GetObjectItem(o, "reason")->valuestring,
	    "discovering the topology");
	cJSON_Delete(o);
	a_free(txt);
}

static void
test_status_redacts_error(void **state)
{
	struct serve_snap s;
	char *txt;

	(void)state;
	log_add_secret("hunter2-secret");
	snap_redis(&s);
	snprintf(s.bus_error, sizeof(s.bus_error),
	    "AUTH as default with hunter2-secret failed");
	txt = serve_status_json(&s);
	assert_non_null(txt);
	assert_null(strstr(txt, "hunter2"));
	assert_non_null(strstr(txt, "***"));
	a_free(txt);
	log_clear_secrets();
}

static const char *
metric_line(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = strlen(prefix);

	while (p != NULL && *p != '\0') {
		if (strncmp(p, prefix, n) == 0)
			return p + n;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return NULL;
}

static void
test_metrics_text(void **state)
{
	struct serve_snap s;
	char *txt;
	size_t len;
	const char *v;

	(void)state;
	snap_redis(&s);
	serve_hist_observe(&s, 0.0003);
	serve_hist_observe(&s, 0.002);
	serve_hist_observe(&s, 9.0);
	s.check_failures_total = 4;
	s.discovery_errors_total = 2;
	txt = serve_metrics_text(&s, &len);
	assert_non_null(txt);
	assert_int_equal(strlen(txt), len);
	assert_true(len > 0 && txt[len - 1] == '\n');
	assert_non_null(strstr(txt, "# TYPE pylon_agent_bus_check_seconds "
	    "histogram\n"));
	v = metric_line(txt, "pylon_agent_bus_mode{mode=\"redis\"} ");
	assert_non_null(v);
	assert_int_equal(atoi(v), 1);
	v = metric_line(txt, "pylon_agent_bus_mode{mode=\"noop\"} ");
	assert_int_equal(atoi(v), 0);
	assert_int_equal(atoi(metric_line(txt, "pylon_agent_peers ")), 3);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_subscribers ")), 6);
	/* Buckets are cumulative and +Inf equals the count. */
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_check_seconds_bucket{le=\"0.0005\"} ")), 1);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_check_seconds_bucket{le=\"0.0025\"} ")), 2);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_check_seconds_bucket{le=\"2.5\"} ")), 2);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_check_seconds_bucket{le=\"+Inf\"} ")), 3);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_check_seconds_count ")), 3);
	assert_true(atof(metric_line(txt,
	    "pylon_agent_bus_check_seconds_sum ")) > 9.0);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_bus_check_failures_total ")), 4);
	assert_int_equal(atoi(metric_line(txt,
	    "pylon_agent_discovery_errors_total ")), 2);
	assert_non_null(metric_line(txt, "pylon_agent_build_info{version=\""
	    AGENT_VERSION "\""));
	a_free(txt);

	/* Unknown NUMSUB: the family is declared, the sample absent. */
	s.numsub = -1;
	txt = serve_metrics_text(&s, &len);
	assert_null(metric_line(txt, "pylon_agent_bus_subscribers "));
	assert_non_null(strstr(txt, "# TYPE pylon_agent_bus_subscribers "));
	a_free(txt);
}

static void
test_metrics_oom(void **state)
{
	struct serve_snap s;
	size_t len;
	char *txt;
	long n;

	(void)state;
	snap_redis(&s);
	/* Every allocation failing in turn gives NULL, never a crash. */
	for (n = 1; n < 8; n++) {
		alloc_fail_after(n);
		txt = serve_metrics_text(&s, &len);
		alloc_fail_after(0);
		a_free(txt);
		alloc_fail_after(n);
		txt = serve_status_json(&s);
		alloc_fail_after(0);
		a_free(txt);
	}
}

static void
test_numsub(void **state)
{
	(void)state;
	/* (numsub, peers, expected running, low readings in a row) */
	assert_int_equal(serve_numsub_judge(-1, 3, 3, 0), NUMSUB_UNKNOWN);
	assert_int_equal(serve_numsub_judge(3, 3, 3, 0), NUMSUB_OK);
	assert_int_equal(serve_numsub_judge(4, 3, 3, 0), NUMSUB_OVER);
	/* One low reading is a rollout's churn; two in a row are deaf. */
	assert_int_equal(serve_numsub_judge(2, 3, 3, 1), NUMSUB_OK);
	assert_int_equal(serve_numsub_judge(2, 3, 3, 2), NUMSUB_UNDER);
	assert_int_equal(serve_numsub_judge(0, 1, 0, 2), NUMSUB_UNDER);
	/* HPA: peers is the maximum, expected what runs now. */
	assert_int_equal(serve_numsub_judge(3, 10, 3, 5), NUMSUB_OK);
	assert_int_equal(serve_numsub_judge(1, 0, 1, 0), NUMSUB_OK);
	assert_int_equal(serve_numsub_judge(2, 0, 1, 0), NUMSUB_OVER);
}

static void
test_listen_parse(void **state)
{
	static const struct { const char *in, *host, *port; } good[] = {
		{ "0.0.0.0:4320", "0.0.0.0", "4320" },
		{ "127.0.0.1:1", "127.0.0.1", "1" },
		{ "[::]:4320", "::", "4320" },
		{ "[::1]:80", "::1", "80" },
		{ ":4320", "", "4320" },
		{ "localhost:65535", "localhost", "65535" },
	};
	static const char *bad[] = { "", "4320", "host:", "host:0",
		"host:65536", "host:12x", "::1:80", "[::1]80", "[::1", "h:-1" };
	struct agent_err err;
	char h[64], p[8];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(serve_listen_parse(good[i].in, h, sizeof(h), p,
		    sizeof(p), &err), 0);
		assert_string_equal(h, good[i].host);
		assert_string_equal(p, good[i].port);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (serve_listen_parse(bad[i], h, sizeof(h), p, sizeof(p),
		    &err) == 0)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_int_equal(err.code, EXIT_AGENT_CONFIG);
		assert_non_null(strstr(err.msg, "--listen"));
	}
}

static void
test_exit_codes(void **state)
{
	(void)state;
	assert_int_equal(supervise_exit_code(0), 0);
	assert_int_equal(supervise_exit_code(3 << 8), 3);
	assert_int_equal(supervise_exit_code(SIGTERM), 128 + SIGTERM);
	assert_int_equal(supervise_exit_code(SIGKILL), 128 + SIGKILL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probes),
		cmocka_unit_test(test_status_json),
		cmocka_unit_test(test_status_redacts_error),
		cmocka_unit_test(test_metrics_text),
		cmocka_unit_test(test_metrics_oom),
		cmocka_unit_test(test_numsub),
		cmocka_unit_test(test_listen_parse),
		cmocka_unit_test(test_exit_codes),
	};

	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
