/*
 * httpd.h - serve's HTTP server: libmicrohttpd (loaded on first use, see
 * dl.h) with the limits that keep /livez answering under a hostile
 * network (docs/hardening.md):
 *
 * - at most HTTPD_PER_IP connections from one address, HTTPD_CONN_LIMIT
 *   in all (so it takes HTTPD_CONN_LIMIT / HTTPD_PER_IP addresses to
 *   fill the server, and the kubelet's address keeps its own share);
 * - each request must arrive and be answered within
 *   HTTPD_REQUEST_DEADLINE_MS of the connection's accept or of the end of
 *   its previous response - a whole-request deadline that received bytes
 *   do not extend (libmicrohttpd's own timeout is an idle timeout that
 *   every byte resets, which slowloris defeats);
 * - a listen backlog of HTTPD_BACKLOG (the kernel caps it at
 *   net.core.somaxconn) so bursts of connections do not drop the
 *   kubelet's SYN into a one-second retransmit.
 */
#ifndef PYLON_AGENT_HTTPD_H
#define PYLON_AGENT_HTTPD_H

#include "mhd_dl.h"

#define HTTPD_CONN_LIMIT 128
#define HTTPD_PER_IP 8
#define HTTPD_REQUEST_DEADLINE_MS 5000
#define HTTPD_IDLE_TIMEOUT_S 5
#define HTTPD_CONN_MEMORY (16 * 1024)
#define HTTPD_BACKLOG 4096

struct httpd;

/*
 * Starts the server on the listening socket lfd (taken over: closed on
 * failure and by httpd_stop), answering with handler(cls, ...).  Returns
 * NULL with err filled (libmicrohttpd missing, or the start failed).
 */
struct httpd *httpd_start(int lfd, MHD_AccessHandlerCallback handler, void *cls,
    const char *listen, struct agent_err *err);
void httpd_stop(struct httpd *);

/* libmicrohttpd's version, or the one built against when not loaded. */
const char *httpd_version(void);

#endif
