/**
 * @file replication.h
 * @brief Region replication helpers (docs/replication.md): names of the
 *        copies MirrorMaker 2 makes of other regions' topics, the region
 *        lookups of `replication.*`, the ordering of task events across
 *        regions (home-region epoch first, then version), and Kafka reads
 *        used by the scheduler's start-up fence and by `taskbus admin region`.
 *
 * MirrorMaker 2 runs with its DefaultReplicationPolicy: region "us"'s topic
 * "taskbus.task-events" is copied into every other region's Kafka as
 * "us.taskbus.task-events", partition for partition (so partition p of a
 * copy holds the same tasks as partition p of the local topic), with the
 * source's record timestamps but different offsets.
 */
#ifndef TB_REPLICATION_H
#define TB_REPLICATION_H

#include "bus/bus.h"
#include "config/config.h"
#include "tb.h"

#include <librdkafka/rdkafka.h>

/** The topics MirrorMaker 2 copies between regions. */
extern const tb_topic_t tb_repl_topics[];
/** How many entries tb_repl_topics has. */
extern const size_t tb_repl_topic_cnt;

/**
 * Name of \p region's copy of topic \p t in this region's Kafka:
 * "<region>.<topics.prefix><short name>". @returns \p buf.
 */
const char *tb_repl_topic_name(const tb_config_t *conf, const char *region, tb_topic_t t,
                               char *buf, size_t size);

/**
 * Is \p topic one of the copies of another region's topics (a region of
 * replication.remote_regions)? On true, *\p region points into \p conf and
 * *\p t (if non-NULL) is the topic it copies.
 */
bool tb_repl_topic_parse(const tb_config_t *conf, const char *topic, const char **region,
                         tb_topic_t *t);

/** The REST API base URL of \p region (replication.region_apis), or NULL. */
const char *tb_repl_region_api(const tb_config_t *conf, const char *region);

/** The bootstrap servers of \p region (replication.region_kafka), or NULL. */
const char *tb_repl_region_kafka(const tb_config_t *conf, const char *region);

/**
 * Is an event at (\p epoch, \p version) newer than a state at
 * (\p cur_epoch, \p cur_version)? A higher home-region epoch wins whatever
 * the versions (a failover supersedes writes the old home made after it);
 * within an epoch the higher version wins.
 */
static inline bool tb_repl_newer(int64_t epoch, int64_t version, int64_t cur_epoch,
                                 int64_t cur_version) {
        return epoch > cur_epoch || (epoch == cur_epoch && version > cur_version);
}

/**
 * Create this region's copies of the other regions' topics when missing
 * (same partition count and retention as the local topic; task-events
 * kept forever), so consumers can subscribe before MirrorMaker 2 copied a
 * first record. Idempotent; nothing to do without remote regions.
 */
tb_err_t tb_repl_topics_ensure(const tb_config_t *conf, int timeout_ms, char *errstr,
                               size_t errstr_size);

/**
 * An assign-only, read_committed consumer with partition EOF events, on
 * \p bootstrap (NULL: \p conf's Kafka; else only the `kafka` group's other
 * properties are kept). Caller destroys it with tb_bus_consumer_destroy().
 */
tb_err_t tb_repl_reader_new(const tb_config_t *conf, const char *bootstrap, const char *group,
                            rd_kafka_t **out, char *errstr, size_t errstr_size);

/**
 * The consumer behind tb_repl_reader_new(), also the scheduler's assign-only
 * consumers: never subscribes, read_committed, commits nothing itself (its
 * positions go into transactions), starts at the earliest offset where
 * \p group has none. \p eof: partition-EOF events; \p connect_timeout_ms:
 * socket.connection.setup.timeout.ms (0: librdkafka's default).
 * Caller destroys it with tb_bus_consumer_destroy().
 */
tb_err_t tb_repl_consumer_new(const tb_config_t *conf, const char *bootstrap, const char *group,
                              bool eof, int connect_timeout_ms, rd_kafka_t **out, char *errstr,
                              size_t errstr_size);

/**
 * The last committed record of \p topic [\p partition] read with \p rk (an
 * assign-only reader, left unassigned). *\p found is false for an empty
 * partition. \p value (may be NULL) receives a copy of its value,
 * \p ts_ms its timestamp, \p offset its offset.
 * @returns TB_ERR_KAFKA / TB_ERR_TIMEOUT within \p timeout_ms.
 */
tb_err_t tb_repl_last_record(rd_kafka_t *rk, const char *topic, int32_t partition,
                             int timeout_ms, bool *found, int64_t *ts_ms, int64_t *offset,
                             tb_buf_t *value, char *errstr, size_t errstr_size);

#endif /* TB_REPLICATION_H */
