/*
 * ssl_dl.h - OpenSSL (libssl + libcrypto) through dl.c: include instead of
 * the <openssl/...> headers, and call dl_need_ssl() before the first call.
 * See dl.h.
 */
#ifndef PYLON_AGENT_SSL_DL_H
#define PYLON_AGENT_SSL_DL_H

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dl.h"

/* One X() per symbol: a table, kept as written. */
/* clang-format off */
#define SSL_DL_SYMS(X)							\
	X(BIO_free) X(BIO_new) X(BIO_read) X(BIO_s_mem)			\
	X(ERR_clear_error) X(ERR_error_string_n) X(ERR_get_error)	\
	X(ERR_peek_error) X(SSL_CTX_ctrl) X(SSL_CTX_free)		\
	X(SSL_CTX_load_verify_locations) X(SSL_CTX_new)			\
	X(SSL_CTX_set_default_verify_paths) X(SSL_CTX_set_verify)	\
	X(SSL_connect) X(SSL_ctrl) X(SSL_free) X(SSL_get0_param)	\
	X(SSL_get_error) X(SSL_get_ex_data) X(SSL_has_pending)		\
	X(SSL_get_ex_data_X509_STORE_CTX_idx) X(SSL_get_verify_result)	\
	X(SSL_new) X(SSL_read) X(SSL_set_ex_data) X(SSL_set_fd)		\
	X(SSL_set_connect_state) X(SSL_shutdown) X(SSL_write)		\
	X(TLS_client_method)						\
	X(X509_NAME_print_ex) X(X509_STORE_CTX_get0_cert)		\
	X(X509_STORE_CTX_get_current_cert) X(X509_STORE_CTX_get_error)	\
	X(X509_STORE_CTX_get_error_depth) X(X509_STORE_CTX_get_ex_data)	\
	X(X509_VERIFY_PARAM_set1_host) X(X509_VERIFY_PARAM_set1_ip_asc)	\
	X(X509_VERIFY_PARAM_set_hostflags) X(X509_get_issuer_name)	\
	X(X509_get_subject_name) X(X509_verify_cert_error_string)	\
	X(OpenSSL_version)
/* clang-format on */

#define SSL_DL_DECLARE(s) extern __typeof__(s) *sym_##s;
SSL_DL_SYMS(SSL_DL_DECLARE)

#ifndef DL_DEFINING
#define BIO_free sym_BIO_free
#define BIO_new sym_BIO_new
#define BIO_read sym_BIO_read
#define BIO_s_mem sym_BIO_s_mem
#define ERR_clear_error sym_ERR_clear_error
#define ERR_error_string_n sym_ERR_error_string_n
#define ERR_get_error sym_ERR_get_error
#define ERR_peek_error sym_ERR_peek_error
#define SSL_CTX_ctrl sym_SSL_CTX_ctrl
#define SSL_CTX_free sym_SSL_CTX_free
#define SSL_CTX_load_verify_locations sym_SSL_CTX_load_verify_locations
#define SSL_CTX_new sym_SSL_CTX_new
#define SSL_CTX_set_default_verify_paths sym_SSL_CTX_set_default_verify_paths
#define SSL_CTX_set_verify sym_SSL_CTX_set_verify
#define SSL_connect sym_SSL_connect
#define SSL_ctrl sym_SSL_ctrl
#define SSL_free sym_SSL_free
#define SSL_get0_param sym_SSL_get0_param
#define SSL_get_error sym_SSL_get_error
#define SSL_get_ex_data sym_SSL_get_ex_data
#define SSL_get_ex_data_X509_STORE_CTX_idx \
	sym_SSL_get_ex_data_X509_STORE_CTX_idx
#define SSL_get_verify_result sym_SSL_get_verify_result
#define SSL_has_pending sym_SSL_has_pending
#define SSL_new sym_SSL_new
#define SSL_read sym_SSL_read
#define SSL_set_ex_data sym_SSL_set_ex_data
#define SSL_set_fd sym_SSL_set_fd
#define SSL_set_connect_state sym_SSL_set_connect_state
#define SSL_shutdown sym_SSL_shutdown
#define SSL_write sym_SSL_write
#define TLS_client_method sym_TLS_client_method
#define X509_NAME_print_ex sym_X509_NAME_print_ex
#define X509_STORE_CTX_get0_cert sym_X509_STORE_CTX_get0_cert
#define X509_STORE_CTX_get_current_cert sym_X509_STORE_CTX_get_current_cert
#define X509_STORE_CTX_get_error sym_X509_STORE_CTX_get_error
#define X509_STORE_CTX_get_error_depth sym_X509_STORE_CTX_get_error_depth
#define X509_STORE_CTX_get_ex_data sym_X509_STORE_CTX_get_ex_data
#define X509_VERIFY_PARAM_set1_host sym_X509_VERIFY_PARAM_set1_host
#define X509_VERIFY_PARAM_set1_ip_asc sym_X509_VERIFY_PARAM_set1_ip_asc
#define X509_VERIFY_PARAM_set_hostflags sym_X509_VERIFY_PARAM_set_hostflags
#define X509_get_issuer_name sym_X509_get_issuer_name
#define X509_get_subject_name sym_X509_get_subject_name
#define X509_verify_cert_error_string sym_X509_verify_cert_error_string
#define OpenSSL_version sym_OpenSSL_version
#endif

#endif
