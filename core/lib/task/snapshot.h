/**
 * @file task/snapshot.h
 * @brief What a run copies of its task at fire time: the RunSnapshot of a
 *        RunRequest (schemas/RunRequest.avsc), built from the Avro TaskSpec
 *        JSON. The one builder, for the scheduler's fires and for backfill.
 * @locality any thread.
 */
#ifndef TB_TASK_SNAPSHOT_H
#define TB_TASK_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>

/**
 * @brief The RunSnapshot of the TaskSpec JSON \p spec (tb_task_to_spec()'s
 *        shape): name, script, argv, security_group, executor,
 *        executor_options, expiry_ms, overlap, max_attempts and
 *        log_retention_ms, each with its schema default when the spec lacks it.
 * @returns a new reference, or NULL when out of memory.
 */
json_t *tb_task_run_snapshot(const json_t *spec);

/**
 * @brief The parameter values of a run nobody passed values to: each declared
 *        parameter (spec "parameters") with a default, at that default.
 * @returns a new reference (an object, maybe empty), or NULL when out of memory.
 */
json_t *tb_task_default_params(const json_t *spec);

/**
 * @brief Whether a RunResult of \p status (the Avro symbol, "FAILED") and
 *        \p infra_error is a failure the task's retries apply to: FAILED,
 *        TIMED_OUT, LOST, or an infrastructure error of any status but the
 *        ones that are no failure. The scheduler retries it while attempt <
 *        max_attempts; the notifier calls the last one a failure.
 */
bool tb_task_result_retryable(const char *status, bool infra_error);

#endif /* TB_TASK_SNAPSHOT_H */
