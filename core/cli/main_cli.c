/**
 * @file cli/main_cli.c
 * @brief `taskbus`: the command-line tool (see `taskbus --help`).
 */
#include "cli.h"
#include "serde/serde.h"

#include <stdio.h>
#include <string.h>

static const tb_cli_cmd_t tb_cli_cmds[] = {
        {"admin", "administration on the database and Kafka (migrate, topics)", tb_cli_admin},
        {"tasks", "create, list, show, change, pause, run and delete tasks (REST API)",
         tb_cli_tasks},
        {"runs", "a task's runs: list, show, cancel (REST API)", tb_cli_runs},
        {"logs", "a run's output; --follow streams it while the run goes on", tb_cli_logs},
        {"replay", "rebuild the projection in a database from task-events", tb_cli_replay},
        {"history", "every change of a task, and its state at a given time", tb_cli_history},
        {"calendars", "business calendars: create, update, delete, list, show (REST API)",
         tb_cli_calendars},
        {"notify", "send a test notification to a channel and follow its delivery (admins)",
         tb_cli_notify},
        {"schedule", "preview when a cron expression, interval or task fires (schedule next)",
         tb_cli_schedule},
        {NULL, NULL, NULL},
};

static void tb_cli_usage(FILE *fp) {
        fprintf(fp, "usage: taskbus COMMAND [ARGS...]   (taskbus COMMAND --help for more)\n\n");
        for (const tb_cli_cmd_t *c = tb_cli_cmds; c->name; c++)
                fprintf(fp, "  %-10s %s\n", c->name, c->summary);
        fprintf(fp, "\nEnvironment: TASKBUS_API, TASKBUS_TOKEN, TASKBUS_CACERT, TASKBUS_CONFIG, TASKBUS_PG, TASKBUS_KAFKA\n");
}

int main(int argc, char **argv) {
        int rc;
        if (tb_cli_group_usage(argc, argv, tb_cli_usage, &rc))
                return rc;
        if (!strcmp(argv[1], "--version")) {
                printf("taskbus %s\n", TB_VERSION);
                return 0;
        }
        for (const tb_cli_cmd_t *c = tb_cli_cmds; c->name; c++)
                if (!strcmp(argv[1], c->name))
                        return c->run(argc - 1, argv + 1);
        tb_cli_fail("unknown command '%s'", argv[1]);
        tb_cli_usage(stderr);
        return 2;
}
