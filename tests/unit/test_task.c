/**
 * @file test_task.c
 * @brief core/lib/task/ (task/task.h): every validation rule (field name and message), the
 *        defaults, idempotence of the normalized form, the Avro TaskSpec
 *        round trip through serde, tb_task_schedule() for each kind,
 *        tb_units_duration_format_iso8601(), tb_task_diff(), the schedule check and
 *        fires of previews, and random garbage input.
 */
#include "serde/serde.h"
#include "support.h"
#include "task/task.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2026-01-01T00:00:00Z */
#define NOW_MS INT64_C(1767225600000)
#define DAY_MS INT64_C(86400000)

static const char *const executors[] = {"shell", "docker", NULL};

static tb_task_vctx_t vctx(void) {
        tb_task_vctx_t c = {
                .now_ms = NOW_MS,
                .user_id = "alice",
                .default_region = "eu-west",
                .log_retention_default_ms = 30 * DAY_MS,
                .log_retention_max_ms = 90 * DAY_MS,
                .executors = executors,
        };
        return c;
}

static json_t *parse(const char *text) {
        json_error_t je;
        json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        cr_assert(v, "bad test JSON: %s: %s", je.text, text);
        return v;
}

static const char *BASE = "{\"name\": \"n\", \"script\": \"true\", \"security_group\": "
                          "\"ops\", \"schedule\": {\"every\": \"1m\"}}";

/** BASE with the members of \p extra merged over it; a member whose value
 *  is the string "__DELETE__" removes the key instead. */
static json_t *mk(const char *extra) {
        json_t *t = parse(BASE), *x = parse(extra);
        const char *k;
        json_t *v;
        json_object_foreach(x, k, v) {
                if (json_is_string(v) && !strcmp(json_string_value(v), "__DELETE__"))
                        json_object_del(t, k);
                else
                        json_object_set(t, k, v);
        }
        json_decref(x);
        return t;
}

static tb_err_t validate(const json_t *in, json_t **out, tb_task_err_t *e) {
        tb_task_vctx_t c = vctx();
        return tb_task_validate(in, &c, out, e);
}

static json_t *must_validate(const json_t *in) {
        json_t *out = NULL;
        tb_task_err_t e;
        tb_err_t rc = validate(in, &out, &e);
        char *dump = json_dumps(in, JSON_COMPACT);
        cr_assert_eq(rc, TB_OK, "expected valid: %s\ngot %s: %s: %s", dump, tb_err_name(rc),
                     e.field, e.message);
        free(dump);
        cr_assert(out);
        return out;
}

/** Expect \p in to be refused with \p code, naming \p field, the message
 *  containing \p needle. Consumes \p in. */
static void expect_err_code(json_t *in, tb_err_t code, const char *field, const char *needle) {
        json_t *out = NULL;
        tb_task_err_t e;
        tb_err_t rc = validate(in, &out, &e);
        char *dump = json_dumps(in, JSON_COMPACT | JSON_ENCODE_ANY);
        cr_assert_eq(rc, code, "%s: expected %s, got %s (%s: %s)", dump, tb_err_name(code),
                     tb_err_name(rc), e.field, e.message);
        cr_assert_null(out);
        cr_assert_str_eq(e.field, field, "%s: field '%s' (message: %s)", dump, e.field,
                         e.message);
        cr_assert(strstr(e.message, needle), "%s: message '%s' lacks '%s'", dump, e.message,
                  needle);
        free(dump);
        json_decref(in);
}

static void expect_invalid(json_t *in, const char *field, const char *needle) {
        expect_err_code(in, TB_ERR_INVALID, field, needle);
}

static const char *FULL =
        "{\"name\": \"nightly cleanup \u00e9\", \"script\": \"/usr/bin/cleanupold --old .\","
        " \"argv\": [\"/usr/bin/cleanupold\", \"--old\", \".\"],"
        " \"security_group\": \"ops\", \"user_id\": \"alice\","
        " \"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"Europe/Paris\","
        "   \"start_at\": \"2026-02-01T01:00:00+01:00\", \"end_at\": \"2027-01-01T00:00:00Z\","
        "   \"dst_gap\": \"skip\", \"dst_overlap\": \"both\"},"
        " \"expiry\": \"90m\", \"executor\": \"docker\","
        " \"executor_options\": {\"image\": \"alpine:3\", \"cpus\": 1.5, \"memory\": 512,"
        "   \"privileged\": false},"
        " \"retries\": {\"max_attempts\": 5, \"backoff\": 30, \"backoff_max\": \"1h\"},"
        " \"overlap\": \"replace\", \"misfire\": \"run_all\", \"jitter\": \"2.5s\","
        " \"expires_at\": \"2027-06-01T12:00:00.250Z\", \"log_retention\": \"P14D\","
        " \"paused\": true, \"labels\": {\"team\": \"infra\", \"app.kubernetes.io/name\": \"x\"},"
        " \"home_region\": \"us-east\","
        " \"id\": \"t-123\", \"version\": 7, \"created_at\": \"x\", \"updated_at\": null,"
        " \"created_by\": \"bob\", \"next_fire_at\": 12}";

TestSuite(task);

Test(task, full_task_normalizes) {
        json_t *in = parse(FULL), *t = must_validate(in);
        json_t *want = parse(
                "{\"name\": \"nightly cleanup \u00e9\", \"script\": \"/usr/bin/cleanupold --old .\","
                " \"argv\": [\"/usr/bin/cleanupold\", \"--old\", \".\"],"
                " \"security_group\": \"ops\", \"user_id\": \"alice\","
                " \"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"Europe/Paris\","
                "   \"start_at\": \"2026-02-01T00:00:00Z\", \"end_at\": \"2027-01-01T00:00:00Z\","
                "   \"dst_gap\": \"skip\", \"dst_overlap\": \"both\"},"
                " \"expiry\": \"PT1H30M\", \"executor\": \"docker\","
                " \"executor_options\": {\"image\": \"alpine:3\", \"cpus\": \"1.5\","
                "   \"memory\": \"512\", \"privileged\": \"false\"},"
                " \"retries\": {\"max_attempts\": 5, \"backoff\": \"PT30S\","
                "   \"backoff_max\": \"PT1H\"},"
                " \"overlap\": \"replace\", \"misfire\": \"run_all\", \"jitter\": \"PT2.5S\","
                " \"expires_at\": \"2027-06-01T12:00:00.25Z\", \"log_retention\": \"P14D\","
                " \"paused\": true, \"labels\": {\"team\": \"infra\","
                "   \"app.kubernetes.io/name\": \"x\"},"
                " \"home_region\": \"us-east\"}");
        /* tb_time_format's fraction style decides ".25" vs ".250": compare
         * through the parser rather than guess. */
        char buf[32];
        int64_t ms;
        cr_assert_eq(tb_time_parse("2027-06-01T12:00:00.250Z", &ms, NULL, 0), TB_OK);
        tb_time_format(ms, buf);
        json_object_set_new(want, "expires_at", json_string(buf));
        char *a = json_dumps(t, JSON_SORT_KEYS), *b = json_dumps(want, JSON_SORT_KEYS);
        cr_assert(json_equal(t, want), "got\n%s\nwant\n%s", a, b);
        /* The documented key order, so API responses read naturally. */
        const char *order[] = {"name", "script", "argv", "security_group", "user_id",
                               "schedule", "expiry", "executor", "executor_options",
                               "retries", "overlap", "misfire", "jitter", "expires_at",
                               "log_retention", "paused", "labels", "home_region"};
        void *it = json_object_iter(t);
        for (size_t i = 0; i < TB_ARRAY_LEN(order); i++, it = json_object_iter_next(t, it)) {
                cr_assert(it);
                cr_assert_str_eq(json_object_iter_key(it), order[i]);
        }
        cr_assert_null(it);
        free(a);
        free(b);
        json_decref(want);
        json_decref(t);
        json_decref(in);
}

