/**
 * @file worker.c
 * @brief The container plugin's worker: ONE thread per run checks that the
 *        image is present (never pulls), creates and starts the container,
 *        follows its logs and waits for its exit in a curl multi loop that
 *        cancel() wakes with curl_multi_wakeup(), stops it at the expiry or
 *        on cancel, removes it, and reports the result.
 */
#include "container_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the worker: one per run ---------------------------------------------- */

static void ct_out_flush(ct_run_t *r) {
        if (r->out.len) {
                r->st->host->output(r->st->host, r->run, r->out_stream, r->out.data,
                                    r->out.len);
                r->out.len = 0;
        }
}

static void ct_out_add(ct_run_t *r, int stream, const char *data, size_t len) {
        if (r->out_stream != stream || r->out.len >= 64 * 1024)
                ct_out_flush(r);
        r->out_stream = stream;
        if (!ct_buf_add(&r->out, data, len)) { /* no memory: deliver directly */
                ct_out_flush(r);
                r->st->host->output(r->st->host, r->run, stream, data, len);
        }
}

/* Feed \p n bytes of a multiplexed log stream (8-byte frame headers:
 * stream, 0, 0, 0, big-endian length) to the host. A header that is not one
 * (podman answers some races with 200 and an error text) turns the rest into
 * r->logs_err. */
static void ct_demux_feed(ct_run_t *r, const char *data, size_t n) {
        if (r->logs_bad) {
                if (r->logs_err.len < 4096)
                        ct_buf_add(&r->logs_err, data, n);
                return;
        }
        ct_demux_t *d = &r->demux;
        const unsigned char *p = (const unsigned char *)data;
        size_t left = n;
        while (left > 0) {
                if (d->left == 0) {
                        size_t take = 8 - d->hdr_len < left ? 8 - d->hdr_len : left;
                        memcpy(d->hdr + d->hdr_len, p, take);
                        d->hdr_len += take;
                        p += take;
                        left -= take;
                        if (d->hdr_len < 8)
                                break;
                        d->hdr_len = 0;
                        if (d->hdr[0] > 2 || d->hdr[1] || d->hdr[2] || d->hdr[3]) {
                                r->logs_bad = true;
                                ct_buf_add(&r->logs_err, d->hdr, 8);
                                ct_buf_add(&r->logs_err, p, left);
                                return;
                        }
                        d->stream = d->hdr[0] == 2 ? TB_PLUGIN_STDERR : TB_PLUGIN_STDOUT;
                        d->left = (uint32_t)d->hdr[4] << 24 | (uint32_t)d->hdr[5] << 16 |
                                  (uint32_t)d->hdr[6] << 8 | (uint32_t)d->hdr[7];
                        continue;
                }
                size_t take = d->left < left ? d->left : left;
                ct_out_add(r, d->stream, (const char *)p, take);
                r->logs_emitted += take;
                d->left -= (uint32_t)take;
                p += take;
                left -= take;
        }
}

static size_t ct_logs_cb(char *data, size_t size, size_t nmemb, void *arg) {
        ct_run_t *r = arg;
        size_t n = size * nmemb;
        if (!r->logs_status)
                curl_easy_getinfo(r->logs_h, CURLINFO_RESPONSE_CODE, &r->logs_status);
        if (r->logs_status != 200) { /* an error reply, not a log stream */
                if (r->logs_err.len < 4096)
                        ct_buf_add(&r->logs_err, data, n);
                return n;
        }
        ct_demux_feed(r, data, n);
        ct_out_flush(r);
        return n;
}

/* The follow stream failed before any output (podman: "failed to obtain
 * logs ... no such process" for a container that exited at once): read the
 * finished container's log once more, without follow. */
static void ct_logs_refetch(ct_run_t *r) {
        ct_state_t *st = r->st;
        char path[256], e[256];
        ct_buf_t body = {0};
        long code = 0;
        snprintf(path, sizeof(path), "/containers/%s/logs?stdout=1&stderr=1", r->cid);
        if (ct_engine_http(st, "GET", path, NULL, &code, &body, e, sizeof(e)) == 0 &&
            code == 200) {
                memset(&r->demux, 0, sizeof(r->demux));
                r->logs_bad = false;
                r->logs_err.len = 0;
                ct_demux_feed(r, body.data ? body.data : "", body.len);
                ct_out_flush(r);
        }
        ct_buf_free(&body);
}

