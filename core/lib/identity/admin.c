/**
 * @file identity/admin.c
 * @brief The audited admin operations behind `taskbus admin user|token|group`:
 *        users, groups, membership and tokens, each with its audit row;
 *        and tb_identity_audit(), through which every admin action writes
 *        its row (the statements: store/identity.h, store/audit.h).
 *
 * Each operation is a function of its statements (tb_identity_*_op) and the
 * public function that checks its arguments and hands the statements to
 * tb_identity_admin_run(), which owns the transaction and the audit row.
 */
#include "identity/identity_internal.h"
#include "identity/signing.h"
#include "store/audit.h"
#include "store/identity.h"
#include "store/signing.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tb_identity_token_id(const unsigned char hash[TB_HASH_LEN], char out[32]) {
        char hex[2 * TB_HASH_LEN + 1];
        tb_identity_hex(hash, TB_HASH_LEN, hex);
        snprintf(out, 32, TB_TOKEN_ID_PREFIX "%.*s", TB_TOKEN_ID_HEX, hex);
}

bool tb_identity_name_valid(const char *name) {
        if (!name)
                return false;
        size_t n = 0;
        for (const char *p = name; *p; p++, n++) {
                char c = *p;
                if (n >= TB_IDENTITY_NAME_MAX)
                        return false;
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' || c == '-'))
                        return false;
        }
        return n > 0;
}

tb_err_t tb_identity_name_check(const char *field, const char *name, char *errstr,
                                size_t errstr_size) {
        if (tb_identity_name_valid(name))
                return TB_OK;
        char q[96];
        tb_identity_quote(name, q, sizeof(q));
        size_t len = name ? strlen(name) : 0;
        if (len == 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s is empty: use 1 to %d characters from [A-Za-z0-9._@-]",
                                 field, TB_IDENTITY_NAME_MAX);
        if (len > TB_IDENTITY_NAME_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s '%s' is too long (%zu characters): use 1 to %d "
                                 "characters from [A-Za-z0-9._@-]",
                                 field, q, len, TB_IDENTITY_NAME_MAX);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s '%s' is invalid: use 1 to %d characters from [A-Za-z0-9._@-]",
                         field, q, TB_IDENTITY_NAME_MAX);
}

/* ---- the audit log ------------------------------------------------------- */

tb_err_t tb_identity_audit(PGconn *conn, const char *actor, const char *action,
                           const char *target, json_t *details, char *errstr,
                           size_t errstr_size) {
        char *text = details ? json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(details);
        if (!text)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                 "audit %s: cannot encode the details", action);
        tb_err_t err = tb_store_audit_insert(conn, actor, action, target, text, errstr,
                                             errstr_size);
        free(text);
        return err;
}

/* ---- the admin transaction ---------------------------------------------- */

/* The arguments of one admin operation; each operation reads the fields its
 * public function fills in. */
typedef struct tb_identity_admin_req {
        const char *user_id;
        const char *group;
        const char *token_id;
        const char *const *groups;
        size_t group_cnt;
        bool disabled;
        char *token_out;    /* [72] */
        char *token_id_out; /* [32] */
        int64_t expires_at_ms; /* token create: 0 = never */
        const tb_store_group_quota_t *quota; /* group set-quota: the change */
        tb_store_group_quota_t *quota_out;   /* group set-quota: after it */
} tb_identity_admin_req_t;

/* The statements of one admin operation, run inside its transaction. On
 * success *details is the audit row's details (NULL: out of memory). */
typedef tb_err_t (*tb_identity_admin_op_t)(PGconn *conn, const tb_identity_admin_req_t *req,
                                           json_t **details, char *errstr,
                                           size_t errstr_size);

static tb_err_t tb_identity_check_actor(const char *actor, char *errstr, size_t errstr_size) {
        if (!actor || !*actor || strlen(actor) > 512)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "actor: must name who performs the action (1 to 512 bytes)");
        return TB_OK;
}

/* Run \p op and its admin_audit row (\p action on \p target) in one
 * transaction on \p conn: both commit or neither does. \p target is read
 * after \p op ran, so it may be a buffer \p op fills (a new token's id).
 * On failure \p req->token_out, if any, is zeroed. */
