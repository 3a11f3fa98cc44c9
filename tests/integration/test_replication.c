/**
 * @file test_replication.c
 * @brief Two regions ("eu", "us") started by the test itself: each its own
 *        Kafka (tools/stack kafka-up, own stack dir and ports), database,
 *        taskbusd and MirrorMaker 2 (tools/stack mirror-up) copying the other
 *        region's task-events, runs and run-results into it
 *        (docs/replication.md).
 *
 *  1. a task created in eu is readable in us within seconds (measured) with
 *     the same history; writes to it in us are redirected (307) to eu;
 *  2. a task homed in eu fires only in eu (us's own runs topic stays empty
 *     of it; us sees eu's runs through replication);
 *  3. eu stopped entirely (taskbusd, MirrorMaker 2, Kafka), failover to us:
 *     the task fires in us, no nominal time runs in both regions, and eu
 *     restarted does not fire it (its scheduler is fenced by the epoch).
 */
#include "config/config.h"
#include "identity/identity.h"
#include "identity/signing.h"
#include "replication.h"
#include "serde/serde.h"
#include "store/store.h"
#include "support.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TASK_PERIOD_MS 2000

typedef struct region {
        const char *name, *other;
        char dir[300];
        int kport, api_port;
        char db[80];
        char db_url[700];
        char *config_path;
        char *key_path;
        char log_path[400];
        pid_t pid;
        char token[96];
        tb_config_t *conf;
} region_t;

static region_t R[2] = {{.name = "eu", .other = "us"}, {.name = "us", .other = "eu"}};
static char g_id[16], g_prefix[32], g_tmp[256], g_server[512];
static bool g_started;

/* ---- plumbing ------------------------------------------------------------- */

static bool port_free(int port) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        return ok;
}

/* A port p with p and p + 1 free (Kafka's listener and controller). */
static int pick_ports(int used) {
        for (int i = 0; i < 1000; i++) {
                int p = 21000 + rand() % 18000;
                if (abs(p - used) > 4 && port_free(p) && port_free(p + 1))
                        return p;
        }
        cr_assert_fail("no free ports");
        return 0;
}

/* tools/stack COMMAND for region \p r (output to its stack log). */
static int stack(region_t *r, const char *cmd) {
        region_t *o = r == &R[0] ? &R[1] : &R[0];
        char *out = NULL;
        int rc = tbt_run(&out,
                         "TASKBUS_STACK_DIR=%s TASKBUS_KAFKA_PORT=%d "
                         "TASKBUS_KAFKA_CONTROLLER_PORT=%d TASKBUS_REGION=%s "
                         "TASKBUS_MIRROR_SOURCES=%s=127.0.0.1:%d TASKBUS_TOPIC_PREFIX=%s "
                         "timeout 300 %s/tools/stack %s >>%s/stack.log 2>&1",
                         r->dir, r->kport, r->kport + 1, r->name, o->name, o->kport, g_prefix,
                         tbt_source_dir(), cmd, r->dir);
        free(out);
        return rc;
}

static char *stack_log(region_t *r) {
        char *out = NULL;
        tbt_run(&out, "tail -30 %s/stack.log; tail -30 %s/mirror/mm2.log 2>/dev/null", r->dir,
                r->dir);
        return out;
}

typedef struct http_buf {
        char *data;
        size_t len;
} http_buf_t;

static size_t http_sink(char *p, size_t sz, size_t n, void *ud) {
        http_buf_t *b = ud;
        char *nd = realloc(b->data, b->len + sz * n + 1);
        if (!nd)
                return 0;
        memcpy(nd + b->len, p, sz * n);
        b->len += sz * n;
        nd[b->len] = '\0';
        b->data = nd;
        return sz * n;
}

/* One request to region \p r's API; the body (malloc'd) in *out, Location
 * in \p loc. @returns the status, 0 when there was no answer. */
static long http(region_t *r, const char *method, const char *path, const char *body,
                 char **out, char loc[512]) {
        CURL *c = curl_easy_init();
        char url[512], authz[160];
        http_buf_t b = {0};
        struct curl_slist *h = NULL;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", r->api_port, path);
        snprintf(authz, sizeof(authz), "Authorization: %s", r->token);
        h = curl_slist_append(h, authz);
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_sink);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        if (body)
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        long code = 0;
        if (curl_easy_perform(c) == CURLE_OK) {
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
                char *l = NULL;
                if (loc) {
                        loc[0] = '\0';
                        if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &l) == CURLE_OK && l)
                                snprintf(loc, 512, "%s", l);
                }
        }
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        if (out)
                *out = b.data;
        else
                free(b.data);
        return code;
}

