/**
 * @file test_shell.c
 * @brief The shell plugin, loaded through the real host loader: outcomes,
 *        output streaming, expiry and cancel killing the whole process
 *        group, the clean environment, user switching, infra errors, and
 *        750 concurrent runs.
 *
 * The tests run as root, so most runs use os user "nobody" (the user is
 * switched in the child between clone and execve) and the config sets
 * allow_root = true for the few that need root.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "executor/plugin_host.h"
#include "plugins/tbt_collect.h"
#include "support.h"

static tbt_collect_t *col;
static tb_plugin_instance_t *pi;

static tb_plugin_instance_t *load_shell(const tb_plugin_kv_t *conf, size_t n,
                                        char *err, size_t errsz, tb_err_t *rc) {
        char *path = NULL;
        cr_assert(asprintf(&path, "%s/plugins/shell.so", tbt_build_dir()) > 0);
        tb_plugin_sink_t sink;
        if (!col)
                col = tbt_collect_new(&sink);
        else
                sink = (tb_plugin_sink_t){.opaque = col,
                                          .output = tbt_on_output,
                                          .heartbeat = tbt_on_heartbeat,
                                          .finished = tbt_on_finished};
        tb_plugin_instance_t *p = NULL;
        *rc = tb_plugin_load(path, conf, n, &sink, &p, err, errsz);
        free(path);
        return p;
}

static void setup(void) {
        tb_plugin_kv_t conf[] = {{"allow_root", "true"}, {"kill_grace", "1s"},
                                 {"heartbeat_interval", "100ms"}};
        char err[1024] = "";
        tb_err_t rc;
        pi = load_shell(conf, TB_ARRAY_LEN(conf), err, sizeof(err), &rc);
        cr_assert_eq(rc, TB_OK, "%s", err);
}

static void teardown(void) {
        tb_plugin_unload(pi, 10000);
        pi = NULL;
        tbt_collect_free(col);
        col = NULL;
}

TestSuite(shell, .init = setup, .fini = teardown, .timeout = 120);

static tb_plugin_run_t mkrun(const char *run_id, const char *script) {
        return (tb_plugin_run_t){.size = sizeof(tb_plugin_run_t),
                                 .run_id = run_id,
                                 .task_id = "task-7",
                                 .nominal_time_ms = 1767323045000LL, /* 2026-01-02T03:04:05Z */
                                 .attempt = 2,
                                 .script = script,
                                 .workdir = "/tmp",
                                 .os_user = "nobody",
                                 .security_group = "ops"};
}

static void start_ok(int idx, const tb_plugin_run_t *run, tb_plugin_hrun_t **hr) {
        char err[1024] = "";
        tb_err_t rc = tb_plugin_run_start(pi, run, (void *)(intptr_t)idx, hr, err,
                                          sizeof(err));
        cr_assert_eq(rc, TB_OK, "start %s: %s", run->run_id, err);
}

static tbt_runlog_t *run_to_end(int idx, const tb_plugin_run_t *run) {
        start_ok(idx, run, NULL);
        cr_assert(tbt_wait_finished(col, idx, 60000), "run %s never finished", run->run_id);
        return &col->runs[idx];
}

static bool group_gone(pid_t pgid) { return kill(-pgid, 0) < 0 && errno == ESRCH; }

