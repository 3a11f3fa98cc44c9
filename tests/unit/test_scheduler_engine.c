/**
 * @file test_scheduler_engine.c
 * @brief The scheduler engine (core/roles/scheduler/engine.h) without Kafka: records go
 *        to a sink and are decoded with the Avro serde. Covers interval
 *        fires, misfire policies and their threshold, pause, run-now,
 *        retries (which results, backoff and its cap) and the DLQ, schedule
 *        updates, expiry, checkpoints read back by another engine, dropping
 *        a partition, and the hand-encoded RunRequest.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
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

static int64_t jint(const json_t *v, const char *k) {
        const json_t *x = json_object_get(v, k);
        return json_is_integer(x) ? (int64_t)json_integer_value(x) : -1;
}

/* The one RunResult of \p status (asserts there is exactly one: a range). */
static const json_t *one_range(const char *status) {
        const json_t *got = NULL;
        for (size_t i = 0; i < nrec; i++) {
                if (recs[i].topic != TB_TOPIC_RESULTS || !recs[i].v ||
                    strcmp(json_string_value(json_object_get(recs[i].v, "status")), status))
                        continue;
                cr_assert_null(got, "more than one %s record: not one per range", status);
                got = recs[i].v;
        }
        cr_assert_not_null(got, "no %s record", status);
        return got;
}

/* Assert the range record of \p status: fires \p first .. \p last, \p n of them. */
static void assert_range(const char *status, int64_t first, int64_t last, int64_t n) {
        const json_t *r = one_range(status);
        char rid[33];
        tb_sched_run_id(TID, first, 1, rid);
        cr_assert_eq(jint(r, "nominal_time"), first, "first %lld, want %lld",
                     (long long)jint(r, "nominal_time"), (long long)first);
        if (n > 1)
                cr_assert_eq(jint(r, "last_nominal_time"), last, "last %lld, want %lld",
                             (long long)jint(r, "last_nominal_time"), (long long)last);
        else
                cr_assert(json_is_null(json_object_get(r, "last_nominal_time")));
        cr_assert_eq(jint(r, "occurrences"), n, "occurrences %lld, want %lld",
                     (long long)jint(r, "occurrences"), (long long)n);
        cr_assert_str_eq(json_string_value(json_object_get(r, "run_id")), rid);
}

/* The occurrences of the first RunResult (a misfire range). */
static int64_t one_of_first_range_occurrences(void) {
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RESULTS)
                        return jint(recs[i].v, "occurrences");
        return 0;
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
        /* 60 fires after T0; those older than 5 s (T0+1 s .. T0+55 s) missed:
         * all but the latest are one range */
        assert_range("SKIPPED_MISFIRE", T0 + 1000, T0 + 54000, 54);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 1);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 5);
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RUNS &&
                    !strcmp(json_string_value(json_object_get(recs[i].v, "trigger")), "MISFIRE"))
                        cr_assert_eq(json_integer_value(json_object_get(recs[i].v, "nominal_time")),
                                     T0 + 55000, "the catch-up is the latest missed fire");
}

/* A one-shot whose instant is a little before its CREATED event (the skew
 * validation allows, or a command delayed by a broker failover after the api
 * checked it) still fires: its instant, not its creation, is where it starts. */
Test(sched_engine, a_once_task_created_just_after_its_instant_fires) {
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        json_t *sc = json_object_get(spec, "schedule");
        json_object_set_new(sc, "kind", json_string("ONCE"));
        json_object_set_new(sc, "every_ms", json_null());
        json_object_set_new(sc, "once_at", json_integer(T0 - 700));
        put(spec, 1, T0);
        tick(T0 + 10);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 1, "the one-shot did not fire");
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RUNS)
                        cr_assert_eq(jint(recs[i].v, "nominal_time"), T0 - 700);
        clear();
        tick(T0 + 60000);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0, "fired twice");
}

/* The same rule on a hostile event: an instant at the bottom of int64 is
 * refused or never fires, without an overflow (UBSan halts the test on one). */
Test(sched_engine, a_once_task_at_int64_min_neither_overflows_nor_fires) {
        char err[512];
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        json_t *sc = json_object_get(spec, "schedule");
        json_object_set_new(sc, "kind", json_string("ONCE"));
        json_object_set_new(sc, "every_ms", json_null());
        json_object_set_new(sc, "once_at", json_integer(INT64_MIN));
        (void)tb_sched_task_put(s, 0, TID, 1, T0, spec, T0, err, sizeof(err));
        json_decref(spec);
        tick(T0 + 10);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0, "an impossible instant fired");
}

