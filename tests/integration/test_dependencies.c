/**
 * @file test_dependencies.c
 * @brief Tasks that wait for others on a real stack: one taskbusd runs api,
 *        commands, projector and executor, another the scheduler alone (so
 *        that it can be SIGKILLed). A child with all of two parents runs once
 *        after both succeed (not again on later polls), trigger dependency,
 *        recording both parent run ids (runs, GET /v1/runs/{id}), and the
 *        tasks show parents and children; a child whose parent fails is
 *        recorded skipped_dependency naming the parent's run; a cycle and a
 *        self-reference are refused with 400 after[0].task, a parent unseen
 *        with 400, deleting a parent with 409; SIGKILL of the scheduler as the
 *        parents finish still runs the child exactly once after a restart.
 */
#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tbt_stack_t st;
static int port;
static pid_t core_pid, sched_pid;
static char alice[96], bob[96];

static void setup(void) {
        port = tbt_free_port();
        tbt_stack_create(&st, &(tbt_stack_opts_t){
                                      .partitions = 2, .api_port = port, .api_rate = 10000.0,
                                      .api_burst = 10000,
                                      .api_extra = "reply_timeout = \"30s\";",
                                      .kafka_extra = "session_timeout_ms = 6000; "
                                                     "heartbeat_interval_ms = 1000;"});
        tbt_stack_user(&st, "alice", "ops", alice);
        tbt_stack_user(&st, "bob", "dev", bob);
        core_pid = tbt_daemon_start(&st, "api,commands,projector,executor");
        sched_pid = tbt_daemon_start(&st, "scheduler");
        cr_assert(tbt_wait_until(tbt_http_up, &port, 90000), "the API did not come up");
}

static void teardown(void) {
        bool san = false;
        if (sched_pid > 0)
                cr_expect(tbt_daemon_end(&st, sched_pid, &san) && !san, "scheduler exit");
        if (core_pid > 0)
                cr_expect(tbt_daemon_end(&st, core_pid, &san) && !san, "taskbusd exit");
        sched_pid = core_pid = 0;
        tbt_stack_destroy(&st);
}

TestSuite(dependencies, .init = setup, .fini = teardown, .timeout = 600);

