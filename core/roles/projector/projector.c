/**
 * @file projector/projector.c
 * @brief The projector role: applies task-events (tasks, task_history), runs
 *        and run-results (runs: the run history) to PostgreSQL exactly once,
 *        with the consumed offsets stored in the same transaction
 *        (consumer_offsets) rather than in Kafka.
 *
 * Projected topics are listed in tb_projector_topics[] with their schema and
 * apply function; the role subscribes to all of them and
 * tb_projector_apply_batch() routes each record to its topic's function.
 *
 * Regions (docs/replication.md): the projector also consumes this region's
 * copies of the other regions' task-events, runs and run-results
 * ("us.taskbus.task-events", made by MirrorMaker 2), so reads work in every
 * region. Task rows are ordered by (epoch, version): a failover's HOME_MOVED
 * (a higher home-region epoch) supersedes whatever the old home region wrote
 * in its old epoch, in whichever order the local and copied topics arrive.
 * How old a copied record is when it is applied is the replication lag
 * (metric taskbus_replication_lag_seconds; task_history.projected_at - at).
 *
 * @locality one worker thread owns the consumer; the rebalance callback runs
 *           on it (inside consumer_poll).
 */
#include "projector/projector.h"

#include "bus/bus.h"
#include "daemon.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"
#include "store/store.h"
#include "task/task.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TB_PROJ_SUB "projector"
/** Most records per PostgreSQL transaction. */
#define TB_PROJ_BATCH_MAX 500
/** How long a batch waits for more records once it has one. */
#define TB_PROJ_BATCH_WAIT_US 20000
/** NOTIFY payloads are limited to 8000 bytes by PostgreSQL. */
#define TB_PROJ_NOTIFY_MAX 7900

/* ---- task-events --------------------------------------------------------------- */

