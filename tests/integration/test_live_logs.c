/**
 * @file test_live_logs.c
 * @brief Run output read through the REST API on a real stack (a taskbusd
 *        child with projector, archiver and api; RunRequests, RunResults and
 *        LogChunks produced straight to Kafka): the seq continuity check of
 *        the reader (a gap without a marker, the executor's marker), pages
 *        capped and streamed, and live follows: new output pushed, the
 *        per-user cap (api.max_follows_per_user = 2 here), the end of a
 *        follow whose token is revoked or whose user left the run's group,
 *        and the end at api.max_follow_duration (10 s here) with the resume
 *        hint.
 */
#include <criterion/criterion.h>
#include <sys/prctl.h>

#include "bus/bus.h"
#include "identity/identity.h"
#include "serde/serde.h"
#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- HTTP ------------------------------------------------------------------------- */

static int port;

static tbt_http_res_t http_get(const char *path, const char *authz) {
        return tbt_http(port, "GET", path, authz, NULL);
}

#define hfree tbt_http_free
#define hheader tbt_http_header

#define expect_status(r, st)                                                                  \
        cr_assert_eq((r).status, (st), "expected %d, got %ld: %s", (st), (r).status,          \
                     (r).body.data)

/* A follow on its own thread: what arrived, and whether it ended. */
typedef struct tail {
        char path[512];
        const char *authz;
        tb_buf_t body;
        long status;
        bool done;
        atomic_bool abort; /* set: the client goes away */
        pthread_mutex_t mu;
        pthread_t th;
} tail_t;

static size_t tail_data(char *p, size_t s, size_t n, void *ud) {
        tail_t *t = ud;
        pthread_mutex_lock(&t->mu);
        tb_buf_append(&t->body, p, s * n);
        tb_buf_append(&t->body, "", 1);
        t->body.len--;
        pthread_mutex_unlock(&t->mu);
        return s * n;
}

static int tail_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
        tail_t *t = ud;
        (void)a, (void)b, (void)c, (void)d;
        return atomic_load(&t->abort) ? 1 : 0;
}

static void *tail_main(void *arg) {
        tail_t *t = arg;
        CURL *c = curl_easy_init();
        char url[700], ah[200];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, t->path);
        snprintf(ah, sizeof(ah), "Authorization: %s", t->authz);
        struct curl_slist *h = curl_slist_append(NULL, ah);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tail_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, tail_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, t);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &t->status);
        if (rc != CURLE_OK && rc != CURLE_ABORTED_BY_CALLBACK)
                fprintf(stderr, "live_logs: %s: %s\n", t->path, curl_easy_strerror(rc));
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        pthread_mutex_lock(&t->mu);
        t->done = true;
        pthread_mutex_unlock(&t->mu);
        return NULL;
}

static void tail_start(tail_t *t, const char *path, const char *authz) {
        memset(t, 0, sizeof(*t));
        snprintf(t->path, sizeof(t->path), "%s", path);
        t->authz = authz;
        pthread_mutex_init(&t->mu, NULL);
        cr_assert_eq(pthread_create(&t->th, NULL, tail_main, t), 0);
}

static void tail_finish(tail_t *t) {
        atomic_store(&t->abort, true);
        pthread_join(t->th, NULL);
        tb_buf_free(&t->body);
        pthread_mutex_destroy(&t->mu);
}

typedef struct tail_want {
        tail_t *t;
        const char *text;
} tail_want_t;

static bool tail_has(void *arg) {
        tail_want_t *w = arg;
        pthread_mutex_lock(&w->t->mu);
        bool ok = w->t->body.data && strstr(w->t->body.data, w->text);
        pthread_mutex_unlock(&w->t->mu);
        return ok;
}

static bool tail_done(void *arg) {
        tail_t *t = arg;
        pthread_mutex_lock(&t->mu);
        bool ok = t->done;
        pthread_mutex_unlock(&t->mu);
        return ok;
}

static void wait_tail(tail_t *t, const char *text) {
        tail_want_t w = {t, text};
        if (!tbt_wait_until(tail_has, &w, 30000)) {
                pthread_mutex_lock(&t->mu);
                cr_assert_fail("%s: '%s' did not arrive; got (status %ld) '%s'", t->path, text,
                               t->status, t->body.data ? t->body.data : "");
        }
}

