/*
 * The DNS stub client's wire code (dns.c): queries, reply checks,
 * malformed and hostile replies (compression loops, lengths past the
 * end, truncation), TXT strings, resolver addresses; and the all.vms
 * TXT parser of fly.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "agent.h"
#include "dns.h"

struct fly_snap {
	uint64_t	*ids;
	size_t		 nids;
	int		 group_n;
	bool		 self_listed;
};
int	fly_vms_parse(const char *txt, const char *self_id,
	    struct fly_snap *s);

#define QNAME "all.vms.my-app.internal"
#define ID 0x1234

/* A reply: the query's header and question, QR set, then raw answers. */
struct msg {
	uint8_t	b[4096];
	size_t	n;
};

static void
reply_init(struct msg *m, uint16_t qtype, uint8_t flags3, uint16_t ancount)
{
	int q = dns_build_query(ID, QNAME, qtype, m->b, sizeof(m->b));

	assert_true(q > 11);
	m->n = (size_t)q - 11;		/* without the OPT record */
	m->b[2] = 0x81;			/* QR, RD */
	m->b[3] = flags3;		/* RA, rcode */
	m->b[6] = (uint8_t)(ancount >> 8);
	m->b[7] = (uint8_t)ancount;
	m->b[10] = m->b[11] = 0;
}

static void
put(struct msg *m, const void *p, size_t n)
{
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

/* An answer owned by the question's name (pointer 0xc00c). */
static void
answer(struct msg *m, uint16_t type, const uint8_t *rd, uint16_t rdlen)
{
	uint8_t h[12] = { 0xc0, 0x0c, (uint8_t)(type >> 8), (uint8_t)type,
		0, 1, 0, 0, 0, 5, (uint8_t)(rdlen >> 8), (uint8_t)rdlen };

	put(m, h, sizeof(h));
	put(m, rd, rdlen);
}

struct collect {
	char	txt[1024];
	size_t	used;
	int	n;
};

static int
collect_txt(const uint8_t *rd, size_t len, void *arg)
{
	struct collect *c = arg;

	c->n++;
	if (c->used)
		c->txt[c->used++] = ',';
	return dns_txt_append(rd, len, c->txt, sizeof(c->txt), &c->used);
}

static int
parse(const struct msg *m, uint16_t qtype, struct collect *c, bool *tc,
    bool *nx, char *why)
{
	memset(c, 0, sizeof(*c));
	return dns_parse_reply(m->b, m->n, ID, QNAME, qtype, collect_txt, c,
	    tc, nx, why, 160);
}

static void
test_build_query(void **state)
{
	uint8_t	b[512];
	int	n;
	char	lbl[80], longname[300];

	(void)state;
	n = dns_build_query(7, "a.b", DNS_T_AAAA, b, sizeof(b));
	/* 12 header + 5 name + 4 + 11 OPT */
	assert_int_equal(n, 32);
	assert_int_equal(b[0], 0);
	assert_int_equal(b[1], 7);
	assert_int_equal(b[5], 1);		/* QDCOUNT */
	assert_int_equal(b[11], 1);		/* ARCOUNT */
	assert_memory_equal(b + 12, "\1a\1b\0\0\34\0\1", 9);
	assert_int_equal(dns_build_query(7, "a.b.", DNS_T_TXT, b, sizeof(b)),
	    32);
	assert_int_equal(dns_build_query(7, "", DNS_T_TXT, b, sizeof(b)), -1);
	assert_int_equal(dns_build_query(7, "a..b", DNS_T_TXT, b, sizeof(b)),
	    -1);
	assert_int_equal(dns_build_query(7, "a b", DNS_T_TXT, b, sizeof(b)),
	    -1);
	assert_int_equal(dns_build_query(7, NULL, DNS_T_TXT, b, sizeof(b)),
	    -1);
	memset(lbl, 'x', 64);
	lbl[64] = '\0';
	assert_int_equal(dns_build_query(7, lbl, DNS_T_TXT, b, sizeof(b)), -1);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	for (size_t i = 10; i < sizeof(longname) - 1; i += 11)
		longname[i] = '.';
	assert_int_equal(dns_build_query(7, longname, DNS_T_TXT, b,
	    sizeof(b)), -1);
	assert_int_equal(dns_build_query(7, "a.b", DNS_T_TXT, b, 20), -1);
}

static void
test_good_txt(void **state)
{
	struct msg	m;
	struct collect	c;
	bool		tc, nx;
	char		why[160];
	/* Two character-strings in one record, then a second record. */
	static const uint8_t r1[] = "\x0b" "a1 ord,b2 a" "\x02" "ms";
	static const uint8_t r2[] = "\x06" "c3 syd";
	static const uint8_t aaaa[16] = { 0xfd, 0xaa };

	(void)state;
	reply_init(&m, DNS_T_TXT, 0x80, 4);
	answer(&m, DNS_T_TXT, r1, sizeof(r1) - 1);
	answer(&m, DNS_T_AAAA, aaaa, 16);	/* another type: skipped */
	answer(&m, DNS_T_TXT, r2, sizeof(r2) - 1);
	/* Another owner (a full name, no pointer): skipped. */
	{
		static const uint8_t own[] = "\1x\0\0\20\0\1\0\0\0\5\0\2\1y";
		put(&m, own, sizeof(own) - 1);
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), 0);
	assert_false(tc);
	assert_false(nx);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.txt, "a1 ord,b2 ams,c3 syd");
}

