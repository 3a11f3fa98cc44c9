/**
 * @file test_executor.c
 * @brief The executor role end to end: a real taskbusd child (--roles
 *        executor) on its own topics and database, RunRequests produced
 *        straight onto runs, and run-results / run-logs / runs-dlq read
 *        back. Covers outcomes, expiry, overlap policies, duplicates, lost
 *        leases after SIGKILL, output streaming and capping, concurrency
 *        limits, poison records and SIGTERM.
 *
 * Tasks run as the default group policy's os user (nobody), so files the
 * tests let a task write live in a world-writable temp directory.
 */
#include "executor/executor.h"
#include "serde/serde.h"
#include "store/claims.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 30000

static tbt_stack_t st;
static pid_t daemon_pid;
static rd_kafka_t *producer;
static tbt_reader_t *results, *logs;
static char tmpdir[64];

/* Executor settings of every test, plus \p more inside `executor = {}`. */
static void start_stack(const char *more) {
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "executor = { lease = \"3s\"; grace = \"2s\"; kill_grace = \"1s\"; %s };\n",
                 more ? more : "");
        tbt_stack_opts_t o = {.partitions = 2, .extra = extra};
        tbt_stack_create(&st, &o);
        daemon_pid = tbt_daemon_start(&st, "executor");
        producer = tbt_stack_producer(&st);
        results = tbt_reader_new(&st, TB_TOPIC_RESULTS, true);
        logs = tbt_reader_new(&st, TB_TOPIC_LOGS, true);
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/tbt-exec-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
        chmod(tmpdir, 0777);
}

static void setup(void) {
        tb_log_set_level(TB_LOG_WARN);
        start_stack(NULL);
}

static void teardown(void) {
        if (daemon_pid > 0)
                tbt_daemon_stop(daemon_pid, SIGTERM);
        daemon_pid = 0;
        char *log = tbt_daemon_log(&st);
        if (getenv("TBT_SHOW_LOGS"))
                fprintf(stderr, "---- taskbusd log ----\n%s\n", log);
        bool sanitizer = strstr(log, "Sanitizer") || strstr(log, "runtime error:");
        if (sanitizer)
                fprintf(stderr, "---- taskbusd log ----\n%s\n", log);
        free(log);
        tbt_reader_free(results);
        tbt_reader_free(logs);
        results = logs = NULL;
        if (producer) {
                rd_kafka_flush(producer, 10000);
                rd_kafka_destroy(producer);
                producer = NULL;
        }
        if (tmpdir[0])
                tbt_run(NULL, "rm -rf %s", tmpdir);
        tbt_stack_destroy(&st);
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
}

TestSuite(executor, .init = setup, .fini = teardown, .timeout = 180);
/* Tests that need other executor settings start their own stack. */
TestSuite(executor_cfg, .fini = teardown, .timeout = 180);

/* ---- building and producing RunRequests --------------------------------------- */

typedef struct req {
        const char *run_id, *task_id, *script, *executor, *overlap;
        const char *group;    /* NULL: g1 */
        int64_t nominal_ms;   /* 0: now */
        int64_t expiry_ms;
} req_t;

static void encode_req(const req_t *q, tb_buf_t *out) {
        char err[1024];
        int64_t now = tb_now_ms();
        json_t *snap = json_pack("{s:s, s:s, s:[], s:s, s:s, s:{}, s:I, s:s, s:i, s:I}",
                                 "name", "test task", "script", q->script, "argv",
                                 "security_group", q->group ? q->group : "g1", "executor",
                                 q->executor ? q->executor : "shell", "executor_options",
                                 "expiry_ms", (json_int_t)q->expiry_ms, "overlap",
                                 q->overlap ? q->overlap : "FORBID", "max_attempts", 1,
                                 "log_retention_ms", (json_int_t)86400000);
        json_t *v = json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:o}", "run_id", q->run_id,
                              "task_id", q->task_id, "task_version", (json_int_t)1,
                              "nominal_time", (json_int_t)(q->nominal_ms ? q->nominal_ms : now),
                              "attempt", 1, "trigger", "SCHEDULE", "emitted_at",
                              (json_int_t)now, "snapshot", snap);
        cr_assert_not_null(v);
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_RUN_REQUEST, v, out, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(v);
}

static void produce_raw(const char *key, const void *data, size_t len) {
        char err[1024];
        cr_assert_eq(tb_bus_produce(producer, st.conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, key,
                                    strlen(key), data, len, NULL, 0, true, err, sizeof(err)),
                     TB_OK, "%s", err);
}

static void produce_req(const req_t *q) {
        tb_buf_t b = {0};
        encode_req(q, &b);
        produce_raw(q->task_id, b.data, b.len);
        tb_buf_free(&b);
}

/* ---- reading results and logs ------------------------------------------------------ */

static const json_t *find_result(const char *run_id, const char *status) {
        const json_t *vals = tbt_reader_values(results);
        for (size_t i = 0; i < json_array_size(vals); i++) {
                const json_t *v = json_array_get(vals, i);
                const char *r = json_string_value(json_object_get(v, "run_id"));
                const char *s = json_string_value(json_object_get(v, "status"));
                if (r && s && !strcmp(r, run_id) && (!status || !strcmp(s, status)))
                        return v;
        }
        return NULL;
}

/* Wait for the result of \p run_id with \p status; fails the test on timeout,
 * naming the statuses seen. */
static const json_t *wait_result(const char *run_id, const char *status, int ms) {
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        const json_t *v;
        while (!(v = find_result(run_id, status)) && tb_mono_us() < until)
                tbt_reader_poll(results, 100);
        if (!v) {
                char seen[512] = "";
                const json_t *vals = tbt_reader_values(results);
                for (size_t i = 0; i < json_array_size(vals); i++) {
                        const json_t *x = json_array_get(vals, i);
                        if (!strcmp(json_string_value(json_object_get(x, "run_id")), run_id))
                                snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen),
                                         " %s", json_string_value(json_object_get(x, "status")));
                }
                char *log = tbt_daemon_log(&st);
                cr_log_error("taskbusd log:\n%s", log);
                free(log);
                cr_assert_fail("no %s result for run %s within %d ms; seen:%s", status, run_id,
                               ms, seen);
        }
        return v;
}

