/**
 * @file task/task.c
 * @brief The task model: one validator for every interface (REST, Kafka
 *        commands, CLI), the normalized JSON form, the Avro TaskSpec mapping
 *        and the conversion to a tb_schedule_t.
 *
 * Validation walks the fields in a fixed order so the same bad body always
 * yields the same error. Every message starts with the field path and says
 * what is allowed, because it is returned verbatim to REST clients. Input
 * strings quoted in messages are cut short and the final message is made
 * valid UTF-8, so an error about garbage never becomes garbage itself.
 */
#include "task/task.h"
#include "config/config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_TASK_SEC INT64_C(1000)
#define TB_TASK_MIN (60 * TB_TASK_SEC)
#define TB_TASK_HOUR (60 * TB_TASK_MIN)
#define TB_TASK_DAY (24 * TB_TASK_HOUR)

#define TB_TASK_ARG_MAX 4096            /* bytes per argv entry */
#define TB_TASK_OPTION_VALUE_MAX 4096   /* bytes per executor option value */
#define TB_TASK_OPTION_KEY_MAX 128      /* bytes per executor option key */
#define TB_TASK_LABEL_KEY_MAX 63
#define TB_TASK_IDENT_MAX 64            /* executor and region names */
#define TB_TASK_PAST_TOLERANCE_MS 1000  /* clock skew between client and API */
#define TB_TASK_EXPIRY_DEFAULT_MS TB_TASK_HOUR
#define TB_TASK_EXPIRY_MAX_MS (7 * TB_TASK_DAY)
#define TB_TASK_BACKOFF_DEFAULT_MS (10 * TB_TASK_SEC)
#define TB_TASK_BACKOFF_MAX_DEFAULT_MS (10 * TB_TASK_MIN)
#define TB_TASK_LOG_RETENTION_FALLBACK_MS (30 * TB_TASK_DAY)

/** Writable top-level fields, in the order of the normalized form. */
static const char *const tb_task_fields[] = {
        "name",     "script",        "argv",   "security_group", "user_id",
        "schedule", "execution_time", "expiry", "executor",       "executor_options",
        "retries",  "overlap",       "misfire", "jitter",         "expires_at",
        "log_retention", "paused",   "labels", "home_region",     NULL,
};

/** Fields a GET returns that a PUT may echo back: ignored on input. */
static const char *const tb_task_readonly[] = {
        "id", "version", "created_at", "updated_at", "created_by", "next_fire_at", NULL,
};

static const char *const tb_task_schedule_fields[] = {
        "once", "every", "cron", "timezone", "start_at", "end_at",
        "dst_gap", "dst_overlap", NULL,
};

static const char *const tb_task_retries_fields[] = {
        "max_attempts", "backoff", "backoff_max", NULL,
};

static const char *const tb_task_overlap_names[] = {"forbid", "allow", "replace", NULL};
static const char *const tb_task_overlap_syms[] = {"FORBID", "ALLOW", "REPLACE", NULL};
static const char *const tb_task_misfire_names[] = {"run_once", "skip", "run_all", NULL};
static const char *const tb_task_misfire_syms[] = {"RUN_ONCE", "SKIP", "RUN_ALL", NULL};
static const char *const tb_task_gap_names[] = {"shift", "skip", NULL};
static const char *const tb_task_gap_syms[] = {"SHIFT", "SKIP", NULL};
static const char *const tb_task_olap_names[] = {"first", "last", "both", NULL};
static const char *const tb_task_olap_syms[] = {"FIRST", "LAST", "BOTH", NULL};

/* ---- UTF-8 ------------------------------------------------------------- */

/**
 * Decode one UTF-8 sequence at \p s (\p len bytes available).
 * @returns its length (1-4) with *\p cp set, or 0 if invalid (overlong,
 *          surrogate, beyond U+10FFFF, truncated).
 */
static size_t tb_task_utf8_next(const unsigned char *s, size_t len, uint32_t *cp) {
        unsigned char c = s[0];
        size_t n;
        uint32_t v, min;
        if (c < 0x80) {
                *cp = c;
                return 1;
        } else if ((c & 0xE0) == 0xC0) {
                n = 2, v = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
                n = 3, v = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
                n = 4, v = c & 0x07, min = 0x10000;
        } else {
                return 0;
        }
        if (len < n)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                v = (v << 6) | (s[i] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return 0;
        *cp = v;
        return n;
}

/** C0, DEL and C1 controls. */
static bool tb_task_is_control(uint32_t cp) {
        return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

/** Replace every invalid UTF-8 byte of \p s with '?' and control
 *  characters with ' ', in place, so the text is safe in a JSON reply. */
static void tb_task_sanitize(char *s) {
        size_t len = strlen(s);
        unsigned char *p = (unsigned char *)s;
        size_t i = 0;
        while (i < len) {
                uint32_t cp;
                size_t n = tb_task_utf8_next(p + i, len - i, &cp);
                if (!n) {
                        p[i++] = '?';
                        continue;
                }
                if (n == 1 && tb_task_is_control(cp))
                        p[i] = ' ';
                i += n;
        }
}

/* ---- errors ------------------------------------------------------------ */

static tb_err_t tb_task_vfail(tb_task_err_t *err, tb_err_t code, const char *field,
                              const char *fmt, va_list ap) {
        if (err) {
                tb_snprintf(err->field, sizeof(err->field), "%s", field);
                vsnprintf(err->message, sizeof(err->message), fmt, ap);
                tb_task_sanitize(err->field);
                tb_task_sanitize(err->message);
        }
        return code;
}

static tb_err_t tb_task_fail(tb_task_err_t *err, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static tb_err_t tb_task_fail(tb_task_err_t *err, const char *field, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        tb_err_t rc = tb_task_vfail(err, TB_ERR_INVALID, field, fmt, ap);
        va_end(ap);
        return rc;
}

static tb_err_t tb_task_fail_code(tb_task_err_t *err, tb_err_t code, const char *field,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static tb_err_t tb_task_fail_code(tb_task_err_t *err, tb_err_t code, const char *field,
                                  const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        tb_err_t rc = tb_task_vfail(err, code, field, fmt, ap);
        va_end(ap);
        return rc;
}

static const char *tb_task_jtype(const json_t *v) {
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "an object";
        case JSON_ARRAY:
                return "an array";
        case JSON_STRING:
                return "a string";
        case JSON_INTEGER:
                return "an integer";
        case JSON_REAL:
                return "a number";
        case JSON_TRUE:
        case JSON_FALSE:
                return "a boolean";
        case JSON_NULL:
        default:
                return "null";
        }
}

static tb_err_t tb_task_type_fail(tb_task_err_t *err, const char *field,
                                  const char *expected, const json_t *v) {
        return tb_task_fail(err, field, "field '%s': expected %s, got %s", field, expected,
                            tb_task_jtype(v));
}

/** Levenshtein distance, for "did you mean" (short strings only). */
static size_t tb_task_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (la > 40 || lb > 40)
                return 99;
        size_t row[41];
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t diag = row[0];
                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t up = row[j];
                        size_t best = diag + (tolower((unsigned char)a[i - 1]) !=
                                              tolower((unsigned char)b[j - 1]));
                        if (up + 1 < best)
                                best = up + 1;
                        if (row[j - 1] + 1 < best)
                                best = row[j - 1] + 1;
                        row[j] = best;
                        diag = up;
                }
        }
        return row[lb];
}

static bool tb_task_in(const char *const *list, const char *s) {
        for (size_t i = 0; list[i]; i++)
                if (!strcmp(list[i], s))
                        return true;
        return false;
}

/** "unknown field" error: names the key, suggests a close valid one and
 *  lists them all. \p path is "" at the top level or "schedule". */
