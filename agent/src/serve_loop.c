/*
 * serve_loop.c - serve's loop thread: the first decision (or the one the
 * init container left), the first proof, the steady-state bus checks, the
 * topology resync and drift.  Every network call of serve happens here.
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

/* PUBSUB NUMSUB at most every --count-interval (SPEC 10: <= 3 commands a
 * minute at the default of 60 s), never more often than this. */
#define NUMSUB_PERIOD_MIN_MS 1000L
/* A bus check's own deadline. */
#define CHECK_TIMEOUT_MIN_MS 500L
#define CHECK_TIMEOUT_MAX_MS 5000L

/* ---- the loop thread ------------------------------------------------- */

struct loop_vars {
	struct bus_session *sess;
	struct decision dec; /* in force: start mode */
	struct topology topo; /* latest good discovery */
	int good_checks;
	int disc_fails;
	int numsub_under; /* low NUMSUB readings in a row */
	int64_t next_numsub; /* now_ms() of the next one */
	bool opened; /* a session was open once */
	/* this pod's own Pylon (issue 20) */
	int64_t own_missing_since; /* 0: not missing */
	struct bus_own own; /* CLIENT INFO's address, once a process; ids */
	int64_t bus_since; /* our session (re)opened */
	int64_t heals[SERVE_DEAF_RESTARTS_PER_HOUR];
	int64_t next_heal; /* backoff between heals */
	int heal_n; /* heals so far (backoff) */
	bool own_unsupported;
	bool deaf;
};

static void
heartbeat(struct serve_ctx *c)
{
	pthread_mutex_lock(&c->st.mu);
	c->st.s.heartbeat_ms = now_ms();
	pthread_mutex_unlock(&c->st.mu);
}

static void
loop_exit(struct serve_ctx *c, int code, const struct agent_err *err)
{
	pthread_mutex_lock(&c->st.mu);
	c->exit_req = true;
	c->exit_code = code;
	if (err != NULL)
		c->exit_err = *err;
	pthread_mutex_unlock(&c->st.mu);
}

static void
set_phase(struct serve_ctx *c, const char *phase, const char *error)
{
	pthread_mutex_lock(&c->st.mu);
	snprintf(c->st.s.phase, sizeof(c->st.s.phase), "%s", phase);
	if (error != NULL)
		redact(error, c->st.s.bus_error, sizeof(c->st.s.bus_error));
	c->st.s.heartbeat_ms = now_ms();
	pthread_mutex_unlock(&c->st.mu);
}

static void
count_discovery_error(struct serve_ctx *c)
{
	pthread_mutex_lock(&c->st.mu);
	c->st.s.discovery_errors_total++;
	pthread_mutex_unlock(&c->st.mu);
}

/* Sleeps ms in slices, keeping the heartbeat fresh; false when stopping. */
static bool
nap(struct serve_ctx *c, long ms)
{
	int64_t end = now_ms() + ms, left;

	while (!c->stop && (left = end - now_ms()) > 0) {
		sleep_ms(left > 200 ? 200 : left, &c->stop);
		heartbeat(c);
	}
	return !c->stop;
}

/* The first decision; discovery trouble is retried, config is fatal. */
static int
first_decision(struct serve_ctx *c, struct topology *topo, struct decision *dec,
    struct agent_err *err)
{
	int rc, n = 0;

	for (;;) {
		memset(dec, 0, sizeof(*dec));
		err_clear(err);
		heartbeat(c);
		rc = flow_decide(c->opts, topo, dec, err);
		if (rc == 0) {
			if (dec->discovery_failed)
				count_discovery_error(c);
			return 0;
		}
		if (rc != EXIT_AGENT_DISCOVERY)
			return rc;
		count_discovery_error(c);
		log_warnx("serve: discovery failed (retrying): %s", err->msg);
		set_phase(c, "discovering the topology", err->msg);
		if (!nap(c, backoff_jitter_ms(1000, n++, 30000)))
			return -1;
	}
}

/* Native-sidecar fallback: behave like init (SPEC 6). */
static int
act_as_init(
    struct serve_ctx *c, const struct decision *dec, struct agent_err *err)
{
	const struct options *o = c->opts;
	struct bus_result res;
	int rc;

