/**
 * @file test_console_sessions.c
 * @brief The web console's sign-in through real HTTP against a taskbusd
 *        child (commands, projector, api) on a private stack: the cookie's
 *        flags, GET /v1/me, sign-out, a revoked token ending its session, an
 *        expired session refused, cookie writes without the CSRF header
 *        refused, another group's tasks invisible with a session as with a
 *        bearer token, bad sign-ins, and the compiled-in files at /ui/.
 */
#include <criterion/criterion.h>

#include "identity/identity.h"
#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tbt_console_t con;
static char alice[96], bob[96];

#define expect_status(r, want)                                                                \
        cr_assert_eq((r).status, (want), "%s:%d: expected %d, got %ld: %s", __FILE__,          \
                     __LINE__, (want), (r).status, (r).body.data)

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_console_start_with(&con, "commands,projector,api",
                               "session_ttl = \"1h\"; admin_group = \"ops\";");
        tbt_stack_user(&con.st, "alice", "ga,ops", alice);
        tbt_stack_user(&con.st, "bob", "gb", bob);
}

static void teardown(void) {
        tbt_console_stop(&con);
        curl_global_cleanup();
}

TestSuite(console_sessions, .init = setup, .fini = teardown, .timeout = 300);

/* ---- helpers ---------------------------------------------------------------------- */

typedef tbt_session_t session_t;

static session_t sign_in(const char *authz, const char *extra_header) {
        return tbt_session_sign_in(con.port, authz, extra_header);
}

static tbt_http_res_t with_session(const session_t *s, const char *method, const char *path,
                                   const char *body, bool with_csrf, const char *csrf_value) {
        return tbt_session_http(con.port, s, method, path, body, with_csrf, csrf_value);
}

static bool has_attr(const char *set_cookie, const char *attr) {
        char buf[320];
        snprintf(buf, sizeof(buf), "%s;", set_cookie);
        char want[64];
        snprintf(want, sizeof(want), "; %s;", attr);
        return strstr(buf, want) != NULL;
}

/* ---- tests ------------------------------------------------------------------------- */

Test(console_sessions, cookie_flags_me_and_sign_out) {
        session_t s = sign_in(alice, NULL);
        cr_assert(has_attr(s.set_cookie, "HttpOnly"), "%s", s.set_cookie);
        cr_assert(has_attr(s.set_cookie, "SameSite=Strict"), "%s", s.set_cookie);
        cr_assert(has_attr(s.set_cookie, "Path=/"), "%s", s.set_cookie);
        cr_assert(has_attr(s.set_cookie, "Max-Age=3600"), "api.session_ttl: %s", s.set_cookie);
        cr_assert(!has_attr(s.set_cookie, "Secure"), "plain HTTP: %s", s.set_cookie);
        /* behind a TLS reverse proxy the cookie is Secure */
        session_t tls = sign_in(alice, "X-Forwarded-Proto: https");
        cr_assert(has_attr(tls.set_cookie, "Secure"), "%s", tls.set_cookie);

        /* stored as a hash only, expiring after api.session_ttl */
        char sql[800];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM console_sessions WHERE id_hash = sha256('%s'::bytea) "
                 "AND expires_at - created_at = interval '1 hour'", s.id);
        char *v = tbt_sql_value(&con.st, sql);
        cr_assert_str_eq(v, "1");
        free(v);
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM console_sessions WHERE position('%s'::bytea in id_hash) > 0",
                 s.id + 4);
        v = tbt_sql_value(&con.st, sql);
        cr_assert_str_eq(v, "0", "the session id itself is stored");
        free(v);

        tbt_http_res_t r = with_session(&s, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "user")), "alice");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "auth")), "session");
        cr_assert(json_is_true(json_object_get(r.j, "admin")), "alice is in ops: %s", r.body.data);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "csrf")), s.csrf);
        json_t *g = json_object_get(r.j, "groups");
        cr_assert_eq(json_array_size(g), 2);
        cr_assert_str_eq(json_string_value(json_array_get(g, 0)), "ga");
        cr_assert_str_eq(json_string_value(json_array_get(g, 1)), "ops");
        char cc[64];
        cr_assert_str_eq(tbt_http_header(&r, "Cache-Control", cc, sizeof(cc)), "no-store");
        tbt_http_free(&r);

        /* bob, with his bearer token: not an admin, no csrf */
        r = tbt_http(con.port, "GET", "/v1/me", bob, NULL);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "user")), "bob");
        cr_assert(json_is_false(json_object_get(r.j, "admin")));
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "auth")), "token");
        cr_assert_null(json_object_get(r.j, "csrf"));
        tbt_http_free(&r);

        /* sign-out is a write: it needs the CSRF header too */
        r = with_session(&s, "DELETE", "/v1/session", NULL, false, NULL);
        expect_status(r, 403);
        tbt_http_free(&r);
        r = with_session(&s, "DELETE", "/v1/session", NULL, true, NULL);
        expect_status(r, 204);
        char sc[300];
        tbt_http_header(&r, "Set-Cookie", sc, sizeof(sc));
        cr_assert(!strncmp(sc, "taskbus_session=;", 17) && has_attr(sc, "Max-Age=0"),
                  "the cookie is not cleared: %s", sc);
        tbt_http_free(&r);
        /* the old cookie is useless now, on every route */
        r = with_session(&s, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 401);
        cr_assert(strstr(r.body.data, "sign in again"), "%s", r.body.data);
        tbt_http_free(&r);
        r = with_session(&s, "GET", "/v1/tasks", NULL, false, NULL);
        expect_status(r, 401);
        tbt_http_free(&r);
        /* the other session of alice is not affected */
        r = with_session(&tls, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 200);
        tbt_http_free(&r);
        /* a bearer token has no session to sign out */
        r = tbt_http(con.port, "DELETE", "/v1/session", alice, NULL);
        expect_status(r, 404);
        tbt_http_free(&r);
}

