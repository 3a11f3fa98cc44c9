/**
 * @file cli/runs.c
 * @brief `taskbus runs list|get|cancel` and `taskbus logs RUN [--follow]`:
 *        run history and output through the REST API (libcurl).
 *
 * The API and token come from --api/--token, else TASKBUS_API and
 * TASKBUS_TOKEN, else ~/.config/taskbus/config (`api = "..."; token = "...";`),
 * as for `taskbus tasks`.
 * Exit status: 0 ok, 1 the server or the system refused, 2 usage error.
 */
#include "cli.h"

#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TB_CLI_RUNS_DEFAULT_API "http://127.0.0.1:8080"

typedef struct tb_cli_runs_opts {
        bool json, all, follow;
        const char *api, *token;
        const char *status, *since, *until, *limit, *cursor, *stream;
        char url[512];
        char authz[300];
} tb_cli_runs_opts_t;

static const char tb_cli_runs_common[] =
        "Common flags:\n"
        "  --api URL        API base URL (default $TASKBUS_API, config, " TB_CLI_RUNS_DEFAULT_API
        ")\n"
        "  --token TOKEN    API token (default $TASKBUS_TOKEN or the config file)\n"
        "  -h, --help       this help\n";

static void tb_cli_runs_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus runs list TASK_ID [--status S[,S...]] [--since TIME] "
                "[--until TIME]\n"
                "                         [--limit N] [--all] [--cursor C] [--json]\n"
                "       taskbus runs get RUN_ID [--json]\n"
                "       taskbus runs cancel RUN_ID [--json]\n\n"
                "  list     a task's runs, newest first (nominal time)\n"
                "  get      one run: status, times, exit code, executor, log expiry\n"
                "  cancel   ask the run's executor to stop it\n\n"
                "List flags:\n"
                "  --status S       only these statuses: scheduled, running, succeeded, failed,\n"
                "                   timed_out, cancelled, lost, skipped_overlap, skipped_misfire,\n"
                "                   skipped_paused, expired (comma-separated)\n"
                "  --since TIME     nominal time at or after TIME (RFC 3339)\n"
                "  --until TIME     nominal time before TIME (RFC 3339)\n"
                "  --limit N        runs per page (1..500, default 50)\n"
                "  --all            follow the pages to the end\n"
                "  --cursor C       continue from a previous page's cursor\n"
                "  --json           print the API's JSON instead of a table\n\n%s",
                tb_cli_runs_common);
}

static void tb_cli_logs_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus logs RUN_ID [--follow] [--stream stdout|stderr|system] "
                "[--offset N]\n\n"
                "Print a run's output. With --follow, print new output as the run goes on\n"
                "and exit when the run has ended and all of its output is printed.\n"
                "Output that expired (the task's log_retention) is gone: the command says when.\n\n"
                "  --follow, -f     stream output until the run ends\n"
                "  --stream S       only stdout, stderr or system (taskbus's own notes)\n"
                "  --offset N       start at byte N of the output\n\n%s",
                tb_cli_runs_common);
}

/* ---- the API ------------------------------------------------------------------- */

static void tb_cli_runs_api(tb_cli_runs_opts_t *o) {
        char url[512] = "", token[256] = "", path[600];
        const char *home = getenv("HOME"), *e;
        if (home) {
                config_t cfg;
                config_init(&cfg);
                tb_snprintf(path, sizeof(path), "%s/.config/taskbus/config", home);
                FILE *fp = fopen(path, "r");
                if (fp) {
                        const char *s;
                        if (config_read(&cfg, fp) == CONFIG_TRUE) {
                                if (config_lookup_string(&cfg, "api", &s))
                                        tb_snprintf(url, sizeof(url), "%s", s);
                                if (config_lookup_string(&cfg, "token", &s))
                                        tb_snprintf(token, sizeof(token), "%s", s);
                        } else {
                                fprintf(stderr, "taskbus: warning: %s:%d: %s (ignored)\n", path,
                                        config_error_line(&cfg), config_error_text(&cfg));
                        }
                        fclose(fp);
                }
                config_destroy(&cfg);
        }
        if ((e = getenv("TASKBUS_API")) && *e)
                tb_snprintf(url, sizeof(url), "%s", e);
        if ((e = getenv("TASKBUS_TOKEN")) && *e)
                tb_snprintf(token, sizeof(token), "%s", e);
        if (o->api)
                tb_snprintf(url, sizeof(url), "%s", o->api);
        if (o->token)
                tb_snprintf(token, sizeof(token), "%s", o->token);
        tb_snprintf(o->url, sizeof(o->url), "%s", url[0] ? url : TB_CLI_RUNS_DEFAULT_API);
        size_t n = strlen(o->url);
        while (n && o->url[n - 1] == '/')
                o->url[--n] = '\0';
        o->authz[0] = '\0';
        if (token[0])
                tb_snprintf(o->authz, sizeof(o->authz), "Authorization: Bearer %s", token);
}

