/**
 * @file api/dashboard.c
 * @brief The aggregates behind the web console's dashboard
 *        (schemas/openapi.yaml, docs/api.md "Runs across tasks"): runs per
 *        status over a range (GET /v1/runs/counts), the fire lag per minute
 *        (GET /v1/runs/fire-lag) and the next fires of every task
 *        (GET /v1/runs/upcoming). Each is one statement over the caller's
 *        groups, or over the one ?security_group names, however many tasks
 *        they hold: the dashboard makes no request per task.
 */
#include "api/api.h"
#include "api/util.h"
#include "store/runs.h"
#include "store/tasks.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/** Longest range of GET /v1/runs/fire-lag (one bucket per minute). */
#define TB_API_DASH_LAG_MAX_MS (24 * 3600 * 1000LL)
#define TB_API_DASH_LAG_DEFAULT_MS (3600 * 1000LL)
/** GET /v1/runs/upcoming: default and longest look-ahead, fires per page. */
#define TB_API_DASH_AHEAD_DEFAULT_MS (24 * 3600 * 1000LL)
#define TB_API_DASH_AHEAD_MAX_MS (7 * 24 * 3600 * 1000LL)
#define TB_API_DASH_FIRES_DEFAULT 100
#define TB_API_DASH_FIRES_MAX 1000

/* ---- helpers ------------------------------------------------------------------ */

/**
 * The range [since, until) of the request (epoch ms) and the groups it reads
 * (a JSON array text into *\p groups, the caller frees it). An absent bound
 * is \p def_until (now when 0) and until - \p def_span; neither absent when
 * \p def_span is 0. The range must be ascending and at most \p max_span
 * (0: any). @returns false when answered (400, 403).
 */
static bool tb_api_dash_range(tb_http_req_t *req, tb_http_resp_t *resp, int64_t def_span,
                              int64_t max_span, int64_t *since, int64_t *until, char **groups) {
        char s[32], u[32];
        const char *group = NULL;
        if (!tb_api_query_time(req, resp, "since", s) ||
            !tb_api_query_time(req, resp, "until", u) ||
            !tb_api_group_scope(req, resp, &group))
                return false;
        if (!def_span && (!s[0] || !u[0])) {
                const char *missing = s[0] ? "until" : "since";
                tb_http_error(resp, 400, "invalid_argument", missing,
                              "%s: required, an RFC 3339 time like 2026-01-02T03:04:05Z (the "
                              "range is [since, until) of nominal times)",
                              missing);
                return false;
        }
        *until = u[0] ? strtoll(u, NULL, 10) : tb_now_ms();
        *since = s[0] ? strtoll(s, NULL, 10) : *until - def_span;
        if (*until <= *since) {
                tb_http_error(resp, 400, "invalid_argument", "until",
                              "until: must be after since (the range is [since, until))");
                return false;
        }
        if (max_span && *until - *since > max_span) {
                tb_http_error(resp, 400, "invalid_argument", "since",
                              "since: the range may span at most %" PRId64 " h; move since "
                              "closer to until",
                              max_span / 3600000);
                return false;
        }
        *groups = tb_api_runs_groups(tb_api_principal(req), group);
        return true;
}

static json_t *tb_api_dash_time(int64_t ms) {
        char buf[32];
        tb_time_format(ms, buf);
        return json_string(buf);
}

static json_t *tb_api_dash_int(PGresult *r, int i, int col) {
        return json_integer(strtoll(PQgetvalue(r, i, col), NULL, 10));
}

/** A range read of runs (counts, fire lag): its bounds, groups and connection. */
typedef struct tb_api_dash_read {
        int64_t since, until;
        char since_ms[32], until_ms[32]; /**< the bounds as statement parameters */
        char *groups;                    /**< JSON array text (owned) */
        PGconn *conn;
        PGresult *res;
} tb_api_dash_read_t;

/** Check ?since, ?until, ?security_group (tb_api_dash_range()) and take a
 *  connection. @returns false when answered; tb_api_dash_done() either way. */
static bool tb_api_dash_begin(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                              int64_t def_span, int64_t max_span, tb_api_dash_read_t *q) {
        static const char *const known[] = {"since", "until", "security_group", NULL};
        memset(q, 0, sizeof(*q));
        if (!tb_api_query_check(req, resp, known, "since, until, security_group", NULL, NULL) ||
            !tb_api_dash_range(req, resp, def_span, max_span, &q->since, &q->until, &q->groups) ||
            !(q->conn = tb_api_conn(api, resp)))
                return false;
        tb_snprintf(q->since_ms, sizeof(q->since_ms), "%" PRId64, q->since);
        tb_snprintf(q->until_ms, sizeof(q->until_ms), "%" PRId64, q->until);
        return true;
}