static void ct_finish(ct_run_t *r, tb_plugin_result_t *res, const char *msg) {
        ct_state_t *st = r->st;
        /* Off the active list first: after finished() the host may reuse the
         * run pointer for a new run, which cancel() must not confuse with us. */
        pthread_mutex_lock(&st->lock);
        for (ct_run_t **pp = &st->runs; *pp; pp = &(*pp)->next) {
                if (*pp == r) {
                        *pp = r->next;
                        break;
                }
        }
        r->next = st->zombies;
        st->zombies = r;
        CURLM *m = r->multi;
        r->multi = NULL;
        pthread_mutex_unlock(&st->lock);
        curl_multi_cleanup(m);
        pthread_cond_broadcast(&st->cond); /* the sweeper joins zombies */

        tb_pu_finish(st->host, r->run, res, msg);
}

/* Follow the logs and wait for the exit, stopping the container at the
 * expiry or on cancel. Fills \p res (status, exit_code) and \p msg. */
static void ct_supervise(ct_run_t *r, tb_plugin_result_t *res, char *msg, size_t msgsz) {
        ct_state_t *st = r->st;
        char path[256], cerr_logs[CURL_ERROR_SIZE], cerr_wait[CURL_ERROR_SIZE];
        ct_buf_t wait_body = {0}, stop_body = {0};
        CURL *wait_h = NULL, *stop_h = NULL;
        bool logs_done = false, wait_done = false, stop_done = false, killing = false;
        int outcome = CT_OUT_NONE;
        char reason[200] = "";
        int64_t start = tb_pu_mono_ms();
        int64_t deadline = r->expiry_ms > 0 ? start + r->expiry_ms : 0;
        int64_t next_hb = start + st->heartbeat_ms, wait_done_at = 0, stop_at = 0;

        snprintf(path, sizeof(path), "/containers/%s/logs?follow=1&stdout=1&stderr=1",
                 r->cid);
        r->logs_h = ct_engine_easy(st, "GET", path, NULL, NULL, cerr_logs);
        snprintf(path, sizeof(path), "/containers/%s/wait", r->cid);
        wait_h = ct_engine_easy(st, "POST", path, NULL, &wait_body, cerr_wait);
        if (!r->logs_h || !wait_h) {
                tb_pu_outcome(res, TB_PLUGIN_RUN_INFRA_ERROR, msg, msgsz,
                              "out of memory (curl_easy_init)");
                goto done;
        }
        curl_easy_setopt(r->logs_h, CURLOPT_WRITEFUNCTION, ct_logs_cb);
        curl_easy_setopt(r->logs_h, CURLOPT_WRITEDATA, r);
        curl_multi_add_handle(r->multi, r->logs_h);
        curl_multi_add_handle(r->multi, wait_h);

        for (;;) {
                int running = 0;
                curl_multi_perform(r->multi, &running);
                CURLMsg *m;
                int q;
                while ((m = curl_multi_info_read(r->multi, &q))) {
                        if (m->msg != CURLMSG_DONE)
                                continue;
                        CURL *h = m->easy_handle;
                        CURLcode cc = m->data.result;
                        long code = 0;
                        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                        curl_multi_remove_handle(r->multi, h);
                        if (h == r->logs_h) {
                                logs_done = true;
                                if (cc != CURLE_OK || code != 200) {
                                        char em[512];
                                        ct_engine_msg(&r->logs_err, em, sizeof(em));
                                        st->host->log(st->host, TB_PLUGIN_LOG_WARN,
                                                      "run %s: log stream of container "
                                                      "%.12s ended: %s", r->run_id, r->cid,
                                                      cc != CURLE_OK ? cerr_logs : em);
                                }
                        } else if (h == wait_h) {
                                wait_done = true;
                                wait_done_at = tb_pu_mono_ms();
                                json_t *j = NULL;
                                if (cc == CURLE_OK && code == 200 &&
                                    (j = json_loads(wait_body.data ? wait_body.data : "",
                                                    0, NULL)) &&
                                    json_is_integer(json_object_get(j, "StatusCode"))) {
                                        res->exit_code = (int32_t)json_integer_value(
                                                json_object_get(j, "StatusCode"));
                                } else {
                                        char em[512];
                                        ct_engine_msg(&wait_body, em, sizeof(em));
                                        tb_pu_outcome(res, TB_PLUGIN_RUN_INFRA_ERROR, msg,
                                                      msgsz, "waiting for container "
                                                      "%.12s failed: %s", r->cid,
                                                      cc != CURLE_OK ? cerr_wait : em);
                                }
                                json_decref(j);
                        } else if (h == stop_h) {
                                stop_done = true;
                                if (!killing && (cc != CURLE_OK || (code != 204 && code != 304))) {
                                        /* Stop failed: kill outright. */
                                        killing = true;
                                        curl_easy_cleanup(stop_h);
                                        stop_body.len = 0;
                                        snprintf(path, sizeof(path),
                                                 "/containers/%s/kill?signal=KILL", r->cid);
                                        stop_h = ct_engine_easy(st, "POST", path, NULL, &stop_body,
                                                                NULL);
                                        if (stop_h) {
                                                stop_done = false;
                                                curl_multi_add_handle(r->multi, stop_h);
                                        }
                                }
                        }
                }
                if (wait_done && (logs_done || tb_pu_mono_ms() - wait_done_at > CT_LOG_DRAIN_MS))
                        break;


                int64_t now = tb_pu_mono_ms();
                if (outcome == CT_OUT_NONE && !wait_done) {
                        if (tb_pu_cancel_requested(&r->cancel, &st->lock, reason,
                                                   sizeof(reason)))
                                outcome = CT_OUT_CANCEL;
                        else if (deadline && now >= deadline)
                                outcome = CT_OUT_TIMEOUT;
                        if (outcome != CT_OUT_NONE) {
                                snprintf(path, sizeof(path), "/containers/%s/stop?t=%lld",
                                         r->cid, (long long)r->stop_timeout_s);
                                stop_h = ct_engine_easy(st, "POST", path, NULL, &stop_body, NULL);
                                if (stop_h)
                                        curl_multi_add_handle(r->multi, stop_h);
                                stop_at = now;
                        }
                }
                if (stop_at && now - stop_at > r->stop_timeout_s * 1000 + CT_STOP_SLACK_MS) {
                        tb_pu_outcome(res, TB_PLUGIN_RUN_INFRA_ERROR, msg, msgsz,
                                      "container %.12s did not stop within %lld s "
                                      "of being asked to; removing it by force", r->cid,
                                      (long long)(r->stop_timeout_s +
                                                  CT_STOP_SLACK_MS / 1000));
                        goto done;
                }
                if (now >= next_hb) {
                        st->host->heartbeat(st->host, r->run);
                        next_hb = now + st->heartbeat_ms;
                }
                int64_t wait_ms = CT_POLL_MS;
                if (deadline && outcome == CT_OUT_NONE && deadline - now < wait_ms)
                        wait_ms = deadline - now;
                if (next_hb - now < wait_ms)
                        wait_ms = next_hb - now;
                if (wait_ms < 0)
                        wait_ms = 0;
                curl_multi_poll(r->multi, NULL, 0, (int)wait_ms, NULL);
        }
        ct_out_flush(r);
        if (wait_done && r->logs_emitted == 0 &&
            (r->logs_bad || (r->logs_status != 0 && r->logs_status != 200))) {
                char em[512];
                ct_engine_msg(&r->logs_err, em, sizeof(em));
                st->host->log(st->host, TB_PLUGIN_LOG_WARN, "run %s: the log stream of "
                              "container %.12s failed (%s): reading its log again", r->run_id,
                              r->cid, em);
                ct_logs_refetch(r);
        }
        if (res->status == TB_PLUGIN_RUN_INFRA_ERROR)
                goto done;

        if (outcome == CT_OUT_TIMEOUT) {
                tb_pu_outcome(res, TB_PLUGIN_RUN_TIMED_OUT, msg, msgsz,
                              "run exceeded its expiry of %lld ms: container "
                              "stopped (SIGTERM, SIGKILL after %lld s)%s",
                              (long long)r->expiry_ms, (long long)r->stop_timeout_s,
                              killing ? ", then killed" : "");
        } else if (outcome == CT_OUT_CANCEL) {
                tb_pu_outcome(res, TB_PLUGIN_RUN_CANCELLED, msg, msgsz,
                              "cancelled: %s", reason);
        } else if (res->exit_code == 0) {
                res->status = TB_PLUGIN_RUN_SUCCEEDED;
        } else {
                res->status = TB_PLUGIN_RUN_FAILED;
                bool oom = false;
                ct_buf_t ib = {0};
                long code = 0;
                char e[256];
                snprintf(path, sizeof(path), "/containers/%s/json", r->cid);
                if (ct_engine_http(st, "GET", path, NULL, &code, &ib, e, sizeof(e)) == 0 &&
                    code == 200) {
                        json_t *j = json_loads(ib.data, 0, NULL);
                        oom = json_is_true(json_object_get(json_object_get(j, "State"),
                                                           "OOMKilled"));
                        json_decref(j);
                }
                ct_buf_free(&ib);
                if (oom)
                        snprintf(msg, msgsz, "exited with code %d: killed for exceeding "
                                 "its memory limit (raise executor option 'memory')",
                                 (int)res->exit_code);
                else if (res->exit_code > 128 && res->exit_code < 160)
                        snprintf(msg, msgsz, "exited with code %d (128+%d: killed by "
                                 "signal %s?)", (int)res->exit_code,
                                 (int)res->exit_code - 128, strsignal(res->exit_code - 128));
                else
                        snprintf(msg, msgsz, "exited with code %d", (int)res->exit_code);
        }
done:
        ct_out_flush(r);
        if (r->logs_h) {
                curl_multi_remove_handle(r->multi, r->logs_h);
                curl_easy_cleanup(r->logs_h);
                r->logs_h = NULL;
        }
        if (wait_h) {
                curl_multi_remove_handle(r->multi, wait_h);
                curl_easy_cleanup(wait_h);
        }
        if (stop_h) {
                curl_multi_remove_handle(r->multi, stop_h);
                curl_easy_cleanup(stop_h);
        }
        (void)stop_done;
        ct_buf_free(&wait_body);
        ct_buf_free(&stop_body);
}

