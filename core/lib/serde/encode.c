/**
 * @file serde/encode.c
 * @brief tb_serde_encode: a JSON value checked against the schema tree, with
 *        field paths in errors, filled into an avro-c value and written as
 *        a single-object message (see serde.h).
 */
#include "serde/serde_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- encode: JSON -> avro value ------------------------------------ */

tb_err_t tb_serde_ectx_err(tb_ectx_t *c, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return tb_seterr(c->errstr, c->errstr_size, TB_ERR_INVALID, "%s: %s", c->path.s, msg);
}

tb_err_t tb_serde_avro_fail(tb_ectx_t *c, const char *what) {
        return tb_seterr(c->errstr, c->errstr_size, TB_ERR_INTERNAL, "%s: avro-c %s: %s",
                         c->path.s, what, avro_strerror());
}

static tb_err_t tb_expected(tb_ectx_t *c, const tb_snode_t *n, const json_t *j) {
        char want[160];
        tb_serde_snode_describe(n, want, sizeof(want));
        return tb_serde_ectx_err(c, "expected %s, got %s", want, tb_serde_json_type_name(j));
}

/** Quick check used to pick a union branch for a JSON value. */
static bool tb_branch_accepts(const tb_snode_t *n, const json_t *j) {
        switch (n->t) {
        case TA_NULL: return json_is_null(j);
        case TA_BOOLEAN: return json_is_boolean(j);
        case TA_INT:
                return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
                       json_integer_value(j) <= INT32_MAX;
        case TA_LONG: return json_is_integer(j);
        case TA_FLOAT:
        case TA_DOUBLE: return json_is_number(j);
        case TA_STRING:
                return json_is_string(j) &&
                       tb_serde_utf8_valid((const unsigned char *)json_string_value(j),
                                     json_string_length(j));
        case TA_BYTES: return json_is_string(j);
        case TA_FIXED: return json_is_string(j) && json_string_length(j) == n->size;
        case TA_ENUM:
                if (!json_is_string(j))
                        return false;
                for (size_t i = 0; i < n->n; i++)
                        if (!strcmp(n->symbols[i], json_string_value(j)))
                                return true;
                return false;
        case TA_ARRAY: return json_is_array(j);
        case TA_MAP:
        case TA_RECORD: return json_is_object(j);
        case TA_UNION: return false;
        }
        return false;
}

static tb_err_t tb_fill(tb_ectx_t *c, const tb_snode_t *n, const json_t *j, avro_value_t *v,
                        int depth);

static tb_err_t tb_fill_record(tb_ectx_t *c, const tb_snode_t *n, const json_t *j,
                               avro_value_t *v, int depth) {
        const char *key;
        json_t *jv;
        void *iter;
        if (!json_is_object(j))
                return tb_expected(c, n, j);
        for (iter = json_object_iter((json_t *)j); iter;
             iter = json_object_iter_next((json_t *)j, iter)) {
                key = json_object_iter_key(iter);
                bool known = false;
                for (size_t i = 0; i < n->n && !known; i++)
                        known = !strcmp(n->fields[i].name, key) &&
                                json_object_iter_key_len(iter) == strlen(key);
                if (!known) {
                        char list[384];
                        size_t o = 0;
                        list[0] = '\0';
                        for (size_t i = 0; i < n->n && o < sizeof(list); i++)
                                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
                                                      i ? ", " : "", n->fields[i].name);
                        tb_serde_path_push(&c->path, ".%s", key);
                        return tb_serde_ectx_err(c, "unknown field (%s has: %s)", n->fullname,
                                                 list);
                }
        }
        for (size_t i = 0; i < n->n; i++) {
                const tb_sfield_t *f = &n->fields[i];
                size_t old = tb_serde_path_push(&c->path, ".%s", f->name);
                jv = json_object_get(j, f->name);
                if (!jv)
                        jv = f->dflt;
                if (!jv) {
                        char want[160];
                        tb_serde_snode_describe(f->type, want, sizeof(want));
                        return tb_serde_ectx_err(c, "missing required field (type %s, no default)",
                                           want);
                }
                avro_value_t child;
                if (avro_value_get_by_index(v, i, &child, NULL))
                        return tb_serde_avro_fail(c, "get field");
                tb_err_t err = tb_fill(c, f->type, jv, &child, depth + 1);
                if (err != TB_OK)
                        return err;
                tb_serde_path_pop(&c->path, old);
        }
        return TB_OK;
}

