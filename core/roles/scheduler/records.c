/**
 * @file scheduler/records.c
 * @brief The formats of the engine's records: a TaskSpec made a task record,
 *        the hand-encoded RunRequest of the hot path, the RunResult of a fire
 *        not run, and the SchedulerCheckpoint written and read back.
 *
 * emit.c decides what to write and when; this file only says what the bytes
 * are.
 */
#include "scheduler/engine_internal.h"

#include "serde/serde.h"
#include "task/snapshot.h"

#include <stdlib.h>
#include <string.h>

static const char *const tb_sched_trig_names[] = {"SCHEDULE", "RUN_NOW", "RETRY", "MISFIRE"};

/* ---- Avro bits for the hot path --------------------------------------------- */

static void tb_sched_av_long(tb_buf_t *b, int64_t v) {
        uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        unsigned char tmp[10];
        int n = 0;
        while (z & ~(uint64_t)0x7f) {
                tmp[n++] = (unsigned char)((z & 0x7f) | 0x80);
                z >>= 7;
        }
        tmp[n++] = (unsigned char)z;
        tb_buf_append(b, tmp, (size_t)n);
}

static void tb_sched_av_str(tb_buf_t *b, const char *str) {
        size_t n = strlen(str);
        tb_sched_av_long(b, (int64_t)n);
        tb_buf_append(b, str, n);
}

/* The RunRequest fields before the snapshot, encoded with the values used
 * to cut the snapshot out: run_id "", task_id "", task_version 0,
 * nominal_time 0, attempt 1, trigger SCHEDULE, emitted_at 0. */
static const uint8_t tb_sched_run_probe_prefix[] = {0, 0, 0, 0, 2, 0, 0};

/* An Avro map of strings: one block of \p m's entries, then the end. */
static void tb_sched_av_map(tb_buf_t *b, const json_t *m) {
        const char *k;
        json_t *v;
        if (json_object_size(m)) {
                tb_sched_av_long(b, (int64_t)json_object_size(m));
                json_object_foreach((json_t *)m, k, v) {
                        tb_sched_av_str(b, k);
                        tb_sched_av_long(b, (int64_t)json_string_length(v));
                        tb_buf_append(b, json_string_value(v), json_string_length(v));
                }
        }
        tb_sched_av_long(b, 0);
}

void tb_sched_run_encode(const tb_sched_t *s, const tb_sched_task_t *t, const char *tid,
                         int64_t nominal, int attempt, int trig, int64_t emitted,
                         const json_t *params, tb_buf_t *out) {
        char rid[33];
        tb_sched_run_id(tid, nominal, attempt, rid);
        tb_buf_append(out, s->run_header, sizeof(s->run_header));
        tb_sched_av_str(out, rid);
        tb_sched_av_str(out, tid);
        tb_sched_av_long(out, t->version);
        tb_sched_av_long(out, nominal);
        tb_sched_av_long(out, attempt);
        tb_sched_av_long(out, trig);
        tb_sched_av_long(out, emitted);
        if (!json_object_size(params)) {
                tb_buf_append(out, t->snap, t->snap_len);
                return;
        }
        tb_buf_append(out, t->snap, t->snap_body);
        tb_sched_av_map(out, params);
        tb_sched_av_long(out, 0); /* parents: [] (a dependency run's are set by after.c) */
}

tb_err_t tb_sched_encode_run(const tb_sched_t *s, const char *tid, int64_t nominal_ms,
                             int attempt, const char *trigger, int64_t emitted_ms,
                             tb_buf_t *out, char *errstr, size_t errstr_size) {
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot == UINT32_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND, "task %s is not loaded",
                                 tid);
        int trig = -1;
        for (int i = 0; i < 4; i++)
                if (trigger && !strcmp(trigger, tb_sched_trig_names[i]))
                        trig = i;
        if (trig < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "trigger '%s' is not one of SCHEDULE, RUN_NOW, RETRY, MISFIRE",
                                 trigger ? trigger : "(null)");
        tb_sched_run_encode(s, &s->tasks[slot], tid, nominal_ms, attempt, trig, emitted_ms, NULL,
                            out);
        return TB_OK;
}

/* ---- TaskSpec -> record ----------------------------------------------------- */

