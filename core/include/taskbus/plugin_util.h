/**
 * @file taskbus/plugin_util.h
 * @brief Optional header-only helpers for taskbus executor plugins: the
 *        clocks, the error buffer, the run's options and policy, the
 *        TASKBUS_* environment, cancel requests, reporting a result, and
 *        taskbus's grammar of durations and sizes.
 *
 * Everything here is `static inline` and uses nothing but the C library and
 * POSIX threads (link with -pthread, as every plugin does), so a plugin that
 * includes it still links no taskbus code and needs no symbol of
 * the host (`-Wl,--no-undefined` keeps proving it). It compiles as C99 or C11
 * with -pedantic. The monotonic clock needs POSIX: define
 * `_POSIX_C_SOURCE 200809L` (or `_GNU_SOURCE`) before the first #include of
 * the file to get tb_pu_mono_ms(); without it the header still compiles and
 * only that function is absent.
 *
 * Every helper is thread-safe (no state of its own) and may be called from
 * any plugin thread; the ones that take a host pointer call the host, so call
 * them with no lock of yours held, as plugin.h requires.
 *
 * ## The unit grammar
 *
 * The strings the taskbus configuration file and the REST API accept
 * (core/lib/config), so that a task author can write the same "512m" or
 * "90s" everywhere. Numbers are decimal: digits, optionally
 * a '.' and more digits ("1.5"); no sign, no exponent. Arithmetic is exact
 * (64-bit integers, no floating point): a value that is not a whole number
 * of the base unit, or that does not fit in int64_t, is refused.
 *
 * Sizes, tb_pu_parse_size(), in bytes:
 *  - a bare number: bytes ("512");
 *  - a number, optional spaces, then one unit (units are case-sensitive
 *    unless noted):
 *    - `B` or `b`: bytes;
 *    - `KiB`, `MiB`, `GiB`, `TiB`: powers of 1024 ("64MiB", "1.5KiB");
 *    - `KB`, `MB`, `GB`, `TB`: powers of 1000 ("500KB");
 *    - `k`, `m`, `g`, `t` in either case (`K`, `M`, `G`, `T`): the
 *      Docker-style single letters, powers of 1024 ("512m" = 512 MiB,
 *      "1.5g" = 1610612736).
 *  Refused: "1.3B" (not whole bytes), "-1", "1e3", "12 parsecs", "kb",
 *  "mib" (multi-letter units keep their case), sizes of 2^63 bytes or more.
 *
 * Durations, tb_pu_parse_duration(), in milliseconds:
 *  - a bare number: seconds ("90", "0.25");
 *  - one or more number-unit pairs, no spaces, units `ms`, `s`, `m`, `h`,
 *    `d` (86400 s), `w` (7 d), case-sensitive ("500ms", "1h30m", "1.5h");
 *  - ISO 8601 `P[nW][nD][T[nH][nM][nS]]`, designators in that order, either
 *    case ("PT30S", "P1DT2H", "PT0.5S"); years and months are refused
 *    because their length varies.
 *  Refused: negatives, finer than a millisecond ("1.5ms"), more than
 *  TB_PU_DURATION_MAX_MS (1000 years of 365 days), unknown units ("1y").
 */
#ifndef TASKBUS_PLUGIN_UTIL_H
#define TASKBUS_PLUGIN_UTIL_H

#include <taskbus/plugin.h>

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- clocks ---------------------------------------------------------------- */

#if defined(CLOCK_MONOTONIC)
/** Milliseconds of CLOCK_MONOTONIC: for deadlines and intervals, which must
 *  not jump when the wall clock is set. Needs POSIX (see the file comment). */
static inline int64_t tb_pu_mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
#endif

/** Unix epoch milliseconds of the wall clock, as tb_plugin_result_t's
 *  started_ms and finished_ms want them. Without POSIX clocks or C11's
 *  timespec_get() it falls back to whole seconds. */
static inline int64_t tb_pu_wall_ms(void) {
#if defined(CLOCK_REALTIME)
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#elif defined(TIME_UTC) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#else
        return (int64_t)time(NULL) * 1000;
#endif
}

