/**
 * @file test_api.c
 * @brief The REST API through real HTTP (libcurl) against taskbusd child
 *        processes running api, commands and projector on a private stack
 *        (real Kafka, real PostgreSQL): every status code a user can cause,
 *        read-your-writes, keyset pagination under concurrent inserts,
 *        optimistic concurrency from 8 threads, group isolation, and a
 *        SIGKILL of the api in the middle of a command stream.
 */
#include "identity/identity.h"
#include "support.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <sys/prctl.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- processes ------------------------------------------------------------------ */

/* A config for one daemon of the stack: its own API port and api/kafka knobs. */
static char *daemon_conf(tbt_stack_t *st, int port, const char *api_extra, const char *kafka) {
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = %d; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; %s };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st->key_path, st->prefix, (int)st->conf->topic_partitions, st->db_url, port,
                              api_extra ? api_extra : "reply_timeout = \"30s\"; rate = 100000.0; burst = 100000;",
                              kafka ? kafka : st->kafka),
                     0);
        char *path = tbt_write_temp(".conf", text);
        free(text);
        cr_assert_not_null(path);
        return path;
}

static pid_t daemon_start(tbt_stack_t *st, const char *conf, const char *roles) {
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                /* a daemon never outlives its test, even one that failed in setup */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(st->log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                        close(fd);
                }
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                unsetenv("TASKBUS_KAFKA");
                unsetenv("TASKBUS_API_LISTEN");
                execl(bin, bin, "--config", conf, "--roles", roles, (char *)NULL);
                _exit(127);
        }
        return pid;
}

/* ---- HTTP ----------------------------------------------------------------------- */

typedef struct hres {
        long status;
        json_t *j;
        tb_buf_t body;
        tb_buf_t hdrs;
} hres_t;

static size_t on_data(char *p, size_t s, size_t n, void *ud) {
        tb_buf_append(ud, p, s * n);
        return s * n;
}

/* One request; \p hdr is one extra header line or NULL. status 0: no answer. */
static hres_t http(int port, const char *method, const char *path, const char *authz,
                   const char *body, const char *hdr) {
        hres_t r = {0};
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        char url[2048], ah[200];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
        if (authz) {
                snprintf(ah, sizeof(ah), "Authorization: %s", authz);
                h = curl_slist_append(h, ah);
        }
        if (hdr)
                h = curl_slist_append(h, hdr);
        h = curl_slist_append(h, "Content-Type: application/json");
        h = curl_slist_append(h, "Expect:");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.hdrs);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        }
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        tb_buf_append(&r.body, "", 1);
        tb_buf_append(&r.hdrs, "", 1);
        json_error_t je;
        r.j = json_loads(r.body.data, 0, &je);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        return r;
}

static void hfree(hres_t *r) {
        json_decref(r->j);
        tb_buf_free(&r->body);
        tb_buf_free(&r->hdrs);
}

/* A response header's value (copied into buf) or NULL. */
static const char *hheader(const hres_t *r, const char *name, char *buf, size_t size) {
        size_t n = strlen(name);
        for (const char *l = r->hdrs.data; l && *l;) {
                const char *e = strstr(l, "\r\n");
                if (!strncasecmp(l, name, n) && l[n] == ':') {
                        const char *v = l + n + 1;
                        while (*v == ' ')
                                v++;
                        size_t len = e ? (size_t)(e - v) : strlen(v);
                        snprintf(buf, size, "%.*s", (int)len, v);
                        return buf;
                }
                l = e ? e + 2 : NULL;
        }
        return NULL;
}

static const char *ecode(const hres_t *r) {
        const char *c = json_string_value(json_object_get(json_object_get(r->j, "error"), "code"));
        return c ? c : "(none)";
}
static const char *efield(const hres_t *r) {
        const char *c =
                json_string_value(json_object_get(json_object_get(r->j, "error"), "field"));
        return c ? c : "";
}
static const char *emsg(const hres_t *r) {
        const char *c =
                json_string_value(json_object_get(json_object_get(r->j, "error"), "message"));
        return c ? c : "";
}

#define expect_status(r, st) \
        cr_assert_eq((r).status, (st), "expected %d, got %ld: %s", (st), (r).status, \
                     (r).body.data)

static char *task_body(const char *name, const char *group, const char *more) {
        char *s = NULL;
        cr_assert_gt(asprintf(&s,
                              "{\"name\":\"%s\",\"script\":\"/bin/true\",\"security_group\":"
                              "\"%s\",\"schedule\":{\"every\":\"1h\"}%s%s}",
                              name, group, more ? "," : "", more ? more : ""),
                     0);
        return s;
}

