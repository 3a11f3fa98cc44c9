/**
 * @file test_config.c
 * @brief core/lib/config/ (config/config.h): defaults, the example file, every class of user
 *        error (with FILE:LINE and the key), durations and sizes, the kafka
 *        pass-through, groups and plugins, environment overrides and the
 *        staleness of the generated docs/configuration.md.
 */
#include "config/config.h"
#include "support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void clear_env(void) {
        /* The developer's shell may point at another stack. */
        unsetenv("TASKBUS_REGION");
        unsetenv("TASKBUS_PG");
        unsetenv("TASKBUS_API_LISTEN");
        unsetenv("TASKBUS_KAFKA");
}

TestSuite(config, .init = clear_env);

/** Load \p text from a temp file. *path receives the file name (caller
 *  frees; the file is already removed) so messages can be compared. */
static tb_err_t load_text(const char *text, tb_config_t **conf, char **path,
                          char *errstr, size_t errstr_size) {
        char *p = tbt_write_temp(".conf", text);
        cr_assert(p, "cannot write temp config");
        tb_err_t err = tb_config_load(p, conf, errstr, errstr_size);
        unlink(p);
        if (path)
                *path = p;
        else
                free(p);
        return err;
}

/** Expect \p text to fail with exactly "<tempfile>:<expect_suffix>". */
static void expect_error(const char *text, const char *expect_suffix) {
        tb_config_t *conf = NULL;
        char errstr[1024], *path = NULL;
        tb_err_t err = load_text(text, &conf, &path, errstr, sizeof(errstr));
        cr_assert_eq(err, TB_ERR_INVALID, "expected an error for:\n%s\ngot %s", text,
                     tb_err_name(err));
        cr_assert_null(conf);
        char want[1024];
        snprintf(want, sizeof(want), "%s:%s", path, expect_suffix);
        cr_assert_str_eq(errstr, want);
        free(path);
}

/** Expect \p text to fail with a message containing \p needle. */
static void expect_error_has(const char *text, const char *needle) {
        tb_config_t *conf = NULL;
        char errstr[1024];
        tb_err_t err = load_text(text, &conf, NULL, errstr, sizeof(errstr));
        cr_assert_neq(err, TB_OK, "expected an error for:\n%s", text);
        cr_assert_null(conf);
        cr_assert(strstr(errstr, needle), "message \"%s\" lacks \"%s\"", errstr, needle);
}

static tb_config_t *load_ok(const char *text) {
        tb_config_t *conf = NULL;
        char errstr[1024];
        tb_err_t err = load_text(text, &conf, NULL, errstr, sizeof(errstr));
        cr_assert_eq(err, TB_OK, "load failed: %s\n---\n%s", errstr, text);
        cr_assert_not_null(conf);
        return conf;
}

static const char *kafka_get(const tb_config_t *conf, const char *key) {
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, key))
                        return conf->kafka[i].value;
        return NULL;
}

#define SEC 1000LL
#define DAY (86400LL * SEC)

static void assert_defaults(const tb_config_t *c) {
        cr_assert_str_eq(c->region, "local");
        cr_assert_str_eq(c->log_level, "info");
        cr_assert_str_eq(c->topic_prefix, "taskbus.");
        cr_assert_eq(c->topic_partitions, 6);
        cr_assert_eq(c->topic_replication, 1);
        cr_assert_eq(c->retention_commands_ms, 7 * DAY);
        cr_assert_eq(c->retention_replies_ms, 1 * DAY);
        cr_assert_eq(c->retention_runs_ms, 7 * DAY);
        cr_assert_eq(c->retention_results_ms, 30 * DAY);
        cr_assert_eq(c->retention_logs_ms, 30 * DAY);
        cr_assert_eq(c->retention_dlq_ms, 30 * DAY);
        cr_assert_str_eq(c->pg_url, "postgresql://taskbus@127.0.0.1:55432/taskbus");
        cr_assert_eq(c->notify_timeout_ms, 10000);
        cr_assert_eq(c->notify_max_attempts, 6);
        cr_assert_eq(c->notify_backoff_ms, 2000);
        cr_assert_eq(c->notify_backoff_max_ms, 300000);
        cr_assert_eq(c->notify_log_lines, 20);
        cr_assert_eq(c->notify_log_bytes, 4096);
        cr_assert_eq(c->notify_channel_cnt, 0);
        cr_assert_eq(c->pg_pool_size, 8);
        cr_assert_str_eq(c->api_listen, "127.0.0.1:8080");
        cr_assert_eq(c->api_threads, 64);
        cr_assert_float_eq(c->api_rate, 50.0, 1e-9);
        cr_assert_eq(c->api_burst, 100);
        cr_assert_eq(c->api_reply_timeout_ms, 10 * SEC);
        cr_assert_eq(c->api_max_body, 256 * 1024);
        cr_assert_eq(c->sched_misfire_cap, 100);
        cr_assert_eq(c->sched_tick_ms, 50);
        cr_assert_eq(c->sched_max_batch, 2000);
        cr_assert_eq(c->cmd_batch_linger_ms, 10);
        cr_assert_eq(c->cmd_batch_max, 1000);
        cr_assert_eq(c->cmd_batch_bytes, 4 * 1024 * 1024);
        cr_assert_eq(c->proj_batch_linger_ms, 10);
        cr_assert_eq(c->proj_batch_max, 1000);
        cr_assert_eq(c->exec_plugin_path_cnt, 0);
        cr_assert_eq(c->exec_max_concurrent, 1000);
        cr_assert_eq(c->exec_lease_ms, 15 * SEC);
        cr_assert_eq(c->exec_grace_ms, 30 * SEC);
        cr_assert_eq(c->exec_output_cap, 64LL * 1024 * 1024);
        cr_assert_eq(c->exec_kill_grace_ms, 5 * SEC);
        cr_assert_str_eq(c->exec_workdir, "/tmp");
        cr_assert_eq(c->exec_allow_root, false);
        cr_assert_eq(c->history_retention_ms, 1826 * DAY);
        cr_assert_eq(c->log_retention_default_ms, 30 * DAY);
        cr_assert_eq(c->archiver_batch, 1000);
        cr_assert_str_eq(kafka_get(c, "bootstrap.servers"), "127.0.0.1:9092");
}

