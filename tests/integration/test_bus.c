/**
 * @file test_bus.c
 * @brief The Kafka layer against the real broker ($TASKBUS_KAFKA or
 *        127.0.0.1:9092, e.g. from `tools/stack up`): topic creation and
 *        retention updates, every schema through a transaction and a
 *        read_committed consumer, aborted transactions, fencing, the
 *        partitioner, and produce errors.
 *
 * Each test uses its own random topic prefix (and deletes its topics), so
 * runs never see each other's records.
 */
#include "bus/bus.h"
#include "interop/fixtures.h"
#include "serde/serde.h"
#include "support.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENSURE_TIMEOUT_MS 30000
#define CONSUME_TIMEOUT_MS 30000

static char errbuf[1024];
static tb_config_t *conf;

/** A config for the test broker with a prefix of its own. */
static tb_config_t *mkconf(int partitions) {
        tb_config_t *c = NULL;
        tb_err_t err = tb_config_load(NULL, &c, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "config: %s", errbuf);
        unsigned char rnd[6];
        cr_assert_eq(tb_random_bytes(rnd, sizeof(rnd)), TB_OK);
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "t%02x%02x%02x%02x%02x%02x.", rnd[0], rnd[1], rnd[2],
                 rnd[3], rnd[4], rnd[5]);
        free(c->topic_prefix);
        c->topic_prefix = strdup(prefix);
        c->topic_partitions = partitions;
        c->topic_replication = 1;
        return c;
}

static void setup(void) {
        tb_log_set_level(TB_LOG_WARN);
        conf = mkconf(3);
}

static void teardown(void) {
        if (!conf)
                return;
        /* best effort: a failed test must still not leave the broker littered */
        if (tb_bus_topics_delete(conf, ENSURE_TIMEOUT_MS, errbuf, sizeof(errbuf)))
                fprintf(stderr, "cleanup: %s\n", errbuf);
        tb_config_destroy(conf);
        conf = NULL;
}

static void ensure_ok(const tb_config_t *c) {
        tb_err_t err = tb_bus_topics_ensure(c, ENSURE_TIMEOUT_MS, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "topics ensure: %s: %s", tb_err_name(err), errbuf);
}

static const tb_topic_info_t *find_info(const tb_topic_info_t *infos, size_t n,
                                        const char *name) {
        for (size_t i = 0; i < n; i++)
                if (!strcmp(infos[i].name, name))
                        return &infos[i];
        return NULL;
}

static void expect_retentions(const tb_config_t *c) {
        tb_topic_info_t *infos = NULL;
        size_t n = 0;
        tb_err_t err = tb_bus_topics_list(c, &infos, &n, ENSURE_TIMEOUT_MS, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "topics list: %s", errbuf);
        cr_assert_eq(n, TB_TOPIC__COUNT, "exactly our 8 topics carry the prefix, got %zu", n);
        struct {
                tb_topic_t t;
                int64_t ms; /* -2: compacted */
        } want[] = {
                {TB_TOPIC_COMMANDS, c->retention_commands_ms},
                {TB_TOPIC_REPLIES, c->retention_replies_ms},
                {TB_TOPIC_EVENTS, -1},
                {TB_TOPIC_RUNS, c->retention_runs_ms},
                {TB_TOPIC_RESULTS, c->retention_results_ms},
                {TB_TOPIC_LOGS, c->retention_logs_ms},
                {TB_TOPIC_DLQ, c->retention_dlq_ms},
                {TB_TOPIC_CHECKPOINTS, -2},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(want); i++) {
                char name[256], ret[32];
                tb_topic_name(c, want[i].t, name, sizeof(name));
                const tb_topic_info_t *ti = find_info(infos, n, name);
                cr_assert_not_null(ti, "topic %s listed", name);
                cr_assert_eq(ti->partitions, c->topic_partitions, "%s partitions %d", name,
                             ti->partitions);
                cr_assert_eq(ti->replication, 1, "%s replication", name);
                if (want[i].ms == -2)
                        snprintf(ret, sizeof(ret), "compact");
                else
                        snprintf(ret, sizeof(ret), "%" PRId64, want[i].ms);
                cr_assert_str_eq(ti->retention, ret, "%s retention %s, want %s", name,
                                 ti->retention, ret);
        }
        free(infos);
}

