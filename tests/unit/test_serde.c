/**
 * @file test_serde.c
 * @brief Avro serde: canonical forms and fingerprints, round trips,
 *        defaults, encode errors naming the field, and hostile input to
 *        the decoder (every truncation, random bytes, mutations).
 */
#include "interop/fixtures.h"
#include "serde/serde.h"
#include "support.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char errbuf[512];

/* xorshift64*: a fixed seed makes every failure reproducible */
static uint64_t rng_state;
static uint64_t rng(void) {
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 0x2545F4914F6CDD1DULL;
}

/** TB_SERDE_FUZZ=N multiplies the random rounds for a longer local run. */
static int fuzz_scale(void) {
        int n = atoi(tbt_env("TB_SERDE_FUZZ", "1"));
        return n > 0 ? n : 1;
}

static char *slurp(const char *path) {
        FILE *f = fopen(path, "rb");
        if (!f)
                return NULL;
        char *buf = calloc(1, 1 << 16);
        size_t n = fread(buf, 1, (1 << 16) - 1, f);
        fclose(f);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = '\0';
        return buf;
}

static json_t *parse(const char *text) {
        json_error_t e;
        json_t *j = json_loads(text, JSON_ALLOW_NUL, &e);
        cr_assert_not_null(j, "test JSON: %s", e.text);
        return j;
}

static tb_buf_t encode_ok(tb_schema_id_t id, json_t *v) {
        tb_buf_t b = {0};
        tb_err_t err = tb_serde_encode(id, v, &b, errbuf, sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "encode %s: %s", tb_serde_name(id), errbuf);
        return b;
}

static json_t *decode_ok(tb_schema_id_t id, const tb_buf_t *b) {
        json_t *out = NULL;
        tb_schema_id_t got = TB_SCHEMA_ANY;
        tb_err_t err = tb_serde_decode(b->data, b->len, TB_SCHEMA_ANY, &got, &out, errbuf,
                                       sizeof(errbuf));
        cr_assert_eq(err, TB_OK, "decode %s: %s", tb_serde_name(id), errbuf);
        cr_assert_eq(got, id);
        return out;
}

/** Encode must fail with TB_ERR_INVALID and a message containing \p want. */
static void encode_fails(tb_schema_id_t id, const char *json, const char *want) {
        json_t *v = parse(json);
        tb_buf_t b = {0};
        errbuf[0] = '\0';
        tb_err_t err = tb_serde_encode(id, v, &b, errbuf, sizeof(errbuf));
        cr_expect_eq(err, TB_ERR_INVALID, "encode of %s should fail", json);
        cr_expect(strstr(errbuf, want) != NULL, "error '%s' should contain '%s'", errbuf, want);
        cr_expect_eq(b.len, 0, "nothing appended on failure");
        tb_buf_free(&b);
        json_decref(v);
}

/** Decode must fail with TB_ERR_INVALID and a message containing \p want. */
static void decode_fails(const void *data, size_t len, const char *want) {
        json_t *out = (json_t *)1;
        errbuf[0] = '\0';
        tb_err_t err = tb_serde_decode(data, len, TB_SCHEMA_ANY, NULL, &out, errbuf,
                                       sizeof(errbuf));
        cr_expect_eq(err, TB_ERR_INVALID, "decode should fail (want '%s'), got %d", want, err);
        cr_expect_null(out);
        cr_expect(strstr(errbuf, want) != NULL, "error '%s' should contain '%s'", errbuf, want);
        json_decref(out);
}

/** Header for schema \p id followed by \p body. */
static tb_buf_t with_header(tb_schema_id_t id, const void *body, size_t len) {
        tb_buf_t b = {0};
        uint64_t fp = tb_serde_fingerprint(id);
        unsigned char h[10] = {0xc3, 0x01};
        for (int i = 0; i < 8; i++)
                h[2 + i] = (unsigned char)(fp >> (8 * i));
        tb_buf_append(&b, h, sizeof(h));
        tb_buf_append(&b, body, len);
        return b;
}

/* ---- canonical form and fingerprints ------------------------------- */

Test(serde, init_and_names_map_by_name) {
        cr_assert_eq(tb_serde_init(errbuf, sizeof(errbuf)), TB_OK, "%s", errbuf);
        static const char *want[] = {"TaskCommand", "TaskReply", "TaskEvent", "RunRequest",
                                     "RunResult", "LogChunk", "SchedulerCheckpoint"};
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                cr_assert_str_eq(tb_serde_name(id), want[id]);
                char prefix[96];
                snprintf(prefix, sizeof(prefix), "{\"name\":\"io.taskbus.%s\",", want[id]);
                cr_assert(!strncmp(tb_serde_canonical(id), prefix, strlen(prefix)),
                          "%s canonical starts %.60s", want[id], tb_serde_canonical(id));
        }
        cr_assert_null(tb_serde_name(TB_SCHEMA__COUNT));
        cr_assert_null(tb_serde_name(TB_SCHEMA_ANY));
        cr_assert_null(tb_serde_canonical(TB_SCHEMA__COUNT));
        cr_assert_eq(tb_serde_fingerprint(TB_SCHEMA__COUNT), 0);
}

Test(serde, canonical_forms_match_python_avro) {
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                char path[1024];
                /* <Name>.txt is python-avro 1.11's canonical_form verbatim */
                snprintf(path, sizeof(path), "%s/tests/data/canonical/%s.txt", tbt_source_dir(),
                         tb_serde_name(id));
                char *py = slurp(path);
                cr_assert_not_null(py, "missing %s (regenerate with avro_interop.py canonical)",
                                   path);
                cr_expect_str_eq(tb_serde_canonical_legacy(id), py, "%s", tb_serde_name(id));
                free(py);
                /* <Name>.spec.txt is python's canonical JSON with the spec's
                 * [PRIMITIVES] rule re-applied */
                snprintf(path, sizeof(path), "%s/tests/data/canonical/%s.spec.txt",
                         tbt_source_dir(), tb_serde_name(id));
                char *spec = slurp(path);
                cr_assert_not_null(spec, "missing %s", path);
                cr_expect_str_eq(tb_serde_canonical(id), spec, "%s", tb_serde_name(id));
                free(spec);
                const char *c = tb_serde_canonical(id);
                cr_expect_eq(tb_serde_fingerprint(id), tb_serde_crc64(c, strlen(c)));
                c = tb_serde_canonical_legacy(id);
                cr_expect_eq(tb_serde_fingerprint_legacy(id), tb_serde_crc64(c, strlen(c)));
        }
}

