/**
 * @file store/audit.c
 * @brief Owner of table admin_audit: the statements that write and read the
 *        admin log (store/audit.h).
 */
#include "store/audit.h"
#include "store/store_internal.h"

#include <stdio.h>

tb_err_t tb_store_audit_insert(PGconn *conn, const char *actor, const char *action,
                               const char *target, const char *details_json, char *errstr,
                               size_t errstr_size) {
        const char *params[] = {actor, action, target, details_json};
        return tb_store_exec(conn, "write admin_audit",
                             "INSERT INTO admin_audit (actor, action, target, details) "
                             "VALUES ($1, $2, $3, $4::jsonb)",
                             4, params, NULL, errstr, errstr_size);
}

static json_t *tb_store_audit_row(const PGresult *res, int i) {
        return json_pack("{s:o, s:s, s:s, s:s, s:s}", "at", tb_store_json_ms(res, i, 0), "actor",
                         PQgetvalue(res, i, 1), "action", PQgetvalue(res, i, 2), "target",
                         PQgetvalue(res, i, 3), "details", PQgetvalue(res, i, 4));
}

tb_err_t tb_store_audit_list(PGconn *conn, long limit, json_t **out, char *errstr,
                             size_t errstr_size) {
        char lim[24];
        snprintf(lim, sizeof(lim), "%ld", limit);
        const char *p[] = {lim};
        return tb_store_query_json(conn, "read admin_audit",
                                   "SELECT (extract(epoch FROM at) * 1000)::bigint, "
                                   "       actor, action, target, details::text "
                                   "FROM admin_audit ORDER BY id DESC LIMIT $1::int",
                                   1, p, tb_store_audit_row, out, errstr, errstr_size);
}

tb_err_t tb_store_audit_page(PGconn *conn, const char *before_id, const char *actor,
                             const char *action, const char *limit, PGresult **res,
                             char *errstr, size_t errstr_size) {
        const char *p[] = {before_id, actor, action, limit};
        /* the primary key read backwards: no sort, whatever the filters */
        return tb_store_exec(conn, "read admin_audit",
                             "SELECT id, (extract(epoch FROM at) * 1000)::bigint, actor, "
                             "       action, target, details::text "
                             "FROM admin_audit "
                             "WHERE ($1::bigint IS NULL OR id < $1::bigint) "
                             "AND ($2::text IS NULL OR actor = $2::text) "
                             "AND ($3::text IS NULL OR action = $3::text) "
                             "ORDER BY id DESC LIMIT $4::int",
                             4, p, res, errstr, errstr_size);
}