Test(console_sessions, revoked_token_and_expiry_end_sessions) {
        session_t a = sign_in(alice, NULL), b = sign_in(bob, NULL);
        tbt_http_res_t r = with_session(&a, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 200);
        tbt_http_free(&r);

        /* revoking alice's token ends her session (within the 1 s auth cache) */
        char *tid = tbt_sql_value(&con.st, "SELECT id FROM api_tokens WHERE user_id = 'alice'");
        char err[512];
        cr_assert_eq(tb_identity_token_revoke(con.st.conn, "test", tid, err, sizeof(err)), TB_OK,
                     "%s", err);
        free(tid);
        long status = 0;
        for (int i = 0; i < 40 && status != 401; i++) {
                r = with_session(&a, "GET", "/v1/me", NULL, false, NULL);
                status = r.status;
                if (status == 401)
                        cr_assert(strstr(r.body.data, "revoked"), "%s", r.body.data);
                tbt_http_free(&r);
                if (status != 401)
                        usleep(100 * 1000);
        }
        cr_assert_eq(status, 401, "a revoked token's session still works");

        /* bob's session past its expiry is refused, though his token is fine */
        r = with_session(&b, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 200);
        tbt_http_free(&r);
        char sql[800];
        snprintf(sql, sizeof(sql),
                 "UPDATE console_sessions SET expires_at = now() - interval '1 second' "
                 "WHERE id_hash = sha256('%s'::bytea) RETURNING 1", b.id);
        char *v = tbt_sql_value(&con.st, sql);
        cr_assert_str_eq(v, "1");
        free(v);
        r = with_session(&b, "GET", "/v1/me", NULL, false, NULL);
        expect_status(r, 401);
        cr_assert(strstr(r.body.data, "expired"), "%s", r.body.data);
        tbt_http_free(&r);
        r = tbt_http(con.port, "GET", "/v1/me", bob, NULL);
        expect_status(r, 200);
        tbt_http_free(&r);
        /* a new sign-in purges expired sessions */
        session_t b2 = sign_in(bob, NULL);
        (void)b2;
        v = tbt_sql_value(&con.st,
                          "SELECT count(*) FROM console_sessions WHERE expires_at <= now()");
        cr_assert_str_eq(v, "0");
        free(v);
        /* a revoked token cannot sign in */
        char body[200];
        snprintf(body, sizeof(body), "{\"token\": \"%s\"}", alice + 7);
        r = tbt_http(con.port, "POST", "/v1/session", NULL, body);
        expect_status(r, 401);
        tbt_http_free(&r);
}

