/**
 * @file api/admin.c
 * @brief The admin routes under /v1/admin/ (docs/api.md, "Administration"):
 *        users (list, create, disable, enable), groups and membership (list,
 *        add, remove a member), tokens (list a user's, create, revoke) and
 *        the admin log, for members of api.admin_group only.
 *
 * Every change is one of lib/identity's audited operations, the functions
 * behind `taskbus admin user|token|group` (cli/identity.c): the change and
 * its admin_audit row commit together, and the actor is the signed-in
 * user's id where the CLI writes the OS user and host. The listings are the
 * store's, as the CLI prints them, reshaped for JSON (RFC 3339 times, lists
 * as arrays). A change of who may do what (disable, enable, revoke, a
 * membership) also empties this process's authentication cache, so it
 * takes effect here at once and on other api processes within the cache
 * time (1 s).
 *
 * Order of the checks: authentication (api.c's hook), then admin
 * membership (403 on every route for anyone else), then the input (400
 * naming the field), then the operation.
 */
#include "api/admin.h"
#include "api/api_internal.h"
#include "api/util.h"
#include "identity/identity.h"
#include "store/audit.h"
#include "store/identity.h"
#include "units.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/** Longest body of an admin write: a user with many groups fits easily. */
#define TB_API_ADMIN_BODY_MAX 16384
/** Most groups a user is created in at once. */
#define TB_API_ADMIN_GROUPS_MAX 64
#define TB_API_ADMIN_AUDIT_DEFAULT 50
#define TB_API_ADMIN_AUDIT_MAX 500
/** Longest actor and action filter, in characters (an actor is at most 512 bytes). */
#define TB_API_ADMIN_FILTER_MAX 512

bool tb_api_admin_member(const tb_api_t *api, const tb_principal_t *p) {
        const char *ag = api->ctx->conf->api_admin_group;
        return ag && *ag && tb_principal_in_group(p, ag);
}

bool tb_api_admin_allowed(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp) {
        const tb_principal_t *p = tb_api_principal(req);
        const char *ag = api->ctx->conf->api_admin_group;
        if (tb_api_admin_member(api, p))
                return true;
        if (!ag || !*ag)
                tb_http_error(resp, 403, "forbidden", NULL,
                              "the admin API is off: api.admin_group is not set in taskbusd's "
                              "configuration; set it to the security group of the "
                              "administrators (docs/console.md), or use `taskbus admin`");
        else
                tb_http_error(resp, 403, "forbidden", NULL,
                              "user '%s' is not an admin: /v1/admin/ needs membership of group "
                              "'%s' (api.admin_group); an admin grants it with: taskbus admin "
                              "group add-member %s %s",
                              p->user_id, ag, ag, p->user_id);
        return false;
}

/* ---- input ---------------------------------------------------------------------- */

/* Is path parameter \p i (named \p field) a valid user or group name?
 * Answers 400 naming it when not. */
static bool tb_api_admin_name_param(tb_http_req_t *req, tb_http_resp_t *resp, int i,
                                    const char *field) {
        char err[300];
        if (tb_identity_name_check(field, req->params[i], err, sizeof(err)) == TB_OK)
                return true;
        tb_http_error(resp, 400, "invalid_argument", field, "%s", err);
        return false;
}

/**
 * The body as a JSON object whose fields are all in \p known
 * (NULL-terminated); an empty body is {}. NULL with a 400 answered, \p how
 * saying what to send.
 */
static json_t *tb_api_admin_body(tb_http_req_t *req, tb_http_resp_t *resp,
                                 const char *const *known, const char *how) {
        if (req->body.len == 0)
                return json_object();
        if (req->body.len > TB_API_ADMIN_BODY_MAX) {
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "the body is larger than %d bytes: %s", TB_API_ADMIN_BODY_MAX, how);
                return NULL;
        }
        json_error_t je;
        json_t *j = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &je);
        if (!j) {
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "malformed JSON at line %d, column %d: %s; %s", je.line, je.column,
                              je.text, how);
                return NULL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "the body must be a JSON object: %s", how);
                return NULL;
        }
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
                bool ok = false;
                for (size_t i = 0; known[i] && !ok; i++)
                        ok = !strcmp(known[i], key);
                if (ok)
                        continue;
                char q[64];
                tb_snprintf(q, sizeof(q), "%s", key);
                for (char *ch = q; *ch; ch++) /* it goes into a message */
                        if ((unsigned char)*ch < 0x20 || (unsigned char)*ch >= 0x7f)
                                *ch = '?';
                tb_http_error(resp, 400, "invalid_argument", q, "unknown field '%s': %s", q, how);
                json_decref(j);
                return NULL;
        }
        return j;
}

