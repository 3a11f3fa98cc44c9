/**
 * @file store/identity.c
 * @brief Owner of tables users, security_groups, group_members and
 *        api_tokens: every statement on them (store/identity.h).
 */
#include "store/identity.h"
#include "store/store_internal.h"

#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Run a statement and report whether it returned at least one row. */
static tb_err_t tb_store_identity_exec_any(PGconn *conn, const char *what, const char *sql,
                                           int nparams, const char *const *params, bool *found,
                                           char *errstr, size_t errstr_size) {
        PGresult *res = NULL;
        tb_err_t err = tb_store_exec(conn, what, sql, nparams, params, &res, errstr, errstr_size);
        if (!err && found)
                *found = PQntuples(res) > 0;
        PQclear(res);
        return err;
}

/* The bytea text form PostgreSQL accepts as a parameter: "\x" + hex. */
static void tb_store_identity_bytea(const unsigned char hash[TB_STORE_IDENTITY_HASH_LEN],
                                    char out[2 * TB_STORE_IDENTITY_HASH_LEN + 3]) {
        out[0] = '\\';
        out[1] = 'x';
        for (size_t i = 0; i < TB_STORE_IDENTITY_HASH_LEN; i++)
                snprintf(out + 2 + 2 * i, 3, "%02x", hash[i]);
}

/* ---- users --------------------------------------------------------------- */

tb_err_t tb_store_identity_user_insert(PGconn *conn, const char *user_id, bool *created,
                                       char *errstr, size_t errstr_size) {
        const char *up[] = {user_id};
        return tb_store_identity_exec_any(conn, "insert user",
                                          "INSERT INTO users (id) VALUES ($1) ON CONFLICT DO "
                                          "NOTHING RETURNING id",
                                          1, up, created, errstr, errstr_size);
}

tb_err_t tb_store_identity_user_get(PGconn *conn, const char *user_id,
                                    tb_store_identity_lock_t lock, bool *exists, bool *disabled,
                                    char *errstr, size_t errstr_size) {
        static const char *const sql[] = {
                [TB_STORE_IDENTITY_NO_LOCK] = "SELECT disabled FROM users WHERE id = $1",
                [TB_STORE_IDENTITY_FOR_SHARE] =
                        "SELECT disabled FROM users WHERE id = $1 FOR SHARE",
                [TB_STORE_IDENTITY_FOR_UPDATE] =
                        "SELECT disabled FROM users WHERE id = $1 FOR UPDATE",
        };
        PGresult *res = NULL;
        const char *p[] = {user_id};
        *exists = false;
        if (disabled)
                *disabled = false;
        tb_err_t err = tb_store_exec(conn, "read user", sql[lock], 1, p, &res, errstr,
                                     errstr_size);
        if (!err && PQntuples(res) > 0) {
                *exists = true;
                if (disabled)
                        *disabled = !strcmp(PQgetvalue(res, 0, 0), "t");
        }
        PQclear(res);
        return err;
}

tb_err_t tb_store_identity_user_set_disabled(PGconn *conn, const char *user_id, bool disabled,
                                             char *errstr, size_t errstr_size) {
        const char *p[] = {user_id, disabled ? "true" : "false"};
        return tb_store_exec(conn, disabled ? "disable user" : "enable user",
                             "UPDATE users SET disabled = $2::boolean WHERE id = $1", 2, p, NULL,
                             errstr, errstr_size);
}

static json_t *tb_store_identity_user_row(const PGresult *res, int i) {
        return json_pack("{s:s, s:b, s:o, s:s}", "id", PQgetvalue(res, i, 0), "disabled",
                         !strcmp(PQgetvalue(res, i, 1), "t"), "created_at",
                         tb_store_json_ms(res, i, 2), "groups", PQgetvalue(res, i, 3));
}

tb_err_t tb_store_identity_user_list(PGconn *conn, json_t **out, char *errstr,
                                     size_t errstr_size) {
        return tb_store_query_json(conn, "list users",
                                   "SELECT u.id, u.disabled, "
                                   "       (extract(epoch FROM u.created_at) * 1000)::bigint, "
                                   "       coalesce(string_agg(m.group_name, ',' ORDER BY "
                                   "                m.group_name COLLATE \"C\"), '') "
                                   "FROM users u "
                                   "LEFT JOIN group_members m ON m.user_id = u.id "
                                   "GROUP BY u.id ORDER BY u.id COLLATE \"C\"",
                                   0, NULL, tb_store_identity_user_row, out, errstr,
                                   errstr_size);
}