static size_t tb_cli_runs_collect(char *p, size_t size, size_t nmemb, void *ud) {
        return tb_buf_append(ud, p, size * nmemb) == TB_OK ? size * nmemb : 0;
}

/** Where a streamed body goes: stdout while the status is 200, else kept
 *  (an error body to print). */
typedef struct tb_cli_runs_sink {
        CURL *curl;
        tb_buf_t err;
        bool checked, ok;
} tb_cli_runs_sink_t;

static size_t tb_cli_runs_stream(char *p, size_t size, size_t nmemb, void *ud) {
        tb_cli_runs_sink_t *s = ud;
        if (!s->checked) {
                long st = 0;
                curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &st);
                s->ok = st == 200;
                s->checked = true;
        }
        if (!s->ok)
                return tb_buf_append(&s->err, p, size * nmemb) == TB_OK ? size * nmemb : 0;
        size_t n = fwrite(p, size, nmemb, stdout);
        fflush(stdout); /* live output: the user sees it as it comes */
        return n * size;
}

/** The header X-Log-Next-Offset / X-Log-Complete of a log page. */
typedef struct tb_cli_runs_hdrs {
        long long next;
        bool complete;
} tb_cli_runs_hdrs_t;

static size_t tb_cli_runs_header(char *p, size_t size, size_t nmemb, void *ud) {
        tb_cli_runs_hdrs_t *h = ud;
        size_t n = size * nmemb;
        if (n > 18 && !strncasecmp(p, "X-Log-Next-Offset:", 18))
                h->next = strtoll(p + 18, NULL, 10);
        if (n > 15 && !strncasecmp(p, "X-Log-Complete:", 15))
                h->complete = strstr(p + 15, "true") != NULL;
        return n;
}

/**
 * One request; a 200 body goes to \p stream_sink's stdout when it is set,
 * else into \p body. @returns the HTTP status, 0 if unreachable (printed).
 */
static long tb_cli_runs_http(const tb_cli_runs_opts_t *o, const char *method, const char *path,
                             bool streaming, tb_buf_t *body, tb_cli_runs_hdrs_t *hdrs) {
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        char url[1200];
        long status = 0;
        tb_cli_runs_sink_t sink = {.curl = c};
        if (!c) {
                tb_cli_fail("cannot initialise libcurl");
                return 0;
        }
        tb_snprintf(url, sizeof(url), "%s%s", o->url, path);
        h = curl_slist_append(h, o->authz);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        if (!strcmp(method, "POST"))
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        if (streaming) {
                /* a live tail lasts as long as the run: no overall timeout */
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tb_cli_runs_stream);
                curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
                curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        } else {
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tb_cli_runs_collect);
                curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
                curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 120000L);
        }
        if (hdrs) {
                curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, tb_cli_runs_header);
                curl_easy_setopt(c, CURLOPT_HEADERDATA, hdrs);
        }
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK) {
                if (status == 200 && streaming)
                        tb_cli_fail("the output stream broke off: %s (run `taskbus logs` again "
                                    "to see the rest)",
                                    curl_easy_strerror(rc));
                else
                        tb_cli_fail("cannot reach the API at %s: %s (set TASKBUS_API or --api)",
                                    o->url, curl_easy_strerror(rc));
                status = 0;
        }
        if (streaming && sink.err.len && body)
                tb_buf_append(body, sink.err.data, sink.err.len);
        tb_buf_free(&sink.err);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        return status;
}

