/**
 * @file test_after.c
 * @brief core/lib/task/after.c: validation of after / after_mode /
 *        after_deadline (field paths and messages), the default schedule, the
 *        Avro TaskSpec round trip, the cycle check, the window and the
 *        dependency run id.
 */
#include "schedule/occurrences.h"
#include "schedule/tz.h"
#include "serde/serde.h"
#include "task/after.h"
#include "task/task.h"

#include <criterion/criterion.h>
#include <string.h>

/* 2026-01-01T00:00:00Z */
#define NOW_MS INT64_C(1767225600000)

static json_t *parse(const char *text) {
        json_error_t je;
        json_t *v = json_loads(text, 0, &je);
        cr_assert(v, "bad test JSON: %s: %s", je.text, text);
        return v;
}

static tb_err_t validate(const char *extra, json_t **out, tb_task_err_t *err) {
        char text[2048];
        snprintf(text, sizeof(text),
                 "{\"name\": \"child\", \"script\": \"true\", \"security_group\": \"ops\"%s}",
                 extra);
        json_t *in = parse(text);
        tb_task_vctx_t v = {.now_ms = NOW_MS, .user_id = "alice"};
        memset(err, 0, sizeof(*err));
        tb_err_t rc = tb_task_validate(in, &v, out, err);
        json_decref(in);
        return rc;
}

static void refused(const char *extra, const char *field, const char *needle) {
        json_t *out = NULL;
        tb_task_err_t err;
        cr_assert_eq(validate(extra, &out, &err), TB_ERR_INVALID, "accepted: %s", extra);
        cr_assert_str_eq(err.field, field, "%s: field %s", extra, err.field);
        cr_assert(strstr(err.message, needle), "%s: message '%s' lacks '%s'", extra, err.message,
                  needle);
        cr_assert_null(out);
}

Test(after, normalized_with_the_default_schedule) {
        json_t *out = NULL;
        tb_task_err_t err;
        cr_assert_eq(validate(", \"after\": [{\"task\": \"a\"}, {\"task\": \"b\", \"on\": "
                              "\"FAILED\"}], \"after_mode\": \"any\", \"after_deadline\": \"3h\"",
                              &out, &err),
                     TB_OK, "%s: %s", err.field, err.message);
        json_t *want = parse("[{\"task\": \"a\", \"on\": \"succeeded\"}, "
                             "{\"task\": \"b\", \"on\": \"failed\"}]");
        cr_assert(json_equal(json_object_get(out, "after"), want));
        cr_assert_str_eq(json_string_value(json_object_get(out, "after_mode")), "any");
        cr_assert_str_eq(json_string_value(json_object_get(out, "after_deadline")), "PT3H");
        json_t *sched = json_object_get(out, "schedule");
        cr_assert_str_eq(json_string_value(json_object_get(sched, "cron")), "0 0 * * *");
        cr_assert_str_eq(json_string_value(json_object_get(sched, "timezone")), "UTC");

        /* the normalized form validates to itself (a GET body PUT back) */
        tb_task_vctx_t v = {.now_ms = NOW_MS, .user_id = "alice"};
        json_t *again = NULL;
        cr_assert_eq(tb_task_validate(out, &v, &again, &err), TB_OK, "%s", err.message);
        cr_assert(json_equal(out, again));

        /* and survives the Avro TaskSpec */
        json_t *spec = tb_task_to_spec(out);
        cr_assert_not_null(spec);
        cr_assert_str_eq(json_string_value(json_object_get(
                                 json_array_get(json_object_get(spec, "after"), 1), "on")),
                         "FAILED");
        cr_assert_str_eq(json_string_value(json_object_get(spec, "after_mode")), "ANY");
        cr_assert_eq(json_integer_value(json_object_get(spec, "after_deadline_ms")), 3 * 3600000);
        tb_buf_t b = {0};
        char e[256];
        cr_assert_eq(tb_serde_init(e, sizeof(e)), TB_OK, "%s", e);
        json_t *ev = json_pack("{s:s, s:s, s:i, s:s, s:I, s:s, s:s, s:[], s:O, s:I, s:s}",
                               "event_id", "e1", "task_id", "t1", "version", 1, "type", "CREATED",
                               "at", (json_int_t)NOW_MS, "actor", "alice", "command_id", "c1",
                               "changed_fields", "task", spec, "created_at", (json_int_t)NOW_MS,
                               "created_by", "alice");
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &b, e, sizeof(e)), TB_OK, "%s", e);
        json_t *dec = NULL;
        cr_assert_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_EVENT, NULL, &dec, e, sizeof(e)),
                     TB_OK, "%s", e);
        json_t *back = tb_task_from_spec(json_object_get(dec, "task"));
        cr_assert(json_equal(back, out), "the REST task comes back from Avro");
        json_decref(back);
        json_decref(dec);
        json_decref(ev);
        tb_buf_free(&b);
        json_decref(spec);
        json_decref(again);
        json_decref(want);
        json_decref(out);
}

Test(after, a_task_without_parents_has_no_after_fields) {
        json_t *out = NULL;
        tb_task_err_t err;
        cr_assert_eq(validate(", \"schedule\": {\"every\": \"1h\"}, \"after\": []", &out, &err),
                     TB_OK, "%s", err.message);
        cr_assert_null(json_object_get(out, "after"));
        cr_assert_null(json_object_get(out, "after_mode"));
        json_t *spec = tb_task_to_spec(out);
        cr_assert_eq(json_array_size(json_object_get(spec, "after")), 0);
        cr_assert_str_eq(json_string_value(json_object_get(spec, "after_mode")), "ALL");
        cr_assert(json_is_null(json_object_get(spec, "after_deadline_ms")));
        json_decref(spec);
        json_decref(out);
}

