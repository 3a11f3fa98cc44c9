/**
 * @file scheduler/role.c
 * @brief The scheduler role: its Kafka handles, the task-events group and
 *        its assignment, the main loop of ticks, start and stop.
 */
#include "scheduler/role_internal.h"

#include "bus/pgsink.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ==== the role ================================================================
 *
 * One thread. A consumer group on task-events decides which partitions this
 * process fires; run-results of the same partitions are read by a second,
 * assign-only consumer (cooperative-sticky does not keep partition p of two
 * topics together); checkpoints are read by a third while loading. All
 * positions are committed inside the scheduler's transactions under the
 * group's metadata, so a member that lost the group cannot commit (KIP-447).
 */

bool tb_sched_role_stopping(tb_sched_role_t *r) {
        return atomic_load(&r->ctx->stopping);
}

/* run-results: the partitions we own, at our positions (fresh: committed). */
void tb_sched_results_assign(tb_sched_role_t *r, bool fresh) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                tb_sched_part_t *part = tb_sched_part(r->s, p);
                if (!part->owned)
                        continue;
                rd_kafka_topic_partition_list_add(l, r->t_rr, p)->offset =
                        !fresh && part->rr_pos >= 0 ? part->rr_pos : RD_KAFKA_OFFSET_INVALID;
        }
        rd_kafka_resp_err_t e = rd_kafka_assign(r->rc, l);
        if (e)
                tb_error(TB_SCHED_LOG, "run-results assignment: %s", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
}