static size_t count_results(const char *run_id) {
        size_t n = 0;
        const json_t *vals = tbt_reader_values(results);
        for (size_t i = 0; i < json_array_size(vals); i++) {
                const char *r = json_string_value(json_object_get(json_array_get(vals, i), "run_id"));
                n += r && !strcmp(r, run_id);
        }
        return n;
}

/* The run's chunks, in offset order (one partition per run id). */
typedef struct chunks {
        tb_buf_t out, err, sys;
        int64_t count;
        bool eof, in_order;
} chunks_t;

static bool collect_chunks(const char *run_id, chunks_t *c) {
        memset(c, 0, sizeof(*c));
        c->in_order = true;
        const json_t *vals = tbt_reader_values(logs);
        for (size_t i = 0; i < json_array_size(vals); i++) {
                const json_t *v = json_array_get(vals, i);
                const char *r = json_string_value(json_object_get(v, "run_id"));
                if (!r || strcmp(r, run_id))
                        continue;
                if (json_integer_value(json_object_get(v, "seq")) != c->count || c->eof)
                        c->in_order = false;
                c->count++;
                const json_t *d = json_object_get(v, "data");
                const char *stream = json_string_value(json_object_get(v, "stream"));
                tb_buf_t *b = !strcmp(stream, "STDOUT")   ? &c->out
                              : !strcmp(stream, "STDERR") ? &c->err
                                                          : &c->sys;
                tb_buf_append(b, json_string_value(d), json_string_length(d));
                if (json_is_true(json_object_get(v, "eof")))
                        c->eof = true;
        }
        tb_buf_append(&c->out, "", 1);
        c->out.len--;
        tb_buf_append(&c->err, "", 1);
        c->err.len--;
        tb_buf_append(&c->sys, "", 1);
        c->sys.len--;
        return c->eof;
}

static void chunks_free(chunks_t *c) {
        tb_buf_free(&c->out);
        tb_buf_free(&c->err);
        tb_buf_free(&c->sys);
}

/* Wait for the eof chunk of \p run_id, then collect everything. */
static void wait_chunks(const char *run_id, chunks_t *c, int ms) {
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        for (;;) {
                if (collect_chunks(run_id, c))
                        return;
                chunks_free(c);
                cr_assert(tb_mono_us() < until, "no eof chunk for run %s within %d ms", run_id,
                          ms);
                tbt_reader_poll(logs, 100);
        }
}

static const char *jstr(const json_t *v, const char *k) {
        const char *s = json_string_value(json_object_get(v, k));
        return s ? s : "";
}

