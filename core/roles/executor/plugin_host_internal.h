/**
 * @file executor/plugin_host_internal.h
 * @brief What the plugin host's files (plugin_host.c, plugin_config.c,
 *        plugin_probe.c) share; plugin_host.h is the public header.
 */
#ifndef TB_PLUGIN_HOST_INTERNAL_H
#define TB_PLUGIN_HOST_INTERNAL_H

#include "tb.h"

#include <taskbus/plugin.h>

#include <stdbool.h>
#include <stddef.h>

/* plugin_host.c */
/** strdup() that keeps NULL as NULL and reports failure by clearing *\p ok. */
char *tb_plugin_host_dup(const char *s, bool *ok);

/* plugin_config.c */
/** Free \p n key/values with borrowed keys and malloc'd values, and the array. */
void tb_plugin_host_kv_free(tb_plugin_kv_t *kv, size_t n);
/**
 * @brief Check \p config against the plugin's key table \p keys (unknown,
 *        duplicated, missing required keys; typed values) and produce the full,
 *        normalised list init() receives, defaults included.
 * @param who  "plugin 'name' (/path)", to start every message
 * @param out  receives the list (keys borrowed from \p keys, values malloc'd);
 *             free with tb_plugin_host_kv_free()
 * @returns TB_OK, TB_ERR_INVALID naming the key, or TB_ERR_NOMEM.
 */
tb_err_t tb_plugin_host_conf_check(const char *who, const tb_plugin_config_key_t *keys,
                                   const tb_plugin_kv_t *config, size_t n_config,
                                   tb_plugin_kv_t **out, size_t *n_out,
                                   char *errstr, size_t errstr_size);

#endif /* TB_PLUGIN_HOST_INTERNAL_H */
