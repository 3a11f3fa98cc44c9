/**
 * @file store/runs.h
 * @brief The run table family: runs (the run history: one row per run,
 *        written by the projection from RunRequests and RunResults) and
 *        run_logs (each run's output, chunk by chunk, copied by the archiver
 *        from run-logs), with their retention. Read by the REST API and the
 *        scheduler. Only this file's functions name those tables.
 *
 * Reads that feed a row-by-row JSON encoder return the PGresult (caller
 * PQclears it; NULL on error) with the columns each function documents.
 * Every function takes the caller's connection and runs inside whatever
 * transaction the caller opened. @locality any thread.
 */
#ifndef TB_STORE_RUNS_H
#define TB_STORE_RUNS_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/** Columns of tb_store_runs_get() and tb_store_runs_list() (times in epoch ms). */
enum {
        TB_RC_ID, TB_RC_TASK, TB_RC_NOMINAL, TB_RC_ATTEMPT, TB_RC_STATUS, TB_RC_STARTED,
        TB_RC_FINISHED, TB_RC_EXIT, TB_RC_SIGNAL, TB_RC_EXECUTOR, TB_RC_HOST, TB_RC_OUTPUT,
        TB_RC_ERROR, TB_RC_TRIGGER, TB_RC_LOG_EXPIRES, TB_RC_INFRA, TB_RC_SCHEDULED,
        TB_RC_LOG_EXPIRED, TB_RC_GROUP, TB_RC_FINAL, TB_RC_AGE_MS,
        TB_RC_LAST_NOMINAL, /**< a range of fires not run: its last (NULL otherwise) */
        TB_RC_OCCURRENCES,  /**< nominal fires the row stands for (1 for a run) */
        TB_RC_TASK_NAME,    /**< the task's name now (NULL once the task is deleted) */
        TB_RC_PARAMS,       /**< the run's parameter values, a JSON object text */
};

/* ---- reads (the REST API, the scheduler) ---- */

/** The statuses of a finished run, as far as a task's last outcome goes
 *  (what the partial index runs_task_outcome of migration 0012 holds). */
#define TB_STORE_RUNS_OUTCOMES "'succeeded', 'failed', 'timed_out', 'cancelled', 'lost'"
/** SQL expression: the status of the latest finished run (nominal_time,
 *  run_id) of the task whose id is the SQL expression \p task, or NULL. One
 *  probe of runs_task_outcome; for store/tasks.c's task list, which filters
 *  on it (the runs family keeps the text that names its table). */
#define TB_STORE_RUNS_LAST_OUTCOME(task)                                                          \
        "(SELECT lo.status FROM runs lo WHERE lo.task_id = " task " AND lo.status IN ("          \
        TB_STORE_RUNS_OUTCOMES ") ORDER BY lo.nominal_time DESC, lo.run_id DESC LIMIT 1)"

/** Run \p id if its group is in \p groups (a JSON array text): 0 or 1 row. */
tb_err_t tb_store_runs_get(PGconn *conn, const char *id, const char *groups, PGresult **res,
                           char *errstr, size_t errstr_size);

/** A page of \p task_id's runs visible to \p groups, newest nominal time
 *  first (nominal_time, run_id), read in that order from an index (one scan
 *  per status when filtered, merged); \p task_id NULL: of every task of
 *  \p groups (GET /v1/runs: one scan per group, merged). NULL filters match
 *  everything.
 *  @param cur_nominal, cur_id the keyset of the previous page's last row
 *  @param statuses a text[] literal of \p status_cnt statuses
 *  @param since, until epoch ms (text) @param limit rows (text) */
tb_err_t tb_store_runs_list(PGconn *conn, const char *task_id, const char *groups,
                            const char *cur_nominal, const char *cur_id, const char *statuses,
                            size_t status_cnt, const char *since, const char *until,
                            const char *limit, PGresult **res, char *errstr,
                            size_t errstr_size);

/** Runs of groups \p groups (a JSON array text) with a nominal time in
 *  [\p since, \p until) (epoch ms, text), per status: status, runs (rows),
 *  fires (sum of occurrences: a range of skipped fires is one row). */
tb_err_t tb_store_runs_counts(PGconn *conn, const char *groups, const char *since,
                              const char *until, PGresult **res, char *errstr,
                              size_t errstr_size);

