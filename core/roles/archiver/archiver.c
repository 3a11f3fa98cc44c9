/**
 * @file archiver/archiver.c
 * @brief The archiver role: copies run output from run-logs into PostgreSQL
 *        (run_logs) exactly once, and deletes what has expired: run output
 *        past its log retention and run history past
 *        archiver.history_retention.
 *
 * Copy: a pgsink (bus/pgsink.h) on run-logs (key: run id, so one run's
 * chunks are in one partition, in order). A batch of chunks is inserted in
 * ONE transaction together with the consumed offsets (consumer_offsets,
 * consumer "archiver"); Kafka's own offsets are not used, so a crash or a
 * rebalance neither loses nor duplicates a chunk (rows are also keyed
 * (run_id, seq)).
 *
 * Expiry: the projector sets runs.log_expires_at (the run's end + its log
 * retention) when a run's final status arrives. A chunk copied after that
 * takes it at once; chunks copied while the run went on (NULL expires_at)
 * get it from the sweep below.
 *
 * Sweep (about every second, between batches): each step is a sequence of
 * short statements touching at most archiver.batch rows each
 * (`... WHERE ctid IN (SELECT ctid ... LIMIT n)`), so no lock is held for
 * long and the copy goes on between them:
 *  1. settle: run_logs rows without expiry whose run now has one;
 *  2. expire: delete run_logs rows past expires_at, and record it in
 *     runs.log_purged_at (runs.log_expires_at stays: the API answers 410
 *     with the time the log expired);
 *  3. history: delete runs (and any output left) older than
 *     archiver.history_retention.
 *
 * @locality the sink's thread copies and, between batches, runs the sweeps.
 */
#include "bus/bus.h"
#include "bus/pgsink.h"
#include "daemon.h"
#include "http/metrics.h"
#include "serde/serde.h"
#include "store/runs.h"
#include "store/store.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_ARCH_SUB "archiver"
/** The consumer name in consumer_offsets (the group id is prefix + this). */
#define TB_ARCH_CONSUMER "archiver"
/** Most chunks per PostgreSQL transaction (archiver.batch caps it too). */
#define TB_ARCH_BATCH_MAX 500
/** How long a batch waits for more chunks once it has one: the copy delay
 *  of live output is bounded by it. */
#define TB_ARCH_BATCH_WAIT_US 20000
/** Time between sweeps. */
#define TB_ARCH_SWEEP_US 1000000
/** Most statements of one sweep step, so that a big backlog of expired rows
 *  does not hold up the copy (the next sweep goes on). */
#define TB_ARCH_SWEEP_STATEMENTS 200

typedef struct tb_arch {
        tb_ctx_t *ctx;
        tb_pgsink_t *sink;
        tb_buf_t hex;          /**< a chunk's data as bytea text, reused */
        size_t copied;         /**< chunks of the batch being applied */
        int64_t next_sweep_us;
} tb_arch_t;

/* ---- copy ------------------------------------------------------------------------ */

/** "\x" + hex of \p len bytes: bytea's text input form. */
static tb_err_t tb_arch_hex(tb_buf_t *out, const unsigned char *data, size_t len) {
        static const char hex[] = "0123456789abcdef";
        out->len = 0;
        if (tb_buf_append(out, "\\x", 2))
                return TB_ERR_NOMEM;
        for (size_t i = 0; i < len; i++) {
                char two[2] = {hex[data[i] >> 4], hex[data[i] & 15]};
                if (tb_buf_append(out, two, 2))
                        return TB_ERR_NOMEM;
        }
        return tb_buf_append(out, "", 1); /* NUL-terminated, not counted below */
}

static tb_err_t tb_arch_insert(PGconn *conn, const json_t *c, tb_buf_t *hex, char *errstr,
                               size_t errstr_size) {
        const json_t *data = json_object_get(c, "data");
        const char *stream = json_string_value(json_object_get(c, "stream"));
        const char *run_id = json_string_value(json_object_get(c, "run_id"));
        char seq[32], at[32], lstream[16];
        size_t i = 0;
        if (!run_id || !*run_id || !stream)
                return TB_OK;
        for (; stream[i] && i + 1 < sizeof(lstream); i++)
                lstream[i] = (char)(stream[i] >= 'A' && stream[i] <= 'Z' ? stream[i] + 32
                                                                          : stream[i]);
        lstream[i] = '\0';
        tb_snprintf(seq, sizeof(seq), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(c, "seq")));
        tb_snprintf(at, sizeof(at), "%" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(c, "at")));
        if (tb_arch_hex(hex, (const unsigned char *)json_string_value(data),
                        json_string_length(data)))
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "archiver: out of memory");
        const char *p[] = {run_id, seq, lstream, at, hex->data,
                           json_is_true(json_object_get(c, "eof")) ? "true" : "false"};
        return tb_store_runs_log_insert(conn, p, errstr, errstr_size);
}

static void tb_arch_batch_begin(void *opaque) {
        tb_arch_t *ar = opaque;
        ar->copied = 0;
}

static tb_pgsink_verdict_t tb_arch_apply_record(PGconn *conn, const rd_kafka_message_t *m,
                                                void *opaque, char *errstr,
                                                size_t errstr_size) {
        tb_arch_t *ar = opaque;
        json_t *v = NULL;
        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_LOG_CHUNK, NULL, &v, errstr,
                            errstr_size) != TB_OK)
                return TB_PGSINK_PERMANENT; /* quarantined */
        tb_err_t err = tb_arch_insert(conn, v, &ar->hex, errstr, errstr_size);
        json_decref(v);
        if (!err)
                ar->copied++;
        return tb_pgsink_verdict_of(err);
}

