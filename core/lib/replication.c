/**
 * @file replication.c
 * @brief Region replication helpers (see replication.h and docs/replication.md).
 */
#include "replication.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_REPL_SUB "replication"

const tb_topic_t tb_repl_topics[] = {TB_TOPIC_EVENTS, TB_TOPIC_RUNS, TB_TOPIC_RESULTS};
const size_t tb_repl_topic_cnt = TB_ARRAY_LEN(tb_repl_topics);

const char *tb_repl_topic_name(const tb_config_t *conf, const char *region, tb_topic_t t,
                               char *buf, size_t size) {
        char local[256];
        tb_snprintf(buf, size, "%s.%s", region, tb_topic_name(conf, t, local, sizeof(local)));
        return buf;
}

bool tb_repl_topic_parse(const tb_config_t *conf, const char *topic, const char **region,
                         tb_topic_t *t) {
        for (size_t r = 0; r < conf->repl_remote_region_cnt; r++) {
                const char *name = conf->repl_remote_regions[r];
                size_t l = strlen(name);
                if (strncmp(topic, name, l) || topic[l] != '.')
                        continue;
                for (size_t i = 0; i < tb_repl_topic_cnt; i++) {
                        char local[256];
                        if (strcmp(topic + l + 1,
                                   tb_topic_name(conf, tb_repl_topics[i], local, sizeof(local))))
                                continue;
                        *region = name;
                        if (t)
                                *t = tb_repl_topics[i];
                        return true;
                }
        }
        return false;
}

static const char *tb_repl_kv(const tb_kv_t *kv, size_t n, const char *key) {
        for (size_t i = 0; key && i < n; i++)
                if (!strcmp(kv[i].key, key))
                        return kv[i].value;
        return NULL;
}

const char *tb_repl_region_api(const tb_config_t *conf, const char *region) {
        return tb_repl_kv(conf->repl_region_apis, conf->repl_region_api_cnt, region);
}

const char *tb_repl_region_kafka(const tb_config_t *conf, const char *region) {
        return tb_repl_kv(conf->repl_region_kafka, conf->repl_region_kafka_cnt, region);
}

/* ---- topics ------------------------------------------------------------------ */

static int64_t tb_repl_retention(const tb_config_t *conf, tb_topic_t t) {
        switch (t) {
        case TB_TOPIC_RUNS:
                return conf->retention_runs_ms;
        case TB_TOPIC_RESULTS:
                return conf->retention_results_ms;
        case TB_TOPIC_LOGS:
                return conf->retention_logs_ms;
        default:
                return -1; /* task-events: the audit log, kept forever */
        }
}

tb_err_t tb_repl_topics_ensure(const tb_config_t *conf, int timeout_ms, char *errstr,
                               size_t errstr_size) {
        size_t n = conf->repl_remote_region_cnt * tb_repl_topic_cnt;
        if (n == 0)
                return TB_OK;
        tb_topic_spec_t *specs = calloc(n, sizeof(*specs));
        if (!specs)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        size_t k = 0;
        for (size_t r = 0; r < conf->repl_remote_region_cnt; r++)
                for (size_t i = 0; i < tb_repl_topic_cnt; i++, k++) {
                        tb_repl_topic_name(conf, conf->repl_remote_regions[r], tb_repl_topics[i],
                                           specs[k].name, sizeof(specs[k].name));
                        specs[k].cleanup = "delete";
                        tb_snprintf(specs[k].retention, sizeof(specs[k].retention), "%" PRId64,
                                    tb_repl_retention(conf, tb_repl_topics[i]));
                }
        tb_err_t err = tb_bus_topics_create(conf, specs, n, timeout_ms, errstr, errstr_size);
        free(specs);
        return err;
}

/* ---- reading ------------------------------------------------------------------- */

tb_err_t tb_repl_reader_new(const tb_config_t *conf, const char *bootstrap, const char *group,
                            rd_kafka_t **out, char *errstr, size_t errstr_size) {
        tb_reader_opts_t o = {
                .group_id = group,
                .bootstrap = bootstrap,
                .read_committed = true,
                .partition_eof = true,
                /* a region that is down must not stall a caller for long */
                .connect_timeout_ms = 5000,
        };
        return tb_bus_reader_new(conf, &o, out, errstr, errstr_size);
}

tb_err_t tb_repl_last_record(rd_kafka_t *rk, const char *topic, int32_t partition,
                             int timeout_ms, bool *found, int64_t *ts_ms, int64_t *offset,
                             tb_buf_t *value, char *errstr, size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
        int64_t lo = 0, hi = 0;
        *found = false;
        rd_kafka_resp_err_t e = tb_bus_watermarks(rk, topic, partition, timeout_ms, &lo, &hi);
        if (e)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "%s [%" PRId32 "]: %s", topic,
                                 partition, rd_kafka_err2str(e));
        /* Transaction markers and aborted records take offsets too: look at a
         * growing window before the end until a committed record shows up. */
        for (int64_t window = 16; hi > lo; window *= 4) {
                int64_t start = hi - window > lo ? hi - window : lo;
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, topic, partition)->offset = start;
                e = rd_kafka_assign(rk, l);
                rd_kafka_topic_partition_list_destroy(l);
                if (e)
                        return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                         "%s [%" PRId32 "]: %s", topic, partition,
                                         rd_kafka_err2str(e));
                bool eof = false;
                while (!eof) {
                        if (tb_mono_us() > deadline) {
                                rd_kafka_assign(rk, NULL);
                                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                                 "%s [%" PRId32 "]: not read to the end within "
                                                 "%d ms",
                                                 topic, partition, timeout_ms);
                        }
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                        if (!m)
                                continue;
                        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                                eof = true;
                        } else if (!m->err) {
                                *found = true;
                                if (ts_ms)
                                        *ts_ms = rd_kafka_message_timestamp(m, NULL);
                                if (offset)
                                        *offset = m->offset;
                                if (value) {
                                        value->len = 0;
                                        if (m->len)
                                                tb_buf_append(value, m->payload, m->len);
                                }
                        } else {
                                tb_debug(TB_REPL_SUB, "%s [%" PRId32 "]: %s", topic, partition,
                                         rd_kafka_message_errstr(m));
                        }
                        rd_kafka_message_destroy(m);
                }
                if (*found || start == lo)
                        break;
        }
        rd_kafka_assign(rk, NULL);
        return TB_OK;
}
