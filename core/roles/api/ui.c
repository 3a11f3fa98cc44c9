/**
 * @file api/ui.c
 * @brief GET /ui/{file}: the web console's files from memory
 *        (tb_ui_assets[]), with their Content-Type, an ETag (If-None-Match
 *        answers 304), Cache-Control: no-cache (revalidated on every load, so
 *        a new taskbusd's console is used at once) and a Content-Security-Policy
 *        that allows only this origin's scripts and styles: no inline script,
 *        no eval, nothing from elsewhere, no framing.
 *
 * Only names in the table are served: a path with '/', "..", '%' or anything
 * else matches no entry and is 404, so nothing outside the compiled files can
 * be reached. /ui redirects to /ui/, which is index.html.
 */
#include "api/ui.h"

#include <string.h>

/** The policy of every console response. */
#define TB_UI_CSP                                                                          \
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

static const tb_ui_asset_t *tb_ui_find(const char *name) {
        for (const tb_ui_asset_t *a = tb_ui_assets; a->name; a++)
                if (!strcmp(a->name, name))
                        return a;
        return NULL;
}

void tb_api_ui_get(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        (void)app;
        if (!strcmp(req->path, "/ui")) {
                resp->status = 308;
                resp->content_type = "text/plain; charset=utf-8";
                tb_buf_append(&resp->body, "the console is at /ui/\n", 23);
                tb_http_add_header(resp, "Location", "/ui/");
                return;
        }
        const char *name = req->params[0] ? req->params[0] : "index.html";
        if (!strcmp(req->path, "/ui/"))
                name = "index.html";
        const tb_ui_asset_t *a = tb_ui_find(name);
        if (!a) {
                tb_http_error(resp, 404, "not_found", NULL,
                              "the console has no file '%.100s': open /ui/", name);
                return;
        }
        tb_http_add_header(resp, "Content-Security-Policy", TB_UI_CSP);
        tb_http_add_header(resp, "X-Content-Type-Options", "nosniff");
        tb_http_add_header(resp, "Referrer-Policy", "no-referrer");
        tb_http_add_header(resp, "Cache-Control", "no-cache");
        tb_http_add_header(resp, "ETag", a->etag);
        const char *inm = tb_http_header(req, "If-None-Match");
        resp->content_type = a->content_type;
        if (inm && strstr(inm, a->etag)) {
                resp->status = 304;
                return;
        }
        resp->status = 200;
        tb_buf_append(&resp->body, a->data, a->len);
}