static const char *tb_proj_jstr(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

/* epoch milliseconds as text, for the 'epoch' + ms interval expressions */
#define TB_PROJ_TS(n) "('epoch'::timestamptz + $" #n "::bigint * interval '1 millisecond')"

static const char tb_proj_sql_upsert[] =
        "INSERT INTO tasks (id, version, name, security_group, user_id, spec, paused, labels, "
        "home_region, epoch, created_at, created_by, updated_at, event_partition, event_offset) "
        "SELECT $1, $2::bigint, $3, $4, $5, $6::jsonb, $7::boolean, $8::jsonb, $9, $10::bigint, "
        TB_PROJ_TS(11) ", $12, " TB_PROJ_TS(13) ", $14::int, $15::bigint "
        /* a task deleted at a later version stays deleted when an older
         * event is applied again */
        "WHERE NOT EXISTS (SELECT 1 FROM task_history h WHERE h.task_id = $1 "
        "AND (h.epoch, h.version) > ($10::bigint, $2::bigint) AND h.type = 'DELETED') "
        "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, name = EXCLUDED.name, "
        "security_group = EXCLUDED.security_group, user_id = EXCLUDED.user_id, "
        "spec = EXCLUDED.spec, paused = EXCLUDED.paused, labels = EXCLUDED.labels, "
        "home_region = EXCLUDED.home_region, epoch = EXCLUDED.epoch, "
        "created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by, "
        "updated_at = EXCLUDED.updated_at, event_partition = EXCLUDED.event_partition, "
        "event_offset = EXCLUDED.event_offset "
        /* regions: a higher home-region epoch wins, then the higher version */
        "WHERE (tasks.epoch, tasks.version) < (EXCLUDED.epoch, EXCLUDED.version)";

static const char tb_proj_sql_delete[] =
        "DELETE FROM tasks WHERE id = $1 AND (epoch, version) < ($3::bigint, $2::bigint)";

static const char tb_proj_sql_history[] =
        "INSERT INTO task_history (task_id, version, event_id, type, at, actor, command_id, "
        "changed_fields, spec, security_group, source_region, epoch) "
        "VALUES ($1, $2::bigint, $3, $4, " TB_PROJ_TS(5) ", $6, $7, "
        "ARRAY(SELECT jsonb_array_elements_text($8::jsonb)), $9::jsonb, "
        /* a DELETED event carries no task: keep the group it had */
        "COALESCE($10, (SELECT h.security_group FROM task_history h WHERE h.task_id = $1 "
        "AND h.version < $2::bigint ORDER BY h.version DESC LIMIT 1), ''), $11, $12::bigint) "
        "ON CONFLICT DO NOTHING";

static void tb_proj_notify_add(tb_projector_batch_t *b, const char *task_id) {
        if (b->notify.len > TB_PROJ_NOTIFY_MAX)
                return;
        if (b->notify.len)
                tb_buf_append(&b->notify, ",", 1);
        tb_buf_append(&b->notify, task_id, strlen(task_id));
}

static tb_err_t tb_proj_apply_event(tb_projector_batch_t *b, const rd_kafka_message_t *msg,
                                    const json_t *ev, char *errstr, size_t errstr_size) {
        const char *id = tb_proj_jstr(ev, "task_id");
        const json_t *spec = json_object_get(ev, "task");
        json_t *task = json_is_object(spec) ? tb_task_from_spec(spec) : NULL;
        char version[32], at[32], created_at[32], epoch[32], part[16], off[32];
        char *task_text = NULL, *labels_text = NULL, *changed_text = NULL;
        tb_err_t err = TB_OK;

        tb_snprintf(version, sizeof(version), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "version")));
        tb_snprintf(at, sizeof(at), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "at")));
        tb_snprintf(created_at, sizeof(created_at), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "created_at")));
        tb_snprintf(epoch, sizeof(epoch), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "epoch")));
        tb_snprintf(part, sizeof(part), "%" PRId32, msg->partition);
        tb_snprintf(off, sizeof(off), "%" PRId64, msg->offset);
        if (json_is_object(spec) && !task) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "task %s version %s: the event's TaskSpec cannot be converted",
                                id, version);
                goto out;
        }
        changed_text = json_dumps(json_object_get(ev, "changed_fields"), JSON_COMPACT);
        if (task) {
                task_text = json_dumps(task, JSON_COMPACT | JSON_SORT_KEYS);
                const json_t *labels = json_object_get(task, "labels");
                labels_text = labels ? json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS)
                                     : strdup("{}");
        }
        const char *type = tb_proj_jstr(ev, "type");
        const char *group = task ? tb_proj_jstr(task, "security_group") : NULL;
        const char *source = "";
        tb_repl_topic_parse(b->conf, rd_kafka_topic_name(msg->rkt), &source, NULL);
        const char *hp[] = {id,
                            version,
                            tb_proj_jstr(ev, "event_id"),
                            type,
                            at,
                            tb_proj_jstr(ev, "actor"),
                            tb_proj_jstr(ev, "command_id"),
                            changed_text ? changed_text : "[]",
                            task_text,
                            group,
                            source,
                            epoch};
        if ((err = tb_store_exec(b->conn, "insert task_history", tb_proj_sql_history, 12, hp,
                                 NULL, errstr, errstr_size)))
                goto out;
        if (task) {
                const char *up[] = {id,
                                    version,
                                    tb_proj_jstr(task, "name"),
                                    group,
                                    tb_proj_jstr(task, "user_id"),
                                    task_text,
                                    json_is_true(json_object_get(task, "paused")) ? "true"
                                                                                 : "false",
                                    labels_text ? labels_text : "{}",
                                    tb_proj_jstr(task, "home_region"),
                                    epoch,
                                    created_at,
                                    tb_proj_jstr(ev, "created_by"),
                                    at,
                                    part,
                                    off};
                err = tb_store_exec(b->conn, "upsert task", tb_proj_sql_upsert, 15, up, NULL,
                                    errstr, errstr_size);
        } else {
                const char *dp[] = {id, version, epoch};
                err = tb_store_exec(b->conn, "delete task", tb_proj_sql_delete, 3, dp, NULL,
                                    errstr, errstr_size);
        }
        if (!err) {
                b->stats->events++;
                tb_proj_notify_add(b, id);
        }
out:
        free(task_text);
        free(labels_text);
        free(changed_text);
        if (task)
                json_decref(task);
        return err;
}

/* ---- runs and run-results: the run history --------------------------------------- */

/*
 * runs (RunRequest) and run-results (RunResult) of one run are on different
 * topics, so either may be applied first: both upsert the run's row, and a
 * status only replaces one of lower rank (taskbus_run_status_rank(): scheduled
 * < running < every final status). The first final status is kept; later
 * records only fill in what it left empty.
 *
 * The projector, not the archiver, sets runs.log_expires_at (the run's end +
 * its log retention, capped by its group's policy) once the run is final;
 * the archiver copies it onto the run's run_logs rows.
 */