/* ---- security groups and membership ---------------------------------------- */

tb_err_t tb_store_identity_group_insert(PGconn *conn, const char *group, bool *created,
                                        char *errstr, size_t errstr_size) {
        const char *gp[] = {group};
        return tb_store_identity_exec_any(conn, "create group",
                                          "INSERT INTO security_groups (name) VALUES ($1) "
                                          "ON CONFLICT DO NOTHING RETURNING name",
                                          1, gp, created, errstr, errstr_size);
}

tb_err_t tb_store_identity_group_exists(PGconn *conn, const char *group, bool *exists,
                                        char *errstr, size_t errstr_size) {
        const char *p[] = {group};
        return tb_store_identity_exec_any(conn, "read group",
                                          "SELECT 1 FROM security_groups WHERE name = $1", 1, p,
                                          exists, errstr, errstr_size);
}

static json_t *tb_store_identity_group_row(const PGresult *res, int i) {
        return json_pack("{s:s, s:I, s:s}", "name", PQgetvalue(res, i, 0), "members",
                         (json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10), "users",
                         PQgetvalue(res, i, 2));
}

tb_err_t tb_store_identity_group_list(PGconn *conn, json_t **out, char *errstr,
                                      size_t errstr_size) {
        return tb_store_query_json(conn, "list groups",
                                   "SELECT g.name, count(m.user_id), "
                                   "       coalesce(string_agg(m.user_id, ',' ORDER BY "
                                   "                m.user_id COLLATE \"C\"), '') "
                                   "FROM security_groups g "
                                   "LEFT JOIN group_members m ON m.group_name = g.name "
                                   "GROUP BY g.name ORDER BY g.name COLLATE \"C\"",
                                   0, NULL, tb_store_identity_group_row, out, errstr,
                                   errstr_size);
}

/* ---- group quotas ----------------------------------------------------------- */

/* Fill *q from columns c, c+1, c+2 of row 0 (-1 stands for NULL). */
static void tb_store_identity_quota_row(const PGresult *res, int c, tb_store_group_quota_t *q) {
        q->max_tasks = strtoll(PQgetvalue(res, 0, c), NULL, 10);
        q->max_running = strtoll(PQgetvalue(res, 0, c + 1), NULL, 10);
        q->run_now_rate = strtod(PQgetvalue(res, 0, c + 2), NULL);
}

static tb_err_t tb_store_identity_quota_exec(PGconn *conn, const char *what, const char *sql,
                                             int nparams, const char *const *p, bool *found,
                                             tb_store_group_quota_t *q, char *errstr,
                                             size_t errstr_size) {
        PGresult *res = NULL;
        *found = false;
        q->max_tasks = q->max_running = TB_STORE_QUOTA_UNLIMITED;
        q->run_now_rate = TB_STORE_QUOTA_UNLIMITED;
        tb_err_t err = tb_store_exec(conn, what, sql, nparams, p, &res, errstr, errstr_size);
        if (err)
                return err;
        if (PQntuples(res) == 1) {
                *found = true;
                tb_store_identity_quota_row(res, 0, q);
        }
        PQclear(res);
        return TB_OK;
}

tb_err_t tb_store_identity_quota_get(PGconn *conn, const char *group, bool *found,
                                     tb_store_group_quota_t *q, char *errstr,
                                     size_t errstr_size) {
        const char *p[] = {group};
        return tb_store_identity_quota_exec(conn, "read group quotas",
                                            "SELECT coalesce(max_tasks, -1), "
                                            "coalesce(max_running, -1), "
                                            "coalesce(run_now_rate, -1) "
                                            "FROM security_groups WHERE name = $1",
                                            1, p, found, q, errstr, errstr_size);
}

