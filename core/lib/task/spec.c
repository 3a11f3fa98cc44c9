/**
 * @file task/spec.c
 * @brief The normalized task JSON and its conversions: to and from the Avro
 *        TaskSpec (serde mapping) and to a tb_schedule_t.
 */
#include "task/after.h"
#include "task/task_internal.h"

#include <stdio.h>
#include <string.h>

const char *const tb_task_overlap_names[] = {"forbid", "allow", "replace", NULL};
const char *const tb_task_overlap_syms[] = {"FORBID", "ALLOW", "REPLACE", NULL};
const char *const tb_task_misfire_names[] = {"run_once", "skip", "run_all", NULL};
const char *const tb_task_misfire_syms[] = {"RUN_ONCE", "SKIP", "RUN_ALL", NULL};
const char *const tb_task_gap_syms[] = {"SHIFT", "SKIP", NULL};
const char *const tb_task_olap_syms[] = {"FIRST", "LAST", "BOTH", NULL};

/* ---- output helpers ---------------------------------------------------- */

/** Set \p key to \p v (stolen), remembering an allocation failure. */
void tb_task_put(json_t *obj, const char *key, json_t *v, bool *oom) {
        if (!v || json_object_set_new(obj, key, v))
                *oom = true;
}

json_t *tb_task_json_time(int64_t ms) {
        char buf[32];
        if (!ms)
                return json_null();
        tb_time_format(ms, buf);
        return json_string(buf);
}

json_t *tb_task_json_duration(int64_t ms) {
        char buf[48];
        tb_units_duration_format_iso8601(ms, buf, sizeof(buf));
        return json_string(buf);
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

/** Put \p key = to[i] where \p v is from[i]. A value not in \p from, or no
 *  value unless \p optional, makes the conversion \p bad (to[0] is put). */
static void tb_task_put_mapped(json_t *obj, const char *key, const json_t *v, bool optional,
                               const char *const *from, const char *const *to, bool *bad,
                               bool *oom) {
        int i = 0;
        if ((v || !optional) && (i = tb_task_index(from, v, false)) < 0)
                *bad = true, i = 0;
        tb_task_put(obj, key, json_string(to[i]), oom);
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

/* The arrays added in TaskEvent v2 (parameters, notify, calendars) have the
 * same shape in the REST API and in Avro: copied as they are. The spec
 * (\p to_spec) always has them, [] when absent; the REST task only when not
 * empty. Sets *bad when one is present but not an array. */
static void tb_task_put_arrays(json_t *dst, const json_t *src, bool to_spec, bool *bad,
                               bool *oom) {
        static const char *const keys[] = {"parameters", "notify", "calendars"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                json_t *v = json_object_get(src, keys[i]);
                *bad |= v && !json_is_array(v);
                if (v && json_array_size(v))
                        tb_task_put(dst, keys[i], json_deep_copy(v), oom);
                else if (to_spec)
                        tb_task_put(dst, keys[i], json_array(), oom);
        }
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
        tb_task_put_mapped(sv, "dst_gap", json_object_get(sched, "dst_gap"), true,
                           tb_schedule_dst_gap_names, tb_task_gap_syms, &bad, &oom);
        tb_task_put_mapped(sv, "dst_overlap", json_object_get(sched, "dst_overlap"), true,
                           tb_schedule_dst_overlap_names, tb_task_olap_syms, &bad, &oom);
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
        tb_task_put_mapped(spec, "overlap", json_object_get(task, "overlap"), false,
                           tb_task_overlap_names, tb_task_overlap_syms, &bad, &oom);
        tb_task_put_mapped(spec, "misfire", json_object_get(task, "misfire"), false,
                           tb_task_misfire_names, tb_task_misfire_syms, &bad, &oom);
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
        tb_task_put_arrays(spec, task, true, &bad, &oom);
        tb_task_after_to_spec(spec, task, &bad, &oom);
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
        tb_task_put_mapped(sv, "dst_gap", json_object_get(sched, "dst_gap"), true,
                           tb_task_gap_syms, tb_schedule_dst_gap_names, &bad, &oom);
        tb_task_put_mapped(sv, "dst_overlap", json_object_get(sched, "dst_overlap"), true,
                           tb_task_olap_syms, tb_schedule_dst_overlap_names, &bad, &oom);
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
        tb_task_put_mapped(t, "overlap", json_object_get(spec, "overlap"), false,
                           tb_task_overlap_syms, tb_task_overlap_names, &bad, &oom);
        tb_task_put_mapped(t, "misfire", json_object_get(spec, "misfire"), false,
                           tb_task_misfire_syms, tb_task_misfire_names, &bad, &oom);
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
        tb_task_put_arrays(t, spec, false, &bad, &oom);
        tb_task_after_from_spec(t, spec, &bad, &oom);
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
            (gap = tb_task_index(tb_schedule_dst_gap_names, v, true)) < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schedule.dst_gap: use 'shift' or 'skip'");
        if ((v = json_object_get(sched, "dst_overlap")) &&
            (olap = tb_task_index(tb_schedule_dst_overlap_names, v, true)) < 0)
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

tb_err_t tb_task_schedule_fires(const tb_schedule_t *s, int64_t after_ms, size_t count,
                                json_t **out, char *errstr, size_t errstr_size) {
        if (!out)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "schedule: no output");
        *out = NULL;
        json_t *fires = json_array();
        if (!fires)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "schedule: out of memory");
        const tb_tz_t *tz = s && s->tz ? s->tz : tb_tz_utc();
        int32_t prev_off = tb_tz_offset_at(tz, after_ms / 1000);
        int64_t after = after_ms;
        bool oom = false;
        tb_err_t rc = TB_OK;
        for (size_t i = 0; i < count && !oom; i++) {
                int64_t next;
                int note = TB_DST_NOTE_NONE;
                rc = tb_schedule_next(s, after, &next, &note, errstr, errstr_size);
                if (rc == TB_ERR_NOT_FOUND) {
                        rc = TB_OK;
                        break;
                }
                if (rc)
                        break;
                char utc[32], local[40];
                tb_time_format(next, utc);
                tb_tz_format_local(tz, next, local);
                int32_t off = tb_tz_offset_at(tz, next / 1000);
                json_t *f = json_pack("{s:s, s:s, s:i, s:b, s:s}", "at", utc, "local", local,
                                      "offset_seconds", (int)off, "offset_changed",
                                      off != prev_off, "dst", tb_schedule_dst_note_name(note));
                oom = !f || json_array_append_new(fires, f);
                prev_off = off;
                after = next;
        }
        if (!rc && oom)
                rc = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "schedule: out of memory");
        if (rc) {
                json_decref(fires);
                return rc;
        }
        *out = fires;
        return TB_OK;
}