static tb_err_t tb_task_unknown(tb_task_err_t *err, const char *path, const char *key,
                                const char *const *valid, bool readonly_note) {
        char field[128], list[400], hint[96] = "";
        size_t len = 0;
        const char *best = NULL;
        size_t best_d = 3;
        list[0] = '\0';
        for (size_t i = 0; valid[i]; i++) {
                int n = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                 valid[i]);
                if (n > 0 && (size_t)n < sizeof(list) - len)
                        len += (size_t)n;
                size_t d = tb_task_distance(key, valid[i]);
                if (d < best_d) {
                        best_d = d;
                        best = valid[i];
                }
        }
        if (best)
                tb_snprintf(hint, sizeof(hint), " (did you mean '%s'?)", best);
        if (!*key)
                tb_snprintf(field, sizeof(field), "%s", *path ? path : "task");
        else if (*path)
                tb_snprintf(field, sizeof(field), "%s.%.64s", path, key);
        else
                tb_snprintf(field, sizeof(field), "%.64s", key);
        return tb_task_fail(err, field, "unknown field '%.64s'%s; valid fields%s%s: %s%s",
                            key, hint, *path ? " in " : "", path, list,
                            readonly_note ? " (id, version, created_at, updated_at, "
                                            "created_by and next_fire_at are read-only "
                                            "and ignored)"
                                          : "");
}

/** Reject keys of \p obj not in \p valid (nor in \p also, if given). */
static tb_err_t tb_task_check_keys(const json_t *obj, const char *path,
                                   const char *const *valid, const char *const *also,
                                   tb_task_err_t *err) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)obj, key, v) {
                if (tb_task_in(valid, key) || (also && tb_task_in(also, key)))
                        continue;
                return tb_task_unknown(err, path, key, valid, also != NULL);
        }
        return TB_OK;
}

/* ---- typed getters ----------------------------------------------------- */

/** A present, non-null member, or NULL. */
static json_t *tb_task_get(const json_t *obj, const char *key) {
        json_t *v = json_object_get(obj, key);
        return json_is_null(v) ? NULL : v;
}

/**
 * Check that \p v is a string without NUL bytes in valid UTF-8; give its
 * value, byte length and code point count. Controls are refused unless
 * \p controls_ok.
 */
static tb_err_t tb_task_string(const json_t *v, const char *field, bool controls_ok,
                               const char **s, size_t *bytes, size_t *chars,
                               tb_task_err_t *err) {
        if (!json_is_string(v))
                return tb_task_type_fail(err, field, "a string", v);
        const char *str = json_string_value(v);
        size_t len = json_string_length(v);
        if (strlen(str) != len)
                return tb_task_fail(err, field, "%s: contains a NUL character", field);
        size_t i = 0, n_cp = 0;
        while (i < len) {
                uint32_t cp;
                size_t n = tb_task_utf8_next((const unsigned char *)str + i, len - i, &cp);
                if (!n)
                        return tb_task_fail(err, field,
                                            "%s: invalid UTF-8 at byte %zu", field, i);
                if (!controls_ok && tb_task_is_control(cp))
                        return tb_task_fail(err, field,
                                            "%s: control character U+%04X at byte %zu is "
                                            "not allowed",
                                            field, (unsigned)cp, i);
                i += n;
                n_cp++;
        }
        *s = str;
        if (bytes)
                *bytes = len;
        if (chars)
                *chars = n_cp;
        return TB_OK;
}

/** An identifier: 1..\p max characters of [A-Za-z0-9._-] (plus '/' when
 *  \p slash). */
static tb_err_t tb_task_ident(const json_t *v, const char *field, size_t max, bool slash,
                              const char **out, tb_task_err_t *err) {
        const char *s;
        size_t len;
        tb_err_t rc = tb_task_string(v, field, true, &s, &len, NULL, err);
        if (rc)
                return rc;
        const char *allowed = slash ? "letters, digits, '.', '_', '-' and '/'"
                                    : "letters, digits, '.', '_' and '-'";
        if (len == 0 || len > max)
                return tb_task_fail(err, field, "%s: must be 1 to %zu characters (%s), got %zu",
                                    field, max, allowed, len);
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (!isalnum(c) && c != '.' && c != '_' && c != '-' && !(slash && c == '/'))
                        return tb_task_fail(err, field,
                                            "%s: '%.64s' contains '%c' at position %zu; "
                                            "allowed are %s",
                                            field, s, (c >= 0x20 && c < 0x7F) ? c : '?',
                                            i + 1, allowed);
        }
        *out = s;
        return TB_OK;
}

/** A duration: a string tb_units_duration_parse() accepts, or integer seconds. */
static tb_err_t tb_task_duration(const json_t *v, const char *field, int64_t *ms,
                                 tb_task_err_t *err) {
        if (json_is_integer(v)) {
                json_int_t n = json_integer_value(v);
                if (n < 0)
                        return tb_task_fail(err, field, "%s: %lld is negative; give a "
                                            "duration like \"30s\" or a number of seconds",
                                            field, (long long)n);
                if (n > TB_SCHEDULE_MAX_MS / 1000)
                        return tb_task_fail(err, field, "%s: %lld seconds is too large",
                                            field, (long long)n);
                *ms = (int64_t)n * 1000;
                return TB_OK;
        }
        if (!json_is_string(v))
                return tb_task_type_fail(err, field,
                                         "a duration string like \"30s\" or \"PT1H\" or "
                                         "an integer number of seconds",
                                         v);
        const char *s;
        tb_err_t rc = tb_task_string(v, field, false, &s, NULL, NULL, err);
        if (rc)
                return rc;
        char msg[256];
        if (tb_units_duration_parse(s, ms, msg, sizeof(msg)))
                return tb_task_fail(err, field, "%s: %s", field, msg);
        return TB_OK;
}

/** An RFC 3339 instant within what a schedule can name. */
static tb_err_t tb_task_time(const json_t *v, const char *field, int64_t *ms,
                             tb_task_err_t *err) {
        if (!json_is_string(v))
                return tb_task_type_fail(err, field,
                                         "an RFC 3339 time string like "
                                         "\"2026-01-31T23:59:00Z\"",
                                         v);
        const char *s;
        tb_err_t rc = tb_task_string(v, field, false, &s, NULL, NULL, err);
        if (rc)
                return rc;
        char msg[256];
        if (tb_time_parse(s, ms, msg, sizeof(msg)))
                return tb_task_fail(err, field, "%s: %s", field, msg);
        if (*ms <= 0 || *ms > TB_SCHEDULE_MAX_MS)
                return tb_task_fail(err, field,
                                    "%s: '%.64s' is out of range (1970-01-01T00:00:00Z "
                                    "exclusive to 9999-12-31T23:59:59Z)",
                                    field, s);
        return TB_OK;
}

/** One of \p names (case-insensitive); *\p idx is left alone when absent. */
static tb_err_t tb_task_enum(const json_t *v, const char *field, const char *const *names,
                             int *idx, tb_task_err_t *err) {
        if (!v)
                return TB_OK;
        char list[128] = "";
        size_t len = 0;
        for (size_t i = 0; names[i]; i++) {
                int n = snprintf(list + len, sizeof(list) - len, "%s'%s'", i ? ", " : "",
                                 names[i]);
                if (n > 0 && (size_t)n < sizeof(list) - len)
                        len += (size_t)n;
        }
        if (!json_is_string(v))
                return tb_task_fail(err, field, "field '%s': expected a string, one of %s; "
                                    "got %s", field, list, tb_task_jtype(v));
        const char *s = json_string_value(v);
        for (int i = 0; names[i]; i++) {
                if (!strcasecmp(s, names[i]) && strlen(s) == json_string_length(v)) {
                        *idx = i;
                        return TB_OK;
                }
        }
        return tb_task_fail(err, field, "%s: '%.64s' is not allowed; use one of %s", field,
                            s, list);
}

