/**
 * @file commands/rebuild.c
 * @brief Rebuilding and following the state of a partition: the live tasks
 *        of the PostgreSQL projection at the projector's offset of
 *        task-events, then task-events from that offset to its end; and
 *        evicting deleted tasks once the projection holds their deletion.
 *
 * Why the snapshot plus the tail equals the state read from offset 0: the
 * projector writes the tasks rows and its consumed offset X of each topic
 * partition in one PostgreSQL transaction, read here in one REPEATABLE READ
 * snapshot, so the rows are exactly the events before X (applied by the
 * same (epoch, version) rule as the engine's, a deleted task having no row).
 * Events from X on are newer than those before X on the same topic; applying
 * them with the engine's rule gives the state of offset 0, whether the
 * projection lags (a longer tail) or not. Three things the rows do not
 * carry are handled apart: deleted tasks (no row: a CREATE of their id asks
 * task_history, engine.h env.id_used), events the projector quarantined
 * (read back from the quarantine table and applied unless task_history has
 * a newer event of the task), and, with other regions' copies, an older
 * event on one topic of a task deleted on another (skipped when task_history
 * has a newer event: what a held tombstone did before).
 */
#include "commands/cmd_internal.h"

#include "projection/projection.h"
#include "store/offsets.h"
#include "store/quarantine.h"
#include "store/tasks.h"
#include "task/task.h"

/** Most quarantined records of one topic read back per rebuild. */
#define TB_CMD_QUARANTINE_MAX 100000
/** Deleted tasks checked against the projection per statement, and how often. */
#define TB_CMD_EVICT_CHUNK 2000
#define TB_CMD_EVICT_EVERY_US 1000000

/**
 * With other regions' copies, an event of a task the state does not hold may
 * be older than the task's deletion on another topic (the tombstone that
 * stopped it was evicted, or never held because the snapshot has no row for
 * a deleted task). @returns true if task_history has a newer event of it,
 * so that the event can never be the task's state.
 */
static bool tb_cmd_superseded(tb_cmd_t *cmd, PGconn *conn, const json_t *ev) {
        const char *id = tb_cmd_jstr(ev, "task_id");
        if (!cmd->remote_cnt || !*id || tb_cmd_engine_get(cmd->engine, id))
                return false;
        char err[512];
        bool newer = false;
        PGconn *pooled = conn ? NULL : tb_store_acquire_timeout(cmd->ctx->store, 30000);
        if (!conn && !pooled) {
                tb_warn(TB_CMD_SUB, "task %s: no PostgreSQL connection to check for a newer "
                        "event; applying it", id);
                return false;
        }
        if (tb_store_tasks_newer_exists(conn ? conn : pooled, id,
                                        json_integer_value(json_object_get(ev, "epoch")),
                                        json_integer_value(json_object_get(ev, "version")), &newer,
                                        err, sizeof(err)))
                tb_warn(TB_CMD_SUB, "task %s: %s; applying the event", id, err);
        if (pooled)
                tb_store_release(cmd->ctx->store, pooled);
        return newer;
}

/** Apply the TaskEvent of \p payload; a record that is not one is skipped
 *  with a warning naming \p what. @returns true if applied. */
static bool tb_cmd_apply_payload(tb_cmd_t *cmd, PGconn *conn, const void *payload, size_t len,
                                 const char *topic, int32_t partition, int64_t offset,
                                 const char *what) {
        json_t *ev = NULL;
        char derr[512];
        if (tb_serde_decode(payload, len, TB_SCHEMA_TASK_EVENT, NULL, &ev, derr, sizeof(derr)) !=
            TB_OK) {
                tb_warn(TB_CMD_SUB, "%s%s [%" PRId32 "] offset %" PRId64
                        " is not a TaskEvent (%s): skipped",
                        what, topic, partition, offset, derr);
                return false;
        }
        bool apply = !tb_cmd_superseded(cmd, conn, ev);
        if (apply)
                tb_cmd_engine_apply_event(cmd->engine, partition, ev);
        json_decref(ev);
        return apply;
}

/** Apply the TaskEvent of record \p m to the state; a record that is not one
 *  is skipped with a warning prefixed by \p what. @returns true if applied. */
static bool tb_cmd_apply_record(tb_cmd_t *cmd, const rd_kafka_message_t *m, const char *what) {
        return tb_cmd_apply_payload(cmd, NULL, m->payload, m->len,
                                    m->rkt ? rd_kafka_topic_name(m->rkt) : "", m->partition,
                                    m->offset, what);
}

/* The projector's quarantined records of \p topic [p] before \p start: the
 * projection does not hold them, the state read from offset 0 does. Applied
 * in offset order, unless task_history has a newer event of their task. */
