/**
 * @file fuzz_avro.c
 * @brief libFuzzer target: tb_serde_decode() with TB_SCHEMA_ANY on arbitrary
 *        bytes; a message that decodes is re-encoded with the schema found
 *        and compared.
 *
 * Invariants checked (a violation abort()s):
 *  - a decoded value encodes again (decode accepts nothing encode refuses);
 *  - the re-encoding decodes to an equal value, and encoding that gives the
 *    same bytes (encoding is deterministic);
 *  - the re-encoding equals the input byte for byte, once a legacy
 *    (python-avro 1.11) fingerprint is replaced by the spec's, unless the
 *    input spelled an array or map in more than one block, with a negative
 *    (sized) block count, which Avro allows and encode never writes.
 *
 * Seeds: TB_FUZZ_AVRO_SEEDS=<dir> fuzz_avro writes, for every embedded
 * schema, messages made by the serde itself from values derived from the
 * schema (smallest: nulls, empty arrays; fullest: every optional filled,
 * two entries per array and map) with both fingerprints, then exits.
 */
#include "serde/serde.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define TB_FUZZ_HEADER 10

/* ---- the invariants ------------------------------------------------------ */

static void tb_fuzz_fail(const char *what, const char *errstr, const json_t *a, const json_t *b) {
        char *da = a ? json_dumps(a, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        char *db = b ? json_dumps(b, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "fuzz_avro: %s%s%s\n  a: %s\n  b: %s\n", what, errstr ? ": " : "",
                errstr ? errstr : "", da ? da : "(none)", db ? db : "(none)");
        free(da);
        free(db);
        abort();
}

static bool tb_fuzz_has_seq(tb_schema_id_t id, const json_t *v);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char errstr[512];
        json_t *v1 = NULL, *v2 = NULL;
        tb_buf_t b1 = {0}, b2 = {0};
        tb_schema_id_t got = TB_SCHEMA_ANY, got2 = TB_SCHEMA_ANY;
        tb_err_t e = tb_serde_decode(data, size, TB_SCHEMA_ANY, &got, &v1, errstr, sizeof(errstr));
        if (e != TB_OK) {
                if (v1)
                        tb_fuzz_fail("a refused message still produced a value", errstr, v1, NULL);
                if (!errstr[0])
                        tb_fuzz_fail("a refused message has no error message", NULL, NULL, NULL);
                return 0;
        }
        if (!v1 || got < 0 || got >= TB_SCHEMA__COUNT)
                tb_fuzz_fail("decode succeeded without a value or a schema", NULL, v1, NULL);
        if (tb_serde_encode(got, v1, &b1, errstr, sizeof(errstr)) != TB_OK)
                tb_fuzz_fail("a decoded value does not encode", errstr, v1, NULL);
        if (tb_serde_decode(b1.data, b1.len, got, &got2, &v2, errstr, sizeof(errstr)) != TB_OK)
                tb_fuzz_fail("a re-encoded value does not decode", errstr, v1, NULL);
        if (got2 != got || !json_equal(v1, v2))
                tb_fuzz_fail("the value changed through encode and decode", NULL, v1, v2);
        if (tb_serde_encode(got, v2, &b2, errstr, sizeof(errstr)) != TB_OK)
                tb_fuzz_fail("a value encoded once does not encode twice", errstr, v2, NULL);
        if (b1.len != b2.len || memcmp(b1.data, b2.data, b1.len))
                tb_fuzz_fail("encoding the same value twice gives different bytes", NULL, v1, v2);
        /* Avro lets a writer split an array or map into several blocks, give
         * a block its byte size (a negative count) and repeat a map key (the
         * last wins); encode writes one positive block per sequence, the
         * shortest form. So with a non-empty sequence in the value the
         * re-encoding may differ but is never longer (a count's varint is
         * never longer than the sum of its parts'); without one, every
         * datum has exactly one encoding. The fingerprint may be the legacy
         * one: compare the datums. */
        if (tb_fuzz_has_seq(got, v1)) {
                if (b1.len > size)
                        tb_fuzz_fail("re-encoding is longer than the input", NULL, v1, NULL);
        } else if (b1.len != size || memcmp(data + TB_FUZZ_HEADER,
                                            (const uint8_t *)b1.data + TB_FUZZ_HEADER,
                                            size - TB_FUZZ_HEADER)) {
                tb_fuzz_fail("re-encoding differs from the input", NULL, v1, NULL);
        }
        json_decref(v1);
        json_decref(v2);
        tb_buf_free(&b1);
        tb_buf_free(&b2);
        return 0;
}

/* ---- seed generation ------------------------------------------------------ */

static json_t *tb_fuzz_example(json_t *type, json_t *named, const char *ns, bool full,
                               int depth);

static void tb_fuzz_register(json_t *def, json_t *named, const char *ns) {
        const char *name = json_string_value(json_object_get(def, "name"));
        const char *dns = json_string_value(json_object_get(def, "namespace"));
        if (!name)
                return;
        json_object_set(named, name, def);
        if (!strchr(name, '.') && (dns || ns)) {
                char full[512];
                snprintf(full, sizeof(full), "%s.%s", dns ? dns : ns, name);
                json_object_set(named, full, def);
        }
}

