/**
 * @file http/server.c
 * @brief libmicrohttpd glue: body accumulation with a size cap, routing with
 *        {param} segments, JSON responses, per-route metrics (see http.h).
 */
#include "http/server.h"
#include "http/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct tb_http_server {
        struct MHD_Daemon *mhd;
        const tb_http_route_t *routes;
        void *app;
        tb_http_auth_t auth;
        tb_http_release_t release;
        int64_t max_body;
};

const char *tb_http_query(tb_http_req_t *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *tb_http_header(tb_http_req_t *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

void tb_http_json(tb_http_resp_t *resp, int status, json_t *json) {
        resp->status = status;
        resp->body.len = 0;
        char *s = json_dumps(json, JSON_COMPACT);
        if (s) {
                tb_buf_append(&resp->body, s, strlen(s));
                tb_buf_append(&resp->body, "\n", 1);
                free(s);
        }
        json_decref(json);
}

void tb_http_error(tb_http_resp_t *resp, int status, const char *code, const char *field,
                   const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        json_t *m = json_string(msg);
        if (!m) /* a hostile path or value that is not UTF-8 (or cut inside a sequence) */
                for (char *c = msg; *c; c++)
                        if ((unsigned char)*c >= 0x80)
                                *c = '?';
        json_decref(m);
        json_t *err = json_pack("{s:s, s:s}", "code", code, "message", msg);
        if (field)
                json_object_set_new(err, "field", json_string(field));
        tb_http_json(resp, status, json_pack("{s:o}", "error", err));
}

void tb_http_add_header(tb_http_resp_t *resp, const char *name, const char *value) {
        if (resp->header_cnt >= 4)
                return;
        snprintf(resp->headers[resp->header_cnt][0], 256, "%s", name);
        snprintf(resp->headers[resp->header_cnt][1], 256, "%s", value);
        resp->header_cnt++;
}

/* Match "/v1/tasks/{id}/runs" against a path; fills req->params. */
static bool tb_route_match(const char *pattern, const char *path, tb_http_req_t *req) {
        int np = 0;
        const char *p = pattern, *s = path;
        while (*p && *s) {
                if (*p == '{') {
                        const char *pe = strchr(p, '}');
                        const char *se = strchr(s, '/');
                        if (!pe)
                                return false;
                        if (!se)
                                se = s + strlen(s);
                        size_t len = (size_t)(se - s);
                        if (len == 0 || len >= 256 || np >= TB_HTTP_MAX_PARAMS)
                                return false;
                        memcpy(req->param_store[np], s, len);
                        req->param_store[np][len] = '\0';
                        req->params[np] = req->param_store[np];
                        np++;
                        p = pe + 1;
                        s = se;
                        continue;
                }
                if (*p != *s)
                        return false;
                p++;
                s++;
        }
        if (*s == '/' && s[1] == '\0')
                s++; /* tolerate one trailing slash: "/tasks/" as in the seed API */
        return *p == '\0' && *s == '\0';
}

static enum MHD_Result tb_http_send(struct MHD_Connection *conn, tb_http_resp_t *resp) {
        struct MHD_Response *r = resp->stream;
        if (!r)
                r = MHD_create_response_from_buffer(resp->body.len, resp->body.data,
                                                    MHD_RESPMEM_MUST_COPY);
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, "Content-Type",
                                resp->content_type ? resp->content_type : "application/json");
        for (int i = 0; i < resp->header_cnt; i++)
                MHD_add_response_header(r, resp->headers[i][0], resp->headers[i][1]);
        enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
        MHD_destroy_response(r);
        return ret;
}

static void tb_http_observe(tb_http_req_t *req, int status) {
        char labels[300];
        snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\",code=\"%d\"", req->method,
                 req->route ? req->route : "unmatched", status);
        tb_metrics_add("taskbus_http_requests_total", labels, 1);
        snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\"", req->method,
                 req->route ? req->route : "unmatched");
        tb_metrics_observe("taskbus_http_request_duration_seconds", labels,
                           (double)(tb_mono_us() - req->start_us) / 1e6);
}