static PGconn *server_conn(const char *db) {
        char url[700];
        if (db)
                snprintf(url, sizeof(url), "%s dbname=%s", g_server, db);
        else
                snprintf(url, sizeof(url), "%s dbname=postgres", g_server);
        PGconn *c = PQconnectdb(url);
        cr_assert_eq(PQstatus(c), CONNECTION_OK, "postgres: %s", PQerrorMessage(c));
        return c;
}

static void sql_ok(PGconn *c, const char *sql) {
        PGresult *r = PQexec(c, sql);
        cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
}

static long long sql_ll(region_t *r, const char *sql) {
        PGconn *c = server_conn(r->db);
        PGresult *res = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
        long long v = PQntuples(res) && !PQgetisnull(res, 0, 0)
                              ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                              : -1;
        PQclear(res);
        PQfinish(c);
        return v;
}

static void daemon_start(region_t *r) {
        tbt_stack_t st = {0};
        st.config_path = r->config_path;
        st.log_path = r->log_path;
        r->pid = tbt_daemon_start(&st, "projector,commands,scheduler,executor,archiver,api");
}

static void daemon_stop(region_t *r) {
        if (r->pid > 0)
                tbt_daemon_stop(r->pid, SIGTERM);
        r->pid = 0;
}

static bool api_up(void *arg) {
        region_t *r = arg;
        return http(r, "GET", "/healthz", NULL, NULL, NULL) == 200;
}

/* The nominal times of the RunRequests of \p task in \p topic on Kafka
 * \p port (read to the end, committed only). */
static size_t topic_nominals(region_t *conf_of, int port, const char *topic, const char *task,
                             int64_t *out, size_t cap) {
        rd_kafka_t *rk = NULL;
        char err[512], bs[64];
        snprintf(bs, sizeof(bs), "127.0.0.1:%d", port);
        cr_assert_eq(tb_repl_reader_new(conf_of->conf, bs, "tbt-repl-reader", &rk, err,
                                        sizeof(err)),
                     TB_OK, "%s", err);
        int parts = (int)conf_of->conf->topic_partitions;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
        for (int p = 0; p < parts; p++)
                rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        cr_assert_eq(rd_kafka_assign(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        int eof = 0;
        size_t n = 0;
        int64_t deadline = tb_mono_us() + 60 * 1000000LL;
        while (eof < parts && tb_mono_us() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        eof++;
                } else if (!m->err) {
                        json_t *v = NULL;
                        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_RUN_REQUEST, NULL, &v,
                                            err, sizeof(err)) == TB_OK &&
                            !strcmp(json_string_value(json_object_get(v, "task_id")), task) &&
                            n < cap)
                                out[n++] = json_integer_value(json_object_get(v, "nominal_time"));
                        json_decref(v);
                }
                rd_kafka_message_destroy(m);
        }
        cr_assert_eq(eof, parts, "%s on %s not read to the end within 60 s", topic, bs);
        tb_bus_consumer_destroy(rk, 5000);
        return n;
}

/* ---- setup / teardown ------------------------------------------------------- */

static void region_config(region_t *r, region_t *o) {
        char text[4096];
        r->key_path = tbt_new_key_file(); /* each region its own internal key */
        snprintf(text, sizeof(text),
                 "security = { key_file = \"%s\"; };\n"
                 "region = \"%s\";\n"
                 "log_level = \"info\";\n"
                 "topics = { prefix = \"%s\"; partitions = 3; };\n"
                 "postgres = { url = \"%s\"; pool_size = 8; };\n"
                 "api = { listen = \"127.0.0.1:%d\"; rate = 1000.0; burst = 100000; };\n"
                 "executor = { lease = \"5s\"; grace = \"5s\"; };\n"
                 "kafka = { bootstrap_servers = \"127.0.0.1:%d\"; };\n"
                 "replication = {\n"
                 "        remote_regions = [\"%s\"];\n"
                 "        region_apis = { %s = \"http://127.0.0.1:%d\"; };\n"
                 "        region_kafka = { %s = \"127.0.0.1:%d\"; };\n"
                 "        startup_fence = \"60s\";\n"
                 "};\n",
                 r->key_path, r->name, g_prefix, r->db_url, r->api_port, r->kport, o->name, o->name,
                 o->api_port, o->name, o->kport);
        r->config_path = tbt_write_temp(".conf", text);
        char err[1024];
        cr_assert_eq(tb_config_load(r->config_path, &r->conf, err, sizeof(err)), TB_OK, "%s",
                     err);
}

