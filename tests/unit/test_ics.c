/**
 * @file test_ics.c
 * @brief The iCalendar reader: the holiday file of tests/data/calendars
 *        (CRLF, folded lines, VTIMEZONE and VALARM skipped, a cancelled
 *        event left out), RRULE expansion (yearly, monthly by weekday and
 *        day, weekly with an interval, daily with UNTIL, EXDATE, leap days)
 *        and malformed inputs with their exact messages.
 *
 * Expected occurrence dates were worked out by hand and checked against
 * python-dateutil's rrule.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule/ics.h"
#include "support.h"
#include "tb.h"

static char *read_data(const char *rel, size_t *len) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", tbt_source_dir(), rel);
        FILE *f = fopen(path, "rb");
        cr_assert(f, "cannot open %s", path);
        char *buf = malloc(1 << 20);
        cr_assert(buf);
        *len = fread(buf, 1, (1 << 20) - 1, f);
        buf[*len] = '\0';
        fclose(f);
        return buf;
}

static tb_ics_t *parse_ok(const char *text) {
        char err[512] = "";
        tb_ics_t *ics = NULL;
        cr_assert_eq(tb_ics_parse(text, strlen(text), &ics, err, sizeof(err)), TB_OK,
                     "parse failed: %s\n%s", err, text);
        return ics;
}

typedef struct occ {
        char dates[64][20];
        int n;
} occ_t;

static bool collect(void *ctx, int64_t wall) {
        occ_t *o = ctx;
        int64_t day = wall >= 0 ? wall / 86400 : -((-wall + 86399) / 86400);
        int64_t y;
        int m, d;
        tb_tz_civil_from_days(day, &y, &m, &d);
        int64_t sod = wall - day * 86400;
        if (sod)
                snprintf(o->dates[o->n], sizeof(o->dates[0]), "%04d-%02d-%02dT%02d:%02d",
                         (int)y, m, d, (int)(sod / 3600), (int)(sod / 60 % 60));
        else
                snprintf(o->dates[o->n], sizeof(o->dates[0]), "%04d-%02d-%02d", (int)y, m, d);
        return ++o->n < 64;
}

/* The occurrences of the only event of \p body (VEVENT lines), up to
 * \p until (YYYY-MM-DD), must be \p want (NULL-terminated). */
static void expect_occurrences(const char *body, const char *until, const char *const *want) {
        char text[4096];
        snprintf(text, sizeof(text), "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n%s"
                                     "END:VEVENT\r\nEND:VCALENDAR\r\n",
                 body);
        tb_ics_t *ics = parse_ok(text);
        cr_assert_eq(ics->nevents, 1);
        int y, m, d;
        cr_assert_eq(sscanf(until, "%d-%d-%d", &y, &m, &d), 3);
        occ_t o = {.n = 0};
        size_t budget = TB_ICS_MAX_EXPANSION;
        char err[256];
        cr_assert_eq(tb_ics_event_expand(&ics->events[0],
                                         tb_tz_days_from_civil(y, m, d) * 86400 + 86399, &budget,
                                         collect, &o, err, sizeof(err)),
                     TB_OK, "%s", err);
        int nw = 0;
        while (want[nw])
                nw++;
        for (int i = 0; i < o.n && i < nw; i++)
                cr_expect_str_eq(o.dates[i], want[i], "%s: occurrence %d is %s, want %s", body, i,
                                 o.dates[i], want[i]);
        cr_expect_eq(o.n, nw, "%s: %d occurrences, want %d (last %s)", body, o.n, nw,
                     o.n ? o.dates[o.n - 1] : "-");
        tb_ics_free(ics);
}

