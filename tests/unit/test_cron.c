/**
 * @file test_cron.c
 * @brief Cron parsing and next-fire vectors (UTC) for every feature, parse
 *        errors, and a randomised cross-check against a brute-force
 *        reference matcher written independently of core/lib/schedule/cron.c.
 */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schedule/cron.h"
#include "schedule/schedule.h"
#include "tb.h"

/* Next fire of \p expr (UTC) strictly after \p after, as RFC 3339 UTC, or
 * "none". Fails the test on a parse error. */
static const char *next_after(const char *expr, const char *after) {
        static char out[64];
        char err[256] = "";
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON};
        int64_t a, n;
        cr_assert_eq(tb_time_parse(after, &a, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_cron_parse(expr, &s.cron, err, sizeof(err)), TB_OK,
                     "parse '%s': %s", expr, err);
        tb_err_t e = tb_schedule_next(&s, a, &n, NULL, err, sizeof(err));
        if (e == TB_ERR_NOT_FOUND)
                snprintf(out, sizeof(out), "none");
        else {
                cr_assert_eq(e, TB_OK, "next '%s': %s", expr, err);
                tb_time_format(n, out);
        }
        tb_schedule_clear(&s);
        return out;
}

#define EXPECT_NEXT(expr, after, want)                                               \
        do {                                                                         \
                const char *got_ = next_after(expr, after);                          \
                cr_expect_str_eq(got_, want, "'%s' after %s: got %s, want %s", expr, \
                                 after, got_, want);                                 \
        } while (0)

static void expect_parse_error(const char *expr, const char *substring) {
        char err[256] = "";
        tb_cron_t *c = (tb_cron_t *)0x1;
        tb_err_t e = tb_cron_parse(expr, &c, err, sizeof(err));
        cr_expect_eq(e, TB_ERR_INVALID, "'%s' should not parse", expr ? expr : "(null)");
        cr_expect_null(c, "no expression returned on error");
        cr_expect(strstr(err, substring) != NULL, "'%s': error '%s' lacks '%s'",
                  expr ? expr : "(null)", err, substring);
        cr_expect(strncmp(err, "cron: ", 6) == 0, "'%s': '%s' lacks the cron: prefix",
                  expr ? expr : "(null)", err);
}

