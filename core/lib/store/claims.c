/**
 * @file store/claims.c
 * @brief The run_claims table family: run_claims and the SQL function
 *        taskbus_claim_run() (schemas/sql/0002_executor.sql); the run queue
 *        in run_claims, run_queue_turns and taskbus_enqueue_run(),
 *        taskbus_take_runs(), taskbus_queue_position()
 *        (schemas/sql/0008_group_quotas.sql).
 */
#include "store/claims.h"

#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                                           "WHERE run_id = $1 AND state IN ('running', 'queued')",
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
                                           "WHERE task_id = $1 AND state IN ('running', "
                                           "'queued')",
                                           task_id, reason, &n, errstr, errstr_size);
        if (count)
                *count = n;
        return e;
}

tb_err_t tb_store_claims_cancel_tasks_runs(PGconn *conn, const char *task_ids,
                                           const char *reason, int *count, char *errstr,
                                           size_t errstr_size) {
        int n;
        tb_err_t e = tb_store_claims_cancel(conn, "task",
                                           "request cancellation of the deleted tasks' runs",
                                           "UPDATE run_claims SET cancel_requested = true, "
                                           "cancel_reason = coalesce(cancel_reason, $2) "
                                           "WHERE task_id = ANY($1::text[]) AND state IN "
                                           "('running', 'queued')",
                                           task_ids, reason, &n, errstr, errstr_size);
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

/* ---- the executor's claims ------------------------------------------------------ */

tb_err_t tb_store_claims_claim(PGconn *conn, const char *run_id, const char *task_id,
                               const char *executor_id, int64_t lease_ms, int64_t nominal_ms,
                               int attempt, const char *executor, const char *host,
                               const char *overlap, char **outcome, char *errstr,
                               size_t errstr_size) {
        char lease[32], nominal[32], att[16];
        tb_snprintf(lease, sizeof(lease), "%" PRId64, lease_ms);
        tb_snprintf(nominal, sizeof(nominal), "%" PRId64, nominal_ms);
        tb_snprintf(att, sizeof(att), "%d", attempt);
        const char *p[] = {run_id, task_id, executor_id, lease, nominal,
                           att,    executor, host,       overlap};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "claim run",
                                   "SELECT taskbus_claim_run($1, $2, $3, $4::bigint, "
                                   "$5::bigint, $6::int, $7, $8, $9)",
                                   9, p, &r, errstr, errstr_size);
        if (!e) {
                *outcome = strdup(PQgetvalue(r, 0, 0));
                if (!*outcome)
                        e = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "claim run: out of memory");
        }
        PQclear(r);
        return e;
}

tb_err_t tb_store_claims_release(PGconn *conn, const char *run_id, const char *executor_id,
                                 bool *deleted, char *errstr, size_t errstr_size) {
        const char *p[] = {run_id, executor_id};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "release run claim",
                                   "DELETE FROM run_claims WHERE run_id = $1 AND "
                                   "executor_id = $2 AND state = 'running'",
                                   2, p, &r, errstr, errstr_size);
        *deleted = !e && atoi(PQcmdTuples(r)) == 1;
        PQclear(r);
        return e;
}

tb_err_t tb_store_claims_finish(PGconn *conn, const char *run_id, const char *executor_id,
                                const char *status, int64_t started_ms, char *errstr,
                                size_t errstr_size) {
        char started[32];
        tb_snprintf(started, sizeof(started), "%" PRId64, started_ms);
        const char *params[] = {run_id, executor_id, status, started_ms ? started : NULL};
        return tb_store_exec(conn, "mark run claim done",
                             "UPDATE run_claims SET state = 'done', "
                             "status = $3, finished_at = now(), "
                             "started_at = coalesce(started_at, "
                             "to_timestamp($4::bigint / 1000.0)) "
                             "WHERE run_id = $1 AND executor_id = $2 AND "
                             "state = 'running'",
                             4, params, NULL, errstr, errstr_size);
}

