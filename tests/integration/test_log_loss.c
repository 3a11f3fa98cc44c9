/**
 * @file test_log_loss.c
 * @brief Log chunks Kafka never takes are counted and their gap is marked
 *        where it happened: a private Kafka (tools/stack kafka-up, its own
 *        folder and ports, so stopping it disturbs no other test), one
 *        taskbusd with every role and executor.log_delivery_timeout = 2s, a
 *        task printing a line every 100 ms; the broker is SIGSTOPped while
 *        the run prints, until the executor counted lost chunks, then
 *        resumed. The run's log then shows the executor's marker
 *        "[taskbus: N chunks (B bytes) lost]" between the lines before and
 *        after the outage, and taskbus_executor_log_chunks_lost_total moved.
 */
#include <criterion/criterion.h>
#include <sys/prctl.h>

#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t st;
static char alice[96];
static int port, kport;
static pid_t daemon_pid;
static char *conf_path;
static char kdir[64];
static bool kafka_started;

/* ---- plumbing ------------------------------------------------------------------- */

static bool port_free(int p) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        return ok;
}

/* tools/stack COMMAND for the private Kafka (output to its stack log). */
static int kafka(const char *cmd) {
        char *out = NULL;
        int rc = tbt_run(&out,
                         "TASKBUS_STACK_DIR=%s TASKBUS_KAFKA_PORT=%d "
                         "TASKBUS_KAFKA_CONTROLLER_PORT=%d timeout 300 %s/tools/stack %s "
                         ">>%s/stack.log 2>&1",
                         kdir, kport, kport + 1, tbt_source_dir(), cmd, kdir);
        free(out);
        return rc;
}

static pid_t kafka_pid(void) {
        char path[128];
        snprintf(path, sizeof(path), "%s/kafka/kafka.pid", kdir);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "no %s", path);
        long pid = 0;
        cr_assert_eq(fscanf(f, "%ld", &pid), 1);
        fclose(f);
        return (pid_t)pid;
}

static tbt_http_res_t http(const char *method, const char *path, const char *body) {
        return tbt_http(port, method, path, alice, body);
}

#define hfree tbt_http_free

/** The value of metric \p name (no labels) on /metrics, -1 when absent. */
static double metric(const char *name) {
        tbt_http_res_t r = http("GET", "/metrics", NULL);
        double v = -1;
        size_t n = strlen(name);
        for (const char *l = r.body.data; l && *l;) {
                if (!strncmp(l, name, n) && l[n] == ' ') {
                        v = strtod(l + n + 1, NULL);
                        break;
                }
                l = strchr(l, '\n');
                l = l ? l + 1 : NULL;
        }
        hfree(&r);
        return v;
}

static bool chunks_lost(void *arg) {
        (void)arg;
        return metric("taskbus_executor_log_chunks_lost_total") > 0;
}

static bool api_up(void *arg) {
        (void)arg;
        return tbt_http_up(&port);
}

static void wait_sql(const char *sql, const char *want, int ms) {
        tbt_wait_sql(&st, sql, want, ms);
}

/* The log page at \p path: complete, with at least one gap marker and each
 * of them the executor's (with its bytes), none the reader's own. */
typedef struct log_want {
        const char *path;
        tb_buf_t text;
} log_want_t;

static bool log_settled(void *arg) {
        log_want_t *w = arg;
        tbt_http_res_t r = http("GET", w->path, NULL);
        tb_buf_free(&w->text);
        w->text = r.body;
        r.body = (tb_buf_t){0};
        hfree(&r);
        const char *t = w->text.data ? w->text.data : "";
        return strstr(t, "line-300\n") && strstr(t, " bytes) lost]\n");
}

/* ---- the stack ------------------------------------------------------------------- */

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        snprintf(kdir, sizeof(kdir), "/tmp/tbt-logloss-XXXXXX");
        cr_assert_not_null(mkdtemp(kdir));
        chmod(kdir, 0755);
        srand((unsigned)getpid());
        do
                kport = 21000 + rand() % 18000;
        while (!port_free(kport) || !port_free(kport + 1));
        cr_assert_eq(kafka("kafka-up"), 0, "the private Kafka did not start (%s/stack.log)",
                     kdir);
        kafka_started = true;
        char bootstrap[64];
        snprintf(bootstrap, sizeof(bootstrap), "127.0.0.1:%d", kport);
        setenv("TASKBUS_KAFKA", bootstrap, 1); /* tbt_stack_create() reads it */
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 1});
        tbt_stack_user(&st, "alice", "ga", alice);
        port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = 1; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 10000.0; burst = 10000; };\n"
                              "executor = { log_delivery_timeout = \"2s\"; lease = \"30s\"; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        tbt_stack_t d = st; /* the stack with this test's config */
        d.config_path = conf_path;
        daemon_pid = tbt_daemon_start(&d, "api,commands,projector,scheduler,executor,archiver");
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API did not come up");
}

