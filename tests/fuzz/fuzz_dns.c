/*
 * fuzz_dns.c - libFuzzer target: a DNS reply (dns_parse_reply() in dns.c)
 * to the two questions serve asks Fly's internal DNS, with the TXT
 * strings appended as fly.c does, then the all.vms text parser.  The
 * first input byte picks the question (TXT or AAAA) and the ID's low
 * byte; the rest is the reply.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dns.h"

struct fly_snap {
	uint64_t	*ids;
	size_t		 nids;
	int		 group_n;
	bool		 self_listed;
};
int	fly_vms_parse(const char *, const char *, struct fly_snap *);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct acc {
	char	txt[4096];
	size_t	used;
	int	n;
};

static int
cb(const uint8_t *rd, size_t len, void *arg)
{
	struct acc *a = arg;

	a->n++;
	if (a->used > 0 && a->used + 2 < sizeof(a->txt))
		a->txt[a->used++] = ',';
	(void)dns_txt_append(rd, len, a->txt, sizeof(a->txt), &a->used);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct acc	a;
	struct fly_snap		s;
	char			why[160];
	bool			tc, nx;
	uint8_t			sel = 0;
	uint16_t		qtype, id;
	int			rc;

	if (size > 0) {
		sel = data[0];
		data++;
		size--;
	}
	qtype = (sel & 1) ? DNS_T_AAAA : DNS_T_TXT;
	id = (uint16_t)(0x1200 | (sel >> 1));
	memset(&a, 0, sizeof(a));
	rc = dns_parse_reply(data, size, id, (sel & 1) ?
	    "app.process.my-app.internal" : "all.vms.my-app.internal", qtype,
	    cb, &a, &tc, &nx, why, sizeof(why));
	if (rc != 0 && memchr(why, '\0', sizeof(why)) == NULL)
		abort();
	if (rc == 0 && (tc || nx) && a.n != 0)
		abort();	/* no answers walked for TC or NXDOMAIN */
	if (a.used >= sizeof(a.txt) || a.txt[a.used] != '\0')
		abort();
	memset(&s, 0, sizeof(s));
	if (fly_vms_parse(a.txt, "e286065f969386", &s) == 0)
		for (size_t i = 1; i < s.nids; i++)
			if (s.ids[i - 1] >= s.ids[i])
				abort();	/* sorted, unique */
	a_free(s.ids);
	return 0;
}
