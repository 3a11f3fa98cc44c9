/**
 * @file test_container.c
 * @brief The container plugin against a real `podman system service`
 *        (started by tools/podman-setup on its own socket, with the offline
 *        image localhost/taskbus-test:latest): outcomes, separated streams,
 *        expiry, cancel, the group policy (image allow-list, caps, network),
 *        missing images, removal after every run, and the sweeper cleaning up
 *        after an executor killed mid-run.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "executor/plugin_host.h"
#include "plugins/tbt_collect.h"
#include "support.h"

#define IMAGE "localhost/taskbus-test:latest"
#define ABSENT "localhost/taskbus-absent:1"

static tbt_collect_t *col;
static tb_plugin_instance_t *pi;
static char sock[1100];
static char plugin_path[1024];

static const tb_plugin_kv_t policy[] = {
        {"os_user", "nobody"},
        {"images", IMAGE},
        {"images", ABSENT},
        {"network", "none"},
        {"memory_max", "268435456"},
        {"cpus_max", "1"},
};

/* Start the podman service (idempotent) and note where its socket is. */
static void podman_up(void) {
        char *out = NULL;
        const char *stack = tbt_env("TB_PODMAN_STACK_DIR", NULL);
        char dflt[1000];
        if (!stack) {
                snprintf(dflt, sizeof(dflt), "%s/test-stack", tbt_build_dir());
                stack = dflt;
        }
        int rc = tbt_run(&out, "TASKBUS_STACK_DIR='%s' '%s/tools/podman-setup' service",
                         stack, tbt_source_dir());
        cr_assert_eq(rc, 0, "tools/podman-setup service failed:\n%s", out ? out : "");
        free(out);
        snprintf(sock, sizeof(sock), "%s/podman/podman.sock", stack);
        snprintf(plugin_path, sizeof(plugin_path), "%s/plugins/container.so",
                 tbt_build_dir());
}

static tb_plugin_instance_t *load(tbt_collect_t *c, const char *sweep, char *err,
                                  size_t errsz, tb_err_t *rc) {
        tb_plugin_kv_t conf[] = {{"socket", sock}, {"stop_timeout", "1s"},
                                 {"heartbeat_interval", "200ms"}, {"sweep", sweep},
                                 {"sweep_interval", "1s"}};
        tb_plugin_sink_t sink = {.opaque = c, .output = tbt_on_output,
                                 .heartbeat = tbt_on_heartbeat, .finished = tbt_on_finished};
        tb_plugin_instance_t *p = NULL;
        *rc = tb_plugin_load(plugin_path, conf, TB_ARRAY_LEN(conf), &sink, &p, err, errsz);
        return p;
}

static void setup(void) {
        podman_up();
        tb_plugin_sink_t unused;
        col = tbt_collect_new(&unused);
        char err[1024] = "";
        tb_err_t rc;
        /* The sweeper stays off here so that the crash test can show that a
         * NEW instance cleans up. */
        pi = load(col, "false", err, sizeof(err), &rc);
        cr_assert_eq(rc, TB_OK, "%s", err);
}

static void teardown(void) {
        tb_plugin_unload(pi, 30000);
        pi = NULL;
        tbt_collect_free(col);
        col = NULL;
}

TestSuite(container, .init = setup, .fini = teardown, .timeout = 180);

static tb_plugin_run_t mkrun(const char *run_id, const char *script,
                             const tb_plugin_kv_t *opts, size_t n_opts) {
        return (tb_plugin_run_t){.size = sizeof(tb_plugin_run_t),
                                 .run_id = run_id,
                                 .task_id = "task-c",
                                 .nominal_time_ms = 1767323045000LL,
                                 .attempt = 2,
                                 .script = script,
                                 .options = opts,
                                 .n_options = n_opts,
                                 .security_group = "ops",
                                 .policy = policy,
                                 .n_policy = TB_ARRAY_LEN(policy)};
}

/* Unique per test process: podman's storage outlives test runs. */
static const char *rid(const char *name) {
        static char buf[8][128];
        static int i;
        char *b = buf[i++ % 8];
        snprintf(b, 128, "%s-%d", name, (int)getpid());
        return b;
}