	if (c->proxy != NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "serve: --bus-proxy "
		    "needs the agent running beside Pylon for the pod's life, "
		    "but this cluster ran it as a plain init container (no "
		    "SidecarContainers); use a cluster with native sidecars, "
		    "or the supervisor shape (serve -- pylon start)");
	log_info(
	    "serve: this container is a plain init container (the "
	    "cluster has no SidecarContainers); acting as init: writing %s "
	    "and exiting",
	    o->env_file);
	if ((rc = flow_prove(o, dec, &res, err)) != 0)
		return rc;
	if ((rc = flow_apply(o, dec, flow_pylon_url(o, dec), err)) != 0)
		return rc;
	report_log_decision(dec, dec->mode == MODE_REDIS ? res.latency_ms : -1);
	report_platform(o, dec, REPORT_KIND_READY,
	    "bus proven; env file "
	    "written (init fallback)");
	return 0;
}

/* This pod's own name as the platforms see it (the state file's owner). */
static bool
state_is_ours(const struct pod_state *ps)
{
	const char *ids[] = {getenv("POD_NAME"), getenv("HOSTNAME")};
	char host[256];
	size_t i;

	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (ids[i] != NULL && ids[i][0] != '\0' &&
		    strcmp(ids[i], ps->dec.instance) == 0)
			return true;
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		return strcmp(host, ps->dec.instance) == 0;
	}
	return false;
}

/*
 * A sidecar after an init container: adopt the decision and proof init
 * left in its state file (SPEC 5: one decision and one PUBLISH per pod
 * start).  Returns true when adopted; *proven says whether the proof
 * came with it.
 */
static bool
adopt_state(struct serve_ctx *c, struct loop_vars *v, struct pod_state *ps)
{
	const struct options *o = c->opts;
	struct agent_err err;

	if (c->supervising || o->env_file == NULL)
		return false;
	err_clear(&err);
	if (state_read(o->env_file, ps, &err) != 0) {
		log_debug("serve: no state from init: %s", err.msg);
		return false;
	}
	if (!state_is_ours(ps)) {
		log_warnx("serve: ignoring the state file beside %s: it was "
		          "written for \"%s\", not this pod",
		    o->env_file, ps->dec.instance);
		return false;
	}
	if (ps->dec.mode == MODE_REDIS &&
	    (o->redis_url == NULL || o->redis_url[0] == '\0')) {
		log_warnx("serve: init decided redis but no Redis URL is "
		          "configured here; deciding again");
		return false;
	}
	if (strcmp(ps->dec.namespace, o->namespace ? o->namespace : "") != 0)
		log_warnx(
		    "serve: init used namespace \"%s\", this container "
		    "\"%s\"; following init (Pylon runs with its env file)",
		    ps->dec.namespace, o->namespace ? o->namespace : "");
	v->dec = ps->dec;
	v->topo = ps->topo;
	/* init judged the native-sidecar fallback for one container name;
	 * it holds for us only when that name is ours. */
	if (strcmp(ps->topo.fallback_of, kube_container_name()) != 0)
		v->topo.init_fallback = false;
	log_info("serve: adopting init's decision (%s, %d peers)%s: no "
	         "second discovery%s",
	    mode_name(ps->dec.mode), ps->dec.peers,
	    ps->proven ? " and proof" : "", ps->proven ? " or PUBLISH" : "");
	return true;
}

/*
 * Kubernetes shapes with an init container but no state file (an older
 * init): Pylon already runs with the env file init wrote, so that file,
 * not our own (slightly later) decision, is the mode this pod started
 * with.  A difference is drift from the start.
 */
static bool
adopt_env_file(struct serve_ctx *c, struct decision *dec)
{
	const struct options *o = c->opts;
	struct envfile ef;
	struct agent_err err;
	enum bus_mode fm;

	if (c->supervising || o->env_file == NULL ||
	    access(o->env_file, F_OK) != 0)
		return false;
	memset(&ef, 0, sizeof(ef));
	if (envfile_read(o->env_file, &ef, &err) != 0) {
		log_warnx("serve: ignoring %s: %s", o->env_file, err.msg);
		return false;
	}
	fm = ef.bus != NULL ? MODE_REDIS : MODE_NOOP;
	envfile_release(&ef);
	if (fm == dec->mode)
		return false;
	if (fm == MODE_REDIS && (o->redis_url == NULL || !o->redis_url[0])) {
		log_warnx("serve: %s says redis but no Redis URL is configured "
		          "here; checking the decision's mode instead",
		    o->env_file);
		return false;
	}
	log_warnx("serve: Pylon in this pod runs %s (%s) while the topology "
	          "now wants %s",
	    mode_name(fm), o->env_file, mode_name(dec->mode));
	dec->mode = fm;
	return true;
}

/* The first proof: publish one envelope, retrying until it works. */
static int
first_proof(struct serve_ctx *c, const struct decision *dec,
    struct bus_session **sess, struct bus_result *res, struct agent_err *err)
{
	const struct options *o = c->opts;
	int rc, n = 0;

