/*
 * mhd_dl.h - libmicrohttpd through dl.c: include instead of
 * <microhttpd.h>, and call dl_need_mhd() before the first call.  See dl.h.
 */
#ifndef PYLON_AGENT_MHD_DL_H
#define PYLON_AGENT_MHD_DL_H

#include <sys/socket.h>
#include <stdarg.h>
#include <stdint.h>
#include <microhttpd.h>

#include "dl.h"

/* One X() per symbol: a table, kept as written. */
/* clang-format off */
#define MHD_DL_SYMS(X)							\
	X(MHD_add_response_header) X(MHD_create_response_from_buffer)	\
	X(MHD_destroy_response) X(MHD_get_version) X(MHD_queue_response)\
	X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_get_connection_info)
/* clang-format on */

#define MHD_DL_DECLARE(s) extern __typeof__(s) *sym_##s;
MHD_DL_SYMS(MHD_DL_DECLARE)

#ifndef DL_DEFINING
#define MHD_add_response_header sym_MHD_add_response_header
#define MHD_create_response_from_buffer sym_MHD_create_response_from_buffer
#define MHD_destroy_response sym_MHD_destroy_response
#define MHD_get_version sym_MHD_get_version
#define MHD_queue_response sym_MHD_queue_response
#define MHD_start_daemon sym_MHD_start_daemon
#define MHD_stop_daemon sym_MHD_stop_daemon
#define MHD_get_connection_info sym_MHD_get_connection_info
#endif

#endif
