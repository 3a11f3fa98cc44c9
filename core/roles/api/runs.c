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
#include "api/util.h"
#include "store/claims.h"
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
/** Default and largest ?limit of one page of output. */
#define TB_API_RUNS_LOG_DEFAULT (4 * 1024 * 1024)
#define TB_API_RUNS_LOG_MAX (64 * 1024 * 1024)
/** Live tail: how often run_logs is polled for new output. */
#define TB_API_RUNS_TAIL_POLL_US 150000
/** Chunks read per poll of a live tail. */
#define TB_API_RUNS_TAIL_ROWS "64"
/** A final run whose output never ended with an eof chunk (LOST: its
 *  executor died) is complete this long after its final status. */
#define TB_API_RUNS_NO_EOF_GRACE_MS 10000

/* ---- helpers ----------------------------------------------------------------- */

/** The caller's groups as a JSON array text, for
 *  `security_group IN (SELECT jsonb_array_elements_text($n::jsonb))`. */
static char *tb_api_runs_groups(const tb_principal_t *p) {
        json_t *a = json_array();
        for (size_t i = 0; i < p->group_cnt; i++)
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
        return j;
}

/** Load run \p id if visible to \p p. @returns TB_OK (*out owned by the
 *  caller), TB_ERR_NOT_FOUND or a database error. */
