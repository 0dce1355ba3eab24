/*
 * redis_url.c - parse and redact the Redis URL handed to Pylon as
 * PYLON_CLUSTER_BUS.
 *
 * Forms this parser reads (the proof's transport can use them all; which
 * of them the configured Pylon can use is redis_url_pylon_check's call):
 *   redis://[[user][:pass]@]host[:port][/db][?protocol=resp2|resp3]
 *   rediss://...same...[?insecure][#insecure]
 *   redis+unix:///path/to/socket[?db=N&user=U&pass=P&protocol=...]
 *   unix:///path/to/socket[?...same...]
 * user and password are percent-decoded; invalid escapes stay literal.
 *
 * Error messages never echo the authority (it may hold the password), and
 * echo a path, query key or fragment only when no '@' follows it (an '@'
 * there means a password with an unescaped '/', '?' or '#').
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bus.h"

#define URL_MAX 4096
#define DB_MAX 1000000

/* Where the password sits in the raw URL, for redaction. */
struct url_span {
	size_t off;
	size_t len;
};

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decodes s[0..n) into a new string.  Invalid escapes are kept
 * literally (as Pylon's client does).  Returns NULL on allocation failure
 * or when the result would hold a NUL (*nul set).
 */
STATIC char *
pct_decode(const char *s, size_t n, bool *nul)
{
	char *out;
	size_t i, o = 0;
	int hi, lo;

	*nul = false;
	if ((out = a_malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
		    (lo = hexval(s[i + 2])) >= 0) {
			out[o] = (char)(hi * 16 + lo);
			if (out[o] == '\0') {
				*nul = true;
				a_free(out);
				return NULL;
			}
			o++;
			i += 2;
		} else
			out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

static bool
all_digits(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return false;
	for (i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* Parses a decimal in [lo, hi]; -1 when not. */
static long
num_in(const char *s, size_t n, long lo, long hi)
{
	long v = 0;
	size_t i;

	if (!all_digits(s, n) || n > 9)
		return -1;
	for (i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v < lo || v > hi ? -1 : v;
}

static bool
host_char_ok(int c)
{
	return isalnum(c) || c == '.' || c == '-' || c == '_';
}

static bool
has_at(const char *s, const char *end)
{
	return memchr(s, '@', (size_t)(end - s)) != NULL;
}

static int
bad(struct agent_err *err, const char *what)
{
	return err_set(err, EXIT_AGENT_CONFIG, "bad Redis URL: %s", what);
}

/* The query string: "k=v&k2&..." (without '?'), unix or tcp rules. */
static int
parse_query(const char *q, const char *qend, bool unixsock, struct redis_url *u,
    struct url_span *pass, const char *base, struct agent_err *err)
{
	const char *p = q, *amp, *eq, *v;
	size_t klen, vlen;
	bool nul;
	char key[32], *val;
	long db;

	while (p < qend) {
		amp = memchr(p, '&', (size_t)(qend - p));
		if (amp == NULL)
			amp = qend;
		if (amp == p) {
			p++;
			continue;
		}
		eq = memchr(p, '=', (size_t)(amp - p));
		klen = (size_t)((eq ? eq : amp) - p);
		v = eq ? eq + 1 : amp;
		vlen = (size_t)(amp - v);
		if (klen >= sizeof(key)) {
			return bad(err,
			    "a query parameter name is too long "
			    "(known: protocol, insecure; unix sockets also "
			    "db, user, pass)");
		}
		memcpy(key, p, klen);
		key[klen] = '\0';

		if (strcmp(key, "protocol") == 0) {
			if (!(vlen == 5 &&
			        (!strncmp(v, "resp2", 5) ||
			            !strncmp(v, "resp3", 5))) &&
			    !(vlen == 1 && (*v == '2' || *v == '3')))
				return bad(err,
				    "protocol= must be resp2 or "
				    "resp3");
			u->resp3 = v[vlen - 1] == '3';
		} else if (strcmp(key, "insecure") == 0 && !unixsock) {
			if (eq != NULL &&
			    !(vlen == 4 && !strncasecmp(v, "true", 4)) &&
			    !(vlen == 1 && *v == '1'))
				return bad(err,
				    "insecure takes no value "
				    "(write ?insecure or #insecure)");
			u->insecure = true;
		} else if (unixsock && strcmp(key, "db") == 0) {
			if ((db = num_in(v, vlen, 0, DB_MAX)) < 0)
				return bad(err,
				    "db= must be a database "
				    "number (0, 1, ...)");
			u->db = (int)db;
		} else if (unixsock &&
		    (strcmp(key, "user") == 0 || strcmp(key, "pass") == 0 ||
		        strcmp(key, "password") == 0)) {
			if ((val = pct_decode(v, vlen, &nul)) == NULL) {
				if (nul)
					return bad(err,
					    "user/pass holds "
					    "%00");
				return err_oom(err, "redis_url_parse");
			}
			if (key[0] == 'u') {
				a_free(u->user);
				u->user = val;
			} else {
				a_free(u->pass);
				u->pass = val;
				pass->off = (size_t)(v - base);
				pass->len = vlen;
			}
			if (*val == '\0') {
				a_free(val);
				if (key[0] == 'u')
					u->user = NULL;
				else
					u->pass = NULL;
			}
		} else {
			return err_set(err, EXIT_AGENT_CONFIG,
			    "bad Redis URL: unknown query parameter '%s' "
			    "(known: %s)",
			    key,
			    unixsock ? "db, user, pass, protocol"
			             : "protocol, insecure");
		}
		p = amp;
	}
	return 0;
}

/* host[:port] or [v6][:port] */
static int
parse_hostport(
    const char *h, const char *hend, struct redis_url *u, struct agent_err *err)
{
	const char *colon = NULL, *p;
	char buf[INET6_ADDRSTRLEN + 8];
	unsigned char a6[16];
	long port;
	size_t n;

	if (h == hend)
		return bad(err, "no host (expected redis://host:port)");
	if (*h == '[') {
		p = memchr(h, ']', (size_t)(hend - h));
		if (p == NULL)
			return bad(err, "unterminated '[' in the host");
		n = (size_t)(p - h - 1);
		if (n == 0 || n >= sizeof(buf))
			return bad(err, "bad IPv6 address in brackets");
		memcpy(buf, h + 1, n);
		buf[n] = '\0';
		if (inet_pton(AF_INET6, buf, a6) != 1)
			return bad(err, "bad IPv6 address in brackets");
		if ((u->host = a_strdup(buf)) == NULL)
			return err_oom(err, "redis_url_parse");
		p++;
		if (p < hend && *p != ':')
			return bad(err,
			    "unexpected text after ']' in the "
			    "host");
		colon = p < hend ? p : NULL;
	} else {
		for (p = h; p < hend; p++) {
			if (*p == ':') {
				if (colon != NULL)
					return bad(err,
					    "more than one ':' in "
					    "host:port (put an IPv6 address "
					    "in brackets: [::1]:6379; "
					    "percent-encode ':' in a "
					    "password)");
				colon = p;
			} else if (!host_char_ok((unsigned char)*p))
				return bad(err,
				    "the host holds a character "
				    "that is not allowed in a host name "
				    "(percent-encode special characters "
				    "in the password)");
		}
		n = (size_t)((colon ? colon : hend) - h);
		if (n == 0)
			return bad(err,
			    "no host (expected "
			    "redis://host:port)");
		if (n > 253)
			return bad(err,
			    "host name longer than 253 "
			    "characters");
		if ((u->host = a_strndup(h, n)) == NULL)
			return err_oom(err, "redis_url_parse");
	}
	u->port = 6379;
	if (colon != NULL && colon + 1 < hend) {
		port = num_in(colon + 1, (size_t)(hend - colon - 1), 1, 65535);
		if (port < 0)
			return bad(err,
			    "the port must be a number in "
			    "1-65535");
		u->port = (int)port;
	}
	return 0;
}

/* The URL as text: not empty, not too long, no space or control. */
static int
url_check_text(const char *url, size_t *np, struct agent_err *err)
{
	size_t n, i;

	if (url == NULL || *url == '\0')
		return bad(err, "empty (expected redis://host:port)");
	n = strlen(url);
	if (n > URL_MAX)
		return bad(err, "longer than 4096 characters");
	if (isspace((unsigned char)url[0]) ||
	    isspace((unsigned char)url[n - 1]))
		return bad(err,
		    "surrounding whitespace or control "
		    "character (Pylon exits 1 at boot on \" redis://\"): "
		    "remove the spaces or newline around the URL");
	for (i = 0; i < n; i++)
		if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f)
			return bad(err,
			    "it holds a space or control "
			    "character (percent-encode it, e.g. %20)");
	*np = n;
	return 0;
}

/* The scheme: u->kind and u->tls, *p just past "://". */
static int
url_scheme(
    const char *url, struct redis_url *u, const char **p, struct agent_err *err)
{
	static const struct {
		const char *prefix;
		size_t len;
		bool unixsock, tls;
	} schemes[] = {
	    {"redis://", 8, false, false},
	    {"rediss://", 9, false, true},
	    {"redis+unix://", 13, true, false},
	    {"unix://", 7, true, false},
	};
	size_t i;

	for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strncasecmp(url, schemes[i].prefix, schemes[i].len) == 0) {
			*p = url + schemes[i].len;
			u->kind = schemes[i].unixsock ? REDIS_UNIX : REDIS_TCP;
			u->tls = schemes[i].tls;
			return 0;
		}
	return bad(err,
	    "unknown scheme (expected redis://, rediss://, "
	    "redis+unix:// or unix://)");
}

/* redis+unix:///path?user=&pass=&db=: the path (path .. pend) and query. */
static int
url_unix(const char *auth, const char *path, const char *pend, const char *q,
    const char *qend, struct redis_url *u, struct url_span *pass,
    const char *url, struct agent_err *err)
{
	bool nul;
	int rc;

	if (auth != path)
		return bad(err,
		    "a unix socket URL has no host: write "
		    "redis+unix:///path/to/redis.sock (three slashes; user "
		    "and password go in ?user= and ?pass=)");
	if (pend - path < 2)
		return bad(err,
		    "no socket path (expected "
		    "redis+unix:///path/to/redis.sock)");
	if ((u->path = pct_decode(path, (size_t)(pend - path), &nul)) == NULL)
		return nul ? bad(err, "the socket path holds %00")
		           : err_oom(err, "redis_url_parse");
	if (strlen(u->path) >= 108)
		return bad(err,
		    "the socket path is longer than 107 bytes "
		    "(the limit of a unix socket address)");
	if (q != NULL &&
	    (rc = parse_query(q, qend, true, u, pass, url, err)) != 0)
		return rc;
	if (u->insecure)
		return bad(err, "#insecure applies to rediss:// only");
	return 0;
}

/* user:password@ up to the last '@' of the authority (auth .. aend);
 * *host is where the host starts.  pass gets the password's span. */
static int
url_userinfo(const char *url, const char *auth, const char *aend,
    struct redis_url *u, struct url_span *pass, const char **host,
    struct agent_err *err)
{
	const char *at = NULL, *colon;
	size_t n, i;
	bool nul;

	*host = auth;
	for (i = 0; auth + i < aend; i++)
		if (auth[i] == '@')
			at = auth + i;
	if (at == NULL)
		return 0;
	colon = memchr(auth, ':', (size_t)(at - auth));
	n = (size_t)((colon ? colon : at) - auth);
	if (n > 0 && (u->user = pct_decode(auth, n, &nul)) == NULL)
		return nul ? bad(err, "the user name holds %00")
		           : err_oom(err, "redis_url_parse");
	if (colon != NULL && at - colon > 1) {
		pass->off = (size_t)(colon + 1 - url);
		pass->len = (size_t)(at - colon - 1);
		if ((u->pass = pct_decode(colon + 1, pass->len, &nul)) == NULL)
			return nul ? bad(err, "the password holds %00")
			           : err_oom(err, "redis_url_parse");
	}
	*host = at + 1;
	return 0;
}

STATIC int
url_parse_span(const char *url, struct redis_url *u, struct url_span *pass,
    struct agent_err *err)
{
	const char *p = NULL, *end, *auth, *aend, *path, *pend;
	const char *q = NULL, *qend = NULL, *frag = NULL;
	size_t n = 0;
	long db;
	int rc;

	memset(u, 0, sizeof(*u));
	pass->off = pass->len = 0;
	if ((rc = url_check_text(url, &n, err)) != 0 ||
	    (rc = url_scheme(url, u, &p, err)) != 0)
		return rc;
	end = url + n;

	/* fragment, query */
	frag = memchr(p, '#', (size_t)(end - p));
	pend = frag ? frag : end;
	q = memchr(p, '?', (size_t)(pend - p));
	if (q != NULL) {
		qend = pend;
		pend = q;
		q++;
	}
	/* authority: up to the first '/' */
	auth = p;
	aend = memchr(p, '/', (size_t)(pend - p));
	if (aend == NULL)
		aend = pend;
	path = aend;

	/* An '@' past the authority: a password with an unescaped
	 * '/', '?' or '#'.  Say so without echoing anything. */
	if (u->kind != REDIS_UNIX && has_at(aend, end)) {
		rc = bad(err,
		    "an '@' follows a '/', '?' or '#': "
		    "percent-encode '/', '?', '#' and '@' in the user name "
		    "and password (e.g. %2F %3F %23 %40)");
		goto fail;
	}
	if (frag != NULL) {
		if (strcmp(frag + 1, "insecure") == 0)
			u->insecure = true;
		else if (frag[1] != '\0') {
			rc = bad(err,
			    "unknown fragment (only #insecure is "
			    "known)");
			goto fail;
		}
	}
	if (u->kind == REDIS_UNIX) {
		if ((rc = url_unix(
		         auth, path, pend, q, qend, u, pass, url, err)) != 0)
			goto fail;
		return 0;
	}
	if ((rc = url_userinfo(url, auth, aend, u, pass, &auth, err)) != 0 ||
	    (rc = parse_hostport(auth, aend, u, err)) != 0)
		goto fail;

	/* path: "", "/" or "/<db>" */
	if (pend - path > 1) {
		db = num_in(path + 1, (size_t)(pend - path - 1), 0, DB_MAX);
		if (db < 0) {
			rc = err_set(err, EXIT_AGENT_CONFIG,
			    "bad Redis URL: "
			    "the path must be /<database number>, got "
			    "'%.*s'",
			    (int)(pend - path > 40 ? 40 : pend - path), path);
			goto fail;
		}
		u->db = (int)db;
	}
	if (q != NULL &&
	    (rc = parse_query(q, qend, false, u, pass, url, err)) != 0)
		goto fail;
	return 0;
fail:
	redis_url_release(u);
	return rc;
}

int
redis_url_parse(const char *url, struct redis_url *u, struct agent_err *err)
{
	struct url_span span;

	return url_parse_span(url, u, &span, err);
}

void
redis_url_release(struct redis_url *u)
{
	if (u == NULL)
		return;
	a_free(u->user);
	a_free(u->pass);
	a_free(u->host);
	a_free(u->path);
	memset(u, 0, sizeof(*u));
}

/*
 * A unix URL with every pass=/password= value masked: the query may name
 * the password twice (the last one wins), and the span covers one.
 */
static char *
redact_unix_query(const char *url)
{
	const char *q, *p, *amp, *eq, *end;
	char *out;
	size_t n = strlen(url), o;

	if ((out = a_malloc(n + 4 * (n / 5 + 1) + 1)) == NULL)
		return NULL;
	end = url + n;
	if ((q = strchr(url, '#')) != NULL)
		end = q;
	if ((q = memchr(url, '?', (size_t)(end - url))) == NULL) {
		memcpy(out, url, n + 1);
		return out;
	}
	o = (size_t)(++q - url);
	memcpy(out, url, o);
	for (p = q; p < end; p = amp) {
		if ((amp = memchr(p, '&', (size_t)(end - p))) == NULL)
			amp = end;
		else
			amp++;
		eq = memchr(p, '=', (size_t)(amp - p));
		if (eq != NULL &&
		    ((eq - p == 4 && !strncmp(p, "pass", 4)) ||
		        (eq - p == 8 && !strncmp(p, "password", 8))) &&
		    eq + 1 < amp && eq[1] != '&') {
			memcpy(out + o, p, (size_t)(eq + 1 - p));
			o += (size_t)(eq + 1 - p);
			memcpy(out + o, "***", 3);
			o += 3;
			if (amp[-1] == '&' && amp <= end)
				out[o++] = '&';
		} else {
			memcpy(out + o, p, (size_t)(amp - p));
			o += (size_t)(amp - p);
		}
	}
	memcpy(out + o, end, strlen(end) + 1);
	return out;
}

char *
redis_url_redact(const char *url)
{
	struct redis_url u;
	struct url_span span;
	struct agent_err err;
	char *out;
	size_t n;

	if (url == NULL)
		return a_strdup("(none)");
	if (url_parse_span(url, &u, &span, &err) != 0)
		return a_strdup("(invalid Redis URL)");
	if (u.kind == REDIS_UNIX) {
		redis_url_release(&u);
		return redact_unix_query(url);
	}
	redis_url_release(&u);
	if (span.len == 0)
		return a_strdup(url);
	n = strlen(url);
	if ((out = a_malloc(n - span.len + 4)) == NULL)
		return NULL;
	memcpy(out, url, span.off);
	memcpy(out + span.off, "***", 3);
	memcpy(out + span.off + 3, url + span.off + span.len,
	    n - span.off - span.len + 1);
	return out;
}

void
redis_url_register_secrets(const char *url)
{
	struct redis_url u;
	struct url_span span;
	struct agent_err err;
	char raw[URL_MAX + 1];

	if (url == NULL || url_parse_span(url, &u, &span, &err) != 0)
		return;
	if (u.pass != NULL)
		log_add_secret(u.pass);
	if (span.len > 0 && span.len <= URL_MAX) {
		memcpy(raw, url + span.off, span.len);
		raw[span.len] = '\0';
		log_add_secret(raw);
	}
	redis_url_release(&u);
}

/* Where the URL points, for messages: "host:port", "[v6]:port", path. */
void
redis_url_where(const struct redis_url *u, char *buf, size_t n)
{
	if (u->kind == REDIS_UNIX)
		snprintf(buf, n, "unix:%s", u->path ? u->path : "?");
	else if (u->host != NULL && strchr(u->host, ':') != NULL)
		snprintf(buf, n, "[%s]:%d", u->host, u->port);
	else
		snprintf(buf, n, "%s:%d", u->host ? u->host : "?", u->port);
}

/* ---- the compatibility gate (SPEC 5) ---------------------------------- */

static int
gate(struct agent_err *err, const char *why)
{
	return err_set(err, EXIT_AGENT_CONFIG,
	    "Redis URL refused for "
	    "Pylon: %s",
	    why);
}

/* A query key for a message: only short plain names are echoed. */
static void
query_key(const char *k, size_t n, char *out, size_t outn)
{
	size_t i;

	if (n == 0 || n >= outn || n > 24) {
		snprintf(out, outn, "(a parameter)");
		return;
	}
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)k[i]) && k[i] != '_' &&
		    k[i] != '-') {
			snprintf(out, outn, "(a parameter)");
			return;
		}
	snprintf(out, outn, "'%.*s'", (int)n, k);
}

int
redis_url_pylon_check(const char *url, unsigned flags, struct agent_err *err)
{
	const char *p, *end, *q, *frag, *amp, *eq;
	char key[40], why[512];
	size_t n, vlen;
	bool tls;

	if (url == NULL || *url == '\0')
		return gate(err,
		    "empty: Pylon reads an empty PYLON_CLUSTER_BUS "
		    "as NoopBus; give redis://[user:password@]host:port[/db]");
	n = strlen(url);
	if (isspace((unsigned char)url[0]) ||
	    isspace((unsigned char)url[n - 1]))
		return gate(err,
		    "surrounding whitespace (Pylon 0.11.3 exits 1 "
		    "at boot on \" redis://\"): remove the spaces or newline "
		    "around the URL");
	if (strncmp(url, "redis://", 8) == 0)
		tls = false;
	else if (strncmp(url, "rediss://", 9) == 0)
		tls = true;
	else if (strncasecmp(url, "redis://", 8) == 0 ||
	    strncasecmp(url, "rediss://", 9) == 0)
		return gate(err,
		    "upper-case scheme (Pylon 0.11.3 matches "
		    "the scheme case-sensitively and exits 1 at boot on "
		    "REDIS://): write it in lower case, redis://");
	else if (strncasecmp(url, "unix://", 7) == 0 ||
	    strncasecmp(url, "redis+unix://", 13) == 0)
		return gate(err,
		    "a unix socket (Pylon 0.11.3 exits 1 at boot "
		    "on unix:// and redis+unix://: it accepts only redis:// "
		    "and rediss://): give Redis a TCP listener and use "
		    "redis://host:port");
	else
		return gate(err,
		    "unknown scheme: Pylon 0.11.3 accepts "
		    "redis://[user:password@]host:port[/db] (rediss:// only "
		    "with a TLS-capable Pylon build, see --pylon-tls)");
	if (tls && (flags & (PYLON_URL_TLS | PYLON_URL_PROXY)) == 0)
		return gate(err,
		    "Pylon 0.11.3 cannot speak TLS (it exits 1 at "
		    "boot on rediss://): let the agent carry TLS with "
		    "--bus-proxy 127.0.0.1:6380 in a shape that runs it for the "
		    "pod's life: the native sidecar (init --bus-proxy and serve "
		    "--bus-proxy as a restartPolicy: Always init container; "
		    "chart: agent.shape=nativeSidecar, agent.busProxy.enabled) "
		    "or the supervisor (serve --bus-proxy 127.0.0.1:6380 -- "
		    "pylon start; Fly); or use redis:// on a private network, "
		    "or --pylon-tls if your Pylon build has TLS. exec and the "
		    "init-only and classic-sidecar shapes cannot carry TLS for "
		    "Pylon");
	end = url + n;
	frag = memchr(url, '#', n);
	if (frag != NULL) {
		if (!tls && frag[1] != '\0')
			return gate(err,
			    "#insecure applies to rediss:// only "
			    "(Pylon ignores a fragment on redis://): remove it");
		end = frag;
	}
	if ((q = memchr(url, '?', (size_t)(end - url))) == NULL)
		return 0;
	for (p = q + 1; p < end; p = amp + (amp < end)) {
		if ((amp = memchr(p, '&', (size_t)(end - p))) == NULL)
			amp = end;
		if (amp == p)
			continue;
		eq = memchr(p, '=', (size_t)(amp - p));
		n = (size_t)((eq ? eq : amp) - p);
		vlen = eq ? (size_t)(amp - eq - 1) : 0;
		if (n == 8 && strncmp(p, "protocol", 8) == 0 && eq != NULL &&
		    vlen == 5 &&
		    (strncmp(eq + 1, "resp2", 5) == 0 ||
		        strncmp(eq + 1, "resp3", 5) == 0))
			continue;
		if (n == 8 && strncmp(p, "protocol", 8) == 0)
			return gate(err,
			    "write ?protocol=resp2 or "
			    "?protocol=resp3 (the only spellings the agent "
			    "knows Pylon's client to accept)");
		if (n == 8 && strncmp(p, "insecure", 8) == 0)
			return gate(err,
			    "?insecure is not read by Pylon's "
			    "Redis client (it would verify the certificate "
			    "while the agent does not): write #insecure, or "
			    "better --redis-ca-file and no insecure at all");
		query_key(p, n, key, sizeof(key));
		snprintf(why, sizeof(why),
		    "the query parameter %s is ignored "
		    "by Pylon (its client reads only ?protocol= on redis:// "
		    "URLs): remove it; the database goes in the path (/N), "
		    "user and password before the host (user:password@)",
		    key);
		return gate(err, why);
	}
	return 0;
}
