/**
 * @file cli/rest.h
 * @brief The CLI's one REST client (libcurl): where the API is and the
 *        bearer token, URL escaping, one request with its JSON answer, the
 *        server's refusals in the CLI's words, and the page loop over the
 *        API's keyset cursors. Every command group that talks to the API
 *        goes through it (tasks, runs, logs, schedule next --task).
 *
 * The API and token come from --api/--token, else TASKBUS_API and
 * TASKBUS_TOKEN, else ~/.config/taskbus/config (libconfig syntax:
 * `api = "http://127.0.0.1:8080"; token = "tbk_...";`), else the default URL.
 * An https:// API is verified against the system's CA store, or against the
 * CA certificate file of --cacert, else TASKBUS_CACERT, else `cacert = "..."`
 * in the same file (for a private CA, e.g. the one signing api.tls_cert).
 * Errors follow the project's convention: a tb_err_t and a caller-owned
 * errstr, which the command prints with tb_cli_fail() ("taskbus: 404
 * not_found: no task 'x' in your security groups").
 * @locality the CLI's main thread (libcurl's easy interface, blocking).
 */
#ifndef TB_CLI_REST_H
#define TB_CLI_REST_H

#include "cli.h"

#include <jansson.h>
#include <stdio.h>

#define TB_CLI_REST_DEFAULT_API "http://127.0.0.1:8080"

/** Where the API is and who calls it. */
typedef struct tb_cli_rest {
        char url[512];   /**< base URL, without a trailing '/' */
        char token[256]; /**< bearer token, never empty once opened */
        char cacert[512]; /**< CA file verifying an https:// API; "" = system store */
} tb_cli_rest_t;

/**
 * @brief Resolve the API and the token, and initialise libcurl.
 * @param api_flag    --api, or NULL
 * @param token_flag  --token, or NULL
 * @param cacert_flag --cacert, or NULL
 * @returns TB_OK (call tb_cli_rest_close() when done),
 *          TB_ERR_UNAUTHENTICATED when no token is set anywhere (errstr says
 *          where to set one), or TB_ERR_INVALID when the CA file cannot be
 *          read (errstr names it and where it was set).
 */
tb_err_t tb_cli_rest_open(tb_cli_rest_t *rest, const char *api_flag, const char *token_flag,
                          const char *cacert_flag, char *errstr, size_t errstr_size);

/** @brief Release what tb_cli_rest_open() set up. */
void tb_cli_rest_close(tb_cli_rest_t *rest);

/**
 * @brief Append \p s to \p buf percent-encoded (RFC 3986: only unreserved
 *        characters stay as they are), for a path segment or a query value.
 * @returns TB_OK or TB_ERR_NOMEM.
 */
tb_err_t tb_cli_rest_escape(tb_buf_t *buf, const char *s);

/**
 * @brief Append "<collection>/<id>" (\p id escaped) and, with \p sub,
 *        "/<sub>" to \p buf: the path of one resource, e.g.
 *        tb_cli_rest_path(&b, "/v1/tasks", id, "runs").
 * @returns TB_OK or TB_ERR_NOMEM.
 */
tb_err_t tb_cli_rest_path(tb_buf_t *buf, const char *collection, const char *id,
                          const char *sub);

/**
 * @brief Append the query parameter \p name = \p value (escaped) to the path
 *        in \p buf, after '?' or '&' as the path needs. NULL \p value: nothing.
 * @returns TB_OK or TB_ERR_NOMEM.
 */
tb_err_t tb_cli_rest_query(tb_buf_t *buf, const char *name, const char *value);

/** One request. */
typedef struct tb_cli_rest_req {
        const char *method;   /**< "GET", "POST", "PUT", "DELETE" */
        const char *path;     /**< "/v1/...", escaped, with its query */
        const char *body;     /**< JSON to send, or NULL */
        const char *content_type; /**< the body's media type; NULL: application/json */
        const char *if_match; /**< a task version for If-Match, or NULL */
        bool create_only;     /**< send If-None-Match: * (create, never replace) */
        const char *accept;   /**< media type asked for; NULL: application/json */
        long ok;              /**< the status that answers success */
        long ok_also;         /**< another one (e.g. 202), or 0 */
        /** Set: a successful body is written there as it arrives, with no
         *  overall timeout (a live tail lasts as long as its run). */
        FILE *stream;
} tb_cli_rest_req_t;

/** What the API answered. Zero-initialise; free with tb_cli_rest_resp_free(). */
typedef struct tb_cli_rest_resp {
        long status;      /**< the HTTP status; 0 when there was no answer */
        json_t *json;     /**< a JSON body (owned), else NULL */
        tb_buf_t body;    /**< the raw body, unless it was streamed */
        tb_buf_t headers; /**< the raw header lines */
} tb_cli_rest_resp_t;

/**
 * @brief Send \p req and read the answer into \p resp (which the caller
 *        frees in every case).
 * @returns TB_OK when the API answered req->ok or req->ok_also; else the
 *          error matching the status (TB_ERR_NOT_FOUND for 404...; TB_ERR_IO
 *          when the API could not be reached or the stream broke off), with
 *          errstr in the CLI's words: "404 not_found: <message>".
 */
tb_err_t tb_cli_rest_call(const tb_cli_rest_t *rest, const tb_cli_rest_req_t *req,
                          tb_cli_rest_resp_t *resp, char *errstr, size_t errstr_size);

/**
 * @brief tb_cli_rest_call() for a command: its error is printed
 *        (tb_cli_fail()).
 * @returns the exit status: 0 when the API answered req->ok or req->ok_also,
 *          else 1.
 */
int tb_cli_rest_do(const tb_cli_rest_t *rest, const tb_cli_rest_req_t *req,
                   tb_cli_rest_resp_t *resp);

/** @brief Free what tb_cli_rest_call() put in \p resp (and zero it). */
void tb_cli_rest_resp_free(tb_cli_rest_resp_t *resp);

/**
 * @brief The value of response header \p name (case-insensitive) into \p out.
 * @returns false if the answer has no such header.
 */
bool tb_cli_rest_header(const tb_cli_rest_resp_t *resp, const char *name, char *out,
                        size_t out_size);

/** How a list command prints the items of its pages. */
typedef struct tb_cli_rest_list {
        const char *key;                 /**< the array of a page: "tasks", "runs" */
        void (*header)(void);            /**< the table's first line */
        void (*row)(const json_t *item); /**< one line of the table */
} tb_cli_rest_list_t;

/**
 * @brief GET a keyset-paged list: \p path (with its query, without cursor)
 *        from \p cursor (NULL: the first page), following next_cursor to the
 *        end when \p all. Prints a table (or "no <key>"), or with \p json one
 *        object {"<key>": [every item], "next_cursor": ...}; a cursor left
 *        when not \p all is offered on stderr ("more <key>: --cursor C").
 * @returns the exit status: 0, or 1 when a page failed (the error is
 *          printed; the items of earlier pages are printed already).
 */
int tb_cli_rest_list(const tb_cli_rest_t *rest, const char *path, const char *cursor, bool all,
                     bool json, const tb_cli_rest_list_t *list);

#endif
