/**
 * @file test_runs_api.c
 * @brief Run history through the REST API on a real stack: RunRequests and
 *        RunResults produced straight to runs / run-results (for speed) are
 *        projected by a taskbusd child (projector, archiver, api); then
 *        pagination over 1,000 runs (also while runs are being added),
 *        filters, one run, cancel, log pages and a live tail, and the
 *        security-group wall (404 for everything of another group); the
 *        runs across tasks of the console's dashboard (GET /v1/runs over
 *        one or several groups, /v1/runs/counts, /v1/runs/fire-lag).
 */
#include <criterion/criterion.h>
#include <sys/prctl.h>

#include "bus/bus.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NRUNS 1000
#define TASK "task-runs-api-1"

/* ---- HTTP ------------------------------------------------------------------------- */

typedef struct hres {
        long status;
        tb_buf_t body;
        tb_buf_t hdrs;
        json_t *j;
} hres_t;

static size_t on_data(char *p, size_t s, size_t n, void *ud) {
        tb_buf_append(ud, p, s * n);
        return s * n;
}

static hres_t http(int port, const char *method, const char *path, const char *authz) {
        hres_t r = {0};
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        char url[2048], ah[200];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
        if (authz) {
                snprintf(ah, sizeof(ah), "Authorization: %s", authz);
                h = curl_slist_append(h, ah);
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.hdrs);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
        if (!strcmp(method, "POST"))
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        tb_buf_append(&r.body, "", 1);
        r.body.len--;
        tb_buf_append(&r.hdrs, "", 1);
        json_error_t je;
        r.j = json_loadb(r.body.data, r.body.len, 0, &je);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        return r;
}

static void hfree(hres_t *r) {
        json_decref(r->j);
        tb_buf_free(&r->body);
        tb_buf_free(&r->hdrs);
}

static const char *hheader(const hres_t *r, const char *name, char *buf, size_t size) {
        size_t n = strlen(name);
        for (const char *l = r->hdrs.data; l && *l;) {
                const char *e = strstr(l, "\r\n");
                if (!strncasecmp(l, name, n) && l[n] == ':') {
                        const char *v = l + n + 1;
                        while (*v == ' ')
                                v++;
                        size_t len = e ? (size_t)(e - v) : strlen(v);
                        snprintf(buf, size, "%.*s", (int)len, v);
                        return buf;
                }
                l = e ? e + 2 : NULL;
        }
        return NULL;
}

static const char *ecode(const hres_t *r) {
        const char *c = json_string_value(json_object_get(json_object_get(r->j, "error"), "code"));
        return c ? c : "(none)";
}

#define expect_status(r, st)                                                                  \
        cr_assert_eq((r).status, (st), "expected %d, got %ld: %s", (st), (r).status,          \
                     (r).body.data)

/* ---- the stack ------------------------------------------------------------------- */

static tbt_stack_t st;
static char alice[96], bob[96];
static int port;
static pid_t daemon_pid;
static rd_kafka_t *prod;

static pid_t daemon_start(const char *conf, const char *roles) {
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                /* a daemon never outlives its test, even one that failed in setup */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(st.log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                        close(fd);
                }
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                unsetenv("TASKBUS_KAFKA");
                unsetenv("TASKBUS_API_LISTEN");
                execl(bin, bin, "--config", conf, "--roles", roles, (char *)NULL);
                _exit(127);
        }
        return pid;
}

static bool api_up(void *arg) {
        hres_t r = http(port, "GET", "/healthz", NULL);
        bool up = r.status != 0;
        hfree(&r);
        return up;
}

static char *conf_path;

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 3});
        tbt_stack_user(&st, "alice", "ga", alice);
        tbt_stack_user(&st, "bob", "gb", bob);
        port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = 3; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; rate = 100000.0; "
                              "burst = 100000; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        daemon_pid = daemon_start(conf_path, "projector,archiver,api");
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API did not come up");
        prod = tbt_stack_producer(&st);
}

static void teardown(void) {
        if (prod) {
                rd_kafka_flush(prod, 10000);
                rd_kafka_destroy(prod);
                prod = NULL;
        }
        if (daemon_pid > 0) {
                int ws = tbt_daemon_stop(daemon_pid, SIGTERM);
                daemon_pid = 0;
                cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
                          "taskbusd did not exit cleanly (0x%x)", ws);
        }
        if (conf_path) {
                unlink(conf_path);
                free(conf_path);
                conf_path = NULL;
        }
        tbt_stack_destroy(&st);
        curl_global_cleanup();
}

TestSuite(runs_api, .init = setup, .fini = teardown, .timeout = 300);

/* ---- producing runs ------------------------------------------------------------ */

