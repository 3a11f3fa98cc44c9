/**
 * @file commands/cmd_internal.h
 * @brief The commands role's own state, shared by role.c (consumer,
 *        batches, transactions, start/stop) and rebuild.c (rebuilding and
 *        following task-events). The decisions are the engine's
 *        (commands/engine.h).
 */
#ifndef TB_CMD_INTERNAL_H
#define TB_CMD_INTERNAL_H

#include "bus/bus.h"
#include "commands/engine.h"
#include "daemon.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/** How long the role polls for a first command before a round ends (the
 *  stop flag, rebuilds and the follower are checked between rounds). */
#define TB_CMD_IDLE_POLL_MS 100
/** Timeout of a transaction commit. */
#define TB_CMD_COMMIT_TIMEOUT_MS 30000
/** Authentication cache: revocations take effect within this time (the
 *  api role's is the same, so revocation reaches every role within 1 s). */
#define TB_CMD_AUTH_CACHE_MS 1000

/** Outcome tallies of a batch, published to metrics only once it commits. */
typedef struct tb_cmd_tally {
        char type[16];
        char outcome[24];
        int n;
} tb_cmd_tally_t;

typedef struct tb_cmd {
        tb_ctx_t *ctx;
        pthread_t thread;
        bool thread_started;
        rd_kafka_t *consumer;  /* group member on task-commands */
        tb_rebalance_t rebalance; /* the consumer's hooks (outlive it) */
        rd_kafka_t *producer;  /* transactional */
        rd_kafka_t *loader;    /* assign-only reader of task-events */
        rd_kafka_t *follower;  /* assign-only: local + copied task-events after a rebuild */
        bool *followed;        /* per partition: the follower has it assigned */
        char (*remote_events)[300]; /* the other regions' copies of task-events */
        size_t remote_cnt;
        tb_cmd_engine_t *engine; /* the state and the decisions */
        char txn_id[300];
        char events_topic[256];
        char commands_topic[256];
        int32_t partition_cnt;

        /* the batch being collected (the rebalance callback drops the
         * records of revoked partitions from it): group commit, see
         * tb_cmd_collect() in role.c */
        rd_kafka_message_t **batch; /* commands.batch_max slots */
        size_t batch_max;
        size_t batch_cnt;
        size_t last_batch_cnt; /* commands in the previous batch: > 1 means busy */

        tb_cmd_tally_t tally[64];
        size_t tally_cnt;
        uint64_t malformed;

        /* Rebuilds run between batches, not inside the rebalance callback:
         * an assigned partition is paused and pending until its state is
         * rebuilt (tb_cmd_load_pending() in role.c). Per partition: */
        bool *pending;         /* assigned, its state not rebuilt yet */
        uint32_t *gen;         /* bumped on each assignment and revocation */
        int64_t *seek_back;    /* a record dropped while it was not decidable
                                * (-1: none): read again from there */
        bool loading;          /* a rebuild serves the group (tb_cmd_serve()) */
        int64_t evicted_at;    /* last tb_cmd_evict(), tb_mono_us() */
        json_t *used;          /* this batch's task ids: were they ever written */
        char used_err[256];    /* why the batch's lookup failed ("": it did not) */
} tb_cmd_t;

/* rebuild.c */

/** Stop following partition numbers \p parts (local and copies). */
void tb_cmd_unfollow(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts);
/**
 * Rebuild the state of task-events partitions \p parts (same numbers as the
 * task-commands partitions) and of the same partitions of the other regions'
 * copies, then follow them. @returns TB_OK, or an error after which the
 * caller retries. @locality the role's worker thread.
 */
tb_err_t tb_cmd_load(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts,
                     char *errstr, size_t errstr_size);
/** Apply what the follower has; between batches only. */
void tb_cmd_follow(tb_cmd_t *cmd);
/** While a rebuild runs: serve the group consumer's rebalances; the records
 *  it returns are dropped and read again later (seek_back). role.c. */
void tb_cmd_serve(tb_cmd_t *cmd);
/** Evict the deleted tasks the projection holds (at most once a second). */
void tb_cmd_evict(tb_cmd_t *cmd);
/** Whether the projection has events of each of \p ids, into \p used (id ->
 *  true/false). */
tb_err_t tb_cmd_ids_used(tb_cmd_t *cmd, const char *const *ids, size_t n, json_t *used,
                         char *errstr, size_t errstr_size);
/** An assign-only consumer of task-events (never joins its group). */
tb_err_t tb_cmd_loader_new(tb_cmd_t *cmd, rd_kafka_t **out, char *errstr,
                           size_t errstr_size);

#endif /* TB_CMD_INTERNAL_H */
