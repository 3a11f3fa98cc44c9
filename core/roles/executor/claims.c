/**
 * @file executor/claims.c
 * @brief Consuming `runs` and claiming each run in PostgreSQL before it
 *        starts, delivering the results decided at claim time before the
 *        offset; the timer that starts held runs at their nominal time;
 *        recording runs nobody claimed as LOST; and handing held runs back at
 *        shutdown.
 */
#include "executor/executor_internal.h"

#include "bus/pgsink.h"
#include "http/metrics.h"
#include "schedule/schedule.h"
#include "serde/serde.h"
#include "units.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- timer: held runs and output flushes ----------------------------------------- */

void *tb_exec_timer_main(void *arg) {
        tb_exec_t *ex = arg;
        while (!atomic_load(&ex->stop_all)) {
                int64_t now = tb_now_ms();
                int64_t wait_ms = TB_EXEC_TICK_MS;

                /* Due runs go to the starters: the timer never waits for a
                 * process to start. */
                pthread_mutex_lock(&ex->lock);
                for (tb_exec_run_t *x = ex->runs; x; x = x->next) {
                        if (x->phase != TB_EXEC_PENDING)
                                continue;
                        if (x->nominal_ms > now) {
                                if (x->nominal_ms - now < wait_ms)
                                        wait_ms = x->nominal_ms - now;
                                continue;
                        }
                        x->phase = TB_EXEC_STARTING;
                        tb_exec_run_queue_start_locked(ex, x);
                }
                pthread_mutex_unlock(&ex->lock);

                /* Output held too long goes out now. */
                tb_exec_run_t **runs = NULL;
                size_t n = tb_exec_runs_snapshot(ex, 1u << TB_EXEC_RUNNING, &runs);
                int64_t mono = tb_mono_us();
                for (size_t i = 0; i < n; i++) {
                        tb_exec_run_t *x = runs[i];
                        pthread_mutex_lock(&x->lock);
                        if (x->buf.len &&
                            mono - x->buf_first_us >= (TB_EXEC_FLUSH_MS - TB_EXEC_TICK_MS) * 1000)
                                tb_exec_log_flush_locked(ex, x, false);
                        pthread_mutex_unlock(&x->lock);
                }
                tb_exec_runs_snapshot_free(runs, n);
                rd_kafka_poll(tb_bus_rprod_get(ex->producer), 0);
                tb_bus_rprod_put(ex->producer);
                rd_kafka_poll(tb_bus_rprod_get(ex->log_producer), 0);
                tb_bus_rprod_put(ex->log_producer);
                tb_bus_rprod_recover(ex->producer);
                tb_bus_rprod_recover(ex->log_producer);
                tb_exec_log_loss_tick(ex, false);

                pthread_mutex_lock(&ex->lock);
                if (!atomic_load(&ex->stop_all))
                        tb_exec_cond_wait_ms(&ex->timer_cond, &ex->lock, wait_ms);
                pthread_mutex_unlock(&ex->lock);
        }
        return NULL;
}


/* Hand a record that cannot be run to runs-dlq, with its reason. */
static tb_err_t tb_exec_dlq(tb_exec_t *ex, const rd_kafka_message_t *m, const char *key,
                            const char *reason, const char *error, char *errstr,
                            size_t errstr_size) {
        tb_header_t h[2] = {
                {"reason", reason, strlen(reason)},
                {"error", error, strlen(error)},
        };
        const void *k = key ? (const void *)key : m->key;
        size_t klen = key ? strlen(key) : m->key_len;
        tb_metrics_add("taskbus_executor_dlq_total", NULL, 1);
        tb_err_t err = tb_bus_produce(tb_bus_rprod_get(ex->producer), ex->conf, TB_TOPIC_DLQ,
                                      RD_KAFKA_PARTITION_UA, k, klen, m->payload, m->len, h, 2,
                                      true, errstr, errstr_size);
        tb_bus_rprod_put(ex->producer);
        if (err)
                tb_bus_rprod_recover(ex->producer);
        return err;
}

/* ---- consuming and claiming ----------------------------------------------------- */

/* The first string of the RunRequest the executor uses that holds a NUL
 * (C strings would cut it short), or NULL. */
