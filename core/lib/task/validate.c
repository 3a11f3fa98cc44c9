/**
 * @file task/validate.c
 * @brief The one validator of a task body for every interface (REST, Kafka
 *        commands, CLI), producing the normalized JSON form.
 *
 * Validation walks the fields in a fixed order so the same bad body always
 * yields the same error. Every message starts with the field path and says
 * what is allowed, because it is returned verbatim to REST clients.
 */
#include "task/after.h"
#include "task/task_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_TASK_ARG_MAX 4096            /* bytes per argv entry */
#define TB_TASK_OPTION_VALUE_MAX 4096   /* bytes per executor option value */
#define TB_TASK_OPTION_KEY_MAX 128      /* bytes per executor option key */
#define TB_TASK_LABEL_KEY_MAX 63
#define TB_TASK_IDENT_MAX 64            /* executor and region names */
#define TB_TASK_PAST_TOLERANCE_MS 1000  /* clock skew between client and API */
#define TB_TASK_EXPIRY_DEFAULT_MS TB_HOUR(1)
#define TB_TASK_EXPIRY_MAX_MS TB_DAY(7)
#define TB_TASK_BACKOFF_DEFAULT_MS TB_SEC(10)
#define TB_TASK_BACKOFF_MAX_DEFAULT_MS TB_MIN(10)
#define TB_TASK_LOG_RETENTION_FALLBACK_MS TB_DAY(30)
/* Bounds that keep a fire or retry time a time every consumer can hold. */
#define TB_TASK_JITTER_MAX_MS TB_DAY(1)
#define TB_TASK_BACKOFF_LIMIT_MS TB_DAY(1)

/** Writable top-level fields, in the order of the normalized form. */
static const char *const tb_task_fields[] = {
        "name",     "script",        "argv",   "security_group", "user_id",
        "schedule", "execution_time", "expiry", "executor",       "executor_options",
        "retries",  "overlap",       "misfire", "jitter",         "expires_at",
        "log_retention", "paused",   "labels", "home_region",     "calendars",
        "notify",   "parameters",
        "after", "after_mode", "after_deadline", /* task/after.c */
        NULL,
};

/** Fields a GET returns that a PUT may echo back: ignored on input. */
static const char *const tb_task_readonly[] = {
        "id", "version", "created_at", "updated_at", "created_by", "next_fire_at",
        "parents", "children", /* api/deps.c */
        NULL,
};

static const char *const tb_task_schedule_fields[] = {
        "once", "every", "cron", "timezone", "start_at", "end_at",
        "dst_gap", "dst_overlap", NULL,
};

static const char *const tb_task_retries_fields[] = {
        "max_attempts", "backoff", "backoff_max", NULL,
};

/* ---- validation -------------------------------------------------------- */

/** tb_task_fail() with \p fmt's three %s given the field name, then \p a_ms and
 *  \p b_ms as ISO 8601 durations. */
static tb_err_t tb_task_fail_durations(tb_task_err_t *err, const char *field, const char *fmt,
                                       int64_t a_ms, int64_t b_ms)
        __attribute__((format(printf, 3, 0)));
static tb_err_t tb_task_fail_durations(tb_task_err_t *err, const char *field, const char *fmt,
                                       int64_t a_ms, int64_t b_ms) {
        char a[48], b[48];
        tb_units_duration_format_iso8601(a_ms, a, sizeof(a));
        tb_units_duration_format_iso8601(b_ms, b, sizeof(b));
        return tb_task_fail(err, field, fmt, field, a, b);
}

/** Refuse an instant \p at_ms in the past (beyond the clock skew allowed);
 *  \p alternative ends the advice ("give a future time<alternative>"). */
static tb_err_t tb_task_v_future(int64_t at_ms, const tb_task_vctx_t *vctx, const char *field,
                                 const char *alternative, tb_task_err_t *err) {
        if (at_ms >= vctx->now_ms - TB_TASK_PAST_TOLERANCE_MS)
                return TB_OK;
        char a[32], b[32];
        tb_time_format(at_ms, a);
        tb_time_format(vctx->now_ms, b);
        return tb_task_fail(err, field,
                            "%s: %s is in the past (now is %s); give a future time%s", field,
                            a, b, alternative);
}

