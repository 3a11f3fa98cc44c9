/**
 * @file test_notify.c
 * @brief Notifications on a real stack (every role, notifier included, in
 *        one taskbusd): a local webhook receiver and a local SMTP sink
 *        (threads of this test on 127.0.0.1). A task with max_attempts 2
 *        that fails twice gets exactly one signed "failure" webhook (none
 *        for the retried first attempt), with its last lines of output, and
 *        one mail; the HMAC verifies with the channel's secret; once it
 *        succeeds, exactly one "recovery", delivered at the second attempt
 *        after the receiver answered 503 (both attempts recorded); a rule
 *        naming an unknown channel is recorded failed; deliveries are in
 *        PostgreSQL; state_change both ways; the run's notifications through
 *        the API. Bad notify rules get a 400 naming the field. `taskbus notify
 *        test` by webhook and by mail (admins only, unknown channel refused).
 *        A run past a long_running rule's after_ms is notified once while it
 *        runs; a fire skipped by overlap forbid is notified as skipped.
 */
#include <criterion/criterion.h>

#include "support.h"
#include "support_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET "s3cret-key-for-the-test-0123456789abcdef"

/* ---- a receiver: one listening socket and a thread answering it ------------------- */

typedef struct rx {
        int fd;
        int port;
        bool smtp;
        pthread_t th;
        atomic_bool stop;
        pthread_mutex_t mu;
        json_t *got;        /**< HTTP: [{headers, body}], SMTP: [{from, rcpt, data}] */
        atomic_int fail_next; /**< HTTP: answer 503 to this many requests first */
} rx_t;

static rx_t hook, mail;

/* Read one line (up to CRLF) from \p fd into \p line; false at EOF. */
static bool read_line(int fd, char *line, size_t size) {
        size_t n = 0;
        char c;
        while (n + 1 < size) {
                ssize_t k = read(fd, &c, 1);
                if (k <= 0)
                        return false;
                line[n++] = c;
                if (c == '\n')
                        break;
        }
        line[n] = '\0';
        return true;
}

static void say(int fd, const char *s) {
        ssize_t w = write(fd, s, strlen(s));
        (void)w;
}

