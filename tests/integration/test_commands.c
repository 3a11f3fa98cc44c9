/**
 * @file test_commands.c
 * @brief The commands role against real Kafka and PostgreSQL: taskbusd runs
 *        as a child process (--roles commands,projector) on a private topic
 *        prefix and database; the test produces TaskCommands itself and reads
 *        the replies on task-replies and the events on task-events.
 */
#include "bus/bus.h"
#include "serde/serde.h"
#include "identity/identity.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPLY_WAIT_MS 90000

static tbt_stack_t g_st;
static pid_t g_pid;
static rd_kafka_t *g_prod;
static tbt_reader_t *g_replies;

static void start_stack(const tbt_stack_opts_t *opts) {
        tbt_stack_create(&g_st, opts);
        g_pid = tbt_daemon_start(&g_st, "commands,projector");
        g_prod = tbt_stack_producer(&g_st);
        g_replies = tbt_reader_new(&g_st, TB_TOPIC_REPLIES, true);
}

static void setup(void) {
        tbt_stack_opts_t o = {.kafka_extra = "session_timeout_ms = 6000;"};
        start_stack(&o);
}

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

TestSuite(commands, .timeout = 400);

/* ---- helpers ------------------------------------------------------------------ */

static char *task_body(const char *name, const char *group) {
        char *s = NULL;
        cr_assert_gt(asprintf(&s,
                              "{\"name\": \"%s\", \"script\": \"echo hello\", "
                              "\"security_group\": \"%s\", "
                              "\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"}}",
                              name, group),
                     0);
        return s;
}

/** A command to send; NULL strings are left out. */
typedef struct cmd {
        const char *type;
        const char *task_id;
        long long expected_version; /* < 0: null */
        const char *task;
        const char *authz;          /* NULL: no authorization header */
        const char *command_id;     /* NULL: a new UUID */
} cmd_t;

static void send_cmd(const cmd_t *c, char corr[37]) {
        tbt_send_command(&g_st, g_prod, c->type, c->task_id, c->expected_version, c->task,
                         c->authz, c->command_id, corr);
}

static const json_t *wait_reply(const char *corr) {
        return tbt_reply_wait(&g_st, g_prod, g_replies, corr, REPLY_WAIT_MS);
}

static const json_t *ask(const cmd_t *c) {
        char corr[37];
        send_cmd(c, corr);
        return wait_reply(corr);
}

static const char *rstr(const json_t *r, const char *k) {
        const char *s = json_string_value(json_object_get(r, k));
        return s ? s : "(null)";
}

static void expect_accepted(const json_t *r, long long version) {
        cr_assert_str_eq(rstr(r, "status"), "ACCEPTED", "rejected: %s: %s (field %s)",
                         rstr(r, "reason"), rstr(r, "message"), rstr(r, "field"));
        cr_assert_eq(json_integer_value(json_object_get(r, "version")), version,
                     "version %lld expected, got %lld", version,
                     (long long)json_integer_value(json_object_get(r, "version")));
}

static void expect_rejected(const json_t *r, const char *reason, const char *field) {
        cr_assert_str_eq(rstr(r, "status"), "REJECTED", "expected %s, accepted", reason);
        cr_assert_str_eq(rstr(r, "reason"), reason, "reason: %s (message: %s)",
                         rstr(r, "reason"), rstr(r, "message"));
        cr_assert_gt(strlen(rstr(r, "message")), 5, "a rejection must say why");
        if (field)
                cr_assert(!strncmp(rstr(r, "field"), field, strlen(field)),
                          "field '%s' expected to start with '%s' (message: %s)",
                          rstr(r, "field"), field, rstr(r, "message"));
}