Test(ics, holiday_file) {
        size_t len;
        char *text = read_data("tests/data/calendars/fr-holidays.ics", &len);
        cr_assert(strstr(text, "\r\n"), "the fixture must use CRLF");
        char err[512] = "";
        tb_ics_t *ics = NULL;
        cr_assert_eq(tb_ics_parse(text, len, &ics, err, sizeof(err)), TB_OK, "%s", err);
        /* seven VEVENTs, one cancelled; the VTIMEZONE's RRULEs are not events */
        cr_expect_eq(ics->nevents, 6);
        cr_expect_str_eq(ics->name, "France holidays (taskbus test)");
        cr_expect_str_eq(tb_tz_name(ics->tz), "Europe/Paris");
        cr_expect_str_eq(ics->events[0].summary, "No\xc3\xabl");
        cr_expect(ics->events[0].all_day);
        cr_expect_eq(ics->events[0].duration_s, 86400);
        cr_expect_eq(ics->events[0].rrule.freq, TB_ICS_FREQ_YEARLY);
        cr_expect_str_eq(ics->events[3].summary, "F\xc3\xaate du travail");
        cr_expect_eq(ics->events[3].rrule.count, 3);
        /* timed, with TZID: wall time of Paris, 4 hours */
        const tb_ics_event_t *closed = &ics->events[4];
        cr_expect(!closed->all_day);
        cr_expect_str_eq(tb_tz_name(closed->tz), "Europe/Paris");
        cr_expect_eq(closed->start_wall_s, tb_tz_days_from_civil(2026, 12, 31) * 86400 + 14 * 3600);
        cr_expect_eq(closed->duration_s, 4 * 3600);
        /* "Z": UTC wall time */
        const tb_ics_event_t *maint = &ics->events[5];
        cr_expect_eq(maint->tz, tb_tz_utc());
        cr_expect_eq(maint->duration_s, 3600);
        for (size_t i = 0; i < ics->nevents; i++)
                cr_expect(!strstr(ics->events[i].summary, "cancelled"), "cancelled event kept");

        /* Christmas every year from 2020 */
        occ_t o = {.n = 0};
        size_t budget = TB_ICS_MAX_EXPANSION;
        cr_assert_eq(tb_ics_event_expand(&ics->events[0], tb_tz_days_from_civil(2027, 12, 31) * 86400,
                                         &budget, collect, &o, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(o.n, 8);
        cr_expect_str_eq(o.dates[0], "2020-12-25");
        cr_expect_str_eq(o.dates[6], "2026-12-25");
        cr_expect_str_eq(o.dates[7], "2027-12-25");
        tb_ics_free(ics);

        /* the same file with LF line ends parses the same */
        size_t w = 0;
        for (size_t i = 0; i < len; i++)
                if (text[i] != '\r')
                        text[w++] = text[i];
        cr_assert_eq(tb_ics_parse(text, w, &ics, err, sizeof(err)), TB_OK, "LF: %s", err);
        cr_expect_eq(ics->nevents, 6);
        tb_ics_free(ics);
        free(text);
}

Test(ics, yearly_rules) {
        expect_occurrences("DTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=YEARLY\r\n", "2028-12-31",
                           (const char *[]){"2026-01-01", "2027-01-01", "2028-01-01", NULL});
        /* Thanksgiving: the 4th Thursday of November */
        expect_occurrences("DTSTART;VALUE=DATE:20261126\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH\r\n",
                           "2029-01-01",
                           (const char *[]){"2026-11-26", "2027-11-25", "2028-11-23", NULL});
        /* Memorial Day: the last Monday of May, lower case accepted */
        expect_occurrences("dtstart;value=date:20260525\r\nrrule:freq=yearly;bymonth=5;byday=-1mo\r\n",
                           "2028-12-31",
                           (const char *[]){"2026-05-25", "2027-05-31", "2028-05-29", NULL});
        /* the first Monday of the year (ordinal over the year) */
        expect_occurrences("DTSTART;VALUE=DATE:20260105\r\nRRULE:FREQ=YEARLY;BYDAY=1MO;COUNT=3\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-01-05", "2027-01-04", "2028-01-03", NULL});
        /* February 29th: leap years only */
        expect_occurrences("DTSTART;VALUE=DATE:20240229\r\nRRULE:FREQ=YEARLY;COUNT=3\r\n",
                           "2100-01-01",
                           (const char *[]){"2024-02-29", "2028-02-29", "2032-02-29", NULL});
        /* every other year, until a date */
        expect_occurrences("DTSTART;VALUE=DATE:20260714\r\n"
                           "RRULE:FREQ=YEARLY;INTERVAL=2;UNTIL=20300714\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-07-14", "2028-07-14", "2030-07-14", NULL});
}

