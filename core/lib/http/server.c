/**
 * @file http/server.c
 * @brief libmicrohttpd glue: body accumulation with a size cap, routing with
 *        {param} segments, JSON responses, per-route metrics, and the
 *        per-client limits with their reaper thread (see server.h).
 */
#include "http/server.h"
#include "config/config.h"
#include "http/metrics.h"
#include "http/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* Where a connection is in its current request, for the reaper. */
enum { TB_HTTP_PH_HEADERS, TB_HTTP_PH_BODY, TB_HTTP_PH_HANDLING };

/** One open connection (MHD's socket context). Under srv->conn_lock. */
typedef struct tb_http_conn {
        struct tb_http_conn *prev, *next;
        int fd;
        int phase;          /* TB_HTTP_PH_* */
        int64_t since_us;   /* tb_mono_us() the phase began */
        unsigned requests;  /* served on this connection */
        bool shut;          /* the reaper shut it down */
} tb_http_conn_t;

struct tb_http_server {
        struct MHD_Daemon *mhd;
        const tb_http_route_t *routes;
        void *app;
        tb_http_auth_t auth;
        tb_http_release_t release;
        tb_http_limits_t lim;
        pthread_mutex_t conn_lock;
        pthread_cond_t reaper_cond; /* CLOCK_MONOTONIC */
        tb_http_conn_t *conns;
        bool reaper_started, stopping;
        atomic_bool mhd_running; /**< MHD_start_daemon() has returned it */
        pthread_t reaper;
        /* The worker slots (lim.workers): under slot_lock. */
        pthread_mutex_t slot_lock;
        pthread_cond_t slot_freed; /* CLOCK_MONOTONIC */
        unsigned slots_busy;
};

void tb_http_limits_from_config(const struct tb_config *conf, tb_http_limits_t *out) {
        *out = (tb_http_limits_t){
                .max_body = conf->api_max_body,
                .max_connections = (unsigned)conf->api_max_connections,
                .max_per_client = (unsigned)conf->api_max_connections_per_client,
                .header_timeout_ms = conf->api_header_timeout_ms,
                .body_timeout_ms = conf->api_body_timeout_ms,
                .max_requests_per_conn = (unsigned)conf->api_max_requests_per_connection,
                .workers = (unsigned)conf->api_threads,
                .queue_timeout_ms = conf->api_queue_timeout_ms,
        };
}

/* The methods routes use; anything else is "other" in metrics. */
static const char *const tb_http_methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE",
                                              "HEAD", "OPTIONS"};

static const char *tb_http_method_label(const char *m) {
        for (size_t i = 0; i < sizeof(tb_http_methods) / sizeof(tb_http_methods[0]); i++)
                if (!strcmp(m, tb_http_methods[i]))
                        return tb_http_methods[i];
        return "other";
}

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
        if (resp->header_cnt >= (int)(sizeof(resp->headers) / sizeof(resp->headers[0])))
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
        const char *m = tb_http_method_label(req->method);
        snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\",code=\"%d\"", m,
                 req->route ? req->route : "unmatched", status);
        tb_metrics_add("taskbus_http_requests_total", labels, 1);
        snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\"", m,
                 req->route ? req->route : "unmatched");
        tb_metrics_observe("taskbus_http_request_duration_seconds", labels,
                           (double)(tb_mono_us() - req->start_us) / 1e6);
}

/* "GET, POST" of the routes matching \p path (all methods routes use when
 * none matches) into \p out. */
static void tb_http_allow(tb_http_server_t *srv, tb_http_req_t *req, char *out, size_t size) {
        size_t o = 0;
        out[0] = '\0';
        for (const tb_http_route_t *r = srv->routes; r->pattern; r++) {
                tb_http_req_t scratch = {0};
                if (!tb_route_match(r->pattern, req->path, &scratch))
                        continue;
                if (strstr(out, r->method))
                        continue;
                int n = snprintf(out + o, size - o, "%s%s", o ? ", " : "", r->method);
                if (n < 0 || (size_t)n >= size - o)
                        break;
                o += (size_t)n;
        }
        if (!o)
                snprintf(out, size, "GET, POST, PUT, PATCH, DELETE");
}

