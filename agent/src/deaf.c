/*
 * deaf.c - which Pylon is deaf (issue 20): reading Redis's CLIENT INFO and
 * CLIENT LIST TYPE pubsub answers.  Pure functions; serve_loop.c decides
 * what to do with the counts, bus.c sends the commands.
 *
 * A CLIENT LIST line is space-separated key=value fields:
 *   id=7 addr=10.0.0.5:41234 laddr=10.0.0.9:6379 fd=8 name= age=3 ...
 *   sub=1 psub=0 ... cmd=subscribe user=pylon ...
 * IPv6 addresses are printed without brackets ("::1:41234"): the port is
 * what follows the last colon.  id= is unique for the server's life (a
 * restarted Redis counts from 1 again, so an id is trusted only together
 * with its address).
 */
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* The value of key= in one line (up to the next space or end of line). */
static bool
field(const char *line, const char *end, const char *key, const char **v,
    size_t *vn)
{
	size_t kn = strlen(key);
	const char *p = line, *q;

	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		q = p;
		while (q < end && *q != ' ')
			q++;
		if ((size_t)(q - p) > kn && memcmp(p, key, kn) == 0 &&
		    p[kn] == '=') {
			*v = p + kn + 1;
			*vn = (size_t)(q - *v);
			return true;
		}
		p = q;
	}
	return false;
}

/* addr=IP:PORT -> IP ("" and false when malformed or too long). */
static bool
addr_ip(const char *v, size_t vn, char *ip, size_t n)
{
	const char *colon = NULL;
	size_t i, len;

	for (i = 0; i < vn; i++)
		if (v[i] == ':')
			colon = v + i;
	if (colon == NULL || colon == v)
		return false;
	len = (size_t)(colon - v);
	if (len >= 2 && v[0] == '[' && v[len - 1] == ']') {
		v++;
		len -= 2;
	}
	if (len == 0 || len >= n)
		return false;
	memcpy(ip, v, len);
	ip[len] = '\0';
	return true;
}

bool
deaf_client_ip(const char *info, size_t len, char *ip, size_t n)
{
	const char *end = info + len, *nl, *v;
	size_t vn;

	if (n > 0)
		ip[0] = '\0';
	if ((nl = memchr(info, '\n', len)) != NULL)
		end = nl;
	if (!field(info, end, "addr", &v, &vn))
		return false;
	return addr_ip(v, vn, ip, n);
}

/* sub=N or psub=N with N > 0. */
static bool
subscribed(const char *line, const char *end)
{
	const char *v;
	size_t vn;
	static const char *keys[] = {"sub", "psub", "ssub"};
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (field(line, end, keys[i], &v, &vn) && vn > 0 &&
		    !(vn == 1 && v[0] == '0') && v[0] >= '0' && v[0] <= '9')
			return true;
	return false;
}

/* id=N, > 0. */
static bool
client_id(const char *line, const char *end, long long *id)
{
	const char *v;
	size_t vn, i;
	long long n = 0;

	if (!field(line, end, "id", &v, &vn) || vn == 0 || vn > 18)
		return false;
	for (i = 0; i < vn; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		n = n * 10 + (v[i] - '0');
	}
	*id = n;
	return n > 0;
}

int
deaf_own_ids(const char *list, size_t len, const char *own_ip, int *total,
    long long *ids, int max, int *nids)
{
	const char *p = list, *end = list + len, *eol, *v;
	char ip[64];
	size_t vn;
	long long id;
	int own = 0;

	*total = 0;
	if (nids != NULL)
		*nids = 0;
	while (p < end) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		if (subscribed(p, eol)) {
			(*total)++;
			if (field(p, eol, "addr", &v, &vn) &&
			    addr_ip(v, vn, ip, sizeof(ip)) &&
			    strcmp(ip, own_ip) == 0) {
				own++;
				if (nids != NULL && *nids < max &&
				    client_id(p, eol, &id))
					ids[(*nids)++] = id;
			}
		}
		p = eol + 1;
	}
	return own;
}

int
deaf_count_own(const char *list, size_t len, const char *own_ip, int *total)
{
	return deaf_own_ids(list, len, own_ip, total, NULL, 0, NULL);
}
