/**
 * @file projection/projection.c
 * @brief The projection of the bus into PostgreSQL: applies task-events
 *        (tasks, task_history), runs and run-results (runs: the run history)
 *        exactly once, with the consumed offsets stored in the same
 *        transaction (consumer_offsets) rather than in Kafka.
 *
 * Projected topics are listed in tb_projection_topics[] with their schema and
 * apply function. The projector role is a pgsink (bus/pgsink.h) on all of
 * them, with the callbacks of this file that route each record to its
 * topic's function and NOTIFY the listeners; `taskbus replay` applies its
 * batches with the same callbacks (tb_projection_apply_batch()).
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
#include "projection/projection.h"

#include "bus/bus.h"
#include "bus/pgsink.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"
#include "store/store.h"
#include "store/claims.h"
#include "store/runs.h"
#include "store/tasks.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_PROJECTION_SUB "projector"
/** NOTIFY payloads are limited to 8000 bytes by PostgreSQL. */
#define TB_PROJECTION_NOTIFY_MAX 7900
/** Why a deleted task's runs are cancelled. */
#define TB_PROJECTION_DELETED_REASON "the task was deleted"

/* ---- task-events --------------------------------------------------------------- */

static const char *tb_projection_jstr(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}


static void tb_projection_notify_add(tb_projection_batch_t *b, const char *task_id,
                                     const char *version) {
        char ierr[160];
        if (b->notify.len > TB_PROJECTION_NOTIFY_MAX)
                return;
        if (tb_task_id_check("task_id", task_id, strlen(task_id), ierr, sizeof(ierr))) {
                /* not an id any interface takes (a hostile event): naming it
                 * could spoof another entry; an empty payload makes the
                 * listeners check for themselves */
                b->notify.len = TB_PROJECTION_NOTIFY_MAX + 1;
                return;
        }
        if (b->notify.len)
                tb_buf_append(&b->notify, ",", 1);
        tb_buf_append(&b->notify, task_id, strlen(task_id));
        tb_buf_append(&b->notify, " ", 1);
        tb_buf_append(&b->notify, version, strlen(version));
}

/** One task event as the projection writes it: the parameters of its history
 *  row (hp) and of its task row (up; only with a task), pointing into the
 *  struct (so it must not move once filled). */
typedef struct tb_projection_ev {
        const char *id, *type;
        json_t *task; /**< the normalized task, NULL for an event without one */
        char version[32], at[32], created_at[32], epoch[32], part[16], off[32];
        char *task_text, *labels_text, *changed_text;
        const char *hp[12];
        const char *up[15];
} tb_projection_ev_t;

static void tb_projection_ev_free(tb_projection_ev_t *e) {
        free(e->task_text);
        free(e->labels_text);
        free(e->changed_text);
        if (e->task)
                json_decref(e->task);
}

/** Fill \p e from the decoded event \p ev (owned by the caller, and kept
 *  until \p e is freed) of \p msg. @returns TB_ERR_INTERNAL when the
 *  event's TaskSpec cannot be converted (the record's fault). */