static const char tb_proj_sql_run_request[] =
        "INSERT INTO runs (run_id, task_id, security_group, nominal_time, attempt, trigger, "
        "status, scheduled_at, executor, log_retention_ms, updated_at) "
        "VALUES ($1, $2, $3, " TB_PROJ_TS(4) ", $5::int, $6, 'scheduled', " TB_PROJ_TS(7) ", "
        "$8, $9::bigint, now()) "
        "ON CONFLICT (run_id) DO UPDATE SET "
        /* the snapshot's group is the run's: it was the task's at fire time */
        "security_group = CASE WHEN EXCLUDED.security_group <> '' "
        "THEN EXCLUDED.security_group ELSE runs.security_group END, "
        "trigger = EXCLUDED.trigger, "
        "scheduled_at = COALESCE(runs.scheduled_at, EXCLUDED.scheduled_at), "
        "executor = CASE WHEN runs.executor = '' THEN EXCLUDED.executor ELSE runs.executor END, "
        "log_retention_ms = EXCLUDED.log_retention_ms, updated_at = now()";

/* $5 status (lower case); the new record "wins" when its status ranks higher */
#define TB_PROJ_WIN "(taskbus_run_status_rank(EXCLUDED.status) > taskbus_run_status_rank(runs.status))"

static const char tb_proj_sql_run_result[] =
        "INSERT INTO runs (run_id, task_id, security_group, nominal_time, attempt, status, "
        "started_at, finished_at, exit_code, signal, executor, host, output_bytes, infra_error, "
        "error, updated_at) "
        "VALUES ($1, $2, COALESCE((SELECT t.security_group FROM tasks t WHERE t.id = $2), ''), "
        TB_PROJ_TS(3) ", $4::int, $5, " TB_PROJ_TS(6) ", " TB_PROJ_TS(7) ", $8::int, $9::int, "
        "$10, $11, $12::bigint, $13::boolean, $14, now()) "
        "ON CONFLICT (run_id) DO UPDATE SET "
        "status = CASE WHEN " TB_PROJ_WIN " THEN EXCLUDED.status ELSE runs.status END, "
        "security_group = CASE WHEN runs.security_group = '' THEN EXCLUDED.security_group "
        "ELSE runs.security_group END, "
        "started_at = COALESCE(runs.started_at, EXCLUDED.started_at), "
        "finished_at = CASE WHEN " TB_PROJ_WIN " THEN COALESCE(EXCLUDED.finished_at, "
        "runs.finished_at) ELSE COALESCE(runs.finished_at, EXCLUDED.finished_at) END, "
        "exit_code = CASE WHEN " TB_PROJ_WIN " THEN COALESCE(EXCLUDED.exit_code, runs.exit_code) "
        "ELSE COALESCE(runs.exit_code, EXCLUDED.exit_code) END, "
        "signal = CASE WHEN " TB_PROJ_WIN " THEN COALESCE(EXCLUDED.signal, runs.signal) "
        "ELSE COALESCE(runs.signal, EXCLUDED.signal) END, "
        "executor = CASE WHEN " TB_PROJ_WIN " AND EXCLUDED.executor <> '' OR runs.executor = '' "
        "THEN EXCLUDED.executor ELSE runs.executor END, "
        "host = CASE WHEN " TB_PROJ_WIN " AND EXCLUDED.host <> '' OR runs.host = '' "
        "THEN EXCLUDED.host ELSE runs.host END, "
        "output_bytes = CASE WHEN " TB_PROJ_WIN " THEN EXCLUDED.output_bytes "
        "ELSE GREATEST(runs.output_bytes, EXCLUDED.output_bytes) END, "
        "infra_error = CASE WHEN " TB_PROJ_WIN " THEN EXCLUDED.infra_error ELSE runs.infra_error "
        "END, "
        "error = CASE WHEN " TB_PROJ_WIN " THEN COALESCE(EXCLUDED.error, runs.error) "
        "ELSE COALESCE(runs.error, EXCLUDED.error) END, "
        "updated_at = now()";

/* What settling a run needs: its group (filled from the task if unknown),
 * whether it is final, its end and its log retention. */
static const char tb_proj_sql_run_state[] =
        "UPDATE runs r SET security_group = COALESCE((SELECT t.security_group FROM tasks t "
        "WHERE t.id = r.task_id), '') WHERE r.run_id = $1 AND r.security_group = ''";
static const char tb_proj_sql_run_read[] =
        "SELECT r.security_group, taskbus_run_status_rank(r.status) = 2, "
        "(extract(epoch FROM COALESCE(r.finished_at, r.updated_at)) * 1000)::bigint, "
        "r.log_retention_ms, t.spec->>'log_retention' "
        "FROM runs r LEFT JOIN tasks t ON t.id = r.task_id WHERE r.run_id = $1";

/** Fill in the group of a run projected before its task or RunRequest, and
 *  set the expiry of a final run's log. */
