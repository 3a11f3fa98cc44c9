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
#include <stdint.h>

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

/** tb_store_claims_cancel_task_runs() for every task of \p task_ids (a text[]
 *  literal) in one statement: the deleted tasks of a replayed batch. */
tb_err_t tb_store_claims_cancel_tasks_runs(PGconn *conn, const char *task_ids,
                                           const char *reason, int *count, char *errstr,
                                           size_t errstr_size);

/**
 * @brief Whether \p run_id was ever claimed, and the status its claim ended
 *        with ("" while it runs, or when it ended without one).
 * @returns TB_OK or TB_ERR_PG. @locality any thread
 */
tb_err_t tb_store_claims_status(PGconn *conn, const char *run_id, bool *claimed, char *status,
                                size_t status_size, char *errstr, size_t errstr_size);

/* ---- the executor's claims (executor/claims.c, runs.c, lease.c) ---- */

/**
 * @brief Claim run \p run_id for executor \p executor_id with taskbus_claim_run()
 *        (advisory lock on the task, the task's overlap policy), with a lease
 *        of \p lease_ms. Call it inside the caller's transaction.
 * @param outcome receives taskbus_claim_run()'s answer ("claimed",
 *        "duplicate", "skipped:<runs>", "replaced:<runs>"), malloc'd (caller frees)
 * @returns TB_OK, TB_ERR_CONFLICT (serialization: retry), TB_ERR_PG.
 */
tb_err_t tb_store_claims_claim(PGconn *conn, const char *run_id, const char *task_id,
                               const char *executor_id, int64_t lease_ms, int64_t nominal_ms,
                               int attempt, const char *executor, const char *host,
                               const char *overlap, char **outcome, char *errstr,
                               size_t errstr_size);

/** Delete the running claim of \p run_id held by \p executor_id (a run
 *  handed back before it started); *\p deleted says whether there was one. */
tb_err_t tb_store_claims_release(PGconn *conn, const char *run_id, const char *executor_id,
                                 bool *deleted, char *errstr, size_t errstr_size);

/** Mark \p executor_id's running claim of \p run_id done with \p status
 *  (started at \p started_ms, 0: unknown). */
tb_err_t tb_store_claims_finish(PGconn *conn, const char *run_id, const char *executor_id,
                                const char *status, int64_t started_ms, char *errstr,
                                size_t errstr_size);

/** Renew (\p renew: by \p lease_ms) or just read \p executor_id's running
 *  claims: with \p renew every running claim, else only those with a
 *  cancellation request. Columns: run_id, cancel_requested, cancel_reason
 *  ("" if none). */
tb_err_t tb_store_claims_leases(PGconn *conn, const char *executor_id, bool renew,
                                int64_t lease_ms, PGresult **res, char *errstr,
                                size_t errstr_size);

/** Lock (FOR UPDATE SKIP LOCKED, in the caller's transaction) up to 100
 *  running claims whose lease expired, oldest first. Columns: run_id,
 *  task_id, executor_id, nominal_time (ms, 0 if unknown), attempt,
 *  executor, host. */
tb_err_t tb_store_claims_expired(PGconn *conn, PGresult **res, char *errstr,
                                 size_t errstr_size);

/** Mark the claim of \p run_id done with status LOST. */
tb_err_t tb_store_claims_mark_lost(PGconn *conn, const char *run_id, char *errstr,
                                   size_t errstr_size);

/* ---- outcomes decided at claim time (executor/claims.c), runs nobody claimed
 *      (executor/lease.c): docs/reliability.md, "No silent loss" ---- */

/** Mark the claim of \p run_id (just decided SKIPPED_OVERLAP by
 *  taskbus_claim_run(), in the caller's transaction) as having a result not
 *  yet delivered, with the result's \p error text. */
tb_err_t tb_store_claims_set_pending(PGconn *conn, const char *run_id, const char *error,
                                     char *errstr, size_t errstr_size);

/**
 * @brief Whether the claim of \p run_id has a result still to deliver (the
 *        process that decided it stopped before its delivery was confirmed).
 * @param status receives the result's status when *\p pending
 * @param error  receives the result's error text (malloc'd, caller frees; NULL
 *               unless *\p pending)
 */
tb_err_t tb_store_claims_pending(PGconn *conn, const char *run_id, bool *pending,
                                 char *status, size_t status_size, char **error,
                                 char *errstr, size_t errstr_size);

/** Clear the pending mark of \p run_id: its result's delivery was confirmed. */
tb_err_t tb_store_claims_result_sent(PGconn *conn, const char *run_id, char *errstr,
                                     size_t errstr_size);

