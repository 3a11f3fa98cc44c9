/**
 * @file container.c
 * @brief The container executor plugin: runs each task in a fresh container
 *        through the Docker Engine API (dockerd, or `podman system service`)
 *        on a unix socket, streams its logs, enforces its expiry and removes
 *        the container afterwards.
 *
 * Design (operator view: docs/executors.md; which file holds what:
 * container_internal.h):
 *  - Only the public plugin ABI, libcurl and jansson: an outside author's
 *    plugin. Every engine call is a plain HTTP request on the unix socket
 *    (CURLOPT_UNIX_SOCKET_PATH) under the API version prefix ("/v1.41").
 *  - start() validates everything a task can get wrong (options, the image
 *    allow-list and resource caps of the task's security group, which reach
 *    the plugin as tb_plugin_run_t.policy) and prepares the create request;
 *    then ONE worker thread per run checks that the image is present (never
 *    pulls), creates, starts, follows the logs and waits for the exit code
 *    in a curl multi loop that a cancel() wakes with curl_multi_wakeup().
 *  - Every container carries labels io.taskbus.managed, run_id, task_id and
 *    io.taskbus.owner = "BOOTID/PIDNS/PID/STARTTIME/NONCE" naming the plugin
 *    instance that made it. The sweeper thread (at init, then every
 *    sweep_interval) removes managed containers nobody will collect: ours
 *    whose run is no longer active, those of a dead executor process on this
 *    machine (running or not: the owner's pid is gone or reused), those made
 *    before this machine's last boot, and, for owners it cannot judge
 *    (another pid namespace, no owner label), containers that have been
 *    exited for longer than sweep_grace.
 *  - Locking: st->lock guards the run lists and each run's cancel request;
 *    host callbacks are made with no lock held.
 */
#include "container_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const tb_plugin_config_key_t ct_keys[] = {
        {"socket", "unix socket of the Docker Engine API (dockerd or `podman system "
         "service`)", "/run/podman/podman.sock", 0, TB_PLUGIN_CONF_STRING},
        {"api_version", "Docker Engine API version used as the path prefix "
         "(\"1.41\" -> /v1.41; empty: no prefix)", "1.41", 0, TB_PLUGIN_CONF_STRING},
        {"stop_timeout", "time a container gets between SIGTERM and SIGKILL when "
         "it is stopped", "10s", 0, TB_PLUGIN_CONF_DURATION},
        {"default_user", "container user of runs that name none", "65534:65534", 0,
         TB_PLUGIN_CONF_STRING},
        {"allow_root", "allow containers to run as root (uid 0)", "false", 0,
         TB_PLUGIN_CONF_BOOL},
        {"heartbeat_interval", "how often a running run reports it is alive", "10s",
         0, TB_PLUGIN_CONF_DURATION},
        {"request_timeout", "longest wait for one engine request (create, start, "
         "remove...)", "60s", 0, TB_PLUGIN_CONF_DURATION},
        {"sweep", "remove leftover taskbus containers (see docs/executors.md)",
         "true", 0, TB_PLUGIN_CONF_BOOL},
        {"sweep_interval", "how often the sweeper looks for leftover containers",
         "60s", 0, TB_PLUGIN_CONF_DURATION},
        {"sweep_grace", "exited containers of owners the sweeper cannot check are "
         "removed after this long", "10m", 0, TB_PLUGIN_CONF_DURATION},
        {0},
};

/* ---- plugin callbacks -------------------------------------------------------- */

static int ct_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        ct_state_t *st = state;
        ct_run_t *r = calloc(1, sizeof(*r));
        if (!r)
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        r->st = st;
        r->run = run;
        r->expiry_ms = run->expiry_ms > 0 ? run->expiry_ms : 0;
        if (!(r->run_id = strdup(run->run_id ? run->run_id : ""))) {
                ct_run_free(r);
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        }
        if (ct_policy_build_create(st, run, r, errbuf, errbuf_size) != TB_PLUGIN_OK) {
                ct_run_free(r);
                return TB_PLUGIN_ERROR;
        }
        if (!(r->multi = curl_multi_init())) {
                ct_run_free(r);
                return tb_pu_fail(errbuf, errbuf_size, "out of memory (curl_multi_init)");
        }
        pthread_mutex_lock(&st->lock);
        r->next = st->runs;
        st->runs = r;
        int e = pthread_create(&r->thread, NULL, ct_worker_main, r);
        if (e)
                st->runs = r->next;
        pthread_mutex_unlock(&st->lock);
        if (e) {
                curl_multi_cleanup(r->multi);
                ct_run_free(r);
                return tb_pu_fail(errbuf, errbuf_size, "cannot start a worker thread: %s",
                                  strerror(e));
        }
        return TB_PLUGIN_OK;
}

static int ct_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        ct_state_t *st = state;
        int rc = TB_PLUGIN_NOT_FOUND;
        pthread_mutex_lock(&st->lock);
        for (ct_run_t *r = st->runs; r; r = r->next) {
                if (r->run != run)
                        continue;
                tb_pu_cancel_request(&r->cancel, reason);
                if (r->multi)
                        curl_multi_wakeup(r->multi);
                rc = TB_PLUGIN_OK;
                break;
        }
        pthread_mutex_unlock(&st->lock);
        return rc;
}