Test(task, defaults) {
        json_t *in = parse("{\"name\": \"n\", \"script\": \"echo hi\", \"security_group\": "
                           "\"ops\", \"schedule\": {\"cron\": \"@daily\"}}");
        json_t *t = must_validate(in);
        json_t *want = parse(
                "{\"name\": \"n\", \"script\": \"echo hi\", \"argv\": [],"
                " \"security_group\": \"ops\", \"user_id\": \"alice\","
                " \"schedule\": {\"cron\": \"@daily\", \"timezone\": \"UTC\","
                "   \"start_at\": null, \"end_at\": null, \"dst_gap\": \"shift\","
                "   \"dst_overlap\": \"first\"},"
                " \"expiry\": \"PT1H\", \"executor\": \"shell\", \"executor_options\": {},"
                " \"retries\": {\"max_attempts\": 1, \"backoff\": \"PT10S\","
                "   \"backoff_max\": \"PT10M\"},"
                " \"overlap\": \"forbid\", \"misfire\": \"run_once\", \"jitter\": \"PT0S\","
                " \"expires_at\": null, \"log_retention\": \"P30D\", \"paused\": false,"
                " \"labels\": {}, \"home_region\": \"eu-west\"}");
        char *a = json_dumps(t, JSON_SORT_KEYS);
        cr_assert(json_equal(t, want), "got %s", a);
        free(a);
        json_decref(want);
        json_decref(t);
        json_decref(in);
}

Test(task, schedule_kinds_normalize) {
        json_t *in = mk("{\"schedule\": {\"every\": 90, \"start_at\": "
                        "\"2026-03-01T00:00:00-05:00\"}}");
        json_t *t = must_validate(in);
        json_t *want = parse("{\"every\": \"PT1M30S\", \"start_at\": \"2026-03-01T05:00:00Z\","
                             " \"end_at\": null, \"dst_gap\": \"shift\","
                             " \"dst_overlap\": \"first\"}");
        cr_assert(json_equal(json_object_get(t, "schedule"), want));
        json_decref(want);
        json_decref(t);
        json_decref(in);

        in = mk("{\"schedule\": {\"once\": \"2026-01-02T00:00:00+02:00\", "
                "\"dst_gap\": \"SKIP\"}}");
        t = must_validate(in);
        want = parse("{\"once\": \"2026-01-01T22:00:00Z\", \"dst_gap\": \"skip\","
                     " \"dst_overlap\": \"first\"}");
        cr_assert(json_equal(json_object_get(t, "schedule"), want));
        json_decref(want);
        json_decref(t);
        json_decref(in);
}

Test(task, execution_time_shorthand) {
        json_t *in = mk("{\"schedule\": \"__DELETE__\", "
                        "\"execution_time\": \"2026-05-01T10:00:00Z\"}");
        json_t *t = must_validate(in);
        json_t *want = parse("{\"once\": \"2026-05-01T10:00:00Z\", \"dst_gap\": \"shift\","
                             " \"dst_overlap\": \"first\"}");
        cr_assert(json_equal(json_object_get(t, "schedule"), want));
        cr_assert_null(json_object_get(t, "execution_time"));
        json_decref(want);
        json_decref(t);
        json_decref(in);

        expect_invalid(mk("{\"execution_time\": \"2026-05-01T10:00:00Z\"}"), "execution_time",
                       "not both");
        expect_invalid(mk("{\"schedule\": \"__DELETE__\", "
                          "\"execution_time\": \"2025-05-01T10:00:00Z\"}"),
                       "execution_time", "is in the past");
        expect_invalid(mk("{\"schedule\": \"__DELETE__\", \"execution_time\": 17}"),
                       "execution_time", "expected an RFC 3339");
        /* The 1 s tolerance for clock skew: 500 ms ago is still accepted. */
        in = mk("{\"schedule\": \"__DELETE__\", "
                "\"execution_time\": \"2025-12-31T23:59:59.500Z\"}");
        t = must_validate(in);
        json_decref(t);
        json_decref(in);
}

Test(task, idempotent) {
        const char *bodies[] = {
                FULL,
                BASE,
                "{\"name\": \"a\", \"argv\": [\"/bin/true\"], \"security_group\": \"g\","
                " \"schedule\": {\"once\": \"2030-01-01T00:00:00Z\"}}",
                "{\"name\": \"b\", \"script\": \"x\", \"security_group\": \"g\","
                " \"execution_time\": \"2030-01-01T00:00:00.5+01:00\", \"jitter\": 3661.0e0}",
                "{\"name\": \"c\", \"script\": \"x\", \"security_group\": \"g\","
                " \"schedule\": {\"every\": \"1d2h3m4.005s\", \"end_at\": \"2031-01-01T00:00:00Z\"},"
                " \"jitter\": \"1h\", \"log_retention\": 86400}",
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bodies); i++) {
                json_t *in = parse(bodies[i]);
                json_t *out = NULL;
                tb_task_err_t e;
                tb_err_t rc = validate(in, &out, &e);
                if (i == 3) {
                        /* a real is not a duration: the refusal is the point */
                        cr_assert_eq(rc, TB_ERR_INVALID);
                        cr_assert_str_eq(e.field, "jitter");
                        json_decref(in);
                        continue;
                }
                cr_assert_eq(rc, TB_OK, "%zu: %s: %s", i, e.field, e.message);
                json_t *again = must_validate(out);
                char *a = json_dumps(out, 0), *b = json_dumps(again, 0);
                cr_assert_str_eq(a, b, "body %zu not idempotent", i);
                free(a);
                free(b);
                json_decref(again);
                json_decref(out);
                json_decref(in);
        }
}

Test(task, read_only_fields_ignored) {
        json_t *in = mk("{\"id\": \"x\", \"version\": 3, \"created_at\": 1, \"updated_at\": "
                        "[], \"created_by\": {}, \"next_fire_at\": null}");
        json_t *t = must_validate(in);
        cr_assert_null(json_object_get(t, "id"));
        cr_assert_null(json_object_get(t, "version"));
        cr_assert_null(json_object_get(t, "next_fire_at"));
        json_decref(t);
        json_decref(in);
}

Test(task, user_id) {
        expect_err_code(mk("{\"user_id\": \"mallory\"}"), TB_ERR_FORBIDDEN, "user_id",
                        "is not you");
        expect_invalid(mk("{\"user_id\": 7}"), "user_id", "expected a string");
        json_t *in = mk("{\"user_id\": \"alice\"}"), *t = must_validate(in);
        cr_assert_str_eq(json_string_value(json_object_get(t, "user_id")), "alice");
        json_decref(t);
        json_decref(in);
}

/** One rule: the extra members merged over BASE, the field, the message. */
struct rule {
        const char *extra;
        const char *field;
        const char *needle;
};

