/**
 * @file api/tasks.c
 * @brief The /v1/tasks routes of the REST API (schemas/openapi.yaml):
 *        writes become TaskCommands (api.c) answered from the projection
 *        once it shows them; reads come from PostgreSQL, always filtered by
 *        the caller's security groups.
 */
#include "api/api.h"
#include "api/cursor.h"
#include "api/deps.h"
#include "api/util.h"
#include "http/metrics.h"
#include "replication.h"
#include "store/tasks.h"
#include "task/task.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define TB_API_TASKS_LIST_DEFAULT 50
#define TB_API_TASKS_LIST_MAX 500
#define TB_API_TASKS_HISTORY_DEFAULT 100
#define TB_API_TASKS_HISTORY_MAX 1000

/* tb_api_tasks_json() reads the columns of store/tasks.h's TB_STORE_TASKS_COL_*. */

/* ---- helpers ---------------------------------------------------------------- */

/** The caller's groups as a PostgreSQL text[] literal (caller frees; api/deps.h). */
char *tb_api_tasks_groups_literal(const tb_principal_t *p) {
        tb_buf_t b = {0};
        tb_buf_append(&b, "{", 1);
        for (size_t i = 0; i < p->group_cnt; i++) {
                tb_buf_append(&b, i ? ",\"" : "\"", i ? 2 : 1);
                for (const char *s = p->groups[i]; *s; s++) {
                        if (*s == '"' || *s == '\\')
                                tb_buf_append(&b, "\\", 1);
                        tb_buf_append(&b, s, 1);
                }
                tb_buf_append(&b, "\"", 1);
        }
        tb_buf_append(&b, "}", 2);
        return b.data;
}

/** The normalized task of row \p i plus its read-only fields (new ref). */
static json_t *tb_api_tasks_json(PGresult *r, int i) {
        json_error_t je;
        json_t *spec = json_loads(PQgetvalue(r, i, 2), 0, &je);
        if (!json_is_object(spec)) {
                json_decref(spec);
                spec = json_object();
        }
        int64_t created = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        int64_t updated = strtoll(PQgetvalue(r, i, 5), NULL, 10);
        bool paused = PQgetvalue(r, i, 3)[0] == 't';
        char cbuf[32], ubuf[32], nbuf[32];
        tb_time_format(created, cbuf);
        tb_time_format(updated, ubuf);
        json_t *t = json_pack("{s:s, s:I}", "id", PQgetvalue(r, i, 0), "version",
                              (json_int_t)strtoll(PQgetvalue(r, i, 1), NULL, 10));
        json_object_update(t, spec);
        /* the paused column is the projection's truth; the spec may predate it */
        json_object_set_new(t, "paused", json_boolean(paused));
        json_object_set_new(t, "created_at", json_string(cbuf));
        json_object_set_new(t, "updated_at", json_string(ubuf));
        json_object_set_new(t, "created_by", json_string(PQgetvalue(r, i, 6)));
        json_t *next = json_null();
        tb_schedule_t s = {0};
        char err[256];
        int64_t at = 0;
        if (!paused && tb_task_schedule(spec, created, &s, err, sizeof(err)) == TB_OK &&
            tb_schedule_next(&s, tb_now_ms(), &at, NULL, err, sizeof(err)) == TB_OK) {
                tb_time_format(at, nbuf);
                next = json_string(nbuf);
        }
        tb_schedule_clear(&s);
        json_object_set_new(t, "next_fire_at", next);
        json_decref(spec);
        return t;
}

/** Load one task visible to \p p. @returns TB_OK, TB_ERR_NOT_FOUND or a DB error. */
static tb_err_t tb_api_tasks_load(tb_api_t *api, PGconn *c, const tb_principal_t *p, const char *id,
                                  json_t **out, char *err, size_t errsz) {
        char *groups = tb_api_tasks_groups_literal(p);
        PGresult *r = NULL;
        tb_err_t e = tb_store_tasks_get(c, id, groups, &r, err, errsz);
        free(groups);
        if (e)
                return e;
        if (PQntuples(r) == 0) {
                PQclear(r);
                return TB_ERR_NOT_FOUND;
        }
        *out = tb_api_tasks_json(r, 0);
        PQclear(r);
        return tb_api_deps_annotate(c, p, *out, err, errsz);
}

