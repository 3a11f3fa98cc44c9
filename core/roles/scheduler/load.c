/**
 * @file scheduler/load.c
 * @brief Loading a partition the group gave us: the committed position, the
 *        PostgreSQL projection at a known offset, its checkpoints, the tasks
 *        a failover moved here; and the reload after a failed transaction.
 */
#include "scheduler/role_internal.h"
#include "store/calendars.h"

#include "bus/pgsink.h"
#include "projection/projection.h"
#include "serde/serde.h"
#include "store/offsets.h"
#include "store/runs.h"
#include "store/tasks.h"
#include "store/store.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The committed offset of \p topic [p] for our group; librdkafka asks with
 * require_stable (read_committed), so this waits while a transaction that
 * carries offsets for it is still open: a zombie's last transaction is
 * settled before we read what it wrote. */
static tb_err_t tb_sched_committed_offset(tb_sched_role_t *r, rd_kafka_t *rk, const char *topic,
                                          int32_t p, int64_t *off, char *errstr,
                                          size_t errstr_size) {
        int64_t deadline = tb_mono_us() + (int64_t)TB_SCHED_LOAD_WAIT_MS * 1000;
        rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
        while (!tb_sched_role_stopping(r)) {
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, topic, p);
                e = rd_kafka_committed(rk, l, 10000);
                if (!e)
                        e = l->elems[0].err;
                *off = l->elems[0].offset;
                rd_kafka_topic_partition_list_destroy(l);
                if (!e)
                        return TB_OK;
                if (tb_mono_us() > deadline)
                        break;
                tb_warn(TB_SCHED_LOG, "committed offset of %s [%d]: %s; retrying", topic, (int)p,
                        rd_kafka_err2str(e));
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT, "committed offset of %s [%d]: %s",
                         topic, (int)p,
                         tb_sched_role_stopping(r) ? "stopping" : rd_kafka_err2str(e));
}

static void tb_sched_adopt_later(tb_sched_role_t *r, const char *tid, int64_t ms) {
        if (r->adopt_cnt == r->adopt_cap) {
                size_t nc = r->adopt_cap ? r->adopt_cap * 2 : 64;
                struct tb_sched_adopt *n = realloc(r->adopt, nc * sizeof(*n));
                if (!n)
                        return;
                r->adopt = n;
                r->adopt_cap = nc;
        }
        if ((r->adopt[r->adopt_cnt].tid = strdup(tid)))
                r->adopt[r->adopt_cnt++].ms = ms;
}

void tb_sched_adopt_clear(tb_sched_role_t *r) {
        for (size_t i = 0; i < r->adopt_cnt; i++)
                free(r->adopt[i].tid);
        r->adopt_cnt = 0;
}

static void tb_sched_adopt_flush(tb_sched_role_t *r) {
        for (size_t i = 0; i < r->adopt_cnt; i++) {
                tb_sched_task_adopt(r->s, r->adopt[i].tid, r->adopt[i].ms);
                free(r->adopt[i].tid);
        }
        r->adopt_cnt = 0;
}

/* Tasks a failover just moved here: resume each after the last scheduled
 * nominal time its old home fired, as far as its replicated runs tell
 * (docs/replication.md, RPO). Runs before the next tick. */
void tb_sched_adopt_moved(tb_sched_role_t *r) {
        char *tid;
        while ((tid = tb_sched_take_moved(r->s))) {
                int64_t last = TB_SCHED_NO_LAST;
                char errstr[512];
                for (int attempt = 0; attempt < 3; attempt++) {
                        PGconn *conn = tb_store_acquire_timeout(r->ctx->store, 10000);
                        bool found = false;
                        int64_t nominal = 0;
                        tb_err_t err = conn ? tb_store_runs_last_scheduled(conn, tid, &found,
                                                                           &nominal, errstr,
                                                                           sizeof(errstr))
                                            : TB_ERR_TIMEOUT;
                        if (conn)
                                tb_store_release(r->ctx->store, conn);
                        if (!err) {
                                if (found)
                                        last = nominal;
                                break;
                        }
                        tb_warn(TB_SCHED_LOG, "task %s moved here: reading its last run: %s", tid,
                                conn ? errstr : "no PostgreSQL connection");
                }
                char when[80] = "(none known: its checkpoint or its creation)";
                if (last != TB_SCHED_NO_LAST)
                        tb_time_format(last, when);
                tb_info(TB_SCHED_LOG, "task %s moved to region %s: fires resume after nominal %s",
                        tid, r->conf->region, when);
                tb_sched_task_adopt(r->s, tid, last);
                free(tid);
        }
}

