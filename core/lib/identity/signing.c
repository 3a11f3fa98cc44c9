/**
 * @file identity/signing.c
 * @brief Signed commands (identity/signing.h): the internal key, the
 *        canonical string and its HMAC, the tb-auth header, sealed token
 *        signing keys, and the signature check of the commands role with its
 *        small per-token-id cache.
 */
#include "identity/signing.h"
#include "identity/identity_internal.h"
#include "store/signing.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_SIGN_SUB "identity"
#define TB_SIGN_NONCE_LEN 12
#define TB_SIGN_TAG_LEN 16
/** Entries of the per-token-id cache of the signature check. */
#define TB_SIGN_CACHE_SLOTS 256

/* ---- the internal key ------------------------------------------------------ */

static unsigned char tb_sign_kint[TB_SIGN_KEY_LEN];
static bool tb_sign_kint_set;

tb_err_t tb_sign_key_load(const char *path, unsigned char key[TB_SIGN_KEY_LEN], char *errstr,
                          size_t errstr_size) {
        static const char how[] = "create one with: (umask 077; openssl rand -hex 32 > FILE)";
        char *text = NULL;
        size_t n = 0;
        tb_err_t err = tb_file_read("security.key_file", path, "the internal key", 256,
                                    TB_FILE_PRIVATE, how, &text, &n, errstr, errstr_size);
        if (err)
                return err;
        char *p = text, *end = text + n;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                p++;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' ||
                           end[-1] == '\r'))
                end--;
        bool ok = end - p == 2 * TB_SIGN_KEY_LEN;
        for (size_t i = 0; ok && i < TB_SIGN_KEY_LEN; i++) {
                int hi = tb_hex_digit(p[2 * i]), lo = tb_hex_digit(p[2 * i + 1]);
                ok = hi >= 0 && lo >= 0;
                if (ok)
                        key[i] = (unsigned char)(hi << 4 | lo);
        }
        explicit_bzero(text, n);
        free(text);
        if (!ok) {
                explicit_bzero(key, TB_SIGN_KEY_LEN);
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "security.key_file: '%s' must hold exactly 64 hex digits "
                                 "(32 random bytes); %s",
                                 path, how);
        }
        return TB_OK;
}

tb_err_t tb_sign_key_init(const tb_config_t *conf, bool required, char *errstr,
                          size_t errstr_size) {
        const char *path = conf ? conf->security_key_file : NULL;
        if (tb_sign_kint_set) /* several roles of one process: loaded once */
                return TB_OK;
        if (!path || !*path) {
                if (required)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "security.key_file is not set: the api and commands "
                                         "roles sign and check commands with the region's "
                                         "internal key; create one with (umask 077; openssl "
                                         "rand -hex 32 > /etc/taskbus/taskbus.key) and set "
                                         "security = { key_file = \"...\"; } or TASKBUS_KEY_FILE");
                return TB_OK;
        }
        unsigned char k[TB_SIGN_KEY_LEN];
        tb_err_t err = tb_sign_key_load(path, k, errstr, errstr_size);
        if (err)
                return err;
        memcpy(tb_sign_kint, k, sizeof(k));
        explicit_bzero(k, sizeof(k));
        tb_sign_kint_set = true;
        return TB_OK;
}

const unsigned char *tb_sign_key(void) {
        return tb_sign_kint_set ? tb_sign_kint : NULL;
}

void tb_sign_key_clear(void) {
        explicit_bzero(tb_sign_kint, sizeof(tb_sign_kint));
        tb_sign_kint_set = false;
}

/* ---- HMAC and the canonical string ------------------------------------------ */

static bool tb_sign_hmac(const unsigned char *k, size_t klen, const void *msg, size_t len,
                         unsigned char out[32]) {
        unsigned int n = 0;
        return HMAC(EVP_sha256(), k, (int)klen, msg, len, out, &n) && n == 32;
}

void tb_sign_token_key(const char *token, size_t token_len, unsigned char out[TB_SIGN_KEY_LEN]) {
        if (!tb_sign_hmac((const unsigned char *)token, token_len, TB_SIGN_TOKEN_INFO,
                          strlen(TB_SIGN_TOKEN_INFO), out))
                memset(out, 0, TB_SIGN_KEY_LEN); /* libcrypto broken: nothing verifies */
}

