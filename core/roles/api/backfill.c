/**
 * @file api/backfill.c
 * @brief A task's occurrences in a range and their backfill (docs/api.md,
 *        docs/scheduling.md "Backfill"):
 *
 *  - GET /v1/tasks/{id}/occurrences?from=&to= lists the nominal fires of the
 *    task's schedule in [from, to) (tb_schedule_occurrences(): the
 *    scheduler's own next-fire walk, at most 10,000), each with the run id
 *    its fire has and the run the history holds for it, if any, and, for a
 *    task with calendars, what they do to it (verdict, fire_time, reason,
 *    calendar: tb_task_cals_decide(), the calendars read as the scheduler
 *    reads them).
 *  - POST /v1/tasks/{id}/backfill {"from", "to", "max_parallel"} is one
 *    STEP of a backfill: it emits RunRequests (trigger BACKFILL, nominal_time
 *    the occurrence, run id = the scheduled fire's, tb_schedule_run_id()) for
 *    the earliest occurrences that have no run yet, as many as keep the
 *    task's backfill runs in flight at max_parallel, and answers the range's
 *    progress. Occurrences the task's calendars skip (or roll onto another
 *    one's instant) are not emitted and are counted in "skipped"; a moved
 *    one is emitted with its nominal occurrence's run id, so that it stays
 *    the scheduler's. The caller (`taskbus tasks backfill`) repeats the same POST
 *    until every occurrence is done.
 *
 * Why steps and no backfill state of its own: the state of a backfill IS the
 * run history of its run ids. An occurrence is emitted once its RunRequest
 * is acknowledged by Kafka (acks=all; the answer counts only those), and the
 * step waits until the projection shows it, so the next step counts it in
 * flight and does not emit it again. A crash anywhere loses nothing accepted
 * (what Kafka acknowledged runs; what it did not is emitted by the next
 * step) and runs nothing twice: a run id already in the history is not
 * emitted, and one emitted twice anyway (two steps at once, a scheduled fire
 * of the same nominal time) is refused by the executor's enqueue
 * (run_claims' primary key: "duplicate dropped",
 * taskbus_executor_duplicates_total) and leaves the first request's trigger
 * in its runs row (store/runs.c). Nothing runs in the background: a
 * backfill whose client stops stops after its runs in flight, and the same
 * command resumes it.
 *
 * The api produces RunRequests on runs with its idempotent producer (the
 * task-commands one): the scheduler's transactions are not involved, since
 * a backfill fire depends on no scheduler state (its run id and snapshot
 * come from the task as projected, at the version the answer names).
 */
#include "api/api_internal.h"
#include "api/util.h"
#include "bus/bus.h"
#include "schedule/occurrences.h"
#include "serde/serde.h"
#include "store/backfill.h"
#include "store/calendars.h"
#include "store/store.h"
#include "store/tasks.h"
#include "task/snapshot.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/** max_parallel when the request names none: one run at a time, which
 *  every overlap policy allows. */
#define TB_API_BF_PARALLEL_DEFAULT 1
#define TB_API_BF_PARALLEL_MAX 100
/** How often a step re-reads the projection while waiting for its runs. */
#define TB_API_BF_PROJ_POLL_US 20000

/** One range of one task, as loaded for a listing or a step. */
typedef struct tb_api_bf {
        const char *task_id;
        json_t *task;       /**< the normalized task (owned) */
        int64_t version;
        bool paused;
        int64_t from_ms, to_ms;
        int64_t *occ;       /**< the occurrences, ascending (owned) */
        char (*rid)[33];    /**< their run ids (owned) */
        size_t n;
        tb_calendar_decision_t *dec; /**< the calendars' decision of each (owned; NULL:
                                          the task has no calendars, every one fires) */
        size_t skipped;     /**< occurrences the calendars do not run (skipped, duplicate) */
        tb_task_cals_t cals; /**< the calendars dec points into (owned) */
        json_t *runs;       /**< run id -> its runs row, {status, trigger, final} (owned) */
        size_t done;        /**< occurrences to run whose run is final */
        int64_t in_flight;  /**< the task's backfill runs in flight */
} tb_api_bf_t;