Test(ics, wide_rules) {
        /* 64 BYDAY entries and 31 BYMONTHDAY values: the most a rule holds, and
         * enough work per year to need more than a small check budget */
        char body[1024];
        int n = snprintf(body, sizeof(body),
                         "DTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=YEARLY;BYMONTHDAY=1");
        for (int d = 2; d <= 31; d++)
                n += snprintf(body + n, sizeof(body) - (size_t)n, ",-%d", d);
        n += snprintf(body + n, sizeof(body) - (size_t)n, ";BYDAY=TH");
        for (int i = 1; i < 64; i++)
                n += snprintf(body + n, sizeof(body) - (size_t)n, ",TH");
        snprintf(body + n, sizeof(body) - (size_t)n, "\r\n");
        /* day 1 or -2..-31: every day but a month's last; and a Thursday */
        expect_occurrences(body, "2026-01-15",
                           (const char *[]){"2026-01-01", "2026-01-08", "2026-01-15", NULL});
}

Test(ics, monthly_weekly_daily_rules) {
        /* the last Friday of each month */
        expect_occurrences("DTSTART;VALUE=DATE:20260130\r\nRRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=3\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-01-30", "2026-02-27", "2026-03-27", NULL});
        /* the 31st: months without one are skipped */
        expect_occurrences("DTSTART;VALUE=DATE:20260131\r\nRRULE:FREQ=MONTHLY;COUNT=4\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-01-31", "2026-03-31", "2026-05-31",
                                            "2026-07-31", NULL});
        /* the last day of the month, in the first quarter */
        expect_occurrences("DTSTART;VALUE=DATE:20280131\r\n"
                           "RRULE:FREQ=MONTHLY;BYMONTHDAY=-1;BYMONTH=1,2,3\r\n",
                           "2028-12-31",
                           (const char *[]){"2028-01-31", "2028-02-29", "2028-03-31", NULL});
        /* Friday the 13th */
        expect_occurrences("DTSTART;VALUE=DATE:20260213\r\n"
                           "RRULE:FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13\r\n",
                           "2027-12-31",
                           (const char *[]){"2026-02-13", "2026-03-13", "2026-11-13",
                                            "2027-08-13", NULL});
        /* Monday and Wednesday every other week */
        expect_occurrences("DTSTART;VALUE=DATE:20260105\r\n"
                           "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;COUNT=5\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-01-05", "2026-01-07", "2026-01-19",
                                            "2026-01-21", "2026-02-02", NULL});
        /* every third day until the 10th, at a local time */
        expect_occurrences("DTSTART;TZID=Europe/Paris:20260101T083000\r\n"
                           "RRULE:FREQ=DAILY;INTERVAL=3;UNTIL=20260110T073000Z\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-01-01T08:30", "2026-01-04T08:30",
                                            "2026-01-07T08:30", "2026-01-10T08:30", NULL});
        /* EXDATE leaves one out; it still counts toward COUNT */
        expect_occurrences("DTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=DAILY;COUNT=5\r\n"
                           "EXDATE;VALUE=DATE:20260103,20260105\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-01-01", "2026-01-02", "2026-01-04", NULL});
        /* daily, weekdays of June only */
        expect_occurrences("DTSTART;VALUE=DATE:20260601\r\n"
                           "RRULE:FREQ=DAILY;BYMONTH=6;BYDAY=MO,TU,WE,TH,FR;UNTIL=20260609\r\n",
                           "2100-01-01",
                           (const char *[]){"2026-06-01", "2026-06-02", "2026-06-03",
                                            "2026-06-04", "2026-06-05", "2026-06-08",
                                            "2026-06-09", NULL});
        /* no RRULE: one occurrence; the expansion stops at the bound */
        expect_occurrences("DTSTART;VALUE=DATE:20260101\r\n", "2025-12-31",
                           (const char *[]){NULL});
        expect_occurrences("DTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=YEARLY\r\n", "2026-12-31",
                           (const char *[]){"2026-01-01", NULL});
}

