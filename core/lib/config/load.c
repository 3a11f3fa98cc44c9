/**
 * @file config/load.c
 * @brief Loading taskbus.conf: libconfig's tree walked against the property
 *        tables (unknown keys refused with the valid ones), the kafka,
 *        plugins and groups groups, the environment overrides, then the
 *        cross-field checks; and the configuration's lifetime and lookups.
 *
 * The `kafka`, `plugins` and `groups` top-level groups are not rows: their
 * member names are chosen by the operator, so they get their own walkers.
 */
#include "config/config_internal.h"
#include "bus/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/** Free a string that may hold a secret, wiped first. */
static void tb_config_secret_free(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
        free(s);
}

/** Edit distance counting a swap of two neighbours as one edit (typos
 *  like "ulr" for "url"); capped for long strings, they are names. */
static size_t tb_config_edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (la > 64 || lb > 64)
                return (size_t)-1;
        size_t d[65][65];
        for (size_t i = 0; i <= la; i++)
                d[i][0] = i;
        for (size_t j = 0; j <= lb; j++)
                d[0][j] = j;
        for (size_t i = 1; i <= la; i++) {
                for (size_t j = 1; j <= lb; j++) {
                        size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
                        size_t best = d[i - 1][j - 1] + cost;
                        if (d[i - 1][j] + 1 < best)
                                best = d[i - 1][j] + 1;
                        if (d[i][j - 1] + 1 < best)
                                best = d[i][j - 1] + 1;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                            d[i - 2][j - 2] + 1 < best)
                                best = d[i - 2][j - 2] + 1;
                        d[i][j] = best;
                }
        }
        return d[la][lb];
}

/** "FILE:LINE: " for \p s. Settings from an @included file carry the name
 *  as written; show it relative to the include directory like libconfig
 *  resolved it. */
static void tb_config_loc(const tb_config_ctx_t *ctx, const config_setting_t *s, char *buf,
                          size_t size) {
        const char *f = config_setting_source_file(s);
        unsigned line = config_setting_source_line(s);
        if (!f || !strcmp(f, ctx->path))
                tb_snprintf(buf, size, "%s:%u: ", ctx->path, line);
        else if (f[0] == '/' || !ctx->dir || !strcmp(ctx->dir, "."))
                tb_snprintf(buf, size, "%s:%u: ", f, line);
        else
                tb_snprintf(buf, size, "%s/%s:%u: ", ctx->dir, f, line);
}

/** Refuse \p s, named \p disp, unless it is a group; \p shape shows one. */
static tb_err_t tb_config_expect_group(const tb_config_ctx_t *ctx, const config_setting_t *s,
                                       const char *disp, const char *shape, char *errstr,
                                       size_t errstr_size) {
        if (config_setting_is_group(s))
                return TB_OK;
        char loc[512];
        tb_config_loc(ctx, s, loc, sizeof(loc));
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s%s: expected a group (%s), got %s", loc, disp, shape,
                         tb_config_setting_type_name(s));
}

/** Member \p i of the operator-named group \p grp ("plugins", "groups"),
 *  named "plugins.NAME" in \p disp, refused unless it is a group. */
static tb_err_t tb_config_member_group(const tb_config_ctx_t *ctx, const config_setting_t *grp,
                                       int i, const char *shape,
                                       const config_setting_t **member, char *disp,
                                       size_t disp_size, char *errstr, size_t errstr_size) {
        *member = config_setting_get_elem(grp, (unsigned)i);
        tb_snprintf(disp, disp_size, "%s.%s", config_setting_name(grp),
                    config_setting_name(*member));
        return tb_config_expect_group(ctx, *member, disp, shape, errstr, errstr_size);
}

static int tb_config_cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/**
 * Unknown key \p key at relative level \p rel_prefix ("" or "api.") of
 * \p props: list the valid keys there and suggest the closest one.
 */
