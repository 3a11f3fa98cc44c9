/**
 * @file store/runs.c
 * @brief The run table family: runs and run_logs (store/runs.h).
 */
#include "store/runs.h"

#include "store/store.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* epoch milliseconds as text, for the 'epoch' + ms interval expressions */
#define TB_STORE_RUNS_TS(n) "('epoch'::timestamptz + $" #n "::bigint * interval '1 millisecond')"
#define TB_STORE_RUNS_MS(col) "(extract(epoch FROM " col ") * 1000)::bigint"
#define TB_STORE_RUNS_VISIBLE(n) \
        "security_group IN (SELECT jsonb_array_elements_text($" #n "::jsonb))"
/* Columns of TB_RC_*: keep both in step. */
#define TB_STORE_RUNS_COLS                                                                        \
        "run_id, task_id, " TB_STORE_RUNS_MS("nominal_time") ", attempt, status, "                \
        TB_STORE_RUNS_MS("started_at") ", " TB_STORE_RUNS_MS("finished_at") ", exit_code, signal, " \
        "executor, host, output_bytes, error, trigger, " TB_STORE_RUNS_MS("log_expires_at") ", "  \
        "infra_error, " TB_STORE_RUNS_MS("scheduled_at") ", "                                     \
        "(log_expires_at <= now() OR log_purged_at IS NOT NULL), "                              \
        "security_group, taskbus_run_status_rank(status) = 2, "                                 \
        "(extract(epoch FROM now() - updated_at) * 1000)::bigint, "                             \
        TB_STORE_RUNS_MS("last_nominal_time") ", occurrences, "                                  \
        /* the task's name now (NULL once deleted): one primary key probe */                   \
        "(SELECT t.name FROM tasks t WHERE t.id = task_id), params::text"

/* ---- reads ------------------------------------------------------------------------ */

tb_err_t tb_store_runs_get(PGconn *conn, const char *id, const char *groups, PGresult **res,
                           char *errstr, size_t errstr_size) {
        const char *params[] = {id, groups};
        return tb_store_exec(conn, "read run",
                             "SELECT " TB_STORE_RUNS_COLS " FROM runs WHERE run_id = $1 AND "
                             TB_STORE_RUNS_VISIBLE(2),
                             2, params, res, errstr, errstr_size);
}

/*
 * The filters of a page of runs, shared by a task's runs and the runs of
 * groups: $3, $4 the keyset of the previous page's last row, $6 since, $7
 * until (epoch ms); $5 the statuses (text[]) and $8 the rows are used by
 * each form as it reads.
 */
#define TB_STORE_RUNS_PAGE_FILTERS                                                             \
        "AND ($3::bigint IS NULL OR (nominal_time, run_id) < (" TB_STORE_RUNS_TS(3) ", $4::text)) " \
        "AND ($6::bigint IS NULL OR nominal_time >= " TB_STORE_RUNS_TS(6) ") "                 \
        "AND ($7::bigint IS NULL OR nominal_time < " TB_STORE_RUNS_TS(7) ") "
#define TB_STORE_RUNS_PAGE_ORDER "ORDER BY nominal_time DESC, run_id DESC LIMIT $8::int"

/*
 * A task's runs, newest first. Without a status filter the page is one scan
 * of runs_task_nominal (task_id, nominal_time DESC, run_id DESC) from the
 * cursor on; since/until bound the same scan. With ?status= the statement is
 * a UNION ALL of one branch per status, each a LIMITed scan of
 * runs_task_status (task_id, status, nominal_time DESC, run_id DESC;
 * migration 0011) in the page's order, and only their rows are merged, so
 * a rare status of a task with a million runs is found without reading its
 * other runs. Element k of $5 names branch k's status (a branch repeating an
 * earlier element is planned away). EXPLAIN on 10M runs:
 * docs/bench-results/reads-plans.txt.
 */
#define TB_STORE_RUNS_PAGE_WHERE                                                               \
        "task_id = $1 AND " TB_STORE_RUNS_VISIBLE(2) " " TB_STORE_RUNS_PAGE_FILTERS

/* Across groups, one LIMITed scan of runs_group_nominal (or, for runs going
 * on, runs_group_active) per group, merged: the order of the index is the
 * page's in each group, so no group's history is read beyond one page.
 * $1 is unused there ($1::text IS NULL keeps the parameter numbering). */
