/*
 * http_client helpers: Retry-After parsing, full-jitter backoff bounds,
 * error-body extraction, and transport errors that need no server.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "http_client.h"

static void
test_retry_after(void **state)
{
	time_t now = 1736503331;	/* Fri, 10 Jan 2025 10:02:11 GMT */

	(void)state;
	assert_int_equal(http_parse_retry_after("0", now), 0);
	assert_int_equal(http_parse_retry_after(" 1\r\n", now), 1000);
	assert_int_equal(http_parse_retry_after("120", now), 120000);
	/* Capped at 10 minutes. */
	assert_int_equal(http_parse_retry_after("99999999999", now), 600000);
	assert_int_equal(http_parse_retry_after("-1", now), -1);
	assert_int_equal(http_parse_retry_after("1.5", now), -1);
	assert_int_equal(http_parse_retry_after("", now), -1);
	assert_int_equal(http_parse_retry_after("soon", now), -1);
	assert_int_equal(http_parse_retry_after(
	    "Fri, 10 Jan 2025 10:02:14 GMT", now), 3000);
	/* A date in the past: retry now. */
	assert_int_equal(http_parse_retry_after(
	    "Fri, 10 Jan 2025 10:00:00 GMT\r\n", now), 0);
	assert_int_equal(http_parse_retry_after(
	    "Sat, 10 Jan 2099 10:00:00 GMT", now), 600000);
}

static void
test_backoff(void **state)
{
	int	a;

	(void)state;
	/* u in [0,1): the wait never exceeds min(cap, base*2^(a-1)). */
	assert_int_equal(http_backoff_ms(1, 200, 5000, 0.0), 0);
	assert_true(http_backoff_ms(1, 200, 5000, 0.999999) <= 200);
	assert_true(http_backoff_ms(2, 200, 5000, 0.999999) <= 400);
	assert_true(http_backoff_ms(3, 200, 5000, 0.999999) >= 790);
	for (a = 1; a < 100; a++)
		assert_true(http_backoff_ms(a, 200, 5000, 0.999999) <= 5000);
	assert_true(http_backoff_ms(40, 200, 5000, 0.999999) >= 4990);
}

static void
text_of(const char *body, char *out, size_t n)
{
	struct http_response rs;

	memset(&rs, 0, sizeof(rs));
	rs.body = (char *)body;
	rs.len = body ? strlen(body) : 0;
	http_error_text(&rs, out, n);
}

static void
test_error_text(void **state)
{
	char out[64];

	(void)state;
	text_of("{\"error\":\"app not found\"}", out, sizeof(out));
	assert_string_equal(out, "app not found");
	text_of("{\"message\":\"forbidden\",\"status\":\"x\"}", out,
	    sizeof(out));
	assert_string_equal(out, "forbidden");
	text_of("{\"kind\":\"Status\"}", out, sizeof(out));
	assert_string_equal(out, "{\"kind\":\"Status\"}");
	text_of("Bad Gateway\r\nmore", out, sizeof(out));
	assert_string_equal(out, "Bad Gateway");
	text_of("a\x01" "b", out, sizeof(out));
	assert_string_equal(out, "a?b");
	text_of(NULL, out, sizeof(out));
	assert_string_equal(out, "");
	text_of("0123456789012345678901234567890123456789012345678901234567890"
	    "123456789", out, 8);
	assert_string_equal(out, "0123456");
}

static void
test_retryable(void **state)
{
	(void)state;
	assert_true(http_status_retryable(429));
	assert_true(http_status_retryable(500));
	assert_true(http_status_retryable(503));
	assert_false(http_status_retryable(401));
	assert_false(http_status_retryable(404));
	assert_false(http_status_retryable(200));
}

/* A loopback port nothing listens on: bound, read, closed. */
static int
closed_port(void)
{
	struct sockaddr_in	sin;
	socklen_t		len = sizeof(sin);
	int			fd, port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static void
test_transport_errors(void **state)
{
	struct http_request	rq;
	struct http_response	rs;
	struct agent_err	err;
	int64_t			t0;
	char			url[64], url2[64];

	(void)state;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/apps/x/machines",
	    closed_port());
	snprintf(url2, sizeof(url2), "https://127.0.0.1:%d/x", closed_port());
	memset(&rq, 0, sizeof(rq));
	rq.url = url;
	rq.timeout_ms = 1000;
	rq.max_attempts = 3;
	rq.backoff_base_ms = 10;
	rq.authorization = "Bearer unit-secret";
	err_clear(&err);
	assert_int_equal(http_do(&rq, &rs, &err), EXIT_AGENT_DISCOVERY);
	assert_non_null(strstr(err.msg, "connection refused"));
	assert_non_null(strstr(err.msg, rq.url));
	assert_null(strstr(err.msg, "unit-secret"));
	assert_int_equal(rs.attempts, 3);
	assert_int_equal(rs.status, 0);
	http_response_release(&rs);

	/* The deadline bounds the retries. */
	rq.max_attempts = 1000;
	rq.deadline_ms = 300;
	rq.backoff_base_ms = 50;
	t0 = now_ms();
	assert_int_equal(http_do(&rq, &rs, &err), EXIT_AGENT_DISCOVERY);
	assert_true(now_ms() - t0 < 1000);
	assert_true(rs.attempts < 1000);
	http_response_release(&rs);

	memset(&rq, 0, sizeof(rq));
	rq.url = "ftp://127.0.0.1/x";
	assert_int_equal(http_do(&rq, &rs, &err), EXIT_AGENT_DISCOVERY);
	assert_non_null(strstr(err.msg, "bad URL"));
	http_response_release(&rs);

	memset(&rq, 0, sizeof(rq));
	rq.url = url2;
	rq.tls_server_name = "bad name with spaces";
	assert_int_not_equal(http_do(&rq, &rs, &err), 0);
	assert_non_null(strstr(err.msg, "tls-server-name"));
	http_response_release(&rs);

	memset(&rq, 0, sizeof(rq));
	assert_int_not_equal(http_do(&rq, &rs, &err), 0);
	http_response_release(&rs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_error_text),
		cmocka_unit_test(test_retryable),
		cmocka_unit_test(test_transport_errors),
	};

	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
