/**
 * @file test_identity.c
 * @brief core/lib/identity/ (identity.h) against a real PostgreSQL: users, tokens and
 *        groups, bearer authentication (formats, unknown, revoked, disabled),
 *        the authentication cache, last_used_at throttling, the audit trail
 *        and its transactionality, tokens never stored in plain text, and
 *        concurrent authentication.
 *
 * Each test gets a throwaway database (tbtest_id_<random>) on
 * $TB_TEST_PG (default postgresql://taskbus@127.0.0.1:55432), migrated with
 * tb_store_migrate() and dropped afterwards.
 */
#include "identity/identity.h"
#include "support.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACTOR "tester@testhost"

static char g_base[512];
static char g_db[64];
static tb_config_t *g_conf;
static tb_store_t *g_store;
static PGconn *g_conn; /* borrowed from g_store for the admin calls */

static void admin_sql(const char *sql) {
        char url[600];
        snprintf(url, sizeof(url), "%s/postgres", g_base);
        PGconn *c = PQconnectdb(url);
        cr_assert_eq(PQstatus(c), CONNECTION_OK, "cannot connect to %s: %s", url,
                     PQerrorMessage(c));
        PGresult *r = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
}

static void setup(void) {
        char err[1024], sql[128];
        unsigned char rnd[6];
        tbt_pg_server(g_base, sizeof(g_base));
        cr_assert_eq(tb_random_bytes(rnd, sizeof(rnd)), TB_OK);
        snprintf(g_db, sizeof(g_db), "tbtest_id_%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5]);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", g_db);
        admin_sql(sql);

        g_conf = tb_config_defaults();
        cr_assert_not_null(g_conf);
        free(g_conf->pg_url);
        cr_assert_gt(asprintf(&g_conf->pg_url, "%s/%s", g_base, g_db), 0);
        g_conf->pg_pool_size = 4;
        cr_assert_eq(tb_store_open(g_conf, &g_store, err, sizeof(err)), TB_OK, "%s", err);
        g_conn = tb_store_acquire(g_store);
        cr_assert_not_null(g_conn);
        cr_assert_eq(tb_store_migrate(g_conn, NULL, err, sizeof(err)), TB_OK, "%s", err);
        tb_identity_cache_clear();
}

static void teardown(void) {
        char sql[128];
        tb_identity_cache_clear();
        if (g_store) {
                tb_store_release(g_store, g_conn);
                tb_store_destroy(g_store);
        }
        tb_config_destroy(g_conf);
        if (*g_db) {
                snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_db);
                admin_sql(sql);
        }
}

