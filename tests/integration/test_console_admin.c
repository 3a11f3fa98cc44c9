/**
 * @file test_console_admin.c
 * @brief The admin API (/v1/admin/...) and the console's admin screens
 *        against a taskbusd child (the api role) on a private stack with
 *        api.admin_group = "admins": every route refused to a non-admin
 *        (403) and without authentication (401) and writing nothing; users,
 *        tokens and membership changed through it, each with its
 *        admin_audit row naming the signed-in admin; a token shown once,
 *        usable, then revoked: 401 and its console session ended; the
 *        admin log's filters and keyset pages; bad input answered 400
 *        naming the field. Then tests/console/console_admin.py in headless
 *        Chromium (as test_console_browser.c): an admin creates a user and
 *        a token in the screens and the token works; a non-admin sees no
 *        admin link and gets 403.
 */
#include <criterion/criterion.h>

#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tbt_console_t con;
static char root[96], bob[96];

#define expect_status(r, want)                                                                \
        cr_assert_eq((r).status, (want), "%s:%d: expected %d, got %ld: %s", __FILE__,          \
                     __LINE__, (want), (r).status, (r).body.data)

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_console_start_with(&con, "api", "admin_group = \"admins\";");
        tbt_stack_user(&con.st, "root", "admins,ga", root);
        tbt_stack_user(&con.st, "bob", "gb", bob);
}

static void teardown(void) {
        tbt_console_stop(&con);
        curl_global_cleanup();
}

TestSuite(console_admin, .init = setup, .fini = teardown, .timeout = 300);

/* ---- helpers ---------------------------------------------------------------------- */

static tbt_http_res_t as(const char *authz, const char *method, const char *path,
                         const char *body) {
        return tbt_http(con.port, method, path, authz, body);
}

/* \p method \p path as \p authz answers \p status. */
static void expect(const char *authz, const char *method, const char *path, const char *body,
                   long status) {
        tbt_http_res_t r = as(authz, method, path, body);
        cr_assert_eq(r.status, status, "%s %s %s: expected %ld, got %ld: %s", method, path,
                     body ? body : "", status, r.status, r.body.data);
        tbt_http_free(&r);
}

/* The answer's error field (or "" when there is none). */
static const char *err_field(const tbt_http_res_t *r) {
        const char *f = json_string_value(json_object_get(json_object_get(r->j, "error"), "field"));
        return f ? f : "";
}

/* \p method \p path as \p authz must answer 400 naming \p field. */
static void expect_bad(const char *authz, const char *method, const char *path, const char *body,
                       const char *field) {
        tbt_http_res_t r = as(authz, method, path, body);
        cr_assert_eq(r.status, 400, "%s %s %s: expected 400, got %ld: %s", method, path,
                     body ? body : "", r.status, r.body.data);
        cr_assert_str_eq(err_field(&r), field, "%s %s %s: %s", method, path, body ? body : "",
                         r.body.data);
        tbt_http_free(&r);
}

static char *sql(const char *fmt, const char *a, const char *b) {
        char q[600];
        snprintf(q, sizeof(q), fmt, a, b);
        return tbt_sql_value(&con.st, q);
}

static long audit_count(void) {
        char *v = tbt_sql_value(&con.st, "SELECT count(*) FROM admin_audit");
        long n = strtol(v, NULL, 10);
        free(v);
        return n;
}

/* The newest admin_audit row is \p action on \p target by \p actor. */
static void expect_audit(const char *actor, const char *action, const char *target) {
        char *v = tbt_sql_value(&con.st, "SELECT actor || ' ' || action || ' ' || target "
                                     "FROM admin_audit ORDER BY id DESC LIMIT 1");
        char want[300];
        snprintf(want, sizeof(want), "%s %s %s", actor, action, target);
        cr_assert_str_eq(v ? v : "(no row)", want, "the newest admin_audit row");
        free(v);
}