	set_phase(c, "proving the bus", NULL);
	for (;;) {
		err_clear(err);
		heartbeat(c);
		/* Bounded attempts so /startupz and the log show the cause
		 * while it lasts and a shutdown is not held up. */
		rc = bus_session_open(sess, o->redis_url, o->redis_ca_file,
		    dec->channel, o->timeout_ms < 10000 ? o->timeout_ms : 10000,
		    true, res, err);
		if (rc == 0)
			return 0;
		*sess = NULL;
		if (rc == EXIT_AGENT_CONFIG)
			return rc;
		log_warnx("serve: bus not proven yet (retrying): %s", err->msg);
		set_phase(c, "proving the bus", err->msg);
		if (!nap(c, backoff_jitter_ms(1000, n++, 10000)))
			return -1;
	}
}

/* Logs and reports a change of what PUBSUB NUMSUB says. */
static void
numsub_note(struct serve_ctx *c, struct loop_vars *v, long numsub)
{
	int expected = v->topo.base > 0 ? v->topo.base : 1;
	enum numsub_state ns, old;

	v->numsub_under =
	    numsub >= 0 && numsub < expected ? v->numsub_under + 1 : 0;
	ns =
	    serve_numsub_judge(numsub, v->dec.peers, expected, v->numsub_under);
	pthread_mutex_lock(&c->st.mu);
	old = c->st.s.numsub_state;
	c->st.s.numsub_state = ns;
	c->st.s.numsub_expected = expected;
	pthread_mutex_unlock(&c->st.mu);
	if (ns == old)
		return;
	if (ns == NUMSUB_OVER)
		log_warnx("serve: %ld Pylon subscribers on the channel, more "
		          "than %d peers: another app or deploy may share this "
		          "namespace; give each app its own --namespace",
		    numsub, v->dec.peers);
	else if (ns == NUMSUB_UNDER) {
		char msg[512];

		snprintf(msg, sizeof(msg),
		    "deaf Pylon: %ld Pylon "
		    "subscriber(s) on channel \"%s\" for %d running; a Pylon "
		    "that lost its subscription misses other pods' changes "
		    "(check PYLON_CLUSTER_NAMESPACE, restart the deaf pod)",
		    numsub, v->dec.channel, expected);
		log_warnx("serve: %s", msg);
		report_platform(c->opts, &v->dec, REPORT_KIND_DEAF, msg);
	} else if (ns == NUMSUB_OK &&
	    (old == NUMSUB_OVER || old == NUMSUB_UNDER))
		log_info("serve: %ld Pylon subscribers on the channel, as "
		         "expected",
		    numsub);
}

/* One steady-state round trip (opening the session first when it is
 * gone): PING, or PUBSUB NUMSUB once a minute.  0 or an error code. */
static int
bus_round_trip(struct serve_ctx *c, struct loop_vars *v, double *lat,
    long *numsub, bool *reconnected, struct agent_err *err)
{
	const struct options *o = c->opts;
	long tmo = o->interval_ms;
	bool want_numsub = now_ms() >= v->next_numsub;
	double t0 = now_ms_f();
	int rc;

	if (tmo < CHECK_TIMEOUT_MIN_MS)
		tmo = CHECK_TIMEOUT_MIN_MS;
	if (tmo > CHECK_TIMEOUT_MAX_MS)
		tmo = CHECK_TIMEOUT_MAX_MS;
	if (v->sess == NULL) {
		rc = bus_session_open(&v->sess, o->redis_url, o->redis_ca_file,
		    v->dec.channel, tmo, false, NULL, err);
		if (rc != 0) {
			v->sess = NULL;
			return rc;
		}
		*reconnected = v->opened; /* not the first open */
		v->opened = true;
		*lat = now_ms_f() - t0;
		if (!want_numsub)
			return 0; /* the open ended with a PING */
	}
	rc = bus_session_check(
	    v->sess, tmo, lat, want_numsub ? numsub : NULL, err);
	if (rc == 0 && want_numsub)
		v->next_numsub = now_ms() +
		    (o->count_interval_ms > NUMSUB_PERIOD_MIN_MS
		            ? o->count_interval_ms
		            : NUMSUB_PERIOD_MIN_MS);
	if (rc != 0) {
		bus_session_close(v->sess);
		v->sess = NULL;
	}
	return rc;
}

/* Folds one check's outcome into the snapshot; returns the failure
 * count and whether the bus just became unusable / recovered. */
