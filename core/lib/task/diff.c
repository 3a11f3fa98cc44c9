/**
 * @file task/diff.c
 * @brief The fields that differ between two versions of a task, for
 *        task_history.changed_fields.
 */
#include "task/task.h"

#include <stdlib.h>
#include <string.h>

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