/* A new token's answer: the token ("tbk_" + 64 hex) and its id. */
static void token_of(const tbt_http_res_t *r, const char *token_key, char authz[96],
                     char id[32], const char *id_key) {
        const char *t = json_string_value(json_object_get(r->j, token_key));
        const char *i = json_string_value(json_object_get(r->j, id_key));
        cr_assert(t && strlen(t) == 68 && !strncmp(t, "tbk_", 4), "no token in %s", r->body.data);
        cr_assert(i && !strncmp(i, "tok_", 4), "no token id in %s", r->body.data);
        char cc[64];
        cr_assert_str_eq(tbt_http_header(r, "Cache-Control", cc, sizeof(cc)), "no-store");
        snprintf(authz, 96, "Bearer %s", t);
        snprintf(id, 32, "%s", i);
}

/* GET /v1/me as \p authz answers \p status (and, for 200, the user \p user). */
static void expect_me(const char *authz, long status, const char *user) {
        tbt_http_res_t r = as(authz, "GET", "/v1/me", NULL);
        cr_assert_eq(r.status, status, "GET /v1/me: %ld %s", r.status, r.body.data);
        if (status == 200)
                cr_assert_str_eq(json_string_value(json_object_get(r.j, "user")), user);
        tbt_http_free(&r);
}

/* ---- the API ------------------------------------------------------------------------- */

static const struct {
        const char *method, *path, *body;
} routes[] = {
        {"GET", "/v1/admin/users", NULL},
        {"POST", "/v1/admin/users", "{\"id\": \"mallory\", \"groups\": [\"admins\"]}"},
        {"POST", "/v1/admin/users/root/disable", NULL},
        {"POST", "/v1/admin/users/bob/enable", NULL},
        {"GET", "/v1/admin/users/root/tokens", NULL},
        {"POST", "/v1/admin/users/root/tokens", "{}"},
        {"POST", "/v1/admin/tokens/tok_0123456789ab/revoke", NULL},
        {"GET", "/v1/admin/groups", NULL},
        {"POST", "/v1/admin/groups/admins/members", "{\"user\": \"bob\"}"},
        {"DELETE", "/v1/admin/groups/admins/members/root", NULL},
        {"GET", "/v1/admin/audit", NULL},
};

Test(console_admin, non_admins_get_403_and_change_nothing) {
        long before = audit_count();
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
                tbt_http_res_t r = as(bob, routes[i].method, routes[i].path, routes[i].body);
                cr_assert_eq(r.status, 403, "%s %s as bob: %ld %s", routes[i].method,
                             routes[i].path, r.status, r.body.data);
                cr_assert(strstr(r.body.data, "not an admin") &&
                                  strstr(r.body.data, "api.admin_group") &&
                                  strstr(r.body.data, "add-member admins bob"),
                          "the 403 says why and how: %s", r.body.data);
                tbt_http_free(&r);
                r = as(NULL, routes[i].method, routes[i].path, routes[i].body);
                cr_assert_eq(r.status, 401, "%s %s without a token: %ld %s", routes[i].method,
                             routes[i].path, r.status, r.body.data);
                tbt_http_free(&r);
        }
        /* bad input from a non-admin is still 403: nothing is checked for him */
        expect(bob, "POST", "/v1/admin/users", "{\"id\": \"a b\"}", 403);
        cr_assert_eq(audit_count(), before, "a refused request wrote to admin_audit");
        char *v = sql("SELECT count(*) FROM users WHERE id = '%s'%s", "mallory", "");
        cr_assert_str_eq(v, "0");
        free(v);
        v = sql("SELECT disabled::text FROM users WHERE id = '%s'%s", "root", "");
        cr_assert_str_eq(v, "false");
        free(v);
        /* root is still an admin and bob is not: the memberships did not change */
        v = sql("SELECT string_agg(user_id, ',') FROM group_members WHERE group_name = '%s'%s",
                "admins", "");
        cr_assert_str_eq(v, "root");
        free(v);
        expect(root, "GET", "/v1/admin/groups", NULL, 200);
}