Test(ics, durations_and_ends) {
        tb_ics_t *ics = parse_ok("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261224\n"
                                 "DTEND;VALUE=DATE:20261227\nEND:VEVENT\nBEGIN:VEVENT\n"
                                 "DTSTART:20260101T100000Z\nDURATION:P1DT2H30M\nEND:VEVENT\n"
                                 "BEGIN:VEVENT\nDTSTART;VALUE=DATE:20260101\nDURATION:P2W\n"
                                 "END:VEVENT\nBEGIN:VEVENT\nDTSTART:20260101T100000\nEND:VEVENT\n"
                                 "BEGIN:VEVENT\nDTSTART;TZID=America/New_York:20260101T100000\n"
                                 "DTEND:20260101T160000Z\nEND:VEVENT\nEND:VCALENDAR\n");
        cr_assert_eq(ics->nevents, 5);
        cr_expect_eq(ics->events[0].duration_s, 3 * 86400);
        cr_expect_eq(ics->events[1].duration_s, 86400 + 2 * 3600 + 1800);
        cr_expect_eq(ics->events[2].duration_s, 14 * 86400);
        cr_expect_eq(ics->events[3].tz, NULL, "no TZID and no Z: floating");
        cr_expect_eq(ics->events[3].duration_s, 0);
        /* 10:00 in New York (-05:00) to 16:00Z = 11:00 there: an hour */
        cr_expect_eq(ics->events[4].duration_s, 3600);
        tb_ics_free(ics);
}

typedef struct bad {
        const char *text;
        const char *msg;
} bad_t;

#define CAL(body) "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n" body "END:VEVENT\r\nEND:VCALENDAR\r\n"

