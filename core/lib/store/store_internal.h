/**
 * @file store/store_internal.h
 * @brief What the store files share and callers do not: the log subsystem
 *        name and the error helpers of pool.c. Not for callers outside
 *        core/lib/store/.
 */
#ifndef TB_STORE_INTERNAL_H
#define TB_STORE_INTERNAL_H

#include "store/store.h"

#include <jansson.h>

#define TB_STORE_SUBSYS "store"

/** \p in (libpq's multi-line message, may be NULL) as one line in \p out. */
void tb_store_oneline(const char *in, char *out, size_t out_size);

/**
 * Turn a result into our error convention (see tb_store_exec()). \p sql,
 * when given, is used to name the line of a syntax error (multi-line
 * migration files). @returns TB_OK for a successful result.
 */
tb_err_t tb_store_result_err(PGconn *conn, const PGresult *r, const char *what,
                             const char *sql, char *errstr, size_t errstr_size);

/**
 * An epoch-milliseconds column (text, as `(extract(epoch FROM t) * 1000)::bigint`
 * prints it) of row \p row as a new JSON integer, or JSON null for SQL NULL.
 * @returns a new reference, or NULL out of memory (json_pack()'s "o" then fails).
 */
json_t *tb_store_json_ms(const PGresult *r, int row, int col);

/**
 * Run the query \p sql (tb_store_exec()) and turn its rows, in order, into
 * *\p out: a JSON array (caller owns it) of what \p row builds from each
 * (a new reference; NULL means out of memory).
 * @returns TB_OK, TB_ERR_NOMEM ("WHAT: out of memory") or tb_store_exec()'s error.
 */
tb_err_t tb_store_query_json(PGconn *conn, const char *what, const char *sql, int nparams,
                             const char *const *params, json_t *(*row)(const PGresult *, int),
                             json_t **out, char *errstr, size_t errstr_size);

#endif /* TB_STORE_INTERNAL_H */
