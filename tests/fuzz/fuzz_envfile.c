/*
 * fuzz_envfile.c - libFuzzer target: the env file reader used by
 * `exec --env-file` (envfile_parse), and the quoting it must round-trip
 * (shell_quote -> envfile_parse gives the value back).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envfile		 ef;
	struct agent_err	 err;
	char			*v, *q, *text;
	size_t			 n;

	err_clear(&err);
	if (envfile_parse((const char *)data, size, &ef, &err) == 0) {
		/* A file that parses sets a valid namespace. */
		if (ef.namespace == NULL || !namespace_valid(ef.namespace))
			abort();
		envfile_release(&ef);
	} else if (err.msg[0] == '\0' || err.code == 0)
		abort();	/* an error always says why */

	/* Round trip: any value without CR/LF quotes and reads back. */
	if ((v = a_strndup((const char *)data, size)) == NULL)
		return 0;
	if ((q = shell_quote(v)) != NULL) {
		n = strlen(q) + 96;
		if ((text = a_malloc(n)) != NULL) {
			n = (size_t)snprintf(text, n, "# pylon-agent\n"
			    "export PYLON_CLUSTER_BUS=%s\n"
			    "export PYLON_CLUSTER_NAMESPACE='ns'\n", q);
			err_clear(&err);
			if (envfile_parse(text, n, &ef, &err) != 0)
				abort();
			if (ef.bus == NULL || strcmp(ef.bus, v) != 0)
				abort();
			envfile_release(&ef);
			a_free(text);
		}
		a_free(q);
	} else if (strpbrk(v, "\n\r") == NULL)
		abort();	/* only CR/LF may be refused (NUL cuts) */
	a_free(v);
	return 0;
}