static const char tb_store_runs_sql_groups_page[] =
        "SELECT " TB_STORE_RUNS_COLS " FROM "
        "(SELECT DISTINCT g FROM jsonb_array_elements_text($2::jsonb) g) gs, "
        "LATERAL (SELECT * FROM runs WHERE security_group = gs.g AND $1::text IS NULL "
        TB_STORE_RUNS_PAGE_FILTERS "AND ($5::text[] IS NULL OR status = ANY($5::text[])) "
        TB_STORE_RUNS_PAGE_ORDER ") x " TB_STORE_RUNS_PAGE_ORDER;

tb_err_t tb_store_runs_list(PGconn *conn, const char *task_id, const char *groups,
                            const char *cur_nominal, const char *cur_id, const char *statuses,
                            size_t status_cnt, const char *since, const char *until,
                            const char *limit, PGresult **res, char *errstr,
                            size_t errstr_size) {
        const char *params[] = {task_id, groups, cur_nominal, cur_id,
                                statuses, since,  until,       limit};
        if (!task_id)
                return tb_store_exec(conn, "list runs of groups", tb_store_runs_sql_groups_page,
                                     8, params, res, errstr, errstr_size);
        tb_buf_t sql = {0};
        if (!statuses || !status_cnt) {
                /* $5 is NULL: bound all the same, so both forms take the same parameters */
                tb_buf_printf(&sql, "SELECT " TB_STORE_RUNS_COLS " FROM runs WHERE "
                                    TB_STORE_RUNS_PAGE_WHERE "AND $5::text[] IS NULL "
                                    TB_STORE_RUNS_PAGE_ORDER);
        } else {
                tb_buf_printf(&sql, "SELECT " TB_STORE_RUNS_COLS " FROM (");
                tb_store_union_per_element(&sql, "SELECT * FROM runs WHERE "
                                                 TB_STORE_RUNS_PAGE_WHERE,
                                           "status", 5, status_cnt, TB_STORE_RUNS_PAGE_ORDER);
                tb_buf_printf(&sql, ") AS r " TB_STORE_RUNS_PAGE_ORDER);
        }
        return tb_store_exec_built(conn, "list runs", &sql, 8, params, res, errstr, errstr_size);
}

/* The runs of groups $1 (a JSON array text) whose nominal time is in
 * [$2, $3) (epoch ms). */
#define TB_STORE_RUNS_RANGE                                                                       \
        "security_group = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) "               \
        "AND nominal_time >= " TB_STORE_RUNS_TS(2) " AND nominal_time < " TB_STORE_RUNS_TS(3)

tb_err_t tb_store_runs_counts(PGconn *conn, const char *groups, const char *since,
                              const char *until, PGresult **res, char *errstr,
                              size_t errstr_size) {
        const char *params[] = {groups, since, until};
        return tb_store_exec(conn, "count runs",
                             "SELECT status, count(*), sum(occurrences) FROM runs WHERE "
                             TB_STORE_RUNS_RANGE " GROUP BY status ORDER BY status",
                             3, params, res, errstr, errstr_size);
}

tb_err_t tb_store_runs_fire_lag(PGconn *conn, const char *groups, const char *since,
                                const char *until, PGresult **res, char *errstr,
                                size_t errstr_size) {
        const char *params[] = {groups, since, until};
        /* the scheduler's histogram observes first attempts of scheduled
         * fires (not misfires, retries or run-now): the same runs here */
        return tb_store_exec(conn, "fire lag per minute",
                             "SELECT " TB_STORE_RUNS_MS("m") ", count(*), "
                             "percentile_disc(0.5) WITHIN GROUP (ORDER BY lag), "
                             "percentile_disc(0.99) WITHIN GROUP (ORDER BY lag), max(lag) "
                             "FROM (SELECT date_trunc('minute', nominal_time) AS m, "
                             "GREATEST(" TB_STORE_RUNS_MS("scheduled_at") " - "
                             TB_STORE_RUNS_MS("nominal_time") ", 0) AS lag FROM runs WHERE "
                             TB_STORE_RUNS_RANGE " AND trigger = 'schedule' AND attempt = 1 "
                             "AND scheduled_at IS NOT NULL) l GROUP BY m ORDER BY m",
                             3, params, res, errstr, errstr_size);
}

