/**
 * @file store/signing.h
 * @brief The SQL of signed commands (identity/signing.h): the sealed
 *        signing key and the expiry of an api_tokens row, and the lookup of
 *        a token by its public id for the commands role.
 */
#ifndef TB_STORE_SIGNING_H
#define TB_STORE_SIGNING_H

#include "tb.h"
#include <libpq-fe.h>

/** One token as the signature check needs it. */
typedef struct tb_store_signing_token {
        char user_id[160];
        bool revoked;
        bool disabled;
        bool expired;
        bool has_sign_key;
        unsigned char sign_key[64]; /**< sealed K_sign */
        size_t sign_key_len;
        char **groups;              /**< the user's groups (caller frees each and the array) */
        size_t group_cnt;
} tb_store_signing_token_t;

/** Store the sealed K_sign of token \p token_id (on \p conn as it is).
 *  @returns TB_OK, TB_ERR_NOT_FOUND or TB_ERR_PG. */
tb_err_t tb_store_signing_put_key(PGconn *conn, const char *token_id, const unsigned char *sealed,
                                  size_t sealed_len, char *errstr, size_t errstr_size);

/** Set the expiry of token \p token_id to \p expires_at_ms (ms since the
 *  epoch). @returns TB_OK, TB_ERR_NOT_FOUND or TB_ERR_PG. */
tb_err_t tb_store_signing_set_expiry(PGconn *conn, const char *token_id, int64_t expires_at_ms,
                                     char *errstr, size_t errstr_size);

/** Read token \p token_id with its user's state and groups.
 *  @returns TB_OK (\p out filled; free with tb_store_signing_token_clear()),
 *  TB_ERR_NOT_FOUND or TB_ERR_PG. */
tb_err_t tb_store_signing_token(PGconn *conn, const char *token_id,
                                tb_store_signing_token_t *out, char *errstr,
                                size_t errstr_size);
void tb_store_signing_token_clear(tb_store_signing_token_t *t);

#endif