Test(serde, canonical_forms_computed_live_by_python) {
        /* The committed files could be stale: ask /usr/bin/python3 now. */
        char *out = NULL;
        int rc = tbt_run(&out, "/usr/bin/python3 -c 'import avro.schema,sys;"
                               "print(avro.schema.parse(open(sys.argv[1]).read()).canonical_form)'"
                               " %s/schemas/TaskEvent.avsc",
                         tbt_source_dir());
        cr_assert_eq(rc, 0, "python3-avro must be installed (apt-get install python3-avro): %s",
                     out ? out : "");
        out[strcspn(out, "\n")] = '\0';
        cr_expect_str_eq(tb_serde_canonical_legacy(TB_SCHEMA_TASK_EVENT), out);
        free(out);
}

/* Vectors from the Avro project's share/test/data/schema-tests.txt, whose
 * fingerprints the Java implementation cross-checks (signed 64-bit). */
static const struct {
        const char *in, *canonical;
        int64_t fp;
        bool has_fp;
} spec_vectors[] = {
        {"\"null\"", "\"null\"", 7195948357588979594LL, true},
        {"{\"type\":\"null\"}", "\"null\"", 7195948357588979594LL, true},
        {"\"boolean\"", "\"boolean\"", -6970731678124411036LL, true},
        {"{\"type\":\"int\"}", "\"int\"", 8247732601305521295LL, true},
        {"\"long\"", "\"long\"", -3434872931120570953LL, true},
        {"\"float\"", "\"float\"", 5583340709985441680LL, true},
        {"\"double\"", "\"double\"", -8181574048448539266LL, true},
        {"\"bytes\"", "\"bytes\"", 5746618253357095269LL, true},
        {"{\"type\":\"string\"}", "\"string\"", -8142146995180207161LL, true},
        {"[  ]", "[]", -1241056759729112623LL, true},
        {"[ \"int\"  ]", "[\"int\"]", -5232228896498058493LL, true},
        {"[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]", 5392556393470105090LL,
         true},
        {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\"}",
         "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", -4824392279771201922LL, true},
        {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"namespace\":\"x.y\"}",
         "{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}", 5916914534497305771LL, true},
        {"{\"fields\":[], \"type\":\"record\", \"name\":\"a.b.foo\", \"namespace\":\"x.y\"}",
         "{\"name\":\"a.b.foo\",\"type\":\"record\",\"fields\":[]}", -4616218487480524110LL, true},
        {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"foo\", "
         "\"aliases\":[\"foo\",\"bar\"]}",
         "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", -4824392279771201922LL, true},
        {"{\"fields\":[{\"type\":{\"type\":\"boolean\"}, \"name\":\"f1\"}], \"type\":\"record\", "
         "\"name\":\"foo\"}",
         "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}",
         7843277075252814651LL, true},
        {"{ \"fields\":[{\"type\":\"boolean\", \"aliases\":[], \"name\":\"f1\", \"default\":true},"
         "{\"order\":\"descending\",\"name\":\"f2\",\"doc\":\"Hello\",\"type\":\"int\"}],"
         "\"type\":\"record\", \"name\":\"foo\"}",
         "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},"
         "{\"name\":\"f2\",\"type\":\"int\"}]}",
         -4860222112080293046LL, true},
        {"{\"type\":\"enum\", \"name\":\"foo\", \"symbols\":[\"A1\"]}",
         "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}", -6342190197741309591LL, true},
        {"{\"namespace\":\"x.y.z\", \"type\":\"enum\", \"name\":\"foo\", \"doc\":\"foo bar\", "
         "\"symbols\":[\"A1\", \"A2\"]}",
         "{\"name\":\"x.y.z.foo\",\"type\":\"enum\",\"symbols\":[\"A1\",\"A2\"]}",
         -4448647247586288245LL, true},
        {"{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}",
         "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", 1756455273707447556LL, true},
        {"{\"namespace\":\"x.y.z\", \"type\":\"fixed\", \"name\":\"foo\", \"doc\":\"foo bar\", "
         "\"size\":32}",
         "{\"name\":\"x.y.z.foo\",\"type\":\"fixed\",\"size\":32}", -3064184465700546786LL, true},
        {"{ \"items\":{\"type\":\"null\"}, \"type\":\"array\"}",
         "{\"type\":\"array\",\"items\":\"null\"}", -589620603366471059LL, true},
        {"{ \"values\":\"string\", \"type\":\"map\"}", "{\"type\":\"map\",\"values\":\"string\"}",
         -8732877298790414990LL, true},
        {"{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\", "
         "\"type\":[\"null\", \"int\", \"long\", \"PigValue\"]}]}",
         "{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":"
         "[\"null\",\"int\",\"long\",\"PigValue\"]}]}",
         -1759257747318642341LL, true},
        /* [FULLNAMES] for nested and referenced types, [PRIMITIVES] after
         * [STRIP] for logical types */
        {"{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"a.b\",\"fields\":["
         "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"X\"]}},"
         "{\"name\":\"e2\",\"type\":\"E\"},"
         "{\"name\":\"f\",\"type\":{\"type\":\"fixed\",\"name\":\"c.F\",\"size\":2}},"
         "{\"name\":\"t\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}}]}",
         "{\"name\":\"a.b.R\",\"type\":\"record\",\"fields\":[{\"name\":\"e\",\"type\":{\"name\":"
         "\"a.b.E\",\"type\":\"enum\",\"symbols\":[\"X\"]}},{\"name\":\"e2\",\"type\":\"a.b.E\"},"
         "{\"name\":\"f\",\"type\":{\"name\":\"c.F\",\"type\":\"fixed\",\"size\":2}},{\"name\":"
         "\"t\",\"type\":\"long\"}]}",
         0, false},
};

Test(serde, canonical_form_spec_vectors) {
        for (size_t i = 0; i < TB_ARRAY_LEN(spec_vectors); i++) {
                char *out = NULL;
                tb_err_t err = tb_serde_canonical_form(spec_vectors[i].in,
                                                       strlen(spec_vectors[i].in), false, &out,
                                                       errbuf, sizeof(errbuf));
                cr_assert_eq(err, TB_OK, "vector %zu: %s", i, errbuf);
                cr_expect_str_eq(out, spec_vectors[i].canonical, "vector %zu", i);
                if (spec_vectors[i].has_fp)
                        cr_expect_eq((int64_t)tb_serde_crc64(out, strlen(out)), spec_vectors[i].fp,
                                     "vector %zu fingerprint", i);
                free(out);
        }
}

