/**
 * @file schedule/cron.c
 * @brief Cron expression parser and bitset-driven next-match search.
 */
#include "schedule/cron.h"
#include "schedule/tz.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct tb_cron {
        uint64_t sec;       /**< bits 0-59 */
        uint64_t min;       /**< bits 0-59 */
        uint32_t hour;      /**< bits 0-23 */
        uint32_t dom;       /**< bits 1-31: plain days */
        uint32_t mon;       /**< bits 1-12 */
        uint8_t dow;        /**< bits 0-6 (Sunday = 0) */
        bool dom_star;      /**< field starts with '*' or '?' (Vixie rule) */
        bool dow_star;
        uint32_t dom_last;  /**< bit n: L-n (n = 0..30) */
        uint32_t dom_wday;  /**< bit n: nW */
        bool dom_lw;        /**< LW */
        uint8_t dow_nth[7]; /**< per weekday, bit k: k-th occurrence (1-5) */
        uint8_t dow_lastw;  /**< bit w: last weekday w of the month */
        uint32_t dow_pat[7]; /**< plain weekdays as day bits, by the weekday
                                  of the month's first day */
};

typedef enum tb_cron_fid {
        TB_CRON_SEC,
        TB_CRON_MIN,
        TB_CRON_HOUR,
        TB_CRON_DOM,
        TB_CRON_MON,
        TB_CRON_DOW,
} tb_cron_fid_t;

typedef struct tb_cron_field {
        const char *name;
        int lo, hi;
        const char *const *names; /**< index i names value lo + i... */
        int names_base;           /**< ...offset so names[v - names_base] */
        int nnames;
        const char *hint;         /**< how to write a value */
} tb_cron_field_t;

