/**
 * @file cli/runs.c
 * @brief `taskbus runs list|get|cancel` and `taskbus logs RUN [--follow]`:
 *        run history and output through the REST API.
 *
 * The API and token are found as for every command of the API (cli/rest.h).
 * Exit status: 0 ok, 1 the server or the system refused, 2 usage error.
 */
#include "rest.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tb_cli_runs_opts {
        bool json, all, follow;
        const char *api, *token, *cacert;
        const char *status, *since, *until, *limit, *cursor, *stream;
} tb_cli_runs_opts_t;

static const char tb_cli_runs_common[] =
        "Common flags:\n"
        "  --api URL        API base URL (default $TASKBUS_API, config, " TB_CLI_REST_DEFAULT_API
        ")\n"
        "  --token TOKEN    API token (default $TASKBUS_TOKEN or the config file)\n"
        "  --cacert FILE    CA certificate verifying an https:// API (default\n"
        "                   $TASKBUS_CACERT, `cacert` in the config file, the system's)\n"
        "  -h, --help       this help\n";

static void tb_cli_runs_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus runs list TASK_ID [--status S[,S...]] [--since TIME] "
                "[--until TIME]\n"
                "                         [--limit N] [--all] [--cursor C] [--json]\n"
                "       taskbus runs get RUN_ID [--json]\n"
                "       taskbus runs cancel RUN_ID [--json]\n\n"
                "  list     a task's runs, newest first (nominal time); a skipped_paused or\n"
                "           skipped_misfire row that stands for a range of fires ends with\n"
                "           \"N fires, FIRST to LAST\"\n"
                "  get      one run: status, times, exit code, executor, log expiry, range\n"
                "  cancel   ask the run's executor to stop it\n\n"
                "List flags:\n"
                "  --status S       only these statuses: scheduled, running, succeeded, failed,\n"
                "                   timed_out, cancelled, lost, skipped_overlap, skipped_misfire,\n"
                "                   skipped_paused, expired, skipped_calendar (comma-separated)\n"
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

/* ---- output --------------------------------------------------------------------- */

