/**
 * @file test_scheduler.c
 * @brief The scheduler role against real Kafka and PostgreSQL: taskbusd runs
 *        as a child (--roles commands,projector,scheduler) on a private
 *        topic prefix and database; tasks are created with TaskCommands; the
 *        test reads runs, run-results and runs-dlq with read_committed
 *        consumers, and plays the executor by producing RunResults itself.
 */
#include "bus/bus.h"
#include "scheduler/engine.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 60000

static tbt_stack_t g_st;
static pid_t g_pid;
static rd_kafka_t *g_prod;
static tbt_reader_t *g_replies, *g_runs, *g_results;
static char g_authz[96];

static void setup(void) {
        tbt_stack_opts_t o = {
                .kafka_extra = "session_timeout_ms = 6000; heartbeat_interval_ms = 1000; "
                               "group_instance_id = \"sched-test-1\";",
        };
        tbt_stack_create(&g_st, &o);
        tbt_stack_user(&g_st, "alice", "ops", g_authz);
        g_pid = tbt_daemon_start(&g_st, "commands,projector,scheduler");
        g_prod = tbt_stack_producer(&g_st);
        g_replies = tbt_reader_new(&g_st, TB_TOPIC_REPLIES, true);
        g_runs = tbt_reader_new(&g_st, TB_TOPIC_RUNS, true);
        g_results = tbt_reader_new(&g_st, TB_TOPIC_RESULTS, true);
}

static void teardown(void) {
        if (g_pid > 0)
                tbt_daemon_stop(g_pid, SIGTERM);
        g_pid = 0;
        tbt_reader_free(g_replies);
        tbt_reader_free(g_runs);
        tbt_reader_free(g_results);
        g_replies = g_runs = g_results = NULL;
        if (g_prod)
                rd_kafka_destroy(g_prod);
        g_prod = NULL;
        tbt_stack_destroy(&g_st);
}

TestSuite(scheduler, .init = setup, .fini = teardown, .timeout = 300);

/* ---- helpers ------------------------------------------------------------------ */

static const char *rstr(const json_t *r, const char *k) {
        const char *s = json_string_value(json_object_get(r, k));
        return s ? s : "(null)";
}

static int64_t rint64(const json_t *r, const char *k) {
        return (int64_t)json_integer_value(json_object_get(r, k));
}

static void dump_log(void) {
        char *log = tbt_daemon_log(&g_st);
        cr_log_error("daemon log:\n%s", log ? log : "(none)");
        free(log);
}

/* Send a command and wait for it to be accepted. @returns the new version. */
static int64_t command(const char *type, const char *task_id, const char *task) {
        char err[1024], corr[37], cid[37];
        tb_uuid4(corr);
        tb_uuid4(cid);
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:n, s:o, s:I}", "command_id", cid,
                              "correlation_id", corr, "type", type, "task_id", task_id,
                              "expected_version", "task",
                              task ? json_string(task) : json_null(), "requested_at",
                              (json_int_t)tb_now_ms());
        tb_buf_t buf = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_COMMAND, j, &buf, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(j);
        char principal[200], auth[200];
        tbt_sign_command(&g_st, g_authz, task_id, strlen(task_id), buf.data, buf.len, 0, principal, auth);
        tb_header_t h[3] = {{"tb-principal", principal, strlen(principal)},
                            {"tb-auth", auth, strlen(auth)},
                            {"correlation_id", corr, strlen(corr)}};
        cr_assert_eq(tb_bus_produce(g_prod, g_st.conf, TB_TOPIC_COMMANDS, RD_KAFKA_PARTITION_UA,
                                    task_id, strlen(task_id), buf.data, buf.len, h, 3, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&buf);
        const json_t *r = tbt_reader_wait(g_replies, "correlation_id", corr, WAIT_MS);
        if (!r)
                dump_log();
        cr_assert_not_null(r, "no reply to %s %s", type, task_id);
        cr_assert_str_eq(rstr(r, "status"), "ACCEPTED", "%s rejected: %s: %s", type,
                         rstr(r, "reason"), rstr(r, "message"));
        return rint64(r, "version");
}