static void produce(tb_topic_t topic, tb_schema_id_t schema, const char *key, json_t *v) {
        char err[1024];
        tb_buf_t b = {0};
        cr_assert_eq(tb_serde_encode(schema, v, &b, err, sizeof(err)), TB_OK, "%s", err);
        json_decref(v);
        cr_assert_eq(tb_bus_produce(prod, st.conf, topic, RD_KAFKA_PARTITION_UA, key,
                                    strlen(key), b.data, b.len, NULL, 0, false, err, sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&b);
}

/* A RunRequest emitted (scheduled_at) at \p emitted: the fire lag is emitted - nominal. */
static void run_request_emitted(const char *task, const char *group, const char *run_id,
                                int64_t nominal, int attempt, int64_t log_retention_ms,
                                int64_t emitted);

static void run_request(const char *task, const char *group, const char *run_id,
                        int64_t nominal, int attempt, int64_t log_retention_ms) {
        run_request_emitted(task, group, run_id, nominal, attempt, log_retention_ms, nominal);
}

static void run_request_emitted(const char *task, const char *group, const char *run_id,
                                int64_t nominal, int attempt, int64_t log_retention_ms,
                                int64_t emitted) {
        json_t *snap = json_pack("{s:s, s:s, s:[], s:s, s:s, s:{}, s:I, s:s, s:i, s:I}", "name",
                                 "n", "script", "echo", "argv", "security_group", group,
                                 "executor", "shell", "executor_options", "expiry_ms",
                                 (json_int_t)3600000, "overlap", "ALLOW", "max_attempts", 1,
                                 "log_retention_ms", (json_int_t)log_retention_ms);
        json_t *v = json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:o}", "run_id", run_id,
                              "task_id", task, "task_version", (json_int_t)1, "nominal_time",
                              (json_int_t)nominal, "attempt", attempt, "trigger", "SCHEDULE",
                              "emitted_at", (json_int_t)emitted, "snapshot", snap);
        produce(TB_TOPIC_RUNS, TB_SCHEMA_RUN_REQUEST, task, v);
}

static void run_result(const char *task, const char *run_id, int64_t nominal, int attempt,
                       const char *status, int exit_code, int64_t finished) {
        bool running = !strcmp(status, "RUNNING");
        json_t *v = json_pack(
                "{s:s, s:s, s:I, s:i, s:s, s:o, s:n, s:I, s:o, s:s, s:s, s:I, s:b, s:o, s:I}",
                "run_id", run_id, "task_id", task, "nominal_time", (json_int_t)nominal,
                "attempt", attempt, "status", status, "exit_code",
                running ? json_null() : json_integer(exit_code), "signal", "started_at",
                (json_int_t)nominal + 10, "finished_at",
                running ? json_null() : json_integer(finished), "executor", "shell", "host",
                "h1", "output_bytes", (json_int_t)(running ? 0 : 42), "infra_error", 0, "error",
                !strcmp(status, "FAILED") ? json_string("exit status 3") : json_null(), "at",
                (json_int_t)tb_now_ms());
        produce(TB_TOPIC_RESULTS, TB_SCHEMA_RUN_RESULT, task, v);
}

static void log_chunk(const char *task, const char *run_id, int seq, const char *stream,
                      const char *data, bool eof) {
        json_t *v = json_pack("{s:s, s:s, s:i, s:s, s:I, s:s, s:b}", "run_id", run_id, "task_id",
                              task, "seq", seq, "stream", stream, "at", (json_int_t)tb_now_ms(),
                              "data", data, "eof", eof);
        produce(TB_TOPIC_LOGS, TB_SCHEMA_LOG_CHUNK, run_id, v);
        rd_kafka_flush(prod, 10000);
}

static int64_t base_ms;

static void run_id_of(int i, char out[40]) { snprintf(out, 40, "r%04d", i); }
/* pairs of runs share a nominal time (attempt 1 and 2): the keyset's tie-break */
static int64_t nominal_of(int i) { return base_ms + (int64_t)(i / 2) * 60000; }
static const char *status_of(int i) {
        static const char *const s[] = {"SUCCEEDED", "FAILED", "RUNNING", NULL};
        return s[i % 4]; /* NULL: only the RunRequest (scheduled) */
}

typedef struct sqlwait {
        const char *sql;
        const char *want;
} sqlwait_t;

static bool sql_is(void *arg) {
        sqlwait_t *w = arg;
        char *v = tbt_sql_value(&st, w->sql);
        bool ok = v && !strcmp(v, w->want);
        free(v);
        return ok;
}

static void wait_sql(const char *sql, const char *want, int ms) {
        sqlwait_t w = {sql, want};
        if (!tbt_wait_until(sql_is, &w, ms)) {
                char *v = tbt_sql_value(&st, sql);
                cr_assert_fail("waited %d ms for `%s` = %s; got %s", ms, sql, want,
                               v ? v : "(no row)");
        }
}

static void produce_history(void) {
        char id[40];
        base_ms = (tb_now_ms() / 1000) * 1000 - (int64_t)NRUNS * 60000;
        for (int i = 0; i < NRUNS; i++) {
                run_id_of(i, id);
                const char *s = status_of(i);
                int64_t nom = nominal_of(i);
                /* every tenth result is produced before its request: the
                 * projector sees them in either order */
                if (s && i % 10 == 0)
                        run_result(TASK, id, nom, i % 2 + 1, s, i % 4 == 1 ? 3 : 0, nom + 500);
                run_request(TASK, "ga", id, nom, i % 2 + 1, 3600000);
                if (s && i % 10 != 0)
                        run_result(TASK, id, nom, i % 2 + 1, s, i % 4 == 1 ? 3 : 0, nom + 500);
                /* a late RUNNING after the final status must not win */
                if (s && strcmp(s, "RUNNING") && i % 7 == 0)
                        run_result(TASK, id, nom, i % 2 + 1, "RUNNING", 0, 0);
        }
        rd_kafka_flush(prod, 30000);
        wait_sql("SELECT count(*) FROM runs WHERE task_id = '" TASK "'", "1000", 90000);
        wait_sql("SELECT count(*) FROM runs WHERE task_id = '" TASK "' AND status = 'succeeded' "
                 "AND security_group = 'ga' AND executor = 'shell'",
                 "250", 90000);
        wait_sql("SELECT count(*) FROM runs WHERE task_id = '" TASK "' AND status = 'failed' "
                 "AND exit_code = 3 AND log_expires_at IS NOT NULL",
                 "250", 90000);
        wait_sql("SELECT count(*) FROM runs WHERE task_id = '" TASK "' AND status = 'running'",
                 "250", 90000);
        wait_sql("SELECT count(*) FROM runs WHERE task_id = '" TASK "' AND status = 'scheduled'",
                 "250", 90000);
}

