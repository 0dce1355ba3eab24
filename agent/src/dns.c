/*
 * dns.c - a minimal DNS stub client (see dns.h).  Everything read from
 * the wire is bounded by the message length; names are decoded with at
 * most DNS_MAX_JUMPS compression pointers, each pointing strictly before
 * the label that holds it (so no loop), into at most 255 bytes.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "dns.h"

#define DNS_HDR 12
#define DNS_MAX_NAME 255
#define DNS_MAX_JUMPS 64
#define DNS_C_IN 1
#define DNS_T_OPT 41
#define DNS_RC_NXDOMAIN 3

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

int
dns_build_query(
    uint16_t id, const char *name, uint16_t qtype, uint8_t *out, size_t n)
{
	const char *p, *dot;
	size_t off = DNS_HDR, l, total = 0;

	if (name == NULL || *name == '\0' || strlen(name) > 253 ||
	    n < DNS_HDR + 1 + 4 + 11)
		return -1;
	memset(out, 0, DNS_HDR);
	wr16(out, id);
	out[2] = 0x01; /* RD: a recursive resolver may ask */
	wr16(out + 4, 1); /* QDCOUNT */
	wr16(out + 10, 1); /* ARCOUNT: the OPT record */
	for (p = name; *p != '\0'; p = *dot ? dot + 1 : dot) {
		if ((dot = strchr(p, '.')) == NULL)
			dot = p + strlen(p);
		l = (size_t)(dot - p);
		if (l == 0 && *dot == '\0')
			break; /* a trailing dot */
		if (l == 0 || l > 63)
			return -1;
		total += l + 1;
		if (off + 1 + l + 1 + 4 + 11 > n || total > DNS_MAX_NAME - 1)
			return -1;
		for (size_t i = 0; i < l; i++)
			if (!isalnum((unsigned char)p[i]) && p[i] != '-' &&
			    p[i] != '_')
				return -1;
		out[off++] = (uint8_t)l;
		memcpy(out + off, p, l);
		off += l;
	}
	out[off++] = 0;
	wr16(out + off, qtype);
	wr16(out + off + 2, DNS_C_IN);
	off += 4;
	/* EDNS0 (RFC 6891): root name, OPT, UDP payload size, no flags. */
	out[off++] = 0;
	wr16(out + off, DNS_T_OPT);
	wr16(out + off + 2, DNS_UDP_SIZE);
	memset(out + off + 4, 0, 6);
	off += 10;
	return (int)off;
}

/*
 * Decodes the name at *off into buf ("a.b.c", lowercase, "" for the
 * root) and moves *off past it in the message.  Returns 0 or -1.
 */
static int
dns_name(const uint8_t *m, size_t len, size_t *off, char *buf, size_t bufn)
{
	size_t pos = *off, out = 0, end = 0, limit = *off;
	int jumps = 0;
	bool jumped = false;

	for (;;) {
		uint8_t l;

		if (pos >= len)
			return -1;
		l = m[pos];
		if ((l & 0xc0) == 0xc0) {
			size_t to;

			if (pos + 1 >= len || ++jumps > DNS_MAX_JUMPS)
				return -1;
			to = ((size_t)(l & 0x3f) << 8) | m[pos + 1];
			/* Strictly backwards from this label: no loop. */
			if (to >= limit || to < DNS_HDR)
				return -1;
			if (!jumped)
				end = pos + 2;
			jumped = true;
			limit = to;
			pos = to;
			continue;
		}
		if ((l & 0xc0) != 0)
			return -1; /* 0x40/0x80: extended labels */
		if (l == 0) {
			if (!jumped)
				end = pos + 1;
			break;
		}
		if (pos + 1 + l > len || out + l + 1 > DNS_MAX_NAME ||
		    out + l + 1 >= bufn)
			return -1;
		if (out > 0)
			buf[out++] = '.';
		for (size_t i = 0; i < l; i++)
			buf[out++] = (char)tolower(m[pos + 1 + i]);
		pos += 1 + l;
		if (!jumped)
			limit = pos;
	}
	buf[out] = '\0';
	*off = end;
	return 0;
}

