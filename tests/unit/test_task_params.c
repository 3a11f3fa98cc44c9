/**
 * @file test_task_params.c
 * @brief task/params.c: a task's parameter declaration through the task
 *        validator (each rule's field and message), its Avro round trip, and
 *        the values of a run (tb_task_params_resolve()).
 */
#include "serde/serde.h"
#include "task/task.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

/* 2026-01-01T00:00:00Z */
#define NOW_MS INT64_C(1767225600000)

static json_t *parse(const char *text) {
        json_error_t je;
        json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
        cr_assert(v, "bad test JSON: %s: %s", je.text, text);
        return v;
}

/** Validate a task whose "parameters" is \p params (JSON text). */
static tb_err_t validate(const char *params, json_t **out, tb_task_err_t *err) {
        char text[8192];
        snprintf(text, sizeof(text),
                 "{\"name\": \"n\", \"script\": \"echo $ENV\", \"security_group\": \"ops\", "
                 "\"schedule\": {\"every\": \"1m\"}, \"parameters\": %s}",
                 params);
        json_t *in = parse(text);
        tb_task_vctx_t c = {.now_ms = NOW_MS, .user_id = "alice"};
        *out = NULL;
        tb_err_t e = tb_task_validate(in, &c, out, err);
        json_decref(in);
        return e;
}

static void refused(const char *params, const char *field, const char *needle) {
        json_t *out;
        tb_task_err_t err;
        cr_assert_eq(validate(params, &out, &err), TB_ERR_INVALID, "accepted: %s", params);
        cr_expect_str_eq(err.field, field, "%s: field %s (%s)", params, err.field, err.message);
        cr_expect(strstr(err.message, needle), "%s: message '%s' lacks '%s'", params,
                  err.message, needle);
        /* the message names the field (an unknown key: its parent and the key) */
        const char *dot = strrchr(field, '.');
        cr_expect(strstr(err.message, field) || (dot && strstr(err.message, dot + 1)),
                  "the message names the field: %s", err.message);
}

Test(task_params, declaration_normalized) {
        json_t *out;
        tb_task_err_t err;
        cr_assert_eq(validate("[{\"name\": \"ENV\", \"type\": \"string\", \"default\": \"dev\", "
                              "\"allowed\": [\"dev\", \"prod\"]}, {\"name\": \"N\", \"type\": "
                              "\"INT\", \"default\": 3}, {\"name\": \"dry_run\", \"type\": "
                              "\"bool\", \"default\": false, \"description\": \"no writes\"}, "
                              "{\"name\": \"TAG\", \"pattern\": \"v[0-9]+\"}]",
                              &out, &err),
                     TB_OK, "%s: %s", err.field, err.message);
        json_t *want = parse(
                "[{\"name\": \"ENV\", \"type\": \"STRING\", \"default\": \"dev\", \"allowed\": "
                "[\"dev\", \"prod\"], \"pattern\": null, \"description\": null}, {\"name\": "
                "\"N\", \"type\": \"INT\", \"default\": \"3\", \"allowed\": [], \"pattern\": "
                "null, \"description\": null}, {\"name\": \"dry_run\", \"type\": \"BOOL\", "
                "\"default\": \"false\", \"allowed\": [], \"pattern\": null, \"description\": "
                "\"no writes\"}, {\"name\": \"TAG\", \"type\": \"STRING\", \"default\": null, "
                "\"allowed\": [], \"pattern\": \"v[0-9]+\", \"description\": null}]");
        cr_expect(json_equal(json_object_get(out, "parameters"), want), "got %s",
                  json_dumps(json_object_get(out, "parameters"), JSON_COMPACT));
        /* the normalized form is a fixed point, and survives the Avro TaskSpec */
        json_t *again = NULL;
        tb_task_vctx_t c = {.now_ms = NOW_MS, .user_id = "alice"};
        cr_assert_eq(tb_task_validate(out, &c, &again, &err), TB_OK, "%s", err.message);
        cr_expect(json_equal(again, out));
        char e[512];
        cr_assert_eq(tb_serde_init(e, sizeof(e)), TB_OK, "%s", e);
        json_t *spec = tb_task_to_spec(out);
        json_t *ev = json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:[], s:O, s:I, s:s, s:I}",
                               "event_id", "e", "task_id", "t", "version", (json_int_t)1,
                               "type", "CREATED", "at", (json_int_t)NOW_MS, "actor", "alice",
                               "command_id", "c", "changed_fields", "task", spec, "created_at",
                               (json_int_t)NOW_MS, "created_by", "alice", "epoch",
                               (json_int_t)0);
        tb_buf_t b = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &b, e, sizeof(e)), TB_OK, "%s", e);
        json_t *dec = NULL;
        cr_assert_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_EVENT, NULL, &dec, e,
                                     sizeof(e)),
                     TB_OK, "%s", e);
        json_t *back = tb_task_from_spec(json_object_get(dec, "task"));
        cr_expect(json_equal(json_object_get(back, "parameters"), want), "after Avro: %s",
                  json_dumps(json_object_get(back, "parameters"), JSON_COMPACT));
        json_decref(back);
        json_decref(dec);
        tb_buf_free(&b);
        json_decref(ev);
        json_decref(spec);
        json_decref(again);
        json_decref(want);
        json_decref(out);
}