static const char *tb_cli_runs_s(const json_t *r, const char *k) {
        const char *s = json_string_value(json_object_get(r, k));
        return s && *s ? s : "-";
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

/* A row that stands for a range of fires not run (skipped_paused,
 * skipped_misfire): "60 fires, 2026-...Z to 2026-...Z"; "" otherwise. */
static const char *tb_cli_runs_range(const json_t *r, char *buf, size_t size) {
        const json_t *occ = json_object_get(r, "occurrences");
        buf[0] = '\0';
        if (json_is_string(json_object_get(r, "last_nominal_time")) && json_is_integer(occ))
                tb_snprintf(buf, size, "%" JSON_INTEGER_FORMAT " fires, %s to %s",
                            json_integer_value(occ), tb_cli_runs_s(r, "nominal_time"),
                            tb_cli_runs_s(r, "last_nominal_time"));
        return buf;
}

static void tb_cli_runs_row(const json_t *r) {
        char ex[32], range[128];
        tb_cli_runs_exit_text(r, ex, sizeof(ex));
        tb_cli_runs_range(r, range, sizeof(range));
        printf("%-32s  %-24s  %3" JSON_INTEGER_FORMAT "  %-15s  %-24s  %-24s  %s%s%s\n",
               tb_cli_runs_s(r, "id"), tb_cli_runs_s(r, "nominal_time"),
               json_integer_value(json_object_get(r, "attempt")), tb_cli_runs_s(r, "status"),
               tb_cli_runs_s(r, "started_at"), tb_cli_runs_s(r, "finished_at"), ex,
               range[0] ? "  " : "", range);
}

static void tb_cli_runs_print(const json_t *r) {
        char ex[32];
        tb_cli_runs_exit_text(r, ex, sizeof(ex));
        printf("id:           %s\n", tb_cli_runs_s(r, "id"));
        printf("task:         %s\n", tb_cli_runs_s(r, "task_id"));
        printf("status:       %s\n", tb_cli_runs_s(r, "status"));
        if (json_is_integer(json_object_get(r, "queue_position")))
                printf("queue:        position %lld in its group's queue\n",
                       (long long)json_integer_value(json_object_get(r, "queue_position")));
        printf("nominal time: %s\n", tb_cli_runs_s(r, "nominal_time"));
        char range[128];
        if (tb_cli_runs_range(r, range, sizeof(range))[0])
                printf("range:        %s\n", range);
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

static void tb_cli_runs_header(void) {
        printf("%-32s  %-24s  %3s  %-15s  %-24s  %-24s  %s\n", "RUN", "NOMINAL TIME", "ATT",
               "STATUS", "STARTED", "FINISHED", "EXIT");
}

static int tb_cli_runs_list(const tb_cli_rest_t *rest, const tb_cli_runs_opts_t *o,
                            const char *task) {
        static const tb_cli_rest_list_t fmt = {"runs", tb_cli_runs_header, tb_cli_runs_row};
        tb_buf_t q = {0};
        tb_cli_rest_path(&q, "/v1/tasks", task, "runs");
        tb_cli_rest_query(&q, "limit", o->limit ? o->limit : "50");
        tb_cli_rest_query(&q, "status", o->status);
        tb_cli_rest_query(&q, "since", o->since);
        tb_cli_rest_query(&q, "until", o->until);
        int rc = tb_cli_rest_list(rest, q.data, o->cursor, o->all, o->json, &fmt);
        tb_buf_free(&q);
        return rc;
}

static int tb_cli_runs_one(const tb_cli_rest_t *rest, const tb_cli_runs_opts_t *o,
                           const char *sub, const char *run) {
        bool cancel = !strcmp(sub, "cancel");
        tb_buf_t path = {0};
        tb_cli_rest_path(&path, "/v1/runs", run, cancel ? "cancel" : NULL);
        tb_cli_rest_req_t req = {.method = cancel ? "POST" : "GET", .path = path.data,
                                 .ok = cancel ? 202 : 200};
        tb_cli_rest_resp_t resp = {0};
        int rc = tb_cli_rest_do(rest, &req, &resp);
        if (rc == 0 && o->json)
                tb_cli_print_json(resp.json);
        else if (rc == 0 && cancel)
                printf("cancellation of run %s requested: its executor stops it within about a "
                       "second (taskbus runs get %s)\n",
                       run, run);
        else if (rc == 0)
                tb_cli_runs_print(resp.json);
        tb_cli_rest_resp_free(&resp);
        tb_buf_free(&path);
        return rc;
}

/* ---- a live stream's last line ---------------------------------------------------- */

/*
 * A live stream the server ends (api.max_follow_duration, docs/api.md) closes
 * with one line "[taskbus: follow ended ...; resume with GET ...&offset=N]".
 * The CLI's output is the run's output, so that line is held back while it
 * may be the stream's last, and the follow resumes from N: `taskbus logs
 * --follow` goes on for as long as the run does. A line like it anywhere
 * else is output like any other.
 */
#define TB_CLI_LOGS_END "[taskbus: follow ended"

typedef struct tb_cli_logs_filter {
        tb_buf_t held;  /**< output not written yet: a possible last line */
        bool bol;       /**< the next byte starts a line */
} tb_cli_logs_filter_t;

/* Whether \p b (at \p bol, the start of a line) may be the start of the last
 * line; mid-line, the server puts a newline before it. @returns where that
 * line starts in \p b, or -1. */
static long tb_cli_logs_candidate(const char *b, size_t len, bool bol) {
        long at = bol ? 0 : 1;
        if (!bol && (len == 0 || b[0] != '\n'))
                return -1;
        size_t n = len - (size_t)at;
        if (n > sizeof(TB_CLI_LOGS_END) - 1)
                n = sizeof(TB_CLI_LOGS_END) - 1;
        return memcmp(b + at, TB_CLI_LOGS_END, n) ? -1 : at;
}

static ssize_t tb_cli_logs_filter_write(void *cookie, const char *buf, size_t size) {
        tb_cli_logs_filter_t *f = cookie;
        if (tb_buf_append(&f->held, buf, size))
                return -1;
        size_t off = 0;
        while (off < f->held.len) {
                const char *rest = f->held.data + off;
                size_t len = f->held.len - off;
                long at = tb_cli_logs_candidate(rest, len, f->bol);
                if (at >= 0) {
                        const char *nl = memchr(rest + at, '\n', len - (size_t)at);
                        if (!nl || (size_t)(nl - rest) + 1 == len)
                                break; /* maybe the last line: hold it */
                }
                const char *nl = memchr(rest, '\n', len);
                size_t line = nl ? (size_t)(nl - rest) + 1 : len;
                fwrite(rest, 1, line, stdout);
                f->bol = nl != NULL;
                off += line;
        }
        fflush(stdout);
        memmove(f->held.data, f->held.data + off, f->held.len - off);
        f->held.len -= off;
        return (ssize_t)size;
}

/* The stream ended: *\p resume the offset its last line says to resume from
 * (-1: none; what is held is written out). */
static void tb_cli_logs_filter_end(tb_cli_logs_filter_t *f, long long *resume) {
        *resume = -1;
        tb_buf_append(&f->held, "", 1);
        f->held.len--;
        long at = f->held.len ? tb_cli_logs_candidate(f->held.data, f->held.len, f->bol) : -1;
        const char *o = at >= 0 ? strstr(f->held.data + at, "&offset=") : NULL;
        if (o && f->held.data[f->held.len - 1] == '\n')
                *resume = strtoll(o + strlen("&offset="), NULL, 10);
        else
                fwrite(f->held.data ? f->held.data : "", 1, f->held.len, stdout);
        fflush(stdout);
        f->held.len = 0;
}

/* One GET of the log: with --follow the live tail (the whole rest of the
 * output, as the run writes it), else one page from \p offset. */
static tb_err_t tb_cli_logs_get(const tb_cli_rest_t *rest, const tb_cli_runs_opts_t *o,
                                const char *run, long long offset, FILE *live,
                                tb_cli_rest_resp_t *resp, char *errstr, size_t errstr_size) {
        char num[32];
        tb_buf_t path = {0};
        tb_cli_rest_path(&path, "/v1/runs", run, "log");
        if (o->follow)
                tb_cli_rest_query(&path, "follow", "true");
        tb_snprintf(num, sizeof(num), "%lld", offset);
        tb_cli_rest_query(&path, "offset", num);
        tb_cli_rest_query(&path, "stream", o->stream);
        tb_cli_rest_req_t req = {.method = "GET", .path = path.data, .accept = "text/plain",
                                 .ok = 200, .stream = live};
        tb_err_t err = tb_cli_rest_call(rest, &req, resp, errstr, errstr_size);
        tb_buf_free(&path);
        return err;
}

static int tb_cli_logs_run(const tb_cli_rest_t *rest, const tb_cli_runs_opts_t *o,
                           const char *run, long long offset) {
        char err[1024], next[32];
        int rc = 0;
        /* without --follow, page by page: the server bounds one answer (?limit) */
        tb_cli_logs_filter_t filt = {.bol = true};
        FILE *live = NULL;
        if (o->follow) {
                live = fopencookie(&filt, "w", (cookie_io_functions_t){
                                                       .write = tb_cli_logs_filter_write});
                if (!live) {
                        tb_cli_fail("cannot set up the output: %s", strerror(errno));
                        return 1;
                }
                setvbuf(live, NULL, _IONBF, 0);
        }
        for (;;) {
                tb_cli_rest_resp_t resp = {0};
                if (tb_cli_logs_get(rest, o, run, offset, live, &resp, err, sizeof(err))) {
                        if (resp.status == 200)
                                tb_cli_fail("%s (run `taskbus logs` again to see the rest)", err);
                        else
                                tb_cli_fail("%s", err);
                        tb_cli_rest_resp_free(&resp);
                        rc = 1;
                        break;
                }
                if (o->follow) {
                        tb_cli_rest_resp_free(&resp);
                        long long resume = -1;
                        tb_cli_logs_filter_end(&filt, &resume);
                        if (resume < 0)
                                break;
                        offset = resume; /* the server ended the stream: go on */
                        continue;
                }
                fwrite(resp.body.data ? resp.body.data : "", 1, resp.body.len, stdout);
                long long n = -1;
                if (tb_cli_rest_header(&resp, "X-Log-Next-Offset", next, sizeof(next)))
                        n = strtoll(next, NULL, 10);
                tb_cli_rest_resp_free(&resp);
                if (n < 0 || n <= offset)
                        break; /* nothing more now */
                offset = n;
        }
        if (live) {
                long long ignored;
                tb_cli_logs_filter_end(&filt, &ignored); /* an error's partial output */
                fclose(live);
                tb_buf_free(&filt.held);
        }
        fflush(stdout);
        return rc;
}

/* ---- argument parsing ------------------------------------------------------------ */

enum {
        TB_RO_JSON = 1000, TB_RO_API, TB_RO_TOKEN, TB_RO_STATUS, TB_RO_SINCE, TB_RO_UNTIL,
        TB_RO_LIMIT, TB_RO_ALL, TB_RO_CURSOR, TB_RO_STREAM, TB_RO_OFFSET, TB_RO_CACERT,
};

static const struct option tb_cli_runs_longopts[] = {
        {"json", no_argument, NULL, TB_RO_JSON},
        {"api", required_argument, NULL, TB_RO_API},
        {"token", required_argument, NULL, TB_RO_TOKEN},
        {"cacert", required_argument, NULL, TB_RO_CACERT},
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
                case TB_RO_CACERT: o->cacert = optarg; break;
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

int tb_cli_runs(int argc, char **argv) {
        int rc;
        if (tb_cli_group_usage(argc, argv, tb_cli_runs_usage, &rc))
                return rc;
        const char *sub = argv[1];
        const char *allowed;
        if (!strcmp(sub, "list"))
                allowed = "json,api,token,cacert,status,since,until,limit,all,cursor,help";
        else if (!strcmp(sub, "get") || !strcmp(sub, "cancel"))
                allowed = "json,api,token,cacert,help";
        else {
                tb_cli_fail("runs: unknown command '%s' (list, get, cancel)", sub);
                tb_cli_runs_usage(stderr);
                return 2;
        }
        tb_cli_runs_opts_t o = {0};
        long long offset = 0;
        int pos = 0;
        rc = tb_cli_runs_parse(argc - 1, argv + 1, allowed, &o, &offset, &pos,
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
        tb_cli_rest_t rest;
        char err[1024];
        if (tb_cli_rest_open(&rest, o.api, o.token, o.cacert, err, sizeof(err))) {
                tb_cli_fail("%s", err);
                return 1;
        }
        rc = !strcmp(sub, "list") ? tb_cli_runs_list(&rest, &o, id)
                                  : tb_cli_runs_one(&rest, &o, sub, id);
        tb_cli_rest_close(&rest);
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
        int rc = tb_cli_runs_parse(argc, argv, "api,token,cacert,stream,offset,follow,help", &o,
                                   &offset, &pos, tb_cli_logs_usage);
        if (rc >= 0)
                return rc;
        if (argc - pos != 1) {
                tb_cli_fail("logs: expected exactly one RUN_ID");
                tb_cli_logs_usage(stderr);
                return 2;
        }
        tb_cli_rest_t rest;
        char err[1024];
        if (tb_cli_rest_open(&rest, o.api, o.token, o.cacert, err, sizeof(err))) {
                tb_cli_fail("%s", err);
                return 1;
        }
        rc = tb_cli_logs_run(&rest, &o, argv[pos], offset);
        tb_cli_rest_close(&rest);
        return rc;
}
