/**
 * @file schedule/ics.h
 * @brief A strict, bounded iCalendar (RFC 5545) reader for holiday lists:
 *        VEVENTs with DTSTART (DATE or DATE-TIME, floating, UTC or with an
 *        IANA TZID), DTEND or DURATION, SUMMARY, EXDATE and one RRULE
 *        (FREQ=YEARLY/MONTHLY/WEEKLY/DAILY with INTERVAL, COUNT, UNTIL,
 *        BYMONTH, BYMONTHDAY, BYDAY, WKST). Pure computation: no I/O.
 *
 * Anything outside that subset which would change which days an event
 * covers (RDATE, RECURRENCE-ID, BYSETPOS, FREQ=HOURLY, a TZID that is not
 * an IANA name...) is refused with a message naming the line and the
 * property, never guessed at. Properties that do not change the days
 * (DESCRIPTION, LOCATION, UID, X-...) and components other than VEVENT
 * (VTIMEZONE, VTODO, VALARM...) are skipped. docs/scheduling.md,
 * "Calendars", lists the subset for users.
 *
 * Times: an event's start is kept as local "wall seconds" (see tz.h) of
 * its own zone: the TZID's, UTC for a "Z" time, or none (floating: the
 * calendar's zone applies; all-day events are always floating).
 */
#ifndef TB_ICS_H
#define TB_ICS_H

#include "tb.h"
#include "schedule/tz.h"

/** Largest input accepted, in bytes. */
#define TB_ICS_MAX_INPUT (1024 * 1024)
/** Most VEVENTs in one input. */
#define TB_ICS_MAX_EVENTS 10000
/** Longest content line after unfolding, in bytes. */
#define TB_ICS_MAX_LINE 8192
/** Most EXDATE values of one event. */
#define TB_ICS_MAX_EXDATES 1000
/** Most candidate days one expansion may look at (tb_ics_event_expand()'s
 *  default budget, shared by all events of a calendar). */
#define TB_ICS_MAX_EXPANSION 20000000

typedef enum tb_ics_freq {
        TB_ICS_FREQ_NONE = 0, /**< no RRULE: one occurrence */
        TB_ICS_FREQ_DAILY,
        TB_ICS_FREQ_WEEKLY,
        TB_ICS_FREQ_MONTHLY,
        TB_ICS_FREQ_YEARLY,
} tb_ics_freq_t;

/** One BYDAY entry: weekday (0 = Sunday) and ordinal (0 = every; 1 = the
 *  first, -1 = the last... of the month, or of the year in a YEARLY rule
 *  without BYMONTH). */
typedef struct tb_ics_byday {
        int8_t wday;
        int8_t nth;
} tb_ics_byday_t;

typedef struct tb_ics_rrule {
        tb_ics_freq_t freq;
        int interval;            /**< >= 1 */
        int count;               /**< 0 = none */
        bool has_until;
        int64_t until_wall_s;    /**< inclusive, in the event's wall seconds */
        uint16_t bymonth;        /**< bit m (1-12) set; 0 = none */
        int nbymonthday;
        int8_t bymonthday[31];   /**< -31..-1, 1..31 */
        int nbyday;
        tb_ics_byday_t byday[64];
        int wkst;                /**< week start, 0 = Sunday; default Monday */
} tb_ics_rrule_t;

/** One VEVENT. */
typedef struct tb_ics_event {
        int line;                /**< line of its BEGIN:VEVENT */
        bool all_day;            /**< DTSTART;VALUE=DATE */
        int64_t start_wall_s;    /**< first occurrence, wall seconds of tz
                                      (all-day: midnight of the date) */
        const tb_tz_t *tz;       /**< its zone; NULL = floating */
        int64_t duration_s;      /**< >= 0; all-day: a whole number of days */
        char *summary;           /**< unescaped SUMMARY or NULL (owned) */
        tb_ics_rrule_t rrule;    /**< freq NONE when there is no RRULE */
        size_t nexdates;
        int64_t *exdates;        /**< occurrence starts left out, wall s (owned) */
} tb_ics_event_t;

/** A parsed iCalendar object. */
typedef struct tb_ics {
        size_t nevents;
        tb_ics_event_t *events;  /**< owned */
        const tb_tz_t *tz;       /**< X-WR-TIMEZONE if given, else NULL */
        char *name;              /**< X-WR-CALNAME if given, else NULL (owned) */
} tb_ics_t;

/**
 * @brief Parse \p len bytes of iCalendar text (CRLF or LF line ends,
 *        folded lines, one VCALENDAR).
 *
 * Events with STATUS:CANCELLED are left out.
 *
 * @param out  receives a new object owned by the caller (tb_ics_free()).
 * @returns TB_OK; TB_ERR_INVALID with a message naming the line and the
 *          property ("ics: line 12: RRULE: BYSETPOS is not supported");
 *          TB_ERR_NOMEM. Never reads past \p len; NUL bytes are refused.
 */
tb_err_t tb_ics_parse(const char *text, size_t len, tb_ics_t **out, char *errstr,
                      size_t errstr_size);

/** Free an object from tb_ics_parse(); NULL is ignored. */
void tb_ics_free(tb_ics_t *ics);

/** Called with each occurrence's start in the event's wall seconds;
 *  @returns false to stop the expansion. */
typedef bool (*tb_ics_occurrence_cb)(void *ctx, int64_t start_wall_s);

/**
 * @brief Call \p cb for each occurrence of \p ev, in order, starting at or
 *        before \p until_wall_s (EXDATEs left out, COUNT and UNTIL applied).
 *
 * @param budget  candidate days this call may still examine; decremented.
 *                Running out is an error, so that an unbounded rule (DAILY
 *                since 1900) cannot stall a caller.
 * @returns TB_OK, or TB_ERR_INVALID ("ics: line 7: RRULE: more than
 *          20000000 days to expand in all: bound it with COUNT or UNTIL")
 *          when \p budget runs out.
 */
tb_err_t tb_ics_event_expand(const tb_ics_event_t *ev, int64_t until_wall_s,
                             size_t *budget, tb_ics_occurrence_cb cb, void *ctx,
                             char *errstr, size_t errstr_size);

#endif /* TB_ICS_H */