static void tb_api_dash_done(tb_api_t *api, tb_api_dash_read_t *q) {
        PQclear(q->res);
        if (q->conn)
                tb_store_release(api->store, q->conn);
        free(q->groups);
}

/* ---- GET /v1/runs/counts --------------------------------------------------------- */

void tb_api_runs_counts(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        tb_api_dash_read_t q;
        char err[512];
        if (!tb_api_dash_begin(api, req, resp, 0, 0, &q))
                goto out;
        if (tb_store_runs_counts(q.conn, q.groups, q.since_ms, q.until_ms, &q.res, err,
                                 sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        /* every status, 0 for those without runs */
        json_t *counts = json_object(), *fires = json_object();
        for (size_t i = 0; tb_api_runs_statuses[i]; i++) {
                json_object_set_new(counts, tb_api_runs_statuses[i], json_integer(0));
                json_object_set_new(fires, tb_api_runs_statuses[i], json_integer(0));
        }
        json_int_t total = 0;
        for (int i = 0; i < PQntuples(q.res); i++) {
                json_object_set_new(counts, PQgetvalue(q.res, i, 0), tb_api_dash_int(q.res, i, 1));
                json_object_set_new(fires, PQgetvalue(q.res, i, 0), tb_api_dash_int(q.res, i, 2));
                total += strtoll(PQgetvalue(q.res, i, 1), NULL, 10);
        }
        tb_http_json(resp, 200,
                     json_pack("{s:o, s:o, s:o, s:o, s:I}", "since", tb_api_dash_time(q.since),
                               "until", tb_api_dash_time(q.until), "counts", counts, "fires",
                               fires, "total", total));
out:
        tb_api_dash_done(api, &q);
}

/* ---- GET /v1/runs/fire-lag ------------------------------------------------------- */

void tb_api_runs_fire_lag(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        tb_api_dash_read_t q;
        char err[512];
        if (!tb_api_dash_begin(api, req, resp, TB_API_DASH_LAG_DEFAULT_MS, TB_API_DASH_LAG_MAX_MS,
                               &q))
                goto out;
        if (tb_store_runs_fire_lag(q.conn, q.groups, q.since_ms, q.until_ms, &q.res, err,
                                   sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        json_t *minutes = json_array();
        for (int i = 0; i < PQntuples(q.res); i++)
                json_array_append_new(
                        minutes,
                        json_pack("{s:o, s:o, s:o, s:o, s:o}", "minute",
                                  tb_api_dash_time(strtoll(PQgetvalue(q.res, i, 0), NULL, 10)),
                                  "fires", tb_api_dash_int(q.res, i, 1), "p50_ms",
                                  tb_api_dash_int(q.res, i, 2), "p99_ms",
                                  tb_api_dash_int(q.res, i, 3), "max_ms",
                                  tb_api_dash_int(q.res, i, 4)));
        tb_http_json(resp, 200,
                     json_pack("{s:o, s:o, s:o}", "since", tb_api_dash_time(q.since), "until",
                               tb_api_dash_time(q.until), "minutes", minutes));
out:
        tb_api_dash_done(api, &q);
}

/* ---- GET /v1/runs/upcoming ------------------------------------------------------- */

/** One fire: when, and the row of its task in the schedules result. */
typedef struct tb_api_dash_fire {
        int64_t at;
        int row;
} tb_api_dash_fire_t;

static bool tb_api_dash_later(const tb_api_dash_fire_t *a, const tb_api_dash_fire_t *b) {
        return a->at > b->at || (a->at == b->at && a->row > b->row);
}

/** Keep the \p cap earliest fires in the max-heap \p h of *\p n. @returns
 *  false when \p f is later than all of a full heap (so are the task's next). */
static bool tb_api_dash_keep(tb_api_dash_fire_t *h, size_t *n, size_t cap,
                             tb_api_dash_fire_t f) {
        size_t i;
        if (*n < cap) {
                for (i = (*n)++; i > 0 && tb_api_dash_later(&f, &h[(i - 1) / 2]); i = (i - 1) / 2)
                        h[i] = h[(i - 1) / 2];
                h[i] = f;
                return true;
        }
        if (!tb_api_dash_later(&h[0], &f))
                return false;
        for (i = 0;;) {
                size_t k = 2 * i + 1;
                if (k >= *n)
                        break;
                if (k + 1 < *n && tb_api_dash_later(&h[k + 1], &h[k]))
                        k++;
                if (!tb_api_dash_later(&h[k], &f))
                        break;
                h[i] = h[k];
                i = k;
        }
        h[i] = f;
        return true;
}

static int tb_api_dash_cmp(const void *a, const void *b) {
        const tb_api_dash_fire_t *x = a, *y = b;
        return tb_api_dash_later(x, y) ? 1 : tb_api_dash_later(y, x) ? -1 : 0;
}

void tb_api_runs_upcoming(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"until", "limit", "security_group", NULL};
        tb_api_t *api = app;
        char *groups = NULL, err[512];
        char ub[32];
        int64_t limit = TB_API_DASH_FIRES_DEFAULT, now = tb_now_ms(), until;
        const char *group = NULL;
        PGresult *r = NULL;
        PGconn *c = NULL;
        tb_api_dash_fire_t *heap = NULL;
        if (!tb_api_query_check(req, resp, known, "until, limit, security_group", NULL, NULL) ||
            !tb_api_query_time(req, resp, "until", ub) ||
            !tb_api_query_int(req, resp, "limit", 1, TB_API_DASH_FIRES_MAX, &limit) ||
            !tb_api_group_scope(req, resp, &group))
                goto out;
        until = ub[0] ? strtoll(ub, NULL, 10) : now + TB_API_DASH_AHEAD_DEFAULT_MS;
        if (until <= now || until - now > TB_API_DASH_AHEAD_MAX_MS) {
                tb_http_error(resp, 400, "invalid_argument", "until",
                              "until: must be in the next %lld days (fires from now to until)",
                              TB_API_DASH_AHEAD_MAX_MS / 86400000);
                goto out;
        }
        if (!(heap = malloc(sizeof(*heap) * (size_t)limit))) {
                tb_http_error(resp, 500, "internal", NULL, "out of memory");
                goto out;
        }
        if (!(c = tb_api_conn(api, resp)))
                goto out;
        groups = tb_api_runs_groups(tb_api_principal(req), group);
        if (tb_store_tasks_schedules(c, groups, &r, err, sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        tb_store_release(api->store, c);
        c = NULL;
        size_t n = 0, seen = 0;
        bool truncated = false; /* a task had more fires than one page shows */
        for (int i = 0; i < PQntuples(r); i++) {
                json_error_t je;
                json_t *spec = json_loads(PQgetvalue(r, i, 3), 0, &je);
                tb_schedule_t s = {0};
                int64_t at = now - 1;
                if (spec && tb_task_schedule(spec, strtoll(PQgetvalue(r, i, 4), NULL, 10), &s,
                                             err, sizeof(err)) == TB_OK) {
                        /* at most limit fires of one task: more could not be shown */
                        for (int64_t k = 0; k < limit; k++) {
                                if (tb_schedule_next(&s, at, &at, NULL, err, sizeof(err)) ||
                                    at >= until)
                                        break;
                                seen++;
                                if (!tb_api_dash_keep(heap, &n, (size_t)limit,
                                                      (tb_api_dash_fire_t){at, i}))
                                        break;
                                truncated = truncated || k + 1 == limit;
                        }
                }
                tb_schedule_clear(&s);
                json_decref(spec);
        }
        qsort(heap, n, sizeof(*heap), tb_api_dash_cmp);
        json_t *fires = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(fires,
                                      json_pack("{s:o, s:s, s:s, s:s}", "at",
                                                tb_api_dash_time(heap[i].at), "task_id",
                                                PQgetvalue(r, heap[i].row, 0), "name",
                                                PQgetvalue(r, heap[i].row, 1), "security_group",
                                                PQgetvalue(r, heap[i].row, 2)));
        tb_http_json(resp, 200,
                     json_pack("{s:o, s:o, s:o, s:b}", "from", tb_api_dash_time(now), "until",
                               tb_api_dash_time(until), "fires", fires, "truncated",
                               truncated || seen > n));
out:
        PQclear(r);
        if (c)
                tb_store_release(api->store, c);
        free(heap);
        free(groups);
}
