/**
 * @file scheduler/engine.c
 * @brief The engine's task records: ids, the id -> slot table, the shared
 *        crons, the schedule math and the timer heap, the engine's life.
 *
 * Memory: a task is one fixed-size record in a slot array (its id as 16
 * bytes when it is a canonical UUID), a shared parsed cron per distinct
 * (zone, expression), and its RunSnapshot kept as the Avro bytes that end a
 * RunRequest, so a fire is a few varints plus a memcpy. An open-addressing
 * table maps ids to slots; a binary heap keyed by the next due time holds one
 * timer per schedulable task, so a tick touches only what is due.
 */
#include "scheduler/engine_internal.h"

#include "http/metrics.h"
#include "schedule/occurrences.h"
#include "serde/serde.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ids -------------------------------------------------------------------- */

static int tb_sched_hexval(int c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Canonical lower-case UUID text -> 16 bytes (only that form round-trips). */
bool tb_sched_uuid_parse(const char *s, uint8_t out[16]) {
        if (strlen(s) != 36)
                return false;
        int j = 0;
        for (int i = 0; i < 36;) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return false;
                        i++;
                        continue;
                }
                int hi = tb_sched_hexval((unsigned char)s[i]),
                    lo = tb_sched_hexval((unsigned char)s[i + 1]);
                if (hi < 0 || lo < 0)
                        return false;
                out[j++] = (uint8_t)(hi << 4 | lo);
                i += 2;
        }
        return true;
}

static void tb_sched_uuid_format(const uint8_t u[16], char out[37]) {
        static const char hx[] = "0123456789abcdef";
        int j = 0;
        for (int i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        out[j++] = '-';
                out[j++] = hx[u[i] >> 4];
                out[j++] = hx[u[i] & 15];
        }
        out[j] = 0;
}

/* The id as text: the record's own string, or formatted into \p buf. */
const char *tb_sched_task_idstr(const tb_sched_task_t *t, char buf[37]) {
        if (t->flags & TB_SCHED_TF_UUID) {
                tb_sched_uuid_format(t->id.uuid, buf);
                return buf;
        }
        return t->id.str;
}

static uint64_t tb_sched_hash_bytes(const void *p, size_t n) {
        const unsigned char *b = p;
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= 1099511628211ULL;
        }
        h ^= h >> 29;
        h *= 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 32;
        return h;
}

static uint64_t tb_sched_task_hash(const tb_sched_task_t *t) {
        return (t->flags & TB_SCHED_TF_UUID) ? tb_sched_hash_bytes(t->id.uuid, 16)
                                             : tb_sched_hash_bytes(t->id.str, strlen(t->id.str));
}

void tb_sched_run_id(const char *tid, int64_t nominal_ms, int attempt, char out[33]) {
        /* the one definition, shared with backfill (lib/schedule/occurrences.c) */
        tb_schedule_run_id(tid, nominal_ms, attempt, out);
}

/* ---- id -> slot table (linear probing, backward-shift deletion) ------------ */

tb_err_t tb_sched_map_grow(tb_sched_t *s) {
        size_t ncap = s->map_cap ? s->map_cap * 2 : 1024;
        uint32_t *nm = calloc(ncap, sizeof(*nm));
        if (!nm)
                return TB_ERR_NOMEM;
        for (size_t i = 0; i < s->map_cap; i++) {
                if (!s->map[i])
                        continue;
                size_t j = tb_sched_task_hash(&s->tasks[s->map[i] - 1]) & (ncap - 1);
                while (nm[j])
                        j = (j + 1) & (ncap - 1);
                nm[j] = s->map[i];
        }
        free(s->map);
        s->map = nm;
        s->map_cap = ncap;
        return TB_OK;
}

/* Find \p id; *\p at receives its table index (or the free one to use). */
bool tb_sched_map_find(const tb_sched_t *s, const char *id, size_t *at) {
        uint8_t u[16];
        bool is_uuid = tb_sched_uuid_parse(id, u);
        uint64_t h = is_uuid ? tb_sched_hash_bytes(u, 16) : tb_sched_hash_bytes(id, strlen(id));
        size_t mask = s->map_cap - 1, i = h & mask;
        if (!s->map_cap) {
                *at = 0;
                return false;
        }
        while (s->map[i]) {
                const tb_sched_task_t *t = &s->tasks[s->map[i] - 1];
                if (is_uuid ? ((t->flags & TB_SCHED_TF_UUID) && !memcmp(t->id.uuid, u, 16))
                            : (!(t->flags & TB_SCHED_TF_UUID) && !strcmp(t->id.str, id))) {
                        *at = i;
                        return true;
                }
                i = (i + 1) & mask;
        }
        *at = i;
        return false;
}

