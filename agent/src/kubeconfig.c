/*
 * kubeconfig.c - how to reach the Kubernetes API server: the in-cluster
 * service-account files, or a kubeconfig (libyaml) with client-go's merge
 * rules, and bearer tokens that rotate (token files re-read by path, exec
 * credential plugins re-run on expiry).
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <yaml.h>

#include "agent.h"
#include "kube.h"

#define KUBECONFIG_MAX (1024 * 1024)
#define KUBE_FILE_MAX (256 * 1024)
#define KUBE_FILES_MAX 16
#define EXEC_TIMEOUT_MS 30000
#define EXEC_OUT_MAX (256 * 1024)
#define EXEC_ERR_MAX 4096

extern char **environ;

struct kube_kubeconfig {
	int n;
	yaml_document_t docs[KUBE_FILES_MAX];
	char *dirs[KUBE_FILES_MAX];
	char *names[KUBE_FILES_MAX];
};

/* ---- small YAML document helpers ------------------------------------ */

static const char *
y_scalar(yaml_document_t *d, yaml_node_t *n)
{
	if (n == NULL || n->type != YAML_SCALAR_NODE)
		return NULL;
	(void)d;
	return (const char *)n->data.scalar.value;
}

static yaml_node_t *
y_get(yaml_document_t *d, yaml_node_t *map, const char *key)
{
	yaml_node_pair_t *p;
	const char *k;

	if (map == NULL || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		k = y_scalar(d, yaml_document_get_node(d, p->key));
		if (k != NULL && strcmp(k, key) == 0)
			return yaml_document_get_node(d, p->value);
	}
	return NULL;
}

static const char *
y_str(yaml_document_t *d, yaml_node_t *map, const char *key)
{
	const char *s = y_scalar(d, y_get(d, map, key));

	/* YAML null ("~", "null", empty) counts as unset. */
	if (s != NULL &&
	    (*s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0))
		return NULL;
	return s;
}

static bool
y_true(yaml_document_t *d, yaml_node_t *map, const char *key)
{
	const char *s = y_str(d, map, key);

	return s != NULL &&
	    (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 ||
	        strcmp(s, "TRUE") == 0);
}

/* The entry of list key ("clusters") whose name is name; returns its
 * inner mapping (entry[inner]). */
static yaml_node_t *
y_named(
    yaml_document_t *d, const char *list, const char *inner, const char *name)
{
	yaml_node_t *seq, *it;
	yaml_node_item_t *i;
	const char *nm;

	seq = y_get(d, yaml_document_get_root_node(d), list);
	if (seq == NULL || seq->type != YAML_SEQUENCE_NODE)
		return NULL;
	for (i = seq->data.sequence.items.start;
	     i < seq->data.sequence.items.top; i++) {
		it = yaml_document_get_node(d, *i);
		nm = y_str(d, it, "name");
		if (nm != NULL && strcmp(nm, name) == 0) {
			it = y_get(d, it, inner);
			/* An entry without its body still "sets" the name. */
			return it != NULL ? it : yaml_document_get_node(d, *i);
		}
	}
	return NULL;
}

/* ---- kubeconfig set ------------------------------------------------- */

struct kube_kubeconfig *
kube_kubeconfig_new(void)
{
	return a_calloc(1, sizeof(struct kube_kubeconfig));
}

void
kube_kubeconfig_free(struct kube_kubeconfig *kc)
{
	int i;

	if (kc == NULL)
		return;
	for (i = 0; i < kc->n; i++) {
		yaml_document_delete(&kc->docs[i]);
		a_free(kc->dirs[i]);
		a_free(kc->names[i]);
	}
	a_free(kc);
}

int
kube_kubeconfig_add(struct kube_kubeconfig *kc, const char *text, size_t len,
    const char *dir, const char *name, struct agent_err *err)
{
	yaml_parser_t parser;
	yaml_document_t *doc;
	yaml_node_t *root;
	int rc = 0;

	if (kc->n >= KUBE_FILES_MAX)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "KUBECONFIG lists more than %d files", KUBE_FILES_MAX);
	doc = &kc->docs[kc->n];
	if (!yaml_parser_initialize(&parser))
		return err_oom(err, "kubeconfig parser");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, doc)) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: invalid YAML at line %zu: %s; fix the file "
		    "or point --kubeconfig elsewhere",
		    name, parser.problem_mark.line + 1,
		    parser.problem ? parser.problem : "parse error");
		yaml_parser_delete(&parser);
		return rc;
	}
	yaml_parser_delete(&parser);
	root = yaml_document_get_root_node(doc);
	if (root != NULL && root->type != YAML_MAPPING_NODE) {
		yaml_document_delete(doc);
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: the top level is not a mapping; expected "
		    "apiVersion/kind: Config/clusters/users/contexts",
		    name);
	}
	kc->dirs[kc->n] = a_strdup(dir ? dir : ".");
	kc->names[kc->n] = a_strdup(name ? name : "kubeconfig");
	kc->n++;
	if (kc->dirs[kc->n - 1] == NULL || kc->names[kc->n - 1] == NULL)
		return err_oom(err, "kubeconfig");
	return 0;
}