static int
bus_record(struct serve_ctx *c, int rc, double lat, long numsub,
    bool reconnected, double dur, const struct agent_err *err, bool *became_bad,
    bool *recovered)
{
	struct serve_snap *s = &c->st.s;
	int fails;

	pthread_mutex_lock(&c->st.mu);
	serve_hist_observe(s, dur);
	s->heartbeat_ms = now_ms();
	if (rc == 0) {
		*recovered = !s->bus_ok;
		s->bus_ok = true;
		s->consecutive_failures = 0;
		s->latency_ms = lat;
		if (numsub >= 0)
			s->numsub = numsub;
		s->bus_error[0] = '\0';
		if (reconnected)
			s->reconnects_total++;
	} else {
		s->consecutive_failures++;
		s->check_failures_total++;
		redact(err->msg, s->bus_error, sizeof(s->bus_error));
		if (s->consecutive_failures >= SERVE_FAILS_UNREADY &&
		    s->bus_ok) {
			s->bus_ok = false;
			*became_bad = true;
		}
	}
	fails = s->consecutive_failures;
	pthread_mutex_unlock(&c->st.mu);
	return fails;
}

/* ---- this pod's own Pylon (issue 20) --------------------------------- */

static void
own_publish(struct serve_ctx *c, enum own_state st, int own, const char *ip)
{
	pthread_mutex_lock(&c->st.mu);
	c->st.s.own_state = st;
	c->st.s.own_subscribers = own;
	if (ip != NULL && ip[0] != '\0')
		snprintf(c->st.s.own_ip, sizeof(c->st.s.own_ip), "%s", ip);
	pthread_mutex_unlock(&c->st.mu);
}

/* A heal is allowed: fewer than SERVE_DEAF_RESTARTS_PER_HOUR in the last
 * hour, and the backoff since the last one (grace, doubling) passed. */
static bool
heal_allowed(struct loop_vars *v, int64_t now)
{
	int i, recent = 0;

	for (i = 0; i < SERVE_DEAF_RESTARTS_PER_HOUR; i++)
		if (v->heals[i] != 0 && now - v->heals[i] < 3600000L)
			recent++;
	return recent < SERVE_DEAF_RESTARTS_PER_HOUR && now >= v->next_heal;
}

static void
heal_record(const struct options *o, struct loop_vars *v, int64_t now)
{
	int i, oldest = 0;
	int shift = v->heal_n < 5 ? v->heal_n : 5;

	for (i = 1; i < SERVE_DEAF_RESTARTS_PER_HOUR; i++)
		if (v->heals[i] < v->heals[oldest])
			oldest = i;
	v->heals[oldest] = now;
	v->heal_n++;
	v->next_heal = now + (o->deaf_grace_ms << shift);
}

/* Deaf past the grace: report once, then heal (restart the supervised
 * command, or fail /pylon-livez for the kubelet) within the budget. */
static void
own_deaf(struct serve_ctx *c, struct loop_vars *v, const char *ip, int total,
    int64_t now)
{
	const struct options *o = c->opts;
	char msg[512];

	snprintf(msg, sizeof(msg),
	    "deaf Pylon in this pod: no subscription on "
	    "\"%s\" from %s for %" PRId64 " s while Redis answers (%d "
	    "subscription(s) from other pods)",
	    v->dec.channel, ip, (now - v->own_missing_since) / 1000, total);
	if (!v->deaf) {
		v->deaf = true;
		pthread_mutex_lock(&c->st.mu);
		c->st.s.deaf_total++;
		pthread_mutex_unlock(&c->st.mu);
		log_warnx("serve: %s", msg);
		report_platform(o, &v->dec, REPORT_KIND_DEAF, msg);
	}
	own_publish(c, OWN_DEAF, 0, v->own.ip);
	if (o->deaf_pylon != DEAF_HEAL)
		return;
	if (!heal_allowed(v, now)) {
		log_debug("serve: deaf Pylon: heal budget (%d an hour, "
		          "backoff) spent; reporting only",
		    SERVE_DEAF_RESTARTS_PER_HOUR);
		return;
	}
	heal_record(o, v, now);
	pthread_mutex_lock(&c->st.mu);
	c->st.s.pylon_restarts_total++;
	if (c->supervising)
		c->child_restart = true;
	else
		c->st.s.pylon_livez_fail_until =
		    now + SERVE_PYLON_LIVEZ_WINDOW_MS;
	pthread_mutex_unlock(&c->st.mu);
	if (c->supervising)
		log_warnx("serve: restarting the command so it subscribes "
		          "again (heal %d; at most %d an hour)",
		    v->heal_n, SERVE_DEAF_RESTARTS_PER_HOUR);
	else
		log_warnx(
		    "serve: /pylon-livez answers 503 for %d s so the "
		    "kubelet restarts Pylon's container (heal %d; at most %d "
		    "an hour)",
		    SERVE_PYLON_LIVEZ_WINDOW_MS / 1000, v->heal_n,
		    SERVE_DEAF_RESTARTS_PER_HOUR);
	/* The grace counts again once the restart had its chance. */
	v->own_missing_since = 0;
	v->bus_since = now + (c->supervising ? 0 : SERVE_PYLON_LIVEZ_WINDOW_MS);
}