static const char *const tb_cron_months[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                             "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const tb_cron_days[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

static const tb_cron_field_t tb_cron_fields[] = {
        [TB_CRON_SEC] = {"second", 0, 59, NULL, 0, 0, "0-59"},
        [TB_CRON_MIN] = {"minute", 0, 59, NULL, 0, 0, "0-59"},
        [TB_CRON_HOUR] = {"hour", 0, 23, NULL, 0, 0, "0-23"},
        [TB_CRON_DOM] = {"day-of-month", 1, 31, NULL, 0, 0, "1-31, L, L-n, nW or LW"},
        [TB_CRON_MON] = {"month", 1, 12, tb_cron_months, 1, 12, "1-12 or JAN-DEC"},
        [TB_CRON_DOW] = {"day-of-week", 0, 7, tb_cron_days, 0, 7,
                         "0-7 or SUN-SAT (0 and 7 are Sunday), n#k or nL"},
};

static const struct {
        const char *name;
        const char *expr;
} tb_cron_macros[] = {
        {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
};

#define TB_CRON_FERR(f, ...)                                                   \
        tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "cron: field '%s': " __VA_ARGS__)

/* ---- parsing ------------------------------------------------------------ */

/* Parse a number or (for month / weekday) a name at *p. @returns 0, or -1
 * with errstr set. */
static int tb_cron_value(const tb_cron_field_t *f, const char **p, int *out,
                         char *errstr, size_t errstr_size) {
        const char *s = *p;
        if (isdigit((unsigned char)*s)) {
                long v = 0;
                int nd = 0;
                while (isdigit((unsigned char)*s)) {
                        if (nd++ < 9)
                                v = v * 10 + (*s - '0');
                        s++;
                }
                if (nd > 9 || v < f->lo || v > f->hi) {
                        TB_CRON_FERR(f, "%.*s is out of range %d-%d", f->name,
                                     (int)(s - *p > 20 ? 20 : s - *p), *p, f->lo, f->hi);
                        return -1;
                }
                *out = (int)v;
                *p = s;
                return 0;
        }
        if (isalpha((unsigned char)*s)) {
                const char *e = s;
                while (isalpha((unsigned char)*e))
                        e++;
                /* A trailing 'L' may be the "last" marker: FRIL. */
                size_t len = (size_t)(e - s);
                if (f->names && len == 4 && toupper((unsigned char)s[3]) == 'L')
                        len = 3;
                for (int i = 0; f->names && i < f->nnames; i++) {
                        if (len == 3 && !strncasecmp(s, f->names[i], 3)) {
                                *out = i + f->names_base;
                                *p = s + 3;
                                return 0;
                        }
                }
                if (!f->names)
                        TB_CRON_FERR(f, "unexpected '%.*s' (expected %s)", f->name,
                                     (int)(e - s > 20 ? 20 : e - s), s, f->hint);
                else
                        TB_CRON_FERR(f, "unknown name '%.*s' (use %s)", f->name,
                                     (int)(e - s > 20 ? 20 : e - s), s, f->hint);
                return -1;
        }
        if (!*s || *s == ',')
                TB_CRON_FERR(f, "a value is missing (expected %s)", f->name, f->hint);
        else if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
                TB_CRON_FERR(f, "unexpected byte 0x%02x (expected %s)", f->name,
                             (unsigned char)*s, f->hint);
        else
                TB_CRON_FERR(f, "unexpected '%c' (expected %s)", f->name, *s, f->hint);
        return -1;
}

static void tb_cron_setbit(tb_cron_t *c, tb_cron_fid_t fid, int v) {
        switch (fid) {
        case TB_CRON_SEC:
                c->sec |= UINT64_C(1) << v;
                break;
        case TB_CRON_MIN:
                c->min |= UINT64_C(1) << v;
                break;
        case TB_CRON_HOUR:
                c->hour |= UINT32_C(1) << v;
                break;
        case TB_CRON_DOM:
                c->dom |= UINT32_C(1) << v;
                break;
        case TB_CRON_MON:
                c->mon |= UINT32_C(1) << v;
                break;
        case TB_CRON_DOW:
                c->dow |= (uint8_t)(1u << (v % 7));
                break;
        }
}

/* Parse an unsigned number of at most 9 digits at *p; -1 if none. */
static long tb_cron_number(const char **p) {
        const char *s = *p;
        long v = 0;
        int nd = 0;
        while (isdigit((unsigned char)*s)) {
                if (nd++ < 9)
                        v = v * 10 + (*s - '0');
                s++;
        }
        if (nd == 0)
                return -1;
        *p = s;
        return nd > 9 ? 1000000000L : v;
}

/* Copy the list element [el, el + len) into \p buf as a string; false when
 * it is too long to be one of the Quartz forms. */
static bool tb_cron_element_copy(char *buf, size_t size, const char *el, size_t len) {
        if (len >= size)
                return false;
        memcpy(buf, el, len);
        buf[len] = '\0';
        return true;
}

/* The Quartz day-of-month forms: L, L-n, LW, nW. @returns 1 if \p el was
 * one (parsed into c), 0 if not, -1 on error. */
static int tb_cron_dom_special(tb_cron_t *c, const tb_cron_field_t *f, const char *el,
                               size_t len, char *errstr, size_t errstr_size) {
        char buf[32];
        if (!tb_cron_element_copy(buf, sizeof(buf), el, len))
                return 0;
        if (!strcasecmp(buf, "L")) {
                c->dom_last |= 1u;
                return 1;
        }
        if (!strcasecmp(buf, "LW")) {
                c->dom_lw = true;
                return 1;
        }
        if ((buf[0] == 'L' || buf[0] == 'l') && buf[1] == '-') {
                const char *p = buf + 2;
                long n = tb_cron_number(&p);
                if (n < 0 || *p) {
                        TB_CRON_FERR(f, "'%s' is malformed (L-n takes a day count, e.g. L-3)",
                                     f->name, buf);
                        return -1;
                }
                if (n > 30) {
                        TB_CRON_FERR(f, "offset %ld in '%s' is out of range 0-30", f->name, n,
                                     buf);
                        return -1;
                }
                c->dom_last |= UINT32_C(1) << n;
                return 1;
        }
        if (len >= 2 && (buf[len - 1] == 'W' || buf[len - 1] == 'w') &&
            isdigit((unsigned char)buf[0])) {
                const char *p = buf;
                long n = tb_cron_number(&p);
                if (p != buf + len - 1) {
                        TB_CRON_FERR(f, "'%s' is malformed (nW takes one day, e.g. 15W)",
                                     f->name, buf);
                        return -1;
                }
                if (n < 1 || n > 31) {
                        TB_CRON_FERR(f, "%ld in '%s' is out of range 1-31", f->name, n, buf);
                        return -1;
                }
                c->dom_wday |= UINT32_C(1) << n;
                return 1;
        }
        return 0;
}

/* The Quartz day-of-week forms: n#k, nL. @returns 1 / 0 / -1 as above. */
static int tb_cron_dow_special(tb_cron_t *c, const tb_cron_field_t *f, const char *el,
                               size_t len, char *errstr, size_t errstr_size) {
        char buf[32];
        if (!tb_cron_element_copy(buf, sizeof(buf), el, len))
                return 0;
        char *hash = strchr(buf, '#');
        bool last = len >= 2 && (buf[len - 1] == 'L' || buf[len - 1] == 'l') &&
                    !strchr(buf, '-') && !strchr(buf, '/');
        if (!strcasecmp(buf, "L")) {
                TB_CRON_FERR(f, "'L' needs a weekday before it (e.g. 5L = last Friday)",
                             f->name);
                return -1;
        }
        if (!hash && !last)
                return 0;
        const char *p = buf;
        int wd;
        if (tb_cron_value(f, &p, &wd, errstr, errstr_size) < 0)
                return -1;
        wd %= 7;
        if (last) {
                if (*p != 'L' && *p != 'l') {
                        TB_CRON_FERR(f, "'%s' is malformed (nL takes one weekday, e.g. 5L)",
                                     f->name, buf);
                        return -1;
                }
                c->dow_lastw |= (uint8_t)(1u << wd);
                return 1;
        }
        if (p != hash) {
                TB_CRON_FERR(f, "'%s' is malformed (n#k takes one weekday, e.g. 5#3)",
                             f->name, buf);
                return -1;
        }
        p = hash + 1;
        long k = tb_cron_number(&p);
        if (k < 0 || *p) {
                TB_CRON_FERR(f, "'%s' is malformed (n#k needs an occurrence 1-5, e.g. 5#3)",
                             f->name, buf);
                return -1;
        }
        if (k < 1 || k > 5) {
                TB_CRON_FERR(f, "occurrence %ld in '%s' is out of range 1-5", f->name, k, buf);
                return -1;
        }
        c->dow_nth[wd] |= (uint8_t)(1u << k);
        return 1;
}

/* One comma-separated element of a field: *, N, N-M, each with /step. */
static int tb_cron_element(tb_cron_t *c, tb_cron_fid_t fid, const char *el, size_t len,
                           char *errstr, size_t errstr_size) {
        const tb_cron_field_t *f = &tb_cron_fields[fid];
        if (len == 0)
                return TB_CRON_FERR(f, "empty list element (check the commas)", f->name), -1;
        if (fid == TB_CRON_DOM) {
                int r = tb_cron_dom_special(c, f, el, len, errstr, errstr_size);
                if (r)
                        return r < 0 ? -1 : 0;
        } else if (fid == TB_CRON_DOW) {
                int r = tb_cron_dow_special(c, f, el, len, errstr, errstr_size);
                if (r)
                        return r < 0 ? -1 : 0;
        }

        char buf[64];
        if (len >= sizeof(buf))
                return TB_CRON_FERR(f, "element '%.20s...' is too long", f->name, el), -1;
        memcpy(buf, el, len);
        buf[len] = '\0';
        const char *p = buf;
        int lo, hi;
        if (*p == '*' || *p == '?') {
                if (*p == '?' && fid != TB_CRON_DOM && fid != TB_CRON_DOW)
                        return TB_CRON_FERR(f, "'?' is only allowed in day-of-month and "
                                               "day-of-week",
                                            f->name),
                               -1;
                p++;
                lo = f->lo;
                hi = f->hi;
        } else {
                if (tb_cron_value(f, &p, &lo, errstr, errstr_size) < 0)
                        return -1;
                hi = lo;
                if (*p == '-') {
                        p++;
                        bool named = isalpha((unsigned char)*p);
                        if (tb_cron_value(f, &p, &hi, errstr, errstr_size) < 0)
                                return -1;
                        /* "MON-SUN": Sunday closing a range is day 7. */
                        if (fid == TB_CRON_DOW && named && hi == 0 && lo > 0)
                                hi = 7;
                        if (lo > hi)
                                return TB_CRON_FERR(f, "range %d-%d is backwards (the start "
                                                       "must not exceed the end)",
                                                    f->name, lo, hi),
                                       -1;
                } else if (*p == '/') {
                        hi = f->hi; /* "5/15" = 5-max/15 */
                }
        }
        int step = 1;
        if (*p == '/') {
                p++;
                long s = tb_cron_number(&p);
                if (s < 0)
                        return TB_CRON_FERR(f, "'%s' needs a step number after '/'", f->name,
                                            buf),
                               -1;
                if (s == 0)
                        return TB_CRON_FERR(f, "step 0 in '%s' must be at least 1", f->name,
                                            buf),
                               -1;
                if (s > f->hi)
                        return TB_CRON_FERR(f, "step %ld in '%s' is out of range 1-%d",
                                            f->name, s, buf, f->hi),
                               -1;
                step = (int)s;
        }
        if (*p && ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f))
                return TB_CRON_FERR(f, "unexpected byte 0x%02x (expected %s)", f->name,
                                    (unsigned char)*p, f->hint),
                       -1;
        if (*p)
                return TB_CRON_FERR(f, "unexpected '%c' in '%s' (expected %s)", f->name, *p,
                                    buf, f->hint),
                       -1;
        for (int v = lo; v <= hi; v += step)
                tb_cron_setbit(c, fid, v);
        return 0;
}

