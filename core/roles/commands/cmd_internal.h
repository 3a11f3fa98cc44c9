/**
 * @file commands/cmd_internal.h
 * @brief Types and functions shared by the commands role's files.
 */
#ifndef TB_CMD_INTERNAL_H
#define TB_CMD_INTERNAL_H

#include "bus/bus.h"
#include "daemon.h"
#include "identity/identity.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"
#include "task/task.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TB_CMD_SUB "commands"
/** Most commands in one transaction. */
#define TB_CMD_BATCH_MAX 100
/** How long a batch waits for more commands once it has one. */
#define TB_CMD_BATCH_WAIT_US 20000
/** Timeout of a transaction commit. */
#define TB_CMD_COMMIT_TIMEOUT_MS 30000
/** Authentication cache: revocations take effect within this time. */
#define TB_CMD_AUTH_CACHE_MS 5000

/** One task's current state, as the last event of task-events says. */
typedef struct tb_cmd_task {
        struct tb_cmd_task *next; /* hash chain */
        char *id;
        int32_t partition;
        int64_t version;
        char *group;        /* security group of the last state */
        bool deleted;
        json_t *task;       /* normalized task; NULL once deleted */
        int64_t created_at;
        char *created_by;
        int64_t epoch;
} tb_cmd_task_t;

/** A string-keyed hash map of tb_cmd_task_t (chained, power-of-two size). */
typedef struct tb_cmd_map {
        tb_cmd_task_t **b;
        size_t nb;
        size_t cnt;
} tb_cmd_map_t;

/** A replaced state, kept until the transaction that replaced it commits. */
typedef struct tb_cmd_undo {
        char *id;
        tb_cmd_task_t *old; /* NULL: the task did not exist */
} tb_cmd_undo_t;

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
        rd_kafka_t *producer;  /* transactional */
        rd_kafka_t *loader;    /* assign-only reader of task-events */
        rd_kafka_t *follower;  /* assign-only: local + copied task-events after a rebuild */
        bool *followed;        /* per partition: the follower has it assigned */
        char (*remote_events)[300]; /* the other regions' copies of task-events */
        size_t remote_cnt;
        tb_ratelimit_t *rl;
        tb_cmd_map_t map;
        char txn_id[300];
        char events_topic[256];
        char commands_topic[256];
        int32_t partition_cnt;

        /* the batch being collected (the rebalance callback drops the
         * records of revoked partitions from it) */
        rd_kafka_message_t *batch[TB_CMD_BATCH_MAX];
        size_t batch_cnt;

        tb_cmd_undo_t *undo;
        size_t undo_cnt, undo_cap;
        tb_cmd_tally_t tally[64];
        size_t tally_cnt;
        uint64_t malformed;
} tb_cmd_t;

/** What was decided about one command. */
typedef struct tb_cmd_verdict {
        const char *reason;    /* NULL: accepted */
        char message[600];
        char field[128];
        int64_t version;       /* accepted: the new version */
} tb_cmd_verdict_t;

/* engine.c */
void tb_cmd_task_free(tb_cmd_task_t *t);
void tb_cmd_map_drop_partition(tb_cmd_map_t *m, int32_t p);
void tb_cmd_map_clear(tb_cmd_map_t *m);
void tb_cmd_undo_forget(tb_cmd_t *cmd);
void tb_cmd_undo_apply(tb_cmd_t *cmd);
bool tb_cmd_utf8_ok(const char *s);
const char *tb_cmd_jstr(const json_t *o, const char *key);
void tb_cmd_apply_event(tb_cmd_t *cmd, int32_t partition, const json_t *ev);
void tb_cmd_reject(tb_cmd_verdict_t *v, const char *reason, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
tb_err_t tb_cmd_decide(tb_cmd_t *cmd, const rd_kafka_message_t *msg, const json_t *c,
                       tb_cmd_verdict_t *v, char *errstr, size_t errstr_size);

/* rebuild.c */
void tb_cmd_unfollow(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts);
tb_err_t tb_cmd_load(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts,
                     char *errstr, size_t errstr_size);
void tb_cmd_follow(tb_cmd_t *cmd);
tb_err_t tb_cmd_loader_new(tb_cmd_t *cmd, rd_kafka_t **out, char *errstr,
                           size_t errstr_size);

#endif /* TB_CMD_INTERNAL_H */