/* ---- the stack ------------------------------------------------------------------- */

static tbt_stack_t st;
static char alice[96], carol[96], dave[96];
static pid_t daemon_pid;
static rd_kafka_t *prod;
static char *conf_path;

static bool api_up(void *arg) {
        (void)arg;
        return tbt_http_up(&port);
}

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        tbt_stack_user(&st, "alice", "ga", alice);
        tbt_stack_user(&st, "carol", "ga", carol);
        tbt_stack_user(&st, "dave", "ga", dave);
        port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; rate = 100000.0; "
                              "burst = 100000; max_follows_per_user = 2; "
                              "max_follow_duration = \"10s\"; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        tbt_stack_t d = st; /* the stack with this test's config */
        d.config_path = conf_path;
        daemon_pid = tbt_daemon_start(&d, "projector,archiver,api");
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API did not come up");
        prod = tbt_stack_producer(&st);
}

static void teardown(void) {
        if (prod) {
                rd_kafka_flush(prod, 10000);
                rd_kafka_destroy(prod);
                prod = NULL;
        }
        bool sanitizer = false, clean = tbt_daemon_end(&st, daemon_pid, &sanitizer);
        daemon_pid = 0;
        if (conf_path) {
                unlink(conf_path);
                free(conf_path);
                conf_path = NULL;
        }
        tbt_stack_destroy(&st);
        curl_global_cleanup();
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
        cr_assert(clean, "taskbusd did not exit cleanly");
}

TestSuite(live_logs, .init = setup, .fini = teardown, .timeout = 300);

/* ---- producing runs and output -------------------------------------------------- */

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

/** A run of task \p task in group ga, RUNNING (\p final: SUCCEEDED). */
static void run_of(const char *task, const char *run_id, bool final) {
        int64_t nom = tb_now_ms() - 1000;
        json_t *snap = json_pack("{s:s, s:s, s:[], s:s, s:s, s:{}, s:I, s:s, s:i, s:I}", "name",
                                 "n", "script", "echo", "argv", "security_group", "ga",
                                 "executor", "shell", "executor_options", "expiry_ms",
                                 (json_int_t)3600000, "overlap", "ALLOW", "max_attempts", 1,
                                 "log_retention_ms", (json_int_t)3600000);
        produce(TB_TOPIC_RUNS, TB_SCHEMA_RUN_REQUEST, task,
                json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:o}", "run_id", run_id,
                          "task_id", task, "task_version", (json_int_t)1, "nominal_time",
                          (json_int_t)nom, "attempt", 1, "trigger", "SCHEDULE", "emitted_at",
                          (json_int_t)nom, "snapshot", snap));
        produce(TB_TOPIC_RESULTS, TB_SCHEMA_RUN_RESULT, task,
                json_pack("{s:s, s:s, s:I, s:i, s:s, s:o, s:n, s:I, s:o, s:s, s:s, s:I, s:b, "
                          "s:n, s:I}",
                          "run_id", run_id, "task_id", task, "nominal_time", (json_int_t)nom,
                          "attempt", 1, "status", final ? "SUCCEEDED" : "RUNNING", "exit_code",
                          final ? json_integer(0) : json_null(), "signal", "started_at",
                          (json_int_t)nom + 10, "finished_at",
                          final ? json_integer(tb_now_ms()) : json_null(), "executor", "shell",
                          "host", "h1", "output_bytes", (json_int_t)0, "infra_error", 0,
                          "error", "at", (json_int_t)tb_now_ms()));
        rd_kafka_flush(prod, 10000);
        char sql[300];
        snprintf(sql, sizeof(sql), "SELECT status FROM runs WHERE run_id = '%s'", run_id);
        for (int i = 0; i < 600; i++) {
                char *v = tbt_sql_value(&st, sql);
                bool ok = v && !strcmp(v, final ? "succeeded" : "running");
                free(v);
                if (ok)
                        return;
                usleep(100000); /* polling the projection: no event to wait on */
        }
        cr_assert_fail("run %s was not projected", run_id);
}

static void chunk(const char *run_id, int seq, const char *stream, const void *data, size_t len,
                  bool eof) {
        json_t *v = json_pack("{s:s, s:s, s:i, s:s, s:I, s:s%, s:b}", "run_id", run_id, "task_id",
                              "task-live", "seq", seq, "stream", stream, "at",
                              (json_int_t)tb_now_ms(), "data", (const char *)data, len, "eof",
                              eof);
        produce(TB_TOPIC_LOGS, TB_SCHEMA_LOG_CHUNK, run_id, v);
        rd_kafka_flush(prod, 10000);
}