/** Respond with the task (200/201) and its ETag; NOT_FOUND becomes 404. */
static void tb_api_tasks_respond(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                 const char *id, int status) {
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return;
        json_t *t = NULL;
        char err[512];
        tb_err_t e = tb_api_tasks_load(api, c, tb_api_principal(req), id, &t, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e == TB_ERR_NOT_FOUND) {
                tb_api_not_found(resp, "task", id);
                return;
        }
        if (e) {
                tb_api_db_error(resp, err);
                return;
        }
        char etag[40], loc[200];
        tb_snprintf(etag, sizeof(etag), "\"%" JSON_INTEGER_FORMAT "\"",
                    json_integer_value(json_object_get(t, "version")));
        tb_http_json(resp, status, t);
        tb_http_add_header(resp, "ETag", etag);
        if (status == 201) {
                tb_snprintf(loc, sizeof(loc), "/v1/tasks/%s", id);
                tb_http_add_header(resp, "Location", loc);
        }
}

/**
 * Validate \p body as the caller's task with the ONE validator, and check
 * that its security group is the caller's. @returns false with resp filled.
 */
static bool tb_api_tasks_validate(tb_api_t *api, const tb_principal_t *p, const char *id,
                                  const json_t *body, tb_http_resp_t *resp) {
        const tb_config_t *conf = api->ctx->conf;
        const char *group = json_string_value(json_object_get(body, "security_group"));
        const tb_group_conf_t *gp = tb_config_group_policy(conf, group ? group : "");
        tb_task_vctx_t v = {
                .now_ms = tb_now_ms(),
                .user_id = p->user_id,
                .default_region = conf->region,
                .log_retention_default_ms = conf->log_retention_default_ms,
                .log_retention_max_ms = gp ? gp->log_retention_max_ms : 0,
                .executors = NULL,
        };
        tb_task_err_t te;
        memset(&te, 0, sizeof(te));
        json_t *norm = NULL;
        tb_err_t e = tb_task_validate(body, &v, &norm, &te);
        if (e == TB_ERR_FORBIDDEN) {
                tb_http_error(resp, 403, "forbidden", te.field[0] ? te.field : NULL, "%s",
                              te.message);
                return false;
        }
        if (e) {
                tb_http_error(resp, 400, "invalid_argument", te.field[0] ? te.field : NULL, "%s",
                              te.message[0] ? te.message : tb_err_name(e));
                return false;
        }
        group = json_string_value(json_object_get(norm, "security_group"));
        bool ok = group && tb_principal_in_group(p, group);
        if (!ok) {
                char groups[512];
                tb_api_groups_text(p, groups, sizeof(groups));
                tb_http_error(resp, 403, "forbidden", "security_group",
                              "security_group: you are not a member of '%.128s'; your groups: %s",
                              group ? group : "", groups);
        }
        ok = ok && tb_api_calendars_check_task(api, norm, resp);
        ok = ok && tb_api_deps_check(api, p, id, norm, resp);
        json_decref(norm);
        return ok;
}

/**
 * Send the command and, once accepted, wait until the projection shows it.
 * @returns 1 accepted and visible, 0 accepted but the projection lagged
 *          (202 answered), -1 failed (error answered).
 */
