/**
 * @file bus/bus.c
 * @brief The Kafka layer: librdkafka handles built from tb_config_t, the
 *        Admin API that creates and tunes taskbus's topics, produce with
 *        headers and a synchronous mode, transactions with fencing
 *        detection, consumer groups and Kafka's murmur2 partitioner.
 *
 * Every handle takes the `kafka` pass-through properties first and then the
 * properties taskbus depends on for correctness, so a config file cannot
 * turn off idempotence, acks=all or the partitioner by accident.
 */
#include "bus/bus.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_BUS_SUB "bus"
/** Upper bound for init_transactions and the transactional calls that take
 *  no caller timeout: long enough for a broker to abort a zombie's open
 *  transaction, short enough that a dead broker is reported. */
#define TB_BUS_TXN_TIMEOUT_MS 30000
/** transaction.timeout.ms of every transactional producer: a crashed owner's
 *  open transaction is aborted by the broker after this long, and until then
 *  it holds back every read_committed reader of its partitions (the
 *  failover time of a killed scheduler or commands process). taskbus's
 *  transactions last milliseconds, so 10 s leaves a wide margin. */
#define TB_BUS_TXN_BROKER_TIMEOUT "10000"
/** Retries of a commit that failed with a retriable error. */
#define TB_BUS_COMMIT_TRIES 3
/** How long produce waits for room in a full local queue. */
#define TB_BUS_QUEUE_FULL_WAIT_MS 10000

static const char *tb_topic_shorts[TB_TOPIC__COUNT] = {
        [TB_TOPIC_COMMANDS] = "task-commands",
        [TB_TOPIC_REPLIES] = "task-replies",
        [TB_TOPIC_EVENTS] = "task-events",
        [TB_TOPIC_RUNS] = "runs",
        [TB_TOPIC_RESULTS] = "run-results",
        [TB_TOPIC_LOGS] = "run-logs",
        [TB_TOPIC_DLQ] = "runs-dlq",
        [TB_TOPIC_CHECKPOINTS] = "scheduler-checkpoints",
};

const char *tb_topic_short(tb_topic_t t) {
        if ((int)t < 0 || t >= TB_TOPIC__COUNT)
                return "unknown-topic";
        return tb_topic_shorts[t];
}

const char *tb_topic_name(const tb_config_t *conf, tb_topic_t t, char *buf, size_t size) {
        tb_snprintf(buf, size, "%s%s", conf->topic_prefix ? conf->topic_prefix : "",
                    tb_topic_short(t));
        return buf;
}

/** The configured bootstrap.servers (for messages). */
static const char *tb_bus_bootstrap(const tb_config_t *conf) {
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, "bootstrap.servers"))
                        return conf->kafka[i].value;
        return "(bootstrap.servers not set)";
}

/* ---- configuration ---------------------------------------------------------- */

static void tb_bus_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
        (void)opaque;
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                char fbuf[512];
                rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, fbuf, sizeof(fbuf));
                tb_error("kafka", "%s: fatal: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(ferr),
                         fbuf);
                return;
        }
        tb_warn("kafka", "%s: %s: %s", rd_kafka_name(rk),
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void tb_bus_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
        /* librdkafka uses syslog levels */
        /* level 3 (LOG_ERR) is mostly transient connection trouble, which
         * the error callback reports as well: a warning, not an error */
        tb_log_level_t lv = level <= 2   ? TB_LOG_ERROR
                            : level <= 4 ? TB_LOG_WARN
                            : level <= 6 ? TB_LOG_INFO
                                         : TB_LOG_DEBUG;
        tb_log(lv, "kafka", "%s: %s: %s", rk ? rd_kafka_name(rk) : "-", fac, buf);
}

/** Set one property; the message names it and carries librdkafka's reason. */
static tb_err_t tb_bus_set(rd_kafka_conf_t *c, const char *key, const char *value,
                           char *errstr, size_t errstr_size) {
        char rkerr[512];
        if (rd_kafka_conf_set(c, key, value, rkerr, sizeof(rkerr)) != RD_KAFKA_CONF_OK)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "kafka property %s=\"%s\": %s", key, value, rkerr);
        return TB_OK;
}

tb_err_t tb_bus_conf_new(const tb_config_t *conf, rd_kafka_conf_t **out, char *errstr,
                         size_t errstr_size) {
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        tb_err_t err;
        *out = NULL;
        if (!c)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                err = tb_bus_set(c, conf->kafka[i].key, conf->kafka[i].value, errstr,
                                 errstr_size);
                if (err) {
                        /* config.c validated these already: say where it comes from */
                        char inner[512];
                        tb_snprintf(inner, sizeof(inner), "%s", errstr);
                        tb_seterr(errstr, errstr_size, err, "%s (from the kafka group of %s)",
                                  inner, conf->path ? conf->path : "the configuration");
                        goto fail;
                }
        }
        rd_kafka_conf_set_error_cb(c, tb_bus_error_cb);
        rd_kafka_conf_set_log_cb(c, tb_bus_log_cb);
        /* no stats callback is installed: stats would only pile up */
        if ((err = tb_bus_set(c, "statistics.interval.ms", "0", errstr, errstr_size)))
                goto fail;
        *out = c;
        return TB_OK;
fail:
        rd_kafka_conf_destroy(c);
        return err;
}

/** rd_kafka_new that takes \p c in every case. */
static tb_err_t tb_bus_handle_new(rd_kafka_type_t type, rd_kafka_conf_t *c, const char *what,
                                  rd_kafka_t **out, char *errstr, size_t errstr_size) {
        char rkerr[512];
        rd_kafka_t *rk = rd_kafka_new(type, c, rkerr, sizeof(rkerr));
        if (!rk) {
                rd_kafka_conf_destroy(c);
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "%s: %s", what, rkerr);
        }
        *out = rk;
        return TB_OK;
}

/* ---- admin ------------------------------------------------------------------ */

/** The topic-level configs taskbus manages for \p t. */
typedef struct tb_topic_spec {
        char name[256];
        const char *cleanup;  /**< "delete" or "compact" */
        char retention[32];   /**< retention.ms, "" when not managed (compact) */
} tb_topic_spec_t;

static void tb_bus_spec(const tb_config_t *conf, tb_topic_t t, tb_topic_spec_t *s) {
        int64_t ms = -1;
        tb_topic_name(conf, t, s->name, sizeof(s->name));
        s->cleanup = "delete";
        switch (t) {
        case TB_TOPIC_COMMANDS: ms = conf->retention_commands_ms; break;
        case TB_TOPIC_REPLIES: ms = conf->retention_replies_ms; break;
        case TB_TOPIC_EVENTS: ms = -1; break; /* the audit log is kept forever */
        case TB_TOPIC_RUNS: ms = conf->retention_runs_ms; break;
        case TB_TOPIC_RESULTS: ms = conf->retention_results_ms; break;
        case TB_TOPIC_LOGS: ms = conf->retention_logs_ms; break;
        case TB_TOPIC_DLQ: ms = conf->retention_dlq_ms; break;
        case TB_TOPIC_CHECKPOINTS:
        default: s->cleanup = "compact"; s->retention[0] = '\0'; return;
        }
        tb_snprintf(s->retention, sizeof(s->retention), "%" PRId64, ms);
}

