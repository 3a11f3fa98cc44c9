/**
 * @file exec_burst.c
 * @brief The "super peak" benchmark of the executor role: N RunRequests
 *        (750 by default) with the same nominal time, a few seconds ahead,
 *        on ONE executor process with the shell plugin. Each task records
 *        when its process started (`date +%s%N > $DIR/$TASKBUS_RUN_ID`);
 *        the benchmark reports nominal-time-to-process-start p50/p99/max.
 *
 *   exec_burst [--runs N] [--lead-ms MS] [--partitions P] [--taskbusd PATH]
 *              [--samples FILE]
 *
 * --samples writes every run's start lag (ms after the nominal time), one
 * per line, for the timeline plot of tools/bench/run burst.
 *
 * It builds a private stack on the shared Kafka and PostgreSQL
 * ($TASKBUS_KAFKA, $TASKBUS_PG, else the dev stack's): a random topic
 * prefix, a throwaway database (migrated), a config file, and a taskbusd
 * child (--roles executor); everything is removed at the end. Exit status 0
 * when every run started within 5 s of its nominal time.
 *
 * Tasks run as the default group policy's user (nobody), so the result
 * directory is world-writable. Build with the lead's CMake lines (see
 * docs/benchmarks.md); use a build without sanitizers for real numbers.
 */
#include "bus/bus.h"
#include "config/config.h"
#include "serde/serde.h"
#include "store/store.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_PG "postgresql://taskbus@127.0.0.1:55432/taskbus"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "exec_burst: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        exit(2);
}

static const char *env_or(const char *name, const char *dflt) {
        const char *v = getenv(name);
        return v && *v ? v : dflt;
}

/* The base URL with dbname replaced, key='value' form. */
static void pg_url_for(const char *base, const char *db, char *out, size_t size) {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(base, &perr);
        if (!opts) {
                char shown[1024], why[512];
                tb_store_oneline_redacted(base, base, shown, sizeof(shown));
                tb_store_oneline_redacted(base, perr ? perr : "unparsable", why, sizeof(why));
                die("TASKBUS_PG '%s': %s", shown, why);
        }
        size_t len = 0;
        out[0] = '\0';
        for (PQconninfoOption *o = opts; o->keyword; o++)
                if (o->val && *o->val && strcmp(o->keyword, "dbname"))
                        len += (size_t)snprintf(out + len, size - len, "%s='%s' ", o->keyword,
                                                o->val);
        snprintf(out + len, size - len, "dbname='%s'", db);
        PQconninfoFree(opts);
}