/** The events of one task, read_committed, in offset order. */
static json_t *events_of(const char *task_id) {
        tbt_reader_t *ev = tbt_reader_new(&g_st, TB_TOPIC_EVENTS, true);
        cr_assert(tbt_reader_drain(ev, 60000), "task-events not drained");
        json_t *out = json_array();
        size_t i;
        json_t *v;
        json_array_foreach((json_t *)tbt_reader_values(ev), i, v)
                if (!strcmp(rstr(v, "task_id"), task_id))
                        json_array_append(out, v);
        tbt_reader_free(ev);
        return out;
}

/* ---- happy paths ------------------------------------------------------------- */

Test(commands, lifecycle_with_versions, .init = setup, .fini = teardown) {
        char alice[96], id[37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tb_uuid4(id);
        char *body = task_body("nightly", "ops");
        char *body2 = task_body("nightly-renamed", "ops");

        expect_accepted(ask(&(cmd_t){"CREATE", id, -1, body, alice, NULL}), 1);
        expect_accepted(ask(&(cmd_t){"UPDATE", id, 1, body2, alice, NULL}), 2);
        expect_accepted(ask(&(cmd_t){"PAUSE", id, 2, NULL, alice, NULL}), 3);
        expect_accepted(ask(&(cmd_t){"RESUME", id, -1, NULL, alice, NULL}), 4);
        expect_accepted(ask(&(cmd_t){"RUN_NOW", id, 4, NULL, alice, NULL}), 5);
        expect_accepted(ask(&(cmd_t){"DELETE", id, 5, NULL, alice, NULL}), 6);
        expect_rejected(ask(&(cmd_t){"UPDATE", id, -1, body2, alice, NULL}), "NOT_FOUND",
                        "task_id");
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, body, alice, NULL}), "CONFLICT",
                        "task_id");

        json_t *evs = events_of(id);
        const char *types[] = {"CREATED", "UPDATED", "PAUSED", "RESUMED", "RUN_REQUESTED",
                               "DELETED"};
        cr_assert_eq(json_array_size(evs), 6, "6 events expected, got %zu",
                     json_array_size(evs));
        for (size_t i = 0; i < 6; i++) {
                json_t *e = json_array_get(evs, i);
                cr_assert_str_eq(rstr(e, "type"), types[i]);
                cr_assert_eq(json_integer_value(json_object_get(e, "version")), (long long)i + 1);
                cr_assert_str_eq(rstr(e, "actor"), "alice");
                cr_assert_str_eq(rstr(e, "created_by"), "alice");
                cr_assert_eq(json_integer_value(json_object_get(e, "created_at")),
                             json_integer_value(
                                     json_object_get(json_array_get(evs, 0), "created_at")),
                             "created_at must be kept from the creation");
                json_t *task = json_object_get(e, "task");
                if (i < 5) {
                        cr_assert(json_is_object(task), "event %zu must carry the task", i);
                        cr_assert_str_eq(rstr(task, "user_id"), "alice");
                        cr_assert_str_eq(rstr(task, "security_group"), "ops");
                } else {
                        cr_assert(json_is_null(task), "DELETED carries no task");
                }
        }
        /* changed fields */
        json_t *upd = json_object_get(json_array_get(evs, 1), "changed_fields");
        cr_assert_eq(json_array_size(upd), 1);
        cr_assert_str_eq(json_string_value(json_array_get(upd, 0)), "name");
        json_t *pau = json_object_get(json_array_get(evs, 2), "changed_fields");
        cr_assert_eq(json_array_size(pau), 1);
        cr_assert_str_eq(json_string_value(json_array_get(pau, 0)), "paused");
        cr_assert(json_is_true(json_object_get(
                json_object_get(json_array_get(evs, 2), "task"), "paused")));
        cr_assert(json_is_false(json_object_get(
                json_object_get(json_array_get(evs, 3), "task"), "paused")));
        json_decref(evs);
        free(body);
        free(body2);
}

/* ---- rejections ------------------------------------------------------------------ */

