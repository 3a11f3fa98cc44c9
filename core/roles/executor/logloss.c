/**
 * @file executor/logloss.c
 * @brief LogChunks on their own producer, and the chunks Kafka never took:
 *        each failed delivery is counted and its seq range kept, and a
 *        marker chunk tells readers where the gap is.
 *
 * Every LogChunk is produced on ex->log_producer (message.timeout.ms =
 * executor.log_delivery_timeout) with a note naming its run, seq and size
 * as the message's opaque (the role's tb_exec_t with it). Its delivery report (tb_exec_log_dr(), served by
 * the timer thread's poll) records a failure as a lost range of that run:
 * consecutive failed seqs of one run grow one range. Only chunks Kafka
 * surely did not write (never sent, or refused) are lost: one that failed
 * while in flight may have been written (librdkafka's POSSIBLY_PERSISTED),
 * so it is counted as unconfirmed and left to the readers' check, lest a
 * marker at its seq shadow the chunk itself. Once the producer
 * delivers again (a later chunk's report succeeds), or every
 * TB_EXEC_MARKER_RETRY_MS while nothing is delivered, the timer produces for
 * each range a SYSTEM chunk at the range's first seq, with the text
 * "[taskbus: N chunks (B bytes) lost]\n"; readers count it as standing for
 * the N seqs (store/runs.h). A marker that fails too goes back to the list
 * and is produced again. Readers also show a gap no marker covers
 * (docs/reliability.md, "Log gaps"), so a marker never produced (executor
 * killed, TB_EXEC_LOSS_MAX ranges pending) still leaves a visible gap.
 *
 * Locks: ex->loss_lock guards the list; it is taken alone (never while
 * holding ex->lock) or under a run's x->lock (a chunk refused at produce).
 */
#include "executor/executor_internal.h"

#include "http/metrics.h"
#include "serde/serde.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** A marker not triggered by a delivery is produced again this often. */
#define TB_EXEC_MARKER_RETRY_MS 5000
/** Most lost ranges waiting for their marker; older ones are dropped. */
#define TB_EXEC_LOSS_MAX 10000
/** How long produce waits for room in a full local queue. */
#define TB_EXEC_LOG_QUEUE_WAIT_MS 10000

/** A lost range of one run's seqs, waiting for its marker. */
struct tb_exec_loss {
        struct tb_exec_loss *next;
        char run_id[TB_EXEC_ID_MAX + 1];
        char task_id[TB_EXEC_ID_MAX + 1];
        int64_t first, count, bytes;
        int64_t since_us;  /**< monotonic: recorded, or its marker last produced */
        bool marker_sent;  /**< produced once already (a retry waits its turn) */
};

/** The opaque of one produced chunk, freed by its delivery report. */
typedef struct tb_exec_chunk_note {
        tb_exec_t *ex;
        char run_id[TB_EXEC_ID_MAX + 1];
        char task_id[TB_EXEC_ID_MAX + 1];
        int64_t seq, len;
        int64_t covers, bytes; /**< a marker: the range it stands for; else 0 */
} tb_exec_chunk_note_t;

/* 12345678 -> "12,345,678" */
static void tb_exec_group_digits(int64_t v, char out[32]) {
        char raw[24];
        int n = snprintf(raw, sizeof(raw), "%" PRId64, v < 0 ? 0 : v), o = 0;
        for (int i = 0; i < n; i++) {
                if (i && (n - i) % 3 == 0)
                        out[o++] = ',';
                out[o++] = raw[i];
        }
        out[o] = '\0';
}