static const char *tb_exec_request_nul(const json_t *req) {
        static const char *const top[] = {"run_id", "task_id"};
        static const char *const snap_keys[][2] = {
                {"security_group", "snapshot.security_group"},
                {"executor", "snapshot.executor"},
                {"script", "snapshot.script"},
                {"overlap", "snapshot.overlap"},
        };
        const json_t *snap = json_object_get(req, "snapshot"), *v;
        const char *k;
        size_t i;
        for (i = 0; i < TB_ARRAY_LEN(top); i++)
                if ((v = json_object_get(req, top[i])) && json_is_string(v) &&
                    strlen(json_string_value(v)) != json_string_length(v))
                        return top[i];
        for (i = 0; i < TB_ARRAY_LEN(snap_keys); i++)
                if ((v = json_object_get(snap, snap_keys[i][0])) && json_is_string(v) &&
                    strlen(json_string_value(v)) != json_string_length(v))
                        return snap_keys[i][1];
        json_array_foreach(json_object_get(snap, "argv"), i, v)
                if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v))
                        return "snapshot.argv";
        json_object_foreach((json_t *)json_object_get(snap, "executor_options"), k, v)
                if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v))
                        return "snapshot.executor_options";
        json_object_foreach((json_t *)json_object_get(req, "params"), k, v)
                if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v))
                        return "params";
        return NULL;
}

/* Can a result name the run of \p x (parsed as far as it went)? Its ids
 * whole and within bounds, and a nominal time a consumer can store. */
static bool tb_exec_request_named(const tb_exec_run_t *x) {
        const json_t *req = x->req;
        const json_t *r = json_object_get(req, "run_id"), *t = json_object_get(req, "task_id");
        return x->run_id && x->task_id && json_is_string(r) && json_is_string(t) &&
               *x->run_id && json_string_length(r) == strlen(x->run_id) &&
               strlen(x->run_id) <= TB_EXEC_ID_MAX && *x->task_id &&
               json_string_length(t) == strlen(x->task_id) &&
               strlen(x->task_id) <= TB_EXEC_ID_MAX && x->nominal_ms >= 0 &&
               x->nominal_ms <= TB_SCHEDULE_MAX_MS;
}

/* Pull the RunRequest's fields into \p x (strings borrowed from x->req). */
static tb_err_t tb_exec_request_parse(tb_exec_run_t *x, char *errstr, size_t errstr_size) {
        const json_t *req = x->req, *snap = json_object_get(req, "snapshot");
        x->run_id = tb_exec_json_str(req, "run_id");
        x->task_id = tb_exec_json_str(req, "task_id");
        x->nominal_ms = json_integer_value(json_object_get(req, "nominal_time"));
        x->attempt = (int32_t)json_integer_value(json_object_get(req, "attempt"));
        x->group = tb_exec_json_str(snap, "security_group");
        x->executor_name = tb_exec_json_str(snap, "executor");
        x->script = tb_exec_json_str(snap, "script");
        x->overlap = tb_exec_json_str(snap, "overlap");
        x->argv = json_object_get(snap, "argv");
        x->options = json_object_get(snap, "executor_options");
        x->params = json_object_get(req, "params");
        x->expiry_ms = json_integer_value(json_object_get(snap, "expiry_ms"));
        if (!*x->run_id || strlen(x->run_id) > TB_EXEC_ID_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.run_id must be 1 to %d characters",
                                 TB_EXEC_ID_MAX);
        if (!*x->task_id || strlen(x->task_id) > TB_EXEC_ID_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.task_id must be 1 to %d characters",
                                 TB_EXEC_ID_MAX);
        if (x->expiry_ms < 0 || x->expiry_ms > TB_DURATION_MAX_MS)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.snapshot.expiry_ms must be 0 to %" PRId64
                                 " (a run's longest length, ms), got %" PRId64,
                                 (int64_t)TB_DURATION_MAX_MS, x->expiry_ms);
        /* PostgreSQL keeps the claim's nominal time: a time it cannot hold
         * would fail the claim of the whole batch, every time */
        if (x->nominal_ms < 0 || x->nominal_ms > TB_SCHEDULE_MAX_MS)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.nominal_time must be a time from 1970-01-01 to "
                                 "9999-12-31 (ms since the epoch), got %" PRId64, x->nominal_ms);
        if (x->attempt < 1)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.attempt must be 1 or more, got %" PRId32,
                                 x->attempt);
        const char *nul = tb_exec_request_nul(req);
        if (nul)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "RunRequest.%s contains a NUL character: no process argument "
                                 "or id can hold one", nul);
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
        tb_exec_run_t *x;  /* the run to claim; NULL once handled */
        char *fail;        /* x cannot run: why (its FAILED), malloc'd */
        char *outcome;     /* taskbus_claim_run()'s answer, malloc'd */
        /* A result decided at claim time (SKIPPED_OVERLAP, FAILED), or found
         * pending from a process that stopped before delivering it: published
         * before the offset is committed. */
        bool publish;
        char pub_status[24];
        char *pub_error;   /* malloc'd */
} tb_exec_item_t;