/** A short-lived handle for Admin API and metadata calls. */
static tb_err_t tb_bus_admin_new(const tb_config_t *conf, rd_kafka_t **out, char *errstr,
                                 size_t errstr_size) {
        rd_kafka_conf_t *c;
        tb_err_t err = tb_bus_conf_new(conf, &c, errstr, errstr_size);
        if (err)
                return err;
        return tb_bus_handle_new(RD_KAFKA_PRODUCER, c, "kafka admin client", out, errstr,
                                 errstr_size);
}

static int tb_bus_remaining(int64_t deadline_us) {
        int64_t left = (deadline_us - tb_mono_us()) / 1000;
        return left < 1 ? 1 : left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/**
 * All-topics metadata, retried until the broker answers or \p deadline_us.
 * The caller frees *\p md with rd_kafka_metadata_destroy().
 */
static tb_err_t tb_bus_metadata(const tb_config_t *conf, rd_kafka_t *rk, int64_t deadline_us,
                                const struct rd_kafka_metadata **md, char *errstr,
                                size_t errstr_size) {
        rd_kafka_resp_err_t rerr;
        int64_t start = tb_mono_us();
        for (;;) {
                int t = tb_bus_remaining(deadline_us);
                rerr = rd_kafka_metadata(rk, 1, NULL, md, t > 2000 ? 2000 : t);
                if (!rerr)
                        return TB_OK;
                if (tb_mono_us() >= deadline_us)
                        break;
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                         "Kafka at %s is not reachable (no metadata within %" PRId64
                         " ms: %s); start it (tools/stack up) or point "
                         "kafka.bootstrap_servers / TASKBUS_KAFKA at a running broker",
                         tb_bus_bootstrap(conf), (tb_mono_us() - start) / 1000,
                         rd_kafka_err2str(rerr));
}

static const rd_kafka_metadata_topic_t *tb_bus_md_topic(const struct rd_kafka_metadata *md,
                                                         const char *name) {
        for (int i = 0; i < md->topic_cnt; i++)
                if (!strcmp(md->topics[i].topic, name) && !md->topics[i].err)
                        return &md->topics[i];
        return NULL;
}

/** Options with both timeouts set to what is left before \p deadline_us. */
static rd_kafka_AdminOptions_t *tb_bus_admin_opts(rd_kafka_t *rk, rd_kafka_admin_op_t op,
                                                  int64_t deadline_us) {
        char ignore[256];
        rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
        if (!o)
                return NULL;
        int t = tb_bus_remaining(deadline_us);
        rd_kafka_AdminOptions_set_request_timeout(o, t, ignore, sizeof(ignore));
        if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS || op == RD_KAFKA_ADMIN_OP_DELETETOPICS)
                rd_kafka_AdminOptions_set_operation_timeout(o, t, ignore, sizeof(ignore));
        if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
                rd_kafka_AdminOptions_set_validate_only(o, 0, ignore, sizeof(ignore));
        return o;
}

/**
 * Wait for the result of an admin request on \p q. The request timeout
 * ends the request first; the margin only guards against a lost event.
 */
static tb_err_t tb_bus_admin_wait(rd_kafka_queue_t *q, int64_t deadline_us, const char *what,
                                  rd_kafka_event_t **out, char *errstr, size_t errstr_size) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, tb_bus_remaining(deadline_us) + 5000);
        *out = NULL;
        if (!ev)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "%s: no answer from Kafka in time", what);
        if (rd_kafka_event_error(ev)) {
                tb_err_t e = rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT
                                     ? TB_ERR_TIMEOUT
                                     : TB_ERR_KAFKA;
                tb_seterr(errstr, errstr_size, e, "%s: %s", what, rd_kafka_event_error_string(ev));
                rd_kafka_event_destroy(ev);
                return e;
        }
        *out = ev;
        return TB_OK;
}

/** Create the topics of \p specs[i] for which \p missing[i]. */
static tb_err_t tb_bus_create(const tb_config_t *conf, rd_kafka_t *rk,
                              const tb_topic_spec_t *specs, const bool *missing,
                              int64_t deadline_us, char *errstr, size_t errstr_size) {
        rd_kafka_NewTopic_t *nts[TB_TOPIC__COUNT];
        size_t n = 0;
        rd_kafka_AdminOptions_t *opts = NULL;
        rd_kafka_queue_t *q = NULL;
        rd_kafka_event_t *ev = NULL;
        tb_err_t err = TB_OK;
        char rkerr[512];

        for (int t = 0; t < TB_TOPIC__COUNT; t++) {
                if (!missing[t])
                        continue;
                nts[n] = rd_kafka_NewTopic_new(specs[t].name, (int)conf->topic_partitions,
                                               (int)conf->topic_replication, rkerr,
                                               sizeof(rkerr));
                if (!nts[n]) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "topic %s: %s (topics.partitions / topics.replication)",
                                        specs[t].name, rkerr);
                        goto done;
                }
                rd_kafka_NewTopic_set_config(nts[n], "cleanup.policy", specs[t].cleanup);
                if (specs[t].retention[0])
                        rd_kafka_NewTopic_set_config(nts[n], "retention.ms", specs[t].retention);
                n++;
        }
        if (!n)
                return TB_OK;
        opts = tb_bus_admin_opts(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, deadline_us);
        q = rd_kafka_queue_new(rk);
        if (!opts || !q) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto done;
        }
        rd_kafka_CreateTopics(rk, nts, n, opts, q);
        if ((err = tb_bus_admin_wait(q, deadline_us, "create topics", &ev, errstr, errstr_size)))
                goto done;
        size_t rcnt = 0;
        const rd_kafka_topic_result_t **res =
                rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &rcnt);
        for (size_t i = 0; i < rcnt; i++) {
                rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
                const char *name = rd_kafka_topic_result_name(res[i]);
                if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        tb_info(TB_BUS_SUB,
                                "created topic %s (%" PRId64 " partitions, replication %" PRId64
                                ")",
                                name, conf->topic_partitions, conf->topic_replication);
                        continue;
                }
                if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                        continue; /* another process created it meanwhile */
                const char *why = rd_kafka_topic_result_error_string(res[i]);
                if (e == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "create topic %s: %s: topics.replication = %" PRId64
                                        " needs at least that many brokers; lower "
                                        "topics.replication or add brokers",
                                        name, why ? why : rd_kafka_err2str(e),
                                        conf->topic_replication);
                else
                        err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "create topic %s: %s",
                                        name, why ? why : rd_kafka_err2str(e));
                goto done;
        }
done:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (q)
                rd_kafka_queue_destroy(q);
        if (opts)
                rd_kafka_AdminOptions_destroy(opts);
        rd_kafka_NewTopic_destroy_array(nts, n);
        return err;
}

/**
 * DescribeConfigs of \p names; the caller destroys *\p ev (which owns the
 * resources in *\p res).
 */
static tb_err_t tb_bus_describe(rd_kafka_t *rk, const char *const *names, size_t cnt,
                                int64_t deadline_us, rd_kafka_event_t **ev,
                                const rd_kafka_ConfigResource_t ***res, size_t *res_cnt,
                                char *errstr, size_t errstr_size) {
        rd_kafka_ConfigResource_t **crs = calloc(cnt ? cnt : 1, sizeof(*crs));
        rd_kafka_AdminOptions_t *opts = NULL;
        rd_kafka_queue_t *q = NULL;
        tb_err_t err = TB_OK;
        *ev = NULL;
        if (!crs)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < cnt; i++)
                crs[i] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
        opts = tb_bus_admin_opts(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, deadline_us);
        q = rd_kafka_queue_new(rk);
        if (!opts || !q) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto done;
        }
        rd_kafka_DescribeConfigs(rk, crs, cnt, opts, q);
        if ((err = tb_bus_admin_wait(q, deadline_us, "describe topic configs", ev, errstr,
                                     errstr_size)))
                goto done;
        *res = rd_kafka_DescribeConfigs_result_resources(
                rd_kafka_event_DescribeConfigs_result(*ev), res_cnt);
        for (size_t i = 0; i < *res_cnt; i++) {
                if (rd_kafka_ConfigResource_error((*res)[i])) {
                        rd_kafka_resp_err_t e = rd_kafka_ConfigResource_error((*res)[i]);
                        const char *why = rd_kafka_ConfigResource_error_string((*res)[i]);
                        err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                        "describe configs of topic %s: %s",
                                        rd_kafka_ConfigResource_name((*res)[i]),
                                        why ? why : rd_kafka_err2str(e));
                        rd_kafka_event_destroy(*ev);
                        *ev = NULL;
                        goto done;
                }
        }
done:
        if (q)
                rd_kafka_queue_destroy(q);
        if (opts)
                rd_kafka_AdminOptions_destroy(opts);
        rd_kafka_ConfigResource_destroy_array(crs, cnt);
        free(crs);
        return err;
}

static const char *tb_bus_cfg_get(const rd_kafka_ConfigResource_t *r, const char *name) {
        size_t n = 0;
        const rd_kafka_ConfigEntry_t **ents = rd_kafka_ConfigResource_configs(r, &n);
        for (size_t i = 0; i < n; i++)
                if (!strcmp(rd_kafka_ConfigEntry_name(ents[i]), name))
                        return rd_kafka_ConfigEntry_value(ents[i]);
        return NULL;
}

static bool tb_bus_streq(const char *a, const char *b) {
        return a && b && !strcmp(a, b);
}

/**
 * Bring retention.ms / cleanup.policy of existing topics to \p specs.
 * AlterConfigs (librdkafka 2.0 has no incremental variant) replaces every
 * dynamic config of a topic, so the ones an operator set that taskbus
 * does not manage are sent back unchanged. *\p differ counts the topics
 * whose configs differed; with \p alter_them false nothing is changed.
 */
static tb_err_t tb_bus_apply_configs(rd_kafka_t *rk, const tb_topic_spec_t *specs,
                                     bool alter_them, int *differ, int64_t deadline_us,
                                     char *errstr, size_t errstr_size) {
        const char *names[TB_TOPIC__COUNT];
        rd_kafka_ConfigResource_t *alter[TB_TOPIC__COUNT];
        size_t alter_cnt = 0, res_cnt = 0;
        const rd_kafka_ConfigResource_t **res = NULL;
        rd_kafka_event_t *ev = NULL, *aev = NULL;
        rd_kafka_AdminOptions_t *opts = NULL;
        rd_kafka_queue_t *q = NULL;
        tb_err_t err;

        *differ = 0;
        for (int t = 0; t < TB_TOPIC__COUNT; t++)
                names[t] = specs[t].name;
        if ((err = tb_bus_describe(rk, names, TB_TOPIC__COUNT, deadline_us, &ev, &res, &res_cnt,
                                   errstr, errstr_size)))
                return err;
        for (size_t i = 0; i < res_cnt; i++) {
                const char *rname = rd_kafka_ConfigResource_name(res[i]);
                const tb_topic_spec_t *s = NULL;
                for (int t = 0; t < TB_TOPIC__COUNT && !s; t++)
                        if (!strcmp(specs[t].name, rname))
                                s = &specs[t];
                if (!s)
                        continue;
                const char *cur_cleanup = tb_bus_cfg_get(res[i], "cleanup.policy");
                const char *cur_ret = tb_bus_cfg_get(res[i], "retention.ms");
                if (tb_bus_streq(cur_cleanup, s->cleanup) &&
                    (!s->retention[0] || tb_bus_streq(cur_ret, s->retention)))
                        continue;
                ++*differ;
                if (!alter_them)
                        continue;
                rd_kafka_ConfigResource_t *cr =
                        rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, rname);
                if (!cr) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                        goto done;
                }
                alter[alter_cnt++] = cr;
                size_t n = 0;
                const rd_kafka_ConfigEntry_t **ents = rd_kafka_ConfigResource_configs(res[i], &n);
                for (size_t k = 0; k < n; k++) {
                        const char *en = rd_kafka_ConfigEntry_name(ents[k]);
                        const char *ev_val = rd_kafka_ConfigEntry_value(ents[k]);
                        if (rd_kafka_ConfigEntry_source(ents[k]) !=
                                    RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG ||
                            !ev_val || rd_kafka_ConfigEntry_is_sensitive(ents[k]) ||
                            !strcmp(en, "cleanup.policy") ||
                            (s->retention[0] && !strcmp(en, "retention.ms")))
                                continue;
                        rd_kafka_ConfigResource_set_config(cr, en, ev_val);
                }
                rd_kafka_ConfigResource_set_config(cr, "cleanup.policy", s->cleanup);
                if (s->retention[0])
                        rd_kafka_ConfigResource_set_config(cr, "retention.ms", s->retention);
                tb_info(TB_BUS_SUB, "topic %s: cleanup.policy %s -> %s, retention.ms %s -> %s",
                        rname, cur_cleanup ? cur_cleanup : "?", s->cleanup,
                        cur_ret ? cur_ret : "?", s->retention[0] ? s->retention : "(unchanged)");
        }
        if (!alter_cnt)
                goto done;
        opts = tb_bus_admin_opts(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS, deadline_us);
        q = rd_kafka_queue_new(rk);
        if (!opts || !q) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto done;
        }
        rd_kafka_AlterConfigs(rk, alter, alter_cnt, opts, q);
        if ((err = tb_bus_admin_wait(q, deadline_us, "alter topic configs", &aev, errstr,
                                     errstr_size)))
                goto done;
        size_t acnt = 0;
        const rd_kafka_ConfigResource_t **ares = rd_kafka_AlterConfigs_result_resources(
                rd_kafka_event_AlterConfigs_result(aev), &acnt);
        for (size_t i = 0; i < acnt; i++) {
                rd_kafka_resp_err_t e = rd_kafka_ConfigResource_error(ares[i]);
                if (!e)
                        continue;
                const char *why = rd_kafka_ConfigResource_error_string(ares[i]);
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                "set retention/cleanup configs of topic %s: %s",
                                rd_kafka_ConfigResource_name(ares[i]),
                                why ? why : rd_kafka_err2str(e));
                goto done;
        }