/* The prologue of an admin write: the caller is an admin, path parameter 0
 * (when \p param names it) is a valid name, the body has only \p known
 * fields. @returns the body (caller decrefs), or NULL with the answer given. */
static json_t *tb_api_admin_write(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                  const char *param, const char *const *known, const char *how) {
        if (!tb_api_admin_allowed(api, req, resp) ||
            (param && !tb_api_admin_name_param(req, resp, 0, param)))
                return NULL;
        return tb_api_admin_body(req, resp, known, how);
}

/* The prologue of an admin route without a body or query parameters: the
 * caller is an admin, the query is empty, path parameters 0 and 1 (those
 * \p param0, \p param1 name; NULL: none) are valid names. @returns a pool
 * connection (the caller releases it), or NULL with the answer given. */
static PGconn *tb_api_admin_begin(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                  const char *param0, const char *param1) {
        static const char *const none[] = {NULL};
        if (!tb_api_admin_allowed(api, req, resp) ||
            !tb_api_query_check(req, resp, none, "none", NULL, NULL) ||
            (param0 && !tb_api_admin_name_param(req, resp, 0, param0)) ||
            (param1 && !tb_api_admin_name_param(req, resp, 1, param1)))
                return NULL;
        return tb_api_conn(api, resp);
}

/* String field \p name of \p body, checked as a user or group name (400
 * naming it when missing or invalid). */
static const char *tb_api_admin_name_field(tb_http_resp_t *resp, const json_t *body,
                                           const char *name, const char *how) {
        json_t *v = json_object_get(body, name);
        char err[300];
        if (!json_is_string(v)) {
                tb_http_error(resp, 400, "invalid_argument", name,
                              "field '%s' is missing or not a string: %s", name, how);
                return NULL;
        }
        if (tb_identity_name_check(name, json_string_value(v), err, sizeof(err))) {
                tb_http_error(resp, 400, "invalid_argument", name, "%s", err);
                return NULL;
        }
        return json_string_value(v);
}

/* Answer the failure \p e of an identity operation: 400, 404 or 409 with
 * its message (naming \p field), else logged and 503 (PostgreSQL) or 500. */
static void tb_api_admin_fail(tb_http_resp_t *resp, tb_err_t e, const char *field,
                              const char *err) {
        switch (e) {
        case TB_ERR_INVALID:
                tb_http_error(resp, 400, "invalid_argument", field, "%s", err);
                break;
        case TB_ERR_NOT_FOUND:
                tb_http_error(resp, 404, "not_found", field, "%s", err);
                break;
        case TB_ERR_CONFLICT:
                tb_http_error(resp, 409, "conflict", field, "%s", err);
                break;
        case TB_ERR_PG:
        case TB_ERR_TIMEOUT:
                tb_api_db_error(resp, err);
                break;
        default:
                tb_warn(TB_API_SUB, "admin: %s", err);
                tb_http_error(resp, 500, "internal", NULL,
                              "the admin operation failed (the server logged why)");
        }
}

/* ---- output ---------------------------------------------------------------------- */

/* Epoch ms as an RFC 3339 string. */
static json_t *tb_api_admin_ms(int64_t ms) {
        char buf[32];
        tb_time_format(ms, buf);
        return json_string(buf);
}

/* Epoch ms (a JSON integer of the store's rows; anything else is null) as
 * an RFC 3339 string. */
static json_t *tb_api_admin_time(const json_t *ms) {
        return json_is_integer(ms) ? tb_api_admin_ms((int64_t)json_integer_value(ms))
                                   : json_null();
}

/* Replace the epoch ms fields \p keys (NULL-terminated) of \p row by RFC 3339. */
static void tb_api_admin_times(json_t *row, const char *const *keys) {
        for (size_t i = 0; keys[i]; i++)
                json_object_set_new(row, keys[i], tb_api_admin_time(json_object_get(row, keys[i])));
}

/* The store's "a,b" list (field \p key of \p row, "" for none) as a JSON
 * array, stored under \p as. */
static void tb_api_admin_split(json_t *row, const char *key, const char *as) {
        const char *s = json_string_value(json_object_get(row, key));
        json_t *a = json_array();
        while (s && *s) {
                const char *c = strchr(s, ',');
                size_t n = c ? (size_t)(c - s) : strlen(s);
                json_array_append_new(a, json_stringn(s, n));
                s = c ? c + 1 : NULL;
        }
        json_object_set_new(row, as, a);
}

