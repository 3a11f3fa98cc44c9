/**
 * @file cli/backfill.c
 * @brief `taskbus tasks backfill ID --from T1 --to T2 [--max-parallel N]`:
 *        runs the occurrences of a past range through the REST API's
 *        backfill steps (POST /v1/tasks/{id}/backfill, roles/api/backfill.c),
 *        repeated until every occurrence's run is done, printing the
 *        progress as it changes. Interrupted, the same command resumes: the
 *        run ids are the scheduled fires', so nothing runs twice.
 */
#include "cli.h"
#include "rest.h"

#include "task/task.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/** Pause between two steps while runs are in flight. */
#define TB_CLI_BF_POLL_US 500000

static const char tb_cli_bf_usage_text[] =
        "usage: taskbus tasks backfill ID --from T1 --to T2 [--max-parallel N] [--json]\n"
        "\n"
        "Run the occurrences of task ID's schedule in [T1, T2), a past range (RFC 3339\n"
        "times), as runs with trigger backfill; each run has the run id its scheduled fire\n"
        "has, so an occurrence that already ran (scheduled, or by an earlier backfill) is\n"
        "not run again. Waits until every occurrence's run is done, printing\n"
        "\"emitted k/n, done d\" as it goes; interrupted, the same command resumes.\n"
        "\n"
        "  --from T1              the range's start (inclusive)\n"
        "  --to T2                the range's end (exclusive), at most now\n"
        "  --max-parallel N       backfill runs of the task at once (1..100, default 1;\n"
        "                         above 1 the task's overlap must be allow)\n"
        "  --json                 print the last progress as JSON\n"
        "  --api URL              API base URL (default $TASKBUS_API, config, "
        TB_CLI_REST_DEFAULT_API ")\n"
        "  --token TOKEN          API token (default $TASKBUS_TOKEN or the config file)\n"
        "  --cacert FILE          CA certificate verifying an https:// API\n"
        "  -h, --help             this help\n";

static json_int_t tb_cli_bf_int(const json_t *o, const char *k) {
        return json_integer_value(json_object_get(o, k));
}

/** "succeeded 47, failed 1" from the progress's statuses. */
static void tb_cli_bf_statuses(const json_t *p, char *buf, size_t size) {
        const char *k;
        json_t *v;
        size_t n = 0;
        buf[0] = '\0';
        json_object_foreach((json_t *)json_object_get(p, "statuses"), k, v) {
                int w = snprintf(buf + n, size - n, "%s%s %" JSON_INTEGER_FORMAT, n ? ", " : "",
                                 k, json_integer_value(v));
                if (w < 0 || (size_t)w >= size - n)
                        break;
                n += (size_t)w;
        }
}

/** Step until the range is complete. @returns the exit status. */
static int tb_cli_bf_loop(const tb_cli_rest_t *rest, const char *id, const char *body,
                          bool json) {
        tb_buf_t path = {0};
        tb_cli_rest_path(&path, "/v1/tasks", id, "backfill");
        tb_cli_rest_req_t req = {
                .method = "POST", .path = path.data, .body = body, .ok = 200, .ok_also = 202};
        json_int_t emitted_here = 0, last_rec = -1, last_done = -1;
        int rc;
        for (;;) {
                tb_cli_rest_resp_t resp = {0};
                rc = tb_cli_rest_do(rest, &req, &resp);
                if (rc) {
                        if (last_rec >= 0)
                                fprintf(stderr, "taskbus: the backfill stopped; the same command "
                                                "resumes it\n");
                        tb_cli_rest_resp_free(&resp);
                        break;
                }
                const json_t *p = resp.json;
                json_int_t n = tb_cli_bf_int(p, "occurrences"), rec = tb_cli_bf_int(p, "recorded"),
                           done = tb_cli_bf_int(p, "done");
                emitted_here += tb_cli_bf_int(p, "emitted");
                bool complete = json_is_true(json_object_get(p, "complete"));
                if (!json && (rec != last_rec || done != last_done || complete)) {
                        printf("emitted %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
                               ", done %" JSON_INTEGER_FORMAT " (in flight %" JSON_INTEGER_FORMAT
                               ")\n",
                               rec, n, done, tb_cli_bf_int(p, "in_flight"));
                        fflush(stdout);
                }
                last_rec = rec;
                last_done = done;
                if (complete) {
                        if (json) {
                                json_t *out = json_deep_copy(p);
                                json_object_set_new(out, "emitted", json_integer(emitted_here));
                                tb_cli_print_json(out);
                                json_decref(out);
                        } else {
                                char st[512];
                                tb_cli_bf_statuses(p, st, sizeof(st));
                                printf("backfill of task %s from %s to %s: %" JSON_INTEGER_FORMAT
                                       " occurrences, %" JSON_INTEGER_FORMAT
                                       " run by this backfill, %" JSON_INTEGER_FORMAT
                                       " recorded before; %s\n",
                                       id, json_string_value(json_object_get(p, "from")),
                                       json_string_value(json_object_get(p, "to")), n,
                                       emitted_here, n - emitted_here, *st ? st : "no runs");
                        }
                        tb_cli_rest_resp_free(&resp);
                        break;
                }
                tb_cli_rest_resp_free(&resp);
                usleep(TB_CLI_BF_POLL_US);
        }
        tb_buf_free(&path);
        return rc;
}

