/**
 * @file store/store.h
 * @brief The PostgreSQL layer (libpq), its umbrella header: a small
 *        connection pool and query helpers that surface server messages with
 *        context (pool.c); it includes the migration runner (migrate.h).
 *
 * Only core/lib/store/ names tables, one file per table family, each with its
 * header saying which tables it owns: migrate.h (schema_migrations),
 * identity.h (users, security_groups, group_members, api_tokens), audit.h
 * (admin_audit). The caller owns the connection and the transaction.
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
/**
 * Like tb_store_open() with a pool of \p size connections whose statements
 * are cancelled after \p statement_timeout_ms (0: no limit; a postgres.url
 * with its own options= replaces it). For the api role's own pool: what a
 * user can make it query is bounded, and the pool is not the one the
 * commands role authenticates with.
 */
tb_err_t tb_store_open_with(const tb_config_t *conf, int64_t size, int64_t statement_timeout_ms,
                            tb_store_t **out, char *errstr, size_t errstr_size);
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

/**
 * @brief \p in (a libpq message, may be NULL) as one line in \p out, with
 *        every password \p conninfo holds replaced by "****".
 *
 * libpq's parse errors quote the connection string, or the part of it that
 * is wrong ("invalid percent-encoded token: ..."): a message about a
 * connection made from a URL that may carry a password (postgres.url,
 * TASKBUS_PG, --into) goes through this before it is logged or returned.
 * The passwords are the URI's user:PASSWORD@ and every password=VALUE, as
 * written and percent- or backslash-decoded. \p conninfo NULL: no masking.
 * @locality any thread.
 */
void tb_store_oneline_redacted(const char *conninfo, const char *in, char *out,
                               size_t out_size);

/**
 * @brief One PostgreSQL connection (not a pool) to \p conninfo (a libpq URL),
 *        for a program that needs a single connection to a database that may
 *        not be postgres.url (the CLI's replay --into, history).
 * @returns TB_OK with *out owned by the caller (PQfinish), or TB_ERR_PG with
 *          libpq's first line of explanation.
 * @locality any thread.
 */
tb_err_t tb_store_connect_one(const char *conninfo, PGconn **out, char *errstr,
                              size_t errstr_size);

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

/** Statements queued in a pipeline before a sync reads their results (keeps
 *  both sides' socket buffers small: no deadlock on a large batch). */
#define TB_STORE_PIPELINE_SYNC_EVERY 256

/**
 * Pipeline mode (libpq's): between tb_store_pipeline_begin() and
 * tb_store_pipeline_end() on \p conn, a tb_store_exec() whose result is not
 * wanted (\p res NULL) is only sent, and returns TB_OK; its outcome is known
 * at the next sync (every TB_STORE_PIPELINE_SYNC_EVERY statements, a
 * statement whose result is wanted, which runs alone, and
 * tb_store_pipeline_end()), which returns the first failure (the server
 * skips the statements after it; the transaction is then failed). One round
 * trip per sync instead of one per statement: for a batch of writes in one
 * transaction whose failure the caller handles as a whole (bus/pgsink.c
 * applies the batch again row by row). tb_store_last_sqlstate() is the
 * failure's after tb_store_pipeline_end(). tb_store_rollback() ends a
 * pipeline. @locality the thread owning \p conn.
 */
tb_err_t tb_store_pipeline_begin(PGconn *conn, char *errstr, size_t errstr_size);
/** Sync, read every result, leave pipeline mode; NOOP when not in it. */
tb_err_t tb_store_pipeline_end(PGconn *conn, char *errstr, size_t errstr_size);

/** Append \p s to \p b as one element of a PostgreSQL array literal being
 *  built ("{" first, "}" last, by the caller): quoted, '"' and '\\' escaped. */
void tb_store_array_add(tb_buf_t *b, const char *s);

/**
 * A keyset page over several values of one column: append to \p sql \p n
 * copies of \p branch ("SELECT ... WHERE ... " ending so that "AND ..." may
 * follow) joined by UNION ALL, copy k restricted to \p column = element k of
 * the text[] parameter $\p param (a copy whose element repeats an earlier one
 * is planned away) and ended by \p order (the page's "ORDER BY ... LIMIT
 * n"). Each copy is then a LIMITed index scan in the page's order, and only
 * their at most n rows each are merged or sorted: never the whole set.
 */
void tb_store_union_per_element(tb_buf_t *sql, const char *branch, const char *column, int param,
                                size_t n, const char *order);

/** tb_store_exec() of the statement built in \p sql (TB_ERR_NOMEM when building
 *  it ran out of memory); frees \p sql. */
tb_err_t tb_store_exec_built(PGconn *conn, const char *what, tb_buf_t *sql, int nparams,
                             const char *const *params, PGresult **res, char *errstr,
                             size_t errstr_size);

/** Append \p s (NULL: SQL NULL) to \p b as one field of COPY's text format
 *  (backslash, tab, newline and carriage return escaped), then a tab, or a
 *  newline when it is the row's \p last field. */
void tb_store_copy_field(tb_buf_t *b, const char *s, bool last);

/**
 * Run \p sql, a `COPY ... FROM STDIN` (text format), feeding it the \p len
 * bytes of rows at \p data (built with tb_store_copy_field()), in the
 * caller's transaction; errors as tb_store_exec(). A row the server refuses
 * fails the whole COPY (the caller rolls back). @locality the thread owning
 * \p conn, not in pipeline mode.
 */
tb_err_t tb_store_copy_in(PGconn *conn, const char *what, const char *sql, const char *data,
                          size_t len, char *errstr, size_t errstr_size);

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

/* The migration runner (migrate.c), for the callers that include only this header. */
#include "store/migrate.h"

#endif /* TB_STORE_H */
