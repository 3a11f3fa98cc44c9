/**
 * @file test_cli_identity.c
 * @brief `taskbus admin user|token|group|audit` driven through the real
 *        binary ($TB_BUILD_DIR/bin/taskbus) against a throwaway PostgreSQL
 *        database: tokens printed once and usable, never listed, revocation,
 *        disable/enable, error messages and exit statuses, the audit
 *        actor (OS user @ host, or SUDO_USER), and the audit row of
 *        `admin region failover`.
 */
#include "identity/identity.h"
#include "support.h"

#include <criterion/criterion.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_base[512];
static char g_db[64];
static char g_url[640];
static tb_config_t *g_conf;
static tb_store_t *g_store;

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
        snprintf(g_url, sizeof(g_url), "%s/%s", g_base, g_db);

        g_conf = tb_config_defaults();
        cr_assert_not_null(g_conf);
        free(g_conf->pg_url);
        g_conf->pg_url = strdup(g_url);
        g_conf->pg_pool_size = 2;
        cr_assert_eq(tb_store_open(g_conf, &g_store, err, sizeof(err)), TB_OK, "%s", err);
        PGconn *conn = tb_store_acquire(g_store);
        cr_assert_eq(tb_store_migrate(conn, NULL, err, sizeof(err)), TB_OK, "%s", err);
        tb_store_release(g_store, conn);
        tb_identity_cache_clear();

        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbus", tbt_build_dir());
        cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
}

static void teardown(void) {
        char sql[128];
        tb_identity_cache_clear();
        tb_store_destroy(g_store);
        tb_config_destroy(g_conf);
        if (*g_db) {
                snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_db);
                admin_sql(sql);
        }
}

TestSuite(cli_identity, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------- */

/* Run `taskbus admin ARGS` with \p env prepended (e.g. "SUDO_USER=carol");
 * *out gets stdout+stderr (caller frees). @returns the exit status. */
static int cli(char **out, const char *env, const char *args) {
        int rc = tbt_run(out,
                         "env -u TASKBUS_CONFIG -u SUDO_USER TASKBUS_PG='%s' %s '%s/bin/taskbus' "
                         "admin %s",
                         g_url, env ? env : "", tbt_build_dir(), args);
        if (*out && strstr(*out, "taskbus: admin: unknown command")) {
                static char msg[4096];
                snprintf(msg, sizeof(msg), "%s", *out);
                free(*out);
                *out = NULL;
                cr_assert_fail("tb_cli_admin does not call tb_cli_admin_identity yet: %s", msg);
        }
        return rc;
}

/* The value after "KEY: " on its own line of \p out, copied into \p val. */
static bool field(const char *out, const char *key, char *val, size_t size) {
        char pat[64];
        snprintf(pat, sizeof(pat), "\n%s: ", key);
        const char *p = strstr(out, pat);
        if (!p && !strncmp(out, pat + 1, strlen(pat + 1)))
                p = out - 1;
        if (!p)
                return false;
        p += strlen(pat);
        size_t n = strcspn(p, "\n");
        if (n >= size)
                return false;
        memcpy(val, p, n);
        val[n] = '\0';
        return true;
}

static tb_err_t authenticate(const char *token, tb_principal_t **p, char *err, size_t n) {
        return tb_identity_authenticate(g_store, token, 0, p, err, n);
}

static void expected_actor(char *buf, size_t size, const char *user) {
        char host[256] = "";
        gethostname(host, sizeof(host));
        host[sizeof(host) - 1] = '\0';
        if (!user) {
                struct passwd *pw = getpwuid(geteuid());
                cr_assert_not_null(pw);
                user = pw->pw_name;
        }
        snprintf(buf, size, "%s@%s", user, host);
}

/* ---- tests --------------------------------------------------------------- */

Test(cli_identity, user_create_prints_a_usable_token_once) {
        char *out = NULL, token[80], id[40], err[512];
        int rc = cli(&out, NULL, "user create alice --groups ops,dev");
        cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
        cr_assert(field(out, "token", token, sizeof(token)), "no token line: %s", out);
        cr_assert(field(out, "token_id", id, sizeof(id)), "no token_id line: %s", out);
        cr_assert(strstr(out, "shown only this once"), "%s", out);
        free(out);

        tb_principal_t *p = NULL;
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_str_eq(p->user_id, "alice");
        cr_assert_str_eq(p->token_id, id);
        cr_assert_eq(p->group_cnt, 2);
        cr_assert_str_eq(p->groups[0], "dev");
        cr_assert_str_eq(p->groups[1], "ops");
        tb_principal_free(p);

        /* listings show the id, never the secret */
        rc = cli(&out, NULL, "token list");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, id), "%s", out);
        cr_assert(strstr(out, "LAST_USED"), "%s", out);
        cr_assert_null(strstr(out, "tbk_"), "a secret in the listing: %s", out);
        cr_assert_null(strstr(out, token + 4));
        free(out);
        rc = cli(&out, NULL, "token list alice");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, id), "%s", out);
        free(out);

        rc = cli(&out, NULL, "group list");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "dev") && strstr(out, "ops") && strstr(out, "alice"), "%s", out);
        free(out);
        rc = cli(&out, NULL, "user list");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "alice") && strstr(out, "enabled") && strstr(out, "dev,ops"),
                  "%s", out);
        free(out);

        /* creating the same user again is refused, nothing printed as a token */
        rc = cli(&out, NULL, "user create alice --groups=ops");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "already exists"), "%s", out);
        cr_assert_null(strstr(out, "tbk_"));
        free(out);
}