/* Answer a listing of the store (\p list, one of tb_store_identity_*_list
 * without arguments) as {"<items>": rows reshaped by \p shape}. */
static void tb_api_admin_listing(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                 tb_err_t (*list)(PGconn *, json_t **, char *, size_t),
                                 const char *items, void (*shape)(json_t *row)) {
        char err[512];
        json_t *rows = NULL, *row;
        size_t i;
        PGconn *c = tb_api_admin_begin(api, req, resp, NULL, NULL);
        if (!c)
                return;
        tb_err_t e = list(c, &rows, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, NULL, err);
                return;
        }
        json_array_foreach(rows, i, row) shape(row);
        tb_http_json(resp, 200, json_pack("{s:o}", items, rows));
}

/* ---- users ----------------------------------------------------------------------- */

static void tb_api_admin_user_shape(json_t *row) {
        static const char *const times[] = {"created_at", NULL};
        tb_api_admin_times(row, times);
        tb_api_admin_split(row, "groups", "groups");
}

void tb_api_admin_users_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_admin_listing(app, req, resp, tb_store_identity_user_list, "users",
                             tb_api_admin_user_shape);
}

/* The groups of a new user: \p v must be an array of 1 to
 * TB_API_ADMIN_GROUPS_MAX names, into \p out. @returns the count, or 0
 * with a 400 answered. */
static size_t tb_api_admin_groups_arg(tb_http_resp_t *resp, const json_t *v,
                                      const char *out[TB_API_ADMIN_GROUPS_MAX]) {
        size_t n = json_array_size(v);
        if (!json_is_array(v) || n == 0 || n > TB_API_ADMIN_GROUPS_MAX) {
                tb_http_error(resp, 400, "invalid_argument", "groups",
                              "field 'groups' must be an array of 1 to %d security group names, "
                              "e.g. [\"ops\"]: a user sees only the tasks of its groups",
                              TB_API_ADMIN_GROUPS_MAX);
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                char field[32], err[300];
                tb_snprintf(field, sizeof(field), "groups[%zu]", i);
                const char *g = json_string_value(json_array_get(v, i));
                if (tb_identity_name_check(field, g, err, sizeof(err))) {
                        tb_http_error(resp, 400, "invalid_argument", field, "%s",
                                      g ? err : "a group name must be a string");
                        return 0;
                }
                out[i] = g;
        }
        return n;
}

void tb_api_admin_users_create(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"id", "groups", NULL};
        static const char how[] = "send {\"id\": \"alice\", \"groups\": [\"ops\"]}";
        tb_api_t *api = app;
        json_t *body = tb_api_admin_write(api, req, resp, NULL, known, how);
        if (!body)
                return;
        const char *groups[TB_API_ADMIN_GROUPS_MAX];
        const char *id = tb_api_admin_name_field(resp, body, "id", how);
        size_t n = id ? tb_api_admin_groups_arg(resp, json_object_get(body, "groups"), groups) : 0;
        PGconn *c = n ? tb_api_conn(api, resp) : NULL;
        if (!c) {
                json_decref(body);
                return;
        }
        char token[72], token_id[32], err[1024];
        tb_err_t e = tb_identity_user_create(c, tb_api_principal(req)->user_id, id, groups, n,
                                             token, token_id, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, e == TB_ERR_CONFLICT ? "id" : NULL, err);
                json_decref(body);
                return;
        }
        tb_info(TB_API_SUB, "admin '%s' created user '%s' with token %s",
                tb_api_principal(req)->user_id, id, token_id);
        json_t *j = json_pack("{s:s, s:O, s:s, s:s}", "id", id, "groups",
                              json_object_get(body, "groups"), "token_id", token_id, "token",
                              token);
        explicit_bzero(token, sizeof(token));
        json_decref(body);
        tb_http_add_header(resp, "Cache-Control", "no-store");
        tb_http_json(resp, 201, j);
}

static void tb_api_admin_users_set(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                   bool disabled) {
        PGconn *c = tb_api_admin_begin(api, req, resp, "user", NULL);
        if (!c)
                return;
        char err[1024];
        const char *user = req->params[0];
        tb_err_t e = tb_identity_user_disable(c, tb_api_principal(req)->user_id, user, disabled,
                                              err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, "user", err);
                return;
        }
        tb_identity_cache_clear(); /* its tokens stop (or work again) here at once */
        tb_http_json(resp, 200, json_pack("{s:s, s:b}", "id", user, "disabled", disabled));
}