static void tb_sched_map_delete(tb_sched_t *s, size_t i) {
        size_t mask = s->map_cap - 1;
        s->map[i] = 0;
        s->map_cnt--;
        for (size_t j = (i + 1) & mask; s->map[j]; j = (j + 1) & mask) {
                size_t home = tb_sched_task_hash(&s->tasks[s->map[j] - 1]) & mask;
                /* move j back into the hole unless its home lies in (i, j] */
                bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
                if (!stays) {
                        s->map[i] = s->map[j];
                        s->map[j] = 0;
                        i = j;
                }
        }
}

uint32_t tb_sched_slot_of(const tb_sched_t *s, const char *id) {
        size_t at;
        return tb_sched_map_find(s, id, &at) ? s->map[at] - 1 : UINT32_MAX;
}

/* ---- crons ------------------------------------------------------------------ */

tb_err_t tb_sched_cron_get(tb_sched_t *s, const char *zone, const char *expr, tb_sched_cron_t **out,
                           char *errstr, size_t errstr_size) {
        char *key = NULL;
        if (asprintf(&key, "%s\n%s", zone, expr) < 0)
                return TB_ERR_NOMEM;
        if (!s->cron_cap) {
                s->crons = calloc(256, sizeof(*s->crons));
                if (!s->crons) {
                        free(key);
                        return TB_ERR_NOMEM;
                }
                s->cron_cap = 256;
        }
        size_t b = tb_sched_hash_bytes(key, strlen(key)) % s->cron_cap;
        for (tb_sched_cron_t *c = s->crons[b]; c; c = c->next)
                if (!strcmp(c->key, key)) {
                        free(key);
                        *out = c;
                        return TB_OK;
                }
        tb_sched_cron_t *c = calloc(1, sizeof(*c));
        tb_err_t err;
        if (!c) {
                free(key);
                return TB_ERR_NOMEM;
        }
        c->key = key;
        if ((err = tb_tz_open(zone, &c->tz, errstr, errstr_size)) ||
            (err = tb_cron_parse(expr, &c->cron, errstr, errstr_size))) {
                free(c->key);
                free(c);
                return err;
        }
        c->next = s->crons[b];
        s->crons[b] = c;
        s->cron_cnt++;
        *out = c;
        return TB_OK;
}

/* ---- schedule math ---------------------------------------------------------- */

void tb_sched_task_schedule(const tb_sched_task_t *t, tb_schedule_t *sc) {
        memset(sc, 0, sizeof(*sc));
        sc->kind = (tb_schedule_kind_t)t->kind;
        if (t->kind == TB_SCHEDULE_ONCE)
                sc->once_at_ms = t->param_ms;
        else if (t->kind == TB_SCHEDULE_EVERY)
                sc->every_ms = t->param_ms;
        if (t->cron) {
                sc->cron = t->cron->cron;
                sc->tz = t->cron->tz;
        }
        sc->anchor_ms = t->created_ms;
        sc->start_at_ms = t->start_ms;
        sc->end_at_ms = t->end_ms;
        sc->expires_at_ms = t->expires_ms;
        sc->dst_gap = (tb_dst_gap_t)t->dst_gap;
        sc->dst_overlap = (tb_dst_overlap_t)t->dst_overlap;
        sc->jitter_ms = t->jitter_ms;
}

int64_t tb_sched_task_next_after(const tb_sched_task_t *t, int64_t after) {
        tb_schedule_t sc;
        int64_t n;
        char err[256];
        if (after == TB_SCHED_NEVER || t->kind == TB_SCHED_KIND_AFTER)
                return TB_SCHED_NEVER;
        tb_sched_task_schedule(t, &sc);
        if (tb_schedule_next(&sc, after, &n, NULL, err, sizeof(err)) != TB_OK)
                return TB_SCHED_NEVER;
        return n;
}

int64_t tb_sched_task_jitter(const tb_sched_task_t *t, int64_t nominal) {
        char buf[37];
        if (t->jitter_ms <= 0)
                return 0;
        return tb_schedule_jitter(tb_sched_task_idstr(t, buf), nominal, t->jitter_ms);
}

