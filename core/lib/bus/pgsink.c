/**
 * @file bus/pgsink.c
 * @brief The Kafka-to-PostgreSQL loop of pgsink.h: offsets stored with the
 *        rows, seek to them on assignment, batches in one transaction,
 *        retry with backoff, clean stop.
 *
 * @locality one thread per sink owns its consumer; the rebalance hooks run on
 *           it (inside rd_kafka_consumer_poll()).
 */
#include "bus/pgsink.h"

#include "store/offsets.h"

#include "http/metrics.h"
#include "store/quarantine.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/** Longest pause between two tries of a failing batch. */
#define TB_PGSINK_BACKOFF_MAX_MS 5000
/** How long the loop polls for a first record before a round ends. */
#define TB_PGSINK_IDLE_POLL_MS 100

struct tb_pgsink {
        tb_pgsink_conf_t c;      /**< the caller's, topic arrays cleared */
        tb_rebalance_t rebalance; /**< hooks of the consumer below */
        rd_kafka_t *consumer;
        atomic_bool stop;        /**< tb_pgsink_stop() was called */
        pthread_t thread;
        bool thread_started;
        rd_kafka_message_t **batch; /**< c.batch_max records being collected */
        size_t batch_cnt;
        size_t last_batch_cnt;      /**< records of the previous batch: > 1 means busy */
};

static bool tb_pgsink_stopping(tb_pgsink_t *sk) {
        return atomic_load(&sk->stop) || (sk->c.stopping && atomic_load(sk->c.stopping));
}

/* ---- consumer_offsets --------------------------------------------------------------- */

/** Set each element of \p parts to the next offset stored for \p consumer
 *  (RD_KAFKA_OFFSET_BEGINNING when none is). */
static tb_err_t tb_pgsink_offsets_read(PGconn *conn, const char *consumer,
                                       rd_kafka_topic_partition_list_t *parts, char *errstr,
                                       size_t errstr_size) {
        tb_err_t err = TB_OK;
        for (int i = 0; i < parts->cnt && !err; i++)
                err = tb_store_offsets_get(conn, consumer, parts->elems[i].topic,
                                           parts->elems[i].partition, RD_KAFKA_OFFSET_BEGINNING,
                                           &parts->elems[i].offset, errstr, errstr_size);
        return err;
}

