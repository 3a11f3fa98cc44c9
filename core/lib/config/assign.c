/**
 * @file config/assign.c
 * @brief Typed assignment: a value written by a user (a default, an
 *        environment variable, a libconfig setting) checked against its
 *        property's type and range and stored in the configuration struct.
 */
#include "config/config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ----------------------------------------------------- */

static void *tb_config_field(void *base, size_t off) { return (char *)base + off; }

static char *tb_config_strdup0(const char *s) { return s ? strdup(s) : NULL; }

static void tb_config_strlist_free(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

const char *tb_config_setting_type_name(const config_setting_t *s) {
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a floating-point number";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        case CONFIG_TYPE_GROUP:
                return "a group";
        default:
                return "an unknown type";
        }
}

/* ---- typed assignment ----------------------------------------------------- */

static tb_err_t tb_config_prop_range(const tb_config_prop_t *p, const char *where, double v,
                                     char *errstr, size_t errstr_size) {
        if (p->min == p->max || (v >= p->min && v <= p->max))
                return TB_OK;
        char val[48], lo[48], hi[48];
        tb_config_prop_format_num(p, v, val, sizeof(val));
        tb_config_prop_format_num(p, p->min, lo, sizeof(lo));
        tb_config_prop_format_num(p, p->max, hi, sizeof(hi));
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s: %s is out of range: minimum %s, maximum %s", where, val, lo,
                         hi);
}

static void tb_config_prop_set_string(const tb_config_prop_t *p, void *base, char *v) {
        char **f = tb_config_field(base, p->off);
        free(*f);
        *f = v;
}

static void tb_config_kvlist_free(tb_kv_t *kv, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(kv[i].key);
                free(kv[i].value);
        }
        free(kv);
}

static void tb_config_prop_set_map(const tb_config_prop_t *p, void *base, tb_kv_t *kv,
                                   size_t n) {
        tb_kv_t **f = tb_config_field(base, p->off);
        size_t *cnt = tb_config_field(base, p->cnt_off);
        tb_config_kvlist_free(*f, *cnt);
        *f = kv;
        *cnt = n;
}

/** Append \p key = \p value (copied) to \p kv; a repeated name is an error
 *  naming \p where. */
