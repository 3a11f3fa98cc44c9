/* Fixture: a plugin built against a newer minor whose host vtable has more
 * functions than this host provides. */
#include <taskbus/plugin.h>

static int fx_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        return TB_PLUGIN_OK;
}
static int fx_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        return TB_PLUGIN_ERROR;
}
static int fx_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        return TB_PLUGIN_NOT_FOUND;
}
static void fx_destroy(void *state) {}

static const tb_plugin_t fx = {
        .size = sizeof(tb_plugin_t),
        .abi_major = TB_PLUGIN_ABI_MAJOR,
        .abi_minor = TB_PLUGIN_ABI_MINOR + 1,
        .host_size = sizeof(tb_plugin_host_t) + 2 * sizeof(void (*)(void)),
        .name = "fx_new_minor",
        .version = "0",
        .init = fx_init,
        .start = fx_start,
        .cancel = fx_cancel,
        .destroy = fx_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &fx; }