tb_err_t tb_store_runs_task_visible(PGconn *conn, const char *task_id, const char *groups,
                                    bool *visible, char *errstr, size_t errstr_size) {
        PGresult *x = NULL;
        const char *xp[] = {task_id, groups};
        tb_err_t e = tb_store_exec(conn, "task visible",
                                   "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND "
                                   TB_STORE_RUNS_VISIBLE(2) ") OR EXISTS (SELECT 1 FROM runs WHERE "
                                   "task_id = $1 AND " TB_STORE_RUNS_VISIBLE(2) ")",
                                   2, xp, &x, errstr, errstr_size);
        if (e)
                return e;
        *visible = PQgetvalue(x, 0, 0)[0] == 't';
        PQclear(x);
        return TB_OK;
}

tb_err_t tb_store_runs_last_scheduled(PGconn *conn, const char *task_id, bool *found,
                                      int64_t *nominal_ms, char *errstr, size_t errstr_size) {
        PGresult *res = NULL;
        const char *params[] = {task_id};
        *found = false;
        tb_err_t e = tb_store_exec(conn, "last nominal of a moved task",
                                   /* a range of fires not run ends at its last */
                                   "SELECT (extract(epoch FROM max(COALESCE(last_nominal_time, "
                                   "nominal_time))) * 1000)::bigint FROM runs WHERE task_id = $1 "
                                   "AND trigger IN ('schedule', 'misfire')",
                                   1, params, &res, errstr, errstr_size);
        if (e)
                return e;
        if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
                *found = true;
                *nominal_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        }
        PQclear(res);
        return TB_OK;
}

static const char tb_store_runs_sql_logstate[] =
        "SELECT taskbus_run_status_rank(status) = 2, "
        "(log_expires_at <= now() OR log_purged_at IS NOT NULL), started_at IS NOT NULL, "
        "(extract(epoch FROM now() - updated_at) * 1000)::bigint, "
        TB_STORE_RUNS_MS("log_expires_at") ", "
        "EXISTS (SELECT 1 FROM run_logs l WHERE l.run_id = $1 AND l.eof) "
        "FROM runs WHERE run_id = $1";

tb_err_t tb_store_runs_logstate(PGconn *conn, const char *id, tb_store_runs_logstate_t *st,
                                char *errstr, size_t errstr_size) {
        PGresult *r = NULL;
        const char *p[] = {id};
        tb_err_t e = tb_store_exec(conn, "read run log state", tb_store_runs_sql_logstate, 1, p,
                                   &r, errstr, errstr_size);
        if (e)
                return e;
        if (PQntuples(r) == 0) {
                PQclear(r);
                return TB_ERR_NOT_FOUND;
        }
        st->final = PQgetvalue(r, 0, 0)[0] == 't';
        st->expired = PQgetvalue(r, 0, 1)[0] == 't';
        st->started = PQgetvalue(r, 0, 2)[0] == 't';
        st->age_ms = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        st->has_expires = !PQgetisnull(r, 0, 4);
        st->expires_ms = st->has_expires ? strtoll(PQgetvalue(r, 0, 4), NULL, 10) : 0;
        st->eof = PQgetvalue(r, 0, 5)[0] == 't';
        PQclear(r);
        return TB_OK;
}

/*
 * The served text of run $1's output (of stream $2, NULL: every stream),
 * chunk by chunk with its continuity checked (docs/reliability.md, "Log
 * gaps"): seq is one sequence over all streams, so a seq missing from
 * run_logs is a chunk the executor could not deliver. The executor's own
 * marker, a SYSTEM chunk "[taskbus: N chunks (B bytes) lost]" at the first
 * lost seq, covers N seqs; any gap no marker covers becomes a row of its own
 * here ("[taskbus: N chunks lost]", gap true) at its first missing seq.
 * Markers show in every stream's text: which stream was lost is unknown.
 * Relation c: seq, data, gap, covers (seqs the row stands for), start (its
 * first byte's offset in the text).
 */
