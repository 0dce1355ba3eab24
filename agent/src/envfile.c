/*
 * envfile.c - the env file handed to Pylon: POSIX-shell sourceable,
 * single-quoted values, written atomically (temp file in the same
 * directory, fsync, rename), mode 0600; and the strict reader behind
 * `exec --env-file`.
 *
 * The directory is not fsync()ed (docs/decisions.md, issue 16): a rename
 * lost in a node crash leaves the previous env file or none, and every
 * start runs init again before exec reads it (a recreated pod sandbox
 * re-runs its init containers).  The file itself is fsync()ed before the
 * rename, so the name never points at an empty or partial file.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

#define ENVFILE_MAX (64 * 1024)

char *
shell_quote(const char *v)
{
	const char *p;
	char *out, *o;
	size_t n = 3;

	for (p = v; *p; p++) {
		if (*p == '\n' || *p == '\r')
			return NULL;
		n += *p == '\'' ? 4 : 1;
	}
	if ((out = a_malloc(n)) == NULL)
		return NULL;
	o = out;
	*o++ = '\'';
	for (p = v; *p; p++) {
		if (*p == '\'') {
			memcpy(o, "'\\''", 4);
			o += 4;
		} else
			*o++ = *p;
	}
	*o++ = '\'';
	*o = '\0';
	return out;
}

/* The header's source="..." must stay on one line and unambiguous. */
static void
header_safe(const char *in, char *out, size_t n)
{
	size_t o = 0;

	for (; *in && o + 1 < n; in++)
		out[o++] = (*in == '"')            ? '\''
		    : (*in == '\n' || *in == '\r') ? ' '
		                                   : *in;
	out[o] = '\0';
}

#define REQ_EXPORT "export PYLON_CLUSTER_REQUIRED='1'"
#define REQ_UNSET "unset PYLON_CLUSTER_REQUIRED"

char *
envfile_render(const struct decision *d, const char *url, struct agent_err *err)
{
	char ts[40], src[1024], *qbus = NULL, *qns = NULL, *out = NULL;
	size_t n;

	if (d->mode == MODE_REDIS && url == NULL) {
		err_set(err, EXIT_AGENT_CONFIG,
		    "redis mode without a Redis "
		    "URL");
		return NULL;
	}
	if ((qns = shell_quote(d->namespace)) == NULL ||
	    (d->mode == MODE_REDIS && (qbus = shell_quote(url)) == NULL)) {
		/* namespace is validated; a URL with a newline is refused. */
		if (qns == NULL || strpbrk(url, "\r\n") == NULL)
			err_oom(err, "env file");
		else
			err_set(err, EXIT_AGENT_CONFIG,
			    "the Redis URL holds "
			    "a line break: fix the Secret it comes from");
		goto out;
	}
	iso8601_now(ts, sizeof(ts));
	header_safe(d->reason, src, sizeof(src));
	n = strlen(src) + (qbus ? strlen(qbus) : 0) + strlen(qns) + 320;
	if ((out = a_malloc(n)) == NULL) {
		err_oom(err, "env file");
		goto out;
	}
	snprintf(out, n,
	    "# pylon-agent %s %s mode=%s peers=%d source=\"%s\"\n"
	    "%s%s%s\nexport PYLON_CLUSTER_NAMESPACE=%s\n%s\n",
	    AGENT_VERSION, ts, mode_name(d->mode), d->peers, src,
	    qbus ? "export PYLON_CLUSTER_BUS=" : "unset PYLON_CLUSTER_BUS",
	    qbus ? qbus : "", "", qns,
	    qbus && d->cluster_required ? REQ_EXPORT : REQ_UNSET);
out:
	a_free(qbus);
	a_free(qns);
	return out;
}

/*
 * The env file is fsynced before the rename, its directory is not
 * (docs/decisions.md, issue 16); the text, which holds the Redis URL, is
 * wiped before it is freed.
 */
int
envfile_write(const char *path, const struct decision *d, const char *url,
    struct agent_err *err)
{
	static const struct atomic_how how = {"env file",
	    "is the shared volume mounted there and writable?", 0600, true,
	    false};
	char *text;
	int rc;

	if ((rc = write_target_ok(path, "env file", err)) != 0)
		return rc;
	(void)tmp_sweep(path);
	if ((text = envfile_render(d, url, err)) == NULL)
		return err->code;
	rc = write_file_replace(path, text, strlen(text), &how, err);
	explicit_bzero(text, strlen(text));
	a_free(text);
	return rc;
}