/* Where fires start for a task with nothing emitted yet: its creation (a
 * fire exactly at creation counts, as for "every" with k = 0). A one-shot
 * starts at its instant when that is earlier: validation accepts an instant
 * up to the clock-skew tolerance in the past, and a command delayed on its
 * way (a broker failover between the api's check and the CREATED event) can
 * land after its instant; either way it was accepted, so it fires (late:
 * under its misfire policy) rather than never. */
int64_t tb_sched_task_from(const tb_sched_task_t *t) {
        if (t->last_nominal != TB_SCHED_NO_LAST)
                return t->last_nominal;
        int64_t from = t->kind == TB_SCHEDULE_ONCE && t->param_ms < t->created_ms
                               ? t->param_ms
                               : t->created_ms;
        /* a hostile event's INT64_MIN must not overflow: the schedule refuses it */
        return from > INT64_MIN ? from - 1 : from;
}

/* After the schedule ran out: did expires_at end it (then EXPIRED is due)? */
void tb_sched_task_check_expiry(tb_sched_task_t *t) {
        t->flags &= (uint8_t)~TB_SCHED_TF_EXPIRY_PENDING;
        if (t->next_nominal != TB_SCHED_NEVER || t->expires_ms <= 0 ||
            (t->flags & TB_SCHED_TF_EXPIRED))
                return;
        tb_schedule_t sc;
        int64_t n;
        char err[256];
        tb_sched_task_schedule(t, &sc);
        sc.expires_at_ms = 0;
        if (tb_schedule_next(&sc, tb_sched_task_from(t), &n, NULL, err, sizeof(err)) == TB_OK)
                t->flags |= TB_SCHED_TF_EXPIRY_PENDING;
}

int64_t tb_sched_task_due(const tb_sched_task_t *t) {
        if (!(t->flags & TB_SCHED_TF_USED) || (t->flags & TB_SCHED_TF_TOMB) ||
            !(t->flags & TB_SCHED_TF_LOCAL))
                return TB_SCHED_NEVER;
        int64_t d = TB_SCHED_NEVER;
        if (t->x) {
                if (t->x->run_now_cnt)
                        return 0;
                for (uint32_t i = 0; i < t->x->retry_cnt; i++)
                        if (t->x->retries[i].due_ms < d)
                                d = t->x->retries[i].due_ms;
        }
        if ((t->flags & TB_SCHED_TF_EXPIRY_PENDING) && t->expires_ms < d)
                d = t->expires_ms;
        if (t->next_nominal != TB_SCHED_NEVER) {
                int64_t n = t->next_nominal;
                const tb_sched_trules_t *tr = t->x ? t->x->cal : NULL;
                if (t->flags & TB_SCHED_TF_PAUSED)
                        n = tb_sched_range_pause_end(t); /* fires not armed (ranges.c) */
                else if (tr && !(tr->decided && tr->dec_nominal == n))
                        n = TB_SCHED_NEVER; /* the calendars decide it first (calendars.c) */
                else if (tr && tr->dec.verdict == TB_CALENDAR_MOVED)
                        n = tr->dec.fire_ms + tb_sched_task_jitter(t, n);
                else
                        n += tb_sched_task_jitter(t, n);
                if (n < d)
                        d = n;
        }
        return d;
}

void tb_sched_task_rekey(tb_sched_t *s, uint32_t slot) {
        if (tb_sched_cal_has(&s->tasks[slot]))
                tb_sched_cal_decision(s, &s->tasks[slot]);
        int64_t d = tb_sched_task_due(&s->tasks[slot]);
        if (d == TB_SCHED_NEVER)
                tb_timerheap_remove(&s->heap, slot);
        else if (tb_timerheap_set(&s->heap, slot, d) != TB_OK)
                tb_error(TB_SCHED_LOG,
                         "out of memory growing the timer heap: a task will not fire");
}

void tb_sched_task_mark_dirty(tb_sched_t *s, uint32_t slot) {
        tb_sched_task_t *t = &s->tasks[slot];
        if (t->flags & TB_SCHED_TF_DIRTY)
                return;
        if (s->dirty_cnt == s->dirty_cap) {
                uint32_t *nd = tb_array_grow(s->dirty, &s->dirty_cap, sizeof(*nd), 256);
                if (!nd) {
                        tb_error(TB_SCHED_LOG, "out of memory: a checkpoint will be late");
                        return;
                }
                s->dirty = nd;
        }
        s->dirty[s->dirty_cnt++] = slot;
        t->flags |= TB_SCHED_TF_DIRTY;
}

