/**
 * @file tbdump.c
 * @brief Dump a taskbus topic as JSON lines, and account for fires.
 *
 *   tbdump --config FILE [--uncommitted] [--timeout S] TOPIC
 *   tbdump --check-fires EXPECT.json --runs RUNS.jsonl --results RESULTS.jsonl
 *          [--starts STARTS.txt]
 *
 * The first form reads every partition of TOPIC (a short name: runs,
 * run-results, task-events, task-replies, task-commands, run-logs, runs-dlq,
 * scheduler-checkpoints; the config's prefix is added) from offset 0 to its
 * end, read_committed unless --uncommitted, and prints one JSON object per
 * record: the Avro value decoded with tb_serde_decode() plus "_partition",
 * "_offset", "_ts" (record timestamp, ms) and "_key". A record that does
 * not decode is printed as {"_undecodable": "<reason>", ...}. Exit status 1
 * if the end was not reached within --timeout seconds (120).
 *
 * The second form is the fire accounting of tests/support/support_checker.c (the
 * one the scheduler failover test uses) over dumped files, for tools/chaos:
 * it prints the report as one JSON object; exit status 0 when nothing was
 * duplicated or lost.
 */
#include "bus/bus.h"
#include "config/config.h"
#include "serde/serde.h"

/* The checker is shared with the integration tests; the benchmark programs
 * are built from one source file each, so it is compiled in here. */
#include "../../tests/support/support_checker.c"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
        fprintf(stderr, "usage: tbdump --config FILE [--uncommitted] [--timeout S] TOPIC\n"
                        "       tbdump --check-fires EXPECT.json --runs RUNS.jsonl "
                        "--results RESULTS.jsonl [--starts STARTS.txt]\n");
        return 2;
}

static int topic_of(const char *name, tb_topic_t *out) {
        for (int t = 0; t < TB_TOPIC__COUNT; t++)
                if (!strcmp(tb_topic_short((tb_topic_t)t), name)) {
                        *out = (tb_topic_t)t;
                        return 0;
                }
        fprintf(stderr, "tbdump: unknown topic '%s'; one of:", name);
        for (int t = 0; t < TB_TOPIC__COUNT; t++)
                fprintf(stderr, " %s", tb_topic_short((tb_topic_t)t));
        fprintf(stderr, "\n");
        return -1;
}