static void serve_http(rx_t *r, int c) {
        char line[8192];
        tb_buf_t hdrs = {0}, body = {0};
        long len = 0;
        while (read_line(c, line, sizeof(line)) && strcmp(line, "\r\n")) {
                tb_buf_append(&hdrs, line, strlen(line));
                if (!strncasecmp(line, "Content-Length:", 15))
                        len = strtol(line + 15, NULL, 10);
        }
        while (len > 0 && (long)body.len < len) {
                char buf[4096];
                ssize_t k = read(c, buf, sizeof(buf) < (size_t)(len - (long)body.len)
                                                 ? sizeof(buf)
                                                 : (size_t)(len - (long)body.len));
                if (k <= 0)
                        break;
                tb_buf_append(&body, buf, (size_t)k);
        }
        tb_buf_append(&hdrs, "", 1);
        tb_buf_append(&body, "", 1);
        bool fail = atomic_load(&r->fail_next) > 0 && strstr(hdrs.data, "X-Taskbus-Event: recovery");
        if (fail)
                atomic_fetch_sub(&r->fail_next, 1);
        pthread_mutex_lock(&r->mu);
        json_array_append_new(r->got, json_pack("{s:s,s:s,s:b}", "headers", hdrs.data, "body",
                                                body.data, "refused", fail));
        pthread_mutex_unlock(&r->mu);
        say(c, fail ? "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n"
                      "Connection: close\r\n\r\nbusy"
                    : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        tb_buf_free(&hdrs);
        tb_buf_free(&body);
}

/* A minimal SMTP server: enough of RFC 5321 for libcurl. */
static void serve_smtp(rx_t *r, int c) {
        char line[8192];
        tb_buf_t from = {0}, rcpt = {0}, data = {0};
        say(c, "220 test ESMTP\r\n");
        while (read_line(c, line, sizeof(line))) {
                if (!strncasecmp(line, "EHLO", 4) || !strncasecmp(line, "HELO", 4)) {
                        say(c, "250 test\r\n");
                } else if (!strncasecmp(line, "MAIL FROM:", 10)) {
                        tb_buf_append(&from, line + 10, strcspn(line + 10, "\r\n"));
                        say(c, "250 ok\r\n");
                } else if (!strncasecmp(line, "RCPT TO:", 8)) {
                        tb_buf_append(&rcpt, line + 8, strcspn(line + 8, "\r\n"));
                        say(c, "250 ok\r\n");
                } else if (!strncasecmp(line, "DATA", 4)) {
                        say(c, "354 go on\r\n");
                        while (read_line(c, line, sizeof(line)) && strcmp(line, ".\r\n"))
                                tb_buf_append(&data, line, strlen(line));
                        tb_buf_append(&from, "", 1);
                        tb_buf_append(&rcpt, "", 1);
                        tb_buf_append(&data, "", 1);
                        pthread_mutex_lock(&r->mu);
                        json_array_append_new(r->got, json_pack("{s:s,s:s,s:s}", "from",
                                                                from.data, "rcpt", rcpt.data,
                                                                "data", data.data));
                        pthread_mutex_unlock(&r->mu);
                        say(c, "250 queued\r\n");
                } else if (!strncasecmp(line, "QUIT", 4)) {
                        say(c, "221 bye\r\n");
                        break;
                } else {
                        say(c, "250 ok\r\n"); /* RSET, NOOP */
                }
        }
        tb_buf_free(&from);
        tb_buf_free(&rcpt);
        tb_buf_free(&data);
}

static void *rx_main(void *arg) {
        rx_t *r = arg;
        while (!atomic_load(&r->stop)) {
                struct pollfd p = {.fd = r->fd, .events = POLLIN};
                if (poll(&p, 1, 100) <= 0)
                        continue;
                int c = accept(r->fd, NULL, NULL);
                if (c < 0)
                        continue;
                struct timeval tv = {.tv_sec = 10};
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                if (r->smtp)
                        serve_smtp(r, c);
                else
                        serve_http(r, c);
                close(c);
        }
        return NULL;
}

static void rx_start(rx_t *r, bool smtp) {
        memset(r, 0, sizeof(*r));
        r->smtp = smtp;
        r->got = json_array();
        pthread_mutex_init(&r->mu, NULL);
        r->fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(a);
        cr_assert(bind(r->fd, (struct sockaddr *)&a, sizeof(a)) == 0);
        cr_assert(listen(r->fd, 16) == 0);
        getsockname(r->fd, (struct sockaddr *)&a, &al);
        r->port = ntohs(a.sin_port);
        cr_assert(pthread_create(&r->th, NULL, rx_main, r) == 0);
}

static void rx_stop(rx_t *r) {
        atomic_store(&r->stop, true);
        pthread_join(r->th, NULL);
        close(r->fd);
        json_decref(r->got);
}

/* The requests (mails) received so far whose "headers" ("data") hold \p needle. */
static size_t rx_count(rx_t *r, const char *needle) {
        size_t n = 0, i;
        json_t *v;
        pthread_mutex_lock(&r->mu);
        json_array_foreach(r->got, i, v) {
                const char *s = json_string_value(json_object_get(v, r->smtp ? "data"
                                                                              : "headers"));
                n += s && strstr(s, needle);
        }
        pthread_mutex_unlock(&r->mu);
        return n;
}

typedef struct {
        rx_t *r;
        const char *needle;
        size_t n;
} rx_wait_t;

static bool rx_reached(void *arg) {
        rx_wait_t *w = arg;
        return rx_count(w->r, w->needle) >= w->n;
}

/* A copy of the last request (mail) holding \p needle (caller decrefs). */
static json_t *rx_last(rx_t *r, const char *needle) {
        json_t *found = NULL, *v;
        size_t i;
        pthread_mutex_lock(&r->mu);
        json_array_foreach(r->got, i, v) {
                const char *s = json_string_value(json_object_get(v, r->smtp ? "data"
                                                                              : "headers"));
                if (s && strstr(s, needle)) {
                        json_decref(found);
                        found = json_deep_copy(v);
                }
        }
        pthread_mutex_unlock(&r->mu);
        return found;
}

/* The value of header \p name in the raw header lines \p hdrs (static buffer). */
static const char *header(const char *hdrs, const char *name) {
        static char buf[256];
        size_t n = strlen(name);
        for (const char *l = hdrs; l && *l;) {
                const char *e = strstr(l, "\r\n");
                if (!strncasecmp(l, name, n) && l[n] == ':') {
                        const char *v = l + n + 1;
                        while (*v == ' ')
                                v++;
                        snprintf(buf, sizeof(buf), "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
                        return buf;
                }
                l = e ? e + 2 : NULL;
        }
        return NULL;
}

/* ---- the stack --------------------------------------------------------------------- */

static tbt_stack_t st;
static pid_t daemon_pid;
static int api_port;
static char alice[96], admin[96];
static char secret_path[64], workdir[64];

static void setup(void) {
        rx_start(&hook, false);
        rx_start(&mail, true);
        snprintf(secret_path, sizeof(secret_path), "/tmp/tbt-notify-secret-XXXXXX");
        int fd = mkstemp(secret_path);
        cr_assert(fd >= 0);
        cr_assert(write(fd, SECRET "\n", strlen(SECRET) + 1) == (ssize_t)strlen(SECRET) + 1);
        close(fd);
        chmod(secret_path, 0600);
        snprintf(workdir, sizeof(workdir), "/tmp/tbt-notify-XXXXXX");
        cr_assert_not_null(mkdtemp(workdir));
        chmod(workdir, 0777);
        char extra[2048];
        snprintf(extra, sizeof(extra),
                 "notify = { backoff = \"300ms\"; timeout = \"5s\"; channels = (\n"
                 "  { name = \"ops\"; type = \"webhook\"; url = \"http://127.0.0.1:%d/hook\";\n"
                 "    secret_file = \"%s\"; },\n"
                 "  { name = \"mail\"; type = \"smtp\"; url = \"smtp://127.0.0.1:%d\";\n"
                 "    from = \"taskbus@example.com\"; to = [\"ops@example.com\"]; }\n"
                 "); };\n",
                 hook.port, secret_path, mail.port);
        api_port = tbt_free_port();
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2, .api_port = api_port,
                                                  .api_rate = 10000.0, .api_burst = 10000,
                                                  .api_extra = "reply_timeout = \"30s\"; "
                                                               "admin_group = \"admins\";",
                                                  .extra = extra});
        daemon_pid = tbt_daemon_start(
                &st, "api,commands,projector,scheduler,executor,archiver,notifier");
        cr_assert(tbt_wait_until(tbt_http_up, &api_port, 90000), "the API did not come up");
        tbt_stack_user(&st, "alice", "ops", alice);
        tbt_stack_user(&st, "root", "admins", admin);
}