/* Wait up to lim.queue_timeout_ms for one of lim.workers slots: however many
 * connections are open, at most that many requests run handlers (PostgreSQL,
 * Kafka) at once. @returns false on timeout (counted). */
static bool tb_http_slot_take(tb_http_server_t *srv) {
        bool got = true;
        int64_t by = tb_mono_us() + srv->lim.queue_timeout_ms * 1000;
        pthread_mutex_lock(&srv->slot_lock);
        while (srv->slots_busy >= srv->lim.workers) {
                int64_t left_ms = (by - tb_mono_us()) / 1000;
                if (left_ms <= 0) {
                        got = false;
                        break;
                }
                tb_cond_wait_ms(&srv->slot_freed, &srv->slot_lock, left_ms);
        }
        if (got)
                srv->slots_busy++;
        unsigned busy = srv->slots_busy;
        pthread_mutex_unlock(&srv->slot_lock);
        if (got)
                tb_metrics_set("taskbus_http_workers_busy", NULL, busy);
        else
                tb_metrics_add("taskbus_http_queue_timeouts_total", NULL, 1);
        return got;
}

static void tb_http_slot_give(tb_http_server_t *srv) {
        pthread_mutex_lock(&srv->slot_lock);
        unsigned busy = --srv->slots_busy;
        pthread_cond_signal(&srv->slot_freed);
        pthread_mutex_unlock(&srv->slot_lock);
        tb_metrics_set("taskbus_http_workers_busy", NULL, busy);
}

static void tb_http_dispatch(tb_http_server_t *srv, tb_http_req_t *req, tb_http_resp_t *resp) {
        bool path_matched = false;
        const tb_http_route_t *route = NULL;
        bool known_method = strcmp(tb_http_method_label(req->method), "other") != 0;
        for (const tb_http_route_t *r = srv->routes; known_method && r->pattern; r++) {
                if (!tb_route_match(r->pattern, req->path, req))
                        continue;
                path_matched = true;
                if (!strcmp(r->method, req->method)) {
                        route = r;
                        break;
                }
        }
        if (!route) {
                if (path_matched || !known_method) {
                        char allow[128];
                        tb_http_allow(srv, req, allow, sizeof(allow));
                        tb_http_error(resp, 405, "method_not_allowed", NULL,
                                      "%.32s is not allowed on %.200s; allowed: %s",
                                      known_method ? req->method : "this method", req->path,
                                      allow);
                        tb_http_add_header(resp, "Allow", allow);
                } else {
                        tb_http_error(resp, 404, "not_found", NULL, "no route %s %.200s",
                                      req->method, req->path);
                }
                return;
        }
        req->route = route->pattern;
        /* /healthz and /metrics answer from memory: a probe still gets an
         * answer while every worker slot is busy. */
        if (route->public_route) {
                route->handler(srv->app, req, resp);
                return;
        }
        if (!tb_http_slot_take(srv)) {
                char ra[24];
                snprintf(ra, sizeof(ra), "%lld",
                         (long long)(srv->lim.queue_timeout_ms + 999) / 1000);
                tb_http_error(resp, 503, "unavailable", NULL,
                              "the server is busy: all %u request slots (api.threads) stayed "
                              "in use for %lld ms (api.queue_timeout); retry later",
                              srv->lim.workers, (long long)srv->lim.queue_timeout_ms);
                tb_http_add_header(resp, "Retry-After", ra);
                return;
        }
        if (!srv->auth || srv->auth(srv->app, req, resp))
                route->handler(srv->app, req, resp);
        tb_http_slot_give(srv);
}

/* Move the connection of \p conn to \p phase. */
static void tb_http_phase(tb_http_server_t *srv, struct MHD_Connection *conn, int phase,
                          unsigned *requests) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        tb_http_conn_t *c = ci ? ci->socket_context : NULL;
        if (!c)
                return;
        pthread_mutex_lock(&srv->conn_lock);
        c->phase = phase;
        c->since_us = tb_mono_us();
        if (requests)
                *requests = ++c->requests;
        pthread_mutex_unlock(&srv->conn_lock);
}

