/**
 * @file schedule/ics.c
 * @brief iCalendar (RFC 5545) reader: line unfolding, content lines,
 *        components, VEVENT date properties, RRULE parsing and expansion.
 */
#include "schedule/ics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TB_ICS_MAX_DEPTH 8
#define TB_ICS_MAX_PARAMS 16
#define TB_ICS_MAX_COMPNAME 64
/* The longest event: a year and a day; bounds the days one occurrence marks. */
#define TB_ICS_MAX_DURATION_S (INT64_C(367) * 86400)
#define TB_ICS_MIN_YEAR 1800
#define TB_ICS_MAX_YEAR 9999

static const char *const tb_ics_wday_names[] = {"SU", "MO", "TU", "WE", "TH", "FR", "SA"};

/* A user's value for a message: at most 40 bytes, non-ASCII as '?'. */
static const char *tb_ics_shown(const char *s, char out[48]) {
        size_t i = 0;
        for (; s[i] && i < 40; i++)
                out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        if (s[i])
                out[i++] = '.', out[i++] = '.', out[i++] = '.';
        out[i] = '\0';
        return out;
}

/* ---- the reader: physical lines -> unfolded content lines ------------ */

typedef struct tb_ics_param {
        char *name;  /**< upper-cased */
        char *value; /**< unquoted; a comma list is kept whole */
} tb_ics_param_t;

typedef struct tb_ics_reader {
        const char *p, *end;
        int next_line;       /**< physical line number of p */
        int line;            /**< first physical line of the current content line */
        char buf[TB_ICS_MAX_LINE + 1];
        size_t len;
        /* the current content line, split in place in buf */
        char *name;
        char *value;
        int nparams;
        tb_ics_param_t params[TB_ICS_MAX_PARAMS];
} tb_ics_reader_t;

/* Check that all of the input is UTF-8 without control characters other
 * than tab, CR and LF. */
static tb_err_t tb_ics_check_bytes(const char *text, size_t len, char *errstr,
                                   size_t errstr_size) {
        const unsigned char *s = (const unsigned char *)text;
        int line = 1;
        for (size_t i = 0; i < len;) {
                unsigned c = s[i];
                if (c == '\n') {
                        line++;
                        i++;
                        continue;
                }
                if (c < 0x80) {
                        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: control character 0x%02x "
                                                 "(iCalendar is text: remove it)",
                                                 line, c);
                        i++;
                        continue;
                }
                size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
                if (c >= 0xf5)
                        n = 0;
                bool ok = n > 0 && i + n <= len;
                for (size_t k = 1; ok && k < n; k++)
                        ok = (s[i + k] & 0xc0) == 0x80;
                if (ok && n == 3) /* overlong or surrogate */
                        ok = !(c == 0xe0 && s[i + 1] < 0xa0) && !(c == 0xed && s[i + 1] >= 0xa0);
                if (ok && n == 4)
                        ok = !(c == 0xf0 && s[i + 1] < 0x90) && !(c == 0xf4 && s[i + 1] >= 0x90);
                if (!ok)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: invalid UTF-8 (save the file as "
                                         "UTF-8)",
                                         line);
                i += n;
        }
        return TB_OK;
}

/* One physical line from r->p: [*s, *s + *n), CR of a CRLF left out. */
static tb_err_t tb_ics_physical(tb_ics_reader_t *r, const char **s, size_t *n,
                                char *errstr, size_t errstr_size) {
        const char *b = r->p;
        const char *e = memchr(b, '\n', (size_t)(r->end - b));
        const char *next = e ? e + 1 : r->end;
        if (!e)
                e = r->end;
        if (e > b && e[-1] == '\r')
                e--;
        if (memchr(b, '\r', (size_t)(e - b)))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: a CR not followed by LF (lines end "
                                 "with CRLF or LF)",
                                 r->next_line);
        *s = b;
        *n = (size_t)(e - b);
        r->p = next;
        r->next_line++;
        return TB_OK;
}

static tb_err_t tb_ics_too_long(const tb_ics_reader_t *r, char *errstr, size_t errstr_size) {
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "ics: line %d: content line longer than %d bytes after "
                         "unfolding",
                         r->line, TB_ICS_MAX_LINE);
}

/* Split buf into name, parameters and value. */
static tb_err_t tb_ics_split(tb_ics_reader_t *r, char *errstr, size_t errstr_size) {
        char *p = r->buf;
        r->name = p;
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
               (*p >= '0' && *p <= '9') || *p == '-') {
                if (*p >= 'a' && *p <= 'z')
                        *p = (char)(*p - 'a' + 'A');
                p++;
        }
        if (p == r->name || (*p != ';' && *p != ':'))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: not a content line (NAME[;PARAM=V]:VALUE "
                                 "expected)",
                                 r->line);
        r->nparams = 0;
        char sep = *p;
        *p++ = '\0';
        while (sep == ';') {
                if (r->nparams == TB_ICS_MAX_PARAMS)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: %s: more than %d parameters",
                                         r->line, r->name, TB_ICS_MAX_PARAMS);
                tb_ics_param_t *pm = &r->params[r->nparams++];
                pm->name = p;
                while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                       (*p >= '0' && *p <= '9') || *p == '-') {
                        if (*p >= 'a' && *p <= 'z')
                                *p = (char)(*p - 'a' + 'A');
                        p++;
                }
                if (p == pm->name || *p != '=')
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: %s: malformed parameter (NAME=VALUE "
                                         "expected)",
                                         r->line, r->name);
                *p++ = '\0';
                pm->value = p;
                char *w = p;
                /* values: "quoted" or plain, comma separated, kept together */
                for (;;) {
                        if (*p == '"') {
                                p++;
                                while (*p && *p != '"')
                                        *w++ = *p++;
                                if (*p != '"')
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: %s: parameter %s: "
                                                         "unterminated quote",
                                                         r->line, r->name, pm->name);
                                p++;
                        } else {
                                while (*p && *p != ';' && *p != ':' && *p != ',' && *p != '"')
                                        *w++ = *p++;
                                if (*p == '"')
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: %s: parameter %s: "
                                                         "quote inside a value",
                                                         r->line, r->name, pm->name);
                        }
                        if (*p != ',')
                                break;
                        *w++ = *p++;
                }
                if (*p != ';' && *p != ':')
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: %s: parameter %s: ';' or ':' "
                                         "expected after its value",
                                         r->line, r->name, pm->name);
                sep = *p;
                *w = '\0'; /* w <= p: may overwrite the separator, saved in sep */
                p++;
        }
        r->value = p;
        return TB_OK;
}

