/**
 * @file bus/admin.c
 * @brief The Admin API side of the Kafka layer: create taskbus's topics and
 *        bring their retention/cleanup configs to the configuration, list
 *        them, delete them.
 */
#include "bus/bus.h"
#include "bus/bus_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- admin ------------------------------------------------------------------ */

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
 * One Admin API request in flight: its options and the queue its result
 * arrives on, from tb_bus_admin_begin() to tb_bus_admin_end().
 */
typedef struct tb_bus_admin_req {
        rd_kafka_AdminOptions_t *opts;
        rd_kafka_queue_t *q;
} tb_bus_admin_req_t;

/** Options for \p op (tb_bus_admin_opts) and a result queue in \p req. */
static tb_err_t tb_bus_admin_begin(rd_kafka_t *rk, rd_kafka_admin_op_t op, int64_t deadline_us,
                                   tb_bus_admin_req_t *req, char *errstr, size_t errstr_size) {
        req->opts = tb_bus_admin_opts(rk, op, deadline_us);
        req->q = rd_kafka_queue_new(rk);
        if (req->opts && req->q)
                return TB_OK;
        if (req->q)
                rd_kafka_queue_destroy(req->q);
        if (req->opts)
                rd_kafka_AdminOptions_destroy(req->opts);
        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
}

/**
 * Wait for the result of the request \p req and release it. The request
 * timeout ends the request first; the margin only guards against a lost
 * event. On success the caller destroys *\p out.
 */
static tb_err_t tb_bus_admin_end(tb_bus_admin_req_t *req, int64_t deadline_us, const char *what,
                                 rd_kafka_event_t **out, char *errstr, size_t errstr_size) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(req->q, tb_bus_remaining(deadline_us) + 5000);
        tb_err_t err = TB_OK;
        *out = NULL;
        rd_kafka_queue_destroy(req->q);
        rd_kafka_AdminOptions_destroy(req->opts);
        if (!ev)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "%s: no answer from Kafka in time", what);
        if (rd_kafka_event_error(ev)) {
                err = rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT ? TB_ERR_TIMEOUT
                                                                                : TB_ERR_KAFKA;
                tb_seterr(errstr, errstr_size, err, "%s: %s", what,
                          rd_kafka_event_error_string(ev));
                rd_kafka_event_destroy(ev);
                return err;
        }
        *out = ev;
        return TB_OK;
}

