/**
 * @file cli/tasks.c
 * @brief `taskbus tasks ...`: manage tasks through the REST API (the client
 *        of cli/rest.h finds the API and the token).
 * Exit status: 0 ok, 1 the server or the system refused, 2 usage error.
 */
#include "rest.h"
#include "task/task.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- usage ------------------------------------------------------------------- */

static const char tb_cli_tasks_flags[] =
        "Task flags (create; update changes only the fields given):\n"
        "  --name NAME            task name (required on create)\n"
        "  --script CMD           command line to run (required on create)\n"
        "  --group GROUP          security group (required on create)\n"
        "  --cron EXPR            cron schedule, e.g. \"0 3 * * *\"\n"
        "  --tz ZONE              time zone of --cron (IANA, e.g. Europe/Paris)\n"
        "  --every DURATION       fixed interval, e.g. 30s, 5m, PT1H\n"
        "  --once TIME            one run at an RFC 3339 time, e.g. 2030-01-01T00:00:00Z\n"
        "  --expiry DURATION      longest a run may take (default 1h)\n"
        "  --executor NAME        executor plugin (default shell)\n"
        "  --option KEY=VALUE     executor option (repeatable)\n"
        "  --label KEY=VALUE      label (repeatable)\n"
        "  --max-attempts N       attempts per fire, retries included\n"
        "  --overlap POLICY       forbid | allow | replace\n"
        "  --misfire POLICY       run_once | skip | run_all\n"
        "  --paused               create the task paused\n"
        "  --file FILE            the task as JSON (- reads stdin) instead of flags\n";

static const char tb_cli_tasks_common_flags[] =
        "Common flags:\n"
        "  --json                 print the API's JSON instead of a table\n"
        "  --api URL              API base URL (default $TASKBUS_API, config, "
        TB_CLI_REST_DEFAULT_API ")\n"
        "  --token TOKEN          API token (default $TASKBUS_TOKEN or the config file)\n"
        "  --cacert FILE          CA certificate verifying an https:// API (default\n"
        "                         $TASKBUS_CACERT, `cacert` in the config file, the system's)\n"
        "  -h, --help             this help\n";

typedef struct tb_cli_tasks_sub {
        const char *name;
        const char *args;
        const char *summary;
        bool task_flags;
        const char *extra;
} tb_cli_tasks_sub_t;

static const tb_cli_tasks_sub_t tb_cli_tasks_subs[] = {
        {"create", "(TASK FLAGS | --file FILE)", "create a task; prints it with its id", true, ""},
        {"list", "[--group G] [--limit N] [--all] [--name-prefix P] [--paused true|false] "
                 "[--label K=V] [--cursor C]",
         "list the tasks of your security groups, newest first", false,
         "List flags:\n"
         "  --group G              only security group G\n"
         "  --limit N              tasks per page (1..500, default 50)\n"
         "  --all                  follow the pages to the end\n"
         "  --cursor C             continue from a previous page's cursor\n"
         "  --name-prefix P        names starting with P\n"
         "  --paused true|false    only paused / running tasks\n"
         "  --label K=V            tasks carrying this label (repeatable)\n"},
        {"get", "ID", "show one task", false, ""},
        {"update", "ID (TASK FLAGS | --file FILE) [--if-match VERSION]",
         "change a task: flags edit the current task, --file replaces it", true,
         "  --if-match VERSION     fail with 409 unless the task is at VERSION\n"},
        {"delete", "ID [--if-match VERSION]", "delete a task", false,
         "  --if-match VERSION     fail with 409 unless the task is at VERSION\n"},
        {"pause", "ID", "stop firing a task until resumed", false, ""},
        {"resume", "ID", "fire a paused task again", false, ""},
        {"run", "ID [--param NAME=VALUE]...", "run a task now, besides its schedule", false,
         "  --param NAME=VALUE     a value for the task's parameter NAME (repeatable); the\n"
         "                         others take their defaults; the run gets them as\n"
         "                         environment variables\n"},
        {"backfill", "ID --from T1 --to T2 [--max-parallel N]",
         "run the occurrences of a past range (cli/backfill.c)", false, ""},
        {NULL, NULL, NULL, false, NULL},
};

