/*
 * fuzz_kubeconfig.c - libFuzzer target: a kubeconfig document
 * (kube_kubeconfig_add + kube_kubeconfig_resolve in kubeconfig.c).
 * Input bytes split at the first "\n---8<---\n" become two files merged
 * like KUBECONFIG=a:b.  Relative paths resolve under a directory that does
 * not exist; the exec plugin is parsed, never run.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "kube.h"

#define SEP	"\n---8<---\n"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kube_kubeconfig	*kc;
	struct kube_config	 cfg;
	struct agent_err	 err;
	const char		*text = (const char *)data, *cut;
	size_t			 n1 = size, n2 = 0;
	int			 rc;

	cut = memmem(text, size, SEP, sizeof(SEP) - 1);
	if (cut != NULL) {
		n1 = (size_t)(cut - text);
		n2 = size - n1 - (sizeof(SEP) - 1);
	}
	if ((kc = kube_kubeconfig_new()) == NULL)
		return 0;
	memset(&cfg, 0, sizeof(cfg));
	err_clear(&err);
	rc = kube_kubeconfig_add(kc, text, n1, "/nonexistent-fuzz", "a",
	    &err);
	if (rc == 0 && cut != NULL)
		rc = kube_kubeconfig_add(kc, cut + sizeof(SEP) - 1, n2,
		    "/nonexistent-fuzz", "b", &err);
	if (rc == 0)
		rc = kube_kubeconfig_resolve(kc, &cfg, &err);
	if (rc != 0 && err.msg[0] == '\0')
		abort();
	if (rc == 0 && (cfg.server == NULL ||
	    (strncmp(cfg.server, "https://", 8) &&
	    strncmp(cfg.server, "http://", 7))))
		abort();
	kube_config_release(&cfg);
	kube_kubeconfig_free(kc);
	/* Tokens found are registered as secrets; keep the list bounded. */
	log_clear_secrets();
	return 0;
}
