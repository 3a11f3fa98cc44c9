/**
 * @file cli/quarantine.c
 * @brief `taskbus admin quarantine list|show|retry|drop`: the records a role
 *        set aside because it can never apply them as they are
 *        (store/quarantine.h, docs/reliability.md), read and re-driven
 *        straight on PostgreSQL and Kafka like the other admin commands.
 *
 * retry re-produces the raw key, headers and value, byte for byte, to the
 * record's original topic and partition (a new offset: the role reads it
 * again, so a record refused because of something since fixed, a constraint
 * or a bug, is applied), then marks the row retried; drop marks it dropped.
 * Rows are never deleted: they are the trail of what was refused.
 */
#include "bus/bus.h"
#include "cli.h"
#include "store/quarantine.h"
#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tb_cli_admin_quarantine_usage(FILE *fp) {
        fprintf(fp,
                "  quarantine list [--role R] [--topic T] [--status new|retried|dropped]\n"
                "                  [--limit N] [--json]\n"
                "                      records a role set aside (never applied), newest first\n"
                "  quarantine show ID [--json]\n"
                "                      one record: its error, key, headers and bytes\n"
                "  quarantine retry ID re-produce the record's bytes and headers to its topic\n"
                "  quarantine drop ID  mark the record dropped (it stays listed)\n");
}

/** Is every byte printable ASCII (or a newline / tab)? */
static bool tb_cli_q_printable(const void *data, size_t len) {
        const unsigned char *p = data;
        for (size_t i = 0; i < len; i++)
                if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] >= 0x7f)
                        return false;
        return true;
}

/** Lower-case hex of \p len bytes, malloc'd (caller frees). */
static char *tb_cli_q_hex(const void *data, size_t len) {
        const unsigned char *p = data;
        char *s = malloc(len * 2 + 1);
        if (!s)
                return NULL;
        for (size_t i = 0; i < len; i++)
                snprintf(s + 2 * i, 3, "%02x", p[i]);
        s[len * 2] = '\0';
        return s;
}

/** \p data as text when printable, else as a hex dump with an ASCII column. */
static void tb_cli_q_dump(const char *what, const void *data, size_t len, bool present) {
        if (!present) {
                printf("%s: none\n", what);
                return;
        }
        if (tb_cli_q_printable(data, len)) {
                printf("%s (%zu bytes, text): %.*s\n", what, len, (int)len, (const char *)data);
                return;
        }
        printf("%s (%zu bytes, hex):\n", what, len);
        const unsigned char *p = data;
        for (size_t o = 0; o < len; o += 16) {
                printf("  %08zx ", o);
                for (size_t i = o; i < o + 16; i++)
                        i < len ? printf(" %02x", p[i]) : printf("   ");
                printf("  |");
                for (size_t i = o; i < o + 16 && i < len; i++)
                        putchar(p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '.');
                printf("|\n");
        }
}

