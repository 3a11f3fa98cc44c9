/**
 * @file http/tls.h
 * @brief The REST API's certificate chain and private key (api.tls_cert,
 *        api.tls_key): read from their files when the api role starts,
 *        checked (PEM that parses, a key that matches the certificate, a key
 *        file no other user can read) so that a mistake is a startup error
 *        naming the setting and the fix, then handed to libmicrohttpd as PEM
 *        in memory (tb_http_start()). The key's bytes are wiped by
 *        tb_http_tls_free(), called as soon as the server is started.
 */
#ifndef TB_HTTP_TLS_H
#define TB_HTTP_TLS_H

#include "tb.h"

/** PEM text of the server's identity, NUL-terminated. */
typedef struct tb_http_tls {
        char *cert_pem; /**< certificate chain, the server's own first */
        size_t cert_len;
        char *key_pem;  /**< its private key: secret, wiped on free */
        size_t key_len;
} tb_http_tls_t;

struct tb_config;

/** @returns whether \p conf asks for HTTPS (api.tls_cert and api.tls_key set;
 *  tb_config_finalize() has checked they are set together). */
bool tb_http_tls_wanted(const struct tb_config *conf);

/**
 * @brief Read and check the files of api.tls_cert and api.tls_key.
 * @param out zeroed by the caller; on success filled, owned by the caller
 *            (tb_http_tls_free()); on failure left empty.
 * @returns TB_OK, TB_ERR_IO (a file cannot be read) or TB_ERR_INVALID (not
 *          PEM, an encrypted key, a key that is not the certificate's, a key
 *          file others can read, or a libmicrohttpd built without TLS);
 *          errstr names the setting, the path and the fix.
 */
tb_err_t tb_http_tls_load(const struct tb_config *conf, tb_http_tls_t *out, char *errstr,
                          size_t errstr_size);

/** @brief Wipe the key's bytes and free both. NULL and an empty one allowed. */
void tb_http_tls_free(tb_http_tls_t *tls);

#endif
