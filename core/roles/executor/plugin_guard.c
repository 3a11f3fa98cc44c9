/**
 * @file executor/plugin_guard.c
 * @brief The host's own end of a run (tb_plugin_set_stop_bound()): at its
 *        expiry, and after a cancel, whatever the plugin does.
 *
 * Why in the host: a plugin is foreign code. The shell plugin stops a run at
 * its expiry with SIGTERM then SIGKILL of its process group, but a plugin that
 * ignores expiry_ms, or whose cancel() does nothing, would otherwise hold an
 * executor slot and its claim forever, and the run would never end for its
 * users. One thread per plugin instance ticks every 100 ms; it never calls the
 * plugin with pi->lock held (the plugin may call finished() from cancel()).
 *
 * Ownership: an abandoned run keeps the plugin's reference (the plugin may
 * still read &hr->run), so it lives on pi->abandoned until the plugin's late
 * finished() or the instance's unload; an instance with abandoned runs is
 * never unmapped.
 */
#include "executor/plugin_host_internal.h"

#include <taskbus/plugin_util.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TB_PLUGIN_GUARD_TICK_MS 100
/* What a plugin is given past a deadline before the host acts: its own
 * expiry handling and its report need a moment. */
#define TB_PLUGIN_GUARD_MARGIN_MS 1000
#define TB_PLUGIN_GUARD_BATCH 64

int64_t tb_plugin_guard_grace(const tb_plugin_instance_t *pi, const tb_plugin_run_t *run) {
        int64_t grace = pi->stop_bound_ms;
        for (size_t i = 0; run->options && i < run->n_options; i++) {
                int64_t v = 0;
                if (run->options[i].key && !strcmp(run->options[i].key, "kill_grace") &&
                    tb_pu_parse_duration(run->options[i].value, &v, NULL, 0) == TB_PLUGIN_OK &&
                    v >= 0 && v < grace)
                        grace = v;
        }
        return grace;
}

void tb_plugin_guard_note_stop(tb_plugin_hrun_t *hr, int why, int64_t now_ms) {
        if (hr->stop_why == TB_PLUGIN_GUARD_NONE) {
                hr->stop_why = why;
                hr->stop_at_ms = now_ms;
        }
}

tb_plugin_hrun_t *tb_plugin_guard_take_abandoned(tb_plugin_instance_t *pi,
                                                 const tb_plugin_run_t *run) {
        for (tb_plugin_hrun_t **pp = &pi->abandoned; *pp; pp = &(*pp)->next) {
                if (&(*pp)->run == run) {
                        tb_plugin_hrun_t *hr = *pp;
                        *pp = hr->next;
                        hr->next = NULL;
                        return hr;
                }
        }
        return NULL;
}

/* Report \p hr ended without the plugin; it stays on pi->abandoned. */
static void tb_plugin_guard_abandon(tb_plugin_instance_t *pi, tb_plugin_hrun_t *hr) {
        char msg[512];
        bool expiry = hr->stop_why == TB_PLUGIN_GUARD_EXPIRY;
        snprintf(msg, sizeof(msg), "plugin '%s' did not end run %s within its kill grace "
                 "(%" PRId64 " ms) after %s; taskbus ended the run without it (processes "
                 "the plugin started may still be running)", pi->desc->name, hr->run.run_id,
                 hr->grace_ms, expiry ? "its expiry" : "being cancelled");
        tb_warn(pi->logname, "%s", msg);
        tb_plugin_result_t res = {
                .size = sizeof(res),
                .status = expiry ? TB_PLUGIN_RUN_TIMED_OUT : TB_PLUGIN_RUN_CANCELLED,
                .exit_code = -1,
                .finished_ms = tb_now_ms(),
                .error = msg,
        };
        if (pi->sink.finished)
                pi->sink.finished(pi->sink.opaque, hr->opaque, &res);
        tb_plugin_host_run_done(pi);
}

static void *tb_plugin_guard_main(void *arg) {
        tb_plugin_instance_t *pi = arg;
        tb_plugin_hrun_t *cancel[TB_PLUGIN_GUARD_BATCH], *gone[TB_PLUGIN_GUARD_BATCH];
        pthread_mutex_lock(&pi->lock);
        while (!pi->guard_stop) {
                tb_cond_wait_ms(&pi->guard_cond, &pi->lock, TB_PLUGIN_GUARD_TICK_MS);
                if (pi->guard_stop)
                        break;
                int64_t now = tb_now_ms();
                size_t nc = 0, ng = 0;
                for (tb_plugin_hrun_t *hr = pi->active, *next; hr; hr = next) {
                        next = hr->next;
                        /* expiry_ms is the run's longest length, from its start. */
                        if (hr->stop_why == TB_PLUGIN_GUARD_NONE && hr->run.expiry_ms > 0 &&
                            now >= hr->started_ms + hr->run.expiry_ms + TB_PLUGIN_GUARD_MARGIN_MS &&
                            nc < TB_PLUGIN_GUARD_BATCH) {
                                tb_plugin_guard_note_stop(hr, TB_PLUGIN_GUARD_EXPIRY, now);
                                atomic_fetch_add(&hr->refs, 1);
                                cancel[nc++] = hr;
                        } else if (hr->stop_why != TB_PLUGIN_GUARD_NONE &&
                                   now >= hr->stop_at_ms + hr->grace_ms +
                                                  TB_PLUGIN_GUARD_MARGIN_MS &&
                                   ng < TB_PLUGIN_GUARD_BATCH) {
                                tb_plugin_host_unlink_locked(pi, hr);
                                hr->next = pi->abandoned;
                                pi->abandoned = hr;
                                gone[ng++] = hr;
                        }
                }
                pthread_mutex_unlock(&pi->lock);
                for (size_t i = 0; i < nc; i++) {
                        tb_info(pi->logname, "run %s reached its expiry and is still "
                                "running: asking plugin '%s' to stop it",
                                cancel[i]->run.run_id, pi->desc->name);
                        pi->desc->cancel(pi->state, &cancel[i]->run,
                                         "the run reached its expiry");
                        tb_plugin_host_hrun_unref(cancel[i]);
                }
                for (size_t i = 0; i < ng; i++)
                        tb_plugin_guard_abandon(pi, gone[i]);
                pthread_mutex_lock(&pi->lock);
        }
        pthread_mutex_unlock(&pi->lock);
        return NULL;
}

tb_err_t tb_plugin_set_stop_bound(tb_plugin_instance_t *pi, int64_t bound_ms,
                                  char *errstr, size_t errstr_size) {
        pthread_mutex_lock(&pi->lock);
        bool started = pi->guard_started;
        pi->stop_bound_ms = bound_ms < 0 ? 0 : bound_ms;
        pthread_mutex_unlock(&pi->lock);
        if (started)
                return TB_OK;
        int rc = pthread_create(&pi->guard, NULL, tb_plugin_guard_main, pi);
        if (rc)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "plugin '%s': cannot start its run guard thread: %s",
                                 pi->desc->name, strerror(rc));
        pthread_mutex_lock(&pi->lock);
        pi->guard_started = true;
        pthread_mutex_unlock(&pi->lock);
        return TB_OK;
}

void tb_plugin_guard_stop(tb_plugin_instance_t *pi) {
        pthread_mutex_lock(&pi->lock);
        bool started = pi->guard_started;
        pi->guard_stop = true;
        pthread_cond_broadcast(&pi->guard_cond);
        pthread_mutex_unlock(&pi->lock);
        if (started)
                pthread_join(pi->guard, NULL);
}