static void teardown(void) {
        bool san = false;
        bool clean = tbt_daemon_end(&st, daemon_pid, &san);
        char *out = NULL;
        tbt_run(&out, "rm -rf '%s' '%s'", workdir, secret_path);
        free(out);
        tbt_stack_destroy(&st);
        rx_stop(&hook);
        rx_stop(&mail);
        cr_expect(clean && !san, "taskbusd did not stop cleanly");
}

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 600);

static const char *sql1(const char *fmt, const char *arg) {
        static char buf[512];
        char q[1024];
        snprintf(q, sizeof(q), fmt, arg);
        char *v = tbt_sql_value(&st, q);
        snprintf(buf, sizeof(buf), "%s", v ? v : "(no row)");
        free(v);
        return buf;
}

/* POST \p body as alice; its id into \p id. */
static void create_task(const char *body, char id[64]) {
        tbt_http_res_t r = tbt_http(api_port, "POST", "/v1/tasks", alice, body);
        cr_assert_eq(r.status, 201, "create: %ld %s", r.status, r.body.data);
        snprintf(id, 64, "%s", json_string_value(json_object_get(r.j, "id")));
        tbt_http_free(&r);
}

/* Wait for the webhook of \p event; @returns its body as JSON (caller decrefs). */
static json_t *wait_webhook(const char *event) {
        char needle[80];
        snprintf(needle, sizeof(needle), "X-Taskbus-Event: %s", event);
        rx_wait_t w = {&hook, needle, 1};
        if (!tbt_wait_until(rx_reached, &w, 60000)) {
                char *log = tbt_daemon_log(&st);
                cr_log_error("%s", log);
                free(log);
                cr_assert_fail("no %s webhook", event);
        }
        json_t *got = rx_last(&hook, needle);
        json_error_t je;
        json_t *j = json_loads(json_string_value(json_object_get(got, "body")), 0, &je);
        json_decref(got);
        cr_assert_not_null(j);
        return j;
}