static int tb_cron_field_parse(tb_cron_t *c, tb_cron_fid_t fid, const char *text,
                               size_t len, char *errstr, size_t errstr_size) {
        const char *p = text, *end = text + len;
        while (p <= end) {
                const char *comma = memchr(p, ',', (size_t)(end - p));
                const char *e = comma ? comma : end;
                if (tb_cron_element(c, fid, p, (size_t)(e - p), errstr, errstr_size) < 0)
                        return -1;
                p = e + 1;
        }
        if (fid == TB_CRON_DOM)
                c->dom_star = text[0] == '*' || text[0] == '?';
        else if (fid == TB_CRON_DOW)
                c->dow_star = text[0] == '*' || text[0] == '?';
        return 0;
}

/* ---- matching ------------------------------------------------------------ */

/* Matching days of month m of year y, as bits 1..31. */
static uint32_t tb_cron_daymask(const tb_cron_t *c, int64_t y, int m) {
        int nd = tb_tz_days_in_month(y, m);
        uint32_t valid = (uint32_t)(((UINT64_C(1) << (nd + 1)) - 1) & ~UINT64_C(1));
        int64_t first = tb_tz_days_from_civil(y, m, 1);
        int wd1 = tb_tz_weekday(first);

        uint32_t dm = c->dom & valid;
        for (uint32_t bits = c->dom_last; bits; bits &= bits - 1) {
                int n = __builtin_ctz(bits);
                if (nd - n >= 1)
                        dm |= UINT32_C(1) << (nd - n);
        }
        for (uint32_t bits = c->dom_wday; bits; bits &= bits - 1) {
                int n = __builtin_ctz(bits);
                if (n > nd)
                        continue; /* that day does not exist this month */
                int wd = (wd1 + n - 1) % 7, d = n;
                if (wd == 6)
                        d = n > 1 ? n - 1 : n + 2; /* Saturday: Friday, or Monday 3rd */
                else if (wd == 0)
                        d = n < nd ? n + 1 : n - 2; /* Sunday: Monday, or Friday */
                dm |= UINT32_C(1) << d;
        }
        if (c->dom_lw) {
                int wd = (wd1 + nd - 1) % 7;
                int d = wd == 6 ? nd - 1 : wd == 0 ? nd - 2 : nd;
                dm |= UINT32_C(1) << d;
        }

        uint32_t wm = c->dow_pat[wd1] & valid;
        int wdl = (wd1 + nd - 1) % 7;
        for (int w = 0; w < 7; w++) {
                int f = 1 + (w - wd1 + 7) % 7;
                for (uint8_t k = c->dow_nth[w]; k; k &= (uint8_t)(k - 1)) {
                        int d = f + 7 * (__builtin_ctz(k) - 1);
                        if (d <= nd)
                                wm |= UINT32_C(1) << d;
                }
                if (c->dow_lastw & (1u << w))
                        wm |= UINT32_C(1) << (nd - (wdl - w + 7) % 7);
        }
        if (c->dom_star || c->dow_star)
                return dm & wm;
        return dm | wm;
}