/* Read the next content line into r. @returns TB_OK with r->name set, or
 * TB_OK with r->name NULL at the end of the input. */
static tb_err_t tb_ics_next(tb_ics_reader_t *r, char *errstr, size_t errstr_size) {
        const char *s;
        size_t n;
        tb_err_t err;
        r->name = NULL;
        do { /* blank lines are skipped */
                if (r->p >= r->end)
                        return TB_OK;
                r->line = r->next_line;
                if ((err = tb_ics_physical(r, &s, &n, errstr, errstr_size)))
                        return err;
        } while (n == 0);
        if (s[0] == ' ' || s[0] == '\t')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: a continuation line (starting with a "
                                 "space) with no line to continue",
                                 r->line);
        if (n > TB_ICS_MAX_LINE)
                return tb_ics_too_long(r, errstr, errstr_size);
        memcpy(r->buf, s, n);
        r->len = n;
        while (r->p < r->end && (r->p[0] == ' ' || r->p[0] == '\t')) {
                if ((err = tb_ics_physical(r, &s, &n, errstr, errstr_size)))
                        return err;
                if (r->len + n - 1 > TB_ICS_MAX_LINE)
                        return tb_ics_too_long(r, errstr, errstr_size);
                memcpy(r->buf + r->len, s + 1, n - 1);
                r->len += n - 1;
        }
        r->buf[r->len] = '\0';
        return tb_ics_split(r, errstr, errstr_size);
}

static const char *tb_ics_param(const tb_ics_reader_t *r, const char *name) {
        for (int i = 0; i < r->nparams; i++)
                if (!strcmp(r->params[i].name, name))
                        return r->params[i].value;
        return NULL;
}

/* ---- values ---------------------------------------------------------- */

/** A DATE or DATE-TIME value. */
typedef struct tb_ics_dt {
        bool date;
        int64_t wall_s;
        const tb_tz_t *tz; /**< NULL = floating */
} tb_ics_dt_t;

static bool tb_ics_digits(const char *s, int n, int *out) {
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        *out = v;
        return true;
}

/* Parse one date or date-time \p s (no list) of property \p prop. \p want
 * is 'D' (VALUE=DATE), 'T' (VALUE=DATE-TIME) or 0 (either, for UNTIL). */
static tb_err_t tb_ics_parse_dt(const char *s, size_t n, int want, const tb_tz_t *tz,
                                int line, const char *prop, tb_ics_dt_t *out, char *errstr,
                                size_t errstr_size) {
        char shown[48], tmp[32];
        size_t k = n < sizeof(tmp) - 1 ? n : sizeof(tmp) - 1;
        memcpy(tmp, s, k);
        tmp[k] = '\0';
        tb_ics_shown(tmp, shown);
        int y, mo, d, h = 0, mi = 0, se = 0;
        bool is_date = n == 8;
        bool utc = n == 16 && s[15] == 'Z';
        if (!(n == 8 || n == 15 || utc) || !tb_ics_digits(s, 4, &y) ||
            !tb_ics_digits(s + 4, 2, &mo) || !tb_ics_digits(s + 6, 2, &d) ||
            (!is_date && (s[8] != 'T' || !tb_ics_digits(s + 9, 2, &h) ||
                          !tb_ics_digits(s + 11, 2, &mi) || !tb_ics_digits(s + 13, 2, &se))))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s: '%s' is not a date (YYYYMMDD) or a "
                                 "date-time (YYYYMMDDTHHMMSS, optionally with Z)",
                                 line, prop, shown);
        if (want == 'T' && is_date)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s: '%s' is a date: write %s;VALUE=DATE:%s "
                                 "for an all-day event",
                                 line, prop, shown, prop, shown);
        if (want == 'D' && !is_date)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s: '%s' is a date-time but VALUE=DATE "
                                 "(write YYYYMMDD)",
                                 line, prop, shown);
        if (y < TB_ICS_MIN_YEAR || y > TB_ICS_MAX_YEAR || mo < 1 || mo > 12 || d < 1 ||
            d > tb_tz_days_in_month(y, mo) || h > 23 || mi > 59 || se > 59)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s: '%s' is not a valid date or time "
                                 "(years %d-%d)",
                                 line, prop, shown, TB_ICS_MIN_YEAR, TB_ICS_MAX_YEAR);
        if (tz && (is_date || utc))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s: TZID applies only to a local date-time "
                                 "(no Z, not a date)",
                                 line, prop);
        out->date = is_date;
        out->wall_s = tb_tz_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
        out->tz = utc ? tb_tz_utc() : is_date ? NULL : tz;
        return TB_OK;
}

/* The VALUE and TZID parameters of the current line. */
static tb_err_t tb_ics_dt_params(const tb_ics_reader_t *r, int *want, const tb_tz_t **tz,
                                 char *errstr, size_t errstr_size) {
        const char *v = tb_ics_param(r, "VALUE");
        const char *tzid = tb_ics_param(r, "TZID");
        char shown[48], e2[200];
        *want = 'T';
        *tz = NULL;
        if (v) {
                if (!strcasecmp(v, "DATE"))
                        *want = 'D';
                else if (strcasecmp(v, "DATE-TIME"))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: %s: VALUE=%s is not supported (use "
                                         "DATE or DATE-TIME)",
                                         r->line, r->name, tb_ics_shown(v, shown));
        }
        if (tzid) {
                if (tzid[0] == '/') /* a "globally unique" id: the rest is the name */
                        tzid++;
                if (tb_tz_open(tzid, tz, e2, sizeof(e2)) != TB_OK)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: %s: TZID: %s (only IANA zone names are "
                                         "supported; VTIMEZONE definitions are not read)",
                                         r->line, r->name, e2);
        }
        return TB_OK;
}

/* The instant of \p dt (not floating). A local time in a DST gap uses the
 * offset before the gap and one in an overlap the first, as RFC 5545 says. */
static int64_t tb_ics_instant(const tb_ics_dt_t *dt) {
        tb_tz_local_t loc;
        tb_tz_resolve(dt->tz, dt->wall_s, &loc);
        if (loc.count > 0)
                return loc.first_s;
        return dt->wall_s - tb_tz_offset_at(dt->tz, loc.gap_end_s - 1);
}

