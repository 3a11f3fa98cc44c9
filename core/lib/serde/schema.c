/**
 * @file serde/schema.c
 * @brief Avro schemas: our own schema tree (parsed from the embedded .avsc
 *        with jansson), defaults, the Parsing Canonical Form, CRC-64-AVRO
 *        fingerprints, and the registry of embedded schemas (tb_serde_init).
 *
 * Three pieces work together:
 *  - our own schema tree (parsed from the embedded .avsc with jansson),
 *    used for the Parsing Canonical Form and fingerprints, for defaults,
 *    for JSON type checking with field paths, and for a bounds-checked
 *    walk of untrusted bytes;
 *  - avro-c, which does the actual binary encoding and decoding of
 *    generic values, and is only ever handed data the walker accepted
 *    (avro-c trusts lengths and indices it reads, so it must never see
 *    hostile bytes);
 *  - the JSON mapping described in serde.h.
 */
#include "serde/serde_internal.h"

#include <avro.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const tb_serde_atype_names[] = {
        [TA_NULL] = "null",     [TA_BOOLEAN] = "boolean", [TA_INT] = "int",
        [TA_LONG] = "long",     [TA_FLOAT] = "float",     [TA_DOUBLE] = "double",
        [TA_BYTES] = "bytes",   [TA_STRING] = "string",   [TA_RECORD] = "record",
        [TA_ENUM] = "enum",     [TA_ARRAY] = "array",     [TA_MAP] = "map",
        [TA_UNION] = "union",   [TA_FIXED] = "fixed",
};

/* ---- small helpers -------------------------------------------------- */

/** Append a component; @returns the length to restore with tb_serde_path_pop. */
size_t tb_serde_path_push(tb_path_t *p, const char *fmt, ...) {
        size_t old = p->len;
        if (p->len < sizeof(p->s) - 1) {
                va_list ap;
                va_start(ap, fmt);
                int n = vsnprintf(p->s + p->len, sizeof(p->s) - p->len, fmt, ap);
                va_end(ap);
                if (n > 0)
                        p->len += (size_t)n;
                if (p->len >= sizeof(p->s))
                        p->len = sizeof(p->s) - 1;
        }
        return old;
}

void tb_serde_path_pop(tb_path_t *p, size_t old) {
        p->len = old;
        p->s[old] = '\0';
}

void tb_serde_path_set(tb_path_t *p, const char *root) {
        p->len = 0;
        p->s[0] = '\0';
        tb_serde_path_push(p, "%s", root);
}

/** Push a map key, shortened and with non-printable bytes escaped so the
 *  error message stays one readable line. */
size_t tb_serde_path_push_key(tb_path_t *p, const char *key, size_t len) {
        char tmp[48];
        size_t o = 0;
        for (size_t i = 0; i < len && o < sizeof(tmp) - 5; i++) {
                unsigned char ch = (unsigned char)key[i];
                if (ch < 0x20 || ch == '"' || ch == '\\' || ch == 0x7f)
                        o += (size_t)snprintf(tmp + o, sizeof(tmp) - o, "\\x%02x", ch);
                else
                        tmp[o++] = (char)ch;
        }
        tmp[o] = '\0';
        return tb_serde_path_push(p, "[\"%s%s\"]", tmp, o < len ? "..." : "");
}

/** Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
bool tb_serde_utf8_valid(const unsigned char *s, size_t len) {
        size_t i = 0;
        while (i < len) {
                unsigned char c = s[i];
                size_t need;
                uint32_t cp;
                if (c < 0x80) {
                        i++;
                        continue;
                } else if (c >= 0xc2 && c <= 0xdf) {
                        need = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        need = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        need = 3;
                        cp = c & 0x07;
                } else {
                        return false;
                }
                if (len - i - 1 < need)
                        return false;
                for (size_t k = 1; k <= need; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + k] & 0x3f);
                }
                if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
                    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                        return false;
                i += need + 1;
        }
        return true;
}

const char *tb_serde_json_type_name(const json_t *j) {
        switch (json_typeof(j)) {
        case JSON_OBJECT: return "object";
        case JSON_ARRAY: return "array";
        case JSON_STRING: return "string";
        case JSON_INTEGER: return "integer";
        case JSON_REAL: return "real";
        case JSON_TRUE:
        case JSON_FALSE: return "boolean";
        case JSON_NULL: return "null";
        }
        return "?";
}

/** Describe a node for messages: "long", "enum io.taskbus.RunStatus". */
void tb_serde_snode_describe(const tb_snode_t *n, char *buf, size_t size) {
        if (n->fullname)
                snprintf(buf, size, "%s %s", tb_serde_atype_names[n->t], n->fullname);
        else
                snprintf(buf, size, "%s", tb_serde_atype_names[n->t]);
}

/* ---- schema parsing ------------------------------------------------- */