static void run_now(const char *id) {
        char path[200];
        snprintf(path, sizeof(path), "/v1/tasks/%s/run", id);
        tbt_http_res_t r = tbt_http(api_port, "POST", path, alice, NULL);
        cr_assert_eq(r.status, 202, "run now: %ld %s", r.status, r.body.data);
        tbt_http_free(&r);
}

Test(notify, failure_after_the_last_retry_then_recovery_signed) {
        char body[2048], id[64];
        snprintf(body, sizeof(body),
                 "{\"name\": \"nightly export\", \"security_group\": \"ops\", "
                 "\"script\": \"echo first line; echo 'second line'; test -f %s/ok\", "
                 "\"schedule\": {\"every\": \"1h\"}, \"paused\": true, "
                 "\"retries\": {\"max_attempts\": 2, \"backoff\": \"1s\"}, "
                 "\"notify\": [{\"on\": [\"failure\", \"recovery\"], \"channel\": \"ops\"}, "
                 "{\"on\": [\"failure\"], \"channel\": \"mail\"}, "
                 "{\"on\": [\"failure\"], \"channel\": \"nowhere\"}, "
                 "{\"on\": [\"state_change\"], \"channel\": \"ops\"}]}",
                 workdir);
        tbt_http_res_t r = tbt_http(api_port, "POST", "/v1/tasks", alice, body);
        cr_assert_eq(r.status, 201, "create: %ld %s", r.status, r.body.data);
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.j, "id")));
        cr_expect_eq(json_array_size(json_object_get(r.j, "notify")), 4, "%s", r.body.data);
        tbt_http_free(&r);

        /* two failed attempts: one failure notification, of the second */
        run_now(id);
        rx_wait_t w = {&hook, "X-Taskbus-Event: failure", 1};
        cr_assert(tbt_wait_until(rx_reached, &w, 120000), "no failure webhook; log:\n%s",
                  tbt_daemon_log(&st));
        char q[512];
        snprintf(q, sizeof(q), "SELECT count(*) FROM runs WHERE task_id = '%s' AND status = "
                               "'failed'", id);
        /* both attempts ran and failed (the projector may come after the notifier) */
        tbt_wait_sql(&st, q, "2", 30000);
        json_t *got = rx_last(&hook, "X-Taskbus-Event: failure");
        const char *hdrs = json_string_value(json_object_get(got, "headers"));
        const char *b = json_string_value(json_object_get(got, "body"));
        char ts[64], sig[128];
        cr_assert_not_null(header(hdrs, "X-Taskbus-Timestamp"), "%s", hdrs);
        snprintf(ts, sizeof(ts), "%s", header(hdrs, "X-Taskbus-Timestamp"));
        cr_assert_not_null(header(hdrs, "X-Taskbus-Signature"), "%s", hdrs);
        snprintf(sig, sizeof(sig), "%s", header(hdrs, "X-Taskbus-Signature"));
        /* the receiver's check: HMAC-SHA256 of "timestamp.body" under the secret */
        tb_buf_t msg = {0};
        tb_buf_printf(&msg, "%s.%s", ts, b);
        unsigned char mac[32];
        unsigned int ml = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)msg.data, msg.len, mac,
             &ml);
        char want[80] = "sha256=";
        for (int i = 0; i < 32; i++)
                snprintf(want + 7 + 2 * i, 3, "%02x", mac[i]);
        cr_expect_str_eq(sig, want, "the signature verifies");
        /* a tampered body does not */
        msg.data[msg.len - 2] ^= 1;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)msg.data, msg.len, mac,
             &ml);
        char bad[80] = "sha256=";
        for (int i = 0; i < 32; i++)
                snprintf(bad + 7 + 2 * i, 3, "%02x", mac[i]);
        cr_expect_str_neq(sig, bad);
        tb_buf_free(&msg);
        cr_expect(llabs(atoll(ts) - tb_now_ms() / 1000) < 300, "timestamp %s is now", ts);
        json_error_t je;
        json_t *j = json_loads(b, 0, &je);
        cr_assert_not_null(j, "body is JSON: %s", b);
        cr_expect_str_eq(json_string_value(json_object_get(j, "event")), "failure");
        json_t *run = json_object_get(j, "run"), *task = json_object_get(j, "task");
        cr_expect_str_eq(json_string_value(json_object_get(task, "id")), id);
        cr_expect_str_eq(json_string_value(json_object_get(task, "name")), "nightly export");
        cr_expect_str_eq(json_string_value(json_object_get(task, "security_group")), "ops");
        cr_expect_eq(json_integer_value(json_object_get(run, "attempt")), 2, "%s", b);
        cr_expect_eq(json_integer_value(json_object_get(run, "max_attempts")), 2);
        cr_expect_str_eq(json_string_value(json_object_get(run, "status")), "failed");
        cr_expect_eq(json_integer_value(json_object_get(run, "exit_code")), 1, "%s", b);
        cr_expect_not_null(json_string_value(json_object_get(run, "nominal_time")));
        const char *tail = json_string_value(json_object_get(j, "log_tail"));
        cr_expect(tail && strstr(tail, "first line\nsecond line\n"), "log tail: %s", b);
        char run_id[64];
        snprintf(run_id, sizeof(run_id), "%s", json_string_value(json_object_get(run, "id")));
        json_decref(j);
        json_decref(got);

        /* the mail */
        rx_wait_t wm = {&mail, "X-Taskbus-Event: failure", 1};
        cr_assert(tbt_wait_until(rx_reached, &wm, 60000), "no mail; log:\n%s",
                  tbt_daemon_log(&st));
        got = rx_last(&mail, "X-Taskbus-Event: failure");
        const char *data = json_string_value(json_object_get(got, "data"));
        cr_expect(strstr(data, "Subject: [taskbus] failure: nightly export (failed)"), "%s", data);
        cr_expect(strstr(data, "second line"), "%s", data);
        cr_expect(strstr(data, "Run attempt: 2"), "%s", data);
        cr_expect(strstr(json_string_value(json_object_get(got, "rcpt")), "ops@example.com"));
        cr_expect(strstr(json_string_value(json_object_get(got, "from")), "taskbus@example.com"));
        json_decref(got);

        /* the unknown channel: recorded failed, at once */
        snprintf(q, sizeof(q), "SELECT status || ' ' || attempts || ' ' || last_error FROM "
                               "notify_deliveries WHERE task_id = '%s' AND channel = 'nowhere'",
                 id);
        tbt_wait_sql(&st, "SELECT 1", "1", 1000);
        for (int i = 0; i < 100 && strncmp(sql1("%s", q), "failed", 6); i++)
                usleep(100000);
        const char *row = sql1("%s", q);
        cr_expect(!strncmp(row, "failed 1 unknown channel 'nowhere'", 34), "%s", row);

        /* the recovery: the receiver refuses the first attempt */
        atomic_store(&hook.fail_next, 1);
        char ok[128];
        snprintf(ok, sizeof(ok), "%s/ok", workdir);
        FILE *fp = fopen(ok, "w");
        cr_assert_not_null(fp);
        fclose(fp);
        run_now(id);
        rx_wait_t wr = {&hook, "X-Taskbus-Event: recovery", 2};
        cr_assert(tbt_wait_until(rx_reached, &wr, 120000), "no recovery webhook; log:\n%s",
                  tbt_daemon_log(&st));
        got = rx_last(&hook, "X-Taskbus-Event: recovery");
        j = json_loads(json_string_value(json_object_get(got, "body")), 0, &je);
        cr_expect_str_eq(json_string_value(json_object_get(j, "event")), "recovery");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "run"), "status")),
                         "succeeded");
        cr_expect_str_eq(json_string_value(json_object_get(j, "previous_outcome")), "failed");
        json_decref(j);
        json_decref(got);

        /* recorded: one delivery per (run, rule, event), every attempt */
        snprintf(q, sizeof(q), "SELECT string_agg(event || ':' || channel || ':' || status || ':' "
                               "|| attempts, ',' ORDER BY id) FROM notify_deliveries WHERE "
                               "task_id = '%s'", id);
        for (int i = 0; i < 100 && !strstr(sql1("%s", q), "recovery:ops:delivered:2"); i++)
                usleep(100000);
        for (int i = 0; i < 100 && strstr(sql1("%s", q), "pending"); i++)
                usleep(100000);
        cr_expect_str_eq(sql1("%s", q),
                         "failure:ops:delivered:1,failure:mail:delivered:1,"
                         "failure:nowhere:failed:1,state_change:ops:delivered:1,"
                         "recovery:ops:delivered:2,state_change:ops:delivered:1");
        snprintf(q, sizeof(q), "SELECT string_agg(a.attempt || ':' || COALESCE(a.status_code, 0) "
                               "|| ':' || (a.error IS NULL), ',' ORDER BY a.attempt) FROM "
                               "notify_attempts a JOIN notify_deliveries d ON d.id = "
                               "a.delivery_id WHERE d.task_id = '%s' AND d.event = 'recovery'",
                 id);
        cr_expect_str_eq(sql1("%s", q), "1:503:false,2:200:true");
        snprintf(q, sizeof(q), "SELECT outcome FROM notify_state WHERE task_id = '%s'", id);
        cr_expect_str_eq(sql1("%s", q), "succeeded");
        snprintf(q, sizeof(q), "SELECT count(*) FROM notify_deliveries WHERE run_id = '%s'",
                 run_id);
        cr_expect_str_eq(sql1("%s", q), "4", "the failure's four notifications, of attempt 2's run");

        /* the run's notifications through the API, for its group */
        char path[200];
        snprintf(path, sizeof(path), "/v1/runs/%s/notifications", run_id);
        r = tbt_http(api_port, "GET", path, alice, NULL);
        cr_expect_eq(r.status, 200, "%ld %s", r.status, r.body.data);
        json_t *items = json_object_get(r.j, "notifications");
        cr_expect_eq(json_array_size(items), 4, "%s", r.body.data);
        json_t *first = json_array_get(items, 0);
        cr_expect_str_eq(json_string_value(json_object_get(first, "event")), "failure");
        cr_expect_str_eq(json_string_value(json_object_get(first, "status")), "delivered");
        cr_expect_eq(json_integer_value(json_object_get(json_array_get(
                             json_object_get(first, "attempts_log"), 0), "status_code")),
                     200, "%s", r.body.data);
        tbt_http_free(&r);

        /* nothing more comes: exactly one failure (none for attempt 1), one recovery */
        sleep(3);
        cr_expect_eq(rx_count(&hook, "X-Taskbus-Event: failure"), 1);
        cr_expect_eq(rx_count(&hook, "X-Taskbus-Event: recovery"), 2, "503, then delivered");
        cr_expect_eq(rx_count(&hook, "X-Taskbus-Event: state_change"), 2,
                     "green -> red, red -> green");
        cr_expect_eq(rx_count(&mail, "X-Taskbus-Event: failure"), 1);
        cr_expect_eq(json_array_size(hook.got), 5);
}

