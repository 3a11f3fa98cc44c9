/**
 * @file test_replication.c
 * @brief Region replication without Kafka: the `replication` settings, the
 *        names of copied topics, and the scheduler engine's epoch fencing of
 *        a task moved between regions (docs/replication.md).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "replication.h"
#include "scheduler/scheduler.h"
#include "serde/serde.h"
#include "support.h"

#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */
#define TID "0c1c2e4a-1b2c-4d3e-8f90-a1b2c3d4e5f6"

static tb_err_t load(const char *text, tb_config_t **conf, char *err, size_t size) {
        char *path = tbt_write_temp(".conf", text);
        tb_err_t e = tb_config_load(path, conf, err, size);
        unlink(path);
        free(path);
        return e;
}

static void clear_env(void) {
        const char *v[] = {"TASKBUS_REGION", "TASKBUS_REMOTE_REGIONS", "TASKBUS_REGION_APIS",
                           "TASKBUS_REGION_KAFKA"};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
                unsetenv(v[i]);
}

Test(replication, config_reads_regions_and_lookups, .init = clear_env) {
        tb_config_t *c = NULL;
        char err[1024];
        cr_assert_eq(load("region = \"eu\";\n"
                          "replication = {\n"
                          "  remote_regions = [\"us\", \"ap\"];\n"
                          "  region_apis = { us = \"http://us:8080\"; ap = \"https://ap\"; };\n"
                          "  region_kafka = { us = \"k.us:9092\"; };\n"
                          "  startup_fence = \"5s\";\n"
                          "};\n",
                          &c, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(c->repl_remote_region_cnt, 2);
        cr_assert_str_eq(tb_repl_region_api(c, "ap"), "https://ap");
        cr_assert_str_eq(tb_repl_region_kafka(c, "us"), "k.us:9092");
        cr_assert_null(tb_repl_region_kafka(c, "ap"));
        cr_assert_eq(c->repl_startup_fence_ms, 5000);
        char name[300];
        cr_assert_str_eq(tb_repl_topic_name(c, "us", TB_TOPIC_EVENTS, name, sizeof(name)),
                         "us.taskbus.task-events");
        const char *region = NULL;
        tb_topic_t t;
        cr_assert(tb_repl_topic_parse(c, "ap.taskbus.run-results", &region, &t));
        cr_assert_str_eq(region, "ap");
        cr_assert_eq(t, TB_TOPIC_RESULTS);
        cr_assert_not(tb_repl_topic_parse(c, "eu.taskbus.task-events", &region, &t),
                      "this region's name is not a remote region");
        cr_assert_not(tb_repl_topic_parse(c, "taskbus.task-events", &region, &t));
        cr_assert_not(tb_repl_topic_parse(c, "us.taskbus.task-commands", &region, &t),
                      "task-commands is not copied");
        tb_config_destroy(c);

        /* the environment form */
        setenv("TASKBUS_REGION", "us", 1);
        setenv("TASKBUS_REMOTE_REGIONS", "eu", 1);
        setenv("TASKBUS_REGION_APIS", "eu=http://eu:1", 1);
        cr_assert_eq(tb_config_load(NULL, &c, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_str_eq(tb_repl_region_api(c, "eu"), "http://eu:1");
        cr_assert_eq(c->repl_remote_region_cnt, 1);
        tb_config_destroy(c);
        clear_env();
}

static void expect_refused(const char *text, const char *needle) {
        tb_config_t *c = NULL;
        char err[1024];
        cr_assert_eq(load(text, &c, err, sizeof(err)), TB_ERR_INVALID, "accepted:\n%s", text);
        cr_assert_null(c);
        cr_assert(strstr(err, needle), "'%s' not in: %s", needle, err);
}

Test(replication, config_refuses_bad_regions, .init = clear_env) {
        expect_refused("region = \"eu\"; replication = { remote_regions = [\"eu\"]; };",
                       "is this region");
        expect_refused("region = \"eu\"; replication = { remote_regions = [\"us\", \"us\"]; };",
                       "listed twice");
        expect_refused("replication = { remote_regions = [\"u s\"]; };", "not a region name");
        expect_refused("region = \"eu\"; replication = { region_apis = { us = \"ftp://x\"; }; };",
                       "replication.region_apis.us: \"ftp://x\" is not an http:// or https:// URL");
        expect_refused("replication = { region_apis = { us = 3; }; };",
                       "replication.region_apis.us: expected a string");
        expect_refused("replication = { region_apis = [\"us\"]; };", "expected a group");
        expect_refused("region = \"eu\"; replication = { region_kafka = { eu = \"k:1\"; }; };",
                       "must name another region");
        setenv("TASKBUS_REGION_APIS", "us", 1);
        tb_config_t *c = NULL;
        char err[1024];
        cr_assert_eq(tb_config_load(NULL, &c, err, sizeof(err)), TB_ERR_INVALID);
        cr_assert(strstr(err, "TASKBUS_REGION_APIS"), "%s", err);
        clear_env();
}

Test(replication, event_order_epoch_first) {
        cr_assert(tb_repl_newer(1, 2, 0, 9), "a higher epoch wins over a higher version");
        cr_assert_not(tb_repl_newer(0, 10, 1, 2), "an old epoch never wins");
        cr_assert(tb_repl_newer(1, 3, 1, 2));
        cr_assert_not(tb_repl_newer(1, 2, 1, 2), "the same event again is not newer");
}

/* ---- scheduler engine ---------------------------------------------------------- */

static size_t fires;

static void sink(void *opaque, tb_topic_t topic, int32_t partition, const char *key,
                 const void *value, size_t len, const tb_header_t *h, size_t hcnt) {
        (void)opaque, (void)partition, (void)key, (void)value, (void)len, (void)h, (void)hcnt;
        if (topic == TB_TOPIC_RUNS)
                fires++;
}

static json_t *event(const char *type, int64_t version, int64_t epoch, const char *home) {
        return json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:{s:s, s:s, s:s, s:s, "
                         "s:{s:s, s:I, s:n, s:n, s:n, s:I}, s:I, s:s, s:{s:i, s:I, s:I}, "
                         "s:s, s:b, s:s}}",
                         "task_id", TID, "type", type, "version", (json_int_t)version,
                         "event_id", "e", "epoch", (json_int_t)epoch, "at", (json_int_t)T0,
                         "created_at", (json_int_t)T0, "task", "name", "t", "script", "true",
                         "security_group", "ops", "user_id", "alice", "schedule", "kind",
                         "EVERY", "every_ms", (json_int_t)10000, "once_at", "cron", "start_at",
                         "jitter_ms", (json_int_t)0, "expiry_ms", (json_int_t)60000, "executor",
                         "shell", "retries", "max_attempts", 1, "backoff_ms", (json_int_t)1000,
                         "backoff_max_ms", (json_int_t)10000, "misfire", "RUN_ONCE", "paused", 0,
                         "home_region", home);
}

static void apply(tb_sched_t *s, json_t *ev, bool remote, int64_t now) {
        char err[256];
        tb_err_t e = remote ? tb_sched_remote_event(s, 0, ev, now, err, sizeof(err))
                            : tb_sched_event(s, 0, ev, false, now, err, sizeof(err));
        cr_assert_eq(e, TB_OK, "%s", err);
        json_decref(ev);
}

static size_t tick(tb_sched_t *s, int64_t now) {
        tb_sched_tick_stats_t st;
        char err[256];
        size_t before = fires;
        cr_assert_eq(tb_sched_tick(s, now, &st, err, sizeof(err)), TB_OK, "%s", err);
        return fires - before;
}

Test(replication, scheduler_fires_only_the_highest_epoch_home) {
        char err[256];
        tb_config_t *conf = tb_config_defaults();
        free(conf->region);
        conf->region = strdup("us");
        tb_sched_t *s = NULL;
        cr_assert_eq(tb_sched_new(conf, "h", &s, err, sizeof(err)), TB_OK, "%s", err);
        tb_sched_set_sink(s, sink, NULL);
        tb_sched_part(s, 0)->owned = true;

        /* homed in eu: us holds it, never fires it */
        apply(s, event("CREATED", 1, 0, "eu"), true, T0);
        cr_assert_eq(tick(s, T0 + 60000), 0, "us fired a task homed in eu");
        cr_assert_null(tb_sched_take_moved(s));

        /* failover: HOME_MOVED on us's own task-events, epoch 1 */
        apply(s, event("HOME_MOVED", 2, 1, "us"), false, T0 + 60000);
        char *moved = tb_sched_take_moved(s);
        cr_assert_not_null(moved, "the move is reported for the role to adopt");
        cr_assert_str_eq(moved, TID);
        free(moved);
        /* eu's runs said it last fired at T0 + 50 s: resume after it */
        tb_sched_task_adopt(s, TID, T0 + 50000);
        cr_assert_eq(tick(s, T0 + 60000), 1, "the moved task fires its missed nominal once");
        cr_assert_eq(tick(s, T0 + 70000), 1);

        /* a late event of eu's old epoch (higher version) does not take it back */
        apply(s, event("UPDATED", 5, 0, "eu"), true, T0 + 70001);
        cr_assert_eq(tick(s, T0 + 80000), 1, "an old-epoch event stopped the new home");

        /* failing back: eu's HOME_MOVED (epoch 2) arrives through the copy */
        apply(s, event("HOME_MOVED", 3, 2, "eu"), true, T0 + 80001);
        cr_assert_eq(tick(s, T0 + 120000), 0, "us still fires a task moved back to eu");
        cr_assert_null(tb_sched_take_moved(s));

        /* a run-now requested in eu is eu's to fire */
        json_t *rn = event("RUN_REQUESTED", 4, 2, "eu");
        apply(s, rn, true, T0 + 120001);
        cr_assert_eq(tick(s, T0 + 120002), 0);
        tb_sched_destroy(s);
        tb_config_destroy(conf);
}