static tb_err_t tb_config_unknown_key(const tb_config_ctx_t *ctx, const config_setting_t *s,
                                      const tb_config_prop_t *props, size_t n,
                                      const char *rel_prefix, const char *disp_group,
                                      const char **extra, size_t extra_cnt, char *errstr,
                                      size_t errstr_size) {
        const char *names[TB_CONFIG_PROPS_MAX + 8];
        size_t len[TB_ARRAY_LEN(names)];
        size_t cnt = 0, pl = strlen(rel_prefix);
        for (size_t i = 0; i < n && cnt < TB_ARRAY_LEN(names); i++) {
                if (strncmp(props[i].name, rel_prefix, pl))
                        continue;
                const char *rest = props[i].name + pl;
                const char *dot = strchr(rest, '.');
                size_t l = dot ? (size_t)(dot - rest) : strlen(rest);
                bool dup = false;
                for (size_t j = 0; j < cnt; j++)
                        if (len[j] == l && !strncmp(names[j], rest, l))
                                dup = true;
                if (!dup) {
                        names[cnt] = rest;
                        len[cnt++] = l;
                }
        }
        /* Copy out as NUL-terminated names so they can be sorted. */
        char buf[TB_ARRAY_LEN(names)][64];
        const char *sorted[TB_ARRAY_LEN(names) + TB_CONFIG_SPECIAL_MAX];
        size_t sc = 0;
        for (size_t i = 0; i < cnt; i++) {
                tb_snprintf(buf[i], sizeof(buf[i]), "%.*s", (int)len[i], names[i]);
                sorted[sc++] = buf[i];
        }
        for (size_t i = 0; i < extra_cnt && sc < TB_ARRAY_LEN(sorted); i++)
                sorted[sc++] = extra[i];
        qsort(sorted, sc, sizeof(sorted[0]), tb_config_cmp_str);

        const char *key = config_setting_name(s);
        char list[1024];
        /* Suggest only near misses: a third of the name, at least one edit. */
        size_t klen = strlen(key);
        size_t limit = klen / 3 > 1 ? klen / 3 : 1;
        const char *best = tb_names_nearest(key, sorted, sc, tb_config_edit_distance, limit,
                                            list, sizeof(list));
        char hint[128] = "";
        if (best)
                tb_snprintf(hint, sizeof(hint), " (did you mean '%s'?)", best);
        char loc[512];
        tb_config_loc(ctx, s, loc, sizeof(loc));
        if (*disp_group)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%sunknown key '%s.%s'; valid keys in '%s': %s%s", loc,
                                 disp_group, key, disp_group, list, hint);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%sunknown key '%s'; valid top-level keys: %s%s", loc, key, list,
                         hint);
}

static tb_err_t tb_config_load_channels(tb_config_ctx_t *ctx, tb_config_t *conf,
                                        const config_setting_t *list, const char *disp,
                                        char *errstr, size_t errstr_size);

/**
 * Apply every member of libconfig group \p grp to \p props/\p base.
 * \p rel_prefix is the property-name prefix of this level ("" or "api."),
 * \p disp_prefix the full dotted path for messages ("" , "groups.ops").
 * \p origin, if non-NULL, receives "FILE:LINE: key" per property index.
 */
static tb_err_t tb_config_walk(tb_config_ctx_t *ctx, const config_setting_t *grp,
                               const tb_config_prop_t *props, size_t n, void *base,
                               const char *rel_prefix, const char *disp_prefix,
                               char (*origin)[TB_CONFIG_ORIGIN_MAX], char *errstr,
                               size_t errstr_size) {
        int cnt = config_setting_length(grp);
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
                const char *name = config_setting_name(s);
                char rel[256], disp[256], where[768];
                tb_snprintf(rel, sizeof(rel), "%s%s", rel_prefix, name);
                tb_snprintf(disp, sizeof(disp), "%s%s%s", disp_prefix,
                            *disp_prefix ? "." : "", name);
                bool top = !*rel_prefix && !*disp_prefix;
                bool special = false;
                for (size_t j = 0; top && j < tb_config_special_groups_cnt; j++)
                        special |= !strcmp(name, tb_config_special_groups[j]);
                if (special)
                        continue;
                tb_config_loc(ctx, s, where, sizeof(where));
                tb_snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s",
                            disp);
                if (props == tb_config_props && !strcmp(rel, "notify.channels")) {
                        tb_err_t err = tb_config_load_channels(ctx, base, s, disp, errstr,
                                                               errstr_size);
                        if (err)
                                return err;
                        continue;
                }
                size_t rl = strlen(rel);
                bool is_prefix = false;
                size_t k;
                for (k = 0; k < n; k++) {
                        if (!strcmp(props[k].name, rel))
                                break;
                        if (!strncmp(props[k].name, rel, rl) && props[k].name[rl] == '.')
                                is_prefix = true;
                }
                if (k < n) {
                        tb_err_t err = tb_config_prop_set_from_setting(
                                &props[k], base, where, s, errstr, errstr_size);
                        if (err)
                                return err;
                        if (origin)
                                tb_snprintf(origin[k], sizeof(origin[k]), "%s", where);
                        continue;
                }
                if (is_prefix) {
                        char sub[260];
                        tb_snprintf(sub, sizeof(sub), "%s.", rel);
                        tb_err_t err = tb_config_expect_group(ctx, s, disp, "{ ... }", errstr,
                                                              errstr_size);
                        if (!err)
                                err = tb_config_walk(ctx, s, props, n, base, sub, disp,
                                                     origin, errstr, errstr_size);
                        if (err)
                                return err;
                        continue;
                }
                /* notify.channels has its own walker too */
                static const char *notify_extra[] = {"channels"};
                bool in_notify = props == tb_config_props && !strcmp(rel_prefix, "notify.");
                return tb_config_unknown_key(ctx, s, props, n, rel_prefix, disp_prefix,
                                             top ? tb_config_special_groups
                                                 : in_notify ? notify_extra : NULL,
                                             top ? tb_config_special_groups_cnt
                                                 : in_notify ? 1 : 0,
                                             errstr, errstr_size);
        }
        return TB_OK;
}

