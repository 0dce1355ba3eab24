/*
 * agent.h - the core internal header of pylon-agent.
 *
 * Data flows one way: options -> platform.discover -> topology -> decide ->
 * decision -> bus proof -> apply (env file, execve, serve) -> report.
 * Each piece has its own header for its private API (bus.h, http_client.h,
 * serve.h); everything shared by several pieces lives here.
 *
 * Ownership: functions named *_release free what a struct owns but not the
 * struct itself; *_free free both.  Strings returned as "char *" are owned
 * by the caller unless the comment says otherwise.
 */
#ifndef PYLON_AGENT_H
#define PYLON_AGENT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_VERSION "0.1.0"

/* UNITTEST exposes file-local functions to tests/unit (see Makefile). */
#ifdef UNITTEST
#define STATIC
#else
#define STATIC static
#endif

#define AGENT_UNUSED __attribute__((unused))
#define AGENT_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Exit codes (sysexits.h values, SPEC 8). */
#define EXIT_AGENT_OK 0
#define EXIT_AGENT_USAGE 64 /* EX_USAGE */
#define EXIT_AGENT_UNPROVEN 69 /* EX_UNAVAILABLE: bus not proven */
#define EXIT_AGENT_SOFTWARE 70 /* EX_SOFTWARE: out of memory, bug */
#define EXIT_AGENT_CANTCREAT 73 /* EX_CANTCREAT: env file not written */
#define EXIT_AGENT_DISCOVERY 75 /* EX_TEMPFAIL: discovery failed */
#define EXIT_AGENT_CONFIG 78 /* EX_CONFIG: misconfiguration */

/* ---- errors (err.c) ------------------------------------------------ */

#define AGENT_ERR_LEN 1024

/*
 * An error is filled once, where it happens, with what/where/what-to-do,
 * returned up and printed once by main.  code is an exit code.
 */
struct agent_err {
	int code;
	char msg[AGENT_ERR_LEN];
};

/* Sets code and message; returns code so callers can "return err_set()". */
int
err_set(struct agent_err *, int code, const char *fmt, ...) AGENT_PRINTF(3, 4);
int err_setv(struct agent_err *, int code, const char *fmt, va_list);
/* Prepends context: "prefix: <old message>". Keeps the code. */
int err_prefix(struct agent_err *, const char *fmt, ...) AGENT_PRINTF(2, 3);
void err_clear(struct agent_err *);
int err_oom(struct agent_err *, const char *where);

/* ---- allocation (alloc.c): the one swappable allocator ------------- */

void *a_malloc(size_t);
void *a_calloc(size_t, size_t);
void *a_realloc(void *, size_t);
char *a_strdup(const char *);
char *a_strndup(const char *, size_t);
void a_free(void *);
/* Test hook: the nth allocation from now (1-based) and every later one
 * fails; 0 disables.  Also set from PYLON_AGENT_FAIL_ALLOC at start. */
void alloc_fail_after(long n);
long alloc_count(void);
/* Allocations that failed so far: a parser that returns NULL (cJSON) can
 * tell "out of memory" from "malformed" by comparing it around the call. */
long alloc_failures(void);
/* Routes cJSON through a_malloc/a_free. */
void alloc_init_cjson(void);

/* ---- logging (log.c): the single redaction point -------------------- */

enum log_format { LOG_TEXT, LOG_JSON };

void log_init(enum log_format);
/* Every later log line, and redact() output, shows s as "***". */
void log_add_secret(const char *s);
void log_clear_secrets(void);
/* Copies in to out (size n) with every registered secret replaced. */
char *redact(const char *in, char *out, size_t n);
/* Replaces every control character (< 0x20, 0x7f) by '?' in place: what a
 * one-line output (a text log line, the termination log) shows. */
void fold_controls(char *s);
void log_info(const char *fmt, ...) AGENT_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) AGENT_PRINTF(1, 2);
void log_warn(const char *fmt, ...) AGENT_PRINTF(1, 2); /* + errno */
void log_errorx(const char *fmt, ...) AGENT_PRINTF(1, 2);
void log_debug(const char *fmt, ...) AGENT_PRINTF(1, 2);
/* Same line formats, with extra JSON fields (a pre-rendered ",\"k\":v"
 * fragment, or NULL) in json mode. */