/* A marker unique to this test, for finding its processes. */
static void marker(char out[32]) {
        unsigned char r[4];
        tb_random_bytes(r, sizeof(r));
        snprintf(out, 32, "tbmark%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
}

/* pgrep for \p mark without matching the shell that runs pgrep. */
static bool procs_with(const char *mark) {
        return tbt_run(NULL, "pgrep -f '[%c]%s'", mark[0], mark + 1) == 0;
}

static bool procs_cond(void *arg) { return procs_with(arg); }
static bool no_procs_cond(void *arg) { return !procs_with(arg); }

/* ---- outcomes --------------------------------------------------------------------------- */

Test(executor, success_and_failure_with_output) {
        produce_req(&(req_t){.run_id = "run-ok", .task_id = "task-ok",
                             .script = "echo hello from $TASKBUS_RUN_ID; exit 0"});
        produce_req(&(req_t){.run_id = "run-fail", .task_id = "task-fail",
                             .script = "echo out-line; echo err-line >&2; exit 3"});

        const json_t *running = wait_result("run-ok", "RUNNING", WAIT_MS);
        const json_t *ok = wait_result("run-ok", "SUCCEEDED", WAIT_MS);
        cr_assert(json_integer_value(json_object_get(running, "_offset")) <
                          json_integer_value(json_object_get(ok, "_offset")),
                  "RUNNING precedes the final result");
        cr_assert_eq(json_integer_value(json_object_get(ok, "exit_code")), 0);
        cr_assert(json_is_false(json_object_get(ok, "infra_error")));
        cr_assert_str_eq(jstr(ok, "executor"), "shell");
        cr_assert_str_neq(jstr(ok, "host"), "");
        cr_assert_gt(json_integer_value(json_object_get(ok, "started_at")), 0);
        cr_assert_geq(json_integer_value(json_object_get(ok, "finished_at")),
                      json_integer_value(json_object_get(ok, "started_at")));
        cr_assert_eq(json_integer_value(json_object_get(ok, "output_bytes")),
                     (json_int_t)strlen("hello from run-ok\n"));
        chunks_t c;
        wait_chunks("run-ok", &c, WAIT_MS);
        cr_assert(c.in_order);
        cr_assert_str_eq(c.out.data, "hello from run-ok\n");
        chunks_free(&c);

        const json_t *fail = wait_result("run-fail", "FAILED", WAIT_MS);
        cr_assert_eq(json_integer_value(json_object_get(fail, "exit_code")), 3);
        cr_assert(json_is_false(json_object_get(fail, "infra_error")),
                  "a task failing is not an infrastructure error");
        wait_chunks("run-fail", &c, WAIT_MS);
        cr_assert_str_eq(c.out.data, "out-line\n");
        cr_assert_str_eq(c.err.data, "err-line\n");
        chunks_free(&c);

        /* The claims are marked done with their final status. */
        char *s = tbt_sql_value(&st, "SELECT state || '/' || status FROM run_claims "
                                     "WHERE run_id = 'run-fail'");
        cr_assert_str_eq(s, "done/FAILED");
        free(s);
}

Test(executor, expiry_times_out_and_kills_the_group) {
        char mark[32], cmd[256];
        marker(mark);
        snprintf(cmd, sizeof(cmd), "sleep 600 & sleep 600; echo %s", mark);
        int64_t t0 = tb_mono_us();
        produce_req(&(req_t){.run_id = "run-slow", .task_id = "task-slow", .script = cmd,
                             .expiry_ms = 2000});
        wait_result("run-slow", "RUNNING", WAIT_MS);
        cr_assert(tbt_wait_until(procs_cond, mark, 5000),
                  "the task's shell runs");
        char *pgid = NULL;
        tbt_run(&pgid, "ps -o pgid= -p $(pgrep -f '[%c]%s' | head -1)", mark[0], mark + 1);
        int group = atoi(pgid ? pgid : "0");
        free(pgid);
        cr_assert_gt(group, 1);

        const json_t *r = wait_result("run-slow", "TIMED_OUT", WAIT_MS);
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        int64_t ran = json_integer_value(json_object_get(r, "finished_at")) -
                      json_integer_value(json_object_get(r, "started_at"));
        cr_assert(ran >= 1900 && ran < 6000, "ran %" PRId64 " ms for an expiry of 2 s", ran);
        cr_assert_lt(took_ms, 20000);
        cr_assert(strstr(jstr(r, "error"), "expiry"), "error: %s", jstr(r, "error"));
        cr_assert_neq(tbt_run(NULL, "pgrep -g %d", group), 0,
                      "processes of the run's group %d are left", group);
        cr_assert(!procs_with(mark));
}

/* ---- overlap policies ----------------------------------------------------------------- */

Test(executor, overlap_forbid_skips_and_cancel_request_stops) {
        char err[1024];
        produce_req(&(req_t){.run_id = "f-1", .task_id = "task-f", .script = "sleep 600"});
        wait_result("f-1", "RUNNING", WAIT_MS);
        produce_req(&(req_t){.run_id = "f-2", .task_id = "task-f", .script = "echo no"});
        const json_t *sk = wait_result("f-2", "SKIPPED_OVERLAP", WAIT_MS);
        cr_assert(strstr(jstr(sk, "error"), "f-1"), "names the running run: %s",
                  jstr(sk, "error"));

        /* cancellation through run_claims, as `taskbus runs cancel` does it */
        cr_assert_eq(tb_store_claims_request_cancel(st.conn, "f-2", NULL, err, sizeof(err)),
                     TB_ERR_NOT_FOUND, "a skipped run is not running");
        cr_assert(strstr(err, "f-2 is not running"), "%s", err);
        int64_t t0 = tb_mono_us();
        cr_assert_eq(tb_store_claims_request_cancel(st.conn, "f-1", "stopped by the test", err,
                                                sizeof(err)),
                     TB_OK, "%s", err);
        const json_t *c = wait_result("f-1", "CANCELLED", WAIT_MS);
        cr_assert_lt((tb_mono_us() - t0) / 1000, 5000, "cancel seen within about a second");
        cr_assert(strstr(jstr(c, "error"), "stopped by the test"), "%s", jstr(c, "error"));
        tbt_reader_drain(results, 5000);
        cr_assert_eq(count_results("f-2"), 1, "a skipped run gets exactly one result");
}

Test(executor, overlap_allow_runs_both_and_task_cancel_stops_all) {
        char err[1024];
        produce_req(&(req_t){.run_id = "a-1", .task_id = "task-a", .script = "sleep 600",
                             .overlap = "ALLOW"});
        wait_result("a-1", "RUNNING", WAIT_MS);
        produce_req(&(req_t){.run_id = "a-2", .task_id = "task-a", .script = "sleep 600",
                             .overlap = "ALLOW"});
        wait_result("a-2", "RUNNING", WAIT_MS);
        int count = -1;
        cr_assert_eq(tb_store_claims_cancel_task_runs(st.conn, "task-a", "task deleted", &count, err,
                                                  sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(count, 2);
        wait_result("a-1", "CANCELLED", WAIT_MS);
        wait_result("a-2", "CANCELLED", WAIT_MS);
}

Test(executor, overlap_replace_cancels_the_running_run) {
        produce_req(&(req_t){.run_id = "r-1", .task_id = "task-r", .script = "sleep 600",
                             .overlap = "REPLACE"});
        wait_result("r-1", "RUNNING", WAIT_MS);
        produce_req(&(req_t){.run_id = "r-2", .task_id = "task-r", .script = "echo second",
                             .overlap = "REPLACE"});
        const json_t *c = wait_result("r-1", "CANCELLED", WAIT_MS);
        cr_assert(strstr(jstr(c, "error"), "replaced by run r-2"), "%s", jstr(c, "error"));
        wait_result("r-2", "SUCCEEDED", WAIT_MS);
}

/* ---- exactly once --------------------------------------------------------------------- */

Test(executor, duplicate_run_request_runs_once) {
        char script[256], path[128];
        snprintf(path, sizeof(path), "%s/dup", tmpdir);
        snprintf(script, sizeof(script), "echo once >> %s", path);
        tb_buf_t b = {0};
        encode_req(&(req_t){.run_id = "d-1", .task_id = "task-d", .script = script}, &b);
        produce_raw("task-d", b.data, b.len);
        wait_result("d-1", "SUCCEEDED", WAIT_MS);
        produce_raw("task-d", b.data, b.len); /* the same record again */
        tb_buf_free(&b);
        /* A later run of the same task (same partition) is handled after the
         * duplicate: once it is done, the duplicate was seen. */
        produce_req(&(req_t){.run_id = "d-2", .task_id = "task-d", .script = "true"});
        wait_result("d-2", "SUCCEEDED", WAIT_MS);
        tbt_reader_drain(results, 5000);
        cr_assert_eq(count_results("d-1"), 2, "one RUNNING and one SUCCEEDED");
        char *out = NULL;
        tbt_run(&out, "cat %s", path);
        cr_assert_str_eq(out, "once\n", "the task ran once");
        free(out);
        char *log = tbt_daemon_log(&st);
        cr_assert(strstr(log, "run d-1 (task task-d) was claimed before: duplicate dropped "
                              "(taskbus_executor_duplicates_total=1)"),
                  "duplicate counted; log:\n%s", log);
        free(log);
}

Test(executor, killed_executor_run_is_lost_and_its_processes_killed) {
        char mark[32], cmd[128];
        marker(mark);
        snprintf(cmd, sizeof(cmd), "sleep 600; echo %s", mark);
        produce_req(&(req_t){.run_id = "l-1", .task_id = "task-l", .script = cmd});
        wait_result("l-1", "RUNNING", WAIT_MS);
        cr_assert(tbt_wait_until(procs_cond, mark, 5000));
        char *owner = tbt_sql_value(&st, "SELECT executor_id FROM run_claims WHERE "
                                         "run_id = 'l-1'");
        cr_assert_not_null(owner);

        tbt_daemon_stop(daemon_pid, SIGKILL);
        cr_assert(procs_with(mark), "the task outlives its killed executor");
        daemon_pid = tbt_daemon_start(&st, "executor");
        /* lease 3 s: the new executor's reaper declares it lost */
        const json_t *r = wait_result("l-1", "LOST", WAIT_MS);
        char want[600];
        snprintf(want, sizeof(want), "executor %s stopped renewing its lease", owner);
        cr_assert_str_eq(jstr(r, "error"), want);
        free(owner);
        cr_assert(tbt_wait_until(no_procs_cond, mark, 10000),
                  "the lost run's processes on this host are killed");
        char *s = tbt_sql_value(&st, "SELECT status FROM run_claims WHERE run_id = 'l-1'");
        cr_assert_str_eq(s, "LOST");
        free(s);
}

/* ---- output ----------------------------------------------------------------------------- */

Test(executor, ten_mib_of_output_complete_and_in_order) {
        const int last = 1500000;
        produce_req(&(req_t){.run_id = "big", .task_id = "task-big", .script = "seq 1 1500000"});
        const json_t *r = wait_result("big", "SUCCEEDED", 60000);
        chunks_t c;
        wait_chunks("big", &c, 60000);
        cr_assert(c.in_order, "seq 0..n without gaps, eof last");
        tb_buf_t want = {0};
        for (int i = 1; i <= last; i++)
                tb_buf_printf(&want, "%d\n", i);
        cr_assert_geq(want.len, (size_t)10 * 1024 * 1024);
        cr_assert_eq(c.out.len, want.len, "got %zu bytes, want %zu", c.out.len, want.len);
        cr_assert(!memcmp(c.out.data, want.data, want.len), "the output arrives unchanged");
        cr_assert_geq(c.count, (int64_t)(want.len / (64 * 1024)));
        cr_assert_eq(json_integer_value(json_object_get(r, "output_bytes")), (json_int_t)want.len);
        tb_buf_free(&want);
        chunks_free(&c);
}

Test(executor, output_is_visible_while_the_task_runs) {
        produce_req(&(req_t){.run_id = "live", .task_id = "task-live",
                             .script = "echo first-line; sleep 4; echo second-line"});
        wait_result("live", "RUNNING", WAIT_MS);
        int64_t t0 = tb_mono_us();
        bool seen = false;
        while (!seen && tb_mono_us() - t0 < 3000 * 1000) {
                tbt_reader_poll(logs, 50);
                chunks_t c;
                collect_chunks("live", &c);
                seen = strstr(c.out.data, "first-line") != NULL;
                cr_assert(!strstr(c.out.data, "second-line"));
                chunks_free(&c);
        }
        cr_assert(seen, "the first line arrived while the task still runs");
        tbt_reader_poll(results, 100);
        cr_assert_null(find_result("live", "SUCCEEDED"), "the run had not finished yet");
        wait_result("live", "SUCCEEDED", WAIT_MS);
        chunks_t c;
        wait_chunks("live", &c, WAIT_MS);
        cr_assert_str_eq(c.out.data, "first-line\nsecond-line\n");
        chunks_free(&c);
}

Test(executor_cfg, output_cap_truncates_with_a_marker) {
        tb_log_set_level(TB_LOG_WARN);
        start_stack("output_cap = \"4KiB\";");
        produce_req(&(req_t){.run_id = "cap", .task_id = "task-cap",
                             .script = "head -c 100000 /dev/zero | tr '\\0' x"});
        const json_t *r = wait_result("cap", "SUCCEEDED", WAIT_MS);
        chunks_t c;
        wait_chunks("cap", &c, WAIT_MS);
        cr_assert_eq(c.out.len, 4096, "kept %zu bytes", c.out.len);
        cr_assert(strstr(c.sys.data, "[taskbus: output truncated after 4096 bytes]"),
                  "system chunks: %s", c.sys.data);
        cr_assert_eq(json_integer_value(json_object_get(r, "output_bytes")), 100000);
        chunks_free(&c);
}

/* ---- limits, poison, shutdown --------------------------------------------------------- */

Test(executor_cfg, max_concurrent_bounds_running_runs) {
        tb_log_set_level(TB_LOG_WARN);
        start_stack("max_concurrent = 2;");
        const char *ids[] = {"c-1", "c-2", "c-3", "c-4", "c-5"};
        const char *tasks[] = {"task-c1", "task-c2", "task-c3", "task-c4", "task-c5"};
        for (size_t i = 0; i < 5; i++)
                produce_req(&(req_t){.run_id = ids[i], .task_id = tasks[i], .script = "sleep 1"});
        int64_t start[5], end[5];
        for (size_t i = 0; i < 5; i++) {
                start[i] = json_integer_value(
                        json_object_get(wait_result(ids[i], "RUNNING", WAIT_MS), "started_at"));
                end[i] = json_integer_value(
                        json_object_get(wait_result(ids[i], "SUCCEEDED", WAIT_MS), "finished_at"));
        }
        int most = 0;
        for (size_t i = 0; i < 5; i++) {
                int at_once = 0; /* runs going on when run i started */
                for (size_t k = 0; k < 5; k++)
                        at_once += start[k] <= start[i] && end[k] > start[i];
                if (at_once > most)
                        most = at_once;
        }
        cr_assert_eq(most, 2, "at most executor.max_concurrent runs at once, and it is used");
}

/* A consumer of runs-dlq that also sees headers. */
static bool dlq_reason_is(const rd_kafka_message_t *m, const char *reason) {
        const void *v;
        size_t len;
        return !m->err && tb_bus_header_get(m, "reason", &v, &len) == TB_OK &&
               len == strlen(reason) && !memcmp(v, reason, len);
}

/* DLQ records read but not asked for yet: records of different partitions
 * arrive in any order, so none may be thrown away while waiting for another. */
static rd_kafka_message_t *dlq_stash[16];
static size_t dlq_stash_cnt;

static rd_kafka_message_t *dlq_wait(rd_kafka_t *c, const char *reason, int ms) {
        for (size_t i = 0; i < dlq_stash_cnt; i++)
                if (dlq_reason_is(dlq_stash[i], reason)) {
                        rd_kafka_message_t *m = dlq_stash[i];
                        dlq_stash[i] = dlq_stash[--dlq_stash_cnt];
                        return m;
                }
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        while (tb_mono_us() < until) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
                if (!m)
                        continue;
                if (dlq_reason_is(m, reason))
                        return m;
                if (!m->err && dlq_stash_cnt < TB_ARRAY_LEN(dlq_stash))
                        dlq_stash[dlq_stash_cnt++] = m;
                else
                        rd_kafka_message_destroy(m);
        }
        return NULL;
}

static char *header(const rd_kafka_message_t *m, const char *name) {
        const void *v;
        size_t len;
        if (tb_bus_header_get(m, name, &v, &len) != TB_OK)
                return strdup("");
        return strndup(v, len);
}

Test(executor, unknown_executor_and_garbage_go_to_the_dlq) {
        char err[1024], group[128];
        snprintf(group, sizeof(group), "%sdlq-test", st.prefix);
        tb_consumer_opts_t o = {.group_id = group, .offset_reset = "earliest"};
        const tb_topic_t topics[] = {TB_TOPIC_DLQ};
        rd_kafka_t *dlq = NULL;
        cr_assert_eq(tb_bus_consumer_new(st.conf, &o, topics, 1, &dlq, err, sizeof(err)), TB_OK,
                     "%s", err);

        produce_req(&(req_t){.run_id = "u-1", .task_id = "task-u", .script = "true",
                             .executor = "teleporter"});
        produce_raw("task-garbage", "this is not avro", 16);
        produce_req(&(req_t){.run_id = "u-2", .task_id = "task-u2", .script = "true"});

        rd_kafka_message_t *m = dlq_wait(dlq, "unknown_executor", WAIT_MS);
        cr_assert_not_null(m, "unknown executor in the dlq");
        cr_assert_eq(m->key_len, strlen("task-u"));
        cr_assert(!memcmp(m->key, "task-u", m->key_len), "keyed by task id");
        char *e = header(m, "error");
        cr_assert(strstr(e, "executor 'teleporter' is not loaded") && strstr(e, "shell"),
                  "error header: %s", e);
        free(e);
        rd_kafka_message_destroy(m);
        const json_t *f = wait_result("u-1", "FAILED", WAIT_MS);
        cr_assert(json_is_true(json_object_get(f, "infra_error")));

        m = dlq_wait(dlq, "undecodable", WAIT_MS);
        cr_assert_not_null(m, "garbage in the dlq");
        cr_assert_eq(m->len, 16);
        cr_assert(!memcmp(m->payload, "this is not avro", 16), "the record is kept as is");
        e = header(m, "error");
        cr_assert_str_neq(e, "");
        free(e);
        rd_kafka_message_destroy(m);

        wait_result("u-2", "SUCCEEDED", WAIT_MS); /* and the executor goes on */
        while (dlq_stash_cnt > 0)
                rd_kafka_message_destroy(dlq_stash[--dlq_stash_cnt]);
        tb_bus_consumer_destroy(dlq, 10000);
        /* nothing was claimed for the poison records: offsets still committed */
        char *n = tbt_sql_value(&st, "SELECT count(*) FROM run_claims");
        cr_assert_str_eq(n, "1");
        free(n);
}

Test(executor, infra_error_when_the_plugin_cannot_start_the_run) {
        /* the shell plugin refuses unknown executor options */
        json_t *v = NULL;
        tb_buf_t b = {0};
        char err[512];
        encode_req(&(req_t){.run_id = "i-1", .task_id = "task-i", .script = "true"}, &b);
        cr_assert_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_RUN_REQUEST, NULL, &v, err,
                                     sizeof(err)),
                     TB_OK);
        json_object_set_new(json_object_get(json_object_get(v, "snapshot"), "executor_options"),
                            "colour", json_string("blue"));
        b.len = 0;
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_RUN_REQUEST, v, &b, err, sizeof(err)), TB_OK);
        json_decref(v);
        produce_raw("task-i", b.data, b.len);
        tb_buf_free(&b);
        const json_t *r = wait_result("i-1", "FAILED", WAIT_MS);
        cr_assert(json_is_true(json_object_get(r, "infra_error")));
        cr_assert(json_is_null(json_object_get(r, "exit_code")));
        cr_assert(strstr(jstr(r, "error"), "unknown executor option 'colour'"), "%s",
                  jstr(r, "error"));
}