Test(shell, exit_zero_succeeds_with_output) {
        tb_plugin_run_t run = mkrun("ok", "echo hello; echo err >&2; printf partial");
        tbt_runlog_t *l = run_to_end(0, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        cr_assert_eq(l->res.exit_code, 0);
        cr_assert_eq(l->res.signal, 0);
        char *out = tbt_stream(col, 0, TB_PLUGIN_STDOUT);
        char *err = tbt_stream(col, 0, TB_PLUGIN_STDERR);
        cr_assert_str_eq(out, "hello\npartial");
        cr_assert_str_eq(err, "err\n");
        cr_assert(l->res.started_ms > 0 && l->res.finished_ms >= l->res.started_ms);
        free(out);
        free(err);
}

Test(shell, exit_three_is_a_failed_run) {
        tb_plugin_run_t run = mkrun("fail", "echo oops >&2; exit 3");
        tbt_runlog_t *l = run_to_end(1, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_FAILED);
        cr_assert_eq(l->res.exit_code, 3);
        cr_assert_str_eq(l->error, "exited with code 3");
        char *err = tbt_stream(col, 1, TB_PLUGIN_STDERR);
        cr_assert_str_eq(err, "oops\n");
        free(err);
}

Test(shell, killed_by_signal_is_a_failed_run) {
        tb_plugin_run_t run = mkrun("sig", "kill -9 $$");
        tbt_runlog_t *l = run_to_end(2, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_FAILED);
        cr_assert_eq(l->res.signal, SIGKILL);
        cr_assert_eq(l->res.exit_code, -1);
        cr_assert(strstr(l->error, "killed by signal 9"), "%s", l->error);
}

static pid_t pgid_of(int idx) {
        char *out = tbt_stream(col, idx, TB_PLUGIN_STDOUT);
        pid_t p = (pid_t)atoi(out);
        free(out);
        cr_assert(p > 1, "no pid printed");
        return p;
}

Test(shell, expiry_times_out_and_kills_the_group) {
        tb_plugin_run_t run = mkrun("expire", "echo $$; sleep 600 & sleep 600");
        run.expiry_ms = 1000;
        int64_t t0 = tb_mono_us();
        tbt_runlog_t *l = run_to_end(3, &run);
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_TIMED_OUT, "%s", l->error);
        cr_assert(strstr(l->error, "expiry of 1000 ms"), "%s", l->error);
        cr_assert(took_ms >= 1000 && took_ms < 10000, "took %lld ms", (long long)took_ms);
        pid_t pgid = pgid_of(3);
        cr_assert(group_gone(pgid), "process group %d survived the result", (int)pgid);
}

Test(shell, expiry_sigkills_what_ignores_sigterm) {
        tb_plugin_run_t run = mkrun("stubborn", "trap '' TERM; echo $$; sleep 600");
        run.expiry_ms = 300;
        tbt_runlog_t *l = run_to_end(4, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_TIMED_OUT);
        cr_assert(strstr(l->error, "then SIGKILL"), "%s", l->error);
        cr_assert(group_gone(pgid_of(4)));
}

/* A task's kill_grace may shorten the operator's (1 s here), never lengthen
 * it: 100,000 h still means SIGKILL about 1 s after SIGTERM. */
Test(shell, task_grace_is_bounded_by_the_operator) {
        tb_plugin_kv_t opt[] = {{"kill_grace", "100000h"}};
        tb_plugin_run_t run = mkrun("longgrace", "trap '' TERM; echo $$; sleep 600");
        run.options = opt;
        run.n_options = 1;
        run.expiry_ms = 300;
        int64_t t0 = tb_mono_us();
        tbt_runlog_t *l = run_to_end(9, &run);
        int64_t took_ms = (tb_mono_us() - t0) / 1000;
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_TIMED_OUT, "%s", l->error);
        cr_assert(strstr(l->error, "then SIGKILL"), "%s", l->error);
        cr_assert(took_ms < 15000, "took %lld ms: the task's grace was not bounded",
                  (long long)took_ms);
        cr_assert(group_gone(pgid_of(9)));
}

