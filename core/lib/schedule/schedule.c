/**
 * @file schedule/schedule.c
 * @brief Next-fire computation for once / every / cron schedules, DST
 *        policies, windows and deterministic jitter.
 *
 * Cron fires are found in local wall time and mapped to instants. For the
 * "first" and "last" overlap policies that mapping is non-decreasing in wall
 * time (gap times map to the end of their gap, repeated times to their
 * first or second occurrence), so the first matching wall time whose
 * instant is late enough gives the answer; "both" is the earlier of the two.
 */
#include "schedule/schedule.h"

#include <stdio.h>
#include <string.h>

#define TB_SCHEDULE_SEARCH_S (INT64_C(401) * 366 * 86400) /* > one 400-year cycle */
#define TB_SCHEDULE_WALL_SLACK_S (30 * 3600)             /* > any UTC offset */
/* Vixie cron's rule: a jump of more than 3 hours is a correction of the
 * clock or a zone moving across the date line, not DST; the skipped local
 * times are not run. */
#define TB_SCHEDULE_MAX_SHIFT_S (3 * 3600)

static int64_t tb_schedule_floordiv(int64_t a, int64_t b) {
        int64_t q = a / b;
        if (a % b != 0 && ((a < 0) != (b < 0)))
                q--;
        return q;
}

static int64_t tb_schedule_ceildiv(int64_t a, int64_t b) {
        return -tb_schedule_floordiv(-a, b);
}

const char *tb_schedule_dst_note_name(int dst_note) {
        switch (dst_note) {
        case TB_DST_NOTE_SHIFTED:
                return "shifted";
        case TB_DST_NOTE_OVERLAP_FIRST:
                return "overlap_first";
        case TB_DST_NOTE_OVERLAP_SECOND:
                return "overlap_second";
        default:
                return "none";
        }
}

const char *const tb_schedule_dst_gap_names[] = {"shift", "skip", NULL};
const char *const tb_schedule_dst_overlap_names[] = {"first", "last", "both", NULL};

/** The index of \p name in \p names; an error naming the \p policy and the
 *  choices ("'a', 'b' or 'c'") when it is none of them. */
static tb_err_t tb_schedule_policy_parse(const char *policy, const char *const *names,
                                         const char *name, int *out, char *errstr,
                                         size_t errstr_size) {
        for (int i = 0; name && names[i]; i++) {
                if (!strcmp(name, names[i])) {
                        *out = i;
                        return TB_OK;
                }
        }
        char choices[64] = "";
        size_t len = 0;
        for (size_t i = 0; names[i]; i++) {
                const char *sep = !i ? "" : names[i + 1] ? ", " : " or ";
                int n = snprintf(choices + len, sizeof(choices) - len, "%s'%s'", sep, names[i]);
                if (n > 0 && (size_t)n < sizeof(choices) - len)
                        len += (size_t)n;
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "schedule: %s: '%.32s' is not a policy (use %s)", policy,
                         name ? name : "", choices);
}

tb_err_t tb_schedule_dst_gap_parse(const char *name, tb_dst_gap_t *out, char *errstr,
                                   size_t errstr_size) {
        int i;
        tb_err_t err = tb_schedule_policy_parse("dst_gap", tb_schedule_dst_gap_names, name, &i,
                                                errstr, errstr_size);
        if (!err)
                *out = (tb_dst_gap_t)i;
        return err;
}

tb_err_t tb_schedule_dst_overlap_parse(const char *name, tb_dst_overlap_t *out,
                                       char *errstr, size_t errstr_size) {
        int i;
        tb_err_t err = tb_schedule_policy_parse("dst_overlap", tb_schedule_dst_overlap_names,
                                                name, &i, errstr, errstr_size);
        if (!err)
                *out = (tb_dst_overlap_t)i;
        return err;
}

static tb_err_t tb_schedule_check_time(const char *field, int64_t ms, bool zero_ok,
                                       char *errstr, size_t errstr_size) {
        if ((ms == 0 && zero_ok) || (ms > 0 && ms <= TB_SCHEDULE_MAX_MS))
                return TB_OK;
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "schedule: %s: %lld ms is out of range (use an instant between "
                         "1970-01-01 and 9999-12-31)",
                         field, (long long)ms);
}

