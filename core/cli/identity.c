/**
 * @file cli/identity.c
 * @brief `taskbus admin user|token|group|audit`: identity administration
 *        directly on PostgreSQL (lib/identity/ for the changes, each audited
 *        with the OS user running the CLI as the actor; store/identity.h and
 *        store/audit.h for the listings).
 */
#include "cli.h"
#include "identity/identity.h"
#include "identity/signing.h"
#include "store/audit.h"
#include "store/claims.h"
#include "store/identity.h"
#include "units.h"
#include "store/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tb_cli_admin_identity_usage(FILE *fp) {
        fprintf(fp,
                "  user create NAME --groups G1,G2   create a user and its first token (printed once)\n"
                "  user disable NAME                 stop the user's tokens from authenticating\n"
                "  user enable NAME                  undo disable\n"
                "  user list                         users, state and groups\n"
                "  token create USER [--expires 90d]  another token for USER (printed once)\n"
                "  token revoke TOKEN_ID             revoke a token by id (tok_...)\n"
                "  token list [USER]                 token ids, user, created, revoked, last used\n"
                "  group add-member GROUP USER       add USER to GROUP (created when missing)\n"
                "  group remove-member GROUP USER    remove USER from GROUP\n"
                "  group list                        groups and their members\n"
                "  group set GROUP [--max-tasks N] [--max-running N] [--run-now-rate R]\n"
                "                                    quotas (N or R: a value or 'unlimited'; R per\n"
                "                                    second, or '10/min', '100/h')\n"
                "  group show GROUP                  quotas, running and queued runs\n"
                "  audit [--limit N]                 recent admin actions: when, who, what (N <= 10000)\n"
                "Names: 1 to %d characters from [A-Za-z0-9._@-].\n",
                TB_IDENTITY_NAME_MAX);
}

/* ---- helpers ------------------------------------------------------------- */

/* Exit status for an error: bad input is a usage error (2). */
static int tb_cli_id_status(tb_err_t err) { return err == TB_ERR_INVALID ? 2 : 1; }

/* The database, connected on first use so that usage errors need none. */
typedef struct tb_cli_id_db {
        tb_config_t *conf;
        tb_store_t *store;
        PGconn *conn;
} tb_cli_id_db_t;

