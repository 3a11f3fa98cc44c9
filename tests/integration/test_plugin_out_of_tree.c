/**
 * @file test_plugin_out_of_tree.c
 * @brief A plugin author's path, end to end: "install" only the public
 *        header and the pkg-config file (from core/include/taskbus-plugin.pc.in)
 *        into a temporary prefix, build examples/plugin-hello with its own
 *        Makefile against that alone (-std=c99 -pedantic -Werror,
 *        -Wl,--no-undefined), check it exports one symbol and imports no
 *        taskbus symbol, then load it with the host and run tasks on it.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "executor/plugin_host.h"
#include "plugins/tbt_collect.h"
#include "support.h"

static char prefix[] = "/tmp/tbt-oot-XXXXXX";
static bool prefix_made;

static char *slurp(const char *path) {
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "cannot open %s", path);
        tb_buf_t b = {0};
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                tb_buf_append(&b, chunk, n);
        fclose(f);
        tb_buf_append(&b, "", 1);
        return b.data;
}

/* Replace every @name@ in \p text; @returns a malloc'd string. */
static char *substitute(const char *text, const char *const vars[][2], size_t nvars) {
        tb_buf_t out = {0};
        const char *p = text;
        while (*p) {
                bool done = false;
                if (*p == '@') {
                        for (size_t i = 0; i < nvars && !done; i++) {
                                size_t len = strlen(vars[i][0]);
                                if (!strncmp(p + 1, vars[i][0], len) && p[1 + len] == '@') {
                                        tb_buf_printf(&out, "%s", vars[i][1]);
                                        p += len + 2;
                                        done = true;
                                }
                        }
                }
                if (!done)
                        tb_buf_append(&out, p++, 1);
        }
        tb_buf_append(&out, "", 1);
        return out.data;
}

static void install_sdk(void) {
        cr_assert_not_null(mkdtemp(prefix));
        prefix_made = true;
        char *out = NULL;
        int rc = tbt_run(&out, "mkdir -p %s/include/taskbus %s/lib/pkgconfig %s/build && "
                               "cp %s/core/include/taskbus/plugin.h %s/include/taskbus/",
                         prefix, prefix, prefix, tbt_source_dir(), prefix);
        cr_assert_eq(rc, 0, "%s", out ? out : "");
        free(out);

        char *tpl_path = NULL, *pc_path = NULL;
        cr_assert(asprintf(&tpl_path, "%s/core/include/taskbus-plugin.pc.in",
                           tbt_source_dir()) > 0);
        char *tpl = slurp(tpl_path);
        const char *const vars[][2] = {
                {"CMAKE_INSTALL_PREFIX", prefix},
                {"TB_PC_INCLUDEDIR", "${prefix}/include"},
                {"TB_PC_PLUGINDIR", "${prefix}/lib/taskbus/plugins"},
                {"PROJECT_VERSION", TB_VERSION},
        };
        char *pc = substitute(tpl, vars, TB_ARRAY_LEN(vars));
        cr_assert_null(strchr(pc, '@'), "unsubstituted variable in the template:\n%s", pc);
        cr_assert(asprintf(&pc_path, "%s/lib/pkgconfig/taskbus-plugin.pc", prefix) > 0);
        FILE *f = fopen(pc_path, "w");
        cr_assert_not_null(f);
        fputs(pc, f);
        fclose(f);
        free(tpl_path);
        free(pc_path);
        free(tpl);
        free(pc);
}

static void remove_sdk(void) {
        if (prefix_made)
                tbt_run(NULL, "rm -rf %s", prefix);
}

TestSuite(out_of_tree, .timeout = 120);