static tb_err_t tb_projection_ev_fill(const tb_config_t *conf, const rd_kafka_message_t *msg,
                                      const json_t *ev, tb_projection_ev_t *e, char *errstr,
                                      size_t errstr_size) {
        const json_t *spec = json_object_get(ev, "task");
        memset(e, 0, sizeof(*e));
        e->id = tb_projection_jstr(ev, "task_id");
        e->type = tb_projection_jstr(ev, "type");
        e->task = json_is_object(spec) ? tb_task_from_spec(spec) : NULL;
        tb_snprintf(e->version, sizeof(e->version), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "version")));
        tb_snprintf(e->at, sizeof(e->at), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "at")));
        tb_snprintf(e->created_at, sizeof(e->created_at), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "created_at")));
        tb_snprintf(e->epoch, sizeof(e->epoch), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(ev, "epoch")));
        tb_snprintf(e->part, sizeof(e->part), "%" PRId32, msg->partition);
        tb_snprintf(e->off, sizeof(e->off), "%" PRId64, msg->offset);
        if (json_is_object(spec) && !e->task)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "task %s version %s: the event's TaskSpec cannot be converted",
                                 e->id, e->version);
        e->changed_text = json_dumps(json_object_get(ev, "changed_fields"), JSON_COMPACT);
        const char *group = NULL;
        if (e->task) {
                e->task_text = json_dumps(e->task, JSON_COMPACT | JSON_SORT_KEYS);
                const json_t *labels = json_object_get(e->task, "labels");
                e->labels_text = labels ? json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS)
                                        : strdup("{}");
                group = tb_projection_jstr(e->task, "security_group");
        }
        const char *source = "";
        tb_repl_topic_parse(conf, rd_kafka_topic_name(msg->rkt), &source, NULL);
        const char *hp[] = {e->id,
                            e->version,
                            tb_projection_jstr(ev, "event_id"),
                            e->type,
                            e->at,
                            tb_projection_jstr(ev, "actor"),
                            tb_projection_jstr(ev, "command_id"),
                            e->changed_text ? e->changed_text : "[]",
                            e->task_text,
                            group,
                            source,
                            e->epoch};
        memcpy(e->hp, hp, sizeof(hp));
        if (e->task) {
                const char *up[] = {e->id,
                                    e->version,
                                    tb_projection_jstr(e->task, "name"),
                                    group,
                                    tb_projection_jstr(e->task, "user_id"),
                                    e->task_text,
                                    json_is_true(json_object_get(e->task, "paused")) ? "true"
                                                                                    : "false",
                                    e->labels_text ? e->labels_text : "{}",
                                    tb_projection_jstr(e->task, "home_region"),
                                    e->epoch,
                                    e->created_at,
                                    tb_projection_jstr(ev, "created_by"),
                                    e->at,
                                    e->part,
                                    e->off};
                memcpy(e->up, up, sizeof(up));
        }
        return TB_OK;
}