/* \p dt as wall seconds of the event whose start is \p start (its zone). */
static tb_err_t tb_ics_to_event_wall(const tb_ics_dt_t *dt, const tb_ics_dt_t *start,
                                     int line, const char *prop, int64_t *out,
                                     char *errstr, size_t errstr_size) {
        if (dt->tz == start->tz) {
                *out = dt->wall_s;
                return TB_OK;
        }
        if (!dt->tz || !start->tz)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s: %s time but DTSTART is %s: use the "
                                 "same form",
                                 line, prop, dt->tz ? "a UTC or TZID" : "a floating",
                                 start->tz ? "in a zone" : "floating");
        int64_t t = tb_ics_instant(dt);
        *out = t + tb_tz_offset_at(start->tz, t);
        return TB_OK;
}

/* RFC 5545 dur-value, no sign or '+': P<n>W or P[<n>D][T[<n>H][<n>M][<n>S]]. */
static tb_err_t tb_ics_parse_duration(const char *s, bool all_day, int line, int64_t *out,
                                      char *errstr, size_t errstr_size) {
        char shown[48];
        const char *p = s;
        int64_t total = 0;
        bool any = false, in_time = false, any_time = false;
        const char *order = "WDHMS";
        int last = -1;
        if (*p == '+')
                p++;
        if (*p == '-')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: DURATION: a negative duration '%s' is not "
                                 "allowed",
                                 line, tb_ics_shown(s, shown));
        if (*p++ != 'P')
                goto bad;
        while (*p) {
                if (*p == 'T') {
                        if (in_time)
                                goto bad;
                        in_time = true;
                        p++;
                        continue;
                }
                int64_t v = 0;
                const char *d0 = p;
                while (*p >= '0' && *p <= '9' && p - d0 < 6)
                        v = v * 10 + (*p++ - '0');
                if (p == d0 || !*p)
                        goto bad;
                const char *u = strchr(order, *p);
                if (!u || !*p)
                        goto bad;
                int idx = (int)(u - order);
                if (idx <= last || (in_time != (idx >= 2)) || (idx == 0 && last >= 0))
                        goto bad;
                last = idx;
                static const int64_t mul[] = {7 * 86400, 86400, 3600, 60, 1};
                total += v * mul[idx];
                any = true;
                any_time |= idx >= 2;
                p++;
        }
        if (!any || (in_time && !any_time) || (last == 0 && in_time))
                goto bad;
        if (all_day && (total % 86400))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: DURATION: '%s' is not a whole number of days, "
                                 "as an all-day event needs (P1D, P2W)",
                                 line, tb_ics_shown(s, shown));
        *out = total;
        return TB_OK;
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "ics: line %d: DURATION: '%s' is not an RFC 5545 duration (P1D, "
                         "PT2H30M, P1W)",
                         line, tb_ics_shown(s, shown));
}

/* Unescape a TEXT value (\\ \; \, \n \N) into a new string. */
static char *tb_ics_unescape(const char *s) {
        size_t n = strlen(s);
        char *out = malloc(n + 1), *w = out;
        if (!out)
                return NULL;
        for (const char *p = s; *p; p++) {
                if (*p == '\\' && p[1]) {
                        p++;
                        *w++ = (*p == 'n' || *p == 'N') ? '\n' : *p;
                } else {
                        *w++ = *p;
                }
        }
        *w = '\0';
        return out;
}

/* ---- RRULE ------------------------------------------------------------ */

static int tb_ics_wday_parse(const char *s) {
        for (int i = 0; i < 7; i++)
                if (!strncasecmp(s, tb_ics_wday_names[i], 2))
                        return i;
        return -1;
}

/* A signed integer in [lo, hi] with no junk; @returns false otherwise. */
static bool tb_ics_int(const char *s, int lo, int hi, int *out) {
        const char *p = s;
        bool neg = false;
        if (*p == '+' || *p == '-')
                neg = *p++ == '-';
        if (!*p)
                return false;
        long v = 0;
        for (; *p; p++) {
                if (*p < '0' || *p > '9' || v > 1000000)
                        return false;
                v = v * 10 + (*p - '0');
        }
        if (neg)
                v = -v;
        if (v < lo || v > hi)
                return false;
        *out = (int)v;
        return true;
}

typedef struct tb_ics_pending {
        int line;
        bool seen_dtstart, seen_dtend, seen_duration, seen_summary, seen_rrule, cancelled;
        tb_ics_dt_t dtstart, dtend;
        int64_t duration_s;
        int rrule_line;
        char *rrule;      /**< copy of the RRULE value, parsed at END:VEVENT */
        size_t nex, capex;
        tb_ics_dt_t *ex;  /**< EXDATE values */
        int *exline;
        char *summary;
} tb_ics_pending_t;

static void tb_ics_pending_clear(tb_ics_pending_t *pe) {
        free(pe->rrule);
        free(pe->ex);
        free(pe->exline);
        free(pe->summary);
        memset(pe, 0, sizeof(*pe));
}

