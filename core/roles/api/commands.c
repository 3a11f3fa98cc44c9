/**
 * @file api/commands.c
 * @brief The write path of the api role: a TaskCommand produced to
 *        task-commands (the producer and its poller), its TaskReply found on
 *        task-replies by correlation id (the reply consumer), and the
 *        command round trip the route handlers call (tb_api_command()).
 */
#include "api/api_internal.h"
#include "bus/bus.h"
#include "http/metrics.h"
#include "identity/signing.h"
#include "serde/serde.h"
#include <stdlib.h>
#include <string.h>

/* ---- producer ------------------------------------------------------------ */

static void tb_api_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
        tb_api_delivery_t *d = msg->_private;
        if (!d)
                return;
        pthread_mutex_lock(&d->mu);
        d->err = msg->err;
        d->done = true;
        pthread_cond_signal(&d->cv);
        pthread_mutex_unlock(&d->mu);
}

/*
 * The api's idempotent producer has its own delivery report callback: a
 * report must wake exactly the handler waiting for it (a condition variable,
 * served by one poller thread), and a command must fail within seconds when
 * Kafka is down, so message.timeout.ms is short.
 */
tb_err_t tb_api_producer_new(tb_api_t *api, char *errstr, size_t errstr_size) {
        tb_producer_opts_t o = {.linger_ms = 1,
                                .message_timeout_ms = TB_API_MESSAGE_TIMEOUT_MS,
                                .dr_msg_cb = tb_api_dr_cb};
        return tb_bus_rprod_new(api->ctx->conf, &o, "api commands", &api->producer, errstr,
                                errstr_size);
}

void *tb_api_poll_main(void *arg) {
        tb_api_t *api = arg;
        while (!atomic_load(&api->stop)) {
                rd_kafka_poll(tb_bus_rprod_get(api->producer), 100);
                tb_bus_rprod_put(api->producer);
                tb_bus_rprod_recover(api->producer);
        }
        return NULL;
}

/* ---- reply consumer ------------------------------------------------------ */

tb_err_t tb_api_replies_new(tb_api_t *api, char *errstr, size_t errstr_size) {
        char group[300];
        tb_snprintf(group, sizeof(group), "%sapi-replies", api->ctx->conf->topic_prefix);
        /* replies are written in the command handler's transactions; the
         * partitions are assigned at their end (tb_api_replies_assign) */
        tb_reader_opts_t o = {.group_id = group,
                              .read_committed = true,
                              .offset_reset = "latest",
                              .fetch_wait_max_ms = 20};
        return tb_bus_reader_new(api->ctx->conf, &o, &api->replies, errstr, errstr_size);
}

/* Assign every partition of task-replies at its current end: only replies
 * to commands sent from now on matter to this process. */
tb_err_t tb_api_replies_assign(tb_api_t *api, char *errstr, size_t errstr_size) {
        char topic[256];
        const struct rd_kafka_metadata *md = NULL;
        tb_topic_name(api->ctx->conf, TB_TOPIC_REPLIES, topic, sizeof(topic));
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(api->replies, topic, NULL);
        if (!rkt)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "topic %s: %s", topic,
                                 rd_kafka_err2str(rd_kafka_last_error()));
        rd_kafka_resp_err_t ke = rd_kafka_metadata(api->replies, 0, rkt, &md, 3000);
        rd_kafka_topic_destroy(rkt);
        if (ke)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "cannot read the metadata of %s: %s", topic,
                                 rd_kafka_err2str(ke));
        if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
                tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                          "topic %s: %s (create the topics with `taskbusd --init`)", topic,
                          md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "missing");
                rd_kafka_metadata_destroy(md);
                return TB_ERR_NOT_FOUND;
        }
        int n = md->topics[0].partition_cnt;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
        tb_err_t err = TB_OK;
        for (int i = 0; i < n && !err; i++) {
                int32_t pid = md->topics[0].partitions[i].id;
                int64_t lo = 0, hi = 0;
                ke = tb_bus_watermarks(api->replies, topic, pid, 3000, &lo, &hi);
                if (ke)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                        "end offset of %s [%d]: %s", topic, (int)pid,
                                        rd_kafka_err2str(ke));
                else
                        rd_kafka_topic_partition_list_add(l, topic, pid)->offset = hi;
        }
        rd_kafka_metadata_destroy(md);
        if (!err && (ke = rd_kafka_assign(api->replies, l)))
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "assign %s: %s", topic,
                                rd_kafka_err2str(ke));
        rd_kafka_topic_partition_list_destroy(l);
        return err;
}

