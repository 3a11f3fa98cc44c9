/**
 * @file store/claims.h
 * @brief The run_claims table family: who runs a run (run_claims, one row
 *        per run ever claimed), its lease, its cancellation request, and the
 *        SQL function taskbus_claim_run() that takes a claim under the task's
 *        overlap policy (schemas/sql/0002_executor.sql). Only this file's
 *        functions name those tables.
 */
#ifndef TB_STORE_CLAIMS_H
#define TB_STORE_CLAIMS_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdbool.h>

/**
 * @brief Ask the executor running \p run_id to cancel it.
 *
 * Sets cancel_requested on the run's claim; the owning executor cancels the
 * run within about a second and publishes it as CANCELLED with the error
 * "cancelled: <reason>". A run that is claimed but not started yet (waiting
 * for its nominal time) is finished as CANCELLED without being started.
 *
 * @param conn   an idle connection (autocommit), or one inside the caller's
 *               transaction: the request takes effect when that commits
 * @param run_id the run
 * @param reason why, shown to users; NULL: "cancelled by request"
 * @returns TB_OK; TB_ERR_NOT_FOUND "run X is not running" when no executor
 *          holds a running claim on it (never claimed, or already finished);
 *          TB_ERR_INVALID for an empty run id; TB_ERR_PG.
 * @locality any thread
 */
tb_err_t tb_store_claims_request_cancel(PGconn *conn, const char *run_id, const char *reason,
                                    char *errstr, size_t errstr_size);

/**
 * @brief Ask for every running run of \p task_id to be cancelled (task
 *        deletion, `taskbus tasks cancel`); as tb_store_claims_request_cancel().
 *
 * @param count if not NULL, receives how many runs were asked to stop (0 is
 *              not an error: the task had nothing running)
 * @returns TB_OK, TB_ERR_INVALID for an empty task id, or TB_ERR_PG.
 * @locality any thread
 */
tb_err_t tb_store_claims_cancel_task_runs(PGconn *conn, const char *task_id, const char *reason,
                                      int *count, char *errstr, size_t errstr_size);

/**
 * @brief Whether \p run_id was ever claimed, and the status its claim ended
 *        with ("" while it runs, or when it ended without one).
 * @returns TB_OK or TB_ERR_PG. @locality any thread
 */
tb_err_t tb_store_claims_status(PGconn *conn, const char *run_id, bool *claimed, char *status,
                                size_t status_size, char *errstr, size_t errstr_size);

#endif /* TB_STORE_CLAIMS_H */