static tb_err_t tb_ics_rrule_parse(tb_ics_pending_t *pe, tb_ics_rrule_t *rr, char *errstr,
                                   size_t errstr_size) {
        int line = pe->rrule_line;
        char shown[48];
        bool seen[16] = {false};
        static const char *const parts[] = {"FREQ",     "INTERVAL",   "COUNT", "UNTIL",
                                            "BYMONTH",  "BYMONTHDAY", "BYDAY", "WKST"};
        static const char *const refused[] = {"BYSETPOS", "BYYEARDAY", "BYWEEKNO",
                                              "BYHOUR",   "BYMINUTE",  "BYSECOND"};
        memset(rr, 0, sizeof(*rr));
        rr->interval = 1;
        rr->wkst = 1;
        char *save = NULL;
        for (char *part = strtok_r(pe->rrule, ";", &save); part;
             part = strtok_r(NULL, ";", &save)) {
                char *eq = strchr(part, '=');
                if (!eq || eq == part || !eq[1])
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: '%s' is not NAME=VALUE", line,
                                         tb_ics_shown(part, shown));
                *eq = '\0';
                char *val = eq + 1;
                for (char *c = part; *c; c++)
                        if (*c >= 'a' && *c <= 'z')
                                *c = (char)(*c - 'a' + 'A');
                int k = -1;
                for (size_t i = 0; i < TB_ARRAY_LEN(parts); i++)
                        if (!strcmp(part, parts[i]))
                                k = (int)i;
                if (k < 0) {
                        for (size_t i = 0; i < TB_ARRAY_LEN(refused); i++)
                                if (!strcmp(part, refused[i]))
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: RRULE: %s is not "
                                                         "supported (supported: FREQ, "
                                                         "INTERVAL, COUNT, UNTIL, BYMONTH, "
                                                         "BYMONTHDAY, BYDAY, WKST)",
                                                         line, part);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: unknown part '%s'", line,
                                         tb_ics_shown(part, shown));
                }
                if (seen[k])
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: %s appears twice", line, part);
                seen[k] = true;
                int v;
                char *s2 = NULL;
                switch (k) {
                case 0:
                        if (!strcasecmp(val, "DAILY"))
                                rr->freq = TB_ICS_FREQ_DAILY;
                        else if (!strcasecmp(val, "WEEKLY"))
                                rr->freq = TB_ICS_FREQ_WEEKLY;
                        else if (!strcasecmp(val, "MONTHLY"))
                                rr->freq = TB_ICS_FREQ_MONTHLY;
                        else if (!strcasecmp(val, "YEARLY"))
                                rr->freq = TB_ICS_FREQ_YEARLY;
                        else
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: RRULE: FREQ=%s is not "
                                                 "supported (use YEARLY, MONTHLY, WEEKLY or "
                                                 "DAILY)",
                                                 line, tb_ics_shown(val, shown));
                        break;
                case 1:
                        if (!tb_ics_int(val, 1, 1000, &rr->interval) || val[0] == '+')
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: RRULE: INTERVAL=%s is not a "
                                                 "whole number from 1 to 1000",
                                                 line, tb_ics_shown(val, shown));
                        break;
                case 2:
                        if (!tb_ics_int(val, 1, 100000, &rr->count) || val[0] == '+')
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: RRULE: COUNT=%s is not a "
                                                 "whole number from 1 to 100000",
                                                 line, tb_ics_shown(val, shown));
                        break;
                case 3: {
                        tb_ics_dt_t u;
                        tb_err_t err = tb_ics_parse_dt(val, strlen(val), 0, NULL, line,
                                                       "RRULE UNTIL", &u, errstr, errstr_size);
                        if (err)
                                return err;
                        rr->has_until = true;
                        if (pe->dtstart.date || u.date) {
                                /* a date bound: the whole of its day, as written */
                                rr->until_wall_s = tb_tz_floordiv(u.wall_s, 86400) * 86400 +
                                                   86399;
                        } else if ((err = tb_ics_to_event_wall(&u, &pe->dtstart, line,
                                                               "RRULE UNTIL",
                                                               &rr->until_wall_s, errstr,
                                                               errstr_size))) {
                                return err;
                        }
                        break;
                }
                case 4:
                        for (char *it = strtok_r(val, ",", &s2); it;
                             it = strtok_r(NULL, ",", &s2)) {
                                if (!tb_ics_int(it, 1, 12, &v) || it[0] == '+' || it[0] == '-')
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: RRULE: BYMONTH: '%s' "
                                                         "is not a month 1-12",
                                                         line, tb_ics_shown(it, shown));
                                rr->bymonth |= (uint16_t)(1u << v);
                        }
                        break;
                case 5:
                        for (char *it = strtok_r(val, ",", &s2); it;
                             it = strtok_r(NULL, ",", &s2)) {
                                if (!tb_ics_int(it, -31, 31, &v) || v == 0)
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: RRULE: BYMONTHDAY: "
                                                         "'%s' is not a day 1-31 or -31..-1",
                                                         line, tb_ics_shown(it, shown));
                                if (rr->nbymonthday == (int)TB_ARRAY_LEN(rr->bymonthday))
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: RRULE: BYMONTHDAY: "
                                                         "more than 31 values",
                                                         line);
                                rr->bymonthday[rr->nbymonthday++] = (int8_t)v;
                        }
                        break;
                case 6:
                        for (char *it = strtok_r(val, ",", &s2); it;
                             it = strtok_r(NULL, ",", &s2)) {
                                size_t n = strlen(it);
                                int wd = n >= 2 ? tb_ics_wday_parse(it + n - 2) : -1;
                                int nth = 0;
                                char num[8];
                                bool ok = wd >= 0 && n - 2 < sizeof(num);
                                if (ok && n > 2) {
                                        memcpy(num, it, n - 2);
                                        num[n - 2] = '\0';
                                        ok = tb_ics_int(num, -53, 53, &nth) && nth != 0;
                                }
                                if (!ok)
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: RRULE: BYDAY: '%s' is "
                                                         "not a weekday (MO, 1MO, -1FR...)",
                                                         line, tb_ics_shown(it, shown));
                                if (rr->nbyday == (int)TB_ARRAY_LEN(rr->byday))
                                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                         "ics: line %d: RRULE: BYDAY: more "
                                                         "than %d values",
                                                         line, (int)TB_ARRAY_LEN(rr->byday));
                                rr->byday[rr->nbyday++] =
                                        (tb_ics_byday_t){.wday = (int8_t)wd, .nth = (int8_t)nth};
                        }
                        break;
                case 7:
                        v = strlen(val) == 2 ? tb_ics_wday_parse(val) : -1;
                        if (v < 0)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: RRULE: WKST=%s is not a "
                                                 "weekday (MO..SU)",
                                                 line, tb_ics_shown(val, shown));
                        rr->wkst = v;
                        break;
                }
        }
        if (rr->freq == TB_ICS_FREQ_NONE)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: RRULE: FREQ is missing", line);
        if (rr->count && rr->has_until)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: RRULE: COUNT and UNTIL cannot both be given",
                                 line);
        if (rr->freq == TB_ICS_FREQ_WEEKLY && rr->nbymonthday)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: RRULE: BYMONTHDAY cannot be used with "
                                 "FREQ=WEEKLY",
                                 line);
        for (int i = 0; i < rr->nbyday; i++) {
                int nth = rr->byday[i].nth;
                bool year_scope = rr->freq == TB_ICS_FREQ_YEARLY && !rr->bymonth;
                if (nth && (rr->freq == TB_ICS_FREQ_DAILY || rr->freq == TB_ICS_FREQ_WEEKLY ||
                            (!year_scope && (nth > 5 || nth < -5))))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: BYDAY: an ordinal (%d%s) needs "
                                         "FREQ=MONTHLY, or YEARLY (-5..5 with BYMONTH)",
                                         line, nth, tb_ics_wday_names[rr->byday[i].wday]);
                if (nth && rr->freq == TB_ICS_FREQ_YEARLY && year_scope && rr->nbymonthday)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: BYDAY with an ordinal and "
                                         "BYMONTHDAY need BYMONTH in a YEARLY rule",
                                         line);
        }
        return TB_OK;
}

