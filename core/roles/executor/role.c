/**
 * @file executor/role.c
 * @brief The executor role's life: start (plugins, producer, consumer,
 *        threads) and stop, and the role descriptor. The threads and locks
 *        are described in executor_internal.h.
 */
#include "executor/executor_internal.h"

#include "http/metrics.h"
#include "serde/serde.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- small helpers ------------------------------------------------------------ */

/* Wait on \p c (monotonic clock) for at most \p ms. */
void tb_exec_cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms) {
        tb_cond_wait_ms(c, m, ms);
}

int64_t tb_exec_mono_ms(void) { return tb_mono_us() / 1000; }

const char *tb_exec_json_str(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

int tb_exec_cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- plugins ---------------------------------------------------------------------- */

static bool tb_exec_plugin_known(const char *stem) {
        static const char *const known[] = {"shell", "container", "ssh"};
        for (size_t i = 0; i < TB_ARRAY_LEN(known); i++)
                if (!strcmp(stem, known[i]))
                        return true;
        return false;
}

static tb_err_t tb_exec_plugin_load_one(tb_exec_t *ex, const char *path, char *errstr,
                                        size_t errstr_size) {
        char stem[64], kgrace[32];
        tb_plugin_stem(path, stem, sizeof(stem));
        const tb_plugin_conf_t *pc = tb_config_plugin(ex->conf, stem);
        size_t n = pc ? pc->kv_cnt : 0;
        tb_plugin_kv_t kv[n + 2];
        for (size_t i = 0; i < n; i++) {
                kv[i].key = pc->kv[i].key;
                kv[i].value = pc->kv[i].value;
        }
        /* executor.kill_grace and executor.allow_root are the shell plugin's
         * kill_grace and allow_root unless its own group sets them. */
        if (!strcmp(stem, "shell")) {
                if (!tb_plugin_conf_get(pc, "kill_grace")) {
                        snprintf(kgrace, sizeof(kgrace), "%" PRId64 "ms",
                                 ex->conf->exec_kill_grace_ms);
                        kv[n++] = (tb_plugin_kv_t){"kill_grace", kgrace};
                }
                if (!tb_plugin_conf_get(pc, "allow_root"))
                        kv[n++] = (tb_plugin_kv_t){"allow_root",
                                                   ex->conf->exec_allow_root ? "true" : "false"};
        }
        if (ex->plugin_cnt == TB_EXEC_MAX_PLUGINS)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "executor.plugin_paths: more than %d plugins",
                                 TB_EXEC_MAX_PLUGINS);
        tb_plugin_sink_t sink = {
                .opaque = ex,
                .output = tb_exec_sink_output,
                .finished = tb_exec_sink_finished,
        };
        tb_plugin_instance_t *pi = NULL;
        tb_err_t err = tb_plugin_load(path, kv, n, &sink, &pi, errstr, errstr_size);
        if (err)
                return err;
        /* The executor ends a run at its expiry and after a cancel even when
         * the plugin does not (executor.kill_grace bounds the grace). */
        if ((err = tb_plugin_set_stop_bound(pi, ex->conf->exec_kill_grace_ms, errstr,
                                            errstr_size))) {
                tb_plugin_unload(pi, 0);
                return err;
        }
        const char *name = tb_plugin_name(pi);
        for (size_t i = 0; i < ex->plugin_cnt; i++) {
                if (!strcmp(ex->plugins[i].name, name)) {
                        tb_plugin_unload(pi, 0);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "executor.plugin_paths: two plugins are named "
                                         "'%s' (the second is %s); load each executor once",
                                         name, path);
                }
        }
        tb_exec_plugin_t *p = &ex->plugins[ex->plugin_cnt++];
        snprintf(p->name, sizeof(p->name), "%s", name);
        p->pi = pi;
        tb_info(TB_EXEC_SUB, "loaded executor plugin '%s' %s from %s", name,
                tb_plugin_version(pi), path);
        return TB_OK;
}