void tb_api_admin_users_disable(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_admin_users_set(app, req, resp, true);
}

void tb_api_admin_users_enable(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_admin_users_set(app, req, resp, false);
}

/* ---- tokens ---------------------------------------------------------------------- */

void tb_api_admin_tokens_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const times[] = {"created_at", "revoked_at", "last_used_at",
                                            "expires_at", NULL};
        tb_api_t *api = app;
        PGconn *c = tb_api_admin_begin(api, req, resp, "user", NULL);
        if (!c)
                return;
        const char *user = req->params[0];
        char err[512];
        bool found = false;
        json_t *rows = NULL, *row;
        size_t i;
        tb_err_t e = tb_store_identity_user_get(c, user, TB_STORE_IDENTITY_NO_LOCK, &found, NULL,
                                                err, sizeof(err));
        if (!e && found)
                e = tb_store_identity_token_list(c, user, &rows, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, NULL, err);
                return;
        }
        if (!found) {
                tb_http_error(resp, 404, "not_found", "user",
                              "no user '%s'; the users are listed by GET /v1/admin/users", user);
                return;
        }
        json_array_foreach(rows, i, row) tb_api_admin_times(row, times);
        tb_http_json(resp, 200, json_pack("{s:o}", "tokens", rows));
}

void tb_api_admin_tokens_create(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"expires", NULL};
        static const char how[] = "send {} for a token that never expires, or {\"expires\": "
                                  "\"90d\"} (a duration)";
        tb_api_t *api = app;
        json_t *body = tb_api_admin_write(api, req, resp, "user", known, how);
        if (!body)
                return;
        char err[1024] = "";
        int64_t ttl_ms = 0;
        json_t *exp = json_object_get(body, "expires");
        const char *bad = NULL;
        if (exp && !json_is_null(exp)) {
                if (!json_is_string(exp))
                        bad = "not a string";
                else if (tb_units_duration_parse(json_string_value(exp), &ttl_ms, err,
                                                 sizeof(err)))
                        bad = err;
                else if (ttl_ms <= 0)
                        bad = "must be a positive duration";
        }
        json_decref(body);
        if (bad) {
                tb_http_error(resp, 400, "invalid_argument", "expires", "expires: %s; %s", bad,
                              how);
                return;
        }
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return;
        const char *user = req->params[0];
        int64_t expires_ms = ttl_ms ? tb_now_ms() + ttl_ms : 0;
        char token[72], token_id[32];
        tb_err_t e = tb_identity_token_create_expiring(c, tb_api_principal(req)->user_id, user,
                                                       expires_ms, token, token_id, err,
                                                       sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, "user", err);
                return;
        }
        tb_info(TB_API_SUB, "admin '%s' created token %s of user '%s'",
                tb_api_principal(req)->user_id, token_id, user);
        json_t *j = json_pack("{s:s, s:s, s:s, s:o}", "id", token_id, "user_id", user, "token",
                              token, "expires_at",
                              expires_ms ? tb_api_admin_ms(expires_ms) : json_null());
        explicit_bzero(token, sizeof(token));
        tb_http_add_header(resp, "Cache-Control", "no-store");
        tb_http_json(resp, 201, j);
}

void tb_api_admin_tokens_revoke(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        PGconn *c = tb_api_admin_begin(api, req, resp, NULL, NULL);
        if (!c)
                return;
        char err[1024];
        tb_err_t e = tb_identity_token_revoke(c, tb_api_principal(req)->user_id, req->params[0],
                                              err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, "token_id", err);
                return;
        }
        tb_identity_cache_clear(); /* the token, and its console sessions, stop here at once */
        tb_info(TB_API_SUB, "admin '%s' revoked token %s", tb_api_principal(req)->user_id,
                req->params[0]);
        resp->status = 204;
        resp->body.len = 0;
}

/* ---- groups and membership -------------------------------------------------------- */

static void tb_api_admin_group_shape(json_t *row) {
        tb_api_admin_split(row, "users", "members");
        json_object_del(row, "users");
}

void tb_api_admin_groups_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_admin_listing(app, req, resp, tb_store_identity_group_list, "groups",
                             tb_api_admin_group_shape);
}

