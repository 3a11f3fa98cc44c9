/**
 * @file fuzz_cron.c
 * @brief libFuzzer target: tb_cron_parse() on arbitrary text, then, for an
 *        expression that parses, tb_schedule_next() from a few instants in a
 *        few zones (UTC, DST zones north and south, a 30-minute DST, a
 *        zone that skipped a whole day) with the DST policies picked from
 *        the input, three fires in a row.
 *
 * Invariants checked (a violation abort()s):
 *  - a fire is strictly after the instant asked about, on a whole second,
 *    and not past the latest instant a schedule can name;
 *  - in UTC the fire's wall time matches the expression;
 *  - TB_OK and TB_ERR_NOT_FOUND are the only answers for a parsed
 *    expression (it was validated: it can fire).
 */
#include "schedule/cron.h"
#include "schedule/schedule.h"
#include "schedule/tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const tb_fuzz_zones[] = {
        "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia",
};

/* Instants (epoch ms) around the interesting places. */
static const int64_t tb_fuzz_instants[] = {
        INT64_C(0),                /* 1970-01-01 */
        INT64_C(1767225600000),    /* 2026-01-01T00:00:00Z */
        INT64_C(1774744200000),    /* 2026-03-29T00:30:00Z: Paris springs forward */
        INT64_C(1792888199999),    /* 2026-10-25T00:29:59.999Z: Paris falls back */
        INT64_C(1325239200000),    /* 2011-12-30T10:00:00Z: Apia skips Dec 30 */
        INT64_C(4102444799000),    /* 2099-12-31T23:59:59Z */
        INT64_C(253402214400000),  /* 9999-12-31T00:00:00Z: near the end */
};

static void tb_fuzz_fail(const char *expr, const char *zone, int64_t after, int64_t next,
                         const char *what) {
        fprintf(stderr, "fuzz_cron: '%s' in %s after %lld: got %lld: %s\n", expr, zone,
                (long long)after, (long long)next, what);
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char expr[TB_CRON_MAX_LEN * 2], errstr[256];
        /* longer than the limit is still tried: the parser must refuse it */
        if (size >= sizeof(expr))
                return 0;
        memcpy(expr, data, size);
        expr[size] = '\0';
        tb_cron_t *cron = NULL;
        tb_err_t e = tb_cron_parse(expr, &cron, errstr, sizeof(errstr));
        if (e != TB_OK) {
                if (cron || !errstr[0])
                        tb_fuzz_fail(expr, "-", 0, 0, "refused without a message or with output");
                return 0;
        }
        if (strlen(expr) > TB_CRON_MAX_LEN)
                tb_fuzz_fail(expr, "-", 0, 0, "accepted an expression over TB_CRON_MAX_LEN");
        /* the policies come from the input so both sides of each get covered */
        unsigned h = 0;
        for (size_t i = 0; i < size; i++)
                h = h * 31u + data[i];
        for (size_t z = 0; z < TB_ARRAY_LEN(tb_fuzz_zones); z++) {
                const tb_tz_t *tz = NULL;
                if (tb_tz_open(tb_fuzz_zones[z], &tz, errstr, sizeof(errstr)) != TB_OK) {
                        fprintf(stderr, "fuzz_cron: zone %s: %s\n", tb_fuzz_zones[z], errstr);
                        abort();
                }
                tb_schedule_t s = {
                        .kind = TB_SCHEDULE_CRON,
                        .cron = cron,
                        .tz = tz,
                        .dst_gap = (tb_dst_gap_t)((h >> z) & 1),
                        .dst_overlap = (tb_dst_overlap_t)((h >> (z + 8)) % 3),
                };
                for (size_t i = 0; i < TB_ARRAY_LEN(tb_fuzz_instants); i++) {
                        int64_t after = tb_fuzz_instants[i];
                        for (int k = 0; k < 3; k++) {
                                int64_t next = 0;
                                int note = -1;
                                e = tb_schedule_next(&s, after, &next, &note, errstr,
                                                     sizeof(errstr));
                                if (e == TB_ERR_NOT_FOUND)
                                        break;
                                if (e != TB_OK)
                                        tb_fuzz_fail(expr, tb_fuzz_zones[z], after, next,
                                                     errstr);
                                if (next <= after)
                                        tb_fuzz_fail(expr, tb_fuzz_zones[z], after, next,
                                                     "fire not after the instant");
                                if (next % 1000 != 0)
                                        tb_fuzz_fail(expr, tb_fuzz_zones[z], after, next,
                                                     "fire not on a whole second");
                                if (next > TB_SCHEDULE_MAX_MS)
                                        tb_fuzz_fail(expr, tb_fuzz_zones[z], after, next,
                                                     "fire past 9999-12-31");
                                if (note < TB_DST_NOTE_NONE || note > TB_DST_NOTE_OVERLAP_SECOND)
                                        tb_fuzz_fail(expr, tb_fuzz_zones[z], after, next,
                                                     "bad dst note");
                                if (z == 0 && !tb_cron_matches_wall(cron, next / 1000))
                                        tb_fuzz_fail(expr, tb_fuzz_zones[z], after, next,
                                                     "UTC fire does not match the expression");
                                after = next;
                        }
                }
        }
        tb_cron_free(cron); /* the schedules only borrowed it */
        return 0;
}