static tb_err_t tb_sched_load_projection(tb_sched_role_t *r, int32_t p, int64_t *o_p, char *errstr,
                                         size_t errstr_size) {
        tb_err_t err;
        PGresult *res = NULL;
        size_t loaded = 0;
        int64_t now = tb_now_ms();
        PGconn *conn = tb_store_acquire_timeout(r->ctx->store, 30000);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "load partition %d: no PostgreSQL connection within 30 s",
                                 (int)p);
        /* one snapshot: the projector's offset and the rows it produced */
        if ((err = tb_store_exec(conn, "begin load", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                                 0, NULL, NULL, errstr, errstr_size)) ||
            (err = tb_store_offsets_get(conn, TB_PROJECTION_CONSUMER, r->t_ev, p, 0, o_p, errstr,
                                        errstr_size)))
                goto out;
        /* the copies of other regions' task-events: the projection holds
         * them up to these offsets too */
        for (size_t ri = 0; ri < r->rcnt; ri++)
                if ((err = tb_store_offsets_get(conn, TB_PROJECTION_CONSUMER, r->t_rev[ri], p,
                                                RD_KAFKA_OFFSET_BEGINNING,
                                                &r->rpos[(size_t)p * r->rcnt + ri], errstr,
                                                errstr_size)))
                        goto out;
        if ((err = tb_store_tasks_partition_cursor(conn, "tb_sched_load", p, r->conf->region,
                                                   errstr, errstr_size)))
                goto out;
        for (;;) {
                if ((err = tb_store_exec(conn, "fetch tasks", "FETCH 2000 FROM tb_sched_load", 0,
                                         NULL, &res, errstr, errstr_size)))
                        goto out;
                int n = PQntuples(res);
                for (int i = 0; i < n; i++) {
                        const char *id = PQgetvalue(res, i, 0);
                        json_error_t jerr;
                        json_t *norm = json_loads(PQgetvalue(res, i, 2), 0, &jerr);
                        json_t *spec = norm ? tb_task_to_spec(norm) : NULL;
                        char terr[512];
                        if (!spec ||
                            tb_sched_task_put(r->s, p, id, strtoll(PQgetvalue(res, i, 1), NULL, 10),
                                              strtoll(PQgetvalue(res, i, 3), NULL, 10), spec, now,
                                              terr, sizeof(terr)) != TB_OK)
                                tb_warn(TB_SCHED_LOG, "task %s (partition %d) is not scheduled: %s",
                                        id, (int)p, spec ? terr : "its stored spec does not parse");
                        else {
                                loaded++;
                                tb_sched_task_set_epoch(r->s, id,
                                                        strtoll(PQgetvalue(res, i, 4), NULL, 10));
                                if (!PQgetisnull(res, i, 5))
                                        tb_sched_adopt_later(
                                                r, id, strtoll(PQgetvalue(res, i, 5), NULL, 10));
                        }
                        json_decref(spec);
                        json_decref(norm);
                }
                PQclear(res);
                res = NULL;
                if (n == 0)
                        break;
        }
        err = tb_store_exec(conn, "end load", "COMMIT", 0, NULL, NULL, errstr, errstr_size);
out:
        PQclear(res);
        tb_store_release(r->ctx->store, conn);
        if (!err)
                tb_debug(TB_SCHED_LOG,
                         "partition %d: %zu tasks from the projection at offset %" PRId64, (int)p,
                         loaded, *o_p);
        return err;
}

rd_kafka_resp_err_t tb_sched_load_assign(tb_sched_role_t *r, const char *topic, int32_t p,
                                         int64_t offset) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = offset;
        rd_kafka_resp_err_t e = rd_kafka_assign(r->ck, l);
        rd_kafka_topic_partition_list_destroy(l);
        return e;
}

rd_kafka_message_t *tb_sched_load_poll(tb_sched_role_t *r, bool *eof) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->ck, 200);
        *eof = m && m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (*eof) {
                rd_kafka_message_destroy(m);
                return NULL;
        }
        return m;
}