static tb_err_t tb_config_kvlist_add(tb_kv_t **kv, size_t *n, const char *where,
                                     const char *key, size_t key_len, const char *value,
                                     char *errstr, size_t errstr_size) {
        for (size_t i = 0; i < *n; i++)
                if (strlen((*kv)[i].key) == key_len && !strncmp((*kv)[i].key, key, key_len))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: '%.*s' is given twice", where, (int)key_len, key);
        tb_kv_t *nk = realloc(*kv, (*n + 1) * sizeof(**kv));
        if (!nk)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        *kv = nk;
        nk[*n].key = strndup(key, key_len);
        nk[*n].value = strdup(value);
        if (!nk[*n].key || !nk[*n].value) {
                free(nk[*n].key);
                free(nk[*n].value);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        (*n)++;
        return TB_OK;
}

static void tb_config_prop_set_list(const tb_config_prop_t *p, void *base, char **v,
                                    size_t n) {
        char ***f = tb_config_field(base, p->off);
        size_t *cnt = tb_config_field(base, p->cnt_off);
        tb_config_strlist_free(*f, *cnt);
        *f = v;
        *cnt = n;
}

/** Store an int64 of an integer-backed type after the range check. */
static tb_err_t tb_config_prop_set_i64(const tb_config_prop_t *p, void *base,
                                       const char *where, int64_t v, char *errstr,
                                       size_t errstr_size) {
        tb_err_t err = tb_config_prop_range(p, where, (double)v, errstr, errstr_size);
        if (err)
                return err;
        *(int64_t *)tb_config_field(base, p->off) = v;
        return TB_OK;
}

/**
 * Assign \p s, written as a user would (default, environment, or a string
 * in the file for durations and sizes). \p where prefixes messages.
 */
tb_err_t tb_config_prop_set_from_string(const tb_config_prop_t *p, void *base,
                                        const char *where, const char *s, char *errstr,
                                        size_t errstr_size) {
        char msg[256];
        int64_t v;
        switch (p->type) {
        case TB_CT_STRING: {
                char *d = tb_config_strdup0(s);
                if (s && !d)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                tb_config_prop_set_string(p, base, d);
                return TB_OK;
        }
        case TB_CT_ENUM: {
                if (!s || !tb_config_enum_has(p->enums, s)) {
                        char list[256];
                        tb_config_enum_list(p->enums, "", list, sizeof(list));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: '%s' is not one of %s", where,
                                         s ? s : "", list);
                }
                char *d = strdup(s);
                if (!d)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                tb_config_prop_set_string(p, base, d);
                return TB_OK;
        }
        case TB_CT_BOOL:
                if (s && (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")))
                        *(bool *)tb_config_field(base, p->off) = true;
                else if (s && (!strcmp(s, "false") || !strcmp(s, "0") ||
                               !strcmp(s, "no")))
                        *(bool *)tb_config_field(base, p->off) = false;
                else
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: expected true or false, got \"%s\"", where,
                                         s ? s : "");
                return TB_OK;
        case TB_CT_INT: {
                char *end;
                errno = 0;
                long long ll = s ? strtoll(s, &end, 10) : 0;
                if (!s || !*s || *end || errno)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: expected an integer, got \"%s\"", where,
                                         s ? s : "");
                return tb_config_prop_set_i64(p, base, where, ll, errstr, errstr_size);
        }
        case TB_CT_DOUBLE: {
                char *end;
                errno = 0;
                double d = s ? strtod(s, &end) : 0;
                if (!s || !*s || *end || errno || !isfinite(d))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: expected a number, got \"%s\"", where,
                                         s ? s : "");
                tb_err_t err = tb_config_prop_range(p, where, d, errstr, errstr_size);
                if (err)
                        return err;
                *(double *)tb_config_field(base, p->off) = d;
                return TB_OK;
        }
        case TB_CT_DURATION:
                if (tb_units_duration_parse(s, &v, msg, sizeof(msg)))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "%s: %s",
                                         where, msg);
                return tb_config_prop_set_i64(p, base, where, v, errstr, errstr_size);
        case TB_CT_SIZE:
                if (tb_units_size_parse(s, &v, msg, sizeof(msg)))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "%s: %s",
                                         where, msg);
                return tb_config_prop_set_i64(p, base, where, v, errstr, errstr_size);
        case TB_CT_STRLIST: {
                /* Comma-separated in string form (defaults, environment). */
                size_t n = 0;
                char **list = NULL;
                if (s && *s) {
                        for (const char *c = s; *c; c++)
                                n += *c == ',';
                        n++;
                        list = calloc(n, sizeof(*list));
                        if (!list)
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory");
                        const char *c = s;
                        for (size_t i = 0; i < n; i++) {
                                const char *comma = strchr(c, ',');
                                size_t len = comma ? (size_t)(comma - c) : strlen(c);
                                list[i] = strndup(c, len);
                                if (!list[i]) {
                                        tb_config_strlist_free(list, n);
                                        return tb_seterr(errstr, errstr_size,
                                                         TB_ERR_NOMEM, "out of memory");
                                }
                                c = comma ? comma + 1 : c + len;
                        }
                }
                tb_config_prop_set_list(p, base, list, n);
                return TB_OK;
        }
        case TB_CT_MAP: {
                /* "name=value,name=value" in string form (defaults, environment) */
                tb_kv_t *kv = NULL;
                size_t n = 0;
                const char *c = s ? s : "";
                while (*c) {
                        const char *comma = strchr(c, ',');
                        size_t len = comma ? (size_t)(comma - c) : strlen(c);
                        const char *eq = memchr(c, '=', len);
                        if (!eq || eq == c) {
                                tb_config_kvlist_free(kv, n);
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: expected NAME=VALUE pairs separated by "
                                                 "commas, got \"%.*s\"",
                                                 where, (int)len, c);
                        }
                        char *val = strndup(eq + 1, len - (size_t)(eq + 1 - c));
                        tb_err_t err = val ? tb_config_kvlist_add(&kv, &n, where, c,
                                                                  (size_t)(eq - c), val,
                                                                  errstr, errstr_size)
                                           : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                       "out of memory");
                        free(val);
                        if (err) {
                                tb_config_kvlist_free(kv, n);
                                return err;
                        }
                        c = comma ? comma + 1 : c + len;
                }
                tb_config_prop_set_map(p, base, kv, n);
                return TB_OK;
        }
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "%s: bad property type",
                         where);
}

