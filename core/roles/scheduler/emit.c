/**
 * @file scheduler/emit.c
 * @brief Emission: one tick turns what is due into RunRequests, RunResults
 *        for fires not run (misfire, paused, expired), retries, runs-dlq
 *        entries and checkpoints, written in one transaction with the owned
 *        partitions' positions (or to the sink).
 */
#include "scheduler/engine_internal.h"

#include "http/metrics.h"

#include <stdlib.h>
#include <string.h>

static const char *const tb_sched_trig_labels[] = {"trigger=\"schedule\"", "trigger=\"run_now\"",
                                                   "trigger=\"retry\"", "trigger=\"misfire\""};

/* ---- emission ---------------------------------------------------------------- */

static tb_err_t tb_sched_emit(tb_sched_t *s, tb_topic_t topic, int32_t partition, const char *key,
                              const void *value, size_t len, const tb_header_t *hdrs, size_t hcnt,
                              char *errstr, size_t errstr_size) {
        if (s->sink) {
                s->sink(s->sink_opaque, topic, partition, key, value, len, hdrs, hcnt);
                return TB_OK;
        }
        if (!s->producer)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "scheduler: no producer and no sink");
        if (!s->in_txn) {
                tb_err_t err = tb_bus_txn_begin(s->producer, errstr, errstr_size);
                if (err)
                        return err;
                s->in_txn = true;
        }
        return tb_bus_produce(s->producer, s->conf, topic, partition, key, strlen(key), value,
                              len, hdrs, hcnt, false, errstr, errstr_size);
}

static tb_err_t tb_sched_emit_run(tb_sched_t *s, const tb_sched_task_t *t, const char *tid,
                                  int64_t nominal, int attempt, int trig, int64_t now, char *errstr,
                                  size_t errstr_size) {
        s->scratch.len = 0;
        tb_sched_run_encode(s, t, tid, nominal, attempt, trig, now, &s->scratch);
        return tb_sched_emit(s, TB_TOPIC_RUNS, t->partition, tid, s->scratch.data, s->scratch.len,
                             NULL, 0, errstr, errstr_size);
}

static tb_err_t tb_sched_emit_checkpoint(tb_sched_t *s, const tb_sched_task_t *t, int64_t now,
                                         char *errstr, size_t errstr_size) {
        char buf[37];
        s->scratch.len = 0;
        tb_err_t err = tb_sched_checkpoint_encode(t, now, &s->scratch, errstr, errstr_size);
        if (err)
                return err;
        return tb_sched_emit(s, TB_TOPIC_CHECKPOINTS, t->partition, tb_sched_task_idstr(t, buf),
                             s->scratch.data, s->scratch.len, NULL, 0, errstr, errstr_size);
}

static void tb_sched_lag_push(tb_sched_t *s, int64_t due) {
        if (s->lag_cnt == s->lag_cap) {
                int64_t *n = tb_array_grow(s->lag_due, &s->lag_cap, sizeof(*n), 1024);
                if (!n)
                        return;
                s->lag_due = n;
        }
        s->lag_due[s->lag_cnt++] = due;
}

static bool tb_sched_is_late(const tb_sched_task_t *t, int64_t n, int64_t now) {
        return now - (n + tb_sched_task_jitter(t, n)) > TB_SCHED_MISFIRE_THRESHOLD_MS;
}

/* Late fires from \p n on, counted up to \p limit + 1. */
static int64_t tb_sched_count_late(const tb_sched_task_t *t, int64_t n, int64_t now,
                                   int64_t limit) {
        int64_t cnt = 0;
        while (n != TB_SCHED_NEVER && cnt <= limit && tb_sched_is_late(t, n, now)) {
                cnt++;
                n = tb_sched_task_next_after(t, n);
        }
        return cnt;
}

/* A RunRequest for fire \p nominal, counted as a fire of trigger \p trig. */
static tb_err_t tb_sched_emit_fire(tb_sched_t *s, const tb_sched_task_t *t, const char *tid,
                                   int64_t nominal, int attempt, int trig, int64_t now,
                                   tb_sched_tick_stats_t *st, char *errstr, size_t errstr_size) {
        tb_err_t err =
                tb_sched_emit_run(s, t, tid, nominal, attempt, trig, now, errstr, errstr_size);
        if (err)
                return err;
        tb_metrics_add("taskbus_scheduler_fires_total", tb_sched_trig_labels[trig], 1);
        st->fires++;
        return TB_OK;
}