/* Every *.so of \p dir (sorted); with \p known_only, only known executors. */
static tb_err_t tb_exec_plugin_load_dir(tb_exec_t *ex, const char *dir, bool known_only,
                                        char *errstr, size_t errstr_size) {
        DIR *d = opendir(dir);
        if (!d)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "executor plugin directory %s: %s", dir, strerror(errno));
        char *names[256];
        size_t cnt = 0;
        struct dirent *de;
        while ((de = readdir(d)) && cnt < TB_ARRAY_LEN(names)) {
                size_t len = strlen(de->d_name);
                if (len < 4 || strcmp(de->d_name + len - 3, ".so"))
                        continue;
                char stem[64];
                tb_plugin_stem(de->d_name, stem, sizeof(stem));
                if (known_only && !tb_exec_plugin_known(stem))
                        continue;
                names[cnt++] = strdup(de->d_name);
        }
        closedir(d);
        qsort(names, cnt, sizeof(names[0]), tb_exec_cmp_str);
        tb_err_t err = TB_OK;
        for (size_t i = 0; i < cnt; i++) {
                char path[4096];
                if (!err && names[i]) {
                        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
                        err = tb_exec_plugin_load_one(ex, path, errstr, errstr_size);
                        /* Unconfigured, every built plugin is tried: one whose
                         * engine is missing here (no container runtime) must
                         * not keep the others from running. */
                        if (err && known_only) {
                                tb_warn(TB_EXEC_SUB, "skipping executor plugin %s: %s", path,
                                        errstr);
                                err = TB_OK;
                        }
                }
                free(names[i]);
        }
        return err;
}

static tb_err_t tb_exec_plugins_load(tb_exec_t *ex, char *errstr, size_t errstr_size) {
        tb_err_t err = TB_OK;
        const tb_config_t *conf = ex->conf;
        if (conf->exec_plugin_path_cnt == 0) {
                err = tb_exec_plugin_load_dir(ex, tb_plugin_default_dir(), true, errstr,
                                              errstr_size);
        } else {
                for (size_t i = 0; !err && i < conf->exec_plugin_path_cnt; i++) {
                        const char *p = conf->exec_plugin_paths[i];
                        struct stat sb;
                        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                                err = tb_exec_plugin_load_dir(ex, p, false, errstr, errstr_size);
                        else
                                err = tb_exec_plugin_load_one(ex, p, errstr, errstr_size);
                }
        }
        if (!err && ex->plugin_cnt == 0)
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "no executor plugin found: %s has no shell.so, container.so "
                                "or ssh.so; set executor.plugin_paths",
                                conf->exec_plugin_path_cnt ? "executor.plugin_paths"
                                                           : tb_plugin_default_dir());
        return err;
}

tb_exec_plugin_t *tb_exec_plugin_find(tb_exec_t *ex, const char *name) {
        for (size_t i = 0; i < ex->plugin_cnt; i++)
                if (!strcmp(ex->plugins[i].name, name))
                        return &ex->plugins[i];
        return NULL;
}

/* Wait until no run is active or \p ms passed. @returns the active count. */
static size_t tb_exec_wait_idle(tb_exec_t *ex, int64_t ms) {
        int64_t until = tb_exec_mono_ms() + ms;
        pthread_mutex_lock(&ex->lock);
        while (ex->n_active > 0) {
                int64_t left = until - tb_exec_mono_ms();
                if (left <= 0)
                        break;
                tb_cond_wait_ms(&ex->idle_cond, &ex->lock, left);
        }
        size_t n = ex->n_active;
        pthread_mutex_unlock(&ex->lock);
        return n;
}