Test(bus, topics_ensure_creates_lists_and_updates, .init = setup, .fini = teardown,
     .timeout = 120) {
        ensure_ok(conf);
        expect_retentions(conf);
        /* idempotent */
        ensure_ok(conf);
        expect_retentions(conf);
        /* a changed retention reaches the existing topic */
        conf->retention_runs_ms = 3600000;
        conf->retention_logs_ms = 86400000;
        ensure_ok(conf);
        expect_retentions(conf);

        /* topics with fewer partitions than configured: refused with the fix */
        conf->topic_partitions = 5;
        tb_err_t err = tb_bus_topics_ensure(conf, ENSURE_TIMEOUT_MS, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_INVALID, "got %s: %s", tb_err_name(err), errbuf);
        cr_assert(strstr(errbuf, "topics.partitions") && strstr(errbuf, "has 3 partitions"),
                  "message: %s", errbuf);
        conf->topic_partitions = 3;
}

Test(bus, topics_ensure_unreachable_broker, .timeout = 60) {
        tb_log_set_level(TB_LOG_ERROR);
        setenv("TASKBUS_KAFKA", "127.0.0.1:1", 1);
        tb_config_t *c = mkconf(3);
        int64_t t0 = tb_mono_us();
        tb_err_t err = tb_bus_topics_ensure(c, 1500, errbuf, sizeof(errbuf));
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_eq(err, TB_ERR_TIMEOUT, "got %s: %s", tb_err_name(err), errbuf);
        cr_assert(strstr(errbuf, "Kafka at 127.0.0.1:1 is not reachable"), "message: %s",
                  errbuf);
        cr_assert(took_ms < 10000, "gave up after %" PRId64 " ms", took_ms);
        tb_config_destroy(c);
}

/* ---- consuming ----------------------------------------------------------- */

/** Consume until \p fn returns true (done) or the timeout passes.
 *  @returns whether \p fn reported done. */
static bool consume(rd_kafka_t *rk, bool (*fn)(const rd_kafka_message_t *, void *), void *arg,
                    int timeout_ms) {
        int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
        while (tb_mono_us() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (m->err) {
                        cr_log_warn("consumer: %s", rd_kafka_message_errstr(m));
                        rd_kafka_message_destroy(m);
                        continue;
                }
                bool done = fn(m, arg);
                rd_kafka_message_destroy(m);
                if (done)
                        return true;
        }
        return false;
}

static rd_kafka_t *consumer(const tb_config_t *c, bool read_committed, const tb_topic_t *topics,
                            size_t n) {
        char group[128];
        char id[37];
        tb_uuid4(id);
        snprintf(group, sizeof(group), "%stest-%s", c->topic_prefix, id);
        tb_consumer_opts_t o = {
                .group_id = group,
                .read_committed = read_committed,
                .offset_reset = "earliest",
        };
        rd_kafka_t *rk = NULL;
        tb_err_t err = tb_bus_consumer_new(c, &o, topics, n, &rk, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "consumer: %s", errbuf);
        return rk;
}