/* An executor running as root whose capabilities were cut too far (no
 * CAP_SETGID / CAP_SETUID) cannot become the task's user: the run ends
 * FAILED as an infra error that names the user and the cause, and nothing of
 * the task ran. */
Test(executor_cfg, user_switch_failure_is_a_clear_run_error) {
        tb_log_set_level(TB_LOG_WARN);
        cr_assert_eq(geteuid(), 0, "this test runs as root");
        /* the daemon this test starts inherits the cut bounding set */
        cr_assert_eq(prctl(PR_CAPBSET_DROP, CAP_SETGID, 0, 0, 0), 0, "%s", strerror(errno));
        cr_assert_eq(prctl(PR_CAPBSET_DROP, CAP_SETUID, 0, 0, 0), 0, "%s", strerror(errno));
        start_stack(NULL);
        char cmd[160];
        snprintf(cmd, sizeof(cmd), "touch %s/ran", tmpdir);
        produce_req(&(req_t){.run_id = "sw-1", .task_id = "task-sw", .script = cmd});
        const json_t *r = wait_result("sw-1", "FAILED", WAIT_MS);
        cr_assert(json_is_true(json_object_get(r, "infra_error")));
        cr_assert(json_is_null(json_object_get(r, "exit_code")));
        const char *e = jstr(r, "error");
        cr_assert(strstr(e, "cannot switch to os user 'nobody' (uid 65534, gid 65534"), "%s", e);
        cr_assert(strstr(e, "setgroups: Operation not permitted"), "%s", e);
        cr_assert(strstr(e, "CAP_SETUID and CAP_SETGID"), "%s", e);
        char path[128];
        snprintf(path, sizeof(path), "%s/ran", tmpdir);
        cr_assert_neq(access(path, F_OK), 0, "the task ran although its user was not set");
}