static void tb_api_bf_free(tb_api_bf_t *bf) {
        json_decref(bf->task);
        json_decref(bf->runs);
        free(bf->occ);
        free(bf->rid);
        free(bf->dec);
        tb_task_cals_clear(&bf->cals);
}

/** Does occurrence \p i run (the calendars fire or move it)? */
static bool tb_api_bf_runs(const tb_api_bf_t *bf, size_t i) {
        return !bf->dec || bf->dec[i].verdict == TB_CALENDAR_FIRE ||
               bf->dec[i].verdict == TB_CALENDAR_MOVED;
}

/** The calendars' decisions of the occurrences (the task's rules, its
 *  group's calendars as the scheduler reads them). @returns TB_OK or an
 *  error in \p err. */
static tb_err_t tb_api_bf_calendars(PGconn *c, tb_api_bf_t *bf, const tb_tz_t *tz, char *err,
                                    size_t errsz) {
        tb_task_calendar_t rules[TB_TASK_CALENDARS_MAX];
        size_t n = 0;
        tb_err_t e = tb_task_calendars(bf->task, rules, &n, err, errsz);
        if (e || !n)
                return e;
        const char *group = json_string_value(json_object_get(bf->task, "security_group"));
        if ((e = tb_store_calendar_resolve(c, group, rules, n, &bf->cals, err, errsz)))
                return e;
        if (!(bf->dec = calloc(bf->n ? bf->n : 1, sizeof(*bf->dec))))
                e = tb_seterr(err, errsz, TB_ERR_NOMEM, "out of memory");
        if (!e)
                e = tb_task_cals_decide(&bf->cals, tz, bf->occ, bf->n, bf->dec, err, errsz);
        for (size_t i = 0; !e && i < bf->n; i++)
                bf->skipped += !tb_api_bf_runs(bf, i);
        return e;
}

/** An RFC 3339 time \p text (NULL: absent) of field \p name into *\p ms.
 *  @returns false with a 400 answered naming \p name. */
static bool tb_api_bf_time(tb_http_resp_t *resp, const char *name, const char *text,
                           bool is_string, int64_t *ms) {
        char err[256] = "";
        if (text && is_string && tb_time_parse(text, ms, err, sizeof(err)) == TB_OK)
                return true;
        tb_http_error(resp, 400, "invalid_argument", name,
                      "%s: %s; expected an RFC 3339 time like 2026-01-02T03:04:05Z", name,
                      !text ? "required" : !is_string ? "not a string" : err);
        return false;
}

/** The caller's groups as a text[] literal (caller frees). */
static char *tb_api_bf_groups(const tb_principal_t *p) {
        tb_buf_t b = {0};
        tb_buf_append(&b, "{", 1);
        for (size_t i = 0; i < p->group_cnt; i++)
                tb_store_array_add(&b, p->groups[i]); /* its own commas */
        tb_buf_append(&b, "}", 2);
        return b.data;
}

/** Re-read the runs rows of the range's run ids into bf->runs and bf->done.
 *  @returns TB_OK or a database error (in \p err). */
static tb_err_t tb_api_bf_state(PGconn *c, tb_api_bf_t *bf, char *err, size_t errsz) {
        tb_buf_t ids = {0};
        tb_buf_append(&ids, "{", 1);
        for (size_t i = 0; i < bf->n; i++) {
                if (i)
                        tb_buf_append(&ids, ",", 1);
                tb_buf_append(&ids, bf->rid[i], 32);
        }
        tb_buf_append(&ids, "}", 2);
        PGresult *r = NULL;
        tb_err_t e = ids.data ? tb_store_backfill_runs(c, bf->task_id, ids.data, &r, err, errsz)
                              : TB_ERR_NOMEM;
        tb_buf_free(&ids);
        if (!e)
                e = tb_store_backfill_in_flight(c, bf->task_id, &bf->in_flight, err, errsz);
        if (e) {
                PQclear(r);
                return e;
        }
        json_decref(bf->runs);
        bf->runs = json_object();
        bf->done = 0;
        for (int i = 0; bf->runs && i < PQntuples(r); i++) {
                bool final = PQgetvalue(r, i, TB_BF_FINAL)[0] == 't';
                json_object_set_new(bf->runs, PQgetvalue(r, i, TB_BF_RUN_ID),
                                    json_pack("{s:s, s:s, s:b}", "status",
                                              PQgetvalue(r, i, TB_BF_STATUS), "trigger",
                                              PQgetvalue(r, i, TB_BF_TRIGGER), "final", final));
        }
        PQclear(r);
        for (size_t i = 0; bf->runs && i < bf->n; i++)
                bf->done += tb_api_bf_runs(bf, i) &&
                            json_is_true(json_object_get(json_object_get(bf->runs, bf->rid[i]),
                                                         "final"));
        return bf->runs ? TB_OK : TB_ERR_NOMEM;
}