static void tb_cli_tasks_usage(FILE *fp) {
        fprintf(fp, "usage: taskbus tasks COMMAND [ARGS...]   (taskbus tasks COMMAND --help)\n\n");
        for (const tb_cli_tasks_sub_t *s = tb_cli_tasks_subs; s->name; s++)
                fprintf(fp, "  %-8s %s\n", s->name, s->summary);
        fprintf(fp, "\nThe API: --api, $TASKBUS_API or `api` in ~/.config/taskbus/config;\n"
                    "the token: --token, $TASKBUS_TOKEN or `token` in that file;\n"
                    "an https:// API's CA: --cacert, $TASKBUS_CACERT or `cacert` in that "
                    "file.\n");
}

static void tb_cli_tasks_sub_usage(const tb_cli_tasks_sub_t *s, FILE *fp) {
        fprintf(fp, "usage: taskbus tasks %s %s [--json]\n\n%s.\n\n", s->name, s->args,
                s->summary);
        if (s->task_flags)
                fprintf(fp, "%s\n", tb_cli_tasks_flags);
        if (s->extra && *s->extra)
                fprintf(fp, "%s\n", s->extra);
        fprintf(fp, "%s", tb_cli_tasks_common_flags);
}

/* ---- output ------------------------------------------------------------------- */

static void tb_cli_tasks_schedule_text(const json_t *t, char *buf, size_t size) {
        const json_t *s = json_object_get(t, "schedule");
        const char *v;
        if ((v = json_string_value(json_object_get(s, "cron"))))
                tb_snprintf(buf, size, "cron %s (%s)", v,
                            json_string_value(json_object_get(s, "timezone"))
                                    ? json_string_value(json_object_get(s, "timezone"))
                                    : "UTC");
        else if ((v = json_string_value(json_object_get(s, "every"))))
                tb_snprintf(buf, size, "every %s", v);
        else if ((v = json_string_value(json_object_get(s, "once"))))
                tb_snprintf(buf, size, "once %s", v);
        else
                tb_snprintf(buf, size, "-");
}

static const char *tb_cli_tasks_str(const json_t *t, const char *k) {
        const char *s = json_string_value(json_object_get(t, k));
        return s ? s : "-";
}

static void tb_cli_tasks_print(const json_t *t) {
        char sched[300];
        tb_cli_tasks_schedule_text(t, sched, sizeof(sched));
        printf("id:           %s\n", tb_cli_tasks_str(t, "id"));
        printf("name:         %s\n", tb_cli_tasks_str(t, "name"));
        printf("group:        %s\n", tb_cli_tasks_str(t, "security_group"));
        printf("owner:        %s\n", tb_cli_tasks_str(t, "user_id"));
        printf("script:       %s\n", tb_cli_tasks_str(t, "script"));
        printf("schedule:     %s\n", sched);
        printf("next fire:    %s\n", tb_cli_tasks_str(t, "next_fire_at"));
        printf("paused:       %s\n", json_is_true(json_object_get(t, "paused")) ? "yes" : "no");
        printf("executor:     %s\n", tb_cli_tasks_str(t, "executor"));
        printf("expiry:       %s\n", tb_cli_tasks_str(t, "expiry"));
        const json_t *labels = json_object_get(t, "labels");
        if (json_object_size(labels)) {
                const char *k;
                json_t *v;
                printf("labels:      ");
                json_object_foreach((json_t *)labels, k, v) printf(" %s=%s", k,
                                                                   json_string_value(v));
                printf("\n");
        }
        /* one line per parameter: NAME TYPE, its default or "required",
         * its allowed values and pattern */
        size_t i;
        const json_t *p;
        json_array_foreach(json_object_get(t, "parameters"), i, p) {
                const json_t *d = json_object_get(p, "default");
                printf("%s %s %s", i ? "             " : "parameters:  ",
                       tb_cli_tasks_str(p, "name"), tb_cli_tasks_str(p, "type"));
                if (json_is_string(d))
                        printf(" default '%s'", json_string_value(d));
                else
                        printf(" required");
                size_t j;
                const json_t *a;
                json_array_foreach(json_object_get(p, "allowed"), j, a)
                        printf("%s%s", j ? "|" : ", one of ", json_string_value(a));
                if (json_is_string(json_object_get(p, "pattern")))
                        printf(", matching %s", tb_cli_tasks_str(p, "pattern"));
                printf("\n");
        }
        printf("version:      %" JSON_INTEGER_FORMAT "\n",
               json_integer_value(json_object_get(t, "version")));
        printf("created:      %s by %s\n", tb_cli_tasks_str(t, "created_at"),
               tb_cli_tasks_str(t, "created_by"));
        printf("updated:      %s\n", tb_cli_tasks_str(t, "updated_at"));
}

