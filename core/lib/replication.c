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
        rd_kafka_conf_t *kc = NULL;
        rd_kafka_t *rk = NULL;
        rd_kafka_NewTopic_t **nts = calloc(n, sizeof(*nts));
        rd_kafka_queue_t *q = NULL;
        rd_kafka_AdminOptions_t *ao = NULL;
        rd_kafka_event_t *ev = NULL;
        char rkerr[512];
        tb_err_t err;
        if (!nts)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        if ((err = tb_bus_conf_new(conf, &kc, errstr, errstr_size)))
                goto out;
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, rkerr, sizeof(rkerr));
        if (!rk) {
                rd_kafka_conf_destroy(kc);
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "kafka admin client: %s", rkerr);
                goto out;
        }
        size_t k = 0;
        for (size_t r = 0; r < conf->repl_remote_region_cnt; r++)
                for (size_t i = 0; i < tb_repl_topic_cnt; i++) {
                        char name[300], ret[32];
                        tb_repl_topic_name(conf, conf->repl_remote_regions[r], tb_repl_topics[i],
                                           name, sizeof(name));
                        nts[k] = rd_kafka_NewTopic_new(name, (int)conf->topic_partitions,
                                                       (int)conf->topic_replication, rkerr,
                                                       sizeof(rkerr));
                        if (!nts[k]) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "topic %s: %s",
                                                name, rkerr);
                                goto out;
                        }
                        tb_snprintf(ret, sizeof(ret), "%" PRId64,
                                    tb_repl_retention(conf, tb_repl_topics[i]));
                        rd_kafka_NewTopic_set_config(nts[k], "retention.ms", ret);
                        k++;
                }
        q = rd_kafka_queue_new(rk);
        ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
        rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, rkerr, sizeof(rkerr));
        rd_kafka_AdminOptions_set_operation_timeout(ao, timeout_ms, rkerr, sizeof(rkerr));
        rd_kafka_CreateTopics(rk, nts, n, ao, q);
        ev = rd_kafka_queue_poll(q, timeout_ms + 5000);
        if (!ev) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                "creating the replica topics: no answer from Kafka within %d ms",
                                timeout_ms);
                goto out;
        }
        if (rd_kafka_event_error(ev)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "creating the replica topics: %s",
                                rd_kafka_event_error_string(ev));
                goto out;
        }
        size_t cnt = 0;
        const rd_kafka_topic_result_t **res =
                rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt; i++) {
                rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
                if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "creating topic %s: %s",
                                        rd_kafka_topic_result_name(res[i]),
                                        rd_kafka_topic_result_error_string(res[i]));
                        goto out;
                }
        }
        err = TB_OK;
out:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (ao)
                rd_kafka_AdminOptions_destroy(ao);
        if (q)
                rd_kafka_queue_destroy(q);
        for (size_t i = 0; i < n; i++)
                if (nts[i])
                        rd_kafka_NewTopic_destroy(nts[i]);
        free(nts);
        if (rk)
                rd_kafka_destroy(rk);
        return err;
}

/* ---- reading ------------------------------------------------------------------- */

tb_err_t tb_repl_reader_new(const tb_config_t *conf, const char *bootstrap, const char *group,
                            rd_kafka_t **out, char *errstr, size_t errstr_size) {
        /* a region that is down must not stall a caller for long */
        return tb_repl_consumer_new(conf, bootstrap, group, true, 5000, out, errstr, errstr_size);
}

tb_err_t tb_repl_consumer_new(const tb_config_t *conf, const char *bootstrap, const char *group,
                              bool eof, int connect_timeout_ms, rd_kafka_t **out, char *errstr,
                              size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        char rkerr[512], setup_ms[16];
        tb_err_t err = tb_bus_conf_new(conf, &c, errstr, errstr_size);
        if (err)
                return err;
        tb_snprintf(setup_ms, sizeof(setup_ms), "%d", connect_timeout_ms);
        const char *kv[][2] = {
                {"bootstrap.servers", bootstrap},
                {"group.id", group},
                {"isolation.level", "read_committed"},
                {"enable.auto.commit", "false"},
                {"enable.auto.offset.store", "false"},
                {"auto.offset.reset", "earliest"},
                {"enable.partition.eof", eof ? "true" : "false"},
                {"socket.connection.setup.timeout.ms", connect_timeout_ms > 0 ? setup_ms : NULL},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(kv); i++) {
                if (!kv[i][1])
                        continue;
                if (rd_kafka_conf_set(c, kv[i][0], kv[i][1], rkerr, sizeof(rkerr)) !=
                    RD_KAFKA_CONF_OK) {
                        rd_kafka_conf_destroy(c);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "kafka %s: %s",
                                         kv[i][0], rkerr);
                }
        }
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, rkerr, sizeof(rkerr));
        if (!rk) {
                rd_kafka_conf_destroy(c);
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "kafka consumer: %s", rkerr);
        }
        rd_kafka_poll_set_consumer(rk);
        *out = rk;
        return TB_OK;
}

tb_err_t tb_repl_last_record(rd_kafka_t *rk, const char *topic, int32_t partition,
                             int timeout_ms, bool *found, int64_t *ts_ms, int64_t *offset,
                             tb_buf_t *value, char *errstr, size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
        int64_t lo = 0, hi = 0;
        *found = false;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi,
                                                                 timeout_ms);
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