Test(sched_engine, misfire_skip) {
        put(spec_every(1000, "SKIP", false), 1, T0);
        checkpoint(T0, T0 + 60500);
        tick(T0 + 60500);
        assert_range("SKIPPED_MISFIRE", T0 + 1000, T0 + 55000, 55);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 5);
}

Test(sched_engine, misfire_run_all_capped) {
        conf->sched_misfire_cap = 10;
        put(spec_every(1000, "RUN_ALL", false), 1, T0);
        checkpoint(T0, T0 + 60500);
        tick(T0 + 60500);
        assert_range("SKIPPED_MISFIRE", T0 + 1000, T0 + 45000, 45);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 10);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 5);
}

Test(sched_engine, paused_fires_are_recorded) {
        put(spec_every(1000, "RUN_ONCE", true), 1, T0);
        tick(T0 + 2500);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        /* not armed while paused: nothing per fire */
        cr_assert_eq(count(TB_TOPIC_RESULTS, NULL, NULL), 0);
        cr_assert_eq(tb_sched_next_due(s), INT64_MAX, "a paused endless task has no timer");
        clear();
        put(spec_every(1000, "RUN_ONCE", false), 2, T0 + 2600); /* resumed */
        tick(T0 + 3100);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 1);
        cr_assert_eq(json_integer_value(json_object_get(recs[0].v, "nominal_time")), T0 + 3000);
        /* the 3 paused fires T0, +1 s, +2 s: one record */
        assert_range("SKIPPED_PAUSED", T0, T0 + 2000, 3);
        cr_assert(strstr(json_string_value(json_object_get(one_range("SKIPPED_PAUSED"), "error")),
                         "3 fires from 2026-01-01T00:00:00"));
}

Test(sched_engine, a_day_paused_is_one_record_counted_without_a_step_per_fire) {
        put(spec_every(1000, "RUN_ONCE", true), 1, T0);
        for (int64_t t = T0; t < T0 + 86400000; t += 3600000)
                tick(t); /* the hours go by: no record, no work */
        cr_assert_eq(nrec, 0);
        int64_t t0 = tb_mono_us();
        put(spec_every(1000, "RUN_ONCE", false), 2, T0 + 86400000 + 500);
        cr_log_info("a day paused (86,401 fires) closed in %lld us",
                    (long long)(tb_mono_us() - t0));
        tick(T0 + 86400000 + 600);
        assert_range("SKIPPED_PAUSED", T0, T0 + 86400000, 86401);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        cr_assert_eq(count(TB_TOPIC_CHECKPOINTS, NULL, NULL), 1);
        int64_t next, last;
        cr_assert(tb_sched_task_info(s, TID, &next, &last));
        cr_assert_eq(last, T0 + 86400000, "the checkpoint moves past the range");
        cr_assert_eq(next, T0 + 86401000);
}

Test(sched_engine, a_paused_range_longer_than_the_cap_is_split) {
        put(spec_every(1000, "RUN_ONCE", true), 1, T0);
        int64_t n = TB_SCHED_RANGE_MAX + 10;
        put(spec_every(1000, "RUN_ONCE", false), 2, T0 + (n - 1) * 1000 + 500);
        tick(T0 + (n - 1) * 1000 + 600);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "SKIPPED_PAUSED"), 2);
        int64_t total = 0, expect_first = T0;
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RESULTS) {
                        cr_assert_eq(jint(recs[i].v, "nominal_time"), expect_first,
                                     "the ranges follow each other");
                        total += jint(recs[i].v, "occurrences");
                        expect_first = (json_is_integer(json_object_get(recs[i].v,
                                                                        "last_nominal_time"))
                                                ? jint(recs[i].v, "last_nominal_time")
                                                : jint(recs[i].v, "nominal_time")) +
                                       1000;
                }
        cr_assert_eq(total, n);
}

