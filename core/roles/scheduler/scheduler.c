/**
 * @file scheduler/scheduler.c
 * @brief The scheduler engine and role (see scheduler.h and
 *        docs/scheduling.md, "Misfires and retries" and "Partitioning and
 *        failover").
 *
 * Memory: a task is one fixed-size record in a slot array (its id as 16
 * bytes when it is a canonical UUID), a shared parsed cron per distinct
 * (zone, expression), and its RunSnapshot kept as the Avro bytes that end a
 * RunRequest, so a fire is a few varints plus a memcpy. An open-addressing
 * table maps ids to slots; a binary heap keyed by the next due time holds one
 * timer per schedulable task, so a tick touches only what is due.
 */
#include "scheduler/scheduler.h"

#include "http/metrics.h"
#include "replication.h"
#include "schedule/schedule.h"
#include "serde/serde.h"
#include "store/store.h"
#include "task/task.h"
#include "schedule/timerheap.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB "scheduler"
#define NONE_MS INT64_MAX
#define NO_LAST INT64_MIN

/* ---- task records ----------------------------------------------------------- */

enum {
        TF_USED = 1 << 0,
        TF_UUID = 1 << 1,           /* id.uuid holds the id */
        TF_PAUSED = 1 << 2,
        TF_LOCAL = 1 << 3,          /* home_region is this region: fire it */
        TF_EXPIRED = 1 << 4,        /* the EXPIRED record was written */
        TF_EXPIRY_PENDING = 1 << 5, /* expires_at ended it: write EXPIRED when due */
        TF_DIRTY = 1 << 6,          /* its checkpoint must be written */
        TF_TOMB = 1 << 7,           /* deleted: slot waits for its tombstone */
};

enum { MISFIRE_RUN_ONCE = 0, MISFIRE_SKIP, MISFIRE_RUN_ALL };
enum { TRIG_SCHEDULE = 0, TRIG_RUN_NOW, TRIG_RETRY, TRIG_MISFIRE };
static const char *const trig_names[] = {"SCHEDULE", "RUN_NOW", "RETRY", "MISFIRE"};
static const char *const trig_labels[] = {"trigger=\"schedule\"", "trigger=\"run_now\"",
                                          "trigger=\"retry\"", "trigger=\"misfire\""};

/** A parsed cron shared by every task with the same zone and expression. */
typedef struct sched_cron {
        struct sched_cron *next;
        char *key; /* zone '\n' expression */
        tb_cron_t *cron;
        const tb_tz_t *tz;
} sched_cron_t;

typedef struct sched_retry {
        int64_t nominal_ms;
        int64_t due_ms;
        int32_t attempt;
} sched_retry_t;

/** The rare parts of a task: pending retries and run-now requests. */
typedef struct sched_extra {
        sched_retry_t *retries;
        uint32_t retry_cnt;
        uint32_t run_now_cnt;
        int64_t *run_now;     /* pending RUN_REQUESTED nominal times, ascending */
        int64_t run_now_mark; /* latest run-now nominal emitted */
} sched_extra_t;

typedef struct sched_task {
        union {
                uint8_t uuid[16];
                char *str;
        } id;
        int64_t version;
        int64_t epoch; /* home-region epoch: a failover raises it (docs/replication.md) */
        int64_t created_ms;
        int64_t param_ms; /* ONCE: the instant; EVERY: the period */
        int64_t start_ms, end_ms, expires_ms;
        int64_t jitter_ms;
        int64_t backoff_ms, backoff_max_ms;
        int64_t last_nominal; /* NO_LAST: nothing emitted yet */
        int64_t next_nominal; /* NONE_MS: no further fire */
        int64_t fires;
        sched_cron_t *cron;
        uint8_t *snap; /* RunSnapshot Avro bytes */
        sched_extra_t *x;
        uint32_t snap_len;
        int16_t partition;
        uint16_t max_attempts;
        uint8_t kind, dst_gap, dst_overlap, misfire;
        uint8_t flags;
} sched_task_t;

typedef struct sched_dlq {
        char *task_id;
        int32_t partition;
        tb_buf_t value;
        char status[24];
        char *error;
} sched_dlq_t;

typedef struct sched_tomb {
        char *task_id;
        int32_t partition;
} sched_tomb_t;

struct tb_sched {
        const tb_config_t *conf;
        char host[256];
        int32_t part_cnt;
        tb_sched_part_t *parts;

        sched_task_t *tasks;
        uint32_t task_cap, task_hwm;
        uint32_t *free_slots;
        size_t free_cnt, free_cap;
        size_t task_cnt;

        uint32_t *map; /* slot + 1; 0 = empty */
        size_t map_cap, map_cnt;

        sched_cron_t **crons;
        size_t cron_cap, cron_cnt;

        tb_timerheap_t heap;

        uint32_t *dirty;
        size_t dirty_cnt, dirty_cap;
        sched_dlq_t *dlq;
        size_t dlq_cnt, dlq_cap;
        sched_tomb_t *tombs;
        size_t tomb_cnt, tomb_cap;

        rd_kafka_t *producer, *group;
        tb_sched_sink_t sink;
        void *sink_opaque;
        tb_sched_fire_hook_t hook;
        void *hook_opaque;

        int64_t *lag_due; /* this tick's scheduled fires (nominal + jitter) */
        size_t lag_cnt, lag_cap;
        tb_buf_t scratch;
        uint8_t run_header[10]; /* C3 01 + RunRequest fingerprint */
        char events_topic[256], results_topic[256];
        bool in_txn;
        char **moved; /* tasks an event of a higher epoch made local (see tb_sched_take_moved) */
        size_t moved_cnt, moved_cap;
};

/* ---- ids -------------------------------------------------------------------- */

static int hexval(int c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Canonical lower-case UUID text -> 16 bytes (only that form round-trips). */
static bool uuid_parse(const char *s, uint8_t out[16]) {
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
                int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
                if (hi < 0 || lo < 0)
                        return false;
                out[j++] = (uint8_t)(hi << 4 | lo);
                i += 2;
        }
        return true;
}

