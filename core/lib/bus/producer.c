/**
 * @file bus/producer.c
 * @brief Producers: the idempotent and transactional producers, produce with
 *        headers and a synchronous mode, and transactions with fencing
 *        detection.
 */
#include "bus/bus.h"
#include "bus/bus_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/** Upper bound for init_transactions and the transactional calls that take
 *  no caller timeout: long enough for a broker to abort a zombie's open
 *  transaction, short enough that a dead broker is reported. */
#define TB_BUS_TXN_TIMEOUT_MS 30000
/** transaction.timeout.ms of every transactional producer: a crashed owner's
 *  open transaction is aborted by the broker after this long, and until then
 *  it holds back every read_committed reader of its partitions (the
 *  failover time of a killed scheduler or commands process). taskbus's
 *  transactions last milliseconds, so 10 s leaves a wide margin. It also
 *  bounds message.timeout.ms: a record whose partition leader is a killed
 *  broker fails after it, and its transaction with it. A transaction.timeout.ms
 *  in the config's kafka group wins (docs/reliability.md, the broker kill). */
#define TB_BUS_TXN_BROKER_TIMEOUT "10000"
/** Retries of a commit that failed with a retriable error. */
#define TB_BUS_COMMIT_TRIES 3
/** How long produce waits for room in a full local queue. */
#define TB_BUS_QUEUE_FULL_WAIT_MS 10000

/* ---- producers -------------------------------------------------------------- */

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

/** TB_ERR_FENCED naming the transactional.id a newer producer took over;
 *  \p why is librdkafka's reason, \p advice is appended. */
static tb_err_t tb_bus_fenced(rd_kafka_t *rk, const char *what, const char *why,
                              const char *advice, char *errstr, size_t errstr_size) {
        char id[256];
        return tb_seterr(errstr, errstr_size, TB_ERR_FENCED,
                         "%s: producer fenced: a newer producer took over "
                         "transactional.id '%s' (%s)%s",
                         what, tb_bus_txn_id(rk, id, sizeof(id)), why, advice);
}

/** Map a producer's fatal state; TB_OK when it has none. */
static tb_err_t tb_bus_fatal(rd_kafka_t *rk, const char *what, char *errstr,
                             size_t errstr_size) {
        char fbuf[512];
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, fbuf, sizeof(fbuf));
        if (!ferr)
                return TB_OK;
        if (tb_bus_fenced_code(ferr))
                return tb_bus_fenced(rk, what, fbuf, "; stop using this producer", errstr,
                                     errstr_size);
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
        char msg[512];
        tb_err_t err;
        tb_snprintf(msg, sizeof(msg), "%s", rd_kafka_error_string(error));
        if (rd_kafka_error_is_fatal(error) || tb_bus_fenced_code(code)) {
                rd_kafka_error_destroy(error);
                err = tb_bus_fatal(rk, what, errstr, errstr_size);
                if (err)
                        return err;
                if (tb_bus_fenced_code(code))
                        return tb_bus_fenced(rk, what, msg, "", errstr, errstr_size);
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
        tb_producer_opts_t o = {.transactional_id = transactional_id};
        return tb_bus_producer_new_opts(conf, &o, out, errstr, errstr_size);
}

tb_err_t tb_bus_producer_new_opts(const tb_config_t *conf, const tb_producer_opts_t *opts,
                                  rd_kafka_t **out, char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        rd_kafka_t *rk = NULL;
        tb_err_t err;
        const char *transactional_id = opts->transactional_id;
        char linger[32];
        *out = NULL;
        tb_snprintf(linger, sizeof(linger), "%d", opts->linger_ms > 0 ? opts->linger_ms : 5);
        if ((err = tb_bus_conf_new(conf, &c, errstr, errstr_size)))
                return err;
        /* What correctness depends on, set after the pass-through so it wins:
         * no duplicates or reordering on retry, durable writes, and the Java
         * client's key -> partition mapping (tb_bus_partition_for). */
        if ((err = tb_bus_set(c, "enable.idempotence", "true", errstr, errstr_size)) ||
            (err = tb_bus_set(c, "acks", "all", errstr, errstr_size)) ||
            (err = tb_bus_set(c, "linger.ms", linger, errstr, errstr_size)) ||
            (err = tb_bus_set(c, "partitioner", "murmur2_random", errstr, errstr_size)) ||
            (err = tb_bus_set_ms(c, "message.timeout.ms", opts->message_timeout_ms, errstr,
                                 errstr_size)))
                goto fail;
        if (transactional_id) {
                if (!transactional_id[0]) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "producer: transactional.id must not be empty");
                        goto fail;
                }
                if ((err = tb_bus_set(c, "transactional.id", transactional_id, errstr,
                                      errstr_size)) ||
                    (!tb_bus_prop(conf, "transaction.timeout.ms") &&
                     (err = tb_bus_set(c, "transaction.timeout.ms", TB_BUS_TXN_BROKER_TIMEOUT,
                                       errstr, errstr_size))))
                        goto fail;
        }
        /* taskbus's topics exist before any producer runs (topics ensure), so
         * a topic missing from metadata is a mistake to report soon, not one
         * to wait 30 s (the default) for. A pass-through value wins. */
        if (!tb_bus_prop(conf, "topic.metadata.propagation.max.ms") &&
            (err = tb_bus_set(c, "topic.metadata.propagation.max.ms", "5000", errstr, errstr_size)))
                goto fail;
        rd_kafka_conf_set_dr_msg_cb(c, opts->dr_msg_cb ? opts->dr_msg_cb : tb_bus_dr_cb);
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

