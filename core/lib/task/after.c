/**
 * @file task/after.c
 * @brief Tasks that wait for others (docs/scheduling.md "Dependencies"):
 *        validation of "after", "after_mode" and "after_deadline", their
 *        Avro TaskSpec conversions, the cycle check over the task graph, the
 *        dependency window and the dependency run id.
 */
#include "task/after.h"
#include "task/task_internal.h"

#include "schedule/occurrences.h"
#include "schedule/tz.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

const char *const tb_task_after_on_names[] = {"succeeded", "failed", "finished", NULL};
static const char *const tb_task_after_on_syms[] = {"SUCCEEDED", "FAILED", "FINISHED", NULL};
const char *const tb_task_after_mode_names[] = {"all", "any", NULL};
static const char *const tb_task_after_mode_syms[] = {"ALL", "ANY", NULL};

static const char *const tb_task_after_fields[] = {"task", "on", NULL};

bool tb_task_after_present(const json_t *in) {
        return tb_task_get(in, "after") || tb_task_get(in, "after_mode") ||
               tb_task_get(in, "after_deadline");
}

tb_err_t tb_task_v_after(const json_t *in, json_t *out, tb_task_err_t *err, bool *oom) {
        json_t *v = tb_task_get(in, "after");
        char f[64];
        tb_err_t rc;
        if (!v || (json_is_array(v) && !json_array_size(v))) {
                if (tb_task_get(in, "after_mode"))
                        return tb_task_fail(err, "after_mode",
                                            "after_mode: only with a non-empty after (the "
                                            "tasks this one waits for)");
                if (tb_task_get(in, "after_deadline"))
                        return tb_task_fail(err, "after_deadline",
                                            "after_deadline: only with a non-empty after (the "
                                            "tasks this one waits for)");
                return TB_OK;
        }
        if (!json_is_array(v))
                return tb_task_type_fail(err, "after",
                                         "an array of {\"task\": ID, \"on\": \"succeeded\"}", v);
        if (json_array_size(v) > TB_TASK_AFTER_MAX)
                return tb_task_fail(err, "after", "after: %zu parents; at most %d allowed",
                                    json_array_size(v), TB_TASK_AFTER_MAX);
        json_t *arr = json_array();
        if (!arr) {
                *oom = true;
                return TB_OK;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *e = json_array_get(v, i);
                tb_snprintf(f, sizeof(f), "after[%zu]", i);
                if (!json_is_object(e)) {
                        rc = tb_task_type_fail(err, f,
                                               "an object {\"task\": ID, \"on\": \"succeeded\"}",
                                               e);
                        goto fail;
                }
                if ((rc = tb_task_check_keys(e, f, tb_task_after_fields, NULL, err)))
                        goto fail;
                tb_snprintf(f, sizeof(f), "after[%zu].task", i);
                json_t *tv = tb_task_get(e, "task");
                const char *id;
                size_t len;
                char why[256];
                if (!tv) {
                        rc = tb_task_fail(err, f, "%s: required: the id of the task to wait for",
                                          f);
                        goto fail;
                }
                if ((rc = tb_task_string(tv, f, false, &id, &len, NULL, err)))
                        goto fail;
                if (tb_task_id_check(f, id, len, why, sizeof(why))) {
                        rc = tb_task_fail(err, f, "%s", why);
                        goto fail;
                }
                for (size_t k = 0; k < i; k++)
                        if (!strcmp(json_string_value(json_object_get(json_array_get(arr, k),
                                                                      "task")),
                                    id)) {
                                rc = tb_task_fail(err, f,
                                                  "%s: task '%s' is already after[%zu]; name "
                                                  "each parent once",
                                                  f, id, k);
                                goto fail;
                        }
                int on = 0;
                tb_snprintf(f, sizeof(f), "after[%zu].on", i);
                if ((rc = tb_task_enum(tb_task_get(e, "on"), f, tb_task_after_on_names, &on,
                                       err)))
                        goto fail;
                json_t *o = json_pack("{s:s, s:s}", "task", id, "on", tb_task_after_on_names[on]);
                if (!o || json_array_append_new(arr, o))
                        *oom = true;
        }
        int mode = 0;
        if ((rc = tb_task_enum(tb_task_get(in, "after_mode"), "after_mode",
                               tb_task_after_mode_names, &mode, err)))
                goto fail;
        json_t *dl = tb_task_get(in, "after_deadline");
        int64_t ms = 0;
        if (dl) {
                if ((rc = tb_task_duration(dl, "after_deadline", &ms, err)))
                        goto fail;
                if (ms <= 0 || ms > TB_DAY(1)) {
                        rc = tb_task_fail(err, "after_deadline",
                                          "after_deadline: must be more than 0 and at most "
                                          "one day (P1D), the dependency window");
                        goto fail;
                }
        }
        tb_task_put(out, "after", arr, oom);
        tb_task_put(out, "after_mode", json_string(tb_task_after_mode_names[mode]), oom);
        tb_task_put(out, "after_deadline", dl ? tb_task_json_duration(ms) : json_null(), oom);
        return TB_OK;
fail:
        json_decref(arr);
        return rc;
}

