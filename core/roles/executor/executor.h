/**
 * @file executor/executor.h
 * @brief The executor role: a consumer group on `runs` that claims each run
 *        in PostgreSQL (once, ever, across executors), applies the task's
 *        overlap policy, runs it through an executor plugin, streams its
 *        output to `run-logs` and publishes its RunResults on `run-results`.
 *
 * Claims, leases and cancellation (table run_claims, schemas/sql/0002_executor.sql
 * and 0008_group_quotas.sql):
 *  - Every consumed run is first queued in run_claims; the Kafka offset is
 *    committed after that, so a crash re-delivers at most runs that are
 *    then recognised as duplicates (metric taskbus_executor_duplicates_total).
 *    Executors with free slots take queued runs groups in turn, FIFO within
 *    a group, within each group's max_running; a run starts only once taken.
 *  - The owning executor renews lease_until every executor.lease/3. Every
 *    executor reaps claims whose lease expired (executor dead or stalled):
 *    they are published as LOST, so the scheduler's retry policy applies, and
 *    processes of the lost run still alive on the reaping host are killed.
 *  - Whoever wants a run stopped sets run_claims.cancel_requested (functions
 *    below); the owning executor, in whatever process, sees it within about
 *    500 ms and cancels the run through its plugin (status CANCELLED).
 *    The requests are store/claims.h's (tb_store_claims_request_cancel()).
 */
#ifndef TB_EXECUTOR_H
#define TB_EXECUTOR_H

#include "tb.h"
#include "daemon.h"

#include <libpq-fe.h>

/** The role descriptor (registered in core/roles.c). */
extern const tb_role_t tb_role_executor;

#endif /* TB_EXECUTOR_H */
