/**
 * @file test_projector.c
 * @brief The projector role and `taskbus replay` / `taskbus history` against
 *        real Kafka and PostgreSQL: the projection equals the events, applying
 *        them again changes nothing, and a replay of task-events into a fresh
 *        database gives the same tables row for row.
 */
#include "bus/bus.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"
#include "task/task.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t g_st;
static pid_t g_pid;
static rd_kafka_t *g_prod;
static tbt_reader_t *g_replies;

static void setup(void) {
        tbt_stack_opts_t o = {.kafka_extra = "session_timeout_ms = 6000;"};
        tbt_stack_create(&g_st, &o);
        g_pid = tbt_daemon_start(&g_st, "commands,projector");
        g_prod = tbt_stack_producer(&g_st);
        g_replies = tbt_reader_new(&g_st, TB_TOPIC_REPLIES, true);
}

static void teardown(void) {
        if (g_pid > 0)
                tbt_daemon_stop(g_pid, SIGTERM);
        tbt_reader_free(g_replies);
        if (g_prod)
                rd_kafka_destroy(g_prod);
        tbt_stack_destroy(&g_st);
}

TestSuite(projector, .init = setup, .fini = teardown, .timeout = 600);

/* ---- helpers ------------------------------------------------------------------ */

static char *task_body(const char *name, const char *group, bool every) {
        char *s = NULL;
        cr_assert_gt(asprintf(&s,
                              "{\"name\": \"%s\", \"script\": \"echo %s\", "
                              "\"security_group\": \"%s\", \"labels\": {\"team\": \"%s\"}, "
                              "\"schedule\": %s}",
                              name, name, group, name,
                              every ? "{\"every\": \"PT1H\"}"
                                    : "{\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"}"),
                     0);
        return s;
}

/** Wait for the reply of every correlation id; all must be accepted. */
static void expect_all_accepted(char (*corr)[37], size_t n) {
        rd_kafka_flush(g_prod, 30000);
        for (size_t i = 0; i < n; i++) {
                const json_t *r =
                        tbt_reader_wait(g_replies, "correlation_id", corr[i], 120000);
                cr_assert_not_null(r, "no reply for command %zu", i);
                cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "ACCEPTED",
                                 "command %zu: %s: %s", i,
                                 json_string_value(json_object_get(r, "reason")),
                                 json_string_value(json_object_get(r, "message")));
        }
}

typedef struct count_wait {
        const char *sql;
        long long want;
        PGconn *conn;
} count_wait_t;

static bool count_reached(void *arg) {
        count_wait_t *w = arg;
        PGresult *r = PQexec(w->conn, w->sql);
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                  strtoll(PQgetvalue(r, 0, 0), NULL, 10) == w->want;
        PQclear(r);
        return ok;
}

static void wait_count(PGconn *conn, const char *sql, long long want) {
        count_wait_t w = {sql, want, conn};
        bool ok = tbt_wait_until(count_reached, &w, 120000);
        if (!ok) {
                char *log = tbt_daemon_log(&g_st);
                cr_log_error("daemon log:\n%s", log);
                free(log);
        }
        cr_assert(ok, "'%s' never reached %lld", sql, want);
}

static const char dump_tasks_sql[] =
        "SELECT coalesce(string_agg(concat_ws('|', id, version, name, security_group, user_id, "
        "spec::text, paused, labels::text, home_region, epoch, created_at, created_by, "
        "updated_at, event_partition, event_offset), E'\\n' ORDER BY id), '') FROM tasks";
static const char dump_history_sql[] =
        "SELECT coalesce(string_agg(concat_ws('|', task_id, version, event_id, type, at, actor, "
        "command_id, changed_fields::text, spec::text, security_group), E'\\n' "
        "ORDER BY task_id, version), '') FROM task_history";

