/* util.c - time, durations, randomness, small file reads. */
#include <sys/random.h>
#include <sys/stat.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double
now_ms_f(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int
parse_duration(const char *s, long *ms, struct agent_err *err)
{
	const char *p = s;
	long v = 0, mult;

	if (s == NULL || !isdigit((unsigned char)*p))
		goto bad;
	while (isdigit((unsigned char)*p)) {
		if (v > (LONG_MAX - 9) / 10)
			goto bad;
		v = v * 10 + (*p++ - '0');
	}
	if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 3600 * 1000;
	else
		goto bad;
	if (v > 7L * 24 * 3600 * 1000 / mult) /* a week is plenty */
		goto bad;
	*ms = v * mult;
	return 0;
bad:
	return err_set(err, EXIT_AGENT_USAGE,
	    "invalid duration \"%s\": use a whole number with a unit, e.g. "
	    "500ms, 5s, 2m or 1h (at most a week)",
	    s ? s : "");
}

void
iso8601_now(char *buf, size_t n)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
iso8601_now_micro(char *buf, size_t n)
{
	struct timespec ts;
	struct tm tm;
	char base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, n, "%s.%06ldZ", base, ts.tv_nsec / 1000);
}

void
random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;
	ssize_t r;

	while (n > 0) {
		r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			/* No getrandom: fall back to a time-seeded PRNG. */
			srandom((unsigned)now_ms() ^ (unsigned)getpid());
			while (n-- > 0)
				*p++ = (unsigned char)random();
			return;
		}
		p += r;
		n -= (size_t)r;
	}
}

double
random_unit(void)
{
	uint64_t v;

	random_bytes(&v, sizeof(v));
	return (double)(v >> 11) / 9007199254740992.0;
}

void
sleep_ms(long ms, volatile int *stop)
{
	struct timespec ts, rem;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &rem) == -1 && errno == EINTR) {
		if (stop != NULL && *stop)
			return;
		ts = rem;
	}
}

const char *
file_type_name(unsigned mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "a regular file";
	case S_IFDIR:
		return "a directory";
	case S_IFIFO:
		return "a FIFO (named pipe)";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	case S_IFSOCK:
		return "a socket";
	case S_IFLNK:
		return "a symbolic link";
	}
	return "not a regular file";
}

int
read_file(const char *path, size_t cap, char **out, size_t *lenp,
    struct agent_err *err)
{
	return read_file_opt(path, cap, false, out, lenp, err);
}

int
read_file_opt(const char *path, size_t cap, bool regular, char **out,
    size_t *lenp, struct agent_err *err)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t r;
	int fd, rc = 0;

	*out = NULL;
	/* regular: a FIFO or a device must give an error, never block -
	 * O_NONBLOCK makes open() of a FIFO return at once, and fstat()
	 * then refuses it (no read is ever tried on it). */
	if ((fd = open(path,
	         O_RDONLY | O_CLOEXEC | O_NOCTTY |
	             (regular ? O_NONBLOCK : 0))) == -1)
		return err_set(err, EXIT_AGENT_CONFIG, "cannot read %s: %s",
		    path, strerror(errno));
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "cannot read %s: it is a directory, expected a file", path);
		goto out;
	}
	if (regular && fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		rc = err_set(err, EXIT_AGENT_CONFIG,
		    "cannot read %s: it is "
		    "%s, expected a regular file (pylon-agent writes this "
		    "file itself: remove what is there and run pylon-agent "
		    "init again)",
		    path, file_type_name((unsigned)st.st_mode));
		goto out;
	}
	if (regular)
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	if ((buf = a_malloc(cap + 1)) == NULL) {
		rc = err_oom(err, path);
		goto out;
	}
	for (;;) {
		r = read(fd, buf + len, cap + 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = err_set(err, EXIT_AGENT_CONFIG,
			    "cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > cap) {
			rc = err_set(err, EXIT_AGENT_CONFIG,
			    "%s is larger than %zu bytes: is it the right file?",
			    path, cap);
			goto out;
		}
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
	if (lenp)
		*lenp = len;
out:
	a_free(buf);
	close(fd);
	return rc;
}

/* NAME is BASE.tmp. and six characters of mkstemp's alphabet. */
static bool
tmp_name_of(const char *name, const char *base)
{
	size_t n = strlen(base), i;

	if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5))
		return false;
	name += n + 5;
	for (i = 0; i < 6; i++)
		if (!isalnum((unsigned char)name[i]))
			return false;
	return name[6] == '\0';
}

int
tmp_sweep(const char *path)
{
	char dirc[PATH_MAX], basec[PATH_MAX];
	const char *dir, *base;
	struct dirent *de;
	struct stat st;
	DIR *d;
	time_t now = time(NULL);
	int n = 0;

	if (snprintf(dirc, sizeof(dirc), "%s", path) >= (int)sizeof(dirc))
		return 0;
	memcpy(basec, dirc, sizeof(basec));
	dir = dirname(dirc);
	base = basename(basec);
	if ((d = opendir(dir)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (!tmp_name_of(de->d_name, base))
			continue;
		/* Only a regular file of ours (never a link's target), and
		 * only one no live writer can still be filling: a write of
		 * a few hundred bytes and an fsync take far less. */
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
		    !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
		    now - st.st_mtime < TMP_STALE_S)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	if (n > 0)
		log_info("removed %d stale temp file%s of %s (left by a "
		         "writer that was killed)",
		    n, n == 1 ? "" : "s", path);
	return n;
}

int
write_target_ok(const char *path, const char *what, struct agent_err *err)
{
	struct stat st;

	if (lstat(path, &st) == -1 || S_ISREG(st.st_mode) ||
	    S_ISLNK(st.st_mode))
		return 0;
	return err_set(err, EXIT_AGENT_CANTCREAT,
	    "cannot write the %s %s: "
	    "it is %s, expected a regular file (remove it, or point the "
	    "option at a path on the shared volume)",
	    what, path, file_type_name((unsigned)st.st_mode));
}

void
rstrip(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
}

/* An '@' in the authority (after "://", before '/', '?', '#'). */
bool
url_has_userinfo(const char *url)
{
	const char *p = strstr(url, "://");

	p = p != NULL ? p + 3 : url;
	return memchr(p, '@', strcspn(p, "/?#")) != NULL;
}

#define NS_PUNCT ".-_:+=,~#%"

bool
namespace_valid(const char *ns)
{
	size_t n;

	if (ns == NULL)
		return false;
	n = strlen(ns);
	if (n < 1 || n > 64)
		return false;
	/* What Pylon accepts (anything) narrowed to what is safe in a
	 * single-quoted env file, a log line and an ACL channel rule
	 * (&<ns>:cluster:bus, a glob): no space, quote, backslash, $, glob
	 * or control character, and no / or @ (a misplaced URL is refused,
	 * not used as a channel).  e.g. "team:app". */
	for (; *ns; ns++)
		if (!isalnum((unsigned char)*ns) &&
		    strchr(NS_PUNCT, *ns) == NULL)
			return false;
	return true;
}

/* Capped exponential backoff with equal jitter: step n (0-based) waits
 * between half and all of min(base * 2^n, cap), so a fleet that failed
 * together does not retry in lockstep. */
long
backoff_jitter_ms(long base, int n, long cap)
{
	long d = base > 0 ? base : 1;

	while (n-- > 0 && d < cap)
		d *= 2;
	if (d > cap)
		d = cap;
	return d / 2 + (long)(random_unit() * (double)(d - d / 2));
}