/** Store the offsets of \p next for \p consumer; an offset only moves forward. */
static tb_err_t tb_pgsink_offsets_store(PGconn *conn, const char *consumer,
                                        const rd_kafka_topic_partition_list_t *next,
                                        char *errstr, size_t errstr_size) {
        for (int k = 0; k < next->cnt; k++) {
                tb_err_t err = tb_store_offsets_advance(conn, consumer, next->elems[k].topic,
                                                        next->elems[k].partition,
                                                        next->elems[k].offset, errstr,
                                                        errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}

/* ---- one batch ------------------------------------------------------------------------ */

/** Fold \p m into \p l: per (topic, partition), the offset after the last
 *  record (\p after) or the offset of the first (!\p after). */
static void tb_pgsink_offsets_fold(rd_kafka_topic_partition_list_t *l,
                                   const rd_kafka_message_t *m, bool after) {
        const char *t = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(l, t, m->partition);
        int64_t off = after ? m->offset + 1 : m->offset;
        if (!tp)
                rd_kafka_topic_partition_list_add(l, t, m->partition)->offset = off;
        else if (after ? off > tp->offset : off < tp->offset)
                tp->offset = off;
}

/* ---- poison isolation ------------------------------------------------------------ */

/** A record set aside in the batch in hand, logged and counted once the
 *  batch is committed. */
typedef struct tb_pgsink_poison {
        size_t i;      /**< index in the batch */
        char why[512]; /**< the apply callback's reason */
} tb_pgsink_poison_t;

/** What a refused record deserves, whatever its callback guessed: a failed
 *  statement is classified by its SQLSTATE (store/quarantine.h), the same
 *  for every role; a lost connection is never the record's fault. */
static tb_store_fault_t tb_pgsink_fault(PGconn *conn, tb_pgsink_verdict_t v) {
        if (PQstatus(conn) != CONNECTION_OK)
                return TB_STORE_FAULT_TRANSIENT;
        if (PQtransactionStatus(conn) == PQTRANS_INERROR)
                return tb_store_quarantine_classify(tb_store_last_sqlstate());
        return v == TB_PGSINK_PERMANENT ? TB_STORE_FAULT_PERMANENT : TB_STORE_FAULT_TRANSIENT;
}

/** Put \p m in the quarantine table for \p role, in the caller's transaction
 *  (if any). */
static tb_err_t tb_pgsink_quarantine(PGconn *conn, const char *role,
                                     const rd_kafka_message_t *m, const char *why,
                                     const char *sqlstate, bool *inserted, char *errstr,
                                     size_t errstr_size) {
        rd_kafka_headers_t *hs = NULL;
        tb_header_t *h = NULL;
        size_t hn = 0, hcnt = 0;
        const char *name;
        const void *value;
        size_t len;
        if (!rd_kafka_message_headers(m, &hs) && (hcnt = rd_kafka_header_cnt(hs)) > 0 &&
            !(h = calloc(hcnt, sizeof(*h))))
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "%s: out of memory", role);
        for (; hn < hcnt && !rd_kafka_header_get_all(hs, hn, &name, &value, &len); hn++)
                h[hn] = (tb_header_t){.name = name, .value = value, .len = len};
        tb_store_quarantine_rec_t rec = {
                .role = role,
                .topic = rd_kafka_topic_name(m->rkt),
                .partition = m->partition,
                .offset = m->offset,
                .key = m->key,
                .key_len = m->key_len,
                .headers = h,
                .header_cnt = hn,
                .value = m->payload,
                .value_len = m->len,
                .error = why,
                .sqlstate = sqlstate,
        };
        tb_err_t err = tb_store_quarantine_insert(conn, &rec, inserted, errstr, errstr_size);
        free(h);
        return err;
}

/** Once per record set aside: taskbus_quarantined_total{role,topic} and a log line. */
static void tb_pgsink_quarantine_report(const char *role, const rd_kafka_message_t *m,
                                        const char *why) {
        char labels[400];
        const char *tname = rd_kafka_topic_name(m->rkt);
        tb_snprintf(labels, sizeof(labels), "role=\"%s\",topic=\"%s\"", role, tname);
        tb_metrics_add("taskbus_quarantined_total", labels, 1);
        tb_warn(role,
                "%s [%" PRId32 "] offset %" PRId64
                " quarantined (taskbus admin quarantine list): %s",
                tname, m->partition, m->offset, why);
}

tb_err_t tb_pgsink_quarantine_one(tb_store_t *store, const char *role,
                                  const rd_kafka_message_t *m, const char *why, char *errstr,
                                  size_t errstr_size) {
        bool inserted = false;
        PGconn *conn = tb_store_acquire_timeout(store, 1000);
        tb_err_t err = conn ? tb_pgsink_quarantine(conn, role, m, why, NULL, &inserted, errstr,
                                                   errstr_size)
                            : tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                        "no PostgreSQL connection within 1 s");
        tb_store_release(store, conn);
        if (err) {
                tb_error(role,
                         "%s [%" PRId32 "] offset %" PRId64 " could not be quarantined (%s); "
                         "skipped anyway: %s",
                         rd_kafka_topic_name(m->rkt), m->partition, m->offset, errstr, why);
                return err;
        }
        if (inserted)
                tb_pgsink_quarantine_report(role, m, why);
        return TB_OK;
}

tb_err_t tb_pgsink_set_aside(PGconn *conn, const char *role, const rd_kafka_message_t *m,
                             const char *why, bool *fresh, char *errstr, size_t errstr_size) {
        return tb_pgsink_quarantine(conn, role, m, why, NULL, fresh, errstr, errstr_size);
}

void tb_pgsink_set_aside_report(const char *role, const rd_kafka_message_t *m,
                                const char *why) {
        tb_pgsink_quarantine_report(role, m, why);
}