static char *dump(PGconn *conn, const char *sql) {
        PGresult *r = PQexec(conn, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
        char *s = strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        return s;
}

static json_t *read_events(void) {
        tbt_reader_t *ev = tbt_reader_new(&g_st, TB_TOPIC_EVENTS, true);
        cr_assert(tbt_reader_drain(ev, 60000), "task-events not drained");
        json_t *out = json_deep_copy(tbt_reader_values(ev));
        tbt_reader_free(ev);
        return out;
}

static bool log_count_reached(void *arg) {
        const int *want = arg;
        char *log = tbt_daemon_log(&g_st);
        int n = 0;
        /* the projector also reads runs and run-results: count task-events only */
        for (const char *p = log; (p = strstr(p, "projector: assigned ")); p++) {
                const char *eol = strchr(p, '\n');
                const char *ev = strstr(p, "task-events [");
                if (ev && (!eol || ev < eol))
                        n++;
        }
        free(log);
        return n >= *want;
}

static const char offsets_sql[] =
        "SELECT coalesce(string_agg(concat_ws('|', topic, partition, next_offset), ',' "
        "ORDER BY partition), '') FROM consumer_offsets WHERE consumer = 'projector'";

/* The stored projector offsets are \p arg again. */
static bool offsets_equal(void *arg) {
        char *now = dump(g_st.conn, offsets_sql);
        bool same = !strcmp(now, (const char *)arg);
        free(now);
        return same;
}

/* ---- tests -------------------------------------------------------------------- */

Test(projector, projection_equals_events_and_reapplying_changes_nothing) {
        enum { N = 20 };
        char alice[96], ids[N][37], corr[200][37];
        size_t nc = 0;
        tbt_stack_user(&g_st, "alice", "ops", alice);
        for (int i = 0; i < N; i++) {
                char name[32];
                snprintf(name, sizeof(name), "task%d", i);
                char *b = task_body(name, "ops", i % 2);
                tb_uuid4(ids[i]);
                tbt_send_command(&g_st, g_prod, "CREATE", ids[i], -1, b, alice, NULL,
                                 corr[nc++]);
                free(b);
        }
        for (int i = 0; i < N; i += 2) {
                char *b = task_body("renamed", "ops", true);
                tbt_send_command(&g_st, g_prod, "UPDATE", ids[i], 1, b, alice, NULL, corr[nc++]);
                free(b);
        }
        for (int i = 0; i < 5; i++)
                tbt_send_command(&g_st, g_prod, "PAUSE", ids[i + 1], -1, NULL, alice, NULL,
                                 corr[nc++]);
        for (int i = 10; i < 15; i++)
                tbt_send_command(&g_st, g_prod, "DELETE", ids[i], -1, NULL, alice, NULL,
                                 corr[nc++]);
        for (int i = 15; i < 18; i++)
                tbt_send_command(&g_st, g_prod, "RUN_NOW", ids[i], -1, NULL, alice, NULL,
                                 corr[nc++]);
        expect_all_accepted(corr, nc);

        json_t *events = read_events();
        cr_assert_eq(json_array_size(events), nc, "one event per accepted command");
        PGconn *conn = g_st.conn;
        wait_count(conn, "SELECT count(*) FROM task_history", (long long)nc);
        wait_count(conn, "SELECT count(*) FROM tasks", N - 5);

        /* each task row is its last event */
        for (int i = 0; i < N; i++) {
                const json_t *last = NULL;
                size_t k;
                json_t *e;
                json_array_foreach(events, k, e)
                        if (!strcmp(json_string_value(json_object_get(e, "task_id")), ids[i]))
                                last = e;
                cr_assert_not_null(last);
                char sql[1024];
                snprintf(sql, sizeof(sql),
                         "SELECT version, event_partition, event_offset, paused, spec::text, "
                         "created_by FROM tasks WHERE id = '%s'",
                         ids[i]);
                PGresult *r = PQexec(conn, sql);
                cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
                const char *type = json_string_value(json_object_get(last, "type"));
                if (!strcmp(type, "DELETED")) {
                        cr_assert_eq(PQntuples(r), 0, "deleted task %d still projected", i);
                        PQclear(r);
                        continue;
                }
                cr_assert_eq(PQntuples(r), 1, "task %d not projected", i);
                cr_assert_eq(strtoll(PQgetvalue(r, 0, 0), NULL, 10),
                             json_integer_value(json_object_get(last, "version")));
                cr_assert_eq(strtoll(PQgetvalue(r, 0, 1), NULL, 10),
                             json_integer_value(json_object_get(last, "_partition")));
                cr_assert_eq(strtoll(PQgetvalue(r, 0, 2), NULL, 10),
                             json_integer_value(json_object_get(last, "_offset")));
                json_t *want = tb_task_from_spec(json_object_get(last, "task"));
                json_t *got = json_loads(PQgetvalue(r, 0, 4), 0, NULL);
                cr_assert(json_equal(want, got), "task %d: spec differs from its event", i);
                cr_assert_str_eq(PQgetvalue(r, 0, 3),
                                 json_is_true(json_object_get(want, "paused")) ? "t" : "f");
                cr_assert_str_eq(PQgetvalue(r, 0, 5), "alice");
                json_decref(want);
                json_decref(got);
                PQclear(r);
        }
        json_decref(events);

        char *tasks1 = dump(conn, dump_tasks_sql), *hist1 = dump(conn, dump_history_sql);
        char *offs1 = dump(conn, offsets_sql);
        cr_assert_gt(strlen(offs1), 0);

        /* restart: Kafka holds no offsets for the projector, PostgreSQL does */
        cr_assert_eq(tbt_daemon_stop(g_pid, SIGTERM), 0, "clean exit on SIGTERM");
        g_pid = tbt_daemon_start(&g_st, "projector");
        int want = 8; /* 4 partitions assigned before, 4 now */
        cr_assert(tbt_wait_until(log_count_reached, &want, 60000), "projector not assigned");
        char *tasks2 = dump(conn, dump_tasks_sql), *hist2 = dump(conn, dump_history_sql);
        cr_assert_str_eq(tasks2, tasks1);
        cr_assert_str_eq(hist2, hist1);

        /* lose the stored offsets: everything is applied a second time, and
         * the projection does not change */
        cr_assert_eq(tbt_daemon_stop(g_pid, SIGTERM), 0);
        PQclear(PQexec(conn, "DELETE FROM consumer_offsets"));
        g_pid = tbt_daemon_start(&g_st, "projector");
        wait_count(conn, "SELECT count(*) FROM consumer_offsets", 4);
        cr_assert(tbt_wait_until(offsets_equal, offs1, 120000),
                  "the projector did not catch up again");
        char *tasks3 = dump(conn, dump_tasks_sql), *hist3 = dump(conn, dump_history_sql);
        cr_assert_str_eq(tasks3, tasks1, "re-applying the events changed the tasks table");
        cr_assert_str_eq(hist3, hist1, "re-applying the events changed the history");
        free(tasks1);
        free(hist1);
        free(tasks2);
        free(hist2);
        free(tasks3);
        free(hist3);
        free(offs1);
}

Test(projector, replay_of_1000_events_equals_projection) {
        enum { CREATES = 400, UPDATES = 400, DELETES = 200, TOTAL = 1000 };
        char alice[96], bob[96], (*ids)[37] = calloc(CREATES, 37),
                                 (*corr)[37] = calloc(TOTAL, 37);
        size_t nc = 0;
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tbt_stack_user(&g_st, "bob", "dev", bob);
        int64_t t0 = tb_mono_us();
        for (int i = 0; i < CREATES; i++) {
                char name[32];
                snprintf(name, sizeof(name), "r%d", i);
                char *b = task_body(name, i % 3 ? "ops" : "dev", i % 2);
                tb_uuid4(ids[i]);
                tbt_send_command(&g_st, g_prod, "CREATE", ids[i], -1, b, i % 3 ? alice : bob,
                                 NULL, corr[nc++]);
                free(b);
        }
        /* per task, commands stay in order on its partition: no need to wait */
        for (int i = 0; i < UPDATES; i++) {
                char name[32];
                snprintf(name, sizeof(name), "r%d-v2", i);
                char *b = task_body(name, i % 3 ? "ops" : "dev", true);
                tbt_send_command(&g_st, g_prod, "UPDATE", ids[i], 1, b, i % 3 ? alice : bob,
                                 NULL, corr[nc++]);
                free(b);
        }
        for (int i = 0; i < DELETES; i++)
                tbt_send_command(&g_st, g_prod, "DELETE", ids[i * 2], 2, NULL,
                                 (i * 2) % 3 ? alice : bob, NULL, corr[nc++]);
        cr_assert_eq(nc, TOTAL);
        expect_all_accepted(corr, nc);
        double secs = (double)(tb_mono_us() - t0) / 1e6;
        cr_log_info("%d commands decided in %.2f s (%.0f commands/s end to end)", TOTAL, secs,
                    TOTAL / secs);
        PGconn *conn = g_st.conn;
        wait_count(conn, "SELECT count(*) FROM task_history", TOTAL);
        wait_count(conn, "SELECT count(*) FROM tasks", CREATES - DELETES);
        char *tasks1 = dump(conn, dump_tasks_sql), *hist1 = dump(conn, dump_history_sql);

        /* replay into a fresh database */
        char url[1024], *out = NULL;
        tbt_stack_new_db(&g_st, "replay", url, sizeof(url));
        int rc = tbt_run(&out, "%s/bin/taskbus replay --into \"%s\" --config %s", tbt_build_dir(),
                         url, g_st.config_path);
        cr_assert_eq(rc, 0, "replay failed: %s", out);
        cr_assert(strstr(out, "replayed 1000 events"), "%s", out);
        cr_assert(strstr(out, "into 200 tasks"), "%s", out);
        cr_log_info("%s", out);
        free(out);
        PGconn *rconn = PQconnectdb(url);
        cr_assert_eq(PQstatus(rconn), CONNECTION_OK, "%s", PQerrorMessage(rconn));
        char *tasks2 = dump(rconn, dump_tasks_sql), *hist2 = dump(rconn, dump_history_sql);
        cr_assert_str_eq(tasks2, tasks1, "replayed tasks differ from the projection");
        cr_assert_str_eq(hist2, hist1, "replayed history differs from the projection");

        /* a second replay refuses the non-empty database, --force rebuilds it */
        rc = tbt_run(&out, "%s/bin/taskbus replay --into \"%s\" --config %s", tbt_build_dir(),
                     url, g_st.config_path);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "--force"), "the refusal says how to override: %s", out);
        free(out);
        PQclear(PQexec(rconn, "UPDATE tasks SET name = 'tampered'"));
        rc = tbt_run(&out, "%s/bin/taskbus replay --into \"%s\" --force --config %s",
                     tbt_build_dir(), url, g_st.config_path);
        cr_assert_eq(rc, 0, "%s", out);
        free(out);
        char *tasks3 = dump(rconn, dump_tasks_sql);
        cr_assert_str_eq(tasks3, tasks1);
        PQfinish(rconn);

        /* history of a deleted task, and its state in between */
        rc = tbt_run(&out, "%s/bin/taskbus history %s --json --config %s", tbt_build_dir(),
                     ids[0], g_st.config_path);
        cr_assert_eq(rc, 0, "%s", out);
        json_error_t jerr;
        json_t *h = json_loads(out, 0, &jerr);
        cr_assert_not_null(h, "history --json is not JSON: %s\n%s", jerr.text, out);
        free(out);
        json_t *hist = json_object_get(h, "history");
        cr_assert_eq(json_array_size(hist), 3);
        const char *types[] = {"CREATED", "UPDATED", "DELETED"};
        for (size_t i = 0; i < 3; i++) {
                json_t *e = json_array_get(hist, i);
                cr_assert_str_eq(json_string_value(json_object_get(e, "type")), types[i]);
                cr_assert_eq(json_integer_value(json_object_get(e, "version")), (long long)i + 1);
                cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "bob");
        }
        const char *created_at =
                json_string_value(json_object_get(json_array_get(hist, 0), "at"));
        char *at = strdup(created_at);
        json_decref(h);
        rc = tbt_run(&out, "%s/bin/taskbus history %s --at %s --json --config %s",
                     tbt_build_dir(), ids[0], at, g_st.config_path);
        cr_assert_eq(rc, 0, "%s", out);
        h = json_loads(out, 0, &jerr);
        cr_assert_not_null(h, "%s", out);
        free(out);
        cr_assert_eq(json_integer_value(json_object_get(h, "state_at_version")), 1);
        cr_assert_str_eq(
                json_string_value(json_object_get(json_object_get(h, "state_at"), "name")),
                "r0");
        json_decref(h);
        rc = tbt_run(&out, "%s/bin/taskbus history %s --at %s --config %s", tbt_build_dir(),
                     ids[0], at, g_st.config_path);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "UPDATED") && strstr(out, "(version 1)"), "%s", out);
        free(out);
        rc = tbt_run(&out, "%s/bin/taskbus history no-such-task --config %s", tbt_build_dir(),
                     g_st.config_path);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert(strstr(out, "no history"), "%s", out);
        free(out);
        rc = tbt_run(&out, "%s/bin/taskbus history %s --at yesterday --config %s",
                     tbt_build_dir(), ids[0], g_st.config_path);
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "--at"), "%s", out);
        free(out);

        free(at);
        free(tasks1);
        free(hist1);
        free(tasks2);
        free(hist2);
        free(tasks3);
        free(ids);
        free(corr);
}