/* ---- output helpers ---------------------------------------------------- */

/** Set \p key to \p v (stolen), remembering an allocation failure. */
static void tb_task_put(json_t *obj, const char *key, json_t *v, bool *oom) {
        if (!v || json_object_set_new(obj, key, v))
                *oom = true;
}

static json_t *tb_task_json_time(int64_t ms) {
        char buf[32];
        if (!ms)
                return json_null();
        tb_time_format(ms, buf);
        return json_string(buf);
}

static json_t *tb_task_json_duration(int64_t ms) {
        char buf[48];
        tb_units_duration_format_iso8601(ms, buf);
        return json_string(buf);
}

/* ---- validation -------------------------------------------------------- */

static tb_err_t tb_task_v_schedule(const json_t *in, const tb_task_vctx_t *vctx,
                                   json_t *out, int64_t *period_ms, tb_task_err_t *err,
                                   bool *oom) {
        json_t *sched = tb_task_get(in, "schedule");
        json_t *exec_time = tb_task_get(in, "execution_time");
        json_t *sv = json_object();
        json_t *once = NULL, *every = NULL, *cron = NULL;
        tb_err_t rc;
        if (!sv) {
                *oom = true;
                return TB_OK;
        }
        *period_ms = 0;

        if (sched && exec_time) {
                rc = tb_task_fail(err, "execution_time",
                                  "execution_time: give either schedule or execution_time "
                                  "(the older form of {\"once\": ...}), not both");
                goto fail;
        }
        if (!sched && !exec_time) {
                rc = tb_task_fail(err, "schedule",
                                  "schedule: required: one of once, every, cron (e.g. "
                                  "{\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"})");
                goto fail;
        }
        const char *pfx = "schedule";
        if (exec_time) {
                once = exec_time;
                pfx = "execution_time";
        } else {
                if (!json_is_object(sched)) {
                        rc = tb_task_type_fail(err, "schedule",
                                               "an object with one of once, every, cron",
                                               sched);
                        goto fail;
                }
                if ((rc = tb_task_check_keys(sched, "schedule", tb_task_schedule_fields,
                                             NULL, err)))
                        goto fail;
                once = tb_task_get(sched, "once");
                every = tb_task_get(sched, "every");
                cron = tb_task_get(sched, "cron");
                int kinds = !!once + !!every + !!cron;
                if (kinds == 0) {
                        rc = tb_task_fail(err, "schedule",
                                          "schedule: required: one of once, every, cron");
                        goto fail;
                }
                if (kinds > 1) {
                        rc = tb_task_fail(err, "schedule",
                                          "schedule: give exactly one of once, every, cron "
                                          "(got %s%s%s%s%s)",
                                          once ? "once" : "", once ? ", " : "",
                                          every ? "every" : "", every && cron ? ", " : "",
                                          cron ? "cron" : "");
                        goto fail;
                }
        }

        char field[64];
        int64_t start_at = 0, end_at = 0;
        json_t *tzv = sched ? tb_task_get(sched, "timezone") : NULL;
        json_t *startv = sched ? tb_task_get(sched, "start_at") : NULL;
        json_t *endv = sched ? tb_task_get(sched, "end_at") : NULL;
        if (tzv && !cron) {
                rc = tb_task_fail(err, "schedule.timezone",
                                  "schedule.timezone: only applies to cron schedules (once "
                                  "takes an RFC 3339 time with its own offset)");
                goto fail;
        }
        if (once && (startv || endv)) {
                const char *f = startv ? "schedule.start_at" : "schedule.end_at";
                rc = tb_task_fail(err, f, "%s: only applies to every and cron schedules", f);
                goto fail;
        }

        if (once) {
                int64_t at;
                tb_snprintf(field, sizeof(field), "%s%s", pfx, exec_time ? "" : ".once");
                if ((rc = tb_task_time(once, field, &at, err)))
                        goto fail;
                if (at < vctx->now_ms - TB_TASK_PAST_TOLERANCE_MS) {
                        char a[32], b[32];
                        tb_time_format(at, a);
                        tb_time_format(vctx->now_ms, b);
                        rc = tb_task_fail(err, field,
                                          "%s: %s is in the past (now is %s); give a "
                                          "future time",
                                          field, a, b);
                        goto fail;
                }
                tb_task_put(sv, "once", tb_task_json_time(at), oom);
        } else if (every) {
                int64_t ms;
                if ((rc = tb_task_duration(every, "schedule.every", &ms, err)))
                        goto fail;
                if (ms < TB_SCHEDULE_MIN_EVERY_MS) {
                        rc = tb_task_fail(err, "schedule.every",
                                          "schedule.every: the period must be at least 1 s "
                                          "(got %lld ms)",
                                          (long long)ms);
                        goto fail;
                }
                if (ms > TB_SCHEDULE_MAX_MS) {
                        rc = tb_task_fail(err, "schedule.every",
                                          "schedule.every: the period is too large");
                        goto fail;
                }
                *period_ms = ms;
                tb_task_put(sv, "every", tb_task_json_duration(ms), oom);
        } else {
                const char *expr, *zone = "UTC";
                char msg[256];
                tb_cron_t *c = NULL;
                const tb_tz_t *tz = NULL;
                if ((rc = tb_task_string(cron, "schedule.cron", false, &expr, NULL, NULL,
                                         err)))
                        goto fail;
                if (tb_cron_parse(expr, &c, msg, sizeof(msg))) {
                        const char *m = !strncmp(msg, "cron: ", 6) ? msg + 6 : msg;
                        rc = tb_task_fail(err, "schedule.cron", "schedule.cron: %s", m);
                        goto fail;
                }
                tb_cron_free(c);
                if (tzv && (rc = tb_task_string(tzv, "schedule.timezone", false, &zone,
                                                NULL, NULL, err)))
                        goto fail;
                if (tb_tz_open(zone, &tz, msg, sizeof(msg))) {
                        rc = tb_task_fail(err, "schedule.timezone", "schedule.timezone: %s",
                                          msg);
                        goto fail;
                }
                tb_task_put(sv, "cron", json_string(expr), oom);
                tb_task_put(sv, "timezone", json_string(tb_tz_name(tz)), oom);
        }
        if (!once) {
                if (startv && (rc = tb_task_time(startv, "schedule.start_at", &start_at, err)))
                        goto fail;
                if (endv && (rc = tb_task_time(endv, "schedule.end_at", &end_at, err)))
                        goto fail;
                if (start_at && end_at && end_at <= start_at) {
                        char a[32], b[32];
                        tb_time_format(start_at, a);
                        tb_time_format(end_at, b);
                        rc = tb_task_fail(err, "schedule.end_at",
                                          "schedule.end_at: %s must be after start_at %s", b,
                                          a);
                        goto fail;
                }
                tb_task_put(sv, "start_at", tb_task_json_time(start_at), oom);
                tb_task_put(sv, "end_at", tb_task_json_time(end_at), oom);
        }
        int gap = 0, olap = 0;
        if (sched && ((rc = tb_task_enum(tb_task_get(sched, "dst_gap"), "schedule.dst_gap",
                                         tb_task_gap_names, &gap, err)) ||
                      (rc = tb_task_enum(tb_task_get(sched, "dst_overlap"),
                                         "schedule.dst_overlap", tb_task_olap_names, &olap,
                                         err))))
                goto fail;
        tb_task_put(sv, "dst_gap", json_string(tb_task_gap_names[gap]), oom);
        tb_task_put(sv, "dst_overlap", json_string(tb_task_olap_names[olap]), oom);
        tb_task_put(out, "schedule", sv, oom);
        return TB_OK;
fail:
        json_decref(sv);
        return rc;
}