static tb_err_t tb_task_v_schedule(const json_t *in, const tb_task_vctx_t *vctx,
                                   json_t *out, int64_t *period_ms, tb_task_err_t *err,
                                   bool *oom) {
        json_t *sched = tb_task_get(in, "schedule");
        json_t *exec_time = tb_task_get(in, "execution_time");
        json_t *sv = json_object();
        json_t *once = NULL, *every = NULL, *cron = NULL;
        tb_err_t rc;
        if (!sv) {
                *oom = true;
                return TB_OK;
        }
        *period_ms = 0;

        if (sched && exec_time) {
                rc = tb_task_fail(err, "execution_time",
                                  "execution_time: give either schedule or execution_time "
                                  "(the older form of {\"once\": ...}), not both");
                goto fail;
        }
        if (!sched && !exec_time) {
                rc = tb_task_fail(err, "schedule",
                                  "schedule: required: one of once, every, cron (e.g. "
                                  "{\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"})");
                goto fail;
        }
        const char *pfx = "schedule";
        if (exec_time) {
                once = exec_time;
                pfx = "execution_time";
        } else {
                if (!json_is_object(sched)) {
                        rc = tb_task_type_fail(err, "schedule",
                                               "an object with one of once, every, cron",
                                               sched);
                        goto fail;
                }
                if ((rc = tb_task_check_keys(sched, "schedule", tb_task_schedule_fields,
                                             NULL, err)))
                        goto fail;
                once = tb_task_get(sched, "once");
                every = tb_task_get(sched, "every");
                cron = tb_task_get(sched, "cron");
                int kinds = !!once + !!every + !!cron;
                if (kinds == 0) {
                        rc = tb_task_fail(err, "schedule",
                                          "schedule: required: one of once, every, cron");
                        goto fail;
                }
                if (kinds > 1) {
                        rc = tb_task_fail(err, "schedule",
                                          "schedule: give exactly one of once, every, cron "
                                          "(got %s%s%s%s%s)",
                                          once ? "once" : "", once ? ", " : "",
                                          every ? "every" : "", every && cron ? ", " : "",
                                          cron ? "cron" : "");
                        goto fail;
                }
        }

        char field[64];
        int64_t start_at = 0, end_at = 0;
        json_t *tzv = sched ? tb_task_get(sched, "timezone") : NULL;
        json_t *startv = sched ? tb_task_get(sched, "start_at") : NULL;
        json_t *endv = sched ? tb_task_get(sched, "end_at") : NULL;
        if (tzv && !cron) {
                rc = tb_task_fail(err, "schedule.timezone",
                                  "schedule.timezone: only applies to cron schedules (once "
                                  "takes an RFC 3339 time with its own offset)");
                goto fail;
        }
        if (once && (startv || endv)) {
                const char *f = startv ? "schedule.start_at" : "schedule.end_at";
                rc = tb_task_fail(err, f, "%s: only applies to every and cron schedules", f);
                goto fail;
        }

        if (once) {
                int64_t at;
                tb_snprintf(field, sizeof(field), "%s%s", pfx, exec_time ? "" : ".once");
                if ((rc = tb_task_time(once, field, &at, err)))
                        goto fail;
                if ((rc = tb_task_v_future(at, vctx, field, "", err)))
                        goto fail;
                tb_task_put(sv, "once", tb_task_json_time(at), oom);
        } else if (every) {
                int64_t ms;
                if ((rc = tb_task_duration(every, "schedule.every", &ms, err)))
                        goto fail;
                if (ms < TB_SCHEDULE_MIN_EVERY_MS) {
                        rc = tb_task_fail(err, "schedule.every",
                                          "schedule.every: the period must be at least 1 s "
                                          "(got %lld ms)",
                                          (long long)ms);
                        goto fail;
                }
                if (ms > TB_SCHEDULE_MAX_MS) {
                        rc = tb_task_fail(err, "schedule.every",
                                          "schedule.every: the period is too large");
                        goto fail;
                }
                *period_ms = ms;
                tb_task_put(sv, "every", tb_task_json_duration(ms), oom);
        } else {
                const char *expr, *zone = "UTC";
                char msg[256];
                tb_cron_t *c = NULL;
                const tb_tz_t *tz = NULL;
                if ((rc = tb_task_string(cron, "schedule.cron", false, &expr, NULL, NULL,
                                         err)))
                        goto fail;
                if (tb_cron_parse(expr, &c, msg, sizeof(msg))) {
                        const char *m = !strncmp(msg, "cron: ", 6) ? msg + 6 : msg;
                        rc = tb_task_fail(err, "schedule.cron", "schedule.cron: %s", m);
                        goto fail;
                }
                tb_cron_free(c);
                if (tzv && (rc = tb_task_string(tzv, "schedule.timezone", false, &zone,
                                                NULL, NULL, err)))
                        goto fail;
                if (tb_tz_open(zone, &tz, msg, sizeof(msg))) {
                        rc = tb_task_fail(err, "schedule.timezone", "schedule.timezone: %s",
                                          msg);
                        goto fail;
                }
                tb_task_put(sv, "cron", json_string(expr), oom);
                tb_task_put(sv, "timezone", json_string(tb_tz_name(tz)), oom);
        }
        if (!once) {
                if (startv && (rc = tb_task_time(startv, "schedule.start_at", &start_at, err)))
                        goto fail;
                if (endv && (rc = tb_task_time(endv, "schedule.end_at", &end_at, err)))
                        goto fail;
                if (start_at && end_at && end_at <= start_at) {
                        char a[32], b[32];
                        tb_time_format(start_at, a);
                        tb_time_format(end_at, b);
                        rc = tb_task_fail(err, "schedule.end_at",
                                          "schedule.end_at: %s must be after start_at %s", b,
                                          a);
                        goto fail;
                }
                tb_task_put(sv, "start_at", tb_task_json_time(start_at), oom);
                tb_task_put(sv, "end_at", tb_task_json_time(end_at), oom);
        }
        int gap = 0, olap = 0;
        if (sched && ((rc = tb_task_enum(tb_task_get(sched, "dst_gap"), "schedule.dst_gap",
                                         tb_schedule_dst_gap_names, &gap, err)) ||
                      (rc = tb_task_enum(tb_task_get(sched, "dst_overlap"),
                                         "schedule.dst_overlap",
                                         tb_schedule_dst_overlap_names, &olap, err))))
                goto fail;
        tb_task_put(sv, "dst_gap", json_string(tb_schedule_dst_gap_names[gap]), oom);
        tb_task_put(sv, "dst_overlap", json_string(tb_schedule_dst_overlap_names[olap]), oom);
        tb_task_put(out, "schedule", sv, oom);
        return TB_OK;
