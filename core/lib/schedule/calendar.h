/**
 * @file schedule/calendar.h
 * @brief Business calendars: a set of local days in a time zone (the days
 *        of an iCalendar's events plus chosen weekdays, the "weekend"), and
 *        what a task's calendar rules do to a fire. Pure computation.
 *
 * A calendar CONTAINS a day when an event of its .ics covers any part of
 * that local day (an all-day event its dates, a timed one every local day
 * it overlaps in the calendar's zone) or when the day's weekday is in its
 * weekend. A BUSINESS DAY is a day the calendar does not contain.
 *
 * Rules (TaskSpec.calendars, docs/scheduling.md "Calendars"):
 *  - EXCLUDE: a fire on a day the calendar contains is skipped;
 *  - ONLY: a fire on a day the calendar does not contain is skipped;
 *  - ROLL_NEXT / ROLL_PREVIOUS: a fire on a day the calendar contains moves
 *    to the same local time on the next / previous business day.
 * All roll rules of a task act together (the target is a business day of
 * every roll calendar) and one task cannot roll both ways. EXCLUDE and
 * ONLY are checked on the day the fire finally happens (after rolling).
 *
 * Days are stored as a bitmap over TB_CALENDAR_FIRST_YEAR ..
 * TB_CALENDAR_END_YEAR - 1, built once; a calendar is then immutable and
 * safe to share between threads. A query outside that span is an error,
 * never a guess.
 */
#ifndef TB_CALENDAR_H
#define TB_CALENDAR_H

#include "tb.h"
#include "schedule/ics.h"
#include "schedule/schedule.h"
#include "schedule/tz.h"

#define TB_CALENDAR_FIRST_YEAR 1970
#define TB_CALENDAR_END_YEAR 2200
/** Longest calendar name. */
#define TB_CALENDAR_NAME_MAX 128
/** How far a roll looks for a business day. */
#define TB_CALENDAR_MAX_ROLL_DAYS 366

typedef struct tb_calendar tb_calendar_t;

/** Weekday bits for a weekend mask: bit 0 = Sunday ... bit 6 = Saturday. */
#define TB_CALENDAR_SAT_SUN ((1u << 0) | (1u << 6))

/**
 * @brief Build a calendar.
 *
 * @param name     its name (copied), 1..TB_CALENDAR_NAME_MAX bytes.
 * @param tz       the zone its days are in (interned, from tb_tz_open();
 *                 NULL = UTC). Floating event times are read in it.
 * @param weekend  weekday bits (TB_CALENDAR_SAT_SUN, 0 for none); all seven
 *                 is refused (no business day at all).
 * @param ics      events to add, or NULL; only read during the call.
 * @param out      receives a new calendar owned by the caller
 *                 (tb_calendar_free()).
 * @returns TB_OK; TB_ERR_INVALID naming the problem (an event whose rule
 *          expands too far names its line); TB_ERR_NOMEM.
 */
tb_err_t tb_calendar_new(const char *name, const tb_tz_t *tz, unsigned weekend,
                         const tb_ics_t *ics, tb_calendar_t **out, char *errstr,
                         size_t errstr_size);

/** Free a calendar; NULL is ignored. */
void tb_calendar_free(tb_calendar_t *cal);

const char *tb_calendar_name(const tb_calendar_t *cal);
const tb_tz_t *tb_calendar_tz(const tb_calendar_t *cal);

/**
 * @brief Parse a weekend list: comma-separated weekday names ("sat,sun",
 *        "fri,sat"; mon..sun, any case), "" or "none" for none.
 * @returns TB_ERR_INVALID naming the bad item and the choices.
 */
tb_err_t tb_calendar_weekend_parse(const char *s, unsigned *out, char *errstr,
                                   size_t errstr_size);

/** Write weekend \p mask as tb_calendar_weekend_parse() reads it, Monday
 *  first ("sat,sun"; "" for none) into \p buf (32 bytes). */
void tb_calendar_weekend_format(unsigned mask, char buf[32]);

/**
 * @brief Does the calendar contain local day \p day (days since
 *        1970-01-01 in its zone)? The brief calls it "is excluded": a
 *        holiday or a weekend day.
 * @returns TB_OK, or TB_ERR_INVALID when \p day is outside the span.
 */
tb_err_t tb_calendar_contains(const tb_calendar_t *cal, int64_t day, bool *out,
                              char *errstr, size_t errstr_size);