/** The fire lag of groups \p groups' scheduled first attempts with a nominal
 *  time in [\p since, \p until), per minute of nominal time: minute (epoch
 *  ms), fires, p50, p99, max (ms of scheduled_at - nominal_time, the
 *  RunRequest's emission time: docs/api.md "Fire lag"). */
tb_err_t tb_store_runs_fire_lag(PGconn *conn, const char *groups, const char *since,
                                const char *until, PGresult **res, char *errstr,
                                size_t errstr_size);

/** Whether \p task_id, or a run of it, is visible to \p groups (a task
 *  deleted since still has its runs). */
tb_err_t tb_store_runs_task_visible(PGconn *conn, const char *task_id, const char *groups,
                                    bool *visible, char *errstr, size_t errstr_size);

/** The nominal time (ms) of \p task_id's last scheduled or misfire run;
 *  *\p found false when it has none. */
tb_err_t tb_store_runs_last_scheduled(PGconn *conn, const char *task_id, bool *found,
                                      int64_t *nominal_ms, char *errstr, size_t errstr_size);

/** What reading a run's output needs to know of the run. */
typedef struct tb_store_runs_logstate {
        bool final;          /**< its status is final */
        bool expired;        /**< its output expired (or was purged) */
        bool started;        /**< it started */
        int64_t age_ms;      /**< since its row last changed */
        bool has_expires;    /**< log_expires_at is set */
        int64_t expires_ms;  /**< log_expires_at */
        bool eof;            /**< the output's eof chunk was copied */
} tb_store_runs_logstate_t;

/** The output state of run \p id. @returns TB_OK, TB_ERR_NOT_FOUND, or TB_ERR_PG. */
tb_err_t tb_store_runs_logstate(PGconn *conn, const char *id, tb_store_runs_logstate_t *st,
                                char *errstr, size_t errstr_size);

/*
 * A run's output is served as a text whose seq continuity is checked: a seq
 * missing from run_logs and not covered by the executor's loss marker (a
 * SYSTEM chunk "[taskbus: N chunks (B bytes) lost]" standing for N seqs) is
 * served as a row of its own, "[taskbus: N chunks lost]\n", at its first
 * missing seq. Markers belong to every stream's text. Byte offsets below
 * are offsets in that text.
 */

/** Rows of run \p id's text (of \p stream, NULL: all) from \p seq on, at
 *  most \p rows (text): seq, data (bytea text), gap ('t': a gap no marker
 *  covers), covers (the seqs the row stands for: the next row's seq is at
 *  least seq + covers). */
tb_err_t tb_store_runs_logs_from(PGconn *conn, const char *id, const char *seq,
                                 const char *stream, const char *rows, PGresult **res,
                                 char *errstr, size_t errstr_size);

/** Rows of run \p id's text (of \p stream or all) that end after byte \p from
 *  and start before byte \p to: seq, start (its first byte's offset), data
 *  (bytea text). */
tb_err_t tb_store_runs_logs_range(PGconn *conn, const char *id, const char *stream,
                                  const char *from, const char *to, PGresult **res,
                                  char *errstr, size_t errstr_size);

/** Run \p id's text (of \p stream or all) so far: the seq after its last row
 *  and its length in bytes. */
tb_err_t tb_store_runs_logs_size(PGconn *conn, const char *id, const char *stream,
                                 int64_t *next_seq, int64_t *bytes, char *errstr,
                                 size_t errstr_size);

/** For the live-log poller: each of runs \p ids (a text[] literal) that
 *  exists: run_id, its chunks copied so far, its row's updated_at (epoch
 *  us). A change in either tells its followers to read. */
tb_err_t tb_store_runs_logs_versions(PGconn *conn, const char *ids, PGresult **res,
                                     char *errstr, size_t errstr_size);

/* ---- the projection's writes (projection/projection.c) ---- */

/** Upsert a run from its RunRequest. Parameters: run_id, task_id,
 *  security_group, nominal_time (ms), attempt, trigger, emitted_at (ms),
 *  executor, log_retention_ms (NULL: the task's), params (the run's parameter
 *  values as a JSON object text; NULL: {}). */
tb_err_t tb_store_runs_upsert_request(PGconn *conn, const char *const params[10], char *errstr,
                                      size_t errstr_size);
/** Upsert a run from a RunResult; a status only replaces one of lower rank
 *  (taskbus_run_status_rank()). Parameters: run_id, task_id, nominal_time,
 *  attempt, status (lower case), started_at, finished_at, exit_code, signal,
 *  executor, host, output_bytes, infra_error, error, last_nominal_time (ms,
 *  NULL: not a range), occurrences, params (JSON object text; NULL: {}). */