tb_err_t tb_cron_next_wall(const tb_cron_t *c, int64_t wall_s, int64_t limit_s,
                           int64_t *out) {
        int64_t days = wall_s / 86400, y;
        if (wall_s % 86400 < 0)
                days--;
        int64_t sod = wall_s - days * 86400;
        int m, d, H = (int)(sod / 3600), M = (int)(sod / 60 % 60), S = (int)(sod % 60);
        tb_tz_civil_from_days(days, &y, &m, &d);
        int64_t limit_days = limit_s / 86400 + 1;
        int64_t cy = INT64_MIN;
        int cm = 0;
        uint32_t mask = 0;

        for (;;) {
                if (m > 12) {
                        y++;
                        m = 1;
                }
                if (tb_tz_days_from_civil(y, m, 1) > limit_days)
                        return TB_ERR_NOT_FOUND;
                if (!(c->mon & (UINT32_C(1) << m))) {
                        uint32_t later = c->mon & ~((UINT32_C(2) << m) - 1);
                        if (later) {
                                m = __builtin_ctz(later);
                        } else {
                                y++;
                                m = __builtin_ctz(c->mon);
                        }
                        d = 1, H = M = S = 0;
                        continue;
                }
                if (cy != y || cm != m) {
                        mask = tb_cron_daymask(c, y, m);
                        cy = y, cm = m;
                }
                uint64_t days_left = mask & ~((UINT64_C(1) << d) - 1);
                if (!days_left) {
                        m++;
                        d = 1, H = M = S = 0;
                        continue;
                }
                int nd = __builtin_ctzll(days_left);
                if (nd != d) {
                        d = nd;
                        H = M = S = 0;
                }
                uint64_t hours = c->hour & ~((UINT64_C(1) << H) - 1);
                if (!hours) {
                        d++;
                        H = M = S = 0;
                        continue;
                }
                int nh = __builtin_ctzll(hours);
                if (nh != H) {
                        H = nh;
                        M = S = 0;
                }
                uint64_t mins = M >= 64 ? 0 : c->min & ~((UINT64_C(1) << M) - 1);
                if (!mins) {
                        H++;
                        M = S = 0;
                        continue;
                }
                int nmi = __builtin_ctzll(mins);
                if (nmi != M) {
                        M = nmi;
                        S = 0;
                }
                uint64_t secs = S >= 64 ? 0 : c->sec & ~((UINT64_C(1) << S) - 1);
                if (!secs) {
                        M++;
                        S = 0;
                        continue;
                }
                S = __builtin_ctzll(secs);
                int64_t w = tb_tz_days_from_civil(y, m, d) * 86400 + H * 3600 + M * 60 + S;
                if (w > limit_s)
                        return TB_ERR_NOT_FOUND;
                *out = w;
                return TB_OK;
        }
}