#define TB_STORE_RUNS_TEXT                                                                      \
        "WITH l AS (SELECT seq, stream, data, CASE WHEN stream = 'system' THEN "                 \
        "substring(encode(substring(data FROM 1 FOR 48), 'escape') "                             \
        "FROM '^\\[taskbus: ([0-9]+) chunks? \\(')::bigint END AS lost "                      \
        "FROM run_logs WHERE run_id = $1), "                                                     \
        "g AS (SELECT seq, stream, data, lost, coalesce(max(seq + coalesce(lost, 1)) "           \
        "OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS expect "    \
        "FROM l), "                                                                              \
        "t AS (SELECT seq, data, false AS gap, coalesce(lost, 1) AS covers FROM g "              \
        "WHERE $2::text IS NULL OR stream = $2 OR lost IS NOT NULL "                             \
        "UNION ALL SELECT expect, convert_to('[taskbus: ' || (seq - expect) || CASE WHEN "       \
        "seq - expect = 1 THEN ' chunk' ELSE ' chunks' END || ' lost]' || chr(10), 'UTF8'), "    \
        "true, seq - expect FROM g WHERE seq > expect), "                                        \
        "c AS (SELECT seq, data, gap, covers, "                                                  \
        "sum(octet_length(data)) OVER (ORDER BY seq) - octet_length(data) AS start FROM t) "

tb_err_t tb_store_runs_logs_from(PGconn *conn, const char *id, const char *seq,
                                 const char *stream, const char *rows, PGresult **res,
                                 char *errstr, size_t errstr_size) {
        const char *p[] = {id, stream, seq, rows};
        return tb_store_exec(conn, "read run output",
                             TB_STORE_RUNS_TEXT "SELECT seq, data, gap, covers FROM c "
                             "WHERE seq >= $3::bigint ORDER BY seq LIMIT $4::int",
                             4, p, res, errstr, errstr_size);
}

/* Chunks of run $1 (of stream $2 or all) that end after byte $3 and start
 * before byte $4 of the selected output, with where each starts. */
static const char tb_store_runs_sql_page[] =
        TB_STORE_RUNS_TEXT "SELECT seq, start, data FROM c "
        "WHERE start + octet_length(data) > $3::bigint AND start < $4::bigint ORDER BY seq";

tb_err_t tb_store_runs_logs_range(PGconn *conn, const char *id, const char *stream,
                                  const char *from, const char *to, PGresult **res,
                                  char *errstr, size_t errstr_size) {
        const char *pp[] = {id, stream, from, to};
        return tb_store_exec(conn, "read run output", tb_store_runs_sql_page, 4, pp, res, errstr,
                             errstr_size);
}

tb_err_t tb_store_runs_logs_size(PGconn *conn, const char *id, const char *stream,
                                 int64_t *next_seq, int64_t *bytes, char *errstr,
                                 size_t errstr_size) {
        PGresult *x = NULL;
        const char *xp[] = {id, stream};
        tb_err_t e = tb_store_exec(conn, "read run output size",
                                   TB_STORE_RUNS_TEXT "SELECT coalesce(max(seq + covers), 0), "
                                   "coalesce(sum(octet_length(data)), 0) FROM c",
                                   2, xp, &x, errstr, errstr_size);
        if (e)
                return e;
        *next_seq = strtoll(PQgetvalue(x, 0, 0), NULL, 10);
        *bytes = strtoll(PQgetvalue(x, 0, 1), NULL, 10);
        PQclear(x);
        return TB_OK;
}

tb_err_t tb_store_runs_logs_versions(PGconn *conn, const char *ids, PGresult **res,
                                     char *errstr, size_t errstr_size) {
        const char *p[] = {ids};
        return tb_store_exec(conn, "poll followed runs",
                             "SELECT r.run_id, (SELECT count(*) FROM run_logs l "
                             "WHERE l.run_id = r.run_id), "
                             "(extract(epoch FROM r.updated_at) * 1000000)::bigint "
                             "FROM runs r WHERE r.run_id = ANY($1::text[])",
                             1, p, res, errstr, errstr_size);
}

/* ---- the projection's writes ------------------------------------------------------ */

/* A run's params: the first non-empty value its records carry (a RunResult
 * repeats its RunRequest's, an older record has {}). */
#define TB_STORE_RUNS_PARAMS \
        "params = CASE WHEN runs.params = '{}'::jsonb THEN EXCLUDED.params ELSE runs.params END, "

