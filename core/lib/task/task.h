/**
 * @file task/task.h
 * @brief The task model: validation of a task as users write it (the REST
 *        API's JSON shape, also carried by Kafka TaskCommands), its
 *        normalized form, and conversions to the Avro TaskSpec and to a
 *        tb_schedule_t. ONE validator serves the REST API, the commands role
 *        and the CLI, so every interface accepts and refuses the same input.
 *
 * Files: task/validate.c the validator; task/fields.c the typed field
 * readers and their errors; task/spec.c the normalized form, the Avro
 * TaskSpec conversions, tb_task_schedule() and tb_task_schedule_fires();
 * task/diff.c tb_task_diff().
 *
 * Normalized task JSON (what the API returns, what tasks.spec stores):
 * {
 *   "name": "cleanup", "script": "/usr/bin/cleanupold --old .", "argv": [],
 *   "security_group": "ops", "user_id": "alice",
 *   "schedule": {"once": "2026-01-01T00:00:00Z"}
 *             | {"every": "PT30S", "start_at": "...Z"|null, "end_at": "...Z"|null}
 *             | {"cron": "0 3 * * *", "timezone": "Europe/Paris",
 *                "start_at": null, "end_at": null}
 *             (every kind also has "dst_gap": "shift"|"skip",
 *              "dst_overlap": "first"|"last"|"both"),
 *   "expiry": "PT1H", "executor": "shell", "executor_options": {},
 *   "retries": {"max_attempts": 1, "backoff": "PT10S", "backoff_max": "PT10M"},
 *   "overlap": "forbid", "misfire": "run_once", "jitter": "PT0S",
 *   "expires_at": null, "log_retention": "P30D", "paused": false,
 *   "labels": {}, "home_region": "local"
 * }
 * Durations are written back as ISO 8601 (PT30S, P30D); times as RFC 3339
 * UTC with Z. Input durations accept everything tb_units_duration_parse() does.
 * "execution_time" (the original API) is accepted as {"once": ...}.
 * Read-only fields (id, version, created_at, updated_at, created_by,
 * next_fire_at) are ignored on input so a GET body can be PUT back; a JSON
 * null counts as absent.
 *
 * script is required (non-empty, <= 64 KiB) unless argv is non-empty; then
 * it may be omitted and is stored as "" (argv runs without a shell; script
 * is only displayed). vctx->user_id NULL means a trusted context (replay):
 * the body's user_id is required and taken as is.
 */
#ifndef TB_TASK_H
#define TB_TASK_H

#include "tb.h"
#include "schedule/calendar.h"
#include "schedule/schedule.h"
#include "units.h"
#include <jansson.h>

/** Limits (also in schemas/openapi.yaml). */
#define TB_TASK_NAME_MAX 200
#define TB_TASK_SCRIPT_MAX (64 * 1024)
#define TB_TASK_LABELS_MAX 64
#define TB_TASK_LABEL_LEN_MAX 256
#define TB_TASK_OPTIONS_MAX 64
#define TB_TASK_ARGV_MAX 256
#define TB_TASK_ATTEMPTS_MAX 100
#define TB_TASK_GROUP_MAX 128
/** Task ids (REST path segments, Kafka keys, the primary key of tasks and
 *  task_history): 1 to 128 bytes of [A-Za-z0-9._:-]. Well under PostgreSQL's
 *  btree row limit (~2700 bytes) with any column beside it. */
#define TB_TASK_ID_MAX 128
#define TB_TASK_ID_CHARS "[A-Za-z0-9._:-]"
/** command_id and correlation_id: at most 128 bytes of printable ASCII. */
#define TB_TASK_REF_MAX 128
/** A task as JSON text (REST body, TaskCommand.task): at most 256 KiB, at
 *  most 32 levels of nesting (a valid task has 3). */
#define TB_TASK_JSON_MAX (256 * 1024)
#define TB_TASK_JSON_DEPTH_MAX 32

/** A validation failure: the field path ("schedule.cron") and a message
 *  saying what is allowed. */
typedef struct tb_task_err {
        char field[128];
        char message[512];
} tb_task_err_t;

/** What validation needs to know besides the body. */
typedef struct tb_task_vctx {
        int64_t now_ms;           /**< "a one-shot time in the past" is judged against it */
        const char *user_id;      /**< the authenticated caller; a different body user_id is refused */
        const char *default_region; /**< home_region when absent */
        int64_t log_retention_default_ms;
        int64_t log_retention_max_ms; /**< per-group cap (0: none) */
        const char *const *executors; /**< known executor names, NULL-terminated (NULL: any) */
} tb_task_vctx_t;