Test(sched_engine, a_paused_cron_task_counts_its_fires_at_resume) {
        json_t *spec = spec_every(1000, "RUN_ONCE", true);
        json_t *sc = json_object_get(spec, "schedule");
        json_object_set_new(sc, "kind", json_string("CRON"));
        json_object_set_new(sc, "cron", json_string("*/5 * * * *"));
        json_object_set_new(sc, "timezone", json_string("UTC"));
        json_object_set_new(sc, "every_ms", json_null());
        json_t *resumed = json_deep_copy(spec);
        json_object_set_new(resumed, "paused", json_false());
        put(spec, 1, T0);
        /* a week of 5-minute fires: 7 * 288 = 2016 from T0 (a fire) on */
        int64_t week = INT64_C(7) * 86400000;
        int64_t t0 = tb_mono_us();
        put(resumed, 2, T0 + week - 1);
        int64_t us = tb_mono_us() - t0;
        tick(T0 + week);
        assert_range("SKIPPED_PAUSED", T0, T0 + week - 300000, 2016);
        cr_log_info("counted 2016 cron fires at resume in %lld us", (long long)us);
}

Test(sched_engine, deleting_a_paused_task_records_its_range) {
        char err[512];
        put(spec_every(1000, "RUN_ONCE", true), 1, T0);
        json_t *ev = json_pack("{s:s, s:s, s:I, s:I}", "type", "DELETED", "task_id", TID,
                               "version", (json_int_t)2, "at", (json_int_t)(T0 + 9500));
        cr_assert_eq(tb_sched_event(s, 0, ev, false, T0 + 9500, err, sizeof(err)), TB_OK, "%s",
                     err);
        json_decref(ev);
        tick(T0 + 9600);
        assert_range("SKIPPED_PAUSED", T0, T0 + 9000, 10);
        size_t tombs = 0;
        for (size_t i = 0; i < nrec; i++)
                tombs += recs[i].topic == TB_TOPIC_CHECKPOINTS && !recs[i].v;
        cr_assert_eq(tombs, 1, "the checkpoint's tombstone goes with it");
        cr_assert_eq(tb_sched_task_count(s), 0);
}

Test(sched_engine, a_paused_task_whose_schedule_ends_closes_its_range_there) {
        json_t *spec = spec_every(1000, "RUN_ONCE", true);
        json_object_set_new(spec, "expires_at", json_integer(T0 + 4500));
        put(spec, 1, T0);
        cr_assert_eq(tb_sched_next_due(s), T0 + 4500, "armed at its end only");
        tick(T0 + 4000);
        cr_assert_eq(nrec, 0);
        tick(T0 + 4600);
        assert_range("SKIPPED_PAUSED", T0, T0 + 4000, 5);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "status", "EXPIRED"), 1);
        clear();
        tick(T0 + 100000);
        cr_assert_eq(nrec, 0);
}

Test(sched_engine, a_restart_in_the_middle_of_a_pause_still_makes_one_range) {
        /* the first owner fired T0 .. T0+2 s, then the task was paused */
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 2100);
        put(spec_every(1000, "RUN_ONCE", true), 2, T0 + 2200);
        tick(T0 + 30000);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 3);
        cr_assert_eq(count(TB_TOPIC_RESULTS, NULL, NULL), 0);
        /* a new owner loads the paused task and the checkpoint at T0+30 s */
        tb_sched_destroy(s);
        clear();
        char err[256];
        cr_assert_eq(tb_sched_new(conf, "test-host", &s, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s, sink, NULL);
        put(spec_every(1000, "RUN_ONCE", true), 2, T0 + 30000);
        checkpoint(T0 + 2000, T0 + 30000);
        tick(T0 + 40000);
        cr_assert_eq(nrec, 0, "still paused: nothing");
        put(spec_every(1000, "RUN_ONCE", false), 3, T0 + 60200); /* resumed */
        tick(T0 + 60300);
        assert_range("SKIPPED_PAUSED", T0 + 3000, T0 + 60000, 58);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        tick(T0 + 61100);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 1, "fires again after the range");
}