Test(console_admin, users_tokens_groups_audited_revoke_ends_session) {
        /* an admin signed in to the console: its writes need the CSRF header */
        tbt_session_t s = tbt_session_sign_in(con.port, root, NULL);
        const char *carol_body = "{\"id\": \"carol\", \"groups\": [\"gc\", \"gd\"]}";
        tbt_http_res_t r = tbt_session_http(con.port, &s, "POST", "/v1/admin/users", carol_body,
                                            false, NULL);
        expect_status(r, 403);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.j, "error"), "code")),
                         "csrf_required");
        tbt_http_free(&r);
        r = tbt_session_http(con.port, &s, "POST", "/v1/admin/users", carol_body, true, NULL);
        expect_status(r, 201);
        char carol[96], carol_id[32];
        token_of(&r, "token", carol, carol_id, "token_id");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "id")), "carol");
        tbt_http_free(&r);
        expect_audit("root", "user.create", "carol");
        /* the token works, with carol's groups */
        r = as(carol, "GET", "/v1/me", NULL);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "user")), "carol");
        cr_assert_eq(json_array_size(json_object_get(r.j, "groups")), 2, "%s", r.body.data);
        cr_assert(json_is_false(json_object_get(r.j, "admin")));
        tbt_http_free(&r);
        /* the user list shows it; its token list has ids and no secret */
        r = as(root, "GET", "/v1/admin/users", NULL);
        expect_status(r, 200);
        json_t *u, *users = json_object_get(r.j, "users");
        size_t i;
        bool seen = false;
        json_array_foreach(users, i, u) {
                if (strcmp(json_string_value(json_object_get(u, "id")), "carol"))
                        continue;
                seen = true;
                cr_assert(json_is_false(json_object_get(u, "disabled")));
                json_t *g = json_object_get(u, "groups");
                cr_assert_eq(json_array_size(g), 2);
                cr_assert_str_eq(json_string_value(json_array_get(g, 0)), "gc");
                cr_assert_str_eq(json_string_value(json_array_get(g, 1)), "gd");
                const char *at = json_string_value(json_object_get(u, "created_at"));
                cr_assert(at && strlen(at) >= 20 && at[10] == 'T', "created_at: %s",
                          at ? at : "null");
        }
        cr_assert(seen, "carol is not listed: %s", r.body.data);
        tbt_http_free(&r);
        r = as(root, "GET", "/v1/admin/users/carol/tokens", NULL);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "tokens")), 1, "%s", r.body.data);
        json_t *first = json_array_get(json_object_get(r.j, "tokens"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(first, "id")), carol_id);
        cr_assert_null(strstr(r.body.data, carol + 7), "a token list shows the secret");
        cr_assert_null(strstr(r.body.data, "tbk_"), "a token list shows a secret");
        tbt_http_free(&r);
        r = as(root, "POST", "/v1/admin/users", carol_body);
        expect_status(r, 409);
        cr_assert_str_eq(err_field(&r), "id");
        tbt_http_free(&r);

        /* a second token, expiring, shown once; carol opens a console session with it */
        r = as(root, "POST", "/v1/admin/users/carol/tokens", "{\"expires\": \"1h\"}");
        expect_status(r, 201);
        char carol2[96], carol2_id[32];
        token_of(&r, "token", carol2, carol2_id, "id");
        const char *exp = json_string_value(json_object_get(r.j, "expires_at"));
        cr_assert_not_null(exp, "%s", r.body.data);
        int64_t exp_ms = 0;
        char terr[128];
        cr_assert_eq(tb_time_parse(exp, &exp_ms, terr, sizeof(terr)), TB_OK, "%s", exp);
        cr_assert(llabs((long long)(exp_ms - tb_now_ms() - 3600000)) < 120000,
                  "expires_at %s is not in 1 h", exp);
        tbt_http_free(&r);
        expect_audit("root", "token.create", carol2_id);
        char *v = sql("SELECT (expires_at IS NOT NULL)::text FROM api_tokens WHERE id = '%s'%s",
                      carol2_id, "");
        cr_assert_str_eq(v, "true");
        free(v);
        tbt_session_t cs = tbt_session_sign_in(con.port, carol2, NULL);
        r = tbt_session_http(con.port, &cs, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 200);
        tbt_http_free(&r);
        expect_me(carol2, 200, "carol");

        /* revoke it: the token and the session opened with it end at once; the first stays */
        char path[200];
        snprintf(path, sizeof(path), "/v1/admin/tokens/%s/revoke", carol2_id);
        r = tbt_session_http(con.port, &s, "POST", path, NULL, true, NULL);
        expect_status(r, 204);
        tbt_http_free(&r);
        expect_audit("root", "token.revoke", carol2_id);
        expect_me(carol2, 401, NULL);
        r = tbt_session_http(con.port, &cs, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 401);
        cr_assert(strstr(r.body.data, "session"), "%s", r.body.data);
        tbt_http_free(&r);
        expect_me(carol, 200, "carol");
        expect(root, "POST", path, NULL, 409);
        r = as(root, "GET", "/v1/admin/users/carol/tokens", NULL);
        expect_status(r, 200);
        json_t *t, *tokens = json_object_get(r.j, "tokens");
        json_array_foreach(tokens, i, t) {
                bool revoked = !strcmp(json_string_value(json_object_get(t, "id")), carol2_id);
                cr_assert_eq(json_is_string(json_object_get(t, "revoked_at")), revoked, "%s",
                             r.body.data);
                cr_assert_eq(json_is_string(json_object_get(t, "expires_at")), revoked, "%s",
                             r.body.data);
        }
        tbt_http_free(&r);

        /* disable and enable carol */
        r = as(root, "POST", "/v1/admin/users/carol/disable", NULL);
        expect_status(r, 200);
        cr_assert(json_is_true(json_object_get(r.j, "disabled")), "%s", r.body.data);
        tbt_http_free(&r);
        expect_audit("root", "user.disable", "carol");
        expect_me(carol, 401, NULL);
        r = as(root, "POST", "/v1/admin/users/carol/enable", NULL);
        expect_status(r, 200);
        cr_assert(json_is_false(json_object_get(r.j, "disabled")), "%s", r.body.data);
        tbt_http_free(&r);
        expect_audit("root", "user.enable", "carol");
        expect_me(carol, 200, "carol");
        expect(root, "POST", "/v1/admin/users/nobody/disable", NULL, 404);

        /* membership: added (the group created), listed, seen at once, removed */
        expect(root, "POST", "/v1/admin/groups/gx/members", "{\"user\": \"carol\"}", 201);
        expect_audit("root", "group.add-member", "gx");
        r = as(carol, "GET", "/v1/me", NULL);
        cr_assert(strstr(r.body.data, "\"gx\""), "carol is not in gx at once: %s", r.body.data);
        tbt_http_free(&r);
        r = as(root, "GET", "/v1/admin/groups", NULL);
        expect_status(r, 200);
        json_t *g, *groups = json_object_get(r.j, "groups");
        seen = false;
        json_array_foreach(groups, i, g) {
                if (strcmp(json_string_value(json_object_get(g, "name")), "gx"))
                        continue;
                seen = true;
                json_t *m = json_object_get(g, "members");
                cr_assert_eq(json_array_size(m), 1, "%s", r.body.data);
                cr_assert_str_eq(json_string_value(json_array_get(m, 0)), "carol");
        }
        cr_assert(seen, "gx is not listed: %s", r.body.data);
        tbt_http_free(&r);
        expect(root, "POST", "/v1/admin/groups/gx/members", "{\"user\": \"carol\"}", 409);
        r = as(root, "POST", "/v1/admin/groups/gx/members", "{\"user\": \"nobody\"}");
        expect_status(r, 404);
        cr_assert_str_eq(err_field(&r), "user");
        tbt_http_free(&r);
        expect(root, "DELETE", "/v1/admin/groups/gx/members/carol", NULL, 204);
        expect_audit("root", "group.remove-member", "gx");
        r = as(carol, "GET", "/v1/me", NULL);
        cr_assert_null(strstr(r.body.data, "\"gx\""), "carol is still in gx: %s", r.body.data);
        tbt_http_free(&r);
        expect(root, "DELETE", "/v1/admin/groups/gx/members/carol", NULL, 404);

        /* every change above is one row by root, with the details the CLI writes */
        v = sql("SELECT count(*) FROM admin_audit WHERE actor = 'root'%s%s", "", "");
        cr_assert_str_eq(v, "7", "admin_audit rows by root");
        free(v);
        v = sql("SELECT details->>'user' FROM admin_audit WHERE action = 'token.revoke' AND "
                "target = '%s'%s",
                carol2_id, "");
        cr_assert_str_eq(v, "carol");
        free(v);
}