static bool tb_fuzz_primitive_kind(const char *t) {
        static const char *const prims[] = {"null",   "boolean", "int",   "long",
                                            "float",  "double",  "string", "bytes"};
        for (size_t i = 0; i < sizeof(prims) / sizeof(prims[0]); i++)
                if (!strcmp(t, prims[i]))
                        return true;
        return false;
}

static json_t *tb_fuzz_primitive(const char *t, bool full) {
        if (!strcmp(t, "null"))
                return json_null();
        if (!strcmp(t, "boolean"))
                return json_boolean(full);
        if (!strcmp(t, "int"))
                return json_integer(full ? -123456 : 0);
        if (!strcmp(t, "long"))
                return json_integer(full ? INT64_C(1767225600123) : 0);
        if (!strcmp(t, "float") || !strcmp(t, "double"))
                return json_real(full ? -1.5 : 0.0);
        if (!strcmp(t, "string"))
                return json_string(full ? "h\xc3\xa9llo w\xc3\xb6rld" : "");
        if (!strcmp(t, "bytes"))
                return full ? json_stringn_nocheck("\x00\xff\x01", 3) : json_stringn_nocheck("", 0);
        return NULL;
}

static json_t *tb_fuzz_example(json_t *type, json_t *named, const char *ns, bool full,
                               int depth) {
        if (depth > 32)
                return NULL;
        if (json_is_string(type)) {
                const char *t = json_string_value(type);
                json_t *p = tb_fuzz_primitive(t, full);
                if (p)
                        return p;
                json_t *def = json_object_get(named, t);
                if (!def && ns) {
                        char fullname[512];
                        snprintf(fullname, sizeof(fullname), "%s.%s", ns, t);
                        def = json_object_get(named, fullname);
                }
                return def ? tb_fuzz_example(def, named, ns, full, depth + 1) : NULL;
        }
        if (json_is_array(type)) /* union: null first by convention */
                return tb_fuzz_example(json_array_get(type, full ? json_array_size(type) - 1 : 0),
                                       named, ns, full, depth + 1);
        if (!json_is_object(type))
                return NULL;
        const char *t = json_string_value(json_object_get(type, "type"));
        if (!t)
                return tb_fuzz_example(json_object_get(type, "type"), named, ns, full, depth + 1);
        const char *dns = json_string_value(json_object_get(type, "namespace"));
        if (dns)
                ns = dns;
        if (!strcmp(t, "record")) {
                tb_fuzz_register(type, named, ns);
                json_t *o = json_object(), *f;
                size_t i;
                json_array_foreach(json_object_get(type, "fields"), i, f) {
                        json_t *fv = tb_fuzz_example(json_object_get(f, "type"), named, ns, full,
                                                     depth + 1);
                        if (!fv) {
                                json_decref(o);
                                return NULL;
                        }
                        json_object_set_new(o, json_string_value(json_object_get(f, "name")), fv);
                }
                return o;
        }
        if (!strcmp(t, "enum")) {
                tb_fuzz_register(type, named, ns);
                json_t *syms = json_object_get(type, "symbols");
                return json_copy(json_array_get(syms, full ? json_array_size(syms) - 1 : 0));
        }
        if (!strcmp(t, "fixed")) {
                tb_fuzz_register(type, named, ns);
                size_t n = (size_t)json_integer_value(json_object_get(type, "size"));
                char *z = calloc(1, n + 1);
                json_t *r = z ? json_stringn_nocheck(z, n) : NULL;
                free(z);
                return r;
        }
        if (!strcmp(t, "array") || !strcmp(t, "map")) {
                bool map = !strcmp(t, "map");
                json_t *r = map ? json_object() : json_array();
                for (int i = 0; full && i < 2; i++) {
                        json_t *item = tb_fuzz_example(json_object_get(type, map ? "values" : "items"),
                                                       named, ns, full, depth + 1);
                        if (!item) {
                                json_decref(r);
                                return NULL;
                        }
                        if (map)
                                json_object_set_new(r, i ? "k\xc3\xa9y" : "k", item);
                        else
                                json_array_append_new(r, item);
                }
                return r;
        }
        return tb_fuzz_primitive(t, full);
}

static void tb_fuzz_write(const char *dir, const char *name, const void *data, size_t len) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
                fprintf(stderr, "fuzz_avro: cannot write %s: %s\n", path, strerror(errno));
                exit(1);
        }
        printf("wrote %s (%zu bytes)\n", path, len);
}