tb_err_t tb_task_after_schedule_check(const json_t *task, tb_task_err_t *err) {
        const json_t *after = json_object_get(task, "after");
        if (!json_array_size(after))
                return TB_OK;
        const json_t *sched = json_object_get(task, "schedule");
        if (!json_is_string(json_object_get(sched, "cron")))
                return tb_task_fail(err, "schedule",
                                    "schedule: a task with after runs at most once a day once "
                                    "its parents are done: give a cron schedule (its first "
                                    "fire of the day, in its time zone, is the earliest it "
                                    "runs) or none (as soon as they are done)");
        return TB_OK;
}

json_t *tb_task_after_default_schedule(const json_t *in) {
        json_t *after = tb_task_get(in, "after");
        if (!after || (json_is_array(after) && !json_array_size(after)) ||
            tb_task_get(in, "schedule") ||
            tb_task_get(in, "execution_time"))
                return NULL;
        json_t *copy = json_copy((json_t *)in);
        if (copy && json_object_set_new(copy, "schedule",
                                        json_pack("{s:s, s:s}", "cron", "0 0 * * *", "timezone",
                                                  "UTC"))) {
                json_decref(copy);
                return NULL;
        }
        return copy;
}

/* ---- the Avro TaskSpec -------------------------------------------------- */

static int tb_task_after_index(const char *s, const char *const *names) {
        for (int i = 0; s && names[i]; i++)
                if (!strcasecmp(s, names[i]))
                        return i;
        return -1;
}

/* Copy \p src's after and after_mode into \p dst, each "on" and the mode
 * mapped from the names \p from_on / \p from_mode to \p to_on / \p to_mode
 * (REST names <-> Avro symbols). */
static void tb_task_after_map(json_t *dst, const json_t *src, const char *const *from_on,
                              const char *const *to_on, const char *const *from_mode,
                              const char *const *to_mode, bool *bad, bool *oom) {
        const json_t *after = json_object_get(src, "after");
        json_t *arr = json_array();
        size_t i;
        json_t *e;
        *bad |= after && !json_is_array(after);
        json_array_foreach(after, i, e) {
                int on = tb_task_after_index(json_string_value(json_object_get(e, "on")), from_on);
                const char *id = json_string_value(json_object_get(e, "task"));
                *bad |= on < 0 || !id;
                if (on >= 0 && id)
                        json_array_append_new(arr, json_pack("{s:s, s:s}", "task", id, "on",
                                                             to_on[on]));
        }
        int mode = tb_task_after_index(json_string_value(json_object_get(src, "after_mode")),
                                       from_mode);
        tb_task_put(dst, "after", arr, oom);
        tb_task_put(dst, "after_mode", json_string(to_mode[mode < 0 ? 0 : mode]), oom);
}

void tb_task_after_to_spec(json_t *spec, const json_t *task, bool *bad, bool *oom) {
        tb_task_after_map(spec, task, tb_task_after_on_names, tb_task_after_on_syms,
                          tb_task_after_mode_names, tb_task_after_mode_syms, bad, oom);
        int64_t ms = 0;
        const json_t *dl = json_object_get(task, "after_deadline");
        if (json_is_string(dl))
                *bad |= tb_units_duration_parse(json_string_value(dl), &ms, (char[64]){0}, 64) !=
                        TB_OK;
        tb_task_put(spec, "after_deadline_ms", ms > 0 ? json_integer(ms) : json_null(), oom);
}

void tb_task_after_from_spec(json_t *task, const json_t *spec, bool *bad, bool *oom) {
        if (!json_array_size(json_object_get(spec, "after")))
                return;
        tb_task_after_map(task, spec, tb_task_after_on_syms, tb_task_after_on_names,
                          tb_task_after_mode_syms, tb_task_after_mode_names, bad, oom);
        const json_t *dl = json_object_get(spec, "after_deadline_ms");
        tb_task_put(task, "after_deadline",
                    json_is_integer(dl) ? tb_task_json_duration(json_integer_value(dl))
                                        : json_null(),
                    oom);
}