/* Answer at once, before any body is read (413 on Content-Length). */
static enum MHD_Result tb_http_refuse_early(tb_http_server_t *srv, tb_http_req_t *req,
                                            int status) {
        tb_http_resp_t resp = {.status = status};
        tb_http_error(&resp, 413, "invalid_argument", NULL,
                      "request body larger than %lld bytes (api.max_body): Content-Length "
                      "says %.20s", (long long)srv->lim.max_body,
                      tb_http_header(req, "Content-Length"));
        tb_http_add_header(&resp, "Connection", "close");
        enum MHD_Result ret = tb_http_send(req->conn, &resp);
        tb_http_observe(req, resp.status);
        tb_buf_free(&resp.body);
        req->answered = true;
        return ret;
}

static enum MHD_Result tb_http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
        tb_http_server_t *srv = cls;
        tb_http_req_t *req = *con_cls;
        (void)version;
        if (!req) {
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->conn = conn;
                req->method = method;
                req->path = url;
                req->start_us = tb_mono_us();
                *con_cls = req;
                tb_http_phase(srv, conn, TB_HTTP_PH_BODY, NULL);
                const char *cl = tb_http_header(req, "Content-Length");
                if (cl) {
                        char *end = NULL;
                        errno = 0;
                        unsigned long long n = strtoull(cl, &end, 10);
                        if (errno == ERANGE || (end && end != cl && *end == '\0' &&
                                                n > (unsigned long long)srv->lim.max_body))
                                return tb_http_refuse_early(srv, req, 413);
                }
                return MHD_YES;
        }
        if (req->answered) {
                *upload_data_size = 0; /* already answered: the rest is dropped */
                return MHD_YES;
        }
        if (*upload_data_size) {
                if (req->body.len + *upload_data_size > (size_t)srv->lim.max_body) {
                        /* A chunked body past the limit: stop reading it. */
                        tb_warn("http", "%.16s %.200s: chunked body over api.max_body (%lld "
                                "bytes): connection closed", method, url,
                                (long long)srv->lim.max_body);
                        return MHD_NO;
                }
                tb_buf_append(&req->body, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        }
        unsigned nreq = 0;
        tb_http_phase(srv, conn, TB_HTTP_PH_HANDLING, &nreq);
        tb_http_resp_t resp = {.status = 500};
        tb_http_dispatch(srv, req, &resp);
        if (srv->release && req->user)
                srv->release(srv->app, req);
        if (nreq >= srv->lim.max_requests_per_conn)
                tb_http_add_header(&resp, "Connection", "close");
        enum MHD_Result ret = tb_http_send(conn, &resp);
        tb_http_observe(req, resp.status);
        tb_buf_free(&resp.body);
        return ret;
}

/* libmicrohttpd's own messages (a port it cannot bind, GnuTLS refusing a
 * certificate, a client's failed TLS handshake) as log lines of taskbus
 * instead of raw stderr text. */
static void tb_http_mhd_log(void *cls, const char *fmt, va_list ap) {
        tb_http_server_t *srv = cls;
        char line[512];
        vsnprintf(line, sizeof(line), fmt, ap);
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        /* Before the daemon runs, a message is why it cannot start. */
        tb_log(atomic_load(&srv->mhd_running) ? TB_LOG_INFO : TB_LOG_WARN, "http",
               "libmicrohttpd: %s", line);
}

static void tb_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe) {
        tb_http_server_t *srv = cls;
        tb_http_req_t *req = *con_cls;
        (void)toe;
        /* Waiting for the next request on this connection: the header
         * deadline runs again (the keep-alive idle bound). */
        tb_http_phase(srv, conn, TB_HTTP_PH_HEADERS, NULL);
        if (!req)
                return;
        tb_buf_free(&req->body);
        free(req);
        *con_cls = NULL;
}