int64_t tb_sched_jlong(const json_t *o, const char *k, int64_t dflt) {
        const json_t *v = json_object_get(o, k);
        return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

const char *tb_sched_jstr(const json_t *o, const char *k, const char *dflt) {
        const json_t *v = json_object_get(o, k);
        return json_is_string(v) ? json_string_value(v) : dflt;
}

/* Cut the RunSnapshot bytes out of a probe RunRequest (params {} and
 * parents []: its last two bytes), then append the task's default params and
 * no parents: what a fire carries unless a run-now gives its own values
 * (*\p body_len: the snapshot's length). */
static tb_err_t tb_sched_snapshot_encode(tb_sched_t *s, const json_t *spec, uint8_t **out,
                                         uint32_t *out_len, uint32_t *body_len, char *errstr,
                                         size_t errstr_size) {
        json_t *snap = tb_task_run_snapshot(spec);
        json_t *dflt = tb_task_default_params(spec);
        if (!snap || !dflt) {
                json_decref(snap);
                json_decref(dflt);
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task spec: cannot build the run snapshot");
        }
        json_t *probe = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:i, s:o}", "run_id", "",
                                  "task_id", "", "task_version", 0, "nominal_time", 0,
                                  "attempt", 1, "trigger", "SCHEDULE", "emitted_at", 0,
                                  "snapshot", snap);
        tb_buf_t b = {0};
        if (probe && json_object_set_new(probe, "params", json_object())) {
                json_decref(probe);
                probe = NULL;
        }
        tb_err_t err = probe ? tb_serde_encode(TB_SCHEMA_RUN_REQUEST, probe, &b, errstr,
                                               errstr_size)
                             : TB_ERR_NOMEM;
        json_decref(probe);
        if (err) {
                json_decref(dflt);
                tb_buf_free(&b);
                return err;
        }
        size_t pre = sizeof(s->run_header) + sizeof(tb_sched_run_probe_prefix);
        if (b.len < pre + 2 || b.data[b.len - 1] != 0 || b.data[b.len - 2] != 0 ||
            memcmp(b.data, s->run_header, sizeof(s->run_header)) ||
            memcmp(b.data + sizeof(s->run_header), tb_sched_run_probe_prefix,
                   sizeof(tb_sched_run_probe_prefix))) {
                json_decref(dflt);
                tb_buf_free(&b);
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "RunRequest schema changed: the scheduler's encoder expects "
                                 "run_id, task_id, task_version, nominal_time, attempt, "
                                 "trigger, emitted_at, snapshot, params, then parents");
        }
        b.len -= 2; /* the probe's empty params and parents */
        *body_len = (uint32_t)(b.len - pre);
        tb_sched_av_map(&b, dflt);
        tb_sched_av_long(&b, 0); /* parents: [] */
        json_decref(dflt);
        *out_len = (uint32_t)(b.len - pre);
        *out = malloc(*out_len);
        if (!*out) {
                tb_buf_free(&b);
                return TB_ERR_NOMEM;
        }
        memcpy(*out, b.data + pre, *out_len);
        tb_buf_free(&b);
        return TB_OK;
}

static int tb_sched_enum_index(const char *v, const char *const *names, int cnt, int dflt) {
        for (int i = 0; v && i < cnt; i++)
                if (!strcmp(v, names[i]))
                        return i;
        return dflt;
}