static void tb_fuzz_seeds(const char *dir) {
        char errstr[512];
        if (tb_serde_init(errstr, sizeof(errstr)) != TB_OK) {
                fprintf(stderr, "fuzz_avro: %s\n", errstr);
                exit(1);
        }
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                const char *name = tb_serde_name(id);
                const char *text = NULL;
                for (size_t i = 0; tb_schema_sources[i].name; i++)
                        if (!strcmp(tb_schema_sources[i].name, name))
                                text = tb_schema_sources[i].json;
                json_error_t je;
                json_t *schema = text ? json_loads(text, 0, &je) : NULL;
                if (!schema) {
                        fprintf(stderr, "fuzz_avro: no schema text for %s\n", name);
                        exit(1);
                }
                for (int full = 0; full < 2; full++) {
                        json_t *named = json_object();
                        json_t *v = tb_fuzz_example(schema, named, NULL, full, 0);
                        tb_buf_t b = {0};
                        if (!v || tb_serde_encode(id, v, &b, errstr, sizeof(errstr)) != TB_OK) {
                                fprintf(stderr, "fuzz_avro: %s example: %s\n", name,
                                        v ? errstr : "cannot derive a value");
                                exit(1);
                        }
                        char fname[256];
                        snprintf(fname, sizeof(fname), "%s_%s.bin", name, full ? "full" : "min");
                        tb_fuzz_write(dir, fname, b.data, b.len);
                        uint64_t legacy = tb_serde_fingerprint_legacy(id);
                        if (legacy != tb_serde_fingerprint(id)) {
                                for (int i = 0; i < 8; i++)
                                        ((unsigned char *)b.data)[2 + i] =
                                                (unsigned char)(legacy >> (8 * i));
                                snprintf(fname, sizeof(fname), "%s_%s_legacy.bin", name,
                                         full ? "full" : "min");
                                tb_fuzz_write(dir, fname, b.data, b.len);
                        }
                        tb_buf_free(&b);
                        json_decref(v);
                        json_decref(named);
                }
                json_decref(schema);
        }
}

/** Whether \p v, read as \p type, holds a non-empty array or map. */
static bool tb_fuzz_seq_in(json_t *type, const json_t *v, json_t *named, const char *ns,
                           int depth) {
        if (depth > 64)
                return true; /* cannot tell: assume the weaker check */
        if (json_is_string(type)) {
                const char *t = json_string_value(type);
                if (tb_fuzz_primitive_kind(t))
                        return false;
                json_t *def = json_object_get(named, t);
                if (!def && ns) {
                        char fullname[512];
                        snprintf(fullname, sizeof(fullname), "%s.%s", ns, t);
                        def = json_object_get(named, fullname);
                }
                return def ? tb_fuzz_seq_in(def, v, named, ns, depth + 1) : true;
        }
        if (json_is_array(type)) { /* union: any branch that could hold it */
                json_t *b;
                size_t i;
                json_array_foreach(type, i, b) {
                        if (!(json_is_string(b) && !strcmp(json_string_value(b), "null")) &&
                            !json_is_null(v) && tb_fuzz_seq_in(b, v, named, ns, depth + 1))
                                return true;
                }
                return false;
        }
        const char *t = json_string_value(json_object_get(type, "type"));
        if (!t)
                return tb_fuzz_seq_in(json_object_get(type, "type"), v, named, ns, depth + 1);
        const char *dns = json_string_value(json_object_get(type, "namespace"));
        if (dns)
                ns = dns;
        if (!strcmp(t, "record")) {
                tb_fuzz_register(type, named, ns);
                json_t *f;
                size_t i;
                bool any = false;
                /* register every nested definition even after a hit */
                json_array_foreach(json_object_get(type, "fields"), i, f) {
                        const json_t *fv = json_object_get(v, json_string_value(
                                                                      json_object_get(f, "name")));
                        if (fv && tb_fuzz_seq_in(json_object_get(f, "type"), fv, named, ns,
                                                 depth + 1))
                                any = true;
                }
                return any;
        }
        if (!strcmp(t, "enum") || !strcmp(t, "fixed")) {
                tb_fuzz_register(type, named, ns);
                return false;
        }
        if (!strcmp(t, "array"))
                return json_array_size(v) > 0;
        if (!strcmp(t, "map"))
                return json_object_size(v) > 0;
        return false;
}

static bool tb_fuzz_has_seq(tb_schema_id_t id, const json_t *v) {
        static json_t *schemas[TB_SCHEMA__COUNT];
        if (!schemas[id]) {
                const char *name = tb_serde_name(id);
                for (size_t i = 0; tb_schema_sources[i].name && !schemas[id]; i++)
                        if (!strcmp(tb_schema_sources[i].name, name))
                                schemas[id] = json_loads(tb_schema_sources[i].json, 0, NULL);
                if (!schemas[id])
                        tb_fuzz_fail("no schema text", name, NULL, NULL);
        }
        json_t *named = json_object();
        bool r = tb_fuzz_seq_in(schemas[id], v, named, NULL, 0);
        json_decref(named);
        return r;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        const char *dir = getenv("TB_FUZZ_AVRO_SEEDS");
        if (dir && *dir) {
                tb_fuzz_seeds(dir);
                exit(0);
        }
        return 0;
}