static tb_err_t tb_fill_union(tb_ectx_t *c, const tb_snode_t *n, const json_t *j,
                              avro_value_t *v, int depth) {
        size_t pick = n->n, nonnull = 0, last_nonnull = 0;
        for (size_t i = 0; i < n->n; i++) {
                if (n->branches[i]->t != TA_NULL) {
                        nonnull++;
                        last_nonnull = i;
                }
                if (pick == n->n && tb_branch_accepts(n->branches[i], j))
                        pick = i;
        }
        /* With one non-null branch, fill it directly so a mistake deep
         * inside it is reported at its own path. */
        if (pick == n->n && nonnull == 1 && !json_is_null(j))
                pick = last_nonnull;
        if (pick == n->n) {
                char list[384];
                size_t o = 0;
                for (size_t i = 0; i < n->n && o < sizeof(list); i++) {
                        char d[160];
                        tb_serde_snode_describe(n->branches[i], d, sizeof(d));
                        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
                                              i ? " or " : "", d);
                }
                return tb_serde_ectx_err(c, "expected %s, got %s",
                                         n->n ? list : "nothing (empty union)",
                                         tb_serde_json_type_name(j));
        }
        avro_value_t branch;
        if (avro_value_set_branch(v, (int)pick, &branch))
                return tb_serde_avro_fail(c, "set branch");
        return tb_fill(c, n->branches[pick], j, &branch, depth + 1);
}

static tb_err_t tb_fill(tb_ectx_t *c, const tb_snode_t *n, const json_t *j, avro_value_t *v,
                        int depth) {
        int rc = 0;
        if (depth > TB_SERDE_MAX_DEPTH)
                return tb_serde_ectx_err(c, "value nested more than %d levels deep",
                                         TB_SERDE_MAX_DEPTH);
        switch (n->t) {
        case TA_NULL:
                if (!json_is_null(j))
                        return tb_expected(c, n, j);
                rc = avro_value_set_null(v);
                break;
        case TA_BOOLEAN:
                if (!json_is_boolean(j))
                        return tb_expected(c, n, j);
                rc = avro_value_set_boolean(v, json_is_true(j));
                break;
        case TA_INT:
                if (!json_is_integer(j))
                        return tb_expected(c, n, j);
                if (json_integer_value(j) < INT32_MIN || json_integer_value(j) > INT32_MAX)
                        return tb_serde_ectx_err(c, "%lld does not fit in an int (32 bits)",
                                           (long long)json_integer_value(j));
                rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
                break;
        case TA_LONG:
                if (!json_is_integer(j))
                        return tb_expected(c, n, j);
                rc = avro_value_set_long(v, (int64_t)json_integer_value(j));
                break;
        case TA_FLOAT:
                if (!json_is_number(j))
                        return tb_expected(c, n, j);
                rc = avro_value_set_float(v, (float)json_number_value(j));
                break;
        case TA_DOUBLE:
                if (!json_is_number(j))
                        return tb_expected(c, n, j);
                rc = avro_value_set_double(v, json_number_value(j));
                break;
        case TA_STRING:
                if (!json_is_string(j))
                        return tb_expected(c, n, j);
                if (!tb_serde_utf8_valid((const unsigned char *)json_string_value(j),
                                   json_string_length(j)))
                        return tb_serde_ectx_err(c, "string is not valid UTF-8");
                /* avro-c's size counts the NUL terminator jansson keeps */
                rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
                break;
        case TA_BYTES:
                if (!json_is_string(j))
                        return tb_expected(c, n, j);
                rc = avro_value_set_bytes(v, (void *)json_string_value(j), json_string_length(j));
                break;
        case TA_FIXED:
                if (!json_is_string(j))
                        return tb_expected(c, n, j);
                if (json_string_length(j) != n->size)
                        return tb_serde_ectx_err(c, "%s needs exactly %zu bytes, got %zu",
                                                 n->fullname, n->size, json_string_length(j));
                rc = avro_value_set_fixed(v, (void *)json_string_value(j), n->size);
                break;
        case TA_ENUM: {
                if (!json_is_string(j))
                        return tb_expected(c, n, j);
                for (size_t i = 0; i < n->n; i++)
                        if (!strcmp(n->symbols[i], json_string_value(j))) {
                                rc = avro_value_set_enum(v, (int)i);
                                goto done;
                        }
                char list[384];
                size_t o = 0;
                for (size_t i = 0; i < n->n && o < sizeof(list); i++)
                        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
                                              n->symbols[i]);
                char shown[64];
                snprintf(shown, sizeof(shown), "%s", json_string_value(j));
                return tb_serde_ectx_err(c, "'%s' is not one of %s", shown, list);
        }
        case TA_ARRAY:
                if (!json_is_array(j))
                        return tb_expected(c, n, j);
                for (size_t i = 0; i < json_array_size(j); i++) {
                        avro_value_t child;
                        size_t old = tb_serde_path_push(&c->path, "[%zu]", i);
                        if (avro_value_append(v, &child, NULL))
                                return tb_serde_avro_fail(c, "append");
                        tb_err_t err = tb_fill(c, n->items, json_array_get(j, i), &child,
                                               depth + 1);
                        if (err != TB_OK)
                                return err;
                        tb_serde_path_pop(&c->path, old);
                }
                break;
        case TA_MAP: {
                if (!json_is_object(j))
                        return tb_expected(c, n, j);
                void *iter;
                for (iter = json_object_iter((json_t *)j); iter;
                     iter = json_object_iter_next((json_t *)j, iter)) {
                        const char *key = json_object_iter_key(iter);
                        size_t klen = json_object_iter_key_len(iter);
                        size_t old = tb_serde_path_push_key(&c->path, key, klen);
                        if (klen != strlen(key))
                                return tb_serde_ectx_err(c, "map key contains a NUL byte");
                        if (!tb_serde_utf8_valid((const unsigned char *)key, klen))
                                return tb_serde_ectx_err(c, "map key is not valid UTF-8");
                        avro_value_t child;
                        if (avro_value_add(v, key, &child, NULL, NULL))
                                return tb_serde_avro_fail(c, "map add");
                        tb_err_t err = tb_fill(c, n->items, json_object_iter_value(iter), &child,
                                               depth + 1);
                        if (err != TB_OK)
                                return err;
                        tb_serde_path_pop(&c->path, old);
                }
                break;
        }
        case TA_RECORD:
                return tb_fill_record(c, n, j, v, depth);
        case TA_UNION:
                return tb_fill_union(c, n, j, v, depth);
        }