/** Print the server's error body: "taskbus: 404 not_found: message". */
static void tb_cli_runs_error(long status, const tb_buf_t *body) {
        json_error_t je;
        json_t *j = body->len ? json_loadb(body->data, body->len, 0, &je) : NULL;
        const json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        if (code && msg)
                tb_cli_fail("%ld %s: %s", status, code, msg);
        else
                tb_cli_fail("%ld: unexpected response from the API", status);
        json_decref(j);
}

static char *tb_cli_runs_escape(const char *s) {
        CURL *c = curl_easy_init();
        char *e = c ? curl_easy_escape(c, s, 0) : NULL;
        char *out = e ? strdup(e) : NULL;
        curl_free(e);
        if (c)
                curl_easy_cleanup(c);
        return out;
}

/** GET/POST returning JSON. @returns the status (0 unreachable), *out the body. */
static long tb_cli_runs_json_call(const tb_cli_runs_opts_t *o, const char *method,
                                  const char *path, json_t **out, tb_buf_t *raw) {
        json_error_t je;
        long st = tb_cli_runs_http(o, method, path, false, raw, NULL);
        *out = raw->len ? json_loadb(raw->data, raw->len, 0, &je) : NULL;
        return st;
}

/* ---- output --------------------------------------------------------------------- */

static const char *tb_cli_runs_s(const json_t *r, const char *k) {
        const char *s = json_string_value(json_object_get(r, k));
        return s && *s ? s : "-";
}

static void tb_cli_runs_print_json(const json_t *j) {
        char *s = json_dumps(j, JSON_INDENT(2));
        if (s)
                puts(s);
        free(s);
}

static void tb_cli_runs_exit_text(const json_t *r, char *buf, size_t size) {
        const json_t *code = json_object_get(r, "exit_code");
        const json_t *sig = json_object_get(r, "signal");
        if (json_is_integer(sig))
                tb_snprintf(buf, size, "signal %" JSON_INTEGER_FORMAT, json_integer_value(sig));
        else if (json_is_integer(code))
                tb_snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(code));
        else
                tb_snprintf(buf, size, "-");
}

static void tb_cli_runs_row(const json_t *r) {
        char ex[32];
        tb_cli_runs_exit_text(r, ex, sizeof(ex));
        printf("%-32s  %-24s  %3" JSON_INTEGER_FORMAT "  %-15s  %-24s  %-24s  %s\n",
               tb_cli_runs_s(r, "id"), tb_cli_runs_s(r, "nominal_time"),
               json_integer_value(json_object_get(r, "attempt")), tb_cli_runs_s(r, "status"),
               tb_cli_runs_s(r, "started_at"), tb_cli_runs_s(r, "finished_at"), ex);
}

static void tb_cli_runs_print(const json_t *r) {
        char ex[32];
        tb_cli_runs_exit_text(r, ex, sizeof(ex));
        printf("id:           %s\n", tb_cli_runs_s(r, "id"));
        printf("task:         %s\n", tb_cli_runs_s(r, "task_id"));
        printf("status:       %s\n", tb_cli_runs_s(r, "status"));
        printf("nominal time: %s\n", tb_cli_runs_s(r, "nominal_time"));
        printf("attempt:      %" JSON_INTEGER_FORMAT " (%s)\n",
               json_integer_value(json_object_get(r, "attempt")), tb_cli_runs_s(r, "trigger"));
        printf("started:      %s\n", tb_cli_runs_s(r, "started_at"));
        printf("finished:     %s\n", tb_cli_runs_s(r, "finished_at"));
        printf("exit:         %s\n", ex);
        printf("executor:     %s on %s\n", tb_cli_runs_s(r, "executor"),
               tb_cli_runs_s(r, "host"));
        printf("output:       %" JSON_INTEGER_FORMAT " bytes\n",
               json_integer_value(json_object_get(r, "output_bytes")));
        if (json_is_string(json_object_get(r, "error")))
                printf("error:        %s%s\n", tb_cli_runs_s(r, "error"),
                       json_is_true(json_object_get(r, "infra_error")) ? " (infrastructure)"
                                                                         : "");
        printf("log expires:  %s%s\n", tb_cli_runs_s(r, "log_expires_at"),
               json_is_true(json_object_get(r, "log_expired")) ? " (expired)" : "");
}