/* POST a task with \p notify; expect a 400 naming \p field. */
static void expect_refused(const char *notify, const char *field) {
        char body[1024];
        snprintf(body, sizeof(body),
                 "{\"name\": \"n\", \"security_group\": \"ops\", \"script\": \"true\", "
                 "\"schedule\": {\"every\": \"1h\"}, \"notify\": %s}",
                 notify);
        tbt_http_res_t r = tbt_http(api_port, "POST", "/v1/tasks", alice, body);
        cr_expect_eq(r.status, 400, "%s: %ld %s", notify, r.status, r.body.data);
        json_t *e = json_object_get(r.j, "error");
        const char *f = json_string_value(json_object_get(e, "field"));
        const char *m = json_string_value(json_object_get(e, "message"));
        cr_expect(f && !strcmp(f, field), "%s: field %s, want %s", notify, f ? f : "(none)",
                  field);
        /* an unknown member is named as 'to' in "valid fields in notify[0]: ..." */
        const char *dot = strrchr(field, '.');
        cr_expect(m && (strstr(m, field) || (dot && strstr(m, dot + 1))),
                  "the message names it: %s", m ? m : "(none)");
        tbt_http_free(&r);
}

Test(notify, bad_rules_are_refused_naming_the_field) {
        expect_refused("{}", "notify");
        expect_refused("[{\"on\": [\"failure\", \"bogus\"], \"channel\": \"ops\"}]",
                       "notify[0].on[1]");
        expect_refused("[{\"on\": [], \"channel\": \"ops\"}]", "notify[0].on");
        expect_refused("[{\"on\": [\"failure\", \"failure\"], \"channel\": \"ops\"}]",
                       "notify[0].on[1]");
        expect_refused("[{\"on\": [\"failure\"], \"channel\": \"ops\"}, {\"on\": [\"failure\"]}]",
                       "notify[1].channel");
        expect_refused("[{\"on\": [\"failure\"], \"channel\": \"\"}]", "notify[0].channel");
        expect_refused("[{\"on\": [\"long_running\"], \"channel\": \"ops\"}]",
                       "notify[0].after_ms");
        expect_refused("[{\"on\": [\"failure\"], \"channel\": \"ops\", \"after_ms\": 60000}]",
                       "notify[0].after_ms");
        expect_refused("[{\"on\": [\"failure\"], \"channel\": \"ops\", \"to\": \"x\"}]",
                       "notify[0].to");
        /* a good one is kept as written */
        tbt_http_res_t r = tbt_http(
                api_port, "POST", "/v1/tasks", alice,
                "{\"name\": \"n\", \"security_group\": \"ops\", \"script\": \"true\", "
                "\"schedule\": {\"every\": \"1h\"}, \"notify\": [{\"on\": [\"FAILURE\", "
                "\"long_running\"], \"channel\": \"ops\", \"after_ms\": 60000}]}");
        cr_assert_eq(r.status, 201, "%ld %s", r.status, r.body.data);
        json_t *rule = json_array_get(json_object_get(r.j, "notify"), 0);
        cr_expect_str_eq(json_string_value(json_array_get(json_object_get(rule, "on"), 0)),
                         "failure");
        cr_expect_eq(json_integer_value(json_object_get(rule, "after_ms")), 60000);
        tbt_http_free(&r);
}

