/**
 * @file projector/projector.c
 * @brief The projector role: a pgsink (bus/pgsink.h) on task-events, runs and
 *        run-results and on the other regions' copies of them, applying each
 *        batch with the library's projection (projection/projection.h). The
 *        sink owns the consumer, the batches, the stored offsets and the
 *        retries; the projection owns what a record does to PostgreSQL.
 */
#include "projector/projector.h"

#include "bus/bus.h"
#include "bus/pgsink.h"
#include "daemon.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"
#include "store/store.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_PROJ_SUB "projector"

/* ---- the role ------------------------------------------------------------------ */

typedef struct tb_proj {
        tb_projection_batch_t batch; /**< the sink's batch state */
        tb_pgsink_t *sink;
} tb_proj_t;

/** Stop and free the role (also of a half-started one). */
static void tb_proj_stop(void *state) {
        tb_proj_t *pj = state;
        if (!pj)
                return;
        tb_pgsink_stop(pj->sink);
        tb_buf_free(&pj->batch.notify);
        free(pj);
}

static tb_err_t tb_proj_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        const tb_config_t *conf = ctx->conf;
        tb_err_t err;
        tb_proj_t *pj = calloc(1, sizeof(*pj));
        size_t remote_cnt = TB_ARRAY_LEN(tb_projection_topics) * conf->repl_remote_region_cnt;
        char(*remote)[300] = calloc(remote_cnt ? remote_cnt : 1, sizeof(*remote));
        const char **remote_names = calloc(remote_cnt ? remote_cnt : 1, sizeof(*remote_names));
        if (!pj || !remote || !remote_names) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "projector: out of memory");
                goto fail;
        }
        pj->batch.conf = conf;
        tb_metrics_describe("taskbus_projector_records_total", "counter",
                            "Records applied to PostgreSQL by the projector");
        tb_metrics_describe("taskbus_projector_malformed_total", "counter",
                            "Records the projector could not decode (skipped)");
        tb_metrics_describe("taskbus_projector_failures_total", "counter",
                            "Projector batches that failed and were retried");
        tb_metrics_describe("taskbus_projector_batch_seconds", "histogram",
                            "Time to apply one batch in PostgreSQL");
        tb_metrics_describe("taskbus_replication_lag_seconds", "histogram",
                            "Age of a record copied from another region (by region and topic) "
                            "when the projector applied it: MirrorMaker 2 plus projection lag");
        if ((err = tb_serde_init(errstr, errstr_size)))
                goto fail;
        /* the local topics, and the other regions' copies of them */
        tb_topic_t topics[TB_ARRAY_LEN(tb_projection_topics)];
        size_t k = 0;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_projection_topics); i++) {
                topics[i] = tb_projection_topics[i].topic;
                for (size_t r = 0; r < conf->repl_remote_region_cnt; r++, k++)
                        remote_names[k] = tb_repl_topic_name(conf, conf->repl_remote_regions[r],
                                                             topics[i], remote[k],
                                                             sizeof(remote[k]));
        }
        tb_pgsink_conf_t c = tb_projection_sink_conf(&pj->batch, TB_PROJECTION_CONSUMER);
        c.conf = conf;
        c.store = ctx->store;
        c.stopping = &ctx->stopping;
        c.topics = topics;
        c.topic_cnt = TB_ARRAY_LEN(topics);
        c.topic_names = remote_names;
        c.topic_name_cnt = remote_cnt;
        c.batch_max = (size_t)conf->proj_batch_max;
        c.batch_wait_us = conf->proj_batch_linger_ms * 1000;
        c.metric_failures = "taskbus_projector_failures_total";
        c.metric_batch_seconds = "taskbus_projector_batch_seconds";
        if ((err = tb_pgsink_start(&c, &pj->sink, errstr, errstr_size)))
                goto fail;
        free(remote);
        free(remote_names);
        *state = pj;
        return TB_OK;
fail:
        free(remote);
        free(remote_names);
        tb_proj_stop(pj);
        return err;
}

const tb_role_t tb_role_projector = {
        .name = "projector",
        .description = "applies task-events, runs and run-results to PostgreSQL exactly once "
                       "(offsets stored there)",
        .start = tb_proj_start,
        .stop = tb_proj_stop,
};
