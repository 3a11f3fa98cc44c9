/**
 * @file executor/executor.c
 * @brief The executor role (see executor.h): claim, run, stream, report.
 *
 * Threads (all joined by stop()):
 *  - consumer: polls `runs` in batches, claims each batch in ONE PostgreSQL
 *    transaction (taskbus_claim_run() per run: advisory lock on the task,
 *    insert-or-duplicate, overlap policy), commits the Kafka offsets only
 *    once the claims are durable, then starts the runs (or leaves runs whose
 *    nominal time is still ahead to the timer). It pauses its partitions
 *    while executor.max_concurrent runs are active, so nothing is buffered.
 *  - timer: starts held runs at their nominal time, flushes buffered output
 *    older than 250 ms, serves the producer's delivery reports.
 *  - lease: renews this executor's claims every lease/3, polls them for
 *    cancellation requests every 500 ms, and reaps expired claims of any
 *    executor every lease/2 (LOST).
 *  - finishers (TB_EXEC_FINISHERS): for each ended run, the last output
 *    chunk (eof), the final RunResult (delivered synchronously), then the
 *    claim marked done. Plugin callbacks only queue work for them.
 *
 * Locks: ex->lock guards the run list, the done queue, n_active and every
 * run's phase/flags; x->lock guards one run's output buffer and sequence
 * (held while its chunks are handed to the producer, which keeps them in
 * order). Order: ex->lock before x->lock; nothing takes ex->lock while
 * holding an x->lock.
 *
 * Lifetime of a run (tb_xrun_t): created when its claim commits, linked in
 * ex->runs (the list's reference), unlinked and released by the finisher
 * after its result is delivered. Other threads take a reference under
 * ex->lock before using it outside the lock.
 */
#include "executor/executor.h"

#include "bus/bus.h"
#include "http/metrics.h"
#include "executor/plugin_host.h"
#include "serde/serde.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define TB_EXEC_SUB "executor"
#define TB_EXEC_CHUNK_MAX (64 * 1024)   /* largest LogChunk */
#define TB_EXEC_FLUSH_MS 250            /* longest time output is held */
#define TB_EXEC_TICK_MS 50              /* timer granularity */
#define TB_EXEC_BATCH 64                /* most runs claimed per transaction */
#define TB_EXEC_FINISHERS 4
#define TB_EXEC_CANCEL_POLL_MS 500      /* "sees a cancel request within a second" */
#define TB_EXEC_HOLD_MAX_MS 60000       /* longest a run is held for its nominal time */
#define TB_EXEC_ID_MAX 256              /* longest run / task id accepted */
#define TB_EXEC_REAP_LIMIT 100
#define TB_EXEC_MAX_PLUGINS 16

/* ---- state ------------------------------------------------------------------- */

typedef enum tb_xphase {
        TB_XR_PENDING = 0, /* claimed, waiting for its nominal time */
        TB_XR_STARTING,    /* a thread is inside tb_plugin_run_start() */
        TB_XR_RUNNING,     /* started (or failed to start: finished is set) */
        TB_XR_RELEASED,    /* handed back at shutdown before it started */
} tb_xphase_t;

typedef struct tb_exec_plugin {
        char name[64];
        tb_plugin_instance_t *pi;
} tb_exec_plugin_t;

typedef struct tb_executor tb_executor_t;

typedef struct tb_xrun {
        struct tb_xrun *next;   /* ex->runs */
        struct tb_xrun *qnext;  /* ex->done queue */
        atomic_int refs;
        tb_executor_t *ex;

        /* Immutable once linked. The strings point into req. */
        json_t *req;
        void *raw;              /* the record value, to hand the run back at shutdown */
        size_t raw_len;
        const char *run_id, *task_id, *group, *executor_name, *script, *overlap;
        json_t *argv, *options;
        int64_t nominal_ms, expiry_ms;
        int32_t attempt;
        tb_exec_plugin_t *plugin;

        /* Under ex->lock. */
        tb_xphase_t phase;
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
} tb_xrun_t;

struct tb_executor {
        tb_ctx_t *ctx;
        const tb_config_t *conf;
        char id[400];           /* run_claims.executor_id: instance + random */
        rd_kafka_t *producer;
        rd_kafka_t *consumer;
        tb_exec_plugin_t plugins[TB_EXEC_MAX_PLUGINS];
        size_t plugin_cnt;
        bool paused;            /* consumer thread only */

        pthread_mutex_t lock;
        pthread_cond_t done_cond;  /* finishers: queue non-empty or stop */
        pthread_cond_t timer_cond; /* timer: a run was held, or stop */
        pthread_cond_t lease_cond; /* lease thread: stop */
        pthread_cond_t idle_cond;  /* stop(): n_active dropped */
        tb_xrun_t *runs;
        size_t n_active;
        tb_xrun_t *done_head, *done_tail;

        atomic_bool stop_consume;
        atomic_bool stop_all;
        pthread_t consumer_thr, timer_thr, lease_thr, finisher_thr[TB_EXEC_FINISHERS];
        bool consumer_started, timer_started, lease_started;
        size_t finishers_started;
};

/* ---- small helpers ------------------------------------------------------------ */

static void tb_exec_cond_init(pthread_cond_t *c) {
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_init(c, &a);
        pthread_condattr_destroy(&a);
}

/* Wait on \p c (monotonic clock) for at most \p ms. */
static void tb_exec_cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ms < 0)
                ms = 0;
        ts.tv_sec += (time_t)(ms / 1000);
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(c, m, &ts);
}

static int64_t tb_exec_mono_ms(void) { return tb_mono_us() / 1000; }

static const char *tb_exec_str(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

static void tb_exec_ms_text(int64_t v, char buf[32]) {
        snprintf(buf, 32, "%" PRId64, v);
}

/* ---- runs --------------------------------------------------------------------- */

static tb_xrun_t *tb_xrun_new(tb_executor_t *ex) {
        tb_xrun_t *x = calloc(1, sizeof(*x));
        if (!x)
                return NULL;
        x->ex = ex;
        atomic_init(&x->refs, 1);
        pthread_mutex_init(&x->lock, NULL);
        x->res.size = sizeof(x->res);
        x->res.exit_code = -1;
        return x;
}

static void tb_xrun_ref(tb_xrun_t *x) { atomic_fetch_add(&x->refs, 1); }

static void tb_xrun_unref(tb_xrun_t *x) {
        if (!x || atomic_fetch_sub(&x->refs, 1) != 1)
                return;
        if (x->hr)
                tb_plugin_run_release(x->hr);
        json_decref(x->req);
        free(x->raw);
        free(x->res_error);
        tb_buf_free(&x->buf);
        pthread_mutex_destroy(&x->lock);
        free(x);
}

/* Queue \p x for a finisher. Caller holds ex->lock; x is finished and its
 * starter is done with it. */
static void tb_exec_enqueue_locked(tb_executor_t *ex, tb_xrun_t *x) {
        if (x->queued)
                return;
        x->queued = true;
        x->qnext = NULL;
        if (ex->done_tail)
                ex->done_tail->qnext = x;
        else
                ex->done_head = x;
        ex->done_tail = x;
        pthread_cond_signal(&ex->done_cond);
}

/* Record an outcome decided by the executor itself (the plugin never ran
 * or never accepted the run). Caller holds ex->lock. */
static void tb_exec_finish_self_locked(tb_executor_t *ex, tb_xrun_t *x, int status,
                                       const char *error) {
        x->res.status = status;
        x->res.exit_code = -1;
        x->res.finished_ms = tb_now_ms();
        free(x->res_error);
        x->res_error = error ? strdup(error) : NULL;
        x->finished = true;
        x->start_returned = true;
        x->phase = TB_XR_RUNNING;
        tb_exec_enqueue_locked(ex, x);
}

/* ---- publishing ------------------------------------------------------------------ */

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
} tb_exec_outcome_t;

static tb_err_t tb_exec_publish_result(tb_executor_t *ex, const char *run_id,
                                       const char *task_id, int64_t nominal_ms,
                                       int32_t attempt, const tb_exec_outcome_t *o, bool sync,
                                       char *errstr, size_t errstr_size) {
        json_t *v = json_object();
        tb_buf_t out = {0};
        json_object_set_new(v, "run_id", json_string(run_id));
        json_object_set_new(v, "task_id", json_string(task_id));
        json_object_set_new(v, "nominal_time", json_integer(nominal_ms));
        json_object_set_new(v, "attempt", json_integer(attempt));
        json_object_set_new(v, "status", json_string(o->status));
        json_object_set_new(v, "exit_code", o->has_exit ? json_integer(o->exit_code) : json_null());
        json_object_set_new(v, "signal", o->has_signal ? json_integer(o->signal) : json_null());
        json_object_set_new(v, "started_at",
                            o->started_ms ? json_integer(o->started_ms) : json_null());
        json_object_set_new(v, "finished_at",
                            o->finished_ms ? json_integer(o->finished_ms) : json_null());
        json_object_set_new(v, "executor", json_string(o->executor ? o->executor : ""));
        json_object_set_new(v, "host", json_string(ex->ctx->host));
        json_object_set_new(v, "output_bytes", json_integer(o->output_bytes));
        json_object_set_new(v, "infra_error", json_boolean(o->infra));
        json_object_set_new(v, "error", o->error ? json_string(o->error) : json_null());
        json_object_set_new(v, "at", json_integer(tb_now_ms()));
        tb_err_t err = tb_serde_encode(TB_SCHEMA_RUN_RESULT, v, &out, errstr, errstr_size);
        json_decref(v);
        if (err == TB_OK)
                err = tb_bus_produce(ex->producer, ex->conf, TB_TOPIC_RESULTS,
                                     RD_KAFKA_PARTITION_UA, task_id, strlen(task_id), out.data,
                                     out.len, NULL, 0, sync, errstr, errstr_size);
        tb_buf_free(&out);
        return err;
}