done:
        if (aev)
                rd_kafka_event_destroy(aev);
        if (q)
                rd_kafka_queue_destroy(q);
        if (opts)
                rd_kafka_AdminOptions_destroy(opts);
        for (size_t i = 0; i < alter_cnt; i++)
                rd_kafka_ConfigResource_destroy(alter[i]);
        rd_kafka_event_destroy(ev);
        return err;
}

tb_err_t tb_bus_topics_ensure(const tb_config_t *conf, int timeout_ms, char *errstr,
                              size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000;
        tb_topic_spec_t specs[TB_TOPIC__COUNT];
        bool missing[TB_TOPIC__COUNT];
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_t *rk = NULL;
        bool any_missing = false;
        tb_err_t err;

        if (conf->topic_partitions < 1 || conf->topic_partitions > 0x7fffffff ||
            conf->topic_replication < 1 || conf->topic_replication > 0x7fff)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "topics.partitions (%" PRId64 ") and topics.replication (%" PRId64
                                 ") must be positive",
                                 conf->topic_partitions, conf->topic_replication);
        for (int t = 0; t < TB_TOPIC__COUNT; t++)
                tb_bus_spec(conf, (tb_topic_t)t, &specs[t]);
        if ((err = tb_bus_admin_new(conf, &rk, errstr, errstr_size)))
                return err;
        if ((err = tb_bus_metadata(conf, rk, deadline, &md, errstr, errstr_size)))
                goto done;
        for (int t = 0; t < TB_TOPIC__COUNT; t++) {
                missing[t] = !tb_bus_md_topic(md, specs[t].name);
                any_missing |= missing[t];
        }
        rd_kafka_metadata_destroy(md);
        md = NULL;
        if (any_missing &&
            (err = tb_bus_create(conf, rk, specs, missing, deadline, errstr, errstr_size)))
                goto done;

        /* The controller has created them; wait until metadata shows every one
         * with its partitions, then check the counts. */
        for (;;) {
                if ((err = tb_bus_metadata(conf, rk, deadline, &md, errstr, errstr_size)))
                        goto done;
                int seen = 0;
                for (int t = 0; t < TB_TOPIC__COUNT; t++)
                        seen += tb_bus_md_topic(md, specs[t].name) != NULL;
                if (seen == TB_TOPIC__COUNT)
                        break;
                rd_kafka_metadata_destroy(md);
                md = NULL;
                if (tb_mono_us() >= deadline) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                        "Kafka at %s: only %d of %d taskbus topics are visible "
                                        "after creating them",
                                        tb_bus_bootstrap(conf), seen, TB_TOPIC__COUNT);
                        goto done;
                }
                /* metadata propagation has no event to wait on */
                rd_kafka_poll(rk, 100);
        }
        for (int t = 0; t < TB_TOPIC__COUNT; t++) {
                const rd_kafka_metadata_topic_t *mt = tb_bus_md_topic(md, specs[t].name);
                if (mt->partition_cnt < conf->topic_partitions) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "topic %s has %d partitions but topics.partitions "
                                        "is %" PRId64 ": every task-keyed topic must have the same count. "
                                        "Either set topics.partitions = %d, or add partitions to "
                                        "ALL taskbus topics (kafka-topics.sh --alter --partitions "
                                        "%" PRId64 "; this moves keys between partitions, so "
                                        "stop taskbusd first)",
                                        specs[t].name, mt->partition_cnt, conf->topic_partitions,
                                        mt->partition_cnt, conf->topic_partitions);
                        goto done;
                }
                if (mt->partition_cnt > conf->topic_partitions)
                        tb_warn(TB_BUS_SUB,
                                "topic %s has %d partitions, more than topics.partitions (%" PRId64
                                "): set topics.partitions = %d so all topics agree",
                                specs[t].name, mt->partition_cnt, conf->topic_partitions,
                                mt->partition_cnt);
        }
        int differ = 0;
        if ((err = tb_bus_apply_configs(rk, specs, true, &differ, deadline, errstr, errstr_size)))
                goto done;
        /* The controller applies the change; brokers answer describe from
         * their metadata cache a moment later. Return once it is visible, so
         * that the new retention is in force when this returns. */
        while (differ) {
                if (tb_mono_us() >= deadline) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                        "Kafka at %s accepted the new retention/cleanup "
                                        "configs of %d topics but does not show them yet",
                                        tb_bus_bootstrap(conf), differ);
                        goto done;
                }
                rd_kafka_poll(rk, 100);
                if ((err = tb_bus_apply_configs(rk, specs, false, &differ, deadline, errstr,
                                                errstr_size)))
                        goto done;
        }
done:
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return err;
}

static int tb_bus_info_cmp(const void *a, const void *b) {
        return strcmp(((const tb_topic_info_t *)a)->name, ((const tb_topic_info_t *)b)->name);
}