static void uuid_format(const uint8_t u[16], char out[37]) {
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
static const char *task_id(const sched_task_t *t, char buf[37]) {
        if (t->flags & TF_UUID) {
                uuid_format(t->id.uuid, buf);
                return buf;
        }
        return t->id.str;
}

static uint64_t hash_bytes(const void *p, size_t n) {
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

static uint64_t task_hash(const sched_task_t *t) {
        return (t->flags & TF_UUID) ? hash_bytes(t->id.uuid, 16)
                                    : hash_bytes(t->id.str, strlen(t->id.str));
}

void tb_sched_run_id(const char *tid, int64_t nominal_ms, int attempt, char out[33]) {
        char in[512];
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        int n = snprintf(in, sizeof(in), "%s|%" PRId64 "|%d", tid, nominal_ms, attempt);
        if (n < 0 || (size_t)n >= sizeof(in))
                n = (int)sizeof(in) - 1;
        EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
        static const char hx[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
                out[2 * i] = hx[md[i] >> 4];
                out[2 * i + 1] = hx[md[i] & 15];
        }
        out[32] = 0;
}

/* ---- id -> slot table (linear probing, backward-shift deletion) ------------ */

static tb_err_t map_grow(tb_sched_t *s) {
        size_t ncap = s->map_cap ? s->map_cap * 2 : 1024;
        uint32_t *nm = calloc(ncap, sizeof(*nm));
        if (!nm)
                return TB_ERR_NOMEM;
        for (size_t i = 0; i < s->map_cap; i++) {
                if (!s->map[i])
                        continue;
                size_t j = task_hash(&s->tasks[s->map[i] - 1]) & (ncap - 1);
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
static bool map_find(const tb_sched_t *s, const char *id, size_t *at) {
        uint8_t u[16];
        bool is_uuid = uuid_parse(id, u);
        uint64_t h = is_uuid ? hash_bytes(u, 16) : hash_bytes(id, strlen(id));
        size_t mask = s->map_cap - 1, i = h & mask;
        if (!s->map_cap) {
                *at = 0;
                return false;
        }
        while (s->map[i]) {
                const sched_task_t *t = &s->tasks[s->map[i] - 1];
                if (is_uuid ? ((t->flags & TF_UUID) && !memcmp(t->id.uuid, u, 16))
                            : (!(t->flags & TF_UUID) && !strcmp(t->id.str, id))) {
                        *at = i;
                        return true;
                }
                i = (i + 1) & mask;
        }
        *at = i;
        return false;
}

static void map_delete(tb_sched_t *s, size_t i) {
        size_t mask = s->map_cap - 1;
        s->map[i] = 0;
        s->map_cnt--;
        for (size_t j = (i + 1) & mask; s->map[j]; j = (j + 1) & mask) {
                size_t home = task_hash(&s->tasks[s->map[j] - 1]) & mask;
                /* move j back into the hole unless its home lies in (i, j] */
                bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
                if (!stays) {
                        s->map[i] = s->map[j];
                        s->map[j] = 0;
                        i = j;
                }
        }
}

static uint32_t slot_of(const tb_sched_t *s, const char *id) {
        size_t at;
        return map_find(s, id, &at) ? s->map[at] - 1 : UINT32_MAX;
}

/* ---- crons ------------------------------------------------------------------ */

static tb_err_t cron_get(tb_sched_t *s, const char *zone, const char *expr, sched_cron_t **out,
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
        size_t b = hash_bytes(key, strlen(key)) % s->cron_cap;
        for (sched_cron_t *c = s->crons[b]; c; c = c->next)
                if (!strcmp(c->key, key)) {
                        free(key);
                        *out = c;
                        return TB_OK;
                }
        sched_cron_t *c = calloc(1, sizeof(*c));
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

static void task_schedule(const sched_task_t *t, tb_schedule_t *sc) {
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

static int64_t task_next_after(const sched_task_t *t, int64_t after) {
        tb_schedule_t sc;
        int64_t n;
        char err[256];
        if (after == NONE_MS)
                return NONE_MS;
        task_schedule(t, &sc);
        if (tb_schedule_next(&sc, after, &n, NULL, err, sizeof(err)) != TB_OK)
                return NONE_MS;
        return n;
}

static int64_t task_jitter(const sched_task_t *t, int64_t nominal) {
        char buf[37];
        if (t->jitter_ms <= 0)
                return 0;
        return tb_schedule_jitter(task_id(t, buf), nominal, t->jitter_ms);
}

/* Where fires start for a task with nothing emitted yet: its creation (a
 * fire exactly at creation counts, as for "every" with k = 0). */
static int64_t task_from(const sched_task_t *t) {
        return t->last_nominal != NO_LAST ? t->last_nominal : t->created_ms - 1;
}

/* After the schedule ran out: did expires_at end it (then EXPIRED is due)? */
static void task_check_expiry(sched_task_t *t) {
        t->flags &= (uint8_t)~TF_EXPIRY_PENDING;
        if (t->next_nominal != NONE_MS || t->expires_ms <= 0 || (t->flags & TF_EXPIRED))
                return;
        tb_schedule_t sc;
        int64_t n;
        char err[256];
        task_schedule(t, &sc);
        sc.expires_at_ms = 0;
        if (tb_schedule_next(&sc, task_from(t), &n, NULL, err, sizeof(err)) == TB_OK)
                t->flags |= TF_EXPIRY_PENDING;
}

static int64_t task_due(const sched_task_t *t) {
        if (!(t->flags & TF_USED) || (t->flags & TF_TOMB) || !(t->flags & TF_LOCAL))
                return NONE_MS;
        int64_t d = NONE_MS;
        if (t->x) {
                if (t->x->run_now_cnt)
                        return 0;
                for (uint32_t i = 0; i < t->x->retry_cnt; i++)
                        if (t->x->retries[i].due_ms < d)
                                d = t->x->retries[i].due_ms;
        }
        if ((t->flags & TF_EXPIRY_PENDING) && t->expires_ms < d)
                d = t->expires_ms;
        if (t->next_nominal != NONE_MS) {
                int64_t n = t->next_nominal;
                if (!(t->flags & TF_PAUSED))
                        n += task_jitter(t, n);
                if (n < d)
                        d = n;
        }
        return d;
}

static void task_rekey(tb_sched_t *s, uint32_t slot) {
        int64_t d = task_due(&s->tasks[slot]);
        if (d == NONE_MS)
                tb_timerheap_remove(&s->heap, slot);
        else if (tb_timerheap_set(&s->heap, slot, d) != TB_OK)
                tb_error(SUB, "out of memory growing the timer heap: a task will not fire");
}

static void task_mark_dirty(tb_sched_t *s, uint32_t slot) {
        sched_task_t *t = &s->tasks[slot];
        if (t->flags & TF_DIRTY)
                return;
        if (s->dirty_cnt == s->dirty_cap) {
                size_t nc = s->dirty_cap ? s->dirty_cap * 2 : 256;
                uint32_t *nd = realloc(s->dirty, nc * sizeof(*nd));
                if (!nd) {
                        tb_error(SUB, "out of memory: a checkpoint will be late");
                        return;
                }
                s->dirty = nd;
                s->dirty_cap = nc;
        }
        s->dirty[s->dirty_cnt++] = slot;
        t->flags |= TF_DIRTY;
}

static sched_extra_t *task_extra(sched_task_t *t) {
        if (!t->x)
                t->x = calloc(1, sizeof(*t->x));
        return t->x;
}

static void extra_free(sched_extra_t *x) {
        if (!x)
                return;
        free(x->retries);
        free(x->run_now);
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

static void task_free_fields(sched_task_t *t) {
        if (!(t->flags & TF_UUID))
                free(t->id.str);
        free(t->snap);
        extra_free(t->x);
        memset(t, 0, sizeof(*t));
}

static void moved_push(tb_sched_t *s, const char *tid) {
        if (s->moved_cnt == s->moved_cap) {
                size_t nc = s->moved_cap ? s->moved_cap * 2 : 16;
                char **n = realloc(s->moved, nc * sizeof(*n));
                if (!n) {
                        tb_error(SUB, "out of memory: task %s moved here fires from its "
                                 "creation's schedule", tid);
                        return;
                }
                s->moved = n;
                s->moved_cap = nc;
        }
        if ((s->moved[s->moved_cnt] = strdup(tid)))
                s->moved_cnt++;
}

char *tb_sched_take_moved(tb_sched_t *s) {
        return s->moved_cnt ? s->moved[--s->moved_cnt] : NULL;
}

void tb_sched_task_set_epoch(tb_sched_t *s, const char *tid, int64_t epoch) {
        uint32_t slot = slot_of(s, tid);
        if (slot != UINT32_MAX)
                s->tasks[slot].epoch = epoch;
}

void tb_sched_task_adopt(tb_sched_t *s, const char *tid, int64_t last_nominal_ms) {
        uint32_t slot = slot_of(s, tid);
        if (slot == UINT32_MAX)
                return;
        sched_task_t *t = &s->tasks[slot];
        if (last_nominal_ms != NO_LAST &&
            (t->last_nominal == NO_LAST || last_nominal_ms > t->last_nominal))
                t->last_nominal = last_nominal_ms;
        t->next_nominal = task_next_after(t, task_from(t));
        task_check_expiry(t);
        task_mark_dirty(s, slot);
        task_rekey(s, slot);
}

void tb_sched_destroy(tb_sched_t *s) {
        if (!s)
                return;
        for (uint32_t i = 0; i < s->task_hwm; i++)
                if (s->tasks[i].flags & TF_USED)
                        task_free_fields(&s->tasks[i]);
        free(s->tasks);
        free(s->free_slots);
        free(s->map);
        for (size_t b = 0; b < s->cron_cap; b++)
                for (sched_cron_t *c = s->crons[b], *n; c; c = n) {
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
        free(s->lag_due);
        tb_buf_free(&s->scratch);
        free(s->parts);
        for (size_t i = 0; i < s->moved_cnt; i++)
                free(s->moved[i]);
        free(s->moved);
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
        return t ? t->due_ms : NONE_MS;
}

bool tb_sched_task_info(const tb_sched_t *s, const char *id, int64_t *next_nominal,
                        int64_t *last_nominal) {
        uint32_t slot = slot_of(s, id);
        if (slot == UINT32_MAX || (s->tasks[slot].flags & TF_TOMB))
                return false;
        if (next_nominal)
                *next_nominal = s->tasks[slot].next_nominal;
        if (last_nominal)
                *last_nominal = s->tasks[slot].last_nominal;
        return true;
}

/* ---- Avro bits for the hot path --------------------------------------------- */

static void av_long(tb_buf_t *b, int64_t v) {
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

static void av_str(tb_buf_t *b, const char *str) {
        size_t n = strlen(str);
        av_long(b, (int64_t)n);
        tb_buf_append(b, str, n);
}

/* The RunRequest fields before the snapshot, encoded with the values used
 * to cut the snapshot out: run_id "", task_id "", task_version 0,
 * nominal_time 0, attempt 1, trigger SCHEDULE, emitted_at 0. */
static const uint8_t run_probe_prefix[] = {0, 0, 0, 0, 2, 0, 0};

static void run_encode(const tb_sched_t *s, const sched_task_t *t, const char *tid,
                       int64_t nominal, int attempt, int trig, int64_t emitted, tb_buf_t *out) {
        char rid[33];
        tb_sched_run_id(tid, nominal, attempt, rid);
        tb_buf_append(out, s->run_header, sizeof(s->run_header));
        av_str(out, rid);
        av_str(out, tid);
        av_long(out, t->version);
        av_long(out, nominal);
        av_long(out, attempt);
        av_long(out, trig);
        av_long(out, emitted);
        tb_buf_append(out, t->snap, t->snap_len);
}

tb_err_t tb_sched_encode_run(const tb_sched_t *s, const char *tid, int64_t nominal_ms,
                             int attempt, const char *trigger, int64_t emitted_ms,
                             tb_buf_t *out, char *errstr, size_t errstr_size) {
        uint32_t slot = slot_of(s, tid);
        if (slot == UINT32_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND, "task %s is not loaded",
                                 tid);
        int trig = -1;
        for (int i = 0; i < 4; i++)
                if (trigger && !strcmp(trigger, trig_names[i]))
                        trig = i;
        if (trig < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "trigger '%s' is not one of SCHEDULE, RUN_NOW, RETRY, MISFIRE",
                                 trigger ? trigger : "(null)");
        run_encode(s, &s->tasks[slot], tid, nominal_ms, attempt, trig, emitted_ms, out);
        return TB_OK;
}

/* ---- TaskSpec -> record ----------------------------------------------------- */

static int64_t jlong(const json_t *o, const char *k, int64_t dflt) {
        const json_t *v = json_object_get(o, k);
        return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static const char *jstr(const json_t *o, const char *k, const char *dflt) {
        const json_t *v = json_object_get(o, k);
        return json_is_string(v) ? json_string_value(v) : dflt;
}

/* Cut the RunSnapshot bytes out of a probe RunRequest. */
static tb_err_t snapshot_encode(tb_sched_t *s, const json_t *spec, uint8_t **out,
                                uint32_t *out_len, char *errstr, size_t errstr_size) {
        const json_t *retries = json_object_get(spec, "retries");
        json_t *argv = json_object_get(spec, "argv");
        json_t *opts = json_object_get(spec, "executor_options");
        json_t *snap = json_pack(
                "{s:s, s:s, s:O, s:s, s:s, s:O, s:I, s:s, s:I, s:I}", "name",
                jstr(spec, "name", ""), "script", jstr(spec, "script", ""), "argv",
                json_is_array(argv) ? argv : json_array(), "security_group",
                jstr(spec, "security_group", ""), "executor", jstr(spec, "executor", "shell"),
                "executor_options", json_is_object(opts) ? opts : json_object(), "expiry_ms",
                (json_int_t)jlong(spec, "expiry_ms", 3600000), "overlap",
                jstr(spec, "overlap", "FORBID"), "max_attempts",
                (json_int_t)jlong(retries, "max_attempts", 1), "log_retention_ms",
                (json_int_t)jlong(spec, "log_retention_ms", 2592000000LL));
        /* json_pack's O took a reference to the fresh defaults above: drop ours */
        if (!json_is_array(argv) && snap)
                json_decref(json_object_get(snap, "argv"));
        if (!json_is_object(opts) && snap)
                json_decref(json_object_get(snap, "executor_options"));
        if (!snap)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task spec: cannot build the run snapshot");
        json_t *probe = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:i, s:o}", "run_id", "",
                                  "task_id", "", "task_version", 0, "nominal_time", 0,
                                  "attempt", 1, "trigger", "SCHEDULE", "emitted_at", 0,
                                  "snapshot", snap);
        tb_buf_t b = {0};
        tb_err_t err = probe ? tb_serde_encode(TB_SCHEMA_RUN_REQUEST, probe, &b, errstr,
                                               errstr_size)
                             : TB_ERR_NOMEM;
        json_decref(probe);
        if (err) {
                tb_buf_free(&b);
                return err;
        }
        size_t pre = sizeof(s->run_header) + sizeof(run_probe_prefix);
        if (b.len < pre || memcmp(b.data, s->run_header, sizeof(s->run_header)) ||
            memcmp(b.data + sizeof(s->run_header), run_probe_prefix, sizeof(run_probe_prefix))) {
                tb_buf_free(&b);
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "RunRequest schema changed: the scheduler's encoder expects "
                                 "run_id, task_id, task_version, nominal_time, attempt, "
                                 "trigger, emitted_at, then snapshot");
        }
        *out_len = (uint32_t)(b.len - pre);
        *out = malloc(*out_len ? *out_len : 1);
        if (!*out) {
                tb_buf_free(&b);
                return TB_ERR_NOMEM;
        }
        memcpy(*out, b.data + pre, *out_len);
        tb_buf_free(&b);
        return TB_OK;
}

static int enum_index(const char *v, const char *const *names, int cnt, int dflt) {
        for (int i = 0; v && i < cnt; i++)
                if (!strcmp(v, names[i]))
                        return i;
        return dflt;
}

/* Fill the schedule part of \p t from the spec; errors name the field. */
static tb_err_t spec_schedule(tb_sched_t *s, const json_t *spec, sched_task_t *t,
                              char *errstr, size_t errstr_size) {
        static const char *const kinds[] = {"ONCE", "EVERY", "CRON"};
        static const char *const gaps[] = {"SHIFT", "SKIP"};
        static const char *const overlaps[] = {"FIRST", "LAST", "BOTH"};
        static const char *const misfires[] = {"RUN_ONCE", "SKIP", "RUN_ALL"};
        const json_t *sc = json_object_get(spec, "schedule");
        if (!json_is_object(sc))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task spec: schedule is missing");
        int k = enum_index(jstr(sc, "kind", NULL), kinds, 3, -1);
        if (k < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task spec: schedule.kind '%s' is not ONCE, EVERY or CRON",
                                 jstr(sc, "kind", "(missing)"));
        t->kind = (uint8_t)(k + 1);
        t->cron = NULL;
        t->param_ms = 0;
        if (t->kind == TB_SCHEDULE_ONCE)
                t->param_ms = jlong(sc, "once_at", 0);
        else if (t->kind == TB_SCHEDULE_EVERY)
                t->param_ms = jlong(sc, "every_ms", 0);
        else {
                const char *expr = jstr(sc, "cron", NULL);
                if (!expr)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "task spec: schedule.cron is missing for kind CRON");
                tb_err_t err = cron_get(s, jstr(sc, "timezone", "UTC"), expr, &t->cron, errstr,
                                        errstr_size);
                if (err)
                        return err;
        }
        t->start_ms = jlong(sc, "start_at", 0);
        t->end_ms = jlong(sc, "end_at", 0);
        t->expires_ms = jlong(spec, "expires_at", 0);
        t->jitter_ms = jlong(sc, "jitter_ms", 0);
        t->dst_gap = (uint8_t)enum_index(jstr(sc, "dst_gap", NULL), gaps, 2, 0);
        t->dst_overlap = (uint8_t)enum_index(jstr(sc, "dst_overlap", NULL), overlaps, 3, 0);
        t->misfire = (uint8_t)enum_index(jstr(spec, "misfire", NULL), misfires, 3, 0);
        tb_schedule_t chk;
        task_schedule(t, &chk);
        return tb_schedule_validate(&chk, errstr, errstr_size);
}

static bool same_schedule(const sched_task_t *a, const sched_task_t *b) {
        return a->kind == b->kind && a->param_ms == b->param_ms && a->cron == b->cron &&
               a->start_ms == b->start_ms && a->end_ms == b->end_ms &&
               a->expires_ms == b->expires_ms && a->dst_gap == b->dst_gap &&
               a->dst_overlap == b->dst_overlap && a->created_ms == b->created_ms &&
               (a->flags & TF_LOCAL) == (b->flags & TF_LOCAL);
}

static tb_err_t slot_alloc(tb_sched_t *s, uint32_t *out) {
        if (s->free_cnt) {
                *out = s->free_slots[--s->free_cnt];
                return TB_OK;
        }
        if (s->task_hwm == s->task_cap) {
                uint32_t nc = s->task_cap ? s->task_cap * 2 : 1024;
                sched_task_t *nt = realloc(s->tasks, (size_t)nc * sizeof(*nt));
                if (!nt)
                        return TB_ERR_NOMEM;
                s->tasks = nt;
                s->task_cap = nc;
        }
        *out = s->task_hwm++;
        return TB_OK;
}

static void slot_release(tb_sched_t *s, uint32_t slot) {
        if (s->free_cnt == s->free_cap) {
                size_t nc = s->free_cap ? s->free_cap * 2 : 256;
                uint32_t *nf = realloc(s->free_slots, nc * sizeof(*nf));
                if (!nf)
                        return; /* the slot leaks; never reused */
                s->free_slots = nf;
                s->free_cap = nc;
        }
        s->free_slots[s->free_cnt++] = slot;
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
        sched_task_t nt = {0};
        tb_err_t err;
        nt.version = version;
        nt.created_ms = created_ms;
        if ((err = spec_schedule(s, spec, &nt, errstr, errstr_size)))
                return err;
        const json_t *retries = json_object_get(spec, "retries");
        int64_t ma = jlong(retries, "max_attempts", 1);
        nt.max_attempts = (uint16_t)(ma < 1 ? 1 : ma > 1000 ? 1000 : ma);
        nt.backoff_ms = jlong(retries, "backoff_ms", 10000);
        nt.backoff_max_ms = jlong(retries, "backoff_max_ms", 600000);
        if (json_is_true(json_object_get(spec, "paused")))
                nt.flags |= TF_PAUSED;
        const char *home = jstr(spec, "home_region", "");
        if (!home[0] || !strcmp(home, s->conf->region ? s->conf->region : ""))
                nt.flags |= TF_LOCAL;
        if ((err = snapshot_encode(s, spec, &nt.snap, &nt.snap_len, errstr, errstr_size)))
                return err;
        nt.partition = (int16_t)partition;

        size_t at;
        if (map_find(s, tid, &at)) {
                uint32_t slot = s->map[at] - 1;
                sched_task_t *t = &s->tasks[slot];
                bool changed = !same_schedule(t, &nt);
                free(t->snap);
                t->snap = nt.snap;
                t->snap_len = nt.snap_len;
                t->version = version;
                t->partition = nt.partition;
                t->max_attempts = nt.max_attempts;
                t->backoff_ms = nt.backoff_ms;
                t->backoff_max_ms = nt.backoff_max_ms;
                t->misfire = nt.misfire;
                t->jitter_ms = nt.jitter_ms;
                uint8_t keep = t->flags & (TF_USED | TF_UUID | TF_EXPIRED | TF_DIRTY);
                bool was_tomb = t->flags & TF_TOMB;
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
                        keep &= (uint8_t)~TF_EXPIRED;
                }
                t->flags = keep | (nt.flags & (TF_PAUSED | TF_LOCAL));
                if (was_tomb)
                        t->flags &= (uint8_t)~TF_TOMB;
                if (changed) {
                        /* never repeat what was emitted, never back-fill the
                         * past of a schedule that did not exist then */
                        int64_t from = now_ms;
                        if (t->last_nominal != NO_LAST && t->last_nominal > from)
                                from = t->last_nominal;
                        t->next_nominal = task_next_after(t, from);
                        task_mark_dirty(s, slot);
                }
                task_check_expiry(t);
                task_rekey(s, slot);
                return TB_OK;
        }
        uint32_t slot;
        if (s->map_cnt + 1 > s->map_cap / 2 && (err = map_grow(s))) {
                free(nt.snap);
                return tb_seterr(errstr, errstr_size, err, "out of memory loading task %s", tid);
        }
        if ((err = slot_alloc(s, &slot))) {
                free(nt.snap);
                return tb_seterr(errstr, errstr_size, err, "out of memory loading task %s", tid);
        }
        if (uuid_parse(tid, nt.id.uuid)) {
                nt.flags |= TF_UUID;
        } else if (!(nt.id.str = strdup(tid))) {
                free(nt.snap);
                slot_release(s, slot);
                return TB_ERR_NOMEM;
        }
        nt.flags |= TF_USED;
        nt.last_nominal = NO_LAST;
        s->tasks[slot] = nt;
        sched_task_t *t = &s->tasks[slot];
        t->next_nominal = task_next_after(t, task_from(t));
        map_find(s, tid, &at);
        s->map[at] = slot + 1;
        s->map_cnt++;
        s->task_cnt++;
        task_check_expiry(t);
        task_rekey(s, slot);
        return TB_OK;
}

static void task_destroy(tb_sched_t *s, uint32_t slot) {
        sched_task_t *t = &s->tasks[slot];
        char buf[37];
        size_t at;
        if (map_find(s, task_id(t, buf), &at))
                map_delete(s, at);
        tb_timerheap_remove(&s->heap, slot);
        /* a dirty entry may still name the slot: it is skipped (not USED) */
        task_free_fields(t);
        slot_release(s, slot);
        s->task_cnt--;
}

bool tb_sched_task_remove(tb_sched_t *s, const char *tid, bool tombstone) {
        uint32_t slot = slot_of(s, tid);
        if (slot == UINT32_MAX)
                return false;
        sched_task_t *t = &s->tasks[slot];
        if (tombstone) {
                if (s->tomb_cnt == s->tomb_cap) {
                        size_t nc = s->tomb_cap ? s->tomb_cap * 2 : 64;
                        sched_tomb_t *n = realloc(s->tombs, nc * sizeof(*n));
                        if (n) {
                                s->tombs = n;
                                s->tomb_cap = nc;
                        }
                }
                if (s->tomb_cnt < s->tomb_cap) {
                        s->tombs[s->tomb_cnt].task_id = strdup(tid);
                        s->tombs[s->tomb_cnt].partition = t->partition;
                        if (s->tombs[s->tomb_cnt].task_id)
                                s->tomb_cnt++;
                }
        }
        if (t->flags & TF_DIRTY) {
                /* its pending checkpoint is superseded by the tombstone */
                t->flags |= TF_TOMB;
                t->flags &= (uint8_t)~TF_LOCAL;
                tb_timerheap_remove(&s->heap, slot);
                return true;
        }
        task_destroy(s, slot);
        return true;
}

void tb_sched_drop_partition(tb_sched_t *s, int32_t p) {
        for (uint32_t i = 0; i < s->task_hwm; i++) {
                sched_task_t *t = &s->tasks[i];
                if ((t->flags & TF_USED) && t->partition == p) {
                        if (t->flags & TF_DIRTY) {
                                /* drop the pending checkpoint with it */
                                t->flags = (uint8_t)(t->flags & ~TF_DIRTY);
                                for (size_t d = 0; d < s->dirty_cnt; d++)
                                        if (s->dirty[d] == i)
                                                s->dirty[d] = UINT32_MAX;
                        }
                        task_destroy(s, i);
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
        if (p >= 0 && p < s->part_cnt)
                s->parts[p] = (tb_sched_part_t){.load_off = -1, .ev_pos = -1, .rr_pos = -1};
}

/* ---- events, results, checkpoints ------------------------------------------- */

static void run_now_add(tb_sched_t *s, uint32_t slot, int64_t at) {
        sched_task_t *t = &s->tasks[slot];
        sched_extra_t *x = task_extra(t);
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
        task_mark_dirty(s, slot);
        task_rekey(s, slot);
}

/* Apply a TaskEvent; \p remote: from another region's copy (state only:
 * a run-now there is that region's to fire). */
static tb_err_t sched_event(tb_sched_t *s, int32_t partition, const json_t *ev, bool replay,
                            bool remote, int64_t now_ms, char *errstr, size_t errstr_size) {
        const char *type = jstr(ev, "type", "");
        const char *tid = jstr(ev, "task_id", NULL);
        int64_t version = jlong(ev, "version", 0);
        int64_t epoch = jlong(ev, "epoch", 0);
        if (!tid)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "TaskEvent without task_id");
        uint32_t slot = slot_of(s, tid);
        if (slot != UINT32_MAX && (s->tasks[slot].flags & TF_TOMB))
                slot = UINT32_MAX;
        if (replay) {
                if (!strcmp(type, "RUN_REQUESTED") && slot != UINT32_MAX)
                        run_now_add(s, slot, jlong(ev, "at", now_ms));
                return TB_OK;
        }
        if (!strcmp(type, "DELETED")) {
                if (slot != UINT32_MAX && tb_repl_newer(epoch, version, s->tasks[slot].epoch,
                                                        s->tasks[slot].version))
                        tb_sched_task_remove(s, tid, true);
                return TB_OK;
        }
        const json_t *spec = json_object_get(ev, "task");
        /* regions: a higher home-region epoch wins whatever the version, so an
         * old home's events cannot take a moved task back */
        bool newer = slot == UINT32_MAX || tb_repl_newer(epoch, version, s->tasks[slot].epoch,
                                                         s->tasks[slot].version);
        bool was_local = slot != UINT32_MAX && (s->tasks[slot].flags & TF_LOCAL);
        if (newer && json_is_object(spec)) {
                tb_err_t err = tb_sched_task_put(s, partition, tid, version,
                                                 jlong(ev, "created_at", now_ms), spec, now_ms,
                                                 errstr, errstr_size);
                if (err)
                        return err;
                slot = slot_of(s, tid);
                if (slot != UINT32_MAX) {
                        s->tasks[slot].epoch = epoch;
                        /* moved here by a failover: where its fires resume is
                         * the role's to find (the old home's replicated runs) */
                        if (!was_local && epoch > 0 && (s->tasks[slot].flags & TF_LOCAL))
                                moved_push(s, tid);
                }
        }
        if (!remote && !strcmp(type, "RUN_REQUESTED") && slot != UINT32_MAX)
                run_now_add(s, slot, jlong(ev, "at", now_ms));
        return TB_OK;
}

tb_err_t tb_sched_event(tb_sched_t *s, int32_t partition, const json_t *ev, bool replay,
                        int64_t now_ms, char *errstr, size_t errstr_size) {
        return sched_event(s, partition, ev, replay, false, now_ms, errstr, errstr_size);
}

tb_err_t tb_sched_remote_event(tb_sched_t *s, int32_t partition, const json_t *ev,
                               int64_t now_ms, char *errstr, size_t errstr_size) {
        return sched_event(s, partition, ev, false, true, now_ms, errstr, errstr_size);
}

static bool status_retryable(const char *st, bool infra) {
        if (!strcmp(st, "FAILED") || !strcmp(st, "TIMED_OUT") || !strcmp(st, "LOST"))
                return true;
        /* an infrastructure error ends a run whatever status word it carries,
         * except the ones that are not failures */
        return infra && strcmp(st, "RUNNING") && strcmp(st, "SUCCEEDED") &&
               strncmp(st, "SKIPPED", 7) && strcmp(st, "EXPIRED") && strcmp(st, "DUPLICATE") &&
               strcmp(st, "CANCELLED");
}

static int64_t backoff_for(const sched_task_t *t, int attempt) {
        int64_t b = t->backoff_ms > 0 ? t->backoff_ms : 0;
        for (int i = 1; i < attempt && b < t->backoff_max_ms; i++)
                b *= 2;
        if (t->backoff_max_ms > 0 && b > t->backoff_max_ms)
                b = t->backoff_max_ms;
        return b;
}

tb_err_t tb_sched_result(tb_sched_t *s, int32_t partition, const json_t *res, int64_t now_ms,
                         char *errstr, size_t errstr_size) {
        const char *tid = jstr(res, "task_id", NULL);
        const char *st = jstr(res, "status", "");
        if (!tid)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "RunResult without task_id");
        if (!status_retryable(st, json_is_true(json_object_get(res, "infra_error"))))
                return TB_OK;
        uint32_t slot = slot_of(s, tid);
        if (slot == UINT32_MAX || (s->tasks[slot].flags & TF_TOMB))
                return TB_OK; /* deleted since: nothing to retry */
        sched_task_t *t = &s->tasks[slot];
        if (!(t->flags & TF_LOCAL))
                return TB_OK;
        int64_t nominal = jlong(res, "nominal_time", 0);
        int attempt = (int)jlong(res, "attempt", 1);
        int64_t at = jlong(res, "at", now_ms);
        if (attempt < 1)
                attempt = 1;
        if (attempt < t->max_attempts) {
                sched_extra_t *x = task_extra(t);
                if (!x)
                        return TB_ERR_NOMEM;
                for (uint32_t i = 0; i < x->retry_cnt; i++)
                        if (x->retries[i].nominal_ms == nominal &&
                            x->retries[i].attempt >= attempt + 1)
                                return TB_OK; /* a duplicate result */
                sched_retry_t *n = realloc(x->retries, (x->retry_cnt + 1) * sizeof(*n));
                if (!n)
                        return TB_ERR_NOMEM;
                x->retries = n;
                x->retries[x->retry_cnt++] = (sched_retry_t){
                        .nominal_ms = nominal,
                        .due_ms = at + backoff_for(t, attempt),
                        .attempt = attempt + 1,
                };
                tb_metrics_add("taskbus_scheduler_retries_total", NULL, 1);
                task_mark_dirty(s, slot);
                task_rekey(s, slot);
                return TB_OK;
        }
        /* exhausted: the run goes to the DLQ with its last error */
        if (s->dlq_cnt == s->dlq_cap) {
                size_t nc = s->dlq_cap ? s->dlq_cap * 2 : 64;
                sched_dlq_t *n = realloc(s->dlq, nc * sizeof(*n));
                if (!n)
                        return TB_ERR_NOMEM;
                s->dlq = n;
                s->dlq_cap = nc;
        }
        sched_dlq_t *d = &s->dlq[s->dlq_cnt];
        memset(d, 0, sizeof(*d));
        d->task_id = strdup(tid);
        d->partition = partition;
        tb_snprintf(d->status, sizeof(d->status), "%s", st);
        const char *e = jstr(res, "error", NULL);
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
        run_encode(s, t, tid, nominal, attempt, attempt > 1 ? TRIG_RETRY : TRIG_SCHEDULE, at,
                   &d->value);
        s->dlq_cnt++;
        return TB_OK;
}

tb_err_t tb_sched_checkpoint(tb_sched_t *s, const json_t *ck, int64_t now_ms, char *errstr,
                             size_t errstr_size) {
        const char *tid = jstr(ck, "task_id", NULL);
        if (!tid)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "SchedulerCheckpoint without task_id");
        uint32_t slot = slot_of(s, tid);
        if (slot == UINT32_MAX)
                return TB_OK; /* a task deleted since */
        sched_task_t *t = &s->tasks[slot];
        const json_t *last = json_object_get(ck, "last_nominal_time");
        t->last_nominal = json_is_integer(last) ? (int64_t)json_integer_value(last) : NO_LAST;
        t->fires = jlong(ck, "fires", 0);
        if (json_is_true(json_object_get(ck, "expired")))
                t->flags |= TF_EXPIRED;
        else
                t->flags &= (uint8_t)~TF_EXPIRED;
        extra_free(t->x);
        t->x = NULL;
        const json_t *rt = json_object_get(ck, "retries");
        const json_t *rn = json_object_get(ck, "run_now");
        int64_t mark = jlong(ck, "run_now_mark", 0);
        if (json_array_size(rt) || json_array_size(rn) || mark) {
                sched_extra_t *x = task_extra(t);
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
                                x->retries[x->retry_cnt++] = (sched_retry_t){
                                        .nominal_ms = jlong(v, "nominal_time", 0),
                                        .due_ms = jlong(v, "due_at", now_ms),
                                        .attempt = (int32_t)jlong(v, "attempt", 2),
                                };
                        }
                }
                if (json_array_size(rn)) {
                        x->run_now = calloc(json_array_size(rn), sizeof(*x->run_now));
                        if (!x->run_now)
                                return TB_ERR_NOMEM;
                        json_array_foreach(rn, i, v) {
                                if (json_is_integer(v))
                                        x->run_now[x->run_now_cnt++] = json_integer_value(v);
                        }
                }
        }
        t->next_nominal = task_next_after(t, task_from(t));
        task_check_expiry(t);
        task_rekey(s, slot);
        return TB_OK;
}

/* ---- emission ---------------------------------------------------------------- */

static tb_err_t emit(tb_sched_t *s, tb_topic_t topic, int32_t partition, const char *key,
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

static tb_err_t emit_result(tb_sched_t *s, const sched_task_t *t, const char *tid,
                            int64_t nominal, int attempt, const char *status, const char *error,
                            int64_t now, char *errstr, size_t errstr_size) {
        char rid[33];
        tb_sched_run_id(tid, nominal, attempt, rid);
        json_t *r = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:s, s:I}", "run_id", rid,
                              "task_id", tid, "nominal_time", (json_int_t)nominal, "attempt",
                              attempt, "status", status, "executor", "", "host", s->host,
                              "error", error, "at", (json_int_t)now);
        if (!r)
                return TB_ERR_NOMEM;
        s->scratch.len = 0;
        tb_err_t err = tb_serde_encode(TB_SCHEMA_RUN_RESULT, r, &s->scratch, errstr, errstr_size);
        json_decref(r);
        if (err)
                return err;
        return emit(s, TB_TOPIC_RESULTS, t->partition, tid, s->scratch.data, s->scratch.len, NULL,
                    0, errstr, errstr_size);
}

static tb_err_t emit_run(tb_sched_t *s, const sched_task_t *t, const char *tid,
                         int64_t nominal, int attempt, int trig, int64_t now, char *errstr,
                         size_t errstr_size) {
        s->scratch.len = 0;
        run_encode(s, t, tid, nominal, attempt, trig, now, &s->scratch);
        return emit(s, TB_TOPIC_RUNS, t->partition, tid, s->scratch.data, s->scratch.len, NULL, 0,
                    errstr, errstr_size);
}

static tb_err_t emit_checkpoint(tb_sched_t *s, const sched_task_t *t, int64_t now,
                                char *errstr, size_t errstr_size) {
        char buf[37];
        const char *tid = task_id(t, buf);
        json_t *retries = json_array(), *run_now = json_array();
        int64_t mark = 0;
        if (t->x) {
                for (uint32_t i = 0; i < t->x->retry_cnt; i++)
                        json_array_append_new(
                                retries,
                                json_pack("{s:I, s:i, s:I}", "nominal_time",
                                          (json_int_t)t->x->retries[i].nominal_ms, "attempt",
                                          (int)t->x->retries[i].attempt, "due_at",
                                          (json_int_t)t->x->retries[i].due_ms));
                for (uint32_t i = 0; i < t->x->run_now_cnt; i++)
                        json_array_append_new(run_now, json_integer(t->x->run_now[i]));
                mark = t->x->run_now_mark;
        }
        json_t *c = json_pack("{s:s, s:I, s:o, s:o, s:I, s:i, s:I, s:o, s:o, s:I, s:b}",
                              "task_id", tid, "task_version", (json_int_t)t->version,
                              "last_nominal_time",
                              t->last_nominal == NO_LAST ? json_null()
                                                         : json_integer(t->last_nominal),
                              "next_fire_time",
                              t->next_nominal == NONE_MS ? json_null()
                                                         : json_integer(t->next_nominal),
                              "fires", (json_int_t)t->fires, "epoch", 0, "at",
                              (json_int_t)now, "retries", retries, "run_now", run_now,
                              "run_now_mark", (json_int_t)mark, "expired",
                              (t->flags & TF_EXPIRED) != 0);
        if (!c)
                return TB_ERR_NOMEM;
        s->scratch.len = 0;
        tb_err_t err = tb_serde_encode(TB_SCHEMA_SCHEDULER_CHECKPOINT, c, &s->scratch, errstr,
                                       errstr_size);
        json_decref(c);
        if (err)
                return err;
        return emit(s, TB_TOPIC_CHECKPOINTS, t->partition, tid, s->scratch.data, s->scratch.len,
                    NULL, 0, errstr, errstr_size);
}

static void lag_push(tb_sched_t *s, int64_t due) {
        if (s->lag_cnt == s->lag_cap) {
                size_t nc = s->lag_cap ? s->lag_cap * 2 : 1024;
                int64_t *n = realloc(s->lag_due, nc * sizeof(*n));
                if (!n)
                        return;
                s->lag_due = n;
                s->lag_cap = nc;
        }
        s->lag_due[s->lag_cnt++] = due;
}

static bool is_late(const sched_task_t *t, int64_t n, int64_t now) {
        return now - (n + task_jitter(t, n)) > TB_SCHED_MISFIRE_THRESHOLD_MS;
}

/* Late fires from \p n on, counted up to \p limit + 1. */
static int64_t count_late(const sched_task_t *t, int64_t n, int64_t now, int64_t limit) {
        int64_t cnt = 0;
        while (n != NONE_MS && cnt <= limit && is_late(t, n, now)) {
                cnt++;
                n = task_next_after(t, n);
        }
        return cnt;
}

/* Emit what task \p slot has due, up to \p room records. @returns records. */
static tb_err_t task_process(tb_sched_t *s, uint32_t slot, int64_t now, size_t room,
                             size_t *used, tb_sched_tick_stats_t *st, char *errstr,
                             size_t errstr_size) {
        sched_task_t *t = &s->tasks[slot];
        char buf[37], msg[256], when[32];
        const char *tid = task_id(t, buf);
        tb_err_t err = TB_OK;
        size_t n_rec = 0;
        while (n_rec < room && n_rec < TB_SCHED_TASK_CHUNK) {
                sched_extra_t *x = t->x;
                if (x && x->run_now_cnt) {
                        int64_t at = x->run_now[0];
                        if ((err = emit_run(s, t, tid, at, 1, TRIG_RUN_NOW, now, errstr,
                                            errstr_size)))
                                break;
                        memmove(x->run_now, x->run_now + 1,
                                (x->run_now_cnt - 1) * sizeof(*x->run_now));
                        x->run_now_cnt--;
                        if (at > x->run_now_mark)
                                x->run_now_mark = at;
                        tb_metrics_add("taskbus_scheduler_fires_total", trig_labels[TRIG_RUN_NOW], 1);
                        st->fires++;
                        n_rec++;
                        task_mark_dirty(s, slot);
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
                                sched_retry_t r = x->retries[best];
                                if ((err = emit_run(s, t, tid, r.nominal_ms, r.attempt,
                                                    TRIG_RETRY, now, errstr, errstr_size)))
                                        break;
                                x->retries[best] = x->retries[--x->retry_cnt];
                                tb_metrics_add("taskbus_scheduler_fires_total",
                                               trig_labels[TRIG_RETRY], 1);
                                st->fires++;
                                n_rec++;
                                task_mark_dirty(s, slot);
                                continue;
                        }
                }
                if ((t->flags & TF_EXPIRY_PENDING) && t->expires_ms <= now) {
                        tb_time_format(t->expires_ms, when);
                        tb_snprintf(msg, sizeof(msg), "the task expired at %s (expires_at)",
                                    when);
                        if ((err = emit_result(s, t, tid, t->expires_ms, 1, "EXPIRED", msg, now,
                                               errstr, errstr_size)))
                                break;
                        t->flags = (uint8_t)((t->flags & ~TF_EXPIRY_PENDING) | TF_EXPIRED);
                        tb_metrics_add("taskbus_scheduler_skips_total", "reason=\"expired\"", 1);
                        st->skips++;
                        n_rec++;
                        task_mark_dirty(s, slot);
                        continue;
                }
                int64_t n = t->next_nominal;
                if (n == NONE_MS)
                        break;
                if (t->flags & TF_PAUSED) {
                        if (n > now)
                                break;
                        tb_time_format(n, when);
                        tb_snprintf(msg, sizeof(msg), "the task was paused at %s", when);
                        if ((err = emit_result(s, t, tid, n, 1, "SKIPPED_PAUSED", msg, now, errstr,
                                               errstr_size)))
                                break;
                        tb_metrics_add("taskbus_scheduler_skips_total", "reason=\"paused\"", 1);
                        st->skips++;
                } else {
                        int64_t j = task_jitter(t, n);
                        if (n + j > now)
                                break;
                        bool run = true;
                        int trig = TRIG_SCHEDULE;
                        if (is_late(t, n, now)) {
                                st->misfires++;
                                tb_metrics_add("taskbus_scheduler_misfires_total", NULL, 1);
                                trig = TRIG_MISFIRE;
                                if (t->misfire == MISFIRE_SKIP) {
                                        run = false;
                                } else if (t->misfire == MISFIRE_RUN_ONCE) {
                                        /* only the latest missed fire runs */
                                        int64_t nn = task_next_after(t, n);
                                        run = nn == NONE_MS || !is_late(t, nn, now);
                                } else {
                                        int64_t cap = s->conf->sched_misfire_cap;
                                        run = count_late(t, n, now, cap) <= cap;
                                }
                        }
                        if (run) {
                                if ((err = emit_run(s, t, tid, n, 1, trig, now, errstr,
                                                    errstr_size)))
                                        break;
                                tb_metrics_add("taskbus_scheduler_fires_total", trig_labels[trig], 1);
                                if (trig == TRIG_SCHEDULE)
                                        lag_push(s, n + j);
                                st->fires++;
                        } else {
                                tb_time_format(n, when);
                                tb_snprintf(msg, sizeof(msg),
                                            "misfire: the fire at %s was missed (no scheduler "
                                            "owned partition %d in time; misfire policy %s)",
                                            when, (int)t->partition,
                                            t->misfire == MISFIRE_SKIP      ? "skip"
                                            : t->misfire == MISFIRE_RUN_ALL ? "run_all (over "
                                                                              "scheduler.misfire_cap)"
                                                                            : "run_once");
                                if ((err = emit_result(s, t, tid, n, 1, "SKIPPED_MISFIRE", msg,
                                                       now, errstr, errstr_size)))
                                        break;
                                tb_metrics_add("taskbus_scheduler_skips_total",
                                               "reason=\"misfire\"", 1);
                                st->skips++;
                        }
                }
                t->last_nominal = n;
                t->fires++;
                t->next_nominal = task_next_after(t, n);
                task_check_expiry(t);
                n_rec++;
                task_mark_dirty(s, slot);
        }
        *used = n_rec;
        if (err)
                return err;
        int64_t d = task_due(t);
        /* a backlog goes behind everything else that is due */
        if (d != NONE_MS && d <= now && n_rec >= TB_SCHED_TASK_CHUNK)
                tb_timerheap_set(&s->heap, slot, now);
        else
                task_rekey(s, slot);
        return TB_OK;
}

