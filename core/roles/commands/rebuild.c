/**
 * @file commands/rebuild.c
 * @brief Rebuilding and following the state of a partition from task-events.
 */
#include "commands/cmd_internal.h"

/** Apply the TaskEvent of record \p m to the state; a record that is not one
 *  is skipped with a warning prefixed by \p what. @returns true if applied. */
static bool tb_cmd_apply_record(tb_cmd_t *cmd, const rd_kafka_message_t *m, const char *what) {
        json_t *ev = NULL;
        char derr[512];
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_TASK_EVENT, NULL, &ev, derr,
                            sizeof(derr)) != TB_OK) {
                tb_warn(TB_CMD_SUB, "%s%s [%" PRId32 "] offset %" PRId64
                        " is not a TaskEvent (%s): skipped",
                        what, m->rkt ? rd_kafka_topic_name(m->rkt) : "", m->partition, m->offset,
                        derr);
                return false;
        }
        tb_cmd_engine_apply_event(cmd->engine, m->partition, ev);
        json_decref(ev);
        return true;
}

/** Assign \p l to the follower (incrementally). */
static void tb_cmd_follow_assign(tb_cmd_t *cmd, rd_kafka_topic_partition_list_t *l, bool add) {
        if (!l->cnt)
                return;
        rd_kafka_error_t *e = add ? rd_kafka_incremental_assign(cmd->follower, l)
                                  : rd_kafka_incremental_unassign(cmd->follower, l);
        if (e) {
                tb_error(TB_CMD_SUB, "task-events follower: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
}

/** Stop following partition numbers \p parts (local and copies). */
void tb_cmd_unfollow(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int i = 0; i < parts->cnt; i++) {
                int32_t p = parts->elems[i].partition;
                if (p < 0 || p >= cmd->partition_cnt || !cmd->followed[p])
                        continue;
                cmd->followed[p] = false;
                rd_kafka_topic_partition_list_add(l, cmd->events_topic, p);
                for (size_t r = 0; r < cmd->remote_cnt; r++)
                        rd_kafka_topic_partition_list_add(l, cmd->remote_events[r], p);
        }
        tb_cmd_follow_assign(cmd, l, false);
        rd_kafka_topic_partition_list_destroy(l);
}

/**
 * Rebuild the state of task-events partitions \p parts (same numbers as the
 * task-commands partitions), and of the same partitions of the other
 * regions' copies: read each from the beginning up to its end
 * (read_committed: the last stable offset), replacing what was held; then
 * the follower continues from there.
 */
tb_err_t tb_cmd_load(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts,
                     char *errstr, size_t errstr_size) {
        int64_t t0 = tb_mono_us();
        int n = parts->cnt * (int)(1 + cmd->remote_cnt);
        if (parts->cnt == 0)
                return TB_OK;
        int64_t *end = calloc((size_t)n, sizeof(*end));
        bool *done = calloc((size_t)n, sizeof(*done));
        const char **topic = calloc((size_t)n, sizeof(*topic));
        int32_t *part = calloc((size_t)n, sizeof(*part));
        rd_kafka_topic_partition_list_t *as = rd_kafka_topic_partition_list_new(n);
        rd_kafka_topic_partition_list_t *fl = rd_kafka_topic_partition_list_new(n);
        tb_err_t err = TB_OK;
        int remaining = 0;
        size_t events = 0;
        if (!end || !done || !topic || !part || !as || !fl) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "rebuild: out of memory");
                goto out;
        }
        tb_cmd_unfollow(cmd, parts);
        for (int i = 0; i < parts->cnt; i++)
                tb_cmd_engine_drop_partition(cmd->engine, parts->elems[i].partition);
        for (int i = 0; i < n; i++) {
                int32_t p = parts->elems[i % parts->cnt].partition;
                int r = i / parts->cnt; /* 0: local; r: remote_events[r - 1] */
                int64_t lo = 0, hi = 0;
                topic[i] = r == 0 ? cmd->events_topic : cmd->remote_events[r - 1];
                part[i] = p;
                rd_kafka_resp_err_t rerr = rd_kafka_query_watermark_offsets(
                        cmd->loader, topic[i], p, &lo, &hi, 30000);
                if (rerr && r > 0) {
                        /* a copy MirrorMaker 2 has not created yet: follow it from
                         * its beginning once it exists */
                        tb_warn(TB_CMD_SUB, "rebuild: %s [%" PRId32 "]: %s; following it from "
                                "its beginning", topic[i], p, rd_kafka_err2str(rerr));
                        done[i] = true;
                        rd_kafka_topic_partition_list_add(fl, topic[i], p)->offset =
                                RD_KAFKA_OFFSET_BEGINNING;
                        continue;
                }
                if (rerr) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                        "rebuild: end offset of %s [%" PRId32 "]: %s", topic[i],
                                        p, rd_kafka_err2str(rerr));
                        goto out;
                }
                end[i] = hi;
                /* a single region has no copies and no failover writes to follow */
                if (cmd->remote_cnt)
                        rd_kafka_topic_partition_list_add(fl, topic[i], p)->offset = hi;
                if (hi <= lo) {
                        done[i] = true;
                        continue;
                }
                rd_kafka_topic_partition_list_add(as, topic[i], p)->offset =
                        RD_KAFKA_OFFSET_BEGINNING;
                remaining++;
        }
        if (remaining == 0)
                goto out;
        rd_kafka_resp_err_t rerr = rd_kafka_assign(cmd->loader, as);
        if (rerr) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "rebuild: assign %s: %s",
                                cmd->events_topic, rd_kafka_err2str(rerr));
                goto out;
        }
        while (remaining > 0) {
                if (atomic_load(&cmd->ctx->stopping)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                        "rebuild: interrupted by shutdown");
                        break;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->loader, 200);
                if (!m)
                        continue;
                int idx = -1;
                const char *tname = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
                for (int i = 0; i < n; i++)
                        if (part[i] == m->partition && !strcmp(topic[i], tname))
                                idx = i;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        /* caught up with the last stable offset */
                        if (idx >= 0 && !done[idx]) {
                                done[idx] = true;
                                remaining--;
                        }
                } else if (m->err) {
                        tb_warn(TB_CMD_SUB, "rebuild: reading %s: %s", tname,
                                rd_kafka_message_errstr(m));
                } else if (idx >= 0 && !done[idx]) {
                        if (tb_cmd_apply_record(cmd, m, "rebuild: "))
                                events++;
                        if (m->offset + 1 >= end[idx]) {
                                done[idx] = true;
                                remaining--;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(cmd->loader, NULL);
out:
        if (!err) {
                tb_cmd_follow_assign(cmd, fl, true);
                for (int i = 0; i < parts->cnt; i++) {
                        int32_t p = parts->elems[i].partition;
                        if (p >= 0 && p < cmd->partition_cnt && cmd->remote_cnt)
                                cmd->followed[p] = true;
                }
                tb_info(TB_CMD_SUB, "rebuilt %d partition(s) from %s%s: %zu events, %zu tasks held, %.3f s",
                        parts->cnt, cmd->events_topic,
                        cmd->remote_cnt ? " and the other regions' copies" : "", events,
                        tb_cmd_engine_task_count(cmd->engine), (double)(tb_mono_us() - t0) / 1e6);
        }
        free(end);
        free(done);
        free(topic);
        free(part);
        if (as)
                rd_kafka_topic_partition_list_destroy(as);
        if (fl)
                rd_kafka_topic_partition_list_destroy(fl);
        return err;
}

/**
 * Apply what the follower has: events this role did not write (a
 * failover's HOME_MOVED) and the other regions' events. Called between
 * batches only, so no transaction's undo log is open.
 */
void tb_cmd_follow(tb_cmd_t *cmd) {
        for (int i = 0; i < 1000; i++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->follower, 0);
                if (!m)
                        return;
                if (!m->err && m->partition >= 0 && m->partition < cmd->partition_cnt &&
                    cmd->followed[m->partition]) {
                        tb_cmd_apply_record(cmd, m, "");
                } else if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        tb_debug(TB_CMD_SUB, "task-events follower: %s",
                                 rd_kafka_message_errstr(m));
                }
                rd_kafka_message_destroy(m);
        }
}

/** An assign-only consumer of task-events (never joins its group). */
tb_err_t tb_cmd_loader_new(tb_cmd_t *cmd, rd_kafka_t **out, char *errstr,
                           size_t errstr_size) {
        const tb_config_t *conf = cmd->ctx->conf;
        char group[300];
        tb_snprintf(group, sizeof(group), "%scommands-loader", conf->topic_prefix);
        tb_reader_opts_t o = {.group_id = group, .read_committed = true, .partition_eof = true};
        return tb_bus_reader_new(conf, &o, out, errstr, errstr_size);
}