Test(serde, canonical_form_rejects_bad_schemas) {
        static const char *bad[] = {
                "{",
                "{\"type\":\"record\",\"fields\":[]}",
                "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"Nope\"}]}",
                "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"A\"]}",
                "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\","
                "\"default\":\"x\"}]}",
                "[\"int\",[\"null\"]]",
                "42",
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
                char *out = NULL;
                cr_expect_eq(tb_serde_canonical_form(bad[i], strlen(bad[i]), false, &out, errbuf,
                                                     sizeof(errbuf)),
                             TB_ERR_INVALID, "schema %zu should be rejected", i);
                cr_expect_null(out);
                cr_expect(errbuf[0] != '\0');
        }
}

/* ---- round trips ---------------------------------------------------- */

Test(serde, roundtrip_fixtures_every_schema) {
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                json_t *arr = tbt_fixture_values(id);
                cr_assert(json_array_size(arr) > 0, "fixtures for %s", tb_serde_name(id));
                size_t i;
                json_t *v;
                json_array_foreach(arr, i, v) {
                        tb_buf_t b = encode_ok(id, v);
                        cr_assert(b.len > 10);
                        cr_expect_eq((unsigned char)b.data[0], 0xc3);
                        cr_expect_eq((unsigned char)b.data[1], 0x01);
                        uint64_t fp = 0;
                        for (int k = 7; k >= 0; k--)
                                fp = (fp << 8) | (unsigned char)b.data[2 + k];
                        cr_expect_eq(fp, tb_serde_fingerprint(id));
                        json_t *back = decode_ok(id, &b);
                        char *a = json_dumps(v, JSON_SORT_KEYS), *c = json_dumps(back, JSON_SORT_KEYS);
                        cr_expect(json_equal(v, back), "%s[%zu] round trip:\n%s\n%s",
                                  tb_serde_name(id), i, a, c);
                        free(a);
                        free(c);
                        /* expecting the right schema also works */
                        json_t *again = NULL;
                        cr_expect_eq(tb_serde_decode(b.data, b.len, id, NULL, &again, errbuf,
                                                     sizeof(errbuf)),
                                     TB_OK, "%s", errbuf);
                        json_decref(again);
                        json_decref(back);
                        tb_buf_free(&b);
                }
                json_decref(arr);
        }
}

Test(serde, roundtrip_bytes_with_nul_and_high_bytes) {
        static const char raw[] = {'\0', 'a', '\xff', '\0', '\x80', '\xc3', '\n', '\0'};
        json_t *v = parse("{\"run_id\":\"r\",\"task_id\":\"t\",\"seq\":9223372036854775807,"
                          "\"stream\":\"STDERR\",\"at\":-9223372036854775808,\"data\":null}");
        json_object_set_new(v, "data", json_stringn_nocheck(raw, sizeof(raw)));
        tb_buf_t b = encode_ok(TB_SCHEMA_LOG_CHUNK, v);
        json_t *back = decode_ok(TB_SCHEMA_LOG_CHUNK, &b);
        json_t *data = json_object_get(back, "data");
        cr_assert_eq(json_string_length(data), sizeof(raw));
        cr_assert_eq(memcmp(json_string_value(data), raw, sizeof(raw)), 0);
        cr_expect(json_is_false(json_object_get(back, "eof")), "eof takes its default");
        cr_expect_eq(json_integer_value(json_object_get(back, "seq")), INT64_MAX);
        cr_expect_eq(json_integer_value(json_object_get(back, "at")), INT64_MIN);
        json_decref(back);
        json_decref(v);
        tb_buf_free(&b);
}

Test(serde, roundtrip_string_with_nul_and_unicode) {
        json_t *v = parse("{\"correlation_id\":\"a\\u0000b\",\"command_id\":\"\\u00e9\\u2603"
                          "\\ud83d\\ude00\",\"task_id\":\"\",\"status\":\"ACCEPTED\","
                          "\"replied_at\":5}");
        tb_buf_t b = encode_ok(TB_SCHEMA_TASK_REPLY, v);
        json_t *back = decode_ok(TB_SCHEMA_TASK_REPLY, &b);
        json_t *c = json_object_get(back, "correlation_id");
        cr_expect_eq(json_string_length(c), 3);
        cr_expect_eq(memcmp(json_string_value(c), "a\0b", 3), 0);
        cr_expect_str_eq(json_string_value(json_object_get(back, "command_id")),
                         "\xc3\xa9\xe2\x98\x83\xf0\x9f\x98\x80");
        json_decref(back);
        json_decref(v);
        tb_buf_free(&b);
}

Test(serde, encode_appends_to_existing_buffer) {
        json_t *v = parse("{\"task_id\":\"t\",\"task_version\":1,\"at\":2}");
        tb_buf_t b = {0};
        tb_buf_append(&b, "xyz", 3);
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_SCHEDULER_CHECKPOINT, v, &b, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);
        cr_assert_eq(memcmp(b.data, "xyz", 3), 0);
        json_t *back = NULL;
        cr_assert_eq(tb_serde_decode(b.data + 3, b.len - 3, TB_SCHEMA_SCHEDULER_CHECKPOINT, NULL,
                                     &back, errbuf, sizeof(errbuf)),
                     TB_OK, "%s", errbuf);
        json_decref(back);
        json_decref(v);
        tb_buf_free(&b);
}

/* ---- defaults -------------------------------------------------------- */