/* @returns false (after printing why) if PostgreSQL cannot be reached. */
static bool tb_cli_id_connect(tb_cli_id_db_t *db) {
        char err[1024];
        if (db->conn)
                return true;
        if (!db->store && tb_store_open(db->conf, &db->store, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("postgres: %s", err);
                return false;
        }
        db->conn = tb_store_acquire(db->store);
        if (!db->conn) {
                tb_cli_fail("postgres: cannot get a connection (out of memory?)");
                return false;
        }
        /* "relation users does not exist" would not say what to do */
        int version = 0;
        if (tb_store_schema_version(db->conn, &version, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("postgres: %s", err);
                return false;
        }
        if (version < 1) {
                tb_cli_fail("postgres: the database has no taskbus schema yet; create it "
                            "with: taskbus admin migrate");
                return false;
        }
        /* new tokens get their Kafka signing key sealed under the internal key */
        if (tb_sign_key_init(db->conf, false, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("%s", err);
                return false;
        }
        if (!tb_sign_key())
                fprintf(stderr, "warning: security.key_file is not set: tokens created now "
                                "work on the REST API only, not for signing Kafka commands\n");
        return true;
}

static void tb_cli_id_db_close(tb_cli_id_db_t *db) {
        if (db->conn)
                tb_store_release(db->store, db->conn);
        tb_store_destroy(db->store);
}

/* Print epoch milliseconds (a JSON integer, null -> "-") as RFC 3339. */
static const char *tb_cli_id_ms(const json_t *ms, char buf[32]) {
        if (!json_is_integer(ms))
                return "-";
        tb_time_format((int64_t)json_integer_value(ms), buf);
        return buf;
}

/* A string field of a store row ("" if missing, so printf never sees NULL). */
static const char *tb_cli_id_str(const json_t *row, const char *key) {
        const char *v = json_string_value(json_object_get(row, key));
        return v ? v : "";
}

static bool tb_cli_id_argc(int argc, int want_min, int want_max, const char *usage) {
        if (argc < want_min || argc > want_max) {
                tb_cli_fail("usage: taskbus admin %s", usage);
                return false;
        }
        return true;
}

/* ---- user ---------------------------------------------------------------- */

/* Split "a,b" into malloc'd *out (pointers into \p buf, which is modified). */
static bool tb_cli_id_split_groups(char *buf, char ***out, size_t *cnt) {
        size_t n = 1;
        for (const char *p = buf; *p; p++)
                n += *p == ',';
        char **v = calloc(n, sizeof(char *));
        if (!v) {
                tb_cli_fail("out of memory");
                return false;
        }
        size_t i = 0;
        /* strsep keeps empty fields, which we want to refuse by name */
        char *rest = buf;
        while (rest) {
                char *tok = strsep(&rest, ",");
                if (!*tok) {
                        tb_cli_fail("--groups: empty group name in the list; give names "
                                    "separated by commas, e.g. --groups ops,dev");
                        free(v);
                        return false;
                }
                v[i++] = tok;
        }
        *out = v;
        *cnt = i;
        return true;
}

static int tb_cli_id_user_create(tb_cli_id_db_t *db, const char *actor, int argc, char **argv) {
        static const char usage[] = "user create NAME --groups GROUP[,GROUP...]";
        const char *name = NULL;
        char *groups_arg = NULL;
        for (int i = 3; i < argc; i++) {
                if (!strcmp(argv[i], "--groups")) {
                        if (i + 1 >= argc) {
                                tb_cli_fail("--groups: missing value; e.g. --groups ops,dev");
                                return 2;
                        }
                        groups_arg = argv[++i];
                } else if (!strncmp(argv[i], "--groups=", 9)) {
                        groups_arg = argv[i] + 9;
                } else if (argv[i][0] == '-' && argv[i][1]) {
                        tb_cli_fail("user create: unknown option '%s'; usage: taskbus admin %s",
                                    argv[i], usage);
                        return 2;
                } else if (!name) {
                        name = argv[i];
                } else {
                        tb_cli_fail("user create: unexpected argument '%s'; usage: taskbus "
                                    "admin %s",
                                    argv[i], usage);
                        return 2;
                }
        }
        if (!name) {
                tb_cli_fail("user create: missing NAME; usage: taskbus admin %s", usage);
                return 2;
        }
        if (!groups_arg) {
                tb_cli_fail("--groups: required; a user sees only the tasks of its security "
                            "groups, e.g. taskbus admin user create %s --groups ops",
                            tb_identity_name_valid(name) ? name : "NAME");
                return 2;
        }
        char *gbuf = strdup(groups_arg);
        char **groups = NULL;
        size_t gcnt = 0;
        if (!gbuf) {
                tb_cli_fail("out of memory");
                return 1;
        }
        if (!tb_cli_id_split_groups(gbuf, &groups, &gcnt)) {
                free(gbuf);
                return 2;
        }
        char err[1024], token[72], token_id[32];
        int rc = 0;
        if (!tb_cli_id_connect(db)) {
                free(groups);
                free(gbuf);
                return 1;
        }
        tb_err_t e = tb_identity_user_create(db->conn, actor, name, (const char *const *)groups,
                                             gcnt, token, token_id, err, sizeof(err));
        if (e) {
                tb_cli_fail("user create: %s", err);
                rc = tb_cli_id_status(e);
        } else {
                printf("created user '%s' (groups: ", name);
                for (size_t i = 0; i < gcnt; i++)
                        printf("%s%s", i ? ", " : "", groups[i]);
                printf(")\ntoken_id: %s\ntoken: %s\n", token_id, token);
                fflush(stdout);
                fprintf(stderr, "Store the token now: it is shown only this once (taskbus keeps "
                                "only its SHA-256).\n");
                explicit_bzero(token, sizeof(token));
        }
        free(groups);
        free(gbuf);
        return rc;
}

static int tb_cli_id_user_list(tb_cli_id_db_t *db) {
        char err[1024], t[32];
        json_t *rows = NULL, *row;
        size_t i;
        if (!tb_cli_id_connect(db))
                return 1;
        if (tb_store_identity_user_list(db->conn, &rows, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("user list: %s", err);
                return 1;
        }
        printf("%-24s %-8s %-24s %s\n", "USER", "STATE", "CREATED", "GROUPS");
        json_array_foreach(rows, i, row)
                printf("%-24s %-8s %-24s %s\n", tb_cli_id_str(row, "id"),
                       json_is_true(json_object_get(row, "disabled")) ? "disabled" : "enabled",
                       tb_cli_id_ms(json_object_get(row, "created_at"), t),
                       tb_cli_id_str(row, "groups"));
        json_decref(rows);
        return 0;
}

static int tb_cli_id_user(tb_cli_id_db_t *db, const char *actor, int argc, char **argv) {
        char err[1024];
        const char *what = argv[2];
        if (!strcmp(what, "create"))
                return tb_cli_id_user_create(db, actor, argc, argv);
        if (!strcmp(what, "list"))
                return tb_cli_id_argc(argc, 3, 3, "user list") ? tb_cli_id_user_list(db) : 2;
        if (!strcmp(what, "disable") || !strcmp(what, "enable")) {
                bool disable = !strcmp(what, "disable");
                if (!tb_cli_id_argc(argc, 4, 4, disable ? "user disable NAME" : "user enable NAME"))
                        return 2;
                if (!tb_cli_id_connect(db))
                        return 1;
                tb_err_t e = tb_identity_user_disable(db->conn, actor, argv[3], disable, err,
                                                      sizeof(err));
                if (e) {
                        tb_cli_fail("user %s: %s", what, err);
                        return tb_cli_id_status(e);
                }
                printf("user '%s' %s\n", argv[3], disable ? "disabled" : "enabled");
                return 0;
        }
        tb_cli_fail("admin user: unknown command '%s' (create, disable, enable, list)", what);
        return 2;
}

/* ---- token --------------------------------------------------------------- */

static int tb_cli_id_token_list(tb_cli_id_db_t *db, const char *user) {
        char err[1024], t1[32], t2[32], t3[32];
        json_t *rows = NULL, *row;
        size_t i;
        tb_err_t e;
        if (user && (e = tb_identity_name_check("user name", user, err, sizeof(err)))) {
                tb_cli_fail("token list: %s", err);
                return tb_cli_id_status(e);
        }
        if (!tb_cli_id_connect(db))
                return 1;
        if (user) {
                bool found = false;
                if (tb_store_identity_user_get(db->conn, user, TB_STORE_IDENTITY_NO_LOCK, &found,
                                               NULL, err, sizeof(err)) != TB_OK) {
                        tb_cli_fail("token list: %s", err);
                        return 1;
                }
                if (!found) {
                        tb_cli_fail("token list: no user '%s'; list users with: taskbus admin "
                                    "user list",
                                    user);
                        return 1;
                }
        }
        if (tb_store_identity_token_list(db->conn, user, &rows, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("token list: %s", err);
                return 1;
        }
        printf("%-18s %-24s %-24s %-24s %s\n", "ID", "USER", "CREATED", "REVOKED", "LAST_USED");
        json_array_foreach(rows, i, row)
                printf("%-18s %-24s %-24s %-24s %s\n", tb_cli_id_str(row, "id"),
                       tb_cli_id_str(row, "user_id"),
                       tb_cli_id_ms(json_object_get(row, "created_at"), t1),
                       tb_cli_id_ms(json_object_get(row, "revoked_at"), t2),
                       tb_cli_id_ms(json_object_get(row, "last_used_at"), t3));
        json_decref(rows);
        return 0;
}

static int tb_cli_id_token(tb_cli_id_db_t *db, const char *actor, int argc, char **argv) {
        char err[1024];
        const char *what = argv[2];
        tb_err_t e;
        if (!strcmp(what, "create")) {
                char token[72], token_id[32];
                int64_t ttl_ms = 0;
                err[0] = '\0';
                if (!tb_cli_id_argc(argc, 4, 6, "token create USER [--expires DURATION]"))
                        return 2;
                if (argc > 4 && (argc != 6 || strcmp(argv[4], "--expires"))) {
                        tb_cli_fail("usage: taskbus admin token create USER [--expires DURATION]"
                                    " (e.g. --expires 90d)");
                        return 2;
                }
                if (argc == 6 && (tb_units_duration_parse(argv[5], &ttl_ms, err, sizeof(err)) ||
                                  ttl_ms <= 0)) {
                        tb_cli_fail("--expires: %s", ttl_ms <= 0 && !*err ? "must be positive"
                                                                           : err);
                        return 2;
                }
                if (!tb_cli_id_connect(db))
                        return 1;
                if ((e = tb_identity_token_create_expiring(db->conn, actor, argv[3],
                                                           ttl_ms ? tb_now_ms() + ttl_ms : 0,
                                                           token, token_id, err,
                                                           sizeof(err)))) {
                        tb_cli_fail("token create: %s", err);
                        return tb_cli_id_status(e);
                }
                printf("user: %s\ntoken_id: %s\ntoken: %s\n", argv[3], token_id, token);
                if (ttl_ms)
                        printf("expires: in %s\n", argv[5]);
                fflush(stdout);
                fprintf(stderr, "Store the token now: it is shown only this once (taskbus keeps "
                                "only its SHA-256).\n");
                explicit_bzero(token, sizeof(token));
                return 0;
        }
        if (!strcmp(what, "revoke")) {
                if (!tb_cli_id_argc(argc, 4, 4, "token revoke TOKEN_ID"))
                        return 2;
                if (!tb_cli_id_connect(db))
                        return 1;
                if ((e = tb_identity_token_revoke(db->conn, actor, argv[3], err, sizeof(err)))) {
                        tb_cli_fail("token revoke: %s", err);
                        return tb_cli_id_status(e);
                }
                printf("token %s revoked\n", argv[3]);
                return 0;
        }
        if (!strcmp(what, "list")) {
                if (!tb_cli_id_argc(argc, 3, 4, "token list [USER]"))
                        return 2;
                return tb_cli_id_token_list(db, argc > 3 ? argv[3] : NULL);
        }
        tb_cli_fail("admin token: unknown command '%s' (create, revoke, list)", what);
        return 2;
}

/* ---- group --------------------------------------------------------------- */

static int tb_cli_id_group_list(tb_cli_id_db_t *db) {
        char err[1024];
        json_t *rows = NULL, *row;
        size_t i;
        if (!tb_cli_id_connect(db))
                return 1;
        if (tb_store_identity_group_list(db->conn, &rows, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("group list: %s", err);
                return 1;
        }
        printf("%-24s %7s %s\n", "GROUP", "MEMBERS", "USERS");
        json_array_foreach(rows, i, row)
                printf("%-24s %7lld %s\n", tb_cli_id_str(row, "name"),
                       (long long)json_integer_value(json_object_get(row, "members")),
                       tb_cli_id_str(row, "users"));
        json_decref(rows);
        return 0;
}

/* Print a quota ("unlimited" when not limited). */
static void tb_cli_id_quota_print(const char *name, double v, bool rate) {
        if (v < 0)
                printf("%-14s unlimited\n", name);
        else if (rate)
                printf("%-14s %.6g/s\n", name, v);
        else
                printf("%-14s %.0f\n", name, v);
}

static void tb_cli_id_quotas_print(const char *group, const tb_store_group_quota_t *q) {
        printf("group          %s\n", group);
        tb_cli_id_quota_print("max_tasks", (double)q->max_tasks, false);
        tb_cli_id_quota_print("max_running", (double)q->max_running, false);
        tb_cli_id_quota_print("run_now_rate", q->run_now_rate, true);
}

/* A count option's value: a number from 0, or "unlimited". */
static bool tb_cli_id_count_arg(const char *opt, const char *v, int64_t *out) {
        if (!strcmp(v, "unlimited") || !strcmp(v, "none")) {
                *out = TB_STORE_QUOTA_UNLIMITED;
                return true;
        }
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || !*v || *end || n < 0 || n > INT32_MAX) {
                tb_cli_fail("%s: '%s' is not a count from 0 to %d, nor 'unlimited'", opt, v,
                            INT32_MAX);
                return false;
        }
        *out = n;
        return true;
}

static int tb_cli_id_group_set(tb_cli_id_db_t *db, const char *actor, int argc, char **argv) {
        static const char usage[] = "group set GROUP [--max-tasks N] [--max-running N] "
                                    "[--run-now-rate R]";
        char err[1024];
        tb_store_group_quota_t set = {TB_STORE_QUOTA_KEEP, TB_STORE_QUOTA_KEEP,
                                      TB_STORE_QUOTA_KEEP}, now;
        bool any = false;
        if (argc < 4) {
                tb_cli_fail("usage: taskbus admin %s", usage);
                return 2;
        }
        for (int i = 4; i < argc; i++) {
                const char *opt = argv[i], *v = NULL;
                if (!strcmp(opt, "--max-tasks") || !strcmp(opt, "--max-running") ||
                    !strcmp(opt, "--run-now-rate")) {
                        if (i + 1 >= argc) {
                                tb_cli_fail("%s: missing value (a number, or 'unlimited')", opt);
                                return 2;
                        }
                        v = argv[++i];
                } else {
                        tb_cli_fail("group set: unexpected argument '%s'; usage: taskbus admin "
                                    "%s", opt, usage);
                        return 2;
                }
                if (!strcmp(opt, "--max-tasks") && !tb_cli_id_count_arg(opt, v, &set.max_tasks))
                        return 2;
                if (!strcmp(opt, "--max-running") &&
                    !tb_cli_id_count_arg(opt, v, &set.max_running))
                        return 2;
                if (!strcmp(opt, "--run-now-rate") &&
                    tb_identity_quota_rate_parse(v, &set.run_now_rate, err, sizeof(err))) {
                        tb_cli_fail("%s", err);
                        return 2;
                }
                any = true;
        }
        if (!any) {
                tb_cli_fail("group set: give at least one of --max-tasks, --max-running, "
                            "--run-now-rate; usage: taskbus admin %s", usage);
                return 2;
        }
        if (!tb_cli_id_connect(db))
                return 1;
        tb_err_t e = tb_identity_group_quota_set(db->conn, actor, argv[3], &set, &now, err,
                                                 sizeof(err));
        if (e) {
                tb_cli_fail("group set: %s", err);
                return tb_cli_id_status(e);
        }
        tb_cli_id_quotas_print(argv[3], &now);
        return 0;
}

static int tb_cli_id_group_show(tb_cli_id_db_t *db, const char *group) {
        char err[1024];
        bool found = false;
        tb_store_group_quota_t q;
        int64_t running = 0, queued = 0;
        if (tb_identity_name_check("group name", group, err, sizeof(err))) {
                tb_cli_fail("group show: %s", err);
                return 2;
        }
        if (!tb_cli_id_connect(db))
                return 1;
        if (tb_store_identity_quota_get(db->conn, group, &found, &q, err, sizeof(err)) ||
            (found && tb_store_claims_group_usage(db->conn, group, &running, &queued, err,
                                                  sizeof(err)))) {
                tb_cli_fail("group show: %s", err);
                return 1;
        }
        if (!found) {
                tb_cli_fail("group show: no group '%s'; list groups with: taskbus admin group "
                            "list", group);
                return 1;
        }
        tb_cli_id_quotas_print(group, &q);
        printf("%-14s %lld\n%-14s %lld\n", "running", (long long)running, "queued",
               (long long)queued);
        return 0;
}

static int tb_cli_id_group(tb_cli_id_db_t *db, const char *actor, int argc, char **argv) {
        char err[1024];
        const char *what = argv[2];
        tb_err_t e;
        if (!strcmp(what, "add-member") || !strcmp(what, "remove-member")) {
                bool add = !strcmp(what, "add-member");
                if (!tb_cli_id_argc(argc, 5, 5,
                                    add ? "group add-member GROUP USER"
                                        : "group remove-member GROUP USER"))
                        return 2;
                if (!tb_cli_id_connect(db))
                        return 1;
                e = add ? tb_identity_group_add_member(db->conn, actor, argv[3], argv[4], err,
                                                       sizeof(err))
                        : tb_identity_group_remove_member(db->conn, actor, argv[3], argv[4], err,
                                                          sizeof(err));
                if (e) {
                        tb_cli_fail("group %s: %s", what, err);
                        return tb_cli_id_status(e);
                }
                printf(add ? "added '%s' to group '%s'\n" : "removed '%s' from group '%s'\n",
                       argv[4], argv[3]);
                return 0;
        }
        if (!strcmp(what, "list"))
                return tb_cli_id_argc(argc, 3, 3, "group list") ? tb_cli_id_group_list(db) : 2;
        if (!strcmp(what, "set"))
                return tb_cli_id_group_set(db, actor, argc, argv);
        if (!strcmp(what, "show"))
                return tb_cli_id_argc(argc, 4, 4, "group show GROUP")
                               ? tb_cli_id_group_show(db, argv[3])
                               : 2;
        tb_cli_fail("admin group: unknown command '%s' (add-member, remove-member, list, set, "
                    "show)", what);
        return 2;
}

/* ---- audit --------------------------------------------------------------- */

static int tb_cli_id_audit(tb_cli_id_db_t *db, int argc, char **argv) {
        long limit = 50;
        for (int i = 2; i < argc; i++) {
                const char *v = NULL;
                if (!strcmp(argv[i], "--limit") && i + 1 < argc)
                        v = argv[++i];
                else if (!strncmp(argv[i], "--limit=", 8))
                        v = argv[i] + 8;
                else {
                        tb_cli_fail("audit: unexpected argument '%s'; usage: taskbus admin "
                                    "audit [--limit N]",
                                    argv[i]);
                        return 2;
                }
                char *end = NULL;
                errno = 0;
                limit = strtol(v, &end, 10);
                if (errno || !*v || *end || limit < 1 || limit > 10000) {
                        tb_cli_fail("--limit: '%s' is not a number from 1 to 10000", v);
                        return 2;
                }
        }
        char err[1024], t[32];
        json_t *rows = NULL;
        if (!tb_cli_id_connect(db))
                return 1;
        if (tb_store_audit_list(db->conn, limit, &rows, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("audit: %s", err);
                return 1;
        }
        printf("%-24s %-28s %-20s %-24s %s\n", "AT", "ACTOR", "ACTION", "TARGET", "DETAILS");
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
                printf("%-24s %-28s %-20s %-24s %s\n",
                       tb_cli_id_ms(json_object_get(row, "at"), t), tb_cli_id_str(row, "actor"),
                       tb_cli_id_str(row, "action"), tb_cli_id_str(row, "target"),
                       tb_cli_id_str(row, "details"));
        json_decref(rows);
        return 0;
}

/* ---- entry point --------------------------------------------------------- */

int tb_cli_admin_identity(int argc, char **argv, tb_config_t *conf, bool *handled) {
        *handled = false;
        if (argc < 2)
                return 0;
        const char *group = argv[1];
        if (strcmp(group, "user") && strcmp(group, "token") && strcmp(group, "group") &&
            strcmp(group, "audit"))
                return 0;
        *handled = true;
        if (strcmp(group, "audit") && argc < 3) {
                tb_cli_fail("admin %s: missing command; usage:", group);
                tb_cli_admin_identity_usage(stderr);
                return 2;
        }

        char actor[384];
        tb_cli_actor(actor, sizeof(actor));
        tb_cli_id_db_t db = {.conf = conf};
        int rc;
        if (!strcmp(group, "user"))
                rc = tb_cli_id_user(&db, actor, argc, argv);
        else if (!strcmp(group, "token"))
                rc = tb_cli_id_token(&db, actor, argc, argv);
        else if (!strcmp(group, "group"))
                rc = tb_cli_id_group(&db, actor, argc, argv);
        else
                rc = tb_cli_id_audit(&db, argc, argv);
        tb_cli_id_db_close(&db);
        return rc;
}