/**
 * @brief The first business day after (next) or before (previous) \p day.
 * @returns TB_OK; TB_ERR_NOT_FOUND when none is within
 *          TB_CALENDAR_MAX_ROLL_DAYS; TB_ERR_INVALID outside the span.
 */
tb_err_t tb_calendar_next_business_day(const tb_calendar_t *cal, int64_t day, int64_t *out,
                                       char *errstr, size_t errstr_size);
tb_err_t tb_calendar_previous_business_day(const tb_calendar_t *cal, int64_t day,
                                           int64_t *out, char *errstr, size_t errstr_size);

/** The rule kinds, in the order of the Avro enum CalendarRuleKind. */
typedef enum tb_calendar_rule_kind {
        TB_CALENDAR_EXCLUDE = 0,
        TB_CALENDAR_ONLY,
        TB_CALENDAR_ROLL_NEXT,
        TB_CALENDAR_ROLL_PREVIOUS,
} tb_calendar_rule_kind_t;

/** @returns "exclude", "only", "roll_next" or "roll_previous". */
const char *tb_calendar_rule_name(tb_calendar_rule_kind_t kind);

/** One of a task's rules; the calendar is borrowed. */
typedef struct tb_calendar_rule {
        const tb_calendar_t *calendar;
        tb_calendar_rule_kind_t kind;
} tb_calendar_rule_t;

typedef enum tb_calendar_verdict {
        TB_CALENDAR_FIRE = 0,  /**< runs at its nominal time */
        TB_CALENDAR_MOVED,     /**< runs at fire_ms, rolled */
        TB_CALENDAR_SKIPPED,   /**< does not run */
        TB_CALENDAR_DUPLICATE, /**< tb_calendar_plan() only: rolled onto an
                                    instant an earlier occurrence runs at */
} tb_calendar_verdict_t;

/** @returns "fire", "moved", "skipped" or "duplicate". */
const char *tb_calendar_verdict_name(tb_calendar_verdict_t v);

/** What the rules did to one fire. */
typedef struct tb_calendar_decision {
        tb_calendar_verdict_t verdict;
        int64_t nominal_ms;
        int64_t fire_ms;                 /**< when it runs (FIRE, MOVED) */
        const tb_calendar_t *calendar;   /**< MOVED / SKIPPED: the deciding one */
        tb_calendar_rule_kind_t rule;    /**< its rule */
        char reason[200];                /**< "" for FIRE; else for people:
                                              "2026-12-25 is in calendar 'fr'
                                              (exclude)" */
} tb_calendar_decision_t;

/**
 * @brief Apply \p n rules to the fire at \p nominal_ms.
 *
 * Rolling keeps the local time of \p local_tz (the task's zone; NULL =
 * UTC): a local time that the new day does not have (DST gap) becomes the
 * first instant after the gap, one it has twice the first of them.
 *
 * @returns TB_OK with \p out filled; TB_ERR_INVALID when the rules mix
 *          ROLL_NEXT and ROLL_PREVIOUS, a rule has no calendar, or a day
 *          falls outside a calendar's span.
 */
tb_err_t tb_calendar_apply(const tb_calendar_rule_t *rules, size_t n, const tb_tz_t *local_tz,
                           int64_t nominal_ms, tb_calendar_decision_t *out, char *errstr,
                           size_t errstr_size);

/**
 * @brief The next \p count occurrences of \p s after \p after_ms with the
 *        rules applied, in nominal order (a preview, or a backfill).
 *
 * Collisions: an occurrence that would run at an instant at which an
 * earlier occurrence of this plan already runs (either of them rolled) is
 * TB_CALENDAR_DUPLICATE: one run per instant, owned by the earliest
 * nominal occurrence. So a
 * daily 09:00 task rolling Saturday and Sunday to Monday runs once on
 * Monday, as Saturday's occurrence; Monday's own is the duplicate.
 *
 * @param out  caller's array of \p count; *\p nout receives how many were
 *             filled (fewer when the schedule ends).
 * @returns TB_OK, or an error of tb_schedule_next() / tb_calendar_apply().
 */
tb_err_t tb_calendar_plan(const tb_schedule_t *s, const tb_calendar_rule_t *rules, size_t n,
                          int64_t after_ms, size_t count, tb_calendar_decision_t *out,
                          size_t *nout, char *errstr, size_t errstr_size);

#endif /* TB_CALENDAR_H */
