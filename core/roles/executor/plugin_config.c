/**
 * @file executor/plugin_config.c
 * @brief What the plugin host hands a plugin from the configuration: its
 *        config key/values checked against the plugin's key table and
 *        normalised for init(), and the security group policy each run
 *        carries (tb_plugin_policy_build()).
 */
#include "executor/plugin_host.h"

#include "executor/plugin_host_internal.h"
#include "config/config.h"
#include "units.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- configuration -------------------------------------------------------- */

/* Normalise \p value for \p key into a malloc'd string (see the
 * TB_PLUGIN_CONF_* docs). */
static tb_err_t tb_plugin_host_conf_value(const char *who, const tb_plugin_config_key_t *key,
                                          const char *value, char **out, char *errstr,
                                          size_t errstr_size) {
        char buf[32];
        const char *norm = value;
        switch (key->type) {
        case TB_PLUGIN_CONF_STRING:
                break;
        case TB_PLUGIN_CONF_BOOL:
                if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") ||
                    !strcasecmp(value, "on") || !strcmp(value, "1"))
                        norm = "true";
                else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") ||
                         !strcasecmp(value, "off") || !strcmp(value, "0"))
                        norm = "false";
                else
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config key '%s' must be true or "
                                         "false, got '%s'", who, key->name, value);
                break;
        case TB_PLUGIN_CONF_INT: {
                char *end;
                errno = 0;
                long long v = strtoll(value, &end, 10);
                if (errno || end == value || *end)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config key '%s' must be an "
                                         "integer, got '%s'", who, key->name, value);
                snprintf(buf, sizeof(buf), "%lld", v);
                norm = buf;
                break;
        }
        case TB_PLUGIN_CONF_DURATION: {
                int64_t ms;
                if (tb_units_duration_parse(value, &ms, NULL, 0) != TB_OK)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config key '%s' must be a "
                                         "duration such as 250ms, 5s, 2m or 1h "
                                         "(a bare number means seconds), got '%s'",
                                         who, key->name, value);
                snprintf(buf, sizeof(buf), "%lld", (long long)ms);
                norm = buf;
                break;
        }
        default:
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: config key '%s' has unknown type %d in the "
                                 "plugin's key table", who, key->name, (int)key->type);
        }
        *out = strdup(norm);
        if (!*out)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        return TB_OK;
}

/* Free \p n key/values whose keys are static or borrowed and whose values
 * are malloc'd (the config init() receives, a run's policy), and the array. */
void tb_plugin_host_kv_free(tb_plugin_kv_t *kv, size_t n) {
        for (size_t i = 0; kv && i < n; i++)
                free((char *)kv[i].value);
        free(kv);
}

/* Check \p config against the plugin's key table and produce the full,
 * normalised list init() receives (*out: keys borrowed from the table,
 * values malloc'd; free with tb_plugin_host_kv_free). */
