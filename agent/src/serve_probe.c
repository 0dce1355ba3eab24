/*
 * serve_probe.c - `probe`: one quick check of the bus this pod runs with
 * (an exec probe for Pylon's container).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include "bus.h"
#include "httpd.h"
#include "proxy.h"
#include "serve.h"
#include "serve_int.h"

#define PROBE_DEFAULT_MS 3000

/* ---- probe ----------------------------------------------------------- */

/* A pod that runs redis needs no topology: whatever the count says now,
 * its Pylon is on the bus, and the question is only whether the bus
 * works.  No API request (an exec probe runs every few seconds on every
 * pod: 4 GETs each would be the fleet's largest API load).  The channel is
 * the one Pylon uses: the env file's namespace, else Pylon's environment,
 * else the agent's. */
static void
probe_redis_decision(
    const struct options *o, const struct envfile *ef, struct decision *dec)
{
	const char *ns = ef->namespace, *env;

	if (ns == NULL && (env = getenv("PYLON_CLUSTER_NAMESPACE")) != NULL &&
	    env[0] != '\0')
		ns = env;
	if (ns == NULL)
		ns = o->namespace;
	memset(dec, 0, sizeof(*dec));
	dec->mode = MODE_REDIS;
	snprintf(dec->namespace, sizeof(dec->namespace), "%s", ns);
	decide_channel(ns, dec->channel, sizeof(dec->channel));
}

/* A noop pod asks whether the topology still says noop.  With the state
 * init left next to the env file, that is a resync of the chain's end
 * (Kubernetes: 2 reads from the watch cache, not the 4 quorum reads of a
 * discovery). */
static int
probe_noop_decision(const struct options *o, struct topology *topo,
    struct decision *dec, struct agent_err *err)
{
	struct pod_state ps;
	struct agent_err ignored;

	if (o->env_file != NULL &&
	    state_read(o->env_file, &ps, &ignored) == 0) {
		*topo = ps.topo;
		return flow_resync(o, topo, dec, err);
	}
	return flow_decide(o, topo, dec, err);
}

int
cmd_probe(struct options *opts, struct agent_err *err)
{
	struct options o = *opts; /* shallow: only limits change */
	struct topology topo;
	struct decision dec;
	struct envfile ef;
	struct agent_err ignored;
	struct bus_session *s = NULL;
	struct bus_result res;
	enum bus_mode started = MODE_AUTO, check;
	const char *url, *env;
	long budget, left, numsub = -1;
	int64_t deadline;
	double lat = -1;
	int rc;

	budget = opts->timeout_set ? opts->timeout_ms : PROBE_DEFAULT_MS;
	deadline = now_ms() + budget;
	if (o.api_timeout_ms > budget)
		o.api_timeout_ms = budget;
	o.timeout_ms = budget;

	/* The mode this pod started with: the env file init wrote, else
	 * the environment exec gave Pylon. */
	memset(&ef, 0, sizeof(ef));
	if (opts->env_file != NULL && access(opts->env_file, F_OK) == 0 &&
	    envfile_read(opts->env_file, &ef, &ignored) == 0) {
		if (strcmp(ef.mode, "redis") == 0 || ef.bus != NULL)
			started = MODE_REDIS;
		else if (strcmp(ef.mode, "noop") == 0 || ef.bus == NULL)
			started = MODE_NOOP;
		if (o.redis_url == NULL && ef.bus != NULL)
			o.redis_url = ef.bus;
	} else if ((env = getenv("PYLON_CLUSTER_BUS")) != NULL &&
	    env[0] != '\0') {
		started = MODE_REDIS;
		if (o.redis_url == NULL)
			o.redis_url = (char *)(uintptr_t)env;
	}

	memset(&topo, 0, sizeof(topo));
	memset(&dec, 0, sizeof(dec));
	if (started == MODE_REDIS)
		probe_redis_decision(&o, &ef, &dec);
	else if ((rc = started == MODE_NOOP
	                 ? probe_noop_decision(&o, &topo, &dec, err)
	                 : flow_decide(&o, &topo, &dec, err)) != 0) {
		err_prefix(err, "probe");
		goto out;
	}
	check = started != MODE_AUTO ? started : dec.mode;
	if (check == MODE_NOOP) {
		if (dec.mode == MODE_REDIS) {
			rc = err_set(err, EXIT_AGENT_UNPROVEN,
			    "probe: drift: "
			    "this pod runs noop but the topology now wants "
			    "redis (%d peers: %s); restart the pods",
			    dec.peers, dec.reason);
			goto out;
		}
		printf("noop: the decision is still noop (%d peer%s: %s)\n",
		    dec.peers, dec.peers == 1 ? "" : "s", dec.reason);
		rc = 0;
		goto out;
	}
	url = o.redis_url;
	if (url == NULL || url[0] == '\0') {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "probe: redis mode but no "
		    "Redis URL; set --redis-url or --redis-url-file");
		goto out;
	}
	if ((left = (long)(deadline - now_ms())) < 100)
		left = 100;
	memset(&res, 0, sizeof(res));
	rc = bus_session_open(
	    &s, url, o.redis_ca_file, dec.channel, left, false, &res, err);
	if (rc == 0) {
		if ((left = (long)(deadline - now_ms())) < 100)
			left = 100;
		rc = bus_session_check(s, left, &lat, &numsub, err);
	}
	if (rc != 0) {
		if (rc != EXIT_AGENT_CONFIG)
			rc = EXIT_AGENT_UNPROVEN;
		err_prefix(err, "probe: bus not usable");
		goto out;
	}
	printf("redis: bus usable: PING %.1f ms, %ld subscriber%s on \"%s\"\n",
	    lat, numsub, numsub == 1 ? "" : "s", dec.channel);
out:
	if (s != NULL)
		bus_session_close(s);
	envfile_release(&ef);
	return rc;
}