/** An object of string values (numbers and booleans converted when
 *  \p convert) for executor_options and labels. */
static tb_err_t tb_task_v_map(const json_t *v, const char *fname, bool labels,
                              json_t *out, tb_task_err_t *err, bool *oom) {
        json_t *m = json_object();
        tb_err_t rc;
        if (!m) {
                *oom = true;
                return TB_OK;
        }
        size_t max = labels ? TB_TASK_LABELS_MAX : TB_TASK_OPTIONS_MAX;
        if (v) {
                if (!json_is_object(v)) {
                        rc = tb_task_type_fail(err, fname, "an object of string values", v);
                        goto fail;
                }
                if (json_object_size(v) > max) {
                        rc = tb_task_fail(err, fname, "%s: %zu entries; at most %zu allowed",
                                          fname, json_object_size(v), max);
                        goto fail;
                }
                const char *key;
                json_t *val;
                json_object_foreach((json_t *)v, key, val) {
                        char field[128], num[64];
                        size_t klen = strlen(key);
                        if (*key)
                                tb_snprintf(field, sizeof(field), "%s.%.64s", fname, key);
                        else
                                tb_snprintf(field, sizeof(field), "%s", fname);
                        if (labels) {
                                bool ok = klen >= 1 && klen <= TB_TASK_LABEL_KEY_MAX;
                                for (size_t i = 0; ok && i < klen; i++) {
                                        unsigned char c = (unsigned char)key[i];
                                        ok = isalnum(c) || c == '.' || c == '_' || c == '-' ||
                                             c == '/';
                                }
                                if (!ok) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: label keys are 1 to %d "
                                                          "characters of letters, digits, "
                                                          "'.', '_', '-' and '/'",
                                                          field, TB_TASK_LABEL_KEY_MAX);
                                        goto fail;
                                }
                        } else {
                                bool ok = klen >= 1 && klen <= TB_TASK_OPTION_KEY_MAX;
                                for (size_t i = 0; ok && i < klen; i++)
                                        ok = (unsigned char)key[i] >= 0x20 && key[i] != 0x7F;
                                if (!ok) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: option names are 1 to %d "
                                                          "bytes without control characters",
                                                          field, TB_TASK_OPTION_KEY_MAX);
                                        goto fail;
                                }
                        }
                        const char *s;
                        size_t bytes, chars;
                        if (!labels && json_is_integer(val)) {
                                snprintf(num, sizeof(num), "%lld",
                                         (long long)json_integer_value(val));
                                s = num;
                        } else if (!labels && json_is_real(val)) {
                                snprintf(num, sizeof(num), "%.15g", json_real_value(val));
                                if (strtod(num, NULL) != json_real_value(val))
                                        snprintf(num, sizeof(num), "%.17g",
                                                 json_real_value(val));
                                s = num;
                        } else if (!labels && json_is_boolean(val)) {
                                s = json_is_true(val) ? "true" : "false";
                        } else {
                                if (!json_is_string(val)) {
                                        rc = tb_task_type_fail(err, field,
                                                               labels ? "a string"
                                                                      : "a string, number "
                                                                        "or boolean",
                                                               val);
                                        goto fail;
                                }
                                if ((rc = tb_task_string(val, field, !labels, &s, &bytes,
                                                         &chars, err)))
                                        goto fail;
                                if (labels && chars > TB_TASK_LABEL_LEN_MAX) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: label values are at most %d "
                                                          "characters (got %zu)",
                                                          field, TB_TASK_LABEL_LEN_MAX, chars);
                                        goto fail;
                                }
                                if (!labels && bytes > TB_TASK_OPTION_VALUE_MAX) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: option values are at most %d "
                                                          "bytes (got %zu)",
                                                          field, TB_TASK_OPTION_VALUE_MAX,
                                                          bytes);
                                        goto fail;
                                }
                        }
                        tb_task_put(m, key, json_string(s), oom);
                }
        }
        tb_task_put(out, fname, m, oom);
        return TB_OK;
fail:
        json_decref(m);
        return rc;
}

static tb_err_t tb_task_v_retries(const json_t *v, json_t *out, tb_task_err_t *err,
                                  bool *oom) {
        int64_t attempts = 1, backoff = TB_TASK_BACKOFF_DEFAULT_MS,
                backoff_max = TB_TASK_BACKOFF_MAX_DEFAULT_MS;
        tb_err_t rc;
        if (v) {
                if (!json_is_object(v))
                        return tb_task_type_fail(err, "retries",
                                                 "an object with max_attempts, backoff, "
                                                 "backoff_max",
                                                 v);
                if ((rc = tb_task_check_keys(v, "retries", tb_task_retries_fields, NULL,
                                             err)))
                        return rc;
                json_t *a = tb_task_get(v, "max_attempts");
                if (a) {
                        if (!json_is_integer(a))
                                return tb_task_type_fail(err, "retries.max_attempts",
                                                         "an integer", a);
                        json_int_t n = json_integer_value(a);
                        if (n < 1 || n > TB_TASK_ATTEMPTS_MAX)
                                return tb_task_fail(err, "retries.max_attempts",
                                                    "retries.max_attempts: %lld is out of "
                                                    "range 1 to %d",
                                                    (long long)n, TB_TASK_ATTEMPTS_MAX);
                        attempts = n;
                }
                json_t *b = tb_task_get(v, "backoff");
                if (b && (rc = tb_task_duration(b, "retries.backoff", &backoff, err)))
                        return rc;
                json_t *bm = tb_task_get(v, "backoff_max");
                if (bm && (rc = tb_task_duration(bm, "retries.backoff_max", &backoff_max,
                                                 err)))
                        return rc;
                if (backoff_max < backoff) {
                        char a1[48], a2[48];
                        tb_units_duration_format_iso8601(backoff_max, a1);
                        tb_units_duration_format_iso8601(backoff, a2);
                        /* Only the field the user set is to blame. */
                        const char *f = bm ? "retries.backoff_max" : "retries.backoff";
                        return tb_task_fail(err, f,
                                            "%s: backoff_max %s must be at least backoff %s",
                                            f, a1, a2);
                }
        }
        json_t *r = json_object();
        if (!r) {
                *oom = true;
                return TB_OK;
        }
        tb_task_put(r, "max_attempts", json_integer(attempts), oom);
        tb_task_put(r, "backoff", tb_task_json_duration(backoff), oom);
        tb_task_put(r, "backoff_max", tb_task_json_duration(backoff_max), oom);
        tb_task_put(out, "retries", r, oom);
        return TB_OK;
}

/** argv into *\p arr (new array, caller owns on success). */
static tb_err_t tb_task_v_argv(const json_t *v, json_t **arr, size_t *argc,
                               tb_task_err_t *err, bool *oom) {
        json_t *a = json_array();
        tb_err_t rc;
        *argc = 0;
        if (!a) {
                *oom = true;
                return TB_OK;
        }
        if (v) {
                if (!json_is_array(v)) {
                        rc = tb_task_type_fail(err, "argv", "an array of strings", v);
                        goto fail;
                }
                if (json_array_size(v) > TB_TASK_ARGV_MAX) {
                        rc = tb_task_fail(err, "argv", "argv: %zu entries; at most %d allowed",
                                          json_array_size(v), TB_TASK_ARGV_MAX);
                        goto fail;
                }
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e) {
                        char field[32];
                        const char *s;
                        size_t bytes;
                        tb_snprintf(field, sizeof(field), "argv[%zu]", i);
                        if ((rc = tb_task_string(e, field, true, &s, &bytes, NULL, err)))
                                goto fail;
                        if (bytes > TB_TASK_ARG_MAX) {
                                rc = tb_task_fail(err, field,
                                                  "%s: %zu bytes; each entry is at most %d",
                                                  field, bytes, TB_TASK_ARG_MAX);
                                goto fail;
                        }
                        if (i == 0 && bytes == 0) {
                                rc = tb_task_fail(err, field,
                                                  "%s: the program to run cannot be empty",
                                                  field);
                                goto fail;
                        }
                        if (json_array_append_new(a, json_string(s)))
                                *oom = true;
                }
                *argc = json_array_size(v);
        }
        *arr = a;
        return TB_OK;
