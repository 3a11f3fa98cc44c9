/**
 * @file scheduler/after.c
 * @brief The dependency poll (docs/scheduling.md "Dependencies"): every
 *        scheduler.dependency_poll, the tasks with parents of the partitions
 *        this instance owns are read from PostgreSQL, and each whose window
 *        (its local day) has no run yet gets one once its parents' outcomes
 *        allow it, or a SKIPPED_DEPENDENCY result once they rule it out.
 *
 * Exactly once without scheduler state: the run id is the child's and its
 * window's (tb_task_after_run_id()), the same in every process and after
 * every restart or rebalance, so a second emission (a crash before the
 * projection showed the first) is dropped by the executor's claim and
 * merges into the same runs row. The records are produced outside the
 * engine's transactions, with an idempotent producer of their own.
 * @locality the scheduler role's thread.
 */
#include "scheduler/role_internal.h"

#include "bus/bus.h"
#include "schedule/tz.h"
#include "store/runs.h"
#include "store/store.h"
#include "store/tasks.h"
#include "task/after.h"
#include "task/snapshot.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** What the parents' outcomes say. */
typedef enum { TB_AFTER_WAIT, TB_AFTER_RUN, TB_AFTER_SKIP } tb_after_verdict_t;

/* Does status \p st (a final one) satisfy \p on? */
static bool tb_sched_after_meets(const char *on, const char *st) {
        bool ok = !strcmp(st, "succeeded");
        return !strcmp(on, "finished") || (!strcmp(on, "succeeded") ? ok : !ok);
}

/**
 * Judge the parents of \p task from \p res (tb_store_runs_dep_outcomes()):
 * RUN with their run ids in \p parents, SKIP with \p why, or WAIT, with
 * \p why naming the first parent not done yet.
 */
static tb_after_verdict_t tb_sched_after_judge(const json_t *task, PGresult *res,
                                               json_t *parents, char *why, size_t why_size) {
        const json_t *after = json_object_get(task, "after");
        bool any = !strcmp(json_string_value(json_object_get(task, "after_mode")) ?: "all",
                           "any");
        size_t i, met = 0, ruled_out = 0;
        json_t *e;
        why[0] = '\0';
        char wait_why[300] = "";
        json_array_foreach(after, i, e) {
                const char *id = json_string_value(json_object_get(e, "task"));
                const char *on = json_string_value(json_object_get(e, "on")) ?: "succeeded";
                int row = -1;
                for (int k = 0; k < PQntuples(res); k++)
                        if (!strcmp(PQgetvalue(res, k, 0), id))
                                row = k;
                if (row < 0) {
                        if (!wait_why[0])
                                tb_snprintf(wait_why, sizeof(wait_why),
                                            "task %s has not %s today", id, on);
                        continue;
                }
                const char *st = PQgetvalue(res, row, 2);
                if (tb_sched_after_meets(on, st)) {
                        met++;
                        json_array_append_new(parents, json_string(PQgetvalue(res, row, 1)));
                } else {
                        ruled_out++;
                        if (!any || !why[0])
                                tb_snprintf(why, why_size,
                                            "task %s's run %s ended %s and this task waits for "
                                            "it to have %s",
                                            id, PQgetvalue(res, row, 1), st, on);
                        if (!any)
                                return TB_AFTER_SKIP;
                }
        }
        size_t n = json_array_size(after);
        if (any ? met > 0 : met == n)
                return TB_AFTER_RUN;
        json_array_clear(parents);
        if (any && ruled_out == n)
                return TB_AFTER_SKIP;
        tb_snprintf(why, why_size, "%s", wait_why);
        return TB_AFTER_WAIT;
}

static tb_err_t tb_sched_after_produce(tb_sched_role_t *r, tb_topic_t topic, int32_t part,
                                       const char *tid, tb_schema_id_t schema, const json_t *v,
                                       char *errstr, size_t errstr_size) {
        tb_buf_t b = {0};
        tb_err_t err = tb_serde_encode(schema, v, &b, errstr, errstr_size);
        if (!err)
                err = tb_bus_produce(r->after_prod, r->conf, topic, part, tid, strlen(tid),
                                     b.data, b.len, NULL, 0, true, errstr, errstr_size);
        tb_buf_free(&b);
        return err;
}