tb_err_t tb_pgsink_offsets_after(PGconn *conn, const char *consumer,
                                 rd_kafka_message_t *const *msgs, size_t cnt, char *errstr,
                                 size_t errstr_size) {
        rd_kafka_topic_partition_list_t *next = rd_kafka_topic_partition_list_new(8);
        for (size_t i = 0; i < cnt; i++)
                tb_pgsink_offsets_fold(next, msgs[i], true);
        tb_err_t err = tb_pgsink_offsets_store(conn, consumer, next, errstr, errstr_size);
        rd_kafka_topic_partition_list_destroy(next);
        return err;
}

/** A savepoint statement (\p sql) around one record. */
static tb_err_t tb_pgsink_savepoint(PGconn *conn, const char *sql, char *errstr,
                                    size_t errstr_size) {
        return tb_store_exec(conn, "record savepoint", sql, 0, NULL, NULL, errstr, errstr_size);
}

/**
 * One try at the batch. Without \p careful (the common case), records run
 * straight in the transaction, pipelined (store.h: the statements whose
 * result is not needed are sent without waiting, one round trip per
 * TB_STORE_PIPELINE_SYNC_EVERY of them, no subtransaction per record); any
 * failure with the connection still up (a refused record, a failed
 * statement, found at a sync) then rolls everything back and sets *\p redo,
 * for a careful pass, row by row without a pipeline, in which each record
 * runs inside a SAVEPOINT and its own outcome is judged: a refused one is
 * rolled back to it and quarantined, a transient failure fails the batch.
 */