static tb_err_t tb_sched_load_checkpoints(tb_sched_role_t *r, int32_t p, char *errstr,
                                          size_t errstr_size) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e = tb_bus_watermarks(r->ck, r->t_ck, p, 5000, &lo, &hi);
        if (e)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "checkpoints %s [%d]: watermarks: %s", r->t_ck, (int)p,
                                 rd_kafka_err2str(e));
        if (hi <= lo)
                return TB_OK;
        if ((e = tb_sched_load_assign(r, r->t_ck, p, RD_KAFKA_OFFSET_BEGINNING)))
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "checkpoints %s [%d]: %s",
                                 r->t_ck, (int)p, rd_kafka_err2str(e));
        tb_err_t err = TB_OK;
        size_t n = 0;
        int64_t deadline = tb_mono_us() + (int64_t)TB_SCHED_LOAD_WAIT_MS * 1000;
        for (;;) {
                if (tb_sched_role_stopping(r) || tb_mono_us() > deadline) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                        "checkpoints %s [%d]: not read to the end within %d s",
                                        r->t_ck, (int)p, TB_SCHED_LOAD_WAIT_MS / 1000);
                        break;
                }
                bool eof;
                rd_kafka_message_t *m = tb_sched_load_poll(r, &eof);
                json_t *v;
                if (eof)
                        break;
                if (!m)
                        continue;
                if (m->err) {
                        tb_warn(TB_SCHED_LOG, "checkpoints %s [%d]: %s", r->t_ck, (int)p,
                                rd_kafka_message_errstr(m));
                } else if ((v = tb_sched_decode(m, TB_SCHEMA_SCHEDULER_CHECKPOINT, r->t_ck))) {
                        char derr[256];
                        tb_sched_checkpoint(r->s, v, tb_now_ms(), derr, sizeof(derr));
                        n++;
                        json_decref(v);
                } else if (m->payload) {
                        /* not a tombstone: kept raw (once, however often it is loaded) */
                        char qerr[256];
                        (void)tb_pgsink_quarantine_one(r->ctx->store, TB_SCHED_LOG, m,
                                                       "not a SchedulerCheckpoint", qerr,
                                                       sizeof(qerr));
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(r->ck, NULL);
        tb_debug(TB_SCHED_LOG, "partition %d: %zu checkpoints", (int)p, n);
        return err;
}

/* Load partition \p p: where to tail task-events from goes to *\p start. */
tb_err_t tb_sched_load_partition(tb_sched_role_t *r, int32_t p, int64_t *start, char *errstr,
                                 size_t errstr_size) {
        int64_t committed = -1, o_p = 0, t[4];
        tb_err_t err;
        tb_sched_drop_partition(r->s, p);
        t[0] = tb_mono_us();
        if ((err = tb_sched_committed_offset(r, r->gc, r->t_ev, p, &committed, errstr,
                                             errstr_size)) ||
            (t[1] = tb_mono_us(), err = tb_sched_load_projection(r, p, &o_p, errstr, errstr_size)) ||
            (t[2] = tb_mono_us(), err = tb_sched_load_checkpoints(r, p, errstr, errstr_size))) {
                tb_sched_adopt_clear(r);
                tb_sched_drop_partition(r->s, p);
                return err;
        }
        t[3] = tb_mono_us();
        tb_sched_adopt_flush(r);
        tb_sched_load_remote(r, p);
        /* Events between our last commit and the projection's offset are in
         * the projection already, but a RUN_REQUESTED among them may not have
         * been emitted: replay them (only run-now requests are taken). */
        *start = committed >= 0 && committed < o_p ? committed : o_p;
        tb_sched_part_t *part = tb_sched_part(r->s, p);
        part->owned = true;
        part->load_off = o_p;
        part->ev_pos = *start;
        part->rr_pos = -1;
        tb_info(TB_SCHED_LOG,
                "partition %d loaded in %" PRId64 " ms (committed offset %" PRId64
                " ms, projection %" PRId64 " ms, checkpoints %" PRId64
                " ms): tailing task-events from offset %" PRId64 " (projection at %" PRId64
                "), %zu tasks in this process",
                (int)p, (tb_mono_us() - t[0]) / 1000, (t[1] - t[0]) / 1000, (t[2] - t[1]) / 1000,
                (t[3] - t[2]) / 1000, *start, o_p, tb_sched_task_count(r->s));
        return TB_OK;
}

/* After a failed transaction the partitions were dropped: load each assigned
 * one that is not loaded, and rewind it. A pass stops after
 * TB_SCHED_RELOAD_SLICE_MS and goes on at the next turn of the loop, so the
 * partitions loaded so far fire while another one waits for Kafka (a killed
 * broker's partitions answer only once their leadership has moved). */