static tb_err_t tick_offsets(tb_sched_t *s, char *errstr, size_t errstr_size) {
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
        bool work = s->dirty_cnt || s->dlq_cnt || s->tomb_cnt ||
                    ((top = tb_timerheap_peek(&s->heap)) && top->due_ms <= now);
        if (!work)
                return TB_OK;
        while (used < room && (top = tb_timerheap_peek(&s->heap)) && top->due_ms <= now) {
                size_t u = 0;
                if ((err = task_process(s, top->id, now, room - used, &u, st, errstr,
                                        errstr_size)))
                        goto fail;
                used += u;
                if (u == 0)
                        task_rekey(s, top->id); /* nothing was due after all */
        }
        st->more = used >= room;
        for (size_t i = 0; i < s->dlq_cnt; i++) {
                sched_dlq_t *d = &s->dlq[i];
                tb_header_t h[2] = {{"error", d->error, strlen(d->error)},
                                    {"status", d->status, strlen(d->status)}};
                if ((err = emit(s, TB_TOPIC_DLQ, d->partition, d->task_id, d->value.data,
                                d->value.len, h, 2, errstr, errstr_size)))
                        goto fail;
                st->dlq++;
        }
        for (size_t i = 0; i < s->tomb_cnt; i++)
                if ((err = emit(s, TB_TOPIC_CHECKPOINTS, s->tombs[i].partition,
                                s->tombs[i].task_id, NULL, 0, NULL, 0, errstr, errstr_size)))
                        goto fail;
        for (size_t i = 0; i < s->dirty_cnt; i++) {
                sched_task_t *t = &s->tasks[s->dirty[i]];
                if (!(t->flags & TF_USED) || (t->flags & TF_TOMB))
                        continue;
                if ((err = emit_checkpoint(s, t, now, errstr, errstr_size)))
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
                if ((err = tick_offsets(s, errstr, errstr_size)) ||
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
                sched_task_t *t = &s->tasks[slot];
                if (!(t->flags & TF_USED))
                        continue;
                t->flags &= (uint8_t)~TF_DIRTY;
                if (t->flags & TF_TOMB)
                        task_destroy(s, slot);
        }
        s->dirty_cnt = 0;
        for (size_t i = 0; i < s->dlq_cnt; i++) {
                free(s->dlq[i].task_id);
                free(s->dlq[i].error);
                tb_buf_free(&s->dlq[i].value);
        }
        s->dlq_cnt = 0;
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

/* ==== the role ================================================================
 *
 * One thread. A consumer group on task-events decides which partitions this
 * process fires; run-results of the same partitions are read by a second,
 * assign-only consumer (cooperative-sticky does not keep partition p of two
 * topics together); checkpoints are read by a third while loading. All
 * positions are committed inside the scheduler's transactions under the
 * group's metadata, so a member that lost the group cannot commit (KIP-447).
 */

#define LOAD_WAIT_MS 90000 /* > the brokers' transaction timeout (60 s) */

typedef struct sched_role {
        tb_ctx_t *ctx;
        const tb_config_t *conf;
        tb_sched_t *s;
        rd_kafka_t *gc, *rc, *ck, *prod;
        pthread_t thr;
        bool thr_started;
        bool *assigned; /* task-events partitions the group gave us */
        int64_t reload_at;
        char instance[200], group[256], txn_id[300];
        char t_ev[256], t_rr[256], t_ck[256];

        /* regions (docs/replication.md): the other regions' copies of
         * task-events, read assign-only for the partitions we own, so that a
         * failover's HOME_MOVED there stops us firing a task moved away */
        rd_kafka_t *rv;
        size_t rcnt;
        char (*t_rev)[300];
        int64_t *rpos;             /* [p * rcnt + region]: next offset, < 0: beginning */
        int64_t *fence_skip_until; /* per region: a fence timed out, skip it until then */
        struct sched_adopt {
                char *tid;
                int64_t ms;
        } *adopt;                  /* moved tasks found while loading the projection */
        size_t adopt_cnt, adopt_cap;
} sched_role_t;

static bool role_stopping(sched_role_t *r) { return atomic_load(&r->ctx->stopping); }

/* The committed offset of \p topic [p] for our group; librdkafka asks with
 * require_stable (read_committed), so this waits while a transaction that
 * carries offsets for it is still open: a zombie's last transaction is
 * settled before we read what it wrote. */
static tb_err_t role_committed(sched_role_t *r, rd_kafka_t *rk, const char *topic, int32_t p,
                               int64_t *off, char *errstr, size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)LOAD_WAIT_MS * 1000;
        rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
        while (!role_stopping(r)) {
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, topic, p);
                e = rd_kafka_committed(rk, l, 10000);
                if (!e)
                        e = l->elems[0].err;
                *off = l->elems[0].offset;
                rd_kafka_topic_partition_list_destroy(l);
                if (!e)
                        return TB_OK;
                if (tb_mono_us() > deadline)
                        break;
                tb_warn(SUB, "committed offset of %s [%d]: %s; retrying", topic, (int)p,
                        rd_kafka_err2str(e));
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                         "committed offset of %s [%d]: %s", topic, (int)p,
                         role_stopping(r) ? "stopping" : rd_kafka_err2str(e));
}