Test(commands, every_rejection_reason, .init = setup, .fini = teardown) {
        char alice[96], bob[96], id[37], unknown[37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tbt_stack_user(&g_st, "bob", "dev", bob);
        tb_uuid4(id);
        tb_uuid4(unknown);
        char *ops = task_body("a", "ops");
        char *dev = task_body("a", "dev");

        /* unauthenticated: no header, a token that does not exist */
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, ops, NULL, NULL}), "UNAUTHENTICATED",
                        NULL);
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, ops,
                                     "Bearer tbk_0000000000000000000000000000000000000000"
                                     "000000000000000000000000",
                                     NULL}),
                        "UNAUTHENTICATED", NULL);
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, ops, "Basic Zm9vOmJhcg==", NULL}),
                        "UNAUTHENTICATED", NULL);
        /* forbidden: creating in a group alice is not in */
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, dev, alice, NULL}), "FORBIDDEN",
                        "security_group");
        /* invalid arguments name the field */
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, "{not json", alice, NULL}),
                        "INVALID_ARGUMENT", "task");
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, NULL, alice, NULL}), "INVALID_ARGUMENT",
                        "task");
        expect_rejected(
                ask(&(cmd_t){"CREATE", id, -1,
                             "{\"name\": \"x\", \"script\": \"true\", \"security_group\": "
                             "\"ops\", \"schedule\": {\"cron\": \"99 * * * *\"}}",
                             alice, NULL}),
                "INVALID_ARGUMENT", "schedule");
        expect_rejected(
                ask(&(cmd_t){"CREATE", id, -1,
                             "{\"name\": \"x\", \"script\": \"true\", \"security_group\": "
                             "\"ops\", \"schedule\": {\"every\": \"PT1M\"}, \"executor\": "
                             "\"telnet\"}",
                             alice, NULL}),
                "INVALID_ARGUMENT", "executor");
        /* nothing was created by all that */
        expect_rejected(ask(&(cmd_t){"PAUSE", id, -1, NULL, alice, NULL}), "NOT_FOUND",
                        "task_id");

        expect_accepted(ask(&(cmd_t){"CREATE", id, -1, ops, alice, NULL}), 1);
        /* not found: unknown ids, and a task of another group looks exactly the same */
        const json_t *r1 = ask(&(cmd_t){"DELETE", unknown, -1, NULL, bob, NULL});
        expect_rejected(r1, "NOT_FOUND", "task_id");
        expect_rejected(ask(&(cmd_t){"DELETE", id, -1, NULL, bob, NULL}), "NOT_FOUND",
                        "task_id");
        expect_rejected(ask(&(cmd_t){"PAUSE", id, -1, NULL, bob, NULL}), "NOT_FOUND", NULL);
        expect_rejected(ask(&(cmd_t){"UPDATE", id, -1, dev, bob, NULL}), "NOT_FOUND", NULL);
        expect_rejected(ask(&(cmd_t){"RUN_NOW", id, -1, NULL, bob, NULL}), "NOT_FOUND", NULL);
        /* bob cannot take the id either, and learns nothing beyond "taken" */
        expect_rejected(ask(&(cmd_t){"CREATE", id, -1, dev, bob, NULL}), "CONFLICT", "task_id");
        /* conflict on the expected version */
        expect_rejected(ask(&(cmd_t){"UPDATE", id, 7, ops, alice, NULL}), "CONFLICT",
                        "expected_version");
        expect_rejected(ask(&(cmd_t){"DELETE", id, 0, NULL, alice, NULL}), "CONFLICT",
                        "expected_version");
        /* moving a task to a group alice is not in */
        expect_rejected(ask(&(cmd_t){"UPDATE", id, 1, dev, alice, NULL}), "FORBIDDEN",
                        "security_group");
        /* none of it changed the task: it is still at version 1 */
        expect_accepted(ask(&(cmd_t){"PAUSE", id, 1, NULL, alice, NULL}), 2);
        json_t *evs = events_of(id);
        cr_assert_eq(json_array_size(evs), 2, "only CREATED and PAUSED, got %zu",
                     json_array_size(evs));
        json_decref(evs);
        free(ops);
        free(dev);
}

