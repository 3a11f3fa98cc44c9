/**
 * @file projection/projection.h
 * @brief The projection of the bus into PostgreSQL: the apply functions of
 *        the projected topics, shared by the projector role and
 *        `taskbus replay`.
 *
 * A batch of records is applied in ONE PostgreSQL transaction together with
 * the consumed offsets (consumer_offsets), so the projection is exactly-once
 * whatever Kafka's consumer offsets say; every statement is also idempotent
 * (a task row only moves to a higher version, history rows are inserted once),
 * so applying a batch twice changes nothing.
 *
 * Each projected topic has its own apply function in a table in projection.c
 * (task-events; runs and run-results, which keep the runs table).
 */
#ifndef TB_PROJECTION_H
#define TB_PROJECTION_H

#include "tb.h"
#include "bus/bus.h"
#include "bus/pgsink.h"
#include "config/config.h"
#include "serde/serde.h"
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

/** The consumer name of the projector role in consumer_offsets. */
#define TB_PROJECTION_CONSUMER "projector"
/** The channel NOTIFYed once per committed batch (payload: "TASK_ID VERSION"
 *  for each task event of the batch, comma-separated, or empty when they do
 *  not fit: listeners then check the projection themselves). */
#define TB_PROJECTION_CHANNEL "taskbus_projection"

/** What a batch did (counters add up across calls). */
typedef struct tb_projection_stats {
        uint64_t records;   /**< records seen */
        uint64_t malformed; /**< records that could not be decoded (skipped) */
        uint64_t events;    /**< task events applied (or found already applied) */
        uint64_t results;   /**< run results applied */
        uint64_t quarantined; /**< records set aside (store/quarantine.h), malformed included */
        int64_t decode_us;  /**< set-based batches: decoding and staging in C */
        int64_t pg_us;      /**< set-based batches: COPY, merge and commit in PostgreSQL */
} tb_projection_stats_t;

/** The state of one batch handed to a topic's apply function. */
typedef struct tb_projection_batch {
        PGconn *conn;                /**< the batch's connection, in its transaction */
        const tb_config_t *conf;
        tb_buf_t notify;             /**< task ids touched, comma-separated */
        tb_projection_stats_t stats;  /**< what this batch did so far */
        tb_projection_stats_t *total; /**< where a committed batch's stats are added, or NULL */
} tb_projection_batch_t;

/**
 * A topic's apply function: apply one decoded record \p value (owned by the
 * caller) of \p msg inside the open transaction. It must be idempotent.
 * @returns TB_OK, or an error that rolls back the whole batch.
 */
typedef tb_err_t (*tb_projection_apply_fn)(tb_projection_batch_t *b, const rd_kafka_message_t *msg,
                                          const json_t *value, char *errstr,
                                          size_t errstr_size);

/**
 * Apply \p cnt records (of any projected topic: each goes to its topic's
 * apply function; records of other topics are an error) in one transaction
 * on \p conn (idle, outside a transaction), with the next offset of every
 * partition in the batch stored for \p consumer (NULL: offsets not stored),
 * then NOTIFY TB_PROJECTION_CHANNEL. Records that cannot be decoded (counted
 * in \p stats->malformed too) or are refused for their content are
 * quarantined (bus/pgsink.h; \p stats->quarantined), their offsets advance.
 * On error the transaction is rolled back: nothing of the batch is kept.
 * \p stats may be NULL. @locality any thread (one connection per caller).
 */
tb_err_t tb_projection_apply_batch(PGconn *conn, const tb_config_t *conf, const char *consumer,
                                  rd_kafka_message_t *const *msgs, size_t cnt,
                                  tb_projection_stats_t *stats, char *errstr, size_t errstr_size);

/**
 * tb_projection_apply_batch() for a batch of task-events only, set-based
 * (`taskbus replay`): the events are decoded here, copied into a staging
 * table with one COPY and merged with three statements
 * (tb_store_tasks_stage_merge(): the same rules as the per-event statements,
 * applied in (epoch, version) order), the deleted tasks' runs cancelled in one
 * statement, the offsets stored and one NOTIFY sent, in one transaction.
 * A record that cannot be decoded (or whose TaskSpec cannot be converted)
 * is set aside in the quarantine in that transaction, as the row-by-row path
 * does. When the merge is refused by PostgreSQL (a record's content: a
 * constraint, a too-large index row) or a record is not a task event, the
 * batch is rolled back and applied by tb_projection_apply_batch() instead,
 * which tells the refused record apart; *\p row_by_row says so.
 * @locality any thread (one connection per caller).
 */
tb_err_t tb_projection_replay_batch(PGconn *conn, const tb_config_t *conf, const char *consumer,
                                    rd_kafka_message_t *const *msgs, size_t cnt,
                                    tb_projection_stats_t *stats, bool *row_by_row,
                                    char *errstr, size_t errstr_size);

/** A projected topic, its schema and its apply function. */
typedef struct tb_projection_topic {
        tb_topic_t topic;
        tb_schema_id_t schema;
        tb_projection_apply_fn apply;
} tb_projection_topic_t;

/** Every topic the projector consumes (3 entries). */
extern const tb_projection_topic_t tb_projection_topics[3];

/** What a projector batch does, with \p b as its state (the sink and
 *  `taskbus replay` alike). */
tb_pgsink_conf_t tb_projection_sink_conf(tb_projection_batch_t *b, const char *consumer);

#endif /* TB_PROJECTION_H */
