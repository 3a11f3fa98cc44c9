/**
 * @file units.c
 * @brief Durations and sizes as users write them: parsing ("1h30m",
 *        "PT30S", "256KiB") and the compact formatting of messages and docs.
 *        The configuration, the REST validator and the CLI share it.
 */
#include "units.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/** A unit suffix and its size in the stored unit (milliseconds, bytes). */
typedef struct tb_units_suffix {
        const char *name;
        int64_t unit;
} tb_units_suffix_t;

/**
 * Parse a decimal number "12" or "1.5" at *\p pp and scale it by \p unit
 * into *\p out exactly. @returns 0, or -1 not a number, -2 overflow,
 * -3 not a whole multiple of 1 (e.g. "1.5ms").
 */
static int tb_units_scaled_number(const char **pp, int64_t unit, int64_t *out) {
        const char *p = *pp;
        int64_t whole = 0, frac = 0, scale = 1;
        if (!isdigit((unsigned char)*p))
                return -1;
        for (; isdigit((unsigned char)*p); p++) {
                if (__builtin_mul_overflow(whole, 10, &whole) ||
                    __builtin_add_overflow(whole, *p - '0', &whole))
                        return -2;
        }
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p))
                        return -1;
                for (; isdigit((unsigned char)*p); p++) {
                        if (scale >= 1000000000) {
                                if (*p != '0')
                                        return -3;
                                continue;
                        }
                        frac = frac * 10 + (*p - '0');
                        scale *= 10;
                }
        }
        *pp = p;
        int64_t v;
        if (__builtin_mul_overflow(whole, unit, &v))
                return -2;
        /* frac < scale <= 1e9 and unit < 2^63 / 1e9 for all our units */
        __int128 f = (__int128)frac * unit;
        if (f % scale)
                return -3;
        if (__builtin_add_overflow(v, (int64_t)(f / scale), &v))
                return -2;
        *out = v;
        return 0;
}

static tb_err_t tb_units_duration_numerr(int rc, const char *s, char *errstr,
                                         size_t errstr_size) {
        if (rc == -2)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "duration \"%s\" is too large", s);
        if (rc == -3)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "duration \"%s\" is finer than a millisecond", s);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "invalid duration \"%s\": expected a number before each unit, "
                         "like \"30s\", \"1h30m\" or \"PT30S\"", s);
}

static tb_err_t tb_units_duration_parse_iso(const char *s, int64_t *ms, char *errstr,
                                            size_t errstr_size) {
        /* Designators in the order ISO 8601 requires; M means months
         * before T and minutes after it. */
        static const struct {
                char c;
                bool time;
                int64_t unit; /* 0: refused */
        } des[] = {
                {'Y', false, 0},        {'M', false, 0},
                {'W', false, TB_DAY(7)}, {'D', false, TB_DAY(1)},
                {'H', true, TB_HOUR(1)}, {'M', true, TB_MIN(1)},
                {'S', true, TB_SEC(1)},
        };
        const char *p = s + 1;
        bool in_time = false, any = false;
        size_t next = 0;
        int64_t total = 0;
        while (*p) {
                if (toupper((unsigned char)*p) == 'T') {
                        if (in_time)
                                goto bad;
                        in_time = true;
                        p++;
                        if (!*p)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ISO 8601 duration \"%s\" has a 'T' "
                                                 "but no hours, minutes or seconds after it",
                                                 s);
                        continue;
                }
                const char *num = p;
                int64_t v;
                int rc = tb_units_scaled_number(&p, 1, &v);
                if (rc == -1)
                        goto bad;
                char c = (char)toupper((unsigned char)*p);
                size_t i;
                for (i = next; i < TB_ARRAY_LEN(des); i++)
                        if (des[i].c == c && des[i].time == in_time)
                                break;
                if (i == TB_ARRAY_LEN(des))
                        goto bad;
                if (!des[i].unit)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ISO 8601 duration \"%s\": %s are not supported "
                                         "because their length varies; use weeks (W), "
                                         "days (D) or smaller units",
                                         s, c == 'Y' ? "years" : "months");
                int64_t part;
                rc = tb_units_scaled_number(&num, des[i].unit, &part);
                if (rc)
                        return tb_units_duration_numerr(rc, s, errstr, errstr_size);
                if (__builtin_add_overflow(total, part, &total))
                        return tb_units_duration_numerr(-2, s, errstr, errstr_size);
                next = i + 1;
                any = true;
                p++;
        }
        if (!any)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ISO 8601 duration \"%s\" has no components; "
                                 "expected e.g. \"PT30S\" or \"P1DT2H\"", s);
        *ms = total;
        return TB_OK;
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "invalid ISO 8601 duration \"%s\": expected P[nW][nD][T[nH][nM][nS]], "
                         "like \"PT30S\" or \"P1DT2H\"", s);
}