static void tb_sched_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_sched_role_t *r = opaque;
        char errstr[1024];
        rd_kafka_error_t *e = NULL;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
                for (int i = 0; i < l->cnt; i++) {
                        int32_t p = l->elems[i].partition;
                        int64_t start = RD_KAFKA_OFFSET_INVALID;
                        if (p < 0 || p >= (int32_t)r->conf->topic_partitions)
                                continue;
                        r->assigned[p] = true;
                        if (tb_sched_load_partition(r, p, &start, errstr, sizeof(errstr)) !=
                            TB_OK) {
                                tb_error(TB_SCHED_LOG, "partition %d: %s; retrying in 1 s", (int)p,
                                         errstr);
                                r->reload_at = tb_now_ms() + 1000;
                        }
                        l->elems[i].offset = start;
                }
                e = rd_kafka_incremental_assign(rk, l);
                rd_kafka_topic_partition_list_destroy(l);
                tb_sched_results_assign(r, false);
                tb_sched_remote_assign(r);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                bool lost = rd_kafka_assignment_lost(rk);
                for (int i = 0; i < parts->cnt; i++) {
                        int32_t p = parts->elems[i].partition;
                        if (p < 0 || p >= (int32_t)r->conf->topic_partitions)
                                continue;
                        r->assigned[p] = false;
                        tb_sched_drop_partition(r->s, p);
                        tb_info(TB_SCHED_LOG, "partition %d %s", (int)p, lost ? "lost" : "revoked");
                }
                e = rd_kafka_incremental_unassign(rk, parts);
                tb_sched_results_assign(r, false);
                tb_sched_remote_assign(r);
        } else {
                tb_error(TB_SCHED_LOG, "rebalance error: %s", rd_kafka_err2str(err));
        }
        if (e) {
                tb_error(TB_SCHED_LOG, "incremental (un)assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        tb_metrics_set("taskbus_scheduler_tasks_loaded", NULL, (double)tb_sched_task_count(r->s));
}

void tb_sched_warn_record(const rd_kafka_message_t *m, const char *what, const char *err) {
        tb_warn(TB_SCHED_LOG, "%s [%d] offset %" PRId64 ": %s", what, (int)m->partition, m->offset,
                err);
}

json_t *tb_sched_decode(const rd_kafka_message_t *m, tb_schema_id_t schema, const char *what) {
        json_t *v = NULL;
        char err[512], msg[560];
        if (!m->payload)
                return NULL;
        if (tb_serde_decode(m->payload, m->len, schema, NULL, &v, err, sizeof(err)) != TB_OK) {
                tb_snprintf(msg, sizeof(msg), "skipped: %s", err);
                tb_sched_warn_record(m, what, msg);
                return NULL;
        }
        return v;
}

bool tb_sched_take(const tb_sched_part_t *part, int64_t *pos, const rd_kafka_message_t *m) {
        if (!part || !part->owned || (*pos >= 0 && m->offset < *pos))
                return false;
        *pos = m->offset + 1;
        return true;
}

/* Keep record \p m, which the scheduler can never apply as it is, in the
 * quarantine table (once, however often it is read again) and go on. */
static void tb_sched_quarantine(tb_sched_role_t *r, const rd_kafka_message_t *m,
                                const char *why) {
        char qerr[256];
        (void)tb_pgsink_quarantine_one(r->ctx->store, TB_SCHED_LOG, m, why, qerr, sizeof(qerr));
}

/* Decode \p m as \p schema; a record that is not one (a tombstone is not
 * a record) is quarantined. */
static json_t *tb_sched_decode_or_quarantine(tb_sched_role_t *r, const rd_kafka_message_t *m,
                                             tb_schema_id_t schema) {
        json_t *v = NULL;
        char err[512];
        if (!m->payload)
                return NULL;
        if (tb_serde_decode(m->payload, m->len, schema, NULL, &v, err, sizeof(err)) != TB_OK) {
                tb_sched_quarantine(r, m, err);
                return NULL;
        }
        return v;
}

static void tb_sched_on_event(tb_sched_role_t *r, rd_kafka_message_t *m) {
        tb_sched_part_t *part = tb_sched_part(r->s, m->partition);
        json_t *ev;
        char err[512];
        if (!tb_sched_take(part, part ? &part->ev_pos : NULL, m) ||
            !(ev = tb_sched_decode_or_quarantine(r, m, TB_SCHEMA_TASK_EVENT)))
                return;
        tb_err_t e = tb_sched_event(r->s, m->partition, ev, m->offset < part->load_off,
                                    tb_now_ms(), err, sizeof(err));
        /* TB_ERR_INVALID is the event's own content (an impossible schedule):
         * it fails the same way every time */
        if (e == TB_ERR_INVALID)
                tb_sched_quarantine(r, m, err);
        else if (e != TB_OK)
                tb_sched_warn_record(m, "task-events", err);
        json_decref(ev);
        tb_sched_adopt_moved(r);
}

static void tb_sched_on_result(tb_sched_role_t *r, rd_kafka_message_t *m) {
        tb_sched_part_t *part = tb_sched_part(r->s, m->partition);
        json_t *res;
        char err[512];
        if (!tb_sched_take(part, part ? &part->rr_pos : NULL, m) ||
            !(res = tb_sched_decode(m, TB_SCHEMA_RUN_RESULT, "run-results")))
                return;
        if (tb_sched_result(r->s, m->partition, res, tb_now_ms(), err, sizeof(err)) != TB_OK)
                tb_sched_warn_record(m, "run-results", err);
        json_decref(res);
}

/* What the producer still holds belongs to a transaction that will not
 * commit (aborted, fenced, or we are stopping): drop it rather than wait. */
static void tb_sched_producer_drop(tb_sched_role_t *r) {
        if (!r->prod)
                return;
        rd_kafka_purge(r->prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_destroy(r->prod);
        r->prod = NULL;
}

static tb_err_t tb_sched_producer(tb_sched_role_t *r, char *errstr, size_t errstr_size) {
        tb_sched_producer_drop(r);
        tb_err_t err = tb_bus_producer_new(r->conf, r->txn_id, &r->prod, errstr, errstr_size);
        tb_sched_set_kafka(r->s, r->prod, r->gc);
        return err;
}

/* The group member on task-events (static: group.instance.id). */
static tb_err_t tb_sched_group_consumer(tb_sched_role_t *r, char *errstr, size_t errstr_size) {
        tb_consumer_opts_t o = {
                .group_id = r->group,
                .instance_id = r->instance,
                .read_committed = true,
                .auto_commit = false,
                .offset_reset = "earliest",
                .rebalance_cb = tb_sched_rebalance,
                .opaque = r,
        };
        tb_topic_t topics[] = {TB_TOPIC_EVENTS};
        return tb_bus_consumer_new(r->conf, &o, topics, 1, &r->gc, errstr, errstr_size);
}

/* A fatal error ends the group consumer for good: it never rebalances
 * again. The usual one is FENCED_INSTANCE_ID after a broker outage: the
 * session timed out, librdkafka rejoined under a new member id and the
 * broker fenced the old one. Left alone, this process would own nothing
 * while the group kept its static id, so nobody would fire its partitions
 * until it restarts. Drop everything and join again with the same
 * group.instance.id; the new assignment loads with misfire catch-up. */
static void tb_sched_regroup(tb_sched_role_t *r) {
        char fbuf[512], errstr[1024];
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(r->gc, fbuf, sizeof(fbuf));
        tb_error(TB_SCHED_LOG,
                 "task-events consumer: fatal %s: %s; dropping every partition and joining "
                 "group %s again",
                 rd_kafka_err2name(ferr), fbuf, r->group);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                r->assigned[p] = false;
                tb_sched_drop_partition(r->s, p);
        }
        r->reload_at = 0;
        tb_sched_set_kafka(r->s, r->prod, NULL);
        tb_bus_consumer_destroy(r->gc, 5000);
        r->gc = NULL;
        tb_sched_results_assign(r, false);
        tb_sched_remote_assign(r);
        while (!tb_sched_role_stopping(r) &&
               tb_sched_group_consumer(r, errstr, sizeof(errstr)) != TB_OK) {
                tb_error(TB_SCHED_LOG, "joining group %s again: %s; retrying in 1 s", r->group,
                         errstr);
                for (int i = 0; i < 10 && !tb_sched_role_stopping(r); i++)
                        rd_kafka_poll(r->prod, 100); /* waits 100 ms */
        }
        tb_sched_set_kafka(r->s, r->prod, r->gc);
        tb_metrics_set("taskbus_scheduler_tasks_loaded", NULL, (double)tb_sched_task_count(r->s));
}

/** An assign-only reader of the scheduler: read_committed, commits nothing itself (its
 *  positions go into the scheduler's transactions), from the earliest offset where
 *  \p group has none. */
static tb_err_t tb_sched_reader(tb_sched_role_t *r, const char *group, bool eof, rd_kafka_t **out,
                                char *errstr, size_t errstr_size) {
        /* The loader (eof) reads a partition to its end and stops: a broker
         * holding the last empty fetch for librdkafka's 500 ms cost about 1 s
         * per partition loaded (a restart waited 6 s for 6 partitions). */
        tb_reader_opts_t o = {.group_id = group, .read_committed = true, .partition_eof = eof,
                              .fetch_wait_max_ms = eof ? 10 : 0};
        return tb_bus_reader_new(r->conf, &o, out, errstr, errstr_size);
}

static tb_err_t tb_sched_connect(tb_sched_role_t *r, char *errstr, size_t errstr_size) {
        tb_err_t err;
        char ckgroup[300];
        tb_snprintf(ckgroup, sizeof(ckgroup), "%s.checkpoint-loader", r->group);
        /* the producer first: its init_transactions fences our previous
         * incarnation (same transactional.id) before we read anything; then
         * run-results, the checkpoint loader and the other regions' copies,
         * assign-only (only the task-events member joins the group) */
        if ((err = tb_sched_producer(r, errstr, errstr_size)) ||
            (err = tb_sched_reader(r, r->group, false, &r->rc, errstr, errstr_size)) ||
            (err = tb_sched_reader(r, ckgroup, true, &r->ck, errstr, errstr_size)) ||
            (err = tb_sched_group_consumer(r, errstr, errstr_size)))
                return err;
        if (r->rcnt && (err = tb_sched_reader(r, r->group, false, &r->rv, errstr, errstr_size)))
                return err;
        tb_sched_set_kafka(r->s, r->prod, r->gc);
        return TB_OK;
}

static void tb_sched_drain(tb_sched_role_t *r, rd_kafka_t *rk, int first_timeout_ms, size_t max,
                           bool results) {
        for (size_t i = 0; i < max && !tb_sched_role_stopping(r); i++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, i == 0 ? first_timeout_ms : 0);
                if (!m)
                        return;
                if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_warn(TB_SCHED_LOG, "%s: %s",
                                        results ? "run-results" : "task-events",
                                        rd_kafka_message_errstr(m));
                } else if (results) {
                        tb_sched_on_result(r, m);
                } else {
                        tb_sched_on_event(r, m);
                }
                rd_kafka_message_destroy(m);
        }
}

