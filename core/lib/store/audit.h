/**
 * @file store/audit.h
 * @brief The admin log (audit.c owns table admin_audit): one row per admin
 *        action, who did what to what and when. What a row holds and when it
 *        is written is decided by identity/identity.h (tb_identity_audit());
 *        this file only reads and writes the table.
 */
#ifndef TB_STORE_AUDIT_H
#define TB_STORE_AUDIT_H

#include "tb.h"

#include <jansson.h>
#include <libpq-fe.h>

/**
 * @brief Insert one admin_audit row, stamped with the server's now().
 *
 * Runs on \p conn as it is: inside the caller's transaction the row commits
 * with it; outside one it commits on its own.
 * @param details_json the details as JSON object text (never a secret).
 * @returns TB_OK or TB_ERR_PG ("write admin_audit: ...").
 * @locality the thread that holds \p conn.
 */
tb_err_t tb_store_audit_insert(PGconn *conn, const char *actor, const char *action,
                               const char *target, const char *details_json, char *errstr,
                               size_t errstr_size);

/**
 * @brief The newest \p limit rows of admin_audit, newest first.
 * @param out receives a JSON array (caller owns it, json_decref()) of objects
 *        {"at": epoch ms, "actor", "action", "target", "details": the details
 *        as PostgreSQL prints the jsonb}.
 * @returns TB_OK, TB_ERR_NOMEM or TB_ERR_PG ("read admin_audit: ...").
 * @locality the thread that holds \p conn.
 */
tb_err_t tb_store_audit_list(PGconn *conn, long limit, json_t **out, char *errstr,
                             size_t errstr_size);

/** Columns of tb_store_audit_page() (at in epoch ms, details as jsonb text). */
enum { TB_AC_ID, TB_AC_AT, TB_AC_ACTOR, TB_AC_ACTION, TB_AC_TARGET, TB_AC_DETAILS };

/**
 * @brief One keyset page of admin_audit, newest first (by id, which grows
 *        with every row): the REST API's GET /v1/admin/audit.
 * @param before_id  only rows with a smaller id (the previous page's last),
 *                   or NULL for the first page (decimal text)
 * @param actor, action  exact matches, or NULL for any
 * @param limit  rows to return (decimal text; ask one more than shown to
 *               know whether a next page exists)
 * @param res  receives the rows (TB_AC_* columns; caller PQclear()s)
 * @returns TB_OK or TB_ERR_PG ("read admin_audit: ...").
 * @locality the thread that holds \p conn.
 */
tb_err_t tb_store_audit_page(PGconn *conn, const char *before_id, const char *actor,
                             const char *action, const char *limit, PGresult **res,
                             char *errstr, size_t errstr_size);

#endif /* TB_STORE_AUDIT_H */