tb_err_t tb_units_duration_parse(const char *s, int64_t *ms, char *errstr,
                                 size_t errstr_size) {
        static const tb_units_suffix_t units[] = {
                {"ms", 1},           {"s", TB_SEC(1)},  {"m", TB_MIN(1)},
                {"h", TB_HOUR(1)},   {"d", TB_DAY(1)},  {"w", TB_DAY(7)},
        };
        if (!s || !*s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "empty duration: expected e.g. \"500ms\", \"30s\", "
                                 "\"5m\", \"2h\", \"7d\", \"1w\", \"PT30S\" or a "
                                 "number of seconds");
        if (*s == '-')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "duration \"%s\" is negative", s);
        int64_t total = 0;
        if (*s == 'P' || *s == 'p') {
                tb_err_t err = tb_units_duration_parse_iso(s, &total, errstr, errstr_size);
                if (err)
                        return err;
                goto check;
        }
        const char *p = s;
        /* A bare number is seconds, as in the config file's integer form. */
        {
                const char *q = s;
                int64_t v;
                int rc = tb_units_scaled_number(&q, TB_SEC(1), &v);
                if (rc == 0 && !*q) {
                        total = v;
                        goto check;
                }
        }
        while (*p) {
                const char *num = p;
                int64_t unscaled; /* parsed only to find where the number ends */
                int rc = tb_units_scaled_number(&p, 1, &unscaled);
                if (rc == -1 || rc == -2)
                        return tb_units_duration_numerr(rc, s, errstr, errstr_size);
                const char *u = p;
                while (isalpha((unsigned char)*p))
                        p++;
                size_t ulen = (size_t)(p - u);
                if (!ulen)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "duration \"%s\": a number needs a unit when "
                                         "combined with others (ms, s, m, h, d, w)", s);
                size_t i;
                for (i = 0; i < TB_ARRAY_LEN(units); i++)
                        if (strlen(units[i].name) == ulen &&
                            !strncmp(units[i].name, u, ulen))
                                break;
                if (i == TB_ARRAY_LEN(units))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "duration \"%s\": unknown unit '%.*s'; valid "
                                         "units: ms, s, m, h, d, w (months and years "
                                         "are not supported: their length varies)",
                                         s, (int)(ulen > 16 ? 16 : ulen), u);
                int64_t part;
                rc = tb_units_scaled_number(&num, units[i].unit, &part);
                if (rc)
                        return tb_units_duration_numerr(rc, s, errstr, errstr_size);
                if (__builtin_add_overflow(total, part, &total))
                        return tb_units_duration_numerr(-2, s, errstr, errstr_size);
        }
check:
        if (total > TB_DURATION_MAX_MS)
                return tb_units_duration_numerr(-2, s, errstr, errstr_size);
        *ms = total;
        return TB_OK;
}

tb_err_t tb_units_size_parse(const char *s, int64_t *bytes, char *errstr,
                             size_t errstr_size) {
        static const tb_units_suffix_t units[] = {
                {"", 1},
                {"B", 1},
                {"KiB", TB_KIB(1)},
                {"MiB", TB_MIB(1)},
                {"GiB", TB_GIB(1)},
                {"TiB", TB_TIB(1)},
                {"KB", 1000},
                {"MB", 1000 * 1000},
                {"GB", 1000 * 1000 * 1000},
                {"TB", (int64_t)1000 * 1000 * 1000 * 1000},
        };
        if (!s || !*s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "empty size: expected a number of bytes or e.g. "
                                 "\"256KiB\", \"64MiB\", \"1GiB\"");
        if (*s == '-')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "size \"%s\" is negative", s);
        const char *p = s;
        int64_t unscaled; /* parsed only to find where the number ends */
        if (tb_units_scaled_number(&p, 1, &unscaled) == -1)
                goto bad;
        const char *u = p;
        while (*p == ' ')
                u = ++p;
        for (size_t i = 0; i < TB_ARRAY_LEN(units); i++) {
                if (strcmp(u, units[i].name))
                        continue;
                const char *q = s;
                int rc = tb_units_scaled_number(&q, units[i].unit, bytes);
                if (rc == -2)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "size \"%s\" is too large", s);
                if (rc == -3)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "size \"%s\" is not a whole number of bytes", s);
                return TB_OK;
        }
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "invalid size \"%s\": expected a number of bytes, optionally "
                         "followed by B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, "
                         "GB, TB (powers of 1000)", s);
}

