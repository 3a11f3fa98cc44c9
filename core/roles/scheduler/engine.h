/**
 * @file scheduler/engine.h
 * @brief The scheduler engine (tb_sched_t): the timers of the tasks of the
 *        partitions this process owns. No thread, no consumer, no database:
 *        what unit tests and the benchmark drive.
 *
 * Compact task records, a timer heap, misfire / pause / expiry / retry /
 * run-now logic. It turns due timers into records (RunRequests on runs,
 * RunResults on run-results for fires that are not run,
 * SchedulerCheckpoints, runs-dlq entries), written either to a
 * transactional producer (one transaction per tick) or to a sink callback
 * (unit tests, benchmarks). The role (scheduler.h) feeds it from Kafka and
 * PostgreSQL. See docs/scheduling.md, "Misfires and retries".
 *
 * @locality one thread (the role's scheduler thread).
 */
#ifndef TB_SCHED_ENGINE_H
#define TB_SCHED_ENGINE_H

#include "tb.h"
#include "bus/bus.h"
#include "config/config.h"
#include "schedule/calendar.h"
#include <jansson.h>

/** A fire whose emission time (nominal + jitter) is older than this when the
 *  scheduler gets to it was missed (nobody owned its partition, or the
 *  process was stopped): it follows the task's misfire policy. */
#define TB_SCHED_MISFIRE_THRESHOLD_MS 5000
/** Most records one task contributes to one tick, so that one task catching
 *  up on a long backlog does not starve the others. */
#define TB_SCHED_TASK_CHUNK 64
/** Most fires one RunResult for a range of fires not run (paused, missed)
 *  stands for: a longer pause or outage is split into consecutive ranges,
 *  so that closing one costs bounded work (docs/scheduling.md). */
#define TB_SCHED_RANGE_MAX 100000
/** A next fire time that does not come: the schedule ran out (or, for
 *  tb_sched_next_due(), no timer at all). */
#define TB_SCHED_NEVER INT64_MAX
/** A last nominal time that is not known: nothing emitted yet. */
#define TB_SCHED_NO_LAST INT64_MIN

typedef struct tb_sched tb_sched_t;

/**
 * @brief Deterministic run id: the first 32 hex digits of
 *        SHA-256("<task id>|<nominal ms>|<attempt>").
 */
void tb_sched_run_id(const char *task_id, int64_t nominal_ms, int attempt, char out[33]);

/**
 * @brief A new engine for \p conf (not copied: it must outlive the engine).
 * @param host  recorded as RunResult.host on the records it writes.
 * @returns TB_OK with *\p out (caller frees with tb_sched_destroy()).
 */
tb_err_t tb_sched_new(const tb_config_t *conf, const char *host, tb_sched_t **out,
                      char *errstr, size_t errstr_size);
/** Free the engine; NULL allowed. Kafka handles given to it are not freed. */
void tb_sched_destroy(tb_sched_t *s);

/** Where a record goes when a sink is set (instead of Kafka). \p key is the
 *  task id; \p value NULL is a tombstone. */
typedef void (*tb_sched_sink_t)(void *opaque, tb_topic_t topic, int32_t partition,
                                const char *key, const void *value, size_t len,
                                const tb_header_t *headers, size_t header_cnt);
/** Send records to \p sink instead of a producer (NULL: back to the producer). */
void tb_sched_set_sink(tb_sched_t *s, tb_sched_sink_t sink, void *opaque);
/**
 * @brief Write through \p producer (transactional; not owned) and commit the
 *        owned partitions' positions with \p group's metadata (may be NULL:
 *        no offsets, no fencing — benchmarks only).
 */
void tb_sched_set_kafka(tb_sched_t *s, rd_kafka_t *producer, rd_kafka_t *group);

/** Called after each committed tick, once per scheduled (not retry / run-now /
 *  misfire) fire, with its emission time (nominal + jitter) and the commit
 *  time: the fire lag. */
typedef void (*tb_sched_fire_hook_t)(void *opaque, int64_t due_ms, int64_t commit_ms);
void tb_sched_set_fire_hook(tb_sched_t *s, tb_sched_fire_hook_t hook, void *opaque);