/* ---- commands ----------------------------------------------------------------- */

static int tb_cli_runs_list(const tb_cli_runs_opts_t *o, const char *task) {
        tb_buf_t q = {0};
        char *e = tb_cli_runs_escape(task);
        tb_buf_printf(&q, "/v1/tasks/%s/runs?limit=%s", e ? e : task, o->limit ? o->limit : "50");
        free(e);
        const char *vals[] = {o->status, o->since, o->until};
        const char *names[] = {"status", "since", "until"};
        for (size_t i = 0; i < 3; i++) {
                if (vals[i] && (e = tb_cli_runs_escape(vals[i]))) {
                        tb_buf_printf(&q, "&%s=%s", names[i], e);
                        free(e);
                }
        }
        char *cursor = o->cursor ? strdup(o->cursor) : NULL;
        json_t *all = json_array();
        bool header = false;
        int rc = 0;
        for (;;) {
                tb_buf_t path = {0}, raw = {0};
                tb_buf_printf(&path, "%s", q.data);
                if (cursor && (e = tb_cli_runs_escape(cursor))) {
                        tb_buf_printf(&path, "&cursor=%s", e);
                        free(e);
                }
                json_t *r = NULL;
                long st = tb_cli_runs_json_call(o, "GET", path.data, &r, &raw);
                tb_buf_free(&path);
                if (st != 200) {
                        if (st)
                                tb_cli_runs_error(st, &raw);
                        tb_buf_free(&raw);
                        json_decref(r);
                        rc = 1;
                        break;
                }
                tb_buf_free(&raw);
                size_t i;
                json_t *run;
                json_array_foreach(json_object_get(r, "runs"), i, run) {
                        if (o->json) {
                                json_array_append(all, run);
                                continue;
                        }
                        if (!header)
                                printf("%-32s  %-24s  %3s  %-15s  %-24s  %-24s  %s\n", "RUN",
                                       "NOMINAL TIME", "ATT", "STATUS", "STARTED", "FINISHED",
                                       "EXIT");
                        header = true;
                        tb_cli_runs_row(run);
                }
                free(cursor);
                cursor = NULL;
                const char *next = json_string_value(json_object_get(r, "next_cursor"));
                if (next)
                        cursor = strdup(next);
                json_decref(r);
                if (!cursor || !o->all)
                        break;
        }
        if (rc == 0) {
                if (o->json) {
                        json_t *out = json_pack("{s:O, s:o}", "runs", all, "next_cursor",
                                                cursor ? json_string(cursor) : json_null());
                        tb_cli_runs_print_json(out);
                        json_decref(out);
                } else {
                        if (!header)
                                printf("no runs\n");
                        if (cursor)
                                fprintf(stderr, "(more runs: --cursor %s, or --all)\n", cursor);
                }
        }
        json_decref(all);
        free(cursor);
        tb_buf_free(&q);
        return rc;
}

static int tb_cli_runs_one(const tb_cli_runs_opts_t *o, const char *sub, const char *run) {
        char path[400];
        char *e = tb_cli_runs_escape(run);
        bool cancel = !strcmp(sub, "cancel");
        tb_snprintf(path, sizeof(path), "/v1/runs/%s%s", e ? e : run, cancel ? "/cancel" : "");
        free(e);
        tb_buf_t raw = {0};
        json_t *r = NULL;
        long st = tb_cli_runs_json_call(o, cancel ? "POST" : "GET", path, &r, &raw);
        int rc = 0;
        if (st != (cancel ? 202 : 200)) {
                if (st)
                        tb_cli_runs_error(st, &raw);
                rc = 1;
        } else if (o->json) {
                tb_cli_runs_print_json(r);
        } else if (cancel) {
                printf("cancellation of run %s requested: its executor stops it within about a "
                       "second (taskbus runs get %s)\n",
                       run, run);
        } else {
                tb_cli_runs_print(r);
        }
        json_decref(r);
        tb_buf_free(&raw);
        return rc;
}

