/*
 * state.c - the pod-start state file beside the env file (SPEC 5, 10:
 * one decision and one proof per pod start, whatever the shape).
 *
 * `init` (and serve acting as init) writes <env-file>.state next to the
 * env file: the decision, the proof's latency and the topology with the
 * adapter's resync key (the owner chain's end).  A `serve` sidecar that
 * starts after it in the same pod adopts that instead of discovering and
 * publishing again.  No secret is in it (the Redis URL stays in the env
 * file); it is written atomically (temp file, rename), mode 0600, and not
 * fsync()ed: it is advisory (a missing or malformed one makes serve
 * decide again) and init rewrites it on every start (docs/decisions.md).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "agent.h"

#define STATE_MAX (64 * 1024)
#define STATE_VERSION 1

int
state_path(const char *env_file, char *out, size_t n)
{
	int w = snprintf(out, n, "%s.state", env_file ? env_file : "");

	return env_file != NULL && *env_file != '\0' && w > 0 && (size_t)w < n
	    ? 0
	    : -1;
}

/* The error for a temp file that cannot be created in path's directory. */
static int
replace_create_failed(const char *path, const struct atomic_how *how,
    char *dirc, struct agent_err *err)
{
	const char *dir, *why = strerror(errno);

	snprintf(dirc, strlen(path) + 1, "%s", path);
	dir = dirname(dirc);
	if (how->what == NULL)
		return err_set(err, EXIT_AGENT_CANTCREAT,
		    "cannot create a file in %s: %s", dir, why);
	return err_set(err, EXIT_AGENT_CANTCREAT,
	    "cannot create the %s in %s: %s%s%s%s", how->what, dir, why,
	    how->create_hint ? " (" : "",
	    how->create_hint ? how->create_hint : "",
	    how->create_hint ? ")" : "");
}