/* Base64 (whitespace tolerated) -> malloc'd NUL-terminated bytes. */
static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* One base64 digit's value, or -1. */
static int
b64_value(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64_alphabet, c)) == NULL)
		return -1;
	return (int)(p - b64_alphabet);
}

/*
 * Decodes n (a multiple of 4) base64 characters without whitespace into
 * out (n / 4 * 3 bytes); "=" only as the last one or two.  Returns the
 * decoded length, or -1.  (Our own: libcrypto is not loaded for this.)
 */
STATIC int
b64_block_decode(char *out, const char *in, size_t n)
{
	size_t i, k = 0;
	int v[4], j, pad;

	if (n % 4 != 0 || n > (size_t)INT32_MAX)
		return -1;
	for (i = 0; i < n; i += 4) {
		pad = 0;
		for (j = 0; j < 4; j++) {
			if (in[i + j] == '=' && i + 4 == n && j >= 2) {
				v[j] = 0;
				pad++;
				continue;
			}
			if (pad > 0 || (v[j] = b64_value(in[i + j])) < 0)
				return -1;
		}
		out[k++] = (char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[k++] = (char)((v[1] & 0xf) << 4 | v[2] >> 2);
		if (pad < 1)
			out[k++] = (char)((v[2] & 0x3) << 6 | v[3]);
	}
	return (int)k;
}

/* Encodes n bytes into out (4 * ((n + 2) / 3) + 1 bytes, NUL-ended). */
STATIC void
b64_encode(char *out, const unsigned char *in, size_t n)
{
	size_t i, k = 0;
	unsigned w;

	for (i = 0; i + 2 < n; i += 3) {
		w = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 |
		    in[i + 2];
		out[k++] = b64_alphabet[w >> 18 & 63];
		out[k++] = b64_alphabet[w >> 12 & 63];
		out[k++] = b64_alphabet[w >> 6 & 63];
		out[k++] = b64_alphabet[w & 63];
	}
	if (i < n) {
		w = (unsigned)in[i] << 16;
		if (i + 1 < n)
			w |= (unsigned)in[i + 1] << 8;
		out[k++] = b64_alphabet[w >> 18 & 63];
		out[k++] = b64_alphabet[w >> 12 & 63];
		out[k++] = i + 1 < n ? b64_alphabet[w >> 6 & 63] : '=';
		out[k++] = '=';
	}
	out[k] = '\0';
}

static int
b64_decode(const char *in, char **out, size_t *outlen)
{
	char *clean, *buf;
	size_t n = 0, i;
	int r;

	*out = NULL;
	if ((clean = a_malloc(strlen(in) + 1)) == NULL)
		return -1;
	for (i = 0; in[i]; i++)
		if (in[i] != ' ' && in[i] != '\n' && in[i] != '\r' &&
		    in[i] != '\t')
			clean[n++] = in[i];
	clean[n] = '\0';
	if (n == 0 || n % 4 != 0 || (buf = a_malloc(n / 4 * 3 + 1)) == NULL) {
		a_free(clean);
		return -1;
	}
	r = b64_block_decode(buf, clean, n);
	a_free(clean);
	if (r < 0) {
		a_free(buf);
		return -1;
	}
	buf[r] = '\0';
	*out = buf;
	*outlen = (size_t)r;
	return 0;
}

/* Joins a relative path to the kubeconfig's directory. */
static char *
resolve_path(const char *dir, const char *p)
{
	char *s;
	size_t n;

	if (p[0] == '/' || dir == NULL)
		return a_strdup(p);
	n = strlen(dir) + strlen(p) + 2;
	if ((s = a_malloc(n)) == NULL)
		return NULL;
	snprintf(s, n, "%s/%s", dir, p);
	return s;
}

static int
load_pem_field(yaml_document_t *d, yaml_node_t *m, const char *dir,
    const char *key, const char *file_key, const char *where, char **out,
    size_t *outlen, struct agent_err *err)
{
	const char *v;
	char *path;
	size_t len = 0;
	int rc;

	if ((v = y_str(d, m, key)) != NULL) {
		long fails = alloc_failures();

		if (b64_decode(v, out, &len) != 0 && alloc_failures() != fails)
			return err_oom(err, "kubeconfig");
		if (*out == NULL)
			return err_set(err, EXIT_AGENT_CONFIG,
			    "kubeconfig %s: %s is not valid base64; it must be "
			    "the base64 of a PEM block",
			    where, key);
		if (outlen)
			*outlen = len;
		return 0;
	}
	if ((v = y_str(d, m, file_key)) != NULL) {
		if ((path = resolve_path(dir, v)) == NULL)
			return err_oom(err, "kubeconfig");
		rc = read_file(path, KUBE_FILE_MAX, out, &len, err);
		if (rc)
			err_prefix(err, "kubeconfig %s: %s", where, file_key);
		a_free(path);
		if (outlen)
			*outlen = len;
		return rc;
	}
	return 0;
}

static int
dup_to(char **dst, const char *s, struct agent_err *err)
{
	if (s == NULL)
		return 0;
	if ((*dst = a_strdup(s)) == NULL)
		return err_oom(err, "kubeconfig");
	return 0;
}

static int
load_exec(yaml_document_t *d, yaml_node_t *ex, const char *where,
    struct kube_config *cfg, struct agent_err *err)
{
	yaml_node_t *args, *env, *it;
	yaml_node_item_t *i;
	const char *cmd, *mode, *nm, *val;
	size_t na = 0, ne = 0, k;
	char *kv;

	if ((cmd = y_str(d, ex, "command")) == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: exec has no command", where);
	mode = y_str(d, ex, "interactiveMode");
	if (mode != NULL && strcmp(mode, "Always") == 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: exec plugin %s wants interactiveMode "
		    "Always, but pylon-agent runs without a terminal; use a "
		    "token, a client certificate or a non-interactive plugin",
		    where, cmd);
	args = y_get(d, ex, "args");
	env = y_get(d, ex, "env");
	if (args != NULL && args->type == YAML_SEQUENCE_NODE)
		na = (size_t)(args->data.sequence.items.top -
		    args->data.sequence.items.start);
	if (env != NULL && env->type == YAML_SEQUENCE_NODE)
		ne = (size_t)(env->data.sequence.items.top -
		    env->data.sequence.items.start);
	cfg->exec_argv = a_calloc(na + 2, sizeof(char *));
	cfg->exec_env = a_calloc(ne + 1, sizeof(char *));
	if (cfg->exec_argv == NULL || cfg->exec_env == NULL ||
	    (cfg->exec_command = a_strdup(cmd)) == NULL ||
	    (cfg->exec_argv[0] = a_strdup(cmd)) == NULL)
		return err_oom(err, "kubeconfig exec");
	k = 1;
	for (i = na ? args->data.sequence.items.start : NULL;
	     na && i < args->data.sequence.items.top; i++) {
		val = y_scalar(d, yaml_document_get_node(d, *i));
		if (val == NULL)
			continue;
		if ((cfg->exec_argv[k++] = a_strdup(val)) == NULL)
			return err_oom(err, "kubeconfig exec");
	}
	k = 0;
	for (i = ne ? env->data.sequence.items.start : NULL;
	     ne && i < env->data.sequence.items.top; i++) {
		it = yaml_document_get_node(d, *i);
		nm = y_str(d, it, "name");
		val = y_scalar(d, y_get(d, it, "value"));
		if (nm == NULL)
			continue;
		if (val == NULL)
			val = "";
		if ((kv = a_malloc(strlen(nm) + strlen(val) + 2)) == NULL)
			return err_oom(err, "kubeconfig exec");
		sprintf(kv, "%s=%s", nm, val);
		cfg->exec_env[k++] = kv;
	}
	if (dup_to(&cfg->exec_api_version, y_str(d, ex, "apiVersion"), err))
		return err->code;
	if (cfg->exec_api_version == NULL &&
	    dup_to(
	        &cfg->exec_api_version, "client.authentication.k8s.io/v1", err))
		return err->code;
	cfg->exec_provide_cluster_info = y_true(d, ex, "provideClusterInfo");
	return 0;
}

/* First document (in KUBECONFIG order) that has the named entry. */
static yaml_node_t *
find_named(struct kube_kubeconfig *kc, const char *list, const char *inner,
    const char *name, int *which)
{
	yaml_node_t *n;
	int i;

	for (i = 0; i < kc->n; i++)
		if ((n = y_named(&kc->docs[i], list, inner, name)) != NULL) {
			*which = i;
			return n;
		}
	return NULL;
}

/* The cluster entry: server, TLS verification, CA. */
static int
resolve_cluster(struct kube_kubeconfig *kc, struct kube_config *cfg,
    const char *cur, const char *cname, struct agent_err *err)
{
	yaml_document_t *d;
	yaml_node_t *cl;
	const char *server, *v;
	char where[320];
	size_t n;
	int wi = 0, rc;

	if ((cl = find_named(kc, "clusters", "cluster", cname, &wi)) == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: context \"%s\" names cluster \"%s\", which "
		    "is not defined",
		    kc->names[0], cur, cname);
	d = &kc->docs[wi];
	snprintf(
	    where, sizeof(where), "%s cluster \"%s\"", kc->names[wi], cname);
	if ((server = y_str(d, cl, "server")) == NULL)
		return err_set(
		    err, EXIT_AGENT_CONFIG, "kubeconfig %s: no server", where);
	/* user:password@ would be basic auth, printed with every URL. */
	if (url_has_userinfo(server))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: the server URL holds a user name or "
		    "password (USER:PASSWORD@); basic auth is not supported: "
		    "use a token or a client certificate",
		    where);
	if (strncmp(server, "https://", 8) != 0 &&
	    strncmp(server, "http://", 7) != 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: server \"%s\" must start with https://",
		    where, server);
	if ((cfg->server = a_strdup(server)) == NULL)
		return err_oom(err, "kubeconfig");
	n = strlen(cfg->server);
	while (n > 8 && cfg->server[n - 1] == '/')
		cfg->server[--n] = '\0';
	cfg->insecure = y_true(d, cl, "insecure-skip-tls-verify");
	if (dup_to(&cfg->tls_server_name, y_str(d, cl, "tls-server-name"), err))
		return err->code;
	if (y_str(d, cl, "certificate-authority-data") != NULL) {
		rc = load_pem_field(d, cl, kc->dirs[wi],
		    "certificate-authority-data", "certificate-authority",
		    where, &cfg->ca_pem, &cfg->ca_pem_len, err);
		if (rc)
			return rc;
	} else if ((v = y_str(d, cl, "certificate-authority")) != NULL) {
		if ((cfg->ca_file = resolve_path(kc->dirs[wi], v)) == NULL)
			return err_oom(err, "kubeconfig");
		if (access(cfg->ca_file, R_OK) != 0)
			return err_set(err, EXIT_AGENT_CONFIG,
			    "kubeconfig %s: certificate-authority %s: %s",
			    where, cfg->ca_file, strerror(errno));
	}
	if (cfg->insecure && (cfg->ca_pem != NULL || cfg->ca_file != NULL))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: specifying a root certificates file with "
		    "the insecure flag is not allowed; drop one of "
		    "insecure-skip-tls-verify and certificate-authority",
		    where);
	if (y_str(d, cl, "proxy-url") != NULL)
		log_warnx("kubeconfig %s: proxy-url is not supported and is "
		          "ignored; use https_proxy",
		    where);
	return 0;
}