Test(out_of_tree, hello_builds_with_only_the_public_header_and_runs, .init = install_sdk,
     .fini = remove_sdk) {
        char *out = NULL;
        /* pkg-config resolves the flags from the installed .pc alone. */
        int rc = tbt_run(&out, "PKG_CONFIG_PATH=%s/lib/pkgconfig pkg-config --cflags "
                               "taskbus-plugin", prefix);
        cr_assert_eq(rc, 0, "%s", out);
        char want[128];
        snprintf(want, sizeof(want), "-I%s/include", prefix);
        cr_assert(strstr(out, want), "cflags: %s", out);
        free(out);

        rc = tbt_run(&out, "cd %s/examples/plugin-hello && PKG_CONFIG_PATH=%s/lib/pkgconfig "
                           "make O=%s/build CFLAGS='-std=c99 -pedantic -Wall -Wextra "
                           "-Werror -O1'", tbt_source_dir(), prefix, prefix);
        cr_assert_eq(rc, 0, "out-of-tree build failed:\n%s", out);
        free(out);

        char so[128];
        snprintf(so, sizeof(so), "%s/build/hello.so", prefix);
        /* One exported function, no taskbus symbol needed from the host. */
        rc = tbt_run(&out, "nm -D --defined-only %s | awk '$2 == \"T\" {print $3}'", so);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert_str_eq(out, "tb_plugin_entry\n");
        free(out);
        rc = tbt_run(&out, "nm -D --undefined-only %s | grep -c ' tb_' || true", so);
        cr_assert_str_eq(out, "0\n", "imports host symbols: %s", out);
        free(out);

        tb_plugin_sink_t sink;
        tbt_collect_t *col = tbt_collect_new(&sink);
        tb_plugin_kv_t conf[] = {{"greeting", "Bonjour"}};
        char err[1024] = "";
        tb_plugin_instance_t *pi = NULL;
        cr_assert_eq(tb_plugin_load(so, conf, 1, &sink, &pi, err, sizeof(err)), TB_OK, "%s",
                     err);
        cr_assert_str_eq(tb_plugin_name(pi), "hello");

        tb_plugin_run_t run = {.size = sizeof(run), .run_id = "r-1", .task_id = "task-42",
                               .attempt = 1, .script = "ignored"};
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)0, NULL, err, sizeof(err)), TB_OK,
                     "%s", err);
        cr_assert(tbt_wait_finished(col, 0, 10000));
        cr_assert_eq(col->runs[0].res.status, TB_PLUGIN_RUN_SUCCEEDED);
        char *text = tbt_stream(col, 0, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(text, "Bonjour, task-42! (run r-1, attempt 1)\n");
        free(text);

        /* A long run is cancelled from the host. */
        tb_plugin_kv_t slow[] = {{"delay", "60000"}};
        tb_plugin_run_t run2 = {.size = sizeof(run2), .run_id = "r-2", .task_id = "task-42",
                                .attempt = 1, .options = slow, .n_options = 1};
        tb_plugin_hrun_t *hr = NULL;
        cr_assert_eq(tb_plugin_run_start(pi, &run2, (void *)1, &hr, err, sizeof(err)), TB_OK);
        cr_assert_eq(col->runs[1].finished, 0);
        cr_assert_eq(tb_plugin_run_cancel(hr, "not today", err, sizeof(err)), TB_OK, "%s", err);
        cr_assert(tbt_wait_finished(col, 1, 10000));
        cr_assert_eq(col->runs[1].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert_str_eq(col->runs[1].error, "cancelled: not today");
        tb_plugin_run_release(hr);

        /* A bad option is an infrastructure error, not a failed task. */
        tb_plugin_kv_t bad[] = {{"colour", "red"}};
        run2.run_id = "r-3";
        run2.options = bad;
        cr_assert_eq(tb_plugin_run_start(pi, &run2, (void *)2, NULL, err, sizeof(err)),
                     TB_ERR_IO);
        cr_assert(strstr(err, "unknown executor option 'colour'"), "%s", err);

        tb_plugin_unload(pi, 5000);
        tbt_collect_free(col);
}

Test(out_of_tree, build_tree_pkg_config_file_if_configured) {
        char *pc = NULL;
        cr_assert(asprintf(&pc, "%s/pkgconfig-uninstalled/taskbus-plugin.pc",
                           tbt_build_dir()) > 0);
        struct stat sb;
        if (stat(pc, &sb) != 0) {
                free(pc);
                cr_assert_fail("CMakeLists.txt did not configure the build-tree taskbus-plugin.pc");
        }
        char *out = NULL;
        int rc = tbt_run(&out, "PKG_CONFIG_PATH=%s/pkgconfig-uninstalled pkg-config "
                               "--cflags taskbus-plugin", tbt_build_dir());
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "/core/include"), "%s", out);
        free(out);
        free(pc);
}

Test(out_of_tree, header_example_plugin_builds_and_runs, .init = install_sdk,
     .fini = remove_sdk) {
        /* The complete plugin in the header's documentation must stay true. */
        char *out = NULL;
        int rc = tbt_run(&out, "awk '/@code/{f=1;next}/@endcode/{f=0}f' "
                               "%s/include/taskbus/plugin.h | sed 's/^ \\* \\{0,1\\}//' "
                               "> %s/build/doc.c && cc $(PKG_CONFIG_PATH=%s/lib/pkgconfig "
                               "pkg-config --cflags taskbus-plugin) -std=c11 -pedantic -Wall "
                               "-Wextra -Wno-unused-parameter -Werror -fPIC -shared "
                               "-fvisibility=hidden -Wl,--no-undefined -o %s/build/doc.so "
                               "%s/build/doc.c",
                         prefix, prefix, prefix, prefix, prefix);
        cr_assert_eq(rc, 0, "the header's example does not build:\n%s", out);
        free(out);

        char so[128];
        snprintf(so, sizeof(so), "%s/build/doc.so", prefix);
        tb_plugin_sink_t sink;
        tbt_collect_t *col = tbt_collect_new(&sink);
        char err[1024] = "";
        tb_plugin_instance_t *pi = NULL;
        cr_assert_eq(tb_plugin_load(so, NULL, 0, &sink, &pi, err, sizeof(err)), TB_OK, "%s",
                     err);
        tb_plugin_run_t run = {.size = sizeof(run), .run_id = "r", .task_id = "task-1"};
        cr_assert_eq(tb_plugin_run_start(pi, &run, (void *)0, NULL, err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 0, 5000));
        char *text = tbt_stream(col, 0, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(text, "hello, task-1!\n");
        free(text);
        tb_plugin_unload(pi, 5000);
        tbt_collect_free(col);
}