static tb_err_t tb_sctx_err(tb_sctx_t *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static tb_err_t tb_sctx_err(tb_sctx_t *c, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return tb_seterr(c->errstr, c->errstr_size, TB_ERR_INVALID, "schema %s: %s",
                         c->path.s, msg);
}

static tb_snode_t *tb_snode_new(tb_sctx_t *c, tb_atype_t t) {
        if (c->nnodes == c->capnodes) {
                tb_snode_t **nn = tb_array_grow(c->nodes, &c->capnodes, sizeof(*nn), 32);
                if (!nn)
                        return NULL;
                c->nodes = nn;
        }
        tb_snode_t *n = calloc(1, sizeof(*n));
        if (!n)
                return NULL;
        n->t = t;
        c->nodes[c->nnodes++] = n;
        return n;
}

static void tb_sctx_free(tb_sctx_t *c) {
        for (size_t i = 0; i < c->nnodes; i++) {
                tb_snode_t *n = c->nodes[i];
                free(n->fullname);
                free(n->ns);
                if (n->fields)
                        for (size_t k = 0; k < n->n; k++)
                                json_decref(n->fields[k].dflt);
                free(n->fields);
                free(n->symbols);
                free(n->branches);
                free(n);
        }
        free(c->nodes);
        free(c->named);
        c->nodes = NULL;
        c->named = NULL;
        c->nnodes = c->capnodes = c->nnamed = c->capnamed = 0;
}

static int tb_prim_type(const char *s) {
        for (int t = TA_NULL; t <= TA_STRING; t++)
                if (!strcmp(s, tb_serde_atype_names[t]))
                        return t;
        return -1;
}

/** Avro names: [A-Za-z_][A-Za-z0-9_]*, dotted when \p dotted. */
static bool tb_name_valid(const char *s, bool dotted) {
        bool start = true;
        if (!*s)
                return false;
        for (; *s; s++) {
                char ch = *s;
                if (ch == '.' && dotted && !start) {
                        start = true;
                        continue;
                }
                bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
                bool digit = ch >= '0' && ch <= '9';
                if (!(alpha || (digit && !start)))
                        return false;
                start = false;
        }
        return !start;
}

static tb_snode_t *tb_named_find(tb_sctx_t *c, const char *fullname) {
        for (size_t i = 0; i < c->nnamed; i++)
                if (!strcmp(c->named[i]->fullname, fullname))
                        return c->named[i];
        return NULL;
}

static tb_snode_t *tb_named_resolve(tb_sctx_t *c, const char *name, const char *ns) {
        if (!strchr(name, '.') && ns && *ns) {
                char full[512];
                snprintf(full, sizeof(full), "%s.%s", ns, name);
                tb_snode_t *n = tb_named_find(c, full);
                if (n)
                        return n;
        }
        return tb_named_find(c, name);
}

static tb_snode_t *tb_sparse(tb_sctx_t *c, json_t *j, const char *ns, int depth);

/** Name, namespace and registration shared by record, enum and fixed. */
static tb_err_t tb_sparse_name(tb_sctx_t *c, json_t *j, const char *ns, tb_snode_t *n) {
        json_t *jname = json_object_get(j, "name");
        if (!json_is_string(jname))
                return tb_sctx_err(c, "a %s needs a string \"name\"", tb_serde_atype_names[n->t]);
        const char *name = json_string_value(jname);
        if (!tb_name_valid(name, true))
                return tb_sctx_err(c, "invalid name '%s'", name);
        char *full = NULL;
        if (strchr(name, '.')) {
                full = strdup(name);
        } else {
                json_t *jns = json_object_get(j, "namespace");
                const char *eff = ns;
                if (jns && !json_is_null(jns)) {
                        if (!json_is_string(jns))
                                return tb_sctx_err(c, "\"namespace\" of '%s' must be a string",
                                                   name);
                        eff = json_string_value(jns);
                        if (*eff && !tb_name_valid(eff, true))
                                return tb_sctx_err(c, "invalid namespace '%s'", eff);
                }
                if (eff && *eff) {
                        if (asprintf(&full, "%s.%s", eff, name) < 0)
                                full = NULL;
                } else {
                        full = strdup(name);
                }
        }
        if (!full)
                return tb_seterr(c->errstr, c->errstr_size, TB_ERR_NOMEM, "out of memory");
        if (tb_named_find(c, full)) {
                free(full);
                return tb_sctx_err(c, "type '%s' is defined twice", name);
        }
        n->fullname = full;
        const char *dot = strrchr(full, '.');
        n->ns = dot ? strndup(full, (size_t)(dot - full)) : strdup("");
        if (!n->ns)
                return tb_seterr(c->errstr, c->errstr_size, TB_ERR_NOMEM, "out of memory");
        if (c->nnamed == c->capnamed) {
                tb_snode_t **nn = tb_array_grow(c->named, &c->capnamed, sizeof(*nn), 16);
                if (!nn)
                        return tb_seterr(c->errstr, c->errstr_size, TB_ERR_NOMEM, "out of memory");
                c->named = nn;
        }
        c->named[c->nnamed++] = n;
        return TB_OK;
}

static tb_err_t tb_sparse_record(tb_sctx_t *c, json_t *j, tb_snode_t *n, int depth) {
        json_t *jf = json_object_get(j, "fields");
        if (!json_is_array(jf))
                return tb_sctx_err(c, "record '%s' needs a \"fields\" array", n->fullname);
        n->n = json_array_size(jf);
        n->fields = calloc(n->n ? n->n : 1, sizeof(*n->fields));
        if (!n->fields)
                return tb_seterr(c->errstr, c->errstr_size, TB_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n->n; i++) {
                json_t *f = json_array_get(jf, i);
                json_t *fname = json_object_get(f, "name");
                if (!json_is_object(f) || !json_is_string(fname))
                        return tb_sctx_err(c, "field %zu of '%s' needs a string \"name\"", i,
                                           n->fullname);
                const char *name = json_string_value(fname);
                if (!tb_name_valid(name, false))
                        return tb_sctx_err(c, "invalid field name '%s' in '%s'", name, n->fullname);
                for (size_t k = 0; k < i; k++)
                        if (!strcmp(n->fields[k].name, name))
                                return tb_sctx_err(c, "field '%s' appears twice in '%s'", name,
                                                   n->fullname);
                json_t *ft = json_object_get(f, "type");
                if (!ft)
                        return tb_sctx_err(c, "field '%s' of '%s' has no \"type\"", name,
                                           n->fullname);
                size_t old = tb_serde_path_push(&c->path, ".%s", name);
                n->fields[i].name = name;
                n->fields[i].type = tb_sparse(c, ft, n->ns, depth + 1);
                if (!n->fields[i].type)
                        return TB_ERR_INVALID;
                n->fields[i].raw_dflt = json_object_get(f, "default");
                tb_serde_path_pop(&c->path, old);
        }
        return TB_OK;
}

static tb_err_t tb_sparse_enum(tb_sctx_t *c, json_t *j, tb_snode_t *n) {
        json_t *js = json_object_get(j, "symbols");
        if (!json_is_array(js) || json_array_size(js) == 0)
                return tb_sctx_err(c, "enum '%s' needs a non-empty \"symbols\" array", n->fullname);
        n->n = json_array_size(js);
        n->symbols = calloc(n->n, sizeof(*n->symbols));
        if (!n->symbols)
                return tb_seterr(c->errstr, c->errstr_size, TB_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n->n; i++) {
                json_t *s = json_array_get(js, i);
                if (!json_is_string(s) || !tb_name_valid(json_string_value(s), false))
                        return tb_sctx_err(c, "enum '%s': symbol %zu is not a valid name",
                                           n->fullname, i);
                n->symbols[i] = json_string_value(s);
                for (size_t k = 0; k < i; k++)
                        if (!strcmp(n->symbols[k], n->symbols[i]))
                                return tb_sctx_err(c, "enum '%s': symbol '%s' appears twice",
                                                   n->fullname, n->symbols[i]);
        }
        return TB_OK;
}

static tb_snode_t *tb_sparse(tb_sctx_t *c, json_t *j, const char *ns, int depth) {
        tb_snode_t *n = NULL;
        tb_err_t err = TB_OK;
        if (depth > TB_SERDE_MAX_DEPTH) {
                tb_sctx_err(c, "nested more than %d levels deep", TB_SERDE_MAX_DEPTH);
                return NULL;
        }
        if (json_is_string(j)) {
                const char *s = json_string_value(j);
                int prim = tb_prim_type(s);
                if (prim >= 0)
                        return tb_snode_new(c, (tb_atype_t)prim);
                n = tb_named_resolve(c, s, ns);
                if (!n)
                        tb_sctx_err(c, "unknown type '%s' (named types must be defined before use)",
                                    s);
                return n;
        }
        if (json_is_array(j)) {
                n = tb_snode_new(c, TA_UNION);
                if (!n)
                        goto nomem;
                n->n = json_array_size(j);
                n->branches = calloc(n->n ? n->n : 1, sizeof(*n->branches));
                if (!n->branches)
                        goto nomem;
                for (size_t i = 0; i < n->n; i++) {
                        n->branches[i] = tb_sparse(c, json_array_get(j, i), ns, depth + 1);
                        if (!n->branches[i])
                                return NULL;
                        if (n->branches[i]->t == TA_UNION) {
                                tb_sctx_err(c, "a union may not directly contain a union");
                                return NULL;
                        }
                }
                return n;
        }
        if (!json_is_object(j)) {
                tb_sctx_err(c, "a type must be a string, an array or an object, not %s",
                            tb_serde_json_type_name(j));
                return NULL;
        }
        json_t *jt = json_object_get(j, "type");
        if (!json_is_string(jt)) {
                tb_sctx_err(c, "\"type\" must be a string");
                return NULL;
        }
        const char *t = json_string_value(jt);
        int prim = tb_prim_type(t);
        if (prim >= 0) {
                n = tb_snode_new(c, (tb_atype_t)prim);
                if (!n)
                        goto nomem;
                n->attrs = json_object_size(j) > 1;
                return n;
        }
        if (!strcmp(t, "record")) {
                n = tb_snode_new(c, TA_RECORD);
                if (!n)
                        goto nomem;
                if ((err = tb_sparse_name(c, j, ns, n)) == TB_OK)
                        err = tb_sparse_record(c, j, n, depth);
        } else if (!strcmp(t, "enum")) {
                n = tb_snode_new(c, TA_ENUM);
                if (!n)
                        goto nomem;
                if ((err = tb_sparse_name(c, j, ns, n)) == TB_OK)
                        err = tb_sparse_enum(c, j, n);
        } else if (!strcmp(t, "fixed")) {
                n = tb_snode_new(c, TA_FIXED);
                if (!n)
                        goto nomem;
                json_t *js = json_object_get(j, "size");
                if ((err = tb_sparse_name(c, j, ns, n)) == TB_OK) {
                        if (!json_is_integer(js) || json_integer_value(js) < 0 ||
                            json_integer_value(js) > (1 << 24))
                                err = tb_sctx_err(c, "fixed '%s' needs an integer \"size\" "
                                                  "between 0 and 16777216", n->fullname);
                        else
                                n->size = (size_t)json_integer_value(js);
                }
        } else if (!strcmp(t, "array") || !strcmp(t, "map")) {
                bool arr = !strcmp(t, "array");
                n = tb_snode_new(c, arr ? TA_ARRAY : TA_MAP);
                if (!n)
                        goto nomem;
                json_t *ji = json_object_get(j, arr ? "items" : "values");
                if (!ji) {
                        tb_sctx_err(c, "%s needs \"%s\"", t, arr ? "items" : "values");
                        return NULL;
                }
                n->items = tb_sparse(c, ji, ns, depth + 1);
                return n->items ? n : NULL;
        } else {
                n = tb_named_resolve(c, t, ns);
                if (!n)
                        tb_sctx_err(c, "unknown type '%s'", t);
                return n;
        }
        return err == TB_OK ? n : NULL;
nomem:
        tb_seterr(c->errstr, c->errstr_size, TB_ERR_NOMEM, "out of memory");
        return NULL;
}

static size_t tb_snode_minsize(tb_snode_t *n) {
        if (n->minstate == 2)
                return n->minsize;
        if (n->minstate == 1)
                return 0; /* recursive reference: 0 is a safe lower bound */
        n->minstate = 1;
        size_t m = 0;
        switch (n->t) {
        case TA_NULL: m = 0; break;
        case TA_FLOAT: m = 4; break;
        case TA_DOUBLE: m = 8; break;
        case TA_FIXED: m = n->size; break;
        case TA_RECORD:
                for (size_t i = 0; i < n->n; i++)
                        m += tb_snode_minsize(n->fields[i].type);
                break;
        default: m = 1; break; /* varints, lengths, counts, indices */
        }
        n->minsize = m;
        n->minstate = 2;
        return m;
}

/* ---- defaults ------------------------------------------------------- */

/** Convert a default as written in the avsc (spec's default-JSON form:
 *  unions take their first branch, bytes are code points 0-255) into the
 *  JSON mapping of serde.h. @returns a new reference or NULL (error set). */
static json_t *tb_dflt_convert(tb_sctx_t *c, const tb_snode_t *n, json_t *raw, int depth) {
        char want[160];
        tb_serde_snode_describe(n, want, sizeof(want));
        if (depth > TB_SERDE_MAX_DEPTH) {
                tb_sctx_err(c, "default nested too deep");
                return NULL;
        }
        switch (n->t) {
        case TA_NULL:
                if (json_is_null(raw))
                        return json_null();
                break;
        case TA_BOOLEAN:
                if (json_is_boolean(raw))
                        return json_incref(raw);
                break;
        case TA_INT:
                if (json_is_integer(raw) && json_integer_value(raw) >= INT32_MIN &&
                    json_integer_value(raw) <= INT32_MAX)
                        return json_incref(raw);
                break;
        case TA_LONG:
                if (json_is_integer(raw))
                        return json_incref(raw);
                break;
        case TA_FLOAT:
        case TA_DOUBLE:
                if (json_is_number(raw))
                        return json_real(json_number_value(raw));
                break;
        case TA_STRING:
                if (json_is_string(raw))
                        return json_incref(raw);
                break;
        case TA_ENUM:
                if (json_is_string(raw)) {
                        for (size_t i = 0; i < n->n; i++)
                                if (!strcmp(n->symbols[i], json_string_value(raw)))
                                        return json_incref(raw);
                        tb_sctx_err(c, "default '%s' is not a symbol of %s",
                                    json_string_value(raw), n->fullname);
                        return NULL;
                }
                break;
        case TA_BYTES:
        case TA_FIXED:
                if (json_is_string(raw)) {
                        /* each code point U+0000..U+00FF is one byte */
                        const unsigned char *s = (const unsigned char *)json_string_value(raw);
                        size_t len = json_string_length(raw), o = 0;
                        char *b = malloc(len + 1);
                        if (!b)
                                return NULL;
                        for (size_t i = 0; i < len; i++) {
                                if (s[i] < 0x80) {
                                        b[o++] = (char)s[i];
                                } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < len) {
                                        b[o++] = (char)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
                                        i++;
                                } else {
                                        free(b);
                                        tb_sctx_err(c, "bytes default has a code point "
                                                    "above U+00FF");
                                        return NULL;
                                }
                        }
                        if (n->t == TA_FIXED && o != n->size) {
                                free(b);
                                tb_sctx_err(c, "fixed default has %zu bytes, expected %zu", o,
                                            n->size);
                                return NULL;
                        }
                        json_t *r = json_stringn_nocheck(b, o);
                        free(b);
                        return r;
                }
                break;
        case TA_ARRAY:
                if (json_is_array(raw)) {
                        json_t *r = json_array();
                        for (size_t i = 0; r && i < json_array_size(raw); i++) {
                                json_t *e = tb_dflt_convert(c, n->items, json_array_get(raw, i),
                                                            depth + 1);
                                if (!e || json_array_append_new(r, e)) {
                                        json_decref(r);
                                        return NULL;
                                }
                        }
                        return r;
                }
                break;
        case TA_MAP:
                if (json_is_object(raw)) {
                        json_t *r = json_object();
                        const char *k;
                        json_t *v;
                        json_object_foreach(raw, k, v) {
                                json_t *e = tb_dflt_convert(c, n->items, v, depth + 1);
                                if (!e || !r || json_object_set_new(r, k, e)) {
                                        json_decref(r);
                                        return NULL;
                                }
                        }
                        return r;
                }
                break;
        case TA_RECORD:
                if (json_is_object(raw)) {
                        json_t *r = json_object();
                        for (size_t i = 0; r && i < n->n; i++) {
                                const tb_sfield_t *f = &n->fields[i];
                                json_t *v = json_object_get(raw, f->name);
                                if (!v)
                                        v = f->raw_dflt;
                                if (!v) {
                                        tb_sctx_err(c, "record default lacks field '%s'", f->name);
                                        json_decref(r);
                                        return NULL;
                                }
                                json_t *e = tb_dflt_convert(c, f->type, v, depth + 1);
                                if (!e || json_object_set_new(r, f->name, e)) {
                                        json_decref(r);
                                        return NULL;
                                }
                        }
                        return r;
                }
                break;
        case TA_UNION:
                if (n->n > 0)
                        return tb_dflt_convert(c, n->branches[0], raw, depth + 1);
                break;
        }
        tb_sctx_err(c, "default is %s, which is not a valid %s", tb_serde_json_type_name(raw),
                    want);
        return NULL;
}