static const struct rule rules[] = {
        {"{\"name\": \"__DELETE__\"}", "name", "name: required"},
        {"{\"name\": \"\"}", "name", "1 to 200 characters"},
        {"{\"name\": 5}", "name", "field 'name': expected a string, got an integer"},
        {"{\"name\": \"a\\u0001b\"}", "name", "control character U+0001"},
        {"{\"name\": \"a\\u0085b\"}", "name", "control character U+0085"},
        {"{\"name\": \"a\\u0000b\"}", "name", "NUL"},
        {"{\"script\": \"__DELETE__\"}", "script", "script: required"},
        {"{\"script\": \"\"}", "script", "unless argv is given"},
        {"{\"script\": []}", "script", "expected a string"},
        {"{\"argv\": \"ls\"}", "argv", "expected an array of strings"},
        {"{\"argv\": [\"ls\", 1]}", "argv[1]", "expected a string"},
        {"{\"argv\": [\"\"]}", "argv[0]", "cannot be empty"},
        {"{\"security_group\": \"__DELETE__\"}", "security_group", "required"},
        {"{\"security_group\": \"\"}", "security_group", "1 to 128 characters"},
        {"{\"security_group\": \"ops team\"}", "security_group", "contains ' '"},
        {"{\"security_group\": \"\\u00e9\"}", "security_group", "allowed are letters"},
        {"{\"schedule\": \"__DELETE__\"}", "schedule",
         "schedule: required: one of once, every, cron"},
        {"{\"schedule\": null}", "schedule", "required: one of once, every, cron"},
        {"{\"schedule\": {}}", "schedule", "required: one of once, every, cron"},
        {"{\"schedule\": [1]}", "schedule", "expected an object"},
        {"{\"schedule\": {\"once\": \"2026-06-01T00:00:00Z\", \"every\": \"1m\"}}",
         "schedule", "exactly one of once, every, cron"},
        {"{\"schedule\": {\"once\": \"2025-12-31T23:00:00Z\"}}", "schedule.once",
         "schedule.once: 2025-12-31T23:00:00Z is in the past"},
        {"{\"schedule\": {\"once\": \"tomorrow\"}}", "schedule.once", "RFC 3339"},
        {"{\"schedule\": {\"once\": \"2026-06-01T00:00:00Z\", \"start_at\": "
         "\"2026-06-01T00:00:00Z\"}}",
         "schedule.start_at", "only applies to every and cron"},
        {"{\"schedule\": {\"every\": \"0.5s\"}}", "schedule.every", "at least 1 s"},
        {"{\"schedule\": {\"every\": 0}}", "schedule.every", "at least 1 s"},
        {"{\"schedule\": {\"every\": -5}}", "schedule.every", "negative"},
        {"{\"schedule\": {\"every\": \"fast\"}}", "schedule.every", "duration"},
        {"{\"schedule\": {\"every\": true}}", "schedule.every",
         "field 'schedule.every': expected a duration"},
        {"{\"schedule\": {\"every\": \"1m\", \"timezone\": \"UTC\"}}", "schedule.timezone",
         "only applies to cron"},
        {"{\"schedule\": {\"every\": \"1m\", \"start_at\": \"2026-02-01T00:00:00Z\","
         " \"end_at\": \"2026-02-01T00:00:00Z\"}}",
         "schedule.end_at", "must be after start_at"},
        {"{\"schedule\": {\"every\": \"1m\", \"start_at\": \"soon\"}}", "schedule.start_at",
         "RFC 3339"},
        {"{\"schedule\": {\"every\": \"1m\", \"foo\": 1}}", "schedule.foo",
         "unknown field 'foo'"},
        {"{\"schedule\": {\"cron\": \"0 25 * * *\"}}", "schedule.cron", "hour"},
        {"{\"schedule\": {\"cron\": \"\"}}", "schedule.cron", "schedule.cron:"},
        {"{\"schedule\": {\"cron\": 5}}", "schedule.cron", "expected a string"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"Mars/Olympus\"}}",
         "schedule.timezone", "Mars/Olympus"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"dst_gap\": \"jump\"}}",
         "schedule.dst_gap", "'shift', 'skip'"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"dst_overlap\": 1}}",
         "schedule.dst_overlap", "expected a string"},
        {"{\"expiry\": \"0s\"}", "expiry", "more than 0"},
        {"{\"expiry\": \"8d\"}", "expiry", "at most 7 days"},
        {"{\"expiry\": \"-1s\"}", "expiry", "negative"},
        {"{\"expiry\": [] }", "expiry", "expected a duration"},
        {"{\"executor\": \"k8s\"}", "executor",
         "'k8s' is not available; available executors: shell, docker"},
        {"{\"executor\": \"\"}", "executor", "1 to 64"},
        {"{\"executor_options\": []}", "executor_options", "expected an object"},
        {"{\"executor_options\": {\"a\": null}}", "executor_options.a",
         "expected a string, number or boolean"},
        {"{\"executor_options\": {\"a\": {\"b\": 1}}}", "executor_options.a",
         "got an object"},
        {"{\"retries\": 3}", "retries", "expected an object"},
        {"{\"retries\": {\"max_attempts\": 0}}", "retries.max_attempts", "range 1 to 100"},
        {"{\"retries\": {\"max_attempts\": 101}}", "retries.max_attempts", "range 1 to 100"},
        {"{\"retries\": {\"max_attempts\": \"3\"}}", "retries.max_attempts",
         "expected an integer"},
        {"{\"retries\": {\"backoff\": \"1m\", \"backoff_max\": \"30s\"}}",
         "retries.backoff_max", "must be at least backoff"},
        {"{\"retries\": {\"backoff\": \"20m\"}}", "retries.backoff",
         "must be at least backoff PT20M"},
        {"{\"retries\": {\"tries\": 3}}", "retries.tries", "unknown field 'tries'"},
        {"{\"overlap\": \"sometimes\"}", "overlap", "'forbid', 'allow', 'replace'"},
        {"{\"overlap\": 1}", "overlap", "expected a string"},
        {"{\"misfire\": \"never\"}", "misfire", "'run_once', 'skip', 'run_all'"},
        {"{\"jitter\": \"-1s\"}", "jitter", "negative"},
        {"{\"jitter\": \"1m\"}", "jitter", "shorter than the schedule's period PT1M"},
        {"{\"expires_at\": \"2025-01-01T00:00:00Z\"}", "expires_at", "is in the past"},
        {"{\"expires_at\": 5}", "expires_at", "expected an RFC 3339"},
        {"{\"log_retention\": \"0\"}", "log_retention", "more than 0"},
        {"{\"log_retention\": \"100d\"}", "log_retention",
         "P100D exceeds this security group's cap of P90D"},
        {"{\"paused\": \"yes\"}", "paused", "field 'paused': expected a boolean"},
        {"{\"paused\": 1}", "paused", "expected a boolean, got an integer"},
        {"{\"labels\": {\"bad key\": \"x\"}}", "labels.bad key", "label keys are 1 to 63"},
        {"{\"labels\": {\"\": \"x\"}}", "labels", "label keys are 1 to 63"},
        {"{\"labels\": {\"k\": 1}}", "labels.k", "expected a string"},
        {"{\"labels\": {\"k\": \"a\\nb\"}}", "labels.k", "control character"},
        {"{\"labels\": \"k=v\"}", "labels", "expected an object"},
        {"{\"home_region\": \"eu west\"}", "home_region", "contains ' '"},
        {"{\"home_region\": 1}", "home_region", "expected a string"},
        {"{\"colour\": \"red\"}", "colour",
         "unknown field 'colour'; valid fields: name, script, argv"},
        {"{\"nmae\": \"x\"}", "nmae", "did you mean 'name'?"},
        {"{\"\": 1}", "task", "unknown field ''"},
        /* impossible values: what a hostile producer might send */
        {"{\"schedule\": {\"once\": \"99999-01-01T00:00:00Z\"}}", "schedule.once",
         "schedule.once:"},
        {"{\"schedule\": {\"every\": \"1m\", \"start_at\": \"99999-01-01T00:00:00Z\"}}",
         "schedule.start_at", "schedule.start_at:"},
        {"{\"schedule\": {\"every\": \"-PT5S\"}}", "schedule.every", "schedule.every:"},
        {"{\"schedule\": {\"every\": 9223372036854775807}}", "schedule.every", "too large"},
        {"{\"expiry\": -9223372036854775807}", "expiry", "negative"},
        {"{\"expires_at\": \"1969-12-31T23:59:59Z\"}", "expires_at", "expires_at:"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\"}, \"jitter\": \"2d\"}", "jitter",
         "jitter: P2D is more than the most a fire may be delayed, P1D"},
        {"{\"retries\": {\"backoff\": \"1h\", \"backoff_max\": \"3000d\"}}",
         "retries.backoff_max", "P3000D is more than the longest wait between attempts, P1D"},
        {"{\"retries\": {\"backoff\": 9999999999}}", "retries.backoff", "P1D"},
};

Test(task, rules) {
        for (size_t i = 0; i < TB_ARRAY_LEN(rules); i++)
                expect_invalid(mk(rules[i].extra), rules[i].field, rules[i].needle);
}

/* The schedule check of previews refuses every schedule rule exactly as a
 * create does (field and message), and what it accepts fires as the
 * normalized task does. */
