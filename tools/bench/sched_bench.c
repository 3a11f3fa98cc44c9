/**
 * @file sched_bench.c
 * @brief Scheduler benchmark (docs/benchmarks.md, "Scheduler").
 *
 *   sched_bench [--tasks N] [--kafka HOST:PORT] [--rate FIRES_PER_S] [--seconds S]
 *               [--burst N] [--partitions P] [--samples FILE]
 *
 * 1. Memory and load: N synthetic tasks (every / cron mix, UUID ids) loaded
 *    into the engine's in-memory structures; RSS from /proc/self/status,
 *    load time, and the next-fire computation rate.
 * 2. With --kafka: the engine writes through a real transactional producer
 *    (one transaction per tick, scheduler.max_batch fires each) on a
 *    throwaway topic prefix:
 *    - sustained: tasks every 10 s spread so that --rate fires are due per
 *      second; fire lag (commit - due) p50 / p99 / p99.9 over --seconds;
 *    - burst: --burst one-shot tasks due at the same instant; the time from
 *      that instant until the last of their runs is committed.
 *
 * It drives the engine alone (scheduler/engine.h), as the role would, and is
 * built with the tree (bin/sched_bench).
 * --samples writes the sustained run's fire lags (ms, sorted), one per
 * line, for the distribution plot of tools/bench/run scheduler.
 * Measure with a release build (-DTB_SANITIZE=OFF): sanitizers double RSS.
 * SCHED_BENCH_DEBUG=1 reports ticks slower than 200 ms on stderr.
 */
#include "bus/bus.h"
#include "config/config.h"
#include "schedule/schedule.h"
#include "scheduler/engine.h"
#include "serde/serde.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long rss_kib(void) {
        FILE *fp = fopen("/proc/self/status", "r");
        char line[256];
        long kib = -1;
        while (fp && fgets(line, sizeof(line), fp))
                if (!strncmp(line, "VmRSS:", 6))
                        kib = strtol(line + 6, NULL, 10);
        if (fp)
                fclose(fp);
        return kib;
}

static double secs(int64_t us) { return (double)us / 1e6; }

static json_t *spec_every(int64_t every_ms) {
        return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:I}, s:I, s:s, s:{s:i, s:I, s:I}, s:s}",
                         "name", "bench", "script", "/usr/bin/true --quiet", "security_group",
                         "bench", "user_id", "bench", "schedule", "kind", "EVERY", "every_ms",
                         (json_int_t)every_ms, "expiry_ms", (json_int_t)60000, "executor",
                         "shell", "retries", "max_attempts", 1, "backoff_ms", (json_int_t)1000,
                         "backoff_max_ms", (json_int_t)60000, "misfire", "RUN_ONCE");
}

static json_t *spec_cron(const char *expr, const char *tz) {
        json_t *s = spec_every(1000);
        json_t *sc = json_object_get(s, "schedule");
        json_object_set_new(sc, "kind", json_string("CRON"));
        json_object_del(sc, "every_ms");
        json_object_set_new(sc, "cron", json_string(expr));
        json_object_set_new(sc, "timezone", json_string(tz));
        return s;
}

static json_t *spec_once(int64_t at) {
        json_t *s = spec_every(1000);
        json_t *sc = json_object_get(s, "schedule");
        json_object_set_new(sc, "kind", json_string("ONCE"));
        json_object_del(sc, "every_ms");
        json_object_set_new(sc, "once_at", json_integer(at));
        return s;
}

static int64_t *g_lags;
static size_t g_lag_cnt, g_lag_cap;
static int64_t g_last_commit;

static void hook(void *opaque, int64_t due, int64_t commit) {
        (void)opaque;
        if (g_lag_cnt == g_lag_cap) {
                g_lag_cap = g_lag_cap ? g_lag_cap * 2 : 65536;
                g_lags = realloc(g_lags, g_lag_cap * sizeof(*g_lags));
        }
        g_lags[g_lag_cnt++] = commit - due;
        g_last_commit = commit;
}

static int cmp64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

