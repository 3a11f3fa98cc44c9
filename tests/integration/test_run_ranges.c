/**
 * @file test_run_ranges.c
 * @brief Fires not run are one record per range (issue 13, item 6), on a real
 *        stack: a taskbusd child (api, commands, projector, scheduler) on a
 *        private topic prefix and database. A task `every 1s` paused for a
 *        minute leaves one SKIPPED_PAUSED RunResult after its resume and one
 *        runs row, shown by the REST API and `taskbus runs`; a crash of the
 *        daemon in the middle of a pause still gives one record; `taskbus
 *        replay` still equals the projection.
 */
#include "bus/bus.h"
#include "scheduler/engine.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 60000

static tbt_stack_t g_st;
static pid_t g_pid;
static int g_port;
static tbt_reader_t *g_runs, *g_results;
static char g_authz[96];

static bool api_up(void *arg) {
        char *out = NULL;
        int rc = tbt_run(&out, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/healthz",
                         g_port);
        bool up = rc == 0 && out && !strcmp(out, "200");
        free(out);
        return up;
}

static void daemon_up(void) {
        g_pid = tbt_daemon_start(&g_st, "api,commands,projector,scheduler");
        cr_assert(tbt_wait_until(api_up, NULL, WAIT_MS), "the API did not come up");
}

static void setup(void) {
        /* a static member gets its partitions back at once after a restart */
        tbt_stack_opts_t o = {
                .partitions = 2,
                .kafka_extra = "session_timeout_ms = 6000; heartbeat_interval_ms = 1000; "
                               "group_instance_id = \"ranges-test-1\";",
        };
        tbt_stack_create(&g_st, &o);
        tbt_stack_user(&g_st, "alice", "ops", g_authz);
        /* the stack's config with the API on a port of our own */
        g_port = tbt_free_port();
        char *out = NULL, *text = NULL, listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", g_port);
        cr_assert_eq(tbt_run(&out, "cat '%s'", g_st.config_path), 0);
        char *at = strstr(out, "127.0.0.1:0");
        cr_assert_not_null(at, "the stack's config has no api.listen: %s", out);
        *at = '\0';
        cr_assert_gt(asprintf(&text, "%s%s%s", out, listen, at + strlen("127.0.0.1:0")), 0);
        free(out);
        unlink(g_st.config_path);
        free(g_st.config_path);
        g_st.config_path = tbt_write_temp(".conf", text);
        free(text);
        daemon_up();
        g_runs = tbt_reader_new(&g_st, TB_TOPIC_RUNS, true);
        g_results = tbt_reader_new(&g_st, TB_TOPIC_RESULTS, true);
}

static void teardown(void) {
        if (g_pid > 0)
                tbt_daemon_stop(g_pid, SIGTERM);
        g_pid = 0;
        tbt_reader_free(g_runs);
        tbt_reader_free(g_results);
        g_runs = g_results = NULL;
        tbt_stack_destroy(&g_st);
}

TestSuite(run_ranges, .init = setup, .fini = teardown, .timeout = 400);

/* ---- helpers ------------------------------------------------------------------ */

static void dump_log(void) {
        char *log = tbt_daemon_log(&g_st);
        cr_log_error("daemon log:\n%s", log ? log : "(none)");
        free(log);
}

/* A REST call as alice; @returns the HTTP status, *body the parsed JSON (or NULL). */
static long rest(const char *method, const char *path, const char *body, json_t **out) {
        char *res = NULL;
        int rc = tbt_run(&res,
                         "curl -s -X %s -H 'Authorization: %s' -H 'Content-Type: application/json' "
                         "%s%s%s -w '\\n%%{http_code}' http://127.0.0.1:%d%s",
                         method, g_authz, body ? "--data '" : "", body ? body : "",
                         body ? "'" : "", g_port, path);
        cr_assert_eq(rc, 0, "curl %s %s: %s", method, path, res ? res : "");
        char *nl = strrchr(res, '\n');
        cr_assert_not_null(nl, "%s", res);
        long status = strtol(nl + 1, NULL, 10);
        *nl = '\0';
        if (out) {
                json_error_t je;
                *out = json_loads(res, 0, &je);
        }
        free(res);
        return status;
}

static void create_every_second(char id[64]) {
        json_t *t = NULL;
        long st = rest("POST", "/v1/tasks",
                       "{\"name\": \"ranges\", \"script\": \"true\", \"security_group\": \"ops\", "
                       "\"schedule\": {\"every\": \"1s\"}}",
                       &t);
        cr_assert_eq(st, 201, "create: %ld", st);
        snprintf(id, 64, "%s", json_string_value(json_object_get(t, "id")));
        json_decref(t);
}