/* A run's nominal_time in epoch ms (the test fails if it is not RFC 3339). */
static int64_t run_nominal(json_t *run) {
        int64_t nom = 0;
        char e[256];
        cr_assert_eq(tb_time_parse(json_string_value(json_object_get(run, "nominal_time")), &nom,
                                   e, sizeof(e)),
                     TB_OK, "%s", e);
        return nom;
}

/* ---- pagination --------------------------------------------------------------- */

Test(runs_api, pagination_filters_and_visibility) {
        produce_history();
        char id[40], path[512], hb[64];

        /* every run exactly once across pages, newest first, while runs are
         * being added above and below the pages already read */
        static bool seen[NRUNS];
        memset(seen, 0, sizeof(seen));
        char *cursor = NULL;
        int pages = 0, total = 0, added = 0;
        int64_t last_nom = INT64_MAX;
        char last_id[64] = "~";
        json_t *ids = json_object();
        for (;;) {
                if (cursor)
                        snprintf(path, sizeof(path), "/v1/tasks/" TASK "/runs?limit=37&cursor=%s",
                                 cursor);
                else
                        snprintf(path, sizeof(path), "/v1/tasks/" TASK "/runs?limit=37");
                hres_t r = http(port, "GET", path, alice);
                expect_status(r, 200);
                size_t i;
                json_t *run;
                json_array_foreach(json_object_get(r.j, "runs"), i, run) {
                        const char *rid = json_string_value(json_object_get(run, "id"));
                        int64_t nom = run_nominal(run);
                        cr_assert_null(json_object_get(ids, rid), "run %s listed twice", rid);
                        json_object_set_new(ids, rid, json_true());
                        /* newest first: (nominal_time, id) strictly descending */
                        cr_assert(nom < last_nom || (nom == last_nom && strcmp(rid, last_id) < 0),
                                  "order broken at %s", rid);
                        last_nom = nom;
                        snprintf(last_id, sizeof(last_id), "%s", rid);
                        int k;
                        if (sscanf(rid, "r%4d", &k) == 1 && rid[0] == 'r' && strlen(rid) == 5) {
                                cr_assert(!seen[k]);
                                seen[k] = true;
                                total++;
                        }
                }
                free(cursor);
                cursor = NULL;
                const char *next = json_string_value(json_object_get(r.j, "next_cursor"));
                if (next)
                        cursor = strdup(next);
                hfree(&r);
                pages++;
                /* new runs arrive meanwhile: newer than everything (never in
                 * the pages to come) and older than everything (in the last
                 * pages once projected) */
                if (pages < 20) {
                        for (int k = 0; k < 3; k++, added++) {
                                snprintf(id, sizeof(id), "new-%03d", added);
                                run_request(TASK, "ga", id,
                                            added % 2 ? tb_now_ms() + added * 1000
                                                      : base_ms - (added + 1) * 60000,
                                            1, 3600000);
                        }
                        rd_kafka_flush(prod, 10000);
                }
                if (!cursor)
                        break;
        }
        cr_assert_eq(total, NRUNS, "%d of %d runs listed", total, NRUNS);
        cr_assert_geq(pages, NRUNS / 37);
        json_decref(ids);

        /* filters */
        hres_t r = http(port, "GET", "/v1/tasks/" TASK "/runs?status=failed&limit=500", alice);
        expect_status(r, 200);
        size_t i;
        json_t *run;
        int failed = 0;
        json_array_foreach(json_object_get(r.j, "runs"), i, run) {
                cr_assert_str_eq(json_string_value(json_object_get(run, "status")), "failed");
                cr_assert_eq(json_integer_value(json_object_get(run, "exit_code")), 3);
                failed++;
        }
        cr_assert_eq(failed, 250);
        cr_assert(json_is_null(json_object_get(r.j, "next_cursor")));
        hfree(&r);
        r = http(port, "GET", "/v1/tasks/" TASK "/runs?status=SUCCEEDED,running&limit=500",
                 alice);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "runs")), 500);
        hfree(&r);
        /* a window of nominal times: [since, until) holds runs 100..199 */
        char since[32], until[32];
        tb_time_format(nominal_of(100), since);
        tb_time_format(nominal_of(200), until);
        snprintf(path, sizeof(path), "/v1/tasks/" TASK "/runs?since=%s&until=%s&limit=500",
                 since, until);
        r = http(port, "GET", path, alice);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "runs")), 100);
        hfree(&r);

        /* bad input: 400 naming the parameter */
        const char *bad[][2] = {
                {"/v1/tasks/" TASK "/runs?status=done", "status"},
                {"/v1/tasks/" TASK "/runs?limit=0", "limit"},
                {"/v1/tasks/" TASK "/runs?limit=501", "limit"},
                {"/v1/tasks/" TASK "/runs?since=yesterday", "since"},
                {"/v1/tasks/" TASK "/runs?cursor=garbage", "cursor"},
                {"/v1/tasks/" TASK "/runs?colour=red", "colour"},
        };
        for (size_t k = 0; k < TB_ARRAY_LEN(bad); k++) {
                r = http(port, "GET", bad[k][0], alice);
                expect_status(r, 400);
                cr_assert_str_eq(json_string_value(json_object_get(
                                         json_object_get(r.j, "error"), "field")),
                                 bad[k][1]);
                hfree(&r);
        }

        /* one run */
        run_id_of(1, id);
        snprintf(path, sizeof(path), "/v1/runs/%s", id);
        r = http(port, "GET", path, alice);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "failed");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "task_id")), TASK);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "attempt")), 2);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "executor")), "shell");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "host")), "h1");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "error")), "exit status 3");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "trigger")), "schedule");
        cr_assert_eq(json_integer_value(json_object_get(r.j, "output_bytes")), 42);
        cr_assert(json_is_string(json_object_get(r.j, "started_at")));
        cr_assert(json_is_string(json_object_get(r.j, "finished_at")));
        cr_assert(json_is_string(json_object_get(r.j, "log_expires_at")));
        hfree(&r);
        /* the late RUNNING did not overwrite the final status */
        run_id_of(28, id); /* 28 % 7 == 0, 28 % 4 == 0: succeeded */
        snprintf(path, sizeof(path), "/v1/runs/%s", id);
        r = http(port, "GET", path, alice);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "succeeded");
        hfree(&r);

        /* another group's member: 404 for the list, a run, its log, the
         * live stream and cancel; the same answer as an unknown id */
        const char *hidden[][2] = {
                {"GET", "/v1/tasks/" TASK "/runs"},
                {"GET", "/v1/runs/r0002"},
                {"GET", "/v1/runs/r0002/log"},
                {"GET", "/v1/runs/r0002/log?follow=true"},
                {"POST", "/v1/runs/r0002/cancel"},
                {"GET", "/v1/runs/no-such-run"},
                {"GET", "/v1/tasks/no-such-task/runs"},
        };
        for (size_t k = 0; k < TB_ARRAY_LEN(hidden); k++) {
                r = http(port, hidden[k][0], hidden[k][1], k < 5 ? bob : alice);
                expect_status(r, 404);
                cr_assert_str_eq(ecode(&r), "not_found");
                hfree(&r);
        }
        r = http(port, "GET", "/v1/tasks/" TASK "/runs", NULL);
        expect_status(r, 401);
        hfree(&r);
        (void)hb;
}

