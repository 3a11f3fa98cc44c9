/**
 * @file task/fields.c
 * @brief Reading one field of a task body: typed JSON getters that check
 *        UTF-8 and limits, and the errors that name the field's path
 *        ("schedule.cron") and say what is allowed.
 *
 * Input strings quoted in messages are cut short and the final message is
 * made valid UTF-8, so an error about garbage never becomes garbage itself.
 */
#include "task/task_internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

tb_err_t tb_task_fail(tb_task_err_t *err, const char *field, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        tb_err_t rc = tb_task_vfail(err, TB_ERR_INVALID, field, fmt, ap);
        va_end(ap);
        return rc;
}

tb_err_t tb_task_fail_code(tb_task_err_t *err, tb_err_t code, const char *field,
                           const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        tb_err_t rc = tb_task_vfail(err, code, field, fmt, ap);
        va_end(ap);
        return rc;
}

const char *tb_task_jtype(const json_t *v) {
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

tb_err_t tb_task_type_fail(tb_task_err_t *err, const char *field, const char *expected,
                           const json_t *v) {
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
        size_t n = 0;
        while (valid[n])
                n++;
        const char *best = tb_names_nearest(key, valid, n, tb_task_distance, 2, list,
                                            sizeof(list));
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
tb_err_t tb_task_check_keys(const json_t *obj, const char *path, const char *const *valid,
                            const char *const *also, tb_task_err_t *err) {
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
json_t *tb_task_get(const json_t *obj, const char *key) {
        json_t *v = json_object_get(obj, key);
        return json_is_null(v) ? NULL : v;
}

/**
 * Check that \p v is a string without NUL bytes in valid UTF-8; give its
 * value, byte length and code point count. Controls are refused unless
 * \p controls_ok.
 */
tb_err_t tb_task_string(const json_t *v, const char *field, bool controls_ok,
                        const char **s, size_t *bytes, size_t *chars, tb_task_err_t *err) {
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
tb_err_t tb_task_ident(const json_t *v, const char *field, size_t max, bool slash,
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

/** A text-to-milliseconds parser: tb_units_duration_parse(), tb_time_parse(). */
typedef tb_err_t tb_task_parse_fn(const char *s, int64_t *ms, char *errstr,
                                  size_t errstr_size);

/**
 * A string without controls (\p expected names what it should be) that
 * \p parse turns into *\p ms; the text is left in *\p s. \p parse's message
 * follows the field name.
 */
static tb_err_t tb_task_parsed_string(const json_t *v, const char *field, const char *expected,
                                      tb_task_parse_fn *parse, const char **s, int64_t *ms,
                                      tb_task_err_t *err) {
        if (!json_is_string(v))
                return tb_task_type_fail(err, field, expected, v);
        tb_err_t rc = tb_task_string(v, field, false, s, NULL, NULL, err);
        if (rc)
                return rc;
        char msg[256];
        if (parse(*s, ms, msg, sizeof(msg)))
                return tb_task_fail(err, field, "%s: %s", field, msg);
        return TB_OK;
}

/** A duration: a string tb_units_duration_parse() accepts, or integer seconds. */
tb_err_t tb_task_duration(const json_t *v, const char *field, int64_t *ms,
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
        const char *s;
        return tb_task_parsed_string(v, field,
                                     "a duration string like \"30s\" or \"PT1H\" or an "
                                     "integer number of seconds",
                                     tb_units_duration_parse, &s, ms, err);
}

/** An RFC 3339 instant within what a schedule can name. */
tb_err_t tb_task_time(const json_t *v, const char *field, int64_t *ms, tb_task_err_t *err) {
        const char *s;
        tb_err_t rc = tb_task_parsed_string(v, field,
                                            "an RFC 3339 time string like "
                                            "\"2026-01-31T23:59:00Z\"",
                                            tb_time_parse, &s, ms, err);
        if (rc)
                return rc;
        if (*ms <= 0 || *ms > TB_SCHEDULE_MAX_MS)
                return tb_task_fail(err, field,
                                    "%s: '%.64s' is out of range (1970-01-01T00:00:00Z "
                                    "exclusive to 9999-12-31T23:59:59Z)",
                                    field, s);
        return TB_OK;
}

/** One of \p names (case-insensitive); *\p idx is left alone when absent. */
tb_err_t tb_task_enum(const json_t *v, const char *field, const char *const *names,
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

/* ---- ids and references (every interface's) ---------------------------- */

/** Describe byte \p c of an id for a message, without echoing non-ASCII. */
static void tb_task_byte_name(unsigned char c, char *buf, size_t size) {
        if (c == 0)
                tb_snprintf(buf, size, "a NUL byte");
        else if (c == ' ')
                tb_snprintf(buf, size, "a space");
        else if (c > 0x20 && c < 0x7F)
                tb_snprintf(buf, size, "'%c'", c);
        else
                tb_snprintf(buf, size, "byte 0x%02X", c);
}

/** The rule of tb_task_id_check() and tb_task_ref_check(): \p max bytes,
 *  each one \p ok accepts; \p chars names them ("[A-Za-z0-9._:-]"), \p rule
 *  says the whole rule in messages. */
static tb_err_t tb_task_bytes_check(const char *field, const char *value, size_t len,
                                    size_t max, bool empty_ok, bool (*ok)(unsigned char),
                                    const char *chars, const char *rule, char *errstr,
                                    size_t errstr_size) {
        if (!value || len == 0)
                return empty_ok ? TB_OK
                                : tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                            "%s: must not be empty: %s", field, rule);
        if (len > max)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %zu characters, at most %zu allowed (%s)", field, len, max,
                                 chars);
        for (size_t i = 0; i < len; i++) {
                if (ok((unsigned char)value[i]))
                        continue;
                char what[32];
                tb_task_byte_name((unsigned char)value[i], what, sizeof(what));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %s at position %zu is not allowed: %s", field, what, i + 1,
                                 rule);
        }
        return TB_OK;
}

static bool tb_task_id_byte(unsigned char c) {
        return isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
}

static bool tb_task_ref_byte(unsigned char c) {
        return c >= 0x20 && c < 0x7F;
}

#define TB_TASK_STR2(x) #x
#define TB_TASK_STR(x) TB_TASK_STR2(x)

tb_err_t tb_task_id_check(const char *field, const char *value, size_t len, char *errstr,
                          size_t errstr_size) {
        return tb_task_bytes_check(field, value, len, TB_TASK_ID_MAX, false, tb_task_id_byte,
                                   TB_TASK_ID_CHARS,
                                   "ids are 1 to " TB_TASK_STR(TB_TASK_ID_MAX)
                                   " characters of " TB_TASK_ID_CHARS,
                                   errstr, errstr_size);
}

tb_err_t tb_task_ref_check(const char *field, const char *value, size_t len, bool empty_ok,
                           char *errstr, size_t errstr_size) {
        return tb_task_bytes_check(field, value, len, TB_TASK_REF_MAX, empty_ok,
                                   tb_task_ref_byte, "printable ASCII; a UUID is best",
                                   "at most " TB_TASK_STR(TB_TASK_REF_MAX)
                                   " characters of printable ASCII (a UUID is best)",
                                   errstr, errstr_size);
}