static tb_err_t tb_identity_admin_run(PGconn *conn, const char *actor, const char *action,
                                      const char *target, tb_identity_admin_op_t op,
                                      const tb_identity_admin_req_t *req, char *errstr,
                                      size_t errstr_size) {
        json_t *details = NULL;
        tb_err_t err;
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG, "no PostgreSQL connection");
        if ((err = tb_identity_check_actor(actor, errstr, errstr_size)) ||
            (err = tb_store_begin(conn, errstr, errstr_size)))
                return err;
        if (!(err = op(conn, req, &details, errstr, errstr_size)))
                err = tb_identity_audit(conn, actor, action, target, details, errstr,
                                        errstr_size); /* consumes details */
        else
                json_decref(details); /* in case op built them before failing */
        if (!err)
                err = tb_store_commit(conn, errstr, errstr_size);
        if (err) {
                tb_store_rollback(conn);
                if (req->token_out) /* a token that was never stored must not linger */
                        explicit_bzero(req->token_out, 72);
        }
        return err;
}

static tb_err_t tb_identity_no_user(const char *user_id, char *errstr, size_t errstr_size) {
        return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                         "no user '%s'; create it with: taskbus admin user create %s "
                         "--groups GROUP",
                         user_id, user_id);
}

/* Generate a token for \p user_id and insert its hash (inside the caller's
 * transaction). */
static tb_err_t tb_identity_token_insert(PGconn *conn, const char *user_id, char token_out[72],
                                         char token_id_out[32], char *errstr, size_t errstr_size) {
        /* The 48-bit public id may collide (the 256-bit hash will not): on
         * a collision ON CONFLICT inserts nothing and we draw again. */
        for (int attempt = 0; attempt < 5; attempt++) {
                unsigned char raw[TB_TOKEN_RAW_LEN], hash[TB_HASH_LEN];
                char token[TB_TOKEN_LEN + 1], id[32];
                if (tb_random_bytes(raw, sizeof(raw)) != TB_OK)
                        return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                         "token: getrandom failed");
                memcpy(token, TB_TOKEN_PREFIX, TB_TOKEN_PREFIX_LEN);
                tb_identity_hex(raw, sizeof(raw), token + TB_TOKEN_PREFIX_LEN);
                explicit_bzero(raw, sizeof(raw));
                if (tb_identity_sha256(token, TB_TOKEN_LEN, hash) != TB_OK) {
                        explicit_bzero(token, sizeof(token));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                         "token: SHA-256 failed");
                }
                tb_identity_token_id(hash, id);
                bool inserted = false;
                tb_err_t err = tb_store_identity_token_insert(conn, id, user_id, hash, &inserted,
                                                              errstr, errstr_size);
                if (err) {
                        explicit_bzero(token, sizeof(token));
                        return err;
                }
                if (inserted && (err = tb_sign_token_store(conn, id, token, errstr, errstr_size))) {
                        explicit_bzero(token, sizeof(token));
                        return err;
                }
                if (inserted) {
                        memcpy(token_out, token, TB_TOKEN_LEN + 1);
                        memcpy(token_id_out, id, strlen(id) + 1);
                        explicit_bzero(token, sizeof(token));
                        return TB_OK;
                }
                explicit_bzero(token, sizeof(token));
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                         "token: 5 id collisions in a row; is the random source broken?");
}

/* ---- the operations: the statements of each, then its public function ---- */

static tb_err_t tb_identity_user_create_op(PGconn *conn, const tb_identity_admin_req_t *req,
                                           json_t **details, char *errstr,
                                           size_t errstr_size) {
        const char *user_id = req->user_id;
        bool found = false;
        tb_err_t err;
        if ((err = tb_store_identity_user_insert(conn, user_id, &found, errstr, errstr_size)))
                return err;
        if (!found)
                return tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                 "user '%s' already exists; give it another token with: "
                                 "taskbus admin token create %s",
                                 user_id, user_id);
        json_t *jgroups = json_array(), *jcreated = json_array();
        if (!jgroups || !jcreated)
                goto nomem;
        for (size_t i = 0; i < req->group_cnt; i++) {
                const char *group = req->groups[i];
                bool dup = false;
                for (size_t j = 0; j < i && !dup; j++)
                        dup = !strcmp(group, req->groups[j]);
                if (dup)
                        continue;
                if ((err = tb_store_identity_group_insert(conn, group, &found, errstr,
                                                          errstr_size)))
                        goto fail;
                if (found && json_array_append_new(jcreated, json_string(group)))
                        goto nomem;
                if ((err = tb_store_identity_member_add(conn, group, user_id, NULL, errstr,
                                                        errstr_size)))
                        goto fail;
                if (json_array_append_new(jgroups, json_string(group)))
                        goto nomem;
        }
        if ((err = tb_identity_token_insert(conn, user_id, req->token_out, req->token_id_out,
                                            errstr, errstr_size)))
                goto fail;
        /* "o" steals both arrays, even on failure */
        *details = json_pack("{s:o, s:o, s:s}", "groups", jgroups, "created_groups", jcreated,
                             "token_id", req->token_id_out);
        return TB_OK;
