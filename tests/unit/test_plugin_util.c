/**
 * @file test_plugin_util.c
 * @brief core/include/taskbus/plugin_util.h: the unit grammar (every size
 *        suffix, fractions, overflow, garbage, exact values and messages,
 *        and agreement with the core's parsers on everything the core
 *        accepts), the clocks, the error buffer, the key/value lookups, the
 *        environment helpers, cancel requests, the result helpers, and that the header builds
 *        on its own as C99 and C11 with -pedantic in a plugin linked with
 *        -Wl,--no-undefined.
 */
#include <taskbus/plugin_util.h>

#include "config/config.h"
#include "support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KIB ((int64_t)1 << 10)
#define MIB ((int64_t)1 << 20)
#define GIB ((int64_t)1 << 30)
#define TIB ((int64_t)1 << 40)
#define SEC ((int64_t)1000)
#define DAY (86400 * SEC)

/* ---- sizes ------------------------------------------------------------------- */

static int64_t size_ok(const char *s) {
        int64_t b = -1;
        char err[256] = "";
        cr_assert_eq(tb_pu_parse_size(s, &b, err, sizeof(err)), TB_PLUGIN_OK, "\"%s\": %s",
                     s, err);
        return b;
}

static void size_bad(const char *s, const char *msg) {
        int64_t b = 12345;
        char err[256] = "";
        cr_assert_eq(tb_pu_parse_size(s, &b, err, sizeof(err)), TB_PLUGIN_ERROR,
                     "\"%s\" was accepted", s ? s : "(null)");
        cr_assert_eq(b, 12345, "\"%s\": output written on error", s ? s : "(null)");
        if (msg)
                cr_assert_str_eq(err, msg);
        else
                cr_assert_neq(err[0], '\0', "\"%s\": no reason given", s);
}

#define INVALID_SIZE(s)                                                                \
        "invalid size \"" s "\": expected a number of bytes, optionally followed by B, " \
        "KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)"

Test(plugin_util, size_every_suffix) {
        static const struct {
                const char *s;
                int64_t want;
        } ok[] = {
                {"0", 0},          {"512", 512},      {"512B", 512},      {"512b", 512},
                {"1KiB", KIB},     {"1MiB", MIB},     {"1GiB", GIB},      {"1TiB", TIB},
                {"1KB", 1000},     {"1MB", 1000000},  {"1GB", 1000000000},
                {"1TB", 1000000000000},
                {"1k", KIB},       {"1K", KIB},       {"1m", MIB},        {"1M", MIB},
                {"1g", GIB},       {"1G", GIB},       {"1t", TIB},        {"1T", TIB},
                {"512m", 512 * MIB}, {"256m", 256 * MIB}, {"64MiB", 64 * MIB},
                {"10 MiB", 10 * MIB}, {"10  m", 10 * MIB}, {"7 ", 7},
        };
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                cr_assert_eq(size_ok(ok[i].s), ok[i].want, "%s", ok[i].s);
}

Test(plugin_util, size_fractions_are_exact) {
        cr_assert_eq(size_ok("1.5g"), 1610612736);
        cr_assert_eq(size_ok("1.5KiB"), 1536);
        cr_assert_eq(size_ok("0.5k"), 512);
        cr_assert_eq(size_ok("0.25M"), 262144);
        cr_assert_eq(size_ok("2.5KB"), 2500);
        cr_assert_eq(size_ok("0.001KB"), 1);
        cr_assert_eq(size_ok("1.000000000000k"), KIB); /* zeros past 9 digits */
        cr_assert_eq(size_ok("0.000000001TB"), 1000);
        cr_assert_eq(size_ok("1.5000000000T"), TIB + TIB / 2);
        cr_assert_eq(size_ok("1.999KB"), 1999);
        size_bad("1.3B", "size \"1.3B\" is not a whole number of bytes");
        size_bad("0.1k", "size \"0.1k\" is not a whole number of bytes");
        size_bad("0.0001KB", "size \"0.0001KB\" is not a whole number of bytes");
        size_bad("1.0000000001k", "size \"1.0000000001k\" is not a whole number of bytes");
        size_bad("1.5", "size \"1.5\" is not a whole number of bytes");
}