/**
 * Load task \p bf->task_id (visible to the caller), its occurrences in
 * [from, to) and their runs. @returns false when answered (404, 400 naming
 * `to` for a range over the cap, 503).
 */
static bool tb_api_bf_load(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp, PGconn *c,
                           tb_api_bf_t *bf) {
        char err[512];
        char *groups = tb_api_bf_groups(tb_api_principal(req));
        PGresult *r = NULL;
        tb_err_t e = groups ? tb_store_tasks_get(c, bf->task_id, groups, &r, err, sizeof(err))
                            : TB_ERR_NOMEM;
        free(groups);
        if (e) {
                tb_api_db_error(resp, e == TB_ERR_NOMEM ? "out of memory" : err);
                return false;
        }
        if (PQntuples(r) == 0) {
                PQclear(r);
                tb_api_not_found(resp, "task", bf->task_id);
                return false;
        }
        json_error_t je;
        bf->task = json_loads(PQgetvalue(r, 0, 2), 0, &je);
        bf->version = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        bf->paused = PQgetvalue(r, 0, 3)[0] == 't';
        int64_t created = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
        PQclear(r);
        tb_schedule_t s = {0};
        if (!json_is_object(bf->task) ||
            tb_task_schedule(bf->task, created, &s, err, sizeof(err)) != TB_OK) {
                tb_schedule_clear(&s);
                tb_http_error(resp, 500, "internal", "schedule",
                              "task '%s': its stored schedule cannot be read: %s", bf->task_id,
                              json_is_object(bf->task) ? err : je.text);
                return false;
        }
        e = tb_schedule_occurrences(&s, bf->from_ms, bf->to_ms, 0, &bf->occ, &bf->n, err,
                                    sizeof(err));
        if (!e && (e = tb_api_bf_calendars(c, bf, s.tz, err, sizeof(err)))) {
                tb_schedule_clear(&s);
                tb_api_db_error(resp, err);
                return false;
        }
        tb_schedule_clear(&s);
        if (e == TB_ERR_INVALID) {
                /* the messages name their field first: "to: ..." */
                tb_http_error(resp, 400, "invalid_argument",
                              strncmp(err, "to:", 3) ? "schedule" : "to", "%s", err);
                return false;
        }
        if (e || !(bf->rid = calloc(bf->n ? bf->n : 1, sizeof(*bf->rid)))) {
                tb_http_error(resp, 500, "internal", NULL, "occurrences: out of memory");
                return false;
        }
        for (size_t i = 0; i < bf->n; i++)
                tb_schedule_run_id(bf->task_id, bf->occ[i], 1, bf->rid[i]);
        if ((e = tb_api_bf_state(c, bf, err, sizeof(err)))) {
                tb_api_db_error(resp, err);
                return false;
        }
        return true;
}

/** The range's progress: counts per status of the runs the history holds. */
static json_t *tb_api_bf_progress(const tb_api_bf_t *bf) {
        char f[32], t[32];
        tb_time_format(bf->from_ms, f);
        tb_time_format(bf->to_ms, t);
        json_t *statuses = json_object();
        const char *id;
        json_t *run;
        json_object_foreach(bf->runs, id, run) {
                const char *st = json_string_value(json_object_get(run, "status"));
                json_t *c = json_object_get(statuses, st);
                json_object_set_new(statuses, st,
                                    json_integer(c ? json_integer_value(c) + 1 : 1));
        }
        return json_pack("{s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "task_id",
                         bf->task_id, "task_version", (json_int_t)bf->version, "from", f, "to", t,
                         "occurrences", (json_int_t)bf->n, "skipped", (json_int_t)bf->skipped,
                         "recorded", (json_int_t)json_object_size(bf->runs), "done",
                         (json_int_t)bf->done, "in_flight", (json_int_t)bf->in_flight,
                         "statuses", statuses, "complete", bf->done == bf->n - bf->skipped);
}

