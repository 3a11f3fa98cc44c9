/**
 * @file store/store.h
 * @brief The PostgreSQL layer (libpq): a small connection pool, query helpers
 *        that surface server messages with context, and the versioned
 *        migrations in schemas/sql/ (embedded at build time), applied in
 *        order, once, recorded in schema_migrations.
 */
#ifndef TB_STORE_H
#define TB_STORE_H

#include "tb.h"
#include "config/config.h"
#include <libpq-fe.h>

typedef struct tb_store tb_store_t;

/**
 * Open a pool of up to conf->pg_pool_size connections to conf->pg_url
 * (connections are made lazily; the first one now, to report errors early).
 * Caller owns the pool (tb_store_destroy()).
 */
tb_err_t tb_store_open(const tb_config_t *conf, tb_store_t **out, char *errstr,
                       size_t errstr_size);
/** Close every connection; NULL allowed. */
void tb_store_destroy(tb_store_t *store);

/**
 * Borrow a connection (blocks while all are in use). A broken connection is
 * reset before being handed out. Return it with tb_store_release().
 * @locality any thread.
 */
PGconn *tb_store_acquire(tb_store_t *store);
/**
 * Like tb_store_acquire() but gives up after \p timeout_ms (< 0: wait forever).
 * Never blocks on a connect longer than libpq's connect_timeout (10 s unless
 * the URL sets one).
 * @returns the connection, or NULL on timeout (or if libpq is out of memory).
 * A connection that cannot be (re)established is still returned, with
 * PQstatus() CONNECTION_BAD: tb_store_exec() then reports why (TB_ERR_PG) and
 * the next acquire tries again.
 * @locality any thread.
 */
PGconn *tb_store_acquire_timeout(tb_store_t *store, int timeout_ms);
/** Return a connection; a connection left inside a transaction (or still
 *  running a query) is rolled back first, so the next borrower starts clean.
 *  NULL is ignored; a connection that is not from this pool is logged and
 *  left alone. @locality any thread. */
void tb_store_release(tb_store_t *store, PGconn *conn);

/** A snapshot of the pool, for monitoring and tests. */
typedef struct tb_store_stats {
        int size;     /**< the maximum (postgres.pool_size) */
        int open;     /**< connections made (idle + in use) */
        int in_use;   /**< connections borrowed right now */
        int waiting;  /**< threads blocked in tb_store_acquire*() */
} tb_store_stats_t;

/** Fill \p st with the pool's current counts. @locality any thread. */
void tb_store_stats(tb_store_t *store, tb_store_stats_t *st);

/**
 * Run a parameterised statement (text parameters, NULL = SQL NULL).
 * On success *\p res (may be NULL to discard) is owned by the caller
 * (PQclear); on error *\p res is set to NULL.
 * Errors read "WHAT: server message (detail) [SQLSTATE xxxxx]", \p what being
 * the caller's description of the statement ("insert task").
 * Error codes:
 *  - TB_ERR_CONFLICT: unique violation (23505), and also serialization
 *    failure (40001) and deadlock (40P01): all three mean "another writer
 *    got there first" and the caller's answer is the same, re-read and
 *    retry (or report the conflict) with a new transaction.
 *  - TB_ERR_PG: any other server error, and connection loss (the pool
 *    resets the connection on its next acquire).
 */
tb_err_t tb_store_exec(PGconn *conn, const char *what, const char *sql, int nparams,
                       const char *const *params, PGresult **res, char *errstr,
                       size_t errstr_size);

/**
 * The SQLSTATE of the last statement this thread ran through tb_store_exec()
 * (or the helpers below): "" after a success or a libpq failure without a
 * server message, "08006" when the connection was lost. For classifying a
 * failure whose errstr was rewritten or cut (store/quarantine.h).
 * @locality the calling thread's (thread-local, valid until its next statement).
 */
const char *tb_store_last_sqlstate(void);

/** BEGIN / COMMIT / ROLLBACK helpers with the same error convention. */
tb_err_t tb_store_begin(PGconn *conn, char *errstr, size_t errstr_size);
tb_err_t tb_store_commit(PGconn *conn, char *errstr, size_t errstr_size);
void tb_store_rollback(PGconn *conn);

/** One embedded migration. */
typedef struct tb_migration {
        int version;
        const char *name;
        const char *sql;
} tb_migration_t;

/** NULL-terminated (name == NULL) table, sorted by version, generated at build time. */
extern const tb_migration_t tb_migrations[];

/**
 * Apply every migration newer than the database's, each in its own
 * transaction, under an advisory lock (so concurrent callers serialize).
 * *\p applied (may be NULL) receives how many ran.
 */
tb_err_t tb_store_migrate(PGconn *conn, int *applied, char *errstr, size_t errstr_size);
/**
 * tb_store_migrate() with an explicit table \p migs (same shape as
 * tb_migrations[]: sorted by version, ended by name == NULL).
 *
 * Under pg_advisory_lock(TB_STORE_MIGRATION_LOCK) it creates
 * schema_migrations(version, name, checksum = SHA-256 hex of the SQL,
 * applied_at) if missing, then runs each migration newer than the highest
 * applied version in its own transaction together with its
 * schema_migrations row. \p conn must be idle (outside a transaction).
 * Errors:
 *  - TB_ERR_CONFLICT: an applied migration's checksum differs from \p migs
 *    ("migration 0001_init was changed after it was applied..."), or a
 *    migration older than the newest applied one was never applied.
 *  - TB_ERR_INVALID: \p migs is not sorted, or a migration ends its own
 *    transaction (COMMIT/ROLLBACK inside the file).
 *  - TB_ERR_PG: the server refused a statement; the message names the
 *    migration and the line of its file. Nothing of that migration is kept.
 * Migrations applied before the error stay applied (*\p applied counts them).
 */
tb_err_t tb_store_migrate_list(PGconn *conn, const tb_migration_t *migs, int *applied,
                               char *errstr, size_t errstr_size);

/** The advisory lock key held while migrating ("taskbus" in ASCII). */
#define TB_STORE_MIGRATION_LOCK 0x7461736b627573LL
/** The highest applied version (0 if none). */
tb_err_t tb_store_schema_version(PGconn *conn, int *version, char *errstr, size_t errstr_size);

#endif /* TB_STORE_H */