Test(cli_identity, token_create_revoke_and_list) {
        char *out = NULL, token[80], id[40], err[512];
        cr_assert_eq(cli(&out, NULL, "user create bob --groups ops"), 0, "%s", out);
        free(out);
        int rc = cli(&out, NULL, "token create bob");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(field(out, "token", token, sizeof(token)), "%s", out);
        cr_assert(field(out, "token_id", id, sizeof(id)), "%s", out);
        free(out);
        tb_principal_t *p = NULL;
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_OK, "%s", err);
        tb_principal_free(p);

        char args[128];
        snprintf(args, sizeof(args), "token revoke %s", id);
        rc = cli(&out, NULL, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "revoked"), "%s", out);
        free(out);
        p = NULL;
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_ERR_UNAUTHENTICATED);
        cr_assert(strstr(err, "revoked"), "%s", err);

        rc = cli(&out, NULL, args);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "already revoked at"), "%s", out);
        free(out);

        /* the listing shows when it was revoked and last used */
        rc = cli(&out, NULL, "token list bob");
        cr_assert_eq(rc, 0, "%s", out);
        const char *at = strstr(out, id);
        cr_assert(at, "%s", out);
        char line[512];
        size_t n = strcspn(at, "\n");
        cr_assert_lt(n, sizeof(line) - 2);
        memcpy(line, at, n);
        memcpy(line + n, " ", 2);
        cr_assert_null(strstr(line, " - "), "revoked and last-used columns filled: %s", out);
        free(out);

        /* passing the secret instead of the id: refused without echoing it */
        snprintf(args, sizeof(args), "token revoke %s", token);
        rc = cli(&out, NULL, args);
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "not a token id"), "%s", out);
        cr_assert_null(strstr(out, token + 4));
        free(out);
}

Test(cli_identity, disable_and_enable) {
        char *out = NULL, token[80], err[512];
        cr_assert_eq(cli(&out, NULL, "user create cara --groups ops"), 0, "%s", out);
        cr_assert(field(out, "token", token, sizeof(token)), "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "user disable cara"), 0, "%s", out);
        free(out);
        tb_principal_t *p = NULL;
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_ERR_UNAUTHENTICATED);
        cr_assert(strstr(err, "disabled"), "%s", err);
        cr_assert_eq(cli(&out, NULL, "user list"), 0, "%s", out);
        cr_assert(strstr(out, "disabled"), "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "user enable cara"), 0, "%s", out);
        free(out);
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_OK, "%s", err);
        tb_principal_free(p);
}

