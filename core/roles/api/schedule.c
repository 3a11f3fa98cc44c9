/**
 * @file api/schedule.c
 * @brief POST /v1/schedule/preview (schemas/openapi.yaml): when a schedule
 *        would fire, before it is saved. The schedule is checked by the task
 *        validator (tb_task_schedule_check()), so a bad one is refused with
 *        the field and message a create would give, and its fires come from
 *        the schedule engine through tb_task_schedule_fires(), the code of
 *        `taskbus schedule next`. No Kafka: authentication and the per-user
 *        rate limit are api.c's, as for every route.
 *
 * With "calendars" (a task's rules) and "security_group" (one of the
 * caller's), each fire also says what the rules do to it (verdict,
 * fire_time, reason, calendar: tb_task_cals_annotate()), the calendars read
 * from PostgreSQL as the scheduler reads them; a missing one skips every
 * fire with that reason, as it would at run time.
 */
#include "api/api.h"
#include "api/util.h"
#include "store/calendars.h"
#include "task/task.h"

#include <inttypes.h>
#include <string.h>

#define TB_API_PREVIEW_DEFAULT 10
#define TB_API_PREVIEW_MAX 100

static const char *const tb_api_preview_fields[] = {"schedule", "count",          "from",
                                                    "anchor",   "expires_at",     "calendars",
                                                    "security_group", NULL};

/** An RFC 3339 member \p key of \p body into *\p ms (left as is when absent or
 *  null). @returns false with a 400 answered naming \p key. */
static bool tb_api_preview_time(const json_t *body, const char *key, int64_t *ms,
                                tb_http_resp_t *resp) {
        json_t *v = json_object_get(body, key);
        char err[256] = "";
        if (!v || json_is_null(v))
                return true;
        if (json_is_string(v) &&
            tb_time_parse(json_string_value(v), ms, err, sizeof(err)) == TB_OK && *ms > 0)
                return true;
        tb_http_error(resp, 400, "invalid_argument", key,
                      "%s: expected an RFC 3339 time like \"2026-03-29T00:00:00Z\"%s%s", key,
                      *err ? ": " : "", err);
        return false;
}

/** The body's fields other than the schedule: count, from, anchor.
 *  @returns false with a 400 answered. */
static bool tb_api_preview_args(const json_t *body, int64_t *count, int64_t *from,
                                int64_t *anchor, tb_http_resp_t *resp) {
        if (!tb_api_body_known(body, tb_api_preview_fields, "schedule preview",
                               "schedule, count, from, anchor, expires_at, calendars and "
                               "security_group",
                               resp))
                return false;
        json_t *v;
        v = json_object_get(body, "count");
        if (v && !json_is_null(v)) {
                if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                    json_integer_value(v) > TB_API_PREVIEW_MAX) {
                        char got[40] = "";
                        if (json_is_integer(v))
                                tb_snprintf(got, sizeof(got), "%" JSON_INTEGER_FORMAT,
                                            json_integer_value(v));
                        tb_http_error(resp, 400, "invalid_argument", "count",
                                      "count: expected an integer from 1 to %d, got %s",
                                      TB_API_PREVIEW_MAX,
                                      *got ? got : json_is_string(v) ? "a string" : "another type");
                        return false;
                }
                *count = json_integer_value(v);
        }
        if (!tb_api_preview_time(body, "from", from, resp))
                return false;
        *anchor = *from;
        return tb_api_preview_time(body, "anchor", anchor, resp);
}

/** Apply the body's calendars (if any) to \p fires. @returns false when
 *  answered (400 naming calendars[i] or security_group, 503). */
