/**
 * @file scheduler/remote.c
 * @brief The other regions' copies of task-events (docs/replication.md):
 *        read for the partitions we own, with the start-up fence against
 *        each region's own Kafka, so a task a failover moved away stops
 *        firing here.
 */
#include "scheduler/role_internal.h"

#include "replication.h"
#include "serde/serde.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The TaskEvent's event_id into \p out ("" when it has none). */
static void tb_sched_event_id(const json_t *ev, char *out, size_t out_size) {
        const char *id = json_string_value(json_object_get(ev, "event_id"));
        tb_snprintf(out, out_size, "%s", id ? id : "");
}

static void tb_sched_remote_apply(tb_sched_role_t *r, const rd_kafka_message_t *m, char *event_id,
                                  size_t id_size) {
        json_t *ev;
        char err[512];
        if (event_id)
                event_id[0] = '\0';
        if (!(ev = tb_sched_decode(m, TB_SCHEMA_TASK_EVENT, rd_kafka_topic_name(m->rkt))))
                return;
        if (tb_sched_remote_event(r->s, m->partition, ev, tb_now_ms(), err, sizeof(err)) != TB_OK)
                tb_sched_warn_record(m, rd_kafka_topic_name(m->rkt), err);
        if (event_id)
                tb_sched_event_id(ev, event_id, id_size);
        json_decref(ev);
}

/* The event id of the last event of partition \p p of region \p ri's own
 * task-events, read from that region's Kafka; "" when it is empty.
 * @returns false when the region could not be read within \p ms. */
static bool tb_sched_fence_target(tb_sched_role_t *r, size_t ri, const char *bootstrap, int32_t p,
                                  int64_t ms, char *out, size_t out_size, int64_t *ts) {
        rd_kafka_t *rk = NULL;
        char errstr[1024], group[300];
        bool found = false;
        tb_buf_t value = {0};
        out[0] = '\0';
        tb_snprintf(group, sizeof(group), "%s.fence", r->group);
        tb_err_t err = tb_repl_reader_new(r->conf, bootstrap, group, &rk, errstr, sizeof(errstr));
        if (!err)
                err = tb_repl_last_record(rk, r->t_ev, p, (int)ms, &found, ts, NULL, &value,
                                          errstr, sizeof(errstr));
        if (rk)
                tb_bus_consumer_destroy(rk, 5000);
        if (err) {
                tb_warn(TB_SCHED_LOG,
                        "partition %d: region %s's Kafka (%s) cannot be read: %s; its "
                        "copied events are not fenced for 5 min (docs/replication.md)",
                        (int)p, r->conf->repl_remote_regions[ri], bootstrap, errstr);
                tb_buf_free(&value);
                return false;
        }
        if (found) {
                json_t *ev = NULL;
                char derr[256];
                if (tb_serde_decode(value.data, value.len, TB_SCHEMA_TASK_EVENT, NULL, &ev, derr,
                                    sizeof(derr)) == TB_OK)
                        tb_sched_event_id(ev, out, out_size);
                json_decref(ev);
        }
        tb_buf_free(&value);
        return true;
}

/*
 * Read partition \p p of each other region's copy of task-events from where
 * the projection left it. The start-up fence: when that region's Kafka is
 * known (replication.region_kafka), read until the copy holds the last
 * event of the region's own partition, waiting for MirrorMaker 2 up to
 * replication.startup_fence, so a region coming back after a failover sees
 * the HOME_MOVED events before it could fire a moved task.
 */
