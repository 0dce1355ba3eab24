/*
 * log.c - one line per message on stderr, text or JSON, and the single
 * redaction point: every secret registered with log_add_secret() is
 * replaced by "***" in every line and in redact() output.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

#define LOG_LINE_MAX 4096
#define MAX_SECRETS 64
/* The first secrets (Redis password, API tokens at start) are never
 * evicted; later ones (rotated service-account tokens) are, oldest
 * first, when the list is full. */
#define PINNED_SECRETS 8

static enum log_format fmt = LOG_TEXT;
static int debug = -1;
/* Longest first, so that a secret that is a prefix of another does not
 * leave the other's tail in clear. */
static char *secrets[MAX_SECRETS];
static unsigned long seqs[MAX_SECRETS]; /* registration order */
static int nsecrets;
static unsigned long nextseq;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void
log_init(enum log_format f)
{
	fmt = f;
}

bool
log_debug_enabled(void)
{
	const char *e;

	if (debug < 0) {
		e = getenv("PYLON_AGENT_DEBUG");
		debug = e != NULL && *e != '\0' && strcmp(e, "0") != 0;
	}
	return debug;
}

/* Removes entry i (lock held). */
static void
secret_remove(int i)
{
	free(secrets[i]);
	memmove(secrets + i, secrets + i + 1,
	    (size_t)(nsecrets - i - 1) * sizeof(secrets[0]));
	memmove(seqs + i, seqs + i + 1,
	    (size_t)(nsecrets - i - 1) * sizeof(seqs[0]));
	nsecrets--;
}

void
log_add_secret(const char *s)
{
	char *dup;
	size_t len;
	int i, victim;

	/* Short strings would redact innocent text; 3+ chars only. */
	if (s == NULL || (len = strlen(s)) < 3)
		return;
	pthread_mutex_lock(&lock);
	for (i = 0; i < nsecrets; i++)
		if (strcmp(secrets[i], s) == 0)
			goto out;
	/* The system allocator on purpose: allocation-failure
	 * injection must never switch redaction off. */
	if ((dup = strdup(s)) == NULL)
		goto out;
	if (nsecrets == MAX_SECRETS) {
		victim = -1;
		for (i = 0; i < nsecrets; i++)
			if (seqs[i] >= PINNED_SECRETS &&
			    (victim < 0 || seqs[i] < seqs[victim]))
				victim = i;
		if (victim < 0) {
			free(dup);
			goto out;
		}
		secret_remove(victim);
	}
	for (i = 0; i < nsecrets && strlen(secrets[i]) >= len; i++)
		;
	memmove(secrets + i + 1, secrets + i,
	    (size_t)(nsecrets - i) * sizeof(secrets[0]));
	memmove(
	    seqs + i + 1, seqs + i, (size_t)(nsecrets - i) * sizeof(seqs[0]));
	secrets[i] = dup;
	seqs[i] = nextseq++;
	nsecrets++;
out:
	pthread_mutex_unlock(&lock);
}

void
log_clear_secrets(void)
{
	pthread_mutex_lock(&lock);
	while (nsecrets > 0)
		free(secrets[--nsecrets]);
	nextseq = 0;
	pthread_mutex_unlock(&lock);
}

/* A control character: what a text line must never carry raw. */
static bool
is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* At most this many insertions inside one secret are looked through. */
#define FUZZ_MAX 16

/*
 * Length of something inserted at p that output folds away or that a
 * terminal does not show: a control character, the '?' output folds one
 * to, or an ANSI CSI sequence (ESC or '?', '[', parameters, a final
 * byte).  0 when p starts none of them.
 */
static size_t
insertion_len(const char *p)
{
	const unsigned char *q = (const unsigned char *)p;

	if (!is_ctl(q[0]) && q[0] != '?')
		return 0;
	if ((q[0] == 0x1b || q[0] == '?') && q[1] == '[') {
		for (q += 2; *q >= 0x30 && *q <= 0x3f; q++)
			;
		for (; *q >= 0x20 && *q <= 0x2f; q++)
			;
		if (*q >= 0x40 && *q <= 0x7e)
			return (size_t)((const char *)q + 1 - p);
	}
	return 1;
}