done:
        if (rc)
                return tb_serde_avro_fail(c, "set value");
        return TB_OK;
}

tb_err_t tb_serde_encode(tb_schema_id_t id, const json_t *value, tb_buf_t *out, char *errstr,
                         size_t errstr_size) {
        tb_err_t err = tb_serde_init(errstr, errstr_size);
        if (err != TB_OK)
                return err;
        if ((int)id < 0 || id >= TB_SCHEMA__COUNT)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "encode: unknown schema id %d", (int)id);
        if (!value || !out)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "encode %s: no value or output buffer", tb_serde_schema_names[id]);
        tb_schema_t *s = &tb_serde_schemas[id];
        tb_ectx_t c = {.errstr = errstr, .errstr_size = errstr_size};
        tb_serde_path_set(&c.path, s->name);
        char *tmp = NULL;
        size_t size = 0;
        avro_writer_t w = NULL;
        avro_value_t av;

        /* A value per call: no lock, and nothing of a message outlives it.
         * (A cached value would also hide from LeakSanitizer: avro-c packs
         * child instances at unaligned offsets.) */
        if (avro_generic_value_new(s->iface, &av))
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "encode %s: avro-c: %s",
                                 s->name, avro_strerror());
        err = tb_fill(&c, s->root, value, &av, 0);
        if (err != TB_OK)
                goto done;
        if (avro_value_sizeof(&av, &size)) {
                err = tb_serde_avro_fail(&c, "sizeof");
                goto done;
        }
        tmp = malloc(TB_SERDE_HEADER + size + 1);
        if (!tmp) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "encode %s: out of memory",
                                s->name);
                goto done;
        }
        tmp[0] = (char)0xc3;
        tmp[1] = 0x01;
        for (int i = 0; i < 8; i++)
                tmp[2 + i] = (char)((s->fp >> (8 * i)) & 0xff);
        w = avro_writer_memory(tmp + TB_SERDE_HEADER, (int64_t)size);
        if (!w || avro_value_write(w, &av) || avro_writer_tell(w) != (int64_t)size)
                err = tb_serde_avro_fail(&c, "write");
done:
        avro_value_decref(&av);
        if (w)
                avro_writer_free(w);
        if (err == TB_OK)
                err = tb_buf_append(out, tmp, TB_SERDE_HEADER + size);
        if (err == TB_ERR_NOMEM)
                tb_seterr(errstr, errstr_size, err, "encode %s: out of memory", s->name);
        free(tmp);
        return err;
}
