/*
 * bus.h - Redis URLs, transport and the bus proof (redis_url.c,
 * transport.c, bus.c).  RESP goes through hiredis's reader and
 * redisFormatCommand over our own TCP/unix/TLS transport.
 * docs/bus.md explains the proof and every failure message.
 */
#ifndef PYLON_AGENT_BUS_H
#define PYLON_AGENT_BUS_H

#include "agent.h"

/* ---- Redis URLs (redis_url.c) ------------------------------------------ */

enum redis_kind { REDIS_TCP, REDIS_UNIX };

struct redis_url {
	enum redis_kind kind;
	bool tls; /* rediss:// */
	bool insecure; /* ?insecure / #insecure: no verify */
	char *user; /* NULL when absent (percent-decoded) */
	char *pass; /* NULL when absent (percent-decoded) */
	char *host; /* TCP: host without brackets */
	int port; /* TCP: default 6379 */
	char *path; /* unix: socket path */
	int db; /* default 0 */
	bool resp3; /* ?protocol=resp3: HELLO 3 */
};

/* Returns 0 or EXIT_AGENT_CONFIG with a message that never holds the
 * password.  On error *u is left empty (nothing to release). */
int redis_url_parse(const char *url, struct redis_url *, struct agent_err *);
void redis_url_release(struct redis_url *);
/* The URL with the password replaced by "***" (malloc'd, NULL on OOM).
 * For input that does not parse, "(invalid Redis URL)", never the raw
 * input. */
char *redis_url_redact(const char *url);
/*
 * The compatibility gate (SPEC 5): may the Pylon the agent configures use
 * this URL?  Returns 0, or EXIT_AGENT_CONFIG with one line saying why not
 * and what to use (never echoing the URL).  Pure: no allocation, no I/O.
 * Accepted: exactly "redis://..." (lower case, no surrounding whitespace,
 * only ?protocol=resp2|resp3 in the query); "rediss://..." only with
 * PYLON_URL_TLS (--pylon-tls: the Pylon build has TLS) or PYLON_URL_PROXY
 * (a local proxy of the agent serves it to Pylon).  Refused: unix://,
 * redis+unix://, upper-case schemes, surrounding whitespace, query
 * parameters Pylon ignores, #insecure on redis://.
 */
#define PYLON_URL_TLS 0x1u
#define PYLON_URL_PROXY 0x2u
int redis_url_pylon_check(const char *url, unsigned flags, struct agent_err *);
/* log_add_secret() of the password, decoded and as written in the URL. */
void redis_url_register_secrets(const char *url);
/* "host:port", "[::1]:port" or "unix:/path", for messages. */
void redis_url_where(const struct redis_url *, char *buf, size_t n);

/* ---- transport (transport.c): TCP/unix/TLS with deadlines -------------- */

/*
 * Deadlines are absolute now_ms() values.  Every function fills *err with
 * one complete line ("redis HOST:PORT: <what>; <what to do>") on failure.
 */
struct transport;

enum tr_status {
	TR_OK = 0,
	TR_TIMEOUT, /* deadline passed */
	TR_EOF, /* peer closed the connection */
	TR_ERROR, /* anything else (err->code says how bad) */
};

/*
 * Connects (DNS with a deadline, non-blocking connect, TLS handshake with
 * SNI and certificate + host name verification unless u->insecure).
 * ca_file NULL: the system CAs.  err->code is EXIT_AGENT_CONFIG when the
 * CA file cannot be loaded (retrying cannot help), else
 * EXIT_AGENT_UNPROVEN.
 */
enum tr_status transport_open(struct transport **, const struct redis_url *,
    const char *ca_file, int64_t deadline, struct agent_err *);
/* Writes all n bytes. */
enum tr_status transport_write(struct transport *, const void *, size_t n,
    int64_t deadline, struct agent_err *);
/* Reads 1..n bytes into buf (*got).  deadline <= now_ms() polls once
 * without waiting (TR_TIMEOUT when nothing is there). */
/* OpenSSL's last queued error (the queue emptied) into buf; none when
 * it holds nothing. */
void tls_last_error(char *buf, size_t n, const char *none);
enum tr_status transport_read(struct transport *, void *buf, size_t n,
    size_t *got, int64_t deadline, struct agent_err *);
struct ssl_st;
struct ssl_ctx_st;
/* The TLS pieces of transport_open, for the bus proxy (proxy.c): a client
 * context with the CA (NULL and *err filled on failure: EXIT_AGENT_CONFIG
 * when the CA cannot be loaded), and SNI + host name verification on one
 * SSL (-1 when it cannot be set up).  The caller frees what it gets. */
struct ssl_ctx_st *transport_tls_ctx(
    const struct redis_url *, const char *ca_file, struct agent_err *);
int transport_tls_name(struct ssl_st *, const struct redis_url *);
/* Closes and frees; NULL is fine. */
void transport_close(struct transport *);
const char *transport_where(const struct transport *);

