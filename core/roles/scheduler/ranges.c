/**
 * @file scheduler/ranges.c
 * @brief Fires not run, accounted for as ranges: one RunResult per range of
 *        consecutive fires of a task that were not run for the same reason
 *        (SKIPPED_PAUSED, SKIPPED_MISFIRE), with its first and last nominal
 *        times and how many fires it stands for.
 *
 * A paused task's fires are not armed: its timer waits for the end of its
 * schedule, if it has one. The fires it did not run are counted when the
 * pause ends (resume, a change of its schedule or home region, deletion, the
 * end of its schedule) from the last nominal time its checkpoint holds, so
 * the range survives a restart or a rebalance in the middle of the pause
 * without any record written during it: the task's paused state (the
 * projection) and the checkpoint's last nominal time are the whole state.
 * A range record goes out in the same transaction as the checkpoint that
 * moves the last nominal time past it, so it is written once.
 *
 * Counting is a closed form for "every" schedules (no step per fire) and one
 * schedule step per fire for cron, bounded by TB_SCHED_RANGE_MAX per record.
 */
#include "scheduler/engine_internal.h"

#include "http/metrics.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int64_t tb_sched_range_span(const tb_sched_task_t *t, int64_t first, int64_t upto, int64_t max,
                            int64_t *last) {
        if (first == TB_SCHED_NEVER || first > upto || max < 1)
                return 0;
        if (t->kind == TB_SCHEDULE_EVERY && t->param_ms > 0 &&
            tb_sched_task_next_after(t, first - 1) == first) {
                /* fires are first + k * period up to end_at (inclusive) and
                 * before expires_at */
                int64_t end = upto;
                if (t->end_ms > 0 && t->end_ms < end)
                        end = t->end_ms;
                if (t->expires_ms > 0 && t->expires_ms - 1 < end)
                        end = t->expires_ms - 1;
                if (end > TB_SCHEDULE_MAX_MS)
                        end = TB_SCHEDULE_MAX_MS;
                if (first > end)
                        return 0;
                int64_t cnt = (end - first) / t->param_ms + 1;
                if (cnt > max)
                        cnt = max;
                *last = first + (cnt - 1) * t->param_ms;
                return cnt;
        }
        int64_t cnt = 0;
        for (int64_t n = first; n != TB_SCHED_NEVER && n <= upto && cnt < max;
             n = tb_sched_task_next_after(t, n)) {
                *last = n;
                cnt++;
        }
        return cnt;
}

int64_t tb_sched_range_pause_end(const tb_sched_task_t *t) {
        if (t->next_nominal == TB_SCHED_NEVER)
                return TB_SCHED_NEVER;
        int64_t e = t->kind == TB_SCHEDULE_ONCE ? t->next_nominal : TB_SCHED_NEVER;
        if (t->end_ms > 0 && t->end_ms < e)
                e = t->end_ms;
        if (t->expires_ms > 0 && t->expires_ms < e)
                e = t->expires_ms;
        return e < t->next_nominal ? t->next_nominal : e;
}

const char *tb_sched_range_describe(int64_t first, int64_t last, int64_t count, char *buf,
                                    size_t size) {
        char a[32], b[32];
        tb_time_format(first, a);
        if (count <= 1) {
                tb_snprintf(buf, size, "the fire at %s", a);
        } else {
                tb_time_format(last, b);
                tb_snprintf(buf, size, "%" PRId64 " fires from %s to %s", count, a, b);
        }
        return buf;
}

/* Queue one encoded record of task \p t for the next tick. */
static bool tb_sched_range_push(tb_sched_t *s, const tb_sched_task_t *t, const char *tid,
                                tb_buf_t *value) {
        if (s->pend_cnt == s->pend_cap) {
                tb_sched_pending_t *n = tb_array_grow(s->pend, &s->pend_cap, sizeof(*n), 64);
                if (!n)
                        return false;
                s->pend = n;
        }
        char *id = strdup(tid);
        if (!id)
                return false;
        s->pend[s->pend_cnt++] = (tb_sched_pending_t){
                .task_id = id, .partition = t->partition, .value = *value};
        *value = (tb_buf_t){0};
        return true;
}