static void tb_http_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                           enum MHD_ConnectionNotificationCode toe) {
        tb_http_server_t *srv = cls;
        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                tb_http_conn_t *c = calloc(1, sizeof(*c));
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
                if (!c)
                        return; /* not tracked: only the idle timeout applies */
                c->fd = ci ? ci->connect_fd : -1;
                c->phase = TB_HTTP_PH_HEADERS;
                c->since_us = tb_mono_us();
                pthread_mutex_lock(&srv->conn_lock);
                c->next = srv->conns;
                if (srv->conns)
                        srv->conns->prev = c;
                srv->conns = c;
                pthread_mutex_unlock(&srv->conn_lock);
                *socket_context = c;
                return;
        }
        tb_http_conn_t *c = *socket_context;
        if (!c)
                return;
        pthread_mutex_lock(&srv->conn_lock);
        if (c->prev)
                c->prev->next = c->next;
        else
                srv->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        pthread_mutex_unlock(&srv->conn_lock);
        free(c);
        *socket_context = NULL;
}

/* Shut the sockets of clients past their header or body deadline; the
 * connection's own thread then sees the end of the stream and closes it. */
static void *tb_http_reaper_main(void *arg) {
        tb_http_server_t *srv = arg;
        pthread_mutex_lock(&srv->conn_lock);
        while (!srv->stopping) {
                tb_cond_wait_ms(&srv->reaper_cond, &srv->conn_lock, 250);
                int64_t now = tb_mono_us();
                for (tb_http_conn_t *c = srv->conns; c; c = c->next) {
                        int64_t limit_ms = c->phase == TB_HTTP_PH_HEADERS ? srv->lim.header_timeout_ms
                                           : c->phase == TB_HTTP_PH_BODY  ? srv->lim.body_timeout_ms
                                                                          : -1;
                        if (limit_ms < 0 || c->shut || c->fd < 0 ||
                            now - c->since_us < limit_ms * 1000)
                                continue;
                        /* counted first: whoever sees the close sees the count */
                        tb_metrics_add("taskbus_http_slow_clients_total",
                                       c->phase == TB_HTTP_PH_HEADERS ? "phase=\"headers\""
                                                                     : "phase=\"body\"",
                                       1);
                        shutdown(c->fd, SHUT_RDWR);
                        c->shut = true;
                }
        }
        pthread_mutex_unlock(&srv->conn_lock);
        return NULL;
}

/* A connection thread's stack: handlers keep their buffers on the heap, and
 * thousands of idle connections must not reserve 8 MiB each. */
#define TB_HTTP_THREAD_STACK (512u * 1024u)

/* Raise the soft open-files limit so max_connections sockets (plus the
 * process's own files) fit, within the hard limit. */
static void tb_http_fit_nofile(unsigned max_connections) {
        struct rlimit rl;
        rlim_t want = (rlim_t)max_connections + 1024;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
                return;
        rlim_t got = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
        rl.rlim_cur = got;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || got < want)
                tb_warn("http", "open-files limit %llu is below api.max_connections + 1024 "
                        "(%llu): raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
                        "api.max_connections", (unsigned long long)got,
                        (unsigned long long)want);
}