static void create(char id[37], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void create(char id[37], const char *fmt, ...) {
        char *extra = NULL, *body = NULL;
        va_list ap;
        va_start(ap, fmt);
        cr_assert_geq(vasprintf(&extra, fmt, ap), 0);
        va_end(ap);
        cr_assert_geq(asprintf(&body,
                               "{\"name\": \"sched-test\", \"script\": \"true\", "
                               "\"security_group\": \"ops\", %s}",
                               extra),
                      0);
        tb_uuid4(id);
        command("CREATE", id, body);
        free(extra);
        free(body);
}

/* Values of reader \p r for \p task_id (new array of borrowed-then-increfed values). */
static json_t *of_task(tbt_reader_t *r, const char *task_id, const char *field,
                       const char *value) {
        return tbt_reader_of_task(r, task_id, field, value);
}

static size_t count_of(tbt_reader_t *r, const char *task_id, const char *field,
                       const char *value) {
        return tbt_reader_count(r, task_id, field, value);
}

/* Poll \p r until \p task_id has at least \p n matching values. */
static bool wait_count(tbt_reader_t *r, const char *task_id, const char *field,
                       const char *value, size_t n, int ms) {
        return tbt_reader_wait_count(r, task_id, field, value, n, ms);
}

/* No run id twice, and nominal times strictly increasing per attempt 1. */
static void assert_unique_runs(const char *task_id) {
        json_t *runs = of_task(g_runs, task_id, NULL, NULL);
        size_t i, k;
        json_t *v, *w;
        json_array_foreach(runs, i, v) {
                json_array_foreach(runs, k, w) {
                        if (k <= i)
                                continue;
                        cr_assert_str_neq(rstr(v, "run_id"), rstr(w, "run_id"),
                                          "duplicate run id %s", rstr(v, "run_id"));
                }
        }
        json_decref(runs);
}

static void produce_result(const char *task_id, int64_t nominal, int attempt,
                           const char *status) {
        char rid[33], err[512];
        tb_sched_run_id(task_id, nominal, attempt, rid);
        json_t *r = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:s, s:I}", "run_id", rid,
                              "task_id", task_id, "nominal_time", (json_int_t)nominal, "attempt",
                              attempt, "status", status, "executor", "shell", "host", "test",
                              "error", "exit status 3", "at", (json_int_t)tb_now_ms());
        tb_buf_t b = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_RUN_RESULT, r, &b, err, sizeof(err)), TB_OK, "%s",
                     err);
        json_decref(r);
        cr_assert_eq(tb_bus_produce(g_prod, g_st.conf, TB_TOPIC_RESULTS, RD_KAFKA_PARTITION_UA,
                                    task_id, strlen(task_id), b.data, b.len, NULL, 0, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&b);
}

/* ---- tests -------------------------------------------------------------------- */

Test(scheduler, one_shot_fires_exactly_once_on_time) {
        char id[37], at[32];
        int64_t when = (tb_now_ms() / 1000 + 4) * 1000; /* >= 3 s ahead, whole second */
        tb_time_format(when, at);
        create(id, "\"schedule\": {\"once\": \"%s\"}", at);
        if (!wait_count(g_runs, id, NULL, NULL, 1, WAIT_MS))
                dump_log();
        cr_assert_eq(count_of(g_runs, id, NULL, NULL), 1, "no run for the one-shot task");
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        json_t *r = json_array_get(runs, 0);
        cr_assert_eq(rint64(r, "nominal_time"), when);
        cr_assert_str_eq(rstr(r, "trigger"), "SCHEDULE");
        cr_assert_eq(rint64(r, "attempt"), 1);
        int64_t lag = rint64(r, "emitted_at") - when;
        cr_assert(lag >= 0 && lag < 2000, "emitted %lld ms after the nominal time", (long long)lag);
        char rid[33];
        tb_sched_run_id(id, when, 1, rid);
        cr_assert_str_eq(rstr(r, "run_id"), rid);
        json_decref(runs);
        /* and never again */
        int64_t end = tb_now_ms() + 3000;
        while (tb_now_ms() < end)
                tbt_reader_poll(g_runs, 200);
        cr_assert_eq(count_of(g_runs, id, NULL, NULL), 1);
}