static void *tb_sched_role_main(void *arg) {
        tb_sched_role_t *r = arg;
        char errstr[1024];
        int64_t tick = r->conf->sched_tick_ms > 0 ? r->conf->sched_tick_ms : 50;
        size_t batch = r->conf->sched_max_batch > 0 ? (size_t)r->conf->sched_max_batch : 500;
        while (!tb_sched_role_stopping(r)) {
                int64_t now = tb_now_ms(), due = tb_sched_next_due(r->s);
                int64_t wait = tick;
                if (due - now < wait)
                        wait = due - now < 0 ? 0 : due - now;
                tb_sched_drain(r, r->gc, (int)wait, 5000, false);
                if (rd_kafka_fatal_error(r->gc, NULL, 0)) {
                        tb_sched_regroup(r);
                        continue;
                }
                tb_sched_drain(r, r->rc, 0, batch, true);
                for (size_t i = 0; r->rv && i < 5000 && !tb_sched_role_stopping(r); i++) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rv, 0);
                        if (!m)
                                break;
                        if (!m->err)
                                tb_sched_on_remote(r, m);
                        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_debug(TB_SCHED_LOG, "other regions' copies: %s",
                                         rd_kafka_message_errstr(m));
                        rd_kafka_message_destroy(m);
                }
                if (r->reload_at && tb_now_ms() >= r->reload_at)
                        tb_sched_reload(r);
                /* at the interval, or sooner (not more than 4 times a
                 * second) when a task names a calendar not seen yet */
                if (tb_now_ms() >= r->cal_poll_at ||
                    (tb_sched_calendars_wanted(r->s) && tb_now_ms() >= r->cal_polled + 250)) {
                        tb_sched_calendars_poll(r);
                        r->cal_polled = tb_now_ms();
                        r->cal_poll_at = r->cal_polled + r->conf->sched_calendar_poll_ms;
                }
                tb_sched_after_poll(r);
                tb_sched_tick_stats_t st;
                tb_err_t err;
                do {
                        err = tb_sched_tick(r->s, tb_now_ms(), &st, errstr, sizeof(errstr));
                } while (!err && st.more && !tb_sched_role_stopping(r));
                if (err) {
                        tb_error(TB_SCHED_LOG, "transaction failed: %s; reloading the partitions",
                                 errstr);
                        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++)
                                if (r->assigned[p])
                                        tb_sched_drop_partition(r->s, p);
                        if (err == TB_ERR_FENCED || rd_kafka_fatal_error(r->prod, NULL, 0)) {
                                while (!tb_sched_role_stopping(r) &&
                                       tb_sched_producer(r, errstr, sizeof(errstr)) != TB_OK) {
                                        tb_error(TB_SCHED_LOG, "rebuilding the producer: %s",
                                                 errstr);
                                        tb_sched_drain(r, r->gc, 1000, 1000, false);
                                }
                        }
                        r->reload_at = tb_now_ms() + 1000;
                }
                tb_metrics_set("taskbus_scheduler_tasks_loaded", NULL,
                               (double)tb_sched_task_count(r->s));
        }
        return NULL;
}

