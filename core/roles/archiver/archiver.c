/**
 * @file archiver/archiver.c
 * @brief The archiver role: copies run output from run-logs into PostgreSQL
 *        (run_logs) exactly once, and deletes what has expired: run output
 *        past its log retention and run history past
 *        archiver.history_retention.
 *
 * Copy: a consumer group on run-logs (key: run id, so one run's chunks are
 * in one partition, in order). A batch of chunks is inserted in ONE
 * transaction together with the consumed offsets (consumer_offsets, consumer
 * "archiver"); Kafka's own offsets are not used, so a crash or a rebalance
 * neither loses nor duplicates a chunk (rows are also keyed (run_id, seq)).
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
 * @locality one thread owns the consumer and runs the sweeps; the rebalance
 *           callback runs on it (inside consumer_poll).
 */
#include "bus/bus.h"
#include "daemon.h"
#include "http/metrics.h"
#include "serde/serde.h"
#include "store/store.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        pthread_t thread;
        bool thread_started;
        rd_kafka_t *consumer;
        rd_kafka_message_t *batch[TB_ARCH_BATCH_MAX];
        size_t batch_cnt;
        size_t batch_max;
        int64_t next_sweep_us;
} tb_arch_t;

/* ---- copy ------------------------------------------------------------------------ */

static const char tb_arch_sql_insert[] =
        "INSERT INTO run_logs (run_id, seq, stream, at, data, expires_at, eof) "
        "SELECT $1, $2::bigint, $3, 'epoch'::timestamptz + $4::bigint * interval '1 millisecond', "
        "$5::bytea, (SELECT r.log_expires_at FROM runs r WHERE r.run_id = $1), $6::boolean "
        /* a late copy of a log that already expired and was deleted */
        "WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = $1 "
        "AND r.log_purged_at IS NOT NULL) "
        "ON CONFLICT (run_id, seq) DO NOTHING";

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
        return tb_store_exec(conn, "insert run_logs", tb_arch_sql_insert, 6, p, NULL, errstr,
                             errstr_size);
}

/** Copy the batch and its offsets in one transaction. @returns chunks copied. */
static tb_err_t tb_arch_apply(tb_arch_t *ar, PGconn *conn, size_t *copied, char *errstr,
                              size_t errstr_size) {
        tb_buf_t hex = {0};
        tb_err_t err;
        *copied = 0;
        rd_kafka_topic_partition_list_t *next = rd_kafka_topic_partition_list_new(8);
        if ((err = tb_store_begin(conn, errstr, errstr_size)))
                goto out;
        for (size_t i = 0; i < ar->batch_cnt; i++) {
                const rd_kafka_message_t *m = ar->batch[i];
                const char *tname = rd_kafka_topic_name(m->rkt);
                json_t *v = NULL;
                char derr[512];
                if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_LOG_CHUNK, NULL, &v, derr,
                                    sizeof(derr)) != TB_OK) {
                        tb_metrics_add("taskbus_archiver_malformed_total", NULL, 1);
                        tb_warn(TB_ARCH_SUB, "%s [%" PRId32 "] offset %" PRId64 " skipped: %s",
                                tname, m->partition, m->offset, derr);
                } else {
                        err = tb_arch_insert(conn, v, &hex, errstr, errstr_size);
                        json_decref(v);
                        if (err)
                                goto out;
                        (*copied)++;
                }
                rd_kafka_topic_partition_t *tp =
                        rd_kafka_topic_partition_list_find(next, tname, m->partition);
                if (!tp)
                        tp = rd_kafka_topic_partition_list_add(next, tname, m->partition);
                if (m->offset + 1 > tp->offset)
                        tp->offset = m->offset + 1;
        }
        for (int k = 0; k < next->cnt; k++) {
                char part[16], off[32];
                tb_snprintf(part, sizeof(part), "%" PRId32, next->elems[k].partition);
                tb_snprintf(off, sizeof(off), "%" PRId64, next->elems[k].offset);
                const char *p[] = {TB_ARCH_CONSUMER, next->elems[k].topic, part, off};
                if ((err = tb_store_exec(
                             conn, "store consumed offset",
                             "INSERT INTO consumer_offsets (consumer, topic, partition, "
                             "next_offset) VALUES ($1, $2, $3::int, $4::bigint) "
                             "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
                             "next_offset = GREATEST(consumer_offsets.next_offset, "
                             "EXCLUDED.next_offset)",
                             4, p, NULL, errstr, errstr_size)))
                        goto out;
        }
        err = tb_store_commit(conn, errstr, errstr_size);