Test(config, defaults) {
        tb_config_t *c = tb_config_defaults();
        cr_assert_not_null(c);
        assert_defaults(c);
        cr_assert_str_eq(c->path, "(defaults)");
        cr_assert_eq(c->kafka_cnt, 1);
        cr_assert_eq(c->group_cnt, 0);
        cr_assert_eq(c->plugin_cnt, 0);
        /* Unlisted groups get the least-privilege defaults. */
        const tb_group_conf_t *g = tb_config_group_policy(c, "anyone");
        cr_assert_str_eq(g->os_user, "nobody");
        cr_assert_str_eq(g->network, "none");
        cr_assert_eq(g->image_cnt, 0);
        cr_assert_eq(g->memory_max_bytes, 512LL * 1024 * 1024);
        cr_assert_float_eq(g->cpus_max, 1.0, 1e-9);
        cr_assert_eq(g->log_retention_max_ms, 30 * DAY);
        cr_assert_null(g->ssh_key);
        cr_assert_null(g->ssh_known_hosts);
        cr_assert_null(tb_config_group(c, "anyone"));
        tb_config_destroy(c);

        /* No file: defaults, validated the same way. */
        char errstr[512];
        cr_assert_eq(tb_config_load(NULL, &c, errstr, sizeof(errstr)), TB_OK, "%s", errstr);
        assert_defaults(c);
        tb_config_destroy(c);

        /* An empty file is all defaults too. */
        c = load_ok("# nothing\n");
        assert_defaults(c);
        tb_config_destroy(c);
}

Test(config, example_file_loads_and_documents_the_defaults) {
        char path[4096], errstr[1024];
        snprintf(path, sizeof(path), "%s/config/taskbus.conf", tbt_source_dir());
        tb_config_t *c = NULL;
        tb_err_t err = tb_config_load(path, &c, errstr, sizeof(errstr));
        cr_assert_eq(err, TB_OK, "%s", errstr);
        /* The dev config shows every main key with its default value. */
        assert_defaults(c);
        cr_assert_str_eq(c->path, path);
        const tb_group_conf_t *ops = tb_config_group(c, "ops");
        cr_assert_not_null(ops);
        cr_assert_eq(ops->log_retention_max_ms, 90 * DAY);
        cr_assert_eq(ops->image_cnt, 1);
        tb_config_destroy(c);
}

Test(config, typo_names_file_line_key_and_valid_keys) {
        expect_error("# comment\n"
                     "postgres = {\n"
                     "        ulr = \"postgresql://x@y/z\";\n"
                     "};\n",
                     "3: unknown key 'postgres.ulr'; valid keys in 'postgres': pool_size, "
                     "url (did you mean 'url'?)");
        expect_error("\n\nregoin = \"eu\";\n",
                     "3: unknown key 'regoin'; valid top-level keys: api, archiver, "
                     "commands, executor, groups, kafka, log_level, node, notify, plugins, "
                     "postgres, projector, region, replication, scheduler, security, topics (did you "
                     "mean "
                     "'region'?)");
        /* Nothing close: no suggestion. */
        expect_error("api = { zzzzzz = 1; };\n",
                     "1: unknown key 'api.zzzzzz'; valid keys in 'api': admin_group, body_timeout, "
                     "burst, header_timeout, listen, max_body, max_connections, "
                     "max_connections_per_client, max_follow_duration, max_follows_per_user, "
                     "max_requests_per_connection, pool_size, queue_timeout, rate, "
                     "reply_timeout, session_ttl, statement_timeout, threads, tls_cert, tls_key");
        expect_error("groups = {\n ops = {\n  imagess = [];\n };\n};\n",
                     "3: unknown key 'groups.ops.imagess'; valid keys in 'groups.ops': "
                     "allow_root, cpus_max, images, log_retention_max, memory_max, network, os_user, "
                     "ssh_key, ssh_known_hosts (did you mean 'images'?)");
}