/* The user entry: token, token file, client certificate, exec plugin. */
static int
resolve_user(struct kube_kubeconfig *kc, struct kube_config *cfg,
    const char *cur, const char *uname, struct agent_err *err)
{
	yaml_document_t *d;
	yaml_node_t *us, *ex;
	const char *v;
	char where[320];
	int wi = 0, rc;

	if ((us = find_named(kc, "users", "user", uname, &wi)) == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: context \"%s\" names user \"%s\", which is "
		    "not defined",
		    kc->names[0], cur, uname);
	d = &kc->docs[wi];
	snprintf(where, sizeof(where), "%s user \"%s\"", kc->names[wi], uname);
	if (y_get(d, us, "auth-provider") != NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: auth-provider plugins are not supported "
		    "(removed from client-go); use an exec plugin or a token",
		    where);
	if (y_str(d, us, "username") != NULL && y_str(d, us, "token") == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: basic auth (username/password) is not "
		    "supported; use a token or a client certificate",
		    where);
	if ((v = y_str(d, us, "token")) != NULL) {
		if ((cfg->token = a_strdup(v)) == NULL)
			return err_oom(err, "kubeconfig");
		log_add_secret(cfg->token);
	} else if ((v = y_str(d, us, "tokenFile")) != NULL) {
		if ((cfg->token_file = resolve_path(kc->dirs[wi], v)) == NULL)
			return err_oom(err, "kubeconfig");
	}
	rc = load_pem_field(d, us, kc->dirs[wi], "client-certificate-data",
	    "client-certificate", where, &cfg->client_cert_pem, NULL, err);
	if (rc == 0)
		rc = load_pem_field(d, us, kc->dirs[wi], "client-key-data",
		    "client-key", where, &cfg->client_key_pem, NULL, err);
	if (rc)
		return rc;
	if ((cfg->client_cert_pem == NULL) != (cfg->client_key_pem == NULL))
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: a client certificate needs both "
		    "client-certificate(-data) and client-key(-data)",
		    where);
	if ((ex = y_get(d, us, "exec")) != NULL &&
	    ex->type == YAML_MAPPING_NODE)
		return load_exec(d, ex, where, cfg, err);
	return 0;
}

