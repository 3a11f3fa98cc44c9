/**
 * @file test_logs.c
 * @brief Run output through the whole pipeline: one taskbusd child with
 *        every role (api, commands, projector, scheduler, executor,
 *        archiver). A task created through REST and run now prints, sleeps
 *        and prints again: `taskbus logs RUN --follow` (the real CLI) shows
 *        the first line while the task still runs and exits when it ends;
 *        the log then expires after the task's log_retention (410, rows
 *        gone). Also: run history past archiver.history_retention is
 *        deleted in batches.
 */
#include <criterion/criterion.h>
#include <sys/prctl.h>

#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t st;
static char alice[96], bob[96];
static int port;
static pid_t daemon_pid;
static char *conf_path;
static char home[64];

/* ---- helpers --------------------------------------------------------------------- */

/* The one REST client of the tests (support_api.h), on this file's port. */
typedef tbt_http_res_t hres_t;

static hres_t http(const char *method, const char *path, const char *authz, const char *body) {
        return tbt_http(port, method, path, authz, body);
}

static void hfree(hres_t *r) { tbt_http_free(r); }

#define expect_status(r, st)                                                                  \
        cr_assert_eq((r).status, (st), "expected %d, got %ld: %s", (st), (r).status,          \
                     (r).body.data)

static bool api_up(void *arg) {
        hres_t r = http("GET", "/healthz", NULL, NULL);
        bool up = r.status == 200;
        hfree(&r);
        return up;
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

static int64_t sql_ms(const char *fmt, const char *arg) {
        char sql[512];
        snprintf(sql, sizeof(sql), fmt, arg);
        char *v = tbt_sql_value(&st, sql);
        cr_assert_not_null(v, "%s: no row", sql);
        int64_t ms = strtoll(v, NULL, 10);
        free(v);
        return ms;
}

/* ---- the stack ------------------------------------------------------------------- */

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        tbt_stack_user(&st, "alice", "ga", alice);
        tbt_stack_user(&st, "bob", "gb", bob);
        port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 10000.0; burst = 10000; };\n"
                              "executor = { lease = \"3s\"; grace = \"2s\"; kill_grace = \"1s\"; };\n"
                              "archiver = { batch = 10; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        snprintf(home, sizeof(home), "/tmp/tbt-home-XXXXXX");
        cr_assert_not_null(mkdtemp(home));
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
        daemon_pid = fork();
        cr_assert_geq(daemon_pid, 0);
        if (daemon_pid == 0) {
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
                /* every role: api, commands, projector, scheduler, executor, archiver */
                execl(bin, bin, "--config", conf_path, (char *)NULL);
                _exit(127);
        }
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API did not come up");
}

static void teardown(void) {
        bool clean = true;
        int ws = 0;
        if (daemon_pid > 0) {
                ws = tbt_daemon_stop(daemon_pid, SIGTERM);
                clean = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
        }
        daemon_pid = 0;
        char *log = tbt_daemon_log(&st);
        bool sanitizer = strstr(log, "Sanitizer") || strstr(log, "runtime error:");
        if (sanitizer || !clean || getenv("TBT_SHOW_LOGS"))
                fprintf(stderr, "---- taskbusd log ----\n%s\n", log);
        free(log);
        if (conf_path) {
                unlink(conf_path);
                free(conf_path);
                conf_path = NULL;
        }
        if (home[0])
                tbt_run(NULL, "rm -rf %s", home);
        tbt_stack_destroy(&st);
        curl_global_cleanup();
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
        cr_assert(clean, "taskbusd did not exit cleanly (0x%x)", ws);
}

TestSuite(logs, .init = setup, .fini = teardown, .timeout = 240);

/* ---- the CLI as a child with its stdout on a pipe --------------------------------- */

typedef struct cli_proc {
        pid_t pid;
        int out_fd;
        tb_buf_t out;
} cli_proc_t;

static void cli_start(cli_proc_t *p, const char *authz, const char *args) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        char bin[1024], api[64];
        snprintf(bin, sizeof(bin), "%s/bin/taskbus", tbt_build_dir());
        snprintf(api, sizeof(api), "http://127.0.0.1:%d", port);
        memset(p, 0, sizeof(*p));
        p->pid = fork();
        cr_assert_geq(p->pid, 0);
        if (p->pid == 0) {
                dup2(fds[1], STDOUT_FILENO);
                close(fds[0]);
                close(fds[1]);
                setenv("HOME", home, 1);
                setenv("TASKBUS_API", api, 1);
                setenv("TASKBUS_TOKEN", authz + strlen("Bearer "), 1);
                execl("/bin/sh", "sh", "-c", args, (char *)NULL);
                _exit(127);
        }
        close(fds[1]);
        p->out_fd = fds[0];
        fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
        (void)bin;
}

