/**
 * @file test_scheduler_engine.c
 * @brief The scheduler engine (core/roles/scheduler/engine.h) without Kafka: records go
 *        to a sink and are decoded with the Avro serde. Covers interval
 *        fires, misfire policies, pause, run-now, retries and the DLQ,
 *        schedule updates, expiry, and the hand-encoded RunRequest.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "config/config.h"
#include "scheduler/engine.h"
#include "serde/serde.h"

#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */
#define TID "6f1c2e4a-1b2c-4d3e-8f90-a1b2c3d4e5f6"

typedef struct rec {
        tb_topic_t topic;
        json_t *v; /* NULL: tombstone */
        char hdr_status[32];
        char hdr_error[256];
} rec_t;

static rec_t recs[4096];
static size_t nrec;
static tb_config_t *conf;
static tb_sched_t *s;

static void sink(void *opaque, tb_topic_t topic, int32_t partition, const char *key,
                 const void *value, size_t len, const tb_header_t *h, size_t hcnt) {
        (void)opaque;
        (void)partition;
        (void)key;
        cr_assert_lt(nrec, 4096);
        rec_t *r = &recs[nrec++];
        memset(r, 0, sizeof(*r));
        r->topic = topic;
        if (value) {
                char err[256];
                cr_assert_eq(tb_serde_decode(value, len, TB_SCHEMA_ANY, NULL, &r->v, err,
                                             sizeof(err)),
                             TB_OK, "%s", err);
        }
        for (size_t i = 0; i < hcnt; i++) {
                if (!strcmp(h[i].name, "status"))
                        snprintf(r->hdr_status, sizeof(r->hdr_status), "%.*s", (int)h[i].len,
                                 (const char *)h[i].value);
                if (!strcmp(h[i].name, "error"))
                        snprintf(r->hdr_error, sizeof(r->hdr_error), "%.*s", (int)h[i].len,
                                 (const char *)h[i].value);
        }
}

static void clear(void) {
        for (size_t i = 0; i < nrec; i++)
                json_decref(recs[i].v);
        nrec = 0;
}

static void setup(void) {
        char err[256];
        conf = tb_config_defaults();
        cr_assert_not_null(conf);
        cr_assert_eq(tb_sched_new(conf, "test-host", &s, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s, sink, NULL);
}

static void teardown(void) {
        clear();
        tb_sched_destroy(s);
        tb_config_destroy(conf);
}

/* A TaskSpec (Avro shape) with an "every" schedule. */
static json_t *spec_every(int64_t every_ms, const char *misfire, bool paused) {
        return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:I, s:n, s:n, s:n, s:I}, s:I, s:s,"
                         " s:{s:i, s:I, s:I}, s:s, s:b, s:s}",
                         "name", "t", "script", "echo hi", "security_group", "ops", "user_id",
                         "alice", "schedule", "kind", "EVERY", "every_ms", (json_int_t)every_ms,
                         "once_at", "cron", "start_at", "jitter_ms", (json_int_t)0, "expiry_ms",
                         (json_int_t)60000, "executor", "shell", "retries", "max_attempts", 3,
                         "backoff_ms", (json_int_t)1000, "backoff_max_ms", (json_int_t)10000,
                         "misfire", misfire, "paused", paused, "home_region", "");
}

static void put(json_t *spec, int64_t version, int64_t now) {
        char err[512];
        cr_assert_eq(tb_sched_task_put(s, 0, TID, version, T0, spec, now, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(spec);
}

static void tick(int64_t now) {
        tb_sched_tick_stats_t st;
        char err[256];
        do
                cr_assert_eq(tb_sched_tick(s, now, &st, err, sizeof(err)), TB_OK, "%s", err);
        while (st.more);
}

static size_t count(tb_topic_t topic, const char *field, const char *value) {
        size_t n = 0;
        for (size_t i = 0; i < nrec; i++) {
                if (recs[i].topic != topic || !recs[i].v)
                        continue;
                const char *v = json_string_value(json_object_get(recs[i].v, field));
                if (!field || (v && !strcmp(v, value)))
                        n++;
        }
        return n;
}

/* Checkpoint of \p last nominal, as if a scheduler had run before. */
static void checkpoint(int64_t last, int64_t now) {
        char err[256];
        json_t *c = json_pack("{s:s, s:I, s:I, s:n, s:I, s:I, s:I}", "task_id", TID,
                              "task_version", (json_int_t)1, "last_nominal_time",
                              (json_int_t)last, "next_fire_time", "fires", (json_int_t)1, "epoch",
                              (json_int_t)0, "at", (json_int_t)now);
        cr_assert_eq(tb_sched_checkpoint(s, c, now, err, sizeof(err)), TB_OK, "%s", err);
        json_decref(c);
}

TestSuite(sched_engine, .init = setup, .fini = teardown);

Test(sched_engine, every_second_consecutive_nominals) {
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 3500);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 4);
        for (int i = 0; i < 4; i++) {
                json_t *v = recs[i].v;
                cr_assert_eq(recs[i].topic, TB_TOPIC_RUNS);
                int64_t nominal = json_integer_value(json_object_get(v, "nominal_time"));
                cr_assert_eq(nominal, T0 + 1000 * i);
                char rid[33];
                tb_sched_run_id(TID, nominal, 1, rid);
                cr_assert_str_eq(json_string_value(json_object_get(v, "run_id")), rid);
                cr_assert_str_eq(json_string_value(json_object_get(v, "trigger")), "SCHEDULE");
                cr_assert_str_eq(json_string_value(json_object_get(v, "task_id")), TID);
                json_t *snap = json_object_get(v, "snapshot");
                cr_assert_str_eq(json_string_value(json_object_get(snap, "script")), "echo hi");
                cr_assert_eq(json_integer_value(json_object_get(snap, "max_attempts")), 3);
        }
        /* one checkpoint, after the fires, naming the last nominal */
        cr_assert_eq(count(TB_TOPIC_CHECKPOINTS, NULL, NULL), 1);
        cr_assert_eq(json_integer_value(json_object_get(recs[4].v, "last_nominal_time")),
                     T0 + 3000);
        clear();
        tick(T0 + 3600); /* nothing new is due */
        cr_assert_eq(nrec, 0);
        cr_assert_eq(tb_sched_next_due(s), T0 + 4000);
}