TestSuite(identity, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------- */

static void create_user(const char *user, const char *const *groups, size_t n,
                        char token[72], char id[32]) {
        char err[1024];
        tb_err_t e = tb_identity_user_create(g_conn, ACTOR, user, groups, n, token, id, err,
                                             sizeof(err));
        cr_assert_eq(e, TB_OK, "user create %s: %s", user, err);
}

static tb_principal_t *auth_ok(const char *header, int64_t cache_ms) {
        char err[1024];
        tb_principal_t *p = NULL;
        tb_err_t e = tb_identity_authenticate(g_store, header, cache_ms, &p, err, sizeof(err));
        cr_assert_eq(e, TB_OK, "authenticate: %s (%s)", err, tb_err_name(e));
        cr_assert_not_null(p);
        return p;
}

/* Authentication must fail as unauthenticated with \p needle in the message. */
static void auth_fails(const char *header, int64_t cache_ms, const char *needle) {
        char err[1024] = "";
        tb_principal_t *p = (tb_principal_t *)0x1;
        tb_err_t e = tb_identity_authenticate(g_store, header, cache_ms, &p, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_UNAUTHENTICATED, "expected unauthenticated, got %s: %s",
                     tb_err_name(e), err);
        cr_assert_null(p);
        cr_assert(strstr(err, needle), "message '%s' lacks '%s'", err, needle);
}

static char *query1(const char *sql, int n, const char *const *params) {
        char err[1024];
        PGresult *r = NULL;
        cr_assert_eq(tb_store_exec(g_conn, "test query", sql, n, params, &r, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(PQntuples(r), 1, "%s: %d rows", sql, PQntuples(r));
        char *v = strdup(PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
        PQclear(r);
        return v;
}

static long count_rows(const char *sql, int n, const char *const *params) {
        char *v = query1(sql, n, params);
        long c = strtol(v, NULL, 10);
        free(v);
        return c;
}

static void bearer(char out[96], const char *token) { snprintf(out, 96, "Bearer %s", token); }

/* ---- tests --------------------------------------------------------------- */

Test(identity, create_user_and_authenticate) {
        const char *groups[] = {"ops", "dev"};
        char token[72], id[32], hdr[96];
        create_user("alice", groups, 2, token, id);
        cr_assert_eq(strlen(token), 68, "token '%s'", token);
        cr_assert_eq(strncmp(token, "tbk_", 4), 0);
        cr_assert_eq(strlen(id), 16, "id '%s'", id);
        cr_assert_eq(strncmp(id, "tok_", 4), 0);

        bearer(hdr, token);
        tb_principal_t *p = auth_ok(hdr, 0);
        cr_assert_str_eq(p->user_id, "alice");
        cr_assert_str_eq(p->token_id, id);
        cr_assert_eq(p->group_cnt, 2);
        cr_assert_str_eq(p->groups[0], "dev");
        cr_assert_str_eq(p->groups[1], "ops");
        cr_assert(tb_principal_in_group(p, "ops"));
        cr_assert(tb_principal_in_group(p, "dev"));
        cr_assert_not(tb_principal_in_group(p, "op"));
        cr_assert_not(tb_principal_in_group(p, NULL));

        tb_principal_t *d = tb_principal_dup(p);
        tb_principal_free(p);
        cr_assert_str_eq(d->user_id, "alice");
        cr_assert_str_eq(d->groups[1], "ops");
        tb_principal_free(d);

        /* bare token, scheme in any case, extra whitespace */
        p = auth_ok(token, 0);
        cr_assert_str_eq(p->user_id, "alice");
        tb_principal_free(p);
        char loose[128];
        snprintf(loose, sizeof(loose), "  bearer \t %s \r\n", token);
        p = auth_ok(loose, 0);
        cr_assert_str_eq(p->user_id, "alice");
        tb_principal_free(p);

        /* the second token of the same user works too, with its own id */
        char t2[72], id2[32], err[1024];
        cr_assert_eq(tb_identity_token_create(g_conn, ACTOR, "alice", t2, id2, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_str_neq(t2, token);
        cr_assert_str_neq(id2, id);
        p = auth_ok(t2, 0);
        cr_assert_str_eq(p->token_id, id2);
        tb_principal_free(p);
}

Test(identity, groups_are_sorted_and_deduplicated) {
        const char *groups[] = {"zeta", "beta", "Alpha", "alpha", "beta", "a.b-c_d@e"};
        char token[72], id[32];
        create_user("bob", groups, 6, token, id);
        tb_principal_t *p = auth_ok(token, 0);
        const char *want[] = {"Alpha", "a.b-c_d@e", "alpha", "beta", "zeta"};
        cr_assert_eq(p->group_cnt, 5, "%zu groups", p->group_cnt);
        for (size_t i = 0; i < 5; i++)
                cr_assert_str_eq(p->groups[i], want[i], "group %zu", i);
        for (size_t i = 0; i < 5; i++)
                cr_assert(tb_principal_in_group(p, want[i]));
        tb_principal_free(p);

        /* a user in no group authenticates with an empty list */
        create_user("loner", NULL, 0, token, id);
        p = auth_ok(token, 0);
        cr_assert_eq(p->group_cnt, 0);
        cr_assert_not(tb_principal_in_group(p, "ops"));
        tb_principal_free(p);
}

Test(identity, wrong_and_malformed_credentials) {
        const char *groups[] = {"ops"};
        char token[72], id[32], hdr[96];
        create_user("carol", groups, 1, token, id);

        /* well-formed but never issued: one changed digit */
        char wrong[72];
        memcpy(wrong, token, sizeof(wrong));
        wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
        bearer(hdr, wrong);
        auth_fails(hdr, 0, "unknown token");
        auth_fails(hdr, 60000, "unknown token");
        char err[1024];
        tb_principal_t *p = NULL;
        tb_identity_authenticate(g_store, hdr, 0, &p, err, sizeof(err));
        cr_assert_null(strstr(err, wrong + 4), "the message must not echo the secret");

        auth_fails(NULL, 0, "missing credentials");
        auth_fails("", 0, "missing credentials");
        auth_fails("   ", 0, "missing credentials");
        auth_fails("Bearer", 0, "missing token after 'Bearer'");
        auth_fails("Bearer   ", 0, "missing token after"); /* trimmed to "Bearer" */
        auth_fails("Basic YWxpY2U6cGFzcw==", 0, "unsupported authorization scheme 'Basic'");
        auth_fails("Bearer tbk_1234", 0, "malformed token");
        auth_fails("Bearer abc", 0, "malformed token");
        char upper[96];
        snprintf(upper, sizeof(upper), "Bearer %s", token);
        for (char *c = upper + 11; *c; c++)
                if (*c >= 'a' && *c <= 'f')
                        *c = (char)(*c - 'a' + 'A');
        auth_fails(upper, 0, "malformed token");
        char longer[200];
        snprintf(longer, sizeof(longer), "Bearer %s0", token);
        auth_fails(longer, 0, "malformed token");
        snprintf(longer, sizeof(longer), "Bearer %s %s", token, token);
        auth_fails(longer, 0, "malformed token");
        /* binary junk and a huge header: an error, never a crash */
        auth_fails("Bearer \x01\x02\xff", 0, "malformed token");
        auth_fails("\xc3\xa9\xff junk", 0, "malformed credentials");
        char *huge = malloc(100001);
        memset(huge, 'a', 100000);
        huge[100000] = '\0';
        auth_fails(huge, 0, "longer than");
        free(huge);

        /* the right one still works after all that */
        tb_principal_t *ok = auth_ok(token, 0);
        tb_principal_free(ok);
}

Test(identity, revoked_token) {
        const char *groups[] = {"ops"};
        char token[72], id[32], err[1024];
        create_user("dave", groups, 1, token, id);
        tb_principal_free(auth_ok(token, 0));

        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, id, err, sizeof(err)), TB_OK, "%s",
                     err);
        auth_fails(token, 0, "revoked");
        auth_fails(token, 0, id);

        /* revoking twice says when; unknown and malformed ids are explained */
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, id, err, sizeof(err)),
                     TB_ERR_CONFLICT);
        cr_assert(strstr(err, "already revoked at "), "%s", err);
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, "tok_000000000000", err,
                                              sizeof(err)),
                     TB_ERR_NOT_FOUND);
        cr_assert(strstr(err, "no token 'tok_000000000000'"), "%s", err);
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, "tok_xyz", err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "expected 'tok_' followed by 12"), "%s", err);
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, NULL, err, sizeof(err)),
                     TB_ERR_INVALID);
        /* given the secret itself: refused, and not echoed back */
        char t2[72], id2[32];
        cr_assert_eq(tb_identity_token_create(g_conn, ACTOR, "dave", t2, id2, err, sizeof(err)),
                     TB_OK);
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, t2, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "secret token, not a token id"), "%s", err);
        cr_assert_null(strstr(err, t2 + 4));
        /* the other token of the same user is unaffected */
        tb_principal_free(auth_ok(t2, 0));
}