Test(sched_engine, misfire_ranges_with_jitter_account_for_every_fire_once) {
        json_t *spec = spec_every(1000, "SKIP", false);
        json_object_set_new(json_object_get(spec, "schedule"), "jitter_ms", json_integer(3000));
        put(spec, 1, T0);
        checkpoint(T0, T0 + 60500);
        for (int64_t t = T0 + 60500; t <= T0 + 70000; t += 100)
                tick(t);
        /* every nominal time from T0+1 s to T0+65 s: one run or inside one range */
        size_t ranges = 0;
        for (int64_t n = T0 + 1000; n <= T0 + 65000; n += 1000) {
                size_t hits = 0;
                for (size_t i = 0; i < nrec; i++) {
                        const json_t *v = recs[i].v;
                        if (!v || recs[i].topic == TB_TOPIC_CHECKPOINTS)
                                continue;
                        int64_t first = jint(v, "nominal_time");
                        int64_t last = recs[i].topic == TB_TOPIC_RESULTS &&
                                                       jint(v, "last_nominal_time") >= 0
                                               ? jint(v, "last_nominal_time")
                                               : first;
                        hits += n >= first && n <= last;
                }
                cr_assert_eq(hits, 1, "nominal +%lld ms: %zu records", (long long)(n - T0), hits);
        }
        for (size_t i = 0; i < nrec; i++)
                ranges += recs[i].topic == TB_TOPIC_RESULTS;
        cr_assert_leq(ranges, 4, "%zu skip records: one per range, not one per fire", ranges);
        cr_assert_geq(one_of_first_range_occurrences(), 50);
}

Test(sched_engine, a_day_of_downtime_under_skip_is_one_record) {
        put(spec_every(1000, "SKIP", false), 1, T0);
        checkpoint(T0, T0 + 86400500);
        int64_t t0 = tb_mono_us();
        tick(T0 + 86400500);
        int64_t us = tb_mono_us() - t0;
        /* late: T0+1 s .. T0+86395 s; on time: the last 5 */
        assert_range("SKIPPED_MISFIRE", T0 + 1000, T0 + 86395000, 86395);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 5);
        cr_log_info("a day of downtime (86,395 missed fires) closed in %lld us", (long long)us);
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

/* ---- through the records: checkpoints, the misfire threshold, retries ---- */

/* The last checkpoint record the engine wrote (borrowed), or NULL. */
static json_t *last_checkpoint(void) {
        for (size_t i = nrec; i-- > 0;)
                if (recs[i].topic == TB_TOPIC_CHECKPOINTS)
                        return recs[i].v;
        return NULL;
}

/* "run_id/trigger" of each RunRequest recorded so far, one a line, in order. */
static void run_ids(char *out, size_t size) {
        size_t n = 0;
        out[0] = '\0';
        for (size_t i = 0; i < nrec && n < size; i++)
                if (recs[i].topic == TB_TOPIC_RUNS)
                        n += (size_t)snprintf(
                                out + n, size - n, "%s/%s\n",
                                json_string_value(json_object_get(recs[i].v, "run_id")),
                                json_string_value(json_object_get(recs[i].v, "trigger")));
}