static void tb_arch_batch_committed(void *opaque) {
        tb_arch_t *ar = opaque;
        tb_metrics_add("taskbus_archiver_chunks_total", NULL, (double)ar->copied);
}

static const tb_pgsink_ops_t tb_arch_sink_ops = {
        .begin = tb_arch_batch_begin,
        .apply = tb_arch_apply_record,
        .committed = tb_arch_batch_committed,
};

/* ---- sweep ---------------------------------------------------------------------- */

static void tb_arch_sweep(tb_arch_t *ar) {
        const tb_config_t *conf = ar->ctx->conf;
        char err[1024];
        int64_t n = 0, m = 0;
        int batches = 0;
        PGconn *conn = tb_store_acquire_timeout(ar->ctx->store, 1000);
        if (!conn)
                return;
        if (tb_store_runs_logs_settle(conn, conf->archiver_batch, TB_ARCH_SWEEP_STATEMENTS, &n,
                                      &batches, err, sizeof(err)))
                goto fail;
        if (tb_store_runs_logs_expire(conn, conf->archiver_batch, TB_ARCH_SWEEP_STATEMENTS, &n, &m,
                                      &batches, err, sizeof(err)))
                goto fail;
        if (n > 0) {
                tb_metrics_add("taskbus_archiver_log_rows_deleted_total", NULL, (double)n);
                tb_info(TB_ARCH_SUB,
                        "deleted %" PRId64 " expired log chunk(s) in %d batch(es); %" PRId64
                        " run log(s) expired",
                        n, batches, m);
        }
        if (tb_store_runs_purge_history(conn, conf->archiver_batch, conf->history_retention_ms,
                                        TB_ARCH_SWEEP_STATEMENTS, &n, &m, &batches, err,
                                        sizeof(err)))
                goto fail;
        if (n > 0) {
                tb_metrics_add("taskbus_archiver_runs_deleted_total", NULL, (double)n);
                tb_info(TB_ARCH_SUB,
                        "deleted %" PRId64 " run(s) past archiver.history_retention in %d "
                        "batch(es) (%" PRId64 " leftover log chunk(s))",
                        n, batches, m);
        }
        tb_store_release(ar->ctx->store, conn);
        return;
fail:
        tb_warn(TB_ARCH_SUB, "sweep: %s; retrying at the next sweep", err);
        tb_store_release(ar->ctx->store, conn);
}

/* ---- the role ------------------------------------------------------------------- */

/** Between batches: the sweep, when it is due. */
static void tb_arch_tick(void *opaque) {
        tb_arch_t *ar = opaque;
        if (tb_mono_us() < ar->next_sweep_us)
                return;
        tb_arch_sweep(ar);
        ar->next_sweep_us = tb_mono_us() + TB_ARCH_SWEEP_US;
}

/** Stop and free the role (also of a half-started one). */
static void tb_arch_stop(void *state) {
        tb_arch_t *ar = state;
        if (!ar)
                return;
        tb_pgsink_stop(ar->sink);
        tb_buf_free(&ar->hex);
        free(ar);
}

static tb_err_t tb_arch_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t err;
        tb_arch_t *ar = calloc(1, sizeof(*ar));
        if (!ar)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "archiver: out of memory");
        ar->ctx = ctx;
        size_t batch_max = ctx->conf->archiver_batch < TB_ARCH_BATCH_MAX
                                   ? (size_t)ctx->conf->archiver_batch
                                   : TB_ARCH_BATCH_MAX;
        if (batch_max < 1)
                batch_max = 1;
        tb_metrics_describe("taskbus_archiver_chunks_total", "counter",
                            "Log chunks copied from run-logs to PostgreSQL");
        tb_metrics_describe("taskbus_archiver_malformed_total", "counter",
                            "run-logs records the archiver could not decode (skipped)");
        tb_metrics_describe("taskbus_archiver_failures_total", "counter",
                            "Archiver batches that failed and were retried");
        tb_metrics_describe("taskbus_archiver_batch_seconds", "histogram",
                            "Time to copy one batch of log chunks");
        tb_metrics_describe("taskbus_archiver_log_rows_deleted_total", "counter",
                            "Archived log chunks deleted after their expiry");
        tb_metrics_describe("taskbus_archiver_runs_deleted_total", "counter",
                            "Runs deleted past archiver.history_retention");
        if ((err = tb_serde_init(errstr, errstr_size)))
                goto fail;
        tb_topic_t topic = TB_TOPIC_LOGS;
        tb_pgsink_conf_t c = {
                .sub = TB_ARCH_SUB,
                .consumer = TB_ARCH_CONSUMER,
                .ops = &tb_arch_sink_ops,
                .opaque = ar,
                .metric_malformed = "taskbus_archiver_malformed_total",
                .quarantine = true,
                .conf = ctx->conf,
                .store = ctx->store,
                .stopping = &ctx->stopping,
                .topics = &topic,
                .topic_cnt = 1,
                .batch_max = batch_max,
                .batch_wait_us = TB_ARCH_BATCH_WAIT_US,
                .metric_failures = "taskbus_archiver_failures_total",
                .metric_batch_seconds = "taskbus_archiver_batch_seconds",
                .tick = tb_arch_tick,
        };
        if ((err = tb_pgsink_start(&c, &ar->sink, errstr, errstr_size)))
                goto fail;
        *state = ar;
        return TB_OK;
fail:
        tb_arch_stop(ar);
        return err;
}

const tb_role_t tb_role_archiver = {
        .name = "archiver",
        .description = "copies run-logs into PostgreSQL and deletes expired logs and old run "
                       "history",
        .start = tb_arch_start,
        .stop = tb_arch_stop,
};