static int dump(const char *config, const char *short_name, bool committed, int timeout_s) {
        char err[2048], name[256];
        tb_config_t *conf = NULL;
        rd_kafka_conf_t *c = NULL;
        rd_kafka_t *rk = NULL;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_partition_list_t *l = NULL;
        bool *eof = NULL;
        int rc = 1, parts = 0;
        tb_topic_t topic;

        if (topic_of(short_name, &topic))
                return 2;
        tb_log_set_level(TB_LOG_ERROR);
        if (tb_config_load(config, &conf, err, sizeof(err)) != TB_OK ||
            tb_serde_init(err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "tbdump: %s\n", err);
                goto fail;
        }
        tb_topic_name(conf, topic, name, sizeof(name));
        if (tb_bus_conf_new(conf, &c, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "tbdump: %s\n", err);
                goto fail;
        }
        /* assign-only: the group id is never joined, it only names the client */
        char group[300];
        snprintf(group, sizeof(group), "%stbdump", conf->topic_prefix);
        const char *props[][2] = {
                {"group.id", group},
                {"isolation.level", committed ? "read_committed" : "read_uncommitted"},
                {"enable.auto.commit", "false"},
                {"enable.partition.eof", "true"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(props); i++)
                if (rd_kafka_conf_set(c, props[i][0], props[i][1], err, sizeof(err)) !=
                    RD_KAFKA_CONF_OK) {
                        fprintf(stderr, "tbdump: %s: %s\n", props[i][0], err);
                        goto fail;
                }
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        if (!rk) {
                fprintf(stderr, "tbdump: %s\n", err);
                goto fail;
        }
        c = NULL; /* owned by rk */
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, name, NULL);
        rd_kafka_resp_err_t merr = rd_kafka_metadata(rk, 0, rkt, &md, 30000);
        rd_kafka_topic_destroy(rkt);
        if (merr || !md || md->topic_cnt != 1 || md->topics[0].err) {
                fprintf(stderr, "tbdump: metadata of %s: %s\n", name,
                        rd_kafka_err2str(merr ? merr
                                              : md && md->topic_cnt ? md->topics[0].err
                                                                    : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
                goto fail;
        }
        parts = md->topics[0].partition_cnt;
        eof = calloc((size_t)parts, sizeof(bool));
        l = rd_kafka_topic_partition_list_new(parts);
        if (!eof || !l)
                goto fail;
        for (int p = 0; p < parts; p++)
                rd_kafka_topic_partition_list_add(l, name, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        if (rd_kafka_assign(rk, l)) {
                fprintf(stderr, "tbdump: assign failed\n");
                goto fail;
        }
        int64_t until = tb_mono_us() + (int64_t)timeout_s * 1000000;
        int left = parts;
        while (left > 0 && tb_mono_us() < until) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        if (m->partition >= 0 && m->partition < parts && !eof[m->partition]) {
                                eof[m->partition] = true;
                                left--;
                        }
                } else if (m->err) {
                        fprintf(stderr, "tbdump: %s [%d]: %s\n", name, (int)m->partition,
                                rd_kafka_message_errstr(m));
                } else {
                        json_t *v = NULL;
                        char derr[512];
                        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_ANY, NULL, &v, derr,
                                            sizeof(derr)) != TB_OK) {
                                v = json_object();
                                json_object_set_new(v, "_undecodable", json_string(derr));
                        }
                        json_object_set_new(v, "_partition", json_integer(m->partition));
                        json_object_set_new(v, "_offset", json_integer(m->offset));
                        json_object_set_new(v, "_ts",
                                            json_integer(rd_kafka_message_timestamp(m, NULL)));
                        if (m->key)
                                json_object_set_new(v, "_key",
                                                    json_stringn_nocheck(m->key, m->key_len));
                        char *s = json_dumps(v, JSON_COMPACT);
                        if (s)
                                puts(s);
                        free(s);
                        json_decref(v);
                        if (m->partition >= 0 && m->partition < parts && eof[m->partition]) {
                                eof[m->partition] = false;
                                left++;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        if (left > 0) {
                fprintf(stderr, "tbdump: %s: %d of %d partitions not read to the end in %d s\n",
                        name, left, parts, timeout_s);
                goto fail;
        }
        rc = 0;
fail:
        fflush(stdout);
        if (l)
                rd_kafka_topic_partition_list_destroy(l);
        if (md)
                rd_kafka_metadata_destroy(md);
        if (rk) {
                rd_kafka_consumer_close(rk);
                rd_kafka_destroy(rk);
        }
        if (c)
                rd_kafka_conf_destroy(c);
        free(eof);
        tb_config_destroy(conf);
        return rc;
}

/* One JSON value per line into an array; NULL (message printed) on error. */
static json_t *read_jsonl(const char *path) {
        FILE *fp = fopen(path, "r");
        if (!fp) {
                fprintf(stderr, "tbdump: %s: cannot open\n", path);
                return NULL;
        }
        json_t *a = json_array();
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        long no = 0;
        while ((n = getline(&line, &cap, fp)) > 0) {
                no++;
                if (n == 1)
                        continue;
                json_error_t je;
                json_t *v = json_loads(line, 0, &je);
                if (!v) {
                        fprintf(stderr, "tbdump: %s:%ld: %s\n", path, no, je.text);
                        json_decref(a);
                        a = NULL;
                        break;
                }
                json_array_append_new(a, v);
        }
        free(line);
        fclose(fp);
        return a;
}

/* "RUN_ID ..." lines: how many times each run id started. */
static json_t *read_starts(const char *path) {
        json_t *o = json_object();
        if (!path)
                return o;
        FILE *fp = fopen(path, "r");
        if (!fp)
                return o; /* nothing started yet */
        char line[512];
        while (fgets(line, sizeof(line), fp)) {
                char id[128];
                if (sscanf(line, "%127s", id) != 1)
                        continue;
                json_object_set_new(o, id, json_integer(json_integer_value(json_object_get(o, id)) + 1));
        }
        fclose(fp);
        return o;
}

static int check(const char *expect_path, const char *runs_path, const char *results_path,
                 const char *starts_path) {
        json_error_t je;
        json_t *expect = json_load_file(expect_path, 0, &je);
        json_t *runs = read_jsonl(runs_path), *res = read_jsonl(results_path);
        json_t *starts = read_starts(starts_path);
        int rc = 2;
        if (!expect)
                fprintf(stderr, "tbdump: %s: %s\n", expect_path, je.text);
        if (!expect || !runs || !res)
                goto out;
        tbt_fires_report_t rep;
        tbt_fires_check(runs, res, expect, starts_path ? starts : NULL, &rep);
        json_t *o = tbt_fires_report_json(&rep);
        char *s = json_dumps(o, JSON_INDENT(1));
        puts(s);
        free(s);
        json_decref(o);
        tbt_fires_report_clear(&rep);
        rc = rep.duplicated || rep.lost ? 1 : 0;
out:
        json_decref(expect);
        json_decref(runs);
        json_decref(res);
        json_decref(starts);
        return rc;
}

int main(int argc, char **argv) {
        const char *config = NULL, *expect = NULL, *runs = NULL, *results = NULL, *starts = NULL;
        bool committed = true;
        int timeout = 120, c;
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"uncommitted", no_argument, NULL, 'u'},
                {"timeout", required_argument, NULL, 't'},
                {"check-fires", required_argument, NULL, 'e'},
                {"runs", required_argument, NULL, 'r'},
                {"results", required_argument, NULL, 'R'},
                {"starts", required_argument, NULL, 's'},
                {NULL, 0, NULL, 0},
        };
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'c': config = optarg; break;
                case 'u': committed = false; break;
                case 't': timeout = atoi(optarg); break;
                case 'e': expect = optarg; break;
                case 'r': runs = optarg; break;
                case 'R': results = optarg; break;
                case 's': starts = optarg; break;
                default: return usage();
                }
        }
        if (expect) {
                if (!runs || !results || optind != argc)
                        return usage();
                return check(expect, runs, results, starts);
        }
        if (optind != argc - 1 || timeout <= 0)
                return usage();
        return dump(config, argv[optind], committed, timeout);
}