Test(config, wrong_type) {
        expect_error("api = {\n  burst = \"100\";\n};\n",
                     "2: api.burst: expected an integer, got a string");
        expect_error("executor = { allow_root = \"yes\"; };\n",
                     "1: executor.allow_root: expected a boolean (true or false), got a "
                     "string");
        expect_error("region = 5;\n", "1: region: expected a string, got an integer");
        expect_error("api = { rate = \"fast\"; };\n",
                     "1: api.rate: expected a number, got a string");
        expect_error("api = { reply_timeout = 1.5; };\n",
                     "1: api.reply_timeout: expected a duration (a string like \"30s\", "
                     "\"5m\", \"PT1H\", or an integer number of seconds), got a "
                     "floating-point number");
        expect_error("executor = { plugin_paths = \"/a\"; };\n",
                     "1: executor.plugin_paths: expected a list of strings (like [\"a\", "
                     "\"b\"]), got a string");
        expect_error("executor = { plugin_paths = (\"/a\", 2); };\n",
                     "1: executor.plugin_paths[1]: expected a string, got an integer");
        expect_error("topics = 3;\n", "1: topics: expected a group ({ ... }), got an integer");
        expect_error("groups = { ops = 1; };\n",
                     "1: groups.ops: expected a group ({ os_user = \"...\"; ... }), got an "
                     "integer");
        expect_error("log_level = \"verbose\";\n",
                     "1: log_level: 'verbose' is not one of debug, info, warn, error");
        expect_error("api = { reply_timeout = \"10 parsecs\"; };\n",
                     "1: api.reply_timeout: duration \"10 parsecs\": a number needs a unit "
                     "when combined with others (ms, s, m, h, d, w)");
}

Test(config, out_of_range_names_min_and_max) {
        expect_error("api = { threads = 0; };\n",
                     "1: api.threads: 0 is out of range: minimum 1, maximum 256");
        expect_error("api = { reply_timeout = \"1ms\"; };\n",
                     "1: api.reply_timeout: 1ms is out of range: minimum 100ms, maximum 5m");
        expect_error("api = { max_body = \"1GiB\"; };\n",
                     "1: api.max_body: 1GiB is out of range: minimum 1KiB, maximum 64MiB");
        expect_error("groups = { g = { cpus_max = 0.0; }; };\n",
                     "1: groups.g.cpus_max: 0 is out of range: minimum 0.01, maximum 1024");
        /* An integer is seconds for durations. */
        expect_error("executor = { lease = 7200; };\n",
                     "1: executor.lease: 2h is out of range: minimum 1s, maximum 1h");
        expect_error("api = { max_body = -1; };\n", "1: api.max_body: -1 is negative");
}

Test(config, wide_integers_need_the_L_suffix) {
        /* libconfig 1.5 would wrap 5368709120 to 1GiB without a word. */
        expect_error("groups = { g = {\n memory_max = 5368709120;\n}; };\n",
                     "2: integer 5368709120 does not fit in 32 bits: write 5368709120L "
                     "(libconfig would silently truncate it)");
        tb_config_t *c = load_ok("# 5368709120 in a comment is fine\n"
                                 "groups = { g = { memory_max = 5368709120L;\n"
                                 " os_user = \"u9999999999\"; }; };\n");
        cr_assert_eq(tb_config_group(c, "g")->memory_max_bytes, 5368709120LL);
        tb_config_destroy(c);
}

Test(config, syntax_error_reports_file_line_and_libconfig_text) {
        expect_error("api = {\n  threads = 4;\n  burst 5;\n};\n", "3: syntax error");
        expect_error("region = \"a\";\nregion = \"b\";\n",
                     "2: syntax error: duplicate setting name");
}

Test(config, unreadable_file) {
        tb_config_t *c = NULL;
        char errstr[512];
        cr_assert_eq(tb_config_load("/nonexistent/taskbus.conf", &c, errstr, sizeof(errstr)),
                     TB_ERR_IO);
        cr_assert_str_eq(errstr, "cannot read config file /nonexistent/taskbus.conf: No "
                                 "such file or directory");
        cr_assert_eq(tb_config_load("/tmp", &c, errstr, sizeof(errstr)), TB_ERR_IO);
        cr_assert_str_eq(errstr, "cannot read config file /tmp: not a regular file");
        cr_assert_null(c);
}

Test(config, included_file_errors_name_the_included_file) {
        char *inc = tbt_write_temp(".conf", "\n\napi = { burst = \"x\"; };\n");
        cr_assert(inc);
        /* Both files are in /tmp: the include is relative to the main one. */
        char text[512];
        snprintf(text, sizeof(text), "@include \"%s\"\n", strrchr(inc, '/') + 1);
        char want[1024];
        snprintf(want, sizeof(want), "%s:3: api.burst: expected an integer, got a string",
                 inc);
        tb_config_t *c = NULL;
        char errstr[1024];
        cr_assert_eq(load_text(text, &c, NULL, errstr, sizeof(errstr)), TB_ERR_INVALID);
        cr_assert_str_eq(errstr, want);

        /* libconfig 1.5 would look for "/tmp//tmp/..."; say so instead. */
        snprintf(text, sizeof(text), "\n@include \"%s\"\n", inc);
        snprintf(want, sizeof(want), "2: @include \"%s\": write the path relative to /tmp "
                 "(includes are resolved from the main config file's directory)", inc);
        expect_error(text, want);
        unlink(inc);
        free(inc);
}

