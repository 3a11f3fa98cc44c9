/**
 * @file bus/bus.h
 * @brief The Kafka layer (librdkafka): topic names, an idempotent producer
 *        (acks=all), transactional producers, consumer groups
 *        (cooperative-sticky, read_committed, static membership) with one
 *        rebalance callback that runs a role's hooks, readers (assign-only
 *        consumers), the murmur2 partitioner, and the Admin API that creates
 *        the topics of docs/architecture.md.
 *
 * Every Kafka handle of taskbus is built here, from the tb_config_t: its
 * `kafka` pass-through properties first, then the properties taskbus must
 * control for correctness (which therefore cannot be overridden).
 *
 * Files: conf.c (librdkafka conf from the config, topic names, handle
 * creation), admin.c (topics ensure/list/delete), producer.c (producers,
 * produce, transactions), consumer.c (group members, rebalances, readers,
 * bounded destroy), partition.c (murmur2); bus_internal.h is what they
 * share. The Kafka-to-PostgreSQL loop built on them is bus/pgsink.h.
 */
#ifndef TB_BUS_H
#define TB_BUS_H

#include "tb.h"
#include "config/config.h"
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

/** The topics. Names are `<topics.prefix><name>`, e.g. "taskbus.runs". */
typedef enum tb_topic {
        TB_TOPIC_COMMANDS = 0, /**< task-commands, key task id */
        TB_TOPIC_REPLIES,      /**< task-replies, key correlation id */
        TB_TOPIC_EVENTS,       /**< task-events, key task id, kept forever */
        TB_TOPIC_RUNS,         /**< runs, key task id */
        TB_TOPIC_RESULTS,      /**< run-results, key task id */
        TB_TOPIC_LOGS,         /**< run-logs, key run id */
        TB_TOPIC_DLQ,          /**< runs-dlq, key task id */
        TB_TOPIC_CHECKPOINTS,  /**< scheduler-checkpoints, compacted */
        TB_TOPIC__COUNT,
} tb_topic_t;

/** @returns the short name ("task-events"). */
const char *tb_topic_short(tb_topic_t t);
/** Full name with prefix into \p buf. @returns buf. */
const char *tb_topic_name(const tb_config_t *conf, tb_topic_t t, char *buf, size_t size);

/** One record header (name, value bytes); used for produce and consume. */
typedef struct tb_header {
        const char *name;
        const void *value;
        size_t len;
} tb_header_t;

/* ---- admin --------------------------------------------------------------- */

/** One topic as the broker sees it (for `tools/stack status`). */
typedef struct tb_topic_info {
        char name[256];
        int partitions;
        int replication;
        char retention[32]; /**< retention.ms or "compact" */
} tb_topic_info_t;

/** A topic to create, with the topic-level configs taskbus manages. */
typedef struct tb_topic_spec {
        char name[256];
        const char *cleanup;  /**< "delete" or "compact" */
        char retention[32];   /**< retention.ms, "" when not managed (compact) */
} tb_topic_spec_t;

/**
 * Create the topics of \p specs (any name, e.g. another region's copies)
 * with \p conf's partition count and replication factor; a topic that
 * exists already is left as it is. @locality any thread.
 */
tb_err_t tb_bus_topics_create(const tb_config_t *conf, const tb_topic_spec_t *specs, size_t cnt,
                              int timeout_ms, char *errstr, size_t errstr_size);

/**
 * Create every topic that is missing, with the partition count, replication
 * factor and retention from \p conf; set retention/cleanup configs on topics
 * that exist (idempotent). A topic whose partition count is lower than
 * configured is an error telling how to fix it. Waits up to \p timeout_ms
 * for the broker. @locality any thread.
 */
tb_err_t tb_bus_topics_ensure(const tb_config_t *conf, int timeout_ms, char *errstr,
                              size_t errstr_size);

/**
 * List taskbus's topics (those with the configured prefix). *\p out is
 * malloc'd (caller frees), *\p cnt its length.
 */