Test(serde, defaults_applied_for_missing_fields) {
        json_t *v = parse("{\"event_id\":\"e\",\"task_id\":\"t\",\"version\":1,\"type\":\"CREATED\","
                          "\"at\":1,\"actor\":\"a\",\"created_at\":1,\"created_by\":\"a\","
                          "\"task\":{\"name\":\"n\",\"script\":\"s\",\"security_group\":\"g\","
                          "\"user_id\":\"u\",\"schedule\":{\"kind\":\"EVERY\",\"every_ms\":60000},"
                          "\"retries\":{}}}");
        tb_buf_t b = encode_ok(TB_SCHEMA_TASK_EVENT, v);
        json_t *back = decode_ok(TB_SCHEMA_TASK_EVENT, &b);
        json_t *want = parse(
                "{\"event_id\":\"e\",\"task_id\":\"t\",\"version\":1,\"type\":\"CREATED\",\"at\":1,"
                "\"actor\":\"a\",\"command_id\":\"\",\"changed_fields\":[],\"created_at\":1,"
                "\"created_by\":\"a\",\"epoch\":0,"
                "\"task\":{\"name\":\"n\",\"script\":\"s\",\"argv\":[],\"security_group\":\"g\","
                "\"user_id\":\"u\",\"schedule\":{\"kind\":\"EVERY\",\"once_at\":null,"
                "\"every_ms\":60000,\"cron\":null,\"timezone\":\"UTC\",\"start_at\":null,"
                "\"end_at\":null,\"dst_gap\":\"SHIFT\",\"dst_overlap\":\"FIRST\",\"jitter_ms\":0},"
                "\"expiry_ms\":3600000,\"executor\":\"shell\",\"executor_options\":{},"
                "\"retries\":{\"max_attempts\":1,\"backoff_ms\":10000,\"backoff_max_ms\":600000},"
                "\"overlap\":\"FORBID\",\"misfire\":\"RUN_ONCE\",\"expires_at\":null,"
                "\"log_retention_ms\":2592000000,\"paused\":false,\"labels\":{},"
                "\"home_region\":\"\",\"parameters\":[],\"notify\":[],\"calendars\":[],"
                "\"after\":[],\"after_mode\":\"ALL\",\"after_deadline_ms\":null},"
                "\"run_params\":{},\"run_nominal_time\":null}");
        char *a = json_dumps(back, JSON_SORT_KEYS), *w = json_dumps(want, JSON_SORT_KEYS);
        cr_expect(json_equal(back, want), "got  %s\nwant %s", a, w);
        free(a);
        free(w);
        json_decref(want);
        json_decref(back);
        json_decref(v);
        tb_buf_free(&b);

        v = parse("{\"run_id\":\"r\",\"task_id\":\"t\",\"task_version\":3,\"nominal_time\":5,"
                  "\"emitted_at\":6,\"snapshot\":{\"name\":\"n\",\"script\":\"s\","
                  "\"security_group\":\"g\",\"executor\":\"shell\",\"expiry_ms\":9}}");
        b = encode_ok(TB_SCHEMA_RUN_REQUEST, v);
        back = decode_ok(TB_SCHEMA_RUN_REQUEST, &b);
        cr_expect_eq(json_integer_value(json_object_get(back, "attempt")), 1);
        cr_expect_str_eq(json_string_value(json_object_get(back, "trigger")), "SCHEDULE");
        json_t *snap = json_object_get(back, "snapshot");
        cr_expect_str_eq(json_string_value(json_object_get(snap, "overlap")), "FORBID");
        cr_expect_eq(json_integer_value(json_object_get(snap, "log_retention_ms")), 2592000000LL);
        cr_expect_eq(json_array_size(json_object_get(snap, "argv")), 0);
        json_decref(back);
        json_decref(v);
        tb_buf_free(&b);
}

/* ---- encode errors name the field ----------------------------------- */

#define EVENT_HEAD                                                                          \
        "\"event_id\":\"e\",\"task_id\":\"t\",\"version\":1,\"type\":\"CREATED\",\"at\":1,"  \
        "\"actor\":\"a\",\"created_at\":1,\"created_by\":\"a\""
#define TASK_HEAD                                                                           \
        "\"name\":\"n\",\"script\":\"s\",\"security_group\":\"g\",\"user_id\":\"u\","       \
        "\"retries\":{}"

Test(serde, encode_errors_name_the_field) {
        encode_fails(TB_SCHEMA_TASK_EVENT,
                     "{" EVENT_HEAD ",\"task\":{" TASK_HEAD ",\"schedule\":{\"kind\":\"WEEKLY\"}}}",
                     "TaskEvent.task.schedule.kind: 'WEEKLY' is not one of ONCE, EVERY, CRON");
        encode_fails(TB_SCHEMA_TASK_EVENT,
                     "{\"event_id\":\"e\",\"task_id\":\"t\",\"version\":\"1\",\"type\":\"CREATED\","
                     "\"at\":1,\"actor\":\"a\",\"created_at\":1,\"created_by\":\"a\"}",
                     "TaskEvent.version: expected long, got string");
        encode_fails(TB_SCHEMA_TASK_EVENT, "{" EVENT_HEAD ",\"bogus\":1}",
                     "TaskEvent.bogus: unknown field");
        encode_fails(TB_SCHEMA_TASK_EVENT,
                     "{\"event_id\":\"e\",\"task_id\":\"t\",\"version\":1,\"type\":\"CREATED\","
                     "\"at\":1,\"created_at\":1,\"created_by\":\"a\"}",
                     "TaskEvent.actor: missing required field");
        encode_fails(TB_SCHEMA_TASK_EVENT,
                     "{" EVENT_HEAD ",\"task\":{" TASK_HEAD ",\"schedule\":{\"kind\":\"ONCE\"},"
                     "\"labels\":{\"team\":7}}}",
                     "TaskEvent.task.labels[\"team\"]: expected string, got integer");
        encode_fails(TB_SCHEMA_TASK_EVENT, "{" EVENT_HEAD ",\"changed_fields\":[\"a\",null]}",
                     "TaskEvent.changed_fields[1]: expected string, got null");
        encode_fails(TB_SCHEMA_TASK_EVENT,
                     "{" EVENT_HEAD ",\"task\":{" TASK_HEAD ",\"schedule\":{\"kind\":\"ONCE\","
                     "\"once_at\":\"2026-01-01T00:00:00Z\"}}}",
                     "TaskEvent.task.schedule.once_at: expected long, got string");
        encode_fails(TB_SCHEMA_TASK_EVENT, "{" EVENT_HEAD ",\"task\":\"x\"}",
                     "TaskEvent.task: expected record io.taskbus.TaskSpec, got string");
        encode_fails(TB_SCHEMA_TASK_EVENT, "{" EVENT_HEAD ",\"task\":{" TASK_HEAD "}}",
                     "TaskEvent.task.schedule: missing required field");
        encode_fails(TB_SCHEMA_RUN_REQUEST,
                     "{\"run_id\":\"r\",\"task_id\":\"t\",\"task_version\":3,\"nominal_time\":5,"
                     "\"emitted_at\":6,\"attempt\":4294967296,\"snapshot\":{}}",
                     "RunRequest.attempt: 4294967296 does not fit in an int");
        encode_fails(TB_SCHEMA_RUN_RESULT,
                     "{\"run_id\":\"r\",\"task_id\":\"t\",\"nominal_time\":1,\"status\":\"FAILED\","
                     "\"at\":1,\"exit_code\":1.5}",
                     "RunResult.exit_code: expected int, got real");
        encode_fails(TB_SCHEMA_LOG_CHUNK,
                     "{\"run_id\":\"r\",\"task_id\":\"t\",\"seq\":0,\"stream\":\"STDOUT\",\"at\":1,"
                     "\"data\":\"x\",\"eof\":\"yes\"}",
                     "LogChunk.eof: expected boolean, got string");
        encode_fails(TB_SCHEMA_TASK_COMMAND, "[]", "TaskCommand: expected record");

        /* invalid UTF-8 in a string field (bytes fields may hold anything) */
        json_t *v = parse("{\"task_id\":\"t\",\"task_version\":1,\"at\":2}");
        json_object_set_new(v, "task_id", json_stringn_nocheck("\xff\xfe", 2));
        tb_buf_t b = {0};
        cr_expect_eq(tb_serde_encode(TB_SCHEMA_SCHEDULER_CHECKPOINT, v, &b, errbuf, sizeof(errbuf)),
                     TB_ERR_INVALID);
        cr_expect(strstr(errbuf, "SchedulerCheckpoint.task_id: string is not valid UTF-8"), "%s",
                  errbuf);
        json_decref(v);
        tb_buf_free(&b);

        v = json_object();
        cr_expect_eq(tb_serde_encode(TB_SCHEMA__COUNT, v, &b, errbuf, sizeof(errbuf)),
                     TB_ERR_INVALID);
        json_decref(v);
}