static void role_adopt_later(sched_role_t *r, const char *tid, int64_t ms) {
        if (r->adopt_cnt == r->adopt_cap) {
                size_t nc = r->adopt_cap ? r->adopt_cap * 2 : 64;
                struct sched_adopt *n = realloc(r->adopt, nc * sizeof(*n));
                if (!n)
                        return;
                r->adopt = n;
                r->adopt_cap = nc;
        }
        if ((r->adopt[r->adopt_cnt].tid = strdup(tid)))
                r->adopt[r->adopt_cnt++].ms = ms;
}

static void role_adopt_flush(sched_role_t *r) {
        for (size_t i = 0; i < r->adopt_cnt; i++) {
                tb_sched_task_adopt(r->s, r->adopt[i].tid, r->adopt[i].ms);
                free(r->adopt[i].tid);
        }
        r->adopt_cnt = 0;
}

/* Tasks a failover just moved here: resume each after the last scheduled
 * nominal time its old home fired, as far as its replicated runs tell
 * (docs/replication.md, RPO). Runs before the next tick. */
static void role_adopt_moved(sched_role_t *r) {
        char *tid;
        while ((tid = tb_sched_take_moved(r->s))) {
                int64_t last = NO_LAST;
                char errstr[512];
                for (int attempt = 0; attempt < 3; attempt++) {
                        PGconn *conn = tb_store_acquire_timeout(r->ctx->store, 10000);
                        PGresult *res = NULL;
                        const char *params[] = {tid};
                        tb_err_t err = conn ? tb_store_exec(
                                                      conn, "last nominal of a moved task",
                                                      "SELECT (extract(epoch FROM max(nominal_time)) "
                                                      "* 1000)::bigint FROM runs WHERE task_id = $1 "
                                                      "AND trigger IN ('schedule', 'misfire')",
                                                      1, params, &res, errstr, sizeof(errstr))
                                            : TB_ERR_TIMEOUT;
                        if (conn)
                                tb_store_release(r->ctx->store, conn);
                        if (!err) {
                                if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
                                        last = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
                                PQclear(res);
                                break;
                        }
                        tb_warn(SUB, "task %s moved here: reading its last run: %s", tid,
                                conn ? errstr : "no PostgreSQL connection");
                }
                char when[80] = "(none known: its checkpoint or its creation)";
                if (last != NO_LAST)
                        tb_time_format(last, when);
                tb_info(SUB, "task %s moved to region %s: fires resume after nominal %s", tid,
                        r->conf->region, when);
                tb_sched_task_adopt(r->s, tid, last);
                free(tid);
        }
}

