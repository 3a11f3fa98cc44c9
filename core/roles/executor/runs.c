/**
 * @file executor/runs.c
 * @brief A run's life in the executor: starting it on its plugin,
 *        cancelling it, the plugin sink that buffers its output, its log
 *        chunks and RunResults, and the finishers that report it.
 */
#include "executor/executor_internal.h"

#include "http/metrics.h"
#include "serde/serde.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- runs --------------------------------------------------------------------- */

tb_exec_run_t *tb_exec_run_new(tb_exec_t *ex) {
        tb_exec_run_t *x = calloc(1, sizeof(*x));
        if (!x)
                return NULL;
        x->ex = ex;
        atomic_init(&x->refs, 1);
        pthread_mutex_init(&x->lock, NULL);
        x->res.size = sizeof(x->res);
        x->res.exit_code = -1;
        return x;
}

void tb_exec_run_ref(tb_exec_run_t *x) { atomic_fetch_add(&x->refs, 1); }

void tb_exec_run_unref(tb_exec_run_t *x) {
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
static void tb_exec_run_enqueue_locked(tb_exec_t *ex, tb_exec_run_t *x) {
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
static void tb_exec_run_finish_self_locked(tb_exec_t *ex, tb_exec_run_t *x, int status,
                                           const char *error) {
        x->res.status = status;
        x->res.exit_code = -1;
        x->res.finished_ms = tb_now_ms();
        free(x->res_error);
        x->res_error = error ? strdup(error) : NULL;
        x->finished = true;
        x->start_returned = true;
        x->phase = TB_EXEC_RUNNING;
        tb_exec_run_enqueue_locked(ex, x);
}

/* ---- publishing ------------------------------------------------------------------ */

/* A RunResult record for the run, Avro-encoded into \p out. */
static tb_err_t tb_exec_result_encode(tb_exec_t *ex, const char *run_id, const char *task_id,
                                      int64_t nominal_ms, int32_t attempt,
                                      const tb_exec_outcome_t *o, tb_buf_t *out, char *errstr,
                                      size_t errstr_size) {
        json_t *v = json_object();
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
        json_object_set_new(v, "params",
                            json_is_object(o->params) ? json_deep_copy(o->params) : json_object());
        tb_err_t err = tb_serde_encode(TB_SCHEMA_RUN_RESULT, v, out, errstr, errstr_size);
        json_decref(v);
        return err;
}

tb_err_t tb_exec_publish_result(tb_exec_t *ex, const char *run_id,
                                const char *task_id, int64_t nominal_ms,
                                int32_t attempt, const tb_exec_outcome_t *o, bool sync,
                                char *errstr, size_t errstr_size) {
        tb_buf_t out = {0};
        tb_err_t err = tb_exec_result_encode(ex, run_id, task_id, nominal_ms, attempt, o, &out,
                                             errstr, errstr_size);
        if (err == TB_OK) {
                err = tb_bus_produce(tb_bus_rprod_get(ex->producer), ex->conf, TB_TOPIC_RESULTS,
                                     RD_KAFKA_PARTITION_UA, task_id, strlen(task_id), out.data,
                                     out.len, NULL, 0, sync, errstr, errstr_size);
                tb_bus_rprod_put(ex->producer);
        }
        tb_buf_free(&out);
        return err;
}

/* Publish a RunResult synchronously, retrying while Kafka refuses (a result
 * must not be lost); gives up only when stopping and after ~30 s. */
static bool tb_exec_publish_result_retry(tb_exec_t *ex, const char *run_id,
                                         const char *task_id, int64_t nominal_ms,
                                         int32_t attempt, const tb_exec_outcome_t *o) {
        char err[1024];
        for (int tries = 1;; tries++) {
                if (tb_exec_publish_result(ex, run_id, task_id, nominal_ms, attempt, o, true,
                                           err, sizeof(err)) == TB_OK)
                        return true;
                tb_error(TB_EXEC_SUB, "run %s: publishing its %s result failed (try %d): %s",
                         run_id, o->status, tries, err);
                if (tb_bus_rprod_recover(ex->producer))
                        continue; /* a new producer: at once */
                if (atomic_load(&ex->stop_all) && tries >= 30)
                        return false;
                sleep(1);
        }
}

static const char *tb_exec_log_stream_name(int stream) {
        return stream == TB_PLUGIN_STDOUT   ? "STDOUT"
               : stream == TB_PLUGIN_STDERR ? "STDERR"
                                            : "SYSTEM";
}

/* One LogChunk. Caller holds x->lock (which orders the run's chunks). A
 * chunk Kafka does not take is counted and its gap marked (logloss.c). */
static void tb_exec_log_chunk_locked(tb_exec_t *ex, tb_exec_run_t *x, const char *stream,
                                     const void *data, size_t len, bool eof) {
        char err[1024];
        if (tb_exec_log_produce(ex, x->run_id, x->task_id, x->seq, stream, data, len, eof, 0, 0,
                                err, sizeof(err)) != TB_OK)
                tb_debug(TB_EXEC_SUB, "run %s: log chunk %" PRId64 ": %s", x->run_id, x->seq,
                         err);
        x->seq++; /* a gap in seq tells readers a chunk is missing */
}

/* Publish what is buffered, in chunks of at most TB_EXEC_CHUNK_MAX; with
 * \p eof the last chunk says so (an empty SYSTEM chunk if nothing is left). */
void tb_exec_log_flush_locked(tb_exec_t *ex, tb_exec_run_t *x, bool eof) {
        if (x->buf.len == 0) {
                if (eof)
                        tb_exec_log_chunk_locked(ex, x, "SYSTEM", "", 0, true);
                return;
        }
        const char *stream = tb_exec_log_stream_name(x->buf_stream);
        for (size_t off = 0; off < x->buf.len;) {
                size_t n = x->buf.len - off;
                if (n > TB_EXEC_CHUNK_MAX)
                        n = TB_EXEC_CHUNK_MAX;
                tb_exec_log_chunk_locked(ex, x, stream, x->buf.data + off, n,
                                         eof && off + n == x->buf.len);
                off += n;
        }
        x->buf.len = 0;
}

/* ---- plugin sink ------------------------------------------------------------------- */

void tb_exec_sink_output(void *opaque, void *run_opaque, int stream, const void *data,
                         size_t len) {
        tb_exec_t *ex = opaque;
        tb_exec_run_t *x = run_opaque;
        const int64_t cap = ex->conf->exec_output_cap;

        pthread_mutex_lock(&x->lock);
        x->out_total += (int64_t)len;
        if (!x->truncated) {
                size_t room = x->out_kept >= cap ? 0 : (size_t)(cap - x->out_kept);
                size_t take = len < room ? len : room;
                if (x->buf.len && x->buf_stream != stream)
                        tb_exec_log_flush_locked(ex, x, false);
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
                        tb_exec_log_flush_locked(ex, x, false);
                if (take < len) {
                        char marker[128];
                        int n = snprintf(marker, sizeof(marker),
                                         "[taskbus: output truncated after %" PRId64 " bytes]",
                                         x->out_kept);
                        tb_exec_log_flush_locked(ex, x, false);
                        tb_exec_log_chunk_locked(ex, x, "SYSTEM", marker, (size_t)n, false);
                        x->truncated = true;
                }
        }
        pthread_mutex_unlock(&x->lock);
}

void tb_exec_sink_finished(void *opaque, void *run_opaque, const tb_plugin_result_t *res) {
        tb_exec_t *ex = opaque;
        tb_exec_run_t *x = run_opaque;
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
                tb_exec_run_enqueue_locked(ex, x);
        pthread_mutex_unlock(&ex->lock);
}

/* ---- starting and cancelling ------------------------------------------------------ */

void tb_exec_run_queue_start_locked(tb_exec_t *ex, tb_exec_run_t *x) {
        tb_exec_run_ref(x);
        x->snext = NULL;
        if (ex->start_tail)
                ex->start_tail->snext = x;
        else
                ex->start_head = x;
        ex->start_tail = x;
        pthread_cond_signal(&ex->start_cond);
}

void *tb_exec_starter_main(void *arg) {
        tb_exec_t *ex = arg;
        for (;;) {
                pthread_mutex_lock(&ex->lock);
                while (!ex->start_head && !ex->stop_starts)
                        pthread_cond_wait(&ex->start_cond, &ex->lock);
                tb_exec_run_t *x = ex->start_head;
                if (x) {
                        ex->start_head = x->snext;
                        if (!ex->start_head)
                                ex->start_tail = NULL;
                        x->snext = NULL;
                }
                pthread_mutex_unlock(&ex->lock);
                if (!x)
                        return NULL;
                tb_exec_run_start(ex, x);
                tb_exec_run_unref(x); /* the queue's */
        }
}

/* Start \p x (phase STARTING, set by the caller). Caller holds a reference. */
void tb_exec_run_start(tb_exec_t *ex, tb_exec_run_t *x) {
        char err[1024];
        /* Cancelled while it waited for a starter: it never starts. */
        pthread_mutex_lock(&ex->lock);
        if (x->cancel_sent && !x->finished) {
                char msg[300];
                snprintf(msg, sizeof(msg), "cancelled before it started: %s", x->cancel_reason);
                tb_exec_run_finish_self_locked(ex, x, TB_PLUGIN_RUN_CANCELLED, msg);
                pthread_mutex_unlock(&ex->lock);
                return;
        }
        pthread_mutex_unlock(&ex->lock);
        const tb_group_conf_t *g = tb_config_group_policy(ex->conf, x->group);
        size_t argc = json_array_size(x->argv), optc = json_object_size(x->options);
        size_t envc = json_object_size(x->params);
        const char **argv = calloc(argc + 1, sizeof(char *));
        tb_plugin_kv_t *opts = calloc(optc + 1, sizeof(*opts));
        /* the run's parameters: environment variables of their names */
        tb_plugin_kv_t *env = calloc(envc + 1, sizeof(*env));
        tb_plugin_kv_t *pol = NULL;
        size_t npol = 0;
        tb_plugin_hrun_t *hr = NULL;
        tb_err_t e;

        if (!argv || !opts || !env) {
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
        size_t n_env = 0;
        json_object_foreach(x->params, key, val) {
                env[n_env].key = key;
                env[n_env++].value = json_string_value(val);
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
                .env = env,
                .n_env = n_env,
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
        free(env);
        tb_plugin_policy_free(pol, npol);
        if (e != TB_OK) {
                tb_warn(TB_EXEC_SUB, "run %s (task %s): %s", x->run_id, x->task_id, err);
                pthread_mutex_lock(&ex->lock);
                tb_exec_run_finish_self_locked(ex, x, TB_PLUGIN_RUN_INFRA_ERROR, err);
                pthread_mutex_unlock(&ex->lock);
                return;
        }

        int64_t now = tb_now_ms();
        tb_metrics_add("taskbus_executor_runs_started_total", NULL, 1);
        double lag = (double)(now - x->nominal_ms) / 1000.0;
        tb_metrics_observe("taskbus_executor_start_lag_seconds", NULL, lag > 0 ? lag : 0);
        tb_exec_outcome_t o = {.status = "RUNNING", .started_ms = now,
                               .executor = x->executor_name, .params = x->params};
        if (tb_exec_publish_result(ex, x->run_id, x->task_id, x->nominal_ms, x->attempt, &o,
                                   false, err, sizeof(err)) != TB_OK)
                tb_warn(TB_EXEC_SUB, "run %s: publishing RUNNING failed: %s", x->run_id, err);

        char why[256];
        bool cancel_now;
        pthread_mutex_lock(&ex->lock);
        x->hr = hr;
        x->started_ms = now;
        x->phase = TB_EXEC_RUNNING;
        x->start_returned = true;
        cancel_now = x->cancel_sent && !x->finished;
        snprintf(why, sizeof(why), "%s", x->cancel_reason);
        if (x->finished)
                tb_exec_run_enqueue_locked(ex, x);
        pthread_mutex_unlock(&ex->lock);
        tb_debug(TB_EXEC_SUB, "run %s (task %s) started, %.3f s after its nominal time",
                 x->run_id, x->task_id, lag);
        if (cancel_now && tb_plugin_run_cancel(hr, why, err, sizeof(err)) == TB_ERR_IO)
                tb_warn(TB_EXEC_SUB, "run %s: %s", x->run_id, err);
}

/* Stop \p x for \p reason, whatever its phase. */
void tb_exec_run_cancel(tb_exec_t *ex, tb_exec_run_t *x, const char *reason,
                        bool shutdown) {
        char why[256], err[512];
        tb_plugin_hrun_t *hr = NULL;
        pthread_mutex_lock(&ex->lock);
        if (x->finished || x->cancel_sent || x->phase == TB_EXEC_RELEASED) {
                pthread_mutex_unlock(&ex->lock);
                return;
        }
        x->cancel_sent = true;
        x->shutdown_cancel = shutdown;
        snprintf(x->cancel_reason, sizeof(x->cancel_reason), "%s", reason);
        snprintf(why, sizeof(why), "%s", reason);
        if (x->phase == TB_EXEC_PENDING) {
                char msg[300];
                snprintf(msg, sizeof(msg), "cancelled before it started: %s", reason);
                tb_exec_run_finish_self_locked(ex, x, TB_PLUGIN_RUN_CANCELLED, msg);
        } else if (x->phase == TB_EXEC_RUNNING && x->hr) {
                hr = x->hr;
                tb_exec_run_ref(x);
        }
        /* STARTING: the starter cancels it once tb_plugin_run_start() returns. */
        pthread_mutex_unlock(&ex->lock);
        if (!hr)
                return;
        tb_info(TB_EXEC_SUB, "cancelling run %s (task %s): %s", x->run_id, x->task_id, why);
        if (tb_plugin_run_cancel(hr, why, err, sizeof(err)) == TB_ERR_IO)
                tb_warn(TB_EXEC_SUB, "run %s: %s", x->run_id, err);
        tb_exec_run_unref(x);
}

/* Take a reference on every linked run matching \p phase_mask (1 << phase);
 * *\p out is malloc'd. */
size_t tb_exec_runs_snapshot(tb_exec_t *ex, unsigned phase_mask, tb_exec_run_t ***out) {
        pthread_mutex_lock(&ex->lock);
        size_t n = 0;
        for (tb_exec_run_t *x = ex->runs; x; x = x->next)
                n++;
        tb_exec_run_t **v = n ? malloc(n * sizeof(*v)) : NULL;
        size_t k = 0;
        for (tb_exec_run_t *x = ex->runs; x && v; x = x->next) {
                if (!(phase_mask & (1u << x->phase)))
                        continue;
                tb_exec_run_ref(x);
                v[k++] = x;
        }
        pthread_mutex_unlock(&ex->lock);
        *out = v;
        return k;
}

void tb_exec_runs_snapshot_free(tb_exec_run_t **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                tb_exec_run_unref(v[i]);
        free(v);
}

/* Unlink \p x (the list's reference is dropped by the caller). */
void tb_exec_run_unlink(tb_exec_t *ex, tb_exec_run_t *x) {
        pthread_mutex_lock(&ex->lock);
        for (tb_exec_run_t **pp = &ex->runs; *pp; pp = &(*pp)->next) {
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

static void tb_exec_claim_mark_done(tb_exec_t *ex, tb_exec_run_t *x, const char *status,
                                    int64_t started_ms) {
        char err[1024];
        for (int tries = 1;; tries++) {
                PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 5000);
                tb_err_t e = c ? tb_store_claims_finish(c, x->run_id, ex->id, status, started_ms,
                                                        err, sizeof(err))
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

/* One ended run of a finisher's batch. */
typedef struct tb_exec_fin {
        tb_exec_run_t *x;
        tb_exec_outcome_t o;
        char *error;            /* o.error points here (or at a constant) */
        bool lease_lost;
        bool queued;            /* its RunResult is in flight (dr) */
        bool published;
        tb_bus_dr_t dr;
} tb_exec_fin_t;

/* Encode \p f's RunResult and hand it to \p rk without waiting. */
static tb_err_t tb_exec_fin_produce(tb_exec_t *ex, rd_kafka_t *rk, tb_exec_fin_t *f,
                                    char *errstr, size_t errstr_size) {
        tb_exec_run_t *x = f->x;
        tb_buf_t out = {0};
        tb_err_t err = tb_exec_result_encode(ex, x->run_id, x->task_id, x->nominal_ms,
                                             x->attempt, &f->o, &out, errstr, errstr_size);
        if (err == TB_OK)
                err = tb_bus_produce_tracked(rk, ex->conf, TB_TOPIC_RESULTS,
                                             RD_KAFKA_PARTITION_UA, x->task_id,
                                             strlen(x->task_id), out.data, out.len, &f->dr,
                                             errstr, errstr_size);
        tb_buf_free(&out);
        return err;
}

/* The outcome of \p x as its RunResult says it, into \p f. */
static void tb_exec_fin_prepare(tb_exec_t *ex, tb_exec_run_t *x, tb_exec_fin_t *f) {
        pthread_mutex_lock(&x->lock);
        tb_exec_log_flush_locked(ex, x, true);
        int64_t out_total = x->out_total;
        pthread_mutex_unlock(&x->lock);

        pthread_mutex_lock(&ex->lock);
        tb_plugin_result_t res = x->res;
        f->x = x;
        f->error = x->res_error ? strdup(x->res_error) : NULL;
        bool shutdown = x->shutdown_cancel;
        f->lease_lost = x->lease_lost;
        int64_t started = x->res.started_ms ? x->res.started_ms : x->started_ms;
        pthread_mutex_unlock(&ex->lock);

        bool infra = res.status == TB_PLUGIN_RUN_INFRA_ERROR;
        const char *msg = f->error;
        if (shutdown && res.status == TB_PLUGIN_RUN_CANCELLED)
                msg = "executor shutting down";
        f->o = (tb_exec_outcome_t){
                .status = tb_exec_status_symbol(res.status),
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
                .params = x->params,
        };
}

/* Mark the claims of the published runs of \p f done, in one transaction;
 * @returns false if that failed (the caller marks them one by one). */
static bool tb_exec_fin_mark_done(tb_exec_t *ex, tb_exec_fin_t *f, size_t n) {
        char err[1024];
        size_t todo = 0;
        for (size_t i = 0; i < n; i++)
                todo += f[i].published;
        if (!todo)
                return true;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 5000);
        tb_err_t e = c ? tb_store_begin(c, err, sizeof(err))
                       : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                   "no PostgreSQL connection free within 5 s");
        for (size_t i = 0; !e && i < n; i++)
                if (f[i].published)
                        e = tb_store_claims_finish(c, f[i].x->run_id, ex->id, f[i].o.status,
                                                   f[i].o.started_ms, err, sizeof(err));
        if (!e)
                e = tb_store_commit(c, err, sizeof(err));
        if (e && c)
                tb_store_rollback(c);
        if (c)
                tb_store_release(ex->ctx->store, c);
        if (e)
                tb_warn(TB_EXEC_SUB, "marking %zu claim(s) done in one transaction failed: %s; "
                        "marking them one by one", todo, err);
        return !e;
}

/* Report the ended runs \p runs: their last output chunks, their RunResults
 * (all in flight at once, then each delivery confirmed: one round trip for
 * the batch, not one per run), then their claims marked done in one
 * transaction. A result Kafka refused is retried on its own, as before. */
static void tb_exec_runs_finish(tb_exec_t *ex, tb_exec_run_t **runs, size_t n) {
        char err[1024];
        tb_exec_fin_t *f = calloc(n, sizeof(*f));
        if (!f) {
                tb_error(TB_EXEC_SUB, "out of memory reporting %zu run(s): retrying", n);
                pthread_mutex_lock(&ex->lock);
                for (size_t i = 0; i < n; i++) {
                        runs[i]->queued = false;
                        tb_exec_run_enqueue_locked(ex, runs[i]);
                }
                pthread_mutex_unlock(&ex->lock);
                sleep(1);
                return;
        }
        for (size_t i = 0; i < n; i++)
                tb_exec_fin_prepare(ex, runs[i], &f[i]);
        /* one handle for the batch: the reports waited for are its own */
        rd_kafka_t *rk = tb_bus_rprod_get(ex->producer);
        for (size_t i = 0; i < n; i++) {
                if (f[i].lease_lost)
                        continue;
                if (tb_exec_fin_produce(ex, rk, &f[i], err, sizeof(err)) == TB_OK)
                        f[i].queued = true;
                else
                        tb_warn(TB_EXEC_SUB, "run %s: producing its %s result: %s; retrying",
                                f[i].x->run_id, f[i].o.status, err);
        }
        for (size_t i = 0; i < n; i++) {
                if (f[i].lease_lost)
                        continue;
                if (f[i].queued &&
                    tb_bus_dr_wait(rk, ex->conf, &f[i].dr, err, sizeof(err)) == TB_OK) {
                        f[i].published = true;
                        continue;
                }
                if (f[i].queued)
                        tb_warn(TB_EXEC_SUB, "run %s: delivering its %s result: %s; retrying",
                                f[i].x->run_id, f[i].o.status, err);
        }
        tb_bus_rprod_put(ex->producer);
        /* the refused ones on their own (a fatal producer is replaced there) */
        for (size_t i = 0; i < n; i++) {
                if (f[i].lease_lost || f[i].published)
                        continue;
                tb_exec_run_t *x = f[i].x;
                f[i].published = tb_exec_publish_result_retry(ex, x->run_id, x->task_id,
                                                              x->nominal_ms, x->attempt,
                                                              &f[i].o);
        }
        if (!tb_exec_fin_mark_done(ex, f, n))
                for (size_t i = 0; i < n; i++)
                        if (f[i].published)
                                tb_exec_claim_mark_done(ex, f[i].x, f[i].o.status,
                                                        f[i].o.started_ms);
        for (size_t i = 0; i < n; i++) {
                tb_exec_run_t *x = f[i].x;
                const char *status = f[i].o.status, *msg = f[i].o.error;
                if (f[i].lease_lost) {
                        /* Another executor declared it LOST and published that. */
                        tb_warn(TB_EXEC_SUB, "run %s ended %s after its claim was lost: "
                                "result not published (it was reported LOST)", x->run_id,
                                status);
                } else {
                        char labels[64];
                        snprintf(labels, sizeof(labels), "status=\"%s\"", status);
                        for (char *p = labels; *p; p++)
                                *p = (char)tolower((unsigned char)*p);
                        tb_metrics_add("taskbus_executor_runs_finished_total", labels, 1);
                        tb_info(TB_EXEC_SUB, "run %s (task %s) %s%s%s", x->run_id, x->task_id,
                                status, msg ? ": " : "", msg ? msg : "");
                }
                free(f[i].error);
                tb_exec_run_unlink(ex, x);
                tb_exec_run_unref(x);
        }
        free(f);
}

void *tb_exec_finisher_main(void *arg) {
        tb_exec_t *ex = arg;
        tb_exec_run_t *batch[TB_EXEC_RESULT_BATCH];
        for (;;) {
                size_t n = 0;
                pthread_mutex_lock(&ex->lock);
                while (!ex->done_head && !atomic_load(&ex->stop_all))
                        pthread_cond_wait(&ex->done_cond, &ex->lock);
                /* whatever ended meanwhile goes in one batch */
                while (ex->done_head && n < TB_EXEC_RESULT_BATCH) {
                        tb_exec_run_t *x = ex->done_head;
                        ex->done_head = x->qnext;
                        if (!ex->done_head)
                                ex->done_tail = NULL;
                        batch[n++] = x;
                }
                pthread_mutex_unlock(&ex->lock);
                if (!n)
                        return NULL;
                tb_exec_runs_finish(ex, batch, n);
        }
}
