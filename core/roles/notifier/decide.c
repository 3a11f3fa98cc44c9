/**
 * @file notifier/decide.c
 * @brief From a run's result to the notifications its task's rules ask for
 *        (docs/notifications.md, "When a rule fires").
 *
 * A final outcome is "succeeded" (SUCCEEDED) or "failed": a failure the
 * scheduler retries no more (FAILED, TIMED_OUT, LOST or an infrastructure
 * error, at attempt >= the task's retries.max_attempts: the scheduler's own
 * rule, task/snapshot.h). A retried attempt is no outcome: it notifies
 * nothing and leaves the state. Events, from the outcome and the task's
 * previous one (notify_state; none counts as succeeded):
 *   failure       a final failure
 *   recovery      succeeded after failed
 *   state_change  either transition
 *   skipped       a fire not run (SKIPPED_OVERLAP, SKIPPED_MISFIRE, SKIPPED_PAUSED)
 * Each (run, rule, event) is inserted once (store/notify.h), so a result read
 * again notifies nothing more.
 */
#include "notifier.h"
#include "store/notify.h"
#include "store/tasks.h"
#include "task/snapshot.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *tb_notifier_jstr(const json_t *o, const char *k) {
        const char *s = json_string_value(json_object_get(o, k));
        return s ? s : "";
}

/** An epoch ms member of \p rr as RFC 3339, or null. */
static json_t *tb_notifier_jtime(const json_t *rr, const char *k) {
        const json_t *v = json_object_get(rr, k);
        if (!json_is_integer(v))
                return json_null();
        char buf[32];
        tb_time_format(json_integer_value(v), buf);
        return json_string(buf);
}

static json_t *tb_notifier_jcopy(const json_t *rr, const char *k) {
        const json_t *v = json_object_get(rr, k);
        return v ? json_deep_copy(v) : json_null();
}

/** The facts every notification of \p rr carries (no secret: stored as is). */
static json_t *tb_notifier_facts(const json_t *rr, const char *name, const char *group,
                                 int max_attempts, const char *previous) {
        char status[32];
        size_t i = 0;
        for (const char *s = tb_notifier_jstr(rr, "status"); *s && i + 1 < sizeof(status); s++)
                status[i++] = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
        status[i] = '\0';
        return json_pack("{s:{s:s,s:s,s:s},s:{s:s,s:o,s:I,s:i,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:I},"
                         "s:s?}",
                         "task", "id", tb_notifier_jstr(rr, "task_id"), "name", name,
                         "security_group", group, "run", "id", tb_notifier_jstr(rr, "run_id"),
                         "nominal_time", tb_notifier_jtime(rr, "nominal_time"), "attempt",
                         (json_int_t)json_integer_value(json_object_get(rr, "attempt")),
                         "max_attempts", max_attempts, "status", status, "exit_code",
                         tb_notifier_jcopy(rr, "exit_code"), "signal",
                         tb_notifier_jcopy(rr, "signal"), "error",
                         tb_notifier_jcopy(rr, "error"), "started_at",
                         tb_notifier_jtime(rr, "started_at"), "finished_at",
                         tb_notifier_jtime(rr, "finished_at"), "host",
                         tb_notifier_jcopy(rr, "host"), "occurrences",
                         (json_int_t)json_integer_value(json_object_get(rr, "occurrences")),
                         "previous_outcome", previous);
}