fail:
        json_decref(sv);
        return rc;
}

/** expires_at of \p in (absent: none) into \p out: a future instant or null. */
static tb_err_t tb_task_v_expires_at(const json_t *in, const tb_task_vctx_t *vctx, json_t *out,
                                     tb_task_err_t *err, bool *oom) {
        int64_t ms = 0;
        json_t *v = tb_task_get(in, "expires_at");
        tb_err_t rc;
        if (v && ((rc = tb_task_time(v, "expires_at", &ms, err)) ||
                  (rc = tb_task_v_future(ms, vctx, "expires_at", " or null", err))))
                return rc;
        tb_task_put(out, "expires_at", tb_task_json_time(ms), oom);
        return TB_OK;
}

/** An object of string values (numbers and booleans converted when
 *  \p convert) for executor_options and labels. */
static tb_err_t tb_task_v_map(const json_t *v, const char *fname, bool labels,
                              json_t *out, tb_task_err_t *err, bool *oom) {
        json_t *m = json_object();
        tb_err_t rc;
        if (!m) {
                *oom = true;
                return TB_OK;
        }
        size_t max = labels ? TB_TASK_LABELS_MAX : TB_TASK_OPTIONS_MAX;
        if (v) {
                if (!json_is_object(v)) {
                        rc = tb_task_type_fail(err, fname, "an object of string values", v);
                        goto fail;
                }
                if (json_object_size(v) > max) {
                        rc = tb_task_fail(err, fname, "%s: %zu entries; at most %zu allowed",
                                          fname, json_object_size(v), max);
                        goto fail;
                }
                const char *key;
                json_t *val;
                json_object_foreach((json_t *)v, key, val) {
                        char field[128], num[64];
                        size_t klen = strlen(key);
                        if (*key)
                                tb_snprintf(field, sizeof(field), "%s.%.64s", fname, key);
                        else
                                tb_snprintf(field, sizeof(field), "%s", fname);
                        if (labels) {
                                bool ok = klen >= 1 && klen <= TB_TASK_LABEL_KEY_MAX;
                                for (size_t i = 0; ok && i < klen; i++) {
                                        unsigned char c = (unsigned char)key[i];
                                        ok = isalnum(c) || c == '.' || c == '_' || c == '-' ||
                                             c == '/';
                                }
                                if (!ok) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: label keys are 1 to %d "
                                                          "characters of letters, digits, "
                                                          "'.', '_', '-' and '/'",
                                                          field, TB_TASK_LABEL_KEY_MAX);
                                        goto fail;
                                }
                        } else {
                                bool ok = klen >= 1 && klen <= TB_TASK_OPTION_KEY_MAX;
                                for (size_t i = 0; ok && i < klen; i++)
                                        ok = (unsigned char)key[i] >= 0x20 && key[i] != 0x7F;
                                if (!ok) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: option names are 1 to %d "
                                                          "bytes without control characters",
                                                          field, TB_TASK_OPTION_KEY_MAX);
                                        goto fail;
                                }
                        }
                        const char *s;
                        size_t bytes, chars;
                        if (!labels && json_is_integer(val)) {
                                snprintf(num, sizeof(num), "%lld",
                                         (long long)json_integer_value(val));
                                s = num;
                        } else if (!labels && json_is_real(val)) {
                                snprintf(num, sizeof(num), "%.15g", json_real_value(val));
                                if (strtod(num, NULL) != json_real_value(val))
                                        snprintf(num, sizeof(num), "%.17g",
                                                 json_real_value(val));
                                s = num;
                        } else if (!labels && json_is_boolean(val)) {
                                s = json_is_true(val) ? "true" : "false";
                        } else {
                                if (!json_is_string(val)) {
                                        rc = tb_task_type_fail(err, field,
                                                               labels ? "a string"
                                                                      : "a string, number "
                                                                        "or boolean",
                                                               val);
                                        goto fail;
                                }
                                if ((rc = tb_task_string(val, field, !labels, &s, &bytes,
                                                         &chars, err)))
                                        goto fail;
                                if (labels && chars > TB_TASK_LABEL_LEN_MAX) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: label values are at most %d "
                                                          "characters (got %zu)",
                                                          field, TB_TASK_LABEL_LEN_MAX, chars);
                                        goto fail;
                                }
                                if (!labels && bytes > TB_TASK_OPTION_VALUE_MAX) {
                                        rc = tb_task_fail(err, field,
                                                          "%s: option values are at most %d "
                                                          "bytes (got %zu)",
                                                          field, TB_TASK_OPTION_VALUE_MAX,
                                                          bytes);
                                        goto fail;
                                }
                        }
                        tb_task_put(m, key, json_string(s), oom);
                }
        }
        tb_task_put(out, fname, m, oom);
        return TB_OK;
