/**
 * @file store/sessions.c
 * @brief The statements on console_sessions (store/sessions.h).
 */
#include "store/sessions.h"
#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* \p hash as a bytea literal parameter: "\x" + 64 hex digits. */
static void tb_store_session_bytea(const unsigned char hash[TB_STORE_SESSION_HASH_LEN],
                                   char out[2 * TB_STORE_SESSION_HASH_LEN + 3]) {
        out[0] = '\\';
        out[1] = 'x';
        for (size_t i = 0; i < TB_STORE_SESSION_HASH_LEN; i++)
                snprintf(out + 2 + 2 * i, 3, "%02x", hash[i]);
}

tb_err_t tb_store_session_insert(PGconn *conn,
                                 const unsigned char id_hash[TB_STORE_SESSION_HASH_LEN],
                                 const char *token_id, int64_t ttl_ms, char *errstr,
                                 size_t errstr_size) {
        char h[2 * TB_STORE_SESSION_HASH_LEN + 3], ttl[24];
        tb_store_session_bytea(id_hash, h);
        snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
        const char *params[] = {h, token_id, ttl};
        return tb_store_exec(conn, "insert session",
                             "INSERT INTO console_sessions (id_hash, token_id, expires_at) "
                             "VALUES ($1::bytea, $2, now() + $3::bigint * interval '1 millisecond')",
                             3, params, NULL, errstr, errstr_size);
}

tb_err_t tb_store_session_find(PGconn *conn,
                               const unsigned char id_hash[TB_STORE_SESSION_HASH_LEN],
                               bool *found, unsigned char token_hash[32], int64_t *expires_ms,
                               char *errstr, size_t errstr_size) {
        char h[2 * TB_STORE_SESSION_HASH_LEN + 3];
        tb_store_session_bytea(id_hash, h);
        const char *params[] = {h};
        PGresult *res = NULL;
        *found = false;
        tb_err_t err = tb_store_exec(
                conn, "read session",
                "SELECT encode(t.token_hash, 'hex'), "
                "       (extract(epoch FROM s.expires_at) * 1000)::bigint "
                "FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id "
                "WHERE s.id_hash = $1::bytea AND s.expires_at > now()",
                1, params, &res, errstr, errstr_size);
        if (err)
                return err;
        if (PQntuples(res) == 1) {
                const char *hex = PQgetvalue(res, 0, 0);
                if (strlen(hex) != 64) {
                        PQclear(res);
                        return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                         "read session: the token hash is not 32 bytes");
                }
                for (int i = 0; i < 32; i++)
                        token_hash[i] = (unsigned char)(tb_hex_digit(hex[2 * i]) << 4 |
                                                        tb_hex_digit(hex[2 * i + 1]));
                *expires_ms = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
                *found = true;
        }
        PQclear(res);
        return TB_OK;
}

tb_err_t tb_store_session_delete(PGconn *conn,
                                 const unsigned char id_hash[TB_STORE_SESSION_HASH_LEN],
                                 bool *deleted, char *errstr, size_t errstr_size) {
        char h[2 * TB_STORE_SESSION_HASH_LEN + 3];
        tb_store_session_bytea(id_hash, h);
        const char *params[] = {h};
        PGresult *res = NULL;
        tb_err_t err = tb_store_exec(conn, "delete session",
                                     "DELETE FROM console_sessions WHERE id_hash = $1::bytea",
                                     1, params, &res, errstr, errstr_size);
        if (err)
                return err;
        *deleted = strtoll(PQcmdTuples(res), NULL, 10) > 0;
        PQclear(res);
        return TB_OK;
}

tb_err_t tb_store_session_purge(PGconn *conn, int limit, int64_t *deleted, char *errstr,
                                size_t errstr_size) {
        char lim[16];
        snprintf(lim, sizeof(lim), "%d", limit);
        const char *params[] = {lim};
        PGresult *res = NULL;
        tb_err_t err = tb_store_exec(conn, "purge expired sessions",
                                     "DELETE FROM console_sessions WHERE id_hash IN "
                                     "(SELECT id_hash FROM console_sessions "
                                     " WHERE expires_at <= now() LIMIT $1::int)",
                                     1, params, &res, errstr, errstr_size);
        if (err)
                return err;
        *deleted = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return TB_OK;
}
