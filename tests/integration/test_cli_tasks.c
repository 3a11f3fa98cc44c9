/**
 * @file test_cli_tasks.c
 * @brief `taskbus tasks ...` (the CLI binary) against a running API on a
 *        private stack: every command in table and --json form, --help,
 *        exit statuses and the server's messages, the config file, and
 *        two users of different groups who cannot see each other's tasks.
 */
#include "support.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t st;
static pid_t daemon_pid;
static int port;
static char *conf_path;
static char home[64];
static char alice[96], bob[96];

/* Run the CLI as \p authz's user ("Bearer tbk_..."), HOME in a temp dir.
 * @returns the exit status; *out gets stdout+stderr. */
static int cli(char **out, const char *authz, const char *args) {
        const char *tok = authz ? authz + strlen("Bearer ") : "";
        return tbt_run(out, "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' %s/bin/taskbus tasks %s",
                       home, port, tok, tbt_build_dir(), args);
}

static bool api_up(void *arg) {
        char *out = NULL;
        int rc = tbt_run(&out, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/healthz",
                         port);
        bool up = rc == 0 && out && strcmp(out, "000");
        free(out);
        return up;
}

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        tbt_stack_user(&st, "alice", "ops", alice);
        tbt_stack_user(&st, "bob", "dev", bob);
        port = tbt_free_port();
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 10000.0; burst = 10000; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        snprintf(home, sizeof(home), "/tmp/tbt-home-XXXXXX");
        cr_assert_not_null(mkdtemp(home));
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        daemon_pid = fork();
        if (daemon_pid == 0) {
                /* a daemon never outlives its test, even one that failed in setup */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(st.log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                unsetenv("TASKBUS_KAFKA");
                execl(bin, bin, "--config", conf_path, "--roles", "api,commands,projector",
                      (char *)NULL);
                _exit(127);
        }
        cr_assert(tbt_wait_until(api_up, NULL, 60000), "the API did not come up");
}

static void teardown(void) {
        if (daemon_pid > 0) {
                int ws = tbt_daemon_stop(daemon_pid, SIGTERM);
                cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "taskbusd exit 0x%x", ws);
        }
        tbt_stack_destroy(&st);
        if (conf_path)
                unlink(conf_path);
        free(conf_path);
        char *out = NULL;
        tbt_run(&out, "rm -rf '%s'", home);
        free(out);
}

TestSuite(cli_tasks, .init = setup, .fini = teardown, .timeout = 300);

static json_t *parse(const char *out) {
        json_error_t je;
        json_t *j = json_loads(out, 0, &je);
        cr_assert_not_null(j, "not JSON (%s): %s", je.text, out);
        return j;
}

Test(cli_tasks, lifecycle) {
        char *out = NULL;
        /* create: table, then --json */
        int rc = cli(&out, alice,
                     "create --name nightly --script '/usr/bin/cleanupold --old .' --group ops "
                     "--cron '0 3 * * *' --tz Europe/Paris --label env=prod --max-attempts 2");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "name:         nightly"), "%s", out);
        cr_assert_not_null(strstr(out, "cron 0 3 * * * (Europe/Paris)"), "%s", out);
        free(out);
        rc = cli(&out, alice, "create --json --name hourly --script /bin/true --group ops --every 1h");
        cr_assert_eq(rc, 0, "%s", out);
        json_t *t = parse(out);
        char id[64];
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(t, "id")));
        cr_assert_eq(json_integer_value(json_object_get(t, "version")), 1);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(t, "schedule"), "every")),
                         "PT1H");
        json_decref(t);
        free(out);
        /* create from a file on stdin */
        rc = tbt_run(&out,
                     "echo '{\"name\":\"fromfile\",\"script\":\"/bin/true\",\"security_group\":"
                     "\"ops\",\"schedule\":{\"every\":\"5m\"}}' | HOME=%s "
                     "TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' %s/bin/taskbus tasks "
                     "create --file - --json",
                     home, port, alice + 7, tbt_build_dir());
        cr_assert_eq(rc, 0, "%s", out);
        t = parse(out);
        cr_assert_str_eq(json_string_value(json_object_get(t, "name")), "fromfile");
        json_decref(t);
        free(out);

        /* list: table and --json */
        rc = cli(&out, alice, "list");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "ID"), "%s", out);
        cr_assert_not_null(strstr(out, id), "%s", out);
        cr_assert_not_null(strstr(out, "nightly"), "%s", out);
        free(out);
        rc = cli(&out, alice, "list --json --label env=prod");
        cr_assert_eq(rc, 0, "%s", out);
        t = parse(out);
        cr_assert_eq(json_array_size(json_object_get(t, "tasks")), 1, "%s", out);
        json_decref(t);
        free(out);

        /* get, update (flags edit the current task) */
        char args[256];
        snprintf(args, sizeof(args), "get %s", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "hourly"), "%s", out);
        free(out);
        snprintf(args, sizeof(args), "update %s --name renamed --json", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 0, "%s", out);
        t = parse(out);
        cr_assert_str_eq(json_string_value(json_object_get(t, "name")), "renamed");
        cr_assert_eq(json_integer_value(json_object_get(t, "version")), 2);
        json_decref(t);
        free(out);
        snprintf(args, sizeof(args), "update %s --name stale --if-match 1", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "taskbus: 409 conflict:"), "%s", out);
        free(out);

        /* pause / resume / run */
        snprintf(args, sizeof(args), "pause %s", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "paused task"), "%s", out);
        free(out);
        snprintf(args, sizeof(args), "get %s --json", id);
        rc = cli(&out, alice, args);
        t = parse(out);
        cr_assert(json_is_true(json_object_get(t, "paused")));
        json_decref(t);
        free(out);
        snprintf(args, sizeof(args), "resume %s", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "resumed task"), "%s", out);
        free(out);
        snprintf(args, sizeof(args), "run %s", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "run requested"), "%s", out);
        free(out);

        /* bob (group dev) cannot see or change alice's task */
        snprintf(args, sizeof(args), "get %s", id);
        rc = cli(&out, bob, args);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "taskbus: 404 not_found:"), "%s", out);
        free(out);
        snprintf(args, sizeof(args), "delete %s", id);
        rc = cli(&out, bob, args);
        cr_assert_eq(rc, 1, "%s", out);
        free(out);
        rc = cli(&out, bob, "list --json");
        cr_assert_eq(rc, 0, "%s", out);
        t = parse(out);
        cr_assert_eq(json_array_size(json_object_get(t, "tasks")), 0, "%s", out);
        json_decref(t);
        free(out);
        rc = cli(&out, bob, "list --group ops");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "taskbus: 403 forbidden:"), "%s", out);
        free(out);
        rc = cli(&out, bob, "create --name x --script y --group ops --every 1m");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "403 forbidden"), "%s", out);
        free(out);

        /* delete, then it is gone with a clear message */
        snprintf(args, sizeof(args), "delete %s", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_not_null(strstr(out, "deleted task"), "%s", out);
        free(out);
        snprintf(args, sizeof(args), "get %s", id);
        rc = cli(&out, alice, args);
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "taskbus: 404 not_found: no task"), "%s", out);
        free(out);
}