/* ---- expansion ---------------------------------------------------------- */

static bool tb_ics_byday_match(const tb_ics_rrule_t *rr, int wd, int idx, int len) {
        for (int i = 0; i < rr->nbyday; i++) {
                const tb_ics_byday_t *b = &rr->byday[i];
                if (b->wday != wd)
                        continue;
                if (b->nth == 0 || (b->nth > 0 && idx / 7 + 1 == b->nth) ||
                    (b->nth < 0 && (len - 1 - idx) / 7 + 1 == -b->nth))
                        return true;
        }
        return false;
}

static bool tb_ics_monthday_match(const tb_ics_rrule_t *rr, int dom, int mlen) {
        for (int i = 0; i < rr->nbymonthday; i++) {
                int v = rr->bymonthday[i];
                if ((v > 0 && v == dom) || (v < 0 && mlen + 1 + v == dom))
                        return true;
        }
        return false;
}

/* Days of month y-m matching BYDAY as a bitmask (bit dom-1), computed
 * per entry rather than by scanning the month. */
static uint32_t tb_ics_byday_mask(const tb_ics_rrule_t *rr, int wd1, int n) {
        uint32_t mask = 0;
        for (int i = 0; i < rr->nbyday; i++) {
                const tb_ics_byday_t *b = &rr->byday[i];
                int first = 1 + (b->wday - wd1 + 7) % 7; /* first such weekday */
                int last = first + (n - first) / 7 * 7;
                if (b->nth == 0) {
                        for (int dom = first; dom <= n; dom += 7)
                                mask |= 1u << (dom - 1);
                } else {
                        int dom = b->nth > 0 ? first + (b->nth - 1) * 7 : last + (b->nth + 1) * 7;
                        if (dom >= 1 && dom <= n)
                                mask |= 1u << (dom - 1);
                }
        }
        return mask;
}

/* Candidate days of month y-m (ascending) into out; @returns how many.
 * *work grows by the steps taken. */
static int tb_ics_month_days(const tb_ics_rrule_t *rr, int64_t y, int m, int default_dom,
                             int64_t *out, size_t *work) {
        int n = tb_tz_days_in_month(y, m), k = 0;
        int64_t d0 = tb_tz_days_from_civil(y, m, 1);
        uint32_t mask = (1u << n) - 1;
        *work += 1 + (size_t)rr->nbymonthday + (size_t)rr->nbyday * 5;
        if (rr->nbymonthday) {
                uint32_t md = 0;
                for (int i = 0; i < rr->nbymonthday; i++) {
                        int v = rr->bymonthday[i];
                        int dom = v > 0 ? v : n + 1 + v;
                        if (dom >= 1 && dom <= n)
                                md |= 1u << (dom - 1);
                }
                mask &= md;
        }
        if (rr->nbyday)
                mask &= tb_ics_byday_mask(rr, tb_tz_weekday(d0), n);
        if (!rr->nbymonthday && !rr->nbyday)
                mask = default_dom <= n ? 1u << (default_dom - 1) : 0;
        for (; mask; mask &= mask - 1)
                out[k++] = d0 + __builtin_ctz(mask);
        return k;
}

/* Candidate days of period \p k of the rule (ascending) into out (366 max);
 * *first receives the period's first day, *work the steps it took. */
static int tb_ics_period(const tb_ics_event_t *ev, int64_t k, int64_t *first, int64_t *out,
                         size_t *work) {
        const tb_ics_rrule_t *rr = &ev->rrule;
        int64_t sd = tb_tz_floordiv(ev->start_wall_s, 86400);
        int64_t sy;
        int sm, sdom, n = 0;
        tb_tz_civil_from_days(sd, &sy, &sm, &sdom);
        *work = 1;
        switch (rr->freq) {
        case TB_ICS_FREQ_DAILY: {
                int64_t d = sd + k * rr->interval;
                int64_t y;
                int m, dom;
                tb_tz_civil_from_days(d, &y, &m, &dom);
                int mlen = tb_tz_days_in_month(y, m);
                *first = d;
                *work += (size_t)rr->nbymonthday + (size_t)rr->nbyday;
                if ((!rr->bymonth || (rr->bymonth >> m & 1)) &&
                    (!rr->nbymonthday || tb_ics_monthday_match(rr, dom, mlen)) &&
                    (!rr->nbyday || tb_ics_byday_match(rr, tb_tz_weekday(d), 0, 1)))
                        out[n++] = d;
                return n;
        }
        case TB_ICS_FREQ_WEEKLY: {
                int64_t ws = sd - (tb_tz_weekday(sd) - rr->wkst + 7) % 7 + 7 * k * rr->interval;
                *first = ws;
                *work += 7 * (1 + (size_t)rr->nbyday);
                for (int i = 0; i < 7; i++) {
                        int64_t d = ws + i, y;
                        int m, dom;
                        int wd = tb_tz_weekday(d);
                        if (rr->nbyday ? !tb_ics_byday_match(rr, wd, 0, 1)
                                       : wd != tb_tz_weekday(sd))
                                continue;
                        tb_tz_civil_from_days(d, &y, &m, &dom);
                        if (!rr->bymonth || (rr->bymonth >> m & 1))
                                out[n++] = d;
                }
                return n;
        }
        case TB_ICS_FREQ_MONTHLY: {
                int64_t mi = sy * 12 + (sm - 1) + k * rr->interval;
                int64_t y = tb_tz_floordiv(mi, 12);
                int m = (int)(mi - y * 12) + 1;
                *first = tb_tz_days_from_civil(y, m, 1);
                if (rr->bymonth && !(rr->bymonth >> m & 1))
                        return 0;
                return tb_ics_month_days(rr, y, m, sdom, out, work);
        }
        case TB_ICS_FREQ_YEARLY: {
                int64_t y = sy + k * rr->interval;
                *first = tb_tz_days_from_civil(y, 1, 1);
                if (!rr->bymonth && !rr->nbymonthday && rr->nbyday) {
                        /* BYDAY over the whole year: ordinals count in the year */
                        int len = (int)(tb_tz_days_from_civil(y + 1, 1, 1) - *first);
                        int wd1 = tb_tz_weekday(*first);
                        uint64_t mask[6] = {0};
                        *work += (size_t)rr->nbyday * 53;
                        for (int i = 0; i < rr->nbyday; i++) {
                                const tb_ics_byday_t *b = &rr->byday[i];
                                int f = (b->wday - wd1 + 7) % 7; /* index of the first */
                                int l = f + (len - 1 - f) / 7 * 7;
                                if (b->nth == 0) {
                                        for (int j = f; j < len; j += 7)
                                                mask[j >> 6] |= UINT64_C(1) << (j & 63);
                                } else {
                                        int j = b->nth > 0 ? f + (b->nth - 1) * 7
                                                           : l + (b->nth + 1) * 7;
                                        if (j >= 0 && j < len)
                                                mask[j >> 6] |= UINT64_C(1) << (j & 63);
                                }
                        }
                        for (int w = 0; w < 6; w++)
                                for (uint64_t b = mask[w]; b; b &= b - 1)
                                        out[n++] = *first + w * 64 + __builtin_ctzll(b);
                        return n;
                }
                for (int m = 1; m <= 12; m++) {
                        bool want = rr->bymonth ? (rr->bymonth >> m & 1)
                                                : (rr->nbymonthday || rr->nbyday || m == sm);
                        if (want)
                                n += tb_ics_month_days(rr, y, m, sdom, out + n, work);
                }
                return n;
        }
        case TB_ICS_FREQ_NONE:
                break;
        }
        return 0;
}