fail:
        json_decref(m);
        return rc;
}

static tb_err_t tb_task_v_retries(const json_t *v, json_t *out, tb_task_err_t *err,
                                  bool *oom) {
        int64_t attempts = 1, backoff = TB_TASK_BACKOFF_DEFAULT_MS,
                backoff_max = TB_TASK_BACKOFF_MAX_DEFAULT_MS;
        tb_err_t rc;
        if (v) {
                if (!json_is_object(v))
                        return tb_task_type_fail(err, "retries",
                                                 "an object with max_attempts, backoff, "
                                                 "backoff_max",
                                                 v);
                if ((rc = tb_task_check_keys(v, "retries", tb_task_retries_fields, NULL,
                                             err)))
                        return rc;
                json_t *a = tb_task_get(v, "max_attempts");
                if (a) {
                        if (!json_is_integer(a))
                                return tb_task_type_fail(err, "retries.max_attempts",
                                                         "an integer", a);
                        json_int_t n = json_integer_value(a);
                        if (n < 1 || n > TB_TASK_ATTEMPTS_MAX)
                                return tb_task_fail(err, "retries.max_attempts",
                                                    "retries.max_attempts: %lld is out of "
                                                    "range 1 to %d",
                                                    (long long)n, TB_TASK_ATTEMPTS_MAX);
                        attempts = n;
                }
                json_t *b = tb_task_get(v, "backoff");
                if (b && (rc = tb_task_duration(b, "retries.backoff", &backoff, err)))
                        return rc;
                json_t *bm = tb_task_get(v, "backoff_max");
                if (bm && (rc = tb_task_duration(bm, "retries.backoff_max", &backoff_max,
                                                 err)))
                        return rc;
                if (backoff > TB_TASK_BACKOFF_LIMIT_MS || backoff_max > TB_TASK_BACKOFF_LIMIT_MS)
                        return tb_task_fail_durations(
                                err, backoff > TB_TASK_BACKOFF_LIMIT_MS ? "retries.backoff"
                                                                        : "retries.backoff_max",
                                "%s: %s is more than the longest wait between attempts, %s",
                                backoff > TB_TASK_BACKOFF_LIMIT_MS ? backoff : backoff_max,
                                TB_TASK_BACKOFF_LIMIT_MS);
                if (backoff_max < backoff)
                        /* Only the field the user set is to blame. */
                        return tb_task_fail_durations(
                                err, bm ? "retries.backoff_max" : "retries.backoff",
                                "%s: backoff_max %s must be at least backoff %s", backoff_max,
                                backoff);
        }
        json_t *r = json_object();
        if (!r) {
                *oom = true;
                return TB_OK;
        }
        tb_task_put(r, "max_attempts", json_integer(attempts), oom);
        tb_task_put(r, "backoff", tb_task_json_duration(backoff), oom);
        tb_task_put(r, "backoff_max", tb_task_json_duration(backoff_max), oom);
        tb_task_put(out, "retries", r, oom);
        return TB_OK;
}

/** argv into *\p arr (new array, caller owns on success). */
static tb_err_t tb_task_v_argv(const json_t *v, json_t **arr, size_t *argc,
                               tb_task_err_t *err, bool *oom) {
        json_t *a = json_array();
        tb_err_t rc;
        *argc = 0;
        if (!a) {
                *oom = true;
                return TB_OK;
        }
        if (v) {
                if (!json_is_array(v)) {
                        rc = tb_task_type_fail(err, "argv", "an array of strings", v);
                        goto fail;
                }
                if (json_array_size(v) > TB_TASK_ARGV_MAX) {
                        rc = tb_task_fail(err, "argv", "argv: %zu entries; at most %d allowed",
                                          json_array_size(v), TB_TASK_ARGV_MAX);
                        goto fail;
                }
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e) {
                        char field[32];
                        const char *s;
                        size_t bytes;
                        tb_snprintf(field, sizeof(field), "argv[%zu]", i);
                        if ((rc = tb_task_string(e, field, true, &s, &bytes, NULL, err)))
                                goto fail;
                        if (bytes > TB_TASK_ARG_MAX) {
                                rc = tb_task_fail(err, field,
                                                  "%s: %zu bytes; each entry is at most %d",
                                                  field, bytes, TB_TASK_ARG_MAX);
                                goto fail;
                        }
                        if (i == 0 && bytes == 0) {
                                rc = tb_task_fail(err, field,
                                                  "%s: the program to run cannot be empty",
                                                  field);
                                goto fail;
                        }
                        if (json_array_append_new(a, json_string(s)))
                                *oom = true;
                }
                *argc = json_array_size(v);
        }
        *arr = a;
        return TB_OK;
