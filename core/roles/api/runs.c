/**
 * @file api/runs.c
 * @brief The run routes of the REST API (schemas/openapi.yaml): a task's run
 *        history, one run, cancelling a run, and a run's output (a page of
 *        it, or a live tail streamed while the run goes on).
 *
 * Everything reads PostgreSQL: runs (projected from runs and run-results)
 * and run_logs (copied from run-logs by the archiver). A run is visible only
 * to members of its security group; to anyone else it does not exist (404,
 * the same answer as an unknown id), live streams included.
 * See docs/runs-and-logs.md.
 */
#include "api/api.h"
#include "api/follow.h"
#include "api/session.h"
#include "api/util.h"
#include "store/claims.h"
#include "store/notify.h"
#include "store/runs.h"

#include <ctype.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TB_API_RUNS_SUB "api"
#define TB_API_RUNS_LIST_DEFAULT 50
#define TB_API_RUNS_LIST_MAX 500
/** Default and largest ?limit of one page of output (docs/api.md). */
#define TB_API_RUNS_LOG_DEFAULT (256 * 1024)
#define TB_API_RUNS_LOG_MAX (4 * 1024 * 1024)
/** A page is read from PostgreSQL and sent this many bytes at a time. */
#define TB_API_RUNS_LOG_SLICE (256 * 1024)
/** Chunks read per fetch of a live tail. */
#define TB_API_RUNS_TAIL_ROWS "64"
/** A live tail of a final run reads without news this often (its expiry,
 *  its end without an eof chunk); of a run going on, only as a fallback:
 *  news of it come from the poller (api/follow.h). */
#define TB_API_RUNS_TAIL_RECHECK_MS 5000
#define TB_API_RUNS_TAIL_FALLBACK_MS 30000
/** A live tail re-checks its caller's token and membership this often (the
 *  cache adds up to TB_API_AUTH_CACHE_MS). */
#define TB_API_RUNS_AUTH_CHECK_MS 1000
/** A live tail waits this long at a gap for the executor's marker before
 *  showing its own (docs/reliability.md, "Log gaps"). */
#define TB_API_RUNS_GAP_WAIT_MS 5000
/** A final run whose output never ended with an eof chunk (LOST: its
 *  executor died) is complete this long after its final status. */
#define TB_API_RUNS_NO_EOF_GRACE_MS 10000

/* ---- helpers ----------------------------------------------------------------- */

/** The caller's groups (or only \p group, one of them, when not NULL) as a
 *  JSON array text, for `security_group IN (SELECT
 *  jsonb_array_elements_text($n::jsonb))`. The caller frees it. */
char *tb_api_runs_groups(const tb_principal_t *p, const char *group) {
        json_t *a = json_array();
        if (group)
                json_array_append_new(a, json_string(group));
        for (size_t i = 0; !group && i < p->group_cnt; i++)
                json_array_append_new(a, json_string(p->groups[i]));
        char *s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        return s;
}

/* ---- run JSON ----------------------------------------------------------------- */

/* tb_api_runs_json() reads the columns of store/runs.h's TB_RC_*. */

static json_t *tb_api_runs_time(PGresult *r, int i, int col) {
        if (PQgetisnull(r, i, col))
                return json_null();
        char buf[32];
        tb_time_format(strtoll(PQgetvalue(r, i, col), NULL, 10), buf);
        return json_string(buf);
}

static json_t *tb_api_runs_int(PGresult *r, int i, int col) {
        return PQgetisnull(r, i, col) ? json_null()
                                      : json_integer(strtoll(PQgetvalue(r, i, col), NULL, 10));
}

