/**
 * @file scheduler/engine_internal.h
 * @brief What the engine's files share and nobody else sees: the task
 *        record, the engine's state and the helpers that cross its files.
 *        The role and the tests use engine.h.
 */
#ifndef TB_SCHED_ENGINE_INTERNAL_H
#define TB_SCHED_ENGINE_INTERNAL_H

#include "scheduler/engine.h"
#include "schedule/schedule.h"
#include "schedule/timerheap.h"
#include "task/task.h"

#define TB_SCHED_LOG "scheduler"

/* ---- task records ----------------------------------------------------------- */

enum {
        TB_SCHED_TF_USED = 1 << 0,
        TB_SCHED_TF_UUID = 1 << 1,           /* id.uuid holds the id */
        TB_SCHED_TF_PAUSED = 1 << 2,
        TB_SCHED_TF_LOCAL = 1 << 3,          /* home_region is this region: fire it */
        TB_SCHED_TF_EXPIRED = 1 << 4,        /* the EXPIRED record was written */
        TB_SCHED_TF_EXPIRY_PENDING = 1 << 5, /* expires_at ended it: write EXPIRED when due */
        TB_SCHED_TF_DIRTY = 1 << 6,          /* its checkpoint must be written */
        TB_SCHED_TF_TOMB = 1 << 7,           /* deleted: slot waits for its tombstone */
};

/** tb_sched_task_t.kind of a task with parents (beside tb_schedule_kind_t's):
 *  its schedule never fires it, the dependency poll does (scheduler/after.c). */
#define TB_SCHED_KIND_AFTER 4

enum { TB_SCHED_MISFIRE_RUN_ONCE = 0, TB_SCHED_MISFIRE_SKIP, TB_SCHED_MISFIRE_RUN_ALL };
enum {
        TB_SCHED_TRIG_SCHEDULE = 0,
        TB_SCHED_TRIG_RUN_NOW,
        TB_SCHED_TRIG_RETRY,
        TB_SCHED_TRIG_MISFIRE
};

/** A parsed cron shared by every task with the same zone and expression. */
typedef struct tb_sched_cron {
        struct tb_sched_cron *next;
        char *key; /* zone '\n' expression */
        tb_cron_t *cron;
        const tb_tz_t *tz;
} tb_sched_cron_t;

typedef struct tb_sched_retry {
        int64_t nominal_ms;
        int64_t due_ms;
        int32_t attempt;
        json_t *params; /* the retried run's RunResult.params (NULL: the defaults) */
} tb_sched_retry_t;

/** A task's calendar rules and the decision of its next fire (calendars.c). */
typedef struct tb_sched_trules {
        char group[TB_TASK_GROUP_MAX + 1];
        size_t n;
        tb_task_calendar_t rules[TB_TASK_CALENDARS_MAX];
        bool decided;                 /* dec is next_nominal's at s->cal_gen */
        bool waiting;                 /* a calendar it names is unknown: polled first */
        uint64_t set_poll;            /* s->cal_polls when the rules were read */
        int64_t dec_nominal;
        uint64_t dec_gen;
        tb_calendar_decision_t dec;
} tb_sched_trules_t;

/** The rare parts of a task: pending retries and run-now requests. */
typedef struct tb_sched_extra {
        tb_sched_trules_t *cal; /* NULL: no calendar rules */
        tb_sched_retry_t *retries;
        uint32_t retry_cnt;
        uint32_t run_now_cnt;
        int64_t *run_now;     /* pending RUN_REQUESTED nominal times, ascending */
        json_t **run_now_params; /* their TaskEvent.run_params (NULL: the defaults) */
        int64_t run_now_mark; /* latest run-now nominal emitted */
} tb_sched_extra_t;

typedef struct tb_sched_task {
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
        int64_t last_nominal; /* TB_SCHED_NO_LAST: nothing emitted yet */
        int64_t next_nominal; /* TB_SCHED_NEVER: no further fire */
        int64_t fires;
        tb_sched_cron_t *cron;
        uint8_t *snap; /* RunSnapshot Avro bytes, then the default params map's */
        tb_sched_extra_t *x;
        uint32_t snap_len;
        uint32_t snap_body; /* the RunSnapshot's length in snap (the rest: params) */
        int16_t partition;
        uint16_t max_attempts;
        uint8_t kind, dst_gap, dst_overlap, misfire;
        uint8_t flags;
} tb_sched_task_t;

typedef struct tb_sched_dlq {
        char *task_id;
        int32_t partition;
        tb_buf_t value;
        char status[24];
        char *error;
} tb_sched_dlq_t;

/** A RunResult for a range of fires not run that was closed outside a tick
 *  (a paused task resumed, changed or deleted): the next tick writes it. */
typedef struct tb_sched_pending {
        char *task_id;
        int32_t partition;
        tb_buf_t value;
} tb_sched_pending_t;

typedef struct tb_sched_tomb {
        char *task_id;
        int32_t partition;
} tb_sched_tomb_t;