/* ---- cancel ---------------------------------------------------------------------- */

Test(runs_api, cancel) {
        int64_t nom = tb_now_ms() - 5000;
        run_request("task-c", "ga", "c-done", nom, 1, 3600000);
        run_result("task-c", "c-done", nom, 1, "SUCCEEDED", 0, nom + 100);
        run_request("task-c", "ga", "c-running", nom, 2, 3600000);
        run_result("task-c", "c-running", nom, 2, "RUNNING", 0, 0);
        run_request("task-c", "ga", "c-waiting", nom + 1, 1, 3600000);
        rd_kafka_flush(prod, 10000);
        wait_sql("SELECT string_agg(run_id || '=' || status, ',' ORDER BY run_id) FROM runs "
                 "WHERE task_id = 'task-c'",
                 "c-done=succeeded,c-running=running,c-waiting=scheduled", 60000);
        hres_t r = http(port, "POST", "/v1/runs/c-done/cancel", alice);
        expect_status(r, 409);
        cr_assert(strstr(r.body.data, "already finished"), "%s", r.body.data);
        hfree(&r);
        r = http(port, "POST", "/v1/runs/c-waiting/cancel", alice);
        expect_status(r, 409);
        cr_assert(strstr(r.body.data, "no executor"), "%s", r.body.data);
        hfree(&r);
        /* the executor holds a running claim: the request is recorded for it */
        free(tbt_sql_value(&st, "INSERT INTO run_claims (run_id, task_id, executor_id, "
                                "lease_until) VALUES ('c-running', 'task-c', 'ex-test', "
                                "now() + interval '1 hour') RETURNING run_id"));
        r = http(port, "POST", "/v1/runs/c-running/cancel", bob);
        expect_status(r, 404);
        hfree(&r);
        r = http(port, "POST", "/v1/runs/c-running/cancel", alice);
        expect_status(r, 202);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "cancelling");
        hfree(&r);
        char *v = tbt_sql_value(&st, "SELECT cancel_requested::text || ' ' || cancel_reason "
                                     "FROM run_claims WHERE run_id = 'c-running'");
        cr_assert_str_eq(v, "true cancelled by alice through the API");
        free(v);
}

/* ---- logs: pages and a live tail -------------------------------------------------- */

typedef struct tail {
        int port;
        const char *path;
        const char *authz;
        tb_buf_t body;
        long status;
        int64_t first_data_ms; /* when "live-1" arrived */
        bool done;
        pthread_mutex_t mu;
} tail_t;

static size_t tail_data(char *p, size_t s, size_t n, void *ud) {
        tail_t *t = ud;
        pthread_mutex_lock(&t->mu);
        tb_buf_append(&t->body, p, s * n);
        tb_buf_append(&t->body, "", 1);
        t->body.len--;
        if (!t->first_data_ms && strstr(t->body.data, "live-1"))
                t->first_data_ms = tb_now_ms();
        pthread_mutex_unlock(&t->mu);
        return s * n;
}

static void *tail_main(void *arg) {
        tail_t *t = arg;
        CURL *c = curl_easy_init();
        char url[512], ah[200];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", t->port, t->path);
        snprintf(ah, sizeof(ah), "Authorization: %s", t->authz);
        struct curl_slist *h = curl_slist_append(NULL, ah);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tail_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &t->status);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        pthread_mutex_lock(&t->mu);
        t->done = true;
        pthread_mutex_unlock(&t->mu);
        return NULL;
}

static bool tail_has(void *arg) {
        tail_t *t = arg;
        pthread_mutex_lock(&t->mu);
        bool ok = t->first_data_ms != 0;
        pthread_mutex_unlock(&t->mu);
        return ok;
}

static bool tail_done(void *arg) {
        tail_t *t = arg;
        pthread_mutex_lock(&t->mu);
        bool ok = t->done;
        pthread_mutex_unlock(&t->mu);
        return ok;
}

