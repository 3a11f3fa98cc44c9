/**
 * @file bus/consumer.c
 * @brief Consumers: consumer group members (cooperative-sticky) with the one
 *        rebalance callback that runs a role's hooks (tb_rebalance_t),
 *        readers (assign-only consumers), record headers, and the bounded
 *        leave-and-destroy.
 */
#include "bus/bus.h"
#include "bus/bus_internal.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

/* ---- consumers -------------------------------------------------------------- */

/** One line per partition of \p parts: "<what> <topic> [<p>]", with the
 *  start offset when one was set. */
static void tb_bus_log_parts(tb_log_level_t lv, const char *sub, const char *what,
                             const rd_kafka_topic_partition_list_t *parts) {
        for (int i = 0; i < parts->cnt; i++) {
                const rd_kafka_topic_partition_t *tp = &parts->elems[i];
                char from[48] = "";
                if (tp->offset >= 0 || tp->offset == RD_KAFKA_OFFSET_BEGINNING)
                        tb_snprintf(from, sizeof(from), " from offset %" PRId64,
                                    tp->offset < 0 ? 0 : tp->offset);
                else if (tp->offset == RD_KAFKA_OFFSET_END)
                        tb_snprintf(from, sizeof(from), " from its end");
                tb_log(lv, sub, "%s %s [%" PRId32 "]%s", what, tp->topic, tp->partition, from);
        }
}

/**
 * The rebalance of every consumer group member: \p rb's hooks around the
 * (un)assign. Cooperative protocols move only the partitions that change
 * hands: incremental (un)assign; the eager path covers a pass-through
 * override.
 */
static void tb_bus_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, const tb_rebalance_t *rb) {
        const char *sub = rb && rb->sub ? rb->sub : TB_BUS_SUB;
        /* a role's partitions are news; the default member's are not */
        tb_log_level_t lv = rb ? TB_LOG_INFO : TB_LOG_DEBUG;
        bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
        rd_kafka_error_t *e = NULL;
        rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        switch (err) {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                if (rb && rb->on_assign)
                        rb->on_assign(rk, parts, rb->opaque);
                tb_bus_log_parts(lv, sub, "assigned", parts);
                if (coop)
                        e = rd_kafka_incremental_assign(rk, parts);
                else
                        rerr = rd_kafka_assign(rk, parts);
                if (!e && !rerr && rb && rb->on_assigned)
                        rb->on_assigned(rk, parts, rb->opaque);
                break;
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: {
                bool lost = rd_kafka_assignment_lost(rk);
                tb_bus_log_parts(lv, sub, lost ? "lost" : "revoked", parts);
                if (rb && rb->on_revoke)
                        rb->on_revoke(rk, parts, lost, rb->opaque);
                if (coop)
                        e = rd_kafka_incremental_unassign(rk, parts);
                else
                        rerr = rd_kafka_assign(rk, NULL);
                break;
        }
        default:
                tb_warn(sub, "%s: rebalance failed: %s", rd_kafka_name(rk),
                        rd_kafka_err2str(err));
                if (!coop)
                        rerr = rd_kafka_assign(rk, NULL);
                break;
        }
        if (e) {
                tb_error(sub, "%s: incremental (un)assign: %s", rd_kafka_name(rk),
                         rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        if (rerr)
                tb_error(sub, "%s: assign: %s", rd_kafka_name(rk), rd_kafka_err2str(rerr));
}

/** The rebalance callback of a member without hooks. */
static void tb_bus_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque) {
        (void)opaque;
        tb_bus_rebalance(rk, err, parts, NULL);
}

/** The rebalance callback of a member with hooks (its opaque). */
static void tb_bus_rebalance_hooks_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                      rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_bus_rebalance(rk, err, parts, opaque);
}

/**
 * A consumer's conf: the pass-through properties, then those of every
 * consumer of taskbus (offsets are never committed by librdkafka on its own).
 * \p who names the consumer in messages.
 */
static tb_err_t tb_bus_consumer_conf(const tb_config_t *conf, const char *who,
                                     const char *group_id, bool read_committed,
                                     const char *offset_reset, bool partition_eof,
                                     bool auto_commit, rd_kafka_conf_t **out, char *errstr,
                                     size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        tb_err_t err;
        *out = NULL;
        if (!group_id || !group_id[0])
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: group_id is required", who);
        const char *reset = offset_reset ? offset_reset : "earliest";
        if (strcmp(reset, "earliest") && strcmp(reset, "latest"))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s %s: offset_reset \"%s\" must be \"earliest\" or "
                                 "\"latest\"",
                                 who, group_id, reset);
        if ((err = tb_bus_conf_new(conf, &c, errstr, errstr_size)))
                return err;
        if ((err = tb_bus_set(c, "group.id", group_id, errstr, errstr_size)) ||
            (err = tb_bus_set(c, "isolation.level",
                              read_committed ? "read_committed" : "read_uncommitted", errstr,
                              errstr_size)) ||
            (err = tb_bus_set(c, "enable.auto.commit", auto_commit ? "true" : "false", errstr,
                              errstr_size)) ||
            (err = tb_bus_set(c, "auto.offset.reset", reset, errstr, errstr_size)) ||
            (err = tb_bus_set(c, "enable.partition.eof", partition_eof ? "true" : "false",
                              errstr, errstr_size))) {
                rd_kafka_conf_destroy(c);
                return err;
        }
        *out = c;
        return TB_OK;
}