Test(sched_engine, checkpoint_round_trip_resumes_the_same_fires) {
        char err[256], before[1024], after[1024];
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 2100); /* T0, +1 s, +2 s */
        /* the fire at T0 failed */
        json_t *r1 = result("FAILED", 1, T0 + 2200);
        cr_assert_eq(tb_sched_result(s, 0, r1, T0 + 2201, err, sizeof(err)), TB_OK, "%s", err);
        json_decref(r1);
        clear();
        tick(T0 + 2300); /* nothing due: the checkpoint of the pending retry */
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        json_t *ck = json_incref(last_checkpoint());
        cr_assert_not_null(ck);
        cr_assert_eq(json_integer_value(json_object_get(ck, "last_nominal_time")), T0 + 2000);
        cr_assert_eq(json_integer_value(json_object_get(ck, "next_fire_time")), T0 + 3000);
        cr_assert_eq(json_integer_value(json_object_get(ck, "fires")), 3);
        cr_assert_eq(json_array_size(json_object_get(ck, "retries")), 1);

        /* another engine (a new owner of the partition) loads the task and
         * this checkpoint: it resumes exactly where the first one stopped */
        tb_sched_t *s2 = NULL;
        cr_assert_eq(tb_sched_new(conf, "other-host", &s2, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s2, sink, NULL);
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        cr_assert_eq(tb_sched_task_put(s2, 0, TID, 1, T0, spec, T0 + 2400, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(spec);
        cr_assert_eq(tb_sched_checkpoint(s2, ck, T0 + 2400, err, sizeof(err)), TB_OK, "%s", err);
        int64_t next, last;
        cr_assert(tb_sched_task_info(s2, TID, &next, &last));
        cr_assert_eq(last, T0 + 2000);
        cr_assert_eq(next, T0 + 3000);
        cr_assert_eq(tb_sched_next_due(s2), T0 + 3000, "the fire at +3 s is due before the retry");

        clear();
        tick(T0 + 3300); /* the first engine: +3 s and the retry of T0 (due at +3.2 s) */
        run_ids(before, sizeof(before));
        clear();
        tb_sched_tick_stats_t st;
        do
                cr_assert_eq(tb_sched_tick(s2, T0 + 3300, &st, err, sizeof(err)), TB_OK, "%s", err);
        while (st.more);
        run_ids(after, sizeof(after));
        cr_assert_str_eq(after, before, "the reloaded engine emits the same runs");
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 1);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RETRY"), 1);
        char rid[33];
        tb_sched_run_id(TID, T0, 2, rid);
        cr_assert(strstr(after, rid), "the retry is attempt 2 of the fire at T0: %s", after);
        json_decref(ck);
        tb_sched_destroy(s2);
}

Test(sched_engine, checkpoint_carries_the_run_now_mark_across_owners) {
        char err[256];
        put(spec_every(3600000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 10);
        json_t *spec = spec_every(3600000, "RUN_ONCE", false);
        json_t *ev = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:o}", "event_id", "e2", "task_id",
                               TID, "version", (json_int_t)2, "type", "RUN_REQUESTED", "at",
                               (json_int_t)(T0 + 5000), "created_at", (json_int_t)T0, "task", spec);
        cr_assert_eq(tb_sched_event(s, 0, ev, false, T0 + 5001, err, sizeof(err)), TB_OK, "%s",
                     err);
        clear();
        tick(T0 + 5002);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RUN_NOW"), 1);
        json_t *ck = last_checkpoint();
        cr_assert_not_null(ck);
        cr_assert_eq(json_integer_value(json_object_get(ck, "run_now_mark")), T0 + 5000);

        /* the new owner replays the event from its last committed offset: the
         * checkpoint's mark says that run-now was emitted already */
        tb_sched_t *s2 = NULL;
        cr_assert_eq(tb_sched_new(conf, "other-host", &s2, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s2, sink, NULL);
        spec = spec_every(3600000, "RUN_ONCE", false);
        cr_assert_eq(tb_sched_task_put(s2, 0, TID, 2, T0, spec, T0 + 6000, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(spec);
        cr_assert_eq(tb_sched_checkpoint(s2, ck, T0 + 6000, err, sizeof(err)), TB_OK, "%s", err);
        clear();
        cr_assert_eq(tb_sched_event(s2, 0, ev, true, T0 + 6000, err, sizeof(err)), TB_OK, "%s",
                     err);
        tb_sched_tick_stats_t st;
        cr_assert_eq(tb_sched_tick(s2, T0 + 6001, &st, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0, "no second run of the same request");
        /* a later request still fires */
        json_object_set_new(ev, "at", json_integer(T0 + 7000));
        cr_assert_eq(tb_sched_event(s2, 0, ev, true, T0 + 7001, err, sizeof(err)), TB_OK, "%s",
                     err);
        cr_assert_eq(tb_sched_tick(s2, T0 + 7002, &st, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RUN_NOW"), 1);
        json_decref(ev);
        tb_sched_destroy(s2);
}

Test(sched_engine, misfire_threshold_is_exclusive) {
        /* the fire at T0 (k = 0) found exactly TB_SCHED_MISFIRE_THRESHOLD_MS
         * late is on time; one millisecond more and it is a misfire */
        put(spec_every(3600000, "RUN_ONCE", false), 1, T0);
        tick(T0 + TB_SCHED_MISFIRE_THRESHOLD_MS);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 1);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 0);
        clear();
        cr_assert(tb_sched_task_remove(s, TID, false));
        put(spec_every(3600000, "RUN_ONCE", false), 1, T0);
        tb_sched_tick_stats_t st;
        char err[256];
        cr_assert_eq(
                tb_sched_tick(s, T0 + TB_SCHED_MISFIRE_THRESHOLD_MS + 1, &st, err, sizeof(err)),
                TB_OK, "%s", err);
        cr_assert_eq(st.misfires, 1);
        cr_assert_eq(st.fires, 1);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 1, "RUN_ONCE runs the latest");
}

Test(sched_engine, misfire_run_all_under_the_cap_runs_every_missed_fire) {
        put(spec_every(1000, "RUN_ALL", false), 1, T0);
        checkpoint(T0, T0 + 9500);
        tick(T0 + 9500);
        /* +1 s .. +4 s are more than 5 s late, +5 s .. +9 s are not */
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "MISFIRE"), 4);
        cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "SCHEDULE"), 5);
        cr_assert_eq(count(TB_TOPIC_RESULTS, NULL, NULL), 0);
}