/** Second pass: every field default converted once, so a bad default in an
 *  .avsc fails tb_serde_init instead of the first encode that needs it. */
static tb_err_t tb_sctx_defaults(tb_sctx_t *c, const char *root) {
        for (size_t i = 0; i < c->nnodes; i++) {
                tb_snode_t *n = c->nodes[i];
                if (n->t != TA_RECORD)
                        continue;
                for (size_t k = 0; k < n->n; k++) {
                        tb_sfield_t *f = &n->fields[k];
                        if (!f->raw_dflt)
                                continue;
                        tb_serde_path_set(&c->path, root);
                        tb_serde_path_push(&c->path, " (%s.%s)", n->fullname, f->name);
                        f->dflt = tb_dflt_convert(c, f->type, f->raw_dflt, 0);
                        if (!f->dflt)
                                return TB_ERR_INVALID;
                }
        }
        tb_serde_path_set(&c->path, root);
        return TB_OK;
}

/* ---- Parsing Canonical Form ----------------------------------------- */

typedef struct tb_pcf {
        tb_buf_t buf;
        bool legacy;       /* python-avro 1.11 variant, see serde.h */
        bool nomem;
        const tb_snode_t **done;
        size_t ndone, capdone;
} tb_pcf_t;

static void tb_pcf_put(tb_pcf_t *p, const char *s) {
        if (!p->nomem && tb_buf_append(&p->buf, s, strlen(s)) != TB_OK)
                p->nomem = true;
}