/* Publish a RunResult synchronously, retrying while Kafka refuses (a result
 * must not be lost); gives up only when stopping and after ~30 s. */
static bool tb_exec_publish_result_retry(tb_executor_t *ex, const char *run_id,
                                         const char *task_id, int64_t nominal_ms,
                                         int32_t attempt, const tb_exec_outcome_t *o) {
        char err[1024];
        for (int tries = 1;; tries++) {
                if (tb_exec_publish_result(ex, run_id, task_id, nominal_ms, attempt, o, true,
                                           err, sizeof(err)) == TB_OK)
                        return true;
                tb_error(TB_EXEC_SUB, "run %s: publishing its %s result failed (try %d): %s",
                         run_id, o->status, tries, err);
                if (atomic_load(&ex->stop_all) && tries >= 30)
                        return false;
                sleep(1);
        }
}

static const char *tb_exec_stream_name(int stream) {
        return stream == TB_PLUGIN_STDOUT   ? "STDOUT"
               : stream == TB_PLUGIN_STDERR ? "STDERR"
                                            : "SYSTEM";
}

/* One LogChunk. Caller holds x->lock (which orders the run's chunks). */
static void tb_exec_chunk_locked(tb_executor_t *ex, tb_xrun_t *x, const char *stream,
                                 const void *data, size_t len, bool eof) {
        char err[1024];
        tb_buf_t out = {0};
        json_t *v = json_object();
        json_object_set_new(v, "run_id", json_string(x->run_id));
        json_object_set_new(v, "task_id", json_string(x->task_id));
        json_object_set_new(v, "seq", json_integer(x->seq));
        json_object_set_new(v, "stream", json_string(stream));
        json_object_set_new(v, "at", json_integer(tb_now_ms()));
        json_object_set_new(v, "data", json_stringn_nocheck(len ? data : "", len));
        json_object_set_new(v, "eof", json_boolean(eof));
        tb_err_t e = tb_serde_encode(TB_SCHEMA_LOG_CHUNK, v, &out, err, sizeof(err));
        json_decref(v);
        if (e == TB_OK)
                e = tb_bus_produce(ex->producer, ex->conf, TB_TOPIC_LOGS, RD_KAFKA_PARTITION_UA,
                                   x->run_id, strlen(x->run_id), out.data, out.len, NULL, 0,
                                   false, err, sizeof(err));
        tb_buf_free(&out);
        x->seq++; /* a gap in seq tells readers a chunk is missing */
        if (e != TB_OK) {
                tb_metrics_add("taskbus_executor_log_chunks_dropped_total", NULL, 1);
                tb_warn(TB_EXEC_SUB, "run %s: log chunk %" PRId64 " (%zu bytes) dropped: %s",
                        x->run_id, x->seq - 1, len, err);
        }
}

/* Publish what is buffered, in chunks of at most TB_EXEC_CHUNK_MAX; with
 * \p eof the last chunk says so (an empty SYSTEM chunk if nothing is left). */
static void tb_exec_flush_locked(tb_executor_t *ex, tb_xrun_t *x, bool eof) {
        if (x->buf.len == 0) {
                if (eof)
                        tb_exec_chunk_locked(ex, x, "SYSTEM", "", 0, true);
                return;
        }
        const char *stream = tb_exec_stream_name(x->buf_stream);
        for (size_t off = 0; off < x->buf.len;) {
                size_t n = x->buf.len - off;
                if (n > TB_EXEC_CHUNK_MAX)
                        n = TB_EXEC_CHUNK_MAX;
                tb_exec_chunk_locked(ex, x, stream, x->buf.data + off, n,
                                     eof && off + n == x->buf.len);
                off += n;
        }
        x->buf.len = 0;
}

/* Hand a record that cannot be run to runs-dlq, with its reason. */
static tb_err_t tb_exec_dlq(tb_executor_t *ex, const rd_kafka_message_t *m, const char *key,
                            const char *reason, const char *error, char *errstr,
                            size_t errstr_size) {
        tb_header_t h[2] = {
                {"reason", reason, strlen(reason)},
                {"error", error, strlen(error)},
        };
        const void *k = key ? (const void *)key : m->key;
        size_t klen = key ? strlen(key) : m->key_len;
        tb_metrics_add("taskbus_executor_dlq_total", NULL, 1);
        return tb_bus_produce(ex->producer, ex->conf, TB_TOPIC_DLQ, RD_KAFKA_PARTITION_UA, k,
                              klen, m->payload, m->len, h, 2, true, errstr, errstr_size);
}

/* ---- plugin sink ------------------------------------------------------------------- */

static void tb_exec_on_output(void *opaque, void *run_opaque, int stream, const void *data,
                              size_t len) {
        tb_executor_t *ex = opaque;
        tb_xrun_t *x = run_opaque;
        const int64_t cap = ex->conf->exec_output_cap;

        pthread_mutex_lock(&x->lock);
        x->out_total += (int64_t)len;
        if (!x->truncated) {
                size_t room = x->out_kept >= cap ? 0 : (size_t)(cap - x->out_kept);
                size_t take = len < room ? len : room;
                if (x->buf.len && x->buf_stream != stream)
                        tb_exec_flush_locked(ex, x, false);
                if (take) {
                        if (!x->buf.len)
                                x->buf_first_us = tb_mono_us();
                        if (tb_buf_append(&x->buf, data, take) == TB_OK) {
                                x->buf_stream = stream;
                                x->out_kept += (int64_t)take;
                        } else {
                                tb_warn(TB_EXEC_SUB, "run %s: out of memory buffering "
                                        "%zu bytes of output: dropped", x->run_id, take);
                        }
                }
                if (x->buf.len >= TB_EXEC_CHUNK_MAX)
                        tb_exec_flush_locked(ex, x, false);
                if (take < len) {
                        char marker[128];
                        int n = snprintf(marker, sizeof(marker),
                                         "[taskbus: output truncated after %" PRId64 " bytes]",
                                         x->out_kept);
                        tb_exec_flush_locked(ex, x, false);
                        tb_exec_chunk_locked(ex, x, "SYSTEM", marker, (size_t)n, false);
                        x->truncated = true;
                }
        }
        pthread_mutex_unlock(&x->lock);
}

static void tb_exec_on_finished(void *opaque, void *run_opaque, const tb_plugin_result_t *res) {
        tb_executor_t *ex = opaque;
        tb_xrun_t *x = run_opaque;
        char *error = res->error ? strdup(res->error) : NULL;
        pthread_mutex_lock(&ex->lock);
        x->res.status = res->status;
        x->res.exit_code = res->exit_code;
        x->res.signal = res->signal;
        x->res.started_ms = res->started_ms;
        x->res.finished_ms = res->finished_ms;
        free(x->res_error);
        x->res_error = error;
        x->finished = true;
        if (x->start_returned)
                tb_exec_enqueue_locked(ex, x);
        pthread_mutex_unlock(&ex->lock);
}

/* ---- plugins ---------------------------------------------------------------------- */

static bool tb_exec_known_executor(const char *stem) {
        static const char *const known[] = {"shell", "container", "ssh"};
        for (size_t i = 0; i < TB_ARRAY_LEN(known); i++)
                if (!strcmp(stem, known[i]))
                        return true;
        return false;
}

static void tb_exec_stem(const char *path, char *out, size_t size) {
        const char *b = strrchr(path, '/');
        b = b ? b + 1 : path;
        size_t n = strcspn(b, ".");
        if (n >= size)
                n = size - 1;
        memcpy(out, b, n);
        out[n] = '\0';
}

static tb_err_t tb_exec_load_one(tb_executor_t *ex, const char *path, char *errstr,
                                 size_t errstr_size) {
        char stem[64], kgrace[32];
        tb_exec_stem(path, stem, sizeof(stem));
        const tb_plugin_conf_t *pc = tb_config_plugin(ex->conf, stem);
        size_t n = pc ? pc->kv_cnt : 0;
        tb_plugin_kv_t kv[n + 2];
        for (size_t i = 0; i < n; i++) {
                kv[i].key = pc->kv[i].key;
                kv[i].value = pc->kv[i].value;
        }
        /* executor.kill_grace and executor.allow_root are the shell plugin's
         * kill_grace and allow_root unless its own group sets them. */
        if (!strcmp(stem, "shell")) {
                if (!tb_plugin_conf_get(pc, "kill_grace")) {
                        snprintf(kgrace, sizeof(kgrace), "%" PRId64 "ms",
                                 ex->conf->exec_kill_grace_ms);
                        kv[n++] = (tb_plugin_kv_t){"kill_grace", kgrace};
                }
                if (!tb_plugin_conf_get(pc, "allow_root"))
                        kv[n++] = (tb_plugin_kv_t){"allow_root",
                                                   ex->conf->exec_allow_root ? "true" : "false"};
        }
        if (ex->plugin_cnt == TB_EXEC_MAX_PLUGINS)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "executor.plugin_paths: more than %d plugins",
                                 TB_EXEC_MAX_PLUGINS);
        tb_plugin_sink_t sink = {
                .opaque = ex,
                .output = tb_exec_on_output,
                .finished = tb_exec_on_finished,
        };
        tb_plugin_instance_t *pi = NULL;
        tb_err_t err = tb_plugin_load(path, kv, n, &sink, &pi, errstr, errstr_size);
        if (err)
                return err;
        const char *name = tb_plugin_name(pi);
        for (size_t i = 0; i < ex->plugin_cnt; i++) {
                if (!strcmp(ex->plugins[i].name, name)) {
                        tb_plugin_unload(pi, 0);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "executor.plugin_paths: two plugins are named "
                                         "'%s' (the second is %s); load each executor once",
                                         name, path);
                }
        }
        tb_exec_plugin_t *p = &ex->plugins[ex->plugin_cnt++];
        snprintf(p->name, sizeof(p->name), "%s", name);
        p->pi = pi;
        tb_info(TB_EXEC_SUB, "loaded executor plugin '%s' %s from %s", name,
                tb_plugin_version(pi), path);
        return TB_OK;
}