/* A RunResult \p status for the \p count fires from \p nominal to \p last
 * (TB_SCHED_NO_LAST: one fire, not a range), which are not run (\p msg says
 * why), counted under the skips metric's \p reason label. */
static tb_err_t tb_sched_emit_skip(tb_sched_t *s, const tb_sched_task_t *t, const char *tid,
                                   int64_t nominal, int64_t last, int64_t count,
                                   const char *status, const char *reason, const char *msg,
                                   int64_t now, tb_sched_tick_stats_t *st, char *errstr,
                                   size_t errstr_size) {
        s->scratch.len = 0;
        tb_err_t err = tb_sched_range_encode(s, tid, nominal, last, count, status, msg, now,
                                             &s->scratch, errstr, errstr_size);
        if (!err)
                err = tb_sched_emit(s, TB_TOPIC_RESULTS, t->partition, tid, s->scratch.data,
                                    s->scratch.len, NULL, 0, errstr, errstr_size);
        if (err)
                return err;
        tb_metrics_add("taskbus_scheduler_skips_total", reason, (double)count);
        st->skips++;
        return TB_OK;
}

/* The range records closed outside the tick (ranges.c), in its transaction. */
static tb_err_t tb_sched_emit_pending(tb_sched_t *s, tb_sched_tick_stats_t *st, char *errstr,
                                      size_t errstr_size) {
        for (size_t i = 0; i < s->pend_cnt; i++) {
                tb_sched_pending_t *p = &s->pend[i];
                tb_err_t err = tb_sched_emit(s, TB_TOPIC_RESULTS, p->partition, p->task_id,
                                             p->value.data, p->value.len, NULL, 0, errstr,
                                             errstr_size);
                if (err)
                        return err;
                st->skips++;
        }
        return TB_OK;
}

/* Does the late fire \p n run (as a MISFIRE) under the task's misfire policy? */
static bool tb_sched_misfire_runs(const tb_sched_t *s, const tb_sched_task_t *t, int64_t n,
                                  int64_t now) {
        if (t->misfire == TB_SCHED_MISFIRE_SKIP)
                return false;
        if (t->misfire == TB_SCHED_MISFIRE_RUN_ONCE) {
                /* only the latest missed fire runs: with calendars, the
                 * latest of those they would run (a bounded look ahead) */
                int64_t nn = tb_sched_task_next_after(t, n), fire = nn;
                for (int i = 0; tb_sched_cal_has(t) && nn != TB_SCHED_NEVER && i < 1000; i++) {
                        if (tb_sched_cal_runs(s, t, nn, &fire))
                                break;
                        if (!tb_sched_is_late(t, nn, now))
                                return true; /* the next one is not missed */
                        nn = tb_sched_task_next_after(t, nn);
                        fire = nn;
                }
                return nn == TB_SCHED_NEVER ||
                       now - (fire + tb_sched_task_jitter(t, nn)) <= TB_SCHED_MISFIRE_THRESHOLD_MS;
        }
        int64_t cap = s->conf->sched_misfire_cap;
        return tb_sched_count_late(t, n, now, cap) <= cap;
}

