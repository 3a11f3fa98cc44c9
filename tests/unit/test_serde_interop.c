/**
 * @file test_serde_interop.c
 * @brief The C serde against an independent Avro implementation: Debian's
 *        python3-avro (run as /usr/bin/python3 tests/interop/avro_interop.py).
 *        (a) C writes every fixture, python checks magic, fingerprint and
 *        values; (b) python writes every fixture, C reads it back.
 *        Missing python3-avro is a failure, not a skip.
 */
#include "interop/fixtures.h"
#include "serde/serde.h"
#include "support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PY "/usr/bin/python3"

static char dir[64];
static char errbuf[512];

static void make_dir(void) {
        snprintf(dir, sizeof(dir), "/tmp/tb-serde-interop-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void) {
        DIR *d = opendir(dir);
        if (!d)
                return;
        struct dirent *e;
        while ((e = readdir(d))) {
                char p[512];
                if (e->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                unlink(p);
        }
        closedir(d);
        rmdir(dir);
}

static void run_python(const char *cmd) {
        char *out = NULL;
        int rc = tbt_run(&out, PY " %s/tests/interop/avro_interop.py %s %s", tbt_source_dir(), cmd,
                         dir);
        cr_log_info("avro_interop.py %s:\n%s", cmd, out ? out : "");
        cr_assert_eq(rc, 0,
                     "avro_interop.py %s failed (exit %d); needs Debian's python3-avro "
                     "(apt-get install python3-avro):\n%s",
                     cmd, rc, out ? out : "");
        free(out);
}

static char *read_file(const char *path, size_t *len) {
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "python did not write %s", path);
        char *buf = malloc(1 << 16);
        *len = fread(buf, 1, 1 << 16, f);
        fclose(f);
        return buf;
}

Test(serde_interop, python_avro_is_installed) {
        char *out = NULL;
        int rc = tbt_run(&out, PY " -c 'import avro, avro.schema, avro.io; print(avro.__version__)'");
        cr_expect_eq(rc, 0, "Debian's python3-avro is required at " PY ": %s", out ? out : "");
        free(out);
}

Test(serde_interop, c_writes_python_reads) {
        make_dir();
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                json_t *arr = tbt_fixture_values(id);
                cr_assert(json_array_size(arr) > 0, "fixtures for %s", tb_serde_name(id));
                size_t i;
                json_t *v;
                json_array_foreach(arr, i, v) {
                        tb_buf_t b = {0};
                        cr_assert_eq(tb_serde_encode(id, v, &b, errbuf, sizeof(errbuf)), TB_OK,
                                     "%s", errbuf);
                        char path[256];
                        snprintf(path, sizeof(path), "%s/%s.%zu.bin", dir, tb_serde_name(id), i);
                        FILE *f = fopen(path, "wb");
                        cr_assert_not_null(f);
                        cr_assert_eq(fwrite(b.data, 1, b.len, f), b.len);
                        fclose(f);
                        tb_buf_free(&b);
                }
                json_decref(arr);
        }
        run_python("read");
        remove_dir();
}

Test(serde_interop, python_writes_c_reads) {
        make_dir();
        run_python("write");
        int checked = 0;
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                json_t *arr = tbt_fixture_values(id);
                size_t i;
                json_t *want;
                json_array_foreach(arr, i, want) {
                        /* spec fingerprint, and python-avro's own (legacy) one */
                        for (int legacy = 0; legacy < 2; legacy++) {
                                char path[256];
                                size_t len = 0;
                                snprintf(path, sizeof(path), "%s/%s.%zu%s.bin", dir,
                                         tb_serde_name(id), i, legacy ? ".legacy" : "");
                                char *data = read_file(path, &len);
                                json_t *got = NULL;
                                tb_schema_id_t gid = TB_SCHEMA_ANY;
                                tb_err_t err = tb_serde_decode(data, len, TB_SCHEMA_ANY, &gid, &got,
                                                               errbuf, sizeof(errbuf));
                                cr_assert_eq(err, TB_OK, "%s: %s", path, errbuf);
                                cr_expect_eq(gid, id, "%s decoded as %d", path, gid);
                                char *a = json_dumps(got, JSON_SORT_KEYS);
                                char *w = json_dumps(want, JSON_SORT_KEYS);
                                cr_expect(json_equal(got, want), "%s:\n got  %s\n want %s", path,
                                          a, w);
                                free(a);
                                free(w);
                                /* and C writes exactly python's bytes (spec fingerprint) */
                                if (!legacy) {
                                        tb_buf_t b = {0};
                                        cr_assert_eq(tb_serde_encode(id, got, &b, errbuf,
                                                                     sizeof(errbuf)),
                                                     TB_OK, "%s", errbuf);
                                        cr_expect(b.len == len && !memcmp(b.data, data, len),
                                                  "%s: C re-encoding differs from python's bytes",
                                                  path);
                                        tb_buf_free(&b);
                                }
                                json_decref(got);
                                free(data);
                                checked++;
                        }
                }
                json_decref(arr);
        }
        cr_expect_geq(checked, 2 * TB_SCHEMA__COUNT);
        remove_dir();
}