tb_err_t tb_bus_topics_list(const tb_config_t *conf, tb_topic_info_t **out, size_t *cnt,
                            int timeout_ms, char *errstr, size_t errstr_size);

/**
 * Delete every taskbus topic (the eight names with \p conf's prefix) that
 * exists. For tests and `reset`-style tooling: the data is gone for good.
 */
tb_err_t tb_bus_topics_delete(const tb_config_t *conf, int timeout_ms, char *errstr,
                              size_t errstr_size);

/* ---- producers ------------------------------------------------------------ */

/**
 * A new producer. \p transactional_id NULL gives an idempotent producer
 * (enable.idempotence=true, acks=all); otherwise a transactional producer
 * whose transactions are initialised (rd_kafka_init_transactions) before it
 * is returned, fencing any older producer with the same id.
 * Caller owns the handle: rd_kafka_flush() + rd_kafka_destroy().
 */
tb_err_t tb_bus_producer_new(const tb_config_t *conf, const char *transactional_id,
                             rd_kafka_t **out, char *errstr, size_t errstr_size);

/** A delivery report callback, as rd_kafka_conf_set_dr_msg_cb() takes it. */
typedef void (*tb_dr_msg_cb_t)(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);

/** Options of a producer beyond tb_bus_producer_new()'s; zero: its defaults. */
typedef struct tb_producer_opts {
        const char *transactional_id; /**< as tb_bus_producer_new()'s */
        int linger_ms;                /**< linger.ms; 0: 5 */
        /** message.timeout.ms, the delivery bound of a record; 0: librdkafka's */
        int message_timeout_ms;
        /** The delivery reports' callback; NULL: taskbus's, which serves
         *  tb_bus_produce()'s sync mode and logs failed asynchronous records
         *  (a producer with its own callback must not use sync). */
        tb_dr_msg_cb_t dr_msg_cb;
} tb_producer_opts_t;

/** tb_bus_producer_new() with \p opts (required). Caller owns the handle. */
tb_err_t tb_bus_producer_new_opts(const tb_config_t *conf, const tb_producer_opts_t *opts,
                                  rd_kafka_t **out, char *errstr, size_t errstr_size);

/**
 * An idempotent producer that outlives a fatal error. librdkafka puts an
 * idempotent producer in a fatal state for good on some errors (2.0.2 does
 * it with OUT_OF_ORDER_SEQUENCE_NUMBER, "rewound sequence number", when a
 * partition's leader moves during a broker failover): every later record
 * fails. Here the handle is replaced by a new producer instead, so a role
 * goes on publishing (records that failed are retried by their owners).
 * Threads take the current handle with tb_bus_rprod_get() and give it back
 * with tb_bus_rprod_put() (a read lock: do not wait between them for a
 * delivery report another thread serves, nor call tb_bus_rprod_recover();
 * a report still due when the handle is replaced arrives with a purge
 * error). @threadsafe
 */
typedef struct tb_bus_rprod tb_bus_rprod_t;

/** A new one with \p opts (NULL: tb_bus_producer_new()'s idempotent
 *  defaults; no transactional_id); \p what names it in logs. Caller owns
 *  it: tb_bus_rprod_destroy(). */
tb_err_t tb_bus_rprod_new(const tb_config_t *conf, const tb_producer_opts_t *opts,
                          const char *what, tb_bus_rprod_t **out, char *errstr,
                          size_t errstr_size);

/** The current handle, read-locked until tb_bus_rprod_put(). */
rd_kafka_t *tb_bus_rprod_get(tb_bus_rprod_t *p);

/** Give back the handle of tb_bus_rprod_get(). */
void tb_bus_rprod_put(tb_bus_rprod_t *p);

/**
 * When the current handle is in a fatal state, replace it by a new producer
 * (waits until no thread holds it; the old one's queued records fail to
 * their delivery reports). Returns true when it was replaced. Cheap when it
 * is healthy: call it after any failed produce and from a poll loop. Must
 * not be called between get and put.
 */