/** Assign a libconfig setting to \p p, checking its type. */
tb_err_t tb_config_prop_set_from_setting(const tb_config_prop_t *p, void *base,
                                         const char *where, const config_setting_t *s,
                                         char *errstr, size_t errstr_size) {
        int t = config_setting_type(s);
        bool is_int = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
        switch (p->type) {
        case TB_CT_STRING:
        case TB_CT_ENUM:
                if (t != CONFIG_TYPE_STRING)
                        goto type;
                return tb_config_prop_set_from_string(
                        p, base, where, config_setting_get_string(s), errstr, errstr_size);
        case TB_CT_BOOL:
                if (t != CONFIG_TYPE_BOOL)
                        goto type;
                *(bool *)tb_config_field(base, p->off) = config_setting_get_bool(s) != 0;
                return TB_OK;
        case TB_CT_INT:
                if (!is_int)
                        goto type;
                return tb_config_prop_set_i64(p, base, where, config_setting_get_int64(s),
                                              errstr, errstr_size);
        case TB_CT_DOUBLE: {
                if (!is_int && t != CONFIG_TYPE_FLOAT)
                        goto type;
                double d = is_int ? (double)config_setting_get_int64(s)
                                  : config_setting_get_float(s);
                tb_err_t err = tb_config_prop_range(p, where, d, errstr, errstr_size);
                if (err)
                        return err;
                *(double *)tb_config_field(base, p->off) = d;
                return TB_OK;
        }
        case TB_CT_DURATION:
        case TB_CT_SIZE:
                if (t == CONFIG_TYPE_STRING)
                        return tb_config_prop_set_from_string(p, base, where,
                                                              config_setting_get_string(s),
                                                              errstr, errstr_size);
                if (!is_int)
                        goto type;
                {
                        long long n = config_setting_get_int64(s);
                        int64_t v;
                        if (n < 0)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: %lld is negative", where, n);
                        if (p->type == TB_CT_SIZE)
                                v = n;
                        else if (__builtin_mul_overflow((int64_t)n, TB_SEC(1), &v) ||
                                 v > TB_DURATION_MAX_MS)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: %lld seconds is too large", where, n);
                        return tb_config_prop_set_i64(p, base, where, v, errstr,
                                                      errstr_size);
                }
        case TB_CT_STRLIST: {
                if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
                        goto type;
                int n = config_setting_length(s);
                char **list = n > 0 ? calloc((size_t)n, sizeof(*list)) : NULL;
                if (n > 0 && !list)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                for (int i = 0; i < n; i++) {
                        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                                tb_config_strlist_free(list, (size_t)n);
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s[%d]: expected a string, got %s", where,
                                                 i, tb_config_setting_type_name(e));
                        }
                        list[i] = strdup(config_setting_get_string(e));
                        if (!list[i]) {
                                tb_config_strlist_free(list, (size_t)n);
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory");
                        }
                }
                tb_config_prop_set_list(p, base, list, (size_t)(n > 0 ? n : 0));
                return TB_OK;
        }
        case TB_CT_MAP: {
                if (!config_setting_is_group(s))
                        goto type;
                tb_kv_t *kv = NULL;
                size_t n = 0;
                int len = config_setting_length(s);
                for (int i = 0; i < len; i++) {
                        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                        const char *name = config_setting_name(e);
                        tb_err_t err;
                        if (config_setting_type(e) != CONFIG_TYPE_STRING)
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "%s.%s: expected a string, got %s", where,
                                                name, tb_config_setting_type_name(e));
                        else
                                err = tb_config_kvlist_add(
                                        &kv, &n, where, name, strlen(name),
                                        config_setting_get_string(e), errstr, errstr_size);
                        if (err) {
                                tb_config_kvlist_free(kv, n);
                                return err;
                        }
                }
                tb_config_prop_set_map(p, base, kv, n);
                return TB_OK;
        }
        }
type:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "%s: expected %s, got %s",
                         where, tb_config_type_expect(p->type),
                         tb_config_setting_type_name(s));
}

void tb_config_props_free(const tb_config_prop_t *props, size_t n, void *base) {
        for (size_t i = 0; i < n; i++) {
                const tb_config_prop_t *p = &props[i];
                if (p->type == TB_CT_STRING || p->type == TB_CT_ENUM) {
                        char **f = tb_config_field(base, p->off);
                        free(*f);
                        *f = NULL;
                } else if (p->type == TB_CT_STRLIST) {
                        tb_config_prop_set_list(p, base, NULL, 0);
                } else if (p->type == TB_CT_MAP) {
                        tb_config_prop_set_map(p, base, NULL, 0);
                }
        }
}

tb_err_t tb_config_props_defaults(const tb_config_prop_t *props, size_t n, void *base,
                                  char *errstr, size_t errstr_size) {
        for (size_t i = 0; i < n; i++) {
                char where[128];
                tb_snprintf(where, sizeof(where), "default of %s", props[i].name);
                tb_err_t err = tb_config_prop_set_from_string(
                        &props[i], base, where, props[i].def, errstr, errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}
