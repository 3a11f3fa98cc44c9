/**
 * @file test_chaos.c
 * @brief tools/chaos under the suite, each on a private Kafka + PostgreSQL
 *        (its own folder and ports, so restarting its brokers does not
 *        disturb the test stack other tests use), every process naming
 *        itself as shipped (no group_instance_id). The tests assert the
 *        checker's report: nothing duplicated, nothing lost, every accepted
 *        command applied, the projection equal to a replay.
 *
 * - `--short`: a multi-process deployment (2 schedulers, 2 executors, api,
 *   commands, projector, archiver) under steady load, with every kind of
 *   process SIGKILLed once, a scheduler SIGSTOPped past its session timeout,
 *   a broker restart and a PostgreSQL restart.
 * - `--cluster --quick`: the same deployment on three brokers with
 *   replication 3; SIGKILL of the broker leading most partitions, then of
 *   scheduler-a's transaction coordinator, each started again 10 s later.
 *   The longer `--cluster` run (with a PostgreSQL restart and a scheduler
 *   cut off) is in docs/reliability.md.
 */
#include "support.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static json_int_t jget(const json_t *o, const char *a, const char *b) {
        const json_t *v = json_object_get(o, a);
        return json_integer_value(b ? json_object_get(v, b) : v);
}

/* Run tools/chaos with \p args and assert its report (at least \p min_fires
 * fires expected, at least \p min_faults faults injected). */
static void chaos_run(const char *args, json_int_t min_fires, size_t min_faults) {
        char *report = tbt_write_temp(".json", "");
        char *out = NULL;
        int rc = tbt_run(&out, "TB_BUILD_DIR='%s' '%s/tools/chaos' %s --json '%s'",
                         tbt_build_dir(), tbt_source_dir(), args, report);
        size_t n = out ? strlen(out) : 0;
        cr_log_info("tools/chaos output (last 6000 bytes):\n%s", out ? out + (n > 6000 ? n - 6000 : 0) : "");
        json_error_t je;
        json_t *rep = json_load_file(report, 0, &je);
        cr_assert_not_null(rep, "no report from tools/chaos (%s); status %d; output:\n%s", je.text, rc,
                           out ? out + (n > 6000 ? n - 6000 : 0) : "");
        cr_assert_null(json_object_get(rep, "error"), "tools/chaos failed: %s",
                       json_string_value(json_object_get(rep, "error")));
        cr_assert_gt(jget(rep, "fires", "expected"), min_fires, "too few fires to prove anything");
        cr_assert_eq(jget(rep, "fires", "duplicated"), 0, "duplicated fires or runs");
        cr_assert_eq(jget(rep, "fires", "lost"), 0, "lost fires");
        cr_assert_eq(jget(rep, "fires", "executed") + jget(rep, "fires", "policy_skipped") +
                             jget(rep, "fires", "skipped"),
                     jget(rep, "fires", "expected"));
        cr_assert_geq(json_array_size(json_object_get(rep, "faults")), min_faults,
                      "fewer faults injected than planned");
        cr_assert_eq(jget(rep, "claims", "duplicated_run_ids"), 0);
        cr_assert_gt(jget(rep, "commands", "accepted"), 0);
        cr_assert_eq(jget(rep, "commands", "missing_event"), 0, "accepted commands without an event");
        cr_assert_eq(jget(rep, "commands", "missing_row"), 0, "accepted commands not projected");
        cr_assert(json_is_true(json_object_get(json_object_get(rep, "replay"), "equal")),
                  "the projection differs from a replay");
        cr_assert_eq(json_array_size(json_object_get(rep, "sanitizer_reports")), 0,
                     "sanitizer reports in the daemons' logs");
        cr_assert(json_is_true(json_object_get(rep, "ok")));
        cr_assert_eq(rc, 0, "tools/chaos exit status %d", rc);
        json_decref(rep);
        unlink(report);
        free(report);
        free(out);
}

Test(chaos, short_run_exactly_once, .timeout = 890) {
        chaos_run("--short", 1000, 11);
}

Test(chaos, broker_kills_on_three_brokers_exactly_once, .timeout = 890) {
        chaos_run("--cluster --quick --tasks 10 --burst 40", 500, 2);
}