#ifdef TB_FAULT_INJECTION
/* Test builds only (TB_SANITIZE): TB_FAULT=<point> kills the process there,
 * as a crash would (docs/reliability.md). */
static void tb_exec_fault(const char *point) {
        const char *f = getenv("TB_FAULT");
        if (f && !strcmp(f, point)) {
                tb_warn(TB_EXEC_SUB, "fault injection TB_FAULT=%s: killing this process", point);
                raise(SIGKILL);
        }
}
#else
#define tb_exec_fault(point) ((void)0)
#endif

/* Decode and check the RunRequest record \p payload into a new run
 * (keeping a copy of the record). @returns the run (NULL: out of memory);
 * *\p reason is NULL if it can run here, else why not, with \p err. */
static tb_exec_run_t *tb_exec_run_decode(tb_exec_t *ex, const void *payload, size_t len,
                                         const char **reason, char *err, size_t err_size) {
        tb_exec_run_t *x = tb_exec_run_new(ex);
        *reason = NULL;
        if (!x)
                return NULL;
        if (tb_serde_decode(payload, len, TB_SCHEMA_RUN_REQUEST, NULL, &x->req, err,
                            err_size) != TB_OK)
                *reason = "undecodable";
        else if (tb_exec_request_parse(x, err, err_size) != TB_OK)
                *reason = "invalid";
        else if (!(x->plugin = tb_exec_plugin_find(ex, x->executor_name))) {
                size_t n = (size_t)snprintf(err, err_size, "executor '%s' is not loaded "
                                            "on this executor; loaded:", x->executor_name);
                for (size_t i = 0; i < ex->plugin_cnt && n < err_size; i++)
                        n += (size_t)snprintf(err + n, err_size - n, "%s %s",
                                              i ? "," : "", ex->plugins[i].name);
                *reason = "unknown_executor";
        }
        if (!*reason) {
                x->raw = malloc(len ? len : 1);
                if (!x->raw) {
                        tb_exec_run_unref(x);
                        return NULL;
                }
                memcpy(x->raw, payload, len);
                x->raw_len = len;
        }
        return x;
}

/* Decode and check a record. What cannot run goes to runs-dlq (and, when it
 * is not a RunRequest, to quarantine); a run that can be named keeps it->x
 * and it->fail, and its FAILED is published before the offset.
 * @returns false if the DLQ could not be written (do not commit the offset). */
static bool tb_exec_item_prepare(tb_exec_t *ex, tb_exec_item_t *it) {
        char err[1024], derr[1024];
        const rd_kafka_message_t *m = it->msg;
        const char *reason = NULL;
        tb_exec_run_t *x = tb_exec_run_decode(ex, m->payload, m->len, &reason, err,
                                              sizeof(err));
        if (!x) {
                tb_error(TB_EXEC_SUB, "out of memory");
                return false;
        }
        if (!reason) {
                it->x = x;
                return true;
        }
        const char *key = x->req && *tb_exec_json_str(x->req, "task_id")
                                  ? tb_exec_json_str(x->req, "task_id")
                                  : NULL;
        tb_warn(TB_EXEC_SUB, "%s [%" PRId32 "] offset %" PRId64 " to runs-dlq (%s): %s",
                rd_kafka_topic_name(m->rkt), m->partition, m->offset, reason, err);
        /* A record that is no RunRequest at all is kept raw as well, where
         * every role keeps what it cannot apply (taskbus admin quarantine). */
        if (strcmp(reason, "unknown_executor"))
                (void)tb_pgsink_quarantine_one(ex->ctx->store, TB_EXEC_SUB, m, err, derr,
                                               sizeof(derr));
        bool ok = tb_exec_dlq(ex, m, key, reason, err, derr, sizeof(derr)) == TB_OK;
        if (!ok)
                tb_error(TB_EXEC_SUB, "writing to runs-dlq failed: %s", derr);
        /* A run we can name but not run also gets a result, so its task's
         * history shows why (an infrastructure error: retried by policy). */
        bool named = tb_exec_request_named(x);
        if (ok && named) {
                size_t len = strlen(err) + 32;
                it->fail = malloc(len);
                if (!it->fail) {
                        tb_exec_run_unref(x);
                        return false;
                }
                snprintf(it->fail, len, "run not started: %s", err);
                /* Not claimed: read again after a crash, the record takes the
                 * same way and its FAILED is published then. */
                it->publish = true;
                snprintf(it->pub_status, sizeof(it->pub_status), "FAILED");
                it->pub_error = strdup(it->fail);
                it->x = x;
                return it->pub_error != NULL;
        }
        tb_exec_run_unref(x);
        return ok;
}

