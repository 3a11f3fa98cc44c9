/**
 * @file test_calendar.c
 * @brief Business calendars from tests/data/calendars/fr-holidays.ics in
 *        Europe/Paris with a Saturday-Sunday weekend: which days they
 *        contain, business-day search, and the task rules (exclude, only,
 *        roll next / previous) on fires, including local midnight, DST
 *        gaps and overlaps, "last business day of the month" and
 *        collisions of rolled fires in a plan.
 *
 * 2026-12-25 and 2026-05-01 are Fridays, 2026-04-06 (Easter Monday) a
 * Monday; Paris springs forward on 2026-03-29 at 02:00 and falls back on
 * 2026-10-25 at 03:00.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule/calendar.h"
#include "support.h"
#include "tb.h"

static const tb_tz_t *paris(void) {
        const tb_tz_t *tz;
        char err[256];
        cr_assert_eq(tb_tz_open("Europe/Paris", &tz, err, sizeof(err)), TB_OK, "%s", err);
        return tz;
}

static tb_calendar_t *calendar_of(const char *name, const char *text, size_t len,
                                  unsigned weekend) {
        char err[512] = "";
        tb_ics_t *ics = NULL;
        cr_assert_eq(tb_ics_parse(text, len, &ics, err, sizeof(err)), TB_OK, "%s", err);
        tb_calendar_t *cal = NULL;
        cr_assert_eq(tb_calendar_new(name, paris(), weekend, ics, &cal, err, sizeof(err)), TB_OK,
                     "%s", err);
        tb_ics_free(ics);
        return cal;
}

static tb_calendar_t *fr(void) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/tests/data/calendars/fr-holidays.ics",
                 tbt_source_dir());
        FILE *f = fopen(path, "rb");
        cr_assert(f, "cannot open %s", path);
        static char buf[65536];
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        return calendar_of("fr", buf, len, TB_CALENDAR_SAT_SUN);
}

static int64_t day_of(const char *ymd) {
        int y, m, d;
        cr_assert_eq(sscanf(ymd, "%d-%d-%d", &y, &m, &d), 3);
        return tb_tz_days_from_civil(y, m, d);
}

static int64_t ms_of(const char *rfc3339) {
        char err[256];
        int64_t ms;
        cr_assert_eq(tb_time_parse(rfc3339, &ms, err, sizeof(err)), TB_OK, "%s", err);
        return ms;
}

static bool contains(const tb_calendar_t *cal, const char *ymd) {
        char err[256];
        bool in = false;
        cr_assert_eq(tb_calendar_contains(cal, day_of(ymd), &in, err, sizeof(err)), TB_OK,
                     "%s", err);
        return in;
}

/* Apply \p rules to the fire at local RFC 3339 \p at; check the verdict,
 * the local fire time and the reason. */
static void expect_apply(const tb_calendar_rule_t *rules, size_t n, const char *at,
                         tb_calendar_verdict_t verdict, const char *fire_local,
                         const char *reason) {
        char err[256], local[40];
        tb_calendar_decision_t dec;
        cr_assert_eq(tb_calendar_apply(rules, n, paris(), ms_of(at), &dec, err, sizeof(err)),
                     TB_OK, "%s: %s", at, err);
        cr_expect_eq(dec.verdict, verdict, "%s: verdict %s, want %s (%s)", at,
                     tb_calendar_verdict_name(dec.verdict), tb_calendar_verdict_name(verdict),
                     dec.reason);
        cr_expect_eq(dec.nominal_ms, ms_of(at));
        if (fire_local) {
                tb_tz_format_local(paris(), dec.fire_ms, local);
                cr_expect_str_eq(local, fire_local, "%s: fires at %s, want %s", at, local,
                                 fire_local);
                cr_expect_eq(dec.fire_ms, ms_of(fire_local), "%s: instant differs", at);
        }
        cr_expect_str_eq(dec.reason, reason, "%s:\n got: %s\nwant: %s", at, dec.reason, reason);
}