static void tb_api_reply_handle(tb_api_t *api, const rd_kafka_message_t *m) {
        char err[512];
        json_t *r = NULL;
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_TASK_REPLY, NULL, &r, err,
                            sizeof(err)) != TB_OK) {
                tb_warn(TB_API_SUB, "task-replies [%d] offset %" PRId64 ": skipped: %s",
                        (int)m->partition, m->offset, err);
                return;
        }
        const char *corr = json_string_value(json_object_get(r, "correlation_id"));
        if (!corr) {
                json_decref(r);
                return;
        }
        pthread_mutex_lock(&api->lock);
        for (struct tb_api_pending *p = api->pending[tb_api_hash(corr)]; p; p = p->next) {
                if (!p->done && !strcmp(p->corr, corr)) {
                        p->reply = r;
                        r = NULL;
                        p->done = true;
                        pthread_cond_signal(&p->cv);
                        break;
                }
        }
        pthread_mutex_unlock(&api->lock);
        json_decref(r); /* a reply to another process or system */
}

void *tb_api_reply_main(void *arg) {
        tb_api_t *api = arg;
        char err[512];
        bool warned = false;
        while (!atomic_load(&api->stop)) {
                if (tb_api_replies_assign(api, err, sizeof(err)) == TB_OK)
                        break;
                pthread_mutex_lock(&api->lock);
                tb_snprintf(api->replies_error, sizeof(api->replies_error), "%s", err);
                pthread_mutex_unlock(&api->lock);
                if (!warned)
                        tb_warn(TB_API_SUB, "reply consumer not ready (retrying): %s", err);
                warned = true;
                /* a retry per second at most; stop() is seen within 100 ms */
                for (int i = 0; i < 10 && !atomic_load(&api->stop); i++)
                        usleep(100 * 1000);
        }
        if (atomic_load(&api->stop))
                return NULL;
        pthread_mutex_lock(&api->lock);
        api->replies_ready = true;
        pthread_cond_broadcast(&api->ready_cond);
        pthread_mutex_unlock(&api->lock);
        tb_info(TB_API_SUB, "reply consumer ready on every partition of task-replies");
        while (!atomic_load(&api->stop)) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(api->replies, 100);
                if (!m)
                        continue;
                if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_warn(TB_API_SUB, "task-replies: %s",
                                        rd_kafka_message_errstr(m));
                } else {
                        tb_api_reply_handle(api, m);
                }
                rd_kafka_message_destroy(m);
        }
        return NULL;
}

/* ---- commands ----------------------------------------------------------------- */

static void tb_api_count(const char *type, const char *outcome) {
        char labels[128];
        tb_snprintf(labels, sizeof(labels), "type=\"%s\",outcome=\"%s\"", type, outcome);
        tb_metrics_add("taskbus_api_commands_total", labels, 1);
}