static void tb_exec_destroy(tb_exec_t *ex) {
        atomic_store(&ex->stop_consume, true);
        if (ex->consumer_started)
                pthread_join(ex->consumer_thr, NULL);
        tb_bus_consumer_destroy(ex->consumer, 10000);
        if (ex->producer)
                tb_exec_release_pending(ex);

        size_t left = tb_exec_wait_idle(ex, ex->conf->exec_grace_ms);
        if (left) {
                tb_info(TB_EXEC_SUB, "%zu run(s) still running after executor.grace (%" PRId64
                        " ms): cancelling them", left, ex->conf->exec_grace_ms);
                tb_exec_run_t **runs = NULL;
                size_t n = tb_exec_runs_snapshot(
                        ex, (1u << TB_EXEC_STARTING) | (1u << TB_EXEC_RUNNING), &runs);
                for (size_t i = 0; i < n; i++)
                        tb_exec_run_cancel(ex, runs[i], "executor shutting down", true);
                tb_exec_runs_snapshot_free(runs, n);
                left = tb_exec_wait_idle(ex, ex->conf->exec_kill_grace_ms + 10000);
        }
        /* The starters end once their queue is empty (what is left there was
         * cancelled above and finishes without starting): no start() may
         * reach a plugin being unloaded. */
        pthread_mutex_lock(&ex->lock);
        ex->stop_starts = true;
        pthread_cond_broadcast(&ex->start_cond);
        pthread_mutex_unlock(&ex->lock);
        for (size_t i = 0; i < ex->starters_started; i++)
                pthread_join(ex->starter_thr[i], NULL);
        /* Unloading cancels what is left and reports runs a plugin never
         * finished as infra errors, through the finishers still running. */
        for (size_t i = 0; i < ex->plugin_cnt; i++)
                tb_plugin_unload(ex->plugins[i].pi, 5000);
        if (tb_exec_wait_idle(ex, 15000))
                tb_error(TB_EXEC_SUB, "runs still unreported at exit: the reaper of another "
                         "executor will report them LOST");

        pthread_mutex_lock(&ex->lock);
        atomic_store(&ex->stop_all, true);
        pthread_cond_broadcast(&ex->done_cond);
        pthread_cond_broadcast(&ex->timer_cond);
        pthread_cond_broadcast(&ex->lease_cond);
        pthread_mutex_unlock(&ex->lock);
        for (size_t i = 0; i < ex->finishers_started; i++)
                pthread_join(ex->finisher_thr[i], NULL);
        if (ex->timer_started)
                pthread_join(ex->timer_thr, NULL);
        if (ex->lease_started)
                pthread_join(ex->lease_thr, NULL);
        while (ex->start_head) { /* only if a starter could not be created */
                tb_exec_run_t *x = ex->start_head;
                ex->start_head = x->snext;
                tb_exec_run_unref(x);
        }
        while (ex->runs) {
                tb_exec_run_t *x = ex->runs;
                ex->runs = x->next;
                tb_exec_run_unref(x);
        }
        if (ex->log_producer) {
                /* the gaps still unmarked get their marker now if Kafka takes it */
                tb_exec_log_loss_tick(ex, true);
                tb_bus_rprod_destroy(ex->log_producer, 10000);
        }
        tb_exec_log_loss_free(ex);
        pthread_mutex_destroy(&ex->loss_lock);
        tb_bus_rprod_destroy(ex->producer, 10000);
        pthread_mutex_destroy(&ex->lock);
        pthread_cond_destroy(&ex->done_cond);
        pthread_cond_destroy(&ex->timer_cond);
        pthread_cond_destroy(&ex->lease_cond);
        pthread_cond_destroy(&ex->idle_cond);
        pthread_cond_destroy(&ex->start_cond);
        free(ex);
}

/* ---- the role ----------------------------------------------------------------------- */

static void tb_exec_describe_metrics(void) {
        tb_metrics_describe("taskbus_executor_runs_started_total", "counter",
                            "Runs started by this executor's plugins.");
        tb_metrics_describe("taskbus_executor_runs_finished_total", "counter",
                            "Runs finished, by final status.");
        tb_metrics_describe("taskbus_executor_duplicates_total", "counter",
                            "RunRequests dropped because their run id was claimed before.");
        tb_metrics_describe("taskbus_executor_start_lag_seconds", "histogram",
                            "Process start time minus the run's nominal time.");
        tb_metrics_describe("taskbus_executor_running", "gauge",
                            "Runs claimed by this executor and not finished.");
        tb_metrics_describe("taskbus_executor_lost_total", "counter",
                            "Runs declared LOST by this executor's reaper.");
        tb_metrics_describe("taskbus_executor_dlq_total", "counter",
                            "Records sent to runs-dlq.");
        tb_metrics_describe("taskbus_executor_log_chunks_dropped_total", "counter",
                            "Log chunks the producer refused (counted as lost too).");
        tb_metrics_describe("taskbus_executor_log_chunks_lost_total", "counter",
                            "Log chunks Kafka surely did not write (refused, or not sent within "
                            "executor.log_delivery_timeout); the executor marks their gap.");
        tb_metrics_describe("taskbus_executor_log_chunks_unconfirmed_total", "counter",
                            "Log chunks whose delivery failed while in flight: Kafka may have "
                            "written them; if not, readers show the gap.");
        tb_metrics_describe("taskbus_executor_log_bytes_lost_total", "counter",
                            "Output bytes of the lost log chunks.");
        tb_metrics_describe("taskbus_executor_log_gaps_pending", "gauge",
                            "Lost log chunk ranges whose marker is not produced yet.");
}

