/**
 * @file test_schedule_dst.c
 * @brief Schedules in real time zones: DST gaps and overlaps under every
 *        policy (America/Los_Angeles, Europe/London, Australia/Lord_Howe's
 *        30-minute shift, Pacific/Apia's skipped day), unknown zones,
 *        intervals, jitter and start/end/expires windows.
 *
 * Expected instants were worked out from the tz rules (and checked against
 * Python's zoneinfo); they are written as local RFC 3339 literals.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule/schedule.h"
#include "tb.h"

typedef struct fire {
        const char *local; /* expected local RFC 3339 */
        const char *note;  /* expected dst note name */
} fire_t;

static int64_t ms_of(const char *rfc3339) {
        char err[256];
        int64_t ms;
        cr_assert_eq(tb_time_parse(rfc3339, &ms, err, sizeof(err)), TB_OK, "%s", err);
        return ms;
}

/* Check the successive fires of \p expr in \p zone after \p after. */
static void expect_fires(const char *zone, const char *expr, tb_dst_gap_t gap,
                         tb_dst_overlap_t overlap, const char *after, const fire_t *want,
                         size_t n) {
        char err[256];
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON, .dst_gap = gap, .dst_overlap = overlap};
        cr_assert_eq(tb_tz_open(zone, &s.tz, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_cron_parse(expr, &s.cron, err, sizeof(err)), TB_OK, "%s", err);
        int64_t t = ms_of(after);
        for (size_t i = 0; i < n; i++) {
                int64_t next;
                int note;
                cr_assert_eq(tb_schedule_next(&s, t, &next, &note, err, sizeof(err)), TB_OK,
                             "%s '%s' gap=%d overlap=%d fire %zu: %s", zone, expr, gap,
                             overlap, i, err);
                char local[40];
                tb_tz_format_local(s.tz, next, local);
                cr_expect_str_eq(local, want[i].local,
                                 "%s '%s' gap=%d overlap=%d fire %zu: got %s, want %s", zone,
                                 expr, gap, overlap, i, local, want[i].local);
                cr_expect_eq(next, ms_of(want[i].local), "%s '%s' fire %zu: instant differs",
                             zone, expr, i);
                cr_expect_str_eq(tb_schedule_dst_note_name(note), want[i].note,
                                 "%s '%s' gap=%d overlap=%d fire %zu (%s): note %s, want %s",
                                 zone, expr, gap, overlap, i, local,
                                 tb_schedule_dst_note_name(note), want[i].note);
                t = next;
        }
        tb_schedule_clear(&s);
}

#define FIRES(zone, expr, gap, ov, after, ...)                                       \
        do {                                                                         \
                static const fire_t w_[] = {__VA_ARGS__};                            \
                expect_fires(zone, expr, gap, ov, after, w_, TB_ARRAY_LEN(w_));      \
        } while (0)

#define SHIFT TB_DST_GAP_SHIFT
#define SKIP TB_DST_GAP_SKIP
#define FIRST TB_DST_OVERLAP_FIRST
#define LAST TB_DST_OVERLAP_LAST
#define BOTH TB_DST_OVERLAP_BOTH

/* ---- America/Los_Angeles: 2026-03-08 02:00 PST -> 03:00 PDT;
 *      2026-11-01 02:00 PDT -> 01:00 PST ----------------------------------- */

Test(dst, la_spring_forward_daily) {
        FIRES("America/Los_Angeles", "30 2 * * *", SHIFT, FIRST, "2026-03-07T00:00:00-08:00",
              {"2026-03-07T02:30:00-08:00", "none"}, {"2026-03-08T03:00:00-07:00", "shifted"},
              {"2026-03-09T02:30:00-07:00", "none"});
        FIRES("America/Los_Angeles", "30 2 * * *", SKIP, FIRST, "2026-03-07T00:00:00-08:00",
              {"2026-03-07T02:30:00-08:00", "none"}, {"2026-03-09T02:30:00-07:00", "none"});
        /* The overlap policy has no say in a gap. */
        FIRES("America/Los_Angeles", "30 2 * * *", SHIFT, BOTH, "2026-03-07T12:00:00-08:00",
              {"2026-03-08T03:00:00-07:00", "shifted"});
        FIRES("America/Los_Angeles", "30 2 * * *", SKIP, LAST, "2026-03-07T12:00:00-08:00",
              {"2026-03-09T02:30:00-07:00", "none"});
}