static int tb_exec_strcmp(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.so of \p dir (sorted); with \p known_only, only known executors. */
static tb_err_t tb_exec_load_dir(tb_executor_t *ex, const char *dir, bool known_only,
                                 char *errstr, size_t errstr_size) {
        DIR *d = opendir(dir);
        if (!d)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "executor plugin directory %s: %s", dir, strerror(errno));
        char *names[256];
        size_t cnt = 0;
        struct dirent *de;
        while ((de = readdir(d)) && cnt < TB_ARRAY_LEN(names)) {
                size_t len = strlen(de->d_name);
                if (len < 4 || strcmp(de->d_name + len - 3, ".so"))
                        continue;
                char stem[64];
                tb_exec_stem(de->d_name, stem, sizeof(stem));
                if (known_only && !tb_exec_known_executor(stem))
                        continue;
                names[cnt++] = strdup(de->d_name);
        }
        closedir(d);
        qsort(names, cnt, sizeof(names[0]), tb_exec_strcmp);
        tb_err_t err = TB_OK;
        for (size_t i = 0; i < cnt; i++) {
                char path[4096];
                if (!err && names[i]) {
                        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
                        err = tb_exec_load_one(ex, path, errstr, errstr_size);
                        /* Unconfigured, every built plugin is tried: one whose
                         * engine is missing here (no container runtime) must
                         * not keep the others from running. */
                        if (err && known_only) {
                                tb_warn(TB_EXEC_SUB, "skipping executor plugin %s: %s", path,
                                        errstr);
                                err = TB_OK;
                        }
                }
                free(names[i]);
        }
        return err;
}

static tb_err_t tb_exec_load_plugins(tb_executor_t *ex, char *errstr, size_t errstr_size) {
        tb_err_t err = TB_OK;
        const tb_config_t *conf = ex->conf;
        if (conf->exec_plugin_path_cnt == 0) {
                err = tb_exec_load_dir(ex, TB_PLUGIN_DIR, true, errstr, errstr_size);
        } else {
                for (size_t i = 0; !err && i < conf->exec_plugin_path_cnt; i++) {
                        const char *p = conf->exec_plugin_paths[i];
                        struct stat sb;
                        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                                err = tb_exec_load_dir(ex, p, false, errstr, errstr_size);
                        else
                                err = tb_exec_load_one(ex, p, errstr, errstr_size);
                }
        }
        if (!err && ex->plugin_cnt == 0)
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "no executor plugin found: %s has no shell.so, container.so "
                                "or ssh.so; set executor.plugin_paths",
                                conf->exec_plugin_path_cnt ? "executor.plugin_paths"
                                                           : TB_PLUGIN_DIR);
        return err;
}

static tb_exec_plugin_t *tb_exec_plugin_find(tb_executor_t *ex, const char *name) {
        for (size_t i = 0; i < ex->plugin_cnt; i++)
                if (!strcmp(ex->plugins[i].name, name))
                        return &ex->plugins[i];
        return NULL;
}

/* ---- starting and cancelling ------------------------------------------------------ */

/* Start \p x (phase STARTING, set by the caller). Caller holds a reference. */
static void tb_exec_start(tb_executor_t *ex, tb_xrun_t *x) {
        char err[1024];
        const tb_group_conf_t *g = tb_config_group_policy(ex->conf, x->group);
        size_t argc = json_array_size(x->argv), optc = json_object_size(x->options);
        const char **argv = calloc(argc + 1, sizeof(char *));
        tb_plugin_kv_t *opts = calloc(optc + 1, sizeof(*opts));
        tb_plugin_kv_t *pol = NULL;
        size_t npol = 0;
        tb_plugin_hrun_t *hr = NULL;
        tb_err_t e;

        if (!argv || !opts) {
                e = tb_seterr(err, sizeof(err), TB_ERR_NOMEM, "out of memory starting the run");
                goto failed;
        }
        for (size_t i = 0; i < argc; i++)
                argv[i] = json_string_value(json_array_get(x->argv, i));
        size_t k = 0;
        const char *key;
        json_t *val;
        json_object_foreach(x->options, key, val) {
                opts[k].key = key;
                opts[k++].value = json_string_value(val);
        }
        if ((e = tb_plugin_policy_build(g, &pol, &npol, err, sizeof(err))))
                goto failed;
        tb_plugin_run_t pr = {
                .size = sizeof(pr),
                .run_id = x->run_id,
                .task_id = x->task_id,
                .nominal_time_ms = x->nominal_ms,
                .attempt = x->attempt,
                .script = argc ? NULL : x->script,
                .argv = argc ? argv : NULL,
                .workdir = ex->conf->exec_workdir,
                .os_user = g ? g->os_user : NULL,
                .expiry_ms = x->expiry_ms,
                .options = opts,
                .n_options = k,
                .security_group = x->group,
                .policy = pol,
                .n_policy = npol,
        };
        e = tb_plugin_run_start(x->plugin->pi, &pr, x, &hr, err, sizeof(err));
failed:
        free(argv);
        free(opts);
        tb_plugin_policy_free(pol, npol);
        if (e != TB_OK) {
                tb_warn(TB_EXEC_SUB, "run %s (task %s): %s", x->run_id, x->task_id, err);
                pthread_mutex_lock(&ex->lock);
                tb_exec_finish_self_locked(ex, x, TB_PLUGIN_RUN_INFRA_ERROR, err);
                pthread_mutex_unlock(&ex->lock);
                return;
        }

        int64_t now = tb_now_ms();
        tb_metrics_add("taskbus_executor_runs_started_total", NULL, 1);
        double lag = (double)(now - x->nominal_ms) / 1000.0;
        tb_metrics_observe("taskbus_executor_start_lag_seconds", NULL, lag > 0 ? lag : 0);
        tb_exec_outcome_t o = {.status = "RUNNING", .started_ms = now,
                               .executor = x->executor_name};
        if (tb_exec_publish_result(ex, x->run_id, x->task_id, x->nominal_ms, x->attempt, &o,
                                   false, err, sizeof(err)) != TB_OK)
                tb_warn(TB_EXEC_SUB, "run %s: publishing RUNNING failed: %s", x->run_id, err);

        char why[256];
        bool cancel_now;
        pthread_mutex_lock(&ex->lock);
        x->hr = hr;
        x->started_ms = now;
        x->phase = TB_XR_RUNNING;
        x->start_returned = true;
        cancel_now = x->cancel_sent && !x->finished;
        snprintf(why, sizeof(why), "%s", x->cancel_reason);
        if (x->finished)
                tb_exec_enqueue_locked(ex, x);
        pthread_mutex_unlock(&ex->lock);
        tb_debug(TB_EXEC_SUB, "run %s (task %s) started, %.3f s after its nominal time",
                 x->run_id, x->task_id, lag);
        if (cancel_now && tb_plugin_run_cancel(hr, why, err, sizeof(err)) == TB_ERR_IO)
                tb_warn(TB_EXEC_SUB, "run %s: %s", x->run_id, err);
}

/* Stop \p x for \p reason, whatever its phase. */
static void tb_exec_cancel_local(tb_executor_t *ex, tb_xrun_t *x, const char *reason,
                                 bool shutdown) {
        char why[256], err[512];
        tb_plugin_hrun_t *hr = NULL;
        pthread_mutex_lock(&ex->lock);
        if (x->finished || x->cancel_sent || x->phase == TB_XR_RELEASED) {
                pthread_mutex_unlock(&ex->lock);
                return;
        }
        x->cancel_sent = true;
        x->shutdown_cancel = shutdown;
        snprintf(x->cancel_reason, sizeof(x->cancel_reason), "%s", reason);
        snprintf(why, sizeof(why), "%s", reason);
        if (x->phase == TB_XR_PENDING) {
                char msg[300];
                snprintf(msg, sizeof(msg), "cancelled before it started: %s", reason);
                tb_exec_finish_self_locked(ex, x, TB_PLUGIN_RUN_CANCELLED, msg);
        } else if (x->phase == TB_XR_RUNNING && x->hr) {
                hr = x->hr;
                tb_xrun_ref(x);
        }
        /* STARTING: the starter cancels it once tb_plugin_run_start() returns. */
        pthread_mutex_unlock(&ex->lock);
        if (!hr)
                return;
        tb_info(TB_EXEC_SUB, "cancelling run %s (task %s): %s", x->run_id, x->task_id, why);
        if (tb_plugin_run_cancel(hr, why, err, sizeof(err)) == TB_ERR_IO)
                tb_warn(TB_EXEC_SUB, "run %s: %s", x->run_id, err);
        tb_xrun_unref(x);
}