fail:
        json_decref(a);
        return rc;
}

/** Most notify rules of one task. */
#define TB_TASK_NOTIFY_MAX 16

/** The events a notify rule may name (docs/notifications.md). */
static const char *const tb_task_notify_events[] = {
        "failure", "recovery", "state_change", "skipped", "long_running", NULL,
};

static const char *const tb_task_notify_fields[] = {"on", "channel", "after_ms", NULL};

/** notify (absent: none): rules {on: [events], channel, after_ms} into
 *  \p out, after_ms given exactly when on holds long_running. A channel is
 *  the deployment's (notify.channels): an unknown one is the notifier's to
 *  report, at delivery. */
static tb_err_t tb_task_v_notify(const json_t *v, json_t *out, tb_task_err_t *err, bool *oom) {
        json_t *a = json_array();
        tb_err_t rc;
        char field[64];
        if (!a) {
                *oom = true;
                return TB_OK;
        }
        if (v) {
                if (!json_is_array(v)) {
                        rc = tb_task_type_fail(err, "notify",
                                               "an array of rules like {\"on\": "
                                               "[\"failure\"], \"channel\": \"ops\"}",
                                               v);
                        goto fail;
                }
                if (json_array_size(v) > TB_TASK_NOTIFY_MAX) {
                        rc = tb_task_fail(err, "notify", "notify: %zu rules; at most %d allowed",
                                          json_array_size(v), TB_TASK_NOTIFY_MAX);
                        goto fail;
                }
        }
        size_t i;
        json_t *r;
        json_array_foreach(v, i, r) {
                tb_snprintf(field, sizeof(field), "notify[%zu]", i);
                if (!json_is_object(r)) {
                        rc = tb_task_type_fail(err, field,
                                               "an object with on, channel (and after_ms for "
                                               "long_running)",
                                               r);
                        goto fail;
                }
                if ((rc = tb_task_check_keys(r, field, tb_task_notify_fields, NULL, err)))
                        goto fail;
                json_t *on = tb_task_get(r, "on");
                tb_snprintf(field, sizeof(field), "notify[%zu].on", i);
                if (!json_is_array(on) || !json_array_size(on)) {
                        rc = on && !json_is_array(on)
                                     ? tb_task_type_fail(err, field, "an array of events", on)
                                     : tb_task_fail(err, field,
                                                    "%s: required: one or more of failure, "
                                                    "recovery, state_change, skipped, "
                                                    "long_running",
                                                    field);
                        goto fail;
                }
                json_t *ons = json_array(), *rule = json_object();
                if (!ons || !rule) {
                        json_decref(ons);
                        json_decref(rule);
                        *oom = true;
                        break;
                }
                tb_task_put(rule, "on", ons, oom);
                if (json_array_append_new(a, rule)) {
                        json_decref(rule);
                        *oom = true;
                        break;
                }
                bool seen[5] = {false};
                size_t j;
                json_t *e;
                json_array_foreach(on, j, e) {
                        int idx = -1;
                        tb_snprintf(field, sizeof(field), "notify[%zu].on[%zu]", i, j);
                        if ((rc = tb_task_enum(e, field, tb_task_notify_events, &idx, err)))
                                goto fail;
                        if (idx < 0) {
                                rc = tb_task_type_fail(err, field, "an event name", e);
                                goto fail;
                        }
                        if (seen[idx]) {
                                rc = tb_task_fail(err, field, "%s: '%s' is named twice", field,
                                                  tb_task_notify_events[idx]);
                                goto fail;
                        }
                        seen[idx] = true;
                        if (json_array_append_new(ons, json_string(tb_task_notify_events[idx])))
                                *oom = true;
                }
                const char *ch;
                tb_snprintf(field, sizeof(field), "notify[%zu].channel", i);
                json_t *chv = tb_task_get(r, "channel");
                if (!chv) {
                        rc = tb_task_fail(err, field,
                                          "%s: required: the name of a channel of the "
                                          "deployment's notify.channels (e.g. \"ops\")",
                                          field);
                        goto fail;
                }
                if ((rc = tb_task_ident(chv, field, TB_TASK_IDENT_MAX, false, &ch, err)))
                        goto fail;
                tb_task_put(rule, "channel", json_string(ch), oom);
                json_t *after = tb_task_get(r, "after_ms");
                tb_snprintf(field, sizeof(field), "notify[%zu].after_ms", i);
                if (seen[4] && !after) {
                        rc = tb_task_fail(err, field,
                                          "%s: required with long_running: how long (ms) a run "
                                          "may go on before it is notified",
                                          field);
                        goto fail;
                }
                if (!seen[4] && after) {
                        rc = tb_task_fail(err, field,
                                          "%s: only applies to long_running; add it to on or "
                                          "remove after_ms",
                                          field);
                        goto fail;
                }
                if (after && (!json_is_integer(after) || json_integer_value(after) < 1000 ||
                              json_integer_value(after) > TB_TASK_EXPIRY_MAX_MS)) {
                        rc = tb_task_fail(err, field,
                                          "%s: a number of milliseconds from 1000 (1 s) to "
                                          "604800000 (7 days)",
                                          field);
                        goto fail;
                }
                tb_task_put(rule, "after_ms",
                            after ? json_integer(json_integer_value(after)) : json_null(), oom);
        }
        /* as the REST task shows it (task/spec.c): no member when empty */
        if (json_array_size(a))
                tb_task_put(out, "notify", a, oom);
        else
                json_decref(a);
        return TB_OK;
fail:
        json_decref(a);
        return rc;
}