/** The consumer handle of \p c (taken in every case), polled through one queue. */
static tb_err_t tb_bus_consumer_handle(rd_kafka_conf_t *c, rd_kafka_t **out, char *errstr,
                                       size_t errstr_size) {
        tb_err_t err = tb_bus_handle_new(RD_KAFKA_CONSUMER, c, "kafka consumer", out, errstr,
                                         errstr_size);
        if (!err)
                /* one queue: rd_kafka_consumer_poll() also serves errors and rebalances */
                rd_kafka_poll_set_consumer(*out);
        return err;
}

tb_err_t tb_bus_consumer_new(const tb_config_t *conf, const tb_consumer_opts_t *opts,
                             const tb_topic_t *topics, size_t topic_cnt, rd_kafka_t **out,
                             char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        rd_kafka_t *rk = NULL;
        rd_kafka_topic_partition_list_t *subs = NULL;
        tb_err_t err;

        *out = NULL;
        if (!opts || !opts->group_id || !opts->group_id[0])
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "consumer: group_id is required");
        if ((!topic_cnt || !topics) && !opts->topic_name_cnt)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "consumer %s: no topics to subscribe to", opts->group_id);
        if (opts->rebalance && opts->rebalance_cb)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "consumer %s: rebalance hooks and a rebalance_cb exclude each "
                                 "other",
                                 opts->group_id);
        if ((err = tb_bus_consumer_conf(conf, "consumer", opts->group_id, opts->read_committed,
                                        opts->offset_reset, false, opts->auto_commit, &c,
                                        errstr, errstr_size)))
                return err;
        if ((opts->instance_id && opts->instance_id[0] &&
             (err = tb_bus_set(c, "group.instance.id", opts->instance_id, errstr,
                               errstr_size))) ||
            (err = tb_bus_set(c, "partition.assignment.strategy", "cooperative-sticky", errstr,
                              errstr_size)) ||
            (!tb_bus_prop(conf, "session.timeout.ms") &&
             (err = tb_bus_set_ms(c, "session.timeout.ms", opts->session_timeout_ms, errstr,
                                  errstr_size))))
                goto fail;
        if (opts->rebalance) {
                rd_kafka_conf_set_rebalance_cb(c, tb_bus_rebalance_hooks_cb);
                rd_kafka_conf_set_opaque(c, (void *)opts->rebalance);
        } else {
                rd_kafka_conf_set_rebalance_cb(c, opts->rebalance_cb ? opts->rebalance_cb
                                                                     : tb_bus_rebalance_cb);
                rd_kafka_conf_set_opaque(c, opts->opaque);
        }
        err = tb_bus_consumer_handle(c, &rk, errstr, errstr_size);
        c = NULL;
        if (err)
                goto fail;
        subs = rd_kafka_topic_partition_list_new((int)(topic_cnt + opts->topic_name_cnt));
        for (size_t i = 0; i < topic_cnt; i++) {
                char name[256];
                if ((int)topics[i] < 0 || topics[i] >= TB_TOPIC__COUNT) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "consumer %s: unknown topic %d", opts->group_id,
                                        (int)topics[i]);
                        goto fail;
                }
                rd_kafka_topic_partition_list_add(subs, tb_topic_name(conf, topics[i], name,
                                                                      sizeof(name)),
                                                  RD_KAFKA_PARTITION_UA);
        }
        for (size_t i = 0; i < opts->topic_name_cnt; i++)
                rd_kafka_topic_partition_list_add(subs, opts->topic_names[i],
                                                  RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t rerr = rd_kafka_subscribe(rk, subs);
        if (rerr) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "consumer %s: subscribe: %s",
                                opts->group_id, rd_kafka_err2str(rerr));
                goto fail;
        }
        rd_kafka_topic_partition_list_destroy(subs);
        *out = rk;
        return TB_OK;
fail:
        if (subs)
                rd_kafka_topic_partition_list_destroy(subs);
        if (c)
                rd_kafka_conf_destroy(c);
        if (rk)
                rd_kafka_destroy(rk);
        return err;
}

tb_err_t tb_bus_reader_new(const tb_config_t *conf, const tb_reader_opts_t *opts,
                           rd_kafka_t **out, char *errstr, size_t errstr_size) {
        rd_kafka_conf_t *c = NULL;
        tb_err_t err;
        *out = NULL;
        if (!opts)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "reader: group_id is required");
        if ((err = tb_bus_consumer_conf(conf, "reader", opts->group_id, opts->read_committed,
                                        opts->offset_reset, opts->partition_eof, false, &c,
                                        errstr, errstr_size)))
                return err;
        /* nothing is ever committed: rd_kafka_commit() has no stored offsets to send */
        if ((err = tb_bus_set(c, "enable.auto.offset.store", "false", errstr, errstr_size)) ||
            (opts->bootstrap &&
             (err = tb_bus_set(c, "bootstrap.servers", opts->bootstrap, errstr, errstr_size))) ||
            (err = tb_bus_set_ms(c, "socket.connection.setup.timeout.ms",
                                 opts->connect_timeout_ms, errstr, errstr_size)) ||
            (err = tb_bus_set_ms(c, "fetch.wait.max.ms", opts->fetch_wait_max_ms, errstr,
                                 errstr_size))) {
                rd_kafka_conf_destroy(c);
                return err;
        }
        return tb_bus_consumer_handle(c, out, errstr, errstr_size);
}