/* POST a task; asserts 201 and returns its id (malloc'd). */
static char *create(int port, const char *authz, const char *name, const char *group) {
        char *b = task_body(name, group, NULL);
        hres_t r = http(port, "POST", "/v1/tasks", authz, b, NULL);
        free(b);
        expect_status(r, 201);
        char *id = strdup(json_string_value(json_object_get(r.j, "id")));
        hfree(&r);
        return id;
}

/* The value of an unlabelled metric in /metrics (0 when absent). */
static double metric_value(int port, const char *name) {
        hres_t r = http(port, "GET", "/metrics", NULL, NULL, NULL);
        expect_status(r, 200);
        double v = 0;
        size_t n = strlen(name);
        for (const char *p = r.body.data; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (!strncmp(p, name, n) && p[n] == ' ')
                        v = strtod(p + n + 1, NULL);
        hfree(&r);
        return v;
}

static bool wait_http_cond(void *arg) {
        hres_t r = http(*(int *)arg, "GET", "/healthz", NULL, NULL, NULL);
        bool up = r.status != 0;
        hfree(&r);
        return up;
}

/* Stop a daemon with SIGTERM; it must exit 0 (sanitizers report through the
 * exit status too). */
static void stop_clean(pid_t pid) {
        int ws = tbt_daemon_stop(pid, SIGTERM);
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
                  "taskbusd %d did not exit cleanly (status 0x%x): see TBT_KEEP_LOGS", (int)pid,
                  ws);
}

static void wait_http(int port) {
        cr_assert(tbt_wait_until(wait_http_cond, &port, 60000), "API on :%d did not come up",
                  port);
}

/* ---- shared stack ------------------------------------------------------------------ */

static tbt_stack_t st;
static char alice[96], bob[96], carol[96];

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 3});
        tbt_stack_user(&st, "alice", "ops", alice);
        tbt_stack_user(&st, "bob", "dev", bob);
        tbt_stack_user(&st, "carol", "ops,dev", carol);
}

static void teardown(void) {
        tbt_stack_destroy(&st);
        curl_global_cleanup();
}

TestSuite(api, .init = setup, .fini = teardown, .timeout = 400);

/* Start api+commands+projector; returns the pid, *port its API port. */
static pid_t start_full(int *port, char **conf) {
        *port = tbt_free_port();
        *conf = daemon_conf(&st, *port, NULL, NULL);
        pid_t pid = daemon_start(&st, *conf, "api,commands,projector");
        wait_http(*port);
        return pid;
}

/* ---- every status code -------------------------------------------------------------- */

