/**
 * @file notifier/role.c
 * @brief The notifier role: tells the channels of the operator's config
 *        (notify.channels) about runs, as their tasks' notify rules ask
 *        (docs/notifications.md).
 *
 * Decide: a pgsink (bus/pgsink.h) on run-results, consumer "notifier"
 * (offsets in consumer_offsets). For each result, decide.c reads the task's
 * rules and retries from the projection (tasks), updates the task's last
 * outcome (notify_state) and inserts the notifications it asks for
 * (notify_deliveries, one per run, rule and event) in the batch's ONE
 * transaction with the offsets: a crash neither loses a decision nor makes
 * one twice.
 *
 * Deliver: send.c's thread claims the pending notifications, sends each, and
 * records every attempt (notify_attempts). Several notifiers may run: each
 * claims its own rows.
 *
 * @locality the sink's thread decides; the sender thread delivers.
 */
#include "notifier.h"
#include "http/metrics.h"
#include "serde/serde.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#define TB_NOTIFIER_SUB "notifier"
#define TB_NOTIFIER_CONSUMER "notifier"
#define TB_NOTIFIER_BATCH_MAX 500
#define TB_NOTIFIER_BATCH_WAIT_US 20000

static void tb_notifier_batch_begin(void *opaque) {
        tb_notifier_t *nt = opaque;
        nt->decided = 0;
}

static tb_pgsink_verdict_t tb_notifier_apply(PGconn *conn, const rd_kafka_message_t *m,
                                             void *opaque, char *errstr, size_t errstr_size) {
        tb_notifier_t *nt = opaque;
        json_t *v = NULL;
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_RUN_RESULT, NULL, &v, errstr,
                            errstr_size) != TB_OK)
                return TB_PGSINK_PERMANENT; /* quarantined */
        tb_err_t err = tb_notifier_decide(conn, v, &nt->decided, errstr, errstr_size);
        json_decref(v);
        return tb_pgsink_verdict_of(err);
}

static void tb_notifier_batch_committed(void *opaque) {
        tb_notifier_t *nt = opaque;
        if (!nt->decided)
                return;
        tb_metrics_add("taskbus_notifier_decided_total", NULL, (double)nt->decided);
        tb_notifier_wake(nt);
}

static const tb_pgsink_ops_t tb_notifier_sink_ops = {
        .begin = tb_notifier_batch_begin,
        .apply = tb_notifier_apply,
        .committed = tb_notifier_batch_committed,
};

static void tb_notifier_stop(void *state) {
        tb_notifier_t *nt = state;
        if (!nt)
                return;
        tb_pgsink_stop(nt->sink);
        tb_notifier_sender_stop(nt);
        pthread_cond_destroy(&nt->cv);
        pthread_mutex_destroy(&nt->mu);
        free(nt);
}

static tb_err_t tb_notifier_start(tb_ctx_t *ctx, void **state, char *errstr,
                                  size_t errstr_size) {
        tb_err_t err;
        tb_notifier_t *nt = calloc(1, sizeof(*nt));
        if (!nt)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "notifier: out of memory");
        nt->ctx = ctx;
        pthread_mutex_init(&nt->mu, NULL);
        tb_cond_init_mono(&nt->cv);
        tb_metrics_describe("taskbus_notifier_decided_total", "counter",
                            "Notifications decided from run results");
        tb_metrics_describe("taskbus_notifier_delivered_total", "counter",
                            "Notifications delivered");
        tb_metrics_describe("taskbus_notifier_failed_total", "counter",
                            "Notifications failed for good (last attempt, or refused)");
        tb_metrics_describe("taskbus_notifier_attempts_total", "counter",
                            "Delivery attempts of notifications");
        tb_metrics_describe("taskbus_notifier_malformed_total", "counter",
                            "run-results records the notifier could not decode");
        tb_metrics_describe("taskbus_notifier_failures_total", "counter",
                            "Notifier batches that failed and were retried");
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "notifier: curl_global_init failed");
                goto fail;
        }
        if ((err = tb_serde_init(errstr, errstr_size)))
                goto fail;
        for (size_t i = 0; i < ctx->conf->notify_channel_cnt; i++)
                tb_info(TB_NOTIFIER_SUB, "channel %s: %s", ctx->conf->notify_channels[i].name,
                        ctx->conf->notify_channels[i].type);
        if ((err = tb_notifier_sender_start(nt, errstr, errstr_size)))
                goto fail;
        tb_topic_t topic = TB_TOPIC_RESULTS;
        tb_pgsink_conf_t c = {
                .sub = TB_NOTIFIER_SUB,
                .consumer = TB_NOTIFIER_CONSUMER,
                .ops = &tb_notifier_sink_ops,
                .opaque = nt,
                .metric_malformed = "taskbus_notifier_malformed_total",
                .quarantine = true,
                .conf = ctx->conf,
                .store = ctx->store,
                .stopping = &ctx->stopping,
                .topics = &topic,
                .topic_cnt = 1,
                .batch_max = TB_NOTIFIER_BATCH_MAX,
                .batch_wait_us = TB_NOTIFIER_BATCH_WAIT_US,
                .metric_failures = "taskbus_notifier_failures_total",
        };
        if ((err = tb_pgsink_start(&c, &nt->sink, errstr, errstr_size)))
                goto fail;
        *state = nt;
        return TB_OK;
fail:
        tb_notifier_stop(nt);
        return err;
}

const tb_role_t tb_role_notifier = {
        .name = "notifier",
        .description = "notifies webhook and SMTP channels of run failures, recoveries and "
                       "skips, as tasks' notify rules ask",
        .start = tb_notifier_start,
        .stop = tb_notifier_stop,
};
