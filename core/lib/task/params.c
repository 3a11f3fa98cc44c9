/**
 * @file task/params.c
 * @brief A task's parameters (task/task.h): the declaration checked when a
 *        task is written (tb_task_params_validate(), called by the one task
 *        validator), and the values of one run checked against it with the
 *        defaults filled (tb_task_params_resolve(), the commands role's
 *        RUN_NOW).
 *
 * A parameter reaches the run as an environment variable of its name, so a
 * name is one the shell and every executor can set, and not one taskbus or
 * the executors set themselves (TB_TASK_PARAM_RESERVED). Values are strings
 * (what an environment holds); INT and BOOL restrict which strings. A pattern
 * is a POSIX extended regular expression matched against the whole value,
 * bounded so that neither compiling nor matching it can take unbounded
 * memory or time.
 */
#include "task/task_internal.h"

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** Names a parameter may not take: set by the executors or by the loader. */
static const char *const tb_task_param_reserved[] = {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "PWD", "IFS", "TERM", "TZ", NULL,
};
/** Prefixes a parameter's name may not start with. */
static const char *const tb_task_param_reserved_prefixes[] = {"TASKBUS_", "LD_", "LC_", NULL};

static const char *const tb_task_param_fields[] = {
        "name", "type", "default", "allowed", "pattern", "description", NULL,
};
static const char *const tb_task_param_types[] = {"STRING", "INT", "BOOL", NULL};

enum { TB_TASK_PARAM_STRING, TB_TASK_PARAM_INT, TB_TASK_PARAM_BOOL };

static bool tb_task_param_name_ok(const char *s, size_t len) {
        if (len < 1 || len > TB_TASK_PARAM_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
                if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
                        return false;
        }
        return true;
}

static const char *tb_task_param_reserved_name(const char *name) {
        for (size_t i = 0; tb_task_param_reserved[i]; i++)
                if (!strcmp(name, tb_task_param_reserved[i]))
                        return tb_task_param_reserved[i];
        for (size_t i = 0; tb_task_param_reserved_prefixes[i]; i++)
                if (!strncmp(name, tb_task_param_reserved_prefixes[i],
                             strlen(tb_task_param_reserved_prefixes[i])))
                        return tb_task_param_reserved_prefixes[i];
        return NULL;
}

/** A value as its string: a JSON string, or for INT a JSON integer, for BOOL
 *  a JSON boolean, written into \p num. */