tb_err_t tb_notifier_decide(PGconn *conn, const json_t *rr, size_t *decided, char *errstr,
                            size_t errstr_size) {
        const char *st = tb_notifier_jstr(rr, "status");
        const char *task_id = tb_notifier_jstr(rr, "task_id");
        const char *run_id = tb_notifier_jstr(rr, "run_id");
        bool infra = json_is_true(json_object_get(rr, "infra_error"));
        if (!*task_id || !*run_id || !strcmp(st, "RUNNING") || !strcmp(st, "DUPLICATE"))
                return TB_OK;
        bool skipped = !strncmp(st, "SKIPPED", 7);
        bool failure = tb_task_result_retryable(st, infra);
        bool success = !strcmp(st, "SUCCEEDED");
        if (!skipped && !failure && !success)
                return TB_OK; /* CANCELLED, EXPIRED: no outcome */

        PGresult *tr = NULL;
        tb_err_t err = tb_store_tasks_get_any(conn, task_id, &tr, errstr, errstr_size);
        if (err)
                return err;
        if (PQntuples(tr) != 1) {
                PQclear(tr);
                /* deleted since: no rules, and its outcome is no one's */
                return tb_store_notify_state_delete(conn, task_id, errstr, errstr_size);
        }
        json_error_t je;
        json_t *spec = json_loads(PQgetvalue(tr, 0, 2), 0, &je);
        /* tr lives to the end: the name and group are its strings */
        const char *name = PQgetvalue(tr, 0, 0), *group = PQgetvalue(tr, 0, 1);
        json_t *retries = json_object_get(spec, "retries");
        json_int_t max_attempts = json_integer_value(json_object_get(retries, "max_attempts"));
        if (max_attempts < 1)
                max_attempts = 1;
        int64_t nominal = json_integer_value(json_object_get(rr, "nominal_time"));
        int attempt = (int)json_integer_value(json_object_get(rr, "attempt"));
        if (attempt < 1)
                attempt = 1;
        if (failure && attempt < max_attempts)
                goto out; /* retried: no outcome yet */

        const char *events[3];
        size_t n = 0;
        const char *previous = NULL;
        tb_store_notify_state_t prev;
        if (skipped) {
                events[n++] = "skipped";
        } else {
                if ((err = tb_store_notify_state_get(conn, task_id, &prev, errstr, errstr_size)))
                        goto out;
                bool newer = !prev.found || nominal > prev.nominal_ms ||
                             (nominal == prev.nominal_ms && attempt >= prev.attempt);
                const char *outcome = success ? "succeeded" : "failed";
                const char *was = prev.found ? prev.outcome : "succeeded";
                previous = prev.found ? prev.outcome : NULL;
                if (failure)
                        events[n++] = "failure";
                /* a late result of an older run moves nothing back */
                if (newer && strcmp(was, outcome)) {
                        if (success)
                                events[n++] = "recovery";
                        events[n++] = "state_change";
                }
                if (newer && (err = tb_store_notify_state_set(conn, task_id, outcome, run_id,
                                                              nominal, attempt, errstr,
                                                              errstr_size)))
                        goto out;
        }

        json_t *rules = json_object_get(spec, "notify");
        size_t i;
        json_t *rule;
        json_array_foreach(rules, i, rule) {
                const char *channel = tb_notifier_jstr(rule, "channel");
                json_t *on = json_object_get(rule, "on");
                for (size_t k = 0; k < n; k++) {
                        bool wanted = false;
                        for (size_t j = 0; j < json_array_size(on); j++) {
                                const char *e = json_string_value(json_array_get(on, j));
                                wanted |= e && !strcmp(e, events[k]);
                        }
                        if (!wanted)
                                continue;
                        json_t *facts = tb_notifier_facts(rr, name, group, (int)max_attempts,
                                                          previous);
                        char *text = facts ? json_dumps(facts, JSON_COMPACT) : NULL;
                        json_decref(facts);
                        if (!text) {
                                /* not memory: a value jansson refuses; set aside, not retried */
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "notifier: cannot build the notification of "
                                                "run %.64s",
                                                run_id);
                                goto out;
                        }
                        tb_store_notify_new_t nn = {
                                .run_id = run_id,
                                .rule_index = (int)i,
                                .event = events[k],
                                .task_id = task_id,
                                .security_group = group,
                                .channel = channel,
                                .facts = text,
                        };
                        int64_t id = 0;
                        err = tb_store_notify_insert(conn, &nn, &id, errstr, errstr_size);
                        free(text);
                        if (err)
                                goto out;
                        if (id > 0)
                                (*decided)++;
                }
        }
out:
        json_decref(spec);
        PQclear(tr);
        return err;
}