static void admin_sql(const char *base, const char *sql) {
        char url[1024];
        pg_url_for(base, "postgres", url, sizeof(url));
        PGconn *c = PQconnectdb(url);
        if (PQstatus(c) != CONNECTION_OK) {
                char shown[1024], why[512];
                tb_store_oneline_redacted(url, url, shown, sizeof(shown));
                tb_store_oneline_redacted(url, PQerrorMessage(c), why, sizeof(why));
                die("connect %s: %s", shown, why);
        }
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
                die("%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
}

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

static int64_t pct(const int64_t *v, size_t n, double p) {
        size_t i = (size_t)(p * (double)(n - 1) + 0.5);
        return v[i < n ? i : n - 1];
}

int main(int argc, char **argv) {
        int runs = 750, partitions = 6;
        int64_t lead_ms = 5000;
        char taskbusd[4096] = "";
        const char *samples = NULL;
        static const struct option opts[] = {
                {"runs", required_argument, NULL, 'n'},
                {"lead-ms", required_argument, NULL, 'l'},
                {"partitions", required_argument, NULL, 'p'},
                {"taskbusd", required_argument, NULL, 't'},
                {"samples", required_argument, NULL, 's'},
                {NULL, 0, NULL, 0},
        };
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'n': runs = atoi(optarg); break;
                case 'l': lead_ms = atoll(optarg); break;
                case 'p': partitions = atoi(optarg); break;
                case 't': snprintf(taskbusd, sizeof(taskbusd), "%s", optarg); break;
                case 's': samples = optarg; break;
                default: die("usage: exec_burst [--runs N] [--lead-ms MS] [--partitions P] "
                             "[--taskbusd PATH] [--samples FILE]");
                }
        }
        if (runs < 1 || runs > 100000 || lead_ms < 1000 || partitions < 1)
                die("--runs must be 1..100000, --lead-ms at least 1000, --partitions >= 1");
        if (!*taskbusd) {
                /* next to this program (build/bin), else the build tree's */
                char self[3900];
                ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
                self[n > 0 ? n : 0] = '\0';
                char *slash = strrchr(self, '/');
                if (slash)
                        *slash = '\0';
                snprintf(taskbusd, sizeof(taskbusd), "%s/taskbusd", self);
        }
        if (access(taskbusd, X_OK) != 0)
                die("%s is not executable (--taskbusd PATH)", taskbusd);

        char err[2048], id[16], prefix[32], db[64], url[1024], dir[64], group[128];
        const char *base_pg = env_or("TASKBUS_PG", DEFAULT_PG);
        const char *kafka = env_or("TASKBUS_KAFKA", "127.0.0.1:9092");
        unsigned char rnd[5];
        tb_random_bytes(rnd, sizeof(rnd));
        snprintf(id, sizeof(id), "%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4]);
        snprintf(prefix, sizeof(prefix), "bench%s.", id);
        snprintf(db, sizeof(db), "tbbench_%s", id);
        snprintf(dir, sizeof(dir), "/tmp/tb-burst-%s", id);
        if (mkdir(dir, 0777) != 0 || chmod(dir, 0777) != 0)
                die("mkdir %s: %s", dir, strerror(errno));
        char sql[200];
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
        admin_sql(base_pg, sql);
        pg_url_for(base_pg, db, url, sizeof(url));

        char conf_path[128], log_path[128];
        snprintf(conf_path, sizeof(conf_path), "%s.conf", dir);
        snprintf(log_path, sizeof(log_path), "%s.log", dir);
        FILE *fp = fopen(conf_path, "w");
        if (!fp)
                die("%s: %s", conf_path, strerror(errno));
        fprintf(fp,
                "log_level = \"warn\";\n"
                "topics = { prefix = \"%s\"; partitions = %d; };\n"
                "postgres = { url = \"%s\"; pool_size = 8; };\n"
                "kafka = { bootstrap_servers = \"%s\"; };\n"
                "executor = { max_concurrent = %d; };\n",
                prefix, partitions, url, kafka, runs > 1000 ? runs : 1000);
        fclose(fp);
        unsetenv("TASKBUS_PG");
        unsetenv("TASKBUS_CONFIG");

        tb_config_t *conf = NULL;
        tb_store_t *store = NULL;
        if (tb_config_load(conf_path, &conf, err, sizeof(err)) ||
            tb_serde_init(err, sizeof(err)) || tb_store_open(conf, &store, err, sizeof(err)))
                die("%s", err);
        PGconn *pg = tb_store_acquire(store);
        if (tb_store_migrate(pg, NULL, err, sizeof(err)) ||
            tb_bus_topics_ensure(conf, 60000, err, sizeof(err)))
                die("%s", err);

        pid_t pid = fork();
        if (pid == 0) {
                FILE *lf = freopen(log_path, "w", stderr);
                (void)lf;
                execl(taskbusd, taskbusd, "--config", conf_path, "--roles", "executor",
                      (char *)NULL);
                _exit(127);
        }

        /* A reader of run-results, started before the burst. */
        rd_kafka_t *prod = NULL, *cons = NULL;
        snprintf(group, sizeof(group), "%sbench-reader", prefix);
        tb_consumer_opts_t co = {.group_id = group, .offset_reset = "earliest"};
        const tb_topic_t topics[] = {TB_TOPIC_RESULTS};
        if (tb_bus_producer_new(conf, NULL, &prod, err, sizeof(err)) ||
            tb_bus_consumer_new(conf, &co, topics, 1, &cons, err, sizeof(err)))
                die("%s", err);
        /* Let the executor join its group before the clock starts. */
        for (int i = 0; i < 100; i++) {
                rd_kafka_consumer_poll(cons, 100);
                char *log = NULL;
                size_t cap = 0;
                FILE *l = fopen(log_path, "r");
                bool ready = false;
                while (l && getline(&log, &cap, l) > 0)
                        ready |= strstr(log, "assigned") != NULL;
                free(log);
                if (l)
                        fclose(l);
                if (ready)
                        break;
        }

        int64_t nominal = tb_now_ms() + lead_ms;
        char script[256];
        snprintf(script, sizeof(script), "date +%%s%%N > %s/$TASKBUS_RUN_ID", dir);
        int64_t p0 = tb_now_ms();
        for (int i = 0; i < runs; i++) {
                char run_id[64], task_id[64];
                snprintf(run_id, sizeof(run_id), "burst-%05d", i);
                snprintf(task_id, sizeof(task_id), "burst-task-%05d", i);
                json_t *v = json_pack(
                        "{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:{s:s, s:s, s:[], s:s, s:s, s:{}, "
                        "s:I, s:s, s:i, s:I}}",
                        "run_id", run_id, "task_id", task_id, "task_version", (json_int_t)1,
                        "nominal_time", (json_int_t)nominal, "attempt", 1, "trigger", "SCHEDULE",
                        "emitted_at", (json_int_t)tb_now_ms(), "snapshot", "name", "burst",
                        "script", script, "argv", "security_group", "bench", "executor",
                        "shell", "executor_options", "expiry_ms", (json_int_t)60000, "overlap",
                        "FORBID", "max_attempts", 1, "log_retention_ms", (json_int_t)3600000);
                tb_buf_t b = {0};
                if (!v || tb_serde_encode(TB_SCHEMA_RUN_REQUEST, v, &b, err, sizeof(err)) ||
                    tb_bus_produce(prod, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, task_id,
                                   strlen(task_id), b.data, b.len, NULL, 0, false, err,
                                   sizeof(err)))
                        die("run %d: %s", i, err);
                json_decref(v);
                tb_buf_free(&b);
        }
        rd_kafka_flush(prod, 30000);
        int64_t produced = tb_now_ms();
        printf("produced %d RunRequests in %" PRId64 " ms, %" PRId64 " ms before the nominal "
               "time\n", runs, produced - p0, nominal - produced);

        /* Wait for every final result. */
        int done = 0, ok = 0;
        int64_t give_up = tb_mono_us() + (lead_ms + 120000) * 1000;
        while (done < runs && tb_mono_us() < give_up) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 200);
                if (!m)
                        continue;
                json_t *v = NULL;
                if (!m->err && tb_serde_decode(m->payload, m->len, TB_SCHEMA_RUN_RESULT, NULL,
                                               &v, err, sizeof(err)) == TB_OK) {
                        const char *s = json_string_value(json_object_get(v, "status"));
                        if (s && strcmp(s, "RUNNING")) {
                                done++;
                                ok += !strcmp(s, "SUCCEEDED");
                        }
                        json_decref(v);
                }
                rd_kafka_message_destroy(m);
        }
        int64_t all_done = tb_now_ms();

        int64_t *lag = calloc((size_t)runs, sizeof(int64_t));
        size_t n = 0;
        for (int i = 0; i < runs; i++) {
                char path[128];
                snprintf(path, sizeof(path), "%s/burst-%05d", dir, i);
                FILE *f = fopen(path, "r");
                long long ns = 0;
                if (f && fscanf(f, "%lld", &ns) == 1)
                        lag[n++] = ns / 1000000 - nominal;
                if (f)
                        fclose(f);
        }
        qsort(lag, n, sizeof(int64_t), cmp_i64);
        if (samples) {
                FILE *sf = fopen(samples, "w");
                for (size_t i = 0; sf && i < n; i++)
                        fprintf(sf, "%" PRId64 "\n", lag[i]);
                if (!sf || fclose(sf))
                        fprintf(stderr, "exec_burst: cannot write %s\n", samples);
        }
        size_t within5 = 0;
        for (size_t i = 0; i < n; i++)
                within5 += lag[i] <= 5000;
        printf("results: %d final (%d SUCCEEDED) of %d, all done %" PRId64 " ms after the "
               "nominal time\n", done, ok, runs, all_done - nominal);
        if (n)
                printf("start lag (process start - nominal time) over %zu runs: min %" PRId64
                       " ms, p50 %" PRId64 " ms, p99 %" PRId64 " ms, max %" PRId64 " ms; "
                       "%zu started within 5 s\n",
                       n, lag[0], pct(lag, n, 0.50), pct(lag, n, 0.99), lag[n - 1], within5);
        bool pass = n == (size_t)runs && within5 == n && ok == runs;

        kill(pid, SIGTERM);
        int status;
        waitpid(pid, &status, 0);
        tb_store_release(store, pg);
        tb_store_destroy(store);
        if (tb_bus_topics_delete(conf, 30000, err, sizeof(err)))
                fprintf(stderr, "exec_burst: deleting topics: %s\n", err);
        rd_kafka_consumer_close(cons);
        rd_kafka_destroy(cons);
        rd_kafka_destroy(prod);
        tb_config_destroy(conf);
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
        admin_sql(base_pg, sql);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir, conf_path);
        if (system(cmd) != 0)
                fprintf(stderr, "exec_burst: cleanup of %s failed\n", dir);
        if (!pass)
                fprintf(stderr, "exec_burst: FAILED the goal (all started within 5 s); "
                        "taskbusd log: %s\n", log_path);
        else
                unlink(log_path);
        free(lag);
        return pass ? 0 : 1;
}