tb_err_t tb_store_identity_quota_set(PGconn *conn, const char *group,
                                     const tb_store_group_quota_t *set, bool *found,
                                     tb_store_group_quota_t *now, char *errstr,
                                     size_t errstr_size) {
        char mt[32], mr[32], rr[64];
        tb_snprintf(mt, sizeof(mt), "%" PRId64, set->max_tasks);
        tb_snprintf(mr, sizeof(mr), "%" PRId64, set->max_running);
        tb_snprintf(rr, sizeof(rr), "%.17g", set->run_now_rate);
        const char *p[] = {group, mt, mr, rr};
        /* -2 keeps the column, -1 clears it (unlimited) */
        return tb_store_identity_quota_exec(
                conn, "set group quotas",
                "UPDATE security_groups SET "
                "max_tasks = CASE $2::bigint WHEN -2 THEN max_tasks WHEN -1 THEN NULL "
                "            ELSE $2::int END, "
                "max_running = CASE $3::bigint WHEN -2 THEN max_running WHEN -1 THEN NULL "
                "              ELSE $3::int END, "
                "run_now_rate = CASE $4::float8 WHEN -2 THEN run_now_rate WHEN -1 THEN NULL "
                "               ELSE $4::float8 END "
                "WHERE name = $1 RETURNING coalesce(max_tasks, -1), "
                "coalesce(max_running, -1), coalesce(run_now_rate, -1)",
                4, p, found, now, errstr, errstr_size);
}

tb_err_t tb_store_identity_member_add(PGconn *conn, const char *group, const char *user_id,
                                      bool *added, char *errstr, size_t errstr_size) {
        const char *p[] = {group, user_id};
        return tb_store_identity_exec_any(conn, "add group member",
                                          "INSERT INTO group_members (group_name, user_id) "
                                          "VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING "
                                          "user_id",
                                          2, p, added, errstr, errstr_size);
}

tb_err_t tb_store_identity_member_remove(PGconn *conn, const char *group, const char *user_id,
                                         bool *removed, char *errstr, size_t errstr_size) {
        const char *p[] = {group, user_id};
        return tb_store_identity_exec_any(conn, "remove group member",
                                          "DELETE FROM group_members WHERE group_name = $1 "
                                          "AND user_id = $2 RETURNING user_id",
                                          2, p, removed, errstr, errstr_size);
}

/* ---- API tokens ---------------------------------------------------------- */

tb_err_t tb_store_identity_token_insert(PGconn *conn, const char *token_id, const char *user_id,
                                        const unsigned char hash[TB_STORE_IDENTITY_HASH_LEN],
                                        bool *inserted, char *errstr, size_t errstr_size) {
        char hparam[2 * TB_STORE_IDENTITY_HASH_LEN + 3];
        tb_store_identity_bytea(hash, hparam);
        const char *params[] = {token_id, user_id, hparam};
        return tb_store_identity_exec_any(conn, "insert token",
                                          "INSERT INTO api_tokens (id, user_id, token_hash) "
                                          "VALUES ($1, $2, $3::bytea) ON CONFLICT DO NOTHING "
                                          "RETURNING id",
                                          3, params, inserted, errstr, errstr_size);
}

tb_err_t tb_store_identity_token_lock(PGconn *conn, const char *token_id, bool *found,
                                      tb_store_identity_token_state_t *st, char *errstr,
                                      size_t errstr_size) {
        PGresult *res = NULL;
        tb_err_t err;
        const char *p[] = {token_id};
        *found = false;
        memset(st, 0, sizeof(*st));
        if ((err = tb_store_exec(conn, "read token",
                                 "SELECT user_id, revoked_at IS NOT NULL, "
                                 "       (extract(epoch FROM revoked_at) * 1000)::bigint "
                                 "FROM api_tokens WHERE id = $1 FOR UPDATE",
                                 1, p, &res, errstr, errstr_size)))
                return err;
        if (PQntuples(res) > 0) {
                if (!(st->user_id = strdup(PQgetvalue(res, 0, 0)))) {
                        PQclear(res);
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                         "read token: out of memory");
                }
                *found = true;
                st->revoked = !strcmp(PQgetvalue(res, 0, 1), "t");
                st->revoked_ms = st->revoked ? strtoll(PQgetvalue(res, 0, 2), NULL, 10) : 0;
        }
        PQclear(res);
        return TB_OK;
}

tb_err_t tb_store_identity_token_revoke(PGconn *conn, const char *token_id, char *errstr,
                                        size_t errstr_size) {
        const char *p[] = {token_id};
        return tb_store_exec(conn, "revoke token",
                             "UPDATE api_tokens SET revoked_at = now() WHERE id = $1", 1, p, NULL,
                             errstr, errstr_size);
}

static json_t *tb_store_identity_token_row(const PGresult *res, int i) {
        return json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "id", PQgetvalue(res, i, 0),
                         "user_id", PQgetvalue(res, i, 1), "created_at",
                         tb_store_json_ms(res, i, 2), "revoked_at", tb_store_json_ms(res, i, 3),
                         "last_used_at", tb_store_json_ms(res, i, 4), "expires_at",
                         tb_store_json_ms(res, i, 5));
}