tb_err_t tb_plugin_host_conf_check(const char *who, const tb_plugin_config_key_t *keys,
                                   const tb_plugin_kv_t *config, size_t n_config,
                                   tb_plugin_kv_t **out, size_t *n_out,
                                   char *errstr, size_t errstr_size) {
        size_t nkeys = 0;
        while (keys && keys[nkeys].name)
                nkeys++;
        *out = NULL;
        *n_out = 0;

        for (size_t i = 0; i < n_config; i++) {
                const char *k = config[i].key;
                if (!k || !*k)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config entry %zu has an empty key",
                                         who, i + 1);
                size_t j;
                for (j = 0; j < nkeys; j++)
                        if (!strcmp(keys[j].name, k))
                                break;
                if (j == nkeys) {
                        tb_buf_t valid = {0};
                        for (size_t v = 0; v < nkeys; v++)
                                tb_buf_printf(&valid, "%s%s", v ? ", " : "", keys[v].name);
                        tb_err_t err = tb_seterr(
                                errstr, errstr_size, TB_ERR_INVALID,
                                "%s: unknown config key '%s'; valid keys: %s", who,
                                k, nkeys ? (valid.data ? valid.data : "?")
                                         : "(none: this plugin takes no configuration)");
                        tb_buf_free(&valid);
                        return err;
                }
                for (size_t d = 0; d < i; d++)
                        if (config[d].key && !strcmp(config[d].key, k))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: config key '%s' is set twice",
                                                 who, k);
        }

        tb_plugin_kv_t *kv = calloc(nkeys ? nkeys : 1, sizeof(*kv));
        if (!kv)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        size_t n = 0;
        for (size_t j = 0; j < nkeys; j++) {
                const char *value = keys[j].default_value;
                bool set = false;
                for (size_t i = 0; i < n_config; i++) {
                        if (!strcmp(config[i].key, keys[j].name)) {
                                value = config[i].value ? config[i].value : "";
                                set = true;
                        }
                }
                if (!set && keys[j].required) {
                        tb_plugin_host_kv_free(kv, n);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: missing required config key '%s' (%s)",
                                         who, keys[j].name,
                                         keys[j].description ? keys[j].description : "");
                }
                if (!value)
                        continue;
                char *norm = NULL;
                tb_err_t err = tb_plugin_host_conf_value(who, &keys[j], value, &norm,
                                                         errstr, errstr_size);
                if (err) {
                        tb_plugin_host_kv_free(kv, n);
                        return err;
                }
                kv[n].key = keys[j].name;
                kv[n].value = norm;
                n++;
        }
        *out = kv;
        *n_out = n;
        return TB_OK;
}

/* ---- security group policy for runs (ABI 1.1) ------------------------------ */

void tb_plugin_policy_free(tb_plugin_kv_t *kv, size_t n) { tb_plugin_host_kv_free(kv, n); }

tb_err_t tb_plugin_policy_build(const struct tb_group_conf *g, tb_plugin_kv_t **out,
                                size_t *n_out, char *errstr, size_t errstr_size) {
        *out = NULL;
        *n_out = 0;
        if (!g)
                return TB_OK;
        tb_plugin_kv_t *kv = calloc(8 + g->image_cnt, sizeof(*kv));
        if (!kv)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        size_t n = 0;
        bool ok = true;
        char num[64];
#define TB_PLUGIN_HOST_POL_ADD(k, v)                                                       \
        do {                                                                   \
                const char *v_ = (v);                                          \
                if (v_) {                                                      \
                        kv[n].key = (k);                                       \
                        kv[n].value = tb_plugin_host_dup(v_, &ok);                  \
                        n++;                                                   \
                }                                                              \
        } while (0)
        TB_PLUGIN_HOST_POL_ADD("os_user", g->os_user);
        TB_PLUGIN_HOST_POL_ADD("network", g->network);
        if (g->memory_max_bytes > 0) {
                snprintf(num, sizeof(num), "%lld", (long long)g->memory_max_bytes);
                TB_PLUGIN_HOST_POL_ADD("memory_max", num);
        }
        if (g->cpus_max > 0) {
                snprintf(num, sizeof(num), "%.6g", g->cpus_max);
                TB_PLUGIN_HOST_POL_ADD("cpus_max", num);
        }
        TB_PLUGIN_HOST_POL_ADD("ssh_key", g->ssh_key);
        TB_PLUGIN_HOST_POL_ADD("ssh_known_hosts", g->ssh_known_hosts);
        TB_PLUGIN_HOST_POL_ADD("allow_root", g->allow_root ? "true" : "false");
        for (size_t i = 0; i < g->image_cnt; i++)
                TB_PLUGIN_HOST_POL_ADD("images", g->images[i]);
#undef TB_PLUGIN_HOST_POL_ADD
        if (!ok) {
                tb_plugin_policy_free(kv, n);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        *out = kv;
        *n_out = n;
        return TB_OK;
}