static void task_action(const char *id, const char *action) {
        char path[160];
        snprintf(path, sizeof(path), "/v1/tasks/%s/%s", id, action);
        long st = rest("POST", path, NULL, NULL);
        cr_assert(st == 200 || st == 202, "%s: HTTP %ld", action, st);
}

static const char *rstr(const json_t *r, const char *k) {
        const char *s = json_string_value(json_object_get(r, k));
        return s ? s : "(null)";
}

static int64_t rint64(const json_t *r, const char *k) {
        return (int64_t)json_integer_value(json_object_get(r, k));
}

static bool wait_count(tbt_reader_t *r, const char *task_id, const char *field,
                       const char *value, size_t n) {
        return tbt_reader_wait_count(r, task_id, field, value, n, WAIT_MS);
}

static int64_t sql_int(const char *fmt, const char *arg) {
        char sql[512];
        snprintf(sql, sizeof(sql), fmt, arg);
        char *v = tbt_sql_value(&g_st, sql);
        int64_t n = v ? strtoll(v, NULL, 10) : -1;
        free(v);
        return n;
}

/* The task's one SKIPPED_PAUSED record, once its resume wrote it. */
static json_t *the_range(const char *id) {
        if (!wait_count(g_results, id, "status", "SKIPPED_PAUSED", 1))
                dump_log();
        cr_assert(tbt_reader_drain(g_results, WAIT_MS));
        json_t *skips = tbt_reader_of_task(g_results, id, "status", "SKIPPED_PAUSED");
        cr_assert_eq(json_array_size(skips), 1, "%zu SKIPPED_PAUSED records: want one per range",
                     json_array_size(skips));
        json_t *r = json_incref(json_array_get(skips, 0));
        json_decref(skips);
        return r;
}

/* Every nominal time of \p id from its first run to its last is a run or in
 * the range \p range, exactly once. */
static void assert_accounted(const char *id, const json_t *range) {
        cr_assert(tbt_reader_drain(g_runs, WAIT_MS));
        json_t *runs = tbt_reader_of_task(g_runs, id, NULL, NULL);
        int64_t first = rint64(range, "nominal_time"), last = rint64(range, "last_nominal_time");
        int64_t lo = rint64(json_array_get(runs, 0), "nominal_time");
        int64_t hi = rint64(json_array_get(runs, json_array_size(runs) - 1), "nominal_time");
        cr_assert_lt(lo, first, "runs before the pause");
        cr_assert_gt(hi, last, "runs after the resume");
        for (int64_t t = lo; t <= hi; t += 1000) {
                size_t hits = t >= first && t <= last, i;
                json_t *v;
                json_array_foreach(runs, i, v) hits += rint64(v, "nominal_time") == t;
                cr_assert_eq(hits, 1, "nominal %lld: %zu records (want exactly 1)", (long long)t,
                             hits);
        }
        json_decref(runs);
}

/* A task every 1s that fired, then paused for \p ms (reading run-results
 * meanwhile). @returns when it was paused. */
static int64_t fire_then_pause(char id[64], int64_t ms) {
        create_every_second(id);
        cr_assert(wait_count(g_runs, id, NULL, NULL, 2), "the task does not fire");
        task_action(id, "pause");
        int64_t paused_at = tb_now_ms();
        while (tb_now_ms() < paused_at + ms)
                tbt_reader_poll(g_results, 200);
        return paused_at;
}

/* ---- tests -------------------------------------------------------------------- */