void log_line(const char *level, const char *fields, const char *fmt, ...)
    AGENT_PRINTF(3, 4);
bool log_debug_enabled(void);

/* ---- time (util.c) ---------------------------------------------------- */

int64_t now_ms(void); /* CLOCK_MONOTONIC */
double now_ms_f(void);
/* "500ms", "5s", "2m", "1h" -> ms.  A bare number is an error. */
int parse_duration(const char *s, long *ms, struct agent_err *err);
/* RFC 3339 UTC with seconds: 2026-11-28T23:00:00Z (buf >= 21). */
void iso8601_now(char *buf, size_t n);
/* RFC 3339 with microseconds (K8s MicroTime), buf >= 28. */
void iso8601_now_micro(char *buf, size_t n);
/* Cryptographic-quality random bytes (getrandom). */
void random_bytes(void *, size_t);
/* Uniform random double in [0,1). */
double random_unit(void);
/* Sleeps ms (restarting on EINTR unless *stop becomes true). */
void sleep_ms(long ms, volatile int *stop);
/* Reads a whole small file (cap bytes) into a NUL-terminated buffer. */
int read_file(const char *path, size_t cap, char **out, size_t *len,
    struct agent_err *err);
/* The same; regular: refuse anything but a regular file (a FIFO or a
 * device at the path is an error at once, never a block). */
int read_file_opt(const char *path, size_t cap, bool regular, char **out,
    size_t *len, struct agent_err *err);
/* "a FIFO (named pipe)", "a directory", ... for st_mode. */
const char *file_type_name(unsigned mode);
/* The atomic writers' temp files: PATH.tmp.XXXXXX.  tmp_sweep removes
 * stale ones of PATH (regular files of ours, older than TMP_STALE_S). */
#define TMP_STALE_S 10
int tmp_sweep(const char *path);
/* 0 when PATH is absent, a regular file or a symlink (rename replaces
 * the link); else an error naming what is there. */
int write_target_ok(const char *path, const char *what, struct agent_err *err);
/* Strips trailing whitespace in place. */
void rstrip(char *s);
bool namespace_valid(const char *ns);
/* Capped exponential backoff, equal jitter: step n (0-based) waits
 * [d/2, d] with d = min(base * 2^n, cap).  The one formula of the agent. */
long backoff_jitter_ms(long base, int n, long cap);
bool url_has_userinfo(const char *url);

/* ---- options (options.c): the settings table ------------------------- */

enum command {
	CMD_NONE,
	CMD_DECIDE,
	CMD_INIT,
	CMD_EXEC,
	CMD_SERVE,
	CMD_PROBE,
	CMD_CHECK,
	CMD_VERSION
};
enum platform_kind {
	PLATFORM_AUTO,
	PLATFORM_KUBERNETES,
	PLATFORM_FLY,
	PLATFORM_STATIC
};
enum bus_mode { MODE_AUTO, MODE_REDIS, MODE_NOOP };
enum disc_policy { DISC_FAIL, DISC_REDIS_IF_CONFIGURED, DISC_NOOP };
enum drift_policy { DRIFT_REPORT, DRIFT_UNREADY };
enum deaf_policy { DEAF_HEAL, DEAF_REPORT, DEAF_OFF };
enum output_fmt { OUT_TEXT, OUT_JSON, OUT_ENV };

#define REPORT_LOG 0x1u
#define REPORT_ANNOTATIONS 0x2u
#define REPORT_EVENTS 0x4u
#define REPORT_METADATA 0x8u