/* ---- a producer that outlives a fatal error ---------------------------------- */

struct tb_bus_rprod {
        pthread_rwlock_t lock; /* read: the handle is in use; write: replacing it */
        rd_kafka_t *rk;
        const tb_config_t *conf;
        tb_producer_opts_t opts; /* zeroed when none were given: the defaults */
        char what[64];
        atomic_uint rebuilds;
};

static tb_err_t tb_bus_rprod_make(tb_bus_rprod_t *p, rd_kafka_t **out, char *errstr,
                                  size_t errstr_size) {
        return tb_bus_producer_new_opts(p->conf, &p->opts, out, errstr, errstr_size);
}

tb_err_t tb_bus_rprod_new(const tb_config_t *conf, const tb_producer_opts_t *opts,
                          const char *what, tb_bus_rprod_t **out, char *errstr,
                          size_t errstr_size) {
        *out = NULL;
        if (opts && opts->transactional_id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: a transactional producer is rebuilt by its owner, "
                                 "not by tb_bus_rprod", what);
        tb_bus_rprod_t *p = calloc(1, sizeof(*p));
        if (!p)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "%s: out of memory", what);
        p->conf = conf;
        if (opts)
                p->opts = *opts;
        tb_snprintf(p->what, sizeof(p->what), "%s", what);
        atomic_init(&p->rebuilds, 0);
        tb_err_t err = tb_bus_rprod_make(p, &p->rk, errstr, errstr_size);
        if (err) {
                free(p);
                return err;
        }
        pthread_rwlock_init(&p->lock, NULL);
        *out = p;
        return TB_OK;
}

rd_kafka_t *tb_bus_rprod_get(tb_bus_rprod_t *p) {
        pthread_rwlock_rdlock(&p->lock);
        return p->rk;
}

void tb_bus_rprod_put(tb_bus_rprod_t *p) {
        pthread_rwlock_unlock(&p->lock);
}

