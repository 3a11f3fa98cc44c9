/**
 * @file test_http_server.c
 * @brief The HTTP layer's limits, against a real server on a loopback port
 *        and raw sockets as clients: methods no route has are 405 with Allow
 *        and never a metric label; a body announced over max_body is refused
 *        before it is sent; slow clients are cut off at the header and body
 *        deadlines; connections per client are bounded; keep-alive ends after
 *        max_requests_per_conn; label values are escaped; handlers run in
 *        at most `workers` slots, and a request that finds none free in
 *        queue_timeout_ms is 503 while public routes still answer.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/metrics.h"
#include "http/server.h"

static tb_http_server_t *srv;
static int port;

static void tbt_hello(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        (void)app;
        tb_http_json(resp, 200, json_pack("{s:s, s:i}", "hello", req->method,
                                          "bytes", (int)req->body.len));
}

/* A handler that holds its request slot until the test lets it go. */
static atomic_int tbt_blocked_in, tbt_release;

static void tbt_block(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        (void)app;
        (void)req;
        atomic_fetch_add(&tbt_blocked_in, 1);
        for (int i = 0; i < 1000 && !atomic_load(&tbt_release); i++)
                usleep(10000);
        tb_http_json(resp, 200, json_pack("{s:b}", "released", atomic_load(&tbt_release)));
}

static const tb_http_route_t routes[] = {
        {"GET", "/v1/hello", tbt_hello, true},
        {"POST", "/v1/hello", tbt_hello, true},
        {"GET", "/v1/block", tbt_block, false},
        {NULL, NULL, NULL, false},
};

static void setup(void) {
        tb_http_limits_t lim = {.max_body = 1024,
                                .max_connections = 64,
                                .max_per_client = 4,
                                .header_timeout_ms = 1500,
                                .body_timeout_ms = 1500,
                                .max_requests_per_conn = 2,
                                .workers = 1,
                                .queue_timeout_ms = 300};
        char listen[64], err[256];
        for (int i = 0; i < 20; i++) {
                port = 20000 + (int)((getpid() * 7 + i * 131) % 20000);
                snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
                if (tb_http_start(listen, routes, NULL, NULL, NULL, &lim, NULL, &srv, err,
                                  sizeof(err)) == TB_OK)
                        return;
        }
        cr_assert_fail("cannot start the server: %s", err);
}

static void teardown(void) {
        tb_http_stop(srv);
        srv = NULL;
}

TestSuite(http_server, .init = setup, .fini = teardown, .timeout = 60);

static int tbt_connect(void) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fd >= 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
        return fd;
}

