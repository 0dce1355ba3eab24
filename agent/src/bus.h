/*
 * bus.h - Redis URLs, transport and the bus proof (redis_url.c,
 * transport.c, bus.c).  RESP goes through hiredis's reader and
 * redisFormatCommand over our own TCP/unix/TLS transport.
 */
#ifndef PYLON_AGENT_BUS_H
#define PYLON_AGENT_BUS_H

#include "agent.h"

enum redis_kind { REDIS_TCP, REDIS_UNIX };

struct redis_url {
	enum redis_kind	kind;
	bool		tls;		/* rediss:// */
	bool		insecure;	/* ?insecure / #insecure: no verify */
	char		*user;		/* NULL when absent (percent-decoded) */
	char		*pass;		/* NULL when absent (percent-decoded) */
	char		*host;		/* TCP: host without brackets */
	int		port;		/* TCP: default 6379 */
	char		*path;		/* unix: socket path */
	int		db;		/* default 0 */
};

/* Returns 0 or EXIT_AGENT_CONFIG with a message that never holds the
 * password. */
int	redis_url_parse(const char *url, struct redis_url *,
	    struct agent_err *);
void	redis_url_release(struct redis_url *);
/* The URL with the password replaced by "***" (malloc'd). For input that
 * does not parse, a safe placeholder, never the raw input. */
char	*redis_url_redact(const char *url);

struct bus_result {
	double	latency_ms;	/* the successful round trip */
	int	attempts;
	char	instance_id[32];	/* pylon-agent-<8 hex> */
};

/*
 * The proof (SPEC 5): connect, AUTH, SELECT, SUBSCRIBE channel on one
 * connection, PUBLISH one envelope on a second, receive it back.  Retries
 * with capped exponential backoff and jitter until timeout_ms.  Returns 0
 * or EXIT_AGENT_UNPROVEN (the last attempt's precise cause in *err), or
 * EXIT_AGENT_CONFIG for a URL that cannot work.
 */
int	bus_prove(const char *url, const char *ca_file, const char *channel,
	    long timeout_ms, struct bus_result *, struct agent_err *);

/*
 * A held session for serve: the subscription stays open, the publish
 * connection is kept for PING and PUBSUB NUMSUB.  open proves the bus
 * (publishing one envelope) when publish_probe is true, else only
 * connects and subscribes (reconnects never publish again).
 */
struct bus_session;

int	bus_session_open(struct bus_session **, const char *url,
	    const char *ca_file, const char *channel, long timeout_ms,
	    bool publish_probe, struct bus_result *, struct agent_err *);
/* One steady-state check: PING on the publish connection, the held
 * subscription still alive, PUBSUB NUMSUB of the channel. No PUBLISH. */
int	bus_session_check(struct bus_session *, long timeout_ms,
	    double *latency_ms, long *numsub, struct agent_err *);
void	bus_session_close(struct bus_session *);

#endif