/* Emit what task \p slot has due, up to \p room records. @returns records. */
static tb_err_t tb_sched_task_process(tb_sched_t *s, uint32_t slot, int64_t now, size_t room,
                                      size_t *used, tb_sched_tick_stats_t *st, char *errstr,
                                      size_t errstr_size) {
        tb_sched_task_t *t = &s->tasks[slot];
        char buf[37], msg[256], when[32];
        const char *tid = tb_sched_task_idstr(t, buf);
        tb_err_t err = TB_OK;
        size_t n_rec = 0;
        while (n_rec < room && n_rec < TB_SCHED_TASK_CHUNK) {
                tb_sched_extra_t *x = t->x;
                if (x && x->run_now_cnt) {
                        int64_t at = x->run_now[0];
                        if ((err = tb_sched_emit_fire(s, t, tid, at, 1, TB_SCHED_TRIG_RUN_NOW, now,
                                                      st, errstr, errstr_size)))
                                break;
                        memmove(x->run_now, x->run_now + 1,
                                (x->run_now_cnt - 1) * sizeof(*x->run_now));
                        x->run_now_cnt--;
                        if (at > x->run_now_mark)
                                x->run_now_mark = at;
                        n_rec++;
                        tb_sched_task_mark_dirty(s, slot);
                        continue;
                }
                if (x && x->retry_cnt) {
                        uint32_t best = UINT32_MAX;
                        for (uint32_t i = 0; i < x->retry_cnt; i++)
                                if (x->retries[i].due_ms <= now &&
                                    (best == UINT32_MAX ||
                                     x->retries[i].due_ms < x->retries[best].due_ms))
                                        best = i;
                        if (best != UINT32_MAX) {
                                tb_sched_retry_t r = x->retries[best];
                                if ((err = tb_sched_emit_fire(s, t, tid, r.nominal_ms, r.attempt,
                                                              TB_SCHED_TRIG_RETRY, now, st, errstr,
                                                              errstr_size)))
                                        break;
                                x->retries[best] = x->retries[--x->retry_cnt];
                                n_rec++;
                                tb_sched_task_mark_dirty(s, slot);
                                continue;
                        }
                }
                if ((t->flags & TB_SCHED_TF_EXPIRY_PENDING) && t->expires_ms <= now) {
                        tb_time_format(t->expires_ms, when);
                        tb_snprintf(msg, sizeof(msg), "the task expired at %s (expires_at)",
                                    when);
                        if ((err = tb_sched_emit_skip(s, t, tid, t->expires_ms, TB_SCHED_NO_LAST,
                                                      1, "EXPIRED", "reason=\"expired\"", msg,
                                                      now, st, errstr, errstr_size)))
                                break;
                        t->flags = (uint8_t)((t->flags & ~TB_SCHED_TF_EXPIRY_PENDING) |
                                             TB_SCHED_TF_EXPIRED);
                        n_rec++;
                        tb_sched_task_mark_dirty(s, slot);
                        continue;
                }
                int64_t n = t->next_nominal;
                if (n == TB_SCHED_NEVER)
                        break;
                if (t->flags & TB_SCHED_TF_PAUSED) {
                        /* not armed fire by fire: only the end of its
                         * schedule closes its range here (ranges.c) */
                        size_t made;
                        if (tb_sched_range_pause_end(t) > now ||
                            !(made = tb_sched_range_close_paused(s, slot, now)))
                                break;
                        n_rec += made;
                        continue;
                } else {
                        /* the calendars' decision (calendars.c): NULL when
                         * the task has none, or they were never loaded */
                        bool cal = tb_sched_cal_has(t);
                        const tb_calendar_decision_t *cd = cal ? tb_sched_cal_decision(s, t) : NULL;
                        if (cal && !cd)
                                break;
                        int64_t j = tb_sched_task_jitter(t, n);
                        int64_t at = cd && cd->verdict == TB_CALENDAR_MOVED ? cd->fire_ms : n;
                        if (at + j > now)
                                break;
                        bool run = true;
                        int trig = TB_SCHED_TRIG_SCHEDULE;
                        if (cd && cd->verdict != TB_CALENDAR_FIRE &&
                            cd->verdict != TB_CALENDAR_MOVED) {
                                if ((err = tb_sched_emit_skip(s, t, tid, n, TB_SCHED_NO_LAST, 1,
                                                              "SKIPPED_CALENDAR",
                                                              "reason=\"calendar\"", cd->reason,
                                                              now, st, errstr, errstr_size)))
                                        break;
                                goto next;
                        }
                        if (now - (at + j) > TB_SCHED_MISFIRE_THRESHOLD_MS) {
                                st->misfires++;
                                tb_metrics_add("taskbus_scheduler_misfires_total", NULL, 1);
                                trig = TB_SCHED_TRIG_MISFIRE;
                                run = tb_sched_misfire_runs(s, t, n, now);
                        }
                        int64_t last = n, cnt = 1;
                        if (run) {
                                if ((err = tb_sched_emit_fire(s, t, tid, n, 1, trig, now, st,
                                                              errstr, errstr_size)))
                                        break;
                                if (trig == TB_SCHED_TRIG_SCHEDULE)
                                        tb_sched_lag_push(s, at + j); /* a rolled fire's lag
                                                                         is from its new time */
                        } else {
                                /* the late fires skipped with it: one record (one
                                 * by one for a task with calendars, each decided) */
                                cnt = cal ? 1 : tb_sched_range_misfire(s, t, n, now, &last);
                                if (cnt > 1) {
                                        st->misfires += (size_t)(cnt - 1);
                                        tb_metrics_add("taskbus_scheduler_misfires_total", NULL,
                                                       (double)(cnt - 1));
                                }
                                char what[160];
                                tb_snprintf(msg, sizeof(msg),
                                            "misfire: %s %s missed (no scheduler "
                                            "owned partition %d in time; misfire policy %s)",
                                            tb_sched_range_describe(n, last, cnt, what,
                                                                    sizeof(what)),
                                            cnt > 1 ? "were" : "was", (int)t->partition,
                                            t->misfire == TB_SCHED_MISFIRE_SKIP ? "skip"
                                            : t->misfire == TB_SCHED_MISFIRE_RUN_ALL
                                                    ? "run_all (over "
                                                      "scheduler.misfire_cap)"
                                                    : "run_once");
                                if ((err = tb_sched_emit_skip(
                                             s, t, tid, n, cnt > 1 ? last : TB_SCHED_NO_LAST, cnt,
                                             "SKIPPED_MISFIRE", "reason=\"misfire\"", msg, now,
                                             st, errstr, errstr_size)))
                                        break;
                        }
                        t->fires += cnt - 1;
                        n = last;
                }
        next:
                t->last_nominal = n;
                t->fires++;
                t->next_nominal = tb_sched_task_next_after(t, n);
                tb_sched_task_check_expiry(t);
                n_rec++;
                tb_sched_task_mark_dirty(s, slot);
        }
        *used = n_rec;
        if (err)
                return err;
        int64_t d = tb_sched_task_due(t);
        /* a backlog goes behind everything else that is due */
        if (d != TB_SCHED_NEVER && d <= now && n_rec >= TB_SCHED_TASK_CHUNK)
                tb_timerheap_set(&s->heap, slot, now);
        else
                tb_sched_task_rekey(s, slot);
        return TB_OK;
}