tb_err_t tb_sign_compute(const unsigned char *k, size_t klen, const char *kid,
                         const char *principal, int64_t ts_ms, const void *key, size_t key_len,
                         const void *value, size_t value_len, char sig_hex[65]) {
        unsigned char hk[TB_HASH_LEN], hv[TB_HASH_LEN], mac[32];
        char hkx[2 * TB_HASH_LEN + 1], hvx[2 * TB_HASH_LEN + 1];
        if (tb_identity_sha256(key ? key : "", key ? key_len : 0, hk) ||
            tb_identity_sha256(value ? value : "", value ? value_len : 0, hv))
                return TB_ERR_INTERNAL;
        tb_identity_hex(hk, sizeof(hk), hkx);
        tb_identity_hex(hv, sizeof(hv), hvx);
        tb_buf_t c = {0};
        if (tb_buf_printf(&c, TB_SIGN_CANON_VERSION "\n%s\n%s\n%" PRId64 "\n%s\n%s", kid,
                          principal, ts_ms, hkx, hvx)) {
                tb_buf_free(&c);
                return TB_ERR_NOMEM;
        }
        bool ok = tb_sign_hmac(k, klen, c.data, c.len, mac);
        tb_buf_free(&c);
        if (!ok)
                return TB_ERR_INTERNAL;
        tb_identity_hex(mac, sizeof(mac), sig_hex);
        return TB_OK;
}

/* ---- the tb-auth header ---------------------------------------------------- */

tb_err_t tb_sign_auth_parse(const void *value, size_t len, tb_sign_auth_t *out, char *errstr,
                            size_t errstr_size) {
        char v[200];
        memset(out, 0, sizeof(*out));
        if (!value || len == 0 || len >= sizeof(v) || memchr(value, '\0', len))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed '" TB_SIGN_HDR_AUTH "' header: expected "
                                 "\"v1;kid=<kid>;ts=<ms>;sig=<64 hex>\" (see " TB_SIGN_DOC ")");
        memcpy(v, value, len);
        v[len] = '\0';
        bool have_v = false, have_kid = false, have_ts = false, have_sig = false;
        char *save = NULL;
        for (char *f = strtok_r(v, ";", &save); f; f = strtok_r(NULL, ";", &save)) {
                if (!strcmp(f, "v1")) {
                        have_v = true;
                } else if (!strncmp(f, "kid=", 4) && strlen(f + 4) > 0 &&
                           strlen(f + 4) < sizeof(out->kid)) {
                        strcpy(out->kid, f + 4);
                        have_kid = true;
                } else if (!strncmp(f, "ts=", 3)) {
                        char *end = NULL;
                        errno = 0;
                        long long t = strtoll(f + 3, &end, 10);
                        have_ts = !errno && end != f + 3 && !*end && t > 0;
                        out->ts_ms = t;
                } else if (!strncmp(f, "sig=", 4) && strlen(f + 4) == 64 &&
                           tb_identity_is_lower_hex(f + 4, 64)) {
                        strcpy(out->sig, f + 4);
                        have_sig = true;
                }
        }
        if (!(have_v && have_kid && have_ts && have_sig))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed '" TB_SIGN_HDR_AUTH "' header: expected "
                                 "\"v1;kid=<kid>;ts=<ms>;sig=<64 lowercase hex>\"; missing or "
                                 "bad %s (see " TB_SIGN_DOC ")",
                                 !have_v ? "version v1" : !have_kid ? "kid" : !have_ts ? "ts"
                                                                                      : "sig");
        return TB_OK;
}

tb_err_t tb_sign_internal_headers(const tb_principal_t *who, const void *key, size_t key_len,
                                  const void *value, size_t value_len, char principal[200],
                                  char auth[200], char *errstr, size_t errstr_size) {
        const unsigned char *k = tb_sign_key();
        if (!k)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "no internal key loaded (security.key_file)");
        if (tb_snprintf(principal, 200, "user=%s;token=%s", who->user_id, who->token_id))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "principal too long");
        int64_t ts = tb_now_ms();
        char sig[65];
        if (tb_sign_compute(k, TB_SIGN_KEY_LEN, TB_SIGN_KID_INTERNAL, principal, ts, key, key_len,
                            value, value_len, sig))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "signing the command failed (libcrypto)");
        tb_snprintf(auth, 200, "v1;kid=" TB_SIGN_KID_INTERNAL ";ts=%" PRId64 ";sig=%s", ts, sig);
        return TB_OK;
}

