/**
 * @file test_plugin_host.c
 * @brief The plugin loader refuses every kind of broken plugin with a clear
 *        message, checks config against the plugin's key table, brokers runs
 *        (exactly one result each, even when the plugin misbehaves), ends runs
 *        itself at their expiry and after a cancel whatever the plugin does,
 *        and contains a crashing plugin in a probe process.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "executor/plugin_host.h"
#include "plugins/tbt_collect.h"
#include "support.h"

static char *fixture(const char *name) {
        char *p = NULL;
        cr_assert(asprintf(&p, "%s/tests/plugins/%s.so", tbt_build_dir(), name) > 0);
        struct stat sb;
        cr_assert(stat(p, &sb) == 0, "fixture %s missing: build the tests first", p);
        return p;
}

/* Load \p name, expecting failure \p code with \p needle in the message. */
static void expect_refused(const char *name, const tb_plugin_kv_t *conf, size_t n,
                           tb_err_t code, const char *needle) {
        char *path = fixture(name);
        char err[2048] = "";
        tb_plugin_instance_t *pi = NULL;
        tb_err_t rc = tb_plugin_load(path, conf, n, NULL, &pi, err, sizeof(err));
        cr_assert_eq(rc, code, "%s: expected %s, got %s: %s", name, tb_err_name(code),
                     tb_err_name(rc), err);
        cr_assert_null(pi);
        cr_assert(strstr(err, needle), "%s: message lacks '%s': %s", name, needle, err);
        cr_assert(strstr(err, path), "%s: message does not name the path: %s", name, err);
        free(path);
}

Test(plugin_host, wrong_abi_major_refused) {
        expect_refused("fx_wrong_major", NULL, 0, TB_ERR_UNSUPPORTED,
                       "plugin 'fx_wrong_major'");
        expect_refused("fx_wrong_major", NULL, 0, TB_ERR_UNSUPPORTED,
                       "ABI major 2, host supports 1");
}

Test(plugin_host, small_descriptor_refused) {
        expect_refused("fx_small_desc", NULL, 0, TB_ERR_UNSUPPORTED,
                       "descriptor field 'size' is 16 bytes, host needs at least");
}

Test(plugin_host, newer_host_vtable_refused) {
        expect_refused("fx_new_minor", NULL, 0, TB_ERR_UNSUPPORTED,
                       "descriptor field 'host_size'");
        expect_refused("fx_new_minor", NULL, 0, TB_ERR_UNSUPPORTED, "ABI 1.1");
}

Test(plugin_host, missing_entry_symbol_refused) {
        expect_refused("fx_no_entry", NULL, 0, TB_ERR_INVALID,
                       "missing entry symbol 'tb_plugin_entry'");
}

Test(plugin_host, failing_init_reports_plugin_reason) {
        expect_refused("fx_init_fails", NULL, 0, TB_ERR_IO,
                       "init failed: cannot reach the frobnicator at frob.invalid:9");
}

Test(plugin_host, directory_refused) {
        char *dir = NULL;
        cr_assert(asprintf(&dir, "%s/tests/plugins", tbt_build_dir()) > 0);
        char err[1024] = "";
        tb_plugin_instance_t *pi = NULL;
        cr_assert_eq(tb_plugin_load(dir, NULL, 0, NULL, &pi, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "not a regular file (it is a directory)"), "%s", err);
        free(dir);
}

Test(plugin_host, fifo_refused_without_blocking) {
        char path[] = "/tmp/tbt-fifo-XXXXXX";
        cr_assert_not_null(mkdtemp(path));
        char fifo[64];
        snprintf(fifo, sizeof(fifo), "%s/evil.so", path);
        cr_assert_eq(mkfifo(fifo, 0600), 0);
        char err[1024] = "";
        tb_plugin_instance_t *pi = NULL;
        cr_assert_eq(tb_plugin_load(fifo, NULL, 0, NULL, &pi, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "not a regular file (it is a FIFO)"), "%s", err);
        unlink(fifo);
        rmdir(path);
}