/** A scalar setting as a string (for kafka and plugin pass-through). */
static tb_err_t tb_config_scalar_string(const tb_config_ctx_t *ctx,
                                        const config_setting_t *s, const char *disp,
                                        char **out, char *errstr, size_t errstr_size) {
        char buf[64];
        const char *v = buf;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING:
                v = config_setting_get_string(s);
                break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                tb_snprintf(buf, sizeof(buf), "%lld", config_setting_get_int64(s));
                break;
        case CONFIG_TYPE_FLOAT: {
                /* Shortest form that reads back as the same double. */
                double d = config_setting_get_float(s);
                for (int prec = 6; prec <= 17; prec++) {
                        tb_snprintf(buf, sizeof(buf), "%.*g", prec, d);
                        if (strtod(buf, NULL) == d)
                                break;
                }
                break;
        }
        case CONFIG_TYPE_BOOL:
                v = config_setting_get_bool(s) ? "true" : "false";
                break;
        default: {
                char loc[512];
                tb_config_loc(ctx, s, loc, sizeof(loc));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s%s: expected a string, number or boolean, got %s", loc,
                                 disp, tb_config_setting_type_name(s));
        }
        }
        *out = strdup(v);
        return *out ? TB_OK
                    : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
}

/** Validate one librdkafka property (librdkafka itself is asked). */
static tb_err_t tb_config_kafka_check(const char *where,
                                      const char *key, const char *value, char *errstr,
                                      size_t errstr_size) {
        for (size_t i = 0; i < tb_config_kafka_managed_cnt; i++)
                if (!strcmp(key, tb_config_kafka_managed[i]))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: \"%s\" is set by taskbus for each role; "
                                         "remove it",
                                         where, key);
        char rkerr[512];
        if (tb_bus_prop_check(key, value, rkerr, sizeof(rkerr)) != TB_OK)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: librdkafka: %s", where, rkerr);
        return TB_OK;
}

/** Set (or replace) kafka property \p key in \p conf; takes \p value. */
static tb_err_t tb_config_kafka_put(tb_config_t *conf, const char *key, char *value,
                                    char *errstr, size_t errstr_size) {
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                if (!strcmp(conf->kafka[i].key, key)) {
                        free(conf->kafka[i].value);
                        conf->kafka[i].value = value;
                        return TB_OK;
                }
        }
        tb_kv_t *kv = realloc(conf->kafka, (conf->kafka_cnt + 1) * sizeof(*kv));
        char *k = strdup(key);
        if (!kv || !k) {
                if (kv)
                        conf->kafka = kv;
                free(k);
                free(value);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        conf->kafka = kv;
        conf->kafka[conf->kafka_cnt].key = k;
        conf->kafka[conf->kafka_cnt].value = value;
        conf->kafka_cnt++;
        return TB_OK;
}

/** Largest secret file read for a `kafka` property (a password, not a key). */
#define TB_CONFIG_SECRET_FILE_MAX 4096

/**
 * Read the secret of `kafka.<name>_file` from \p path (relative to the config
 * file's directory): refused when others may read it or it is empty; a
 * warning when its group may. Trailing newlines are dropped. *\p out is
 * malloc'd.
 */