/* ---- sealed signing keys ---------------------------------------------------- */

/* K_enc = HKDF-SHA256(salt = 32 zero bytes, IKM = K_int, info "token-sign-keys"), one block. */
static bool tb_sign_kenc(const unsigned char kint[TB_SIGN_KEY_LEN], unsigned char kenc[32]) {
        static const unsigned char salt[32];
        static const char info[] = "token-sign-keys\x01";
        unsigned char prk[32];
        bool ok = tb_sign_hmac(salt, sizeof(salt), kint, TB_SIGN_KEY_LEN, prk) &&
                  tb_sign_hmac(prk, sizeof(prk), info, sizeof(info) - 1, kenc);
        explicit_bzero(prk, sizeof(prk));
        return ok;
}

tb_err_t tb_sign_seal(const unsigned char kint[TB_SIGN_KEY_LEN], const char *token_id,
                      const unsigned char ksign[TB_SIGN_KEY_LEN],
                      unsigned char out[TB_SIGN_SEALED_LEN]) {
        unsigned char kenc[32];
        EVP_CIPHER_CTX *c = NULL;
        int n = 0;
        bool ok = tb_sign_kenc(kint, kenc) && RAND_bytes(out, TB_SIGN_NONCE_LEN) == 1 &&
                  (c = EVP_CIPHER_CTX_new()) &&
                  EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, kenc, out) == 1 &&
                  EVP_EncryptUpdate(c, NULL, &n, (const unsigned char *)token_id,
                                    (int)strlen(token_id)) == 1 &&
                  EVP_EncryptUpdate(c, out + TB_SIGN_NONCE_LEN, &n, ksign, TB_SIGN_KEY_LEN) ==
                          1 &&
                  n == TB_SIGN_KEY_LEN &&
                  EVP_EncryptFinal_ex(c, out + TB_SIGN_NONCE_LEN + n, &n) == 1 &&
                  EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TB_SIGN_TAG_LEN,
                                      out + TB_SIGN_NONCE_LEN + TB_SIGN_KEY_LEN) == 1;
        EVP_CIPHER_CTX_free(c);
        explicit_bzero(kenc, sizeof(kenc));
        return ok ? TB_OK : TB_ERR_INTERNAL;
}

tb_err_t tb_sign_open(const unsigned char kint[TB_SIGN_KEY_LEN], const char *token_id,
                      const unsigned char *blob, size_t blob_len,
                      unsigned char ksign[TB_SIGN_KEY_LEN]) {
        if (blob_len != TB_SIGN_SEALED_LEN)
                return TB_ERR_INVALID;
        unsigned char kenc[32], tag[TB_SIGN_TAG_LEN];
        memcpy(tag, blob + TB_SIGN_NONCE_LEN + TB_SIGN_KEY_LEN, sizeof(tag));
        EVP_CIPHER_CTX *c = NULL;
        int n = 0;
        tb_err_t err = TB_ERR_INTERNAL;
        if (tb_sign_kenc(kint, kenc) && (c = EVP_CIPHER_CTX_new()) &&
            EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, kenc, blob) == 1 &&
            EVP_DecryptUpdate(c, NULL, &n, (const unsigned char *)token_id,
                              (int)strlen(token_id)) == 1 &&
            EVP_DecryptUpdate(c, ksign, &n, blob + TB_SIGN_NONCE_LEN, TB_SIGN_KEY_LEN) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TB_SIGN_TAG_LEN, tag) == 1)
                err = EVP_DecryptFinal_ex(c, ksign + n, &n) == 1 ? TB_OK : TB_ERR_INVALID;
        EVP_CIPHER_CTX_free(c);
        explicit_bzero(kenc, sizeof(kenc));
        if (err)
                explicit_bzero(ksign, TB_SIGN_KEY_LEN);
        return err;
}