tb_err_t tb_bus_topics_list(const tb_config_t *conf, tb_topic_info_t **out, size_t *cnt,
                            int timeout_ms, char *errstr, size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000;
        const char *prefix = conf->topic_prefix ? conf->topic_prefix : "";
        size_t plen = strlen(prefix), n = 0;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_event_t *ev = NULL;
        tb_topic_info_t *infos = NULL;
        const char **names = NULL;
        rd_kafka_t *rk = NULL;
        tb_err_t err;

        *out = NULL;
        *cnt = 0;
        if ((err = tb_bus_admin_new(conf, &rk, errstr, errstr_size)))
                return err;
        if ((err = tb_bus_metadata(conf, rk, deadline, &md, errstr, errstr_size)))
                goto done;
        infos = calloc(md->topic_cnt ? (size_t)md->topic_cnt : 1, sizeof(*infos));
        names = calloc(md->topic_cnt ? (size_t)md->topic_cnt : 1, sizeof(*names));
        if (!infos || !names) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto done;
        }
        for (int i = 0; i < md->topic_cnt; i++) {
                const rd_kafka_metadata_topic_t *mt = &md->topics[i];
                if (mt->err || strncmp(mt->topic, prefix, plen) || mt->topic[0] == '_')
                        continue;
                tb_topic_info_t *ti = &infos[n];
                tb_snprintf(ti->name, sizeof(ti->name), "%s", mt->topic);
                ti->partitions = mt->partition_cnt;
                ti->replication = mt->partition_cnt > 0 ? mt->partitions[0].replica_cnt : 0;
                n++;
        }
        qsort(infos, n, sizeof(*infos), tb_bus_info_cmp);
        for (size_t i = 0; i < n; i++)
                names[i] = infos[i].name;
        if (n) {
                const rd_kafka_ConfigResource_t **res = NULL;
                size_t res_cnt = 0;
                if ((err = tb_bus_describe(rk, names, n, deadline, &ev, &res, &res_cnt, errstr,
                                           errstr_size)))
                        goto done;
                for (size_t i = 0; i < res_cnt; i++) {
                        const char *rname = rd_kafka_ConfigResource_name(res[i]);
                        for (size_t k = 0; k < n; k++) {
                                if (strcmp(infos[k].name, rname))
                                        continue;
                                const char *cl = tb_bus_cfg_get(res[i], "cleanup.policy");
                                const char *rt = tb_bus_cfg_get(res[i], "retention.ms");
                                tb_snprintf(infos[k].retention, sizeof(infos[k].retention), "%s",
                                            cl && strstr(cl, "compact") && !strstr(cl, "delete")
                                                    ? "compact"
                                                    : rt ? rt : "?");
                        }
                }
        }
        *out = infos;
        *cnt = n;
        infos = NULL;
done:
        free(infos);
        free(names);
        if (ev)
                rd_kafka_event_destroy(ev);
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return err;
}

tb_err_t tb_bus_topics_delete(const tb_config_t *conf, int timeout_ms, char *errstr,
                              size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000;
        rd_kafka_DeleteTopic_t *dts[TB_TOPIC__COUNT];
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_AdminOptions_t *opts = NULL;
        rd_kafka_queue_t *q = NULL;
        rd_kafka_event_t *ev = NULL;
        rd_kafka_t *rk = NULL;
        size_t n = 0;
        tb_err_t err;

        if ((err = tb_bus_admin_new(conf, &rk, errstr, errstr_size)))
                return err;
        if ((err = tb_bus_metadata(conf, rk, deadline, &md, errstr, errstr_size)))
                goto done;
        for (int t = 0; t < TB_TOPIC__COUNT; t++) {
                char name[256];
                tb_topic_name(conf, (tb_topic_t)t, name, sizeof(name));
                if (tb_bus_md_topic(md, name))
                        dts[n++] = rd_kafka_DeleteTopic_new(name);
        }
        if (!n)
                goto done;
        opts = tb_bus_admin_opts(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS, deadline);
        q = rd_kafka_queue_new(rk);
        if (!opts || !q) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto done;
        }
        rd_kafka_DeleteTopics(rk, dts, n, opts, q);
        if ((err = tb_bus_admin_wait(q, deadline, "delete topics", &ev, errstr, errstr_size)))
                goto done;
        size_t rcnt = 0;
        const rd_kafka_topic_result_t **res =
                rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &rcnt);
        for (size_t i = 0; i < rcnt; i++) {
                rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
                if (!e || e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                        continue;
                const char *why = rd_kafka_topic_result_error_string(res[i]);
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "delete topic %s: %s",
                                rd_kafka_topic_result_name(res[i]),
                                why ? why : rd_kafka_err2str(e));
                goto done;
        }
done:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (q)
                rd_kafka_queue_destroy(q);
        if (opts)
                rd_kafka_AdminOptions_destroy(opts);
        rd_kafka_DeleteTopic_destroy_array(dts, n);
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return err;
}

/* ---- producers -------------------------------------------------------------- */

/**
 * The per-message opaque of a synchronous produce. It lives on the waiting
 * thread's stack: the delivery callback must not touch it after `done`.
 */
typedef struct tb_bus_dr {
        atomic_int done;
        rd_kafka_resp_err_t err;
        int32_t partition;
        int64_t offset;
} tb_bus_dr_t;

static void tb_bus_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
        (void)opaque;
        tb_bus_dr_t *dr = msg->_private;
        if (dr) {
                dr->err = msg->err;
                dr->partition = msg->partition;
                dr->offset = msg->offset;
                atomic_store_explicit(&dr->done, 1, memory_order_release);
                return;
        }
        /* An asynchronous record: nobody else hears of its failure. Purges
         * come from an aborted transaction, which its caller already knows. */
        if (msg->err && msg->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE &&
            msg->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
                tb_warn(TB_BUS_SUB, "%s: delivery to %s [%" PRId32 "] failed: %s",
                        rd_kafka_name(rk), rd_kafka_topic_name(msg->rkt), msg->partition,
                        rd_kafka_err2str(msg->err));
}

static bool tb_bus_fenced_code(rd_kafka_resp_err_t c) {
        return c == RD_KAFKA_RESP_ERR__FENCED || c == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
               c == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
}

static const char *tb_bus_txn_id(rd_kafka_t *rk, char *buf, size_t size) {
        size_t sz = size;
        if (rd_kafka_conf_get(rd_kafka_conf(rk), "transactional.id", buf, &sz) !=
                    RD_KAFKA_CONF_OK ||
            !buf[0])
                tb_snprintf(buf, size, "(none)");
        return buf;
}

/** Map a producer's fatal state; TB_OK when it has none. */
static tb_err_t tb_bus_fatal(rd_kafka_t *rk, const char *what, char *errstr,
                             size_t errstr_size) {
        char fbuf[512], id[256];
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, fbuf, sizeof(fbuf));
        if (!ferr)
                return TB_OK;
        if (tb_bus_fenced_code(ferr))
                return tb_seterr(errstr, errstr_size, TB_ERR_FENCED,
                                 "%s: producer fenced: a newer producer took over "
                                 "transactional.id '%s' (%s); stop using this producer",
                                 what, tb_bus_txn_id(rk, id, sizeof(id)), fbuf);
        return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                         "%s: fatal producer error %s: %s; the producer must be rebuilt", what,
                         rd_kafka_err2name(ferr), fbuf);
}

/**
 * Turn a transactional API error into tb_err_t and destroy it. Fatal ->
 * FENCED (fencing codes) or KAFKA; abortable -> abort here and KAFKA.
 */
