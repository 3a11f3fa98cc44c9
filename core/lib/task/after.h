/**
 * @file task/after.h
 * @brief Tasks that wait for others (docs/scheduling.md "Dependencies").
 *
 * Normalized (REST) fields of a task with parents, absent when it has none:
 *   "after": [{"task": ID, "on": "succeeded"|"failed"|"finished"}] (1 to 16),
 *   "after_mode": "all"|"any", "after_deadline": "PT3H"|null.
 * Avro TaskSpec: after [{task, on: SUCCEEDED|FAILED|FINISHED}], after_mode
 * ALL|ANY, after_deadline_ms long|null ([], ALL, null for none).
 *
 * A task with after has a cron schedule (none given: "0 0 * * *" UTC): its
 * window is its local day, its first fire of the day the earliest it runs.
 */
#ifndef TB_TASK_AFTER_H
#define TB_TASK_AFTER_H

#include "task/task.h"
#include "schedule/tz.h"

/** The most parents a task may wait for. */
#define TB_TASK_AFTER_MAX 16

extern const char *const tb_task_after_on_names[];   /**< succeeded, failed, finished */
extern const char *const tb_task_after_mode_names[]; /**< all, any */

/** @returns true when \p in names after, after_mode or after_deadline. */
bool tb_task_after_present(const json_t *in);

/**
 * @brief Validate \p in's after, after_mode and after_deadline into \p out
 *        (nothing when after is absent or empty). Ids are checked for form
 *        only; a parent's existence and cycles need the graph
 *        (tb_task_after_cycle()).
 * @returns TB_OK or TB_ERR_INVALID (err: "after[2].task", ...).
 */
tb_err_t tb_task_v_after(const json_t *in, json_t *out, tb_task_err_t *err, bool *oom);

/** A normalized task with after must have a cron schedule. @returns TB_OK
 *  or TB_ERR_INVALID (field schedule). */
tb_err_t tb_task_after_schedule_check(const json_t *task, tb_task_err_t *err);

/** @returns a copy of \p in (new ref) with the default schedule of a task
 *  with after and no schedule ("0 0 * * *" UTC), or NULL when it needs none. */
json_t *tb_task_after_default_schedule(const json_t *in);

/** Put the Avro fields of \p task's after into \p spec ([] / ALL / null when none). */
void tb_task_after_to_spec(json_t *spec, const json_t *task, bool *bad, bool *oom);
/** Put the REST fields of \p spec's after into \p task (nothing when none). */
void tb_task_after_from_spec(json_t *task, const json_t *spec, bool *bad, bool *oom);

/** @returns the task ids of \p after as a PostgreSQL text[] literal
 *  ("{a,b}": ids are [A-Za-z0-9._:-], nothing to quote), malloc'd, or NULL. */
char *tb_task_after_ids_literal(const json_t *after);

/** @returns the normalized after array of task \p id (borrowed, NULL: none
 *  or unknown). */
typedef const json_t *(*tb_task_after_lookup_fn)(void *ud, const char *id);

/** @returns whether the message may name task \p id (one of the caller's groups). */
typedef bool (*tb_task_after_shown_fn)(void *ud, const char *id);

/**
 * @brief Refuse \p after of task \p id when it names \p id itself or a task
 *        that waits, through its own parents (\p lookup), for \p id.
 * @returns TB_OK or TB_ERR_INVALID with err field "after[i].task" and the
 *          cycle spelled out ("A -> B -> A"; a task \p shown (NULL: all)
 *          refuses is not named).
 */
tb_err_t tb_task_after_cycle(const char *id, const json_t *after, tb_task_after_lookup_fn lookup,
                             tb_task_after_shown_fn shown, void *ud, tb_task_err_t *err);

/** @returns the start (ms) of the dependency window holding \p now_ms: the
 *  local midnight in \p tz (NULL: UTC), or the first instant after it when
 *  a DST gap swallows it. */
int64_t tb_task_after_window_start(const tb_tz_t *tz, int64_t now_ms);

/** The run id of task \p task_id's dependency run in the window starting at
 *  \p window_ms: tb_schedule_run_id() with attempt 0, which no scheduled
 *  fire, retry or backfill uses, so the two never collide. */
void tb_task_after_run_id(const char *task_id, int64_t window_ms, char out[33]);

#endif /* TB_TASK_AFTER_H */