/**
 * Validate \p in and produce the normalized task (new reference, caller
 * owns) in *\p out. Unknown fields are rejected.
 * @returns TB_OK, TB_ERR_INVALID (err filled: field + message), or
 *          TB_ERR_FORBIDDEN when user_id differs from the caller (err filled).
 */
tb_err_t tb_task_validate(const json_t *in, const tb_task_vctx_t *vctx, json_t **out,
                          tb_task_err_t *err);

/**
 * @brief Check a task id as every interface takes it (REST path, Kafka
 *        TaskCommand.task_id): 1 to TB_TASK_ID_MAX bytes of TB_TASK_ID_CHARS.
 *        \p len is the id's length in bytes, so an embedded NUL is seen.
 * @param field  the name the message starts with ("task_id", "id")
 * @returns TB_OK, or TB_ERR_INVALID with \p errstr saying what is allowed
 *          (never quoting the id's bytes, so the message is valid UTF-8).
 */
tb_err_t tb_task_id_check(const char *field, const char *value, size_t len, char *errstr,
                          size_t errstr_size);

/**
 * @brief Check a command's reference (command_id, correlation_id): at most
 *        TB_TASK_REF_MAX bytes of printable ASCII (0x20-0x7E), and not empty
 *        unless \p empty_ok. @returns TB_OK or TB_ERR_INVALID (errstr filled).
 */
tb_err_t tb_task_ref_check(const char *field, const char *value, size_t len, bool empty_ok,
                           char *errstr, size_t errstr_size);

/**
 * @brief Check a task's JSON text before it is parsed: at most
 *        TB_TASK_JSON_MAX bytes and TB_TASK_JSON_DEPTH_MAX levels of
 *        nesting, so no interface spends memory or stack on a hostile body.
 * @param field  the field that carries the text ("task"; NULL: none)
 * @returns TB_OK or TB_ERR_INVALID (err filled, field \p field or "task").
 */
tb_err_t tb_task_json_check(const char *text, size_t len, const char *field,
                            tb_task_err_t *err);

/** Convert a normalized task to the Avro TaskSpec JSON (serde mapping). New ref. */
json_t *tb_task_to_spec(const json_t *task);
/** Convert an Avro TaskSpec JSON back to the normalized task. New ref. */
json_t *tb_task_from_spec(const json_t *spec);

/**
 * Fill \p s from a normalized task (caller clears with tb_schedule_clear()).
 * \p anchor_ms anchors "every" schedules without start_at (the creation time).
 */
tb_err_t tb_task_schedule(const json_t *task, int64_t anchor_ms, tb_schedule_t *s,
                          char *errstr, size_t errstr_size);

/**
 * @brief Validate only the fields of \p in that decide when a task fires
 *        (schedule, expires_at; every other member is ignored) with the
 *        task validator itself, so that a schedule preview refuses exactly
 *        what a create would, with the same field paths ("schedule.cron")
 *        and messages, and fill \p s from them.
 * @param anchor_ms  anchors an "every" schedule without start_at (a task's
 *                   creation time)
 * @param norm  receives {"schedule": normalized, "expires_at": ...} (new
 *              ref, caller owns) on TB_OK
 * @param s     receives the schedule (caller clears with tb_schedule_clear())
 * @returns TB_OK, or TB_ERR_INVALID with \p err filled.
 */
tb_err_t tb_task_schedule_check(const json_t *in, const tb_task_vctx_t *vctx, int64_t anchor_ms,
                                json_t **norm, tb_schedule_t *s, tb_task_err_t *err);

/**
 * @brief The next \p count nominal fires of \p s strictly after \p after_ms,
 *        as a JSON array of {"at": RFC 3339 UTC, "local": RFC 3339 in the
 *        schedule's zone, "offset_seconds": its UTC offset, "offset_changed":
 *        whether the offset differs from the previous fire's (the first:
 *        from the offset at \p after_ms), "dst": tb_schedule_dst_note_name()}.
 *        Fewer than \p count when the schedule ends. The one preview of
 *        `taskbus schedule next` and POST /v1/schedule/preview.
 * @param out  receives the array (new ref, caller owns) on TB_OK
 * @returns TB_OK, TB_ERR_INVALID (an incoherent schedule) or TB_ERR_NOMEM.
 */
tb_err_t tb_task_schedule_fires(const tb_schedule_t *s, int64_t after_ms, size_t count,
                                json_t **out, char *errstr, size_t errstr_size);

