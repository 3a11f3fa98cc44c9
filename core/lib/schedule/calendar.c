/**
 * @file schedule/calendar.c
 * @brief Business calendars: the day bitmap built from iCalendar events and
 *        a weekend, business-day search, and the task rules (exclude, only,
 *        roll next / previous) applied to fires.
 */
#include "schedule/calendar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct tb_calendar {
        char name[TB_CALENDAR_NAME_MAX + 1];
        const tb_tz_t *tz;
        unsigned weekend;
        int64_t first_day; /**< day number of bit 0 */
        int64_t ndays;
        uint8_t *bits;     /**< event days (the weekend is not stored) */
};

static void tb_calendar_day_str(int64_t day, char out[16]) {
        int64_t y;
        int m, d;
        tb_tz_civil_from_days(day, &y, &m, &d);
        snprintf(out, 16, "%04d-%02d-%02d", (int)y, m, d);
}

const char *tb_calendar_name(const tb_calendar_t *cal) { return cal->name; }
const tb_tz_t *tb_calendar_tz(const tb_calendar_t *cal) { return cal->tz; }

static const char *const tb_calendar_rule_names[] = {"exclude", "only", "roll_next",
                                                     "roll_previous"};
const char *tb_calendar_rule_name(tb_calendar_rule_kind_t kind) {
        return (unsigned)kind < TB_ARRAY_LEN(tb_calendar_rule_names)
                       ? tb_calendar_rule_names[kind]
                       : "?";
}

static const char *const tb_calendar_verdict_names[] = {"fire", "moved", "skipped",
                                                        "duplicate"};
const char *tb_calendar_verdict_name(tb_calendar_verdict_t v) {
        return (unsigned)v < TB_ARRAY_LEN(tb_calendar_verdict_names)
                       ? tb_calendar_verdict_names[v]
                       : "?";
}

static const char *const tb_calendar_wday_names[] = {"sun", "mon", "tue", "wed",
                                                     "thu", "fri", "sat"};

void tb_calendar_weekend_format(unsigned mask, char buf[32]) {
        size_t n = 0;
        buf[0] = '\0';
        for (int k = 1; k <= 7; k++) {
                int w = k % 7; /* Monday first, Sunday last */
                if (mask >> w & 1) {
                        if (n)
                                buf[n++] = ',';
                        memcpy(buf + n, tb_calendar_wday_names[w], 4); /* with its NUL */
                        n += 3;
                }
        }
}

tb_err_t tb_calendar_weekend_parse(const char *s, unsigned *out, char *errstr,
                                   size_t errstr_size) {
        const char *const *names = tb_calendar_wday_names;
        unsigned mask = 0;
        *out = 0;
        if (!s || !*s || !strcasecmp(s, "none"))
                return TB_OK;
        for (const char *p = s;;) {
                const char *c = strchr(p, ',');
                size_t n = c ? (size_t)(c - p) : strlen(p);
                int k = -1;
                for (int i = 0; i < 7; i++)
                        if (n == 3 && !strncasecmp(p, names[i], 3))
                                k = i;
                if (k < 0)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "weekend: '%.*s' is not a weekday (use mon, tue, "
                                         "wed, thu, fri, sat, sun, comma-separated, or none)",
                                         (int)(n > 20 ? 20 : n), p);
                mask |= 1u << k;
                if (!c)
                        break;
                p = c + 1;
        }
        *out = mask;
        return TB_OK;
}

/* ---- building ------------------------------------------------------------ */

typedef struct tb_calendar_build {
        tb_calendar_t *cal;
        const tb_ics_event_t *ev;
        const tb_tz_t *ev_tz; /**< the event's zone, or the calendar's if floating */
        size_t *budget;
        bool over_budget;
} tb_calendar_build_t;

static void tb_calendar_mark(tb_calendar_t *cal, int64_t day) {
        int64_t i = day - cal->first_day;
        if (i >= 0 && i < cal->ndays)
                cal->bits[i >> 3] |= (uint8_t)(1u << (i & 7));
}

