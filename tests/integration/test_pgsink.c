/**
 * @file test_pgsink.c
 * @brief bus/pgsink against real Kafka and PostgreSQL: one batch is one
 *        transaction (records, offsets, finish, commit, or nothing at all),
 *        skipped records advance their offsets, offsets only move forward,
 *        and a running sink starts every partition at its stored offset,
 *        applies each record exactly once through a transient failure, and
 *        resumes after a restart where it stopped.
 *
 * The records are written to a table of the test's own (pgsink_rows) with a
 * plain INSERT: a record applied twice would fail its batch for good, so
 * "every row there" also means "none applied twice".
 */
#include "bus/bus.h"
#include "bus/pgsink.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tbt_stack_t g_st;
static char g_runs[256]; /* the stack's runs topic */

/** What the test's callbacks saw. */
typedef struct sink_log {
        atomic_int begins, applies, finishes, commits, ticks, flaky_calls;
        long long rows_at_finish; /* rows visible inside the transaction at finish */
} sink_log_t;

static void setup(void) {
        tbt_stack_create(&g_st, NULL);
        tb_topic_name(g_st.conf, TB_TOPIC_RUNS, g_runs, sizeof(g_runs));
        PQclear(PQexec(g_st.conn, "CREATE TABLE pgsink_rows (topic text, part int, off bigint, "
                                  "value text, PRIMARY KEY (topic, part, off))"));
}

static void teardown(void) {
        tbt_stack_destroy(&g_st);
}

TestSuite(pgsink, .init = setup, .fini = teardown, .timeout = 300);

/* ---- the callbacks ---------------------------------------------------------------- */

static void cb_begin(void *opaque) {
        sink_log_t *l = opaque;
        atomic_fetch_add(&l->begins, 1);
}

/* "skip" is malformed, "fail" fails for now, "bad" for good, "flaky" fails
 * the first time only; anything else is inserted. */
static tb_pgsink_verdict_t cb_apply(PGconn *conn, const rd_kafka_message_t *m, void *opaque,
                                    char *errstr, size_t errstr_size) {
        sink_log_t *l = opaque;
        char value[64], part[16], off[32];
        atomic_fetch_add(&l->applies, 1);
        snprintf(value, sizeof(value), "%.*s", (int)m->len, (const char *)m->payload);
        if (!strcmp(value, "skip")) {
                snprintf(errstr, errstr_size, "not a record of ours");
                return TB_PGSINK_SKIPPED;
        }
        if (!strcmp(value, "fail")) {
                snprintf(errstr, errstr_size, "the database is away");
                return TB_PGSINK_TRANSIENT;
        }
        if (!strcmp(value, "bad")) {
                snprintf(errstr, errstr_size, "this record can never be applied");
                return TB_PGSINK_PERMANENT;
        }
        if (!strcmp(value, "flaky") && atomic_fetch_add(&l->flaky_calls, 1) == 0) {
                snprintf(errstr, errstr_size, "a first try that fails");
                return TB_PGSINK_TRANSIENT;
        }
        snprintf(part, sizeof(part), "%d", (int)m->partition);
        snprintf(off, sizeof(off), "%lld", (long long)m->offset);
        const char *p[] = {rd_kafka_topic_name(m->rkt), part, off, value};
        return tb_pgsink_verdict_of(tb_store_exec(
                conn, "insert pgsink_rows",
                "INSERT INTO pgsink_rows VALUES ($1, $2::int, $3::bigint, $4)", 4, p, NULL,
                errstr, errstr_size));
}

static tb_err_t cb_finish(PGconn *conn, void *opaque, char *errstr, size_t errstr_size) {
        sink_log_t *l = opaque;
        PGresult *r = NULL;
        atomic_fetch_add(&l->finishes, 1);
        tb_err_t err = tb_store_exec(conn, "count", "SELECT count(*) FROM pgsink_rows", 0, NULL,
                                     &r, errstr, errstr_size);
        if (!err)
                l->rows_at_finish = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        return err;
}

static void cb_committed(void *opaque) {
        sink_log_t *l = opaque;
        atomic_fetch_add(&l->commits, 1);
}

static void cb_tick(void *opaque) {
        sink_log_t *l = opaque;
        atomic_fetch_add(&l->ticks, 1);
}

static const tb_pgsink_ops_t g_ops = {
        .begin = cb_begin,
        .apply = cb_apply,
        .finish = cb_finish,
        .committed = cb_committed,
};

/* ---- helpers ----------------------------------------------------------------------- */

static long long sql_ll(const char *sql) {
        char *v = tbt_sql_value(&g_st, sql);
        long long n = v ? atoll(v) : -1;
        free(v);
        return n;
}

