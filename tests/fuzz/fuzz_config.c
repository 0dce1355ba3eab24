/*
 * fuzz_config.c - libFuzzer target: the YAML settings file (--config),
 * config_parse() in options.c (STATIC, visible with -DUNITTEST).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/*
 * options.c's file-local struct raw, mirrored (same members, same order).
 * config_parse indexes it by settings-table row; FUZZ_ROWS is well above
 * the table's size so a mismatch shows up as a finding, not silently.
 */
enum fuzz_src { FUZZ_SRC_DEFAULT, FUZZ_SRC_FILE, FUZZ_SRC_ENV, FUZZ_SRC_FLAG };
struct raw {
	char		*val;
	enum fuzz_src	 src;
	bool		 set;
};
#define FUZZ_ROWS	128

int	config_parse(const char *, const char *, size_t, struct raw *,
	    struct agent_err *);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct raw	 raws[FUZZ_ROWS];
	struct agent_err	 err;
	size_t			 i;
	int			 rc;

	memset(raws, 0, sizeof(raws));
	err_clear(&err);
	rc = config_parse("fuzz.yaml", (const char *)data, size, raws, &err);
	if (rc != 0 && (err.code == 0 || err.msg[0] == '\0'))
		abort();
	for (i = 0; i < FUZZ_ROWS; i++) {
		if (rc == 0 && raws[i].set && (raws[i].val == NULL ||
		    raws[i].src != FUZZ_SRC_FILE))
			abort();
		a_free(raws[i].val);
	}
	return 0;
}