tb_err_t tb_task_validate(const json_t *in, const tb_task_vctx_t *vctx, json_t **out,
                          tb_task_err_t *err) {
        json_t *t = NULL, *v;
        tb_err_t rc;
        bool oom = false;
        const char *s;
        size_t bytes, chars;
        if (err) {
                err->field[0] = '\0';
                err->message[0] = '\0';
        }
        if (!out || !vctx)
                return tb_task_fail(err, "task", "task: internal error: no output or "
                                    "validation context");
        *out = NULL;
        if (!json_is_object(in))
                return tb_task_fail(err, "task", "task: expected a JSON object, got %s",
                                    in ? tb_task_jtype(in) : "nothing");
        if ((rc = tb_task_check_keys(in, "", tb_task_fields, tb_task_readonly, err)))
                return rc;
        if (!(t = json_object()))
                return tb_task_fail(err, "task", "task: out of memory");
        /* a task with after and no schedule gets its default one (task/after.h) */
        json_t *with_sched = tb_task_after_default_schedule(in);
        if (with_sched)
                in = with_sched;

        /* name */
        if (!(v = tb_task_get(in, "name"))) {
                rc = tb_task_fail(err, "name", "name: required: 1 to %d characters",
                                  TB_TASK_NAME_MAX);
                goto fail;
        }
        if ((rc = tb_task_string(v, "name", false, &s, NULL, &chars, err)))
                goto fail;
        if (chars < 1 || chars > TB_TASK_NAME_MAX) {
                rc = tb_task_fail(err, "name", "name: must be 1 to %d characters, got %zu",
                                  TB_TASK_NAME_MAX, chars);
                goto fail;
        }
        tb_task_put(t, "name", json_string(s), &oom);

        /* script and argv: a non-empty argv makes script optional (it is
         * then only what is displayed). */
        const char *script = "";
        v = tb_task_get(in, "script");
        if (v) {
                if ((rc = tb_task_string(v, "script", true, &script, &bytes, NULL, err)))
                        goto fail;
                if (bytes > TB_TASK_SCRIPT_MAX) {
                        rc = tb_task_fail(err, "script",
                                          "script: %zu bytes; at most %d (64 KiB) allowed",
                                          bytes, TB_TASK_SCRIPT_MAX);
                        goto fail;
                }
        }
        json_t *argv = NULL;
        size_t argc = 0;
        if ((rc = tb_task_v_argv(tb_task_get(in, "argv"), &argv, &argc, err, &oom)))
                goto fail;
        if (!*script && !argc) {
                json_decref(argv);
                rc = tb_task_fail(err, "script",
                                  "script: required: the command line to run (non-empty, "
                                  "at most 64 KiB), unless argv is given");
                goto fail;
        }
        tb_task_put(t, "script", json_string(script), &oom);
        tb_task_put(t, "argv", argv, &oom);

        /* security_group */
        if (!(v = tb_task_get(in, "security_group"))) {
                rc = tb_task_fail(err, "security_group",
                                  "security_group: required: 1 to %d characters of letters, "
                                  "digits, '.', '_' and '-'",
                                  TB_TASK_GROUP_MAX);
                goto fail;
        }
        if ((rc = tb_task_ident(v, "security_group", TB_TASK_GROUP_MAX, false, &s, err)))
                goto fail;
        tb_task_put(t, "security_group", json_string(s), &oom);

        /* user_id: the caller's identity, never the body's */
        v = tb_task_get(in, "user_id");
        const char *uid = vctx->user_id;
        if (v) {
                if ((rc = tb_task_string(v, "user_id", false, &s, &bytes, NULL, err)))
                        goto fail;
                if (uid && strcmp(s, uid)) {
                        rc = tb_task_fail_code(err, TB_ERR_FORBIDDEN, "user_id",
                                               "user_id: '%.64s' is not you ('%.64s'); omit "
                                               "user_id, it is taken from your credentials",
                                               s, uid);
                        goto fail;
                }
                if (!uid)
                        uid = s;
        }
        if (!uid || !*uid) {
                rc = tb_task_fail(err, "user_id", "user_id: required: no authenticated user");
                goto fail;
        }
        tb_task_put(t, "user_id", json_string(uid), &oom);

        /* schedule */
        int64_t period = 0;
        if ((rc = tb_task_v_schedule(in, vctx, t, &period, err, &oom)))
                goto fail;

        /* expiry */
        int64_t ms = TB_TASK_EXPIRY_DEFAULT_MS;
        if ((v = tb_task_get(in, "expiry"))) {
                if ((rc = tb_task_duration(v, "expiry", &ms, err)))
                        goto fail;
                if (ms <= 0 || ms > TB_TASK_EXPIRY_MAX_MS) {
                        char a[48];
                        tb_units_duration_format_iso8601(ms, a, sizeof(a));
                        rc = tb_task_fail(err, "expiry",
                                          "expiry: %s is out of range; the longest a run may "
                                          "last must be more than 0 and at most 7 days (P7D)",
                                          a);
                        goto fail;
                }
        }
        tb_task_put(t, "expiry", tb_task_json_duration(ms), &oom);

        /* executor */
        const char *executor = "shell";
        if ((v = tb_task_get(in, "executor")) &&
            (rc = tb_task_ident(v, "executor", TB_TASK_IDENT_MAX, false, &executor, err)))
                goto fail;
        if (vctx->executors) {
                char list[256] = "";
                size_t len = 0;
                bool found = false;
                for (size_t i = 0; vctx->executors[i]; i++) {
                        found = found || !strcmp(vctx->executors[i], executor);
                        int n = snprintf(list + len, sizeof(list) - len, "%s%s",
                                         i ? ", " : "", vctx->executors[i]);
                        if (n > 0 && (size_t)n < sizeof(list) - len)
                                len += (size_t)n;
                }
                if (!found) {
                        rc = tb_task_fail(err, "executor",
                                          "executor: '%s' is not available; available "
                                          "executors: %s",
                                          executor, *list ? list : "(none)");
                        goto fail;
                }
        }
        tb_task_put(t, "executor", json_string(executor), &oom);

        if ((rc = tb_task_v_map(tb_task_get(in, "executor_options"), "executor_options",
                                false, t, err, &oom)))
                goto fail;
        if ((rc = tb_task_v_retries(tb_task_get(in, "retries"), t, err, &oom)))
                goto fail;

        int overlap = 0, misfire = 0;
        if ((rc = tb_task_enum(tb_task_get(in, "overlap"), "overlap", tb_task_overlap_names,
                               &overlap, err)) ||
            (rc = tb_task_enum(tb_task_get(in, "misfire"), "misfire", tb_task_misfire_names,
                               &misfire, err)))
                goto fail;
        tb_task_put(t, "overlap", json_string(tb_task_overlap_names[overlap]), &oom);
        tb_task_put(t, "misfire", json_string(tb_task_misfire_names[misfire]), &oom);

        /* jitter */
        ms = 0;
        if ((v = tb_task_get(in, "jitter"))) {
                if ((rc = tb_task_duration(v, "jitter", &ms, err)))
                        goto fail;
                if (ms > TB_TASK_JITTER_MAX_MS) {
                        rc = tb_task_fail_durations(err, "jitter",
                                                    "%s: %s is more than the most a fire may "
                                                    "be delayed, %s",
                                                    ms, TB_TASK_JITTER_MAX_MS);
                        goto fail;
                }
                if (period && ms >= period) {
                        rc = tb_task_fail_durations(err, "jitter",
                                                    "%s: %s must be shorter than the "
                                                    "schedule's period %s",
                                                    ms, period);
                        goto fail;
                }
        }
        tb_task_put(t, "jitter", tb_task_json_duration(ms), &oom);

        /* expires_at */
        if ((rc = tb_task_v_expires_at(in, vctx, t, err, &oom)))
                goto fail;

        /* log_retention: a missing value takes the default, clamped to the
         * group's cap so that omitting it never fails. */
        ms = vctx->log_retention_default_ms > 0 ? vctx->log_retention_default_ms
                                                : TB_TASK_LOG_RETENTION_FALLBACK_MS;
        if (vctx->log_retention_max_ms > 0 && ms > vctx->log_retention_max_ms)
                ms = vctx->log_retention_max_ms;
        if ((v = tb_task_get(in, "log_retention"))) {
                if ((rc = tb_task_duration(v, "log_retention", &ms, err)))
                        goto fail;
                if (ms <= 0) {
                        rc = tb_task_fail(err, "log_retention",
                                          "log_retention: must be more than 0 (e.g. \"30d\")");
                        goto fail;
                }
                if (vctx->log_retention_max_ms > 0 && ms > vctx->log_retention_max_ms) {
                        rc = tb_task_fail_durations(err, "log_retention",
                                                    "%s: %s exceeds this security group's "
                                                    "cap of %s",
                                                    ms, vctx->log_retention_max_ms);
                        goto fail;
                }
        }
        tb_task_put(t, "log_retention", tb_task_json_duration(ms), &oom);

        /* paused */
        bool paused = false;
        if ((v = tb_task_get(in, "paused"))) {
                if (!json_is_boolean(v)) {
                        rc = tb_task_type_fail(err, "paused", "a boolean", v);
                        goto fail;
                }
                paused = json_is_true(v);
        }
        tb_task_put(t, "paused", json_boolean(paused), &oom);

        if ((rc = tb_task_v_map(tb_task_get(in, "labels"), "labels", true, t, err, &oom)))
                goto fail;

        /* home_region */
        const char *region = vctx->default_region && *vctx->default_region
                                     ? vctx->default_region
                                     : "local";
        if ((v = tb_task_get(in, "home_region")) &&
            (rc = tb_task_ident(v, "home_region", TB_TASK_IDENT_MAX, false, &region, err)))
                goto fail;
        tb_task_put(t, "home_region", json_string(region), &oom);

        if ((rc = tb_task_v_calendars(tb_task_get(in, "calendars"), t, err, &oom)))
                goto fail;
        if ((rc = tb_task_v_notify(tb_task_get(in, "notify"), t, err, &oom)))
                goto fail;
        /* parameters: kept only when declared, as tb_task_from_spec() does */
        json_t *params = NULL;
        if ((rc = tb_task_params_validate(tb_task_get(in, "parameters"), &params, err)))
                goto fail;
        if (json_array_size(params))
                tb_task_put(t, "parameters", params, &oom);
        else
                json_decref(params);
        if ((rc = tb_task_v_after(in, t, err, &oom)) ||
            (rc = tb_task_after_schedule_check(t, err)))
                goto fail;

        if (oom) {
                rc = tb_task_fail(err, "task", "task: out of memory");
                goto fail;
        }
        json_decref(with_sched);
        *out = t;
        return TB_OK;
fail:
        json_decref(with_sched);
        json_decref(t);
        return rc;
}