/* One occurrence: mark each calendar day it covers. */
static bool tb_calendar_occurrence(void *ctx, int64_t start_wall_s) {
        tb_calendar_build_t *b = ctx;
        tb_calendar_t *cal = b->cal;
        int64_t first, last;
        if (b->ev->all_day) {
                first = tb_tz_floordiv(start_wall_s, 86400);
                last = first + b->ev->duration_s / 86400 - 1;
        } else {
                /* the event's wall time -> instant -> the calendar's wall time */
                tb_tz_local_t loc;
                tb_tz_resolve(b->ev_tz, start_wall_s, &loc);
                int64_t t = loc.count > 0 ? loc.first_s
                                          : start_wall_s - tb_tz_offset_at(b->ev_tz,
                                                                           loc.gap_end_s - 1);
                int64_t e = t + b->ev->duration_s;
                int64_t ws = t + tb_tz_offset_at(cal->tz, t);
                /* the end is exclusive: an event ending at midnight does not
                 * touch the next day */
                int64_t we = b->ev->duration_s ? e - 1 + tb_tz_offset_at(cal->tz, e - 1) : ws;
                first = tb_tz_floordiv(ws, 86400);
                last = tb_tz_floordiv(we, 86400);
        }
        if (first - cal->first_day >= cal->ndays)
                return false; /* past the span: so are the later ones */
        size_t cost = (size_t)(last - first + 1);
        if (*b->budget < cost) {
                b->over_budget = true;
                return false;
        }
        *b->budget -= cost;
        for (int64_t d = first; d <= last; d++)
                tb_calendar_mark(cal, d);
        return true;
}

tb_err_t tb_calendar_new(const char *name, const tb_tz_t *tz, unsigned weekend,
                         const tb_ics_t *ics, tb_calendar_t **out, char *errstr,
                         size_t errstr_size) {
        tb_err_t err;
        *out = NULL;
        size_t nlen = name ? strlen(name) : 0;
        if (nlen == 0 || nlen > TB_CALENDAR_NAME_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "calendar: name must be 1 to %d bytes", TB_CALENDAR_NAME_MAX);
        if ((weekend & 0x7f) == 0x7f || weekend > 0x7f)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "calendar '%s': weekend: every day of the week leaves no "
                                 "business day (name at most six weekdays)",
                                 name);
        tb_calendar_t *cal = calloc(1, sizeof(*cal));
        if (!cal)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        memcpy(cal->name, name, nlen + 1);
        cal->tz = tz ? tz : tb_tz_utc();
        cal->weekend = weekend;
        cal->first_day = tb_tz_days_from_civil(TB_CALENDAR_FIRST_YEAR, 1, 1);
        cal->ndays = tb_tz_days_from_civil(TB_CALENDAR_END_YEAR, 1, 1) - cal->first_day;
        cal->bits = calloc((size_t)(cal->ndays + 7) / 8, 1);
        if (!cal->bits) {
                free(cal);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        /* expand up to the end of the span in the calendar's wall time,
         * plus a day for zones ahead of it */
        int64_t until = (cal->first_day + cal->ndays + 1) * 86400;
        size_t budget = TB_ICS_MAX_EXPANSION;
        for (size_t i = 0; ics && i < ics->nevents; i++) {
                const tb_ics_event_t *ev = &ics->events[i];
                tb_calendar_build_t b = {.cal = cal,
                                         .ev = ev,
                                         .ev_tz = ev->tz ? ev->tz : cal->tz,
                                         .budget = &budget};
                err = tb_ics_event_expand(ev, until, &budget, tb_calendar_occurrence, &b, errstr,
                                          errstr_size);
                if (!err && b.over_budget)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "ics: line %d: RRULE: more than %d days to expand in "
                                        "all: bound it with COUNT or UNTIL",
                                        ev->line, TB_ICS_MAX_EXPANSION);
                if (err) {
                        tb_calendar_free(cal);
                        return err;
                }
        }
        *out = cal;
        return TB_OK;
}

void tb_calendar_free(tb_calendar_t *cal) {
        if (!cal)
                return;
        free(cal->bits);
        free(cal);
}

/* ---- queries -------------------------------------------------------------- */

static tb_err_t tb_calendar_span_err(const tb_calendar_t *cal, int64_t day, char *errstr,
                                     size_t errstr_size) {
        char d[16];
        tb_calendar_day_str(day, d);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "calendar '%s': %s is outside the years calendars cover (%d-%d)",
                         cal->name, d, TB_CALENDAR_FIRST_YEAR, TB_CALENDAR_END_YEAR - 1);
}

tb_err_t tb_calendar_contains(const tb_calendar_t *cal, int64_t day, bool *out,
                              char *errstr, size_t errstr_size) {
        int64_t i = day - cal->first_day;
        if (i < 0 || i >= cal->ndays)
                return tb_calendar_span_err(cal, day, errstr, errstr_size);
        *out = (cal->weekend >> tb_tz_weekday(day) & 1) || (cal->bits[i >> 3] >> (i & 7) & 1);
        return TB_OK;
}

