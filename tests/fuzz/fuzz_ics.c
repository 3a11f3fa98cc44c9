/**
 * @file fuzz_ics.c
 * @brief libFuzzer target: tb_ics_parse() on arbitrary bytes, then, for an
 *        input that parses, the events' expansion, a calendar built from
 *        them in Europe/Paris (the weekend picked from the input), its
 *        queries, and every rule applied to a few fires.
 *
 * Invariants checked (a violation abort()s):
 *  - a refusal has a message starting "ics: " and no output;
 *  - a parsed event lasts 0..367 days, a whole number of days if all-day,
 *    and has at most the limit of events;
 *  - an expansion yields starts in increasing order, none before the
 *    event's start or after the bound asked for;
 *  - a business day found is one the calendar does not contain, and
 *    nothing between it and the day asked about is one;
 *  - a fire kept or moved by a roll rule is not on a day the calendar
 *    contains; a skip names its calendar and a reason.
 */
#include "schedule/calendar.h"
#include "schedule/ics.h"
#include "schedule/tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void tb_fuzz_fail(const char *what, const char *detail) {
        fprintf(stderr, "fuzz_ics: %s: %s\n", what, detail);
        abort();
}

typedef struct tb_fuzz_exp {
        int64_t start, until, last;
        int n;
} tb_fuzz_exp_t;

static bool tb_fuzz_occurrence(void *ctx, int64_t wall) {
        tb_fuzz_exp_t *e = ctx;
        if (wall < e->start || wall > e->until || (e->n && wall <= e->last))
                tb_fuzz_fail("expansion", "occurrence out of order or out of bounds");
        e->last = wall;
        return ++e->n < 500;
}

static const int64_t tb_fuzz_fires[] = {
        INT64_C(1798185600000), /* 2026-12-25T08:00:00Z */
        INT64_C(1774744200000), /* 2026-03-29T00:30:00Z: Paris springs forward */
        INT64_C(1792888199000), /* 2026-10-25T00:29:59Z: Paris falls back */
        INT64_C(1767225600000), /* 2026-01-01T00:00:00Z */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[512] = "";
        tb_ics_t *ics = NULL;
        tb_err_t e = tb_ics_parse((const char *)data, size, &ics, errstr, sizeof(errstr));
        if (e != TB_OK) {
                if (ics || strncmp(errstr, "ics: ", 5))
                        tb_fuzz_fail("refusal without a message or with output", errstr);
                return 0;
        }
        if (ics->nevents > TB_ICS_MAX_EVENTS)
                tb_fuzz_fail("parse", "too many events");
        for (size_t i = 0; i < ics->nevents; i++) {
                const tb_ics_event_t *ev = &ics->events[i];
                if (ev->duration_s < 0 || ev->duration_s > INT64_C(367) * 86400 ||
                    (ev->all_day && ev->duration_s % 86400))
                        tb_fuzz_fail("parse", "bad duration");
                if (i < 8) {
                        tb_fuzz_exp_t x = {.start = ev->start_wall_s,
                                           .until = ev->start_wall_s + INT64_C(40) * 366 * 86400};
                        size_t budget = 200000;
                        e = tb_ics_event_expand(ev, x.until, &budget, tb_fuzz_occurrence, &x,
                                                errstr, sizeof(errstr));
                        if (e != TB_OK && e != TB_ERR_INVALID)
                                tb_fuzz_fail("expansion", errstr);
                }
        }
        const tb_tz_t *paris = NULL;
        if (tb_tz_open("Europe/Paris", &paris, errstr, sizeof(errstr)) != TB_OK)
                tb_fuzz_fail("zone", errstr);
        unsigned weekend = size ? data[size - 1] % 0x7f : 0;
        tb_calendar_t *cal = NULL;
        e = tb_calendar_new("fuzz", paris, weekend, ics, &cal, errstr, sizeof(errstr));
        tb_ics_free(ics); /* the calendar keeps no pointer into it */
        if (e != TB_OK) {
                if (cal || !errstr[0])
                        tb_fuzz_fail("calendar refused without a message", errstr);
                return 0;
        }
        int64_t day0 = tb_tz_days_from_civil(2026, 12, 20);
        for (int64_t d = day0; d < day0 + 14; d++) {
                int64_t nb;
                for (int dir = 0; dir < 2; dir++) {
                        e = dir ? tb_calendar_previous_business_day(cal, d, &nb, errstr,
                                                                    sizeof(errstr))
                                : tb_calendar_next_business_day(cal, d, &nb, errstr,
                                                                sizeof(errstr));
                        if (e == TB_ERR_NOT_FOUND)
                                continue;
                        if (e != TB_OK)
                                tb_fuzz_fail("business day", errstr);
                        bool in = true;
                        for (int64_t k = dir ? nb + 1 : d + 1; k < (dir ? d : nb); k++) {
                                if (tb_calendar_contains(cal, k, &in, errstr, sizeof(errstr)) ||
                                    !in)
                                        tb_fuzz_fail("business day", "skipped one");
                        }
                        if (tb_calendar_contains(cal, nb, &in, errstr, sizeof(errstr)) || in)
                                tb_fuzz_fail("business day", "found a contained day");
                }
        }
        for (int kind = TB_CALENDAR_EXCLUDE; kind <= TB_CALENDAR_ROLL_PREVIOUS; kind++) {
                tb_calendar_rule_t rule = {cal, (tb_calendar_rule_kind_t)kind};
                for (size_t i = 0; i < TB_ARRAY_LEN(tb_fuzz_fires); i++) {
                        tb_calendar_decision_t dec;
                        e = tb_calendar_apply(&rule, 1, paris, tb_fuzz_fires[i], &dec, errstr,
                                              sizeof(errstr));
                        if (e != TB_OK)
                                tb_fuzz_fail("apply", errstr);
                        if (dec.verdict == TB_CALENDAR_SKIPPED &&
                            (dec.calendar != cal || !dec.reason[0]))
                                tb_fuzz_fail("apply", "a skip without its calendar or reason");
                        if (dec.verdict != TB_CALENDAR_SKIPPED && kind >= TB_CALENDAR_ROLL_NEXT) {
                                int64_t s = dec.fire_ms / 1000;
                                int64_t day = (s + tb_tz_offset_at(paris, s)) / 86400;
                                bool in = true;
                                if (tb_calendar_contains(cal, day, &in, errstr, sizeof(errstr)) ||
                                    in)
                                        tb_fuzz_fail("apply", "rolled onto a contained day");
                                if (kind == TB_CALENDAR_ROLL_NEXT
                                            ? dec.fire_ms < tb_fuzz_fires[i]
                                            : dec.fire_ms > tb_fuzz_fires[i])
                                        tb_fuzz_fail("apply", "rolled the wrong way");
                        }
                }
        }
        tb_calendar_free(cal);
        return 0;
}