tb_err_t tb_store_claims_leases(PGconn *conn, const char *executor_id, bool renew,
                                int64_t lease_ms, PGresult **res, char *errstr,
                                size_t errstr_size) {
        char lease[32];
        tb_snprintf(lease, sizeof(lease), "%" PRId64, lease_ms);
        const char *params[] = {executor_id, lease};
        if (renew)
                return tb_store_exec(conn, "renew leases",
                                     "UPDATE run_claims SET lease_until = now() + $2::bigint * "
                                     "interval '1 millisecond' WHERE executor_id = $1 AND state = "
                                     "'running' RETURNING run_id, cancel_requested, "
                                     "coalesce(cancel_reason, '')",
                                     2, params, res, errstr, errstr_size);
        return tb_store_exec(conn, "poll cancel requests",
                             "SELECT run_id, cancel_requested, coalesce(cancel_reason, '') "
                             "FROM run_claims WHERE executor_id = $1 AND state = 'running' "
                             "AND cancel_requested",
                             1, params, res, errstr, errstr_size);
}

tb_err_t tb_store_claims_expired(PGconn *conn, PGresult **res, char *errstr,
                                 size_t errstr_size) {
        return tb_store_exec(conn, "find expired run claims",
                             "SELECT run_id, task_id, executor_id, coalesce((extract(epoch "
                             "FROM nominal_time) * 1000)::bigint, 0), attempt, executor, "
                             "host FROM run_claims WHERE state = 'running' AND "
                             "lease_until < now() ORDER BY lease_until LIMIT 100 "
                             "FOR UPDATE SKIP LOCKED",
                             0, NULL, res, errstr, errstr_size);
}

tb_err_t tb_store_claims_mark_lost(PGconn *conn, const char *run_id, char *errstr,
                                   size_t errstr_size) {
        const char *p[] = {run_id};
        return tb_store_exec(conn, "mark run claim lost",
                             "UPDATE run_claims SET state = 'done', status = "
                             "'LOST', finished_at = now() WHERE run_id = $1",
                             1, p, NULL, errstr, errstr_size);
}

/* ---- outcomes decided at claim time, and runs nobody claimed --------------------- */

tb_err_t tb_store_claims_set_pending(PGconn *conn, const char *run_id, const char *error,
                                     char *errstr, size_t errstr_size) {
        const char *p[] = {run_id, error};
        return tb_store_exec(conn, "mark run result pending",
                             "UPDATE run_claims SET result_pending = true, result_error = $2 "
                             "WHERE run_id = $1",
                             2, p, NULL, errstr, errstr_size);
}

tb_err_t tb_store_claims_pending(PGconn *conn, const char *run_id, bool *pending,
                                 char *status, size_t status_size, char **error,
                                 char *errstr, size_t errstr_size) {
        const char *p[] = {run_id};
        PGresult *r = NULL;
        *pending = false;
        *error = NULL;
        tb_err_t e = tb_store_exec(conn, "read a pending run result",
                                   "SELECT coalesce(status, ''), coalesce(result_error, '') "
                                   "FROM run_claims WHERE run_id = $1 AND result_pending",
                                   1, p, &r, errstr, errstr_size);
        if (!e && PQntuples(r) == 1) {
                tb_snprintf(status, status_size, "%s", PQgetvalue(r, 0, 0));
                *error = strdup(PQgetvalue(r, 0, 1));
                if (!*error)
                        e = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                      "read a pending run result: out of memory");
                else
                        *pending = true;
        }
        PQclear(r);
        return e;
}

/* ---- the run queue (schemas/sql/0008_group_quotas.sql) --------------------------- */

tb_err_t tb_store_claims_enqueue(PGconn *conn, const tb_store_claims_enqueue_t *q,
                                 bool *duplicate, char *errstr, size_t errstr_size) {
        static const char hex[] = "0123456789abcdef";
        char nominal[32], att[16];
        tb_snprintf(nominal, sizeof(nominal), "%" PRId64, q->nominal_ms);
        tb_snprintf(att, sizeof(att), "%d", q->attempt);
        /* bytea in its text form: \x and two hex digits a byte */
        char *req = malloc(2 * q->request_len + 3);
        if (!req)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "enqueue run: out of memory");
        req[0] = '\\';
        req[1] = 'x';
        const unsigned char *b = q->request;
        for (size_t i = 0; i < q->request_len; i++) {
                req[2 + 2 * i] = hex[b[i] >> 4];
                req[3 + 2 * i] = hex[b[i] & 15];
        }
        req[2 + 2 * q->request_len] = '\0';
        const char *p[] = {q->run_id, q->task_id, q->executor_id, nominal, att,
                           q->executor, q->group, q->overlap, req};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "enqueue run",
                                   "SELECT taskbus_enqueue_run($1, $2, $3, $4::bigint, $5::int, "
                                   "$6, $7, $8, $9::bytea)",
                                   9, p, &r, errstr, errstr_size);
        free(req);
        if (!e)
                *duplicate = !strcmp(PQgetvalue(r, 0, 0), "duplicate");
        PQclear(r);
        return e;
}