static const char tb_store_runs_sql_run_request[] =
        "INSERT INTO runs (run_id, task_id, security_group, nominal_time, attempt, trigger, "
        "status, scheduled_at, executor, log_retention_ms, params, updated_at) "
        "VALUES ($1, $2, $3, " TB_STORE_RUNS_TS(4) ", $5::int, $6, 'scheduled', " TB_STORE_RUNS_TS(7) ", "
        "$8, $9::bigint, COALESCE($10::jsonb, '{}'), now()) "
        "ON CONFLICT (run_id) DO UPDATE SET "
        TB_STORE_RUNS_PARAMS
        /* the snapshot's group is the run's: it was the task's at fire time */
        "security_group = CASE WHEN EXCLUDED.security_group <> '' "
        "THEN EXCLUDED.security_group ELSE runs.security_group END, "
        /* a second request of one run id (a backfill of a fire that ran, a
         * redelivery) keeps the first one's trigger: only a row a RunResult
         * made first (no scheduled_at yet) takes it */
        "trigger = CASE WHEN runs.scheduled_at IS NULL THEN EXCLUDED.trigger "
        "ELSE runs.trigger END, "
        "scheduled_at = COALESCE(runs.scheduled_at, EXCLUDED.scheduled_at), "
        "executor = CASE WHEN runs.executor = '' THEN EXCLUDED.executor ELSE runs.executor END, "
        "log_retention_ms = EXCLUDED.log_retention_ms, updated_at = now()";

/* $5 status (lower case); the new record "wins" when its status ranks higher */
#define TB_STORE_RUNS_WIN "(taskbus_run_status_rank(EXCLUDED.status) > taskbus_run_status_rank(runs.status))"

static const char tb_store_runs_sql_run_result[] =
        "INSERT INTO runs (run_id, task_id, security_group, nominal_time, attempt, status, "
        "started_at, finished_at, exit_code, signal, executor, host, output_bytes, infra_error, "
        "error, last_nominal_time, occurrences, params, updated_at) "
        "VALUES ($1, $2, COALESCE((SELECT t.security_group FROM tasks t WHERE t.id = $2), ''), "
        TB_STORE_RUNS_TS(3) ", $4::int, $5, " TB_STORE_RUNS_TS(6) ", " TB_STORE_RUNS_TS(7) ", $8::int, $9::int, "
        "$10, $11, $12::bigint, $13::boolean, $14, " TB_STORE_RUNS_TS(15) ", $16::bigint, "
        "COALESCE($17::jsonb, '{}'), now()) "
        "ON CONFLICT (run_id) DO UPDATE SET "
        TB_STORE_RUNS_PARAMS
        "status = CASE WHEN " TB_STORE_RUNS_WIN " THEN EXCLUDED.status ELSE runs.status END, "
        "security_group = CASE WHEN runs.security_group = '' THEN EXCLUDED.security_group "
        "ELSE runs.security_group END, "
        "started_at = COALESCE(runs.started_at, EXCLUDED.started_at), "
        "finished_at = CASE WHEN " TB_STORE_RUNS_WIN " THEN COALESCE(EXCLUDED.finished_at, "
        "runs.finished_at) ELSE COALESCE(runs.finished_at, EXCLUDED.finished_at) END, "
        "exit_code = CASE WHEN " TB_STORE_RUNS_WIN " THEN COALESCE(EXCLUDED.exit_code, runs.exit_code) "
        "ELSE COALESCE(runs.exit_code, EXCLUDED.exit_code) END, "
        "signal = CASE WHEN " TB_STORE_RUNS_WIN " THEN COALESCE(EXCLUDED.signal, runs.signal) "
        "ELSE COALESCE(runs.signal, EXCLUDED.signal) END, "
        "executor = CASE WHEN " TB_STORE_RUNS_WIN " AND EXCLUDED.executor <> '' OR runs.executor = '' "
        "THEN EXCLUDED.executor ELSE runs.executor END, "
        "host = CASE WHEN " TB_STORE_RUNS_WIN " AND EXCLUDED.host <> '' OR runs.host = '' "
        "THEN EXCLUDED.host ELSE runs.host END, "
        "output_bytes = CASE WHEN " TB_STORE_RUNS_WIN " THEN EXCLUDED.output_bytes "
        "ELSE GREATEST(runs.output_bytes, EXCLUDED.output_bytes) END, "
        "infra_error = CASE WHEN " TB_STORE_RUNS_WIN " THEN EXCLUDED.infra_error ELSE runs.infra_error "
        "END, "
        "error = CASE WHEN " TB_STORE_RUNS_WIN " THEN COALESCE(EXCLUDED.error, runs.error) "
        "ELSE COALESCE(runs.error, EXCLUDED.error) END, "
        "last_nominal_time = CASE WHEN " TB_STORE_RUNS_WIN " THEN EXCLUDED.last_nominal_time "
        "ELSE COALESCE(runs.last_nominal_time, EXCLUDED.last_nominal_time) END, "
        "occurrences = CASE WHEN " TB_STORE_RUNS_WIN " THEN EXCLUDED.occurrences "
        "ELSE runs.occurrences END, "
        "updated_at = now()";