struct options {
	enum command command;
	char *config; /* --config file */
	enum platform_kind platform;
	enum bus_mode mode;
	char *redis_url; /* resolved: flag/env/file or
						 * the content of redis_url_file */
	char *redis_url_file;
	char *redis_ca_file;
	bool pylon_tls; /* --pylon-tls: rediss:// ok */
	bool cluster_required; /* export PYLON_CLUSTER_REQUIRED */
	char *pass_env; /* --pass-env NAME,... */
	char *bus_proxy; /* --bus-proxy ADDR (serve,
						 * init): Pylon's local
						 * endpoint for rediss:// */
	char *namespace;
	int replicas;
	bool replicas_set;
	int min_peers;
	char *fly_group; /* resolved default applied */
	char *app_selector;
	bool count_surge;
	enum disc_policy on_discovery_error;
	char *env_file;
	bool env_file_set; /* exec: given explicitly */
	long timeout_ms;
	bool timeout_set; /* probe: given explicitly */
	long interval_ms;
	long resync_ms;
	char *listen;
	unsigned report; /* REPORT_* bits */
	enum drift_policy on_drift;
	enum drift_policy on_bus_loss; /* report|unready */
	long count_interval_ms; /* NUMSUB period */
	long deaf_grace_ms;
	enum deaf_policy deaf_pylon; /* heal|report|off */
	long api_timeout_ms;
	char *kubeconfig;
	char *serviceaccount_dir;
	char *fly_api_url;
	char *fly_resolver; /* "[fdaa::3]:53", "none" */
	long fly_boot_spread_ms;
	enum log_format log_format;
	enum output_fmt output;
	bool prove; /* decide --prove */
	int cmd_argc; /* after "--" (exec, serve) */
	char **cmd_argv; /* points into argv; NULL-ended */
};

/* Parses argv (argv[0] is the command name) + environment + config file.
 * Returns 0, EXIT_AGENT_USAGE or EXIT_AGENT_CONFIG.  --help sets
 * *help_shown and returns 0 after printing. */
int options_parse(struct options *, enum command, int argc, char **argv,
    bool *help_shown, struct agent_err *);
void options_release(struct options *);
enum command command_from_name(const char *);
const char *command_name(enum command);
void options_usage_main(void *fp);
/* Writes "key: value" lines of the effective configuration (secrets
 * redacted) - used by --help and tests. */
void options_dump(const struct options *, void *fp);
/* Markdown table of every setting (docs/reference.md is checked against
 * it by the tests; `pylon-agent version --reference` prints it). */
void options_reference(void *fp);
/* Lookup helpers for tests and the reference doc generator. */
const char *mode_name(enum bus_mode);
const char *platform_name(enum platform_kind);

/* ---- topology, decision (decide.c: pure, no I/O) ----------------------- */

#define SRC_LEN 256

/*
 * What a platform adapter saw.  decide() turns it into a peer count:
 *   peers = max(base, hpa_max) + colours + (count_surge ? surge : 0)
 *   peers = max(peers, min_peers)
 * The *_src strings describe each input for the reason string.
 */
struct topology {
	char platform[16]; /* "static", "kubernetes", "fly" */
	char instance[256]; /* pod name, machine id, hostname */
	char pod_namespace[254]; /* kubernetes only */
	int base; /* own controller replicas, machines */
	char base_src[SRC_LEN]; /* "deployment/pylon replicas=3" */
	int hpa_max; /* 0 when no HPA */
	char hpa_src[SRC_LEN]; /* "hpa/pylon max=10" */
	int colours; /* other blue/green colours */
	char colours_src[SRC_LEN]; /* "deployment/pylon-green replicas=2" */
	int surge; /* pods a rollout may add */
	char surge_src[SRC_LEN]; /* "maxSurge=25%" */
	char excluded[512]; /* what was seen and not counted */
	int api_requests; /* requests this discovery made */
	bool init_fallback; /* own container is a plain init
					 * container (no SidecarContainers) */
	char fallback_of[64]; /* the container init_fallback is
					 * about (PYLON_AGENT_CONTAINER_NAME) */
	char chain[512]; /* the adapter's resync key: what it
					 * re-reads (the owner chain's end
					 * on K8s, the DNS answer on Fly);
					 * "" when resync rediscovers */
};