static void chunk_s(const char *run_id, int seq, const char *stream, const char *text,
                    bool eof) {
        chunk(run_id, seq, stream, text, strlen(text), eof);
}

static void wait_rows(const char *run_id, int n) {
        char sql[300], want[16];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM run_logs WHERE run_id = '%s'", run_id);
        snprintf(want, sizeof(want), "%d", n);
        for (int i = 0; i < 600; i++) {
                char *v = tbt_sql_value(&st, sql);
                bool ok = v && !strcmp(v, want);
                free(v);
                if (ok)
                        return;
                usleep(100000); /* polling the archiver's copy: no event to wait on */
        }
        cr_assert_fail("run %s: %d chunks were not archived", run_id, n);
}

/* ---- the reader's continuity check ------------------------------------------------ */

Test(live_logs, seq_gaps_are_shown_where_they_are) {
        run_of("task-live", "gap-1", true);
        /* seq 2-3 missing (no marker), 5-7 covered by the executor's marker at 5 */
        chunk_s("gap-1", 0, "STDOUT", "a\n", false);
        chunk_s("gap-1", 1, "STDERR", "b\n", false);
        chunk_s("gap-1", 4, "STDOUT", "c\n", false);
        chunk_s("gap-1", 5, "SYSTEM", "[taskbus: 3 chunks (12,345 bytes) lost]\n", false);
        chunk_s("gap-1", 8, "STDOUT", "d\n", false);
        chunk_s("gap-1", 9, "SYSTEM", "", true);
        wait_rows("gap-1", 6);
        const char *whole = "a\nb\n[taskbus: 2 chunks lost]\nc\n"
                            "[taskbus: 3 chunks (12,345 bytes) lost]\nd\n";
        char hb[64], want[32];
        tbt_http_res_t r = http_get("/v1/runs/gap-1/log", alice);
        expect_status(r, 200);
        cr_assert_str_eq(r.body.data, whole);
        snprintf(want, sizeof(want), "%zu", strlen(whole));
        cr_assert_str_eq(hheader(&r, "X-Log-Next-Offset", hb, sizeof(hb)), want);
        cr_assert_str_eq(hheader(&r, "X-Log-Complete", hb, sizeof(hb)), "true");
        hfree(&r);
        /* markers belong to every stream's text: which stream was lost is unknown */
        r = http_get("/v1/runs/gap-1/log?stream=stdout", alice);
        cr_assert_str_eq(r.body.data, "a\n[taskbus: 2 chunks lost]\nc\n"
                                      "[taskbus: 3 chunks (12,345 bytes) lost]\nd\n");
        hfree(&r);
        /* offsets count the markers: a page starting inside one */
        r = http_get("/v1/runs/gap-1/log?offset=5&limit=20", alice);
        cr_assert_str_eq(r.body.data, "taskbus: 2 chunks lo");
        cr_assert_str_eq(hheader(&r, "X-Log-Next-Offset", hb, sizeof(hb)), "25");
        hfree(&r);
        /* a follow shows the same text (after waiting at the gap for a marker) */
        tail_t t;
        tail_start(&t, "/v1/runs/gap-1/log?follow=true", alice);
        cr_assert(tbt_wait_until(tail_done, &t, 60000), "the follow did not end");
        cr_assert_eq(t.status, 200);
        cr_assert_str_eq(t.body.data, whole);
        tail_finish(&t);
        /* a gap at the start */
        run_of("task-live", "gap-2", false);
        chunk_s("gap-2", 1, "STDOUT", "late\n", false);
        wait_rows("gap-2", 1);
        r = http_get("/v1/runs/gap-2/log", alice);
        cr_assert_str_eq(r.body.data, "[taskbus: 1 chunk lost]\nlate\n");
        hfree(&r);
}

/* ---- pages: capped and streamed --------------------------------------------------- */