Test(config, kafka_bad_property_gives_librdkafka_message) {
        expect_error("kafka = {\n        bootstrap_servrs = \"a:9092\";\n};\n",
                     "2: kafka.bootstrap_servrs: librdkafka: No such configuration "
                     "property: \"bootstrap.servrs\"");
        expect_error_has("kafka = { socket_timeout_ms = \"soon\"; };\n",
                         ":1: kafka.socket_timeout_ms: librdkafka: Invalid value for "
                         "configuration property \"socket.timeout.ms\"");
        expect_error("kafka = { group_id = \"mine\"; };\n",
                     "1: kafka.group_id: \"group.id\" is set by taskbus for each role; "
                     "remove it");
        expect_error("kafka = { client_id = [\"a\"]; };\n",
                     "1: kafka.client_id: expected a string, number or boolean, got an "
                     "array");
}

Test(config, kafka_good_properties_pass_through_with_dots) {
        tb_config_t *c = load_ok("kafka = {\n"
                                 "  bootstrap_servers = \"k1:9092,k2:9092\";\n"
                                 "  message_max_bytes = 2000000;\n"
                                 "  enable_idempotence = true;\n"
                                 "  queue_buffering_max_ms = 5;\n"
                                 "  client_id = \"taskbus-test\";\n"
                                 "};\n");
        cr_assert_eq(c->kafka_cnt, 5);
        cr_assert_str_eq(kafka_get(c, "bootstrap.servers"), "k1:9092,k2:9092");
        cr_assert_str_eq(kafka_get(c, "message.max.bytes"), "2000000");
        cr_assert_str_eq(kafka_get(c, "enable.idempotence"), "true");
        cr_assert_str_eq(kafka_get(c, "queue.buffering.max.ms"), "5");
        cr_assert_str_eq(kafka_get(c, "client.id"), "taskbus-test");
        tb_config_destroy(c);

        /* Without bootstrap_servers the local default is kept next to the rest. */
        c = load_ok("kafka = { client_id = \"x\"; };\n");
        cr_assert_eq(c->kafka_cnt, 2);
        cr_assert_str_eq(kafka_get(c, "bootstrap.servers"), "127.0.0.1:9092");
        tb_config_destroy(c);
}

/* kafka.sasl_password_file: the secret comes from its own file, mode 0600 */
Test(config, kafka_secret_from_a_file) {
        char *pw = tbt_write_temp(".password", "s3cret-from-file\n");
        cr_assert(pw);
        cr_assert_eq(chmod(pw, 0600), 0);
        char text[1024];
        snprintf(text, sizeof(text),
                 "kafka = { security_protocol = \"SASL_SSL\"; sasl_username = \"u\";\n"
                 "          sasl_password_file = \"%s\"; };\n", pw);
        tb_config_t *c = load_ok(text);
        cr_assert_str_eq(kafka_get(c, "sasl.password"), "s3cret-from-file");
        cr_assert_null(kafka_get(c, "sasl.password.file"));
        tb_config_destroy(c);

        /* inline and from a file at once */
        snprintf(text, sizeof(text),
                 "kafka = { sasl_password = \"x\"; sasl_password_file = \"%s\"; };\n", pw);
        expect_error_has(text, "kafka.sasl_password_file: sasl.password is set twice");

        /* readable by others: refused, and the message says how to fix it */
        cr_assert_eq(chmod(pw, 0644), 0);
        snprintf(text, sizeof(text), "kafka = { sasl_password_file = \"%s\"; };\n", pw);
        expect_error_has(text, "has mode 0644: other users can read the secret; chmod 600");
        char errstr[1024];
        tb_config_t *none = NULL;
        cr_assert_neq(load_text(text, &none, NULL, errstr, sizeof(errstr)), TB_OK);
        cr_assert_null(strstr(errstr, "s3cret"), "the secret leaked: %s", errstr);

        /* empty, several lines, missing */
        FILE *fp = fopen(pw, "w");
        cr_assert(fp);
        fputs("a\nb\n", fp);
        fclose(fp);
        cr_assert_eq(chmod(pw, 0600), 0);
        expect_error_has(text, "must hold the secret alone, on one line (it is several lines)");
        unlink(pw);
        expect_error_has(text, "kafka.sasl_password_file: cannot open");
        free(pw);

        /* a _file key of a property that is no secret is not special */
        expect_error_has("kafka = { client_id_file = \"/x\"; };\n",
                         "No such configuration property: \"client.id.file\"");
}

static int64_t dur(const char *s) {
        int64_t ms = -1;
        char errstr[256];
        tb_err_t err = tb_units_duration_parse(s, &ms, errstr, sizeof(errstr));
        cr_assert_eq(err, TB_OK, "\"%s\": %s", s, errstr);
        return ms;
}

static void dur_bad(const char *s, const char *msg) {
        int64_t ms = 12345;
        char errstr[256];
        cr_assert_eq(tb_units_duration_parse(s, &ms, errstr, sizeof(errstr)), TB_ERR_INVALID,
                     "\"%s\" was accepted", s ? s : "(null)");
        cr_assert_str_eq(errstr, msg);
        cr_assert_eq(ms, 12345, "output written on error");
}