void tb_sched_reload(tb_sched_role_t *r) {
        char errstr[1024];
        int64_t slice_end = tb_mono_us() + (int64_t)TB_SCHED_RELOAD_SLICE_MS * 1000;
        int tried = 0;
        r->reload_at = 0;
        rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < (int32_t)r->conf->topic_partitions; p++) {
                if (!r->assigned[p] || tb_sched_part(r->s, p)->owned)
                        continue;
                if (tried++ && tb_mono_us() > slice_end) {
                        r->reload_at = tb_now_ms(); /* the rest at the next turn */
                        break;
                }
                int64_t start;
                if (tb_sched_load_partition(r, p, &start, errstr, sizeof(errstr)) != TB_OK) {
                        tb_error(TB_SCHED_LOG, "partition %d: %s; retrying in 1 s", (int)p, errstr);
                        r->reload_at = tb_now_ms() + 1000;
                        continue;
                }
                rd_kafka_topic_partition_list_add(seek, r->t_ev, p)->offset = start;
        }
        if (seek->cnt) {
                /* a partition not rewound is dropped again: the next pass loads it */
                rd_kafka_error_t *e = rd_kafka_seek_partitions(r->gc, seek, 10000);
                if (e) {
                        tb_error(TB_SCHED_LOG, "seek task-events: %s", rd_kafka_error_string(e));
                        rd_kafka_error_destroy(e);
                        r->reload_at = tb_now_ms() + 1000;
                }
                for (int i = 0; i < seek->cnt; i++)
                        if (e || seek->elems[i].err) {
                                if (!e)
                                        tb_error(TB_SCHED_LOG, "seek task-events [%d]: %s",
                                                 (int)seek->elems[i].partition,
                                                 rd_kafka_err2str(seek->elems[i].err));
                                tb_sched_drop_partition(r->s, seek->elems[i].partition);
                                r->reload_at = tb_now_ms() + 1000;
                        }
        }
        rd_kafka_topic_partition_list_destroy(seek);
        /* the partitions loaded now read run-results from their committed
         * offsets, the others go on from their positions */
        tb_sched_results_assign(r, false);
        tb_sched_remote_assign(r);
}

/* ---- calendars ---------------------------------------------------------------- */

void tb_sched_calendars_poll(tb_sched_role_t *r) {
        char err[512], sig[64];
        PGconn *conn = tb_store_acquire_timeout(r->ctx->store, 200);
        PGresult *res = NULL;
        if (!conn) {
                tb_debug(TB_SCHED_LOG, "calendars not polled: no database connection");
                return;
        }
        if (tb_store_calendar_signature(conn, sig, sizeof(sig), err, sizeof(err)) != TB_OK) {
                tb_warn(TB_SCHED_LOG, "calendars not polled: %s", err);
                goto out;
        }
        if (r->cal_sig[0] && !strcmp(sig, r->cal_sig)) {
                tb_sched_calendars_polled(r->s);
                goto out;
        }
        if (tb_store_calendar_all(conn, &res, err, sizeof(err)) != TB_OK) {
                tb_warn(TB_SCHED_LOG, "calendars not read: %s", err);
                goto out;
        }
        int n = PQntuples(res);
        tb_sched_calendar_t *cals = calloc((size_t)(n ? n : 1), sizeof(*cals));
        if (!cals) {
                tb_error(TB_SCHED_LOG, "calendars not read: out of memory");
                goto out;
        }
        for (int i = 0; i < n; i++) {
                tb_store_calendar_t row = {0};
                tb_snprintf(row.security_group, sizeof(row.security_group), "%s",
                            PQgetvalue(res, i, 0));
                tb_snprintf(row.name, sizeof(row.name), "%s", PQgetvalue(res, i, 1));
                tb_snprintf(row.timezone, sizeof(row.timezone), "%s", PQgetvalue(res, i, 2));
                tb_snprintf(row.weekend, sizeof(row.weekend), "%s", PQgetvalue(res, i, 3));
                row.source = PQgetvalue(res, i, 4); /* borrowed: not cleared */
                row.version = strtoll(PQgetvalue(res, i, 5), NULL, 10);
                tb_sched_calendar_t *c = &cals[i];
                memcpy(c->group, row.security_group, sizeof(c->group));
                memcpy(c->name, row.name, sizeof(c->name));
                c->version = row.version;
                if (tb_store_calendar_build(&row, &c->cal, c->error, sizeof(c->error)) != TB_OK)
                        tb_error(TB_SCHED_LOG, "%s: the fires of its tasks are skipped",
                                 c->error);
        }
        tb_sched_calendars_set(r->s, cals, (size_t)n);
        tb_sched_calendars_polled(r->s);
        tb_snprintf(r->cal_sig, sizeof(r->cal_sig), "%s", sig);
out:
        PQclear(res);
        tb_store_release(r->ctx->store, conn);
}