/* Writes all of data to fd. */
static int
write_all(int fd, const char *data, size_t len)
{
	size_t off = 0;
	ssize_t w;

	while (off < len) {
		if ((w = write(fd, data + off, len - off)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)w;
	}
	return 0;
}

int
write_file_replace(const char *path, const char *data, size_t len,
    const struct atomic_how *how, struct agent_err *err)
{
	char *tmp = NULL, *dirc = NULL;
	int fd = -1, dfd, rc = 0;

	if ((dirc = a_strdup(path)) == NULL ||
	    (tmp = a_malloc(strlen(path) + 16)) == NULL) {
		rc = err_oom(err, how->what ? how->what : "file");
		goto out;
	}
	sprintf(tmp, "%s.tmp.XXXXXX", path);
	if ((fd = mkstemp(tmp)) == -1) {
		rc = replace_create_failed(path, how, dirc, err);
		goto out;
	}
	if (fchmod(fd, (mode_t)how->mode) == -1 || write_all(fd, data, len) ||
	    (how->fsync_file && fsync(fd) == -1))
		goto fail;
	rc = close(fd);
	fd = -1;
	if (rc == -1 || rename(tmp, path) == -1)
		goto fail;
	if (how->fsync_dir &&
	    (dfd = open(dirname(dirc), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) !=
	        -1) {
		(void)fsync(dfd);
		close(dfd);
	}
	goto out;
fail:
	if (how->what == NULL)
		rc = err_set(err, EXIT_AGENT_CANTCREAT, "cannot write %s: %s",
		    path, strerror(errno));
	else
		rc = err_set(err, EXIT_AGENT_CANTCREAT,
		    "cannot write the %s %s: %s", how->what, path,
		    strerror(errno));
	if (fd != -1)
		close(fd);
	unlink(tmp);
out:
	a_free(tmp);
	a_free(dirc);
	return rc;
}

int
write_file_atomic(const char *path, const char *data, size_t len, unsigned mode,
    bool durable, struct agent_err *err)
{
	const struct atomic_how how = {NULL, NULL, mode, durable, durable};
	int rc;

	if (strlen(path) + sizeof(".tmp.XXXXXX") > 4096)
		return err_set(
		    err, EXIT_AGENT_CONFIG, "%s: path too long", path);
	if ((rc = write_target_ok(path, "file", err)) != 0)
		return rc;
	(void)tmp_sweep(path);
	return write_file_replace(path, data, len, &how, err);
}

static bool
add_str(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v ? v : "") != NULL;
}

static bool
add_num(cJSON *o, const char *k, double v)
{
	return cJSON_AddNumberToObject(o, k, v) != NULL;
}

static bool
state_topology(cJSON *o, const struct topology *t)
{
	cJSON *j = cJSON_AddObjectToObject(o, "topology");
	bool ok = j != NULL;

	if (!ok)
		return false;
	ok &= add_str(j, "platform", t->platform);
	ok &= add_str(j, "instance", t->instance);
	ok &= add_str(j, "pod_namespace", t->pod_namespace);
	ok &= add_num(j, "base", t->base);
	ok &= add_str(j, "base_src", t->base_src);
	ok &= add_num(j, "hpa_max", t->hpa_max);
	ok &= add_str(j, "hpa_src", t->hpa_src);
	ok &= add_num(j, "colours", t->colours);
	ok &= add_str(j, "colours_src", t->colours_src);
	ok &= add_num(j, "surge", t->surge);
	ok &= add_str(j, "surge_src", t->surge_src);
	ok &= add_str(j, "chain", t->chain);
	ok &=
	    cJSON_AddBoolToObject(j, "init_fallback", t->init_fallback) != NULL;
	ok &= add_str(j, "fallback_of", t->fallback_of);
	return ok;
}

char *
state_render(const struct pod_state *ps)
{
	const struct decision *d = &ps->dec;
	cJSON *o;
	char *txt = NULL, *out = NULL;
	bool ok;

	if ((o = cJSON_CreateObject()) == NULL)
		return NULL;
	ok = add_num(o, "version", STATE_VERSION);
	ok &= add_str(o, "agent", AGENT_VERSION);
	ok &= add_str(o, "mode", mode_name(d->mode));
	ok &= cJSON_AddBoolToObject(o, "forced", d->forced) != NULL;
	ok &= cJSON_AddBoolToObject(
	          o, "discovery_failed", d->discovery_failed) != NULL;
	ok &= cJSON_AddBoolToObject(
	          o, "cluster_required", d->cluster_required) != NULL;
	ok &= add_num(o, "peers", d->peers);
	ok &= add_str(o, "reason", d->reason);
	ok &= add_str(o, "platform", d->platform);
	ok &= add_str(o, "instance", d->instance);
	ok &= add_str(o, "namespace", d->namespace);
	ok &= add_str(o, "channel", d->channel);
	ok &= cJSON_AddBoolToObject(o, "proven", ps->proven) != NULL;
	ok &= add_num(o, "latency_ms", ps->latency_ms);
	ok &= add_num(o, "reported", ps->reported);
	ok &= state_topology(o, &ps->topo);
	if (ok && (txt = cJSON_PrintUnformatted(o)) != NULL)
		out = a_strdup(txt);
	if (txt != NULL)
		cJSON_free(txt);
	cJSON_Delete(o);
	return out;
}

int
state_write(
    const char *env_file, const struct pod_state *ps, struct agent_err *err)
{
	char path[4096], *txt;
	int rc;

	if (state_path(env_file, path, sizeof(path)) != 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "no env file path for "
		    "the state file");
	if ((txt = state_render(ps)) == NULL)
		return err_oom(err, "state file");
	rc = write_file_atomic(path, txt, strlen(txt), 0600, false, err);
	a_free(txt);
	return rc;
}

/* Copies a string member; false when absent or too long. */
static bool
get_str(const cJSON *o, const char *k, char *out, size_t n)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
		return false;
	memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
	return true;
}

static bool
get_int(const cJSON *o, const char *k, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6)
		return false;
	*out = (int)v->valuedouble;
	return true;
}