Test(api, status_codes) {
        int port;
        char *conf;
        char hb[256];
        pid_t d1 = start_full(&port, &conf);

        /* public routes; /healthz answers a state checked at most once a
         * second, not a Kafka and PostgreSQL round trip per call */
        hres_t r = http(port, "GET", "/healthz", NULL, NULL, NULL);
        expect_status(r, 200);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "status")), "ok");
        hfree(&r);
        double checks0 = metric_value(port, "taskbus_api_health_checks_total");
        int64_t h0 = tb_mono_us();
        for (int i = 0; i < 30; i++) {
                r = http(port, "GET", "/healthz", NULL, NULL, NULL);
                expect_status(r, 200);
                hfree(&r);
        }
        double secs = (double)(tb_mono_us() - h0) / 1e6;
        double checks = metric_value(port, "taskbus_api_health_checks_total") - checks0;
        cr_assert(checks <= secs + 1.0, "%g health checks for 30 calls in %.2f s", checks, secs);

        /* 401: missing and bad token, both with WWW-Authenticate */
        r = http(port, "GET", "/v1/tasks", NULL, NULL, NULL);
        expect_status(r, 401);
        cr_assert_str_eq(ecode(&r), "unauthenticated");
        cr_assert_not_null(hheader(&r, "WWW-Authenticate", hb, sizeof(hb)));
        cr_assert(!strncmp(hb, "Bearer realm=\"taskbus\"", 22), "%s", hb);
        hfree(&r);
        r = http(port, "POST", "/v1/tasks", "Bearer tbk_0000", "{}", NULL);
        expect_status(r, 401);
        cr_assert(!strncmp(hheader(&r, "WWW-Authenticate", hb, sizeof(hb)), "Bearer realm", 12));
        hfree(&r);

        /* 201 + Location + ETag, and read-your-writes */
        char *b = task_body("first", "ops", NULL);
        r = http(port, "POST", "/v1/tasks", alice, b, NULL);
        free(b);
        expect_status(r, 201);
        const char *id0 = json_string_value(json_object_get(r.j, "id"));
        char id[64];
        snprintf(id, sizeof(id), "%s", id0);
        cr_assert_str_eq(hheader(&r, "ETag", hb, sizeof(hb)), "\"1\"");
        char loc[128];
        snprintf(loc, sizeof(loc), "/v1/tasks/%s", id);
        cr_assert_str_eq(hheader(&r, "Location", hb, sizeof(hb)), loc);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "version")), 1);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "user_id")), "alice");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "created_by")), "alice");
        const char *ca = json_string_value(json_object_get(r.j, "created_at"));
        cr_assert(ca && ca[strlen(ca) - 1] == 'Z', "created_at %s", ca);
        cr_assert(json_is_string(json_object_get(r.j, "next_fire_at")));
        hfree(&r);
        r = http(port, "GET", loc, alice, NULL, NULL);
        expect_status(r, 200);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "version")), 1);
        hfree(&r);

        /* 400: each kind, with the field named */
        struct {
                const char *body, *field, *msg;
        } bad[] = {
                {"{\"name\": \"x\",,}", "", "line 1, column"},
                {"[1,2]", "", "JSON object"},
                {"", "", "empty"},
                {"{\"name\":\"x\",\"script\":\"a\",\"security_group\":\"ops\",\"bogus\":1}",
                 "bogus", "unknown field"},
                {"{\"name\":\"x\",\"script\":\"a\",\"security_group\":\"ops\",\"schedule\":"
                 "{\"cron\":\"0 3 * * *\",\"timezone\":\"Mars/Olympus_Mons\"}}",
                 "schedule.timezone", "Mars"},
                {"{\"name\":\"x\",\"script\":\"a\",\"security_group\":\"ops\",\"schedule\":"
                 "{\"cron\":\"61 * * * *\"}}",
                 "schedule.cron", ""},
                {"{\"name\":\"x\",\"script\":\"a\",\"security_group\":\"ops\",\"schedule\":"
                 "{\"every\":\"1h\"},\"expiry\":\"forever\"}",
                 "expiry", ""},
                {"{\"name\":\"x\",\"script\":\"a\",\"security_group\":\"ops\",\"schedule\":"
                 "{\"once\":\"2001-01-01T00:00:00Z\"}}",
                 "schedule.once", "past"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
                r = http(port, "POST", "/v1/tasks", alice, bad[i].body, NULL);
                cr_assert_eq(r.status, 400, "body %s: %ld %s", bad[i].body, r.status,
                             r.body.data);
                cr_assert_str_eq(ecode(&r), "invalid_argument");
                cr_assert(!strncmp(efield(&r), bad[i].field, strlen(bad[i].field)),
                          "body %s: field '%s' expected '%s'", bad[i].body, efield(&r),
                          bad[i].field);
                cr_assert_not_null(strstr(emsg(&r), bad[i].msg), "body %s: message '%s'",
                                   bad[i].body, emsg(&r));
                hfree(&r);
        }
        char longname[400];
        memset(longname, 'n', 300);
        longname[300] = '\0';
        b = task_body(longname, "ops", NULL);
        r = http(port, "POST", "/v1/tasks", alice, b, NULL);
        free(b);
        expect_status(r, 400);
        cr_assert_str_eq(efield(&r), "name");
        hfree(&r);
        r = http(port, "GET", "/v1/tasks?limit=501", alice, NULL, NULL);
        expect_status(r, 400);
        cr_assert_str_eq(efield(&r), "limit");
        hfree(&r);
        r = http(port, "GET", "/v1/tasks?cursor=%21%21", alice, NULL, NULL);
        expect_status(r, 400);
        cr_assert_str_eq(efield(&r), "cursor");
        hfree(&r);
        r = http(port, "GET", "/v1/tasks?colour=red", alice, NULL, NULL);
        expect_status(r, 400);
        hfree(&r);
        b = task_body("first", "ops", NULL);
        r = http(port, "PUT", loc, alice, b, "If-Match: yesterday");
        expect_status(r, 400);
        cr_assert_str_eq(efield(&r), "If-Match");
        hfree(&r);

        /* 413: a body beyond api.max_body (256 KiB) */
        size_t big = 300 * 1024;
        char *huge = malloc(big + 64);
        snprintf(huge, 64, "{\"name\":\"");
        memset(huge + strlen(huge), 'x', big);
        strcpy(huge + 9 + big, "\"}");
        r = http(port, "POST", "/v1/tasks", alice, huge, NULL);
        free(huge);
        expect_status(r, 413);
        hfree(&r);

        /* 403: another group, user_id not the caller, listing another group */
        char *ob = task_body("theirs", "dev", NULL);
        r = http(port, "POST", "/v1/tasks", alice, ob, NULL);
        free(ob);
        expect_status(r, 403);
        cr_assert_str_eq(efield(&r), "security_group");
        hfree(&r);
        char *ub = task_body("spoof", "ops", "\"user_id\":\"bob\"");
        r = http(port, "POST", "/v1/tasks", alice, ub, NULL);
        free(ub);
        expect_status(r, 403);
        cr_assert_str_eq(efield(&r), "user_id");
        hfree(&r);
        r = http(port, "GET", "/v1/tasks?security_group=dev", alice, NULL, NULL);
        expect_status(r, 403);
        hfree(&r);

        /* 404: unknown task, and a task of another group (GET and writes) */
        r = http(port, "GET", "/v1/tasks/00000000-0000-4000-8000-000000000000", alice, NULL, NULL);
        expect_status(r, 404);
        cr_assert_str_eq(ecode(&r), "not_found");
        hfree(&r);
        r = http(port, "GET", loc, bob, NULL, NULL);
        expect_status(r, 404);
        hfree(&r);
        char *bobs = task_body("first", "dev", NULL);
        r = http(port, "PUT", loc, bob, bobs, NULL);
        free(bobs);
        expect_status(r, 404);
        hfree(&r);
        char p2[160];
        snprintf(p2, sizeof(p2), "%s/pause", loc);
        r = http(port, "POST", p2, bob, NULL, NULL);
        expect_status(r, 404);
        hfree(&r);
        r = http(port, "DELETE", loc, bob, NULL, NULL);
        expect_status(r, 404);
        hfree(&r);
        r = http(port, "GET", "/v1/tasks", bob, NULL, NULL);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "tasks")), 0, "bob sees %s",
                     r.body.data);
        hfree(&r);

        /* 409: If-Match with a stale version; then the right one, read back */
        r = http(port, "PUT", loc, alice, b, "If-Match: \"7\"");
        expect_status(r, 409);
        cr_assert_str_eq(ecode(&r), "conflict");
        hfree(&r);
        free(b);
        b = task_body("renamed", "ops", NULL);
        r = http(port, "PUT", loc, alice, b, "If-Match: \"1\"");
        expect_status(r, 200);
        cr_assert_str_eq(hheader(&r, "ETag", hb, sizeof(hb)), "\"2\"");
        hfree(&r);
        r = http(port, "GET", loc, alice, NULL, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "name")), "renamed");
        hfree(&r);
        free(b);
        /* the seed API's update (POST /tasks/{id}) and aliases; "*" (no
         * condition) is trimmed of spaces like a version is */
        b = task_body("seeded", "ops", NULL);
        char sloc[128];
        snprintf(sloc, sizeof(sloc), "/tasks/%s", id);
        r = http(port, "POST", sloc, alice, b, "If-Match: *   ");
        expect_status(r, 200);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "version")), 3);
        hfree(&r);
        free(b);
        r = http(port, "GET", "/tasks?security_group=ops", alice, NULL, NULL);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "tasks")), 1);
        hfree(&r);

        /* pause / resume / run, each visible right away */
        r = http(port, "POST", p2, alice, NULL, NULL);
        expect_status(r, 200);
        cr_assert(json_is_true(json_object_get(r.j, "paused")));
        cr_assert(json_is_null(json_object_get(r.j, "next_fire_at")));
        hfree(&r);
        r = http(port, "GET", "/v1/tasks?paused=true", alice, NULL, NULL);
        cr_assert_eq(json_array_size(json_object_get(r.j, "tasks")), 1);
        hfree(&r);
        snprintf(p2, sizeof(p2), "%s/resume", loc);
        r = http(port, "POST", p2, alice, NULL, NULL);
        expect_status(r, 200);
        cr_assert(json_is_false(json_object_get(r.j, "paused")));
        hfree(&r);
        snprintf(p2, sizeof(p2), "%s/run", loc);
        r = http(port, "POST", p2, alice, NULL, NULL);
        expect_status(r, 202);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "version")), 6);
        cr_assert(json_is_string(json_object_get(r.j, "command_id")));
        hfree(&r);
        snprintf(p2, sizeof(p2), "%s/history", loc);
        r = http(port, "GET", p2, alice, NULL, NULL);
        expect_status(r, 200);
        json_t *hist = json_object_get(r.j, "history");
        cr_assert_eq(json_array_size(hist), 6, "%s", r.body.data);
        const char *types[] = {"CREATED", "UPDATED", "UPDATED", "PAUSED", "RESUMED",
                               "RUN_REQUESTED"};
        for (size_t i = 0; i < 6; i++)
                cr_assert_str_eq(json_string_value(json_object_get(json_array_get(hist, i),
                                                                   "type")),
                                 types[i]);
        char at1[40];
        snprintf(at1, sizeof(at1), "%s",
                 json_string_value(json_object_get(json_array_get(hist, 0), "at")));
        hfree(&r);
        r = http(port, "GET", p2, bob, NULL, NULL);
        expect_status(r, 404);
        hfree(&r);
        char p3[256];
        snprintf(p3, sizeof(p3), "%s?at=%s", p2, at1);
        r = http(port, "GET", p3, alice, NULL, NULL);
        expect_status(r, 200);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "version")), 1);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.j, "task"),
                                                           "name")),
                         "first");
        hfree(&r);

        /* metrics count the commands */
        r = http(port, "GET", "/metrics", NULL, NULL, NULL);
        expect_status(r, 200);
        cr_assert_not_null(
                strstr(r.body.data,
                       "taskbus_api_commands_total{type=\"CREATE\",outcome=\"accepted\"}"));
        cr_assert_not_null(
                strstr(r.body.data,
                       "taskbus_api_commands_total{type=\"UPDATE\",outcome=\"conflict\"}"));
        hfree(&r);

        /* 204, then gone */
        r = http(port, "DELETE", loc, alice, NULL, NULL);
        expect_status(r, 204);
        hfree(&r);
        r = http(port, "GET", loc, alice, NULL, NULL);
        expect_status(r, 404);
        hfree(&r);

        /* 429 + Retry-After: a second api process with a tiny rate */
        int p429 = tbt_free_port();
        char *c429 = daemon_conf(&st, p429, "rate = 0.2; burst = 2;", NULL);
        pid_t d429 = daemon_start(&st, c429, "api");
        wait_http(p429);
        long got[3];
        for (int i = 0; i < 3; i++) {
                r = http(p429, "GET", "/v1/tasks", carol, NULL, NULL);
                got[i] = r.status;
                if (i == 2) {
                        cr_assert_eq(r.status, 429, "third request: %ld %s", r.status,
                                     r.body.data);
                        cr_assert_not_null(hheader(&r, "Retry-After", hb, sizeof(hb)));
                        cr_assert_geq(atoi(hb), 1);
                        cr_assert_leq(atoi(hb), 5);
                }
                hfree(&r);
        }
        cr_assert_eq(got[0], 200);
        cr_assert_eq(got[1], 200);
        stop_clean(d429);

        /* 503: an api whose Kafka is down refuses writes; nothing is applied */
        int p503 = tbt_free_port();
        char kdown[64];
        snprintf(kdown, sizeof(kdown), "127.0.0.1:%d", tbt_free_port());
        char *c503 = daemon_conf(&st, p503, NULL, kdown);
        pid_t d503 = daemon_start(&st, c503, "api");
        wait_http(p503);
        b = task_body("never", "ops", NULL);
        int64_t t0 = tb_mono_us();
        r = http(p503, "POST", "/v1/tasks", alice, b, NULL);
        expect_status(r, 503);
        cr_assert_str_eq(ecode(&r), "unavailable");
        cr_assert_lt(tb_mono_us() - t0, 15 * 1000000);
        hfree(&r);
        stop_clean(d503);
        r = http(port, "GET", "/v1/tasks?name_prefix=never", alice, NULL, NULL);
        expect_status(r, 200);
        cr_assert_eq(json_array_size(json_object_get(r.j, "tasks")), 0);
        hfree(&r);

        /* 504: without the commands role no reply comes */
        stop_clean(d1);
        int p504 = tbt_free_port();
        char *c504 = daemon_conf(&st, p504, "reply_timeout = \"1500ms\";", NULL);
        pid_t d504 = daemon_start(&st, c504, "api,projector");
        wait_http(p504);
        r = http(p504, "POST", "/v1/tasks", alice, b, NULL);
        expect_status(r, 504);
        cr_assert_str_eq(ecode(&r), "timeout");
        const char *cmd = json_string_value(
                json_object_get(json_object_get(r.j, "error"), "command_id"));
        cr_assert(cmd && strlen(cmd) == 36, "%s", r.body.data);
        hfree(&r);
        free(b);
        stop_clean(d504);
        unlink(conf);
        unlink(c429);
        unlink(c503);
        unlink(c504);
        free(conf);
        free(c429);
        free(c503);
        free(c504);
}