static bool tb_pcf_seen(tb_pcf_t *p, const tb_snode_t *n) {
        for (size_t i = 0; i < p->ndone; i++)
                if (p->done[i] == n)
                        return true;
        if (p->ndone == p->capdone) {
                const tb_snode_t **nd = tb_array_grow(p->done, &p->capdone, sizeof(*nd), 16);
                if (!nd) {
                        p->nomem = true;
                        return true;
                }
                p->done = nd;
        }
        p->done[p->ndone++] = n;
        return false;
}

/* Names and symbols are restricted to [A-Za-z0-9_.], so no JSON escaping
 * is ever needed ([STRINGS]); integers print without leading zeros
 * ([INTEGERS]); nothing emits whitespace ([WHITESPACE]). */
static void tb_pcf_emit(tb_pcf_t *p, const tb_snode_t *n) {
        char num[32];
        if (n->t <= TA_STRING) {
                /* [PRIMITIVES] after [STRIP]; python-avro 1.11 keeps an
                 * object when the primitive had extra attributes */
                if (p->legacy && n->attrs) {
                        tb_pcf_put(p, "{\"type\":\"");
                        tb_pcf_put(p, tb_serde_atype_names[n->t]);
                        tb_pcf_put(p, "\"}");
                } else {
                        tb_pcf_put(p, "\"");
                        tb_pcf_put(p, tb_serde_atype_names[n->t]);
                        tb_pcf_put(p, "\"");
                }
                return;
        }
        if (n->fullname && tb_pcf_seen(p, n)) {
                /* [FULLNAMES]: later uses are references by full name */
                tb_pcf_put(p, "\"");
                tb_pcf_put(p, n->fullname);
                tb_pcf_put(p, "\"");
                return;
        }
        /* [ORDER]: name, type, fields, symbols, items, values, size */
        switch (n->t) {
        case TA_RECORD:
                tb_pcf_put(p, "{\"name\":\"");
                tb_pcf_put(p, n->fullname);
                tb_pcf_put(p, "\",\"type\":\"record\",\"fields\":[");
                for (size_t i = 0; i < n->n; i++) {
                        tb_pcf_put(p, i ? ",{\"name\":\"" : "{\"name\":\"");
                        tb_pcf_put(p, n->fields[i].name);
                        tb_pcf_put(p, "\",\"type\":");
                        tb_pcf_emit(p, n->fields[i].type);
                        tb_pcf_put(p, "}");
                }
                tb_pcf_put(p, "]}");
                break;
        case TA_ENUM:
                tb_pcf_put(p, "{\"name\":\"");
                tb_pcf_put(p, n->fullname);
                tb_pcf_put(p, "\",\"type\":\"enum\",\"symbols\":[");
                for (size_t i = 0; i < n->n; i++) {
                        tb_pcf_put(p, i ? ",\"" : "\"");
                        tb_pcf_put(p, n->symbols[i]);
                        tb_pcf_put(p, "\"");
                }
                tb_pcf_put(p, "]}");
                break;
        case TA_FIXED:
                tb_pcf_put(p, "{\"name\":\"");
                tb_pcf_put(p, n->fullname);
                snprintf(num, sizeof(num), "%zu", n->size);
                tb_pcf_put(p, "\",\"type\":\"fixed\",\"size\":");
                tb_pcf_put(p, num);
                tb_pcf_put(p, "}");
                break;
        case TA_ARRAY:
                tb_pcf_put(p, "{\"type\":\"array\",\"items\":");
                tb_pcf_emit(p, n->items);
                tb_pcf_put(p, "}");
                break;
        case TA_MAP:
                tb_pcf_put(p, "{\"type\":\"map\",\"values\":");
                tb_pcf_emit(p, n->items);
                tb_pcf_put(p, "}");
                break;
        case TA_UNION:
                tb_pcf_put(p, "[");
                for (size_t i = 0; i < n->n; i++) {
                        if (i)
                                tb_pcf_put(p, ",");
                        tb_pcf_emit(p, n->branches[i]);
                }
                tb_pcf_put(p, "]");
                break;
        default:
                break;
        }
}