Test(config, durations) {
        cr_assert_eq(dur("500ms"), 500);
        cr_assert_eq(dur("30s"), 30 * SEC);
        cr_assert_eq(dur("5m"), 5 * 60 * SEC);
        cr_assert_eq(dur("2h"), 2 * 3600 * SEC);
        cr_assert_eq(dur("7d"), 7 * DAY);
        cr_assert_eq(dur("1w"), 7 * DAY);
        cr_assert_eq(dur("1h30m"), 5400 * SEC);
        cr_assert_eq(dur("1.5h"), 5400 * SEC);
        cr_assert_eq(dur("0.25s"), 250);
        cr_assert_eq(dur("90"), 90 * SEC);
        cr_assert_eq(dur("0"), 0);
        cr_assert_eq(dur("PT30S"), 30 * SEC);
        cr_assert_eq(dur("P1DT2H"), DAY + 2 * 3600 * SEC);
        cr_assert_eq(dur("PT1M"), 60 * SEC);
        cr_assert_eq(dur("P2W"), 14 * DAY);
        cr_assert_eq(dur("PT0.5S"), 500);
        cr_assert_eq(dur("P1DT1H1M1.5S"), DAY + 3661 * SEC + 500);
        cr_assert_eq(dur("1000w"), 7000 * DAY);

        dur_bad("", "empty duration: expected e.g. \"500ms\", \"30s\", \"5m\", \"2h\", "
                    "\"7d\", \"1w\", \"PT30S\" or a number of seconds");
        dur_bad(NULL, "empty duration: expected e.g. \"500ms\", \"30s\", \"5m\", \"2h\", "
                      "\"7d\", \"1w\", \"PT30S\" or a number of seconds");
        dur_bad("-5s", "duration \"-5s\" is negative");
        dur_bad("5x", "duration \"5x\": unknown unit 'x'; valid units: ms, s, m, h, d, w "
                      "(months and years are not supported: their length varies)");
        dur_bad("1y", "duration \"1y\": unknown unit 'y'; valid units: ms, s, m, h, d, w "
                      "(months and years are not supported: their length varies)");
        dur_bad("s", "invalid duration \"s\": expected a number before each unit, like "
                     "\"30s\", \"1h30m\" or \"PT30S\"");
        dur_bad("1h30", "duration \"1h30\": a number needs a unit when combined with "
                        "others (ms, s, m, h, d, w)");
        dur_bad("1.5ms", "duration \"1.5ms\" is finer than a millisecond");
        dur_bad("99999999999999999999s", "duration \"99999999999999999999s\" is too large");
        dur_bad("400000d", "duration \"400000d\" is too large");
        dur_bad("P1M", "ISO 8601 duration \"P1M\": months are not supported because their "
                       "length varies; use weeks (W), days (D) or smaller units");
        dur_bad("P1Y2D", "ISO 8601 duration \"P1Y2D\": years are not supported because "
                         "their length varies; use weeks (W), days (D) or smaller units");
        dur_bad("P", "ISO 8601 duration \"P\" has no components; expected e.g. \"PT30S\" "
                     "or \"P1DT2H\"");
        dur_bad("PT", "ISO 8601 duration \"PT\" has a 'T' but no hours, minutes or "
                      "seconds after it");
        dur_bad("P1H", "invalid ISO 8601 duration \"P1H\": expected "
                       "P[nW][nD][T[nH][nM][nS]], like \"PT30S\" or \"P1DT2H\"");
        dur_bad("PT1S1M", "invalid ISO 8601 duration \"PT1S1M\": expected "
                          "P[nW][nD][T[nH][nM][nS]], like \"PT30S\" or \"P1DT2H\"");
        dur_bad("P1DX", "invalid ISO 8601 duration \"P1DX\": expected "
                        "P[nW][nD][T[nH][nM][nS]], like \"PT30S\" or \"P1DT2H\"");

        /* In the file: strings, integer seconds and ISO forms. */
        tb_config_t *c = load_ok("api = { reply_timeout = 20; };\n"
                                 "executor = { lease = \"PT1M\"; kill_grace = \"1m30s\"; };\n");
        cr_assert_eq(c->api_reply_timeout_ms, 20 * SEC);
        cr_assert_eq(c->exec_lease_ms, 60 * SEC);
        cr_assert_eq(c->exec_kill_grace_ms, 90 * SEC);
        tb_config_destroy(c);
        expect_error("topics = {\n retention_runs = \"P1M\";\n};\n",
                     "2: topics.retention_runs: ISO 8601 duration \"P1M\": months are not "
                     "supported because their length varies; use weeks (W), days (D) or "
                     "smaller units");
}

Test(config, sizes) {
        int64_t b;
        char errstr[256];
        struct {
                const char *s;
                int64_t want;
        } ok[] = {{"0", 0},           {"512", 512},           {"512B", 512},
                  {"256KiB", 262144}, {"64MiB", 67108864},    {"1GiB", 1073741824},
                  {"1.5KiB", 1536},   {"2TiB", 2199023255552}, {"500KB", 500000},
                  {"1MB", 1000000},   {"10 MiB", 10485760}};
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                cr_assert_eq(tb_units_size_parse(ok[i].s, &b, errstr, sizeof(errstr)), TB_OK,
                             "%s: %s", ok[i].s, errstr);
                cr_assert_eq(b, ok[i].want, "%s", ok[i].s);
        }
        cr_assert_eq(tb_units_size_parse("1.3B", &b, errstr, sizeof(errstr)), TB_ERR_INVALID);
        cr_assert_str_eq(errstr, "size \"1.3B\" is not a whole number of bytes");
        cr_assert_eq(tb_units_size_parse("12 parsecs", &b, errstr, sizeof(errstr)),
                     TB_ERR_INVALID);
        cr_assert_str_eq(errstr, "invalid size \"12 parsecs\": expected a number of bytes, "
                                 "optionally followed by B, KiB, MiB, GiB, TiB (powers of "
                                 "1024) or KB, MB, GB, TB (powers of 1000)");
        cr_assert_eq(tb_units_size_parse("-1", &b, errstr, sizeof(errstr)), TB_ERR_INVALID);
        cr_assert_str_eq(errstr, "size \"-1\" is negative");
        cr_assert_eq(tb_units_size_parse("99999999999TiB", &b, errstr, sizeof(errstr)),
                     TB_ERR_INVALID);
        cr_assert_str_eq(errstr, "size \"99999999999TiB\" is too large");
}