/* Produce and wait for the delivery report. */
static rd_kafka_resp_err_t tb_api_produce(tb_api_t *api, const char *task_id, const tb_buf_t *val,
                                          const tb_principal_t *who, const char *corr) {
        char topic[256];
        tb_topic_name(api->ctx->conf, TB_TOPIC_COMMANDS, topic, sizeof(topic));
        /* a proof of the caller signed with the internal key, never its token */
        char principal[200], auth[200], serr[256];
        if (tb_sign_internal_headers(who, task_id, strlen(task_id), val->data, val->len,
                                     principal, auth, serr, sizeof(serr))) {
                tb_error(TB_API_SUB, "cannot sign the command: %s", serr);
                return RD_KAFKA_RESP_ERR__INVALID_ARG;
        }
        tb_api_delivery_t d = {.done = false};
        pthread_mutex_init(&d.mu, NULL);
        pthread_cond_init(&d.cv, NULL);
        rd_kafka_headers_t *h = rd_kafka_headers_new(3);
        rd_kafka_header_add(h, TB_SIGN_HDR_PRINCIPAL, -1, principal, -1);
        rd_kafka_header_add(h, TB_SIGN_HDR_AUTH, -1, auth, -1);
        rd_kafka_header_add(h, "correlation_id", -1, corr, -1);
        rd_kafka_resp_err_t e = rd_kafka_producev(
                tb_bus_rprod_get(api->producer), RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_KEY(task_id, strlen(task_id)), RD_KAFKA_V_VALUE(val->data, val->len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                RD_KAFKA_V_OPAQUE(&d), RD_KAFKA_V_END);
        /* not held while waiting: the poller serves the report, and may
         * replace a fatal producer meanwhile (then the report is a purge) */
        tb_bus_rprod_put(api->producer);
        if (e) {
                rd_kafka_headers_destroy(h);
        } else {
                /* message.timeout.ms guarantees the report comes */
                pthread_mutex_lock(&d.mu);
                while (!d.done)
                        pthread_cond_wait(&d.cv, &d.mu);
                pthread_mutex_unlock(&d.mu);
                e = d.err;
        }
        pthread_mutex_destroy(&d.mu);
        pthread_cond_destroy(&d.cv);
        return e;
}

static void tb_api_pending_remove(tb_api_t *api, struct tb_api_pending *p) {
        for (struct tb_api_pending **pp = &api->pending[tb_api_hash(p->corr)]; *pp;
             pp = &(*pp)->next) {
                if (*pp == p) {
                        *pp = p->next;
                        break;
                }
        }
}

void tb_api_command(tb_api_t *api, tb_http_req_t *req, const char *type, const char *task_id,
                    int64_t expected_version, const char *task_json, const json_t *params,
                    tb_api_cmd_result_t *res) {
        const tb_config_t *conf = api->ctx->conf;
        memset(res, 0, sizeof(*res));
        tb_uuid4(res->command_id);
        tb_uuid4(res->correlation_id);
        res->requested_at_ms = tb_now_ms();
        res->deadline_us = tb_mono_us() + conf->api_reply_timeout_ms * 1000;

        /* Without the reply consumer in place a reply could be missed: refuse
         * before anything is written. */
        int64_t ready_by = tb_mono_us() + (int64_t)TB_API_READY_WAIT_MS * 1000;
        if (ready_by > res->deadline_us)
                ready_by = res->deadline_us;
        pthread_mutex_lock(&api->lock);
        while (!api->replies_ready && !atomic_load(&api->stop) &&
               tb_api_cond_wait_until(&api->ready_cond, &api->lock, ready_by))
                ;
        bool ready = api->replies_ready;
        if (!ready)
                tb_snprintf(res->message, sizeof(res->message),
                            "Kafka is unavailable, the command was not sent: %s",
                            api->replies_error[0] ? api->replies_error : "starting up");
        pthread_mutex_unlock(&api->lock);
        if (!ready) {
                res->outcome = TB_API_UNAVAILABLE;
                tb_api_count(type, "unavailable");
                return;
        }

        json_t *cmd = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:o}", "command_id",
                                res->command_id, "correlation_id", res->correlation_id, "type",
                                type, "task_id", task_id, "expected_version",
                                expected_version >= 0 ? json_integer(expected_version)
                                                      : json_null(),
                                "task", task_json ? json_string(task_json) : json_null(),
                                "requested_at", (json_int_t)res->requested_at_ms, "params",
                                params ? json_deep_copy(params) : json_object());
        tb_buf_t val = {0};
        char err[512];
        if (!cmd || tb_serde_encode(TB_SCHEMA_TASK_COMMAND, cmd, &val, err, sizeof(err))) {
                /* the body is a JSON string: only a broken build gets here */
                json_decref(cmd);
                tb_buf_free(&val);
                res->outcome = TB_API_REJECTED;
                tb_snprintf(res->reason, sizeof(res->reason), "INTERNAL");
                tb_snprintf(res->message, sizeof(res->message), "cannot encode the command: %s",
                            cmd ? err : "out of memory");
                tb_api_count(type, "internal");
                return;
        }
        json_decref(cmd);

        struct tb_api_pending p = {.done = false};
        tb_snprintf(p.corr, sizeof(p.corr), "%s", res->correlation_id);
        tb_cond_init_mono(&p.cv);
        unsigned b = tb_api_hash(p.corr);
        pthread_mutex_lock(&api->lock);
        p.next = api->pending[b];
        api->pending[b] = &p;
        pthread_mutex_unlock(&api->lock);

        int64_t sent_us = tb_mono_us();
        rd_kafka_resp_err_t ke = tb_api_produce(api, task_id, &val,
                                                tb_api_principal(req),
                                                res->correlation_id);
        tb_debug(TB_API_SUB, "command %s delivered in %.1f ms", res->command_id,
                 (double)(tb_mono_us() - sent_us) / 1000.0);
        tb_buf_free(&val);
        pthread_mutex_lock(&api->lock);
        if (!ke)
                while (!p.done && tb_api_cond_wait_until(&p.cv, &api->lock, res->deadline_us))
                        ;
        tb_api_pending_remove(api, &p);
        pthread_mutex_unlock(&api->lock);
        pthread_cond_destroy(&p.cv);

        if (ke) {
                res->outcome = TB_API_UNAVAILABLE;
                tb_snprintf(res->message, sizeof(res->message),
                            "Kafka is unavailable: the command could not be written to "
                            "task-commands (%s), nothing was applied; retry later",
                            rd_kafka_err2str(ke));
                tb_warn(TB_API_SUB, "command %s (%s %s): %s", res->command_id, type, task_id,
                        rd_kafka_err2str(ke));
                tb_api_count(type, "unavailable");
                return;
        }
        if (!p.done) {
                res->outcome = TB_API_TIMEOUT;
                tb_snprintf(res->message, sizeof(res->message),
                            "no reply to command %s within %" PRId64
                            " ms (api.reply_timeout): it may still be applied; look at "
                            "GET /v1/tasks/%s/history before retrying",
                            res->command_id, conf->api_reply_timeout_ms, task_id);
                tb_api_count(type, "timeout");
                return;
        }
        json_t *r = p.reply;
        const char *status = json_string_value(json_object_get(r, "status"));
        const char *reason = json_string_value(json_object_get(r, "reason"));
        const char *msg = json_string_value(json_object_get(r, "message"));
        const char *field = json_string_value(json_object_get(r, "field"));
        json_t *ver = json_object_get(r, "version");
        tb_snprintf(res->reason, sizeof(res->reason), "%s", reason ? reason : "INTERNAL");
        tb_snprintf(res->message, sizeof(res->message), "%s", msg ? msg : "");
        tb_snprintf(res->field, sizeof(res->field), "%s", field ? field : "");
        if (status && !strcmp(status, "ACCEPTED")) {
                res->outcome = TB_API_ACCEPTED;
                res->version = json_is_integer(ver) ? json_integer_value(ver) : 0;
                tb_api_count(type, "accepted");
        } else {
                res->outcome = TB_API_REJECTED;
                char low[32];
                size_t i = 0;
                for (; res->reason[i] && i + 1 < sizeof(low); i++)
                        low[i] = (char)(res->reason[i] >= 'A' && res->reason[i] <= 'Z'
                                                ? res->reason[i] + 32
                                                : res->reason[i]);
                low[i] = '\0';
                tb_api_count(type, low);
        }
        json_decref(r);
}