tb_err_t tb_schedule_validate(const tb_schedule_t *s, char *errstr, size_t errstr_size) {
        tb_err_t err;
        if (!s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "schedule: missing");
        switch (s->kind) {
        case TB_SCHEDULE_ONCE:
                if ((err = tb_schedule_check_time("once_at", s->once_at_ms, false, errstr,
                                                  errstr_size)))
                        return err;
                break;
        case TB_SCHEDULE_EVERY:
                if (s->every_ms < TB_SCHEDULE_MIN_EVERY_MS || s->every_ms > TB_SCHEDULE_MAX_MS)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "schedule: every: %lld ms is out of range (the "
                                         "period must be at least %d ms = 1 s)",
                                         (long long)s->every_ms, TB_SCHEDULE_MIN_EVERY_MS);
                if (!s->start_at_ms &&
                    (err = tb_schedule_check_time("anchor (creation time)", s->anchor_ms,
                                                  false, errstr, errstr_size)))
                        return err;
                break;
        case TB_SCHEDULE_CRON:
                if (!s->cron)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "schedule: cron: the expression is missing");
                break;
        default:
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: kind must be once, every or cron");
        }
        if ((err = tb_schedule_check_time("start_at", s->start_at_ms, true, errstr,
                                          errstr_size)) ||
            (err = tb_schedule_check_time("end_at", s->end_at_ms, true, errstr,
                                          errstr_size)) ||
            (err = tb_schedule_check_time("expires_at", s->expires_at_ms, true, errstr,
                                          errstr_size)))
                return err;
        if (s->start_at_ms && s->end_at_ms && s->end_at_ms < s->start_at_ms) {
                char a[32], b[32];
                tb_time_format(s->start_at_ms, a);
                tb_time_format(s->end_at_ms, b);
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: end_at %s is before start_at %s", b, a);
        }
        if (s->dst_gap != TB_DST_GAP_SHIFT && s->dst_gap != TB_DST_GAP_SKIP)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: dst_gap must be 'shift' or 'skip'");
        if (s->dst_overlap != TB_DST_OVERLAP_FIRST && s->dst_overlap != TB_DST_OVERLAP_LAST &&
            s->dst_overlap != TB_DST_OVERLAP_BOTH)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: dst_overlap must be 'first', 'last' or 'both'");
        if (s->jitter_ms < 0 || s->jitter_ms > TB_SCHEDULE_MAX_MS)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: jitter: %lld ms must be 0 or more",
                                 (long long)s->jitter_ms);
        return TB_OK;
}

/* First cron fire (Unix seconds) in [a, limit] under one overlap policy
 * (FIRST or LAST). */
static tb_err_t tb_schedule_cron_search(const tb_schedule_t *s, tb_dst_overlap_t policy,
                                        int64_t a, int64_t limit, int64_t *out,
                                        int *note) {
        const tb_tz_t *tz = s->tz ? s->tz : tb_tz_utc();
        int64_t w = tb_tz_min_wall_from(tz, a);
        int64_t wlimit = limit + TB_SCHEDULE_WALL_SLACK_S;
        for (;;) {
                if (tb_cron_next_wall(s->cron, w, wlimit, &w) != TB_OK)
                        return TB_ERR_NOT_FOUND;
                tb_tz_local_t loc;
                tb_tz_resolve(tz, w, &loc);
                int64_t f;
                int n = TB_DST_NOTE_NONE;
                if (loc.count == 0) {
                        if (s->dst_gap == TB_DST_GAP_SKIP ||
                            loc.gap_len_s > TB_SCHEDULE_MAX_SHIFT_S) {
                                /* Jump to the first wall time after the gap. */
                                int64_t wend = loc.gap_end_s +
                                               tb_tz_offset_at(tz, loc.gap_end_s);
                                w = wend > w ? wend : w + 1;
                                continue;
                        }
                        f = loc.gap_end_s;
                        /* Gap times collapse onto the gap's end; if the wall
                         * time there matches too, that is an ordinary fire. */
                        if (!tb_cron_matches_wall(s->cron, f + tb_tz_offset_at(tz, f)))
                                n = TB_DST_NOTE_SHIFTED;
                } else if (loc.count == 1) {
                        f = loc.first_s;
                } else if (policy == TB_DST_OVERLAP_LAST) {
                        f = loc.second_s;
                        n = TB_DST_NOTE_OVERLAP_SECOND;
                } else {
                        f = loc.first_s;
                        n = TB_DST_NOTE_OVERLAP_FIRST;
                }
                if (f < a) {
                        w++;
                        continue;
                }
                if (f > limit)
                        return TB_ERR_NOT_FOUND;
                *out = f;
                *note = n;
                return TB_OK;
        }
}