static tb_err_t tb_projection_apply_event(tb_projection_batch_t *b, const rd_kafka_message_t *msg,
                                    const json_t *ev, char *errstr, size_t errstr_size) {
        tb_projection_ev_t e;
        tb_err_t err = tb_projection_ev_fill(b->conf, msg, ev, &e, errstr, errstr_size);
        if (!err)
                err = tb_store_tasks_history_insert(b->conn, e.hp, errstr, errstr_size);
        if (err)
                goto out;
        if (e.task) {
                err = tb_store_tasks_upsert(b->conn, e.up, errstr, errstr_size);
        } else {
                err = tb_store_tasks_delete(b->conn, e.id, e.version, e.epoch, errstr,
                                            errstr_size);
                /* A deleted task's running (and held) runs stop: their
                 * executors see the request within a lease renewal. */
                if (!err && !strcmp(e.type, "DELETED"))
                        err = tb_store_claims_cancel_task_runs(b->conn, e.id,
                                                               TB_PROJECTION_DELETED_REASON, NULL,
                                                               errstr, errstr_size);
        }
        if (!err) {
                b->stats.events++;
                tb_projection_notify_add(b, e.id, e.version);
        }
out:
        tb_projection_ev_free(&e);
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

/** Fill in the group of a run projected before its task or RunRequest, and
 *  set the expiry of a final run's log. */
static tb_err_t tb_projection_run_settle(tb_projection_batch_t *b, const char *run_id, char *errstr,
                                         size_t errstr_size) {
        tb_store_runs_retention_t rr;
        tb_err_t err = tb_store_runs_retention(b->conn, run_id, &rr, errstr, errstr_size);
        if (err)
                return err;
        if (!rr.found || !rr.final)
                return TB_OK;
        int64_t ret = b->conf->log_retention_default_ms;
        char derr[256];
        int64_t ms = 0;
        if (rr.has_retention_ms)
                ret = rr.retention_ms;
        else if (rr.has_task_retention &&
                 tb_units_duration_parse(rr.task_retention, &ms, derr, sizeof(derr)) == TB_OK)
                ret = ms;
        const tb_group_conf_t *gp = tb_config_group_policy(b->conf, rr.group);
        if (gp && gp->log_retention_max_ms > 0 && ret > gp->log_retention_max_ms)
                ret = gp->log_retention_max_ms;
        if (ret < 0)
                ret = 0;
        char at[32];
        tb_snprintf(at, sizeof(at), "%" PRId64, rr.end_ms + ret);
        return tb_store_runs_set_log_expiry(b->conn, run_id, at, errstr, errstr_size);
}

/** "RUN_NOW" -> "run_now" into \p out (64 bytes). */
static void tb_projection_lower(const char *s, char out[64]) {
        size_t i = 0;
        for (; s[i] && i < 63; i++)
                out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
        out[i] = '\0';
}

/** A nullable long field as text, or NULL. */
static const char *tb_projection_jlong(const json_t *o, const char *key, char buf[32]) {
        const json_t *v = json_object_get(o, key);
        if (!json_is_integer(v))
                return NULL;
        tb_snprintf(buf, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
}

/* A record's params map as JSON text for runs.params (caller frees; NULL:
 * none, or a value PostgreSQL's jsonb cannot hold: a NUL, which it refuses). */
static char *tb_projection_params(const json_t *rec) {
        const json_t *m = json_object_get(rec, "params");
        const char *k;
        json_t *v;
        if (!json_object_size(m))
                return NULL;
        json_object_foreach((json_t *)m, k, v)
                if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
                        return NULL;
        return json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
}

static tb_err_t tb_projection_apply_run_request(tb_projection_batch_t *b, const rd_kafka_message_t *msg,
                                          const json_t *rq, char *errstr, size_t errstr_size) {
        const json_t *snap = json_object_get(rq, "snapshot");
        const char *run_id = tb_projection_jstr(rq, "run_id");
        char nominal[32], attempt[32], emitted[32], ret[32], trigger[64];
        tb_projection_lower(tb_projection_jstr(rq, "trigger"), trigger);
        const char *p[] = {run_id,
                           tb_projection_jstr(rq, "task_id"),
                           tb_projection_jstr(snap, "security_group"),
                           tb_projection_jlong(rq, "nominal_time", nominal),
                           tb_projection_jlong(rq, "attempt", attempt),
                           trigger,
                           tb_projection_jlong(rq, "emitted_at", emitted),
                           tb_projection_jstr(snap, "executor"),
                           tb_projection_jlong(snap, "log_retention_ms", ret),
                           NULL};
        if (!*run_id || !p[3]) {
                tb_warn(TB_PROJECTION_SUB, "runs [%" PRId32 "] offset %" PRId64
                        ": a RunRequest without run_id or nominal_time: skipped",
                        msg->partition, msg->offset);
                return TB_OK;
        }
        char *params = tb_projection_params(rq);
        p[9] = params;
        tb_err_t err = tb_store_runs_upsert_request(b->conn, p, errstr, errstr_size);
        const json_t *parents = json_object_get(rq, "parents");
        if (!err && json_array_size(parents)) { /* a dependency run's (scheduler/after.c) */
                char *text = json_dumps(parents, JSON_COMPACT);
                err = text ? tb_store_runs_set_parents(b->conn, run_id, text, errstr, errstr_size)
                           : TB_ERR_NOMEM;
                free(text);
        }
        free(params);
        if (!err)
                err = tb_projection_run_settle(b, run_id, errstr, errstr_size);
        if (!err)
                b->stats.results++;
        return err;
}

static tb_err_t tb_projection_apply_run_result(tb_projection_batch_t *b, const rd_kafka_message_t *msg,
                                         const json_t *rr, char *errstr, size_t errstr_size) {
        const char *run_id = tb_projection_jstr(rr, "run_id");
        char nominal[32], attempt[32], started[32], finished[32], code[32], sig[32], out[32];
        char last[32], occ[32], status[64];
        tb_projection_lower(tb_projection_jstr(rr, "status"), status);
        if (!*run_id || !strcmp(status, "duplicate")) {
                /* a duplicate delivery says nothing about the run itself */
                return TB_OK;
        }
        const char *fin = tb_projection_jlong(rr, "finished_at", finished);
        if (!fin && strcmp(status, "running"))
                fin = tb_projection_jlong(rr, "at", finished); /* skipped / expired: decided then */
        const json_t *e = json_object_get(rr, "error");
        const char *p[] = {run_id,
                           tb_projection_jstr(rr, "task_id"),
                           tb_projection_jlong(rr, "nominal_time", nominal),
                           tb_projection_jlong(rr, "attempt", attempt),
                           status,
                           tb_projection_jlong(rr, "started_at", started),
                           fin,
                           tb_projection_jlong(rr, "exit_code", code),
                           tb_projection_jlong(rr, "signal", sig),
                           tb_projection_jstr(rr, "executor"),
                           tb_projection_jstr(rr, "host"),
                           tb_projection_jlong(rr, "output_bytes", out),
                           json_is_true(json_object_get(rr, "infra_error")) ? "true" : "false",
                           json_string_value(e),
                           /* a range of fires not run (records of the old
                            * schema decode with null and 1) */
                           tb_projection_jlong(rr, "last_nominal_time", last),
                           tb_projection_jlong(rr, "occurrences", occ),
                           NULL};
        if (!p[2]) {
                tb_warn(TB_PROJECTION_SUB, "run-results [%" PRId32 "] offset %" PRId64
                        ": a RunResult without nominal_time: skipped",
                        msg->partition, msg->offset);
                return TB_OK;
        }
        if (!p[3])
                p[3] = "1";
        if (!p[11])
                p[11] = "0";
        if (!p[15])
                p[15] = "1";
        char *params = tb_projection_params(rr);
        p[16] = params;
        tb_err_t err = tb_store_runs_upsert_result(b->conn, p, errstr, errstr_size);
        if (!err && !strcmp(status, "skipped_dependency")) /* no RunRequest says so */
                err = tb_store_runs_set_trigger(b->conn, run_id, "dependency", errstr,
                                                errstr_size);
        free(params);
        if (!err)
                err = tb_projection_run_settle(b, run_id, errstr, errstr_size);
        if (!err)
                b->stats.results++;
        return err;
}

/* ---- the projected topics ------------------------------------------------------- */


/** Every topic the projector consumes, with its schema and apply function. */
const tb_projection_topic_t tb_projection_topics[3] = {
        {TB_TOPIC_EVENTS, TB_SCHEMA_TASK_EVENT, tb_projection_apply_event},
        {TB_TOPIC_RUNS, TB_SCHEMA_RUN_REQUEST, tb_projection_apply_run_request},
        {TB_TOPIC_RESULTS, TB_SCHEMA_RUN_RESULT, tb_projection_apply_run_result},
};

/** The projected topic of \p name: a local topic or another region's copy
 *  of one (\p region then names that region, else it is NULL). */
static const tb_projection_topic_t *tb_projection_topic_of(const tb_config_t *conf, const char *name,
                                               const char **region) {
        char buf[256];
        tb_topic_t t;
        *region = NULL;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projection_topics); i++)
                if (!strcmp(tb_topic_name(conf, tb_projection_topics[i].topic, buf, sizeof(buf)),
                            name))
                        return &tb_projection_topics[i];
        if (!tb_repl_topic_parse(conf, name, region, &t))
                return NULL;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projection_topics); i++)
                if (tb_projection_topics[i].topic == t)
                        return &tb_projection_topics[i];
        return NULL;
}

