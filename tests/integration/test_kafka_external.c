/**
 * @file test_kafka_external.c
 * @brief The Kafka command interface used by a system outside taskbus: a
 *        producer made of Debian's python3-avro, python3-confluent-kafka and
 *        kcat (no taskbus code) signs with its token's key, creates a task
 *        and reads its ACCEPTED reply, then sends a record that is not Avro
 *        and reads its REJECTED reply, then a command in the old bearer form
 *        and reads the REJECTED reply explaining it; the consumer keeps going
 *        and the task is projected.
 */
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static tbt_stack_t st;
static pid_t daemon_pid;

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        daemon_pid = tbt_daemon_start(&st, "commands,projector");
}

static void teardown(void) {
        if (daemon_pid > 0) {
                int ws = tbt_daemon_stop(daemon_pid, SIGTERM);
                cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "taskbusd exit 0x%x", ws);
        }
        tbt_stack_destroy(&st);
}

static char g_sql[256];

static bool projected(void *arg) {
        char *v = tbt_sql_value(&st, g_sql);
        bool ok = v && !strcmp(v, "from-python");
        free(v);
        return ok;
}

Test(kafka_external, python_avro_and_kcat_producer, .init = setup, .fini = teardown,
     .timeout = 300) {
        char authz[96];
        tbt_stack_user(&st, "extuser", "ext", authz);
        char *out = NULL;
        int rc = tbt_run(&out,
                         "/usr/bin/python3 '%s/tests/interop/external_producer.py' '%s' '%s' '%s' "
                         "ext extuser",
                         tbt_source_dir(), st.kafka, st.prefix, authz + strlen("Bearer "));
        cr_assert_eq(rc, 0, "external producer failed (%d):\n%s", rc, out ? out : "");
        json_error_t je;
        const char *line = strrchr(out, '{');
        json_t *j = line ? json_loads(line, 0, &je) : NULL;
        cr_assert_not_null(j, "no JSON summary in:\n%s", out);
        cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ACCEPTED");
        cr_assert_str_eq(json_string_value(json_object_get(j, "malformed_reason")), "INVALID_ARGUMENT");
        /* the old form: refused, saying what changed and where to read how to sign */
        cr_assert_str_eq(json_string_value(json_object_get(j, "old_form_status")), "REJECTED");
        cr_assert_str_eq(json_string_value(json_object_get(j, "old_form_reason")),
                         "UNAUTHENTICATED");
        const char *om = json_string_value(json_object_get(j, "old_form_message"));
        cr_assert(om && strstr(om, "bearer tokens are no longer accepted on Kafka") &&
                          strstr(om, "docs/kafka-interface.md"),
                  "%s", om ? om : "(none)");
        snprintf(g_sql, sizeof(g_sql), "SELECT name FROM tasks WHERE id = '%s'",
                 json_string_value(json_object_get(j, "task_id")));
        cr_assert(tbt_wait_until(projected, NULL, 30000), "the task was not projected");
        json_decref(j);
        free(out);
}