static void tb_cli_tasks_print_header(void) {
        printf("%-36s  %-24s  %-12s  %-28s  %-24s  %s\n", "ID", "NAME", "GROUP", "SCHEDULE",
               "NEXT FIRE", "PAUSED");
}

static void tb_cli_tasks_print_row(const json_t *t) {
        char sched[300];
        tb_cli_tasks_schedule_text(t, sched, sizeof(sched));
        printf("%-36s  %-24.24s  %-12.12s  %-28.28s  %-24s  %s\n", tb_cli_tasks_str(t, "id"),
               tb_cli_tasks_str(t, "name"), tb_cli_tasks_str(t, "security_group"), sched,
               tb_cli_tasks_str(t, "next_fire_at"),
               json_is_true(json_object_get(t, "paused")) ? "yes" : "no");
}

/* ---- building a task from flags ---------------------------------------------------- */

typedef struct tb_cli_tasks_opts {
        bool json, all, paused_flag;
        const char *api, *token, *cacert, *file, *if_match;
        const char *name, *script, *group, *cron, *tz, *every, *once, *expiry, *executor;
        const char *max_attempts, *overlap, *misfire;
        const char *limit, *cursor, *name_prefix, *paused_filter;
        json_t *options, *labels; /**< KEY=VALUE flags */
        json_t *params;           /**< run: --param NAME=VALUE */
        bool any_task_flag;
} tb_cli_tasks_opts_t;

/** Read the JSON task of --file (- = stdin). @returns NULL after printing why. */
static json_t *tb_cli_tasks_read_file(const char *path) {
        json_error_t je;
        json_t *j;
        if (!strcmp(path, "-"))
                j = json_loadf(stdin, JSON_REJECT_DUPLICATES, &je);
        else
                j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (!j) {
                tb_cli_fail("%s:%d:%d: %s", !strcmp(path, "-") ? "<stdin>" : path, je.line,
                            je.column, je.text);
                return NULL;
        }
        if (!json_is_object(j)) {
                tb_cli_fail("%s: expected a JSON object (a task)", path);
                json_decref(j);
                return NULL;
        }
        return j;
}

static bool tb_cli_tasks_kv(json_t *obj, const char *flag, const char *arg) {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg) {
                tb_cli_fail("%s: expected KEY=VALUE, got '%s'", flag, arg);
                return false;
        }
        char *k = strndup(arg, (size_t)(eq - arg));
        json_t *v = json_string(eq + 1);
        bool ok = k && v && !json_object_set_new(obj, k, v);
        if (!ok)
                tb_cli_fail("%s: '%s' is not valid UTF-8 text", flag, arg);
        free(k);
        return ok;
}