static tb_err_t tb_ics_expand(const tb_ics_event_t *ev, int64_t until_wall_s, bool use_exdates,
                              size_t *budget, tb_ics_occurrence_cb cb, void *ctx,
                              char *errstr, size_t errstr_size) {
        if (ev->rrule.freq == TB_ICS_FREQ_NONE) {
                if (ev->start_wall_s <= until_wall_s) {
                        for (size_t i = 0; use_exdates && i < ev->nexdates; i++)
                                if (ev->exdates[i] == ev->start_wall_s)
                                        return TB_OK;
                        cb(ctx, ev->start_wall_s);
                }
                return TB_OK;
        }
        const tb_ics_rrule_t *rr = &ev->rrule;
        int64_t limit = until_wall_s;
        if (rr->has_until && rr->until_wall_s < limit)
                limit = rr->until_wall_s;
        int64_t sd = tb_tz_floordiv(ev->start_wall_s, 86400);
        int64_t tod = ev->start_wall_s - sd * 86400;
        int64_t days[372];
        int64_t emitted = 0;
        int64_t max_day = tb_tz_days_from_civil(TB_ICS_MAX_YEAR, 12, 31);
        for (int64_t k = 0;; k++) {
                int64_t first;
                size_t work;
                int n = tb_ics_period(ev, k, &first, days, &work);
                if (first * 86400 > limit || first > max_day)
                        return TB_OK;
                size_t cost = (size_t)n + work;
                if (*budget < cost)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: more than %d days to expand in "
                                         "all: bound it with COUNT or UNTIL",
                                         ev->line, TB_ICS_MAX_EXPANSION);
                *budget -= cost;
                for (int i = 0; i < n; i++) {
                        int64_t wall = days[i] * 86400 + tod;
                        if (wall < ev->start_wall_s)
                                continue;
                        if (wall > limit)
                                return TB_OK;
                        emitted++;
                        bool excluded = false;
                        for (size_t x = 0; use_exdates && x < ev->nexdates; x++)
                                excluded |= ev->exdates[x] == wall;
                        if (!excluded && !cb(ctx, wall))
                                return TB_OK;
                        if (rr->count && emitted >= rr->count)
                                return TB_OK;
                }
        }
}

tb_err_t tb_ics_event_expand(const tb_ics_event_t *ev, int64_t until_wall_s, size_t *budget,
                             tb_ics_occurrence_cb cb, void *ctx, char *errstr,
                             size_t errstr_size) {
        return tb_ics_expand(ev, until_wall_s, true, budget, cb, ctx, errstr, errstr_size);
}

static bool tb_ics_first_cb(void *ctx, int64_t wall) {
        *(int64_t *)ctx = wall;
        return false;
}

/* ---- components --------------------------------------------------------- */

