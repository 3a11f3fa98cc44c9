/**
 * @file store/quarantine.c
 * @brief The quarantine table's statements and the failure classifier
 *        (store/quarantine.h).
 */
#include "store/quarantine.h"

#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** Longest error text kept. */
#define TB_STORE_QUARANTINE_ERROR_MAX 4000

tb_store_fault_t tb_store_quarantine_classify(const char *sqlstate) {
        if (!sqlstate || strlen(sqlstate) != 5)
                return TB_STORE_FAULT_TRANSIENT;
        if (!strncmp(sqlstate, "22", 2) || !strncmp(sqlstate, "23", 2) ||
            !strncmp(sqlstate, "54", 2) || !strcmp(sqlstate, "42804"))
                return TB_STORE_FAULT_PERMANENT;
        return TB_STORE_FAULT_TRANSIENT;
}

/* ---- encoding -------------------------------------------------------------------- */

static const char tb_store_quarantine_xd[] = "0123456789abcdef";

/** Append \p len bytes as hex (no prefix). */
static tb_err_t tb_store_quarantine_hex(tb_buf_t *b, const void *data, size_t len) {
        const unsigned char *p = data;
        for (size_t i = 0; i < len; i++) {
                char two[2] = {tb_store_quarantine_xd[p[i] >> 4], tb_store_quarantine_xd[p[i] & 15]};
                if (tb_buf_append(b, two, 2))
                        return TB_ERR_NOMEM;
        }
        return TB_OK;
}

/** \p bytes as a bytea parameter in hex ("\x..."), NUL-terminated in \p b. */
static tb_err_t tb_store_quarantine_bytea(tb_buf_t *b, const void *bytes, size_t len) {
        b->len = 0;
        if (tb_buf_append(b, "\\x", 2) || tb_store_quarantine_hex(b, bytes, len) ||
            tb_buf_append(b, "", 1))
                return TB_ERR_NOMEM;
        return TB_OK;
}

/** An error text PostgreSQL accepts whatever the record put in it: printable
 *  ASCII, anything else as '?', bounded. */
static void tb_store_quarantine_ascii(const char *in, char *out, size_t size) {
        size_t w = 0;
        for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && w + 1 < size;
             p++)
                out[w++] = *p >= 0x20 && *p < 0x7f ? (char)*p : '?';
        out[w] = '\0';
}

/** text[] literal of hex strings, one per header name (\p names) or value
 *  (NULL element for a header without one). */
static tb_err_t tb_store_quarantine_hex_array(tb_buf_t *b, const tb_header_t *h, size_t n,
                                              bool names) {
        b->len = 0;
        if (tb_buf_append(b, "{", 1))
                return TB_ERR_NOMEM;
        for (size_t i = 0; i < n; i++) {
                const void *v = names ? (const void *)h[i].name : h[i].value;
                size_t len = names ? strlen(h[i].name) : h[i].len;
                if ((i && tb_buf_append(b, ",", 1)) ||
                    (!v ? tb_buf_append(b, "NULL", 4)
                        : tb_buf_append(b, "\"", 1) || tb_store_quarantine_hex(b, v, len) ||
                                  tb_buf_append(b, "\"", 1)))
                        return TB_ERR_NOMEM;
        }
        return tb_buf_append(b, "}", 2) ? TB_ERR_NOMEM : TB_OK;
}

/* ---- statements ------------------------------------------------------------------ */

static const char tb_store_quarantine_sql_insert[] =
        "INSERT INTO quarantine (role, topic, partition, \"offset\", key, header_names, "
        "header_values, value, error, sqlstate) "
        "VALUES ($1, $2, $3::int, $4::bigint, $5::bytea, "
        "ARRAY(SELECT decode(x, 'hex') FROM unnest($6::text[]) WITH ORDINALITY u(x, n) "
        "ORDER BY n), "
        "ARRAY(SELECT decode(x, 'hex') FROM unnest($7::text[]) WITH ORDINALITY u(x, n) "
        "ORDER BY n), $8::bytea, $9, NULLIF($10, '')) "
        "ON CONFLICT (role, topic, partition, \"offset\") DO NOTHING RETURNING id";