void tb_api_command_error(tb_http_resp_t *resp, const char *type, const char *task_id,
                          const tb_api_cmd_result_t *res) {
        if (res->outcome == TB_API_UNAVAILABLE) {
                tb_http_error(resp, 503, "unavailable", NULL, "%s", res->message);
                tb_http_add_header(resp, "Retry-After", "5");
                return;
        }
        if (res->outcome == TB_API_TIMEOUT) {
                json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "code", "timeout", "message",
                                      res->message, "command_id", res->command_id, "task_id",
                                      task_id);
                tb_http_json(resp, 504, json_pack("{s:o}", "error", e));
                return;
        }
        const char *reason = res->reason;
        const char *field = res->field[0] ? res->field : NULL;
        const char *msg = res->message[0] ? res->message : reason;
        bool create = !strcmp(type, "CREATE");
        if (!strcmp(reason, "INVALID_ARGUMENT"))
                tb_http_error(resp, 400, "invalid_argument", field, "%s", msg);
        else if (!strcmp(reason, "UNAUTHENTICATED")) {
                tb_http_error(resp, 401, "unauthenticated", NULL, "%s", msg);
                tb_http_add_header(resp, "WWW-Authenticate",
                                   "Bearer realm=\"taskbus\", error=\"invalid_token\"");
        } else if (!strcmp(reason, "FORBIDDEN") && field && !strcmp(field, "home_region"))
                /* the commands role knows the task is homed elsewhere before this
                 * region's projection does: the client should retry there */
                tb_http_error(resp, 421, "wrong_region", field, "%s", msg);
        else if (!strcmp(reason, "FORBIDDEN") &&
                 (create || (field && !strcmp(field, "max_tasks"))))
                tb_http_error(resp, 403, "forbidden", field, "%s", msg);
        else if (!strcmp(reason, "FORBIDDEN") || !strcmp(reason, "NOT_FOUND"))
                tb_http_error(resp, 404, "not_found", NULL,
                              "no task '%s' in your security groups", task_id);
        else if (!strcmp(reason, "CONFLICT"))
                tb_http_error(resp, 409, "conflict", field, "%s", msg);
        else if (!strcmp(reason, "THROTTLED")) {
                /* the commands role says when: "... retry after N ms" */
                const char *after = strstr(msg, "retry after ");
                long long ms = after ? atoll(after + 12) : 0;
                char secs[24];
                tb_snprintf(secs, sizeof(secs), "%lld", ms > 1000 ? (ms + 999) / 1000 : 1);
                tb_http_error(resp, 429, "throttled", field, "%s", msg);
                tb_http_add_header(resp, "Retry-After", secs);
        } else
                tb_http_error(resp, 500, "internal", field, "command %s failed: %s",
                              res->command_id, msg);
}