/** Row \p i as the API's run object (new reference). */
static json_t *tb_api_runs_json(PGresult *r, int i) {
        json_t *j = json_object();
        json_object_set_new(j, "id", json_string(PQgetvalue(r, i, TB_RC_ID)));
        json_object_set_new(j, "task_id", json_string(PQgetvalue(r, i, TB_RC_TASK)));
        json_object_set_new(j, "task_name",
                            PQgetisnull(r, i, TB_RC_TASK_NAME)
                                    ? json_null()
                                    : json_string(PQgetvalue(r, i, TB_RC_TASK_NAME)));
        json_object_set_new(j, "security_group", json_string(PQgetvalue(r, i, TB_RC_GROUP)));
        json_object_set_new(j, "nominal_time", tb_api_runs_time(r, i, TB_RC_NOMINAL));
        json_object_set_new(j, "attempt", tb_api_runs_int(r, i, TB_RC_ATTEMPT));
        json_object_set_new(j, "trigger", json_string(PQgetvalue(r, i, TB_RC_TRIGGER)));
        json_object_set_new(j, "status", json_string(PQgetvalue(r, i, TB_RC_STATUS)));
        json_object_set_new(j, "scheduled_at", tb_api_runs_time(r, i, TB_RC_SCHEDULED));
        json_object_set_new(j, "started_at", tb_api_runs_time(r, i, TB_RC_STARTED));
        json_object_set_new(j, "finished_at", tb_api_runs_time(r, i, TB_RC_FINISHED));
        json_object_set_new(j, "exit_code", tb_api_runs_int(r, i, TB_RC_EXIT));
        json_object_set_new(j, "signal", tb_api_runs_int(r, i, TB_RC_SIGNAL));
        json_object_set_new(j, "executor", json_string(PQgetvalue(r, i, TB_RC_EXECUTOR)));
        json_object_set_new(j, "host", json_string(PQgetvalue(r, i, TB_RC_HOST)));
        json_object_set_new(j, "output_bytes", tb_api_runs_int(r, i, TB_RC_OUTPUT));
        json_object_set_new(j, "infra_error",
                            json_boolean(PQgetvalue(r, i, TB_RC_INFRA)[0] == 't'));
        json_object_set_new(j, "error",
                            PQgetisnull(r, i, TB_RC_ERROR)
                                    ? json_null()
                                    : json_string(PQgetvalue(r, i, TB_RC_ERROR)));
        json_object_set_new(j, "log_expires_at", tb_api_runs_time(r, i, TB_RC_LOG_EXPIRES));
        json_object_set_new(j, "log_expired",
                            json_boolean(PQgetvalue(r, i, TB_RC_LOG_EXPIRED)[0] == 't'));
        /* a range of fires not run (skipped_paused, skipped_misfire): from
         * nominal_time to last_nominal_time, occurrences of them */
        json_object_set_new(j, "last_nominal_time", tb_api_runs_time(r, i, TB_RC_LAST_NOMINAL));
        json_object_set_new(j, "occurrences", tb_api_runs_int(r, i, TB_RC_OCCURRENCES));
        json_t *params = json_loads(PQgetvalue(r, i, TB_RC_PARAMS), 0, NULL);
        json_object_set_new(j, "params", json_is_object(params) ? params : json_object());
        if (!json_is_object(params))
                json_decref(params);
        return j;
}

/** Load run \p id if visible to \p p. @returns TB_OK (*out owned by the
 *  caller), TB_ERR_NOT_FOUND or a database error. */
static tb_err_t tb_api_runs_load(PGconn *c, const tb_principal_t *p, const char *id, PGresult **out,
                                 char *err, size_t errsz) {
        char *groups = tb_api_runs_groups(p, NULL);
        tb_err_t e = tb_store_runs_get(c, id, groups, out, err, errsz);
        free(groups);
        if (e)
                return e;
        if (PQntuples(*out) == 0) {
                PQclear(*out);
                *out = NULL;
                return TB_ERR_NOT_FOUND;
        }
        return TB_OK;
}

/* ---- GET /v1/tasks/{id}/runs --------------------------------------------------- */

const char *const tb_api_runs_statuses[] = {
        "scheduled", "running",         "succeeded",       "failed",         "timed_out",
        "cancelled", "lost",            "skipped_overlap", "skipped_misfire", "skipped_paused",
        "expired",   "skipped_calendar", "skipped_dependency", NULL,
};
#define TB_API_RUNS_STATUS_TEXT                                                                \
        "scheduled, running, succeeded, failed, timed_out, cancelled, lost, skipped_overlap, " \
        "skipped_misfire, skipped_paused, expired, skipped_calendar, skipped_dependency"

/** ?status=a,b as a text[] literal of *\p cnt statuses into \p out.
 *  @returns false with a 400. */
static bool tb_api_runs_status_arg(tb_http_req_t *req, tb_http_resp_t *resp, tb_buf_t *out,
                                   size_t *cnt) {
        const char *s = tb_http_query(req, "status");
        if (!s)
                return true;
        tb_buf_append(out, "{", 1);
        int n = 0;
        uint32_t seen = 0; /* each status once: one branch of the page's statement each */
        while (*s) {
                size_t which = 0;
                const char *e = strchr(s, ',');
                size_t len = e ? (size_t)(e - s) : strlen(s);
                char one[32];
                bool ok = len > 0 && len < sizeof(one);
                if (ok) {
                        for (size_t i = 0; i < len; i++)
                                one[i] = (char)tolower((unsigned char)s[i]);
                        one[len] = '\0';
                        ok = false;
                        for (size_t i = 0; tb_api_runs_statuses[i] && !ok; i++)
                                if (!strcmp(one, tb_api_runs_statuses[i])) {
                                        ok = true;
                                        which = i;
                                }
                }
                if (!ok) {
                        tb_http_error(resp, 400, "invalid_argument", "status",
                                      "status: '%.*s' is not a run status; valid: "
                                      TB_API_RUNS_STATUS_TEXT " (comma-separated)",
                                      (int)(len > 40 ? 40 : len), s);
                        return false;
                }
                if (!(seen & (1u << which)))
                        tb_buf_printf(out, "%s%s", n++ ? "," : "", one);
                seen |= 1u << which;
                s += len;
                if (*s == ',')
                        s++;
        }
        tb_buf_append(out, "}", 2);
        *cnt = (size_t)n;
        return true;
}

/**
 * Answer one page of runs: of task \p task_id (GET /v1/tasks/{id}/runs), or,
 * \p task_id NULL, of every task of the caller's groups or of the one its
 * ?security_group names (GET /v1/runs). Same filters, order and cursor.
 */
