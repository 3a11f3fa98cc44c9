/* Fixture: loads fine, then dereferences NULL inside start() (or abort()s
 * with the executor option crash=abort). */
#include <stdlib.h>
#include <string.h>
#include <taskbus/plugin.h>

static int fx_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        return TB_PLUGIN_OK;
}

static int *volatile fx_null;

static int fx_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        for (size_t i = 0; i < run->n_options; i++)
                if (!strcmp(run->options[i].key, "crash") &&
                    !strcmp(run->options[i].value, "abort"))
                        abort();
        *fx_null = 42;
        return TB_PLUGIN_OK;
}
static int fx_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        return TB_PLUGIN_NOT_FOUND;
}
static void fx_destroy(void *state) {}

static const tb_plugin_t fx = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "fx_crash",
        .version = "0",
        .init = fx_init,
        .start = fx_start,
        .cancel = fx_cancel,
        .destroy = fx_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &fx; }