Test(commands, throttled_beyond_burst, .fini = teardown) {
        tbt_stack_opts_t o = {.api_rate = 0.01, .api_burst = 3};
        start_stack(&o);
        char alice[96], corr[8][37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        char *ops = task_body("t", "ops");
        for (int i = 0; i < 8; i++) {
                char id[37];
                tb_uuid4(id);
                send_cmd(&(cmd_t){"CREATE", id, -1, ops, alice, NULL}, corr[i]);
        }
        int accepted = 0, throttled = 0;
        for (int i = 0; i < 8; i++) {
                const json_t *r = wait_reply(corr[i]);
                if (!strcmp(rstr(r, "status"), "ACCEPTED"))
                        accepted++;
                else {
                        expect_rejected(r, "THROTTLED", NULL);
                        cr_assert(strstr(rstr(r, "message"), "retry after"),
                                  "a throttled reply says when to retry: %s",
                                  rstr(r, "message"));
                        throttled++;
                }
        }
        cr_assert_eq(accepted, 3, "the burst (3) is accepted, got %d", accepted);
        cr_assert_eq(throttled, 5);
        free(ops);
}

/* ---- malformed records ----------------------------------------------------------- */

static void produce_raw(const char *key, const void *value, size_t len, const char *corr) {
        char err[1024];
        tb_header_t h[1] = {{"correlation_id", corr, corr ? strlen(corr) : 0}};
        cr_assert_eq(tb_bus_produce(g_prod, g_st.conf, TB_TOPIC_COMMANDS, RD_KAFKA_PARTITION_UA,
                                    key, strlen(key), value, len, h, corr ? 1 : 0, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
}

static bool log_has_malformed(void *arg) {
        char *log = tbt_daemon_log(&g_st);
        bool ok = strstr(log, (const char *)arg) != NULL;
        free(log);
        return ok;
}

Test(commands, malformed_records, .init = setup, .fini = teardown) {
        char alice[96], corr[37], id[37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tb_uuid4(corr);
        tb_uuid4(id);
        /* not Avro at all, but answerable through the header */
        produce_raw(id, "{\"json\": true}", 14, corr);
        const json_t *r = wait_reply(corr);
        expect_rejected(r, "INVALID_ARGUMENT", NULL);
        cr_assert(strstr(rstr(r, "message"), "TaskCommand"), "%s", rstr(r, "message"));
        /* single-object magic with an unknown fingerprint */
        unsigned char fake[16] = {0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0};
        tb_uuid4(corr);
        produce_raw(id, fake, sizeof(fake), corr);
        expect_rejected(wait_reply(corr), "INVALID_ARGUMENT", NULL);
        /* no correlation id anywhere: counted, logged, skipped... on the same
         * partition as the next good command, which must still be processed */
        produce_raw(id, "garbage", 7, NULL);
        char *ops = task_body("after-garbage", "ops");
        expect_accepted(ask(&(cmd_t){"CREATE", id, -1, ops, alice, NULL}), 1);
        cr_assert(tbt_wait_until(log_has_malformed,
                                 (void *)"taskbus_commands_malformed_total=1", 10000),
                  "the malformed record is counted in the log");
        free(ops);
}

/* ---- isolation between groups ------------------------------------------------------ */

Test(commands, groups_are_isolated, .init = setup, .fini = teardown) {
        char alice[96], bob[96], carol[96], a_id[37], b_id[37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tbt_stack_user(&g_st, "bob", "dev", bob);
        tbt_stack_user(&g_st, "carol", "ops,dev", carol);
        tb_uuid4(a_id);
        tb_uuid4(b_id);
        char *ops = task_body("a", "ops");
        char *dev = task_body("b", "dev");
        expect_accepted(ask(&(cmd_t){"CREATE", a_id, -1, ops, alice, NULL}), 1);
        expect_accepted(ask(&(cmd_t){"CREATE", b_id, -1, dev, bob, NULL}), 1);
        const char *types[] = {"PAUSE", "RESUME", "RUN_NOW", "DELETE"};
        for (size_t i = 0; i < TB_ARRAY_LEN(types); i++) {
                expect_rejected(ask(&(cmd_t){types[i], b_id, -1, NULL, alice, NULL}),
                                "NOT_FOUND", NULL);
                expect_rejected(ask(&(cmd_t){types[i], a_id, -1, NULL, bob, NULL}),
                                "NOT_FOUND", NULL);
        }
        /* carol is in both, and may move a task between them; afterwards
         * alice no longer sees it */
        char *moved = NULL;
        cr_assert_gt(asprintf(&moved,
                              "{\"name\": \"a\", \"script\": \"echo hello\", \"user_id\": "
                              "\"carol\", \"security_group\": \"dev\", \"schedule\": "
                              "{\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"}}"),
                     0);
        expect_accepted(ask(&(cmd_t){"UPDATE", a_id, 1, moved, carol, NULL}), 2);
        expect_rejected(ask(&(cmd_t){"PAUSE", a_id, -1, NULL, alice, NULL}), "NOT_FOUND", NULL);
        expect_accepted(ask(&(cmd_t){"PAUSE", a_id, 2, NULL, bob, NULL}), 3);
        free(moved);
        free(ops);
        free(dev);
}

/* ---- crash in the middle of a stream ------------------------------------------------ */

static size_t reply_count(void) {
        tbt_reader_poll(g_replies, 10);
        return json_array_size(tbt_reader_values(g_replies));
}

Test(commands, kill9_mid_stream_exactly_once, .init = setup, .fini = teardown) {
        enum { TASKS = 10, STREAM = 200 };
        char alice[96], ids[TASKS][37], corr[STREAM][37], cids[STREAM][37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        char *ops = task_body("s", "ops");
        for (int i = 0; i < TASKS; i++) {
                tb_uuid4(ids[i]);
                expect_accepted(ask(&(cmd_t){"CREATE", ids[i], -1, ops, alice, NULL}), 1);
        }
        size_t base = reply_count();
        const char *types[] = {"UPDATE", "PAUSE", "RESUME", "RUN_NOW"};
        /* the whole stream is queued at once so that the daemon is busy in a
         * transaction (batches of up to 100) almost all the time */
        for (int i = 0; i < STREAM; i++) {
                const char *type = types[i % 4];
                tb_uuid4(cids[i]);
                send_cmd(&(cmd_t){type, ids[(i * 7) % TASKS], -1,
                                  !strcmp(type, "UPDATE") ? ops : NULL, alice, cids[i]},
                         corr[i]);
        }
        rd_kafka_flush(g_prod, 10000);
        for (int w = 0; w < 6000 && reply_count() < base + 1; w++)
                ;
        kill(g_pid, SIGKILL);
        int wst = 0;
        waitpid(g_pid, &wst, 0);
        size_t before_kill = reply_count() - base;
        cr_log_info("killed after %zu replies of the stream", before_kill);
        int64_t t_restart = tb_mono_us();
        g_pid = tbt_daemon_start(&g_st, "commands,projector");
        for (int i = 0; i < STREAM; i++)
                wait_reply(corr[i]);
        cr_log_info("recovered in %.1f s", (double)(tb_mono_us() - t_restart) / 1e6);

        /* exactly one outcome per command (read_committed: aborted attempts are invisible) */
        tbt_reader_drain(g_replies, 30000);
        for (int i = 0; i < STREAM; i++) {
                int n = 0;
                size_t k;
                json_t *v;
                json_array_foreach((json_t *)tbt_reader_values(g_replies), k, v)
                        n += !strcmp(rstr(v, "correlation_id"), corr[i]);
                cr_assert_eq(n, 1, "command %d has %d replies", i, n);
        }
        /* each command id at most once in task-events, versions consecutive per task */
        tbt_reader_t *ev = tbt_reader_new(&g_st, TB_TOPIC_EVENTS, true);
        cr_assert(tbt_reader_drain(ev, 60000));
        json_t *seen = json_object();
        long long last[TASKS] = {0};
        size_t k;
        json_t *v;
        size_t stream_events = 0;
        json_array_foreach((json_t *)tbt_reader_values(ev), k, v) {
                const char *cid = rstr(v, "command_id");
                cr_assert_null(json_object_get(seen, cid), "command %s applied twice", cid);
                json_object_set_new(seen, cid, json_integer(json_integer_value(
                                                       json_object_get(v, "version"))));
                for (int t = 0; t < TASKS; t++)
                        if (!strcmp(rstr(v, "task_id"), ids[t])) {
                                long long ver = json_integer_value(json_object_get(v, "version"));
                                cr_assert_eq(ver, last[t] + 1,
                                             "task %d: version %lld after %lld", t, ver, last[t]);
                                last[t] = ver;
                        }
        }
        /* accepted replies match the events one to one, rejected ones left nothing */
        for (int i = 0; i < STREAM; i++) {
                const json_t *r = tbt_reader_wait(g_replies, "correlation_id", corr[i], 0);
                json_t *e = json_object_get(seen, cids[i]);
                if (!strcmp(rstr(r, "status"), "ACCEPTED")) {
                        cr_assert_not_null(e, "accepted command %d has no event", i);
                        cr_assert_eq(json_integer_value(e),
                                     json_integer_value(json_object_get(r, "version")));
                        stream_events++;
                } else {
                        cr_assert_null(e, "rejected command %d has an event", i);
                }
        }
        cr_assert_eq(json_object_size(seen), TASKS + stream_events);
        cr_log_info("%zu of %d stream commands accepted", stream_events, STREAM);
        cr_assert_eq(stream_events, STREAM, "every command of the stream is valid");
        json_decref(seen);
        tbt_reader_free(ev);
        free(ops);
}

/* ---- group quotas -------------------------------------------------------------- */


Test(commands, group_quotas_max_tasks_and_run_now_rate, .init = setup, .fini = teardown) {
        char alice[96], err[512], ids[4][37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tb_store_group_quota_t set = {.max_tasks = 2, .max_running = TB_STORE_QUOTA_KEEP,
                                      .run_now_rate = 1.0 / 60}, now;
        cr_assert_eq(tb_identity_group_quota_set(g_st.conn, "admin:test", "ops", &set, &now, err,
                                                 sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(now.max_tasks, 2);
        cr_assert_eq(now.max_running, TB_STORE_QUOTA_UNLIMITED, "unlimited by default");
        char *audit = tbt_sql_value(&g_st, "SELECT details->'after'->>'max_tasks' FROM "
                                           "admin_audit WHERE action = 'group.set-quota' AND "
                                           "target = 'ops'");
        cr_assert_str_eq(audit ? audit : "(none)", "2", "the change is audited");
        free(audit);
        set = (tb_store_group_quota_t){-5, TB_STORE_QUOTA_KEEP, TB_STORE_QUOTA_KEEP};
        cr_assert_eq(tb_identity_group_quota_set(g_st.conn, "admin:test", "ops", &set, &now, err,
                                                 sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "--max-tasks"), "%s", err);
        set = (tb_store_group_quota_t){1, TB_STORE_QUOTA_KEEP, TB_STORE_QUOTA_KEEP};
        cr_assert_eq(tb_identity_group_quota_set(g_st.conn, "admin:test", "nosuch", &set, &now,
                                                 err, sizeof(err)),
                     TB_ERR_NOT_FOUND);

        char *body = task_body("q", "ops");
        for (int i = 0; i < 3; i++)
                tb_uuid4(ids[i]);
        expect_accepted(ask(&(cmd_t){"CREATE", ids[0], -1, body, alice, NULL}), 1);
        expect_accepted(ask(&(cmd_t){"CREATE", ids[1], -1, body, alice, NULL}), 1);
        const json_t *r = ask(&(cmd_t){"CREATE", ids[2], -1, body, alice, NULL});
        expect_rejected(r, "FORBIDDEN", "max_tasks");
        cr_assert(strstr(rstr(r, "message"), "max_tasks is 2") &&
                          strstr(rstr(r, "message"), "'ops'"),
                  "the quota is named: %s", rstr(r, "message"));
        /* a deleted task no longer counts */
        expect_accepted(ask(&(cmd_t){"DELETE", ids[1], 1, NULL, alice, NULL}), 2);
        expect_accepted(ask(&(cmd_t){"CREATE", ids[2], -1, body, alice, NULL}), 1);

        /* RUN_NOW: one a minute for the group */
        expect_accepted(ask(&(cmd_t){"RUN_NOW", ids[0], 1, NULL, alice, NULL}), 2);
        r = ask(&(cmd_t){"RUN_NOW", ids[2], 1, NULL, alice, NULL});
        expect_rejected(r, "THROTTLED", "run_now_rate");
        cr_assert(strstr(rstr(r, "message"), "retry after"), "%s", rstr(r, "message"));
        free(body);
}

/* A task id on partition \p p of \p n (into id). */
static void id_on_partition(int32_t p, int32_t n, char id[37]) {
        do
                tb_uuid4(id);
        while (tb_bus_partition_for(id, strlen(id), n) != p);
}

static bool split_between_two(void *arg) {
        (void)arg;
        char *log = tbt_daemon_log(&g_st);
        bool yes = log && strstr(log, "rebuilt 2 partition(s)");
        free(log);
        return yes;
}

static bool ops_projected(void *arg) {
        char *v = tbt_sql_value(&g_st, "SELECT count(*) FROM tasks WHERE security_group = 'ops'");
        bool yes = v && atoll(v) == *(long long *)arg;
        free(v);
        return yes;
}

Test(commands, max_tasks_counts_the_partitions_of_every_commands_process, .fini = teardown) {
        enum { PARTS = 4 };
        start_stack(&(tbt_stack_opts_t){.partitions = PARTS,
                                        .kafka_extra = "session_timeout_ms = 6000;"});
        pid_t second = tbt_daemon_start(&g_st, "commands");
        cr_assert(tbt_wait_until(split_between_two, NULL, 120000),
                  "the two commands processes share task-commands");
        char alice[96], err[512], id[37];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        tb_store_group_quota_t set = {2, TB_STORE_QUOTA_KEEP, TB_STORE_QUOTA_KEEP}, now;
        cr_assert_eq(tb_identity_group_quota_set(g_st.conn, "admin:test", "ops", &set, &now, err,
                                                 sizeof(err)),
                     TB_OK, "%s", err);
        char *body = task_body("q", "ops");
        /* two tasks, on partitions 0 and 1 */
        for (int32_t p = 0; p < 2; p++) {
                id_on_partition(p, PARTS, id);
                expect_accepted(ask(&(cmd_t){"CREATE", id, -1, body, alice, NULL}), 1);
        }
        long long two = 2;
        cr_assert(tbt_wait_until(ops_projected, &two, 60000), "projected");
        /* a third is refused on every partition, whichever process holds it */
        for (int32_t p = 0; p < PARTS; p++) {
                id_on_partition(p, PARTS, id);
                const json_t *r = ask(&(cmd_t){"CREATE", id, -1, body, alice, NULL});
                expect_rejected(r, "FORBIDDEN", "max_tasks");
                cr_assert(strstr(rstr(r, "message"), "has 2 live tasks"), "partition %d: %s",
                          (int)p, rstr(r, "message"));
        }
        free(body);
        int status = tbt_daemon_stop(second, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