static tb_err_t tb_config_secret_file(const tb_config_ctx_t *ctx, const char *where,
                                      const char *path, tb_file_access_t access, char **out,
                                      char *errstr, size_t errstr_size) {
        char full[4096];
        if (path[0] != '/' && ctx->dir)
                tb_snprintf(full, sizeof(full), "%s/%s", ctx->dir, path);
        else
                tb_snprintf(full, sizeof(full), "%s", path);
        char *buf = NULL;
        size_t len = 0;
        tb_err_t err = tb_file_read(where, full, "the secret", TB_CONFIG_SECRET_FILE_MAX,
                                    access,
                                    "point it at the file holding the secret (mode 0600)", &buf,
                                    &len, errstr, errstr_size);
        if (err)
                return err;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
                len--;
        buf[len] = '\0';
        if (!len || memchr(buf, '\0', len) || memchr(buf, '\n', len)) {
                explicit_bzero(buf, len);
                free(buf);
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: '%s' must hold the secret alone, on one line (it is %s)",
                                 where, full, len ? "several lines" : "empty");
        }
        *out = buf;
        return TB_OK;
}

/** A config file holding a secret in its text should be readable by its owner only. */
static void tb_config_secret_inline_check(const tb_config_ctx_t *ctx, const char *disp) {
        struct stat sb;
        if (!ctx->path || stat(ctx->path, &sb) != 0 || !(sb.st_mode & 077))
                return;
        tb_warn("config", "%s holds the secret %s and has mode %04o: chmod 600 '%s', or keep "
                "the secret in a file of its own (%s_file = \"/etc/taskbus/...\", mode 0600)",
                ctx->path, disp, (unsigned)(sb.st_mode & 07777), ctx->path, disp);
}

static tb_err_t tb_config_load_kafka(tb_config_ctx_t *ctx, tb_config_t *conf,
                                     const config_setting_t *grp, char *errstr,
                                     size_t errstr_size) {
        int cnt = config_setting_length(grp);
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
                char disp[256], key[256], where[768];
                tb_snprintf(disp, sizeof(disp), "kafka.%s", config_setting_name(s));
                tb_snprintf(key, sizeof(key), "%s", config_setting_name(s));
                for (char *c = key; *c; c++)
                        if (*c == '_')
                                *c = '.';
                tb_config_loc(ctx, s, where, sizeof(where));
                tb_snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s",
                            disp);
                char *value = NULL;
                tb_err_t err =
                        tb_config_scalar_string(ctx, s, disp, &value, errstr, errstr_size);
                if (err)
                        return err;
                /* sasl_password_file: the secret of sasl.password, from a file */
                size_t kl = strlen(key);
                if (kl > 5 && !strcmp(key + kl - 5, ".file")) {
                        key[kl - 5] = '\0';
                        if (tb_config_kafka_secret(key)) {
                                char *secret = NULL;
                                err = tb_config_secret_file(ctx, where, value, TB_FILE_SECRET,
                                                            &secret, errstr, errstr_size);
                                free(value);
                                if (err)
                                        return err;
                                value = secret;
                        } else {
                                key[kl - 5] = '.';
                        }
                } else if (tb_config_kafka_secret(key)) {
                        tb_config_secret_inline_check(ctx, disp);
                }
                if (tb_config_kafka_secret(key) && tb_bus_prop(conf, key)) {
                        tb_config_secret_free(value);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: %s is set twice (inline and from a _file key); "
                                         "keep one",
                                         where, key);
                }
                err = tb_config_kafka_check(where, key, value, errstr, errstr_size);
                if (err) {
                        free(value);
                        return err;
                }
                err = tb_config_kafka_put(conf, key, value, errstr, errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}