Test(dst, la_gap_collapses_to_one_fire) {
        /* 02:00, 02:15, 02:30, 02:45 do not exist: one fire at 03:00. */
        FIRES("America/Los_Angeles", "*/15 2 * * *", SHIFT, FIRST, "2026-03-08T01:00:00-08:00",
              {"2026-03-08T03:00:00-07:00", "shifted"}, {"2026-03-09T02:00:00-07:00", "none"});
        /* 03:00 matches by itself: still one fire there, not a shifted one. */
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, FIRST,
              "2026-03-08T01:40:00-08:00", {"2026-03-08T01:45:00-08:00", "none"},
              {"2026-03-08T03:00:00-07:00", "none"}, {"2026-03-08T03:15:00-07:00", "none"});
        FIRES("America/Los_Angeles", "*/15 * * * *", SKIP, FIRST, "2026-03-08T01:40:00-08:00",
              {"2026-03-08T01:45:00-08:00", "none"}, {"2026-03-08T03:00:00-07:00", "none"},
              {"2026-03-08T03:15:00-07:00", "none"});
}

Test(dst, la_fall_back_daily) {
        FIRES("America/Los_Angeles", "30 1 * * *", SHIFT, FIRST, "2026-10-31T12:00:00-07:00",
              {"2026-11-01T01:30:00-07:00", "overlap_first"},
              {"2026-11-02T01:30:00-08:00", "none"});
        FIRES("America/Los_Angeles", "30 1 * * *", SHIFT, LAST, "2026-10-31T12:00:00-07:00",
              {"2026-11-01T01:30:00-08:00", "overlap_second"},
              {"2026-11-02T01:30:00-08:00", "none"});
        FIRES("America/Los_Angeles", "30 1 * * *", SKIP, BOTH, "2026-10-31T12:00:00-07:00",
              {"2026-11-01T01:30:00-07:00", "overlap_first"},
              {"2026-11-01T01:30:00-08:00", "overlap_second"},
              {"2026-11-02T01:30:00-08:00", "none"});
        /* Times outside the repeated hour are untouched by the policy. */
        FIRES("America/Los_Angeles", "30 0,2 * * *", SHIFT, BOTH, "2026-10-31T12:00:00-07:00",
              {"2026-11-01T00:30:00-07:00", "none"}, {"2026-11-01T02:30:00-08:00", "none"});
}

Test(dst, la_fall_back_every_15_minutes) {
        /* first: each wall time once, at its first occurrence. */
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, FIRST,
              "2026-11-01T00:50:00-07:00", {"2026-11-01T01:00:00-07:00", "overlap_first"},
              {"2026-11-01T01:15:00-07:00", "overlap_first"},
              {"2026-11-01T01:30:00-07:00", "overlap_first"},
              {"2026-11-01T01:45:00-07:00", "overlap_first"},
              {"2026-11-01T02:00:00-08:00", "none"});
        /* last: nothing during the first pass of 01:xx. */
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, LAST, "2026-11-01T00:50:00-07:00",
              {"2026-11-01T01:00:00-08:00", "overlap_second"},
              {"2026-11-01T01:15:00-08:00", "overlap_second"},
              {"2026-11-01T01:30:00-08:00", "overlap_second"},
              {"2026-11-01T01:45:00-08:00", "overlap_second"},
              {"2026-11-01T02:00:00-08:00", "none"});
        /* both: the repeated hour fires twice. */
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, BOTH, "2026-11-01T00:50:00-07:00",
              {"2026-11-01T01:00:00-07:00", "overlap_first"},
              {"2026-11-01T01:15:00-07:00", "overlap_first"},
              {"2026-11-01T01:30:00-07:00", "overlap_first"},
              {"2026-11-01T01:45:00-07:00", "overlap_first"},
              {"2026-11-01T01:00:00-08:00", "overlap_second"},
              {"2026-11-01T01:15:00-08:00", "overlap_second"},
              {"2026-11-01T01:30:00-08:00", "overlap_second"},
              {"2026-11-01T01:45:00-08:00", "overlap_second"},
              {"2026-11-01T02:00:00-08:00", "none"});
}

Test(dst, la_fall_back_starting_inside_the_overlap) {
        /* From the second pass, "first" has already fired every 01:xx. */
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, FIRST,
              "2026-11-01T01:20:00-08:00", {"2026-11-01T02:00:00-08:00", "none"});
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, LAST, "2026-11-01T01:20:00-08:00",
              {"2026-11-01T01:30:00-08:00", "overlap_second"});
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, BOTH, "2026-11-01T01:20:00-08:00",
              {"2026-11-01T01:30:00-08:00", "overlap_second"});
        /* From the first pass, "last" waits for the second 01:00. */
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, LAST, "2026-11-01T01:20:00-07:00",
              {"2026-11-01T01:00:00-08:00", "overlap_second"});
        FIRES("America/Los_Angeles", "*/15 * * * *", SHIFT, BOTH, "2026-11-01T01:20:00-07:00",
              {"2026-11-01T01:30:00-07:00", "overlap_first"});
}

/* ---- Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST;
 *      2026-10-25 02:00 BST -> 01:00 GMT ----------------------------------- */