Test(sched_engine, misfire_skip_names_the_policy) {
        put(spec_every(1000, "SKIP", false), 1, T0);
        checkpoint(T0, T0 + 7500);
        tick(T0 + 7500);
        assert_range("SKIPPED_MISFIRE", T0 + 1000, T0 + 2000, 2); /* +1 s, +2 s */
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RESULTS) {
                        const char *e = json_string_value(json_object_get(recs[i].v, "error"));
                        cr_assert(e && strstr(e, "misfire policy skip"), "%s", e ? e : "(null)");
                        cr_assert_str_eq(json_string_value(json_object_get(recs[i].v, "host")),
                                         "test-host");
                }
}

/* A spec with \p max_attempts, backoff 1 s doubling up to 10 s. */
static json_t *spec_retries(int max_attempts) {
        json_t *spec = spec_every(3600000, "RUN_ONCE", false);
        json_object_set_new(json_object_get(spec, "retries"), "max_attempts",
                            json_integer(max_attempts));
        return spec;
}

Test(sched_engine, retry_backoff_doubles_up_to_its_max) {
        static const int64_t backoff[] = {1000, 2000, 4000, 8000, 10000, 10000};
        char err[256];
        put(spec_retries(8), 1, T0);
        tick(T0 + 10);
        int64_t at = T0 + 100;
        for (int attempt = 1; attempt <= 6; attempt++) {
                json_t *r = result("FAILED", attempt, at);
                cr_assert_eq(tb_sched_result(s, 0, r, at + 1, err, sizeof(err)), TB_OK, "%s", err);
                json_decref(r);
                int64_t due = at + backoff[attempt - 1];
                cr_assert_eq(tb_sched_next_due(s), due, "attempt %d: backoff %" PRId64, attempt,
                             backoff[attempt - 1]);
                clear();
                tick(due - 1);
                cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
                tick(due);
                cr_assert_eq(count(TB_TOPIC_RUNS, "trigger", "RETRY"), 1);
                for (size_t i = 0; i < nrec; i++)
                        if (recs[i].topic == TB_TOPIC_RUNS)
                                cr_assert_eq(
                                        json_integer_value(json_object_get(recs[i].v, "attempt")),
                                        attempt + 1);
                at = due + 50;
        }
}

Test(sched_engine, only_failures_are_retried) {
        static const struct {
                const char *status;
                bool infra;
                bool retried;
        } cases[] = {
                {"FAILED", false, true},     {"TIMED_OUT", false, true},
                {"LOST", false, true},       {"SUCCEEDED", false, false},
                {"CANCELLED", false, false}, {"SKIPPED_PAUSED", false, false},
                {"CANCELLED", true, false},  {"SUCCEEDED", true, false},
                {"DUPLICATE", true, false},  {"RUNNING", true, false},
                {"STARTING", true, true}, /* an infrastructure error ends the run */
        };
        char err[256];
        for (size_t c = 0; c < TB_ARRAY_LEN(cases); c++) {
                /* a fresh task each time: its retry state is gone once the
                 * tick after the removal has run */
                tb_sched_task_remove(s, TID, false);
                tick(T0 + 5);
                clear();
                put(spec_retries(3), 1, T0);
                tick(T0 + 10);
                json_t *r = result(cases[c].status, 1, T0 + 100);
                json_object_set_new(r, "infra_error", json_boolean(cases[c].infra));
                cr_assert_eq(tb_sched_result(s, 0, r, T0 + 101, err, sizeof(err)), TB_OK, "%s",
                             err);
                json_decref(r);
                cr_assert_eq(tb_sched_next_due(s), cases[c].retried ? T0 + 1100 : T0 + 3600000,
                             "%s (infra_error %d)", cases[c].status, cases[c].infra);
        }
}