/** Apply the task flags to \p t (a new or the current task). @returns false on usage error. */
static bool tb_cli_tasks_apply_flags(const tb_cli_tasks_opts_t *o, json_t *t) {
        if (o->name)
                json_object_set_new(t, "name", json_string(o->name));
        if (o->script)
                json_object_set_new(t, "script", json_string(o->script));
        if (o->group)
                json_object_set_new(t, "security_group", json_string(o->group));
        int kinds = !!o->cron + !!o->every + !!o->once;
        if (kinds > 1) {
                tb_cli_fail("--cron, --every and --once are exclusive: give one schedule");
                return false;
        }
        if (o->tz && (o->every || o->once)) {
                tb_cli_fail("--tz applies to --cron only");
                return false;
        }
        if (kinds) {
                json_t *s = json_object();
                if (o->cron) {
                        json_object_set_new(s, "cron", json_string(o->cron));
                        if (o->tz)
                                json_object_set_new(s, "timezone", json_string(o->tz));
                } else if (o->every) {
                        json_object_set_new(s, "every", json_string(o->every));
                } else {
                        json_object_set_new(s, "once", json_string(o->once));
                }
                json_object_del(t, "execution_time");
                json_object_set_new(t, "schedule", s);
        } else if (o->tz) {
                json_t *s = json_object_get(t, "schedule");
                if (!json_is_object(s)) {
                        tb_cli_fail("--tz needs --cron");
                        return false;
                }
                json_object_set_new(s, "timezone", json_string(o->tz));
        }
        if (o->expiry)
                json_object_set_new(t, "expiry", json_string(o->expiry));
        if (o->executor)
                json_object_set_new(t, "executor", json_string(o->executor));
        if (json_object_size(o->options)) {
                json_t *cur = json_object_get(t, "executor_options");
                if (!json_is_object(cur))
                        json_object_set_new(t, "executor_options", cur = json_object());
                json_object_update(cur, o->options);
        }
        if (json_object_size(o->labels)) {
                json_t *cur = json_object_get(t, "labels");
                if (!json_is_object(cur))
                        json_object_set_new(t, "labels", cur = json_object());
                json_object_update(cur, o->labels);
        }
        if (o->max_attempts) {
                char *end;
                long long n = strtoll(o->max_attempts, &end, 10);
                if (!*o->max_attempts || *end) {
                        tb_cli_fail("--max-attempts: expected an integer, got '%s'",
                                    o->max_attempts);
                        return false;
                }
                json_t *r = json_object_get(t, "retries");
                if (!json_is_object(r))
                        json_object_set_new(t, "retries", r = json_object());
                json_object_set_new(r, "max_attempts", json_integer(n));
        }
        if (o->overlap)
                json_object_set_new(t, "overlap", json_string(o->overlap));
        if (o->misfire)
                json_object_set_new(t, "misfire", json_string(o->misfire));
        if (o->paused_flag)
                json_object_set_new(t, "paused", json_true());
        return true;
}

/* ---- commands ------------------------------------------------------------------ */

/** Send a task body; print the result. */
static int tb_cli_tasks_send(const tb_cli_rest_t *rest, const tb_cli_tasks_opts_t *o,
                             const char *method, const char *path, json_t *task,
                             const char *if_match, long ok_status) {
        char *body = json_dumps(task, JSON_COMPACT);
        /* 202: accepted, but the projection did not show it in time */
        tb_cli_rest_req_t req = {.method = method, .path = path, .body = body,
                                 .if_match = if_match, .ok = ok_status, .ok_also = 202};
        tb_cli_rest_resp_t resp = {0};
        int rc = tb_cli_rest_do(rest, &req, &resp);
        if (rc == 0 && o->json)
                tb_cli_print_json(resp.json);
        else if (rc == 0 && resp.status == 202)
                printf("accepted: %s\n", json_string_value(json_object_get(resp.json, "message")));
        else if (rc == 0)
                tb_cli_tasks_print(resp.json);
        tb_cli_rest_resp_free(&resp);
        free(body);
        return rc;
}

/* The task to send, from --file, the flags on a new task (create), or the
 * flags on the current task (update: \p path set; *if_match becomes its
 * version unless given). @returns 0 with *out set, else the exit status. */
static int tb_cli_tasks_body(const tb_cli_rest_t *rest, const tb_cli_tasks_opts_t *o,
                             const char *path, json_t **out, char ver[32],
                             const char **if_match) {
        const char *sub = path ? "update" : "create";
        *out = NULL;
        if (o->file && o->any_task_flag) {
                tb_cli_fail("%s: give --file or task flags, not both", sub);
                return 2;
        }
        if (o->file)
                return (*out = tb_cli_tasks_read_file(o->file)) ? 0 : 1;
        if (!o->any_task_flag) {
                if (path)
                        tb_cli_fail("update: nothing to change: give task flags or --file "
                                    "(see --help)");
                else
                        tb_cli_fail("create: give --name, --script, --group and a schedule "
                                    "(--cron, --every or --once), or --file (see --help)");
                return 2;
        }
        json_t *t = NULL;
        if (!path) {
                t = json_object();
        } else {
                /* edit the current task; If-Match makes a concurrent edit a 409 */
                tb_cli_rest_req_t get = {.method = "GET", .path = path, .ok = 200};
                tb_cli_rest_resp_t cur = {0};
                int rc = tb_cli_rest_do(rest, &get, &cur);
                if (rc == 0 && !json_is_object(cur.json)) {
                        tb_cli_fail("200: unexpected response from the API");
                        rc = 1;
                }
                t = rc ? NULL : json_incref(cur.json);
                tb_cli_rest_resp_free(&cur);
                if (rc)
                        return rc;
                if (!*if_match) {
                        tb_snprintf(ver, 32, "%" JSON_INTEGER_FORMAT,
                                    json_integer_value(json_object_get(t, "version")));
                        *if_match = ver;
                }
        }
        if (!tb_cli_tasks_apply_flags(o, t)) {
                json_decref(t);
                return 2;
        }
        *out = t;
        return 0;
}