/* `taskbus notify test CHANNEL` as \p authz; @returns its exit status, *out its output. */
static int cli_notify_test(const char *authz, const char *channel, char **out) {
        return tbt_run(out, "TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                            "%s/bin/taskbus notify test %s --timeout 60 2>&1",
                       api_port, authz + strlen("Bearer "), tbt_build_dir(), channel);
}

Test(notify, cli_test_sends_a_signed_test_notification) {
        char *out = NULL;
        int rc = cli_notify_test(admin, "ops", &out);
        cr_expect_eq(rc, 0, "exit %d: %s", rc, out);
        cr_expect(out && strstr(out, "to ops: delivered"), "%s", out);
        free(out);
        cr_expect_eq(rx_count(&hook, "X-Taskbus-Event: test"), 1);
        json_t *got = rx_last(&hook, "X-Taskbus-Event: test");
        cr_assert_not_null(got);
        json_error_t je;
        json_t *j = json_loads(json_string_value(json_object_get(got, "body")), 0, &je);
        cr_expect_str_eq(json_string_value(json_object_get(j, "requested_by")), "root");
        cr_expect_str_eq(json_string_value(json_object_get(j, "event")), "test");
        json_decref(j);
        json_decref(got);

        rc = cli_notify_test(admin, "mail", &out);
        cr_expect_eq(rc, 0, "exit %d: %s", rc, out);
        free(out);
        cr_expect_eq(rx_count(&mail, "X-Taskbus-Event: test"), 1);

        /* an unknown channel: 400 naming it and the channels there are */
        rc = cli_notify_test(admin, "pager", &out);
        cr_expect_eq(rc, 1, "exit %d: %s", rc, out);
        cr_expect(out && strstr(out, "channel: 'pager' is not one; this taskbusd's "
                                     "notify.channels: ops, mail"),
                  "%s", out);
        free(out);
        /* not an admin: 403 */
        rc = cli_notify_test(alice, "ops", &out);
        cr_expect_eq(rc, 1, "exit %d: %s", rc, out);
        cr_expect(out && strstr(out, "403"), "%s", out);
        free(out);
}

