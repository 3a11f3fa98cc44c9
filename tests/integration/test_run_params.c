/**
 * @file test_run_params.c
 * @brief Run now with parameters on a real stack (every role in one
 *        taskbusd): a task declares ENV (allowed dev/prod, default dev),
 *        COUNT (INT, required) and TAG (pattern v[0-9]+, default v1); a REST
 *        run now with values runs a script that echoes them, so its log holds
 *        them and the run records them (GET /v1/runs/{id} and the task's run
 *        history show "params", defaults filled); `taskbus tasks run --param`
 *        does the same; a value outside the allowed set, an INT that is not
 *        one, an unknown name and a missing required one get a 400 naming
 *        params.NAME; a bad declaration gets a 400 naming parameters[i].FIELD;
 *        a Kafka RUN_NOW with a bad value gets a rejected TaskReply naming the
 *        parameter, and the commands role goes on (a good one after it runs).
 */
#include <criterion/criterion.h>

#include "support.h"
#include "support_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tbt_console_t con;
static char alice[96];
static char home[64];

static void setup(void) {
        char tok[80];
        tbt_console_start(&con);
        tbt_console_user(&con, "alice", "ops", tok);
        snprintf(alice, sizeof(alice), "Bearer %s", tok);
        snprintf(home, sizeof(home), "/tmp/tbt-rp-home-XXXXXX");
        cr_assert_not_null(mkdtemp(home));
}

static void teardown(void) {
        char *out = NULL;
        tbt_run(&out, "rm -rf '%s'", home);
        free(out);
        tbt_console_stop(&con);
}

TestSuite(run_params, .init = setup, .fini = teardown, .timeout = 600);

#define DECL                                                                                     \
        "[{\"name\": \"ENV\", \"allowed\": [\"dev\", \"prod\"], \"default\": \"dev\"}, "         \
        "{\"name\": \"COUNT\", \"type\": \"INT\", \"description\": \"how many\"}, "              \
        "{\"name\": \"TAG\", \"pattern\": \"v[0-9]+\", \"default\": \"v1\"}]"

/* A paused task (only run-nows run it) echoing its parameters; @returns its id. */
static void create_task(char id[64]) {
        const char *body =
                "{\"name\": \"params\", \"script\": \"echo \\\"env=$ENV count=$COUNT "
                "tag=$TAG\\\"\", \"security_group\": \"ops\", \"schedule\": {\"every\": \"1h\"}, "
                "\"paused\": true, \"parameters\": " DECL "}";
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/tasks", alice, body);
        cr_assert_eq(r.status, 201, "create: %ld %s", r.status, r.body.data);
        snprintf(id, 64, "%s", json_string_value(json_object_get(r.j, "id")));
        /* the declaration as normalized, on the task */
        json_t *p = json_object_get(r.j, "parameters");
        cr_assert_eq(json_array_size(p), 3, "%s", r.body.data);
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(p, 1), "type")), "INT");
        cr_expect(json_is_null(json_object_get(json_array_get(p, 1), "default")));
        tbt_http_free(&r);
}

/* `taskbus tasks SUB ID ARGS` as alice; @returns its exit status, *out its output. */
static int cli_tasks(char **out, const char *sub, const char *id, const char *args) {
        *out = NULL;
        return tbt_run(out, "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                            "%s/bin/taskbus tasks %s %s %s 2>&1",
                       home, con.port, alice + strlen("Bearer "), tbt_build_dir(), sub, id,
                       args);
}

static tbt_http_res_t run_now(const char *id, const char *body) {
        char path[200];
        snprintf(path, sizeof(path), "/v1/tasks/%s/run", id);
        return tbt_http(con.port, "POST", path, alice, body);
}

static void expect_400(tbt_http_res_t r, const char *field, const char *needle,
                       const char *what) {
        cr_assert_eq(r.status, 400, "%s: %ld %s", what, r.status, r.body.data);
        json_t *e = json_object_get(r.j, "error");
        cr_expect_str_eq(json_string_value(json_object_get(e, "field")), field, "%s: %s", what,
                         r.body.data);
        const char *m = json_string_value(json_object_get(e, "message"));
        cr_expect(m && !strncmp(m, field, strlen(field)) && strstr(m, needle),
                  "%s: the message starts with %s and says '%s': %s", what, field, needle,
                  r.body.data);
        tbt_http_free(&r);
}

/* Wait for \p n succeeded runs of task \p id. */
static void wait_runs(const char *id, int n) {
        char q[300], want[16];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM runs WHERE task_id = '%s' AND status = 'succeeded'", id);
        snprintf(want, sizeof(want), "%d", n);
        tbt_wait_sql(&con.st, q, want, 120000);
}