/* ---- pagination, concurrency ---------------------------------------------------------- */

typedef struct creator {
        int port;
        int from, to;
        char **ids;
        atomic_bool *stop;
        int made;
} creator_t;

static void *creator_main(void *arg) {
        creator_t *c = arg;
        char name[64];
        for (int i = c->from; c->stop ? !atomic_load(c->stop) : i < c->to; i++) {
                snprintf(name, sizeof(name), "%s-%04d", c->ids ? "page" : "noise", i);
                char *b = task_body(name, "ops", NULL);
                hres_t r = http(c->port, "POST", "/v1/tasks", alice, b, NULL);
                free(b);
                if (r.status == 201 && c->ids)
                        c->ids[i] = strdup(json_string_value(json_object_get(r.j, "id")));
                if (r.status == 201)
                        c->made++;
                else if (c->ids)
                        fprintf(stderr, "create %s: %ld %s\n", name, r.status, r.body.data);
                hfree(&r);
        }
        return NULL;
}

/* Walk every page of GET /v1/tasks?QUERY (limit=100 unless \p query says);
 * count each id. */
static json_t *walk_pages_of(int port, const char *query) {
        json_t *seen = json_object();
        char path[600];
        snprintf(path, sizeof(path), "/v1/tasks?%s", query);
        for (int pages = 0; pages < 100; pages++) {
                hres_t r = http(port, "GET", path, alice, NULL, NULL);
                expect_status(r, 200);
                size_t i;
                json_t *t;
                json_array_foreach(json_object_get(r.j, "tasks"), i, t) {
                        const char *id = json_string_value(json_object_get(t, "id"));
                        json_t *n = json_object_get(seen, id);
                        json_object_set_new(seen, id,
                                            json_integer(n ? json_integer_value(n) + 1 : 1));
                }
                const char *next = json_string_value(json_object_get(r.j, "next_cursor"));
                if (next)
                        snprintf(path, sizeof(path), "/v1/tasks?%s&cursor=%s", query, next);
                hfree(&r);
                if (!next)
                        break;
        }
        return seen;
}