static tb_err_t tb_bus_txn_error(rd_kafka_t *rk, rd_kafka_error_t *error, const char *what,
                                 char *errstr, size_t errstr_size) {
        rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        char msg[512], id[256];
        tb_err_t err;
        tb_snprintf(msg, sizeof(msg), "%s", rd_kafka_error_string(error));
        if (rd_kafka_error_is_fatal(error) || tb_bus_fenced_code(code)) {
                rd_kafka_error_destroy(error);
                err = tb_bus_fatal(rk, what, errstr, errstr_size);
                if (err)
                        return err;
                if (tb_bus_fenced_code(code))
                        return tb_seterr(errstr, errstr_size, TB_ERR_FENCED,
                                         "%s: producer fenced: a newer producer took over "
                                         "transactional.id '%s' (%s)",
                                         what, tb_bus_txn_id(rk, id, sizeof(id)), msg);
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "%s: fatal: %s", what, msg);
        }
        if (rd_kafka_error_txn_requires_abort(error)) {
                rd_kafka_error_destroy(error);
                rd_kafka_error_t *aerr = rd_kafka_abort_transaction(rk, TB_BUS_TXN_TIMEOUT_MS);
                if (aerr) {
                        char inner[512];
                        err = tb_bus_txn_error(rk, aerr, "abort", inner, sizeof(inner));
                        return tb_seterr(errstr, errstr_size, err,
                                         "%s: %s; aborting the transaction failed too: %s", what,
                                         msg, inner);
                }
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "%s: %s; the transaction was aborted (nothing of it is "
                                 "visible): begin a new one",
                                 what, msg);
        }
        err = code == RD_KAFKA_RESP_ERR__TIMED_OUT ? TB_ERR_TIMEOUT : TB_ERR_KAFKA;
        rd_kafka_error_destroy(error);
        return tb_seterr(errstr, errstr_size, err, "%s: %s", what, msg);
}

tb_err_t tb_bus_producer_new(const tb_config_t *conf, const char *transactional_id,
                             rd_kafka_t **out, char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        rd_kafka_t *rk = NULL;
        tb_err_t err;
        *out = NULL;
        if ((err = tb_bus_conf_new(conf, &c, errstr, errstr_size)))
                return err;
        /* What correctness depends on, set after the pass-through so it wins:
         * no duplicates or reordering on retry, durable writes, and the Java
         * client's key -> partition mapping (tb_bus_partition_for). */
        if ((err = tb_bus_set(c, "enable.idempotence", "true", errstr, errstr_size)) ||
            (err = tb_bus_set(c, "acks", "all", errstr, errstr_size)) ||
            (err = tb_bus_set(c, "linger.ms", "5", errstr, errstr_size)) ||
            (err = tb_bus_set(c, "partitioner", "murmur2_random", errstr, errstr_size)))
                goto fail;
        if (transactional_id) {
                if (!transactional_id[0]) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "producer: transactional.id must not be empty");
                        goto fail;
                }
                if ((err = tb_bus_set(c, "transactional.id", transactional_id, errstr,
                                      errstr_size)) ||
                    (err = tb_bus_set(c, "transaction.timeout.ms", TB_BUS_TXN_BROKER_TIMEOUT,
                                      errstr, errstr_size)))
                        goto fail;
        }
        /* taskbus's topics exist before any producer runs (topics ensure), so
         * a topic missing from metadata is a mistake to report soon, not one
         * to wait 30 s (the default) for. A pass-through value wins. */
        bool has_propagation = false;
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                has_propagation |=
                        !strcmp(conf->kafka[i].key, "topic.metadata.propagation.max.ms");
        if (!has_propagation &&
            (err = tb_bus_set(c, "topic.metadata.propagation.max.ms", "5000", errstr, errstr_size)))
                goto fail;
        rd_kafka_conf_set_dr_msg_cb(c, tb_bus_dr_cb);
        err = tb_bus_handle_new(RD_KAFKA_PRODUCER, c, "kafka producer", &rk, errstr, errstr_size);
        c = NULL;
        if (err)
                goto fail;
        if (transactional_id) {
                rd_kafka_error_t *e = rd_kafka_init_transactions(rk, TB_BUS_TXN_TIMEOUT_MS);
                if (e) {
                        char inner[512];
                        err = tb_bus_txn_error(rk, e, "init_transactions", inner, sizeof(inner));
                        tb_seterr(errstr, errstr_size, err,
                                  "transactional producer '%s' (Kafka at %s): %s",
                                  transactional_id, tb_bus_bootstrap(conf), inner);
                        goto fail;
                }
        }
        *out = rk;
        return TB_OK;
fail:
        if (c)
                rd_kafka_conf_destroy(c);
        if (rk)
                rd_kafka_destroy(rk);
        return err;
}

tb_err_t tb_bus_produce(rd_kafka_t *rk, const tb_config_t *conf, tb_topic_t topic,
                        int32_t partition, const void *key, size_t key_len, const void *value,
                        size_t value_len, const tb_header_t *headers, size_t header_cnt,
                        bool sync, char *errstr, size_t errstr_size) {
        char name[256];
        tb_bus_dr_t dr = {.err = RD_KAFKA_RESP_ERR_NO_ERROR, .partition = -1, .offset = -1};
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_resp_err_t rerr;
        int64_t give_up = tb_mono_us() + (int64_t)TB_BUS_QUEUE_FULL_WAIT_MS * 1000;

        if ((int)topic < 0 || topic >= TB_TOPIC__COUNT)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "produce: unknown topic %d",
                                 (int)topic);
        tb_topic_name(conf, topic, name, sizeof(name));
        if (header_cnt > 0) {
                if (!headers)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "produce to %s: %zu headers but no header array", name,
                                         header_cnt);
                hdrs = rd_kafka_headers_new(header_cnt);
                for (size_t i = 0; i < header_cnt; i++) {
                        if (!headers[i].name || (!headers[i].value && headers[i].len)) {
                                rd_kafka_headers_destroy(hdrs);
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "produce to %s: header %zu has no name or "
                                                 "a NULL value with a length",
                                                 name, i);
                        }
                        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                            (ssize_t)headers[i].len);
                }
        }
        for (;;) {
                rerr = rd_kafka_producev(
                        rk, RD_KAFKA_V_TOPIC(name), RD_KAFKA_V_PARTITION(partition),
                        RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(sync ? &dr : NULL),
                        RD_KAFKA_V_END);
                if (rerr != RD_KAFKA_RESP_ERR__QUEUE_FULL || tb_mono_us() >= give_up)
                        break;
                /* back-pressure: serving delivery reports frees queue room */
                rd_kafka_poll(rk, 50);
        }
        if (rerr) {
                /* on failure the headers were not handed over */
                if (hdrs)
                        rd_kafka_headers_destroy(hdrs);
                tb_err_t fe = tb_bus_fatal(rk, "produce", errstr, errstr_size);
                if (fe)
                        return fe;
                if (rerr == RD_KAFKA_RESP_ERR__STATE)
                        return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                         "produce to %s: %s (a transactional producer needs "
                                         "tb_bus_txn_begin() first)",
                                         name, rd_kafka_err2str(rerr));
                return tb_seterr(errstr, errstr_size,
                                 rerr == RD_KAFKA_RESP_ERR__QUEUE_FULL ? TB_ERR_THROTTLED
                                                                       : TB_ERR_KAFKA,
                                 "produce to %s: %s (%s)", name, rd_kafka_err2str(rerr),
                                 rd_kafka_err2name(rerr));
        }
        if (!sync)
                return TB_OK;
        /* Poll from this thread rather than wait on a condition: no other
         * thread is required to serve the producer's callbacks, and if one
         * does serve our report, the flag is seen on the next round.
         * message.timeout.ms bounds the wait. */
        while (!atomic_load_explicit(&dr.done, memory_order_acquire))
                rd_kafka_poll(rk, 50);
        if (!dr.err)
                return TB_OK;
        char what[300];
        tb_snprintf(what, sizeof(what), "produce to %s", name);
        tb_err_t fe = tb_bus_fatal(rk, what, errstr, errstr_size);
        if (fe)
                return fe;
        switch (dr.err) {
        case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "produce to %s: not delivered within message.timeout.ms (%s); "
                                 "is Kafka at %s up?",
                                 name, rd_kafka_err2str(dr.err), tb_bus_bootstrap(conf));
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "produce to %s: %s: the topic does not exist on Kafka at %s "
                                 "(taskbus creates its topics at start-up, see topics.prefix)",
                                 name, rd_kafka_err2str(dr.err), tb_bus_bootstrap(conf));
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "produce to %s [%" PRId32 "]: %s", name, partition,
                                 rd_kafka_err2str(dr.err));
        default:
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "produce to %s [%" PRId32 "]: %s (%s)", name, dr.partition,
                                 rd_kafka_err2str(dr.err), rd_kafka_err2name(dr.err));
        }
}