/*
 * After a good NUMSUB: when the channel has fewer subscribers than Pylons
 * run (or this pod's was missing), look for this pod's own.  None from our
 * address for --deaf-grace, counted from when our own session last came
 * up (Pylon reconnects with backoff up to 30 s after an outage), while
 * Redis answers: this pod's Pylon is deaf.  A shared outage fails our own
 * check first, so it never gets here.
 */
static void
own_check(struct serve_ctx *c, struct loop_vars *v, long numsub)
{
	const struct options *o = c->opts;
	int expected = v->topo.base > 0 ? v->topo.base : 1;
	int own = 0, total = 0, rc;
	int64_t now = now_ms(), since;
	bool denied = false;
	struct agent_err err;
	const char *ip = v->own.ip[0] ? v->own.ip : "this pod";

	if (o->deaf_pylon == DEAF_OFF || v->own_unsupported ||
	    v->dec.mode != MODE_REDIS || v->sess == NULL)
		return;
	if (numsub >= expected && v->own_missing_since == 0 && !v->deaf)
		return;
	err_clear(&err);
	/* Nobody subscribed at all: ours is not either, no need to ask (a
	 * failover can leave every Pylon half-open at once). */
	rc = numsub == 0
	    ? 0
	    : bus_session_own_subscribers(v->sess, CHECK_TIMEOUT_MAX_MS, &own,
	          &total, &v->own, &denied, &err);
	if (v->own.ip[0])
		ip = v->own.ip;
	if (rc != 0) {
		log_debug("serve: CLIENT LIST failed: %s", err.msg);
		bus_session_close(v->sess);
		v->sess = NULL;
		return;
	}
	if (denied) {
		v->own_unsupported = true;
		own_publish(c, OWN_UNSUPPORTED, -1, NULL);
		log_warnx(
		    "serve: cannot tell whether this pod's Pylon is deaf "
		    "(%s); allow it with ACL SETUSER <user> +client|info "
		    "+client|list, or set --deaf-pylon off; the channel-wide "
		    "count (PUBSUB NUMSUB) still reports a deaf Pylon",
		    err.msg);
		return;
	}
	if (own > 0) {
		if (v->own_missing_since != 0 || v->deaf)
			log_info("serve: this pod's Pylon is subscribed again "
			         "(%d connection(s) from %s)",
			    own, ip);
		v->own_missing_since = 0;
		v->deaf = false;
		own_publish(c, OWN_OK, own, v->own.ip);
		pthread_mutex_lock(&c->st.mu);
		c->st.s.pylon_livez_fail_until = 0;
		pthread_mutex_unlock(&c->st.mu);
		return;
	}
	if (v->own_missing_since == 0) {
		v->own_missing_since = now;
		if (!v->deaf)
			log_info(
			    "serve: no subscription from this pod's address "
			    "%s on \"%s\" (%ld on the channel, %d running); "
			    "deaf if it stays so for %ld s",
			    ip, v->dec.channel, numsub, expected,
			    o->deaf_grace_ms / 1000);
	}
	since = v->own_missing_since > v->bus_since ? v->own_missing_since
	                                            : v->bus_since;
	/* Judged at the count after the grace ends: no extra command (SPEC
	 * 10's budget holds during a deaf episode too). */
	if (now - since >= o->deaf_grace_ms)
		own_deaf(c, v, ip, total, now);
	else if (!v->deaf)
		own_publish(c, OWN_MISSING, 0, v->own.ip);
}