static tb_err_t tb_task_param_text(const json_t *v, int type, const char *field, char *num,
                                   size_t num_size, const char **out, tb_task_err_t *err) {
        size_t bytes;
        if (type == TB_TASK_PARAM_INT && json_is_integer(v)) {
                snprintf(num, num_size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                *out = num;
                return TB_OK;
        }
        if (type == TB_TASK_PARAM_BOOL && json_is_boolean(v)) {
                *out = json_is_true(v) ? "true" : "false";
                return TB_OK;
        }
        if (!json_is_string(v))
                return tb_task_type_fail(err, field,
                                         type == TB_TASK_PARAM_INT    ? "a string or an integer"
                                         : type == TB_TASK_PARAM_BOOL ? "a string or a boolean"
                                                                      : "a string",
                                         v);
        tb_err_t rc = tb_task_string(v, field, true, out, &bytes, NULL, err);
        if (rc)
                return rc;
        if (bytes > TB_TASK_PARAM_VALUE_MAX)
                return tb_task_fail(err, field, "%s: %zu bytes; a parameter value is at most %d "
                                    "bytes (4 KiB)", field, bytes, TB_TASK_PARAM_VALUE_MAX);
        return TB_OK;
}

/** Is \p s a value of \p type? Fills \p err naming \p field when not. */
static tb_err_t tb_task_param_typed(const char *s, int type, const char *field,
                                    tb_task_err_t *err) {
        if (type == TB_TASK_PARAM_INT) {
                const char *p = s + (*s == '-' || *s == '+');
                bool digits = *p != '\0';
                for (; *p && digits; p++)
                        digits = *p >= '0' && *p <= '9';
                errno = 0;
                char *end = NULL;
                (void)strtoll(s, &end, 10);
                if (!digits || errno == ERANGE || !end || *end)
                        return tb_task_fail(err, field,
                                            "%s: '%.64s' is not an INT: give a decimal integer "
                                            "from -9223372036854775808 to 9223372036854775807",
                                            field, s);
        } else if (type == TB_TASK_PARAM_BOOL && strcmp(s, "true") && strcmp(s, "false")) {
                return tb_task_fail(err, field, "%s: '%.64s' is not a BOOL: give true or false",
                                    field, s);
        }
        return TB_OK;
}

/**
 * Refuse a pattern that could make the regex engine take unbounded memory
 * (nested counted repetitions multiply: ((a{100}){100}){100}) or time (back
 * references). @returns TB_OK or TB_ERR_INVALID with \p err filled.
 */
static tb_err_t tb_task_param_pattern_bounds(const char *pat, const char *field,
                                             tb_task_err_t *err) {
        long product = 1;
        for (const char *p = pat; *p; p++) {
                if (*p == '\\' && p[1] >= '1' && p[1] <= '9')
                        return tb_task_fail(err, field,
                                            "%s: back references (\\%c) are not allowed; use "
                                            "groups and alternatives only",
                                            field, p[1]);
                if (*p == '\\' && p[1]) {
                        p++;
                        continue;
                }
                if (*p != '{')
                        continue;
                /* {m}, {m,} or {m,n}: the largest count it names */
                long m = 0, n = 0;
                const char *q = p + 1;
                while (*q >= '0' && *q <= '9' && m <= TB_TASK_PARAM_REPEAT_MAX)
                        m = m * 10 + (*q++ - '0');
                n = m;
                if (*q == ',') {
                        q++;
                        n = 0;
                        while (*q >= '0' && *q <= '9' && n <= TB_TASK_PARAM_REPEAT_MAX)
                                n = n * 10 + (*q++ - '0');
                        if (!n)
                                n = m > 1 ? m : 1;
                }
                if (n < 1)
                        n = 1;
                product *= n;
                if (n > TB_TASK_PARAM_REPEAT_MAX || product > TB_TASK_PARAM_REPEAT_MAX)
                        return tb_task_fail(err, field,
                                            "%s: the counts of its repetitions {m,n} multiply to "
                                            "more than %d; use smaller counts (or * and +)",
                                            field, TB_TASK_PARAM_REPEAT_MAX);
        }
        return TB_OK;
}

/** Compile \p pat anchored on the whole value into \p re (caller regfree()s
 *  on TB_OK). */
static tb_err_t tb_task_param_compile(const char *pat, const char *field, regex_t *re,
                                      tb_task_err_t *err) {
        tb_err_t rc = tb_task_param_pattern_bounds(pat, field, err);
        if (rc)
                return rc;
        char anchored[TB_TASK_PARAM_PATTERN_MAX + 8];
        tb_snprintf(anchored, sizeof(anchored), "^(%s)$", pat);
        int e = regcomp(re, anchored, REG_EXTENDED | REG_NOSUB);
        if (e) {
                char msg[200];
                regerror(e, re, msg, sizeof(msg));
                regfree(re);
                return tb_task_fail(err, field,
                                    "%s: not a POSIX extended regular expression: %s; the "
                                    "pattern is matched against the whole value, e.g. "
                                    "\"[a-z]+(-[a-z]+)*\"",
                                    field, msg);
        }
        return TB_OK;
}

/** Does \p s pass \p allowed and the compiled pattern \p re (NULL: none)?
 *  \p what is "value" or "default" for the message. */
static tb_err_t tb_task_param_allowed(const char *s, const json_t *allowed, const regex_t *re,
                                      const char *pattern, const char *field,
                                      const char *name, tb_task_err_t *err) {
        if (json_array_size(allowed)) {
                size_t i;
                const json_t *a;
                char list[300] = "";
                size_t len = 0;
                json_array_foreach(allowed, i, a) {
                        if (!strcmp(json_string_value(a), s))
                                goto pattern;
                        int n = snprintf(list + len, sizeof(list) - len, "%s%.40s",
                                         i ? ", " : "", json_string_value(a));
                        if (n > 0 && (size_t)n < sizeof(list) - len)
                                len += (size_t)n;
                }
                return tb_task_fail(err, field,
                                    "%s: '%.64s' is not an allowed value of parameter '%s'; "
                                    "allowed: %s",
                                    field, s, name, list);
        }
pattern:
        if (re && regexec(re, s, 0, NULL, 0))
                return tb_task_fail(err, field,
                                    "%s: '%.64s' does not match the pattern of parameter "
                                    "'%s': %.200s (the whole value must match)",
                                    field, s, name, pattern);
        return TB_OK;
}

static int tb_task_param_type_of(const json_t *p) {
        const char *t = json_string_value(json_object_get(p, "type"));
        for (int i = 0; t && tb_task_param_types[i]; i++)
                if (!strcmp(t, tb_task_param_types[i]))
                        return i;
        return TB_TASK_PARAM_STRING;
}

/** Validate declaration \p in (index \p idx) into a new normalized object. */
static tb_err_t tb_task_param_one(const json_t *in, size_t idx, const json_t *done,
                                  json_t **out, tb_task_err_t *err) {
        char path[48], field[96], num[32];
        const char *name, *s;
        size_t bytes;
        tb_err_t rc;
        regex_t re;
        bool have_re = false;
        tb_snprintf(path, sizeof(path), "parameters[%zu]", idx);
        if (!json_is_object(in))
                return tb_task_type_fail(err, path,
                                         "an object with name, type, default, allowed, "
                                         "pattern, description",
                                         in);
        if ((rc = tb_task_check_keys(in, path, tb_task_param_fields, NULL, err)))
                return rc;

        tb_snprintf(field, sizeof(field), "%s.name", path);
        const json_t *v = tb_task_get(in, "name");
        if (!v)
                return tb_task_fail(err, field,
                                    "%s: required: the environment variable the value is "
                                    "given in ([A-Za-z_][A-Za-z0-9_]*, at most %d bytes)",
                                    field, TB_TASK_PARAM_NAME_MAX);
        if ((rc = tb_task_string(v, field, false, &name, &bytes, NULL, err)))
                return rc;
        if (!tb_task_param_name_ok(name, bytes))
                return tb_task_fail(err, field,
                                    "%s: '%.64s' is not an environment variable name: 1 to %d "
                                    "letters, digits and '_', not starting with a digit",
                                    field, name, TB_TASK_PARAM_NAME_MAX);
        const char *res = tb_task_param_reserved_name(name);
        if (res)
                return tb_task_fail(err, field,
                                    "%s: '%s' is reserved (%s%s is set by taskbus or the "
                                    "executor); choose another name",
                                    field, name, res,
                                    res[strlen(res) - 1] == '_' ? "*" : "");
        size_t j;
        const json_t *d;
        json_array_foreach(done, j, d)
                if (!strcmp(json_string_value(json_object_get(d, "name")), name))
                        return tb_task_fail(err, field,
                                            "%s: '%s' is declared twice (also "
                                            "parameters[%zu]); give each parameter its own "
                                            "name",
                                            field, name, j);

        int type = TB_TASK_PARAM_STRING;
        tb_snprintf(field, sizeof(field), "%s.type", path);
        if ((rc = tb_task_enum(tb_task_get(in, "type"), field, tb_task_param_types, &type,
                               err)))
                return rc;

        json_t *p = json_object(), *allowed = json_array();
        bool oom = !p || !allowed;
        tb_task_put(p, "name", json_string(name), &oom);
        tb_task_put(p, "type", json_string(tb_task_param_types[type]), &oom);

        /* pattern first: the default and allowed values must match it */
        const char *pattern = NULL;
        tb_snprintf(field, sizeof(field), "%s.pattern", path);
        if ((v = tb_task_get(in, "pattern"))) {
                if ((rc = tb_task_string(v, field, false, &pattern, &bytes, NULL, err)))
                        goto fail;
                if (bytes < 1 || bytes > TB_TASK_PARAM_PATTERN_MAX) {
                        rc = tb_task_fail(err, field, "%s: a pattern is 1 to %d bytes (got %zu)",
                                          field, TB_TASK_PARAM_PATTERN_MAX, bytes);
                        goto fail;
                }
                if ((rc = tb_task_param_compile(pattern, field, &re, err)))
                        goto fail;
                have_re = true;
        }

        tb_snprintf(field, sizeof(field), "%s.allowed", path);
        if ((v = tb_task_get(in, "allowed"))) {
                if (!json_is_array(v)) {
                        rc = tb_task_type_fail(err, field, "an array of values", v);
                        goto fail;
                }
                if (json_array_size(v) > TB_TASK_PARAM_ALLOWED_MAX) {
                        rc = tb_task_fail(err, field, "%s: %zu values; at most %d allowed",
                                          field, json_array_size(v), TB_TASK_PARAM_ALLOWED_MAX);
                        goto fail;
                }
                size_t i;
                const json_t *a;
                json_array_foreach(v, i, a) {
                        char af[112];
                        tb_snprintf(af, sizeof(af), "%s[%zu]", field, i);
                        if ((rc = tb_task_param_text(a, type, af, num, sizeof(num), &s, err)) ||
                            (rc = tb_task_param_typed(s, type, af, err)) ||
                            (rc = tb_task_param_allowed(s, NULL, have_re ? &re : NULL, pattern,
                                                        af, name, err)))
                                goto fail;
                        if (json_array_append_new(allowed, json_string(s)))
                                oom = true;
                }
        }

        tb_snprintf(field, sizeof(field), "%s.default", path);
        if ((v = tb_task_get(in, "default"))) {
                if ((rc = tb_task_param_text(v, type, field, num, sizeof(num), &s, err)) ||
                    (rc = tb_task_param_typed(s, type, field, err)) ||
                    (rc = tb_task_param_allowed(s, allowed, have_re ? &re : NULL, pattern, field,
                                                name, err)))
                        goto fail;
                tb_task_put(p, "default", json_string(s), &oom);
        } else {
                tb_task_put(p, "default", json_null(), &oom);
        }
        tb_task_put(p, "allowed", allowed, &oom);
        allowed = NULL;
        tb_task_put(p, "pattern", pattern ? json_string(pattern) : json_null(), &oom);

        tb_snprintf(field, sizeof(field), "%s.description", path);
        if ((v = tb_task_get(in, "description"))) {
                size_t chars;
                if ((rc = tb_task_string(v, field, true, &s, NULL, &chars, err)))
                        goto fail;
                if (chars > TB_TASK_PARAM_DESC_MAX) {
                        rc = tb_task_fail(err, field,
                                          "%s: at most %d characters (got %zu)", field,
                                          TB_TASK_PARAM_DESC_MAX, chars);
                        goto fail;
                }
                tb_task_put(p, "description", json_string(s), &oom);
        } else {
                tb_task_put(p, "description", json_null(), &oom);
        }
        if (have_re)
                regfree(&re);
        if (oom) {
                json_decref(p);
                return tb_task_fail(err, path, "%s: out of memory", path);
        }
        *out = p;
        return TB_OK;
fail:
        if (have_re)
                regfree(&re);
        json_decref(allowed);
        json_decref(p);
        return rc;
}

tb_err_t tb_task_params_validate(const json_t *in, json_t **out, tb_task_err_t *err) {
        *out = NULL;
        json_t *a = json_array();
        if (!a)
                return tb_task_fail(err, "parameters", "parameters: out of memory");
        if (in) {
                if (!json_is_array(in)) {
                        json_decref(a);
                        return tb_task_type_fail(err, "parameters",
                                                 "an array of parameter declarations", in);
                }
                if (json_array_size(in) > TB_TASK_PARAMS_MAX) {
                        json_decref(a);
                        return tb_task_fail(err, "parameters",
                                            "parameters: %zu declared; a task has at most %d",
                                            json_array_size(in), TB_TASK_PARAMS_MAX);
                }
                size_t i;
                const json_t *p;
                json_array_foreach(in, i, p) {
                        json_t *one = NULL;
                        tb_err_t rc = tb_task_param_one(p, i, a, &one, err);
                        if (rc) {
                                json_decref(a);
                                return rc;
                        }
                        if (json_array_append_new(a, one)) {
                                json_decref(a);
                                return tb_task_fail(err, "parameters", "parameters: out of "
                                                    "memory");
                        }
                }
        }
        *out = a;
        return TB_OK;
}

/** The declaration of \p name in \p decl, or NULL. */
static const json_t *tb_task_param_find(const json_t *decl, const char *name) {
        size_t i;
        const json_t *p;
        json_array_foreach(decl, i, p)
                if (json_is_string(json_object_get(p, "name")) &&
                    !strcmp(json_string_value(json_object_get(p, "name")), name))
                        return p;
        return NULL;
}

/** One value of a run against its declaration \p p into \p out. */
static tb_err_t tb_task_param_value(const json_t *p, const char *name, const json_t *v,
                                    json_t *out, tb_task_err_t *err) {
        char field[96], num[32];
        const char *s;
        int type = tb_task_param_type_of(p);
        const char *pattern = json_string_value(json_object_get(p, "pattern"));
        regex_t re;
        tb_err_t rc;
        tb_snprintf(field, sizeof(field), "params.%s", name);
        if ((rc = tb_task_param_text(v, type, field, num, sizeof(num), &s, err)) ||
            (rc = tb_task_param_typed(s, type, field, err)))
                return rc;
        if (pattern && (rc = tb_task_param_compile(pattern, field, &re, err)))
                return rc;
        rc = tb_task_param_allowed(s, json_object_get(p, "allowed"), pattern ? &re : NULL,
                                   pattern, field, name, err);
        if (pattern)
                regfree(&re);
        if (!rc && json_object_set_new(out, name, json_string(s)))
                rc = tb_task_fail(err, "params", "params: out of memory");
        return rc;
}

tb_err_t tb_task_params_resolve(const json_t *decl, const json_t *given, json_t **out,
                                tb_task_err_t *err) {
        *out = NULL;
        if (given && !json_is_object(given))
                return tb_task_type_fail(err, "params",
                                         "an object of parameter values ({\"NAME\": \"value\"})",
                                         given);
        json_t *o = json_object();
        if (!o)
                return tb_task_fail(err, "params", "params: out of memory");
        tb_err_t rc = TB_OK;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)given, key, v) {
                const json_t *p = tb_task_param_find(decl, key);
                if (!p) {
                        char list[400] = "";
                        size_t len = 0, i;
                        const json_t *d;
                        json_array_foreach(decl, i, d) {
                                int n = snprintf(list + len, sizeof(list) - len, "%s%s",
                                                 i ? ", " : "",
                                                 json_string_value(json_object_get(d, "name")));
                                if (n > 0 && (size_t)n < sizeof(list) - len)
                                        len += (size_t)n;
                        }
                        bool printable = tb_task_param_name_ok(key, strlen(key));
                        char field[96];
                        tb_snprintf(field, sizeof(field), "params%s%s", printable ? "." : "",
                                    printable ? key : "");
                        rc = tb_task_fail(err, field,
                                          "%s: the task declares no parameter %s%s%s; its "
                                          "parameters: %s",
                                          field, printable ? "'" : "", printable ? key : "by "
                                          "that name", printable ? "'" : "",
                                          *list ? list : "(none)");
                        goto fail;
                }
                if ((rc = tb_task_param_value(p, key, v, o, err)))
                        goto fail;
        }
        size_t i;
        const json_t *p;
        json_array_foreach(decl, i, p) {
                const char *name = json_string_value(json_object_get(p, "name"));
                if (!name || json_object_get(o, name))
                        continue;
                const json_t *d = json_object_get(p, "default");
                if (!json_is_string(d)) {
                        char field[96];
                        tb_snprintf(field, sizeof(field), "params.%s", name);
                        rc = tb_task_fail(err, field,
                                          "%s: required: parameter '%s' has no default; pass "
                                          "a value (REST {\"params\": {\"%s\": \"...\"}}, CLI "
                                          "--param %s=VALUE)",
                                          field, name, name, name);
                        goto fail;
                }
                if (json_object_set(o, name, (json_t *)d)) {
                        rc = tb_task_fail(err, "params", "params: out of memory");
                        goto fail;
                }
        }
        *out = o;
        return TB_OK;
fail:
        json_decref(o);
        return rc;
}
