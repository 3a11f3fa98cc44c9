/**
 * @file test_backfill.c
 * @brief Backfill on a real stack (every role in one taskbusd): a paused
 *        hourly task (the scheduler fires nothing of it) gets 48 past hours
 *        backfilled by `taskbus tasks backfill --max-parallel 8`: 48 runs
 *        succeed, trigger backfill, distinct nominal times, run ids the
 *        scheduled fires' (tb_schedule_run_id()), never more than 8 at once;
 *        a second identical backfill runs none; a RunRequest of one of those
 *        run ids produced again (what a scheduled fire of the same nominal
 *        time, or a step retried after a crash, would send) is dropped by the
 *        executor as a duplicate and leaves the run as it was; bad ranges get
 *        a 400 naming from, to or max_parallel; another group's user gets 404;
 *        with overlap forbid, the default max_parallel 1 runs one at a time
 *        and skips none.
 */
#include <criterion/criterion.h>

#include "bus/bus.h"
#include "schedule/occurrences.h"
#include "serde/serde.h"
#include "support.h"
#include "support_api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOUR_MS INT64_C(3600000)

static tbt_console_t con;
static char alice[96], bob[96];
static char home[64];

static void setup(void) {
        char tok[80];
        tbt_console_start(&con);
        /* two groups: the visibility check reads a list of them */
        tbt_console_user(&con, "alice", "ops,extra", tok);
        snprintf(alice, sizeof(alice), "Bearer %s", tok);
        tbt_console_user(&con, "bob", "dev", tok);
        snprintf(bob, sizeof(bob), "Bearer %s", tok);
        snprintf(home, sizeof(home), "/tmp/tbt-bf-home-XXXXXX");
        cr_assert_not_null(mkdtemp(home));
}

static void teardown(void) {
        char *out = NULL;
        tbt_run(&out, "rm -rf '%s'", home);
        free(out);
        tbt_console_stop(&con);
}

TestSuite(backfill, .init = setup, .fini = teardown, .timeout = 600);

/* `taskbus tasks backfill ARGS` as alice; @returns its exit status, *out its output. */
static int cli_backfill(char **out, const char *args) {
        return tbt_run(out, "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                            "%s/bin/taskbus tasks backfill %s 2>&1",
                       home, con.port, alice + strlen("Bearer "), tbt_build_dir(), args);
}

static const char *sql1(const char *sql) {
        static char buf[256];
        PGresult *r = PQexec(con.st.conn, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql,
                     PQerrorMessage(con.st.conn));
        snprintf(buf, sizeof(buf), "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "(no row)");
        PQclear(r);
        return buf;
}

/* The most runs of task \p id that were running at one run's start. */
static int most_at_once(const char *id) {
        char q[512];
        snprintf(q, sizeof(q),
                 "SELECT max(c) FROM (SELECT (SELECT count(*) FROM runs b WHERE b.task_id = "
                 "a.task_id AND b.started_at <= a.started_at AND b.finished_at > a.started_at) "
                 "c FROM runs a WHERE a.task_id = '%s') x",
                 id);
        return atoi(sql1(q));
}

/* A task of alice's group; @returns its id (static buffer). */
static const char *create_task(const char *name, const char *start, const char *overlap) {
        static char id[64];
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"name\": \"%s\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"schedule\": {\"every\": \"1h\", \"start_at\": \"%s\"}, \"paused\": true, "
                 "\"overlap\": \"%s\"}",
                 name, start, overlap);
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/tasks", alice, body);
        cr_assert_eq(r.status, 201, "create: %ld %s", r.status, r.body.data);
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.j, "id")));
        tbt_http_free(&r);
        return id;
}

/* POST a backfill step; @returns the answer (caller frees). */
static tbt_http_res_t step(const char *id, const char *body) {
        char path[200];
        snprintf(path, sizeof(path), "/v1/tasks/%s/backfill", id);
        return tbt_http(con.port, "POST", path, alice, body);
}

/* The answer is a 400 whose error names \p field. */
static void expect_400(tbt_http_res_t r, const char *field, const char *what) {
        cr_assert_eq(r.status, 400, "%s: %ld %s", what, r.status, r.body.data);
        json_t *e = json_object_get(r.j, "error");
        cr_expect_str_eq(json_string_value(json_object_get(e, "field")), field, "%s: %s", what,
                         r.body.data);
        const char *m = json_string_value(json_object_get(e, "message"));
        cr_expect(m && !strncmp(m, field, strlen(field)), "%s: the message starts with %s: %s",
                  what, field, r.body.data);
        tbt_http_free(&r);
}