tb_err_t tb_store_quarantine_insert(PGconn *conn, const tb_store_quarantine_rec_t *rec,
                                    bool *inserted, char *errstr, size_t errstr_size) {
        tb_buf_t key = {0}, value = {0}, names = {0}, values = {0};
        char part[16], off[32], sqlstate[8], *error = malloc(TB_STORE_QUARANTINE_ERROR_MAX);
        PGresult *r = NULL;
        tb_err_t err;
        if (inserted)
                *inserted = false;
        if (!error || (rec->key && tb_store_quarantine_bytea(&key, rec->key, rec->key_len)) ||
            (rec->value && tb_store_quarantine_bytea(&value, rec->value, rec->value_len)) ||
            tb_store_quarantine_hex_array(&names, rec->headers, rec->header_cnt, true) ||
            tb_store_quarantine_hex_array(&values, rec->headers, rec->header_cnt, false)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                "quarantine %s [%" PRId32 "] offset %" PRId64 ": out of memory",
                                rec->topic, rec->partition, rec->offset);
                goto out;
        }
        tb_snprintf(part, sizeof(part), "%" PRId32, rec->partition);
        tb_snprintf(off, sizeof(off), "%" PRId64, rec->offset);
        tb_store_quarantine_ascii(rec->error, error, TB_STORE_QUARANTINE_ERROR_MAX);
        tb_store_quarantine_ascii(rec->sqlstate, sqlstate, sizeof(sqlstate));
        const char *p[] = {rec->role,
                           rec->topic,
                           part,
                           off,
                           rec->key ? (const char *)key.data : NULL,
                           (const char *)names.data,
                           (const char *)values.data,
                           rec->value ? (const char *)value.data : NULL,
                           error,
                           sqlstate};
        err = tb_store_exec(conn, "insert quarantine", tb_store_quarantine_sql_insert, 10, p, &r,
                            errstr, errstr_size);
        if (!err && inserted)
                *inserted = PQntuples(r) > 0;
out:
        PQclear(r);
        free(error);
        tb_buf_free(&key);
        tb_buf_free(&value);
        tb_buf_free(&names);
        tb_buf_free(&values);
        return err;
}

tb_err_t tb_store_quarantine_list(PGconn *conn, const char *role, const char *topic,
                                  const char *status, int limit, PGresult **out, char *errstr,
                                  size_t errstr_size) {
        char lim[16];
        tb_snprintf(lim, sizeof(lim), "%d", limit > 0 ? limit : 100);
        const char *p[] = {role, topic, status, lim};
        return tb_store_exec(
                conn, "list quarantine",
                "SELECT id, role, topic, partition, \"offset\", status, "
                "to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                "coalesce(sqlstate, ''), coalesce(length(value), 0), error FROM quarantine "
                "WHERE ($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR topic = $2) "
                "AND ($3::text IS NULL OR status = $3) ORDER BY id DESC LIMIT $4::int",
                4, p, out, errstr, errstr_size);
}

/** The bytes of a bytea column in hex output ("\x..."). */
static tb_err_t tb_store_quarantine_unhex(const char *s, tb_buf_t *out) {
        out->len = 0;
        if (s[0] == '\\' && s[1] == 'x')
                s += 2;
        for (; s[0] && s[1]; s += 2) {
                unsigned char c = 0;
                for (int k = 0; k < 2; k++) {
                        const char *d = strchr(tb_store_quarantine_xd, s[k] | 0x20);
                        c = (unsigned char)(c << 4 | (d ? d - tb_store_quarantine_xd : 0));
                }
                if (tb_buf_append(out, &c, 1))
                        return TB_ERR_NOMEM;
        }
        return TB_OK;
}

static char *tb_store_quarantine_dup(PGresult *r, int col) {
        return strdup(PQgetvalue(r, 0, col));
}