static int tb_api_tasks_write(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                              const char *type, const char *id, int64_t expected,
                              const char *task_json, const json_t *params,
                              tb_api_cmd_result_t *res) {
        int64_t t0 = tb_mono_us();
        tb_api_command(api, req, type, id, expected, task_json, params, res);
        if (res->outcome != TB_API_ACCEPTED) {
                tb_api_command_error(resp, type, id, res);
                return -1;
        }
        int64_t t1 = tb_mono_us();
        bool seen = tb_api_wait_projected(api, id, res->version, res->deadline_us);
        tb_debug("api", "%s %s: reply after %.1f ms, projection after %.1f ms more", type, id,
                 (double)(t1 - t0) / 1000.0, (double)(tb_mono_us() - t1) / 1000.0);
        if (seen)
                return 1;
        char msg[300];
        tb_snprintf(msg, sizeof(msg),
                    "accepted as version %" PRId64 ", but reads do not show it yet; "
                    "GET /v1/tasks/%s shortly",
                    res->version, id);
        tb_http_json(resp, 202,
                     json_pack("{s:s, s:s, s:s, s:I, s:b, s:s}", "status", "accepted",
                               "task_id", id, "command_id", res->command_id, "version",
                               (json_int_t)res->version, "projected", 0, "message", msg));
        return 0;
}

/* ---- regions ------------------------------------------------------------------ */

/**
 * Writes go to a task's home region (docs/replication.md): answer 307 with
 * Location = the home region's API URL + this path (replication.region_apis),
 * or 421 when no URL is configured for it. \p home NULL: read the task's home
 * from the projection (a task the caller cannot see is left to the usual
 * 404). @returns true if the request was answered.
 */
static bool tb_api_tasks_home_redirect(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                       const char *id, const char *home) {
        const tb_config_t *conf = api->ctx->conf;
        char buf[128] = "";
        if (!conf->repl_remote_region_cnt && !conf->repl_region_api_cnt)
                return false; /* a single region: every task is homed here */
        if (!home) {
                PGconn *c = tb_api_conn(api, resp);
                if (!c)
                        return true;
                char *groups = tb_api_tasks_groups_literal(tb_api_principal(req));
                char err[512];
                tb_err_t e = tb_store_tasks_home(c, id, groups, buf, sizeof(buf), err,
                                                 sizeof(err));
                free(groups);
                tb_store_release(api->store, c);
                if (e) {
                        tb_api_db_error(resp, err);
                        return true;
                }
                home = buf;
        }
        if (!*home || !strcmp(home, conf->region))
                return false;
        const char *base = tb_repl_region_api(conf, home);
        if (!base) {
                tb_http_error(resp, 421, "wrong_region", "home_region",
                              "task '%.128s' is homed in region '%.63s' and this is region '%s'; "
                              "writes go to its home region, whose API URL this region does "
                              "not know (replication.region_apis has no '%.63s')",
                              tb_api_id_ok(id) ? id : "(new)", home, conf->region, home);
                return true;
        }
        size_t bl = strlen(base);
        while (bl && base[bl - 1] == '/')
                bl--;
        char loc[1024];
        tb_snprintf(loc, sizeof(loc), "%.*s%s", (int)bl, base, req->path);
        tb_http_error(resp, 307, "wrong_region", "home_region",
                      "task '%.128s' is homed in region '%.63s' and this is region '%s': "
                      "repeat the request at %s",
                      tb_api_id_ok(id) ? id : "(new)", home, conf->region, loc);
        tb_http_add_header(resp, "Location", loc);
        tb_metrics_add("taskbus_api_region_redirects_total", NULL, 1);
        return true;
}

/* ---- routes ------------------------------------------------------------------- */