static tb_err_t tb_api_runs_load(PGconn *c, const tb_principal_t *p, const char *id, PGresult **out,
                                 char *err, size_t errsz) {
        char *groups = tb_api_runs_groups(p);
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

static const char *const tb_api_runs_statuses[] = {
        "scheduled", "running",         "succeeded",       "failed",         "timed_out",
        "cancelled", "lost",            "skipped_overlap", "skipped_misfire", "skipped_paused",
        "expired",   NULL,
};
#define TB_API_RUNS_STATUS_TEXT                                                                \
        "scheduled, running, succeeded, failed, timed_out, cancelled, lost, skipped_overlap, " \
        "skipped_misfire, skipped_paused, expired"

/** ?status=a,b as a text[] literal into \p out. @returns false with a 400. */
static bool tb_api_runs_status_arg(tb_http_req_t *req, tb_http_resp_t *resp, tb_buf_t *out) {
        const char *s = tb_http_query(req, "status");
        if (!s)
                return true;
        tb_buf_append(out, "{", 1);
        int n = 0;
        while (*s) {
                const char *e = strchr(s, ',');
                size_t len = e ? (size_t)(e - s) : strlen(s);
                char one[32];
                bool ok = len > 0 && len < sizeof(one);
                if (ok) {
                        for (size_t i = 0; i < len; i++)
                                one[i] = (char)tolower((unsigned char)s[i]);
                        one[len] = '\0';
                        ok = false;
                        for (size_t i = 0; tb_api_runs_statuses[i]; i++)
                                ok = ok || !strcmp(one, tb_api_runs_statuses[i]);
                }
                if (!ok) {
                        tb_http_error(resp, 400, "invalid_argument", "status",
                                      "status: '%.*s' is not a run status; valid: "
                                      TB_API_RUNS_STATUS_TEXT " (comma-separated)",
                                      (int)(len > 40 ? 40 : len), s);
                        return false;
                }
                tb_buf_printf(out, "%s%s", n++ ? "," : "", one);
                s += len;
                if (*s == ',')
                        s++;
        }
        tb_buf_append(out, "}", 2);
        return true;
}

void tb_api_runs_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"status", "since", "until", "limit", "cursor", NULL};
        tb_api_t *api = app;
        const char *id = req->params[0];
        tb_buf_t statuses = {0};
        char *groups = NULL;
        PGconn *c = NULL;
        PGresult *r = NULL;
        char since[32], until[32], lim[24], err[512];
        int64_t limit = TB_API_RUNS_LIST_DEFAULT;
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "task", id);
                return;
        }
        if (!tb_api_query_check(req, resp, known, "status, since, until, limit, cursor", NULL,
                                NULL) ||
            !tb_api_runs_status_arg(req, resp, &statuses) ||
            !tb_api_query_time(req, resp, "since", since) ||
            !tb_api_query_time(req, resp, "until", until) ||
            !tb_api_query_int(req, resp, "limit", 1, TB_API_RUNS_LIST_MAX, &limit))
                goto out;
        tb_api_cursor_t cur;
        bool has_cur;
        if (!tb_api_query_cursor(req, resp, TB_API_CURSOR_RUNS, &cur, &has_cur))
                goto out;
        if (!(c = tb_api_conn(api, resp)))
                goto out;
        groups = tb_api_runs_groups(tb_api_principal(req));
        tb_snprintf(lim, sizeof(lim), "%" PRId64, limit + 1);
        if (tb_store_runs_list(c, id, groups, has_cur ? cur.key : NULL, has_cur ? cur.id : NULL,
                               statuses.len ? statuses.data : NULL, since[0] ? since : NULL,
                               until[0] ? until : NULL, lim, &r, err, sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        int n = PQntuples(r);
        if (n == 0 && !has_cur) {
                /* an empty page of a visible task, or no such task for this caller */
                bool visible = false;
                if (tb_store_runs_task_visible(c, id, groups, &visible, err, sizeof(err))) {
                        tb_api_db_error(resp, err);
                        goto out;
                }
                if (!visible) {
                        tb_api_not_found(resp, "task", id);
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

/** A live tail: owned by libmicrohttpd's response once created. */
typedef struct tb_api_runs_tail {
        tb_api_t *api;
        char run_id[200];
        char stream[16];      /**< "" = every stream */
        int64_t next_seq;     /**< the next chunk to read */
        int64_t skip;         /**< bytes still to skip (the ?offset) */
        tb_buf_t pending;
        size_t pending_off;
        int fd;               /**< the client's socket, to notice it left */
        int64_t started_us;
} tb_api_runs_tail_t;

static void tb_api_runs_tail_free(void *cls) {
        tb_api_runs_tail_t *t = cls;
        tb_buf_free(&t->pending);
        free(t);
}

static bool tb_api_runs_client_gone(int fd) {
        if (fd < 0)
                return false;
        struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
        return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/** Read new chunks into t->pending. @returns 1 data, 2 chunks read but all
 *  skipped, 0 nothing new yet (or a transient error), -1 the output is
 *  complete (or expired, or the run was deleted). */
static int tb_api_runs_tail_fetch(tb_api_runs_tail_t *t) {
        char err[512], seq[32];
        PGconn *c = tb_store_acquire_timeout(t->api->store, 1000);
        if (!c)
                return 0;
        tb_api_runs_logstate_t st;
        bool eof = false;
        int rc = 0;
        PGresult *r = NULL;
        /* state first: chunks are copied in order, so once the eof chunk is
         * seen, the read below sees every chunk before it */
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
        tb_snprintf(seq, sizeof(seq), "%" PRId64, t->next_seq);
        if (tb_store_runs_logs_from(c, t->run_id, seq, t->stream[0] ? t->stream : NULL,
                                    TB_API_RUNS_TAIL_ROWS, &r, err, sizeof(err)))
                goto fail;
        int n = PQntuples(r);
        for (int i = 0; i < n; i++) {
                int64_t len = (int64_t)tb_api_runs_append_chunk(r, i, 1, t->skip, -1, &t->pending);
                t->skip = t->skip > len ? t->skip - len : 0;
                t->next_seq = strtoll(PQgetvalue(r, i, 0), NULL, 10) + 1;
        }
        if (t->pending.len > t->pending_off)
                rc = 1;
        else if (n > 0)
                rc = 2; /* all of it skipped (?offset): read on at once */
        else if (tb_api_runs_log_ended(&st, eof))
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
        while (t->pending_off >= t->pending.len) {
                t->pending.len = 0;
                t->pending_off = 0;
                if (atomic_load(&t->api->ctx->stopping) || tb_api_runs_client_gone(t->fd))
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                int rc = tb_api_runs_tail_fetch(t);
                if (rc == 1)
                        break;
                if (rc == -1)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (rc == 2)
                        continue;
                usleep(TB_API_RUNS_TAIL_POLL_US);
        }
        size_t n = t->pending.len - t->pending_off;
        if (n > max)
                n = max;
        memcpy(buf, t->pending.data + t->pending_off, n);
        t->pending_off += n;
        return (ssize_t)n;
}

void tb_api_runs_log(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"offset", "limit", "stream", "follow", NULL};
        tb_api_t *api = app;
        const char *id = req->params[0];
        PGresult *r = NULL, *pg = NULL;
        PGconn *c = NULL;
        char err[512];
        int64_t offset = 0, limit = TB_API_RUNS_LOG_DEFAULT;
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "run", id);
                return;
        }
        if (!tb_api_query_check(req, resp, known, "offset, limit, stream, follow", NULL, NULL) ||
            !tb_api_query_int(req, resp, "offset", 0, INT64_MAX / 2, &offset) ||
            !tb_api_query_int(req, resp, "limit", 1, TB_API_RUNS_LOG_MAX, &limit))
                return;
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
        char off[32], end[32];
        tb_snprintf(off, sizeof(off), "%" PRId64, offset);
        tb_snprintf(end, sizeof(end), "%" PRId64, follow ? offset + 1 : offset + limit);
        if (tb_store_runs_logs_range(c, id, stream, off, end, &pg, err, sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        if (follow) {
                tb_api_runs_tail_t *t = calloc(1, sizeof(*t));
                if (!t) {
                        tb_http_error(resp, 500, "internal", NULL, "out of memory");
                        goto out;
                }
                t->api = api;
                t->started_us = tb_mono_us();
                tb_snprintf(t->run_id, sizeof(t->run_id), "%s", id);
                tb_snprintf(t->stream, sizeof(t->stream), "%s", stream ? stream : "");
                if (PQntuples(pg) > 0) {
                        /* start inside the chunk that holds byte ?offset */
                        t->next_seq = strtoll(PQgetvalue(pg, 0, 0), NULL, 10);
                        t->skip = offset - strtoll(PQgetvalue(pg, 0, 1), NULL, 10);
                } else {
                        /* past the output so far: skip what is still missing */
                        int64_t bytes = 0;
                        if (tb_store_runs_logs_size(c, id, stream, &t->next_seq, &bytes, err,
                                                    sizeof(err))) {
                                free(t);
                                tb_api_db_error(resp, err);
                                goto out;
                        }
                        t->skip = offset - bytes;
                }
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
                t->fd = ci ? ci->connect_fd : -1;
                struct MHD_Response *mr = MHD_create_response_from_callback(
                        MHD_SIZE_UNKNOWN, 64 * 1024, tb_api_runs_tail_read, t,
                        tb_api_runs_tail_free);
                if (!mr) {
                        tb_api_runs_tail_free(t);
                        tb_http_error(resp, 500, "internal", NULL, "cannot create the stream");
                        goto out;
                }
                resp->stream = mr;
                resp->status = 200;
                resp->content_type = "text/plain; charset=utf-8";
                tb_http_add_header(resp, "Cache-Control", "no-cache");
                tb_http_add_header(resp, "X-Content-Type-Options", "nosniff");
                goto out;
        }
        /* one page */
        resp->status = 200;
        resp->content_type = "text/plain; charset=utf-8";
        resp->body.len = 0;
        int64_t left = limit;
        for (int i = 0; i < PQntuples(pg) && left > 0; i++) {
                int64_t start = strtoll(PQgetvalue(pg, i, 1), NULL, 10);
                size_t before = resp->body.len;
                tb_api_runs_append_chunk(pg, i, 2, offset - start, left, &resp->body);
                left -= (int64_t)(resp->body.len - before);
        }
        int64_t next = offset + (int64_t)resp->body.len;
        int64_t next_seq = 0, bytes = 0;
        bool complete = false;
        if (tb_store_runs_logs_size(c, id, stream, &next_seq, &bytes, err, sizeof(err)) ==
            TB_OK)
                complete = tb_api_runs_log_ended(&st, eof) && next >= bytes;
        char nbuf[32];
        tb_snprintf(nbuf, sizeof(nbuf), "%" PRId64, next);
        tb_http_add_header(resp, "X-Log-Next-Offset", nbuf);
        tb_http_add_header(resp, "X-Log-Complete", complete ? "true" : "false");
        tb_http_add_header(resp, "X-Content-Type-Options", "nosniff");
out:
        PQclear(r);
        PQclear(pg);
        if (c)
                tb_store_release(api->store, c);
}
