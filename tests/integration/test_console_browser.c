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

#include "support.h"
#include "support_api.h"

#include <stdio.h>

static tbt_console_t con;

static void setup(void) { tbt_console_start(&con); }

static void teardown(void) { tbt_console_stop(&con); }

TestSuite(console_browser, .init = setup, .fini = teardown, .timeout = 600);

Test(console_browser, sign_in_tasks_live_log_csrf_sign_out_groups) {
        char alice[80], bob[80], env[600];
        tbt_console_user(&con, "alice", "ga", alice);
        tbt_console_user(&con, "bob", "gb", bob);
        snprintf(env, sizeof(env),
                 "TB_ALICE='%s' TB_BOB='%s' TB_IMG_DIR='%s/docs/img' TB_SHOT_DIR='%s/artefacts/console_browser'",
                 alice, bob, tbt_source_dir(), tbt_build_dir());
        tbt_console_browser(&con, "console_browser.py", env, "console_browser");
}