Test(run_ranges, a_minute_paused_is_one_record_one_row_shown_by_rest_and_cli) {
        char id[64];
        /* a minute paused: nothing per fire, on Kafka or in PostgreSQL */
        int64_t paused_at = fire_then_pause(id, 60000);
        cr_assert_eq(tbt_reader_count(g_results, id, "status", "SKIPPED_PAUSED"), 0,
                     "a paused task wrote a record per fire");
        cr_assert_eq(sql_int("SELECT count(*) FROM runs WHERE task_id = '%s' AND status = "
                             "'skipped_paused'", id),
                     0);
        size_t before = tbt_reader_count(g_runs, id, NULL, NULL);
        task_action(id, "resume");
        int64_t resumed_at = tb_now_ms();
        json_t *range = the_range(id);
        int64_t first = rint64(range, "nominal_time"), last = rint64(range, "last_nominal_time");
        int64_t occ = rint64(range, "occurrences");
        cr_log_info("range %lld .. %lld: %lld fires (paused %lld ms)", (long long)first,
                    (long long)last, (long long)occ, (long long)(resumed_at - paused_at));
        cr_assert(occ >= 58 && occ <= 63, "about 60 fires, got %lld", (long long)occ);
        cr_assert_eq(occ, (last - first) / 1000 + 1, "first, last and count agree");
        cr_assert(first >= paused_at - 2000 && first <= paused_at + 2000,
                  "the range starts at the pause");
        cr_assert(last >= resumed_at - 2000 && last <= resumed_at + 1000,
                  "the range ends at the resume");
        char rid[33];
        tb_sched_run_id(id, first, 1, rid);
        cr_assert_str_eq(rstr(range, "run_id"), rid);
        cr_assert(wait_count(g_runs, id, NULL, NULL, before + 2), "no runs after the resume");
        assert_accounted(id, range);

        /* the projection: one row for the range */
        int64_t end = tb_now_ms() + WAIT_MS;
        while (sql_int("SELECT count(*) FROM runs WHERE task_id = '%s' AND status = "
                       "'skipped_paused'",
                       id) < 1 &&
               tb_now_ms() < end)
                usleep(100 * 1000);
        cr_assert_eq(sql_int("SELECT count(*) FROM runs WHERE task_id = '%s' AND status = "
                             "'skipped_paused'", id),
                     1, "one runs row for the paused range");
        cr_assert_eq(sql_int("SELECT occurrences FROM runs WHERE run_id = '%s'", rid), occ);
        cr_assert_eq(sql_int("SELECT (extract(epoch FROM last_nominal_time) * 1000)::bigint "
                             "FROM runs WHERE run_id = '%s'",
                             rid),
                     last);

        /* REST */
        char path[200], want_first[32], want_last[32];
        tb_time_format(first, want_first);
        tb_time_format(last, want_last);
        snprintf(path, sizeof(path), "/v1/runs/%s", rid);
        json_t *run = NULL;
        cr_assert_eq(rest("GET", path, NULL, &run), 200);
        cr_assert_str_eq(rstr(run, "status"), "skipped_paused");
        cr_assert_str_eq(rstr(run, "nominal_time"), want_first);
        cr_assert_str_eq(rstr(run, "last_nominal_time"), want_last);
        cr_assert_eq(rint64(run, "occurrences"), occ);
        json_decref(run);
        snprintf(path, sizeof(path), "/v1/tasks/%s/runs?status=skipped_paused", id);
        json_t *page = NULL;
        cr_assert_eq(rest("GET", path, NULL, &page), 200);
        cr_assert_eq(json_array_size(json_object_get(page, "runs")), 1, "one item for the range");
        json_decref(page);
        /* a run that is not a range says so too */
        snprintf(path, sizeof(path), "/v1/tasks/%s/runs?status=scheduled&limit=1", id);
        cr_assert_eq(rest("GET", path, NULL, &page), 200);
        const json_t *one = json_array_get(json_object_get(page, "runs"), 0);
        cr_assert(json_is_null(json_object_get(one, "last_nominal_time")));
        cr_assert_eq(rint64(one, "occurrences"), 1);
        json_decref(page);

        /* CLI */
        char *out = NULL, want[128];
        snprintf(want, sizeof(want), "%lld fires, %s to %s", (long long)occ, want_first, want_last);
        const char *tok = g_authz + strlen("Bearer ");
        int rc = tbt_run(&out, "TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' %s/bin/taskbus runs get %s",
                         g_port, tok, tbt_build_dir(), rid);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "status:       skipped_paused"), "%s", out);
        cr_assert_not_null(strstr(out, want), "runs get shows the range: %s", out);
        free(out);
        rc = tbt_run(&out, "TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' %s/bin/taskbus runs list %s "
                     "--status skipped_paused",
                     g_port, tok, tbt_build_dir(), id);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, want), "runs list shows the range: %s", out);
        free(out);

        /* replay still equals the projection */
        static const char tasks_sql[] =
                "SELECT coalesce(string_agg(concat_ws('|', id, version, spec::text, paused, "
                "updated_at, event_partition, event_offset), E'\\n' ORDER BY id), '') FROM tasks";
        static const char hist_sql[] =
                "SELECT coalesce(string_agg(concat_ws('|', task_id, version, event_id, type, at, "
                "changed_fields::text, spec::text), E'\\n' ORDER BY task_id, version), '') "
                "FROM task_history";
        char url[1024];
        tbt_stack_new_db(&g_st, "replay", url, sizeof(url));
        rc = tbt_run(&out, "%s/bin/taskbus replay --into \"%s\" --config %s", tbt_build_dir(), url,
                     g_st.config_path);
        cr_assert_eq(rc, 0, "replay failed: %s", out);
        free(out);
        PGconn *rconn = PQconnectdb(url);
        cr_assert_eq(PQstatus(rconn), CONNECTION_OK, "%s", PQerrorMessage(rconn));
        const char *sqls[] = {tasks_sql, hist_sql};
        for (int k = 0; k < 2; k++) {
                PGresult *a = PQexec(g_st.conn, sqls[k]), *b = PQexec(rconn, sqls[k]);
                cr_assert_eq(PQresultStatus(a), PGRES_TUPLES_OK);
                cr_assert_eq(PQresultStatus(b), PGRES_TUPLES_OK);
                cr_assert_str_eq(PQgetvalue(b, 0, 0), PQgetvalue(a, 0, 0),
                                 "replay differs from the projection");
                PQclear(a);
                PQclear(b);
        }
        PQfinish(rconn);
        json_decref(range);
}