void tb_api_tasks_create(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        json_t *body = tb_api_body_object(req, resp, "task");
        if (!body)
                return;
        char id[37];
        tb_uuid4(id);
        bool ok = tb_api_tasks_validate(api, tb_api_principal(req), id, body, resp);
        char home[128] = "";
        const char *h = json_string_value(json_object_get(body, "home_region"));
        tb_snprintf(home, sizeof(home), "%s", h ? h : "");
        json_decref(body);
        if (!ok || tb_api_tasks_home_redirect(api, req, resp, "", home))
                return;
        char *text = strndup(req->body.data, req->body.len);
        tb_api_cmd_result_t res;
        int w = tb_api_tasks_write(api, req, resp, "CREATE", id, -1, text, NULL, &res);
        free(text);
        if (w == 1)
                tb_api_tasks_respond(api, req, resp, id, 201);
        else if (w == 0) {
                char loc[200];
                tb_snprintf(loc, sizeof(loc), "/v1/tasks/%s", id);
                tb_http_add_header(resp, "Location", loc);
        }
}

void tb_api_tasks_get(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        const char *id = req->params[0];
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "task", id);
                return;
        }
        tb_api_tasks_respond(app, req, resp, id, 200);
}

/**
 * Is the request's task one this region writes: a valid id, a well-formed
 * If-Match (into *expected) and the task homed here? @returns false when
 * answered (404, 400, or the redirect to its home region).
 */
static bool tb_api_tasks_write_target(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                      const char *id, int64_t *expected) {
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "task", id);
                return false;
        }
        return tb_api_if_match(req, resp, "task", expected) &&
               !tb_api_tasks_home_redirect(api, req, resp, id, NULL);
}

void tb_api_tasks_update(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *id = req->params[0];
        int64_t expected;
        if (!tb_api_tasks_write_target(api, req, resp, id, &expected))
                return;
        json_t *body = tb_api_body_object(req, resp, "task");
        if (!body)
                return;
        bool ok = tb_api_tasks_validate(api, tb_api_principal(req), id, body, resp);
        json_decref(body);
        if (!ok)
                return;
        char *text = strndup(req->body.data, req->body.len);
        tb_api_cmd_result_t res;
        int w = tb_api_tasks_write(api, req, resp, "UPDATE", id, expected, text, NULL, &res);
        free(text);
        if (w == 1)
                tb_api_tasks_respond(api, req, resp, id, 200);
}

/**
 * The optional body of POST /v1/tasks/{id}/run, {"params": {"NAME": value}},
 * into *\p params (new ref, an object of strings; a JSON integer or boolean
 * is taken as its text, for INT and BOOL parameters). Whether the values fit
 * the task's declaration is the commands role's to say, against the task as
 * it holds it. @returns false when answered with a 400.
 */
static bool tb_api_tasks_run_body(tb_http_req_t *req, tb_http_resp_t *resp, json_t **params) {
        static const char *const keys[] = {"params", NULL};
        *params = json_object();
        if (!*params) {
                tb_http_error(resp, 500, "internal", NULL, "out of memory");
                return false;
        }
        if (req->body.len == 0)
                return true;
        json_t *body = tb_api_body_object(req, resp, "run request ({\"params\": {...}})");
        if (!body)
                goto fail;
        const char *k;
        json_t *v;
        json_object_foreach(body, k, v) {
                size_t i = 0;
                while (keys[i] && strcmp(keys[i], k))
                        i++;
                if (!keys[i]) {
                        tb_http_error(resp, 400, "invalid_argument", "body",
                                      "body: unknown field '%.64s'; a run request has only "
                                      "\"params\" ({\"params\": {\"NAME\": \"value\"}})",
                                      k);
                        goto fail;
                }
        }
        json_t *given = json_object_get(body, "params");
        if (given && !json_is_null(given) && !json_is_object(given)) {
                tb_http_error(resp, 400, "invalid_argument", "params",
                              "params: expected an object of parameter values "
                              "({\"NAME\": \"value\"})");
                goto fail;
        }
        if (json_object_size(given) > TB_TASK_PARAMS_MAX) {
                tb_http_error(resp, 400, "invalid_argument", "params",
                              "params: %zu values; a task has at most %d parameters",
                              json_object_size(given), TB_TASK_PARAMS_MAX);
                goto fail;
        }
        json_object_foreach(given, k, v) {
                json_t *s = NULL;
                char num[32];
                if (json_is_string(v))
                        s = json_incref(v);
                else if (json_is_integer(v)) {
                        tb_snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                                    json_integer_value(v));
                        s = json_string(num);
                } else if (json_is_boolean(v))
                        s = json_string(json_is_true(v) ? "true" : "false");
                if (!s) {
                        /* the key in the field only when it is a name (a
                         * cut key could end inside a UTF-8 sequence) */
                        size_t n = strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                             "0123456789_");
                        bool name = *k && !k[n] && n <= TB_TASK_PARAM_NAME_MAX;
                        char field[96];
                        tb_snprintf(field, sizeof(field), "params%s%s", name ? "." : "",
                                    name ? k : "");
                        tb_http_error(resp, 400, "invalid_argument", field,
                                      "%s: expected a string (or an integer or boolean for "
                                      "INT and BOOL parameters)",
                                      field);
                        goto fail;
                }
                json_object_set_new(*params, k, s);
        }
        json_decref(body);
        return true;