static tb_err_t role_load_pg(sched_role_t *r, int32_t p, int64_t *o_p, char *errstr,
                             size_t errstr_size) {
        char pstr[16];
        tb_err_t err;
        PGresult *res = NULL;
        size_t loaded = 0;
        int64_t now = tb_now_ms();
        tb_snprintf(pstr, sizeof(pstr), "%d", (int)p);
        const char *params[] = {r->t_ev, pstr};
        PGconn *conn = tb_store_acquire_timeout(r->ctx->store, 30000);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "load partition %d: no PostgreSQL connection within 30 s",
                                 (int)p);
        /* one snapshot: the projector's offset and the rows it produced */
        if ((err = tb_store_exec(conn, "begin load", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                                 0, NULL, NULL, errstr, errstr_size)) ||
            (err = tb_store_exec(conn, "read projector offset",
                                 "SELECT next_offset FROM consumer_offsets WHERE "
                                 "consumer = 'projector' AND topic = $1 AND partition = $2::int",
                                 2, params, &res, errstr, errstr_size)))
                goto out;
        *o_p = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        PQclear(res);
        res = NULL;
        /* the copies of other regions' task-events: the projection holds
         * them up to these offsets too */
        for (size_t ri = 0; ri < r->rcnt; ri++)
                r->rpos[(size_t)p * r->rcnt + ri] = RD_KAFKA_OFFSET_BEGINNING;
        if (r->rcnt) {
                if ((err = tb_store_exec(conn, "read projector offsets of the copies",
                                         "SELECT topic, next_offset FROM consumer_offsets WHERE "
                                         "consumer = 'projector' AND partition = $1::int",
                                         1, params + 1, &res, errstr, errstr_size)))
                        goto out;
                for (int i = 0; i < PQntuples(res); i++)
                        for (size_t ri = 0; ri < r->rcnt; ri++)
                                if (!strcmp(PQgetvalue(res, i, 0), r->t_rev[ri]))
                                        r->rpos[(size_t)p * r->rcnt + ri] =
                                                strtoll(PQgetvalue(res, i, 1), NULL, 10);
                PQclear(res);
                res = NULL;
        }
        const char *cparams[] = {pstr, r->conf->region};
        if ((err = tb_store_exec(conn, "declare load cursor",
                                 "DECLARE tb_sched_load NO SCROLL CURSOR FOR SELECT id, "
                                 "version, spec::text, "
                                 "(extract(epoch FROM created_at) * 1000)::bigint, epoch, "
                                 /* a task a failover moved here: where its old home's
                                  * scheduled fires stopped (replicated runs) */
                                 "CASE WHEN epoch > 0 AND home_region = $2 THEN "
                                 "(SELECT (extract(epoch FROM max(r.nominal_time)) * 1000)::bigint "
                                 "FROM runs r WHERE r.task_id = tasks.id AND r.trigger IN "
                                 "('schedule', 'misfire')) END "
                                 "FROM tasks WHERE event_partition = $1::int",
                                 2, cparams, NULL, errstr, errstr_size)))
                goto out;
        for (;;) {
                if ((err = tb_store_exec(conn, "fetch tasks", "FETCH 2000 FROM tb_sched_load", 0,
                                         NULL, &res, errstr, errstr_size)))
                        goto out;
                int n = PQntuples(res);
                for (int i = 0; i < n; i++) {
                        const char *id = PQgetvalue(res, i, 0);
                        json_error_t jerr;
                        json_t *norm = json_loads(PQgetvalue(res, i, 2), 0, &jerr);
                        json_t *spec = norm ? tb_task_to_spec(norm) : NULL;
                        char terr[512];
                        if (!spec ||
                            tb_sched_task_put(r->s, p, id, strtoll(PQgetvalue(res, i, 1), NULL, 10),
                                              strtoll(PQgetvalue(res, i, 3), NULL, 10), spec, now,
                                              terr, sizeof(terr)) != TB_OK)
                                tb_warn(SUB, "task %s (partition %d) is not scheduled: %s", id,
                                        (int)p, spec ? terr : "its stored spec does not parse");
                        else {
                                loaded++;
                                tb_sched_task_set_epoch(r->s, id,
                                                        strtoll(PQgetvalue(res, i, 4), NULL, 10));
                                if (!PQgetisnull(res, i, 5))
                                        role_adopt_later(r, id,
                                                         strtoll(PQgetvalue(res, i, 5), NULL, 10));
                        }
                        json_decref(spec);
                        json_decref(norm);
                }
                PQclear(res);
                res = NULL;
                if (n == 0)
                        break;
        }
        err = tb_store_exec(conn, "end load", "COMMIT", 0, NULL, NULL, errstr, errstr_size);