/* Fill the schedule part of \p t from the spec; errors name the field. */
static tb_err_t tb_sched_spec_schedule(tb_sched_t *s, const json_t *spec, tb_sched_task_t *t,
                                       char *errstr, size_t errstr_size) {
        static const char *const kinds[] = {"ONCE", "EVERY", "CRON"};
        static const char *const gaps[] = {"SHIFT", "SKIP"};
        static const char *const overlaps[] = {"FIRST", "LAST", "BOTH"};
        static const char *const misfires[] = {"RUN_ONCE", "SKIP", "RUN_ALL"};
        const json_t *sc = json_object_get(spec, "schedule");
        if (!json_is_object(sc))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task spec: schedule is missing");
        int k = tb_sched_enum_index(tb_sched_jstr(sc, "kind", NULL), kinds, 3, -1);
        if (k < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task spec: schedule.kind '%s' is not ONCE, EVERY or CRON",
                                 tb_sched_jstr(sc, "kind", "(missing)"));
        t->kind = (uint8_t)(k + 1);
        t->cron = NULL;
        t->param_ms = 0;
        if (t->kind == TB_SCHEDULE_ONCE)
                t->param_ms = tb_sched_jlong(sc, "once_at", 0);
        else if (t->kind == TB_SCHEDULE_EVERY)
                t->param_ms = tb_sched_jlong(sc, "every_ms", 0);
        else {
                const char *expr = tb_sched_jstr(sc, "cron", NULL);
                if (!expr)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "task spec: schedule.cron is missing for kind CRON");
                tb_err_t err = tb_sched_cron_get(s, tb_sched_jstr(sc, "timezone", "UTC"), expr,
                                                 &t->cron, errstr, errstr_size);
                if (err)
                        return err;
        }
        t->start_ms = tb_sched_jlong(sc, "start_at", 0);
        t->end_ms = tb_sched_jlong(sc, "end_at", 0);
        t->expires_ms = tb_sched_jlong(spec, "expires_at", 0);
        t->jitter_ms = tb_sched_jlong(sc, "jitter_ms", 0);
        t->dst_gap = (uint8_t)tb_sched_enum_index(tb_sched_jstr(sc, "dst_gap", NULL), gaps, 2, 0);
        t->dst_overlap = (uint8_t)tb_sched_enum_index(tb_sched_jstr(sc, "dst_overlap", NULL),
                                                      overlaps, 3, 0);
        t->misfire =
                (uint8_t)tb_sched_enum_index(tb_sched_jstr(spec, "misfire", NULL), misfires, 3, 0);
        tb_schedule_t chk;
        tb_sched_task_schedule(t, &chk);
        tb_err_t err = tb_schedule_validate(&chk, errstr, errstr_size);
        /* a task with parents fires from the dependency poll (after.c), never
         * from its schedule */
        if (!err && json_array_size(json_object_get(spec, "after")))
                t->kind = TB_SCHED_KIND_AFTER;
        return err;
}

static bool tb_sched_same_schedule(const tb_sched_task_t *a, const tb_sched_task_t *b) {
        return a->kind == b->kind && a->param_ms == b->param_ms && a->cron == b->cron &&
               a->start_ms == b->start_ms && a->end_ms == b->end_ms &&
               a->expires_ms == b->expires_ms && a->dst_gap == b->dst_gap &&
               a->dst_overlap == b->dst_overlap && a->created_ms == b->created_ms &&
               (a->flags & TB_SCHED_TF_LOCAL) == (b->flags & TB_SCHED_TF_LOCAL);
}

