/**
 * @file schedule/cron.h
 * @brief Cron expressions: Vixie cron semantics plus an optional seconds
 *        field, macros and the Quartz L / W / # extensions.
 *
 * Syntax (docs/scheduling.md has the full table):
 *   [second] minute hour day-of-month month day-of-week
 * Each field is a comma list of `*`, `N`, `N-M`, each with an optional
 * `/step` (every 5th value of the field: star-slash-5; `1-30/7`; `5/15` =
 * 5-max/15). Months JAN-DEC and weekdays
 * SUN-SAT are accepted in any case; weekday 0 and 7 are both Sunday. `?` is
 * `*` in day-of-month and day-of-week. Day-of-month also takes `L`, `L-n`,
 * `nW` and `LW`; day-of-week takes `n#k` (k-th weekday n of the month) and
 * `nL` (last weekday n of the month). Macros: @yearly @annually @monthly
 * @weekly @daily @midnight @hourly.
 *
 * Vixie's day rule: when both day-of-month and day-of-week are restricted
 * (neither field starts with `*` or `?`), a day matches if EITHER matches;
 * otherwise both must match.
 *
 * A parsed expression is immutable: share it between threads freely.
 * Matching works on local "wall seconds" (see tz.h); time zones and DST are
 * the schedule's business (schedule.h).
 */
#ifndef TB_CRON_H
#define TB_CRON_H

#include "tb.h"

typedef struct tb_cron tb_cron_t;

/** Longest expression accepted, in bytes. */
#define TB_CRON_MAX_LEN 256

/**
 * @brief Parse \p expr.
 *
 * Rejects malformed expressions and ones that can never fire (e.g. "0 0 30
 * 2 *") with TB_ERR_INVALID and a message naming the field and the problem:
 * "cron: field 'hour': 25 is out of range 0-23".
 *
 * @param out  receives a new expression owned by the caller
 *             (tb_cron_free()).
 * @returns TB_OK, TB_ERR_INVALID or TB_ERR_NOMEM.
 */
tb_err_t tb_cron_parse(const char *expr, tb_cron_t **out, char *errstr,
                       size_t errstr_size);

/** Free an expression from tb_cron_parse(); NULL is ignored. */
void tb_cron_free(tb_cron_t *cron);

/**
 * @brief Find the first matching wall time at or after \p wall_s.
 *
 * Walks months, days (per-month bitmask of matching days), hours, minutes
 * and seconds by bit scans, so the cost does not grow with the distance.
 *
 * @param wall_s   local wall seconds to start from (inclusive).
 * @param limit_s  give up past this wall time.
 * @param out      receives the matching wall seconds.
 * @returns TB_OK, or TB_ERR_NOT_FOUND if nothing matches up to \p limit_s.
 */
tb_err_t tb_cron_next_wall(const tb_cron_t *cron, int64_t wall_s, int64_t limit_s,
                           int64_t *out);

/** @returns true if the wall time \p wall_s matches (to the second). */
bool tb_cron_matches_wall(const tb_cron_t *cron, int64_t wall_s);

#endif /* TB_CRON_H */
