/**
 * @file test_no_silent_loss.c
 * @brief No result is lost, no run stays scheduled, no hostile record stops
 *        the executor or the scheduler (docs/reliability.md, "No silent
 *        loss" and "Poison isolation"), against real Kafka and PostgreSQL:
 *  - an executor killed (SIGKILL, at the fault point TB_FAULT=
 *    executor.after_decide of the test build) after it decided a run's
 *    SKIPPED_OVERLAP, or a dead-lettered run's FAILED, and before it
 *    published it: after a restart the result is on run-results exactly once;
 *  - a run projected as scheduled whose RunRequest no executor ever reads
 *    ends LOST, with the reason, once, with two executors looking;
 *  - RunRequests written by a producer that is not taskbus's code
 *    (tests/interop/hostile_records.py: python3-avro + kcat), valid Avro with
 *    impossible values, truncated and garbage: each is answered FAILED or
 *    quarantined, and the good run after them runs;
 *  - TaskEvents with schedules no scheduler can keep, and a garbage
 *    checkpoint: quarantined by the scheduler, which goes on firing.
 */
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 60000

static tbt_stack_t st;
static pid_t pids[3];
static rd_kafka_t *producer;
static tbt_reader_t *results;

static void start_stack(const char *executor_more) {
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "executor = { lease = \"3s\"; grace = \"2s\"; kill_grace = \"1s\"; %s };\n",
                 executor_more ? executor_more : "");
        tbt_stack_opts_t o = {.partitions = 2, .extra = extra};
        tbt_stack_create(&st, &o);
        producer = tbt_stack_producer(&st);
        results = tbt_reader_new(&st, TB_TOPIC_RESULTS, true);
}

static void teardown(void) {
        for (size_t i = 0; i < TB_ARRAY_LEN(pids); i++)
                if (pids[i] > 0)
                        tbt_daemon_stop(pids[i], SIGTERM);
        memset(pids, 0, sizeof(pids));
        unsetenv("TB_FAULT");
        char *log = tbt_daemon_log(&st);
        bool sanitizer = strstr(log, "Sanitizer") || strstr(log, "runtime error:");
        if (sanitizer || getenv("TBT_SHOW_LOGS"))
                fprintf(stderr, "---- taskbusd log ----\n%s\n", log);
        free(log);
        tbt_reader_free(results);
        results = NULL;
        if (producer) {
                rd_kafka_flush(producer, 10000);
                rd_kafka_destroy(producer);
                producer = NULL;
        }
        tbt_stack_destroy(&st);
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
}

TestSuite(no_silent_loss, .fini = teardown, .timeout = 300);

/* ---- RunRequests and results ----------------------------------------------------- */

static void produce_req(const char *run_id, const char *task_id, const char *script,
                        const char *executor, int64_t nominal_ms) {
        char err[1024];
        tb_buf_t b = {0};
        int64_t now = tb_now_ms();
        json_t *snap = json_pack("{s:s, s:s, s:[], s:s, s:s, s:{}, s:I, s:s, s:i, s:I}", "name",
                                 "t", "script", script, "argv", "security_group", "g1",
                                 "executor", executor ? executor : "shell",
                                 "executor_options", "expiry_ms", (json_int_t)60000, "overlap",
                                 "FORBID", "max_attempts", 1, "log_retention_ms",
                                 (json_int_t)86400000);
        json_t *v = json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:o}", "run_id", run_id,
                              "task_id", task_id, "task_version", (json_int_t)1, "nominal_time",
                              (json_int_t)(nominal_ms ? nominal_ms : now), "attempt", 1,
                              "trigger", "SCHEDULE", "emitted_at", (json_int_t)now, "snapshot",
                              snap);
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_RUN_REQUEST, v, &b, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(v);
        cr_assert_eq(tb_bus_produce(producer, st.conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA,
                                    task_id, strlen(task_id), b.data, b.len, NULL, 0, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&b);
}

static const char *jstr(const json_t *v, const char *k) {
        const char *s = json_string_value(json_object_get(v, k));
        return s ? s : "";
}