/** Compact human form of a duration: "1826d", "1h30m", "500ms". */
void tb_units_duration_format(int64_t ms, char *buf, size_t size) {
        static const tb_units_suffix_t units[] = {
                {"d", TB_DAY(1)}, {"h", TB_HOUR(1)}, {"m", TB_MIN(1)},
                {"s", TB_SEC(1)}, {"ms", 1},
        };
        size_t len = 0;
        buf[0] = '\0';
        if (ms <= 0) {
                tb_snprintf(buf, size, "%s", ms == 0 ? "0s" : "negative");
                return;
        }
        for (size_t i = 0; i < TB_ARRAY_LEN(units) && ms; i++) {
                if (ms < units[i].unit)
                        continue;
                int n = snprintf(buf + len, size - len, "%lld%s",
                                 (long long)(ms / units[i].unit), units[i].name);
                if (n < 0 || (size_t)n >= size - len)
                        return;
                len += (size_t)n;
                ms %= units[i].unit;
        }
}

void tb_units_size_format(int64_t b, char *buf, size_t size) {
        static const tb_units_suffix_t units[] = {
                {"TiB", TB_TIB(1)}, {"GiB", TB_GIB(1)}, {"MiB", TB_MIB(1)}, {"KiB", TB_KIB(1)},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(units); i++) {
                if (b && b % units[i].unit == 0) {
                        tb_snprintf(buf, size, "%lld%s", (long long)(b / units[i].unit),
                                    units[i].name);
                        return;
                }
        }
        tb_snprintf(buf, size, "%lld", (long long)b);
}

void tb_units_duration_format_iso8601(int64_t ms, char *buf, size_t size) {
        /* The longest, "-P106751991167DT7H12M55.808S", fits with room. */
        char iso[48];
        size_t len = 0;
        uint64_t u;
        if (ms < 0) {
                iso[len++] = '-';
                u = (uint64_t)0 - (uint64_t)ms;
        } else {
                u = (uint64_t)ms;
        }
        uint64_t days = u / (uint64_t)TB_DAY(1), rest = u % (uint64_t)TB_DAY(1);
        uint64_t h = rest / (uint64_t)TB_HOUR(1), m = rest / (uint64_t)TB_MIN(1) % 60;
        uint64_t sec = rest / 1000 % 60, frac = rest % 1000;
        int n;
        iso[len++] = 'P';
        if (days) {
                n = snprintf(iso + len, sizeof(iso) - len, "%lluD",
                             (unsigned long long)days);
                len += (size_t)n;
        }
        if (rest || !days) {
                iso[len++] = 'T';
                if (h) {
                        n = snprintf(iso + len, sizeof(iso) - len, "%lluH",
                                     (unsigned long long)h);
                        len += (size_t)n;
                }
                if (m) {
                        n = snprintf(iso + len, sizeof(iso) - len, "%lluM",
                                     (unsigned long long)m);
                        len += (size_t)n;
                }
                if (sec || frac || !rest) {
                        n = snprintf(iso + len, sizeof(iso) - len, "%llu",
                                     (unsigned long long)sec);
                        len += (size_t)n;
                        if (frac) {
                                char f[8];
                                snprintf(f, sizeof(f), ".%03u", (unsigned)frac);
                                size_t fl = strlen(f);
                                while (f[fl - 1] == '0')
                                        f[--fl] = '\0';
                                memcpy(iso + len, f, fl);
                                len += fl;
                        }
                        iso[len++] = 'S';
                }
        }
        iso[len] = '\0';
        tb_snprintf(buf, size, "%s", iso);
}
