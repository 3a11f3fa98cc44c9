/**
 * @file api/calendars.c
 * @brief /v1/calendars (schemas/openapi.yaml, docs/api.md "Calendars"):
 *        business calendars of the caller's security groups.
 *
 *  - PUT /v1/calendars/{name}?security_group=G[&timezone=Z][&weekend=sat,sun]
 *    with an iCalendar body (Content-Type: text/calendar) creates or
 *    replaces the calendar (If-Match: its version, to refuse overwriting a
 *    newer one: 409, or 404 when there is none, as for a task). The body is read by the strict reader (schedule/ics.h) and
 *    built once into a calendar (schedule/calendar.h) before it is stored,
 *    so a stored calendar always builds; a refusal is a 400 naming the line
 *    and the property. The zone is ?timezone, else the file's
 *    X-WR-TIMEZONE, else UTC; the weekend is ?weekend, else none.
 *  - GET /v1/calendars/{name}[?security_group=G]: the calendar as JSON with
 *    its source, or the source alone with Accept: text/calendar.
 *    With If-None-Match: * it only creates (409 when the calendar exists).
 *  - GET /v1/calendars[?security_group=G]: the calendars, without sources.
 *  - DELETE /v1/calendars/{name}[?security_group=G] (If-Match as for PUT):
 *    204, or 409 naming the tasks of its group that still name it.
 *
 * Another group's calendar answers as a missing one (404). Calendars are
 * stored in PostgreSQL by this role (store/calendars.h) and read by the
 * scheduler (scheduler/calendars.c), the preview and the occurrences.
 *
 * tb_api_calendars_check_task(): a task created or updated over REST must
 * name calendars of its own group that exist, when PostgreSQL can say so.
 */
#include "api/api.h"
#include "api/util.h"
#include "schedule/calendar.h"
#include "store/calendars.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const tb_api_cal_put_params[] = {"security_group", "timezone", "weekend",
                                                    NULL};
static const char *const tb_api_cal_get_params[] = {"security_group", NULL};

/* Several of the caller's groups have a calendar \p name: 409. */
static void tb_api_cal_ambiguous(tb_http_resp_t *resp, const char *name) {
        tb_http_error(resp, 409, "conflict", "security_group",
                      "calendar '%s' exists in several of your groups: name one with "
                      "?security_group=",
                      name);
}

/* The reads' start, below. */
static PGconn *tb_api_cal_read_start(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                     char **groups);

/* The calendar's JSON (no source). */
static json_t *tb_api_cal_json(const char *group, const char *name, const char *tz,
                               const char *weekend, int events, int64_t version,
                               const char *updated_at, const char *updated_by) {
        return json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:s, s:s}", "name", name,
                         "security_group", group, "timezone", tz, "weekend", weekend, "events",
                         events, "version", (json_int_t)version, "updated_at", updated_at,
                         "updated_by", updated_by);
}

static void tb_api_cal_etag(tb_http_resp_t *resp, int64_t version) {
        char etag[32];
        snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", version);
        tb_http_add_header(resp, "ETag", etag);
}

static bool tb_api_cal_name_ok(const char *name, tb_http_resp_t *resp) {
        if (tb_api_id_ok(name) && strlen(name) <= TB_CALENDAR_NAME_MAX)
                return true;
        tb_http_error(resp, 400, "invalid_argument", "name",
                      "name: a calendar name is 1 to %d of A-Z a-z 0-9 - _ . :",
                      TB_CALENDAR_NAME_MAX);
        return false;
}

/* Read, check and build the body: *ics and the calendar's zone and weekend.
 * @returns false when answered. */