void tb_api_tasks_occurrences(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        static const char *const known[] = {"from", "to", NULL};
        tb_api_bf_t bf = {.task_id = req->params[0]};
        if (!tb_api_id_ok(bf.task_id)) {
                tb_api_not_found(resp, "task", bf.task_id);
                return;
        }
        const char *from = tb_http_query(req, "from"), *to = tb_http_query(req, "to");
        if (!tb_api_query_check(req, resp, known, "from, to", NULL, NULL) ||
            !tb_api_bf_time(resp, "from", from, true, &bf.from_ms) ||
            !tb_api_bf_time(resp, "to", to, true, &bf.to_ms))
                return;
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return;
        bool ok = tb_api_bf_load(api, req, resp, c, &bf);
        tb_store_release(api->store, c);
        json_t *out = ok ? tb_api_bf_progress(&bf) : NULL;
        json_t *list = ok ? json_array() : NULL;
        for (size_t i = 0; list && i < bf.n; i++) {
                char at[32];
                tb_time_format(bf.occ[i], at);
                json_t *run = json_object_get(bf.runs, bf.rid[i]);
                json_t *o = json_pack("{s:s, s:s, s:O?, s:O?}", "nominal_time", at, "run_id",
                                      bf.rid[i], "status", json_object_get(run, "status"),
                                      "trigger", json_object_get(run, "trigger"));
                if (o && bf.dec)
                        tb_task_cals_decision_json(&bf.dec[i], o);
                json_array_append_new(list, o);
        }
        if (out && list) {
                json_object_set_new(out, "items", list);
                tb_http_json(resp, 200, out);
        } else if (ok) {
                json_decref(out);
                json_decref(list);
                tb_http_error(resp, 500, "internal", NULL, "occurrences: out of memory");
        }
        tb_api_bf_free(&bf);
}

/** The body of a backfill step: from, to, max_parallel. @returns false when
 *  answered (400 naming the field). */
static bool tb_api_bf_body(tb_http_req_t *req, tb_http_resp_t *resp, tb_api_bf_t *bf,
                           int64_t *max_parallel) {
        json_t *body = tb_api_body_object(req, resp, "backfill");
        if (!body)
                return false;
        static const char *const fields[] = {"from", "to", "max_parallel", NULL};
        bool ok = tb_api_body_known(body, fields, "backfill", "from, to and max_parallel", resp);
        json_t *v;
        static const char *const times[] = {"from", "to"};
        int64_t *ms[] = {&bf->from_ms, &bf->to_ms};
        for (int i = 0; ok && i < 2; i++) {
                v = json_object_get(body, times[i]);
                const char *text = !v ? NULL : json_is_string(v) ? json_string_value(v) : "";
                ok = tb_api_bf_time(resp, times[i], text, !v || json_is_string(v), ms[i]);
        }
        int64_t now = tb_now_ms();
        if (ok && bf->to_ms > now) {
                char at[32];
                tb_time_format(now, at);
                tb_http_error(resp, 400, "invalid_argument", "to",
                              "to: a backfill covers past occurrences only: use a `to` at or "
                              "before now (%s); the scheduler fires the later ones",
                              at);
                ok = false;
        }
        v = json_object_get(body, "max_parallel");
        *max_parallel = TB_API_BF_PARALLEL_DEFAULT;
        if (ok && v && !json_is_null(v)) {
                if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                    json_integer_value(v) > TB_API_BF_PARALLEL_MAX) {
                        tb_http_error(resp, 400, "invalid_argument", "max_parallel",
                                      "max_parallel: expected an integer from 1 to %d",
                                      TB_API_BF_PARALLEL_MAX);
                        ok = false;
                } else {
                        *max_parallel = json_integer_value(v);
                }
        }
        json_decref(body);
        return ok;
}