Test(plugin_util, size_overflow) {
        cr_assert_eq(size_ok("9223372036854775807"), INT64_MAX);
        cr_assert_eq(size_ok("8388607T"), 8388607 * TIB);
        cr_assert_eq(size_ok("8388607.5T"), 8388607 * TIB + TIB / 2);
        cr_assert_eq(size_ok("9007199254740991.875KiB"), INT64_MAX - 127);
        size_bad("9223372036854775808", "size \"9223372036854775808\" is too large");
        size_bad("8388608T", "size \"8388608T\" is too large");
        size_bad("8388608TiB", "size \"8388608TiB\" is too large");
        size_bad("99999999999TiB", "size \"99999999999TiB\" is too large");
        size_bad("99999999999999999999999", "size \"99999999999999999999999\" is too large");
        size_bad("9223372036854775807.5k", "size \"9223372036854775807.5k\" is too large");
}

Test(plugin_util, size_garbage) {
        size_bad("", "empty size: expected a number of bytes or e.g. \"256KiB\", "
                     "\"64MiB\", \"1GiB\"");
        size_bad(NULL, "empty size: expected a number of bytes or e.g. \"256KiB\", "
                       "\"64MiB\", \"1GiB\"");
        size_bad("-1", "size \"-1\" is negative");
        size_bad("-1k", "size \"-1k\" is negative");
        size_bad("12 parsecs", INVALID_SIZE("12 parsecs"));
        const char *garbage[] = {"+1",   "1e3",  "0x10", "1,5k", ".5k",  "1.k",  "1..5k",
                                 "k",    "kb",   "1kb",  "1Kb",  "1mib", "1gib", "1kB",
                                 "1KIB", "1 k b", " 1k", "1k ", "1kk",  "1ki",  "1p",
                                 "1P",   "inf",  "nan",  "\t1",  "1\n", "1 MiB "};
        for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
                char want[256];
                snprintf(want, sizeof(want), INVALID_SIZE("%s"), garbage[i]);
                size_bad(garbage[i], want);
        }
        int64_t b = 0;
        cr_assert_eq(tb_pu_parse_size("zzz", &b, NULL, 0), TB_PLUGIN_ERROR, "NULL err");
}

/* ---- durations ----------------------------------------------------------------- */

static int64_t dur_ok(const char *s) {
        int64_t ms = -1;
        char err[256] = "";
        cr_assert_eq(tb_pu_parse_duration(s, &ms, err, sizeof(err)), TB_PLUGIN_OK,
                     "\"%s\": %s", s, err);
        return ms;
}

static void dur_bad(const char *s, const char *msg) {
        int64_t ms = 12345;
        char err[256] = "";
        cr_assert_eq(tb_pu_parse_duration(s, &ms, err, sizeof(err)), TB_PLUGIN_ERROR,
                     "\"%s\" was accepted", s ? s : "(null)");
        cr_assert_eq(ms, 12345, "output written on error");
        cr_assert_str_eq(err, msg);
}

#define UNKNOWN_UNIT(s, u)                                                             \
        "duration \"" s "\": unknown unit '" u "'; valid units: ms, s, m, h, d, w "      \
        "(months and years are not supported: their length varies)"
#define BAD_ISO(s)                                                                     \
        "invalid ISO 8601 duration \"" s "\": expected P[nW][nD][T[nH][nM][nS]], like " \
        "\"PT30S\" or \"P1DT2H\""