/* ---- transactions ----------------------------------------------------------- */

tb_err_t tb_bus_txn_begin(rd_kafka_t *rk, char *errstr, size_t errstr_size) {
        rd_kafka_error_t *e = rd_kafka_begin_transaction(rk);
        return e ? tb_bus_txn_error(rk, e, "begin transaction", errstr, errstr_size) : TB_OK;
}

tb_err_t tb_bus_txn_send_offsets(rd_kafka_t *rk, rd_kafka_t *consumer,
                                 const rd_kafka_topic_partition_list_t *offsets,
                                 char *errstr, size_t errstr_size) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(consumer);
        if (!cgmd)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "send offsets to transaction: the handle is not a consumer "
                                 "of a group");
        rd_kafka_error_t *e =
                rd_kafka_send_offsets_to_transaction(rk, offsets, cgmd, TB_BUS_TXN_TIMEOUT_MS);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        return e ? tb_bus_txn_error(rk, e, "send offsets to transaction", errstr, errstr_size)
                 : TB_OK;
}

tb_err_t tb_bus_txn_commit(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errstr_size) {
        for (int attempt = 1;; attempt++) {
                rd_kafka_error_t *e = rd_kafka_commit_transaction(rk, timeout_ms);
                if (!e)
                        return TB_OK;
                /* A retriable error leaves the outcome pending: calling commit
                 * again resumes it (librdkafka's documented contract). */
                if (rd_kafka_error_is_retriable(e) && !rd_kafka_error_is_fatal(e) &&
                    !rd_kafka_error_txn_requires_abort(e) && attempt < TB_BUS_COMMIT_TRIES) {
                        tb_warn(TB_BUS_SUB, "commit transaction (try %d of %d): %s; retrying",
                                attempt, TB_BUS_COMMIT_TRIES, rd_kafka_error_string(e));
                        rd_kafka_error_destroy(e);
                        continue;
                }
                return tb_bus_txn_error(rk, e, "commit transaction", errstr, errstr_size);
        }
}

