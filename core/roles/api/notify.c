/**
 * @file api/notify.c
 * @brief The admin routes of notifications (docs/notifications.md, "Testing
 *        a channel"): POST /v1/admin/notify/test queues a test notification
 *        for a channel of this taskbusd's config, which the notifier role
 *        delivers like any other (signed, retried, every attempt recorded);
 *        GET /v1/admin/notify/deliveries/{id} shows one notification and its
 *        attempts. For members of api.admin_group only: a channel is the
 *        deployment's, not a group's.
 */
#include "api/admin.h"
#include "api/api_internal.h"
#include "api/util.h"
#include "store/notify.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void tb_api_notify_test(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        static const char *const known[] = {"channel", NULL};
        tb_api_t *api = app;
        const tb_config_t *conf = api->ctx->conf;
        if (!tb_api_admin_allowed(api, req, resp))
                return;
        json_t *body = tb_api_body_object(req, resp, "notification test");
        if (!body)
                return;
        if (!tb_api_body_known(body, known, "notification test", "channel", resp))
                goto out;
        const char *name = json_string_value(json_object_get(body, "channel"));
        const tb_notify_channel_t *ch = name ? tb_config_notify_channel(conf, name) : NULL;
        if (!ch) {
                char list[512] = "";
                size_t len = 0;
                for (size_t i = 0; i < conf->notify_channel_cnt && len < sizeof(list); i++) {
                        tb_snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                    conf->notify_channels[i].name);
                        len = strlen(list);
                }
                tb_http_error(resp, 400, "invalid_argument", "channel",
                              "channel: %s%.64s%s; this taskbusd's notify.channels: %s",
                              name ? "'" : "required: the name of a channel", name ? name : "",
                              name ? "' is not one" : "", *list ? list : "(none configured)");
                goto out;
        }
        char uuid[37], run_id[48];
        tb_uuid4(uuid);
        tb_snprintf(run_id, sizeof(run_id), "test-%s", uuid);
        const tb_principal_t *p = tb_api_principal(req);
        json_t *facts = json_pack("{s:b,s:s,s:{s:s,s:s,s:s},s:{s:s,s:s}}", "test", 1,
                                  "requested_by", p->user_id, "task", "id", "", "name",
                                  "taskbus notify test", "security_group", "", "run", "id",
                                  run_id, "status", "test");
        char *text = facts ? json_dumps(facts, JSON_COMPACT) : NULL;
        json_decref(facts);
        PGconn *c = text ? tb_api_conn(api, resp) : NULL;
        if (!c) {
                if (!text)
                        tb_http_error(resp, 503, "unavailable", NULL, "out of memory");
                free(text);
                goto out;
        }
        tb_store_notify_new_t n = {
                .run_id = run_id,
                .rule_index = -1,
                .event = "test",
                .task_id = "",
                .security_group = "",
                .channel = ch->name,
                .facts = text,
        };
        int64_t id = 0;
        char err[512];
        tb_err_t e = tb_store_notify_insert(c, &n, &id, err, sizeof(err));
        tb_store_release(api->store, c);
        free(text);
        if (e) {
                tb_api_db_error(resp, err);
                goto out;
        }
        tb_info("api", "user '%s' queued test notification %" PRId64 " to channel %s",
                p->user_id, id, ch->name);
        tb_http_json(resp, 202,
                     json_pack("{s:I,s:s,s:s,s:s}", "id", (json_int_t)id, "channel", ch->name,
                               "event", "test", "status", "pending"));
out:
        json_decref(body);
}

void tb_api_notify_delivery(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        if (!tb_api_admin_allowed(api, req, resp))
                return;
        const char *ids = req->params[0];
        char *end = NULL;
        long long id = strtoll(ids, &end, 10);
        if (!*ids || *end || id <= 0) {
                tb_http_error(resp, 400, "invalid_argument", "id",
                              "id: '%.32s' is not a notification id (a positive integer)", ids);
                return;
        }
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return;
        PGresult *r = NULL;
        char err[512];
        tb_err_t e = tb_store_notify_list(c, NULL, id, NULL, &r, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_db_error(resp, err);
                return;
        }
        json_error_t je;
        json_t *items = json_loads(PQgetvalue(r, 0, 0), 0, &je);
        PQclear(r);
        json_t *one = json_array_get(items, 0);
        if (!one)
                tb_api_not_found(resp, "notification", ids);
        else
                tb_http_json(resp, 200, json_incref(one));
        json_decref(items);
}