static json_t *walk_pages(int port) { return walk_pages_of(port, "limit=100"); }

typedef struct racer {
        int port;
        const char *loc;
        pthread_barrier_t *bar;
        long status;
} racer_t;

static void *racer_main(void *arg) {
        racer_t *x = arg;
        char *b = task_body("raced", "ops", NULL);
        pthread_barrier_wait(x->bar);
        hres_t r = http(x->port, "PUT", x->loc, alice, b, "If-Match: \"1\"");
        x->status = r.status;
        hfree(&r);
        free(b);
        return NULL;
}

Test(api, pagination_and_if_match_race) {
        int port;
        char *conf;
        pid_t d = start_full(&port, &conf);
        enum { N = 250, T = 8 };
        char **ids = calloc(N, sizeof(char *));
        pthread_t th[T];
        creator_t cr[T];
        for (int i = 0; i < T; i++) {
                cr[i] = (creator_t){.port = port, .from = i * N / T, .to = (i + 1) * N / T,
                                    .ids = ids};
                pthread_create(&th[i], NULL, creator_main, &cr[i]);
        }
        for (int i = 0; i < T; i++)
                pthread_join(th[i], NULL);
        for (int i = 0; i < N; i++)
                cr_assert_not_null(ids[i], "task %d was not created", i);

        /* every task exactly once */
        json_t *seen = walk_pages(port);
        cr_assert_eq(json_object_size(seen), N);
        for (int i = 0; i < N; i++)
                cr_assert_eq(json_integer_value(json_object_get(seen, ids[i])), 1);
        json_decref(seen);

        /* a name_prefix, in pages of 7: page-0000..page-0099, each exactly once */
        seen = walk_pages_of(port, "limit=7&name_prefix=page-00");
        cr_assert_eq(json_object_size(seen), 100);
        for (int i = 0; i < 100; i++)
                cr_assert_eq(json_integer_value(json_object_get(seen, ids[i])), 1, "page-%04d", i);
        json_decref(seen);

        /* ... also while tasks are being created */
        atomic_bool stop = false;
        creator_t noise = {.port = port, .from = 0, .stop = &stop};
        pthread_t nt;
        pthread_create(&nt, NULL, creator_main, &noise);
        json_t *seen2 = NULL;
        for (int round = 0; round < 3; round++) {
                json_decref(seen2);
                seen2 = walk_pages(port);
                const char *k;
                json_t *v;
                json_object_foreach(seen2, k, v) cr_assert_eq(json_integer_value(v), 1,
                                                              "%s listed twice", k);
                for (int i = 0; i < N; i++)
                        cr_assert_eq(json_integer_value(json_object_get(seen2, ids[i])), 1,
                                     "task %d missing while inserting", i);
        }
        atomic_store(&stop, true);
        pthread_join(nt, NULL);
        cr_assert_gt(noise.made, 0, "no concurrent insert happened");
        json_decref(seen2);

        /* 8 concurrent PUTs with the same If-Match: exactly one wins */
        char loc[128];
        snprintf(loc, sizeof(loc), "/v1/tasks/%s", ids[0]);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, T);
        racer_t rc[T];
        for (int i = 0; i < T; i++) {
                rc[i] = (racer_t){.port = port, .loc = loc, .bar = &bar};
                pthread_create(&th[i], NULL, racer_main, &rc[i]);
        }
        int ok = 0, conflict = 0;
        for (int i = 0; i < T; i++) {
                pthread_join(th[i], NULL);
                ok += rc[i].status == 200;
                conflict += rc[i].status == 409;
        }
        pthread_barrier_destroy(&bar);
        cr_assert_eq(ok, 1, "%d PUTs succeeded", ok);
        cr_assert_eq(conflict, T - 1);
        hres_t r = http(port, "GET", loc, alice, NULL, NULL);
        cr_assert_eq(json_integer_value(json_object_get(r.j, "version")), 2);
        hfree(&r);

        for (int i = 0; i < N; i++)
                free(ids[i]);
        free(ids);
        stop_clean(d);
        unlink(conf);
        free(conf);
}

