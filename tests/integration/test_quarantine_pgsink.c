/**
 * @file test_quarantine_pgsink.c
 * @brief bus/pgsink.h with c->quarantine, on records read from real Kafka
 *        (their headers are kept) and a real PostgreSQL: a permanently
 *        refused record is set aside in quarantine, in the batch's
 *        transaction, while the records around it and the other partitions
 *        are applied and every offset advances; the failed statement's
 *        SQLSTATE decides, not the callback's guess (a CHECK violation the
 *        callback calls transient is quarantined; a statement timeout it
 *        calls permanent fails the batch for a retry); applying a batch
 *        again keeps one quarantine row per record.
 */
#include "bus/bus.h"
#include "bus/pgsink.h"
#include "http/metrics.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tbt_stack_t g_st;
static char g_runs[256];

static void setup(void) {
        tbt_stack_create(&g_st, NULL);
        tb_topic_name(g_st.conf, TB_TOPIC_RUNS, g_runs, sizeof(g_runs));
        free(tbt_sql_value(&g_st, "CREATE TABLE qp_rows (topic text, part int, off bigint, "
                                  "value text CHECK (value <> 'checked'), "
                                  "PRIMARY KEY (topic, part, off))"));
}

static void teardown(void) {
        tbt_stack_destroy(&g_st);
}

TestSuite(quarantine_pgsink, .init = setup, .fini = teardown, .timeout = 300);

typedef struct qlog {
        int begins, commits, quarantined;
} qlog_t;

static void cb_begin(void *opaque) {
        ((qlog_t *)opaque)->begins++;
}

static void cb_committed(void *opaque) {
        ((qlog_t *)opaque)->commits++;
}

static void cb_quarantined(void *opaque, const rd_kafka_message_t *m) {
        (void)m;
        ((qlog_t *)opaque)->quarantined++;
}

/* "bad": refused by the callback itself; "checked": refused by a CHECK (the
 * callback says transient, as tb_pgsink_verdict_of() does for TB_ERR_PG);
 * "slow": a statement timeout (the callback says permanent); else inserted. */
static tb_pgsink_verdict_t cb_apply(PGconn *conn, const rd_kafka_message_t *m, void *opaque,
                                    char *errstr, size_t errstr_size) {
        char value[64], part[16], off[32];
        (void)opaque;
        snprintf(value, sizeof(value), "%.*s", (int)m->len, (const char *)m->payload);
        if (!strcmp(value, "bad")) {
                snprintf(errstr, errstr_size, "this record can never be applied");
                return TB_PGSINK_PERMANENT;
        }
        if (!strcmp(value, "slow")) {
                tb_err_t e = tb_store_exec(conn, "sleep",
                                           "SELECT set_config('statement_timeout', '50', true), "
                                           "pg_sleep(2)",
                                           0, NULL, NULL, errstr, errstr_size);
                if (!e)
                        e = tb_store_exec(conn, "sleep", "SELECT pg_sleep(2)", 0, NULL, NULL,
                                          errstr, errstr_size);
                return e ? TB_PGSINK_PERMANENT : TB_PGSINK_APPLIED;
        }
        snprintf(part, sizeof(part), "%d", (int)m->partition);
        snprintf(off, sizeof(off), "%lld", (long long)m->offset);
        const char *p[] = {rd_kafka_topic_name(m->rkt), part, off, value};
        return tb_pgsink_verdict_of(tb_store_exec(
                conn, "insert qp_rows",
                "INSERT INTO qp_rows VALUES ($1, $2::int, $3::bigint, $4) ON CONFLICT DO NOTHING",
                4, p, NULL, errstr, errstr_size));
}

static const tb_pgsink_ops_t g_ops = {
        .begin = cb_begin,
        .apply = cb_apply,
        .committed = cb_committed,
        .quarantined = cb_quarantined,
};

static long long sql_ll(const char *sql) {
        char *v = tbt_sql_value(&g_st, sql);
        long long n = v ? atoll(v) : -1;
        free(v);
        return n;
}

static void produce(rd_kafka_t *rk, int32_t part, const char *value) {
        char err[1024];
        tb_header_t h[] = {{"x-test", "h1", 2}, {"x-empty", NULL, 0}};
        cr_assert_eq(tb_bus_produce(rk, g_st.conf, TB_TOPIC_RUNS, part, "key-1", 5, value,
                                    strlen(value), h, 2, true, err, sizeof(err)),
                     TB_OK, "%s", err);
}