size_t tb_sched_range_close_paused(tb_sched_t *s, uint32_t slot, int64_t upto) {
        tb_sched_task_t *t = &s->tasks[slot];
        char buf[37], what[160], msg[256], err[256] = "out of memory";
        size_t made = 0;
        if (!(t->flags & TB_SCHED_TF_PAUSED) || !(t->flags & TB_SCHED_TF_LOCAL) ||
            (t->flags & TB_SCHED_TF_TOMB))
                return 0;
        const char *tid = tb_sched_task_idstr(t, buf);
        int64_t first;
        while ((first = t->next_nominal) != TB_SCHED_NEVER && first <= upto) {
                int64_t last = first;
                int64_t cnt = tb_sched_range_span(t, first, upto, TB_SCHED_RANGE_MAX, &last);
                if (cnt < 1)
                        break;
                tb_snprintf(msg, sizeof(msg), "the task was paused: %s %s not run",
                            tb_sched_range_describe(first, last, cnt, what, sizeof(what)),
                            cnt == 1 ? "was" : "were");
                tb_buf_t v = {0};
                if (tb_sched_range_encode(s, tid, first, cnt > 1 ? last : TB_SCHED_NO_LAST, cnt,
                                          "SKIPPED_PAUSED", msg, upto, &v, err,
                                          sizeof(err)) != TB_OK ||
                    !tb_sched_range_push(s, t, tid, &v)) {
                        /* the checkpoint does not move: the range is
                         * counted again by the next close or load */
                        tb_buf_free(&v);
                        tb_error(TB_SCHED_LOG,
                                 "task %s: the paused range %s is not recorded yet: %s", tid,
                                 what, err);
                        break;
                }
                tb_metrics_add("taskbus_scheduler_skips_total", "reason=\"paused\"", (double)cnt);
                t->last_nominal = last;
                t->fires += cnt;
                t->next_nominal = tb_sched_task_next_after(t, last);
                made++;
        }
        if (made) {
                tb_sched_task_check_expiry(t);
                tb_sched_task_mark_dirty(s, slot);
        }
        return made;
}

static bool tb_sched_range_late(const tb_sched_task_t *t, int64_t n, int64_t now) {
        return now - (n + tb_sched_task_jitter(t, n)) > TB_SCHED_MISFIRE_THRESHOLD_MS;
}

int64_t tb_sched_range_misfire(const tb_sched_t *s, const tb_sched_task_t *t, int64_t n,
                               int64_t now, int64_t *last) {
        int64_t cap = s->conf->sched_misfire_cap > 0 ? s->conf->sched_misfire_cap : 0;
        int64_t limit = TB_SCHED_RANGE_MAX + cap + 1;
        /* every fire up to this one is late whatever its jitter; the few
         * after it are checked one by one */
        int64_t sure = now - TB_SCHED_MISFIRE_THRESHOLD_MS - 1 -
                       (t->jitter_ms > 0 ? t->jitter_ms : 0);
        int64_t late_last = n;
        int64_t late = tb_sched_range_span(t, n, sure, limit, &late_last);
        if (late < 1) {
                late = 1; /* n itself is late: the caller found it so */
                late_last = n;
        }
        while (late < limit) {
                int64_t nn = tb_sched_task_next_after(t, late_last);
                if (nn == TB_SCHED_NEVER || !tb_sched_range_late(t, nn, now))
                        break;
                late_last = nn;
                late++;
        }
        /* which of the late fires the policy skips: all of them (skip), all
         * but the latest (run_once), all but the last misfire_cap (run_all) */
        int64_t skip = t->misfire == TB_SCHED_MISFIRE_SKIP       ? late
                       : t->misfire == TB_SCHED_MISFIRE_RUN_ONCE ? late - 1
                                                                 : late - cap;
        if (skip > TB_SCHED_RANGE_MAX)
                skip = TB_SCHED_RANGE_MAX;
        if (skip < 1)
                skip = 1;
        *last = n;
        return tb_sched_range_span(t, n, TB_SCHED_NEVER - 1, skip, last);
}

void tb_sched_range_drop(tb_sched_t *s, int32_t p) {
        size_t k = 0;
        for (size_t i = 0; i < s->pend_cnt; i++) {
                if (p < 0 || s->pend[i].partition == p) {
                        free(s->pend[i].task_id);
                        tb_buf_free(&s->pend[i].value);
                } else {
                        s->pend[k++] = s->pend[i];
                }
        }
        s->pend_cnt = k;
}