Test(sched_engine, single_attempt_failure_goes_to_the_dlq_with_a_message) {
        char err[256];
        put(spec_retries(1), 1, T0);
        tick(T0 + 10);
        clear();
        json_t *r = result("TIMED_OUT", 1, T0 + 100);
        json_object_del(r, "error");
        cr_assert_eq(tb_sched_result(s, 0, r, T0 + 101, err, sizeof(err)), TB_OK, "%s", err);
        json_decref(r);
        tick(T0 + 102);
        cr_assert_eq(count(TB_TOPIC_DLQ, NULL, NULL), 1);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL, NULL), 0);
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_DLQ) {
                        cr_assert_str_eq(recs[i].hdr_status, "TIMED_OUT");
                        cr_assert_str_eq(recs[i].hdr_error, "TIMED_OUT after 1 attempt");
                        cr_assert_str_eq(json_string_value(json_object_get(recs[i].v, "trigger")),
                                         "SCHEDULE");
                }
}

Test(sched_engine, encode_run_matches_the_engine_bytes) {
        char err[256];
        put(spec_every(1000, "RUN_ONCE", false), 1, T0);
        tick(T0 + 10);
        cr_assert_eq(recs[0].topic, TB_TOPIC_RUNS);
        int64_t emitted = json_integer_value(json_object_get(recs[0].v, "emitted_at"));
        tb_buf_t b = {0};
        cr_assert_eq(tb_sched_encode_run(s, TID, T0, 1, "SCHEDULE", emitted, &b, err, sizeof(err)),
                     TB_OK, "%s", err);
        json_t *v = NULL;
        cr_assert_eq(
                tb_serde_decode(b.data, b.len, TB_SCHEMA_RUN_REQUEST, NULL, &v, err, sizeof(err)),
                TB_OK, "%s", err);
        cr_assert(json_equal(v, recs[0].v), "the encoder writes the engine's RunRequest");
        json_decref(v);
        b.len = 0;
        cr_assert_eq(tb_sched_encode_run(s, TID, T0, 1, "WEEKLY", emitted, &b, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "WEEKLY"), "%s", err);
        cr_assert_eq(tb_sched_encode_run(s, "no-such-task", T0, 1, "SCHEDULE", emitted, &b, err,
                                         sizeof(err)),
                     TB_ERR_NOT_FOUND);
        tb_buf_free(&b);
}