Test(plugin_util, duration_units) {
        cr_assert_eq(dur_ok("500ms"), 500);
        cr_assert_eq(dur_ok("30s"), 30 * SEC);
        cr_assert_eq(dur_ok("5m"), 5 * 60 * SEC);
        cr_assert_eq(dur_ok("2h"), 2 * 3600 * SEC);
        cr_assert_eq(dur_ok("7d"), 7 * DAY);
        cr_assert_eq(dur_ok("1w"), 7 * DAY);
        cr_assert_eq(dur_ok("1h30m"), 5400 * SEC);
        cr_assert_eq(dur_ok("1d2h3m4s5ms"), DAY + 7384 * SEC + 5);
        cr_assert_eq(dur_ok("1.5h"), 5400 * SEC);
        cr_assert_eq(dur_ok("0.25s"), 250);
        cr_assert_eq(dur_ok("0.001s"), 1);
        cr_assert_eq(dur_ok("90"), 90 * SEC);
        cr_assert_eq(dur_ok("0.25"), 250);
        cr_assert_eq(dur_ok("0"), 0);
        cr_assert_eq(dur_ok("1000w"), 7000 * DAY);
        cr_assert_eq(dur_ok("PT30S"), 30 * SEC);
        cr_assert_eq(dur_ok("pt30s"), 30 * SEC);
        cr_assert_eq(dur_ok("P1DT2H"), DAY + 2 * 3600 * SEC);
        cr_assert_eq(dur_ok("PT1M"), 60 * SEC);
        cr_assert_eq(dur_ok("P2W"), 14 * DAY);
        cr_assert_eq(dur_ok("p1dt2h"), DAY + 2 * 3600 * SEC);
}

Test(plugin_util, duration_limits_and_errors) {
        cr_assert_eq(dur_ok("365000d"), TB_PU_DURATION_MAX_MS);
        cr_assert_eq(dur_ok("31536000000000ms"), TB_PU_DURATION_MAX_MS);
        cr_assert_eq(dur_ok("PT0.5S"), 500);
        cr_assert_eq(dur_ok("P1DT1H1M1.5S"), DAY + 3661 * SEC + 500);
        dur_bad("31536000000001ms", "duration \"31536000000001ms\" is too large");
        dur_bad("400000d", "duration \"400000d\" is too large");
        dur_bad("99999999999999999999s", "duration \"99999999999999999999s\" is too large");
        dur_bad("9223372036854775807ms", "duration \"9223372036854775807ms\" is too large");
        dur_bad("5000000000000000000ms5000000000000000000ms",
                "duration \"5000000000000000000ms5000000000000000000ms\" is too large");
        dur_bad("1.5ms", "duration \"1.5ms\" is finer than a millisecond");
        dur_bad("0.0001", "duration \"0.0001\" is finer than a millisecond");
        dur_bad("1.0000000001s", "duration \"1.0000000001s\" is finer than a millisecond");

        dur_bad("", "empty duration: expected e.g. \"500ms\", \"30s\", \"5m\", \"2h\", "
                    "\"7d\", \"1w\", \"PT30S\" or a number of seconds");
        dur_bad(NULL, "empty duration: expected e.g. \"500ms\", \"30s\", \"5m\", \"2h\", "
                      "\"7d\", \"1w\", \"PT30S\" or a number of seconds");
        dur_bad("-5s", "duration \"-5s\" is negative");
        dur_bad("5x", UNKNOWN_UNIT("5x", "x"));
        dur_bad("1y", UNKNOWN_UNIT("1y", "y"));
        dur_bad("5S", UNKNOWN_UNIT("5S", "S"));
        dur_bad("5MS", UNKNOWN_UNIT("5MS", "MS"));
        dur_bad("s", "invalid duration \"s\": expected a number before each unit, like "
                     "\"30s\", \"1h30m\" or \"PT30S\"");
        dur_bad("1h 30m", "invalid duration \"1h 30m\": expected a number before each "
                          "unit, like \"30s\", \"1h30m\" or \"PT30S\"");
        dur_bad("+5s", "invalid duration \"+5s\": expected a number before each unit, "
                       "like \"30s\", \"1h30m\" or \"PT30S\"");
        dur_bad("1h30", "duration \"1h30\": a number needs a unit when combined with "
                        "others (ms, s, m, h, d, w)");
        dur_bad("P1M", "ISO 8601 duration \"P1M\": months are not supported because their "
                       "length varies; use weeks (W), days (D) or smaller units");
        dur_bad("P1Y2D", "ISO 8601 duration \"P1Y2D\": years are not supported because "
                         "their length varies; use weeks (W), days (D) or smaller units");
        dur_bad("P", "ISO 8601 duration \"P\" has no components; expected e.g. \"PT30S\" "
                     "or \"P1DT2H\"");
        dur_bad("PT", "ISO 8601 duration \"PT\" has a 'T' but no hours, minutes or "
                      "seconds after it");
        dur_bad("P1H", BAD_ISO("P1H"));
        dur_bad("PT1S1M", BAD_ISO("PT1S1M"));
        dur_bad("P1DX", BAD_ISO("P1DX"));
        dur_bad("PTT1S", BAD_ISO("PTT1S"));
        dur_bad("P1D1D", BAD_ISO("P1D1D"));
}