Test(config, groups_and_plugins) {
        tb_config_t *c = load_ok(
                "executor = { allow_root = true; };\n"
                "groups = {\n"
                "  ops = { os_user = \"nobody\"; log_retention_max = \"90d\";\n"
                "          images = [\"a\", \"b\"]; network = \"none\";\n"
                "          memory_max = 536870912; cpus_max = 1.0;\n"
                "          ssh_key = \"/path\"; ssh_known_hosts = \"/path/kh\"; };\n"
                "  admins = { os_user = \"root\"; network = \"host\"; cpus_max = 4; };\n"
                "  empty = { };\n"
                "};\n"
                "plugins = {\n"
                "  shell = { shell = \"/bin/sh\"; nice = 5; strict = true; ratio = 0.1; };\n"
                "  container = { runtime = \"podman\"; };\n"
                "};\n");
        cr_assert_eq(c->group_cnt, 3);
        const tb_group_conf_t *ops = tb_config_group(c, "ops");
        cr_assert_not_null(ops);
        cr_assert_str_eq(ops->name, "ops");
        cr_assert_str_eq(ops->os_user, "nobody");
        cr_assert_eq(ops->log_retention_max_ms, 90 * DAY);
        cr_assert_eq(ops->image_cnt, 2);
        cr_assert_str_eq(ops->images[0], "a");
        cr_assert_str_eq(ops->images[1], "b");
        cr_assert_str_eq(ops->network, "none");
        cr_assert_eq(ops->memory_max_bytes, 536870912);
        cr_assert_float_eq(ops->cpus_max, 1.0, 1e-9);
        cr_assert_str_eq(ops->ssh_key, "/path");
        cr_assert_str_eq(ops->ssh_known_hosts, "/path/kh");
        const tb_group_conf_t *admins = tb_config_group(c, "admins");
        cr_assert_str_eq(admins->os_user, "root");
        cr_assert_str_eq(admins->network, "host");
        cr_assert_float_eq(admins->cpus_max, 4.0, 1e-9);
        /* Keys a group leaves out get the defaults. */
        cr_assert_eq(admins->memory_max_bytes, 512LL * 1024 * 1024);
        cr_assert_eq(admins->image_cnt, 0);
        cr_assert_eq(tb_config_group_policy(c, "ops"), ops);
        cr_assert_eq(tb_config_group_policy(c, "nobody-listed"), &c->group_default);
        cr_assert_not_null(tb_config_group(c, "empty"));
        cr_assert_null(tb_config_group(c, "missing"));

        cr_assert_eq(c->plugin_cnt, 2);
        const tb_plugin_conf_t *sh = tb_config_plugin(c, "shell");
        cr_assert_not_null(sh);
        cr_assert_eq(sh->kv_cnt, 4);
        cr_assert_str_eq(tb_plugin_conf_get(sh, "shell"), "/bin/sh");
        cr_assert_str_eq(tb_plugin_conf_get(sh, "nice"), "5");
        cr_assert_str_eq(tb_plugin_conf_get(sh, "strict"), "true");
        cr_assert_str_eq(tb_plugin_conf_get(sh, "ratio"), "0.1");
        cr_assert_null(tb_plugin_conf_get(sh, "nope"));
        /* The plugin host reports refused keys at their place in the file. */
        cr_assert(strstr(sh->kv_where[1], ".conf:11"), "%s", sh->kv_where[1]);
        cr_assert_str_eq(tb_plugin_conf_get(tb_config_plugin(c, "container"), "runtime"),
                         "podman");
        cr_assert_null(tb_config_plugin(c, "ssh"));
        cr_assert_null(tb_plugin_conf_get(NULL, "x"));
        tb_config_destroy(c);

        expect_error("groups = { g = { network = \"bridged\"; }; };\n",
                     "1: groups.g.network: 'bridged' is not one of none, bridge, host");
        expect_error("plugins = { shell = 1; };\n",
                     "1: plugins.shell: expected a group ({ key = value; ... }), got an "
                     "integer");
        expect_error("plugins = { shell = { x = { y = 1; }; }; };\n",
                     "1: plugins.shell.x: expected a string, number or boolean, got a group");
}