static void tbt_send(int fd, const char *s) {
        size_t n = strlen(s);
        cr_assert_eq(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Read until \p needle is seen, the peer closes, or \p ms pass; returns
 * what was read (caller frees) and sets *closed when the peer closed. */
static char *tbt_read(int fd, const char *needle, int ms, bool *closed) {
        size_t cap = 65536, len = 0;
        char *buf = calloc(1, cap);
        *closed = false;
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        while (len + 1 < cap && (!needle || !strstr(buf, needle))) {
                int left = (int)((until - tb_mono_us()) / 1000);
                if (left <= 0)
                        break;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (poll(&p, 1, left) <= 0)
                        continue;
                ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
                if (n <= 0) {
                        *closed = true;
                        break;
                }
                len += (size_t)n;
                buf[len] = '\0';
        }
        return buf;
}

/* A port in use is an error, never shared: a second taskbusd started with
 * the same api.listen must not take half of the first one's connections. */
Test(http_server, a_port_in_use_is_refused_not_shared) {
        tb_http_limits_t lim = {.max_body = 1024, .max_connections = 8, .max_per_client = 4,
                                .header_timeout_ms = 1500, .body_timeout_ms = 1500,
                                .max_requests_per_conn = 2, .workers = 1,
                                .queue_timeout_ms = 300};
        char listen[64], err[256] = "";
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
        tb_http_server_t *second = NULL;
        tb_err_t e = tb_http_start(listen, routes, NULL, NULL, NULL, &lim, NULL, &second, err,
                                   sizeof(err));
        if (e == TB_OK)
                tb_http_stop(second);
        cr_assert_eq(e, TB_ERR_IO, "a second server on %s started", listen);
        cr_assert(strstr(err, "Address already in use") && strstr(err, "api.listen"), "%s", err);
}

Test(http_server, unknown_method_is_405_with_allow_and_no_label) {
        int fd = tbt_connect();
        tbt_send(fd, "M1 /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n");
        bool closed;
        char *r = tbt_read(fd, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 405"), "%s", r);
        cr_assert(strstr(r, "Allow: GET, POST"), "%s", r);
        free(r);
        close(fd);

        fd = tbt_connect();
        tbt_send(fd, "PUT /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        r = tbt_read(fd, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 405"), "%s", r);
        cr_assert(strstr(r, "PUT is not allowed on /v1/hello; allowed: GET, POST"), "%s", r);
        free(r);
        close(fd);

        tb_buf_t m = {0};
        tb_metrics_render(&m);
        cr_assert(!strstr(m.data, "M1"), "a method became a label:\n%s", m.data);
        cr_assert(strstr(m.data, "method=\"other\""), "%s", m.data);
        tb_buf_free(&m);
}

Test(http_server, announced_oversized_body_is_refused_before_it_is_sent) {
        int fd = tbt_connect();
        tbt_send(fd, "POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 67108864\r\n\r\n");
        bool closed;
        int64_t t0 = tb_mono_us();
        char *r = tbt_read(fd, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 413"), "%s", r);
        cr_assert(strstr(r, "api.max_body"), "%s", r);
        /* a server waiting for the body would have been cut off (no 413) */
        cr_assert((tb_mono_us() - t0) < 10000000, "the server waited for the body");
        free(r);
        close(fd);

        /* Within the limit it is read and served. */
        fd = tbt_connect();
        tbt_send(fd, "POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
        r = tbt_read(fd, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 200") && strstr(r, "\"bytes\":2"), "%s", r);
        free(r);
        close(fd);
}

Test(http_server, slow_headers_and_slow_bodies_are_cut_off) {
        /* One header byte every 300 ms: never idle, but never done. */
        int fd = tbt_connect();
        const char *req = "GET /v1/hello HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        bool closed = false;
        int64_t t0 = tb_mono_us();
        for (size_t i = 0; req[i] && !closed; i++) {
                if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1)
                        closed = true;
                char *r = tbt_read(fd, NULL, 300, &closed);
                free(r);
        }
        int64_t took = (tb_mono_us() - t0) / 1000;
        cr_assert(closed, "a client trickling its headers was not cut off");
        /* trickling it all would take 18 s */
        cr_assert(took < 14000, "cut off after %lld ms (header_timeout 1500 ms)", (long long)took);
        close(fd);
        char *r;

        fd = tbt_connect();
        tbt_send(fd, "POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"");
        r = tbt_read(fd, NULL, 8000, &closed);
        cr_assert(closed, "a client not finishing its body was not cut off: %s", r);
        free(r);
        close(fd);
        cr_assert(tb_metrics_get("taskbus_http_slow_clients_total", "phase=\"headers\"") >= 1);
        cr_assert(tb_metrics_get("taskbus_http_slow_clients_total", "phase=\"body\"") >= 1, "headers %g body %g", tb_metrics_get("taskbus_http_slow_clients_total", "phase=\"headers\""), tb_metrics_get("taskbus_http_slow_clients_total", "phase=\"body\""));
}

Test(http_server, connections_per_client_are_bounded) {
        int fds[6];
        for (int i = 0; i < 6; i++)
                fds[i] = tbt_connect();
        /* The first four are served; the fifth and sixth are closed. */
        int served = 0, refused = 0;
        for (int i = 0; i < 6; i++) {
                send(fds[i], "GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n", 35, MSG_NOSIGNAL);
                bool closed;
                char *r = tbt_read(fds[i], "}", 3000, &closed);
                if (strstr(r, "HTTP/1.1 200"))
                        served++;
                else if (closed)
                        refused++;
                free(r);
        }
        for (int i = 0; i < 6; i++)
                close(fds[i]);
        cr_assert_eq(served, 4, "served %d of 6 connections (limit 4)", served);
        cr_assert_eq(refused, 2);
}

Test(http_server, keep_alive_ends_after_the_request_cap) {
        int fd = tbt_connect();
        bool closed;
        tbt_send(fd, "GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n");
        char *r = tbt_read(fd, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 200") && !strstr(r, "Connection: close"), "%s", r);
        free(r);
        tbt_send(fd, "GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n");
        r = tbt_read(fd, NULL, 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 200") && strstr(r, "Connection: close"), "%s", r);
        cr_assert(closed, "the connection stayed open past the cap");
        free(r);
        close(fd);
}

Test(http_server, label_values_are_escaped) {
        char out[64];
        tb_metrics_label_value("a\"b\\c\nd\x01", out, sizeof(out));
        cr_assert_str_eq(out, "a\\\"b\\\\c\\nd?");
        tb_metrics_label_value("0123456789", out, 5);
        cr_assert_str_eq(out, "0123");
}

Test(http_server, busy_request_slots_give_503_and_public_routes_still_answer) {
        bool closed;
        int a = tbt_connect();
        tbt_send(a, "GET /v1/block HTTP/1.1\r\nHost: x\r\n\r\n");
        for (int i = 0; i < 500 && atomic_load(&tbt_blocked_in) == 0; i++)
                usleep(10000);
        cr_assert_eq(atomic_load(&tbt_blocked_in), 1, "the first request never reached its handler");

        /* The only slot is held: the next request waits queue_timeout, then 503. */
        int b = tbt_connect();
        tbt_send(b, "GET /v1/block HTTP/1.1\r\nHost: x\r\n\r\n");
        char *r = tbt_read(b, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 503"), "%s", r);
        cr_assert(strstr(r, "Retry-After: 1"), "%s", r);
        cr_assert(strstr(r, "api.threads"), "%s", r);
        free(r);
        cr_assert_eq(atomic_load(&tbt_blocked_in), 1, "the refused request ran its handler");
        cr_assert_geq(tb_metrics_get("taskbus_http_queue_timeouts_total", NULL), 1);

        /* A public route takes no slot. */
        int c = tbt_connect();
        tbt_send(c, "GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n");
        r = tbt_read(c, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 200"), "%s", r);
        free(r);

        atomic_store(&tbt_release, 1);
        r = tbt_read(a, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 200") && strstr(r, "\"released\":true"), "%s", r);
        free(r);
        /* The slot is free again. */
        tbt_send(b, "GET /v1/block HTTP/1.1\r\nHost: x\r\n\r\n");
        r = tbt_read(b, "}", 5000, &closed);
        cr_assert(strstr(r, "HTTP/1.1 200"), "%s", r);
        free(r);
        close(a);
        close(b);
        close(c);
}