Test(task_params, no_parameters_stay_absent) {
        json_t *out;
        tb_task_err_t err;
        cr_assert_eq(validate("[]", &out, &err), TB_OK);
        cr_expect_null(json_object_get(out, "parameters"));
        json_decref(out);
}

Test(task_params, declaration_refusals) {
        refused("{}", "parameters", "array");
        char many[4096] = "[";
        for (int i = 0; i < TB_TASK_PARAMS_MAX + 1; i++)
                snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s{\"name\": \"P%d\"}",
                         i ? "," : "", i);
        strcat(many, "]");
        refused(many, "parameters", "at most 32");
        refused("[\"ENV\"]", "parameters[0]", "an object");
        refused("[{\"type\": \"STRING\"}]", "parameters[0].name", "required");
        refused("[{\"name\": \"A\"}, {\"name\": \"1X\"}]", "parameters[1].name",
                "not an environment variable name");
        refused("[{\"name\": \"A-B\"}]", "parameters[0].name", "letters, digits and '_'");
        refused("[{\"name\": \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]",
                "parameters[0].name", "1 to 64");
        refused("[{\"name\": \"TASKBUS_RUN_ID\"}]", "parameters[0].name", "reserved");
        refused("[{\"name\": \"PATH\"}]", "parameters[0].name", "reserved");
        refused("[{\"name\": \"LD_PRELOAD\"}]", "parameters[0].name", "LD_*");
        refused("[{\"name\": \"A\"}, {\"name\": \"A\"}]", "parameters[1].name",
                "declared twice");
        refused("[{\"name\": \"A\", \"type\": \"FLOAT\"}]", "parameters[0].type", "");
        refused("[{\"name\": \"A\", \"colour\": 1}]", "parameters[0].colour", "colour");
        refused("[{\"name\": \"A\", \"type\": \"INT\", \"default\": \"ten\"}]",
                "parameters[0].default", "not an INT");
        refused("[{\"name\": \"A\", \"type\": \"INT\", \"default\": \"99999999999999999999\"}]",
                "parameters[0].default", "not an INT");
        refused("[{\"name\": \"A\", \"type\": \"BOOL\", \"default\": \"yes\"}]",
                "parameters[0].default", "true or false");
        refused("[{\"name\": \"A\", \"type\": \"INT\", \"allowed\": [\"1\", \"x\"]}]",
                "parameters[0].allowed[1]", "not an INT");
        refused("[{\"name\": \"A\", \"allowed\": [\"a\", \"b\"], \"default\": \"c\"}]",
                "parameters[0].default", "allowed: a, b");
        refused("[{\"name\": \"A\", \"pattern\": \"(\"}]", "parameters[0].pattern",
                "not a POSIX extended regular expression");
        refused("[{\"name\": \"A\", \"pattern\": \"(a)\\\\1\"}]", "parameters[0].pattern",
                "back references");
        refused("[{\"name\": \"A\", \"pattern\": \"((a{100}){100}){100}\"}]",
                "parameters[0].pattern", "multiply");
        refused("[{\"name\": \"A\", \"pattern\": \"[a-z]+\", \"default\": \"A1\"}]",
                "parameters[0].default", "does not match the pattern");
        refused("[{\"name\": \"A\", \"pattern\": \"[a-z]+\", \"allowed\": [\"ok\", \"NO\"]}]",
                "parameters[0].allowed[1]", "does not match");
        /* the pattern is anchored on the whole value */
        refused("[{\"name\": \"A\", \"pattern\": \"[a-z]+\", \"default\": \"abc1\"}]",
                "parameters[0].default", "whole value");
        char big[6000];
        snprintf(big, sizeof(big), "[{\"name\": \"A\", \"default\": \"%04500d\"}]", 0);
        refused(big, "parameters[0].default", "4 KiB");
}