bool tb_cron_matches_wall(const tb_cron_t *c, int64_t wall_s) {
        int64_t next;
        return tb_cron_next_wall(c, wall_s, wall_s, &next) == TB_OK && next == wall_s;
}

/* ---- public parse ---------------------------------------------------------- */

tb_err_t tb_cron_parse(const char *expr, tb_cron_t **out, char *errstr,
                       size_t errstr_size) {
        tb_cron_t *c = NULL;
        *out = NULL;
        if (!expr)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "cron: expression is missing");
        size_t elen = strlen(expr);
        if (elen > TB_CRON_MAX_LEN)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cron: expression is too long (%zu bytes, max %d)", elen,
                                 TB_CRON_MAX_LEN);
        while (isspace((unsigned char)*expr))
                expr++;
        if (!*expr)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cron: expression is empty (expected 5 fields: minute hour "
                                 "day-of-month month day-of-week)");
        if (*expr == '@') {
                size_t n = 0;
                while (expr[n] && !isspace((unsigned char)expr[n]))
                        n++;
                const char *rest = expr + n;
                while (isspace((unsigned char)*rest))
                        rest++;
                for (size_t i = 0; i < TB_ARRAY_LEN(tb_cron_macros); i++) {
                        if (strlen(tb_cron_macros[i].name) == n &&
                            !strncasecmp(expr, tb_cron_macros[i].name, n)) {
                                if (*rest)
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "cron: macro %s takes nothing after it",
                                                         tb_cron_macros[i].name);
                                return tb_cron_parse(tb_cron_macros[i].expr, out, errstr,
                                                     errstr_size);
                        }
                }
                if (n == 7 && !strncasecmp(expr, "@reboot", 7))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "cron: @reboot is not supported (taskbus schedules "
                                         "are time-based)");
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cron: unknown macro '%.*s' (use @yearly, @annually, "
                                 "@monthly, @weekly, @daily, @midnight or @hourly)",
                                 (int)(n > 20 ? 20 : n), expr);
        }

        const char *fs[7];
        size_t fl[7];
        int nf = 0;
        const char *p = expr;
        while (*p) {
                while (isspace((unsigned char)*p))
                        p++;
                if (!*p)
                        break;
                const char *s = p;
                while (*p && !isspace((unsigned char)*p))
                        p++;
                if (nf < 7) {
                        fs[nf] = s;
                        fl[nf] = (size_t)(p - s);
                }
                nf++;
        }
        if (nf != 5 && nf != 6)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cron: expected 5 fields (minute hour day-of-month month "
                                 "day-of-week) or 6 with seconds first, got %d",
                                 nf);
        c = calloc(1, sizeof(*c));
        if (!c)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "cron: out of memory");
        int base = 0;
        if (nf == 6) {
                if (tb_cron_field_parse(c, TB_CRON_SEC, fs[0], fl[0], errstr, errstr_size) < 0)
                        goto fail;
                base = 1;
        } else {
                c->sec = 1; /* second 0 */
        }
        for (int i = 0; i < 5; i++)
                if (tb_cron_field_parse(c, (tb_cron_fid_t)(TB_CRON_MIN + i), fs[base + i],
                                        fl[base + i], errstr, errstr_size) < 0)
                        goto fail;
        for (int wd1 = 0; wd1 < 7; wd1++)
                for (int d = 1; d <= 31; d++)
                        if (c->dow & (1u << ((wd1 + d - 1) % 7)))
                                c->dow_pat[wd1] |= UINT32_C(1) << d;

        /* Refuse what can never fire (e.g. February 30th): the calendar and
         * the weekdays repeat every 400 years, so scan one cycle. */
        bool fires = false;
        for (int64_t y = 2000; y < 2400 && !fires; y++)
                for (int m = 1; m <= 12 && !fires; m++)
                        if ((c->mon & (UINT32_C(1) << m)) && tb_cron_daymask(c, y, m))
                                fires = true;
        if (!fires) {
                tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                          "cron: day-of-month, month and day-of-week never match together "
                          "(e.g. February 30th): the expression would never fire");
                goto fail;
        }
        *out = c;
        return TB_OK;
fail:
        free(c);
        return TB_ERR_INVALID;
}

void tb_cron_free(tb_cron_t *cron) { free(cron); }