Test(run_ranges, a_crash_in_the_middle_of_a_pause_still_gives_one_record) {
        char id[64];
        int64_t paused_at = fire_then_pause(id, 5000);
        /* the whole daemon dies, scheduler included; another one takes over
         * from the projection (paused) and the checkpoint (its last fire) */
        tbt_daemon_stop(g_pid, SIGKILL);
        g_pid = 0;
        daemon_up();
        int64_t back = tb_now_ms();
        while (tb_now_ms() < back + 8000)
                tbt_reader_poll(g_results, 200);
        cr_assert_eq(tbt_reader_count(g_results, id, "status", "SKIPPED_PAUSED"), 0);
        size_t before = tbt_reader_count(g_runs, id, NULL, NULL);
        task_action(id, "resume");
        int64_t resumed_at = tb_now_ms();
        json_t *range = the_range(id);
        int64_t occ = rint64(range, "occurrences");
        int64_t want = (resumed_at - paused_at) / 1000;
        cr_log_info("paused %lld ms across a crash: one range of %lld fires",
                    (long long)(resumed_at - paused_at), (long long)occ);
        cr_assert(occ >= want - 3 && occ <= want + 3, "%lld fires, about %lld expected",
                  (long long)occ, (long long)want);
        cr_assert(wait_count(g_runs, id, NULL, NULL, before + 2), "no runs after the resume");
        assert_accounted(id, range);
        json_decref(range);
}

Test(run_ranges, a_record_of_the_old_schema_is_still_projected) {
        /* a SKIPPED_PAUSED of one fire, written before ranges by python3-avro
         * (schemas/old/RunResult_v1.avsc), as it sits on run-results */
        tb_buf_t olds[2];
        cr_assert_eq(tbt_hex_records("tests/data/old/RunResult_v1.hex", olds, 2), 2);
        rd_kafka_t *prod = tbt_stack_producer(&g_st);
        const char *tid = "6f1c2e4a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
        char err[512];
        cr_assert_eq(tb_bus_produce(prod, g_st.conf, TB_TOPIC_RESULTS, RD_KAFKA_PARTITION_UA, tid,
                                    strlen(tid), olds[0].data, olds[0].len, NULL, 0, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
        rd_kafka_destroy(prod);
        const char *rid = "0123456789abcdef0123456789abcdef";
        int64_t end = tb_now_ms() + WAIT_MS;
        while (sql_int("SELECT count(*) FROM runs WHERE run_id = '%s'", rid) < 1 &&
               tb_now_ms() < end)
                usleep(100 * 1000);
        char sql[300];
        snprintf(sql, sizeof(sql),
                 "SELECT concat_ws('|', status, occurrences, last_nominal_time IS NULL, "
                 "(extract(epoch FROM nominal_time) * 1000)::bigint) FROM runs WHERE run_id = '%s'",
                 rid);
        char *row = tbt_sql_value(&g_st, sql);
        cr_assert_not_null(row, "the old record was not projected");
        cr_assert_str_eq(row, "skipped_paused|1|t|1767225601000", "one fire, no range");
        free(row);
        cr_assert_eq(sql_int("SELECT count(*) FROM quarantine WHERE key = "
                             "convert_to('%s', 'UTF8')",
                             tid),
                     0, "an old record is not poison");
        for (int k = 0; k < 2; k++)
                tb_buf_free(&olds[k]);
}
