/**
 * @file bus/conf.c
 * @brief librdkafka configuration built from tb_config_t: topic names, the
 *        `kafka` pass-through properties, taskbus's error and log callbacks,
 *        and handle creation.
 *
 * Every handle takes the `kafka` pass-through properties first and then the
 * properties taskbus depends on for correctness, so a config file cannot
 * turn off idempotence, acks=all or the partitioner by accident.
 */
#include "bus/bus.h"
#include "bus/bus_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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

const char *tb_bus_prop(const tb_config_t *conf, const char *key) {
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, key))
                        return conf->kafka[i].value;
        return NULL;
}

/** The configured bootstrap.servers (for messages). */
const char *tb_bus_bootstrap(const tb_config_t *conf) {
        const char *v = tb_bus_prop(conf, "bootstrap.servers");
        return v ? v : "(bootstrap.servers not set)";
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
        /* the kafka group is shared by every handle of the process: a consumer
         * property on a producer (or the reverse) is expected, not a warning */
        if (lv == TB_LOG_WARN && fac && !strcmp(fac, "CONFWARN") &&
            strstr(buf, "property and will be ignored by this"))
                lv = TB_LOG_DEBUG;
        tb_log(lv, "kafka", "%s: %s: %s", rk ? rd_kafka_name(rk) : "-", fac, buf);
}

/** Set one property; the message names it and carries librdkafka's reason. */
tb_err_t tb_bus_set(rd_kafka_conf_t *c, const char *key, const char *value,
                           char *errstr, size_t errstr_size) {
        char rkerr[512];
        if (rd_kafka_conf_set(c, key, value, rkerr, sizeof(rkerr)) != RD_KAFKA_CONF_OK)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "kafka property %s=\"%s\": %s", key,
                                 tb_config_kafka_secret(key) ? "(secret, not shown)" : value,
                                 rkerr);
        return TB_OK;
}

tb_err_t tb_bus_prop_check(const char *key, const char *value, char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        if (!c)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        rd_kafka_conf_res_t res = rd_kafka_conf_set(c, key, value, errstr, errstr_size);
        rd_kafka_conf_destroy(c);
        return res == RD_KAFKA_CONF_OK ? TB_OK : TB_ERR_INVALID;
}

tb_err_t tb_bus_set_ms(rd_kafka_conf_t *c, const char *key, int value_ms, char *errstr,
                       size_t errstr_size) {
        char num[32];
        if (value_ms <= 0)
                return TB_OK;
        tb_snprintf(num, sizeof(num), "%d", value_ms);
        return tb_bus_set(c, key, num, errstr, errstr_size);
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
                        /* config/load.c validated these already: say where it comes from */
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

/* ---- start-up access check ------------------------------------------------- */

/** The first authentication or TLS error a check handle saw. */
typedef struct tb_bus_access {
        rd_kafka_resp_err_t err;
        char reason[512];
} tb_bus_access_t;

static void tb_bus_access_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
        tb_bus_access_t *a = opaque;
        (void)rk;
        if (a->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            (err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL ||
             err == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED)) {
                a->err = (rd_kafka_resp_err_t)err;
                tb_snprintf(a->reason, sizeof(a->reason), "%s", reason ? reason : "");
        }
}

tb_err_t tb_bus_check_access(const tb_config_t *conf, int timeout_ms, char *errstr,
                             size_t errstr_size) {
        const char *proto = tb_bus_prop(conf, "security.protocol");
        if (!proto || !strcasecmp(proto, "plaintext"))
                return TB_OK;
        rd_kafka_conf_t *c = NULL;
        rd_kafka_t *rk = NULL;
        tb_bus_access_t a = {0};
        tb_err_t err = tb_bus_conf_new(conf, &c, errstr, errstr_size);
        if (err)
                return err;
        rd_kafka_conf_set_error_cb(c, tb_bus_access_error_cb);
        rd_kafka_conf_set_opaque(c, &a);
        /* librdkafka logs every failed attempt too: the message below says it once */
        rd_kafka_conf_set(c, "log_level", "0", NULL, 0);
        if ((err = tb_bus_handle_new(RD_KAFKA_PRODUCER, c, "kafka access check", &rk, errstr,
                                     errstr_size)))
                return err;
        int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
        const struct rd_kafka_metadata *md = NULL;
        while (!a.err && tb_mono_us() < deadline) {
                if (rd_kafka_metadata(rk, 0, NULL, &md, 500) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        rd_kafka_metadata_destroy(md);
                        break;
                }
                rd_kafka_poll(rk, 0); /* serves the error callback */
        }
        rd_kafka_poll(rk, 0);
        const char *user = tb_bus_prop(conf, "sasl.username");
        const char *mech = tb_bus_prop(conf, "sasl.mechanisms");
        if (a.err == RD_KAFKA_RESP_ERR__SSL)
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                "Kafka at %s (security.protocol %s): TLS failed: %s; check "
                                "kafka.ssl_ca_location (the CA that signed the brokers' "
                                "certificates) and that bootstrap_servers names a host in "
                                "their certificates",
                                tb_bus_bootstrap(conf), proto, a.reason);
        else if (a.err)
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "Kafka at %s: SASL authentication of '%s' (%s) failed: %s; "
                                "check kafka.sasl_username and its password "
                                "(kafka.sasl_password_file or kafka.sasl_password) against "
                                "the broker's SCRAM credentials",
                                tb_bus_bootstrap(conf), user ? user : "(sasl.username not set)",
                                mech ? mech : "sasl.mechanisms not set", a.reason);
        rd_kafka_destroy(rk);
        return err;
}

/** rd_kafka_new that takes \p c in every case. */
tb_err_t tb_bus_handle_new(rd_kafka_type_t type, rd_kafka_conf_t *c, const char *what,
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