bool tb_bus_rprod_recover(tb_bus_rprod_t *p);

/** How many times \p p was replaced. */
unsigned tb_bus_rprod_rebuilds(const tb_bus_rprod_t *p);

/** Flush for up to \p flush_ms, then destroy. NULL is a no-op. */
void tb_bus_rprod_destroy(tb_bus_rprod_t *p, int flush_ms);

/**
 * One record's delivery, as its producer's delivery report gives it: the
 * per-message opaque of tb_bus_produce()'s sync mode and of
 * tb_bus_produce_tracked(). It lives with whoever waits for it: the delivery
 * callback does not touch it once `done` is set.
 */
typedef struct tb_bus_dr {
        atomic_int done;
        rd_kafka_resp_err_t err;
        int32_t partition;
        int64_t offset;
        tb_topic_t topic;
} tb_bus_dr_t;

/**
 * Produce one record (value copied). With \p sync true, waits for the
 * delivery report and returns its error. Headers may be NULL.
 */
tb_err_t tb_bus_produce(rd_kafka_t *rk, const tb_config_t *conf, tb_topic_t topic,
                        int32_t partition /* RD_KAFKA_PARTITION_UA */,
                        const void *key, size_t key_len, const void *value, size_t value_len,
                        const tb_header_t *headers, size_t header_cnt, bool sync,
                        char *errstr, size_t errstr_size);

/**
 * @brief Produce one record (value copied) without waiting: many records
 *        in flight, then tb_bus_dr_wait() on each, cost one round trip
 *        instead of one each (a producer with taskbus's delivery callback).
 * @param dr caller-owned, set up by this call; it must stay alive until
 *        tb_bus_dr_wait() returned for it, also when this call failed (then
 *        it is done already and tb_bus_dr_wait() returns at once).
 * @returns TB_OK when librdkafka took the record, else the error.
 */
tb_err_t tb_bus_produce_tracked(rd_kafka_t *rk, const tb_config_t *conf, tb_topic_t topic,
                                int32_t partition, const void *key, size_t key_len,
                                const void *value, size_t value_len, tb_bus_dr_t *dr,
                                char *errstr, size_t errstr_size);

/**
 * @brief Wait for \p dr's delivery report (bounded by message.timeout.ms).
 * @returns TB_OK when delivered, else the delivery error as tb_bus_produce()
 *          names it (for a record tb_bus_produce_tracked() refused: TB_OK,
 *          since that call already returned its error).
 */
tb_err_t tb_bus_dr_wait(rd_kafka_t *rk, const tb_config_t *conf, tb_bus_dr_t *dr,
                        char *errstr, size_t errstr_size);

/**
 * Commit the current transaction: commit, or abort on an abortable error, or
 * report TB_ERR_FENCED when the producer was fenced (the caller must stop
 * and rebuild). Also the home of begin/abort wrappers below.
 */
tb_err_t tb_bus_txn_begin(rd_kafka_t *rk, char *errstr, size_t errstr_size);
tb_err_t tb_bus_txn_send_offsets(rd_kafka_t *rk, rd_kafka_t *consumer,
                                 const rd_kafka_topic_partition_list_t *offsets,
                                 char *errstr, size_t errstr_size);
tb_err_t tb_bus_txn_commit(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errstr_size);
tb_err_t tb_bus_txn_abort(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errstr_size);

/* ---- consumers ------------------------------------------------------------ */

/** A rebalance callback, as rd_kafka_conf_set_rebalance_cb() takes it
 *  (librdkafka has no typedef for it). */
typedef void (*tb_rebalance_cb_t)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *partitions, void *opaque);

