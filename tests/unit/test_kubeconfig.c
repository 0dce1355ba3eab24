/* kubeconfig.c: parsing raw kubeconfig bytes, the KUBECONFIG merge rules,
 * relative paths, base64 data fields, host:port joining, token files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kube.h"

/* base64 of "-----BEGIN CERTIFICATE-----\nX\n" */
#define PEM_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClgK"

static int
load(const char **docs, int n, struct kube_config *cfg, struct agent_err *err)
{
	struct kube_kubeconfig	*kc = kube_kubeconfig_new();
	int			 i, rc = 0;

	memset(cfg, 0, sizeof(*cfg));
	assert_non_null(kc);
	for (i = 0; i < n && rc == 0; i++)
		rc = kube_kubeconfig_add(kc, docs[i], strlen(docs[i]),
		    "/etc/kube", "test.yaml", err);
	if (rc == 0)
		rc = kube_kubeconfig_resolve(kc, cfg, err);
	kube_kubeconfig_free(kc);
	return rc;
}

static const char BASIC[] =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: dev\n"
    "clusters:\n"
    "- name: c1\n"
    "  cluster:\n"
    "    server: https://203.0.113.5:6443/\n"
    "    certificate-authority-data: " PEM_B64 "\n"
    "    tls-server-name: api.internal\n"
    "users:\n"
    "- name: u1\n"
    "  user:\n"
    "    token: abc.def\n"
    "contexts:\n"
    "- name: other\n"
    "  context: {cluster: nope, user: nope}\n"
    "- name: dev\n"
    "  context: {cluster: c1, user: u1, namespace: prod}\n";

static void
test_basic(void **state)
{
	struct kube_config	cfg;
	struct agent_err	err = { 0 };
	const char		*docs[] = { BASIC };

	(void)state;
	assert_int_equal(0, load(docs, 1, &cfg, &err));
	assert_string_equal("https://203.0.113.5:6443", cfg.server);
	assert_string_equal("-----BEGIN CERTIFICATE-----\nX\n", cfg.ca_pem);
	assert_int_equal(strlen(cfg.ca_pem), cfg.ca_pem_len);
	assert_string_equal("api.internal", cfg.tls_server_name);
	assert_string_equal("abc.def", cfg.token);
	assert_string_equal("prod", cfg.namespace);
	assert_false(cfg.insecure);
	assert_null(cfg.noproxy_host);
	kube_config_release(&cfg);
}

static void
test_merge_first_wins(void **state)
{
	struct kube_config	cfg;
	struct agent_err	err = { 0 };
	const char		*one =
	    "current-context: a\n"
	    "users:\n- name: u\n  user: {tokenFile: tok}\n"
	    "clusters:\n- name: c\n  cluster: {server: 'https://first:1', "
	    "certificate-authority: ca/ca.crt}\n";
	const char		*two =
	    "current-context: b\n"
	    "contexts:\n- name: a\n  context: {cluster: c, user: u}\n"
	    "- name: b\n  context: {cluster: c2, user: u}\n"
	    "clusters:\n- name: c\n  cluster: {server: 'https://second:2'}\n"
	    "users:\n- name: u\n  user: {token: second}\n";
	const char		*docs[] = { one, two };

	(void)state;
	/* ca/ca.crt does not exist: the relative path is still resolved
	 * against the kubeconfig's directory before it is checked. */
	assert_int_equal(EXIT_AGENT_CONFIG, load(docs, 2, &cfg, &err));
	assert_non_null(strstr(err.msg, "/etc/kube/ca/ca.crt"));
	kube_config_release(&cfg);
}

static void
test_merge_and_tokenfile(void **state)
{
	struct kube_config	cfg;
	struct agent_err	err = { 0 };
	const char		*one =
	    "current-context: a\n"
	    "users:\n- name: u\n  user: {tokenFile: secrets/tok}\n";
	const char		*two =
	    "current-context: b\n"
	    "contexts:\n- name: a\n  context: {cluster: c, user: u}\n"
	    "clusters:\n- name: c\n  cluster: {server: 'https://second:2', "
	    "insecure-skip-tls-verify: true}\n"
	    "users:\n- name: u\n  user: {token: second}\n";
	const char		*docs[] = { one, two };

	(void)state;
	assert_int_equal(0, load(docs, 2, &cfg, &err));
	assert_string_equal("https://second:2", cfg.server);
	assert_true(cfg.insecure);
	assert_null(cfg.token);		/* user u of file one wins */
	assert_string_equal("/etc/kube/secrets/tok", cfg.token_file);
	assert_null(cfg.namespace);
	kube_config_release(&cfg);
}

