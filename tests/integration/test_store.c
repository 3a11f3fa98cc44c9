/**
 * @file test_store.c
 * @brief core/lib/store/pool.c and migrate.c against the real PostgreSQL
 *        of the local stack: the embedded migrations (once, concurrently, tamper detection, failed
 *        and out-of-order migrations), the pool (bound, blocking, reset of a
 *        terminated backend, rollback on release) and exec's errors.
 *
 * Each test gets a throwaway database tbtest_<random> (created through the
 * "postgres" database, dropped WITH (FORCE) afterwards), so tests neither
 * collide with the dev database nor with each other. The server is the one
 * of $TB_TEST_PG, else $TASKBUS_PG, else the stack's default; the test
 * expects it on this host (it watches terminated backends exit).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/claims.h"
#include "store/runs.h"
#include "store/store.h"
#include "support.h"

/* pg_locks is cluster-wide: count only our database's advisory locks. */
#define ADVISORY_LOCKS                                                                    \
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "       \
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
#define DEFAULT_PG "postgresql://taskbus@127.0.0.1:55432/taskbus"

static char test_db[64];
static char test_url[1024];
static PGconn *admin; /* connected to the test database, outside the pool */

static const char *base_url(void) { return tbt_env("TB_TEST_PG", tbt_env("TASKBUS_PG", DEFAULT_PG)); }

/* Connect to the server of base_url(), database \p dbname. */
static PGconn *connect_db(const char *dbname) {
        const char *const keys[] = {"dbname", "dbname", NULL};
        const char *const vals[] = {base_url(), dbname, NULL};
        PGconn *c = PQconnectdbParams(keys, vals, 1);
        cr_assert(c && PQstatus(c) == CONNECTION_OK, "cannot connect to %s (db %s): %s",
                  base_url(), dbname, c ? PQerrorMessage(c) : "out of memory");
        return c;
}

static void sql_ok(PGconn *c, const char *sql) {
        PGresult *r = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(r);
        cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
        PQclear(r);
}

/* First column of the first row of \p sql with one optional parameter. */
static long long sql_int(PGconn *c, const char *sql, const char *param) {
        const char *params[] = {param};
        PGresult *r = PQexecParams(c, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
        cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql,
                  PQresultErrorMessage(r));
        long long v = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        return v;
}