Test(task, schedule_check_is_the_validators) {
        tb_task_vctx_t v = vctx();
        size_t checked = 0;
        for (size_t i = 0; i < TB_ARRAY_LEN(rules); i++) {
                if (strncmp(rules[i].field, "schedule", 8) && strcmp(rules[i].field, "expires_at"))
                        continue;
                json_t *in = mk(rules[i].extra), *norm = NULL;
                tb_task_err_t a, b;
                tb_schedule_t s;
                cr_assert_eq(tb_task_validate(in, &v, &norm, &a), TB_ERR_INVALID);
                cr_assert_eq(tb_task_schedule_check(in, &v, NOW_MS, &norm, &s, &b), TB_ERR_INVALID,
                             "%s was accepted", rules[i].extra);
                cr_assert_str_eq(b.field, a.field, "%s", rules[i].extra);
                cr_assert_str_eq(b.message, a.message, "%s", rules[i].extra);
                cr_assert_null(norm);
                json_decref(in);
                checked++;
        }
        cr_assert_gt(checked, 20);

        json_t *in = mk("{\"schedule\": {\"cron\": \"30 2 * * *\", \"timezone\": "
                        "\"America/Los_Angeles\"}, \"expires_at\": \"2026-03-10T00:00:00Z\"}");
        json_t *task = NULL, *norm = NULL, *fires = NULL;
        tb_task_err_t e;
        tb_schedule_t s1, s2;
        char err[256];
        cr_assert_eq(tb_task_validate(in, &v, &task, &e), TB_OK, "%s", e.message);
        cr_assert_eq(tb_task_schedule_check(in, &v, NOW_MS, &norm, &s1, &e), TB_OK, "%s", e.message);
        cr_assert(json_equal(json_object_get(norm, "schedule"), json_object_get(task, "schedule")));
        cr_assert_eq(tb_task_schedule(task, NOW_MS, &s2, err, sizeof(err)), TB_OK, "%s", err);
        /* the spring-forward day of 2026 in Los Angeles, then expires_at ends it */
        int64_t from;
        cr_assert_eq(tb_time_parse("2026-03-06T12:00:00Z", &from, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_task_schedule_fires(&s1, from, 10, &fires, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(json_array_size(fires), 3, "%s", json_dumps(fires, 0));
        static const char *const want[][3] = {
                {"2026-03-07T10:30:00Z", "2026-03-07T02:30:00-08:00", "none"},
                {"2026-03-08T10:00:00Z", "2026-03-08T03:00:00-07:00", "shifted"},
                {"2026-03-09T09:30:00Z", "2026-03-09T02:30:00-07:00", "none"},
        };
        int64_t next = from;
        for (size_t i = 0; i < 3; i++) {
                json_t *f = json_array_get(fires, i);
                cr_assert_eq(tb_schedule_next(&s2, next, &next, NULL, err, sizeof(err)), TB_OK);
                char at[32];
                tb_time_format(next, at);
                cr_assert_str_eq(json_string_value(json_object_get(f, "at")), at,
                                 "the fires are the task's own");
                cr_assert_str_eq(json_string_value(json_object_get(f, "at")), want[i][0]);
                cr_assert_str_eq(json_string_value(json_object_get(f, "local")), want[i][1]);
                cr_assert_str_eq(json_string_value(json_object_get(f, "dst")), want[i][2]);
                cr_assert_eq(json_is_true(json_object_get(f, "offset_changed")), i == 1);
        }
        json_decref(fires);
        tb_schedule_clear(&s1);
        tb_schedule_clear(&s2);
        json_decref(norm);
        json_decref(task);
        json_decref(in);
}

Test(task, not_an_object) {
        expect_invalid(parse("[]"), "task", "expected a JSON object, got an array");
        expect_invalid(parse("\"x\""), "task", "expected a JSON object");
        json_t *out = NULL;
        tb_task_err_t e;
        tb_task_vctx_t c = vctx();
        cr_assert_eq(tb_task_validate(NULL, &c, &out, &e), TB_ERR_INVALID);
        cr_assert_str_eq(e.field, "task");
}

Test(task, size_limits) {
        /* name: counted in code points, not bytes */
        char name[2 * 201 + 1];
        for (int i = 0; i < 200; i++)
                memcpy(name + 2 * i, "\xc3\xa9", 2);
        name[400] = '\0';
        json_t *in = mk("{}");
        json_object_set_new(in, "name", json_string(name));
        json_t *t = must_validate(in);
        json_decref(t);
        memcpy(name + 400, "\xc3\xa9", 3);
        json_object_set_new(in, "name", json_string(name));
        expect_invalid(in, "name", "must be 1 to 200 characters, got 201");

        in = mk("{}");
        json_object_set_new(in, "name", json_stringn_nocheck("a\xff", 2));
        expect_invalid(in, "name", "invalid UTF-8");
        in = mk("{}");
        json_object_set_new(in, "name", json_stringn_nocheck("\xed\xa0\x80", 3));
        expect_invalid(in, "name", "invalid UTF-8"); /* a surrogate */

        char *big = malloc(TB_TASK_SCRIPT_MAX + 2);
        memset(big, 'x', TB_TASK_SCRIPT_MAX + 1);
        big[TB_TASK_SCRIPT_MAX] = '\0';
        in = mk("{}");
        json_object_set_new(in, "script", json_string(big));
        t = must_validate(in);
        json_decref(t);
        big[TB_TASK_SCRIPT_MAX] = 'x';
        big[TB_TASK_SCRIPT_MAX + 1] = '\0';
        json_object_set_new(in, "script", json_string(big));
        expect_invalid(in, "script", "at most 65536");

        char group[TB_TASK_GROUP_MAX + 2];
        memset(group, 'g', sizeof(group));
        group[TB_TASK_GROUP_MAX] = '\0';
        in = mk("{}");
        json_object_set_new(in, "security_group", json_string(group));
        t = must_validate(in);
        json_decref(t);
        group[TB_TASK_GROUP_MAX] = 'g';
        group[TB_TASK_GROUP_MAX + 1] = '\0';
        json_object_set_new(in, "security_group", json_string(group));
        expect_invalid(in, "security_group", "1 to 128");

        in = mk("{}");
        json_t *argv = json_array();
        for (int i = 0; i <= TB_TASK_ARGV_MAX; i++)
                json_array_append_new(argv, json_string("a"));
        json_object_set_new(in, "argv", argv);
        expect_invalid(in, "argv", "at most 256");

        big[4097] = '\0';
        in = mk("{}");
        json_object_set_new(in, "argv", json_pack("[ss]", "echo", big));
        expect_invalid(in, "argv[1]", "at most 4096");
        in = mk("{}");
        json_object_set_new(in, "executor_options", json_pack("{ss}", "env", big));
        expect_invalid(in, "executor_options.env", "at most 4096 bytes");
        big[4096] = '\0';
        in = mk("{}");
        json_object_set_new(in, "executor_options", json_pack("{ss}", "env", big));
        t = must_validate(in);
        json_decref(t);
        json_decref(in);

        json_t *many = json_object();
        char key[16];
        for (int i = 0; i <= TB_TASK_LABELS_MAX; i++) {
                snprintf(key, sizeof(key), "k%d", i);
                json_object_set_new(many, key, json_string("v"));
        }
        in = mk("{}");
        json_object_set(in, "labels", many);
        expect_invalid(in, "labels", "65 entries; at most 64");
        in = mk("{}");
        json_object_set(in, "executor_options", many);
        expect_invalid(in, "executor_options", "65 entries; at most 64");
        json_decref(many);

        char lv[TB_TASK_LABEL_LEN_MAX + 2];
        memset(lv, 'v', sizeof(lv));
        lv[TB_TASK_LABEL_LEN_MAX + 1] = '\0';
        in = mk("{}");
        json_object_set_new(in, "labels", json_pack("{ss}", "k", lv));
        expect_invalid(in, "labels.k", "at most 256 characters");
        char lk[66];
        memset(lk, 'k', sizeof(lk));
        lk[64] = '\0';
        in = mk("{}");
        json_object_set_new(in, "labels", json_pack("{ss}", lk, "v"));
        char lfield[80];
        snprintf(lfield, sizeof(lfield), "labels.%s", lk);
        expect_invalid(in, lfield, "1 to 63");
        free(big);
}

Test(task, argv_makes_script_optional) {
        json_t *in = mk("{\"script\": \"__DELETE__\", \"argv\": [\"/bin/echo\", \"\", \"x\"]}");
        json_t *t = must_validate(in);
        cr_assert_str_eq(json_string_value(json_object_get(t, "script")), "");
        cr_assert_eq(json_array_size(json_object_get(t, "argv")), 3);
        json_decref(t);
        json_decref(in);
        expect_invalid(mk("{\"script\": \"__DELETE__\", \"argv\": []}"), "script", "required");
}

Test(task, executor_and_options) {
        json_t *in = mk("{\"executor\": \"docker\", \"executor_options\": {\"n\": -3, "
                        "\"f\": 0.1, \"b\": true, \"s\": \"line1\\nline2\"}}");
        json_t *t = must_validate(in);
        json_t *want = parse("{\"n\": \"-3\", \"f\": \"0.1\", \"b\": \"true\", "
                             "\"s\": \"line1\\nline2\"}");
        cr_assert(json_equal(json_object_get(t, "executor_options"), want));
        json_decref(want);
        json_decref(t);
        json_decref(in);

        /* executors NULL: any well-formed name */
        tb_task_vctx_t c = vctx();
        c.executors = NULL;
        in = mk("{\"executor\": \"k8s\"}");
        tb_task_err_t e;
        cr_assert_eq(tb_task_validate(in, &c, &t, &e), TB_OK, "%s", e.message);
        json_decref(t);
        json_decref(in);
}

Test(task, log_retention_default_and_cap) {
        tb_task_vctx_t c = vctx();
        c.log_retention_default_ms = 60 * DAY_MS;
        c.log_retention_max_ms = 7 * DAY_MS;
        json_t *in = mk("{}"), *t = NULL;
        tb_task_err_t e;
        cr_assert_eq(tb_task_validate(in, &c, &t, &e), TB_OK, "%s", e.message);
        /* the default never exceeds the group's cap */
        cr_assert_str_eq(json_string_value(json_object_get(t, "log_retention")), "P7D");
        json_decref(t);
        json_object_set_new(in, "log_retention", json_string("8d"));
        cr_assert_eq(tb_task_validate(in, &c, &t, &e), TB_ERR_INVALID);
        cr_assert_str_eq(e.field, "log_retention");
        cr_assert(strstr(e.message, "cap of P7D"), "%s", e.message);
        c.log_retention_max_ms = 0; /* no cap */
        json_object_set_new(in, "log_retention", json_string("3650d"));
        cr_assert_eq(tb_task_validate(in, &c, &t, &e), TB_OK, "%s", e.message);
        cr_assert_str_eq(json_string_value(json_object_get(t, "log_retention")), "P3650D");
        json_decref(t);
        json_decref(in);
}

Test(task, unknown_field_lists_valid_ones) {
        json_t *in = mk("{\"colour\": 1}"), *t = NULL;
        tb_task_err_t e;
        cr_assert_eq(validate(in, &t, &e), TB_ERR_INVALID);
        const char *all[] = {"name", "script", "argv", "security_group", "user_id",
                             "schedule", "execution_time", "expiry", "executor",
                             "executor_options", "retries", "overlap", "misfire", "jitter",
                             "expires_at", "log_retention", "paused", "labels", "home_region"};
        for (size_t i = 0; i < TB_ARRAY_LEN(all); i++)
                cr_assert(strstr(e.message, all[i]), "'%s' missing from %s", all[i],
                          e.message);
        cr_assert(strstr(e.message, "read-only"));
        json_decref(in);
}

/* ---- Avro round trip ---------------------------------------------------- */

static json_t *serde_round_trip(const json_t *spec) {
        json_t *ev = json_pack("{ss ss sI ss sI ss ss s[] sO sI ss sI}", "event_id", "e1",
                               "task_id", "t1", "version", (json_int_t)1, "type", "CREATED",
                               "at", (json_int_t)NOW_MS, "actor", "alice", "command_id", "",
                               "changed_fields", "task", spec, "created_at",
                               (json_int_t)NOW_MS, "created_by", "alice", "epoch",
                               (json_int_t)0);
        cr_assert(ev);
        tb_buf_t buf = {0};
        char errstr[512];
        tb_err_t rc = tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &buf, errstr, sizeof(errstr));
        cr_assert_eq(rc, TB_OK, "encode: %s", errstr);
        json_t *back = NULL;
        rc = tb_serde_decode(buf.data, buf.len, TB_SCHEMA_TASK_EVENT, NULL, &back, errstr,
                             sizeof(errstr));
        cr_assert_eq(rc, TB_OK, "decode: %s", errstr);
        json_t *task = json_incref(json_object_get(back, "task"));
        json_decref(back);
        json_decref(ev);
        tb_buf_free(&buf);
        return task;
}

static void check_round_trip(const char *body) {
        json_t *in = parse(body), *t = must_validate(in);
        json_t *spec = tb_task_to_spec(t);
        cr_assert(spec, "to_spec failed for %s", body);
        json_t *dspec = serde_round_trip(spec);
        json_t *back = tb_task_from_spec(dspec);
        cr_assert(back, "from_spec failed");
        char *a = json_dumps(t, JSON_SORT_KEYS), *b = json_dumps(back, JSON_SORT_KEYS);
        cr_assert(json_equal(t, back), "round trip differs:\n%s\n%s", a, b);
        free(a);
        free(b);
        json_decref(back);
        json_decref(dspec);
        json_decref(spec);
        json_decref(t);
        json_decref(in);
}

Test(task, avro_round_trip) {
        check_round_trip(FULL);
        check_round_trip(BASE);
        check_round_trip("{\"name\": \"o\", \"argv\": [\"/bin/true\"], \"security_group\": "
                         "\"g\", \"execution_time\": \"2026-07-01T00:00:00.123Z\", "
                         "\"expires_at\": \"2026-08-01T00:00:00Z\"}");
        check_round_trip("{\"name\": \"e\", \"script\": \"x\", \"security_group\": \"g\", "
                         "\"schedule\": {\"every\": \"1.5s\", \"start_at\": "
                         "\"2026-01-01T00:00:00Z\", \"end_at\": \"2026-02-01T00:00:00Z\", "
                         "\"dst_overlap\": \"last\"}, \"jitter\": \"250ms\"}");
}

Test(task, spec_shape) {
        json_t *in = parse(FULL), *t = must_validate(in);
        json_t *spec = tb_task_to_spec(t);
        cr_assert(spec);
        json_t *s = json_object_get(spec, "schedule");
        cr_assert_str_eq(json_string_value(json_object_get(s, "kind")), "CRON");
        cr_assert_str_eq(json_string_value(json_object_get(s, "timezone")), "Europe/Paris");
        cr_assert(json_is_null(json_object_get(s, "once_at")));
        cr_assert(json_is_null(json_object_get(s, "every_ms")));
        cr_assert_eq(json_integer_value(json_object_get(s, "start_at")),
                     NOW_MS + 31 * DAY_MS);
        cr_assert_str_eq(json_string_value(json_object_get(s, "dst_gap")), "SKIP");
        cr_assert_str_eq(json_string_value(json_object_get(s, "dst_overlap")), "BOTH");
        cr_assert_eq(json_integer_value(json_object_get(s, "jitter_ms")), 2500);
        cr_assert_eq(json_integer_value(json_object_get(spec, "expiry_ms")), 90 * 60000);
        cr_assert_eq(json_integer_value(json_object_get(spec, "log_retention_ms")),
                     14 * DAY_MS);
        json_t *r = json_object_get(spec, "retries");
        cr_assert_eq(json_integer_value(json_object_get(r, "max_attempts")), 5);
        cr_assert_eq(json_integer_value(json_object_get(r, "backoff_ms")), 30000);
        cr_assert_eq(json_integer_value(json_object_get(r, "backoff_max_ms")), 3600000);
        cr_assert_str_eq(json_string_value(json_object_get(spec, "overlap")), "REPLACE");
        cr_assert_str_eq(json_string_value(json_object_get(spec, "misfire")), "RUN_ALL");
        cr_assert(json_is_integer(json_object_get(spec, "expires_at")));
        cr_assert(json_is_true(json_object_get(spec, "paused")));
        json_decref(spec);
        json_decref(t);
        json_decref(in);
}

Test(task, spec_garbage_is_refused) {
        const char *bad[] = {
                "null", "[]", "{}", "{\"schedule\": {}}",
                "{\"name\": 1, \"schedule\": {\"kind\": \"ONCE\"}}",
                "{\"schedule\": {\"kind\": \"WEEKLY\"}}",
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
                json_t *v = parse(bad[i]);
                cr_assert_null(tb_task_from_spec(v), "%s", bad[i]);
                cr_assert_null(tb_task_to_spec(v), "%s", bad[i]);
                json_decref(v);
        }
        /* a normalized task with one field broken */
        json_t *in = parse(FULL), *t = must_validate(in);
        json_object_set_new(t, "overlap", json_string("sometimes"));
        cr_assert_null(tb_task_to_spec(t));
        json_decref(t);
        json_decref(in);
}

/* ---- schedule ------------------------------------------------------------ */

static void task_schedule(const char *extra, int64_t anchor, tb_schedule_t *s) {
        json_t *in = mk(extra), *t = must_validate(in);
        char errstr[256];
        tb_err_t rc = tb_task_schedule(t, anchor, s, errstr, sizeof(errstr));
        cr_assert_eq(rc, TB_OK, "%s", errstr);
        json_decref(t);
        json_decref(in);
}

static int64_t next_after(const tb_schedule_t *s, int64_t after) {
        int64_t next = 0;
        char errstr[256];
        tb_err_t rc = tb_schedule_next(s, after, &next, NULL, errstr, sizeof(errstr));
        if (rc == TB_ERR_NOT_FOUND)
                return -1;
        cr_assert_eq(rc, TB_OK, "%s", errstr);
        return next;
}

Test(task, schedule_once) {
        tb_schedule_t s;
        task_schedule("{\"schedule\": {\"once\": \"2026-01-01T10:00:00Z\"}, "
                      "\"jitter\": \"30s\"}",
                      NOW_MS, &s);
        cr_assert_eq(s.kind, TB_SCHEDULE_ONCE);
        cr_assert_eq(s.jitter_ms, 30000);
        cr_assert_eq(next_after(&s, NOW_MS), NOW_MS + 10 * 3600000);
        cr_assert_eq(next_after(&s, NOW_MS + 10 * 3600000), -1);
        tb_schedule_clear(&s);
}

Test(task, schedule_every) {
        tb_schedule_t s;
        /* no start_at: anchored at the creation time */
        task_schedule("{\"schedule\": {\"every\": \"1m\"}}", NOW_MS + 7, &s);
        cr_assert_eq(s.kind, TB_SCHEDULE_EVERY);
        cr_assert_eq(s.every_ms, 60000);
        cr_assert_eq(next_after(&s, NOW_MS + 7), NOW_MS + 7 + 60000);
        tb_schedule_clear(&s);
        /* start_at anchors, end_at bounds, expires_at stops */
        task_schedule("{\"schedule\": {\"every\": 3600, \"start_at\": "
                      "\"2026-01-01T00:30:00Z\", \"end_at\": \"2026-01-01T05:30:00Z\"}, "
                      "\"expires_at\": \"2026-01-01T03:00:00Z\"}",
                      NOW_MS, &s);
        cr_assert_eq(s.anchor_ms, NOW_MS + 1800000);
        cr_assert_eq(s.start_at_ms, NOW_MS + 1800000);
        cr_assert_eq(s.end_at_ms, NOW_MS + 5 * 3600000 + 1800000);
        cr_assert_eq(s.expires_at_ms, NOW_MS + 3 * 3600000);
        cr_assert_eq(next_after(&s, NOW_MS), NOW_MS + 1800000);
        cr_assert_eq(next_after(&s, NOW_MS + 1800000), NOW_MS + 5400000);
        cr_assert_eq(next_after(&s, NOW_MS + 3 * 3600000), -1);
        tb_schedule_clear(&s);
}

Test(task, schedule_cron) {
        tb_schedule_t s;
        task_schedule("{\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": "
                      "\"Europe/Paris\", \"dst_gap\": \"skip\", \"dst_overlap\": \"last\"}}",
                      NOW_MS, &s);
        cr_assert_eq(s.kind, TB_SCHEDULE_CRON);
        cr_assert(s.cron);
        cr_assert_str_eq(tb_tz_name(s.tz), "Europe/Paris");
        cr_assert_eq(s.dst_gap, TB_DST_GAP_SKIP);
        cr_assert_eq(s.dst_overlap, TB_DST_OVERLAP_LAST);
        /* 03:00 in Paris in winter (UTC+1) is 02:00Z */
        cr_assert_eq(next_after(&s, NOW_MS), NOW_MS + 2 * 3600000);
        cr_assert_eq(next_after(&s, NOW_MS + 2 * 3600000), NOW_MS + DAY_MS + 2 * 3600000);
        tb_schedule_clear(&s);
        /* summer time: UTC+2 */
        task_schedule("{\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": "
                      "\"Europe/Paris\", \"start_at\": \"2026-07-01T00:00:00Z\"}}",
                      NOW_MS, &s);
        int64_t jul1;
        cr_assert_eq(tb_time_parse("2026-07-01T01:00:00Z", &jul1, NULL, 0), TB_OK);
        cr_assert_eq(next_after(&s, NOW_MS), jul1);
        tb_schedule_clear(&s);
}

Test(task, schedule_rejects_broken_task) {
        tb_schedule_t s;
        char errstr[256];
        json_t *t = parse("{\"schedule\": {\"cron\": \"nope\"}}");
        cr_assert_eq(tb_task_schedule(t, NOW_MS, &s, errstr, sizeof(errstr)), TB_ERR_INVALID);
        cr_assert(strstr(errstr, "schedule.cron"), "%s", errstr);
        cr_assert_null(s.cron);
        json_decref(t);
        t = parse("{}");
        cr_assert_eq(tb_task_schedule(t, NOW_MS, &s, errstr, sizeof(errstr)), TB_ERR_INVALID);
        json_decref(t);
}

/* ---- durations and diff --------------------------------------------------- */

Test(task, duration_format) {
        static const struct {
                int64_t ms;
                const char *want;
        } cases[] = {
                {0, "PT0S"},
                {500, "PT0.5S"},
                {1250, "PT1.25S"},
                {1, "PT0.001S"},
                {30000, "PT30S"},
                {60000, "PT1M"},
                {5400000, "PT1H30M"},
                {3600000, "PT1H"},
                {86400000, "P1D"},
                {30 * DAY_MS, "P30D"},
                {DAY_MS + 3600000 + 1, "P1DT1H0.001S"},
                {-1000, "-PT1S"},
                {INT64_MAX, "P106751991167DT7H12M55.807S"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
                char buf[48];
                tb_units_duration_format_iso8601(cases[i].ms, buf, sizeof(buf));
                cr_assert_str_eq(buf, cases[i].want);
        }
}

Test(task, diff) {
        json_t *a = parse("{\"name\": \"a\", \"paused\": false, \"labels\": {\"x\": \"1\"}, "
                          "\"only_a\": 1, \"same\": [1, 2]}");
        json_t *b = parse("{\"paused\": true, \"name\": \"a\", \"labels\": {\"x\": \"2\"}, "
                          "\"same\": [1, 2], \"extra\": null}");
        json_t *d = tb_task_diff(a, b);
        json_t *want = parse("[\"extra\", \"labels\", \"only_a\", \"paused\"]");
        char *s = json_dumps(d, 0);
        cr_assert(json_equal(d, want), "%s", s);
        free(s);
        json_decref(d);
        d = tb_task_diff(a, a);
        cr_assert_eq(json_array_size(d), 0);
        json_decref(d);
        d = tb_task_diff(NULL, b);
        cr_assert_eq(json_array_size(d), 5);
        json_decref(d);
        json_decref(want);
        json_decref(a);
        json_decref(b);
}

/* ---- garbage --------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static const char *const plausible[] = {
        "", "x", "1m", "0", "-1", "PT1H", "P1Y", "1.5s", "2026-06-01T00:00:00Z",
        "1999-01-01T00:00:00Z", "0 3 * * *", "@daily", "* * * * * * *", "Europe/Paris",
        "Mars/Olympus", "skip", "both", "forbid", "run_all", "shell", "alice", "bob",
        "9999-12-31T23:59:59-23:59", "ops", "\xc3\xa9", "a/b",
};

static const char *const keys[] = {
        "name", "script", "argv", "security_group", "user_id", "schedule", "execution_time",
        "expiry", "executor", "executor_options", "retries", "overlap", "misfire", "jitter",
        "expires_at", "log_retention", "paused", "labels", "home_region", "once", "every",
        "cron", "timezone", "start_at", "end_at", "dst_gap", "dst_overlap", "max_attempts",
        "backoff", "backoff_max", "id", "zzz",
};

static json_t *junk(int depth) {
        switch (rnd() % (depth > 4 ? 7 : 9)) {
        case 0:
                return json_null();
        case 1:
                return json_boolean(rnd() & 1);
        case 2: {
                static const json_int_t ints[] = {0, 1, -1, 100, 101, INT64_MAX, INT64_MIN,
                                                  253402300799, 86400};
                return json_integer(ints[rnd() % TB_ARRAY_LEN(ints)]);
        }
        case 3:
                return json_real((double)(int64_t)rnd() / 1e9);
        case 4:
                return json_string(plausible[rnd() % TB_ARRAY_LEN(plausible)]);
        case 5: { /* arbitrary bytes, including NUL and invalid UTF-8 */
                char b[24];
                size_t n = rnd() % sizeof(b);
                for (size_t i = 0; i < n; i++)
                        b[i] = (char)rnd();
                return json_stringn_nocheck(b, n);
        }
        case 6: { /* huge */
                size_t n = 1 + rnd() % 200000;
                char *b = malloc(n + 1);
                memset(b, "a9 \n"[rnd() % 4], n);
                b[n] = '\0';
                json_t *s = json_string(b);
                free(b);
                return s;
        }
        case 7: {
                json_t *a = json_array();
                for (int i = (int)(rnd() % 4); i > 0; i--)
                        json_array_append_new(a, junk(depth + 1));
                return a;
        }
        default: {
                json_t *o = json_object();
                for (int i = (int)(rnd() % 6); i > 0; i--) {
                        if (rnd() % 8 == 0) {
                                char k[8];
                                for (size_t j = 0; j < sizeof(k) - 1; j++)
                                        k[j] = (char)(1 + rnd() % 255);
                                k[sizeof(k) - 1] = '\0';
                                json_object_set_new_nocheck(o, k, junk(depth + 1));
                        } else {
                                json_object_set_new(o, keys[rnd() % TB_ARRAY_LEN(keys)],
                                                    junk(depth + 1));
                        }
                }
                return o;
        }
        }
}