Test(ics, malformed_inputs) {
        static const bad_t cases[] = {
                {"", "ics: the input is empty (BEGIN:VCALENDAR expected)"},
                {"\r\n\r\n", "ics: the input is empty (BEGIN:VCALENDAR expected)"},
                {"BEGIN:VEVENT\r\n", "ics: line 1: BEGIN: the input must start with BEGIN:VCALENDAR"},
                {"BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\n",
                 "ics: line 2: BEGIN:VEVENT is never closed (END:VEVENT missing)"},
                {"BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\nEND:VTODO\n",
                 "ics: line 4: END:VTODO does not match BEGIN:VEVENT at line 2"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1\r\n"),
                 "ics: line 4: RRULE: BYSETPOS is not supported (supported: FREQ, INTERVAL, "
                 "COUNT, UNTIL, BYMONTH, BYMONTHDAY, BYDAY, WKST)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=HOURLY\r\n"),
                 "ics: line 4: RRULE: FREQ=HOURLY is not supported (use YEARLY, MONTHLY, "
                 "WEEKLY or DAILY)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:COUNT=2\r\n"),
                 "ics: line 4: RRULE: FREQ is missing"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=YEARLY;COUNT=2;UNTIL=20301225\r\n"),
                 "ics: line 4: RRULE: COUNT and UNTIL cannot both be given"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=YEARLY;COUNT=0\r\n"),
                 "ics: line 4: RRULE: COUNT=0 is not a whole number from 1 to 100000"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=WEEKLY;BYDAY=2MO\r\n"),
                 "ics: line 4: RRULE: BYDAY: an ordinal (2MO) needs FREQ=MONTHLY, or YEARLY "
                 "(-5..5 with BYMONTH)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=YEARLY;BYMONTH=13\r\n"),
                 "ics: line 4: RRULE: BYMONTH: '13' is not a month 1-12"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=YEARLY;BYDAY=XX\r\n"),
                 "ics: line 4: RRULE: BYDAY: 'XX' is not a weekday (MO, 1MO, -1FR...)"},
                {CAL("DTSTART;VALUE=DATE:20261226\r\nRRULE:FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=25\r\n"),
                 "ics: line 4: RRULE: DTSTART 2026-12-26 is not an occurrence of the rule (RFC "
                 "5545 leaves that undefined): make DTSTART the first occurrence"},
                {CAL("DTSTART:20261225\r\n"),
                 "ics: line 3: DTSTART: '20261225' is a date: write DTSTART;VALUE=DATE:20261225 "
                 "for an all-day event"},
                {CAL("DTSTART;VALUE=DATE:20260230\r\n"),
                 "ics: line 3: DTSTART: '20260230' is not a valid date or time (years "
                 "1800-9999)"},
                {CAL("DTSTART:2026-12-25T10:00:00Z\r\n"),
                 "ics: line 3: DTSTART: '2026-12-25T10:00:00Z' is not a date (YYYYMMDD) or a "
                 "date-time (YYYYMMDDTHHMMSS, optionally with Z)"},
                {CAL("DTSTART;TZID=Mars/Olympus:20261225T100000\r\n"),
                 "ics: line 3: DTSTART: TZID: unknown time zone 'Mars/Olympus' (use an IANA "
                 "name such as 'Europe/London' or 'UTC') (only IANA zone names are "
                 "supported; VTIMEZONE definitions are not read)"},
                {CAL("DTSTART;TZID=Europe/Paris:20261225T100000Z\r\n"),
                 "ics: line 3: DTSTART: TZID applies only to a local date-time (no Z, not a "
                 "date)"},
                {CAL("DTSTART;VALUE=PERIOD:20261225\r\n"),
                 "ics: line 3: DTSTART: VALUE=PERIOD is not supported (use DATE or DATE-TIME)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRDATE;VALUE=DATE:20261226\r\n"),
                 "ics: line 4: RDATE is not supported (give each date its own VEVENT, or use "
                 "RRULE)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nRECURRENCE-ID;VALUE=DATE:20261225\r\n"),
                 "ics: line 4: RECURRENCE-ID is not supported (give each date its own VEVENT, "
                 "or use RRULE)"},
                {CAL("SUMMARY:no start\r\n"), "ics: line 2: VEVENT has no DTSTART"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nDTSTART;VALUE=DATE:20261226\r\n"),
                 "ics: line 4: DTSTART appears twice in one VEVENT"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261225\r\n"),
                 "ics: line 2: DTEND is before DTSTART or on the same day (an all-day event's "
                 "DTEND is the day after)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nDTEND:20261226T000000Z\r\n"),
                 "ics: line 2: DTEND must be a date like DTSTART"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nDURATION:PT1H\r\n"),
                 "ics: line 4: DURATION: 'PT1H' is not a whole number of days, as an all-day "
                 "event needs (P1D, P2W)"},
                {CAL("DTSTART:20261225T100000Z\r\nDURATION:P1H\r\n"),
                 "ics: line 4: DURATION: 'P1H' is not an RFC 5545 duration (P1D, PT2H30M, P1W)"},
                {CAL("DTSTART:20261225T100000Z\r\nDURATION:-PT1H\r\n"),
                 "ics: line 4: DURATION: a negative duration '-PT1H' is not allowed"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261226\r\nDURATION:P1D\r\n"),
                 "ics: line 2: VEVENT has both DTEND and DURATION (keep one)"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nEXDATE:20261225T000000Z\r\n"),
                 "ics: line 4: EXDATE must be a date (VALUE=DATE) like DTSTART"},
                {CAL("DTSTART:20261225T100000\r\nRRULE:FREQ=DAILY;UNTIL=20261230T000000Z\r\n"),
                 "ics: line 4: RRULE UNTIL: a UTC or TZID time but DTSTART is floating: use "
                 "the same form"},
                {CAL("DTSTART;VALUE=DATE:20261225\r\nno colon here\r\n"),
                 "ics: line 4: not a content line (NAME[;PARAM=V]:VALUE expected)"},
                {CAL("DTSTART;TZID=\"Europe/Paris:20261225T100000\r\n"),
                 "ics: line 3: DTSTART: parameter TZID: unterminated quote"},
                {" BEGIN:VCALENDAR\r\n",
                 "ics: line 1: a continuation line (starting with a space) with no line to "
                 "continue"},
                {"BEGIN:VCALENDAR\rEND:VCALENDAR\r",
                 "ics: line 1: a CR not followed by LF (lines end with CRLF or LF)"},
                {"BEGIN:VCALENDAR\r\nX-A:b\0c\r\nEND:VCALENDAR\r\n",
                 "ics: line 2: control character 0x00 (iCalendar is text: remove it)"},
                {"BEGIN:VCALENDAR\r\nX-A:\xc3\x28\r\nEND:VCALENDAR\r\n",
                 "ics: line 2: invalid UTF-8 (save the file as UTF-8)"},
                {"BEGIN:VCALENDAR\r\nVERSION:1.0\r\nEND:VCALENDAR\r\n",
                 "ics: line 2: VERSION: '1.0' is not supported (only 2.0, RFC 5545)"},
                {"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\nBEGIN:VCALENDAR\r\n",
                 "ics: line 3: BEGIN after END:VCALENDAR (one calendar per input)"},
                {"BEGIN:VCALENDAR\r\nBEGIN:A\r\nBEGIN:B\r\nBEGIN:C\r\nBEGIN:D\r\nBEGIN:E\r\n"
                 "BEGIN:F\r\nBEGIN:G\r\nBEGIN:H\r\n",
                 "ics: line 9: BEGIN: components nested more than 8 deep"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
                char err[512] = "";
                tb_ics_t *ics = (tb_ics_t *)0x1;
                size_t len = strlen(cases[i].text);
                if (strstr(cases[i].msg, "0x00"))
                        len = sizeof("BEGIN:VCALENDAR\r\nX-A:b\0c\r\nEND:VCALENDAR\r\n") - 1;
                tb_err_t e = tb_ics_parse(cases[i].text, len, &ics, err, sizeof(err));
                cr_expect_eq(e, TB_ERR_INVALID, "case %zu: %s", i, cases[i].text);
                cr_expect_null(ics, "case %zu: no output on error", i);
                cr_expect_str_eq(err, cases[i].msg, "case %zu:\n got: %s\nwant: %s", i, err,
                                 cases[i].msg);
        }
}