tb_err_t tb_bus_header_get(const rd_kafka_message_t *msg, const char *name,
                           const void **value, size_t *len) {
        rd_kafka_headers_t *hdrs = NULL;
        *value = NULL;
        *len = 0;
        /* rd_kafka_message_headers takes a non-const message: it parses lazily */
        if (!msg || !name || rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) !=
                                     RD_KAFKA_RESP_ERR_NO_ERROR)
                return TB_ERR_NOT_FOUND;
        if (rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
                return TB_ERR_NOT_FOUND;
        return TB_OK;
}

void tb_bus_consumer_destroy(rd_kafka_t *rk, int timeout_ms) {
        if (!rk)
                return;
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_error_t *error = rd_kafka_consumer_close_queue(rk, q);
        if (error) {
                tb_warn(TB_BUS_SUB, "consumer %s: close: %s", rd_kafka_name(rk),
                        rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else {
                int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
                while (!rd_kafka_consumer_closed(rk) && tb_mono_us() < deadline) {
                        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
                        if (!ev)
                                continue;
                        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE &&
                            rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                                /* Acknowledge the revocation so the close can go on. */
                                rd_kafka_topic_partition_list_t *parts =
                                        rd_kafka_event_topic_partition_list(ev);
                                if (!strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE")) {
                                        rd_kafka_error_t *e2 =
                                                rd_kafka_incremental_unassign(rk, parts);
                                        if (e2)
                                                rd_kafka_error_destroy(e2);
                                } else {
                                        rd_kafka_assign(rk, NULL);
                                }
                        }
                        rd_kafka_event_destroy(ev);
                }
                if (!rd_kafka_consumer_closed(rk))
                        tb_warn(TB_BUS_SUB,
                                "consumer %s: group did not acknowledge the close within %d ms "
                                "(Kafka unreachable?): leaving without it",
                                rd_kafka_name(rk), timeout_ms);
        }
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* One ListOffsets for \p which (RD_KAFKA_OFFSET_BEGINNING or _END as the
 * timestamp), bounded by the absolute monotonic \p deadline_us. */
static rd_kafka_resp_err_t tb_bus_list_offset(rd_kafka_t *rk, const char *topic, int32_t partition,
                                              int64_t which, int64_t deadline_us, int64_t *out) {
        int64_t left_ms = (deadline_us - tb_mono_us()) / 1000;
        if (left_ms <= 0)
                return RD_KAFKA_RESP_ERR__TIMED_OUT;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, partition)->offset = which;
        rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, (int)left_ms);
        if (!e)
                e = l->elems[0].err;
        if (!e)
                *out = l->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(l);
        return e;
}

/* Errors that mean "ask again where the partition is now". */
static bool tb_bus_leader_moved(rd_kafka_resp_err_t e) {
        return e == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
               e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
               e == RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH ||
               e == RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH ||
               e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE;
}

/* Refresh \p rk's metadata of \p topic: librdkafka does not learn a new
 * leader from a lookup's "not leader" answer, and a reader that fetches
 * nothing from the partition never refreshes it by itself. */
static void tb_bus_refresh_topic(rd_kafka_t *rk, const char *topic, int64_t deadline_us) {
        int64_t left_ms = (deadline_us - tb_mono_us()) / 1000;
        rd_kafka_topic_t *rkt = left_ms > 0 ? rd_kafka_topic_new(rk, topic, NULL) : NULL;
        const struct rd_kafka_metadata *md = NULL;
        if (!rkt)
                return;
        if (rd_kafka_metadata(rk, 0, rkt, &md, (int)(left_ms < 2000 ? left_ms : 2000)) ==
            RD_KAFKA_RESP_ERR_NO_ERROR)
                rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
}

rd_kafka_resp_err_t tb_bus_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition,
                                      int timeout_ms, int64_t *lo, int64_t *hi) {
        int64_t deadline = tb_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000;
        for (;;) {
                rd_kafka_resp_err_t e = tb_bus_list_offset(rk, topic, partition,
                                                           RD_KAFKA_OFFSET_BEGINNING, deadline, lo);
                if (!e)
                        e = tb_bus_list_offset(rk, topic, partition, RD_KAFKA_OFFSET_END,
                                               deadline, hi);
                if (!tb_bus_leader_moved(e) || tb_mono_us() + 100000 > deadline)
                        return e;
                tb_bus_refresh_topic(rk, topic, deadline);
                usleep(100 * 1000);
        }
}