/* Take a reference on every linked run matching \p phase_mask (1 << phase);
 * *\p out is malloc'd. */
static size_t tb_exec_snapshot(tb_executor_t *ex, unsigned phase_mask, tb_xrun_t ***out) {
        pthread_mutex_lock(&ex->lock);
        size_t n = 0;
        for (tb_xrun_t *x = ex->runs; x; x = x->next)
                n++;
        tb_xrun_t **v = n ? malloc(n * sizeof(*v)) : NULL;
        size_t k = 0;
        for (tb_xrun_t *x = ex->runs; x && v; x = x->next) {
                if (!(phase_mask & (1u << x->phase)))
                        continue;
                tb_xrun_ref(x);
                v[k++] = x;
        }
        pthread_mutex_unlock(&ex->lock);
        *out = v;
        return k;
}

static void tb_exec_snapshot_free(tb_xrun_t **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                tb_xrun_unref(v[i]);
        free(v);
}

/* Unlink \p x (the list's reference is dropped by the caller). */
static void tb_exec_unlink(tb_executor_t *ex, tb_xrun_t *x) {
        pthread_mutex_lock(&ex->lock);
        for (tb_xrun_t **pp = &ex->runs; *pp; pp = &(*pp)->next) {
                if (*pp == x) {
                        *pp = x->next;
                        ex->n_active--;
                        break;
                }
        }
        tb_metrics_set("taskbus_executor_running", NULL, (double)ex->n_active);
        pthread_cond_broadcast(&ex->idle_cond);
        pthread_mutex_unlock(&ex->lock);
}

/* ---- finishing --------------------------------------------------------------------- */

static const char *tb_exec_status_symbol(int status) {
        switch (status) {
        case TB_PLUGIN_RUN_SUCCEEDED: return "SUCCEEDED";
        case TB_PLUGIN_RUN_TIMED_OUT: return "TIMED_OUT";
        case TB_PLUGIN_RUN_CANCELLED: return "CANCELLED";
        default: return "FAILED"; /* FAILED, and INFRA_ERROR with infra_error=true */
        }
}

static void tb_exec_mark_done(tb_executor_t *ex, tb_xrun_t *x, const char *status,
                              int64_t started_ms) {
        char err[1024], started[32];
        tb_exec_ms_text(started_ms, started);
        const char *params[] = {x->run_id, ex->id, status, started_ms ? started : NULL};
        for (int tries = 1;; tries++) {
                PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 5000);
                tb_err_t e = c ? tb_store_exec(c, "mark run claim done",
                                               "UPDATE run_claims SET state = 'done', "
                                               "status = $3, finished_at = now(), "
                                               "started_at = coalesce(started_at, "
                                               "to_timestamp($4::bigint / 1000.0)) "
                                               "WHERE run_id = $1 AND executor_id = $2 AND "
                                               "state = 'running'",
                                               4, params, NULL, err, sizeof(err))
                               : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                           "no PostgreSQL connection free within 5 s");
                if (c)
                        tb_store_release(ex->ctx->store, c);
                if (e == TB_OK)
                        return;
                tb_error(TB_EXEC_SUB, "run %s: marking its claim done failed (try %d): %s",
                         x->run_id, tries, err);
                if (atomic_load(&ex->stop_all) || tries >= 30)
                        return; /* the reaper will mark it LOST after its lease */
                sleep(1);
        }
}

static void tb_exec_finish(tb_executor_t *ex, tb_xrun_t *x) {
        pthread_mutex_lock(&x->lock);
        tb_exec_flush_locked(ex, x, true);
        int64_t out_total = x->out_total;
        pthread_mutex_unlock(&x->lock);

        pthread_mutex_lock(&ex->lock);
        tb_plugin_result_t res = x->res;
        char *error = x->res_error ? strdup(x->res_error) : NULL;
        bool shutdown = x->shutdown_cancel, lease_lost = x->lease_lost;
        int64_t started = x->res.started_ms ? x->res.started_ms : x->started_ms;
        pthread_mutex_unlock(&ex->lock);

        const char *status = tb_exec_status_symbol(res.status);
        bool infra = res.status == TB_PLUGIN_RUN_INFRA_ERROR;
        const char *msg = error;
        if (shutdown && res.status == TB_PLUGIN_RUN_CANCELLED)
                msg = "executor shutting down";
        tb_exec_outcome_t o = {
                .status = status,
                .has_exit = res.exit_code >= 0 && !infra,
                .exit_code = res.exit_code,
                .has_signal = res.signal > 0,
                .signal = res.signal,
                .started_ms = started,
                .finished_ms = res.finished_ms ? res.finished_ms : tb_now_ms(),
                .executor = x->executor_name,
                .output_bytes = out_total,
                .infra = infra,
                .error = msg,
        };
        if (lease_lost) {
                /* Another executor declared it LOST and published that. */
                tb_warn(TB_EXEC_SUB, "run %s ended %s after its claim was lost: result not "
                        "published (it was reported LOST)", x->run_id, status);
        } else {
                if (tb_exec_publish_result_retry(ex, x->run_id, x->task_id, x->nominal_ms,
                                                 x->attempt, &o))
                        tb_exec_mark_done(ex, x, status, started);
                char labels[64];
                snprintf(labels, sizeof(labels), "status=\"%s\"", status);
                for (char *p = labels; *p; p++)
                        *p = (char)tolower((unsigned char)*p);
                tb_metrics_add("taskbus_executor_runs_finished_total", labels, 1);
                tb_info(TB_EXEC_SUB, "run %s (task %s) %s%s%s", x->run_id, x->task_id, status,
                        msg ? ": " : "", msg ? msg : "");
        }
        free(error);
        tb_exec_unlink(ex, x);
        tb_xrun_unref(x);
}

static void *tb_exec_finisher_main(void *arg) {
        tb_executor_t *ex = arg;
        for (;;) {
                pthread_mutex_lock(&ex->lock);
                while (!ex->done_head && !atomic_load(&ex->stop_all))
                        pthread_cond_wait(&ex->done_cond, &ex->lock);
                tb_xrun_t *x = ex->done_head;
                if (x) {
                        ex->done_head = x->qnext;
                        if (!ex->done_head)
                                ex->done_tail = NULL;
                }
                pthread_mutex_unlock(&ex->lock);
                if (!x)
                        return NULL;
                tb_exec_finish(ex, x);
        }
}

/* ---- timer: held runs and output flushes ----------------------------------------- */

static void *tb_exec_timer_main(void *arg) {
        tb_executor_t *ex = arg;
        while (!atomic_load(&ex->stop_all)) {
                int64_t now = tb_now_ms();
                int64_t wait_ms = TB_EXEC_TICK_MS;
                tb_xrun_t **due = NULL;
                size_t ndue = 0, cap = 0;

                pthread_mutex_lock(&ex->lock);
                for (tb_xrun_t *x = ex->runs; x; x = x->next) {
                        if (x->phase != TB_XR_PENDING)
                                continue;
                        if (x->nominal_ms > now) {
                                if (x->nominal_ms - now < wait_ms)
                                        wait_ms = x->nominal_ms - now;
                                continue;
                        }
                        if (ndue == cap) {
                                size_t ncap = cap ? cap * 2 : 64;
                                tb_xrun_t **nd = realloc(due, ncap * sizeof(*nd));
                                if (!nd)
                                        break;
                                due = nd;
                                cap = ncap;
                        }
                        x->phase = TB_XR_STARTING;
                        tb_xrun_ref(x);
                        due[ndue++] = x;
                }
                pthread_mutex_unlock(&ex->lock);
                for (size_t i = 0; i < ndue; i++) {
                        tb_exec_start(ex, due[i]);
                        tb_xrun_unref(due[i]);
                }
                free(due);

                /* Output held too long goes out now. */
                tb_xrun_t **runs = NULL;
                size_t n = tb_exec_snapshot(ex, 1u << TB_XR_RUNNING, &runs);
                int64_t mono = tb_mono_us();
                for (size_t i = 0; i < n; i++) {
                        tb_xrun_t *x = runs[i];
                        pthread_mutex_lock(&x->lock);
                        if (x->buf.len &&
                            mono - x->buf_first_us >= (TB_EXEC_FLUSH_MS - TB_EXEC_TICK_MS) * 1000)
                                tb_exec_flush_locked(ex, x, false);
                        pthread_mutex_unlock(&x->lock);
                }
                tb_exec_snapshot_free(runs, n);
                rd_kafka_poll(ex->producer, 0);

                if (ndue)
                        continue; /* starting took time: look again at once */
                pthread_mutex_lock(&ex->lock);
                if (!atomic_load(&ex->stop_all))
                        tb_exec_cond_wait_ms(&ex->timer_cond, &ex->lock, wait_ms);
                pthread_mutex_unlock(&ex->lock);
        }
        return NULL;
}

/* ---- leases, cancellation requests, reaping --------------------------------------- */

static int tb_exec_cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Renew (\p renew) or just read this executor's running claims, and act on
 * their cancellation requests; with \p renew, runs whose claim is gone are
 * lease-lost. */