static json_t *decl(void) {
        json_t *out;
        tb_task_err_t err;
        cr_assert_eq(validate("[{\"name\": \"ENV\", \"allowed\": [\"dev\", \"prod\"], \"default\": "
                              "\"dev\"}, {\"name\": \"COUNT\", \"type\": \"INT\"}, {\"name\": "
                              "\"DRY\", \"type\": \"BOOL\", \"default\": \"true\"}, {\"name\": "
                              "\"TAG\", \"pattern\": \"v[0-9]+\", \"default\": \"v1\"}]",
                              &out, &err),
                     TB_OK, "%s", err.message);
        json_t *d = json_incref(json_object_get(out, "parameters"));
        json_decref(out);
        return d;
}

static void resolve_refused(const char *given, const char *field, const char *needle) {
        json_t *d = decl(), *g = parse(given), *out = NULL;
        tb_task_err_t err = {0};
        cr_assert_eq(tb_task_params_resolve(d, g, &out, &err), TB_ERR_INVALID, "accepted %s",
                     given);
        cr_expect_null(out);
        cr_expect_str_eq(err.field, field, "%s: field %s (%s)", given, err.field, err.message);
        cr_expect(strstr(err.message, needle), "%s: '%s' lacks '%s'", given, err.message,
                  needle);
        json_decref(g);
        json_decref(d);
}

Test(task_params, resolve_fills_defaults) {
        json_t *d = decl(), *g = parse("{\"COUNT\": 7, \"ENV\": \"prod\"}"), *out = NULL;
        tb_task_err_t err;
        cr_assert_eq(tb_task_params_resolve(d, g, &out, &err), TB_OK, "%s", err.message);
        json_t *want = parse("{\"ENV\": \"prod\", \"COUNT\": \"7\", \"DRY\": \"true\", "
                             "\"TAG\": \"v1\"}");
        cr_expect(json_equal(out, want), "got %s", json_dumps(out, JSON_COMPACT));
        json_decref(want);
        json_decref(out);
        json_decref(g);
        g = parse("{\"COUNT\": \"-12\", \"DRY\": false, \"TAG\": \"v20\"}");
        cr_assert_eq(tb_task_params_resolve(d, g, &out, &err), TB_OK, "%s", err.message);
        want = parse("{\"ENV\": \"dev\", \"COUNT\": \"-12\", \"DRY\": \"false\", \"TAG\": "
                     "\"v20\"}");
        cr_expect(json_equal(out, want), "got %s", json_dumps(out, JSON_COMPACT));
        json_decref(want);
        json_decref(out);
        json_decref(g);
        /* no declaration, no values: an empty map */
        cr_assert_eq(tb_task_params_resolve(NULL, NULL, &out, &err), TB_OK);
        cr_expect_eq(json_object_size(out), 0);
        json_decref(out);
        json_decref(d);
}

Test(task_params, resolve_refusals) {
        resolve_refused("{\"COUNT\": 1, \"ENV\": \"staging\"}", "params.ENV",
                        "allowed: dev, prod");
        resolve_refused("{}", "params.COUNT", "required");
        resolve_refused("{\"COUNT\": \"1.5\"}", "params.COUNT", "not an INT");
        resolve_refused("{\"COUNT\": 1, \"DRY\": \"1\"}", "params.DRY", "true or false");
        resolve_refused("{\"COUNT\": 1, \"TAG\": \"x1\"}", "params.TAG", "does not match");
        resolve_refused("{\"COUNT\": 1, \"NOPE\": \"x\"}", "params.NOPE",
                        "declares no parameter 'NOPE'; its parameters: ENV, COUNT, DRY, TAG");
        resolve_refused("{\"COUNT\": 1, \"bad name\": \"x\"}", "params", "no parameter by");
        resolve_refused("{\"COUNT\": [1]}", "params.COUNT", "a string or an integer");
        resolve_refused("[]", "params", "an object");
}
