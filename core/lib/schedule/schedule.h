/**
 * @file schedule/schedule.h
 * @brief When a task fires: one-off instants, fixed intervals and cron
 *        expressions in an IANA time zone, with DST policies, windows and
 *        deterministic jitter. Pure computation: no I/O, no Kafka.
 *
 * All instants are epoch milliseconds (UTC). The functions here compute
 * NOMINAL fire times (the time the schedule names); the delay actually
 * applied is nominal + tb_schedule_jitter(). Run ids and replays use the
 * nominal time. See docs/scheduling.md for the user-facing rules.
 *
 * @locality any thread: a tb_schedule_t is read-only to these functions.
 */
#ifndef TB_SCHEDULE_H
#define TB_SCHEDULE_H

#include "tb.h"
#include "schedule/cron.h"
#include "schedule/tz.h"

typedef enum tb_schedule_kind {
        TB_SCHEDULE_ONCE = 1, /**< fire once at once_at_ms */
        TB_SCHEDULE_EVERY,    /**< every every_ms from the anchor, absolute time */
        TB_SCHEDULE_CRON,     /**< cron expression in the zone tz */
} tb_schedule_kind_t;

/** What a cron local time that does not exist (spring forward) does. */
typedef enum tb_dst_gap {
        TB_DST_GAP_SHIFT = 0, /**< fire at the first instant after the gap (default) */
        TB_DST_GAP_SKIP,      /**< do not fire */
} tb_dst_gap_t;

/** What a cron local time that happens twice (fall back) does. */
typedef enum tb_dst_overlap {
        TB_DST_OVERLAP_FIRST = 0, /**< fire at the first occurrence (default) */
        TB_DST_OVERLAP_LAST,      /**< fire at the second occurrence */
        TB_DST_OVERLAP_BOTH,      /**< fire at both */
} tb_dst_overlap_t;

/** How DST affected a fire (for the CLI's --json preview). */
typedef enum tb_dst_note {
        TB_DST_NOTE_NONE = 0,
        TB_DST_NOTE_SHIFTED,        /**< its local time was in a gap; moved after it */
        TB_DST_NOTE_OVERLAP_FIRST,  /**< its local time repeats; this is the 1st time */
        TB_DST_NOTE_OVERLAP_SECOND, /**< its local time repeats; this is the 2nd time */
} tb_dst_note_t;

/**
 * A schedule. Zero-initialise, then fill. Times are epoch ms; 0 in
 * start_at_ms / end_at_ms / expires_at_ms means "none".
 *
 * Ownership: \p cron is owned by the schedule (tb_schedule_clear() frees
 * it); \p tz is an interned zone from tb_tz_open() (never freed; NULL =
 * UTC).
 */
typedef struct tb_schedule {
        tb_schedule_kind_t kind;
        int64_t once_at_ms;      /**< ONCE: the instant */
        int64_t every_ms;        /**< EVERY: the period, >= 1000 */
        tb_cron_t *cron;         /**< CRON: the expression (owned) */
        const tb_tz_t *tz;       /**< CRON: the zone; NULL = UTC */
        int64_t anchor_ms;       /**< EVERY: anchor when start_at_ms is 0
                                      (the task's creation time) */
        int64_t start_at_ms;     /**< no fire before it (inclusive bound);
                                      EVERY also anchors here */
        int64_t end_at_ms;       /**< no fire after it (a fire AT end_at counts) */
        int64_t expires_at_ms;   /**< no fire at or after it */
        tb_dst_gap_t dst_gap;
        tb_dst_overlap_t dst_overlap;
        int64_t jitter_ms;       /**< max extra delay, >= 0 */
} tb_schedule_t;

/** Shortest EVERY period. */
#define TB_SCHEDULE_MIN_EVERY_MS 1000
/** Latest instant a schedule can name: 9999-12-31T23:59:59Z. */
#define TB_SCHEDULE_MAX_MS INT64_C(253402300799000)

/**
 * @brief Check that \p s is coherent (kind set, period >= 1 s, a cron for
 *        CRON, end after start, known policies, jitter >= 0).
 * @returns TB_OK or TB_ERR_INVALID naming the field ("schedule: every_ms:
 *          500 is below the minimum 1000 (1 s)").
 */
tb_err_t tb_schedule_validate(const tb_schedule_t *s, char *errstr,
                              size_t errstr_size);

/**
 * @brief The first nominal fire strictly after \p after_ms.
 *
 * @param s        the schedule (validated here too).
 * @param after_ms epoch ms; fires at or before it are not returned.
 * @param next_ms  receives the fire instant (epoch ms, UTC).
 * @param dst_note optional; receives a tb_dst_note_t for CRON fires
 *                 (TB_DST_NOTE_NONE for the other kinds).
 * @param errstr   caller-owned buffer for the TB_ERR_INVALID message.
 * @returns TB_OK; TB_ERR_NOT_FOUND when there is no further fire (once
 *          already past, end_at / expires_at reached, or nothing within
 *          400 years); TB_ERR_INVALID if \p s is incoherent.
 */
tb_err_t tb_schedule_next(const tb_schedule_t *s, int64_t after_ms, int64_t *next_ms,
                          int *dst_note, char *errstr, size_t errstr_size);

/**
 * @brief Deterministic jitter for one fire: a delay in [0, \p jitter_ms]
 *        derived from a hash of (\p task_id, \p nominal_ms), so every
 *        process and every replay computes the same delay.
 * @returns 0 when \p jitter_ms <= 0.
 */
int64_t tb_schedule_jitter(const char *task_id, int64_t nominal_ms, int64_t jitter_ms);

/** @returns "none", "shifted", "overlap_first" or "overlap_second". */
const char *tb_schedule_dst_note_name(int dst_note);

/** The policy names as tasks write them ("dst_gap": "shift"), indexed by
 *  tb_dst_gap_t and tb_dst_overlap_t, NULL-terminated. The task validator
 *  and normalizer use these same lists. */
extern const char *const tb_schedule_dst_gap_names[];
extern const char *const tb_schedule_dst_overlap_names[];

/** Parse "shift" / "skip"; @returns TB_ERR_INVALID naming the choices. */
tb_err_t tb_schedule_dst_gap_parse(const char *name, tb_dst_gap_t *out, char *errstr,
                                   size_t errstr_size);
/** Parse "first" / "last" / "both"; @returns TB_ERR_INVALID naming them. */
tb_err_t tb_schedule_dst_overlap_parse(const char *name, tb_dst_overlap_t *out,
                                       char *errstr, size_t errstr_size);

/** Free the cron expression and zero \p s. */
void tb_schedule_clear(tb_schedule_t *s);

#endif /* TB_SCHEDULE_H */