Test(calendar, days_of_the_holiday_file) {
        tb_calendar_t *cal = fr();
        cr_expect_str_eq(tb_calendar_name(cal), "fr");
        cr_expect(contains(cal, "2026-12-25"), "Christmas 2026 (Friday)");
        cr_expect(contains(cal, "2031-12-25"), "the yearly rule goes on (Thursday 2031)");
        cr_expect(contains(cal, "2020-12-25"), "from its DTSTART");
        cr_expect(!contains(cal, "2019-12-25"), "not before its DTSTART (a Wednesday)");
        cr_expect(!contains(cal, "2026-12-24"), "Thursday before Christmas");
        cr_expect(contains(cal, "2026-12-26"), "Saturday: the weekend");
        cr_expect(contains(cal, "2026-12-27"), "Sunday: the weekend");
        cr_expect(!contains(cal, "2026-12-28"), "Monday");
        cr_expect(contains(cal, "2027-01-01"), "New Year, yearly from DTSTART alone");
        cr_expect(contains(cal, "2026-04-06"), "Easter Monday 2026");
        cr_expect(!contains(cal, "2027-04-06"), "one-off: not in 2027 (a Tuesday)");
        cr_expect(contains(cal, "2028-05-01"), "COUNT=3: 2026, 2027, 2028");
        cr_expect(!contains(cal, "2029-05-01"), "COUNT=3: not 2029 (a Tuesday)");
        cr_expect(!contains(cal, "2026-06-15"), "a cancelled event is no holiday (Monday)");
        cr_expect(contains(cal, "2026-12-31"), "a timed event excludes its day");
        cr_expect(!contains(cal, "2026-12-30"), "but not the day before");
        /* 22:30-23:30Z on Thursday 3 September is Friday 00:30-01:30 in Paris */
        cr_expect(contains(cal, "2026-09-04"), "the UTC event lands on Friday in Paris");
        cr_expect(!contains(cal, "2026-09-03"), "not on Thursday");

        char err[256];
        bool in;
        cr_expect_eq(tb_calendar_contains(cal, day_of("2200-01-01"), &in, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect_str_eq(err, "calendar 'fr': 2200-01-01 is outside the years calendars cover "
                              "(1970-2199)");
        cr_expect_eq(tb_calendar_contains(cal, day_of("1969-12-31"), &in, err, sizeof(err)),
                     TB_ERR_INVALID);
        tb_calendar_free(cal);
}

Test(calendar, business_days) {
        tb_calendar_t *cal = fr();
        char err[256];
        int64_t d;
        /* Friday Christmas, then the weekend: Monday */
        cr_assert_eq(tb_calendar_next_business_day(cal, day_of("2026-12-25"), &d, err,
                                                   sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(d, day_of("2026-12-28"));
        cr_assert_eq(tb_calendar_previous_business_day(cal, day_of("2026-12-28"), &d, err,
                                                       sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(d, day_of("2026-12-24"));
        /* the weekend, then Easter Monday: Tuesday */
        cr_assert_eq(tb_calendar_next_business_day(cal, day_of("2026-04-03"), &d, err,
                                                   sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(d, day_of("2026-04-07"));
        cr_assert_eq(tb_calendar_previous_business_day(cal, day_of("2026-04-07"), &d, err,
                                                       sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(d, day_of("2026-04-03"));
        tb_calendar_free(cal);

        /* a calendar that covers all of 2027 has no business day near it */
        const char *all = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20270101\n"
                          "RRULE:FREQ=DAILY;UNTIL=20280131\nEND:VEVENT\nEND:VCALENDAR\n";
        cal = calendar_of("closed", all, strlen(all), 0);
        cr_expect_eq(tb_calendar_next_business_day(cal, day_of("2027-01-01"), &d, err,
                                                   sizeof(err)), TB_ERR_NOT_FOUND);
        cr_expect_str_eq(err, "calendar 'closed': no business day within 366 days after "
                              "2027-01-01");
        cr_assert_eq(tb_calendar_previous_business_day(cal, day_of("2027-06-01"), &d, err,
                                                       sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(d, day_of("2026-12-31"));
        tb_calendar_free(cal);
}

Test(calendar, exclude_and_only) {
        tb_calendar_t *cal = fr();
        tb_calendar_rule_t ex = {cal, TB_CALENDAR_EXCLUDE};
        expect_apply(&ex, 1, "2026-12-25T09:00:00+01:00", TB_CALENDAR_SKIPPED, NULL,
                     "2026-12-25 is in calendar 'fr' (exclude)");
        expect_apply(&ex, 1, "2026-12-24T09:00:00+01:00", TB_CALENDAR_FIRE,
                     "2026-12-24T09:00:00+01:00", "");
        /* local midnight decides, not UTC's: 23:30Z on the 24th is Christmas in Paris */
        expect_apply(&ex, 1, "2026-12-25T00:30:00+01:00", TB_CALENDAR_SKIPPED, NULL,
                     "2026-12-25 is in calendar 'fr' (exclude)");
        expect_apply(&ex, 1, "2026-12-24T23:30:00+01:00", TB_CALENDAR_FIRE,
                     "2026-12-24T23:30:00+01:00", "");
        /* on the night of the spring change, 00:30 CEST Monday is still Sunday in UTC */
        expect_apply(&ex, 1, "2026-03-30T00:30:00+02:00", TB_CALENDAR_FIRE,
                     "2026-03-30T00:30:00+02:00", "");
        expect_apply(&ex, 1, "2026-03-29T23:30:00+02:00", TB_CALENDAR_SKIPPED, NULL,
                     "2026-03-29 is in calendar 'fr' (exclude)");

        /* only: month ends (no weekend) */
        const char *me = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20260131\n"
                         "RRULE:FREQ=MONTHLY;BYMONTHDAY=-1\nSUMMARY:month end\nEND:VEVENT\n"
                         "END:VCALENDAR\n";
        tb_calendar_t *ends = calendar_of("month-end", me, strlen(me), 0);
        tb_calendar_rule_t only = {ends, TB_CALENDAR_ONLY};
        expect_apply(&only, 1, "2026-01-31T18:00:00+01:00", TB_CALENDAR_FIRE,
                     "2026-01-31T18:00:00+01:00", "");
        expect_apply(&only, 1, "2026-01-30T18:00:00+01:00", TB_CALENDAR_SKIPPED, NULL,
                     "2026-01-30 is not in calendar 'month-end' (only)");
        expect_apply(&only, 1, "2028-02-29T18:00:00+01:00", TB_CALENDAR_FIRE,
                     "2028-02-29T18:00:00+01:00", "");
        /* both: the first rule that skips is named */
        tb_calendar_rule_t both[] = {{ends, TB_CALENDAR_ONLY}, {cal, TB_CALENDAR_EXCLUDE}};
        expect_apply(both, 2, "2026-10-31T18:00:00+01:00", TB_CALENDAR_SKIPPED, NULL,
                     "2026-10-31 is in calendar 'fr' (exclude)");
        expect_apply(both, 2, "2026-09-30T18:00:00+02:00", TB_CALENDAR_FIRE,
                     "2026-09-30T18:00:00+02:00", "");
        tb_calendar_free(ends);
        tb_calendar_free(cal);
}

Test(calendar, roll_next_and_previous) {
        tb_calendar_t *cal = fr();
        tb_calendar_rule_t next = {cal, TB_CALENDAR_ROLL_NEXT};
        tb_calendar_rule_t prev = {cal, TB_CALENDAR_ROLL_PREVIOUS};
        /* Friday Christmas over the weekend to Monday, same local time */
        expect_apply(&next, 1, "2026-12-25T09:00:00+01:00", TB_CALENDAR_MOVED,
                     "2026-12-28T09:00:00+01:00",
                     "2026-12-25 is in calendar 'fr' (roll_next): moved to 2026-12-28");
        /* Saturday over Sunday and Easter Monday to Tuesday */
        expect_apply(&next, 1, "2026-04-04T09:00:00+02:00", TB_CALENDAR_MOVED,
                     "2026-04-07T09:00:00+02:00",
                     "2026-04-04 is in calendar 'fr' (roll_next): moved to 2026-04-07");
        expect_apply(&next, 1, "2026-04-07T09:00:00+02:00", TB_CALENDAR_FIRE,
                     "2026-04-07T09:00:00+02:00", "");
        expect_apply(&prev, 1, "2026-12-25T09:00:00+01:00", TB_CALENDAR_MOVED,
                     "2026-12-24T09:00:00+01:00",
                     "2026-12-25 is in calendar 'fr' (roll_previous): moved to 2026-12-24");
        expect_apply(&prev, 1, "2026-04-06T09:00:00+02:00", TB_CALENDAR_MOVED,
                     "2026-04-03T09:00:00+02:00",
                     "2026-04-06 is in calendar 'fr' (roll_previous): moved to 2026-04-03");
        /* the roll crosses the spring change: the local time is kept, the offset changes */
        expect_apply(&next, 1, "2026-03-28T09:00:00+01:00", TB_CALENDAR_MOVED,
                     "2026-03-30T09:00:00+02:00",
                     "2026-03-28 is in calendar 'fr' (roll_next): moved to 2026-03-30");

        /* an exclude calendar sees the day the fire happens */
        const char *bo = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261228\n"
                         "SUMMARY:blackout\nEND:VEVENT\nEND:VCALENDAR\n";
        tb_calendar_t *blackout = calendar_of("blackout", bo, strlen(bo), 0);
        tb_calendar_rule_t rb[] = {{blackout, TB_CALENDAR_EXCLUDE}, {cal, TB_CALENDAR_ROLL_NEXT}};
        expect_apply(rb, 2, "2026-12-25T09:00:00+01:00", TB_CALENDAR_SKIPPED, NULL,
                     "2026-12-28 is in calendar 'blackout' (exclude) after rolling");
        /* two roll calendars act together: the target is free in both */
        tb_calendar_rule_t r2[] = {{cal, TB_CALENDAR_ROLL_NEXT}, {blackout, TB_CALENDAR_ROLL_NEXT}};
        expect_apply(r2, 2, "2026-12-25T09:00:00+01:00", TB_CALENDAR_MOVED,
                     "2026-12-29T09:00:00+01:00",
                     "2026-12-25 is in calendar 'fr' (roll_next): moved to 2026-12-29");
        expect_apply(r2, 2, "2026-12-28T09:00:00+01:00", TB_CALENDAR_MOVED,
                     "2026-12-29T09:00:00+01:00",
                     "2026-12-28 is in calendar 'blackout' (roll_next): moved to 2026-12-29");

        /* one direction per task */
        tb_calendar_rule_t mixed[] = {{cal, TB_CALENDAR_ROLL_NEXT},
                                      {blackout, TB_CALENDAR_ROLL_PREVIOUS}};
        char err[256];
        tb_calendar_decision_t dec;
        cr_expect_eq(tb_calendar_apply(mixed, 2, paris(), ms_of("2026-12-25T09:00:00Z"), &dec,
                                       err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect_str_eq(err, "calendars[1].rule: roll_next and roll_previous cannot both be "
                              "used by one task (keep one direction)");
        tb_calendar_rule_t none = {NULL, TB_CALENDAR_EXCLUDE};
        cr_expect_eq(tb_calendar_apply(&none, 1, paris(), 0, &dec, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect_str_eq(err, "calendars[0]: no calendar");

        /* a calendar with no business day near: skipped, with the reason */
        const char *all = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20270101\n"
                          "DURATION:P367D\nEND:VEVENT\nEND:VCALENDAR\n";
        tb_calendar_t *closed = calendar_of("closed", all, strlen(all), 0);
        tb_calendar_rule_t rc = {closed, TB_CALENDAR_ROLL_NEXT};
        expect_apply(&rc, 1, "2027-01-01T09:00:00+01:00", TB_CALENDAR_SKIPPED, NULL,
                     "2027-01-01 is in calendar 'closed' (roll_next) and no business day is "
                     "within 366 days");
        tb_calendar_free(closed);
        tb_calendar_free(blackout);
        tb_calendar_free(cal);
}

Test(calendar, roll_across_dst_changes) {
        /* no weekend; closed Saturday 28 March, Saturday 24 and Monday 26 October */
        const char *ops = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20260328\n"
                          "END:VEVENT\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261024\nEND:VEVENT\n"
                          "BEGIN:VEVENT\nDTSTART;VALUE=DATE:20261026\nEND:VEVENT\n"
                          "END:VCALENDAR\n";
        tb_calendar_t *cal = calendar_of("paris-ops", ops, strlen(ops), 0);
        tb_calendar_rule_t next = {cal, TB_CALENDAR_ROLL_NEXT};
        tb_calendar_rule_t prev = {cal, TB_CALENDAR_ROLL_PREVIOUS};
        /* 02:30 does not exist on Sunday 29 March: the first instant after the gap */
        expect_apply(&next, 1, "2026-03-28T02:30:00+01:00", TB_CALENDAR_MOVED,
                     "2026-03-29T03:00:00+02:00",
                     "2026-03-28 is in calendar 'paris-ops' (roll_next): moved to 2026-03-29");
        /* 02:30 happens twice on Sunday 25 October: the first (summer time) */
        expect_apply(&next, 1, "2026-10-24T02:30:00+02:00", TB_CALENDAR_MOVED,
                     "2026-10-25T02:30:00+02:00",
                     "2026-10-24 is in calendar 'paris-ops' (roll_next): moved to 2026-10-25");
        expect_apply(&prev, 1, "2026-10-26T02:30:00+01:00", TB_CALENDAR_MOVED,
                     "2026-10-25T02:30:00+02:00",
                     "2026-10-26 is in calendar 'paris-ops' (roll_previous): moved to "
                     "2026-10-25");
        /* 23:30 keeps its local time across the change (22:30Z, then 21:30Z) */
        expect_apply(&next, 1, "2026-03-28T23:30:00+01:00", TB_CALENDAR_MOVED,
                     "2026-03-29T23:30:00+02:00",
                     "2026-03-28 is in calendar 'paris-ops' (roll_next): moved to 2026-03-29");
        tb_calendar_free(cal);
}

typedef struct planned {
        tb_calendar_verdict_t v;
        const char *fire; /* local RFC 3339 */
        const char *reason;
} planned_t;

/* The plan of cron \p expr in Paris with \p rule from \p after must be
 * \p want, \p n occurrences. */
static void expect_plan(const char *expr, tb_calendar_rule_t rule, const char *after,
                        const planned_t *want, size_t n) {
        char err[256];
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON, .tz = paris()};
        cr_assert_eq(tb_cron_parse(expr, &s.cron, err, sizeof(err)), TB_OK, "%s", err);
        tb_calendar_decision_t d[16];
        size_t got;
        cr_assert(n <= TB_ARRAY_LEN(d));
        cr_assert_eq(tb_calendar_plan(&s, &rule, 1, ms_of(after), n, d, &got, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(got, n);
        for (size_t i = 0; i < n; i++) {
                char local[40];
                tb_tz_format_local(s.tz, d[i].fire_ms, local);
                cr_expect_eq(d[i].verdict, want[i].v, "%s occurrence %zu: %s, want %s", expr, i,
                             tb_calendar_verdict_name(d[i].verdict),
                             tb_calendar_verdict_name(want[i].v));
                cr_expect_str_eq(local, want[i].fire, "%s occurrence %zu", expr, i);
                cr_expect_str_eq(d[i].reason, want[i].reason,
                                 "%s occurrence %zu:\n got: %s\nwant: %s", expr, i, d[i].reason,
                                 want[i].reason);
        }
        tb_schedule_clear(&s);
}

Test(calendar, last_business_day_of_the_month) {
        tb_calendar_t *cal = fr();
        static const planned_t want[] = {
                {TB_CALENDAR_MOVED, "2026-05-29T18:00:00+02:00",
                 "2026-05-31 is in calendar 'fr' (roll_previous): moved to 2026-05-29"},
                {TB_CALENDAR_FIRE, "2026-06-30T18:00:00+02:00", ""}, /* Tuesday */
                {TB_CALENDAR_FIRE, "2026-07-31T18:00:00+02:00", ""}, /* Friday */
                {TB_CALENDAR_FIRE, "2026-08-31T18:00:00+02:00", ""}, /* Monday */
                {TB_CALENDAR_FIRE, "2026-09-30T18:00:00+02:00", ""}, /* Wednesday */
                {TB_CALENDAR_MOVED, "2026-10-30T18:00:00+01:00",
                 "2026-10-31 is in calendar 'fr' (roll_previous): moved to 2026-10-30"},
        };
        expect_plan("0 18 L * *", (tb_calendar_rule_t){cal, TB_CALENDAR_ROLL_PREVIOUS},
                    "2026-05-01T00:00:00Z", want, TB_ARRAY_LEN(want));
        tb_calendar_free(cal);
}

Test(calendar, plan_drops_collisions) {
        tb_calendar_t *cal = fr();
        static const planned_t want[] = {
                {TB_CALENDAR_FIRE, "2026-12-24T09:00:00+01:00", ""},
                {TB_CALENDAR_MOVED, "2026-12-28T09:00:00+01:00",
                 "2026-12-25 is in calendar 'fr' (roll_next): moved to 2026-12-28"},
                {TB_CALENDAR_DUPLICATE, "2026-12-28T09:00:00+01:00",
                 "2026-12-26 is in calendar 'fr' (roll_next): moved to 2026-12-28; the "
                 "occurrence of 2026-12-25T08:00:00Z already runs at that instant"},
                {TB_CALENDAR_DUPLICATE, "2026-12-28T09:00:00+01:00",
                 "2026-12-27 is in calendar 'fr' (roll_next): moved to 2026-12-28; the "
                 "occurrence of 2026-12-25T08:00:00Z already runs at that instant"},
                {TB_CALENDAR_DUPLICATE, "2026-12-28T09:00:00+01:00",
                 "the occurrence of 2026-12-25T08:00:00Z already runs at that instant"},
                {TB_CALENDAR_FIRE, "2026-12-29T09:00:00+01:00", ""},
                {TB_CALENDAR_FIRE, "2026-12-30T09:00:00+01:00", ""},
        };
        expect_plan("0 9 * * *", (tb_calendar_rule_t){cal, TB_CALENDAR_ROLL_NEXT},
                    "2026-12-23T12:00:00Z", want, TB_ARRAY_LEN(want));
        /* rolling back: Friday's own run owns the instant, the weekend's are duplicates */
        static const planned_t back[] = {
                {TB_CALENDAR_FIRE, "2026-04-03T09:00:00+02:00", ""},
                {TB_CALENDAR_DUPLICATE, "2026-04-03T09:00:00+02:00",
                 "2026-04-04 is in calendar 'fr' (roll_previous): moved to 2026-04-03; the "
                 "occurrence of 2026-04-03T07:00:00Z already runs at that instant"},
                {TB_CALENDAR_DUPLICATE, "2026-04-03T09:00:00+02:00",
                 "2026-04-05 is in calendar 'fr' (roll_previous): moved to 2026-04-03; the "
                 "occurrence of 2026-04-03T07:00:00Z already runs at that instant"},
                {TB_CALENDAR_DUPLICATE, "2026-04-03T09:00:00+02:00",
                 "2026-04-06 is in calendar 'fr' (roll_previous): moved to 2026-04-03; the "
                 "occurrence of 2026-04-03T07:00:00Z already runs at that instant"},
                {TB_CALENDAR_FIRE, "2026-04-07T09:00:00+02:00", ""},
        };
        expect_plan("0 9 * * *", (tb_calendar_rule_t){cal, TB_CALENDAR_ROLL_PREVIOUS},
                    "2026-04-02T12:00:00Z", back, TB_ARRAY_LEN(back));
        tb_calendar_free(cal);
}

Test(calendar, refused) {
        char err[512];
        tb_calendar_t *cal = NULL;
        unsigned w;
        cr_expect_eq(tb_calendar_weekend_parse("sat,SUN", &w, err, sizeof(err)), TB_OK);
        cr_expect_eq(w, TB_CALENDAR_SAT_SUN);
        cr_expect_eq(tb_calendar_weekend_parse("none", &w, err, sizeof(err)), TB_OK);
        cr_expect_eq(w, 0u);
        cr_expect_eq(tb_calendar_weekend_parse("fri,saturday", &w, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect_str_eq(err, "weekend: 'saturday' is not a weekday (use mon, tue, wed, thu, "
                              "fri, sat, sun, comma-separated, or none)");
        cr_expect_eq(tb_calendar_new("all", NULL, 0x7f, NULL, &cal, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect_str_eq(err, "calendar 'all': weekend: every day of the week leaves no "
                              "business day (name at most six weekdays)");
        cr_expect_null(cal);
        cr_expect_eq(tb_calendar_new("", NULL, 0, NULL, &cal, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect_str_eq(err, "calendar: name must be 1 to 128 bytes");

        /* unbounded daily rules since 1800 (each about 440,000 steps up to 2200):
         * the 46th runs out of the budget and is named by its line */
        char text[8192];
        int n = snprintf(text, sizeof(text), "BEGIN:VCALENDAR\n");
        for (int i = 0; i < 60; i++)
                n += snprintf(text + n, sizeof(text) - (size_t)n,
                              "BEGIN:VEVENT\nDTSTART;VALUE=DATE:18000101\nRRULE:FREQ=DAILY\n"
                              "END:VEVENT\n");
        snprintf(text + n, sizeof(text) - (size_t)n, "END:VCALENDAR\n");
        tb_ics_t *ics = NULL;
        cr_assert_eq(tb_ics_parse(text, strlen(text), &ics, err, sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(tb_calendar_new("daily", NULL, 0, ics, &cal, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect_null(cal);
        cr_expect_str_eq(err, "ics: line 182: RRULE: more than 20000000 days to expand in all: "
                              "bound it with COUNT or UNTIL");
        tb_ics_free(ics);
}
