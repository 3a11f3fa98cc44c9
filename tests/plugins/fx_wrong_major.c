/* Fixture: a plugin built against a future ABI major. */
#include <taskbus/plugin.h>

static const tb_plugin_t fx = {
        .size = sizeof(tb_plugin_t),
        .abi_major = TB_PLUGIN_ABI_MAJOR + 1,
        .abi_minor = 0,
        .host_size = sizeof(tb_plugin_host_t),
        .name = "fx_wrong_major",
        .version = "0",
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &fx; }