fail:
        json_decref(body);
        json_decref(*params);
        *params = NULL;
        return false;
}

/* DELETE, PAUSE, RESUME, RUN_NOW: no body (RUN_NOW: optional parameter
 * values); answered with the task, or 204 (DELETE), or 202 with the run
 * request (RUN_NOW). */
static void tb_api_tasks_simple(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                                const char *type) {
        const char *id = req->params[0];
        int64_t expected;
        if (!tb_api_tasks_write_target(api, req, resp, id, &expected) ||
            (!strcmp(type, "DELETE") &&
             !tb_api_deps_delete_check(api, tb_api_principal(req), id, resp)))
                return;
        json_t *params = NULL;
        bool run_now = !strcmp(type, "RUN_NOW");
        if (run_now && !tb_api_tasks_run_body(req, resp, &params))
                return;
        tb_api_cmd_result_t res;
        int w = tb_api_tasks_write(api, req, resp, type, id, expected, NULL, params, &res);
        json_decref(params);
        if (w != 1)
                return;
        if (!strcmp(type, "DELETE")) {
                resp->status = 204;
                resp->body.len = 0;
                return;
        }
        if (strcmp(type, "RUN_NOW")) {
                tb_api_tasks_respond(api, req, resp, id, 200);
                return;
        }
        char at[32];
        tb_time_format(res.requested_at_ms, at);
        tb_http_json(resp, 202,
                     json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "status", "accepted",
                               "task_id", id, "command_id", res.command_id, "correlation_id",
                               res.correlation_id, "version", (json_int_t)res.version,
                               "requested_at", at, "trigger", "RUN_NOW"));
}

void tb_api_tasks_delete(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_tasks_simple(app, req, resp, "DELETE");
}

void tb_api_tasks_pause(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_tasks_simple(app, req, resp, "PAUSE");
}

void tb_api_tasks_resume(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_tasks_simple(app, req, resp, "RESUME");
}

void tb_api_tasks_run(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_tasks_simple(app, req, resp, "RUN_NOW");
}

/* ---- list ---------------------------------------------------------------------- */

static const char *const tb_api_tasks_list_params[] = {
        "security_group", "limit", "cursor", "name_prefix", "paused", "label", "last_outcome", NULL};

/** ?last_outcome=a,b (finished statuses) as a text[] literal into \p out.
 *  @returns false with a 400. */
