/**
 * @file task/calendars.c
 * @brief A task's calendar rules (TaskSpec.calendars, docs/scheduling.md
 *        "Calendars"): their validation as part of tb_task_validate(), reading
 *        them back from a normalized task or a TaskSpec, and applying them
 *        with the calendars resolved, a missing one failing closed.
 *
 * The normalized form is the Avro one, so that the REST task and the spec
 * carry the same array (task/spec.c copies it):
 * [{"calendar": "fr-holidays", "rule": "EXCLUDE"}]. A rule is read in any
 * case ("roll_next" is ROLL_NEXT).
 *
 * Validation has no database: that the calendars exist in the task's group
 * is checked by the API when it can reach PostgreSQL; a fire of a task whose
 * calendar is missing when it fires is skipped, "calendar 'x' does not
 * exist" (tb_task_cals_apply()).
 */
#include "task/task_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const tb_task_cal_fields[] = {"calendar", "rule", NULL};
/** The Avro symbols of CalendarRuleKind, in tb_calendar_rule_kind_t order. */
const char *const tb_task_cal_rule_syms[] = {"EXCLUDE", "ONLY", "ROLL_NEXT", "ROLL_PREVIOUS",
                                             NULL};

bool tb_task_calendar_name_ok(const char *name) {
        size_t len = name ? strlen(name) : 0;
        if (len < 1 || len > TB_CALENDAR_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.' || c == ':'))
                        return false;
        }
        return true;
}

static int tb_task_cal_rule_index(const char *s) {
        for (int i = 0; tb_task_cal_rule_syms[i]; i++)
                if (!strcasecmp(tb_task_cal_rule_syms[i], s))
                        return i;
        return -1;
}

tb_err_t tb_task_v_calendars(const json_t *v, json_t *out, tb_task_err_t *err, bool *oom) {
        char field[64];
        json_t *arr = json_array();
        bool seen_next = false, seen_prev = false;
        tb_err_t rc = TB_OK;
        if (!arr) {
                *oom = true;
                return TB_OK;
        }
        if (v && !json_is_array(v)) {
                rc = tb_task_type_fail(err, "calendars",
                                       "an array of {calendar, rule} (e.g. [{\"calendar\": "
                                       "\"fr-holidays\", \"rule\": \"EXCLUDE\"}])",
                                       v);
                goto fail;
        }
        if (json_array_size(v) > TB_TASK_CALENDARS_MAX) {
                rc = tb_task_fail(err, "calendars",
                                  "calendars: %zu rules; at most %d allowed (put the days in "
                                  "fewer calendars)",
                                  json_array_size(v), TB_TASK_CALENDARS_MAX);
                goto fail;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
                const json_t *e = json_array_get(v, i);
                tb_snprintf(field, sizeof(field), "calendars[%zu]", i);
                if (!json_is_object(e)) {
                        rc = tb_task_type_fail(err, field, "an object {calendar, rule}", e);
                        goto fail;
                }
                if ((rc = tb_task_check_keys(e, field, tb_task_cal_fields, NULL, err)))
                        goto fail;
                const json_t *c = tb_task_get(e, "calendar");
                const char *name;
                tb_snprintf(field, sizeof(field), "calendars[%zu].calendar", i);
                if (!c) {
                        rc = tb_task_fail(err, field,
                                          "%s: required: the name of a calendar of the task's "
                                          "security group (GET /v1/calendars lists them)",
                                          field);
                        goto fail;
                }
                if ((rc = tb_task_string(c, field, false, &name, NULL, NULL, err)))
                        goto fail;
                if (!tb_task_calendar_name_ok(name)) {
                        rc = tb_task_fail(err, field,
                                          "%s: '%.64s' is not a calendar name: 1 to %d of "
                                          "A-Z a-z 0-9 - _ . :",
                                          field, name, TB_CALENDAR_NAME_MAX);
                        goto fail;
                }
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(json_string_value(json_object_get(json_array_get(arr, j),
                                                                      "calendar")),
                                    name)) {
                                rc = tb_task_fail(err, field,
                                                  "%s: calendar '%s' is already named by "
                                                  "calendars[%zu]; name each calendar once",
                                                  field, name, j);
                                goto fail;
                        }
                const json_t *r = tb_task_get(e, "rule");
                tb_snprintf(field, sizeof(field), "calendars[%zu].rule", i);
                int kind = TB_CALENDAR_EXCLUDE;
                if (r) {
                        const char *rs;
                        if ((rc = tb_task_string(r, field, false, &rs, NULL, NULL, err)))
                                goto fail;
                        if ((kind = tb_task_cal_rule_index(rs)) < 0) {
                                rc = tb_task_fail(err, field,
                                                  "%s: '%.32s' is not a rule; one of EXCLUDE, "
                                                  "ONLY, ROLL_NEXT, ROLL_PREVIOUS",
                                                  field, rs);
                                goto fail;
                        }
                }
                seen_next |= kind == TB_CALENDAR_ROLL_NEXT;
                seen_prev |= kind == TB_CALENDAR_ROLL_PREVIOUS;
                if (seen_next && seen_prev) {
                        rc = tb_task_fail(err, field,
                                          "%s: roll_next and roll_previous cannot both be used "
                                          "by one task (keep one direction)",
                                          field);
                        goto fail;
                }
                json_t *o = json_pack("{s:s, s:s}", "calendar", name, "rule",
                                      tb_task_cal_rule_syms[kind]);
                if (!o || json_array_append_new(arr, o))
                        *oom = true;
        }
        if (json_array_size(arr))
                tb_task_put(out, "calendars", arr, oom);
        else
                json_decref(arr);
        return TB_OK;