static void setup(void) {
        char err[1024];
        srand((unsigned)(getpid() ^ time(NULL)));
        snprintf(g_id, sizeof(g_id), "%08x", (unsigned)rand());
        snprintf(g_prefix, sizeof(g_prefix), "t%s.", g_id);
        snprintf(g_tmp, sizeof(g_tmp), "/tmp/tbrepl-%s", g_id);
        mkdir(g_tmp, 0755);
        chmod(g_tmp, 0755);
        /* the test's own processes: nothing may override their configs */
        const char *drop[] = {"TASKBUS_PG",           "TASKBUS_KAFKA",        "TASKBUS_CONFIG",
                              "TASKBUS_API_LISTEN",   "TASKBUS_REGION",       "TASKBUS_REMOTE_REGIONS",
                              "TASKBUS_REGION_APIS",  "TASKBUS_REGION_KAFKA", "TASKBUS_MIRROR_SOURCES"};
        const char *pg = tbt_env("TASKBUS_PG", "postgresql://taskbus@127.0.0.1:55432/taskbus");
        PGconn *probe = PQconnectdb(pg);
        cr_assert_eq(PQstatus(probe), CONNECTION_OK, "postgres %s: %s", pg, PQerrorMessage(probe));
        snprintf(g_server, sizeof(g_server), "host=%s port=%s user=%s", PQhost(probe),
                 PQport(probe), PQuser(probe));
        PQfinish(probe);
        for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
                unsetenv(drop[i]);
        cr_assert_eq(tb_serde_init(err, sizeof(err)), TB_OK, "%s", err);
        curl_global_init(CURL_GLOBAL_ALL);

        R[0].kport = pick_ports(0);
        R[1].kport = pick_ports(R[0].kport);
        for (int i = 0; i < 2; i++) {
                region_t *r = &R[i];
                do
                        r->api_port = 21000 + rand() % 18000;
                while (!port_free(r->api_port) || abs(r->api_port - R[0].kport) < 3 ||
                       abs(r->api_port - R[1].kport) < 3 || (i && r->api_port == R[0].api_port));
                snprintf(r->dir, sizeof(r->dir), "%s/%s", g_tmp, r->name);
                mkdir(r->dir, 0755);
                snprintf(r->log_path, sizeof(r->log_path), "%s/taskbusd.log", r->dir);
                snprintf(r->db, sizeof(r->db), "tbtest_%s_%s", g_id, r->name);
                snprintf(r->db_url, sizeof(r->db_url), "%s dbname=%s", g_server, r->db);
                PGconn *c = server_conn(NULL);
                char sql[200];
                snprintf(sql, sizeof(sql), "CREATE DATABASE %s", r->db);
                sql_ok(c, sql);
                PQfinish(c);
        }
        g_started = true;
        for (int i = 0; i < 2; i++)
                region_config(&R[i], &R[1 - i]);
        for (int i = 0; i < 2; i++) {
                region_t *r = &R[i];
                tb_store_t *store = NULL;
                int applied = 0;
                cr_assert_eq(tb_store_open(r->conf, &store, err, sizeof(err)), TB_OK, "%s", err);
                PGconn *c = tb_store_acquire(store);
                cr_assert_eq(tb_store_migrate(c, &applied, err, sizeof(err)), TB_OK, "%s", err);
                const char *groups[] = {"ops"};
                char token[72], token_id[32];
                /* the token's signing key is sealed under the region's key */
                tb_sign_key_clear();
                cr_assert_eq(tb_sign_key_init(r->conf, true, err, sizeof(err)), TB_OK, "%s", err);
                cr_assert_eq(tb_identity_user_create(c, "test", "alice", groups, 1, token,
                                                     token_id, err, sizeof(err)),
                             TB_OK, "%s", err);
                snprintf(r->token, sizeof(r->token), "Bearer %s", token);
                tb_store_release(store, c);
                tb_store_destroy(store);
                int rc = stack(r, "kafka-up");
                cr_assert_eq(rc, 0, "kafka of region %s did not start:\n%s", r->name,
                             stack_log(r));
        }
        for (int i = 0; i < 2; i++) {
                char *out = NULL;
                int rc = tbt_run(&out, "%s/bin/taskbus admin topics ensure --config %s",
                                 tbt_build_dir(), R[i].config_path);
                cr_assert_eq(rc, 0, "topics ensure: %s", out ? out : "");
                free(out);
        }
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(stack(&R[i], "mirror-up"), 0, "MirrorMaker 2 of %s:\n%s",
                             R[i].name, stack_log(&R[i]));
                daemon_start(&R[i]);
        }
        for (int i = 0; i < 2; i++)
                cr_assert(tbt_wait_until(api_up, &R[i], 120000), "region %s's API is not up",
                          R[i].name);
}

