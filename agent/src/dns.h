/*
 * dns.h - a minimal DNS stub client (RFC 1035) for Fly's internal DNS:
 * one question (TXT or AAAA) to one numeric server over UDP, TCP when the
 * answer is truncated.  libc's resolver cannot be pointed at a server per
 * query; this one can, so the tests run a DNS server on loopback.
 */
#ifndef PYLON_DNS_H
#define PYLON_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent_err;

#define DNS_T_AAAA 28
#define DNS_T_TXT 16
#define DNS_MAX_MSG 65535 /* TCP's 2-byte length */
#define DNS_UDP_SIZE 4096 /* advertised in EDNS0 */

/* Called for each answer of the asked type and class IN whose owner is
 * the asked name; rdata lies inside the message (len checked).  Returns
 * 0, or -1 to reject the answer (the parse fails). */
typedef int (*dns_rr_cb)(const uint8_t *rdata, size_t len, void *arg);

/* The query message (header, one question, an EDNS0 OPT record) in out.
 * Returns its length, or -1 when name is not a valid host name or out is
 * too small. */
int dns_build_query(
    uint16_t id, const char *name, uint16_t qtype, uint8_t *out, size_t n);

/*
 * Checks a reply: the header (QR, opcode, ID), the question echoed, then
 * walks every answer (compression pointers followed backwards only,
 * every length checked against the message).  NXDOMAIN is a success with
 * no answers (*nxdomain set).  *truncated is set for TC (answers are not
 * walked).  Returns 0, or -1 with why filled.
 */
int dns_parse_reply(const uint8_t *m, size_t len, uint16_t id,
    const char *qname, uint16_t qtype, dns_rr_cb cb, void *arg, bool *truncated,
    bool *nxdomain, char *why, size_t whyn);

/* Appends the character-strings of a TXT rdata to out (NUL-terminated,
 * *used bytes so far).  Returns 0, or -1 when malformed or out is full. */
int dns_txt_append(
    const uint8_t *rd, size_t len, char *out, size_t n, size_t *used);

/* "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT" (numeric, port 53 by
 * default) -> a socket address.  Returns 0 or -1. */
int dns_server_parse(const char *s, void *ss, unsigned *sslen);

/*
 * Asks server (dns_server_parse form) for name/qtype within timeout_ms:
 * UDP (sent twice at most), TCP when the reply is truncated.  Replies
 * from other addresses (connected socket) or with another ID are
 * ignored.  Returns 0 (NXDOMAIN included: no answers) or
 * EXIT_AGENT_DISCOVERY with err saying what failed.
 */
int dns_query(const char *server, const char *name, uint16_t qtype,
    long timeout_ms, dns_rr_cb cb, void *arg, struct agent_err *err);

#endif
