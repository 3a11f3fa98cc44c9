/**
 * @file test_scheduler_failover.c
 * @brief Exactly-once fires across scheduler crashes and zombies: one
 *        taskbusd runs commands+projector, two more run the scheduler role
 *        only (static members "sched-a" and "sched-b"). 20 tasks fire every
 *        second while the schedulers are SIGKILLed and restarted, then one is
 *        SIGSTOPped past the group session timeout (6 s) and SIGCONTed. A
 *        checker reading runs and run-results with read_committed must find
 *        every nominal fire of the window exactly once (a RunRequest, or a
 *        recorded skip), and no run id twice.
 */
#include "bus/bus.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"
#include "support_checker.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TASKS 20
#define WAIT_MS 90000

static tbt_stack_t g_st;
static pid_t g_core, g_sched[2];
static char *g_conf[2];
static rd_kafka_t *g_prod;
static tbt_reader_t *g_replies;
static char g_authz[96];

static const char *rstr(const json_t *r, const char *k) {
        const char *s = json_string_value(json_object_get(r, k));
        return s ? s : "(null)";
}

static int64_t rint64(const json_t *r, const char *k) {
        return (int64_t)json_integer_value(json_object_get(r, k));
}

/* A config like the stack's with its own static member id. */
static char *member_config(const char *member) {
        FILE *fp = fopen(g_st.config_path, "r");
        cr_assert_not_null(fp);
        char text[8192];
        size_t n = fread(text, 1, sizeof(text) - 1, fp);
        fclose(fp);
        text[n] = 0;
        char *k = strstr(text, "kafka = {");
        cr_assert_not_null(k);
        char *out = NULL;
        cr_assert_geq(asprintf(&out, "%.*skafka = { group_instance_id = \"%s\"; %s",
                               (int)(k - text), text, member, k + strlen("kafka = {")),
                      0);
        char *path = tbt_write_temp(".conf", out);
        free(out);
        return path;
}

static pid_t start_scheduler(int i) {
        char *base = g_st.config_path;
        g_st.config_path = g_conf[i];
        pid_t pid = tbt_daemon_start(&g_st, "scheduler");
        g_st.config_path = base;
        return pid;
}

static void setup(void) {
        tbt_stack_opts_t o = {.kafka_extra = "session_timeout_ms = 6000; heartbeat_interval_ms = 1000;"};
        tbt_stack_create(&g_st, &o);
        tbt_stack_user(&g_st, "alice", "ops", g_authz);
        g_conf[0] = member_config("sched-a");
        g_conf[1] = member_config("sched-b");
        g_core = tbt_daemon_start(&g_st, "commands,projector");
        g_sched[0] = start_scheduler(0);
        g_sched[1] = start_scheduler(1);
        g_prod = tbt_stack_producer(&g_st);
        g_replies = tbt_reader_new(&g_st, TB_TOPIC_REPLIES, true);
}

static void teardown(void) {
        for (int i = 0; i < 2; i++) {
                if (g_sched[i] > 0) {
                        kill(g_sched[i], SIGCONT);
                        tbt_daemon_stop(g_sched[i], SIGTERM);
                }
                g_sched[i] = 0;
                if (g_conf[i])
                        unlink(g_conf[i]);
                free(g_conf[i]);
                g_conf[i] = NULL;
        }
        if (g_core > 0)
                tbt_daemon_stop(g_core, SIGTERM);
        g_core = 0;
        tbt_reader_free(g_replies);
        g_replies = NULL;
        if (g_prod)
                rd_kafka_destroy(g_prod);
        g_prod = NULL;
        tbt_stack_destroy(&g_st);
}

