/**
 * @file scheduler/role_internal.h
 * @brief The scheduler role's state and the functions its files share
 *        (role.c, load.c, remote.c).
 */
#ifndef TB_SCHED_ROLE_INTERNAL_H
#define TB_SCHED_ROLE_INTERNAL_H

#include "scheduler/engine.h" /* the role reaches the engine only through this */
#include "scheduler/scheduler.h"
#include "serde/serde.h"

#define TB_SCHED_LOG "scheduler"

#define TB_SCHED_LOAD_WAIT_MS 90000 /* > the brokers' transaction timeout (60 s) */
/** A reload pass loads partitions for at most this long, then lets the loop fire. */
#define TB_SCHED_RELOAD_SLICE_MS 500

typedef struct tb_sched_role {
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
        struct tb_sched_adopt {
                char *tid;
                int64_t ms;
        } *adopt;                  /* moved tasks found while loading the projection */
        size_t adopt_cnt, adopt_cap;

        int64_t cal_poll_at; /* next look at the calendars (scheduler.calendar_poll) */
        int64_t cal_polled;  /* when they were last looked at */
        char cal_sig[64];    /* what tb_store_calendar_signature() said at the last load */
        /* after.c: the dependency poll */
        rd_kafka_t *after_prod; /* idempotent, outside the engine's transactions */
        int64_t after_next_ms;
} tb_sched_role_t;

/* ---- load.c: loading the partitions the group gives us ---------------------- */

/**
 * @brief Load partition \p p (dropping what the engine held of it): the
 *        committed position, the projection, the checkpoints, the other
 *        regions' copies. *\p start receives where to tail task-events from.
 * @returns TB_OK, or the error of the step that failed (the partition is
 *          then dropped; the caller retries later).
 */
tb_err_t tb_sched_load_partition(tb_sched_role_t *r, int32_t p, int64_t *start, char *errstr,
                                 size_t errstr_size);
/** After a failed transaction: load every assigned partition again and
 *  rewind the consumers to the new positions. */
void tb_sched_reload(tb_sched_role_t *r);
/** Resume the tasks an event of a higher epoch just made local, after the
 *  last fire of their old home that this region's runs show. */
void tb_sched_adopt_moved(tb_sched_role_t *r);
/** Forget the moved tasks found by a load that did not finish. */
void tb_sched_adopt_clear(tb_sched_role_t *r);
/** Assign the loading consumer (r->ck) to \p topic [\p p] from \p offset alone. */
rd_kafka_resp_err_t tb_sched_load_assign(tb_sched_role_t *r, const char *topic, int32_t p,
                                         int64_t offset);
/** Poll the loading consumer for up to 200 ms. @returns a record or an error
 *  event (caller destroys it), or NULL: nothing yet, or (*\p eof) the end of
 *  the assigned partition. */
rd_kafka_message_t *tb_sched_load_poll(tb_sched_role_t *r, bool *eof);

/**
 * Read the business calendars from PostgreSQL when they changed (a cheap
 * signature first) and give them to the engine, built. A calendar that
 * does not build is given with its reason (its tasks' fires are skipped
 * with it); PostgreSQL unavailable keeps the calendars already loaded.
 */
void tb_sched_calendars_poll(tb_sched_role_t *r);

/* ---- remote.c: the other regions' copies of task-events --------------------- */

/** Apply partition \p p of each other region's copy from where the
 *  projection left it, behind the start-up fence (see remote.c). */
void tb_sched_load_remote(tb_sched_role_t *r, int32_t p);
/** Assign the copies' consumer (r->rv) to the partitions we own, at our positions. */
void tb_sched_remote_assign(tb_sched_role_t *r);
/** Apply one record read by r->rv. */
void tb_sched_on_remote(tb_sched_role_t *r, rd_kafka_message_t *m);

/* ---- after.c: tasks that wait for others ---------------------------------- */

/** Start the runs (or record the skips) of the dependent tasks of our
 *  partitions that their parents allow, at most every scheduler.dependency_poll. */
void tb_sched_after_poll(tb_sched_role_t *r);
/** Flush and destroy the poll's producer. */
void tb_sched_after_free(tb_sched_role_t *r);

/* ---- role.c: the role's handles and records --------------------------------- */

/** @returns true once the daemon asked the roles to stop. */
bool tb_sched_role_stopping(tb_sched_role_t *r);
/** Assign the run-results consumer (r->rc) to the partitions we own, at our
 *  positions (\p fresh: at the committed ones). */
void tb_sched_results_assign(tb_sched_role_t *r, bool fresh);
/**
 * @brief Take record \p m of partition \p part unless we do not own it or it
 *        lies before *\p pos (read already: a consumer may deliver again
 *        what it fetched before a rewind); *\p pos moves past it.
 * @returns true when \p m is to be applied.
 */
bool tb_sched_take(const tb_sched_part_t *part, int64_t *pos, const rd_kafka_message_t *m);
/** @returns \p m decoded as \p schema (caller decrefs), or NULL for a
 *  tombstone or a record that does not decode (logged: it is skipped). */
json_t *tb_sched_decode(const rd_kafka_message_t *m, tb_schema_id_t schema, const char *what);
/** Log that record \p m of topic \p what was not applied: \p err. */
void tb_sched_warn_record(const rd_kafka_message_t *m, const char *what, const char *err);

#endif /* TB_SCHED_ROLE_INTERNAL_H */