Test(sched_engine, run_id_is_deterministic) {
        char a[33], b[33], c[33];
        tb_sched_run_id(TID, T0, 1, a);
        tb_sched_run_id(TID, T0, 1, b);
        tb_sched_run_id(TID, T0, 2, c);
        cr_assert_str_eq(a, b);
        cr_assert_str_neq(a, c);
        cr_assert_eq(strlen(a), 32);
}

Test(sched_engine, misfire_run_once) {
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        checkpoint(T0, T0 + 60500);
        tick(T0 + 60500);
        /* 60 fires after T0; those older than 5 s (T0+1 s .. T0+55 s) missed */
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "SKIPPED_MISFIRE"), 54);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 1);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 5);
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RUNS &&
                    !strcmp(json_string_value(json_object_get(recs[i].v, "trigger")), "MISFIRE"))
                        cr_assert_eq(json_integer_value(json_object_get(recs[i].v, "nominal_time")),
                                     T0 + 55000, "the catch-up is the latest missed fire");
}

Test(sched_engine, misfire_skip) {
        put(spec_every(1000, "SKIP", false), 1, T0);
        checkpoint(T0, T0 + 60500);
        tick(T0 + 60500);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "SKIPPED_MISFIRE"), 55);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 5);
}

Test(sched_engine, misfire_run_all_capped) {
        conf->sched_misfire_cap = 10;
        put(spec_every(1000, "RUN_ALL", false), 1, T0);
        checkpoint(T0, T0 + 60500);
        tick(T0 + 60500);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "SKIPPED_MISFIRE"), 45);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 10);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 5);
}

Test(sched_engine, paused_fires_are_recorded) {
        put(spec_every(1000, "RUN_ONCE", true), 1, T0);
        tick(T0 + 2500);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "SKIPPED_PAUSED"), 3);
        clear();
        put(spec_every(1000, "RUN_ONCE", false), 2, T0 + 2600); /* resumed */
        tick(T0 + 3100);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 1);
        cr_assert_eq(json_integer_value(json_object_get(recs[0].v, "nominal_time")), T0 + 3000);
}

Test(sched_engine, update_does_not_repeat_or_backfill) {
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 2100); /* T0, +1 s, +2 s */
        clear();
        put(spec_every(10000, "RUN_ONCE", false), 2, T0 + 2200);
        int64_t next, last;
        cr_assert(tb_sched_task_info(s, TID, &next, &last));
        cr_assert_eq(last, T0 + 2000);
        cr_assert_eq(next, T0 + 10000, "first 10 s fire after max(last, now)");
        tick(T0 + 9999);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        tick(T0 + 10000);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 1);
}

Test(sched_engine, run_now_event_and_dedupe) {
        char err[256];
        put(spec_every(3600000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 10); /* the k = 0 fire at T0 */
        clear();
        json_t *spec = spec_every(3600000, "RUN_ONCE", false);
        json_t *ev = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:o}", "event_id", "e2", "task_id",
                               TID, "version", (json_int_t)2, "type", "RUN_REQUESTED", "at",
                               (json_int_t)(T0 + 5000), "created_at", (json_int_t)T0, "task",
                               spec);
        cr_assert_eq(tb_sched_event(s, 0, ev, false, T0 + 5001, err, sizeof(err)), TB_OK, "%s", err);
        tick(T0 + 5002);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RUN_NOW"), 1);
        cr_assert_eq(json_integer_value(json_object_get(recs[0].v, "nominal_time")), T0 + 5000);
        clear();
        /* the same event again (a replay): no second run */
        cr_assert_eq(tb_sched_event(s, 0, ev, true, T0 + 6000, err, sizeof(err)), TB_OK);
        tick(T0 + 6001);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        int64_t next;
        cr_assert(tb_sched_task_info(s, TID, &next, NULL));
        cr_assert_eq(next, T0 + 3600000, "run now does not move the schedule");
        json_decref(ev);
}