/** The fields that differ between two normalized tasks, as a JSON array of
 *  top-level field names (new ref), for task_history.changed_fields. */
json_t *tb_task_diff(const json_t *before, const json_t *after);

/* ---- calendars (task/calendars.c; docs/scheduling.md "Calendars") ---- */

/** Most calendar rules one task may have. */
#define TB_TASK_CALENDARS_MAX 8

/** One of a task's rules as its spec names it. */
typedef struct tb_task_calendar {
        char name[TB_CALENDAR_NAME_MAX + 1];
        tb_calendar_rule_kind_t rule;
} tb_task_calendar_t;

/** @returns whether \p name is a calendar name (1..TB_CALENDAR_NAME_MAX of
 *  A-Z a-z 0-9 - _ . :). */
bool tb_task_calendar_name_ok(const char *name);

/**
 * @brief Read the rules of a normalized task or a TaskSpec (same shape):
 *        \p out (TB_TASK_CALENDARS_MAX entries), *\p n of them.
 * @returns TB_OK (none: *\p n = 0); TB_ERR_INVALID for a malformed array.
 */
tb_err_t tb_task_calendars(const json_t *task, tb_task_calendar_t *out, size_t *n, char *errstr,
                           size_t errstr_size);

/**
 * A task's rules with their calendars resolved. When a calendar could not
 * be had (missing, unreadable), \p unresolved says why and every occurrence
 * is skipped with it: fail closed.
 */
typedef struct tb_task_cals {
        size_t n;
        tb_calendar_rule_t rules[TB_TASK_CALENDARS_MAX];
        tb_calendar_t *owned[TB_TASK_CALENDARS_MAX]; /**< freed by tb_task_cals_clear() (may be NULL) */
        char unresolved[240];                         /**< "" when every calendar is there */
} tb_task_cals_t;

/** Free what \p c owns and zero it. */
void tb_task_cals_clear(tb_task_cals_t *c);

/**
 * @brief tb_calendar_apply() of \p c's rules, failing closed: unresolved
 *        calendars, or a day outside a calendar's span, give a SKIPPED
 *        decision with the reason rather than an error.
 * @returns TB_OK, or TB_ERR_NOMEM.
 */
tb_err_t tb_task_cals_apply(const tb_task_cals_t *c, const tb_tz_t *local_tz, int64_t nominal_ms,
                            tb_calendar_decision_t *out, char *errstr, size_t errstr_size);

/** tb_calendar_plan() of \p c's rules; with unresolved calendars every
 *  occurrence is SKIPPED with the reason. */
tb_err_t tb_task_cals_plan(const tb_task_cals_t *c, const tb_schedule_t *s, int64_t after_ms,
                           size_t count, tb_calendar_decision_t *out, size_t *nout,
                           char *errstr, size_t errstr_size);

/**
 * @brief Decide \p n nominal occurrences (ascending) with \p c's rules
 *        into \p out: tb_task_cals_apply() of each, then an occurrence
 *        rolled onto an instant an earlier one runs at is DUPLICATE (one
 *        run per instant, the earliest nominal's), as tb_calendar_plan()
 *        does. For backfill and the occurrences listing.
 */
tb_err_t tb_task_cals_decide(const tb_task_cals_t *c, const tb_tz_t *local_tz,
                             const int64_t *nominal, size_t n, tb_calendar_decision_t *out,
                             char *errstr, size_t errstr_size);

/** Set \p obj's "verdict" (fire, moved, skipped, duplicate), "fire_time"
 *  (RFC 3339 when it runs, else null), "reason" and "calendar" (null when
 *  none) from \p d. @returns TB_OK or TB_ERR_NOMEM. */
tb_err_t tb_task_cals_decision_json(const tb_calendar_decision_t *d, json_t *obj);

/** Annotate the fires of tb_task_schedule_fires(\p s, \p after_ms) with
 *  \p c's decisions (tb_task_cals_decision_json() on each). */
tb_err_t tb_task_cals_annotate(const tb_task_cals_t *c, const tb_schedule_t *s, int64_t after_ms,
                               json_t *fires, char *errstr, size_t errstr_size);

/** Validate a calendars array \p v (NULL: none) as tb_task_validate() does,
 *  into \p out's "calendars" (left out when empty); *\p oom on allocation
 *  failure. For the schedule preview. */
tb_err_t tb_task_calendars_check(const json_t *v, json_t *out, tb_task_err_t *err, bool *oom);

#endif