Test(runs_api, log_pages_and_live_tail) {
        int64_t nom = tb_now_ms() - 1000;
        run_request("task-l", "ga", "l-1", nom, 1, 3600000);
        run_result("task-l", "l-1", nom, 1, "RUNNING", 0, 0);
        rd_kafka_flush(prod, 10000);
        log_chunk("task-l", "l-1", 0, "STDOUT", "hello ", false);
        log_chunk("task-l", "l-1", 1, "STDERR", "oops\n", false);
        log_chunk("task-l", "l-1", 2, "STDOUT", "world\n", false);
        wait_sql("SELECT count(*) FROM run_logs WHERE run_id = 'l-1'", "3", 60000);
        wait_sql("SELECT status FROM runs WHERE run_id = 'l-1'", "running", 60000);

        char hb[64];
        hres_t r = http(port, "GET", "/v1/runs/l-1/log", alice);
        expect_status(r, 200);
        cr_assert_str_eq(r.body.data, "hello oops\nworld\n");
        cr_assert_str_eq(hheader(&r, "X-Log-Next-Offset", hb, sizeof(hb)), "17");
        cr_assert_str_eq(hheader(&r, "X-Log-Complete", hb, sizeof(hb)), "false");
        cr_assert(strstr(hheader(&r, "Content-Type", hb, sizeof(hb)), "text/plain"));
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-1/log?stream=stdout", alice);
        expect_status(r, 200);
        cr_assert_str_eq(r.body.data, "hello world\n");
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-1/log?offset=3&limit=5", alice);
        expect_status(r, 200);
        cr_assert_str_eq(r.body.data, "lo oo");
        cr_assert_str_eq(hheader(&r, "X-Log-Next-Offset", hb, sizeof(hb)), "8");
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-1/log?offset=100", alice);
        expect_status(r, 200);
        cr_assert_eq(r.body.len, 0);
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-1/log?stream=video", alice);
        expect_status(r, 400);
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-1/log?offset=-1", alice);
        expect_status(r, 400);
        hfree(&r);

        /* a live tail from byte 6: the rest so far, then new output as it is
         * archived, and the end of the stream with the run's last chunk */
        tail_t t = {.port = port, .path = "/v1/runs/l-1/log?follow=true&offset=6",
                    .authz = alice};
        pthread_mutex_init(&t.mu, NULL);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, tail_main, &t), 0);
        int64_t sent = tb_now_ms();
        log_chunk("task-l", "l-1", 3, "STDOUT", "live-1\n", false);
        cr_assert(tbt_wait_until(tail_has, &t, 20000), "live output did not arrive");
        int64_t latency = t.first_data_ms - sent;
        cr_assert_lt(latency, 1000, "live output took %" PRId64 " ms", latency);
        fprintf(stderr, "runs_api: live tail latency (produce -> client) %" PRId64 " ms\n",
                latency);
        cr_assert(!tail_done(&t), "the tail ended while the run goes on");
        log_chunk("task-l", "l-1", 4, "STDOUT", "live-2\n", false);
        log_chunk("task-l", "l-1", 5, "SYSTEM", "", true);
        cr_assert(tbt_wait_until(tail_done, &t, 20000), "the tail did not end at eof");
        pthread_join(th, NULL);
        cr_assert_eq(t.status, 200);
        cr_assert_str_eq(t.body.data, "oops\nworld\nlive-1\nlive-2\n");
        tb_buf_free(&t.body);
        pthread_mutex_destroy(&t.mu);
        r = http(port, "GET", "/v1/runs/l-1/log", alice);
        cr_assert_str_eq(hheader(&r, "X-Log-Complete", hb, sizeof(hb)), "true");
        hfree(&r);

        /* expiry: the final result sets log_expires_at (projector), the
         * archiver settles it on the rows and deletes them once past */
        run_request("task-l", "ga", "l-2", nom, 2, 1000);
        run_result("task-l", "l-2", nom, 2, "SUCCEEDED", 0, tb_now_ms());
        rd_kafka_flush(prod, 10000);
        log_chunk("task-l", "l-2", 0, "STDOUT", "short-lived\n", true);
        wait_sql("SELECT log_purged_at IS NOT NULL FROM runs WHERE run_id = 'l-2'", "t", 60000);
        wait_sql("SELECT count(*) FROM run_logs WHERE run_id = 'l-2'", "0", 60000);
        r = http(port, "GET", "/v1/runs/l-2/log", alice);
        expect_status(r, 410);
        cr_assert_str_eq(ecode(&r), "gone");
        cr_assert(strstr(r.body.data, "expired at"), "%s", r.body.data);
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-2/log", bob);
        expect_status(r, 404);
        hfree(&r);
        r = http(port, "GET", "/v1/runs/l-2", alice);
        expect_status(r, 200);
        cr_assert(json_is_true(json_object_get(r.j, "log_expired")));
        hfree(&r);
}

/* ---- the run queue: queued runs and their place ------------------------------------ */