Test(notify, long_running_once_per_run) {
        char id[64];
        create_task("{\"name\": \"slow\", \"security_group\": \"ops\", "
                    "\"script\": \"echo started; sleep 6\", \"schedule\": {\"every\": \"1h\"}, "
                    "\"paused\": true, \"notify\": [{\"on\": [\"long_running\"], "
                    "\"channel\": \"ops\", \"after_ms\": 1000}]}",
                    id);
        run_now(id);
        json_t *j = wait_webhook("long_running");
        json_t *run = json_object_get(j, "run");
        cr_expect_str_eq(json_string_value(json_object_get(run, "status")), "running");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "task"), "id")), id);
        cr_expect_geq(json_integer_value(json_object_get(j, "running_for_ms")), 1000);
        cr_expect_eq(json_integer_value(json_object_get(j, "after_ms")), 1000);
        json_decref(j);
        /* the run ends; it was notified once */
        char q[300];
        snprintf(q, sizeof(q), "SELECT status FROM runs WHERE task_id = '%s'", id);
        tbt_wait_sql(&st, q, "succeeded", 60000);
        sleep(2);
        cr_expect_eq(rx_count(&hook, "X-Taskbus-Event: long_running"), 1);
}

Test(notify, skipped_overlap_is_notified) {
        char id[64];
        create_task("{\"name\": \"busy\", \"security_group\": \"ops\", \"script\": \"sleep 4\", "
                    "\"schedule\": {\"every\": \"1s\"}, \"overlap\": \"forbid\", "
                    "\"notify\": [{\"on\": [\"skipped\"], \"channel\": \"ops\"}]}",
                    id);
        json_t *j = wait_webhook("skipped");
        char path[200];
        snprintf(path, sizeof(path), "/v1/tasks/%s/pause", id);
        tbt_http_res_t r = tbt_http(api_port, "POST", path, alice, NULL);
        tbt_http_free(&r);
        json_t *run = json_object_get(j, "run");
        cr_expect_str_eq(json_string_value(json_object_get(j, "event")), "skipped");
        cr_expect_str_eq(json_string_value(json_object_get(run, "status")), "skipped_overlap");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "task"), "id")), id);
        /* recorded once per skipped run */
        char q[300];
        snprintf(q, sizeof(q), "SELECT count(*) = count(DISTINCT run_id) FROM notify_deliveries "
                               "WHERE task_id = '%s' AND event = 'skipped'", id);
        char *v = tbt_sql_value(&st, q);
        cr_expect_str_eq(v, "t");
        free(v);
        json_decref(j);
}

