/**
 * @file http/tls.c
 * @brief The REST API's certificate and key (http/tls.h): read, checked
 *        with OpenSSL before libmicrohttpd (GnuTLS) sees them, and wiped.
 */
#include "http/tls.h"
#include "config/config.h"

#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#define TB_TLS_SUB "api"
/** Larger than any certificate chain or key a server needs. */
#define TB_TLS_MAX_FILE (1024 * 1024)

bool tb_http_tls_wanted(const tb_config_t *conf) {
        return conf->api_tls_cert && *conf->api_tls_cert && conf->api_tls_key &&
               *conf->api_tls_key;
}

/* Read all of \p path (the file of setting \p setting) into a malloc'd,
 * NUL-terminated buffer. A \p secret file must not be readable by others
 * (refused) and should not be by its group (a warning). */
static tb_err_t tb_http_tls_read(const char *setting, const char *path, bool secret,
                                 char **out, size_t *out_len, char *errstr,
                                 size_t errstr_size) {
        char fix[128];
        tb_snprintf(fix, sizeof(fix), "point %s at a readable PEM file", setting);
        return tb_file_read(setting, path,
                            secret ? "the API's private key" : "the API's certificate chain",
                            TB_TLS_MAX_FILE, secret ? TB_FILE_SECRET : TB_FILE_PUBLIC, fix, out,
                            out_len, errstr, errstr_size);
}

/* The reason of OpenSSL's last error ("no start line"), the queue cleared. */
static const char *tb_http_tls_ossl_reason(char *buf, size_t size) {
        unsigned long e = ERR_peek_last_error();
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        tb_snprintf(buf, size, "%s", r ? r : "unknown error");
        ERR_clear_error();
        return buf;
}

/* A PEM password callback that never prompts: it notes that the key is
 * encrypted and gives no password. */
static int tb_http_tls_no_password(char *buf, int size, int rwflag, void *u) {
        (void)buf;
        (void)size;
        (void)rwflag;
        *(bool *)u = true;
        return -1;
}

/* Parse both PEM texts and check that the key is the certificate's. */
static tb_err_t tb_http_tls_check(const tb_config_t *conf, const tb_http_tls_t *tls,
                                  char *errstr, size_t errstr_size) {
        char why[256];
        tb_err_t err = TB_OK;
        X509 *cert = NULL;
        EVP_PKEY *pkey = NULL;
        bool encrypted = false;
        ERR_clear_error();
        BIO *bio = BIO_new_mem_buf(tls->cert_pem, (int)tls->cert_len);
        if (bio)
                cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!cert) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "api.tls_cert: '%s' holds no PEM certificate (%s); it must "
                                "start with -----BEGIN CERTIFICATE----- (the server's "
                                "certificate, then its intermediates)",
                                conf->api_tls_cert, tb_http_tls_ossl_reason(why, sizeof(why)));
                goto out;
        }
        bio = BIO_new_mem_buf(tls->key_pem, (int)tls->key_len);
        if (bio)
                pkey = PEM_read_bio_PrivateKey(bio, NULL, tb_http_tls_no_password, &encrypted);
        BIO_free(bio);
        if (!pkey && encrypted) {
                ERR_clear_error();
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "api.tls_key: '%s' is encrypted with a passphrase, which "
                                "taskbusd cannot ask for; decrypt it (openssl pkey -in KEY "
                                "-out NEW_KEY, then chmod 600 NEW_KEY) and point api.tls_key "
                                "at the result",
                                conf->api_tls_key);
                goto out;
        }
        if (!pkey) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "api.tls_key: '%s' holds no PEM private key (%s); it must "
                                "start with -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE "
                                "KEY)",
                                conf->api_tls_key, tb_http_tls_ossl_reason(why, sizeof(why)));
                goto out;
        }
        if (X509_check_private_key(cert, pkey) != 1) {
                ERR_clear_error();
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "api.tls_key: '%s' is not the private key of the certificate "
                                "in api.tls_cert '%s'; set the two files of one certificate",
                                conf->api_tls_key, conf->api_tls_cert);
                goto out;
        }
        const ASN1_TIME *not_after = X509_get0_notAfter(cert);
        if (X509_cmp_current_time(not_after) < 0)
                tb_warn(TB_TLS_SUB, "api.tls_cert: the certificate in '%s' has expired: clients "
                        "will refuse it; renew it and restart", conf->api_tls_cert);
        else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
                tb_warn(TB_TLS_SUB, "api.tls_cert: the certificate in '%s' is not valid yet "
                        "(check this machine's clock)", conf->api_tls_cert);
out:
        EVP_PKEY_free(pkey);
        X509_free(cert);
        return err;
}

tb_err_t tb_http_tls_load(const tb_config_t *conf, tb_http_tls_t *out, char *errstr,
                          size_t errstr_size) {
        *out = (tb_http_tls_t){0};
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "api.tls_cert: this libmicrohttpd was built without TLS; "
                                 "install one built with GnuTLS, or remove api.tls_cert and "
                                 "api.tls_key and put a TLS reverse proxy in front");
        tb_err_t err = tb_http_tls_read("api.tls_cert", conf->api_tls_cert, false, &out->cert_pem,
                                        &out->cert_len, errstr, errstr_size);
        if (!err)
                err = tb_http_tls_read("api.tls_key", conf->api_tls_key, true, &out->key_pem,
                                       &out->key_len, errstr, errstr_size);
        if (!err)
                err = tb_http_tls_check(conf, out, errstr, errstr_size);
        if (err)
                tb_http_tls_free(out);
        return err;
}

void tb_http_tls_free(tb_http_tls_t *tls) {
        if (!tls)
                return;
        if (tls->key_pem)
                explicit_bzero(tls->key_pem, tls->key_len);
        free(tls->key_pem);
        free(tls->cert_pem);
        *tls = (tb_http_tls_t){0};
}