static const char *sql1(const char *fmt, const char *arg) {
        static char buf[4096];
        char q[1024];
        snprintf(q, sizeof(q), fmt, arg);
        PGresult *r = PQexec(st.conn, q);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", q, PQerrorMessage(st.conn));
        snprintf(buf, sizeof(buf), "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "(no row)");
        PQclear(r);
        return buf;
}

static void wait_sql(const char *fmt, const char *arg, const char *want, int ms) {
        char q[1024];
        snprintf(q, sizeof(q), fmt, arg);
        tbt_wait_sql(&st, q, want, ms);
}

/* A task of alice's; \p extra completes the body. @returns its id (copied to \p id). */
static void create(char id[64], const char *name, const char *script, const char *extra) {
        char body[1024];
        snprintf(body, sizeof(body),
                 "{\"name\": \"%s\", \"script\": \"%s\", \"security_group\": \"ops\"%s}", name,
                 script, extra);
        tbt_http_res_t r = tbt_http(port, "POST", "/v1/tasks", alice, body);
        cr_assert_eq(r.status, 201, "create %s: %ld %s", name, r.status, r.body.data);
        snprintf(id, 64, "%s", json_string_value(json_object_get(r.j, "id")));
        tbt_http_free(&r);
}

/* A one-shot parent firing in \p secs seconds. */
static void parent(char id[64], const char *name, const char *script, int secs) {
        char at[32], extra[128];
        tb_time_format(tb_now_ms() + secs * 1000, at);
        snprintf(extra, sizeof(extra), ", \"schedule\": {\"once\": \"%s\"}", at);
        create(id, name, script, extra);
}

/* A child waiting for all of \p a and \p b (no schedule of its own). */
static void child(char id[64], const char *a, const char *b) {
        char extra[256];
        snprintf(extra, sizeof(extra),
                 ", \"after\": [{\"task\": \"%s\", \"on\": \"succeeded\"}, {\"task\": \"%s\"}]", a,
                 b);
        create(id, "child", "true", extra);
}

static void expect_error(tbt_http_res_t r, long status, const char *field, const char *needle) {
        cr_assert_eq(r.status, status, "%ld %s", r.status, r.body.data);
        json_t *e = json_object_get(r.j, "error");
        if (field)
                cr_expect_str_eq(json_string_value(json_object_get(e, "field")), field, "%s",
                                 r.body.data);
        const char *m = json_string_value(json_object_get(e, "message"));
        cr_expect(m && strstr(m, needle), "'%s' not in %s", needle, r.body.data);
        tbt_http_free(&r);
}

Test(dependencies, all_of_two_parents_runs_once_with_both_parent_runs) {
        char a[64], b[64], c[64], path[200];
        parent(a, "extract", "true", 6);
        parent(b, "load", "sleep 1", 6);
        child(c, a, b);

        /* nothing before the parents are done */
        sleep(2);
        cr_expect_str_eq(sql1("SELECT count(*) FROM runs WHERE task_id = '%s'", c), "0");

        wait_sql("SELECT status FROM runs WHERE task_id = '%s'", c, "succeeded", 90000);
        cr_expect_str_eq(sql1("SELECT trigger FROM runs WHERE task_id = '%s'", c), "dependency");
        /* the parents' runs, in after's order */
        char want[200], rid[64];
        snprintf(want, sizeof(want), "[\"%s\", ", sql1("SELECT run_id FROM runs WHERE task_id = "
                                                      "'%s' AND status = 'succeeded'", a));
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "\"%s\"]",
                 sql1("SELECT run_id FROM runs WHERE task_id = '%s' AND status = 'succeeded'", b));
        cr_expect_str_eq(sql1("SELECT parents::text FROM runs WHERE task_id = '%s'", c), want);
        snprintf(rid, sizeof(rid), "%s", sql1("SELECT run_id FROM runs WHERE task_id = '%s'", c));

        snprintf(path, sizeof(path), "/v1/runs/%s", rid);
        tbt_http_res_t r = tbt_http(port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        char *got = json_dumps(json_object_get(r.j, "parents"), JSON_COMPACT);
        json_t *wj = json_loads(want, 0, NULL);
        char *w = json_dumps(wj, JSON_COMPACT);
        cr_expect_str_eq(got, w);
        cr_expect_str_eq(json_string_value(json_object_get(r.j, "trigger")), "dependency");
        free(got);
        free(w);
        json_decref(wj);
        tbt_http_free(&r);

        /* the tasks' parents and children */
        snprintf(path, sizeof(path), "/v1/tasks/%s", c);
        r = tbt_http(port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 200);
        json_t *ps = json_object_get(r.j, "parents");
        cr_expect_eq(json_array_size(ps), 2, "%s", r.body.data);
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(ps, 1), "task")), b);
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(ps, 1), "on")),
                         "succeeded");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r.j, "schedule"),
                                                           "cron")),
                         "0 0 * * *");
        tbt_http_free(&r);
        snprintf(path, sizeof(path), "/v1/tasks/%s", a);
        r = tbt_http(port, "GET", path, alice, NULL);
        cr_expect_eq(json_array_size(json_object_get(r.j, "children")), 1, "%s", r.body.data);
        cr_expect_str_eq(json_string_value(json_array_get(json_object_get(r.j, "children"), 0)),
                         c);
        tbt_http_free(&r);

        /* later polls (1 s) start nothing more in the same window */
        sleep(4);
        cr_expect_str_eq(sql1("SELECT count(*) FROM runs WHERE task_id = '%s'", c), "1");

        /* a parent is not deleted while its child waits for it */
        r = tbt_http(port, "DELETE", path, alice, NULL);
        expect_error(r, 409, "id", c);
}

Test(dependencies, a_failed_parent_makes_the_child_skipped_with_the_reason) {
        char a[64], b[64], c[64];
        parent(a, "extract", "exit 3", 4);
        parent(b, "load", "true", 4);
        child(c, a, b);
        wait_sql("SELECT status FROM runs WHERE task_id = '%s'", c, "skipped_dependency", 90000);
        char arun[64];
        snprintf(arun, sizeof(arun), "%s", sql1("SELECT run_id FROM runs WHERE task_id = '%s'", a));
        const char *why = sql1("SELECT error FROM runs WHERE task_id = '%s'", c);
        cr_expect(strstr(why, a) && strstr(why, arun) && strstr(why, "failed"),
                  "the reason names the parent and its run: %s", why);
        cr_expect_str_eq(sql1("SELECT trigger FROM runs WHERE task_id = '%s'", c), "dependency");
        sleep(3);
        cr_expect_str_eq(sql1("SELECT count(*) FROM runs WHERE task_id = '%s'", c), "1");
}