Test(dst, london) {
        FIRES("Europe/London", "30 1 * * *", SHIFT, FIRST, "2026-03-28T12:00:00+00:00",
              {"2026-03-29T02:00:00+01:00", "shifted"}, {"2026-03-30T01:30:00+01:00", "none"});
        FIRES("Europe/London", "30 1 * * *", SKIP, FIRST, "2026-03-28T12:00:00+00:00",
              {"2026-03-30T01:30:00+01:00", "none"});
        /* Hourly: 01:00 does not exist and 02:00 is its own fire. */
        FIRES("Europe/London", "0 * * * *", SHIFT, FIRST, "2026-03-29T00:00:00+00:00",
              {"2026-03-29T02:00:00+01:00", "none"}, {"2026-03-29T03:00:00+01:00", "none"});
        FIRES("Europe/London", "30 1 * * *", SHIFT, FIRST, "2026-10-24T12:00:00+01:00",
              {"2026-10-25T01:30:00+01:00", "overlap_first"},
              {"2026-10-26T01:30:00+00:00", "none"});
        FIRES("Europe/London", "30 1 * * *", SHIFT, LAST, "2026-10-24T12:00:00+01:00",
              {"2026-10-25T01:30:00+00:00", "overlap_second"},
              {"2026-10-26T01:30:00+00:00", "none"});
        FIRES("Europe/London", "30 1 * * *", SKIP, BOTH, "2026-10-24T12:00:00+01:00",
              {"2026-10-25T01:30:00+01:00", "overlap_first"},
              {"2026-10-25T01:30:00+00:00", "overlap_second"},
              {"2026-10-26T01:30:00+00:00", "none"});
}

/* ---- Australia/Lord_Howe: a 30-minute DST. 2025-10-05 02:00 +10:30 ->
 *      02:30 +11:00; 2026-04-05 02:00 +11:00 -> 01:30 +10:30 -------------- */

Test(dst, lord_howe_half_hour_gap) {
        FIRES("Australia/Lord_Howe", "15 2 * * *", SHIFT, FIRST, "2025-10-04T00:00:00+10:30",
              {"2025-10-04T02:15:00+10:30", "none"}, {"2025-10-05T02:30:00+11:00", "shifted"},
              {"2025-10-06T02:15:00+11:00", "none"});
        FIRES("Australia/Lord_Howe", "15 2 * * *", SKIP, FIRST, "2025-10-04T00:00:00+10:30",
              {"2025-10-04T02:15:00+10:30", "none"}, {"2025-10-06T02:15:00+11:00", "none"});
        /* 02:00 and 02:20 collapse onto 02:30; 02:40 exists. */
        FIRES("Australia/Lord_Howe", "*/20 2 * * *", SHIFT, FIRST,
              "2025-10-05T01:00:00+10:30", {"2025-10-05T02:30:00+11:00", "shifted"},
              {"2025-10-05T02:40:00+11:00", "none"}, {"2025-10-06T02:00:00+11:00", "none"});
        FIRES("Australia/Lord_Howe", "*/20 2 * * *", SKIP, BOTH, "2025-10-05T01:00:00+10:30",
              {"2025-10-05T02:40:00+11:00", "none"}, {"2025-10-06T02:00:00+11:00", "none"});
}

Test(dst, lord_howe_half_hour_overlap) {
        FIRES("Australia/Lord_Howe", "45 1 * * *", SHIFT, FIRST, "2026-04-04T12:00:00+11:00",
              {"2026-04-05T01:45:00+11:00", "overlap_first"},
              {"2026-04-06T01:45:00+10:30", "none"});
        FIRES("Australia/Lord_Howe", "45 1 * * *", SHIFT, LAST, "2026-04-04T12:00:00+11:00",
              {"2026-04-05T01:45:00+10:30", "overlap_second"},
              {"2026-04-06T01:45:00+10:30", "none"});
        FIRES("Australia/Lord_Howe", "45 1 * * *", SKIP, BOTH, "2026-04-04T12:00:00+11:00",
              {"2026-04-05T01:45:00+11:00", "overlap_first"},
              {"2026-04-05T01:45:00+10:30", "overlap_second"},
              {"2026-04-06T01:45:00+10:30", "none"});
        /* 01:15 is before the repeated half hour (01:30-02:00): once. */
        FIRES("Australia/Lord_Howe", "15 1 * * *", SHIFT, BOTH, "2026-04-04T12:00:00+11:00",
              {"2026-04-05T01:15:00+11:00", "none"}, {"2026-04-06T01:15:00+10:30", "none"});
}

/* ---- Pacific/Apia skipped 2011-12-30 entirely (UTC-10 -> UTC+14) -------- */