static tb_err_t tb_config_load_plugins(tb_config_ctx_t *ctx, tb_config_t *conf,
                                       const config_setting_t *grp, char *errstr,
                                       size_t errstr_size) {
        int cnt = config_setting_length(grp);
        if (cnt <= 0)
                return TB_OK;
        conf->plugins = calloc((size_t)cnt, sizeof(*conf->plugins));
        if (!conf->plugins)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *ps;
                char disp[256];
                tb_err_t err = tb_config_member_group(ctx, grp, i, "{ key = value; ... }", &ps,
                                                      disp, sizeof(disp), errstr, errstr_size);
                if (err)
                        return err;
                tb_plugin_conf_t *pc = &conf->plugins[conf->plugin_cnt++];
                pc->name = strdup(config_setting_name(ps));
                int kc = config_setting_length(ps);
                if (kc > 0) {
                        pc->kv = calloc((size_t)kc, sizeof(*pc->kv));
                        pc->kv_where = calloc((size_t)kc, sizeof(*pc->kv_where));
                }
                if (!pc->name || (kc > 0 && (!pc->kv || !pc->kv_where)))
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                for (int j = 0; j < kc; j++) {
                        const config_setting_t *s = config_setting_get_elem(ps, (unsigned)j);
                        char kdisp[512];
                        tb_snprintf(kdisp, sizeof(kdisp), "%s.%s", disp,
                                    config_setting_name(s));
                        tb_kv_t *kv = &pc->kv[pc->kv_cnt];
                        char loc[512];
                        tb_config_loc(ctx, s, loc, sizeof(loc));
                        loc[strlen(loc) - 2] = '\0'; /* drop the ": " */
                        kv->key = strdup(config_setting_name(s));
                        pc->kv_where[pc->kv_cnt] = strdup(loc);
                        if (!kv->key || !pc->kv_where[pc->kv_cnt])
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory");
                        pc->kv_cnt++;
                        err = tb_config_scalar_string(ctx, s, kdisp, &kv->value, errstr,
                                                      errstr_size);
                        if (err)
                                return err;
                }
        }
        return TB_OK;
}

static void tb_config_group_free(tb_group_conf_t *g) {
        tb_config_props_free(tb_config_group_props, tb_config_group_props_cnt, g);
        free(g->name);
}

static tb_err_t tb_config_load_groups(tb_config_ctx_t *ctx, tb_config_t *conf,
                                      const config_setting_t *grp, char *errstr,
                                      size_t errstr_size) {
        int cnt = config_setting_length(grp);
        if (cnt <= 0)
                return TB_OK;
        conf->groups = calloc((size_t)cnt, sizeof(*conf->groups));
        ctx->group_line = calloc((size_t)cnt, sizeof(*ctx->group_line));
        if (!conf->groups || !ctx->group_line)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *gs;
                char disp[256];
                tb_err_t err = tb_config_member_group(ctx, grp, i, "{ os_user = \"...\"; ... }",
                                                      &gs, disp, sizeof(disp), errstr,
                                                      errstr_size);
                if (err)
                        return err;
                tb_group_conf_t *g = &conf->groups[conf->group_cnt];
                ctx->group_line[conf->group_cnt] = config_setting_source_line(gs);
                conf->group_cnt++;
                g->name = strdup(config_setting_name(gs));
                if (!g->name)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                err = tb_config_props_defaults(tb_config_group_props,
                                               tb_config_group_props_cnt, g, errstr,
                                               errstr_size);
                if (!err)
                        err = tb_config_walk(ctx, gs, tb_config_group_props,
                                             tb_config_group_props_cnt, g, "", disp, NULL,
                                             errstr, errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}

static void tb_config_channel_free(tb_notify_channel_t *ch) {
        tb_config_props_free(tb_config_channel_props, tb_config_channel_props_cnt, ch);
        if (ch->secret)
                explicit_bzero(ch->secret, ch->secret_len);
        free(ch->secret);
}

/** Whether \p s is 1 to 64 of [A-Za-z0-9._-]. */
static bool tb_config_channel_name_ok(const char *s) {
        size_t n = strlen(s);
        if (n < 1 || n > 64)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("._-", *s)))
                        return false;
        return true;
}

/** The checks of one channel \p ch (\p where: "FILE:LINE: notify.channels[i]"). */
static tb_err_t tb_config_channel_check(const tb_config_t *conf, const tb_notify_channel_t *ch,
                                        const char *where, char *errstr, size_t errstr_size) {
        bool webhook = !strcmp(ch->type, "webhook");
        if (!ch->name || !tb_config_channel_name_ok(ch->name))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s.name: %s: 1 to 64 letters, digits, '.', '_' or '-' (what "
                                 "a task's notify rule names in \"channel\")",
                                 where, ch->name ? "invalid" : "required");
        for (size_t i = 0; i < conf->notify_channel_cnt; i++)
                if (&conf->notify_channels[i] != ch && conf->notify_channels[i].name &&
                    !strcmp(conf->notify_channels[i].name, ch->name))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s.name: channel '%s' is defined twice; give each "
                                         "channel its own name",
                                         where, ch->name);
        const char *u = ch->url;
        if (!u || (webhook ? strncmp(u, "http://", 7) && strncmp(u, "https://", 8)
                           : strncmp(u, "smtp://", 7) && strncmp(u, "smtps://", 8)))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s.url: %s: a %s channel's url starts with %s", where,
                                 u ? "invalid" : "required", ch->type,
                                 webhook ? "http:// or https://"
                                         : "smtp:// or smtps:// (smtp://HOST:PORT)");
        if (webhook && !ch->secret_file)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s.secret_file: required for a webhook: the file holding the "
                                 "HMAC-SHA256 key its notifications are signed with (e.g. "
                                 "`openssl rand -hex 32 > /etc/taskbus/%s.secret; chmod 600 "
                                 "...`)",
                                 where, ch->name);
        if (!webhook && (!ch->from || !*ch->from))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s.from: required for an smtp channel: the sender address",
                                 where);
        if (!webhook && !ch->to_cnt)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s.to: required for an smtp channel: a list of recipient "
                                 "addresses, like [\"ops@example.com\"]",
                                 where);
        return TB_OK;
}