static void
test_exec(void **state)
{
	struct kube_config	cfg;
	struct agent_err	err = { 0 };
	const char		*doc =
	    "current-context: a\n"
	    "contexts:\n- name: a\n  context: {cluster: c, user: u}\n"
	    "clusters:\n- name: c\n  cluster: {server: 'https://x:1'}\n"
	    "users:\n- name: u\n  user:\n    exec:\n"
	    "      apiVersion: client.authentication.k8s.io/v1\n"
	    "      command: aws\n"
	    "      args: [eks, get-token]\n"
	    "      env: [{name: AWS_PROFILE, value: prod}]\n"
	    "      interactiveMode: Never\n";
	const char		*docs[] = { doc };

	(void)state;
	assert_int_equal(0, load(docs, 1, &cfg, &err));
	assert_string_equal("aws", cfg.exec_command);
	assert_string_equal("aws", cfg.exec_argv[0]);
	assert_string_equal("eks", cfg.exec_argv[1]);
	assert_string_equal("get-token", cfg.exec_argv[2]);
	assert_null(cfg.exec_argv[3]);
	assert_string_equal("AWS_PROFILE=prod", cfg.exec_env[0]);
	assert_null(cfg.exec_env[1]);
	kube_config_release(&cfg);
}

static void
expect_error(const char *doc, const char *needle)
{
	struct kube_config	cfg;
	struct agent_err	err = { 0 };
	const char		*docs[] = { doc };

	assert_int_equal(EXIT_AGENT_CONFIG, load(docs, 1, &cfg, &err));
	if (strstr(err.msg, needle) == NULL)
		fail_msg("\"%s\" not in \"%s\"", needle, err.msg);
	assert_null(strchr(err.msg, '\n'));
	kube_config_release(&cfg);
}

static void
test_errors(void **state)
{
	(void)state;
	expect_error("a: [1, 2\n", "invalid YAML at line");
	expect_error("- 1\n", "not a mapping");
	expect_error("kind: Config\n", "no current-context");
	expect_error("current-context: x\n", "not among its contexts");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {user: u}\n", "names no cluster");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c}\n", "cluster \"c\", which is not defined");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {}\n",
	    "no server");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c}\nclusters:\n- name: c\n"
	    "  cluster: {server: 'ftp://x'}\n", "must start with https://");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c}\nclusters:\n- name: c\n"
	    "  cluster: {server: 'https://x', insecure-skip-tls-verify: true,"
	    " certificate-authority-data: " PEM_B64 "}\n",
	    "insecure flag is not allowed");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c, user: u}\nclusters:\n- name: c\n"
	    "  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
	    "  user: {client-certificate-data: " PEM_B64 "}\n",
	    "needs both");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c, user: u}\nclusters:\n- name: c\n"
	    "  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
	    "  user: {client-key-data: 'a b c !!'}\n", "not valid base64");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c, user: u}\nclusters:\n- name: c\n"
	    "  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
	    "  user: {username: a, password: b}\n", "basic auth");
	expect_error("current-context: x\ncontexts:\n- name: x\n"
	    "  context: {cluster: c, user: u}\nclusters:\n- name: c\n"
	    "  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
	    "  user: {exec: {command: x, interactiveMode: Always}}\n",
	    "interactiveMode");
	/* A billion-laughs style alias document parses without blowing up
	 * (the document API shares nodes instead of expanding them). */
	{
		struct kube_config	cfg;
		struct agent_err	err = { 0 };
		const char		*d[] = {
		    "a: &a [x, x, x, x, x, x, x, x]\n"
		    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
		    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
		    "current-context: *c\n" };

		assert_int_equal(EXIT_AGENT_CONFIG, load(d, 1, &cfg, &err));
		kube_config_release(&cfg);
	}
}

