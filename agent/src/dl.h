/*
 * dl.h - optional libraries loaded on first use (dl.c).
 *
 * libcurl (the Kubernetes and Fly APIs), libmicrohttpd (serve's HTTP) and
 * OpenSSL (rediss://; libcurl brings its own) are not linked: most starts
 * of the agent (exec, probe, decide, version, check) never need them, and
 * linking libcurl alone loads ~30 shared objects and costs ~6 ms and
 * ~6 MiB before main.  Each is dlopen()ed the first time a command needs
 * it and every symbol the agent calls is resolved at once; when that
 * fails the command fails with one line naming the library and the Debian
 * package (exit EXIT_AGENT_SOFTWARE: the installation is broken; 69 is
 * taken by "bus not proven").
 *
 * The code calls the libraries by their usual names: curl_dl.h,
 * mhd_dl.h and ssl_dl.h declare one pointer per symbol (sym_NAME) and
 * #define NAME to it, so a call the tables in dl.c miss is a link error,
 * not a crash.
 *
 * The binary declares these dependencies in an ELF ".note.dlopen" note
 * (the freedesktop "ELF dlopen metadata" format: owner "FDO", type
 * 0x407c0c0a, a NUL-terminated JSON array), which `readelf -n` shows and
 * scripts/bundle.sh reads to carry the libraries in the bundle.
 */
#ifndef PYLON_AGENT_DL_H
#define PYLON_AGENT_DL_H

#include "agent.h"

#define DL_NOTE_OWNER "FDO"
#define DL_NOTE_TYPE 0x407c0c0au

/*
 * Each loads its library once (thread-safe) and returns 0, or fills err
 * (EXIT_AGENT_SOFTWARE, naming the library, the package and the dlerror)
 * and returns its code; a failure is remembered and repeated.
 */
int dl_need_curl(struct agent_err *);
int dl_need_mhd(struct agent_err *);
int dl_need_ssl(struct agent_err *);

/* Whether the library is already loaded (for `version`, metrics). */
bool dl_loaded_curl(void);
bool dl_loaded_mhd(void);
bool dl_loaded_ssl(void);

#endif