/* ---- the same meaning as the core's parsers -------------------------------------- */

/* Every string of up to four characters over an alphabet of digits, '.', ' ',
 * '-' and the unit letters, plus longer samples: whatever the core accepts,
 * the header accepts with the same value; for durations the two accept
 * exactly the same strings, for sizes the header adds only the single-letter
 * suffixes. */
static void agree_one(const char *s) {
        int64_t a = -1, b = -1;
        char ea[256], eb[256];
        bool core_d = tb_units_duration_parse(s, &a, ea, sizeof(ea)) == TB_OK;
        bool pu_d = tb_pu_parse_duration(s, &b, eb, sizeof(eb)) == TB_PLUGIN_OK;
        cr_assert_eq(core_d, pu_d, "duration \"%s\": core %s, header %s", s,
                     core_d ? "accepts" : ea, pu_d ? "accepts" : eb);
        if (core_d)
                cr_assert_eq(a, b, "duration \"%s\": core %lld, header %lld", s,
                             (long long)a, (long long)b);

        bool core_s = tb_units_size_parse(s, &a, ea, sizeof(ea)) == TB_OK;
        bool pu_s = tb_pu_parse_size(s, &b, eb, sizeof(eb)) == TB_PLUGIN_OK;
        if (core_s) {
                cr_assert(pu_s, "size \"%s\": core accepts, header: %s", s, eb);
                cr_assert_eq(a, b, "size \"%s\": core %lld, header %lld", s, (long long)a,
                             (long long)b);
        } else if (pu_s) {
                const char *u = tb_pu_number_end(s);
                while (*u == ' ')
                        u++;
                cr_assert(strlen(u) == 1 && strchr("bkKmMgGtT", *u),
                          "size \"%s\": the header accepts what the core refuses (%s), "
                          "and not through a single-letter suffix", s, ea);
        }
}

Test(plugin_util, agrees_with_the_core_parsers) {
        static const char alpha[] = "019. -smhdwPTSMDWKiBbkgt";
        const size_t na = sizeof(alpha) - 1;
        char s[8];
        size_t count = 0;
        for (size_t len = 1; len <= 4; len++) {
                size_t total = 1;
                for (size_t i = 0; i < len; i++)
                        total *= na;
                for (size_t k = 0; k < total; k++) {
                        size_t x = k;
                        for (size_t i = 0; i < len; i++, x /= na)
                                s[i] = alpha[x % na];
                        s[len] = '\0';
                        agree_one(s);
                        count++;
                }
        }
        static const char *const more[] = {
                "1h30m", "1.5h", "P1DT1H1M1.5S", "PT0.5S", "1000w", "400000d", "365000d",
                "99999999999999999999s", "1.0000000001s", "0.0001", "1.5ms", "31536000000000ms",
                "2TiB", "1.5KiB", "10 MiB", "99999999999TiB", "9223372036854775807",
                "9223372036854775808", "1.000000000000KiB", "0.000000001TB", "512MiB",
                "8388607TiB", "8388608TiB", "1d2h3m4s5ms", "PT1H30M", "p1dt2h",
        };
        for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
                agree_one(more[i]);
        cr_assert_gt(count, 300000);
}

/* ---- clocks, error buffer, lookups ------------------------------------------------ */