/* Parses a single-quoted shell word ('...' with '\'' escapes) at *pp. */
static char *
unquote(const char **pp)
{
	const char *p = *pp;
	char *out, *o;

	if ((out = a_malloc(strlen(p) + 1)) == NULL)
		return NULL;
	o = out;
	for (;;) {
		if (*p == '\'') {
			p++;
			while (*p && *p != '\'')
				*o++ = *p++;
			if (*p != '\'')
				goto bad;
			p++;
		} else if (p[0] == '\\' && p[1] == '\'') {
			*o++ = '\'';
			p += 2;
		} else
			break;
	}
	*o = '\0';
	*pp = p;
	return out;
bad:
	a_free(out);
	*pp = NULL;
	return NULL;
}

/* The header comment's " mode=..." (line 1 only). */
static void
line_mode(const char *p, const char *nl, struct envfile *ef)
{
	const char *m = memmem(p, (size_t)(nl - p), " mode=", 6);
	size_t k = 0;

	if (m == NULL)
		return;
	for (m += 6;
	     m < nl && k + 1 < sizeof(ef->mode) && *m >= 'a' && *m <= 'z'; m++)
		ef->mode[k++] = *m;
	ef->mode[k] = '\0';
}

/* The single-quoted value after "export NAME=" (q .. nl) into *slot. */
static int
line_value(const char *q, const char *nl, char **slot, int lineno,
    struct agent_err *err)
{
	/* Work on a NUL-terminated copy of the line. */
	char *ln = a_strndup(q, (size_t)(nl - q)), *val;
	const char *lp = ln;

	if (ln == NULL)
		return err_oom(err, "env file");
	val = *ln == '\'' ? unquote(&lp) : NULL;
	if (val == NULL && lp != NULL && *lp == '\'') {
		/* unquote ran out of memory */
		a_free(ln);
		return err_oom(err, "env file");
	}
	if (val == NULL || lp == NULL || *lp != '\0') {
		a_free(val);
		a_free(ln);
		return err_set(err, EXIT_AGENT_CONFIG,
		    "env file line %d: "
		    "expected a single-quoted value",
		    lineno);
	}
	a_free(ln);
	a_free(*slot);
	*slot = val;
	return 0;
}

/* A line this agent never writes: say which, without echoing a value (a
 * URL, a password), only the NAME of a NAME=... line. */
static int
line_foreign(const char *p, const char *nl, int lineno, struct agent_err *err)
{
	const char *q;
	char line[64];

	for (q = p; q < nl && q - p < 40 &&
	     (*q == '_' || isalpha((unsigned char)*q) ||
	         (q > p && isdigit((unsigned char)*q)));
	     q++)
		;
	if (q > p && q < nl && *q == '=')
		snprintf(line, sizeof(line), "%.*s=...", (int)(q - p), p);
	else
		snprintf(line, sizeof(line), "not a NAME=value line");
	return err_set(err, EXIT_AGENT_CONFIG,
	    "env file line %d is not one "
	    "pylon-agent writes (%s): regenerate it with pylon-agent init",
	    lineno, line);
}

static bool
line_is(const char *p, const char *nl, const char *s)
{
	return (size_t)(nl - p) == strlen(s) && !strncmp(p, s, strlen(s));
}

static bool
line_starts(const char *p, const char *nl, const char *s)
{
	return (size_t)(nl - p) >= strlen(s) && !strncmp(p, s, strlen(s));
}

/* One line (p .. nl, without the newline). */
static int
envfile_line(const char *p, const char *nl, int lineno, struct envfile *ef,
    bool *seen_bus, struct agent_err *err)
{
	static const char bus[] = "export PYLON_CLUSTER_BUS=";
	static const char ns[] = "export PYLON_CLUSTER_NAMESPACE=";

	if (*p == '#') {
		/* text is not NUL-terminated: stay within the line. */
		if (lineno == 1)
			line_mode(p, nl, ef);
	} else if (p == nl) {
		; /* blank */
	} else if (line_is(p, nl, REQ_EXPORT)) {
		ef->required = true;
	} else if (line_is(p, nl, REQ_UNSET)) {
		ef->required = false;
	} else if (line_is(p, nl, "unset PYLON_CLUSTER_BUS")) {
		a_free(ef->bus);
		ef->bus = NULL;
		*seen_bus = true;
	} else if (line_starts(p, nl, bus)) {
		*seen_bus = true;
		return line_value(
		    p + sizeof(bus) - 1, nl, &ef->bus, lineno, err);
	} else if (line_starts(p, nl, ns)) {
		return line_value(
		    p + sizeof(ns) - 1, nl, &ef->namespace, lineno, err);
	} else
		return line_foreign(p, nl, lineno, err);
	return 0;
}

