/*
 * alloc.c - the one swappable allocator.  Every allocation in the agent,
 * cJSON's included, goes through here so tests can fail the Nth one
 * (PYLON_AGENT_FAIL_ALLOC=N) and check that each path fails cleanly.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agent.h"

static long fail_at; /* 0: never */
static long count;
static long failures;

void
alloc_fail_after(long n)
{
	fail_at = n > 0 ? count + n : 0;
}

long
alloc_count(void)
{
	return count;
}

long
alloc_failures(void)
{
	return failures;
}

static bool
should_fail(void)
{
	count++;
	if (fail_at > 0 && count >= fail_at) {
		failures++;
		return true;
	}
	return false;
}

/* A real allocation failure counts as a failure too. */
static void *
counted(void *p)
{
	if (p == NULL)
		failures++;
	return p;
}

void *
a_malloc(size_t n)
{
	if (should_fail())
		return NULL;
	return counted(malloc(n ? n : 1));
}

void *
a_calloc(size_t n, size_t sz)
{
	if (should_fail())
		return NULL;
	return counted(calloc(n ? n : 1, sz ? sz : 1));
}

void *
a_realloc(void *p, size_t n)
{
	if (should_fail())
		return NULL;
	return counted(realloc(p, n ? n : 1));
}

char *
a_strndup(const char *s, size_t n)
{
	size_t len;
	char *p;

	if (s == NULL)
		return NULL;
	len = strnlen(s, n);
	if ((p = a_malloc(len + 1)) == NULL)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *
a_strdup(const char *s)
{
	return s ? a_strndup(s, strlen(s)) : NULL;
}

void
a_free(void *p)
{
	free(p);
}

static void *
cjson_malloc(size_t n)
{
	return a_malloc(n);
}

void
alloc_init_cjson(void)
{
	cJSON_Hooks h = {.malloc_fn = cjson_malloc, .free_fn = a_free};

	cJSON_InitHooks(&h);
}