void tb_sched_load_remote(tb_sched_role_t *r, int32_t p) {
        for (size_t ri = 0; ri < r->rcnt && !tb_sched_role_stopping(r); ri++) {
                const char *region = r->conf->repl_remote_regions[ri];
                const char *bs = tb_repl_region_kafka(r->conf, region);
                int64_t fence = r->conf->repl_startup_fence_ms;
                int64_t *pos = &r->rpos[(size_t)p * r->rcnt + ri];
                char target[64] = "", seen_id[64];
                bool fenced = false, seen = false;
                int64_t t0 = tb_mono_us(), target_ts = 0;
                if (bs && fence > 0 && tb_now_ms() >= r->fence_skip_until[ri]) {
                        fenced = tb_sched_fence_target(r, ri, bs, p, fence, target, sizeof(target),
                                                       &target_ts);
                        if (!fenced)
                                r->fence_skip_until[ri] = tb_now_ms() + 5 * 60 * 1000;
                }
                if (target[0]) {
                        /* The copy may hold it already, before where the projection
                         * left off: MM2 keeps order and timestamps, so a last record
                         * as recent as the target means the target is in. */
                        bool cf = false;
                        int64_t cts = 0;
                        char lerr[512];
                        if (tb_repl_last_record(r->ck, r->t_rev[ri], p, 10000, &cf, &cts, NULL,
                                                NULL, lerr, sizeof(lerr)) == TB_OK &&
                            cf && cts >= target_ts)
                                seen = true;
                }
                int64_t lo = 0, hi = 0;
                rd_kafka_resp_err_t e = tb_bus_watermarks(r->ck, r->t_rev[ri], p, 10000, &lo, &hi);
                if ((!target[0] || seen) && (e || hi <= (*pos > lo ? *pos : lo))) {
                        /* nothing to wait for and nothing (yet) to read */
                        if (seen)
                                tb_info(TB_SCHED_LOG,
                                        "partition %d: region %s's copy holds its last "
                                        "event (fenced)",
                                        (int)p, region);
                        if (e)
                                tb_warn(TB_SCHED_LOG,
                                        "%s [%d]: %s (run `taskbus admin topics ensure`)",
                                        r->t_rev[ri], (int)p, rd_kafka_err2str(e));
                        continue;
                }
                if ((e = tb_sched_load_assign(r, r->t_rev[ri], p,
                                              *pos >= 0 ? *pos : RD_KAFKA_OFFSET_BEGINNING))) {
                        tb_warn(TB_SCHED_LOG, "%s [%d]: %s", r->t_rev[ri], (int)p,
                                rd_kafka_err2str(e));
                        continue;
                }
                int64_t deadline = t0 + (target[0] && !seen ? fence : TB_SCHED_LOAD_WAIT_MS) * 1000;
                size_t n = 0;
                while (!tb_sched_role_stopping(r)) {
                        if (tb_mono_us() > deadline) {
                                if (target[0] && !seen)
                                        tb_warn(TB_SCHED_LOG,
                                                "partition %d: this region's copy of region "
                                                "%s's task-events still lacks its last event "
                                                "after %.0f s (is MirrorMaker 2 running?): "
                                                "loading without it",
                                                (int)p, region, (double)fence / 1000.0);
                                r->fence_skip_until[ri] = tb_now_ms() + 5 * 60 * 1000;
                                break;
                        }
                        bool eof;
                        rd_kafka_message_t *m = tb_sched_load_poll(r, &eof);
                        if (eof && (!target[0] || seen))
                                break;
                        if (!m)
                                continue; /* at the end: MirrorMaker 2 has not copied it yet */
                        if (m->err) {
                                tb_warn(TB_SCHED_LOG, "%s [%d]: %s", r->t_rev[ri], (int)p,
                                        rd_kafka_message_errstr(m));
                                bool gone = m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                                            m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
                                rd_kafka_message_destroy(m);
                                if (gone && !target[0])
                                        break;
                                continue;
                        }
                        if (m->offset >= *pos) {
                                tb_sched_remote_apply(r, m, seen_id, sizeof(seen_id));
                                *pos = m->offset + 1;
                                n++;
                                if (target[0] && (!strcmp(seen_id, target) ||
                                                  rd_kafka_message_timestamp(m, NULL) > target_ts))
                                        seen = true;
                        }
                        rd_kafka_message_destroy(m);
                }
                rd_kafka_assign(r->ck, NULL);
                tb_sched_adopt_moved(r);
                tb_info(TB_SCHED_LOG,
                        "partition %d: %zu event(s) of region %s's copy applied in %.3f s%s",
                        (int)p, n, region, (double)(tb_mono_us() - t0) / 1e6,
                        !bs                    ? " (not fenced: no replication.region_kafka for it)"
                        : seen                 ? " (fenced: holds the region's last event)"
                        : fenced && !target[0] ? " (fenced: the region's partition is empty)"
                                               : " (NOT fenced)");
        }
}

/* The other regions' copies: the partitions we own, at our positions. */
void tb_sched_remote_assign(tb_sched_role_t *r) {
        if (!r->rcnt)
                return;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                tb_sched_part_t *part = tb_sched_part(r->s, p);
                if (!part->owned)
                        continue;
                for (size_t ri = 0; ri < r->rcnt; ri++) {
                        int64_t pos = r->rpos[(size_t)p * r->rcnt + ri];
                        rd_kafka_topic_partition_list_add(l, r->t_rev[ri], p)->offset =
                                pos >= 0 ? pos : RD_KAFKA_OFFSET_BEGINNING;
                }
        }
        rd_kafka_resp_err_t e = rd_kafka_assign(r->rv, l);
        if (e)
                tb_error(TB_SCHED_LOG, "assignment of the other regions' copies: %s",
                         rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
}

void tb_sched_on_remote(tb_sched_role_t *r, rd_kafka_message_t *m) {
        const char *tname = rd_kafka_topic_name(m->rkt);
        tb_sched_part_t *part = tb_sched_part(r->s, m->partition);
        if (!part || !part->owned)
                return;
        for (size_t ri = 0; ri < r->rcnt; ri++) {
                if (strcmp(tname, r->t_rev[ri]))
                        continue;
                if (tb_sched_take(part, &r->rpos[(size_t)m->partition * r->rcnt + ri], m))
                        tb_sched_remote_apply(r, m, NULL, 0);
                return;
        }
}
