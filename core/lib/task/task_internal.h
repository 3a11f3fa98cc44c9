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

tb_err_t tb_task_fail(tb_task_err_t *err, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
tb_err_t tb_task_fail_code(tb_task_err_t *err, tb_err_t code, const char *field,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));
const char *tb_task_jtype(const json_t *v);
tb_err_t tb_task_type_fail(tb_task_err_t *err, const char *field, const char *expected,
                           const json_t *v);
tb_err_t tb_task_check_keys(const json_t *obj, const char *path, const char *const *valid,
                            const char *const *also, tb_task_err_t *err);
json_t *tb_task_get(const json_t *obj, const char *key);
tb_err_t tb_task_string(const json_t *v, const char *field, bool controls_ok,
                        const char **s, size_t *bytes, size_t *chars, tb_task_err_t *err);
tb_err_t tb_task_ident(const json_t *v, const char *field, size_t max, bool slash,
                       const char **out, tb_task_err_t *err);
tb_err_t tb_task_duration(const json_t *v, const char *field, int64_t *ms,
                          tb_task_err_t *err);
tb_err_t tb_task_time(const json_t *v, const char *field, int64_t *ms, tb_task_err_t *err);
tb_err_t tb_task_enum(const json_t *v, const char *field, const char *const *names, int *idx,
                      tb_task_err_t *err);

/* ---- task/spec.c ---- */

/* Normalized names (lower case) and their Avro symbols, NULL-terminated. */
extern const char *const tb_task_overlap_names[];
extern const char *const tb_task_overlap_syms[];
extern const char *const tb_task_misfire_names[];
extern const char *const tb_task_misfire_syms[];
extern const char *const tb_task_gap_names[];
extern const char *const tb_task_gap_syms[];
extern const char *const tb_task_olap_names[];
extern const char *const tb_task_olap_syms[];

void tb_task_put(json_t *obj, const char *key, json_t *v, bool *oom);
json_t *tb_task_json_time(int64_t ms);
json_t *tb_task_json_duration(int64_t ms);

#endif /* TB_TASK_INTERNAL_H */