static bool
dns_same_name(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

static int
dns_why(char *why, size_t n, const char *msg)
{
	snprintf(why, n, "%s", msg);
	return -1;
}

/* One walk over the answers: cb NULL validates only. */
static int
dns_walk(const uint8_t *m, size_t len, size_t off, unsigned an,
    const char *qname, uint16_t qtype, dns_rr_cb cb, void *arg, char *why,
    size_t whyn)
{
	char name[DNS_MAX_NAME + 1];

	for (unsigned i = 0; i < an; i++) {
		uint16_t type, cls, rdlen;

		if (dns_name(m, len, &off, name, sizeof(name)) != 0)
			return dns_why(why, whyn,
			    "a malformed name in an "
			    "answer");
		if (off + 10 > len)
			return dns_why(why, whyn, "an answer cut short");
		type = rd16(m + off);
		cls = rd16(m + off + 2);
		rdlen = rd16(m + off + 8);
		off += 10;
		if (off + rdlen > len)
			return dns_why(why, whyn,
			    "an answer's data runs past "
			    "the message");
		if (type == qtype && cls == DNS_C_IN &&
		    dns_same_name(name, qname)) {
			if (qtype == DNS_T_AAAA && rdlen != 16)
				return dns_why(why, whyn,
				    "an AAAA answer that "
				    "is not 16 bytes");
			if (cb != NULL && cb(m + off, rdlen, arg) != 0)
				return dns_why(why, whyn,
				    "an answer the caller "
				    "rejected");
		}
		off += rdlen;
	}
	return 0;
}

int
dns_parse_reply(const uint8_t *m, size_t len, uint16_t id, const char *qname,
    uint16_t qtype, dns_rr_cb cb, void *arg, bool *truncated, bool *nxdomain,
    char *why, size_t whyn)
{
	char name[DNS_MAX_NAME + 1];
	size_t off = DNS_HDR;
	unsigned qd, an, rcode;

	*truncated = false;
	*nxdomain = false;
	if (len < DNS_HDR)
		return dns_why(why, whyn, "a reply shorter than a DNS header");
	if (rd16(m) != id)
		return dns_why(why, whyn, "a reply with another ID");
	if ((m[2] & 0x80) == 0 || ((m[2] >> 3) & 0x0f) != 0)
		return dns_why(why, whyn, "not a reply to a standard query");
	rcode = m[3] & 0x0f;
	qd = rd16(m + 4);
	an = rd16(m + 6);
	if (m[2] & 0x02) {
		*truncated = true;
		return 0;
	}
	if (qd != 1)
		return dns_why(why, whyn, "a reply without our question");
	if (dns_name(m, len, &off, name, sizeof(name)) != 0 || off + 4 > len)
		return dns_why(why, whyn, "a malformed question in the reply");
	if (!dns_same_name(name, qname) || rd16(m + off) != qtype ||
	    rd16(m + off + 2) != DNS_C_IN)
		return dns_why(why, whyn, "a reply to another question");
	off += 4;
	if (rcode == DNS_RC_NXDOMAIN) {
		*nxdomain = true;
		return 0;
	}
	if (rcode != 0) {
		snprintf(why, whyn, "the server answered rcode %u (%s)", rcode,
		    rcode == 2       ? "SERVFAIL"
		        : rcode == 5 ? "REFUSED"
		        : rcode == 1 ? "FORMERR"
		        : rcode == 4 ? "NOTIMP"
		                     : "error");
		return -1;
	}
	/* Validate every answer first: cb sees a whole good reply or
	 * nothing. */
	if (dns_walk(m, len, off, an, qname, qtype, NULL, NULL, why, whyn))
		return -1;
	return dns_walk(m, len, off, an, qname, qtype, cb, arg, why, whyn);
}

int
dns_txt_append(const uint8_t *rd, size_t len, char *out, size_t n, size_t *used)
{
	size_t off = 0;

	while (off < len) {
		size_t l = rd[off++];

		if (off + l > len || *used + l + 1 > n)
			return -1;
		memcpy(out + *used, rd + off, l);
		*used += l;
		off += l;
	}
	out[*used] = '\0';
	return 0;
}

int
dns_server_parse(const char *s, void *ssv, unsigned *sslen)
{
	struct sockaddr_storage *ss = ssv;
	struct sockaddr_in *s4 = ssv;
	struct sockaddr_in6 *s6 = ssv;
	char host[64];
	const char *port = NULL, *e;
	long p = 53;
	char *end;

	if (s == NULL || *s == '\0')
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (*s == '[') {
		if ((e = strchr(s, ']')) == NULL ||
		    (size_t)(e - s - 1) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, (size_t)(e - s - 1));
		host[e - s - 1] = '\0';
		if (e[1] == ':')
			port = e + 2;
		else if (e[1] != '\0')
			return -1;
	} else {
		e = strrchr(s, ':');
		/* More than one colon without brackets: a bare IPv6. */
		if (e != NULL && strchr(s, ':') == e) {
			if ((size_t)(e - s) >= sizeof(host))
				return -1;
			memcpy(host, s, (size_t)(e - s));
			host[e - s] = '\0';
			port = e + 1;
		} else if (strlen(s) < sizeof(host))
			snprintf(host, sizeof(host), "%s", s);
		else
			return -1;
	}
	if (port != NULL) {
		errno = 0;
		p = strtol(port, &end, 10);
		if (*port == '\0' || *end != '\0' || errno || p < 1 ||
		    p > 65535)
			return -1;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)p);
		*sslen = sizeof(*s6);
		return 0;
	}
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)p);
		*sslen = sizeof(*s4);
		return 0;
	}
	return -1;
}