static void
test_rcodes_and_flags(void **state)
{
	struct msg	m;
	struct collect	c;
	bool		tc, nx;
	char		why[160];

	(void)state;
	reply_init(&m, DNS_T_TXT, 0x83, 0);		/* NXDOMAIN */
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), 0);
	assert_true(nx);
	assert_int_equal(c.n, 0);

	reply_init(&m, DNS_T_TXT, 0x82, 0);		/* SERVFAIL */
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
	assert_non_null(strstr(why, "SERVFAIL"));

	reply_init(&m, DNS_T_TXT, 0x80, 3);
	m.b[2] |= 0x02;					/* TC */
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), 0);
	assert_true(tc);
	assert_int_equal(c.n, 0);

	reply_init(&m, DNS_T_TXT, 0x80, 0);
	m.b[2] &= 0x7f;					/* a query */
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);

	reply_init(&m, DNS_T_TXT, 0x80, 0);
	m.b[1] ^= 1;					/* another ID */
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
	assert_non_null(strstr(why, "ID"));

	reply_init(&m, DNS_T_TXT, 0x80, 0);
	assert_int_equal(parse(&m, DNS_T_AAAA, &c, &tc, &nx, why), -1);
	assert_non_null(strstr(why, "another question"));

	reply_init(&m, DNS_T_TXT, 0x80, 0);
	m.b[5] = 0;					/* QDCOUNT 0 */
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);

	for (size_t n = 0; n < 12; n++) {
		reply_init(&m, DNS_T_TXT, 0x80, 0);
		m.n = n;
		assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
	}
}

static void
test_lengths_past_the_end(void **state)
{
	struct msg	m;
	struct collect	c;
	bool		tc, nx;
	char		why[160];
	static const uint8_t rd[] = "\x05" "a1 or";
	size_t		full;

	(void)state;
	/* Every cut of a good reply fails cleanly, callback never run. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	answer(&m, DNS_T_TXT, rd, sizeof(rd) - 1);
	full = m.n;
	for (size_t n = 12; n < full; n++) {
		m.n = n;
		assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
		assert_int_equal(c.n, 0);
	}
	/* ANCOUNT larger than the answers. */
	m.n = full;
	m.b[7] = 2;
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
	assert_int_equal(c.n, 0);
	/* rdlength past the end. */
	m.b[7] = 1;
	m.b[full - sizeof(rd) + 1 - 1] = 0xff;
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
	/* A TXT string length past its record: rejected by the callback. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	{
		static const uint8_t bad[] = "\x09" "a1";
		answer(&m, DNS_T_TXT, bad, sizeof(bad) - 1);
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
	/* AAAA of 4 bytes. */
	reply_init(&m, DNS_T_AAAA, 0x80, 1);
	m.b[m.n - 3] = DNS_T_AAAA;
	{
		static const uint8_t v4[4] = { 1, 2, 3, 4 };
		/* The question is TXT: rebuild as AAAA. */
		int q = dns_build_query(ID, QNAME, DNS_T_AAAA, m.b,
		    sizeof(m.b));
		m.n = (size_t)q - 11;
		m.b[2] = 0x81;
		m.b[3] = 0x80;
		m.b[7] = 1;
		m.b[11] = 0;
		answer(&m, DNS_T_AAAA, v4, 4);
	}
	assert_int_equal(dns_parse_reply(m.b, m.n, ID, QNAME, DNS_T_AAAA,
	    NULL, NULL, &tc, &nx, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "16 bytes"));
}