static void tb_exec_lease_pass(tb_executor_t *ex, bool renew) {
        char err[1024], lease[32];
        tb_xrun_t **runs = NULL;
        /* Snapshot first: a run linked after the query ran is not in its
         * answer but is not lost either. */
        size_t n = tb_exec_snapshot(ex, (1u << TB_XR_PENDING) | (1u << TB_XR_STARTING) |
                                                (1u << TB_XR_RUNNING),
                                    &runs);
        if (n == 0) {
                free(runs);
                return;
        }
        tb_exec_ms_text(ex->conf->exec_lease_ms, lease);
        const char *params[] = {ex->id, lease};
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        tb_err_t e;
        if (!c)
                e = tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT, "no PostgreSQL connection free");
        else if (renew)
                e = tb_store_exec(c, "renew leases",
                                  "UPDATE run_claims SET lease_until = now() + $2::bigint * "
                                  "interval '1 millisecond' WHERE executor_id = $1 AND state = "
                                  "'running' RETURNING run_id, cancel_requested, "
                                  "coalesce(cancel_reason, '')",
                                  2, params, &r, err, sizeof(err));
        else
                e = tb_store_exec(c, "poll cancel requests",
                                  "SELECT run_id, cancel_requested, coalesce(cancel_reason, '') "
                                  "FROM run_claims WHERE executor_id = $1 AND state = 'running' "
                                  "AND cancel_requested",
                                  1, params, &r, err, sizeof(err));
        if (c)
                tb_store_release(ex->ctx->store, c);
        if (e != TB_OK) {
                tb_warn(TB_EXEC_SUB, "%s", err);
                tb_exec_snapshot_free(runs, n);
                return;
        }
        int rows = PQntuples(r);
        const char **ids = rows ? malloc((size_t)rows * sizeof(char *)) : NULL;
        for (int i = 0; ids && i < rows; i++)
                ids[i] = PQgetvalue(r, i, 0);
        if (ids)
                qsort(ids, (size_t)rows, sizeof(char *), tb_exec_cmp_str);
        for (size_t i = 0; i < n; i++) {
                tb_xrun_t *x = runs[i];
                const char *key = x->run_id;
                const char **hit = ids ? bsearch(&key, ids, (size_t)rows, sizeof(char *),
                                                 tb_exec_cmp_str)
                                       : NULL;
                if (!hit && renew) {
                        pthread_mutex_lock(&ex->lock);
                        bool lost = !x->finished && x->phase != TB_XR_RELEASED;
                        if (lost)
                                x->lease_lost = true;
                        pthread_mutex_unlock(&ex->lock);
                        if (lost) {
                                tb_error(TB_EXEC_SUB, "run %s: this executor's claim on it is "
                                         "gone (lease expired and reaped?): stopping it",
                                         x->run_id);
                                tb_exec_cancel_local(ex, x, "the executor lost its claim on "
                                                     "the run (lease expired)", false);
                        }
                }
        }
        for (int i = 0; i < rows; i++) {
                if (strcmp(PQgetvalue(r, i, 1), "t"))
                        continue;
                const char *id = PQgetvalue(r, i, 0), *why = PQgetvalue(r, i, 2);
                for (size_t k = 0; k < n; k++)
                        if (!strcmp(runs[k]->run_id, id))
                                tb_exec_cancel_local(ex, runs[k],
                                                     *why ? why : "cancelled by request", false);
        }
        free(ids);
        PQclear(r);
        tb_exec_snapshot_free(runs, n);
}

/* Kill what is left on this host of lost run \p run_id: the shell plugin's
 * processes carry TASKBUS_RUN_ID in their environment and lead their own
 * process group. Needs the right to read /proc/PID/environ (root, or the
 * same user as the tasks). */
static int tb_exec_kill_orphans(const char *run_id) {
        char needle[TB_EXEC_ID_MAX + 32];
        int nlen = snprintf(needle, sizeof(needle), "TASKBUS_RUN_ID=%s", run_id);
        DIR *d = opendir("/proc");
        if (!d)
                return 0;
        int killed = 0;
        pid_t self_pgrp = getpgrp();
        char *env = malloc(256 * 1024);
        struct dirent *de;
        while (env && (de = readdir(d))) {
                if (!isdigit((unsigned char)de->d_name[0]))
                        continue;
                pid_t pid = (pid_t)atoi(de->d_name);
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t len = read(fd, env, 256 * 1024 - 1);
                close(fd);
                if (len <= 0)
                        continue;
                bool match = false;
                for (ssize_t off = 0; off < len && !match;) {
                        const char *entry = env + off;
                        size_t elen = strnlen(entry, (size_t)(len - off));
                        match = elen == (size_t)nlen && !memcmp(entry, needle, elen);
                        off += (ssize_t)elen + 1;
                }
                if (!match)
                        continue;
                pid_t pgid = getpgid(pid);
                if (pgid > 1 && pgid != self_pgrp)
                        kill(-pgid, SIGKILL);
                kill(pid, SIGKILL);
                killed++;
        }
        free(env);
        closedir(d);
        return killed;
}

/* Declare claims whose lease expired LOST (any executor's). */
static void tb_exec_reap(tb_executor_t *ex) {
        char err[1024];
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        if (!c)
                return;
        tb_err_t e = tb_store_begin(c, err, sizeof(err));
        if (!e)
                e = tb_store_exec(c, "find expired run claims",
                                  "SELECT run_id, task_id, executor_id, coalesce((extract(epoch "
                                  "FROM nominal_time) * 1000)::bigint, 0), attempt, executor, "
                                  "host FROM run_claims WHERE state = 'running' AND "
                                  "lease_until < now() ORDER BY lease_until LIMIT 100 "
                                  "FOR UPDATE SKIP LOCKED",
                                  0, NULL, &r, err, sizeof(err));
        int rows = e ? 0 : PQntuples(r);
        for (int i = 0; !e && i < rows; i++) {
                const char *run_id = PQgetvalue(r, i, 0), *task_id = PQgetvalue(r, i, 1);
                const char *owner = PQgetvalue(r, i, 2), *host = PQgetvalue(r, i, 6);
                char msg[600];
                snprintf(msg, sizeof(msg), "executor %s stopped renewing its lease", owner);
                tb_exec_outcome_t o = {
                        .status = "LOST",
                        .finished_ms = tb_now_ms(),
                        .executor = PQgetvalue(r, i, 5),
                        .error = msg,
                };
                e = tb_exec_publish_result(ex, run_id, task_id, strtoll(PQgetvalue(r, i, 3),
                                                                        NULL, 10),
                                           (int32_t)atoi(PQgetvalue(r, i, 4)), &o, true, err,
                                           sizeof(err));
                if (!e) {
                        const char *p[] = {run_id};
                        e = tb_store_exec(c, "mark run claim lost",
                                          "UPDATE run_claims SET state = 'done', status = "
                                          "'LOST', finished_at = now() WHERE run_id = $1",
                                          1, p, NULL, err, sizeof(err));
                }
                if (e)
                        break;
                int killed = !strcmp(host, ex->ctx->host) ? tb_exec_kill_orphans(run_id) : 0;
                tb_metrics_add("taskbus_executor_lost_total", NULL, 1);
                tb_warn(TB_EXEC_SUB, "run %s (task %s) LOST: %s%s", run_id, task_id, msg,
                        killed ? "; its processes left on this host were killed" : "");
        }
        PQclear(r);
        if (!e)
                e = tb_store_commit(c, err, sizeof(err));
        if (e) {
                tb_store_rollback(c);
                tb_warn(TB_EXEC_SUB, "reaping expired claims: %s", err);
        }
        tb_store_release(ex->ctx->store, c);
}

static void *tb_exec_lease_main(void *arg) {
        tb_executor_t *ex = arg;
        const int64_t lease = ex->conf->exec_lease_ms;
        int64_t now = tb_exec_mono_ms();
        int64_t next_renew = now + lease / 3, next_poll = now + TB_EXEC_CANCEL_POLL_MS;
        int64_t next_reap = now + 1000; /* runs of a predecessor that died: soon */
        for (;;) {
                pthread_mutex_lock(&ex->lock);
                while (!atomic_load(&ex->stop_all)) {
                        now = tb_exec_mono_ms();
                        int64_t next = next_renew < next_poll ? next_renew : next_poll;
                        if (next_reap < next)
                                next = next_reap;
                        if (now >= next)
                                break;
                        tb_exec_cond_wait_ms(&ex->lease_cond, &ex->lock, next - now);
                }
                pthread_mutex_unlock(&ex->lock);
                if (atomic_load(&ex->stop_all))
                        return NULL;
                now = tb_exec_mono_ms();
                if (now >= next_renew) {
                        tb_exec_lease_pass(ex, true);
                        next_renew = now + lease / 3;
                        next_poll = now + TB_EXEC_CANCEL_POLL_MS;
                } else if (now >= next_poll) {
                        tb_exec_lease_pass(ex, false);
                        next_poll = now + TB_EXEC_CANCEL_POLL_MS;
                }
                if (now >= next_reap) {
                        tb_exec_reap(ex);
                        next_reap = tb_exec_mono_ms() + lease / 2;
                }
        }
}

/* ---- consuming and claiming ----------------------------------------------------- */