Test(cli_tasks, errors_help_and_config_file) {
        char *out = NULL;
        /* the server's validation message and exit 1 */
        int rc = cli(&out, alice, "create --name x --script y --group ops --cron 'not a cron'");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "taskbus: 400 invalid_argument: schedule.cron"), "%s", out);
        free(out);
        /* usage errors: exit 2 */
        rc = cli(&out, alice, "get");
        cr_assert_eq(rc, 2, "%s", out);
        free(out);
        rc = cli(&out, alice, "create");
        cr_assert_eq(rc, 2, "%s", out);
        free(out);
        rc = cli(&out, alice, "frobnicate");
        cr_assert_eq(rc, 2, "%s", out);
        free(out);
        /* an id the API could never hold: the API's own rule, checked before any request */
        rc = cli(&out, alice, "get 'a/b'");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert_not_null(strstr(out, "task ID: '/' at position 2 is not allowed"), "%s", out);
        free(out);
        char longid[200];
        memset(longid, 'x', 129);
        snprintf(longid + 129, sizeof(longid) - 129, " --json");
        char args0[256];
        snprintf(args0, sizeof(args0), "delete %s", longid);
        rc = cli(&out, alice, args0);
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert_not_null(strstr(out, "129 characters, at most 128 allowed"), "%s", out);
        free(out);
        rc = cli(&out, alice, "create --name x --every 1m --once 2030-01-01T00:00:00Z");
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert_not_null(strstr(out, "exclusive"), "%s", out);
        free(out);
        /* a bad token */
        rc = cli(&out, "Bearer tbk_nope", "list");
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "taskbus: 401 unauthenticated"), "%s", out);
        free(out);
        /* --help on every command */
        const char *cmds[] = {"create", "list", "get", "update", "delete", "pause", "resume", "run"};
        char args[64], want[64];
        for (size_t i = 0; i < TB_ARRAY_LEN(cmds); i++) {
                snprintf(args, sizeof(args), "%s --help", cmds[i]);
                rc = cli(&out, NULL, args);
                cr_assert_eq(rc, 0, "%s: %s", cmds[i], out);
                snprintf(want, sizeof(want), "usage: taskbus tasks %s", cmds[i]);
                cr_assert_not_null(strstr(out, want), "%s", out);
                free(out);
        }
        rc = cli(&out, NULL, "--help");
        cr_assert_eq(rc, 0, "%s", out);
        free(out);
        /* the API down: a clear message */
        rc = tbt_run(&out, "HOME=%s TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN=x %s/bin/taskbus tasks list",
                     home, tbt_free_port(), tbt_build_dir());
        cr_assert_eq(rc, 1, "%s", out);
        cr_assert_not_null(strstr(out, "cannot reach the API"), "%s", out);
        free(out);
        /* ~/.config/taskbus/config instead of the environment */
        char *dir = NULL;
        cr_assert_gt(asprintf(&dir, "%s/.config/taskbus", home), 0);
        rc = tbt_run(&out, "mkdir -p %s && printf 'api = \"http://127.0.0.1:%d\";\\ntoken = \"%s\";\\n' > %s/config",
                     dir, port, alice + 7, dir);
        cr_assert_eq(rc, 0, "%s", out);
        free(out);
        rc = tbt_run(&out, "env -u TASKBUS_API -u TASKBUS_TOKEN HOME=%s %s/bin/taskbus tasks list --json",
                     home, tbt_build_dir());
        cr_assert_eq(rc, 0, "%s", out);
        json_t *t = parse(out);
        cr_assert(json_is_array(json_object_get(t, "tasks")));
        json_decref(t);
        free(out);
        free(dir);
}
