/*
 * dl.c - loading libcurl, libmicrohttpd and OpenSSL on first use, and the
 * ".note.dlopen" note that declares them.  See dl.h.
 *
 * A library is opened with RTLD_LAZY and RTLD_NODELETE, then every symbol
 * the agent calls is looked up; the sym_ pointers are filled only when
 * all resolved, so a half-loaded library is never called.  RTLD_LAZY
 * (not RTLD_NOW) because RTLD_NOW binds every function of all ~30
 * libraries libcurl brings, ~0.35 ms of each Kubernetes/Fly start
 * (docs/benchmarks.md).  Debian links libcurl.so.4, libmicrohttpd.so.12,
 * libssl.so.3 and libcrypto.so.3 themselves with -z now, so their own
 * references are still all resolved at load, and the symbols the agent
 * calls are checked by dlsym() here.  It is never
 * closed: the agent keeps using it until exit.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DL_DEFINING 1
#include "curl_dl.h"
#include "mhd_dl.h"
#include "ssl_dl.h"

/* The pointers the code calls through (declared in the *_dl.h). */
#define DL_DEFINE(s) __typeof__(sym_##s) sym_##s;
CURL_DL_SYMS(DL_DEFINE)
MHD_DL_SYMS(DL_DEFINE)
SSL_DL_SYMS(DL_DEFINE)

struct dl_sym {
	void **ptr;
	const char *name;
};

#define DL_SYM(s) {(void **)&sym_##s, #s},

static const struct dl_sym curl_syms[] = {CURL_DL_SYMS(DL_SYM)};
static const struct dl_sym mhd_syms[] = {MHD_DL_SYMS(DL_SYM)};
static const struct dl_sym ssl_syms[] = {SSL_DL_SYMS(DL_SYM)};

struct dl_lib {
	const char *soname; /* what dlopen() is given */
	const char *package; /* the Debian package */
	const char *feature; /* what needs it */
	const struct dl_sym *syms;
	size_t nsyms;
	pthread_mutex_t lock;
	int state; /* 0 untried, 1 ok, -1 failed */
	char why[384]; /* dlerror() of the failure */
};

#define DL_LIB(so, pkg, feat, tab) \
	{ \
		so, pkg, feat, tab, sizeof(tab) / sizeof(tab[0]), \
		    PTHREAD_MUTEX_INITIALIZER, 0, "" \
	}

static struct dl_lib lib_curl = DL_LIB(
    "libcurl.so.4", "libcurl4", "the Kubernetes and Fly APIs", curl_syms);
static struct dl_lib lib_mhd = DL_LIB("libmicrohttpd.so.12", "libmicrohttpd12",
    "serve's HTTP endpoints", mhd_syms);
static struct dl_lib lib_ssl =
    DL_LIB("libssl.so.3", "libssl3", "TLS to Redis (rediss://)", ssl_syms);

/*
 * The ELF dlopen metadata: one note, owner "FDO", type 0x407c0c0a, whose
 * descriptor is a NUL-terminated JSON array padded to 4 bytes.  The
 * section name starting with ".note" makes the assembler emit SHT_NOTE;
 * "used" keeps it through the link (nothing references it).
 */
#define DL_NOTE_JSON \
	"[{\"feature\":\"kubernetes-fly-api\",\"description\":" \
	"\"Kubernetes and Fly API discovery (init, serve, decide, check)" \
	"\",\"priority\":\"recommended\",\"soname\":[\"libcurl.so.4\"]}," \
	"{\"feature\":\"serve-http\",\"description\":\"serve's HTTP " \
	"endpoints\",\"priority\":\"recommended\",\"soname\":" \
	"[\"libmicrohttpd.so.12\"]}," \
	"{\"feature\":\"redis-tls\",\"description\":\"TLS to Redis " \
	"(rediss://)\",\"priority\":\"recommended\",\"soname\":" \
	"[\"libssl.so.3\",\"libcrypto.so.3\"]}]"