Test(backfill, hourly_48h_then_again_runs_nothing_twice) {
        int64_t now = tb_now_ms();
        int64_t to_ms = now / HOUR_MS * HOUR_MS - 2 * HOUR_MS, from_ms = to_ms - 48 * HOUR_MS;
        char from[32], to[32];
        tb_time_format(from_ms, from);
        tb_time_format(to_ms, to);
        const char *tid = create_task("hourly", from, "allow");
        char id[64];
        snprintf(id, sizeof(id), "%s", tid);

        /* the occurrences, with the scheduled fires' run ids and no run yet */
        char path[400];
        snprintf(path, sizeof(path), "/v1/tasks/%s/occurrences?from=%s&to=%s", id, from, to);
        tbt_http_res_t r = tbt_http(con.port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        json_t *items = json_object_get(r.j, "items");
        cr_assert_eq(json_array_size(items), 48, "%s", r.body.data);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "recorded")), 0);
        char rid[33], at[32];
        for (size_t i = 0; i < 48; i++) {
                json_t *o = json_array_get(items, i);
                tb_time_format(from_ms + (int64_t)i * HOUR_MS, at);
                tb_schedule_run_id(id, from_ms + (int64_t)i * HOUR_MS, 1, rid);
                cr_expect_str_eq(json_string_value(json_object_get(o, "nominal_time")), at);
                cr_expect_str_eq(json_string_value(json_object_get(o, "run_id")), rid);
                cr_expect(json_is_null(json_object_get(o, "status")), "no run yet: %s",
                          r.body.data);
        }
        tbt_http_free(&r);

        /* the backfill, through the CLI, to its end */
        char *out = NULL, args[300];
        snprintf(args, sizeof(args), "%s --from %s --to %s --max-parallel 8", id, from, to);
        int rc = cli_backfill(&out, args);
        cr_assert_eq(rc, 0, "taskbus tasks backfill: %s", out);
        cr_expect(strstr(out, "emitted 48/48, done 48"), "progress: %s", out);
        cr_expect(strstr(out, "48 occurrences, 48 run by this backfill, 0 recorded before; "
                              "succeeded 48"),
                  "summary: %s", out);
        cr_expect(strstr(out, "emitted 8/48"), "the first step emits max_parallel runs: %s",
                  out);
        free(out);

        char q[1024];
        snprintf(q, sizeof(q),
                 "SELECT count(*) || ' ' || count(DISTINCT nominal_time) || ' ' || "
                 "count(*) FILTER (WHERE status = 'succeeded' AND trigger = 'backfill' "
                 "AND attempt = 1) FROM runs WHERE task_id = '%s'",
                 id);
        cr_assert_str_eq(sql1(q), "48 48 48", "48 runs, distinct nominal times, succeeded");
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM runs WHERE task_id = '%s' AND nominal_time >= "
                 "'%s' AND nominal_time < '%s' AND extract(epoch FROM nominal_time)::bigint "
                 "%% 3600 = 0",
                 id, from, to);
        cr_assert_str_eq(sql1(q), "48", "every nominal time an occurrence of the range");
        tb_schedule_run_id(id, from_ms + 5 * HOUR_MS, 1, rid);
        snprintf(q, sizeof(q), "SELECT count(*) FROM runs WHERE run_id = '%s' AND task_id = '%s'",
                 rid, id);
        cr_assert_str_eq(sql1(q), "1", "run ids are the scheduled fires'");
        /* max_parallel: no run started while 8 others were running */
        int most = most_at_once(id);
        cr_expect(most >= 1 && most <= 8, "at most 8 backfill runs at once, saw %d", most);

        /* the same backfill again: nothing emitted, nothing new */
        char body[300];
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\", \"max_parallel\": 8}",
                 from, to);
        r = step(id, body);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "emitted")), 0, "%s", r.body.data);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "recorded")), 48);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "done")), 48);
        cr_expect(json_is_true(json_object_get(r.j, "complete")));
        cr_expect_eq(json_integer_value(
                             json_object_get(json_object_get(r.j, "statuses"), "succeeded")),
                     48, "%s", r.body.data);
        tbt_http_free(&r);
        rc = cli_backfill(&out, args);
        cr_assert_eq(rc, 0, "second backfill: %s", out);
        cr_expect(strstr(out, "48 occurrences, 0 run by this backfill, 48 recorded before"),
                  "second backfill: %s", out);
        free(out);
        snprintf(q, sizeof(q), "SELECT count(*) FROM runs WHERE task_id = '%s'", id);
        cr_assert_str_eq(sql1(q), "48", "a second backfill runs none");

        /* the RunRequest of a run that ran, sent again with trigger SCHEDULE
         * (the scheduler's fire of that nominal time has this run id): the
         * executor drops it, the run keeps its status and trigger */
        snprintf(q, sizeof(q), "SELECT updated_at FROM runs WHERE run_id = '%s'", rid);
        char before[64];
        snprintf(before, sizeof(before), "%s", sql1(q));
        json_t *rq = json_pack(
                "{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:{s:s, s:s, s:[], s:s, s:s, s:{}, s:I, "
                "s:s, s:i, s:I}, s:{}}",
                "run_id", rid, "task_id", id, "task_version", (json_int_t)1, "nominal_time",
                (json_int_t)(from_ms + 5 * HOUR_MS), "attempt", 1, "trigger", "SCHEDULE",
                "emitted_at", (json_int_t)tb_now_ms(), "snapshot", "name", "hourly", "script",
                "true", "argv", "security_group", "ops", "executor", "shell",
                "executor_options", "expiry_ms", (json_int_t)60000, "overlap", "ALLOW",
                "max_attempts", 1, "log_retention_ms", (json_int_t)86400000, "params");
        cr_assert_not_null(rq);
        tb_buf_t val = {0};
        char err[512], topic[256];
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_RUN_REQUEST, rq, &val, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(rq);
        rd_kafka_t *prod = tbt_stack_producer(&con.st);
        tb_topic_name(con.st.conf, TB_TOPIC_RUNS, topic, sizeof(topic));
        cr_assert_eq(rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_KEY(id, strlen(id)),
                                       RD_KAFKA_V_VALUE(val.data, val.len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(rd_kafka_flush(prod, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_destroy(prod);
        tb_buf_free(&val);
        /* the projection has applied it ... */
        snprintf(q, sizeof(q), "SELECT updated_at > '%s' FROM runs WHERE run_id = '%s'", before,
                 rid);
        tbt_wait_sql(&con.st, q, "t", 60000);
        /* ... and the executor dropped it */
        bool dropped = false;
        for (int i = 0; i < 600 && !dropped; i++) {
                r = tbt_http(con.port, "GET", "/metrics", NULL, NULL);
                dropped = r.body.data && strstr(r.body.data, "taskbus_executor_duplicates_total 1");
                tbt_http_free(&r);
                if (!dropped)
                        usleep(100000);
        }
        cr_expect(dropped, "the executor counted the duplicate");
        char *log = tbt_daemon_log(&con.st);
        char line[128];
        snprintf(line, sizeof(line), "run %s (task %s) was claimed before: duplicate dropped", rid,
                 id);
        cr_expect(log && strstr(log, line), "the executor logged '%s'", line);
        free(log);
        snprintf(q, sizeof(q),
                 "SELECT status || ' ' || trigger FROM runs WHERE run_id = '%s'", rid);
        cr_expect_str_eq(sql1(q), "succeeded backfill", "the run is as it was");
        snprintf(q, sizeof(q), "SELECT count(*) FROM runs WHERE task_id = '%s'", id);
        cr_expect_str_eq(sql1(q), "48", "nothing ran twice");
}

Test(backfill, bad_ranges_name_the_field) {
        int64_t now = tb_now_ms();
        char start[32], from[32], to[32], future[32], far[32];
        tb_time_format(now - 30 * 24 * HOUR_MS, start);
        tb_time_format(now - 10 * HOUR_MS, from);
        tb_time_format(now - 5 * HOUR_MS, to);
        tb_time_format(now + HOUR_MS, future);
        char id[64];
        snprintf(id, sizeof(id), "%s", create_task("ranges", start, "forbid"));
        char body[400];

        expect_400(step(id, "{\"from\": \"yesterday\", \"to\": \"2026-01-01T00:00:00Z\"}"),
                   "from", "from not RFC 3339");
        snprintf(body, sizeof(body), "{\"to\": \"%s\"}", to);
        expect_400(step(id, body), "from", "from missing");
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": 5}", from);
        expect_400(step(id, body), "to", "to not a string");
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\"}", to, from);
        expect_400(step(id, body), "to", "to before from");
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\"}", from, future);
        expect_400(step(id, body), "to", "to in the future");
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\", \"max_parallel\": 0}",
                 from, to);
        expect_400(step(id, body), "max_parallel", "max_parallel 0");
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\", \"max_parallel\": 2}",
                 from, to);
        expect_400(step(id, body), "max_parallel", "parallel runs of an overlap forbid task");
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\", \"since\": 1}", from, to);
        expect_400(step(id, body), "since", "an unknown field");
        /* over the cap: 2 years of hours */
        tb_time_format(now - 2 * 366 * 24 * HOUR_MS, far);
        char path[400];
        snprintf(path, sizeof(path), "/v1/tasks/%s/occurrences?from=%s&to=%s", id, far, to);
        tbt_http_res_t r = tbt_http(con.port, "GET", path, alice, NULL);
        /* the task starts 30 days ago: from earlier than that is fine, 720 fires */
        cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        tbt_http_free(&r);
        char id2[64];
        snprintf(id2, sizeof(id2), "%s", create_task("ranges-long", far, "forbid"));
        snprintf(path, sizeof(path), "/v1/tasks/%s/occurrences?from=%s&to=%s", id2, far, to);
        r = tbt_http(con.port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body.data);
        const char *m = json_string_value(
                json_object_get(json_object_get(r.j, "error"), "message"));
        cr_expect(m && strstr(m, "more than 10000") && strstr(m, "smaller range"), "%s",
                  r.body.data);
        expect_400(r, "to", "over the cap");
        snprintf(path, sizeof(path), "/v1/tasks/%s/occurrences?from=%s", id, from);
        expect_400(tbt_http(con.port, "GET", path, alice, NULL), "to", "to missing");
        snprintf(path, sizeof(path), "/v1/tasks/%s/occurrences?from=%s&to=%s&x=1", id, from, to);
        r = tbt_http(con.port, "GET", path, alice, NULL);
        cr_expect_eq(r.status, 400, "%ld %s", r.status, r.body.data);
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r.j, "error"), "field")),
                         "x", "an unknown parameter: %s", r.body.data);
        tbt_http_free(&r);
        /* the CLI says the same */
        char *out = NULL, args[300];
        snprintf(args, sizeof(args), "%s --from nope --to %s", id, to);
        cr_expect_eq(cli_backfill(&out, args), 1, "%s", out);
        cr_expect(strstr(out, "400 invalid_argument: from: "), "%s", out);
        free(out);
        /* a task of another group is not there */
        snprintf(path, sizeof(path), "/v1/tasks/%s/occurrences?from=%s&to=%s", id, from, to);
        r = tbt_http(con.port, "GET", path, bob, NULL);
        cr_expect_eq(r.status, 404, "%ld %s", r.status, r.body.data);
        tbt_http_free(&r);
        snprintf(path, sizeof(path), "/v1/tasks/%s/backfill", id);
        snprintf(body, sizeof(body), "{\"from\": \"%s\", \"to\": \"%s\"}", from, to);
        r = tbt_http(con.port, "POST", path, bob, body);
        cr_expect_eq(r.status, 404, "%ld %s", r.status, r.body.data);
        tbt_http_free(&r);
}