static int64_t pct(double p) {
        if (!g_lag_cnt)
                return -1;
        size_t i = (size_t)(p * (double)(g_lag_cnt - 1));
        return g_lags[i];
}

static void put(tb_sched_t *s, int partitions, json_t *spec, int64_t created, int64_t now) {
        char id[37], err[512];
        tb_uuid4(id);
        int32_t p = tb_bus_partition_for(id, strlen(id), partitions);
        if (tb_sched_task_put(s, p, id, 1, created, spec, now, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "sched_bench: %s\n", err);
                exit(1);
        }
}

/* Tick until nothing is due before \p until (epoch ms). */
static void run_until(tb_sched_t *s, int64_t until, size_t *fires) {
        char err[1024];
        while (tb_now_ms() < until) {
                tb_sched_tick_stats_t st;
                int64_t t0 = tb_mono_us();
                tb_err_t terr = tb_sched_tick(s, tb_now_ms(), &st, err, sizeof(err));
                if (getenv("SCHED_BENCH_DEBUG") && tb_mono_us() - t0 > 200000)
                        fprintf(stderr, "slow tick: %.3f s, %zu fires, %zu checkpoints\n",
                                secs(tb_mono_us() - t0), st.fires, st.checkpoints);
                if (terr != TB_OK) {
                        fprintf(stderr, "sched_bench: tick: %s\n", err);
                        exit(1);
                }
                *fires += st.fires;
                if (st.more)
                        continue;
                int64_t due = tb_sched_next_due(s), now = tb_now_ms();
                int64_t wait = due - now;
                if (wait > 5)
                        wait = 5;
                if (wait > 0)
                        usleep((useconds_t)(wait * 1000));
        }
}

