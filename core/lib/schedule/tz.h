/**
 * @file schedule/tz.h
 * @brief IANA time zones for the schedule engine: UTC offsets, local wall
 *        time resolution (DST gaps and overlaps) and civil-calendar math.
 *
 * Zone data comes from ICU (ucal_*). Opening a zone walks ICU's transition
 * list once (years 1800..2500) into an immutable table; after that every
 * query is a binary search with no ICU call and no lock, so zones are safe
 * to share between threads. Instants past the table are folded back by
 * whole 400-year Gregorian cycles (146097 days, a whole number of weeks), in
 * which every annual DST rule repeats exactly.
 *
 * "Wall seconds" below are local civil seconds counted like Unix time
 * (days_from_civil(y, m, d) * 86400 + h * 3600 + min * 60 + s), i.e. the
 * local clock reading with no offset applied.
 */
#ifndef TB_TZ_H
#define TB_TZ_H

#include "tb.h"

/** An interned, immutable time zone. */
typedef struct tb_tz tb_tz_t;

/**
 * @brief Open (or find in the process-wide cache) the zone \p name.
 *
 * @param name  an IANA zone name ("Europe/London", "UTC"; case-sensitive as
 *              in the tz database). NULL means UTC.
 * @param out   receives the zone. Zones are interned: the pointer is shared,
 *              immutable and valid until process exit; never free it.
 * @returns TB_OK; TB_ERR_INVALID for an unknown or malformed name ("unknown
 *          time zone 'Mars/Olympus'", with a suggestion when only the case
 *          differs); TB_ERR_NOMEM; TB_ERR_INTERNAL if ICU fails.
 * @locality any thread (the cache is locked only while opening).
 */
tb_err_t tb_tz_open(const char *name, const tb_tz_t **out, char *errstr,
                    size_t errstr_size);

/** @returns the shared UTC zone (never NULL). */
const tb_tz_t *tb_tz_utc(void);

/** @returns the zone's name as it was opened ("UTC" for tb_tz_utc()). */
const char *tb_tz_name(const tb_tz_t *tz);

/** @returns the UTC offset in seconds in effect at \p utc_s (Unix seconds). */
int32_t tb_tz_offset_at(const tb_tz_t *tz, int64_t utc_s);

/** How a local wall time maps to instants. */
typedef struct tb_tz_local {
        int count;        /**< 0 = in a gap, 1 = normal, 2 = overlap */
        int64_t first_s;  /**< count >= 1: the (earlier) instant */
        int64_t second_s; /**< count == 2: the later instant */
        int64_t gap_end_s; /**< count == 0: the first instant after the gap
                                (the transition instant) */
        int32_t gap_len_s; /**< count == 0: how far the clock jumped */
} tb_tz_local_t;

/** @brief Resolve wall seconds \p wall_s in \p tz to instants (see
 *         tb_tz_local_t). Never fails. */
void tb_tz_resolve(const tb_tz_t *tz, int64_t wall_s, tb_tz_local_t *out);

/** @returns the earliest wall time the clock shows at or after \p utc_s
 *           (min of t + offset(t) over t >= utc_s): lower than the wall
 *           time at \p utc_s only just before a fall-back transition. The
 *           schedule search starts there so that no wall time firing at or
 *           after \p utc_s is missed. */
int64_t tb_tz_min_wall_from(const tb_tz_t *tz, int64_t utc_s);

/**
 * @brief Format \p ms as local RFC 3339 in \p tz, e.g.
 *        "2026-03-08T03:00:00-07:00" (".123" added when ms are not zero;
 *        "Z" is never used, UTC prints "+00:00"). \p buf holds 40 bytes.
 */
void tb_tz_format_local(const tb_tz_t *tz, int64_t ms, char buf[40]);

/* ---- civil calendar (proleptic Gregorian) ---------------------------- */

/** @returns \p a / \p b rounded toward minus infinity (\p b != 0). */
int64_t tb_tz_floordiv(int64_t a, int64_t b);
/** @returns days from 1970-01-01 to \p y - \p m - \p d. */
int64_t tb_tz_days_from_civil(int64_t y, int m, int d);
/** Split \p days since 1970-01-01 into year, month (1-12), day (1-31). */
void tb_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
/** @returns the weekday of \p days since 1970-01-01 (0 = Sunday). */
int tb_tz_weekday(int64_t days);
/** @returns the number of days in month \p m (1-12) of year \p y. */
int tb_tz_days_in_month(int64_t y, int m);

#endif /* TB_TZ_H */