out:
        if (err)
                tb_store_rollback(conn);
        rd_kafka_topic_partition_list_destroy(next);
        tb_buf_free(&hex);
        return err;
}

/* ---- sweep ---------------------------------------------------------------------- */

static const char tb_arch_sql_settle[] =
        "UPDATE run_logs l SET expires_at = r.log_expires_at FROM runs r "
        "WHERE l.ctid IN (SELECT l2.ctid FROM run_logs l2 JOIN runs r2 ON r2.run_id = l2.run_id "
        "WHERE l2.expires_at IS NULL AND r2.log_expires_at IS NOT NULL LIMIT $1::int) "
        "AND r.run_id = l.run_id";

static const char tb_arch_sql_expire[] =
        "WITH d AS (DELETE FROM run_logs WHERE ctid IN (SELECT ctid FROM run_logs "
        "WHERE expires_at <= now() LIMIT $1::int) RETURNING run_id), "
        "u AS (UPDATE runs SET log_purged_at = now() WHERE run_id IN (SELECT run_id FROM d) "
        "AND log_purged_at IS NULL RETURNING 1) "
        "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM u)";

static const char tb_arch_sql_history[] =
        "WITH d AS (DELETE FROM runs WHERE ctid IN (SELECT ctid FROM runs "
        "WHERE nominal_time < now() - $2::bigint * interval '1 millisecond' "
        "AND COALESCE(finished_at, nominal_time) < now() - $2::bigint * interval '1 millisecond' "
        "LIMIT $1::int) RETURNING run_id), "
        "l AS (DELETE FROM run_logs WHERE run_id IN (SELECT run_id FROM d) RETURNING 1) "
        "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM l)";

/** Run \p sql (one batch) until a batch touches fewer than the batch size.
 *  @returns the rows of the first column summed; *\p batches statements. */
static tb_err_t tb_arch_batches(PGconn *conn, const char *what, const char *sql, int nparams,
                                const char *const *params, int64_t batch, int64_t *total,
                                int64_t *second, int *batches, char *errstr,
                                size_t errstr_size) {
        *total = 0;
        if (second)
                *second = 0;
        *batches = 0;
        for (int i = 0; i < TB_ARCH_SWEEP_STATEMENTS; i++) {
                PGresult *r = NULL;
                tb_err_t err = tb_store_exec(conn, what, sql, nparams, params, &r, errstr,
                                             errstr_size);
                if (err)
                        return err;
                int64_t n = PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                             : strtoll(PQcmdTuples(r), NULL, 10);
                if (second && PQntuples(r) > 0 && PQnfields(r) > 1)
                        *second += strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                PQclear(r);
                if (n > 0)
                        (*batches)++;
                *total += n;
                if (n < batch)
                        break;
        }
        return TB_OK;
}