/** Read what the CLI printed for up to \p ms. @returns false at EOF. */
static bool cli_read(cli_proc_t *p, int ms) {
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        if (poll(&pfd, 1, ms) <= 0)
                return true;
        char buf[4096];
        ssize_t n = read(p->out_fd, buf, sizeof(buf));
        if (n > 0) {
                tb_buf_append(&p->out, buf, (size_t)n);
                tb_buf_append(&p->out, "", 1);
                p->out.len--;
                return true;
        }
        return !(n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR));
}

/** Create a one-shot task of alice's, due in about 1.5 s; its id into \p id. */
static void create_once(char id[64], const char *name, const char *script, const char *more) {
        char at[32], *body = NULL;
        tb_time_format((tb_now_ms() / 1000 + 2) * 1000, at);
        cr_assert_gt(asprintf(&body,
                              "{\"name\":\"%s\",\"script\":\"%s\",\"security_group\":\"ga\","
                              "\"schedule\":{\"once\":\"%s\"}%s}",
                              name, script, at, more),
                     0);
        hres_t r = http("POST", "/v1/tasks", alice, body);
        free(body);
        expect_status(r, 201);
        snprintf(id, 64, "%s", json_string_value(json_object_get(r.j, "id")));
        hfree(&r);
}

/* ---- a real run, followed live --------------------------------------------------- */