Test(sched_engine, drop_partition_forgets_its_tasks_and_their_pending_records) {
        char err[512];
        put(spec_every(1000, "RUN_ONCE", false), 1, T0); /* partition 0 */
        json_t *spec = spec_every(1000, "RUN_ONCE", false);
        cr_assert_eq(tb_sched_task_put(s, 1, "task-on-1", 1, T0, spec, T0, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(spec);
        tb_sched_part(s, 0)->owned = true;
        tb_sched_part(s, 0)->ev_pos = 42;
        cr_assert_eq(tb_sched_task_count(s), 2);
        cr_assert(tb_sched_task_remove(s, "task-on-1", true)); /* a tombstone pending on 1 */
        tb_sched_drop_partition(s, 0);
        cr_assert_eq(tb_sched_task_count(s), 0);
        cr_assert_not(tb_sched_task_info(s, TID, NULL, NULL));
        cr_assert_not(tb_sched_part(s, 0)->owned);
        cr_assert_eq(tb_sched_part(s, 0)->ev_pos, -1);
        cr_assert_null(tb_sched_part(s, conf->topic_partitions), "out of range");
        tick(T0 + 5000);
        /* partition 1's tombstone is still written; partition 0 wrote nothing */
        cr_assert_eq(nrec, 1);
        cr_assert_eq(recs[0].topic, TB_TOPIC_CHECKPOINTS);
        cr_assert_null(recs[0].v);
}

/* ---- parameters: the defaults on every fire, a run-now's own values, kept
 *      for its retries and across owners ---- */

/* The "params" of the \p nth RunRequest of trigger \p trig (borrowed). */
static const json_t *run_params(const char *trig, size_t nth) {
        for (size_t i = 0; i < nrec; i++)
                if (recs[i].topic == TB_TOPIC_RUNS &&
                    !strcmp(json_string_value(json_object_get(recs[i].v, "trigger")), trig) &&
                    nth-- == 0)
                        return json_object_get(recs[i].v, "params");
        cr_assert_fail("no RunRequest %s #%zu", trig, nth);
        return NULL;
}

static json_t *spec_with_params(void) {
        json_t *spec = spec_every(3600000, "RUN_ONCE", false);
        json_object_set_new(
                spec, "parameters",
                json_pack("[{s:s, s:s, s:s, s:[], s:n, s:n}, {s:s, s:s, s:n, s:[], s:n, s:n}]",
                          "name", "ENV", "type", "STRING", "default", "dev", "allowed",
                          "pattern", "description", "name", "COUNT", "type", "INT", "default",
                          "allowed", "pattern", "description"));
        return spec;
}

Test(sched_engine, params_defaults_run_now_values_retries_and_checkpoints) {
        char err[256];
        put(spec_with_params(), 1, T0);
        tick(T0 + 10);
        /* a scheduled fire: the defaults (COUNT has none: unset) */
        json_t *want = json_pack("{s:s}", "ENV", "dev");
        cr_assert(json_equal(run_params("SCHEDULE", 0), want), "%s",
                  json_dumps(run_params("SCHEDULE", 0), JSON_COMPACT));
        json_decref(want);

        /* a run-now: the event's run_params */
        json_t *ev = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:o, s:{s:s, s:s}}", "event_id",
                               "e2", "task_id", TID, "version", (json_int_t)2, "type",
                               "RUN_REQUESTED", "at", (json_int_t)(T0 + 5000), "created_at",
                               (json_int_t)T0, "task", spec_with_params(), "run_params", "ENV",
                               "prod", "COUNT", "7");
        cr_assert_eq(tb_sched_event(s, 0, ev, false, T0 + 5001, err, sizeof(err)), TB_OK, "%s",
                     err);
        json_decref(ev);
        clear();
        tick(T0 + 5002);
        json_t *prod = json_pack("{s:s, s:s}", "ENV", "prod", "COUNT", "7");
        cr_assert(json_equal(run_params("RUN_NOW", 0), prod), "%s",
                  json_dumps(run_params("RUN_NOW", 0), JSON_COMPACT));

        /* it failed: its retry runs with its values, also after a new owner
         * loads the checkpoint */
        char rid[33];
        tb_sched_run_id(TID, T0 + 5000, 1, rid);
        json_t *r1 = json_pack("{s:s, s:s, s:I, s:i, s:s, s:I, s:O}", "run_id", rid, "task_id", TID,
                               "nominal_time", (json_int_t)(T0 + 5000), "attempt", 1, "status",
                               "FAILED", "at", (json_int_t)(T0 + 6000), "params", prod);
        cr_assert_eq(tb_sched_result(s, 0, r1, T0 + 6001, err, sizeof(err)), TB_OK, "%s", err);
        json_decref(r1);
        clear();
        tick(T0 + 6002); /* not due yet (backoff 1 s): the checkpoint of the retry */
        json_t *ck = json_incref(last_checkpoint());
        cr_assert_not_null(ck);
        cr_assert(json_equal(json_object_get(json_array_get(json_object_get(ck, "retries"), 0),
                                             "params"),
                             prod),
                  "%s", json_dumps(ck, JSON_COMPACT));
        /* and a run-now still pending in a checkpoint keeps its values */
        json_array_append_new(json_object_get(ck, "run_now"), json_integer(T0 + 6500));
        json_array_append_new(json_object_get(ck, "run_now_params"),
                              json_pack("{s:s, s:s}", "ENV", "qa", "COUNT", "1"));
        tb_sched_t *s2 = NULL;
        cr_assert_eq(tb_sched_new(conf, "other-host", &s2, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s2, sink, NULL);
        json_t *spec = spec_with_params();
        cr_assert_eq(tb_sched_task_put(s2, 0, TID, 2, T0, spec, T0 + 6100, err, sizeof(err)),
                     TB_OK, "%s", err);
        json_decref(spec);
        cr_assert_eq(tb_sched_checkpoint(s2, ck, T0 + 6100, err, sizeof(err)), TB_OK, "%s", err);
        clear();
        tb_sched_tick_stats_t st;
        do
                cr_assert_eq(tb_sched_tick(s2, T0 + 7100, &st, err, sizeof(err)), TB_OK, "%s", err);
        while (st.more);
        cr_assert(json_equal(run_params("RETRY", 0), prod), "%s",
                  json_dumps(run_params("RETRY", 0), JSON_COMPACT));
        json_t *qa = json_pack("{s:s, s:s}", "ENV", "qa", "COUNT", "1");
        cr_assert(json_equal(run_params("RUN_NOW", 0), qa), "%s",
                  json_dumps(run_params("RUN_NOW", 0), JSON_COMPACT));
        json_decref(qa);
        json_decref(prod);
        json_decref(ck);
        tb_sched_destroy(s2);
}
