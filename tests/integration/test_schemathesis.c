/**
 * @file test_schemathesis.c
 * @brief The REST API against its contract: schemathesis (pinned version,
 *        installed into a venv under ~/.cache/taskbus when missing) runs
 *        schemas/openapi.yaml against a real taskbusd (api, commands,
 *        projector, archiver) on a private stack, as a user who is also an
 *        admin (api.admin_group, so /v1/admin/ is exercised), with a fixed seed and a
 *        bounded number of examples. Any failure of any check (a 5xx, a
 *        schema-valid request refused, a schema-violating one accepted, a
 *        response off its schema, a 405 without Allow...) fails the test.
 *
 * The hooks in tests/schemathesis/taskbus_hooks.py keep the rules no
 * schema can state (times in the past, cron expressions that never fire,
 * cursors of this API) out of schemathesis's valid cases. Its output goes
 * to a temp directory, never into the source tree.
 */
#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/** The schemathesis release this test is written for (its checks change). */
#define ST_VERSION "4.32.5"
/** Examples per operation and phase, and the seed: the same run each time. */
#define ST_MAX_EXAMPLES 20
#define ST_SEED 1

static tbt_stack_t st;
static pid_t daemon_pid;
static int port;
static char authz[96];

static bool api_up(void *arg) {
        (void)arg;
        tbt_http_res_t r = tbt_http(port, "GET", "/healthz", NULL, NULL);
        bool up = r.status == 200;
        tbt_http_free(&r);
        return up;
}

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        tbt_stack_user(&st, "st", "ops", authz);
        port = tbt_free_port();
        /* the stack's config with a fixed API port and no rate limit in the way */
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; rate = 100000.0; "
                              "burst = 100000; reply_timeout = \"30s\"; "
                              "admin_group = \"ops\"; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n"
                              /* a channel for POST /v1/admin/notify/test (nothing listens) */
                              "notify = { channels = ( { name = \"st\"; type = \"webhook\"; "
                              "url = \"http://127.0.0.1:9/\"; secret_file = \"%s\"; } ); };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka, st.key_path),
                     0);
        char *conf = tbt_write_temp(".conf", text);
        free(text);
        cr_assert_not_null(conf);
        unlink(st.config_path);
        free(st.config_path);
        st.config_path = conf; /* removed by tbt_stack_destroy() */
        daemon_pid = tbt_daemon_start(&st, "api,commands,projector,archiver");
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API did not come up on port %d",
                  port);
        /* the calendar the hooks name in a positive case's task calendars */
        char a[256];
        snprintf(a, sizeof(a), "Authorization: %s", authz);
        const char *h[] = {a, "Content-Type: text/calendar", NULL};
        tbt_http_res_t r = tbt_http_with(port, "PUT", "/v1/calendars/st-hol?security_group=ops", h,
                                         "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
                                         "DTSTART;VALUE=DATE:20261225\r\nSUMMARY:Christmas\r\n"
                                         "END:VEVENT\r\nEND:VCALENDAR\r\n");
        cr_assert_eq(r.status, 201, "PUT the calendar st-hol: %ld %s", r.status, r.body.data);
        tbt_http_free(&r);
}

static void teardown(void) {
        if (daemon_pid > 0) {
                bool sanitizer = false;
                cr_expect(tbt_daemon_end(&st, daemon_pid, &sanitizer),
                          "taskbusd did not exit cleanly");
                cr_expect(!sanitizer, "a sanitizer reported in taskbusd's log");
                daemon_pid = 0;
        }
        tbt_stack_destroy(&st);
}

TestSuite(schemathesis, .init = setup, .fini = teardown, .timeout = 900);

/* The venv with schemathesis ST_VERSION, made when missing. @returns its
 * bin directory (static). */
static const char *st_venv(void) {
        static char bin[1024];
        const char *cache = getenv("TASKBUS_CACHE_DIR");
        char dir[900];
        if (cache && *cache)
                snprintf(dir, sizeof(dir), "%s/st-venv", cache);
        else
                snprintf(dir, sizeof(dir), "%s/.cache/taskbus/st-venv", tbt_env("HOME", "/root"));
        snprintf(bin, sizeof(bin), "%s/bin", dir);
        char *out = NULL;
        int rc = tbt_run(&out, "'%s/schemathesis' --version 2>&1 | grep -q 'version %s$'", bin,
                         ST_VERSION);
        free(out);
        if (rc == 0)
                return bin;
        fprintf(stderr, "test_schemathesis: installing schemathesis %s into %s\n", ST_VERSION,
                dir);
        rc = tbt_run(&out,
                     "python3 -m venv '%s' && '%s/pip' install -q --disable-pip-version-check "
                     "'schemathesis==%s'",
                     dir, bin, ST_VERSION);
        cr_assert_eq(rc, 0,
                     "could not install schemathesis %s into %s (python3-venv and network to "
                     "PyPI needed):\n%s",
                     ST_VERSION, dir, out ? out : "");
        free(out);
        return bin;
}

Test(schemathesis, the_api_keeps_its_openapi_contract) {
        const char *bin = st_venv();
        const char *src = tbt_source_dir();
        char tmp[] = "/tmp/tb-schemathesis-XXXXXX";
        cr_assert_not_null(mkdtemp(tmp));
        char *out = NULL;
        /* run from the temp dir: schemathesis writes .schemathesis/ where it runs */
        int rc = tbt_run(&out,
                         "cd '%s' && PYTHONPATH='%s/tests/schemathesis' "
                         "SCHEMATHESIS_HOOKS=taskbus_hooks TB_ST_REGION=local TB_ST_TOKEN='%s' TB_ST_USER=st "
                         "NO_COLOR=1 "
                         "'%s/schemathesis' --config-file '%s/tests/schemathesis/schemathesis.toml' "
                         "run '%s/schemas/openapi.yaml' --url 'http://127.0.0.1:%d' "
                         "-H 'Authorization: %s' --max-examples %d --seed %d 2>&1",
                         tmp, src, authz + strlen("Bearer "), bin, src, src, port, authz,
                         ST_MAX_EXAMPLES, ST_SEED);
        char *clean = NULL;
        tbt_run(&clean, "rm -rf '%s'", tmp);
        free(clean);
        const char *summary = out ? strstr(out, "=== SUMMARY") : NULL;
        if (rc != 0)
                fprintf(stderr, "%s\n", out ? out : "(no output)");
        else
                fprintf(stderr, "%s\n", summary ? summary : "(no summary)");
        cr_assert_eq(rc, 0, "schemathesis found failures (exit %d); its report is above", rc);
        cr_assert_not_null(summary, "schemathesis printed no summary");
        free(out);
}