tb_err_t tb_sched_task_put(tb_sched_t *s, int32_t partition, const char *tid, int64_t version,
                           int64_t created_ms, const json_t *spec, int64_t now_ms,
                           char *errstr, size_t errstr_size) {
        if (partition < 0 || partition >= s->part_cnt)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task %s: partition %d is out of range 0-%d", tid,
                                 (int)partition, (int)s->part_cnt - 1);
        if (!tid || !tid[0] || strlen(tid) > 256)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task id must be 1 to 256 bytes");
        if (!json_is_object(spec))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task %s: the spec is not an object", tid);
        tb_sched_task_t nt = {0};
        tb_err_t err;
        nt.version = version;
        nt.created_ms = created_ms;
        if ((err = tb_sched_spec_schedule(s, spec, &nt, errstr, errstr_size)))
                return err;
        const json_t *retries = json_object_get(spec, "retries");
        int64_t ma = tb_sched_jlong(retries, "max_attempts", 1);
        nt.max_attempts = (uint16_t)(ma < 1 ? 1 : ma > 1000 ? 1000 : ma);
        nt.backoff_ms = tb_sched_jlong(retries, "backoff_ms", 10000);
        nt.backoff_max_ms = tb_sched_jlong(retries, "backoff_max_ms", 600000);
        if (json_is_true(json_object_get(spec, "paused")))
                nt.flags |= TB_SCHED_TF_PAUSED;
        const char *home = tb_sched_jstr(spec, "home_region", "");
        if (!home[0] || !strcmp(home, s->conf->region ? s->conf->region : ""))
                nt.flags |= TB_SCHED_TF_LOCAL;
        if ((err = tb_sched_snapshot_encode(s, spec, &nt.snap, &nt.snap_len, &nt.snap_body, errstr,
                                            errstr_size)))
                return err;
        nt.partition = (int16_t)partition;

        size_t at;
        if (tb_sched_map_find(s, tid, &at)) {
                uint32_t slot = s->map[at] - 1;
                tb_sched_task_t *t = &s->tasks[slot];
                bool changed = !tb_sched_same_schedule(t, &nt);
                /* a pause that ends (or whose schedule changes): its fires
                 * until now are one range, counted on the old schedule */
                if ((t->flags & TB_SCHED_TF_PAUSED) &&
                    (!(nt.flags & TB_SCHED_TF_PAUSED) || changed))
                        tb_sched_range_close_paused(s, slot, now_ms);
                free(t->snap);
                t->snap = nt.snap;
                t->snap_len = nt.snap_len;
                t->snap_body = nt.snap_body;
                t->version = version;
                t->partition = nt.partition;
                t->max_attempts = nt.max_attempts;
                t->backoff_ms = nt.backoff_ms;
                t->backoff_max_ms = nt.backoff_max_ms;
                t->misfire = nt.misfire;
                t->jitter_ms = nt.jitter_ms;
                uint8_t keep = t->flags & (TB_SCHED_TF_USED | TB_SCHED_TF_UUID |
                                           TB_SCHED_TF_EXPIRED | TB_SCHED_TF_DIRTY);
                bool was_tomb = t->flags & TB_SCHED_TF_TOMB;
                if (changed) {
                        t->kind = nt.kind;
                        t->param_ms = nt.param_ms;
                        t->cron = nt.cron;
                        t->start_ms = nt.start_ms;
                        t->end_ms = nt.end_ms;
                        t->expires_ms = nt.expires_ms;
                        t->dst_gap = nt.dst_gap;
                        t->dst_overlap = nt.dst_overlap;
                        t->created_ms = nt.created_ms;
                        keep &= (uint8_t)~TB_SCHED_TF_EXPIRED;
                }
                t->flags = keep | (nt.flags & (TB_SCHED_TF_PAUSED | TB_SCHED_TF_LOCAL));
                if (was_tomb)
                        t->flags &= (uint8_t)~TB_SCHED_TF_TOMB;
                if ((err = tb_sched_cal_task_set(s, t, spec, errstr, errstr_size)))
                        tb_warn(TB_SCHED_LOG, "task %s: its calendar rules cannot be read (its fires are skipped): %s",
                                tid, errstr);
                if (changed) {
                        /* never repeat what was emitted, never back-fill the
                         * past of a schedule that did not exist then */
                        int64_t from = now_ms;
                        if (t->last_nominal != TB_SCHED_NO_LAST && t->last_nominal > from)
                                from = t->last_nominal;
                        t->next_nominal = tb_sched_task_next_after(t, from);
                        tb_sched_task_mark_dirty(s, slot);
                }
                tb_sched_task_check_expiry(t);
                tb_sched_task_rekey(s, slot);
                return TB_OK;
        }
        uint32_t slot;
        if (s->map_cnt + 1 > s->map_cap / 2 && (err = tb_sched_map_grow(s))) {
                free(nt.snap);
                return tb_seterr(errstr, errstr_size, err, "out of memory loading task %s", tid);
        }
        if ((err = tb_sched_slot_alloc(s, &slot))) {
                free(nt.snap);
                return tb_seterr(errstr, errstr_size, err, "out of memory loading task %s", tid);
        }
        if (tb_sched_uuid_parse(tid, nt.id.uuid)) {
                nt.flags |= TB_SCHED_TF_UUID;
        } else if (!(nt.id.str = strdup(tid))) {
                free(nt.snap);
                tb_sched_slot_release(s, slot);
                return TB_ERR_NOMEM;
        }
        nt.flags |= TB_SCHED_TF_USED;
        nt.last_nominal = TB_SCHED_NO_LAST;
        s->tasks[slot] = nt;
        tb_sched_task_t *t = &s->tasks[slot];
        t->next_nominal = tb_sched_task_next_after(t, tb_sched_task_from(t));
        if ((err = tb_sched_cal_task_set(s, t, spec, errstr, errstr_size)))
                tb_warn(TB_SCHED_LOG, "task %s: its calendar rules cannot be read (its fires are skipped): %s", tid,
                        errstr);
        tb_sched_map_find(s, tid, &at);
        s->map[at] = slot + 1;
        s->map_cnt++;
        s->task_cnt++;
        tb_sched_task_check_expiry(t);
        tb_sched_task_rekey(s, slot);
        return TB_OK;
}

