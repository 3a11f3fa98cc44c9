/**
 * @file test_quarantine.c
 * @brief Poison isolation (bus/pgsink.h, store/quarantine.h) against real
 *        Kafka and PostgreSQL, with records written by a producer that is
 *        not taskbus's code (tests/interop/hostile_records.py: python3-avro
 *        encodes, kcat produces), each burst on one partition, between good
 *        records, in one batch:
 *  - task-events: an 8,000-character task_id (index row size, 54000),
 *    truncated Avro (decode), an `at` out of range (22008), a task a CHECK
 *    constraint refuses (23514), a NUL inside a task name (22P05: jsonb has
 *    no \u0000), an actor that is not UTF-8 (decode): the good records are
 *    projected, the bad
 *    ones quarantined with their error, key, headers and bytes, REST creates
 *    right after are projected (201, not 202), a task every second created
 *    after them fires (scheduler and executor go on), the metric counts them, and
 *    `taskbus replay` into an empty database equals the projection row for
 *    row, quarantine included;
 *    (the scheduler keeps its own rows for the long id, the truncated record
 *    and the actor that is not UTF-8);
 *  - runs (projector; the executor dead-letters and quarantines them):
 *    truncated Avro, JSON;
 *  - run-results (projector): truncated Avro, not Avro at all;
 *  - run-logs (archiver): garbage, truncated Avro, an `at` out of range;
 *  - task-commands (commands, whose transactions are Kafka's): truncated Avro
 *    and garbage are quarantined too, and REST goes on;
 *  - scheduler-checkpoints: a garbage checkpoint is quarantined by the
 *    scheduler when it loads the partition;
 *  - `taskbus admin quarantine list|show|retry|drop`: a retried record is
 *    applied once the constraint that refused it is gone.
 */
#include "support.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static tbt_stack_t g_st;
static pid_t g_pid;
static int g_port;
static char *g_conf;
static char g_alice[96];

/* ---- a daemon with a known API port --------------------------------------------- */

static pid_t daemon_start(const char *roles) {
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(g_st.log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                        close(fd);
                }
                unsetenv("TASKBUS_KAFKA");
                unsetenv("TASKBUS_API_LISTEN");
                execl(bin, bin, "--config", g_conf, "--roles", roles, (char *)NULL);
                _exit(127);
        }
        return pid;
}

static void hostile(const char *mode, tb_topic_t topic, const char *more);

static void setup(void) {
        tbt_stack_create(&g_st, NULL);
        /* an operator's constraint: the projection refuses what it forbids */
        free(tbt_sql_value(&g_st, "ALTER TABLE tasks ADD CONSTRAINT tbt_no_forbidden "
                                  "CHECK (name <> 'forbidden by check')"));
        g_port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "security = { key_file = \"%s\"; };\n"
                              "topics = { prefix = \"%s\"; partitions = %d; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 100000.0; burst = 100000; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              g_st.key_path, g_st.prefix, (int)g_st.conf->topic_partitions,
                              g_st.db_url, g_port, g_st.kafka),
                     0);
        g_conf = tbt_write_temp(".conf", text);
        free(text);
        tbt_stack_user(&g_st, "alice", "ops", g_alice);
        /* a garbage checkpoint, read by the scheduler when it loads partition 0 */
        hostile("checkpoints", TB_TOPIC_CHECKPOINTS, NULL);
        g_pid = daemon_start("api,commands,projector,archiver,scheduler,executor");
}

static void teardown(void) {
        if (g_pid > 0)
                tbt_daemon_stop(g_pid, SIGTERM);
        if (g_conf) {
                unlink(g_conf);
                free(g_conf);
        }
        tbt_stack_destroy(&g_st);
}

TestSuite(quarantine, .init = setup, .fini = teardown, .timeout = 600);

/* ---- helpers ---------------------------------------------------------------------- */

static size_t on_data(char *p, size_t s, size_t n, void *ud) {
        tb_buf_append(ud, p, s * n);
        return s * n;
}

