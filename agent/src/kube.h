/*
 * kube.h - the Kubernetes adapter's private API: how to reach the API
 * server (kubeconfig.c: in-cluster files or a kubeconfig) and the pure
 * helpers of kube.c that the unit tests reach (label selectors, IntOrString
 * surge, Status error messages).
 *
 * Ownership: kube_config_release frees every string a kube_config owns.
 */
#ifndef PYLON_AGENT_KUBE_H
#define PYLON_AGENT_KUBE_H

#include "agent.h"

/* Where the API server is and how to authenticate to it. */
struct kube_config {
	char *server; /* "https://host:port", no trailing slash */
	char *ca_file; /* PEM bundle path, or NULL */
	char *ca_pem; /* certificate-authority-data, decoded */
	size_t ca_pem_len;
	char *client_cert_pem;
	char *client_key_pem;
	char *tls_server_name;
	bool insecure; /* insecure-skip-tls-verify */
	char *token; /* current bearer token, or NULL */
	char *token_file; /* re-read by path (rotation) */
	int64_t token_read_ms; /* now_ms() of the last read */
	char *namespace; /* context's / serviceaccount file */
	char *noproxy_host; /* in-cluster: CURLOPT_NOPROXY */
	/* exec credential plugin (kubeconfig users[].user.exec) */
	char *exec_command;
	char **exec_argv; /* NULL-ended, argv[0] = command */
	char **exec_env; /* NULL-ended "NAME=value" */
	char *exec_api_version;
	bool exec_provide_cluster_info;
	int64_t exec_expiry; /* wall-clock seconds, 0: none */
	char source[512]; /* "in-cluster (/var/run/...)" or
				 * "kubeconfig /path context dev" */
};

/* In-cluster: KUBERNETES_SERVICE_HOST/_PORT + sa_dir/{token,ca.crt,
 * namespace}.  EXIT_AGENT_CONFIG with a clear message when absent. */
int kube_config_incluster(
    const char *sa_dir, struct kube_config *, struct agent_err *);
/* kubeconfig: paths is a ':'-separated KUBECONFIG list (the first file
 * that sets a key wins, current-context included). */
int kube_config_kubeconfig(
    const char *paths, struct kube_config *, struct agent_err *);
/* Parses one kubeconfig document from memory (dir resolves relative
 * paths; name is used in messages).  Used by kube_config_kubeconfig and
 * the unit tests; several calls merge into one kube_kubeconfig. */
struct kube_kubeconfig;
struct kube_kubeconfig *kube_kubeconfig_new(void);
int kube_kubeconfig_add(struct kube_kubeconfig *, const char *text, size_t len,
    const char *dir, const char *name, struct agent_err *);
/* Resolves current-context into cfg. */
int kube_kubeconfig_resolve(
    struct kube_kubeconfig *, struct kube_config *, struct agent_err *);
void kube_kubeconfig_free(struct kube_kubeconfig *);
void kube_config_release(struct kube_config *);

/* Refreshes cfg->token: re-reads token_file when it is older than
 * max_age_ms (0: always) and runs the exec plugin when its credential
 * expired or force is set.  Keeps the old token when a re-read yields
 * nothing.  Returns 0 or an error. */
int kube_config_refresh_token(
    struct kube_config *, long max_age_ms, bool force, struct agent_err *);

/* "host:port" joined like net.JoinHostPort: IPv6 in brackets. */
int
kube_join_host_port(const char *host, const char *port, char *out, size_t n);

/* ---- pure helpers in kube.c (unit-tested) ---------------------------- */

struct cJSON;

/* 1 when the labels object matches selector, 0 when not, -1 when the
 * selector is malformed (*err filled).  Supports k=v, k==v, k!=v, k,
 * !k, k in (a,b), k notin (a,b), comma-joined. */
int kube_selector_match(
    const char *selector, const struct cJSON *labels, struct agent_err *);
/* Resolves an IntOrString maxSurge (NULL: the default 25%) against
 * replicas; percentages round up.  -1 when invalid. */
int kube_surge_resolve(const struct cJSON *max_surge, int replicas);
/* Turns a non-2xx API answer into one line in *err (EXIT_AGENT_DISCOVERY).
 * verb is the RBAC verb (get, list, patch, create); group "" for core;
 * resource plural; name may be NULL. */
int kube_status_error(long status, const char *body, const char *verb,
    const char *group, const char *resource, const char *name, const char *ns,
    struct agent_err *);

#endif
