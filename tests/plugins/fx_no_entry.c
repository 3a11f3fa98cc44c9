/* Fixture: a shared object that exports something, but not tb_plugin_entry. */
#include <taskbus/plugin.h>

TB_PLUGIN_EXPORT int fx_not_the_entry(void);
TB_PLUGIN_EXPORT int fx_not_the_entry(void) { return 42; }