/** Validate \p in: either a refusal naming a field with a message that is
 *  valid UTF-8, or a task that validates to itself again. */
static void check_outcome(const json_t *in, bool must_fail) {
        json_t *out = NULL;
        tb_task_err_t e;
        tb_err_t rc = validate(in, &out, &e);
        if (rc == TB_OK) {
                cr_assert(!must_fail);
                json_t *again = must_validate(out);
                cr_assert(json_equal(out, again));
                json_t *spec = tb_task_to_spec(out);
                cr_assert(spec);
                json_t *back = tb_task_from_spec(spec);
                cr_assert(json_equal(out, back));
                json_decref(back);
                json_decref(spec);
                json_decref(again);
                json_decref(out);
                return;
        }
        cr_assert_null(out);
        if (rc == TB_ERR_FORBIDDEN)
                cr_assert_str_eq(e.field, "user_id");
        else
                cr_assert_eq(rc, TB_ERR_INVALID, "rc %s", tb_err_name(rc));
        cr_assert(e.field[0], "no field for message '%s'", e.message);
        cr_assert(e.message[0]);
        /* the message must be fit for a JSON reply */
        json_t *m = json_string(e.message), *f = json_string(e.field);
        cr_assert(m && f, "error is not valid UTF-8: %s / %s", e.field, e.message);
        json_decref(m);
        json_decref(f);
}