static tb_err_t tb_config_load_channels(tb_config_ctx_t *ctx, tb_config_t *conf,
                                        const config_setting_t *list, const char *disp,
                                        char *errstr, size_t errstr_size) {
        char loc[512];
        tb_config_loc(ctx, list, loc, sizeof(loc));
        if (!config_setting_is_list(list) && !config_setting_is_array(list))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s%s: expected a list of groups (like ( { name = \"ops\"; "
                                 "type = \"webhook\"; url = \"https://...\"; secret_file = "
                                 "\"...\"; } )), got %s",
                                 loc, disp, tb_config_setting_type_name(list));
        int cnt = config_setting_length(list);
        for (size_t i = 0; i < conf->notify_channel_cnt; i++)
                tb_config_channel_free(&conf->notify_channels[i]);
        free(conf->notify_channels);
        conf->notify_channel_cnt = 0;
        conf->notify_channels = cnt > 0 ? calloc((size_t)cnt, sizeof(*conf->notify_channels))
                                        : NULL;
        if (cnt > 0 && !conf->notify_channels)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *cs = config_setting_get_elem(list, (unsigned)i);
                char cdisp[256], where[768];
                tb_snprintf(cdisp, sizeof(cdisp), "%s[%d]", disp, i);
                tb_err_t err = tb_config_expect_group(ctx, cs, cdisp,
                                                      "{ name = \"...\"; type = \"webhook\"; "
                                                      "url = \"...\"; ... }",
                                                      errstr, errstr_size);
                if (err)
                        return err;
                tb_notify_channel_t *ch = &conf->notify_channels[conf->notify_channel_cnt++];
                err = tb_config_props_defaults(tb_config_channel_props,
                                               tb_config_channel_props_cnt, ch, errstr,
                                               errstr_size);
                if (!err)
                        err = tb_config_walk(ctx, cs, tb_config_channel_props,
                                             tb_config_channel_props_cnt, ch, "", cdisp, NULL,
                                             errstr, errstr_size);
                if (err)
                        return err;
                tb_config_loc(ctx, cs, where, sizeof(where));
                tb_snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s", cdisp);
                if ((err = tb_config_channel_check(conf, ch, where, errstr, errstr_size)))
                        return err;
                if (ch->secret_file) {
                        char swhere[800];
                        tb_snprintf(swhere, sizeof(swhere), "%s.secret_file", where);
                        if ((err = tb_config_secret_file(ctx, swhere, ch->secret_file,
                                                         TB_FILE_PRIVATE, &ch->secret, errstr,
                                                         errstr_size)))
                                return err;
                        ch->secret_len = strlen(ch->secret);
                }
        }
        return TB_OK;
}

/** Environment overrides: after the file, before finalize. */
static tb_err_t tb_config_apply_env(tb_config_ctx_t *ctx, tb_config_t *conf, char *errstr,
                                    size_t errstr_size) {
        for (size_t i = 0; i < tb_config_props_cnt; i++) {
                const tb_config_prop_t *p = &tb_config_props[i];
                const char *v = p->env ? getenv(p->env) : NULL;
                if (!v || !*v)
                        continue;
                char where[TB_CONFIG_ORIGIN_MAX];
                tb_snprintf(where, sizeof(where), "%s (from environment variable %s)",
                            p->name, p->env);
                tb_err_t err = tb_config_prop_set_from_string(p, conf, where, v, errstr,
                                                              errstr_size);
                if (err)
                        return err;
                tb_snprintf(ctx->origin[i], sizeof(ctx->origin[i]), "%s", where);
        }
        const char *k = getenv("TASKBUS_KAFKA");
        if (k && *k) {
                tb_err_t err = tb_config_kafka_check(
                        "kafka.bootstrap_servers (from environment variable "
                        "TASKBUS_KAFKA)",
                        "bootstrap.servers", k, errstr, errstr_size);
                if (err)
                        return err;
                char *v = strdup(k);
                if (!v)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                return tb_config_kafka_put(conf, "bootstrap.servers", v, errstr,
                                           errstr_size);
        }
        return TB_OK;
}

void tb_config_destroy(tb_config_t *conf) {
        if (!conf)
                return;
        tb_config_props_free(tb_config_props, tb_config_props_cnt, conf);
        free(conf->path);
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                free(conf->kafka[i].key);
                tb_config_secret_free(conf->kafka[i].value);
        }
        free(conf->kafka);
        for (size_t i = 0; i < conf->plugin_cnt; i++) {
                for (size_t j = 0; j < conf->plugins[i].kv_cnt; j++) {
                        free(conf->plugins[i].kv[j].key);
                        free(conf->plugins[i].kv[j].value);
                        free(conf->plugins[i].kv_where[j]);
                }
                free(conf->plugins[i].kv);
                free(conf->plugins[i].kv_where);
                free(conf->plugins[i].name);
        }
        free(conf->plugins);
        for (size_t i = 0; i < conf->group_cnt; i++)
                tb_config_group_free(&conf->groups[i]);
        free(conf->groups);
        for (size_t i = 0; i < conf->notify_channel_cnt; i++)
                tb_config_channel_free(&conf->notify_channels[i]);
        free(conf->notify_channels);
        tb_config_group_free(&conf->group_default);
        free(conf);
}

