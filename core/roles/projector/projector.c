/**
 * @file projector/projector.c
 * @brief The projector role: applies task-events (tasks, task_history), runs
 *        and run-results (runs: the run history) to PostgreSQL exactly once,
 *        with the consumed offsets stored in the same transaction
 *        (consumer_offsets) rather than in Kafka.
 *
 * Projected topics are listed in tb_projector_topics[] with their schema and
 * apply function. The role is a pgsink (bus/pgsink.h) on all of them: the
 * sink owns the consumer, the batches, the stored offsets and the retries;
 * the projector gives it the callbacks that route each record to its
 * topic's function and NOTIFY the listeners. `taskbus replay` applies its
 * batches with the same callbacks (tb_projector_apply_batch()).
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
 * @locality the apply callbacks run on the sink's thread (or replay's).
 */
#include "projector/projector.h"

#include "bus/bus.h"
#include "bus/pgsink.h"
#include "daemon.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"
#include "store/store.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                b->stats.events++;
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
                b->stats.results++;
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
                b->stats.results++;
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

/* ---- the batch: the pgsink callbacks ----------------------------------------------- */

static void tb_proj_batch_begin(void *opaque) {
        tb_projector_batch_t *b = opaque;
        memset(&b->stats, 0, sizeof(b->stats));
        b->notify.len = 0;
        if (b->notify.data)
                b->notify.data[0] = '\0';
}

/** Route \p m to its topic's apply function. */
static tb_pgsink_verdict_t tb_proj_apply_record(PGconn *conn, const rd_kafka_message_t *m,
                                                void *opaque, char *errstr,
                                                size_t errstr_size) {
        tb_projector_batch_t *b = opaque;
        const char *tname = rd_kafka_topic_name(m->rkt);
        const char *region = NULL;
        const tb_proj_topic_t *pt = tb_proj_topic_of(b->conf, tname, &region);
        b->conn = conn;
        if (!pt) {
                tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                          "projector: records of topic %s are not projected", tname);
                return TB_PGSINK_PERMANENT;
        }
        b->stats.records++;
        json_t *value = NULL;
        if (tb_serde_decode(m->payload, m->len, pt->schema, NULL, &value, errstr,
                            errstr_size) != TB_OK) {
                b->stats.malformed++;
                return TB_PGSINK_PERMANENT; /* quarantined, like a refused one */
        }
        tb_err_t err = pt->apply(b, m, value, errstr, errstr_size);
        json_decref(value);
        if (err)
                return tb_pgsink_verdict_of(err);
        if (region) {
                /* the source region's timestamp is kept by MirrorMaker 2 */
                int64_t ts = rd_kafka_message_timestamp(m, NULL);
                if (ts > 0) {
                        char labels[128];
                        tb_snprintf(labels, sizeof(labels), "region=\"%s\",topic=\"%s\"", region,
                                    tb_topic_short(pt->topic));
                        double lag = (double)(tb_now_ms() - ts) / 1000.0;
                        tb_metrics_observe("taskbus_replication_lag_seconds", labels,
                                           lag < 0 ? 0 : lag);
                }
        }
        return TB_PGSINK_APPLIED;
}

/** Tell the listeners which tasks the batch touched. */
static tb_err_t tb_proj_batch_finish(PGconn *conn, void *opaque, char *errstr,
                                     size_t errstr_size) {
        tb_projector_batch_t *b = opaque;
        /* delivered on commit only: listeners never see an uncommitted state */
        const char *np[] = {b->notify.len > TB_PROJ_NOTIFY_MAX
                                    ? ""
                                    : (b->notify.data ? b->notify.data : "")};
        return tb_store_exec(conn, "notify " TB_PROJECTOR_CHANNEL,
                             "SELECT pg_notify('" TB_PROJECTOR_CHANNEL "', $1)", 1, np, NULL,
                             errstr, errstr_size);
}

static void tb_proj_batch_committed(void *opaque) {
        tb_projector_batch_t *b = opaque;
        if (b->total) {
                b->total->records += b->stats.records;
                b->total->malformed += b->stats.malformed;
                b->total->events += b->stats.events;
                b->total->results += b->stats.results;
                b->total->quarantined += b->stats.quarantined;
        }
        tb_metrics_add("taskbus_projector_records_total", NULL, (double)b->stats.records);
}

static void tb_proj_batch_quarantined(void *opaque, const rd_kafka_message_t *m) {
        (void)m;
        ((tb_projector_batch_t *)opaque)->stats.quarantined++;
}