/* Pull the RunRequest's fields into \p x (strings borrowed from x->req). */
static tb_err_t tb_exec_parse(tb_xrun_t *x, char *errstr, size_t errstr_size) {
        const json_t *req = x->req, *snap = json_object_get(req, "snapshot");
        x->run_id = tb_exec_str(req, "run_id");
        x->task_id = tb_exec_str(req, "task_id");
        x->nominal_ms = json_integer_value(json_object_get(req, "nominal_time"));
        x->attempt = (int32_t)json_integer_value(json_object_get(req, "attempt"));
        x->group = tb_exec_str(snap, "security_group");
        x->executor_name = tb_exec_str(snap, "executor");
        x->script = tb_exec_str(snap, "script");
        x->overlap = tb_exec_str(snap, "overlap");
        x->argv = json_object_get(snap, "argv");
        x->options = json_object_get(snap, "executor_options");
        x->expiry_ms = json_integer_value(json_object_get(snap, "expiry_ms"));
        if (!*x->run_id || strlen(x->run_id) > TB_EXEC_ID_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.run_id must be 1 to %d characters",
                                 TB_EXEC_ID_MAX);
        if (!*x->task_id || strlen(x->task_id) > TB_EXEC_ID_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.task_id must be 1 to %d characters",
                                 TB_EXEC_ID_MAX);
        if (x->expiry_ms < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.snapshot.expiry_ms must not be negative, got %"
                                 PRId64, x->expiry_ms);
        if (!*x->overlap)
                x->overlap = "FORBID";
        if (!strcasecmp(x->overlap, "FORBID"))
                x->overlap = "FORBID";
        else if (!strcasecmp(x->overlap, "ALLOW"))
                x->overlap = "ALLOW";
        else if (!strcasecmp(x->overlap, "REPLACE"))
                x->overlap = "REPLACE";
        else
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.snapshot.overlap '%s' is not one of FORBID, "
                                 "ALLOW, REPLACE", x->overlap);
        if (json_array_size(x->argv) == 0 && !*x->script)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.snapshot has neither a script nor argv");
        return TB_OK;
}

/* One record of a batch. */
typedef struct tb_exec_item {
        rd_kafka_message_t *msg;
        tb_xrun_t *x;      /* NULL once handled (DLQ) */
        char *outcome;     /* taskbus_claim_run()'s answer, malloc'd */
} tb_exec_item_t;

/* Decode and check a record; what cannot run goes to runs-dlq (x stays NULL).
 * @returns false if the DLQ could not be written (do not commit the offset). */
static bool tb_exec_prepare(tb_executor_t *ex, tb_exec_item_t *it) {
        char err[1024], derr[1024];
        const rd_kafka_message_t *m = it->msg;
        tb_xrun_t *x = tb_xrun_new(ex);
        const char *reason = NULL;
        if (!x) {
                tb_error(TB_EXEC_SUB, "out of memory");
                return false;
        }
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_RUN_REQUEST, NULL, &x->req, err,
                            sizeof(err)) != TB_OK)
                reason = "undecodable";
        else if (tb_exec_parse(x, err, sizeof(err)) != TB_OK)
                reason = "invalid";
        else if (!(x->plugin = tb_exec_plugin_find(ex, x->executor_name))) {
                size_t len = (size_t)snprintf(err, sizeof(err), "executor '%s' is not loaded "
                                              "on this executor; loaded:", x->executor_name);
                for (size_t i = 0; i < ex->plugin_cnt && len < sizeof(err); i++)
                        len += (size_t)snprintf(err + len, sizeof(err) - len, "%s %s",
                                                i ? "," : "", ex->plugins[i].name);
                reason = "unknown_executor";
        }
        if (!reason) {
                x->raw = malloc(m->len ? m->len : 1);
                if (!x->raw) {
                        tb_xrun_unref(x);
                        return false;
                }
                memcpy(x->raw, m->payload, m->len);
                x->raw_len = m->len;
                it->x = x;
                return true;
        }
        const char *key = x->req && *tb_exec_str(x->req, "task_id")
                                  ? tb_exec_str(x->req, "task_id")
                                  : NULL;
        tb_warn(TB_EXEC_SUB, "%s [%" PRId32 "] offset %" PRId64 " to runs-dlq (%s): %s",
                rd_kafka_topic_name(m->rkt), m->partition, m->offset, reason, err);
        bool ok = tb_exec_dlq(ex, m, key, reason, err, derr, sizeof(derr)) == TB_OK;
        if (!ok)
                tb_error(TB_EXEC_SUB, "writing to runs-dlq failed: %s", derr);
        /* A run we can name but not run also gets a result, so its task's
         * history shows why (an infrastructure error: retried by policy). */
        bool named = x->run_id && *x->run_id && strlen(x->run_id) <= TB_EXEC_ID_MAX &&
                     x->task_id && *x->task_id && strlen(x->task_id) <= TB_EXEC_ID_MAX;
        if (ok && named) {
                char msg[1200];
                snprintf(msg, sizeof(msg), "run not started: %s", err);
                tb_exec_outcome_t o = {.status = "FAILED", .finished_ms = tb_now_ms(),
                                       .executor = x->executor_name, .infra = true,
                                       .error = msg};
                if (tb_exec_publish_result(ex, x->run_id, x->task_id, x->nominal_ms,
                                           x->attempt, &o, true, derr, sizeof(derr)) != TB_OK)
                        tb_warn(TB_EXEC_SUB, "run %s: publishing its FAILED result: %s",
                                x->run_id, derr);
        }
        tb_xrun_unref(x);
        return ok;
}

/* Claim every prepared run of the batch in one transaction. @returns false
 * when it could not (PostgreSQL down) and we are stopping. */
static bool tb_exec_claim_batch(tb_executor_t *ex, tb_exec_item_t *items, size_t n) {
        char err[1024];
        bool any = false;
        for (size_t i = 0; i < n; i++)
                any |= items[i].x != NULL;
        if (!any)
                return true;
        for (int tries = 1;; tries++) {
                PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
                tb_err_t e = c ? tb_store_begin(c, err, sizeof(err))
                               : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                           "no PostgreSQL connection free within 2 s");
                for (size_t i = 0; !e && i < n; i++) {
                        tb_xrun_t *x = items[i].x;
                        if (!x)
                                continue;
                        char lease[32], nominal[32], attempt[16];
                        tb_exec_ms_text(ex->conf->exec_lease_ms, lease);
                        tb_exec_ms_text(x->nominal_ms, nominal);
                        snprintf(attempt, sizeof(attempt), "%d", (int)x->attempt);
                        const char *p[] = {x->run_id, x->task_id, ex->id, lease, nominal,
                                           attempt, x->executor_name, ex->ctx->host,
                                           x->overlap};
                        PGresult *r = NULL;
                        e = tb_store_exec(c, "claim run",
                                          "SELECT taskbus_claim_run($1, $2, $3, $4::bigint, "
                                          "$5::bigint, $6::int, $7, $8, $9)",
                                          9, p, &r, err, sizeof(err));
                        if (!e) {
                                free(items[i].outcome);
                                items[i].outcome = strdup(PQgetvalue(r, 0, 0));
                        }
                        PQclear(r);
                }
                if (!e)
                        e = tb_store_commit(c, err, sizeof(err));
                if (e && c)
                        tb_store_rollback(c);
                if (c)
                        tb_store_release(ex->ctx->store, c);
                if (!e)
                        return true;
                if (e != TB_ERR_CONFLICT || tries % 10 == 0)
                        tb_error(TB_EXEC_SUB, "claiming %zu run(s) failed (try %d): %s; "
                                 "retrying", n, tries, err);
                if (atomic_load(&ex->stop_consume))
                        return false;
                if (e != TB_ERR_CONFLICT)
                        usleep(500 * 1000);
        }
}

/* Act on a claim's outcome; takes over it->x. */
static void tb_exec_after_claim(tb_executor_t *ex, tb_exec_item_t *it) {
        tb_xrun_t *x = it->x;
        const char *outcome = it->outcome ? it->outcome : "";
        const char *others = strchr(outcome, ':');
        others = others ? others + 1 : "";
        it->x = NULL;
        if (!strcmp(outcome, "duplicate")) {
                tb_metrics_add("taskbus_executor_duplicates_total", NULL, 1);
                tb_info(TB_EXEC_SUB, "run %s (task %s) was claimed before: duplicate dropped "
                        "(taskbus_executor_duplicates_total=%.0f)", x->run_id, x->task_id,
                        tb_metrics_get("taskbus_executor_duplicates_total", NULL));
                tb_xrun_unref(x);
                return;
        }
        if (!strncmp(outcome, "skipped:", 8)) {
                char err[1024], msg[1024];
                snprintf(msg, sizeof(msg), "not started: the task's run %s is still running "
                         "(overlap policy FORBID)", others);
                tb_exec_outcome_t o = {.status = "SKIPPED_OVERLAP", .finished_ms = tb_now_ms(),
                                       .executor = x->executor_name, .error = msg};
                if (tb_exec_publish_result(ex, x->run_id, x->task_id, x->nominal_ms,
                                           x->attempt, &o, true, err, sizeof(err)) != TB_OK)
                        tb_error(TB_EXEC_SUB, "run %s: publishing SKIPPED_OVERLAP: %s",
                                 x->run_id, err);
                tb_metrics_add("taskbus_executor_runs_finished_total",
                               "status=\"skipped_overlap\"", 1);
                tb_info(TB_EXEC_SUB, "run %s (task %s) SKIPPED_OVERLAP: %s", x->run_id,
                        x->task_id, msg);
                tb_xrun_unref(x);
                return;
        }
        if (!strncmp(outcome, "replaced:", 9))
                tb_info(TB_EXEC_SUB, "run %s (task %s) replaces run(s) %s: cancellation "
                        "requested", x->run_id, x->task_id, others);

        int64_t ahead = x->nominal_ms - tb_now_ms();
        bool hold = ahead > 0 && ahead <= TB_EXEC_HOLD_MAX_MS;
        if (ahead > TB_EXEC_HOLD_MAX_MS)
                tb_warn(TB_EXEC_SUB, "run %s: nominal time is %" PRId64 " s ahead (clock "
                        "skew?): started now", x->run_id, ahead / 1000);
        pthread_mutex_lock(&ex->lock);
        x->phase = hold ? TB_XR_PENDING : TB_XR_STARTING;
        x->next = ex->runs;
        ex->runs = x;
        ex->n_active++;
        tb_metrics_set("taskbus_executor_running", NULL, (double)ex->n_active);
        if (hold)
                pthread_cond_signal(&ex->timer_cond);
        else
                tb_xrun_ref(x);
        pthread_mutex_unlock(&ex->lock);
        if (!hold) {
                tb_exec_start(ex, x);
                tb_xrun_unref(x);
        }
}

