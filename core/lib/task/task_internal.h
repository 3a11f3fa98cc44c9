/**
 * @file task/task_internal.h
 * @brief What the files of task/ share: field errors and typed getters
 *        (task/fields.c), the normalized form's writers and the enum names
 *        with their Avro symbols (task/spec.c). task/task.h is the public
 *        header.
 */
#ifndef TB_TASK_INTERNAL_H
#define TB_TASK_INTERNAL_H

#include "task/task.h"
#include "units.h"

/* ---- task/fields.c ---- */

/** Fill \p err (field path and message, made valid UTF-8) and return
 *  TB_ERR_INVALID, or \p code for tb_task_fail_code(). */
tb_err_t tb_task_fail(tb_task_err_t *err, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
tb_err_t tb_task_fail_code(tb_task_err_t *err, tb_err_t code, const char *field,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/** "an object", "a string"...: what JSON value \p v is, for messages. */
const char *tb_task_jtype(const json_t *v);
/** "field 'F': expected EXPECTED, got <what v is>". */
tb_err_t tb_task_type_fail(tb_task_err_t *err, const char *field, const char *expected,
                           const json_t *v);
/** Refuse a key of \p obj in neither \p valid nor \p also, naming the
 *  closest valid one. */
tb_err_t tb_task_check_keys(const json_t *obj, const char *path, const char *const *valid,
                            const char *const *also, tb_task_err_t *err);
/** A present, non-null member of \p obj, or NULL. */
json_t *tb_task_get(const json_t *obj, const char *key);
/** A string in valid UTF-8 without NUL (controls only if \p controls_ok);
 *  its byte length and code point count when asked. */
tb_err_t tb_task_string(const json_t *v, const char *field, bool controls_ok,
                        const char **s, size_t *bytes, size_t *chars, tb_task_err_t *err);
/** 1..\p max characters of [A-Za-z0-9._-] (and '/' when \p slash). */
tb_err_t tb_task_ident(const json_t *v, const char *field, size_t max, bool slash,
                       const char **out, tb_task_err_t *err);
/** A duration: a string tb_units_duration_parse() accepts, or seconds. */
tb_err_t tb_task_duration(const json_t *v, const char *field, int64_t *ms,
                          tb_task_err_t *err);
/** An RFC 3339 instant within what a schedule can name. */
tb_err_t tb_task_time(const json_t *v, const char *field, int64_t *ms, tb_task_err_t *err);
/** One of \p names (case-insensitive) into *\p idx; absent leaves it. */
tb_err_t tb_task_enum(const json_t *v, const char *field, const char *const *names, int *idx,
                      tb_task_err_t *err);

/* ---- task/calendars.c ---- */

/** CalendarRuleKind's Avro symbols (the normalized form), NULL-terminated. */
extern const char *const tb_task_cal_rule_syms[];
/** Validate \p v (the body's calendars, NULL when absent) into \p out's
 *  "calendars" (left out when empty). */
tb_err_t tb_task_v_calendars(const json_t *v, json_t *out, tb_task_err_t *err, bool *oom);

/* ---- task/spec.c ---- */

/* Normalized names (lower case) and their Avro symbols, NULL-terminated;
 * the DST policies' names are schedule.h's tb_schedule_dst_*_names. */
extern const char *const tb_task_overlap_names[];
extern const char *const tb_task_overlap_syms[];
extern const char *const tb_task_misfire_names[];
extern const char *const tb_task_misfire_syms[];
extern const char *const tb_task_gap_syms[];
extern const char *const tb_task_olap_syms[];

/** Set \p key to \p v (stolen), remembering an allocation failure in *\p oom. */
void tb_task_put(json_t *obj, const char *key, json_t *v, bool *oom);
/** The normalized form of an instant: RFC 3339 UTC, or null for 0. */
json_t *tb_task_json_time(int64_t ms);
/** The normalized form of a duration: ISO 8601 ("PT30S"). */
json_t *tb_task_json_duration(int64_t ms);

#endif /* TB_TASK_INTERNAL_H */