struct tb_sched {
        const tb_config_t *conf;
        char host[256];
        int32_t part_cnt;
        tb_sched_part_t *parts;

        tb_sched_task_t *tasks;
        uint32_t task_cap, task_hwm;
        uint32_t *free_slots;
        size_t free_cnt, free_cap;
        size_t task_cnt;

        uint32_t *map; /* slot + 1; 0 = empty */
        size_t map_cap, map_cnt;

        tb_sched_cron_t **crons;
        size_t cron_cap, cron_cnt;

        tb_timerheap_t heap;

        uint32_t *dirty;
        size_t dirty_cnt, dirty_cap;
        tb_sched_dlq_t *dlq;
        size_t dlq_cnt, dlq_cap;
        tb_sched_tomb_t *tombs;
        size_t tomb_cnt, tomb_cap;
        tb_sched_pending_t *pend; /* ranges closed since the last tick (ranges.c) */
        size_t pend_cnt, pend_cap;

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

        tb_sched_calendar_t *cals; /* every group's calendars (calendars.c) */
        size_t cal_cnt;
        bool cal_loaded;           /* false until the first tb_sched_calendars_set() */
        uint64_t cal_gen;          /* raised by each change: decisions are redone */
        uint64_t cal_polls;        /* polls done (tb_sched_calendars_polled()) */
        bool cal_want;             /* a task names a calendar unknown here: poll now */
};


/* ---- engine.c: ids, the id -> slot table, crons ----------------------------- */

/** Canonical lower-case UUID text -> 16 bytes (only that form round-trips). */
bool tb_sched_uuid_parse(const char *s, uint8_t out[16]);
/** @returns the task's id as text: its own string, or formatted into \p buf. */
const char *tb_sched_task_idstr(const tb_sched_task_t *t, char buf[37]);
/** Double the id -> slot table (rehashing every entry). */
tb_err_t tb_sched_map_grow(tb_sched_t *s);
/** Find \p id; *\p at receives its table index (or the free one to use). */
bool tb_sched_map_find(const tb_sched_t *s, const char *id, size_t *at);
/** @returns \p id's slot, or UINT32_MAX when it is not loaded. */
uint32_t tb_sched_slot_of(const tb_sched_t *s, const char *id);
/** A slot for a new task: a released one, or the next (growing the array). */
tb_err_t tb_sched_slot_alloc(tb_sched_t *s, uint32_t *out);
/** Give \p slot back for reuse (its fields already freed). */
void tb_sched_slot_release(tb_sched_t *s, uint32_t slot);
/** The shared parsed cron of (\p zone, \p expr), parsed on first use; owned
 *  by the engine. @returns the parser's error (it names the field). */
tb_err_t tb_sched_cron_get(tb_sched_t *s, const char *zone, const char *expr,
                           tb_sched_cron_t **out, char *errstr, size_t errstr_size);

/* ---- engine.c: schedule math and the timer heap ----------------------------- */

/** The record's schedule as a tb_schedule_t (borrowing its cron). */
void tb_sched_task_schedule(const tb_sched_task_t *t, tb_schedule_t *sc);
/** @returns the first nominal fire after \p after, or TB_SCHED_NEVER. */
int64_t tb_sched_task_next_after(const tb_sched_task_t *t, int64_t after);
/** @returns fire \p nominal's jitter (deterministic per task and fire). */
int64_t tb_sched_task_jitter(const tb_sched_task_t *t, int64_t nominal);
/** @returns where the next fire is searched from: the last emitted nominal,
 *  or just before the creation. */
int64_t tb_sched_task_from(const tb_sched_task_t *t);
/** After the schedule ran out: flag an EXPIRED record due if expires_at ended it. */
void tb_sched_task_check_expiry(tb_sched_task_t *t);
/** @returns when the task next needs the tick (run-now, retry, expiry, fire),
 *  or TB_SCHED_NEVER. */
int64_t tb_sched_task_due(const tb_sched_task_t *t);
/** Put the task's timer where tb_sched_task_due() says (or take it out). */
void tb_sched_task_rekey(tb_sched_t *s, uint32_t slot);
/** Queue the task's checkpoint for the next tick (once). */
void tb_sched_task_mark_dirty(tb_sched_t *s, uint32_t slot);
/** @returns the task's rare parts, allocated on first use; NULL: no memory. */
tb_sched_extra_t *tb_sched_task_extra(tb_sched_task_t *t);
/** Free the rare parts; NULL allowed. */
void tb_sched_extra_free(tb_sched_extra_t *x);

/* ---- engine.c: records' life ------------------------------------------------ */

/** Remember that an event made task \p tid local (see tb_sched_take_moved()). */
void tb_sched_moved_push(tb_sched_t *s, const char *tid);
/** Forget the task in \p slot: table entry, timer, fields, slot. */
void tb_sched_task_destroy(tb_sched_t *s, uint32_t slot);

/* ---- records.c: the records' bytes ------------------------------------------ */

/** Append the RunRequest of fire (\p nominal, \p attempt) with trigger \p trig
 *  to \p out: a few varints, then the task's snapshot bytes, then \p params
 *  (an object of strings; NULL or empty: the task's default values). */