Test(shell, cancel_kills_the_group) {
        tb_plugin_run_t run = mkrun("cancel", "echo $$; sleep 600 & sleep 600");
        tb_plugin_hrun_t *hr = NULL;
        start_ok(5, &run, &hr);
        cr_assert(tbt_wait_output(col, 5, 10000));
        char err[256];
        cr_assert_eq(tb_plugin_run_cancel(hr, "user alice pressed stop", err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert(tbt_wait_finished(col, 5, 20000));
        tbt_runlog_t *l = &col->runs[5];
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert_str_eq(l->error, "cancelled: user alice pressed stop");
        cr_assert(group_gone(pgid_of(5)));
        cr_assert_eq(tb_plugin_run_cancel(hr, "again", err, sizeof(err)), TB_ERR_NOT_FOUND);
        tb_plugin_run_release(hr);
}

Test(shell, leftovers_are_killed_when_the_main_process_exits) {
        tb_plugin_run_t run = mkrun("leftover", "sleep 600 >/dev/null 2>&1 & echo $$");
        tbt_runlog_t *l = run_to_end(6, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        cr_assert(group_gone(pgid_of(6)));
}

Test(shell, environment_is_clean) {
        setenv("TB_LEAK_CANARY", "leaked", 1);
        tb_plugin_kv_t add[] = {{"MY_VAR", "x y"}, {"LANG", "de_DE.UTF-8"}};
        tb_plugin_run_t run = mkrun("env", "env; echo uid=$(id -u) gid=$(id -g) pwd=$(pwd)");
        run.env = add;
        run.n_env = 2;
        tbt_runlog_t *l = run_to_end(7, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 7, TB_PLUGIN_STDOUT);
        static const char *allowed[] = {
                "PATH", "HOME", "LANG", "USER", "LOGNAME", "MY_VAR", "TASKBUS_RUN_ID",
                "TASKBUS_TASK_ID", "TASKBUS_NOMINAL_TIME", "TASKBUS_ATTEMPT",
                /* what /bin/sh itself exports */
                "PWD", "OLDPWD", "SHLVL", "_"};
        int seen = 0;
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                if (!strncmp(line, "uid=", 4)) {
                        cr_assert_str_eq(line, "uid=65534 gid=65534 pwd=/tmp");
                        continue;
                }
                char *eq = strchr(line, '=');
                cr_assert_not_null(eq, "odd env line '%s'", line);
                *eq = '\0';
                bool ok = false;
                for (size_t i = 0; i < TB_ARRAY_LEN(allowed); i++)
                        ok = ok || !strcmp(line, allowed[i]);
                cr_assert(ok, "variable %s leaked into the task", line);
                const char *v = eq + 1;
                if (!strcmp(line, "PATH")) {
                        cr_assert_str_eq(v, "/usr/local/bin:/usr/bin:/bin");
                        seen++;
                }
                if (!strcmp(line, "HOME")) {
                        cr_assert_str_eq(v, "/nonexistent");
                        seen++;
                }
                if (!strcmp(line, "LANG")) {
                        cr_assert_str_eq(v, "de_DE.UTF-8");
                        seen++;
                }
                if (!strcmp(line, "USER")) {
                        cr_assert_str_eq(v, "nobody");
                        seen++;
                }
                if (!strcmp(line, "MY_VAR")) {
                        cr_assert_str_eq(v, "x y");
                        seen++;
                }
                if (!strcmp(line, "TASKBUS_RUN_ID")) {
                        cr_assert_str_eq(v, "env");
                        seen++;
                }
                if (!strcmp(line, "TASKBUS_TASK_ID")) {
                        cr_assert_str_eq(v, "task-7");
                        seen++;
                }
                if (!strcmp(line, "TASKBUS_NOMINAL_TIME")) {
                        cr_assert_str_eq(v, "2026-01-02T03:04:05Z");
                        seen++;
                }
                if (!strcmp(line, "TASKBUS_ATTEMPT")) {
                        cr_assert_str_eq(v, "2");
                        seen++;
                }
        }
        cr_assert_eq(seen, 9, "expected variables missing");
        free(out);
}

Test(shell, ten_mib_of_output_arrives_complete_and_in_order) {
        /* 1048576 lines of 10 bytes: "000000001\n"... */
        tb_plugin_run_t run = mkrun("big", "seq -f %09.0f 1 1048576");
        tbt_runlog_t *l = run_to_end(8, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        tb_buf_t *b = &l->out[TB_PLUGIN_STDOUT];
        cr_assert_eq(b->len, (size_t)10 * 1024 * 1024);
        char want[16];
        for (size_t i = 0; i < 1048576; i++) {
                snprintf(want, sizeof(want), "%09zu\n", i + 1);
                if (memcmp(b->data + i * 10, want, 10) != 0)
                        cr_assert_fail("line %zu is '%.10s', want '%s'", i + 1,
                                       b->data + i * 10, want);
        }
        cr_assert(l->chunks >= 160, "only %d chunks", l->chunks);
        cr_assert(l->max_chunk <= 64 * 1024, "chunk of %zu bytes", l->max_chunk);
}

Test(shell, output_streams_before_the_run_ends) {
        tb_plugin_run_t run = mkrun("stream", "echo early; sleep 3; echo late");
        int64_t t0 = tb_mono_us();
        tbt_runlog_t *l = run_to_end(9, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED);
        int64_t first_ms = (l->first_output_us - t0) / 1000;
        int64_t end_ms = (l->finished_us - t0) / 1000;
        cr_assert(end_ms >= 3000, "finished after %lld ms", (long long)end_ms);
        cr_assert(first_ms < 1500, "first chunk only after %lld ms", (long long)first_ms);
        cr_assert(l->heartbeats >= 5, "only %d heartbeats in 3 s", l->heartbeats);
        char *out = tbt_stream(col, 9, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "early\nlate\n");
        free(out);
}

/* stdout and stderr arrive in the order the task wrote them, each chunk
 * still tagged with its stream. (Two pipes: writes microseconds apart can
 * still be read in either order, as ls's error and a builtin echo right
 * after ls exits were once; writes a process start apart cannot, so each
 * write after the first is its own process.) */
Test(shell, streams_keep_the_order_they_were_written_in) {
        tb_plugin_run_t run = mkrun("order", "echo a; ls /missing-dir-xyz; sh -c 'echo b'; "
                                             "sh -c 'echo c >&2'; sh -c 'echo d'");
        tbt_runlog_t *l = run_to_end(10, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *all = strndup(l->all.data ? l->all.data : "", l->all.len);
        const char *a = strstr(all, "a\n"), *ls = strstr(all, "missing-dir-xyz"),
                   *b = strstr(all, "b\n"), *c = strstr(all, "c\n"), *d = strstr(all, "d\n");
        cr_assert(a && ls && b && c && d, "output: %s", all);
        cr_assert(a < ls && ls < b && b < c && c < d, "out of order: %s", all);
        char *err = tbt_stream(col, 10, TB_PLUGIN_STDERR);
        cr_assert(strstr(err, "missing-dir-xyz") && strstr(err, "c\n") && !strstr(err, "a\n"),
                  "stderr: %s", err);
        free(err);
        free(all);
}

Test(shell, argv_form_runs_without_a_shell) {
        const char *argv[] = {"printf", "%s|%s\\n", "a b", "$HOME", NULL};
        tb_plugin_run_t run = mkrun("argv", NULL);
        run.argv = argv;
        tbt_runlog_t *l = run_to_end(10, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 10, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "a b|$HOME\n");
        free(out);
}

Test(shell, runs_as_root_only_when_allowed) {
        tb_plugin_run_t run = mkrun("root", "id -u");
        run.os_user = "root";
        tbt_runlog_t *l = run_to_end(11, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 11, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "0\n");
        free(out);

        /* A second instance with the default config refuses root. */
        char err[1024] = "";
        tb_err_t rc;
        tb_plugin_instance_t *strict = load_shell(NULL, 0, err, sizeof(err), &rc);
        cr_assert_eq(rc, TB_OK, "%s", err);
        tb_plugin_run_t r2 = mkrun("root2", "id -u");
        r2.os_user = "root";
        cr_assert_eq(tb_plugin_run_start(strict, &r2, (void *)12, NULL, err, sizeof(err)),
                     TB_ERR_IO);
        cr_assert(strstr(err, "refusing to run as root"), "%s", err);
        cr_assert(strstr(err, "allow_root"), "%s", err);
        tb_plugin_unload(strict, 5000);
}

static void expect_infra(const tb_plugin_run_t *run, const char *needle) {
        char err[1024] = "";
        tb_err_t rc = tb_plugin_run_start(pi, run, (void *)20, NULL, err, sizeof(err));
        cr_assert_eq(rc, TB_ERR_IO, "%s: %s", run->run_id, err);
        cr_assert(strstr(err, needle), "message lacks '%s': %s", needle, err);
        cr_assert_eq(col->runs[20].finished, 0);
        cr_assert_eq(tb_plugin_active_runs(pi), 0);
}

Test(shell, bad_workdir_is_an_infra_error) {
        tb_plugin_run_t run = mkrun("wd", "true");
        run.workdir = "/nonexistent/dir";
        expect_infra(&run, "workdir '/nonexistent/dir': No such file or directory");
        run.workdir = "/etc/passwd";
        expect_infra(&run, "workdir '/etc/passwd' is not a directory");
}

Test(shell, unknown_os_user_is_an_infra_error) {
        tb_plugin_run_t run = mkrun("user", "true");
        run.os_user = "tb-no-such-user";
        expect_infra(&run, "unknown os user 'tb-no-such-user'");
}

Test(shell, bad_options_and_commands_are_infra_errors) {
        tb_plugin_kv_t opts[] = {{"colour", "red"}};
        tb_plugin_run_t run = mkrun("opt", "true");
        run.options = opts;
        run.n_options = 1;
        expect_infra(&run, "unknown executor option 'colour'; the shell plugin accepts: "
                           "kill_grace");

        tb_plugin_kv_t env[] = {{"TASKBUS_RUN_ID", "forged"}};
        tb_plugin_run_t r2 = mkrun("env", "true");
        r2.env = env;
        r2.n_env = 1;
        expect_infra(&r2, "environment variable 'TASKBUS_RUN_ID' is reserved");

        const char *missing[] = {"tb-no-such-command", NULL};
        tb_plugin_run_t r3 = mkrun("exec", NULL);
        r3.argv = missing;
        expect_infra(&r3, "argv[0] 'tb-no-such-command' not found in PATH=");

        tb_plugin_run_t r4 = mkrun("empty", NULL);
        expect_infra(&r4, "neither a script nor argv");
}

Test(shell, unload_cancels_running_runs) {
        tb_plugin_run_t run = mkrun("unload", "echo $$; sleep 600");
        start_ok(13, &run, NULL);
        cr_assert(tbt_wait_output(col, 13, 10000));
        tb_plugin_unload(pi, 10000);
        pi = NULL;
        cr_assert_eq(col->runs[13].finished, 1);
        cr_assert_eq(col->runs[13].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert(group_gone(pgid_of(13)));
        /* teardown unloads pi: give it a fresh instance */
        setup();
}

/* ---- the process a run gets: ids, groups, session, descriptors, signals ---- */

/* A user other than root that is a member of some group besides its own
 * (from the group database), or the test fails. */
static void user_with_groups(char *name, size_t size) {
        name[0] = '\0';
        setgrent();
        for (struct group *g; !name[0] && (g = getgrent());) {
                for (char **m = g->gr_mem; m && *m && !name[0]; m++) {
                        struct passwd *pw = getpwnam(*m);
                        if (pw && pw->pw_uid != 0 && pw->pw_gid != g->gr_gid)
                                snprintf(name, size, "%s", *m);
                }
        }
        endgrent();
        cr_assert(name[0], "no non-root user on this host is in a supplementary group: "
                           "add one (useradd -G) for this test");
}

/* Sorted numeric list of \p text's whitespace-separated ids, into \p out. */
static size_t parse_ids(const char *text, long *out, size_t max) {
        size_t n = 0;
        for (const char *p = text; *p && n < max;) {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p) {
                        p++;
                        continue;
                }
                out[n++] = v;
                p = end;
        }
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
                        long t = out[j];
                        out[j] = out[j - 1];
                        out[j - 1] = t;
                }
        return n;
}

/* The line of \p out that starts with \p prefix (its rest), or fails. */
static char *line_after(char *out, const char *prefix) {
        char *p = strstr(out, prefix);
        cr_assert_not_null(p, "no '%s' in: %s", prefix, out);
        p += strlen(prefix);
        char *nl = strchr(p, '\n');
        return strndup(p, nl ? (size_t)(nl - p) : strlen(p));
}

Test(shell, run_as_a_user_has_its_uid_gid_and_groups) {
        char user[64];
        user_with_groups(user, sizeof(user));
        struct passwd *pw = getpwnam(user);
        cr_assert_not_null(pw);
        uid_t uid = pw->pw_uid;
        gid_t gid = pw->pw_gid;
        gid_t want[256];
        int nwant = 256;
        cr_assert(getgrouplist(user, gid, want, &nwant) >= 0);
        cr_assert(nwant >= 2, "%s has no supplementary group", user);

        tb_plugin_run_t run = mkrun("ids", "echo u=$(id -u) g=$(id -g) G=$(id -G); "
                                           "grep -E '^(Uid|Gid|Groups):' /proc/$$/status");
        run.os_user = user;
        tbt_runlog_t *l = run_to_end(14, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 14, TB_PLUGIN_STDOUT);
        char want_ug[64];
        snprintf(want_ug, sizeof(want_ug), "u=%u g=%u G=", (unsigned)uid, (unsigned)gid);
        cr_assert(!strncmp(out, want_ug, strlen(want_ug)), "want '%s...', got: %s", want_ug,
                  out);
        /* real, effective, saved and file-system ids: all the user's */
        char *u = line_after(out, "Uid:"), *g = line_after(out, "Gid:");
        long ids[8];
        cr_assert_eq(parse_ids(u, ids, 8), 4, "Uid: %s", u);
        cr_assert(ids[0] == (long)uid && ids[3] == (long)uid, "Uid: %s", u);
        cr_assert_eq(parse_ids(g, ids, 8), 4, "Gid: %s", g);
        cr_assert(ids[0] == (long)gid && ids[3] == (long)gid, "Gid: %s", g);
        /* `id -G` and the kernel's list: exactly the group database's, none
         * of ours (root's 0) */
        long wsorted[256], got[256];
        char wtext[2048] = "";
        for (int i = 0; i < nwant; i++)
                snprintf(wtext + strlen(wtext), sizeof(wtext) - strlen(wtext), "%u ",
                         (unsigned)want[i]);
        size_t nw = parse_ids(wtext, wsorted, 256);
        char *idG = line_after(out, "G=");
        size_t ng = parse_ids(idG, got, 256);
        cr_assert_eq(ng, nw, "id -G: '%s', want '%s'", idG, wtext);
        for (size_t i = 0; i < nw; i++)
                cr_assert_eq(got[i], wsorted[i], "id -G: '%s', want '%s'", idG, wtext);
        char *kg = line_after(out, "Groups:");
        ng = parse_ids(kg, got, 256);
        cr_assert_eq(ng, nw, "Groups: '%s', want '%s'", kg, wtext);
        for (size_t i = 0; i < nw; i++)
                cr_assert_eq(got[i], wsorted[i], "Groups: '%s', want '%s'", kg, wtext);
        free(u);
        free(g);
        free(idG);
        free(kg);
        free(out);
}

Test(shell, run_as_nobody_keeps_none_of_roots_groups) {
        tb_plugin_run_t run = mkrun("nogroups", "grep -E '^Groups:' /proc/$$/status");
        tbt_runlog_t *l = run_to_end(15, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 15, TB_PLUGIN_STDOUT);
        char *kg = line_after(out, "Groups:");
        long got[8];
        size_t n = parse_ids(kg, got, 8);
        cr_assert(n == 1 && got[0] == 65534, "nobody's groups: '%s'", kg);
        free(kg);
        free(out);
}

Test(shell, run_leads_its_own_session_and_process_group) {
        tb_plugin_run_t run = mkrun("session", "awk '{print $1, $5, $6}' /proc/$$/stat");
        tbt_runlog_t *l = run_to_end(16, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 16, TB_PLUGIN_STDOUT);
        long pid = 0, pgrp = 0, sid = 0;
        cr_assert_eq(sscanf(out, "%ld %ld %ld", &pid, &pgrp, &sid), 3, "%s", out);
        cr_assert(pid > 1 && pgrp == pid && sid == pid,
                  "pid %ld, process group %ld, session %ld: not its own leader", pid, pgrp,
                  sid);
        cr_assert_neq(sid, (long)getsid(0));
        free(out);
}

Test(shell, run_inherits_no_descriptor_beyond_stdio) {
        /* Opened the careless way, without O_CLOEXEC, as a library might. */
        int leak = open("/dev/null", O_RDONLY);
        int lp[2];
        cr_assert(leak > 2 && pipe(lp) == 0);
        /* (no pipeline: the shell's own pipe would show) */
        tb_plugin_run_t run = mkrun("fds", "ls /proc/$$/fd; readlink /proc/$$/fd/0");
        tbt_runlog_t *l = run_to_end(17, &run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 17, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "0\n1\n2\n/dev/null\n");
        free(out);
        close(leak);
        close(lp[0]);
        close(lp[1]);
}

Test(shell, run_gets_default_signals_and_an_empty_mask) {
        /* What the starting thread blocks or ignores must not reach the task. */
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGUSR2);
        sigaddset(&block, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        struct sigaction ign = {.sa_handler = SIG_IGN}, old_usr1, old_hup;
        sigaction(SIGUSR1, &ign, &old_usr1);
        sigaction(SIGHUP, &ign, &old_hup);
        tb_plugin_run_t run = mkrun("signals",
                                     /* exec: dash blocks every signal around
                                      * the commands it forks */
                                     "exec grep -E '^Sig(Blk|Ign):' /proc/self/status");
        start_ok(18, &run, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        sigaction(SIGUSR1, &old_usr1, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        cr_assert(tbt_wait_finished(col, 18, 60000));
        tbt_runlog_t *l = &col->runs[18];
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 18, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
        free(out);
}

/* Root without CAP_SETGID and CAP_SETUID (a unit whose capabilities were cut
 * too far): the switch fails in the child, and start() says who and why. */
Test(shell, user_that_cannot_be_switched_to_is_a_clear_infra_error) {
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct d[2];
        cr_assert_eq(syscall(SYS_capget, &h, d), 0, "capget: %s", strerror(errno));
        d[0].effective &= ~((1u << CAP_SETGID) | (1u << CAP_SETUID));
        d[0].permitted &= ~((1u << CAP_SETGID) | (1u << CAP_SETUID));
        cr_assert_eq(syscall(SYS_capset, &h, d), 0, "capset: %s", strerror(errno));
        cr_assert_eq(geteuid(), 0);

        tb_plugin_run_t run = mkrun("noswitch", "echo should not run");
        expect_infra(&run, "cannot switch to os user 'nobody' (uid 65534, gid 65534, "
                           "1 group(s)): setgroups: Operation not permitted");
        char err[1024] = "";
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)20, NULL, err, sizeof(err)),
                     TB_ERR_IO);
        cr_assert(strstr(err, "CAP_SETUID and CAP_SETGID"), "%s", err);
        /* the failed child was reaped: no zombie left behind */
        cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
        cr_assert_eq(errno, ECHILD);
}

Test(shell, deprecated_setpriv_key_is_accepted_and_ignored) {
        tb_plugin_kv_t conf[] = {{"setpriv", "/nonexistent/setpriv"}};
        char err[1024] = "";
        tb_err_t rc;
        tb_plugin_instance_t *old = load_shell(conf, 1, err, sizeof(err), &rc);
        cr_assert_eq(rc, TB_OK, "%s", err);
        tb_plugin_run_t run = mkrun("setpriv", "id -u");
        cr_assert_eq(tb_plugin_run_start(old, &run, (void *)19, NULL, err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert(tbt_wait_finished(col, 19, 60000));
        cr_assert_eq(col->runs[19].res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s",
                     col->runs[19].error);
        char *out = tbt_stream(col, 19, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "65534\n");
        free(out);
        tb_plugin_unload(old, 5000);
}

#define SCALE_RUNS 750

Test(shell, seven_hundred_fifty_concurrent_runs, .timeout = 240) {
        static char ids[SCALE_RUNS][16];
        int64_t t0 = tb_mono_us();
        for (int i = 0; i < SCALE_RUNS; i++) {
                snprintf(ids[i], sizeof(ids[i]), "scale-%d", i);
                tb_plugin_run_t run = mkrun(ids[i], "echo $TASKBUS_RUN_ID; exec sleep 8");
                start_ok(i, &run, NULL);
        }
        int64_t spawn_ms = (tb_mono_us() - t0) / 1000;
        /* All of them are running at once. */
        cr_assert_eq(tb_plugin_active_runs(pi), SCALE_RUNS,
                     "only %zu active after spawning for %lld ms",
                     tb_plugin_active_runs(pi), (long long)spawn_ms);
        cr_assert(tbt_collect_wait(col, tbt_pred_total, (void *)(intptr_t)SCALE_RUNS, 200000),
                  "only %d of %d finished", col->total_finished, SCALE_RUNS);
        char want[32];
        for (int i = 0; i < SCALE_RUNS; i++) {
                tbt_runlog_t *l = &col->runs[i];
                cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "run %d: %s", i, l->error);
                snprintf(want, sizeof(want), "scale-%d\n", i);
                cr_assert_eq(l->out[TB_PLUGIN_STDOUT].len, strlen(want));
                cr_assert(!memcmp(l->out[TB_PLUGIN_STDOUT].data, want, strlen(want)));
        }
}