static void
test_join_host_port(void **state)
{
	char	b[64];

	(void)state;
	assert_int_equal(0, kube_join_host_port("10.0.0.1", "443", b,
	    sizeof(b)));
	assert_string_equal("10.0.0.1:443", b);
	assert_int_equal(0, kube_join_host_port("fd00:10:96::1", "443", b,
	    sizeof(b)));
	assert_string_equal("[fd00:10:96::1]:443", b);
	assert_int_equal(0, kube_join_host_port("[::1]", "6443", b,
	    sizeof(b)));
	assert_string_equal("[::1]:6443", b);
	assert_int_equal(-1, kube_join_host_port("fd00:10:96::1", "443", b,
	    8));
}

static void
test_token_file_rotation(void **state)
{
	struct kube_config	cfg;
	struct agent_err	err = { 0 };
	char			path[] = "/tmp/kube-token-XXXXXX";
	int			fd;
	FILE			*f;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	assert_true((fd = mkstemp(path)) >= 0);
	assert_int_equal(4, write(fd, "one\n", 4));
	close(fd);
	cfg.token_file = a_strdup(path);
	assert_int_equal(0, kube_config_refresh_token(&cfg, 60000, false,
	    &err));
	assert_string_equal("one", cfg.token);
	/* rotated on disk: not re-read before the minute is up ... */
	f = fopen(path, "w");
	fputs("two\n", f);
	fclose(f);
	assert_int_equal(0, kube_config_refresh_token(&cfg, 60000, false,
	    &err));
	assert_string_equal("one", cfg.token);
	/* ... but at once when forced (after a 401) */
	assert_int_equal(0, kube_config_refresh_token(&cfg, 60000, true,
	    &err));
	assert_string_equal("two", cfg.token);
	/* an empty file (mid-swap) keeps the old token */
	f = fopen(path, "w");
	fclose(f);
	assert_int_equal(0, kube_config_refresh_token(&cfg, 0, true, &err));
	assert_string_equal("two", cfg.token);
	/* so does a missing one */
	unlink(path);
	assert_int_equal(0, kube_config_refresh_token(&cfg, 0, true, &err));
	assert_string_equal("two", cfg.token);
	kube_config_release(&cfg);
}

int	b64_block_decode(char *out, const char *in, size_t n);
void	b64_encode(char *out, const unsigned char *in, size_t n);

/* Our base64 (libcrypto is no longer linked): RFC 4648 vectors both ways,
 * and what must be refused. */
static void
test_base64(void **state)
{
	static const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba",
	    "foobar" };
	static const char *enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==",
	    "Zm9vYmE=", "Zm9vYmFy" };
	char	out[32], bin[256], back[400];
	size_t	i;
	int	r;

	(void)state;
	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		b64_encode(out, (const unsigned char *)plain[i],
		    strlen(plain[i]));
		assert_string_equal(enc[i], out);
		r = b64_block_decode(out, enc[i], strlen(enc[i]));
		assert_int_equal((int)strlen(plain[i]), r);
		assert_memory_equal(plain[i], out, (size_t)r);
	}
	for (i = 0; i < sizeof(bin); i++)
		bin[i] = (char)i;
	b64_encode(back, (const unsigned char *)bin, sizeof(bin));
	r = b64_block_decode(back, back, strlen(back));
	assert_int_equal((int)sizeof(bin), r);
	assert_memory_equal(bin, back, sizeof(bin));
	assert_int_equal(-1, b64_block_decode(out, "Zm9", 3));
	assert_int_equal(-1, b64_block_decode(out, "Z===", 4));
	assert_int_equal(-1, b64_block_decode(out, "Zg==Zm8=", 8));
	assert_int_equal(-1, b64_block_decode(out, "Zm!v", 4));
	assert_int_equal(-1, b64_block_decode(out, "Zm=v", 4));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_merge_first_wins),
		cmocka_unit_test(test_merge_and_tokenfile),
		cmocka_unit_test(test_exec),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_join_host_port),
		cmocka_unit_test(test_token_file_rotation),
		cmocka_unit_test(test_base64),
	};

	alloc_init_cjson();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