static tb_err_t tb_ics_finish_event(tb_ics_t *ics, size_t *cap, tb_ics_pending_t *pe,
                                    char *errstr, size_t errstr_size) {
        tb_err_t err;
        char d[16];
        if (!pe->seen_dtstart)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: VEVENT has no DTSTART", pe->line);
        if (pe->seen_dtend && pe->seen_duration)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: VEVENT has both DTEND and DURATION (keep one)",
                                 pe->line);
        tb_ics_event_t ev = {.line = pe->line,
                             .all_day = pe->dtstart.date,
                             .start_wall_s = pe->dtstart.wall_s,
                             .tz = pe->dtstart.tz,
                             .duration_s = pe->dtstart.date ? 86400 : 0};
        if (pe->seen_dtend) {
                if (pe->dtend.date != pe->dtstart.date)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: DTEND must be a %s like DTSTART",
                                         pe->line, pe->dtstart.date ? "date" : "date-time");
                int64_t end;
                if ((err = tb_ics_to_event_wall(&pe->dtend, &pe->dtstart, pe->line, "DTEND", &end,
                                                errstr, errstr_size)))
                        return err;
                if (end < ev.start_wall_s || (ev.all_day && end == ev.start_wall_s))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: DTEND is before DTSTART%s", pe->line,
                                         ev.all_day ? " or on the same day (an all-day "
                                                      "event's DTEND is the day after)"
                                                    : "");
                ev.duration_s = end - ev.start_wall_s;
        }
        if (pe->seen_duration)
                ev.duration_s = pe->duration_s;
        if (ev.duration_s > TB_ICS_MAX_DURATION_S)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: the event lasts more than 367 days (split it)",
                                 pe->line);
        if (pe->rrule) {
                if ((err = tb_ics_rrule_parse(pe, &ev.rrule, errstr, errstr_size)))
                        return err;
                /* RFC 5545 leaves a DTSTART that the rule does not produce
                 * undefined: refuse it rather than pick a reading. */
                int64_t first = INT64_MIN;
                size_t budget = 100000; /* one period: at most 12 months of 352 steps */
                if ((err = tb_ics_expand(&ev, ev.start_wall_s, false, &budget, tb_ics_first_cb,
                                         &first, errstr, errstr_size)))
                        return err;
                if (first != ev.start_wall_s) {
                        int64_t y;
                        int m, dd;
                        tb_tz_civil_from_days(tb_tz_floordiv(ev.start_wall_s, 86400), &y, &m, &dd);
                        snprintf(d, sizeof(d), "%04d-%02d-%02d", (int)y, m, dd);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: DTSTART %s is not an occurrence "
                                         "of the rule (RFC 5545 leaves that undefined): make "
                                         "DTSTART the first occurrence",
                                         pe->rrule_line, d);
                }
        }
        if (pe->nex) {
                ev.exdates = calloc(pe->nex, sizeof(*ev.exdates));
                if (!ev.exdates)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                for (size_t i = 0; i < pe->nex; i++) {
                        if (pe->ex[i].date != pe->dtstart.date) {
                                free(ev.exdates);
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: EXDATE must be a %s like "
                                                 "DTSTART",
                                                 pe->exline[i],
                                                 pe->dtstart.date ? "date (VALUE=DATE)"
                                                                  : "date-time");
                        }
                        if ((err = tb_ics_to_event_wall(&pe->ex[i], &pe->dtstart, pe->exline[i],
                                                        "EXDATE", &ev.exdates[i], errstr,
                                                        errstr_size))) {
                                free(ev.exdates);
                                return err;
                        }
                }
                ev.nexdates = pe->nex;
        }
        if (pe->cancelled) {
                free(ev.exdates);
                return TB_OK;
        }
        if (ics->nevents == TB_ICS_MAX_EVENTS) {
                free(ev.exdates);
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: more than %d events", pe->line,
                                 TB_ICS_MAX_EVENTS);
        }
        if (ics->nevents == *cap) {
                tb_ics_event_t *n = tb_array_grow(ics->events, cap, sizeof(*n), 16);
                if (!n) {
                        free(ev.exdates);
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                }
                ics->events = n;
        }
        ev.summary = pe->summary;
        pe->summary = NULL;
        ics->events[ics->nevents++] = ev;
        return TB_OK;
}

static tb_err_t tb_ics_twice(const tb_ics_reader_t *r, char *errstr, size_t errstr_size) {
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "ics: line %d: %s appears twice in one VEVENT", r->line, r->name);
}

/* One property line inside a VEVENT. */
static tb_err_t tb_ics_event_prop(tb_ics_reader_t *r, tb_ics_pending_t *pe, char *errstr,
                                  size_t errstr_size) {
        tb_err_t err;
        int want;
        const tb_tz_t *tz;
        const char *nm = r->name;
        if (!strcmp(nm, "DTSTART") || !strcmp(nm, "DTEND")) {
                bool start = nm[2] == 'S';
                if (start ? pe->seen_dtstart : pe->seen_dtend)
                        return tb_ics_twice(r, errstr, errstr_size);
                if ((err = tb_ics_dt_params(r, &want, &tz, errstr, errstr_size)))
                        return err;
                tb_ics_dt_t *dt = start ? &pe->dtstart : &pe->dtend;
                if ((err = tb_ics_parse_dt(r->value, strlen(r->value), want, tz, r->line, nm, dt,
                                           errstr, errstr_size)))
                        return err;
                *(start ? &pe->seen_dtstart : &pe->seen_dtend) = true;
                return TB_OK;
        }
        if (!strcmp(nm, "DURATION")) {
                if (pe->seen_duration)
                        return tb_ics_twice(r, errstr, errstr_size);
                if (!pe->seen_dtstart)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: DURATION: put DTSTART before it",
                                         r->line);
                pe->seen_duration = true;
                return tb_ics_parse_duration(r->value, pe->dtstart.date, r->line,
                                             &pe->duration_s, errstr, errstr_size);
        }
        if (!strcmp(nm, "SUMMARY")) {
                if (pe->seen_summary)
                        return tb_ics_twice(r, errstr, errstr_size);
                pe->seen_summary = true;
                pe->summary = tb_ics_unescape(r->value);
                return pe->summary ? TB_OK
                                   : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                               "out of memory");
        }
        if (!strcmp(nm, "RRULE")) {
                if (pe->seen_rrule)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ics: line %d: RRULE: only one RRULE per VEVENT is "
                                         "supported",
                                         r->line);
                pe->seen_rrule = true;
                pe->rrule_line = r->line;
                pe->rrule = strdup(r->value);
                return pe->rrule ? TB_OK
                                 : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                             "out of memory");
        }
        if (!strcmp(nm, "EXDATE")) {
                if ((err = tb_ics_dt_params(r, &want, &tz, errstr, errstr_size)))
                        return err;
                for (const char *p = r->value;;) {
                        const char *c = strchr(p, ',');
                        size_t n = c ? (size_t)(c - p) : strlen(p);
                        if (pe->nex == TB_ICS_MAX_EXDATES)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ics: line %d: EXDATE: more than %d dates in "
                                                 "one VEVENT",
                                                 r->line, TB_ICS_MAX_EXDATES);
                        if (pe->nex == pe->capex) {
                                size_t c2 = pe->capex;
                                tb_ics_dt_t *nx = tb_array_grow(pe->ex, &c2, sizeof(*nx), 8);
                                if (!nx)
                                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                         "out of memory");
                                pe->ex = nx;
                                c2 = pe->capex;
                                int *nl = tb_array_grow(pe->exline, &c2, sizeof(*nl), 8);
                                if (!nl)
                                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                         "out of memory");
                                pe->exline = nl;
                                pe->capex = c2;
                        }
                        if ((err = tb_ics_parse_dt(p, n, want, tz, r->line, "EXDATE",
                                                   &pe->ex[pe->nex], errstr, errstr_size)))
                                return err;
                        pe->exline[pe->nex++] = r->line;
                        if (!c)
                                break;
                        p = c + 1;
                }
                return TB_OK;
        }
        if (!strcmp(nm, "STATUS")) {
                pe->cancelled = !strcasecmp(r->value, "CANCELLED");
                return TB_OK;
        }
        if (!strcmp(nm, "RDATE") || !strcmp(nm, "EXRULE") || !strcmp(nm, "RECURRENCE-ID"))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: line %d: %s is not supported (give each date its own "
                                 "VEVENT, or use RRULE)",
                                 r->line, nm);
        return TB_OK; /* UID, DTSTAMP, DESCRIPTION, X-...: no effect on the days */
}

