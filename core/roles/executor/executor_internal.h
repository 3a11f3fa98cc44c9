/**
 * @file executor/executor_internal.h
 * @brief The executor role's shared state, for its files only; executor.h
 *        is the role's public header, plugin_host.h the plugin host's.
 *
 * Files:
 *  - role.c    start and stop, the threads, the loaded plugins, the role
 *              descriptor.
 *  - claims.c  consuming `runs`, claiming each run in PostgreSQL (the
 *              taskbus_claim_run() overlap policy), runs-dlq and quarantine,
 *              the results decided at claim (SKIPPED_OVERLAP, FAILED) delivered
 *              before the offset, the timer that starts held runs, runs nobody
 *              claimed (LOST), handing held runs back at stop.
 *  - runs.c    a claimed run: starting and cancelling it through its plugin,
 *              the plugin sink (output buffering), LogChunks and RunResults,
 *              the finishers that report it and mark its claim done.
 *  - lease.c   renewing leases, acting on cancellation requests, reaping
 *              expired claims (LOST).
 * Every statement on run_claims is store/claims.h's (the requests to cancel
 * too: tb_store_claims_request_cancel(), tb_store_claims_cancel_task_runs()).
 *
 * Threads (all joined by stop()):
 *  - consumer: polls `runs` in batches, enqueues each batch in ONE
 *    PostgreSQL transaction (taskbus_enqueue_run() per run: the run queue in
 *    run_claims, insert-or-duplicate), commits the Kafka offsets only once
 *    the queued runs are durable; and while fewer than
 *    executor.max_concurrent runs are active, takes queued runs
 *    (taskbus_take_runs(): groups in turn over every executor, FIFO within
 *    a group, a group's max_running, then the task's overlap policy) and
 *    starts them (or leaves runs whose nominal time is still ahead to the
 *    timer). It never pauses: the queue is in PostgreSQL, not in memory.
 *  - starters (TB_EXEC_STARTERS): start the runs queued on ex->start_head
 *    (held runs at their nominal time, by the timer; runs due already, by
 *    the consumer) on their plugins, in parallel: a plugin's start() (the
 *    shell plugin's clone and execve) never holds up the timer, the consumer
 *    or another run's start.
 *  - timer: queues held runs for the starters at their nominal time, flushes buffered output
 *    older than 250 ms, serves the producers' delivery reports, produces the
 *    markers of lost log chunks (logloss.c).
 *  - lease: renews this executor's claims every lease/3, polls them for
 *    cancellation requests every 500 ms, and reaps expired claims of any
 *    executor, and runs no executor claimed, every lease/2 (LOST).
 *  - finishers (TB_EXEC_FINISHERS): each takes the runs that ended (up to
 *    TB_EXEC_RESULT_BATCH at once): their last output chunks (eof), their
 *    final RunResults all produced, then each delivery confirmed, then
 *    their claims marked done in one transaction. Plugin callbacks only
 *    queue work for them. (RUNNING results are produced asynchronously by
 *    the starters: librdkafka batches them.)
 *
 * Locks: ex->lock guards the run list, the done queue, n_active and every
 * run's phase/flags; x->lock guards one run's output buffer and sequence
 * (held while its chunks are handed to the producer, which keeps them in
 * order). Order: ex->lock before x->lock; nothing takes ex->lock while
 * holding an x->lock.
 *
 * Lifetime of a run (tb_exec_run_t): created when its claim commits, linked in
 * ex->runs (the list's reference), unlinked and released by the finisher
 * after its result is delivered. Other threads take a reference under
 * ex->lock before using it outside the lock.
 */
#ifndef TB_EXECUTOR_INTERNAL_H
#define TB_EXECUTOR_INTERNAL_H

#include "executor/executor.h"

