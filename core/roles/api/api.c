/**
 * @file api/api.c
 * @brief The api role: the route table, bearer authentication and rate
 *        limits, /healthz and /metrics, and the role's start and stop. The
 *        write path is commands.c, read-your-writes projwait.c, the routes
 *        tasks.c, runs.c and admin.c.
 */
#include "api/admin.h"
#include "api/api_internal.h"
#include "api/follow.h"
#include "api/session.h"
#include "api/ui.h"
#include "bus/bus.h"
#include "http/metrics.h"
#include "http/tls.h"
#include "identity/signing.h"
#include "serde/serde.h"

#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>

/* ---- small helpers ----------------------------------------------------- */

/** Wait on \p cv until the monotonic \p deadline_us. @returns false on timeout. */
bool tb_api_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_us) {
        struct timespec ts = {.tv_sec = deadline_us / 1000000,
                              .tv_nsec = (long)(deadline_us % 1000000) * 1000};
        return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

unsigned tb_api_hash(const char *s) {
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 16777619u;
        return h % TB_API_PENDING_BUCKETS;
}

const tb_principal_t *tb_api_principal(const tb_http_req_t *req) { return req->user; }

/* ---- authentication, /healthz, /metrics ----------------------------------------- */

bool tb_api_auth_failed(tb_http_resp_t *resp, tb_err_t e, const char *what, const char *err,
                        const char *challenge) {
        if (e == TB_ERR_UNAUTHENTICATED) {
                tb_http_error(resp, 401, "unauthenticated", NULL, "%s", err);
                if (challenge)
                        tb_http_add_header(resp, "WWW-Authenticate", challenge);
                return false;
        }
        tb_warn(TB_API_SUB, "%s authentication: %s", what, err);
        tb_http_error(resp, 503, "unavailable", NULL,
                      "cannot check the %s right now (the database is unavailable); retry later",
                      what);
        tb_http_add_header(resp, "Retry-After", "5");
        return false;
}

static bool tb_api_auth(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        /* The sign-in checks the token of its body itself (session.c). */
        if (req->route && !strcmp(req->route, "/v1/session") && !strcmp(req->method, "POST"))
                return true;
        const char *h = tb_http_header(req, "Authorization");
        const char *sid = tb_api_session_cookie(req);
        char err[512];
        tb_principal_t *p = NULL;
        tb_err_t e = TB_OK;
        if ((!h || !*h) && sid && *sid) {
                /* the web console: its session cookie (and CSRF header on writes) */
                if (!tb_api_session_auth(api, req, resp, sid, &p))
                        return false;
        } else if (!h || !*h) {
                tb_http_error(resp, 401, "unauthenticated", NULL,
                              "missing Authorization header: send 'Authorization: Bearer "
                              "<token>' (tokens come from `taskbus admin token create`)");
                tb_http_add_header(resp, "WWW-Authenticate", "Bearer realm=\"taskbus\"");
                return false;
        } else {
                e = tb_identity_authenticate(api->store, h, TB_API_AUTH_CACHE_MS, &p, err,
                                             sizeof(err));
        }
        if (e)
                return tb_api_auth_failed(resp, e, "token", err,
                                          "Bearer realm=\"taskbus\", error=\"invalid_token\"");
        int64_t retry_ms = 0;
        if (!tb_ratelimit_take(api->rl, p->user_id, tb_mono_us(), &retry_ms)) {
                char ra[32];
                int64_t secs = (retry_ms + 999) / 1000;
                tb_snprintf(ra, sizeof(ra), "%" PRId64, secs < 1 ? 1 : secs);
                tb_http_error(resp, 429, "throttled", NULL,
                              "user '%s' exceeds %.6g requests/s (burst %" PRId64
                              "); retry after %s s",
                              p->user_id, api->ctx->conf->api_rate, api->ctx->conf->api_burst, ra);
                tb_http_add_header(resp, "Retry-After", ra);
                tb_principal_free(p);
                return false;
        }
        req->user = p;
        return true;
}

static void tb_api_release(void *app, tb_http_req_t *req) {
        tb_principal_free(req->user);
        req->user = NULL;
}

/* Check Kafka (a metadata round trip) and PostgreSQL (SELECT 1) into
 * api->health. Called by the request that found the state older than a
 * second; concurrent requests answer the last state meanwhile. */
static void tb_api_health_check(tb_api_t *api) {
        char kerr[256] = "", perr[256] = "";
        bool kafka_ok = false, pg_ok = false;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t ke =
                rd_kafka_metadata(tb_bus_rprod_get(api->producer), 0, NULL, &md, 2000);
        tb_bus_rprod_put(api->producer);
        if (ke == RD_KAFKA_RESP_ERR_NO_ERROR) {
                kafka_ok = md->broker_cnt > 0;
                rd_kafka_metadata_destroy(md);
        } else {
                snprintf(kerr, sizeof(kerr), "%s", rd_kafka_err2str(ke));
        }
        PGconn *conn = tb_store_acquire_timeout(api->store, 2000);
        if (conn) {
                pg_ok = tb_store_exec(conn, "health check", "SELECT 1", 0, NULL, NULL, perr,
                                      sizeof(perr)) == TB_OK;
                tb_store_release(api->store, conn);
        } else {
                snprintf(perr, sizeof(perr), "no connection free in the api pool for 2 s");
        }
        tb_metrics_add("taskbus_api_health_checks_total", NULL, 1);
        tb_api_health_t *h = &api->health;
        pthread_mutex_lock(&h->lock);
        h->kafka_ok = kafka_ok;
        h->pg_ok = pg_ok;
        snprintf(h->kafka_error, sizeof(h->kafka_error), "%s", kerr);
        snprintf(h->pg_error, sizeof(h->pg_error), "%s", perr);
        h->checked_us = tb_mono_us();
        h->refreshing = false;
        pthread_mutex_unlock(&h->lock);
}

static void tb_api_healthz(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        tb_api_health_t *h = &api->health;
        pthread_mutex_lock(&h->lock);
        bool stale = !h->checked_us || tb_mono_us() - h->checked_us > TB_API_HEALTH_TTL_MS * 1000;
        /* One request refreshes a stale state, the others answer the last
         * one; before the first check there is nothing to answer: check too. */
        bool mine = stale && (!h->refreshing || !h->checked_us);
        if (mine)
                h->refreshing = true;
        pthread_mutex_unlock(&h->lock);
        if (mine)
                tb_api_health_check(api);
        pthread_mutex_lock(&h->lock);
        bool kafka_ok = h->kafka_ok, pg_ok = h->pg_ok;
        double age_s = (double)(tb_mono_us() - h->checked_us) / 1e6;
        json_t *j = json_pack("{s:s, s:{s:b}, s:{s:b}, s:s, s:f}", "status",
                              kafka_ok && pg_ok ? "ok" : "degraded", "kafka", "ok", kafka_ok,
                              "postgres", "ok", pg_ok, "region", api->ctx->conf->region,
                              "checked_seconds_ago", age_s);
        if (!kafka_ok)
                json_object_set_new(json_object_get(j, "kafka"), "error",
                                    json_string(h->kafka_error));
        if (!pg_ok)
                json_object_set_new(json_object_get(j, "postgres"), "error",
                                    json_string(h->pg_error));
        pthread_mutex_unlock(&h->lock);
        tb_http_json(resp, kafka_ok && pg_ok ? 200 : 503, j);
}

static void tb_api_metrics(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4";
        tb_metrics_render(&resp->body);
}

/* The seed API's un-versioned /tasks paths are aliases of /v1/tasks. */
static const tb_http_route_t tb_api_routes[] = {
        {"GET", "/healthz", tb_api_healthz, true},
        {"GET", "/metrics", tb_api_metrics, true},
        {"POST", "/v1/session", tb_api_session_create, false},
        {"DELETE", "/v1/session", tb_api_session_delete, false},
        {"GET", "/v1/me", tb_api_session_me, false},
        {"GET", "/v1/admin/users", tb_api_admin_users_list, false},
        {"POST", "/v1/admin/users", tb_api_admin_users_create, false},
        {"POST", "/v1/admin/users/{user}/disable", tb_api_admin_users_disable, false},
        {"POST", "/v1/admin/users/{user}/enable", tb_api_admin_users_enable, false},
        {"GET", "/v1/admin/users/{user}/tokens", tb_api_admin_tokens_list, false},
        {"POST", "/v1/admin/users/{user}/tokens", tb_api_admin_tokens_create, false},
        {"POST", "/v1/admin/tokens/{token_id}/revoke", tb_api_admin_tokens_revoke, false},
        {"GET", "/v1/admin/groups", tb_api_admin_groups_list, false},
        {"POST", "/v1/admin/groups/{group}/members", tb_api_admin_members_add, false},
        {"DELETE", "/v1/admin/groups/{group}/members/{user}", tb_api_admin_members_remove, false},
        {"GET", "/v1/admin/audit", tb_api_admin_audit, false},
        {"POST", "/v1/admin/notify/test", tb_api_notify_test, false},
        {"GET", "/v1/admin/notify/deliveries/{id}", tb_api_notify_delivery, false},
        {"GET", "/ui", tb_api_ui_get, true},
        {"GET", "/ui/", tb_api_ui_get, true},
        {"GET", "/ui/{file}", tb_api_ui_get, true},
        {"POST", "/v1/tasks", tb_api_tasks_create, false},
        {"GET", "/v1/tasks", tb_api_tasks_list, false},
        {"GET", "/v1/tasks/{id}", tb_api_tasks_get, false},
        {"PUT", "/v1/tasks/{id}", tb_api_tasks_update, false},
        {"POST", "/v1/tasks/{id}", tb_api_tasks_update, false},
        {"DELETE", "/v1/tasks/{id}", tb_api_tasks_delete, false},
        {"POST", "/v1/tasks/{id}/pause", tb_api_tasks_pause, false},
        {"POST", "/v1/tasks/{id}/resume", tb_api_tasks_resume, false},
        {"POST", "/v1/tasks/{id}/run", tb_api_tasks_run, false},
        {"GET", "/v1/tasks/{id}/history", tb_api_tasks_history, false},
        {"GET", "/v1/tasks/{id}/runs", tb_api_runs_list, false},
        {"GET", "/v1/tasks/{id}/occurrences", tb_api_tasks_occurrences, false},
        {"POST", "/v1/tasks/{id}/backfill", tb_api_tasks_backfill, false},
        /* before /v1/runs/{id}: the first match wins */
        {"GET", "/v1/runs", tb_api_runs_list_all, false},
        {"GET", "/v1/runs/counts", tb_api_runs_counts, false},
        {"GET", "/v1/runs/fire-lag", tb_api_runs_fire_lag, false},
        {"GET", "/v1/runs/upcoming", tb_api_runs_upcoming, false},
        {"GET", "/v1/runs/{id}", tb_api_runs_get, false},
        {"POST", "/v1/runs/{id}/cancel", tb_api_runs_cancel, false},
        {"GET", "/v1/runs/{id}/log", tb_api_runs_log, false},
        {"GET", "/v1/runs/{id}/notifications", tb_api_runs_notifications, false},
        {"POST", "/v1/schedule/preview", tb_api_schedule_preview, false},
        {"GET", "/v1/calendars", tb_api_calendars_list, false},
        {"PUT", "/v1/calendars/{name}", tb_api_calendars_put, false},
        {"GET", "/v1/calendars/{name}", tb_api_calendars_get, false},
        {"DELETE", "/v1/calendars/{name}", tb_api_calendars_delete, false},
        {"POST", "/tasks", tb_api_tasks_create, false},
        {"GET", "/tasks", tb_api_tasks_list, false},
        {"GET", "/tasks/{id}", tb_api_tasks_get, false},
        {"PUT", "/tasks/{id}", tb_api_tasks_update, false},
        {"POST", "/tasks/{id}", tb_api_tasks_update, false},
        {"DELETE", "/tasks/{id}", tb_api_tasks_delete, false},
        {NULL, NULL, NULL, false},
};

/* ---- the role ------------------------------------------------------------------- */

static void tb_api_teardown(tb_api_t *api) {
        tb_http_stop(api->http);
        api->http = NULL;
        tb_api_follows_stop(api);
        atomic_store(&api->stop, true);
        pthread_mutex_lock(&api->lock);
        pthread_cond_broadcast(&api->ready_cond);
        pthread_mutex_unlock(&api->lock);
        if (api->wake_fd >= 0) {
                uint64_t one = 1;
                if (write(api->wake_fd, &one, sizeof(one)) < 0)
                        tb_debug(TB_API_SUB, "wake: %s", strerror(errno));
        }
        if (api->proj_started)
                pthread_join(api->proj_thread, NULL);
        if (api->reply_started)
                pthread_join(api->reply_thread, NULL);
        if (api->replies) {
                tb_bus_consumer_destroy(api->replies, 10000);
        }
        if (api->poll_started)
                pthread_join(api->poll_thread, NULL);
        tb_bus_rprod_destroy(api->producer, 5000);
        if (api->wake_fd >= 0)
                close(api->wake_fd);
        tb_ratelimit_free(api->rl);
        tb_store_destroy(api->store);
        pthread_mutex_destroy(&api->health.lock);
        pthread_cond_destroy(&api->ready_cond);
        pthread_mutex_destroy(&api->lock);
        free(api);
}

/* Is api.listen's host a loopback address (127.0.0.0/8 or [::1])? */
static bool tb_api_listen_loopback(const char *listen) {
        return !strncmp(listen, "127.", 4) || !strncmp(listen, "[::1]", 5);
}

static tb_err_t tb_api_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t kerr = tb_sign_key_init(ctx->conf, true, errstr, errstr_size);
        if (kerr)
                return kerr;
        /* The certificate and key first: a wrong file fails the start at once.
         * The key's bytes live until the server has its own copy. */
        tb_http_tls_t tls = {0};
        bool https = tb_http_tls_wanted(ctx->conf);
        if (https && (kerr = tb_http_tls_load(ctx->conf, &tls, errstr, errstr_size)))
                return kerr;
        tb_api_t *api = calloc(1, sizeof(*api));
        if (!api) {
                tb_http_tls_free(&tls);
                return TB_ERR_NOMEM;
        }
        api->ctx = ctx;
        api->wake_fd = -1;
        pthread_mutex_init(&api->lock, NULL);
        pthread_mutex_init(&api->health.lock, NULL);
        tb_cond_init_mono(&api->ready_cond);
        tb_metrics_describe("taskbus_api_health_checks_total", "counter",
                            "Kafka and PostgreSQL checks made for /healthz (at most one a "
                            "second, however often it is called)");
        tb_metrics_describe("taskbus_api_commands_total", "counter",
                            "Commands sent by the REST API by type and outcome (accepted, a "
                            "rejection reason, unavailable, timeout)");
        tb_err_t err;
        api->rl = tb_ratelimit_new(ctx->conf->api_rate, ctx->conf->api_burst);
        api->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!api->rl || api->wake_fd < 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "api: %s",
                                api->rl ? strerror(errno) : "out of memory");
                goto fail;
        }
        if ((err = tb_store_open_with(ctx->conf, ctx->conf->api_pool_size,
                                      ctx->conf->api_statement_timeout_ms, &api->store, errstr,
                                      errstr_size)) ||
            (err = tb_serde_init(errstr, errstr_size)) ||
            (err = tb_api_follows_start(api, errstr, errstr_size)) ||
            (err = tb_api_producer_new(api, errstr, errstr_size)) ||
            (err = tb_api_replies_new(api, errstr, errstr_size)))
                goto fail;
        if (pthread_create(&api->poll_thread, NULL, tb_api_poll_main, api) == 0)
                api->poll_started = true;
        if (pthread_create(&api->reply_thread, NULL, tb_api_reply_main, api) == 0)
                api->reply_started = true;
        if (pthread_create(&api->proj_thread, NULL, tb_api_proj_main, api) == 0)
                api->proj_started = true;
        if (!api->poll_started || !api->reply_started || !api->proj_started) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "api: cannot start threads");
                goto fail;
        }
        /* Accept requests once replies can be heard (or after a bounded wait:
         * with Kafka down the API still answers reads, and writes get 503). */
        int64_t by = tb_mono_us() + (int64_t)TB_API_READY_WAIT_MS * 1000;
        pthread_mutex_lock(&api->lock);
        while (!api->replies_ready && tb_api_cond_wait_until(&api->ready_cond, &api->lock, by))
                ;
        pthread_mutex_unlock(&api->lock);
        tb_http_limits_t lim;
        tb_http_limits_from_config(ctx->conf, &lim);
        err = tb_http_start(ctx->conf->api_listen, tb_api_routes, api, tb_api_auth,
                            tb_api_release, &lim, https ? &tls : NULL, &api->http, errstr,
                            errstr_size);
        tb_http_tls_free(&tls);
        if (err)
                goto fail;
        tb_info(TB_API_SUB, "listening on %s://%s", https ? "https" : "http",
                ctx->conf->api_listen);
        if (!https && !tb_api_listen_loopback(ctx->conf->api_listen))
                tb_warn(TB_API_SUB, "api.listen %s is reachable beyond this machine over plain "
                        "HTTP: bearer tokens cross the network unencrypted; set api.tls_cert "
                        "and api.tls_key, put a TLS reverse proxy in front, or listen on "
                        "127.0.0.1", ctx->conf->api_listen);
        *state = api;
        return TB_OK;
fail:
        tb_http_tls_free(&tls);
        tb_api_teardown(api);
        return err;
}

static void tb_api_stop(void *state) { tb_api_teardown(state); }

const tb_role_t tb_role_api = {
        .name = "api",
        .description = "REST API (HTTP or HTTPS), /healthz and /metrics",
        .start = tb_api_start,
        .stop = tb_api_stop,
};