int
kube_kubeconfig_resolve(
    struct kube_kubeconfig *kc, struct kube_config *cfg, struct agent_err *err)
{
	yaml_document_t *d;
	yaml_node_t *ctx;
	const char *cur = NULL, *cname, *uname, *ns;
	int i, wi = 0, rc;

	for (i = 0; i < kc->n && cur == NULL; i++)
		cur = y_str(&kc->docs[i],
		    yaml_document_get_root_node(&kc->docs[i]),
		    "current-context");
	if (cur == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: no current-context; set one with "
		    "`kubectl config use-context NAME`",
		    kc->n ? kc->names[0] : "(empty)");
	if ((ctx = find_named(kc, "contexts", "context", cur, &wi)) == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: current-context \"%s\" is not among its "
		    "contexts",
		    kc->names[0], cur);
	d = &kc->docs[wi];
	cname = y_str(d, ctx, "cluster");
	uname = y_str(d, ctx, "user");
	ns = y_str(d, ctx, "namespace");
	if (dup_to(&cfg->namespace, ns, err))
		return err->code;
	if (cname == NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig %s: context \"%s\" names no cluster",
		    kc->names[wi], cur);
	snprintf(cfg->source, sizeof(cfg->source), "kubeconfig %s context %s",
	    kc->names[wi], cur);
	if ((rc = resolve_cluster(kc, cfg, cur, cname, err)) != 0)
		return rc;
	if (uname == NULL)
		return 0; /* anonymous */
	return resolve_user(kc, cfg, cur, uname, err);
}