static void tb_api_runs_page(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                             const char *task_id) {
        static const char *const known[] = {"security_group", "status", "since", "until",
                                            "limit",          "cursor", NULL};
        tb_buf_t statuses = {0};
        size_t status_cnt = 0;
        char *groups = NULL;
        PGconn *c = NULL;
        PGresult *r = NULL;
        char since[32], until[32], lim[24], err[512];
        int64_t limit = TB_API_RUNS_LIST_DEFAULT;
        const char *group = NULL;
        if (task_id && !tb_api_id_ok(task_id)) {
                tb_api_not_found(resp, "task", task_id);
                return;
        }
        /* a task's runs take every parameter but security_group */
        if (!tb_api_query_check(req, resp, task_id ? known + 1 : known,
                                task_id ? "status, since, until, limit, cursor"
                                        : "status, since, until, limit, cursor, security_group",
                                NULL, NULL) ||
            !tb_api_runs_status_arg(req, resp, &statuses, &status_cnt) ||
            !tb_api_query_time(req, resp, "since", since) ||
            !tb_api_query_time(req, resp, "until", until) ||
            !tb_api_query_int(req, resp, "limit", 1, TB_API_RUNS_LIST_MAX, &limit) ||
            (!task_id && !tb_api_group_scope(req, resp, &group)))
                goto out;
        tb_api_cursor_t cur;
        bool has_cur;
        if (!tb_api_query_cursor(req, resp, TB_API_CURSOR_RUNS, &cur, &has_cur))
                goto out;
        if (!(c = tb_api_conn(api, resp)))
                goto out;
        groups = tb_api_runs_groups(tb_api_principal(req), group);
        tb_snprintf(lim, sizeof(lim), "%" PRId64, limit + 1);
        if (tb_store_runs_list(c, task_id, groups, has_cur ? cur.key : NULL,
                               has_cur ? cur.id : NULL, statuses.len ? statuses.data : NULL,
                               status_cnt, since[0] ? since : NULL, until[0] ? until : NULL, lim,
                               &r, err, sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        int n = PQntuples(r);
        if (task_id && n == 0 && !has_cur) {
                /* an empty page of a visible task, or no such task for this caller */
                bool visible = false;
                if (tb_store_runs_task_visible(c, task_id, groups, &visible, err, sizeof(err))) {
                        tb_api_db_error(resp, err);
                        goto out;
                }
                if (!visible) {
                        tb_api_not_found(resp, "task", task_id);
                        goto out;
                }
        }
        json_t *page = tb_api_page(resp, r, limit, "runs", tb_api_runs_json, TB_API_CURSOR_RUNS,
                                   TB_RC_NOMINAL, TB_RC_ID);
        if (page)
                tb_http_json(resp, 200, page);
out:
        PQclear(r);
        if (c)
                tb_store_release(api->store, c);
        free(groups);
        tb_buf_free(&statuses);
}

void tb_api_runs_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_runs_page(app, req, resp, req->params[0]);
}

void tb_api_runs_list_all(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_runs_page(app, req, resp, NULL);
}

/* ---- GET /v1/runs/{id}, POST /v1/runs/{id}/cancel ------------------------------- */

/**
 * The run of the request's path, if the caller may see it. @returns a pool
 * connection (the caller releases it) with *run its row (store/runs.h TB_RC_*;
 * the caller PQclear()s it), or NULL when answered: 404 (an invalid id, a
 * missing run, or one of another group), 503.
 */
static PGconn *tb_api_runs_open(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                PGresult **run) {
        const char *id = req->params[0];
        char err[512];
        *run = NULL;
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "run", id);
                return NULL;
        }
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return NULL;
        tb_err_t e = tb_api_runs_load(c, tb_api_principal(req), id, run, err, sizeof(err));
        if (e == TB_OK)
                return c;
        if (e == TB_ERR_NOT_FOUND)
                tb_api_not_found(resp, "run", id);
        else
                tb_api_db_error(resp, err);
        tb_store_release(api->store, c);
        return NULL;
}

void tb_api_runs_get(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        PGresult *r = NULL;
        PGconn *c = tb_api_runs_open(api, req, resp, &r);
        if (!c)
                return;
        json_t *j = tb_api_runs_json(r, 0);
        /* A run that has not started may wait in its group's queue (its
         * max_running, or executors without a free slot): say so, and where. */
        char err[512];
        int64_t pos = 0;
        if (!strcmp(PQgetvalue(r, 0, TB_RC_STATUS), "scheduled") &&
            tb_store_claims_queue_position(c, PQgetvalue(r, 0, TB_RC_ID), &pos, err,
                                           sizeof(err)))
                tb_warn("api", "run %s: queue position: %s", PQgetvalue(r, 0, TB_RC_ID), err);
        if (pos > 0) {
                json_object_set_new(j, "status", json_string("queued"));
                json_object_set_new(j, "queue_position", json_integer(pos));
        }
        /* the parent runs that started a dependency run (docs/scheduling.md) */
        PGresult *pr = NULL;
        json_t *parents = NULL;
        if (tb_store_runs_parents(c, PQgetvalue(r, 0, TB_RC_ID), &pr, err, sizeof(err)))
                tb_warn("api", "run %s: parents: %s", PQgetvalue(r, 0, TB_RC_ID), err);
        else if (PQntuples(pr))
                parents = json_loads(PQgetvalue(pr, 0, 0), 0, NULL);
        PQclear(pr);
        json_object_set_new(j, "parents", json_is_array(parents) ? parents : json_array());
        tb_store_release(api->store, c);
        tb_http_json(resp, 200, j);
        PQclear(r);
}