/* ---- decode: hostile input ------------------------------------------ */

/* A valid LogChunk body: run_id "a", task_id "b", seq 0, STDOUT, at 0,
 * empty data, eof false. */
static const unsigned char chunk_ok[] = {0x02, 'a', 0x02, 'b', 0x00, 0x00, 0x00, 0x00, 0x00};

static void chunk_variant(size_t at, const void *repl, size_t rlen, size_t drop,
                          const char *want) {
        unsigned char body[64];
        memcpy(body, chunk_ok, at);
        memcpy(body + at, repl, rlen);
        memcpy(body + at + rlen, chunk_ok + at + drop, sizeof(chunk_ok) - at - drop);
        tb_buf_t b = with_header(TB_SCHEMA_LOG_CHUNK, body, sizeof(chunk_ok) - drop + rlen);
        decode_fails(b.data, b.len, want);
        tb_buf_free(&b);
}

Test(serde, decode_rejects_malformed_fields_with_path) {
        tb_buf_t ok = with_header(TB_SCHEMA_LOG_CHUNK, chunk_ok, sizeof(chunk_ok));
        json_t *out = decode_ok(TB_SCHEMA_LOG_CHUNK, &ok);
        cr_expect_str_eq(json_string_value(json_object_get(out, "run_id")), "a");
        json_decref(out);
        tb_buf_free(&ok);

        chunk_variant(8, "\x02", 1, 1, "LogChunk.eof: invalid boolean byte 0x02");
        chunk_variant(5, "\x06", 1, 1, "LogChunk.stream: enum index 3 out of range");
        chunk_variant(5, "\x01", 1, 1, "LogChunk.stream: enum index -1 out of range");
        chunk_variant(0, "\x01", 1, 2, "LogChunk.run_id: negative string length -1");
        chunk_variant(0, "\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 9, 2,
                      "LogChunk.run_id: string length");
        chunk_variant(4, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11, 1,
                      "LogChunk.seq: long varint longer than 10 bytes");
        chunk_variant(4, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10, 1,
                      "LogChunk.seq: long varint overflows 64 bits");
        chunk_variant(4, "\x80\x00", 2, 1, "LogChunk.seq: overlong (non-minimal) long varint");
        chunk_variant(5, "\x80\x80\x80\x80\x10", 5, 1, "LogChunk.stream: enum index varint overflows");
        chunk_variant(0, "\x02\xff", 2, 2, "LogChunk.run_id: string is not valid UTF-8");
        chunk_variant(0, "\x04\xed\xa0", 3, 2, "LogChunk.run_id: string is not valid UTF-8");
        chunk_variant(7, "\x14", 1, 1, "LogChunk.data: bytes length 10 exceeds the 1 bytes left");

        /* union index: TaskReply with empty strings, enums 0, "" message,
         * then field = branch 2 of ["null","string"] */
        static const unsigned char reply[] = {0, 0, 0, 0, 0, 0, 0x04, 0, 0};
        tb_buf_t b = with_header(TB_SCHEMA_TASK_REPLY, reply, sizeof(reply));
        decode_fails(b.data, b.len, "TaskReply.field: union index 2 out of range (2 branches)");
        tb_buf_free(&b);
        static const unsigned char reply_neg[] = {0, 0, 0, 0, 0, 0, 0x01, 0, 0};
        b = with_header(TB_SCHEMA_TASK_REPLY, reply_neg, sizeof(reply_neg));
        decode_fails(b.data, b.len, "TaskReply.field: union index -1 out of range");
        tb_buf_free(&b);
}

/* RunRequest with everything empty/zero and a chosen argv and
 * executor_options encoding in the middle. */
static tb_buf_t run_request(const void *argv, size_t alen, const void *opts, size_t olen) {
        unsigned char body[256];
        size_t n = 0;
        static const unsigned char head[] = {0, 0, 0, 0, 0, 0, 0, /* run..emitted_at */
                                             0, 0};                /* name, script */
        memcpy(body + n, head, sizeof(head));
        n += sizeof(head);
        memcpy(body + n, argv, alen);
        n += alen;
        body[n++] = 0; /* security_group */
        body[n++] = 0; /* executor */
        memcpy(body + n, opts, olen);
        n += olen;
        static const unsigned char tail[] = {0, 0, 0, 0, 0, 0}; /* expiry, overlap, max_att,
                                                                    retention, params, parents */
        memcpy(body + n, tail, sizeof(tail));
        n += sizeof(tail);
        return with_header(TB_SCHEMA_RUN_REQUEST, body, n);
}