/** The stored next offset of (\p consumer, runs, \p part), or -1. */
static long long stored(const char *consumer, int part) {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT next_offset FROM consumer_offsets WHERE consumer = '%s' AND "
                 "topic = '%s' AND partition = %d",
                 consumer, g_runs, part);
        return sql_ll(sql);
}

static long long rows(void) {
        return sql_ll("SELECT count(*) FROM pgsink_rows");
}

/** A record of the runs topic, by hand (its topic handle from \p rkt). */
static rd_kafka_message_t rec(rd_kafka_topic_t *rkt, int32_t part, int64_t off,
                              const char *value) {
        return (rd_kafka_message_t){.rkt = rkt,
                                    .partition = part,
                                    .offset = off,
                                    .payload = (void *)value,
                                    .len = strlen(value)};
}

static tb_err_t apply(const char *consumer, sink_log_t *l, rd_kafka_message_t *msgs, size_t n,
                      char *errstr, size_t errstr_size) {
        rd_kafka_message_t *ptrs[16];
        cr_assert_leq(n, TB_ARRAY_LEN(ptrs));
        for (size_t i = 0; i < n; i++)
                ptrs[i] = &msgs[i];
        tb_pgsink_conf_t c = {.sub = "test",
                              .consumer = consumer,
                              .ops = &g_ops,
                              .opaque = l,
                              .metric_malformed = "test_pgsink_malformed_total"};
        PGconn *conn = tb_store_acquire(g_st.store);
        tb_err_t err = tb_pgsink_apply(conn, &c, ptrs, n, errstr, errstr_size);
        tb_store_release(g_st.store, conn);
        return err;
}

/* ---- one batch ---------------------------------------------------------------------- */