/* How many containers carry run id \p run_id; -1 if the engine cannot say. */
static int containers_of(const char *run_id, const char *state_out) {
        char *out = NULL;
        int rc = tbt_run(&out, "curl -sf -G --unix-socket '%s' "
                         "--data-urlencode 'all=1' --data-urlencode "
                         "'filters={\"label\":[\"io.taskbus.run_id=%s\"]}' "
                         "http://d/v1.41/containers/json", sock, run_id);
        int n = -1;
        if (rc == 0 && out) {
                n = 0;
                for (const char *p = out; (p = strstr(p, "\"Id\"")); p++)
                        n++;
                if (state_out && n == 1 && !strstr(out, state_out))
                        n = -2;
        }
        free(out);
        return n;
}

static tbt_runlog_t *run_to_end(int idx, const tb_plugin_run_t *run) {
        char err[1024] = "";
        tb_err_t rc = tb_plugin_run_start(pi, run, (void *)(intptr_t)idx, NULL, err,
                                          sizeof(err));
        cr_assert_eq(rc, TB_OK, "start %s: %s", run->run_id, err);
        cr_assert(tbt_wait_finished(col, idx, 120000), "run %s never finished",
                  run->run_id);
        cr_assert_eq(containers_of(run->run_id, NULL), 0,
                     "the container of run %s is still there", run->run_id);
        return &col->runs[idx];
}

static const tb_plugin_kv_t img_opt[] = {{"image", IMAGE}};

Test(container, success_with_separate_streams_and_env) {
        tb_plugin_run_t run = mkrun(rid("ok"),
                                    "echo out; echo err >&2; id -u; "
                                    "echo \"$TASKBUS_RUN_ID $TASKBUS_TASK_ID "
                                    "$TASKBUS_NOMINAL_TIME $TASKBUS_ATTEMPT $GREETING\"; "
                                    "pwd; printf partial",
                                    img_opt, 1);
        tb_plugin_kv_t env[] = {{"GREETING", "hi there"}};
        run.env = env;
        run.n_env = 1;
        run.workdir = "/work";
        tbt_runlog_t *l = run_to_end(0, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        cr_assert_eq(l->res.exit_code, 0);
        char *out = tbt_stream(col, 0, TB_PLUGIN_STDOUT);
        char *err = tbt_stream(col, 0, TB_PLUGIN_STDERR);
        char want[512];
        /* os user from the group policy: nobody = 65534 in the test image. */
        snprintf(want, sizeof(want), "out\n65534\n%s task-c 2026-01-02T03:04:05Z 2 hi there\n"
                 "/work\npartial", run.run_id);
        cr_assert_str_eq(out, want);
        cr_assert_str_eq(err, "err\n");
        cr_assert(l->res.started_ms > 0 && l->res.finished_ms >= l->res.started_ms);
        free(out);
        free(err);
}

Test(container, nonzero_exit_is_a_failed_run) {
        tb_plugin_run_t run = mkrun(rid("fail"), "echo oops >&2; exit 3", img_opt, 1);
        tbt_runlog_t *l = run_to_end(1, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_FAILED);
        cr_assert_eq(l->res.exit_code, 3);
        cr_assert_str_eq(l->error, "exited with code 3");
        char *err = tbt_stream(col, 1, TB_PLUGIN_STDERR);
        cr_assert_str_eq(err, "oops\n");
        free(err);
}

Test(container, argv_form_and_big_output_across_frames) {
        /* 200000 bytes: many log frames, split across HTTP chunks. */
        const char *argv[] = {"/bin/sh", "-c", "seq 1 50000 | tr -d '\\n' | head -c 200000; "
                              "echo; echo done >&2", NULL};
        tb_plugin_run_t run = mkrun(rid("argv"), NULL, img_opt, 1);
        run.argv = argv;
        tbt_runlog_t *l = run_to_end(2, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 2, TB_PLUGIN_STDOUT);
        char *err = tbt_stream(col, 2, TB_PLUGIN_STDERR);
        cr_assert_eq(strlen(out), 200001, "got %zu bytes", strlen(out));
        cr_assert(!strncmp(out, "123456789101112", 15));
        cr_assert_str_eq(err, "done\n");
        free(out);
        free(err);
}

Test(container, expiry_stops_the_container_as_timed_out) {
        tb_plugin_run_t run = mkrun(rid("expiry"), "echo started; sleep 600", img_opt, 1);
        run.expiry_ms = 2000;
        int64_t t0 = tb_mono_us();
        tbt_runlog_t *l = run_to_end(3, &run);
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_TIMED_OUT, "%s", l->error);
        cr_assert(strstr(l->error, "expiry of 2000 ms"), "%s", l->error);
        cr_assert(took_ms >= 2000 && took_ms < 60000, "took %lld ms", (long long)took_ms);
        char *out = tbt_stream(col, 3, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "started\n");
        free(out);
        cr_assert(l->heartbeats > 0);
}