static tb_err_t tb_proj_run_settle(tb_projector_batch_t *b, const char *run_id, char *errstr,
                                   size_t errstr_size) {
        const char *p[] = {run_id};
        PGresult *r = NULL;
        tb_err_t err;
        if ((err = tb_store_exec(b->conn, "fill in the run's group", tb_proj_sql_run_state, 1, p,
                                 NULL, errstr, errstr_size)) ||
            (err = tb_store_exec(b->conn, "read run", tb_proj_sql_run_read, 1, p, &r, errstr,
                                 errstr_size)))
                return err;
        if (PQntuples(r) != 1 || PQgetvalue(r, 0, 1)[0] != 't') {
                PQclear(r);
                return TB_OK;
        }
        const char *group = PQgetvalue(r, 0, 0);
        int64_t end_ms = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
        int64_t ret = b->conf->log_retention_default_ms;
        char derr[256];
        int64_t ms = 0;
        if (!PQgetisnull(r, 0, 3))
                ret = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        else if (!PQgetisnull(r, 0, 4) &&
                 tb_units_duration_parse(PQgetvalue(r, 0, 4), &ms, derr, sizeof(derr)) == TB_OK)
                ret = ms;
        const tb_group_conf_t *gp = tb_config_group_policy(b->conf, group);
        if (gp && gp->log_retention_max_ms > 0 && ret > gp->log_retention_max_ms)
                ret = gp->log_retention_max_ms;
        if (ret < 0)
                ret = 0;
        PQclear(r);
        char at[32];
        tb_snprintf(at, sizeof(at), "%" PRId64, end_ms + ret);
        const char *up[] = {run_id, at};
        return tb_store_exec(b->conn, "set the run's log expiry",
                             "UPDATE runs SET log_expires_at = " TB_PROJ_TS(2) " "
                             "WHERE run_id = $1 AND log_expires_at IS DISTINCT FROM "
                             TB_PROJ_TS(2),
                             2, up, NULL, errstr, errstr_size);
}

/** "RUN_NOW" -> "run_now" into \p out (64 bytes). */
static void tb_proj_lower(const char *s, char out[64]) {
        size_t i = 0;
        for (; s[i] && i < 63; i++)
                out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
        out[i] = '\0';
}

