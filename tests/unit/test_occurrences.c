/**
 * @file test_occurrences.c
 * @brief tb_schedule_occurrences(): a schedule's fires in [from, to) for
 *        backfill. Intervals (48 hourly fires in 48 h, start_at/end_at
 *        bounds), a cron in Europe/Paris across both 2026 DST changes under
 *        the gap and overlap policies, one-off schedules, the 10,000 cap and
 *        an empty or reversed range. Plus the run id the scheduler and
 *        backfill share.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "schedule/occurrences.h"
#include "tb.h"

static int64_t ms_of(const char *rfc3339) {
        char err[256];
        int64_t ms;
        cr_assert_eq(tb_time_parse(rfc3339, &ms, err, sizeof(err)), TB_OK, "%s", err);
        return ms;
}

static tb_schedule_t every(int64_t period_ms, const char *start) {
        return (tb_schedule_t){.kind = TB_SCHEDULE_EVERY,
                               .every_ms = period_ms,
                               .start_at_ms = start ? ms_of(start) : 0,
                               .anchor_ms = ms_of("2025-06-01T00:00:00Z")};
}

static tb_schedule_t paris(const char *expr, tb_dst_gap_t gap, tb_dst_overlap_t overlap) {
        char err[256];
        tb_schedule_t s = {.kind = TB_SCHEDULE_CRON, .dst_gap = gap, .dst_overlap = overlap};
        cr_assert_eq(tb_tz_open("Europe/Paris", &s.tz, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_cron_parse(expr, &s.cron, err, sizeof(err)), TB_OK, "%s", err);
        return s;
}

/* The occurrences of \p s in [from, to) equal \p want (RFC 3339 instants). */
static void expect_occ(const tb_schedule_t *s, const char *from, const char *to,
                       const char *const *want, size_t n) {
        int64_t *v = NULL;
        size_t cnt = 0;
        char err[512];
        cr_assert_eq(tb_schedule_occurrences(s, ms_of(from), ms_of(to), 0, &v, &cnt, err,
                                             sizeof(err)),
                     TB_OK, "[%s, %s): %s", from, to, err);
        cr_assert_eq(cnt, n, "[%s, %s): %zu occurrences, want %zu", from, to, cnt, n);
        for (size_t i = 0; i < n; i++) {
                char got[32];
                tb_time_format(v[i], got);
                cr_expect_eq(v[i], ms_of(want[i]), "occurrence %zu: %s, want %s", i, got,
                             want[i]);
        }
        free(v);
}

