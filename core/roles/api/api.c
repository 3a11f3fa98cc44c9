/**
 * @file api/api.c
 * @brief The api role: the REST API over HTTP (route table below), /healthz
 *        and /metrics, bearer authentication and rate limits, and the
 *        machinery behind writes: a TaskCommand produced to task-commands,
 *        its TaskReply found on task-replies by correlation id, then a wait
 *        until the PostgreSQL projection shows the write (read your writes).
 *        The routes themselves are in tasks.c and runs.c.
 */
#include "api/api.h"
#include "bus/bus.h"
#include "http/metrics.h"
#include "identity/signing.h"
#include "serde/serde.h"
#include "store/tasks.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define TB_API_SUB "api"
/** How long authentication results are cached (revocation delay). */
#define TB_API_AUTH_CACHE_MS 1000
/** Delivery bound of a command: Kafka down answers 503 within this. */
#define TB_API_MESSAGE_TIMEOUT_MS 5000
/** Longest a write waits for the reply consumer to reach Kafka. */
#define TB_API_READY_WAIT_MS 5000
/** Projection re-check period when a notification may have been missed. */
#define TB_API_PROJ_POLL_MS 10

/** A handler waiting for the TaskReply of its correlation id. */
struct tb_api_pending {
        char corr[37];
        json_t *reply;   /**< set by the reply consumer (owned) */
        bool done;
        pthread_cond_t cv;
        struct tb_api_pending *next;
};

/** A handler waiting for the projection to reach a task version. */
struct tb_api_projwait {
        char task_id[256];
        int64_t version;
        bool done;
        pthread_cond_t cv;
        struct tb_api_projwait *next;
};

/** One delivery report awaited by a handler. */
typedef struct tb_api_delivery {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool done;
        rd_kafka_resp_err_t err;
} tb_api_delivery_t;

/* ---- small helpers ----------------------------------------------------- */