static bool tb_api_cal_read(tb_http_req_t *req, tb_http_resp_t *resp, const char *name,
                            tb_store_calendar_t *row) {
        char err[512];
        const char *ct = tb_http_header(req, "Content-Type");
        if (!ct || strncasecmp(ct, "text/calendar", 13) || (ct[13] && ct[13] != ';' &&
                                                             ct[13] != ' ')) {
                tb_http_error(resp, 415, "invalid_argument", "Content-Type",
                              "Content-Type: send the iCalendar file as text/calendar (got "
                              "%.64s)",
                              ct ? ct : "none");
                return false;
        }
        tb_ics_t *ics = NULL;
        if (tb_ics_parse(req->body.data ? req->body.data : "", req->body.len, &ics, err,
                         sizeof(err)) != TB_OK) {
                tb_http_error(resp, 400, "invalid_argument", "ics", "%s", err);
                return false;
        }
        bool ok = false;
        const tb_tz_t *tz = ics->tz ? ics->tz : tb_tz_utc();
        const char *tzq = tb_http_query(req, "timezone");
        const char *wq = tb_http_query(req, "weekend");
        unsigned weekend = 0;
        tb_calendar_t *cal = NULL;
        if (tzq && tb_tz_open(tzq, &tz, err, sizeof(err)) != TB_OK) {
                tb_http_error(resp, 400, "invalid_argument", "timezone", "timezone: %s", err);
                goto out;
        }
        if (wq && tb_calendar_weekend_parse(wq, &weekend, err, sizeof(err)) != TB_OK) {
                tb_http_error(resp, 400, "invalid_argument", "weekend", "%s", err);
                goto out;
        }
        if (tb_calendar_new(name, tz, weekend, ics, &cal, err, sizeof(err)) != TB_OK) {
                tb_http_error(resp, 400, "invalid_argument",
                              strncmp(err, "ics:", 4) ? "weekend" : "ics", "%s", err);
                goto out;
        }
        tb_snprintf(row->timezone, sizeof(row->timezone), "%s", tb_tz_name(tz));
        tb_calendar_weekend_format(weekend, row->weekend);
        row->events = (int)ics->nevents;
        ok = true;
out:
        tb_calendar_free(cal);
        tb_ics_free(ics);
        return ok;
}

/* If-None-Match: * (create only) sets *expected to 0; any other value is a
 * 400, and so is If-None-Match with If-Match. */
static bool tb_api_cal_if_none_match(tb_http_req_t *req, tb_http_resp_t *resp,
                                     int64_t *expected) {
        const char *h = tb_http_header(req, "If-None-Match");
        if (!h)
                return true;
        while (*h == ' ')
                h++;
        if (strcmp(h, "*") || tb_http_header(req, "If-Match")) {
                tb_http_error(resp, 400, "invalid_argument", "If-None-Match",
                              "If-None-Match: only * is accepted (create the calendar only if "
                              "it does not exist), and not with If-Match");
                return false;
        }
        *expected = 0;
        return true;
}

void tb_api_calendars_put(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const tb_principal_t *p = tb_api_principal(req);
        const char *name = req->params[0];
        const char *group = NULL;
        int64_t expected;
        char err[512], gl[512];
        if (!tb_api_query_check(req, resp, tb_api_cal_put_params,
                                "security_group, timezone, weekend", NULL, NULL) ||
            !tb_api_cal_name_ok(name, resp) || !tb_api_group_scope(req, resp, &group) ||
            !tb_api_if_match(req, resp, "calendar", &expected) ||
            !tb_api_cal_if_none_match(req, resp, &expected))
                return;
        if (!group) {
                tb_api_groups_text(p, gl, sizeof(gl));
                tb_http_error(resp, 400, "invalid_argument", "security_group",
                              "security_group: required: the group the calendar belongs to "
                              "(?security_group=; your groups: %s)",
                              gl);
                return;
        }
        tb_store_calendar_t row = {0};
        if (!tb_api_cal_read(req, resp, name, &row))
                return;
        tb_snprintf(row.security_group, sizeof(row.security_group), "%s", group);
        tb_snprintf(row.name, sizeof(row.name), "%s", name);
        tb_snprintf(row.updated_by, sizeof(row.updated_by), "%s", p->user_id);
        row.source = strndup(req->body.data, req->body.len);
        PGconn *c = row.source ? tb_api_conn(api, resp) : NULL;
        if (!c) {
                if (!row.source)
                        tb_http_error(resp, 500, "internal", NULL, "calendar: out of memory");
                free(row.source);
                return;
        }
        int64_t version = 0, updated_ms = 0;
        bool created = false;
        tb_err_t e = tb_store_calendar_put(c, &row, expected, &version, &updated_ms, &created,
                                           err, sizeof(err));
        tb_store_release(api->store, c);
        free(row.source);
        if (e == TB_ERR_CONFLICT || e == TB_ERR_NOT_FOUND) { /* as a task's If-Match */
                tb_http_error(resp, e == TB_ERR_CONFLICT ? 409 : 404,
                              e == TB_ERR_CONFLICT ? "conflict" : "not_found", "If-Match", "%s",
                              err);
                return;
        }
        if (e) {
                tb_api_db_error(resp, err);
                return;
        }
        char updated[32];
        tb_time_format(updated_ms, updated);
        json_t *out = tb_api_cal_json(group, name, row.timezone, row.weekend, row.events,
                                      version, updated, p->user_id);
        if (!out) {
                tb_http_error(resp, 500, "internal", NULL, "calendar: out of memory");
                return;
        }
        tb_api_cal_etag(resp, version);
        tb_http_json(resp, created ? 201 : 200, out);
}