tb_sched_extra_t *tb_sched_task_extra(tb_sched_task_t *t) {
        if (!t->x)
                t->x = calloc(1, sizeof(*t->x));
        return t->x;
}

void tb_sched_extra_free(tb_sched_extra_t *x) {
        if (!x)
                return;
        for (uint32_t i = 0; i < x->retry_cnt; i++)
                json_decref(x->retries[i].params);
        free(x->retries);
        for (uint32_t i = 0; x->run_now_params && i < x->run_now_cnt; i++)
                json_decref(x->run_now_params[i]);
        free(x->run_now_params);
        free(x->run_now);
        free(x->cal);
        free(x);
}

/* ---- engine life ------------------------------------------------------------ */

tb_err_t tb_sched_new(const tb_config_t *conf, const char *host, tb_sched_t **out,
                      char *errstr, size_t errstr_size) {
        tb_err_t err;
        *out = NULL;
        if ((err = tb_serde_init(errstr, errstr_size)))
                return err;
        if (conf->topic_partitions < 1 || conf->topic_partitions > 32767)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "scheduler: topics.partitions %" PRId64
                                 " is out of range 1-32767",
                                 conf->topic_partitions);
        tb_sched_t *s = calloc(1, sizeof(*s));
        if (!s)
                return TB_ERR_NOMEM;
        s->conf = conf;
        tb_snprintf(s->host, sizeof(s->host), "%s", host ? host : "");
        s->part_cnt = (int32_t)conf->topic_partitions;
        s->parts = calloc((size_t)s->part_cnt, sizeof(*s->parts));
        if (!s->parts) {
                free(s);
                return TB_ERR_NOMEM;
        }
        for (int32_t p = 0; p < s->part_cnt; p++)
                s->parts[p] = (tb_sched_part_t){.load_off = -1, .ev_pos = -1, .rr_pos = -1};
        tb_timerheap_init(&s->heap);
        uint64_t fp = tb_serde_fingerprint(TB_SCHEMA_RUN_REQUEST);
        s->run_header[0] = 0xC3;
        s->run_header[1] = 0x01;
        for (int i = 0; i < 8; i++)
                s->run_header[2 + i] = (uint8_t)(fp >> (8 * i));
        tb_topic_name(conf, TB_TOPIC_EVENTS, s->events_topic, sizeof(s->events_topic));
        tb_topic_name(conf, TB_TOPIC_RESULTS, s->results_topic, sizeof(s->results_topic));
        tb_metrics_describe("taskbus_scheduler_fire_lag_seconds", "histogram",
                            "Commit time minus the fire's emission time (nominal + jitter): "
                            "how late scheduled runs are published.");
        tb_metrics_describe("taskbus_scheduler_fires_total", "counter",
                            "RunRequests emitted, by trigger.");
        tb_metrics_describe("taskbus_scheduler_skips_total", "counter",
                            "Fires recorded as not run, by reason.");
        tb_metrics_describe("taskbus_scheduler_misfires_total", "counter",
                            "Fires found later than the misfire threshold (run or skipped "
                            "per the task's misfire policy).");
        tb_metrics_describe("taskbus_scheduler_tasks_loaded", "gauge",
                            "Tasks held by this scheduler (its partitions).");
        tb_metrics_describe("taskbus_scheduler_dlq_total", "counter",
                            "Runs sent to runs-dlq after their last attempt failed.");
        tb_metrics_describe("taskbus_scheduler_txn_failures_total", "counter",
                            "Scheduler transactions that failed (state reloaded).");
        *out = s;
        return TB_OK;
}

static void tb_sched_task_free_fields(tb_sched_task_t *t) {
        if (!(t->flags & TB_SCHED_TF_UUID))
                free(t->id.str);
        free(t->snap);
        tb_sched_extra_free(t->x);
        memset(t, 0, sizeof(*t));
}

void tb_sched_moved_push(tb_sched_t *s, const char *tid) {
        if (s->moved_cnt == s->moved_cap) {
                char **n = tb_array_grow(s->moved, &s->moved_cap, sizeof(*n), 16);
                if (!n) {
                        tb_error(TB_SCHED_LOG,
                                 "out of memory: task %s moved here fires from its "
                                 "creation's schedule",
                                 tid);
                        return;
                }
                s->moved = n;
        }
        if ((s->moved[s->moved_cnt] = strdup(tid)))
                s->moved_cnt++;
}