static const tb_pgsink_ops_t tb_proj_sink_ops = {
        .begin = tb_proj_batch_begin,
        .apply = tb_proj_apply_record,
        .finish = tb_proj_batch_finish,
        .committed = tb_proj_batch_committed,
        .quarantined = tb_proj_batch_quarantined,
};

/** What a projector batch does, with \p b as its state (the sink and
 *  `taskbus replay` alike). */
static tb_pgsink_conf_t tb_proj_sink_conf(tb_projector_batch_t *b, const char *consumer) {
        return (tb_pgsink_conf_t){
                .sub = TB_PROJ_SUB,
                .consumer = consumer,
                .ops = &tb_proj_sink_ops,
                .opaque = b,
                .metric_malformed = "taskbus_projector_malformed_total",
                .quarantine = true,
        };
}

tb_err_t tb_projector_apply_batch(PGconn *conn, const tb_config_t *conf, const char *consumer,
                                  rd_kafka_message_t *const *msgs, size_t cnt,
                                  tb_projector_stats_t *stats, char *errstr, size_t errstr_size) {
        tb_projector_batch_t b = {.conf = conf, .total = stats};
        tb_pgsink_conf_t c = tb_proj_sink_conf(&b, consumer);
        tb_err_t err = tb_pgsink_apply(conn, &c, msgs, cnt, errstr, errstr_size);
        tb_buf_free(&b.notify);
        return err;
}

/* ---- the role ------------------------------------------------------------------ */

typedef struct tb_proj {
        tb_projector_batch_t batch; /**< the sink's batch state */
        tb_pgsink_t *sink;
} tb_proj_t;

/** Stop and free the role (also of a half-started one). */
static void tb_proj_stop(void *state) {
        tb_proj_t *pj = state;
        if (!pj)
                return;
        tb_pgsink_stop(pj->sink);
        tb_buf_free(&pj->batch.notify);
        free(pj);
}

static tb_err_t tb_proj_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        const tb_config_t *conf = ctx->conf;
        tb_err_t err;
        tb_proj_t *pj = calloc(1, sizeof(*pj));
        size_t remote_cnt = TB_ARRAY_LEN(tb_projector_topics) * conf->repl_remote_region_cnt;
        char(*remote)[300] = calloc(remote_cnt ? remote_cnt : 1, sizeof(*remote));
        const char **remote_names = calloc(remote_cnt ? remote_cnt : 1, sizeof(*remote_names));
        if (!pj || !remote || !remote_names) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "projector: out of memory");
                goto fail;
        }
        pj->batch.conf = conf;
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
        /* the local topics, and the other regions' copies of them */
        tb_topic_t topics[TB_ARRAY_LEN(tb_projector_topics)];
        size_t k = 0;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projector_topics); i++) {
                topics[i] = tb_projector_topics[i].topic;
                for (size_t r = 0; r < conf->repl_remote_region_cnt; r++, k++)
                        remote_names[k] = tb_repl_topic_name(conf, conf->repl_remote_regions[r],
                                                             topics[i], remote[k],
                                                             sizeof(remote[k]));
        }
        tb_pgsink_conf_t c = tb_proj_sink_conf(&pj->batch, TB_PROJECTOR_CONSUMER);
        c.conf = conf;
        c.store = ctx->store;
        c.stopping = &ctx->stopping;
        c.topics = topics;
        c.topic_cnt = TB_ARRAY_LEN(topics);
        c.topic_names = remote_names;
        c.topic_name_cnt = remote_cnt;
        c.batch_max = TB_PROJ_BATCH_MAX;
        c.batch_wait_us = TB_PROJ_BATCH_WAIT_US;
        c.metric_failures = "taskbus_projector_failures_total";
        c.metric_batch_seconds = "taskbus_projector_batch_seconds";
        if ((err = tb_pgsink_start(&c, &pj->sink, errstr, errstr_size)))
                goto fail;
        free(remote);
        free(remote_names);
        *state = pj;
        return TB_OK;
fail:
        free(remote);
        free(remote_names);
        tb_proj_stop(pj);
        return err;
}

const tb_role_t tb_role_projector = {
        .name = "projector",
        .description = "applies task-events, runs and run-results to PostgreSQL exactly once "
                       "(offsets stored there)",
        .start = tb_proj_start,
        .stop = tb_proj_stop,
};