int
kube_config_kubeconfig(
    const char *paths, struct kube_config *cfg, struct agent_err *err)
{
	struct kube_kubeconfig *kc;
	char *list = NULL, *p, *save = NULL, *text = NULL;
	char dir[4096], *slash;
	size_t len;
	int rc = 0, nread = 0;

	memset(cfg, 0, sizeof(*cfg));
	if ((kc = kube_kubeconfig_new()) == NULL ||
	    (list = a_strdup(paths)) == NULL) {
		rc = err_oom(err, "kubeconfig");
		goto out;
	}
	for (p = strtok_r(list, ":", &save); p != NULL;
	     p = strtok_r(NULL, ":", &save)) {
		if (*p == '\0')
			continue;
		if (access(p, F_OK) != 0 && paths[0] != '\0' &&
		    strchr(paths, ':') != NULL)
			continue; /* missing files in a list are skipped */
		if ((rc = read_file(p, KUBECONFIG_MAX, &text, &len, err))) {
			err_prefix(err, "kubeconfig (--kubeconfig/KUBECONFIG)");
			goto out;
		}
		snprintf(dir, sizeof(dir), "%s", p);
		if ((slash = strrchr(dir, '/')) == NULL)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == dir)
			dir[1] = '\0';
		else
			*slash = '\0';
		rc = kube_kubeconfig_add(kc, text, len, dir, p, err);
		a_free(text);
		text = NULL;
		if (rc)
			goto out;
		nread++;
	}
	if (nread == 0) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubeconfig: none of \"%s\" exists; check --kubeconfig / "
		    "KUBECONFIG",
		    paths);
		goto out;
	}
	rc = kube_kubeconfig_resolve(kc, cfg, err);
out:
	a_free(text);
	a_free(list);
	kube_kubeconfig_free(kc);
	if (rc)
		kube_config_release(cfg);
	return rc;
}

/* ---- in-cluster ------------------------------------------------------- */

int
kube_join_host_port(const char *host, const char *port, char *out, size_t n)
{
	int w;

	if (strchr(host, ':') != NULL && host[0] != '[')
		w = snprintf(out, n, "[%s]:%s", host, port);
	else
		w = snprintf(out, n, "%s:%s", host, port);
	return w < 0 || (size_t)w >= n ? -1 : 0;
}

int
kube_config_incluster(
    const char *sa_dir, struct kube_config *cfg, struct agent_err *err)
{
	const char *host, *port;
	char hp[300], path[4096], *ns = NULL;
	size_t n;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	host = getenv("KUBERNETES_SERVICE_HOST");
	port = getenv("KUBERNETES_SERVICE_PORT");
	if (host == NULL || *host == '\0')
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: KUBERNETES_SERVICE_HOST is not set: not in a "
		    "cluster; give --kubeconfig to run outside one");
	if (port == NULL || *port == '\0')
		port = "443";
	if (kube_join_host_port(host, port, hp, sizeof(hp)) != 0)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: KUBERNETES_SERVICE_HOST is too long");
	n = strlen(hp) + 9;
	if ((cfg->server = a_malloc(n)) == NULL ||
	    (cfg->noproxy_host = a_strdup(host)) == NULL)
		return err_oom(err, "in-cluster config");
	snprintf(cfg->server, n, "https://%s", hp);
	/* NOPROXY wants the bare host; strip brackets given in the env. */
	if (cfg->noproxy_host[0] == '[') {
		memmove(cfg->noproxy_host, cfg->noproxy_host + 1,
		    strlen(cfg->noproxy_host));
		cfg->noproxy_host[strcspn(cfg->noproxy_host, "]")] = '\0';
	}
	snprintf(cfg->source, sizeof(cfg->source),
	    "in-cluster service account (%s)", sa_dir);

	snprintf(path, sizeof(path), "%s/token", sa_dir);
	if (access(path, R_OK) != 0) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: no service-account token at %s (%s); mount "
		    "one (automountServiceAccountToken: true) or set "
		    "--serviceaccount-dir",
		    path, strerror(errno));
		goto fail;
	}
	if ((cfg->token_file = a_strdup(path)) == NULL) {
		rc = err_oom(err, "in-cluster config");
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/ca.crt", sa_dir);
	if (access(path, R_OK) != 0) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: no cluster CA at %s (%s); the service-account "
		    "volume must include ca.crt",
		    path, strerror(errno));
		goto fail;
	}
	if ((cfg->ca_file = a_strdup(path)) == NULL) {
		rc = err_oom(err, "in-cluster config");
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/namespace", sa_dir);
	if (read_file(path, 4096, &ns, NULL, err) == 0) {
		rstrip(ns);
		if (*ns != '\0')
			cfg->namespace = ns;
		else
			a_free(ns);
	}
	err_clear(err);
	return kube_config_refresh_token(cfg, 0, true, err);
fail:
	kube_config_release(cfg);
	return rc;
}