static void tb_exec_set_paused(tb_executor_t *ex, bool pause) {
        rd_kafka_topic_partition_list_t *parts = NULL;
        if (rd_kafka_assignment(ex->consumer, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return;
        rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (parts->cnt > 0)
                e = pause ? rd_kafka_pause_partitions(ex->consumer, parts)
                          : rd_kafka_resume_partitions(ex->consumer, parts);
        rd_kafka_topic_partition_list_destroy(parts);
        if (e)
                tb_warn(TB_EXEC_SUB, "%s partitions: %s", pause ? "pausing" : "resuming",
                        rd_kafka_err2str(e));
        ex->paused = pause;
        tb_debug(TB_EXEC_SUB, "consumer %s", pause ? "paused (executor.max_concurrent "
                 "runs active)" : "resumed");
}

/* Incremental (cooperative) assignment, keeping new partitions paused
 * while the executor is full. Runs on the consumer thread. */
static void tb_exec_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_executor_t *ex = opaque;
        bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
        rd_kafka_error_t *e = NULL;
        rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                tb_info(TB_EXEC_SUB, "assigned %d partition(s) of runs", parts->cnt);
                if (coop)
                        e = rd_kafka_incremental_assign(rk, parts);
                else
                        rerr = rd_kafka_assign(rk, parts);
                if (ex->paused && parts->cnt)
                        rd_kafka_pause_partitions(rk, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                tb_info(TB_EXEC_SUB, "revoked %d partition(s) of runs", parts->cnt);
                if (coop)
                        e = rd_kafka_incremental_unassign(rk, parts);
                else
                        rerr = rd_kafka_assign(rk, NULL);
        } else {
                tb_warn(TB_EXEC_SUB, "rebalance failed: %s", rd_kafka_err2str(err));
                if (!coop)
                        rerr = rd_kafka_assign(rk, NULL);
        }
        if (e) {
                tb_error(TB_EXEC_SUB, "incremental (un)assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        if (rerr)
                tb_error(TB_EXEC_SUB, "assign: %s", rd_kafka_err2str(rerr));
}

static void tb_exec_commit(tb_executor_t *ex, tb_exec_item_t *items, size_t n) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
        for (size_t i = 0; i < n; i++) {
                const rd_kafka_message_t *m = items[i].msg;
                const char *topic = rd_kafka_topic_name(m->rkt);
                rd_kafka_topic_partition_t *tp =
                        rd_kafka_topic_partition_list_find(l, topic, m->partition);
                if (!tp)
                        tp = rd_kafka_topic_partition_list_add(l, topic, m->partition);
                if (m->offset + 1 > tp->offset)
                        tp->offset = m->offset + 1;
        }
        rd_kafka_resp_err_t e = rd_kafka_commit(ex->consumer, l, 0);
        if (e)
                tb_warn(TB_EXEC_SUB, "committing offsets: %s (the runs are claimed: a "
                        "re-delivery is dropped as a duplicate)", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
}

static void tb_exec_process_batch(tb_executor_t *ex, tb_exec_item_t *items, size_t n) {
        size_t ok = 0;
        /* A record whose DLQ write failed stops the batch there: only what
         * precedes it may be committed. */
        for (; ok < n; ok++)
                if (!tb_exec_prepare(ex, &items[ok]))
                        break;
        if (ok < n)
                tb_error(TB_EXEC_SUB, "stopping the batch at offset %" PRId64 "; it will be "
                         "consumed again", items[ok].msg->offset);
        if (!tb_exec_claim_batch(ex, items, ok)) {
                tb_warn(TB_EXEC_SUB, "stopping with %zu unclaimed run(s): they stay in runs "
                        "for the next executor", ok);
                return;
        }
        if (ok)
                tb_exec_commit(ex, items, ok);
        for (size_t i = 0; i < ok; i++)
                if (items[i].x)
                        tb_exec_after_claim(ex, &items[i]);
        if (ok < n) {
                /* Consume the unhandled records again: rewind each partition
                 * to its first one. */
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
                for (size_t i = ok; i < n; i++) {
                        const rd_kafka_message_t *m = items[i].msg;
                        const char *topic = rd_kafka_topic_name(m->rkt);
                        if (!rd_kafka_topic_partition_list_find(l, topic, m->partition))
                                rd_kafka_topic_partition_list_add(l, topic, m->partition)
                                        ->offset = m->offset;
                }
                rd_kafka_error_t *e = rd_kafka_seek_partitions(ex->consumer, l, 5000);
                if (e) {
                        tb_error(TB_EXEC_SUB, "rewinding: %s", rd_kafka_error_string(e));
                        rd_kafka_error_destroy(e);
                }
                rd_kafka_topic_partition_list_destroy(l);
                sleep(1);
        }
}

static void *tb_exec_consumer_main(void *arg) {
        tb_executor_t *ex = arg;
        tb_exec_item_t items[TB_EXEC_BATCH];
        while (!atomic_load(&ex->stop_consume)) {
                pthread_mutex_lock(&ex->lock);
                size_t active = ex->n_active;
                pthread_mutex_unlock(&ex->lock);
                size_t max = (size_t)ex->conf->exec_max_concurrent;
                size_t room = active >= max ? 0 : max - active;
                if (!room && !ex->paused)
                        tb_exec_set_paused(ex, true);
                else if (room && ex->paused)
                        tb_exec_set_paused(ex, false);

                size_t n = 0, want = room < TB_EXEC_BATCH ? room : TB_EXEC_BATCH;
                if (want == 0)
                        want = 1; /* a message fetched before the pause is still handled */
                int timeout = 100;
                while (n < want) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(ex->consumer, timeout);
                        if (!m)
                                break;
                        if (m->err) {
                                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                        tb_warn(TB_EXEC_SUB, "consumer: %s",
                                                rd_kafka_message_errstr(m));
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        items[n++] = (tb_exec_item_t){.msg = m};
                        timeout = 0;
                }
                if (n)
                        tb_exec_process_batch(ex, items, n);
                for (size_t i = 0; i < n; i++) {
                        if (items[i].x)
                                tb_xrun_unref(items[i].x);
                        free(items[i].outcome);
                        rd_kafka_message_destroy(items[i].msg);
                }
        }
        tb_bus_consumer_destroy(ex->consumer, 10000);
        ex->consumer = NULL;
        return NULL;
}

/* ---- stopping ----------------------------------------------------------------------- */

/* Runs still waiting for their nominal time are handed back: the claim is
 * deleted and the RunRequest produced again onto runs, for the executor that
 * takes over the partition. */
static void tb_exec_release_pending(tb_executor_t *ex) {
        tb_xrun_t **runs = NULL;
        size_t n = tb_exec_snapshot(ex, 1u << TB_XR_PENDING, &runs);
        for (size_t i = 0; i < n; i++) {
                tb_xrun_t *x = runs[i];
                char err[1024];
                pthread_mutex_lock(&ex->lock);
                bool mine = x->phase == TB_XR_PENDING && !x->finished;
                if (mine)
                        x->phase = TB_XR_RELEASED;
                pthread_mutex_unlock(&ex->lock);
                if (!mine)
                        continue;
                const char *p[] = {x->run_id, ex->id};
                PGresult *r = NULL;
                PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 5000);
                tb_err_t e = c ? tb_store_exec(c, "release run claim",
                                               "DELETE FROM run_claims WHERE run_id = $1 AND "
                                               "executor_id = $2 AND state = 'running'",
                                               2, p, &r, err, sizeof(err))
                               : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                           "no PostgreSQL connection");
                bool deleted = !e && atoi(PQcmdTuples(r)) == 1;
                PQclear(r);
                if (c)
                        tb_store_release(ex->ctx->store, c);
                if (deleted)
                        e = tb_bus_produce(ex->producer, ex->conf, TB_TOPIC_RUNS,
                                           RD_KAFKA_PARTITION_UA, x->task_id, strlen(x->task_id),
                                           x->raw, x->raw_len, NULL, 0, true, err, sizeof(err));
                if (deleted && !e)
                        tb_info(TB_EXEC_SUB, "run %s (task %s) had not started: handed back "
                                "to runs", x->run_id, x->task_id);
                else
                        tb_error(TB_EXEC_SUB, "run %s (task %s) had not started and could not "
                                 "be handed back (%s): it will be reported LOST after its "
                                 "lease", x->run_id, x->task_id, e ? err : "claim not found");
                tb_exec_unlink(ex, x);
                tb_xrun_unref(x); /* the list's reference */
        }
        tb_exec_snapshot_free(runs, n);
}

/* Wait until no run is active or \p ms passed. @returns the active count. */
static size_t tb_exec_wait_idle(tb_executor_t *ex, int64_t ms) {
        int64_t until = tb_exec_mono_ms() + ms;
        pthread_mutex_lock(&ex->lock);
        while (ex->n_active > 0) {
                int64_t left = until - tb_exec_mono_ms();
                if (left <= 0)
                        break;
                tb_exec_cond_wait_ms(&ex->idle_cond, &ex->lock, left);
        }
        size_t n = ex->n_active;
        pthread_mutex_unlock(&ex->lock);
        return n;
}

static void tb_exec_destroy(tb_executor_t *ex) {
        atomic_store(&ex->stop_consume, true);
        if (ex->consumer_started)
                pthread_join(ex->consumer_thr, NULL);
        tb_bus_consumer_destroy(ex->consumer, 10000);
        if (ex->producer)
                tb_exec_release_pending(ex);

        size_t left = tb_exec_wait_idle(ex, ex->conf->exec_grace_ms);
        if (left) {
                tb_info(TB_EXEC_SUB, "%zu run(s) still running after executor.grace (%" PRId64
                        " ms): cancelling them", left, ex->conf->exec_grace_ms);
                tb_xrun_t **runs = NULL;
                size_t n = tb_exec_snapshot(ex, (1u << TB_XR_STARTING) | (1u << TB_XR_RUNNING),
                                            &runs);
                for (size_t i = 0; i < n; i++)
                        tb_exec_cancel_local(ex, runs[i], "executor shutting down", true);
                tb_exec_snapshot_free(runs, n);
                left = tb_exec_wait_idle(ex, ex->conf->exec_kill_grace_ms + 10000);
        }
        /* Unloading cancels what is left and reports runs a plugin never
         * finished as infra errors, through the finishers still running. */
        for (size_t i = 0; i < ex->plugin_cnt; i++)
                tb_plugin_unload(ex->plugins[i].pi, 5000);
        if (tb_exec_wait_idle(ex, 15000))
                tb_error(TB_EXEC_SUB, "runs still unreported at exit: the reaper of another "
                         "executor will report them LOST");

        pthread_mutex_lock(&ex->lock);
        atomic_store(&ex->stop_all, true);
        pthread_cond_broadcast(&ex->done_cond);
        pthread_cond_broadcast(&ex->timer_cond);
        pthread_cond_broadcast(&ex->lease_cond);
        pthread_mutex_unlock(&ex->lock);
        for (size_t i = 0; i < ex->finishers_started; i++)
                pthread_join(ex->finisher_thr[i], NULL);
        if (ex->timer_started)
                pthread_join(ex->timer_thr, NULL);
        if (ex->lease_started)
                pthread_join(ex->lease_thr, NULL);
        while (ex->runs) {
                tb_xrun_t *x = ex->runs;
                ex->runs = x->next;
                tb_xrun_unref(x);
        }
        if (ex->producer) {
                if (rd_kafka_flush(ex->producer, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
                        tb_warn(TB_EXEC_SUB, "%d record(s) not delivered at exit",
                                rd_kafka_outq_len(ex->producer));
                rd_kafka_destroy(ex->producer);
        }
        pthread_mutex_destroy(&ex->lock);
        pthread_cond_destroy(&ex->done_cond);
        pthread_cond_destroy(&ex->timer_cond);
        pthread_cond_destroy(&ex->lease_cond);
        pthread_cond_destroy(&ex->idle_cond);
        free(ex);
}

/* ---- the role ----------------------------------------------------------------------- */

static void tb_exec_describe_metrics(void) {
        tb_metrics_describe("taskbus_executor_runs_started_total", "counter",
                            "Runs started by this executor's plugins.");
        tb_metrics_describe("taskbus_executor_runs_finished_total", "counter",
                            "Runs finished, by final status.");
        tb_metrics_describe("taskbus_executor_duplicates_total", "counter",
                            "RunRequests dropped because their run id was claimed before.");
        tb_metrics_describe("taskbus_executor_start_lag_seconds", "histogram",
                            "Process start time minus the run's nominal time.");
        tb_metrics_describe("taskbus_executor_running", "gauge",
                            "Runs claimed by this executor and not finished.");
        tb_metrics_describe("taskbus_executor_lost_total", "counter",
                            "Runs declared LOST by this executor's reaper.");
        tb_metrics_describe("taskbus_executor_dlq_total", "counter",
                            "Records sent to runs-dlq.");
        tb_metrics_describe("taskbus_executor_log_chunks_dropped_total", "counter",
                            "Log chunks the producer refused.");
}

static tb_err_t tb_exec_role_start(tb_ctx_t *ctx, void **state, char *errstr,
                                   size_t errstr_size) {
        tb_err_t err;
        char group[300];
        unsigned char rnd[4];
        tb_executor_t *ex = calloc(1, sizeof(*ex));
        if (!ex)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        ex->ctx = ctx;
        ex->conf = ctx->conf;
        pthread_mutex_init(&ex->lock, NULL);
        tb_exec_cond_init(&ex->done_cond);
        tb_exec_cond_init(&ex->timer_cond);
        tb_exec_cond_init(&ex->lease_cond);
        tb_exec_cond_init(&ex->idle_cond);
        atomic_init(&ex->stop_consume, false);
        atomic_init(&ex->stop_all, false);
        /* The random part keeps a restarted process with the same host name
         * and pid (containers) from renewing its predecessor's claims. */
        tb_random_bytes(rnd, sizeof(rnd));
        snprintf(ex->id, sizeof(ex->id), "%s-%02x%02x%02x%02x", ctx->instance, rnd[0], rnd[1],
                 rnd[2], rnd[3]);
        tb_exec_describe_metrics();
        tb_metrics_set("taskbus_executor_running", NULL, 0);

        if ((err = tb_serde_init(errstr, errstr_size)) ||
            (err = tb_bus_producer_new(ex->conf, NULL, &ex->producer, errstr, errstr_size)) ||
            (err = tb_exec_load_plugins(ex, errstr, errstr_size)))
                goto fail;
        snprintf(group, sizeof(group), "%sexecutor", ex->conf->topic_prefix);
        const tb_topic_t topics[] = {TB_TOPIC_RUNS};
        tb_consumer_opts_t o = {
                .group_id = group,
                .read_committed = true,
                .auto_commit = false,
                .offset_reset = "earliest",
                .rebalance_cb = tb_exec_rebalance_cb,
                .opaque = ex,
                .session_timeout_ms = 10000,
        };
        if ((err = tb_bus_consumer_new(ex->conf, &o, topics, 1, &ex->consumer, errstr,
                                       errstr_size)))
                goto fail;

        for (; ex->finishers_started < TB_EXEC_FINISHERS; ex->finishers_started++)
                if (pthread_create(&ex->finisher_thr[ex->finishers_started], NULL,
                                   tb_exec_finisher_main, ex))
                        goto thread_fail;
        if (pthread_create(&ex->timer_thr, NULL, tb_exec_timer_main, ex))
                goto thread_fail;
        ex->timer_started = true;
        if (pthread_create(&ex->lease_thr, NULL, tb_exec_lease_main, ex))
                goto thread_fail;
        ex->lease_started = true;
        if (pthread_create(&ex->consumer_thr, NULL, tb_exec_consumer_main, ex))
                goto thread_fail;
        ex->consumer_started = true;
        tb_info(TB_EXEC_SUB, "executor %s consuming %sruns (group %s): %zu plugin(s), up to "
                "%" PRId64 " concurrent runs, lease %" PRId64 " ms", ex->id,
                ex->conf->topic_prefix, group, ex->plugin_cnt, ex->conf->exec_max_concurrent,
                ex->conf->exec_lease_ms);
        *state = ex;
        return TB_OK;
thread_fail:
        err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                        "executor: cannot start a thread: %s", strerror(errno));
fail:
        tb_exec_destroy(ex);
        return err;
}

static void tb_exec_role_stop(void *state) {
        if (state)
                tb_exec_destroy(state);
}

const tb_role_t tb_role_executor = {
        .name = "executor",
        .description = "claims and runs RunRequests through executor plugins",
        .start = tb_exec_role_start,
        .stop = tb_exec_role_stop,
};

/* ---- cancellation requests (API, projector, CLI) ------------------------------- */

tb_err_t tb_executor_request_cancel(PGconn *conn, const char *run_id, const char *reason,
                                    char *errstr, size_t errstr_size) {
        if (!run_id || !*run_id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cancel: a run id is required");
        const char *p[] = {run_id, reason && *reason ? reason : "cancelled by request"};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "request run cancellation",
                                   "UPDATE run_claims SET cancel_requested = true, "
                                   "cancel_reason = coalesce(cancel_reason, $2) "
                                   "WHERE run_id = $1 AND state = 'running'",
                                   2, p, &r, errstr, errstr_size);
        if (e)
                return e;
        bool hit = atoi(PQcmdTuples(r)) > 0;
        PQclear(r);
        if (!hit)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "run %s is not running (it finished, or no executor "
                                 "claimed it)", run_id);
        return TB_OK;
}

tb_err_t tb_executor_cancel_task_runs(PGconn *conn, const char *task_id, const char *reason,
                                      int *count, char *errstr, size_t errstr_size) {
        if (count)
                *count = 0;
        if (!task_id || !*task_id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cancel: a task id is required");
        const char *p[] = {task_id, reason && *reason ? reason : "cancelled by request"};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "request cancellation of a task's runs",
                                   "UPDATE run_claims SET cancel_requested = true, "
                                   "cancel_reason = coalesce(cancel_reason, $2) "
                                   "WHERE task_id = $1 AND state = 'running'",
                                   2, p, &r, errstr, errstr_size);
        if (e)
                return e;
        if (count)
                *count = atoi(PQcmdTuples(r));
        PQclear(r);
        return TB_OK;
}