static long
dns_left(int64_t deadline)
{
	int64_t l = deadline - now_ms();

	return l > 0 ? (long)l : 0;
}

/* Waits for events on fd until the deadline: 1 ready, 0 timeout, -1. */
static int
dns_wait(int fd, short ev, int64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = ev};
	int r;

	do
		r = poll(&pfd, 1, (int)dns_left(deadline));
	while (r < 0 && errno == EINTR);
	return r;
}

/* The whole buffer over TCP, or -1 (errno, ETIMEDOUT at the deadline). */
static int
dns_tcp_io(int fd, uint8_t *buf, size_t n, bool wr, int64_t deadline)
{
	size_t done = 0;
	ssize_t r;

	while (done < n) {
		if (dns_wait(fd, wr ? POLLOUT : POLLIN, deadline) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		r = wr ? send(fd, buf + done, n - done, MSG_NOSIGNAL)
		       : recv(fd, buf + done, n - done, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

/* The reply over TCP into buf (DNS_MAX_MSG); returns its length or -1. */
static long
dns_tcp(const struct sockaddr_storage *ss, unsigned sslen, const uint8_t *q,
    size_t qlen, uint8_t *buf, int64_t deadline, char *why, size_t whyn)
{
	uint8_t lenb[2];
	int fd, soerr = 0;
	socklen_t sl = sizeof(soerr);
	long rlen = -1;

	fd = socket(
	    ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(why, whyn, "TCP socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)ss, sslen) != 0 &&
	    errno != EINPROGRESS) {
		snprintf(why, whyn, "TCP connect: %s", strerror(errno));
		goto out;
	}
	if (dns_wait(fd, POLLOUT, deadline) <= 0) {
		snprintf(why, whyn, "TCP connect: timed out");
		goto out;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 ||
	    soerr != 0) {
		snprintf(why, whyn, "TCP connect: %s",
		    strerror(soerr ? soerr : errno));
		goto out;
	}
	wr16(lenb, (uint16_t)qlen);
	memcpy(buf, lenb, 2);
	memcpy(buf + 2, q, qlen);
	if (dns_tcp_io(fd, buf, qlen + 2, true, deadline) != 0 ||
	    dns_tcp_io(fd, lenb, 2, false, deadline) != 0) {
		snprintf(why, whyn, "TCP: %s", strerror(errno));
		goto out;
	}
	rlen = rd16(lenb);
	if (dns_tcp_io(fd, buf, (size_t)rlen, false, deadline) != 0) {
		snprintf(why, whyn, "TCP: %s", strerror(errno));
		rlen = -1;
	}
out:
	close(fd);
	return rlen;
}

int
dns_query(const char *server, const char *name, uint16_t qtype, long timeout_ms,
    dns_rr_cb cb, void *arg, struct agent_err *err)
{
	struct sockaddr_storage ss;
	unsigned sslen = 0;
	uint8_t q[512], *buf = NULL;
	char why[160] = "no reply";
	const char *tname = qtype == DNS_T_TXT ? "TXT" : "AAAA";
	int64_t deadline = now_ms() + timeout_ms, resend;
	uint16_t id;
	int qlen, fd = -1, rc = EXIT_AGENT_DISCOVERY, sends = 0;
	bool tc = false, nx = false;
	ssize_t r;

	if (dns_server_parse(server, &ss, &sslen) != 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "dns: resolver \"%s\" "
		    "is not a numeric address (ADDR, ADDR:PORT or "
		    "[IPV6]:PORT)",
		    server ? server : "");
	random_bytes(&id, sizeof(id));
	if ((qlen = dns_build_query(id, name, qtype, q, sizeof(q))) < 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "dns: \"%s\" is not a "
		    "valid DNS name",
		    name);
	if ((buf = a_malloc(DNS_MAX_MSG + 2)) == NULL)
		return err_oom(err, "dns: reply buffer");
	fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	/* Connected: the kernel drops datagrams from other addresses. */
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sslen) != 0) {
		snprintf(why, sizeof(why), "%s", strerror(errno));
		goto fail;
	}
	resend = 0;
	for (;;) {
		if (now_ms() >= resend && sends < 2) {
			if (send(fd, q, (size_t)qlen, 0) != qlen) {
				snprintf(why, sizeof(why), "send: %s",
				    strerror(errno));
				goto fail;
			}
			sends++;
			resend = now_ms() + timeout_ms / 2;
		}
		if (dns_left(deadline) == 0)
			break;
		{
			int64_t until =
			    sends < 2 && resend < deadline ? resend : deadline;
			if (dns_wait(fd, POLLIN, until) <= 0)
				continue;
		}
		r = recv(fd, buf, DNS_MAX_MSG, 0);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			/* ICMP port unreachable on a connected socket. */
			snprintf(why, sizeof(why), "%s", strerror(errno));
			goto fail;
		}
		if (r < 2 || rd16(buf) != id)
			continue; /* a stray or late datagram */
		if (dns_parse_reply(buf, (size_t)r, id, name, qtype, cb, arg,
		        &tc, &nx, why, sizeof(why)) != 0)
			goto fail;
		if (!tc) {
			rc = 0;
			goto out;
		}
		break;
	}
	if (!tc) {
		snprintf(
		    why, sizeof(why), "no reply within %ld ms", timeout_ms);
		goto fail;
	}
	log_debug(
	    "dns: %s %s truncated over UDP, asking over TCP", tname, name);
	r = dns_tcp(
	    &ss, sslen, q, (size_t)qlen, buf, deadline, why, sizeof(why));
	if (r < 0)
		goto fail;
	if (dns_parse_reply(buf, (size_t)r, id, name, qtype, cb, arg, &tc, &nx,
	        why, sizeof(why)) != 0)
		goto fail;
	if (tc) {
		snprintf(why, sizeof(why), "truncated even over TCP");
		goto fail;
	}
	rc = 0;
	goto out;
fail:
	rc = err_set(err, EXIT_AGENT_DISCOVERY, "dns: %s %s from %s: %s", tname,
	    name, server, why);
out:
	stats_dns_query(rc == 0);
	if (fd >= 0)
		close(fd);
	a_free(buf);
	return rc;
}