static void consumer_done(rd_kafka_t *rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

static void producer_done(rd_kafka_t *rk) {
        rd_kafka_flush(rk, 10000);
        rd_kafka_destroy(rk);
}

/* ---- every schema through the broker -------------------------------------- */

static const tb_topic_t schema_topic[TB_SCHEMA__COUNT] = {
        [TB_SCHEMA_TASK_COMMAND] = TB_TOPIC_COMMANDS,
        [TB_SCHEMA_TASK_REPLY] = TB_TOPIC_REPLIES,
        [TB_SCHEMA_TASK_EVENT] = TB_TOPIC_EVENTS,
        [TB_SCHEMA_RUN_REQUEST] = TB_TOPIC_RUNS,
        [TB_SCHEMA_RUN_RESULT] = TB_TOPIC_RESULTS,
        [TB_SCHEMA_LOG_CHUNK] = TB_TOPIC_LOGS,
        [TB_SCHEMA_SCHEDULER_CHECKPOINT] = TB_TOPIC_CHECKPOINTS,
};

typedef struct rt_state {
        json_t *values[TB_SCHEMA__COUNT];
        size_t expected, matched;
        bool seen[TB_SCHEMA__COUNT][16];
} rt_state_t;

static bool rt_check(const rd_kafka_message_t *m, void *arg) {
        rt_state_t *st = arg;
        const void *hv;
        size_t hlen;
        cr_assert_eq(tb_bus_header_get(m, "tb-fixture", &hv, &hlen), TB_OK,
                     "record without its header");
        char tag[64];
        cr_assert(hlen < sizeof(tag));
        memcpy(tag, hv, hlen);
        tag[hlen] = '\0';
        int sid = -1, idx = -1;
        cr_assert_eq(sscanf(tag, "%d/%d", &sid, &idx), 2, "header value %s", tag);
        cr_assert(sid >= 0 && sid < TB_SCHEMA__COUNT && idx >= 0 && idx < 16);
        cr_assert_not(st->seen[sid][idx], "record %s delivered twice", tag);
        st->seen[sid][idx] = true;

        char topic[256];
        tb_topic_name(conf, schema_topic[sid], topic, sizeof(topic));
        cr_assert_str_eq(rd_kafka_topic_name(m->rkt), topic);
        cr_assert_eq(tb_bus_header_get(m, "no-such-header", &hv, &hlen), TB_ERR_NOT_FOUND);

        tb_schema_id_t got;
        json_t *decoded = NULL;
        tb_err_t err = tb_serde_decode(m->payload, m->len, TB_SCHEMA_ANY, &got, &decoded, errbuf,
                                       sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "decode %s: %s", tag, errbuf);
        cr_assert_eq((int)got, sid, "schema of %s", tag);
        json_t *orig = json_array_get(st->values[sid], (size_t)idx);
        char *a = json_dumps(orig, JSON_SORT_KEYS | JSON_COMPACT);
        char *b = json_dumps(decoded, JSON_SORT_KEYS | JSON_COMPACT);
        cr_assert(json_equal(orig, decoded), "%s %s changed through Kafka:\n%s\n%s",
                  tb_serde_name(got), tag, a, b);
        free(a);
        free(b);
        json_decref(decoded);
        return ++st->matched == st->expected;
}

Test(bus, roundtrip_every_schema_through_transaction, .init = setup, .fini = teardown,
     .timeout = 180) {
        static rt_state_t st;
        memset(&st, 0, sizeof(st));
        ensure_ok(conf);
        rd_kafka_t *p = NULL;
        char txid[128];
        snprintf(txid, sizeof(txid), "%stxn-roundtrip", conf->topic_prefix);
        tb_err_t err = tb_bus_producer_new(conf, txid, &p, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "producer: %s", errbuf);
        cr_assert_eq(tb_bus_txn_begin(p, errbuf, sizeof(errbuf)), TB_OK, "begin: %s", errbuf);
        for (int sid = 0; sid < TB_SCHEMA__COUNT; sid++) {
                st.values[sid] = tbt_fixture_values((tb_schema_id_t)sid);
                cr_assert_not_null(st.values[sid], "fixtures of %s", tb_serde_name(sid));
                size_t i;
                json_t *v;
                json_array_foreach(st.values[sid], i, v) {
                        cr_assert(i < 16);
                        tb_buf_t enc = {0};
                        err = tb_serde_encode((tb_schema_id_t)sid, v, &enc, errbuf, sizeof(errbuf));
                        cr_assert_eq(err, TB_OK, "encode %s: %s", tb_serde_name(sid), errbuf);
                        const char *key = json_string_value(json_object_get(
                                v, sid == TB_SCHEMA_TASK_REPLY ? "correlation_id" : "task_id"));
                        cr_assert_not_null(key);
                        char tag[48];
                        snprintf(tag, sizeof(tag), "%d/%zu", sid, i);
                        tb_header_t h[] = {
                                {"tb-fixture", tag, strlen(tag)},
                                {"tb-schema", tb_serde_name(sid), strlen(tb_serde_name(sid))},
                        };
                        err = tb_bus_produce(p, conf, schema_topic[sid], RD_KAFKA_PARTITION_UA,
                                             key, strlen(key), enc.data, enc.len, h, 2, true,
                                             errbuf, sizeof(errbuf));
                        cr_assert_eq(err, TB_OK, "produce %s: %s", tag, errbuf);
                        tb_buf_free(&enc);
                        st.expected++;
                }
        }
        err = tb_bus_txn_commit(p, 30000, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "commit: %s", errbuf);
        producer_done(p);

        tb_topic_t topics[TB_SCHEMA__COUNT];
        for (int sid = 0; sid < TB_SCHEMA__COUNT; sid++)
                topics[sid] = schema_topic[sid];
        rd_kafka_t *c = consumer(conf, true, topics, TB_SCHEMA__COUNT);
        bool all = consume(c, rt_check, &st, CONSUME_TIMEOUT_MS);
        cr_assert(all, "only %zu of %zu records came back", st.matched, st.expected);
        consumer_done(c);
        for (int sid = 0; sid < TB_SCHEMA__COUNT; sid++)
                json_decref(st.values[sid]);
}

/* ---- aborted transactions ------------------------------------------------- */

typedef struct vis_state {
        bool saw_aborted, saw_committed, saw_marker;
} vis_state_t;

static bool vis_check(const rd_kafka_message_t *m, void *arg) {
        vis_state_t *st = arg;
        if (m->len == 7 && !memcmp(m->payload, "aborted", 7))
                st->saw_aborted = true;
        if (m->len == 9 && !memcmp(m->payload, "committed", 9))
                st->saw_committed = true;
        if (m->len == 6 && !memcmp(m->payload, "marker", 6))
                st->saw_marker = true;
        /* the marker was committed last, in the same partition */
        return st->saw_marker;
}

Test(bus, aborted_transaction_invisible_to_read_committed, .init = setup, .fini = teardown,
     .timeout = 180) {
        ensure_ok(conf);
        rd_kafka_t *p = NULL;
        char txid[128];
        snprintf(txid, sizeof(txid), "%stxn-abort", conf->topic_prefix);
        cr_assert_eq(tb_bus_producer_new(conf, txid, &p, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        /* one key, one partition: the consumer sees them in order */
        const char *key = "task-1";
        cr_assert_eq(tb_bus_txn_begin(p, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_produce(p, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, key, 6,
                                    "aborted", 7, NULL, 0, true, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_txn_abort(p, 30000, errbuf, sizeof(errbuf)), TB_OK, "abort: %s",
                     errbuf);
        cr_assert_eq(tb_bus_txn_begin(p, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_produce(p, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, key, 6,
                                    "committed", 9, NULL, 0, true, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_produce(p, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, key, 6,
                                    "marker", 6, NULL, 0, false, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_txn_commit(p, 30000, errbuf, sizeof(errbuf)), TB_OK, "commit: %s",
                     errbuf);
        producer_done(p);

        tb_topic_t runs = TB_TOPIC_RUNS;
        vis_state_t committed = {0}, uncommitted = {0};
        rd_kafka_t *c = consumer(conf, true, &runs, 1);
        cr_assert(consume(c, vis_check, &committed, CONSUME_TIMEOUT_MS), "marker not seen");
        consumer_done(c);
        cr_assert(committed.saw_committed);
        cr_assert_not(committed.saw_aborted, "read_committed consumer saw an aborted record");

        /* the aborted record is really in the log: read_uncommitted shows it */
        c = consumer(conf, false, &runs, 1);
        cr_assert(consume(c, vis_check, &uncommitted, CONSUME_TIMEOUT_MS), "marker not seen");
        consumer_done(c);
        cr_assert(uncommitted.saw_aborted && uncommitted.saw_committed);
}

/* ---- fencing -------------------------------------------------------------- */

Test(bus, second_transactional_producer_fences_the_first, .init = setup, .fini = teardown,
     .timeout = 180) {
        ensure_ok(conf);
        char txid[128];
        snprintf(txid, sizeof(txid), "%stxn-fence", conf->topic_prefix);
        rd_kafka_t *p1 = NULL, *p2 = NULL;
        cr_assert_eq(tb_bus_producer_new(conf, txid, &p1, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        cr_assert_eq(tb_bus_txn_begin(p1, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_produce(p1, conf, TB_TOPIC_CHECKPOINTS, RD_KAFKA_PARTITION_UA, "t1",
                                    2, "zombie", 6, NULL, 0, true, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);

        /* the new owner: its init_transactions fences p1 */
        cr_assert_eq(tb_bus_producer_new(conf, txid, &p2, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        tb_err_t err = tb_bus_txn_commit(p1, 30000, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_FENCED, "zombie commit returned %s: %s", tb_err_name(err),
                     errbuf);
        cr_assert(strstr(errbuf, txid), "message names the transactional.id: %s", errbuf);
        /* and the zombie stays fenced */
        err = tb_bus_txn_begin(p1, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_FENCED, "begin after fencing returned %s: %s",
                     tb_err_name(err), errbuf);

        /* the new owner works */
        cr_assert_eq(tb_bus_txn_begin(p2, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_produce(p2, conf, TB_TOPIC_CHECKPOINTS, RD_KAFKA_PARTITION_UA, "t1",
                                    2, "owner", 5, NULL, 0, true, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);
        cr_assert_eq(tb_bus_txn_commit(p2, 30000, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        rd_kafka_destroy(p1);
        producer_done(p2);
}

/* ---- partitioner ---------------------------------------------------------- */

#define PART_KEYS 200

typedef struct part_state {
        unsigned char keys[PART_KEYS][40];
        size_t lens[PART_KEYS];
        bool seen[PART_KEYS];
        int seen_cnt, partitions;
        int per_partition[16];
} part_state_t;

static bool part_check(const rd_kafka_message_t *m, void *arg) {
        part_state_t *st = arg;
        unsigned idx;
        cr_assert_eq(m->len, sizeof(idx));
        memcpy(&idx, m->payload, sizeof(idx));
        cr_assert(idx < PART_KEYS);
        cr_assert_eq(m->key_len, st->lens[idx]);
        cr_assert(!memcmp(m->key, st->keys[idx], st->lens[idx]));
        int32_t want = tb_bus_partition_for(st->keys[idx], st->lens[idx], st->partitions);
        cr_assert_eq(m->partition, want, "key %u (%zu bytes): librdkafka chose %" PRId32
                     ", tb_bus_partition_for says %" PRId32, idx, st->lens[idx], m->partition,
                     want);
        if (!st->seen[idx]) {
                st->seen[idx] = true;
                st->per_partition[m->partition]++;
                st->seen_cnt++;
        }
        return st->seen_cnt == PART_KEYS;
}

Test(bus, partition_for_matches_librdkafka, .init = setup, .fini = teardown, .timeout = 180) {
        static part_state_t st;
        memset(&st, 0, sizeof(st));
        conf->topic_partitions = 7;
        st.partitions = 7;
        ensure_ok(conf);
        rd_kafka_t *p = NULL;
        cr_assert_eq(tb_bus_producer_new(conf, NULL, &p, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        for (unsigned i = 0; i < PART_KEYS; i++) {
                unsigned char len;
                cr_assert_eq(tb_random_bytes(&len, 1), TB_OK);
                /* every tail length (len % 4) and some text-like ids */
                st.lens[i] = 1 + len % 39;
                cr_assert_eq(tb_random_bytes(st.keys[i], st.lens[i]), TB_OK);
                if (i % 4 == 0) {
                        char id[37];
                        tb_uuid4(id);
                        st.lens[i] = 36;
                        memcpy(st.keys[i], id, 36);
                }
                tb_err_t err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA,
                                              st.keys[i], st.lens[i], &i, sizeof(i), NULL, 0,
                                              false, errbuf, sizeof(errbuf));
                cr_assert_eq(err, TB_OK, "%s", errbuf);
        }
        cr_assert_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_destroy(p);

        tb_topic_t runs = TB_TOPIC_RUNS;
        rd_kafka_t *c = consumer(conf, false, &runs, 1);
        cr_assert(consume(c, part_check, &st, CONSUME_TIMEOUT_MS), "only %d of %d keys back",
                  st.seen_cnt, PART_KEYS);
        consumer_done(c);
        /* the keys really spread, so agreement is not a coincidence */
        int used = 0;
        for (int i = 0; i < st.partitions; i++)
                used += st.per_partition[i] > 0;
        cr_assert_eq(used, st.partitions, "200 keys used only %d of %d partitions", used,
                     st.partitions);
}

/* ---- produce errors ------------------------------------------------------- */

Test(bus, sync_produce_to_missing_topic_fails, .init = setup, .fini = teardown, .timeout = 120) {
        /* no ensure: none of this prefix's topics exist, and the broker does not
         * create topics on demand */
        rd_kafka_t *p = NULL;
        cr_assert_eq(tb_bus_producer_new(conf, NULL, &p, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        int64_t t0 = tb_mono_us();
        tb_err_t err = tb_bus_produce(p, conf, TB_TOPIC_DLQ, RD_KAFKA_PARTITION_UA, "k", 1, "v",
                                      1, NULL, 0, true, errbuf, sizeof(errbuf));
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_neq(err, TB_OK, "produce to a missing topic succeeded");
        char name[256];
        tb_topic_name(conf, TB_TOPIC_DLQ, name, sizeof(name));
        cr_assert(strstr(errbuf, name), "message names the topic: %s", errbuf);
        cr_log_info("missing topic: %s after %" PRId64 " ms: %s", tb_err_name(err), took_ms,
                    errbuf);
        cr_assert(took_ms < 60000, "took %" PRId64 " ms", took_ms);
        rd_kafka_destroy(p);
}

Test(bus, produce_argument_errors, .init = setup, .fini = teardown, .timeout = 60) {
        rd_kafka_t *p = NULL;
        char txid[128];
        ensure_ok(conf);
        snprintf(txid, sizeof(txid), "%stxn-args", conf->topic_prefix);
        cr_assert_eq(tb_bus_producer_new(conf, txid, &p, errbuf, sizeof(errbuf)), TB_OK, "%s",
                     errbuf);
        /* a transactional producer outside a transaction */
        tb_err_t err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, "k", 1, "v",
                                      1, NULL, 0, true, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_KAFKA, "%s", errbuf);
        cr_assert(strstr(errbuf, "tb_bus_txn_begin"), "hint: %s", errbuf);
        err = tb_bus_produce(p, conf, TB_TOPIC__COUNT, RD_KAFKA_PARTITION_UA, "k", 1, "v", 1,
                             NULL, 0, true, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_INVALID);
        tb_header_t bad = {NULL, "x", 1};
        err = tb_bus_produce(p, conf, TB_TOPIC_RUNS, RD_KAFKA_PARTITION_UA, "k", 1, "v", 1, &bad,
                             1, true, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_INVALID);
        rd_kafka_destroy(p);

        tb_consumer_opts_t o = {.group_id = NULL};
        rd_kafka_t *c = NULL;
        tb_topic_t runs = TB_TOPIC_RUNS;
        err = tb_bus_consumer_new(conf, &o, &runs, 1, &c, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_INVALID);
        cr_assert(strstr(errbuf, "group_id"), "%s", errbuf);
        o.group_id = "g";
        o.offset_reset = "middle";
        err = tb_bus_consumer_new(conf, &o, &runs, 1, &c, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_ERR_INVALID);
        cr_assert(strstr(errbuf, "offset_reset"), "%s", errbuf);
}

/* ---- configs an operator set survive ensure -------------------------------- */

/** Run one AlterConfigs or DescribeConfigs on topic \p name; @returns the
 *  value of \p get (malloc'd) for describe, NULL for alter. */
static char *admin_topic_config(const tb_config_t *c, const char *name, const char **set,
                                size_t set_cnt, const char *get) {
        rd_kafka_conf_t *rc = NULL;
        cr_assert_eq(tb_bus_conf_new(c, &rc, errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        char e[256];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
        cr_assert_not_null(rk, "%s", e);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_ConfigResource_t *cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
        for (size_t i = 0; i + 1 < set_cnt; i += 2)
                rd_kafka_ConfigResource_set_config(cr, set[i], set[i + 1]);
        if (get)
                rd_kafka_DescribeConfigs(rk, &cr, 1, NULL, q);
        else
                rd_kafka_AlterConfigs(rk, &cr, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        cr_assert_not_null(ev);
        cr_assert_eq(rd_kafka_event_error(ev), 0, "%s", rd_kafka_event_error_string(ev));
        size_t n = 0;
        const rd_kafka_ConfigResource_t **res =
                get ? rd_kafka_DescribeConfigs_result_resources(
                              rd_kafka_event_DescribeConfigs_result(ev), &n)
                    : rd_kafka_AlterConfigs_result_resources(
                              rd_kafka_event_AlterConfigs_result(ev), &n);
        cr_assert_eq(n, 1);
        cr_assert_eq(rd_kafka_ConfigResource_error(res[0]), 0, "%s",
                     rd_kafka_ConfigResource_error_string(res[0]));
        char *value = NULL;
        if (get) {
                size_t cnt = 0;
                const rd_kafka_ConfigEntry_t **ents = rd_kafka_ConfigResource_configs(res[0], &cnt);
                for (size_t i = 0; i < cnt; i++)
                        if (!strcmp(rd_kafka_ConfigEntry_name(ents[i]), get) &&
                            rd_kafka_ConfigEntry_value(ents[i]))
                                value = strdup(rd_kafka_ConfigEntry_value(ents[i]));
        }
        rd_kafka_event_destroy(ev);
        rd_kafka_ConfigResource_destroy(cr);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return value;
}

typedef struct cfg_wait {
        const char *topic, *key, *want;
} cfg_wait_t;

static bool cfg_is(void *arg) {
        cfg_wait_t *w = arg;
        char *v = admin_topic_config(conf, w->topic, NULL, 0, w->key);
        bool ok = v && !strcmp(v, w->want);
        free(v);
        return ok;
}

Test(bus, topics_ensure_keeps_operator_configs, .init = setup, .fini = teardown,
     .timeout = 120) {
        ensure_ok(conf);
        char name[256], ret[32];
        tb_topic_name(conf, TB_TOPIC_RUNS, name, sizeof(name));
        snprintf(ret, sizeof(ret), "%" PRId64, conf->retention_runs_ms);
        /* an operator raises max.message.bytes (AlterConfigs replaces the set,
         * so ours are sent along as they are) */
        const char *set[] = {"max.message.bytes", "2000000", "cleanup.policy", "delete",
                             "retention.ms", ret};
        free(admin_topic_config(conf, name, set, TB_ARRAY_LEN(set), NULL));
        cfg_wait_t w = {name, "max.message.bytes", "2000000"};
        cr_assert(tbt_wait_until(cfg_is, &w, 20000), "operator config not applied");

        conf->retention_runs_ms = 7200000;
        ensure_ok(conf);
        char *v = admin_topic_config(conf, name, NULL, 0, "retention.ms");
        cr_assert_str_eq(v, "7200000");
        free(v);
        v = admin_topic_config(conf, name, NULL, 0, "max.message.bytes");
        cr_assert_str_eq(v, "2000000", "ensure dropped the operator's max.message.bytes");
        free(v);
}