/**
 * @brief Lock (FOR UPDATE SKIP LOCKED, in the caller's transaction) up to 100
 *        claims whose decided result (skip, cancel) is still pending more than
 *        \p older_ms after it was decided: the process that decided it stopped
 *        before Kafka confirmed it. Publish each, clear it with
 *        tb_store_claims_result_sent(), commit.
 * @param res columns run_id, task_id, nominal_time (ms), attempt, executor,
 *            status, error
 */
tb_err_t tb_store_claims_take_stale_pending(PGconn *conn, int64_t older_ms, PGresult **res,
                                            char *errstr, size_t errstr_size);

/**
 * @brief Claim, as done with status LOST for executor \p executor_id, up to
 *        100 runs still 'scheduled' in the runs table whose nominal time
 *        and emission (RunRequest.emitted_at) are both more than
 *        \p timeout_ms ago and that no executor ever claimed. In
 *        the caller's transaction: publish their LOST results, then commit
 *        (a rollback gives them back). The unique claim is the lock: a run
 *        is taken by one process only, and an executor that reads its
 *        RunRequest later finds it claimed. Runs of tasks homed in a region
 *        other than \p region (fired and claimed there) are left alone.
 * @param res columns run_id, task_id, nominal_time (ms), attempt, executor
 */
tb_err_t tb_store_claims_take_unclaimed(PGconn *conn, const char *executor_id,
                                        const char *host, const char *region,
                                        int64_t timeout_ms, PGresult **res, char *errstr,
                                        size_t errstr_size);

/* ---- the run queue (schemas/sql/0008_group_quotas.sql) ----
 *
 * Every RunRequest an executor consumes is enqueued (state 'queued') before
 * its Kafka offset is committed; executors with free slots take queued runs
 * with taskbus_take_runs(): groups in turn (round robin over every
 * executor), FIFO within a group, never more than a group's max_running
 * running at once. A queued run's cancellation (tb_store_claims_request_cancel())
 * finishes it as CANCELLED at the next take. */

/** A run to enqueue (strings borrowed). */
typedef struct tb_store_claims_enqueue {
        const char *run_id, *task_id, *executor_id, *executor, *group, *overlap;
        int64_t nominal_ms;
        int attempt;
        const void *request;   /**< the RunRequest record, for whoever takes it */
        size_t request_len;
} tb_store_claims_enqueue_t;

/**
 * @brief Enqueue \p q (taskbus_enqueue_run()); *\p duplicate when the run id
 *        was queued or claimed before (drop it). Call it inside the caller's
 *        transaction.
 * @returns TB_OK, TB_ERR_NOMEM, TB_ERR_CONFLICT (retry), TB_ERR_PG.
 * @locality the thread holding \p conn
 */
tb_err_t tb_store_claims_enqueue(PGconn *conn, const tb_store_claims_enqueue_t *q,
                                 bool *duplicate, char *errstr, size_t errstr_size);

/** A run taken from the queue. */
typedef struct tb_store_claims_taken {
        char *run_id;
        /** "claimed:<ids>", "replaced:<ids>", "skipped:<ids>" as
         *  tb_store_claims_claim(), or "cancelled:<reason>" (finished, not to run) */
        char *outcome;
        unsigned char *request;   /**< the RunRequest record (NULL if none was kept) */
        size_t request_len;
} tb_store_claims_taken_t;

/**
 * @brief Take up to \p max queued runs for \p executor_id (taskbus_take_runs()):
 *        runs of the plugins \p executors whose nominal time is at most
 *        \p horizon_ms ahead, each with a lease of \p lease_ms. \p max 0
 *        only finishes cancelled queued runs. Autocommit or the caller's
 *        transaction (the takes of every executor are serialized until it ends).
 * @param out receives *\p n taken runs; free with tb_store_claims_taken_free()
 * @returns TB_OK, TB_ERR_NOMEM, TB_ERR_PG.
 */
tb_err_t tb_store_claims_take(PGconn *conn, const char *executor_id, int max,
                              int64_t lease_ms, int64_t horizon_ms, const char *host,
                              const char *const *executors, size_t executor_cnt,
                              tb_store_claims_taken_t **out, size_t *n, char *errstr,
                              size_t errstr_size);
/** Free what tb_store_claims_take() returned; NULL allowed. */
void tb_store_claims_taken_free(tb_store_claims_taken_t *t, size_t n);

/** *\p position: the place of queued run \p run_id in its group's queue
 *  (1: next), 0 when it is not queued. */
tb_err_t tb_store_claims_queue_position(PGconn *conn, const char *run_id, int64_t *position,
                                        char *errstr, size_t errstr_size);
/** Runs of \p group running now (over every executor) and queued. */
tb_err_t tb_store_claims_group_usage(PGconn *conn, const char *group, int64_t *running,
                                     int64_t *queued, char *errstr, size_t errstr_size);

#endif /* TB_STORE_CLAIMS_H */
