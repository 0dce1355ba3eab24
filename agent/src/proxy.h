/*
 * proxy.h - serve --bus-proxy: a plain local Redis endpoint relaying each
 * connection to the rediss:// upstream over TLS (proxy.c).  Pylon 0.11.3
 * cannot speak TLS; it connects to redis://ADDR and the agent carries
 * the bytes.  docs/bus.md "The bus proxy" explains the design.
 *
 * One event-loop thread (epoll), non-blocking sockets, two fixed
 * PROXY_BUF_SIZE buffers per connection: when one is full the side that
 * fills it is no longer read (backpressure both ways; memory per
 * connection is bounded).
 */
#ifndef PYLON_AGENT_PROXY_H
#define PYLON_AGENT_PROXY_H

#include "agent.h"

#define PROXY_BUF_SIZE (16 * 1024) /* each direction */
#define PROXY_MAX_CONNS 256 /* client connections */
#define PROXY_CONNECT_MS 10000 /* TCP + TLS handshake */
#define PROXY_HALFCLOSE_MS \
	30000 /* client done, waiting on
						 * the upstream's last bytes */

struct proxy;

struct proxy_stats {
	uint64_t connections_total; /* accepted clients */
	uint64_t connections_active;
	uint64_t rejected_total; /* over PROXY_MAX_CONNS */
	uint64_t bytes_up_total; /* client -> upstream */
	uint64_t bytes_down_total; /* upstream -> client */
	uint64_t upstream_errors_total; /* DNS, connect, TLS, I/O */
};

/*
 * Checks ADDR ("127.0.0.1:6380", "[::1]:6380", "localhost:6380"): a
 * loopback host and a port.  Returns 0 or EXIT_AGENT_CONFIG.
 */
int proxy_addr_check(const char *addr, struct agent_err *);

/*
 * The URL Pylon gets when the proxy serves upstream_url at addr:
 * redis://[user:pass@]ADDR[/db], user and password percent-encoded as
 * needed.  A non-TLS upstream needs no proxy: a copy of upstream_url.
 * malloc'd; NULL with *err filled on failure.
 */
char *
proxy_pylon_url(const char *upstream_url, const char *addr, struct agent_err *);

/*
 * Binds addr and starts the loop thread relaying to upstream_url (which
 * must be rediss://).  The strings are copied.  Returns 0 with *pp set,
 * or an exit code (EXIT_AGENT_CONFIG for a bad address, URL or CA file,
 * EXIT_AGENT_SOFTWARE when the address cannot be bound).
 */
int proxy_start(struct proxy **pp, const char *addr, const char *upstream_url,
    const char *ca_file, struct agent_err *);
/*
 * serve's start hook: with --bus-proxy and a rediss:// URL, starts the
 * proxy and replaces o->redis_url by Pylon's local URL (the startup
 * proof, the checks and the child's env then go through the proxy).
 * Without --bus-proxy, or with a non-TLS URL, *pp stays NULL.
 */
int proxy_serve_begin(struct options *, struct proxy **pp, struct agent_err *);
/* Closes every connection, stops the thread, frees.  NULL is fine. */
void proxy_stop(struct proxy *);
void proxy_stats_get(const struct proxy *, struct proxy_stats *);
/* Prometheus text of pylon_agent_proxy_* (malloc'd, NULL on OOM). */
char *proxy_metrics_text(const struct proxy_stats *);
/* /metrics hook: appends proxy_metrics_text to body (a_malloc'd, *len
 * bytes); returns the new body, or NULL (body freed) when out of memory. */
char *proxy_metrics_append(const struct proxy *, char *body, size_t *len);

#endif
