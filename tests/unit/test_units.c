/**
 * @file test_units.c
 * @brief core/lib/units.c (units.h): the compact duration and size formats of
 *        messages and docs, their round trip through the parsers, and the
 *        ISO 8601 format into a short buffer. (The parsers' grammar and
 *        messages are covered in test_config.c, the ISO 8601 form of each
 *        duration in test_task.c.)
 */
#include "units.h"

#include <criterion/criterion.h>
#include <string.h>

Test(units, duration_format) {
        static const struct {
                int64_t ms;
                const char *want;
        } cases[] = {
                {0, "0s"},
                {-1, "negative"},
                {1, "1ms"},
                {500, "500ms"},
                {TB_SEC(30), "30s"},
                {TB_MIN(90), "1h30m"},
                {TB_DAY(1826), "1826d"},
                {TB_DAY(7), "7d"}, /* weeks are parsed, never written */
                {TB_DAY(1) + TB_SEC(1) + 5, "1d1s5ms"},
                {TB_DURATION_MAX_MS, "365000d"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
                char buf[48];
                tb_units_duration_format(cases[i].ms, buf, sizeof(buf));
                cr_assert_str_eq(buf, cases[i].want, "%lld", (long long)cases[i].ms);
        }
}

Test(units, size_format) {
        static const struct {
                int64_t b;
                const char *want;
        } cases[] = {
                {0, "0"},
                {1000, "1000"},
                {TB_KIB(256), "256KiB"},
                {TB_KIB(1536), "1536KiB"},
                {TB_MIB(512), "512MiB"},
                {TB_GIB(16), "16GiB"},
                {TB_TIB(1), "1TiB"},
                {TB_KIB(1) + 1, "1025"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(cases); i++) {
                char buf[48];
                tb_units_size_format(cases[i].b, buf, sizeof(buf));
                cr_assert_str_eq(buf, cases[i].want, "%lld", (long long)cases[i].b);
        }
}

typedef void format_fn(int64_t v, char *buf, size_t size);
typedef tb_err_t parse_fn(const char *s, int64_t *v, char *errstr, size_t errstr_size);

static void assert_reads_back(format_fn *format, parse_fn *parse, int64_t v) {
        char buf[48], errstr[256];
        int64_t back = -1;
        format(v, buf, sizeof(buf));
        cr_assert_eq(parse(buf, &back, errstr, sizeof(errstr)), TB_OK, "%s: %s", buf, errstr);
        cr_assert_eq(back, v, "%s", buf);
}

/* What the doc, the range messages and the normalized task print reads back
 * as the same value. */
Test(units, formats_parse_back) {
        static const int64_t durations[] = {1, 999, TB_SEC(61), TB_HOUR(25) + 7,
                                            TB_DAY(30), TB_DURATION_MAX_MS};
        for (size_t i = 0; i < TB_ARRAY_LEN(durations); i++) {
                assert_reads_back(tb_units_duration_format, tb_units_duration_parse,
                                  durations[i]);
                assert_reads_back(tb_units_duration_format_iso8601, tb_units_duration_parse,
                                  durations[i]);
        }
        static const int64_t sizes[] = {0, 1, TB_KIB(3), TB_MIB(4) + 1, TB_TIB(2)};
        for (size_t i = 0; i < TB_ARRAY_LEN(sizes); i++)
                assert_reads_back(tb_units_size_format, tb_units_size_parse, sizes[i]);
}

Test(units, iso8601_short_buffer) {
        char buf[5];
        memset(buf, 'x', sizeof(buf));
        tb_units_duration_format_iso8601(TB_MIN(90), buf, sizeof(buf));
        cr_assert_str_eq(buf, "PT1H"); /* "PT1H30M" cut to fit, NUL-terminated */
        char one[1] = {'x'};
        tb_units_duration_format_iso8601(TB_SEC(1), one, sizeof(one));
        cr_assert_eq(one[0], '\0');
        char full[48];
        tb_units_duration_format_iso8601(INT64_MIN, full, sizeof(full));
        cr_assert_str_eq(full, "-P106751991167DT7H12M55.808S");
}

/* One grammar for the core and the plugins: the core reads the Docker-style
 * single letters a container plugin's "memory = 512m" uses, and refuses the
 * same strings the header refuses, with the same message. */
Test(units, core_reads_the_plugin_grammar) {
        int64_t b = -1, ms = -1;
        char errstr[256];
        cr_assert_eq(tb_units_size_parse("512m", &b, errstr, sizeof(errstr)), TB_OK, "%s",
                     errstr);
        cr_assert_eq(b, TB_MIB(512));
        cr_assert_eq(tb_units_size_parse("1.5G", &b, errstr, sizeof(errstr)), TB_OK, "%s",
                     errstr);
        cr_assert_eq(b, TB_MIB(1536));
        cr_assert_eq(tb_units_size_parse("1mib", &b, errstr, sizeof(errstr)), TB_ERR_INVALID);
        cr_assert_eq(b, TB_MIB(1536), "output written on error");
        cr_assert_str_eq(errstr, "invalid size \"1mib\": expected a number of bytes, "
                                 "optionally followed by B, KiB, MiB, GiB, TiB (powers of "
                                 "1024) or KB, MB, GB, TB (powers of 1000)");
        cr_assert_eq(tb_units_duration_parse("0.0001", &ms, errstr, sizeof(errstr)),
                     TB_ERR_INVALID);
        cr_assert_str_eq(errstr, "duration \"0.0001\" is finer than a millisecond");
        cr_assert_eq(ms, -1);
}