/** @returns a malloc'd canonical form, or NULL on allocation failure. */
static char *tb_pcf_make(const tb_snode_t *root, bool legacy) {
        tb_pcf_t p = {.legacy = legacy};
        tb_pcf_emit(&p, root);
        free(p.done);
        if (p.nomem || tb_buf_append(&p.buf, "", 1) != TB_OK) {
                tb_buf_free(&p.buf);
                return NULL;
        }
        return p.buf.data; /* tb_buf storage is plain malloc'd memory */
}

/* ---- CRC-64-AVRO ---------------------------------------------------- */

#define TB_CRC64_EMPTY 0xc15d213aa4d7a795ULL

static uint64_t tb_crc64_table[256];
static pthread_once_t tb_crc64_once = PTHREAD_ONCE_INIT;

static void tb_crc64_init(void) {
        for (unsigned i = 0; i < 256; i++) {
                uint64_t fp = i;
                for (int k = 0; k < 8; k++)
                        fp = (fp >> 1) ^ (TB_CRC64_EMPTY & (0 - (fp & 1)));
                tb_crc64_table[i] = fp;
        }
}

uint64_t tb_serde_crc64(const void *data, size_t len) {
        pthread_once(&tb_crc64_once, tb_crc64_init);
        const unsigned char *p = data;
        uint64_t fp = TB_CRC64_EMPTY;
        for (size_t i = 0; i < len; i++)
                fp = (fp >> 8) ^ tb_crc64_table[(fp ^ p[i]) & 0xff];
        return fp;
}