Test(cli_identity, group_membership) {
        char *out = NULL, token[80], err[512];
        cr_assert_eq(cli(&out, NULL, "user create dan --groups ops"), 0, "%s", out);
        cr_assert(field(out, "token", token, sizeof(token)), "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "group add-member qa dan"), 0, "%s", out);
        free(out);
        tb_principal_t *p = NULL;
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert(tb_principal_in_group(p, "qa"));
        tb_principal_free(p);
        cr_assert_eq(cli(&out, NULL, "group remove-member ops dan"), 0, "%s", out);
        free(out);
        cr_assert_eq(authenticate(token, &p, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_not(tb_principal_in_group(p, "ops"));
        cr_assert_eq(p->group_cnt, 1);
        tb_principal_free(p);
        cr_assert_eq(cli(&out, NULL, "group remove-member ops dan"), 1, "%s", out);
        cr_assert(strstr(out, "not a member"), "%s", out);
        free(out);
}

Test(cli_identity, errors_are_explained) {
        char *out = NULL;
        int rc = cli(&out, NULL, "token create bob");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "no user 'bob'; create it with: taskbus admin user create bob "
                              "--groups GROUP"),
                  "%s", out);
        free(out);

        rc = cli(&out, NULL, "user create 'a b' --groups ops");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "user name 'a b' is invalid") && strstr(out, "[A-Za-z0-9._@-]"),
                  "%s", out);
        free(out);

        rc = cli(&out, NULL, "user create erik");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "--groups: required"), "%s", out);
        free(out);

        rc = cli(&out, NULL, "user create erik --groups ops,,dev");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "empty group name"), "%s", out);
        free(out);

        rc = cli(&out, NULL, "user frobnicate erik");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "unknown command 'frobnicate'"), "%s", out);
        free(out);

        rc = cli(&out, NULL, "group add-member ops");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "usage: taskbus admin group add-member GROUP USER"), "%s", out);
        free(out);

        rc = cli(&out, NULL, "audit --limit 0");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "--limit: '0' is not a number from 1 to 10000"), "%s", out);
        free(out);

        rc = cli(&out, NULL, "token revoke nonsense");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "token id 'nonsense' is invalid"), "%s", out);
        free(out);

        /* none of the failures above wrote anything */
        rc = cli(&out, NULL, "audit");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_null(strstr(out, "user.create"), "%s", out);
        free(out);
}