Test(runs_api, a_queued_run_says_queued_and_its_place) {
        int64_t nom = tb_now_ms() - 5000;
        run_request("task-q", "ga", "q-a", nom, 1, 3600000);
        run_request("task-q", "ga", "q-b", nom + 1, 1, 3600000);
        rd_kafka_flush(prod, 10000);
        wait_sql("SELECT string_agg(run_id || '=' || status, ',' ORDER BY run_id) FROM runs "
                 "WHERE task_id = 'task-q'",
                 "q-a=scheduled,q-b=scheduled", 60000);
        /* as an executor enqueues them (taskbus_enqueue_run(), the run queue) */
        free(tbt_sql_value(&st, "SELECT taskbus_enqueue_run('q-a', 'task-q', 'ex-test', 0, 1, "
                                "'shell', 'ga', 'FORBID', '\\x00'::bytea)"));
        free(tbt_sql_value(&st, "SELECT taskbus_enqueue_run('q-b', 'task-q', 'ex-test', 0, 1, "
                                "'shell', 'ga', 'FORBID', '\\x00'::bytea)"));
        hres_t r = http(port, "GET", "/v1/runs/q-b", alice);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "queued");
        cr_assert_eq(json_integer_value(json_object_get(r.j, "queue_position")), 2);
        hfree(&r);
        /* q-a leaves the queue: q-b is next */
        free(tbt_sql_value(&st, "UPDATE run_claims SET state = 'running' WHERE run_id = 'q-a'"));
        r = http(port, "GET", "/v1/runs/q-b", alice);
        expect_status(r, 200);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "queue_position")), 1);
        hfree(&r);
        r = http(port, "GET", "/v1/runs/q-a", alice);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "scheduled");
        cr_assert_null(json_object_get(r.j, "queue_position"), "only queued runs have a place");
        hfree(&r);
        /* a queued run can be cancelled: the next take finishes it */
        r = http(port, "POST", "/v1/runs/q-b/cancel", alice);
        expect_status(r, 202);
        hfree(&r);
}

/* ---- runs across tasks: GET /v1/runs, /v1/runs/counts, /v1/runs/fire-lag ------------- */

#define XA 120 /* runs of group ga, over three tasks */
#define XC 15  /* runs of group gc */
#define XB 20  /* runs of group gb */

static const char *x_status(int i) {
        static const char *const s[] = {"SUCCEEDED", "FAILED", "SUCCEEDED", "TIMED_OUT", "RUNNING"};
        return s[i % 5];
}

/* Every run of \p path's pages (limit \p limit) for \p who, checking the order
 * (nominal_time, id) strictly descending and that no run comes twice; the
 * runs' ids go into \p ids (an object id -> group). @returns the pages read. */
static int x_pages(const char *path, int limit, const char *who, json_t *ids) {
        char url[1024];
        char *cursor = NULL;
        int64_t last_nom = INT64_MAX;
        char last_id[64] = "~";
        int pages = 0;
        do {
                snprintf(url, sizeof(url), "%s%slimit=%d%s%s", path, strchr(path, '?') ? "&" : "?",
                         limit, cursor ? "&cursor=" : "", cursor ? cursor : "");
                hres_t r = http(port, "GET", url, who);
                expect_status(r, 200);
                json_t *runs = json_object_get(r.j, "runs"), *run;
                cr_assert_leq(json_array_size(runs), (size_t)limit);
                size_t i;
                json_array_foreach(runs, i, run) {
                        const char *rid = json_string_value(json_object_get(run, "id"));
                        int64_t nom = run_nominal(run);
                        cr_assert(nom < last_nom || (nom == last_nom && strcmp(rid, last_id) < 0),
                                  "%s: order broken at %s", path, rid);
                        cr_assert_null(json_object_get(ids, rid), "%s: run %s listed twice", path,
                                       rid);
                        json_object_set(ids, rid, json_object_get(run, "security_group"));
                        last_nom = nom;
                        snprintf(last_id, sizeof(last_id), "%s", rid);
                }
                free(cursor);
                const char *next = json_string_value(json_object_get(r.j, "next_cursor"));
                cursor = next ? strdup(next) : NULL;
                hfree(&r);
                pages++;
        } while (cursor);
        return pages;
}

static int x_count_group(json_t *ids, const char *group) {
        const char *k;
        json_t *v;
        int n = 0;
        json_object_foreach(ids, k, v) n += !strcmp(json_string_value(v), group);
        return n;
}

static json_int_t x_counted(const hres_t *r, const char *what, const char *status) {
        json_t *v = json_object_get(json_object_get(r->j, what), status);
        cr_assert(json_is_integer(v), "%s.%s missing in %s", what, status, r->body.data);
        return json_integer_value(v);
}