static void
test_compression_loops(void **state)
{
	struct msg	m;
	struct collect	c;
	bool		tc, nx;
	char		why[160];
	size_t		at;

	(void)state;
	/* An answer name that points at itself. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	at = m.n;
	{
		uint8_t h[12] = { (uint8_t)(0xc0 | (at >> 8)), (uint8_t)at,
			0, 16, 0, 1, 0, 0, 0, 5, 0, 1 };
		put(&m, h, sizeof(h));
		put(&m, "\0", 1);
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);

	/* Forward pointer. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	at = m.n;
	{
		uint8_t h[12] = { 0xc0, (uint8_t)(at + 20), 0, 16, 0, 1, 0, 0,
			0, 5, 0, 1 };
		put(&m, h, sizeof(h));
		put(&m, "\0", 1);
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);

	/* Two names pointing at each other: A = "x" + ptr B, B = ptr A. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	at = m.n;
	{
		uint8_t h[] = { 1, 'x', 0xc0, (uint8_t)(at + 4),
			0xc0, (uint8_t)at, 0, 16, 0, 1, 0, 0, 0, 5, 0, 1, 0 };
		put(&m, h, sizeof(h));
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);

	/* A pointer into the header. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	{
		uint8_t h[13] = { 0xc0, 0x02, 0, 16, 0, 1, 0, 0, 0, 5, 0, 1,
			0 };
		put(&m, h, sizeof(h));
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);

	/* Extended label types (0x40, 0x80) are refused. */
	reply_init(&m, DNS_T_TXT, 0x80, 1);
	{
		uint8_t h[13] = { 0x41, 0, 0, 16, 0, 1, 0, 0, 0, 5, 0, 1, 0 };
		put(&m, h, sizeof(h));
	}
	assert_int_equal(parse(&m, DNS_T_TXT, &c, &tc, &nx, why), -1);
}

/*
 * A first answer whose (opaque) rdata holds labels of 63 bytes, each
 * ending in a pointer to the one before; a second answer owned by the
 * last of them.  labels labels make a name of labels x 64 - 1 bytes.
 */
static int
chain(int labels)
{
	struct msg	m;
	struct collect	c;
	bool		tc, nx;
	char		why[160];
	uint8_t		rd[5 * 66];
	size_t		n = 0, prev = 0, base, last = 0;

	reply_init(&m, DNS_T_TXT, 0x80, 2);
	base = m.n + 12;		/* where answer 1's rdata starts */
	for (int i = 0; i < labels; i++) {
		last = base + n;
		rd[n++] = 63;
		memset(rd + n, 'a', 63);
		n += 63;
		if (i == 0)
			rd[n++] = 0;
		else {
			rd[n++] = (uint8_t)(0xc0 | (prev >> 8));
			rd[n++] = (uint8_t)prev;
		}
		prev = last;
	}
	answer(&m, 99, rd, (uint16_t)n);	/* a type we skip */
	{
		uint8_t h[13] = { (uint8_t)(0xc0 | (last >> 8)), (uint8_t)last,
			0, 16, 0, 1, 0, 0, 0, 5, 0, 1, 0 };
		put(&m, h, sizeof(h));
	}
	return parse(&m, DNS_T_TXT, &c, &tc, &nx, why);
}

static void
test_long_name_via_pointers(void **state)
{
	(void)state;
	/* 3 labels: 191 bytes, a good name (not ours: skipped). */
	assert_int_equal(chain(3), 0);
	/* 4 labels: 255 bytes with the dots, over the limit with the
	 * length octets; 5: 319.  Refused, nothing read past the end. */
	assert_int_equal(chain(5), -1);
}