static bool tb_api_preview_calendars(tb_api_t *api, const tb_principal_t *p, const json_t *body,
                                     const tb_schedule_t *s, int64_t from, json_t *fires,
                                     tb_http_resp_t *resp) {
        json_t *norm = json_object();
        tb_task_err_t te;
        bool oom = !norm, ok = false;
        tb_task_calendar_t rules[TB_TASK_CALENDARS_MAX];
        size_t n = 0;
        tb_task_cals_t cals = {0};
        char err[512];
        PGconn *c = NULL;
        if (oom || tb_task_calendars_check(json_object_get(body, "calendars"), norm, &te,
                                           &oom) != TB_OK) {
                tb_http_error(resp, oom ? 500 : 400, oom ? "internal" : "invalid_argument",
                              oom ? NULL : te.field, "%s", oom ? "out of memory" : te.message);
                goto out;
        }
        if (tb_task_calendars(norm, rules, &n, err, sizeof(err)) != TB_OK || !n) {
                ok = true;
                goto out;
        }
        const char *group = json_string_value(json_object_get(body, "security_group"));
        if (!group && p->group_cnt == 1)
                group = p->groups[0]; /* calendars are a group's: the caller's only one */
        if (!group || !tb_principal_in_group(p, group)) {
                char groups[512];
                tb_api_groups_text(p, groups, sizeof(groups));
                tb_http_error(resp, group ? 403 : 400, group ? "forbidden" : "invalid_argument",
                              "security_group",
                              group ? "security_group: you are not a member of '%.128s'; your "
                                      "groups: %s"
                                    : "security_group%.0s: calendars are a group's: give one of "
                                      "your groups (%s)",
                              group ? group : "", groups);
                goto out;
        }
        if (!(c = tb_api_conn(api, resp)))
                goto out;
        if (tb_store_calendar_resolve(c, group, rules, n, &cals, err, sizeof(err)) != TB_OK) {
                tb_api_db_error(resp, err);
                goto out;
        }
        if (tb_task_cals_annotate(&cals, s, from, fires, err, sizeof(err)) != TB_OK) {
                tb_http_error(resp, 500, "internal", "calendars", "calendars: %s", err);
                goto out;
        }
        ok = true;
out:
        if (c)
                tb_store_release(api->store, c);
        tb_task_cals_clear(&cals);
        json_decref(norm);
        return ok;
}

void tb_api_schedule_preview(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const tb_principal_t *p = tb_api_principal(req);
        json_t *body = tb_api_body_object(req, resp, "schedule preview");
        json_t *norm = NULL, *fires = NULL;
        tb_schedule_t s = {0};
        int64_t count = TB_API_PREVIEW_DEFAULT, from = tb_now_ms(), anchor = 0;
        if (!body || !tb_api_preview_args(body, &count, &from, &anchor, resp))
                goto out;
        tb_task_vctx_t v = {
                .now_ms = tb_now_ms(),
                .user_id = p->user_id,
                .default_region = api->ctx->conf->region,
        };
        tb_task_err_t te;
        if (tb_task_schedule_check(body, &v, anchor, &norm, &s, &te) != TB_OK) {
                tb_http_error(resp, 400, "invalid_argument", te.field[0] ? te.field : NULL, "%s",
                              te.message);
                goto out;
        }
        char err[512];
        if (tb_task_schedule_fires(&s, from, (size_t)count, &fires, err, sizeof(err)) != TB_OK) {
                tb_http_error(resp, 500, "internal", "schedule", "schedule: %s", err);
                goto out;
        }
        if (!tb_api_preview_calendars(api, p, body, &s, from, fires, resp))
                goto out;
        char at[32];
        tb_time_format(from, at);
        bool ended = json_array_size(fires) < (size_t)count;
        json_t *out = json_pack("{s:O, s:O, s:s, s:s, s:o, s:b}", "schedule",
                                json_object_get(norm, "schedule"), "expires_at",
                                json_object_get(norm, "expires_at"), "timezone",
                                tb_tz_name(s.tz ? s.tz : tb_tz_utc()), "from", at, "fires",
                                fires, "ended", ended);
        fires = NULL;
        if (out)
                tb_http_json(resp, 200, out);
        else
                tb_http_error(resp, 500, "internal", NULL, "schedule preview: out of memory");
out:
        json_decref(fires);
        json_decref(norm);
        json_decref(body);
        tb_schedule_clear(&s);
}