static tb_err_t tb_calendar_business_day(const tb_calendar_t *cal, int64_t day, int dir,
                                         int64_t *out, char *errstr, size_t errstr_size) {
        for (int k = 1; k <= TB_CALENDAR_MAX_ROLL_DAYS; k++) {
                bool in;
                tb_err_t err = tb_calendar_contains(cal, day + dir * k, &in, errstr, errstr_size);
                if (err)
                        return err;
                if (!in) {
                        *out = day + dir * k;
                        return TB_OK;
                }
        }
        char d[16];
        tb_calendar_day_str(day, d);
        return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                         "calendar '%s': no business day within %d days %s %s", cal->name,
                         TB_CALENDAR_MAX_ROLL_DAYS, dir > 0 ? "after" : "before", d);
}

tb_err_t tb_calendar_next_business_day(const tb_calendar_t *cal, int64_t day, int64_t *out,
                                       char *errstr, size_t errstr_size) {
        return tb_calendar_business_day(cal, day, 1, out, errstr, errstr_size);
}

tb_err_t tb_calendar_previous_business_day(const tb_calendar_t *cal, int64_t day,
                                           int64_t *out, char *errstr, size_t errstr_size) {
        return tb_calendar_business_day(cal, day, -1, out, errstr, errstr_size);
}

/* ---- rules ------------------------------------------------------------------ */

/* Does \p cal contain the local day (its zone) of instant \p s? */
static tb_err_t tb_calendar_contains_instant(const tb_calendar_t *cal, int64_t s, bool *in,
                                             int64_t *day, char *errstr, size_t errstr_size) {
        *day = tb_tz_floordiv(s + tb_tz_offset_at(cal->tz, s), 86400);
        return tb_calendar_contains(cal, *day, in, errstr, errstr_size);
}

/* Is instant \p s in any of the roll calendars? *which gets the first. */
static tb_err_t tb_calendar_roll_blocked(const tb_calendar_rule_t *rules, size_t n, int64_t s,
                                         const tb_calendar_rule_t **which, int64_t *day,
                                         char *errstr, size_t errstr_size) {
        *which = NULL;
        for (size_t i = 0; i < n; i++) {
                if (rules[i].kind != TB_CALENDAR_ROLL_NEXT &&
                    rules[i].kind != TB_CALENDAR_ROLL_PREVIOUS)
                        continue;
                bool in;
                int64_t d;
                tb_err_t err = tb_calendar_contains_instant(rules[i].calendar, s, &in, &d,
                                                            errstr, errstr_size);
                if (err)
                        return err;
                if (in && !*which) {
                        *which = &rules[i];
                        *day = d;
                }
        }
        return TB_OK;
}