/* ---- kill -9 of the api in the middle of a command stream --------------------------- */

typedef struct streamer {
        int port;
        int idx;
        json_t *created; /* ids answered 201 */
        pthread_mutex_t *mu;
        atomic_int *ok;
} streamer_t;

static void *streamer_main(void *arg) {
        streamer_t *s = arg;
        char name[64];
        for (int i = 0; i < 10000; i++) {
                snprintf(name, sizeof(name), "kill-%d-%d", s->idx, i);
                char *b = task_body(name, "ops", NULL);
                hres_t r = http(s->port, "POST", "/v1/tasks", alice, b, NULL);
                free(b);
                long status = r.status;
                if (status == 201) {
                        pthread_mutex_lock(s->mu);
                        json_array_append_new(s->created,
                                              json_string(json_string_value(
                                                      json_object_get(r.j, "id"))));
                        pthread_mutex_unlock(s->mu);
                        atomic_fetch_add(s->ok, 1);
                }
                hfree(&r);
                if (status == 0)
                        break; /* the api is gone */
        }
        return NULL;
}

static bool ok_reached(void *arg) { return atomic_load((atomic_int *)arg) >= 30; }

static tbt_stack_t *kst;
static bool projection_caught_up(void *arg) {
        long long want = *(long long *)arg;
        char *v = tbt_sql_value(kst, "SELECT count(*) FROM tasks");
        long long n = v ? atoll(v) : -1;
        free(v);
        return n == want;
}

