/* err.c - the error struct: filled once where it happens, printed once. */
#include <stdio.h>
#include <string.h>

#include "agent.h"

int
err_setv(struct agent_err *err, int code, const char *fmt, va_list ap)
{
	if (err == NULL)
		return code;
	err->code = code;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	return code;
}

int
err_set(struct agent_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_setv(err, code, fmt, ap);
	va_end(ap);
	return code;
}

int
err_prefix(struct agent_err *err, const char *fmt, ...)
{
	char pfx[AGENT_ERR_LEN], old[AGENT_ERR_LEN];
	va_list ap;

	if (err == NULL)
		return 0;
	va_start(ap, fmt);
	vsnprintf(pfx, sizeof(pfx), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	snprintf(err->msg, sizeof(err->msg), "%s: %s", pfx, old);
	return err->code;
}

void
err_clear(struct agent_err *err)
{
	err->code = 0;
	err->msg[0] = '\0';
}

int
err_oom(struct agent_err *err, const char *where)
{
	return err_set(err, EXIT_AGENT_SOFTWARE, "out of memory (%s)", where);
}