/* One request; the body (NUL-terminated) into *body. @returns the status (0: none). */
static long http(const char *method, const char *path, const char *body, tb_buf_t *out) {
        char url[512], ah[200];
        long status = 0;
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", g_port, path);
        snprintf(ah, sizeof(ah), "Authorization: %s", g_alice);
        h = curl_slist_append(h, ah);
        h = curl_slist_append(h, "Content-Type: application/json");
        h = curl_slist_append(h, "Expect:");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
        if (body)
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        tb_buf_append(out, "", 1);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        return status;
}

static bool api_up(void *arg) {
        (void)arg;
        tb_buf_t b = {0};
        long st = http("GET", "/healthz", NULL, &b);
        tb_buf_free(&b);
        return st == 200;
}

static long long sql_ll(PGconn *conn, const char *sql) {
        PGresult *r = PQexec(conn, sql);
        long long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                              ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                              : -1;
        PQclear(r);
        return v;
}

typedef struct count_wait {
        PGconn *conn;
        const char *sql;
        long long want;
} count_wait_t;

static bool count_reached(void *arg) {
        count_wait_t *w = arg;
        return sql_ll(w->conn, w->sql) == w->want;
}

static void wait_count(const char *sql, long long want) {
        count_wait_t w = {g_st.conn, sql, want};
        bool ok = tbt_wait_until(count_reached, &w, 120000);
        if (!ok) {
                char *log = tbt_daemon_log(&g_st);
                cr_log_error("daemon log:\n%s", log);
                free(log);
        }
        cr_assert(ok, "'%s' is %lld, never reached %lld", sql, sql_ll(g_st.conn, sql), want);
}

/** Run hostile_records.py MODE on the stack's TOPIC, partition 0. */
static void hostile(const char *mode, tb_topic_t topic, const char *more) {
        char name[256], *out = NULL;
        tb_topic_name(g_st.conf, topic, name, sizeof(name));
        int rc = tbt_run(&out, "/usr/bin/python3 %s/tests/interop/hostile_records.py %s %s %s 0 %s",
                         tbt_source_dir(), mode, g_st.kafka, name, more ? more : "");
        cr_assert_eq(rc, 0, "hostile_records.py %s: %s", mode, out);
        cr_log_info("hostile %s: %s", mode, out);
        free(out);
}

/** The projector's quarantine rows of \p topic (what `taskbus replay` sets
 *  aside too) as "role|partition|offset|sqlstate|..." lines, oldest first. */
