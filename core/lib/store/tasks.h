/**
 * @file store/tasks.h
 * @brief The task table family: tasks (the projection's current state of
 *        every task, one row per live task) and task_history (every version
 *        of every task, DELETED included). Written by the projection
 *        (projection/projection.h) only; read by the REST API, the scheduler's
 *        load, and the CLI (`history`, `region failover`, `replay`). Only this
 *        file's functions name those tables.
 *
 * Reads that feed a row-by-row JSON encoder return the PGresult (caller
 * PQclears it; NULL on error) with the columns each function documents.
 * Every function takes the caller's connection and runs inside whatever
 * transaction the caller opened. @locality any thread.
 */
#ifndef TB_STORE_TASKS_H
#define TB_STORE_TASKS_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/** The columns of tb_store_tasks_get() and tb_store_tasks_list(): id, version,
 *  spec (text), paused, created_at (ms), updated_at (ms), created_by, and
 *  created_at as a list cursor carries it (microseconds, so that the keyset
 *  is exact). */
enum { TB_STORE_TASKS_COL_ID = 0, TB_STORE_TASKS_COL_CREATED = 7 };

/** One task visible to \p groups (a text[] literal); TB_STORE_TASKS_COL_*
 *  columns, 0 or 1 row. */
tb_err_t tb_store_tasks_get(PGconn *conn, const char *id, const char *groups, PGresult **res,
                            char *errstr, size_t errstr_size);

/** The home region of a task visible to \p groups, into \p home (empty when
 *  the task is unknown or not visible). */
tb_err_t tb_store_tasks_home(PGconn *conn, const char *id, const char *groups, char *home,
                             size_t home_size, char *errstr, size_t errstr_size);

/** One page of the tasks visible to \p groups (a text[] literal of
 *  \p group_cnt elements), newest first (created_at, id), TB_STORE_TASKS_COL_*
 *  columns, each group read in keyset order from its index and merged. NULL
 *  filters match everything.
 *  @param cur_key, cur_id the keyset of the last row of the previous page
 *  @param paused "true"/"false" @param labels a jsonb object the labels contain
 *  @param last_outcome a text[] literal: the status of the task's latest
 *         finished run is one of them (store/runs.h TB_STORE_RUNS_LAST_OUTCOME)
 *  @param limit the number of rows (text) */
tb_err_t tb_store_tasks_list(PGconn *conn, const char *groups, size_t group_cnt,
                             const char *cur_key, const char *cur_id, const char *name_prefix,
                             const char *paused, const char *labels, const char *last_outcome,
                             const char *limit, PGresult **res, char *errstr,
                             size_t errstr_size);

/** The schedules of the tasks of \p groups (a JSON array text) that are not
 *  paused, by id: id, name, security_group, the spec's schedule, expires_at
 *  and jitter (a JSON object text: what tb_task_schedule() reads), created_at
 *  (ms, the schedule's anchor). For the dashboard's next fires. */
tb_err_t tb_store_tasks_schedules(PGconn *conn, const char *groups, PGresult **res,
                                  char *errstr, size_t errstr_size);

/** Columns of tb_store_tasks_history_at() and tb_store_tasks_history_page():
 *  version, type, at (ms), actor, command_id, changed_fields (JSON text),
 *  spec (text, NULL once deleted). */
/** The newest version of \p id at or before \p at_ms (text), visible to \p groups. */
tb_err_t tb_store_tasks_history_at(PGconn *conn, const char *id, const char *groups,
                                   const char *at_ms, PGresult **res, char *errstr,
                                   size_t errstr_size);
/** A page of \p id's versions after \p after_version (NULL: from the first),
 *  oldest first, at most \p limit (text) rows. */
tb_err_t tb_store_tasks_history_page(PGconn *conn, const char *id, const char *groups,
                                     const char *after_version, const char *limit,
                                     PGresult **res, char *errstr, size_t errstr_size);

/** Every version of \p id, oldest first, whatever its group (`taskbus history`):
 *  version, at (ms), actor, type, command_id, changed_fields (JSON text),
 *  spec (text), security_group. */
tb_err_t tb_store_tasks_history_all(PGconn *conn, const char *id, PGresult **res, char *errstr,
                                    size_t errstr_size);

/** Which of the (\p ids[i], \p versions[i]) pairs (a text[] and a bigint[]
 *  literal) the projection has reached: a row (id, version) for each task at
 *  that version or later, deleted ones included. */
tb_err_t tb_store_tasks_projected(PGconn *conn, const char *ids, const char *versions,
                                  PGresult **res, char *errstr, size_t errstr_size);

/** The tasks homed in \p region, by id (`taskbus region failover`): id,
 *  version, epoch, spec (text), created_at (ms), created_by. */
tb_err_t tb_store_tasks_homed_in(PGconn *conn, const char *region, PGresult **res,
                                 char *errstr, size_t errstr_size);

/** DECLARE \p cursor (in the caller's transaction) over the live tasks of
 *  task-events partition \p partition, as the commands role rebuilds them:
 *  id, version, epoch, spec (text: the normalized task), created_at (ms),
 *  created_by. */
tb_err_t tb_store_tasks_snapshot_cursor(PGconn *conn, const char *cursor, int32_t partition,
                                        char *errstr, size_t errstr_size);

/** Which of \p ids (a text[] literal) the projection has any event of,
 *  deleted tasks included: one row (task_id, the security group of its
 *  latest event) each. */
tb_err_t tb_store_tasks_ids_used(PGconn *conn, const char *ids, PGresult **res, char *errstr,
                                 size_t errstr_size);

/** Does task_history hold an event of \p id newer, by (epoch, version), than
 *  (\p epoch, \p version)? Into *\p newer. */