/** A nullable long field as text, or NULL. */
static const char *tb_proj_jlong(const json_t *o, const char *key, char buf[32]) {
        const json_t *v = json_object_get(o, key);
        if (!json_is_integer(v))
                return NULL;
        tb_snprintf(buf, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
}

static tb_err_t tb_proj_apply_run_request(tb_projector_batch_t *b, const rd_kafka_message_t *msg,
                                          const json_t *rq, char *errstr, size_t errstr_size) {
        const json_t *snap = json_object_get(rq, "snapshot");
        const char *run_id = tb_proj_jstr(rq, "run_id");
        char nominal[32], attempt[32], emitted[32], ret[32], trigger[64];
        tb_proj_lower(tb_proj_jstr(rq, "trigger"), trigger);
        const char *p[] = {run_id,
                           tb_proj_jstr(rq, "task_id"),
                           tb_proj_jstr(snap, "security_group"),
                           tb_proj_jlong(rq, "nominal_time", nominal),
                           tb_proj_jlong(rq, "attempt", attempt),
                           trigger,
                           tb_proj_jlong(rq, "emitted_at", emitted),
                           tb_proj_jstr(snap, "executor"),
                           tb_proj_jlong(snap, "log_retention_ms", ret)};
        if (!*run_id || !p[3]) {
                tb_warn(TB_PROJ_SUB, "runs [%" PRId32 "] offset %" PRId64
                        ": a RunRequest without run_id or nominal_time: skipped",
                        msg->partition, msg->offset);
                return TB_OK;
        }
        tb_err_t err = tb_store_exec(b->conn, "upsert run (RunRequest)", tb_proj_sql_run_request,
                                     9, p, NULL, errstr, errstr_size);
        if (!err)
                err = tb_proj_run_settle(b, run_id, errstr, errstr_size);
        if (!err)
                b->stats->results++;
        return err;
}

static tb_err_t tb_proj_apply_run_result(tb_projector_batch_t *b, const rd_kafka_message_t *msg,
                                         const json_t *rr, char *errstr, size_t errstr_size) {
        const char *run_id = tb_proj_jstr(rr, "run_id");
        char nominal[32], attempt[32], started[32], finished[32], code[32], sig[32], out[32];
        char status[64];
        tb_proj_lower(tb_proj_jstr(rr, "status"), status);
        if (!*run_id || !strcmp(status, "duplicate")) {
                /* a duplicate delivery says nothing about the run itself */
                return TB_OK;
        }
        const char *fin = tb_proj_jlong(rr, "finished_at", finished);
        if (!fin && strcmp(status, "running"))
                fin = tb_proj_jlong(rr, "at", finished); /* skipped / expired: decided then */
        const json_t *e = json_object_get(rr, "error");
        const char *p[] = {run_id,
                           tb_proj_jstr(rr, "task_id"),
                           tb_proj_jlong(rr, "nominal_time", nominal),
                           tb_proj_jlong(rr, "attempt", attempt),
                           status,
                           tb_proj_jlong(rr, "started_at", started),
                           fin,
                           tb_proj_jlong(rr, "exit_code", code),
                           tb_proj_jlong(rr, "signal", sig),
                           tb_proj_jstr(rr, "executor"),
                           tb_proj_jstr(rr, "host"),
                           tb_proj_jlong(rr, "output_bytes", out),
                           json_is_true(json_object_get(rr, "infra_error")) ? "true" : "false",
                           json_string_value(e)};
        if (!p[2]) {
                tb_warn(TB_PROJ_SUB, "run-results [%" PRId32 "] offset %" PRId64
                        ": a RunResult without nominal_time: skipped",
                        msg->partition, msg->offset);
                return TB_OK;
        }
        if (!p[3])
                p[3] = "1";
        if (!p[11])
                p[11] = "0";
        tb_err_t err = tb_store_exec(b->conn, "upsert run (RunResult)", tb_proj_sql_run_result,
                                     14, p, NULL, errstr, errstr_size);
        if (!err)
                err = tb_proj_run_settle(b, run_id, errstr, errstr_size);
        if (!err)
                b->stats->results++;
        return err;
}

/* ---- the projected topics ------------------------------------------------------- */

typedef struct tb_proj_topic {
        tb_topic_t topic;
        tb_schema_id_t schema;
        tb_projector_apply_fn apply;
} tb_proj_topic_t;

/** Every topic the projector consumes, with its schema and apply function. */
static const tb_proj_topic_t tb_projector_topics[] = {
        {TB_TOPIC_EVENTS, TB_SCHEMA_TASK_EVENT, tb_proj_apply_event},
        {TB_TOPIC_RUNS, TB_SCHEMA_RUN_REQUEST, tb_proj_apply_run_request},
        {TB_TOPIC_RESULTS, TB_SCHEMA_RUN_RESULT, tb_proj_apply_run_result},
};

/** The projected topic of \p name: a local topic or another region's copy
 *  of one (\p region then names that region, else it is NULL). */
static const tb_proj_topic_t *tb_proj_topic_of(const tb_config_t *conf, const char *name,
                                               const char **region) {
        char buf[256];
        tb_topic_t t;
        *region = NULL;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projector_topics); i++)
                if (!strcmp(tb_topic_name(conf, tb_projector_topics[i].topic, buf, sizeof(buf)),
                            name))
                        return &tb_projector_topics[i];
        if (!tb_repl_topic_parse(conf, name, region, &t))
                return NULL;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projector_topics); i++)
                if (tb_projector_topics[i].topic == t)
                        return &tb_projector_topics[i];
        return NULL;
}

/* ---- the batch ----------------------------------------------------------------- */

/** The next offset of each (topic, partition) of a batch. */
typedef struct tb_proj_next {
        const char *topic;
        int32_t partition;
        int64_t next;
} tb_proj_next_t;