tb_err_t tb_store_claims_result_sent(PGconn *conn, const char *run_id, char *errstr,
                                     size_t errstr_size) {
        const char *p[] = {run_id};
        return tb_store_exec(conn, "mark a run result sent",
                             "UPDATE run_claims SET result_pending = false "
                             "WHERE run_id = $1 AND result_pending",
                             1, p, NULL, errstr, errstr_size);
}

tb_err_t tb_store_claims_take_stale_pending(PGconn *conn, int64_t older_ms, PGresult **res,
                                            char *errstr, size_t errstr_size) {
        char older[32];
        tb_snprintf(older, sizeof(older), "%" PRId64, older_ms);
        const char *p[] = {older};
        return tb_store_exec(conn, "take results left pending",
                             "SELECT run_id, task_id, (extract(epoch FROM nominal_time) * "
                             "1000)::bigint, attempt, executor, status, "
                             "coalesce(result_error, '') FROM run_claims "
                             "WHERE result_pending AND coalesce(finished_at, lease_until) < "
                             "now() - $1::bigint * interval '1 millisecond' "
                             "ORDER BY finished_at LIMIT 100 FOR UPDATE SKIP LOCKED",
                             1, p, res, errstr, errstr_size);
}

tb_err_t tb_store_claims_take_unclaimed(PGconn *conn, const char *executor_id,
                                        const char *host, const char *region,
                                        int64_t timeout_ms, PGresult **res, char *errstr,
                                        size_t errstr_size) {
        char timeout[32];
        tb_snprintf(timeout, sizeof(timeout), "%" PRId64, timeout_ms);
        const char *p[] = {executor_id, host, timeout, region ? region : ""};
        /* The claim is the lock: whoever inserts a run's claim first owns its
         * outcome; an executor claiming it later finds a duplicate. */
        return tb_store_exec(conn, "take runs nobody claimed",
                             "INSERT INTO run_claims AS c (run_id, task_id, executor_id, "
                             "lease_until, state, nominal_time, attempt, executor, host, status, "
                             "finished_at) "
                             "SELECT r.run_id, r.task_id, $1, now(), 'done', r.nominal_time, "
                             "r.attempt, r.executor, $2, 'LOST', now() FROM runs r "
                             "WHERE r.status = 'scheduled' "
                             /* the clock starts at the later of the nominal
                              * time and the emission: a backfill's or a
                              * late catch-up's nominal time is long past */
                             "AND GREATEST(r.nominal_time, COALESCE(r.scheduled_at, "
                             "r.nominal_time)) < now() - "
                             "$3::bigint * interval '1 millisecond' AND NOT EXISTS (SELECT 1 "
                             "FROM run_claims k WHERE k.run_id = r.run_id) "
                             /* a run of a task homed in another region was
                              * fired there, and is claimed in its database */
                             "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.task_id "
                             "AND t.home_region NOT IN ('', $4)) "
                             "ORDER BY r.nominal_time LIMIT 100 "
                             "ON CONFLICT (run_id) DO NOTHING "
                             "RETURNING c.run_id, c.task_id, (extract(epoch FROM "
                             "c.nominal_time) * 1000)::bigint, c.attempt, c.executor",
                             4, p, res, errstr, errstr_size);
}

void tb_store_claims_taken_free(tb_store_claims_taken_t *t, size_t n) {
        for (size_t i = 0; t && i < n; i++) {
                free(t[i].run_id);
                free(t[i].outcome);
                PQfreemem(t[i].request);
        }
        free(t);
}