fail:
        json_decref(arr);
        return rc;
}

tb_err_t tb_task_calendars(const json_t *task, tb_task_calendar_t *out, size_t *n, char *errstr,
                           size_t errstr_size) {
        const json_t *v = json_object_get(task, "calendars");
        *n = 0;
        if (!v || json_is_null(v))
                return TB_OK;
        if (!json_is_array(v) || json_array_size(v) > TB_TASK_CALENDARS_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "calendars: not an array of at most %d rules",
                                 TB_TASK_CALENDARS_MAX);
        for (size_t i = 0; i < json_array_size(v); i++) {
                const json_t *e = json_array_get(v, i);
                const char *name = json_string_value(json_object_get(e, "calendar"));
                const char *rule = json_string_value(json_object_get(e, "rule"));
                int kind = rule ? tb_task_cal_rule_index(rule) : TB_CALENDAR_EXCLUDE;
                if (!tb_task_calendar_name_ok(name) || kind < 0)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "calendars[%zu]: not a {calendar, rule} this version "
                                         "reads",
                                         i);
                tb_snprintf(out[i].name, sizeof(out[i].name), "%s", name);
                out[i].rule = (tb_calendar_rule_kind_t)kind;
                *n = i + 1;
        }
        return TB_OK;
}

/* ---- applying, with the calendars resolved ---------------------------- */

void tb_task_cals_clear(tb_task_cals_t *c) {
        for (size_t i = 0; i < c->n; i++)
                tb_calendar_free(c->owned[i]);
        memset(c, 0, sizeof(*c));
}

/* A decision that skips \p nominal_ms for the unresolved reason. */
static void tb_task_cals_unresolved(const tb_task_cals_t *c, int64_t nominal_ms,
                                    tb_calendar_decision_t *out) {
        memset(out, 0, sizeof(*out));
        out->verdict = TB_CALENDAR_SKIPPED;
        out->nominal_ms = nominal_ms;
        out->fire_ms = nominal_ms;
        tb_snprintf(out->reason, sizeof(out->reason), "%s", c->unresolved);
}

tb_err_t tb_task_cals_apply(const tb_task_cals_t *c, const tb_tz_t *local_tz, int64_t nominal_ms,
                            tb_calendar_decision_t *out, char *errstr, size_t errstr_size) {
        if (c->unresolved[0]) {
                tb_task_cals_unresolved(c, nominal_ms, out);
                return TB_OK;
        }
        tb_err_t err = tb_calendar_apply(c->rules, c->n, local_tz, nominal_ms, out, errstr,
                                         errstr_size);
        if (err == TB_ERR_INVALID) {
                /* a day outside a calendar's span: never a guess, never a run */
                memset(out, 0, sizeof(*out));
                out->verdict = TB_CALENDAR_SKIPPED;
                out->nominal_ms = out->fire_ms = nominal_ms;
                tb_snprintf(out->reason, sizeof(out->reason), "%s", errstr);
                return TB_OK;
        }
        return err;
}

tb_err_t tb_task_cals_plan(const tb_task_cals_t *c, const tb_schedule_t *s, int64_t after_ms,
                           size_t count, tb_calendar_decision_t *out, size_t *nout,
                           char *errstr, size_t errstr_size) {
        if (!c->unresolved[0])
                return tb_calendar_plan(s, c->rules, c->n, after_ms, count, out, nout, errstr,
                                        errstr_size);
        *nout = 0;
        int64_t at = after_ms;
        while (*nout < count) {
                int64_t n;
                tb_err_t err = tb_schedule_next(s, at, &n, NULL, errstr, errstr_size);
                if (err == TB_ERR_NOT_FOUND)
                        break;
                if (err)
                        return err;
                tb_task_cals_unresolved(c, n, &out[(*nout)++]);
                at = n;
        }
        return TB_OK;
}