Test(logs, follow_a_real_run_then_expiry) {
        /* a task that prints, sleeps 4 s and prints again; its log is kept 2 s */
        char task[64], path[256], sql[512], run[64];
        /* A fresh executor's first record on run-logs waits for the topic's
         * metadata (about 0.5 s, executor side): one run first, so that the
         * latency measured below is the steady state of the log pipeline. */
        create_once(task, "warm", "echo warm", "");
        snprintf(sql, sizeof(sql), "SELECT status FROM runs WHERE task_id = '%s'", task);
        wait_sql(sql, "succeeded", 60000);
        /* the first sleep lets the CLI attach before the task prints, so
         * that the time to show "start" measures the pipeline */
        create_once(task, "follow-me", "sleep 2; echo start; sleep 4; echo end",
                    ",\"log_retention\":\"2s\"");

        /* the run appears in the history (RunRequest, then RUNNING) */
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM runs WHERE task_id = '%s'", task);
        wait_sql(sql, "1", 60000);
        snprintf(sql, sizeof(sql), "SELECT run_id FROM runs WHERE task_id = '%s'", task);
        char *v = tbt_sql_value(&st, sql);
        snprintf(run, sizeof(run), "%s", v);
        free(v);

        /* follow with the real CLI */
        char args[512];
        snprintf(args, sizeof(args), "exec %s/bin/taskbus logs %s --follow", tbt_build_dir(), run);
        cli_proc_t p;
        cli_start(&p, alice, args);
        int64_t t_start = 0, t_end = 0, t_exit = 0;
        bool running_when_start_seen = false;
        int64_t deadline = tb_now_ms() + 60000;
        while (tb_now_ms() < deadline) {
                bool open = cli_read(&p, 20);
                if (!t_start && strstr(p.out.data ? p.out.data : "", "start\n")) {
                        t_start = tb_now_ms();
                        snprintf(sql, sizeof(sql),
                                 "SELECT status FROM runs WHERE run_id = '%s'", run);
                        v = tbt_sql_value(&st, sql);
                        running_when_start_seen = v && !strcmp(v, "running");
                        free(v);
                }
                if (!t_end && strstr(p.out.data ? p.out.data : "", "end\n"))
                        t_end = tb_now_ms();
                if (!open) {
                        t_exit = tb_now_ms();
                        break;
                }
        }
        int ws = 0;
        if (!t_exit)
                kill(p.pid, SIGKILL);
        waitpid(p.pid, &ws, 0);
        close(p.out_fd);
        cr_assert(t_exit, "`taskbus logs --follow` did not exit after the run; printed: %s",
                  p.out.data ? p.out.data : "");
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "exit status 0x%x", ws);
        cr_assert_str_eq(p.out.data, "start\nend\n");
        cr_assert(running_when_start_seen, "'start' was not shown while the run was running");
        cr_assert(t_end - t_start >= 3000, "start and end %" PRId64 " ms apart: not live",
                  t_end - t_start);

        /* latency: from the task printing (executor's start/end times) to
         * the CLI printing */
        int64_t started = sql_ms("SELECT (extract(epoch FROM started_at) * 1000)::bigint "
                                 "FROM runs WHERE run_id = '%s'",
                                 run);
        int64_t finished = sql_ms("SELECT (extract(epoch FROM finished_at) * 1000)::bigint "
                                  "FROM runs WHERE run_id = '%s'",
                                  run);
        int64_t chunk_at = sql_ms("SELECT (extract(epoch FROM min(at)) * 1000)::bigint "
                                  "FROM run_logs WHERE run_id = '%s'",
                                  run);
        fprintf(stderr,
                "logs: 'start' chunk published by the executor %" PRId64
                " ms after the task printed it; shown by the CLI %" PRId64 " ms after that\n",
                chunk_at - (started + 2000), t_start - chunk_at);
        snprintf(sql, sizeof(sql), "SELECT status || ' ' || exit_code FROM runs WHERE run_id = '%s'",
                 run);
        v = tbt_sql_value(&st, sql);
        cr_assert_str_eq(v, "succeeded 0");
        free(v);
        fprintf(stderr,
                "logs: follow latency: 'start' shown %" PRId64 " ms after the task printed it "
                "(run start + 2 s), 'end' %" PRId64 " ms after the run finished; the CLI "
                "exited %" PRId64 " ms after the run finished\n",
                t_start - (started + 2000), t_end - finished, t_exit - finished);
        cr_assert_lt(t_start - (started + 2000), 1000, "'start' shown %" PRId64
                     " ms after the task printed it", t_start - (started + 2000));
        cr_assert_lt(t_end - finished, 1000, "'end' shown %" PRId64 " ms after the run ended",
                     t_end - finished);
        cr_assert_lt(t_exit - finished, 3000);
        tb_buf_free(&p.out);

        /* the complete log, without --follow */
        snprintf(args, sizeof(args), "exec %s/bin/taskbus logs %s", tbt_build_dir(), run);
        cli_start(&p, alice, args);
        while (cli_read(&p, 1000))
                ;
        waitpid(p.pid, &ws, 0);
        close(p.out_fd);
        cr_assert_str_eq(p.out.data, "start\nend\n");
        tb_buf_free(&p.out);

        /* another group: the run, its log and its live stream do not exist */
        hres_t r;
        snprintf(path, sizeof(path), "/v1/runs/%s/log?follow=true", run);
        r = http("GET", path, bob, NULL);
        expect_status(r, 404);
        hfree(&r);

        /* log_retention 2s: gone 2 s after the run's end (410, rows deleted) */
        snprintf(sql, sizeof(sql),
                 "SELECT (log_expires_at - finished_at)::text FROM runs WHERE run_id = '%s'", run);
        wait_sql(sql, "00:00:02", 10000);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM run_logs WHERE run_id = '%s'", run);
        wait_sql(sql, "0", 30000);
        snprintf(path, sizeof(path), "/v1/runs/%s/log", run);
        r = http("GET", path, alice, NULL);
        expect_status(r, 410);
        cr_assert(strstr(r.body.data, "expired at"), "%s", r.body.data);
        hfree(&r);
        snprintf(path, sizeof(path), "/v1/runs/%s", run);
        r = http("GET", path, alice, NULL);
        expect_status(r, 200);
        cr_assert(json_is_true(json_object_get(r.j, "log_expired")));
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "succeeded");
        hfree(&r);
        char *out = NULL;
        int rc = tbt_run(&out,
                         "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                         "%s/bin/taskbus logs %s",
                         home, port, alice + strlen("Bearer "), tbt_build_dir(), run);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "410 gone") && strstr(out, "expired at"), "%s", out);
        free(out);

        /* runs list through the CLI */
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                     "%s/bin/taskbus runs list %s",
                     home, port, alice + strlen("Bearer "), tbt_build_dir(), task);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, run) && strstr(out, "succeeded"), "%s", out);
        free(out);
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                     "%s/bin/taskbus runs get %s --json",
                     home, port, alice + strlen("Bearer "), tbt_build_dir(), run);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "\"log_expired\": true"), "%s", out);
        free(out);
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                     "%s/bin/taskbus runs cancel %s",
                     home, port, alice + strlen("Bearer "), tbt_build_dir(), run);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "409") && strstr(out, "already finished"), "%s", out);
        free(out);
}

