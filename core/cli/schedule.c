/**
 * @file cli/schedule.c
 * @brief `taskbus schedule next`: preview when a schedule fires. Works
 *        offline for --cron / --every; --task reads the task from the API
 *        (the REST client of cli/rest.h) and previews its own schedule; a
 *        task with calendars is previewed by the API (POST
 *        /v1/schedule/preview), which reads its calendars, so that each fire
 *        says what they do to it.
 */
#include "rest.h"
#include "schedule/schedule.h"
#include "task/task.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_CLI_SCHED_MAX_COUNT 10000

static void tb_cli_schedule_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus schedule next (--cron EXPR [--tz ZONE] | --every DURATION | --task ID)\n"
                "                             [--from TIME] [--count N] [--json]\n"
                "                             [--dst-gap shift|skip] [--dst-overlap first|last|both]\n"
                "\n"
                "Prints the next N fire instants (default 10), one RFC 3339 UTC time per line.\n"
                "  --cron EXPR        a cron expression (5 fields, or 6 with seconds first, or @daily...)\n"
                "  --tz ZONE          IANA time zone of the cron expression (default UTC)\n"
                "  --every DURATION   a fixed interval (30s, 5m, PT1H...), anchored at --from\n"
                "  --task ID          the schedule of an existing task, read from the API; with\n"
                "                     calendars, each fire says if they move or skip it (at\n"
                "                     most 100 fires)\n"
                "                     (--api/$TASKBUS_API, --token/$TASKBUS_TOKEN,\n"
                "                     --cacert/$TASKBUS_CACERT, or\n"
                "                     ~/.config/taskbus/config, as for `taskbus tasks`)\n"
                "  --from TIME        start after this RFC 3339 instant (default: now)\n"
                "  --count N          how many fires (1-%d, default 10)\n"
                "  --json             a JSON array of {\"at\", \"local\", \"offset_seconds\",\n"
                "                     \"offset_changed\", \"dst\"}\n"
                "  --dst-gap, --dst-overlap  DST policies for --cron (docs/scheduling.md)\n",
                TB_CLI_SCHED_MAX_COUNT);
}

/* GET /v1/tasks/ID; @returns the task (new ref) or NULL after printing why. */
static json_t *tb_cli_sched_fetch(const char *api, const char *token, const char *cacert,
                                  const char *id) {
        tb_cli_rest_t rest;
        char err[1024];
        json_t *task = NULL;
        if (tb_cli_rest_open(&rest, api, token, cacert, err, sizeof(err))) {
                tb_cli_fail("schedule next: %s", err);
                return NULL;
        }
        tb_buf_t path = {0};
        tb_cli_rest_path(&path, "/v1/tasks", id, NULL);
        tb_cli_rest_req_t req = {.method = "GET", .path = path.data, .ok = 200};
        tb_cli_rest_resp_t resp = {0};
        if (tb_cli_rest_call(&rest, &req, &resp, err, sizeof(err)))
                tb_cli_fail("schedule next: %s", err);
        else if (!json_is_object(resp.json))
                tb_cli_fail("schedule next: the API answered with something that is not a task");
        else
                task = json_incref(resp.json);
        tb_cli_rest_resp_free(&resp);
        tb_buf_free(&path);
        tb_cli_rest_close(&rest);
        return task;
}

/* The fires of \p task after \p after as the API previews them with its
 * calendars applied. @returns the fires (new ref) or NULL after printing why. */