static tb_err_t tb_cmd_snapshot_quarantined(tb_cmd_t *cmd, PGconn *conn, const char *topic,
                                            int32_t p, int64_t start, size_t *applied,
                                            char *errstr, size_t errstr_size) {
        PGresult *res = NULL;
        /* the projector quarantines under its own name, its consumer name */
        tb_err_t err = tb_store_quarantine_list(conn, TB_PROJECTION_CONSUMER, topic, NULL,
                                                TB_CMD_QUARANTINE_MAX, &res, errstr, errstr_size);
        if (err)
                return err;
        for (int i = PQntuples(res) - 1; i >= 0 && !err; i--) { /* newest first: reversed */
                int64_t off = strtoll(PQgetvalue(res, i, 4), NULL, 10);
                if (strtol(PQgetvalue(res, i, 3), NULL, 10) != p || off >= start)
                        continue;
                tb_store_quarantine_row_t row;
                memset(&row, 0, sizeof(row));
                err = tb_store_quarantine_get(conn, strtoll(PQgetvalue(res, i, 0), NULL, 10),
                                              &row, errstr, errstr_size);
                if (!err && row.has_value) {
                        json_t *ev = NULL;
                        char derr[512];
                        bool newer = true;
                        if (tb_serde_decode(row.value.data, row.value.len, TB_SCHEMA_TASK_EVENT,
                                            NULL, &ev, derr, sizeof(derr)) == TB_OK &&
                            !(err = tb_store_tasks_newer_exists(
                                      conn, tb_cmd_jstr(ev, "task_id"),
                                      json_integer_value(json_object_get(ev, "epoch")),
                                      json_integer_value(json_object_get(ev, "version")), &newer,
                                      errstr, errstr_size)) &&
                            !newer) {
                                tb_cmd_engine_apply_event(cmd->engine, p, ev);
                                (*applied)++;
                        }
                        if (ev)
                                json_decref(ev);
                }
                tb_store_quarantine_row_free(&row);
        }
        PQclear(res);
        return err;
}

/**
 * The projection's state of partition \p p into the engine: its live tasks,
 * and in \p start[t] the projector's next offset of \p topics[t] [p], where
 * the events it does not hold begin. One REPEATABLE READ snapshot, so the
 * rows and the offsets agree. Serves the group consumer between fetches.
 */
static tb_err_t tb_cmd_snapshot(tb_cmd_t *cmd, int32_t p, const char *const *topics,
                                int ntopics, int64_t *start, size_t *tasks, char *errstr,
                                size_t errstr_size) {
        PGresult *res = NULL;
        size_t quarantined = 0;
        tb_err_t err;
        PGconn *conn = tb_store_acquire_timeout(cmd->ctx->store, 30000);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "snapshot of partition %" PRId32
                                 ": no PostgreSQL connection within 30 s",
                                 p);
        if ((err = tb_store_exec(conn, "begin snapshot",
                                 "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL,
                                 errstr, errstr_size)))
                goto out;
        for (int t = 0; t < ntopics; t++)
                if ((err = tb_store_offsets_get(conn, TB_PROJECTION_CONSUMER, topics[t], p, 0,
                                                &start[t], errstr, errstr_size)))
                        goto out;
        if ((err = tb_store_tasks_snapshot_cursor(conn, "tb_cmd_snapshot", p, errstr,
                                                  errstr_size)))
                goto out;
        for (;;) {
                tb_cmd_serve(cmd);
                if ((err = tb_store_exec(conn, "fetch snapshot",
                                         "FETCH 2000 FROM tb_cmd_snapshot",
                                         0, NULL, &res, errstr, errstr_size)))
                        goto out;
                int n = PQntuples(res);
                for (int i = 0; i < n; i++) {
                        json_error_t jerr;
                        json_t *task = json_loads(PQgetvalue(res, i, 3), 0, &jerr);
                        if (!task) {
                                /* the projector wrote it from a valid event: a bug */
                                tb_error(TB_CMD_SUB, "snapshot: task %s: its stored spec does "
                                         "not parse (%s); commands for it are answered "
                                         "INTERNAL", PQgetvalue(res, i, 0), jerr.text);
                        }
                        tb_cmd_engine_load_task(cmd->engine, p, PQgetvalue(res, i, 0),
                                                strtoll(PQgetvalue(res, i, 1), NULL, 10),
                                                strtoll(PQgetvalue(res, i, 2), NULL, 10), task,
                                                strtoll(PQgetvalue(res, i, 4), NULL, 10),
                                                PQgetvalue(res, i, 5));
                        (*tasks)++;
                }
                PQclear(res);
                res = NULL;
                if (n == 0)
                        break;
        }
        for (int t = 0; t < ntopics && !err; t++)
                err = tb_cmd_snapshot_quarantined(cmd, conn, topics[t], p, start[t], &quarantined,
                                                  errstr, errstr_size);
        if (!err)
                err = tb_store_exec(conn, "end snapshot", "COMMIT", 0, NULL, NULL, errstr,
                                    errstr_size);
