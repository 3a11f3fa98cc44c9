/**
 * @file test_hostile_commands.c
 * @brief Hostile records on task-commands from a producer that is not
 *        taskbus's code (tests/interop/hostile_commands.py: Debian's
 *        python3-confluent-kafka and python3-avro, every TaskCommand built by
 *        hand): oversized and odd ids, NUL bytes, invalid UTF-8, huge and
 *        deeply nested JSON, truncated Avro, a huge length prefix, a wrong
 *        fingerprint, impossible values. After each the reply is REJECTED
 *        naming the field and a REST create is projected (201); at the end
 *        task-events holds no event of a hostile record, and neither does
 *        the projection.
 */
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t st;
static pid_t daemon_pid;
static int port;

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        port = tbt_free_port();
        cr_assert_gt(port, 0);
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
        setenv("TASKBUS_API_LISTEN", listen, 1);
        daemon_pid = tbt_daemon_start(&st, "api,commands,projector");
        unsetenv("TASKBUS_API_LISTEN");
        cr_assert(tbt_wait_until(tbt_http_up, &port, 60000), "the API did not come up");
}

static void teardown(void) {
        if (daemon_pid > 0) {
                int ws = tbt_daemon_stop(daemon_pid, SIGTERM);
                cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "taskbusd exit 0x%x", ws);
        }
        tbt_stack_destroy(&st);
}

Test(hostile_commands, are_rejected_naming_the_field_and_stop_nothing, .init = setup,
     .fini = teardown, .timeout = 900) {
        char authz[96];
        tbt_stack_user(&st, "mallory", "ext", authz);
        char *out = NULL;
        int rc = tbt_run(&out,
                         "/usr/bin/python3 '%s/tests/interop/hostile_commands.py' '%s' '%s' '%s' "
                         "ext http://127.0.0.1:%d mallory 2>&1",
                         tbt_source_dir(), st.kafka, st.prefix, authz + strlen("Bearer "), port);
        printf("%s\n", out ? out : "");
        cr_assert_eq(rc, 0, "hostile producer found a failure (%d):\n%s", rc, out ? out : "");
        const char *line = strrchr(out, '{');
        json_error_t je;
        json_t *sum = line ? json_loads(line, 0, &je) : NULL;
        cr_assert_not_null(sum, "no summary in:\n%s", out);
        cr_assert_eq(json_array_size(json_object_get(sum, "failures")), 0, "%s", line);
        json_int_t events = json_integer_value(json_object_get(sum, "events"));
        cr_assert_eq(events, json_integer_value(json_object_get(sum, "expected_events")), "%s",
                     line);

        /* the projection holds exactly the accepted tasks, every id within the rule */
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM tasks");
        char *n = tbt_sql_value(&st, sql);
        cr_assert_not_null(n);
        cr_assert_eq(strtoll(n, NULL, 10), events, "tasks: %s rows, %lld events", n,
                     (long long)events);
        free(n);
        n = tbt_sql_value(&st, "SELECT count(*) FROM task_history WHERE task_id !~ "
                               "'^[A-Za-z0-9._:-]{1,128}$' OR length(command_id) > 128");
        cr_assert_str_eq(n, "0");
        free(n);
        json_decref(sum);
        free(out);
}

/* ---- the same checks on REST ------------------------------------------------------ */

/** One request with curl; \p body (NULL: none) is sent from a temp file so that
 *  any bytes go through. @returns the status; *out the response body (malloc'd). */
static long rest(const char *authz, const char *method, const char *path, const char *body,
                 size_t body_len, char **out) {
        char file[] = "/tmp/tbt-hostile-XXXXXX";
        int fd = -1;
        if (body) {
                fd = mkstemp(file);
                cr_assert_geq(fd, 0);
                cr_assert_eq(write(fd, body, body_len), (ssize_t)body_len);
                close(fd);
        }
        char *res = NULL;
        int rc = tbt_run(&res,
                         "curl -s -w '\\n%%{http_code}' -X %s -H 'Authorization: %s' "
                         "-H 'Content-Type: application/json' %s%s 'http://127.0.0.1:%d%s'",
                         method, authz, body ? "--data-binary @" : "", body ? file : "", port,
                         path);
        if (body)
                unlink(file);
        cr_assert_eq(rc, 0, "curl failed: %s", res ? res : "");
        char *nl = strrchr(res, '\n');
        cr_assert_not_null(nl, "%s", res);
        long status = strtol(nl + 1, NULL, 10);
        *nl = '\0';
        *out = res;
        return status;
}