nomem:
        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "user create: out of memory");
fail:
        json_decref(jgroups);
        json_decref(jcreated);
        return err;
}

tb_err_t tb_identity_user_create(PGconn *conn, const char *actor, const char *user_id,
                                 const char *const *groups, size_t group_cnt,
                                 char token_out[72], char token_id_out[32], char *errstr,
                                 size_t errstr_size) {
        tb_err_t err;
        if ((err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        if (group_cnt && !groups)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "groups: NULL list");
        for (size_t i = 0; i < group_cnt; i++)
                if ((err = tb_identity_name_check("group name", groups[i], errstr, errstr_size)))
                        return err;
        const tb_identity_admin_req_t req = {.user_id = user_id,
                                             .groups = groups,
                                             .group_cnt = group_cnt,
                                             .token_out = token_out,
                                             .token_id_out = token_id_out};
        return tb_identity_admin_run(conn, actor, "user.create", user_id,
                                     tb_identity_user_create_op, &req, errstr, errstr_size);
}

static tb_err_t tb_identity_user_disable_op(PGconn *conn, const tb_identity_admin_req_t *req,
                                            json_t **details, char *errstr,
                                            size_t errstr_size) {
        bool exists = false, was = false;
        tb_err_t err = tb_store_identity_user_get(conn, req->user_id, TB_STORE_IDENTITY_FOR_UPDATE,
                                                  &exists, &was, errstr, errstr_size);
        if (err)
                return err;
        if (!exists)
                return tb_identity_no_user(req->user_id, errstr, errstr_size);
        if (was != req->disabled &&
            (err = tb_store_identity_user_set_disabled(conn, req->user_id, req->disabled, errstr,
                                                       errstr_size)))
                return err;
        *details = json_pack("{s:b}", "changed", was != req->disabled);
        return TB_OK;
}

tb_err_t tb_identity_user_disable(PGconn *conn, const char *actor, const char *user_id,
                                  bool disabled, char *errstr, size_t errstr_size) {
        tb_err_t err;
        if ((err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        const tb_identity_admin_req_t req = {.user_id = user_id, .disabled = disabled};
        return tb_identity_admin_run(conn, actor, disabled ? "user.disable" : "user.enable",
                                     user_id, tb_identity_user_disable_op, &req, errstr,
                                     errstr_size);
}

static tb_err_t tb_identity_token_create_op(PGconn *conn, const tb_identity_admin_req_t *req,
                                            json_t **details, char *errstr,
                                            size_t errstr_size) {
        bool found = false;
        tb_err_t err;
        /* FOR SHARE: a concurrent delete of the user cannot slip in between */
        if ((err = tb_store_identity_user_get(conn, req->user_id, TB_STORE_IDENTITY_FOR_SHARE,
                                              &found, NULL, errstr, errstr_size)))
                return err;
        if (!found)
                return tb_identity_no_user(req->user_id, errstr, errstr_size);
        if ((err = tb_identity_token_insert(conn, req->user_id, req->token_out, req->token_id_out,
                                            errstr, errstr_size)))
                return err;
        if (req->expires_at_ms > 0 &&
            (err = tb_store_signing_set_expiry(conn, req->token_id_out, req->expires_at_ms, errstr,
                                               errstr_size)))
                return err;
        *details = req->expires_at_ms > 0 ? json_pack("{s:s, s:I}", "user", req->user_id,
                                                      "expires_at_ms",
                                                      (json_int_t)req->expires_at_ms)
                                          : json_pack("{s:s}", "user", req->user_id);
        return TB_OK;
}

tb_err_t tb_identity_token_create(PGconn *conn, const char *actor, const char *user_id,
                                  char token_out[72], char token_id_out[32], char *errstr,
                                  size_t errstr_size) {
        return tb_identity_token_create_expiring(conn, actor, user_id, 0, token_out,
                                                 token_id_out, errstr, errstr_size);
}

tb_err_t tb_identity_token_create_expiring(PGconn *conn, const char *actor,
                                           const char *user_id, int64_t expires_at_ms,
                                           char token_out[72], char token_id_out[32],
                                           char *errstr, size_t errstr_size) {
        tb_err_t err;
        if ((err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        const tb_identity_admin_req_t req = {.user_id = user_id,
                                             .token_out = token_out,
                                             .token_id_out = token_id_out,
                                             .expires_at_ms = expires_at_ms};
        /* the audit target is the new token's id, which the operation writes */
        return tb_identity_admin_run(conn, actor, "token.create", token_id_out,
                                     tb_identity_token_create_op, &req, errstr, errstr_size);
}

static tb_err_t tb_identity_token_revoke_op(PGconn *conn, const tb_identity_admin_req_t *req,
                                            json_t **details, char *errstr,
                                            size_t errstr_size) {
        tb_store_identity_token_state_t st;
        bool found = false;
        tb_err_t err;
        if ((err = tb_store_identity_token_lock(conn, req->token_id, &found, &st, errstr,
                                                errstr_size)))
                return err;
        if (!found)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "no token '%s'; list tokens with: taskbus admin token list",
                                 req->token_id);
        if (st.revoked) {
                char at[32];
                tb_time_format(st.revoked_ms, at);
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "token %s was already revoked at %s", req->token_id, at);
                goto done;
        }
        if ((err = tb_store_identity_token_revoke(conn, req->token_id, errstr, errstr_size)))
                goto done;
        *details = json_pack("{s:s}", "user", st.user_id);
done:
        free(st.user_id);
        return err;
}

tb_err_t tb_identity_token_revoke(PGconn *conn, const char *actor, const char *token_id,
                                  char *errstr, size_t errstr_size) {
        size_t len = token_id ? strlen(token_id) : 0;

        if (len >= TB_TOKEN_PREFIX_LEN && !strncmp(token_id, TB_TOKEN_PREFIX, TB_TOKEN_PREFIX_LEN))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "token id: that is a secret token, not a token id; pass its "
                                 "id (tok_...) as shown by: taskbus admin token list USER");
        if (len != 4 + TB_TOKEN_ID_HEX || strncmp(token_id, TB_TOKEN_ID_PREFIX, 4) != 0 ||
            !tb_identity_is_lower_hex(token_id + 4, TB_TOKEN_ID_HEX)) {
                char q[64];
                tb_identity_quote(token_id, q, sizeof(q));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "token id '%s' is invalid: expected '" TB_TOKEN_ID_PREFIX
                                 "' followed by %d lowercase hex digits, as shown by: "
                                 "taskbus admin token list",
                                 q, TB_TOKEN_ID_HEX);
        }
        const tb_identity_admin_req_t req = {.token_id = token_id};
        return tb_identity_admin_run(conn, actor, "token.revoke", token_id,
                                     tb_identity_token_revoke_op, &req, errstr, errstr_size);
}

/* A membership change (\p op) of \p user_id in \p group, audited as
 * \p action on the group. */
static tb_err_t tb_identity_membership_run(PGconn *conn, const char *actor, const char *action,
                                           tb_identity_admin_op_t op, const char *group,
                                           const char *user_id, char *errstr,
                                           size_t errstr_size) {
        tb_err_t err;
        if ((err = tb_identity_name_check("group name", group, errstr, errstr_size)) ||
            (err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        const tb_identity_admin_req_t req = {.group = group, .user_id = user_id};
        return tb_identity_admin_run(conn, actor, action, group, op, &req, errstr, errstr_size);
}

static tb_err_t tb_identity_group_add_member_op(PGconn *conn, const tb_identity_admin_req_t *req,
                                                json_t **details, char *errstr,
                                                size_t errstr_size) {
        bool found = false, created = false;
        tb_err_t err;
        if ((err = tb_store_identity_user_get(conn, req->user_id, TB_STORE_IDENTITY_FOR_SHARE,
                                              &found, NULL, errstr, errstr_size)))
                return err;
        if (!found)
                return tb_identity_no_user(req->user_id, errstr, errstr_size);
        if ((err = tb_store_identity_group_insert(conn, req->group, &created, errstr,
                                                  errstr_size)))
                return err;
        if ((err = tb_store_identity_member_add(conn, req->group, req->user_id, &found, errstr,
                                                errstr_size)))
                return err;
        if (!found)
                return tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                 "user '%s' is already a member of group '%s'", req->user_id,
                                 req->group);
        *details = json_pack("{s:s, s:b}", "user", req->user_id, "created_group", created);
        return TB_OK;
}

tb_err_t tb_identity_group_add_member(PGconn *conn, const char *actor, const char *group,
                                      const char *user_id, char *errstr, size_t errstr_size) {
        return tb_identity_membership_run(conn, actor, "group.add-member",
                                          tb_identity_group_add_member_op, group, user_id,
                                          errstr, errstr_size);
}

static tb_err_t tb_identity_group_remove_member_op(PGconn *conn,
                                                   const tb_identity_admin_req_t *req,
                                                   json_t **details, char *errstr,
                                                   size_t errstr_size) {
        bool found = false;
        tb_err_t err;
        if ((err = tb_store_identity_member_remove(conn, req->group, req->user_id, &found,
                                                   errstr, errstr_size)))
                return err;
        if (!found) {
                bool user = false, grp = false;
                if ((err = tb_store_identity_user_get(conn, req->user_id, TB_STORE_IDENTITY_NO_LOCK,
                                                      &user, NULL, errstr, errstr_size)) ||
                    (err = tb_store_identity_group_exists(conn, req->group, &grp, errstr,
                                                          errstr_size)))
                        return err;
                if (!user)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND, "no user '%s'",
                                        req->user_id);
                else if (!grp)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                        "no group '%s'; list groups with: taskbus admin group list",
                                        req->group);
                else
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                        "user '%s' is not a member of group '%s'", req->user_id,
                                        req->group);
                return err;
        }
        *details = json_pack("{s:s}", "user", req->user_id);
        return TB_OK;
}