/** Defaults only; on failure (a bad table row) NULL with errstr set. */
static tb_config_t *tb_config_new_defaults(char *errstr, size_t errstr_size) {
        tb_config_t *conf = calloc(1, sizeof(*conf));
        if (!conf) {
                tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                return NULL;
        }
        conf->path = strdup("(defaults)");
        char *bootstrap = strdup(TB_CONFIG_KAFKA_BOOTSTRAP_DEFAULT);
        if (!conf->path || !bootstrap) {
                free(bootstrap);
                tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto fail;
        }
        conf->group_default.name = strdup("*");
        if (!conf->group_default.name) {
                tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto fail;
        }
        if (tb_config_props_defaults(tb_config_props, tb_config_props_cnt, conf, errstr,
                                     errstr_size) ||
            tb_config_props_defaults(tb_config_group_props, tb_config_group_props_cnt,
                                     &conf->group_default, errstr, errstr_size) ||
            tb_config_kafka_put(conf, "bootstrap.servers", bootstrap, errstr, errstr_size))
                goto fail;
        return conf;
fail:
        tb_config_destroy(conf);
        return NULL;
}

tb_config_t *tb_config_defaults(void) {
        char errstr[256];
        tb_config_t *conf = tb_config_new_defaults(errstr, sizeof(errstr));
        if (!conf)
                tb_error("config", "defaults: %s", errstr);
        return conf;
}