Test(after, refusals_name_the_field) {
        refused(", \"after\": {\"task\": \"a\"}", "after", "array");
        refused(", \"after\": [\"a\"]", "after[0]", "object");
        refused(", \"after\": [{\"task\": \"a\", \"when\": 1}]", "after[0].when", "when");
        refused(", \"after\": [{\"on\": \"succeeded\"}]", "after[0].task", "required");
        refused(", \"after\": [{\"task\": \"a b\"}]", "after[0].task", "after[0].task");
        refused(", \"after\": [{\"task\": \"a\"}, {\"task\": \"a\"}]", "after[1].task",
                "already after[0]");
        refused(", \"after\": [{\"task\": \"a\", \"on\": \"done\"}]", "after[0].on", "succeeded");
        refused(", \"after\": [{\"task\": \"a\"}], \"after_mode\": \"most\"", "after_mode", "all");
        refused(", \"after\": [{\"task\": \"a\"}], \"after_deadline\": \"2d\"", "after_deadline",
                "P1D");
        refused(", \"after_mode\": \"all\", \"schedule\": {\"every\": \"1h\"}", "after_mode",
                "non-empty after");
        refused(", \"after\": [{\"task\": \"a\"}], \"schedule\": {\"every\": \"1h\"}", "schedule",
                "cron");
        char many[2048] = ", \"after\": [";
        for (int i = 0; i < 17; i++)
                snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s{\"task\": \"t%d\"}",
                         i ? ", " : "", i);
        strcat(many, "]");
        refused(many, "after", "at most 16");
}

/* a tiny graph: task -> its after */
static const json_t *lookup(void *ud, const char *id) {
        return json_object_get(json_object_get((json_t *)ud, id), "after");
}

static bool shown(void *ud, const char *id) {
        (void)ud;
        return strcmp(id, "hidden") != 0;
}

Test(after, cycles_are_refused_with_the_path) {
        json_t *g = parse("{\"b\": {\"after\": [{\"task\": \"c\"}]},"
                          " \"c\": {\"after\": [{\"task\": \"x\"}, {\"task\": \"a\"}]},"
                          " \"d\": {\"after\": [{\"task\": \"hidden\"}]},"
                          " \"hidden\": {\"after\": [{\"task\": \"a\"}]}}");
        tb_task_err_t err;
        json_t *after = parse("[{\"task\": \"x\"}, {\"task\": \"b\"}]");
        cr_assert_eq(tb_task_after_cycle("a", after, lookup, shown, g, &err), TB_ERR_INVALID);
        cr_assert_str_eq(err.field, "after[1].task");
        cr_assert(strstr(err.message, "(a -> b -> c -> a)"), "%s", err.message);
        json_decref(after);

        after = parse("[{\"task\": \"a\"}]");
        cr_assert_eq(tb_task_after_cycle("a", after, lookup, shown, g, &err), TB_ERR_INVALID);
        cr_assert_str_eq(err.field, "after[0].task");
        cr_assert(strstr(err.message, "itself"), "%s", err.message);
        json_decref(after);

        /* a hidden task on the cycle is not named */
        after = parse("[{\"task\": \"d\"}]");
        cr_assert_eq(tb_task_after_cycle("a", after, lookup, shown, g, &err), TB_ERR_INVALID);
        cr_assert(!strstr(err.message, "hidden"), "%s", err.message);
        cr_assert(strstr(err.message, "a -> d -> (a task of a group you are not in) -> a"), "%s",
                  err.message);
        json_decref(after);

        /* no cycle: a diamond and an unknown parent */
        after = parse("[{\"task\": \"x\"}, {\"task\": \"y\"}]");
        cr_assert_eq(tb_task_after_cycle("a", after, lookup, shown, g, &err), TB_OK);
        json_decref(after);
        json_decref(g);
}

Test(after, window_is_the_local_day) {
        /* 2026-07-01T05:30:00Z is 07:30 in Paris (UTC+2): the day began at 22:00Z */
        int64_t t = INT64_C(1782883800000);
        cr_assert_eq(tb_task_after_window_start(NULL, t), INT64_C(1782864000000));
        const tb_tz_t *paris;
        char e[256];
        cr_assert_eq(tb_tz_open("Europe/Paris", &paris, e, sizeof(e)), TB_OK, "%s", e);
        cr_assert_eq(tb_task_after_window_start(paris, t), INT64_C(1782864000000) - 2 * 3600000);
}

Test(after, run_id_is_deterministic_and_apart_from_fires) {
        char a[33], b[33], fire[33];
        tb_task_after_run_id("child", NOW_MS, a);
        tb_task_after_run_id("child", NOW_MS, b);
        cr_assert_str_eq(a, b);
        for (int attempt = 1; attempt < 5; attempt++) {
                tb_schedule_run_id("child", NOW_MS, attempt, fire);
                cr_assert_str_neq(a, fire);
        }
        tb_task_after_run_id("child", NOW_MS + 86400000, b);
        cr_assert_str_neq(a, b);
}