static void tb_sched_role_free(tb_sched_role_t *r) {
        if (!r)
                return;
        tb_bus_consumer_destroy(r->gc, 10000);
        tb_bus_consumer_destroy(r->rc, 10000);
        tb_bus_consumer_destroy(r->ck, 10000);
        tb_bus_consumer_destroy(r->rv, 10000);
        tb_sched_adopt_clear(r);
        free(r->adopt);
        free(r->t_rev);
        free(r->rpos);
        free(r->fence_skip_until);
        tb_sched_producer_drop(r);
        tb_sched_after_free(r);
        tb_sched_destroy(r->s);
        free(r->assigned);
        free(r);
}

static tb_err_t tb_sched_role_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t err;
        tb_sched_role_t *r = calloc(1, sizeof(*r));
        if (!r)
                return TB_ERR_NOMEM;
        r->ctx = ctx;
        r->conf = ctx->conf;
        if ((err = tb_sched_new(ctx->conf, ctx->instance, &r->s, errstr, errstr_size)))
                goto fail;
        r->assigned = calloc((size_t)ctx->conf->topic_partitions, sizeof(*r->assigned));
        if (!r->assigned) {
                err = TB_ERR_NOMEM;
                goto fail;
        }
        const char *inst = tb_bus_prop(ctx->conf, "group.instance.id");
        tb_snprintf(r->instance, sizeof(r->instance), "%s", inst && *inst ? inst : ctx->instance);
        tb_snprintf(r->group, sizeof(r->group), "%sscheduler", ctx->conf->topic_prefix);
        tb_snprintf(r->txn_id, sizeof(r->txn_id), "%sscheduler.%s", ctx->conf->topic_prefix,
                    r->instance);
        tb_topic_name(ctx->conf, TB_TOPIC_EVENTS, r->t_ev, sizeof(r->t_ev));
        tb_topic_name(ctx->conf, TB_TOPIC_RESULTS, r->t_rr, sizeof(r->t_rr));
        tb_topic_name(ctx->conf, TB_TOPIC_CHECKPOINTS, r->t_ck, sizeof(r->t_ck));
        r->rcnt = ctx->conf->repl_remote_region_cnt;
        r->t_rev = calloc(r->rcnt + 1, sizeof(*r->t_rev));
        r->rpos = calloc((size_t)ctx->conf->topic_partitions * (r->rcnt + 1), sizeof(*r->rpos));
        r->fence_skip_until = calloc(r->rcnt + 1, sizeof(*r->fence_skip_until));
        if (!r->t_rev || !r->rpos || !r->fence_skip_until) {
                err = TB_ERR_NOMEM;
                goto fail;
        }
        for (size_t ri = 0; ri < r->rcnt; ri++)
                tb_repl_topic_name(ctx->conf, ctx->conf->repl_remote_regions[ri], TB_TOPIC_EVENTS,
                                   r->t_rev[ri], sizeof(r->t_rev[ri]));
        if ((err = tb_sched_connect(r, errstr, errstr_size)))
                goto fail;
        if (pthread_create(&r->thr, NULL, tb_sched_role_main, r)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "scheduler: cannot start its thread");
                goto fail;
        }
        r->thr_started = true;
        tb_info(TB_SCHED_LOG, "member %s of group %s (transactional.id %s, region %s)", r->instance,
                r->group, r->txn_id, ctx->conf->region);
        *state = r;
        return TB_OK;
fail:
        tb_sched_role_free(r);
        return err;
}

static void tb_sched_role_stop(void *state) {
        tb_sched_role_t *r = state;
        if (!r)
                return;
        if (r->thr_started)
                pthread_join(r->thr, NULL);
        tb_sched_role_free(r);
}

const tb_role_t tb_role_scheduler = {
        .name = "scheduler",
        .description = "fires due tasks: runs + checkpoints in fenced Kafka transactions",
        .start = tb_sched_role_start,
        .stop = tb_sched_role_stop,
};