tb_err_t tb_config_load(const char *path, tb_config_t **out, char *errstr,
                        size_t errstr_size) {
        tb_config_ctx_t *ctx = calloc(1, sizeof(*ctx));
        tb_config_t *conf = NULL;
        config_t cfg;
        bool cfg_init = false;
        char *dir = NULL;
        tb_err_t err;

        *out = NULL;
        if (!ctx)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        ctx->path = path ? path : "(defaults)";
        for (size_t i = 0; i < tb_config_props_cnt; i++)
                tb_snprintf(ctx->origin[i], sizeof(ctx->origin[i]), "%s (default)",
                            tb_config_props[i].name);
        conf = tb_config_new_defaults(errstr, errstr_size);
        if (!conf) {
                err = TB_ERR_INTERNAL;
                goto fail;
        }

        if (path) {
                /* libconfig says only "file I/O error": get the real reason. */
                struct stat st;
                FILE *fp = fopen(path, "r");
                if (!fp || fstat(fileno(fp), &st) || !S_ISREG(st.st_mode)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                        "cannot read config file %s: %s", path,
                                        fp ? "not a regular file" : strerror(errno));
                        if (fp)
                                fclose(fp);
                        goto fail;
                }
                fclose(fp);
                free(conf->path);
                conf->path = strdup(path);
                dir = strdup(path);
                if (!conf->path || !dir) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                        goto fail;
                }
                /* @include paths are relative to the main file's directory. */
                char *slash = strrchr(dir, '/');
                if (slash)
                        slash[slash == dir ? 1 : 0] = '\0';
                ctx->dir = slash ? dir : ".";
                err = tb_config_prescan_file(ctx->dir, path, 0, errstr, errstr_size);
                if (err)
                        goto fail;
                config_init(&cfg);
                cfg_init = true;
                config_set_include_dir(&cfg, ctx->dir);
                if (!config_read_file(&cfg, path)) {
                        const char *ef = config_error_file(&cfg);
                        const char *et = config_error_text(&cfg);
                        if (!et)
                                et = "unknown error";
                        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                                err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                                "%s: cannot read config file: %s",
                                                ef ? ef : path, et);
                        else
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "%s:%d: %s%s", ef ? ef : path,
                                                config_error_line(&cfg),
                                                strstr(et, "syntax error") ? ""
                                                                           : "syntax error: ",
                                                et);
                        goto fail;
                }
                const config_setting_t *root = config_root_setting(&cfg);
                /* The special groups first: they have their own walkers. */
                int cnt = config_setting_length(root);
                for (int i = 0; i < cnt; i++) {
                        const config_setting_t *s = config_setting_get_elem(root,
                                                                            (unsigned)i);
                        const char *name = config_setting_name(s);
                        bool special = false;
                        for (size_t j = 0; j < tb_config_special_groups_cnt; j++)
                                special |= !strcmp(name, tb_config_special_groups[j]);
                        if (special &&
                            (err = tb_config_expect_group(ctx, s, name, "{ ... }", errstr,
                                                          errstr_size)))
                                goto fail;
                        if (!strcmp(name, "kafka"))
                                err = tb_config_load_kafka(ctx, conf, s, errstr,
                                                           errstr_size);
                        else if (!strcmp(name, "plugins"))
                                err = tb_config_load_plugins(ctx, conf, s, errstr,
                                                             errstr_size);
                        else if (!strcmp(name, "groups"))
                                err = tb_config_load_groups(ctx, conf, s, errstr,
                                                            errstr_size);
                        else
                                err = TB_OK;
                        if (err)
                                goto fail;
                }
                /* Then the typed table (tb_config_walk skips the special groups). */
                err = tb_config_walk(ctx, root, tb_config_props, tb_config_props_cnt, conf,
                                     "", "", ctx->origin, errstr, errstr_size);
                if (err)
                        goto fail;
        }

        err = tb_config_apply_env(ctx, conf, errstr, errstr_size);
        if (!err)
                err = tb_config_finalize(ctx, conf, errstr, errstr_size);
        if (err)
                goto fail;

        *out = conf;
        conf = NULL;
fail:
        if (cfg_init)
                config_destroy(&cfg);
        free(dir);
        free(ctx->group_line);
        free(ctx);
        tb_config_destroy(conf);
        return err;
}

const tb_group_conf_t *tb_config_group(const tb_config_t *conf, const char *name) {
        for (size_t i = 0; conf && name && i < conf->group_cnt; i++)
                if (!strcmp(conf->groups[i].name, name))
                        return &conf->groups[i];
        return NULL;
}

const tb_group_conf_t *tb_config_group_policy(const tb_config_t *conf,
                                              const char *name) {
        const tb_group_conf_t *g = tb_config_group(conf, name);
        return g ? g : conf ? &conf->group_default : NULL;
}

const tb_notify_channel_t *tb_config_notify_channel(const tb_config_t *conf, const char *name) {
        for (size_t i = 0; conf && name && i < conf->notify_channel_cnt; i++)
                if (!strcmp(conf->notify_channels[i].name, name))
                        return &conf->notify_channels[i];
        return NULL;
}

const tb_plugin_conf_t *tb_config_plugin(const tb_config_t *conf, const char *name) {
        for (size_t i = 0; conf && name && i < conf->plugin_cnt; i++)
                if (!strcmp(conf->plugins[i].name, name))
                        return &conf->plugins[i];
        return NULL;
}

const char *tb_plugin_conf_get(const tb_plugin_conf_t *pc, const char *key) {
        for (size_t i = 0; pc && key && i < pc->kv_cnt; i++)
                if (!strcmp(pc->kv[i].key, key))
                        return pc->kv[i].value;
        return NULL;
}