Test(backfill, forbid_runs_one_at_a_time_and_skips_none) {
        /* the default max_parallel 1 with overlap forbid: each run is emitted
         * once the previous one's claim is released, so none is skipped */
        int64_t now = tb_now_ms();
        int64_t to_ms = now / HOUR_MS * HOUR_MS, from_ms = to_ms - 6 * HOUR_MS;
        char from[32], to[32];
        tb_time_format(from_ms, from);
        tb_time_format(to_ms, to);
        char id[64];
        snprintf(id, sizeof(id), "%s", create_task("forbid", from, "forbid"));
        char *out = NULL, args[300];
        snprintf(args, sizeof(args), "%s --from %s --to %s", id, from, to);
        int rc = cli_backfill(&out, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_expect(strstr(out, "6 occurrences, 6 run by this backfill, 0 recorded before; "
                              "succeeded 6"),
                  "%s", out);
        cr_expect(strstr(out, "emitted 1/6,"), "one at a time: %s", out);
        free(out);
        char q[512];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FILTER (WHERE status = 'succeeded') || ' ' || count(*) "
                 "FROM runs WHERE task_id = '%s' AND trigger = 'backfill'",
                 id);
        cr_assert_str_eq(sql1(q), "6 6");
        cr_expect_eq(most_at_once(id), 1, "one run at a time");
}