Test(console_admin, audit_log_pages_and_filters) {
        /* 2 rows by "tester" (the users of setup), then 5 by root */
        for (int i = 0; i < 5; i++) {
                char body[100];
                snprintf(body, sizeof(body), "{\"id\": \"u%d\", \"groups\": [\"gu\"]}", i);
                expect(root, "POST", "/v1/admin/users", body, 201);
        }
        /* pages of 2 by root: newest first, no repeat, the cursor to the end */
        char path[600] = "/v1/admin/audit?actor=root&limit=2";
        long last_id = -1;
        int seen = 0, pages = 0;
        for (;;) {
                tbt_http_res_t r = as(root, "GET", path, NULL);
                expect_status(r, 200);
                json_t *e, *entries = json_object_get(r.j, "entries");
                size_t i;
                cr_assert_leq(json_array_size(entries), 2);
                json_array_foreach(entries, i, e) {
                        long id = (long)json_integer_value(json_object_get(e, "id"));
                        cr_assert(last_id < 0 || id < last_id, "not newest first: %s",
                                  r.body.data);
                        last_id = id;
                        cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "root");
                        cr_assert_str_eq(json_string_value(json_object_get(e, "action")),
                                         "user.create");
                        char want[16];
                        snprintf(want, sizeof(want), "u%d", 4 - seen);
                        cr_assert_str_eq(json_string_value(json_object_get(e, "target")), want);
                        cr_assert(json_is_object(json_object_get(e, "details")), "%s",
                                  r.body.data);
                        cr_assert(json_is_string(json_object_get(e, "at")));
                        seen++;
                }
                pages++;
                const char *next = json_string_value(json_object_get(r.j, "next_cursor"));
                if (!next) {
                        tbt_http_free(&r);
                        break;
                }
                snprintf(path, sizeof(path), "/v1/admin/audit?actor=root&limit=2&cursor=%s", next);
                tbt_http_free(&r);
                cr_assert_lt(pages, 10, "the pages do not end");
        }
        cr_assert_eq(seen, 5);
        cr_assert_eq(pages, 3);
        /* the action filter and the rows of the library's other callers */
        tbt_http_res_t r = as(root, "GET", "/v1/admin/audit?action=user.create&actor=tester", NULL);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "entries")), 2, "%s", r.body.data);
        cr_assert(json_is_null(json_object_get(r.j, "next_cursor")));
        tbt_http_free(&r);
        r = as(root, "GET", "/v1/admin/audit?action=token.revoke", NULL);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "entries")), 0, "%s", r.body.data);
        tbt_http_free(&r);
        /* a cursor of another list, or made up */
        expect_bad(root, "GET", "/v1/admin/audit?cursor=bm90LWEtY3Vyc29y", NULL, "cursor");
        expect_bad(root, "GET", "/v1/admin/audit?limit=0", NULL, "limit");
        expect_bad(root, "GET", "/v1/admin/audit?limit=501", NULL, "limit");
        expect_bad(root, "GET", "/v1/admin/audit?actor=", NULL, "actor");
        expect_bad(root, "GET", "/v1/admin/audit?who=root", NULL, "who");
}