struct decision {
	enum bus_mode mode; /* MODE_REDIS or MODE_NOOP */
	bool forced; /* --mode redis|noop */
	bool discovery_failed;
	int peers;
	char reason[1024];
	char platform[16];
	char instance[256];
	char namespace[65];
	char channel[96];
	bool cluster_required; /* redis mode and --cluster-required */
};

/* Pylon's channel for a namespace: "<ns>:cluster:bus" (SPEC 1). */
void decide_channel(const char *ns, char *out, size_t n);
/* Pure: topology + options -> decision.  Returns 0 or EXIT_AGENT_CONFIG
 * (peers > 1, or --mode redis, without a Redis URL, or with one the
 * configured Pylon cannot use: redis_url_pylon_check). */
int decide(const struct topology *, const struct options *, struct decision *,
    struct agent_err *);
/* PYLON_URL_* flags of the compatibility gate for these options. */
unsigned decide_url_flags(const struct options *);
/* Pure: discovery failed with *why; applies --on-discovery-error. */
int decide_discovery_failed(const struct options *, const char *platform,
    const struct agent_err *why, struct decision *, struct agent_err *);

/* ---- platforms (platform_*.c, kube.c, fly.c) --------------------------- */

enum report_kind {
	REPORT_KIND_READY,
	REPORT_KIND_UNAVAILABLE,
	REPORT_KIND_DRIFT,
	REPORT_KIND_DEAF
};

/*
 * One adapter per platform.  Unsupported operations are NULL.
 * discover fills *topo (already zeroed, platform name set) and returns 0,
 * or an exit code with *err filled (EXIT_AGENT_DISCOVERY for API trouble,
 * EXIT_AGENT_CONFIG for bad local configuration).
 * report publishes the decision through the reporters in opts->report that
 * the platform supports; failures are returned as warnings (the caller
 * logs them, never exits on them).
 */
/*
 * Who this process is on its platform, for check's table and JSON.
 * scope_label names the scope row ("namespace", "app"; NULL: no row);
 * group (may be empty) is shown after it.  count_is_reason says the
 * counted line already is the whole reason when the decision follows the
 * count.  release_machine: a one-off machine of a release step.
 */
struct platform_identity {
	const char *scope_label;
	char scope[64];
	char group[64];
	bool count_is_reason;
	bool release_machine;
};

struct cJSON;

struct platform {
	const char *name;
	bool (*detect)(const struct options *);
	int (*discover)(
	    const struct options *, struct topology *, struct agent_err *);
	int (*report)(const struct options *, const struct decision *,
	    enum report_kind, const char *message, struct agent_err *);
	/* serve's cheap re-read: *t holds the previous topology (chain
	 * set) and is updated in place.  Returns like discover, or
	 * PLATFORM_RESYNC_FULL when only a full discover can tell. */
	int (*resync)(
	    const struct options *, struct topology *, struct agent_err *);
	/* options' last step: fill the adapter's defaults (may be NULL). */
	int (*resolve)(struct options *, struct agent_err *);
	/* Fills *id from opts, the topology and the environment. */
	void (*identity)(const struct options *, const struct topology *,
	    struct platform_identity *);
	/* Adds the adapter's object to check's JSON root (may be NULL). */
	void (*identity_json)(const struct platform_identity *, struct cJSON *);
	/* Environment variables holding the adapter's credentials, which a
	 * child (Pylon) never gets; NULL-terminated, or NULL. */
	const char *const *secret_env;
};

#define PLATFORM_RESYNC_FULL (-2)

extern const struct platform platform_static;
extern const struct platform platform_kubernetes;
extern const struct platform platform_fly;
#ifdef UNITTEST
/* fly.c's file-local parsers, visible to tests/unit. */
int fly_auth_header(const char *token, char *out, size_t n);
int fly_count(const char *body, size_t len, const char *app, const char *group,
    const char *self_id, bool self_serving, struct topology *t,
    struct agent_err *err);
#endif

const struct platform *platform_select(const struct options *);
/* The adapter named NAME, or NULL. */
const struct platform *platform_by_name(const char *name);
/* Every adapter's resolve hook, in registry order. */
int platform_resolve_all(struct options *, struct agent_err *);
/* NAME (n bytes, not NUL-terminated) is an adapter's secret_env. */
bool platform_secret_env(const char *name, size_t n);

