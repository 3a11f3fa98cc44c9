/**
 * @file scheduler/events.c
 * @brief What the engine's inputs do to its records: TaskEvents (local,
 *        replayed, or from another region's copy) and RunResults (a retry
 *        after its backoff, or the DLQ once the attempts are spent).
 */
#include "scheduler/engine_internal.h"

#include "http/metrics.h"
#include "replication.h"
#include "task/snapshot.h"

#include <stdlib.h>
#include <string.h>

/* ---- events ----------------------------------------------------------------- */

static void tb_sched_run_now_add(tb_sched_t *s, uint32_t slot, int64_t at) {
        tb_sched_task_t *t = &s->tasks[slot];
        tb_sched_extra_t *x = tb_sched_task_extra(t);
        if (!x)
                return;
        if (at <= x->run_now_mark)
                return; /* emitted already */
        uint32_t i = 0;
        while (i < x->run_now_cnt && x->run_now[i] < at)
                i++;
        if (i < x->run_now_cnt && x->run_now[i] == at)
                return; /* pending already */
        int64_t *n = realloc(x->run_now, (x->run_now_cnt + 1) * sizeof(*n));
        if (!n)
                return;
        memmove(n + i + 1, n + i, (x->run_now_cnt - i) * sizeof(*n));
        n[i] = at;
        x->run_now = n;
        x->run_now_cnt++;
        tb_sched_task_mark_dirty(s, slot);
        tb_sched_task_rekey(s, slot);
}

/* Apply a TaskEvent; \p remote: from another region's copy (state only:
 * a run-now there is that region's to fire). */
static tb_err_t tb_sched_apply_event(tb_sched_t *s, int32_t partition, const json_t *ev,
                                     bool replay, bool remote, int64_t now_ms, char *errstr,
                                     size_t errstr_size) {
        const char *type = tb_sched_jstr(ev, "type", "");
        const char *tid = tb_sched_jstr(ev, "task_id", NULL);
        int64_t version = tb_sched_jlong(ev, "version", 0);
        int64_t epoch = tb_sched_jlong(ev, "epoch", 0);
        if (!tid)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "TaskEvent without task_id");
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot != UINT32_MAX && (s->tasks[slot].flags & TB_SCHED_TF_TOMB))
                slot = UINT32_MAX;
        if (replay) {
                if (!strcmp(type, "RUN_REQUESTED") && slot != UINT32_MAX)
                        tb_sched_run_now_add(s, slot, tb_sched_jlong(ev, "at", now_ms));
                return TB_OK;
        }
        if (!strcmp(type, "DELETED")) {
                if (slot != UINT32_MAX && tb_repl_newer(epoch, version, s->tasks[slot].epoch,
                                                        s->tasks[slot].version)) {
                        /* a paused task's fires until now: one range */
                        tb_sched_range_close_paused(s, slot, now_ms);
                        tb_sched_task_remove(s, tid, true);
                }
                return TB_OK;
        }
        const json_t *spec = json_object_get(ev, "task");
        /* regions: a higher home-region epoch wins whatever the version, so an
         * old home's events cannot take a moved task back */
        bool newer = slot == UINT32_MAX || tb_repl_newer(epoch, version, s->tasks[slot].epoch,
                                                         s->tasks[slot].version);
        bool was_local = slot != UINT32_MAX && (s->tasks[slot].flags & TB_SCHED_TF_LOCAL);
        if (newer && json_is_object(spec)) {
                tb_err_t err = tb_sched_task_put(s, partition, tid, version,
                                                 tb_sched_jlong(ev, "created_at", now_ms), spec,
                                                 now_ms, errstr, errstr_size);
                if (err)
                        return err;
                slot = tb_sched_slot_of(s, tid);
                if (slot != UINT32_MAX) {
                        s->tasks[slot].epoch = epoch;
                        /* moved here by a failover: where its fires resume is
                         * the role's to find (the old home's replicated runs) */
                        if (!was_local && epoch > 0 && (s->tasks[slot].flags & TB_SCHED_TF_LOCAL))
                                tb_sched_moved_push(s, tid);
                }
        }
        if (!remote && !strcmp(type, "RUN_REQUESTED") && slot != UINT32_MAX)
                tb_sched_run_now_add(s, slot, tb_sched_jlong(ev, "at", now_ms));
        return TB_OK;
}