static bool tb_api_tasks_outcome_arg(tb_http_req_t *req, tb_http_resp_t *resp, tb_buf_t *out) {
        static const char *const outcomes[] = {"succeeded", "failed", "timed_out", "cancelled",
                                               "lost", NULL};
        const char *s = tb_http_query(req, "last_outcome");
        if (!s)
                return true;
        tb_buf_append(out, "{", 1);
        for (int n = 0;; n++) {
                size_t len = strcspn(s, ",");
                bool ok = false;
                for (size_t i = 0; outcomes[i] && !ok; i++)
                        ok = len == strlen(outcomes[i]) && !strncmp(s, outcomes[i], len);
                if (!ok) {
                        tb_http_error(resp, 400, "invalid_argument", "last_outcome",
                                      "last_outcome: '%.*s' is not the status of a finished run; "
                                      "valid: succeeded, failed, timed_out, cancelled, lost "
                                      "(comma-separated)",
                                      (int)(len > 40 ? 40 : len), s);
                        return false;
                }
                tb_buf_printf(out, "%s%.*s", n ? "," : "", (int)len, s);
                if (!s[len])
                        break;
                s += len + 1;
        }
        tb_buf_append(out, "}", 2);
        return true;
}

/* label=KEY=VALUE: one more label the tasks must carry, into \p ud (a JSON
 * object). */
static bool tb_api_tasks_label_arg(void *ud, const char *key, const char *value, char *bad,
                                   size_t bad_size) {
        json_t *labels = ud;
        if (strcmp(key, "label"))
                return true;
        const char *eq = value ? strchr(value, '=') : NULL;
        if (!eq || eq == value) {
                tb_snprintf(bad, bad_size,
                            "label: expected KEY=VALUE (e.g. label=env=prod), got '%.60s'",
                            value ? value : "");
                return false;
        }
        char k[TB_TASK_LABEL_LEN_MAX + 1];
        size_t kl = (size_t)(eq - value);
        if (kl >= sizeof(k))
                kl = sizeof(k) - 1;
        memcpy(k, value, kl);
        k[kl] = '\0';
        json_object_set_new(labels, k, json_string(eq + 1));
        return true;
}

void tb_api_tasks_list(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const tb_principal_t *p = tb_api_principal(req);
        json_t *label_filter = json_object();
        tb_buf_t outcomes = {0};
        char *groups = NULL, *labels = NULL;
        size_t group_cnt = p->group_cnt;
        PGconn *c = NULL;
        if (!tb_api_query_check(req, resp, tb_api_tasks_list_params,
                                "security_group, limit, cursor, name_prefix, paused, label, "
                                "last_outcome",
                                tb_api_tasks_label_arg, label_filter))
                goto out;
        const char *group = NULL;
        if (!tb_api_group_scope(req, resp, &group))
                goto out;
        if (group) {
                tb_principal_t one = {.groups = (char **)&group, .group_cnt = 1};
                groups = tb_api_tasks_groups_literal(&one);
                group_cnt = 1;
        } else {
                groups = tb_api_tasks_groups_literal(p);
        }
        int64_t limit = TB_API_TASKS_LIST_DEFAULT;
        if (!tb_api_query_int(req, resp, "limit", 1, TB_API_TASKS_LIST_MAX, &limit))
                goto out;
        tb_api_cursor_t cur;
        bool has_cur;
        if (!tb_api_query_cursor(req, resp, TB_API_CURSOR_TASKS, &cur, &has_cur))
                goto out;
        const char *paused = tb_http_query(req, "paused");
        if (paused && strcmp(paused, "true") && strcmp(paused, "false")) {
                tb_http_error(resp, 400, "invalid_argument", "paused",
                              "paused: expected true or false, got '%.32s'", paused);
                goto out;
        }
        if (!tb_api_tasks_outcome_arg(req, resp, &outcomes))
                goto out;
        const char *prefix = tb_http_query(req, "name_prefix");
        if (json_object_size(label_filter))
                labels = json_dumps(label_filter, JSON_COMPACT);
        char lim[24];
        tb_snprintf(lim, sizeof(lim), "%" PRId64, limit + 1);
        if (!(c = tb_api_conn(api, resp)))
                goto out;
        PGresult *r = NULL;
        char err[512];
        if (tb_store_tasks_list(c, groups, group_cnt, has_cur ? cur.key : NULL,
                                has_cur ? cur.id : NULL, prefix && *prefix ? prefix : NULL,
                                paused, labels, outcomes.len ? outcomes.data : NULL, lim, &r,
                                err, sizeof(err))) {
                tb_api_db_error(resp, err);
                goto out;
        }
        json_t *page = tb_api_page(resp, r, limit, "tasks", tb_api_tasks_json, TB_API_CURSOR_TASKS,
                                   TB_STORE_TASKS_COL_CREATED, TB_STORE_TASKS_COL_ID);
        PQclear(r);
        if (page)
                tb_http_json(resp, 200, page);
out:
        if (c)
                tb_store_release(api->store, c);
        json_decref(label_filter);
        tb_buf_free(&outcomes);
        free(labels);
        free(groups);
}