tb_err_t tb_task_json_check(const char *text, size_t len, const char *field,
                            tb_task_err_t *err) {
        const char *f = field ? field : "task";
        if (len > TB_TASK_JSON_MAX)
                return tb_task_fail(err, f,
                                    "%s: %zu bytes of JSON; a task is at most %d bytes (256 KiB)",
                                    f, len, TB_TASK_JSON_MAX);
        /* Nesting depth outside strings: a task has three levels, and a
         * parser or a validator must never recurse as deep as a body asks. */
        size_t depth = 0, max = 0;
        bool in_str = false, esc = false;
        for (size_t i = 0; text && i < len; i++) {
                char c = text[i];
                if (in_str) {
                        if (esc)
                                esc = false;
                        else if (c == '\\')
                                esc = true;
                        else if (c == '"')
                                in_str = false;
                } else if (c == '"') {
                        in_str = true;
                } else if (c == '{' || c == '[') {
                        if (++depth > max)
                                max = depth;
                        if (max > TB_TASK_JSON_DEPTH_MAX)
                                return tb_task_fail(err, f,
                                                    "%s: JSON nested more than %d levels deep "
                                                    "(at byte %zu); a task needs 3",
                                                    f, TB_TASK_JSON_DEPTH_MAX, i);
                } else if ((c == '}' || c == ']') && depth > 0) {
                        depth--;
                }
        }
        return TB_OK;
}

