/**
 * @file schedule/occurrences.h
 * @brief The occurrences of a schedule in a past (or any) range, and the run
 *        id every fire of one occurrence carries. Pure computation, used by
 *        backfill (roles/api/backfill.c) and the scheduler's run ids.
 *
 * @locality any thread.
 */
#ifndef TB_SCHEDULE_OCCURRENCES_H
#define TB_SCHEDULE_OCCURRENCES_H

#include "schedule/schedule.h"

/** Most occurrences one range may hold (a backfill, a listing). */
#define TB_SCHEDULE_OCCURRENCES_MAX 10000

/**
 * @brief The nominal fires of \p s in [\p from_ms, \p to_ms), ascending,
 *        as tb_schedule_next() computes them one after the other (so start_at,
 *        end_at, expires_at and the DST policies apply exactly as for the
 *        scheduler; jitter does not: it delays a fire, it does not move its
 *        nominal time).
 *
 * @param max    at most this many (0: TB_SCHEDULE_OCCURRENCES_MAX).
 * @param out    receives a malloc'ed array (caller frees; NULL when empty).
 * @param cnt    receives its length.
 * @param errstr the message of an error: TB_ERR_INVALID when \p to_ms is not
 *               after \p from_ms ("to: ... is not after from ..."), when the
 *               range holds more than \p max fires (naming `to` and the latest
 *               `to` that fits), or when \p s is incoherent.
 * @returns TB_OK, TB_ERR_INVALID or TB_ERR_NOMEM.
 */
tb_err_t tb_schedule_occurrences(const tb_schedule_t *s, int64_t from_ms, int64_t to_ms,
                                 size_t max, int64_t **out, size_t *cnt, char *errstr,
                                 size_t errstr_size);

/**
 * @brief The run id of attempt \p attempt of the fire of \p task_id at
 *        \p nominal_ms: the first 32 hex digits of
 *        SHA-256("<task id>|<nominal ms>|<attempt>"). Every fire of one
 *        occurrence (scheduled, misfired, backfilled) has this id, which is
 *        how the executor and the projection refuse a second one.
 */
void tb_schedule_run_id(const char *task_id, int64_t nominal_ms, int attempt, char out[33]);

#endif /* TB_SCHEDULE_OCCURRENCES_H */
