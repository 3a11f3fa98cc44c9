/**
 * @file fixtures.h
 * @brief Loads tests/interop/values.json (shared with avro_interop.py) for
 *        the serde tests: per schema, an array of complete values in
 *        serde.h's JSON mapping.
 */
#ifndef TB_TEST_INTEROP_FIXTURES_H
#define TB_TEST_INTEROP_FIXTURES_H

#include "serde/serde.h"
#include "support.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** The fixture writes bytes as code points U+0000..U+00FF (one per byte);
 *  turn such a string into the raw bytes serde.h expects. */
static inline json_t *tbt_latin1_bytes(const json_t *s) {
        const unsigned char *p = (const unsigned char *)json_string_value(s);
        size_t len = json_string_length(s), o = 0;
        char *b = malloc(len + 1);
        for (size_t i = 0; b && i < len; i++) {
                if (p[i] < 0x80) {
                        b[o++] = (char)p[i];
                } else if ((p[i] == 0xc2 || p[i] == 0xc3) && i + 1 < len) {
                        b[o++] = (char)(((p[i] & 0x03) << 6) | (p[i + 1] & 0x3f));
                        i++;
                } else {
                        free(b);
                        return NULL;
                }
        }
        json_t *r = b ? json_stringn_nocheck(b, o) : NULL;
        free(b);
        return r;
}

/** @returns the fixture values for \p id (new reference), or NULL. Only
 *  LogChunk has a bytes field ("data"). */
static inline json_t *tbt_fixture_values(tb_schema_id_t id) {
        char path[1024];
        json_error_t jerr;
        snprintf(path, sizeof(path), "%s/tests/interop/values.json", tbt_source_dir());
        json_t *doc = json_load_file(path, JSON_ALLOW_NUL, &jerr);
        if (!doc) {
                fprintf(stderr, "%s: %s\n", path, jerr.text);
                return NULL;
        }
        json_t *arr = json_incref(json_object_get(doc, tb_serde_name(id)));
        json_decref(doc);
        if (!json_is_array(arr)) {
                json_decref(arr);
                return NULL;
        }
        if (id == TB_SCHEMA_LOG_CHUNK) {
                size_t i;
                json_t *v;
                json_array_foreach(arr, i, v) {
                        json_t *b = tbt_latin1_bytes(json_object_get(v, "data"));
                        json_object_set_new(v, "data", b ? b : json_null());
                }
        }
        return arr;
}

#endif