static json_t *result(const char *status, int attempt, int64_t at) {
        char rid[33];
        tb_sched_run_id(TID, T0, attempt, rid);
        return json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:I}", "run_id", rid, "task_id", TID,
                         "nominal_time", (json_int_t)T0, "attempt", attempt, "status", status,
                         "error", "exit status 3", "at", (json_int_t)at);
}

Test(sched_engine, retries_then_dlq) {
        char err[256];
        put(spec_every(3600000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 10);
        clear();
        json_t *r1 = result("FAILED", 1, T0 + 100);
        cr_assert_eq(tb_sched_result(s, 0, r1, T0 + 101, err, sizeof(err)), TB_OK);
        tick(T0 + 102); /* the pending retry is checkpointed */
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        cr_assert_eq(count(TB_TOPIC_CHECKPOINTS, NULL, NULL), 1);
        cr_assert_eq(json_array_size(json_object_get(recs[0].v, "retries")), 1);
        clear();
        tick(T0 + 1099);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0, "backoff 1 s not over");
        tick(T0 + 1100);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RETRY"), 1);
        cr_assert_eq(json_integer_value(json_object_get(recs[0].v, "attempt")), 2);
        cr_assert_eq(json_integer_value(json_object_get(recs[0].v, "nominal_time")), T0);
        clear();
        /* attempt 2 fails: backoff doubles */
        json_t *r2 = result("TIMED_OUT", 2, T0 + 2000);
        cr_assert_eq(tb_sched_result(s, 0, r2, T0 + 2001, err, sizeof(err)), TB_OK);
        tick(T0 + 3999);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        tick(T0 + 4000);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RETRY"), 1);
        clear();
        /* the last attempt fails: runs-dlq with the error */
        json_t *r3 = result("FAILED", 3, T0 + 5000);
        cr_assert_eq(tb_sched_result(s, 0, r3, T0 + 5001, err, sizeof(err)), TB_OK);
        tick(T0 + 5002);
        cr_assert_eq(count(TB_TOPIC_DLQ, NULL, NULL), 1);
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_DLQ) {
                        cr_assert_str_eq(recs[i].hdr_status, "FAILED");
                        cr_assert_str_eq(recs[i].hdr_error, "exit status 3");
                        cr_assert_eq(json_integer_value(json_object_get(recs[i].v, "attempt")), 3);
                }
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        json_decref(r1);
        json_decref(r2);
        json_decref(r3);
}

Test(sched_engine, expires_at_records_expired_once) {
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        json_object_set_new(spec, "expires_at", json_integer(T0 + 2500));
        put(spec, 1, T0);
        tick(T0 + 2400);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 3);
        clear();
        tick(T0 + 3000);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "EXPIRED"), 1);
        clear();
        tick(T0 + 10000);
        cr_assert_eq(nrec, 0);
        cr_assert_eq(tb_sched_next_due(s), INT64_MAX);
}

Test(sched_engine, delete_writes_tombstone) {
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        cr_assert(tb_sched_task_remove(s, TID, true));
        tick(T0 + 5000);
        cr_assert_eq(nrec, 1);
        cr_assert_eq(recs[0].topic, TB_TOPIC_CHECKPOINTS);
        cr_assert_null(recs[0].v);
        cr_assert_eq(tb_sched_task_count(s), 0);
}

Test(sched_engine, other_region_is_tracked_not_fired) {
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        json_object_set_new(spec, "home_region", json_string("mars"));
        put(spec, 1, T0);
        tick(T0 + 5000);
        cr_assert_eq(nrec, 0);
        cr_assert_eq(tb_sched_task_count(s), 1);
}

Test(sched_engine, bad_spec_is_refused_with_field) {
        char err[512];
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        json_object_set_new(json_object_get(spec, "schedule"), "kind", json_string("WEEKLY"));
        cr_assert_eq(tb_sched_task_put(s, 0, TID, 1, T0, spec, T0, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "schedule.kind"), "%s", err);
        json_decref(spec);
        spec = spec_every(1000, "RUN_ONCE", false);
        json_object_set_new(json_object_get(spec, "schedule"), "kind", json_string("CRON"));
        json_object_set_new(json_object_get(spec, "schedule"), "cron", json_string("0 25 * * *"));
        cr_assert_eq(tb_sched_task_put(s, 0, TID, 1, T0, spec, T0, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "hour"), "%s", err);
        json_decref(spec);
}