/* Record a lost chunk (covers 0) or a marker that failed too. Takes loss_lock. */
static void tb_exec_loss_record(tb_exec_t *ex, const tb_exec_chunk_note_t *n, const char *why) {
        int64_t now = tb_mono_us();
        pthread_mutex_lock(&ex->loss_lock);
        if (!n->covers) {
                tb_metrics_add("taskbus_executor_log_chunks_lost_total", NULL, 1);
                tb_metrics_add("taskbus_executor_log_bytes_lost_total", NULL, (double)n->len);
                for (tb_exec_loss_t *l = ex->losses; l; l = l->next) {
                        if (!l->marker_sent && l->first + l->count == n->seq &&
                            !strcmp(l->run_id, n->run_id)) {
                                l->count++;
                                l->bytes += n->len;
                                pthread_mutex_unlock(&ex->loss_lock);
                                return;
                        }
                }
                tb_warn(TB_EXEC_SUB, "run %s: log chunk %" PRId64 " (%" PRId64 " bytes) not "
                        "delivered: %s; the gap is marked in its log", n->run_id, n->seq,
                        n->len, why);
        }
        if (ex->loss_cnt >= TB_EXEC_LOSS_MAX) {
                tb_exec_loss_t *old = ex->losses;
                ex->losses = old->next;
                ex->loss_cnt--;
                tb_error(TB_EXEC_SUB, "run %s: %zu log gaps wait for their marker: the gap at "
                         "chunk %" PRId64 " stays unmarked (readers still show it)",
                         old->run_id, (size_t)TB_EXEC_LOSS_MAX, old->first);
                free(old);
        }
        tb_exec_loss_t *l = calloc(1, sizeof(*l));
        if (l) {
                snprintf(l->run_id, sizeof(l->run_id), "%s", n->run_id);
                snprintf(l->task_id, sizeof(l->task_id), "%s", n->task_id);
                l->first = n->seq;
                l->count = n->covers ? n->covers : 1;
                l->bytes = n->covers ? n->bytes : n->len;
                l->since_us = now;
                l->marker_sent = n->covers > 0;
                tb_exec_loss_t **pp = &ex->losses;
                while (*pp)
                        pp = &(*pp)->next;
                *pp = l;
                ex->loss_cnt++;
        }
        ex->delivered_since = false;
        tb_metrics_set("taskbus_executor_log_gaps_pending", NULL, (double)ex->loss_cnt);
        pthread_mutex_unlock(&ex->loss_lock);
}

void tb_exec_log_dr(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
        (void)rk;
        (void)opaque;
        tb_exec_chunk_note_t *n = msg->_private;
        if (!n)
                return;
        tb_exec_t *ex = n->ex;
        if (msg->err && !n->covers &&
            rd_kafka_message_status(msg) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED) {
                /* In flight when it failed: the broker may have written it, so a
                 * marker at its seq could collide with the chunk itself. Readers
                 * show the gap if it really is one. */
                tb_metrics_add("taskbus_executor_log_chunks_unconfirmed_total", NULL, 1);
                tb_warn(TB_EXEC_SUB, "run %s: log chunk %" PRId64 " (%" PRId64 " bytes) "
                        "unconfirmed: %s (it may have been written; if not, readers show "
                        "the gap)", n->run_id, n->seq, n->len, rd_kafka_err2str(msg->err));
        } else if (msg->err) {
                tb_exec_loss_record(ex, n, rd_kafka_err2str(msg->err));
        } else if (n->covers) {
                tb_info(TB_EXEC_SUB, "run %s: marker for %" PRId64 " lost log chunk(s) from "
                        "chunk %" PRId64 " delivered", n->run_id, n->covers, n->seq);
        } else {
                pthread_mutex_lock(&ex->loss_lock);
                ex->delivered_since = true;
                pthread_mutex_unlock(&ex->loss_lock);
        }
        free(n);
}