static int tb_cli_logs_run(const tb_cli_runs_opts_t *o, const char *run, long long offset) {
        char path[600];
        char *e = tb_cli_runs_escape(run);
        char sq[40] = "";
        if (o->stream)
                tb_snprintf(sq, sizeof(sq), "&stream=%s", o->stream);
        tb_buf_t err = {0};
        int rc = 0;
        if (o->follow) {
                tb_snprintf(path, sizeof(path), "/v1/runs/%s/log?follow=true&offset=%lld%s",
                            e ? e : run, offset, sq);
                long st = tb_cli_runs_http(o, "GET", path, true, &err, NULL);
                if (st != 200) {
                        if (st)
                                tb_cli_runs_error(st, &err);
                        rc = 1;
                }
                goto out;
        }
        /* page by page: the server bounds one answer (?limit) */
        for (;;) {
                tb_cli_runs_hdrs_t h = {.next = -1};
                tb_buf_t body = {0};
                tb_snprintf(path, sizeof(path), "/v1/runs/%s/log?offset=%lld%s", e ? e : run,
                            offset, sq);
                long st = tb_cli_runs_http(o, "GET", path, false, &body, &h);
                if (st != 200) {
                        if (st)
                                tb_cli_runs_error(st, &body);
                        tb_buf_free(&body);
                        rc = 1;
                        break;
                }
                fwrite(body.data ? body.data : "", 1, body.len, stdout);
                tb_buf_free(&body);
                if (h.next < 0 || h.next <= offset)
                        break; /* nothing more now */
                offset = h.next;
        }
        fflush(stdout);
out:
        free(e);
        tb_buf_free(&err);
        return rc;
}

/* ---- argument parsing ------------------------------------------------------------ */

enum {
        TB_RO_JSON = 1000, TB_RO_API, TB_RO_TOKEN, TB_RO_STATUS, TB_RO_SINCE, TB_RO_UNTIL,
        TB_RO_LIMIT, TB_RO_ALL, TB_RO_CURSOR, TB_RO_STREAM, TB_RO_OFFSET,
};

