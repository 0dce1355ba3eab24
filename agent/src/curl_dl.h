/*
 * curl_dl.h - libcurl through dl.c: include instead of <curl/curl.h>, and
 * call dl_need_curl() before the first call.  See dl.h.
 */
#ifndef PYLON_AGENT_CURL_DL_H
#define PYLON_AGENT_CURL_DL_H

/* The type-checking wrappers would call the real symbols. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "dl.h"

/* One X() per symbol: a table, kept as written. */
/* clang-format off */
#define CURL_DL_SYMS(X)							\
	X(curl_easy_cleanup) X(curl_easy_getinfo) X(curl_easy_init)	\
	X(curl_easy_perform) X(curl_easy_reset) X(curl_easy_setopt)	\
	X(curl_easy_strerror) X(curl_free) X(curl_getdate)		\
	X(curl_global_init) X(curl_slist_append) X(curl_slist_free_all)	\
	X(curl_url) X(curl_url_cleanup) X(curl_url_get) X(curl_url_set)	\
	X(curl_version_info)
/* clang-format on */

#define CURL_DL_DECLARE(s) extern __typeof__(s) *sym_##s;
CURL_DL_SYMS(CURL_DL_DECLARE)

#ifndef DL_DEFINING
/* curl.h maps these two to themselves as macros. */
#undef curl_easy_getinfo
#undef curl_easy_setopt
#define curl_easy_cleanup sym_curl_easy_cleanup
#define curl_easy_getinfo sym_curl_easy_getinfo
#define curl_easy_init sym_curl_easy_init
#define curl_easy_perform sym_curl_easy_perform
#define curl_easy_reset sym_curl_easy_reset
#define curl_easy_setopt sym_curl_easy_setopt
#define curl_easy_strerror sym_curl_easy_strerror
#define curl_free sym_curl_free
#define curl_getdate sym_curl_getdate
#define curl_global_init sym_curl_global_init
#define curl_slist_append sym_curl_slist_append
#define curl_slist_free_all sym_curl_slist_free_all
#define curl_url sym_curl_url
#define curl_url_cleanup sym_curl_url_cleanup
#define curl_url_get sym_curl_url_get
#define curl_url_set sym_curl_url_set
#define curl_version_info sym_curl_version_info
#endif

#endif