#include "bus/bus.h"
#include "executor/plugin_host.h"
#include "store/claims.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define TB_EXEC_SUB "executor"
#define TB_EXEC_CHUNK_MAX (64 * 1024)   /* largest LogChunk */
#define TB_EXEC_FLUSH_MS 250            /* longest time output is held */
#define TB_EXEC_TICK_MS 50              /* timer granularity */
#define TB_EXEC_BATCH 64                /* most runs claimed per transaction */
#define TB_EXEC_FINISHERS 4
#define TB_EXEC_STARTERS 4
#define TB_EXEC_RESULT_BATCH 64         /* most RunResults a finisher has in flight */
#define TB_EXEC_CANCEL_POLL_MS 500      /* "sees a cancel request within a second" */
#define TB_EXEC_HOLD_MAX_MS 60000       /* longest a run is held for its nominal time */
#define TB_EXEC_TAKE_POLL_MS 250        /* how often the queue is read without a local event */
/** A result decided at take time still pending after this long was left by
 *  a stopped executor: the lease thread publishes it. */
#define TB_EXEC_PENDING_STALE_MS 10000
#define TB_EXEC_ID_MAX 256              /* longest run / task id accepted */
#define TB_EXEC_MAX_PLUGINS 16

/* ---- state ------------------------------------------------------------------- */

typedef enum tb_exec_phase {
        TB_EXEC_PENDING = 0, /* claimed, waiting for its nominal time */
        TB_EXEC_STARTING,    /* a thread is inside tb_plugin_run_start() */
        TB_EXEC_RUNNING,     /* started (or failed to start: finished is set) */
        TB_EXEC_RELEASED,    /* handed back at shutdown before it started */
} tb_exec_phase_t;

typedef struct tb_exec_plugin {
        char name[64];
        tb_plugin_instance_t *pi;
} tb_exec_plugin_t;

typedef struct tb_exec tb_exec_t;
typedef struct tb_exec_loss tb_exec_loss_t; /* logloss.c */

typedef struct tb_exec_run {
        struct tb_exec_run *next;   /* ex->runs */
        struct tb_exec_run *qnext;  /* ex->done queue */
        struct tb_exec_run *snext;  /* ex->start queue (holds a reference) */
        atomic_int refs;
        tb_exec_t *ex;

        /* Immutable once linked. The strings point into req. */
        json_t *req;
        void *raw;              /* the record value, to hand the run back at shutdown */
        size_t raw_len;
        const char *run_id, *task_id, *group, *executor_name, *script, *overlap;
        json_t *argv, *options;
        json_t *params; /* RunRequest.params, borrowed from req: the run's environment */
        int64_t nominal_ms, expiry_ms;
        int32_t attempt;
        tb_exec_plugin_t *plugin;

        /* Under ex->lock. */
        tb_exec_phase_t phase;
        tb_plugin_hrun_t *hr;   /* set once started; released when the run is freed */
        bool start_returned;    /* the starter is done with it */
        bool finished;          /* res holds the outcome */
        bool queued;
        bool cancel_sent, shutdown_cancel, lease_lost;
        char cancel_reason[256];
        int64_t started_ms;     /* wall clock, when the plugin accepted it */
        tb_plugin_result_t res;
        char *res_error;

        /* Under lock: output. */
        pthread_mutex_t lock;
        tb_buf_t buf;
        int buf_stream;
        int64_t buf_first_us;   /* monotonic, when buf became non-empty */
        int64_t seq;
        int64_t out_total, out_kept;
        bool truncated;
} tb_exec_run_t;

struct tb_exec {
        tb_ctx_t *ctx;
        const tb_config_t *conf;
        char id[400];           /* run_claims.executor_id: instance + random */
        /* both replaced after a fatal error (tb_bus_rprod): take the handle
         * with tb_bus_rprod_get()/put() around each use */
        tb_bus_rprod_t *producer;
        tb_bus_rprod_t *log_producer; /* LogChunks only: its reports feed logloss.c */
        rd_kafka_t *consumer;
        tb_exec_plugin_t plugins[TB_EXEC_MAX_PLUGINS];
        size_t plugin_cnt;
        bool paused;            /* consumer thread only */

        pthread_mutex_t lock;
        pthread_cond_t done_cond;  /* finishers: queue non-empty or stop */
        pthread_cond_t timer_cond; /* timer: a run was held, or stop */
        pthread_cond_t lease_cond; /* lease thread: stop */
        pthread_cond_t idle_cond;  /* stop(): n_active dropped */
        pthread_cond_t start_cond; /* starters: queue non-empty or stop_starts */
        tb_exec_run_t *runs;
        size_t n_active;
        tb_exec_run_t *done_head, *done_tail;
        tb_exec_run_t *start_head, *start_tail;
        bool stop_starts;          /* starters: drain the queue and end */