/**
 * What a role does when its consumer group member's partitions change;
 * tb_bus_consumer_new() installs the one rebalance callback that does the
 * rest: the cooperative (incremental) assign and unassign (eager too, should
 * a protocol override ask for it), a log line per partition (subsystem
 * \p sub, the start offset when on_assign set one), and the error handling.
 * Every hook may be NULL; all run on the thread that polls the consumer
 * (inside rd_kafka_consumer_poll()). Caller-owned: it must outlive the
 * consumer (the handle's rd_kafka_opaque() is this struct).
 */
typedef struct tb_rebalance {
        const char *sub; /**< the role's log subsystem ("projector"); NULL: "bus" */
        /** Before \p parts are assigned: may set each element's offset to
         *  where reading starts (RD_KAFKA_OFFSET_INVALID: the group's
         *  committed offset, else auto.offset.reset). */
        void (*on_assign)(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts, void *opaque);
        /** After \p parts were assigned, when that succeeded (e.g. to pause
         *  them). */
        void (*on_assigned)(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                            void *opaque);
        /** Before \p parts are unassigned: drop their state. \p lost: the
         *  group gave them away already (session timeout, fatal error), so
         *  nothing may be committed for them. */
        void (*on_revoke)(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                          bool lost, void *opaque);
        void *opaque; /**< passed to every hook */
} tb_rebalance_t;

/** Options for a consumer group member. */
typedef struct tb_consumer_opts {
        const char *group_id;        /**< required, e.g. "taskbus-scheduler" */
        const char *instance_id;     /**< static membership (group.instance.id) or NULL */
        bool read_committed;         /**< isolation.level=read_committed */
        bool auto_commit;            /**< enable.auto.commit */
        const char *offset_reset;    /**< "earliest" (default) or "latest" */
        /** The role's rebalance hooks (caller-owned, outlives the consumer);
         *  NULL: assign and unassign only. Excludes rebalance_cb. */
        const tb_rebalance_t *rebalance;
        /** A role's own whole rebalance callback, with \p opaque as
         *  rd_kafka_opaque(); prefer \p rebalance. */
        tb_rebalance_cb_t rebalance_cb;
        void *opaque;                /**< rd_kafka_opaque() for rebalance_cb */
        /** The role's session.timeout.ms; 0: librdkafka's default. A
         *  session.timeout.ms in the config's kafka group wins. */
        int session_timeout_ms;
        /** More topics to subscribe to, by full name (another region's
         *  copies, tb_repl_topic_name()); the strings are copied. */
        const char *const *topic_names;
        size_t topic_name_cnt;
} tb_consumer_opts_t;

/**
 * A new consumer group member (cooperative-sticky assignment) subscribed to
 * \p topics and \p opts->topic_names (\p topic_cnt may be 0 when names are
 * given). Caller owns it: tb_bus_consumer_destroy().
 * @locality any thread; the handle is then polled by one thread.
 */
tb_err_t tb_bus_consumer_new(const tb_config_t *conf, const tb_consumer_opts_t *opts,
                             const tb_topic_t *topics, size_t topic_cnt, rd_kafka_t **out,
                             char *errstr, size_t errstr_size);

/** Options for a reader: an assign-only consumer that never joins its group. */
typedef struct tb_reader_opts {
        /** Required, though never joined: librdkafka's consumer queue needs one. */
        const char *group_id;
        /** NULL: the configured Kafka; else another cluster (another region),
         *  the `kafka` group's other properties kept. */
        const char *bootstrap;
        bool read_committed;      /**< isolation.level=read_committed */
        bool partition_eof;       /**< deliver RD_KAFKA_RESP_ERR__PARTITION_EOF at each end */
        const char *offset_reset; /**< "earliest" (default) or "latest" */
        int connect_timeout_ms;   /**< socket.connection.setup.timeout.ms; 0: librdkafka's */
        int fetch_wait_max_ms;    /**< fetch.wait.max.ms; 0: librdkafka's */
} tb_reader_opts_t;