char *tb_sched_take_moved(tb_sched_t *s) {
        return s->moved_cnt ? s->moved[--s->moved_cnt] : NULL;
}

void tb_sched_task_set_epoch(tb_sched_t *s, const char *tid, int64_t epoch) {
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot != UINT32_MAX)
                s->tasks[slot].epoch = epoch;
}

void tb_sched_task_adopt(tb_sched_t *s, const char *tid, int64_t last_nominal_ms) {
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot == UINT32_MAX)
                return;
        tb_sched_task_t *t = &s->tasks[slot];
        if (last_nominal_ms != TB_SCHED_NO_LAST &&
            (t->last_nominal == TB_SCHED_NO_LAST || last_nominal_ms > t->last_nominal))
                t->last_nominal = last_nominal_ms;
        t->next_nominal = tb_sched_task_next_after(t, tb_sched_task_from(t));
        tb_sched_task_check_expiry(t);
        tb_sched_task_mark_dirty(s, slot);
        tb_sched_task_rekey(s, slot);
}

void tb_sched_destroy(tb_sched_t *s) {
        if (!s)
                return;
        for (uint32_t i = 0; i < s->task_hwm; i++)
                if (s->tasks[i].flags & TB_SCHED_TF_USED)
                        tb_sched_task_free_fields(&s->tasks[i]);
        free(s->tasks);
        free(s->free_slots);
        free(s->map);
        for (size_t b = 0; b < s->cron_cap; b++)
                for (tb_sched_cron_t *c = s->crons[b], *n; c; c = n) {
                        n = c->next;
                        tb_cron_free(c->cron);
                        free(c->key);
                        free(c);
                }
        free(s->crons);
        tb_timerheap_free(&s->heap);
        free(s->dirty);
        for (size_t i = 0; i < s->dlq_cnt; i++) {
                free(s->dlq[i].task_id);
                free(s->dlq[i].error);
                tb_buf_free(&s->dlq[i].value);
        }
        free(s->dlq);
        for (size_t i = 0; i < s->tomb_cnt; i++)
                free(s->tombs[i].task_id);
        free(s->tombs);
        tb_sched_range_drop(s, -1);
        free(s->pend);
        free(s->lag_due);
        tb_buf_free(&s->scratch);
        free(s->parts);
        for (size_t i = 0; i < s->moved_cnt; i++)
                free(s->moved[i]);
        free(s->moved);
        tb_sched_cal_free_all(s);
        free(s);
}

void tb_sched_set_sink(tb_sched_t *s, tb_sched_sink_t sink, void *opaque) {
        s->sink = sink;
        s->sink_opaque = opaque;
}

void tb_sched_set_kafka(tb_sched_t *s, rd_kafka_t *producer, rd_kafka_t *group) {
        s->producer = producer;
        s->group = group;
}

void tb_sched_set_fire_hook(tb_sched_t *s, tb_sched_fire_hook_t hook, void *opaque) {
        s->hook = hook;
        s->hook_opaque = opaque;
}

tb_sched_part_t *tb_sched_part(tb_sched_t *s, int32_t p) {
        return p >= 0 && p < s->part_cnt ? &s->parts[p] : NULL;
}

size_t tb_sched_task_count(const tb_sched_t *s) { return s->task_cnt; }

int64_t tb_sched_next_due(const tb_sched_t *s) {
        const tb_timer_t *t = tb_timerheap_peek(&s->heap);
        return t ? t->due_ms : TB_SCHED_NEVER;
}

bool tb_sched_task_info(const tb_sched_t *s, const char *id, int64_t *next_nominal,
                        int64_t *last_nominal) {
        uint32_t slot = tb_sched_slot_of(s, id);
        if (slot == UINT32_MAX || (s->tasks[slot].flags & TB_SCHED_TF_TOMB))
                return false;
        if (next_nominal)
                *next_nominal = s->tasks[slot].next_nominal;
        if (last_nominal)
                *last_nominal = s->tasks[slot].last_nominal;
        return true;
}

/* ---- adding and removing records -------------------------------------------- */

tb_err_t tb_sched_slot_alloc(tb_sched_t *s, uint32_t *out) {
        if (s->free_cnt) {
                *out = s->free_slots[--s->free_cnt];
                return TB_OK;
        }
        if (s->task_hwm == s->task_cap) {
                uint32_t nc = s->task_cap ? s->task_cap * 2 : 1024;
                tb_sched_task_t *nt = realloc(s->tasks, (size_t)nc * sizeof(*nt));
                if (!nt)
                        return TB_ERR_NOMEM;
                s->tasks = nt;
                s->task_cap = nc;
        }
        *out = s->task_hwm++;
        return TB_OK;
}