Test(dependencies, cycles_and_unseen_parents_are_refused) {
        char a[64], b[64], path[200], body[512];
        create(a, "a", "true", ", \"schedule\": {\"every\": \"1h\"}");
        snprintf(body, sizeof(body), ", \"after\": [{\"task\": \"%s\"}]", a);
        create(b, "b", "true", body);

        /* a -> b -> a */
        snprintf(path, sizeof(path), "/v1/tasks/%s", a);
        snprintf(body, sizeof(body),
                 "{\"name\": \"a\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"after\": [{\"task\": \"%s\"}]}",
                 b);
        char needle[200];
        snprintf(needle, sizeof(needle), "%s -> %s -> %s", a, b, a);
        expect_error(tbt_http(port, "PUT", path, alice, body), 400, "after[0].task", needle);

        /* itself */
        snprintf(body, sizeof(body),
                 "{\"name\": \"a\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"after\": [{\"task\": \"%s\"}]}",
                 a);
        expect_error(tbt_http(port, "PUT", path, alice, body), 400, "after[0].task", "itself");

        /* a task bob cannot see, or none */
        snprintf(body, sizeof(body),
                 "{\"name\": \"c\", \"script\": \"true\", \"security_group\": \"dev\", "
                 "\"after\": [{\"task\": \"%s\"}]}",
                 a);
        expect_error(tbt_http(port, "POST", "/v1/tasks", bob, body), 400, "after[0].task",
                     "no task");
        expect_error(tbt_http(port, "POST", "/v1/tasks", alice,
                              "{\"name\": \"c\", \"script\": \"true\", \"security_group\": "
                              "\"ops\", \"after\": [{\"task\": \"nope\"}]}"),
                     400, "after[0].task", "no task 'nope'");
        /* the graph is unchanged: b still waits for a */
        snprintf(path, sizeof(path), "/v1/tasks/%s", a);
        tbt_http_res_t r = tbt_http(port, "GET", path, alice, NULL);
        cr_expect_eq(json_array_size(json_object_get(r.j, "parents")), 0, "%s", r.body.data);
        tbt_http_free(&r);
}

Test(dependencies, sigkill_of_the_scheduler_still_runs_the_child_once) {
        char a[64], b[64], c[64];
        parent(a, "extract", "true", 5);
        parent(b, "load", "true", 5);
        child(c, a, b);
        /* the moment both parents are done, kill the scheduler: the child's
         * fire is due at its next poll, before or after the kill */
        char q[512];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM runs WHERE task_id IN ('%s', '%s') AND status = "
                 "'succeeded'",
                 a, b);
        tbt_wait_sql(&st, q, "2", 90000);
        tbt_daemon_stop(sched_pid, SIGKILL);
        sched_pid = 0;
        cr_log_info("scheduler SIGKILLed; child runs so far: %s",
                    sql1("SELECT count(*) FROM runs WHERE task_id = '%s'", c));
        sleep(2);
        sched_pid = tbt_daemon_start(&st, "scheduler");
        wait_sql("SELECT status FROM runs WHERE task_id = '%s'", c, "succeeded", 120000);
        /* then several polls of the restarted scheduler */
        sleep(5);
        cr_expect_str_eq(sql1("SELECT count(*) FROM runs WHERE task_id = '%s'", c), "1");
        cr_expect_str_eq(sql1("SELECT count(*) FROM run_claims WHERE task_id = '%s'", c), "1");
}

Test(dependencies, a_parent_not_done_by_the_deadline_makes_the_child_skipped) {
        char a[64], c[64], extra[400];
        /* a parent that does not run today (paused), a child whose day's fire
         * (00:00 UTC) plus its one-second deadline is long past */
        create(a, "extract", "true", ", \"schedule\": {\"every\": \"1h\"}, \"paused\": true");
        snprintf(extra, sizeof(extra),
                 ", \"after\": [{\"task\": \"%s\"}], \"schedule\": {\"cron\": \"0 0 * * *\", "
                 "\"timezone\": \"UTC\"}, \"after_deadline\": \"PT1S\"",
                 a);
        create(c, "child", "true", extra);
        wait_sql("SELECT status FROM runs WHERE task_id = '%s'", c, "skipped_dependency", 90000);
        const char *why = sql1("SELECT error FROM runs WHERE task_id = '%s'", c);
        char want[200];
        snprintf(want, sizeof(want), "task %s has not succeeded today", a);
        cr_expect(strstr(why, "parents not done by ") && strstr(why, "T00:00:01") &&
                          strstr(why, want),
                  "the reason: %s", why);
        cr_expect_str_eq(sql1("SELECT trigger FROM runs WHERE task_id = '%s'", c), "dependency");
}