fail:
        json_decref(a);
        return rc;
}

tb_err_t tb_task_validate(const json_t *in, const tb_task_vctx_t *vctx, json_t **out,
                          tb_task_err_t *err) {
        json_t *t = NULL, *v;
        tb_err_t rc;
        bool oom = false;
        const char *s;
        size_t bytes, chars;
        if (err) {
                err->field[0] = '\0';
                err->message[0] = '\0';
        }
        if (!out || !vctx)
                return tb_task_fail(err, "task", "task: internal error: no output or "
                                    "validation context");
        *out = NULL;
        if (!json_is_object(in))
                return tb_task_fail(err, "task", "task: expected a JSON object, got %s",
                                    in ? tb_task_jtype(in) : "nothing");
        if ((rc = tb_task_check_keys(in, "", tb_task_fields, tb_task_readonly, err)))
                return rc;
        if (!(t = json_object()))
                return tb_task_fail(err, "task", "task: out of memory");

        /* name */
        if (!(v = tb_task_get(in, "name"))) {
                rc = tb_task_fail(err, "name", "name: required: 1 to %d characters",
                                  TB_TASK_NAME_MAX);
                goto fail;
        }
        if ((rc = tb_task_string(v, "name", false, &s, NULL, &chars, err)))
                goto fail;
        if (chars < 1 || chars > TB_TASK_NAME_MAX) {
                rc = tb_task_fail(err, "name", "name: must be 1 to %d characters, got %zu",
                                  TB_TASK_NAME_MAX, chars);
                goto fail;
        }
        tb_task_put(t, "name", json_string(s), &oom);

        /* script and argv: a non-empty argv makes script optional (it is
         * then only what is displayed). */
        const char *script = "";
        v = tb_task_get(in, "script");
        if (v) {
                if ((rc = tb_task_string(v, "script", true, &script, &bytes, NULL, err)))
                        goto fail;
                if (bytes > TB_TASK_SCRIPT_MAX) {
                        rc = tb_task_fail(err, "script",
                                          "script: %zu bytes; at most %d (64 KiB) allowed",
                                          bytes, TB_TASK_SCRIPT_MAX);
                        goto fail;
                }
        }
        json_t *argv = NULL;
        size_t argc = 0;
        if ((rc = tb_task_v_argv(tb_task_get(in, "argv"), &argv, &argc, err, &oom)))
                goto fail;
        if (!*script && !argc) {
                json_decref(argv);
                rc = tb_task_fail(err, "script",
                                  "script: required: the command line to run (non-empty, "
                                  "at most 64 KiB), unless argv is given");
                goto fail;
        }
        tb_task_put(t, "script", json_string(script), &oom);
        tb_task_put(t, "argv", argv, &oom);

        /* security_group */
        if (!(v = tb_task_get(in, "security_group"))) {
                rc = tb_task_fail(err, "security_group",
                                  "security_group: required: 1 to %d characters of letters, "
                                  "digits, '.', '_' and '-'",
                                  TB_TASK_GROUP_MAX);
                goto fail;
        }
        if ((rc = tb_task_ident(v, "security_group", TB_TASK_GROUP_MAX, false, &s, err)))
                goto fail;
        tb_task_put(t, "security_group", json_string(s), &oom);

        /* user_id: the caller's identity, never the body's */
        v = tb_task_get(in, "user_id");
        const char *uid = vctx->user_id;
        if (v) {
                if ((rc = tb_task_string(v, "user_id", false, &s, &bytes, NULL, err)))
                        goto fail;
                if (uid && strcmp(s, uid)) {
                        rc = tb_task_fail_code(err, TB_ERR_FORBIDDEN, "user_id",
                                               "user_id: '%.64s' is not you ('%.64s'); omit "
                                               "user_id, it is taken from your credentials",
                                               s, uid);
                        goto fail;
                }
                if (!uid)
                        uid = s;
        }
        if (!uid || !*uid) {
                rc = tb_task_fail(err, "user_id", "user_id: required: no authenticated user");
                goto fail;
        }
        tb_task_put(t, "user_id", json_string(uid), &oom);

        /* schedule */
        int64_t period = 0;
        if ((rc = tb_task_v_schedule(in, vctx, t, &period, err, &oom)))
                goto fail;

        /* expiry */
        int64_t ms = TB_TASK_EXPIRY_DEFAULT_MS;
        if ((v = tb_task_get(in, "expiry"))) {
                if ((rc = tb_task_duration(v, "expiry", &ms, err)))
                        goto fail;
                if (ms <= 0 || ms > TB_TASK_EXPIRY_MAX_MS) {
                        char a[48];
                        tb_units_duration_format_iso8601(ms, a);
                        rc = tb_task_fail(err, "expiry",
                                          "expiry: %s is out of range; the longest a run may "
                                          "last must be more than 0 and at most 7 days (P7D)",
                                          a);
                        goto fail;
                }
        }
        tb_task_put(t, "expiry", tb_task_json_duration(ms), &oom);

        /* executor */
        const char *executor = "shell";
        if ((v = tb_task_get(in, "executor")) &&
            (rc = tb_task_ident(v, "executor", TB_TASK_IDENT_MAX, false, &executor, err)))
                goto fail;
        if (vctx->executors) {
                char list[256] = "";
                size_t len = 0;
                bool found = false;
                for (size_t i = 0; vctx->executors[i]; i++) {
                        found = found || !strcmp(vctx->executors[i], executor);
                        int n = snprintf(list + len, sizeof(list) - len, "%s%s",
                                         i ? ", " : "", vctx->executors[i]);
                        if (n > 0 && (size_t)n < sizeof(list) - len)
                                len += (size_t)n;
                }
                if (!found) {
                        rc = tb_task_fail(err, "executor",
                                          "executor: '%s' is not available; available "
                                          "executors: %s",
                                          executor, *list ? list : "(none)");
                        goto fail;
                }
        }
        tb_task_put(t, "executor", json_string(executor), &oom);

        if ((rc = tb_task_v_map(tb_task_get(in, "executor_options"), "executor_options",
                                false, t, err, &oom)))
                goto fail;
        if ((rc = tb_task_v_retries(tb_task_get(in, "retries"), t, err, &oom)))
                goto fail;

        int overlap = 0, misfire = 0;
        if ((rc = tb_task_enum(tb_task_get(in, "overlap"), "overlap", tb_task_overlap_names,
                               &overlap, err)) ||
            (rc = tb_task_enum(tb_task_get(in, "misfire"), "misfire", tb_task_misfire_names,
                               &misfire, err)))
                goto fail;
        tb_task_put(t, "overlap", json_string(tb_task_overlap_names[overlap]), &oom);
        tb_task_put(t, "misfire", json_string(tb_task_misfire_names[misfire]), &oom);

        /* jitter */
        ms = 0;
        if ((v = tb_task_get(in, "jitter"))) {
                if ((rc = tb_task_duration(v, "jitter", &ms, err)))
                        goto fail;
                if (period && ms >= period) {
                        char a[48], b[48];
                        tb_units_duration_format_iso8601(ms, a);
                        tb_units_duration_format_iso8601(period, b);
                        rc = tb_task_fail(err, "jitter",
                                          "jitter: %s must be shorter than the schedule's "
                                          "period %s",
                                          a, b);
                        goto fail;
                }
        }
        tb_task_put(t, "jitter", tb_task_json_duration(ms), &oom);

        /* expires_at */
        ms = 0;
        if ((v = tb_task_get(in, "expires_at"))) {
                if ((rc = tb_task_time(v, "expires_at", &ms, err)))
                        goto fail;
                if (ms < vctx->now_ms - TB_TASK_PAST_TOLERANCE_MS) {
                        char a[32], b[32];
                        tb_time_format(ms, a);
                        tb_time_format(vctx->now_ms, b);
                        rc = tb_task_fail(err, "expires_at",
                                          "expires_at: %s is in the past (now is %s); give a "
                                          "future time or null",
                                          a, b);
                        goto fail;
                }
        }
        tb_task_put(t, "expires_at", tb_task_json_time(ms), &oom);

        /* log_retention: a missing value takes the default, clamped to the
         * group's cap so that omitting it never fails. */
        ms = vctx->log_retention_default_ms > 0 ? vctx->log_retention_default_ms
                                                : TB_TASK_LOG_RETENTION_FALLBACK_MS;
        if (vctx->log_retention_max_ms > 0 && ms > vctx->log_retention_max_ms)
                ms = vctx->log_retention_max_ms;
        if ((v = tb_task_get(in, "log_retention"))) {
                if ((rc = tb_task_duration(v, "log_retention", &ms, err)))
                        goto fail;
                if (ms <= 0) {
                        rc = tb_task_fail(err, "log_retention",
                                          "log_retention: must be more than 0 (e.g. \"30d\")");
                        goto fail;
                }
                if (vctx->log_retention_max_ms > 0 && ms > vctx->log_retention_max_ms) {
                        char a[48], b[48];
                        tb_units_duration_format_iso8601(ms, a);
                        tb_units_duration_format_iso8601(vctx->log_retention_max_ms, b);
                        rc = tb_task_fail(err, "log_retention",
                                          "log_retention: %s exceeds this security group's "
                                          "cap of %s",
                                          a, b);
                        goto fail;
                }
        }
        tb_task_put(t, "log_retention", tb_task_json_duration(ms), &oom);

        /* paused */
        bool paused = false;
        if ((v = tb_task_get(in, "paused"))) {
                if (!json_is_boolean(v)) {
                        rc = tb_task_type_fail(err, "paused", "a boolean", v);
                        goto fail;
                }
                paused = json_is_true(v);
        }
        tb_task_put(t, "paused", json_boolean(paused), &oom);

        if ((rc = tb_task_v_map(tb_task_get(in, "labels"), "labels", true, t, err, &oom)))
                goto fail;

        /* home_region */
        const char *region = vctx->default_region && *vctx->default_region
                                     ? vctx->default_region
                                     : "local";
        if ((v = tb_task_get(in, "home_region")) &&
            (rc = tb_task_ident(v, "home_region", TB_TASK_IDENT_MAX, false, &region, err)))
                goto fail;
        tb_task_put(t, "home_region", json_string(region), &oom);

        if (oom) {
                rc = tb_task_fail(err, "task", "task: out of memory");
                goto fail;
        }
        *out = t;
        return TB_OK;
fail:
        json_decref(t);
        return rc;
}

