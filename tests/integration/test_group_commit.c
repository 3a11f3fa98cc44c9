/**
 * @file test_group_commit.c
 * @brief Group commit against real Kafka and PostgreSQL:
 *  - the commands role decides a backlog of commands in batches: every
 *    command gets its reply and its event, every task is projected, and the
 *    events took far fewer Kafka transactions than commands (each
 *    transaction leaves one commit marker per partition it wrote, so the
 *    high watermarks of task-events tell how many there were);
 *  - an idle system commits a lone command at once: with
 *    commands.batch_linger and projector.batch_linger at 10 s, one command
 *    is answered and projected well within 5 s (a generous bound: the
 *    linger would take 10 s);
 *  - the projection of a batch (bus/pgsink.c: pipelined first, row by row
 *    when that fails) with one hostile event among good ones, whose failing
 *    statement is only seen at a pipeline sync: the hostile event is
 *    quarantined, every good one projected, ONE notification names the
 *    batch's task versions, and applying the batch again changes nothing.
 */
#include "bus/bus.h"
#include "projection/projection.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tbt_stack_t g_st;
static pid_t g_pid;
static rd_kafka_t *g_prod;
static tbt_reader_t *g_replies;

static void teardown(void) {
        if (g_pid > 0)
                tbt_daemon_stop(g_pid, SIGTERM);
        g_pid = 0;
        tbt_reader_free(g_replies);
        g_replies = NULL;
        if (g_prod)
                rd_kafka_destroy(g_prod);
        g_prod = NULL;
        tbt_stack_destroy(&g_st);
}

TestSuite(group_commit, .fini = teardown, .timeout = 600);

static void start(const char *extra) {
        tbt_stack_opts_t o = {.extra = extra, .kafka_extra = "session_timeout_ms = 6000;"};
        tbt_stack_create(&g_st, &o);
        g_prod = tbt_stack_producer(&g_st);
        g_replies = tbt_reader_new(&g_st, TB_TOPIC_REPLIES, true);
}

static char *task_body(const char *name) {
        char *s = NULL;
        cr_assert_gt(asprintf(&s,
                              "{\"name\": \"%s\", \"script\": \"echo hi\", "
                              "\"security_group\": \"ops\", "
                              "\"schedule\": {\"every\": \"PT1H\"}}",
                              name),
                     0);
        return s;
}

/** Send a CREATE of task \p id; its correlation id into \p corr. */
static void send_create(const char *authz, const char *id, char corr[37]) {
        char *body = task_body(id);
        tbt_send_command(&g_st, g_prod, "CREATE", id, -1, body, authz, NULL, corr);
        free(body);
}

static void expect_accepted(const char *corr, int ms) {
        const json_t *r = tbt_reply_wait(&g_st, g_prod, g_replies, corr, ms);
        cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "ACCEPTED",
                         "%s: %s", json_string_value(json_object_get(r, "reason")),
                         json_string_value(json_object_get(r, "message")));
}

static long long sql_ll(const char *sql) {
        char *v = tbt_sql_value(&g_st, sql);
        long long n = v ? atoll(v) : -1;
        free(v);
        return n;
}

typedef struct count_wait {
        const char *sql;
        long long want;
} count_wait_t;

static bool count_reached(void *arg) {
        count_wait_t *w = arg;
        return sql_ll(w->sql) == w->want;
}

static bool wait_count(const char *sql, long long want, int ms) {
        count_wait_t w = {sql, want};
        return tbt_wait_until(count_reached, &w, ms);
}

/* ---- the commands role -------------------------------------------------------- */

Test(group_commit, a_backlog_is_decided_in_batches_and_every_command_answered) {
        enum { N = 300 };
        char authz[96];
        start(NULL);
        tbt_stack_user(&g_st, "alice", "ops", authz);
        /* the backlog is there before the role starts */
        static char corr[N][37], ids[N][40];
        for (int i = 0; i < N; i++) {
                snprintf(ids[i], sizeof(ids[i]), "gc-backlog-%03d", i);
                send_create(authz, ids[i], corr[i]);
        }
        rd_kafka_flush(g_prod, 30000);
        g_pid = tbt_daemon_start(&g_st, "commands,projector");
        for (int i = 0; i < N; i++)
                expect_accepted(corr[i], 120000);

        /* every command's event, exactly once */
        tbt_reader_t *ev = tbt_reader_new(&g_st, TB_TOPIC_EVENTS, true);
        cr_assert(tbt_reader_drain(ev, 60000), "task-events not drained");
        cr_assert_eq(json_array_size(tbt_reader_values(ev)), N);
        for (int i = 0; i < N; i++)
                cr_assert_eq(tbt_reader_count(ev, ids[i], "type", "CREATED"), 1, "%s", ids[i]);

        /* N events and one commit marker per transaction and partition */
        char topic[256];
        tb_topic_name(g_st.conf, TB_TOPIC_EVENTS, topic, sizeof(topic));
        rd_kafka_t *rk = tbt_stack_producer(&g_st);
        long long total = 0;
        for (int p = 0; p < (int)g_st.conf->topic_partitions; p++) {
                int64_t lo = 0, hi = 0;
                cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000), 0);
                total += hi;
        }
        rd_kafka_destroy(rk);
        tbt_reader_free(ev);
        long long markers = total - N;
        cr_log_info("%d commands: %lld commit markers on %d partitions", N, markers,
                    (int)g_st.conf->topic_partitions);
        cr_assert_gt(markers, 0);
        cr_assert_lt(markers, N / 2,
                     "%lld commit markers for %d commands: they were not batched", markers, N);

        /* and every task is projected */
        cr_assert(wait_count("SELECT count(*) FROM tasks WHERE id LIKE 'gc-backlog-%'", N,
                             120000),
                  "not every task was projected");
}

