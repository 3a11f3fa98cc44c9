/**
 * @file schedule/tz.c
 * @brief Time zones: ICU transition tables, offset lookup, wall-time
 *        resolution and civil-calendar helpers.
 */
#include "schedule/tz.h"

#include <pthread.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <unicode/ucal.h>
#include <unicode/uenum.h>
#include <unicode/ustring.h>

/* Table span. ICU zones carry LMT offsets from the 1800s, and a few zones
 * (Morocco) list explicit transitions until 2087, so 2100..2500 is pure
 * annual-rule territory: safe to fold later instants into. */
#define TB_TZ_TABLE_START INT64_C(-5364662400)   /* 1800-01-01T00:00:00Z */
#define TB_TZ_TABLE_END   INT64_C(16725225600)   /* 2500-01-01T00:00:00Z */
/* Fold a week before the table end so +-48 h lookups stay inside it. */
#define TB_TZ_FOLD_AT     (TB_TZ_TABLE_END - 7 * 86400)
#define TB_TZ_CYCLE_S     (INT64_C(146097) * 86400) /* 400 Gregorian years */
#define TB_TZ_NEAR_S      (48 * 3600)
#define TB_TZ_NAME_MAX    64

typedef struct tb_tz_tr {
        int64_t t;       /**< transition instant, Unix seconds */
        int32_t before;  /**< total UTC offset before, seconds */
        int32_t after;   /**< total UTC offset from t on */
} tb_tz_tr_t;

struct tb_tz {
        char name[TB_TZ_NAME_MAX + 1];
        int32_t off0;    /**< offset before the first transition */
        size_t n;
        tb_tz_tr_t *tr;
        struct tb_tz *next; /**< cache chain */
};

static tb_tz_t tb_tz_utc_zone = {.name = "UTC"};
static pthread_mutex_t tb_tz_lock = PTHREAD_MUTEX_INITIALIZER;
static tb_tz_t *tb_tz_cache;

/* ---- civil calendar --------------------------------------------------- */

int64_t tb_tz_floordiv(int64_t a, int64_t b) {
        int64_t q = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0)))
                q--;
        return q;
}

int64_t tb_tz_days_from_civil(int64_t y, int m, int d) {
        y -= m <= 2;
        int64_t era = tb_tz_floordiv(y, 400);
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

void tb_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d) {
        int64_t z = days + 719468;
        int64_t era = tb_tz_floordiv(z, 146097);
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        *d = (int)(doy - (153 * mp + 2) / 5 + 1);
        *m = (int)(mp < 10 ? mp + 3 : mp - 9);
        *y = yoe + era * 400 + (*m <= 2);
}

int tb_tz_weekday(int64_t days) {
        /* 1970-01-01 was a Thursday. */
        int64_t w = (days + 4) % 7;
        return (int)(w < 0 ? w + 7 : w);
}

int tb_tz_days_in_month(int64_t y, int m) {
        static const int md[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        if (m == 2)
                return ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0) ? 29 : 28;
        return md[m - 1];
}

/* ---- lookups ---------------------------------------------------------- */

/* Fold \p t into the table by whole 400-year cycles; @returns the cycles. */
static int64_t tb_tz_fold(int64_t *t) {
        if (*t < TB_TZ_FOLD_AT)
                return 0;
        int64_t k = (*t - TB_TZ_FOLD_AT) / TB_TZ_CYCLE_S + 1;
        *t -= k * TB_TZ_CYCLE_S;
        return k;
}

/* Index of the last transition at or before \p t, or -1. */
static ssize_t tb_tz_find(const tb_tz_t *tz, int64_t t) {
        size_t lo = 0, hi = tz->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (tz->tr[mid].t <= t)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return (ssize_t)lo - 1;
}

static int32_t tb_tz_offset_folded(const tb_tz_t *tz, int64_t t) {
        ssize_t i = tb_tz_find(tz, t);
        return i < 0 ? tz->off0 : tz->tr[i].after;
}

int32_t tb_tz_offset_at(const tb_tz_t *tz, int64_t utc_s) {
        if (!tz)
                tz = &tb_tz_utc_zone;
        tb_tz_fold(&utc_s);
        return tb_tz_offset_folded(tz, utc_s);
}

int64_t tb_tz_min_wall_from(const tb_tz_t *tz, int64_t utc_s) {
        if (!tz)
                tz = &tb_tz_utc_zone;
        int64_t t = utc_s;
        int64_t shift = tb_tz_fold(&t) * TB_TZ_CYCLE_S;
        /* t + offset(t) only falls at fall-back transitions, and one more
         * than TB_TZ_NEAR_S ahead cannot undercut t's own wall time as
         * offsets span less than that. */
        int64_t w = t + tb_tz_offset_folded(tz, t);
        for (ssize_t i = tb_tz_find(tz, t) + 1;
             i < (ssize_t)tz->n && tz->tr[i].t <= t + TB_TZ_NEAR_S; i++)
                if (tz->tr[i].t + tz->tr[i].after < w)
                        w = tz->tr[i].t + tz->tr[i].after;
        return w + shift;
}