static void create_task(char id[37]) {
        char err[1024], corr[37], cid[37];
        const char *body = "{\"name\": \"failover\", \"script\": \"true\", "
                           "\"security_group\": \"ops\", \"schedule\": {\"every\": \"1s\"}}";
        tb_uuid4(id);
        tb_uuid4(corr);
        tb_uuid4(cid);
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:n, s:s, s:I}", "command_id", cid,
                              "correlation_id", corr, "type", "CREATE", "task_id", id,
                              "expected_version", "task", body, "requested_at",
                              (json_int_t)tb_now_ms());
        tb_buf_t buf = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_COMMAND, j, &buf, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(j);
        char principal[200], auth[200];
        tbt_sign_command(&g_st, g_authz, id, strlen(id), buf.data, buf.len, 0, principal, auth);
        tb_header_t h[3] = {{"tb-principal", principal, strlen(principal)},
                            {"tb-auth", auth, strlen(auth)},
                            {"correlation_id", corr, strlen(corr)}};
        cr_assert_eq(tb_bus_produce(g_prod, g_st.conf, TB_TOPIC_COMMANDS, RD_KAFKA_PARTITION_UA,
                                    id, strlen(id), buf.data, buf.len, h, 3, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&buf);
        const json_t *r = tbt_reader_wait(g_replies, "correlation_id", corr, WAIT_MS);
        cr_assert_not_null(r, "no reply to CREATE");
        cr_assert_str_eq(rstr(r, "status"), "ACCEPTED", "%s", rstr(r, "message"));
}

static void dump_log(void) {
        char *log = tbt_daemon_log(&g_st);
        size_t n = log ? strlen(log) : 0;
        cr_log_error("daemon log (last 20000 bytes):\n%s", log ? log + (n > 20000 ? n - 20000 : 0)
                                                          : "(none)");
        free(log);
}

/* The checker (tests/support/support_checker.c, shared with tools/chaos): every
 * nominal second of every task from its first fire to \p until is exactly
 * one run (attempt 1) or one recorded skip, and no run id is emitted twice. */
static void check_exactly_once(char ids[TASKS][37], int64_t until) {
        tbt_reader_t *runs = tbt_reader_new(&g_st, TB_TOPIC_RUNS, true);
        tbt_reader_t *res = tbt_reader_new(&g_st, TB_TOPIC_RESULTS, true);
        cr_assert(tbt_reader_drain(runs, WAIT_MS), "runs not drained (read_committed)");
        cr_assert(tbt_reader_drain(res, WAIT_MS), "run-results not drained (read_committed)");
        const json_t *rv = tbt_reader_values(runs);
        json_t *expect = json_object();
        for (int t = 0; t < TASKS; t++) {
                int64_t first = INT64_MAX;
                size_t i;
                json_t *v;
                json_array_foreach((json_t *)rv, i, v)
                        if (!strcmp(rstr(v, "task_id"), ids[t]) && rint64(v, "nominal_time") < first)
                                first = rint64(v, "nominal_time");
                cr_assert_neq(first, INT64_MAX, "task %d never fired", t);
                json_t *noms = json_array();
                for (int64_t n = first; n <= until; n += 1000)
                        json_array_append_new(noms, json_integer(n));
                json_object_set_new(expect, ids[t], noms);
        }
        tbt_fires_report_t rep;
        tbt_fires_check(rv, tbt_reader_values(res), expect, NULL, &rep);
        json_decref(expect);
        size_t i;
        json_t *p;
        json_array_foreach(rep.problems, i, p)
                cr_log_error("%s", json_string_value(p));
        if (rep.duplicated || rep.lost)
                dump_log();
        cr_assert_eq(rep.duplicated, 0, "%zu fires or run ids duplicated", rep.duplicated);
        cr_assert_eq(rep.lost, 0, "%zu fires lost", rep.lost);
        cr_assert_eq(rep.fired + rep.skipped, rep.expected);
        cr_log_info("checked: %zu fires expected: %zu runs (%zu misfire catch-ups), %zu recorded "
                    "skips; largest fire lag %lld ms",
                    rep.expected, rep.fired, rep.misfires, rep.skipped,
                    (long long)rep.max_fire_lag_ms);
        tbt_fires_report_clear(&rep);
        tbt_reader_free(runs);
        tbt_reader_free(res);
}

/* Wait until every task has a run with nominal >= \p t. */
static void wait_all_fire_after(char ids[TASKS][37], int64_t t) {
        tbt_reader_t *runs = tbt_reader_new(&g_st, TB_TOPIC_RUNS, true);
        int64_t end = tb_now_ms() + WAIT_MS;
        for (;;) {
                tbt_reader_poll(runs, 300);
                int ok = 0;
                for (int k = 0; k < TASKS; k++) {
                        size_t i;
                        json_t *v;
                        json_array_foreach((json_t *)tbt_reader_values(runs), i, v)
                                if (!strcmp(rstr(v, "task_id"), ids[k]) &&
                                    rint64(v, "nominal_time") >= t) {
                                        ok++;
                                        break;
                                }
                }
                if (ok == TASKS)
                        break;
                if (tb_now_ms() > end) {
                        dump_log();
                        cr_assert_fail("only %d of %d tasks fired after %lld", ok, TASKS,
                                       (long long)t);
                }
        }
        tbt_reader_free(runs);
}