/* One dependent task: emit its window's run or skip when its parents say so. */
static void tb_sched_after_task(tb_sched_role_t *r, PGconn *conn, PGresult *tasks, int i,
                                int64_t now) {
        const char *tid = PQgetvalue(tasks, i, 0);
        int64_t version = strtoll(PQgetvalue(tasks, i, 1), NULL, 10);
        int64_t created = strtoll(PQgetvalue(tasks, i, 3), NULL, 10);
        int32_t part = (int32_t)strtol(PQgetvalue(tasks, i, 4), NULL, 10);
        char errstr[512], why[400], rid[33], when[40];
        json_t *task = json_loads(PQgetvalue(tasks, i, 2), 0, NULL), *spec = NULL, *rec = NULL;
        json_t *parents = json_array();
        PGresult *out = NULL;
        tb_schedule_t s = {0};
        tb_err_t err = TB_OK;
        if (!task || !parents ||
            (err = tb_task_schedule(task, created, &s, errstr, sizeof(errstr))))
                goto done;
        int64_t w = tb_task_after_window_start(s.tz, now);
        int64_t w_next = tb_task_after_window_start(s.tz, w + TB_HOUR(30));
        int64_t fire = 0;
        if (tb_schedule_next(&s, w - 1, &fire, NULL, errstr, sizeof(errstr)) != TB_OK ||
            fire >= w_next || now < fire)
                goto done; /* no fire in this window, or not yet */
        tb_task_after_run_id(tid, w, rid);
        bool found = false;
        if ((err = tb_store_runs_exists(conn, rid, &found, errstr, sizeof(errstr))) || found)
                goto done;
        char *lit = tb_task_after_ids_literal(json_object_get(task, "after"));
        err = lit ? tb_store_runs_dep_outcomes(conn, lit, w, &out, errstr, sizeof(errstr))
                  : tb_seterr(errstr, sizeof(errstr), TB_ERR_NOMEM, "out of memory");
        free(lit);
        if (err)
                goto done;
        tb_after_verdict_t v = tb_sched_after_judge(task, out, parents, why, sizeof(why));
        const json_t *dl = json_object_get(task, "after_deadline");
        int64_t dl_ms = 0;
        if (v == TB_AFTER_WAIT && json_is_string(dl) &&
            tb_units_duration_parse(json_string_value(dl), &dl_ms, (char[64]){0}, 64) == TB_OK &&
            now >= fire + dl_ms) {
                char msg[400];
                tb_tz_format_local(s.tz ? s.tz : tb_tz_utc(), fire + dl_ms, when);
                tb_snprintf(msg, sizeof(msg), "parents not done by %s: %s", when, why);
                tb_snprintf(why, sizeof(why), "%s", msg);
                v = TB_AFTER_SKIP;
        }
        if (v == TB_AFTER_WAIT)
                goto done;
        if (!(spec = tb_task_to_spec(task))) {
                tb_snprintf(errstr, sizeof(errstr), "its stored spec does not convert");
                err = TB_ERR_INVALID;
                goto done;
        }
        if (v == TB_AFTER_RUN) {
                json_t *snap = tb_task_run_snapshot(spec), *params = tb_task_default_params(spec);
                rec = snap && params
                              ? json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:O, s:O, s:O}",
                                          "run_id", rid, "task_id", tid, "task_version",
                                          (json_int_t)version, "nominal_time", (json_int_t)fire,
                                          "attempt", 1, "trigger", "DEPENDENCY", "emitted_at",
                                          (json_int_t)now, "snapshot", snap, "params", params,
                                          "parents", parents)
                              : NULL;
                json_decref(snap);
                json_decref(params);
                err = rec ? tb_sched_after_produce(r, TB_TOPIC_RUNS, part, tid,
                                                   TB_SCHEMA_RUN_REQUEST, rec, errstr,
                                                   sizeof(errstr))
                          : TB_ERR_NOMEM;
                if (!err)
                        tb_info(TB_SCHED_LOG, "task %s: parents done, run %s emitted", tid, rid);
        } else {
                rec = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:s, s:I, s:n, s:I}",
                                "run_id", rid, "task_id", tid, "nominal_time", (json_int_t)fire,
                                "attempt", 1, "status", "SKIPPED_DEPENDENCY", "executor", "",
                                "host", r->instance, "error", why, "at", (json_int_t)now,
                                "last_nominal_time", "occurrences", (json_int_t)1);
                err = rec ? tb_sched_after_produce(r, TB_TOPIC_RESULTS, part, tid,
                                                   TB_SCHEMA_RUN_RESULT, rec, errstr,
                                                   sizeof(errstr))
                          : TB_ERR_NOMEM;
                if (!err)
                        tb_info(TB_SCHED_LOG, "task %s: run %s skipped: %s", tid, rid, why);
        }
done:
        if (err)
                tb_warn(TB_SCHED_LOG, "task %s: dependency check: %s (next poll retries)", tid,
                        errstr);
        tb_schedule_clear(&s);
        PQclear(out);
        json_decref(rec);
        json_decref(spec);
        json_decref(parents);
        json_decref(task);
}

void tb_sched_after_poll(tb_sched_role_t *r) {
        int64_t now = tb_now_ms();
        int64_t poll = r->conf->sched_dependency_poll_ms > 0 ? r->conf->sched_dependency_poll_ms
                                                             : 1000;
        if (now < r->after_next_ms)
                return;
        r->after_next_ms = now + poll;
        char parts[4096];
        size_t len = 0;
        parts[len++] = '{';
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions && len < sizeof(parts) - 16;
             p++)
                if (r->assigned[p])
                        len += (size_t)snprintf(parts + len, sizeof(parts) - len, "%s%d",
                                                   len > 1 ? "," : "", (int)p);
        if (len == 1)
                return; /* no partition of ours */
        tb_snprintf(parts + len, sizeof(parts) - len, "}");
        char errstr[512];
        if (!r->after_prod &&
            tb_bus_producer_new(r->conf, NULL, &r->after_prod, errstr, sizeof(errstr))) {
                tb_warn(TB_SCHED_LOG, "dependency poll: no producer: %s", errstr);
                return;
        }
        PGconn *conn = tb_store_acquire_timeout(r->ctx->store, 1000);
        if (!conn)
                return;
        PGresult *res = NULL;
        if (tb_store_tasks_dependents(conn, parts, r->conf->region, &res, errstr,
                                      sizeof(errstr))) {
                tb_warn(TB_SCHED_LOG, "dependency poll: %s", errstr);
        } else {
                for (int i = 0; i < PQntuples(res) && !tb_sched_role_stopping(r); i++)
                        tb_sched_after_task(r, conn, res, i, now);
        }
        PQclear(res);
        tb_store_release(r->ctx->store, conn);
}

void tb_sched_after_free(tb_sched_role_t *r) {
        if (!r->after_prod)
                return;
        rd_kafka_flush(r->after_prod, 5000);
        rd_kafka_destroy(r->after_prod);
        r->after_prod = NULL;
}