Test(identity, revocation_takes_effect_when_the_cache_expires) {
        const char *groups[] = {"ops"};
        char token[72], id[32], err[1024];
        create_user("erin", groups, 1, token, id);
        tb_principal_free(auth_ok(token, 600000));
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, id, err, sizeof(err)), TB_OK);
        /* within cache_ms the cached result stands (documented trade-off)... */
        tb_principal_free(auth_ok(token, 600000));
        /* ...a caller that does not use the cache sees the revocation... */
        auth_fails(token, 0, "revoked");
        /* ...and once the entry is gone everyone does */
        tb_identity_cache_clear();
        auth_fails(token, 600000, "revoked");
        /* negative results are not cached: still refused, still from the DB */
        auth_fails(token, 600000, "revoked");
}

/* An unknown token is remembered as unknown for cache_ms: its row put back
 * meanwhile is not seen until then (no PostgreSQL round trip per bogus
 * token), and is seen after. */
Test(identity, unknown_tokens_are_cached_as_failures) {
        const char *groups[] = {"ops"};
        char token[72], id[32], err[1024];
        create_user("uma", groups, 1, token, id);
        const char *p[] = {id};
        cr_assert_eq(tb_store_exec(g_conn, "save token row",
                                   "CREATE TABLE tbt_saved_token AS SELECT * FROM api_tokens "
                                   "WHERE id = $1", 1, p, NULL, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_store_exec(g_conn, "delete token row",
                                   "DELETE FROM api_tokens WHERE id = $1", 1, p, NULL, err,
                                   sizeof(err)), TB_OK, "%s", err);
        /* gone: unknown, and remembered as unknown for 3 s */
        auth_fails(token, 3000, "unknown token");
        int64_t t0 = tb_mono_us();
        cr_assert_eq(tb_store_exec(g_conn, "restore token row",
                                   "INSERT INTO api_tokens SELECT * FROM tbt_saved_token", 0, NULL,
                                   NULL, err, sizeof(err)), TB_OK, "%s", err);
        /* within the 3 s: still unknown, answered from the cache */
        tb_principal_t *pp = NULL;
        tb_err_t e = tb_identity_authenticate(g_store, token, 3000, &pp, err, sizeof(err));
        bool in_time = tb_mono_us() - t0 < 2500000;
        tb_principal_free(pp);
        if (in_time) {
                cr_assert_eq(e, TB_ERR_UNAUTHENTICATED, "the unknown token was looked up again");
                cr_assert(strstr(err, "unknown token"), "%s", err);
        }
        /* a caller without the cache sees the row at once, everyone after 3 s */
        tb_principal_free(auth_ok(token, 0));
        usleep(3100 * 1000);
        tb_principal_free(auth_ok(token, 3000));
        cr_assert_eq(tb_store_exec(g_conn, "drop saved row", "DROP TABLE tbt_saved_token", 0,
                                   NULL, NULL, err, sizeof(err)), TB_OK, "%s", err);
}

Test(identity, disabled_user) {
        const char *groups[] = {"ops"};
        char token[72], id[32], err[1024];
        create_user("frank", groups, 1, token, id);
        cr_assert_eq(tb_identity_user_disable(g_conn, ACTOR, "frank", true, err, sizeof(err)),
                     TB_OK, "%s", err);
        auth_fails(token, 0, "user 'frank' is disabled");
        /* a new token for a disabled user does not work either */
        char t2[72], id2[32];
        cr_assert_eq(tb_identity_token_create(g_conn, ACTOR, "frank", t2, id2, err, sizeof(err)),
                     TB_OK);
        auth_fails(t2, 0, "disabled");
        cr_assert_eq(tb_identity_user_disable(g_conn, ACTOR, "frank", false, err, sizeof(err)),
                     TB_OK, "%s", err);
        tb_principal_free(auth_ok(token, 0));
        tb_principal_free(auth_ok(t2, 0));
        /* enabling again is a no-op, still audited */
        cr_assert_eq(tb_identity_user_disable(g_conn, ACTOR, "frank", false, err, sizeof(err)),
                     TB_OK);
        cr_assert_eq(count_rows("SELECT count(*) FROM admin_audit WHERE action = 'user.enable' "
                                "AND details->>'changed' = 'false'",
                                0, NULL),
                     1);
        cr_assert_eq(tb_identity_user_disable(g_conn, ACTOR, "nobody", true, err, sizeof(err)),
                     TB_ERR_NOT_FOUND);
        cr_assert(strstr(err, "no user 'nobody'"), "%s", err);
}

typedef struct groups_arg {
        const char *header;
        int64_t cache_ms;
        const char *group;
} groups_arg_t;

static bool has_group(void *arg) {
        groups_arg_t *a = arg;
        char err[512];
        tb_principal_t *p = NULL;
        if (tb_identity_authenticate(g_store, a->header, a->cache_ms, &p, err, sizeof(err)))
                return false;
        bool in = tb_principal_in_group(p, a->group);
        tb_principal_free(p);
        return in;
}

static bool lacks_group(void *arg) {
        groups_arg_t *a = arg;
        char err[512];
        tb_principal_t *p = NULL;
        if (tb_identity_authenticate(g_store, a->header, a->cache_ms, &p, err, sizeof(err)))
                return false;
        bool in = tb_principal_in_group(p, a->group);
        tb_principal_free(p);
        return !in;
}

Test(identity, membership_change_visible_after_cache_expiry) {
        const int64_t cache_ms = 1500;
        const char *groups[] = {"ops"};
        char token[72], id[32], err[1024];
        create_user("gina", groups, 1, token, id);

        int64_t t0 = tb_mono_us();
        tb_principal_t *p = auth_ok(token, cache_ms);
        cr_assert_not(tb_principal_in_group(p, "dev"));
        tb_principal_free(p);

        cr_assert_eq(tb_identity_group_add_member(g_conn, ACTOR, "dev", "gina", err, sizeof(err)),
                     TB_OK, "%s", err);
        p = auth_ok(token, cache_ms);
        bool cached = !tb_principal_in_group(p, "dev");
        tb_principal_free(p);
        if (tb_mono_us() - t0 < cache_ms * 1000 * 8 / 10)
                cr_assert(cached, "within cache_ms the cached groups are served");

        groups_arg_t a = {token, cache_ms, "dev"};
        cr_assert(tbt_wait_until(has_group, &a, (int)cache_ms + 5000),
                  "new membership not visible after the cache expired");
        cr_assert_geq(tb_mono_us() - t0, cache_ms * 1000 - 1000,
                      "visible before the cache entry expired: it was not cached");

        cr_assert_eq(tb_identity_group_remove_member(g_conn, ACTOR, "dev", "gina", err,
                                                     sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert(tbt_wait_until(lacks_group, &a, (int)cache_ms + 5000),
                  "removal not visible after the cache expired");
}

Test(identity, membership_errors) {
        const char *groups[] = {"ops"};
        char token[72], id[32], err[1024];
        create_user("hank", groups, 1, token, id);
        cr_assert_eq(tb_identity_group_add_member(g_conn, ACTOR, "ops", "hank", err, sizeof(err)),
                     TB_ERR_CONFLICT);
        cr_assert(strstr(err, "already a member of group 'ops'"), "%s", err);
        cr_assert_eq(tb_identity_group_add_member(g_conn, ACTOR, "ops", "bob", err, sizeof(err)),
                     TB_ERR_NOT_FOUND);
        cr_assert_str_eq(err, "no user 'bob'; create it with: taskbus admin user create bob "
                              "--groups GROUP");
        cr_assert_eq(tb_identity_group_remove_member(g_conn, ACTOR, "dev", "hank", err,
                                                     sizeof(err)),
                     TB_ERR_NOT_FOUND);
        cr_assert(strstr(err, "no group 'dev'"), "%s", err);
        cr_assert_eq(tb_identity_group_add_member(g_conn, ACTOR, "dev", "hank", err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(tb_identity_group_remove_member(g_conn, ACTOR, "dev", "hank", err,
                                                     sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(tb_identity_group_remove_member(g_conn, ACTOR, "dev", "hank", err,
                                                     sizeof(err)),
                     TB_ERR_NOT_FOUND);
        cr_assert(strstr(err, "user 'hank' is not a member of group 'dev'"), "%s", err);
        /* the emptied group stays (tasks may belong to it) */
        cr_assert_eq(count_rows("SELECT count(*) FROM security_groups WHERE name = 'dev'", 0,
                                NULL),
                     1);
}

Test(identity, unknown_user_and_invalid_names) {
        char token[72], id[32], err[1024];
        cr_assert_eq(tb_identity_token_create(g_conn, ACTOR, "bob", token, id, err, sizeof(err)),
                     TB_ERR_NOT_FOUND);
        cr_assert_str_eq(err, "no user 'bob'; create it with: taskbus admin user create bob "
                              "--groups GROUP");

        const char *bad[] = {"", "a b", "bob;drop", "caf\xc3\xa9", "x/y", "tab\there"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cr_assert_eq(tb_identity_user_create(g_conn, ACTOR, bad[i], NULL, 0, token, id,
                                                     err, sizeof(err)),
                             TB_ERR_INVALID, "name '%s' accepted", bad[i]);
                cr_assert(strstr(err, "[A-Za-z0-9._@-]"), "%s", err);
                cr_assert(strstr(err, "user name"), "%s", err);
        }
        const char *badgroup[] = {"ops", "no way"};
        cr_assert_eq(tb_identity_user_create(g_conn, ACTOR, "ivan", badgroup, 2, token, id, err,
                                             sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "group name 'no way' is invalid"), "%s", err);
        cr_assert_eq(count_rows("SELECT count(*) FROM users", 0, NULL), 0);

        /* exactly 128 characters is allowed and survives authentication; 129 is not */
        char name[131];
        memset(name, 'n', 129);
        name[129] = '\0';
        cr_assert_eq(tb_identity_user_create(g_conn, ACTOR, name, NULL, 0, token, id, err,
                                             sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "too long (129 characters)"), "%s", err);
        name[128] = '\0';
        create_user(name, NULL, 0, token, id);
        tb_principal_t *p = auth_ok(token, 0);
        cr_assert_str_eq(p->user_id, name);
        tb_principal_free(p);

        /* and an existing user cannot be created again */
        cr_assert_eq(tb_identity_user_create(g_conn, ACTOR, name, NULL, 0, token, id, err,
                                             sizeof(err)),
                     TB_ERR_CONFLICT);
        cr_assert(strstr(err, "already exists"), "%s", err);
        cr_assert_eq(tb_identity_user_create(g_conn, "", "jack", NULL, 0, token, id, err,
                                             sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "actor"), "%s", err);
}

Test(identity, audit_rows_for_each_action) {
        const char *groups[] = {"ops", "dev"};
        char token[72], id[32], t2[72], id2[32], err[1024];
        create_user("kim", groups, 2, token, id);
        cr_assert_eq(tb_identity_token_create(g_conn, "root@box", "kim", t2, id2, err,
                                              sizeof(err)),
                     TB_OK);
        cr_assert_eq(tb_identity_token_revoke(g_conn, ACTOR, id2, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_identity_user_disable(g_conn, ACTOR, "kim", true, err, sizeof(err)),
                     TB_OK);
        cr_assert_eq(tb_identity_user_disable(g_conn, ACTOR, "kim", false, err, sizeof(err)),
                     TB_OK);
        cr_assert_eq(tb_identity_group_add_member(g_conn, ACTOR, "qa", "kim", err, sizeof(err)),
                     TB_OK);
        cr_assert_eq(tb_identity_group_remove_member(g_conn, ACTOR, "ops", "kim", err,
                                                     sizeof(err)),
                     TB_OK);

        PGresult *r = NULL;
        cr_assert_eq(tb_store_exec(g_conn, "audit",
                                   "SELECT actor, action, target, details::text, "
                                   "       at > now() - interval '5 minutes' "
                                   "FROM admin_audit ORDER BY id",
                                   0, NULL, &r, err, sizeof(err)),
                     TB_OK, "%s", err);
        const char *want[][3] = {
                {ACTOR, "user.create", "kim"},     {"root@box", "token.create", id2},
                {ACTOR, "token.revoke", id2},      {ACTOR, "user.disable", "kim"},
                {ACTOR, "user.enable", "kim"},     {ACTOR, "group.add-member", "qa"},
                {ACTOR, "group.remove-member", "ops"},
        };
        cr_assert_eq(PQntuples(r), 7, "%d audit rows", PQntuples(r));
        for (int i = 0; i < 7; i++) {
                cr_assert_str_eq(PQgetvalue(r, i, 0), want[i][0], "row %d actor", i);
                cr_assert_str_eq(PQgetvalue(r, i, 1), want[i][1], "row %d action", i);
                cr_assert_str_eq(PQgetvalue(r, i, 2), want[i][2], "row %d target", i);
                cr_assert_str_eq(PQgetvalue(r, i, 4), "t", "row %d time", i);
        }
        const char *d0 = PQgetvalue(r, 0, 3);
        cr_assert(strstr(d0, "\"groups\": [\"ops\", \"dev\"]"), "%s", d0);
        cr_assert(strstr(d0, id), "user.create details name the token id: %s", d0);
        cr_assert(strstr(PQgetvalue(r, 1, 3), "\"user\": \"kim\""), "%s", PQgetvalue(r, 1, 3));
        cr_assert(strstr(PQgetvalue(r, 5, 3), "\"created_group\": true"), "%s",
                  PQgetvalue(r, 5, 3));
        PQclear(r);

        /* failed actions leave neither a change nor an audit row */
        cr_assert_eq(tb_identity_token_create(g_conn, ACTOR, "ghost", t2, id2, err, sizeof(err)),
                     TB_ERR_NOT_FOUND);
        const char *more[] = {"brand-new-group"};
        cr_assert_eq(tb_identity_user_create(g_conn, ACTOR, "kim", more, 1, t2, id2, err,
                                             sizeof(err)),
                     TB_ERR_CONFLICT);
        cr_assert_eq(count_rows("SELECT count(*) FROM security_groups WHERE name = "
                                "'brand-new-group'",
                                0, NULL),
                     0, "a failed user create must roll back the groups it created");
        cr_assert_eq(tb_identity_group_add_member(g_conn, ACTOR, "qa", "kim", err, sizeof(err)),
                     TB_ERR_CONFLICT);
        cr_assert_eq(count_rows("SELECT count(*) FROM admin_audit", 0, NULL), 7);
        /* and the connection is usable afterwards (no transaction left open) */
        cr_assert_eq(PQtransactionStatus(g_conn), PQTRANS_IDLE);
}

/* tb_identity_audit() as `admin region failover` calls it: on its own, outside
 * a transaction, with details that need escaping. */
Test(identity, audit_row_written_on_its_own) {
        char err[1024];
        cr_assert_eq(tb_identity_audit(g_conn, ACTOR, "region.failover", "eu",
                                       json_pack("{s:s, s:i}", "to", "us \"west\"", "tasks", 3),
                                       err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(PQtransactionStatus(g_conn), PQTRANS_IDLE);
        const char *p[] = {ACTOR, "us \"west\""};
        cr_assert_eq(count_rows("SELECT count(*) FROM admin_audit WHERE actor = $1 "
                                "AND action = 'region.failover' AND target = 'eu' "
                                "AND details->>'to' = $2 AND (details->>'tasks')::int = 3",
                                2, p),
                     1);
        /* what a failed json_pack() returns is refused, not written */
        cr_assert_eq(tb_identity_audit(g_conn, ACTOR, "region.failover", "eu", NULL, err,
                                       sizeof(err)),
                     TB_ERR_NOMEM);
        cr_assert(strstr(err, "region.failover"), "%s", err);
        cr_assert_eq(count_rows("SELECT count(*) FROM admin_audit", 0, NULL), 1);
}

Test(identity, token_never_stored_in_plain_text) {
        const char *groups[] = {"ops"};
        char token[72], id[32], t2[72], id2[32], err[1024];
        create_user("lee", groups, 1, token, id);
        cr_assert_eq(tb_identity_token_create(g_conn, ACTOR, "lee", t2, id2, err, sizeof(err)),
                     TB_OK);
        tb_principal_free(auth_ok(token, 0));
        const char *secrets[] = {token, token + 4, t2, t2 + 4};
        for (size_t i = 0; i < 4; i++) {
                const char *p[] = {secrets[i]};
                /* whole rows as text, every column, both tables that could leak */
                cr_assert_eq(count_rows("SELECT count(*) FROM api_tokens t "
                                        "WHERE strpos(t::text, $1) > 0 "
                                        "   OR strpos(encode(t.token_hash, 'hex'), $1) > 0",
                                        1, p),
                             0, "secret %zu found in api_tokens", i);
                cr_assert_eq(count_rows("SELECT count(*) FROM admin_audit a "
                                        "WHERE strpos(a::text, $1) > 0",
                                        1, p),
                             0, "secret %zu found in admin_audit", i);
        }
        /* what is stored is SHA-256 of the token text, and the id is its prefix */
        const char *p[] = {token, id};
        cr_assert_eq(count_rows("SELECT count(*) FROM api_tokens "
                                "WHERE token_hash = sha256(convert_to($1, 'UTF8')) "
                                "  AND id = $2 "
                                "  AND 'tok_' || left(encode(token_hash, 'hex'), 12) = $2",
                                2, p),
                     1);
}

Test(identity, last_used_at_written_at_most_once_a_minute) {
        const char *groups[] = {"ops"};
        char token[72], id[32];
        create_user("mia", groups, 1, token, id);
        const char *p[] = {id};
        char *v0 = query1("SELECT last_used_at FROM api_tokens WHERE id = $1", 1, p);
        cr_assert_str_eq(v0, "(null)", "never used yet");
        free(v0);

        tb_principal_free(auth_ok(token, 0));
        char *v1 = query1("SELECT last_used_at::text FROM api_tokens WHERE id = $1", 1, p);
        cr_assert_str_neq(v1, "(null)");
        for (int i = 0; i < 5; i++)
                tb_principal_free(auth_ok(token, 0));
        char *v2 = query1("SELECT last_used_at::text FROM api_tokens WHERE id = $1", 1, p);
        cr_assert_str_eq(v1, v2, "rewritten within the minute");

        /* a minute later, the next use records itself */
        char err[512];
        cr_assert_eq(tb_store_exec(g_conn, "age",
                                   "UPDATE api_tokens SET last_used_at = now() - "
                                   "interval '61 seconds' WHERE id = $1",
                                   1, p, NULL, err, sizeof(err)),
                     TB_OK);
        tb_principal_free(auth_ok(token, 0));
        cr_assert_eq(count_rows("SELECT count(*) FROM api_tokens WHERE id = $1 "
                                "AND last_used_at > now() - interval '10 seconds'",
                                1, p),
                     1);
        free(v1);
        free(v2);
}

typedef struct auth_thread {
        const char *good[2];
        const char *user[2];
        const char *bad;
        int ok, wrong, rejected;
} auth_thread_t;

static void *auth_worker(void *arg) {
        auth_thread_t *a = arg;
        char err[512];
        for (int i = 0; i < 150; i++) {
                int which = i & 1;
                int64_t cache = (i % 3 == 0) ? 0 : 2000;
                tb_principal_t *p = NULL;
                if (tb_identity_authenticate(g_store, a->good[which], cache, &p, err,
                                             sizeof(err)) == TB_OK &&
                    !strcmp(p->user_id, a->user[which]) && p->group_cnt == 1)
                        a->ok++;
                else
                        a->wrong++;
                tb_principal_free(p);
                if (i % 10 == 0) {
                        p = NULL;
                        if (tb_identity_authenticate(g_store, a->bad, cache, &p, err,
                                                     sizeof(err)) == TB_ERR_UNAUTHENTICATED &&
                            !p)
                                a->rejected++;
                        else
                                a->wrong++;
                        tb_principal_free(p);
                }
        }
        return NULL;
}

Test(identity, concurrent_authentication) {
        const char *g1[] = {"ops"}, *g2[] = {"dev"};
        char t1[72], i1[32], t2[72], i2[32], h1[96];
        create_user("nora", g1, 1, t1, i1);
        create_user("omar", g2, 1, t2, i2);
        bearer(h1, t1);
        /* release our connection so the workers have the whole pool */
        tb_store_release(g_store, g_conn);
        g_conn = NULL;

        enum { N = 8 };
        pthread_t th[N];
        auth_thread_t args[N];
        for (int i = 0; i < N; i++) {
                args[i] = (auth_thread_t){{h1, t2}, {"nora", "omar"},
                                          "Bearer tbk_00000000000000000000000000000000"
                                          "00000000000000000000000000000000",
                                          0, 0, 0};
                cr_assert_eq(pthread_create(&th[i], NULL, auth_worker, &args[i]), 0);
        }
        int ok = 0, wrong = 0, rejected = 0;
        for (int i = 0; i < N; i++) {
                pthread_join(th[i], NULL);
                ok += args[i].ok;
                wrong += args[i].wrong;
                rejected += args[i].rejected;
        }
        g_conn = tb_store_acquire(g_store);
        cr_assert_eq(wrong, 0, "%d wrong answers", wrong);
        cr_assert_eq(ok, N * 150);
        cr_assert_eq(rejected, N * 15);
}
