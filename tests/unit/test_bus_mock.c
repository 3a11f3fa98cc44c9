/**
 * @file test_bus_mock.c
 * @brief The Kafka layer without a broker: librdkafka's mock cluster
 *        injects produce errors (retried by the idempotent producer, or
 *        reported with context), readers (assign-only consumers) read what
 *        they are assigned, a group member's rebalance hooks set its start
 *        offsets and see its revocations, plus murmur2 against the Java client's
 *        published values and topic naming; a producer in a fatal state is
 *        replaced (tb_bus_rprod).
 */
#include "bus/bus.h"
#include "support.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kafka protocol ApiKey of Produce (rdkafka_protocol.h is not installed) */
#define APIKEY_PRODUCE 0

static char errbuf[1024];
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mc;
static tb_config_t *conf;

/** A one-broker mock cluster and a config pointing at it, prefix "mock.". */
static void setup(void) {
        char e[256];
        tb_log_set_level(TB_LOG_ERROR);
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        /* this handle only hosts the cluster: no bootstrap warning */
        rd_kafka_conf_set(c, "log_level", "3", e, sizeof(e));
        mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
        cr_assert_not_null(mock_rk, "%s", e);
        mc = rd_kafka_mock_cluster_new(mock_rk, 1);
        cr_assert_not_null(mc);
        setenv("TASKBUS_KAFKA", rd_kafka_mock_cluster_bootstraps(mc), 1);
        tb_err_t err = tb_config_load(NULL, &conf, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "%s", errbuf);
        free(conf->topic_prefix);
        conf->topic_prefix = strdup("mock.");
        cr_assert_eq(rd_kafka_mock_topic_create(mc, "mock.runs", 3, 1),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void teardown(void) {
        tb_config_destroy(conf);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(mock_rk);
}

static rd_kafka_t *producer(void) {
        rd_kafka_t *p = NULL;
        tb_err_t err = tb_bus_producer_new(conf, NULL, &p, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "%s", errbuf);
        /* a first record settles metadata and the idempotent producer id, so
         * the injected errors hit the records under test */
        err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, 0, "k", 1, "warm-up", 7, NULL, 0, true,
                             errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "warm-up: %s", errbuf);
        return p;
}

Test(bus_mock, retriable_produce_errors_are_retried_idempotently, .init = setup,
     .fini = teardown, .timeout = 60) {
        rd_kafka_t *p = producer();
        size_t left = 99;
        cr_assert_eq(rd_kafka_mock_broker_push_request_error_rtts(
                             mc, 1, APIKEY_PRODUCE, 2,
                             RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0,
                             RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        tb_header_t h = {"tb-test", "1", 1};
        tb_err_t err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, 0, "k", 1, "v", 1, &h, 1, true,
                                      errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "produce after 2 retriable errors: %s: %s", tb_err_name(err),
                     errbuf);
        /* both injected errors were really returned to the producer */
        cr_assert_eq(rd_kafka_mock_broker_error_stack_cnt(mc, 1, APIKEY_PRODUCE, &left),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(left, 0, "%zu injected errors never reached the producer", left);
        rd_kafka_destroy(p);
}

struct retry_arg {
        rd_kafka_t *p;
        int tries, failures;
};

static bool produce_ok(void *arg) {
        struct retry_arg *ra = arg;
        ra->tries++;
        int64_t t0 = tb_mono_us();
        tb_err_t err = tb_bus_produce(ra->p, conf, TB_TOPIC_RUNS, 0, "k", 1, "v2", 2, NULL, 0,
                                      true, errbuf, sizeof(errbuf));
        if (err) {
                ra->failures++;
                cr_assert_eq(err, TB_ERR_KAFKA, "%s", errbuf);
                cr_assert(strstr(errbuf, "produce to mock.runs") &&
                                  strstr(errbuf, "TOPIC_AUTHORIZATION_FAILED"),
                          "%s", errbuf);
                cr_assert((tb_mono_us() - t0) < 5000000, "a failing produce took long");
        }
        return err == TB_OK;
}

Test(bus_mock, permanent_produce_error_is_reported_with_context, .init = setup,
     .fini = teardown, .timeout = 60) {
        rd_kafka_t *p = producer();
        rd_kafka_mock_push_request_errors(mc, APIKEY_PRODUCE, 1,
                                          RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
        tb_err_t err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, 0, "k", 1, "v", 1, NULL, 0, true,
                                      errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_KAFKA, "got %s: %s", tb_err_name(err), errbuf);
        cr_assert(strstr(errbuf, "produce to mock.runs"), "names the topic: %s", errbuf);
        cr_assert(strstr(errbuf, "TOPIC_AUTHORIZATION_FAILED"), "names the error: %s", errbuf);
        /* librdkafka then fails the topic's records at once (no hang) until
         * its next metadata refresh; after that the producer works again */
        struct retry_arg ra = {p, 0, 0};
        cr_assert(tbt_wait_until(produce_ok, &ra, 20000), "still failing after %d tries: %s",
                  ra.tries, errbuf);
        cr_log_info("recovered after %d fast failures", ra.failures);
        rd_kafka_destroy(p);
}

/* The producer in a fatal state for good (what librdkafka 2.0.2 does with
 * OUT_OF_ORDER_SEQUENCE_NUMBER after a leader moves, tools/chaos --cluster):
 * tb_bus_rprod replaces it, and records go through again. */
Test(bus_mock, a_fatal_producer_is_replaced_and_records_flow_again, .init = setup,
     .fini = teardown, .timeout = 60) {
        tb_bus_rprod_t *p = NULL;
        tb_err_t err = tb_bus_rprod_new(conf, NULL, "test", &p, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "%s", errbuf);
        err = tb_bus_produce(tb_bus_rprod_get(p), conf, TB_TOPIC_RUNS, 0, "k", 1, "a", 1, NULL,
                             0, true, errbuf, sizeof(errbuf));
        tb_bus_rprod_put(p);
        cr_assert_eq(err, TB_OK, "before: %s", errbuf);
        cr_assert_not(tb_bus_rprod_recover(p), "a healthy producer is kept");

        rd_kafka_t *old = tb_bus_rprod_get(p);
        cr_assert_eq(rd_kafka_test_fatal_error(old, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                               "injected by the test"),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        err = tb_bus_produce(old, conf, TB_TOPIC_RUNS, 0, "k", 1, "b", 1, NULL, 0, true, errbuf,
                             sizeof(errbuf));
        tb_bus_rprod_put(p);
        cr_assert_eq(err, TB_ERR_KAFKA, "a fatal producer fails: %s %s", tb_err_name(err),
                     errbuf);
        cr_assert(strstr(errbuf, "fatal producer error"), "%s", errbuf);

        cr_assert(tb_bus_rprod_recover(p), "the fatal producer is replaced");
        cr_assert_eq(tb_bus_rprod_rebuilds(p), 1);
        cr_assert_not(tb_bus_rprod_recover(p), "once");
        rd_kafka_t *fresh = tb_bus_rprod_get(p);
        cr_assert_eq(rd_kafka_fatal_error(fresh, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
        err = tb_bus_produce(fresh, conf, TB_TOPIC_RUNS, 0, "k", 1, "c", 1, NULL, 0, true, errbuf,
                             sizeof(errbuf));
        tb_bus_rprod_put(p);
        cr_assert_eq(err, TB_OK, "after: %s", errbuf);
        tb_bus_rprod_destroy(p, 5000);
}

struct fatal_arg {
        tb_bus_rprod_t *p;
        tb_err_t err;
};

/* A sync produce on a handle taken before the fatal error: it holds the
 * handle while it waits, so the replacement waits for it, and it ends. */
static void *produce_in_thread(void *arg) {
        struct fatal_arg *fa = arg;
        char e[512];
        for (int i = 0; i < 50; i++) {
                fa->err = tb_bus_produce(tb_bus_rprod_get(fa->p), conf, TB_TOPIC_RUNS, 0, "k", 1,
                                         "t", 1, NULL, 0, true, e, sizeof(e));
                tb_bus_rprod_put(fa->p);
                tb_bus_rprod_recover(fa->p);
        }
        return NULL;
}

Test(bus_mock, a_producer_is_replaced_while_other_threads_produce, .init = setup,
     .fini = teardown, .timeout = 60) {
        tb_bus_rprod_t *p = NULL;
        cr_assert_eq(tb_bus_rprod_new(conf, NULL, "test", &p, errbuf, sizeof(errbuf)), TB_OK,
                     "%s", errbuf);
        struct fatal_arg fa[3];
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
                fa[i] = (struct fatal_arg){p, TB_OK};
                cr_assert_eq(pthread_create(&th[i], NULL, produce_in_thread, &fa[i]), 0);
        }
        rd_kafka_test_fatal_error(tb_bus_rprod_get(p),
                                  RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, "injected");
        tb_bus_rprod_put(p);
        for (int i = 0; i < 3; i++)
                pthread_join(th[i], NULL);
        cr_assert_geq(tb_bus_rprod_rebuilds(p), 1, "replaced while in use");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(fa[i].err, TB_OK, "thread %d's last record failed", i);
        tb_bus_rprod_destroy(p, 5000);
}

Test(bus_mock, sync_produce_times_out_when_broker_is_down, .init = setup, .fini = teardown,
     .timeout = 60) {
        char kv[] = "3000";
        /* a short message.timeout.ms through the pass-through group */
        tb_kv_t *more = realloc(conf->kafka, (conf->kafka_cnt + 1) * sizeof(*more));
        cr_assert_not_null(more);
        conf->kafka = more;
        conf->kafka[conf->kafka_cnt].key = strdup("message.timeout.ms");
        conf->kafka[conf->kafka_cnt].value = strdup(kv);
        conf->kafka_cnt++;
        rd_kafka_t *p = producer();
        cr_assert_eq(rd_kafka_mock_broker_set_down(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
        int64_t t0 = tb_mono_us();
        tb_err_t err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, 0, "k", 1, "v", 1, NULL, 0, true,
                                      errbuf, sizeof(errbuf));
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_eq(err, TB_ERR_TIMEOUT, "got %s: %s", tb_err_name(err), errbuf);
        cr_assert(strstr(errbuf, "mock.runs") && strstr(errbuf, "message.timeout.ms"), "%s",
                  errbuf);
        cr_assert(took_ms >= 2500 && took_ms < 20000, "took %lld ms", (long long)took_ms);
        rd_kafka_destroy(p);
}

/** Produce \p n records "r0".. to mock.runs [0]. */
static void produce_records(int n) {
        rd_kafka_t *p = NULL;
        cr_assert_eq(tb_bus_producer_new(conf, NULL, &p, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        for (int i = 0; i < n; i++) {
                char v[16];
                snprintf(v, sizeof(v), "r%d", i);
                cr_assert_eq(tb_bus_produce(p, conf, TB_TOPIC_RUNS, 0, "k", 1, v, strlen(v), NULL,
                                            0, true, errbuf, sizeof(errbuf)),
                             TB_OK, "%s", errbuf);
        }
        rd_kafka_destroy(p);
}

/** Read mock.runs [0] from \p from to its end with \p rk (a reader);
 *  @returns the values, comma-separated (malloc'd). */
static char *read_to_eof(rd_kafka_t *rk, int64_t from) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, "mock.runs", 0)->offset = from;
        cr_assert_eq(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_topic_partition_list_destroy(l);
        tb_buf_t got = {0};
        int64_t deadline = tb_mono_us() + 20000000;
        for (bool eof = false; !eof;) {
                cr_assert(tb_mono_us() < deadline, "no end of partition; read: %.*s",
                          (int)got.len, got.data ? got.data : "");
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        eof = true;
                } else {
                        cr_assert_eq(m->err, RD_KAFKA_RESP_ERR_NO_ERROR, "%s",
                                     rd_kafka_message_errstr(m));
                        tb_buf_printf(&got, "%s%.*s", got.len ? "," : "", (int)m->len,
                                      (const char *)m->payload);
                }
                rd_kafka_message_destroy(m);
        }
        char *s = strdup(got.data ? got.data : "");
        tb_buf_free(&got);
        return s;
}

Test(bus_mock, reader_reads_an_assigned_partition_to_its_end, .init = setup, .fini = teardown,
     .timeout = 60) {
        produce_records(3);
        rd_kafka_t *rk = NULL;
        tb_reader_opts_t o = {.group_id = "mock.reader", .read_committed = true,
                              .partition_eof = true};
        cr_assert_eq(tb_bus_reader_new(conf, &o, &rk, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        char *all = read_to_eof(rk, RD_KAFKA_OFFSET_BEGINNING);
        cr_assert_str_eq(all, "r0,r1,r2");
        free(all);
        char *tail = read_to_eof(rk, 2);
        cr_assert_str_eq(tail, "r2", "an explicit offset is where it starts");
        free(tail);
        /* a reader commits nothing: the group has no offset afterwards */
        rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(c, "mock.runs", 0);
        cr_assert_eq(rd_kafka_committed(rk, c, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(c->elems[0].offset, RD_KAFKA_OFFSET_INVALID, "committed %lld",
                     (long long)c->elems[0].offset);
        rd_kafka_topic_partition_list_destroy(c);
        tb_bus_consumer_destroy(rk, 5000);
}

/* The scheduler's reload once blocked in rd_kafka_query_watermark_offsets for
 * as long as a killed broker stayed down; tb_bus_watermarks keeps its bound. */
Test(bus_mock, watermarks_answer_and_keep_their_timeout_when_the_leader_is_down,
     .init = setup, .fini = teardown, .timeout = 60) {
        produce_records(3);
        rd_kafka_t *rk = NULL;
        tb_reader_opts_t o = {.group_id = "mock.wm", .read_committed = true};
        cr_assert_eq(tb_bus_reader_new(conf, &o, &rk, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        int64_t lo = -9, hi = -9;
        rd_kafka_resp_err_t e = tb_bus_watermarks(rk, "mock.runs", 0, 10000, &lo, &hi);
        cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(e));
        cr_assert(lo == 0 && hi == 3, "watermarks %lld..%lld, want 0..3", (long long)lo,
                  (long long)hi);
        e = tb_bus_watermarks(rk, "mock.runs", 1, 10000, &lo, &hi);
        cr_assert(!e && lo == 0 && hi == 0, "empty partition: %s %lld..%lld",
                  rd_kafka_err2str(e), (long long)lo, (long long)hi);
        cr_assert_eq(rd_kafka_mock_broker_set_down(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
        int64_t t0 = tb_mono_us();
        e = tb_bus_watermarks(rk, "mock.runs", 0, 2000, &lo, &hi);
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_neq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "answered with the leader down");
        cr_assert(took_ms < 6000, "took %lld ms for a 2000 ms bound (%s)", (long long)took_ms,
                  rd_kafka_err2str(e));
        cr_assert_eq(rd_kafka_mock_broker_set_up(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
        tb_bus_consumer_destroy(rk, 5000);
}

/* After a broker's failure its partitions move: the answer "not leader" must
 * lead to the new leader within the bound, not to the same error forever
 * (the scheduler retried a reload every second for minutes). */
Test(bus_mock, watermarks_follow_a_partition_to_its_new_leader, .timeout = 60) {
        char e[256];
        tb_log_set_level(TB_LOG_ERROR);
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        rd_kafka_conf_set(c, "log_level", "3", e, sizeof(e));
        rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
        cr_assert_not_null(host, "%s", e);
        rd_kafka_mock_cluster_t *m3 = rd_kafka_mock_cluster_new(host, 3);
        cr_assert_not_null(m3);
        setenv("TASKBUS_KAFKA", rd_kafka_mock_cluster_bootstraps(m3), 1);
        tb_config_t *cf = NULL;
        cr_assert_eq(tb_config_load(NULL, &cf, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        cr_assert_eq(rd_kafka_mock_topic_create(m3, "mock.ck", 1, 3), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(rd_kafka_mock_partition_set_leader(m3, "mock.ck", 0, 1),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_t *rk = NULL;
        tb_reader_opts_t o = {.group_id = "mock.wm3", .read_committed = true};
        cr_assert_eq(tb_bus_reader_new(cf, &o, &rk, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        int64_t lo = -9, hi = -9;
        rd_kafka_resp_err_t err = tb_bus_watermarks(rk, "mock.ck", 0, 10000, &lo, &hi);
        cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(err));
        cr_assert_eq(rd_kafka_mock_partition_set_leader(m3, "mock.ck", 0, 2),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        err = tb_bus_watermarks(rk, "mock.ck", 0, 10000, &lo, &hi);
        cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "after the leader moved: %s",
                     rd_kafka_err2str(err));
        cr_assert(lo == 0 && hi == 0, "%lld..%lld", (long long)lo, (long long)hi);
        tb_bus_consumer_destroy(rk, 5000);
        tb_config_destroy(cf);
        rd_kafka_mock_cluster_destroy(m3);
        rd_kafka_destroy(host);
}

Test(bus_mock, reader_bootstrap_overrides_the_configured_kafka, .init = setup,
     .fini = teardown, .timeout = 60) {
        produce_records(1);
        /* the configured Kafka is nowhere; the reader is pointed at the mock */
        bool replaced = false;
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, "bootstrap.servers")) {
                        free(conf->kafka[i].value);
                        conf->kafka[i].value = strdup("127.0.0.1:1");
                        replaced = true;
                }
        cr_assert(replaced, "the mock's address comes in as bootstrap.servers");
        rd_kafka_t *rk = NULL;
        tb_reader_opts_t o = {.group_id = "mock.reader",
                              .bootstrap = rd_kafka_mock_cluster_bootstraps(mc),
                              .read_committed = true,
                              .partition_eof = true,
                              .connect_timeout_ms = 2000};
        cr_assert_eq(tb_bus_reader_new(conf, &o, &rk, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        char *all = read_to_eof(rk, RD_KAFKA_OFFSET_BEGINNING);
        cr_assert_str_eq(all, "r0");
        free(all);
        tb_bus_consumer_destroy(rk, 5000);
}

Test(bus_mock, reader_argument_errors, .init = setup, .fini = teardown, .timeout = 60) {
        rd_kafka_t *rk = NULL;
        tb_reader_opts_t o = {.group_id = NULL};
        cr_assert_eq(tb_bus_reader_new(conf, &o, &rk, errbuf, sizeof(errbuf)), TB_ERR_INVALID);
        cr_assert(strstr(errbuf, "group_id"), "%s", errbuf);
        cr_assert_null(rk);
        o.group_id = "g";
        o.offset_reset = "middle";
        cr_assert_eq(tb_bus_reader_new(conf, &o, &rk, errbuf, sizeof(errbuf)), TB_ERR_INVALID);
        cr_assert(strstr(errbuf, "offset_reset"), "%s", errbuf);
        cr_assert_null(rk);
        o.offset_reset = NULL;
        o.fetch_wait_max_ms = -5; /* not positive: librdkafka's default, no error */
        cr_assert_eq(tb_bus_reader_new(conf, &o, &rk, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        tb_bus_consumer_destroy(rk, 1000);
}

/* ---- a group member's rebalance hooks ------------------------------------------- */

typedef struct hook_log {
        int assign_calls, assigned_calls, revoke_calls;
        int assigned_cnt, revoked_cnt;
        bool revoked_lost;
} hook_log_t;

/* every partition starts at offset 1: the hook's offsets are used */
static void hook_on_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                           void *opaque) {
        (void)rk;
        hook_log_t *h = opaque;
        h->assign_calls++;
        for (int i = 0; i < parts->cnt; i++)
                parts->elems[i].offset = 1;
}

static void hook_on_assigned(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
        hook_log_t *h = opaque;
        h->assigned_calls++;
        h->assigned_cnt += parts->cnt;
        /* it runs after the assignment: the partitions are there */
        rd_kafka_topic_partition_list_t *now = NULL;
        cr_assert_eq(rd_kafka_assignment(rk, &now), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_geq(now->cnt, parts->cnt);
        rd_kafka_topic_partition_list_destroy(now);
}

static void hook_on_revoke(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                           bool lost, void *opaque) {
        hook_log_t *h = opaque;
        h->revoke_calls++;
        h->revoked_cnt += parts->cnt;
        h->revoked_lost |= lost;
        /* it runs before the unassignment: the partitions are still there */
        rd_kafka_topic_partition_list_t *now = NULL;
        cr_assert_eq(rd_kafka_assignment(rk, &now), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_geq(now->cnt, parts->cnt);
        rd_kafka_topic_partition_list_destroy(now);
}

Test(bus_mock, rebalance_hooks_set_offsets_and_see_revocations, .init = setup,
     .fini = teardown, .timeout = 90) {
        produce_records(3);
        hook_log_t h = {0};
        tb_rebalance_t rb = {.sub = "test",
                             .on_assign = hook_on_assign,
                             .on_assigned = hook_on_assigned,
                             .on_revoke = hook_on_revoke,
                             .opaque = &h};
        tb_consumer_opts_t o = {.group_id = "mock.hooks", .read_committed = true,
                                .rebalance = &rb};
        tb_topic_t runs = TB_TOPIC_RUNS;
        rd_kafka_t *rk = NULL;
        cr_assert_eq(tb_bus_consumer_new(conf, &o, &runs, 1, &rk, errbuf, sizeof(errbuf)), TB_OK,
                     "%s", errbuf);
        cr_assert_eq(rd_kafka_opaque(rk), &rb);
        /* the first record read is at offset 1, where on_assign put the start */
        rd_kafka_message_t *m = NULL;
        int64_t deadline = tb_mono_us() + 60000000;
        while (!m && tb_mono_us() < deadline) {
                m = rd_kafka_consumer_poll(rk, 100);
                if (m && m->err) {
                        rd_kafka_message_destroy(m);
                        m = NULL;
                }
        }
        cr_assert_not_null(m, "nothing consumed; assign hook called %d times", h.assign_calls);
        cr_assert_eq(m->partition, 0);
        cr_assert_eq(m->offset, 1);
        cr_assert_eq(m->len, 2);
        cr_assert(!memcmp(m->payload, "r1", 2));
        rd_kafka_message_destroy(m);
        cr_assert_eq(h.assign_calls, 1);
        cr_assert_eq(h.assigned_calls, 1);
        cr_assert_eq(h.assigned_cnt, 3, "the three partitions of mock.runs");
        cr_assert_eq(h.revoke_calls, 0);
        /* leaving the subscription revokes them through the hook */
        cr_assert_eq(rd_kafka_unsubscribe(rk), RD_KAFKA_RESP_ERR_NO_ERROR);
        deadline = tb_mono_us() + 30000000;
        while (h.revoked_cnt < 3 && tb_mono_us() < deadline) {
                m = rd_kafka_consumer_poll(rk, 100);
                if (m)
                        rd_kafka_message_destroy(m);
        }
        cr_assert_eq(h.revoked_cnt, 3, "revoked %d of 3", h.revoked_cnt);
        cr_assert_not(h.revoked_lost, "a clean revocation is not a loss");
        rd_kafka_topic_partition_list_t *now = NULL;
        cr_assert_eq(rd_kafka_assignment(rk, &now), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(now->cnt, 0, "unassigned after the hook");
        rd_kafka_topic_partition_list_destroy(now);
        tb_bus_consumer_destroy(rk, 5000);
}

static void whole_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts, void *opaque) {
        (void)rk, (void)err, (void)parts, (void)opaque;
}

Test(bus_mock, rebalance_hooks_exclude_a_rebalance_cb, .init = setup, .fini = teardown) {
        tb_rebalance_t rb = {.sub = "test"};
        tb_consumer_opts_t o = {.group_id = "g", .rebalance = &rb,
                                .rebalance_cb = whole_rebalance_cb};
        tb_topic_t runs = TB_TOPIC_RUNS;
        rd_kafka_t *rk = NULL;
        cr_assert_eq(tb_bus_consumer_new(conf, &o, &runs, 1, &rk, errbuf, sizeof(errbuf)),
                     TB_ERR_INVALID);
        cr_assert(strstr(errbuf, "exclude"), "%s", errbuf);
        cr_assert_null(rk);
}

/* Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's UtilsTest),
 * as Java ints. */
Test(bus_mock, murmur2_matches_java_client) {
        static const struct {
                const char *key;
                int32_t java;
        } v[] = {
                {"21", -973932308},
                {"foobar", -790332482},
                {"a-little-bit-long-string", -985981536},
                {"a-little-bit-longer-string", -1486304829},
                {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
                {"abc", 479470107},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(v); i++) {
                uint32_t positive = (uint32_t)v[i].java & 0x7fffffffu;
                /* with 2^31-1 partitions the modulo keeps the hash itself */
                int32_t got = tb_bus_partition_for(v[i].key, strlen(v[i].key), 0x7fffffff);
                cr_assert_eq((uint32_t)got, positive % 0x7fffffffu, "murmur2(\"%s\")", v[i].key);
                int32_t p6 = tb_bus_partition_for(v[i].key, strlen(v[i].key), 6);
                cr_assert_eq(p6, (int32_t)(positive % 6), "partition of \"%s\"", v[i].key);
        }
        cr_assert_eq(tb_bus_partition_for(NULL, 0, 6), RD_KAFKA_PARTITION_UA);
        cr_assert_eq(tb_bus_partition_for("x", 1, 0), RD_KAFKA_PARTITION_UA);
}

Test(bus_mock, topic_names) {
        tb_config_t *c = tb_config_defaults();
        cr_assert_not_null(c);
        char buf[256];
        static const char *want[TB_TOPIC__COUNT] = {
                "task-commands", "task-replies", "task-events", "runs",
                "run-results",   "run-logs",     "runs-dlq",    "scheduler-checkpoints",
        };
        for (int t = 0; t < TB_TOPIC__COUNT; t++) {
                cr_assert_str_eq(tb_topic_short((tb_topic_t)t), want[t]);
                char full[256];
                snprintf(full, sizeof(full), "%s%s", c->topic_prefix, want[t]);
                cr_assert_str_eq(tb_topic_name(c, (tb_topic_t)t, buf, sizeof(buf)), full);
        }
        cr_assert_str_eq(tb_topic_name(c, TB_TOPIC_EVENTS, buf, sizeof(buf)),
                         "taskbus.task-events");
        tb_config_destroy(c);
}

Test(bus_mock, conf_new_rejects_bad_pass_through_with_its_name) {
        tb_config_t *c = tb_config_defaults();
        cr_assert_not_null(c);
        tb_kv_t *more = realloc(c->kafka, (c->kafka_cnt + 1) * sizeof(*more));
        cr_assert_not_null(more);
        c->kafka = more;
        c->kafka[c->kafka_cnt].key = strdup("linger.ms");
        c->kafka[c->kafka_cnt].value = strdup("soon");
        c->kafka_cnt++;
        rd_kafka_conf_t *rc = NULL;
        tb_err_t err = tb_bus_conf_new(c, &rc, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_INVALID);
        cr_assert_null(rc);
        cr_assert(strstr(errbuf, "linger.ms"), "%s", errbuf);
        tb_config_destroy(c);
}