/* What settling a run needs: its group (filled from the task if unknown),
 * whether it is final, its end and its log retention. */
static const char tb_store_runs_sql_run_state[] =
        "UPDATE runs r SET security_group = COALESCE((SELECT t.security_group FROM tasks t "
        "WHERE t.id = r.task_id), '') WHERE r.run_id = $1 AND r.security_group = ''";
static const char tb_store_runs_sql_run_read[] =
        "SELECT r.security_group, taskbus_run_status_rank(r.status) = 2, "
        "(extract(epoch FROM COALESCE(r.finished_at, r.updated_at)) * 1000)::bigint, "
        "r.log_retention_ms, t.spec->>'log_retention' "
        "FROM runs r LEFT JOIN tasks t ON t.id = r.task_id WHERE r.run_id = $1";

tb_err_t tb_store_runs_upsert_request(PGconn *conn, const char *const params[10], char *errstr,
                                      size_t errstr_size) {
        return tb_store_exec(conn, "upsert run (RunRequest)", tb_store_runs_sql_run_request, 10,
                             params, NULL, errstr, errstr_size);
}

tb_err_t tb_store_runs_upsert_result(PGconn *conn, const char *const params[17], char *errstr,
                                     size_t errstr_size) {
        return tb_store_exec(conn, "upsert run (RunResult)", tb_store_runs_sql_run_result, 17,
                             params, NULL, errstr, errstr_size);
}

tb_err_t tb_store_runs_retention(PGconn *conn, const char *id, tb_store_runs_retention_t *out,
                                 char *errstr, size_t errstr_size) {
        const char *p[] = {id};
        PGresult *r = NULL;
        tb_err_t err;
        memset(out, 0, sizeof(*out));
        if ((err = tb_store_exec(conn, "fill in the run's group", tb_store_runs_sql_run_state, 1,
                                 p, NULL, errstr, errstr_size)) ||
            (err = tb_store_exec(conn, "read run", tb_store_runs_sql_run_read, 1, p, &r, errstr,
                                 errstr_size)))
                return err;
        if (PQntuples(r) == 1) {
                out->found = true;
                out->final = PQgetvalue(r, 0, 1)[0] == 't';
                tb_snprintf(out->group, sizeof(out->group), "%s", PQgetvalue(r, 0, 0));
                out->end_ms = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
                out->has_retention_ms = !PQgetisnull(r, 0, 3);
                if (out->has_retention_ms)
                        out->retention_ms = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
                out->has_task_retention = !PQgetisnull(r, 0, 4);
                if (out->has_task_retention)
                        tb_snprintf(out->task_retention, sizeof(out->task_retention), "%s",
                                    PQgetvalue(r, 0, 4));
        }
        PQclear(r);
        return TB_OK;
}

tb_err_t tb_store_runs_set_log_expiry(PGconn *conn, const char *id, const char *at_ms,
                                      char *errstr, size_t errstr_size) {
        const char *up[] = {id, at_ms};
        return tb_store_exec(conn, "set the run's log expiry",
                             "WITH u AS (UPDATE runs SET log_expires_at = " TB_STORE_RUNS_TS(2)
                             " WHERE run_id = $1 AND log_expires_at IS DISTINCT FROM "
                             TB_STORE_RUNS_TS(2) " RETURNING run_id) "
                             /* rows the archiver settled with the earlier
                              * expiry; NULL ones it settles itself */
                             "UPDATE run_logs SET expires_at = " TB_STORE_RUNS_TS(2)
                             " WHERE run_id IN (SELECT run_id FROM u) AND expires_at IS NOT NULL",
                             2, up, NULL, errstr, errstr_size);
}