static int tb_cli_q_list(PGconn *conn, int argc, char **argv) {
        const char *role = NULL, *topic = NULL, *status = NULL;
        int limit = 100;
        bool json = false;
        char err[1024];
        for (int i = 3; i < argc; i++) {
                if (!strcmp(argv[i], "--role") && i + 1 < argc)
                        role = argv[++i];
                else if (!strcmp(argv[i], "--topic") && i + 1 < argc)
                        topic = argv[++i];
                else if (!strcmp(argv[i], "--status") && i + 1 < argc)
                        status = argv[++i];
                else if (!strcmp(argv[i], "--limit") && i + 1 < argc)
                        limit = atoi(argv[++i]);
                else if (!strcmp(argv[i], "--json"))
                        json = true;
                else {
                        tb_cli_fail("admin quarantine list: unexpected argument '%s'", argv[i]);
                        return 2;
                }
        }
        if (status && strcmp(status, "new") && strcmp(status, "retried") &&
            strcmp(status, "dropped")) {
                tb_cli_fail("admin quarantine list: --status is new, retried or dropped, not '%s'",
                            status);
                return 2;
        }
        if (limit < 1) {
                tb_cli_fail("admin quarantine list: --limit is a positive number");
                return 2;
        }
        PGresult *r = NULL;
        if (tb_store_quarantine_list(conn, role, topic, status, limit, &r, err, sizeof(err))) {
                tb_cli_fail("admin quarantine list: %s", err);
                return 1;
        }
        json_t *arr = json ? json_array() : NULL;
        if (!json)
                printf("%-6s %-10s %-32s %5s %10s %-8s %-20s %-6s %s\n", "ID", "ROLE", "TOPIC",
                       "PART", "OFFSET", "STATUS", "FIRST_SEEN", "STATE", "ERROR");
        for (int i = 0; i < PQntuples(r); i++) {
                if (json) {
                        json_array_append_new(
                                arr, json_pack("{s:I, s:s, s:s, s:i, s:I, s:s, s:s, s:s, s:I, s:s}",
                                               "id", (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                                               "role", PQgetvalue(r, i, 1), "topic",
                                               PQgetvalue(r, i, 2), "partition",
                                               atoi(PQgetvalue(r, i, 3)), "offset",
                                               (json_int_t)strtoll(PQgetvalue(r, i, 4), NULL, 10),
                                               "status", PQgetvalue(r, i, 5), "first_seen",
                                               PQgetvalue(r, i, 6), "sqlstate",
                                               PQgetvalue(r, i, 7), "value_bytes",
                                               (json_int_t)strtoll(PQgetvalue(r, i, 8), NULL, 10),
                                               "error", PQgetvalue(r, i, 9)));
                        continue;
                }
                printf("%-6s %-10s %-32s %5s %10s %-8s %-20s %-6s %.100s\n", PQgetvalue(r, i, 0),
                       PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                       PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
                       *PQgetvalue(r, i, 7) ? PQgetvalue(r, i, 7) : "-", PQgetvalue(r, i, 9));
        }
        if (json) {
                tb_cli_print_json(arr);
                json_decref(arr);
        }
        PQclear(r);
        return 0;
}

/** The id argument of show/retry/drop; 0 if missing or not a number. */
static int64_t tb_cli_q_id(int argc, char **argv, const char *cmd) {
        char *end = NULL;
        int64_t id = argc > 3 ? strtoll(argv[3], &end, 10) : 0;
        if (id <= 0 || !end || *end) {
                tb_cli_fail("admin quarantine %s: give the record's ID (from quarantine list)",
                            cmd);
                return 0;
        }
        return id;
}

static json_t *tb_cli_q_bytes_json(const void *data, size_t len, bool present) {
        if (!present)
                return json_null();
        char *hex = tb_cli_q_hex(data, len);
        json_t *o = json_pack("{s:I, s:s}", "bytes", (json_int_t)len, "hex", hex ? hex : "");
        if (tb_cli_q_printable(data, len))
                json_object_set_new(o, "text", json_stringn(data, len));
        free(hex);
        return o;
}

static int tb_cli_q_show(PGconn *conn, int argc, char **argv) {
        char err[1024];
        int64_t id = tb_cli_q_id(argc, argv, "show");
        bool json = argc > 4 && !strcmp(argv[4], "--json");
        if (!id)
                return 2;
        tb_store_quarantine_row_t q;
        if (tb_store_quarantine_get(conn, id, &q, err, sizeof(err))) {
                tb_cli_fail("admin quarantine show: %s", err);
                tb_store_quarantine_row_free(&q);
                return 1;
        }
        if (json) {
                json_t *hs = json_array();
                for (size_t i = 0; i < q.header_cnt; i++)
                        json_array_append_new(
                                hs, json_pack("{s:s%, s:o}", "name", q.headers[i].name,
                                              strlen(q.headers[i].name), "value",
                                              tb_cli_q_bytes_json(q.headers[i].value,
                                                                  q.headers[i].len,
                                                                  q.headers[i].value != NULL)));
                json_t *o = json_pack(
                        "{s:I, s:s, s:s, s:i, s:I, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "id",
                        (json_int_t)q.id, "role", q.role, "topic", q.topic, "partition",
                        (int)q.partition, "offset", (json_int_t)q.offset, "status", q.status,
                        "first_seen", q.first_seen, "status_changed", q.status_changed,
                        "sqlstate", q.sqlstate, "error", q.error, "key",
                        tb_cli_q_bytes_json(q.key.data, q.key.len, q.has_key), "headers", hs,
                        "value", tb_cli_q_bytes_json(q.value.data, q.value.len, q.has_value));
                tb_cli_print_json(o);
                json_decref(o);
        } else {
                printf("id: %" PRId64 "\nrole: %s\ntopic: %s\npartition: %" PRId32
                       "\noffset: %" PRId64 "\nstatus: %s%s%s\nfirst_seen: %s\nsqlstate: %s\n"
                       "error: %s\n",
                       q.id, q.role, q.topic, q.partition, q.offset, q.status,
                       *q.status_changed ? " since " : "", q.status_changed, q.first_seen,
                       *q.sqlstate ? q.sqlstate : "- (not a PostgreSQL refusal)", q.error);
                tb_cli_q_dump("key", q.key.data, q.key.len, q.has_key);
                printf("headers: %zu\n", q.header_cnt);
                for (size_t i = 0; i < q.header_cnt; i++) {
                        /* a producer's header name may hold anything, terminal
                         * escapes included */
                        char what[300];
                        size_t w = (size_t)snprintf(what, sizeof(what), "header ");
                        for (const unsigned char *c = (const unsigned char *)q.headers[i].name;
                             *c && w + 5 < sizeof(what); c++)
                                w += (size_t)snprintf(what + w, sizeof(what) - w,
                                                      *c >= 0x20 && *c < 0x7f ? "%c" : "\\x%02x",
                                                      *c);
                        tb_cli_q_dump(what, q.headers[i].value, q.headers[i].len,
                                      q.headers[i].value != NULL);
                }
                tb_cli_q_dump("value", q.value.data, q.value.len, q.has_value);
        }
        tb_store_quarantine_row_free(&q);
        return 0;
}

static int tb_cli_q_retry(const tb_config_t *conf, PGconn *conn, int argc, char **argv) {
        char err[1024], name[256];
        int64_t id = tb_cli_q_id(argc, argv, "retry");
        if (!id)
                return 2;
        tb_store_quarantine_row_t q;
        int rc = 1;
        rd_kafka_t *rk = NULL;
        if (tb_store_quarantine_get(conn, id, &q, err, sizeof(err))) {
                tb_cli_fail("admin quarantine retry: %s", err);
                goto out;
        }
        if (!strcmp(q.status, "dropped")) {
                tb_cli_fail("admin quarantine retry: record %" PRId64 " was dropped", id);
                goto out;
        }
        /* only this region's own topics: a copy of another region's topic is
         * MirrorMaker's, and the record is re-driven there */
        int t = 0;
        for (; t < (int)TB_TOPIC__COUNT; t++)
                if (!strcmp(tb_topic_name(conf, (tb_topic_t)t, name, sizeof(name)), q.topic))
                        break;
        if (t == (int)TB_TOPIC__COUNT) {
                tb_cli_fail("admin quarantine retry: %s is not one of this region's topics "
                            "(topics.prefix '%s'); retry it in the region that wrote it",
                            q.topic, conf->topic_prefix);
                goto out;
        }
        if (tb_bus_producer_new(conf, NULL, &rk, err, sizeof(err)) ||
            tb_bus_produce(rk, conf, (tb_topic_t)t, q.partition, q.has_key ? q.key.data : NULL,
                           q.key.len, q.has_value ? q.value.data : NULL, q.value.len, q.headers,
                           q.header_cnt, true, err, sizeof(err))) {
                tb_cli_fail("admin quarantine retry: %s", err);
                goto out;
        }
        if (tb_store_quarantine_set_status(conn, id, "retried", err, sizeof(err))) {
                tb_cli_fail("admin quarantine retry: the record was produced again, but: %s",
                            err);
                goto out;
        }
        printf("quarantine %" PRId64 ": re-produced to %s [%" PRId32 "] (%zu bytes, %zu "
               "headers); marked retried\n",
               id, q.topic, q.partition, q.value.len, q.header_cnt);
        rc = 0;
out:
        if (rk) {
                rd_kafka_flush(rk, 10000);
                rd_kafka_destroy(rk);
        }
        tb_store_quarantine_row_free(&q);
        return rc;
}

static int tb_cli_q_drop(PGconn *conn, int argc, char **argv) {
        char err[1024];
        int64_t id = tb_cli_q_id(argc, argv, "drop");
        if (!id)
                return 2;
        if (tb_store_quarantine_set_status(conn, id, "dropped", err, sizeof(err))) {
                tb_cli_fail("admin quarantine drop: %s", err);
                return 1;
        }
        printf("quarantine %" PRId64 ": marked dropped\n", id);
        return 0;
}

int tb_cli_admin_quarantine(int argc, char **argv, tb_config_t *conf) {
        const char *cmd = argc > 2 ? argv[2] : "";
        if (strcmp(cmd, "list") && strcmp(cmd, "show") && strcmp(cmd, "retry") &&
            strcmp(cmd, "drop")) {
                tb_cli_fail("admin quarantine: unknown command '%s' (list, show, retry, drop)",
                            cmd);
                tb_cli_admin_quarantine_usage(stderr);
                return 2;
        }
        char err[1024];
        tb_store_t *store = NULL;
        if (tb_store_open(conf, &store, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("postgres: %s", err);
                return 1;
        }
        PGconn *conn = tb_store_acquire(store);
        int rc = !strcmp(cmd, "list")   ? tb_cli_q_list(conn, argc, argv)
                 : !strcmp(cmd, "show") ? tb_cli_q_show(conn, argc, argv)
                 : !strcmp(cmd, "retry") ? tb_cli_q_retry(conf, conn, argc, argv)
                                         : tb_cli_q_drop(conn, argc, argv);
        tb_store_release(store, conn);
        tb_store_destroy(store);
        return rc;
}