/* ---- tokens ------------------------------------------------------------ */

/* Exec credentials are cached for the process (a plugin may be slow, and
 * serve re-discovers every --resync). */
static pthread_mutex_t exec_mu = PTHREAD_MUTEX_INITIALIZER;
static char *exec_key;
static char *exec_token, *exec_cert, *exec_keypem;
static int64_t exec_exp;

static int64_t
parse_rfc3339(const char *s)
{
	struct tm tm;
	const char *e;

	memset(&tm, 0, sizeof(tm));
	if (s == NULL || (e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return 0;
	return (int64_t)timegm(&tm);
}

static char *
exec_cache_key(const struct kube_config *cfg)
{
	size_t n = 1, i;
	char *k;

	for (i = 0; cfg->exec_argv[i]; i++)
		n += strlen(cfg->exec_argv[i]) + 1;
	for (i = 0; cfg->exec_env[i]; i++)
		n += strlen(cfg->exec_env[i]) + 1;
	if ((k = a_calloc(1, n)) == NULL)
		return NULL;
	for (i = 0; cfg->exec_argv[i]; i++) {
		strcat(k, cfg->exec_argv[i]);
		strcat(k, "\x1f");
	}
	for (i = 0; cfg->exec_env[i]; i++) {
		strcat(k, cfg->exec_env[i]);
		strcat(k, "\x1e");
	}
	return k;
}

/* "KUBERNETES_EXEC_INFO=<ExecCredential>", with spec.cluster when the
 * kubeconfig says provideClusterInfo: true. */
static char *
exec_info(const struct kube_config *cfg)
{
	cJSON *j, *spec, *cl;
	char *json = NULL, *out = NULL, *b64 = NULL;
	size_t n;

	if ((j = cJSON_CreateObject()) == NULL)
		return NULL;
	cJSON_AddStringToObject(j, "apiVersion", cfg->exec_api_version);
	cJSON_AddStringToObject(j, "kind", "ExecCredential");
	spec = cJSON_AddObjectToObject(j, "spec");
	cJSON_AddBoolToObject(spec, "interactive", 0);
	if (cfg->exec_provide_cluster_info && spec != NULL &&
	    (cl = cJSON_AddObjectToObject(spec, "cluster")) != NULL) {
		cJSON_AddStringToObject(cl, "server", cfg->server);
		if (cfg->tls_server_name)
			cJSON_AddStringToObject(
			    cl, "tls-server-name", cfg->tls_server_name);
		if (cfg->insecure)
			cJSON_AddBoolToObject(
			    cl, "insecure-skip-tls-verify", 1);
		if (cfg->ca_pem != NULL && cfg->ca_pem_len > 0 &&
		    (b64 = a_malloc(4 * ((cfg->ca_pem_len + 2) / 3) + 1)) !=
		        NULL) {
			b64_encode(b64, (const unsigned char *)cfg->ca_pem,
			    cfg->ca_pem_len);
			cJSON_AddStringToObject(
			    cl, "certificate-authority-data", b64);
			a_free(b64);
		}
	}
	json = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (json == NULL)
		return NULL;
	n = strlen(json) + sizeof("KUBERNETES_EXEC_INFO=");
	if ((out = a_malloc(n)) != NULL)
		snprintf(out, n, "KUBERNETES_EXEC_INFO=%s", json);
	cJSON_free(json);
	return out;
}

/* Reads what is there on the plugin's stderr; closes *fd at EOF. */
static void
exec_stderr_read(int *fd, char *ebuf, size_t *elen)
{
	char tmp[1024];
	ssize_t r;
	size_t k;

	if (*fd < 0)
		return;
	if ((r = read(*fd, tmp, sizeof(tmp))) < 0 && errno == EINTR)
		return;
	if (r <= 0) {
		close(*fd);
		*fd = -1;
		return;
	}
	k = (size_t)r;
	if (k > EXEC_ERR_MAX - 1 - *elen)
		k = EXEC_ERR_MAX - 1 - *elen;
	memcpy(ebuf + *elen, tmp, k);
	*elen += k;
}

/*
 * The plugin's stderr, as warnings: through log.c, so redacted (its
 * token is registered by now) and in the chosen log format, rather than
 * raw on the agent's stderr.
 */
static void
exec_stderr_log(const char *cmd, char *ebuf, size_t elen)
{
	char *line, *save = NULL;
	int n = 0;

	ebuf[elen] = '\0';
	for (line = strtok_r(ebuf, "\r\n", &save); line != NULL && n < 20;
	     line = strtok_r(NULL, "\r\n", &save), n++)
		log_warnx("kubeconfig exec %s: stderr: %s", cmd, line);
}

/* The plugin's environment: ours minus a stale KUBERNETES_EXEC_INFO, plus
 * the kubeconfig's env entries and the fresh info.  NULL: out of memory. */
static char **
exec_envp(const struct kube_config *cfg, char *info)
{
	char **envp;
	size_t i, ne;

	for (ne = 0; environ[ne]; ne++)
		;
	for (i = 0; cfg->exec_env[i]; i++)
		ne++;
	if ((envp = a_calloc(ne + 2, sizeof(char *))) == NULL)
		return NULL;
	ne = 0;
	for (i = 0; environ[i]; i++)
		if (strncmp(environ[i], "KUBERNETES_EXEC_INFO=", 21) != 0)
			envp[ne++] = environ[i];
	for (i = 0; cfg->exec_env[i]; i++)
		envp[ne++] = cfg->exec_env[i];
	envp[ne++] = info;
	return envp;
}

/* The plugin's output and stderr until it exits or the deadline; its exit
 * status checked.  buf holds EXEC_OUT_MAX + 1 bytes. */
struct exec_io {
	int out, err; /* pipe read ends, -1 when closed */
	char *buf;
	size_t len;
	char ebuf[EXEC_ERR_MAX];
	size_t elen;
};

static int
exec_collect(const struct kube_config *cfg, pid_t pid, struct exec_io *io,
    struct agent_err *err)
{
	int64_t deadline = now_ms() + EXEC_TIMEOUT_MS, left;
	struct pollfd pfd[2];
	ssize_t r;
	int status, w;

	for (;;) {
		left = deadline - now_ms();
		if (left <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return err_set(err, EXIT_AGENT_DISCOVERY,
			    "kubeconfig exec %s: no credential after %d s; is "
			    "the plugin waiting for input?",
			    cfg->exec_command, EXEC_TIMEOUT_MS / 1000);
		}
		pfd[0].fd = io->out;
		pfd[0].events = POLLIN;
		pfd[1].fd = io->err;
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, (int)left) < 0 && errno != EINTR)
			break;
		if (pfd[1].revents != 0)
			exec_stderr_read(&io->err, io->ebuf, &io->elen);
		if (pfd[0].revents == 0)
			continue;
		r = read(io->out, io->buf + io->len, EXEC_OUT_MAX - io->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		io->len += (size_t)r;
		if (io->len >= EXEC_OUT_MAX)
			break;
	}
	io->buf[io->len] = '\0';
	while ((w = waitpid(pid, &status, 0)) == -1 && errno == EINTR)
		;
	/* What the plugin wrote to stderr after its stdout (no wait: a
	 * grandchild may hold the pipe). */
	for (;;) {
		pfd[0].fd = io->err;
		pfd[0].events = POLLIN;
		if (io->err < 0 || poll(pfd, 1, 0) <= 0)
			break;
		exec_stderr_read(&io->err, io->ebuf, &io->elen);
	}
	if (w == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubeconfig exec %s: the credential plugin failed (exit "
		    "%d); run it by hand to see why",
		    cfg->exec_command,
		    w != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 0;
}

/* An ExecCredential's token or client certificate, kept (and the token
 * registered as a secret) for the next requests. */
static int
exec_credential(const struct kube_config *cfg, const char *buf, size_t len,
    struct agent_err *err)
{
	cJSON *j, *st;
	const char *tok, *cert, *key, *kind;
	int rc = 0;

	j = cJSON_ParseWithLength(buf, len);
	kind =
	    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "kind"));
	st = cJSON_GetObjectItemCaseSensitive(j, "status");
	if (j == NULL || kind == NULL || strcmp(kind, "ExecCredential") != 0 ||
	    !cJSON_IsObject(st)) {
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubeconfig exec %s: the plugin did not print an "
		    "ExecCredential with a status",
		    cfg->exec_command);
		goto out;
	}
	tok =
	    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "token"));
	cert = cJSON_GetStringValue(
	    cJSON_GetObjectItemCaseSensitive(st, "clientCertificateData"));
	key = cJSON_GetStringValue(
	    cJSON_GetObjectItemCaseSensitive(st, "clientKeyData"));
	if ((tok == NULL || *tok == '\0') && (cert == NULL || key == NULL)) {
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubeconfig exec %s: the ExecCredential has neither a "
		    "token nor clientCertificateData+clientKeyData",
		    cfg->exec_command);
		goto out;
	}
	a_free(exec_token);
	a_free(exec_cert);
	a_free(exec_keypem);
	exec_token = tok && *tok ? a_strdup(tok) : NULL;
	exec_cert = cert && key ? a_strdup(cert) : NULL;
	exec_keypem = cert && key ? a_strdup(key) : NULL;
	if (exec_token)
		log_add_secret(exec_token);
	exec_exp = parse_rfc3339(cJSON_GetStringValue(
	    cJSON_GetObjectItemCaseSensitive(st, "expirationTimestamp")));