tb_err_t tb_sign_token_store(PGconn *conn, const char *token_id, const char *token,
                             char *errstr, size_t errstr_size) {
        const unsigned char *kint = tb_sign_key();
        if (!kint)
                return TB_OK;
        unsigned char ksign[TB_SIGN_KEY_LEN], sealed[TB_SIGN_SEALED_LEN];
        tb_sign_token_key(token, strlen(token), ksign);
        tb_err_t err = tb_sign_seal(kint, token_id, ksign, sealed);
        explicit_bzero(ksign, sizeof(ksign));
        if (err)
                return tb_seterr(errstr, errstr_size, err,
                                 "sealing the token's signing key failed (libcrypto)");
        return tb_store_signing_put_key(conn, token_id, sealed, sizeof(sealed), errstr,
                                        errstr_size);
}

/* ---- the signature check ----------------------------------------------------- */

/** What a token id resolved to, for cache_ms. */
typedef struct tb_sign_cached {
        const void *store;
        char token_id[32];
        int64_t until_us;
        tb_principal_t *who;    /* NULL: unusable, see why */
        char why[400];
        bool has_ksign;
        unsigned char ksign[TB_SIGN_KEY_LEN];
} tb_sign_cached_t;

static pthread_mutex_t tb_sign_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static tb_sign_cached_t tb_sign_cache[TB_SIGN_CACHE_SLOTS];

static unsigned tb_sign_slot(const char *id) {
        unsigned h = 2166136261u;
        for (const unsigned char *p = (const unsigned char *)id; *p; p++)
                h = (h ^ *p) * 16777619u;
        return h % TB_SIGN_CACHE_SLOTS;
}

/* Resolve \p token_id into \p e (from the cache or PostgreSQL). */
static tb_err_t tb_sign_resolve(tb_store_t *store, const char *token_id, int64_t cache_ms,
                                tb_sign_cached_t *e, char *errstr, size_t errstr_size) {
        int64_t now = tb_mono_us();
        unsigned slot = tb_sign_slot(token_id);
        memset(e, 0, sizeof(*e));
        pthread_mutex_lock(&tb_sign_cache_mu);
        tb_sign_cached_t *c = &tb_sign_cache[slot];
        if (cache_ms > 0 && c->store == store && !strcmp(c->token_id, token_id) &&
            c->until_us > now) {
                *e = *c;
                e->who = tb_principal_dup(c->who);
                pthread_mutex_unlock(&tb_sign_cache_mu);
                if (c->who && !e->who)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                return TB_OK;
        }
        pthread_mutex_unlock(&tb_sign_cache_mu);

        PGconn *conn = tb_store_acquire_timeout(store, 10000);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                 "check signature: no PostgreSQL connection free within 10 s");
        tb_store_signing_token_t t;
        char q[48];
        tb_identity_quote(token_id, q, sizeof(q));
        tb_err_t err = tb_store_signing_token(conn, token_id, &t, errstr, errstr_size);
        tb_store_release(store, conn);
        e->store = store;
        tb_snprintf(e->token_id, sizeof(e->token_id), "%s", token_id);
        if (err == TB_ERR_NOT_FOUND) {
                tb_snprintf(e->why, sizeof(e->why),
                            "unknown token %s: it was not issued by this taskbus or has been "
                            "deleted; ask an administrator for a new one",
                            q);
        } else if (err) {
                return err;
        } else if (t.revoked) {
                tb_snprintf(e->why, sizeof(e->why),
                            "token %s has been revoked; ask an administrator for a new one", q);
        } else if (t.expired) {
                tb_snprintf(e->why, sizeof(e->why),
                            "token %s has expired; ask an administrator for a new one "
                            "(taskbus admin token create USER --expires 90d)",
                            q);
        } else if (t.disabled) {
                tb_snprintf(e->why, sizeof(e->why),
                            "the user of token %s is disabled; an administrator can enable it "
                            "with: taskbus admin user enable USER",
                            q);
        } else {
                tb_principal_t *p = calloc(1, sizeof(*p));
                if (!p || strlen(t.user_id) >= sizeof(p->user_id)) {
                        free(p);
                        tb_store_signing_token_clear(&t);
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                         "check signature: out of memory");
                }
                strcpy(p->user_id, t.user_id);
                tb_snprintf(p->token_id, sizeof(p->token_id), "%s", token_id);
                /* ORDER BY ... COLLATE "C" is strcmp order: tb_principal_in_group() */
                p->groups = t.groups;
                p->group_cnt = t.group_cnt;
                t.groups = NULL;
                t.group_cnt = 0;
                e->who = p;
                const unsigned char *kint = tb_sign_key();
                if (t.has_sign_key && kint &&
                    tb_sign_open(kint, token_id, t.sign_key, t.sign_key_len, e->ksign) == TB_OK)
                        e->has_ksign = true;
                else if (t.has_sign_key)
                        tb_warn(TB_SIGN_SUB,
                                "the signing key of token %s does not open with this region's "
                                "internal key (security.key_file changed?)",
                                q);
        }
        tb_store_signing_token_clear(&t);
        e->until_us = now + cache_ms * 1000;
        if (cache_ms > 0) {
                pthread_mutex_lock(&tb_sign_cache_mu);
                c = &tb_sign_cache[slot];
                tb_principal_free(c->who);
                *c = *e;
                c->who = tb_principal_dup(e->who);
                if (e->who && !c->who)
                        memset(c, 0, sizeof(*c));
                pthread_mutex_unlock(&tb_sign_cache_mu);
        }
        return TB_OK;
}

