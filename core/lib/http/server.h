/**
 * @file http/server.h
 * @brief The HTTP layer of the api role (libmicrohttpd, a thread per
 *        connection so handlers may block on Kafka replies and stream logs):
 *        request/response types, the route table, JSON error helpers, and
 *        the limits that keep one client from holding the server.
 *
 * Limits (tb_http_limits_t): connections in total and per client address
 * (refused at accept), a deadline for a request's headers (also the
 * keep-alive idle time) and one for its body (a reaper thread shuts the
 * socket of a client past them: a slow client cannot hold a thread), bodies
 * over max_body refused with 413 before they are read when Content-Length
 * says so, a cap on requests per keep-alive connection, and methods no route
 * has answered 405 with Allow, counted under method="other" in metrics.
 * Handlers of authenticated routes run in at most `workers` request slots at
 * once; a request that finds none free within queue_timeout_ms gets 503 with
 * Retry-After. Public routes (/healthz, /metrics) take no slot. Connections
 * keep a thread each (libmicrohttpd's thread per connection): handlers block
 * on PostgreSQL and Kafka, and a streamed body (a log follow) is produced by
 * its connection's thread outside any slot.
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
        bool answered;            /**< answered before its body was read */
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
        char headers[6][2][256];            /**< extra headers (name, value) */
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

/** What one client may take of the server (see the file comment). */
typedef struct tb_http_limits {
        int64_t max_body;                 /**< bytes; larger bodies get 413 */
        unsigned max_connections;         /**< open connections, all clients */
        unsigned max_per_client;          /**< open connections per client IP */
        int64_t header_timeout_ms;        /**< request line + headers; keep-alive idle */
        int64_t body_timeout_ms;          /**< the body once the headers are in */
        unsigned max_requests_per_conn;   /**< then the response says Connection: close */
        unsigned workers;                 /**< handlers running at once (0 = 1) */
        int64_t queue_timeout_ms;         /**< wait for a worker slot, then 503 */
} tb_http_limits_t;

struct tb_config;
/** Fill \p out from the api.* keys of \p conf. */
void tb_http_limits_from_config(const struct tb_config *conf, tb_http_limits_t *out);

/** Called for every non-public route before its handler; returns false and
 *  fills \p resp to refuse (401/429...). */
typedef bool (*tb_http_auth_t)(void *app, tb_http_req_t *req, tb_http_resp_t *resp);
/** Called after the handler to release req->user. */
typedef void (*tb_http_release_t)(void *app, tb_http_req_t *req);

struct tb_http_tls;
/**
 * Start listening on \p listen ("host:port") with the NULL-pattern-terminated
 * \p routes, within \p limits (copied). With \p tls (http/tls.h; NULL: plain
 * HTTP) the server speaks HTTPS only; the TLS library has taken its own copy
 * of the certificate and key when this returns, so the caller may wipe and
 * free \p tls at once. Caller owns the server (tb_http_stop()).
 */
tb_err_t tb_http_start(const char *listen, const tb_http_route_t *routes, void *app,
                       tb_http_auth_t auth, tb_http_release_t release,
                       const tb_http_limits_t *limits, const struct tb_http_tls *tls,
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
/** Add a response header (up to 6). */
void tb_http_add_header(tb_http_resp_t *resp, const char *name, const char *value);

#endif