Test(occurrences, hourly_over_48h_is_48) {
        tb_schedule_t s = every(3600000, "2026-01-01T00:00:00Z");
        int64_t *v = NULL;
        size_t n = 0;
        char err[256];
        int64_t from = ms_of("2026-01-01T00:00:00Z"), to = ms_of("2026-01-03T00:00:00Z");
        cr_assert_eq(tb_schedule_occurrences(&s, from, to, 0, &v, &n, err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert_eq(n, 48);
        for (size_t i = 0; i < n; i++)
                cr_expect_eq(v[i], from + (int64_t)i * 3600000, "occurrence %zu", i);
        free(v);
        /* from is inclusive, to exclusive: half an hour later still 48, the
         * first at 01:00 and the last at 2026-01-03T00:00 */
        cr_assert_eq(tb_schedule_occurrences(&s, from + 1800000, to + 1800000, 0, &v, &n, err,
                                             sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(n, 48);
        cr_expect_eq(v[0], from + 3600000);
        cr_expect_eq(v[47], to);
        free(v);
}

Test(occurrences, start_and_end_bound_the_range) {
        tb_schedule_t s = every(3600000, "2026-01-01T10:00:00Z");
        s.end_at_ms = ms_of("2026-01-01T13:00:00Z"); /* a fire at end_at counts */
        static const char *const want[] = {"2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z",
                                           "2026-01-01T12:00:00Z", "2026-01-01T13:00:00Z"};
        expect_occ(&s, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", want, 4);
        /* every from the anchor (the creation time) without start_at */
        tb_schedule_t a = every(86400000, NULL);
        static const char *const days[] = {"2025-06-01T00:00:00Z", "2025-06-02T00:00:00Z"};
        expect_occ(&a, "2025-05-01T00:00:00Z", "2025-06-02T12:00:00Z", days, 2);
}

Test(occurrences, paris_cron_across_spring_forward) {
        /* 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that day */
        tb_schedule_t s = paris("30 2 * * *", TB_DST_GAP_SHIFT, TB_DST_OVERLAP_FIRST);
        static const char *const shift[] = {
                "2026-03-27T02:30:00+01:00", "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00", /* shifted to the gap's end */
                "2026-03-30T02:30:00+02:00"};
        expect_occ(&s, "2026-03-27T00:00:00+01:00", "2026-03-31T00:00:00+02:00", shift, 4);
        tb_schedule_clear(&s);
        s = paris("30 2 * * *", TB_DST_GAP_SKIP, TB_DST_OVERLAP_FIRST);
        static const char *const skip[] = {"2026-03-27T02:30:00+01:00",
                                           "2026-03-28T02:30:00+01:00",
                                           "2026-03-30T02:30:00+02:00"};
        expect_occ(&s, "2026-03-27T00:00:00+01:00", "2026-03-31T00:00:00+02:00", skip, 3);
        tb_schedule_clear(&s);
}

Test(occurrences, paris_cron_across_fall_back) {
        /* 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice */
        tb_schedule_t s = paris("30 2 * * *", TB_DST_GAP_SHIFT, TB_DST_OVERLAP_BOTH);
        static const char *const both[] = {"2026-10-24T02:30:00+02:00",
                                           "2026-10-25T02:30:00+02:00",
                                           "2026-10-25T02:30:00+01:00",
                                           "2026-10-26T02:30:00+01:00"};
        expect_occ(&s, "2026-10-24T00:00:00+02:00", "2026-10-27T00:00:00+01:00", both, 4);
        tb_schedule_clear(&s);
        s = paris("30 2 * * *", TB_DST_GAP_SHIFT, TB_DST_OVERLAP_LAST);
        static const char *const last[] = {"2026-10-24T02:30:00+02:00",
                                           "2026-10-25T02:30:00+01:00",
                                           "2026-10-26T02:30:00+01:00"};
        expect_occ(&s, "2026-10-24T00:00:00+02:00", "2026-10-27T00:00:00+01:00", last, 3);
        tb_schedule_clear(&s);
        /* hourly across the change: 25 fires in the local day of 25 hours */
        s = paris("0 * * * *", TB_DST_GAP_SHIFT, TB_DST_OVERLAP_BOTH);
        int64_t *v = NULL;
        size_t n = 0;
        char err[256];
        cr_assert_eq(tb_schedule_occurrences(&s, ms_of("2026-10-25T00:00:00+02:00"),
                                             ms_of("2026-10-26T00:00:00+01:00"), 0, &v, &n,
                                             err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_expect_eq(n, 25);
        free(v);
        tb_schedule_clear(&s);
}

Test(occurrences, once_inside_or_outside) {
        tb_schedule_t s = {.kind = TB_SCHEDULE_ONCE, .once_at_ms = ms_of("2026-02-01T12:00:00Z")};
        static const char *const one[] = {"2026-02-01T12:00:00Z"};
        expect_occ(&s, "2026-02-01T12:00:00Z", "2026-02-01T12:00:01Z", one, 1);
        expect_occ(&s, "2026-02-01T00:00:00Z", "2026-02-01T12:00:00Z", NULL, 0);
}

Test(occurrences, cap_names_to_and_a_smaller_range) {
        tb_schedule_t s = every(1000, "2026-01-01T00:00:00Z");
        int64_t from = ms_of("2026-01-01T00:00:00Z");
        int64_t *v = NULL;
        size_t n = 0;
        char err[512];
        /* exactly 10,000 fit */
        cr_assert_eq(tb_schedule_occurrences(&s, from, from + 10000 * 1000, 0, &v, &n, err,
                                             sizeof(err)),
                     TB_OK, "%s", err);
        cr_expect_eq(n, TB_SCHEDULE_OCCURRENCES_MAX);
        free(v);
        /* 3 hours of seconds do not */
        v = NULL;
        tb_err_t e = tb_schedule_occurrences(&s, from, from + 3 * 3600000, 0, &v, &n, err,
                                             sizeof(err));
        cr_assert_eq(e, TB_ERR_INVALID);
        cr_expect_null(v);
        cr_expect_eq(n, 0);
        cr_expect(!strncmp(err, "to: ", 4), "names to: %s", err);
        cr_expect(strstr(err, "more than 10000") && strstr(err, "smaller range") &&
                          strstr(err, "2026-01-01T02:46:39Z"),
                  "says the cap, the fix and the last that fits: %s", err);
        /* a smaller max, as a caller may ask */
        e = tb_schedule_occurrences(&s, from, from + 11000, 10, &v, &n, err, sizeof(err));
        cr_expect_eq(e, TB_ERR_INVALID, "11 fires, max 10");
}

Test(occurrences, reversed_or_empty_range_names_to) {
        tb_schedule_t s = every(3600000, "2026-01-01T00:00:00Z");
        int64_t *v = NULL;
        size_t n = 0;
        char err[256];
        int64_t t = ms_of("2026-01-02T00:00:00Z");
        cr_assert_eq(tb_schedule_occurrences(&s, t, t, 0, &v, &n, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_expect(!strncmp(err, "to: ", 4) && strstr(err, "is not after from"), "%s", err);
        cr_assert_eq(tb_schedule_occurrences(&s, t, t - 1, 0, &v, &n, err, sizeof(err)),
                     TB_ERR_INVALID);
}

Test(occurrences, run_id_is_the_documented_hash) {
        char a[33], b[33], c[33];
        tb_schedule_run_id("task-1", 1767225600000, 1, a);
        tb_schedule_run_id("task-1", 1767225600000, 1, b);
        tb_schedule_run_id("task-1", 1767229200000, 1, c);
        cr_expect_str_eq(a, b);
        cr_expect_str_neq(a, c);
        cr_expect_eq(strlen(a), 32);
        /* printf 'task-1|1767225600000|1' | sha256sum | cut -c1-32 */
        cr_expect_str_eq(a, "0e5c2baf272ca0910bb7f5bf08280428");
}
