/**
 * @file identity/signing.h
 * @brief Signed commands: the region's internal key (security.key_file), the
 *        proof of the principal a task-commands record carries instead of a
 *        bearer token, the per-token signing keys of external producers
 *        (stored sealed under the internal key, never the token), and the
 *        check of a record's signature by the commands role.
 *
 * A record carries two headers (docs/kafka-interface.md):
 *   tb-principal  "user=<user id>;token=<token id>"
 *   tb-auth       "v1;kid=<kid>;ts=<ms since the epoch>;sig=<64 hex>"
 * with sig = HMAC-SHA256(K, canonical) over
 *   "taskbus-cmd-v1\n<kid>\n<principal>\n<ts>\n<sha256hex(key)>\n<sha256hex(value)>".
 * kid "internal": K is the internal key (the api role signs what it produces
 * for an authenticated REST caller). kid "tok_...": K is the token's signing
 * key K_sign = HMAC-SHA256(token text, "taskbus/command-signing/v1"), which
 * an external producer derives from its token and the server keeps sealed
 * (AES-256-GCM under HKDF-SHA256(internal key, "token-sign-keys")) in
 * api_tokens.sign_key. Nothing in a record can be replayed as a login: the
 * signature covers the exact key and value, and the commands engine refuses
 * old timestamps and command ids it has seen.
 *
 * The internal key is process-wide: tb_sign_key_init() loads it once at
 * start (daemon, CLI, tests); token creation (identity/admin.c) seals the new
 * token's K_sign with it when it is loaded.
 */
#ifndef TB_IDENTITY_SIGNING_H
#define TB_IDENTITY_SIGNING_H

#include "tb.h"
#include "config/config.h"
#include "identity/identity.h"
#include "store/store.h"

#define TB_SIGN_KEY_LEN 32
/** Sealed K_sign: 12-byte nonce, 32-byte ciphertext, 16-byte GCM tag. */
#define TB_SIGN_SEALED_LEN 60
#define TB_SIGN_HDR_PRINCIPAL "tb-principal"
#define TB_SIGN_HDR_AUTH "tb-auth"
#define TB_SIGN_KID_INTERNAL "internal"
#define TB_SIGN_CANON_VERSION "taskbus-cmd-v1"
#define TB_SIGN_TOKEN_INFO "taskbus/command-signing/v1"
/** Where producers learn how to sign (quoted in every refusal). */
#define TB_SIGN_DOC "docs/kafka-interface.md, \"Signing commands\""

/**
 * @brief Read a key file: 64 hex digits (surrounding whitespace allowed),
 *        refused when group or others may read or write it.
 * @returns TB_OK, TB_ERR_IO (cannot read: errstr names the file) or
 *          TB_ERR_INVALID (mode or content, with how to fix it).
 */
tb_err_t tb_sign_key_load(const char *path, unsigned char key[TB_SIGN_KEY_LEN], char *errstr,
                          size_t errstr_size);

/**
 * @brief Load conf->security_key_file as this process's internal key.
 * @param required  when true an unset key file is TB_ERR_INVALID (the api and
 *                  commands roles); when false it is TB_OK and no key is held.
 * @locality call once at start, before other threads use tb_sign_key().
 */
tb_err_t tb_sign_key_init(const tb_config_t *conf, bool required, char *errstr,
                          size_t errstr_size);
/** @returns the internal key, or NULL when none was loaded. */
const unsigned char *tb_sign_key(void);
/** Forget the key (tests; shutdown). */
void tb_sign_key_clear(void);

/** K_sign of a token: HMAC-SHA256(token text, TB_SIGN_TOKEN_INFO). */
void tb_sign_token_key(const char *token, size_t token_len, unsigned char out[TB_SIGN_KEY_LEN]);

/**
 * @brief The hex HMAC-SHA256 under \p k of the canonical string of a record.
 * @returns TB_OK or TB_ERR_INTERNAL (libcrypto failure).
 */
tb_err_t tb_sign_compute(const unsigned char *k, size_t klen, const char *kid,
                         const char *principal, int64_t ts_ms, const void *key, size_t key_len,
                         const void *value, size_t value_len, char sig_hex[65]);

/** The tb-auth header: kid, ts and sig. */
typedef struct tb_sign_auth {
        char kid[32];
        int64_t ts_ms;
        char sig[65];
} tb_sign_auth_t;

/**
 * @brief Parse a tb-auth header value ("v1;kid=...;ts=...;sig=...").
 * @returns TB_OK or TB_ERR_UNAUTHENTICATED saying what is wrong.
 */
tb_err_t tb_sign_auth_parse(const void *value, size_t len, tb_sign_auth_t *out, char *errstr,
                            size_t errstr_size);

/**
 * @brief The two headers the api role puts on a command it produces for the
 *        authenticated \p who, signed now with the internal key.
 * @returns TB_OK, TB_ERR_INVALID (no internal key loaded) or TB_ERR_INTERNAL.
 */
tb_err_t tb_sign_internal_headers(const tb_principal_t *who, const void *key, size_t key_len,
                                  const void *value, size_t value_len, char principal[200],
                                  char auth[200], char *errstr, size_t errstr_size);

/** Seal / open a K_sign under the key derived from the internal key \p kint.
 *  @returns TB_OK, TB_ERR_INTERNAL, or (open) TB_ERR_INVALID when the blob
 *  does not authenticate (another internal key, another row). The token id
 *  is authenticated data: a sealed key moved to another row does not open. */
tb_err_t tb_sign_seal(const unsigned char kint[TB_SIGN_KEY_LEN], const char *token_id,
                      const unsigned char ksign[TB_SIGN_KEY_LEN],
                      unsigned char out[TB_SIGN_SEALED_LEN]);
tb_err_t tb_sign_open(const unsigned char kint[TB_SIGN_KEY_LEN], const char *token_id,
                      const unsigned char *blob, size_t blob_len,
                      unsigned char ksign[TB_SIGN_KEY_LEN]);

/**
 * @brief Seal the K_sign of \p token (id \p token_id) and store it in its
 *        api_tokens row, on \p conn as it is (inside the token creation's
 *        transaction). Without an internal key it stores nothing and
 *        returns TB_OK: such a token works on REST only.
 */
tb_err_t tb_sign_token_store(PGconn *conn, const char *token_id, const char *token,
                             char *errstr, size_t errstr_size);

/** What of a task-commands record the signature check needs (NULL: absent). */
typedef struct tb_sign_record {
        const void *principal;   /**< tb-principal header */
        size_t principal_len;
        const tb_sign_auth_t *auth; /**< the parsed tb-auth header */
        const void *key;
        size_t key_len;
        const void *value;
        size_t value_len;
} tb_sign_record_t;

/**
 * @brief Check a record's signature and name its principal: the token the
 *        principal names must exist, be neither revoked nor expired, and its
 *        user enabled; kid "internal" is checked with the internal key, a
 *        token id with that token's K_sign (the token must be the one in
 *        tb-principal). Freshness and replays are the caller's (the engine).
 *        Lookups are cached for \p cache_ms per token id.
 * @returns TB_OK with *\p who (caller frees), TB_ERR_UNAUTHENTICATED with the
 *          reason (never a secret), or TB_ERR_PG / TB_ERR_NOMEM.
 * @locality any thread.
 */
tb_err_t tb_sign_verify(tb_store_t *store, const tb_sign_record_t *rec, int64_t cache_ms,
                        tb_principal_t **who, char *errstr, size_t errstr_size);

#endif /* TB_IDENTITY_SIGNING_H */