static tb_err_t tb_pgsink_apply_pass(PGconn *conn, const tb_pgsink_conf_t *c,
                                     rd_kafka_message_t *const *msgs, size_t cnt, bool careful,
                                     bool *redo, char *errstr, size_t errstr_size) {
        const tb_pgsink_ops_t *ops = c->ops;
        rd_kafka_topic_partition_list_t *next = rd_kafka_topic_partition_list_new(8);
        tb_pgsink_poison_t *poison = NULL;
        size_t poison_cnt = 0;
        tb_err_t err;
        if (ops->begin)
                ops->begin(c->opaque);
        if ((err = tb_store_begin(conn, errstr, errstr_size)))
                goto out;
        if (!careful && (err = tb_store_pipeline_begin(conn, errstr, errstr_size)))
                goto out;
        for (size_t i = 0; i < cnt; i++) {
                const rd_kafka_message_t *m = msgs[i];
                const char *tname = rd_kafka_topic_name(m->rkt);
                char why[768] = "";
                tb_store_fault_t fault = TB_STORE_FAULT_TRANSIENT;
                if (careful && (err = tb_pgsink_savepoint(conn, "SAVEPOINT tb_pgsink_record",
                                                          errstr, errstr_size)))
                        goto out;
                tb_pgsink_verdict_t v = ops->apply(conn, m, c->opaque, why, sizeof(why));
                if (!careful && v != TB_PGSINK_APPLIED && v != TB_PGSINK_SKIPPED) {
                        /* judged in the careful pass, where the record's own
                         * statements are told apart from the pipeline's */
                        err = tb_seterr(errstr, errstr_size,
                                        v == TB_PGSINK_PERMANENT ? TB_ERR_INVALID : TB_ERR_PG,
                                        "%s [%" PRId32 "] offset %" PRId64 ": %s", tname,
                                        m->partition, m->offset, why);
                        goto out;
                }
                if (v != TB_PGSINK_APPLIED && v != TB_PGSINK_SKIPPED)
                        fault = c->quarantine              ? tb_pgsink_fault(conn, v)
                                : v == TB_PGSINK_PERMANENT ? TB_STORE_FAULT_PERMANENT
                                                           : TB_STORE_FAULT_TRANSIENT;
                if (v == TB_PGSINK_SKIPPED) {
                        /* a record no version of us wrote: skip it, loudly */
                        if (c->metric_malformed)
                                tb_metrics_add(c->metric_malformed, NULL, 1);
                        tb_warn(c->sub, "%s [%" PRId32 "] offset %" PRId64 " skipped: %s",
                                tname, m->partition, m->offset, why);
                } else if (v != TB_PGSINK_APPLIED && c->quarantine &&
                           fault == TB_STORE_FAULT_PERMANENT) {
                        char sqlstate[6];
                        bool fresh = false;
                        tb_snprintf(sqlstate, sizeof(sqlstate), "%s",
                                    PQtransactionStatus(conn) == PQTRANS_INERROR
                                            ? tb_store_last_sqlstate()
                                            : "");
                        if (!poison && !(poison = calloc(cnt, sizeof(*poison)))) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                "%s: out of memory", c->sub);
                                goto out;
                        }
                        if ((err = tb_pgsink_savepoint(conn,
                                                       "ROLLBACK TO SAVEPOINT tb_pgsink_record",
                                                       errstr, errstr_size)) ||
                            (err = tb_pgsink_quarantine(conn, c->sub, m, why, sqlstate, &fresh,
                                                        errstr, errstr_size)))
                                goto out;
                        if (fresh) {
                                /* not when a batch is applied again (a replay, a crash
                                 * before the commit was seen): counted and logged once */
                                poison[poison_cnt].i = i;
                                tb_snprintf(poison[poison_cnt++].why, sizeof(poison->why), "%s",
                                            why);
                        }
                        if (ops->quarantined)
                                ops->quarantined(c->opaque, m);
                } else if (v != TB_PGSINK_APPLIED) {
                        /* transient, or refused without quarantine: fails the batch */
                        err = tb_seterr(errstr, errstr_size,
                                        fault == TB_STORE_FAULT_PERMANENT ? TB_ERR_INVALID
                                                                          : TB_ERR_PG,
                                        "%s [%" PRId32 "] offset %" PRId64 ": %s", tname,
                                        m->partition, m->offset, why);
                        goto out;
                }
                if (careful && (err = tb_pgsink_savepoint(conn,
                                                          "RELEASE SAVEPOINT tb_pgsink_record",
                                                          errstr, errstr_size)))
                        goto out;
                tb_pgsink_offsets_fold(next, m, true);
        }
        if (c->consumer &&
            (err = tb_pgsink_offsets_store(conn, c->consumer, next, errstr, errstr_size)))
                goto out;
        if (ops->finish && (err = ops->finish(conn, c->opaque, errstr, errstr_size)))
                goto out;
        if (!careful && (err = tb_store_pipeline_end(conn, errstr, errstr_size)))
                goto out;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto out;
        for (size_t k = 0; k < poison_cnt; k++) {
                /* once: the batch that set it aside is committed */
                tb_pgsink_quarantine_report(c->sub, msgs[poison[k].i], poison[k].why);
        }
        if (ops->committed)
                ops->committed(c->opaque);
out:
        if (err) {
                /* the pipelined pass judges nothing: the careful pass does */
                if (!careful && PQstatus(conn) == CONNECTION_OK)
                        *redo = true;
                tb_store_rollback(conn); /* ends the pipeline too */
        }
        free(poison);
        rd_kafka_topic_partition_list_destroy(next);
        return err;
}

tb_err_t tb_pgsink_apply(PGconn *conn, const tb_pgsink_conf_t *c,
                         rd_kafka_message_t *const *msgs, size_t cnt, char *errstr,
                         size_t errstr_size) {
        bool redo = false;
        tb_err_t err = tb_pgsink_apply_pass(conn, c, msgs, cnt, false, &redo, errstr,
                                            errstr_size);
        if (err && redo) {
                tb_debug(c->sub, "batch of %zu record(s): %s; applying it again row by row",
                         cnt, errstr);
                err = tb_pgsink_apply_pass(conn, c, msgs, cnt, true, &redo, errstr,
                                           errstr_size);
        }
        return err;
}

/* ---- the sink ------------------------------------------------------------------------- */

static void tb_pgsink_batch_free(tb_pgsink_t *sk) {
        for (size_t i = 0; i < sk->batch_cnt; i++)
                rd_kafka_message_destroy(sk->batch[i]);
        sk->batch_cnt = 0;
}