Test(executor, sigterm_waits_grace_then_cancels) {
        char mark[32], cmd[128];
        marker(mark);
        snprintf(cmd, sizeof(cmd), "sleep 600; echo %s", mark);
        produce_req(&(req_t){.run_id = "t-1", .task_id = "task-t", .script = cmd});
        wait_result("t-1", "RUNNING", WAIT_MS);
        produce_req(&(req_t){.run_id = "t-2", .task_id = "task-t2", .script = "sleep 1.8"});
        wait_result("t-2", "RUNNING", WAIT_MS);
        int64_t t0 = tb_mono_us(), term_at = tb_now_ms();
        int status = tbt_daemon_stop(daemon_pid, SIGTERM);
        daemon_pid = 0;
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "taskbusd exits cleanly");
        cr_assert(took_ms >= 1900, "waited executor.grace (2 s), took %" PRId64 " ms", took_ms);
        cr_assert_lt(took_ms, 20000);
        const json_t *t2 = wait_result("t-2", "SUCCEEDED", WAIT_MS);
        cr_assert_gt(json_integer_value(json_object_get(t2, "finished_at")), term_at,
                     "a run ending within the grace finishes normally after SIGTERM");
        const json_t *r = wait_result("t-1", "CANCELLED", WAIT_MS);
        cr_assert_str_eq(jstr(r, "error"), "executor shutting down");
        cr_assert(!procs_with(mark), "its processes are gone");
}