static char *rows_of(PGconn *conn, tb_topic_t topic) {
        char name[256], sql[1024];
        tb_topic_name(g_st.conf, topic, name, sizeof(name));
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(string_agg(concat_ws('|', role, partition, \"offset\", "
                 "coalesce(sqlstate, '-'), md5(value), md5(key), header_names::text, "
                 "header_values::text), E'\\n' ORDER BY \"offset\"), '') FROM quarantine "
                 "WHERE topic = '%s' AND role = 'projector'",
                 name);
        PGresult *r = PQexec(conn, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
        char *s = strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        return s;
}

static char *value_of(PGconn *conn, const char *sql) {
        PGresult *r = PQexec(conn, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(conn));
        char *s = PQntuples(r) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
        PQclear(r);
        return s;
}

static const char dump_tasks_sql[] =
        "SELECT coalesce(string_agg(concat_ws('|', id, version, name, security_group, user_id, "
        "spec::text, paused, labels::text, home_region, epoch, created_at, created_by, "
        "updated_at, event_partition, event_offset), E'\\n' ORDER BY id), '') FROM tasks";
static const char dump_history_sql[] =
        "SELECT coalesce(string_agg(concat_ws('|', task_id, version, event_id, type, at, actor, "
        "command_id, changed_fields::text, spec::text, security_group), E'\\n' "
        "ORDER BY task_id, version), '') FROM task_history";

static int cli(char **out, const char *args) {
        return tbt_run(out, "%s/bin/taskbus admin quarantine %s --config %s", tbt_build_dir(),
                       args, g_st.config_path);
}

/* ---- the test ----------------------------------------------------------------------- */

Test(quarantine, poison_records_are_set_aside_and_every_role_goes_on) {
        char sql[1024], events[256], *out = NULL;
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API never came up");
        tb_topic_name(g_st.conf, TB_TOPIC_EVENTS, events, sizeof(events));

        /* task-events: good-a, long-id, truncated, range, check, good-b */
        hostile("events", TB_TOPIC_EVENTS, NULL);
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'projector'",
                 events);
        wait_count(sql, 6);
        wait_count("SELECT count(*) FROM tasks WHERE id IN ('q-good-a', 'q-good-b')", 2);
        cr_assert_eq(sql_ll(g_st.conn, "SELECT count(*) FROM tasks WHERE length(id) > 200 OR "
                                       "id IN ('q-trunc', 'q-range', 'q-check')"),
                     0, "nothing of a refused record is kept");
        cr_assert_eq(sql_ll(g_st.conn, "SELECT count(*) FROM task_history WHERE "
                                       "length(task_id) > 200 OR task_id IN ('q-range', 'q-check')"),
                     0, "not even the history row written before the refusal");
        /* in offset order: each with its error */
        snprintf(sql, sizeof(sql),
                 "SELECT string_agg(concat_ws('|', role, coalesce(sqlstate, '-'), status), ',' "
                 "ORDER BY \"offset\") FROM quarantine WHERE topic = '%s' AND "
                 "role = 'projector'",
                 events);
        char *got = value_of(g_st.conn, sql);
        cr_assert_str_eq(got, "projector|54000|new,projector|-|new,projector|22008|new,"
                              "projector|23514|new,projector|22P05|new,projector|-|new");
        free(got);
        snprintf(sql, sizeof(sql),
                 "SELECT string_agg(error, E'\\n' ORDER BY \"offset\") FROM quarantine "
                 "WHERE topic = '%s'",
                 events);
        got = value_of(g_st.conn, sql);
        cr_assert(strstr(got, "index row size"), "%s", got);
        cr_assert(strstr(got, "out of range"), "%s", got);
        cr_assert(strstr(got, "tbt_no_forbidden"), "%s", got);
        cr_assert(strstr(got, "\\u0000 cannot be converted to text"), "%s", got);
        cr_log_info("errors:\n%s", got);
        free(got);
        /* raw bytes, key and headers kept */
        snprintf(sql, sizeof(sql),
                 "SELECT concat_ws('|', convert_from(key, 'UTF8'), length(value), "
                 "convert_from(header_names[1], 'UTF8'), convert_from(header_values[1], 'UTF8'), "
                 "cardinality(header_names)) FROM quarantine WHERE sqlstate = '54000'");
        got = value_of(g_st.conn, sql);
        cr_assert_str_eq(got, "hostile|8477|x-origin|hostile_records.py|2");
        free(got);
        cr_assert_eq(sql_ll(g_st.conn, "SELECT count(*) FROM quarantine WHERE sqlstate IS NULL "
                                       "AND role = 'projector' AND "
                                       "position(convert_to('q-trunc', 'UTF8') in value) > 0"),
                     1, "the truncated record's bytes are kept as they came");
        /* the scheduler, tailing task-events, keeps its own rows for the three it
         * cannot use: the long id, the truncated record, the actor not UTF-8 */
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'scheduler'",
                 events);
        wait_count(sql, 3);
        cr_assert_eq(sql_ll(g_st.conn, "SELECT count(*) FROM quarantine WHERE role = "
                                       "'scheduler' AND error = 'task id must be 1 to 256 bytes'"),
                     1);

        /* task-commands: the commands role (Kafka-transactional) quarantines what it
         * cannot decode and goes on */
        hostile("commands", TB_TOPIC_COMMANDS, NULL);
        wait_count("SELECT count(*) FROM quarantine WHERE role = 'commands' AND "
                   "sqlstate IS NULL AND status = 'new'",
                   2);

        /* REST writes right after are projected in time: 201, not 202 */
        for (int i = 0; i < 8; i++) {
                char body[256];
                tb_buf_t b = {0};
                snprintf(body, sizeof(body),
                         "{\"name\":\"after-%d\",\"script\":\"/bin/true\",\"security_group\":"
                         "\"ops\",\"schedule\":{\"every\":\"1h\"}}",
                         i);
                long st = http("POST", "/v1/tasks", body, &b);
                cr_assert_eq(st, 201, "create %d after the poison: %ld %s", i, st, b.data);
                tb_buf_free(&b);
        }

        /* the scheduler set the garbage checkpoint aside when it loaded partition 0 */
        char ck[256];
        tb_topic_name(g_st.conf, TB_TOPIC_CHECKPOINTS, ck, sizeof(ck));
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE role = 'scheduler' AND topic = '%s' "
                 "AND partition = 0 AND error = 'not a SchedulerCheckpoint'",
                 ck);
        wait_count(sql, 1);

        /* runs: the projector quarantines, the executor dead-letters, both go on */
        hostile("runs", TB_TOPIC_RUNS, NULL);
        char runs_topic[256];
        tb_topic_name(g_st.conf, TB_TOPIC_RUNS, runs_topic, sizeof(runs_topic));
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'projector' "
                 "AND sqlstate IS NULL",
                 runs_topic);
        wait_count(sql, 2);
        /* and the executor keeps its own rows for them, besides runs-dlq */
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'executor' "
                 "AND sqlstate IS NULL",
                 runs_topic);
        wait_count(sql, 2);

        /* fires keep firing: a task every second, created after the poison */
        tb_buf_t fb = {0};
        long fst = http("POST", "/v1/tasks",
                        "{\"name\":\"ticker\",\"script\":\"/bin/true\",\"security_group\":"
                        "\"ops\",\"schedule\":{\"every\":\"1s\"}}",
                        &fb);
        cr_assert_eq(fst, 201, "%ld %s", fst, fb.data);
        tb_buf_free(&fb);
        count_wait_t fw = {g_st.conn,
                           "SELECT (count(*) >= 3)::int FROM runs r JOIN tasks t ON t.id = r.task_id "
                           "WHERE t.name = 'ticker' AND r.status = 'succeeded'",
                           1};
        bool fired = tbt_wait_until(count_reached, &fw, 120000);
        if (!fired) {
                char *log = tbt_daemon_log(&g_st);
                cr_log_error("daemon log:\n%s", log);
                free(log);
        }
        cr_assert(fired, "the scheduler and executor go on after the poison");

        /* run-results (projector) and run-logs (archiver) */
        hostile("runresults", TB_TOPIC_RESULTS, NULL);
        hostile("logs", TB_TOPIC_LOGS, "q-log-run");
        char results[256], logs[256];
        tb_topic_name(g_st.conf, TB_TOPIC_RESULTS, results, sizeof(results));
        tb_topic_name(g_st.conf, TB_TOPIC_LOGS, logs, sizeof(logs));
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'projector' "
                 "AND sqlstate IS NULL",
                 results);
        wait_count(sql, 2);
        wait_count("SELECT count(*) FROM runs WHERE run_id IN ('q-run-good', 'q-run-good-2')", 2);
        snprintf(sql, sizeof(sql),
                 "SELECT string_agg(concat_ws('|', role, coalesce(sqlstate, '-')), ',' "
                 "ORDER BY \"offset\") FROM quarantine WHERE topic = '%s'",
                 logs);
        count_wait_t w = {g_st.conn,
                          "SELECT count(*) FROM quarantine WHERE role = 'archiver'", 3};
        cr_assert(tbt_wait_until(count_reached, &w, 120000), "archiver quarantine");
        got = value_of(g_st.conn, sql);
        cr_assert_str_eq(got, "archiver|-,archiver|-,archiver|22008");
        free(got);
        wait_count("SELECT count(*) FROM run_logs WHERE run_id = 'q-log-run' AND seq IN (0, 1)",
                   2);
        cr_assert_eq(sql_ll(g_st.conn, "SELECT count(*) FROM run_logs WHERE run_id = 'q-log-run'"),
                     2);

        /* the metric counts them, by role and topic */
        tb_buf_t m = {0};
        cr_assert_eq(http("GET", "/metrics", NULL, &m), 200);
        char want[512];
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"projector\",topic=\"%s\"} 6\n", events);
        cr_assert(strstr(m.data, want), "no '%s' in:\n%s", want, m.data);
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"projector\",topic=\"%s\"} 2\n", results);
        cr_assert(strstr(m.data, want), "no '%s'", want);
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"archiver\",topic=\"%s\"} 3\n", logs);
        cr_assert(strstr(m.data, want), "no '%s'", want);
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"projector\",topic=\"%s\"} 2\n", runs_topic);
        cr_assert(strstr(m.data, want), "no '%s'", want);
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"executor\",topic=\"%s\"} 2\n", runs_topic);
        cr_assert(strstr(m.data, want), "no '%s'", want);
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"scheduler\",topic=\"%s\"} 3\n", events);
        cr_assert(strstr(m.data, want), "no '%s'", want);
        char commands[256];
        tb_topic_name(g_st.conf, TB_TOPIC_COMMANDS, commands, sizeof(commands));
        snprintf(want, sizeof(want),
                 "taskbus_quarantined_total{role=\"commands\",topic=\"%s\"} 2\n", commands);
        cr_assert(strstr(m.data, want), "no '%s'", want);
        tb_buf_free(&m);
        /* logged once each */
        char *log = tbt_daemon_log(&g_st);
        int n = 0;
        for (const char *p = log; (p = strstr(p, " quarantined (taskbus admin quarantine")); p++)
                n++;
        /* 16 by the projector, archiver, commands and the checkpoint loader,
         * 3 by the scheduler on task-events, 2 by the executor on runs */
        cr_assert_eq(n, 21, "each quarantined record is logged once: %d", n);
        free(log);

        /* replay into an empty database (same operator constraint) equals the projection */
        wait_count("SELECT count(*) FROM tasks", 2 + 8 + 1);
        char url[1024];
        tbt_stack_new_db(&g_st, "replay", url, sizeof(url));
        PGconn *rconn = PQconnectdb(url);
        cr_assert_eq(PQstatus(rconn), CONNECTION_OK, "%s", PQerrorMessage(rconn));
        char err[1024];
        cr_assert_eq(tb_store_migrate(rconn, NULL, err, sizeof(err)), TB_OK, "%s", err);
        PQclear(PQexec(rconn, "ALTER TABLE tasks ADD CONSTRAINT tbt_no_forbidden "
                              "CHECK (name <> 'forbidden by check')"));
        int rc = tbt_run(&out, "%s/bin/taskbus replay --into \"%s\" --config %s", tbt_build_dir(),
                         url, g_st.config_path);
        cr_assert_eq(rc, 0, "replay failed: %s", out);
        cr_assert(strstr(out, "6 quarantined"), "replay reports what it set aside: %s", out);
        cr_assert(strstr(out, "into 11 tasks"), "%s", out);
        cr_log_info("%s", out);
        free(out);
        char *t1 = value_of(g_st.conn, dump_tasks_sql), *t2 = value_of(rconn, dump_tasks_sql);
        cr_assert_str_eq(t2, t1, "replayed tasks differ from the projection");
        free(t1);
        free(t2);
        t1 = value_of(g_st.conn, dump_history_sql);
        t2 = value_of(rconn, dump_history_sql);
        cr_assert_str_eq(t2, t1, "replayed history differs from the projection");
        free(t1);
        free(t2);
        t1 = rows_of(g_st.conn, TB_TOPIC_EVENTS);
        t2 = rows_of(rconn, TB_TOPIC_EVENTS);
        cr_assert_str_eq(t2, t1, "replay quarantined other records than the projector");
        free(t1);
        free(t2);
        PQfinish(rconn);

        /* admin quarantine list, with filters */
        rc = cli(&out, "list");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "index row size"), "%s", out);
        free(out);
        rc = cli(&out, "list --role archiver --status new --json");
        cr_assert_eq(rc, 0, "%s", out);
        json_error_t je;
        json_t *arr = json_loads(out, 0, &je);
        cr_assert(json_is_array(arr), "%s", out);
        cr_assert_eq(json_array_size(arr), 3, "%s", out);
        free(out);
        json_decref(arr);
        snprintf(sql, sizeof(sql), "list --topic %s --role projector --json", events);
        rc = cli(&out, sql);
        arr = json_loads(out, 0, &je);
        cr_assert_eq(json_array_size(arr), 6, "%s", out);
        json_decref(arr);
        free(out);
        rc = cli(&out, "list --status lost");
        cr_assert_eq(rc, 2, "a bad filter is refused: %s", out);
        free(out);

        /* show: the error, key, headers, bytes */
        char *check_id = value_of(g_st.conn, "SELECT id FROM quarantine WHERE sqlstate = '23514'");
        char *long_id = value_of(g_st.conn, "SELECT id FROM quarantine WHERE sqlstate = '54000'");
        snprintf(sql, sizeof(sql), "show %s", check_id);
        rc = cli(&out, sql);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "sqlstate: 23514"), "%s", out);
        cr_assert(strstr(out, "tbt_no_forbidden"), "%s", out);
        cr_assert(strstr(out, "key (7 bytes, text): hostile"), "%s", out);
        cr_assert(strstr(out, "header x-origin (18 bytes, text): hostile_records.py"), "%s", out);
        cr_assert(strstr(out, "value (451 bytes, hex):"), "%s", out);
        cr_assert(strstr(out, "|..$forbidden by |"), "the ASCII column: %s", out);
        cr_assert(strstr(out, "header x-\\xc3\\xa9 (7 bytes, hex):"),
                  "a header name that is not ASCII is escaped: %s", out);
        free(out);
        snprintf(sql, sizeof(sql), "show %s --json", long_id);
        rc = cli(&out, sql);
        cr_assert_eq(rc, 0, "%s", out);
        json_t *o = json_loads(out, 0, &je);
        cr_assert_not_null(o, "%s", out);
        cr_assert_eq(json_integer_value(json_object_get(json_object_get(o, "value"), "bytes")),
                     8477);
        cr_assert_eq(strlen(json_string_value(
                             json_object_get(json_object_get(o, "value"), "hex"))),
                     2 * 8477);
        json_decref(o);
        free(out);
        rc = cli(&out, "show 999999");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "no record 999999"), "%s", out);
        free(out);

        /* retry: once the constraint is gone, the re-produced record is applied */
        free(tbt_sql_value(&g_st, "ALTER TABLE tasks DROP CONSTRAINT tbt_no_forbidden"));
        snprintf(sql, sizeof(sql), "retry %s", check_id);
        rc = cli(&out, sql);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "marked retried"), "%s", out);
        free(out);
        wait_count("SELECT count(*) FROM tasks WHERE id = 'q-check' AND "
                   "name = 'forbidden by check'",
                   1);
        snprintf(sql, sizeof(sql), "SELECT status FROM quarantine WHERE id = %s", check_id);
        got = value_of(g_st.conn, sql);
        cr_assert_str_eq(got, "retried");
        free(got);
        /* drop; a dropped record is not retried */
        snprintf(sql, sizeof(sql), "drop %s", long_id);
        rc = cli(&out, sql);
        cr_assert_eq(rc, 0, "%s", out);
        free(out);
        snprintf(sql, sizeof(sql), "retry %s", long_id);
        rc = cli(&out, sql);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "dropped"), "%s", out);
        free(out);
        rc = cli(&out, "list --status dropped --json");
        arr = json_loads(out, 0, &je);
        cr_assert_eq(json_array_size(arr), 1, "%s", out);
        cr_assert_eq(json_integer_value(json_object_get(json_array_get(arr, 0), "id")),
                     strtoll(long_id, NULL, 10));
        json_decref(arr);
        free(out);
        /* the long id is still refused: a second retry would be quarantined again, the
         * projection went on all along */
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'projector'",
                 events);
        cr_assert_eq(sql_ll(g_st.conn, sql), 6);
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM quarantine WHERE topic = '%s' AND role = 'scheduler'",
                 events);
        cr_assert_eq(sql_ll(g_st.conn, sql), 3, "the retried task is one the scheduler takes");
        free(check_id);
        free(long_id);
}