static void tb_http_dispatch(tb_http_server_t *srv, tb_http_req_t *req, tb_http_resp_t *resp) {
        bool path_matched = false;
        const tb_http_route_t *route = NULL;
        for (const tb_http_route_t *r = srv->routes; r->pattern; r++) {
                if (!tb_route_match(r->pattern, req->path, req))
                        continue;
                path_matched = true;
                if (!strcmp(r->method, req->method)) {
                        route = r;
                        break;
                }
        }
        if (!route) {
                if (path_matched)
                        tb_http_error(resp, 405, "method_not_allowed", NULL,
                                      "%s is not allowed on %s", req->method, req->path);
                else
                        tb_http_error(resp, 404, "not_found", NULL, "no route %s %s",
                                      req->method, req->path);
                return;
        }
        req->route = route->pattern;
        if (req->body_too_large) {
                tb_http_error(resp, 413, "invalid_argument", NULL,
                              "request body larger than %lld bytes (api.max_body)",
                              (long long)srv->max_body);
                return;
        }
        if (!route->public_route && srv->auth && !srv->auth(srv->app, req, resp))
                return;
        route->handler(srv->app, req, resp);
}

static enum MHD_Result tb_http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
        tb_http_server_t *srv = cls;
        tb_http_req_t *req = *con_cls;
        if (!req) {
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->conn = conn;
                req->method = method;
                req->path = url;
                req->start_us = tb_mono_us();
                *con_cls = req;
                return MHD_YES;
        }
        if (*upload_data_size) {
                if (!req->body_too_large &&
                    req->body.len + *upload_data_size > (size_t)srv->max_body) {
                        req->body_too_large = true;
                        tb_buf_free(&req->body);
                } else if (!req->body_too_large) {
                        tb_buf_append(&req->body, upload_data, *upload_data_size);
                }
                *upload_data_size = 0;
                return MHD_YES;
        }
        tb_http_resp_t resp = {.status = 500};
        tb_http_dispatch(srv, req, &resp);
        if (srv->release && req->user)
                srv->release(srv->app, req);
        enum MHD_Result ret = tb_http_send(conn, &resp);
        tb_http_observe(req, resp.status);
        tb_buf_free(&resp.body);
        return ret;
}

static void tb_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe) {
        tb_http_req_t *req = *con_cls;
        if (!req)
                return;
        tb_buf_free(&req->body);
        free(req);
        *con_cls = NULL;
}

tb_err_t tb_http_start(const char *listen, const tb_http_route_t *routes, void *app,
                       tb_http_auth_t auth, tb_http_release_t release, int64_t max_body,
                       tb_http_server_t **out, char *errstr, size_t errstr_size) {
        char host[128];
        const char *colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof(host))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "api.listen '%s' is not HOST:PORT", listen);
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        int port = atoi(colon + 1);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "api.listen '%s': expected an IPv4 address and a port", listen);
        tb_http_server_t *srv = calloc(1, sizeof(*srv));
        if (!srv)
                return TB_ERR_NOMEM;
        srv->routes = routes;
        srv->app = app;
        srv->auth = auth;
        srv->release = release;
        srv->max_body = max_body;
        tb_metrics_describe("taskbus_http_requests_total", "counter",
                            "HTTP requests by method, route and status code");
        tb_metrics_describe("taskbus_http_request_duration_seconds", "histogram",
                            "HTTP request latency by route");
        srv->mhd = MHD_start_daemon(
                MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                        MHD_USE_ERROR_LOG,
                (uint16_t)port, NULL, NULL, tb_http_access, srv, MHD_OPTION_SOCK_ADDR, &sa,
                MHD_OPTION_NOTIFY_COMPLETED, tb_http_completed, srv,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_LISTENING_ADDRESS_REUSE,
                (unsigned)1, MHD_OPTION_END);
        if (!srv->mhd) {
                int e = errno;
                free(srv);
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "cannot listen on %s: %s (api.listen)", listen, strerror(e));
        }
        *out = srv;
        return TB_OK;
}

void tb_http_stop(tb_http_server_t *srv) {
        if (!srv)
                return;
        MHD_stop_daemon(srv->mhd);
        free(srv);
}
