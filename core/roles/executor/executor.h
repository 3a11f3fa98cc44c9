/**
 * @file executor/executor.h
 * @brief The executor role: a consumer group on `runs` that claims each run
 *        in PostgreSQL (once, ever, across executors), applies the task's
 *        overlap policy, runs it through an executor plugin, streams its
 *        output to `run-logs` and publishes its RunResults on `run-results`.
 *
 * Claims, leases and cancellation (table run_claims, schemas/sql/0002_executor.sql):
 *  - A run is started only after its claim is committed; the Kafka offset is
 *    committed after the claim, so a crash re-delivers at most runs that are
 *    then recognised as duplicates (metric taskbus_executor_duplicates_total).
 *  - The owning executor renews lease_until every executor.lease/3. Every
 *    executor reaps claims whose lease expired (executor dead or stalled):
 *    they are published as LOST, so the scheduler's retry policy applies, and
 *    processes of the lost run still alive on the reaping host are killed.
 *  - Whoever wants a run stopped sets run_claims.cancel_requested (functions
 *    below); the owning executor, in whatever process, sees it within about
 *    500 ms and cancels the run through its plugin (status CANCELLED).
 */
#ifndef TB_EXECUTOR_H
#define TB_EXECUTOR_H

#include "tb.h"
#include "daemon.h"

#include <libpq-fe.h>

/** The role descriptor (registered in core/roles.c). */
extern const tb_role_t tb_role_executor;

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
tb_err_t tb_executor_request_cancel(PGconn *conn, const char *run_id, const char *reason,
                                    char *errstr, size_t errstr_size);

/**
 * @brief Ask for every running run of \p task_id to be cancelled (task
 *        deletion, `taskbus tasks cancel`); as tb_executor_request_cancel().
 *
 * @param count if not NULL, receives how many runs were asked to stop (0 is
 *              not an error: the task had nothing running)
 * @returns TB_OK, TB_ERR_INVALID for an empty task id, or TB_ERR_PG.
 * @locality any thread
 */
tb_err_t tb_executor_cancel_task_runs(PGconn *conn, const char *task_id, const char *reason,
                                      int *count, char *errstr, size_t errstr_size);

#endif /* TB_EXECUTOR_H */