tb_err_t tb_store_identity_token_list(PGconn *conn, const char *user_id, json_t **out,
                                      char *errstr, size_t errstr_size) {
        const char *p[] = {user_id};
        return tb_store_query_json(conn, "list tokens",
                                   "SELECT id, user_id, "
                                   "       (extract(epoch FROM created_at) * 1000)::bigint, "
                                   "       (extract(epoch FROM revoked_at) * 1000)::bigint, "
                                   "       (extract(epoch FROM last_used_at) * 1000)::bigint, "
                                   "       (extract(epoch FROM expires_at) * 1000)::bigint "
                                   "FROM api_tokens WHERE $1::text IS NULL OR user_id = $1 "
                                   "ORDER BY user_id COLLATE \"C\", created_at, id",
                                   1, p, tb_store_identity_token_row, out, errstr,
                                   errstr_size);
}

void tb_store_identity_auth_free(tb_store_identity_auth_t *a) {
        if (!a)
                return;
        for (size_t i = 0; i < a->group_cnt; i++)
                free(a->groups[i]);
        free(a->groups);
        free(a->token_id);
        free(a->user_id);
        free(a);
}

tb_err_t tb_store_identity_token_find(PGconn *conn,
                                      const unsigned char hash[TB_STORE_IDENTITY_HASH_LEN],
                                      tb_store_identity_auth_t **out, char *errstr,
                                      size_t errstr_size) {
        char hparam[2 * TB_STORE_IDENTITY_HASH_LEN + 3];
        tb_store_identity_bytea(hash, hparam);
        const char *params[] = {hparam};
        PGresult *res = NULL;
        tb_store_identity_auth_t *a = NULL;
        tb_err_t err;

        *out = NULL;
        /* One row per group (or one row with a NULL group); the token row is
         * found through the unique index on token_hash. */
        err = tb_store_exec(conn, "authenticate: look up token",
                            "SELECT t.id, t.user_id, t.revoked_at IS NOT NULL, u.disabled, "
                            "       (t.last_used_at IS NULL OR "
                            "        t.last_used_at < now() - interval '1 minute'), "
                            "       m.group_name, "
                            "       (t.expires_at IS NOT NULL AND t.expires_at <= now()) "
                            "FROM api_tokens t JOIN users u ON u.id = t.user_id "
                            "LEFT JOIN group_members m ON m.user_id = t.user_id "
                            "WHERE t.token_hash = $1::bytea "
                            "ORDER BY m.group_name COLLATE \"C\"",
                            1, params, &res, errstr, errstr_size);
        if (err)
                return err;
        int rows = PQntuples(res);
        if (rows == 0) {
                PQclear(res);
                return TB_OK;
        }
        if (!(a = calloc(1, sizeof(*a))) || !(a->token_id = strdup(PQgetvalue(res, 0, 0))) ||
            !(a->user_id = strdup(PQgetvalue(res, 0, 1))))
                goto nomem;
        a->revoked = !strcmp(PQgetvalue(res, 0, 2), "t");
        a->user_disabled = !strcmp(PQgetvalue(res, 0, 3), "t");
        a->touch_due = !strcmp(PQgetvalue(res, 0, 4), "t");
        a->expired = !strcmp(PQgetvalue(res, 0, 6), "t");
        if (!PQgetisnull(res, 0, 5)) {
                if (!(a->groups = calloc((size_t)rows, sizeof(char *))))
                        goto nomem;
                for (int i = 0; i < rows; i++) {
                        if (!(a->groups[i] = strdup(PQgetvalue(res, i, 5))))
                                goto nomem;
                        a->group_cnt++;
                }
        }
        PQclear(res);
        *out = a;
        return TB_OK;
nomem:
        PQclear(res);
        tb_store_identity_auth_free(a);
        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "authenticate: out of memory");
}

tb_err_t tb_store_identity_token_touch(PGconn *conn, const char *token_id, char *errstr,
                                       size_t errstr_size) {
        const char *uparams[] = {token_id};
        return tb_store_exec(conn, "authenticate: update last_used_at",
                             "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 "
                             "AND (last_used_at IS NULL OR "
                             "     last_used_at < now() - interval '1 minute')",
                             1, uparams, NULL, errstr, errstr_size);
}