#define DL_ALIGN4(n) (((n) + 3) & ~(size_t)3)

__attribute__((used, section(".note.dlopen"), aligned(4))) static const struct {
	uint32_t namesz;
	uint32_t descsz;
	uint32_t type;
	char name[DL_ALIGN4(sizeof(DL_NOTE_OWNER))];
	char desc[DL_ALIGN4(sizeof(DL_NOTE_JSON))];
} dl_note = {sizeof(DL_NOTE_OWNER), sizeof(DL_NOTE_JSON), DL_NOTE_TYPE,
    DL_NOTE_OWNER, DL_NOTE_JSON};

/*
 * The bundle's copy (<bin>/../lib-dlopen/<soname>) by its path when it is
 * there, else the soname (the system's).  dlopen() resolves a bare name
 * with the RUNPATH of its caller, which is not the binary under a
 * sanitizer runtime that wraps dlopen; a path does not depend on that.
 */
static void *
dl_open(const char *soname)
{
	char exe[PATH_MAX], path[PATH_MAX + 64], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	void *h;

	if (n > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL) {
			*slash = '\0';
			snprintf(path, sizeof(path), "%s/../lib-dlopen/%s", exe,
			    soname);
			if (access(path, R_OK) == 0 &&
			    (h = dlopen(path, RTLD_LAZY | RTLD_NODELETE)) !=
			        NULL)
				return h;
		}
	}
	return dlopen(soname, RTLD_LAZY | RTLD_NODELETE);
}

static int
dl_load(struct dl_lib *l)
{
	void *h, *p[64];
	const char *e;
	size_t i;

	if (l->nsyms > sizeof(p) / sizeof(p[0])) {
		snprintf(l->why, sizeof(l->why), "too many symbols");
		return -1;
	}
	(void)dlerror();
	if ((h = dl_open(l->soname)) == NULL) {
		e = dlerror();
		snprintf(l->why, sizeof(l->why), "%s", e ? e : "dlopen failed");
		return -1;
	}
	for (i = 0; i < l->nsyms; i++) {
		(void)dlerror();
		if ((p[i] = dlsym(h, l->syms[i].name)) == NULL) {
			snprintf(l->why, sizeof(l->why),
			    "symbol %s not found "
			    "(library too old?)",
			    l->syms[i].name);
			dlclose(h);
			return -1;
		}
	}
	for (i = 0; i < l->nsyms; i++)
		*l->syms[i].ptr = p[i];
	return 0;
}

static int
dl_need(struct dl_lib *l, struct agent_err *err)
{
	int state;

	pthread_mutex_lock(&l->lock);
	if (l->state == 0)
		l->state = dl_load(l) == 0 ? 1 : -1;
	state = l->state;
	pthread_mutex_unlock(&l->lock);
	if (state == 1)
		return 0;
	return err_set(err, EXIT_AGENT_SOFTWARE,
	    "%s is needed for %s but "
	    "cannot be loaded (%s): install the Debian package %s, or run "
	    "the full pylon-agent bundle, whose lib-dlopen/ carries it",
	    l->soname, l->feature, l->why, l->package);
}

static bool
dl_loaded(struct dl_lib *l)
{
	bool ok;

	pthread_mutex_lock(&l->lock);
	ok = l->state == 1;
	pthread_mutex_unlock(&l->lock);
	return ok;
}

int
dl_need_curl(struct agent_err *err)
{
	return dl_need(&lib_curl, err);
}
int
dl_need_mhd(struct agent_err *err)
{
	return dl_need(&lib_mhd, err);
}
int
dl_need_ssl(struct agent_err *err)
{
	return dl_need(&lib_ssl, err);
}
bool
dl_loaded_curl(void)
{
	return dl_loaded(&lib_curl);
}
bool
dl_loaded_mhd(void)
{
	return dl_loaded(&lib_mhd);
}
bool
dl_loaded_ssl(void)
{
	return dl_loaded(&lib_ssl);
}
