/**
 * @file store/sessions.h
 * @brief Owner of the table console_sessions (sessions.c): the web
 *        console's sign-in sessions (schemas/sql/0010_console_sessions.sql).
 *        Every statement on it is here; what a session means (the cookie,
 *        CSRF, re-checking its token) is the api role's (api/session.c).
 *
 * A session is keyed by the SHA-256 of its id (the cookie's value): the id
 * itself is never stored. The functions run on \p conn as it is and report
 * a failure as "WHAT: server message" (tb_store_exec()).
 * @locality the thread that holds \p conn.
 */
#ifndef TB_STORE_SESSIONS_H
#define TB_STORE_SESSIONS_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdint.h>

/** Bytes of a session id hash (SHA-256), the key of console_sessions. */
#define TB_STORE_SESSION_HASH_LEN 32

/** Insert a session for token \p token_id, expiring \p ttl_ms from now. */
tb_err_t tb_store_session_insert(PGconn *conn, const unsigned char id_hash[TB_STORE_SESSION_HASH_LEN],
                                 const char *token_id, int64_t ttl_ms, char *errstr,
                                 size_t errstr_size);

/**
 * Find the session of \p id_hash that has not expired: *\p found, and then
 * the SHA-256 of its token (\p token_hash, the key the bearer
 * authentication looks a token up by) and its expiry (*\p expires_ms, ms
 * since the epoch). A session past its expiry is not found.
 */
tb_err_t tb_store_session_find(PGconn *conn, const unsigned char id_hash[TB_STORE_SESSION_HASH_LEN],
                               bool *found, unsigned char token_hash[32], int64_t *expires_ms,
                               char *errstr, size_t errstr_size);

/** Delete the session of \p id_hash; *\p deleted says whether there was one. */
tb_err_t tb_store_session_delete(PGconn *conn, const unsigned char id_hash[TB_STORE_SESSION_HASH_LEN],
                                 bool *deleted, char *errstr, size_t errstr_size);

/** Delete expired sessions (at most \p limit rows); *\p deleted counts them. */
tb_err_t tb_store_session_purge(PGconn *conn, int limit, int64_t *deleted, char *errstr,
                                size_t errstr_size);

#endif /* TB_STORE_SESSIONS_H */