        atomic_bool take_due;      /* runs were enqueued: read the queue now */
        atomic_bool stop_consume;
        atomic_bool stop_all;
        pthread_t consumer_thr, timer_thr, lease_thr, finisher_thr[TB_EXEC_FINISHERS];
        pthread_t starter_thr[TB_EXEC_STARTERS];
        bool consumer_started, timer_started, lease_started;
        size_t finishers_started, starters_started;

        /* logloss.c: lost log chunk ranges waiting for their gap marker. */
        pthread_mutex_t loss_lock;
        tb_exec_loss_t *losses;
        size_t loss_cnt;
        bool delivered_since;   /* a chunk was delivered since the last loss */
};

/** What goes into a RunResult besides the run's identity. */
typedef struct tb_exec_outcome {
        const char *status;     /* RunStatus symbol */
        bool has_exit;
        int exit_code;
        bool has_signal;
        int signal;
        int64_t started_ms;     /* 0: null */
        int64_t finished_ms;    /* 0: null */
        const char *executor;
        int64_t output_bytes;
        bool infra;
        const char *error;      /* NULL: null */
        const json_t *params;   /* the run's parameter values (NULL: {}) */
} tb_exec_outcome_t;

/* ---- role.c: small helpers and the loaded plugins ------------------------------ */

/** Wait on \p c (initialised on the monotonic clock) for at most \p ms.
 *  @locks caller holds \p m */
void tb_exec_cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms);
/** @returns the monotonic clock in milliseconds. */
int64_t tb_exec_mono_ms(void);
/** @returns the string member \p key of \p o (borrowed), or "" if absent. */
const char *tb_exec_json_str(const json_t *o, const char *key);
/** qsort()/bsearch() comparator for arrays of C strings. */
int tb_exec_cmp_str(const void *a, const void *b);
/** @returns the loaded plugin named \p name, or NULL.
 *  @locality any thread (the plugin table is fixed once the role started) */
tb_exec_plugin_t *tb_exec_plugin_find(tb_exec_t *ex, const char *name);

/* ---- logloss.c: LogChunks and the chunks Kafka never took ----------------------- */

/**
 * @brief Produce one LogChunk on ex->log_producer. A refusal, or later a
 *        failed delivery, is counted and kept as a lost range whose marker
 *        the timer produces (tb_exec_log_loss_tick()).
 * @param covers 0 for output; a gap marker: the seqs it stands for, \p bytes
 *        their size
 * @locality any thread (a run's chunks under its x->lock, which orders them)
 */
tb_err_t tb_exec_log_produce(tb_exec_t *ex, const char *run_id, const char *task_id,
                             int64_t seq, const char *stream, const void *data, size_t len,
                             bool eof, int64_t covers, int64_t bytes, char *errstr,
                             size_t errstr_size);
/** The log producer's delivery report callback (each message's opaque names
 *  its executor). @locality whichever thread polls ex->log_producer */
