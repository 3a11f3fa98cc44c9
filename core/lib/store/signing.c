/**
 * @file store/signing.c
 * @brief The statements of store/signing.h.
 */
#include "store/signing.h"
#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tb_store_signing_hex[] = "0123456789abcdef";

tb_err_t tb_store_signing_put_key(PGconn *conn, const char *token_id, const unsigned char *sealed,
                                  size_t sealed_len, char *errstr, size_t errstr_size) {
        char param[2 * 64 + 3];
        if (sealed_len > 64)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "store signing key: %zu bytes is too long", sealed_len);
        param[0] = '\\';
        param[1] = 'x';
        for (size_t i = 0; i < sealed_len; i++) {
                param[2 + 2 * i] = tb_store_signing_hex[sealed[i] >> 4];
                param[3 + 2 * i] = tb_store_signing_hex[sealed[i] & 15];
        }
        param[2 + 2 * sealed_len] = '\0';
        const char *p[] = {token_id, param};
        PGresult *r = NULL;
        tb_err_t err = tb_store_exec(conn, "store token signing key",
                                     "UPDATE api_tokens SET sign_key = $2::bytea WHERE id = $1",
                                     2, p, &r, errstr, errstr_size);
        if (!err && strcmp(PQcmdTuples(r), "1"))
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "store token signing key: no token %s", token_id);
        PQclear(r);
        return err;
}

tb_err_t tb_store_signing_set_expiry(PGconn *conn, const char *token_id, int64_t expires_at_ms,
                                     char *errstr, size_t errstr_size) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%" PRId64, expires_at_ms);
        const char *p[] = {token_id, ms};
        PGresult *r = NULL;
        tb_err_t err = tb_store_exec(conn, "set token expiry",
                                     "UPDATE api_tokens SET expires_at = "
                                     "to_timestamp($2::bigint / 1000.0) WHERE id = $1",
                                     2, p, &r, errstr, errstr_size);
        if (!err && strcmp(PQcmdTuples(r), "1"))
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "set token expiry: no token %s", token_id);
        PQclear(r);
        return err;
}

void tb_store_signing_token_clear(tb_store_signing_token_t *t) {
        for (size_t i = 0; i < t->group_cnt; i++)
                free(t->groups[i]);
        free(t->groups);
        memset(t, 0, sizeof(*t));
}

static int tb_store_signing_unhex(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

tb_err_t tb_store_signing_token(PGconn *conn, const char *token_id,
                                tb_store_signing_token_t *out, char *errstr,
                                size_t errstr_size) {
        const char *p[] = {token_id};
        PGresult *r = NULL;
        memset(out, 0, sizeof(*out));
        /* one row per group (or one with a NULL group), like authentication */
        tb_err_t err = tb_store_exec(
                conn, "look up token by id",
                "SELECT t.user_id, t.revoked_at IS NOT NULL, u.disabled, "
                "       (t.expires_at IS NOT NULL AND t.expires_at <= now()), "
                "       encode(t.sign_key, 'hex'), m.group_name "
                "FROM api_tokens t JOIN users u ON u.id = t.user_id "
                "LEFT JOIN group_members m ON m.user_id = t.user_id "
                "WHERE t.id = $1 ORDER BY m.group_name COLLATE \"C\"",
                1, p, &r, errstr, errstr_size);
        if (err)
                return err;
        int rows = PQntuples(r);
        if (rows == 0) {
                PQclear(r);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND, "no token %s", token_id);
        }
        snprintf(out->user_id, sizeof(out->user_id), "%s", PQgetvalue(r, 0, 0));
        out->revoked = !strcmp(PQgetvalue(r, 0, 1), "t");
        out->disabled = !strcmp(PQgetvalue(r, 0, 2), "t");
        out->expired = !strcmp(PQgetvalue(r, 0, 3), "t");
        if (!PQgetisnull(r, 0, 4)) {
                const char *h = PQgetvalue(r, 0, 4);
                size_t n = strlen(h) / 2;
                if (n <= sizeof(out->sign_key)) {
                        for (size_t i = 0; i < n; i++)
                                out->sign_key[i] =
                                        (unsigned char)(tb_store_signing_unhex(h[2 * i]) << 4 |
                                                        tb_store_signing_unhex(h[2 * i + 1]));
                        out->sign_key_len = n;
                        out->has_sign_key = true;
                }
        }
        if (!PQgetisnull(r, 0, 5)) {
                if (!(out->groups = calloc((size_t)rows, sizeof(char *))))
                        goto nomem;
                for (int i = 0; i < rows; i++) {
                        if (!(out->groups[i] = strdup(PQgetvalue(r, i, 5))))
                                goto nomem;
                        out->group_cnt++;
                }
        }
        PQclear(r);
        return TB_OK;
nomem:
        PQclear(r);
        tb_store_signing_token_clear(out);
        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "look up token: out of memory");
}
