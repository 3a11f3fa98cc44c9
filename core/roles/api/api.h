/**
 * @file api/api.h
 * @brief The api role's state and the services its route handlers (tasks.c,
 *        runs.c; their request helpers are api/util.h, their cursor
 *        api/cursor.h) share: authentication, the command round trip over Kafka
 *        (task-commands -> task-replies) and read-your-writes waits on the
 *        PostgreSQL projection.
 *
 * Threads of the role:
 *  - libmicrohttpd's thread per connection runs the handlers (they block);
 *  - one producer poller serving delivery reports of api->producer;
 *  - one reply consumer reading every partition of task-replies (assign, no
 *    group), waking the handler whose correlation id a reply carries;
 *  - one projection watcher (LISTEN taskbus_projection on its own
 *    connection) waking handlers whose write has reached the projection;
 *  - one live log poller waking log followers whose run changed (follow.c).
 */
#ifndef TB_API_H
#define TB_API_H

#include "daemon.h"
#include "bus/bus.h"
#include "http/server.h"
#include "identity/identity.h"
#include "identity/ratelimit.h"
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>

/** Buckets of the pending-request table (correlation id -> waiter). */
#define TB_API_PENDING_BUCKETS 256

struct tb_api_pending;
struct tb_api_projwait;
struct tb_api_follows;

/** What /healthz answers: refreshed by at most one request per second. */
typedef struct tb_api_health {
        pthread_mutex_t lock;
        bool refreshing;        /**< a request is checking now; others answer this */
        int64_t checked_us;     /**< tb_mono_us() of the last check, 0 = never */
        bool kafka_ok, pg_ok;
        char kafka_error[256], pg_error[256];
} tb_api_health_t;

typedef struct tb_api {
        tb_ctx_t *ctx;
        /** The api's own pool (api.pool_size, api.statement_timeout): what
         *  requests query never waits on the connections the commands role
         *  authenticates with (ctx->store). */
        tb_store_t *store;
        tb_http_server_t *http;
        tb_api_health_t health;
        tb_bus_rprod_t *producer; /**< idempotent producer for task-commands */
        rd_kafka_t *replies;    /**< consumer of task-replies (assign, no group) */
        tb_ratelimit_t *rl;     /**< per user: api.rate, api.burst */
        atomic_bool stop;

        pthread_t poll_thread;
        pthread_t reply_thread;
        pthread_t proj_thread;
        bool poll_started, reply_started, proj_started;

        /** Guards pending[], projwaits, replies_ready. */
        pthread_mutex_t lock;
        pthread_cond_t ready_cond; /**< broadcast when replies_ready turns true */
        bool replies_ready;        /**< reply consumer assigned at its start offsets */
        char replies_error[512];   /**< why it is not ready yet */
        struct tb_api_pending *pending[TB_API_PENDING_BUCKETS];
        struct tb_api_projwait *projwaits;
        struct tb_api_projseen *projseen; /**< versions recently notified (projwait.c) */
        int wake_fd;               /**< eventfd: a new projection waiter, or stop */
        struct tb_api_follows *follows; /**< live log followers (api/follow.h) */
} tb_api_t;

/** How a command round trip ended. */
typedef enum tb_api_outcome {
        TB_API_ACCEPTED = 0,
        TB_API_REJECTED,    /**< a TaskReply with status REJECTED */
        TB_API_UNAVAILABLE, /**< not delivered to Kafka: nothing was applied */
        TB_API_TIMEOUT,     /**< delivered, but no reply within api.reply_timeout */
} tb_api_outcome_t;

/** The result of tb_api_command(). */
typedef struct tb_api_cmd_result {
        tb_api_outcome_t outcome;
        char command_id[37];
        char correlation_id[37];
        int64_t requested_at_ms;
        int64_t version;       /**< ACCEPTED: the task's version after the command */
        char reason[32];       /**< REJECTED: the RejectReason symbol */
        char message[1024];    /**< REJECTED: the handler's message; else why */
        char field[128];       /**< REJECTED: the offending field, or "" */
        int64_t deadline_us;   /**< monotonic deadline shared with the projection wait */
} tb_api_cmd_result_t;