/* Results of \p run_id (any status if \p status is NULL) read so far. */
static size_t count_results(const char *run_id, const char *status) {
        size_t n = 0;
        const json_t *vals = tbt_reader_values(results);
        for (size_t i = 0; i < json_array_size(vals); i++) {
                const json_t *v = json_array_get(vals, i);
                n += !strcmp(jstr(v, "run_id"), run_id) &&
                     (!status || !strcmp(jstr(v, "status"), status));
        }
        return n;
}

static const json_t *find_result(const char *run_id, const char *status) {
        const json_t *vals = tbt_reader_values(results);
        for (size_t i = 0; i < json_array_size(vals); i++) {
                const json_t *v = json_array_get(vals, i);
                if (!strcmp(jstr(v, "run_id"), run_id) &&
                    (!status || !strcmp(jstr(v, "status"), status)))
                        return v;
        }
        return NULL;
}

static const json_t *wait_result(const char *run_id, const char *status, int ms) {
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        const json_t *v;
        while (!(v = find_result(run_id, status)) && tb_mono_us() < until)
                tbt_reader_poll(results, 100);
        if (!v) {
                char *log = tbt_daemon_log(&st);
                cr_log_error("taskbusd log:\n%s", log);
                free(log);
        }
        cr_assert_not_null(v, "no %s result for run %s within %d ms", status ? status : "",
                           run_id, ms);
        return v;
}

static char *sql(const char *fmt, const char *arg) {
        char q[1024];
        snprintf(q, sizeof(q), fmt, arg);
        return tbt_sql_value(&st, q);
}

/* Wait for the daemon \p slot to end by itself. @returns its wait status. */
static int wait_exit(int slot, int ms) {
        int ws = 0;
        for (int i = 0; i < ms / 50; i++) {
                pid_t r = waitpid(pids[slot], &ws, WNOHANG);
                if (r == pids[slot]) {
                        pids[slot] = 0;
                        return ws;
                }
                usleep(50 * 1000);
        }
        cr_assert_fail("taskbusd %d did not stop", (int)pids[slot]);
        return 0;
}

/* The executor is killed at the fault point; nothing of the decided result
 * is on run-results yet, and the record is read again after a restart. */
static void expect_killed_before_publishing(const char *run_id) {
        int ws = wait_exit(0, WAIT_MS);
        cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "killed at the fault point: 0x%x",
                  ws);
        char *log = tbt_daemon_log(&st);
        cr_assert(strstr(log, "fault injection TB_FAULT=executor.after_decide"), "%s", log);
        free(log);
        tbt_reader_drain(results, 10000);
        cr_assert_eq(count_results(run_id, NULL), 0, "the result was not published yet");
        unsetenv("TB_FAULT");
        pids[0] = tbt_daemon_start(&st, "executor");
}

/* An executor that kills itself at the fault point executor.after_decide. */
static void start_executor_to_be_killed(void) {
#ifndef TB_FAULT_INJECTION
        cr_skip("fault injection is compiled only into the sanitized test build");
#endif
        start_stack(NULL);
        setenv("TB_FAULT", "executor.after_decide", 1);
        pids[0] = tbt_daemon_start(&st, "executor");
}

Test(no_silent_loss, skipped_overlap_is_published_once_after_a_kill) {
        start_executor_to_be_killed();
        produce_req("f-1", "task-f", "sleep 600", NULL, 0);
        wait_result("f-1", "RUNNING", WAIT_MS);
        produce_req("f-2", "task-f", "echo never", NULL, 0);
        expect_killed_before_publishing("f-2");
        char *s = sql("SELECT status || '|' || result_pending FROM run_claims WHERE run_id = '%s'",
                      "f-2");
        cr_assert_str_eq(s, "SKIPPED_OVERLAP|true", "decided and committed, not delivered");
        free(s);

        const json_t *r = wait_result("f-2", "SKIPPED_OVERLAP", WAIT_MS);
        cr_assert(strstr(jstr(r, "error"), "f-1"), "names the running run: %s", jstr(r, "error"));
        /* a later run of the task (same partition) is handled after f-2's record */
        produce_req("f-3", "task-f", "true", NULL, 0);
        wait_result("f-3", NULL, WAIT_MS);
        tbt_reader_drain(results, 10000);
        cr_assert_eq(count_results("f-2", NULL), 1, "exactly one result for the skipped run");
        s = sql("SELECT result_pending::text FROM run_claims WHERE run_id = '%s'", "f-2");
        cr_assert_str_eq(s, "false");
        free(s);
        char *log = tbt_daemon_log(&st);
        /* the run was queued before its offset: not read again, its pending
         * result is published by the reaper of the restarted executor */
        cr_assert(strstr(log, "run f-2: its SKIPPED_OVERLAP result was left undelivered by a "
                              "stopped executor: published now"),
                  "%s", log);
        free(log);
        /* f-1's executor died: its run is reaped (and its sleep killed) */
        wait_result("f-1", "LOST", WAIT_MS);
}