static bool
get_bool(const cJSON *o, const char *k)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static bool
parse_topology(const cJSON *j, struct topology *t)
{
	bool ok;

	if (!cJSON_IsObject(j))
		return false;
	ok = get_str(j, "platform", t->platform, sizeof(t->platform));
	ok &= get_str(j, "instance", t->instance, sizeof(t->instance));
	ok &= get_str(
	    j, "pod_namespace", t->pod_namespace, sizeof(t->pod_namespace));
	ok &= get_int(j, "base", &t->base);
	ok &= get_str(j, "base_src", t->base_src, sizeof(t->base_src));
	ok &= get_int(j, "hpa_max", &t->hpa_max);
	ok &= get_str(j, "hpa_src", t->hpa_src, sizeof(t->hpa_src));
	ok &= get_int(j, "colours", &t->colours);
	ok &= get_str(j, "colours_src", t->colours_src, sizeof(t->colours_src));
	ok &= get_int(j, "surge", &t->surge);
	ok &= get_str(j, "surge_src", t->surge_src, sizeof(t->surge_src));
	ok &= get_str(j, "chain", t->chain, sizeof(t->chain));
	t->init_fallback = get_bool(j, "init_fallback");
	if (!get_str(j, "fallback_of", t->fallback_of, sizeof(t->fallback_of)))
		t->fallback_of[0] = '\0';
	return ok;
}

int
state_parse(
    const char *text, size_t len, struct pod_state *ps, struct agent_err *err)
{
	struct decision *d = &ps->dec;
	cJSON *o;
	char mode[16];
	const cJSON *lat;
	bool ok;
	int ver = 0, rep;

	memset(ps, 0, sizeof(*ps));
	if ((o = cJSON_ParseWithLength(text, len)) == NULL ||
	    !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return err_set(err, EXIT_AGENT_CONFIG, "not a JSON object");
	}
	ok = get_int(o, "version", &ver) && ver == STATE_VERSION;
	ok &= get_str(o, "mode", mode, sizeof(mode));
	d->mode = strcmp(mode, "redis") == 0 ? MODE_REDIS
	    : strcmp(mode, "noop") == 0      ? MODE_NOOP
	                                     : MODE_AUTO;
	ok &= d->mode != MODE_AUTO;
	d->forced = get_bool(o, "forced");
	d->discovery_failed = get_bool(o, "discovery_failed");
	d->cluster_required = get_bool(o, "cluster_required");
	ok &= get_int(o, "peers", &d->peers);
	ok &= get_str(o, "reason", d->reason, sizeof(d->reason));
	ok &= get_str(o, "platform", d->platform, sizeof(d->platform));
	ok &= get_str(o, "instance", d->instance, sizeof(d->instance));
	ok &= get_str(o, "namespace", d->namespace, sizeof(d->namespace));
	ok &= get_str(o, "channel", d->channel, sizeof(d->channel));
	ps->proven = get_bool(o, "proven");
	lat = cJSON_GetObjectItemCaseSensitive(o, "latency_ms");
	ps->latency_ms = cJSON_IsNumber(lat) ? lat->valuedouble : -1;
	if (!get_int(o, "reported", &rep))
		rep = 0;
	ps->reported = (unsigned)rep &
	    (REPORT_ANNOTATIONS | REPORT_EVENTS | REPORT_METADATA);
	ok &= parse_topology(
	    cJSON_GetObjectItemCaseSensitive(o, "topology"), &ps->topo);
	cJSON_Delete(o);
	if (!ok || !namespace_valid(d->namespace))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "not a state file of "
		    "this agent version (a field is missing or malformed)");
	return 0;
}

int
state_read(const char *env_file, struct pod_state *ps, struct agent_err *err)
{
	char path[4096], *text = NULL;
	size_t len = 0;
	int rc;

	if (state_path(env_file, path, sizeof(path)) != 0)
		return err_set(err, EXIT_AGENT_CONFIG, "no env file path");
	if (access(path, F_OK) != 0)
		return err_set(err, EXIT_AGENT_CONFIG, "%s: not there", path);
	if ((rc = read_file_opt(path, STATE_MAX, true, &text, &len, err)) != 0)
		return rc;
	rc = state_parse(text, len, ps, err);
	a_free(text);
	if (rc != 0)
		err_prefix(err, "%s", path);
	return rc;
}