Test(ics, limits) {
        char err[512];
        tb_ics_t *ics = NULL;
        /* over 1 MiB */
        size_t big = TB_ICS_MAX_INPUT + 1;
        char *text = malloc(big + 1);
        cr_assert(text);
        memset(text, 'X', big);
        text[big] = '\0';
        cr_expect_eq(tb_ics_parse(text, big, &ics, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect_str_eq(err, "ics: the calendar is 1048577 bytes, over the limit of 1048576 "
                              "(1 MiB)");
        /* a line of 8193 bytes, and one that unfolding makes that long */
        int n = snprintf(text, big, "BEGIN:VCALENDAR\r\nX-LONG:");
        memset(text + n, 'a', 8193 - 7);
        strcpy(text + n + 8193 - 7, "\r\nEND:VCALENDAR\r\n");
        cr_expect_eq(tb_ics_parse(text, strlen(text), &ics, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect_str_eq(err, "ics: line 2: content line longer than 8192 bytes after unfolding");
        n = snprintf(text, big, "BEGIN:VCALENDAR\r\nX-LONG:a\r\n");
        for (int i = 0; i < 100; i++)
                n += snprintf(text + n, big - (size_t)n, " %060d\r\n", i);
        strcpy(text + n, "END:VCALENDAR\r\n");
        cr_expect_eq(tb_ics_parse(text, strlen(text), &ics, err, sizeof(err)), TB_OK, "%s", err);
        tb_ics_free(ics);
        n = snprintf(text, big, "BEGIN:VCALENDAR\r\nX-LONG:a\r\n");
        for (int i = 0; i < 140; i++)
                n += snprintf(text + n, big - (size_t)n, " %060d\r\n", i);
        strcpy(text + n, "END:VCALENDAR\r\n");
        cr_expect_eq(tb_ics_parse(text, strlen(text), &ics, err, sizeof(err)), TB_ERR_INVALID);
        cr_expect_str_eq(err, "ics: line 2: content line longer than 8192 bytes after unfolding");
        /* exactly 10,000 events pass, 10,001 do not */
        for (int extra = 0; extra < 2; extra++) {
                n = snprintf(text, big, "BEGIN:VCALENDAR\n");
                for (int i = 0; i < TB_ICS_MAX_EVENTS + extra; i++)
                        n += snprintf(text + n, big - (size_t)n,
                                      "BEGIN:VEVENT\nDTSTART;VALUE=DATE:2026%02d%02d\nEND:VEVENT\n",
                                      i % 12 + 1, i % 28 + 1);
                strcpy(text + n, "END:VCALENDAR\n");
                tb_err_t e = tb_ics_parse(text, strlen(text), &ics, err, sizeof(err));
                if (!extra) {
                        cr_expect_eq(e, TB_OK, "%s", err);
                        cr_expect_eq(ics->nevents, TB_ICS_MAX_EVENTS);
                        tb_ics_free(ics);
                } else {
                        cr_expect_eq(e, TB_ERR_INVALID);
                        cr_expect_str_eq(err, "ics: line 30002: more than 10000 events");
                }
        }
        free(text);
}