Test(scheduler, interval_consecutive_nominals) {
        char id[37];
        create(id, "\"schedule\": {\"every\": \"1s\"}");
        cr_assert(wait_count(g_runs, id, NULL, NULL, 5, WAIT_MS), "fewer than 5 runs");
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        for (size_t i = 1; i < json_array_size(runs); i++)
                cr_assert_eq(rint64(json_array_get(runs, i), "nominal_time") -
                                     rint64(json_array_get(runs, i - 1), "nominal_time"),
                             1000, "run %zu is not 1 s after the previous one", i);
        json_decref(runs);
        assert_unique_runs(id);
}

/* The last nominal time a RunResult stands for: its range's last, or its own. */
static int64_t last_of(const json_t *r) {
        const json_t *l = json_object_get(r, "last_nominal_time");
        return json_is_integer(l) ? (int64_t)json_integer_value(l) : rint64(r, "nominal_time");
}

Test(scheduler, pause_records_skips_then_resume) {
        char id[37];
        create(id, "\"schedule\": {\"every\": \"1s\"}");
        cr_assert(wait_count(g_runs, id, NULL, NULL, 2, WAIT_MS));
        command("PAUSE", id, NULL);
        int64_t paused_at = tb_now_ms();
        /* while paused, nothing is written per fire (an absence: watched
         * for a few fires' time) */
        for (int64_t end = tb_now_ms() + 3500; tb_now_ms() < end;)
                tbt_reader_poll(g_results, 200);
        cr_assert_eq(count_of(g_results, id, "status", "SKIPPED_PAUSED"), 0,
                     "a paused task wrote a record per fire");
        /* within a second of the pause, no scheduled run anymore */
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        size_t i;
        json_t *v;
        json_array_foreach(runs, i, v)
                cr_assert_leq(rint64(v, "nominal_time"), paused_at + 1000,
                              "a run at %lld after the pause at %lld",
                              (long long)rint64(v, "nominal_time"), (long long)paused_at);
        size_t before = json_array_size(runs);
        json_decref(runs);
        command("RESUME", id, NULL);
        cr_assert(wait_count(g_runs, id, NULL, NULL, before + 2, WAIT_MS), "no runs after resume");
        cr_assert(wait_count(g_results, id, "status", "SKIPPED_PAUSED", 1, WAIT_MS),
                  "the paused fires are not recorded as SKIPPED_PAUSED");
        cr_assert(tbt_reader_drain(g_results, WAIT_MS));
        /* one record for the whole pause, standing for at least the 3 fires
         * watched above */
        json_t *skips = of_task(g_results, id, "status", "SKIPPED_PAUSED");
        cr_assert_eq(json_array_size(skips), 1, "one record per paused range");
        const json_t *range = json_array_get(skips, 0);
        int64_t first = rint64(range, "nominal_time"), last = last_of(range);
        cr_assert_geq(rint64(range, "occurrences"), 3);
        cr_assert_eq(rint64(range, "occurrences"), (last - first) / 1000 + 1);
        /* every nominal time is either a run or in the skipped range, never both */
        runs = of_task(g_runs, id, NULL, NULL);
        int64_t lo = rint64(json_array_get(runs, 0), "nominal_time");
        int64_t hi = rint64(json_array_get(runs, json_array_size(runs) - 1), "nominal_time");
        for (int64_t t = lo; t <= hi; t += 1000) {
                size_t hits = t >= first && t <= last;
                json_array_foreach(runs, i, v) hits += rint64(v, "nominal_time") == t;
                cr_assert_eq(hits, 1, "nominal %lld: %zu records (want exactly 1)", (long long)t,
                             hits);
        }
        json_decref(skips);
        json_decref(runs);
        assert_unique_runs(id);
}