Test(runs_api, across_tasks_counts_fire_lag_and_groups) {
        char carol[96], id[40], task[40], path[512], since[32], until[32];
        tbt_stack_user(&st, "carol", "ga,gc", carol);
        /* ga: three tasks, runs a minute apart over the last two hours, pairs
         * of runs of two tasks at one nominal time (the keyset's tie-break);
         * gc and gb in between. Fire lag: scheduled_at - nominal_time. */
        int64_t now = (tb_now_ms() / 60000) * 60000, base = now - 100 * 60000;
        int want_failed = 0;
        for (int i = 0; i < XA; i++) {
                snprintf(id, sizeof(id), "xa-%03d", i);
                snprintf(task, sizeof(task), "x-task-%d", i % 3);
                int64_t nom = base + (int64_t)(i / 2) * 60000;
                run_request_emitted(task, "ga", id, nom, 1, 3600000, nom + 100 * (i % 4));
                run_result(task, id, nom, 1, x_status(i), i % 5 == 1 ? 3 : 0, nom + 500);
                want_failed += !strcmp(x_status(i), "FAILED");
        }
        for (int i = 0; i < XC; i++) {
                snprintf(id, sizeof(id), "xc-%03d", i);
                run_request("x-task-c", "gc", id, base + (int64_t)i * 7 * 60000 + 30000, 1, 3600000);
        }
        for (int i = 0; i < XB; i++) {
                snprintf(id, sizeof(id), "xb-%03d", i);
                int64_t nom = now - 50 * 60000 + (int64_t)i * 60000;
                /* a lag alice must never see in her chart */
                run_request_emitted("x-task-b", "gb", id, nom, 1, 3600000, nom + 50000);
                run_result("x-task-b", id, nom, 1, "FAILED", 1, nom + 500);
        }
        /* ga, the last minute but one: lags 100, 200 and 3000 ms, and a retry
         * and a run-now-like second attempt that the lag leaves out */
        int64_t lagmin = now - 2 * 60000;
        run_request_emitted("x-task-l", "ga", "xl-1", lagmin + 1000, 1, 3600000, lagmin + 1100);
        run_request_emitted("x-task-l", "ga", "xl-2", lagmin + 2000, 1, 3600000, lagmin + 2200);
        run_request_emitted("x-task-l", "ga", "xl-3", lagmin + 3000, 1, 3600000, lagmin + 6000);
        run_request_emitted("x-task-l", "ga", "xl-4", lagmin + 3000, 2, 3600000, lagmin + 40000);
        rd_kafka_flush(prod, 30000);
        wait_sql("SELECT count(*) FROM runs WHERE run_id LIKE 'x%' AND security_group <> ''",
                 "159", 90000);
        wait_sql("SELECT count(*) FROM runs WHERE run_id LIKE 'x_-%' AND status = 'scheduled'",
                 "19", 90000);

        /* alice (ga): every ga run once, in order, and nothing else */
        json_t *ids = json_object();
        int pages = x_pages("/v1/runs", 7, alice, ids);
        cr_assert_eq(json_object_size(ids), XA + 4, "alice saw %zu runs", json_object_size(ids));
        cr_assert_eq(x_count_group(ids, "ga"), XA + 4);
        cr_assert_geq(pages, (XA + 4) / 7);
        json_decref(ids);
        /* carol (ga, gc): both groups merged into one order */
        ids = json_object();
        x_pages("/v1/runs", 11, carol, ids);
        cr_assert_eq(x_count_group(ids, "ga"), XA + 4);
        cr_assert_eq(x_count_group(ids, "gc"), XC);
        cr_assert_eq(json_object_size(ids), XA + 4 + XC);
        json_decref(ids);
        /* one of her groups */
        ids = json_object();
        x_pages("/v1/runs?security_group=gc", 4, carol, ids);
        cr_assert_eq(x_count_group(ids, "gc"), XC);
        cr_assert_eq(json_object_size(ids), XC);
        json_decref(ids);
        /* bob (gb) sees only his */
        ids = json_object();
        x_pages("/v1/runs", 50, bob, ids);
        cr_assert_eq(json_object_size(ids), XB);
        cr_assert_eq(x_count_group(ids, "gb"), XB);
        json_decref(ids);
        /* a group one is not in: 403 naming the field, never its runs */
        hres_t r = http(port, "GET", "/v1/runs?security_group=gb", alice);
        expect_status(r, 403);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.j, "error"),
                                                           "field")),
                         "security_group");
        hfree(&r);

        /* filters: status (over several pages), a window of nominal times */
        ids = json_object();
        x_pages("/v1/runs?status=failed", 9, alice, ids);
        cr_assert_eq(json_object_size(ids), (size_t)want_failed);
        json_decref(ids);
        r = http(port, "GET", "/v1/runs?status=running&limit=500", alice);
        expect_status(r, 200);
        size_t i;
        json_t *run;
        json_array_foreach(json_object_get(r.j, "runs"), i, run) {
                cr_assert_str_eq(json_string_value(json_object_get(run, "status")), "running");
                cr_assert_str_eq(json_string_value(json_object_get(run, "security_group")), "ga");
                /* no tasks row in this stack (runs only): the name is null */
                cr_assert(json_is_null(json_object_get(run, "task_name")));
        }
        cr_assert_eq(json_array_size(json_object_get(r.j, "runs")), XA / 5);
        hfree(&r);
        /* [since, until) = minutes 10..19 of base: runs 20..39 of ga */
        tb_time_format(base + 10 * 60000, since);
        tb_time_format(base + 20 * 60000, until);
        snprintf(path, sizeof(path), "/v1/runs?since=%s&until=%s", since, until);
        ids = json_object();
        x_pages(path, 6, alice, ids);
        cr_assert_eq(json_object_size(ids), 20);
        cr_assert_not_null(json_object_get(ids, "xa-020"));
        cr_assert_not_null(json_object_get(ids, "xa-039"));
        cr_assert_null(json_object_get(ids, "xa-040"));
        json_decref(ids);

        /* counts per status over a range, per caller */
        tb_time_format(base - 60000, since);
        tb_time_format(now + 60000, until);
        snprintf(path, sizeof(path), "/v1/runs/counts?since=%s&until=%s", since, until);
        r = http(port, "GET", path, alice);
        expect_status(r, 200);
        cr_assert_eq(x_counted(&r, "counts", "succeeded"), XA * 2 / 5);
        cr_assert_eq(x_counted(&r, "counts", "failed"), want_failed);
        cr_assert_eq(x_counted(&r, "counts", "timed_out"), XA / 5);
        cr_assert_eq(x_counted(&r, "counts", "running"), XA / 5);
        cr_assert_eq(x_counted(&r, "counts", "scheduled"), 4);
        cr_assert_eq(x_counted(&r, "counts", "skipped_paused"), 0);
        cr_assert_eq(x_counted(&r, "fires", "failed"), want_failed);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "total")), XA + 4);
        hfree(&r);
        r = http(port, "GET", path, bob);
        expect_status(r, 200);
        cr_assert_eq(x_counted(&r, "counts", "failed"), XB);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "total")), XB);
        hfree(&r);
        snprintf(path, sizeof(path), "/v1/runs/counts?since=%s&until=%s&security_group=gc",
                 since, until);
        r = http(port, "GET", path, carol);
        expect_status(r, 200);
        cr_assert_eq(x_counted(&r, "counts", "scheduled"), XC);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "total")), XC);
        hfree(&r);
        /* a range with nothing in it: zeros */
        tb_time_format(base - 7200000, since);
        tb_time_format(base - 3600000, until);
        snprintf(path, sizeof(path), "/v1/runs/counts?since=%s&until=%s", since, until);
        r = http(port, "GET", path, alice);
        expect_status(r, 200);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "total")), 0);
        cr_assert_eq(x_counted(&r, "counts", "succeeded"), 0);
        hfree(&r);

        /* fire lag of the last hour, per minute: the minute of the three
         * lags, first attempts only; gb's 50 s lags are not alice's */
        r = http(port, "GET", "/v1/runs/fire-lag", alice);
        expect_status(r, 200);
        char lm[32];
        tb_time_format(lagmin, lm);
        json_t *m, *mine = NULL;
        int64_t worst = 0;
        json_array_foreach(json_object_get(r.j, "minutes"), i, m) {
                if (!strcmp(json_string_value(json_object_get(m, "minute")), lm))
                        mine = m;
                int64_t mx = json_integer_value(json_object_get(m, "max_ms"));
                worst = mx > worst ? mx : worst;
        }
        cr_assert_not_null(mine, "no minute %s in %s", lm, r.body.data);
        cr_assert_eq(json_integer_value(json_object_get(mine, "fires")), 3, "%s", r.body.data);
        cr_assert_eq(json_integer_value(json_object_get(mine, "p50_ms")), 200);
        cr_assert_eq(json_integer_value(json_object_get(mine, "p99_ms")), 3000);
        cr_assert_eq(json_integer_value(json_object_get(mine, "max_ms")), 3000);
        cr_assert_eq(worst, 3000, "a lag alice should not see: %s", r.body.data);
        /* ga's minutes: those of base + 0..59 min from since on, and the lag minute */
        int64_t lag_since = 0;
        char e[256];
        cr_assert_eq(tb_time_parse(json_string_value(json_object_get(r.j, "since")), &lag_since,
                                   e, sizeof(e)),
                     TB_OK, "%s", e);
        size_t want_minutes = 1;
        for (int k = 0; k < XA / 2; k++)
                want_minutes += base + (int64_t)k * 60000 >= lag_since;
        cr_assert_eq(json_array_size(json_object_get(r.j, "minutes")), want_minutes, "%s",
                     r.body.data);
        hfree(&r);
        r = http(port, "GET", "/v1/runs/fire-lag", bob);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "minutes")), XB, "%s", r.body.data);
        json_array_foreach(json_object_get(r.j, "minutes"), i, m)
                cr_assert_eq(json_integer_value(json_object_get(m, "max_ms")), 50000);
        hfree(&r);
        /* no task of alice's in this stack (runs only): nothing upcoming */
        r = http(port, "GET", "/v1/runs/upcoming", alice);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "fires")), 0, "%s", r.body.data);
        hfree(&r);

        /* bad parameters: 400 naming the field */
        char old[32], fut[32], bad_since[128], bad_until[128], bad_order[160], bad_lag[128];
        tb_time_format(now - 25 * 3600000LL, old);
        tb_time_format(now + 8 * 86400000LL, fut);
        snprintf(bad_since, sizeof(bad_since), "/v1/runs/counts?until=%s", fut);
        snprintf(bad_until, sizeof(bad_until), "/v1/runs/counts?since=%s", old);
        snprintf(bad_order, sizeof(bad_order), "/v1/runs/counts?since=%s&until=%s", fut, old);
        snprintf(bad_lag, sizeof(bad_lag), "/v1/runs/fire-lag?since=%s", old);
        char bad_ahead[128];
        snprintf(bad_ahead, sizeof(bad_ahead), "/v1/runs/upcoming?until=%s", fut);
        const char *bad[][2] = {
                {"/v1/runs?status=done", "status"},
                {"/v1/runs?limit=0", "limit"},
                {"/v1/runs?limit=501", "limit"},
                {"/v1/runs?since=yesterday", "since"},
                {"/v1/runs?until=2026-13-01T00:00:00Z", "until"},
                {"/v1/runs?cursor=garbage", "cursor"},
                {"/v1/runs?colour=red", "colour"},
                {bad_since, "since"},
                {bad_until, "until"},
                {bad_order, "until"},
                {"/v1/runs/counts?since=now&until=later", "since"},
                {"/v1/runs/counts?status=failed", "status"},
                {bad_lag, "since"},
                {"/v1/runs/fire-lag?until=soon", "until"},
                {bad_ahead, "until"},
                {"/v1/runs/upcoming?limit=0", "limit"},
                {"/v1/runs/upcoming?limit=1001", "limit"},
                {"/v1/tasks?last_outcome=done", "last_outcome"},
                {"/v1/tasks?last_outcome=failed,", "last_outcome"},
        };
        for (size_t k = 0; k < TB_ARRAY_LEN(bad); k++) {
                r = http(port, "GET", bad[k][0], alice);
                cr_assert_eq(r.status, 400, "%s: %ld %s", bad[k][0], r.status, r.body.data);
                const char *f = json_string_value(json_object_get(json_object_get(r.j, "error"),
                                                                  "field"));
                cr_assert(f && !strcmp(f, bad[k][1]), "%s: field %s, want %s (%s)", bad[k][0],
                          f ? f : "(none)", bad[k][1], r.body.data);
                hfree(&r);
        }
        r = http(port, "GET", "/v1/runs", NULL);
        expect_status(r, 401);
        hfree(&r);
}