/* ---- history --------------------------------------------------------------------- */

static json_t *tb_api_tasks_history_json(PGresult *r, int i) {
        json_error_t je;
        char at[32];
        tb_time_format(strtoll(PQgetvalue(r, i, 2), NULL, 10), at);
        json_t *fields = json_loads(PQgetvalue(r, i, 5), 0, &je);
        json_t *task = PQgetisnull(r, i, 6) ? json_null() : json_loads(PQgetvalue(r, i, 6), 0, &je);
        return json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:o}", "version",
                         (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10), "type",
                         PQgetvalue(r, i, 1), "at", at, "actor", PQgetvalue(r, i, 3),
                         "command_id", PQgetvalue(r, i, 4), "changed_fields",
                         fields ? fields : json_array(), "task", task ? task : json_null());
}

void tb_api_tasks_history(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *id = req->params[0];
        char *groups = NULL;
        PGconn *c = NULL;
        PGresult *r = NULL;
        char err[512];
        if (!tb_api_id_ok(id)) {
                tb_api_not_found(resp, "task", id);
                return;
        }
        const char *at = tb_http_query(req, "at");
        char atbuf[32];
        int64_t limit = TB_API_TASKS_HISTORY_DEFAULT;
        if (!tb_api_query_time(req, resp, "at", atbuf) ||
            !tb_api_query_int(req, resp, "limit", 1, TB_API_TASKS_HISTORY_MAX, &limit))
                return;
        tb_api_cursor_t cur;
        bool has_cur;
        if (!tb_api_query_cursor(req, resp, TB_API_CURSOR_HISTORY, &cur, &has_cur))
                return;
        if (!(c = tb_api_conn(api, resp)))
                return;
        groups = tb_api_tasks_groups_literal(tb_api_principal(req));
        char lim[24];
        tb_snprintf(lim, sizeof(lim), "%" PRId64, limit + 1);
        tb_err_t e;
        if (at)
                e = tb_store_tasks_history_at(c, id, groups, atbuf, &r, err, sizeof(err));
        else
                e = tb_store_tasks_history_page(c, id, groups, has_cur ? cur.key : NULL, lim, &r,
                                                err, sizeof(err));
        if (e) {
                tb_api_db_error(resp, err);
                goto out;
        }
        int n = PQntuples(r);
        if (at) {
                if (n == 0)
                        tb_http_error(resp, 404, "not_found", "at",
                                      "task '%s' did not exist at %s (or is not in your "
                                      "security groups)",
                                      id, at);
                else {
                        json_t *h = tb_api_tasks_history_json(r, 0);
                        json_object_set_new(h, "task_id", json_string(id));
                        json_object_set_new(h, "state_at", json_string(at));
                        tb_http_json(resp, 200, h);
                }
                goto out;
        }
        if (n == 0 && !has_cur) {
                tb_api_not_found(resp, "task", id);
                goto out;
        }
        json_t *page = tb_api_page(resp, r, limit, "history", tb_api_tasks_history_json,
                                   TB_API_CURSOR_HISTORY, 0, -1);
        if (page) {
                json_object_set_new(page, "task_id", json_string(id));
                tb_http_json(resp, 200, page);
        }
out:
        PQclear(r);
        tb_store_release(api->store, c);
        free(groups);
}