Test(serde, decode_blocks_arrays_and_maps) {
        /* negative block count carries a byte size: valid Avro */
        tb_buf_t b = run_request("\x03\x08\x02x\x02y\x00", 7, "\x00", 1);
        json_t *out = decode_ok(TB_SCHEMA_RUN_REQUEST, &b);
        json_t *argv = json_object_get(json_object_get(out, "snapshot"), "argv");
        cr_expect_eq(json_array_size(argv), 2);
        cr_expect_str_eq(json_string_value(json_array_get(argv, 1)), "y");
        json_decref(out);
        tb_buf_free(&b);

        b = run_request("\x03\x06\x02x\x02y\x00", 7, "\x00", 1);
        decode_fails(b.data, b.len, "RunRequest.snapshot.argv: block size says 3 bytes but its");
        tb_buf_free(&b);
        b = run_request("\x80\x80\x80\x80\x80\x80\x01", 7, "\x00", 1);
        decode_fails(b.data, b.len, "RunRequest.snapshot.argv: block of");
        tb_buf_free(&b);
        b = run_request("\x02\x02x\x02\x01", 5, "\x00", 1);
        decode_fails(b.data, b.len, "RunRequest.snapshot.argv[1]: negative string length");
        tb_buf_free(&b);
        b = run_request("\x00", 1, "\x02\x06" "a\0b" "\x00\x00", 7);
        decode_fails(b.data, b.len, "RunRequest.snapshot.executor_options[\"a\\x00b\"]: map key "
                                    "contains a NUL byte");
        tb_buf_free(&b);
        b = run_request("\x00", 1, "\x02\x02k\x02\xc0\x00", 6);
        decode_fails(b.data, b.len, "RunRequest.snapshot.executor_options[\"k\"]: string is not "
                                    "valid UTF-8");
        tb_buf_free(&b);
        b = run_request("\x00", 1, "\x02\x02k\x04vv\x00", 7);
        out = decode_ok(TB_SCHEMA_RUN_REQUEST, &b);
        cr_expect_str_eq(json_string_value(json_object_get(
                                 json_object_get(json_object_get(out, "snapshot"), "executor_options"),
                                 "k")),
                         "vv");
        json_decref(out);
        tb_buf_free(&b);
}

Test(serde, decode_rejects_bad_envelopes) {
        json_t *v = parse("{\"task_id\":\"t\",\"task_version\":1,\"at\":2}");
        tb_buf_t b = encode_ok(TB_SCHEMA_SCHEDULER_CHECKPOINT, v);
        json_decref(v);

        decode_fails(NULL, 0, "too short");
        decode_fails(b.data, 9, "too short");
        b.data[0] = 'O';
        decode_fails(b.data, b.len, "bad magic 4F 01");
        b.data[0] = (char)0xc3;
        b.data[1] = 0x00;
        decode_fails(b.data, b.len, "bad magic C3 00");
        b.data[1] = 0x01;
        b.data[5] ^= 0x40;
        decode_fails(b.data, b.len, "unknown schema fingerprint");
        b.data[5] ^= 0x40;

        json_t *out = NULL;
        cr_expect_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_EVENT, NULL, &out, errbuf,
                                     sizeof(errbuf)),
                     TB_ERR_INVALID);
        cr_expect(strstr(errbuf, "message is a SchedulerCheckpoint, expected a TaskEvent"), "%s",
                  errbuf);
        cr_expect_null(out);

        tb_buf_append(&b, "\x00", 1);
        decode_fails(b.data, b.len, "SchedulerCheckpoint: 1 trailing bytes");
        tb_buf_free(&b);
}

Test(serde, decode_accepts_python_avro_legacy_fingerprint) {
        tb_buf_t b = with_header(TB_SCHEMA_LOG_CHUNK, chunk_ok, sizeof(chunk_ok));
        uint64_t fp = tb_serde_fingerprint_legacy(TB_SCHEMA_LOG_CHUNK);
        cr_assert_neq(fp, tb_serde_fingerprint(TB_SCHEMA_LOG_CHUNK));
        for (int i = 0; i < 8; i++)
                b.data[2 + i] = (char)(fp >> (8 * i));
        json_t *out = decode_ok(TB_SCHEMA_LOG_CHUNK, &b);
        json_decref(out);
        tb_buf_free(&b);
}

static void decode_must_not_crash(const void *data, size_t len, size_t *nok) {
        json_t *out = NULL;
        tb_schema_id_t got = TB_SCHEMA_ANY;
        tb_err_t err = tb_serde_decode(data, len, TB_SCHEMA_ANY, &got, &out, errbuf,
                                       sizeof(errbuf));
        if (err == TB_OK) {
                /* whatever was accepted must be a value we can write again,
                 * and read back to the same thing */
                cr_assert_not_null(out);
                tb_buf_t b = encode_ok(got, out);
                json_t *back = decode_ok(got, &b);
                cr_assert(json_equal(out, back));
                json_decref(back);
                tb_buf_free(&b);
                (*nok)++;
        } else {
                cr_assert_eq(err, TB_ERR_INVALID, "err %d: %s", err, errbuf);
                cr_assert_null(out);
                cr_assert(errbuf[0] != '\0');
        }
        json_decref(out);
}

Test(serde, decode_every_truncation_fails) {
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                json_t *arr = tbt_fixture_values(id);
                size_t i;
                json_t *v;
                json_array_foreach(arr, i, v) {
                        tb_buf_t b = encode_ok(id, v);
                        for (size_t n = 0; n < b.len; n++) {
                                /* a copy of exactly n bytes, so ASan sees any overread */
                                char *cut = malloc(n ? n : 1);
                                memcpy(cut, b.data, n);
                                json_t *out = NULL;
                                tb_err_t err = tb_serde_decode(cut, n, TB_SCHEMA_ANY, NULL, &out,
                                                               errbuf, sizeof(errbuf));
                                cr_assert_eq(err, TB_ERR_INVALID, "%s[%zu] cut at %zu of %zu",
                                             tb_serde_name(id), i, n, b.len);
                                cr_assert_null(out);
                                free(cut);
                        }
                        tb_buf_free(&b);
                }
                json_decref(arr);
        }
}

