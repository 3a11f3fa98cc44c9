/**
 * @file cli/history.c
 * @brief `taskbus history`: a task's audit trail from task_history, and its
 *        state at a given time.
 */
#include "cli.h"
#include "store/store.h"
#include "store/tasks.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- history ------------------------------------------------------------------- */

static void tb_cli_history_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus history TASK_ID [--at TIME] [--json] [--config FILE]\n\n"
                "Prints every change of a task from the audit trail (task_history in\n"
                "PostgreSQL: $TASKBUS_PG or the config's postgres.url): version, when, who,\n"
                "what happened and which fields changed.\n\n"
                "  --at TIME   also print the task as it was at TIME (RFC 3339,\n"
                "              e.g. 2026-01-02T03:04:05Z)\n"
                "  --json      machine-readable output\n");
}

int tb_cli_history(int argc, char **argv) {
        if (tb_cli_wants_help(argc, argv)) {
                tb_cli_history_usage(stdout);
                return 0;
        }
        tb_config_t *conf = tb_cli_config(&argc, argv);
        if (!conf)
                return 1;
        const char *task_id = NULL, *at_text = NULL;
        bool as_json = false;
        char err[1024];
        int64_t at_ms = 0;
        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--at") && i + 1 < argc) {
                        at_text = argv[++i];
                } else if (!strcmp(argv[i], "--json")) {
                        as_json = true;
                } else if (argv[i][0] != '-' && !task_id) {
                        task_id = argv[i];
                } else {
                        tb_cli_fail("history: unexpected argument '%s'", argv[i]);
                        tb_cli_history_usage(stderr);
                        tb_config_destroy(conf);
                        return 2;
                }
        }
        if (!task_id) {
                tb_cli_fail("history: TASK_ID is required");
                tb_cli_history_usage(stderr);
                tb_config_destroy(conf);
                return 2;
        }
        if (at_text && tb_time_parse(at_text, &at_ms, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("history: --at: %s (write an RFC 3339 time such as "
                            "2026-01-02T03:04:05Z)",
                            err);
                tb_config_destroy(conf);
                return 2;
        }

        int rc = 1;
        PGresult *r = NULL;
        json_t *out = NULL;
        PGconn *conn = NULL;
        if (tb_store_connect_one(conf->pg_url, &conn, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("history: cannot connect to PostgreSQL: %s", err);
                goto done;
        }
        if (tb_store_tasks_history_all(conn, task_id, &r, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("history: %s", err);
                goto done;
        }
        int n = PQntuples(r);
        if (n == 0) {
                tb_cli_fail("history: task '%s' has no history (unknown id?)", task_id);
                goto done;
        }
        out = json_object();
        json_t *hist = json_array();
        json_object_set_new(out, "task_id", json_string(task_id));
        json_object_set_new(out, "history", hist);
        int state_row = -1;
        for (int i = 0; i < n; i++) {
                int64_t when = strtoll(PQgetvalue(r, i, 1), NULL, 10);
                json_t *changed = json_loads(PQgetvalue(r, i, 5), 0, NULL);
                char ts[32];
                tb_time_format(when, ts);
                json_array_append_new(
                        hist, json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:s}", "version",
                                        (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10), "at",
                                        ts, "actor", PQgetvalue(r, i, 2), "type",
                                        PQgetvalue(r, i, 3), "command_id", PQgetvalue(r, i, 4),
                                        "changed_fields", changed ? changed : json_array(),
                                        "security_group", PQgetvalue(r, i, 7)));
                if (at_text && when <= at_ms)
                        state_row = i;
        }
        if (at_text) {
                json_t *state = json_null();
                const char *what = "did not exist yet";
                if (state_row >= 0 && !PQgetisnull(r, state_row, 6)) {
                        json_t *s = json_loads(PQgetvalue(r, state_row, 6), 0, NULL);
                        if (s) {
                                json_decref(state);
                                state = s;
                        }
                        what = "existed";
                } else if (state_row >= 0) {
                        what = "was deleted";
                }
                char ts[32];
                tb_time_format(at_ms, ts);
                json_object_set_new(out, "at", json_string(ts));
                json_object_set_new(out, "state_at", state);
                json_object_set_new(out, "state_at_version",
                                    state_row >= 0
                                            ? json_integer(strtoll(PQgetvalue(r, state_row, 0),
                                                                   NULL, 10))
                                            : json_null());
                json_object_set_new(out, "state_at_summary", json_string(what));
        }
        if (as_json) {
                char *s = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                if (s)
                        printf("%s\n", s);
                free(s);
        } else {
                printf("%-8s %-25s %-20s %-14s %s\n", "VERSION", "AT", "ACTOR", "TYPE",
                       "CHANGED");
                size_t i;
                json_t *h;
                json_array_foreach(hist, i, h) {
                        tb_buf_t ch = {0};
                        size_t k;
                        json_t *f;
                        json_array_foreach(json_object_get(h, "changed_fields"), k, f)
                                tb_buf_printf(&ch, "%s%s", k ? "," : "", json_string_value(f));
                        printf("%-8" JSON_INTEGER_FORMAT " %-25s %-20s %-14s %s\n",
                               json_integer_value(json_object_get(h, "version")),
                               json_string_value(json_object_get(h, "at")),
                               json_string_value(json_object_get(h, "actor")),
                               json_string_value(json_object_get(h, "type")),
                               ch.data ? ch.data : "-");
                        tb_buf_free(&ch);
                }
                if (at_text) {
                        const json_t *v = json_object_get(out, "state_at_version");
                        printf("\nat %s the task %s", json_string_value(json_object_get(out, "at")),
                               json_string_value(json_object_get(out, "state_at_summary")));
                        if (json_is_integer(v))
                                printf(" (version %" JSON_INTEGER_FORMAT ")", json_integer_value(v));
                        const json_t *s = json_object_get(out, "state_at");
                        if (json_is_object(s)) {
                                char *txt = json_dumps(s, JSON_INDENT(2) | JSON_SORT_KEYS);
                                printf(":\n%s\n", txt ? txt : "");
                                free(txt);
                        } else {
                                printf("\n");
                        }
                }
        }
        rc = 0;
done:
        if (out)
                json_decref(out);
        PQclear(r);
        PQfinish(conn);
        tb_config_destroy(conf);
        return rc;
}