/* ---- flow (flow.c): the steps every command composes ------------------- */

struct bus_result;

/* Select the platform, discover, decide (with the discovery policy). */
int flow_decide(const struct options *, struct topology *, struct decision *,
    struct agent_err *);
/* serve's resync: the adapter's cheap re-read of *t when it has one
 * (t->chain set), else a full discovery; then decide.  *t is updated. */
int flow_resync(const struct options *, struct topology *, struct decision *,
    struct agent_err *);
/* Redis mode: prove the bus until opts->timeout_ms.  Noop: no-op. */
int flow_prove(const struct options *, const struct decision *,
    struct bus_result *, struct agent_err *);
/* The start log line (SPEC 7). latency_ms < 0 when not proven. */
void report_log_decision(const struct decision *, double latency_ms);
/* Calls the platform's report for opts->report; logs failures. */
void report_platform(const struct options *, const struct decision *,
    enum report_kind, const char *message);

/* ---- env file (envfile.c) ------------------------------------------- */

/* Atomic write (temp + fsync + rename, 0600).  redis_url may be NULL in
 * noop mode. */
int envfile_write(const char *path, const struct decision *,
    const char *redis_url, struct agent_err *);
/* Renders the file into a malloc'd string (used by decide --output env). */
char *envfile_render(
    const struct decision *, const char *redis_url, struct agent_err *);

struct envfile {
	char *bus; /* NULL: unset PYLON_CLUSTER_BUS */
	char *namespace; /* NULL when absent */
	char mode[16]; /* from the header comment, "" if absent */
	bool required; /* export PYLON_CLUSTER_REQUIRED='1' */
};

int envfile_read(const char *path, struct envfile *, struct agent_err *);
int envfile_parse(
    const char *text, size_t len, struct envfile *, struct agent_err *);
void envfile_release(struct envfile *);
/* Single-quote a value for POSIX sh; NULL when it holds a newline or
 * NUL (rejected: an env value cannot safely hold them). */
char *shell_quote(const char *value);

/* Applies the decision to this process's environment (setenv/unsetenv). */
int env_apply(const char *bus_url, const char *namespace, bool required,
    struct agent_err *);

/* ---- pod-start state file (state.c) ---------------------------------- */

/* What init decided and proved, for a serve sidecar of the same pod. */
struct pod_state {
	struct decision dec;
	struct topology topo;
	bool proven; /* redis: the envelope came back */
	double latency_ms; /* < 0: none */
	unsigned reported; /* REPORT_* bits init reported */
};

/* The agent's container name: PYLON_AGENT_CONTAINER_NAME, else
 * "pylon-agent" (kube.c). */
const char *kube_container_name(void);

/* ---- the decision as JSON (decision_json.c) -------------------------- */

struct cJSON;
/* What decide and /status show of a decision (SPEC 6). */
struct decision_json {
	const struct decision *d; /* NULL: not decided yet */
	const char *reason; /* shown when d is NULL */
	enum bus_mode mode; /* the mode shown (serve: the start mode) */
	const char *redis_url; /* redacted; NULL or "": null */
	bool proven;
	double latency_ms; /* < 0: null */
	const char *error; /* redacted; NULL or "": null */
	bool drift;
};
/* mode .. channel and the "redis" object (returned, for the caller's own
 * keys); *ok turns false on an allocation failure. */
struct cJSON *
decision_json_begin(struct cJSON *root, const struct decision_json *, bool *ok);
/* instance, drift, discovery_failed. */
void
decision_json_end(struct cJSON *root, const struct decision_json *, bool *ok);
/* Adds s as a string, or null when s is NULL or empty. */
bool json_str_or_null(struct cJSON *o, const char *k, const char *s);
/* Milliseconds to the microsecond (no libm); < 0 stays. */
double latency_round(double ms);

/* ---- deaf Pylon (deaf.c): CLIENT INFO / CLIENT LIST answers ---------- */