Test(container, cancel_stops_the_container) {
        tb_plugin_run_t run = mkrun(rid("cancel"), "echo started; sleep 600", img_opt, 1);
        char err[1024] = "";
        tb_plugin_hrun_t *hr = NULL;
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)(intptr_t)4, &hr, err,
                                         sizeof(err)), TB_OK, "%s", err);
        cr_assert(tbt_wait_output(col, 4, 60000), "no output");
        cr_assert_eq(tb_plugin_run_cancel(hr, "operator said so", err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 4, 60000));
        tb_plugin_run_release(hr);
        cr_assert_eq(col->runs[4].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert_str_eq(col->runs[4].error, "cancelled: operator said so");
        cr_assert_eq(containers_of(run.run_id, NULL), 0);
}

/* A refused start: the host reports the plugin's reason. */
static void expect_refused(tb_plugin_run_t *run, const char *needle) {
        char err[1024] = "";
        tb_err_t rc = tb_plugin_run_start(pi, run, (void *)(intptr_t)9, NULL, err,
                                          sizeof(err));
        cr_assert_eq(rc, TB_ERR_IO, "run %s was not refused", run->run_id);
        cr_assert(strstr(err, needle), "'%s' not in: %s", needle, err);
        cr_assert_eq(containers_of(run->run_id, NULL), 0);
}

Test(container, image_not_allowed_is_refused_clearly) {
        tb_plugin_kv_t o[] = {{"image", "docker.io/library/alpine:3.19"}};
        tb_plugin_run_t run = mkrun(rid("notallowed"), "true", o, 1);
        expect_refused(&run, "image 'docker.io/library/alpine:3.19' is not allowed for "
                             "security group 'ops'");
        expect_refused(&run, "groups.ops.images");
        /* A group with no list may run nothing, and is told how to fix it. */
        tb_plugin_run_t none = mkrun(rid("nolist"), "true", img_opt, 1);
        none.policy = policy;
        none.n_policy = 1; /* os_user only */
        expect_refused(&none, "may run no container images");
}