Test(console_sessions, csrf_and_groups) {
        session_t a = sign_in(alice, NULL), b = sign_in(bob, NULL);
        const char *task = "{\"name\":\"console-1\",\"script\":\"/bin/true\","
                           "\"security_group\":\"ga\",\"schedule\":{\"every\":\"1h\"}}";
        /* a cookie write without the header, or with a wrong one, is refused */
        tbt_http_res_t r = with_session(&a, "POST", "/v1/tasks", task, false, NULL);
        expect_status(r, 403);
        cr_assert(strstr(r.body.data, "csrf_required") && strstr(r.body.data, "X-Taskbus-CSRF"),
                  "%s", r.body.data);
        tbt_http_free(&r);
        r = with_session(&a, "POST", "/v1/tasks", task, true, b.csrf); /* bob's value */
        expect_status(r, 403);
        tbt_http_free(&r);
        char *n = tbt_sql_value(&con.st, "SELECT count(*) FROM tasks");
        cr_assert_str_eq(n, "0", "a refused write reached the tasks");
        free(n);
        r = with_session(&a, "POST", "/v1/tasks", task, true, NULL);
        expect_status(r, 201);
        char id[64];
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.j, "id")));
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "created_by")), "alice");
        tbt_http_free(&r);

        /* the same group rule as bearer tokens: alice sees it, bob does not */
        r = with_session(&a, "GET", "/v1/tasks?name_prefix=console", NULL, false, NULL);
        expect_status(r, 200);
        cr_assert(strstr(r.body.data, id), "%s", r.body.data);
        tbt_http_free(&r);
        r = with_session(&b, "GET", "/v1/tasks", NULL, false, NULL);
        expect_status(r, 200);
        cr_assert_null(strstr(r.body.data, id), "bob sees alice's task: %s", r.body.data);
        tbt_http_free(&r);
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        r = with_session(&b, "GET", path, NULL, false, NULL);
        expect_status(r, 404);
        tbt_http_free(&r);
        snprintf(path, sizeof(path), "/v1/tasks/%s/pause", id);
        r = with_session(&b, "POST", path, NULL, true, NULL);
        expect_status(r, 404);
        tbt_http_free(&r);
        /* bob cannot create in alice's group with his session either */
        r = with_session(&b, "POST", "/v1/tasks", task, true, NULL);
        expect_status(r, 403);
        cr_assert(strstr(r.body.data, "security_group"), "%s", r.body.data);
        tbt_http_free(&r);
        /* a bearer token takes precedence over a cookie and needs no CSRF header */
        char ah[120];
        snprintf(ah, sizeof(ah), "Authorization: %s", alice);
        const char *hdrs[] = {b.cookie, ah, NULL};
        snprintf(path, sizeof(path), "/v1/tasks/%s/pause", id);
        r = tbt_http_with(con.port, "POST", path, hdrs, NULL);
        expect_status(r, 200);
        tbt_http_free(&r);
}