Test(live_logs, pages_are_capped) {
        run_of("task-live", "big-1", true);
        /* 5 chunks of 64 KiB: more than the default page, in two slices */
        static char block[64 * 1024];
        for (int i = 0; i < 5; i++) {
                memset(block, 'a' + i, sizeof(block));
                chunk("big-1", i, "STDOUT", block, sizeof(block), i == 4);
        }
        wait_rows("big-1", 5);
        char hb[64];
        tbt_http_res_t r = http_get("/v1/runs/big-1/log", alice);
        expect_status(r, 200);
        cr_assert_eq(r.body.len, 256 * 1024, "default page: %zu bytes", r.body.len);
        cr_assert_str_eq(hheader(&r, "X-Log-Next-Offset", hb, sizeof(hb)), "262144");
        cr_assert_str_eq(hheader(&r, "X-Log-Complete", hb, sizeof(hb)), "false");
        cr_assert_eq(r.body.data[0], 'a');
        cr_assert_eq(r.body.data[256 * 1024 - 1], 'd');
        hfree(&r);
        r = http_get("/v1/runs/big-1/log?limit=4194304&offset=100", alice);
        expect_status(r, 200);
        cr_assert_eq(r.body.len, 5 * 64 * 1024 - 100);
        for (size_t i = 0; i < r.body.len; i++)
                if (r.body.data[i] != 'a' + (int)((i + 100) / (64 * 1024)))
                        cr_assert_fail("byte %zu is '%c'", i, r.body.data[i]);
        cr_assert_str_eq(hheader(&r, "X-Log-Complete", hb, sizeof(hb)), "true");
        hfree(&r);
        r = http_get("/v1/runs/big-1/log?limit=4194305", alice);
        expect_status(r, 400);
        const char *field = json_string_value(
                json_object_get(json_object_get(r.j, "error"), "field"));
        cr_assert_str_eq(field ? field : "", "limit");
        cr_assert(strstr(r.body.data, "at most 4194304 bytes"), "%s", r.body.data);
        hfree(&r);
}

/* `taskbus logs RUN --follow` (the real CLI) on its own thread. */
typedef struct cli_follow {
        char run[64];
        const char *authz;
        char *out;
        int rc;
        pthread_t th;
} cli_follow_t;

static void *cli_follow_main(void *arg) {
        cli_follow_t *c = arg;
        c->rc = tbt_run(&c->out, "TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN=%s HOME=/nonexistent "
                        "timeout 120 %s/bin/taskbus logs %s --follow",
                        port, c->authz + strlen("Bearer "), tbt_build_dir(), c->run);
        return NULL;
}

/* ---- follows -------------------------------------------------------------------------- */