/* The log of task \p id's run whose params hold COUNT = \p count. */
static char *run_output(const char *id, const char *count, char run_id[64]) {
        char q[600];
        snprintf(q, sizeof(q),
                 "SELECT run_id FROM runs WHERE task_id = '%s' AND params->>'COUNT' = '%s'", id,
                 count);
        char *rid = tbt_sql_value(&con.st, q);
        cr_assert_not_null(rid, "no run of %s with COUNT=%s", id, count);
        snprintf(run_id, 64, "%s", rid);
        free(rid);
        snprintf(q, sizeof(q),
                 "SELECT convert_from(string_agg(data, ''::bytea ORDER BY seq), 'UTF8') FROM "
                 "run_logs WHERE run_id = '%s' AND stream = 'stdout'",
                 run_id);
        /* the log is projected from its chunks: wait for the line */
        for (int i = 0; i < 600; i++) {
                char *out = tbt_sql_value(&con.st, q);
                if (out && strchr(out, '\n'))
                        return out;
                free(out);
                usleep(100000);
        }
        cr_assert_fail("run %s: no output line in 60 s", run_id);
        return NULL;
}

Test(run_params, rest_and_cli_values_reach_the_script_and_the_run) {
        char id[64], rid[64];
        create_task(id);
        /* `taskbus tasks get` shows the declaration */
        char *out = NULL;
        cr_assert_eq(cli_tasks(&out, "get", id, ""), 0, "%s", out);
        cr_expect(strstr(out, "parameters:   ENV STRING default 'dev', one of dev|prod\n"), "%s",
                  out);
        cr_expect(strstr(out, "COUNT INT required\n"), "%s", out);
        cr_expect(strstr(out, "TAG STRING default 'v1', matching v[0-9]+\n"), "%s", out);
        free(out);

        /* REST: values as strings and a JSON integer; TAG takes its default */
        tbt_http_res_t r = run_now(id, "{\"params\": {\"ENV\": \"prod\", \"COUNT\": 7}}");
        cr_assert_eq(r.status, 202, "run: %ld %s", r.status, r.body.data);
        tbt_http_free(&r);
        wait_runs(id, 1);
        out = run_output(id, "7", rid);
        cr_expect(strstr(out, "env=prod count=7 tag=v1\n"), "output: %s", out);
        free(out);

        /* the run records them, defaults filled */
        char path[200];
        snprintf(path, sizeof(path), "/v1/runs/%s", rid);
        r = tbt_http(con.port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        json_t *want = json_pack("{s:s, s:s, s:s}", "ENV", "prod", "COUNT", "7", "TAG", "v1");
        cr_expect(json_equal(json_object_get(r.j, "params"), want), "run params: %s",
                  r.body.data);
        cr_expect_str_eq(json_string_value(json_object_get(r.j, "trigger")), "run_now");
        json_decref(want);
        tbt_http_free(&r);

        /* the CLI: --param, repeatable */
        int rc = cli_tasks(&out, "run", id, "--param COUNT=12 --param TAG=v42");
        cr_assert_eq(rc, 0, "taskbus tasks run: %s", out);
        cr_expect(strstr(out, "run requested"), "%s", out);
        free(out);
        wait_runs(id, 2);
        out = run_output(id, "12", rid);
        cr_expect(strstr(out, "env=dev count=12 tag=v42\n"), "output: %s", out);
        free(out);

        /* the task's run history shows each run's params */
        snprintf(path, sizeof(path), "/v1/tasks/%s/runs", id);
        r = tbt_http(con.port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        json_t *items = json_object_get(r.j, "runs");
        cr_assert_eq(json_array_size(items), 2, "%s", r.body.data);
        size_t i;
        json_t *it;
        int seen = 0;
        json_array_foreach(items, i, it) {
                const char *c = json_string_value(
                        json_object_get(json_object_get(it, "params"), "COUNT"));
                seen += c && (!strcmp(c, "7") || !strcmp(c, "12"));
        }
        cr_expect_eq(seen, 2, "history: %s", r.body.data);
        tbt_http_free(&r);

        /* a CLI value outside the allowed set: the API's 400, a failure */
        rc = cli_tasks(&out, "run", id, "--param COUNT=1 --param ENV=staging");
        cr_expect_neq(rc, 0, "%s", out);
        cr_expect(strstr(out, "params.ENV"), "%s", out);
        free(out);
}

Test(run_params, bad_values_are_400_naming_the_parameter) {
        char id[64];
        create_task(id);
        expect_400(run_now(id, "{\"params\": {\"COUNT\": \"1\", \"ENV\": \"staging\"}}"),
                   "params.ENV", "allowed: dev, prod", "outside the allowed set");
        expect_400(run_now(id, "{\"params\": {\"ENV\": \"prod\"}}"), "params.COUNT", "required",
                   "a required one missing");
        expect_400(run_now(id, NULL), "params.COUNT", "required", "no body");
        expect_400(run_now(id, "{\"params\": {\"COUNT\": \"ten\"}}"), "params.COUNT",
                   "not an INT", "not an INT");
        expect_400(run_now(id, "{\"params\": {\"COUNT\": 1, \"TAG\": \"x\"}}"), "params.TAG",
                   "does not match", "pattern");
        expect_400(run_now(id, "{\"params\": {\"COUNT\": 1, \"NOPE\": \"x\"}}"), "params.NOPE",
                   "declares no parameter", "unknown name");
        expect_400(run_now(id, "{\"params\": {\"COUNT\": [1]}}"), "params.COUNT", "a string",
                   "not a string");
        expect_400(run_now(id, "{\"params\": {\"COUNT\": 1, \"b\u00e9\": null}}"), "params",
                   "expected a string", "a key that is no name, with a null");
        expect_400(run_now(id, "{\"params\": [1]}"), "params", "an object", "not an object");
        expect_400(run_now(id, "{\"values\": {}}"), "body", "unknown field", "unknown field");
        /* none of them ran */
        char q[200];
        snprintf(q, sizeof(q), "SELECT count(*) FROM runs WHERE task_id = '%s'", id);
        char *n = tbt_sql_value(&con.st, q);
        cr_expect_str_eq(n, "0");
        free(n);

        /* the declaration itself, at create and update */
        const char *bad[][3] = {
                {"[{\"name\": \"PATH\"}]", "parameters[0].name", "reserved"},
                {"[{\"name\": \"A\"}, {\"name\": \"A\"}]", "parameters[1].name", "twice"},
                {"[{\"name\": \"A\", \"type\": \"INT\", \"default\": \"x\"}]",
                 "parameters[0].default", "not an INT"},
                {"[{\"name\": \"A\", \"pattern\": \"(\"}]", "parameters[0].pattern",
                 "regular expression"},
                {"[{\"name\": \"A\", \"allowed\": [\"a\"], \"default\": \"b\"}]",
                 "parameters[0].default", "allowed: a"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char body[600];
                snprintf(body, sizeof(body),
                         "{\"name\": \"p\", \"script\": \"true\", \"security_group\": \"ops\", "
                         "\"schedule\": {\"every\": \"1h\"}, \"parameters\": %s}",
                         bad[i][0]);
                expect_400(tbt_http(con.port, "POST", "/v1/tasks", alice, body), bad[i][1],
                           bad[i][2], bad[i][0]);
                char path[200];
                snprintf(path, sizeof(path), "/v1/tasks/%s", id);
                expect_400(tbt_http(con.port, "PUT", path, alice, body), bad[i][1], bad[i][2],
                           bad[i][0]);
        }
}

Test(run_params, kafka_run_now_bad_value_is_rejected_and_the_role_goes_on) {
        char id[64], corr[37], rid[64];
        create_task(id);
        rd_kafka_t *prod = tbt_stack_producer(&con.st);
        tbt_reader_t *replies = tbt_reader_new(&con.st, TB_TOPIC_REPLIES, true);

        json_t *bad = json_pack("{s:s, s:s}", "COUNT", "3", "ENV", "staging");
        tbt_send_command_params(&con.st, prod, "RUN_NOW", id, -1, NULL, bad, alice, NULL, corr);
        json_decref(bad);
        const json_t *rep = tbt_reply_wait(&con.st, prod, replies, corr, 60000);
        cr_expect_str_eq(json_string_value(json_object_get(rep, "status")), "REJECTED");
        cr_expect_str_eq(json_string_value(json_object_get(rep, "reason")), "INVALID_ARGUMENT");
        cr_expect_str_eq(json_string_value(json_object_get(rep, "field")), "params.ENV",
                         "%s", json_dumps(rep, JSON_COMPACT));
        cr_expect(strstr(json_string_value(json_object_get(rep, "message")), "staging"));

        /* params on another command type: refused, not ignored */
        json_t *stray = json_pack("{s:s}", "COUNT", "3");
        tbt_send_command_params(&con.st, prod, "PAUSE", id, -1, NULL, stray, alice, NULL, corr);
        json_decref(stray);
        rep = tbt_reply_wait(&con.st, prod, replies, corr, 60000);
        cr_expect_str_eq(json_string_value(json_object_get(rep, "field")), "params");

        /* the role goes on: a good RUN_NOW after them is accepted and runs */
        json_t *good = json_pack("{s:s}", "COUNT", "99");
        tbt_send_command_params(&con.st, prod, "RUN_NOW", id, -1, NULL, good, alice, NULL, corr);
        json_decref(good);
        rep = tbt_reply_wait(&con.st, prod, replies, corr, 60000);
        cr_assert_str_eq(json_string_value(json_object_get(rep, "status")), "ACCEPTED", "%s",
                         json_dumps(rep, JSON_COMPACT));
        wait_runs(id, 1);
        char *out = run_output(id, "99", rid);
        cr_expect(strstr(out, "env=dev count=99 tag=v1\n"), "output: %s", out);
        free(out);

        tbt_reader_free(replies);
        rd_kafka_destroy(prod);
}