Test(executor, held_until_nominal_time) {
        int64_t nominal = tb_now_ms() + 3000;
        produce_req(&(req_t){.run_id = "n-1", .task_id = "task-n", .script = "true",
                             .nominal_ms = nominal});
        const json_t *r = wait_result("n-1", "RUNNING", WAIT_MS);
        int64_t started = json_integer_value(json_object_get(r, "started_at"));
        cr_assert_geq(started, nominal, "started %" PRId64 " ms before its nominal time",
                      nominal - started);
        cr_assert_lt(started - nominal, 1000, "started %" PRId64 " ms late", started - nominal);
        wait_result("n-1", "SUCCEEDED", WAIT_MS);
}

static bool claimed_h1(void *arg) {
        (void)arg;
        char *v = tbt_sql_value(&st, "SELECT count(*) FROM run_claims WHERE run_id = 'h-1'");
        bool yes = v && !strcmp(v, "1");
        free(v);
        return yes;
}

/* Taken from the queue by the executor (state running: held for its time).
 * Its queued row exists a little earlier, before the take: a stop in between
 * leaves it queued for any executor, which is not what this test is about. */
static bool taken_h1(void *arg) {
        (void)arg;
        char *v = tbt_sql_value(&st, "SELECT count(*) FROM run_claims WHERE run_id = 'h-1' "
                                     "AND state = 'running'");
        bool yes = v && !strcmp(v, "1");
        free(v);
        return yes;
}

Test(executor, held_run_is_handed_back_at_shutdown) {
        int64_t nominal = tb_now_ms() + 10000;
        produce_req(&(req_t){.run_id = "h-1", .task_id = "task-h", .script = "true",
                             .nominal_ms = nominal});
        cr_assert(tbt_wait_until(taken_h1, NULL, WAIT_MS), "claimed while held");
        int64_t t0 = tb_mono_us();
        int status = tbt_daemon_stop(daemon_pid, SIGTERM);
        daemon_pid = 0;
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        cr_assert_lt((tb_mono_us() - t0) / 1000, 1900, "nothing ran: no grace to wait");
        cr_assert(!claimed_h1(NULL), "the claim of a run that never started is released");
        cr_assert_null(find_result("h-1", NULL), "no result for it yet");

        daemon_pid = tbt_daemon_start(&st, "executor");
        const json_t *r = wait_result("h-1", "RUNNING", WAIT_MS);
        cr_assert_geq(json_integer_value(json_object_get(r, "started_at")), nominal);
        wait_result("h-1", "SUCCEEDED", WAIT_MS);
        tbt_reader_drain(results, 5000);
        cr_assert_eq(count_results("h-1"), 2, "it ran once: RUNNING, SUCCEEDED");
        char *log = tbt_daemon_log(&st);
        cr_assert(strstr(log, "run h-1 (task task-h) had not started: handed back to runs"),
                  "%s", log);
        free(log);
}

/* ---- the run queue: group quotas and fair execution ------------------------------------ */

/* An integer from one SQL value (-1 when NULL). */
static long long sql_ll(const char *sql) {
        char *v = tbt_sql_value(&st, sql);
        long long n = !v || !*v ? -1 : !strcmp(v, "t") ? 1 : !strcmp(v, "f") ? 0 : atoll(v);
        free(v);
        return n;
}

