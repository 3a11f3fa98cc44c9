/**
 * @file tbt_collect.h
 * @brief A tb_plugin_sink_t for tests: collects each run's output per
 *        stream, heartbeats and results, and lets the test await them.
 *        Header-only so each test binary gets its own copy.
 */
#ifndef TBT_COLLECT_H
#define TBT_COLLECT_H

#include "executor/plugin_host.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define TBT_MAX_RUNS 1024

/** What one run reported. */
typedef struct tbt_runlog {
        tb_buf_t out[3];          /* [TB_PLUGIN_STDOUT], [TB_PLUGIN_STDERR] */
        tb_buf_t all;             /* both streams, in arrival order */
        int chunks;
        size_t max_chunk;
        int64_t first_output_us;  /* tb_mono_us() of the first chunk */
        int heartbeats;
        int finished;             /* how many finished() calls */
        int64_t finished_us;
        tb_plugin_result_t res;
        char error[512];
} tbt_runlog_t;

typedef struct tbt_collect {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        tbt_runlog_t runs[TBT_MAX_RUNS];
        int total_finished;
} tbt_collect_t;

/* Runs are identified by the run_opaque pointer: (void *)(intptr_t)index. */
static inline tbt_runlog_t *tbt_log_of(tbt_collect_t *c, void *run_opaque) {
        return &c->runs[(intptr_t)run_opaque];
}

static inline void tbt_on_output(void *opaque, void *run_opaque, int stream,
                                 const void *data, size_t len) {
        tbt_collect_t *c = opaque;
        pthread_mutex_lock(&c->lock);
        tbt_runlog_t *l = tbt_log_of(c, run_opaque);
        if (!l->chunks)
                l->first_output_us = tb_mono_us();
        l->chunks++;
        if (len > l->max_chunk)
                l->max_chunk = len;
        tb_buf_append(&l->out[stream], data, len);
        tb_buf_append(&l->all, data, len);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
}

static inline void tbt_on_heartbeat(void *opaque, void *run_opaque) {
        tbt_collect_t *c = opaque;
        pthread_mutex_lock(&c->lock);
        tbt_log_of(c, run_opaque)->heartbeats++;
        pthread_mutex_unlock(&c->lock);
}

static inline void tbt_on_finished(void *opaque, void *run_opaque,
                                   const tb_plugin_result_t *res) {
        tbt_collect_t *c = opaque;
        pthread_mutex_lock(&c->lock);
        tbt_runlog_t *l = tbt_log_of(c, run_opaque);
        l->finished++;
        l->finished_us = tb_mono_us();
        l->res = *res;
        snprintf(l->error, sizeof(l->error), "%s", res->error ? res->error : "");
        l->res.error = l->error;
        c->total_finished++;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
}

static inline tbt_collect_t *tbt_collect_new(tb_plugin_sink_t *sink) {
        tbt_collect_t *c = calloc(1, sizeof(*c));
        pthread_mutex_init(&c->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->cond, &ca);
        pthread_condattr_destroy(&ca);
        *sink = (tb_plugin_sink_t){.opaque = c,
                                   .output = tbt_on_output,
                                   .heartbeat = tbt_on_heartbeat,
                                   .finished = tbt_on_finished};
        return c;
}

static inline void tbt_collect_free(tbt_collect_t *c) {
        for (int i = 0; i < TBT_MAX_RUNS; i++) {
                for (int s = 0; s < 3; s++)
                        tb_buf_free(&c->runs[i].out[s]);
                tb_buf_free(&c->runs[i].all);
        }
        free(c);
}

/* Wait until \p pred holds (checked under the lock) or \p timeout_ms passes. */
static inline bool tbt_collect_wait(tbt_collect_t *c, bool (*pred)(tbt_collect_t *, void *),
                                    void *arg, int timeout_ms) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&c->lock);
        bool ok;
        while (!(ok = pred(c, arg)))
                if (pthread_cond_timedwait(&c->cond, &c->lock, &until) != 0) {
                        ok = pred(c, arg);
                        break;
                }
        pthread_mutex_unlock(&c->lock);
        return ok;
}

static inline bool tbt_pred_finished(tbt_collect_t *c, void *arg) {
        return c->runs[(intptr_t)arg].finished > 0;
}

static inline bool tbt_pred_output(tbt_collect_t *c, void *arg) {
        return c->runs[(intptr_t)arg].chunks > 0;
}

static inline bool tbt_pred_total(tbt_collect_t *c, void *arg) {
        return c->total_finished >= (int)(intptr_t)arg;
}

/** Wait for run \p idx's result. */
static inline bool tbt_wait_finished(tbt_collect_t *c, int idx, int timeout_ms) {
        return tbt_collect_wait(c, tbt_pred_finished, (void *)(intptr_t)idx, timeout_ms);
}

/** Wait for run \p idx's first output chunk. */
static inline bool tbt_wait_output(tbt_collect_t *c, int idx, int timeout_ms) {
        return tbt_collect_wait(c, tbt_pred_output, (void *)(intptr_t)idx, timeout_ms);
}

/** A NUL-terminated copy of run \p idx's stream (caller frees). */
static inline char *tbt_stream(tbt_collect_t *c, int idx, int stream) {
        pthread_mutex_lock(&c->lock);
        tb_buf_t *b = &c->runs[idx].out[stream];
        char *s = malloc(b->len + 1);
        if (b->len)
                memcpy(s, b->data, b->len);
        s[b->len] = '\0';
        pthread_mutex_unlock(&c->lock);
        return s;
}

#endif