Test(plugin_util, clocks) {
        int64_t m0 = tb_pu_mono_ms(), w = tb_pu_wall_ms();
        int64_t now = (int64_t)time(NULL) * 1000;
        cr_assert(w >= now - 2000 && w <= now + 2000, "wall %lld vs time() %lld",
                  (long long)w, (long long)now);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        int64_t m1 = tb_pu_mono_ms();
        cr_assert(m1 - m0 >= 20 && m1 - m0 < 5000, "monotonic moved %lld ms",
                  (long long)(m1 - m0));
}

Test(plugin_util, fail_formats_into_the_buffer) {
        char buf[16];
        cr_assert_eq(tb_pu_fail(buf, sizeof(buf), "no %s %d", "way", 42), TB_PLUGIN_ERROR);
        cr_assert_str_eq(buf, "no way 42");
        cr_assert_eq(tb_pu_fail(buf, sizeof(buf), "%s", "a reason longer than sixteen"),
                     TB_PLUGIN_ERROR);
        cr_assert_str_eq(buf, "a reason longer");
        cr_assert_eq(tb_pu_fail(NULL, 0, "nowhere"), TB_PLUGIN_ERROR);
        buf[0] = 'x';
        cr_assert_eq(tb_pu_fail(buf, 0, "nothing written"), TB_PLUGIN_ERROR);
        cr_assert_eq(buf[0], 'x');
}

Test(plugin_util, key_values_options_and_policy) {
        tb_plugin_kv_t kv[] = {{"a", "1"}, {"flag", "true"}, {"empty", NULL},
                               {"a", "2"}, {NULL, "orphan"}, {"off", "false"}};
        size_t n = sizeof(kv) / sizeof(kv[0]);
        cr_assert_str_eq(tb_pu_kv_get(kv, n, "a"), "1");
        cr_assert_str_eq(tb_pu_kv_get(kv, n, "empty"), "");
        cr_assert_null(tb_pu_kv_get(kv, n, "missing"));
        cr_assert_null(tb_pu_kv_get(NULL, 0, "a"));
        cr_assert_null(tb_pu_kv_get(kv, 0, "a"));
        cr_assert_eq(tb_pu_kv_i64(kv, n, "a", 7), 1);
        cr_assert_eq(tb_pu_kv_i64(kv, n, "missing", 7), 7);
        cr_assert(tb_pu_kv_true(kv, n, "flag"));
        cr_assert(!tb_pu_kv_true(kv, n, "off"));
        cr_assert(!tb_pu_kv_true(kv, n, "missing"));

        tb_plugin_kv_t pol[] = {{"images", "a:1"}, {"network", "bridge"}, {"images", "b:2"}};
        tb_plugin_run_t run = {.size = sizeof(run), .options = kv, .n_options = n,
                               .policy = pol, .n_policy = 3};
        cr_assert_str_eq(tb_pu_option(&run, "flag"), "true");
        cr_assert(tb_pu_has_policy(&run));
        cr_assert_str_eq(tb_pu_policy(&run, "network"), "bridge");
        cr_assert_str_eq(tb_pu_policy(&run, "images"), "a:1");
        cr_assert_null(tb_pu_policy(&run, "memory_max"));
        /* A host of ABI 1.0 built a smaller run: no policy at all. */
        run.size = (uint32_t)offsetof(tb_plugin_run_t, policy);
        cr_assert(!tb_pu_has_policy(&run));
        cr_assert_null(tb_pu_policy(&run, "network"));
}

/* ---- environment ---------------------------------------------------------------------- */