Test(api, sigkill_mid_stream_applies_each_command_at_most_once) {
        int port = tbt_free_port();
        char *conf = daemon_conf(&st, port, NULL, NULL);
        pid_t core = daemon_start(&st, conf, "commands,projector");
        pid_t api = daemon_start(&st, conf, "api");
        wait_http(port);
        enum { T = 4 };
        pthread_t th[T];
        streamer_t s[T];
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        atomic_int ok = 0;
        json_t *created = json_array();
        for (int i = 0; i < T; i++) {
                s[i] = (streamer_t){.port = port, .idx = i, .created = created, .mu = &mu,
                                    .ok = &ok};
                pthread_create(&th[i], NULL, streamer_main, &s[i]);
        }
        cr_assert(tbt_wait_until(ok_reached, &ok, 120000), "the stream did not start");
        tbt_daemon_stop(api, SIGKILL);
        for (int i = 0; i < T; i++)
                pthread_join(th[i], NULL);

        /* a new api process serves again */
        api = daemon_start(&st, conf, "api");
        wait_http(port);
        char *id = create(port, alice, "after-kill", "ops");

        /* task-events: every command at most once, every 201 present */
        tbt_reader_t *rd = tbt_reader_new(&st, TB_TOPIC_EVENTS, true);
        cr_assert(tbt_reader_wait(rd, "task_id", id, 30000));
        cr_assert(tbt_reader_drain(rd, 30000));
        json_t *cmds = json_object(), *tasks = json_object();
        size_t i;
        json_t *v;
        long long created_events = 0;
        json_array_foreach(tbt_reader_values(rd), i, v) {
                const char *cid = json_string_value(json_object_get(v, "command_id"));
                cr_assert_not_null(cid);
                cr_assert_null(json_object_get(cmds, cid), "command %s applied twice", cid);
                json_object_set_new(cmds, cid, json_true());
                if (!strcmp(json_string_value(json_object_get(v, "type")), "CREATED")) {
                        created_events++;
                        json_object_set_new(tasks,
                                            json_string_value(json_object_get(v, "task_id")),
                                            json_true());
                }
        }
        json_array_foreach(created, i, v) cr_assert_not_null(
                json_object_get(tasks, json_string_value(v)), "201 task %s has no event",
                json_string_value(v));
        cr_assert_geq(created_events, (long long)json_array_size(created) + 1);
        /* the projection holds exactly what the log holds */
        kst = &st;
        cr_assert(tbt_wait_until(projection_caught_up, &created_events, 30000),
                  "projection does not match %lld CREATED events", created_events);
        tbt_reader_free(rd);
        json_decref(cmds);
        json_decref(tasks);
        json_decref(created);
        free(id);
        stop_clean(api);
        stop_clean(core);
        unlink(conf);
        free(conf);
}

