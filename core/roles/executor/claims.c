/**
 * @file executor/claims.c
 * @brief Consuming `runs` and claiming each run in PostgreSQL before it
 *        starts; the timer that starts held runs at their nominal time; and
 *        handing held runs back at shutdown.
 */
#include "executor/executor_internal.h"

#include "http/metrics.h"
#include "serde/serde.h"

#include <inttypes.h>
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
                tb_exec_run_t **due = NULL;
                size_t ndue = 0, cap = 0;

                pthread_mutex_lock(&ex->lock);
                for (tb_exec_run_t *x = ex->runs; x; x = x->next) {
                        if (x->phase != TB_EXEC_PENDING)
                                continue;
                        if (x->nominal_ms > now) {
                                if (x->nominal_ms - now < wait_ms)
                                        wait_ms = x->nominal_ms - now;
                                continue;
                        }
                        if (ndue == cap) {
                                size_t ncap = cap ? cap * 2 : 64;
                                tb_exec_run_t **nd = realloc(due, ncap * sizeof(*nd));
                                if (!nd)
                                        break;
                                due = nd;
                                cap = ncap;
                        }
                        x->phase = TB_EXEC_STARTING;
                        tb_exec_run_ref(x);
                        due[ndue++] = x;
                }
                pthread_mutex_unlock(&ex->lock);
                for (size_t i = 0; i < ndue; i++) {
                        tb_exec_run_start(ex, due[i]);
                        tb_exec_run_unref(due[i]);
                }
                free(due);

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
                rd_kafka_poll(ex->producer, 0);
                rd_kafka_poll(ex->log_producer, 0);
                tb_exec_log_loss_tick(ex, false);

                if (ndue)
                        continue; /* starting took time: look again at once */
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
        return tb_bus_produce(ex->producer, ex->conf, TB_TOPIC_DLQ, RD_KAFKA_PARTITION_UA, k,
                              klen, m->payload, m->len, h, 2, true, errstr, errstr_size);
}

/* ---- consuming and claiming ----------------------------------------------------- */

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
        tb_exec_run_t *x;      /* NULL once handled (DLQ) */
        char *outcome;     /* taskbus_claim_run()'s answer, malloc'd */
} tb_exec_item_t;

/* Decode and check a record; what cannot run goes to runs-dlq (x stays NULL).
 * @returns false if the DLQ could not be written (do not commit the offset). */
static bool tb_exec_item_prepare(tb_exec_t *ex, tb_exec_item_t *it) {
        char err[1024], derr[1024];
        const rd_kafka_message_t *m = it->msg;
        tb_exec_run_t *x = tb_exec_run_new(ex);
        const char *reason = NULL;
        if (!x) {
                tb_error(TB_EXEC_SUB, "out of memory");
                return false;
        }
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_RUN_REQUEST, NULL, &x->req, err,
                            sizeof(err)) != TB_OK)
                reason = "undecodable";
        else if (tb_exec_request_parse(x, err, sizeof(err)) != TB_OK)
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
                        tb_exec_run_unref(x);
                        return false;
                }
                memcpy(x->raw, m->payload, m->len);
                x->raw_len = m->len;
                it->x = x;
                return true;
        }
        const char *key = x->req && *tb_exec_json_str(x->req, "task_id")
                                  ? tb_exec_json_str(x->req, "task_id")
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
        tb_exec_run_unref(x);
        return ok;
}

/* Claim every prepared run of the batch in one transaction. @returns false
 * when it could not (PostgreSQL down) and we are stopping. */
static bool tb_exec_claim_batch(tb_exec_t *ex, tb_exec_item_t *items, size_t n) {
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
                        tb_exec_run_t *x = items[i].x;
                        if (!x)
                                continue;
                        char *outcome = NULL;
                        e = tb_store_claims_claim(c, x->run_id, x->task_id, ex->id,
                                                  ex->conf->exec_lease_ms, x->nominal_ms,
                                                  (int)x->attempt, x->executor_name,
                                                  ex->ctx->host, x->overlap, &outcome, err,
                                                  sizeof(err));
                        if (!e) {
                                free(items[i].outcome);
                                items[i].outcome = outcome;
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

/* Act on a claim's outcome; takes over it->x. */
static void tb_exec_after_claim(tb_exec_t *ex, tb_exec_item_t *it) {
        tb_exec_run_t *x = it->x;
        const char *outcome = it->outcome ? it->outcome : "";
        const char *others = strchr(outcome, ':');
        others = others ? others + 1 : "";
        it->x = NULL;
        if (!strcmp(outcome, "duplicate")) {
                tb_metrics_add("taskbus_executor_duplicates_total", NULL, 1);
                tb_info(TB_EXEC_SUB, "run %s (task %s) was claimed before: duplicate dropped "
                        "(taskbus_executor_duplicates_total=%.0f)", x->run_id, x->task_id,
                        tb_metrics_get("taskbus_executor_duplicates_total", NULL));
                tb_exec_run_unref(x);
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
                tb_exec_run_ref(x);
        pthread_mutex_unlock(&ex->lock);
        if (!hold) {
                tb_exec_run_start(ex, x);
                tb_exec_run_unref(x);
        }
}

static void tb_exec_set_paused(tb_exec_t *ex, bool pause) {
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
        if (ok)
                tb_exec_commit_offsets(ex, items, ok);
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

void *tb_exec_consumer_main(void *arg) {
        tb_exec_t *ex = arg;
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
                                tb_exec_run_unref(items[i].x);
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
                tb_exec_run_unlink(ex, x);
                tb_exec_run_unref(x); /* the list's reference */
        }
        tb_exec_runs_snapshot_free(runs, n);
}