/**
 * A new reader: a consumer that is only ever assigned partitions
 * (rd_kafka_assign(), explicit offsets) and commits nothing
 * (enable.auto.commit and enable.auto.offset.store off), polled with
 * rd_kafka_consumer_poll(). For loading state (commands, scheduler), tailing
 * (api replies) and replay. Caller owns it: tb_bus_consumer_destroy().
 * @locality any thread; the handle is then polled by one thread.
 */
tb_err_t tb_bus_reader_new(const tb_config_t *conf, const tb_reader_opts_t *opts,
                           rd_kafka_t **out, char *errstr, size_t errstr_size);

/**
 * The low and high watermarks of \p topic [\p partition] as \p rk sees them (a
 * read_committed handle gets the last stable offset as \p hi), within
 * \p timeout_ms in all. Use this, not rd_kafka_query_watermark_offsets(): in
 * librdkafka 2.0 that call ignores its timeout while the partition's leader
 * is unreachable and blocks until the broker returns (minutes after a broker
 * dies), which stalled the scheduler's reload. This one asks with
 * rd_kafka_offsets_for_times() (earliest, then latest), whose wait is bounded,
 * and follows a partition whose leader moved (a metadata refresh, then again).
 * @returns RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_RESP_ERR__TIMED_OUT, or the
 *          partition's error. @locality the thread that polls \p rk.
 */
rd_kafka_resp_err_t tb_bus_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition,
                                      int timeout_ms, int64_t *lo, int64_t *hi);

/**
 * Leave the group and destroy a consumer, waiting at most \p timeout_ms for
 * the group to acknowledge: rd_kafka_consumer_close() blocks for as long as
 * the group coordinator is unreachable, which would hang shutdown while Kafka
 * is down. Revocations during the close are acknowledged without calling the
 * role's rebalance callback (the role is stopping). NULL allowed.
 */
void tb_bus_consumer_destroy(rd_kafka_t *rk, int timeout_ms);

/** The value of librdkafka property \p key from the config's kafka group
 *  (pass-through), or NULL when it is not set there. */
const char *tb_bus_prop(const tb_config_t *conf, const char *key);

/** Find header \p name in \p msg; @returns TB_OK and fills value/len, or NOT_FOUND. */
tb_err_t tb_bus_header_get(const rd_kafka_message_t *msg, const char *name,
                           const void **value, size_t *len);

/**
 * Check that librdkafka accepts property \p key = \p value (for the
 * configuration's `kafka` group, before any handle exists). On
 * TB_ERR_INVALID \p errstr holds librdkafka's reason.
 */
tb_err_t tb_bus_prop_check(const char *key, const char *value, char *errstr, size_t errstr_size);

/**
 * When the `kafka` group asks for SASL or TLS (security.protocol other than
 * plaintext), connect once and wait up to \p timeout_ms for the broker's
 * answer, so that a wrong password or an untrusted certificate stops a
 * process at start with a message naming the principal, the broker and the
 * settings to fix, instead of roles retrying in the background. A broker
 * that does not answer in time is not an error (roles wait for Kafka as
 * they always do). Never prints a secret.
 * @returns TB_OK, TB_ERR_UNAUTHENTICATED (SASL refused) or TB_ERR_KAFKA (TLS).
 */
tb_err_t tb_bus_check_access(const tb_config_t *conf, int timeout_ms, char *errstr,
                             size_t errstr_size);

/** Build a librdkafka conf from \p conf's pass-through props (caller owns). */
tb_err_t tb_bus_conf_new(const tb_config_t *conf, rd_kafka_conf_t **out, char *errstr,
                         size_t errstr_size);

/** @returns the partition a key maps to with librdkafka's default partitioner
 *  (murmur2_random for non-empty keys, as the Java client): the scheduler and
 *  commands roles use it to know which tasks they own.
 *  @returns RD_KAFKA_PARTITION_UA for a NULL key (librdkafka places those at
 *  random) or a partition_cnt below 1. */
int32_t tb_bus_partition_for(const void *key, size_t len, int32_t partition_cnt);

#endif /* TB_BUS_H */