/* Does the request's Accept name text/calendar? */
static bool tb_api_cal_wants_ics(tb_http_req_t *req) {
        const char *a = tb_http_header(req, "Accept");
        return a && strcasestr(a, "text/calendar");
}

/* The reads' start: the query checked, the caller's groups (or
 * ?security_group) as JSON into *groups (caller frees) and a connection.
 * @returns the connection, or NULL when answered. */
static PGconn *tb_api_cal_read_start(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                     char **groups) {
        const char *group = NULL;
        *groups = NULL;
        if (!tb_api_query_check(req, resp, tb_api_cal_get_params, "security_group", NULL,
                                NULL) ||
            !tb_api_group_scope(req, resp, &group))
                return NULL;
        *groups = tb_api_runs_groups(tb_api_principal(req), group);
        PGconn *c = *groups ? tb_api_conn(api, resp) : NULL;
        if (!*groups)
                tb_http_error(resp, 500, "internal", NULL, "calendars: out of memory");
        if (!c) {
                free(*groups);
                *groups = NULL;
        }
        return c;
}

void tb_api_calendars_get(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *name = req->params[0];
        char err[512], *groups;
        if (!tb_api_id_ok(name)) {
                tb_api_not_found(resp, "calendar", name);
                return;
        }
        PGconn *c = tb_api_cal_read_start(api, req, resp, &groups);
        if (!c)
                return;
        tb_store_calendar_t row;
        int found = 0;
        tb_err_t e = tb_store_calendar_get(c, groups, name, &row, &found, err, sizeof(err));
        tb_store_release(api->store, c);
        free(groups);
        if (e) {
                tb_store_calendar_clear(&row);
                tb_api_db_error(resp, err);
                return;
        }
        if (found == 0) {
                tb_api_not_found(resp, "calendar", name);
                return;
        }
        if (found > 1) {
                tb_api_cal_ambiguous(resp, name);
                return;
        }
        tb_api_cal_etag(resp, row.version);
        if (tb_api_cal_wants_ics(req)) {
                resp->status = 200;
                resp->content_type = "text/calendar; charset=utf-8";
                tb_buf_append(&resp->body, row.source, strlen(row.source));
                tb_store_calendar_clear(&row);
                return;
        }
        char updated[32];
        tb_time_format(row.updated_ms, updated);
        json_t *out = tb_api_cal_json(row.security_group, row.name, row.timezone, row.weekend,
                                      row.events, row.version, updated, row.updated_by);
        char created[32];
        tb_time_format(row.created_ms, created);
        if (out && (json_object_set_new(out, "created_at", json_string(created)) ||
                    json_object_set_new(out, "ics", json_string(row.source)))) {
                json_decref(out);
                out = NULL;
        }
        tb_store_calendar_clear(&row);
        if (!out) {
                tb_http_error(resp, 500, "internal", NULL, "calendar: out of memory");
                return;
        }
        tb_http_json(resp, 200, out);
}