tb_err_t tb_calendar_apply(const tb_calendar_rule_t *rules, size_t n, const tb_tz_t *local_tz,
                           int64_t nominal_ms, tb_calendar_decision_t *out, char *errstr,
                           size_t errstr_size) {
        tb_err_t err;
        char d1[16], d2[16];
        memset(out, 0, sizeof(*out));
        out->verdict = TB_CALENDAR_FIRE;
        out->nominal_ms = out->fire_ms = nominal_ms;
        int dir = 0;
        for (size_t i = 0; i < n; i++) {
                if (!rules[i].calendar)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "calendars[%zu]: no calendar", i);
                if ((unsigned)rules[i].kind > TB_CALENDAR_ROLL_PREVIOUS)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "calendars[%zu].rule: unknown rule %d", i,
                                         (int)rules[i].kind);
                int d = rules[i].kind == TB_CALENDAR_ROLL_NEXT       ? 1
                        : rules[i].kind == TB_CALENDAR_ROLL_PREVIOUS ? -1
                                                                     : 0;
                if (d && dir && d != dir)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "calendars[%zu].rule: roll_next and roll_previous "
                                         "cannot both be used by one task (keep one "
                                         "direction)",
                                         i);
                if (d)
                        dir = d;
        }
        int64_t ms_part = nominal_ms - tb_tz_floordiv(nominal_ms, 1000) * 1000;
        int64_t s = tb_tz_floordiv(nominal_ms, 1000);

        if (dir) {
                const tb_calendar_rule_t *which;
                int64_t day0;
                if ((err = tb_calendar_roll_blocked(rules, n, s, &which, &day0, errstr,
                                                    errstr_size)))
                        return err;
                if (which) {
                        const tb_tz_t *lz = local_tz ? local_tz : tb_tz_utc();
                        int64_t wall = s + tb_tz_offset_at(lz, s);
                        int64_t lday = tb_tz_floordiv(wall, 86400);
                        int64_t tod = wall - lday * 86400;
                        bool found = false;
                        for (int k = 1; k <= TB_CALENDAR_MAX_ROLL_DAYS && !found; k++) {
                                tb_tz_local_t loc;
                                tb_tz_resolve(lz, (lday + dir * k) * 86400 + tod, &loc);
                                int64_t t = loc.count > 0 ? loc.first_s : loc.gap_end_s;
                                const tb_calendar_rule_t *w2;
                                int64_t dd;
                                if ((err = tb_calendar_roll_blocked(rules, n, t, &w2, &dd,
                                                                    errstr, errstr_size)))
                                        return err;
                                if (!w2) {
                                        found = true;
                                        s = t;
                                }
                        }
                        out->calendar = which->calendar;
                        out->rule = which->kind;
                        tb_calendar_day_str(day0, d1);
                        if (!found) {
                                out->verdict = TB_CALENDAR_SKIPPED;
                                tb_snprintf(out->reason, sizeof(out->reason),
                                            "%s is in calendar '%s' (%s) and no business day "
                                            "is within %d days",
                                            d1, which->calendar->name,
                                            tb_calendar_rule_name(which->kind),
                                            TB_CALENDAR_MAX_ROLL_DAYS);
                                return TB_OK;
                        }
                        out->verdict = TB_CALENDAR_MOVED;
                        out->fire_ms = s * 1000 + ms_part;
                        int64_t wd = tb_tz_floordiv(s + tb_tz_offset_at(lz, s), 86400);
                        tb_calendar_day_str(wd, d2);
                        tb_snprintf(out->reason, sizeof(out->reason),
                                    "%s is in calendar '%s' (%s): moved to %s", d1,
                                    which->calendar->name, tb_calendar_rule_name(which->kind),
                                    d2);
                }
        }
        /* the filters see the day the fire happens */
        for (size_t i = 0; i < n; i++) {
                if (rules[i].kind != TB_CALENDAR_EXCLUDE && rules[i].kind != TB_CALENDAR_ONLY)
                        continue;
                bool in;
                int64_t day;
                if ((err = tb_calendar_contains_instant(rules[i].calendar, s, &in, &day, errstr,
                                                        errstr_size)))
                        return err;
                if (in != (rules[i].kind == TB_CALENDAR_EXCLUDE))
                        continue;
                out->verdict = TB_CALENDAR_SKIPPED;
                out->calendar = rules[i].calendar;
                out->rule = rules[i].kind;
                out->fire_ms = nominal_ms;
                tb_calendar_day_str(day, d1);
                tb_snprintf(out->reason, sizeof(out->reason), "%s is %sin calendar '%s' (%s)%s",
                            d1, in ? "" : "not ", rules[i].calendar->name,
                            tb_calendar_rule_name(rules[i].kind),
                            dir && s * 1000 + ms_part != nominal_ms ? " after rolling" : "");
                return TB_OK;
        }
        return TB_OK;
}

tb_err_t tb_calendar_plan(const tb_schedule_t *s, const tb_calendar_rule_t *rules, size_t n,
                          int64_t after_ms, size_t count, tb_calendar_decision_t *out,
                          size_t *nout, char *errstr, size_t errstr_size) {
        tb_err_t err;
        int64_t t = after_ms;
        *nout = 0;
        const tb_tz_t *lz = s->kind == TB_SCHEDULE_CRON ? s->tz : NULL;
        for (size_t i = 0; i < count; i++) {
                int64_t next;
                err = tb_schedule_next(s, t, &next, NULL, errstr, errstr_size);
                if (err == TB_ERR_NOT_FOUND)
                        return TB_OK;
                if (err)
                        return err;
                if ((err = tb_calendar_apply(rules, n, lz, next, &out[i], errstr, errstr_size)))
                        return err;
                if (out[i].verdict == TB_CALENDAR_FIRE || out[i].verdict == TB_CALENDAR_MOVED) {
                        for (size_t j = 0; j < i; j++) {
                                if ((out[j].verdict == TB_CALENDAR_FIRE ||
                                     out[j].verdict == TB_CALENDAR_MOVED) &&
                                    out[j].fire_ms == out[i].fire_ms) {
                                        char at[32], was[sizeof(out[i].reason)];
                                        tb_time_format(out[j].nominal_ms, at);
                                        memcpy(was, out[i].reason, sizeof(was));
                                        out[i].verdict = TB_CALENDAR_DUPLICATE;
                                        tb_snprintf(out[i].reason, sizeof(out[i].reason),
                                                    "%s%sthe occurrence of %s already runs "
                                                    "at that instant",
                                                    was, was[0] ? "; " : "", at);
                                        break;
                                }
                        }
                }
                *nout = i + 1;
                t = next;
        }
        return TB_OK;
}
