/*
 * decide.c - the decision: topology in, mode, peers and reason out.
 * Pure: no I/O, no globals, no allocation.
 */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "bus.h"

static void
append(char *buf, size_t n, const char *sep, const char *s)
{
	size_t len = strlen(buf);

	if (s == NULL || *s == '\0' || len + 1 >= n)
		return;
	snprintf(buf + len, n - len, "%s%s", len ? sep : "", s);
}

void
decide_channel(const char *ns, char *out, size_t n)
{
	snprintf(out, n, "%s:cluster:bus", ns);
}

static void
decision_init(const struct options *o, const char *platform,
    const char *instance, struct decision *d)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->platform, sizeof(d->platform), "%s", platform);
	snprintf(d->instance, sizeof(d->instance), "%s", instance);
	snprintf(d->namespace, sizeof(d->namespace), "%s", o->namespace);
	d->cluster_required = o->cluster_required;
	decide_channel(o->namespace, d->channel, sizeof(d->channel));
}

/* The flags of the compatibility gate for these options. */
unsigned
decide_url_flags(const struct options *o)
{
	unsigned f = o->pylon_tls ? PYLON_URL_TLS : 0;

	/* --bus-proxy: the sidecar relays Pylon's plain connection to the
	 * rediss:// upstream (init writes the local URL, serve runs the
	 * relay).  exec cannot: nothing would run the proxy. */
	if (o->bus_proxy != NULL && *o->bus_proxy != '\0' &&
	    o->command != CMD_EXEC)
		f |= PYLON_URL_PROXY;
	return f;
}

static int
need_url(const struct options *o, struct decision *d, struct agent_err *err)
{
	if (d->mode != MODE_REDIS)
		return 0;
	/* Never decide redis with a URL Pylon cannot use (SPEC 5). */
	if (o->redis_url != NULL)
		return redis_url_pylon_check(
		    o->redis_url, decide_url_flags(o), err);
	if (d->forced)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "--mode redis needs a "
		    "Redis URL: set --redis-url-file (a mounted Secret) or "
		    "PYLON_AGENT_REDIS_URL");
	return err_set(err, EXIT_AGENT_CONFIG,
	    "%d peers (%s) need the Redis "
	    "cluster bus but no Redis URL is configured: set "
	    "--redis-url-file (a mounted Secret) or PYLON_AGENT_REDIS_URL, or "
	    "run a single replica",
	    d->peers, d->reason);
}

int
decide(const struct topology *t, const struct options *o, struct decision *d,
    struct agent_err *err)
{
	char part[SRC_LEN + 64];
	int peers;

	decision_init(o, t->platform, t->instance, d);
	peers = t->base;
	append(d->reason, sizeof(d->reason), ", ", t->base_src);
	if (t->hpa_max > 0) {
		append(d->reason, sizeof(d->reason), ", ", t->hpa_src);
		if (t->hpa_max > peers)
			peers = t->hpa_max;
	}
	if (t->colours > 0) {
		snprintf(part, sizeof(part), "+ %s", t->colours_src);
		append(d->reason, sizeof(d->reason), ", ", part);
		peers += t->colours;
	}
	if (t->surge > 0) {
		if (o->count_surge) {
			snprintf(part, sizeof(part), "+ surge %d (%s)",
			    t->surge, t->surge_src);
			peers += t->surge;
		} else
			snprintf(part, sizeof(part),
			    "surge %d (%s) not counted:"
			    " --count-surge to count it",
			    t->surge, t->surge_src);
		append(d->reason, sizeof(d->reason), ", ", part);
	}
	if (peers < o->min_peers) {
		snprintf(part, sizeof(part), "min-peers=%d", o->min_peers);
		append(d->reason, sizeof(d->reason), ", ", part);
		peers = o->min_peers;
	}
	if (t->excluded[0]) {
		snprintf(part, sizeof(part), "not counted: %.*s",
		    (int)(sizeof(part) - 20), t->excluded);
		append(d->reason, sizeof(d->reason), "; ", part);
	}
	d->peers = peers;
	if (o->mode == MODE_AUTO)
		d->mode = peers > 1 ? MODE_REDIS : MODE_NOOP;
	else {
		d->mode = o->mode;
		d->forced = true;
		snprintf(part, sizeof(part), "forced by --mode %s",
		    mode_name(o->mode));
		append(d->reason, sizeof(d->reason), "; ", part);
	}
	return need_url(o, d, err);
}

int
decide_discovery_failed(const struct options *o, const char *platform,
    const struct agent_err *why, struct decision *d, struct agent_err *err)
{
	decision_init(o, platform, "", d);
	d->discovery_failed = true;
	/* Unknown: the floor is all that is known (never "0 peers"). */
	d->peers = o->min_peers;
	if (o->mode != MODE_AUTO) {
		/* A forced mode needs no topology. */
		d->mode = o->mode;
		d->forced = true;
		snprintf(d->reason, sizeof(d->reason),
		    "forced by --mode %s; "
		    "discovery failed: %s",
		    mode_name(o->mode), why->msg);
		return need_url(o, d, err);
	}
	switch (o->on_discovery_error) {
	case DISC_FAIL:
		err_set(err, why->code ? why->code : EXIT_AGENT_DISCOVERY, "%s",
		    why->msg);
		return err->code;
	case DISC_NOOP:
		d->mode = MODE_NOOP;
		snprintf(d->reason, sizeof(d->reason),
		    "discovery failed, "
		    "--on-discovery-error noop: %s",
		    why->msg);
		return 0;
	case DISC_REDIS_IF_CONFIGURED:
		if (o->redis_url == NULL) {
			/* Without a URL, the safe guess would be a bus we
			 * do not have: a single replica is the only setup
			 * that works, so NoopBus. */
			d->mode = MODE_NOOP;
			snprintf(d->reason, sizeof(d->reason),
			    "discovery "
			    "failed and no Redis URL is configured: %s",
			    why->msg);
			return 0;
		}
		d->mode = MODE_REDIS;
		snprintf(d->reason, sizeof(d->reason),
		    "discovery failed, a "
		    "Redis URL is configured (--on-discovery-error "
		    "redis-if-configured): %s",
		    why->msg);
		return need_url(o, d, err);
	}
	return 0;
}
