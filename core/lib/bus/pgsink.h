/**
 * @file bus/pgsink.h
 * @brief The one Kafka-to-PostgreSQL loop: a consumer group member whose
 *        consumed offsets live in PostgreSQL (consumer_offsets), next to the
 *        rows its records became, so that a batch is applied exactly once
 *        whatever Kafka's own offsets say.
 *
 * A sink owns its consumer (built by tb_bus_consumer_new(), group
 * `<topics.prefix><consumer>`, read_committed, nothing committed to Kafka)
 * and one thread that:
 *  - on assignment, seeks every assigned partition to the next offset stored
 *    for it in consumer_offsets (from the beginning when none is stored),
 *    retrying while PostgreSQL is unreachable;
 *  - on revocation, drops the records it collected from those partitions
 *    (their new owner starts from the stored offsets);
 *  - collects a batch (group commit: every record already fetched, up to
 *    batch_max; a busy sink, whose previous batch held more than one record,
 *    also waits up to batch_wait_us after the first for more, an idle one
 *    applies a lone record at once) and applies it in ONE PostgreSQL
 *    transaction (statements pipelined, see below): the caller's
 *    apply callback for each record, then the next offset of every
 *    (topic, partition) of the batch, then the caller's finish callback,
 *    then COMMIT;
 *  - on failure rolls back, seeks back to the first record of the batch and
 *    tries again after a backoff (100 ms doubling to 5 s);
 *  - stops cleanly: the batch in hand is dropped (never half applied), and
 *    the group is left within a bound (tb_bus_consumer_destroy()).
 *
 * The apply callback sees one record at a time inside the batch
 * transaction, and says what became of it (tb_pgsink_verdict_t).
 *
 * Poison isolation (c->quarantine): a record refused for good (the
 * callback's TB_PGSINK_PERMANENT, or a failed statement whose SQLSTATE
 * tb_store_quarantine_classify() calls permanent: data, integrity, program
 * limit) does not stop its partition. The batch is rolled back and applied
 * again with a SAVEPOINT around each record; the refused record is rolled
 * back to its savepoint, inserted raw into the quarantine table
 * (store/quarantine.h: role c->sub, topic, partition, offset, key, headers,
 * value, error, SQLSTATE) in the same transaction as the batch's offsets,
 * counted once committed in taskbus_quarantined_total{role,topic}, logged
 * once, and the batch goes on. A transient failure (connection, 40001,
 * 40P01, 55P03, 57014, 53...) still fails the batch, retried with backoff.
 * Without c->quarantine a permanent refusal fails the batch (TB_ERR_INVALID).
 *
 * The SQL of consumer_offsets is in pgsink.c, in one place.
 */
#ifndef TB_BUS_PGSINK_H
#define TB_BUS_PGSINK_H

#include "bus/bus.h"
#include "config/config.h"
#include "store/store.h"
#include "tb.h"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

/**
 * What an apply callback says about one record. Not a tb_err_t, because the
 * sink must know whether trying the record again can help.
 */
typedef enum tb_pgsink_verdict {
        TB_PGSINK_APPLIED = 0, /**< written, or found written already: go on */
        /** Nothing in it to apply (undecodable, malformed): the sink logs the
         *  callback's errstr, counts it (metric_malformed) and goes on; its
         *  offset advances. */
        TB_PGSINK_SKIPPED,
        /** Failed for now (PostgreSQL down, a conflict): the batch is rolled
         *  back and read again after a backoff. */
        TB_PGSINK_TRANSIENT,
        /** Can never be applied as it is (it cannot be decoded, or its content
         *  is refused): quarantined with c->quarantine, else fails the batch.
         *  A failed statement's SQLSTATE overrides the callback's guess
         *  either way (see the file comment). */
        TB_PGSINK_PERMANENT,
} tb_pgsink_verdict_t;

/** The verdict a failed store call usually deserves: PostgreSQL trouble
 *  (TB_ERR_PG, TB_ERR_CONFLICT), memory and timeouts may pass (TRANSIENT);
 *  anything else is the record's own (PERMANENT). */
static inline tb_pgsink_verdict_t tb_pgsink_verdict_of(tb_err_t err) {
        if (!err)
                return TB_PGSINK_APPLIED;
        return err == TB_ERR_PG || err == TB_ERR_CONFLICT || err == TB_ERR_NOMEM ||
                               err == TB_ERR_TIMEOUT
                       ? TB_PGSINK_TRANSIENT
                       : TB_PGSINK_PERMANENT;
}

/** What a sink's owner does in a batch. Every callback gets the
 *  tb_pgsink_conf_t's opaque and runs on the thread applying the batch. */
typedef struct tb_pgsink_ops {
        /** Optional: a batch begins (reset the per-batch state). */
        void (*begin)(void *opaque);
        /**
         * Required: apply \p msg (a record of a subscribed topic, never an
         * error event) inside the open transaction on \p conn. It must be
         * idempotent: after a crash a batch is applied again. On anything
         * but TB_PGSINK_APPLIED, \p errstr says why.
         */
        tb_pgsink_verdict_t (*apply)(PGconn *conn, const rd_kafka_message_t *msg, void *opaque,
                                     char *errstr, size_t errstr_size);
        /** Optional: after every record and the offsets, before COMMIT, in the
         *  transaction (e.g. a NOTIFY, delivered on commit only). */
        tb_err_t (*finish)(PGconn *conn, void *opaque, char *errstr, size_t errstr_size);
        /** Optional: the batch was committed (count it). */
        void (*committed)(void *opaque);
        /** Optional: \p msg was quarantined, in the transaction (count it in
         *  the batch's state: the batch may still be rolled back). */
        void (*quarantined)(void *opaque, const rd_kafka_message_t *msg);
} tb_pgsink_ops_t;