Test(plugin_host, missing_file_and_non_elf) {
        char err[1024] = "";
        tb_plugin_instance_t *pi = NULL;
        cr_assert_eq(tb_plugin_load("/nonexistent/x.so", NULL, 0, NULL, &pi, err,
                                    sizeof(err)), TB_ERR_NOT_FOUND);
        cr_assert(strstr(err, "cannot stat: No such file or directory"), "%s", err);

        char *junk = tbt_write_temp(".so", "this is not an ELF file\n");
        cr_assert_not_null(junk);
        cr_assert_eq(tb_plugin_load(junk, NULL, 0, NULL, &pi, err, sizeof(err)),
                     TB_ERR_IO);
        cr_assert(strstr(err, "dlopen failed:"), "%s", err);
        cr_assert(strstr(err, "ldd"), "no ldd hint: %s", err);
        unlink(junk);
        free(junk);
}

Test(plugin_host, unknown_config_key_lists_valid_keys) {
        tb_plugin_kv_t conf[] = {{"label", "x"}, {"colour", "red"}};
        expect_refused("fx_echo", conf, 2, TB_ERR_INVALID,
                       "unknown config key 'colour'; valid keys: label, strict, "
                       "delay, note");
}

Test(plugin_host, config_required_type_and_duplicates) {
        tb_plugin_kv_t none[] = {{"strict", "true"}};
        expect_refused("fx_echo", none, 1, TB_ERR_INVALID,
                       "missing required config key 'label'");
        tb_plugin_kv_t badbool[] = {{"label", "x"}, {"strict", "maybe"}};
        expect_refused("fx_echo", badbool, 2, TB_ERR_INVALID,
                       "config key 'strict' must be true or false, got 'maybe'");
        tb_plugin_kv_t baddur[] = {{"label", "x"}, {"delay", "5 parsecs"}};
        expect_refused("fx_echo", baddur, 2, TB_ERR_INVALID,
                       "config key 'delay' must be a duration");
        tb_plugin_kv_t twice[] = {{"label", "x"}, {"label", "y"}};
        expect_refused("fx_echo", twice, 2, TB_ERR_INVALID,
                       "config key 'label' is set twice");
}

static tb_plugin_instance_t *load_echo(tbt_collect_t **col) {
        tb_plugin_sink_t sink;
        *col = tbt_collect_new(&sink);
        char *path = fixture("fx_echo");
        tb_plugin_kv_t conf[] = {{"label", "L"}, {"strict", "yes"}, {"delay", "2m"}};
        char err[1024] = "";
        tb_plugin_instance_t *pi = NULL;
        cr_assert_eq(tb_plugin_load(path, conf, 3, &sink, &pi, err, sizeof(err)), TB_OK,
                     "%s", err);
        free(path);
        cr_assert_str_eq(tb_plugin_name(pi), "fx_echo");
        cr_assert_str_eq(tb_plugin_version(pi), "0.1");
        return pi;
}

static tb_plugin_run_t echo_run(const char *run_id, const tb_plugin_kv_t *opts, size_t n) {
        return (tb_plugin_run_t){.size = sizeof(tb_plugin_run_t),
                                 .run_id = run_id,
                                 .task_id = "task-1",
                                 .attempt = 1,
                                 .script = "echo hi",
                                 .options = opts,
                                 .n_options = n};
}

Test(plugin_host, config_normalised_and_defaults_filled) {
        tbt_collect_t *col;
        tb_plugin_instance_t *pi = load_echo(&col);
        tb_plugin_run_t run = echo_run("r0", NULL, 0);
        char err[1024];
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)0, NULL, err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert(tbt_wait_finished(col, 0, 5000));
        char *out = tbt_stream(col, 0, TB_PLUGIN_STDOUT);
        cr_assert(strstr(out, "label=L strict=true delay=120000 note=(absent) n=3\n"),
                  "%s", out);
        cr_assert(strstr(out, "script=echo hi\n"), "%s", out);
        cr_assert_eq(col->runs[0].res.status, TB_PLUGIN_RUN_SUCCEEDED);
        free(out);
        tb_plugin_unload(pi, 5000);
        tbt_collect_free(col);
}

Test(plugin_host, task_failure_is_a_result_not_an_error) {
        tbt_collect_t *col;
        tb_plugin_instance_t *pi = load_echo(&col);
        tb_plugin_kv_t opts[] = {{"status", "failed"}};
        tb_plugin_run_t run = echo_run("r1", opts, 1);
        char err[1024];
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)1, NULL, err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 1, 5000));
        cr_assert_eq(col->runs[1].res.status, TB_PLUGIN_RUN_FAILED);
        cr_assert_eq(col->runs[1].res.exit_code, 3);
        cr_assert_str_eq(col->runs[1].error, "as requested");
        tb_plugin_unload(pi, 5000);
        tbt_collect_free(col);
}