out:
        PQclear(res);
        if (err)
                tb_store_exec(conn, "end snapshot", "ROLLBACK", 0, NULL, NULL, NULL, 0);
        tb_store_release(cmd->ctx->store, conn);
        if (quarantined)
                tb_info(TB_CMD_SUB, "partition %" PRId32 ": %zu event(s) the projector "
                        "quarantined applied from the quarantine table", p, quarantined);
        return err;
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
 * regions' copies, replacing what was held: the projection's snapshot, then
 * each topic partition from the projector's offset up to its end
 * (read_committed: the last stable offset); then the follower continues
 * from there. Without the projection (PostgreSQL unreachable) a partition
 * is read from the beginning, as before there was a snapshot.
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
        int64_t *start = calloc((size_t)n, sizeof(*start));
        const char **ptopics = calloc(1 + cmd->remote_cnt, sizeof(*ptopics));
        int64_t *pstart = calloc(1 + cmd->remote_cnt, sizeof(*pstart));
        int64_t last_serve = 0;
        size_t snap_tasks = 0;
        rd_kafka_topic_partition_list_t *as = rd_kafka_topic_partition_list_new(n);
        rd_kafka_topic_partition_list_t *fl = rd_kafka_topic_partition_list_new(n);
        tb_err_t err = TB_OK;
        int remaining = 0;
        size_t events = 0;
        if (!end || !done || !topic || !part || !start || !ptopics || !pstart || !as || !fl) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "rebuild: out of memory");
                goto out;
        }
        tb_cmd_unfollow(cmd, parts);
        for (int i = 0; i < parts->cnt; i++)
                tb_cmd_engine_drop_partition(cmd->engine, parts->elems[i].partition);
        ptopics[0] = cmd->events_topic;
        for (size_t r = 0; r < cmd->remote_cnt; r++)
                ptopics[1 + r] = cmd->remote_events[r];
        for (int i = 0; i < parts->cnt; i++) {
                int32_t p = parts->elems[i].partition;
                char serr[512];
                if (tb_cmd_snapshot(cmd, p, ptopics, 1 + (int)cmd->remote_cnt, pstart,
                                    &snap_tasks, serr, sizeof(serr)) != TB_OK) {
                        tb_warn(TB_CMD_SUB, "rebuild: partition %" PRId32 " without the "
                                "projection (%s): reading task-events from the beginning",
                                p, serr);
                        tb_cmd_engine_drop_partition(cmd->engine, p);
                        memset(pstart, 0, (1 + cmd->remote_cnt) * sizeof(*pstart));
                }
                for (size_t r = 0; r <= cmd->remote_cnt; r++)
                        start[r * (size_t)parts->cnt + (size_t)i] = pstart[r];
        }
        for (int i = 0; i < n; i++) {
                int32_t p = parts->elems[i % parts->cnt].partition;
                int r = i / parts->cnt; /* 0: local; r: remote_events[r - 1] */
                int64_t lo = 0, hi = 0;
                topic[i] = r == 0 ? cmd->events_topic : cmd->remote_events[r - 1];
                part[i] = p;
                rd_kafka_resp_err_t rerr =
                        tb_bus_watermarks(cmd->loader, topic[i], p, 30000, &lo, &hi);
                if (rerr && r > 0) {
                        /* a copy MirrorMaker 2 has not created yet: follow it from
                         * its beginning once it exists */
                        tb_warn(TB_CMD_SUB, "rebuild: %s [%" PRId32 "]: %s; following it from "
                                "its beginning", topic[i], p, rd_kafka_err2str(rerr));
                        done[i] = true;
                        rd_kafka_topic_partition_list_add(fl, topic[i], p)->offset =
                                start[i] > 0 ? start[i] : RD_KAFKA_OFFSET_BEGINNING;
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
                if (hi <= lo || hi <= start[i]) {
                        done[i] = true;
                        continue;
                }
                rd_kafka_topic_partition_list_add(as, topic[i], p)->offset =
                        start[i] > lo ? start[i] : RD_KAFKA_OFFSET_BEGINNING;
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
                if (tb_mono_us() - last_serve > 200000) {
                        /* a long tail does not keep the group waiting */
                        tb_cmd_serve(cmd);
                        last_serve = tb_mono_us();
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
                tb_info(TB_CMD_SUB, "rebuilt %d partition(s): %zu tasks from the projection, then "
                        "%zu events of %s%s from the projector's offsets; %zu tasks held, "
                        "%.3f s",
                        parts->cnt, snap_tasks, events, cmd->events_topic,
                        cmd->remote_cnt ? " and the other regions' copies" : "",
                        tb_cmd_engine_task_count(cmd->engine), (double)(tb_mono_us() - t0) / 1e6);
                tb_metrics_observe("taskbus_commands_rebuild_seconds", NULL,
                                   (double)(tb_mono_us() - t0) / 1e6);
        }
        free(end);
        free(done);
        free(topic);
        free(part);
        free(start);
        free(ptopics);
        free(pstart);
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

/**
 * Evict the deleted tasks whose deletion the projection holds (at most once
 * a second, between batches): from then on a CREATE of their id is answered
 * from task_history (tb_cmd_id_used()). With other regions' copies, a
 * deletion this role decided waits until the follower read it back, so that
 * no older event of the task still on its way is taken for a new task.
 */
void tb_cmd_evict(tb_cmd_t *cmd) {
        const tb_cmd_task_t *del[TB_CMD_EVICT_CHUNK];
        if (!tb_cmd_engine_deleted_count(cmd->engine) ||
            tb_mono_us() - cmd->evicted_at < TB_CMD_EVICT_EVERY_US)
                return;
        cmd->evicted_at = tb_mono_us();
        size_t n = tb_cmd_engine_deleted(cmd->engine, del, TB_CMD_EVICT_CHUNK), asked = 0;
        tb_buf_t ids = {0}, vers = {0};
        tb_buf_append(&ids, "{", 1);
        tb_buf_append(&vers, "{", 1);
        for (size_t i = 0; i < n; i++) {
                const tb_cmd_task_t *t = del[i];
                if (!t->logged && t->partition >= 0 && t->partition < cmd->partition_cnt &&
                    cmd->followed[t->partition])
                        continue;
                tb_store_array_add(&ids, t->id);
                tb_buf_printf(&vers, "%s%" PRId64, asked ? "," : "", t->version);
                asked++;
        }
        tb_buf_append(&ids, "}", 2);
        tb_buf_append(&vers, "}", 2);
        PGconn *conn = asked ? tb_store_acquire_timeout(cmd->ctx->store, 1000) : NULL;
        PGresult *res = NULL;
        char err[512];
        size_t evicted = 0;
        if (conn && tb_store_tasks_projected(conn, ids.data, vers.data, &res, err,
                                             sizeof(err)) == TB_OK) {
                for (int i = 0; i < PQntuples(res); i++)
                        evicted += tb_cmd_engine_evict(cmd->engine, PQgetvalue(res, i, 0),
                                                       strtoll(PQgetvalue(res, i, 1), NULL, 10));
        } else if (conn) {
                tb_debug(TB_CMD_SUB, "evicting deleted tasks: %s", err);
        }
        PQclear(res);
        if (conn)
                tb_store_release(cmd->ctx->store, conn);
        tb_buf_free(&ids);
        tb_buf_free(&vers);
        if (evicted)
                tb_debug(TB_CMD_SUB, "evicted %zu deleted task(s) the projection holds; %zu held "
                         "(%zu deleted)", evicted, tb_cmd_engine_task_count(cmd->engine),
                         tb_cmd_engine_deleted_count(cmd->engine));
        /* a whole chunk went: the next one may go too, without waiting */
        if (evicted == TB_CMD_EVICT_CHUNK)
                cmd->evicted_at = 0;
}

/**
 * Which of \p ids (borrowed strings) the projection has events of, into
 * \p used (a JSON object: id -> true or false for every id asked).
 */
tb_err_t tb_cmd_ids_used(tb_cmd_t *cmd, const char *const *ids, size_t n, json_t *used,
                         char *errstr, size_t errstr_size) {
        if (!n)
                return TB_OK;
        tb_buf_t arr = {0};
        tb_buf_append(&arr, "{", 1);
        for (size_t i = 0; i < n; i++)
                tb_store_array_add(&arr, ids[i]);
        tb_buf_append(&arr, "}", 2);
        PGresult *res = NULL;
        tb_err_t err;
        PGconn *conn = tb_store_acquire_timeout(cmd->ctx->store, 5000);
        if (!conn) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                "no PostgreSQL connection within 5 s");
        } else if (!(err = tb_store_tasks_ids_used(conn, arr.data, &res, errstr, errstr_size))) {
                for (size_t i = 0; i < n; i++)
                        json_object_set_new(used, ids[i], json_false());
                for (int i = 0; i < PQntuples(res); i++)
                        json_object_set_new(used, PQgetvalue(res, i, 0),
                                            json_string(PQgetvalue(res, i, 1)));
        }
        PQclear(res);
        if (conn)
                tb_store_release(cmd->ctx->store, conn);
        tb_buf_free(&arr);
        return err;
}