int main(int argc, char **argv) {
        long tasks = 1000000, rate = 10000, seconds = 30, burst = 100000, partitions = 8;
        long max_batch = 0;
        const char *kafka = NULL, *samples = NULL;
        const char *props[16];
        size_t prop_cnt = 0;
        static const struct option opts[] = {
                {"tasks", required_argument, NULL, 't'}, {"kafka", required_argument, NULL, 'k'},
                {"rate", required_argument, NULL, 'r'},  {"seconds", required_argument, NULL, 's'},
                {"burst", required_argument, NULL, 'b'}, {"partitions", required_argument, NULL, 'p'},
                {"kafka-prop", required_argument, NULL, 'K'},
                {"max-batch", required_argument, NULL, 'B'},
                {"samples", required_argument, NULL, 'S'},
                {NULL, 0, NULL, 0},
        };
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 't': tasks = atol(optarg); break;
                case 'k': kafka = optarg; break;
                case 'r': rate = atol(optarg); break;
                case 's': seconds = atol(optarg); break;
                case 'b': burst = atol(optarg); break;
                case 'p': partitions = atol(optarg); break;
                case 'B': max_batch = atol(optarg); break;
                case 'S': samples = optarg; break;
                case 'K':
                        if (prop_cnt < 16 && strchr(optarg, '='))
                                props[prop_cnt++] = optarg;
                        break;
                default:
                        fprintf(stderr, "usage: sched_bench [--tasks N] [--kafka HOST:PORT] "
                                        "[--rate N] [--seconds S] [--burst N] [--partitions P] "
                                        "[--max-batch N] [--kafka-prop NAME=VALUE]... [--samples FILE]\n");
                        return 2;
                }
        }
        char err[2048];
        tb_log_set_level(TB_LOG_WARN);
        tb_config_t *conf = NULL;
        if (kafka)
                setenv("TASKBUS_KAFKA", kafka, 1);
        if (tb_config_load(NULL, &conf, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }
        conf->topic_partitions = partitions;
        if (max_batch > 0)
                conf->sched_max_batch = max_batch;
        /* extra librdkafka properties (name=value), as the config's kafka group */
        if (prop_cnt) {
                tb_kv_t *kv = realloc(conf->kafka, (conf->kafka_cnt + prop_cnt) * sizeof(*kv));
                if (!kv)
                        return 1;
                conf->kafka = kv;
                for (size_t i = 0; i < prop_cnt; i++) {
                        const char *eq = strchr(props[i], '=');
                        kv[conf->kafka_cnt].key = strndup(props[i], (size_t)(eq - props[i]));
                        kv[conf->kafka_cnt].value = strdup(eq + 1);
                        conf->kafka_cnt++;
                }
        }
        if (tb_serde_init(err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }

        /* ---- 1. memory and load ------------------------------------------------ */
        tb_sched_t *s = NULL;
        if (tb_sched_new(conf, "bench", &s, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }
        static const char *const crons[] = {"*/5 * * * *", "0 3 * * *", "15 */2 * * 1-5",
                                            "0 0 L * *", "30 9 * * MON#1"};
        static const char *const zones[] = {"UTC", "Europe/Paris", "America/Los_Angeles"};
        json_t *every = spec_every(60000), *cr[15];
        for (int i = 0; i < 15; i++)
                cr[i] = spec_cron(crons[i % 5], zones[i / 5]);
        int64_t now = tb_now_ms();
        long rss0 = rss_kib();
        int64_t t0 = tb_mono_us();
        for (long i = 0; i < tasks; i++) {
                /* half interval tasks with spread anchors, half cron */
                if (i % 2 == 0)
                        put(s, (int)partitions, every, now - (i % 60000), now);
                else
                        put(s, (int)partitions, cr[i % 15], now, now);
        }
        int64_t t1 = tb_mono_us();
        long rss1 = rss_kib();
        printf("load: %ld tasks in %.2f s (%.0f tasks/s); RSS %ld -> %ld MiB (+%.0f bytes/task)\n",
               tasks, secs(t1 - t0), (double)tasks / secs(t1 - t0), rss0 / 1024, rss1 / 1024,
               tasks ? (double)(rss1 - rss0) * 1024.0 / (double)tasks : 0.0);
        /* next-fire computation rate, on the same schedule shapes */
        tb_schedule_t sc[3] = {0};
        sc[0].kind = TB_SCHEDULE_EVERY;
        sc[0].every_ms = 60000;
        sc[0].anchor_ms = now;
        sc[1].kind = TB_SCHEDULE_CRON;
        tb_cron_parse("15 */2 * * 1-5", &sc[1].cron, err, sizeof(err));
        tb_tz_open("Europe/Paris", &sc[1].tz, err, sizeof(err));
        sc[2].kind = TB_SCHEDULE_CRON;
        tb_cron_parse("30 9 * * MON#1", &sc[2].cron, err, sizeof(err));
        tb_tz_open("America/Los_Angeles", &sc[2].tz, err, sizeof(err));
        static const char *const names[] = {"every 60s", "cron '15 */2 * * 1-5' Europe/Paris",
                                            "cron '30 9 * * MON#1' America/Los_Angeles"};
        for (int k = 0; k < 3; k++) {
                int64_t after = now, n, cnt = 200000;
                int64_t a = tb_mono_us();
                for (int64_t i = 0; i < cnt; i++) {
                        if (tb_schedule_next(&sc[k], after, &n, NULL, err, sizeof(err)) != TB_OK)
                                break;
                        after = n;
                }
                int64_t b = tb_mono_us();
                printf("next-fire: %s: %.2f M/s (%.0f ns each)\n", names[k],
                       (double)cnt / secs(b - a) / 1e6, (double)(b - a) * 1000.0 / (double)cnt);
        }
        tb_schedule_clear(&sc[1]);
        tb_schedule_clear(&sc[2]);
        tb_sched_destroy(s);
        json_decref(every);
        for (int i = 0; i < 15; i++)
                json_decref(cr[i]);
        if (!kafka) {
                tb_config_destroy(conf);
                return 0;
        }

        /* ---- 2. with a broker ------------------------------------------------- */
        char prefix[64];
        unsigned char rnd[4];
        tb_random_bytes(rnd, sizeof(rnd));
        snprintf(prefix, sizeof(prefix), "bench%02x%02x%02x%02x.", rnd[0], rnd[1], rnd[2], rnd[3]);
        free(conf->topic_prefix);
        conf->topic_prefix = strdup(prefix);
        conf->topic_replication = 1;
        if (tb_bus_topics_ensure(conf, 60000, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "topics: %s\n", err);
                return 1;
        }
        rd_kafka_t *prod = NULL;
        char txn[128];
        snprintf(txn, sizeof(txn), "%sbench", prefix);
        if (tb_bus_producer_new(conf, txn, &prod, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "producer: %s\n", err);
                return 1;
        }
        /* sustained: rate fires/s = tasks every 10 s with anchors spread over 10 s */
        if (tb_sched_new(conf, "bench", &s, err, sizeof(err)) != TB_OK)
                return 1;
        tb_sched_set_kafka(s, prod, NULL);
        tb_sched_set_fire_hook(s, hook, NULL);
        json_t *e10 = spec_every(10000);
        long n = rate * 10;
        now = tb_now_ms();
        int64_t start = now + 2000;
        for (long i = 0; i < n; i++)
                put(s, (int)partitions, e10, start + (i * 10000) / n, now);
        json_decref(e10);
        size_t fires = 0;
        /* warm-up: the first transactions on fresh topics wait for partition
         * leaders and the transaction coordinator; measure after them */
        run_until(s, start + 3000, &fires);
        g_lag_cnt = 0;
        fires = 0;
        int64_t a = tb_now_ms();
        run_until(s, a + seconds * 1000, &fires);
        int64_t b = tb_now_ms();
        qsort(g_lags, g_lag_cnt, sizeof(*g_lags), cmp64);
        if (samples) {
                FILE *sf = fopen(samples, "w");
                for (size_t i = 0; sf && i < g_lag_cnt; i++)
                        fprintf(sf, "%" PRId64 "\n", g_lags[i]);
                if (!sf || fclose(sf))
                        fprintf(stderr, "sched_bench: cannot write %s\n", samples);
        }
        printf("sustained: %ld tasks every 10 s, %zu fires in %.1f s = %.0f fires/s; "
               "fire lag p50 %" PRId64 " ms, p99 %" PRId64 " ms, p99.9 %" PRId64 " ms, max %" PRId64
               " ms (max_batch %" PRId64 ")\n",
               n, fires, (double)(b - a) / 1000.0, (double)fires * 1000.0 / (double)(b - a),
               pct(0.50), pct(0.99), pct(0.999), g_lag_cnt ? g_lags[g_lag_cnt - 1] : -1,
               conf->sched_max_batch);
        tb_sched_destroy(s);

        /* burst: N one-shot tasks at the same instant */
        if (tb_sched_new(conf, "bench", &s, err, sizeof(err)) != TB_OK)
                return 1;
        tb_sched_set_kafka(s, prod, NULL);
        tb_sched_set_fire_hook(s, hook, NULL);
        now = tb_now_ms();
        int64_t at = (now / 1000 + 3) * 1000 + 5000 * (burst > 500000);
        for (long i = 0; i < burst; i++) {
                json_t *o = spec_once(at);
                put(s, (int)partitions, o, now, now);
                json_decref(o);
        }
        g_lag_cnt = 0;
        fires = 0;
        if (tb_now_ms() >= at)
                fprintf(stderr, "sched_bench: loading the burst took past its instant\n");
        run_until(s, at, &fires);
        while (fires < (size_t)burst && tb_now_ms() < at + 60000)
                run_until(s, tb_now_ms() + 10, &fires);
        printf("burst: %ld runs due at one instant, all committed %.3f s after it "
               "(%.0f fires/s)\n",
               burst, (double)(g_last_commit - at) / 1000.0,
               (double)burst * 1000.0 / (double)(g_last_commit - at > 0 ? g_last_commit - at : 1));
        tb_sched_destroy(s);
        rd_kafka_destroy(prod);
        tb_bus_topics_delete(conf, 30000, err, sizeof(err));
        tb_config_destroy(conf);
        free(g_lags);
        return 0;
}