/* ---- the batch: the pgsink callbacks ----------------------------------------------- */

static void tb_projection_batch_begin(void *opaque) {
        tb_projection_batch_t *b = opaque;
        memset(&b->stats, 0, sizeof(b->stats));
        b->notify.len = 0;
        if (b->notify.data)
                b->notify.data[0] = '\0';
}

/** Route \p m to its topic's apply function. */
static tb_pgsink_verdict_t tb_projection_apply_record(PGconn *conn, const rd_kafka_message_t *m,
                                                void *opaque, char *errstr,
                                                size_t errstr_size) {
        tb_projection_batch_t *b = opaque;
        const char *tname = rd_kafka_topic_name(m->rkt);
        const char *region = NULL;
        const tb_projection_topic_t *pt = tb_projection_topic_of(b->conf, tname, &region);
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
static tb_err_t tb_projection_batch_finish(PGconn *conn, void *opaque, char *errstr,
                                     size_t errstr_size) {
        tb_projection_batch_t *b = opaque;
        /* delivered on commit only: listeners never see an uncommitted state */
        const char *np[] = {b->notify.len > TB_PROJECTION_NOTIFY_MAX
                                    ? ""
                                    : (b->notify.data ? b->notify.data : "")};
        return tb_store_exec(conn, "notify " TB_PROJECTION_CHANNEL,
                             "SELECT pg_notify('" TB_PROJECTION_CHANNEL "', $1)", 1, np, NULL,
                             errstr, errstr_size);
}

static void tb_projection_batch_committed(void *opaque) {
        tb_projection_batch_t *b = opaque;
        if (b->total) {
                b->total->records += b->stats.records;
                b->total->malformed += b->stats.malformed;
                b->total->events += b->stats.events;
                b->total->results += b->stats.results;
                b->total->quarantined += b->stats.quarantined;
        }
        tb_metrics_add("taskbus_projector_records_total", NULL, (double)b->stats.records);
}

static void tb_projection_batch_quarantined(void *opaque, const rd_kafka_message_t *m) {
        (void)m;
        ((tb_projection_batch_t *)opaque)->stats.quarantined++;
}

static const tb_pgsink_ops_t tb_projection_sink_ops = {
        .begin = tb_projection_batch_begin,
        .apply = tb_projection_apply_record,
        .finish = tb_projection_batch_finish,
        .committed = tb_projection_batch_committed,
        .quarantined = tb_projection_batch_quarantined,
};

/** What a projector batch does, with \p b as its state (the sink and
 *  `taskbus replay` alike). */
tb_pgsink_conf_t tb_projection_sink_conf(tb_projection_batch_t *b, const char *consumer) {
        return (tb_pgsink_conf_t){
                .sub = TB_PROJECTION_SUB,
                .consumer = consumer,
                .ops = &tb_projection_sink_ops,
                .opaque = b,
                .metric_malformed = "taskbus_projector_malformed_total",
                .quarantine = true,
        };
}

tb_err_t tb_projection_apply_batch(PGconn *conn, const tb_config_t *conf, const char *consumer,
                                  rd_kafka_message_t *const *msgs, size_t cnt,
                                  tb_projection_stats_t *stats, char *errstr, size_t errstr_size) {
        tb_projection_batch_t b = {.conf = conf, .total = stats};
        tb_pgsink_conf_t c = tb_projection_sink_conf(&b, consumer);
        tb_err_t err = tb_pgsink_apply(conn, &c, msgs, cnt, errstr, errstr_size);
        tb_buf_free(&b.notify);
        return err;
}

/* ---- the set-based batch of task events (taskbus replay) --------------------------- */

/** A record of the batch set aside before the merge. */
typedef struct tb_projection_poison {
        size_t i;
        bool fresh;    /**< not in quarantine before: report it once committed */
        char why[512];
} tb_projection_poison_t;

/** Stage \p e (the batch's \p seq th event) as one COPY row. */
static void tb_projection_stage_row(tb_buf_t *rows, size_t seq, const tb_projection_ev_t *e) {
        char s[24];
        tb_snprintf(s, sizeof(s), "%zu", seq);
        tb_store_copy_field(rows, s, false);
        for (size_t k = 0; k < TB_ARRAY_LEN(e->hp); k++)
                tb_store_copy_field(rows, e->hp[k], false);
        /* name, user_id, paused, labels, home_region, created_at, created_by,
         * event_partition, event_offset: the task row's (up[]) */
        static const size_t from_up[] = {2, 4, 6, 7, 8, 10, 11, 13, 14};
        _Static_assert(1 + TB_ARRAY_LEN(((tb_projection_ev_t *)0)->hp) + TB_ARRAY_LEN(from_up) ==
                               TB_STORE_TASKS_STAGE_FIELDS,
                       "a staged row has the staging table's columns");
        for (size_t k = 0; k < TB_ARRAY_LEN(from_up); k++)
                tb_store_copy_field(rows, e->task ? e->up[from_up[k]] : NULL,
                                    k + 1 == TB_ARRAY_LEN(from_up));
}

/** Decode every record of the batch into \p rows (and the deleted tasks into
 *  \p deleted, a text[] literal), or set it aside in \p poison.
 *  @returns false when a record is not a task event (not for this path). */
static bool tb_projection_stage_all(tb_projection_batch_t *b, rd_kafka_message_t *const *msgs,
                                    size_t cnt, tb_buf_t *rows, tb_buf_t *deleted,
                                    tb_projection_poison_t *poison, size_t *npoison) {
        tb_buf_append(deleted, "{", 1);
        for (size_t i = 0; i < cnt; i++) {
                const rd_kafka_message_t *m = msgs[i];
                const char *region = NULL;
                const tb_projection_topic_t *pt =
                        tb_projection_topic_of(b->conf, rd_kafka_topic_name(m->rkt), &region);
                if (!pt || pt->topic != TB_TOPIC_EVENTS)
                        return false;
                b->stats.records++;
                tb_projection_poison_t *p = &poison[*npoison];
                json_t *ev = NULL;
                if (tb_serde_decode(m->payload, m->len, pt->schema, NULL, &ev, p->why,
                                    sizeof(p->why)) != TB_OK) {
                        b->stats.malformed++;
                        p->i = i;
                        (*npoison)++;
                        continue;
                }
                tb_projection_ev_t e;
                if (tb_projection_ev_fill(b->conf, m, ev, &e, p->why, sizeof(p->why)) != TB_OK) {
                        p->i = i;
                        (*npoison)++;
                } else {
                        tb_projection_stage_row(rows, i, &e);
                        if (!e.task && !strcmp(e.type, "DELETED"))
                                tb_store_array_add(deleted, e.id);
                        b->stats.events++;
                        tb_projection_notify_add(b, e.id, e.version);
                }
                tb_projection_ev_free(&e);
                json_decref(ev);
        }
        tb_buf_append(deleted, "}", 2);
        return true;
}

tb_err_t tb_projection_replay_batch(PGconn *conn, const tb_config_t *conf, const char *consumer,
                                    rd_kafka_message_t *const *msgs, size_t cnt,
                                    tb_projection_stats_t *stats, bool *row_by_row,
                                    char *errstr, size_t errstr_size) {
        tb_projection_batch_t b = {.conf = conf, .total = stats, .conn = conn};
        tb_buf_t rows = {0}, deleted = {0};
        tb_projection_poison_t *poison = calloc(cnt ? cnt : 1, sizeof(*poison));
        size_t npoison = 0;
        tb_err_t err = TB_OK;
        *row_by_row = false;
        tb_projection_batch_begin(&b);
        if (!poison) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "replay: out of memory");
                goto out;
        }
        int64_t t0 = tb_mono_us();
        if (!tb_projection_stage_all(&b, msgs, cnt, &rows, &deleted, poison, &npoison))
                goto row_by_row;
        int64_t t1 = tb_mono_us();
        if (!deleted.data || (rows.len && !rows.data)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "replay: out of memory");
                goto out;
        }
        if ((err = tb_store_begin(conn, errstr, errstr_size)))
                goto failed;
        for (size_t k = 0; k < npoison && !err; k++) {
                err = tb_pgsink_set_aside(conn, TB_PROJECTION_SUB, msgs[poison[k].i],
                                          poison[k].why, &poison[k].fresh, errstr, errstr_size);
                b.stats.quarantined++;
        }
        if (!err && rows.len)
                err = tb_store_tasks_stage(conn, (const char *)rows.data, rows.len, errstr,
                                           errstr_size);
        if (!err && rows.len)
                err = tb_store_tasks_stage_merge(conn, errstr, errstr_size);
        if (!err && deleted.data[1] != '}')
                err = tb_store_claims_cancel_tasks_runs(conn, (const char *)deleted.data,
                                                        TB_PROJECTION_DELETED_REASON, NULL,
                                                        errstr, errstr_size);
        if (!err && consumer)
                err = tb_pgsink_offsets_after(conn, consumer, msgs, cnt, errstr, errstr_size);
        if (!err)
                err = tb_projection_batch_finish(conn, &b, errstr, errstr_size);
        if (!err)
                err = tb_store_commit(conn, errstr, errstr_size);
        if (err)
                goto failed;
        for (size_t k = 0; k < npoison; k++)
                if (poison[k].fresh)
                        tb_pgsink_set_aside_report(TB_PROJECTION_SUB, msgs[poison[k].i],
                                                   poison[k].why);
        if (stats) {
                stats->decode_us += t1 - t0;
                stats->pg_us += tb_mono_us() - t1;
        }
        tb_projection_batch_committed(&b);
        goto out;
failed:
        tb_store_rollback(conn);
        if (PQstatus(conn) != CONNECTION_OK)
                goto out;
        /* refused by PostgreSQL (a constraint, an index row too big, bad
         * text): the row-by-row path tells the record apart and sets it aside */
        tb_debug(TB_PROJECTION_SUB, "set-based batch of %zu record(s): %s; applying it row by row",
                 cnt, errstr);
row_by_row:
        *row_by_row = true;
        err = tb_projection_apply_batch(conn, conf, consumer, msgs, cnt, stats, errstr,
                                        errstr_size);
out:
        free(poison);
        tb_buf_free(&rows);
        tb_buf_free(&deleted);
        tb_buf_free(&b.notify);
        return err;
}