Test(console_admin, bad_input_is_400_naming_the_field) {
        long before = audit_count();
        static const struct {
                const char *method, *path, *body, *field;
        } cases[] = {
                {"POST", "/v1/admin/users", "{\"id\": \"a b\", \"groups\": [\"g\"]}", "id"},
                {"POST", "/v1/admin/users", "{\"id\": 7, \"groups\": [\"g\"]}", "id"},
                {"POST", "/v1/admin/users", "{\"groups\": [\"g\"]}", "id"},
                {"POST", "/v1/admin/users", "{\"id\": \"dave\"}", "groups"},
                {"POST", "/v1/admin/users", "{\"id\": \"dave\", \"groups\": []}", "groups"},
                {"POST", "/v1/admin/users", "{\"id\": \"dave\", \"groups\": \"ops\"}", "groups"},
                {"POST", "/v1/admin/users", "{\"id\": \"dave\", \"groups\": [\"ok\", \"x/y\"]}",
                 "groups[1]"},
                {"POST", "/v1/admin/users", "{\"id\": \"dave\", \"groups\": [\"ok\", 3]}",
                 "groups[1]"},
                {"POST", "/v1/admin/users", "{\"id\": \"dave\", \"groups\": [\"g\"], \"x\": 1}",
                 "x"},
                {"POST", "/v1/admin/users", "[\"dave\"]", ""},
                {"POST", "/v1/admin/users", "{\"id\": ", ""},
                {"POST", "/v1/admin/users/root/tokens", "{\"expires\": \"soon\"}", "expires"},
                {"POST", "/v1/admin/users/root/tokens", "{\"expires\": \"0s\"}", "expires"},
                {"POST", "/v1/admin/users/root/tokens", "{\"expires\": 90}", "expires"},
                {"POST", "/v1/admin/users/root/tokens", "{\"ttl\": \"1h\"}", "ttl"},
                {"POST", "/v1/admin/users/a%20b/tokens", "{}", "user"},
                {"GET", "/v1/admin/users/a%20b/tokens", NULL, "user"},
                {"POST", "/v1/admin/users/a%20b/disable", NULL, "user"},
                {"POST", "/v1/admin/groups/gx/members", "{}", "user"},
                {"POST", "/v1/admin/groups/gx/members", "{\"user\": \"\"}", "user"},
                {"POST", "/v1/admin/groups/a%20b/members", "{\"user\": \"bob\"}", "group"},
                {"DELETE", "/v1/admin/groups/gx/members/a%20b", NULL, "user"},
                {"POST", "/v1/admin/tokens/tok_XYZ/revoke", NULL, "token_id"},
                {"GET", "/v1/admin/users?x=1", NULL, "x"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                expect_bad(root, cases[i].method, cases[i].path, cases[i].body, cases[i].field);
        /* the secret token instead of its id: refused without being echoed */
        char path[200];
        snprintf(path, sizeof(path), "/v1/admin/tokens/%s/revoke", bob + 7);
        tbt_http_res_t r = as(root, "POST", path, NULL);
        expect_status(r, 400);
        cr_assert_str_eq(err_field(&r), "token_id");
        cr_assert_null(strstr(r.body.data, bob + 11), "the secret is echoed: %s", r.body.data);
        tbt_http_free(&r);
        expect_me(bob, 200, "bob");
        cr_assert_eq(audit_count(), before, "refused input wrote to admin_audit");
}

/* ---- the screens ------------------------------------------------------------------------ */

Test(console_admin, browser_admin_screens) {
        char env[600];
        snprintf(env, sizeof(env),
                 "TB_ADMIN='%s' TB_OTHER='%s' TB_SHOTS='%s/artefacts/console_admin'", root + 7,
                 bob + 7, tbt_build_dir());
        tbt_console_browser(&con, "console_admin.py", env, "console_admin");
        /* what the screens did is in the log, by the admin who did it */
        char *v = sql("SELECT count(*) FROM admin_audit WHERE actor = 'root' AND "
                      "action IN ('user.create', 'token.create', 'token.revoke')%s%s",
                      "", "");
        cr_assert_str_eq(v, "3", "the screens' actions in admin_audit");
        free(v);
}