/* create (\p id NULL) or update a task, then print it. */
static int tb_cli_tasks_write(const tb_cli_rest_t *rest, tb_cli_tasks_opts_t *o,
                              const char *id) {
        tb_buf_t path = {0};
        json_t *t = NULL;
        char ver[32];
        const char *if_match = o->if_match;
        if (id)
                tb_cli_rest_path(&path, "/v1/tasks", id, NULL);
        int rc = tb_cli_tasks_body(rest, o, id ? path.data : NULL, &t, ver, &if_match);
        if (rc == 0)
                rc = id ? tb_cli_tasks_send(rest, o, "PUT", path.data, t, if_match, 200)
                        : tb_cli_tasks_send(rest, o, "POST", "/v1/tasks", t, NULL, 201);
        json_decref(t);
        tb_buf_free(&path);
        return rc;
}

static int tb_cli_tasks_simple(const tb_cli_rest_t *rest, tb_cli_tasks_opts_t *o,
                               const char *sub, const char *id) {
        tb_buf_t path = {0};
        char *body = NULL;
        tb_cli_rest_req_t req = {.method = "POST", .if_match = o->if_match, .ok = 200};
        if (!strcmp(sub, "run") && json_object_size(o->params)) {
                json_t *b = json_pack("{s:O}", "params", o->params);
                body = b ? json_dumps(b, JSON_COMPACT) : NULL;
                json_decref(b);
                req.body = body;
        }
        if (!strcmp(sub, "get")) {
                req.method = "GET";
                tb_cli_rest_path(&path, "/v1/tasks", id, NULL);
        } else if (!strcmp(sub, "delete")) {
                req.method = "DELETE";
                req.ok = 204;
                tb_cli_rest_path(&path, "/v1/tasks", id, NULL);
        } else {
                req.ok = !strcmp(sub, "run") ? 202 : 200;
                tb_cli_rest_path(&path, "/v1/tasks", id, sub);
        }
        req.path = path.data;
        tb_cli_rest_resp_t resp = {0};
        int rc = tb_cli_rest_do(rest, &req, &resp);
        const json_t *r = resp.json;
        if (rc)
                goto out;
        if (o->json) {
                if (r)
                        tb_cli_print_json(r);
                else
                        printf("{\"deleted\": \"%s\"}\n", id);
        } else if (!strcmp(sub, "delete")) {
                printf("deleted task %s\n", id);
        } else if (!strcmp(sub, "run")) {
                printf("run requested for task %s (command %s, task version %" JSON_INTEGER_FORMAT
                       ")\n",
                       id, tb_cli_tasks_str(r, "command_id"),
                       json_integer_value(json_object_get(r, "version")));
        } else if (!strcmp(sub, "get")) {
                tb_cli_tasks_print(r);
        } else {
                printf("%s task %s (version %" JSON_INTEGER_FORMAT ")\n",
                       !strcmp(sub, "pause") ? "paused" : "resumed", id,
                       json_integer_value(json_object_get(r, "version")));
        }
out:
        tb_cli_rest_resp_free(&resp);
        tb_buf_free(&path);
        free(body);
        return rc;
}