/**
 * A sink's description. The strings and \p ops must outlive the sink; the
 * topic arrays are read by tb_pgsink_start() only. tb_pgsink_apply() uses
 * the first group of fields only.
 */
typedef struct tb_pgsink_conf {
        /* ---- what a batch does (tb_pgsink_apply and the sink) ---- */
        const char *sub;      /**< log subsystem ("projector") */
        /** consumer_offsets.consumer; the group id is `<topics.prefix>` + this.
         *  NULL (tb_pgsink_apply only): offsets are not stored. */
        const char *consumer;
        const tb_pgsink_ops_t *ops;
        void *opaque;                 /**< for every ops callback */
        const char *metric_malformed; /**< counter of TB_PGSINK_SKIPPED records, or NULL */
        /** Quarantine permanently refused records (role = sub) instead of
         *  failing the batch. The records must be librdkafka's own (their
         *  headers are read). */
        bool quarantine;

        /* ---- the sink (tb_pgsink_start) ---- */
        const tb_config_t *conf;
        tb_store_t *store;
        const atomic_bool *stopping; /**< the process is stopping (may be NULL) */
        const tb_topic_t *topics;    /**< local topics to consume */
        size_t topic_cnt;
        const char *const *topic_names; /**< more topics by full name (other regions' copies) */
        size_t topic_name_cnt;
        size_t batch_max;       /**< most records per transaction (>= 1) */
        int64_t batch_wait_us;  /**< how long a busy sink's batch waits for more once
                                 *   it holds what was fetched (an idle one: not at all) */
        const char *metric_failures;      /**< counter of failed batches, or NULL */
        const char *metric_batch_seconds; /**< histogram of committed batches, or NULL */
        /** Optional: after each round of the loop (a batch applied, or none
         *  collected within 100 ms), never after a failed batch; for work
         *  between batches (the archiver's sweep). */
        void (*tick)(void *opaque);
} tb_pgsink_conf_t;

/** A running sink (opaque). */
typedef struct tb_pgsink tb_pgsink_t;

/**
 * Apply \p cnt records in ONE transaction on \p conn (idle, outside a
 * transaction): c->ops as described in the file comment, with the next
 * offset of every (topic, partition) stored for c->consumer (unless NULL).
 * On failure everything is rolled back.
 * @returns TB_OK; TB_ERR_PG (or the store's code) when the transaction or a
 *          TB_PGSINK_TRANSIENT record failed; TB_ERR_INVALID when a record
 *          was refused (TB_PGSINK_PERMANENT) and c->quarantine is off;
 *          errstr names the record.
 * @locality any thread (one connection per caller).
 */
tb_err_t tb_pgsink_apply(PGconn *conn, const tb_pgsink_conf_t *c,
                         rd_kafka_message_t *const *msgs, size_t cnt, char *errstr,
                         size_t errstr_size);

/**
 * Quarantine one record \p m for \p role outside any batch (its own
 * statement, on a connection of \p store): for the roles whose transactions
 * are Kafka's (commands), which skip a record they cannot decode and go on;
 * the row is written before their transaction commits, idempotently, so a
 * record read again after an abort keeps one row. Counted and logged once
 * (as in a batch); on failure (no pooled connection within 1 s, or
 * PostgreSQL unreachable: at most libpq's connect_timeout more) the error is
 * logged and returned, and the caller goes on all the same: a role does not
 * wait for PostgreSQL to come back for a record it cannot use.
 * @locality any thread.
 */
tb_err_t tb_pgsink_quarantine_one(tb_store_t *store, const char *role,
                                  const rd_kafka_message_t *m, const char *why, char *errstr,
                                  size_t errstr_size);

/* ---- for a caller that applies a batch its own way (projection's set-based
 * replay), with the sink's quarantine and offsets ---- */

/** Put \p m in the quarantine table for \p role (as a batch does: no
 *  SQLSTATE, \p why the reason) in the caller's open transaction; *\p fresh
 *  says it was not there yet (then tb_pgsink_set_aside_report() it once
 *  the transaction is committed). */
tb_err_t tb_pgsink_set_aside(PGconn *conn, const char *role, const rd_kafka_message_t *m,
                             const char *why, bool *fresh, char *errstr, size_t errstr_size);
/** Count (taskbus_quarantined_total) and log \p m as quarantined, once. */
void tb_pgsink_set_aside_report(const char *role, const rd_kafka_message_t *m,
                                const char *why);
/** Store for \p consumer, in the caller's open transaction, the offset after
 *  the last of \p msgs in each of their (topic, partition)s: a stored offset
 *  only moves forward. */
tb_err_t tb_pgsink_offsets_after(PGconn *conn, const char *consumer,
                                 rd_kafka_message_t *const *msgs, size_t cnt, char *errstr,
                                 size_t errstr_size);

/**
 * Build the consumer of \p c and start the sink's thread.
 * Caller owns *\p out: tb_pgsink_stop().
 * @locality any thread.
 */
tb_err_t tb_pgsink_start(const tb_pgsink_conf_t *c, tb_pgsink_t **out, char *errstr,
                         size_t errstr_size);

/**
 * Stop the sink's thread (the batch in hand is dropped, not applied), leave
 * the group within 10 s and free the sink. NULL allowed.
 * @locality the thread that started it.
 */
void tb_pgsink_stop(tb_pgsink_t *sk);

#endif /* TB_BUS_PGSINK_H */