/* ---- schema tree from text ----------------------------------------- */

/** Parse \p text into \p c; @returns the root node or NULL (error set). */
static tb_snode_t *tb_schema_tree(tb_sctx_t *c, json_t *doc, const char *label) {
        tb_serde_path_set(&c->path, label);
        tb_snode_t *root = tb_sparse(c, doc, "", 0);
        if (!root)
                return NULL;
        for (size_t i = 0; i < c->nnodes; i++)
                tb_snode_minsize(c->nodes[i]);
        if (tb_sctx_defaults(c, label) != TB_OK)
                return NULL;
        return root;
}

tb_err_t tb_serde_canonical_form(const char *schema_json, size_t len, bool legacy_primitives,
                                 char **out, char *errstr, size_t errstr_size) {
        tb_sctx_t c = {.errstr = errstr, .errstr_size = errstr_size};
        json_error_t jerr;
        tb_err_t err = TB_OK;
        *out = NULL;
        json_t *doc = json_loadb(schema_json, len, JSON_DECODE_ANY, &jerr);
        if (!doc)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schema is not valid JSON: line %d: %s", jerr.line, jerr.text);
        tb_snode_t *root = tb_schema_tree(&c, doc, "(text)");
        if (!root) {
                err = TB_ERR_INVALID;
                goto out;
        }
        *out = tb_pcf_make(root, legacy_primitives);
        if (!*out)
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
out:
        tb_sctx_free(&c);
        json_decref(doc);
        return err;
}

/* ---- the embedded schemas ------------------------------------------- */

/* Map by name: the enum order in serde.h need not match the table's. */
const char *const tb_serde_schema_names[TB_SCHEMA__COUNT] = {
        [TB_SCHEMA_TASK_COMMAND] = "TaskCommand",
        [TB_SCHEMA_TASK_REPLY] = "TaskReply",
        [TB_SCHEMA_TASK_EVENT] = "TaskEvent",
        [TB_SCHEMA_RUN_REQUEST] = "RunRequest",
        [TB_SCHEMA_RUN_RESULT] = "RunResult",
        [TB_SCHEMA_LOG_CHUNK] = "LogChunk",
        [TB_SCHEMA_SCHEDULER_CHECKPOINT] = "SchedulerCheckpoint",
};