/* Enqueue every prepared run of the batch in one transaction (the run queue
 * of store/claims.h: any executor with a free slot takes them, groups in
 * turn). A run decided at take time (skipped, cancelled) is marked pending
 * there until its result is delivered (tb_exec_take()). @returns false when
 * it could not (PostgreSQL down) and we are stopping. */
static bool tb_exec_claim_batch(tb_exec_t *ex, tb_exec_item_t *items, size_t n) {
        char err[1024];
        bool any = false;
        for (size_t i = 0; i < n; i++)
                any |= items[i].x && !items[i].fail;
        if (!any)
                return true;
        for (int tries = 1;; tries++) {
                PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
                tb_err_t e = c ? tb_store_begin(c, err, sizeof(err))
                               : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                           "no PostgreSQL connection free within 2 s");
                for (size_t i = 0; !e && i < n; i++) {
                        tb_exec_run_t *x = items[i].x;
                        if (!x || items[i].fail)
                                continue;
                        bool dup = false;
                        const tb_store_claims_enqueue_t q = {
                                .run_id = x->run_id, .task_id = x->task_id,
                                .executor_id = ex->id, .executor = x->executor_name,
                                .group = x->group, .overlap = x->overlap,
                                .nominal_ms = x->nominal_ms, .attempt = (int)x->attempt,
                                .request = x->raw, .request_len = x->raw_len};
                        e = tb_store_claims_enqueue(c, &q, &dup, err, sizeof(err));
                        if (!e) {
                                free(items[i].outcome);
                                items[i].outcome = strdup(dup ? "duplicate" : "queued");
                        }
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

/* Publish the results decided at claim time, in order, each confirmed by
 * Kafka, and clear their pending marks. @returns how many items lead the
 * batch whose results (if any) are delivered: only their offsets may be
 * committed. */
static size_t tb_exec_publish_decided(tb_exec_t *ex, tb_exec_item_t *items, size_t n) {
        char err[1024];
        size_t done = 0;
        for (; done < n; done++) {
                tb_exec_item_t *it = &items[done];
                if (!it->publish)
                        continue;
                tb_exec_run_t *x = it->x;
                tb_exec_outcome_t o = {.status = it->pub_status, .finished_ms = tb_now_ms(),
                                       .executor = x->executor_name,
                                       .infra = !strcmp(it->pub_status, "FAILED"),
                                       .error = it->pub_error, .params = x->params};
                if (tb_exec_publish_result(ex, x->run_id, x->task_id, x->nominal_ms,
                                           x->attempt, &o, true, err, sizeof(err)) != TB_OK) {
                        tb_error(TB_EXEC_SUB, "run %s: publishing its %s result failed: %s; "
                                 "its RunRequest will be read again", x->run_id,
                                 it->pub_status, err);
                        break;
                }
        }
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        for (size_t i = 0; i < done; i++) {
                if (!items[i].publish || items[i].fail)
                        continue;
                /* The result is out: if the mark stays (no PostgreSQL now), a
                 * second copy of the RunRequest publishes it once more. */
                if (!c || tb_store_claims_result_sent(c, items[i].x->run_id, err, sizeof(err)))
                        tb_warn(TB_EXEC_SUB, "run %s: clearing its pending result: %s",
                                items[i].x->run_id, c ? err : "no PostgreSQL connection");
        }
        if (c)
                tb_store_release(ex->ctx->store, c);
        return done;
}

/* Act on a claim's outcome; takes over it->x. */
static void tb_exec_after_claim(tb_exec_t *ex, tb_exec_item_t *it) {
        tb_exec_run_t *x = it->x;
        const char *outcome = it->outcome ? it->outcome : "";
        const char *others = strchr(outcome, ':');
        others = others ? others + 1 : "";
        it->x = NULL;
        if (!strcmp(outcome, "queued")) {
                atomic_store(&ex->take_due, true); /* any executor may take it */
                tb_exec_run_unref(x);
                return;
        }
        if (!strncmp(outcome, "cancelled:", 10)) {
                /* its CANCELLED was delivered by tb_exec_take() */
                tb_info(TB_EXEC_SUB, "run %s (task %s) cancelled while queued: %s", x->run_id,
                        x->task_id, others);
                tb_exec_run_unref(x);
                return;
        }
        if (it->fail) {
                tb_info(TB_EXEC_SUB, "run %s (task %s) FAILED: %s", x->run_id, x->task_id,
                        it->fail);
                tb_exec_run_unref(x);
                return;
        }
        if (!strcmp(outcome, "duplicate")) {
                tb_metrics_add("taskbus_executor_duplicates_total", NULL, 1);
                tb_info(TB_EXEC_SUB, "run %s (task %s) was claimed before: duplicate dropped%s "
                        "(taskbus_executor_duplicates_total=%.0f)", x->run_id, x->task_id,
                        it->publish ? "; its pending result was published" : "",
                        tb_metrics_get("taskbus_executor_duplicates_total", NULL));
                tb_exec_run_unref(x);
                return;
        }
        if (!strncmp(outcome, "skipped:", 8)) {
                tb_metrics_add("taskbus_executor_runs_finished_total",
                               "status=\"skipped_overlap\"", 1);
                tb_info(TB_EXEC_SUB, "run %s (task %s) SKIPPED_OVERLAP: %s", x->run_id,
                        x->task_id, it->pub_error ? it->pub_error : "");
                tb_exec_run_unref(x);
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
        x->phase = hold ? TB_EXEC_PENDING : TB_EXEC_STARTING;
        x->next = ex->runs;
        ex->runs = x;
        ex->n_active++;
        tb_metrics_set("taskbus_executor_running", NULL, (double)ex->n_active);
        if (hold)
                pthread_cond_signal(&ex->timer_cond);
        else
                tb_exec_run_queue_start_locked(ex, x);
        pthread_mutex_unlock(&ex->lock);
}

/* Incremental (cooperative) assignment, keeping new partitions paused
 * while the executor is full. Runs on the consumer thread. */
void tb_exec_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_exec_t *ex = opaque;
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

static void tb_exec_commit_offsets(tb_exec_t *ex, tb_exec_item_t *items, size_t n) {
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

static void tb_exec_process_batch(tb_exec_t *ex, tb_exec_item_t *items, size_t n) {
        size_t ok = 0;
        /* A record whose DLQ write failed stops the batch there: only what
         * precedes it may be committed. */
        for (; ok < n; ok++)
                if (!tb_exec_item_prepare(ex, &items[ok]))
                        break;
        if (ok < n)
                tb_error(TB_EXEC_SUB, "stopping the batch at offset %" PRId64 "; it will be "
                         "consumed again", items[ok].msg->offset);
        if (!tb_exec_claim_batch(ex, items, ok)) {
                tb_warn(TB_EXEC_SUB, "stopping with %zu unclaimed run(s): they stay in runs "
                        "for the next executor", ok);
                return;
        }
        for (size_t i = 0; i < ok; i++)
                if (items[i].publish)
                        tb_exec_fault("executor.after_decide");
        /* Every result decided above is delivered before its offset is
         * committed; one that is not stops the commit there, and its record
         * (read again) finds the result pending and publishes it. */
        size_t sent = tb_exec_publish_decided(ex, items, ok);
        if (sent)
                tb_exec_commit_offsets(ex, items, sent);
        /* Claimed runs start even past an unsent result: read again, their
         * RunRequests are duplicates. */
        for (size_t i = 0; i < ok; i++)
                if (items[i].x)
                        tb_exec_after_claim(ex, &items[i]);
        if (sent < ok)
                ok = sent;
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

/* Take up to \p room runs from the queue (groups in turn, FIFO within a
 * group, each group within its max_running: taskbus_take_runs()) and start
 * or hold them; with no room, only finish queued runs that were cancelled.
 * @returns how many runs were taken. */
static size_t tb_exec_take(tb_exec_t *ex, size_t room) {
        char err[1024];
        const char *names[TB_EXEC_MAX_PLUGINS];
        for (size_t i = 0; i < ex->plugin_cnt; i++)
                names[i] = ex->plugins[i].name;
        tb_store_claims_taken_t *t = NULL;
        size_t n = 0;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        tb_err_t e = c ? tb_store_begin(c, err, sizeof(err))
                       : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                   "no PostgreSQL connection free within 2 s");
        if (!e)
                e = tb_store_claims_take(c, ex->id, (int)room, ex->conf->exec_lease_ms,
                                         TB_EXEC_HOLD_MAX_MS, ex->ctx->host, names,
                                         ex->plugin_cnt, &t, &n, err, sizeof(err));
        /* A result the take decided (a skip, a cancellation) is marked
         * pending in the same transaction: if this process stops before its
         * delivery is confirmed, tb_exec_reap_unclaimed() publishes it. */
        char (*msgs)[1024] = n ? calloc(n, sizeof(*msgs)) : NULL;
        bool decided = false;
        for (size_t i = 0; !e && i < n; i++) {
                const char *o = t[i].outcome, *others = strchr(o, ':');
                others = others ? others + 1 : "";
                if (!strncmp(o, "skipped:", 8))
                        snprintf(msgs ? msgs[i] : err, sizeof(err), "not started: the task's "
                                 "run %s is still running (overlap policy FORBID)", others);
                else if (!strncmp(o, "cancelled:", 10))
                        snprintf(msgs ? msgs[i] : err, sizeof(err),
                                 "cancelled before it started: %s", others);
                else
                        continue;
                if (!msgs)
                        e = tb_seterr(err, sizeof(err), TB_ERR_NOMEM, "out of memory");
                else
                        e = tb_store_claims_set_pending(c, t[i].run_id, msgs[i], err,
                                                        sizeof(err));
                decided = true;
        }
        if (!e)
                e = tb_store_commit(c, err, sizeof(err));
        if (e) {
                tb_warn(TB_EXEC_SUB, "taking queued runs: %s; trying again", err);
                if (c) {
                        tb_store_rollback(c);
                        tb_store_release(ex->ctx->store, c);
                }
                tb_store_claims_taken_free(t, n);
                free(msgs);
                return 0;
        }
        tb_exec_run_t **runs = n ? calloc(n, sizeof(*runs)) : NULL;
        for (size_t i = 0; i < n; i++) {
                const char *reason = NULL;
                tb_exec_run_t *x = runs ? tb_exec_run_decode(ex, t[i].request,
                                                             t[i].request_len, &reason, err,
                                                             sizeof(err))
                                        : NULL;
                if (x && !reason) {
                        runs[i] = x;
                        continue;
                }
                /* enqueued by an executor that could decode it: a version skew */
                tb_error(TB_EXEC_SUB, "run %s was queued but cannot run here (%s): its "
                         "claim ends FAILED", t[i].run_id, x ? err : "out of memory");
                if (strncmp(t[i].outcome, "cancelled:", 10) &&
                    tb_store_claims_finish(c, t[i].run_id, ex->id, "FAILED", 0, err,
                                           sizeof(err)))
                        tb_error(TB_EXEC_SUB, "run %s: %s", t[i].run_id, err);
                tb_exec_run_unref(x);
        }
        /* the connection goes back before plugins start runs */
        tb_store_release(ex->ctx->store, c);
        if (decided)
                tb_exec_fault("executor.after_decide");
        for (size_t i = 0; runs && msgs && i < n; i++) {
                tb_exec_run_t *x = runs[i];
                if (!x || !msgs[i][0])
                        continue;
                tb_exec_outcome_t o = {.status = strncmp(t[i].outcome, "skipped:", 8)
                                                         ? "CANCELLED"
                                                         : "SKIPPED_OVERLAP",
                                       .finished_ms = tb_now_ms(),
                                       .executor = x->executor_name, .error = msgs[i],
                                       .params = x->params};
                if (tb_exec_publish_result(ex, x->run_id, x->task_id, x->nominal_ms,
                                           x->attempt, &o, true, err, sizeof(err)) != TB_OK) {
                        tb_error(TB_EXEC_SUB, "run %s: publishing its %s result: %s; it stays "
                                 "pending and is published again", x->run_id, o.status, err);
                        continue;
                }
                PGconn *cs = tb_store_acquire_timeout(ex->ctx->store, 2000);
                if (!cs || tb_store_claims_result_sent(cs, x->run_id, err, sizeof(err)))
                        tb_warn(TB_EXEC_SUB, "run %s: clearing its pending result: %s",
                                x->run_id, cs ? err : "no PostgreSQL connection");
                tb_store_release(ex->ctx->store, cs);
        }
        size_t taken = 0;
        for (size_t i = 0; runs && i < n; i++) {
                if (!runs[i])
                        continue;
                taken += strncmp(t[i].outcome, "cancelled:", 10) != 0;
                tb_exec_item_t it = {.x = runs[i], .outcome = t[i].outcome};
                if (msgs && msgs[i][0])
                        it.pub_error = msgs[i];
                t[i].outcome = NULL; /* the item's now */
                tb_exec_after_claim(ex, &it);
                free(it.outcome);
        }
        free(runs);
        free(msgs);
        tb_store_claims_taken_free(t, n);
        return taken;
}

void *tb_exec_consumer_main(void *arg) {
        tb_exec_t *ex = arg;
        tb_exec_item_t items[TB_EXEC_BATCH];
        int64_t last_take = 0;
        size_t last_active = 0;
        while (!atomic_load(&ex->stop_consume)) {
                pthread_mutex_lock(&ex->lock);
                size_t active = ex->n_active;
                pthread_mutex_unlock(&ex->lock);
                size_t max = (size_t)ex->conf->exec_max_concurrent;
                size_t room = active >= max ? 0 : max - active;
                /* Runs are consumed into the queue whatever the room (so that
                 * one group's backlog in a partition never hides another
                 * group's run behind it) and taken from it as slots free:
                 * when this executor enqueued or ended runs, else every
                 * TB_EXEC_TAKE_POLL_MS for the other executors' queues. */
                int64_t mono = tb_exec_mono_ms();
                if (atomic_exchange(&ex->take_due, false) || active < last_active ||
                    mono - last_take >= TB_EXEC_TAKE_POLL_MS) {
                        last_take = mono;
                        if (tb_exec_take(ex, room) == room && room)
                                atomic_store(&ex->take_due, true); /* maybe more */
                        pthread_mutex_lock(&ex->lock);
                        active = ex->n_active;
                        pthread_mutex_unlock(&ex->lock);
                }
                last_active = active;

                size_t n = 0, want = TB_EXEC_BATCH;
                int timeout = atomic_load(&ex->take_due) ? 0 : TB_EXEC_TICK_MS;
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
                                tb_exec_run_unref(items[i].x);
                        free(items[i].outcome);
                        free(items[i].fail);
                        free(items[i].pub_error);
                        rd_kafka_message_destroy(items[i].msg);
                }
        }
        tb_bus_consumer_destroy(ex->consumer, 10000);
        ex->consumer = NULL;
        return NULL;
}


/* ---- runs nobody claimed ------------------------------------------------------------ */

/* Results decided at take time whose process stopped before Kafka confirmed
 * them (their claim is still marked pending well after): published here. */
static void tb_exec_republish_pending(tb_exec_t *ex) {
        char err[1024];
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        if (!c)
                return;
        tb_err_t e = tb_store_begin(c, err, sizeof(err));
        if (!e)
                e = tb_store_claims_take_stale_pending(c, TB_EXEC_PENDING_STALE_MS, &r, err,
                                                       sizeof(err));
        for (int i = 0; !e && i < PQntuples(r); i++) {
                const char *run_id = PQgetvalue(r, i, 0);
                tb_exec_outcome_t o = {.status = PQgetvalue(r, i, 5), .finished_ms = tb_now_ms(),
                                       .executor = PQgetvalue(r, i, 4),
                                       .error = PQgetvalue(r, i, 6)};
                e = tb_exec_publish_result(ex, run_id, PQgetvalue(r, i, 1),
                                           strtoll(PQgetvalue(r, i, 2), NULL, 10),
                                           (int32_t)atoi(PQgetvalue(r, i, 3)), &o, true, err,
                                           sizeof(err));
                if (!e)
                        e = tb_store_claims_result_sent(c, run_id, err, sizeof(err));
                if (!e)
                        tb_warn(TB_EXEC_SUB, "run %s: its %s result was left undelivered by "
                                "a stopped executor: published now", run_id, o.status);
        }
        PQclear(r);
        if (!e)
                e = tb_store_commit(c, err, sizeof(err));
        if (e) {
                tb_store_rollback(c);
                tb_warn(TB_EXEC_SUB, "publishing results left pending: %s", err);
        }
        tb_store_release(ex->ctx->store, c);
}

void tb_exec_reap_unclaimed(tb_exec_t *ex) {
        char err[1024], limit[32];
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        if (!c)
                return;
        tb_units_duration_format(ex->conf->exec_unclaimed_timeout_ms, limit, sizeof(limit));
        tb_err_t e = tb_store_begin(c, err, sizeof(err));
        if (!e)
                e = tb_store_claims_take_unclaimed(c, ex->id, ex->ctx->host, ex->conf->region,
                                                   ex->conf->exec_unclaimed_timeout_ms, &r,
                                                   err, sizeof(err));
        int rows = e ? 0 : PQntuples(r);
        /* Each LOST is delivered before the claims that own them commit: a
         * failure gives them all back for the next pass. */
        for (int i = 0; !e && i < rows; i++) {
                const char *run_id = PQgetvalue(r, i, 0), *task_id = PQgetvalue(r, i, 1);
                char msg[400];
                snprintf(msg, sizeof(msg), "no executor claimed the run within "
                         "executor.unclaimed_timeout (%s) of its nominal time or emission: no executor "
                         "was consuming its partition of runs or could run it, or its "
                         "RunRequest was lost", limit);
                tb_exec_outcome_t o = {.status = "LOST", .finished_ms = tb_now_ms(),
                                       .executor = PQgetvalue(r, i, 4), .infra = true,
                                       .error = msg};
                e = tb_exec_publish_result(ex, run_id, task_id,
                                           strtoll(PQgetvalue(r, i, 2), NULL, 10),
                                           (int32_t)atoi(PQgetvalue(r, i, 3)), &o, true, err,
                                           sizeof(err));
                if (!e) {
                        tb_metrics_add("taskbus_executor_lost_total", NULL, 1);
                        tb_warn(TB_EXEC_SUB, "run %s (task %s) LOST: %s", run_id, task_id, msg);
                }
        }
        PQclear(r);
        if (!e)
                e = tb_store_commit(c, err, sizeof(err));
        if (e) {
                tb_store_rollback(c);
                tb_warn(TB_EXEC_SUB, "recording runs nobody claimed as LOST: %s", err);
        }
        tb_store_release(ex->ctx->store, c);
        tb_exec_republish_pending(ex);
}

/* ---- stopping ----------------------------------------------------------------------- */

/* Runs still waiting for their nominal time are handed back: the claim is
 * deleted and the RunRequest produced again onto runs, for the executor that
 * takes over the partition. */
void tb_exec_release_pending(tb_exec_t *ex) {
        tb_exec_run_t **runs = NULL;
        size_t n = tb_exec_runs_snapshot(ex, 1u << TB_EXEC_PENDING, &runs);
        for (size_t i = 0; i < n; i++) {
                tb_exec_run_t *x = runs[i];
                char err[1024];
                pthread_mutex_lock(&ex->lock);
                bool mine = x->phase == TB_EXEC_PENDING && !x->finished;
                if (mine)
                        x->phase = TB_EXEC_RELEASED;
                pthread_mutex_unlock(&ex->lock);
                if (!mine)
                        continue;
                bool deleted = false;
                PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 5000);
                tb_err_t e = c ? tb_store_claims_release(c, x->run_id, ex->id, &deleted, err,
                                                         sizeof(err))
                               : tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT,
                                           "no PostgreSQL connection");
                if (c)
                        tb_store_release(ex->ctx->store, c);
                if (deleted) {
                        e = tb_bus_produce(tb_bus_rprod_get(ex->producer), ex->conf,
                                           TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, x->task_id,
                                           strlen(x->task_id), x->raw, x->raw_len, NULL, 0, true,
                                           err, sizeof(err));
                        tb_bus_rprod_put(ex->producer);
                }
                if (deleted && !e)
                        tb_info(TB_EXEC_SUB, "run %s (task %s) had not started: handed back "
                                "to runs", x->run_id, x->task_id);
                else
                        tb_error(TB_EXEC_SUB, "run %s (task %s) had not started and could not "
                                 "be handed back (%s): it will be reported LOST after its "
                                 "lease", x->run_id, x->task_id, e ? err : "claim not found");
                tb_exec_run_unlink(ex, x);
                tb_exec_run_unref(x); /* the list's reference */
        }
        tb_exec_runs_snapshot_free(runs, n);
}