tb_err_t tb_store_claims_take(PGconn *conn, const char *executor_id, int max,
                              int64_t lease_ms, int64_t horizon_ms, const char *host,
                              const char *const *executors, size_t executor_cnt,
                              tb_store_claims_taken_t **out, size_t *n, char *errstr,
                              size_t errstr_size) {
        *out = NULL;
        *n = 0;
        /* the plugin names as a text[] literal, each quoted */
        tb_buf_t arr = {0};
        tb_buf_append(&arr, "{", 1);
        for (size_t i = 0; i < executor_cnt; i++) {
                tb_buf_append(&arr, i ? ",\"" : "\"", i ? 2 : 1);
                for (const char *c = executors[i]; *c; c++) {
                        if (*c == '"' || *c == '\\')
                                tb_buf_append(&arr, "\\", 1);
                        tb_buf_append(&arr, c, 1);
                }
                tb_buf_append(&arr, "\"", 1);
        }
        tb_buf_append(&arr, "}", 2); /* with the NUL */
        char smax[16], lease[32], horizon[32];
        tb_snprintf(smax, sizeof(smax), "%d", max < 0 ? 0 : max);
        tb_snprintf(lease, sizeof(lease), "%" PRId64, lease_ms);
        tb_snprintf(horizon, sizeof(horizon), "%" PRId64, horizon_ms);
        const char *p[] = {executor_id, smax, lease, host, (const char *)arr.data, horizon};
        PGresult *r = NULL;
        tb_err_t e = arr.data ? tb_store_exec(conn, "take queued runs",
                                              "SELECT run_id, outcome, request FROM "
                                              "taskbus_take_runs($1, $2::int, $3::bigint, $4, "
                                              "$5::text[], $6::bigint)",
                                              6, p, &r, errstr, errstr_size)
                              : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                          "take queued runs: out of memory");
        tb_buf_free(&arr);
        if (e)
                return e;
        int rows = PQntuples(r);
        tb_store_claims_taken_t *t = rows ? calloc((size_t)rows, sizeof(*t)) : NULL;
        if (rows && !t)
                e = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "take queued runs: out of memory");
        for (int i = 0; !e && i < rows; i++) {
                t[i].run_id = strdup(PQgetvalue(r, i, 0));
                t[i].outcome = strdup(PQgetvalue(r, i, 1));
                if (!PQgetisnull(r, i, 2))
                        t[i].request = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 2),
                                                       &t[i].request_len);
                if (!t[i].run_id || !t[i].outcome || (!PQgetisnull(r, i, 2) && !t[i].request))
                        e = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                      "take queued runs: out of memory");
        }
        PQclear(r);
        if (e) {
                tb_store_claims_taken_free(t, (size_t)rows);
                return e;
        }
        *out = t;
        *n = (size_t)rows;
        return TB_OK;
}

tb_err_t tb_store_claims_queue_position(PGconn *conn, const char *run_id, int64_t *position,
                                        char *errstr, size_t errstr_size) {
        const char *p[] = {run_id};
        PGresult *r = NULL;
        *position = 0;
        tb_err_t e = tb_store_exec(conn, "read queue position",
                                   "SELECT taskbus_queue_position($1)", 1, p, &r, errstr,
                                   errstr_size);
        if (!e && !PQgetisnull(r, 0, 0))
                *position = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        return e;
}

tb_err_t tb_store_claims_group_usage(PGconn *conn, const char *group, int64_t *running,
                                     int64_t *queued, char *errstr, size_t errstr_size) {
        const char *p[] = {group};
        PGresult *r = NULL;
        *running = *queued = 0;
        tb_err_t e = tb_store_exec(conn, "read group usage",
                                   "SELECT count(*) FILTER (WHERE state = 'running'), "
                                   "count(*) FILTER (WHERE state = 'queued') FROM run_claims "
                                   "WHERE security_group = $1 AND state IN ('running', 'queued')",
                                   1, p, &r, errstr, errstr_size);
        if (!e) {
                *running = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
                *queued = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        }
        PQclear(r);
        return e;
}