/** The RunRequest of occurrence \p i, encoded into \p val. */
static tb_err_t tb_api_bf_encode(const tb_api_bf_t *bf, const json_t *spec, size_t i,
                                 tb_buf_t *val, char *err, size_t errsz) {
        json_t *snap = tb_task_run_snapshot(spec);
        json_t *params = tb_task_default_params(spec);
        json_t *rq = snap && params
                             ? json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:I, s:O, s:O}", "run_id",
                                         bf->rid[i], "task_id", bf->task_id, "task_version",
                                         (json_int_t)bf->version, "nominal_time",
                                         (json_int_t)bf->occ[i], "attempt", 1, "trigger",
                                         "BACKFILL", "emitted_at", (json_int_t)tb_now_ms(),
                                         "snapshot", snap, "params", params)
                             : NULL;
        json_decref(snap);
        json_decref(params);
        tb_err_t e = rq ? tb_serde_encode(TB_SCHEMA_RUN_REQUEST, rq, val, err, errsz)
                        : tb_seterr(err, errsz, TB_ERR_NOMEM, "out of memory");
        json_decref(rq);
        return e;
}

/**
 * Produce the RunRequests of occurrences \p pick[0..k) and wait for their
 * delivery reports. @returns how many Kafka acknowledged; \p err says why
 * the others were not.
 */
static size_t tb_api_bf_produce(tb_api_t *api, const tb_api_bf_t *bf, const size_t *pick,
                                size_t k, char *err, size_t errsz) {
        json_t *spec = tb_task_to_spec(bf->task);
        tb_api_delivery_t *d = calloc(k ? k : 1, sizeof(*d));
        if (!spec || !d) {
                json_decref(spec);
                free(d);
                tb_snprintf(err, errsz, "out of memory");
                return 0;
        }
        char topic[256];
        tb_topic_name(api->ctx->conf, TB_TOPIC_RUNS, topic, sizeof(topic));
        size_t sent = 0;
        for (; sent < k; sent++) {
                tb_buf_t val = {0};
                if (tb_api_bf_encode(bf, spec, pick[sent], &val, err, errsz)) {
                        tb_buf_free(&val);
                        break;
                }
                pthread_mutex_init(&d[sent].mu, NULL);
                pthread_cond_init(&d[sent].cv, NULL);
                rd_kafka_resp_err_t ke = rd_kafka_producev(
                        tb_bus_rprod_get(api->producer), RD_KAFKA_V_TOPIC(topic),
                        RD_KAFKA_V_KEY(bf->task_id, strlen(bf->task_id)),
                        RD_KAFKA_V_VALUE(val.data, val.len),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&d[sent]),
                        RD_KAFKA_V_END);
                tb_bus_rprod_put(api->producer);
                tb_buf_free(&val);
                if (ke) {
                        pthread_mutex_destroy(&d[sent].mu);
                        pthread_cond_destroy(&d[sent].cv);
                        tb_snprintf(err, errsz, "cannot produce to %s: %s", topic,
                                    rd_kafka_err2str(ke));
                        break;
                }
        }
        /* every record produced gets its report (message.timeout.ms) */
        size_t acked = 0;
        for (size_t i = 0; i < sent; i++) {
                pthread_mutex_lock(&d[i].mu);
                while (!d[i].done)
                        pthread_cond_wait(&d[i].cv, &d[i].mu);
                pthread_mutex_unlock(&d[i].mu);
                if (d[i].err)
                        tb_snprintf(err, errsz, "%s: %s", topic, rd_kafka_err2str(d[i].err));
                else
                        acked++;
                pthread_mutex_destroy(&d[i].mu);
                pthread_cond_destroy(&d[i].cv);
        }
        free(d);
        json_decref(spec);
        return acked;
}

