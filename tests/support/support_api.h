/**
 * @file support_api.h
 * @brief Helpers for integration tests of a running taskbusd: requests to
 *        its REST API (status, headers, body, JSON), waiting until a SQL
 *        value is reached, and stopping the daemon with its log checked.
 */
#ifndef TB_TEST_SUPPORT_API_H
#define TB_TEST_SUPPORT_API_H

#include "support_stack.h"

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

/** One answer of the API. Free with tbt_http_free(). */
typedef struct tbt_http_res {
        long status;      /**< 0: no answer */
        tb_buf_t body;    /**< NUL-terminated (not counted) */
        tb_buf_t hdrs;    /**< the raw header lines */
        json_t *j;        /**< the body as JSON, or NULL */
} tbt_http_res_t;

/** \p method \p path on 127.0.0.1:\p port with "Authorization: \p authz"
 *  (NULL: none) and a JSON \p body (NULL: none; POST sends an empty one). */
tbt_http_res_t tbt_http(int port, const char *method, const char *path, const char *authz,
                        const char *body);
/** tbt_http() with the header lines \p headers ("Name: value", NULL-terminated;
 *  NULL: none) instead of an Authorization value; a Content-Type among them
 *  replaces the default application/json. */
tbt_http_res_t tbt_http_with(int port, const char *method, const char *path,
                             const char *const *headers, const char *body);
void tbt_http_free(tbt_http_res_t *r);
/** Header \p name of \p r into \p buf; "(missing)" when absent. */
const char *tbt_http_header(const tbt_http_res_t *r, const char *name, char *buf, size_t size);

/** Wait up to \p ms until `sql` (one value) is \p want; fails the test otherwise. */
void tbt_wait_sql(tbt_stack_t *st, const char *sql, const char *want, int ms);

/** SIGTERM taskbusd \p pid and wait; print its log if it did not exit 0, if a
 *  sanitizer spoke in it, or with TBT_SHOW_LOGS. @returns whether it exited
 *  0; *\p sanitizer whether a sanitizer reported. */
bool tbt_daemon_end(tbt_stack_t *st, pid_t pid, bool *sanitizer);

/** A signed-in console session (POST /v1/session): its cookie and CSRF value. */
typedef struct tbt_session {
        char cookie[200];     /**< the request header "Cookie: taskbus_session=tbs_..." */
        char id[80];          /**< the session id, "tbs_..." */
        char csrf[80];        /**< the X-Taskbus-CSRF value of its writes */
        char set_cookie[300]; /**< the Set-Cookie header of the sign-in */
} tbt_session_t;

/** Sign in on 127.0.0.1:\p port with the token of \p authz ("Bearer tbk_..."),
 *  sending the header line \p extra_header (NULL: none). Asserts a 201 with
 *  a session cookie and a CSRF value. */
tbt_session_t tbt_session_sign_in(int port, const char *authz, const char *extra_header);
/** A request with the session's cookie and, when \p with_csrf, its CSRF
 *  header (\p csrf_value, when not NULL, instead of the session's). */
tbt_http_res_t tbt_session_http(int port, const tbt_session_t *s, const char *method,
                                const char *path, const char *body, bool with_csrf,
                                const char *csrf_value);

/** A taskbusd running every role (api, commands, projector, scheduler,
 *  executor, archiver) on a private stack with its API on \p port, as the
 *  web console's browser tests run it. */
typedef struct tbt_console {
        tbt_stack_t st; /**< st.config_path is the daemon's config (and `taskbus --config`'s) */
        int port;
        pid_t pid;
} tbt_console_t;

/** Create the stack and start the daemon; waits for its /healthz (90 s). Asserts. */
void tbt_console_start(tbt_console_t *c);
/** tbt_console_start() with only \p roles (e.g. "api"), and \p api_extra
 *  (NULL: none) added inside `api = {...}`, e.g. "admin_group = \"ops\";". */
void tbt_console_start_with(tbt_console_t *c, const char *roles, const char *api_extra);
/** Stop the daemon (its log checked for sanitizer reports) and destroy the
 *  stack. Asserts a clean exit. */
void tbt_console_stop(tbt_console_t *c);
/** `taskbus admin user create NAME --groups GROUPS`: the token it printed
 *  ("tbk_..."), as a user of the console would get it. Asserts. */
void tbt_console_user(const tbt_console_t *c, const char *name, const char *groups,
                      char token[80]);
/** Run the browser script \p script (under tests/console/) with python3:
 *  TB_URL is set to the daemon's API and \p env ("NAME='value' ...") is
 *  prepended. Prints its output; fails the test unless it exits 0 and printed
 *  "PASS <\p pass>". A missing chromium or chromedriver fails (never skips). */
void tbt_console_browser(const tbt_console_t *c, const char *script, const char *env,
                         const char *pass);

#endif