/** Wait on \p cv until the monotonic \p deadline_us. @returns false on timeout. */
static bool tb_api_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_us) {
        struct timespec ts = {.tv_sec = deadline_us / 1000000,
                              .tv_nsec = (long)(deadline_us % 1000000) * 1000};
        return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

static unsigned tb_api_hash(const char *s) {
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 16777619u;
        return h % TB_API_PENDING_BUCKETS;
}

const tb_principal_t *tb_api_principal(const tb_http_req_t *req) { return req->user; }

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
static tb_err_t tb_api_producer_new(tb_api_t *api, char *errstr, size_t errstr_size) {
        tb_producer_opts_t o = {.linger_ms = 1,
                                .message_timeout_ms = TB_API_MESSAGE_TIMEOUT_MS,
                                .dr_msg_cb = tb_api_dr_cb};
        return tb_bus_producer_new_opts(api->ctx->conf, &o, &api->producer, errstr, errstr_size);
}

static void *tb_api_poll_main(void *arg) {
        tb_api_t *api = arg;
        while (!atomic_load(&api->stop))
                rd_kafka_poll(api->producer, 100);
        return NULL;
}

/* ---- reply consumer ------------------------------------------------------ */

static tb_err_t tb_api_replies_new(tb_api_t *api, char *errstr, size_t errstr_size) {
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
static tb_err_t tb_api_replies_assign(tb_api_t *api, char *errstr, size_t errstr_size) {
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
                ke = rd_kafka_query_watermark_offsets(api->replies, topic, pid, &lo, &hi, 3000);
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

static void *tb_api_reply_main(void *arg) {
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

/* ---- projection watcher ----------------------------------------------------- */

/** Append \p s to \p b as one element of a PostgreSQL array literal. */
static void tb_api_pg_array_add(tb_buf_t *b, const char *s) {
        tb_buf_append(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        tb_buf_append(b, "\\", 1);
                tb_buf_append(b, s, 1);
        }
        tb_buf_append(b, "\"", 1);
}

/* Mark every waiter whose task reached its version in the projection. */
static void tb_api_proj_check(tb_api_t *api, PGconn *conn) {
        tb_buf_t ids = {0}, vers = {0};
        tb_buf_append(&ids, "{", 1);
        tb_buf_append(&vers, "{", 1);
        int n = 0;
        pthread_mutex_lock(&api->lock);
        for (struct tb_api_projwait *w = api->projwaits; w; w = w->next) {
                if (w->done)
                        continue;
                tb_api_pg_array_add(&ids, w->task_id);
                tb_buf_printf(&vers, "%s%" PRId64, n ? "," : "", w->version);
                n++;
        }
        pthread_mutex_unlock(&api->lock);
        tb_buf_append(&ids, "}", 2);
        tb_buf_append(&vers, "}", 2);
        PGconn *pooled = NULL;
        if (n == 0)
                goto out;
        if (!conn || PQstatus(conn) != CONNECTION_OK)
                conn = pooled = tb_store_acquire_timeout(api->ctx->store, 100);
        if (!conn)
                goto out;
        PGresult *res = NULL;
        char err[512];
        if (tb_store_tasks_projected(conn, ids.data, vers.data, &res, err, sizeof(err))) {
                tb_debug(TB_API_SUB, "%s", err);
                goto out;
        }
        pthread_mutex_lock(&api->lock);
        for (int i = 0; i < PQntuples(res); i++) {
                const char *id = PQgetvalue(res, i, 0);
                int64_t v = strtoll(PQgetvalue(res, i, 1), NULL, 10);
                for (struct tb_api_projwait *w = api->projwaits; w; w = w->next) {
                        if (!w->done && w->version == v && !strcmp(w->task_id, id)) {
                                w->done = true;
                                pthread_cond_signal(&w->cv);
                        }
                }
        }
        pthread_mutex_unlock(&api->lock);
        PQclear(res);
out:
        if (pooled)
                tb_store_release(api->ctx->store, pooled);
        tb_buf_free(&ids);
        tb_buf_free(&vers);
}

static PGconn *tb_api_listen_connect(tb_api_t *api) {
        PGconn *c = PQconnectdb(api->ctx->conf->pg_url);
        if (!c || PQstatus(c) != CONNECTION_OK) {
                tb_debug(TB_API_SUB, "projection listener: %s", c ? PQerrorMessage(c) : "oom");
                PQfinish(c);
                return NULL;
        }
        PGresult *r = PQexec(c, "LISTEN taskbus_projection");
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
                PQfinish(c);
                return NULL;
        }
        return c;
}

/*
 * One thread answers every read-your-writes wait: on each projector
 * notification (and every few ms while waits are pending, in case one was
 * missed or the listener is down) ONE query checks all pending waits.
 */
static void *tb_api_proj_main(void *arg) {
        tb_api_t *api = arg;
        PGconn *conn = NULL;
        int64_t next_connect = 0;
        while (!atomic_load(&api->stop)) {
                if (!conn && tb_mono_us() >= next_connect) {
                        conn = tb_api_listen_connect(api);
                        next_connect = tb_mono_us() + 1000000;
                }
                pthread_mutex_lock(&api->lock);
                bool have = false;
                for (struct tb_api_projwait *w = api->projwaits; w && !have; w = w->next)
                        have = !w->done;
                pthread_mutex_unlock(&api->lock);
                if (have)
                        tb_api_proj_check(api, conn);
                struct pollfd fds[2] = {{.fd = api->wake_fd, .events = POLLIN},
                                        {.fd = conn ? PQsocket(conn) : -1, .events = POLLIN}};
                poll(fds, 2, have ? TB_API_PROJ_POLL_MS : 200);
                if (fds[0].revents & POLLIN) {
                        uint64_t v;
                        if (read(api->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                                tb_debug(TB_API_SUB, "wake: %s", strerror(errno));
                }
                if (conn && fds[1].revents) {
                        if (!PQconsumeInput(conn)) {
                                tb_warn(TB_API_SUB, "projection listener lost: %s",
                                        PQerrorMessage(conn));
                                PQfinish(conn);
                                conn = NULL;
                                continue;
                        }
                        PGnotify *nt;
                        while ((nt = PQnotifies(conn)))
                                PQfreemem(nt);
                }
        }
        PQfinish(conn);
        return NULL;
}

bool tb_api_wait_projected(tb_api_t *api, const char *task_id, int64_t version,
                           int64_t deadline_us) {
        struct tb_api_projwait w = {.version = version};
        tb_snprintf(w.task_id, sizeof(w.task_id), "%s", task_id);
        tb_cond_init_mono(&w.cv);
        pthread_mutex_lock(&api->lock);
        w.next = api->projwaits;
        api->projwaits = &w;
        pthread_mutex_unlock(&api->lock);
        uint64_t one = 1;
        if (write(api->wake_fd, &one, sizeof(one)) < 0)
                tb_debug(TB_API_SUB, "wake: %s", strerror(errno));
        pthread_mutex_lock(&api->lock);
        while (!w.done && tb_api_cond_wait_until(&w.cv, &api->lock, deadline_us))
                ;
        for (struct tb_api_projwait **pp = &api->projwaits; *pp; pp = &(*pp)->next) {
                if (*pp == &w) {
                        *pp = w.next;
                        break;
                }
        }
        bool done = w.done;
        pthread_mutex_unlock(&api->lock);
        pthread_cond_destroy(&w.cv);
        return done;
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
                api->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(task_id, strlen(task_id)),
                RD_KAFKA_V_VALUE(val->data, val->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&d), RD_KAFKA_V_END);
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
                    int64_t expected_version, const char *task_json, tb_api_cmd_result_t *res) {
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

        json_t *cmd = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:I}", "command_id",
                                res->command_id, "correlation_id", res->correlation_id, "type",
                                type, "task_id", task_id, "expected_version",
                                expected_version >= 0 ? json_integer(expected_version)
                                                      : json_null(),
                                "task", task_json ? json_string(task_json) : json_null(),
                                "requested_at", (json_int_t)res->requested_at_ms);
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
        else if (!strcmp(reason, "FORBIDDEN") && create)
                tb_http_error(resp, 403, "forbidden", field, "%s", msg);
        else if (!strcmp(reason, "FORBIDDEN") || !strcmp(reason, "NOT_FOUND"))
                tb_http_error(resp, 404, "not_found", NULL,
                              "no task '%s' in your security groups", task_id);
        else if (!strcmp(reason, "CONFLICT"))
                tb_http_error(resp, 409, "conflict", field, "%s", msg);
        else if (!strcmp(reason, "THROTTLED")) {
                tb_http_error(resp, 429, "throttled", NULL, "%s", msg);
                tb_http_add_header(resp, "Retry-After", "1");
        } else
                tb_http_error(resp, 500, "internal", field, "command %s failed: %s",
                              res->command_id, msg);
}

/* ---- authentication, /healthz, /metrics ----------------------------------------- */

static bool tb_api_auth(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *h = tb_http_header(req, "Authorization");
        char err[512];
        if (!h || !*h) {
                tb_http_error(resp, 401, "unauthenticated", NULL,
                              "missing Authorization header: send 'Authorization: Bearer "
                              "<token>' (tokens come from `taskbus admin token create`)");
                tb_http_add_header(resp, "WWW-Authenticate", "Bearer realm=\"taskbus\"");
                return false;
        }
        tb_principal_t *p = NULL;
        tb_err_t e = tb_identity_authenticate(api->ctx->store, h, TB_API_AUTH_CACHE_MS, &p, err,
                                              sizeof(err));
        if (e == TB_ERR_UNAUTHENTICATED) {
                tb_http_error(resp, 401, "unauthenticated", NULL, "%s", err);
                tb_http_add_header(resp, "WWW-Authenticate",
                                   "Bearer realm=\"taskbus\", error=\"invalid_token\"");
                return false;
        }
        if (e) {
                tb_warn(TB_API_SUB, "authentication: %s", err);
                tb_http_error(resp, 503, "unavailable", NULL,
                              "cannot check the token right now (the database is unavailable); "
                              "retry later");
                tb_http_add_header(resp, "Retry-After", "5");
                return false;
        }
        int64_t retry_ms = 0;
        if (!tb_ratelimit_take(api->rl, p->user_id, tb_mono_us(), &retry_ms)) {
                char ra[32];
                int64_t secs = (retry_ms + 999) / 1000;
                tb_snprintf(ra, sizeof(ra), "%" PRId64, secs < 1 ? 1 : secs);
                tb_http_error(resp, 429, "throttled", NULL,
                              "user '%s' exceeds %.6g requests/s (burst %" PRId64
                              "); retry after %s s",
                              p->user_id, api->ctx->conf->api_rate, api->ctx->conf->api_burst, ra);
                tb_http_add_header(resp, "Retry-After", ra);
                tb_principal_free(p);
                return false;
        }
        req->user = p;
        return true;
}

static void tb_api_release(void *app, tb_http_req_t *req) {
        tb_principal_free(req->user);
        req->user = NULL;
}

static void tb_api_healthz(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        char kerr[256] = "", perr[256] = "";
        bool kafka_ok = false, pg_ok = false;

        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t ke = rd_kafka_metadata(api->producer, 0, NULL, &md, 2000);
        if (ke == RD_KAFKA_RESP_ERR_NO_ERROR) {
                kafka_ok = md->broker_cnt > 0;
                rd_kafka_metadata_destroy(md);
        } else {
                snprintf(kerr, sizeof(kerr), "%s", rd_kafka_err2str(ke));
        }
        PGconn *conn = tb_store_acquire_timeout(api->ctx->store, 2000);
        if (conn) {
                pg_ok = tb_store_exec(conn, "health check", "SELECT 1", 0, NULL, NULL, perr,
                                      sizeof(perr)) == TB_OK;
                tb_store_release(api->ctx->store, conn);
        } else {
                snprintf(perr, sizeof(perr), "no connection");
        }
        json_t *j = json_pack("{s:s, s:{s:b}, s:{s:b}, s:s}", "status",
                              kafka_ok && pg_ok ? "ok" : "degraded", "kafka", "ok", kafka_ok,
                              "postgres", "ok", pg_ok, "region", api->ctx->conf->region);
        if (!kafka_ok)
                json_object_set_new(json_object_get(j, "kafka"), "error", json_string(kerr));
        if (!pg_ok)
                json_object_set_new(json_object_get(j, "postgres"), "error", json_string(perr));
        tb_http_json(resp, kafka_ok && pg_ok ? 200 : 503, j);
}

static void tb_api_metrics(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4";
        tb_metrics_render(&resp->body);
}

/* The seed API's un-versioned /tasks paths are aliases of /v1/tasks. */
static const tb_http_route_t tb_api_routes[] = {
        {"GET", "/healthz", tb_api_healthz, true},
        {"GET", "/metrics", tb_api_metrics, true},
        {"POST", "/v1/tasks", tb_api_tasks_create, false},
        {"GET", "/v1/tasks", tb_api_tasks_list, false},
        {"GET", "/v1/tasks/{id}", tb_api_tasks_get, false},
        {"PUT", "/v1/tasks/{id}", tb_api_tasks_update, false},
        {"POST", "/v1/tasks/{id}", tb_api_tasks_update, false},
        {"DELETE", "/v1/tasks/{id}", tb_api_tasks_delete, false},
        {"POST", "/v1/tasks/{id}/pause", tb_api_tasks_pause, false},
        {"POST", "/v1/tasks/{id}/resume", tb_api_tasks_resume, false},
        {"POST", "/v1/tasks/{id}/run", tb_api_tasks_run, false},
        {"GET", "/v1/tasks/{id}/history", tb_api_tasks_history, false},
        {"GET", "/v1/tasks/{id}/runs", tb_api_runs_list, false},
        {"GET", "/v1/runs/{id}", tb_api_runs_get, false},
        {"POST", "/v1/runs/{id}/cancel", tb_api_runs_cancel, false},
        {"GET", "/v1/runs/{id}/log", tb_api_runs_log, false},
        {"POST", "/tasks", tb_api_tasks_create, false},
        {"GET", "/tasks", tb_api_tasks_list, false},
        {"GET", "/tasks/{id}", tb_api_tasks_get, false},
        {"PUT", "/tasks/{id}", tb_api_tasks_update, false},
        {"POST", "/tasks/{id}", tb_api_tasks_update, false},
        {"DELETE", "/tasks/{id}", tb_api_tasks_delete, false},
        {NULL, NULL, NULL, false},
};

/* ---- the role ------------------------------------------------------------------- */

static void tb_api_teardown(tb_api_t *api) {
        tb_http_stop(api->http);
        api->http = NULL;
        atomic_store(&api->stop, true);
        pthread_mutex_lock(&api->lock);
        pthread_cond_broadcast(&api->ready_cond);
        pthread_mutex_unlock(&api->lock);
        if (api->wake_fd >= 0) {
                uint64_t one = 1;
                if (write(api->wake_fd, &one, sizeof(one)) < 0)
                        tb_debug(TB_API_SUB, "wake: %s", strerror(errno));
        }
        if (api->proj_started)
                pthread_join(api->proj_thread, NULL);
        if (api->reply_started)
                pthread_join(api->reply_thread, NULL);
        if (api->replies) {
                tb_bus_consumer_destroy(api->replies, 10000);
        }
        if (api->poll_started)
                pthread_join(api->poll_thread, NULL);
        if (api->producer) {
                rd_kafka_flush(api->producer, 5000);
                rd_kafka_destroy(api->producer);
        }
        if (api->wake_fd >= 0)
                close(api->wake_fd);
        tb_ratelimit_free(api->rl);
        pthread_cond_destroy(&api->ready_cond);
        pthread_mutex_destroy(&api->lock);
        free(api);
}

static tb_err_t tb_api_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t kerr = tb_sign_key_init(ctx->conf, true, errstr, errstr_size);
        if (kerr)
                return kerr;
        tb_api_t *api = calloc(1, sizeof(*api));
        if (!api)
                return TB_ERR_NOMEM;
        api->ctx = ctx;
        api->wake_fd = -1;
        pthread_mutex_init(&api->lock, NULL);
        tb_cond_init_mono(&api->ready_cond);
        tb_metrics_describe("taskbus_api_commands_total", "counter",
                            "Commands sent by the REST API by type and outcome (accepted, a "
                            "rejection reason, unavailable, timeout)");
        tb_err_t err;
        api->rl = tb_ratelimit_new(ctx->conf->api_rate, ctx->conf->api_burst);
        api->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!api->rl || api->wake_fd < 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "api: %s",
                                api->rl ? strerror(errno) : "out of memory");
                goto fail;
        }
        if ((err = tb_serde_init(errstr, errstr_size)) ||
            (err = tb_api_producer_new(api, errstr, errstr_size)) ||
            (err = tb_api_replies_new(api, errstr, errstr_size)))
                goto fail;
        if (pthread_create(&api->poll_thread, NULL, tb_api_poll_main, api) == 0)
                api->poll_started = true;
        if (pthread_create(&api->reply_thread, NULL, tb_api_reply_main, api) == 0)
                api->reply_started = true;
        if (pthread_create(&api->proj_thread, NULL, tb_api_proj_main, api) == 0)
                api->proj_started = true;
        if (!api->poll_started || !api->reply_started || !api->proj_started) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "api: cannot start threads");
                goto fail;
        }
        /* Accept requests once replies can be heard (or after a bounded wait:
         * with Kafka down the API still answers reads, and writes get 503). */
        int64_t by = tb_mono_us() + (int64_t)TB_API_READY_WAIT_MS * 1000;
        pthread_mutex_lock(&api->lock);
        while (!api->replies_ready && tb_api_cond_wait_until(&api->ready_cond, &api->lock, by))
                ;
        pthread_mutex_unlock(&api->lock);
        tb_http_limits_t lim;
        tb_http_limits_from_config(ctx->conf, &lim);
        err = tb_http_start(ctx->conf->api_listen, tb_api_routes, api, tb_api_auth,
                            tb_api_release, &lim, &api->http, errstr, errstr_size);
        if (err)
                goto fail;
        tb_info(TB_API_SUB, "listening on http://%s", ctx->conf->api_listen);
        *state = api;
        return TB_OK;
fail:
        tb_api_teardown(api);
        return err;
}

static void tb_api_stop(void *state) { tb_api_teardown(state); }

const tb_role_t tb_role_api = {
        .name = "api",
        .description = "REST API (HTTP), /healthz and /metrics",
        .start = tb_api_start,
        .stop = tb_api_stop,
};
