/**
 * @file task/snapshot.c
 * @brief The RunSnapshot of a TaskSpec (task/snapshot.h).
 */
#include "task/snapshot.h"

#include <string.h>

static const char *tb_task_snap_str(const json_t *o, const char *k, const char *dflt) {
        const json_t *v = json_object_get(o, k);
        return json_is_string(v) ? json_string_value(v) : dflt;
}

static json_int_t tb_task_snap_int(const json_t *o, const char *k, json_int_t dflt) {
        const json_t *v = json_object_get(o, k);
        return json_is_integer(v) ? json_integer_value(v) : dflt;
}

json_t *tb_task_run_snapshot(const json_t *spec) {
        json_t *argv = json_object_get(spec, "argv");
        json_t *opts = json_object_get(spec, "executor_options");
        const json_t *retries = json_object_get(spec, "retries");
        /* o: a new reference each (copies of the spec's, or fresh defaults) */
        return json_pack("{s:s, s:s, s:o, s:s, s:s, s:o, s:I, s:s, s:I, s:I}", "name",
                         tb_task_snap_str(spec, "name", ""), "script",
                         tb_task_snap_str(spec, "script", ""), "argv",
                         json_is_array(argv) ? json_deep_copy(argv) : json_array(),
                         "security_group", tb_task_snap_str(spec, "security_group", ""),
                         "executor", tb_task_snap_str(spec, "executor", "shell"),
                         "executor_options",
                         json_is_object(opts) ? json_deep_copy(opts) : json_object(),
                         "expiry_ms", tb_task_snap_int(spec, "expiry_ms", 3600000), "overlap",
                         tb_task_snap_str(spec, "overlap", "FORBID"), "max_attempts",
                         tb_task_snap_int(retries, "max_attempts", 1), "log_retention_ms",
                         tb_task_snap_int(spec, "log_retention_ms", 2592000000LL));
}

json_t *tb_task_default_params(const json_t *spec) {
        json_t *out = json_object();
        const json_t *decl = json_object_get(spec, "parameters");
        size_t i;
        const json_t *p;
        json_array_foreach(decl, i, p) {
                const json_t *name = json_object_get(p, "name");
                const json_t *dflt = json_object_get(p, "default");
                if (out && json_is_string(name) && json_is_string(dflt) &&
                    json_object_set(out, json_string_value(name), (json_t *)dflt)) {
                        json_decref(out);
                        out = NULL;
                }
        }
        return out;
}

bool tb_task_result_retryable(const char *st, bool infra) {
        if (!strcmp(st, "FAILED") || !strcmp(st, "TIMED_OUT") || !strcmp(st, "LOST"))
                return true;
        /* an infrastructure error ends a run whatever status word it carries,
         * except the ones that are not failures */
        return infra && strcmp(st, "RUNNING") && strcmp(st, "SUCCEEDED") &&
               strncmp(st, "SKIPPED", 7) && strcmp(st, "EXPIRED") && strcmp(st, "DUPLICATE") &&
               strcmp(st, "CANCELLED");
}