static void teardown(void) {
        if (!g_started)
                return;
        for (int i = 0; i < 2; i++) {
                daemon_stop(&R[i]);
                stack(&R[i], "mirror-down");
                stack(&R[i], "kafka-down");
                tb_config_destroy(R[i].conf);
                R[i].conf = NULL;
                if (R[i].config_path)
                        unlink(R[i].config_path);
                free(R[i].config_path);
                if (R[i].key_path)
                        unlink(R[i].key_path);
                free(R[i].key_path);
                R[i].config_path = NULL;
                PGconn *c = server_conn(NULL);
                char sql[200];
                snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", R[i].db);
                sql_ok(c, sql);
                PQfinish(c);
        }
        if (!getenv("TBT_KEEP_LOGS")) {
                char *out = NULL;
                tbt_run(&out, "rm -rf %s", g_tmp);
                free(out);
        }
        curl_global_cleanup();
}

/* ---- the scenario ------------------------------------------------------------ */

/* The scheduler of \p arg's region holds at least one task. */
static bool sched_loaded(void *arg) {
        char *m = NULL;
        if (http(arg, "GET", "/metrics", NULL, &m, NULL) != 200 || !m) {
                free(m);
                return false;
        }
        const char *k = strstr(m, "\ntaskbus_scheduler_tasks_loaded ");
        bool ok = k && atof(k + strlen("\ntaskbus_scheduler_tasks_loaded ")) >= 1;
        free(m);
        return ok;
}

typedef struct visible {
        region_t *r;
        const char *path;
} visible_t;

static bool is_visible(void *arg) {
        visible_t *v = arg;
        return http(v->r, "GET", v->path, NULL, NULL, NULL) == 200;
}

typedef struct count_eq {
        region_t *r;
        char sql[512];
        long long want;
} count_eq_t;

static bool count_reached(void *arg) {
        count_eq_t *c = arg;
        return sql_ll(c->r, c->sql) >= c->want;
}

typedef struct home_is {
        region_t *r;
        char sql[300];
} home_is_t;

static bool home_moved(void *arg) {
        home_is_t *h = arg;
        return sql_ll(h->r, h->sql) >= 1;
}