Test(config, cross_field_checks) {
        expect_error("\ngroups = {\n  admins = { os_user = \"root\"; };\n};\n",
                     "3: groups.admins.os_user: \"root\" is refused unless "
                     "executor.allow_root = true");
        expect_error("archiver = {\n history_retention = \"30d\";\n"
                     " log_retention_default = \"60d\";\n};\n",
                     "3: archiver.log_retention_default: 60d exceeds "
                     "archiver.history_retention (30d): logs would outlive their runs; "
                     "lower it or raise archiver.history_retention");
        expect_error("archiver = { history_retention = \"30d\"; log_retention_default = "
                     "\"7d\"; };\ngroups = { g = { log_retention_max = \"90d\"; }; };\n",
                     "2: groups.g.log_retention_max: 90d exceeds "
                     "archiver.history_retention (30d)");
        expect_error("api = { listen = \"8080\"; };\n",
                     "1: api.listen: \"8080\" is not HOST:PORT (e.g. \"127.0.0.1:8080\", "
                     "\"[::1]:8080\", port 0 to 65535)");
        expect_error("api = { listen = \"h:65536\"; };\n",
                     "1: api.listen: \"h:65536\" is not HOST:PORT (e.g. \"127.0.0.1:8080\", "
                     "\"[::1]:8080\", port 0 to 65535)");
        expect_error("api = { tls_cert = \"/etc/taskbus/api.crt\"; };\n",
                     "1: api.tls_cert is set but api.tls_key is not: HTTPS needs both the "
                     "certificate chain (api.tls_cert) and its private key (api.tls_key); "
                     "set the other one or remove both for plain HTTP");
        expect_error("api = {\n tls_key = \"/etc/taskbus/api.key\";\n};\n",
                     "2: api.tls_key is set but api.tls_cert is not: HTTPS needs both the "
                     "certificate chain (api.tls_cert) and its private key (api.tls_key); "
                     "set the other one or remove both for plain HTTP");
        expect_error("postgres = { url = \"nonsense\"; };\n",
                     "1: postgres.url: not a valid libpq connection string: missing \"=\" "
                     "after \"nonsense\" in connection info string");
        /* libpq quotes the URI, password and all: masked */
        expect_error("postgres = { url = \"postgresql://tb:Pa55word@[::1/tb\"; };\n",
                     "1: postgres.url: not a valid libpq connection string: end of string "
                     "reached when looking for matching \"]\" in IPv6 host address in URI: "
                     "\"postgresql://tb:****@[::1/tb\"");
        expect_error("topics = { prefix = \"task bus.\"; };\n",
                     "1: topics.prefix: \"task bus.\" cannot prefix a Kafka topic name: use "
                     "only letters, digits, '.', '_' and '-', at most 228 characters");
        expect_error("region = \"\";\n",
                     "1: region: \"\" is not a region name: use 1 to 63 letters, digits, "
                     "'-' or '_'");
        expect_error("executor = { workdir = \"tmp\"; };\n",
                     "1: executor.workdir: \"tmp\" is not an absolute path");

        tb_config_t *c = load_ok("api = { listen = \"[::1]:0\"; };\n"
                                 "postgres = { url = \"host=/run/pg dbname=tb\"; };\n");
        cr_assert_str_eq(c->api_listen, "[::1]:0");
        tb_config_destroy(c);
}

Test(config, environment_overrides) {
        setenv("TASKBUS_REGION", "eu-west", 1);
        setenv("TASKBUS_PG", "postgresql://t@127.0.0.1:65000/tb2", 1);
        setenv("TASKBUS_API_LISTEN", "127.0.0.1:18080", 1);
        setenv("TASKBUS_KAFKA", "127.0.0.1:19092", 1);
        tb_config_t *c = load_ok("region = \"us\";\n"
                                 "api = { listen = \"0.0.0.0:80\"; threads = 2; };\n"
                                 "kafka = { bootstrap_servers = \"far:9092\"; };\n");
        cr_assert_str_eq(c->region, "eu-west");
        cr_assert_str_eq(c->pg_url, "postgresql://t@127.0.0.1:65000/tb2");
        cr_assert_str_eq(c->api_listen, "127.0.0.1:18080");
        cr_assert_eq(c->api_threads, 2);
        cr_assert_str_eq(kafka_get(c, "bootstrap.servers"), "127.0.0.1:19092");
        cr_assert_eq(c->kafka_cnt, 1);
        tb_config_destroy(c);

        /* Also without a file. */
        char errstr[512];
        cr_assert_eq(tb_config_load(NULL, &c, errstr, sizeof(errstr)), TB_OK, "%s", errstr);
        cr_assert_str_eq(c->region, "eu-west");
        cr_assert_str_eq(kafka_get(c, "bootstrap.servers"), "127.0.0.1:19092");
        tb_config_destroy(c);

        /* Empty means unset. */
        setenv("TASKBUS_REGION", "", 1);
        c = load_ok("");
        cr_assert_str_eq(c->region, "local");
        tb_config_destroy(c);

        /* A bad override is named by its variable. */
        setenv("TASKBUS_API_LISTEN", "nohost", 1);
        cr_assert_eq(tb_config_load(NULL, &c, errstr, sizeof(errstr)), TB_ERR_INVALID);
        cr_assert_str_eq(errstr, "api.listen (from environment variable TASKBUS_API_LISTEN): "
                                 "\"nohost\" is not HOST:PORT (e.g. \"127.0.0.1:8080\", "
                                 "\"[::1]:8080\", port 0 to 65535)");
}

static char *read_all(FILE *fp, size_t *len) {
        tb_buf_t b = {0};
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
                cr_assert_eq(tb_buf_append(&b, chunk, n), TB_OK);
        cr_assert_eq(tb_buf_append(&b, "", 1), TB_OK);
        *len = b.len - 1;
        return b.data;
}