/**
 * Send one TaskCommand and wait for its TaskReply.
 * @param type      "CREATE", "UPDATE", "DELETE", "PAUSE", "RESUME", "RUN_NOW"
 * @param task_id   the task (a new UUID for CREATE)
 * @param expected_version -1 for none
 * @param task_json CREATE/UPDATE: the body as the caller sent it, else NULL
 * @param res       filled in every case; res->deadline_us bounds later waits.
 * The caller's own Authorization header is forwarded in the record header.
 * @locality an HTTP connection thread (blocks up to api.reply_timeout).
 */
void tb_api_command(tb_api_t *api, tb_http_req_t *req, const char *type, const char *task_id,
                    int64_t expected_version, const char *task_json, tb_api_cmd_result_t *res);

/**
 * Wait until the projection holds \p task_id at \p version or later (or
 * the task's history does: it was deleted), or until \p deadline_us
 * (monotonic). @returns true if it did.
 */
bool tb_api_wait_projected(tb_api_t *api, const char *task_id, int64_t version,
                           int64_t deadline_us);

/** The authenticated caller of \p req (set by the auth hook). */
const tb_principal_t *tb_api_principal(const tb_http_req_t *req);

/**
 * Answer a failed command: 503/504, or the HTTP status of a REJECTED reply
 * (FORBIDDEN on an existing task is 404, so that other groups' tasks are
 * indistinguishable from missing ones). \p task_id names the task in 404s.
 */
void tb_api_command_error(tb_http_resp_t *resp, const char *type, const char *task_id,
                          const tb_api_cmd_result_t *res);

/* ---- routes -------------------------------------------------------------- */

/**
 * A route handler (api.c's route table): answers \p req into \p resp;
 * \p app is the tb_api_t. @locality an HTTP connection thread (may block).
 */
typedef void tb_api_route_fn(void *app, tb_http_req_t *req, tb_http_resp_t *resp);

/** /v1/tasks (tasks.c): create, list, get, update, delete, pause, resume, run, history. */
tb_api_route_fn tb_api_tasks_create, tb_api_tasks_list, tb_api_tasks_get, tb_api_tasks_update,
        tb_api_tasks_delete, tb_api_tasks_pause, tb_api_tasks_resume, tb_api_tasks_run,
        tb_api_tasks_history;

/** A task's runs, one run, its cancellation and its output (runs.c). */
tb_api_route_fn tb_api_runs_list, tb_api_runs_get, tb_api_runs_cancel, tb_api_runs_log,
        tb_api_runs_notifications;

/** Runs across the caller's tasks (runs.c: GET /v1/runs) and the dashboard's
 *  aggregates (dashboard.c: counts per status, fire lag, next fires). */
tb_api_route_fn tb_api_runs_list_all, tb_api_runs_counts, tb_api_runs_fire_lag,
        tb_api_runs_upcoming;

/** A task's occurrences in a range and one step of their backfill (backfill.c). */
tb_api_route_fn tb_api_tasks_occurrences, tb_api_tasks_backfill;
/** /v1/calendars (calendars.c): put (create or replace from an .ics), get, list,
 *  delete. */
tb_api_route_fn tb_api_calendars_put, tb_api_calendars_get, tb_api_calendars_list,
        tb_api_calendars_delete;
/** Check that the calendars normalized task \p task names exist in its group
 *  (when PostgreSQL answers; else accepted: its fires fail closed).
 *  @returns false with a 400 naming calendars[i].calendar in \p resp. */
bool tb_api_calendars_check_task(tb_api_t *api, const json_t *task, tb_http_resp_t *resp);

/** POST /v1/schedule/preview: the next fires of a schedule not saved yet (schedule.c). */
tb_api_route_fn tb_api_schedule_preview;

#endif