tb_err_t tb_task_schedule_check(const json_t *in, const tb_task_vctx_t *vctx, int64_t anchor_ms,
                                json_t **norm, tb_schedule_t *s, tb_task_err_t *err) {
        if (err) {
                err->field[0] = '\0';
                err->message[0] = '\0';
        }
        if (!norm || !s || !vctx)
                return tb_task_fail(err, "schedule", "schedule: internal error: no output or "
                                    "validation context");
        *norm = NULL;
        memset(s, 0, sizeof(*s));
        if (!json_is_object(in))
                return tb_task_fail(err, "schedule", "schedule: expected a JSON object, got %s",
                                    in ? tb_task_jtype(in) : "nothing");
        json_t *t = json_object();
        bool oom = !t;
        int64_t period = 0;
        tb_err_t rc;
        if (oom)
                return tb_task_fail(err, "schedule", "schedule: out of memory");
        if ((rc = tb_task_v_schedule(in, vctx, t, &period, err, &oom)) ||
            (rc = tb_task_v_expires_at(in, vctx, t, err, &oom)))
                goto fail;
        if (oom) {
                rc = tb_task_fail(err, "schedule", "schedule: out of memory");
                goto fail;
        }
        char msg[256];
        if ((rc = tb_task_schedule(t, anchor_ms, s, msg, sizeof(msg)))) {
                /* the normalized form is the validator's own: this is a bug */
                rc = tb_task_fail(err, "schedule", "schedule: internal error: %s", msg);
                goto fail;
        }
        *norm = t;
        return TB_OK;
fail:
        json_decref(t);
        return rc;
}