static void ct_destroy(void *state) {
        ct_state_t *st = state;
        if (!st)
                return;
        if (st->sweeper_started) {
                pthread_mutex_lock(&st->lock);
                st->stopping = true;
                pthread_cond_broadcast(&st->cond);
                pthread_mutex_unlock(&st->lock);
                pthread_join(st->sweeper, NULL);
        }
        ct_worker_reap(st);
        /* The host guarantees no run is active; a run still listed would be a
         * host bug, and its thread still uses st: leak rather than crash. */
        if (st->runs) {
                st->host->log(st->host, TB_PLUGIN_LOG_ERROR, "destroy() with runs "
                              "still active; leaking the plugin state");
                return;
        }
        pthread_mutex_destroy(&st->lock);
        pthread_cond_destroy(&st->cond);
        free(st->socket);
        free(st->default_user);
        if (st->curl_inited)
                curl_global_cleanup();
        free(st);
}

static int ct_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        ct_state_t *st = calloc(1, sizeof(*st));
        if (!st)
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        st->host = host;
        pthread_mutex_init(&st->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&st->cond, &ca);
        pthread_condattr_destroy(&ca);
        const char *sock = tb_pu_kv_get(config, n_config, "socket");
        const char *user = tb_pu_kv_get(config, n_config, "default_user");
        const char *api = tb_pu_kv_get(config, n_config, "api_version");
        if (!api)
                api = "";
        st->socket = sock ? strdup(sock) : NULL;
        st->default_user = user ? strdup(user) : NULL;
        st->allow_root = tb_pu_kv_true(config, n_config, "allow_root");
        st->sweep = tb_pu_kv_true(config, n_config, "sweep");
        st->stop_timeout_ms = tb_pu_kv_i64(config, n_config, "stop_timeout", 0);
        st->heartbeat_ms = tb_pu_kv_i64(config, n_config, "heartbeat_interval", 0);
        st->request_timeout_ms = tb_pu_kv_i64(config, n_config, "request_timeout", 0);
        st->sweep_interval_ms = tb_pu_kv_i64(config, n_config, "sweep_interval", 0);
        st->sweep_grace_ms = tb_pu_kv_i64(config, n_config, "sweep_grace", 0);
        int rc = TB_PLUGIN_ERROR;
        if (!st->socket || !st->default_user) {
                tb_pu_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }
        if (st->socket[0] != '/') {
                tb_pu_fail(errbuf, errbuf_size, "config key 'socket' = '%s' must be an "
                           "absolute path to the engine's unix socket", st->socket);
                goto fail;
        }
        if (*api && (strlen(api) > 16 || strspn(api, "0123456789.") != strlen(api))) {
                tb_pu_fail(errbuf, errbuf_size, "config key 'api_version' = '%s' must look "
                           "like 1.41 (or be empty for no version prefix)", api);
                goto fail;
        }
        snprintf(st->prefix, sizeof(st->prefix), "%s%s", *api ? "/v" : "", api);
        if (st->heartbeat_ms <= 0 || st->sweep_interval_ms <= 0 ||
            st->request_timeout_ms <= 0) {
                tb_pu_fail(errbuf, errbuf_size, "heartbeat_interval, sweep_interval and "
                           "request_timeout must be greater than zero");
                goto fail;
        }
        if (st->stop_timeout_ms > 3600 * 1000) {
                tb_pu_fail(errbuf, errbuf_size, "config key 'stop_timeout' must be at "
                           "most 1h");
                goto fail;
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                tb_pu_fail(errbuf, errbuf_size, "curl_global_init failed");
                goto fail;
        }
        st->curl_inited = true;

        ct_sweep_owner_init(st);

        /* Fail now, with a message naming the socket, rather than on every run. */
        long code = 0;
        char err[CT_ERR_MAX];
        if (ct_engine_http(st, "GET", "/_ping", NULL, &code, NULL, err, sizeof(err)) != 0) {
                tb_pu_fail(errbuf, errbuf_size, "%s", err);
                goto fail;
        }
        if (code != 200) {
                tb_pu_fail(errbuf, errbuf_size, "the container engine at %s answered "
                           "/_ping with HTTP %ld; is api_version '%s' supported?",
                           st->socket, code, api);
                goto fail;
        }
        int e = pthread_create(&st->sweeper, NULL, ct_sweep_main, st);
        if (e) {
                tb_pu_fail(errbuf, errbuf_size, "cannot start the sweeper thread: %s",
                           strerror(e));
                goto fail;
        }
        st->sweeper_started = true;
        *state = st;
        rc = TB_PLUGIN_OK;
        return rc;
fail:
        ct_destroy(st);
        return rc;
}

static const tb_plugin_t ct_plugin = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "container",
        .version = "1.0.0",
        .description = "runs each task in a fresh container (Docker Engine API: "
                       "dockerd or podman)",
        .config_keys = ct_keys,
        .init = ct_init,
        .start = ct_start,
        .cancel = ct_cancel,
        .destroy = ct_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &ct_plugin; }