/* One steady-state check, or a reconnect when the session is gone. */
static void
bus_tick(struct serve_ctx *c, struct loop_vars *v)
{
	const struct options *o = c->opts;
	struct agent_err err;
	double t0 = now_ms_f(), lat = -1;
	long numsub = -1;
	bool reconnected = false, became_bad = false, recovered = false;
	bool unready = o->on_bus_loss == DRIFT_UNREADY;
	int rc, fails;
	char msg[AGENT_ERR_LEN + 64];

	err_clear(&err);
	rc = bus_round_trip(c, v, &lat, &numsub, &reconnected, &err);
	fails = bus_record(c, rc, lat, numsub, reconnected,
	    (now_ms_f() - t0) / 1000.0, &err, &became_bad, &recovered);
	if (rc == 0) {
		v->good_checks++;
		if (reconnected)
			log_info("serve: bus reconnected (one connection, "
			         "nothing published)");
		if (recovered) {
			log_info("serve: bus recovered%s",
			    unready ? "; /readyz answers 200" : "");
			report_platform(
			    o, &v->dec, REPORT_KIND_READY, "bus recovered");
		}
		if (reconnected || recovered || v->bus_since == 0)
			v->bus_since = now_ms();
		if (numsub >= 0) {
			numsub_note(c, v, numsub);
			own_check(c, v, numsub);
		}
		return;
	}
	v->good_checks = 0;
	/* Every failure up to 3, then 4, 8, 16...: an outage of hours
	 * does not flood the log. */
	if (fails <= SERVE_FAILS_UNREADY || (fails & (fails - 1)) == 0)
		log_warnx("serve: bus check failed (%d in a row): %s", fails,
		    err.msg);
	if (became_bad) {
		snprintf(msg, sizeof(msg),
		    "bus unavailable after %d failed "
		    "checks: %s",
		    fails, err.msg);
		log_warnx("serve: %s; %s", msg,
		    unready ? "/readyz now "
		              "answers 503 (--on-bus-loss unready)"
		            : "/readyz stays "
		              "as it is (--on-bus-loss report)");
		report_platform(o, &v->dec, REPORT_KIND_UNAVAILABLE, msg);
	}
}

/* The drift message for wanting `want` while running v->dec.mode. */
static void
drift_text(const struct loop_vars *v, enum bus_mode want, bool cfg,
    const struct decision *nd, const struct agent_err *err, char *msg, size_t n)
{
	if (cfg)
		snprintf(msg, n,
		    "this pod runs %s but the topology now wants "
		    "redis: %s",
		    mode_name(v->dec.mode), err->msg);
	else if (want != v->dec.mode)
		snprintf(msg, n,
		    "this pod runs %s but the topology now wants "
		    "%s (%d peer%s: %s); restart the pods so every process "
		    "uses the same bus",
		    mode_name(v->dec.mode), mode_name(want), nd->peers,
		    nd->peers == 1 ? "" : "s", nd->reason);
	else
		msg[0] = '\0';
}

/* Compares a new decision (or decide's refusal rc) with the pod's mode. */
static void
drift_apply(struct serve_ctx *c, struct loop_vars *v, int rc,
    const struct decision *nd, const struct agent_err *err)
{
	enum bus_mode want = nd->mode;
	bool drift, was, cfg = false;
	char msg[1200];

	if (rc == EXIT_AGENT_CONFIG && v->dec.mode == MODE_NOOP) {
		/* Peers > 1 without a Redis URL: the topology wants the
		 * bus and this pod could not even get it. */
		want = MODE_REDIS;
		cfg = true;
	} else if (rc != 0) {
		log_warnx("serve: resync failed, keeping the last decision: %s",
		    err->msg);
		return;
	}
	drift = want != v->dec.mode;
	drift_text(v, want, cfg, nd, err, msg, sizeof(msg));
	pthread_mutex_lock(&c->st.mu);
	was = c->st.s.drift;
	c->st.s.drift = drift;
	snprintf(c->st.s.drift_msg, sizeof(c->st.s.drift_msg), "%s", msg);
	/* peers and reason as counted now, also when the count was refused
	 * for want of a Redis URL (decide() counted before refusing). */
	if (!cfg || nd->peers > 0) {
		c->st.s.dec.peers = nd->peers;
		snprintf(c->st.s.dec.reason, sizeof(c->st.s.dec.reason), "%s",
		    nd->reason);
		v->dec.peers = nd->peers;
	}
	pthread_mutex_unlock(&c->st.mu);
	if (drift && !was) {
		log_warnx("serve: drift: %s%s", msg,
		    c->opts->on_drift == DRIFT_UNREADY
		        ? "; /readyz answers 503 (--on-drift "
		          "unready)"
		        : "");
		report_platform(c->opts, &v->dec, REPORT_KIND_DRIFT, msg);
	} else if (!drift && was)
		log_info("serve: drift cleared: the topology wants %s again",
		    mode_name(v->dec.mode));
}

/* Re-reads the topology (the adapter's cheap resync when it has one);
 * drift when the new mode differs from ours. */