Test(serde, decode_random_bytes_never_crash) {
        rng_state = 0x9e3779b97f4a7c15ULL;
        size_t nok = 0;
        unsigned char buf[300];
        for (int round = 0; round < 4000 * fuzz_scale(); round++) {
                size_t len = rng() % sizeof(buf);
                for (size_t k = 0; k < len; k++)
                        buf[k] = (unsigned char)rng();
                char *copy = malloc(len ? len : 1);
                memcpy(copy, buf, len);
                decode_must_not_crash(copy, len, &nok);
                free(copy);
        }
        /* random bodies behind a valid header reach the walker */
        for (int round = 0; round < 6000 * fuzz_scale(); round++) {
                tb_schema_id_t id = (tb_schema_id_t)(rng() % TB_SCHEMA__COUNT);
                size_t len = rng() % 200;
                for (size_t k = 0; k < len; k++) {
                        uint64_t r = rng();
                        /* small varints are likelier to parse a few fields deep */
                        buf[k] = (r & 3) ? (unsigned char)((r >> 8) & 0x0e) : (unsigned char)(r >> 16);
                }
                tb_buf_t b = with_header(id, buf, len);
                char *copy = malloc(b.len);
                memcpy(copy, b.data, b.len);
                decode_must_not_crash(copy, b.len, &nok);
                free(copy);
                tb_buf_free(&b);
        }
        cr_log_info("random: %zu of %d buffers happened to decode", nok, 10000 * fuzz_scale());
}

Test(serde, decode_mutations_never_crash) {
        rng_state = 0x2545f4914f6cdd1dULL;
        size_t nok = 0, total = 0;
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                json_t *arr = tbt_fixture_values(id);
                size_t i;
                json_t *v;
                json_array_foreach(arr, i, v) {
                        tb_buf_t b = encode_ok(id, v);
                        for (int round = 0; round < 1500 * fuzz_scale(); round++) {
                                size_t len = b.len;
                                char *m = malloc(len + 8);
                                memcpy(m, b.data, len);
                                int kind = (int)(rng() % 4), edits = 1 + (int)(rng() % 3);
                                for (int e = 0; e < edits; e++) {
                                        size_t at = 10 + rng() % (len - 10);
                                        if (kind == 0)
                                                m[at] = (char)rng();
                                        else if (kind == 1)
                                                m[at] ^= (char)(1u << (rng() % 8));
                                        else if (kind == 2 && len > 11) { /* delete a byte */
                                                memmove(m + at, m + at + 1, len - at - 1);
                                                len--;
                                        } else if (kind == 3) { /* insert a byte */
                                                memmove(m + at + 1, m + at, len - at);
                                                m[at] = (char)rng();
                                                len++;
                                                break;
                                        }
                                }
                                char *exact = malloc(len);
                                memcpy(exact, m, len);
                                decode_must_not_crash(exact, len, &nok);
                                free(exact);
                                free(m);
                                total++;
                        }
                        tb_buf_free(&b);
                }
                json_decref(arr);
        }
        cr_log_info("mutations: %zu of %zu still decoded", nok, total);
}

/* ---- concurrency ----------------------------------------------------- */

static void *hammer(void *arg) {
        json_t *events = arg;
        char err[256];
        for (int k = 0; k < 1500; k++) {
                json_t *v = json_array_get(events, (size_t)k % json_array_size(events));
                tb_buf_t b = {0};
                if (tb_serde_encode(TB_SCHEMA_TASK_EVENT, v, &b, err, sizeof(err)) != TB_OK)
                        return (void *)"encode failed";
                json_t *back = NULL;
                tb_err_t e = tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_EVENT, NULL, &back, err,
                                             sizeof(err));
                bool same = e == TB_OK && json_equal(v, back);
                json_decref(back);
                tb_buf_free(&b);
                if (!same)
                        return (void *)"round trip differs";
        }
        return NULL;
}

Test(serde, concurrent_encode_decode) {
        json_t *events = tbt_fixture_values(TB_SCHEMA_TASK_EVENT);
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
                pthread_create(&th[i], NULL, hammer, events);
        for (int i = 0; i < 4; i++) {
                void *res = NULL;
                pthread_join(th[i], &res);
                cr_expect_null(res, "thread %d: %s", i, res ? (char *)res : "");
        }
        json_decref(events);
}

Test(serde, throughput_report) {
        json_t *events = tbt_fixture_values(TB_SCHEMA_TASK_EVENT);
        json_t *v = json_array_get(events, 0);
        int64_t t0 = tb_mono_us();
        int n = 5000;
        for (int k = 0; k < n; k++) {
                tb_buf_t b = encode_ok(TB_SCHEMA_TASK_EVENT, v);
                json_t *back = decode_ok(TB_SCHEMA_TASK_EVENT, &b);
                json_decref(back);
                tb_buf_free(&b);
        }
        int64_t us = tb_mono_us() - t0;
        cr_log_info("%d TaskEvent encode+decode in %lld ms (%.0f/s)", n, (long long)us / 1000,
                    n * 1e6 / (double)(us ? us : 1));
        json_decref(events);
}

/* ---- older writer versions (schemas/old/) --------------------------- */

/* A RunResult written with the schema before ranges (schemas/old/RunResult_v1.avsc)
 * by python3-avro, in tests/data/old/RunResult_v1.hex: the spec fingerprint,
 * then python-avro 1.11's own. */
Test(serde, old_run_result_decodes_with_the_new_fields_defaulted) {
        tb_buf_t olds[2];
        size_t cnt = tbt_hex_records("tests/data/old/RunResult_v1.hex", olds, 2);
        cr_assert_eq(cnt, 2, "tests/data/old/RunResult_v1.hex: two records");
        for (size_t k = 0; k < cnt; k++) {
                tb_buf_t b = olds[k];
                uint64_t fp = 0;
                for (int i = 7; i >= 0; i--)
                        fp = (fp << 8) | b.data[2 + i];
                cr_assert_neq(fp, tb_serde_fingerprint(TB_SCHEMA_RUN_RESULT),
                              "the old record has the old fingerprint");
                cr_assert_neq(fp, tb_serde_fingerprint_legacy(TB_SCHEMA_RUN_RESULT));
                json_t *v = decode_ok(TB_SCHEMA_RUN_RESULT, &b);
                cr_assert_str_eq(json_string_value(json_object_get(v, "status")), "SKIPPED_PAUSED");
                cr_assert_str_eq(json_string_value(json_object_get(v, "task_id")),
                                 "6f1c2e4a-1b2c-4d3e-8f90-a1b2c3d4e5f6");
                cr_assert_eq(json_integer_value(json_object_get(v, "nominal_time")),
                             1767225601000LL);
                cr_assert_eq(json_integer_value(json_object_get(v, "at")), 1767225601200LL);
                cr_assert_str_eq(json_string_value(json_object_get(v, "host")), "sched-1");
                /* the fields added since take their defaults */
                cr_assert(json_is_null(json_object_get(v, "last_nominal_time")));
                cr_assert_eq(json_integer_value(json_object_get(v, "occurrences")), 1);
                /* and it encodes again with the current schema */
                tb_buf_t again = encode_ok(TB_SCHEMA_RUN_RESULT, v);
                json_t *v2 = decode_ok(TB_SCHEMA_RUN_RESULT, &again);
                cr_assert(json_equal(v, v2));
                json_decref(v2);
                json_decref(v);
                tb_buf_free(&again);
                /* strict as ever: a truncated old record is refused */
                decode_fails(b.data, b.len - 1, "RunResult");
                tb_buf_free(&b);
        }
}