tb_err_t tb_identity_group_remove_member(PGconn *conn, const char *actor, const char *group,
                                         const char *user_id, char *errstr, size_t errstr_size) {
        return tb_identity_membership_run(conn, actor, "group.remove-member",
                                          tb_identity_group_remove_member_op, group, user_id,
                                          errstr, errstr_size);
}

/* ---- group quotas ----------------------------------------------------------- */

static json_t *tb_identity_quota_json(const tb_store_group_quota_t *q) {
        return json_pack("{s:o, s:o, s:o}", "max_tasks",
                         q->max_tasks < 0 ? json_null() : json_integer(q->max_tasks),
                         "max_running",
                         q->max_running < 0 ? json_null() : json_integer(q->max_running),
                         "run_now_rate",
                         q->run_now_rate < 0 ? json_null() : json_real(q->run_now_rate));
}

static tb_err_t tb_identity_group_quota_op(PGconn *conn, const tb_identity_admin_req_t *req,
                                           json_t **details, char *errstr,
                                           size_t errstr_size) {
        bool found = false;
        tb_store_group_quota_t before;
        tb_err_t err;
        if ((err = tb_store_identity_quota_get(conn, req->group, &found, &before, errstr,
                                               errstr_size)) ||
            (found && (err = tb_store_identity_quota_set(conn, req->group, req->quota, &found,
                                                         req->quota_out, errstr,
                                                         errstr_size))))
                return err;
        if (!found)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "no group '%s'; list groups with: taskbus admin group list "
                                 "(a group is created by: taskbus admin group add-member)",
                                 req->group);
        *details = json_pack("{s:o, s:o}", "before", tb_identity_quota_json(&before), "after",
                             tb_identity_quota_json(req->quota_out));
        return TB_OK;
}