/* ---- the archiver's writes -------------------------------------------------------- */

static const char tb_store_runs_sql_log_insert[] =
        "INSERT INTO run_logs (run_id, seq, stream, at, data, expires_at, eof) "
        "SELECT $1, $2::bigint, $3, 'epoch'::timestamptz + $4::bigint * interval '1 millisecond', "
        "$5::bytea, (SELECT r.log_expires_at FROM runs r WHERE r.run_id = $1), $6::boolean "
        /* a late copy of a log that already expired and was deleted */
        "WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = $1 "
        "AND r.log_purged_at IS NOT NULL) "
        "ON CONFLICT (run_id, seq) DO NOTHING";

tb_err_t tb_store_runs_log_insert(PGconn *conn, const char *const params[6], char *errstr,
                                  size_t errstr_size) {
        return tb_store_exec(conn, "insert run_logs", tb_store_runs_sql_log_insert, 6, params,
                             NULL, errstr, errstr_size);
}

static const char tb_store_runs_sql_settle[] =
        "UPDATE run_logs l SET expires_at = r.log_expires_at FROM runs r "
        "WHERE l.ctid IN (SELECT l2.ctid FROM run_logs l2 JOIN runs r2 ON r2.run_id = l2.run_id "
        "WHERE l2.expires_at IS NULL AND r2.log_expires_at IS NOT NULL LIMIT $1::int) "
        "AND r.run_id = l.run_id";

static const char tb_store_runs_sql_expire[] =
        "WITH d AS (DELETE FROM run_logs WHERE ctid IN (SELECT ctid FROM run_logs "
        "WHERE expires_at <= now() LIMIT $1::int) RETURNING run_id), "
        "u AS (UPDATE runs SET log_purged_at = now() WHERE run_id IN (SELECT run_id FROM d) "
        "AND log_purged_at IS NULL RETURNING 1) "
        "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM u)";

static const char tb_store_runs_sql_history[] =
        "WITH d AS (DELETE FROM runs WHERE ctid IN (SELECT ctid FROM runs "
        "WHERE nominal_time < now() - $2::bigint * interval '1 millisecond' "
        "AND COALESCE(finished_at, nominal_time) < now() - $2::bigint * interval '1 millisecond' "
        "LIMIT $1::int) RETURNING run_id), "
        "l AS (DELETE FROM run_logs WHERE run_id IN (SELECT run_id FROM d) RETURNING 1) "
        "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM l)";

/** Run \p sql (one batch: $1 the batch size, $2 \p keep_ms if \p with_keep)
 *  until a batch touches fewer than the batch size.
 *  @returns the rows of the first column summed; *\p batches statements. */
static tb_err_t tb_store_runs_batches(PGconn *conn, const char *what, const char *sql,
                                      int64_t batch, bool with_keep, int64_t keep_ms,
                                      int max_statements,
                                      int64_t *total, int64_t *second, int *batches,
                                      char *errstr, size_t errstr_size) {
        char lim[32], keep[32];
        tb_snprintf(lim, sizeof(lim), "%" PRId64, batch);
        tb_snprintf(keep, sizeof(keep), "%" PRId64, keep_ms);
        const char *params[] = {lim, keep};
        int nparams = with_keep ? 2 : 1;
        *total = 0;
        if (second)
                *second = 0;
        *batches = 0;
        for (int i = 0; i < max_statements; i++) {
                PGresult *r = NULL;
                tb_err_t err = tb_store_exec(conn, what, sql, nparams, params, &r, errstr,
                                             errstr_size);
                if (err)
                        return err;
                int64_t n = PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                             : strtoll(PQcmdTuples(r), NULL, 10);
                if (second && PQntuples(r) > 0 && PQnfields(r) > 1)
                        *second += strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                PQclear(r);
                if (n > 0)
                        (*batches)++;
                *total += n;
                if (n < batch)
                        break;
        }
        return TB_OK;
}

