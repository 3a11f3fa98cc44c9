/**
 * @file store/claims.c
 * @brief The run_claims table family: run_claims and the SQL function
 *        taskbus_claim_run() (schemas/sql/0002_executor.sql).
 */
#include "store/claims.h"

#include "store/store.h"

#include <stdlib.h>

/* ---- cancellation requests (API, CLI) ------------------------------------------- */

/* Set cancel_requested on the running claims \p sql selects by \p id ($1),
 * with \p reason ($2) unless one was given before. \p what names the id in
 * the error ("run", "task"); *\p count receives the claims it marked. */
static tb_err_t tb_store_claims_cancel(PGconn *conn, const char *what, const char *stmt,
                                      const char *sql, const char *id, const char *reason,
                                      int *count, char *errstr, size_t errstr_size) {
        *count = 0;
        if (!id || !*id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cancel: a %s id is required", what);
        const char *p[] = {id, reason && *reason ? reason : "cancelled by request"};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, stmt, sql, 2, p, &r, errstr, errstr_size);
        if (e)
                return e;
        *count = atoi(PQcmdTuples(r));
        PQclear(r);
        return TB_OK;
}

tb_err_t tb_store_claims_request_cancel(PGconn *conn, const char *run_id, const char *reason,
                                    char *errstr, size_t errstr_size) {
        int hit;
        tb_err_t e = tb_store_claims_cancel(conn, "run", "request run cancellation",
                                           "UPDATE run_claims SET cancel_requested = true, "
                                           "cancel_reason = coalesce(cancel_reason, $2) "
                                           "WHERE run_id = $1 AND state = 'running'",
                                           run_id, reason, &hit, errstr, errstr_size);
        if (e)
                return e;
        if (!hit)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "run %s is not running (it finished, or no executor "
                                 "claimed it)", run_id);
        return TB_OK;
}

tb_err_t tb_store_claims_cancel_task_runs(PGconn *conn, const char *task_id, const char *reason,
                                      int *count, char *errstr, size_t errstr_size) {
        int n;
        tb_err_t e = tb_store_claims_cancel(conn, "task",
                                           "request cancellation of a task's runs",
                                           "UPDATE run_claims SET cancel_requested = true, "
                                           "cancel_reason = coalesce(cancel_reason, $2) "
                                           "WHERE task_id = $1 AND state = 'running'",
                                           task_id, reason, &n, errstr, errstr_size);
        if (count)
                *count = n;
        return e;
}

tb_err_t tb_store_claims_status(PGconn *conn, const char *run_id, bool *claimed, char *status,
                                size_t status_size, char *errstr, size_t errstr_size) {
        const char *cp[] = {run_id};
        PGresult *cl = NULL;
        *claimed = false;
        status[0] = '\0';
        tb_err_t e = tb_store_exec(conn, "read run claim",
                                   "SELECT state, coalesce(status, '') FROM run_claims "
                                   "WHERE run_id = $1",
                                   1, cp, &cl, errstr, errstr_size);
        if (e)
                return e;
        if (PQntuples(cl) > 0) {
                *claimed = true;
                tb_snprintf(status, status_size, "%s", PQgetvalue(cl, 0, 1));
        }
        PQclear(cl);
        return TB_OK;
}