static const struct option tb_cli_runs_longopts[] = {
        {"json", no_argument, NULL, TB_RO_JSON},
        {"api", required_argument, NULL, TB_RO_API},
        {"token", required_argument, NULL, TB_RO_TOKEN},
        {"status", required_argument, NULL, TB_RO_STATUS},
        {"since", required_argument, NULL, TB_RO_SINCE},
        {"until", required_argument, NULL, TB_RO_UNTIL},
        {"limit", required_argument, NULL, TB_RO_LIMIT},
        {"all", no_argument, NULL, TB_RO_ALL},
        {"cursor", required_argument, NULL, TB_RO_CURSOR},
        {"stream", required_argument, NULL, TB_RO_STREAM},
        {"offset", required_argument, NULL, TB_RO_OFFSET},
        {"follow", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
};

/** Parse flags of argv (argv[0] = the command); \p allowed lists the flags
 *  this command takes (long names, comma-separated). @returns -1 on success
 *  (o filled, *first_pos the first positional), else the exit status. */
static int tb_cli_runs_parse(int argc, char **argv, const char *allowed, tb_cli_runs_opts_t *o,
                             long long *offset, int *first_pos, void (*usage)(FILE *)) {
        int c, idx = 0;
        optind = 0; /* glibc: full re-initialisation */
        opterr = 1;
        while ((c = getopt_long(argc, argv, "fh", tb_cli_runs_longopts, &idx)) != -1) {
                if (c == 'h') {
                        usage(stdout);
                        return 0;
                }
                if (c == '?') {
                        usage(stderr);
                        return 2;
                }
                const char *name = c == 'f' ? "follow" : tb_cli_runs_longopts[idx].name;
                for (const struct option *lo = tb_cli_runs_longopts; lo->name; lo++)
                        if (lo->val == c)
                                name = lo->name;
                char key[40];
                tb_snprintf(key, sizeof(key), ",%s,", name);
                char list[300];
                tb_snprintf(list, sizeof(list), ",%s,", allowed);
                if (!strstr(list, key)) {
                        tb_cli_fail("%s: --%s is not an option of this command (see --help)",
                                    argv[0], name);
                        return 2;
                }
                switch (c) {
                case TB_RO_JSON: o->json = true; break;
                case TB_RO_API: o->api = optarg; break;
                case TB_RO_TOKEN: o->token = optarg; break;
                case TB_RO_STATUS: o->status = optarg; break;
                case TB_RO_SINCE: o->since = optarg; break;
                case TB_RO_UNTIL: o->until = optarg; break;
                case TB_RO_LIMIT: o->limit = optarg; break;
                case TB_RO_ALL: o->all = true; break;
                case TB_RO_CURSOR: o->cursor = optarg; break;
                case TB_RO_STREAM:
                        if (strcmp(optarg, "stdout") && strcmp(optarg, "stderr") &&
                            strcmp(optarg, "system")) {
                                tb_cli_fail("--stream: expected stdout, stderr or system, got "
                                            "'%s'",
                                            optarg);
                                return 2;
                        }
                        o->stream = optarg;
                        break;
                case TB_RO_OFFSET: {
                        char *end;
                        *offset = strtoll(optarg, &end, 10);
                        if (!*optarg || *end || *offset < 0) {
                                tb_cli_fail("--offset: expected a byte offset (0 or more), got "
                                            "'%s'",
                                            optarg);
                                return 2;
                        }
                        break;
                }
                case 'f': o->follow = true; break;
                default: usage(stderr); return 2;
                }
        }
        *first_pos = optind;
        return -1;
}

/** Resolve the API and token. @returns false (printed) without a token. */
static bool tb_cli_runs_ready(tb_cli_runs_opts_t *o) {
        tb_cli_runs_api(o);
        if (o->authz[0])
                return true;
        tb_cli_fail("no API token: set TASKBUS_TOKEN, pass --token, or put token = "
                    "\"...\"; in ~/.config/taskbus/config");
        return false;
}

int tb_cli_runs(int argc, char **argv) {
        if (argc < 2) {
                tb_cli_runs_usage(stderr);
                return 2;
        }
        const char *sub = argv[1];
        if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
                tb_cli_runs_usage(stdout);
                return 0;
        }
        const char *allowed;
        if (!strcmp(sub, "list"))
                allowed = "json,api,token,status,since,until,limit,all,cursor,help";
        else if (!strcmp(sub, "get") || !strcmp(sub, "cancel"))
                allowed = "json,api,token,help";
        else {
                tb_cli_fail("runs: unknown command '%s' (list, get, cancel)", sub);
                tb_cli_runs_usage(stderr);
                return 2;
        }
        tb_cli_runs_opts_t o = {0};
        long long offset = 0;
        int pos = 0;
        int rc = tb_cli_runs_parse(argc - 1, argv + 1, allowed, &o, &offset, &pos,
                                   tb_cli_runs_usage);
        if (rc >= 0)
                return rc;
        if (argc - 1 - pos != 1) {
                tb_cli_fail("runs %s: expected exactly one %s", sub,
                            !strcmp(sub, "list") ? "TASK_ID" : "RUN_ID");
                tb_cli_runs_usage(stderr);
                return 2;
        }
        const char *id = argv[1 + pos];
        if (!tb_cli_runs_ready(&o))
                return 1;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = !strcmp(sub, "list") ? tb_cli_runs_list(&o, id) : tb_cli_runs_one(&o, sub, id);
        curl_global_cleanup();
        return rc;
}

int tb_cli_logs(int argc, char **argv) {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
                tb_cli_logs_usage(stdout);
                return 0;
        }
        tb_cli_runs_opts_t o = {0};
        long long offset = 0;
        int pos = 0;
        int rc = tb_cli_runs_parse(argc, argv, "api,token,stream,offset,follow,help", &o, &offset,
                                   &pos, tb_cli_logs_usage);
        if (rc >= 0)
                return rc;
        if (argc - pos != 1) {
                tb_cli_fail("logs: expected exactly one RUN_ID");
                tb_cli_logs_usage(stderr);
                return 2;
        }
        if (!tb_cli_runs_ready(&o))
                return 1;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = tb_cli_logs_run(&o, argv[pos], offset);
        curl_global_cleanup();
        return rc;
}
