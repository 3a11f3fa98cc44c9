/**
 * @file api/util.h
 * @brief Request helpers of the REST resource files (tasks.c, runs.c): id
 *        validation, the error replies 400/404/503 in the project's JSON
 *        error shape ({"error": {"code", "message", "field"}}, see
 *        tb_http_error()), and query parameter parsing. A parser that finds
 *        a bad value answers the 400 itself, naming the parameter, and
 *        returns false: the handler then only returns. Internal to the api
 *        role.
 * @locality an HTTP connection thread (libmicrohttpd's thread per connection).
 */
#ifndef TB_API_UTIL_H
#define TB_API_UTIL_H

#include "api/api.h"
#include "api/cursor.h"

/**
 * @brief Is \p id an id the API accepts? Ids are UUIDs or hex hashes from
 *        taskbus, or ids chosen by other Kafka producers: 1 to 128 of
 *        [A-Za-z0-9-_.:], a conservative charset that keeps garbage out of
 *        messages, logs and SQL: tb_task_id_check(), the rule of every
 *        interface.
 */
bool tb_api_id_ok(const char *id);

/**
 * @brief Answer 404 "no <what> '<id>' in your security groups": the same
 *        answer for a missing resource and one of another group. An
 *        invalid id is not echoed.
 * @param what  "task" or "run"
 */
void tb_api_not_found(tb_http_resp_t *resp, const char *what, const char *id);

/**
 * @brief A pool connection for a request, or NULL with a 503 answered
 *        (Retry-After: 1) when none frees up in time.
 * @returns the connection: the caller gives it back (tb_store_release()).
 */
PGconn *tb_api_conn(tb_api_t *api, tb_http_resp_t *resp);

/** @brief Log a database error and answer 503 (Retry-After: 5) without its details. */
void tb_api_db_error(tb_http_resp_t *resp, const char *err);

/** @brief The caller's groups as text for messages: "a, b", or "(none)". */
void tb_api_groups_text(const tb_principal_t *p, char *buf, size_t size);

/**
 * @brief The group a list reads (?security_group): *\p group the one named,
 *        if the caller is a member of it, else NULL (every group of the
 *        caller). A group the caller is not in answers 403 (field
 *        security_group). @returns false when answered.
 */
bool tb_api_group_scope(tb_http_req_t *req, tb_http_resp_t *resp, const char **group);

/** The caller's groups, or only \p group (not NULL: one of them), as a JSON
 *  array text for the runs family's reads (runs.c; the caller frees it). */
char *tb_api_runs_groups(const tb_principal_t *p, const char *group);

/** Every run status, NULL-terminated (runs.c). */
extern const char *const tb_api_runs_statuses[];

/**
 * Check the value of known query parameter \p key.
 * @returns false with \p bad filled: the message of the 400 (field \p key).
 */
typedef bool (*tb_api_query_value_fn)(void *ud, const char *key, const char *value, char *bad,
                                      size_t bad_size);

/**
 * @brief Refuse a query parameter not in \p known (NULL-terminated), and with
 *        \p value (or NULL) check each known one's value, in query order;
 *        the first problem is answered (400).
 * @param known_text  \p known as the message lists them: "limit, cursor"
 * @returns false when answered.
 */
bool tb_api_query_check(tb_http_req_t *req, tb_http_resp_t *resp, const char *const *known,
                        const char *known_text, tb_api_query_value_fn value, void *ud);

/**
 * @brief Integer query parameter \p name in [lo, hi] into *out (left as is
 *        when absent). @returns false when answered (400).
 */
bool tb_api_query_int(tb_http_req_t *req, tb_http_resp_t *resp, const char *name, int64_t lo,
                      int64_t hi, int64_t *out);

/**
 * @brief RFC 3339 query parameter \p name as epoch ms text into \p out ("" when
 *        absent), ready to bind as a bigint. @returns false when answered (400).
 */
bool tb_api_query_time(tb_http_req_t *req, tb_http_resp_t *resp, const char *name,
                       char out[32]);

/**
 * @brief ?cursor, a cursor of \p list: *given false when absent or empty,
 *        else decoded into *cur. @returns false when answered (400).
 */
bool tb_api_query_cursor(tb_http_req_t *req, tb_http_resp_t *resp, tb_api_cursor_list_t list,
                         tb_api_cursor_t *cur, bool *given);

/**
 * @brief The request body as a JSON object (new ref, caller owns), or NULL
 *        with a 400 answered saying what is wrong: empty, too large or too
 *        deep (tb_task_json_check()), malformed (line and column), or not an
 *        object.
 * @param what  what the body is, for the messages: "task", "schedule preview"
 */
json_t *tb_api_body_object(tb_http_req_t *req, tb_http_resp_t *resp, const char *what);

/**
 * @brief Refuse a member of the request body \p body not in \p known
 *        (NULL-terminated): 400 naming it, "<name>: unknown field; a <what>
 *        takes <known_text>". @returns false when answered.
 */
bool tb_api_body_known(const json_t *body, const char *const *known, const char *what,
                       const char *known_text, tb_http_resp_t *resp);

/**
 * @brief Parse If-Match ("N", W/"N", N or *) into *\p version (-1 when absent
 *        or *). \p what names the resource in the 400: "task", "calendar".
 * @returns false with a 400 answered.
 */
bool tb_api_if_match(tb_http_req_t *req, tb_http_resp_t *resp, const char *what,
                     int64_t *version);

/** Row \p i of a query result as the API's JSON object (a new reference). */
typedef json_t *(*tb_api_row_fn)(PGresult *r, int i);

/**
 * @brief The body of one keyset page: {"<items>": [the first \p limit rows of
 *        \p r, as \p row makes them], "next_cursor": ...}. \p r holds up to
 *        limit + 1 rows: one more says there is a next page, continuing after
 *        the last row shown, whose keyset is its columns \p key_col and
 *        \p id_col (-1: the list has no id in its keyset).
 * @returns a new reference, or NULL with a 500 answered (a keyset no cursor
 *          can carry; logged).
 */
json_t *tb_api_page(tb_http_resp_t *resp, PGresult *r, int64_t limit, const char *items,
                    tb_api_row_fn row, tb_api_cursor_list_t list, int key_col, int id_col);

#endif