Test(console_sessions, bad_sign_ins) {
        static const struct {
                const char *body;
                int status;
                const char *says;
        } cases[] = {
                {"", 400, "not a JSON object"},
                {"[]", 400, "not a JSON object"},
                {"{}", 400, "'token' is missing"},
                {"{\"token\": 3}", 400, "'token' is missing"},
                {"{\"token\": \"x\", \"user\": \"alice\"}", 400, "unknown field 'user'"},
                {"{\"token\": \"tbk_nothex\"}", 401, "malformed token"},
                {"{\"token\": \"tbk_0000000000000000000000000000000000000000000000000000000000000000\"}",
                 401, "unknown token"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                tbt_http_res_t r =
                        tbt_http(con.port, "POST", "/v1/session", NULL, cases[i].body);
                cr_assert_eq(r.status, cases[i].status, "%s: %ld %s", cases[i].body, r.status,
                             r.body.data);
                cr_assert(strstr(r.body.data, cases[i].says), "%s: %s", cases[i].body,
                          r.body.data);
                char sc[64];
                cr_assert_str_eq(tbt_http_header(&r, "Set-Cookie", sc, sizeof(sc)), "(missing)");
                tbt_http_free(&r);
        }
        /* a cookie that is no session */
        const char *hdrs[] = {"Cookie: taskbus_session=tbs_0123", NULL};
        tbt_http_res_t r = tbt_http_with(con.port, "GET", "/v1/me", hdrs, NULL);
        expect_status(r, 401);
        cr_assert(strstr(r.body.data, "malformed session cookie"), "%s", r.body.data);
        tbt_http_free(&r);
        char *v = tbt_sql_value(&con.st, "SELECT count(*) FROM console_sessions");
        cr_assert_str_eq(v, "0");
        free(v);
}

Test(console_sessions, ui_files) {
        tbt_http_res_t r = tbt_http(con.port, "GET", "/ui/", NULL, NULL);
        expect_status(r, 200);
        char h[300], etag[80];
        cr_assert_str_eq(tbt_http_header(&r, "Content-Type", h, sizeof(h)),
                         "text/html; charset=utf-8");
        tbt_http_header(&r, "Content-Security-Policy", h, sizeof(h));
        cr_assert(strstr(h, "script-src 'self'") && strstr(h, "default-src 'none'") &&
                          !strstr(h, "unsafe-inline") && strstr(h, "frame-ancestors 'none'"),
                  "CSP: %s", h);
        cr_assert_str_eq(tbt_http_header(&r, "X-Content-Type-Options", h, sizeof(h)), "nosniff");
        cr_assert_str_eq(tbt_http_header(&r, "Cache-Control", h, sizeof(h)), "no-cache");
        tbt_http_header(&r, "ETag", etag, sizeof(etag));
        cr_assert(etag[0] == '"', "ETag: %s", etag);
        cr_assert(strstr(r.body.data, "<script src=\"app.js\""), "%s", r.body.data);
        cr_assert_null(strstr(r.body.data, "<script>"), "an inline script");
        tbt_http_free(&r);

        char inm[120];
        snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
        const char *hdrs[] = {inm, NULL};
        r = tbt_http_with(con.port, "GET", "/ui/index.html", hdrs, NULL);
        expect_status(r, 304);
        cr_assert_eq(r.body.len, 0);
        tbt_http_free(&r);

        r = tbt_http(con.port, "GET", "/ui/app.js", NULL, NULL);
        expect_status(r, 200);
        cr_assert_str_eq(tbt_http_header(&r, "Content-Type", h, sizeof(h)),
                         "text/javascript; charset=utf-8");
        tbt_http_free(&r);
        r = tbt_http(con.port, "GET", "/ui/app.css", NULL, NULL);
        expect_status(r, 200);
        cr_assert_str_eq(tbt_http_header(&r, "Content-Type", h, sizeof(h)),
                         "text/css; charset=utf-8");
        tbt_http_free(&r);

        r = tbt_http(con.port, "GET", "/ui", NULL, NULL);
        expect_status(r, 308);
        cr_assert_str_eq(tbt_http_header(&r, "Location", h, sizeof(h)), "/ui/");
        tbt_http_free(&r);
        static const char *const outside[] = {
                "/ui/nothing.js", "/ui/..%2f..%2fetc%2fpasswd",
                "/ui/%2e%2e/config", "/ui/sub/app.js", "/ui/.hidden",
        };
        for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
                r = tbt_http(con.port, "GET", outside[i], NULL, NULL);
                cr_assert(r.status == 404 || r.status == 400, "%s: %ld %s", outside[i], r.status,
                          r.body.data);
                cr_assert_null(strstr(r.body.data, "root:"), "%s", outside[i]);
                tbt_http_free(&r);
        }
}
