/**
 * @file scheduler/scheduler.h
 * @brief The scheduler: the timers of the tasks of the partitions this
 *        process owns, and the role that drives them from Kafka.
 *
 * Two layers:
 *  - the engine (engine.h; engine.c, records.c, events.c, emit.c): compact
 *    task records, a timer heap, misfire / pause / expiry / retry / run-now
 *    logic, one transaction per tick. No thread of its own.
 *  - the role (tb_role_scheduler; role.c, load.c, remote.c): a consumer
 *    group on task-events whose assignment decides which partitions this
 *    process fires, the load of a partition from the PostgreSQL projection
 *    at a known offset plus its checkpoints, the run-results tail for
 *    retries, the other regions' copies, and the KIP-447 fenced
 *    transactions. See docs/scheduling.md, "Partitioning and failover".
 *
 * Internal headers: engine_internal.h (the task record and the engine's
 * state, for the engine's files only) and role_internal.h (the role's state,
 * for its files); the role reaches the engine through engine.h alone.
 */
#ifndef TB_SCHEDULER_H
#define TB_SCHEDULER_H

#include "scheduler/engine.h"
#include "daemon.h"

/** The role, listed in roles/roles.c. */
extern const tb_role_t tb_role_scheduler;

#endif /* TB_SCHEDULER_H */