TestSuite(scheduler_failover, .init = setup, .fini = teardown, .timeout = 400);

Test(scheduler_failover, kill9_and_sigstop_zombie_exactly_once) {
        static char ids[TASKS][37];
        for (int t = 0; t < TASKS; t++)
                create_task(ids[t]);
        wait_all_fire_after(ids, tb_now_ms());

        /* SIGKILL a scheduler 5 times, restarting it at once (same member id) */
        for (int round = 0; round < 5; round++) {
                usleep(5500 * 1000);
                int i = round % 2;
                cr_log_info("round %d: SIGKILL scheduler %d (pid %d)", round, i, (int)g_sched[i]);
                tbt_daemon_stop(g_sched[i], SIGKILL);
                g_sched[i] = start_scheduler(i);
        }
        wait_all_fire_after(ids, tb_now_ms());

        /* a zombie: stopped past the session timeout, the other member takes
         * over, then it wakes up and tries to commit what it had */
        cr_log_info("SIGSTOP scheduler 0 (pid %d)", (int)g_sched[0]);
        kill(g_sched[0], SIGSTOP);
        usleep(10000 * 1000);
        kill(g_sched[0], SIGCONT);
        cr_log_info("SIGCONT scheduler 0");
        usleep(6000 * 1000);
        int64_t until = tb_now_ms() - 2000;
        wait_all_fire_after(ids, until + 1000);
        check_exactly_once(ids, until);
        /* show what the zombie went through (fenced commit, lost partitions) */
        char *log = tbt_daemon_log(&g_st), *save = NULL;
        for (char *line = log ? strtok_r(log, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save))
                if (strstr(line, "scheduler: transaction failed") ||
                    strstr(line, "scheduler: partition") )
                        cr_log_info("%s", line);
        free(log);
}

/* A raw group member on task-events that takes scheduler \p i's static id:
 * the broker fences the scheduler's member (FENCED_INSTANCE_ID), a fatal
 * consumer error, as after a session timeout during a broker restart. */
static rd_kafka_t *intruder(const char *member) {
        char err[512], group[128], topic[128];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        snprintf(group, sizeof(group), "%sscheduler", g_st.prefix);
        snprintf(topic, sizeof(topic), "%stask-events", g_st.prefix);
        cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", g_st.kafka, err, sizeof(err)), 0);
        cr_assert_eq(rd_kafka_conf_set(c, "group.id", group, err, sizeof(err)), 0);
        cr_assert_eq(rd_kafka_conf_set(c, "group.instance.id", member, err, sizeof(err)), 0);
        cr_assert_eq(rd_kafka_conf_set(c, "session.timeout.ms", "6000", err, sizeof(err)), 0);
        cr_assert_eq(rd_kafka_conf_set(c, "partition.assignment.strategy", "cooperative-sticky",
                                       err, sizeof(err)),
                     0);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        cr_assert_not_null(rk, "%s", err);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
        cr_assert_eq(rd_kafka_subscribe(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        return rk;
}

Test(scheduler_failover, fenced_static_member_joins_again_and_catches_up) {
        static char ids[TASKS][37];
        for (int t = 0; t < TASKS; t++)
                create_task(ids[t]);
        wait_all_fire_after(ids, tb_now_ms());
        /* fence both schedulers' group members: without a rejoin nothing
         * fires any more (the chaos run's lost fires) */
        rd_kafka_t *in[2] = {intruder("sched-a"), intruder("sched-b")};
        int64_t end = tb_now_ms() + 8000;
        while (tb_now_ms() < end)
                for (int i = 0; i < 2; i++) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(in[i], 100);
                        if (m)
                                rd_kafka_message_destroy(m);
                }
        for (int i = 0; i < 2; i++)
                rd_kafka_destroy_flags(in[i], RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        int64_t after = tb_now_ms();
        wait_all_fire_after(ids, after + 3000);
        check_exactly_once(ids, after + 2000);
        char *log = tbt_daemon_log(&g_st);
        cr_assert(log && strstr(log, "joining group"),
                  "no scheduler reported a fenced group member and a rejoin");
        free(log);
}