Test(task, garbage_never_crashes) {
        for (int i = 0; i < 1500; i++) {
                /* pure junk: never a valid task */
                json_t *j = junk(0);
                check_outcome(j, true);
                json_decref(j);

                /* a valid task with some members, possibly nested, replaced by junk */
                json_t *t = parse(FULL);
                for (int n = 1 + (int)(rnd() % 3); n > 0; n--) {
                        json_t *target = t;
                        uint64_t r = rnd() % 10;
                        if (r == 0)
                                target = json_object_get(t, "schedule");
                        else if (r == 1)
                                target = json_object_get(t, "retries");
                        json_object_set_new(target, keys[rnd() % TB_ARRAY_LEN(keys)],
                                            junk(1));
                }
                check_outcome(t, false);
                json_decref(t);
        }
}

Test(task, deep_nesting) {
        json_t *deep = json_array(), *cur = deep;
        for (int i = 0; i < 2000; i++) {
                json_t *n = json_array();
                json_array_append_new(cur, n);
                cur = n;
        }
        static const char *const fields[] = {"name", "schedule", "retries", "labels",
                                             "argv", "executor_options", "expiry"};
        for (size_t i = 0; i < TB_ARRAY_LEN(fields); i++) {
                json_t *in = mk("{}");
                json_object_set(in, fields[i], deep);
                json_t *out = NULL;
                tb_task_err_t e;
                cr_assert_eq(validate(in, &out, &e), TB_ERR_INVALID);
                if (!strcmp(fields[i], "argv"))
                        cr_assert_str_eq(e.field, "argv[0]", "%s", e.message);
                else
                        cr_assert_str_eq(e.field, fields[i], "%s", e.message);
                json_decref(in);
        }
        json_decref(deep);
}

