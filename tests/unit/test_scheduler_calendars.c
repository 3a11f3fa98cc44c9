/**
 * @file test_scheduler_calendars.c
 * @brief The scheduler engine with calendar rules (scheduler/calendars.c),
 *        records to a sink: EXCLUDE fires recorded SKIPPED_CALENDAR with the
 *        reason and no RunRequest; a ROLL_NEXT fire on a holiday armed at the
 *        next business day with its nominal run id, the weekend occurrences
 *        that roll onto it recorded as duplicates; fires waiting until the
 *        calendars are loaded; a calendar change deciding the next fire again
 *        at once; a missing calendar polled for, then failing closed; one that
 *        does not build skipping with its reason until it is fixed.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <string.h>

#include "config/config.h"
#include "scheduler/engine.h"
#include "schedule/ics.h"
#include "serde/serde.h"

#define XMAS INT64_C(1798156800000) /* 2026-12-25T00:00:00Z, a Friday */
#define HOUR INT64_C(3600000)
#define DAY (24 * HOUR)
#define TID "calendar-task"

static json_t *recs[1024];
static tb_topic_t topics[1024];
static size_t nrec;
static tb_config_t *conf;
static tb_sched_t *s;

static void sink(void *opaque, tb_topic_t topic, int32_t partition, const char *key,
                 const void *value, size_t len, const tb_header_t *h, size_t hcnt) {
        (void)opaque, (void)partition, (void)key, (void)h, (void)hcnt;
        cr_assert_lt(nrec, 1024);
        char err[256];
        topics[nrec] = topic;
        recs[nrec] = NULL;
        if (value)
                cr_assert_eq(tb_serde_decode(value, len, TB_SCHEMA_ANY, NULL, &recs[nrec], err,
                                             sizeof(err)),
                             TB_OK, "%s", err);
        nrec++;
}