Test(pgsink, a_batch_is_one_transaction_with_its_offsets) {
        char err[1024];
        sink_log_t l = {0};
        rd_kafka_t *rk = tbt_stack_producer(&g_st);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, g_runs, NULL);

        rd_kafka_message_t b1[] = {rec(rkt, 0, 5, "a"), rec(rkt, 0, 6, "skip"),
                                   rec(rkt, 1, 3, "b"), rec(rkt, 0, 4, "c")};
        cr_assert_eq(apply("t-apply", &l, b1, 4, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(rows(), 3, "the skipped record wrote nothing, the others did");
        cr_assert_eq(stored("t-apply", 0), 7, "the next offset after the last, skipped or not");
        cr_assert_eq(stored("t-apply", 1), 4);
        cr_assert_eq(l.begins, 1);
        cr_assert_eq(l.applies, 4);
        cr_assert_eq(l.finishes, 1);
        cr_assert_eq(l.rows_at_finish, 3, "finish runs after the records, in the transaction");
        cr_assert_eq(l.commits, 1);

        /* an older record again: applied, but its offset does not go back */
        rd_kafka_message_t b2[] = {rec(rkt, 0, 2, "d")};
        cr_assert_eq(apply("t-apply", &l, b2, 1, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(stored("t-apply", 0), 7, "offsets only move forward");
        cr_assert_eq(rows(), 4);
        cr_assert_eq(l.commits, 2);
        cr_assert_eq(l.finishes, 2);

        /* a transient failure: nothing of the batch stays, not even its offsets */
        rd_kafka_message_t b3[] = {rec(rkt, 0, 7, "e"), rec(rkt, 2, 1, "f"),
                                   rec(rkt, 0, 9, "fail")};
        tb_err_t e = apply("t-apply", &l, b3, 3, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_PG, "%s: %s", tb_err_name(e), err);
        char where[300];
        snprintf(where, sizeof(where), "%s [0] offset 9: the database is away", g_runs);
        cr_assert(strstr(err, where), "the error names the record: %s", err);
        cr_assert_eq(rows(), 4, "rolled back");
        cr_assert_eq(stored("t-apply", 0), 7);
        cr_assert_eq(stored("t-apply", 2), -1);
        cr_assert_eq(l.commits, 2, "a failed batch is not committed");
        cr_assert_eq(l.finishes, 2, "nor finished");

        /* a permanent refusal fails the batch too, for now, with its own code */
        rd_kafka_message_t b4[] = {rec(rkt, 3, 0, "g"), rec(rkt, 3, 1, "bad")};
        e = apply("t-apply", &l, b4, 2, err, sizeof(err));
        cr_assert_eq(e, TB_ERR_INVALID, "%s: %s", tb_err_name(e), err);
        cr_assert(strstr(err, "can never be applied"), "%s", err);
        cr_assert_eq(rows(), 4);
        cr_assert_eq(stored("t-apply", 3), -1);

        /* no consumer: the records, but no offsets */
        rd_kafka_message_t b5[] = {rec(rkt, 3, 5, "h")};
        cr_assert_eq(apply(NULL, &l, b5, 1, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(rows(), 5);
        cr_assert_eq(sql_ll("SELECT count(*) FROM consumer_offsets WHERE partition = 3"), 0);

        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(rk);
}

/* ---- the sink ------------------------------------------------------------------------ */

static void produce(rd_kafka_t *rk, int32_t part, const char *value) {
        char err[1024];
        cr_assert_eq(tb_bus_produce(rk, g_st.conf, TB_TOPIC_RUNS, part, "k", 1, value,
                                    strlen(value), NULL, 0, true, err, sizeof(err)),
                     TB_OK, "%s", err);
}

typedef struct rows_wait {
        long long want;
} rows_wait_t;

static bool rows_reached(void *arg) {
        return rows() >= ((rows_wait_t *)arg)->want;
}

static tb_pgsink_t *sink_start(sink_log_t *l, atomic_bool *stopping) {
        char err[1024];
        tb_topic_t topic = TB_TOPIC_RUNS;
        tb_pgsink_conf_t c = {.sub = "test",
                              .consumer = "t-sink",
                              .ops = &g_ops,
                              .opaque = l,
                              .metric_malformed = "test_pgsink_malformed_total",
                              .conf = g_st.conf,
                              .store = g_st.store,
                              .stopping = stopping,
                              .topics = &topic,
                              .topic_cnt = 1,
                              .batch_max = 3,
                              .batch_wait_us = 20000,
                              .metric_failures = "test_pgsink_failures_total",
                              .metric_batch_seconds = "test_pgsink_batch_seconds",
                              .tick = cb_tick};
        tb_pgsink_t *sk = NULL;
        cr_assert_eq(tb_pgsink_start(&c, &sk, err, sizeof(err)), TB_OK, "%s", err);
        return sk;
}

Test(pgsink, a_sink_starts_at_the_stored_offsets_and_applies_each_record_once) {
        rd_kafka_t *rk = tbt_stack_producer(&g_st);
        for (int i = 0; i < 10; i++) {
                char v[16];
                snprintf(v, sizeof(v), "%s", i == 6 ? "flaky" : i == 8 ? "skip" : "p0");
                produce(rk, 0, v);
        }
        for (int i = 0; i < 5; i++)
                produce(rk, 1, "p1");
        /* partition 0 was applied up to offset 4 already (by an earlier owner) */
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) "
                 "VALUES ('t-sink', '%s', 0, 4)",
                 g_runs);
        free(tbt_sql_value(&g_st, sql));

        sink_log_t l = {0};
        atomic_bool stopping = false;
        tb_pgsink_t *sk = sink_start(&l, &stopping);
        /* offsets 4..9 of partition 0 but the skipped one, and all of partition 1 */
        rows_wait_t w = {5 + 5};
        cr_assert(tbt_wait_until(rows_reached, &w, 120000), "%lld rows", rows());
        cr_assert_eq(sql_ll("SELECT count(*) FROM pgsink_rows WHERE part = 0 AND off < 4"), 0,
                     "records before the stored offset are not applied again");
        cr_assert_eq(sql_ll("SELECT count(*) FROM pgsink_rows WHERE value = 'flaky'"), 1);
        cr_assert_geq(l.flaky_calls, 2, "the failed batch was tried again");
        cr_assert_geq(l.ticks, 1);
        int64_t t0 = tb_mono_us();
        atomic_store(&stopping, true);
        tb_pgsink_stop(sk);
        cr_assert_lt(tb_mono_us() - t0, 15000000, "a clean stop is quick");
        cr_assert_eq(stored("t-sink", 0), 10);
        cr_assert_eq(stored("t-sink", 1), 5);
        cr_assert_eq(rows(), 10, "nothing more after the stop");

        /* a new sink of the same consumer resumes where the first stopped */
        produce(rk, 1, "later");
        produce(rk, 2, "later");
        sink_log_t l2 = {0};
        atomic_bool stopping2 = false;
        sk = sink_start(&l2, &stopping2);
        w.want = 12;
        cr_assert(tbt_wait_until(rows_reached, &w, 120000), "%lld rows", rows());
        /* stopping through tb_pgsink_stop() alone, the process still running */
        tb_pgsink_stop(sk);
        cr_assert_eq(rows(), 12);
        cr_assert_eq(l2.applies, 2, "only the two new records were read");
        cr_assert_eq(stored("t-sink", 1), 6);
        cr_assert_eq(stored("t-sink", 2), 1);
        rd_kafka_destroy(rk);
}