static tb_err_t tb_sched_tick_offsets(tb_sched_t *s, char *errstr, size_t errstr_size) {
        if (!s->group || !s->producer || s->sink)
                return TB_OK;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2 * s->part_cnt);
        for (int32_t p = 0; p < s->part_cnt; p++) {
                if (!s->parts[p].owned)
                        continue;
                if (s->parts[p].ev_pos >= 0)
                        rd_kafka_topic_partition_list_add(l, s->events_topic, p)->offset =
                                s->parts[p].ev_pos;
                if (s->parts[p].rr_pos >= 0)
                        rd_kafka_topic_partition_list_add(l, s->results_topic, p)->offset =
                                s->parts[p].rr_pos;
        }
        tb_err_t err = TB_OK;
        if (l->cnt)
                err = tb_bus_txn_send_offsets(s->producer, s->group, l, errstr, errstr_size);
        rd_kafka_topic_partition_list_destroy(l);
        return err;
}

tb_err_t tb_sched_tick(tb_sched_t *s, int64_t now, tb_sched_tick_stats_t *st, char *errstr,
                       size_t errstr_size) {
        tb_err_t err = TB_OK;
        memset(st, 0, sizeof(*st));
        s->lag_cnt = 0;
        size_t room = s->conf->sched_max_batch > 0 ? (size_t)s->conf->sched_max_batch : 500;
        size_t used = 0;
        const tb_timer_t *top;
        bool work = s->dirty_cnt || s->dlq_cnt || s->tomb_cnt || s->pend_cnt ||
                    ((top = tb_timerheap_peek(&s->heap)) && top->due_ms <= now);
        if (!work)
                return TB_OK;
        while (used < room && (top = tb_timerheap_peek(&s->heap)) && top->due_ms <= now) {
                size_t u = 0;
                if ((err = tb_sched_task_process(s, top->id, now, room - used, &u, st, errstr,
                                                 errstr_size)))
                        goto fail;
                used += u;
                if (u == 0)
                        tb_sched_task_rekey(s, top->id); /* nothing was due after all */
        }
        st->more = used >= room;
        if ((err = tb_sched_emit_pending(s, st, errstr, errstr_size)))
                goto fail;
        for (size_t i = 0; i < s->dlq_cnt; i++) {
                tb_sched_dlq_t *d = &s->dlq[i];
                tb_header_t h[2] = {{"error", d->error, strlen(d->error)},
                                    {"status", d->status, strlen(d->status)}};
                if ((err = tb_sched_emit(s, TB_TOPIC_DLQ, d->partition, d->task_id, d->value.data,
                                         d->value.len, h, 2, errstr, errstr_size)))
                        goto fail;
                st->dlq++;
        }
        for (size_t i = 0; i < s->tomb_cnt; i++)
                if ((err = tb_sched_emit(s, TB_TOPIC_CHECKPOINTS, s->tombs[i].partition,
                                         s->tombs[i].task_id, NULL, 0, NULL, 0, errstr,
                                         errstr_size)))
                        goto fail;
        for (size_t i = 0; i < s->dirty_cnt; i++) {
                tb_sched_task_t *t = &s->tasks[s->dirty[i]];
                if (!(t->flags & TB_SCHED_TF_USED) || (t->flags & TB_SCHED_TF_TOMB))
                        continue;
                if ((err = tb_sched_emit_checkpoint(s, t, now, errstr, errstr_size)))
                        goto fail;
                st->checkpoints++;
        }
        if (s->in_txn) {
                /* Every record is acknowledged (so every partition it touches
                 * is in the transaction and holds its LSO) before the offsets
                 * go in: a zombie stopped after this point blocks the new
                 * owner's read_committed load until its transaction ends,
                 * and one stopped before cannot add offsets any more. */
                rd_kafka_resp_err_t ferr = rd_kafka_flush(s->producer, 30000);
                if (ferr) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                        "flush before commit: %s", rd_kafka_err2str(ferr));
                        goto fail;
                }
                if ((err = tb_sched_tick_offsets(s, errstr, errstr_size)) ||
                    (err = tb_bus_txn_commit(s->producer, 30000, errstr, errstr_size)))
                        goto fail;
                s->in_txn = false;
        }
        st->commit_ms = tb_now_ms();
        for (size_t i = 0; i < s->lag_cnt; i++) {
                int64_t lag = st->commit_ms - s->lag_due[i];
                tb_metrics_observe("taskbus_scheduler_fire_lag_seconds", NULL,
                                   (double)(lag < 0 ? 0 : lag) / 1000.0);
                if (s->hook)
                        s->hook(s->hook_opaque, s->lag_due[i], st->commit_ms);
        }
        for (size_t i = 0; i < s->dirty_cnt; i++) {
                uint32_t slot = s->dirty[i];
                tb_sched_task_t *t = &s->tasks[slot];
                if (!(t->flags & TB_SCHED_TF_USED))
                        continue;
                t->flags &= (uint8_t)~TB_SCHED_TF_DIRTY;
                if (t->flags & TB_SCHED_TF_TOMB)
                        tb_sched_task_destroy(s, slot);
        }
        s->dirty_cnt = 0;
        for (size_t i = 0; i < s->dlq_cnt; i++) {
                free(s->dlq[i].task_id);
                free(s->dlq[i].error);
                tb_buf_free(&s->dlq[i].value);
        }
        s->dlq_cnt = 0;
        tb_sched_range_drop(s, -1);
        tb_metrics_add("taskbus_scheduler_dlq_total", NULL, (double)st->dlq);
        for (size_t i = 0; i < s->tomb_cnt; i++)
                free(s->tombs[i].task_id);
        s->tomb_cnt = 0;
        return TB_OK;
fail:
        if (s->in_txn && s->producer && !s->sink) {
                char aerr[256];
                if (err != TB_ERR_FENCED)
                        tb_bus_txn_abort(s->producer, 10000, aerr, sizeof(aerr));
        }
        s->in_txn = false;
        tb_metrics_add("taskbus_scheduler_txn_failures_total", NULL, 1);
        return err;
}