void *ct_worker_main(void *arg) {
        ct_run_t *r = arg;
        ct_state_t *st = r->st;
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        char msg[CT_ERR_MAX] = "", err[CT_ERR_MAX], em[512], path[512];
        ct_buf_t resp = {0};
        long code = 0;
        res.exit_code = -1;

        /* Present locally? We never pull: what runs is what the operator loaded. */
        snprintf(path, sizeof(path), "/images/%s/json", r->image);
        if (ct_engine_http(st, "GET", path, NULL, &code, &resp, err, sizeof(err)) != 0) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg), "%s", err);
                goto out;
        }
        if (code == 404) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg),
                              "image '%s' is not present on the container "
                              "engine at %s, and this plugin never pulls: load it there "
                              "first (e.g. `podman pull %s` or `podman load`)", r->image,
                              st->socket, r->image);
                goto out;
        }
        if (code != 200) {
                ct_engine_msg(&resp, em, sizeof(em));
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg),
                              "inspecting image '%s' failed: HTTP %ld: %s",
                              r->image, code, em);
                goto out;
        }

        char reason[200];
        if (tb_pu_cancel_requested(&r->cancel, &st->lock, reason, sizeof(reason))) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_CANCELLED, msg, sizeof(msg),
                              "cancelled before the container started: %s",
                              reason);
                goto out;
        }

        resp.len = 0;
        if (ct_engine_http(st, "POST", "/containers/create", r->create_body, &code, &resp, err,
                           sizeof(err)) != 0) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg), "%s", err);
                goto out;
        }
        json_t *j = code == 201 && resp.data ? json_loads(resp.data, 0, NULL) : NULL;
        const char *id = j ? json_string_value(json_object_get(j, "Id")) : NULL;
        if (id && strlen(id) < sizeof(r->cid) && strspn(id, "0123456789abcdef") == strlen(id))
                snprintf(r->cid, sizeof(r->cid), "%s", id);
        json_decref(j);
        if (!r->cid[0]) {
                ct_engine_msg(&resp, em, sizeof(em));
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg),
                              "creating the container from image '%s' "
                              "failed: HTTP %ld: %s", r->image, code, em);
                goto out;
        }

        if (ct_policy_check_image_user(st, r, err, sizeof(err)) != TB_PLUGIN_OK) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_FAILED, msg, sizeof(msg), "%s", err);
                goto out;
        }

        resp.len = 0;
        snprintf(path, sizeof(path), "/containers/%s/start", r->cid);
        if (ct_engine_http(st, "POST", path, NULL, &code, &resp, err, sizeof(err)) != 0) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg), "%s", err);
                goto out;
        }
        if (code != 204 && code != 304) {
                ct_engine_msg(&resp, em, sizeof(em));
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg),
                              "starting container %.12s (image '%s') "
                              "failed: HTTP %ld: %s", r->cid, r->image, code, em);
                goto out;
        }
        res.started_ms = tb_pu_wall_ms();
        ct_supervise(r, &res, msg, sizeof(msg));

out:
        ct_buf_free(&resp);
        if (r->cid[0] && !ct_engine_remove(st, r->cid, err, sizeof(err)))
                st->host->log(st->host, TB_PLUGIN_LOG_WARN, "run %s: %s (the sweeper "
                              "will retry)", r->run_id, err);
        ct_finish(r, &res, msg);
        return NULL;
}

void ct_run_free(ct_run_t *r) {
        if (!r)
                return;
        free(r->run_id);
        free(r->image);
        free(r->create_body);
        free(r->user_name);
        ct_buf_free(&r->logs_err);
        ct_buf_free(&r->out);
        free(r);
}

/* Join the threads of finished runs. Called without st->lock. */
void ct_worker_reap(ct_state_t *st) {
        pthread_mutex_lock(&st->lock);
        ct_run_t *z = st->zombies;
        st->zombies = NULL;
        pthread_mutex_unlock(&st->lock);
        while (z) {
                ct_run_t *next = z->next;
                pthread_join(z->thread, NULL);
                ct_run_free(z);
                z = next;
        }
}