tb_err_t tb_store_runs_upsert_result(PGconn *conn, const char *const params[17], char *errstr,
                                     size_t errstr_size);

/** What settling a run's log expiry needs (tb_store_runs_retention()). */
typedef struct tb_store_runs_retention {
        bool found, final;
        char group[256];          /**< the run's security group */
        int64_t end_ms;           /**< its end (or last update) */
        bool has_retention_ms;    /**< the run's own log_retention_ms is set */
        int64_t retention_ms;
        bool has_task_retention;  /**< its task's spec has a log_retention */
        char task_retention[64];  /**< that duration, as written */
} tb_store_runs_retention_t;

/** Fill in the group of run \p id from its task if it has none yet, then
 *  read what its log expiry depends on. */
tb_err_t tb_store_runs_retention(PGconn *conn, const char *id, tb_store_runs_retention_t *out,
                                 char *errstr, size_t errstr_size);
/** Set run \p id's log_expires_at to \p at_ms (epoch ms, text), and when it
 *  changes, the expiry of the output rows already archived with the earlier
 *  one (a RunResult projected before its RunRequest: the default retention,
 *  then the snapshot's). */
tb_err_t tb_store_runs_set_log_expiry(PGconn *conn, const char *id, const char *at_ms,
                                      char *errstr, size_t errstr_size);

/* ---- the archiver's writes ---- */

/** Copy one output chunk (once; not for a run whose log was purged).
 *  Parameters: run_id, seq, stream (lower case), at (ms), data (bytea text
 *  "\\x..."), eof ("true"/"false"). */
tb_err_t tb_store_runs_log_insert(PGconn *conn, const char *const params[6], char *errstr,
                                  size_t errstr_size);

/** The archiver's sweep steps, each in statements of at most \p batch rows,
 *  at most \p max_statements of them: *\p rows the rows it deleted (or
 *  updated), *\p other the second count, *\p batches the statements that
 *  did something. */
/** Copy runs.log_expires_at onto the run_logs rows that lack it. */
tb_err_t tb_store_runs_logs_settle(PGconn *conn, int64_t batch, int max_statements,
                                   int64_t *rows, int *batches, char *errstr,
                                   size_t errstr_size);
/** Delete expired chunks; *\p other: the runs whose log became purged. */
tb_err_t tb_store_runs_logs_expire(PGconn *conn, int64_t batch, int max_statements,
                                   int64_t *rows, int64_t *other, int *batches, char *errstr,
                                   size_t errstr_size);
/** Delete runs older than \p keep_ms with their chunks; *\p other: the
 *  leftover chunks deleted. */
tb_err_t tb_store_runs_purge_history(PGconn *conn, int64_t batch, int64_t keep_ms,
                                     int max_statements, int64_t *rows, int64_t *other,
                                     int *batches, char *errstr, size_t errstr_size);

/* ---- tasks that wait for others (docs/scheduling.md "Dependencies") ---- */

/** The latest final run of each task of \p tasks (a text[] literal) that
 *  finished at or after \p since_ms: rows task_id, run_id, status. A failed
 *  attempt is final only when it was the task's last (retries.max_attempts). */
tb_err_t tb_store_runs_dep_outcomes(PGconn *conn, const char *tasks, int64_t since_ms,
                                    PGresult **res, char *errstr, size_t errstr_size);
/** *\p found: whether run \p run_id is in runs. */
tb_err_t tb_store_runs_exists(PGconn *conn, const char *run_id, bool *found, char *errstr,
                              size_t errstr_size);
/** Set the parents (a JSON array of run ids) of run \p run_id. */
tb_err_t tb_store_runs_set_parents(PGconn *conn, const char *run_id, const char *parents,
                                   char *errstr, size_t errstr_size);
/** Set the trigger of run \p run_id, which no RunRequest set (a skip the
 *  scheduler decided: scheduled_at is null). */
tb_err_t tb_store_runs_set_trigger(PGconn *conn, const char *run_id, const char *trigger,
                                   char *errstr, size_t errstr_size);
/** The parents of run \p run_id (row: parents as JSON text; none: no row). */
tb_err_t tb_store_runs_parents(PGconn *conn, const char *run_id, PGresult **res, char *errstr,
                               size_t errstr_size);

#endif /* TB_STORE_RUNS_H */
