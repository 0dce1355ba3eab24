/*
 * stats.c - process-wide counters of what the agent costs the services it
 * talks to (SPEC 10): API requests by HTTP status (every attempt,
 * retries included; 0 for a transport error) and Redis commands sent.
 * Lock-free: the HTTP thread, the loop thread and the main thread update
 * them.  serve's /metrics renders them.
 */
#include <string.h>

#include "agent.h"

#define STATS_CODES 8

static struct {
	long code; /* 0 free */
	uint64_t n;
} api[STATS_CODES];
static uint64_t api_other; /* more distinct codes than slots */
static uint64_t redis_cmds;
static uint64_t dns_ok, dns_err;

void
stats_api_request(long code)
{
	long key = code > 0 ? code : -1; /* -1: no HTTP answer */
	int i;

	for (i = 0; i < STATS_CODES; i++) {
		long cur = __atomic_load_n(&api[i].code, __ATOMIC_ACQUIRE);
		long zero = 0;

		if (cur == 0 &&
		    __atomic_compare_exchange_n(&api[i].code, &zero, key, false,
		        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			cur = key;
		else if (cur == 0)
			cur = zero;
		if (cur == key) {
			__atomic_add_fetch(&api[i].n, 1, __ATOMIC_RELAXED);
			return;
		}
	}
	__atomic_add_fetch(&api_other, 1, __ATOMIC_RELAXED);
}

int
stats_api_get(long *codes, uint64_t *counts, int max)
{
	int i, n = 0;

	for (i = 0; i < STATS_CODES && n < max; i++) {
		long c = __atomic_load_n(&api[i].code, __ATOMIC_ACQUIRE);

		if (c == 0)
			continue;
		codes[n] = c;
		counts[n++] = __atomic_load_n(&api[i].n, __ATOMIC_RELAXED);
	}
	if (n < max && __atomic_load_n(&api_other, __ATOMIC_RELAXED) > 0) {
		codes[n] = -2;
		counts[n++] = __atomic_load_n(&api_other, __ATOMIC_RELAXED);
	}
	return n;
}

uint64_t
stats_api_total(void)
{
	long codes[STATS_CODES + 1];
	uint64_t counts[STATS_CODES + 1], t = 0;
	int i, n = stats_api_get(codes, counts, STATS_CODES + 1);

	for (i = 0; i < n; i++)
		t += counts[i];
	return t;
}

void
stats_redis_command(void)
{
	__atomic_add_fetch(&redis_cmds, 1, __ATOMIC_RELAXED);
}

uint64_t
stats_redis_commands(void)
{
	return __atomic_load_n(&redis_cmds, __ATOMIC_RELAXED);
}

void
stats_dns_query(bool ok)
{
	__atomic_add_fetch(ok ? &dns_ok : &dns_err, 1, __ATOMIC_RELAXED);
}

void
stats_dns_queries(uint64_t *ok, uint64_t *err)
{
	*ok = __atomic_load_n(&dns_ok, __ATOMIC_RELAXED);
	*err = __atomic_load_n(&dns_err, __ATOMIC_RELAXED);
}
