/**
 * @file support_checker.c
 * @brief Fire accounting (see support_checker.h).
 */
#include "support_checker.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define TBT_PROBLEMS_MAX 100

static const char *tbt_jstr(const json_t *o, const char *k) {
        const char *s = json_string_value(json_object_get(o, k));
        return s ? s : "";
}

static int64_t tbt_jint(const json_t *o, const char *k) {
        return (int64_t)json_integer_value(json_object_get(o, k));
}

static void tbt_problem(tbt_fires_report_t *rep, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void tbt_problem(tbt_fires_report_t *rep, const char *fmt, ...) {
        if (json_array_size(rep->problems) >= TBT_PROBLEMS_MAX)
                return;
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        json_array_append_new(rep->problems, json_string(line));
}

static void tbt_fire_key(const char *task, int64_t nominal, char *out, size_t size) {
        snprintf(out, size, "%s|%" PRId64, task, nominal);
}

static void tbt_count(json_t *o, const char *k) {
        json_object_set_new(o, k, json_integer(json_integer_value(json_object_get(o, k)) + 1));
}

/* Statuses only the scheduler records, for a fire it did not emit. */
static bool tbt_sched_skip(const char *st) {
        return !strcmp(st, "SKIPPED_MISFIRE") || !strcmp(st, "SKIPPED_PAUSED");
}

/* Outcomes by which an executor legitimately did not start an emitted run. */
static bool tbt_policy_skip(const char *st) {
        return !strcmp(st, "SKIPPED_OVERLAP") || !strcmp(st, "EXPIRED") ||
               !strcmp(st, "SKIPPED_PAUSED");
}

void tbt_fires_check(const json_t *runs, const json_t *results, const json_t *expect,
                     const json_t *starts, tbt_fires_report_t *rep) {
        memset(rep, 0, sizeof(*rep));
        rep->problems = json_array();
        json_t *emitted = json_object();  /* run id -> times emitted */
        json_t *fires = json_object();    /* task|nominal -> [run values], every attempt */
        json_t *outcomes = json_object(); /* run id -> [statuses] */
        json_t *skips = json_object();    /* task|nominal -> scheduler skips */
        json_t *ranges = json_object();   /* task -> [[first, last]]: skips of a range */
        json_t *running = json_object();  /* run id -> RUNNING results */
        size_t i;
        json_t *v;
        char key[300];

        json_array_foreach((json_t *)runs, i, v) {
                const char *rid = tbt_jstr(v, "run_id");
                if (!*rid)
                        continue; /* undecodable record: not a run */
                rep->runs_total++;
                tbt_count(emitted, rid);
                if (json_integer_value(json_object_get(emitted, rid)) == 2) {
                        rep->duplicated++;
                        tbt_problem(rep, "run id %s emitted twice (task %s, nominal %" PRId64 ")",
                                    rid, tbt_jstr(v, "task_id"), tbt_jint(v, "nominal_time"));
                }
                tbt_fire_key(tbt_jstr(v, "task_id"), tbt_jint(v, "nominal_time"), key,
                             sizeof(key));
                json_t *a = json_object_get(fires, key);
                if (!a) {
                        a = json_array();
                        json_object_set_new(fires, key, a);
                }
                json_array_append((json_t *)a, v);
                if (!strcmp(tbt_jstr(v, "trigger"), "MISFIRE"))
                        rep->misfires++;
        }
        json_array_foreach((json_t *)results, i, v) {
                const char *rid = tbt_jstr(v, "run_id"), *st = tbt_jstr(v, "status");
                if (!*rid)
                        continue;
                json_t *a = json_object_get(outcomes, rid);
                if (!a) {
                        a = json_array();
                        json_object_set_new(outcomes, rid, a);
                }
                json_array_append_new(a, json_string(st));
                if (!strcmp(st, "RUNNING")) {
                        tbt_count(running, rid);
                        if (json_integer_value(json_object_get(running, rid)) == 2) {
                                rep->duplicated++;
                                tbt_problem(rep, "run %s (task %s) reported RUNNING twice", rid,
                                            tbt_jstr(v, "task_id"));
                        }
                }
                if (tbt_sched_skip(st) && !json_object_get(emitted, rid) &&
                    json_is_integer(json_object_get(v, "last_nominal_time"))) {
                        /* one record for a range of fires not run */
                        const char *tid = tbt_jstr(v, "task_id");
                        json_t *ra = json_object_get(ranges, tid);
                        if (!ra) {
                                ra = json_array();
                                json_object_set_new(ranges, tid, ra);
                        }
                        json_array_append_new(ra, json_pack("[I, I]",
                                                           (json_int_t)tbt_jint(v, "nominal_time"),
                                                           (json_int_t)tbt_jint(v, "last_nominal_time")));
                } else if (tbt_sched_skip(st) && !json_object_get(emitted, rid)) {
                        tbt_fire_key(tbt_jstr(v, "task_id"), tbt_jint(v, "nominal_time"), key,
                                     sizeof(key));
                        tbt_count(skips, key);
                }
        }
        if (starts) {
                const char *rid;
                json_object_foreach((json_t *)starts, rid, v) {
                        if (json_integer_value(v) > 1) {
                                rep->duplicated++;
                                tbt_problem(rep, "run %s started %" PRId64 " times", rid,
                                            (int64_t)json_integer_value(v));
                        }
                }
        }

        const char *task;
        json_t *noms;
        json_object_foreach((json_t *)expect, task, noms) {
                rep->tasks++;
                size_t j;
                json_t *n;
                json_array_foreach(noms, j, n) {
                        int64_t nominal = (int64_t)json_integer_value(n);
                        rep->expected++;
                        tbt_fire_key(task, nominal, key, sizeof(key));
                        json_t *a = json_object_get(fires, key);
                        size_t first = 0, attempts = json_array_size(a), k;
                        json_t *r;
                        json_array_foreach(a, k, r) {
                                if (tbt_jint(r, "attempt") <= 1) {
                                        first++;
                                        int64_t lag = tbt_jint(r, "emitted_at") - nominal;
                                        if (lag > rep->max_fire_lag_ms)
                                                rep->max_fire_lag_ms = lag;
                                }
                        }
                        size_t sk = (size_t)json_integer_value(json_object_get(skips, key)), ri;
                        json_t *rg;
                        json_array_foreach(json_object_get(ranges, task), ri, rg)
                                sk += nominal >= json_integer_value(json_array_get(rg, 0)) &&
                                      nominal <= json_integer_value(json_array_get(rg, 1));
                        if (first + sk == 0) {
                                rep->lost++;
                                tbt_problem(rep, "task %s nominal %" PRId64
                                                 ": never emitted nor skipped",
                                            task, nominal);
                                continue;
                        }
                        if (first + sk > 1) {
                                rep->duplicated++;
                                tbt_problem(rep, "task %s nominal %" PRId64 ": %zu runs (attempt 1) "
                                                 "and %zu skips, want one",
                                            task, nominal, first, sk);
                                continue;
                        }
                        if (sk) {
                                rep->skipped++;
                                continue;
                        }
                        rep->fired++;
                        if (attempts > 1)
                                rep->retried++;
                        if (!starts)
                                continue;
                        size_t started = 0, policy = 0;
                        const char *last = "(no result)";
                        json_array_foreach(a, k, r) {
                                const char *rid = tbt_jstr(r, "run_id");
                                if (json_integer_value(json_object_get(starts, rid)) > 0)
                                        started++;
                                size_t q;
                                json_t *st;
                                json_array_foreach(json_object_get(outcomes, rid), q, st) {
                                        last = json_string_value(st);
                                        if (tbt_policy_skip(last))
                                                policy++;
                                }
                        }
                        if (started) {
                                rep->executed++;
                                if (started > 1)
                                        rep->reexecuted++;
                        } else if (policy) {
                                rep->policy_skipped++;
                        } else {
                                rep->lost++;
                                tbt_problem(rep, "task %s nominal %" PRId64 ": %zu run(s) emitted, "
                                                 "none started; last result %s",
                                            task, nominal, attempts, last);
                        }
                }
        }
        json_decref(emitted);
        json_decref(ranges);
        json_decref(fires);
        json_decref(outcomes);
        json_decref(skips);
        json_decref(running);
}

json_t *tbt_fires_report_json(const tbt_fires_report_t *rep) {
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O}",
                         "tasks", (json_int_t)rep->tasks, "expected", (json_int_t)rep->expected,
                         "fired", (json_int_t)rep->fired, "skipped", (json_int_t)rep->skipped,
                         "executed", (json_int_t)rep->executed, "policy_skipped",
                         (json_int_t)rep->policy_skipped, "retried", (json_int_t)rep->retried,
                         "reexecuted", (json_int_t)rep->reexecuted, "misfires",
                         (json_int_t)rep->misfires, "runs_total", (json_int_t)rep->runs_total,
                         "duplicated", (json_int_t)rep->duplicated, "lost",
                         (json_int_t)rep->lost, "max_fire_lag_ms",
                         (json_int_t)rep->max_fire_lag_ms, "problems", rep->problems);
}

void tbt_fires_report_clear(tbt_fires_report_t *rep) {
        json_decref(rep->problems);
        rep->problems = NULL;
}