Test(scheduler, delete_stops_the_task) {
        char id[37];
        create(id, "\"schedule\": {\"every\": \"1s\"}");
        cr_assert(wait_count(g_runs, id, NULL, NULL, 2, WAIT_MS));
        command("DELETE", id, NULL);
        int64_t deleted = tb_now_ms();
        int64_t end = deleted + 3000;
        while (tb_now_ms() < end)
                tbt_reader_poll(g_runs, 200);
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        size_t i;
        json_t *v;
        json_array_foreach(runs, i, v)
                cr_assert_leq(rint64(v, "nominal_time"), deleted + 1000);
        json_decref(runs);
}

Test(scheduler, run_now_does_not_move_the_schedule) {
        char id[37];
        create(id, "\"schedule\": {\"cron\": \"0 0 1 1 *\"}");
        int64_t before = tb_now_ms();
        command("RUN_NOW", id, NULL);
        if (!wait_count(g_runs, id, "trigger", "RUN_NOW", 1, WAIT_MS))
                dump_log();
        json_t *runs = of_task(g_runs, id, "trigger", "RUN_NOW");
        cr_assert_eq(json_array_size(runs), 1);
        int64_t nominal = rint64(json_array_get(runs, 0), "nominal_time");
        cr_assert(nominal >= before - 1000 && nominal <= tb_now_ms(),
                  "run-now nominal %lld is not the request time", (long long)nominal);
        json_decref(runs);
        int64_t end = tb_now_ms() + 2000;
        while (tb_now_ms() < end)
                tbt_reader_poll(g_runs, 200);
        cr_assert_eq(count_of(g_runs, id, NULL, NULL), 1, "the yearly schedule fired too");
}

Test(scheduler, update_neither_repeats_nor_loses) {
        char id[37], *body = NULL;
        create(id, "\"schedule\": {\"every\": \"1s\"}");
        cr_assert(wait_count(g_runs, id, NULL, NULL, 3, WAIT_MS));
        cr_assert_geq(asprintf(&body, "{\"name\": \"sched-test\", \"script\": \"true\", "
                                      "\"security_group\": \"ops\", "
                                      "\"schedule\": {\"every\": \"2s\"}}"),
                      0);
        command("UPDATE", id, body);
        free(body);
        int64_t updated = tb_now_ms();
        size_t n = count_of(g_runs, id, NULL, NULL);
        cr_assert(wait_count(g_runs, id, NULL, NULL, n + 3, WAIT_MS));
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        int64_t prev = 0;
        bool seen_2s = false;
        for (size_t i = 0; i < json_array_size(runs); i++) {
                int64_t nm = rint64(json_array_get(runs, i), "nominal_time");
                cr_assert_gt(nm, prev, "nominal %lld repeated or out of order", (long long)nm);
                if (prev && nm > updated + 1000) {
                        cr_assert_eq(nm - prev >= 1000 && nm - prev <= 2000, true,
                                     "gap of %lld ms after the update", (long long)(nm - prev));
                        seen_2s |= nm - prev == 2000;
                }
                prev = nm;
        }
        cr_assert(seen_2s, "the new 2 s period never showed");
        json_decref(runs);
        assert_unique_runs(id);
}

