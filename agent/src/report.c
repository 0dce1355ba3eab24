/* report.c - the start log line and the dispatch to platform reporters. */
#include <stdio.h>
#include <string.h>

#include "agent.h"

void
report_log_decision(const struct decision *d, double latency_ms)
{
	char fields[512];

	snprintf(fields, sizeof(fields),
	    ",\"event\":\"decision\","
	    "\"mode\":\"%s\",\"peers\":%d,\"platform\":\"%s\","
	    "\"channel\":\"%s\"",
	    mode_name(d->mode), d->peers, d->platform, d->channel);
	if (d->mode == MODE_REDIS && latency_ms >= 0)
		log_line("info", fields,
		    "bus mode: redis — %d peer%s (%s); "
		    "channel \"%s\" proven in %.*f ms",
		    d->peers, d->peers == 1 ? "" : "s", d->reason, d->channel,
		    latency_ms < 1 ? 2 : 1, latency_ms);
	else if (d->mode == MODE_REDIS)
		log_line("info", fields,
		    "bus mode: redis — %d peer%s (%s); "
		    "channel \"%s\" not proven",
		    d->peers, d->peers == 1 ? "" : "s", d->reason, d->channel);
	else
		log_line("info", fields,
		    "bus mode: noop — %d peer%s (%s); "
		    "PYLON_CLUSTER_BUS left unset",
		    d->peers, d->peers == 1 ? "" : "s", d->reason);
}

void
report_platform(const struct options *o, const struct decision *d,
    enum report_kind kind, const char *message)
{
	const struct platform *p, *q;
	struct agent_err err;
	char clean[AGENT_ERR_LEN];

	if ((o->report & ~REPORT_LOG) == 0)
		return;
	p = platform_select(o);
	/* The decision's own platform (an adopted one) when it reports. */
	if (strcmp(p->name, d->platform) != 0 && d->platform[0] &&
	    (q = platform_by_name(d->platform)) != NULL && q->report != NULL)
		p = q;
	if (p->report == NULL) {
		log_warnx("--report%s%s%s: the %s platform has no such "
		          "reporter; %s",
		    o->report & REPORT_ANNOTATIONS ? " annotations" : "",
		    o->report & REPORT_EVENTS ? " events" : "",
		    o->report & REPORT_METADATA ? " metadata" : "", p->name,
		    o->report & REPORT_LOG
		        ? "only log is reported"
		        : "nothing is reported (add log to --report)");
		return;
	}
	err_clear(&err);
	redact(message ? message : "", clean, sizeof(clean));
	if (p->report(o, d, kind, clean, &err) != 0)
		log_warnx("reporting to %s failed (the decision stands): %s",
		    p->name, err.msg);
}