void tb_exec_log_dr(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
/** Produce the gap markers that are due (all of them with \p force).
 *  @locality the timer thread, or stop() once the timer is joined */
void tb_exec_log_loss_tick(tb_exec_t *ex, bool force);
/** Forget the ranges still waiting (logged). @locality stop() */
void tb_exec_log_loss_free(tb_exec_t *ex);

/* ---- runs.c: a run's life -------------------------------------------------------- */

/** @returns a new run holding one reference (the caller's), or NULL. */
tb_exec_run_t *tb_exec_run_new(tb_exec_t *ex);
/** Take a reference on \p x, reached through a reference the caller holds or
 *  through ex->runs under ex->lock. */
void tb_exec_run_ref(tb_exec_run_t *x);
/** Drop a reference; the last one frees the run. NULL is a no-op. */
void tb_exec_run_unref(tb_exec_run_t *x);
/**
 * @brief Publish a RunResult for the run on `run-results` (keyed by task id).
 * @param sync wait for the delivery report (final results); otherwise queue it
 * @returns TB_OK, or the serde/bus error with \p errstr filled.
 * @locality any thread
 */
tb_err_t tb_exec_publish_result(tb_exec_t *ex, const char *run_id,
                                const char *task_id, int64_t nominal_ms,
                                int32_t attempt, const tb_exec_outcome_t *o, bool sync,
                                char *errstr, size_t errstr_size);
/** Publish \p x's buffered output as LogChunks; with \p eof the last says so.
 *  @locks caller holds x->lock */
void tb_exec_log_flush_locked(tb_exec_t *ex, tb_exec_run_t *x, bool eof);
/** The plugin sink's output(): buffer \p data, capped at executor.output_cap.
 *  @locality any thread (plugin threads) */
void tb_exec_sink_output(void *opaque, void *run_opaque, int stream, const void *data,
                         size_t len);
/** The plugin sink's finished(): record the outcome, queue the run for a finisher.
 *  @locality any thread (plugin threads) */
void tb_exec_sink_finished(void *opaque, void *run_opaque, const tb_plugin_result_t *res);
/** Start \p x on its plugin (the caller set its phase to STARTING and holds a
 *  reference); a run that cannot start is finished as an infra error, one
 *  cancelled before it got here is finished CANCELLED without starting. */
void tb_exec_run_start(tb_exec_t *ex, tb_exec_run_t *x);
/** Queue \p x (phase STARTING, set by the caller) for a starter thread; the
 *  queue takes a reference. @locks caller holds ex->lock */
void tb_exec_run_queue_start_locked(tb_exec_t *ex, tb_exec_run_t *x);
/** A starter thread: start each queued run (tb_exec_run_start()) until
 *  ex->stop_starts is set and the queue is empty. */
void *tb_exec_starter_main(void *arg);
/** Stop \p x for \p reason whatever its phase (\p shutdown: the executor is
 *  stopping, which its result says). @locks takes ex->lock: caller must not hold it */
void tb_exec_run_cancel(tb_exec_t *ex, tb_exec_run_t *x, const char *reason,
                        bool shutdown);
/** Take a reference on every linked run whose phase is in \p phase_mask
 *  (1 << phase); *\p out is malloc'd: free with tb_exec_runs_snapshot_free(). */
size_t tb_exec_runs_snapshot(tb_exec_t *ex, unsigned phase_mask, tb_exec_run_t ***out);
/** Drop the references of a snapshot and free it. */
void tb_exec_runs_snapshot_free(tb_exec_run_t **v, size_t n);
/** Unlink \p x from ex->runs (the caller then drops the list's reference). */
void tb_exec_run_unlink(tb_exec_t *ex, tb_exec_run_t *x);
/** A finisher thread: report each ended run (last chunk, result, claim done). */
void *tb_exec_finisher_main(void *arg);

/* ---- lease.c: claims while they run ------------------------------------------------ */

/** The lease thread: renew, poll cancellation requests, reap expired claims. */
void *tb_exec_lease_main(void *arg);

/* ---- claims.c: consuming and claiming ------------------------------------------------ */

/** The timer thread: queue held runs for the starters at their nominal time, flush output
 *  held too long, serve the producer's delivery reports. */
void *tb_exec_timer_main(void *arg);
/** The consumer's rebalance callback (cooperative or eager); keeps new
 *  partitions paused while the executor is full. @locality consumer thread */
void tb_exec_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t *parts, void *opaque);
/** The consumer thread: poll `runs`, claim each batch, commit, start. */
void *tb_exec_consumer_main(void *arg);
/** Record as LOST (result delivered, then the claim committed) the runs
 *  still scheduled past executor.unclaimed_timeout that no executor claimed.
 *  @locality lease thread */
void tb_exec_reap_unclaimed(tb_exec_t *ex);
/** At stop, after the consumer ended: hand runs still held for their nominal
 *  time back to `runs` (their claim deleted). */
void tb_exec_release_pending(tb_exec_t *ex);

#endif /* TB_EXECUTOR_INTERNAL_H */