Test(cli_identity, audit_names_the_os_user_or_sudo_user) {
        char *out = NULL, me[512], carol[512];
        expected_actor(me, sizeof(me), NULL);
        expected_actor(carol, sizeof(carol), "carol");

        cr_assert_eq(cli(&out, NULL, "user create fay --groups ops"), 0, "%s", out);
        free(out);
        cr_assert_eq(cli(&out, "SUDO_USER=carol", "user disable fay"), 0, "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "group add-member qa fay"), 0, "%s", out);
        free(out);

        int rc = cli(&out, NULL, "audit --limit 2");
        cr_assert_eq(rc, 0, "%s", out);
        /* newest first, and only two */
        const char *add = strstr(out, "group.add-member");
        const char *dis = strstr(out, "user.disable");
        cr_assert(add && dis && add < dis, "%s", out);
        cr_assert_null(strstr(out, "user.create"), "--limit 2 shows two rows: %s", out);
        cr_assert(strstr(out, carol), "%s", out);
        free(out);

        PGconn *conn = tb_store_acquire(g_store);
        char err[512];
        PGresult *r = NULL;
        cr_assert_eq(tb_store_exec(conn, "audit", "SELECT actor, action FROM admin_audit ORDER BY id",
                                   0, NULL, &r, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(PQntuples(r), 3);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), me);
        cr_assert_str_eq(PQgetvalue(r, 0, 1), "user.create");
        cr_assert_str_eq(PQgetvalue(r, 1, 0), carol);
        cr_assert_str_eq(PQgetvalue(r, 1, 1), "user.disable");
        cr_assert_str_eq(PQgetvalue(r, 2, 0), me);
        PQclear(r);
        tb_store_release(g_store, conn);
}

/* `admin region failover` writes its admin_audit row through
 * tb_identity_audit(), as the identity commands do. With no task homed in
 * the failed region it moves nothing, so it needs the database only. */
Test(cli_identity, region_failover_is_audited) {
        char *out = NULL, me[512], actor[600], err[512];
        expected_actor(me, sizeof(me), NULL);
        snprintf(actor, sizeof(actor), "admin:%s", me);

        int rc = cli(&out, "TASKBUS_REGION=us TASKBUS_REMOTE_REGIONS=eu",
                     "region failover eu --to us");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "moved 0 task(s)"), "%s", out);
        cr_assert_null(strstr(out, "not audited"), "%s", out);
        free(out);

        PGconn *conn = tb_store_acquire(g_store);
        PGresult *r = NULL;
        cr_assert_eq(tb_store_exec(conn, "audit",
                                   "SELECT actor, action, target, details->>'to', "
                                   "       details->>'tasks' FROM admin_audit ORDER BY id",
                                   0, NULL, &r, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(PQntuples(r), 1);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), actor);
        cr_assert_str_eq(PQgetvalue(r, 0, 1), "region.failover");
        cr_assert_str_eq(PQgetvalue(r, 0, 2), "eu");
        cr_assert_str_eq(PQgetvalue(r, 0, 3), "us");
        cr_assert_str_eq(PQgetvalue(r, 0, 4), "0");
        PQclear(r);
        tb_store_release(g_store, conn);
}

Test(cli_identity, group_quotas_set_and_show) {
        char *out = NULL;
        cr_assert_eq(cli(&out, NULL, "user create erin --groups batch"), 0, "%s", out);
        free(out);
        /* unlimited until set */
        cr_assert_eq(cli(&out, NULL, "group show batch"), 0, "%s", out);
        cr_assert(strstr(out, "max_tasks      unlimited") &&
                          strstr(out, "max_running    unlimited") &&
                          strstr(out, "run_now_rate   unlimited") && strstr(out, "queued         0"),
                  "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL,
                         "group set batch --max-tasks 100 --max-running 4 --run-now-rate 10/min"),
                     0, "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "group set batch --max-tasks unlimited"), 0, "%s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "group show batch"), 0, "%s", out);
        cr_assert(strstr(out, "max_tasks      unlimited") && strstr(out, "max_running    4") &&
                          strstr(out, "run_now_rate   0.166667/s"),
                  "options left out keep their value: %s", out);
        free(out);
        cr_assert_eq(cli(&out, NULL, "audit"), 0, "%s", out);
        cr_assert(strstr(out, "group.set-quota"), "audited: %s", out);
        free(out);
        /* what is refused, and why */
        static const struct {
                int rc;
                const char *args, *says;
        } refused[] = {
                {2, "group set batch --max-running -3", "--max-running: '-3' is not a count"},
                {2, "group set batch --run-now-rate 5/fortnight", "10/min"},
                {2, "group set batch", "at least one of --max-tasks"},
                {1, "group set nosuch --max-tasks 1", "no group 'nosuch'"},
                {1, "group show nosuch", "no group 'nosuch'"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(refused); i++) {
                cr_assert_eq(cli(&out, NULL, refused[i].args), refused[i].rc, "%s: %s",
                             refused[i].args, out);
                cr_assert(strstr(out, refused[i].says), "%s: %s", refused[i].args, out);
                free(out);
        }
}