static tb_err_t tb_exec_role_start(tb_ctx_t *ctx, void **state, char *errstr,
                                   size_t errstr_size) {
        tb_err_t err;
        char group[300];
        unsigned char rnd[4];
        tb_exec_t *ex = calloc(1, sizeof(*ex));
        if (!ex)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        ex->ctx = ctx;
        ex->conf = ctx->conf;
        pthread_mutex_init(&ex->lock, NULL);
        pthread_mutex_init(&ex->loss_lock, NULL);
        tb_cond_init_mono(&ex->done_cond);
        tb_cond_init_mono(&ex->timer_cond);
        tb_cond_init_mono(&ex->lease_cond);
        tb_cond_init_mono(&ex->idle_cond);
        pthread_cond_init(&ex->start_cond, NULL);
        atomic_init(&ex->stop_consume, false);
        atomic_init(&ex->stop_all, false);
        /* The random part keeps a restarted process with the same host name
         * and pid (containers) from renewing its predecessor's claims. */
        tb_random_bytes(rnd, sizeof(rnd));
        snprintf(ex->id, sizeof(ex->id), "%s-%02x%02x%02x%02x", ctx->instance, rnd[0], rnd[1],
                 rnd[2], rnd[3]);
        tb_exec_describe_metrics();
        tb_metrics_set("taskbus_executor_running", NULL, 0);

        if ((err = tb_serde_init(errstr, errstr_size)) ||
            (err = tb_bus_rprod_new(ex->conf, NULL, "executor results", &ex->producer, errstr,
                                    errstr_size)) ||
            (err = tb_bus_rprod_new(
                     ex->conf,
                     &(tb_producer_opts_t){.message_timeout_ms =
                                                   (int)ex->conf->exec_log_delivery_timeout_ms,
                                           .dr_msg_cb = tb_exec_log_dr},
                     "executor logs", &ex->log_producer, errstr, errstr_size)) ||
            (err = tb_exec_plugins_load(ex, errstr, errstr_size)))
                goto fail;
        snprintf(group, sizeof(group), "%sexecutor", ex->conf->topic_prefix);
        const tb_topic_t topics[] = {TB_TOPIC_RUNS};
        const char *inst = tb_bus_prop(ex->conf, "group.instance.id");
        tb_consumer_opts_t o = {
                .group_id = group,
                .read_committed = true,
                .auto_commit = false,
                .offset_reset = "earliest",
                .rebalance_cb = tb_exec_rebalance_cb,
                .opaque = ex,
                .session_timeout_ms = 10000,
                /* static: a restart (even after SIGKILL) is the same member and
                 * takes its partitions back at once, instead of after the
                 * session timeout; a process stopped for good gives them up
                 * when its session times out (librdkafka does not leave a
                 * group as a static member) */
                .instance_id = inst && *inst ? inst : ctx->instance,
        };
        if ((err = tb_bus_consumer_new(ex->conf, &o, topics, 1, &ex->consumer, errstr,
                                       errstr_size)))
                goto fail;

        for (; ex->finishers_started < TB_EXEC_FINISHERS; ex->finishers_started++)
                if (pthread_create(&ex->finisher_thr[ex->finishers_started], NULL,
                                   tb_exec_finisher_main, ex))
                        goto thread_fail;
        for (; ex->starters_started < TB_EXEC_STARTERS; ex->starters_started++)
                if (pthread_create(&ex->starter_thr[ex->starters_started], NULL,
                                   tb_exec_starter_main, ex))
                        goto thread_fail;
        if (pthread_create(&ex->timer_thr, NULL, tb_exec_timer_main, ex))
                goto thread_fail;
        ex->timer_started = true;
        if (pthread_create(&ex->lease_thr, NULL, tb_exec_lease_main, ex))
                goto thread_fail;
        ex->lease_started = true;
        if (pthread_create(&ex->consumer_thr, NULL, tb_exec_consumer_main, ex))
                goto thread_fail;
        ex->consumer_started = true;
        tb_info(TB_EXEC_SUB, "executor %s consuming %sruns (group %s): %zu plugin(s), up to "
                "%" PRId64 " concurrent runs, lease %" PRId64 " ms", ex->id,
                ex->conf->topic_prefix, group, ex->plugin_cnt, ex->conf->exec_max_concurrent,
                ex->conf->exec_lease_ms);
        *state = ex;
        return TB_OK;
thread_fail:
        err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                        "executor: cannot start a thread: %s", strerror(errno));
fail:
        tb_exec_destroy(ex);
        return err;
}

static void tb_exec_role_stop(void *state) {
        if (state)
                tb_exec_destroy(state);
}

const tb_role_t tb_role_executor = {
        .name = "executor",
        .description = "claims and runs RunRequests through executor plugins",
        .start = tb_exec_role_start,
        .stop = tb_exec_role_stop,
};