static void
resync_tick(struct serve_ctx *c, struct loop_vars *v)
{
	struct topology topo = v->topo;
	struct decision nd;
	struct agent_err err;
	int rc;

	memset(&nd, 0, sizeof(nd));
	err_clear(&err);
	rc = flow_resync(c->opts, &topo, &nd, &err);
	if (rc == EXIT_AGENT_DISCOVERY || (rc == 0 && nd.discovery_failed)) {
		v->disc_fails++;
		count_discovery_error(c);
		log_warnx("serve: resync: discovery failed, keeping the last "
		          "decision: %s",
		    rc ? err.msg : nd.reason);
		return;
	}
	v->disc_fails = 0;
	if (rc == 0 || rc == EXIT_AGENT_CONFIG) /* read fine; maybe refused */
		v->topo = topo;
	drift_apply(c, v, rc, &nd, &err);
}

/* The next check: every interval; once 3 checks failed, reconnects back
 * off to 10 intervals (1 s at least, 30 s at most). */
static long
check_delay(struct serve_ctx *c)
{
	long iv = c->opts->interval_ms, cap = iv * 10;
	int f;

	pthread_mutex_lock(&c->st.mu);
	f = c->st.s.consecutive_failures;
	pthread_mutex_unlock(&c->st.mu);
	if (f < SERVE_FAILS_UNREADY)
		return iv;
	if (cap < 1000)
		cap = 1000;
	if (cap > 30000)
		cap = 30000;
	return backoff_jitter_ms(iv, f - SERVE_FAILS_UNREADY + 1, cap);
}

/* The next resync: --resync +-10 %, doubled per failed discovery (x8). */
static long
resync_delay(const struct options *o, int disc_fails)
{
	int shift = disc_fails > 3 ? 3 : disc_fails;

	return (long)(o->resync_ms * (double)(1L << shift) *
	    (0.9 + 0.2 * random_unit()));
}

/* After adopting: the platform reporters --report names that init did not
 * run (the chart gives init "log" only when a sidecar follows), once per
 * pod start.  These are writes, not discovery (decisions.md). */
static void
report_rest(struct serve_ctx *c, const struct decision *dec,
    const struct pod_state *ps, const char *msg)
{
	struct options o = *c->opts;

	o.report = c->opts->report & ~ps->reported;
	if ((o.report & ~REPORT_LOG) != 0)
		report_platform(&o, dec, REPORT_KIND_READY, msg);
}

/* Decides (or adopts init's decision) and publishes it in the snapshot.
 * 0, -1 when stopping, else an exit code (already passed to main). */
static int
loop_decide(struct serve_ctx *c, struct loop_vars *v, struct pod_state *ps,
    bool *adopted)
{
	struct decision first;
	struct agent_err err;
	bool drifted = false;
	int rc;

	err_clear(&err);
	memset(ps, 0, sizeof(*ps));
	if (!(*adopted = adopt_state(c, v, ps))) {
		if ((rc = first_decision(c, &v->topo, &v->dec, &err)) != 0) {
			if (rc > 0)
				loop_exit(c, rc, &err);
			return rc;
		}
		/* Pylon has not started yet in this shape: our decision
		 * is the one to write. */
		if (v->topo.init_fallback && !c->supervising) {
			rc = act_as_init(c, &v->dec, &err);
			loop_exit(c, rc, rc ? &err : NULL);
			return rc ? rc : -1;
		}
		first = v->dec;
		drifted = adopt_env_file(c, &v->dec);
	} else if (v->topo.init_fallback && !c->supervising) {
		/* A plain init container after init: init proved the bus
		 * and wrote the env file; report what it did not, exit. */
		if (c->proxy != NULL) {
			rc = act_as_init(c, &v->dec, &err);
			loop_exit(c, rc, &err);
			return rc;
		}
		log_info(
		    "serve: this container is a plain init container "
		    "(the cluster has no SidecarContainers) and init already "
		    "wrote %s; exiting so Pylon can start",
		    c->opts->env_file);
		report_rest(c, &v->dec, ps,
		    "bus proven by init; env file "
		    "written (init fallback)");
		loop_exit(c, 0, NULL);
		return -1;
	}
	pthread_mutex_lock(&c->st.mu);
	c->st.s.decided = true;
	c->st.s.adopted = *adopted;
	c->st.s.dec = v->dec;
	c->st.s.start_mode = v->dec.mode;
	c->st.s.heartbeat_ms = now_ms();
	pthread_mutex_unlock(&c->st.mu);
	if (drifted)
		drift_apply(c, v, 0, &first, &err);
	return 0;
}

/* Redis mode: the proof (adopted from init, or our one PUBLISH).
 * Supervising: the decision goes into CMD's environment. */