tb_err_t tb_exec_log_produce(tb_exec_t *ex, const char *run_id, const char *task_id,
                             int64_t seq, const char *stream, const void *data, size_t len,
                             bool eof, int64_t covers, int64_t bytes, char *errstr,
                             size_t errstr_size) {
        tb_buf_t out = {0};
        char topic[256];
        json_t *v = json_object();
        json_object_set_new(v, "run_id", json_string(run_id));
        json_object_set_new(v, "task_id", json_string(task_id));
        json_object_set_new(v, "seq", json_integer(seq));
        json_object_set_new(v, "stream", json_string(stream));
        json_object_set_new(v, "at", json_integer(tb_now_ms()));
        json_object_set_new(v, "data", json_stringn_nocheck(len ? data : "", len));
        json_object_set_new(v, "eof", json_boolean(eof));
        tb_err_t e = tb_serde_encode(TB_SCHEMA_LOG_CHUNK, v, &out, errstr, errstr_size);
        json_decref(v);
        tb_exec_chunk_note_t *n = calloc(1, sizeof(*n));
        if (!n && e == TB_OK)
                e = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        if (n) {
                n->ex = ex;
                snprintf(n->run_id, sizeof(n->run_id), "%s", run_id);
                snprintf(n->task_id, sizeof(n->task_id), "%s", task_id);
                n->seq = seq;
                n->len = (int64_t)len;
                n->covers = covers;
                n->bytes = bytes;
        }
        if (e == TB_OK) {
                tb_topic_name(ex->conf, TB_TOPIC_LOGS, topic, sizeof(topic));
                int64_t give_up = tb_mono_us() + (int64_t)TB_EXEC_LOG_QUEUE_WAIT_MS * 1000;
                rd_kafka_resp_err_t rerr;
                rd_kafka_t *lp = tb_bus_rprod_get(ex->log_producer);
                for (;;) {
                        rerr = rd_kafka_producev(
                                lp, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(run_id, strlen(run_id)),
                                RD_KAFKA_V_VALUE(out.data, out.len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(n),
                                RD_KAFKA_V_END);
                        if (rerr != RD_KAFKA_RESP_ERR__QUEUE_FULL || tb_mono_us() >= give_up)
                                break;
                        rd_kafka_poll(lp, 50); /* serving reports frees room */
                }
                tb_bus_rprod_put(ex->log_producer);
                if (rerr)
                        e = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "produce to %s: %s",
                                      topic, rd_kafka_err2str(rerr));
        }
        tb_buf_free(&out);
        if (e != TB_OK && n) {
                tb_metrics_add("taskbus_executor_log_chunks_dropped_total", NULL, 1);
                tb_exec_loss_record(ex, n, errstr);
                free(n);
        } else if (e == TB_OK) {
                n = NULL; /* the delivery report frees it */
        }
        return e;
}

void tb_exec_log_loss_tick(tb_exec_t *ex, bool force) {
        int64_t now = tb_mono_us();
        tb_exec_loss_t *due = NULL, **tail = &due;
        pthread_mutex_lock(&ex->loss_lock);
        for (tb_exec_loss_t **pp = &ex->losses; *pp;) {
                tb_exec_loss_t *l = *pp;
                bool go = force || now - l->since_us >= (int64_t)TB_EXEC_MARKER_RETRY_MS * 1000 ||
                          (ex->delivered_since && !l->marker_sent);
                if (!go) {
                        pp = &l->next;
                        continue;
                }
                *pp = l->next;
                l->next = NULL;
                *tail = l;
                tail = &l->next;
                ex->loss_cnt--;
        }
        tb_metrics_set("taskbus_executor_log_gaps_pending", NULL, (double)ex->loss_cnt);
        pthread_mutex_unlock(&ex->loss_lock);
        while (due) {
                tb_exec_loss_t *l = due;
                due = l->next;
                char text[128], b[32], err[512];
                tb_exec_group_digits(l->bytes, b);
                int len = snprintf(text, sizeof(text), "[taskbus: %" PRId64 " chunk%s (%s byte%s) "
                                   "lost]\n", l->count, l->count == 1 ? "" : "s", b,
                                   l->bytes == 1 ? "" : "s");
                /* a failure is recorded again by tb_exec_log_produce() or its report */
                if (tb_exec_log_produce(ex, l->run_id, l->task_id, l->first, "SYSTEM", text,
                                        (size_t)len, false, l->count, l->bytes, err,
                                        sizeof(err)) != TB_OK)
                        tb_debug(TB_EXEC_SUB, "run %s: log gap marker: %s", l->run_id, err);
                free(l);
        }
}

void tb_exec_log_loss_free(tb_exec_t *ex) {
        pthread_mutex_lock(&ex->loss_lock);
        if (ex->loss_cnt)
                tb_error(TB_EXEC_SUB, "%zu log gap(s) left unmarked at exit (readers still show "
                         "them)", ex->loss_cnt);
        while (ex->losses) {
                tb_exec_loss_t *l = ex->losses;
                ex->losses = l->next;
                free(l);
        }
        ex->loss_cnt = 0;
        pthread_mutex_unlock(&ex->loss_lock);
}
