/**
 * @file store/quarantine.h
 * @brief The quarantine table (schemas/sql/0005_quarantine.sql): records a
 *        consuming role can never apply as they are, kept raw with their
 *        error, and the one classifier of PostgreSQL failures that decides
 *        what is quarantined (permanent: the record's own content) and what
 *        is retried (transient: the database, not the record).
 *
 * Every statement on the table is in quarantine.c. Writers: bus/pgsink.c
 * (projector, archiver, `taskbus replay`), inside the batch's transaction.
 * Readers: `taskbus admin quarantine` (cli/quarantine.c).
 */
#ifndef TB_STORE_QUARANTINE_H
#define TB_STORE_QUARANTINE_H

#include "bus/bus.h"
#include "tb.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/** What a failure says about the record that met it. */
typedef enum tb_store_fault {
        /** The database, not the record: retry the batch after a backoff. */
        TB_STORE_FAULT_TRANSIENT = 0,
        /** The record's own content: it will fail the same way every time. */
        TB_STORE_FAULT_PERMANENT,
} tb_store_fault_t;

/**
 * Classify a failed statement by its SQLSTATE. Permanent: class 22 (data
 * exception: invalid text, out of range, bad JSON...), 23 (integrity:
 * NOT NULL, CHECK, unique, foreign key), 54 (program limit: index row size,
 * too many columns...) and 42804 (datatype mismatch: a value of the wrong
 * JSON type reached a typed column). Everything else is transient, on
 * purpose: 08 (connection),
 * 40001/40P01 (serialization, deadlock), 53 (resources), 55P03 (lock), 57
 * (statement timeout, shutdown), 58 (system), and any code that does not
 * say it is the record's fault (a bug in our SQL must not quarantine every
 * record). NULL or "" (no SQLSTATE: libpq lost the connection) is transient.
 * @locality any thread (pure).
 */
tb_store_fault_t tb_store_quarantine_classify(const char *sqlstate);

/** One record to set aside (every pointer borrowed). */
typedef struct tb_store_quarantine_rec {
        const char *role;  /**< "projector", "archiver" */
        const char *topic;
        int32_t partition;
        int64_t offset;
        const void *key; /**< NULL: no key */
        size_t key_len;
        const tb_header_t *headers; /**< a NULL value is a header without one */
        size_t header_cnt;
        const void *value; /**< NULL: no value */
        size_t value_len;
        const char *error;    /**< why (any bytes: stored as printable ASCII) */
        const char *sqlstate; /**< NULL or "": not a PostgreSQL refusal */
} tb_store_quarantine_rec_t;

/**
 * Insert \p rec into quarantine (status new), in the caller's transaction.
 * Idempotent on (role, topic, partition, offset): *\p inserted (may be NULL)
 * says whether the row is new.
 * @locality any thread (one connection per caller).
 */
tb_err_t tb_store_quarantine_insert(PGconn *conn, const tb_store_quarantine_rec_t *rec,
                                    bool *inserted, char *errstr, size_t errstr_size);

/**
 * The rows matching every non-NULL filter, newest first, at most \p limit.
 * *\p out (caller PQclear()s) has the columns id, role, topic, partition,
 * offset, status, first_seen (ISO 8601 UTC), sqlstate ('' if none),
 * value_len, error.
 */
tb_err_t tb_store_quarantine_list(PGconn *conn, const char *role, const char *topic,
                                  const char *status, int limit, PGresult **out, char *errstr,
                                  size_t errstr_size);

/** One row, whole (tb_store_quarantine_get()); free with tb_store_quarantine_row_free(). */
typedef struct tb_store_quarantine_row {
        int64_t id;
        char *role, *topic, *error, *sqlstate, *status, *first_seen, *status_changed;
        int32_t partition;
        int64_t offset;
        tb_buf_t key, value;   /**< raw bytes */
        bool has_key, has_value;
        tb_header_t *headers; /**< header_cnt, names NUL-terminated copies, values raw */
        size_t header_cnt;
} tb_store_quarantine_row_t;

/** Read row \p id into \p row (caller frees it, also on error).
 *  @returns TB_ERR_NOT_FOUND if there is none. */
tb_err_t tb_store_quarantine_get(PGconn *conn, int64_t id, tb_store_quarantine_row_t *row,
                                 char *errstr, size_t errstr_size);
void tb_store_quarantine_row_free(tb_store_quarantine_row_t *row);

/** Set the status of row \p id to \p status ("retried", "dropped").
 *  @returns TB_ERR_NOT_FOUND if there is no such row. */
tb_err_t tb_store_quarantine_set_status(PGconn *conn, int64_t id, const char *status,
                                        char *errstr, size_t errstr_size);

#endif /* TB_STORE_QUARANTINE_H */