static int rest_creates; /* valid creates answered 201 */

static void expect_rest(const char *authz, const char *method, const char *path,
                        const char *body, size_t len, long status, const char *needle) {
        char *out = NULL;
        long got = rest(authz, method, path, body, len, &out);
        cr_assert_eq(got, status, "%s %.60s: %ld, expected %ld: %.300s", method, path, got, status,
                     out);
        cr_assert(strstr(out, needle), "%s %.60s: '%s' not in %.300s", method, path, needle, out);
        free(out);
        /* and the API goes on: a valid create is projected */
        const char *ok = "{\"name\": \"after\", \"script\": \"/bin/true\", \"security_group\": "
                         "\"ext\", \"schedule\": {\"every\": \"1h\"}}";
        got = rest(authz, "POST", "/v1/tasks", ok, strlen(ok), &out);
        cr_assert_eq(got, 201, "create after %s %.60s: %ld %s", method, path, got, out);
        rest_creates++;
        free(out);
}

Test(hostile_commands, rest_applies_the_same_checks, .init = setup, .fini = teardown,
     .timeout = 600) {
        char authz[96];
        tbt_stack_user(&st, "mallory", "ext", authz);
        char path[8100];
        snprintf(path, sizeof(path), "/v1/tasks/");
        memset(path + 10, 'a', 8000);
        path[8010] = '\0';
        expect_rest(authz, "GET", path, NULL, 0, 404, "not_found");
        const char *upd = "{\"name\": \"n\", \"script\": \"x\", \"security_group\": \"ext\", "
                          "\"schedule\": {\"every\": \"1h\"}}";
        expect_rest(authz, "PUT", path, upd, strlen(upd), 404, "not_found");
        snprintf(path, sizeof(path), "/v1/tasks/");
        memset(path + 10, 'a', 129);
        path[139] = '\0';
        expect_rest(authz, "GET", path, NULL, 0, 404, "(invalid id)");
        expect_rest(authz, "POST", "/v1/tasks/a%20b/pause", NULL, 0, 404, "(invalid id)");
        expect_rest(authz, "GET", "/v1/tasks/%FF%FE", NULL, 0, 404, "(invalid id)");
        /* an error about a path that is not UTF-8 is still a JSON error */
        expect_rest(authz, "GET", "/v1/x%FF%FE", NULL, 0, 404, "\"code\":\"not_found\"");

        size_t n = 10000;
        char *deep = malloc(2 * n + 1);
        cr_assert_not_null(deep);
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        expect_rest(authz, "POST", "/v1/tasks", deep, 2 * n, 400, "nested more than 32 levels");
        free(deep);
        const char *nul = "{\"name\": \"a\\u0000b\", \"script\": \"x\", \"security_group\": "
                          "\"ext\", \"schedule\": {\"every\": \"1h\"}}";
        expect_rest(authz, "POST", "/v1/tasks", nul, strlen(nul), 400,
                    "\"field\":\"name\"");
        const char *utf = "{\"name\": \"a\xc3\x28\", \"script\": \"x\", \"security_group\": "
                          "\"ext\", \"schedule\": {\"every\": \"1h\"}}";
        expect_rest(authz, "POST", "/v1/tasks", utf, strlen(utf), 400, "malformed JSON");
        const char *neg = "{\"name\": \"n\", \"script\": \"x\", \"security_group\": \"ext\", "
                          "\"schedule\": {\"every\": -5}}";
        expect_rest(authz, "POST", "/v1/tasks", neg, strlen(neg), 400, "schedule.every");
        const char *y = "{\"name\": \"n\", \"script\": \"x\", \"security_group\": \"ext\", "
                        "\"schedule\": {\"once\": \"99999-01-01T00:00:00Z\"}}";
        expect_rest(authz, "POST", "/v1/tasks", y, strlen(y), 400, "schedule.once");
        /* 10 MiB: refused by the HTTP layer's api.max_body (256 KiB) before parsing */
        size_t big = 10 * 1024 * 1024;
        char *huge = malloc(big);
        cr_assert_not_null(huge);
        memset(huge, ' ', big);
        huge[0] = '{';
        huge[big - 1] = '}';
        expect_rest(authz, "POST", "/v1/tasks", huge, big, 413, "api.max_body");
        free(huge);
        char *cnt = tbt_sql_value(&st, "SELECT count(*) FROM tasks");
        cr_assert_eq(strtol(cnt, NULL, 10), rest_creates,
                     "%s tasks after %d valid creates: one each, none for the hostile ones", cnt,
                     rest_creates);
        free(cnt);
}