char *tb_task_after_ids_literal(const json_t *after) {
        tb_buf_t b = {0};
        size_t i;
        json_t *e;
        tb_buf_append(&b, "{", 1);
        json_array_foreach(after, i, e) {
                const char *id = json_string_value(json_object_get(e, "task"));
                if (i)
                        tb_buf_append(&b, ",", 1);
                if (id)
                        tb_buf_append(&b, id, strlen(id));
        }
        tb_buf_append(&b, "}", 2);
        return b.data;
}

/* ---- the graph ------------------------------------------------------------ */

/* Depth-first from \p node along the parents' edges: true when \p target is
 * reached; \p path holds the ids walked ("B -> C"). \p seen (a set of ids)
 * bounds the walk to each task once. */
static bool tb_task_after_reaches(const char *node, const char *target,
                                  tb_task_after_lookup_fn lookup, void *ud, json_t *seen,
                                  json_t *path, int depth) {
        if (!strcmp(node, target))
                return true;
        if (depth > 10000 || json_object_get(seen, node))
                return false;
        json_object_set_new(seen, node, json_true());
        const json_t *after = lookup(ud, node);
        size_t i;
        json_t *e;
        json_array_foreach(after, i, e) {
                const char *p = json_string_value(json_object_get(e, "task"));
                if (!p)
                        continue;
                json_array_append_new(path, json_string(p));
                if (tb_task_after_reaches(p, target, lookup, ud, seen, path, depth + 1))
                        return true;
                json_array_remove(path, json_array_size(path) - 1);
        }
        return false;
}

tb_err_t tb_task_after_cycle(const char *id, const json_t *after, tb_task_after_lookup_fn lookup,
                             tb_task_after_shown_fn shown, void *ud, tb_task_err_t *err) {
        size_t i;
        json_t *e;
        json_t *seen = json_object(), *path = json_array();
        tb_err_t rc = TB_OK;
        if (!seen || !path) {
                rc = tb_task_fail(err, "after", "after: out of memory");
                goto done;
        }
        json_array_foreach(after, i, e) {
                const char *p = json_string_value(json_object_get(e, "task"));
                char f[64];
                tb_snprintf(f, sizeof(f), "after[%zu].task", i);
                if (!p)
                        continue;
                if (!strcmp(p, id)) {
                        rc = tb_task_fail(err, f, "%s: a task cannot wait for itself (%s -> %s)",
                                          f, id, id);
                        goto done;
                }
                json_array_clear(path);
                json_array_append_new(path, json_string(p));
                if (tb_task_after_reaches(p, id, lookup, ud, seen, path, 0)) {
                        /* id waits for p, which waits (through path) for id */
                        char text[400];
                        int n0 = snprintf(text, sizeof(text), "%s", id);
                        size_t len = n0 > 0 ? (size_t)n0 : 0;
                        size_t k;
                        json_t *n;
                        json_array_foreach(path, k, n) {
                                const char *s = json_string_value(n);
                                if (shown && !shown(ud, s))
                                        s = "(a task of a group you are not in)";
                                if (len < sizeof(text))
                                        len += (size_t)snprintf(text + len, sizeof(text) - len,
                                                                " -> %s", s);
                        }
                        rc = tb_task_fail(err, f,
                                          "%s: waiting for '%s' makes a cycle (%s): a task "
                                          "cannot wait for itself through others",
                                          f, p, text);
                        goto done;
                }
        }
done:
        json_decref(seen);
        json_decref(path);
        return rc;
}

/* ---- windows and run ids ---------------------------------------------------- */

int64_t tb_task_after_window_start(const tb_tz_t *tz, int64_t now_ms) {
        if (!tz)
                tz = tb_tz_utc();
        int64_t s = tb_tz_floordiv(now_ms, 1000);
        int64_t wall = s + tb_tz_offset_at(tz, s);
        int64_t day = tb_tz_floordiv(wall, 86400) * 86400;
        tb_tz_local_t l;
        tb_tz_resolve(tz, day, &l);
        int64_t start = l.count ? l.first_s : l.gap_end_s;
        return start * 1000;
}

void tb_task_after_run_id(const char *task_id, int64_t window_ms, char out[33]) {
        /* attempt 0: no fire, retry or backfill has it (attempts count from 1) */
        tb_schedule_run_id(task_id, window_ms, 0, out);
}
