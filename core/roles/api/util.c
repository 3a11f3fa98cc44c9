/**
 * @file api/util.c
 * @brief Request helpers shared by the REST resource files (tasks.c, runs.c):
 *        id validation, the 400/404/503 error replies in the project's JSON
 *        error shape, and query parameter parsing (see api/util.h).
 */
#include "api/util.h"
#include "task/task.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_API_UTIL_SUB "api"
/** How long a request waits for a pool connection before answering 503. */
#define TB_API_POOL_WAIT_MS 5000

bool tb_api_id_ok(const char *id) {
        return tb_task_id_check("id", id, strlen(id), NULL, 0) == TB_OK;
}

void tb_api_not_found(tb_http_resp_t *resp, const char *what, const char *id) {
        tb_http_error(resp, 404, "not_found", NULL, "no %s '%.128s' in your security groups", what,
                      tb_api_id_ok(id) ? id : "(invalid id)");
}

PGconn *tb_api_conn(tb_api_t *api, tb_http_resp_t *resp) {
        PGconn *c = tb_store_acquire_timeout(api->store, TB_API_POOL_WAIT_MS);
        if (!c) {
                tb_http_error(resp, 503, "unavailable", NULL,
                              "the database is busy (no connection within %d ms); retry later",
                              TB_API_POOL_WAIT_MS);
                tb_http_add_header(resp, "Retry-After", "1");
        }
        return c;
}

void tb_api_db_error(tb_http_resp_t *resp, const char *err) {
        tb_warn(TB_API_UTIL_SUB, "%s", err);
        tb_http_error(resp, 503, "unavailable", NULL, "the database is unavailable; retry later");
        tb_http_add_header(resp, "Retry-After", "5");
}

void tb_api_groups_text(const tb_principal_t *p, char *buf, size_t size) {
        size_t off = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < p->group_cnt && off < size; i++)
                off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "",
                                        p->groups[i]);
        if (p->group_cnt == 0)
                tb_snprintf(buf, size, "(none)");
}

bool tb_api_group_scope(tb_http_req_t *req, tb_http_resp_t *resp, const char **group) {
        const tb_principal_t *p = tb_api_principal(req);
        const char *g = tb_http_query(req, "security_group");
        *group = NULL;
        if (!g || !*g)
                return true;
        if (!tb_principal_in_group(p, g)) {
                char gl[512];
                tb_api_groups_text(p, gl, sizeof(gl));
                tb_http_error(resp, 403, "forbidden", "security_group",
                              "security_group: you are not a member of '%.128s'; your groups: %s",
                              g, gl);
                return false;
        }
        *group = g;
        return true;
}

/* ---- query parameters ----------------------------------------------------------- */

/** The state of tb_api_query_check()'s walk over the query. */
typedef struct tb_api_query_args {
        const char *const *known;
        const char *known_text;
        tb_api_query_value_fn value;
        void *ud;
        char bad[300];
        char field[64];
} tb_api_query_args_t;

static enum MHD_Result tb_api_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value) {
        tb_api_query_args_t *a = cls;
        (void)kind;
        if (a->bad[0])
                return MHD_YES;
        bool known = false;
        for (size_t i = 0; a->known[i] && !known; i++)
                known = !strcmp(a->known[i], key);
        if (!known)
                tb_snprintf(a->bad, sizeof(a->bad), "unknown query parameter '%.60s'; valid: %s",
                            key, a->known_text);
        else if (a->value && !a->value(a->ud, key, value, a->bad, sizeof(a->bad)) && !a->bad[0])
                tb_snprintf(a->bad, sizeof(a->bad), "%.60s: invalid value", key);
        if (a->bad[0])
                tb_snprintf(a->field, sizeof(a->field), "%.60s", key);
        return MHD_YES;
}

bool tb_api_query_check(tb_http_req_t *req, tb_http_resp_t *resp, const char *const *known,
                        const char *known_text, tb_api_query_value_fn value, void *ud) {
        tb_api_query_args_t a = {.known = known, .known_text = known_text, .value = value,
                                 .ud = ud};
        MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, tb_api_query_arg, &a);
        if (a.bad[0]) {
                tb_http_error(resp, 400, "invalid_argument", a.field, "%s", a.bad);
                return false;
        }
        return true;
}

bool tb_api_query_int(tb_http_req_t *req, tb_http_resp_t *resp, const char *name, int64_t lo,
                      int64_t hi, int64_t *out) {
        const char *s = tb_http_query(req, name);
        if (!s)
                return true;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (!*s || *end || v < lo || v > hi) {
                tb_http_error(resp, 400, "invalid_argument", name,
                              "%s: expected an integer from %" PRId64 " to %" PRId64
                              ", got '%.32s'",
                              name, lo, hi, s);
                return false;
        }
        *out = v;
        return true;
}

bool tb_api_query_time(tb_http_req_t *req, tb_http_resp_t *resp, const char *name,
                       char out[32]) {
        const char *s = tb_http_query(req, name);
        char err[256];
        int64_t ms;
        out[0] = '\0';
        if (!s)
                return true;
        if (tb_time_parse(s, &ms, err, sizeof(err))) {
                tb_http_error(resp, 400, "invalid_argument", name,
                              "%s: %s; expected an RFC 3339 time like 2026-01-02T03:04:05Z", name,
                              err);
                return false;
        }
        tb_snprintf(out, 32, "%" PRId64, ms);
        return true;
}

/* ---- cursors -------------------------------------------------------------------- */