tb_err_t tb_store_runs_logs_settle(PGconn *conn, int64_t batch, int max_statements,
                                   int64_t *rows, int *batches, char *errstr,
                                   size_t errstr_size) {
        return tb_store_runs_batches(conn, "settle run_logs expiry", tb_store_runs_sql_settle,
                                     batch, false, 0, max_statements, rows, NULL, batches, errstr,
                                     errstr_size);
}

tb_err_t tb_store_runs_logs_expire(PGconn *conn, int64_t batch, int max_statements,
                                   int64_t *rows, int64_t *other, int *batches, char *errstr,
                                   size_t errstr_size) {
        return tb_store_runs_batches(conn, "delete expired run_logs", tb_store_runs_sql_expire,
                                     batch, false, 0, max_statements, rows, other, batches, errstr,
                                     errstr_size);
}

tb_err_t tb_store_runs_purge_history(PGconn *conn, int64_t batch, int64_t keep_ms,
                                     int max_statements, int64_t *rows, int64_t *other,
                                     int *batches, char *errstr, size_t errstr_size) {
        return tb_store_runs_batches(conn, "delete runs past history retention",
                                     tb_store_runs_sql_history, batch, true, keep_ms,
                                     max_statements, rows, other, batches, errstr, errstr_size);
}

/* ---- tasks that wait for others ------------------------------------------------ */

tb_err_t tb_store_runs_dep_outcomes(PGconn *conn, const char *tasks, int64_t since_ms,
                                    PGresult **res, char *errstr, size_t errstr_size) {
        char since[32];
        tb_snprintf(since, sizeof(since), "%" PRId64, since_ms);
        const char *p[] = {tasks, since};
        /* nominal_time bounds the scan of runs_task_nominal: a run finishing
         * in the window started at most a week (the longest expiry) before */
        return tb_store_exec(
                conn, "read parent outcomes",
                "SELECT DISTINCT ON (r.task_id) r.task_id, r.run_id, r.status FROM runs r "
                "LEFT JOIN tasks t ON t.id = r.task_id "
                "WHERE r.task_id = ANY($1::text[]) "
                "AND r.nominal_time >= " TB_STORE_RUNS_TS(2) " - interval '8 days' "
                "AND r.finished_at >= " TB_STORE_RUNS_TS(2) " "
                "AND (r.status = 'succeeded' OR (r.status IN ('failed', 'timed_out', 'lost', "
                "'cancelled') AND r.attempt >= COALESCE((t.spec->'retries'->>'max_attempts')::int, "
                "1))) "
                "ORDER BY r.task_id, r.finished_at DESC, r.run_id DESC",
                2, p, res, errstr, errstr_size);
}

tb_err_t tb_store_runs_exists(PGconn *conn, const char *run_id, bool *found, char *errstr,
                              size_t errstr_size) {
        const char *p[] = {run_id};
        PGresult *r = NULL;
        tb_err_t err = tb_store_exec(conn, "read run", "SELECT 1 FROM runs WHERE run_id = $1", 1,
                                     p, &r, errstr, errstr_size);
        *found = !err && PQntuples(r) > 0;
        PQclear(r);
        return err;
}

tb_err_t tb_store_runs_set_parents(PGconn *conn, const char *run_id, const char *parents,
                                   char *errstr, size_t errstr_size) {
        const char *p[] = {run_id, parents};
        return tb_store_exec(conn, "set run parents",
                             "UPDATE runs SET parents = $2::jsonb WHERE run_id = $1", 2, p, NULL,
                             errstr, errstr_size);
}

tb_err_t tb_store_runs_parents(PGconn *conn, const char *run_id, PGresult **res, char *errstr,
                               size_t errstr_size) {
        const char *p[] = {run_id};
        return tb_store_exec(conn, "read run parents",
                             "SELECT parents::text FROM runs WHERE run_id = $1", 1, p, res,
                             errstr, errstr_size);
}

tb_err_t tb_store_runs_set_trigger(PGconn *conn, const char *run_id, const char *trigger,
                                   char *errstr, size_t errstr_size) {
        const char *p[] = {run_id, trigger};
        return tb_store_exec(conn, "set run trigger",
                             "UPDATE runs SET trigger = $2 WHERE run_id = $1 AND "
                             "scheduled_at IS NULL",
                             2, p, NULL, errstr, errstr_size);
}