void tb_api_tasks_backfill(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const tb_config_t *conf = api->ctx->conf;
        tb_api_bf_t bf = {.task_id = req->params[0]};
        int64_t max_parallel;
        if (!tb_api_id_ok(bf.task_id)) {
                tb_api_not_found(resp, "task", bf.task_id);
                return;
        }
        if (!tb_api_bf_body(req, resp, &bf, &max_parallel))
                return;
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return;
        char err[512] = "";
        size_t *pick = NULL, k = 0, acked = 0;
        if (!tb_api_bf_load(api, req, resp, c, &bf))
                goto out;
        const char *home = json_string_value(json_object_get(bf.task, "home_region"));
        if ((conf->repl_remote_region_cnt || conf->repl_region_api_cnt) && home && *home &&
            strcmp(home, conf->region)) {
                tb_http_error(resp, 421, "wrong_region", "home_region",
                              "task '%s' is homed in region '%.63s' and this is region '%s'; "
                              "backfill it in its home region",
                              bf.task_id, home, conf->region);
                goto out;
        }
        const char *overlap = json_string_value(json_object_get(bf.task, "overlap"));
        if (max_parallel > 1 && overlap && strcasecmp(overlap, "allow")) {
                tb_http_error(resp, 400, "invalid_argument", "max_parallel",
                              "max_parallel: %" PRId64 " runs at once of a task whose overlap "
                              "is '%s' would %s each other; use max_parallel 1, or set the "
                              "task's overlap to allow",
                              max_parallel, overlap,
                              strcasecmp(overlap, "replace") ? "skip" : "cancel");
                goto out;
        }
        /* the earliest occurrences without a run, as many as free slots */
        int64_t slots = max_parallel - bf.in_flight;
        pick = calloc(slots > 0 ? (size_t)slots : 1, sizeof(*pick));
        if (!pick) {
                tb_http_error(resp, 500, "internal", NULL, "backfill: out of memory");
                goto out;
        }
        for (size_t i = 0; i < bf.n && (int64_t)k < slots; i++)
                if (tb_api_bf_runs(&bf, i) && !json_object_get(bf.runs, bf.rid[i]))
                        pick[k++] = i;
        if (k) {
                /* no pool connection held while Kafka acknowledges */
                tb_store_release(api->store, c);
                c = NULL;
                acked = tb_api_bf_produce(api, &bf, pick, k, err, sizeof(err));
                tb_info(TB_API_SUB, "backfill of task %s [%" PRId64 ", %" PRId64 "): %zu of %zu "
                        "run requests emitted%s%s", bf.task_id, bf.from_ms, bf.to_ms, acked, k,
                        acked < k ? ": " : "", acked < k ? err : "");
                if (acked < k) {
                        tb_http_error(resp, 503, "unavailable", NULL,
                                      "backfill: %zu of %zu runs emitted, the others were not "
                                      "(%s); the same backfill again emits only what is missing",
                                      acked, k, err);
                        tb_http_add_header(resp, "Retry-After", "1");
                        goto out;
                }
                if (!(c = tb_api_conn(api, resp)))
                        goto out; /* 503 answered; the next step goes on */
                /* until the projection shows them, a next step would not
                 * count them in flight */
                int64_t deadline = tb_mono_us() + conf->api_reply_timeout_ms * 1000;
                for (;;) {
                        if (tb_api_bf_state(c, &bf, err, sizeof(err))) {
                                tb_api_db_error(resp, err);
                                goto out;
                        }
                        size_t seen = 0;
                        for (size_t i = 0; i < k; i++)
                                seen += json_object_get(bf.runs, bf.rid[pick[i]]) != NULL;
                        if (seen == k || tb_mono_us() >= deadline)
                                break;
                        usleep(TB_API_BF_PROJ_POLL_US);
                }
        }
        json_t *out = tb_api_bf_progress(&bf);
        if (out) {
                json_object_set_new(out, "emitted", json_integer((json_int_t)acked));
                json_object_set_new(out, "max_parallel", json_integer(max_parallel));
                tb_http_json(resp, acked ? 202 : 200, out);
        } else {
                tb_http_error(resp, 500, "internal", NULL, "backfill: out of memory");
        }
out:
        if (c)
                tb_store_release(api->store, c);
        free(pick);
        tb_api_bf_free(&bf);
}