/* Every nominal time of \p id from \p from to \p to is a run or a skip, once. */
static void assert_exactly_once(const char *id, int64_t from, int64_t to, size_t *runs_out,
                                size_t *skips_out, size_t *misfire_runs) {
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        json_t *res = of_task(g_results, id, NULL, NULL);
        *runs_out = *skips_out = *misfire_runs = 0;
        for (int64_t t = from; t <= to; t += 1000) {
                size_t hits = 0, i;
                json_t *v;
                json_array_foreach(runs, i, v) if (rint64(v, "nominal_time") == t &&
                                                   rint64(v, "attempt") == 1) {
                        hits++;
                        (*runs_out)++;
                        if (!strcmp(rstr(v, "trigger"), "MISFIRE"))
                                (*misfire_runs)++;
                }
                /* a skip record stands for its range of fires */
                json_array_foreach(res, i, v) if (t >= rint64(v, "nominal_time") &&
                                                  t <= last_of(v) &&
                                                  (t - rint64(v, "nominal_time")) % 1000 == 0 &&
                                                  !strncmp(rstr(v, "status"), "SKIPPED", 7)) {
                        hits++;
                        (*skips_out)++;
                }
                if (hits != 1) {
                        /* say which records: a run and a skip, two skips... */
                        json_array_foreach(runs, i, v) if (rint64(v, "nominal_time") == t)
                                cr_log_error("run %s attempt %lld trigger %s", rstr(v, "run_id"),
                                             (long long)rint64(v, "attempt"), rstr(v, "trigger"));
                        json_array_foreach(res, i, v) if (t >= rint64(v, "nominal_time") &&
                                                          t <= last_of(v))
                                cr_log_error("result %s %s %lld..%lld (%lld) at %lld: %s",
                                             rstr(v, "run_id"), rstr(v, "status"),
                                             (long long)rint64(v, "nominal_time"),
                                             (long long)last_of(v),
                                             (long long)rint64(v, "occurrences"),
                                             (long long)rint64(v, "at"), rstr(v, "error"));
                }
                cr_assert_eq(hits, 1, "task %s nominal %lld: %zu records (want exactly 1)", id,
                             (long long)t, hits);
        }
        json_decref(runs);
        json_decref(res);
}

Test(scheduler, misfire_policies_after_downtime) {
        char once[37], skip[37], all[37];
        create(once, "\"schedule\": {\"every\": \"1s\"}, \"misfire\": \"run_once\"");
        create(skip, "\"schedule\": {\"every\": \"1s\"}, \"misfire\": \"skip\"");
        create(all, "\"schedule\": {\"every\": \"1s\"}, \"misfire\": \"run_all\"");
        cr_assert(wait_count(g_runs, once, NULL, NULL, 2, WAIT_MS));
        cr_assert(wait_count(g_runs, skip, NULL, NULL, 2, WAIT_MS));
        cr_assert(wait_count(g_runs, all, NULL, NULL, 2, WAIT_MS));
        cr_assert_eq(WIFEXITED(tbt_daemon_stop(g_pid, SIGTERM)), true);
        g_pid = 0;
        sleep(12); /* the downtime: fires older than 5 s are misfires */
        g_pid = tbt_daemon_start(&g_st, "commands,projector,scheduler");
        int64_t restarted = tb_now_ms();
        /* wait until each task fires on time again */
        const char *ids[] = {once, skip, all};
        for (int k = 0; k < 3; k++) {
                int64_t end = tb_now_ms() + WAIT_MS;
                for (;;) {
                        tbt_reader_poll(g_runs, 200);
                        tbt_reader_poll(g_results, 0);
                        json_t *r = of_task(g_runs, ids[k], "trigger", "SCHEDULE");
                        int64_t last = rint64(json_array_get(r, json_array_size(r) - 1),
                                              "nominal_time");
                        json_decref(r);
                        if (last > restarted + 2000)
                                break;
                        if (tb_now_ms() > end) {
                                dump_log();
                                cr_assert_fail("task %d did not fire again after the restart", k);
                        }
                }
        }
        cr_assert(tbt_reader_drain(g_results, WAIT_MS));
        cr_assert(tbt_reader_drain(g_runs, WAIT_MS));
        for (int k = 0; k < 3; k++) {
                json_t *r = of_task(g_runs, ids[k], NULL, NULL);
                int64_t first = rint64(json_array_get(r, 0), "nominal_time");
                json_decref(r);
                size_t runs, skips, mis;
                assert_exactly_once(ids[k], first, restarted + 2000, &runs, &skips, &mis);
                cr_log_info("task %d: %zu runs, %zu skips, %zu misfire runs", k, runs, skips, mis);
                if (k == 0) {
                        cr_assert_eq(mis, 1, "run_once: exactly one catch-up run");
                        cr_assert_geq(skips, 5, "run_once: the other missed fires are skipped");
                        cr_assert_eq(count_of(g_results, ids[k], "status", "SKIPPED_MISFIRE"), 1,
                                     "run_once: the skipped fires are one range record");
                } else if (k == 1) {
                        cr_assert_eq(mis, 0, "skip: no catch-up run");
                        cr_assert_geq(skips, 6, "skip: every missed fire is recorded");
                        cr_assert_eq(count_of(g_results, ids[k], "status", "SKIPPED_MISFIRE"), 1,
                                     "skip: the missed fires are one range record");
                } else {
                        cr_assert_geq(mis, 6, "run_all: every missed fire runs");
                        cr_assert_eq(skips, 0, "run_all: nothing skipped under the cap");
                }
        }
        for (int k = 0; k < 3; k++)
                assert_unique_runs(ids[k]);
}