/* Hostile run-results (truncated Avro, not Avro at all, between good ones)
 * are quarantined by the notifier, never retried forever, and a failure
 * that follows is still notified once. */
Test(notify, hostile_run_results_are_set_aside_and_the_notifier_goes_on) {
        char topic[256], *out = NULL;
        tb_topic_name(st.conf, TB_TOPIC_RESULTS, topic, sizeof(topic));
        int rc = tbt_run(&out, "/usr/bin/python3 %s/tests/interop/hostile_records.py runresults "
                               "%s %s 0 2>&1",
                         tbt_source_dir(), st.kafka, topic);
        cr_assert_eq(rc, 0, "hostile_records.py runresults: %s", out);
        free(out);
        tbt_wait_sql(&st, "SELECT count(*) FROM quarantine WHERE role = 'notifier'", "2", 60000);

        char id[64];
        create_task("{\"name\": \"after hostile\", \"security_group\": \"ops\", "
                    "\"script\": \"exit 3\", \"schedule\": {\"every\": \"1h\"}, \"paused\": true, "
                    "\"notify\": [{\"on\": [\"failure\"], \"channel\": \"ops\"}]}",
                    id);
        run_now(id);
        json_t *j = wait_webhook("failure");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "task"), "id")), id,
                         "%s", json_dumps(j, 0));
        json_decref(j);
        tbt_wait_sql(&st, "SELECT count(*) FROM quarantine WHERE role = 'notifier'", "2", 10000);
}