/* ---- the error buffer -------------------------------------------------------- */

/**
 * @brief Write a printf-style reason into a caller-owned error buffer.
 * @param errbuf the buffer the host passed (init(), start()); may be NULL
 * @param errbuf_size its size; 0 writes nothing
 * @returns TB_PLUGIN_ERROR, so that `return tb_pu_fail(errbuf, size, ...);`
 *          both explains and fails.
 */
static inline int tb_pu_fail(char *errbuf, size_t errbuf_size, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static inline int tb_pu_fail(char *errbuf, size_t errbuf_size, const char *fmt, ...) {
        if (errbuf && errbuf_size > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(errbuf, errbuf_size, fmt, ap);
                va_end(ap);
        }
        return TB_PLUGIN_ERROR;
}

/* ---- key/values: config, executor options, policy ---------------------------- */

/**
 * @brief The value of \p key among \p n pairs (the first one so named).
 * @returns the host-owned value ("" for a pair whose value is NULL), or NULL
 *          when no pair has that key. \p kv may be NULL when \p n is 0.
 */
static inline const char *tb_pu_kv_get(const tb_plugin_kv_t *kv, size_t n,
                                       const char *key) {
        for (size_t i = 0; kv && i < n; i++)
                if (kv[i].key && !strcmp(kv[i].key, key))
                        return kv[i].value ? kv[i].value : "";
        return NULL;
}

/** \p key as a decimal integer (as the host normalises TB_PLUGIN_CONF_INT and
 *  TB_PLUGIN_CONF_DURATION keys), or \p dflt when absent. */
static inline int64_t tb_pu_kv_i64(const tb_plugin_kv_t *kv, size_t n, const char *key,
                                   int64_t dflt) {
        const char *v = tb_pu_kv_get(kv, n, key);
        return v ? (int64_t)strtoll(v, NULL, 10) : dflt;
}

/** True when \p key is "true" (the host's normalised TB_PLUGIN_CONF_BOOL). */
static inline int tb_pu_kv_true(const tb_plugin_kv_t *kv, size_t n, const char *key) {
        const char *v = tb_pu_kv_get(kv, n, key);
        return v && !strcmp(v, "true");
}

/** The task's executor option \p key (see tb_pu_kv_get()). */
static inline const char *tb_pu_option(const tb_plugin_run_t *run, const char *key) {
        return tb_pu_kv_get(run->options, run->n_options, key);
}

/** Whether the host passed a security group policy at all (ABI 1.1 and
 *  later). Without one, allow nothing that needs a policy. */
static inline int tb_pu_has_policy(const tb_plugin_run_t *run) {
        return TB_PLUGIN_HAS_FIELD(run, tb_plugin_run_t, n_policy);
}

/** The operator's policy value \p key for the run's security group (see
 *  tb_pu_kv_get()); NULL when the group does not set it or the host is
 *  ABI 1.0. For the repeated "images" key, walk run->policy yourself. */
static inline const char *tb_pu_policy(const tb_plugin_run_t *run, const char *key) {
        if (!tb_pu_has_policy(run))
                return NULL;
        return tb_pu_kv_get(run->policy, run->n_policy, key);
}

/* ---- the task's environment -------------------------------------------------- */

/**
 * @brief Check the name of one of the task's environment additions.
 *
 * A name is letters, digits and '_', not starting with a digit; TASKBUS_*
 * names are reserved for the variables taskbus sets (tb_pu_run_env()).
 * @returns TB_PLUGIN_OK, or TB_PLUGIN_ERROR with the reason in \p errbuf.
 */
static inline int tb_pu_check_env_name(const char *key, char *errbuf, size_t errbuf_size) {
        int ok = key && *key && !(*key >= '0' && *key <= '9');
        for (const char *p = key; ok && *p; p++)
                ok = *p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9');
        if (!ok)
                return tb_pu_fail(errbuf, errbuf_size, "environment variable name '%s' "
                                  "is invalid: use letters, digits and _, not starting "
                                  "with a digit", key ? key : "");
        if (!strncmp(key, "TASKBUS_", 8))
                return tb_pu_fail(errbuf, errbuf_size, "environment variable '%s' is "
                                  "reserved: TASKBUS_* variables are set by taskbus",
                                  key);
        return TB_PLUGIN_OK;
}

/** How many variables tb_pu_run_env() sets. */
#define TB_PU_RUN_ENV_N 4

/** The TASKBUS_* variables of a run; filled by tb_pu_run_env(). The pairs
 *  point into the struct itself and into the run: do not copy the struct,
 *  and use it while the run is valid. */
typedef struct tb_pu_run_env {
        tb_plugin_kv_t vars[TB_PU_RUN_ENV_N];
        char nominal[40];
        char attempt[16];
} tb_pu_run_env_t;

/**
 * @brief The variables every plugin gives a task, after the task's own:
 *        TASKBUS_RUN_ID, TASKBUS_TASK_ID, TASKBUS_NOMINAL_TIME (RFC 3339 UTC,
 *        tb_plugin_time_format()) and TASKBUS_ATTEMPT, in that order.
 */
static inline void tb_pu_run_env(const tb_plugin_run_t *run, tb_pu_run_env_t *e) {
        tb_plugin_time_format(run->nominal_time_ms, e->nominal);
        snprintf(e->attempt, sizeof(e->attempt), "%d", (int)run->attempt);
        e->vars[0].key = "TASKBUS_RUN_ID";
        e->vars[0].value = run->run_id ? run->run_id : "";
        e->vars[1].key = "TASKBUS_TASK_ID";
        e->vars[1].value = run->task_id ? run->task_id : "";
        e->vars[2].key = "TASKBUS_NOMINAL_TIME";
        e->vars[2].value = e->nominal;
        e->vars[3].key = "TASKBUS_ATTEMPT";
        e->vars[3].value = e->attempt;
}

/* ---- cancel requests ----------------------------------------------------------- */

/** A run's cancel request: what cancel() records for the thread that drives
 *  the run. Guard it with the plugin's own mutex (the one that guards the
 *  list cancel() finds the run in). */
typedef struct tb_pu_cancel {
        int requested;
        char reason[200];
} tb_pu_cancel_t;

/**
 * @brief Record a cancel request, from cancel() with the guarding mutex held.
 *        A second request keeps the first reason; NULL means "cancelled".
 */
static inline void tb_pu_cancel_request(tb_pu_cancel_t *c, const char *reason) {
        if (c->requested)
                return;
        c->requested = 1;
        snprintf(c->reason, sizeof(c->reason), "%s", reason ? reason : "cancelled");
}

/**
 * @brief Whether a cancel was requested, from the run's own thread.
 * @param c the request
 * @param lock the mutex guarding it: taken and released here
 * @param reason out: a copy of the reason when requested (may be NULL)
 * @param size its size
 */
static inline int tb_pu_cancel_requested(const tb_pu_cancel_t *c, pthread_mutex_t *lock,
                                         char *reason, size_t size) {
        pthread_mutex_lock(lock);
        int requested = c->requested;
        if (requested && reason && size > 0) {
                /* memcpy, not snprintf: copying into a smaller buffer is
                 * meant, and must not trip -Wformat-truncation in plugins. */
                size_t n = strlen(c->reason);
                if (n >= size)
                        n = size - 1;
                memcpy(reason, c->reason, n);
                reason[n] = '\0';
        }
        pthread_mutex_unlock(lock);
        return requested;
}

/* ---- results ------------------------------------------------------------------- */

/**
 * @brief Record how a run ended: \p status into \p res and a printf-style
 *        reason into \p msg (the buffer that later becomes res->error).
 */
static inline void tb_pu_outcome(tb_plugin_result_t *res, int status, char *msg,
                                 size_t msg_size, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static inline void tb_pu_outcome(tb_plugin_result_t *res, int status, char *msg,
                                 size_t msg_size, const char *fmt, ...) {
        res->status = status;
        if (msg && msg_size > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(msg, msg_size, fmt, ap);
                va_end(ap);
        }
}

/**
 * @brief Report a run's result to the host: stamps finished_ms with the wall
 *        clock when it is still 0, sets error to \p msg (NULL when \p msg is
 *        NULL or empty), then calls host->finished(). After this returns
 *        \p run may be freed by the host.
 * @locks call with no lock of yours held (plugin.h, "Threading model").
 */
static inline void tb_pu_finish(const tb_plugin_host_t *host, const tb_plugin_run_t *run,
                                tb_plugin_result_t *res, const char *msg) {
        if (!res->finished_ms)
                res->finished_ms = tb_pu_wall_ms();
        res->error = msg && *msg ? msg : NULL;
        host->finished(host, run, res);
}

/* ---- the unit grammar: durations and sizes ------------------------------------ */

/** The longest duration tb_pu_parse_duration() accepts: 1000 years of 365
 *  days, in milliseconds. */
#define TB_PU_DURATION_MAX_MS ((int64_t)365 * 1000 * 86400 * 1000)

/** Where the decimal number at \p p ("12", "1.5") ends; \p p itself if there
 *  is none ("x", ".5", "1."). */
static inline const char *tb_pu_number_end(const char *p) {
        const char *q = p;
        if (!(*q >= '0' && *q <= '9'))
                return p;
        while (*q >= '0' && *q <= '9')
                q++;
        if (*q != '.')
                return q;
        if (!(q[1] >= '0' && q[1] <= '9'))
                return p;
        for (q++; *q >= '0' && *q <= '9'; q++)
                ;
        return q;
}

/**
 * @brief Scale the decimal number at \p p (up to \p end, see
 *        tb_pu_number_end()) by \p unit, exactly, into *\p out.
 *
 * The fraction is kept as frac/scale (scale = 10^digits, at most 10^9; more
 * digits must be zeros) and multiplied as frac * (q * scale + r) / scale
 * with q = unit / scale, r = unit % scale, so no product exceeds int64_t:
 * frac * q < unit and frac * r < 10^18.
 * @returns 0; -1 not a number; -2 does not fit in int64_t; -3 not a whole
 *          number of the base unit (e.g. "1.5" bytes).
 */
static inline int tb_pu_scaled_number(const char *p, const char *end, int64_t unit,
                                      int64_t *out) {
        int64_t whole = 0, frac = 0, scale = 1;
        if (p == end || unit <= 0)
                return -1;
        for (; p < end && *p != '.'; p++) {
                int d = *p - '0';
                if (whole > (INT64_MAX - d) / 10)
                        return -2;
                whole = whole * 10 + d;
        }
        for (p += p < end; p < end; p++) { /* the fraction, if any */
                if (scale >= 1000000000) {
                        if (*p != '0')
                                return -3;
                        continue;
                }
                frac = frac * 10 + (*p - '0');
                scale *= 10;
        }
        if (whole > INT64_MAX / unit)
                return -2;
        int64_t v = whole * unit, q = unit / scale, r = unit % scale;
        if ((frac * r) % scale)
                return -3;
        int64_t f = frac * q + frac * r / scale;
        if (v > INT64_MAX - f)
                return -2;
        *out = v + f;
        return 0;
}

/** The message of a tb_pu_scaled_number() error in a duration. */
static inline int tb_pu_duration_numerr(int rc, const char *s, char *err, size_t errsz) {
        if (rc == -2)
                return tb_pu_fail(err, errsz, "duration \"%s\" is too large", s);
        if (rc == -3)
                return tb_pu_fail(err, errsz, "duration \"%s\" is finer than a millisecond",
                                  s);
        return tb_pu_fail(err, errsz, "invalid duration \"%s\": expected a number before "
                          "each unit, like \"30s\", \"1h30m\" or \"PT30S\"", s);
}

/** The ISO 8601 form of tb_pu_parse_duration(); \p s starts with 'P'/'p'. */
static inline int tb_pu_parse_duration_iso(const char *s, int64_t *ms, char *err,
                                           size_t errsz) {
        /* Designators in the order ISO 8601 requires; M means months before
         * T and minutes after it. */
        static const struct {
                char c;
                char time;
                int64_t unit; /* 0: refused */
        } des[] = {
                {'Y', 0, 0},          {'M', 0, 0},          {'W', 0, 7 * 86400000LL},
                {'D', 0, 86400000LL}, {'H', 1, 3600000LL},  {'M', 1, 60000LL},
                {'S', 1, 1000LL},
        };
        const size_t ndes = sizeof(des) / sizeof(des[0]);
        const char *p = s + 1;
        int in_time = 0, any = 0;
        size_t next = 0;
        int64_t total = 0;
        while (*p) {
                if (*p == 'T' || *p == 't') {
                        if (in_time)
                                goto bad;
                        in_time = 1;
                        p++;
                        if (!*p)
                                return tb_pu_fail(err, errsz, "ISO 8601 duration \"%s\" "
                                                  "has a 'T' but no hours, minutes or "
                                                  "seconds after it", s);
                        continue;
                }
                const char *num = p;
                p = tb_pu_number_end(num);
                if (p == num)
                        goto bad;
                char c = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
                size_t i;
                for (i = next; i < ndes; i++)
                        if (des[i].c == c && des[i].time == in_time)
                                break;
                if (i == ndes)
                        goto bad;
                if (!des[i].unit)
                        return tb_pu_fail(err, errsz, "ISO 8601 duration \"%s\": %s are "
                                          "not supported because their length varies; "
                                          "use weeks (W), days (D) or smaller units", s,
                                          c == 'Y' ? "years" : "months");
                int64_t part;
                int rc = tb_pu_scaled_number(num, p, des[i].unit, &part);
                if (rc)
                        return tb_pu_duration_numerr(rc, s, err, errsz);
                if (total > INT64_MAX - part)
                        return tb_pu_duration_numerr(-2, s, err, errsz);
                total += part;
                next = i + 1;
                any = 1;
                p++;
        }
        if (!any)
                return tb_pu_fail(err, errsz, "ISO 8601 duration \"%s\" has no components; "
                                  "expected e.g. \"PT30S\" or \"P1DT2H\"", s);
        *ms = total;
        return TB_PLUGIN_OK;
bad:
        return tb_pu_fail(err, errsz, "invalid ISO 8601 duration \"%s\": expected "
                          "P[nW][nD][T[nH][nM][nS]], like \"PT30S\" or \"P1DT2H\"", s);
}

/**
 * @brief Parse a duration of the unit grammar (see the file comment).
 * @param s the text; NULL or "" is refused
 * @param ms out: milliseconds, written only on success
 * @param err caller-owned buffer for a user-readable reason (may be NULL)
 * @param errsz its size
 * @returns TB_PLUGIN_OK, or TB_PLUGIN_ERROR with the reason in \p err.
 */
static inline int tb_pu_parse_duration(const char *s, int64_t *ms, char *err,
                                       size_t errsz) {
        static const struct {
                const char *name;
                int64_t unit;
        } units[] = {
                {"ms", 1},         {"s", 1000LL},       {"m", 60000LL},
                {"h", 3600000LL},  {"d", 86400000LL},   {"w", 7 * 86400000LL},
        };
        const size_t nunits = sizeof(units) / sizeof(units[0]);
        if (!s || !*s)
                return tb_pu_fail(err, errsz, "empty duration: expected e.g. \"500ms\", "
                                  "\"30s\", \"5m\", \"2h\", \"7d\", \"1w\", \"PT30S\" or "
                                  "a number of seconds");
        if (*s == '-')
                return tb_pu_fail(err, errsz, "duration \"%s\" is negative", s);
        int64_t total = 0;
        if (*s == 'P' || *s == 'p') {
                if (tb_pu_parse_duration_iso(s, &total, err, errsz) != TB_PLUGIN_OK)
                        return TB_PLUGIN_ERROR;
        } else if (!*tb_pu_number_end(s) && tb_pu_number_end(s) != s) {
                /* A bare number is seconds, as in the config file's integer form. */
                int rc = tb_pu_scaled_number(s, tb_pu_number_end(s), 1000, &total);
                if (rc)
                        return tb_pu_duration_numerr(rc, s, err, errsz);
        } else {
                for (const char *p = s; *p;) {
                        const char *num = p;
                        p = tb_pu_number_end(num);
                        if (p == num)
                                return tb_pu_duration_numerr(-1, s, err, errsz);
                        const char *u = p;
                        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
                                p++;
                        size_t ulen = (size_t)(p - u), i;
                        if (!ulen)
                                return tb_pu_fail(err, errsz, "duration \"%s\": a number "
                                                  "needs a unit when combined with others "
                                                  "(ms, s, m, h, d, w)", s);
                        for (i = 0; i < nunits; i++)
                                if (strlen(units[i].name) == ulen &&
                                    !strncmp(units[i].name, u, ulen))
                                        break;
                        if (i == nunits)
                                return tb_pu_fail(err, errsz, "duration \"%s\": unknown "
                                                  "unit '%.*s'; valid units: ms, s, m, h, "
                                                  "d, w (months and years are not "
                                                  "supported: their length varies)", s,
                                                  (int)(ulen > 16 ? 16 : ulen), u);
                        int64_t part;
                        int rc = tb_pu_scaled_number(num, u, units[i].unit, &part);
                        if (rc)
                                return tb_pu_duration_numerr(rc, s, err, errsz);
                        if (total > INT64_MAX - part)
                                return tb_pu_duration_numerr(-2, s, err, errsz);
                        total += part;
                }
        }
        if (total > TB_PU_DURATION_MAX_MS)
                return tb_pu_duration_numerr(-2, s, err, errsz);
        *ms = total;
        return TB_PLUGIN_OK;
}

/**
 * @brief Parse a size of the unit grammar (see the file comment).
 * @param s the text; NULL or "" is refused
 * @param bytes out: bytes, written only on success
 * @param err caller-owned buffer for a user-readable reason (may be NULL)
 * @param errsz its size
 * @returns TB_PLUGIN_OK, or TB_PLUGIN_ERROR with the reason in \p err.
 */
static inline int tb_pu_parse_size(const char *s, int64_t *bytes, char *err,
                                   size_t errsz) {
        static const struct {
                const char *name;
                int64_t unit;
        } units[] = {
                {"", 1},
                {"B", 1},
                {"KiB", 1LL << 10},
                {"MiB", 1LL << 20},
                {"GiB", 1LL << 30},
                {"TiB", 1LL << 40},
                {"KB", 1000LL},
                {"MB", 1000LL * 1000},
                {"GB", 1000LL * 1000 * 1000},
                {"TB", 1000LL * 1000 * 1000 * 1000},
                /* Docker-style single letters, either case: powers of 1024. */
                {"b", 1},
                {"k", 1LL << 10},
                {"K", 1LL << 10},
                {"m", 1LL << 20},
                {"M", 1LL << 20},
                {"g", 1LL << 30},
                {"G", 1LL << 30},
                {"t", 1LL << 40},
                {"T", 1LL << 40},
        };
        if (!s || !*s)
                return tb_pu_fail(err, errsz, "empty size: expected a number of bytes or "
                                  "e.g. \"256KiB\", \"64MiB\", \"1GiB\"");
        if (*s == '-')
                return tb_pu_fail(err, errsz, "size \"%s\" is negative", s);
        const char *end = tb_pu_number_end(s), *u = end;
        if (end != s) {
                while (*u == ' ')
                        u++;
                for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
                        if (strcmp(u, units[i].name))
                                continue;
                        int rc = tb_pu_scaled_number(s, end, units[i].unit, bytes);
                        if (rc == -2)
                                return tb_pu_fail(err, errsz, "size \"%s\" is too large", s);
                        if (rc == -3)
                                return tb_pu_fail(err, errsz, "size \"%s\" is not a whole "
                                                  "number of bytes", s);
                        return TB_PLUGIN_OK;
                }
        }
        return tb_pu_fail(err, errsz, "invalid size \"%s\": expected a number of bytes, "
                          "optionally followed by B, KiB, MiB, GiB, TiB (powers of 1024) or "
                          "KB, MB, GB, TB (powers of 1000)", s);
}

#ifdef __cplusplus
}
#endif

#endif /* TASKBUS_PLUGIN_UTIL_H */