Test(serde, new_run_result_carries_a_range) {
        json_t *v = parse("{\"run_id\": \"r\", \"task_id\": \"t\", \"nominal_time\": 1000, "
                          "\"status\": \"SKIPPED_PAUSED\", \"at\": 5000, "
                          "\"last_nominal_time\": 61000, \"occurrences\": 61}");
        tb_buf_t b = encode_ok(TB_SCHEMA_RUN_RESULT, v);
        json_t *out = decode_ok(TB_SCHEMA_RUN_RESULT, &b);
        cr_assert_eq(json_integer_value(json_object_get(out, "last_nominal_time")), 61000);
        cr_assert_eq(json_integer_value(json_object_get(out, "occurrences")), 61);
        json_decref(out);
        json_decref(v);
        tb_buf_free(&b);
}

/* A TaskEvent written before parameters, notify, calendars and run_params
 * (schemas/old/TaskEvent_v1.avsc) by python3-avro, in
 * tests/data/old/TaskEvent_v1.hex: the fields added inside the nested TaskSpec
 * take their defaults as well as the top-level ones. */
Test(serde, old_task_event_decodes_with_nested_defaults) {
        tb_buf_t olds[2];
        size_t cnt = tbt_hex_records("tests/data/old/TaskEvent_v1.hex", olds, 2);
        cr_assert_eq(cnt, 2, "tests/data/old/TaskEvent_v1.hex: two records");
        for (size_t k = 0; k < cnt; k++) {
                tb_buf_t b = olds[k];
                json_t *v = decode_ok(TB_SCHEMA_TASK_EVENT, &b);
                cr_assert_str_eq(json_string_value(json_object_get(v, "type")), "UPDATED");
                cr_assert_eq(json_integer_value(json_object_get(v, "version")), 3);
                json_t *task = json_object_get(v, "task");
                cr_assert_str_eq(json_string_value(json_object_get(task, "name")), "nightly-report");
                cr_assert_str_eq(json_string_value(json_object_get(
                                         json_object_get(task, "schedule"), "cron")),
                                 "0 6 * * *");
                cr_assert(json_is_array(json_object_get(task, "parameters")));
                cr_assert_eq(json_array_size(json_object_get(task, "parameters")), 0);
                cr_assert_eq(json_array_size(json_object_get(task, "notify")), 0);
                cr_assert_eq(json_array_size(json_object_get(task, "calendars")), 0);
                cr_assert(json_is_object(json_object_get(v, "run_params")));
                cr_assert(json_is_null(json_object_get(v, "run_nominal_time")));
                tb_buf_t again = encode_ok(TB_SCHEMA_TASK_EVENT, v);
                json_t *v2 = decode_ok(TB_SCHEMA_TASK_EVENT, &again);
                cr_assert(json_equal(v, v2));
                json_decref(v2);
                json_decref(v);
                tb_buf_free(&again);
                decode_fails(b.data, b.len - 1, "TaskEvent");
                tb_buf_free(&b);
        }
}

/* A TaskCommand written before params (schemas/old/TaskCommand_v1.avsc) by
 * python3-avro, in tests/data/old/TaskCommand_v1.hex: a RUN_NOW of an older
 * producer decodes with params {} (its task's defaults apply). */
Test(serde, old_task_command_decodes_with_empty_params) {
        tb_buf_t olds[2];
        size_t cnt = tbt_hex_records("tests/data/old/TaskCommand_v1.hex", olds, 2);
        cr_assert_eq(cnt, 2, "tests/data/old/TaskCommand_v1.hex: two records");
        for (size_t k = 0; k < cnt; k++) {
                tb_buf_t b = olds[k];
                json_t *v = decode_ok(TB_SCHEMA_TASK_COMMAND, &b);
                cr_assert_str_eq(json_string_value(json_object_get(v, "type")), "RUN_NOW");
                cr_assert_str_eq(json_string_value(json_object_get(v, "task_id")),
                                 "nightly-report");
                cr_assert_eq(json_integer_value(json_object_get(v, "requested_at")),
                             1767225600123);
                cr_assert(json_is_object(json_object_get(v, "params")));
                cr_assert_eq(json_object_size(json_object_get(v, "params")), 0);
                tb_buf_t again = encode_ok(TB_SCHEMA_TASK_COMMAND, v);
                json_t *v2 = decode_ok(TB_SCHEMA_TASK_COMMAND, &again);
                cr_assert(json_equal(v, v2));
                json_decref(v2);
                json_decref(v);
                tb_buf_free(&again);
                decode_fails(b.data, b.len - 1, "TaskCommand");
                tb_buf_free(&b);
        }
}

/* A TaskEvent written before after, after_mode and after_deadline_ms
 * (schemas/old/TaskEvent_v2.avsc) by python3-avro, in
 * tests/data/old/TaskEvent_v2.hex: its task has no parents. */
Test(serde, old_v2_task_event_decodes_without_parents) {
        tb_buf_t olds[2];
        size_t cnt = tbt_hex_records("tests/data/old/TaskEvent_v2.hex", olds, 2);
        cr_assert_eq(cnt, 2, "tests/data/old/TaskEvent_v2.hex: two records");
        for (size_t k = 0; k < cnt; k++) {
                json_t *v = decode_ok(TB_SCHEMA_TASK_EVENT, &olds[k]);
                cr_assert_eq(json_integer_value(json_object_get(v, "version")), 4);
                json_t *task = json_object_get(v, "task");
                cr_assert(json_is_array(json_object_get(task, "after")));
                cr_assert_eq(json_array_size(json_object_get(task, "after")), 0);
                cr_assert_str_eq(json_string_value(json_object_get(task, "after_mode")), "ALL");
                cr_assert(json_is_null(json_object_get(task, "after_deadline_ms")));
                cr_assert_gt(json_array_size(json_object_get(task, "calendars")), 0,
                             "the v2 fields are read as written");
                json_decref(v);
                tb_buf_free(&olds[k]);
        }
}