/* ---- durations --------------------------------------------------------- */

void tb_units_duration_format_iso8601(int64_t ms, char buf[48]) {
        size_t len = 0;
        uint64_t u;
        if (ms < 0) {
                buf[len++] = '-';
                u = (uint64_t)0 - (uint64_t)ms;
        } else {
                u = (uint64_t)ms;
        }
        uint64_t days = u / (uint64_t)TB_TASK_DAY, rest = u % (uint64_t)TB_TASK_DAY;
        uint64_t h = rest / (uint64_t)TB_TASK_HOUR, m = rest / (uint64_t)TB_TASK_MIN % 60;
        uint64_t sec = rest / 1000 % 60, frac = rest % 1000;
        int n;
        buf[len++] = 'P';
        if (days) {
                n = snprintf(buf + len, 48 - len, "%lluD", (unsigned long long)days);
                len += (size_t)n;
        }
        if (rest || !days) {
                buf[len++] = 'T';
                if (h) {
                        n = snprintf(buf + len, 48 - len, "%lluH", (unsigned long long)h);
                        len += (size_t)n;
                }
                if (m) {
                        n = snprintf(buf + len, 48 - len, "%lluM", (unsigned long long)m);
                        len += (size_t)n;
                }
                if (sec || frac || !rest) {
                        n = snprintf(buf + len, 48 - len, "%llu", (unsigned long long)sec);
                        len += (size_t)n;
                        if (frac) {
                                char f[8];
                                snprintf(f, sizeof(f), ".%03u", (unsigned)frac);
                                size_t fl = strlen(f);
                                while (f[fl - 1] == '0')
                                        f[--fl] = '\0';
                                memcpy(buf + len, f, fl);
                                len += fl;
                        }
                        buf[len++] = 'S';
                }
        }
        buf[len] = '\0';
}

/* ---- conversions ------------------------------------------------------- */

/** Read a normalized duration string; false if it is not one. */
static bool tb_task_read_duration(const json_t *v, int64_t *ms) {
        char msg[8];
        if (json_is_integer(v)) {
                json_int_t n = json_integer_value(v);
                if (n < 0 || n > TB_SCHEDULE_MAX_MS / 1000)
                        return false;
                *ms = (int64_t)n * 1000;
                return true;
        }
        return json_is_string(v) && !tb_units_duration_parse(json_string_value(v), ms, msg,
                                                       sizeof(msg));
}

/** Read a normalized time (string) or null (0); false if neither. */
static bool tb_task_read_time(const json_t *v, int64_t *ms) {
        char msg[8];
        *ms = 0;
        if (!v || json_is_null(v))
                return true;
        return json_is_string(v) && !tb_time_parse(json_string_value(v), ms, msg,
                                                   sizeof(msg));
}

static int tb_task_index(const char *const *names, const json_t *v, bool nocase) {
        if (!json_is_string(v))
                return -1;
        for (int i = 0; names[i]; i++)
                if (nocase ? !strcasecmp(names[i], json_string_value(v))
                           : !strcmp(names[i], json_string_value(v)))
                        return i;
        return -1;
}

/** An epoch-ms spec value (integer) or null, as a normalized time. */
static json_t *tb_task_spec_time(const json_t *v, bool *bad) {
        if (json_is_null(v))
                return json_null();
        if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
            json_integer_value(v) > TB_SCHEDULE_MAX_MS) {
                *bad = true;
                return json_null();
        }
        return tb_task_json_time(json_integer_value(v));
}

static json_t *tb_task_spec_ms(const json_t *v, bool *bad) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
                *bad = true;
                return json_string("PT0S");
        }
        return tb_task_json_duration(json_integer_value(v));
}