/*
 * Length of the span at in that shows secret s, or 0.  Beyond the exact
 * bytes, the span may hold what insertion_len() skips (a server that
 * echoes the password with a control character or a colour escape
 * inserted must not show it either), and characters that output folds
 * alike match: a control character or '?' of the secret matches any
 * control character or '?'.  The span starts and ends with a character
 * of the secret.
 */
static size_t
secret_span(const char *in, const char *s)
{
	size_t k = 0, j = 0, skip;
	int ins = 0;

	while (s[j] != '\0') {
		unsigned char c = (unsigned char)in[k];
		unsigned char e = (unsigned char)s[j];

		if (c == '\0')
			return 0;
		if (c == e ||
		    ((is_ctl(e) || e == '?') && (is_ctl(c) || c == '?'))) {
			j++;
			k++;
		} else if (j > 0 && ins < FUZZ_MAX &&
		    (skip = insertion_len(in + k)) > 0) {
			ins++;
			k += skip;
		} else
			return 0;
	}
	return k;
}

char *
redact(const char *in, char *out, size_t n)
{
	size_t o = 0, sl;
	int i, hit;

	if (n == 0)
		return out;
	pthread_mutex_lock(&lock);
	while (*in && o + 1 < n) {
		hit = 0;
		for (i = 0; i < nsecrets; i++) {
			sl = secret_span(in, secrets[i]);
			if (sl > 0) {
				if (o + 3 < n) {
					memcpy(out + o, "***", 3);
					o += 3;
				} else
					o = n - 1;
				in += sl;
				hit = 1;
				break;
			}
		}
		if (!hit)
			out[o++] = *in++;
	}
	out[o] = '\0';
	pthread_mutex_unlock(&lock);
	return out;
}

void
fold_controls(char *s)
{
	for (; *s; s++)
		if (is_ctl((unsigned char)*s))
			*s = '?';
}

static void
json_escape(const char *s, char *out, size_t n)
{
	size_t o = 0;

	for (; *s && o + 7 < n; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c < 0x20) {
			o += (size_t)snprintf(out + o, n - o, "\\u%04x", c);
		} else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

static void
emit(const char *level, const char *fields, const char *msg)
{
	char clean[LOG_LINE_MAX], esc[LOG_LINE_MAX * 2], ts[40];

	redact(msg, clean, sizeof(clean));
	if (fmt == LOG_JSON) {
		/* json_escape() writes every control character as \uXXXX. */
		iso8601_now_micro(ts, sizeof(ts));
		json_escape(clean, esc, sizeof(esc));
		fprintf(stderr,
		    "{\"time\":\"%s\",\"level\":\"%s\","
		    "\"logger\":\"pylon-agent\",\"msg\":\"%s\"%s}\n",
		    ts, level, esc, fields ? fields : "");
	} else {
		/* One message, one line: a \r, \n or an escape sequence
		 * from a URL or a server's answer cannot forge a line or
		 * repaint the terminal. */
		fold_controls(clean);
		if (strcmp(level, "info") == 0)
			fprintf(stderr, "[pylon-agent] %s\n", clean);
		else
			fprintf(stderr, "[pylon-agent] %s: %s\n", level, clean);
	}
	fflush(stderr);
}

static void
vlog(const char *level, const char *fields, const char *f, va_list ap)
{
	char msg[LOG_LINE_MAX];

	vsnprintf(msg, sizeof(msg), f, ap);
	emit(level, fields, msg);
}

void
log_line(const char *level, const char *fields, const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vlog(level, fields, f, ap);
	va_end(ap);
}

void
log_info(const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vlog("info", NULL, f, ap);
	va_end(ap);
}

void
log_warnx(const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vlog("warning", NULL, f, ap);
	va_end(ap);
}

void
log_warn(const char *f, ...)
{
	char msg[LOG_LINE_MAX];
	int saved = errno;
	va_list ap;

	va_start(ap, f);
	vsnprintf(msg, sizeof(msg), f, ap);
	va_end(ap);
	log_line("warning", NULL, "%s: %s", msg, strerror(saved));
}

void
log_errorx(const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vlog("error", NULL, f, ap);
	va_end(ap);
}

void
log_debug(const char *f, ...)
{
	va_list ap;

	if (!log_debug_enabled())
		return;
	va_start(ap, f);
	vlog("debug", NULL, f, ap);
	va_end(ap);
}