tb_schema_t tb_serde_schemas[TB_SCHEMA__COUNT];
tb_schema_t tb_serde_old_schemas[TB_SERDE_OLD_MAX];
tb_schema_id_t tb_serde_old_current[TB_SERDE_OLD_MAX];
size_t tb_serde_old_cnt;
static pthread_once_t tb_serde_once = PTHREAD_ONCE_INIT;
static tb_err_t tb_serde_init_err = TB_OK;
static char tb_serde_init_msg[512];

static tb_err_t tb_schema_load(tb_schema_t *s, const char *name, const char *text, char *errstr,
                               size_t errstr_size) {
        json_error_t jerr;
        s->name = name;
        s->ctx.errstr = errstr;
        s->ctx.errstr_size = errstr_size;
        s->doc = json_loads(text, 0, &jerr);
        if (!s->doc)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schemas/%s.avsc: line %d: %s", name, jerr.line, jerr.text);
        s->root = tb_schema_tree(&s->ctx, s->doc, name);
        if (!s->root)
                return TB_ERR_INVALID;
        if (s->root->t != TA_RECORD)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schemas/%s.avsc: top level must be a record", name);
        const char *dot = strrchr(s->root->fullname, '.');
        if (strcmp(dot ? dot + 1 : s->root->fullname, name))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "schemas/%s.avsc: record is named '%s', expected '%s'", name,
                                 s->root->fullname, name);
        s->canonical = tb_pcf_make(s->root, false);
        s->canonical_legacy = tb_pcf_make(s->root, true);
        if (!s->canonical || !s->canonical_legacy)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        s->fp = tb_serde_crc64(s->canonical, strlen(s->canonical));
        s->fp_legacy = tb_serde_crc64(s->canonical_legacy, strlen(s->canonical_legacy));
        if (avro_schema_from_json_length(text, strlen(text), &s->aschema))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "schemas/%s.avsc: avro-c rejects it: %s", name, avro_strerror());
        s->iface = avro_generic_class_from_schema(s->aschema);
        if (!s->iface)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "schemas/%s.avsc: avro-c value class: %s", name,
                                 avro_strerror());
        return TB_OK;
}

/* The record a field of \p n holds, for nested evolution: \p n itself,
 * an array's items, or the one record branch of a union; NULL if none. */
const tb_snode_t *tb_serde_nested_record(const tb_snode_t *n) {
        if (n->t == TA_ARRAY)
                n = n->items;
        if (n->t == TA_RECORD)
                return n;
        const tb_snode_t *r = NULL;
        for (size_t b = 0; n->t == TA_UNION && b < n->n; b++)
                if (n->branches[b]->t == TA_RECORD) {
                        if (r)
                                return NULL;
                        r = n->branches[b];
                }
        return r;
}

/* An older writer version can be read as the current one only if the
 * current schema kept its fields, in order and of the same kind, and
 * added the rest at the end with a default (docs/schemas.md, "Evolving a
 * schema"), in the root record and in every record nested in it (a field,
 * an array's items or a union branch): decoding then fills the defaults
 * in, which is what Avro schema resolution does for such a change. */
static tb_err_t tb_serde_old_check_rec(const tb_snode_t *o, const tb_snode_t *c, int depth,
                                       const char *file, char *errstr, size_t errstr_size) {
        if (depth > TB_SERDE_MAX_DEPTH)
                return TB_OK;
        if (o->n > c->n)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "schemas/old/%s.avsc: record %s has %zu fields, the current "
                                 "one only %zu: fields are never removed",
                                 file, c->fullname, o->n, c->n);
        for (size_t i = 0; i < c->n; i++) {
                if (i < o->n && (strcmp(o->fields[i].name, c->fields[i].name) ||
                                 o->fields[i].type->t != c->fields[i].type->t))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                         "record %s field %zu '%s' is not field '%s' of "
                                         "schemas/old/%s.avsc with the same type: keep old "
                                         "fields and add new ones at the end",
                                         c->fullname, i + 1, c->fields[i].name,
                                         o->fields[i].name, file);
                if (i >= o->n && !c->fields[i].dflt)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                         "record %s field '%s' has no default, so records "
                                         "written with schemas/old/%s.avsc cannot be read",
                                         c->fullname, c->fields[i].name, file);
                const tb_snode_t *on = i < o->n ? tb_serde_nested_record(o->fields[i].type) : NULL,
                                 *cn = i < o->n ? tb_serde_nested_record(c->fields[i].type) : NULL;
                if (on && cn && on != o && cn != c) {
                        tb_err_t err = tb_serde_old_check_rec(on, cn, depth + 1, file, errstr,
                                                              errstr_size);
                        if (err)
                                return err;
                }
        }
        return TB_OK;
}

static tb_err_t tb_serde_old_check(const tb_schema_t *old, const char *file, const tb_schema_t *cur,
                                   char *errstr, size_t errstr_size) {
        return tb_serde_old_check_rec(old->root, cur->root, 0, file, errstr, errstr_size);
}

/* The older writer versions (schemas/old/<Name>_v<N>.avsc), after the
 * current ones are loaded. */