void tb_api_runs_cancel(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *id = req->params[0];
        const tb_principal_t *p = tb_api_principal(req);
        PGresult *r = NULL;
        char err[512], reason[300];
        PGconn *c = tb_api_runs_open(api, req, resp, &r);
        if (!c)
                return;
        if (PQgetvalue(r, 0, TB_RC_FINAL)[0] == 't') {
                tb_http_error(resp, 409, "conflict", NULL,
                              "run %s already finished with status %s: nothing to cancel", id,
                              PQgetvalue(r, 0, TB_RC_STATUS));
                goto out;
        }
        tb_snprintf(reason, sizeof(reason), "cancelled by %s through the API", p->user_id);
        tb_err_t e = tb_store_claims_request_cancel(c, id, reason, err, sizeof(err));
        if (e == TB_ERR_NOT_FOUND) {
                /* not projected as final yet, but its claim says finished; or
                 * no executor has claimed it yet */
                bool claimed = false;
                char status[64];
                if (tb_store_claims_status(c, id, &claimed, status, sizeof(status), err,
                                           sizeof(err))) {
                        tb_api_db_error(resp, err);
                } else if (claimed) {
                        tb_http_error(resp, 409, "conflict", NULL,
                                      "run %s already finished%s%s: nothing to cancel", id,
                                      *status ? " with status " : "", status);
                } else {
                        tb_http_error(resp, 409, "conflict", NULL,
                                      "run %s is %s and no executor has picked it up yet: it "
                                      "can be cancelled once it is running (or pause the "
                                      "task to stop future runs)",
                                      id, PQgetvalue(r, 0, TB_RC_STATUS));
                }
                goto out;
        }
        if (e) {
                tb_api_db_error(resp, err);
                goto out;
        }
        tb_info(TB_API_RUNS_SUB, "run %s: cancellation requested by %s", id, p->user_id);
        tb_http_json(resp, 202,
                     json_pack("{s:s, s:s, s:s, s:s}", "id", id, "task_id",
                               PQgetvalue(r, 0, TB_RC_TASK), "status", "cancelling", "message",
                               "the run's executor stops it within about a second; GET the run "
                               "for its final status"));
out:
        PQclear(r);
        tb_store_release(api->store, c);
}

/* ---- GET /v1/runs/{id}/log ----------------------------------------------------- */

/** What a log read needs to know about the run (besides visibility). */
typedef struct tb_api_runs_logstate {
        bool final;
        bool expired;
        bool started;
        int64_t age_ms;       /**< since the run's row last changed */
        char expires[32];     /**< RFC 3339, or "" */
} tb_api_runs_logstate_t;

/** Is the output complete: the eof chunk was copied, or the run is final
 *  and its output can no longer come (never started, or no eof in time). */
static bool tb_api_runs_log_ended(const tb_api_runs_logstate_t *st, bool eof) {
        return eof || (st->final && (!st->started || st->age_ms > TB_API_RUNS_NO_EOF_GRACE_MS));
}

/** Read the state of run \p id (no visibility check: done by the caller).
 *  @returns TB_OK, TB_ERR_NOT_FOUND, or a database error. */
static tb_err_t tb_api_runs_logstate(PGconn *c, const char *id, tb_api_runs_logstate_t *st,
                                     bool *eof, char *err, size_t errsz) {
        tb_store_runs_logstate_t ls;
        tb_err_t e = tb_store_runs_logstate(c, id, &ls, err, errsz);
        if (e)
                return e;
        st->final = ls.final;
        st->expired = ls.expired;
        st->started = ls.started;
        st->age_ms = ls.age_ms;
        st->expires[0] = '\0';
        if (ls.has_expires)
                tb_time_format(ls.expires_ms, st->expires);
        *eof = ls.eof;
        return TB_OK;
}

static void tb_api_runs_gone(tb_http_resp_t *resp, const char *id,
                             const tb_api_runs_logstate_t *st) {
        json_t *e = json_pack("{s:s, s:s}", "code", "gone", "message", "");
        char msg[400];
        tb_snprintf(msg, sizeof(msg),
                    "the output of run %s expired at %s (the task's log_retention) and was "
                    "deleted; the run itself is still at GET /v1/runs/%s",
                    id, st->expires[0] ? st->expires : "(unknown)", id);
        json_object_set_new(e, "message", json_string(msg));
        json_object_set_new(e, "expired_at",
                            st->expires[0] ? json_string(st->expires) : json_null());
        tb_http_json(resp, 410, json_pack("{s:o}", "error", e));
}

/** Append the part of chunk row \p i (bytea column \p col) of \p r from its
 *  byte \p skip on, at most \p max bytes (< 0: all). @returns the chunk's
 *  whole length. */
static size_t tb_api_runs_append_chunk(PGresult *r, int i, int col, int64_t skip, int64_t max,
                                       tb_buf_t *out) {
        size_t n = 0;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, col), &n);
        if (!raw)
                return 0;
        if (skip < 0)
                skip = 0;
        if ((size_t)skip < n) {
                size_t take = n - (size_t)skip;
                if (max >= 0 && (int64_t)take > max)
                        take = (size_t)max;
                tb_buf_append(out, raw + skip, take);
        }
        PQfreemem(raw);
        return n;
}