void tb_tz_resolve(const tb_tz_t *tz, int64_t wall_s, tb_tz_local_t *out) {
        if (!tz)
                tz = &tb_tz_utc_zone;
        memset(out, 0, sizeof(*out));
        int64_t w = wall_s;
        int64_t k = tb_tz_fold(&w);
        int64_t shift = k * TB_TZ_CYCLE_S;

        /* Every offset that can apply to this wall time is either the one
         * in effect 30 h before it or one a transition within +-30 h of it
         * switches to (real offsets stay within +-26 h). */
        int32_t cand[8];
        int nc = 0;
        int64_t lo = w - 30 * 3600, hi = w + 30 * 3600;
        ssize_t i0 = tb_tz_find(tz, lo);
        cand[nc++] = i0 < 0 ? tz->off0 : tz->tr[i0].after;
        for (ssize_t i = i0 + 1; i < (ssize_t)tz->n && tz->tr[i].t <= hi &&
                                 nc < (int)TB_ARRAY_LEN(cand); i++)
                cand[nc++] = tz->tr[i].after;

        int64_t first = 0, second = 0;
        int count = 0;
        for (int c = 0; c < nc; c++) {
                int64_t t = w - cand[c];
                if (tb_tz_offset_folded(tz, t) != cand[c])
                        continue;
                if (count == 0) {
                        first = second = t;
                        count = 1;
                } else if (t < first) {
                        first = t;
                        count = 2;
                } else if (t > second) {
                        second = t;
                        count = 2;
                } else if (t != first && t != second) {
                        count = 2;
                }
        }
        if (count > 0) {
                out->count = count;
                out->first_s = first + shift;
                out->second_s = second + shift;
                return;
        }
        /* In a gap: the clock jumped over w at the transition whose
         * before-offset puts w at or after it and after-offset before it. */
        out->count = 0;
        out->gap_end_s = w - tb_tz_offset_folded(tz, w) + shift;
        out->gap_len_s = 0;
        for (ssize_t i = i0 + 1; i < (ssize_t)tz->n && tz->tr[i].t <= hi; i++) {
                if (tz->tr[i].t + tz->tr[i].before <= w &&
                    w < tz->tr[i].t + tz->tr[i].after) {
                        out->gap_end_s = tz->tr[i].t + shift;
                        out->gap_len_s = tz->tr[i].after - tz->tr[i].before;
                        break;
                }
        }
}

const char *tb_tz_name(const tb_tz_t *tz) { return tz ? tz->name : "UTC"; }

const tb_tz_t *tb_tz_utc(void) { return &tb_tz_utc_zone; }

void tb_tz_format_local(const tb_tz_t *tz, int64_t ms, char buf[40]) {
        int64_t s = tb_tz_floordiv(ms, 1000);
        int frac = (int)(ms - s * 1000);
        int32_t off = tb_tz_offset_at(tz, s);
        int64_t wall = s + off;
        int64_t days = tb_tz_floordiv(wall, 86400);
        int64_t sod = wall - days * 86400;
        int64_t y;
        int m, d;
        tb_tz_civil_from_days(days, &y, &m, &d);
        char fr[8] = "";
        if (frac)
                snprintf(fr, sizeof(fr), ".%03d", frac);
        int aoff = off < 0 ? -off : off;
        snprintf(buf, 40, "%04lld-%02d-%02dT%02d:%02d:%02d%s%c%02d:%02d",
                 (long long)y, m, d, (int)(sod / 3600), (int)(sod / 60 % 60),
                 (int)(sod % 60), fr, off < 0 ? '-' : '+', aoff / 3600,
                 aoff / 60 % 60);
}

/* ---- opening zones through ICU ---------------------------------------- */

/* Copy \p name for an error message, neutralising anything unprintable. */
static void tb_tz_printable(const char *name, char *out, size_t size) {
        size_t i = 0;
        for (; name[i] && i + 1 < size; i++)
                out[i] = (name[i] >= 0x20 && name[i] < 0x7f) ? name[i] : '?';
        out[i] = '\0';
}

/* A case-insensitive match among ICU's zone ids, to turn "europe/paris"
 * into a useful hint. */
static bool tb_tz_suggest(const char *name, char *out, size_t size) {
        UErrorCode st = U_ZERO_ERROR;
        UEnumeration *en = ucal_openTimeZones(&st);
        bool found = false;
        if (U_FAILURE(st))
                return false;
        const char *id;
        int32_t len;
        while ((id = uenum_next(en, &len, &st)) && U_SUCCESS(st)) {
                if (!strcasecmp(id, name)) {
                        tb_snprintf(out, size, "%s", id);
                        found = true;
                        break;
                }
        }
        uenum_close(en);
        return found;
}

static tb_err_t tb_tz_unknown(const char *name, char *errstr, size_t errstr_size) {
        char shown[TB_TZ_NAME_MAX + 1], hint[TB_TZ_NAME_MAX + 1];
        tb_tz_printable(name, shown, sizeof(shown));
        if (strlen(name) <= TB_TZ_NAME_MAX && tb_tz_suggest(name, hint, sizeof(hint)))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "unknown time zone '%s' (did you mean '%s'?)", shown,
                                 hint);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "unknown time zone '%s' (use an IANA name such as "
                         "'Europe/London' or 'UTC')",
                         shown);
}