Test(plugin_util, env_names) {
        char err[256];
        const char *good[] = {"A", "_", "PATH", "my_var2", "_9", "abcXYZ_019"};
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                cr_assert_eq(tb_pu_check_env_name(good[i], err, sizeof(err)), TB_PLUGIN_OK,
                             "%s", good[i]);
        const char *bad[] = {"", "9A", "A-B", "A B", "A=B", "é", "A.B"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cr_assert_eq(tb_pu_check_env_name(bad[i], err, sizeof(err)),
                             TB_PLUGIN_ERROR, "%s", bad[i]);
                char want[256];
                snprintf(want, sizeof(want), "environment variable name '%s' is invalid: "
                         "use letters, digits and _, not starting with a digit", bad[i]);
                cr_assert_str_eq(err, want);
        }
        cr_assert_eq(tb_pu_check_env_name(NULL, err, sizeof(err)), TB_PLUGIN_ERROR);
        cr_assert_str_eq(err, "environment variable name '' is invalid: use letters, "
                              "digits and _, not starting with a digit");
        cr_assert_eq(tb_pu_check_env_name("TASKBUS_RUN_ID", err, sizeof(err)),
                     TB_PLUGIN_ERROR);
        cr_assert_str_eq(err, "environment variable 'TASKBUS_RUN_ID' is reserved: "
                              "TASKBUS_* variables are set by taskbus");
        cr_assert_eq(tb_pu_check_env_name("TASKBUS", err, sizeof(err)), TB_PLUGIN_OK);
}

Test(plugin_util, run_env) {
        tb_plugin_run_t run = {.size = sizeof(run), .run_id = "r-1", .task_id = "t-9",
                               .nominal_time_ms = 1767323045123LL, .attempt = 3};
        tb_pu_run_env_t e;
        tb_pu_run_env(&run, &e);
        const char *want[TB_PU_RUN_ENV_N][2] = {
                {"TASKBUS_RUN_ID", "r-1"},
                {"TASKBUS_TASK_ID", "t-9"},
                {"TASKBUS_NOMINAL_TIME", "2026-01-02T03:04:05.123Z"},
                {"TASKBUS_ATTEMPT", "3"},
        };
        for (int i = 0; i < TB_PU_RUN_ENV_N; i++) {
                cr_assert_str_eq(e.vars[i].key, want[i][0]);
                cr_assert_str_eq(e.vars[i].value, want[i][1]);
        }
        run.run_id = NULL;
        run.nominal_time_ms = 0;
        tb_pu_run_env(&run, &e);
        cr_assert_str_eq(e.vars[0].value, "");
        cr_assert_str_eq(e.vars[2].value, "1970-01-01T00:00:00Z");
}

/* ---- cancel requests -------------------------------------------------------------------- */

Test(plugin_util, cancel_requests) {
        pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        tb_pu_cancel_t c = {0};
        char why[16] = "untouched";
        cr_assert(!tb_pu_cancel_requested(&c, &lock, why, sizeof(why)));
        cr_assert_str_eq(why, "untouched");
        tb_pu_cancel_request(&c, "operator said so, twice");
        tb_pu_cancel_request(&c, "second reason");
        cr_assert(tb_pu_cancel_requested(&c, &lock, why, sizeof(why)));
        cr_assert_str_eq(why, "operator said s"); /* truncated to the buffer */
        cr_assert_str_eq(c.reason, "operator said so, twice");
        cr_assert(tb_pu_cancel_requested(&c, &lock, NULL, 0));
        cr_assert_eq(pthread_mutex_trylock(&lock), 0, "the lock was left held");
        pthread_mutex_unlock(&lock);

        tb_pu_cancel_t d = {0};
        tb_pu_cancel_request(&d, NULL);
        cr_assert_str_eq(d.reason, "cancelled");
}

/* ---- results ---------------------------------------------------------------------------- */

static struct {
        int calls;
        const tb_plugin_run_t *run;
        tb_plugin_result_t res;
        char error[256];
        bool error_null;
} fin;

static void rec_finished(const tb_plugin_host_t *host, const tb_plugin_run_t *run,
                         const tb_plugin_result_t *res) {
        fin.calls++;
        fin.run = run;
        fin.res = *res;
        fin.error_null = !res->error;
        snprintf(fin.error, sizeof(fin.error), "%s", res->error ? res->error : "");
}