static int
loop_prove(struct serve_ctx *c, struct loop_vars *v, const struct pod_state *ps,
    bool adopted, double *latency)
{
	const struct options *o = c->opts;
	struct bus_result res;
	struct agent_err err;
	int rc;

	*latency = -1;
	err_clear(&err);
	if (v->dec.mode == MODE_REDIS && adopted && ps->proven) {
		*latency = ps->latency_ms;
	} else if (v->dec.mode == MODE_REDIS) {
		if ((rc = first_proof(c, &v->dec, &v->sess, &res, &err)) != 0) {
			if (rc > 0)
				loop_exit(c, rc, &err);
			return rc;
		}
		*latency = res.latency_ms;
		v->opened = true;
	}
	if (c->supervising &&
	    (rc = env_apply(flow_pylon_url(o, &v->dec), v->dec.namespace,
	         v->dec.cluster_required, &err)) != 0) {
		loop_exit(c, rc, &err);
		return rc;
	}
	pthread_mutex_lock(&c->st.mu);
	if (v->dec.mode == MODE_REDIS) {
		c->st.s.proven = true;
		c->st.s.bus_ok = true;
		c->st.s.latency_ms = *latency;
		c->st.s.bus_error[0] = '\0';
	}
	c->st.s.started = true;
	c->st.s.phase[0] = '\0';
	if (c->supervising)
		c->child_start = true;
	pthread_mutex_unlock(&c->st.mu);
	return 0;
}

/* The start line and the ready report (init reported an adopted one). */
static void
loop_report_start(struct serve_ctx *c, const struct loop_vars *v,
    const struct pod_state *ps, bool adopted, double latency)
{
	char msg[256];

	if (adopted) {
		log_info("serve: checking the bus init proved (%s mode)",
		    mode_name(v->dec.mode));
		report_rest(c, &v->dec, ps,
		    v->dec.mode == MODE_REDIS
		        ? "bus proven by init; serve adopted it"
		        : "NoopBus: PYLON_CLUSTER_BUS left unset");
		return;
	}
	report_log_decision(&v->dec, v->dec.mode == MODE_REDIS ? latency : -1);
	if (v->dec.mode == MODE_REDIS)
		snprintf(msg, sizeof(msg), "bus proven in %.1f ms", latency);
	else
		snprintf(msg, sizeof(msg),
		    "NoopBus: PYLON_CLUSTER_BUS left "
		    "unset");
	report_platform(c->opts, &v->dec, REPORT_KIND_READY, msg);
}

/* Checks every --interval and resyncs every --resync until stopped. */
static void
loop_steady(struct serve_ctx *c, struct loop_vars *v)
{
	const struct options *o = c->opts;
	bool redis = v->dec.mode == MODE_REDIS;
	int64_t now, next_check, next_resync, next;

	/* Adopted: open the one connection and measure right away.  After
	 * our own proof the first check waits an interval, so Redis has
	 * dropped the proof's subscription before NUMSUB counts. */
	if (redis && !c->stop && v->sess == NULL)
		bus_tick(c, v);
	now = now_ms();
	next_check = now + o->interval_ms;
	/* The first resync at a uniformly random point of the period, so
	 * a fleet that rolled out together does not resync together. */
	next_resync = now + (int64_t)(random_unit() * (double)o->resync_ms);
	while (!c->stop) {
		now = now_ms();
		next = next_resync;
		if (redis && next_check < next)
			next = next_check;
		if (now < next) {
			nap(c, next - now > 200 ? 200 : next - now);
			continue;
		}
		if (redis && now >= next_check) {
			bus_tick(c, v);
			next_check = now_ms() + check_delay(c);
		}
		if (!c->stop && now_ms() >= next_resync) {
			resync_tick(c, v);
			next_resync = now_ms() + resync_delay(o, v->disc_fails);
		}
	}
}

void *
serve_loop(void *arg)
{
	struct serve_ctx *c = arg;
	struct loop_vars v;
	struct pod_state ps;
	bool adopted = false;
	double latency = -1;

	memset(&v, 0, sizeof(v));
	if (loop_decide(c, &v, &ps, &adopted) == 0 &&
	    loop_prove(c, &v, &ps, adopted, &latency) == 0) {
		loop_report_start(c, &v, &ps, adopted, latency);
		loop_steady(c, &v);
	}
	if (v.sess != NULL)
		bus_session_close(v.sess);
	pthread_mutex_lock(&c->st.mu);
	c->loop_done = true;
	pthread_mutex_unlock(&c->st.mu);
	return NULL;
}
