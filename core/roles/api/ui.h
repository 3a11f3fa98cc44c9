/**
 * @file api/ui.h
 * @brief The web console's files, compiled into taskbusd from ui/
 *        (tools/cmake/embed_ui.cmake writes tb_ui_assets[]), and the route
 *        that serves them at /ui/ (ui.c).
 */
#ifndef TB_API_UI_H
#define TB_API_UI_H

#include <stddef.h>

/** One file of ui/. */
typedef struct tb_ui_asset {
        const char *name;          /**< its file name, e.g. "app.js" */
        const char *content_type;
        const unsigned char *data;
        size_t len;
        const char *etag;          /**< quoted, e.g. "\"3f9a...\"" */
} tb_ui_asset_t;

/** Every file, ending with {NULL}. */
extern const tb_ui_asset_t tb_ui_assets[];

#ifndef TB_UI_ASSETS_ONLY
#include "api/api.h"
/** GET /ui, /ui/ and /ui/{file}: public, from memory. */
tb_api_route_fn tb_api_ui_get;
#endif

#endif /* TB_API_UI_H */