tb_err_t tb_sign_verify(tb_store_t *store, const tb_sign_record_t *rec, int64_t cache_ms,
                        tb_principal_t **who, char *errstr, size_t errstr_size) {
        char principal[200], user[160] = "", token_id[32] = "";
        *who = NULL;
        if (!rec->principal || rec->principal_len == 0 ||
            rec->principal_len >= sizeof(principal) ||
            memchr(rec->principal, '\0', rec->principal_len))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "missing or malformed '" TB_SIGN_HDR_PRINCIPAL "' header: "
                                 "expected \"user=<user id>;token=<token id>\" (see " TB_SIGN_DOC
                                 ")");
        memcpy(principal, rec->principal, rec->principal_len);
        principal[rec->principal_len] = '\0';
        const char *tok = strstr(principal, ";token=");
        if (strncmp(principal, "user=", 5) || !tok || tok - principal - 5 <= 0 ||
            (size_t)(tok - principal - 5) >= sizeof(user) || strlen(tok + 7) == 0 ||
            strlen(tok + 7) >= sizeof(token_id) || strchr(tok + 7, ';'))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed '" TB_SIGN_HDR_PRINCIPAL "' header: expected "
                                 "\"user=<user id>;token=<token id>\" (see " TB_SIGN_DOC ")");
        memcpy(user, principal + 5, (size_t)(tok - principal - 5));
        strcpy(token_id, tok + 7);

        const tb_sign_auth_t *a = rec->auth;
        bool internal = !strcmp(a->kid, TB_SIGN_KID_INTERNAL);
        if (!internal && strcmp(a->kid, token_id))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "tb-auth kid must be the token id named in tb-principal (an "
                                 "external producer signs with its own token's key; see "
                                 TB_SIGN_DOC ")");
        const unsigned char *kint = tb_sign_key();
        if (!kint)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "no internal key loaded (security.key_file)");
        tb_sign_cached_t e;
        tb_err_t err = tb_sign_resolve(store, token_id, cache_ms, &e, errstr, errstr_size);
        if (err)
                return err;
        if (!e.who) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED, "%s", e.why);
                goto fail;
        }
        if (strcmp(e.who->user_id, user)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                          "tb-principal names a user that does not own token %s", e.token_id);
                goto fail;
        }
        if (!internal && !e.has_ksign) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                          "token %s was created before commands were signed (or under another "
                          "internal key): it works on the REST API only; to produce on Kafka "
                          "create a new token with: taskbus admin token create %s",
                          e.token_id, e.who->user_id);
                goto fail;
        }
        char sig[65];
        if (tb_sign_compute(internal ? kint : e.ksign, TB_SIGN_KEY_LEN, a->kid, principal,
                            a->ts_ms, rec->key, rec->key_len, rec->value, rec->value_len, sig)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "signature check failed (libcrypto)");
                goto fail;
        }
        if (CRYPTO_memcmp(sig, a->sig, 64) != 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                          "the tb-auth signature does not match the record: sign the exact "
                          "key and value bytes with the canonical string of " TB_SIGN_DOC);
                goto fail;
        }
        explicit_bzero(e.ksign, sizeof(e.ksign));
        *who = e.who;
        return TB_OK;
fail:
        explicit_bzero(e.ksign, sizeof(e.ksign));
        tb_principal_free(e.who);
        return err;
}