typedef enum { TB_ICS_C_CAL, TB_ICS_C_EVENT, TB_ICS_C_OTHER } tb_ics_comp_t;

tb_err_t tb_ics_parse(const char *text, size_t len, tb_ics_t **out, char *errstr,
                      size_t errstr_size) {
        tb_err_t err;
        *out = NULL;
        if (len > TB_ICS_MAX_INPUT)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ics: the calendar is %zu bytes, over the limit of %d (1 MiB)",
                                 len, TB_ICS_MAX_INPUT);
        if ((err = tb_ics_check_bytes(text, len, errstr, errstr_size)))
                return err;
        tb_ics_reader_t *r = calloc(1, sizeof(*r));
        tb_ics_t *ics = calloc(1, sizeof(*ics));
        tb_ics_pending_t pe = {0};
        size_t cap = 0;
        struct {
                tb_ics_comp_t kind;
                int line;
                char name[TB_ICS_MAX_COMPNAME + 1];
        } stack[TB_ICS_MAX_DEPTH];
        int depth = 0;
        bool done = false;
        char shown[48];
        if (!r || !ics) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto fail;
        }
        r->p = text;
        r->end = text + len;
        r->next_line = 1;
        if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) /* a UTF-8 byte order mark */
                r->p += 3;
        for (;;) {
                if ((err = tb_ics_next(r, errstr, errstr_size)))
                        goto fail;
                if (!r->name)
                        break;
                if (done) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "ics: line %d: %s after END:VCALENDAR (one calendar "
                                        "per input)",
                                        r->line, r->name);
                        goto fail;
                }
                bool begin = !strcmp(r->name, "BEGIN"), end = !strcmp(r->name, "END");
                if (depth == 0 && !(begin && !strcasecmp(r->value, "VCALENDAR"))) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "ics: line %d: %s: the input must start with "
                                        "BEGIN:VCALENDAR",
                                        r->line, r->name);
                        goto fail;
                }
                if (begin) {
                        size_t n = strlen(r->value);
                        if (n == 0 || n > TB_ICS_MAX_COMPNAME) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "ics: line %d: BEGIN: a component name of 1 to "
                                                "%d characters expected",
                                                r->line, TB_ICS_MAX_COMPNAME);
                                goto fail;
                        }
                        if (depth == TB_ICS_MAX_DEPTH) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "ics: line %d: BEGIN: components nested more "
                                                "than %d deep",
                                                r->line, TB_ICS_MAX_DEPTH);
                                goto fail;
                        }
                        tb_ics_comp_t kind = TB_ICS_C_OTHER;
                        if (!strcasecmp(r->value, "VCALENDAR")) {
                                if (depth != 0) {
                                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                        "ics: line %d: BEGIN:VCALENDAR inside "
                                                        "another component",
                                                        r->line);
                                        goto fail;
                                }
                                kind = TB_ICS_C_CAL;
                        } else if (!strcasecmp(r->value, "VEVENT") &&
                                   stack[depth - 1].kind == TB_ICS_C_CAL) {
                                kind = TB_ICS_C_EVENT;
                                tb_ics_pending_clear(&pe);
                                pe.line = r->line;
                        }
                        stack[depth].kind = kind;
                        stack[depth].line = r->line;
                        memcpy(stack[depth].name, r->value, n + 1);
                        depth++;
                        continue;
                }
                if (end) {
                        if (strcasecmp(r->value, stack[depth - 1].name)) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "ics: line %d: END:%s does not match BEGIN:%s "
                                                "at line %d",
                                                r->line, tb_ics_shown(r->value, shown),
                                                stack[depth - 1].name, stack[depth - 1].line);
                                goto fail;
                        }
                        depth--;
                        if (stack[depth].kind == TB_ICS_C_EVENT &&
                            (err = tb_ics_finish_event(ics, &cap, &pe, errstr, errstr_size)))
                                goto fail;
                        if (depth == 0)
                                done = true;
                        continue;
                }
                tb_ics_comp_t top = stack[depth - 1].kind;
                if (top == TB_ICS_C_EVENT) {
                        if ((err = tb_ics_event_prop(r, &pe, errstr, errstr_size)))
                                goto fail;
                } else if (top == TB_ICS_C_CAL) {
                        if (!strcmp(r->name, "VERSION") && strcmp(r->value, "2.0")) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "ics: line %d: VERSION: '%s' is not supported "
                                                "(only 2.0, RFC 5545)",
                                                r->line, tb_ics_shown(r->value, shown));
                                goto fail;
                        }
                        if (!strcmp(r->name, "CALSCALE") && strcasecmp(r->value, "GREGORIAN")) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "ics: line %d: CALSCALE: '%s' is not supported "
                                                "(only GREGORIAN)",
                                                r->line, tb_ics_shown(r->value, shown));
                                goto fail;
                        }
                        if (!strcmp(r->name, "X-WR-TIMEZONE")) {
                                char e2[200];
                                if (tb_tz_open(r->value, &ics->tz, e2, sizeof(e2)) != TB_OK) {
                                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                        "ics: line %d: X-WR-TIMEZONE: %s",
                                                        r->line, e2);
                                        goto fail;
                                }
                        }
                        if (!strcmp(r->name, "X-WR-CALNAME") && !ics->name &&
                            !(ics->name = tb_ics_unescape(r->value))) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                "out of memory");
                                goto fail;
                        }
                }
        }
        if (!done) {
                if (depth == 0)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "ics: the input is empty (BEGIN:VCALENDAR expected)");
                else
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "ics: line %d: BEGIN:%s is never closed (END:%s "
                                        "missing)",
                                        stack[depth - 1].line, stack[depth - 1].name,
                                        stack[depth - 1].name);
                goto fail;
        }
        tb_ics_pending_clear(&pe);
        free(r);
        *out = ics;
        return TB_OK;
fail:
        tb_ics_pending_clear(&pe);
        free(r);
        tb_ics_free(ics);
        return err;
}

void tb_ics_free(tb_ics_t *ics) {
        if (!ics)
                return;
        for (size_t i = 0; i < ics->nevents; i++) {
                free(ics->events[i].summary);
                free(ics->events[i].exdates);
        }
        free(ics->events);
        free(ics->name);
        free(ics);
}
