/**
 * @file test_console_browser.c
 * @brief The web console in a real headless Chromium (Debian's chromium and
 *        chromium-driver, driven by python3-selenium: tests/console/
 *        console_browser.py) against a taskbusd child running every role on
 *        a private stack: users made with `taskbus admin user create`, a
 *        task created through REST seen in the list with its run, the run's
 *        log arriving live, a cookie write without the CSRF header refused,
 *        sign-out leaving the cookie useless, and a user of another group
 *        seeing none of it. Saves docs/img/console-dashboard.png and
 *        docs/img/console-run.png (the README shows them).
 *
 * Missing chromium, chromium-driver or python3-selenium fail the test
 * (tools/test installs them): it never skips.
 */
#include <criterion/criterion.h>
#include <sys/prctl.h>

#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t st;
static int port;
static pid_t daemon_pid;
static char *conf_path;

static bool api_up(void *arg) {
        (void)arg;
        return tbt_http_up(&port);
}

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 10000.0; burst = 10000; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        tbt_stack_t d = st;
        d.config_path = conf_path;
        /* every role: api, commands, projector, scheduler, executor, archiver */
        daemon_pid = tbt_daemon_start(&d, "api,commands,projector,scheduler,executor,archiver");
        cr_assert(tbt_wait_until(api_up, NULL, 90000), "the API did not come up");
}

static void teardown(void) {
        bool sanitizer = false, clean = tbt_daemon_end(&st, daemon_pid, &sanitizer);
        daemon_pid = 0;
        if (conf_path) {
                unlink(conf_path);
                free(conf_path);
                conf_path = NULL;
        }
        tbt_stack_destroy(&st);
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
        cr_assert(clean, "taskbusd did not exit cleanly");
}

TestSuite(console_browser, .init = setup, .fini = teardown, .timeout = 600);

/* `taskbus admin user create NAME --groups G`: the token it prints. */
static void cli_user(const char *name, const char *group, char token[80]) {
        char *out = NULL;
        int rc = tbt_run(&out, "'%s/bin/taskbus' admin user create %s --groups %s --config '%s' 2>&1",
                         tbt_build_dir(), name, group, conf_path);
        cr_assert_eq(rc, 0, "taskbus admin user create %s: %s", name, out ? out : "");
        const char *t = out ? strstr(out, "tbk_") : NULL;
        cr_assert_not_null(t, "no token in: %s", out ? out : "");
        snprintf(token, 80, "%.68s", t);
        free(out);
}

Test(console_browser, sign_in_tasks_live_log_csrf_sign_out_groups) {
        static const char *const need[] = {"/usr/bin/chromium", "/usr/bin/chromedriver"};
        for (size_t i = 0; i < 2; i++)
                cr_assert_eq(access(need[i], X_OK), 0,
                             "%s is missing: apt-get install chromium chromium-driver "
                             "python3-selenium (tools/test installs them)", need[i]);
        char alice[80], bob[80];
        cli_user("alice", "ga", alice);
        cli_user("bob", "gb", bob);
        char *out = NULL;
        int rc = tbt_run(&out,
                         "TB_URL='http://127.0.0.1:%d' TB_ALICE='%s' TB_BOB='%s' "
                         "TB_IMG_DIR='%s/docs/img' TB_SHOT_DIR='%s/console-shots' "
                         "/usr/bin/python3 '%s/tests/console/console_browser.py' 2>&1",
                         port, alice, bob, tbt_source_dir(), tbt_build_dir(), tbt_source_dir());
        fprintf(stderr, "%s\n", out ? out : "(no output)");
        bool passed = out && strstr(out, "PASS console_browser");
        free(out);
        cr_assert_eq(rc, 0, "the browser test failed (exit %d); its output is above", rc);
        cr_assert(passed, "no PASS line");
}