typedef struct sql_cond {
        const char *sql;
        long long want;
} sql_cond_t;

static bool sql_is(void *arg) {
        const sql_cond_t *c = arg;
        return sql_ll(c->sql) == c->want;
}

Test(executor_cfg, max_running_queues_a_group_in_fifo_order) {
        tb_log_set_level(TB_LOG_WARN);
        start_stack("max_concurrent = 8;");
        free(tbt_sql_value(&st, "INSERT INTO security_groups (name, max_running) "
                                "VALUES ('gq', 1)"));
        char mark[32], hold[256], path[128];
        marker(mark);
        snprintf(path, sizeof(path), "%s/%s", tmpdir, mark);
        /* q-0 runs until the test lets it end; q-1..q-4 wait behind it */
        snprintf(hold, sizeof(hold), "while [ ! -e %s ]; do sleep 0.05; done", path);
        produce_req(&(req_t){.run_id = "q-0", .task_id = "task-q0", .script = hold,
                             .group = "gq"});
        wait_result("q-0", "RUNNING", WAIT_MS);
        const char *ids[] = {"q-1", "q-2", "q-3", "q-4"};
        const char *tasks[] = {"task-q1", "task-q2", "task-q3", "task-q4"};
        for (size_t i = 0; i < 4; i++) {
                produce_req(&(req_t){.run_id = ids[i], .task_id = tasks[i], .script = "true",
                                     .group = "gq"});
                /* one at a time, so that the enqueue order is the test's */
                sql_cond_t c = {"SELECT count(*) FROM run_claims WHERE state = 'queued'",
                                (long long)i + 1};
                cr_assert(tbt_wait_until(sql_is, &c, WAIT_MS), "%s queued", ids[i]);
        }
        /* another group is not held back by gq's queue */
        produce_req(&(req_t){.run_id = "o-1", .task_id = "task-o1", .script = "true",
                             .group = "other"});
        wait_result("o-1", "SUCCEEDED", WAIT_MS);
        /* gq's runs wait, each with its place in the queue */
        char err[512];
        for (size_t i = 0; i < 4; i++) {
                int64_t pos = 0;
                cr_assert_eq(tb_store_claims_queue_position(st.conn, ids[i], &pos, err,
                                                            sizeof(err)),
                             TB_OK, "%s", err);
                cr_assert_eq(pos, (int64_t)i + 1, "%s is at place %" PRId64, ids[i], pos);
                cr_assert_null(find_result(ids[i], "RUNNING"), "%s waits for q-0", ids[i]);
        }
        cr_assert_eq(sql_ll("SELECT count(*) FROM run_claims WHERE security_group = 'gq' "
                            "AND state = 'running'"),
                     1, "max_running = 1");
        tbt_run(NULL, "touch %s", path);
        for (size_t i = 0; i < 4; i++)
                wait_result(ids[i], "SUCCEEDED", WAIT_MS);
        /* taken one after another, in the order they were queued */
        cr_assert_eq(sql_ll("SELECT count(*) FROM run_claims a JOIN run_claims b ON "
                            "a.queue_seq < b.queue_seq AND a.taken_seq > b.taken_seq "
                            "WHERE a.security_group = 'gq' AND b.security_group = 'gq'"),
                     0, "FIFO: no run of gq was taken before one queued earlier");
        /* never two of gq at once: each was taken after the one before ended */
        const json_t *prev = wait_result("q-0", "SUCCEEDED", WAIT_MS);
        for (size_t i = 0; i < 4; i++) {
                const json_t *run = wait_result(ids[i], "RUNNING", WAIT_MS);
                cr_assert_geq(json_integer_value(json_object_get(run, "started_at")),
                              json_integer_value(json_object_get(prev, "finished_at")),
                              "%s started before the run ahead of it finished", ids[i]);
                prev = wait_result(ids[i], "SUCCEEDED", WAIT_MS);
        }
}

Test(executor_cfg, a_group_backlog_delays_another_group_by_one_slot_turn_at_most) {
        tb_log_set_level(TB_LOG_WARN);
        start_stack("max_concurrent = 1;");
        char run[32], task[32];
        for (int i = 0; i < 200; i++) {
                snprintf(run, sizeof(run), "busy-%03d", i);
                snprintf(task, sizeof(task), "task-busy-%03d", i);
                produce_req(&(req_t){.run_id = run, .task_id = task, .script = "sleep 0.05",
                                     .group = "busy"});
        }
        /* the backlog is queued and running before the other group's run comes */
        sql_cond_t c = {"SELECT count(*) >= 150 FROM run_claims WHERE security_group = "
                        "'busy' AND state = 'queued'", 1};
        cr_assert(tbt_wait_until(sql_is, &c, WAIT_MS), "busy's runs queued");
        wait_result("busy-000", "SUCCEEDED", WAIT_MS);
        produce_req(&(req_t){.run_id = "quiet-1", .task_id = "task-quiet", .script = "true",
                             .group = "quiet"});
        wait_result("quiet-1", "SUCCEEDED", WAIT_MS);
        long long queued = sql_ll("SELECT count(*) FROM run_claims WHERE security_group = "
                                  "'busy' AND state = 'queued'");
        cr_assert_gt(queued, 0, "busy still had a backlog when quiet's run ended");
        /* the order of events: busy's runs taken after quiet-1 was queued and
         * before quiet-1 was taken (one slot: at most one turn) */
        long long between = sql_ll("SELECT count(*) FROM run_claims b, run_claims q WHERE "
                                   "q.run_id = 'quiet-1' AND b.security_group = 'busy' AND "
                                   "b.taken_seq > q.queue_seq AND b.taken_seq < q.taken_seq");
        cr_log_info("quiet-1 waited for %lld of busy's runs; busy still had %lld queued",
                    between, queued);
        cr_assert_leq(between, 1, "%lld of busy's runs started while quiet-1 waited", between);
}