tb_err_t tb_store_quarantine_get(PGconn *conn, int64_t id, tb_store_quarantine_row_t *row,
                                 char *errstr, size_t errstr_size) {
        char ids[32];
        PGresult *r = NULL, *h = NULL;
        memset(row, 0, sizeof(*row));
        tb_snprintf(ids, sizeof(ids), "%" PRId64, id);
        const char *p[] = {ids};
        tb_err_t err = tb_store_exec(
                conn, "read quarantine",
                "SELECT role, topic, partition, \"offset\", key, value, error, "
                "coalesce(sqlstate, ''), status, "
                "to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                "coalesce(to_char(status_changed AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') FROM quarantine WHERE id = $1::bigint",
                1, p, &r, errstr, errstr_size);
        if (err)
                return err;
        if (PQntuples(r) == 0) {
                PQclear(r);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "quarantine: no record %" PRId64, id);
        }
        row->id = id;
        row->role = tb_store_quarantine_dup(r, 0);
        row->topic = tb_store_quarantine_dup(r, 1);
        row->partition = (int32_t)strtol(PQgetvalue(r, 0, 2), NULL, 10);
        row->offset = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        row->has_key = !PQgetisnull(r, 0, 4);
        row->has_value = !PQgetisnull(r, 0, 5);
        row->error = tb_store_quarantine_dup(r, 6);
        row->sqlstate = tb_store_quarantine_dup(r, 7);
        row->status = tb_store_quarantine_dup(r, 8);
        row->first_seen = tb_store_quarantine_dup(r, 9);
        row->status_changed = tb_store_quarantine_dup(r, 10);
        if ((row->has_key && tb_store_quarantine_unhex(PQgetvalue(r, 0, 4), &row->key)) ||
            (row->has_value && tb_store_quarantine_unhex(PQgetvalue(r, 0, 5), &row->value)) ||
            !row->role || !row->topic || !row->error || !row->sqlstate || !row->status ||
            !row->first_seen || !row->status_changed) {
                PQclear(r);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "quarantine: out of memory");
        }
        PQclear(r);
        err = tb_store_exec(conn, "read quarantine headers",
                            "SELECT n, v FROM quarantine q, unnest(q.header_names, "
                            "q.header_values) WITH ORDINALITY u(n, v, i) WHERE q.id = $1::bigint "
                            "ORDER BY i",
                            1, p, &h, errstr, errstr_size);
        if (err)
                return err;
        int n = PQntuples(h);
        row->headers = calloc((size_t)(n > 0 ? n : 1), sizeof(*row->headers));
        for (int i = 0; row->headers && i < n; i++, row->header_cnt++) {
                tb_buf_t name = {0}, value = {0};
                if (tb_store_quarantine_unhex(PQgetvalue(h, i, 0), &name) ||
                    tb_buf_append(&name, "", 1) ||
                    (!PQgetisnull(h, i, 1) &&
                     (tb_store_quarantine_unhex(PQgetvalue(h, i, 1), &value) ||
                      tb_buf_append(&value, "", 1)))) {
                        tb_buf_free(&name);
                        tb_buf_free(&value);
                        break;
                }
                row->headers[i].name = (const char *)name.data;
                row->headers[i].value = PQgetisnull(h, i, 1) ? NULL : value.data;
                row->headers[i].len = value.len ? value.len - 1 : 0;
                if (PQgetisnull(h, i, 1))
                        tb_buf_free(&value);
        }
        PQclear(h);
        if (!row->headers || row->header_cnt != (size_t)n)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "quarantine: out of memory");
        return TB_OK;
}

void tb_store_quarantine_row_free(tb_store_quarantine_row_t *row) {
        if (!row)
                return;
        free(row->role);
        free(row->topic);
        free(row->error);
        free(row->sqlstate);
        free(row->status);
        free(row->first_seen);
        free(row->status_changed);
        tb_buf_free(&row->key);
        tb_buf_free(&row->value);
        for (size_t i = 0; i < row->header_cnt; i++) {
                free((void *)row->headers[i].name);
                free((void *)row->headers[i].value);
        }
        free(row->headers);
        memset(row, 0, sizeof(*row));
}

tb_err_t tb_store_quarantine_set_status(PGconn *conn, int64_t id, const char *status,
                                        char *errstr, size_t errstr_size) {
        char ids[32];
        PGresult *r = NULL;
        tb_snprintf(ids, sizeof(ids), "%" PRId64, id);
        const char *p[] = {ids, status};
        tb_err_t err = tb_store_exec(conn, "update quarantine status",
                                     "UPDATE quarantine SET status = $2, status_changed = now() "
                                     "WHERE id = $1::bigint",
                                     2, p, &r, errstr, errstr_size);
        if (!err && strcmp(PQcmdTuples(r), "0") == 0)
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "quarantine: no record %" PRId64, id);
        PQclear(r);
        return err;
}