Test(dst, apia_skipped_day_under_every_policy) {
        const tb_dst_gap_t gaps[] = {SHIFT, SKIP};
        const tb_dst_overlap_t ovs[] = {FIRST, LAST, BOTH};
        for (size_t g = 0; g < 2; g++) {
                for (size_t o = 0; o < 3; o++) {
                        /* A day-long jump is not DST: nothing is shifted. */
                        FIRES("Pacific/Apia", "0 12 * * *", gaps[g], ovs[o],
                              "2011-12-28T12:00:00-10:00",
                              {"2011-12-29T12:00:00-10:00", "none"},
                              {"2011-12-31T12:00:00+14:00", "none"},
                              {"2012-01-01T12:00:00+14:00", "none"});
                        FIRES("Pacific/Apia", "0 0 * * *", gaps[g], ovs[o],
                              "2011-12-29T12:00:00-10:00",
                              {"2011-12-31T00:00:00+14:00", "none"});
                }
        }
        /* Apia's ordinary one-hour DST start that year still shifts:
         * 2011-09-24 03:00 -11:00 -> 04:00 -10:00. */
        FIRES("Pacific/Apia", "30 3 * * *", SHIFT, FIRST, "2011-09-23T12:00:00-11:00",
              {"2011-09-24T04:00:00-10:00", "shifted"}, {"2011-09-25T03:30:00-10:00", "none"});
}

Test(dst, far_future_rules_repeat) {
        /* Beyond the zone table (2500) the annual rules still apply. */
        FIRES("America/Los_Angeles", "30 2 * * *", SHIFT, FIRST, "2900-03-13T12:00:00-08:00",
              {"2900-03-14T03:00:00-07:00", "shifted"}, {"2900-03-15T02:30:00-07:00", "none"});
        FIRES("Europe/London", "30 1 * * *", SHIFT, BOTH, "2712-10-26T12:00:00+01:00",
              {"2712-10-27T01:30:00+01:00", "overlap_first"},
              {"2712-10-27T01:30:00+00:00", "overlap_second"});
}

/* ---- zones ---------------------------------------------------------------- */

static void expect_bad_zone(const char *name, const char *substring) {
        char err[256] = "";
        const tb_tz_t *tz = NULL;
        cr_expect_eq(tb_tz_open(name, &tz, err, sizeof(err)), TB_ERR_INVALID, "'%s' opened",
                     name);
        cr_expect(strstr(err, substring) != NULL, "'%s': error '%s' lacks '%s'", name, err,
                  substring);
}