Test(executor_cfg, a_queued_run_is_cancelled_without_starting) {
        tb_log_set_level(TB_LOG_WARN);
        start_stack("max_concurrent = 1;");
        char mark[32], hold[256], path[128], err[512];
        marker(mark);
        snprintf(path, sizeof(path), "%s/%s", tmpdir, mark);
        snprintf(hold, sizeof(hold), "while [ ! -e %s ]; do sleep 0.05; done", path);
        produce_req(&(req_t){.run_id = "k-0", .task_id = "task-k0", .script = hold});
        wait_result("k-0", "RUNNING", WAIT_MS);
        produce_req(&(req_t){.run_id = "k-1", .task_id = "task-k1", .script = "true"});
        sql_cond_t c = {"SELECT count(*) FROM run_claims WHERE run_id = 'k-1' AND state = "
                        "'queued'", 1};
        cr_assert(tbt_wait_until(sql_is, &c, WAIT_MS), "k-1 queued behind k-0");
        cr_assert_eq(tb_store_claims_request_cancel(st.conn, "k-1", "not wanted", err,
                                                    sizeof(err)),
                     TB_OK, "%s", err);
        const json_t *r = wait_result("k-1", "CANCELLED", WAIT_MS);
        cr_assert(strstr(jstr(r, "error"), "not wanted"), "%s", jstr(r, "error"));
        cr_assert_null(find_result("k-1", "RUNNING"), "it never started");
        tbt_run(NULL, "touch %s", path);
        wait_result("k-0", "SUCCEEDED", WAIT_MS);
}

Test(executor_cfg, max_running_bounds_a_group_with_free_slots_on_two_executors) {
        tb_log_set_level(TB_LOG_WARN);
        /* two executors of two slots each: room for four runs, the group's quota one */
        start_stack("max_concurrent = 2;");
        pid_t second = tbt_daemon_start(&st, "executor");
        free(tbt_sql_value(&st, "INSERT INTO security_groups (name, max_running) "
                                "VALUES ('gq', 1)"));
        const char *ids[] = {"m-1", "m-2", "m-3", "m-4", "m-5", "m-6"};
        const char *tasks[] = {"task-m1", "task-m2", "task-m3", "task-m4", "task-m5",
                               "task-m6"};
        for (size_t i = 0; i < 6; i++)
                produce_req(&(req_t){.run_id = ids[i], .task_id = tasks[i],
                                     .script = "sleep 0.3", .group = "gq"});
        /* another group uses the second slot meanwhile */
        produce_req(&(req_t){.run_id = "m-other", .task_id = "task-mo", .script = "sleep 0.3",
                             .group = "other"});
        int64_t start[6], end[6];
        for (size_t i = 0; i < 6; i++) {
                start[i] = json_integer_value(
                        json_object_get(wait_result(ids[i], "RUNNING", WAIT_MS), "started_at"));
                end[i] = json_integer_value(
                        json_object_get(wait_result(ids[i], "SUCCEEDED", WAIT_MS), "finished_at"));
        }
        wait_result("m-other", "SUCCEEDED", WAIT_MS);
        int most = 0;
        for (size_t i = 0; i < 6; i++) {
                int at_once = 0;
                for (size_t k = 0; k < 6; k++)
                        at_once += start[k] <= start[i] && end[k] > start[i];
                if (at_once > most)
                        most = at_once;
        }
        cr_log_info("gq's runs were taken by %lld executor(s)",
                    sql_ll("SELECT count(DISTINCT executor_id) FROM run_claims WHERE "
                           "security_group = 'gq'"));
        cr_assert_eq(most, 1, "max_running = 1 over both executors, got %d at once", most);
        int status = tbt_daemon_stop(second, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the second executor exits");
}

/* What taskbus_take_runs() gives two executors, called as they call it. */
static long long take_as(const char *executor_id, int max) {
        char sql[512];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM taskbus_take_runs('%s', %d, 60000, "
                 "'host', ARRAY['shell'], 60000) WHERE outcome LIKE 'claimed:%%'",
                 executor_id, max);
        return sql_ll(sql);
}

Test(executor_cfg, takes_count_max_running_over_every_executor) {
        tb_log_set_level(TB_LOG_WARN);
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 1});
        free(tbt_sql_value(&st, "INSERT INTO security_groups (name, max_running) "
                                "VALUES ('gq', 2)"));
        const char *ids[] = {"x-1", "x-2", "x-3", "x-4"};
        char sql[512];
        for (size_t i = 0; i < 4; i++) {
                snprintf(sql, sizeof(sql), "SELECT taskbus_enqueue_run('%s', 'task-%s', "
                         "'ex-a', 0, 1, 'shell', 'gq', 'ALLOW', '\\x00'::bytea)",
                         ids[i], ids[i]);
                free(tbt_sql_value(&st, sql));
        }
        cr_assert_eq(take_as("ex-a", 1), 1);
        cr_assert_eq(take_as("ex-b", 10), 1, "ex-b gets the one slot gq has left");
        cr_assert_eq(take_as("ex-a", 10), 0, "gq runs 2 over both executors: none for ex-a");
        cr_assert_eq(take_as("ex-b", 10), 0);
        free(tbt_sql_value(&st, "UPDATE run_claims SET state = 'done' WHERE run_id = 'x-1'"));
        cr_assert_eq(take_as("ex-a", 10), 1, "a slot freed on ex-a's side");
        cr_assert_eq(sql_ll("SELECT count(*) FROM run_claims WHERE state = 'running'"), 2);
        cr_assert_eq(sql_ll("SELECT string_agg(run_id, ',' ORDER BY taken_seq) = "
                            "'x-1,x-2,x-3' FROM run_claims WHERE taken_seq IS NOT NULL"),
                     1, "FIFO over both executors");
        /* an unknown plugin's runs are left for an executor that has it */
        cr_assert_eq(sql_ll("SELECT count(*) FROM taskbus_take_runs('ex-c', 10, 60000, 'h', "
                            "ARRAY['container'], 60000)"),
                     0);
}