/**
 * @brief Add or replace a task (the full definition after an event).
 * @param partition  its task-events partition (0 .. topics.partitions-1).
 * @param spec       the Avro TaskSpec as JSON (TaskEvent.task; not consumed).
 * @param created_ms the task's creation time: anchors "every" schedules and
 *                   is where fires start without a checkpoint.
 * A changed schedule resumes after max(last emitted nominal, \p now_ms).
 * A paused task is not armed; when it is resumed, or its schedule or home
 * region changes, its fires up to \p now_ms become one SKIPPED_PAUSED range
 * record, written by the next tick (docs/scheduling.md, "Ranges").
 * @returns TB_OK, TB_ERR_INVALID (bad spec: the task is not scheduled; the
 *          message names the field), TB_ERR_NOMEM.
 */
tb_err_t tb_sched_task_put(tb_sched_t *s, int32_t partition, const char *task_id,
                           int64_t version, int64_t created_ms, const json_t *spec,
                           int64_t now_ms, char *errstr, size_t errstr_size);
/** Forget a task; \p tombstone also writes a checkpoint tombstone on the next
 *  tick. @returns false if unknown. (A DELETED event first records a paused
 *  task's range: tb_sched_event().) */
bool tb_sched_task_remove(tb_sched_t *s, const char *task_id, bool tombstone);

/**
 * @brief Apply one TaskEvent (decoded JSON) read from task-events \p partition.
 *        Idempotent by version. \p replay marks an event below the offset the
 *        partition was loaded at (already in the projection): only a
 *        RUN_REQUESTED not yet emitted is taken from it.
 */
tb_err_t tb_sched_event(tb_sched_t *s, int32_t partition, const json_t *event, bool replay,
                        int64_t now_ms, char *errstr, size_t errstr_size);
/**
 * @brief Apply one TaskEvent read from another region's copy of task-events
 *        (docs/replication.md): the task's state only, ordered by (epoch,
 *        version) like local events; a RUN_REQUESTED there is not fired here.
 */
tb_err_t tb_sched_remote_event(tb_sched_t *s, int32_t partition, const json_t *event,
                               int64_t now_ms, char *errstr, size_t errstr_size);
/**
 * @brief The next task that an event of a higher home-region epoch made
 *        local (a failover moved it here), or NULL. Caller frees it; the
 *        role then calls tb_sched_task_adopt() before the next tick.
 */
char *tb_sched_take_moved(tb_sched_t *s);
/**
 * @brief Resume a task moved here from the last nominal time its old home
 *        fired (\p last_nominal_ms, TB_SCHED_NO_LAST if none is known: the
 *        checkpoint or the creation then). Fires missed since are caught up
 *        by the task's misfire policy.
 */
void tb_sched_task_adopt(tb_sched_t *s, const char *task_id, int64_t last_nominal_ms);
/** @brief Set a loaded task's home-region epoch (loading from the projection). */
void tb_sched_task_set_epoch(tb_sched_t *s, const char *task_id, int64_t epoch);
/** Apply one RunResult (decoded JSON; a range of skipped fires is never
 *  retried): FAILED / TIMED_OUT / LOST / infra
 *  errors schedule a retry or go to the DLQ. */
tb_err_t tb_sched_result(tb_sched_t *s, int32_t partition, const json_t *result,
                         int64_t now_ms, char *errstr, size_t errstr_size);
/** Apply one SchedulerCheckpoint (decoded JSON) while loading a partition. */
tb_err_t tb_sched_checkpoint(tb_sched_t *s, const json_t *ckpt, int64_t now_ms,
                             char *errstr, size_t errstr_size);

/** Per-partition state (owned by the engine, read/written by the role). */
typedef struct tb_sched_part {
        bool owned;        /**< loaded and fired by this engine */
        int64_t load_off;  /**< the projection's task-events offset it was loaded at */
        int64_t ev_pos;    /**< next task-events offset (committed with each tick) */
        int64_t rr_pos;    /**< next run-results offset (committed with each tick) */
} tb_sched_part_t;
/** @returns partition \p p's state, or NULL if out of range. */
tb_sched_part_t *tb_sched_part(tb_sched_t *s, int32_t p);
/** Drop every task of partition \p p (revoked / lost / reload). */
void tb_sched_drop_partition(tb_sched_t *s, int32_t p);