void tb_api_calendars_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        char err[512], *groups;
        PGconn *c = tb_api_cal_read_start(api, req, resp, &groups);
        if (!c)
                return;
        PGresult *r = NULL;
        tb_err_t e = tb_store_calendar_list(c, groups, &r, err, sizeof(err));
        tb_store_release(api->store, c);
        free(groups);
        if (e) {
                tb_api_db_error(resp, err);
                return;
        }
        json_t *items = json_array();
        for (int i = 0; items && i < PQntuples(r); i++) {
                char updated[32];
                tb_time_format(strtoll(PQgetvalue(r, i, 6), NULL, 10), updated);
                json_array_append_new(
                        items, tb_api_cal_json(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                                               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                                               atoi(PQgetvalue(r, i, 4)),
                                               strtoll(PQgetvalue(r, i, 5), NULL, 10), updated,
                                               PQgetvalue(r, i, 7)));
        }
        PQclear(r);
        json_t *out = items ? json_pack("{s:o}", "calendars", items) : NULL;
        if (!out) {
                tb_http_error(resp, 500, "internal", NULL, "calendars: out of memory");
                return;
        }
        tb_http_json(resp, 200, out);
}

void tb_api_calendars_delete(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *name = req->params[0];
        char err[768], *groups, users[400] = "";
        int64_t expected;
        if (!tb_api_id_ok(name)) {
                tb_api_not_found(resp, "calendar", name);
                return;
        }
        if (!tb_api_if_match(req, resp, "calendar", &expected))
                return;
        PGconn *c = tb_api_cal_read_start(api, req, resp, &groups);
        if (!c)
                return;
        /* which of the caller's groups has it (as a GET finds it) */
        tb_store_calendar_t row;
        int found = 0;
        tb_err_t e = tb_store_calendar_get(c, groups, name, &row, &found, err, sizeof(err));
        free(groups);
        if (!e && found == 1)
                e = tb_store_calendar_delete(c, row.security_group, name, expected, users,
                                             sizeof(users), err, sizeof(err));
        tb_store_release(api->store, c);
        tb_store_calendar_clear(&row);
        if (e == TB_ERR_CONFLICT)
                tb_http_error(resp, 409, "conflict", users[0] ? "calendar" : "If-Match", "%s",
                              err);
        else if (e == TB_ERR_NOT_FOUND || (!e && found == 0))
                tb_api_not_found(resp, "calendar", name);
        else if (e)
                tb_api_db_error(resp, err);
        else if (found > 1)
                tb_api_cal_ambiguous(resp, name);
        else
                resp->status = 204;
}

bool tb_api_calendars_check_task(tb_api_t *api, const json_t *task, tb_http_resp_t *resp) {
        tb_task_calendar_t rules[TB_TASK_CALENDARS_MAX];
        size_t n = 0;
        char err[512];
        const char *group = json_string_value(json_object_get(task, "security_group"));
        if (tb_task_calendars(task, rules, &n, err, sizeof(err)) != TB_OK || !n)
                return true; /* the validator's own output: nothing to check */
        /* Not the usual 503: without PostgreSQL the task is accepted and a
         * fire naming a missing calendar is skipped (fail closed). */
        PGconn *c = tb_store_acquire_timeout(api->store, 2000);
        if (!c) {
                tb_warn("api", "calendars of a task not checked: no database connection");
                return true;
        }
        json_t *g = json_pack("[s]", group ? group : "");
        char *groups = g ? json_dumps(g, JSON_COMPACT) : NULL;
        json_decref(g);
        bool ok = true;
        for (size_t i = 0; ok && groups && i < n; i++) {
                tb_store_calendar_t row;
                int found = 0;
                if (tb_store_calendar_get(c, groups, rules[i].name, &row, &found, err,
                                          sizeof(err)) != TB_OK) {
                        tb_warn("api", "calendars of a task not checked: %s", err);
                        break;
                }
                tb_store_calendar_clear(&row);
                if (found != 1) {
                        char field[48];
                        tb_snprintf(field, sizeof(field), "calendars[%zu].calendar", i);
                        tb_http_error(resp, 400, "invalid_argument", field,
                                      "%s: calendar '%s' does not exist in group '%s'; create "
                                      "it first (PUT /v1/calendars/%s?security_group=%s)",
                                      field, rules[i].name, group ? group : "", rules[i].name,
                                      group ? group : "");
                        ok = false;
                }
        }
        free(groups);
        tb_store_release(api->store, c);
        return ok;
}
