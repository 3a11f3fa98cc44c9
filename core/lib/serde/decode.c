/**
 * @file serde/decode.c
 * @brief tb_serde_decode: a bounds-checked walk of untrusted bytes against the
 *        schema tree, then avro-c reads what the walk accepted and the
 *        value is turned into JSON (see serde.h).
 */
#include "serde/serde_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- decode: bounds-checked walk of untrusted bytes ---------------- */

typedef struct tb_rd {
        const unsigned char *p;
        size_t len, pos;
        size_t elems, max_elems;
        tb_path_t path;
        char *errstr;
        size_t errstr_size;
} tb_rd_t;

static tb_err_t tb_rd_err(tb_rd_t *r, size_t at, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static tb_err_t tb_rd_err(tb_rd_t *r, size_t at, const char *fmt, ...) {
        char msg[384];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return tb_seterr(r->errstr, r->errstr_size, TB_ERR_INVALID,
                         "%s: %s (at byte %zu of the message)", r->path.s, msg,
                         at + TB_SERDE_HEADER);
}

/** Zig-zag varint; rejects truncation, more than 10 (long) or 5 (int)
 *  bytes, bits beyond the type's width, and non-minimal encodings. */
static tb_err_t tb_rd_varint(tb_rd_t *r, bool is_int, const char *what, int64_t *out) {
        size_t start = r->pos, max = is_int ? 5 : 10;
        uint64_t acc = 0;
        for (size_t i = 0;; i++) {
                if (r->pos >= r->len)
                        return tb_rd_err(r, start, "truncated %s", what);
                unsigned char b = r->p[r->pos++];
                if (i == max - 1 && (b & 0x80))
                        return tb_rd_err(r, start, "%s varint longer than %zu bytes", what, max);
                if (i == max - 1 && b > (is_int ? 0x0f : 0x01))
                        return tb_rd_err(r, start, "%s varint overflows %d bits", what,
                                         is_int ? 32 : 64);
                if (i > 0 && b == 0)
                        return tb_rd_err(r, start, "overlong (non-minimal) %s varint", what);
                acc |= (uint64_t)(b & 0x7f) << (7 * i);
                if (!(b & 0x80))
                        break;
        }
        uint64_t dec = (acc >> 1) ^ (0 - (acc & 1));
        memcpy(out, &dec, sizeof(dec));
        return TB_OK;
}

/** A length-prefixed run of bytes; *\p off / *\p n give where it is. */
static tb_err_t tb_rd_lenbytes(tb_rd_t *r, const char *what, size_t *off, size_t *n) {
        int64_t l;
        size_t start = r->pos;
        tb_err_t err = tb_rd_varint(r, false, what, &l);
        if (err != TB_OK)
                return err;
        if (l < 0)
                return tb_rd_err(r, start, "negative %s length %lld", what, (long long)l);
        if ((uint64_t)l > r->len - r->pos)
                return tb_rd_err(r, start, "%s length %lld exceeds the %zu bytes left", what,
                                 (long long)l, r->len - r->pos);
        *off = r->pos;
        *n = (size_t)l;
        r->pos += (size_t)l;
        return TB_OK;
}

static tb_err_t tb_walk(tb_rd_t *r, const tb_snode_t *n, int depth);

static tb_err_t tb_walk_blocks(tb_rd_t *r, const tb_snode_t *n, int depth) {
        bool map = n->t == TA_MAP;
        size_t index = 0, minsize = map ? 1 : n->items->minsize;
        tb_err_t err;
        for (;;) {
                int64_t count, bsize = -1;
                size_t start = r->pos;
                if ((err = tb_rd_varint(r, false, "block count", &count)) != TB_OK)
                        return err;
                if (count == 0)
                        return TB_OK;
                if (count < 0) {
                        if (count == INT64_MIN)
                                return tb_rd_err(r, start, "invalid block count");
                        count = -count;
                        size_t bstart = r->pos;
                        if ((err = tb_rd_varint(r, false, "block size", &bsize)) != TB_OK)
                                return err;
                        if (bsize < 0 || (uint64_t)bsize > r->len - r->pos)
                                return tb_rd_err(r, bstart, "block size %lld is not within the "
                                                 "%zu bytes left", (long long)bsize,
                                                 r->len - r->pos);
                }
                size_t left = r->len - r->pos;
                if ((minsize > 0 && (uint64_t)count > left / minsize) ||
                    (uint64_t)count > r->max_elems - r->elems)
                        return tb_rd_err(r, start, "block of %lld %s cannot fit in the %zu bytes "
                                         "left", (long long)count, map ? "entries" : "items",
                                         left);
                r->elems += (size_t)count;
                size_t body = r->pos;
                for (int64_t i = 0; i < count; i++, index++) {
                        size_t old;
                        if (map) {
                                size_t koff, klen, kstart = r->pos;
                                if ((err = tb_rd_lenbytes(r, "map key", &koff, &klen)) != TB_OK)
                                        return err;
                                old = tb_serde_path_push_key(&r->path, (const char *)r->p + koff,
                                                             klen);
                                if (memchr(r->p + koff, 0, klen))
                                        return tb_rd_err(r, kstart, "map key contains a NUL byte");
                                if (!tb_serde_utf8_valid(r->p + koff, klen))
                                        return tb_rd_err(r, kstart, "map key is not valid UTF-8");
                        } else {
                                old = tb_serde_path_push(&r->path, "[%zu]", index);
                        }
                        if ((err = tb_walk(r, n->items, depth + 1)) != TB_OK)
                                return err;
                        tb_serde_path_pop(&r->path, old);
                }
                if (bsize >= 0 && r->pos - body != (size_t)bsize)
                        return tb_rd_err(r, body, "block size says %lld bytes but its items "
                                         "take %zu", (long long)bsize, r->pos - body);
        }
}

static tb_err_t tb_walk(tb_rd_t *r, const tb_snode_t *n, int depth) {
        tb_err_t err = TB_OK;
        int64_t v;
        size_t start = r->pos, off, len;
        if (depth > TB_SERDE_MAX_DEPTH)
                return tb_rd_err(r, start, "nested more than %d levels deep", TB_SERDE_MAX_DEPTH);
        switch (n->t) {
        case TA_NULL:
                break;
        case TA_BOOLEAN:
                if (r->pos >= r->len)
                        return tb_rd_err(r, start, "truncated boolean");
                if (r->p[r->pos] > 1)
                        return tb_rd_err(r, start, "invalid boolean byte 0x%02x (must be 0 or 1)",
                                         r->p[r->pos]);
                r->pos++;
                break;
        case TA_INT:
                return tb_rd_varint(r, true, "int", &v);
        case TA_LONG:
                return tb_rd_varint(r, false, "long", &v);
        case TA_FLOAT:
        case TA_DOUBLE: {
                size_t w = n->t == TA_FLOAT ? 4 : 8;
                if (r->len - r->pos < w)
                        return tb_rd_err(r, start, "truncated %s", tb_serde_atype_names[n->t]);
                double d;
                if (w == 4) {
                        float f;
                        memcpy(&f, r->p + r->pos, 4);
                        d = f;
                } else {
                        memcpy(&d, r->p + r->pos, 8);
                }
                if (!isfinite(d))
                        return tb_rd_err(r, start, "NaN or infinity cannot be represented in JSON");
                r->pos += w;
                break;
        }
        case TA_BYTES:
                return tb_rd_lenbytes(r, "bytes", &off, &len);
        case TA_STRING:
                if ((err = tb_rd_lenbytes(r, "string", &off, &len)) != TB_OK)
                        return err;
                if (!tb_serde_utf8_valid(r->p + off, len))
                        return tb_rd_err(r, start, "string is not valid UTF-8");
                break;
        case TA_FIXED:
                if (r->len - r->pos < n->size)
                        return tb_rd_err(r, start, "truncated %s (%zu bytes)", n->fullname,
                                         n->size);
                r->pos += n->size;
                break;
        case TA_ENUM:
                if ((err = tb_rd_varint(r, true, "enum index", &v)) != TB_OK)
                        return err;
                if (v < 0 || (uint64_t)v >= n->n)
                        return tb_rd_err(r, start, "enum index %lld out of range for %s (%zu "
                                         "symbols)", (long long)v, n->fullname, n->n);
                break;
        case TA_UNION:
                if ((err = tb_rd_varint(r, false, "union index", &v)) != TB_OK)
                        return err;
                if (v < 0 || (uint64_t)v >= n->n)
                        return tb_rd_err(r, start, "union index %lld out of range (%zu branches)",
                                         (long long)v, n->n);
                return tb_walk(r, n->branches[v], depth + 1);
        case TA_ARRAY:
        case TA_MAP:
                return tb_walk_blocks(r, n, depth);
        case TA_RECORD:
                for (size_t i = 0; i < n->n; i++) {
                        size_t old = tb_serde_path_push(&r->path, ".%s", n->fields[i].name);
                        if ((err = tb_walk(r, n->fields[i].type, depth + 1)) != TB_OK)
                                return err;
                        tb_serde_path_pop(&r->path, old);
                }
                break;
        }
        return err;
}

/* Fill in what an older writer's record (\p o) lacks against the current
 * one (\p c): the fields added at the end of the record and of every
 * record nested in it (as tb_serde_old_check_rec() allowed).
 * @returns 0, or -1 when out of memory. */
static int tb_old_fill(json_t *obj, const tb_snode_t *o, const tb_snode_t *c, int depth) {
        if (!json_is_object(obj) || depth > TB_SERDE_MAX_DEPTH)
                return 0;
        for (size_t i = 0; i < c->n; i++) {
                if (i >= o->n) {
                        if (json_object_set_new(obj, c->fields[i].name,
                                                json_deep_copy(c->fields[i].dflt)))
                                return -1;
                        continue;
                }
                const tb_snode_t *on = tb_serde_nested_record(o->fields[i].type),
                                 *cn = tb_serde_nested_record(c->fields[i].type);
                if (!on || !cn || on == o || cn == c)
                        continue;
                json_t *v = json_object_get(obj, c->fields[i].name);
                if (json_is_array(v)) {
                        size_t k;
                        json_t *e;
                        json_array_foreach(v, k, e) {
                                if (tb_old_fill(e, on, cn, depth + 1))
                                        return -1;
                        }
                } else if (tb_old_fill(v, on, cn, depth + 1))
                        return -1;
        }
        return 0;
}

/* ---- decode: avro value -> JSON ------------------------------------ */

static json_t *tb_to_json(tb_ectx_t *c, const tb_snode_t *n, avro_value_t *v, int depth) {
        json_t *r = NULL;
        if (depth > TB_SERDE_MAX_DEPTH)
                return NULL;
        switch (n->t) {
        case TA_NULL:
                return json_null();
        case TA_BOOLEAN: {
                int b = 0;
                return avro_value_get_boolean(v, &b) ? NULL : json_boolean(b);
        }
        case TA_INT: {
                int32_t i = 0;
                return avro_value_get_int(v, &i) ? NULL : json_integer(i);
        }
        case TA_LONG: {
                int64_t l = 0;
                return avro_value_get_long(v, &l) ? NULL : json_integer((json_int_t)l);
        }
        case TA_FLOAT: {
                float f = 0;
                return avro_value_get_float(v, &f) ? NULL : json_real(f);
        }
        case TA_DOUBLE: {
                double d = 0;
                return avro_value_get_double(v, &d) ? NULL : json_real(d);
        }
        case TA_STRING: {
                const char *s = NULL;
                size_t size = 0;
                if (avro_value_get_string(v, &s, &size) || size == 0)
                        return NULL;
                return json_stringn(s, size - 1);
        }
        case TA_BYTES:
        case TA_FIXED: {
                const void *b = NULL;
                size_t size = 0;
                int rc = n->t == TA_BYTES ? avro_value_get_bytes(v, &b, &size)
                                          : avro_value_get_fixed(v, &b, &size);
                if (rc)
                        return NULL;
                return json_stringn_nocheck(size ? b : "", size);
        }
        case TA_ENUM: {
                int e = 0;
                if (avro_value_get_enum(v, &e) || e < 0 || (size_t)e >= n->n)
                        return NULL;
                return json_string(n->symbols[e]);
        }
        case TA_UNION: {
                int d = 0;
                avro_value_t branch;
                if (avro_value_get_discriminant(v, &d) || d < 0 || (size_t)d >= n->n ||
                    avro_value_get_current_branch(v, &branch))
                        return NULL;
                return tb_to_json(c, n->branches[d], &branch, depth + 1);
        }
        case TA_ARRAY:
        case TA_MAP: {
                size_t count = 0;
                if (avro_value_get_size(v, &count))
                        return NULL;
                r = n->t == TA_ARRAY ? json_array() : json_object();
                for (size_t i = 0; r && i < count; i++) {
                        avro_value_t child;
                        const char *key = NULL;
                        if (avro_value_get_by_index(v, i, &child, &key))
                                goto fail;
                        json_t *e = tb_to_json(c, n->items, &child, depth + 1);
                        if (!e)
                                goto fail;
                        int rc = n->t == TA_ARRAY ? json_array_append_new(r, e)
                                                  : (key ? json_object_set_new(r, key, e) : -1);
                        if (rc)
                                goto fail;
                }
                return r;
        }
        case TA_RECORD:
                r = json_object();
                for (size_t i = 0; r && i < n->n; i++) {
                        avro_value_t child;
                        if (avro_value_get_by_index(v, i, &child, NULL))
                                goto fail;
                        json_t *e = tb_to_json(c, n->fields[i].type, &child, depth + 1);
                        if (!e || json_object_set_new(r, n->fields[i].name, e))
                                goto fail;
                }
                return r;
        }
fail:
        json_decref(r);
        return NULL;
}

tb_err_t tb_serde_decode(const void *data, size_t len, tb_schema_id_t expect,
                         tb_schema_id_t *got, json_t **out, char *errstr, size_t errstr_size) {
        tb_err_t err = tb_serde_init(errstr, errstr_size);
        if (out)
                *out = NULL;
        if (err != TB_OK)
                return err;
        if (!out)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "decode: no output pointer");
        if (expect != TB_SCHEMA_ANY && ((int)expect < 0 || expect >= TB_SCHEMA__COUNT))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "decode: unknown schema id %d", (int)expect);
        const unsigned char *p = data;
        if (!p || len < TB_SERDE_HEADER)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "message too short: %zu bytes, an Avro single-object message "
                                 "has at least 10 (C3 01 and an 8-byte fingerprint)",
                                 p ? len : 0);
        if (p[0] != 0xc3 || p[1] != 0x01)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "bad magic %02X %02X: not an Avro single-object message "
                                 "(expected C3 01)", p[0], p[1]);
        uint64_t fp = 0;
        for (int i = 7; i >= 0; i--)
                fp = (fp << 8) | p[2 + i];
        int id = -1;
        tb_schema_t *s = NULL; /* the writer's schema: the current one or an older version */
        for (int i = 0; i < TB_SCHEMA__COUNT && id < 0; i++)
                if (tb_serde_schemas[i].fp == fp || tb_serde_schemas[i].fp_legacy == fp)
                        s = &tb_serde_schemas[id = i];
        for (size_t i = 0; i < tb_serde_old_cnt && id < 0; i++)
                if (tb_serde_old_schemas[i].fp == fp || tb_serde_old_schemas[i].fp_legacy == fp) {
                        s = &tb_serde_old_schemas[i];
                        id = (int)tb_serde_old_current[i];
                }
        if (id < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "unknown schema fingerprint %016llx: not one of the %d known "
                                 "schemas (written with a newer or foreign schema?)",
                                 (unsigned long long)fp, (int)TB_SCHEMA__COUNT);
        if (expect != TB_SCHEMA_ANY && id != (int)expect)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "message is a %s, expected a %s", tb_serde_schema_names[id],
                                 tb_serde_schema_names[expect]);

        tb_rd_t r = {.p = p + TB_SERDE_HEADER, .len = len - TB_SERDE_HEADER,
                     .errstr = errstr, .errstr_size = errstr_size};
        r.max_elems = r.len + TB_SERDE_ZERO_ELEMS;
        tb_serde_path_set(&r.path, s->name);
        if ((err = tb_walk(&r, s->root, 0)) != TB_OK)
                return err;
        if (r.pos != r.len)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %zu trailing bytes after the datum (at byte %zu of %zu)",
                                 s->name, r.len - r.pos, r.pos + TB_SERDE_HEADER, len);

        tb_ectx_t c = {.errstr = errstr, .errstr_size = errstr_size};
        tb_serde_path_set(&c.path, s->name);
        avro_reader_t rd = avro_reader_memory((const char *)r.p, (int64_t)r.len);
        if (!rd)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "decode: out of memory");
        avro_value_t av;
        if (avro_generic_value_new(s->iface, &av)) {
                avro_reader_free(rd);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "decode %s: avro-c: %s",
                                 s->name, avro_strerror());
        }
        if (avro_value_read(rd, &av))
                err = tb_serde_avro_fail(&c, "read");
        else if (!(*out = tb_to_json(&c, s->root, &av, 0)))
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "decode %s: could not build the JSON value", s->name);
        avro_value_decref(&av);
        avro_reader_free(rd);
        /* an older writer: the fields added since take their defaults */
        if (err == TB_OK && s != &tb_serde_schemas[id] &&
            tb_old_fill(*out, s->root, tb_serde_schemas[id].root, 0))
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                "decode %s: out of memory", s->name);
        if (err != TB_OK) {
                json_decref(*out);
                *out = NULL;
        }
        if (err == TB_OK && got)
                *got = (tb_schema_id_t)id;
        return err;
}