/* ---- the checks of every interface: ids, references, JSON text ------------------ */

static void expect_id_refused(const char *id, size_t len, const char *needle) {
        char err[300] = "";
        cr_assert_eq(tb_task_id_check("task_id", id, len, err, sizeof(err)), TB_ERR_INVALID,
                     "id of %zu bytes accepted", len);
        cr_assert(strstr(err, needle), "'%s' not in: %s", needle, err);
        cr_assert(!strncmp(err, "task_id: ", 9), "the message names the field: %s", err);
        json_t *m = json_string(err);
        cr_assert_not_null(m, "the message is not valid UTF-8: %s", err);
        json_decref(m);
}

Test(task, id_check) {
        static const char *const ok[] = {"a", "t-1", "4f1c2d3e-0000-4000-8000-000000000001",
                                         "job.nightly_2026:eu", "A.B_C:D-E"};
        for (size_t i = 0; i < TB_ARRAY_LEN(ok); i++)
                cr_assert_eq(tb_task_id_check("task_id", ok[i], strlen(ok[i]), NULL, 0), TB_OK,
                             "%s refused", ok[i]);
        char big[8001];
        memset(big, 'a', 8000);
        big[8000] = '\0';
        cr_assert_eq(tb_task_id_check("id", big, TB_TASK_ID_MAX, NULL, 0), TB_OK);
        expect_id_refused(big, TB_TASK_ID_MAX + 1, "129 characters, at most 128 allowed");
        expect_id_refused(big, 8000, "task_id: 8000 characters, at most 128 allowed "
                                     "([A-Za-z0-9._:-])");
        expect_id_refused("", 0, "must not be empty");
        expect_id_refused(NULL, 0, "must not be empty");
        expect_id_refused("a/b", 3, "'/' at position 2 is not allowed");
        expect_id_refused("a b", 3, "a space at position 2");
        expect_id_refused("ab\0c", 4, "a NUL byte at position 3");
        expect_id_refused("\xff\xfe", 2, "byte 0xFF at position 1");
        expect_id_refused("caf\xc3\xa9", 5, "byte 0xC3 at position 4");
        expect_id_refused("a\nb", 3, "byte 0x0A at position 2");
        expect_id_refused("../etc", 6, "'/' at position 3");
}