void tb_api_admin_members_add(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"user", NULL};
        static const char how[] = "send {\"user\": \"alice\"}";
        tb_api_t *api = app;
        json_t *body = tb_api_admin_write(api, req, resp, "group", known, how);
        if (!body)
                return;
        const char *user = tb_api_admin_name_field(resp, body, "user", how);
        PGconn *c = user ? tb_api_conn(api, resp) : NULL;
        if (!c) {
                json_decref(body);
                return;
        }
        char err[1024];
        const char *group = req->params[0];
        tb_err_t e = tb_identity_group_add_member(c, tb_api_principal(req)->user_id, group, user,
                                                  err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, "user", err);
        } else {
                tb_identity_cache_clear(); /* the member sees the group here at once */
                tb_http_json(resp, 201, json_pack("{s:s, s:s}", "group", group, "user", user));
        }
        json_decref(body);
}

void tb_api_admin_members_remove(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        PGconn *c = tb_api_admin_begin(api, req, resp, "group", "user");
        if (!c)
                return;
        char err[1024];
        tb_err_t e = tb_identity_group_remove_member(c, tb_api_principal(req)->user_id,
                                                     req->params[0], req->params[1], err,
                                                     sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, NULL, err);
                return;
        }
        tb_identity_cache_clear(); /* the member loses the group here at once */
        resp->status = 204;
        resp->body.len = 0;
}

/* ---- the admin log ------------------------------------------------------------------ */

/* ?actor and ?action: 1 to TB_API_ADMIN_FILTER_MAX characters of UTF-8
 * without C0 controls or DEL (what the schema states). */
static bool tb_api_admin_filter_arg(void *ud, const char *key, const char *value, char *bad,
                                    size_t bad_size) {
        (void)ud;
        if (strcmp(key, "actor") && strcmp(key, "action"))
                return true;
        json_t *utf8 = value ? json_string(value) : NULL; /* NULL: not valid UTF-8 */
        size_t chars = 0;
        bool ok = utf8 != NULL;
        json_decref(utf8);
        for (const unsigned char *c = (const unsigned char *)value; ok && *c; c++) {
                ok = *c >= 0x20 && *c != 0x7f;
                chars += (*c & 0xc0) != 0x80;
        }
        if (!ok || chars == 0 || chars > TB_API_ADMIN_FILTER_MAX) {
                tb_snprintf(bad, bad_size,
                            "%s: expected 1 to %d characters of UTF-8 without control "
                            "characters: an exact %s as the log shows it, e.g. %s",
                            key, TB_API_ADMIN_FILTER_MAX, key,
                            strcmp(key, "actor") ? "action=token.revoke" : "actor=alice");
                return false;
        }
        return true;
}

static json_t *tb_api_admin_audit_row(PGresult *r, int i) {
        json_error_t je;
        json_t *details = json_loads(PQgetvalue(r, i, TB_AC_DETAILS), 0, &je);
        return json_pack("{s:I, s:o, s:s, s:s, s:s, s:o}", "id",
                         (json_int_t)strtoll(PQgetvalue(r, i, TB_AC_ID), NULL, 10), "at",
                         tb_api_admin_ms(strtoll(PQgetvalue(r, i, TB_AC_AT), NULL, 10)),
                         "actor", PQgetvalue(r, i, TB_AC_ACTOR), "action",
                         PQgetvalue(r, i, TB_AC_ACTION), "target", PQgetvalue(r, i, TB_AC_TARGET),
                         "details", details ? details : json_object());
}

void tb_api_admin_audit(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"actor", "action", "limit", "cursor", NULL};
        tb_api_t *api = app;
        int64_t limit = TB_API_ADMIN_AUDIT_DEFAULT;
        tb_api_cursor_t cur;
        bool has_cur = false;
        if (!tb_api_admin_allowed(api, req, resp) ||
            !tb_api_query_check(req, resp, known, "actor, action, limit, cursor",
                                tb_api_admin_filter_arg, NULL) ||
            !tb_api_query_int(req, resp, "limit", 1, TB_API_ADMIN_AUDIT_MAX, &limit) ||
            !tb_api_query_cursor(req, resp, TB_API_CURSOR_AUDIT, &cur, &has_cur))
                return;
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return;
        char lim[24], err[512];
        PGresult *r = NULL;
        tb_snprintf(lim, sizeof(lim), "%" PRId64, limit + 1);
        tb_err_t e = tb_store_audit_page(c, has_cur ? cur.key : NULL, tb_http_query(req, "actor"),
                                         tb_http_query(req, "action"), lim, &r, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_admin_fail(resp, e, NULL, err);
                return;
        }
        json_t *page = tb_api_page(resp, r, limit, "entries", tb_api_admin_audit_row,
                                   TB_API_CURSOR_AUDIT, TB_AC_ID, -1);
        PQclear(r);
        if (page)
                tb_http_json(resp, 200, page);
}