static const char dump_quarantine_sql[] =
        "SELECT coalesce(string_agg(concat_ws('|', role, topic, partition, \"offset\", "
        "coalesce(sqlstate, '-'), md5(value), md5(key)), E'\\n' ORDER BY partition, \"offset\"), "
        "'') FROM quarantine WHERE role = 'projector'";

/* `taskbus replay` applies a batch set-based (one COPY, one merge: projection.c,
 * tb_projection_replay_batch()), the live projector event by event: for the
 * same events they must give the same rows, also for a task updated many
 * times within one batch, a task moved to another group and deleted (the
 * DELETED history row takes the group of the version before it), pauses and
 * run requests, deletions, and a record that cannot be decoded (set aside in
 * the quarantine by both, and the replay's batch still set-based). */
Test(projector, set_based_replay_equals_the_live_projection) {
        enum { CREATES = 60, UPDATES = 40 };
        char carol[96], ids[CREATES][37], corr[256][37];
        size_t nc = 0;
        tbt_stack_user(&g_st, "carol", "ops,dev", carol);
        for (int i = 0; i < CREATES; i++) {
                char name[32];
                snprintf(name, sizeof(name), "s%d", i);
                char *b = task_body(name, i % 2 ? "ops" : "dev", i % 3);
                tb_uuid4(ids[i]);
                tbt_send_command(&g_st, g_prod, "CREATE", ids[i], -1, b, carol, NULL, corr[nc++]);
                free(b);
        }
        /* task 0: updated UPDATES times, in both groups by turns, then deleted */
        for (int v = 1; v <= UPDATES; v++) {
                char name[32];
                snprintf(name, sizeof(name), "s0-v%d", v + 1);
                char *b = task_body(name, v % 2 ? "ops" : "dev", true);
                tbt_send_command(&g_st, g_prod, "UPDATE", ids[0], v, b, carol, NULL, corr[nc++]);
                free(b);
        }
        tbt_send_command(&g_st, g_prod, "DELETE", ids[0], UPDATES + 1, NULL, carol, NULL,
                         corr[nc++]);
        /* task 1: moved to dev, then deleted */
        char *moved = task_body("s1-moved", "dev", true);
        tbt_send_command(&g_st, g_prod, "UPDATE", ids[1], 1, moved, carol, NULL, corr[nc++]);
        free(moved);
        tbt_send_command(&g_st, g_prod, "DELETE", ids[1], 2, NULL, carol, NULL, corr[nc++]);
        /* task 2: updated many times without a version check */
        for (int v = 0; v < UPDATES; v++) {
                char name[32];
                snprintf(name, sizeof(name), "s2-u%d", v);
                char *b = task_body(name, "dev", v % 2);
                tbt_send_command(&g_st, g_prod, "UPDATE", ids[2], -1, b, carol, NULL, corr[nc++]);
                free(b);
        }
        for (int i = 3; i < 8; i++)
                tbt_send_command(&g_st, g_prod, "PAUSE", ids[i], -1, NULL, carol, NULL,
                                 corr[nc++]);
        for (int i = 8; i < 12; i++)
                tbt_send_command(&g_st, g_prod, "RUN_NOW", ids[i], -1, NULL, carol, NULL,
                                 corr[nc++]);
        for (int i = 12; i < 20; i++)
                tbt_send_command(&g_st, g_prod, "DELETE", ids[i], -1, NULL, carol, NULL,
                                 corr[nc++]);
        expect_all_accepted(corr, nc);
        /* a record no version of taskbus wrote, on task 3's partition */
        char events[256];
        tb_topic_name(g_st.conf, TB_TOPIC_EVENTS, events, sizeof(events));
        static const char poison[] = "\xc3\x01not an avro record";
        rd_kafka_resp_err_t perr = rd_kafka_producev(
                g_prod, RD_KAFKA_V_TOPIC(events), RD_KAFKA_V_KEY(ids[3], strlen(ids[3])),
                RD_KAFKA_V_VALUE((void *)poison, sizeof(poison) - 1),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        cr_assert_eq(perr, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(perr));
        cr_assert_eq(rd_kafka_flush(g_prod, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
        /* and one more event after it, on the same partition */
        tbt_send_command(&g_st, g_prod, "RESUME", ids[3], -1, NULL, carol, NULL, corr[nc]);
        expect_all_accepted(&corr[nc], 1);
        nc++;

        PGconn *conn = g_st.conn;
        wait_count(conn, "SELECT count(*) FROM task_history", (long long)nc);
        wait_count(conn, "SELECT count(*) FROM quarantine WHERE role = 'projector'", 1);
        wait_count(conn, "SELECT count(*) FROM tasks", CREATES - 10);
        char *tasks1 = dump(conn, dump_tasks_sql), *hist1 = dump(conn, dump_history_sql);
        char *quar1 = dump(conn, dump_quarantine_sql);
        cr_assert_neq(strstr(hist1, "|DELETED|"), NULL, "%s", hist1);

        char url[1024], *out = NULL;
        tbt_stack_new_db(&g_st, "setbased", url, sizeof(url));
        int rc = tbt_run(&out, "%s/bin/taskbus replay --into \"%s\" --config %s", tbt_build_dir(),
                         url, g_st.config_path);
        cr_assert_eq(rc, 0, "replay failed: %s", out);
        char want[160];
        snprintf(want, sizeof(want), "replayed %zu events (1 skipped as malformed, 1 quarantined)",
                 nc);
        cr_assert(strstr(out, want), "no '%s' in: %s", want, out);
        /* usually one batch (fewer than 5,000 events), more if Kafka paused */
        cr_assert(strstr(out, " batch(es) set-based, 0 row by row") &&
                          !strstr(out, " 0 batch(es) set-based"),
                  "the events were not applied set-based: %s", out);
        cr_assert(strstr(out, "partition offset/end:"), "no progress on stderr: %s", out);
        cr_log_info("%s", out);
        free(out);
        PGconn *rconn = PQconnectdb(url);
        cr_assert_eq(PQstatus(rconn), CONNECTION_OK, "%s", PQerrorMessage(rconn));
        char *tasks2 = dump(rconn, dump_tasks_sql), *hist2 = dump(rconn, dump_history_sql);
        char *quar2 = dump(rconn, dump_quarantine_sql);
        cr_assert_str_eq(tasks2, tasks1, "set-based tasks differ from the live projection");
        cr_assert_str_eq(hist2, hist1, "set-based history differs from the live projection");
        cr_assert_str_eq(quar2, quar1, "set-based replay set aside other records");
        PQfinish(rconn);
        free(tasks1);
        free(hist1);
        free(quar1);
        free(tasks2);
        free(hist2);
        free(quar2);
}