/* (fire_ms, index) for finding the occurrences rolled onto one instant. */
typedef struct tb_task_cal_at {
        int64_t ms;
        size_t i;
} tb_task_cal_at_t;

static int tb_task_cal_at_cmp(const void *a, const void *b) {
        const tb_task_cal_at_t *x = a, *y = b;
        if (x->ms != y->ms)
                return x->ms < y->ms ? -1 : 1;
        return x->i < y->i ? -1 : x->i > y->i;
}

tb_err_t tb_task_cals_decide(const tb_task_cals_t *c, const tb_tz_t *local_tz,
                             const int64_t *nominal, size_t n, tb_calendar_decision_t *out,
                             char *errstr, size_t errstr_size) {
        tb_task_cal_at_t *at = calloc(n ? n : 1, sizeof(*at));
        size_t k = 0;
        if (!at)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "calendars: out of memory");
        for (size_t i = 0; i < n; i++) {
                tb_err_t err = tb_task_cals_apply(c, local_tz, nominal[i], &out[i], errstr,
                                                  errstr_size);
                if (err) {
                        free(at);
                        return err;
                }
                if (out[i].verdict == TB_CALENDAR_FIRE || out[i].verdict == TB_CALENDAR_MOVED)
                        at[k++] = (tb_task_cal_at_t){out[i].fire_ms, i};
        }
        /* one run per instant, owned by the earliest nominal occurrence */
        qsort(at, k, sizeof(*at), tb_task_cal_at_cmp);
        for (size_t j = 1; j < k; j++) {
                if (at[j].ms != at[j - 1].ms)
                        continue;
                tb_calendar_decision_t *d = &out[at[j].i];
                char owner[32];
                tb_time_format(out[at[j - 1].i].nominal_ms, owner);
                char was[sizeof(d->reason)];
                memcpy(was, d->reason, sizeof(was));
                d->verdict = TB_CALENDAR_DUPLICATE;
                /* the words of tb_calendar_plan() */
                tb_snprintf(d->reason, sizeof(d->reason),
                            "%s%sthe occurrence of %s already runs at that instant", was,
                            was[0] ? "; " : "", owner);
                at[j].i = at[j - 1].i; /* the owner stays the earliest */
        }
        free(at);
        return TB_OK;
}

tb_err_t tb_task_cals_decision_json(const tb_calendar_decision_t *d, json_t *obj) {
        char at[32];
        bool oom = false;
        tb_task_put(obj, "verdict", json_string(tb_calendar_verdict_name(d->verdict)), &oom);
        if (d->verdict == TB_CALENDAR_FIRE || d->verdict == TB_CALENDAR_MOVED) {
                tb_time_format(d->fire_ms, at);
                tb_task_put(obj, "fire_time", json_string(at), &oom);
        } else {
                tb_task_put(obj, "fire_time", json_null(), &oom);
        }
        tb_task_put(obj, "reason", d->reason[0] ? json_string(d->reason) : json_null(), &oom);
        tb_task_put(obj, "calendar",
                    d->calendar ? json_string(tb_calendar_name(d->calendar)) : json_null(), &oom);
        return oom ? TB_ERR_NOMEM : TB_OK;
}

tb_err_t tb_task_cals_annotate(const tb_task_cals_t *c, const tb_schedule_t *s, int64_t after_ms,
                               json_t *fires, char *errstr, size_t errstr_size) {
        size_t n = json_array_size(fires), got = 0;
        tb_calendar_decision_t *d = calloc(n ? n : 1, sizeof(*d));
        if (!d)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "calendars: out of memory");
        tb_err_t err = tb_task_cals_plan(c, s, after_ms, n, d, &got, errstr, errstr_size);
        for (size_t i = 0; !err && i < got && i < n; i++)
                if (tb_task_cals_decision_json(&d[i], json_array_get(fires, i)))
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                        "calendars: out of memory");
        free(d);
        return err;
}

tb_err_t tb_task_calendars_check(const json_t *v, json_t *out, tb_task_err_t *err, bool *oom) {
        if (err) {
                err->field[0] = '\0';
                err->message[0] = '\0';
        }
        return tb_task_v_calendars(json_is_null(v) ? NULL : v, out, err, oom);
}