static json_t *tb_cli_sched_remote(const char *api, const char *token, const char *cacert,
                                   const json_t *task, int64_t after, long count) {
        tb_cli_rest_t rest;
        char err[1024], from[32];
        json_t *fires = NULL;
        if (tb_cli_rest_open(&rest, api, token, cacert, err, sizeof(err))) {
                tb_cli_fail("schedule next: %s", err);
                return NULL;
        }
        tb_time_format(after, from);
        json_t *body = json_pack("{s:O, s:O?, s:O?, s:s, s:i, s:O, s:O}", "schedule",
                                 json_object_get(task, "schedule"), "expires_at",
                                 json_object_get(task, "expires_at"), "anchor",
                                 json_object_get(task, "created_at"), "from", from, "count",
                                 (int)(count > 100 ? 100 : count), "calendars",
                                 json_object_get(task, "calendars"), "security_group",
                                 json_object_get(task, "security_group"));
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        tb_cli_rest_req_t req = {.method = "POST", .path = "/v1/schedule/preview", .body = text,
                                 .ok = 200};
        tb_cli_rest_resp_t resp = {0};
        if (!text)
                tb_cli_fail("schedule next: out of memory");
        else if (tb_cli_rest_call(&rest, &req, &resp, err, sizeof(err)))
                tb_cli_fail("schedule next: %s", err);
        else if (!json_is_array(json_object_get(resp.json, "fires")))
                tb_cli_fail("schedule next: the API answered with no fires");
        else
                fires = json_incref(json_object_get(resp.json, "fires"));
        tb_cli_rest_resp_free(&resp);
        free(text);
        json_decref(body);
        tb_cli_rest_close(&rest);
        return fires;
}