Test(replication, two_regions_read_fire_failover, .init = setup, .fini = teardown,
     .timeout = 900) {
        region_t *eu = &R[0], *us = &R[1];
        char *body = NULL, loc[512], path[256];

        /* (1) created in eu, readable in us; the same history in both */
        int64_t t0 = tb_mono_us();
        long code = http(eu, "POST", "/v1/tasks",
                         "{\"name\": \"repl\", \"script\": \"true\", \"security_group\": \"ops\", "
                         "\"schedule\": {\"every\": \"PT2S\"}, \"misfire\": \"run_once\"}",
                         &body, NULL);
        cr_assert_eq(code, 201, "create in eu: %ld %s", code, body ? body : "");
        json_t *task = json_loads(body, 0, NULL);
        free(body);
        char id[64];
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(task, "id")));
        cr_assert_str_eq(json_string_value(json_object_get(task, "home_region")), "eu");
        json_decref(task);
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        visible_t v = {us, path};
        cr_assert(tbt_wait_until(is_visible, &v, 30000), "task %s is not readable in us", id);
        double lag_ms = (double)(tb_mono_us() - t0) / 1000.0;
        cr_log_info("replication: a task created in eu was readable in us after %.0f ms "
                    "(create round trip included)",
                    lag_ms);
        fprintf(stderr, "replication: created in eu, readable in us after %.0f ms\n", lag_ms);
        cr_expect_lt(lag_ms, 15000, "reads in us lag %.0f ms", lag_ms);

        char hpath[300];
        snprintf(hpath, sizeof(hpath), "/v1/tasks/%s/history", id);
        char *h_eu = NULL, *h_us = NULL;
        cr_assert_eq(http(eu, "GET", hpath, NULL, &h_eu, NULL), 200);
        cr_assert_eq(http(us, "GET", hpath, NULL, &h_us, NULL), 200);
        cr_assert_str_eq(h_us, h_eu, "history differs:\neu %s\nus %s", h_eu, h_us);
        free(h_eu);
        free(h_us);

        /* writes go to the home region: 307 to eu's API, never applied in us */
        char ppath[300], want[600];
        snprintf(ppath, sizeof(ppath), "/v1/tasks/%s/pause", id);
        code = http(us, "POST", ppath, NULL, NULL, loc);
        snprintf(want, sizeof(want), "http://127.0.0.1:%d%s", eu->api_port, ppath);
        cr_assert_eq(code, 307, "pause in us: %ld", code);
        cr_assert_str_eq(loc, want);
        code = http(us, "POST", "/v1/tasks",
                    "{\"name\": \"x\", \"script\": \"true\", \"security_group\": \"ops\", "
                    "\"schedule\": {\"every\": \"PT1M\"}, \"home_region\": \"eu\"}",
                    NULL, loc);
        cr_assert_eq(code, 307, "create homed in eu sent to us: %ld", code);

        /* ... and us's commands role refuses a Kafka command for it */
        tbt_stack_t ust = {.conf = us->conf};
        snprintf(ust.prefix, sizeof(ust.prefix), "%s", g_prefix);
        ust.conn = PQconnectdb(us->db_url); /* where tbt_sign_command finds the token's user */
        cr_assert_eq(PQstatus(ust.conn), CONNECTION_OK, "%s", PQerrorMessage(ust.conn));
        rd_kafka_t *prod = tbt_stack_producer(&ust);
        tbt_reader_t *replies = tbt_reader_new(&ust, TB_TOPIC_REPLIES, true);
        char corr[37];
        const json_t *reply = NULL;
        /* us's commands role learns the task from its copy of eu's events a
         * little after us's projection does: until then it answers
         * NOT_FOUND (also never applied); wait for it to know the task */
        int64_t until = tb_mono_us() + 30 * 1000000LL;
        for (;;) {
                tbt_send_command(&ust, prod, "PAUSE", id, -1, NULL, us->token, NULL, corr);
                rd_kafka_flush(prod, 10000);
                reply = tbt_reader_wait(replies, "correlation_id", corr, 30000);
                cr_assert_not_null(reply, "no reply to a PAUSE sent to us's task-commands");
                if (strcmp(json_string_value(json_object_get(reply, "reason")), "NOT_FOUND") ||
                    tb_mono_us() >= until)
                        break;
                usleep(200 * 1000); /* pace the re-sends */
        }
        cr_assert_str_eq(json_string_value(json_object_get(reply, "status")), "REJECTED");
        cr_assert_str_eq(json_string_value(json_object_get(reply, "reason")), "FORBIDDEN");
        cr_assert_str_eq(json_string_value(json_object_get(reply, "field")), "home_region",
                         "reply: %s", json_string_value(json_object_get(reply, "message")));
        tbt_reader_free(replies);
        rd_kafka_destroy(prod);
        PQfinish(ust.conn);

        /* (2) it fires in eu only: eu's runs reach us by replication */
        count_eq_t runs = {.r = us, .want = 3};
        snprintf(runs.sql, sizeof(runs.sql),
                 "SELECT count(*) FROM runs WHERE task_id = '%s' AND status = 'succeeded'", id);
        cr_assert(tbt_wait_until(count_reached, &runs, 60000),
                  "us does not see 3 finished runs of the eu task");
        char t_runs[256], t_copy[300];
        tb_topic_name(eu->conf, TB_TOPIC_RUNS, t_runs, sizeof(t_runs));
        int64_t nom_eu[512], nom_us[512];
        cr_assert_eq(topic_nominals(us, us->kport, t_runs, id, nom_us, 512), 0,
                     "us fired a task homed in eu");

        /* (3) eu goes away entirely; before its Kafka does, MirrorMaker 2 of us
         * finishes copying what eu's scheduler emitted (a clean outage: see
         * docs/replication.md for the RPO of a crash) */
        daemon_stop(eu);
        size_t n_eu = topic_nominals(eu, eu->kport, t_runs, id, nom_eu, 512);
        cr_assert_geq(n_eu, 3);
        tb_repl_topic_name(us->conf, "eu", TB_TOPIC_RUNS, t_copy, sizeof(t_copy));
        int64_t scratch[512];
        for (int i = 0; i < 600; i++) {
                if (topic_nominals(us, us->kport, t_copy, id, scratch, 512) >= n_eu)
                        break;
                usleep(100 * 1000);
        }
        cr_assert_geq(topic_nominals(us, us->kport, t_copy, id, scratch, 512), n_eu,
                      "us's copy of eu's runs did not catch up");
        runs.want = (long long)n_eu;
        snprintf(runs.sql, sizeof(runs.sql),
                 "SELECT count(*) FROM runs WHERE task_id = '%s'", id);
        cr_assert(tbt_wait_until(count_reached, &runs, 30000), "us did not project eu's runs");
        stack(eu, "mirror-down");
        cr_assert_eq(stack(eu, "kafka-down"), 0);

        char *out = NULL;
        int rc = tbt_run(&out, "%s/bin/taskbus admin region failover eu --to us --config %s",
                         tbt_build_dir(), us->config_path);
        cr_assert_eq(rc, 0, "failover: %s", out ? out : "");
        cr_assert(strstr(out, "moved 1 task(s)"), "failover said: %s", out);
        free(out);

        /* us fires it from now on */
        for (int i = 0; i < 600; i++) {
                if (topic_nominals(us, us->kport, t_runs, id, nom_us, 512) >= 3)
                        break;
                usleep(100 * 1000);
        }
        size_t n_us = topic_nominals(us, us->kport, t_runs, id, nom_us, 512);
        cr_assert_geq(n_us, 3, "us fired the moved task %zu time(s) in 60 s", n_us);
        for (size_t i = 0; i < n_us; i++)
                for (size_t j = 0; j < n_eu; j++)
                        cr_assert_neq(nom_us[i], nom_eu[j],
                                      "nominal time %" PRId64 " ran in both regions", nom_us[i]);

        /* eu comes back: MirrorMaker 2 brings it the HOME_MOVED; it must not fire */
        cr_assert_eq(stack(eu, "kafka-up"), 0, "eu's kafka:\n%s", stack_log(eu));
        cr_assert_eq(stack(eu, "mirror-up"), 0, "eu's MirrorMaker 2:\n%s", stack_log(eu));
        daemon_start(eu);
        cr_assert(tbt_wait_until(api_up, eu, 120000), "eu's API is not up again");
        home_is_t h = {.r = eu};
        snprintf(h.sql, sizeof(h.sql),
                 "SELECT count(*) FROM tasks WHERE id = '%s' AND home_region = 'us' AND "
                 "epoch = 1",
                 id);
        cr_assert(tbt_wait_until(home_moved, &h, 60000),
                  "eu's projection does not show the task homed in us");
        /* eu's scheduler holds the task again (its partitions are loaded: the
         * group gives them back once the old member's session expired) */
        cr_assert(tbt_wait_until(sched_loaded, eu, 180000),
                  "eu's scheduler did not load its partitions again");
        /* long enough for eu to have fired it: us fires 3 more times */
        size_t target = n_us + 3;
        for (int i = 0; i < 600; i++) {
                if (topic_nominals(us, us->kport, t_runs, id, nom_us, 512) >= target)
                        break;
                usleep(100 * 1000);
        }
        n_us = topic_nominals(us, us->kport, t_runs, id, nom_us, 512);
        cr_assert_geq(n_us, target);
        size_t n_eu2 = topic_nominals(eu, eu->kport, t_runs, id, scratch, 512);
        cr_assert_eq(n_eu2, n_eu, "eu fired the task moved to us after it came back (%zu runs, "
                                  "%zu before)",
                     n_eu2, n_eu);
        /* and writes for it in eu now go to us */
        code = http(eu, "POST", ppath, NULL, NULL, loc);
        snprintf(want, sizeof(want), "http://127.0.0.1:%d%s", us->api_port, ppath);
        cr_assert_eq(code, 307, "pause in eu after failover: %ld", code);
        cr_assert_str_eq(loc, want);
        /* us accepts it */
        code = http(us, "POST", ppath, NULL, NULL, NULL);
        cr_assert_eq(code, 200, "pause in us after failover: %ld", code);
}