out:
	cJSON_Delete(j);
	return rc;
}

static int
run_exec_plugin(struct kube_config *cfg, struct agent_err *err)
{
	int outp[2] = {-1, -1}, errp[2] = {-1, -1};
	int rc = 0;
	pid_t pid;
	char *info = NULL, **envp = NULL;
	struct exec_io *io;

	if ((io = a_calloc(1, sizeof(*io))) == NULL)
		return err_oom(err, "exec plugin");
	io->out = io->err = -1;
	if ((info = exec_info(cfg)) == NULL ||
	    (envp = exec_envp(cfg, info)) == NULL ||
	    (io->buf = a_malloc(EXEC_OUT_MAX + 1)) == NULL) {
		rc = err_oom(err, "exec plugin");
		goto out;
	}
	if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubeconfig exec %s: pipe: %s", cfg->exec_command,
		    strerror(errno));
		goto out;
	}
	if ((pid = fork()) == -1) {
		rc = err_set(err, EXIT_AGENT_DISCOVERY,
		    "kubeconfig exec %s: fork: %s", cfg->exec_command,
		    strerror(errno));
		goto out;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here (serve is threaded). */
		int devnull = open("/dev/null", O_RDONLY);

		spawn_restore_signals();
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		execvpe(cfg->exec_command, cfg->exec_argv, envp);
		_exit(127);
	}
	close(outp[1]);
	outp[1] = -1;
	close(errp[1]);
	errp[1] = -1;
	io->out = outp[0];
	io->err = errp[0];
	outp[0] = errp[0] = -1;
	if ((rc = exec_collect(cfg, pid, io, err)) == 0)
		rc = exec_credential(cfg, io->buf, io->len, err);