/* An idle system commits a lone command at once: the lingers are 10 s, a command
 * is answered and projected within 5 s. A generous bound, not a timing. */
Test(group_commit, an_idle_system_commits_a_lone_command_without_the_linger) {
        char authz[96], corr[37];
        start("commands = { batch_linger = \"10s\"; };\n"
              "projector = { batch_linger = \"10s\"; };\n");
        tbt_stack_user(&g_st, "alice", "ops", authz);
        g_pid = tbt_daemon_start(&g_st, "commands,projector");
        /* warm-up: partitions assigned and rebuilt, producers ready */
        send_create(authz, "gc-idle-warm", corr);
        expect_accepted(corr, 120000);
        cr_assert(wait_count("SELECT count(*) FROM tasks WHERE id = 'gc-idle-warm'", 1, 120000));
        usleep(500 * 1000);

        int64_t t0 = tb_mono_us();
        send_create(authz, "gc-idle-one", corr);
        expect_accepted(corr, 20000);
        int64_t replied = tb_mono_us();
        cr_assert(wait_count("SELECT count(*) FROM tasks WHERE id = 'gc-idle-one'", 1, 20000));
        int64_t projected = tb_mono_us();
        cr_log_info("a lone command: replied after %.1f ms, projected after %.1f ms",
                    (double)(replied - t0) / 1e3, (double)(projected - t0) / 1e3);
        cr_assert_lt(replied - t0, 5000000, "the reply waited for the 10 s linger");
        cr_assert_lt(projected - t0, 5000000, "the projection waited for the 10 s linger");
}

/* ---- the projection of a batch ------------------------------------------------- */

