/**
 * @file scheduler/role_internal.h
 * @brief The scheduler role's state and the functions its files share
 *        (role.c, load.c, remote.c).
 */
#ifndef TB_SCHED_ROLE_INTERNAL_H
#define TB_SCHED_ROLE_INTERNAL_H

#include "scheduler/engine.h" /* the role reaches the engine only through this */
#include "scheduler/scheduler.h"

#define SUB "scheduler"

#define LOAD_WAIT_MS 90000 /* > the brokers' transaction timeout (60 s) */

typedef struct sched_role {
        tb_ctx_t *ctx;
        const tb_config_t *conf;
        tb_sched_t *s;
        rd_kafka_t *gc, *rc, *ck, *prod;
        pthread_t thr;
        bool thr_started;
        bool *assigned; /* task-events partitions the group gave us */
        int64_t reload_at;
        char instance[200], group[256], txn_id[300];
        char t_ev[256], t_rr[256], t_ck[256];

        /* regions (docs/replication.md): the other regions' copies of
         * task-events, read assign-only for the partitions we own, so that a
         * failover's HOME_MOVED there stops us firing a task moved away */
        rd_kafka_t *rv;
        size_t rcnt;
        char (*t_rev)[300];
        int64_t *rpos;             /* [p * rcnt + region]: next offset, < 0: beginning */
        int64_t *fence_skip_until; /* per region: a fence timed out, skip it until then */
        struct sched_adopt {
                char *tid;
                int64_t ms;
        } *adopt;                  /* moved tasks found while loading the projection */
        size_t adopt_cnt, adopt_cap;
} sched_role_t;

/* load.c */
void role_adopt_moved(sched_role_t *r);
tb_err_t role_load(sched_role_t *r, int32_t p, int64_t *start, char *errstr,
                   size_t errstr_size);
void role_reload(sched_role_t *r);

/* remote.c */
void role_load_remote(sched_role_t *r, int32_t p);
void role_rv_sync(sched_role_t *r);
void role_on_remote(sched_role_t *r, rd_kafka_message_t *m);

/* role.c */
bool role_stopping(sched_role_t *r);
void role_rc_sync(sched_role_t *r, bool fresh);

#endif /* TB_SCHED_ROLE_INTERNAL_H */