Test(container, image_not_present_is_an_infra_error) {
        tb_plugin_kv_t o[] = {{"image", ABSENT}};
        tb_plugin_run_t run = mkrun(rid("absent"), "true", o, 1);
        tbt_runlog_t *l = run_to_end(5, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        cr_assert(strstr(l->error, "image '" ABSENT "' is not present"), "%s", l->error);
        cr_assert(strstr(l->error, "never pulls"), "%s", l->error);
}

Test(container, caps_network_and_options_are_enforced) {
        tb_plugin_kv_t mem[] = {{"image", IMAGE}, {"memory", "1g"}};
        tb_plugin_run_t r1 = mkrun(rid("mem"), "true", mem, 2);
        expect_refused(&r1, "exceeds the cap of security group 'ops' (memory_max = "
                            "268435456 bytes)");
        tb_plugin_kv_t cpu[] = {{"image", IMAGE}, {"cpus", "2"}};
        tb_plugin_run_t r2 = mkrun(rid("cpu"), "true", cpu, 2);
        expect_refused(&r2, "cpus_max");
        tb_plugin_kv_t net[] = {{"image", IMAGE}, {"network", "host"}};
        tb_plugin_run_t r3 = mkrun(rid("net"), "true", net, 2);
        expect_refused(&r3, "exceeds what security group 'ops' allows");
        tb_plugin_kv_t bad[] = {{"image", IMAGE}, {"privileged", "true"}};
        tb_plugin_run_t r4 = mkrun(rid("bad"), "true", bad, 2);
        expect_refused(&r4, "unknown executor option 'privileged'");
        tb_plugin_kv_t root[] = {{"image", IMAGE}, {"user", "0:0"}};
        tb_plugin_run_t r5 = mkrun(rid("root"), "true", root, 2);
        expect_refused(&r5, "is root (uid 0)");
        tb_plugin_run_t r6 = mkrun(rid("noimage"), "true", NULL, 0);
        expect_refused(&r6, "executor option 'image' is required");

        /* Within the caps: the limits really reach the container. */
        tb_plugin_kv_t ok[] = {{"image", IMAGE}, {"memory", "64m"}, {"cpus", "0.5"}};
        tb_plugin_run_t r7 = mkrun(rid("limits"),
                                   "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                   "2>/dev/null || cat /sys/fs/cgroup/memory.max", ok, 3);
        tbt_runlog_t *l = run_to_end(6, &r7);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 6, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "67108864\n");
        free(out);
}

/* uid 0 in every spelling the engine takes is refused at start(), before any
 * container exists; a name is resolved in the image, so "toor" (uid 0 in the
 * test image) is refused too, and "app" (uid 1000) runs as 1000. */
Test(container, root_in_any_spelling_is_refused) {
        static const char *const roots[] = {"0", "00", "-0", "+0", "0:0", "000:1000",
                                            "root", "root:root", "root:1000"};
        for (size_t i = 0; i < TB_ARRAY_LEN(roots); i++) {
                tb_plugin_kv_t o[] = {{"image", IMAGE}, {"user", roots[i]}};
                tb_plugin_run_t r = mkrun(rid("r0"), "id -u", o, 2);
                char err[1024] = "";
                tb_err_t rc = tb_plugin_run_start(pi, &r, (void *)(intptr_t)20, NULL, err,
                                                  sizeof(err));
                cr_assert_neq(rc, TB_OK, "user '%s' was accepted", roots[i]);
                cr_assert(strstr(err, "is root (uid 0)"), "user '%s': %s", roots[i], err);
                cr_assert(strstr(err, "allow_root"), "user '%s': %s", roots[i], err);
        }
        tb_plugin_kv_t neg[] = {{"image", IMAGE}, {"user", "-5"}};
        tb_plugin_run_t rn = mkrun(rid("rneg"), "id -u", neg, 2);
        expect_refused(&rn, "a uid is a number from 0 to 2147483647");

        tb_plugin_kv_t toor[] = {{"image", IMAGE}, {"user", "toor"}};
        tb_plugin_run_t rt = mkrun(rid("toor"), "id -u", toor, 2);
        tbt_runlog_t *l = run_to_end(21, &rt);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_FAILED, "%s", l->error);
        cr_assert(strstr(l->error, "'toor' is uid 0 (root) in image"), "%s", l->error);
        char *out = tbt_stream(col, 21, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "", "the container started: %s", out);
        free(out);

        tb_plugin_kv_t app[] = {{"image", IMAGE}, {"user", "app"}};
        tb_plugin_run_t ra = mkrun(rid("app"), "id -u", app, 2);
        l = run_to_end(22, &ra);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        out = tbt_stream(col, 22, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "1000\n");
        free(out);

        tb_plugin_kv_t ghost[] = {{"image", IMAGE}, {"user", "ghost"}};
        tb_plugin_run_t rg = mkrun(rid("ghost"), "id -u", ghost, 2);
        l = run_to_end(23, &rg);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_FAILED, "%s", l->error);
        cr_assert(strstr(l->error, "'ghost' is not in /etc/passwd") ||
                          strstr(l->error, "'ghost' cannot be resolved in image"), "%s", l->error);
}

/* Root needs the operator and the group: a plugin with allow_root = true
 * still refuses uid 0 for a group without allow_root, and runs it for a group
 * with it. */
Test(container, root_needs_plugin_and_group) {
        tb_plugin_kv_t conf[] = {{"socket", sock}, {"stop_timeout", "1s"},
                                 {"allow_root", "true"}};
        tb_plugin_sink_t sink = {.opaque = col, .output = tbt_on_output,
                                 .heartbeat = tbt_on_heartbeat, .finished = tbt_on_finished};
        tb_plugin_instance_t *rootpi = NULL;
        char err[1024] = "";
        cr_assert_eq(tb_plugin_load(plugin_path, conf, TB_ARRAY_LEN(conf), &sink, &rootpi,
                                    err, sizeof(err)), TB_OK, "%s", err);
        tb_plugin_kv_t o[] = {{"image", IMAGE}, {"user", "00"}};
        tb_plugin_run_t r = mkrun(rid("grp0"), "id -u", o, 2);
        tb_err_t rc = tb_plugin_run_start(rootpi, &r, (void *)(intptr_t)24, NULL, err,
                                          sizeof(err));
        cr_assert_neq(rc, TB_OK);
        cr_assert(strstr(err, "security group's policy refuses"), "%s", err);

        tb_plugin_kv_t pol[TB_ARRAY_LEN(policy) + 1];
        memcpy(pol, policy, sizeof(policy));
        pol[TB_ARRAY_LEN(policy)] = (tb_plugin_kv_t){"allow_root", "true"};
        tb_plugin_run_t ok = mkrun(rid("grp0ok"), "id -u", o, 2);
        ok.policy = pol;
        ok.n_policy = TB_ARRAY_LEN(pol);
        rc = tb_plugin_run_start(rootpi, &ok, (void *)(intptr_t)25, NULL, err, sizeof(err));
        cr_assert_eq(rc, TB_OK, "%s", err);
        cr_assert(tbt_wait_finished(col, 25, 120000));
        cr_assert_eq(col->runs[25].res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s",
                     col->runs[25].error);
        char *out = tbt_stream(col, 25, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "0\n");
        free(out);
        tb_plugin_unload(rootpi, 30000);
}