tb_err_t tb_bus_txn_abort(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errstr_size) {
        rd_kafka_error_t *e = rd_kafka_abort_transaction(rk, timeout_ms);
        if (!e)
                return TB_OK;
        /* abort must not recurse into itself through the abortable path */
        rd_kafka_resp_err_t code = rd_kafka_error_code(e);
        if (rd_kafka_error_is_fatal(e) || tb_bus_fenced_code(code))
                return tb_bus_txn_error(rk, e, "abort transaction", errstr, errstr_size);
        tb_err_t err = code == RD_KAFKA_RESP_ERR__TIMED_OUT ? TB_ERR_TIMEOUT : TB_ERR_KAFKA;
        tb_seterr(errstr, errstr_size, err, "abort transaction: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return err;
}

/* ---- consumers -------------------------------------------------------------- */

/** Cooperative protocols move only the partitions that change hands:
 *  incremental (un)assign; the eager path covers a pass-through override. */
static void tb_bus_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque) {
        (void)opaque;
        bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
        rd_kafka_error_t *e = NULL;
        rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        switch (err) {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                tb_debug(TB_BUS_SUB, "%s: assigned %d partitions", rd_kafka_name(rk), parts->cnt);
                if (coop)
                        e = rd_kafka_incremental_assign(rk, parts);
                else
                        rerr = rd_kafka_assign(rk, parts);
                break;
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                tb_debug(TB_BUS_SUB, "%s: revoked %d partitions", rd_kafka_name(rk), parts->cnt);
                if (coop)
                        e = rd_kafka_incremental_unassign(rk, parts);
                else
                        rerr = rd_kafka_assign(rk, NULL);
                break;
        default:
                tb_warn(TB_BUS_SUB, "%s: rebalance failed: %s", rd_kafka_name(rk),
                        rd_kafka_err2str(err));
                if (!coop)
                        rerr = rd_kafka_assign(rk, NULL);
                break;
        }
        if (e) {
                tb_error(TB_BUS_SUB, "%s: incremental (un)assign: %s", rd_kafka_name(rk),
                         rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        if (rerr)
                tb_error(TB_BUS_SUB, "%s: assign: %s", rd_kafka_name(rk), rd_kafka_err2str(rerr));
}

tb_err_t tb_bus_consumer_new(const tb_config_t *conf, const tb_consumer_opts_t *opts,
                             const tb_topic_t *topics, size_t topic_cnt, rd_kafka_t **out,
                             char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        rd_kafka_t *rk = NULL;
        rd_kafka_topic_partition_list_t *subs = NULL;
        tb_err_t err;
        char num[32];

        *out = NULL;
        if (!opts || !opts->group_id || !opts->group_id[0])
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "consumer: group_id is required");
        if (!topic_cnt || !topics)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "consumer %s: no topics to subscribe to", opts->group_id);
        const char *reset = opts->offset_reset ? opts->offset_reset : "earliest";
        if (strcmp(reset, "earliest") && strcmp(reset, "latest"))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "consumer %s: offset_reset \"%s\" must be \"earliest\" or "
                                 "\"latest\"",
                                 opts->group_id, reset);
        if ((err = tb_bus_conf_new(conf, &c, errstr, errstr_size)))
                return err;
        if ((err = tb_bus_set(c, "group.id", opts->group_id, errstr, errstr_size)) ||
            (opts->instance_id && opts->instance_id[0] &&
             (err = tb_bus_set(c, "group.instance.id", opts->instance_id, errstr,
                               errstr_size))) ||
            (err = tb_bus_set(c, "partition.assignment.strategy", "cooperative-sticky", errstr,
                              errstr_size)) ||
            (err = tb_bus_set(c, "isolation.level",
                              opts->read_committed ? "read_committed" : "read_uncommitted",
                              errstr, errstr_size)) ||
            (err = tb_bus_set(c, "enable.auto.commit", opts->auto_commit ? "true" : "false",
                              errstr, errstr_size)) ||
            (err = tb_bus_set(c, "auto.offset.reset", reset, errstr, errstr_size)) ||
            (err = tb_bus_set(c, "enable.partition.eof", "false", errstr, errstr_size)))
                goto fail;
        if (opts->session_timeout_ms > 0) {
                tb_snprintf(num, sizeof(num), "%d", opts->session_timeout_ms);
                if ((err = tb_bus_set(c, "session.timeout.ms", num, errstr, errstr_size)))
                        goto fail;
        }
        rd_kafka_conf_set_rebalance_cb(c, opts->rebalance_cb ? opts->rebalance_cb
                                                             : tb_bus_rebalance_cb);
        rd_kafka_conf_set_opaque(c, opts->opaque);
        err = tb_bus_handle_new(RD_KAFKA_CONSUMER, c, "kafka consumer", &rk, errstr, errstr_size);
        c = NULL;
        if (err)
                goto fail;
        /* one queue: rd_kafka_consumer_poll() also serves errors and rebalances */
        rd_kafka_poll_set_consumer(rk);
        subs = rd_kafka_topic_partition_list_new((int)topic_cnt);
        for (size_t i = 0; i < topic_cnt; i++) {
                char name[256];
                if ((int)topics[i] < 0 || topics[i] >= TB_TOPIC__COUNT) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "consumer %s: unknown topic %d", opts->group_id,
                                        (int)topics[i]);
                        goto fail;
                }
                rd_kafka_topic_partition_list_add(subs, tb_topic_name(conf, topics[i], name,
                                                                      sizeof(name)),
                                                  RD_KAFKA_PARTITION_UA);
        }
        rd_kafka_resp_err_t rerr = rd_kafka_subscribe(rk, subs);
        if (rerr) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "consumer %s: subscribe: %s",
                                opts->group_id, rd_kafka_err2str(rerr));
                goto fail;
        }
        rd_kafka_topic_partition_list_destroy(subs);
        *out = rk;
        return TB_OK;
fail:
        if (subs)
                rd_kafka_topic_partition_list_destroy(subs);
        if (c)
                rd_kafka_conf_destroy(c);
        if (rk)
                rd_kafka_destroy(rk);
        return err;
}

tb_err_t tb_bus_header_get(const rd_kafka_message_t *msg, const char *name,
                           const void **value, size_t *len) {
        rd_kafka_headers_t *hdrs = NULL;
        *value = NULL;
        *len = 0;
        /* rd_kafka_message_headers takes a non-const message: it parses lazily */
        if (!msg || !name || rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) !=
                                     RD_KAFKA_RESP_ERR_NO_ERROR)
                return TB_ERR_NOT_FOUND;
        if (rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return TB_ERR_NOT_FOUND;
        return TB_OK;
}

/* ---- partitioning ----------------------------------------------------------- */

/** MurmurHash2 (32-bit) exactly as org.apache.kafka.common.utils.Utils.murmur2:
 *  little-endian 4-byte blocks, seed 0x9747b28c, Java's tail handling. */
static uint32_t tb_bus_murmur2(const unsigned char *p, size_t len) {
        const uint32_t m = 0x5bd1e995;
        uint32_t h = 0x9747b28cu ^ (uint32_t)len;
        size_t blocks = len / 4;
        for (size_t i = 0; i < blocks; i++) {
                const unsigned char *b = p + i * 4;
                uint32_t k = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                             (uint32_t)b[3] << 24;
                k *= m;
                k ^= k >> 24;
                k *= m;
                h *= m;
                h ^= k;
        }
        const unsigned char *tail = p + blocks * 4;
        switch (len & 3) {
        case 3: h ^= (uint32_t)tail[2] << 16; /* fall through */
        case 2: h ^= (uint32_t)tail[1] << 8;  /* fall through */
        case 1:
                h ^= (uint32_t)tail[0];
                h *= m;
        }
        h ^= h >> 13;
        h *= m;
        h ^= h >> 15;
        return h;
}

int32_t tb_bus_partition_for(const void *key, size_t len, int32_t partition_cnt) {
        /* librdkafka spreads NULL keys at random: no fixed partition */
        if (partition_cnt <= 0 || !key)
                return RD_KAFKA_PARTITION_UA;
        uint32_t h = tb_bus_murmur2(key, len);
        return (int32_t)((h & 0x7fffffffu) % (uint32_t)partition_cnt);
}

void tb_bus_consumer_destroy(rd_kafka_t *rk, int timeout_ms) {
        if (!rk)
                return;
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_error_t *error = rd_kafka_consumer_close_queue(rk, q);
        if (error) {
                tb_warn(TB_BUS_SUB, "consumer %s: close: %s", rd_kafka_name(rk),
                        rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else {
                int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
                while (!rd_kafka_consumer_closed(rk) && tb_mono_us() < deadline) {
                        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
                        if (!ev)
                                continue;
                        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE &&
                            rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                                /* Acknowledge the revocation so the close can go on. */
                                rd_kafka_topic_partition_list_t *parts =
                                        rd_kafka_event_topic_partition_list(ev);
                                if (!strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE")) {
                                        rd_kafka_error_t *e2 =
                                                rd_kafka_incremental_unassign(rk, parts);
                                        if (e2)
                                                rd_kafka_error_destroy(e2);
                                } else {
                                        rd_kafka_assign(rk, NULL);
                                }
                        }
                        rd_kafka_event_destroy(ev);
                }
                if (!rd_kafka_consumer_closed(rk))
                        tb_warn(TB_BUS_SUB,
                                "consumer %s: group did not acknowledge the close within %d ms "
                                "(Kafka unreachable?): leaving without it",
                                rd_kafka_name(rk), timeout_ms);
        }
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}