static int32_t tb_tz_icu_offset(UCalendar *cal, UErrorCode *st) {
        int32_t z = ucal_get(cal, UCAL_ZONE_OFFSET, st);
        int32_t d = ucal_get(cal, UCAL_DST_OFFSET, st);
        return (z + d) / 1000;
}

/* Build the transition table for the validated ICU id \p uid. */
static tb_err_t tb_tz_build(tb_tz_t *tz, const UChar *uid, char *errstr,
                            size_t errstr_size) {
        UErrorCode st = U_ZERO_ERROR;
        size_t cap = 0;
        UCalendar *cal = ucal_open(uid, -1, "en_US_POSIX", UCAL_GREGORIAN, &st);
        if (U_FAILURE(st))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "time zone '%s': ICU ucal_open failed: %s", tz->name,
                                 u_errorName(st));
        ucal_setMillis(cal, (UDate)TB_TZ_TABLE_START * 1000.0, &st);
        int32_t prev = tb_tz_icu_offset(cal, &st);
        tz->off0 = prev;
        UDate d;
        while (U_SUCCESS(st) &&
               ucal_getTimeZoneTransitionDate(cal, UCAL_TZ_TRANSITION_NEXT, &d, &st) &&
               d < (UDate)TB_TZ_TABLE_END * 1000.0) {
                ucal_setMillis(cal, d, &st);
                int32_t off = tb_tz_icu_offset(cal, &st);
                if (off == prev)
                        continue; /* only a name or dst/std split changed */
                if (tz->n == cap) {
                        tb_tz_tr_t *ntr = tb_array_grow(tz->tr, &cap, sizeof(*ntr), 64);
                        if (!ntr) {
                                ucal_close(cal);
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory loading time zone");
                        }
                        tz->tr = ntr;
                }
                tz->tr[tz->n++] = (tb_tz_tr_t){
                        .t = (int64_t)(d / 1000.0), .before = prev, .after = off};
                prev = off;
        }
        ucal_close(cal);
        if (U_FAILURE(st))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "time zone '%s': ICU failed: %s", tz->name,
                                 u_errorName(st));
        return TB_OK;
}

tb_err_t tb_tz_open(const char *name, const tb_tz_t **out, char *errstr,
                    size_t errstr_size) {
        tb_err_t err = TB_OK;
        tb_tz_t *tz = NULL;
        if (!name || !strcmp(name, "UTC")) {
                *out = &tb_tz_utc_zone;
                return TB_OK;
        }
        if (!*name)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "time zone must not be empty (omit it for UTC)");
        size_t len = strlen(name);
        if (len > TB_TZ_NAME_MAX)
                return tb_tz_unknown(name, errstr, errstr_size);
        for (size_t i = 0; i < len; i++) {
                char c = name[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                      (c >= '0' && c <= '9') || c == '/' || c == '_' || c == '-' ||
                      c == '+'))
                        return tb_tz_unknown(name, errstr, errstr_size);
        }

        pthread_mutex_lock(&tb_tz_lock);
        for (tb_tz_t *c = tb_tz_cache; c; c = c->next) {
                if (!strcmp(c->name, name)) {
                        *out = c;
                        goto done;
                }
        }

        /* ICU maps any unknown id to "Etc/Unknown" (GMT) when opening a
         * calendar, so validate first: only system ids are real zones. */
        UChar uid[TB_TZ_NAME_MAX + 1], canon[128];
        u_uastrncpy(uid, name, TB_TZ_NAME_MAX + 1);
        UErrorCode st = U_ZERO_ERROR;
        UBool is_system = 0;
        int32_t clen = ucal_getCanonicalTimeZoneID(uid, -1, canon,
                                                   (int32_t)TB_ARRAY_LEN(canon),
                                                   &is_system, &st);
        char ccanon[128] = "";
        if (U_SUCCESS(st) && clen > 0 && clen < (int32_t)sizeof(ccanon)) {
                u_austrncpy(ccanon, canon, clen);
                ccanon[clen] = '\0';
        }
        if (U_FAILURE(st) || !is_system || !strcmp(ccanon, "Etc/Unknown")) {
                err = tb_tz_unknown(name, errstr, errstr_size);
                goto done;
        }

        tz = calloc(1, sizeof(*tz));
        if (!tz) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                "out of memory loading time zone");
                goto done;
        }
        memcpy(tz->name, name, len + 1);
        err = tb_tz_build(tz, uid, errstr, errstr_size);
        if (err)
                goto fail;
        tz->next = tb_tz_cache;
        tb_tz_cache = tz;
        *out = tz;
done:
        pthread_mutex_unlock(&tb_tz_lock);
        return err;
fail:
        pthread_mutex_unlock(&tb_tz_lock);
        free(tz->tr);
        free(tz);
        return err;
}