static void tb_arch_sweep(tb_arch_t *ar) {
        const tb_config_t *conf = ar->ctx->conf;
        char err[1024], lim[32], keep[32];
        int64_t n = 0, m = 0;
        int batches = 0;
        tb_snprintf(lim, sizeof(lim), "%" PRId64, conf->archiver_batch);
        tb_snprintf(keep, sizeof(keep), "%" PRId64, conf->history_retention_ms);
        const char *p1[] = {lim};
        const char *p2[] = {lim, keep};
        PGconn *conn = tb_store_acquire_timeout(ar->ctx->store, 1000);
        if (!conn)
                return;
        if (tb_arch_batches(conn, "settle run_logs expiry", tb_arch_sql_settle, 1, p1,
                            conf->archiver_batch, &n, NULL, &batches, err, sizeof(err)))
                goto fail;
        if ((tb_arch_batches(conn, "delete expired run_logs", tb_arch_sql_expire, 1, p1,
                             conf->archiver_batch, &n, &m, &batches, err, sizeof(err))))
                goto fail;
        if (n > 0) {
                tb_metrics_add("taskbus_archiver_log_rows_deleted_total", NULL, (double)n);
                tb_info(TB_ARCH_SUB,
                        "deleted %" PRId64 " expired log chunk(s) in %d batch(es); %" PRId64
                        " run log(s) expired",
                        n, batches, m);
        }
        if (tb_arch_batches(conn, "delete runs past history retention", tb_arch_sql_history, 2,
                            p2, conf->archiver_batch, &n, &m, &batches, err, sizeof(err)))
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

static tb_err_t tb_arch_stored_offsets(tb_arch_t *ar, rd_kafka_topic_partition_list_t *parts,
                                       char *errstr, size_t errstr_size) {
        PGconn *conn = tb_store_acquire(ar->ctx->store);
        tb_err_t err = TB_OK;
        for (int i = 0; i < parts->cnt && !err; i++) {
                char part[16];
                PGresult *r = NULL;
                tb_snprintf(part, sizeof(part), "%" PRId32, parts->elems[i].partition);
                const char *p[] = {TB_ARCH_CONSUMER, parts->elems[i].topic, part};
                err = tb_store_exec(conn, "read consumed offset",
                                    "SELECT next_offset FROM consumer_offsets WHERE consumer = $1 "
                                    "AND topic = $2 AND partition = $3::int",
                                    3, p, &r, errstr, errstr_size);
                if (!err)
                        parts->elems[i].offset = PQntuples(r) > 0
                                                         ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                         : RD_KAFKA_OFFSET_BEGINNING;
                PQclear(r);
        }
        tb_store_release(ar->ctx->store, conn);
        return err;
}

static void tb_arch_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_arch_t *ar = opaque;
        rd_kafka_error_t *e = NULL;
        char errstr[1024];
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                while (tb_arch_stored_offsets(ar, parts, errstr, sizeof(errstr)) != TB_OK) {
                        if (atomic_load(&ar->ctx->stopping))
                                break;
                        tb_error(TB_ARCH_SUB, "assignment: %s; retrying in 1 s", errstr);
                        sleep(1);
                }
                e = rd_kafka_incremental_assign(rk, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                /* drop what was read from revoked partitions: the new owner
                 * starts from the offsets stored with the rows */
                size_t w = 0;
                for (size_t i = 0; i < ar->batch_cnt; i++) {
                        bool revoked = false;
                        for (int j = 0; j < parts->cnt; j++)
                                revoked |= parts->elems[j].partition == ar->batch[i]->partition &&
                                           !strcmp(parts->elems[j].topic,
                                                   rd_kafka_topic_name(ar->batch[i]->rkt));
                        if (revoked)
                                rd_kafka_message_destroy(ar->batch[i]);
                        else
                                ar->batch[w++] = ar->batch[i];
                }
                ar->batch_cnt = w;
                e = rd_kafka_incremental_unassign(rk, parts);
        } else {
                tb_error(TB_ARCH_SUB, "rebalance failed: %s", rd_kafka_err2str(err));
        }
        if (e) {
                tb_error(TB_ARCH_SUB, "incremental (un)assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
}

static void tb_arch_batch_free(tb_arch_t *ar) {
        for (size_t i = 0; i < ar->batch_cnt; i++)
                rd_kafka_message_destroy(ar->batch[i]);
        ar->batch_cnt = 0;
}

/** Copy the collected batch; on failure seek back so it is read again. */
static bool tb_arch_process(tb_arch_t *ar) {
        char errstr[1024];
        size_t copied = 0;
        int64_t t0 = tb_mono_us();
        PGconn *conn = tb_store_acquire(ar->ctx->store);
        tb_err_t err = tb_arch_apply(ar, conn, &copied, errstr, sizeof(errstr));
        tb_store_release(ar->ctx->store, conn);
        if (!err) {
                tb_metrics_add("taskbus_archiver_chunks_total", NULL, (double)copied);
                tb_metrics_observe("taskbus_archiver_batch_seconds", NULL,
                                   (double)(tb_mono_us() - t0) / 1e6);
                tb_arch_batch_free(ar);
                return true;
        }
        tb_error(TB_ARCH_SUB, "copying %zu chunk(s) failed: %s; retrying", ar->batch_cnt,
                 errstr);
        tb_metrics_add("taskbus_archiver_failures_total", NULL, 1);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (size_t i = 0; i < ar->batch_cnt; i++) {
                rd_kafka_message_t *m = ar->batch[i];
                const char *t = rd_kafka_topic_name(m->rkt);
                rd_kafka_topic_partition_t *tp =
                        rd_kafka_topic_partition_list_find(l, t, m->partition);
                if (!tp)
                        rd_kafka_topic_partition_list_add(l, t, m->partition)->offset = m->offset;
                else if (m->offset < tp->offset)
                        tp->offset = m->offset;
        }
        rd_kafka_error_t *e = rd_kafka_seek_partitions(ar->consumer, l, 10000);
        if (e) {
                tb_error(TB_ARCH_SUB, "seek back: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        rd_kafka_topic_partition_list_destroy(l);
        tb_arch_batch_free(ar);
        return false;
}

static void *tb_arch_main(void *arg) {
        tb_arch_t *ar = arg;
        int backoff_ms = 0;
        while (!atomic_load(&ar->ctx->stopping)) {
                int64_t first = 0;
                while (ar->batch_cnt < ar->batch_max) {
                        int wait_ms = 100;
                        if (first) {
                                int64_t left = first + TB_ARCH_BATCH_WAIT_US - tb_mono_us();
                                if (left <= 0)
                                        break;
                                wait_ms = (int)((left + 999) / 1000);
                        }
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(ar->consumer, wait_ms);
                        if (!m) {
                                if (!first)
                                        break;
                                continue;
                        }
                        if (m->err) {
                                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                        tb_warn(TB_ARCH_SUB, "consumer: %s",
                                                rd_kafka_message_errstr(m));
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        ar->batch[ar->batch_cnt++] = m;
                        if (!first)
                                first = tb_mono_us();
                }
                if (atomic_load(&ar->ctx->stopping))
                        break;
                if (ar->batch_cnt > 0) {
                        if (tb_arch_process(ar)) {
                                backoff_ms = 0;
                        } else {
                                /* PostgreSQL is down or refusing: back off, up to 5 s */
                                backoff_ms = backoff_ms ? (backoff_ms * 2 > 5000 ? 5000
                                                                                : backoff_ms * 2)
                                                        : 100;
                                for (int w = 0;
                                     w < backoff_ms && !atomic_load(&ar->ctx->stopping); w += 50)
                                        usleep(50 * 1000);
                                continue;
                        }
                }
                if (tb_mono_us() >= ar->next_sweep_us) {
                        tb_arch_sweep(ar);
                        ar->next_sweep_us = tb_mono_us() + TB_ARCH_SWEEP_US;
                }
        }
        tb_arch_batch_free(ar);
        return NULL;
}

static void tb_arch_free(tb_arch_t *ar) {
        if (!ar)
                return;
        tb_arch_batch_free(ar);
        if (ar->consumer) {
                tb_bus_consumer_destroy(ar->consumer, 10000);
        }
        free(ar);
}

static tb_err_t tb_arch_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        tb_err_t err;
        char group[300];
        tb_arch_t *ar = calloc(1, sizeof(*ar));
        if (!ar)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "archiver: out of memory");
        ar->ctx = ctx;
        ar->batch_max = ctx->conf->archiver_batch < TB_ARCH_BATCH_MAX
                                ? (size_t)ctx->conf->archiver_batch
                                : TB_ARCH_BATCH_MAX;
        if (ar->batch_max < 1)
                ar->batch_max = 1;
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
        tb_snprintf(group, sizeof(group), "%s%s", ctx->conf->topic_prefix, TB_ARCH_CONSUMER);
        tb_topic_t topic = TB_TOPIC_LOGS;
        tb_consumer_opts_t opts = {
                .group_id = group,
                .read_committed = true,
                .auto_commit = false, /* offsets live in PostgreSQL */
                .rebalance_cb = tb_arch_rebalance,
                .opaque = ar,
        };
        if ((err = tb_bus_consumer_new(ctx->conf, &opts, &topic, 1, &ar->consumer, errstr,
                                       errstr_size)))
                goto fail;
        if (pthread_create(&ar->thread, NULL, tb_arch_main, ar) != 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "archiver: cannot start its thread");
                goto fail;
        }
        ar->thread_started = true;
        *state = ar;
        return TB_OK;
fail:
        tb_arch_free(ar);
        return err;
}

static void tb_arch_stop(void *state) {
        tb_arch_t *ar = state;
        if (!ar)
                return;
        if (ar->thread_started)
                pthread_join(ar->thread, NULL);
        tb_arch_free(ar);
}

const tb_role_t tb_role_archiver = {
        .name = "archiver",
        .description = "copies run-logs into PostgreSQL and deletes expired logs and old run "
                       "history",
        .start = tb_arch_start,
        .stop = tb_arch_stop,
};