Test(live_logs, follow_push_cap_and_duration) {
        run_of("task-live", "f-done", true);
        chunk_s("f-done", 0, "STDOUT", "done\n", true);
        wait_rows("f-done", 1);
        run_of("task-live", "f-1", false);
        chunk_s("f-1", 0, "STDOUT", "one\n", false);
        wait_rows("f-1", 1);
        tail_t a, b;
        /* the CLI follows under another user (alice's streams are counted below) */
        cli_follow_t cli = {.run = "f-1", .authz = dave};
        cr_assert_eq(pthread_create(&cli.th, NULL, cli_follow_main, &cli), 0);
        tail_start(&a, "/v1/runs/f-1/log?follow=true", alice);
        tail_start(&b, "/v1/runs/f-1/log?follow=true&offset=2", alice);
        wait_tail(&a, "one\n");
        wait_tail(&b, "e\n");
        /* alice holds api.max_follows_per_user (2): a third is refused */
        tbt_http_res_t r = http_get("/v1/runs/f-1/log?follow=true", alice);
        expect_status(r, 429);
        cr_assert(strstr(r.body.data, "api.max_follows_per_user"), "%s", r.body.data);
        hfree(&r);
        /* another user is not counted against her; pages are not follows */
        tail_t c;
        tail_start(&c, "/v1/runs/f-1/log?follow=true", carol);
        wait_tail(&c, "one\n");
        r = http_get("/v1/runs/f-1/log", alice);
        expect_status(r, 200);
        hfree(&r);
        /* new output is pushed to every follower */
        chunk_s("f-1", 1, "STDOUT", "two\n", false);
        wait_tail(&a, "one\ntwo\n");
        wait_tail(&b, "e\ntwo\n");
        wait_tail(&c, "one\ntwo\n");
        /* one of alice's streams goes away: she may open another */
        atomic_store(&b.abort, true);
        pthread_join(b.th, NULL);
        tbt_http_res_t again = {0};
        for (int i = 0; i < 100; i++) {
                /* a follow of a finished run ends at once: it only probes the cap */
                hfree(&again);
                again = http_get("/v1/runs/f-done/log?follow=true", alice);
                if (again.status != 429)
                        break;
                usleep(100000); /* the server notices the closed socket within a second */
        }
        cr_assert_eq(again.status, 200, "the cap was not released: %s", again.body.data);
        cr_assert_str_eq(again.body.data, "done\n");
        hfree(&again);
        tb_buf_free(&b.body);
        pthread_mutex_destroy(&b.mu);
        /* api.max_follow_duration (10 s): the stream ends with where to resume */
        cr_assert(tbt_wait_until(tail_done, &a, 60000), "the follow did not end");
        const char *want = "one\ntwo\n[taskbus: follow ended after 10 s (api.max_follow_duration);"
                           " resume with GET /v1/runs/f-1/log?follow=true&offset=8]\n";
        cr_assert_str_eq(a.body.data, want);
        tail_finish(&a);
        tail_finish(&c);
        /* the server releases the ended stream's slot once it sees the socket
         * closed: until then a new follow of alice's may be refused (429) */
        for (int i = 0; i < 100; i++) {
                hfree(&again);
                again = http_get("/v1/runs/f-done/log?follow=true", alice);
                if (again.status != 429)
                        break;
                usleep(100000);
        }
        cr_assert_eq(again.status, 200, "the ended follow's slot was not released: %s",
                     again.body.data);
        hfree(&again);
        /* resuming there gets what came since, and no repeat */
        tail_start(&a, "/v1/runs/f-1/log?follow=true&offset=8", alice);
        chunk_s("f-1", 2, "STDOUT", "three\n", true);
        cr_assert(tbt_wait_until(tail_done, &a, 60000), "the resumed follow did not end");
        cr_assert_str_eq(a.body.data, "three\n", "resumed follow: status %ld", a.status);
        tail_finish(&a);
        /* the CLI resumed where the server ended its stream: the output, once */
        pthread_join(cli.th, NULL);
        cr_assert_eq(cli.rc, 0, "taskbus logs --follow: status %d: %s", cli.rc,
                     cli.out ? cli.out : "");
        cr_assert_str_eq(cli.out, "one\ntwo\nthree\n");
        free(cli.out);
}

Test(live_logs, follow_ends_when_access_ends) {
        run_of("task-live", "f-2", false);
        chunk_s("f-2", 0, "STDOUT", "hello\n", false);
        wait_rows("f-2", 1);
        tail_t c, d;
        tail_start(&c, "/v1/runs/f-2/log?follow=true", carol);
        tail_start(&d, "/v1/runs/f-2/log?follow=true", dave);
        wait_tail(&c, "hello\n");
        wait_tail(&d, "hello\n");
        /* carol's token is revoked; dave leaves the run's group */
        free(tbt_sql_value(&st, "UPDATE api_tokens SET revoked_at = now() "
                                "WHERE user_id = 'carol' RETURNING id"));
        char err[512];
        cr_assert_eq(tb_identity_group_remove_member(st.conn, "test", "ga", "dave", err,
                                                     sizeof(err)),
                     TB_OK, "%s", err);
        int64_t t0 = tb_now_ms();
        cr_assert(tbt_wait_until(tail_done, &c, 30000), "carol's follow did not end");
        cr_assert(tbt_wait_until(tail_done, &d, 30000), "dave's follow did not end");
        fprintf(stderr, "live_logs: follows ended %" PRId64 " ms after the revocation\n",
                tb_now_ms() - t0);
        const char *want = "hello\n[taskbus: follow ended: the token is no longer valid for this "
                           "run; resume with GET /v1/runs/f-2/log?follow=true&offset=6]\n";
        cr_assert_str_eq(c.body.data, want);
        cr_assert_str_eq(d.body.data, want);
        tail_finish(&c);
        tail_finish(&d);
        /* and they cannot come back */
        tbt_http_res_t r = http_get("/v1/runs/f-2/log?follow=true", carol);
        expect_status(r, 401);
        hfree(&r);
        r = http_get("/v1/runs/f-2/log?follow=true", dave);
        expect_status(r, 404);
        hfree(&r);
}