json_t *tb_task_to_spec(const json_t *task) {
        json_t *spec = NULL, *sched, *sv, *r;
        int64_t ms;
        bool bad = false, oom = false;
        if (!json_is_object(task) || !json_is_object(sched = json_object_get(task, "schedule")))
                return NULL;
        if (!(spec = json_object()) || !(sv = json_object()))
                goto fail;
        tb_task_put(spec, "name", json_incref(json_object_get(task, "name")), &oom);
        tb_task_put(spec, "script", json_incref(json_object_get(task, "script")), &oom);
        json_t *argv = json_object_get(task, "argv");
        tb_task_put(spec, "argv", argv ? json_incref(argv) : json_array(), &oom);
        tb_task_put(spec, "security_group", json_incref(json_object_get(task,
                                                                        "security_group")),
                    &oom);
        tb_task_put(spec, "user_id", json_incref(json_object_get(task, "user_id")), &oom);

        json_t *v;
        int64_t start, end;
        if ((v = json_object_get(sched, "once"))) {
                tb_task_put(sv, "kind", json_string("ONCE"), &oom);
                bad |= !tb_task_read_time(v, &ms) || !ms;
                tb_task_put(sv, "once_at", json_integer(ms), &oom);
                tb_task_put(sv, "every_ms", json_null(), &oom);
                tb_task_put(sv, "cron", json_null(), &oom);
                tb_task_put(sv, "timezone", json_string("UTC"), &oom);
        } else if ((v = json_object_get(sched, "every"))) {
                tb_task_put(sv, "kind", json_string("EVERY"), &oom);
                bad |= !tb_task_read_duration(v, &ms);
                tb_task_put(sv, "once_at", json_null(), &oom);
                tb_task_put(sv, "every_ms", json_integer(ms), &oom);
                tb_task_put(sv, "cron", json_null(), &oom);
                tb_task_put(sv, "timezone", json_string("UTC"), &oom);
        } else if (json_is_string(v = json_object_get(sched, "cron"))) {
                tb_task_put(sv, "kind", json_string("CRON"), &oom);
                tb_task_put(sv, "once_at", json_null(), &oom);
                tb_task_put(sv, "every_ms", json_null(), &oom);
                tb_task_put(sv, "cron", json_incref(v), &oom);
                json_t *tz = json_object_get(sched, "timezone");
                tb_task_put(sv, "timezone", json_is_string(tz) ? json_incref(tz)
                                                                : json_string("UTC"),
                            &oom);
        } else {
                bad = true;
        }
        bad |= !tb_task_read_time(json_object_get(sched, "start_at"), &start);
        bad |= !tb_task_read_time(json_object_get(sched, "end_at"), &end);
        tb_task_put(sv, "start_at", start ? json_integer(start) : json_null(), &oom);
        tb_task_put(sv, "end_at", end ? json_integer(end) : json_null(), &oom);
        int gap = 0, olap = 0;
        if ((v = json_object_get(sched, "dst_gap")) &&
            (gap = tb_task_index(tb_task_gap_names, v, false)) < 0)
                bad = true, gap = 0;
        if ((v = json_object_get(sched, "dst_overlap")) &&
            (olap = tb_task_index(tb_task_olap_names, v, false)) < 0)
                bad = true, olap = 0;
        tb_task_put(sv, "dst_gap", json_string(tb_task_gap_syms[gap]), &oom);
        tb_task_put(sv, "dst_overlap", json_string(tb_task_olap_syms[olap]), &oom);
        ms = 0;
        if ((v = json_object_get(task, "jitter")))
                bad |= !tb_task_read_duration(v, &ms);
        tb_task_put(sv, "jitter_ms", json_integer(ms), &oom);
        tb_task_put(spec, "schedule", sv, &oom);

        bad |= !tb_task_read_duration(json_object_get(task, "expiry"), &ms);
        tb_task_put(spec, "expiry_ms", json_integer(ms), &oom);
        tb_task_put(spec, "executor", json_incref(json_object_get(task, "executor")), &oom);
        v = json_object_get(task, "executor_options");
        tb_task_put(spec, "executor_options", v ? json_incref(v) : json_object(), &oom);

        json_t *rin = json_object_get(task, "retries");
        if (!json_is_object(rin) || !(r = json_object())) {
                bad = true;
        } else {
                tb_task_put(r, "max_attempts",
                            json_incref(json_object_get(rin, "max_attempts")), &oom);
                bad |= !tb_task_read_duration(json_object_get(rin, "backoff"), &ms);
                tb_task_put(r, "backoff_ms", json_integer(ms), &oom);
                bad |= !tb_task_read_duration(json_object_get(rin, "backoff_max"), &ms);
                tb_task_put(r, "backoff_max_ms", json_integer(ms), &oom);
                tb_task_put(spec, "retries", r, &oom);
        }
        int i;
        if ((i = tb_task_index(tb_task_overlap_names, json_object_get(task, "overlap"),
                               false)) < 0)
                bad = true, i = 0;
        tb_task_put(spec, "overlap", json_string(tb_task_overlap_syms[i]), &oom);
        if ((i = tb_task_index(tb_task_misfire_names, json_object_get(task, "misfire"),
                               false)) < 0)
                bad = true, i = 0;
        tb_task_put(spec, "misfire", json_string(tb_task_misfire_syms[i]), &oom);
        bad |= !tb_task_read_time(json_object_get(task, "expires_at"), &ms);
        tb_task_put(spec, "expires_at", ms ? json_integer(ms) : json_null(), &oom);
        bad |= !tb_task_read_duration(json_object_get(task, "log_retention"), &ms);
        tb_task_put(spec, "log_retention_ms", json_integer(ms), &oom);
        tb_task_put(spec, "paused", json_boolean(json_is_true(json_object_get(task,
                                                                              "paused"))),
                    &oom);
        v = json_object_get(task, "labels");
        tb_task_put(spec, "labels", v ? json_incref(v) : json_object(), &oom);
        tb_task_put(spec, "home_region", json_incref(json_object_get(task, "home_region")),
                    &oom);
        if (bad || oom)
                goto fail;
        return spec;
fail:
        json_decref(spec);
        return NULL;
}