/** Read \p n records of partitions \p first .. \p first + 1 of runs from the
 *  beginning. */
static size_t consume_from(int first, rd_kafka_t **out_rk, rd_kafka_message_t **msgs,
                           size_t n) {
        char err[1024];
        rd_kafka_conf_t *c = NULL;
        cr_assert_eq(tb_bus_conf_new(g_st.conf, &c, err, sizeof(err)), TB_OK, "%s", err);
        rd_kafka_conf_set(c, "group.id", "qp-test", err, sizeof(err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        cr_assert_not_null(rk, "%s", err);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
        rd_kafka_topic_partition_list_add(l, g_runs, first)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_topic_partition_list_add(l, g_runs, first + 1)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
        cr_assert_eq(rd_kafka_assign(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        size_t got = 0;
        int64_t until = tb_mono_us() + 60000000;
        while (got < n && tb_mono_us() < until) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (m && !m->err)
                        msgs[got++] = m;
                else if (m)
                        rd_kafka_message_destroy(m);
        }
        cr_assert_eq(got, n, "read %zu of %zu records", got, n);
        *out_rk = rk;
        return got;
}

static tb_err_t apply(qlog_t *l, rd_kafka_message_t **msgs, size_t n, char *err, size_t size) {
        tb_pgsink_conf_t c = {.sub = "qtest",
                              .consumer = "qp-sink",
                              .ops = &g_ops,
                              .opaque = l,
                              .quarantine = true};
        PGconn *conn = tb_store_acquire(g_st.store);
        tb_err_t e = tb_pgsink_apply(conn, &c, msgs, n, err, size);
        tb_store_release(g_st.store, conn);
        return e;
}

Test(quarantine_pgsink, a_refused_record_is_set_aside_and_its_batch_goes_on) {
        char err[1024], sql[512];
        rd_kafka_t *prod = tbt_stack_producer(&g_st);
        /* partition 0: good, bad, checked, good; partition 1: good, slow */
        const char *p0[] = {"g1", "bad", "checked", "g2"};
        for (size_t i = 0; i < 4; i++)
                produce(prod, 0, p0[i]);
        produce(prod, 1, "g3");
        produce(prod, 1, "slow");
        rd_kafka_destroy(prod);
        rd_kafka_message_t *msgs[6];
        rd_kafka_t *rk = NULL;
        consume_from(0, &rk, msgs, 6);
        /* in partition order: p0's four, then p1's two (or interleaved) */
        rd_kafka_message_t *batch[6], *slow = NULL;
        size_t n = 0;
        for (size_t i = 0; i < 6; i++) {
                if (msgs[i]->len == 4 && !memcmp(msgs[i]->payload, "slow", 4))
                        slow = msgs[i];
                else
                        batch[n++] = msgs[i];
        }
        cr_assert_eq(n, 5);
        cr_assert_not_null(slow);

        qlog_t l = {0};
        cr_assert_eq(apply(&l, batch, n, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(sql_ll("SELECT count(*) FROM qp_rows"), 3, "g1, g2 and g3 are applied");
        cr_assert_eq(l.quarantined, 2);
        cr_assert_eq(l.commits, 1);
        cr_assert_eq(l.begins, 2, "a fast pass, then one with a savepoint per record");
        char labels[400];
        snprintf(labels, sizeof(labels), "role=\"qtest\",topic=\"%s\"", g_runs);
        cr_assert_eq(tb_metrics_get("taskbus_quarantined_total", labels), 2);
        snprintf(sql, sizeof(sql),
                 "SELECT next_offset FROM consumer_offsets WHERE consumer = 'qp-sink' AND "
                 "topic = '%s' AND partition = 0",
                 g_runs);
        cr_assert_eq(sql_ll(sql), 4, "the offsets advance past the refused records");
        char *q = tbt_sql_value(
                &g_st, "SELECT string_agg(concat_ws('|', role, partition, \"offset\", "
                       "coalesce(sqlstate, '-'), convert_from(key, 'UTF8'), "
                       "convert_from(value, 'UTF8'), convert_from(header_names[1], 'UTF8'), "
                       "convert_from(header_values[1], 'UTF8'), header_values[2] IS NULL, "
                       "status), ',' ORDER BY \"offset\") FROM quarantine");
        cr_assert_str_eq(q, "qtest|0|1|-|key-1|bad|x-test|h1|t|new,"
                            "qtest|0|2|23514|key-1|checked|x-test|h1|t|new");
        free(q);
        q = tbt_sql_value(&g_st, "SELECT error FROM quarantine WHERE sqlstate = '23514'");
        cr_assert(strstr(q, "violates check constraint"), "%s", q);
        free(q);
        q = tbt_sql_value(&g_st, "SELECT error FROM quarantine WHERE sqlstate IS NULL");
        cr_assert_str_eq(q, "this record can never be applied");
        free(q);

        /* the same batch again (a crash before the commit was seen): one row each */
        qlog_t l2 = {0};
        cr_assert_eq(apply(&l2, batch, n, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(sql_ll("SELECT count(*) FROM quarantine"), 2);
        cr_assert_eq(sql_ll("SELECT count(*) FROM qp_rows"), 3);
        cr_assert_eq(l2.quarantined, 2, "the batch's owner still hears of them");
        cr_assert_eq(tb_metrics_get("taskbus_quarantined_total", labels), 2,
                     "but they are counted once");

        /* a statement timeout is the database's, whatever the callback says:
         * the batch fails as a whole, to be retried, and nothing is set aside */
        rd_kafka_message_t *b2[] = {batch[0], slow};
        qlog_t l3 = {0};
        tb_err_t e = apply(&l3, b2, 2, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "%s: %s", tb_err_name(e), err);
        cr_assert(strstr(err, "57014"), "%s", err);
        cr_assert_eq(l3.quarantined, 0);
        cr_assert_eq(l3.commits, 0);
        cr_assert_eq(sql_ll("SELECT count(*) FROM quarantine"), 2);

        for (size_t i = 0; i < 6; i++)
                rd_kafka_message_destroy(msgs[i]);
        tb_bus_consumer_destroy(rk, 10000);
}

/* What isolation costs: a batch of 500 without a poison record runs as before (no
 * savepoint); with one it is applied twice, the second time with a savepoint
 * around each record. Logged, not asserted (shared CI machines). */
Test(quarantine_pgsink, the_price_of_a_poison_record_in_a_batch_of_500) {
        enum { N = 500 };
        char err[1024], v[32];
        rd_kafka_t *prod = tbt_stack_producer(&g_st);
        for (int i = 0; i < 2 * N; i++) {
                snprintf(v, sizeof(v), "%s", i == N + N / 2 ? "bad" : "good");
                produce(prod, i < N ? 2 : 3, v);
        }
        rd_kafka_destroy(prod);
        rd_kafka_message_t **msgs = calloc(2 * N, sizeof(*msgs)), **clean = calloc(N, sizeof(*clean)),
                           **poisoned = calloc(N, sizeof(*poisoned));
        rd_kafka_t *rk = NULL;
        consume_from(2, &rk, msgs, 2 * N);
        size_t nc = 0, np = 0;
        for (size_t i = 0; i < 2 * N; i++)
                if (msgs[i]->partition == 2)
                        clean[nc++] = msgs[i];
                else
                        poisoned[np++] = msgs[i];
        cr_assert_eq(nc, N);
        cr_assert_eq(np, N);
        qlog_t l = {0};
        int64_t t0 = tb_mono_us();
        cr_assert_eq(apply(&l, clean, N, err, sizeof(err)), TB_OK, "%s", err);
        int64_t t1 = tb_mono_us();
        cr_assert_eq(apply(&l, poisoned, N, err, sizeof(err)), TB_OK, "%s", err);
        int64_t t2 = tb_mono_us();
        cr_assert_eq(l.quarantined, 1);
        cr_assert_eq(l.begins, 3, "one pass for the clean batch, two for the other");
        cr_assert_eq(sql_ll("SELECT count(*) FROM qp_rows WHERE part IN (2, 3)"), 2 * N - 1);
        cr_log_info("batch of %d: %.1f ms clean, %.1f ms with one poison record (quarantined)",
                    N, (double)(t1 - t0) / 1000.0, (double)(t2 - t1) / 1000.0);
        for (size_t i = 0; i < 2 * N; i++)
                rd_kafka_message_destroy(msgs[i]);
        free(msgs);
        free(clean);
        free(poisoned);
        tb_bus_consumer_destroy(rk, 10000);
}
