/* CLIENT INFO / CLIENT LIST TYPE pubsub parsing (deaf.c, issue 20). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "agent.h"

/* As Redis 7.0 prints them (one line per client, '\n' separated). */
static const char LIST[] =
    "id=3 addr=10.0.0.5:41814 laddr=10.0.0.1:6379 fd=8 name= age=1 idle=1 "
    "flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 cmd=subscribe user=pylon "
    "redir=-1 resp=2\n"
    "id=4 addr=10.0.0.6:41999 laddr=10.0.0.1:6379 fd=9 name= age=1 idle=1 "
    "flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 cmd=subscribe user=pylon "
    "redir=-1 resp=2\n"
    "id=5 addr=10.0.0.5:42000 laddr=10.0.0.1:6379 fd=10 name= age=1 idle=1 "
    "flags=P db=0 sub=0 psub=2 ssub=0 multi=-1 cmd=psubscribe user=pylon "
    "redir=-1 resp=2\n"
    "id=6 addr=10.0.0.50:42001 laddr=10.0.0.1:6379 fd=11 name= age=1 "
    "flags=N db=0 sub=0 psub=0 ssub=0 cmd=unsubscribe\n"
    "id=7 addr=::1:5000 laddr=::1:6379 fd=12 name= flags=P sub=1 psub=0\n";

static void
test_client_ip(void **state)
{
	char ip[64];
	static const char v6[] = "id=9 addr=fd00::5:52408 laddr=fd00::1:6379\n";
	static const char br[] = "id=9 addr=[fd00::5]:52408\n";

	(void)state;
	assert_true(deaf_client_ip(LIST, strlen(LIST), ip, sizeof(ip)));
	assert_string_equal(ip, "10.0.0.5");
	assert_true(deaf_client_ip(v6, strlen(v6), ip, sizeof(ip)));
	assert_string_equal(ip, "fd00::5");
	assert_true(deaf_client_ip(br, strlen(br), ip, sizeof(ip)));
	assert_string_equal(ip, "fd00::5");
	/* laddr= is not addr=; no addr at all; no port; too long */
	assert_false(deaf_client_ip("id=1 laddr=1.2.3.4:5", 20, ip, sizeof(ip)));
	assert_false(deaf_client_ip("id=1 name=x", 11, ip, sizeof(ip)));
	assert_false(deaf_client_ip("addr=:5", 7, ip, sizeof(ip)));
	assert_false(deaf_client_ip("addr=1.2.3.4:5", 14, ip, 4));
	assert_string_equal(ip, "");
}

static void
test_count_own(void **state)
{
	int total;

	(void)state;
	/* two subscribed connections from 10.0.0.5 (sub=1, psub=2) */
	assert_int_equal(deaf_count_own(LIST, strlen(LIST), "10.0.0.5", &total),
	    2);
	assert_int_equal(total, 4);
	assert_int_equal(deaf_count_own(LIST, strlen(LIST), "10.0.0.6", &total),
	    1);
	assert_int_equal(deaf_count_own(LIST, strlen(LIST), "::1", &total), 1);
	/* a prefix of an address is not the address; unsubscribed ones
	 * (id=6, sub=0 psub=0) never count */
	assert_int_equal(deaf_count_own(LIST, strlen(LIST), "10.0.0", &total),
	    0);
	assert_int_equal(deaf_count_own(LIST, strlen(LIST), "10.0.0.50",
	    &total), 0);
	assert_int_equal(deaf_count_own("", 0, "10.0.0.5", &total), 0);
	assert_int_equal(total, 0);
	/* malformed: no crash, nothing counted */
	assert_int_equal(deaf_count_own("sub=x addr=\nsub=1\n==== \n", 24,
	    "10.0.0.5", &total), 0);
	assert_int_equal(total, 1);
}

/* The ids kept for CLIENT LIST ID next time: only our own subscribed
 * connections', at most max, none from a malformed id=. */
static void
test_own_ids(void **state)
{
	long long ids[4] = {0};
	int total, n = -1;
	static const char bad[] =
	    "id=x addr=10.0.0.5:1 sub=1\n"
	    "id=0 addr=10.0.0.5:2 sub=1\n"
	    "id=1234567890123456789 addr=10.0.0.5:3 sub=1\n"
	    "addr=10.0.0.5:4 sub=1\n"
	    "id=42 addr=10.0.0.5:5 sub=1\n";

	(void)state;
	assert_int_equal(
	    deaf_own_ids(LIST, strlen(LIST), "10.0.0.5", &total, ids, 4, &n), 2);
	assert_int_equal(total, 4);
	assert_int_equal(n, 2);
	assert_true(ids[0] == 3 && ids[1] == 5);
	/* max 1: counted all the same, one id kept */
	assert_int_equal(
	    deaf_own_ids(LIST, strlen(LIST), "10.0.0.5", &total, ids, 1, &n), 2);
	assert_int_equal(n, 1);
	/* an id alive but from another address (a restarted Redis counts from
	 * 1 again) is not ours */
	assert_int_equal(
	    deaf_own_ids(LIST, strlen(LIST), "10.0.0.9", &total, ids, 4, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(
	    deaf_own_ids(bad, strlen(bad), "10.0.0.5", &total, ids, 4, &n), 5);
	assert_int_equal(n, 1);
	assert_true(ids[0] == 42);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_ip),
		cmocka_unit_test(test_count_own),
		cmocka_unit_test(test_own_ids),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