Test(no_silent_loss, dead_lettered_failed_is_published_once_after_a_kill) {
        start_executor_to_be_killed();
        produce_req("u-1", "task-u", "true", "teleporter", 0);
        expect_killed_before_publishing("u-1");

        const json_t *r = wait_result("u-1", "FAILED", WAIT_MS);
        cr_assert(json_is_true(json_object_get(r, "infra_error")));
        cr_assert(strstr(jstr(r, "error"), "executor 'teleporter' is not loaded"), "%s",
                  jstr(r, "error"));
        produce_req("u-2", "task-u", "true", NULL, 0);
        wait_result("u-2", "SUCCEEDED", WAIT_MS);
        tbt_reader_drain(results, 10000);
        cr_assert_eq(count_results("u-1", NULL), 1, "exactly one FAILED");
}

/* Commit the executors' group at the end of runs: every RunRequest there is
 * one no executor will read (as if it had expired from the topic). */
static void skip_runs_for_the_executors(void) {
        char err[512], group[128], topic[256];
        snprintf(group, sizeof(group), "%sexecutor", st.prefix);
        tb_topic_name(st.conf, TB_TOPIC_RUNS, topic, sizeof(topic));
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", st.kafka, err, sizeof(err)),
                     RD_KAFKA_CONF_OK, "%s", err);
        cr_assert_eq(rd_kafka_conf_set(c, "group.id", group, err, sizeof(err)), RD_KAFKA_CONF_OK,
                     "%s", err);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        cr_assert_not_null(rk, "%s", err);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
        for (int32_t p = 0; p < 2; p++) {
                int64_t lo = 0, hi = 0;
                cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000),
                             RD_KAFKA_RESP_ERR_NO_ERROR);
                rd_kafka_topic_partition_list_add(l, topic, p)->offset = hi;
        }
        cr_assert_eq(rd_kafka_commit(rk, l, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

static bool run_status_is(void *arg) {
        const char **want = arg;
        char *s = sql("SELECT status FROM runs WHERE run_id = '%s'", want[0]);
        bool ok = s && !strcmp(s, want[1]);
        free(s);
        return ok;
}

Test(no_silent_loss, a_run_nobody_claims_is_lost_once_within_the_bound) {
        start_stack("unclaimed_timeout = \"2s\";");
        pids[0] = tbt_daemon_start(&st, "projector");
        produce_req("n-1", "task-n", "true", NULL, tb_now_ms() - 1000);
        const char *scheduled[] = {"n-1", "scheduled"};
        cr_assert(tbt_wait_until(run_status_is, scheduled, WAIT_MS), "n-1 projected as scheduled");
        skip_runs_for_the_executors();
        /* two executors look for it; one takes it */
        pids[1] = tbt_daemon_start(&st, "executor");
        pids[2] = tbt_daemon_start(&st, "executor");
        const json_t *r = wait_result("n-1", "LOST", WAIT_MS);
        fprintf(stderr, "n-1 LOST %lld ms after its nominal time (bound 2 s, reaper every "
                "1.5 s)\n", (long long)(json_integer_value(json_object_get(r, "at")) -
                                        json_integer_value(json_object_get(r, "nominal_time"))));
        cr_assert(strstr(jstr(r, "error"), "no executor claimed the run within "
                                           "executor.unclaimed_timeout (2s)"),
                  "%s", jstr(r, "error"));
        const char *lost[] = {"n-1", "lost"};
        cr_assert(tbt_wait_until(run_status_is, lost, WAIT_MS), "the run row ends lost");
        /* a run both executors read is not taken for lost (due in 5 s: the
         * two executors may still be joining their group, and a run read
         * before its time is claimed and held) */
        produce_req("n-2", "task-n2", "true", NULL, tb_now_ms() + 5000);
        wait_result("n-2", "SUCCEEDED", WAIT_MS);
        tbt_reader_drain(results, 10000);
        cr_assert_eq(count_results("n-1", NULL), 1, "one LOST, from one executor");
        cr_assert_eq(count_results("n-2", "LOST"), 0);
        char *s = sql("SELECT status FROM run_claims WHERE run_id = '%s'", "n-1");
        cr_assert_str_eq(s, "LOST");
        free(s);
}

/* ---- hostile records ------------------------------------------------------------------ */

static void hostile(const char *mode, tb_topic_t topic, const char *more) {
        char name[256], *out = NULL;
        tb_topic_name(st.conf, topic, name, sizeof(name));
        int rc = tbt_run(&out, "/usr/bin/python3 %s/tests/interop/hostile_records.py %s %s %s 0 %s",
                         tbt_source_dir(), mode, st.kafka, name, more ? more : "");
        cr_assert_eq(rc, 0, "hostile_records.py %s: %s", mode, out);
        free(out);
}

static long long count_of(const char *q) {
        char *s = tbt_sql_value(&st, q);
        long long n = s ? atoll(s) : -1;
        free(s);
        return n;
}

typedef struct count_wait {
        const char *q;
        long long want;
} count_wait_t;

static bool count_reached(void *arg) {
        count_wait_t *w = arg;
        return count_of(w->q) == w->want;
}

static void wait_count(const char *q, long long want) {
        count_wait_t w = {q, want};
        bool ok = tbt_wait_until(count_reached, &w, WAIT_MS);
        if (!ok) {
                char *log = tbt_daemon_log(&st);
                cr_log_error("taskbusd log:\n%s", log);
                free(log);
        }
        cr_assert(ok, "'%s' is %lld, not %lld", q, count_of(q), want);
}

/* Wait for \p n rows of \p role for \p topic in quarantine, each with its error. */
static void wait_quarantined(const char *role, tb_topic_t topic, long long n) {
        char q[512], name[256];
        tb_topic_name(st.conf, topic, name, sizeof(name));
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM quarantine WHERE role = '%s' AND topic = '%s' "
                 "AND status = 'new' AND error <> ''",
                 role, name);
        wait_count(q, n);
}

Test(no_silent_loss, hostile_run_requests_are_answered_and_good_runs_go_on) {
        start_stack(NULL);
        pids[0] = tbt_daemon_start(&st, "executor");
        char nominal[32];
        snprintf(nominal, sizeof(nominal), "%" PRId64, tb_now_ms());
        hostile("runrequests", TB_TOPIC_RUNS, nominal);
        wait_result("h-good", "SUCCEEDED", WAIT_MS);

        /* the runs that can be named get one FAILED saying which field */
        static const char *const failed[][2] = {
                {"h-att", "RunRequest.attempt must be 1 or more, got -3"},
                {"h-exec", "executor 'teleporter' is not loaded"},
                {"h-nul", "RunRequest.snapshot.script contains a NUL character"},
                {"h-exp", "RunRequest.snapshot.expiry_ms must be 0 to"},
                {"h-hexp", "RunRequest.snapshot.expiry_ms must be 0 to"},
                {"h-ovl", "RunRequest.snapshot.overlap 'SOMETIMES' is not one of"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(failed); i++) {
                const json_t *r = wait_result(failed[i][0], "FAILED", WAIT_MS);
                cr_assert(strstr(jstr(r, "error"), failed[i][1]), "%s: %s", failed[i][0],
                          jstr(r, "error"));
                cr_assert(json_is_true(json_object_get(r, "infra_error")));
        }
        tbt_reader_drain(results, 10000);
        for (size_t i = 0; i < TB_ARRAY_LEN(failed); i++)
                cr_assert_eq(count_results(failed[i][0], NULL), 1, "%s", failed[i][0]);
        /* nothing of a refused record was claimed or run, nor a cut-short id */
        cr_assert_eq(count_of("SELECT count(*) FROM run_claims WHERE run_id <> 'h-good'"), 0);
        cr_assert_eq(count_results("h-nulid", NULL), 0);
        cr_assert_eq(count_results("h-nul", "RUNNING"), 0);

        /* every record that is not a runnable RunRequest is kept in quarantine
         * (all but the unknown executor, an operator matter): the eight that
         * no result can name (bad ids, times no consumer can store, truncated,
         * garbage), and the five named ones refused for their values */
        char q[512];
        wait_quarantined("executor", TB_TOPIC_RUNS, 13);
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM quarantine WHERE role = 'executor' AND "
                 "error LIKE '%%RunRequest.run_id must be 1 to 256%%'");
        cr_assert_eq(count_of(q), 2, "empty, and 5,000 characters");
        cr_assert_eq(count_of("SELECT count(*) FROM quarantine WHERE role = 'executor' AND "
                              "error LIKE 'RunRequest.run_id contains a NUL character%'"),
                     1);
        cr_assert_eq(count_of("SELECT count(*) FROM quarantine WHERE role = 'executor' AND "
                              "error LIKE 'RunRequest.nominal_time must be a time%'"),
                     2, "before 1970 and past 9999");
        cr_assert_eq(count_results("h-neg", NULL) + count_results("h-huge", NULL), 0);
        char *log = tbt_daemon_log(&st);
        int n = 0;
        for (const char *p = log; (p = strstr(p, " quarantined (taskbus admin quarantine")); p++)
                n++;
        cr_assert_eq(n, 13, "counted and logged once each: %d", n);
        free(log);

        /* and the executor goes on */
        produce_req("h-after", "h-after-task", "true", NULL, 0);
        wait_result("h-after", "SUCCEEDED", WAIT_MS);
}

static size_t count_task_results(const char *task_id, const char *status) {
        size_t n = 0;
        const json_t *vals = tbt_reader_values(results);
        for (size_t i = 0; i < json_array_size(vals); i++) {
                const json_t *v = json_array_get(vals, i);
                n += !strcmp(jstr(v, "task_id"), task_id) && !strcmp(jstr(v, "status"), status);
        }
        return n;
}

Test(no_silent_loss, hostile_task_events_and_checkpoints_do_not_stop_the_scheduler) {
        start_stack(NULL);
        /* garbage where the scheduler loads partition 0's checkpoints from */
        hostile("checkpoints", TB_TOPIC_CHECKPOINTS, NULL);
        pids[0] = tbt_daemon_start(&st, "scheduler,executor");
        hostile("badevents", TB_TOPIC_EVENTS, NULL);

        /* the good task keeps firing every second */
        int64_t until = tb_mono_us() + (int64_t)WAIT_MS * 2000;
        while (count_task_results("h-ev-good", "SUCCEEDED") < 3 && tb_mono_us() < until)
                tbt_reader_poll(results, 200);
        cr_assert_geq(count_task_results("h-ev-good", "SUCCEEDED"), 3, "fires keep firing");

        char q[768], events[256];
        tb_topic_name(st.conf, TB_TOPIC_EVENTS, events, sizeof(events));
        wait_quarantined("scheduler", TB_TOPIC_CHECKPOINTS, 1);
        /* every impossible schedule, the long id and the truncated record */
        wait_quarantined("scheduler", TB_TOPIC_EVENTS, 8);
        snprintf(q, sizeof(q),
                 "SELECT string_agg(error, E'\\n' ORDER BY \"offset\") FROM quarantine "
                 "WHERE role = 'scheduler' AND topic = '%s'",
                 events);
        char *errors = tbt_sql_value(&st, q);
        cr_log_info("scheduler quarantine:\n%s", errors);
        cr_assert(strstr(errors, "task id must be 1 to 256 bytes"), "%s", errors);
        free(errors);
        /* none of them fired */
        static const char *const bad[] = {"h-ev-zero", "h-ev-neg",  "h-ev-null", "h-ev-cron",
                                          "h-ev-zone", "h-ev-once", "h-ev-trunc"};
        tbt_reader_drain(results, 10000);
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
                const json_t *vals = tbt_reader_values(results);
                for (size_t k = 0; k < json_array_size(vals); k++)
                        cr_assert_str_neq(jstr(json_array_get(vals, k), "task_id"), bad[i],
                                          "%s fired", bad[i]);
        }
}