static void setup(void) {
        unsigned char rnd[6];
        cr_assert_eq(tb_random_bytes(rnd, sizeof(rnd)), TB_OK);
        snprintf(test_db, sizeof(test_db), "tbtest_%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5]);
        PGconn *pg = connect_db("postgres");
        char sql[128];
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", test_db);
        sql_ok(pg, sql);
        /* The pool's URL: the same server and user, our database. */
        const char *pass = PQpass(pg);
        snprintf(test_url, sizeof(test_url), "host='%s' port='%s' user='%s' dbname='%s'%s%s%s",
                 PQhost(pg), PQport(pg), PQuser(pg), test_db, pass && *pass ? " password='" : "",
                 pass && *pass ? pass : "", pass && *pass ? "'" : "");
        PQfinish(pg);
        admin = connect_db(test_db);
}

static void teardown(void) {
        if (admin)
                PQfinish(admin);
        admin = NULL;
        if (!*test_db)
                return;
        PGconn *pg = connect_db("postgres");
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", test_db);
        PQclear(PQexec(pg, sql));
        PQfinish(pg);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

static tb_store_t *open_store(int pool_size) {
        char err[512] = "";
        setenv("TASKBUS_PG", test_url, 1);
        tb_config_t *conf = NULL;
        cr_assert_eq(tb_config_load(NULL, &conf, err, sizeof(err)), TB_OK, "config: %s", err);
        conf->pg_pool_size = pool_size;
        tb_store_t *store = NULL;
        cr_assert_eq(tb_store_open(conf, &store, err, sizeof(err)), TB_OK, "open: %s", err);
        tb_config_destroy(conf);
        return store;
}

static int migration_count(void) {
        int n = 0;
        for (const tb_migration_t *m = tb_migrations; m->name; m++)
                n++;
        return n;
}

/* ---- migrations -------------------------------------------------------- */

Test(store, embedded_table_is_sorted_and_has_init) {
        cr_assert_gt(migration_count(), 0);
        cr_assert_eq(tb_migrations[0].version, 1);
        cr_assert_str_eq(tb_migrations[0].name, "init");
        cr_assert_not_null(strstr(tb_migrations[0].sql, "CREATE TABLE tasks"));
        for (const tb_migration_t *m = tb_migrations + 1; m->name; m++)
                cr_assert_gt(m->version, m[-1].version);
}

Test(store, migrate_applies_all_and_records_them) {
        tb_store_t *store = open_store(2);
        PGconn *c = tb_store_acquire(store);
        char err[512] = "";
        int applied = -1, version = -1;
        int n = migration_count();

        cr_assert_eq(tb_store_schema_version(c, &version, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(version, 0, "a fresh database has no schema");

        cr_assert_eq(tb_store_migrate(c, &applied, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(applied, n);
        cr_assert_eq(tb_store_schema_version(c, &version, err, sizeof(err)), TB_OK, "%s", err);
        const tb_migration_t *last = &tb_migrations[n - 1];
        cr_assert_eq(version, last->version);

        /* One row per migration, its name, and the SHA-256 of its text
         * computed by the server independently. */
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM schema_migrations", NULL), n);
        for (const tb_migration_t *m = tb_migrations; m->name; m++) {
                char ver[16];
                snprintf(ver, sizeof(ver), "%d", m->version);
                const char *params[] = {ver, m->name, m->sql};
                PGresult *r = PQexecParams(
                        admin,
                        "SELECT name = $2 AND checksum = encode(sha256(convert_to($3, 'UTF8')), "
                        "'hex') AND applied_at <= now() FROM schema_migrations WHERE version = $1",
                        3, NULL, params, NULL, NULL, 0);
                cr_assert_eq(PQntuples(r), 1, "version %d not recorded: %s", m->version,
                             PQresultErrorMessage(r));
                cr_assert_str_eq(PQgetvalue(r, 0, 0), "t", "row of %04d_%s is wrong", m->version,
                                 m->name);
                PQclear(r);
        }
        /* ... and the data model exists. */
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM tasks", NULL), 0);
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM run_claims", NULL), 0);
        /* the lock is not left behind */
        cr_assert_eq(sql_int(admin, ADVISORY_LOCKS,
                             NULL), 0);

        /* Again: nothing to do. */
        applied = -1;
        cr_assert_eq(tb_store_migrate(c, &applied, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(applied, 0);
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM schema_migrations", NULL), n);

        tb_store_release(store, c);
        tb_store_destroy(store);
}

struct migrator {
        tb_store_t *store;
        pthread_barrier_t *start;
        int applied;
        tb_err_t err;
        char errstr[512];
};

static void *migrate_thread(void *arg) {
        struct migrator *mg = arg;
        PGconn *c = tb_store_acquire(mg->store);
        pthread_barrier_wait(mg->start);
        mg->err = tb_store_migrate(c, &mg->applied, mg->errstr, sizeof(mg->errstr));
        tb_store_release(mg->store, c);
        return NULL;
}

static bool two_waiting_on_lock(void *arg) {
        (void)arg;
        return sql_int(admin,
                       ADVISORY_LOCKS " AND NOT granted",
                       NULL) == 2;
}

Test(store, concurrent_migrate_applies_each_once) {
        int n = migration_count();
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 3);
        struct migrator mg[2] = {{0}, {0}};

        /* Hold the migration lock so both migrators are provably waiting
         * on it together, then let them race. */
        char key[24];
        snprintf(key, sizeof(key), "%lld", (long long)TB_STORE_MIGRATION_LOCK);
        const char *kp[] = {key};
        PQclear(PQexecParams(admin, "SELECT pg_advisory_lock($1::bigint)", 1, NULL, kp, NULL,
                             NULL, 0));

        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
                mg[i].store = open_store(1);
                mg[i].start = &start;
                mg[i].applied = -1;
                cr_assert_eq(pthread_create(&th[i], NULL, migrate_thread, &mg[i]), 0);
        }
        pthread_barrier_wait(&start);
        cr_assert(tbt_wait_until(two_waiting_on_lock, NULL, 10000),
                  "both migrators should block on the advisory lock");
        PGresult *r = PQexecParams(admin, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, kp,
                                   NULL, NULL, 0);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
        for (int i = 0; i < 2; i++) {
                pthread_join(th[i], NULL);
                cr_assert_eq(mg[i].err, TB_OK, "migrator %d: %s", i, mg[i].errstr);
                tb_store_destroy(mg[i].store);
        }
        pthread_barrier_destroy(&start);
        cr_assert_eq(mg[0].applied + mg[1].applied, n, "applied %d + %d, expected %d in all",
                     mg[0].applied, mg[1].applied, n);
        cr_assert(mg[0].applied == 0 || mg[1].applied == 0, "one of them must find nothing to do");
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM schema_migrations", NULL), n);
}

Test(store, tampered_checksum_is_reported) {
        tb_store_t *store = open_store(1);
        PGconn *c = tb_store_acquire(store);
        char err[512] = "";
        int applied = -1;
        cr_assert_eq(tb_store_migrate(c, &applied, err, sizeof(err)), TB_OK, "%s", err);

        sql_ok(admin, "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1");
        applied = -1;
        tb_err_t e = tb_store_migrate(c, &applied, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_CONFLICT, "got %s: %s", tb_err_name(e), err);
        cr_assert_eq(applied, 0);
        cr_assert_not_null(strstr(err, "migration 0001_init was changed after it was applied"),
                           "%s", err);
        cr_assert_not_null(strstr(err, "schemas/sql/0001_init.sql"), "%s", err);
        /* the lock was released on the error path, the connection is clean */
        cr_assert_eq(sql_int(admin, ADVISORY_LOCKS,
                             NULL), 0);
        cr_assert_eq(PQtransactionStatus(c), PQTRANS_IDLE);
        tb_store_release(store, c);
        tb_store_destroy(store);
}

Test(store, failed_migration_is_rolled_back_and_names_the_line) {
        tb_store_t *store = open_store(1);
        PGconn *c = tb_store_acquire(store);
        char err[512] = "";
        int applied = -1, version = -1;
        const tb_migration_t broken[] = {
                {1, "first", "CREATE TABLE t_first (x int);"},
                {2, "broken", "CREATE TABLE t_ok (x int);\nCREATE TABLE t_bad (\n    x intt\n);\n"},
                {0, NULL, NULL},
        };
        tb_err_t e = tb_store_migrate_list(c, broken, &applied, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "got %s: %s", tb_err_name(e), err);
        cr_assert_eq(applied, 1, "0001 ran before the failure");
        cr_assert_not_null(strstr(err, "migration 0002_broken at line 3"), "%s", err);
        cr_assert_not_null(strstr(err, "type \"intt\" does not exist"), "%s", err);
        cr_assert_not_null(strstr(err, "[SQLSTATE 42704]"), "%s", err);
        cr_assert_eq(tb_store_schema_version(c, &version, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(version, 1);
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM pg_tables WHERE tablename = 't_ok'",
                             NULL), 0, "nothing of the failed migration may remain");

        /* A migration that commits by itself would escape its transaction. */
        const tb_migration_t commits[] = {
                {1, "first", "CREATE TABLE t_first (x int);"},
                {2, "commits", "CREATE TABLE t_c (x int); COMMIT;"},
                {0, NULL, NULL},
        };
        e = tb_store_migrate_list(c, commits, &applied, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_INVALID, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "0002_commits"), "%s", err);

        /* 0003 applied, then a build appears with an 0002 it never ran. */
        const tb_migration_t skip[] = {
                {1, "first", "CREATE TABLE t_first (x int);"},
                {3, "third", "CREATE TABLE t_third (x int);"},
                {0, NULL, NULL},
        };
        cr_assert_eq(tb_store_migrate_list(c, skip, &applied, err, sizeof(err)), TB_OK, "%s",
                     err);
        cr_assert_eq(applied, 1);
        const tb_migration_t gap[] = {
                {1, "first", "CREATE TABLE t_first (x int);"},
                {2, "second", "CREATE TABLE t_second (x int);"},
                {3, "third", "CREATE TABLE t_third (x int);"},
                {0, NULL, NULL},
        };
        e = tb_store_migrate_list(c, gap, &applied, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_CONFLICT, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "migration 0002_second was never applied"), "%s", err);

        /* An unsorted table is the caller's bug, refused before any SQL. */
        const tb_migration_t unsorted[] = {
                {2, "b", "SELECT 1"}, {1, "a", "SELECT 1"}, {0, NULL, NULL}};
        e = tb_store_migrate_list(c, unsorted, &applied, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_INVALID, "got %s: %s", tb_err_name(e), err);

        cr_assert_eq(sql_int(admin, ADVISORY_LOCKS,
                             NULL), 0);
        tb_store_release(store, c);
        tb_store_destroy(store);
}

/* ---- pool ---------------------------------------------------------------- */

struct borrower {
        tb_store_t *store;
        PGconn *got;
        atomic_bool done;
};

static void *borrow_thread(void *arg) {
        struct borrower *b = arg;
        b->got = tb_store_acquire(b->store);
        atomic_store(&b->done, true);
        return NULL;
}

static bool one_waiting(void *arg) {
        tb_store_stats_t st;
        tb_store_stats(arg, &st);
        return st.waiting == 1;
}

Test(store, pool_is_bounded_blocks_and_unblocks) {
        tb_store_t *store = open_store(2);
        tb_store_stats_t st;
        tb_store_stats(store, &st);
        cr_assert_eq(st.size, 2);
        cr_assert_eq(st.open, 1, "one connection is made at open, the rest lazily");
        cr_assert_eq(st.in_use, 0);

        PGconn *a = tb_store_acquire(store);
        PGconn *b = tb_store_acquire(store);
        cr_assert(a && b && a != b);
        cr_assert_neq(PQbackendPID(a), PQbackendPID(b));
        tb_store_stats(store, &st);
        cr_assert_eq(st.open, 2);
        cr_assert_eq(st.in_use, 2);

        /* Full: a bounded wait gives up, after its timeout. */
        int64_t t0 = tb_mono_us();
        cr_assert_null(tb_store_acquire_timeout(store, 150));
        cr_assert_geq(tb_mono_us() - t0, 150000);

        /* An unbounded wait blocks until a release. */
        struct borrower br = {.store = store};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, borrow_thread, &br), 0);
        cr_assert(tbt_wait_until(one_waiting, store, 10000));
        cr_assert(!atomic_load(&br.done), "acquire must block while the pool is full");
        tb_store_release(store, a);
        pthread_join(th, NULL);
        cr_assert_eq(br.got, a, "the waiter gets the released connection");

        /* Never more than pool_size sessions on the server. */
        cr_assert_eq(sql_int(admin,
                             "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                             "AND application_name = 'taskbus'",
                             test_db),
                     2);
        tb_store_release(store, b);
        tb_store_release(store, br.got);
        tb_store_stats(store, &st);
        cr_assert_eq(st.in_use, 0);
        cr_assert_eq(st.waiting, 0);
        /* releasing twice is logged and ignored */
        tb_store_release(store, a);
        tb_store_stats(store, &st);
        cr_assert_eq(st.in_use, 0);
        tb_store_destroy(store);
}

static bool backend_gone(void *arg) {
        const char *pid = arg;
        if (sql_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pid))
                return false;
        /* gone from the view is not yet exited: wait for the process itself
         * (its exit is what closes the socket) */
        return kill((pid_t)atoi(pid), 0) == -1 && errno == ESRCH;
}

static void terminate(int pid) {
        char p[16];
        snprintf(p, sizeof(p), "%d", pid);
        cr_assert_eq(sql_int(admin, "SELECT pg_terminate_backend($1::int)::int", p), 1);
        cr_assert(tbt_wait_until(backend_gone, p, 10000), "backend %d did not exit", pid);
}

Test(store, terminated_connection_is_reset_on_acquire) {
        tb_store_t *store = open_store(1);
        char err[512] = "";
        PGresult *r = NULL;

        PGconn *c = tb_store_acquire(store);
        int pid1 = PQbackendPID(c);
        tb_store_release(store, c);
        terminate(pid1);

        c = tb_store_acquire(store);
        cr_assert_eq(PQstatus(c), CONNECTION_OK);
        cr_assert_neq(PQbackendPID(c), pid1, "a new session must replace the terminated one");
        cr_assert_eq(tb_store_exec(c, "ping", "SELECT 1", 0, NULL, &r, err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "1");
        PQclear(r);

        /* Killed while borrowed: the statement fails with TB_ERR_PG, and the
         * next borrower gets a working connection. */
        int pid2 = PQbackendPID(c);
        terminate(pid2);
        tb_err_t e = tb_store_exec(c, "ping", "SELECT 1", 0, NULL, &r, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "got %s: %s", tb_err_name(e), err);
        cr_assert_null(r);
        cr_assert_not_null(strstr(err, "ping: lost the connection to PostgreSQL"), "%s", err);
        tb_store_release(store, c);
        c = tb_store_acquire(store);
        cr_assert_eq(tb_store_exec(c, "ping", "SELECT 1", 0, NULL, NULL, err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert_neq(PQbackendPID(c), pid2);
        tb_store_release(store, c);
        tb_store_destroy(store);
}

Test(store, release_rolls_back_open_transaction) {
        tb_store_t *store = open_store(1);
        char err[512] = "";
        sql_ok(admin, "CREATE TABLE items (id int PRIMARY KEY)");

        PGconn *c = tb_store_acquire(store);
        int pid = PQbackendPID(c);
        cr_assert_eq(tb_store_begin(c, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_store_exec(c, "insert item", "INSERT INTO items VALUES (1)", 0, NULL,
                                   NULL, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(PQtransactionStatus(c), PQTRANS_INTRANS);
        tb_store_release(store, c); /* forgot to commit */

        c = tb_store_acquire(store);
        cr_assert_eq(PQtransactionStatus(c), PQTRANS_IDLE);
        cr_assert_eq(PQbackendPID(c), pid, "a ROLLBACK, not a reconnect, cleans it");
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM items", NULL), 0,
                     "the uncommitted insert must be rolled back");

        /* A failed transaction too. */
        cr_assert_eq(tb_store_begin(c, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_neq(tb_store_exec(c, "bad", "SELECT nope", 0, NULL, NULL, err, sizeof(err)),
                      TB_OK);
        cr_assert_eq(PQtransactionStatus(c), PQTRANS_INERROR);
        tb_store_release(store, c);
        c = tb_store_acquire(store);
        cr_assert_eq(PQtransactionStatus(c), PQTRANS_IDLE);
        cr_assert_eq(PQbackendPID(c), pid);
        cr_assert_eq(tb_store_exec(c, "ping", "SELECT 1", 0, NULL, NULL, err, sizeof(err)), TB_OK,
                     "%s", err);
        tb_store_release(store, c);
        tb_store_destroy(store);
}

/* A connection of \p store to the test database, migrated to the end. */
static PGconn *migrated_conn(tb_store_t *store) {
        PGconn *c = tb_store_acquire(store);
        char err[512] = "";
        int applied = -1;
        cr_assert_eq(tb_store_migrate(c, &applied, err, sizeof(err)), TB_OK, "%s", err);
        return c;
}

/* ---- the reaper's choice ----------------------------------------------------- */

/* A run is taken for LOST only once both its nominal time and its emission
 * are older than the timeout: a backfill's RunRequest, emitted now for an
 * occurrence of yesterday, is not LOST before an executor could read it. */
Test(store, unclaimed_runs_count_from_the_later_of_nominal_time_and_emission) {
        tb_store_t *store = open_store(1);
        PGconn *c = migrated_conn(store);
        char err[512] = "";
        sql_ok(admin, "INSERT INTO runs (run_id, task_id, security_group, nominal_time, status, "
                      "scheduled_at) VALUES "
                      "('backfilled', 't', 'g', now() - interval '2 days', 'scheduled', now()), "
                      "('stale', 't', 'g', now() - interval '2 days', 'scheduled', "
                      "now() - interval '20 minutes'), "
                      "('held', 't', 'g', now() + interval '1 hour', 'scheduled', "
                      "now() - interval '20 minutes'), "
                      "('unprojected', 't', 'g', now() - interval '20 minutes', 'scheduled', "
                      "NULL)");
        PGresult *r = NULL;
        cr_assert_eq(tb_store_begin(c, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_store_claims_take_unclaimed(c, "ex-1", "host", "", 15 * 60 * 1000, &r,
                                                    err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(tb_store_commit(c, err, sizeof(err)), TB_OK, "%s", err);
        char got[128] = "";
        for (int i = 0; i < PQntuples(r); i++) {
                strcat(got, i ? "," : "");
                strncat(got, PQgetvalue(r, i, 0), 40);
        }
        PQclear(r);
        /* in nominal time order */
        cr_assert_str_eq(got, "stale,unprojected", "taken for LOST: %s", got);
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM run_claims WHERE run_id = "
                                    "'backfilled'", NULL),
                     0, "the run emitted now is left for an executor");
        tb_store_release(store, c);
        tb_store_destroy(store);
}

/* A run's result projected before its RunRequest gets the default log
 * expiry, and its output may be archived with it; the RunRequest's shorter
 * retention then moves both, or the output outlives its retention. */
Test(store, a_changed_log_expiry_moves_the_archived_output_too) {
        tb_store_t *store = open_store(1);
        PGconn *c = migrated_conn(store);
        char err[512] = "";
        sql_ok(admin, "INSERT INTO runs (run_id, task_id, security_group, nominal_time, status, "
                      "log_expires_at) VALUES ('r1', 't', 'g', now(), 'succeeded', "
                      "now() + interval '30 days'), ('r2', 't', 'g', now(), 'succeeded', "
                      "now() + interval '30 days')");
        sql_ok(admin, "INSERT INTO run_logs (run_id, seq, stream, at, data, expires_at) VALUES "
                      "('r1', 0, 'STDOUT', now(), 'a', now() + interval '30 days'), "
                      "('r1', 1, 'STDOUT', now(), 'b', NULL), "
                      "('r2', 0, 'STDOUT', now(), 'c', now() + interval '30 days')");
        char at[32];
        snprintf(at, sizeof(at), "%lld", (long long)(tb_now_ms() + 1000));
        cr_assert_eq(tb_store_runs_set_log_expiry(c, "r1", at, err, sizeof(err)), TB_OK, "%s",
                     err);
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM run_logs WHERE run_id = 'r1' AND "
                                    "seq = 0 AND expires_at < now() + interval '1 minute'",
                             NULL),
                     1, "the archived row follows the run's new expiry");
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM run_logs WHERE expires_at IS NULL",
                             NULL),
                     1, "a row not settled yet is left to the archiver");
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM run_logs WHERE run_id = 'r2' AND "
                                    "expires_at > now() + interval '29 days'",
                             NULL),
                     1, "another run's output is untouched");
        tb_store_release(store, c);
        tb_store_destroy(store);
}

/* ---- exec errors --------------------------------------------------------- */

Test(store, exec_errors_carry_sqlstate_and_map_conflicts) {
        tb_store_t *store = open_store(2);
        char err[512] = "";
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire(store);
        sql_ok(admin, "CREATE TABLE items (id int PRIMARY KEY, v text)");

        const char *p1[] = {"1", NULL};
        cr_assert_eq(tb_store_exec(c, "insert item", "INSERT INTO items VALUES ($1, $2)", 2, p1,
                                   NULL, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(sql_int(admin, "SELECT count(*) FROM items WHERE v IS NULL", NULL), 1,
                     "a NULL parameter is SQL NULL");

        tb_err_t e = tb_store_exec(c, "insert item", "INSERT INTO items VALUES ($1, $2)", 2, p1,
                                   &r, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_CONFLICT, "got %s: %s", tb_err_name(e), err);
        cr_assert_null(r);
        cr_assert_not_null(strstr(err, "insert item: duplicate key value violates unique "
                                       "constraint \"items_pkey\""), "%s", err);
        cr_assert_not_null(strstr(err, "Key (id)=(1) already exists."), "%s", err);
        cr_assert_not_null(strstr(err, "[SQLSTATE 23505]"), "%s", err);

        e = tb_store_exec(c, "list items", "SELEC * FROM items", 0, NULL, NULL, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "list items: syntax error at or near \"SELEC\""), "%s",
                           err);
        cr_assert_not_null(strstr(err, "[SQLSTATE 42601]"), "%s", err);

        /* Client-side refusal (parameter count): still a message, no crash. */
        e = tb_store_exec(c, "count", "SELECT $1::int + $2::int", 1, p1, NULL, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "count: "), "%s", err);

        /* Serialization failure (40001) is a conflict too. */
        cr_assert_eq(tb_store_exec(c, "begin", "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL,
                                   NULL, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(tb_store_exec(c, "snapshot", "SELECT count(*) FROM items", 0, NULL, NULL,
                                   err, sizeof(err)),
                     TB_OK, "%s", err);
        sql_ok(admin, "UPDATE items SET v = 'admin' WHERE id = 1");
        e = tb_store_exec(c, "update item", "UPDATE items SET v = 'pool' WHERE id = 1", 0, NULL,
                          NULL, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_CONFLICT, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "[SQLSTATE 40001]"), "%s", err);
        /* committing the failed transaction is an error, not a silent rollback */
        e = tb_store_commit(c, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "rolled back"), "%s", err);
        cr_assert_eq(PQtransactionStatus(c), PQTRANS_IDLE);

        /* A successful result is the caller's. */
        cr_assert_eq(tb_store_exec(c, "read item", "SELECT v FROM items WHERE id = $1", 1, p1, &r,
                                   err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(PQntuples(r), 1);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "admin");
        PQclear(r);

        tb_store_release(store, c);
        tb_store_destroy(store);
}

Test(store, open_reports_bad_url_without_password) {
        char err[512] = "";
        tb_config_t *conf = tb_config_defaults();
        cr_assert_not_null(conf);
        free(conf->pg_url);
        /* port 1 on localhost: refused at once */
        conf->pg_url = strdup("postgresql://someone:sekrit@127.0.0.1:1/nodb");
        tb_store_t *store = (tb_store_t *)&err; /* must be overwritten with NULL */
        tb_err_t e = tb_store_open(conf, &store, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "got %s: %s", tb_err_name(e), err);
        cr_assert_null(store);
        cr_assert_not_null(strstr(err, "postgres.url: cannot connect to PostgreSQL"), "%s", err);
        cr_assert_not_null(strstr(err, "port 1"), "%s", err);
        cr_assert_null(strstr(err, "sekrit"), "the password must not leak: %s", err);
        cr_assert_null(strchr(err, '\n'), "one line: %s", err);

        conf->pg_pool_size = 0;
        e = tb_store_open(conf, &store, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_INVALID, "got %s: %s", tb_err_name(e), err);
        cr_assert_not_null(strstr(err, "postgres.pool_size"), "%s", err);
        tb_config_destroy(conf);
}

Test(store, pool_with_statement_timeout_cancels_long_statements) {
        char err[512] = "";
        setenv("TASKBUS_PG", test_url, 1);
        tb_config_t *conf = NULL;
        cr_assert_eq(tb_config_load(NULL, &conf, err, sizeof(err)), TB_OK, "config: %s", err);
        tb_store_t *store = NULL;
        cr_assert_eq(tb_store_open_with(conf, 1, 200, &store, err, sizeof(err)), TB_OK, "%s", err);
        tb_config_destroy(conf);

        PGconn *c = tb_store_acquire(store);
        tb_err_t e = tb_store_exec(c, "sleep", "SELECT pg_sleep(5)", 0, NULL, NULL, err,
                                   sizeof(err));
        cr_assert_neq(e, TB_OK, "a 5 s statement ran to its end under a 200 ms timeout");
        cr_assert(strstr(err, "57014"), "not cancelled by the statement timeout: %s", err);
        /* The connection is still usable, and a reset (after a server-side
         * termination) keeps the timeout. */
        PGresult *r = NULL;
        cr_assert_eq(tb_store_exec(c, "show", "SHOW statement_timeout", 0, NULL, &r, err,
                                   sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "200ms");
        PQclear(r);
        PQreset(c);
        cr_assert_eq(tb_store_exec(c, "show", "SHOW statement_timeout", 0, NULL, &r, err,
                                   sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "200ms");
        PQclear(r);
        tb_store_release(store, c);
        tb_store_destroy(store);
}