int
envfile_parse(
    const char *text, size_t len, struct envfile *ef, struct agent_err *err)
{
	const char *p = text, *end = text + len, *nl;
	int lineno = 0, rc = 0;
	bool seen_bus = false;

	memset(ef, 0, sizeof(*ef));
	if (memchr(text, '\0', len) != NULL)
		return err_set(err, EXIT_AGENT_CONFIG,
		    "the env file holds a "
		    "NUL byte: it was not written by pylon-agent init");
	while (p < end && rc == 0) {
		lineno++;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		rc = envfile_line(p, nl, lineno, ef, &seen_bus, err);
		p = nl + 1;
	}
	if (rc == 0 && (!seen_bus || ef->namespace == NULL))
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "the env file sets no "
		    "%s: it is not a complete pylon-agent env file",
		    !seen_bus ? "PYLON_CLUSTER_BUS (export or unset)"
		              : "PYLON_CLUSTER_NAMESPACE");
	else if (rc == 0 && !namespace_valid(ef->namespace))
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "the env file's "
		    "PYLON_CLUSTER_NAMESPACE is invalid: use 1 to 64 "
		    "characters of A-Z a-z 0-9 and . - _ : + = , ~ # %%");
	if (rc)
		envfile_release(ef);
	return rc;
}

int
envfile_read(const char *path, struct envfile *ef, struct agent_err *err)
{
	char *text = NULL;
	size_t len;
	int rc;

	memset(ef, 0, sizeof(*ef));
	if ((rc = read_file_opt(path, ENVFILE_MAX, true, &text, &len, err))) {
		err_prefix(err, "env file");
		if (rc == EXIT_AGENT_SOFTWARE)
			return rc; /* out of memory, not a bad file */
		if (strstr(err->msg, "expected a regular file") != NULL)
			return EXIT_AGENT_CONFIG; /* says what to do */
		strncat(err->msg,
		    " (was pylon-agent init run with the same "
		    "--env-file?)",
		    sizeof(err->msg) - strlen(err->msg) - 1);
		return EXIT_AGENT_CONFIG;
	}
	rc = envfile_parse(text, len, ef, err);
	if (rc)
		err_prefix(err, "%s", path);
	explicit_bzero(text, len);
	a_free(text);
	return rc;
}

void
envfile_release(struct envfile *ef)
{
	if (ef->bus) {
		explicit_bzero(ef->bus, strlen(ef->bus));
		a_free(ef->bus);
	}
	a_free(ef->namespace);
	ef->bus = ef->namespace = NULL;
}

int
env_apply(const char *bus, const char *ns, bool required, struct agent_err *err)
{
	/* PYLON_CLUSTER_REQUIRED=1 only with a bus (Pylon refuses to boot
	 * with it and no bus); never inherited from the agent's own env. */
	if (bus && required ? setenv("PYLON_CLUSTER_REQUIRED", "1", 1)
	                    : unsetenv("PYLON_CLUSTER_REQUIRED"))
		return err_set(err, EXIT_AGENT_SOFTWARE,
		    "cannot set "
		    "PYLON_CLUSTER_REQUIRED: %s",
		    strerror(errno));
	if (bus ? setenv("PYLON_CLUSTER_BUS", bus, 1)
	        : unsetenv("PYLON_CLUSTER_BUS"))
		return err_set(err, EXIT_AGENT_SOFTWARE,
		    "cannot set "
		    "PYLON_CLUSTER_BUS: %s",
		    strerror(errno));
	if (setenv("PYLON_CLUSTER_NAMESPACE", ns, 1))
		return err_set(err, EXIT_AGENT_SOFTWARE,
		    "cannot set "
		    "PYLON_CLUSTER_NAMESPACE: %s",
		    strerror(errno));
	return 0;
}