out:
        PQclear(res);
        tb_store_release(r->ctx->store, conn);
        if (!err)
                tb_debug(SUB, "partition %d: %zu tasks from the projection at offset %" PRId64,
                         (int)p, loaded, *o_p);
        return err;
}

static tb_err_t role_load_checkpoints(sched_role_t *r, int32_t p, char *errstr,
                                      size_t errstr_size) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e =
                rd_kafka_query_watermark_offsets(r->ck, r->t_ck, p, &lo, &hi, 10000);
        if (e)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "checkpoints %s [%d]: watermarks: %s", r->t_ck, (int)p,
                                 rd_kafka_err2str(e));
        if (hi <= lo)
                return TB_OK;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, r->t_ck, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        e = rd_kafka_assign(r->ck, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (e)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "checkpoints %s [%d]: %s",
                                 r->t_ck, (int)p, rd_kafka_err2str(e));
        tb_err_t err = TB_OK;
        size_t n = 0;
        int64_t deadline = tb_mono_us() + (int64_t)LOAD_WAIT_MS * 1000;
        for (;;) {
                if (role_stopping(r) || tb_mono_us() > deadline) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                        "checkpoints %s [%d]: not read to the end within %d s",
                                        r->t_ck, (int)p, LOAD_WAIT_MS / 1000);
                        break;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(r->ck, 200);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        rd_kafka_message_destroy(m);
                        break;
                }
                if (m->err) {
                        tb_warn(SUB, "checkpoints %s [%d]: %s", r->t_ck, (int)p,
                                rd_kafka_message_errstr(m));
                } else if (m->payload) {
                        json_t *v = NULL;
                        char derr[256];
                        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_SCHEDULER_CHECKPOINT,
                                            NULL, &v, derr, sizeof(derr)) == TB_OK) {
                                tb_sched_checkpoint(r->s, v, tb_now_ms(), derr, sizeof(derr));
                                n++;
                        } else {
                                tb_warn(SUB, "checkpoints %s [%d] offset %" PRId64 ": %s",
                                        r->t_ck, (int)p, m->offset, derr);
                        }
                        json_decref(v);
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(r->ck, NULL);
        tb_debug(SUB, "partition %d: %zu checkpoints", (int)p, n);
        return err;
}

static void role_apply_remote(sched_role_t *r, const rd_kafka_message_t *m, char *event_id,
                              size_t id_size) {
        json_t *ev = NULL;
        char err[512];
        if (event_id)
                event_id[0] = '\0';
        if (!m->payload)
                return;
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_TASK_EVENT, NULL, &ev, err,
                            sizeof(err)) != TB_OK) {
                tb_warn(SUB, "%s [%d] offset %" PRId64 ": skipped: %s",
                        rd_kafka_topic_name(m->rkt), (int)m->partition, m->offset, err);
                return;
        }
        if (tb_sched_remote_event(r->s, m->partition, ev, tb_now_ms(), err, sizeof(err)) != TB_OK)
                tb_warn(SUB, "%s [%d] offset %" PRId64 ": %s", rd_kafka_topic_name(m->rkt),
                        (int)m->partition, m->offset, err);
        if (event_id)
                tb_snprintf(event_id, id_size, "%s", jstr(ev, "event_id", ""));
        json_decref(ev);
}

/* The event id of the last event of partition \p p of region \p ri's own
 * task-events, read from that region's Kafka; "" when it is empty.
 * @returns false when the region could not be read within \p ms. */
static bool role_fence_target(sched_role_t *r, size_t ri, const char *bootstrap, int32_t p,
                              int64_t ms, char *out, size_t out_size, int64_t *ts) {
        rd_kafka_t *rk = NULL;
        char errstr[1024], group[300];
        bool found = false;
        tb_buf_t value = {0};
        out[0] = '\0';
        tb_snprintf(group, sizeof(group), "%s.fence", r->group);
        tb_err_t err = tb_repl_reader_new(r->conf, bootstrap, group, &rk, errstr, sizeof(errstr));
        if (!err)
                err = tb_repl_last_record(rk, r->t_ev, p, (int)ms, &found, ts, NULL, &value,
                                          errstr, sizeof(errstr));
        if (rk)
                tb_bus_consumer_destroy(rk, 5000);
        if (err) {
                tb_warn(SUB, "partition %d: region %s's Kafka (%s) cannot be read: %s; its "
                        "copied events are not fenced for 5 min (docs/replication.md)",
                        (int)p, r->conf->repl_remote_regions[ri], bootstrap, errstr);
                tb_buf_free(&value);
                return false;
        }
        if (found) {
                json_t *ev = NULL;
                char derr[256];
                if (tb_serde_decode(value.data, value.len, TB_SCHEMA_TASK_EVENT, NULL, &ev, derr,
                                    sizeof(derr)) == TB_OK)
                        tb_snprintf(out, out_size, "%s", jstr(ev, "event_id", ""));
                json_decref(ev);
        }
        tb_buf_free(&value);
        return true;
}

/*
 * Read partition \p p of each other region's copy of task-events from where
 * the projection left it. The start-up fence: when that region's Kafka is
 * known (replication.region_kafka), read until the copy holds the last
 * event of the region's own partition, waiting for MirrorMaker 2 up to
 * replication.startup_fence, so a region coming back after a failover sees
 * the HOME_MOVED events before it could fire a moved task.
 */