Test(task, ref_check) {
        char err[300];
        cr_assert_eq(tb_task_ref_check("command_id", "", 0, true, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_task_ref_check("command_id", "", 0, false, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert_eq(tb_task_ref_check("command_id", "job 42 / run #7", 15, false, err,
                                       sizeof(err)),
                     TB_OK, "printable ASCII is fine: %s", err);
        char big[200];
        memset(big, 'x', sizeof(big));
        cr_assert_eq(tb_task_ref_check("correlation_id", big, 128, false, err, sizeof(err)),
                     TB_OK);
        cr_assert_eq(tb_task_ref_check("correlation_id", big, 129, false, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "correlation_id: 129 characters, at most 128"), "%s", err);
        cr_assert_eq(tb_task_ref_check("command_id", "a\0b", 3, true, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "command_id: a NUL byte at position 2"), "%s", err);
        cr_assert_eq(tb_task_ref_check("command_id", "\xc3\xa9", 2, true, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "byte 0xC3"), "%s", err);
}

Test(task, json_check) {
        tb_task_err_t e;
        const char *t = "{\"name\": \"[[[[{{{{\", \"labels\": {\"a\": \"\\\"[\"}}";
        cr_assert_eq(tb_task_json_check(t, strlen(t), "task", &e), TB_OK,
                     "brackets inside strings do not count: %s", e.message);
        /* 10,000 deep: refused before any parser recurses */
        size_t n = 10000;
        char *deep = malloc(2 * n + 1);
        cr_assert_not_null(deep);
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        deep[2 * n] = '\0';
        cr_assert_eq(tb_task_json_check(deep, 2 * n, "task", &e), TB_ERR_INVALID);
        cr_assert_str_eq(e.field, "task");
        cr_assert(strstr(e.message, "nested more than 32 levels"), "%s", e.message);
        cr_assert_eq(tb_task_json_check(deep + n - 32, 64, "task", &e), TB_OK);
        free(deep);
        /* 10 MiB: refused by its size alone */
        size_t big = 10 * 1024 * 1024;
        char *huge = malloc(big);
        cr_assert_not_null(huge);
        memset(huge, ' ', big);
        cr_assert_eq(tb_task_json_check(huge, big, NULL, &e), TB_ERR_INVALID);
        cr_assert_str_eq(e.field, "task");
        cr_assert(strstr(e.message, "task: 10485760 bytes of JSON; a task is at most 262144"),
                  "%s", e.message);
        cr_assert_eq(tb_task_json_check(huge, TB_TASK_JSON_MAX, NULL, &e), TB_OK);
        free(huge);
}

Test(task, calendars_validated_and_normalized) {
        json_t *in = mk("{\"calendars\": [{\"calendar\": \"fr\", \"rule\": \"roll_next\"}, "
                        "{\"calendar\": \"freeze\"}]}");
        json_t *t = must_validate(in);
        json_decref(in);
        json_t *c = json_object_get(t, "calendars");
        cr_assert_eq(json_array_size(c), 2);
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(c, 0), "rule")),
                         "ROLL_NEXT");
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(c, 1), "rule")),
                         "EXCLUDE", "the rule's default");
        tb_task_calendar_t rl[TB_TASK_CALENDARS_MAX];
        size_t n = 0;
        char err[256];
        json_t *spec = tb_task_to_spec(t);
        cr_assert_eq(tb_task_calendars(spec, rl, &n, err, sizeof(err)), TB_OK, "%s", err);
        cr_expect_eq(n, 2);
        cr_expect_str_eq(rl[1].name, "freeze");
        cr_expect_eq(rl[0].rule, TB_CALENDAR_ROLL_NEXT);
        json_decref(spec);
        json_decref(t);
        in = mk("{\"calendars\": []}");
        t = must_validate(in);
        cr_expect_null(json_object_get(t, "calendars"), "an empty list is left out");
        json_decref(t);
        json_decref(in);

        expect_invalid(mk("{\"calendars\": {\"calendar\": \"fr\"}}"), "calendars", "an array");
        expect_invalid(mk("{\"calendars\": [\"fr\"]}"), "calendars[0]", "an object");
        expect_invalid(mk("{\"calendars\": [{\"calendar\": \"fr\", \"rule\": \"x\"}]}"),
                       "calendars[0].rule", "one of EXCLUDE, ONLY, ROLL_NEXT, ROLL_PREVIOUS");
        expect_invalid(mk("{\"calendars\": [{\"rule\": \"ONLY\"}]}"), "calendars[0].calendar",
                       "required");
        expect_invalid(mk("{\"calendars\": [{\"calendar\": \"a/b\"}]}"), "calendars[0].calendar",
                       "not a calendar name");
        expect_invalid(mk("{\"calendars\": [{\"calendar\": \"fr\", \"when\": 1}]}"),
                       "calendars[0].when", "when");
        expect_invalid(mk("{\"calendars\": [{\"calendar\": \"a\"}, {\"calendar\": \"a\"}]}"),
                       "calendars[1].calendar", "already named by calendars[0]");
        expect_invalid(mk("{\"calendars\": [{\"calendar\": \"a\", \"rule\": \"ROLL_PREVIOUS\"}, "
                          "{\"calendar\": \"b\", \"rule\": \"ONLY\"}, {\"calendar\": \"c\", "
                          "\"rule\": \"ROLL_NEXT\"}]}"),
                       "calendars[2].rule",
                       "roll_next and roll_previous cannot both be used by one task");
        expect_invalid(mk("{\"calendars\": [{\"calendar\": \"a\"}, {\"calendar\": \"b\"}, "
                          "{\"calendar\": \"c\"}, {\"calendar\": \"d\"}, {\"calendar\": \"e\"}, "
                          "{\"calendar\": \"f\"}, {\"calendar\": \"g\"}, {\"calendar\": \"h\"}, "
                          "{\"calendar\": \"i\"}]}"),
                       "calendars", "at most 8");
}

Test(task, calendar_decisions_of_a_range_drop_collisions) {
        /* unresolved: every occurrence skipped with the reason */
        tb_task_cals_t c = {.n = 1};
        snprintf(c.unresolved, sizeof(c.unresolved), "calendar 'x' does not exist in group 'g'");
        int64_t occ[3] = {1000, 2000, 3000};
        tb_calendar_decision_t d[3];
        char err[256];
        cr_assert_eq(tb_task_cals_decide(&c, NULL, occ, 3, d, err, sizeof(err)), TB_OK, "%s", err);
        for (int i = 0; i < 3; i++) {
                cr_expect_eq(d[i].verdict, TB_CALENDAR_SKIPPED);
                cr_expect_str_eq(d[i].reason, "calendar 'x' does not exist in group 'g'");
        }
        json_t *o = json_object();
        cr_assert_eq(tb_task_cals_decision_json(&d[0], o), TB_OK);
        cr_expect_str_eq(json_string_value(json_object_get(o, "verdict")), "skipped");
        cr_expect(json_is_null(json_object_get(o, "fire_time")));
        json_decref(o);
}

/* ---- notify rules (docs/notifications.md) --------------------------------- */

Test(task, notify_rules) {
        json_t *in = mk("{\"notify\": [{\"on\": [\"Failure\", \"recovery\"], "
                        "\"channel\": \"ops\"}, {\"on\": [\"long_running\"], "
                        "\"channel\": \"mail\", \"after_ms\": 60000}]}");
        json_t *t = must_validate(in);
        json_decref(in);
        json_t *r0 = json_array_get(json_object_get(t, "notify"), 0);
        cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r0, "on"), 0)),
                         "failure");
        cr_assert(json_is_null(json_object_get(r0, "after_ms")));
        json_decref(t);
        /* none: no member, as a GET shows it */
        in = mk("{\"notify\": []}");
        t = must_validate(in);
        cr_assert_null(json_object_get(t, "notify"));
        json_decref(t);
        json_decref(in);
        expect_invalid(mk("{\"notify\": {}}"), "notify", "an array of rules");
        expect_invalid(mk("{\"notify\": [3]}"), "notify[0]", "an object");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"failure\", \"oops\"], \"channel\": \"a\"}]}"),
                       "notify[0].on[1]", "'oops' is not allowed");
        expect_invalid(mk("{\"notify\": [{\"on\": [], \"channel\": \"a\"}]}"), "notify[0].on",
                       "required");
        expect_invalid(mk("{\"notify\": [{\"channel\": \"a\"}]}"), "notify[0].on", "required");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"skipped\", \"skipped\"], \"channel\": "
                          "\"a\"}]}"),
                       "notify[0].on[1]", "named twice");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"skipped\"]}]}"), "notify[0].channel",
                       "required");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"skipped\"], \"channel\": \"a b\"}]}"),
                       "notify[0].channel", "notify[0].channel");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"long_running\"], \"channel\": \"a\"}]}"),
                       "notify[0].after_ms", "required with long_running");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"failure\"], \"channel\": \"a\", "
                          "\"after_ms\": 5000}]}"),
                       "notify[0].after_ms", "only applies to long_running");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"long_running\"], \"channel\": \"a\", "
                          "\"after_ms\": 10}]}"),
                       "notify[0].after_ms", "from 1000");
        expect_invalid(mk("{\"notify\": [{\"on\": [\"failure\"], \"channel\": \"a\", "
                          "\"x\": 1}]}"),
                       "notify[0].x", "valid fields in notify[0]");
        char many[4096] = "{\"notify\": [";
        for (int i = 0; i < 17; i++)
                strcat(many, i ? ", {\"on\": [\"failure\"], \"channel\": \"a\"}"
                               : "{\"on\": [\"failure\"], \"channel\": \"a\"}");
        strcat(many, "]}");
        expect_invalid(mk(many), "notify", "at most 16");
        /* carried through the TaskSpec and Avro unchanged */
        check_round_trip("{\"name\": \"n\", \"script\": \"true\", \"security_group\": \"ops\", "
                         "\"schedule\": {\"every\": \"1m\"}, \"notify\": [{\"on\": "
                         "[\"failure\", \"recovery\"], \"channel\": \"ops\"}, {\"on\": "
                         "[\"long_running\"], \"channel\": \"mail\", \"after_ms\": 60000}]}");
}