void tb_sched_slot_release(tb_sched_t *s, uint32_t slot) {
        if (s->free_cnt == s->free_cap) {
                uint32_t *nf = tb_array_grow(s->free_slots, &s->free_cap, sizeof(*nf), 256);
                if (!nf)
                        return; /* the slot leaks; never reused */
                s->free_slots = nf;
        }
        s->free_slots[s->free_cnt++] = slot;
}

void tb_sched_task_destroy(tb_sched_t *s, uint32_t slot) {
        tb_sched_task_t *t = &s->tasks[slot];
        char buf[37];
        size_t at;
        if (tb_sched_map_find(s, tb_sched_task_idstr(t, buf), &at))
                tb_sched_map_delete(s, at);
        tb_timerheap_remove(&s->heap, slot);
        /* a dirty entry may still name the slot: it is skipped (not USED) */
        tb_sched_task_free_fields(t);
        tb_sched_slot_release(s, slot);
        s->task_cnt--;
}

bool tb_sched_task_remove(tb_sched_t *s, const char *tid, bool tombstone) {
        uint32_t slot = tb_sched_slot_of(s, tid);
        if (slot == UINT32_MAX)
                return false;
        tb_sched_task_t *t = &s->tasks[slot];
        if (tombstone) {
                if (s->tomb_cnt == s->tomb_cap) {
                        tb_sched_tomb_t *n = tb_array_grow(s->tombs, &s->tomb_cap, sizeof(*n), 64);
                        if (n)
                                s->tombs = n;
                }
                if (s->tomb_cnt < s->tomb_cap) {
                        s->tombs[s->tomb_cnt].task_id = strdup(tid);
                        s->tombs[s->tomb_cnt].partition = t->partition;
                        if (s->tombs[s->tomb_cnt].task_id)
                                s->tomb_cnt++;
                }
        }
        if (t->flags & TB_SCHED_TF_DIRTY) {
                /* its pending checkpoint is superseded by the tombstone */
                t->flags |= TB_SCHED_TF_TOMB;
                t->flags &= (uint8_t)~TB_SCHED_TF_LOCAL;
                tb_timerheap_remove(&s->heap, slot);
                return true;
        }
        tb_sched_task_destroy(s, slot);
        return true;
}

void tb_sched_drop_partition(tb_sched_t *s, int32_t p) {
        for (uint32_t i = 0; i < s->task_hwm; i++) {
                tb_sched_task_t *t = &s->tasks[i];
                if ((t->flags & TB_SCHED_TF_USED) && t->partition == p) {
                        if (t->flags & TB_SCHED_TF_DIRTY) {
                                /* drop the pending checkpoint with it */
                                t->flags = (uint8_t)(t->flags & ~TB_SCHED_TF_DIRTY);
                                for (size_t d = 0; d < s->dirty_cnt; d++)
                                        if (s->dirty[d] == i)
                                                s->dirty[d] = UINT32_MAX;
                        }
                        tb_sched_task_destroy(s, i);
                }
        }
        size_t k = 0;
        for (size_t d = 0; d < s->dirty_cnt; d++)
                if (s->dirty[d] != UINT32_MAX)
                        s->dirty[k++] = s->dirty[d];
        s->dirty_cnt = k;
        k = 0;
        for (size_t i = 0; i < s->dlq_cnt; i++) {
                if (s->dlq[i].partition == p) {
                        free(s->dlq[i].task_id);
                        free(s->dlq[i].error);
                        tb_buf_free(&s->dlq[i].value);
                } else {
                        s->dlq[k++] = s->dlq[i];
                }
        }
        s->dlq_cnt = k;
        k = 0;
        for (size_t i = 0; i < s->tomb_cnt; i++) {
                if (s->tombs[i].partition == p)
                        free(s->tombs[i].task_id);
                else
                        s->tombs[k++] = s->tombs[i];
        }
        s->tomb_cnt = k;
        if (p >= 0)
                tb_sched_range_drop(s, p);
        if (p >= 0 && p < s->part_cnt)
                s->parts[p] = (tb_sched_part_t){.load_off = -1, .ev_pos = -1, .rr_pos = -1};
}