bool tb_api_query_cursor(tb_http_req_t *req, tb_http_resp_t *resp, tb_api_cursor_list_t list,
                         tb_api_cursor_t *cur, bool *given) {
        const char *s = tb_http_query(req, "cursor");
        char err[256];
        *given = s && *s;
        if (!*given)
                return true;
        if (tb_api_cursor_decode(s, list, cur, err, sizeof(err)) == TB_OK)
                return true;
        tb_debug(TB_API_UTIL_SUB, "%s", err);
        tb_http_error(resp, 400, "invalid_argument", "cursor",
                      "cursor: not a cursor of this list from this API; pass next_cursor of the "
                      "previous page unchanged");
        return false;
}

/* The next_cursor of a page: JSON null on the last page, else the cursor of
 * the keyset (key, id) of its last item; NULL with a 500 answered. */
static json_t *tb_api_next_cursor(tb_http_resp_t *resp, tb_api_cursor_list_t list, bool more,
                                  const char *key, const char *id) {
        char token[TB_API_CURSOR_TOKEN_MAX], err[256];
        tb_api_cursor_t cur = {.list = list};
        if (!more)
                return json_null();
        bool fits = !tb_snprintf(cur.key, sizeof(cur.key), "%s", key) &&
                    !tb_snprintf(cur.id, sizeof(cur.id), "%s", id ? id : "");
        if (!fits)
                tb_snprintf(err, sizeof(err), "key or id too long for a cursor");
        else if (tb_api_cursor_encode(&cur, token, err, sizeof(err)) == TB_OK)
                return json_string(token);
        tb_warn(TB_API_UTIL_SUB, "next page of list '%c' after (%.40s, %.130s): %s", (char)list,
                key, id ? id : "", err);
        tb_http_error(resp, 500, "internal", NULL,
                      "cannot make the cursor of the next page (the server logged why)");
        return NULL;
}

json_t *tb_api_page(tb_http_resp_t *resp, PGresult *r, int64_t limit, const char *items,
                    tb_api_row_fn row, tb_api_cursor_list_t list, int key_col, int id_col) {
        int n = PQntuples(r);
        bool more = n > limit;
        if (more)
                n = (int)limit;
        const char *key = more ? PQgetvalue(r, n - 1, key_col) : NULL;
        const char *id = more && id_col >= 0 ? PQgetvalue(r, n - 1, id_col) : NULL;
        json_t *next = tb_api_next_cursor(resp, list, more, key, id);
        if (!next)
                return NULL;
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
                json_array_append_new(arr, row(r, i));
        return json_pack("{s:o, s:o}", items, arr, "next_cursor", next);
}

json_t *tb_api_body_object(tb_http_req_t *req, tb_http_resp_t *resp, const char *what) {
        if (req->body.len == 0) {
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "the request body is empty: send the %s as a JSON object", what);
                return NULL;
        }
        tb_task_err_t te;
        if (tb_task_json_check(req->body.data, req->body.len, strcmp(what, "task") ? "body" : NULL,
                               &te) != TB_OK) {
                tb_http_error(resp, 400, "invalid_argument", NULL, "%s", te.message);
                return NULL;
        }
        json_error_t je;
        json_t *j = json_loadb(req->body.data, req->body.len,
                               JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
        if (!j) {
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "malformed JSON at line %d, column %d: %s", je.line, je.column,
                              je.text);
                return NULL;
        }
        if (!json_is_object(j)) {
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "the body must be a JSON object (a %s), not a JSON %s", what,
                              json_is_array(j)    ? "array"
                              : json_is_string(j) ? "string"
                                                  : "scalar");
                json_decref(j);
                return NULL;
        }
        return j;
}

bool tb_api_body_known(const json_t *body, const char *const *known, const char *what,
                       const char *known_text, tb_http_resp_t *resp) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)body, key, v) {
                bool ok = false;
                for (size_t i = 0; known[i] && !ok; i++)
                        ok = !strcmp(key, known[i]);
                if (!ok) {
                        char field[72];
                        tb_snprintf(field, sizeof(field), "%.64s", key);
                        tb_http_error(resp, 400, "invalid_argument", field,
                                      "%s: unknown field; a %s takes %s", field, what,
                                      known_text);
                        return false;
                }
        }
        return true;
}

bool tb_api_if_match(tb_http_req_t *req, tb_http_resp_t *resp, const char *what,
                     int64_t *version) {
        const char *h = tb_http_header(req, "If-Match");
        *version = -1;
        if (!h)
                return true;
        while (*h == ' ')
                h++;
        size_t n = strlen(h);
        while (n && h[n - 1] == ' ')
                n--;
        if (n == 1 && h[0] == '*')
                return true;
        if (n >= 2 && !strncmp(h, "W/", 2)) {
                h += 2;
                n -= 2;
        }
        char buf[32];
        if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
                h++;
                n -= 2;
        }
        if (n == 0 || n >= sizeof(buf))
                goto bad;
        memcpy(buf, h, n);
        buf[n] = '\0';
        char *end;
        long long v = strtoll(buf, &end, 10);
        if (*end || v < 1 || !isdigit((unsigned char)buf[0]))
                goto bad;
        *version = v;
        return true;
bad:
        tb_http_error(resp, 400, "invalid_argument", "If-Match",
                      "If-Match: expected the %s's ETag, a version in quotes like \"3\" "
                      "(W/\"3\", a bare 3 or * are also accepted)",
                      what);
        return false;
}