json_t *tb_task_from_spec(const json_t *spec) {
        json_t *t = NULL, *sv = NULL, *sched, *v, *r;
        bool bad = false, oom = false;
        static const char *const strs[] = {"name", "script", "security_group", "user_id",
                                           NULL};
        if (!json_is_object(spec) || !json_is_object(sched = json_object_get(spec,
                                                                            "schedule")))
                return NULL;
        if (!(t = json_object()) || !(sv = json_object()))
                goto fail;
        for (size_t i = 0; strs[i]; i++) {
                v = json_object_get(spec, strs[i]);
                bad |= !json_is_string(v);
                tb_task_put(t, strs[i], json_incref(v), &oom);
                if (i == 1) {
                        v = json_object_get(spec, "argv");
                        bad |= v && !json_is_array(v);
                        tb_task_put(t, "argv", v ? json_incref(v) : json_array(), &oom);
                }
        }

        static const char *const kinds[] = {"ONCE", "EVERY", "CRON", NULL};
        switch (tb_task_index(kinds, json_object_get(sched, "kind"), false)) {
        case 0:
                tb_task_put(sv, "once", tb_task_spec_time(json_object_get(sched, "once_at"),
                                                          &bad),
                            &oom);
                bad |= json_is_null(json_object_get(sched, "once_at"));
                break;
        case 1:
                v = json_object_get(sched, "every_ms");
                bad |= !json_is_integer(v) || json_integer_value(v) < TB_SCHEDULE_MIN_EVERY_MS;
                tb_task_put(sv, "every", tb_task_spec_ms(v, &bad), &oom);
                break;
        case 2:
                v = json_object_get(sched, "cron");
                bad |= !json_is_string(v);
                tb_task_put(sv, "cron", json_incref(v), &oom);
                v = json_object_get(sched, "timezone");
                tb_task_put(sv, "timezone", json_is_string(v) ? json_incref(v)
                                                               : json_string("UTC"),
                            &oom);
                break;
        default:
                bad = true;
                break;
        }
        /* A one-shot has no window in the normalized form. */
        if (!json_object_get(sv, "once")) {
                v = json_object_get(sched, "start_at");
                tb_task_put(sv, "start_at", tb_task_spec_time(v ? v : json_null(), &bad),
                            &oom);
                v = json_object_get(sched, "end_at");
                tb_task_put(sv, "end_at", tb_task_spec_time(v ? v : json_null(), &bad), &oom);
        }
        int gap = 0, olap = 0;
        if ((v = json_object_get(sched, "dst_gap")) &&
            (gap = tb_task_index(tb_task_gap_syms, v, false)) < 0)
                bad = true, gap = 0;
        if ((v = json_object_get(sched, "dst_overlap")) &&
            (olap = tb_task_index(tb_task_olap_syms, v, false)) < 0)
                bad = true, olap = 0;
        tb_task_put(sv, "dst_gap", json_string(tb_task_gap_names[gap]), &oom);
        tb_task_put(sv, "dst_overlap", json_string(tb_task_olap_names[olap]), &oom);
        tb_task_put(t, "schedule", sv, &oom);
        sv = NULL;

        tb_task_put(t, "expiry", tb_task_spec_ms(json_object_get(spec, "expiry_ms"), &bad),
                    &oom);
        v = json_object_get(spec, "executor");
        bad |= !json_is_string(v);
        tb_task_put(t, "executor", json_incref(v), &oom);
        v = json_object_get(spec, "executor_options");
        bad |= v && !json_is_object(v);
        tb_task_put(t, "executor_options", v ? json_incref(v) : json_object(), &oom);

        json_t *rin = json_object_get(spec, "retries");
        if (!json_is_object(rin) || !(r = json_object())) {
                bad = true;
        } else {
                v = json_object_get(rin, "max_attempts");
                bad |= !json_is_integer(v);
                tb_task_put(r, "max_attempts", json_incref(v), &oom);
                tb_task_put(r, "backoff", tb_task_spec_ms(json_object_get(rin, "backoff_ms"),
                                                          &bad),
                            &oom);
                tb_task_put(r, "backoff_max",
                            tb_task_spec_ms(json_object_get(rin, "backoff_max_ms"), &bad),
                            &oom);
                tb_task_put(t, "retries", r, &oom);
        }
        int i;
        if ((i = tb_task_index(tb_task_overlap_syms, json_object_get(spec, "overlap"),
                               false)) < 0)
                bad = true, i = 0;
        tb_task_put(t, "overlap", json_string(tb_task_overlap_names[i]), &oom);
        if ((i = tb_task_index(tb_task_misfire_syms, json_object_get(spec, "misfire"),
                               false)) < 0)
                bad = true, i = 0;
        tb_task_put(t, "misfire", json_string(tb_task_misfire_names[i]), &oom);
        v = json_object_get(sched, "jitter_ms");
        tb_task_put(t, "jitter", v ? tb_task_spec_ms(v, &bad) : json_string("PT0S"), &oom);
        v = json_object_get(spec, "expires_at");
        tb_task_put(t, "expires_at", tb_task_spec_time(v ? v : json_null(), &bad), &oom);
        tb_task_put(t, "log_retention",
                    tb_task_spec_ms(json_object_get(spec, "log_retention_ms"), &bad), &oom);
        v = json_object_get(spec, "paused");
        bad |= v && !json_is_boolean(v);
        tb_task_put(t, "paused", json_boolean(json_is_true(v)), &oom);
        v = json_object_get(spec, "labels");
        bad |= v && !json_is_object(v);
        tb_task_put(t, "labels", v ? json_incref(v) : json_object(), &oom);
        v = json_object_get(spec, "home_region");
        bad |= !json_is_string(v);
        tb_task_put(t, "home_region", json_incref(v), &oom);
        if (bad || oom)
                goto fail;
        return t;
fail:
        json_decref(sv);
        json_decref(t);
        return NULL;
}

/* ---- schedule ---------------------------------------------------------- */

tb_err_t tb_task_schedule(const json_t *task, int64_t anchor_ms, tb_schedule_t *s,
                          char *errstr, size_t errstr_size) {
        json_t *sched = json_object_get(task, "schedule"), *v;
        char msg[256];
        tb_err_t rc;
        if (!s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "schedule: no output");
        memset(s, 0, sizeof(*s));
        if (!json_is_object(sched))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: missing from the task");
        if (!tb_task_read_time(json_object_get(sched, "start_at"), &s->start_at_ms) ||
            !tb_task_read_time(json_object_get(sched, "end_at"), &s->end_at_ms) ||
            !tb_task_read_time(json_object_get(task, "expires_at"), &s->expires_at_ms))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule: start_at, end_at or expires_at is not an "
                                 "RFC 3339 time");
        if ((v = json_object_get(task, "jitter")) && !tb_task_read_duration(v, &s->jitter_ms))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "jitter: not a duration");
        int gap = 0, olap = 0;
        if ((v = json_object_get(sched, "dst_gap")) &&
            (gap = tb_task_index(tb_task_gap_names, v, true)) < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule.dst_gap: use 'shift' or 'skip'");
        if ((v = json_object_get(sched, "dst_overlap")) &&
            (olap = tb_task_index(tb_task_olap_names, v, true)) < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule.dst_overlap: use 'first', 'last' or 'both'");
        s->dst_gap = (tb_dst_gap_t)gap;
        s->dst_overlap = (tb_dst_overlap_t)olap;

        if ((v = json_object_get(sched, "once")) && !json_is_null(v)) {
                s->kind = TB_SCHEDULE_ONCE;
                if (!tb_task_read_time(v, &s->once_at_ms) || !s->once_at_ms) {
                        rc = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                       "schedule.once: not an RFC 3339 time");
                        goto fail;
                }
        } else if ((v = json_object_get(sched, "every")) && !json_is_null(v)) {
                s->kind = TB_SCHEDULE_EVERY;
                if (!tb_task_read_duration(v, &s->every_ms)) {
                        rc = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                       "schedule.every: not a duration");
                        goto fail;
                }
                s->anchor_ms = s->start_at_ms ? s->start_at_ms : anchor_ms;
        } else if ((v = json_object_get(sched, "cron")) && !json_is_null(v)) {
                s->kind = TB_SCHEDULE_CRON;
                if (!json_is_string(v)) {
                        rc = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                       "schedule.cron: expected a string");
                        goto fail;
                }
                if ((rc = tb_cron_parse(json_string_value(v), &s->cron, msg, sizeof(msg)))) {
                        tb_seterr(errstr, errstr_size, rc, "schedule.cron: %s", msg);
                        goto fail;
                }
                v = json_object_get(sched, "timezone");
                if ((rc = tb_tz_open(json_is_string(v) ? json_string_value(v) : NULL, &s->tz,
                                     msg, sizeof(msg)))) {
                        tb_seterr(errstr, errstr_size, rc, "schedule.timezone: %s", msg);
                        goto fail;
                }
        } else {
                rc = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                               "schedule: required: one of once, every, cron");
                goto fail;
        }
        if ((rc = tb_schedule_validate(s, errstr, errstr_size)))
                goto fail;
        return TB_OK;
fail:
        tb_schedule_clear(s);
        return rc;
}

/* ---- diff -------------------------------------------------------------- */

static int tb_task_strcmp(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *tb_task_diff(const json_t *before, const json_t *after) {
        json_t *out = json_array();
        const json_t *objs[2] = {before, after};
        const char **keys = NULL;
        size_t n = 0, cap = json_object_size(before) + json_object_size(after);
        if (!out)
                return NULL;
        if (cap && !(keys = calloc(cap, sizeof(*keys)))) {
                json_decref(out);
                return NULL;
        }
        for (int side = 0; side < 2; side++) {
                const char *key;
                json_t *v;
                if (!json_is_object(objs[side]))
                        continue;
                json_object_foreach((json_t *)objs[side], key, v) {
                        json_t *other = json_object_get(objs[!side], key);
                        if (side == 1 && json_object_get(objs[0], key))
                                continue; /* already compared from the left */
                        if (other && json_equal(v, other))
                                continue;
                        keys[n++] = key;
                }
        }
        qsort(keys, n, sizeof(*keys), tb_task_strcmp);
        for (size_t i = 0; i < n; i++) {
                if (json_array_append_new(out, json_string(keys[i]))) {
                        json_decref(out);
                        out = NULL;
                        break;
                }
        }
        free(keys);
        return out;
}
