/**
 * @file cli/cli.h
 * @brief The `taskbus` command-line tool: one file and one entry function
 *        per command group (cli/<group>.c), dispatched from main_cli.c, and
 *        the helpers every group shares (common.c). Each entry returns the
 *        process exit status: 0 ok, 1 failure reported by the server or the
 *        system, 2 usage error. Groups that talk to the REST API do it
 *        through cli/rest.h; admin, identity, region, replay and history
 *        work on PostgreSQL and Kafka directly.
 */
#ifndef TB_CLI_H
#define TB_CLI_H

#include "config/config.h"

#include <jansson.h>
#include <stdio.h>

/* ---- shared by the groups (common.c) ------------------------------------------ */

/** One command group: `taskbus NAME ...`. */
typedef struct tb_cli_cmd {
        const char *name;
        const char *summary;
        int (*run)(int argc, char **argv); /**< argv[0] is the group name */
} tb_cli_cmd_t;

/** Load the config named by --config (removed from argv) or $TASKBUS_CONFIG,
 *  else defaults + environment. Prints the error and returns NULL on failure. */
tb_config_t *tb_cli_config(int *argc, char **argv);

/** Print "taskbus: <msg>" to stderr. */
void tb_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** True if argv holds -h or --help. */
bool tb_cli_wants_help(int argc, char **argv);

/**
 * @brief Answer a command (group) given no subcommand, or asked for help:
 *        with no argv[1], \p usage to stderr and *rc 2; with argv[1] -h,
 *        --help or help, \p usage to stdout and *rc 0.
 * @returns true when answered (the caller returns *rc), false otherwise.
 */
bool tb_cli_group_usage(int argc, char **argv, void (*usage)(FILE *fp), int *rc);

/** Print \p j on stdout as indented JSON (nothing for NULL). */
void tb_cli_print_json(const json_t *j);

/**
 * @brief Who runs the CLI, for audit trails: "user@host", the user who ran
 *        sudo under sudo; anything but printable ASCII becomes '?'.
 */
void tb_cli_actor(char *buf, size_t size);

/* ---- the command groups ---------------------------------------------------- */

/** `taskbus admin ...` (admin.c): migrations and topics, and the dispatch to
 *  identity.c and region.c. */
int tb_cli_admin(int argc, char **argv);
/** `taskbus admin user|token|group|audit` (identity.c): sets *handled when
 *  argv[1] is one of them; returns the exit status. */
int tb_cli_admin_identity(int argc, char **argv, tb_config_t *conf, bool *handled);
void tb_cli_admin_identity_usage(FILE *fp);
/** `taskbus admin region failover|status` (region.c); argv[1] is "region". */
int tb_cli_admin_region(int argc, char **argv, tb_config_t *conf);
void tb_cli_admin_region_usage(FILE *fp);
/** `taskbus admin quarantine list|show|retry|drop` (quarantine.c); argv[1] is
 *  "quarantine". */
int tb_cli_admin_quarantine(int argc, char **argv, tb_config_t *conf);
void tb_cli_admin_quarantine_usage(FILE *fp);
/** `taskbus tasks create|list|get|update|delete|pause|resume|run` (tasks.c). */
int tb_cli_tasks(int argc, char **argv);
/** `taskbus tasks backfill` (backfill.c); argv[0] is "backfill". */
int tb_cli_tasks_backfill(int argc, char **argv);
/** `taskbus runs list|get|cancel` (runs.c): run history through the REST API. */
int tb_cli_runs(int argc, char **argv);
/** `taskbus logs RUN_ID [--follow]` (runs.c): a run's output, live with --follow. */
int tb_cli_logs(int argc, char **argv);
/** `taskbus calendars create|update|delete|list|show` (calendars.c). */
int tb_cli_calendars(int argc, char **argv);
/** `taskbus schedule next` (schedule.c): preview a schedule's next fires. */
int tb_cli_schedule(int argc, char **argv);
/** `taskbus replay --into URL [--from-kafka BOOTSTRAP] [--force]` (replay.c). */
int tb_cli_replay(int argc, char **argv);
/** `taskbus history TASK_ID [--at TIME] [--json]` (history.c). */
int tb_cli_history(int argc, char **argv);
/** `taskbus notify test CHANNEL` (notify.c). */
int tb_cli_notify(int argc, char **argv);

#endif
