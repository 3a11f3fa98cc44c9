/**
 * @file test_restart.c
 * @brief A clean restart of taskbusd with the default configuration (no
 *        group.instance.id, the default session timeout) while a task fires
 *        every second: the new process is the same consumer-group member as
 *        the old one (its node name survives the restart), and every nominal
 *        time of the task is in the runs exactly once, none missed and none
 *        doubled. The gap in fires is printed, not asserted (shared machines).
 */
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define WAIT_MS 120000

static tbt_stack_t g_st;

TestSuite(restart, .timeout = 400);

typedef struct runs_wait {
        const char *task;
        long long after_ms; /* count runs with nominal_time after this */
        long long want;
} runs_wait_t;

static long long count_runs(const char *task, long long after_ms) {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM runs WHERE task_id = '%s' AND status = 'succeeded' AND "
                 "nominal_time > to_timestamp(%lld / 1000.0)",
                 task, after_ms);
        char *v = tbt_sql_value(&g_st, sql);
        long long n = v ? atoll(v) : 0;
        free(v);
        return n;
}

static bool enough_runs(void *arg) {
        runs_wait_t *w = arg;
        return count_runs(w->task, w->after_ms) >= w->want;
}

/* The names the scheduler joined its group with, in the order of the log. */
static int members(char names[][256], int cap) {
        char *log = tbt_daemon_log(&g_st);
        int n = 0;
        for (char *p = log; n < cap && (p = strstr(p, "scheduler: member ")); n++) {
                p += strlen("scheduler: member ");
                size_t len = strcspn(p, " ");
                snprintf(names[n], 256, "%.*s", (int)len, p);
        }
        free(log);
        return n;
}

Test(restart, clean_restart_keeps_the_member_and_every_nominal_time_once) {
        tbt_stack_create(&g_st, &(tbt_stack_opts_t){.partitions = 2});
        char alice[96];
        tbt_stack_user(&g_st, "alice", "ops", alice);
        rd_kafka_t *prod = tbt_stack_producer(&g_st);
        const char *roles = "commands,projector,scheduler,executor";
        pid_t pid = tbt_daemon_start(&g_st, roles);

        char corr[37];
        const char *task = "restart-every-second";
        tbt_send_command(&g_st, prod, "CREATE", task, -1,
                         "{\"name\": \"every second\", \"script\": \"true\", "
                         "\"security_group\": \"ops\", \"schedule\": {\"every\": \"1s\"}, "
                         "\"misfire\": \"run_all\"}",
                         alice, NULL, corr);
        runs_wait_t w = {task, 0, 5};
        cr_assert(tbt_wait_until(enough_runs, &w, WAIT_MS), "no 5 runs before the restart");

        int64_t stop_ms = tb_now_ms();
        int st = tbt_daemon_stop(pid, SIGTERM);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "taskbusd did not stop cleanly (%d)", st);
        pid = tbt_daemon_start(&g_st, roles);
        w = (runs_wait_t){task, stop_ms + 5000, 5};
        cr_assert(tbt_wait_until(enough_runs, &w, WAIT_MS), "no 5 runs after the restart");
        tbt_daemon_stop(pid, SIGTERM);

        char names[4][256];
        int n = members(names, 4);
        cr_assert_eq(n, 2, "expected two 'member' lines (one per start), got %d", n);
        cr_assert_str_eq(names[0], names[1],
                         "the restarted scheduler is a new group member: it waits for the old "
                         "one's session to time out");

        /* Every nominal time from the first to the last, once, 1 s apart. */
        char sql[768];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) || ' ' || count(DISTINCT nominal_time) || ' ' || "
                 "((extract(epoch FROM max(nominal_time) - min(nominal_time)) * 1000)::bigint) "
                 "FROM runs WHERE task_id = '%s'",
                 task);
        char *v = tbt_sql_value(&g_st, sql);
        long long total = 0, distinct = 0, span_ms = 0;
        cr_assert_eq(sscanf(v, "%lld %lld %lld", &total, &distinct, &span_ms), 3, "%s", v);
        free(v);
        cr_assert_eq(total, distinct, "%lld runs for %lld nominal times: some doubled", total,
                     distinct);
        cr_assert_eq(span_ms, (distinct - 1) * 1000,
                     "%lld nominal times over %lld ms: some missed", distinct, span_ms);

        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(max(gap), 0) FROM (SELECT (extract(epoch FROM started_at - "
                 "lag(started_at) OVER (ORDER BY nominal_time)) * 1000)::bigint AS gap FROM runs "
                 "WHERE task_id = '%s') g",
                 task);
        v = tbt_sql_value(&g_st, sql);
        fprintf(stderr, "restart: %lld nominal times, each run once; largest gap between "
                        "starts %s ms (the restart)\n", distinct, v ? v : "?");
        free(v);
        rd_kafka_destroy(prod);
        tbt_stack_destroy(&g_st);
}