void tb_sched_run_encode(const tb_sched_t *s, const tb_sched_task_t *t, const char *tid,
                         int64_t nominal, int attempt, int trig, int64_t emitted,
                         const json_t *params, tb_buf_t *out);
/** Append a RunResult for the fires not run from \p nominal to \p last
 *  (TB_SCHED_NO_LAST: one fire, no range), \p count of them, to \p out. */
tb_err_t tb_sched_range_encode(const tb_sched_t *s, const char *tid, int64_t nominal, int64_t last,
                               int64_t count, const char *status, const char *error, int64_t now,
                               tb_buf_t *out, char *errstr, size_t errstr_size);
/** Append a RunResult for a fire not run (\p status, \p error) to \p out. */
tb_err_t tb_sched_result_encode(const tb_sched_t *s, const char *tid, int64_t nominal, int attempt,
                                const char *status, const char *error, int64_t now, tb_buf_t *out,
                                char *errstr, size_t errstr_size);
/** Append task \p t's SchedulerCheckpoint at \p now to \p out (read back by
 *  tb_sched_checkpoint()). */
tb_err_t tb_sched_checkpoint_encode(const tb_sched_task_t *t, int64_t now, tb_buf_t *out,
                                    char *errstr, size_t errstr_size);
/** @returns JSON member \p k of \p o as an integer, or \p dflt. */
int64_t tb_sched_jlong(const json_t *o, const char *k, int64_t dflt);
/** @returns JSON member \p k of \p o as a string (borrowed), or \p dflt. */
const char *tb_sched_jstr(const json_t *o, const char *k, const char *dflt);

/* ---- ranges.c: one record per range of fires not run ----------------------- */

/**
 * @brief Count the fires of \p t from \p first (one of its fires) to \p upto
 *        inclusive, at most \p max; *\p last receives the last one counted.
 *        Closed form for "every" schedules, one step per fire otherwise.
 * @returns the count (0: none, *\p last untouched).
 */
int64_t tb_sched_range_span(const tb_sched_task_t *t, int64_t first, int64_t upto, int64_t max,
                            int64_t *last);
/** @returns when a paused task needs the tick for its fires: where its
 *  schedule ends (a one-off's instant, end_at, expires_at), TB_SCHED_NEVER
 *  for an endless one: a paused task's fires are not armed one by one. */
int64_t tb_sched_range_pause_end(const tb_sched_task_t *t);
/**
 * @brief Account for the fires a paused task \p slot did not run up to \p upto:
 *        one SKIPPED_PAUSED record per range (split at TB_SCHED_RANGE_MAX),
 *        queued for the next tick with the task's checkpoint. No-op for a
 *        task that is not paused here.
 * @returns the records queued.
 */
size_t tb_sched_range_close_paused(tb_sched_t *s, uint32_t slot, int64_t upto);
/**
 * @brief For late fire \p n that the misfire policy does not run: how many
 *        consecutive fires from \p n are skipped with it (at most
 *        TB_SCHED_RANGE_MAX); *\p last receives the last of them.
 */
int64_t tb_sched_range_misfire(const tb_sched_t *s, const tb_sched_task_t *t, int64_t n,
                               int64_t now, int64_t *last);
/** Forget the queued records of partition \p p (\p p < 0: all of them). */
void tb_sched_range_drop(tb_sched_t *s, int32_t p);
/** @returns "the fire at <t>" or "<n> fires from <t1> to <t2>" in \p buf. */
const char *tb_sched_range_describe(int64_t first, int64_t last, int64_t count, char *buf,
                                    size_t size);

/* ---- calendars.c: the tasks' calendar rules ------------------------------- */

/** Read \p spec's calendar rules into \p t's extra part (removing them when
 *  it has none). @returns TB_ERR_INVALID naming the field, TB_ERR_NOMEM. */
tb_err_t tb_sched_cal_task_set(const tb_sched_t *s, tb_sched_task_t *t, const json_t *spec,
                               char *errstr, size_t errstr_size);
/**
 * @brief The calendars' decision for \p t's next fire, made on first use and
 *        kept until the fire or the calendars change.
 * @returns NULL when the task has no rules, or while the calendars were never
 *          loaded (its fires then wait: tb_sched_task_due()).
 */
const tb_calendar_decision_t *tb_sched_cal_decision(tb_sched_t *s, tb_sched_task_t *t);
/** @returns whether the fire of \p t at \p nominal would run under its
 *  calendars (no duplicate check), with *\p fire_ms its instant. */
bool tb_sched_cal_runs(const tb_sched_t *s, const tb_sched_task_t *t, int64_t nominal,
                       int64_t *fire_ms);
/** @returns whether \p t has calendar rules. */
bool tb_sched_cal_has(const tb_sched_task_t *t);
/** Free the engine's calendars. */
void tb_sched_cal_free_all(tb_sched_t *s);

#endif /* TB_SCHED_ENGINE_INTERNAL_H */