static int tb_cli_tasks_list(const tb_cli_rest_t *rest, tb_cli_tasks_opts_t *o) {
        static const tb_cli_rest_list_t fmt = {"tasks", tb_cli_tasks_print_header,
                                               tb_cli_tasks_print_row};
        tb_buf_t q = {0};
        tb_buf_printf(&q, "/v1/tasks");
        tb_cli_rest_query(&q, "limit", o->limit ? o->limit : "50");
        tb_cli_rest_query(&q, "security_group", o->group);
        tb_cli_rest_query(&q, "name_prefix", o->name_prefix);
        tb_cli_rest_query(&q, "paused", o->paused_filter);
        const char *k;
        json_t *v;
        json_object_foreach(o->labels, k, v) {
                char *kv = NULL;
                if (asprintf(&kv, "%s=%s", k, json_string_value(v)) > 0)
                        tb_cli_rest_query(&q, "label", kv);
                free(kv);
        }
        int rc = tb_cli_rest_list(rest, q.data, o->cursor, o->all, o->json, &fmt);
        tb_buf_free(&q);
        return rc;
}

int tb_cli_tasks(int argc, char **argv) {
        int rc = 2, c;
        if (tb_cli_group_usage(argc, argv, tb_cli_tasks_usage, &rc))
                return rc;
        if (!strcmp(argv[1], "backfill"))
                return tb_cli_tasks_backfill(argc - 1, argv + 1);
        const tb_cli_tasks_sub_t *sub = NULL;
        for (const tb_cli_tasks_sub_t *s = tb_cli_tasks_subs; s->name; s++)
                if (!strcmp(s->name, argv[1]))
                        sub = s;
        if (!sub) {
                tb_cli_fail("tasks: unknown command '%s'", argv[1]);
                tb_cli_tasks_usage(stderr);
                return 2;
        }
        enum {
                O_JSON = 1000, O_API, O_TOKEN, O_FILE, O_IFM, O_NAME, O_SCRIPT, O_GROUP, O_CRON,
                O_TZ, O_EVERY, O_ONCE, O_EXPIRY, O_EXEC, O_OPTION, O_LABEL, O_MAXATT, O_OVERLAP,
                O_MISFIRE, O_PAUSED, O_LIMIT, O_ALL, O_CURSOR, O_PREFIX, O_CACERT, O_PARAM,
        };
        static const struct option lo[] = {
                {"json", no_argument, NULL, O_JSON},
                {"api", required_argument, NULL, O_API},
                {"token", required_argument, NULL, O_TOKEN},
                {"cacert", required_argument, NULL, O_CACERT},
                {"file", required_argument, NULL, O_FILE},
                {"if-match", required_argument, NULL, O_IFM},
                {"name", required_argument, NULL, O_NAME},
                {"script", required_argument, NULL, O_SCRIPT},
                {"group", required_argument, NULL, O_GROUP},
                {"cron", required_argument, NULL, O_CRON},
                {"tz", required_argument, NULL, O_TZ},
                {"every", required_argument, NULL, O_EVERY},
                {"once", required_argument, NULL, O_ONCE},
                {"expiry", required_argument, NULL, O_EXPIRY},
                {"executor", required_argument, NULL, O_EXEC},
                {"option", required_argument, NULL, O_OPTION},
                {"label", required_argument, NULL, O_LABEL},
                {"max-attempts", required_argument, NULL, O_MAXATT},
                {"overlap", required_argument, NULL, O_OVERLAP},
                {"misfire", required_argument, NULL, O_MISFIRE},
                {"paused", optional_argument, NULL, O_PAUSED},
                {"limit", required_argument, NULL, O_LIMIT},
                {"all", no_argument, NULL, O_ALL},
                {"cursor", required_argument, NULL, O_CURSOR},
                {"name-prefix", required_argument, NULL, O_PREFIX},
                {"param", required_argument, NULL, O_PARAM},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        tb_cli_tasks_opts_t o = {.options = json_object(), .labels = json_object(),
                                 .params = json_object()};
        int sargc = argc - 1;
        char **sargv = argv + 1;
        optind = 0; /* glibc: full re-initialisation */
        opterr = 1;
        bool task_cmd = sub->task_flags;
        while ((c = getopt_long(sargc, sargv, "h", lo, NULL)) != -1) {
                bool tf = false;
                switch (c) {
                case 'h': tb_cli_tasks_sub_usage(sub, stdout); rc = 0; goto out;
                case O_JSON: o.json = true; break;
                case O_API: o.api = optarg; break;
                case O_TOKEN: o.token = optarg; break;
                case O_CACERT: o.cacert = optarg; break;
                case O_FILE: o.file = optarg; break;
                case O_IFM: o.if_match = optarg; break;
                case O_NAME: o.name = optarg; tf = true; break;
                case O_SCRIPT: o.script = optarg; tf = true; break;
                case O_GROUP: o.group = optarg; tf = true; break;
                case O_CRON: o.cron = optarg; tf = true; break;
                case O_TZ: o.tz = optarg; tf = true; break;
                case O_EVERY: o.every = optarg; tf = true; break;
                case O_ONCE: o.once = optarg; tf = true; break;
                case O_EXPIRY: o.expiry = optarg; tf = true; break;
                case O_EXEC: o.executor = optarg; tf = true; break;
                case O_OPTION:
                        if (!tb_cli_tasks_kv(o.options, "--option", optarg))
                                goto out;
                        tf = true;
                        break;
                case O_LABEL:
                        if (!tb_cli_tasks_kv(o.labels, "--label", optarg))
                                goto out;
                        tf = true;
                        break;
                case O_MAXATT: o.max_attempts = optarg; tf = true; break;
                case O_OVERLAP: o.overlap = optarg; tf = true; break;
                case O_MISFIRE: o.misfire = optarg; tf = true; break;
                case O_PAUSED:
                        if (!strcmp(sub->name, "list")) {
                                o.paused_filter = optarg ? optarg : "true";
                        } else if (!optarg || !strcmp(optarg, "true")) {
                                o.paused_flag = true;
                                tf = true;
                        } else {
                                tb_cli_fail("--paused takes no value on %s", sub->name);
                                goto out;
                        }
                        break;
                case O_LIMIT: o.limit = optarg; break;
                case O_ALL: o.all = true; break;
                case O_CURSOR: o.cursor = optarg; break;
                case O_PREFIX: o.name_prefix = optarg; break;
                case O_PARAM:
                        if (strcmp(sub->name, "run")) {
                                tb_cli_fail("%s: --param is an option of `taskbus tasks run`",
                                            sub->name);
                                goto out;
                        }
                        if (!tb_cli_tasks_kv(o.params, "--param", optarg))
                                goto out;
                        break;
                default: tb_cli_tasks_sub_usage(sub, stderr); goto out;
                }
                bool list_filter = !strcmp(sub->name, "list") && (c == O_GROUP || c == O_LABEL);
                if (tf && !task_cmd && !list_filter) {
                        tb_cli_fail("%s: %s is not an option of this command (see --help)",
                                    sub->name, sargv[optind - 1]);
                        goto out;
                }
                o.any_task_flag = o.any_task_flag || tf;
        }
        bool needs_id = strcmp(sub->name, "create") && strcmp(sub->name, "list");
        int npos = sargc - optind;
        if (needs_id ? npos != 1 : npos != 0) {
                tb_cli_fail("%s: %s", sub->name,
                            needs_id ? "expected exactly one task ID" : "unexpected argument");
                tb_cli_tasks_sub_usage(sub, stderr);
                goto out;
        }
        char iderr[300];
        if (needs_id && tb_task_id_check("task ID", sargv[optind], strlen(sargv[optind]), iderr,
                                         sizeof(iderr)) != TB_OK) {
                /* the API's rule (task/task.h), so a bad id is a usage error here */
                tb_cli_fail("%s: %s", sub->name, iderr);
                goto out;
        }
        if (!strcmp(sub->name, "list") && (o.group || json_object_size(o.labels)))
                o.any_task_flag = false; /* --group/--label filter the list */
        tb_cli_rest_t rest;
        char err[1024];
        if (tb_cli_rest_open(&rest, o.api, o.token, o.cacert, err, sizeof(err))) {
                tb_cli_fail("%s", err);
                rc = 1;
                goto out;
        }
        const char *id = needs_id ? sargv[optind] : NULL;
        if (!strcmp(sub->name, "create") || !strcmp(sub->name, "update"))
                rc = tb_cli_tasks_write(&rest, &o, id);
        else if (!strcmp(sub->name, "list"))
                rc = tb_cli_tasks_list(&rest, &o);
        else
                rc = tb_cli_tasks_simple(&rest, &o, sub->name, id);
        tb_cli_rest_close(&rest);
out:
        json_decref(o.options);
        json_decref(o.labels);
        json_decref(o.params);
        return rc;
}