tb_err_t tb_http_start(const char *listen, const tb_http_route_t *routes, void *app,
                       tb_http_auth_t auth, tb_http_release_t release,
                       const tb_http_limits_t *limits, const tb_http_tls_t *tls,
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
        srv->lim = *limits;
        if (!srv->lim.max_requests_per_conn)
                srv->lim.max_requests_per_conn = 1;
        if (!srv->lim.workers)
                srv->lim.workers = 1;
        pthread_mutex_init(&srv->conn_lock, NULL);
        tb_cond_init_mono(&srv->reaper_cond);
        pthread_mutex_init(&srv->slot_lock, NULL);
        tb_cond_init_mono(&srv->slot_freed);
        tb_metrics_describe("taskbus_http_requests_total", "counter",
                            "HTTP requests by method, route and status code");
        tb_metrics_describe("taskbus_http_request_duration_seconds", "histogram",
                            "HTTP request latency by route");
        tb_metrics_describe("taskbus_http_slow_clients_total", "counter",
                            "Connections closed because the client did not send its request's "
                            "headers (api.header_timeout) or body (api.body_timeout) in time");
        tb_metrics_describe("taskbus_http_workers_busy", "gauge",
                            "Request slots (api.threads) running a handler now");
        tb_metrics_describe("taskbus_http_queue_timeouts_total", "counter",
                            "Requests answered 503 because no request slot (api.threads) "
                            "became free within api.queue_timeout");
        /* The idle timeout backs the reaper up for a connection it does not
         * track (no memory at accept). */
        /* Twice the longer deadline: the reaper, not this, ends slow clients. */
        unsigned idle_s = (unsigned)((srv->lim.body_timeout_ms > srv->lim.header_timeout_ms
                                              ? srv->lim.body_timeout_ms
                                              : srv->lim.header_timeout_ms) * 2 / 1000 + 2);
        tb_http_fit_nofile(srv->lim.max_connections);
        int rc = pthread_create(&srv->reaper, NULL, tb_http_reaper_main, srv);
        if (rc) {
                pthread_cond_destroy(&srv->reaper_cond);
                pthread_mutex_destroy(&srv->conn_lock);
                pthread_cond_destroy(&srv->slot_freed);
                pthread_mutex_destroy(&srv->slot_lock);
                free(srv);
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "cannot start the HTTP reaper thread: %s", strerror(rc));
        }
        srv->reaper_started = true;
        /* HTTPS: GnuTLS parses the PEM text inside MHD_start_daemon() and
         * keeps its own copy (see tb_http_start() in server.h). */
        struct MHD_OptionItem tls_opts[] = {
                {MHD_OPTION_HTTPS_MEM_CERT, 0, tls ? tls->cert_pem : NULL},
                {MHD_OPTION_HTTPS_MEM_KEY, 0, tls ? tls->key_pem : NULL},
                {MHD_OPTION_END, 0, NULL},
        };
        srv->mhd = MHD_start_daemon(
                MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                        MHD_USE_ERROR_LOG | (tls ? MHD_USE_TLS : 0),
                (uint16_t)port, NULL, NULL, tb_http_access, srv,
                /* first, or the options before it log to stderr */
                MHD_OPTION_EXTERNAL_LOGGER, tb_http_mhd_log, srv, MHD_OPTION_SOCK_ADDR, &sa,
                MHD_OPTION_NOTIFY_COMPLETED, tb_http_completed, srv,
                MHD_OPTION_NOTIFY_CONNECTION, tb_http_notify, srv,
                MHD_OPTION_CONNECTION_LIMIT, srv->lim.max_connections,
                MHD_OPTION_PER_IP_CONNECTION_LIMIT, srv->lim.max_per_client,
                MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
                MHD_OPTION_THREAD_STACK_SIZE, (size_t)TB_HTTP_THREAD_STACK,
                /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, and a
                 * second process on the same port would then share its connections
                 * silently; MHD's default (SO_REUSEADDR) still allows a restart
                 * while old connections are in TIME_WAIT. */
                MHD_OPTION_ARRAY, tls ? tls_opts : &tls_opts[2], MHD_OPTION_END);
        if (!srv->mhd) {
                int e = errno;
                tb_http_stop(srv);
                if (tls)
                        return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                         "cannot listen on %s with TLS: %s (api.listen), or "
                                         "GnuTLS refused api.tls_cert / api.tls_key (its "
                                         "reason is logged just above)",
                                         listen, strerror(e));
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "cannot listen on %s: %s (api.listen)", listen, strerror(e));
        }
        atomic_store(&srv->mhd_running, true);
        *out = srv;
        return TB_OK;
}

void tb_http_stop(tb_http_server_t *srv) {
        if (!srv)
                return;
        if (srv->mhd)
                MHD_stop_daemon(srv->mhd);
        pthread_mutex_lock(&srv->conn_lock);
        srv->stopping = true;
        pthread_cond_broadcast(&srv->reaper_cond);
        pthread_mutex_unlock(&srv->conn_lock);
        if (srv->reaper_started)
                pthread_join(srv->reaper, NULL);
        pthread_cond_destroy(&srv->reaper_cond);
        pthread_mutex_destroy(&srv->conn_lock);
        pthread_cond_destroy(&srv->slot_freed);
        pthread_mutex_destroy(&srv->slot_lock);
        free(srv);
}