/** on_assign: start every partition where its stored offset says. */
static void tb_pgsink_on_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                                void *opaque) {
        tb_pgsink_t *sk = opaque;
        char errstr[1024];
        (void)rk;
        for (;;) {
                PGconn *conn = tb_store_acquire(sk->c.store);
                tb_err_t err = tb_pgsink_offsets_read(conn, sk->c.consumer, parts, errstr,
                                                      sizeof(errstr));
                tb_store_release(sk->c.store, conn);
                if (!err || tb_pgsink_stopping(sk))
                        break;
                tb_error(sk->c.sub, "assignment: %s; retrying in 1 s", errstr);
                sleep(1);
        }
}

/** on_revoke: drop what was read from revoked partitions; the new owner
 *  starts from the offsets stored with the rows. */
static void tb_pgsink_on_revoke(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                                bool lost, void *opaque) {
        tb_pgsink_t *sk = opaque;
        size_t w = 0;
        (void)rk, (void)lost;
        for (size_t i = 0; i < sk->batch_cnt; i++) {
                bool revoked = false;
                for (int j = 0; j < parts->cnt; j++)
                        revoked |= parts->elems[j].partition == sk->batch[i]->partition &&
                                   !strcmp(parts->elems[j].topic,
                                           rd_kafka_topic_name(sk->batch[i]->rkt));
                if (revoked)
                        rd_kafka_message_destroy(sk->batch[i]);
                else
                        sk->batch[w++] = sk->batch[i];
        }
        sk->batch_cnt = w;
}

/** Collect a batch (group commit): wait up to TB_PGSINK_IDLE_POLL_MS for a
 *  first record, then take every record already fetched without waiting; a
 *  busy sink (its previous batch held more than one record) also waits up to
 *  batch_wait_us after the first for more. Ends when the batch is full. */
static void tb_pgsink_collect(tb_pgsink_t *sk) {
        int64_t first = 0, deadline = 0;
        while (sk->batch_cnt < sk->c.batch_max) {
                int wait_ms = TB_PGSINK_IDLE_POLL_MS;
                if (first) {
                        int64_t left = deadline - tb_mono_us();
                        wait_ms = left > 0 ? (int)((left + 999) / 1000) : 0;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(sk->consumer, wait_ms);
                if (!m) {
                        if (!first || wait_ms == 0)
                                break;
                        continue;
                }
                if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_warn(sk->c.sub, "consumer: %s", rd_kafka_message_errstr(m));
                        rd_kafka_message_destroy(m);
                        continue;
                }
                sk->batch[sk->batch_cnt++] = m;
                if (!first) {
                        first = tb_mono_us();
                        deadline = first + (sk->last_batch_cnt > 1 ? sk->c.batch_wait_us : 0);
                }
        }
        sk->last_batch_cnt = sk->batch_cnt;
}