Test(container, network_is_none_by_default) {
        tb_plugin_run_t run = mkrun(rid("net0"), "ls /sys/class/net", img_opt, 1);
        tbt_runlog_t *l = run_to_end(7, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 7, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "lo\n");
        free(out);
}

Test(container, unreachable_engine_fails_init_naming_the_socket) {
        tb_plugin_kv_t conf[] = {{"socket", "/nonexistent/podman.sock"}};
        tb_plugin_sink_t sink = {.opaque = col, .output = tbt_on_output,
                                 .finished = tbt_on_finished};
        tb_plugin_instance_t *p = NULL;
        char err[1024] = "";
        tb_err_t rc = tb_plugin_load(plugin_path, conf, 1, &sink, &p, err, sizeof(err));
        cr_assert_neq(rc, TB_OK);
        cr_assert(strstr(err, "/nonexistent/podman.sock"), "%s", err);
}

/* ---- an executor killed mid-run leaks nothing --------------------------------- */

static void crash_child(int fd, const char *run_id) {
        tbt_collect_t *c = NULL;
        tb_plugin_sink_t unused;
        c = tbt_collect_new(&unused);
        char err[1024];
        tb_err_t rc;
        tb_plugin_instance_t *p = load(c, "false", err, sizeof(err), &rc);
        if (rc != TB_OK)
                _exit(2);
        tb_plugin_run_t run = mkrun(run_id, "echo started; sleep 600", img_opt, 1);
        if (tb_plugin_run_start(p, &run, (void *)(intptr_t)0, NULL, err, sizeof(err)))
                _exit(3);
        if (!tbt_wait_output(c, 0, 60000))
                _exit(4);
        if (write(fd, "R", 1) != 1)
                _exit(5);
        for (;;)
                pause(); /* until SIGKILL */
}

static bool no_containers(void *run_id) { return containers_of(run_id, NULL) == 0; }

TestSuite(container_crash, .timeout = 180);

Test(container_crash, sweeper_removes_containers_of_a_killed_executor) {
        podman_up();
        char run_id[128];
        snprintf(run_id, sizeof(run_id), "crash-%d", (int)getpid());
        int pfd[2];
        cr_assert_eq(pipe(pfd), 0);
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
                close(pfd[0]);
                crash_child(pfd[1], run_id);
        }
        close(pfd[1]);
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        char c = 0;
        cr_assert_eq(poll(&p, 1, 90000), 1, "the child never started its run");
        cr_assert_eq(read(pfd[0], &c, 1), 1, "the child failed before its run started");
        close(pfd[0]);
        cr_assert_eq(containers_of(run_id, "\"State\":\"running\""), 1);

        cr_assert_eq(kill(child, SIGKILL), 0);
        int st;
        cr_assert_eq(waitpid(child, &st, 0), child);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        /* Nobody is left to remove it. */
        cr_assert_eq(containers_of(run_id, NULL), 1);

        /* A new instance's sweeper sees its executor process is gone. */
        tb_plugin_sink_t unused;
        tbt_collect_t *c2 = tbt_collect_new(&unused);
        char err[1024] = "";
        tb_err_t rc;
        tb_plugin_instance_t *p2 = load(c2, "true", err, sizeof(err), &rc);
        cr_assert_eq(rc, TB_OK, "%s", err);
        cr_assert(tbt_wait_until(no_containers, run_id, 60000),
                  "the sweeper did not remove the leaked container");
        tb_plugin_unload(p2, 30000);
        tbt_collect_free(c2);
}