/* ---- RunResults for fires not run ------------------------------------------- */

/* A range's run id is its first fire's (attempt 1): the same in every
 * process and every retry of the transaction that writes it. */
static tb_err_t tb_sched_result_encode_json(const tb_sched_t *s, const char *tid, int64_t nominal,
                                            int attempt, int64_t last, int64_t count,
                                            const char *status, const char *error, int64_t now,
                                            tb_buf_t *out, char *errstr, size_t errstr_size) {
        char rid[33];
        tb_sched_run_id(tid, nominal, attempt, rid);
        json_t *r = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:s, s:I, s:o, s:I}", "run_id",
                              rid, "task_id", tid, "nominal_time", (json_int_t)nominal, "attempt",
                              attempt, "status", status, "executor", "", "host", s->host, "error",
                              error, "at", (json_int_t)now, "last_nominal_time",
                              last == TB_SCHED_NO_LAST ? json_null() : json_integer(last),
                              "occurrences", (json_int_t)count);
        if (!r)
                return TB_ERR_NOMEM;
        tb_err_t err = tb_serde_encode(TB_SCHEMA_RUN_RESULT, r, out, errstr, errstr_size);
        json_decref(r);
        return err;
}

tb_err_t tb_sched_range_encode(const tb_sched_t *s, const char *tid, int64_t nominal, int64_t last,
                               int64_t count, const char *status, const char *error, int64_t now,
                               tb_buf_t *out, char *errstr, size_t errstr_size) {
        return tb_sched_result_encode_json(s, tid, nominal, 1, last, count, status, error, now,
                                           out, errstr, errstr_size);
}

tb_err_t tb_sched_result_encode(const tb_sched_t *s, const char *tid, int64_t nominal, int attempt,
                                const char *status, const char *error, int64_t now, tb_buf_t *out,
                                char *errstr, size_t errstr_size) {
        return tb_sched_result_encode_json(s, tid, nominal, attempt, TB_SCHED_NO_LAST, 1, status,
                                           error, now, out, errstr, errstr_size);
}

/* ---- checkpoints ------------------------------------------------------------ */

tb_err_t tb_sched_checkpoint_encode(const tb_sched_task_t *t, int64_t now, tb_buf_t *out,
                                    char *errstr, size_t errstr_size) {
        char buf[37];
        const char *tid = tb_sched_task_idstr(t, buf);
        json_t *retries = json_array(), *run_now = json_array(), *run_now_params = json_array();
        int64_t mark = 0;
        if (t->x) {
                for (uint32_t i = 0; i < t->x->retry_cnt; i++) {
                        const json_t *p = t->x->retries[i].params;
                        json_array_append_new(
                                retries,
                                json_pack("{s:I, s:i, s:I, s:o}", "nominal_time",
                                          (json_int_t)t->x->retries[i].nominal_ms, "attempt",
                                          (int)t->x->retries[i].attempt, "due_at",
                                          (json_int_t)t->x->retries[i].due_ms, "params",
                                          p ? json_deep_copy(p) : json_object()));
                }
                for (uint32_t i = 0; i < t->x->run_now_cnt; i++) {
                        const json_t *p = t->x->run_now_params ? t->x->run_now_params[i] : NULL;
                        json_array_append_new(run_now, json_integer(t->x->run_now[i]));
                        json_array_append_new(run_now_params,
                                              p ? json_deep_copy(p) : json_object());
                }
                mark = t->x->run_now_mark;
        }
        json_t *c = json_pack(
                "{s:s, s:I, s:o, s:o, s:I, s:i, s:I, s:o, s:o, s:I, s:b}", "task_id", tid,
                "task_version", (json_int_t)t->version, "last_nominal_time",
                t->last_nominal == TB_SCHED_NO_LAST ? json_null() : json_integer(t->last_nominal),
                "next_fire_time",
                t->next_nominal == TB_SCHED_NEVER ? json_null() : json_integer(t->next_nominal),
                "fires", (json_int_t)t->fires, "epoch", 0, "at", (json_int_t)now, "retries",
                retries, "run_now", run_now, "run_now_mark", (json_int_t)mark, "expired",
                (t->flags & TB_SCHED_TF_EXPIRED) != 0);
        if (c && json_object_set_new(c, "run_now_params", run_now_params)) {
                json_decref(c);
                return TB_ERR_NOMEM;
        }
        if (!c) {
                json_decref(run_now_params);
                return TB_ERR_NOMEM;
        }
        tb_err_t err = tb_serde_encode(TB_SCHEMA_SCHEDULER_CHECKPOINT, c, out, errstr, errstr_size);
        json_decref(c);
        return err;
}