tb_err_t tb_projector_apply_batch(PGconn *conn, const tb_config_t *conf, const char *consumer,
                                  rd_kafka_message_t *const *msgs, size_t cnt,
                                  tb_projector_stats_t *stats, char *errstr, size_t errstr_size) {
        tb_projector_stats_t local = {0}, sink = {0};
        tb_projector_batch_t b = {.conn = conn, .conf = conf, .stats = &local};
        tb_proj_next_t *next = calloc(cnt ? cnt : 1, sizeof(*next));
        size_t next_cnt = 0;
        tb_err_t err;
        if (!stats)
                stats = &sink;
        if (!next)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "projector: out of memory");
        if ((err = tb_store_begin(conn, errstr, errstr_size)))
                goto fail;
        for (size_t i = 0; i < cnt; i++) {
                const rd_kafka_message_t *m = msgs[i];
                const char *tname = rd_kafka_topic_name(m->rkt);
                const char *region = NULL;
                const tb_proj_topic_t *pt = tb_proj_topic_of(conf, tname, &region);
                if (!pt) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                        "projector: records of topic %s are not projected", tname);
                        goto fail;
                }
                local.records++;
                json_t *value = NULL;
                char derr[512];
                if (tb_serde_decode(m->payload, m->len, pt->schema, NULL, &value, derr,
                                    sizeof(derr)) != TB_OK) {
                        /* a record no version of us wrote: skip it, loudly */
                        local.malformed++;
                        tb_metrics_add("taskbus_projector_malformed_total", NULL, 1);
                        tb_warn(TB_PROJ_SUB, "%s [%" PRId32 "] offset %" PRId64 " skipped: %s",
                                tname, m->partition, m->offset, derr);
                } else {
                        err = pt->apply(&b, m, value, errstr, errstr_size);
                        json_decref(value);
                        if (err)
                                goto fail;
                        if (region) {
                                /* the source region's timestamp is kept by MirrorMaker 2 */
                                int64_t ts = rd_kafka_message_timestamp(m, NULL);
                                if (ts > 0) {
                                        char labels[128];
                                        tb_snprintf(labels, sizeof(labels),
                                                    "region=\"%s\",topic=\"%s\"", region,
                                                    tb_topic_short(pt->topic));
                                        double lag = (double)(tb_now_ms() - ts) / 1000.0;
                                        tb_metrics_observe("taskbus_replication_lag_seconds",
                                                           labels, lag < 0 ? 0 : lag);
                                }
                        }
                }
                size_t k = 0;
                while (k < next_cnt &&
                       (next[k].partition != m->partition || strcmp(next[k].topic, tname)))
                        k++;
                if (k == next_cnt) {
                        next[k].topic = tname;
                        next[k].partition = m->partition;
                        next_cnt++;
                }
                if (m->offset + 1 > next[k].next)
                        next[k].next = m->offset + 1;
        }
        for (size_t k = 0; consumer && k < next_cnt; k++) {
                char part[16], off[32];
                tb_snprintf(part, sizeof(part), "%" PRId32, next[k].partition);
                tb_snprintf(off, sizeof(off), "%" PRId64, next[k].next);
                const char *p[] = {consumer, next[k].topic, part, off};
                if ((err = tb_store_exec(
                             conn, "store consumed offset",
                             "INSERT INTO consumer_offsets (consumer, topic, partition, "
                             "next_offset) VALUES ($1, $2, $3::int, $4::bigint) "
                             "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
                             "next_offset = GREATEST(consumer_offsets.next_offset, "
                             "EXCLUDED.next_offset)",
                             4, p, NULL, errstr, errstr_size)))
                        goto fail;
        }
        /* delivered on commit only: listeners never see an uncommitted state */
        const char *np[] = {b.notify.len > TB_PROJ_NOTIFY_MAX ? "" : (b.notify.data ? b.notify.data : "")};
        if ((err = tb_store_exec(conn, "notify " TB_PROJECTOR_CHANNEL,
                                 "SELECT pg_notify('" TB_PROJECTOR_CHANNEL "', $1)", 1, np, NULL,
                                 errstr, errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        stats->records += local.records;
        stats->malformed += local.malformed;
        stats->events += local.events;
        stats->results += local.results;
        tb_buf_free(&b.notify);
        free(next);
        return TB_OK;
fail:
        tb_store_rollback(conn);
        tb_buf_free(&b.notify);
        free(next);
        return err;
}

/* ---- the role ------------------------------------------------------------------ */

typedef struct tb_proj {
        tb_ctx_t *ctx;
        pthread_t thread;
        bool thread_started;
        rd_kafka_t *consumer;
        rd_kafka_message_t *batch[TB_PROJ_BATCH_MAX];
        size_t batch_cnt;
} tb_proj_t;

/** Read the stored next offsets of \p parts (NULL row: from the beginning). */
static tb_err_t tb_proj_stored_offsets(tb_proj_t *pj, rd_kafka_topic_partition_list_t *parts,
                                       char *errstr, size_t errstr_size) {
        PGconn *conn = tb_store_acquire(pj->ctx->store);
        tb_err_t err = TB_OK;
        for (int i = 0; i < parts->cnt && !err; i++) {
                char part[16];
                PGresult *r = NULL;
                tb_snprintf(part, sizeof(part), "%" PRId32, parts->elems[i].partition);
                const char *p[] = {TB_PROJECTOR_CONSUMER, parts->elems[i].topic, part};
                err = tb_store_exec(conn, "read consumed offset",
                                    "SELECT next_offset FROM consumer_offsets WHERE consumer = $1 "
                                    "AND topic = $2 AND partition = $3::int",
                                    3, p, &r, errstr, errstr_size);
                if (!err)
                        parts->elems[i].offset = PQntuples(r) > 0
                                                         ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                         : RD_KAFKA_OFFSET_BEGINNING;
                PQclear(r);
        }
        tb_store_release(pj->ctx->store, conn);
        return err;
}

static void tb_proj_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_proj_t *pj = opaque;
        rd_kafka_error_t *e = NULL;
        char errstr[1024];
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                while (tb_proj_stored_offsets(pj, parts, errstr, sizeof(errstr)) != TB_OK) {
                        if (atomic_load(&pj->ctx->stopping))
                                break;
                        tb_error(TB_PROJ_SUB, "assignment: %s; retrying in 1 s", errstr);
                        sleep(1);
                }
                for (int i = 0; i < parts->cnt; i++)
                        tb_info(TB_PROJ_SUB, "assigned %s [%" PRId32 "] from offset %" PRId64,
                                parts->elems[i].topic, parts->elems[i].partition,
                                parts->elems[i].offset < 0 ? 0 : parts->elems[i].offset);
                e = rd_kafka_incremental_assign(rk, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                size_t w = 0;
                for (size_t i = 0; i < pj->batch_cnt; i++) {
                        bool revoked = false;
                        for (int j = 0; j < parts->cnt; j++)
                                revoked |= parts->elems[j].partition == pj->batch[i]->partition &&
                                           !strcmp(parts->elems[j].topic,
                                                   rd_kafka_topic_name(pj->batch[i]->rkt));
                        if (revoked)
                                rd_kafka_message_destroy(pj->batch[i]);
                        else
                                pj->batch[w++] = pj->batch[i];
                }
                pj->batch_cnt = w;
                e = rd_kafka_incremental_unassign(rk, parts);
        } else {
                tb_error(TB_PROJ_SUB, "rebalance failed: %s", rd_kafka_err2str(err));
        }
        if (e) {
                tb_error(TB_PROJ_SUB, "incremental (un)assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
}

static void tb_proj_batch_free(tb_proj_t *pj) {
        for (size_t i = 0; i < pj->batch_cnt; i++)
                rd_kafka_message_destroy(pj->batch[i]);
        pj->batch_cnt = 0;
}

/** Apply the collected batch; on failure seek back so it is read again. */
static bool tb_proj_process(tb_proj_t *pj) {
        char errstr[1024];
        tb_projector_stats_t st = {0};
        int64_t t0 = tb_mono_us();
        PGconn *conn = tb_store_acquire(pj->ctx->store);
        tb_err_t err = tb_projector_apply_batch(conn, pj->ctx->conf, TB_PROJECTOR_CONSUMER,
                                                pj->batch, pj->batch_cnt, &st, errstr,
                                                sizeof(errstr));
        tb_store_release(pj->ctx->store, conn);
        if (!err) {
                tb_metrics_add("taskbus_projector_records_total", NULL, (double)st.records);
                tb_metrics_observe("taskbus_projector_batch_seconds", NULL,
                                   (double)(tb_mono_us() - t0) / 1e6);
                tb_proj_batch_free(pj);
                return true;
        }
        tb_error(TB_PROJ_SUB, "applying %zu record(s) failed: %s; retrying", pj->batch_cnt,
                 errstr);
        tb_metrics_add("taskbus_projector_failures_total", NULL, 1);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (size_t i = 0; i < pj->batch_cnt; i++) {
                rd_kafka_message_t *m = pj->batch[i];
                const char *t = rd_kafka_topic_name(m->rkt);
                rd_kafka_topic_partition_t *tp =
                        rd_kafka_topic_partition_list_find(l, t, m->partition);
                if (!tp)
                        rd_kafka_topic_partition_list_add(l, t, m->partition)->offset = m->offset;
                else if (m->offset < tp->offset)
                        tp->offset = m->offset;
        }
        rd_kafka_error_t *e = rd_kafka_seek_partitions(pj->consumer, l, 10000);
        if (e) {
                tb_error(TB_PROJ_SUB, "seek back: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        rd_kafka_topic_partition_list_destroy(l);
        tb_proj_batch_free(pj);
        return false;
}

static void *tb_proj_main(void *arg) {
        tb_proj_t *pj = arg;
        int backoff_ms = 0;
        while (!atomic_load(&pj->ctx->stopping)) {
                int64_t first = 0;
                while (pj->batch_cnt < TB_PROJ_BATCH_MAX) {
                        int wait_ms = 100;
                        if (first) {
                                int64_t left = first + TB_PROJ_BATCH_WAIT_US - tb_mono_us();
                                if (left <= 0)
                                        break;
                                wait_ms = (int)((left + 999) / 1000);
                        }
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(pj->consumer, wait_ms);
                        if (!m) {
                                if (!first)
                                        break;
                                continue;
                        }
                        if (m->err) {
                                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                        tb_warn(TB_PROJ_SUB, "consumer: %s",
                                                rd_kafka_message_errstr(m));
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        pj->batch[pj->batch_cnt++] = m;
                        if (!first)
                                first = tb_mono_us();
                }
                if (pj->batch_cnt == 0)
                        continue;
                if (atomic_load(&pj->ctx->stopping)) {
                        tb_proj_batch_free(pj);
                        break;
                }
                if (tb_proj_process(pj)) {
                        backoff_ms = 0;
                } else {
                        /* PostgreSQL is down or refusing: back off, up to 5 s */
                        backoff_ms = backoff_ms ? (backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2)
                                                : 100;
                        for (int w = 0; w < backoff_ms && !atomic_load(&pj->ctx->stopping);
                             w += 50)
                                usleep(50 * 1000);
                }
        }
        return NULL;
}

static void tb_proj_free(tb_proj_t *pj) {
        if (!pj)
                return;
        tb_proj_batch_free(pj);
        if (pj->consumer) {
                tb_bus_consumer_destroy(pj->consumer, 10000);
        }
        free(pj);
}

/** Subscribe to the local topics and the other regions' copies of them. */
static tb_err_t tb_proj_subscribe_remote(tb_proj_t *pj, char *errstr, size_t errstr_size) {
        const tb_config_t *conf = pj->ctx->conf;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
        char name[300];
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projector_topics); i++) {
                rd_kafka_topic_partition_list_add(
                        l, tb_topic_name(conf, tb_projector_topics[i].topic, name, sizeof(name)),
                        RD_KAFKA_PARTITION_UA);
                for (size_t r = 0; r < conf->repl_remote_region_cnt; r++)
                        rd_kafka_topic_partition_list_add(
                                l,
                                tb_repl_topic_name(conf, conf->repl_remote_regions[r],
                                                   tb_projector_topics[i].topic, name,
                                                   sizeof(name)),
                                RD_KAFKA_PARTITION_UA);
        }
        rd_kafka_resp_err_t e = rd_kafka_subscribe(pj->consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (e)
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                 "projector: subscribing to the replicated topics: %s",
                                 rd_kafka_err2str(e));
        return TB_OK;
}

static tb_err_t tb_proj_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t err;
        char group[300];
        tb_proj_t *pj = calloc(1, sizeof(*pj));
        if (!pj)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "projector: out of memory");
        pj->ctx = ctx;
        tb_metrics_describe("taskbus_projector_records_total", "counter",
                            "Records applied to PostgreSQL by the projector");
        tb_metrics_describe("taskbus_projector_malformed_total", "counter",
                            "Records the projector could not decode (skipped)");
        tb_metrics_describe("taskbus_projector_failures_total", "counter",
                            "Projector batches that failed and were retried");
        tb_metrics_describe("taskbus_projector_batch_seconds", "histogram",
                            "Time to apply one batch in PostgreSQL");
        tb_metrics_describe("taskbus_replication_lag_seconds", "histogram",
                            "Age of a record copied from another region (by region and topic) "
                            "when the projector applied it: MirrorMaker 2 plus projection lag");
        if ((err = tb_serde_init(errstr, errstr_size)))
                goto fail;
        tb_topic_t topics[TB_ARRAY_LEN(tb_projector_topics)];
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projector_topics); i++)
                topics[i] = tb_projector_topics[i].topic;
        tb_snprintf(group, sizeof(group), "%s%s", ctx->conf->topic_prefix, TB_PROJECTOR_CONSUMER);
        tb_consumer_opts_t opts = {
                .group_id = group,
                .read_committed = true,
                .auto_commit = false, /* offsets live in PostgreSQL */
                .rebalance_cb = tb_proj_rebalance,
                .opaque = pj,
        };
        if ((err = tb_bus_consumer_new(ctx->conf, &opts, topics, TB_ARRAY_LEN(topics),
                                       &pj->consumer, errstr, errstr_size)))
                goto fail;
        if (ctx->conf->repl_remote_region_cnt &&
            (err = tb_proj_subscribe_remote(pj, errstr, errstr_size)))
                goto fail;
        if (pthread_create(&pj->thread, NULL, tb_proj_main, pj) != 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "projector: cannot start its thread");
                goto fail;
        }
        pj->thread_started = true;
        *state = pj;
        return TB_OK;
fail:
        tb_proj_free(pj);
        return err;
}

static void tb_proj_stop(void *state) {
        tb_proj_t *pj = state;
        if (!pj)
                return;
        if (pj->thread_started)
                pthread_join(pj->thread, NULL);
        tb_proj_free(pj);
}

const tb_role_t tb_role_projector = {
        .name = "projector",
        .description = "applies task-events, runs and run-results to PostgreSQL exactly once "
                       "(offsets stored there)",
        .start = tb_proj_start,
        .stop = tb_proj_stop,
};