/* ---- the proof and the held session (bus.c) ---------------------------- */

struct bus_result {
	double latency_ms; /* the successful round trip */
	int attempts;
	char instance_id[32]; /* pylon-agent-<8 hex> */
	bool published; /* this call put an envelope on the channel */
};

/*
 * The proof (SPEC 5): connect, AUTH, SELECT, SUBSCRIBE channel on one
 * connection, PUBLISH one envelope on a second, receive it back.  Retries
 * with capped exponential backoff and jitter until timeout_ms.  Returns 0
 * or EXIT_AGENT_UNPROVEN (the last attempt's precise cause in *err), or
 * EXIT_AGENT_CONFIG for a URL or CA file that cannot work.
 *
 * At most one envelope per call: a retry publishes again only when every
 * earlier PUBLISH provably reached nobody (never sent, answered with an
 * error, or answered "0 receivers").  Once a PUBLISH may have been
 * delivered and the envelope does not come back, the call fails at once
 * (docs/bus.md, "One envelope per start").  The rule holds per process:
 * after an envelope of this process may have been delivered, every later
 * call with publishing (bus_prove, bus_session_open with publish_probe)
 * fails at once with EXIT_AGENT_UNPROVEN instead of publishing again
 * (bus_result.published tells the caller an envelope went out).
 */
int bus_prove(const char *url, const char *ca_file, const char *channel,
    long timeout_ms, struct bus_result *, struct agent_err *);

/*
 * A held session for serve and probe: ONE connection, no subscription on
 * Pylon's channel (SPEC 5, 10: Pylon's multi-megabyte crdt envelopes
 * would pile up in Redis's output buffer for a subscribed agent and
 * double the app's fan-out).
 *
 * open: with publish_probe true it is bus_prove() (one envelope on a
 * subscription + publish pair), after which only the plain connection is
 * kept.  With publish_probe false (adopted proofs, reconnects, probe) it
 * connects, AUTHs, SELECTs and PINGs one connection, retrying until
 * timeout_ms; it never publishes.  On success *s is set and owned by the
 * caller (bus_session_close); on failure *s is NULL.
 *
 * check: one command within timeout_ms: PING when numsub is NULL, else
 * PUBSUB NUMSUB <channel> into *numsub (which then counts exactly the
 * Pylon processes listening: the agent holds no subscription).
 * *latency_ms is the round trip.  Never publishes.  Returns 0 or
 * EXIT_AGENT_UNPROVEN; after a failure the session is broken for good:
 * the caller closes it and opens a new one (publish_probe false).
 *
 * A session is used by one thread at a time.
 */
struct bus_session;

int bus_session_open(struct bus_session **, const char *url,
    const char *ca_file, const char *channel, long timeout_ms,
    bool publish_probe, struct bus_result *, struct agent_err *);
int bus_session_check(struct bus_session *, long timeout_ms, double *latency_ms,
    long *numsub, struct agent_err *);
void bus_session_close(struct bus_session *);
/* What one process remembers of its own Pylon's subscribers (issue 20). */
#define BUS_OWN_IDS 4
struct bus_own {
	char ip[64]; /* our address as Redis sees it */
	long long ids[BUS_OWN_IDS]; /* own subscribers at the last look */
	int nids;
	bool no_id_filter; /* CLIENT LIST ID refused: full lists */
};

/* This pod's Pylon subscribers (issue 20).  CLIENT INFO, unless mine->ip
 * already holds it, gives our address as Redis sees it.  Then, when
 * mine->ids holds the ids seen last time, CLIENT LIST ID <ids> (a line
 * each, whatever the fleet's size); only when none of them is still a
 * subscriber from our address, CLIENT LIST TYPE pubsub: every subscribed
 * connection (*total) and those from our address (*own, their ids kept
 * in mine).  After CLIENT LIST ID, *total counts only the lines asked for.
 * *denied when Redis refused a command (ACL without +client|info or
 * +client|list): 0 is returned, err says why, the session stays open.
 * Else 0 or an error code (the session is then broken, as after a failed
 * check). */
int bus_session_own_subscribers(struct bus_session *, long timeout_ms, int *own,
    int *total, struct bus_own *mine, bool *denied, struct agent_err *);

/* The proof's context (bus.c), in the header so that tests/unit sees
 * its one layout. */
struct bus_ctx {
	const struct redis_url *u;
	const char *ca;
	const char *channel;
};

#ifdef UNITTEST
/* bus.c's file-local pieces, visible to tests/unit and tests/fuzz. */
struct redisReply;
void make_instance_id(char *, size_t);
char *make_envelope(const char *instance_id);
long backoff_ms(int n);
void server_text(const char *s, size_t len, char *out, size_t n);
int reply_error(const struct bus_ctx *, const char *where, const char *cmd,
    const char *verb, const struct redisReply *, struct agent_err *);
long resp3_scan(const char *p, size_t n, int depth);
void bus_test_reset_envelope(void);
#endif

#endif