Test(plugin_util, outcome_and_finish) {
        tb_plugin_host_t host = {.size = sizeof(host), .finished = rec_finished};
        tb_plugin_run_t run = {.size = sizeof(run), .run_id = "r"};
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        char msg[32] = "";
        tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg), "lost %s:%d",
                      "host", 22);
        cr_assert_eq(res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        cr_assert_str_eq(msg, "lost host:22");

        int64_t before = tb_pu_wall_ms();
        tb_pu_finish(&host, &run, &res, msg);
        cr_assert_eq(fin.calls, 1);
        cr_assert_eq(fin.run, &run);
        cr_assert_eq(fin.res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        cr_assert_str_eq(fin.error, "lost host:22");
        cr_assert(fin.res.finished_ms >= before && fin.res.finished_ms <= tb_pu_wall_ms());

        /* An empty message is no error; a finished_ms already set is kept. */
        tb_plugin_result_t ok = {TB_PLUGIN_RESULT_FIELDS};
        ok.status = TB_PLUGIN_RUN_SUCCEEDED;
        ok.finished_ms = 42;
        tb_pu_finish(&host, &run, &ok, "");
        cr_assert_eq(fin.calls, 2);
        cr_assert(fin.error_null);
        cr_assert_eq(fin.res.finished_ms, 42);
        tb_pu_finish(&host, &run, &ok, NULL);
        cr_assert(fin.error_null);
}

/* ---- the header on its own, as a plugin author builds it ------------------------------------ */

Test(plugin_util, header_builds_alone_in_strict_c99_and_c11_plugins, .timeout = 120) {
        char *dir = NULL, *out = NULL;
        cr_assert(asprintf(&dir, "/tmp/tbt-pu-XXXXXX") > 0);
        cr_assert_not_null(mkdtemp(dir));
        static const char plugin[] =
                "#include <taskbus/plugin_util.h>\n"
                "static int pu_start(void *st, const tb_plugin_run_t *run, char *e, "
                "size_t n) {\n"
                "        int64_t b = 0, ms = 0;\n"
                "        tb_pu_run_env_t env;\n"
                "        tb_pu_run_env(run, &env);\n"
                "        if (tb_pu_parse_size(tb_pu_option(run, \"memory\"), &b, e, n) ||\n"
                "            tb_pu_parse_duration(tb_pu_policy(run, \"x\"), &ms, e, n))\n"
                "                return TB_PLUGIN_ERROR;\n"
                "        tb_pu_cancel_t c = {0};\n"
                "        pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;\n"
                "        tb_pu_cancel_request(&c, \"x\");\n"
                "        if (tb_pu_cancel_requested(&c, &m, e, n))\n"
                "                return TB_PLUGIN_ERROR;\n"
                "        (void)st;\n"
                "        return tb_pu_check_env_name(env.vars[0].key, e, n) ? "
                "tb_pu_fail(e, n, \"%d\", 1) : (int)(tb_pu_wall_ms() & 0)\n"
                "#ifdef CLOCK_MONOTONIC\n"
                "                + (int)(tb_pu_mono_ms() & 0)\n"
                "#endif\n"
                "                ;\n"
                "}\n"
                "int pu_dummy(void);\n"
                "int pu_dummy(void) { return pu_start(0, 0, 0, 0); }\n";
        char *src = NULL;
        cr_assert(asprintf(&src, "%s/p.c", dir) > 0);
        FILE *f = fopen(src, "w");
        cr_assert_not_null(f);
        fputs(plugin, f);
        fclose(f);
        const char *modes[] = {"-std=c99", "-std=c11", "-std=c11 -D_POSIX_C_SOURCE=200809L",
                               "-std=c99 -D_GNU_SOURCE"};
        for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
                int rc = tbt_run(&out, "cc %s -pedantic -Wall -Wextra -Wshadow "
                                       "-Wstrict-prototypes -Wmissing-prototypes -Werror "
                                       "-I%s/core/include -fPIC -shared -Wl,--no-undefined "
                                       "-o %s/p.so %s -pthread",
                                 modes[i], tbt_source_dir(), dir, src);
                cr_assert_eq(rc, 0, "%s: the header does not build:\n%s", modes[i],
                             out ? out : "");
                free(out);
                out = NULL;
        }
        tbt_run(NULL, "rm -rf %s", dir);
        free(src);
        free(dir);
}