tb_err_t tb_identity_group_quota_set(PGconn *conn, const char *actor, const char *group,
                                     const tb_store_group_quota_t *set,
                                     tb_store_group_quota_t *now, char *errstr,
                                     size_t errstr_size) {
        tb_err_t err;
        if ((err = tb_identity_name_check("group name", group, errstr, errstr_size)))
                return err;
        static const char *const names[] = {"--max-tasks", "--max-running"};
        const int64_t counts[] = {set->max_tasks, set->max_running};
        for (size_t i = 0; i < TB_ARRAY_LEN(counts); i++)
                if ((counts[i] < 0 && counts[i] != TB_STORE_QUOTA_UNLIMITED &&
                     counts[i] != TB_STORE_QUOTA_KEEP) || counts[i] > INT32_MAX)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: %lld is not a count from 0 to %d (or "
                                         "\"unlimited\")",
                                         names[i], (long long)counts[i], INT32_MAX);
        if (!(set->run_now_rate > 0) && set->run_now_rate != TB_STORE_QUOTA_UNLIMITED &&
            set->run_now_rate != TB_STORE_QUOTA_KEEP)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "--run-now-rate: must be above 0 (or \"unlimited\")");
        const tb_identity_admin_req_t req = {.group = group, .quota = set, .quota_out = now};
        return tb_identity_admin_run(conn, actor, "group.set-quota", group,
                                     tb_identity_group_quota_op, &req, errstr, errstr_size);
}