/* ---- group quotas ------------------------------------------------------------------ */


Test(api, group_quotas_refuse_with_the_quota_named) {
        int port;
        char *conf, hb[64], err[512];
        tb_store_group_quota_t set = {1, TB_STORE_QUOTA_KEEP, 1.0 / 60}, now;
        cr_assert_eq(tb_identity_group_quota_set(st.conn, "admin:test", "dev", &set, &now, err,
                                                 sizeof(err)),
                     TB_OK, "%s", err);
        pid_t d = start_full(&port, &conf);

        char *id = create(port, bob, "only", "dev");
        char *b = task_body("second", "dev", NULL);
        hres_t r = http(port, "POST", "/v1/tasks", bob, b, NULL);
        free(b);
        expect_status(r, 403);
        cr_assert_str_eq(efield(&r), "max_tasks");
        cr_assert(strstr(emsg(&r), "max_tasks is 1") && strstr(emsg(&r), "'dev'"), "%s",
                  emsg(&r));
        hfree(&r);

        /* moving a task into the full group is refused the same way */
        char *other = create(port, carol, "elsewhere", "ops");
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", other);
        b = task_body("elsewhere", "dev", NULL);
        r = http(port, "PUT", path, carol, b, NULL);
        free(b);
        expect_status(r, 403);
        cr_assert_str_eq(efield(&r), "max_tasks");
        hfree(&r);

        /* RUN_NOW: one a minute for the group, then 429 with when to retry */
        snprintf(path, sizeof(path), "/v1/tasks/%s/run", id);
        r = http(port, "POST", path, bob, NULL, NULL);
        cr_assert(r.status >= 200 && r.status < 300, "first RUN_NOW: %ld %s", r.status,
                  r.body.data);
        hfree(&r);
        r = http(port, "POST", path, bob, NULL, NULL);
        expect_status(r, 429);
        cr_assert_str_eq(efield(&r), "run_now_rate");
        cr_assert(strstr(emsg(&r), "run_now_rate"), "%s", emsg(&r));
        const char *ra = hheader(&r, "Retry-After", hb, sizeof(hb));
        cr_assert(ra && atoi(ra) > 1, "Retry-After says when: %s", ra ? ra : "(none)");
        hfree(&r);
        free(id);
        free(other);
        stop_clean(d);
        free(conf);
}