Test(config, generated_doc_is_current) {
        /* Regenerate into a temp file, as `taskbusd --config-doc` would. */
        char tmp[] = "/tmp/tb-config-doc-XXXXXX";
        int fd = mkstemp(tmp);
        cr_assert(fd >= 0);
        FILE *out = fdopen(fd, "w+");
        cr_assert_not_null(out);
        tb_config_write_doc(out);
        rewind(out);
        size_t gen_len, cur_len;
        char *gen = read_all(out, &gen_len);
        fclose(out);
        unlink(tmp);

        /* Sanity: the doc really comes from the table. */
        cr_assert(strstr(gen, "| `api.burst` | integer | `100` | 1 .. 1000000 |"));
        cr_assert(strstr(gen, "`TASKBUS_KAFKA`"));
        cr_assert(strstr(gen, "`TASKBUS_API_LISTEN`"));
        cr_assert(strstr(gen, "| `groups.NAME.network` | enum | `\"none\"` | `none`, "
                              "`bridge`, `host` |"));

        char path[4096];
        snprintf(path, sizeof(path), "%s/docs/configuration.md", tbt_source_dir());
        FILE *cur_fp = fopen(path, "r");
        cr_assert_not_null(cur_fp, "docs/configuration.md is stale: run `build/bin/taskbusd "
                                   "--config-doc > docs/configuration.md` (%s is missing)",
                           path);
        char *cur = read_all(cur_fp, &cur_len);
        fclose(cur_fp);
        cr_assert(gen_len == cur_len && !memcmp(gen, cur, gen_len),
                  "docs/configuration.md is stale: run `build/bin/taskbusd --config-doc > "
                  "docs/configuration.md`");
        free(gen);
        free(cur);
}

/* notify.channels: typed, checked, the secret from a file nobody else may read */
Test(config, notify_channels) {
        char *sec = tbt_write_temp(".secret", "hook-key\n");
        cr_assert(sec);
        cr_assert_eq(chmod(sec, 0600), 0);
        char text[2048];
        snprintf(text, sizeof(text),
                 "notify = { max_attempts = 3; channels = (\n"
                 "  { name = \"ops\"; type = \"webhook\"; url = \"https://h.example/x\";\n"
                 "    secret_file = \"%s\"; },\n"
                 "  { name = \"mail\"; type = \"smtp\"; url = \"smtp://127.0.0.1:25\";\n"
                 "    from = \"a@example.com\"; to = [\"b@example.com\", \"c@example.com\"]; }\n"
                 "); };\n",
                 sec);
        tb_config_t *c = load_ok(text);
        cr_assert_eq(c->notify_channel_cnt, 2);
        cr_assert_eq(c->notify_max_attempts, 3);
        const tb_notify_channel_t *ch = tb_config_notify_channel(c, "ops");
        cr_assert_not_null(ch);
        cr_assert_str_eq(ch->secret, "hook-key");
        ch = tb_config_notify_channel(c, "mail");
        cr_assert_eq(ch->to_cnt, 2);
        cr_assert_null(ch->secret);
        cr_assert_null(tb_config_notify_channel(c, "nope"));
        tb_config_destroy(c);

        /* readable by its group: refused (a webhook key is taskbus's own) */
        cr_assert_eq(chmod(sec, 0640), 0);
        expect_error_has(text, "notify.channels[0].secret_file");
        char errstr[1024];
        tb_config_t *none = NULL;
        cr_assert_neq(load_text(text, &none, NULL, errstr, sizeof(errstr)), TB_OK);
        cr_assert_null(strstr(errstr, "hook-key"), "the secret leaked: %s", errstr);
        cr_assert_eq(chmod(sec, 0600), 0);

        expect_error_has("notify = { channels = ( { type = \"webhook\"; url = \"http://x\"; } ); };",
                         "notify.channels[0].name: required");
        expect_error_has("notify = { channels = ( { name = \"a\"; url = \"http://x\"; } ); };",
                         "notify.channels[0].secret_file: required for a webhook");
        expect_error_has("notify = { channels = ( { name = \"a\"; url = \"ftp://x\"; } ); };",
                         "notify.channels[0].url: invalid");
        expect_error_has("notify = { channels = ( { name = \"a\"; type = \"smtp\"; "
                         "url = \"smtp://x:25\"; to = [\"b@x\"]; } ); };",
                         "notify.channels[0].from: required");
        expect_error_has("notify = { channels = ( { name = \"a\"; type = \"pager\"; } ); };",
                         "notify.channels[0].type");
        expect_error_has("notify = { channels = ( { name = \"a\"; type = \"smtp\"; "
                         "url = \"smtp://x:25\"; from = \"a@x\"; to = [\"b@x\"]; }, "
                         "{ name = \"a\"; type = \"smtp\"; url = \"smtp://x:25\"; "
                         "from = \"a@x\"; to = [\"b@x\"]; } ); };",
                         "channel 'a' is defined twice");
        expect_error_has("notify = { channels = ( { name = \"a\"; colour = \"red\"; } ); };",
                         "colour");
        expect_error_has("notify = { channels = { name = \"a\"; }; };",
                         "notify.channels: expected a list of groups");
        expect_error_has("notify = { chanels = (); };",
                         "valid keys in 'notify': backoff, backoff_max, channels, log_bytes");
        unlink(sec);
        free(sec);
}