/** Read \p n records of task-events from the beginning, librdkafka's own. */
static void read_events(rd_kafka_t **out_rk, rd_kafka_message_t **msgs, size_t n) {
        char err[1024], topic[256];
        rd_kafka_conf_t *c = NULL;
        cr_assert_eq(tb_bus_conf_new(g_st.conf, &c, err, sizeof(err)), TB_OK, "%s", err);
        rd_kafka_conf_set(c, "group.id", "gc-test", err, sizeof(err));
        rd_kafka_conf_set(c, "isolation.level", "read_committed", err, sizeof(err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        cr_assert_not_null(rk, "%s", err);
        rd_kafka_poll_set_consumer(rk);
        tb_topic_name(g_st.conf, TB_TOPIC_EVENTS, topic, sizeof(topic));
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int p = 0; p < (int)g_st.conf->topic_partitions; p++)
                rd_kafka_topic_partition_list_add(l, topic, p)->offset =
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
        cr_assert_eq(got, n, "read %zu of %zu events", got, n);
        *out_rk = rk;
}

Test(group_commit, a_hostile_event_in_a_batch_is_set_aside_and_the_rest_projected) {
        enum { N = 150 };
        char authz[96], err[1024];
        start(NULL);
        tbt_stack_user(&g_st, "alice", "ops", authz);
        /* the events come from the commands role; nothing projects them */
        g_pid = tbt_daemon_start(&g_st, "commands");
        static char corr[N][37], ids[N][40];
        for (int i = 0; i < N; i++) {
                snprintf(ids[i], sizeof(ids[i]), "gc-batch-%03d", i);
                send_create(authz, ids[i], corr[i]);
        }
        for (int i = 0; i < N; i++)
                expect_accepted(corr[i], 120000);

        /* a hostile copy of one: another task, an instant no timestamp holds */
        rd_kafka_message_t *msgs[N + 1];
        rd_kafka_t *rk = NULL;
        read_events(&rk, msgs, N);
        json_t *ev = NULL;
        cr_assert_eq(tb_serde_decode(msgs[0]->payload, msgs[0]->len, TB_SCHEMA_TASK_EVENT, NULL,
                                     &ev, err, sizeof(err)),
                     TB_OK, "%s", err);
        json_object_set_new(ev, "task_id", json_string("gc-hostile"));
        json_object_set_new(ev, "at", json_integer(9000000000000000000LL));
        tb_buf_t bad = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &bad, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(ev);
        cr_assert_eq(tb_bus_produce(g_prod, g_st.conf, TB_TOPIC_EVENTS, msgs[0]->partition,
                                    "gc-hostile", 10, bad.data, bad.len, NULL, 0, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&bad);
        rd_kafka_flush(g_prod, 30000);
        int64_t until = tb_mono_us() + 60000000;
        msgs[N] = NULL;
        while (!msgs[N] && tb_mono_us() < until) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (m && !m->err)
                        msgs[N] = m;
                else if (m)
                        rd_kafka_message_destroy(m);
        }
        cr_assert_not_null(msgs[N], "the hostile event was not read back");
        /* in the middle of the batch */
        rd_kafka_message_t *batch[N + 1];
        for (int i = 0, k = 0; i <= N; i++)
                batch[i] = i == N / 2 ? msgs[N] : msgs[k++];

        PGconn *listen = PQconnectdb(g_st.db_url);
        cr_assert_eq(PQstatus(listen), CONNECTION_OK, "%s", PQerrorMessage(listen));
        PQclear(PQexec(listen, "LISTEN " TB_PROJECTION_CHANNEL));

        tb_projection_stats_t stats = {0};
        PGconn *conn = tb_store_acquire(g_st.store);
        tb_err_t e = tb_projection_apply_batch(conn, g_st.conf, "gc-test", batch, N + 1, &stats,
                                               err, sizeof(err));
        tb_store_release(g_st.store, conn);
        cr_assert_eq(e, TB_OK, "%s", err);
        cr_assert_eq(stats.records, N + 1);
        cr_assert_eq(stats.events, N, "every good event is applied");
        cr_assert_eq(stats.quarantined, 1);
        cr_assert_eq(sql_ll("SELECT count(*) FROM tasks WHERE id LIKE 'gc-batch-%'"), N);
        cr_assert_eq(sql_ll("SELECT count(*) FROM task_history WHERE task_id LIKE 'gc-batch-%'"),
                     N);
        cr_assert_eq(sql_ll("SELECT count(*) FROM tasks WHERE id = 'gc-hostile'"), 0);
        char *q = tbt_sql_value(&g_st, "SELECT string_agg(role || '|' || convert_from(key, "
                                       "'UTF8') || '|' || left(coalesce(sqlstate, '-'), 2), "
                                       "',') FROM quarantine");
        cr_assert_str_eq(q, "projector|gc-hostile|22", "quarantine: %s", q);
        free(q);
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM consumer_offsets WHERE consumer = 'gc-test'");
        cr_assert_gt(sql_ll(sql), 0, "the offsets are stored with the rows");

        /* ONE notification for the batch, naming each good task's version */
        int notes = 0;
        char *payload = NULL;
        int64_t wait_until = tb_mono_us() + 5000000;
        while (tb_mono_us() < wait_until) {
                cr_assert(PQconsumeInput(listen), "%s", PQerrorMessage(listen));
                PGnotify *nt;
                while ((nt = PQnotifies(listen))) {
                        notes++;
                        free(payload);
                        payload = strdup(nt->extra);
                        PQfreemem(nt);
                }
                if (notes)
                        break;
                usleep(50 * 1000);
        }
        usleep(200 * 1000);
        PQconsumeInput(listen);
        PGnotify *more;
        while ((more = PQnotifies(listen))) {
                notes++;
                PQfreemem(more);
        }
        cr_assert_eq(notes, 1, "%d notifications for one batch", notes);
        cr_assert_not_null(payload);
        for (int i = 0; i < N; i++) {
                char want[48];
                snprintf(want, sizeof(want), "%.39s 1", ids[i]);
                cr_assert(strstr(payload, want), "the notification does not name %s", want);
        }
        cr_assert_null(strstr(payload, "gc-hostile"));
        free(payload);
        PQfinish(listen);

        /* applied again (a crash before the commit was seen): nothing changes */
        tb_projection_stats_t again = {0};
        conn = tb_store_acquire(g_st.store);
        e = tb_projection_apply_batch(conn, g_st.conf, "gc-test", batch, N + 1, &again, err,
                                      sizeof(err));
        tb_store_release(g_st.store, conn);
        cr_assert_eq(e, TB_OK, "%s", err);
        cr_assert_eq(sql_ll("SELECT count(*) FROM tasks WHERE id LIKE 'gc-batch-%'"), N);
        cr_assert_eq(sql_ll("SELECT count(*) FROM task_history WHERE task_id LIKE 'gc-batch-%'"),
                     N);
        cr_assert_eq(sql_ll("SELECT count(*) FROM quarantine"), 1);

        for (int i = 0; i <= N; i++)
                rd_kafka_message_destroy(msgs[i]);
        tb_bus_consumer_destroy(rk, 10000);
}