int tb_cli_schedule(int argc, char **argv) {
        static const struct option opts[] = {
                {"cron", required_argument, NULL, 'c'},
                {"tz", required_argument, NULL, 'z'},
                {"every", required_argument, NULL, 'e'},
                {"task", required_argument, NULL, 't'},
                {"from", required_argument, NULL, 'f'},
                {"count", required_argument, NULL, 'n'},
                {"json", no_argument, NULL, 'j'},
                {"dst-gap", required_argument, NULL, 'g'},
                {"dst-overlap", required_argument, NULL, 'o'},
                {"api", required_argument, NULL, 'a'},
                {"token", required_argument, NULL, 'k'},
                {"cacert", required_argument, NULL, 'C'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *cron = NULL, *zone = NULL, *every = NULL, *task_id = NULL, *from = NULL;
        const char *gap = NULL, *overlap = NULL, *api = NULL, *token = NULL;
        const char *cacert = NULL;
        long count = 10;
        bool json = false;
        char err[1024];
        int c, rc = 1;
        tb_schedule_t s = {0};
        json_t *task = NULL, *out = NULL;

        if (argc < 2 || strcmp(argv[1], "next")) {
                if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
                        tb_cli_schedule_usage(stdout);
                        return 0;
                }
                if (argc >= 2)
                        tb_cli_fail("schedule: unknown subcommand '%s' (only 'next')", argv[1]);
                tb_cli_schedule_usage(stderr);
                return 2;
        }
        optind = 1;
        opterr = 0;
        argc--;
        argv++;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'c': cron = optarg; break;
                case 'z': zone = optarg; break;
                case 'e': every = optarg; break;
                case 't': task_id = optarg; break;
                case 'f': from = optarg; break;
                case 'j': json = true; break;
                case 'g': gap = optarg; break;
                case 'o': overlap = optarg; break;
                case 'a': api = optarg; break;
                case 'k': token = optarg; break;
                case 'C': cacert = optarg; break;
                case 'n': {
                        char *end = NULL;
                        count = strtol(optarg, &end, 10);
                        if (!*optarg || *end || count < 1 || count > TB_CLI_SCHED_MAX_COUNT) {
                                tb_cli_fail("schedule next: --count '%s' must be a number from 1 "
                                            "to %d",
                                            optarg, TB_CLI_SCHED_MAX_COUNT);
                                return 2;
                        }
                        break;
                }
                case 'h': tb_cli_schedule_usage(stdout); return 0;
                default:
                        tb_cli_fail("schedule next: unknown or incomplete option '%s'",
                                    argv[optind - 1]);
                        tb_cli_schedule_usage(stderr);
                        return 2;
                }
        }
        if (optind < argc) {
                tb_cli_fail("schedule next: unexpected argument '%s'", argv[optind]);
                return 2;
        }
        if ((cron != NULL) + (every != NULL) + (task_id != NULL) != 1) {
                tb_cli_fail("schedule next: give exactly one of --cron, --every or --task");
                tb_cli_schedule_usage(stderr);
                return 2;
        }
        if (zone && !cron) {
                tb_cli_fail("schedule next: --tz applies to --cron only");
                return 2;
        }
        int64_t after = tb_now_ms();
        if (from && tb_time_parse(from, &after, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schedule next: --from: %s (example: 2026-03-08T00:00:00Z)", err);
                return 2;
        }
        if (cron) {
                s.kind = TB_SCHEDULE_CRON;
                if (tb_cron_parse(cron, &s.cron, err, sizeof(err)) != TB_OK ||
                    (zone && tb_tz_open(zone, &s.tz, err, sizeof(err)) != TB_OK)) {
                        tb_cli_fail("schedule next: %s: %s", s.cron ? "--tz" : "--cron", err);
                        rc = 2;
                        goto out;
                }
        } else if (every) {
                s.kind = TB_SCHEDULE_EVERY;
                if (tb_units_duration_parse(every, &s.every_ms, err, sizeof(err)) != TB_OK) {
                        tb_cli_fail("schedule next: --every: %s", err);
                        rc = 2;
                        goto out;
                }
                s.anchor_ms = after;
        } else {
                task = tb_cli_sched_fetch(api, token, cacert, task_id);
                if (!task)
                        goto out;
                int64_t created = after;
                const char *ca = json_string_value(json_object_get(task, "created_at"));
                if (ca && tb_time_parse(ca, &created, err, sizeof(err)) != TB_OK)
                        created = after;
                if (tb_task_schedule(task, created, &s, err, sizeof(err)) != TB_OK) {
                        tb_cli_fail("schedule next: task %s: %s", task_id, err);
                        goto out;
                }
                if (json_array_size(json_object_get(task, "calendars"))) {
                        if (gap || overlap) {
                                tb_cli_fail("schedule next: --dst-gap and --dst-overlap do not "
                                            "apply to --task with calendars (its own are used)");
                                rc = 2;
                                goto out;
                        }
                        if (!(out = tb_cli_sched_remote(api, token, cacert, task, after, count)))
                                goto out;
                        if (count > 100)
                                count = (long)json_array_size(out); /* the API's most */
                        goto print;
                }
        }
        if (gap && tb_schedule_dst_gap_parse(gap, &s.dst_gap, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schedule next: --dst-gap: %s", err);
                rc = 2;
                goto out;
        }
        if (overlap &&
            tb_schedule_dst_overlap_parse(overlap, &s.dst_overlap, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schedule next: --dst-overlap: %s", err);
                rc = 2;
                goto out;
        }
        if (tb_schedule_validate(&s, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schedule next: %s", err);
                rc = 2;
                goto out;
        }
        if (tb_task_schedule_fires(&s, after, (size_t)count, &out, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schedule next: %s", err);
                goto out;
        }
print:;
        size_t printed = json_array_size(out);
        if (json) {
                char *text = json_dumps(out, JSON_INDENT(2));
                if (text)
                        printf("%s\n", text);
                free(text);
        } else {
                for (size_t i = 0; i < printed; i++) {
                        const json_t *f = json_array_get(out, i);
                        const char *v = json_string_value(json_object_get(f, "verdict"));
                        const char *at = json_string_value(json_object_get(f, "at"));
                        const char *why = json_string_value(json_object_get(f, "reason"));
                        if (!v || !strcmp(v, "fire"))
                                printf("%s\n", at);
                        else if (!strcmp(v, "moved"))
                                printf("%s  moved from %s: %s\n",
                                       json_string_value(json_object_get(f, "fire_time")), at,
                                       why ? why : "");
                        else
                                printf("%s  %s: %s\n", at, v, why ? why : "");
                }
        }
        if (printed < (size_t)count)
                fprintf(stderr, "taskbus: schedule next: no further fire after %zu (the schedule "
                                "ends: a one-off time, end_at or expires_at)\n",
                        printed);
        rc = 0;
out:
        json_decref(out);
        json_decref(task);
        tb_schedule_clear(&s);
        return rc;
}