/** Apply the collected batch; on failure seek back so it is read again. */
static bool tb_pgsink_process(tb_pgsink_t *sk) {
        char errstr[1024];
        int64_t t0 = tb_mono_us();
        PGconn *conn = tb_store_acquire(sk->c.store);
        tb_err_t err = tb_pgsink_apply(conn, &sk->c, sk->batch, sk->batch_cnt, errstr,
                                       sizeof(errstr));
        tb_store_release(sk->c.store, conn);
        if (!err) {
                if (sk->c.metric_batch_seconds)
                        tb_metrics_observe(sk->c.metric_batch_seconds, NULL,
                                           (double)(tb_mono_us() - t0) / 1e6);
                tb_pgsink_batch_free(sk);
                return true;
        }
        tb_error(sk->c.sub, "applying %zu record(s) failed: %s; retrying", sk->batch_cnt,
                 errstr);
        if (sk->c.metric_failures)
                tb_metrics_add(sk->c.metric_failures, NULL, 1);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (size_t i = 0; i < sk->batch_cnt; i++)
                tb_pgsink_offsets_fold(l, sk->batch[i], false);
        rd_kafka_error_t *e = rd_kafka_seek_partitions(sk->consumer, l, 10000);
        if (e) {
                tb_error(sk->c.sub, "seek back: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        rd_kafka_topic_partition_list_destroy(l);
        tb_pgsink_batch_free(sk);
        return false;
}

static void *tb_pgsink_main(void *arg) {
        tb_pgsink_t *sk = arg;
        int backoff_ms = 0;
        while (!tb_pgsink_stopping(sk)) {
                tb_pgsink_collect(sk);
                if (tb_pgsink_stopping(sk))
                        break;
                if (sk->batch_cnt > 0) {
                        if (tb_pgsink_process(sk)) {
                                backoff_ms = 0;
                        } else {
                                /* PostgreSQL is down or refusing: back off */
                                backoff_ms = backoff_ms ? backoff_ms * 2 : 100;
                                if (backoff_ms > TB_PGSINK_BACKOFF_MAX_MS)
                                        backoff_ms = TB_PGSINK_BACKOFF_MAX_MS;
                                for (int w = 0; w < backoff_ms && !tb_pgsink_stopping(sk);
                                     w += 50)
                                        usleep(50 * 1000);
                                continue;
                        }
                }
                if (sk->c.tick)
                        sk->c.tick(sk->c.opaque);
        }
        tb_pgsink_batch_free(sk);
        return NULL;
}

static void tb_pgsink_free(tb_pgsink_t *sk) {
        tb_pgsink_batch_free(sk);
        tb_bus_consumer_destroy(sk->consumer, 10000);
        free(sk->batch);
        free(sk);
}

tb_err_t tb_pgsink_start(const tb_pgsink_conf_t *c, tb_pgsink_t **out, char *errstr,
                         size_t errstr_size) {
        char group[300];
        tb_err_t err;
        *out = NULL;
        if (!c->sub || !c->consumer || !c->ops || !c->ops->apply || !c->conf || !c->store ||
            c->batch_max < 1)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "pgsink %s: sub, consumer, ops->apply, conf, store and a "
                                 "batch_max of at least 1 are required",
                                 c->consumer ? c->consumer : "");
        if (c->quarantine)
                tb_metrics_describe("taskbus_quarantined_total", "counter",
                                    "Records set aside in the quarantine table (by role and topic)");
        tb_pgsink_t *sk = calloc(1, sizeof(*sk));
        if (!sk || !(sk->batch = calloc(c->batch_max, sizeof(*sk->batch)))) {
                free(sk);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "%s: out of memory", c->sub);
        }
        sk->c = *c;
        sk->c.topics = NULL;
        sk->c.topic_cnt = 0;
        sk->c.topic_names = NULL;
        sk->c.topic_name_cnt = 0;
        sk->rebalance = (tb_rebalance_t){
                .sub = c->sub,
                .on_assign = tb_pgsink_on_assign,
                .on_revoke = tb_pgsink_on_revoke,
                .opaque = sk,
        };
        tb_snprintf(group, sizeof(group), "%s%s", c->conf->topic_prefix, c->consumer);
        tb_consumer_opts_t opts = {
                .group_id = group,
                .read_committed = true,
                .auto_commit = false, /* offsets live in PostgreSQL */
                .rebalance = &sk->rebalance,
                .topic_names = c->topic_names,
                .topic_name_cnt = c->topic_name_cnt,
        };
        if ((err = tb_bus_consumer_new(c->conf, &opts, c->topics, c->topic_cnt, &sk->consumer,
                                       errstr, errstr_size)))
                goto fail;
        if (pthread_create(&sk->thread, NULL, tb_pgsink_main, sk) != 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "%s: cannot start its thread",
                                c->sub);
                goto fail;
        }
        sk->thread_started = true;
        *out = sk;
        return TB_OK;
fail:
        tb_pgsink_free(sk);
        return err;
}

void tb_pgsink_stop(tb_pgsink_t *sk) {
        if (!sk)
                return;
        atomic_store(&sk->stop, true);
        if (sk->thread_started)
                pthread_join(sk->thread, NULL);
        tb_pgsink_free(sk);
}