Test(tz, unknown_zones) {
        expect_bad_zone("Mars/Olympus", "unknown time zone 'Mars/Olympus'");
        expect_bad_zone("Etc/Unknown", "unknown time zone 'Etc/Unknown'");
        expect_bad_zone("GMT+5", "unknown time zone 'GMT+5'");
        expect_bad_zone("../../etc/passwd", "unknown time zone '../../etc/passwd'");
        expect_bad_zone("Europe/London\n", "unknown time zone 'Europe/London?'");
        expect_bad_zone("america/los_angeles", "did you mean 'America/Los_Angeles'?");
        expect_bad_zone("", "time zone must not be empty");
        char longname[200];
        memset(longname, 'A', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        expect_bad_zone(longname, "unknown time zone 'AAAA");
}

Test(tz, known_zones_and_formatting) {
        char err[256], buf[40];
        const tb_tz_t *utc, *la, *alias, *again;
        cr_assert_eq(tb_tz_open(NULL, &utc, err, sizeof(err)), TB_OK);
        cr_expect_str_eq(tb_tz_name(utc), "UTC");
        cr_assert_eq(tb_tz_open("America/Los_Angeles", &la, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_tz_open("America/Los_Angeles", &again, err, sizeof(err)), TB_OK);
        cr_expect_eq(la, again, "zones are interned");
        cr_assert_eq(tb_tz_open("US/Pacific", &alias, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_tz_open("Etc/UTC", &again, err, sizeof(err)), TB_OK, "%s", err);
        int64_t t = ms_of("2026-07-01T12:00:00Z");
        cr_expect_eq(tb_tz_offset_at(alias, t / 1000), -7 * 3600);
        cr_expect_eq(tb_tz_offset_at(la, ms_of("2026-01-01T12:00:00Z") / 1000), -8 * 3600);
        tb_tz_format_local(utc, t, buf);
        cr_expect_str_eq(buf, "2026-07-01T12:00:00+00:00");
        tb_tz_format_local(la, t + 123, buf);
        cr_expect_str_eq(buf, "2026-07-01T05:00:00.123-07:00");
        const tb_tz_t *kolkata;
        cr_assert_eq(tb_tz_open("Asia/Kolkata", &kolkata, err, sizeof(err)), TB_OK, "%s", err);
        tb_tz_format_local(kolkata, t, buf);
        cr_expect_str_eq(buf, "2026-07-01T17:30:00+05:30");
        tb_tz_format_local(la, ms_of("1969-12-31T23:59:59.500Z"), buf);
        cr_expect_str_eq(buf, "1969-12-31T15:59:59.500-08:00");
}

/* ---- intervals ---------------------------------------------------------- */

static int64_t next_of(const tb_schedule_t *s, const char *after) {
        char err[256];
        int64_t n;
        tb_err_t e = tb_schedule_next(s, ms_of(after), &n, NULL, err, sizeof(err));
        if (e == TB_ERR_NOT_FOUND)
                return -1;
        cr_assert_eq(e, TB_OK, "%s", err);
        return n;
}

Test(schedule, interval_ignores_dst) {
        char err[256];
        tb_schedule_t s = {.kind = TB_SCHEDULE_EVERY, .every_ms = 3600000,
                           .anchor_ms = ms_of("2026-03-08T08:00:00Z")};
        /* A zone on an interval schedule changes nothing. */
        cr_assert_eq(tb_tz_open("America/Los_Angeles", &s.tz, err, sizeof(err)), TB_OK);
        cr_expect_eq(next_of(&s, "2026-03-08T09:30:00Z"), ms_of("2026-03-08T10:00:00Z"));
        cr_expect_eq(next_of(&s, "2026-03-08T10:00:00Z"), ms_of("2026-03-08T11:00:00Z"));
        /* Daily from 02:30 PST: 24 h later is 03:30 PDT, not 02:30. */
        s.every_ms = 86400000;
        s.anchor_ms = ms_of("2026-03-07T02:30:00-08:00");
        cr_expect_eq(next_of(&s, "2026-03-07T02:30:00-08:00"), ms_of("2026-03-08T03:30:00-07:00"));
        cr_expect_eq(next_of(&s, "2026-10-31T12:00:00Z"), ms_of("2026-11-01T02:30:00-08:00"));
}

Test(schedule, interval_anchor_and_start) {
        tb_schedule_t s = {.kind = TB_SCHEDULE_EVERY, .every_ms = 90000,
                           .anchor_ms = ms_of("2026-01-01T00:00:10Z")};
        cr_expect_eq(next_of(&s, "2025-12-31T00:00:00Z"), ms_of("2026-01-01T00:00:10Z"));
        cr_expect_eq(next_of(&s, "2026-01-01T00:00:10Z"), ms_of("2026-01-01T00:01:40Z"));
        cr_expect_eq(next_of(&s, "2026-01-01T00:01:39.999Z"), ms_of("2026-01-01T00:01:40Z"));
        /* start_at re-anchors. */
        s.start_at_ms = ms_of("2026-01-01T00:00:00Z");
        cr_expect_eq(next_of(&s, "2026-01-01T00:02:00Z"), ms_of("2026-01-01T00:03:00Z"));
        s.end_at_ms = ms_of("2026-01-01T00:03:00Z");
        cr_expect_eq(next_of(&s, "2026-01-01T00:02:00Z"), ms_of("2026-01-01T00:03:00Z"));
        cr_expect_eq(next_of(&s, "2026-01-01T00:03:00Z"), -1);
        /* Far past the calendar: none rather than an overflow. */
        s.end_at_ms = 0;
        cr_expect_eq(next_of(&s, "9999-12-31T23:59:00Z"), -1);
}

/* ---- windows --------------------------------------------------------------- */

Test(schedule, cron_windows) {
        char err[256];
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON};
        cr_assert_eq(tb_cron_parse("0 * * * *", &s.cron, err, sizeof(err)), TB_OK);
        s.start_at_ms = ms_of("2026-01-01T05:30:00Z");
        cr_expect_eq(next_of(&s, "2026-01-01T00:00:00Z"), ms_of("2026-01-01T06:00:00Z"));
        s.start_at_ms = ms_of("2026-01-01T06:00:00Z"); /* inclusive */
        cr_expect_eq(next_of(&s, "2026-01-01T00:00:00Z"), ms_of("2026-01-01T06:00:00Z"));
        s.start_at_ms = ms_of("2026-01-01T06:00:00.001Z");
        cr_expect_eq(next_of(&s, "2026-01-01T00:00:00Z"), ms_of("2026-01-01T07:00:00Z"));
        s.start_at_ms = 0;
        s.end_at_ms = ms_of("2026-01-01T08:00:00Z"); /* inclusive */
        cr_expect_eq(next_of(&s, "2026-01-01T07:00:00Z"), ms_of("2026-01-01T08:00:00Z"));
        cr_expect_eq(next_of(&s, "2026-01-01T08:00:00Z"), -1);
        s.end_at_ms = 0;
        s.expires_at_ms = ms_of("2026-01-01T08:00:00Z"); /* exclusive */
        cr_expect_eq(next_of(&s, "2026-01-01T06:30:00Z"), ms_of("2026-01-01T07:00:00Z"));
        cr_expect_eq(next_of(&s, "2026-01-01T07:00:00Z"), -1);
        s.expires_at_ms = ms_of("2026-01-01T08:00:00.001Z");
        cr_expect_eq(next_of(&s, "2026-01-01T07:00:00Z"), ms_of("2026-01-01T08:00:00Z"));
        tb_schedule_clear(&s);
        cr_expect_null(s.cron);
}

Test(schedule, once) {
        tb_schedule_t s = {.kind = TB_SCHEDULE_ONCE, .once_at_ms = ms_of("2026-05-01T10:00:00Z")};
        cr_expect_eq(next_of(&s, "2026-04-01T00:00:00Z"), ms_of("2026-05-01T10:00:00Z"));
        cr_expect_eq(next_of(&s, "2026-05-01T09:59:59.999Z"), ms_of("2026-05-01T10:00:00Z"));
        cr_expect_eq(next_of(&s, "2026-05-01T10:00:00Z"), -1);
        s.expires_at_ms = ms_of("2026-05-01T10:00:00Z");
        cr_expect_eq(next_of(&s, "2026-04-01T00:00:00Z"), -1);
        s.expires_at_ms = 0;
        s.end_at_ms = ms_of("2026-04-30T00:00:00Z");
        cr_expect_eq(next_of(&s, "2026-04-01T00:00:00Z"), -1);
}

Test(schedule, cron_in_zone_with_window_across_dst) {
        char err[256];
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON};
        cr_assert_eq(tb_tz_open("America/Los_Angeles", &s.tz, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_cron_parse("30 2 * * *", &s.cron, err, sizeof(err)), TB_OK);
        /* end_at just before the shifted fire: nothing. */
        s.end_at_ms = ms_of("2026-03-08T02:59:59-07:00");
        cr_expect_eq(next_of(&s, "2026-03-07T12:00:00-08:00"), -1);
        s.end_at_ms = 0;
        s.expires_at_ms = ms_of("2026-03-08T03:00:01-07:00");
        cr_expect_eq(next_of(&s, "2026-03-07T12:00:00-08:00"), ms_of("2026-03-08T03:00:00-07:00"));
        tb_schedule_clear(&s);
}

Test(schedule, validation_errors) {
        char err[256];
        int64_t n;
        tb_schedule_t s = {.kind = TB_SCHEDULE_EVERY, .every_ms = 500, .anchor_ms = 1};
        cr_expect_eq(tb_schedule_next(&s, 0, &n, NULL, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "schedule: every: 500 ms is out of range"), "%s", err);
        s = (tb_schedule_t){.kind = TB_SCHEDULE_CRON};
        cr_expect_eq(tb_schedule_validate(&s, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "cron: the expression is missing"), "%s", err);
        s = (tb_schedule_t){.kind = TB_SCHEDULE_ONCE, .once_at_ms = 1000,
                            .start_at_ms = ms_of("2026-02-01T00:00:00Z"),
                            .end_at_ms = ms_of("2026-01-01T00:00:00Z")};
        cr_expect_eq(tb_schedule_validate(&s, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "end_at 2026-01-01T00:00:00Z is before start_at "
                              "2026-02-01T00:00:00Z"),
                  "%s", err);
        s = (tb_schedule_t){.kind = 0};
        cr_expect_eq(tb_schedule_validate(&s, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "kind must be once, every or cron"), "%s", err);
        s = (tb_schedule_t){.kind = TB_SCHEDULE_ONCE, .once_at_ms = 1000, .jitter_ms = -1};
        cr_expect_eq(tb_schedule_validate(&s, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "jitter"), "%s", err);

        tb_dst_gap_t g;
        tb_dst_overlap_t o;
        cr_expect_eq(tb_schedule_dst_gap_parse("skip", &g, err, sizeof(err)), TB_OK);
        cr_expect_eq(g, TB_DST_GAP_SKIP);
        cr_expect_eq(tb_schedule_dst_gap_parse("later", &g, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "dst_gap: 'later' is not a policy (use 'shift' or 'skip')"), "%s",
                  err);
        cr_expect_eq(tb_schedule_dst_overlap_parse("both", &o, err, sizeof(err)), TB_OK);
        cr_expect_eq(o, TB_DST_OVERLAP_BOTH);
        cr_expect_eq(tb_schedule_dst_overlap_parse(NULL, &o, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect(strstr(err, "use 'first', 'last' or 'both'"), "%s", err);
}

/* ---- jitter ------------------------------------------------------------------ */

Test(schedule, jitter_is_deterministic_and_pinned) {
        int64_t nominal = ms_of("2026-01-01T00:00:00Z");
        /* Pinned values: a change here would move every replayed fire. */
        cr_expect_eq(tb_schedule_jitter("task-1", nominal, 60000), 56302);
        cr_expect_eq(tb_schedule_jitter("task-2", nominal, 60000), 24047);
        cr_expect_eq(tb_schedule_jitter("task-1", nominal + 60000, 60000), 48549);
        cr_expect_eq(tb_schedule_jitter("", 0, 1000), 706);
        cr_expect_eq(tb_schedule_jitter("task-1", nominal, 60000),
                     tb_schedule_jitter("task-1", nominal, 60000));
        cr_expect_eq(tb_schedule_jitter("task-1", nominal, 0), 0);
        cr_expect_eq(tb_schedule_jitter("task-1", nominal, -5), 0);
        cr_expect_eq(tb_schedule_jitter(NULL, nominal, 0), 0);
}

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return (x > y) - (x < y);
}

Test(schedule, jitter_range_and_spread) {
        enum { N = 10000 };
        static int64_t v[N];
        const int64_t J = 60000;
        double sum = 0;
        int64_t base = ms_of("2026-01-01T00:00:00Z");
        for (int i = 0; i < N; i++) {
                v[i] = tb_schedule_jitter("3f1c8a52-0b7e-4c1e-9d7a-2c4b6f0e9a11",
                                          base + (int64_t)i * 60000, J);
                cr_assert(v[i] >= 0 && v[i] <= J, "jitter %lld outside [0, %lld]",
                          (long long)v[i], (long long)J);
                sum += (double)v[i];
        }
        double mean = sum / N;
        cr_expect(mean > J * 0.45 && mean < J * 0.55, "mean %.1f is not near %lld", mean,
                  (long long)(J / 2));
        qsort(v, N, sizeof(v[0]), cmp_i64);
        int distinct = 1;
        for (int i = 1; i < N; i++)
                distinct += v[i] != v[i - 1];
        cr_expect_gt(distinct, 8500, "only %d distinct values", distinct);
        /* Both ends are reachable with a tiny range. */
        bool seen[2] = {false, false};
        for (int i = 0; i < 100; i++)
                seen[tb_schedule_jitter("t", i, 1)] = true;
        cr_expect(seen[0] && seen[1]);
}

/* ---- cross-check against glibc's own tz database ---------------------------
 * An independent reference: walk UTC minute by minute through a DST season
 * with localtime_r() and decide each fire from the policy's definition
 * (a repeated wall time is one also shown within the 3 hours before /
 * after; a gap is a forward jump of the wall clock). */

#include <time.h>
#include <unistd.h>

typedef bool (*wall_pred_t)(int h, int m);
static bool p_q15(int h, int m) { return (void)h, m % 15 == 0; }
static bool p_0130(int h, int m) { return h == 1 && m == 30; }
static bool p_2x20(int h, int m) { return h == 2 && m % 20 == 0; }
static bool p_hourly(int h, int m) { return (void)h, m == 0; }
static bool p_45early(int h, int m) { return h <= 3 && m == 45; }
static bool p_7in12(int h, int m) { return (h == 1 || h == 2) && m % 7 == 0; }

static const struct {
        const char *expr;
        wall_pred_t pred;
} ref_exprs[] = {
        {"*/15 * * * *", p_q15},  {"30 1 * * *", p_0130},    {"*/20 2 * * *", p_2x20},
        {"0 * * * *", p_hourly},  {"45 0-3 * * *", p_45early}, {"*/7 1-2 * * *", p_7in12},
};

static int64_t ref_wall(int64_t t, int *h, int *m) {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        if (h) {
                *h = tm.tm_hour;
                *m = tm.tm_min;
        }
        return t + tm.tm_gmtoff;
}

static bool ref_shown(int64_t wall, int64_t from, int64_t to) {
        for (int64_t t = from; t <= to; t += 60)
                if (ref_wall(t, NULL, NULL) == wall)
                        return true;
        return false;
}

/* Reference fires in [t0, t1] (seconds); @returns the count. */
static size_t ref_fires(wall_pred_t pred, tb_dst_gap_t gap, tb_dst_overlap_t ov, int64_t t0,
                        int64_t t1, int64_t *out, size_t cap) {
        size_t n = 0;
        int64_t prev_wall = ref_wall(t0 - 60, NULL, NULL);
        for (int64_t t = t0; t <= t1 && n < cap; t += 60) {
                int h, m;
                int64_t wall = ref_wall(t, &h, &m);
                bool fire = false;
                if (pred(h, m)) {
                        bool shifty = ref_wall(t - 3 * 3600, NULL, NULL) - (t - 3 * 3600) !=
                                      ref_wall(t + 3 * 3600, NULL, NULL) - (t + 3 * 3600);
                        bool seen_before = shifty && ref_shown(wall, t - 3 * 3600, t - 60);
                        bool seen_after = shifty && ref_shown(wall, t + 60, t + 3 * 3600);
                        if (ov == TB_DST_OVERLAP_BOTH)
                                fire = true;
                        else if (ov == TB_DST_OVERLAP_FIRST)
                                fire = !seen_before;
                        else
                                fire = !seen_after;
                }
                /* A forward jump: local times (prev_wall, wall) never showed. */
                if (!fire && gap == TB_DST_GAP_SHIFT && wall - prev_wall > 60 &&
                    wall - prev_wall <= 3 * 3600 + 60) {
                        for (int64_t w = prev_wall + 60; w < wall && !fire; w += 60) {
                                int64_t sod = ((w % 86400) + 86400) % 86400;
                                fire = pred((int)(sod / 3600), (int)(sod / 60 % 60));
                        }
                }
                if (fire)
                        out[n++] = t;
                prev_wall = wall;
        }
        return n;
}

Test(dst, cross_check_against_glibc_tzdata, .timeout = 300) {
        static const char *zones[] = {"America/Los_Angeles", "Europe/London",
                                      "Australia/Lord_Howe", "Pacific/Chatham",
                                      "America/New_York",    "Australia/Sydney"};
        /* Both 2026 transitions of each hemisphere. */
        static const char *windows[][2] = {{"2026-03-05T00:00:00Z", "2026-04-08T00:00:00Z"},
                                           {"2026-09-24T00:00:00Z", "2026-11-04T00:00:00Z"}};
        enum { CAP = 8000 };
        static int64_t want[CAP];
        char err[256];
        size_t compared = 0;
        for (size_t z = 0; z < TB_ARRAY_LEN(zones); z++) {
                char path[128];
                snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", zones[z]);
                if (access(path, R_OK) != 0)
                        cr_assert_fail("no system tz database (%s): apt-get install tzdata", path);
                setenv("TZ", zones[z], 1);
                tzset();
                for (size_t e = 0; e < TB_ARRAY_LEN(ref_exprs); e++) {
                        for (int pol = 0; pol < 6; pol++) {
                                tb_schedule_t s = {.kind = TB_SCHEDULE_CRON,
                                                   .dst_gap = (tb_dst_gap_t)(pol / 3),
                                                   .dst_overlap = (tb_dst_overlap_t)(pol % 3)};
                                cr_assert_eq(tb_tz_open(zones[z], &s.tz, err, sizeof(err)),
                                             TB_OK, "%s", err);
                                cr_assert_eq(tb_cron_parse(ref_exprs[e].expr, &s.cron, err,
                                                           sizeof(err)),
                                             TB_OK);
                                for (size_t w = 0; w < TB_ARRAY_LEN(windows); w++) {
                                        int64_t t0 = ms_of(windows[w][0]) / 1000;
                                        int64_t t1 = ms_of(windows[w][1]) / 1000;
                                        size_t n = ref_fires(ref_exprs[e].pred, s.dst_gap,
                                                             s.dst_overlap, t0, t1, want, CAP);
                                        cr_assert_lt(n, (size_t)CAP);
                                        int64_t after = t0 * 1000 - 1;
                                        for (size_t i = 0; i <= n; i++) {
                                                int64_t got;
                                                cr_assert_eq(tb_schedule_next(&s, after, &got,
                                                                              NULL, err,
                                                                              sizeof(err)),
                                                             TB_OK, "%s", err);
                                                if (i == n) {
                                                        cr_assert_gt(got / 1000, t1);
                                                        break;
                                                }
                                                char g[40], r[40];
                                                tb_tz_format_local(s.tz, got, g);
                                                tb_tz_format_local(s.tz, want[i] * 1000, r);
                                                cr_assert_eq(got, want[i] * 1000,
                                                             "%s '%s' gap=%d overlap=%d: fire "
                                                             "%zu is %s, reference %s",
                                                             zones[z], ref_exprs[e].expr,
                                                             s.dst_gap, s.dst_overlap, i, g,
                                                             r);
                                                after = got;
                                                compared++;
                                        }
                                }
                                tb_schedule_clear(&s);
                        }
                }
        }
        cr_log_info("glibc cross-check: %zu fires compared", compared);
}

/* ---- threads: zones are opened and shared concurrently -------------------- */

#include <pthread.h>

static const char *thread_zones[] = {"Europe/Paris", "Asia/Tokyo", "America/Chicago",
                                     "Australia/Adelaide", "Europe/Paris", "Asia/Tokyo"};

static void *thread_body(void *arg) {
        const char *zone = arg;
        char err[256];
        int64_t *sum = calloc(1, sizeof(*sum));
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON};
        if (!sum || tb_tz_open(zone, &s.tz, err, sizeof(err)) ||
            tb_cron_parse("*/7 * * * *", &s.cron, err, sizeof(err))) {
                free(sum);
                return NULL;
        }
        int64_t t = INT64_C(1767225600000), n;
        for (int i = 0; i < 20000; i++) {
                if (tb_schedule_next(&s, t, &n, NULL, err, sizeof(err)))
                        break;
                *sum += n % 1000003;
                t = n;
        }
        tb_schedule_clear(&s);
        return sum;
}

Test(tz, concurrent_open_and_use) {
        enum { NT = 6 };
        pthread_t th[NT];
        for (int i = 0; i < NT; i++)
                cr_assert_eq(pthread_create(&th[i], NULL, thread_body, (void *)thread_zones[i]), 0);
        int64_t sums[NT];
        for (int i = 0; i < NT; i++) {
                void *r;
                pthread_join(th[i], &r);
                cr_assert_not_null(r, "thread %d failed", i);
                sums[i] = *(int64_t *)r;
                free(r);
        }
        /* Same zone, same answers; and a single-threaded rerun agrees. */
        cr_expect_eq(sums[0], sums[4]);
        cr_expect_eq(sums[1], sums[5]);
        int64_t *again = thread_body((void *)thread_zones[0]);
        cr_assert_not_null(again);
        cr_expect_eq(*again, sums[0]);
        free(again);
}