/* ---- a run cancelled through the API --------------------------------------------- */

Test(logs, cancel_a_real_run) {
        char task[64], sql[512], run[64];
        create_once(task, "long", "echo going; sleep 60", "");
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM runs WHERE task_id = '%s' AND status = 'running'", task);
        wait_sql(sql, "1", 60000);
        snprintf(sql, sizeof(sql), "SELECT run_id FROM runs WHERE task_id = '%s'", task);
        char *v = tbt_sql_value(&st, sql);
        snprintf(run, sizeof(run), "%s", v);
        free(v);
        char *out = NULL;
        int rc = tbt_run(&out,
                         "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                         "%s/bin/taskbus runs cancel %s",
                         home, port, bob + strlen("Bearer "), tbt_build_dir(), run);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "404"), "%s", out);
        free(out);
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                     "%s/bin/taskbus runs cancel %s",
                     home, port, alice + strlen("Bearer "), tbt_build_dir(), run);
        cr_assert_eq(rc, 0, "%s", out);
        free(out);
        snprintf(sql, sizeof(sql), "SELECT status FROM runs WHERE run_id = '%s'", run);
        wait_sql(sql, "cancelled", 30000);
        /* the follow of a finished run prints what there was and exits */
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                     "timeout 30 %s/bin/taskbus logs %s --follow",
                     home, port, alice + strlen("Bearer "), tbt_build_dir(), run);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(!strncmp(out, "going\n", 6), "%s", out);
        free(out);
}

/* Deleting a task stops its running run (it does not go on to its end). */
Test(logs, delete_cancels_the_running_run) {
        char task[64], sql[512], path[160];
        create_once(task, "doomed", "echo started; sleep 45", "");
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM runs WHERE task_id = '%s' AND status = 'running'", task);
        wait_sql(sql, "1", 60000);
        snprintf(path, sizeof(path), "/v1/tasks/%s", task);
        int64_t t0 = tb_mono_us();
        hres_t r = http("DELETE", path, alice, NULL);
        cr_assert(r.status == 200 || r.status == 202 || r.status == 204, "DELETE: %ld %s",
                  r.status, r.body.data ? r.body.data : "");
        hfree(&r);
        snprintf(sql, sizeof(sql), "SELECT status || ' ' || coalesce(error, '') FROM runs "
                                   "WHERE task_id = '%s'", task);
        wait_sql(sql, "cancelled cancelled: the task was deleted", 30000);
        int64_t took_s = (tb_mono_us() - t0) / 1000000;
        cr_assert(took_s < 40, "the run was stopped only after %lld s", (long long)took_s);
}

/* ---- history retention ------------------------------------------------------------ */

Test(logs, history_past_retention_is_deleted_in_batches) {
        /* 25 runs (with output) from 6 years ago, and a recent one; the
         * default history retention is 5 years, archiver.batch is 10 */
        free(tbt_sql_value(
                &st, "WITH ins AS (INSERT INTO runs (run_id, task_id, security_group, "
                     "nominal_time, status, finished_at) "
                     "SELECT 'old-' || i, 'old-task', 'ga', now() - interval '6 years' + i * "
                     "interval '1 minute', 'succeeded', now() - interval '6 years' + i * "
                     "interval '1 minute' + interval '1 second' FROM generate_series(1, 25) i "
                     "UNION ALL SELECT 'recent-1', 'old-task', 'ga', now() - interval '1 day', "
                     "'succeeded', now() - interval '1 day' RETURNING run_id) "
                     "SELECT count(*) FROM ins"));
        free(tbt_sql_value(&st, "INSERT INTO run_logs (run_id, seq, stream, at, data) "
                                "VALUES ('old-1', 0, 'stdout', now(), 'x') RETURNING run_id"));
        wait_sql("SELECT count(*) FROM runs WHERE task_id = 'old-task'", "1", 30000);
        wait_sql("SELECT run_id FROM runs WHERE task_id = 'old-task'", "recent-1", 1000);
        wait_sql("SELECT count(*) FROM run_logs WHERE run_id = 'old-1'", "0", 1000);
        char *log = tbt_daemon_log(&st);
        cr_assert(strstr(log, "deleted 25 run(s) past archiver.history_retention in 3 batch(es)"),
                  "the archiver did not report 3 batches of at most 10:\n%s", log);
        free(log);
}