/* The IP of the addr= field of a CLIENT INFO line. */
bool deaf_client_ip(const char *info, size_t len, char *ip, size_t n);
/* Connections with a subscription in a CLIENT LIST answer (*total) and
 * how many of them come from own_ip (the return value). */
int
deaf_count_own(const char *list, size_t len, const char *own_ip, int *total);
/* The same, and the id= of the first max of our own subscribed
 * connections into ids (*nids of them), for CLIENT LIST ID next time. */
int deaf_own_ids(const char *list, size_t len, const char *own_ip, int *total,
    long long *ids, int max, int *nids);

/* <env_file>.state into out; -1 when there is no path. */
int state_path(const char *env_file, char *out, size_t n);
int
state_write(const char *env_file, const struct pod_state *, struct agent_err *);
int state_read(const char *env_file, struct pod_state *, struct agent_err *);
int state_parse(
    const char *text, size_t len, struct pod_state *, struct agent_err *);
char *state_render(const struct pod_state *);
/* Temp file in the same directory, rename; with durable, fsync of the
 * file before the rename and of the directory after it. */
int write_file_atomic(const char *path, const char *data, size_t len,
    unsigned mode, bool durable, struct agent_err *);
/* How write_file_replace names its file in errors, and what it flushes. */
struct atomic_how {
	const char *what; /* "env file": "the env file ..."; NULL: "a file" */
	const char *create_hint; /* after a failed create, in parentheses */
	unsigned mode;
	bool fsync_file; /* before the rename */
	bool fsync_dir; /* after it */
};
/* write_file_atomic's temp file, write and rename, without its checks of
 * the target (write_target_ok, tmp_sweep: the caller's). */
int write_file_replace(const char *path, const char *data, size_t len,
    const struct atomic_how *, struct agent_err *);
/* init: writes the state of this process's last flow_decide/flow_prove
 * beside env_file; a failure is a warning (serve then discovers). */
void flow_state_write(const struct options *, const struct decision *);
/* The URL Pylon gets for a decision: the configured one in redis mode,
 * none in noop mode. */
const char *flow_pylon_url(const struct options *, const struct decision *);
/* init's last step, for init and for serve acting as init: the env file
 * (url: what Pylon gets, NULL in noop mode), then the state file a
 * sidecar adopts (SPEC 5). */
int flow_apply(const struct options *, const struct decision *, const char *url,
    struct agent_err *);

/* ---- cost counters (stats.c, SPEC 10) -------------------------------- */

/* One API request attempt answered with code (0: no HTTP answer). */
void stats_api_request(long code);
/* Up to max (code, count) pairs; code -1: no HTTP answer, -2: other. */
int stats_api_get(long *codes, uint64_t *counts, int max);
uint64_t stats_api_total(void);
void stats_redis_command(void);
uint64_t stats_redis_commands(void);
/* One question to Fly's internal DNS (dns.c), answered or failed. */
void stats_dns_query(bool ok);
void stats_dns_queries(uint64_t *ok, uint64_t *err);

/* ---- spawn (spawn.c): what every child starts with ------------------- */

/* --pass-env: variables kept in the child's environment anyway. */
void spawn_set_pass_env(const char *list);
/* Default dispositions for every signal and an empty mask; async-signal-
 * safe (between fork and exec). */
void spawn_restore_signals(void);
/* True when entry (NAME=value) is the agent's own: PYLON_AGENT_* and
 * FLY_API_TOKEN, unless NAME is in the comma list pass_env. */
bool spawn_env_removed(const char *entry, const char *pass_env);
/* environ minus spawn_env_removed() entries; the array is a_malloc'd, its
 * strings are environ's.  NULL when out of memory. */
char **spawn_child_env(void);

/* ---- commands implemented outside main.c ------------------------------ */

/* check (check.c): preflight for CI and Fly release_command. */
int cmd_check(struct options *, struct agent_err *);

/* ---- termination log (main.c) --------------------------------------- */

void termination_log_write(const char *msg);

#endif /* PYLON_AGENT_H */