/** What one tick did. */
typedef struct tb_sched_tick_stats {
        size_t fires;       /**< RunRequests emitted */
        size_t skips;       /**< RunResults for fires not run : one per range */
        size_t misfires;    /**< late fires met (run or skipped) */
        size_t checkpoints; /**< checkpoint records */
        size_t dlq;         /**< runs-dlq records */
        bool more;          /**< the batch was full: call again at once */
        int64_t commit_ms;  /**< when the transaction committed (0: none) */
} tb_sched_tick_stats_t;

/**
 * @brief Emit everything due at \p now_ms (up to scheduler.max_batch fire
 *        records, plus the checkpoints, DLQ entries and offsets that go with
 *        them) in ONE transaction.
 * On failure the transaction is aborted and the engine's state is ahead of
 * what is committed: the caller must drop and reload its partitions.
 * @returns TB_OK, TB_ERR_FENCED (rebuild the producer), TB_ERR_KAFKA /
 *          TB_ERR_TIMEOUT.
 */
tb_err_t tb_sched_tick(tb_sched_t *s, int64_t now_ms, tb_sched_tick_stats_t *st,
                       char *errstr, size_t errstr_size);

/** @returns the earliest timer (epoch ms), or TB_SCHED_NEVER when none. */
int64_t tb_sched_next_due(const tb_sched_t *s);
/** @returns how many tasks are loaded. */
size_t tb_sched_task_count(const tb_sched_t *s);
/** @returns a task's next nominal fire (TB_SCHED_NEVER: none) and last
 *  emitted nominal (TB_SCHED_NO_LAST: none); false if unknown. For tests and status. */
bool tb_sched_task_info(const tb_sched_t *s, const char *task_id, int64_t *next_nominal,
                        int64_t *last_nominal);

/**
 * @brief Encode a RunRequest for a task's current snapshot (the same bytes
 *        the engine produces): appended to \p out.
 * @returns TB_ERR_NOT_FOUND for an unknown task.
 */
tb_err_t tb_sched_encode_run(const tb_sched_t *s, const char *task_id, int64_t nominal_ms,
                             int attempt, const char *trigger, int64_t emitted_ms,
                             tb_buf_t *out, char *errstr, size_t errstr_size);

/** One calendar of one group, built (the role reads them from PostgreSQL). */
typedef struct tb_sched_calendar {
        char group[129];
        char name[129];
        int64_t version;
        tb_calendar_t *cal; /**< NULL when it could not be built: see error */
        char error[240];    /**< why not: the reason its tasks' fires are skipped with */
} tb_sched_calendar_t;

/**
 * @brief Replace the calendars the engine applies (docs/scheduling.md
 *        "Calendars"). Takes \p cals (malloc'ed, \p n entries, their
 *        calendars) in every case. The next fire of every task that names a
 *        calendar added, changed (another version) or removed is decided
 *        again and its timer moved, so a calendar update takes effect for
 *        every task at once. Before the first call, the fires of tasks with
 *        calendar rules wait.
 */
void tb_sched_calendars_set(tb_sched_t *s, tb_sched_calendar_t *cals, size_t n);

/** Tell the engine a poll of the calendars ended (changed or not): the tasks
 *  whose calendar was unknown are decided again, now failing closed. */
void tb_sched_calendars_polled(tb_sched_t *s);
/** @returns whether a task names a calendar the engine does not know, so the
 *  role should poll now rather than at the next interval. */
bool tb_sched_calendars_wanted(const tb_sched_t *s);

/** @returns the calendars' decision for a task's next fire (a copy in
 *  \p out), false when unknown, without rules or not decided. For tests. */
bool tb_sched_task_decision(tb_sched_t *s, const char *task_id, tb_calendar_decision_t *out);

#endif /* TB_SCHED_ENGINE_H */