static void
test_txt_append(void **state)
{
	char	out[8];
	size_t	used = 0;

	(void)state;
	assert_int_equal(dns_txt_append((const uint8_t *)"\3abc\0", 5, out,
	    sizeof(out), &used), 0);
	assert_string_equal(out, "abc");
	assert_int_equal(dns_txt_append((const uint8_t *)"\4abc", 4, out,
	    sizeof(out), &used), -1);
	assert_int_equal(dns_txt_append((const uint8_t *)"\5abcde", 6, out,
	    sizeof(out), &used), -1);		/* would not fit */
	assert_int_equal(used, 3);
}

static void
test_server_parse(void **state)
{
	struct sockaddr_storage	ss;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_in	*s4 = (struct sockaddr_in *)&ss;
	unsigned		len;

	(void)state;
	assert_int_equal(dns_server_parse("[fdaa::3]:53", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(ntohs(s6->sin6_port), 53);
	assert_int_equal(dns_server_parse("fdaa::3", &ss, &len), 0);
	assert_int_equal(ntohs(s6->sin6_port), 53);
	assert_int_equal(dns_server_parse("[::1]", &ss, &len), 0);
	assert_int_equal(dns_server_parse("127.0.0.1:5353", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(ntohs(s4->sin_port), 5353);
	assert_int_equal(dns_server_parse("127.0.0.1", &ss, &len), 0);
	assert_int_equal(ntohs(s4->sin_port), 53);
	assert_int_equal(dns_server_parse("", &ss, &len), -1);
	assert_int_equal(dns_server_parse("dns.example:53", &ss, &len), -1);
	assert_int_equal(dns_server_parse("127.0.0.1:0", &ss, &len), -1);
	assert_int_equal(dns_server_parse("127.0.0.1:70000", &ss, &len), -1);
	assert_int_equal(dns_server_parse("[fdaa::3]x", &ss, &len), -1);
	assert_int_equal(dns_server_parse("[fdaa::3", &ss, &len), -1);
	assert_int_equal(dns_server_parse("1.2.3.4:", &ss, &len), -1);
}

static void
test_vms_parse(void **state)
{
	struct fly_snap s;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_int_equal(fly_vms_parse("3d8d9016b29d89 ord,e784e23ce06838 ams,"
	    "3d8d9016b29d89 ord", "e784e23ce06838", &s), 0);
	assert_int_equal(s.nids, 1);		/* deduplicated, self apart */
	assert_true(s.self_listed);
	assert_int_equal(fly_vms_parse("3d8d9016b29d89 ord,e784e23ce06838 ams,"
	    "3d8d9016b29d89 ord,148e272b4d3989 syd", NULL, &s), 0);
	assert_int_equal(s.nids, 3);		/* deduplicated */
	assert_false(s.self_listed);
	assert_true(s.ids[0] < s.ids[1] && s.ids[1] < s.ids[2]);
	/* This machine's entry, region included, is skipped. */
	assert_int_equal(fly_vms_parse("a1 ord", "a1", &s), 0);
	assert_int_equal(s.nids, 0);
	assert_true(s.self_listed);
	assert_int_equal(fly_vms_parse("", NULL, &s), 0);
	assert_int_equal(s.nids, 0);
	assert_int_equal(fly_vms_parse(" , ,a1", "a", &s), 0);
	assert_int_equal(s.nids, 1);
	assert_false(s.self_listed);
	assert_int_equal(fly_vms_parse("A1 ord", NULL, &s), -1);
	assert_int_equal(fly_vms_parse("a1;rm ord", NULL, &s), -1);
	assert_int_equal(fly_vms_parse("0123456789012345678901234567890123 "
	    "ord", NULL, &s), -1);
	/* Many ids: the array grows. */
	{
		char	buf[20 * 100 + 1] = "";
		size_t	off = 0;

		for (int i = 0; i < 100; i++)
			off += (size_t)snprintf(buf + off, sizeof(buf) - off,
			    "%014x ord,", 0xabc000 + i);
		assert_int_equal(fly_vms_parse(buf, NULL, &s), 0);
		assert_int_equal(s.nids, 100);
	}
	a_free(s.ids);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_query),
		cmocka_unit_test(test_good_txt),
		cmocka_unit_test(test_rcodes_and_flags),
		cmocka_unit_test(test_lengths_past_the_end),
		cmocka_unit_test(test_compression_loops),
		cmocka_unit_test(test_long_name_via_pointers),
		cmocka_unit_test(test_txt_append),
		cmocka_unit_test(test_server_parse),
		cmocka_unit_test(test_vms_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
