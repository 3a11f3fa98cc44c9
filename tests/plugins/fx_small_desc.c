/* Fixture: a descriptor that ends before the callbacks (an old or broken
 * header): only the ABI header fields. */
#include <taskbus/plugin.h>

typedef struct fx_small {
        uint32_t size;
        uint16_t abi_major;
        uint16_t abi_minor;
        uint32_t host_size;
        uint32_t reserved0;
} fx_small_t;

static const fx_small_t fx = {
        .size = sizeof(fx_small_t),
        .abi_major = TB_PLUGIN_ABI_MAJOR,
        .abi_minor = TB_PLUGIN_ABI_MINOR,
        .host_size = sizeof(tb_plugin_host_t),
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) {
        return (const tb_plugin_t *)(const void *)&fx;
}