Test(plugin_host, refused_start_is_an_error_without_result) {
        tbt_collect_t *col;
        tb_plugin_instance_t *pi = load_echo(&col);
        tb_plugin_kv_t opts[] = {{"fail_start", "no such image 'foo'"}};
        tb_plugin_run_t run = echo_run("r2", opts, 1);
        char err[1024] = "";
        tb_plugin_hrun_t *hr = (void *)1;
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)2, &hr, err, sizeof(err)),
                     TB_ERR_IO);
        cr_assert_null(hr);
        cr_assert(strstr(err, "plugin 'fx_echo' could not start run r2: no such image 'foo'"),
                  "%s", err);
        cr_assert_eq(tb_plugin_active_runs(pi), 0);
        cr_assert_eq(col->runs[2].finished, 0);

        tb_plugin_run_t noid = echo_run("", NULL, 0);
        cr_assert_eq(tb_plugin_run_start(pi, &noid, (void *)3, NULL, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "run_id"), "%s", err);
        tb_plugin_unload(pi, 5000);
        tbt_collect_free(col);
}

Test(plugin_host, misbehaving_plugin_gets_exactly_one_result) {
        tbt_collect_t *col;
        tb_plugin_instance_t *pi = load_echo(&col);
        tb_plugin_kv_t twice[] = {{"misbehave", "twice"}};
        tb_plugin_run_t run = echo_run("r4", twice, 1);
        char err[1024];
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)4, NULL, err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 4, 5000));
        cr_assert_eq(col->runs[4].finished, 1);
        cr_assert_eq(col->runs[4].out[TB_PLUGIN_STDERR].len, 0, "late output was delivered");

        tb_plugin_kv_t bad[] = {{"misbehave", "bad_status"}};
        tb_plugin_run_t run5 = echo_run("r5", bad, 1);
        cr_assert_eq(tb_plugin_run_start(pi, &run5, (void *)5, NULL, err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 5, 5000));
        cr_assert_eq(col->runs[5].res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        cr_assert(strstr(col->runs[5].error, "unknown status 99"), "%s", col->runs[5].error);
        tb_plugin_unload(pi, 5000);
        tbt_collect_free(col);
}