/** Create the topics of \p specs[i] for which \p missing[i] (NULL: all). */
static tb_err_t tb_bus_create(const tb_config_t *conf, rd_kafka_t *rk,
                              const tb_topic_spec_t *specs, const bool *missing, size_t cnt,
                              int64_t deadline_us, char *errstr, size_t errstr_size) {
        rd_kafka_NewTopic_t **nts = calloc(cnt ? cnt : 1, sizeof(*nts));
        size_t n = 0;
        tb_bus_admin_req_t req;
        rd_kafka_event_t *ev = NULL;
        tb_err_t err = TB_OK;
        char rkerr[512];

        if (!nts)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (size_t t = 0; t < cnt; t++) {
                if (missing && !missing[t])
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
                goto done;
        if ((err = tb_bus_admin_begin(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, deadline_us, &req,
                                      errstr, errstr_size)))
                goto done;
        rd_kafka_CreateTopics(rk, nts, n, req.opts, req.q);
        if ((err = tb_bus_admin_end(&req, deadline_us, "create topics", &ev, errstr, errstr_size)))
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
        rd_kafka_NewTopic_destroy_array(nts, n);
        free(nts);
        return err;
}

/**
 * DescribeConfigs of \p names; the caller destroys *\p ev (which owns the
 * resources in *\p res).
 */
static tb_err_t tb_bus_describe_once(rd_kafka_t *rk, const char *const *names, size_t cnt,
                                     int64_t deadline_us, rd_kafka_event_t **ev,
                                     const rd_kafka_ConfigResource_t ***res, size_t *res_cnt,
                                     bool *unknown, char *errstr, size_t errstr_size) {
        rd_kafka_ConfigResource_t **crs = calloc(cnt ? cnt : 1, sizeof(*crs));
        tb_bus_admin_req_t req;
        tb_err_t err = TB_OK;
        *ev = NULL;
        if (!crs)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < cnt; i++)
                crs[i] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
        if ((err = tb_bus_admin_begin(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, deadline_us, &req,
                                      errstr, errstr_size)))
                goto done;
        rd_kafka_DescribeConfigs(rk, crs, cnt, req.opts, req.q);
        if ((err = tb_bus_admin_end(&req, deadline_us, "describe topic configs", ev, errstr,
                                     errstr_size)))
                goto done;
        *res = rd_kafka_DescribeConfigs_result_resources(
                rd_kafka_event_DescribeConfigs_result(*ev), res_cnt);
        for (size_t i = 0; i < *res_cnt; i++) {
                if (rd_kafka_ConfigResource_error((*res)[i])) {
                        rd_kafka_resp_err_t e = rd_kafka_ConfigResource_error((*res)[i]);
                        const char *why = rd_kafka_ConfigResource_error_string((*res)[i]);
                        *unknown = e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
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
        rd_kafka_ConfigResource_destroy_array(crs, cnt);
        free(crs);
        return err;
}

/* A topic just created may not be known yet to the broker that answers (a
 * cluster propagates new topics' metadata in the background): ask again
 * until the deadline. */
static tb_err_t tb_bus_describe(rd_kafka_t *rk, const char *const *names, size_t cnt,
                                int64_t deadline_us, rd_kafka_event_t **ev,
                                const rd_kafka_ConfigResource_t ***res, size_t *res_cnt,
                                char *errstr, size_t errstr_size) {
        for (;;) {
                bool unknown = false;
                tb_err_t err = tb_bus_describe_once(rk, names, cnt, deadline_us, ev, res, res_cnt,
                                                    &unknown, errstr, errstr_size);
                if (!err || !unknown || tb_mono_us() + 200000 > deadline_us)
                        return err;
                usleep(200 * 1000);
        }
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
        tb_bus_admin_req_t req;
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
        if ((err = tb_bus_admin_begin(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS, deadline_us, &req,
                                      errstr, errstr_size)))
                goto done;
        rd_kafka_AlterConfigs(rk, alter, alter_cnt, req.opts, req.q);
        if ((err = tb_bus_admin_end(&req, deadline_us, "alter topic configs", &aev, errstr,
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
        if ((err = tb_bus_check_access(conf, timeout_ms < 15000 ? timeout_ms : 15000, errstr,
                                       errstr_size)))
                return err;
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
            (err = tb_bus_create(conf, rk, specs, missing, TB_TOPIC__COUNT, deadline, errstr,
                                      errstr_size)))
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

tb_err_t tb_bus_topics_create(const tb_config_t *conf, const tb_topic_spec_t *specs, size_t cnt,
                              int timeout_ms, char *errstr, size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000;
        rd_kafka_t *rk = NULL;
        tb_err_t err;
        if (!cnt)
                return TB_OK;
        if ((err = tb_bus_admin_new(conf, &rk, errstr, errstr_size)))
                return err;
        err = tb_bus_create(conf, rk, specs, NULL, cnt, deadline, errstr, errstr_size);
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
        tb_bus_admin_req_t req;
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
        if ((err = tb_bus_admin_begin(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS, deadline, &req,
                                      errstr, errstr_size)))
                goto done;
        rd_kafka_DeleteTopics(rk, dts, n, req.opts, req.q);
        if ((err = tb_bus_admin_end(&req, deadline, "delete topics", &ev, errstr, errstr_size)))
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
        rd_kafka_DeleteTopic_destroy_array(dts, n);
        if (md)
                rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return err;
}