tb_err_t tb_schedule_next(const tb_schedule_t *s, int64_t after_ms, int64_t *next_ms,
                          int *dst_note, char *errstr, size_t errstr_size) {
        tb_err_t err = tb_schedule_validate(s, errstr, errstr_size);
        if (err)
                return err;
        int note = TB_DST_NOTE_NONE;
        int64_t f = 0;
        if (dst_note)
                *dst_note = TB_DST_NOTE_NONE;
        if (after_ms >= TB_SCHEDULE_MAX_MS)
                goto none;
        /* Earlier than the calendar start is as good as "from the start". */
        if (after_ms < -TB_SCHEDULE_MAX_MS)
                after_ms = -TB_SCHEDULE_MAX_MS;

        switch (s->kind) {
        case TB_SCHEDULE_ONCE:
                f = s->once_at_ms;
                if (f <= after_ms || (s->start_at_ms && f < s->start_at_ms))
                        goto none;
                break;
        case TB_SCHEDULE_EVERY: {
                int64_t anchor = s->start_at_ms ? s->start_at_ms : s->anchor_ms;
                if (after_ms < anchor) {
                        f = anchor;
                } else {
                        int64_t k = (after_ms - anchor) / s->every_ms + 1;
                        if (k > (TB_SCHEDULE_MAX_MS - anchor) / s->every_ms)
                                goto none;
                        f = anchor + k * s->every_ms;
                }
                break;
        }
        case TB_SCHEDULE_CRON: {
                /* Cron fires on whole seconds, strictly after after_ms. */
                int64_t a = tb_schedule_floordiv(after_ms, 1000) + 1;
                if (s->start_at_ms)
                        a = a > tb_schedule_ceildiv(s->start_at_ms, 1000)
                                    ? a
                                    : tb_schedule_ceildiv(s->start_at_ms, 1000);
                int64_t limit = a + TB_SCHEDULE_SEARCH_S;
                if (limit > TB_SCHEDULE_MAX_MS / 1000)
                        limit = TB_SCHEDULE_MAX_MS / 1000;
                if (s->end_at_ms && tb_schedule_floordiv(s->end_at_ms, 1000) < limit)
                        limit = tb_schedule_floordiv(s->end_at_ms, 1000);
                if (s->expires_at_ms && tb_schedule_ceildiv(s->expires_at_ms, 1000) - 1 < limit)
                        limit = tb_schedule_ceildiv(s->expires_at_ms, 1000) - 1;
                if (a > limit)
                        goto none;
                int64_t fs;
                if (s->dst_overlap == TB_DST_OVERLAP_BOTH) {
                        int64_t f1, f2;
                        int n1 = 0, n2 = 0;
                        tb_err_t e1 = tb_schedule_cron_search(s, TB_DST_OVERLAP_FIRST, a,
                                                              limit, &f1, &n1);
                        /* The second occurrence can only come first if it
                         * lies before the first-policy answer. */
                        tb_err_t e2 = tb_schedule_cron_search(
                                s, TB_DST_OVERLAP_LAST, a, e1 == TB_OK ? f1 : limit, &f2, &n2);
                        if (e1 && e2)
                                goto none;
                        if (e2 || (!e1 && f1 <= f2)) {
                                fs = f1;
                                note = n1;
                        } else {
                                fs = f2;
                                note = n2;
                        }
                } else if (tb_schedule_cron_search(s, s->dst_overlap, a, limit, &fs, &note)) {
                        goto none;
                }
                f = fs * 1000;
                break;
        }
        }
        if ((s->end_at_ms && f > s->end_at_ms) || (s->expires_at_ms && f >= s->expires_at_ms) ||
            f > TB_SCHEDULE_MAX_MS)
                goto none;
        *next_ms = f;
        if (dst_note)
                *dst_note = note;
        return TB_OK;
none:
        return TB_ERR_NOT_FOUND;
}

/* splitmix64's finaliser: spreads FNV's weak low bits over the word. */
static uint64_t tb_schedule_mix(uint64_t z) {
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

int64_t tb_schedule_jitter(const char *task_id, int64_t nominal_ms, int64_t jitter_ms) {
        if (jitter_ms <= 0)
                return 0;
        /* FNV-1a over the id, a separator, then the nominal time as 8
         * little-endian bytes: byte order is fixed so every host agrees. */
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (const unsigned char *p = (const unsigned char *)(task_id ? task_id : ""); *p; p++)
                h = (h ^ *p) * UINT64_C(0x100000001b3);
        h = (h ^ 0xff) * UINT64_C(0x100000001b3);
        uint64_t n = (uint64_t)nominal_ms;
        for (int i = 0; i < 8; i++)
                h = (h ^ ((n >> (8 * i)) & 0xff)) * UINT64_C(0x100000001b3);
        h = tb_schedule_mix(h);
        return (int64_t)(h % ((uint64_t)jitter_ms + 1));
}

void tb_schedule_clear(tb_schedule_t *s) {
        if (!s)
                return;
        tb_cron_free(s->cron);
        memset(s, 0, sizeof(*s));
}