Test(plugin_host, cancel_and_unload_deliver_results) {
        tbt_collect_t *col;
        tb_plugin_instance_t *pi = load_echo(&col);
        tb_plugin_kv_t hold[] = {{"hold", "true"}};
        tb_plugin_run_t run = echo_run("r6", hold, 1);
        tb_plugin_run_t run7 = echo_run("r7", hold, 1);
        char err[1024];
        tb_plugin_hrun_t *hr = NULL;
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)6, &hr, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_plugin_run_start(pi, &run7, (void *)7, NULL, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_plugin_active_runs(pi), 2);
        cr_assert_str_eq(tb_plugin_run_id(hr), "r6");
        cr_assert_eq(col->runs[6].finished, 0);

        cr_assert_eq(tb_plugin_run_cancel(hr, "the user said stop", err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert(tbt_wait_finished(col, 6, 5000));
        cr_assert_eq(col->runs[6].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert_str_eq(col->runs[6].error, "cancelled: the user said stop");
        cr_assert_eq(tb_plugin_run_cancel(hr, "again", err, sizeof(err)), TB_ERR_NOT_FOUND);
        cr_assert(strstr(err, "already finished"), "%s", err);
        tb_plugin_run_release(hr);

        /* r7 is still held: unloading cancels it and it still gets a result. */
        tb_plugin_unload(pi, 5000);
        cr_assert_eq(col->runs[7].finished, 1);
        cr_assert_eq(col->runs[7].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert(strstr(col->runs[7].error, "shutting down"), "%s", col->runs[7].error);
        tbt_collect_free(col);
}

Test(plugin_host, crash_in_start_is_contained_by_probe, .timeout = 60) {
        char *path = fixture("fx_crash");
        tb_plugin_run_t run = echo_run("r8", NULL, 0);
        tb_plugin_probe_result_t res;
        char err[1024] = "";
        tb_err_t rc = tb_plugin_probe(path, NULL, 0, &run, 20000, &res, err, sizeof(err));
        cr_assert_eq(rc, TB_ERR_INTERNAL, "%s: %s", tb_err_name(rc), err);
        cr_assert(strstr(err, "plugin 'fx_crash'"), "%s", err);
        cr_assert(strstr(err, "crashed with signal 11"), "%s", err);

        tb_plugin_kv_t ab[] = {{"crash", "abort"}};
        run.options = ab;
        run.n_options = 1;
        rc = tb_plugin_probe(path, NULL, 0, &run, 20000, &res, err, sizeof(err));
        cr_assert_eq(rc, TB_ERR_INTERNAL, "%s", err);
        cr_assert(strstr(err, "crashed with signal 6"), "%s", err);
        free(path);
        /* ...and we are still here to say so. */
}

Test(plugin_host, probe_reports_results_and_load_errors, .timeout = 60) {
        char *path = fixture("fx_echo");
        tb_plugin_kv_t conf[] = {{"label", "P"}};
        tb_plugin_kv_t opts[] = {{"status", "failed"}};
        tb_plugin_run_t run = echo_run("r9", opts, 1);
        tb_plugin_probe_result_t res;
        char err[1024] = "";
        cr_assert_eq(tb_plugin_probe(path, conf, 1, &run, 20000, &res, err, sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(res.status, TB_PLUGIN_RUN_FAILED);
        cr_assert_eq(res.exit_code, 3);
        cr_assert_str_eq(res.error, "as requested");
        cr_assert(res.output.len > 0);
        cr_assert(memmem(res.output.data, res.output.len, "label=P", 7));
        tb_plugin_probe_free(&res);

        /* A load error in the child comes back with its code and text. */
        cr_assert_eq(tb_plugin_probe(path, NULL, 0, &run, 20000, &res, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "missing required config key 'label'"), "%s", err);
        free(path);

        /* A plugin that never reports is killed at the timeout. */
        path = fixture("fx_echo");
        tb_plugin_kv_t hold[] = {{"hold", "true"}};
        run.options = hold;
        cr_assert_eq(tb_plugin_probe(path, conf, 1, &run, 500, &res, err, sizeof(err)),
                     TB_ERR_TIMEOUT);
        cr_assert(strstr(err, "did not finish within 500 ms"), "%s", err);
        free(path);
}

Test(plugin_host, status_names) {
        cr_assert_str_eq(tb_plugin_status_name(TB_PLUGIN_RUN_SUCCEEDED), "succeeded");
        cr_assert_str_eq(tb_plugin_status_name(TB_PLUGIN_RUN_FAILED), "failed");
        cr_assert_str_eq(tb_plugin_status_name(TB_PLUGIN_RUN_TIMED_OUT), "timed_out");
        cr_assert_str_eq(tb_plugin_status_name(TB_PLUGIN_RUN_CANCELLED), "cancelled");
        cr_assert_str_eq(tb_plugin_status_name(TB_PLUGIN_RUN_INFRA_ERROR), "infra_error");
        cr_assert_str_eq(tb_plugin_status_name(42), "unknown");
}

Test(plugin_host, resolve_names_and_paths) {
        char out[256], err[256];
        cr_assert_eq(tb_plugin_resolve("shell", "/opt/tb/plugins", out, sizeof(out), err,
                                       sizeof(err)), TB_OK);
        cr_assert_str_eq(out, "/opt/tb/plugins/shell.so");
        cr_assert_eq(tb_plugin_resolve("./x/y.so", NULL, out, sizeof(out), err, sizeof(err)),
                     TB_OK);
        cr_assert_str_eq(out, "./x/y.so");
        cr_assert_eq(tb_plugin_resolve("shell", NULL, out, sizeof(out), err, sizeof(err)),
                     TB_OK);
        cr_assert(strstr(out, "/plugins/shell.so"), "%s", out);
        cr_assert_eq(tb_plugin_resolve("", NULL, out, sizeof(out), err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert_eq(tb_plugin_resolve("shell", "/d", out, 8, err, sizeof(err)),
                     TB_ERR_INVALID);
        cr_assert(strstr(err, "too long"), "%s", err);
}

/* The guard: a plugin that ignores expiry and cancel still has its runs end,
 * within the operator's kill grace, whatever the task asks. */
Test(plugin_host, guard_ends_runs_the_plugin_ignores, .timeout = 60) {
        tbt_collect_t *col;
        tb_plugin_instance_t *pi = load_echo(&col);
        char err[1024];
        cr_assert_eq(tb_plugin_set_stop_bound(pi, 300, err, sizeof(err)), TB_OK, "%s", err);

        /* Deaf past its expiry, asking a 100,000 h grace: timed out within
         * expiry + 1 s + 300 ms + 1 s (plus a tick). */
        tb_plugin_kv_t deaf[] = {{"deaf", "true"}, {"kill_grace", "100000h"}};
        tb_plugin_run_t r1 = echo_run("g1", deaf, 2);
        int64_t t0 = tb_now_ms();
        r1.expiry_ms = 200; /* the longest the run may last */
        cr_assert_eq(tb_plugin_run_start(pi, &r1, (void *)11, NULL, err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 11, 20000), "the guard never ended the deaf run");
        int64_t took = tb_now_ms() - t0;
        cr_assert_eq(col->runs[11].res.status, TB_PLUGIN_RUN_TIMED_OUT);
        cr_assert(strstr(col->runs[11].error, "did not end run g1 within its kill grace "
                                              "(300 ms) after its expiry"),
                  "%s", col->runs[11].error);
        /* not before expiry + margin + grace + margin */
        cr_assert(took >= 2400 && took < 15000, "ended after %lld ms", (long long)took);

        /* Deaf to a user's cancel: cancelled after the grace the task asked,
         * since it is shorter than the operator's. */
        tb_plugin_kv_t deaf2[] = {{"deaf", "true"}, {"kill_grace", "100ms"}};
        tb_plugin_run_t r2 = echo_run("g2", deaf2, 2);
        tb_plugin_hrun_t *hr = NULL;
        cr_assert_eq(tb_plugin_run_start(pi, &r2, (void *)12, &hr, err, sizeof(err)), TB_OK);
        cr_assert_eq(tb_plugin_run_cancel(hr, "stop", err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 12, 20000));
        cr_assert_eq(col->runs[12].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert(strstr(col->runs[12].error, "(100 ms) after being cancelled"), "%s",
                  col->runs[12].error);
        tb_plugin_run_release(hr);

        /* An obedient plugin cancelled by the guard at expiry: timed_out, not
         * cancelled. */
        tb_plugin_kv_t hold[] = {{"hold", "true"}};
        tb_plugin_run_t r3 = echo_run("g3", hold, 1);
        r3.expiry_ms = 100;
        cr_assert_eq(tb_plugin_run_start(pi, &r3, (void *)13, NULL, err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 13, 20000));
        cr_assert_eq(col->runs[13].res.status, TB_PLUGIN_RUN_TIMED_OUT);
        cr_assert(strstr(col->runs[13].error, "reached its expiry"), "%s", col->runs[13].error);

        /* A run within its expiry is left alone. */
        tb_plugin_run_t r4 = echo_run("g4", hold, 1);
        r4.expiry_ms = 60000;
        tb_plugin_hrun_t *h4 = NULL;
        cr_assert_eq(tb_plugin_run_start(pi, &r4, (void *)14, &h4, err, sizeof(err)), TB_OK);
        usleep(2500 * 1000);
        cr_assert_eq(col->runs[14].finished, 0, "the guard stopped a run within its expiry: %s",
                     col->runs[14].error);
        cr_assert_eq(tb_plugin_run_cancel(h4, "done", err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 14, 5000));
        cr_assert_eq(col->runs[14].res.status, TB_PLUGIN_RUN_CANCELLED);
        tb_plugin_run_release(h4);

        /* Each got exactly one result; nothing is left active. */
        cr_assert_eq(col->runs[11].finished, 1);
        cr_assert_eq(col->runs[12].finished, 1);
        cr_assert_eq(col->runs[13].finished, 1);
        cr_assert_eq(tb_plugin_active_runs(pi), 0);
        tb_plugin_unload(pi, 1000);
        tbt_collect_free(col);
}