static void role_load_remote(sched_role_t *r, int32_t p) {
        for (size_t ri = 0; ri < r->rcnt && !role_stopping(r); ri++) {
                const char *region = r->conf->repl_remote_regions[ri];
                const char *bs = tb_repl_region_kafka(r->conf, region);
                int64_t fence = r->conf->repl_startup_fence_ms;
                int64_t *pos = &r->rpos[(size_t)p * r->rcnt + ri];
                char target[64] = "", seen_id[64];
                bool fenced = false, seen = false;
                int64_t t0 = tb_mono_us(), target_ts = 0;
                if (bs && fence > 0 && tb_now_ms() >= r->fence_skip_until[ri]) {
                        fenced = role_fence_target(r, ri, bs, p, fence, target, sizeof(target),
                                                   &target_ts);
                        if (!fenced)
                                r->fence_skip_until[ri] = tb_now_ms() + 5 * 60 * 1000;
                }
                if (target[0]) {
                        /* The copy may hold it already, before where the projection
                         * left off: MM2 keeps order and timestamps, so a last record
                         * as recent as the target means the target is in. */
                        bool cf = false;
                        int64_t cts = 0;
                        char lerr[512];
                        if (tb_repl_last_record(r->ck, r->t_rev[ri], p, 10000, &cf, &cts, NULL,
                                                NULL, lerr, sizeof(lerr)) == TB_OK &&
                            cf && cts >= target_ts)
                                seen = true;
                }
                int64_t lo = 0, hi = 0;
                rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(r->ck, r->t_rev[ri], p,
                                                                         &lo, &hi, 10000);
                if ((!target[0] || seen) && (e || hi <= (*pos > lo ? *pos : lo))) {
                        /* nothing to wait for and nothing (yet) to read */
                        if (seen)
                                tb_info(SUB, "partition %d: region %s's copy holds its last "
                                        "event (fenced)", (int)p, region);
                        if (e)
                                tb_warn(SUB, "%s [%d]: %s (run `taskbus admin topics ensure`)",
                                        r->t_rev[ri], (int)p, rd_kafka_err2str(e));
                        continue;
                }
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, r->t_rev[ri], p)->offset =
                        *pos >= 0 ? *pos : RD_KAFKA_OFFSET_BEGINNING;
                e = rd_kafka_assign(r->ck, l);
                rd_kafka_topic_partition_list_destroy(l);
                if (e) {
                        tb_warn(SUB, "%s [%d]: %s", r->t_rev[ri], (int)p, rd_kafka_err2str(e));
                        continue;
                }
                int64_t deadline = t0 + (target[0] && !seen ? fence : LOAD_WAIT_MS) * 1000;
                size_t n = 0;
                while (!role_stopping(r)) {
                        if (tb_mono_us() > deadline) {
                                if (target[0] && !seen)
                                        tb_warn(SUB, "partition %d: this region's copy of region "
                                                "%s's task-events still lacks its last event "
                                                "after %.0f s (is MirrorMaker 2 running?): "
                                                "loading without it",
                                                (int)p, region, (double)fence / 1000.0);
                                r->fence_skip_until[ri] = tb_now_ms() + 5 * 60 * 1000;
                                break;
                        }
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->ck, 200);
                        if (!m)
                                continue;
                        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                                rd_kafka_message_destroy(m);
                                if (!target[0] || seen)
                                        break;
                                continue; /* MirrorMaker 2 has not copied it yet */
                        }
                        if (m->err) {
                                tb_warn(SUB, "%s [%d]: %s", r->t_rev[ri], (int)p,
                                        rd_kafka_message_errstr(m));
                                bool gone = m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                                            m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
                                rd_kafka_message_destroy(m);
                                if (gone && !target[0])
                                        break;
                                continue;
                        }
                        if (m->offset >= *pos) {
                                role_apply_remote(r, m, seen_id, sizeof(seen_id));
                                *pos = m->offset + 1;
                                n++;
                                if (target[0] && (!strcmp(seen_id, target) ||
                                                  rd_kafka_message_timestamp(m, NULL) > target_ts))
                                        seen = true;
                        }
                        rd_kafka_message_destroy(m);
                }
                rd_kafka_assign(r->ck, NULL);
                role_adopt_moved(r);
                tb_info(SUB, "partition %d: %zu event(s) of region %s's copy applied in %.3f s%s",
                        (int)p, n, region, (double)(tb_mono_us() - t0) / 1e6,
                        !bs        ? " (not fenced: no replication.region_kafka for it)"
                        : seen     ? " (fenced: holds the region's last event)"
                        : fenced && !target[0] ? " (fenced: the region's partition is empty)"
                                               : " (NOT fenced)");
        }
}

/* The other regions' copies: the partitions we own, at our positions. */
static void role_rv_sync(sched_role_t *r) {
        if (!r->rcnt)
                return;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                tb_sched_part_t *part = tb_sched_part(r->s, p);
                if (!part->owned)
                        continue;
                for (size_t ri = 0; ri < r->rcnt; ri++) {
                        int64_t pos = r->rpos[(size_t)p * r->rcnt + ri];
                        rd_kafka_topic_partition_list_add(l, r->t_rev[ri], p)->offset =
                                pos >= 0 ? pos : RD_KAFKA_OFFSET_BEGINNING;
                }
        }
        rd_kafka_resp_err_t e = rd_kafka_assign(r->rv, l);
        if (e)
                tb_error(SUB, "assignment of the other regions' copies: %s", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
}

static void role_on_remote(sched_role_t *r, rd_kafka_message_t *m) {
        const char *tname = rd_kafka_topic_name(m->rkt);
        tb_sched_part_t *part = tb_sched_part(r->s, m->partition);
        if (!part || !part->owned)
                return;
        for (size_t ri = 0; ri < r->rcnt; ri++) {
                if (strcmp(tname, r->t_rev[ri]))
                        continue;
                int64_t *pos = &r->rpos[(size_t)m->partition * r->rcnt + ri];
                if (*pos >= 0 && m->offset < *pos)
                        return;
                *pos = m->offset + 1;
                role_apply_remote(r, m, NULL, 0);
                return;
        }
}

/* Load partition \p p: where to tail task-events from goes to *\p start. */
static tb_err_t role_load(sched_role_t *r, int32_t p, int64_t *start, char *errstr,
                          size_t errstr_size) {
        int64_t committed = -1, o_p = 0;
        tb_err_t err;
        tb_sched_drop_partition(r->s, p);
        if ((err = role_committed(r, r->gc, r->t_ev, p, &committed, errstr, errstr_size)) ||
            (err = role_load_pg(r, p, &o_p, errstr, errstr_size)) ||
            (err = role_load_checkpoints(r, p, errstr, errstr_size))) {
                for (size_t i = 0; i < r->adopt_cnt; i++)
                        free(r->adopt[i].tid);
                r->adopt_cnt = 0;
                tb_sched_drop_partition(r->s, p);
                return err;
        }
        role_adopt_flush(r);
        role_load_remote(r, p);
        /* Events between our last commit and the projection's offset are in
         * the projection already, but a RUN_REQUESTED among them may not have
         * been emitted: replay them (only run-now requests are taken). */
        *start = committed >= 0 && committed < o_p ? committed : o_p;
        tb_sched_part_t *part = tb_sched_part(r->s, p);
        part->owned = true;
        part->load_off = o_p;
        part->ev_pos = *start;
        part->rr_pos = -1;
        tb_info(SUB, "partition %d loaded: tailing task-events from offset %" PRId64
                " (projection at %" PRId64 "), %zu tasks in this process",
                (int)p, *start, o_p, tb_sched_task_count(r->s));
        return TB_OK;
}

/* run-results: the partitions we own, at our positions (fresh: committed). */
static void role_rc_sync(sched_role_t *r, bool fresh) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                tb_sched_part_t *part = tb_sched_part(r->s, p);
                if (!part->owned)
                        continue;
                rd_kafka_topic_partition_list_add(l, r->t_rr, p)->offset =
                        !fresh && part->rr_pos >= 0 ? part->rr_pos : RD_KAFKA_OFFSET_INVALID;
        }
        rd_kafka_resp_err_t e = rd_kafka_assign(r->rc, l);
        if (e)
                tb_error(SUB, "run-results assignment: %s", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
}

static void role_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *parts, void *opaque) {
        sched_role_t *r = opaque;
        char errstr[1024];
        rd_kafka_error_t *e = NULL;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
                for (int i = 0; i < l->cnt; i++) {
                        int32_t p = l->elems[i].partition;
                        int64_t start = RD_KAFKA_OFFSET_INVALID;
                        if (p < 0 || p >= (int32_t)r->conf->topic_partitions)
                                continue;
                        r->assigned[p] = true;
                        if (role_load(r, p, &start, errstr, sizeof(errstr)) != TB_OK) {
                                tb_error(SUB, "partition %d: %s; retrying in 1 s", (int)p, errstr);
                                r->reload_at = tb_now_ms() + 1000;
                        }
                        l->elems[i].offset = start;
                }
                e = rd_kafka_incremental_assign(rk, l);
                rd_kafka_topic_partition_list_destroy(l);
                role_rc_sync(r, false);
                role_rv_sync(r);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                bool lost = rd_kafka_assignment_lost(rk);
                for (int i = 0; i < parts->cnt; i++) {
                        int32_t p = parts->elems[i].partition;
                        if (p < 0 || p >= (int32_t)r->conf->topic_partitions)
                                continue;
                        r->assigned[p] = false;
                        tb_sched_drop_partition(r->s, p);
                        tb_info(SUB, "partition %d %s", (int)p, lost ? "lost" : "revoked");
                }
                e = rd_kafka_incremental_unassign(rk, parts);
                role_rc_sync(r, false);
                role_rv_sync(r);
        } else {
                tb_error(SUB, "rebalance error: %s", rd_kafka_err2str(err));
        }
        if (e) {
                tb_error(SUB, "incremental (un)assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        tb_metrics_set("taskbus_scheduler_tasks_loaded", NULL, (double)tb_sched_task_count(r->s));
}

/* After a failed transaction: drop everything, load it again, rewind. */
static void role_reload(sched_role_t *r) {
        char errstr[1024];
        r->reload_at = 0;
        rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                if (!r->assigned[p])
                        continue;
                int64_t start;
                if (role_load(r, p, &start, errstr, sizeof(errstr)) != TB_OK) {
                        tb_error(SUB, "partition %d: %s; retrying in 1 s", (int)p, errstr);
                        r->reload_at = tb_now_ms() + 1000;
                        continue;
                }
                rd_kafka_topic_partition_list_add(seek, r->t_ev, p)->offset = start;
        }
        if (seek->cnt) {
                rd_kafka_error_t *e = rd_kafka_seek_partitions(r->gc, seek, 10000);
                if (e) {
                        tb_error(SUB, "seek task-events: %s", rd_kafka_error_string(e));
                        rd_kafka_error_destroy(e);
                        r->reload_at = tb_now_ms() + 1000;
                }
                for (int i = 0; i < seek->cnt; i++)
                        if (seek->elems[i].err) {
                                tb_error(SUB, "seek task-events [%d]: %s",
                                         (int)seek->elems[i].partition,
                                         rd_kafka_err2str(seek->elems[i].err));
                                r->reload_at = tb_now_ms() + 1000;
                        }
        }
        rd_kafka_topic_partition_list_destroy(seek);
        role_rc_sync(r, true);
        role_rv_sync(r);
}

static void role_on_event(sched_role_t *r, rd_kafka_message_t *m) {
        tb_sched_part_t *part = tb_sched_part(r->s, m->partition);
        if (!part || !part->owned || m->offset < part->ev_pos)
                return;
        part->ev_pos = m->offset + 1;
        if (!m->payload)
                return;
        json_t *ev = NULL;
        char err[512];
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_TASK_EVENT, NULL, &ev, err,
                            sizeof(err)) != TB_OK) {
                tb_warn(SUB, "task-events [%d] offset %" PRId64 ": skipped: %s",
                        (int)m->partition, m->offset, err);
                return;
        }
        if (tb_sched_event(r->s, m->partition, ev, m->offset < part->load_off, tb_now_ms(), err,
                           sizeof(err)) != TB_OK)
                tb_warn(SUB, "task-events [%d] offset %" PRId64 ": %s", (int)m->partition,
                        m->offset, err);
        json_decref(ev);
        role_adopt_moved(r);
}

static void role_on_result(sched_role_t *r, rd_kafka_message_t *m) {
        tb_sched_part_t *part = tb_sched_part(r->s, m->partition);
        if (!part || !part->owned || (part->rr_pos >= 0 && m->offset < part->rr_pos))
                return;
        part->rr_pos = m->offset + 1;
        if (!m->payload)
                return;
        json_t *res = NULL;
        char err[512];
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_RUN_RESULT, NULL, &res, err,
                            sizeof(err)) != TB_OK) {
                tb_warn(SUB, "run-results [%d] offset %" PRId64 ": skipped: %s",
                        (int)m->partition, m->offset, err);
                return;
        }
        if (tb_sched_result(r->s, m->partition, res, tb_now_ms(), err, sizeof(err)) != TB_OK)
                tb_warn(SUB, "run-results [%d] offset %" PRId64 ": %s", (int)m->partition,
                        m->offset, err);
        json_decref(res);
}

