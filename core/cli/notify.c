/**
 * @file cli/notify.c
 * @brief `taskbus notify test CHANNEL`: asks the API for a test notification
 *        to a channel of the deployment's config (POST /v1/admin/notify/test,
 *        admins only), then follows the delivery the notifier makes until it
 *        is delivered or failed (GET /v1/admin/notify/deliveries/{id}).
 */
#include "cli.h"
#include "rest.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void tb_cli_notify_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus notify test CHANNEL [--timeout SECONDS] [--json]\n\n"
                "Send a test notification to CHANNEL, one of notify.channels in taskbusd's\n"
                "config (docs/notifications.md), the way the notifier sends a task's: a\n"
                "signed webhook, or a mail. Waits for the delivery (default 60 s) and prints\n"
                "every attempt; exits 0 once delivered, 1 when it failed or is still pending.\n"
                "Needs an admin's token (api.admin_group).\n\n"
                "  --timeout S      how long to wait for the delivery (0: do not wait)\n"
                "  --json           print the delivery as the API's JSON\n"
                "  --api URL        API base URL (default $TASKBUS_API, config, " TB_CLI_REST_DEFAULT_API
                ")\n"
                "  --token TOKEN    API token (default $TASKBUS_TOKEN or the config file)\n"
                "  --cacert FILE    CA certificate verifying an https:// API\n"
                "  -h, --help       this help\n");
}

static void tb_cli_notify_print(const json_t *d) {
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(d, "attempts_log"), i, a) {
                const char *e = json_string_value(json_object_get(a, "error"));
                json_t *code = json_object_get(a, "status_code");
                printf("attempt %" JSON_INTEGER_FORMAT " at %s: %s%s%" JSON_INTEGER_FORMAT
                       " ms\n",
                       json_integer_value(json_object_get(a, "attempt")),
                       json_string_value(json_object_get(a, "at")), e ? e : "delivered",
                       e ? ", " : " (", json_integer_value(json_object_get(a, "duration_ms")));
                if (!e && json_is_integer(code))
                        printf("  status %" JSON_INTEGER_FORMAT "\n", json_integer_value(code));
        }
        printf("notification %" JSON_INTEGER_FORMAT " to %s: %s\n",
               json_integer_value(json_object_get(d, "id")),
               json_string_value(json_object_get(d, "channel")),
               json_string_value(json_object_get(d, "status")));
}

int tb_cli_notify(int argc, char **argv) {
        int rc;
        if (tb_cli_group_usage(argc, argv, tb_cli_notify_usage, &rc))
                return rc;
        if (strcmp(argv[1], "test")) {
                tb_cli_fail("notify: unknown command '%s' (test)", argv[1]);
                tb_cli_notify_usage(stderr);
                return 2;
        }
        static const struct option opts[] = {
                {"api", required_argument, NULL, 'a'},   {"token", required_argument, NULL, 't'},
                {"cacert", required_argument, NULL, 'c'}, {"timeout", required_argument, NULL, 'w'},
                {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *api = NULL, *token = NULL, *cacert = NULL;
        long timeout = 60;
        bool json = false;
        int c;
        argc--;
        argv++;
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                char *end = NULL;
                switch (c) {
                case 'a': api = optarg; break;
                case 't': token = optarg; break;
                case 'c': cacert = optarg; break;
                case 'j': json = true; break;
                case 'w':
                        timeout = strtol(optarg, &end, 10);
                        if (!*optarg || *end || timeout < 0 || timeout > 3600) {
                                tb_cli_fail("notify test: --timeout: '%s' is not a number of "
                                            "seconds from 0 to 3600", optarg);
                                return 2;
                        }
                        break;
                case 'h': tb_cli_notify_usage(stdout); return 0;
                default: tb_cli_notify_usage(stderr); return 2;
                }
        }
        if (argc - optind != 1) {
                tb_cli_fail("notify test: expected exactly one CHANNEL");
                tb_cli_notify_usage(stderr);
                return 2;
        }
        tb_cli_rest_t rest;
        char err[1024];
        if (tb_cli_rest_open(&rest, api, token, cacert, err, sizeof(err))) {
                tb_cli_fail("%s", err);
                return 1;
        }
        json_t *body = json_pack("{s:s}", "channel", argv[optind]);
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        tb_cli_rest_resp_t resp = {0};
        tb_cli_rest_req_t req = {.method = "POST", .path = "/v1/admin/notify/test", .body = text,
                                 .ok = 202};
        rc = text ? tb_cli_rest_do(&rest, &req, &resp) : 1;
        free(text);
        json_int_t id = rc ? 0 : json_integer_value(json_object_get(resp.json, "id"));
        tb_cli_rest_resp_free(&resp);
        if (rc || id <= 0)
                goto out;
        char path[96];
        snprintf(path, sizeof(path), "/v1/admin/notify/deliveries/%" JSON_INTEGER_FORMAT, id);
        int64_t deadline = tb_mono_us() + (int64_t)timeout * 1000000;
        for (;;) {
                tb_cli_rest_req_t get = {.method = "GET", .path = path, .ok = 200};
                if ((rc = tb_cli_rest_do(&rest, &get, &resp)))
                        break;
                const char *st = json_string_value(json_object_get(resp.json, "status"));
                bool pending = !st || !strcmp(st, "pending");
                if (!pending || tb_mono_us() >= deadline) {
                        if (json)
                                tb_cli_print_json(resp.json);
                        else
                                tb_cli_notify_print(resp.json);
                        rc = st && !strcmp(st, "delivered") ? 0 : 1;
                        break;
                }
                tb_cli_rest_resp_free(&resp);
                usleep(250000);
        }
        tb_cli_rest_resp_free(&resp);
out:
        tb_cli_rest_close(&rest);
        return rc;
}