Test(cron, steps_lists_ranges) {
        EXPECT_NEXT("*/5 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z");
        EXPECT_NEXT("*/5 * * * *", "2026-01-01T00:02:30Z", "2026-01-01T00:05:00Z");
        EXPECT_NEXT("*/5 * * * *", "2026-01-01T23:57:00Z", "2026-01-02T00:00:00Z");
        EXPECT_NEXT("0 8,12,18 * * *", "2026-01-01T12:00:00Z", "2026-01-01T18:00:00Z");
        EXPECT_NEXT("0 8,12,18 * * *", "2026-01-01T18:00:00Z", "2026-01-02T08:00:00Z");
        EXPECT_NEXT("0 9-11 * * *", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z");
        EXPECT_NEXT("0 9-11 * * *", "2026-01-01T11:00:00Z", "2026-01-02T09:00:00Z");
        /* 1-30/7 = 1, 8, 15, 22, 29 */
        EXPECT_NEXT("0 0 1-30/7 * *", "2026-01-22T00:00:00Z", "2026-01-29T00:00:00Z");
        EXPECT_NEXT("0 0 1-30/7 * *", "2026-01-29T00:00:00Z", "2026-02-01T00:00:00Z");
        EXPECT_NEXT("0 0 1-30/7 * *", "2026-02-22T00:00:00Z", "2026-03-01T00:00:00Z");
        /* 5/15 = 5-59/15 = 5, 20, 35, 50 */
        EXPECT_NEXT("5/15 * * * *", "2026-01-01T10:50:00Z", "2026-01-01T11:05:00Z");
        EXPECT_NEXT("5/15 * * * *", "2026-01-01T11:05:00Z", "2026-01-01T11:20:00Z");
        EXPECT_NEXT("0,30 */6 * * *", "2026-01-01T06:30:00Z", "2026-01-01T12:00:00Z");
        EXPECT_NEXT("15-17,45 3 * * *", "2026-01-01T03:17:00Z", "2026-01-01T03:45:00Z");
        /* minute 0 of the first hour of the next year */
        EXPECT_NEXT("0 0 1 1 *", "2026-06-15T12:00:00Z", "2027-01-01T00:00:00Z");
}

Test(cron, names_case_insensitive) {
        /* 2026-01-01 is a Thursday. */
        EXPECT_NEXT("0 0 * JAN,jul MON-fri", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        EXPECT_NEXT("0 0 * JAN,jul MON-fri", "2026-01-02T00:00:00Z", "2026-01-05T00:00:00Z");
        EXPECT_NEXT("0 0 * JAN,jul MON-fri", "2026-01-30T00:00:00Z", "2026-07-01T00:00:00Z");
        EXPECT_NEXT("0 0 1 jan-Mar/2 *", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z");
        EXPECT_NEXT("0 12 * * sat", "2026-01-01T00:00:00Z", "2026-01-03T12:00:00Z");
        EXPECT_NEXT("0 0 1 Dec *", "2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z");
}

Test(cron, sunday_is_0_and_7) {
        EXPECT_NEXT("0 0 * * 0", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z");
        EXPECT_NEXT("0 0 * * 7", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z");
        EXPECT_NEXT("0 0 * * SUN", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z");
        /* 5-7 = Friday, Saturday, Sunday */
        EXPECT_NEXT("0 0 * * 5-7", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z");
        EXPECT_NEXT("0 0 * * 5-7", "2026-01-04T00:00:00Z", "2026-01-09T00:00:00Z");
        /* a step of 7 over 0-7 is Sunday twice over: still only Sundays */
        EXPECT_NEXT("0 0 * * */7", "2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z");
}

Test(cron, dom_dow_or_rule) {
        /* Both restricted: the 13th OR any Friday. */
        EXPECT_NEXT("0 0 13 * 5", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        EXPECT_NEXT("0 0 13 * 5", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z");
        EXPECT_NEXT("0 0 13 * 5", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z");
        /* Day-of-month starts with '*': Vixie ANDs the fields. Odd days that
         * are Fridays in January 2026: the 9th and the 23rd. */
        EXPECT_NEXT("0 0 */2 * 5", "2026-01-01T00:00:00Z", "2026-01-09T00:00:00Z");
        EXPECT_NEXT("0 0 */2 * 5", "2026-01-09T00:00:00Z", "2026-01-23T00:00:00Z");
        /* Day-of-week '*': only the day of month counts. */
        EXPECT_NEXT("0 0 13 * *", "2026-01-01T00:00:00Z", "2026-01-13T00:00:00Z");
}

Test(cron, question_mark_is_star) {
        EXPECT_NEXT("0 0 ? * 5", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        EXPECT_NEXT("0 0 13 * ?", "2026-01-01T00:00:00Z", "2026-01-13T00:00:00Z");
        EXPECT_NEXT("0 0 ? * ?", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
}

Test(cron, seconds_field) {
        EXPECT_NEXT("*/20 * * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:00:20Z");
        EXPECT_NEXT("*/20 * * * * *", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z");
        EXPECT_NEXT("30 0 0 * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z");
        EXPECT_NEXT("30 0 0 * * *", "2026-01-01T00:00:30Z", "2026-01-02T00:00:30Z");
        /* Strictly after a fractional instant: the next whole second. */
        EXPECT_NEXT("* * * * * *", "2026-01-01T00:00:00.500Z", "2026-01-01T00:00:01Z");
        EXPECT_NEXT("* * * * *", "2026-01-01T00:00:59.999Z", "2026-01-01T00:01:00Z");
        EXPECT_NEXT("0,59 59 23 31 12 *", "2026-06-01T00:00:00Z", "2026-12-31T23:59:00Z");
        EXPECT_NEXT("0,59 59 23 31 12 *", "2026-12-31T23:59:00Z", "2026-12-31T23:59:59Z");
}

Test(cron, macros) {
        EXPECT_NEXT("@yearly", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
        EXPECT_NEXT("@annually", "2026-03-01T00:00:00Z", "2027-01-01T00:00:00Z");
        EXPECT_NEXT("@monthly", "2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z");
        EXPECT_NEXT("@weekly", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z");
        EXPECT_NEXT("@daily", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        EXPECT_NEXT("@midnight", "2026-01-01T13:00:00Z", "2026-01-02T00:00:00Z");
        EXPECT_NEXT("@hourly", "2026-01-01T00:30:00Z", "2026-01-01T01:00:00Z");
        EXPECT_NEXT("  @DAILY  ", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
}

Test(cron, last_day_of_month) {
        EXPECT_NEXT("0 0 L * *", "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z");
        EXPECT_NEXT("0 0 L * *", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z");
        EXPECT_NEXT("0 0 L * *", "2028-02-01T00:00:00Z", "2028-02-29T00:00:00Z");
        EXPECT_NEXT("0 0 L * *", "2026-04-01T00:00:00Z", "2026-04-30T00:00:00Z");
        /* L-3: third-to-last day */
        EXPECT_NEXT("0 0 L-3 * *", "2026-01-01T00:00:00Z", "2026-01-28T00:00:00Z");
        EXPECT_NEXT("0 0 L-3 * *", "2026-01-28T00:00:00Z", "2026-02-25T00:00:00Z");
        EXPECT_NEXT("0 0 l-0 * *", "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z");
        /* mixed with plain days */
        EXPECT_NEXT("0 0 1,15,L * *", "2026-02-15T00:00:00Z", "2026-02-28T00:00:00Z");
        EXPECT_NEXT("0 0 1,15,L * *", "2026-02-28T00:00:00Z", "2026-03-01T00:00:00Z");
}

Test(cron, nearest_weekday) {
        /* 2025-11-15 is a Saturday: Friday the 14th. */
        EXPECT_NEXT("0 0 15W * *", "2025-11-01T00:00:00Z", "2025-11-14T00:00:00Z");
        /* 2026-02-15 is a Sunday: Monday the 16th. */
        EXPECT_NEXT("0 0 15W * *", "2026-02-01T00:00:00Z", "2026-02-16T00:00:00Z");
        /* 2026-01-13 is a Tuesday: itself. */
        EXPECT_NEXT("0 0 13W * *", "2026-01-01T00:00:00Z", "2026-01-13T00:00:00Z");
        /* 2025-11-01 is a Saturday: never back into October, Monday 3rd. */
        EXPECT_NEXT("0 0 1W * *", "2025-10-31T00:00:00Z", "2025-11-03T00:00:00Z");
        /* 2026-05-31 is a Sunday: never into June, Friday 29th. */
        EXPECT_NEXT("0 0 31W * *", "2026-05-01T00:00:00Z", "2026-05-29T00:00:00Z");
        /* June has no 31st: next is July 31st 2026, a Friday. */
        EXPECT_NEXT("0 0 31W * *", "2026-05-29T00:00:00Z", "2026-07-31T00:00:00Z");
        /* LW: 2026-01-31 is a Saturday -> Friday 30th; May 31 Sunday -> 29th. */
        EXPECT_NEXT("0 0 LW * *", "2026-01-01T00:00:00Z", "2026-01-30T00:00:00Z");
        EXPECT_NEXT("0 0 LW * *", "2026-05-01T00:00:00Z", "2026-05-29T00:00:00Z");
        EXPECT_NEXT("0 0 LW * *", "2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z");
}

Test(cron, nth_and_last_weekday) {
        /* Fridays of January 2026: 2, 9, 16, 23, 30. */
        EXPECT_NEXT("0 0 * * 5#3", "2026-01-01T00:00:00Z", "2026-01-16T00:00:00Z");
        EXPECT_NEXT("0 0 * * FRI#3", "2026-01-01T00:00:00Z", "2026-01-16T00:00:00Z");
        EXPECT_NEXT("0 0 * * 5#3", "2026-01-16T00:00:00Z", "2026-02-20T00:00:00Z");
        /* A fifth Monday first happens in March 2026 (the 30th). */
        EXPECT_NEXT("0 0 * * 1#5", "2026-01-01T00:00:00Z", "2026-03-30T00:00:00Z");
        EXPECT_NEXT("0 0 * * 7#1", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z");
        EXPECT_NEXT("0 0 * * 5L", "2026-01-01T00:00:00Z", "2026-01-30T00:00:00Z");
        EXPECT_NEXT("0 0 * * 5L", "2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z");
        EXPECT_NEXT("0 0 * * friL", "2026-01-01T00:00:00Z", "2026-01-30T00:00:00Z");
        EXPECT_NEXT("0 0 * * 1#1,5L", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z");
        EXPECT_NEXT("0 0 * * 1#1,5L", "2026-01-05T00:00:00Z", "2026-01-30T00:00:00Z");
}

Test(cron, leap_years) {
        EXPECT_NEXT("0 0 29 2 *", "2025-03-01T00:00:00Z", "2028-02-29T00:00:00Z");
        EXPECT_NEXT("0 0 29 2 *", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z");
        /* 2100 is not a leap year. */
        EXPECT_NEXT("0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z");
        /* Feb 29th that is a Monday... OR any Monday of February. */
        EXPECT_NEXT("0 0 29 2 1", "2026-03-01T00:00:00Z", "2027-02-01T00:00:00Z");
        /* A fifth Tuesday in February needs Feb 29th on a Tuesday: 2028. */
        EXPECT_NEXT("0 0 * 2 2#5", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z");
}

Test(cron, parse_errors) {
        expect_parse_error("0 25 * * *", "cron: field 'hour': 25 is out of range 0-23");
        expect_parse_error("60 * * * *", "field 'minute': 60 is out of range 0-59");
        expect_parse_error("* * 0 * *", "field 'day-of-month': 0 is out of range 1-31");
        expect_parse_error("* * 32 * *", "field 'day-of-month': 32 is out of range 1-31");
        expect_parse_error("* * * 13 *", "field 'month': 13 is out of range 1-12");
        expect_parse_error("* * * 0 *", "field 'month': 0 is out of range 1-12");
        expect_parse_error("* * * * 8", "field 'day-of-week': 8 is out of range 0-7");
        expect_parse_error("61 * * * * *", "field 'second': 61 is out of range 0-59");
        expect_parse_error("* * * * * 99", "field 'day-of-week': 99 is out of range 0-7");
        expect_parse_error("0 99999999999 * * *", "field 'hour': 99999999999 is out of range");
        expect_parse_error("* * * FOO *", "field 'month': unknown name 'FOO'");
        expect_parse_error("* * * * MOX", "field 'day-of-week': unknown name 'MOX'");
        expect_parse_error("* * * * MONDAY", "unknown name 'MONDAY'");
        expect_parse_error("0 JAN * * *", "field 'hour': unexpected 'JAN'");
        expect_parse_error("*/0 * * * *", "field 'minute': step 0 in '*/0' must be at least 1");
        expect_parse_error("*/ * * * *", "field 'minute': '*/' needs a step number");
        expect_parse_error("0 */24 * * *", "field 'hour': step 24 in '*/24' is out of range");
        expect_parse_error("5-1 * * * *", "field 'minute': range 5-1 is backwards");
        expect_parse_error("1,,2 * * * *", "field 'minute': empty list element");
        expect_parse_error("1, * * * *", "field 'minute': empty list element");
        expect_parse_error("1x * * * *", "field 'minute': unexpected 'x' in '1x'");
        expect_parse_error("- * * * *", "field 'minute': unexpected '-'");
        expect_parse_error("1- * * * *", "field 'minute': a value is missing");
        expect_parse_error("? * * * *", "field 'minute': '?' is only allowed in day-of-month");
        expect_parse_error("* * L-31 * *", "offset 31 in 'L-31' is out of range 0-30");
        expect_parse_error("* * L-x * *", "'L-x' is malformed");
        expect_parse_error("* * 32W * *", "32 in '32W' is out of range 1-31");
        expect_parse_error("* * 1-5W * *", "'1-5W' is malformed");
        expect_parse_error("* * W * *", "field 'day-of-month': unexpected 'W'");
        expect_parse_error("* * * * 5#6", "occurrence 6 in '5#6' is out of range 1-5");
        expect_parse_error("* * * * 5#0", "occurrence 0 in '5#0' is out of range 1-5");
        expect_parse_error("* * * * 5#", "'5#' is malformed");
        expect_parse_error("* * * * L", "field 'day-of-week': 'L' needs a weekday");
        expect_parse_error("* * * *", "expected 5 fields");
        expect_parse_error("* * * * * * *", "got 7");
        expect_parse_error("", "cron: expression is empty");
        expect_parse_error("   ", "cron: expression is empty");
        expect_parse_error(NULL, "cron: expression is missing");
        expect_parse_error("@foo", "unknown macro '@foo'");
        expect_parse_error("@reboot", "@reboot is not supported");
        expect_parse_error("@daily 5", "macro @daily takes nothing after it");
        expect_parse_error("0 0 30 2 *", "would never fire");
        expect_parse_error("0 0 31 4,6,9,11 *", "would never fire");
        expect_parse_error("0 0 31 2 *", "would never fire");
        expect_parse_error("0 0 30 FEB ?", "would never fire");
}

Test(cron, parse_errors_long_and_binary) {
        char big[400];
        memset(big, '1', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        expect_parse_error(big, "expression is too long");
        expect_parse_error("\x01\x02 * * * *", "field 'minute': unexpected");
        expect_parse_error("* * * * \xff", "field 'day-of-week': unexpected");
}

/* ---- randomised cross-check against a brute-force reference ------------ */

/* The reference knows each field as a plain set plus the special forms,
 * written from the generator's side, never from core/lib/schedule/cron.c's parse. */
typedef struct ref_expr {
        char text[400];
        bool six;
        bool sec[60], min[60], hour[24], dom[32], mon[13], dow[7];
        bool dom_star, dow_star;
        int n_last;
        int last_off[4]; /* L-n */
        int n_w;
        int wday[4]; /* nW */
        bool lw;
        int n_nth;
        int nth_wd[4], nth_k[4];
        int n_lastwd;
        int lastwd[4];
} ref_expr_t;

static unsigned rnd_state;
static unsigned rnd(unsigned n) {
        rnd_state = rnd_state * 1103515245u + 12345u;
        return (rnd_state >> 8) % n;
}

static void appendf(char *buf, size_t size, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t size, const char *fmt, ...) {
        size_t len = strlen(buf);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf + len, size - len, fmt, ap);
        va_end(ap);
}

static const char *mon_names[] = {"", "jan", "FEB", "Mar", "apr", "MAY", "jun",
                                  "JUL", "aug", "Sep", "OCT", "nov", "DEC"};
static const char *dow_names[] = {"sun", "MON", "Tue", "wed", "THU", "fri", "SAT", "SUN"};

/* Weekday 7 may only be written SUN where it closes a range from a later
 * day ("MON-SUN"): elsewhere the name SUN is day 0. */
static void gen_value(char *out, size_t size, int v, int kind, bool sun_is_7) {
        if (kind == 4 && rnd(3) == 0)
                appendf(out, size, "%s", mon_names[v]);
        else if (kind == 5 && rnd(3) == 0 && (v != 7 || sun_is_7))
                appendf(out, size, "%s", dow_names[v]);
        else
                appendf(out, size, "%d", v);
}

/* One numeric field. kind: 0 sec, 1 min, 2 hour, 3 dom, 4 mon, 5 dow. */
static void gen_field(char *out, size_t size, bool *set, int lo, int hi, int kind,
                      bool *star) {
        int shape = (int)rnd(10);
        *star = false;
        if (shape <= 2) {
                *star = true;
                if (shape == 0 && rnd(2) && (kind == 3 || kind == 5)) {
                        appendf(out, size, "?");
                } else if (shape == 0 || shape == 1) {
                        appendf(out, size, "*");
                } else {
                        int st = 1 + (int)rnd((unsigned)(hi - lo));
                        appendf(out, size, "*/%d", st);
                        for (int v = lo; v <= hi; v += st)
                                set[kind == 5 ? v % 7 : v] = true;
                        return;
                }
                for (int v = lo; v <= hi; v++)
                        set[kind == 5 ? v % 7 : v] = true;
                return;
        }
        int items = shape >= 8 ? 2 + (int)rnd(2) : 1;
        for (int i = 0; i < items; i++) {
                if (i)
                        appendf(out, size, ",");
                int a = lo + (int)rnd((unsigned)(hi - lo + 1));
                int form = (int)rnd(3);
                if (form == 0) {
                        gen_value(out, size, a, kind, false);
                        set[kind == 5 ? a % 7 : a] = true;
                } else {
                        int b = a + (int)rnd((unsigned)(hi - a + 1));
                        int st = form == 2 ? 1 + (int)rnd(6) : 1;
                        gen_value(out, size, a, kind, false);
                        appendf(out, size, "-");
                        gen_value(out, size, b, kind, a > 0);
                        if (form == 2)
                                appendf(out, size, "/%d", st);
                        for (int v = a; v <= b; v += st)
                                set[kind == 5 ? v % 7 : v] = true;
                }
        }
}

static void gen_expr(ref_expr_t *r) {
        memset(r, 0, sizeof(*r));
        char f[6][64];
        memset(f, 0, sizeof(f));
        bool star;
        r->six = rnd(3) == 0;
        if (r->six)
                gen_field(f[0], sizeof(f[0]), r->sec, 0, 59, 0, &star);
        else
                r->sec[0] = true;
        gen_field(f[1], sizeof(f[1]), r->min, 0, 59, 1, &star);
        gen_field(f[2], sizeof(f[2]), r->hour, 0, 23, 2, &star);
        /* Day-of-month: sometimes Quartz forms, alone or in a list. */
        if (rnd(3) == 0) {
                int n = 1 + (int)rnd(2);
                for (int i = 0; i < n; i++) {
                        if (i)
                                appendf(f[3], sizeof(f[3]), ",");
                        switch (rnd(4)) {
                        case 0:
                                r->last_off[r->n_last++] = 0;
                                appendf(f[3], sizeof(f[3]), "L");
                                break;
                        case 1: {
                                int k = (int)rnd(8);
                                r->last_off[r->n_last++] = k;
                                appendf(f[3], sizeof(f[3]), "L-%d", k);
                                break;
                        }
                        case 2: {
                                int d = 1 + (int)rnd(31);
                                r->wday[r->n_w++] = d;
                                appendf(f[3], sizeof(f[3]), "%dW", d);
                                break;
                        }
                        default:
                                r->lw = true;
                                appendf(f[3], sizeof(f[3]), "LW");
                        }
                }
                r->dom_star = false;
        } else {
                gen_field(f[3], sizeof(f[3]), r->dom, 1, 31, 3, &r->dom_star);
        }
        gen_field(f[4], sizeof(f[4]), r->mon, 1, 12, 4, &star);
        if (rnd(4) == 0) {
                int n = 1 + (int)rnd(2);
                for (int i = 0; i < n; i++) {
                        if (i)
                                appendf(f[5], sizeof(f[5]), ",");
                        int wd = (int)rnd(8);
                        if (rnd(2)) {
                                int k = 1 + (int)rnd(5);
                                r->nth_wd[r->n_nth] = wd % 7;
                                r->nth_k[r->n_nth++] = k;
                                appendf(f[5], sizeof(f[5]), "%d#%d", wd, k);
                        } else {
                                r->lastwd[r->n_lastwd++] = wd % 7;
                                appendf(f[5], sizeof(f[5]), "%dL", wd);
                        }
                }
                r->dow_star = false;
        } else {
                gen_field(f[5], sizeof(f[5]), r->dow, 0, 7, 5, &r->dow_star);
        }
        snprintf(r->text, sizeof(r->text), "%s%s%s %s %s %s %s", r->six ? f[0] : "",
                 r->six ? " " : "", f[1], f[2], f[3], f[4], f[5]);
}

static bool ref_is_weekday(int y, int m, int d) {
        struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 12};
        time_t t = timegm(&tm);
        struct tm o;
        gmtime_r(&t, &o);
        return o.tm_wday >= 1 && o.tm_wday <= 5;
}

static int ref_wday(int y, int m, int d) {
        struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 12};
        time_t t = timegm(&tm);
        struct tm o;
        gmtime_r(&t, &o);
        return o.tm_wday;
}

static int ref_mdays(int y, int m) {
        struct tm tm = {.tm_year = y - 1900, .tm_mon = m, .tm_mday = 0, .tm_hour = 12};
        time_t t = timegm(&tm); /* day 0 of the next month = last of this one */
        struct tm o;
        gmtime_r(&t, &o);
        return o.tm_mday;
}

static bool ref_day(const ref_expr_t *r, int y, int m, int d) {
        int nd = ref_mdays(y, m), wd = ref_wday(y, m, d);
        bool dm = r->dom[d];
        for (int i = 0; i < r->n_last; i++)
                dm |= d == nd - r->last_off[i];
        for (int i = 0; i < r->n_w; i++) {
                int n = r->wday[i];
                if (n > nd)
                        continue;
                /* the weekday of this month closest to n */
                int best = -1;
                for (int c = 1; c <= nd; c++)
                        if (ref_is_weekday(y, m, c) &&
                            (best < 0 || abs(c - n) < abs(best - n)))
                                best = c;
                dm |= d == best;
        }
        if (r->lw) {
                int best = -1;
                for (int c = 1; c <= nd; c++)
                        if (ref_is_weekday(y, m, c))
                                best = c;
                dm |= d == best;
        }
        bool wm = r->dow[wd];
        for (int i = 0; i < r->n_nth; i++)
                wm |= wd == r->nth_wd[i] && (d - 1) / 7 + 1 == r->nth_k[i];
        for (int i = 0; i < r->n_lastwd; i++)
                wm |= wd == r->lastwd[i] && d + 7 > nd;
        if (r->dom_star || r->dow_star)
                return dm && wm;
        return dm || wm;
}

/* Brute force: day by day, then second by second inside matching days. */
static int64_t ref_next(const ref_expr_t *r, int64_t after_s, int64_t limit_s) {
        int64_t day = (after_s + 1) / 86400 * 86400;
        for (; day <= limit_s; day += 86400) {
                time_t t = (time_t)day;
                struct tm tm;
                gmtime_r(&t, &tm);
                if (!r->mon[tm.tm_mon + 1] ||
                    !ref_day(r, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday))
                        continue;
                for (int64_t s = day; s < day + 86400; s++) {
                        if (s <= after_s)
                                continue;
                        int sod = (int)(s - day);
                        if (r->hour[sod / 3600] && r->min[sod / 60 % 60] && r->sec[sod % 60])
                                return s;
                        if (!r->hour[sod / 3600])
                                s += 3600 - sod % 3600 - 1; /* skip the hour */
                        else if (!r->min[sod / 60 % 60])
                                s += 60 - sod % 60 - 1;
                }
        }
        return -1;
}

Test(cron, random_cross_check, .timeout = 120) {
        rnd_state = 20260101u;
        int checked = 0, never = 0;
        for (int iter = 0; iter < 2000; iter++) {
                ref_expr_t r;
                gen_expr(&r);
                char err[256];
                tb_schedule_t s = {.kind = TB_SCHEDULE_CRON};
                if (tb_cron_parse(r.text, &s.cron, err, sizeof(err)) != TB_OK) {
                        /* Only "never fires" may be refused; prove it over
                         * 8 years, which holds every weekday/leap pattern
                         * a month can take... nearly: cross-check anyway. */
                        cr_assert(strstr(err, "never fire"), "'%s' refused: %s", r.text, err);
                        cr_assert_eq(ref_next(&r, 946684800, 946684800 + 8 * 366 * 86400LL),
                                     -1, "'%s' was refused but fires", r.text);
                        never++;
                        continue;
                }
                /* 2000..2090, random second */
                int64_t after = 946684800 + (int64_t)rnd(90u * 365) * 86400 + rnd(86400);
                int64_t window = 3 * 366 * 86400LL;
                for (int k = 0; k < 3; k++) {
                        int64_t want = ref_next(&r, after, after + window);
                        int64_t got;
                        tb_err_t e = tb_schedule_next(&s, after * 1000, &got, NULL, err,
                                                      sizeof(err));
                        char a[32], g[32] = "none", w[32] = "none (in window)";
                        tb_time_format(after * 1000, a);
                        if (e == TB_OK)
                                tb_time_format(got, g);
                        if (want >= 0)
                                tb_time_format(want * 1000, w);
                        if (want < 0) {
                                cr_assert(e == TB_ERR_NOT_FOUND || got / 1000 > after + window,
                                          "'%s' after %s: got %s, reference %s", r.text, a,
                                          g, w);
                                break;
                        }
                        cr_assert_eq(e, TB_OK, "'%s' after %s: %s", r.text, a, err);
                        cr_assert_eq(got, want * 1000, "'%s' after %s: got %s, reference %s",
                                     r.text, a, g, w);
                        after = want;
                        checked++;
                }
                tb_schedule_clear(&s);
        }
        cr_log_info("random cross-check: %d fires compared, %d never-firing refused", checked,
                    never);
        cr_assert_gt(checked, 3000);
}

/* The engine is called ~10,000+ times a second: keep common expressions
 * well under the budget (5 us; checked generously here as sanitizer builds
 * are slower). */
Test(cron, speed) {
        const char *exprs[] = {"*/5 * * * *", "0 9 * * MON-FRI", "0 0 L * *", "0 0 29 2 *",
                               "30 2 * * *"};
        char err[256];
        const tb_tz_t *tz;
        cr_assert_eq(tb_tz_open("America/Los_Angeles", &tz, err, sizeof(err)), TB_OK, "%s",
                     err);
        for (size_t i = 0; i < TB_ARRAY_LEN(exprs); i++) {
                tb_schedule_t s = {.kind = TB_SCHEDULE_CRON, .tz = tz};
                cr_assert_eq(tb_cron_parse(exprs[i], &s.cron, err, sizeof(err)), TB_OK);
                int64_t t = INT64_C(1767225600000), n; /* 2026-01-01 */
                int calls = 20000;
                int64_t t0 = tb_mono_us();
                for (int k = 0; k < calls; k++) {
                        if (k % 1000 == 0)
                                t = INT64_C(1767225600000); /* stay within 9999 */
                        cr_assert_eq(tb_schedule_next(&s, t, &n, NULL, err, sizeof(err)), TB_OK,
                                     "'%s': %s", exprs[i], err);
                        t = n;
                }
                double us = (double)(tb_mono_us() - t0) / calls;
                cr_log_info("'%s': %.2f us per next", exprs[i], us);
                cr_expect_lt(us, 50.0, "'%s' takes %.2f us per call", exprs[i], us);
                tb_schedule_clear(&s);
        }
}

/* Bad input never crashes: random strings over cron's alphabet either parse
 * (and then compute) or fail with a "cron: " message. */
Test(cron, garbage_never_crashes, .timeout = 60) {
        static const char alphabet[] = "0123456789*/,-?LWl#@ JANfriSUNdaily\t7";
        static const int64_t afters[] = {INT64_MIN, -1, 0, INT64_C(1767225600000),
                                         INT64_C(253402300798000), INT64_MAX};
        rnd_state = 4242u;
        int parsed = 0;
        for (int i = 0; i < 20000; i++) {
                char expr[64];
                int len = 0;
                if (i % 4 == 0) { /* free-form */
                        len = (int)rnd(40);
                        for (int k = 0; k < len; k++)
                                expr[k] = alphabet[rnd(sizeof(alphabet) - 1)];
                } else { /* 4-7 short fields, mostly digits and operators */
                        static const char *tok[] = {
                                "*", "*", "*", "1", "5", "*/5", "1-3", "0", "L", "15W", "5#3",
                                "5L", "?", "2,4", "JAN", "fri", "-", "/", ",", "#", "W", "LW",
                                "L-2", "7", "31", "12", "59", "x", "2", "3", "1"};
                        int nf = 4 + (int)rnd(4);
                        for (int f = 0; f < nf; f++) {
                                if (f)
                                        expr[len++] = ' ';
                                int nt = 1 + (rnd(4) == 0);
                                for (int k = 0; k < nt; k++) {
                                        const char *tk =
                                                rnd(2) ? "*" : tok[rnd(TB_ARRAY_LEN(tok))];
                                        memcpy(expr + len, tk, strlen(tk));
                                        len += (int)strlen(tk);
                                }
                        }
                }
                expr[len] = '\0';
                char err[256] = "";
                tb_schedule_t s = {.kind = TB_SCHEDULE_CRON};
                tb_err_t e = tb_cron_parse(expr, &s.cron, err, sizeof(err));
                if (e != TB_OK) {
                        cr_assert_eq(e, TB_ERR_INVALID);
                        cr_assert(!strncmp(err, "cron: ", 6), "'%s': '%s'", expr, err);
                        continue;
                }
                parsed++;
                for (size_t a = 0; a < TB_ARRAY_LEN(afters); a++) {
                        int64_t n;
                        e = tb_schedule_next(&s, afters[a], &n, NULL, err, sizeof(err));
                        cr_assert(e == TB_OK || e == TB_ERR_NOT_FOUND, "'%s': %s", expr, err);
                        if (e == TB_OK)
                                cr_assert(n > afters[a] && n <= TB_SCHEDULE_MAX_MS);
                }
                tb_schedule_clear(&s);
        }
        cr_log_info("garbage: %d of 20000 parsed", parsed);
        cr_assert_gt(parsed, 200, "the generator should produce some valid expressions");
}