static const char *role_kafka_prop(const tb_config_t *conf, const char *key) {
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, key))
                        return conf->kafka[i].value;
        return NULL;
}

/* An assign-only consumer (never joins a group). */
static tb_err_t role_plain_consumer(sched_role_t *r, const char *group, bool eof,
                                    rd_kafka_t **out, char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        char rkerr[512];
        tb_err_t err = tb_bus_conf_new(r->conf, &c, errstr, errstr_size);
        if (err)
                return err;
        const char *kv[][2] = {
                {"group.id", group},
                {"isolation.level", "read_committed"},
                {"enable.auto.commit", "false"},
                {"enable.auto.offset.store", "false"},
                {"auto.offset.reset", "earliest"},
                {"enable.partition.eof", eof ? "true" : "false"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(kv); i++)
                if (rd_kafka_conf_set(c, kv[i][0], kv[i][1], rkerr, sizeof(rkerr)) !=
                    RD_KAFKA_CONF_OK) {
                        rd_kafka_conf_destroy(c);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "kafka %s: %s",
                                         kv[i][0], rkerr);
                }
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, rkerr, sizeof(rkerr));
        if (!rk) {
                rd_kafka_conf_destroy(c);
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "kafka consumer: %s", rkerr);
        }
        rd_kafka_poll_set_consumer(rk);
        *out = rk;
        return TB_OK;
}

static tb_err_t role_producer(sched_role_t *r, char *errstr, size_t errstr_size) {
        if (r->prod) {
                rd_kafka_purge(r->prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                rd_kafka_destroy(r->prod);
                r->prod = NULL;
        }
        tb_err_t err = tb_bus_producer_new(r->conf, r->txn_id, &r->prod, errstr, errstr_size);
        tb_sched_set_kafka(r->s, r->prod, r->gc);
        return err;
}

/* The group member on task-events (static: group.instance.id). */
static tb_err_t role_group_consumer(sched_role_t *r, char *errstr, size_t errstr_size) {
        tb_consumer_opts_t o = {
                .group_id = r->group,
                .instance_id = r->instance,
                .read_committed = true,
                .auto_commit = false,
                .offset_reset = "earliest",
                .rebalance_cb = role_rebalance,
                .opaque = r,
        };
        tb_topic_t topics[] = {TB_TOPIC_EVENTS};
        return tb_bus_consumer_new(r->conf, &o, topics, 1, &r->gc, errstr, errstr_size);
}

/* A fatal error ends the group consumer for good: it never rebalances
 * again. The usual one is FENCED_INSTANCE_ID after a broker outage: the
 * session timed out, librdkafka rejoined under a new member id and the
 * broker fenced the old one. Left alone, this process would own nothing
 * while the group kept its static id, so nobody would fire its partitions
 * until it restarts. Drop everything and join again with the same
 * group.instance.id; the new assignment loads with misfire catch-up. */
static void role_regroup(sched_role_t *r) {
        char fbuf[512], errstr[1024];
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(r->gc, fbuf, sizeof(fbuf));
        tb_error(SUB, "task-events consumer: fatal %s: %s; dropping every partition and joining "
                 "group %s again",
                 rd_kafka_err2name(ferr), fbuf, r->group);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                r->assigned[p] = false;
                tb_sched_drop_partition(r->s, p);
        }
        r->reload_at = 0;
        tb_sched_set_kafka(r->s, r->prod, NULL);
        tb_bus_consumer_destroy(r->gc, 5000);
        r->gc = NULL;
        role_rc_sync(r, false);
        role_rv_sync(r);
        while (!role_stopping(r) && role_group_consumer(r, errstr, sizeof(errstr)) != TB_OK) {
                tb_error(SUB, "joining group %s again: %s; retrying in 1 s", r->group, errstr);
                for (int i = 0; i < 10 && !role_stopping(r); i++)
                        rd_kafka_poll(r->prod, 100); /* waits 100 ms */
        }
        tb_sched_set_kafka(r->s, r->prod, r->gc);
        tb_metrics_set("taskbus_scheduler_tasks_loaded", NULL, (double)tb_sched_task_count(r->s));
}

static tb_err_t role_connect(sched_role_t *r, char *errstr, size_t errstr_size) {
        tb_err_t err;
        char ckgroup[300];
        tb_snprintf(ckgroup, sizeof(ckgroup), "%s.checkpoint-loader", r->group);
        /* the producer first: its init_transactions fences our previous
         * incarnation (same transactional.id) before we read anything */
        if ((err = role_producer(r, errstr, errstr_size)) ||
            (err = role_plain_consumer(r, r->group, false, &r->rc, errstr, errstr_size)) ||
            (err = role_plain_consumer(r, ckgroup, true, &r->ck, errstr, errstr_size)) ||
            (err = role_group_consumer(r, errstr, errstr_size)))
                return err;
        if (r->rcnt && (err = role_plain_consumer(r, r->group, false, &r->rv, errstr, errstr_size)))
                return err;
        tb_sched_set_kafka(r->s, r->prod, r->gc);
        return TB_OK;
}

static void role_drain(sched_role_t *r, rd_kafka_t *rk, int first_timeout_ms, size_t max,
                       bool results) {
        for (size_t i = 0; i < max && !role_stopping(r); i++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, i == 0 ? first_timeout_ms : 0);
                if (!m)
                        return;
                if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_warn(SUB, "%s: %s", results ? "run-results" : "task-events",
                                        rd_kafka_message_errstr(m));
                } else if (results) {
                        role_on_result(r, m);
                } else {
                        role_on_event(r, m);
                }
                rd_kafka_message_destroy(m);
        }
}

static void *role_main(void *arg) {
        sched_role_t *r = arg;
        char errstr[1024];
        int64_t tick = r->conf->sched_tick_ms > 0 ? r->conf->sched_tick_ms : 50;
        size_t batch = r->conf->sched_max_batch > 0 ? (size_t)r->conf->sched_max_batch : 500;
        while (!role_stopping(r)) {
                int64_t now = tb_now_ms(), due = tb_sched_next_due(r->s);
                int64_t wait = tick;
                if (due - now < wait)
                        wait = due - now < 0 ? 0 : due - now;
                role_drain(r, r->gc, (int)wait, 5000, false);
                if (rd_kafka_fatal_error(r->gc, NULL, 0)) {
                        role_regroup(r);
                        continue;
                }
                role_drain(r, r->rc, 0, batch, true);
                for (size_t i = 0; r->rv && i < 5000 && !role_stopping(r); i++) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rv, 0);
                        if (!m)
                                break;
                        if (!m->err)
                                role_on_remote(r, m);
                        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_debug(SUB, "other regions' copies: %s",
                                         rd_kafka_message_errstr(m));
                        rd_kafka_message_destroy(m);
                }
                if (r->reload_at && tb_now_ms() >= r->reload_at)
                        role_reload(r);
                tb_sched_tick_stats_t st;
                tb_err_t err;
                do {
                        err = tb_sched_tick(r->s, tb_now_ms(), &st, errstr, sizeof(errstr));
                } while (!err && st.more && !role_stopping(r));
                if (err) {
                        tb_error(SUB, "transaction failed: %s; reloading the partitions", errstr);
                        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++)
                                if (r->assigned[p])
                                        tb_sched_drop_partition(r->s, p);
                        if (err == TB_ERR_FENCED || rd_kafka_fatal_error(r->prod, NULL, 0)) {
                                while (!role_stopping(r) &&
                                       role_producer(r, errstr, sizeof(errstr)) != TB_OK) {
                                        tb_error(SUB, "rebuilding the producer: %s", errstr);
                                        role_drain(r, r->gc, 1000, 1000, false);
                                }
                        }
                        r->reload_at = tb_now_ms() + 1000;
                }
                tb_metrics_set("taskbus_scheduler_tasks_loaded", NULL,
                               (double)tb_sched_task_count(r->s));
        }
        return NULL;
}

static void role_free(sched_role_t *r) {
        if (!r)
                return;
        if (r->gc) {
                tb_bus_consumer_destroy(r->gc, 10000);
        }
        if (r->rc) {
                tb_bus_consumer_destroy(r->rc, 10000);
        }
        if (r->ck) {
                tb_bus_consumer_destroy(r->ck, 10000);
        }
        if (r->rv) {
                tb_bus_consumer_destroy(r->rv, 10000);
        }
        for (size_t i = 0; i < r->adopt_cnt; i++)
                free(r->adopt[i].tid);
        free(r->adopt);
        free(r->t_rev);
        free(r->rpos);
        free(r->fence_skip_until);
        if (r->prod) {
                rd_kafka_purge(r->prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                rd_kafka_destroy(r->prod);
        }
        tb_sched_destroy(r->s);
        free(r->assigned);
        free(r);
}

static tb_err_t role_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t err;
        sched_role_t *r = calloc(1, sizeof(*r));
        if (!r)
                return TB_ERR_NOMEM;
        r->ctx = ctx;
        r->conf = ctx->conf;
        if ((err = tb_sched_new(ctx->conf, ctx->instance, &r->s, errstr, errstr_size)))
                goto fail;
        r->assigned = calloc((size_t)ctx->conf->topic_partitions, sizeof(*r->assigned));
        if (!r->assigned) {
                err = TB_ERR_NOMEM;
                goto fail;
        }
        const char *inst = role_kafka_prop(ctx->conf, "group.instance.id");
        tb_snprintf(r->instance, sizeof(r->instance), "%s", inst && *inst ? inst : ctx->instance);
        tb_snprintf(r->group, sizeof(r->group), "%sscheduler", ctx->conf->topic_prefix);
        tb_snprintf(r->txn_id, sizeof(r->txn_id), "%sscheduler.%s", ctx->conf->topic_prefix,
                    r->instance);
        tb_topic_name(ctx->conf, TB_TOPIC_EVENTS, r->t_ev, sizeof(r->t_ev));
        tb_topic_name(ctx->conf, TB_TOPIC_RESULTS, r->t_rr, sizeof(r->t_rr));
        tb_topic_name(ctx->conf, TB_TOPIC_CHECKPOINTS, r->t_ck, sizeof(r->t_ck));
        r->rcnt = ctx->conf->repl_remote_region_cnt;
        r->t_rev = calloc(r->rcnt + 1, sizeof(*r->t_rev));
        r->rpos = calloc((size_t)ctx->conf->topic_partitions * (r->rcnt + 1), sizeof(*r->rpos));
        r->fence_skip_until = calloc(r->rcnt + 1, sizeof(*r->fence_skip_until));
        if (!r->t_rev || !r->rpos || !r->fence_skip_until) {
                err = TB_ERR_NOMEM;
                goto fail;
        }
        for (size_t ri = 0; ri < r->rcnt; ri++)
                tb_repl_topic_name(ctx->conf, ctx->conf->repl_remote_regions[ri], TB_TOPIC_EVENTS,
                                   r->t_rev[ri], sizeof(r->t_rev[ri]));
        if ((err = role_connect(r, errstr, errstr_size)))
                goto fail;
        if (pthread_create(&r->thr, NULL, role_main, r)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "scheduler: cannot start its thread");
                goto fail;
        }
        r->thr_started = true;
        tb_info(SUB, "member %s of group %s (transactional.id %s, region %s)", r->instance,
                r->group, r->txn_id, ctx->conf->region);
        *state = r;
        return TB_OK;
fail:
        role_free(r);
        return err;
}

static void role_stop(void *state) {
        sched_role_t *r = state;
        if (!r)
                return;
        if (r->thr_started)
                pthread_join(r->thr, NULL);
        role_free(r);
}

const tb_role_t tb_role_scheduler = {
        .name = "scheduler",
        .description = "fires due tasks: runs + checkpoints in fenced Kafka transactions",
        .start = role_start,
        .stop = role_stop,
};