out:
	/* After the token is registered: the lines go through log.c. */
	exec_stderr_log(cfg->exec_command, io->ebuf, io->elen);
	a_free(envp);
	a_free(info);
	if (io->out >= 0)
		close(io->out);
	if (io->err >= 0)
		close(io->err);
	if (outp[0] >= 0)
		close(outp[0]);
	if (outp[1] >= 0)
		close(outp[1]);
	if (errp[0] >= 0)
		close(errp[0]);
	if (errp[1] >= 0)
		close(errp[1]);
	a_free(io->buf);
	a_free(io);
	return rc;
}

static int
exec_refresh(struct kube_config *cfg, bool force, struct agent_err *err)
{
	char *key;
	int rc = 0;

	if ((key = exec_cache_key(cfg)) == NULL)
		return err_oom(err, "exec plugin");
	pthread_mutex_lock(&exec_mu);
	if (exec_key == NULL || strcmp(exec_key, key) != 0 || force ||
	    (exec_token == NULL && exec_cert == NULL) ||
	    (exec_exp != 0 && (int64_t)time(NULL) + 10 >= exec_exp)) {
		a_free(exec_key);
		exec_key = NULL;
		rc = run_exec_plugin(cfg, err);
		if (rc == 0) {
			exec_key = key;
			key = NULL;
		}
	}
	if (rc == 0) {
		a_free(cfg->token);
		cfg->token = exec_token ? a_strdup(exec_token) : NULL;
		if (exec_cert && cfg->client_cert_pem == NULL) {
			cfg->client_cert_pem = a_strdup(exec_cert);
			cfg->client_key_pem = a_strdup(exec_keypem);
		}
		cfg->exec_expiry = exec_exp;
	}
	pthread_mutex_unlock(&exec_mu);
	a_free(key);
	return rc;
}

int
kube_config_refresh_token(
    struct kube_config *cfg, long max_age_ms, bool force, struct agent_err *err)
{
	struct agent_err e2;
	char *tok = NULL;

	if (cfg->exec_command != NULL)
		return exec_refresh(cfg, force, err);
	if (cfg->token_file == NULL)
		return 0;
	if (!force && cfg->token != NULL &&
	    now_ms() - cfg->token_read_ms < max_age_ms)
		return 0;
	memset(&e2, 0, sizeof(e2));
	if (read_file(cfg->token_file, KUBE_FILE_MAX, &tok, NULL, &e2) != 0) {
		if (cfg->token != NULL) {
			/* Keep the old token (client-go does too). */
			log_warnx("kubernetes: %s; keeping the previous token",
			    e2.msg);
			return 0;
		}
		*err = e2;
		return err->code;
	}
	rstrip(tok);
	if (*tok == '\0') {
		/* Mid-swap or broken: keep what we have. */
		a_free(tok);
		if (cfg->token != NULL)
			return 0;
		return err_set(err, EXIT_AGENT_CONFIG,
		    "kubernetes: the token file %s is empty", cfg->token_file);
	}
	log_add_secret(tok);
	a_free(cfg->token);
	cfg->token = tok;
	cfg->token_read_ms = now_ms();
	return 0;
}

static void
free_vec(char **v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; v[i]; i++)
		a_free(v[i]);
	a_free(v);
}

void
kube_config_release(struct kube_config *cfg)
{
	a_free(cfg->server);
	a_free(cfg->ca_file);
	a_free(cfg->ca_pem);
	a_free(cfg->client_cert_pem);
	a_free(cfg->client_key_pem);
	a_free(cfg->tls_server_name);
	a_free(cfg->token);
	a_free(cfg->token_file);
	a_free(cfg->namespace);
	a_free(cfg->noproxy_host);
	a_free(cfg->exec_command);
	free_vec(cfg->exec_argv);
	free_vec(cfg->exec_env);
	a_free(cfg->exec_api_version);
	memset(cfg, 0, sizeof(*cfg));
}