static void teardown(void) {
        if (kafka_started)
                kill(kafka_pid(), SIGCONT); /* a failed test may leave it stopped */
        bool sanitizer = false, clean = tbt_daemon_end(&st, daemon_pid, &sanitizer);
        daemon_pid = 0;
        if (conf_path) {
                unlink(conf_path);
                free(conf_path);
                conf_path = NULL;
        }
        tbt_stack_destroy(&st);
        if (kafka_started)
                kafka("kafka-down");
        tbt_run(NULL, "rm -rf %s", kdir);
        curl_global_cleanup();
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
        cr_assert(clean, "taskbusd did not exit cleanly");
}

TestSuite(log_loss, .init = setup, .fini = teardown, .timeout = 600);

/* ---- the test -------------------------------------------------------------------- */

Test(log_loss, broker_stopped_while_chunks_are_in_flight) {
        char at[32], *body = NULL, sql[512];
        /* far enough ahead that the scheduler, just started, loaded its partition */
        tb_time_format((tb_now_ms() / 1000 + 6) * 1000, at);
        cr_assert_gt(asprintf(&body,
                              "{\"name\":\"chatty\",\"script\":\"for i in $(seq 1 300); do echo "
                              "line-$i; sleep 0.1; done\",\"security_group\":\"ga\","
                              "\"schedule\":{\"once\":\"%s\"}}",
                              at),
                     0);
        tbt_http_res_t r = http("POST", "/v1/tasks", body);
        free(body);
        cr_assert_eq(r.status, 201, "create: %ld %s", r.status, r.body.data);
        char task[64];
        snprintf(task, sizeof(task), "%s", json_string_value(json_object_get(r.j, "id")));
        hfree(&r);
        cr_assert_leq(metric("taskbus_executor_log_chunks_lost_total"), 0,
                     "chunks lost before the outage");

        /* the run prints and its first chunks are archived */
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) >= 3 FROM run_logs l JOIN runs r USING (run_id) "
                 "WHERE r.task_id = '%s'", task);
        wait_sql(sql, "t", 60000);
        pid_t kp = kafka_pid();
        cr_assert_eq(kill(kp, SIGSTOP), 0);
        cr_log_info("broker %d stopped", (int)kp);
        /* until a chunk surely not written is counted (those in flight at the
         * stop only time out with their request, and may have been written) */
        bool lost = tbt_wait_until(chunks_lost, NULL, 90000);
        cr_assert_eq(kill(kp, SIGCONT), 0);
        cr_assert(lost, "no log chunk counted lost while the broker was stopped");
        cr_log_info("chunks lost: %.0f (%.0f bytes), unconfirmed %.0f; broker resumed",
                    metric("taskbus_executor_log_chunks_lost_total"),
                    metric("taskbus_executor_log_bytes_lost_total"),
                    metric("taskbus_executor_log_chunks_unconfirmed_total"));

        /* the run ends; its log is complete, with the marker where the gap is */
        snprintf(sql, sizeof(sql), "SELECT status FROM runs WHERE task_id = '%s'", task);
        wait_sql(sql, "succeeded", 120000);
        snprintf(sql, sizeof(sql), "SELECT run_id FROM runs WHERE task_id = '%s'", task);
        char *run = tbt_sql_value(&st, sql);
        char path[256];
        snprintf(path, sizeof(path), "/v1/runs/%s/log?limit=4194304", run);
        log_want_t w = {path, {0}};
        bool settled = tbt_wait_until(log_settled, &w, 120000);
        const char *text = w.text.data ? w.text.data : "";
        cr_log_info("log of run %s:\n%s", run, text);
        cr_assert(settled, "the log did not end with the executor's gap marker:\n%s", text);
        /* the executor's marker: N chunks, B bytes */
        const char *mark = strstr(text, " bytes) lost]\n");
        while (mark > text && mark[-1] != '\n')
                mark--;
        long n = 0;
        char bytes[32] = "";
        cr_assert_eq(sscanf(mark, "[taskbus: %ld chunk%*[s ](%31[0-9,] byte", &n, bytes), 2,
                     "not the executor's marker: %.80s", mark);
        cr_assert_gt(n, 0);
        cr_assert_geq(metric("taskbus_executor_log_chunks_lost_total"), (double)n);
        /* every line is there but those of the lost chunks, in order, and
         * wherever lines are missing a marker stands in their place */
        int prev = 0, seen = 0;
        bool marked = false;
        for (const char *l = text; *l;) {
                const char *e = strchr(l, '\n');
                cr_assert_not_null(e, "the text does not end with a newline: %s", l);
                if (!strncmp(l, "[taskbus: ", 10)) {
                        cr_assert(strstr(l, "lost]") && strstr(l, "lost]") < e, "%.*s",
                                  (int)(e - l), l);
                        marked = true;
                } else {
                        int i = 0;
                        cr_assert_eq(sscanf(l, "line-%d", &i), 1, "%.*s", (int)(e - l), l);
                        cr_assert_gt(i, prev, "line-%d after line-%d", i, prev);
                        cr_assert(i == prev + 1 || marked, "line-%d follows line-%d unmarked", i,
                                  prev);
                        prev = i;
                        marked = false;
                        seen++;
                }
                l = e + 1;
        }
        cr_assert_eq(prev, 300);
        cr_assert_lt(seen, 300, "no line was lost, yet a marker says so");
        tb_buf_free(&w.text);
        free(run);
}