Test(scheduler, retries_with_backoff_then_dlq) {
        char id[37];
        create(id, "\"schedule\": {\"every\": \"1h\"}, "
                   "\"retries\": {\"max_attempts\": 3, \"backoff\": \"1s\", \"backoff_max\": \"1m\"}");
        /* "every" fires at its anchor (the creation) first */
        cr_assert(wait_count(g_runs, id, NULL, NULL, 1, WAIT_MS));
        json_t *runs = of_task(g_runs, id, NULL, NULL);
        int64_t nominal = rint64(json_array_get(runs, 0), "nominal_time");
        json_decref(runs);
        tbt_reader_t *dlq = tbt_reader_new(&g_st, TB_TOPIC_DLQ, true);
        for (int attempt = 1; attempt <= 2; attempt++) {
                int64_t failed = tb_now_ms();
                produce_result(id, nominal, attempt, attempt == 1 ? "FAILED" : "TIMED_OUT");
                if (!wait_count(g_runs, id, "trigger", "RETRY", (size_t)attempt, WAIT_MS))
                        dump_log();
                json_t *r = of_task(g_runs, id, "trigger", "RETRY");
                cr_assert_eq(json_array_size(r), (size_t)attempt, "attempt %d not retried",
                             attempt);
                json_t *v = json_array_get(r, (size_t)attempt - 1);
                cr_assert_eq(rint64(v, "attempt"), attempt + 1);
                cr_assert_eq(rint64(v, "nominal_time"), nominal);
                int64_t backoff = 1000LL << (attempt - 1);
                cr_assert_geq(rint64(v, "emitted_at") - failed, backoff - 50,
                              "retry %d came after %lld ms, before its %lld ms backoff",
                              attempt + 1, (long long)(rint64(v, "emitted_at") - failed),
                              (long long)backoff);
                json_decref(r);
        }
        produce_result(id, nominal, 3, "FAILED");
        const json_t *d = tbt_reader_wait(dlq, "task_id", id, WAIT_MS);
        if (!d)
                dump_log();
        cr_assert_not_null(d, "the exhausted run did not reach runs-dlq");
        cr_assert_eq(rint64(d, "attempt"), 3);
        cr_assert_eq(rint64(d, "nominal_time"), nominal);
        int64_t end = tb_now_ms() + 3000;
        while (tb_now_ms() < end)
                tbt_reader_poll(g_runs, 200);
        cr_assert_eq(count_of(g_runs, id, "trigger", "RETRY"), 2, "no attempt 4");
        tbt_reader_free(dlq);
}