tb_err_t tb_sched_event(tb_sched_t *s, int32_t partition, const json_t *ev, bool replay,
                        int64_t now_ms, char *errstr, size_t errstr_size) {
        return tb_sched_apply_event(s, partition, ev, replay, false, now_ms, errstr, errstr_size);
}

tb_err_t tb_sched_remote_event(tb_sched_t *s, int32_t partition, const json_t *ev,
                               int64_t now_ms, char *errstr, size_t errstr_size) {
        return tb_sched_apply_event(s, partition, ev, false, true, now_ms, errstr, errstr_size);
}

/* ---- results ---------------------------------------------------------------- */

static int64_t tb_sched_backoff(const tb_sched_task_t *t, int attempt) {
        int64_t b = t->backoff_ms > 0 ? t->backoff_ms : 0;
        for (int i = 1; i < attempt && b < t->backoff_max_ms; i++)
                b *= 2;
        if (t->backoff_max_ms > 0 && b > t->backoff_max_ms)
                b = t->backoff_max_ms;
        return b;
}

tb_err_t tb_sched_result(tb_sched_t *s, int32_t partition, const json_t *res, int64_t now_ms,
                         char *errstr, size_t errstr_size) {
        const char *tid = tb_sched_jstr(res, "task_id", NULL);
        const char *st = tb_sched_jstr(res, "status", "");
        if (!tid)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "RunResult without task_id");
        if (!tb_task_result_retryable(st, json_is_true(json_object_get(res, "infra_error"))))
                return TB_OK;
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot == UINT32_MAX || (s->tasks[slot].flags & TB_SCHED_TF_TOMB))
                return TB_OK; /* deleted since: nothing to retry */
        tb_sched_task_t *t = &s->tasks[slot];
        if (!(t->flags & TB_SCHED_TF_LOCAL))
                return TB_OK;
        int64_t nominal = tb_sched_jlong(res, "nominal_time", 0);
        int attempt = (int)tb_sched_jlong(res, "attempt", 1);
        int64_t at = tb_sched_jlong(res, "at", now_ms);
        if (attempt < 1)
                attempt = 1;
        if (attempt < t->max_attempts) {
                tb_sched_extra_t *x = tb_sched_task_extra(t);
                if (!x)
                        return TB_ERR_NOMEM;
                for (uint32_t i = 0; i < x->retry_cnt; i++)
                        if (x->retries[i].nominal_ms == nominal &&
                            x->retries[i].attempt >= attempt + 1)
                                return TB_OK; /* a duplicate result */
                tb_sched_retry_t *n = realloc(x->retries, (x->retry_cnt + 1) * sizeof(*n));
                if (!n)
                        return TB_ERR_NOMEM;
                x->retries = n;
                x->retries[x->retry_cnt++] = (tb_sched_retry_t){
                        .nominal_ms = nominal,
                        .due_ms = at + tb_sched_backoff(t, attempt),
                        .attempt = attempt + 1,
                };
                tb_metrics_add("taskbus_scheduler_retries_total", NULL, 1);
                tb_sched_task_mark_dirty(s, slot);
                tb_sched_task_rekey(s, slot);
                return TB_OK;
        }
        /* exhausted: the run goes to the DLQ with its last error */
        if (s->dlq_cnt == s->dlq_cap) {
                tb_sched_dlq_t *n = tb_array_grow(s->dlq, &s->dlq_cap, sizeof(*n), 64);
                if (!n)
                        return TB_ERR_NOMEM;
                s->dlq = n;
        }
        tb_sched_dlq_t *d = &s->dlq[s->dlq_cnt];
        memset(d, 0, sizeof(*d));
        d->task_id = strdup(tid);
        d->partition = partition;
        tb_snprintf(d->status, sizeof(d->status), "%s", st);
        const char *e = tb_sched_jstr(res, "error", NULL);
        char ebuf[128];
        if (!e) {
                tb_snprintf(ebuf, sizeof(ebuf), "%s after %d attempt%s", st, attempt,
                            attempt == 1 ? "" : "s");
                e = ebuf;
        }
        d->error = strdup(e);
        if (!d->task_id || !d->error) {
                free(d->task_id);
                free(d->error);
                return TB_ERR_NOMEM;
        }
        tb_sched_run_encode(s, t, tid, nominal, attempt,
                            attempt > 1 ? TB_SCHED_TRIG_RETRY : TB_SCHED_TRIG_SCHEDULE, at,
                            &d->value);
        s->dlq_cnt++;
        return TB_OK;
}