static void setup(void) {
        char err[256];
        conf = tb_config_defaults();
        cr_assert_eq(tb_sched_new(conf, "test-host", &s, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s, sink, NULL);
}

static void teardown(void) {
        for (size_t i = 0; i < nrec; i++)
                json_decref(recs[i]);
        tb_sched_destroy(s);
        tb_config_destroy(conf);
}

TestSuite(sched_calendars, .init = setup, .fini = teardown);

/* Calendar "hol" of ops (UTC), version \p version: 2026-12-25 a holiday
 * when \p holiday, Saturday and Sunday the weekend. */
static void set_calendars(bool holiday, int64_t version) {
        static const char with[] =
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
                "UID:x@t\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261225\r\n"
                "DTEND;VALUE=DATE:20261226\r\nSUMMARY:Christmas\r\nEND:VEVENT\r\n"
                "END:VCALENDAR\r\n";
        static const char without[] =
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nEND:VCALENDAR\r\n";
        const char *text = holiday ? with : without;
        char err[256];
        tb_ics_t *ics = NULL;
        cr_assert_eq(tb_ics_parse(text, strlen(text), &ics, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_calendar_t *c = calloc(1, sizeof(*c));
        snprintf(c->group, sizeof(c->group), "ops");
        snprintf(c->name, sizeof(c->name), "hol");
        c->version = version;
        cr_assert_eq(tb_calendar_new("hol", NULL, TB_CALENDAR_SAT_SUN, ics, &c->cal, err,
                                     sizeof(err)),
                     TB_OK, "%s", err);
        tb_ics_free(ics);
        tb_sched_calendars_set(s, c, 1);
        tb_sched_calendars_polled(s);
}

/* A task every \p every_ms from \p created with calendar \p cal under \p rule. */
static void put(int64_t every_ms, int64_t created, const char *cal, const char *rule) {
        json_t *spec = json_pack(
                "{s:s, s:s, s:s, s:s, s:{s:s, s:I, s:n, s:n, s:n, s:I}, s:I, s:s,"
                " s:{s:i, s:I, s:I}, s:s, s:b, s:s, s:[{s:s, s:s}]}",
                "name", "t", "script", "true", "security_group", "ops", "user_id", "alice",
                "schedule", "kind", "EVERY", "every_ms", (json_int_t)every_ms, "once_at", "cron",
                "start_at", "jitter_ms", (json_int_t)0, "expiry_ms", (json_int_t)60000,
                "executor", "shell", "retries", "max_attempts", 1, "backoff_ms",
                (json_int_t)1000, "backoff_max_ms", (json_int_t)10000, "misfire", "RUN_ONCE",
                "paused", false, "home_region", "", "calendars", "calendar", cal, "rule", rule);
        char err[512];
        cr_assert_eq(tb_sched_task_put(s, 0, TID, 1, created, spec, created, err, sizeof(err)),
                     TB_OK, "%s", err);
        json_decref(spec);
}

static void tick(int64_t now) {
        tb_sched_tick_stats_t st;
        char err[256];
        do
                cr_assert_eq(tb_sched_tick(s, now, &st, err, sizeof(err)), TB_OK, "%s", err);
        while (st.more);
}

static size_t count(tb_topic_t topic, const char *status) {
        size_t n = 0;
        for (size_t i = 0; i < nrec; i++)
                if (topics[i] == topic && recs[i] &&
                    (!status ||
                     !strcmp(json_string_value(json_object_get(recs[i], "status")), status)))
                        n++;
        return n;
}

static const json_t *first(tb_topic_t topic) {
        for (size_t i = 0; i < nrec; i++)
                if (topics[i] == topic && recs[i])
                        return recs[i];
        return NULL;
}

Test(sched_calendars, exclude_records_every_fire_skipped_with_the_reason) {
        set_calendars(true, 1);
        put(HOUR, XMAS, "hol", "EXCLUDE");
        tick(XMAS + 3 * HOUR);
        cr_expect_eq(count(TB_TOPIC_RUNS, NULL), 0, "nothing runs on the holiday");
        cr_expect_eq(count(TB_TOPIC_RESULTS, "SKIPPED_CALENDAR"), 4);
        const json_t *r = first(TB_TOPIC_RESULTS);
        char rid[33];
        tb_sched_run_id(TID, XMAS, 1, rid);
        cr_expect_str_eq(json_string_value(json_object_get(r, "run_id")), rid);
        cr_expect_str_eq(json_string_value(json_object_get(r, "error")),
                         "2026-12-25 is in calendar 'hol' (exclude)");
}

Test(sched_calendars, roll_next_fires_on_the_next_business_day_once) {
        set_calendars(true, 1);
        put(DAY, XMAS + 9 * HOUR, "hol", "ROLL_NEXT"); /* 09:00 daily from Friday */
        int64_t monday = XMAS + 3 * DAY + 9 * HOUR;
        cr_expect_eq(tb_sched_next_due(s), monday, "armed at Monday 09:00");
        tick(monday - 1);
        cr_expect_eq(nrec, 0, "nothing before Monday");
        tick(monday);
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL), 1);
        const json_t *rq = first(TB_TOPIC_RUNS);
        char rid[33];
        tb_sched_run_id(TID, XMAS + 9 * HOUR, 1, rid);
        cr_expect_eq(json_integer_value(json_object_get(rq, "nominal_time")), XMAS + 9 * HOUR,
                     "the nominal time stays Friday's");
        cr_expect_str_eq(json_string_value(json_object_get(rq, "run_id")), rid);
        /* Saturday and Sunday roll onto Monday 09:00 too, Monday's own is there */
        cr_expect_eq(count(TB_TOPIC_RESULTS, "SKIPPED_CALENDAR"), 3, "the duplicates");
        cr_expect_eq(tb_sched_next_due(s), monday + DAY, "then Tuesday");
}

Test(sched_calendars, fires_wait_for_the_calendars_then_a_change_applies_at_once) {
        put(HOUR, XMAS, "hol", "ROLL_NEXT");
        cr_expect_eq(tb_sched_next_due(s), INT64_MAX, "no calendars yet: nothing armed");
        set_calendars(true, 1);
        cr_expect_eq(tb_sched_next_due(s), XMAS + 3 * DAY, "Monday 00:00");
        tb_calendar_decision_t d;
        cr_assert(tb_sched_task_decision(s, TID, &d));
        cr_expect_eq(d.verdict, TB_CALENDAR_MOVED);
        set_calendars(false, 2); /* Christmas removed: Friday is a business day */
        cr_expect_eq(tb_sched_next_due(s), XMAS, "decided again without editing the task");
        cr_assert(tb_sched_task_decision(s, TID, &d));
        cr_expect_eq(d.verdict, TB_CALENDAR_FIRE);
        tick(XMAS);
        cr_expect_eq(count(TB_TOPIC_RUNS, NULL), 1);
}

Test(sched_calendars, a_missing_calendar_is_polled_for_then_skips) {
        set_calendars(true, 1);
        put(HOUR, XMAS, "gone", "EXCLUDE");
        cr_expect(tb_sched_calendars_wanted(s), "an unknown calendar asks for a poll");
        cr_expect_eq(tb_sched_next_due(s), INT64_MAX, "and waits for it");
        tb_sched_calendars_polled(s);
        cr_expect(!tb_sched_calendars_wanted(s));
        tick(XMAS);
        cr_expect_eq(count(TB_TOPIC_RUNS, NULL), 0);
        cr_assert_eq(count(TB_TOPIC_RESULTS, "SKIPPED_CALENDAR"), 1);
        cr_expect_str_eq(json_string_value(json_object_get(first(TB_TOPIC_RESULTS), "error")),
                         "calendar 'gone' does not exist in group 'ops'");
}

Test(sched_calendars, a_calendar_that_does_not_build_skips_with_its_reason) {
        tb_sched_calendar_t *c = calloc(1, sizeof(*c));
        snprintf(c->group, sizeof(c->group), "ops");
        snprintf(c->name, sizeof(c->name), "hol");
        c->version = 7;
        snprintf(c->error, sizeof(c->error), "calendar 'hol' of group 'ops' (version 7) cannot "
                                             "be built: bad zone");
        tb_sched_calendars_set(s, c, 1);
        tb_sched_calendars_polled(s);
        put(HOUR, XMAS, "hol", "ONLY");
        tick(XMAS);
        cr_expect_eq(count(TB_TOPIC_RUNS, NULL), 0, "nothing runs on a guess");
        cr_assert_eq(count(TB_TOPIC_RESULTS, "SKIPPED_CALENDAR"), 1);
        cr_expect_str_eq(json_string_value(json_object_get(first(TB_TOPIC_RESULTS), "error")),
                         "calendar 'hol' of group 'ops' (version 7) cannot be built: bad zone");
        set_calendars(true, 8); /* fixed: Christmas is in 'hol', so an ONLY fire on it runs */
        tick(XMAS + HOUR);
        cr_expect_eq(count(TB_TOPIC_RUNS, NULL), 1);
        cr_expect_eq(count(TB_TOPIC_RESULTS, "SKIPPED_CALENDAR"), 1);
}

Test(sched_calendars, run_once_after_downtime_runs_the_latest_fire_the_calendars_run) {
        set_calendars(true, 1);
        put(DAY, XMAS - DAY + 9 * HOUR, "hol", "EXCLUDE"); /* Thursday 09:00, then daily */
        tick(XMAS + 12 * HOUR); /* down through Friday's (holiday) fire */
        cr_assert_eq(count(TB_TOPIC_RUNS, NULL), 1, "Thursday's, the latest that would run");
        cr_expect_eq(json_integer_value(json_object_get(first(TB_TOPIC_RUNS), "nominal_time")),
                     XMAS - DAY + 9 * HOUR);
        cr_expect_eq(count(TB_TOPIC_RESULTS, "SKIPPED_CALENDAR"), 1, "Friday's");
        cr_expect_eq(count(TB_TOPIC_RESULTS, "SKIPPED_MISFIRE"), 0);
}
