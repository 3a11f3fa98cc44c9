/**
 * @file hello.c
 * @brief An example taskbus executor plugin, built out of tree with nothing
 *        but the public header (see Makefile and docs/plugin-guide.md).
 *
 * Each run waits for the executor option `delay` (milliseconds, default 0)
 * on the plugin's one worker thread, then prints "<greeting>, <task id>!"
 * and succeeds. A cancelled run ends at once with status cancelled. It shows
 * the parts every real plugin has: a config key table, state created in
 * init(), asynchronous completion from a plugin thread, cancel() racing with
 * completion, and a destroy() that joins its thread.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread_condattr_setclock */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <taskbus/plugin.h>

/* A run waiting on the worker. */
typedef struct hello_run {
        const tb_plugin_run_t *run; /* host-owned until we call finished() */
        struct timespec due;        /* CLOCK_MONOTONIC */
        char cancel_reason[200];
        int cancelled;
        struct hello_run *next;
} hello_run_t;

typedef struct hello {
        const tb_plugin_host_t *host;
        char greeting[128];
        pthread_mutex_t lock;
        pthread_cond_t cond;
        hello_run_t *runs;
        int stopping;
        pthread_t worker;
} hello_t;

static const tb_plugin_config_key_t hello_keys[] = {
        {"greeting", "what to say to each task", "hello", 0, TB_PLUGIN_CONF_STRING},
        {0},
};

static int64_t hello_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int hello_before(const struct timespec *a, const struct timespec *b) {
        return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Report one run; called without our lock held, as the ABI requires. */
static void hello_finish(hello_t *h, hello_run_t *r) {
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        char line[512], why[256];
        res.started_ms = res.finished_ms = hello_now_ms();
        if (r->cancelled) {
                snprintf(why, sizeof(why), "cancelled: %s", r->cancel_reason);
                res.status = TB_PLUGIN_RUN_CANCELLED;
                res.exit_code = -1;
                res.error = why;
        } else {
                int n = snprintf(line, sizeof(line), "%s, %s! (run %s, attempt %d)\n",
                                 h->greeting, r->run->task_id, r->run->run_id,
                                 (int)r->run->attempt);
                h->host->output(h->host, r->run, TB_PLUGIN_STDOUT, line, (size_t)n);
                res.status = TB_PLUGIN_RUN_SUCCEEDED;
        }
        h->host->finished(h->host, r->run, &res);
        free(r);
}

static void *hello_worker(void *arg) {
        hello_t *h = arg;
        pthread_mutex_lock(&h->lock);
        for (;;) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                /* Take the first run that is due or cancelled. */
                hello_run_t **pp, *ready = NULL, *earliest = NULL;
                for (pp = &h->runs; *pp; pp = &(*pp)->next) {
                        hello_run_t *r = *pp;
                        if (r->cancelled || !hello_before(&now, &r->due)) {
                                *pp = r->next;
                                ready = r;
                                break;
                        }
                        if (!earliest || hello_before(&r->due, &earliest->due))
                                earliest = r;
                }
                if (ready) {
                        pthread_mutex_unlock(&h->lock);
                        hello_finish(h, ready);
                        pthread_mutex_lock(&h->lock);
                        continue;
                }
                if (h->stopping && !h->runs)
                        break;
                if (earliest)
                        pthread_cond_timedwait(&h->cond, &h->lock, &earliest->due);
                else
                        pthread_cond_wait(&h->cond, &h->lock);
        }
        pthread_mutex_unlock(&h->lock);
        return NULL;
}

static int hello_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                      size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        hello_t *h = calloc(1, sizeof(*h));
        if (!h) {
                snprintf(errbuf, errbuf_size, "out of memory");
                return TB_PLUGIN_ERROR;
        }
        h->host = host;
        snprintf(h->greeting, sizeof(h->greeting), "hello");
        for (size_t i = 0; i < n_config; i++)
                if (!strcmp(config[i].key, "greeting"))
                        snprintf(h->greeting, sizeof(h->greeting), "%s", config[i].value);
        pthread_mutex_init(&h->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&h->cond, &ca);
        pthread_condattr_destroy(&ca);
        int e = pthread_create(&h->worker, NULL, hello_worker, h);
        if (e) {
                snprintf(errbuf, errbuf_size, "cannot start worker thread: %s", strerror(e));
                pthread_cond_destroy(&h->cond);
                pthread_mutex_destroy(&h->lock);
                free(h);
                return TB_PLUGIN_ERROR;
        }
        host->log(host, TB_PLUGIN_LOG_INFO, "hello plugin ready, greeting '%s'",
                  h->greeting);
        *state = h;
        return TB_PLUGIN_OK;
}

static int hello_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                       size_t errbuf_size) {
        hello_t *h = state;
        long delay = 0;
        for (size_t i = 0; i < run->n_options; i++) {
                const tb_plugin_kv_t *o = &run->options[i];
                char *end;
                if (strcmp(o->key, "delay") != 0) {
                        /* Bad options are infrastructure errors, not task failures. */
                        snprintf(errbuf, errbuf_size, "unknown executor option '%s'; "
                                 "the hello plugin accepts: delay", o->key);
                        return TB_PLUGIN_ERROR;
                }
                errno = 0;
                delay = strtol(o->value, &end, 10);
                if (errno || end == o->value || *end || delay < 0) {
                        snprintf(errbuf, errbuf_size, "executor option delay must be "
                                 "milliseconds >= 0, got '%s'", o->value);
                        return TB_PLUGIN_ERROR;
                }
        }
        hello_run_t *r = calloc(1, sizeof(*r));
        if (!r) {
                snprintf(errbuf, errbuf_size, "out of memory");
                return TB_PLUGIN_ERROR;
        }
        r->run = run;
        clock_gettime(CLOCK_MONOTONIC, &r->due);
        r->due.tv_sec += delay / 1000;
        r->due.tv_nsec += (delay % 1000) * 1000000L;
        if (r->due.tv_nsec >= 1000000000L) {
                r->due.tv_sec++;
                r->due.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&h->lock);
        r->next = h->runs;
        h->runs = r;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        return TB_PLUGIN_OK;
}

static int hello_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        hello_t *h = state;
        int rc = TB_PLUGIN_NOT_FOUND; /* already finished: the race is normal */
        pthread_mutex_lock(&h->lock);
        for (hello_run_t *r = h->runs; r; r = r->next) {
                if (r->run == run) {
                        r->cancelled = 1;
                        snprintf(r->cancel_reason, sizeof(r->cancel_reason), "%s", reason);
                        pthread_cond_signal(&h->cond);
                        rc = TB_PLUGIN_OK;
                        break;
                }
        }
        pthread_mutex_unlock(&h->lock);
        return rc;
}

static void hello_destroy(void *state) {
        hello_t *h = state;
        pthread_mutex_lock(&h->lock);
        h->stopping = 1;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->worker, NULL);
        pthread_cond_destroy(&h->cond);
        pthread_mutex_destroy(&h->lock);
        free(h);
}

static const tb_plugin_t hello_plugin = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "hello",
        .version = "1.0.0",
        .description = "greets every task (example plugin)",
        .config_keys = hello_keys,
        .init = hello_init,
        .start = hello_start,
        .cancel = hello_cancel,
        .destroy = hello_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &hello_plugin; }