/* ---- a page, streamed --------------------------------------------------------- */

/** A page of output being sent: read from PostgreSQL a slice at a time, so
 *  a page of api's largest limit never sits whole in memory. Owned by
 *  libmicrohttpd's response once created. */
typedef struct tb_api_runs_page {
        tb_api_t *api;
        char run_id[200];
        char stream[16];      /**< "" = every stream */
        int64_t next;         /**< the next byte of the text to send */
        int64_t end;          /**< the page ends before this byte */
        tb_buf_t pending;
        size_t pending_off;
} tb_api_runs_page_t;

static void tb_api_runs_page_free(void *cls) {
        tb_api_runs_page_t *pg = cls;
        tb_buf_free(&pg->pending);
        free(pg);
}

/** Copy at most \p max bytes of \p pending (from *\p off) into \p buf. */
static ssize_t tb_api_runs_drain(tb_buf_t *pending, size_t *off, char *buf, size_t max) {
        size_t n = pending->len - *off;
        if (n > max)
                n = max;
        memcpy(buf, pending->data + *off, n);
        *off += n;
        return (ssize_t)n;
}

static ssize_t tb_api_runs_page_read(void *cls, uint64_t pos, char *buf, size_t max) {
        tb_api_runs_page_t *pg = cls;
        (void)pos;
        if (pg->pending_off >= pg->pending.len) {
                pg->pending.len = 0;
                pg->pending_off = 0;
                if (pg->next >= pg->end)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                char err[512], from[32], to[32];
                int64_t upto = pg->end - pg->next > TB_API_RUNS_LOG_SLICE
                                       ? pg->next + TB_API_RUNS_LOG_SLICE
                                       : pg->end;
                tb_snprintf(from, sizeof(from), "%" PRId64, pg->next);
                tb_snprintf(to, sizeof(to), "%" PRId64, upto);
                PGconn *c = tb_store_acquire_timeout(pg->api->store, 5000);
                PGresult *r = NULL;
                if (!c || tb_store_runs_logs_range(c, pg->run_id,
                                                   pg->stream[0] ? pg->stream : NULL, from, to,
                                                   &r, err, sizeof(err))) {
                        tb_warn(TB_API_RUNS_SUB, "log page of run %s: %s", pg->run_id,
                                c ? err : "no PostgreSQL connection free within 5 s");
                        if (c)
                                tb_store_release(pg->api->store, c);
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                tb_store_release(pg->api->store, c);
                for (int i = 0; i < PQntuples(r); i++) {
                        int64_t start = strtoll(PQgetvalue(r, i, 1), NULL, 10);
                        tb_api_runs_append_chunk(r, i, 2, pg->next + (int64_t)pg->pending.len -
                                                                  start,
                                                 upto - pg->next - (int64_t)pg->pending.len,
                                                 &pg->pending);
                }
                PQclear(r);
                if (pg->pending.len == 0) /* the text changed under the page: end it */
                        return MHD_CONTENT_READER_END_OF_STREAM;
                pg->next += (int64_t)pg->pending.len;
        }
        return tb_api_runs_drain(&pg->pending, &pg->pending_off, buf, max);
}

/* ---- a live tail --------------------------------------------------------------- */

/** A live tail: owned by libmicrohttpd's response once created. */
typedef struct tb_api_runs_tail {
        tb_api_t *api;
        tb_api_follow_t *follow; /**< registered: counts against the user's cap */
        char run_id[200];
        char stream[16];      /**< "" = every stream */
        char group[TB_IDENTITY_NAME_MAX + 1]; /**< the run's: membership is re-checked */
        char authz[512];      /**< the caller's credential (tb_api_credential()),
                                   re-checked (memory only) */
        int64_t next_seq;     /**< the next chunk to read */
        int64_t skip;         /**< bytes still to skip (the ?offset) */
        int64_t sent;         /**< the offset of the next byte the client gets */
        char last;            /**< the last byte sent (0: none yet) */
        tb_buf_t pending;
        size_t pending_off;
        int fd;               /**< the client's socket, to notice it left */
        int64_t deadline_us;  /**< api.max_follow_duration from the start */
        int64_t check_us;     /**< next authorization re-check */
        int64_t fetch_us;     /**< next read without news */
        bool fetch_now;       /**< read before waiting */
        int64_t gap_seq;      /**< a gap no marker covers yet, first seen at gap_us */
        int64_t gap_us;
        bool done;            /**< the last bytes are queued: end after them */
} tb_api_runs_tail_t;

static void tb_api_runs_tail_free(void *cls) {
        tb_api_runs_tail_t *t = cls;
        tb_api_follow_leave(t->api, t->follow);
        tb_buf_free(&t->pending);
        free(t);
}

static bool tb_api_runs_client_gone(int fd) {
        if (fd < 0)
                return false;
        struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
        return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/** Queue the stream's last line, \p why, on a line of its own. */
static void tb_api_runs_tail_end(tb_api_runs_tail_t *t, const char *why) {
        tb_buf_printf(&t->pending, "%s[taskbus: %s; resume with GET /v1/runs/%s/log?follow=true"
                      "&offset=%" PRId64 "%s%s]\n", t->last && t->last != '\n' ? "\n" : "",
                      why, t->run_id, t->sent, t->stream[0] ? "&stream=" : "", t->stream);
        t->done = true;
}

/** Read new chunks into t->pending. @returns 1 data, 2 chunks read but all
 *  skipped (or more to read at once), 0 nothing new yet (or a transient
 *  error), -1 the output is complete (or expired, or the run was deleted). */
static int tb_api_runs_tail_fetch(tb_api_runs_tail_t *t) {
        char err[512], seq[32];
        t->fetch_us = tb_mono_us() + (int64_t)TB_API_RUNS_TAIL_RECHECK_MS * 1000;
        PGconn *c = tb_store_acquire_timeout(t->api->store, 1000);
        if (!c)
                return 0;
        tb_api_runs_logstate_t st;
        bool eof = false;
        int rc = 0;
        PGresult *r = NULL;
        /* state first: chunks are copied in order, so once the eof chunk is
         * seen, the read below sees every chunk before it (but a gap marker,
         * produced once Kafka is back, may come after it: see gaps below) */
        tb_err_t e = tb_api_runs_logstate(c, t->run_id, &st, &eof, err, sizeof(err));
        if (e == TB_ERR_NOT_FOUND) {
                rc = -1; /* deleted meanwhile (history retention) */
                goto out;
        }
        if (e)
                goto fail;
        if (st.expired) {
                rc = -1;
                goto out;
        }
        if (!st.final)
                t->fetch_us = tb_mono_us() + (int64_t)TB_API_RUNS_TAIL_FALLBACK_MS * 1000;
        tb_snprintf(seq, sizeof(seq), "%" PRId64, t->next_seq);
        if (tb_store_runs_logs_from(c, t->run_id, seq, t->stream[0] ? t->stream : NULL,
                                    TB_API_RUNS_TAIL_ROWS, &r, err, sizeof(err)))
                goto fail;
        int n = PQntuples(r), used = 0;
        bool held = false;
        for (int i = 0; i < n; i++, used++) {
                int64_t s = strtoll(PQgetvalue(r, i, 0), NULL, 10);
                if (PQgetvalue(r, i, 2)[0] == 't') {
                        /* A gap: the executor's marker for it may still come (it
                         * is produced once Kafka takes chunks again); show the
                         * reader's own after TB_API_RUNS_GAP_WAIT_MS. */
                        int64_t now = tb_mono_us();
                        if (t->gap_seq != s) {
                                t->gap_seq = s;
                                t->gap_us = now;
                        }
                        if (now - t->gap_us < (int64_t)TB_API_RUNS_GAP_WAIT_MS * 1000) {
                                held = true;
                                t->fetch_us = t->gap_us + (int64_t)TB_API_RUNS_GAP_WAIT_MS * 1000;
                                break;
                        }
                }
                int64_t len = (int64_t)tb_api_runs_append_chunk(r, i, 1, t->skip, -1, &t->pending);
                t->skip = t->skip > len ? t->skip - len : 0;
                t->next_seq = s + strtoll(PQgetvalue(r, i, 3), NULL, 10);
        }
        t->fetch_now = !held && n == atoi(TB_API_RUNS_TAIL_ROWS); /* more right away */
        if (!held && !t->fetch_now && tb_api_runs_log_ended(&st, eof))
                t->done = true; /* this is the rest: end once it is sent */
        if (t->pending.len > t->pending_off)
                rc = 1;
        else if (used > 0)
                rc = 2; /* all of it skipped (?offset): read on at once */
        else if (!held && tb_api_runs_log_ended(&st, eof))
                rc = -1;
        else
                rc = 0;
        goto out;
fail:
        tb_warn(TB_API_RUNS_SUB, "live log of run %s: %s", t->run_id, err);
        rc = 0; /* transient: try again at the next poll */
out:
        PQclear(r);
        tb_store_release(t->api->store, c);
        return rc;
}

static ssize_t tb_api_runs_tail_read(void *cls, uint64_t pos, char *buf, size_t max) {
        tb_api_runs_tail_t *t = cls;
        (void)pos;
        while (t->pending_off >= t->pending.len) {
                t->pending.len = 0;
                t->pending_off = 0;
                if (t->done)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (atomic_load(&t->api->ctx->stopping) || tb_api_runs_client_gone(t->fd))
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                int64_t now = tb_mono_us();
                if (now >= t->check_us) {
                        /* up to 20% later at random: followers that started together
                         * do not all miss the authentication cache at once */
                        t->check_us = now + (int64_t)TB_API_RUNS_AUTH_CHECK_MS * 1000 +
                                      (int64_t)(random() % (TB_API_RUNS_AUTH_CHECK_MS * 200));
                        if (tb_api_follow_authorized(t->api, t->authz, t->group) == 0) {
                                tb_info(TB_API_RUNS_SUB, "live log of run %s ended: its "
                                        "token is no longer valid for the run's group",
                                        t->run_id);
                                tb_api_runs_tail_end(t, "follow ended: the token is no longer "
                                                     "valid for this run");
                                continue;
                        }
                }
                if (now >= t->deadline_us) {
                        char why[128];
                        tb_snprintf(why, sizeof(why), "follow ended after %" PRId64
                                    " s (api.max_follow_duration)",
                                    t->api->ctx->conf->api_max_follow_duration_ms / 1000);
                        tb_api_runs_tail_end(t, why);
                        continue;
                }
                bool news = tb_api_follow_wait(t->api, t->follow, 0);
                if (news || t->fetch_now || now >= t->fetch_us) {
                        int rc = tb_api_runs_tail_fetch(t);
                        if (rc == 1)
                                break;
                        if (rc == -1)
                                return MHD_CONTENT_READER_END_OF_STREAM;
                        if (rc == 2)
                                continue;
                }
                /* wake for news, the next check, or the deadline, whichever first */
                int64_t until = t->check_us < t->deadline_us ? t->check_us : t->deadline_us;
                if (t->fetch_us < until)
                        until = t->fetch_us;
                int64_t ms = (until - tb_mono_us()) / 1000 + 1;
                if (!t->fetch_now)
                        t->fetch_now = tb_api_follow_wait(t->api, t->follow, ms);
        }
        ssize_t n = tb_api_runs_drain(&t->pending, &t->pending_off, buf, max);
        if (n > 0) {
                t->sent += n;
                t->last = buf[n - 1];
        }
        return n;
}

/* ---- GET /v1/runs/{id}/log ----------------------------------------------------- */

/** Set up the live tail of run \p id from byte \p offset into \p resp.
 *  @returns false when answered otherwise (429, 500, 503). */
static bool tb_api_runs_follow(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                               PGconn *c, PGresult *run, const char *stream, int64_t offset) {
        const char *id = req->params[0];
        const tb_principal_t *p = tb_api_principal(req);
        char err[512], off[32], end[32];
        PGresult *pg = NULL;
        size_t held = 0;
        tb_api_follow_t *f = tb_api_follow_join(api, p->user_id, id, &held);
        if (!f) {
                if (!held) {
                        tb_http_error(resp, 500, "internal", NULL, "out of memory");
                        return false;
                }
                tb_http_error(resp, 429, "throttled", "follow",
                              "user '%s' already follows %zu run logs at once, the most "
                              "api.max_follows_per_user allows: end one, or read pages (without "
                              "follow) using X-Log-Next-Offset", p->user_id, held);
                tb_http_add_header(resp, "Retry-After", "5");
                return false;
        }
        tb_api_runs_tail_t *t = calloc(1, sizeof(*t));
        if (!t) {
                tb_api_follow_leave(api, f);
                tb_http_error(resp, 500, "internal", NULL, "out of memory");
                return false;
        }
        t->api = api;
        t->follow = f;
        int64_t now = tb_mono_us();
        t->deadline_us = now + api->ctx->conf->api_max_follow_duration_ms * 1000;
        t->check_us = now + (int64_t)TB_API_RUNS_AUTH_CHECK_MS * 1000;
        t->fetch_now = true;
        t->gap_seq = -1;
        t->sent = offset;
        tb_snprintf(t->run_id, sizeof(t->run_id), "%s", id);
        tb_snprintf(t->stream, sizeof(t->stream), "%s", stream ? stream : "");
        tb_snprintf(t->group, sizeof(t->group), "%s", PQgetvalue(run, 0, TB_RC_GROUP));
        tb_api_credential(req, t->authz, sizeof(t->authz));
        tb_snprintf(off, sizeof(off), "%" PRId64, offset);
        tb_snprintf(end, sizeof(end), "%" PRId64, offset + 1);
        /* Two statements: a chunk holding byte ?offset may be copied between
         * them (the size then counts it): look for it again, or the tail
         * would start after it and never send it. */
        for (int tries = 0;; tries++) {
                if (tb_store_runs_logs_range(c, id, stream, off, end, &pg, err, sizeof(err)))
                        goto db_fail;
                if (PQntuples(pg) > 0) {
                        /* start inside the chunk that holds byte ?offset */
                        t->next_seq = strtoll(PQgetvalue(pg, 0, 0), NULL, 10);
                        t->skip = offset - strtoll(PQgetvalue(pg, 0, 1), NULL, 10);
                        break;
                }
                /* past the output so far: skip what is still missing */
                int64_t bytes = 0;
                if (tb_store_runs_logs_size(c, id, stream, &t->next_seq, &bytes, err,
                                            sizeof(err)))
                        goto db_fail;
                t->skip = offset - bytes;
                if (bytes <= offset || tries == 3)
                        break;
                PQclear(pg);
                pg = NULL;
        }
        PQclear(pg);
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        t->fd = ci ? ci->connect_fd : -1;
        struct MHD_Response *mr = MHD_create_response_from_callback(
                MHD_SIZE_UNKNOWN, 64 * 1024, tb_api_runs_tail_read, t, tb_api_runs_tail_free);
        if (!mr) {
                tb_api_runs_tail_free(t);
                tb_http_error(resp, 500, "internal", NULL, "cannot create the stream");
                return false;
        }
        resp->stream = mr;
        resp->status = 200;
        resp->content_type = "text/plain; charset=utf-8";
        tb_http_add_header(resp, "Cache-Control", "no-cache");
        tb_http_add_header(resp, "X-Content-Type-Options", "nosniff");
        return true;
db_fail:
        PQclear(pg);
        tb_api_runs_tail_free(t);
        tb_api_db_error(resp, err);
        return false;
}

void tb_api_runs_log(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"offset", "limit", "stream", "follow", NULL};
        tb_api_t *api = app;
        const char *id = req->params[0];
        PGresult *r = NULL;
        PGconn *c = NULL;
        char err[512];
        int64_t offset = 0, limit = TB_API_RUNS_LOG_DEFAULT;
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "run", id);
                return;
        }
        if (!tb_api_query_check(req, resp, known, "offset, limit, stream, follow", NULL, NULL) ||
            !tb_api_query_int(req, resp, "offset", 0, INT64_MAX / 2, &offset) ||
            !tb_api_query_int(req, resp, "limit", 1, INT64_MAX / 2, &limit))
                return;
        if (limit > TB_API_RUNS_LOG_MAX) {
                tb_http_error(resp, 400, "invalid_argument", "limit",
                              "limit: at most %d bytes (4 MiB) per page, got %" PRId64 "; read "
                              "the rest page by page from X-Log-Next-Offset, or follow=true",
                              TB_API_RUNS_LOG_MAX, limit);
                return;
        }
        const char *stream = tb_http_query(req, "stream");
        if (stream && strcmp(stream, "stdout") && strcmp(stream, "stderr") &&
            strcmp(stream, "system")) {
                tb_http_error(resp, 400, "invalid_argument", "stream",
                              "stream: expected stdout, stderr or system, got '%.32s'", stream);
                return;
        }
        const char *fs = tb_http_query(req, "follow");
        if (fs && strcmp(fs, "true") && strcmp(fs, "false") && strcmp(fs, "1") &&
            strcmp(fs, "0")) {
                tb_http_error(resp, 400, "invalid_argument", "follow",
                              "follow: expected true or false, got '%.32s'", fs);
                return;
        }
        bool follow = fs && (!strcmp(fs, "true") || !strcmp(fs, "1"));
        if (!(c = tb_api_runs_open(api, req, resp, &r)))
                return;
        tb_err_t e;
        tb_api_runs_logstate_t st;
        bool eof = false;
        if ((e = tb_api_runs_logstate(c, id, &st, &eof, err, sizeof(err)))) {
                if (e == TB_ERR_NOT_FOUND)
                        tb_api_not_found(resp, "run", id);
                else
                        tb_api_db_error(resp, err);
                goto out;
        }
        if (st.expired) {
                tb_api_runs_gone(resp, id, &st);
                goto out;
        }
        if (follow) {
                tb_api_runs_follow(api, req, resp, c, r, stream, offset);
                goto out;
        }
        /* one page: its extent now, its bytes streamed a slice at a time */
        int64_t next_seq = 0, bytes = 0;
        if (tb_store_runs_logs_size(c, id, stream, &next_seq, &bytes, err, sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        int64_t next = offset < bytes ? (bytes - offset > limit ? offset + limit : bytes) : offset;
        bool complete = tb_api_runs_log_ended(&st, eof) && next >= bytes;
        resp->status = 200;
        resp->content_type = "text/plain; charset=utf-8";
        resp->body.len = 0;
        if (next > offset) {
                tb_api_runs_page_t *pg = calloc(1, sizeof(*pg));
                struct MHD_Response *mr =
                        pg ? MHD_create_response_from_callback(
                                     MHD_SIZE_UNKNOWN, 64 * 1024, tb_api_runs_page_read, pg,
                                     tb_api_runs_page_free)
                           : NULL;
                if (!mr) {
                        free(pg);
                        tb_http_error(resp, 500, "internal", NULL, "cannot create the page");
                        goto out;
                }
                pg->api = api;
                pg->next = offset;
                pg->end = next;
                tb_snprintf(pg->run_id, sizeof(pg->run_id), "%s", id);
                tb_snprintf(pg->stream, sizeof(pg->stream), "%s", stream ? stream : "");
                resp->stream = mr;
        }
        char nbuf[32];
        tb_snprintf(nbuf, sizeof(nbuf), "%" PRId64, next);
        tb_http_add_header(resp, "X-Log-Next-Offset", nbuf);
        tb_http_add_header(resp, "X-Log-Complete", complete ? "true" : "false");
        tb_http_add_header(resp, "X-Content-Type-Options", "nosniff");
out:
        PQclear(r);
        if (c)
                tb_store_release(api->store, c);
}

/* GET /v1/runs/{id}/notifications: what the notifier decided for the run and
 * every delivery attempt (docs/notifications.md). */
void tb_api_runs_notifications(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        PGresult *r = NULL, *n = NULL;
        char err[512];
        PGconn *c = tb_api_runs_open(api, req, resp, &r);
        if (!c)
                return;
        tb_err_t e = tb_store_notify_list(c, PQgetvalue(r, 0, TB_RC_ID), 0, NULL, &n, err,
                                          sizeof(err));
        tb_store_release(api->store, c);
        PQclear(r);
        if (e) {
                tb_api_db_error(resp, err);
                return;
        }
        json_error_t je;
        json_t *items = json_loads(PQgetvalue(n, 0, 0), 0, &je);
        PQclear(n);
        tb_http_json(resp, 200, json_pack("{s:o}", "notifications", items ? items : json_array()));
}