tb_err_t tb_sched_checkpoint(tb_sched_t *s, const json_t *ck, int64_t now_ms, char *errstr,
                             size_t errstr_size) {
        const char *tid = tb_sched_jstr(ck, "task_id", NULL);
        if (!tid)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "SchedulerCheckpoint without task_id");
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot == UINT32_MAX)
                return TB_OK; /* a task deleted since */
        tb_sched_task_t *t = &s->tasks[slot];
        const json_t *last = json_object_get(ck, "last_nominal_time");
        t->last_nominal =
                json_is_integer(last) ? (int64_t)json_integer_value(last) : TB_SCHED_NO_LAST;
        t->fires = tb_sched_jlong(ck, "fires", 0);
        if (json_is_true(json_object_get(ck, "expired")))
                t->flags |= TB_SCHED_TF_EXPIRED;
        else
                t->flags &= (uint8_t)~TB_SCHED_TF_EXPIRED;
        tb_sched_extra_free(t->x);
        t->x = NULL;
        const json_t *rt = json_object_get(ck, "retries");
        const json_t *rn = json_object_get(ck, "run_now");
        int64_t mark = tb_sched_jlong(ck, "run_now_mark", 0);
        if (json_array_size(rt) || json_array_size(rn) || mark) {
                tb_sched_extra_t *x = tb_sched_task_extra(t);
                if (!x)
                        return TB_ERR_NOMEM;
                x->run_now_mark = mark;
                size_t i;
                const json_t *v;
                if (json_array_size(rt)) {
                        x->retries = calloc(json_array_size(rt), sizeof(*x->retries));
                        if (!x->retries)
                                return TB_ERR_NOMEM;
                        json_array_foreach(rt, i, v) {
                                const json_t *p = json_object_get(v, "params");
                                x->retries[x->retry_cnt++] = (tb_sched_retry_t){
                                        .nominal_ms = tb_sched_jlong(v, "nominal_time", 0),
                                        .due_ms = tb_sched_jlong(v, "due_at", now_ms),
                                        .attempt = (int32_t)tb_sched_jlong(v, "attempt", 2),
                                        .params = json_object_size(p) ? json_deep_copy(p) : NULL,
                                };
                        }
                }
                if (json_array_size(rn)) {
                        /* run_now_params[i] is run_now[i]'s (an older
                         * checkpoint has none: the defaults) */
                        const json_t *rp = json_object_get(ck, "run_now_params");
                        x->run_now = calloc(json_array_size(rn), sizeof(*x->run_now));
                        x->run_now_params = calloc(json_array_size(rn), sizeof(*x->run_now_params));
                        if (!x->run_now || !x->run_now_params)
                                return TB_ERR_NOMEM;
                        json_array_foreach(rn, i, v) {
                                if (!json_is_integer(v))
                                        continue;
                                const json_t *p = json_array_get(rp, i);
                                x->run_now_params[x->run_now_cnt] =
                                        json_object_size(p) ? json_deep_copy(p) : NULL;
                                x->run_now[x->run_now_cnt++] = json_integer_value(v);
                        }
                }
        }
        t->next_nominal = tb_sched_task_next_after(t, tb_sched_task_from(t));
        tb_sched_task_check_expiry(t);
        tb_sched_task_rekey(s, slot);
        return TB_OK;
}