tb_err_t tb_store_tasks_newer_exists(PGconn *conn, const char *id, int64_t epoch, int64_t version,
                                     bool *newer, char *errstr, size_t errstr_size);

/** How many tasks the projection holds. */
tb_err_t tb_store_tasks_count(PGconn *conn, int64_t *count, char *errstr, size_t errstr_size);

/** Empty the task projection (tasks and task_history): `taskbus replay --force`. */
tb_err_t tb_store_tasks_truncate(PGconn *conn, char *errstr, size_t errstr_size);

/**
 * Declare the cursor \p cursor over the tasks of event partition \p partition
 * (the scheduler's load; FETCH it, then CLOSE it, in the caller's
 * transaction): id, version, spec (text), created_at (ms), epoch, and for a
 * task a failover moved to \p region (epoch > 0, homed there) the nominal
 * time (ms) of its last scheduled or misfire run, else NULL.
 */
tb_err_t tb_store_tasks_partition_cursor(PGconn *conn, const char *cursor, int32_t partition,
                                         const char *region, char *errstr, size_t errstr_size);

/**
 * *\p count: the tasks of security group \p group in the event partitions
 * \p parts (\p n of them) as the projection has them (deleted tasks have no
 * row): the commands role's count of the partitions another commands process
 * holds, for the max_tasks quota.
 */
tb_err_t tb_store_tasks_group_count(PGconn *conn, const char *group, const int32_t *parts,
                                    size_t n, int64_t *count, char *errstr,
                                    size_t errstr_size);

/* ---- the projection's writes (projection/projection.c) ---- */

/** Insert the history row of one TaskEvent (once). Parameters in order:
 *  task_id, version, event_id, type, at (ms), actor, command_id,
 *  changed_fields (JSON array), spec (JSON or NULL), security_group (NULL: the
 *  previous version's), source_region, epoch. */
tb_err_t tb_store_tasks_history_insert(PGconn *conn, const char *const params[12],
                                       char *errstr, size_t errstr_size);
/** Upsert a task row unless a later version deleted it; a row only moves to
 *  a higher (epoch, version). Parameters: id, version, name, security_group,
 *  user_id, spec, paused, labels, home_region, epoch, created_at (ms),
 *  created_by, updated_at (ms), event_partition, event_offset. */
tb_err_t tb_store_tasks_upsert(PGconn *conn, const char *const params[15], char *errstr,
                               size_t errstr_size);
/** Delete the task row \p id unless it is at (\p epoch, \p version) or later. */
tb_err_t tb_store_tasks_delete(PGconn *conn, const char *id, const char *version,
                               const char *epoch, char *errstr, size_t errstr_size);

/* ---- the set-based projection of a batch (`taskbus replay`) ---- */

/** The fields of one staged task event, in the order of a row of
 *  tb_store_tasks_stage(): one COPY text line of TB_STORE_TASKS_STAGE_FIELDS
 *  fields (store.h, tb_store_copy_field()). A field NULL for an event without
 *  a task: spec, security_group and everything after epoch. */
enum {
        TB_STORE_TASKS_STAGE_FIELDS = 22 /**< seq (its order in the batch), task_id, version,
                                           *   event_id, type, at (ms), actor, command_id,
                                           *   changed_fields (JSON array), spec (JSON),
                                           *   security_group, source_region, epoch, name,
                                           *   user_id, paused, labels (JSON), home_region,
                                           *   created_at (ms), created_by, event_partition,
                                           *   event_offset */
};

/** Copy \p len bytes of staged rows (COPY text format, see above) into this
 *  session's staging table, in the caller's transaction (emptied when it
 *  commits). */
tb_err_t tb_store_tasks_stage(PGconn *conn, const char *rows, size_t len, char *errstr,
                              size_t errstr_size);

/** Merge the staged events into task_history and tasks with the rules of
 *  tb_store_tasks_history_insert(), tb_store_tasks_upsert() and
 *  tb_store_tasks_delete() applied to each event in (epoch, version) order. */
tb_err_t tb_store_tasks_stage_merge(PGconn *conn, char *errstr, size_t errstr_size);

/** Task \p id whatever its group, for the notifier (its rules and retries):
 *  name, security_group, spec (text); 0 or 1 row. */
tb_err_t tb_store_tasks_get_any(PGconn *conn, const char *id, PGresult **res, char *errstr,
                                size_t errstr_size);
/* ---- tasks that wait for others (docs/scheduling.md "Dependencies") ---- */

/** The tasks with parents of the task-events partitions in \p parts (an
 *  int[] literal, "{0,3}") homed in \p region (or nowhere), not paused:
 *  rows id, version, spec (text), created_at (ms), event_partition.
 *  Caller PQclear()s. */
tb_err_t tb_store_tasks_dependents(PGconn *conn, const char *parts, const char *region,
                                   PGresult **res, char *errstr, size_t errstr_size);
/** Every task with parents: rows id, its after (JSON text), security_group. */
tb_err_t tb_store_tasks_after_graph(PGconn *conn, PGresult **res, char *errstr,
                                    size_t errstr_size);
/** Which of \p ids (a text[] literal) exist in \p groups: rows id. */
tb_err_t tb_store_tasks_visible_ids(PGconn *conn, const char *ids, const char *groups,
                                    PGresult **res, char *errstr, size_t errstr_size);
/** The tasks whose after names \p id, by id, at most \p limit: rows id,
 *  security_group. */
tb_err_t tb_store_tasks_children(PGconn *conn, const char *id, int limit, PGresult **res,
                                 char *errstr, size_t errstr_size);

#endif /* TB_STORE_TASKS_H */