static tb_err_t tb_serde_old_init(char *e, size_t esz) {
        for (const tb_schema_source_t *p = tb_schema_old_sources; p->name; p++) {
                const char *us = strrchr(p->name, '_');
                int id = -1;
                for (int i = 0; us && i < TB_SCHEMA__COUNT; i++)
                        if (strlen(tb_serde_schema_names[i]) == (size_t)(us - p->name) &&
                            !strncmp(tb_serde_schema_names[i], p->name, (size_t)(us - p->name)))
                                id = i;
                if (id < 0 || tb_serde_old_cnt == TB_SERDE_OLD_MAX)
                        return tb_seterr(e, esz, TB_ERR_INTERNAL,
                                         "schemas/old/%s.avsc: %s", p->name,
                                         id < 0 ? "not <Name>_v<N> of a current schema"
                                                : "too many old versions (TB_SERDE_OLD_MAX)");
                tb_schema_t *s = &tb_serde_old_schemas[tb_serde_old_cnt];
                tb_err_t err = tb_schema_load(s, tb_serde_schema_names[id], p->json, e, esz);
                if (!err)
                        err = tb_serde_old_check(s, p->name, &tb_serde_schemas[id], e, esz);
                if (err)
                        return err;
                tb_serde_old_current[tb_serde_old_cnt++] = (tb_schema_id_t)id;
        }
        return TB_OK;
}

static void tb_serde_do_init(void) {
        char *e = tb_serde_init_msg;
        size_t esz = sizeof(tb_serde_init_msg);
        for (int id = 0; id < TB_SCHEMA__COUNT; id++) {
                const tb_schema_source_t *src = NULL;
                for (const tb_schema_source_t *p = tb_schema_sources; p->name; p++)
                        if (!strcmp(p->name, tb_serde_schema_names[id]))
                                src = p;
                if (!src) {
                        tb_serde_init_err = tb_seterr(e, esz, TB_ERR_INTERNAL,
                                                      "schemas/%s.avsc is not embedded",
                                                      tb_serde_schema_names[id]);
                        return;
                }
                tb_serde_init_err = tb_schema_load(&tb_serde_schemas[id], tb_serde_schema_names[id],
                                                   src->json, e, esz);
                if (tb_serde_init_err != TB_OK)
                        return;
        }
        for (int a = 0; a < TB_SCHEMA__COUNT; a++)
                for (int b = 0; b < TB_SCHEMA__COUNT; b++)
                        if (a != b && (tb_serde_schemas[a].fp == tb_serde_schemas[b].fp ||
                                       tb_serde_schemas[a].fp == tb_serde_schemas[b].fp_legacy)) {
                                tb_serde_init_err = tb_seterr(
                                        e, esz, TB_ERR_INTERNAL,
                                        "schemas %s and %s have the same fingerprint",
                                        tb_serde_schema_names[a], tb_serde_schema_names[b]);
                                return;
                        }
        if ((tb_serde_init_err = tb_serde_old_init(e, esz)) != TB_OK)
                return;
        for (size_t o = 0; o < tb_serde_old_cnt; o++)
                for (int b = 0; b < TB_SCHEMA__COUNT; b++)
                        if (tb_serde_old_schemas[o].fp == tb_serde_schemas[b].fp ||
                            tb_serde_old_schemas[o].fp_legacy == tb_serde_schemas[b].fp) {
                                tb_serde_init_err = tb_seterr(
                                        e, esz, TB_ERR_INTERNAL,
                                        "an old version of %s has the fingerprint of %s: it did "
                                        "not change",
                                        tb_serde_schema_names[tb_serde_old_current[o]],
                                        tb_serde_schema_names[b]);
                                return;
                        }
}

tb_err_t tb_serde_init(char *errstr, size_t errstr_size) {
        pthread_once(&tb_serde_once, tb_serde_do_init);
        if (tb_serde_init_err != TB_OK)
                return tb_seterr(errstr, errstr_size, tb_serde_init_err, "%s", tb_serde_init_msg);
        return TB_OK;
}

static bool tb_serde_ready(void) {
        pthread_once(&tb_serde_once, tb_serde_do_init);
        return tb_serde_init_err == TB_OK;
}

static bool tb_serde_id_ok(tb_schema_id_t id) {
        return (int)id >= 0 && id < TB_SCHEMA__COUNT && tb_serde_ready();
}

const char *tb_serde_name(tb_schema_id_t id) {
        return (int)id >= 0 && id < TB_SCHEMA__COUNT ? tb_serde_schema_names[id] : NULL;
}

uint64_t tb_serde_fingerprint(tb_schema_id_t id) {
        return tb_serde_id_ok(id) ? tb_serde_schemas[id].fp : 0;
}

uint64_t tb_serde_fingerprint_legacy(tb_schema_id_t id) {
        return tb_serde_id_ok(id) ? tb_serde_schemas[id].fp_legacy : 0;
}

const char *tb_serde_canonical(tb_schema_id_t id) {
        return tb_serde_id_ok(id) ? tb_serde_schemas[id].canonical : NULL;
}

const char *tb_serde_canonical_legacy(tb_schema_id_t id) {
        return tb_serde_id_ok(id) ? tb_serde_schemas[id].canonical_legacy : NULL;
}