bool tb_bus_rprod_recover(tb_bus_rprod_t *p) {
        char why[512];
        pthread_rwlock_rdlock(&p->lock);
        bool fatal = rd_kafka_fatal_error(p->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR;
        pthread_rwlock_unlock(&p->lock);
        if (!fatal)
                return false;
        pthread_rwlock_wrlock(&p->lock);
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(p->rk, why, sizeof(why));
        rd_kafka_t *fresh = NULL, *old = p->rk;
        char errstr[512];
        if (ferr == RD_KAFKA_RESP_ERR_NO_ERROR) { /* another thread did it meanwhile */
                pthread_rwlock_unlock(&p->lock);
                return false;
        }
        if (tb_bus_rprod_make(p, &fresh, errstr, sizeof(errstr)) != TB_OK) {
                pthread_rwlock_unlock(&p->lock);
                tb_error(TB_BUS_SUB, "%s: the producer is in a fatal state (%s: %s) and a new "
                         "one could not be made: %s; trying again at the next failure",
                         p->what, rd_kafka_err2name(ferr), why, errstr);
                return false;
        }
        p->rk = fresh;
        atomic_fetch_add(&p->rebuilds, 1);
        pthread_rwlock_unlock(&p->lock);
        tb_warn(TB_BUS_SUB, "%s: the producer was in a fatal state (%s: %s): replaced by a new "
                "one (%u so far); its %d queued record(s) fail to their owners, who retry",
                p->what, rd_kafka_err2name(ferr), why, atomic_load(&p->rebuilds),
                rd_kafka_outq_len(old));
        /* a fatal producer sends nothing more: destroying it fails what it
         * still holds to the delivery reports */
        rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(old, 2000); /* serves those reports */
        rd_kafka_destroy(old);
        return true;
}

unsigned tb_bus_rprod_rebuilds(const tb_bus_rprod_t *p) {
        return atomic_load(&((tb_bus_rprod_t *)p)->rebuilds);
}

void tb_bus_rprod_destroy(tb_bus_rprod_t *p, int flush_ms) {
        if (!p)
                return;
        if (rd_kafka_flush(p->rk, flush_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
                tb_warn(TB_BUS_SUB, "%s: %d record(s) not delivered at shutdown", p->what,
                        rd_kafka_outq_len(p->rk));
        rd_kafka_destroy(p->rk);
        pthread_rwlock_destroy(&p->lock);
        free(p);
}

/* Produce one record; \p dr (NULL: nobody waits) is completed by its
 * delivery report. */
static tb_err_t tb_bus_produce_with(rd_kafka_t *rk, const tb_config_t *conf, tb_topic_t topic,
                                    int32_t partition, const void *key, size_t key_len,
                                    const void *value, size_t value_len,
                                    const tb_header_t *headers, size_t header_cnt,
                                    tb_bus_dr_t *dr, char *errstr, size_t errstr_size) {
        char name[256];
        if (dr)
                *dr = (tb_bus_dr_t){.err = RD_KAFKA_RESP_ERR_NO_ERROR, .partition = -1,
                                    .offset = -1, .topic = topic};
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
                        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(dr),
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
        return TB_OK;
}

tb_err_t tb_bus_produce_tracked(rd_kafka_t *rk, const tb_config_t *conf, tb_topic_t topic,
                                int32_t partition, const void *key, size_t key_len,
                                const void *value, size_t value_len, tb_bus_dr_t *dr,
                                char *errstr, size_t errstr_size) {
        tb_err_t e = tb_bus_produce_with(rk, conf, topic, partition, key, key_len, value,
                                         value_len, NULL, 0, dr, errstr, errstr_size);
        if (e)
                atomic_store_explicit(&dr->done, 1, memory_order_release);
        return e;
}

tb_err_t tb_bus_dr_wait(rd_kafka_t *rk, const tb_config_t *conf, tb_bus_dr_t *dr,
                        char *errstr, size_t errstr_size) {
        char name[256];
        /* Poll from this thread rather than wait on a condition: no other
         * thread is required to serve the producer's callbacks, and if one
         * does serve our report, the flag is seen on the next round.
         * message.timeout.ms bounds the wait. */
        while (!atomic_load_explicit(&dr->done, memory_order_acquire))
                rd_kafka_poll(rk, 50);
        if (!dr->err)
                return TB_OK;
        int32_t partition = dr->partition;
        tb_topic_name(conf, dr->topic, name, sizeof(name));
        char what[300];
        tb_snprintf(what, sizeof(what), "produce to %s", name);
        tb_err_t fe = tb_bus_fatal(rk, what, errstr, errstr_size);
        if (fe)
                return fe;
        switch (dr->err) {
        case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "produce to %s: not delivered within message.timeout.ms (%s); "
                                 "is Kafka at %s up?",
                                 name, rd_kafka_err2str(dr->err), tb_bus_bootstrap(conf));
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "produce to %s: %s: the topic does not exist on Kafka at %s "
                                 "(taskbus creates its topics at start-up, see topics.prefix)",
                                 name, rd_kafka_err2str(dr->err), tb_bus_bootstrap(conf));
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "produce to %s [%" PRId32 "]: %s", name, partition,
                                 rd_kafka_err2str(dr->err));
        default:
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "produce to %s [%" PRId32 "]: %s (%s)", name, dr->partition,
                                 rd_kafka_err2str(dr->err), rd_kafka_err2name(dr->err));
        }
}

tb_err_t tb_bus_produce(rd_kafka_t *rk, const tb_config_t *conf, tb_topic_t topic,
                        int32_t partition, const void *key, size_t key_len, const void *value,
                        size_t value_len, const tb_header_t *headers, size_t header_cnt,
                        bool sync, char *errstr, size_t errstr_size) {
        tb_bus_dr_t dr;
        tb_err_t e = tb_bus_produce_with(rk, conf, topic, partition, key, key_len, value,
                                         value_len, headers, header_cnt, sync ? &dr : NULL,
                                         errstr, errstr_size);
        if (e || !sync)
                return e;
        return tb_bus_dr_wait(rk, conf, &dr, errstr, errstr_size);
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

