/**
 * @file http/server.h
 * @brief The HTTP layer of the api role (libmicrohttpd, a thread per
 *        connection so handlers may block on Kafka replies and stream logs):
 *        request/response types, the route table, JSON error helpers.
 */
#ifndef TB_HTTP_H
#define TB_HTTP_H

#include "tb.h"
#include <jansson.h>
#include <microhttpd.h>

#define TB_HTTP_MAX_PARAMS 4

/** One request, alive for the duration of the handler call. */
typedef struct tb_http_req {
        struct MHD_Connection *conn;
        const char *method;
        const char *path;
        tb_buf_t body;
        bool body_too_large;
        const char *params[TB_HTTP_MAX_PARAMS]; /**< {placeholders} of the route, in order */
        char param_store[TB_HTTP_MAX_PARAMS][256];
        const char *route;        /**< the matched route pattern, for metrics */
        int64_t start_us;
        void *user;               /**< set by authentication (api.c owns it) */
} tb_http_req_t;

/** A response being built by a handler. */
typedef struct tb_http_resp {
        int status;
        tb_buf_t body;
        const char *content_type;           /**< default application/json */
        char headers[4][2][256];            /**< extra headers (name, value) */
        int header_cnt;
        struct MHD_Response *stream;        /**< set for streamed responses */
} tb_http_resp_t;

typedef void (*tb_http_handler_t)(void *app, tb_http_req_t *req, tb_http_resp_t *resp);

/** One route: method + pattern with {name} segments. */
typedef struct tb_http_route {
        const char *method;
        const char *pattern;
        tb_http_handler_t handler;
        bool public_route; /**< no authentication (only /healthz) */
} tb_http_route_t;

typedef struct tb_http_server tb_http_server_t;

/** Called for every non-public route before its handler; returns false and
 *  fills \p resp to refuse (401/429...). */
typedef bool (*tb_http_auth_t)(void *app, tb_http_req_t *req, tb_http_resp_t *resp);
/** Called after the handler to release req->user. */
typedef void (*tb_http_release_t)(void *app, tb_http_req_t *req);

/**
 * Start listening on \p listen ("host:port") with the NULL-pattern-terminated
 * \p routes. \p max_body larger request bodies are answered 413.
 * Caller owns the server (tb_http_stop()).
 */
tb_err_t tb_http_start(const char *listen, const tb_http_route_t *routes, void *app,
                       tb_http_auth_t auth, tb_http_release_t release, int64_t max_body,
                       tb_http_server_t **out, char *errstr, size_t errstr_size);
/** Stop accepting, wait for handlers, free. NULL allowed. */
void tb_http_stop(tb_http_server_t *srv);

/** @returns a query-string argument or NULL. */
const char *tb_http_query(tb_http_req_t *req, const char *name);
/** @returns a request header or NULL. */
const char *tb_http_header(tb_http_req_t *req, const char *name);

/** Respond with \p json (reference stolen) and \p status. */
void tb_http_json(tb_http_resp_t *resp, int status, json_t *json);
/** Respond {"error":{"code","message","field"}}; \p field may be NULL. */
void tb_http_error(tb_http_resp_t *resp, int status, const char *code, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/** Add a response header (up to 4). */
void tb_http_add_header(tb_http_resp_t *resp, const char *name, const char *value);

#endif