int tb_cli_tasks_backfill(int argc, char **argv) {
        enum { O_FROM = 1000, O_TO, O_PAR, O_JSON, O_API, O_TOKEN, O_CACERT };
        static const struct option lo[] = {
                {"from", required_argument, NULL, O_FROM},
                {"to", required_argument, NULL, O_TO},
                {"max-parallel", required_argument, NULL, O_PAR},
                {"json", no_argument, NULL, O_JSON},
                {"api", required_argument, NULL, O_API},
                {"token", required_argument, NULL, O_TOKEN},
                {"cacert", required_argument, NULL, O_CACERT},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *from = NULL, *to = NULL, *api = NULL, *token = NULL, *cacert = NULL;
        long par = 0;
        bool json = false;
        int c;
        optind = 0;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
                char *end = NULL;
                switch (c) {
                case 'h': fputs(tb_cli_bf_usage_text, stdout); return 0;
                case O_FROM: from = optarg; break;
                case O_TO: to = optarg; break;
                case O_PAR:
                        par = strtol(optarg, &end, 10);
                        if (!*optarg || *end || par < 1 || par > 100) {
                                tb_cli_fail("backfill: --max-parallel: expected an integer from "
                                            "1 to 100, got '%s'", optarg);
                                return 2;
                        }
                        break;
                case O_JSON: json = true; break;
                case O_API: api = optarg; break;
                case O_TOKEN: token = optarg; break;
                case O_CACERT: cacert = optarg; break;
                default: fputs(tb_cli_bf_usage_text, stderr); return 2;
                }
        }
        char err[1024];
        if (argc - optind != 1) {
                tb_cli_fail("backfill: expected exactly one task ID");
                fputs(tb_cli_bf_usage_text, stderr);
                return 2;
        }
        const char *id = argv[optind];
        if (tb_task_id_check("task ID", id, strlen(id), err, sizeof(err)) != TB_OK) {
                tb_cli_fail("backfill: %s", err);
                return 2;
        }
        if (!from || !to) {
                tb_cli_fail("backfill: %s is required (an RFC 3339 time, e.g. "
                            "2026-01-02T00:00:00Z)", !from ? "--from" : "--to");
                return 2;
        }
        json_t *b = json_pack("{s:s, s:s}", "from", from, "to", to);
        if (b && par)
                json_object_set_new(b, "max_parallel", json_integer(par));
        char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        if (!body) {
                tb_cli_fail("backfill: out of memory");
                return 1;
        }
        tb_cli_rest_t rest;
        int rc = 1;
        if (tb_cli_rest_open(&rest, api, token, cacert, err, sizeof(err))) {
                tb_cli_fail("%s", err);
        } else {
                rc = tb_cli_bf_loop(&rest, id, body, json);
                tb_cli_rest_close(&rest);
        }
        free(body);
        return rc;
}
