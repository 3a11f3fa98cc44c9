/**
 * @file store/pool.c
 * @brief The PostgreSQL layer's base: a lazily filled connection pool, and
 *        statement helpers whose errors carry the server's message and
 *        SQLSTATE. Owns no table: the table families have their own files
 *        (one store/<family>.c each), the migrations store/migrate.c.
 *
 * Pool: a fixed array of postgres.pool_size slots guarded by one mutex and
 * one condition variable. A slot is connected the first time it is needed;
 * network work (connect, reset, health check) happens outside the mutex on
 * a slot already marked busy, so one slow server never blocks the threads
 * that only want an idle connection.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

typedef struct tb_store_slot {
        PGconn *conn;    /* NULL until first borrowed */
        bool busy;       /* borrowed, or being connected */
        bool reset;      /* release could not clean it: reconnect before reuse */
} tb_store_slot_t;

struct tb_store {
        pthread_mutex_t lock;
        pthread_cond_t freed;   /* a slot became free */
        char *url;
        char options[64];       /* libpq "options" of every connection ("" = none) */
        int size;
        int waiting;
        tb_store_slot_t *slots;
};

/* ---- small helpers ------------------------------------------------------- */

/* libpq messages span lines and end in '\n'; errstr is one line. */
void tb_store_oneline(const char *in, char *out, size_t out_size) {
        size_t o = 0;
        if (!out_size)
                return;
        for (const char *p = in ? in : ""; *p && o + 1 < out_size; p++) {
                if (*p == '\n' || *p == '\r' || *p == '\t') {
                        /* A run of line breaks becomes "; ", unless it holds a tab:
                         * libpq indents the continuation of a sentence. */
                        const char *sep = *p == '\t' ? " " : "; ";
                        while (p[1] == '\n' || p[1] == '\r' || p[1] == '\t')
                                if (*++p == '\t')
                                        sep = " ";
                        if (!p[1])
                                break;
                        for (; *sep && o + 1 < out_size; sep++)
                                out[o++] = *sep;
                        continue;
                }
                out[o++] = *p;
        }
        out[o] = '\0';
}

/* ---- passwords out of messages ------------------------------------------- */

#define TB_STORE_MAX_SECRETS 8
#define TB_STORE_MASK "****"

typedef struct tb_store_secret {
        const char *s;
        size_t len;
} tb_store_secret_t;

static void tb_store_secret_add(tb_store_secret_t *sec, size_t *n, size_t max, const char *s,
                                size_t len) {
        if (len && *n < max) {
                sec[*n].s = s;
                sec[*n].len = len;
                (*n)++;
        }
}

/* Every password \p ci spells, as spans of it: the URI's user:PASSWORD@
 * (libpq's rule: the userinfo ends at the first '@' before any '/') and
 * each password=VALUE (a URI parameter ends at '&'; a key=value value is a
 * word or a '...' string). Any "password =" counts, wherever it stands:
 * masking too much is harmless. */
static size_t tb_store_secrets(const char *ci, tb_store_secret_t *sec) {
        size_t n = 0;
        bool uri = !strncmp(ci, "postgresql://", 13) || !strncmp(ci, "postgres://", 11);
        if (uri) {
                const char *p = strstr(ci, "://") + 3, *q = p;
                while (*q && *q != '@' && *q != '/')
                        q++;
                if (*q == '@') {
                        const char *colon = memchr(p, ':', (size_t)(q - p));
                        if (colon)
                                tb_store_secret_add(sec, &n, TB_STORE_MAX_SECRETS, colon + 1, (size_t)(q - colon - 1));
                }
        }
        for (const char *k = strstr(ci, "password"); k; k = strstr(k + 1, "password")) {
                const char *v = k + 8;
                while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
                        v++;
                if (*v != '=')
                        continue;
                v++;
                while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
                        v++;
                const char *e = v;
                if (!uri && *v == '\'') {
                        for (e = ++v; *e && *e != '\''; e++)
                                if (*e == '\\' && e[1])
                                        e++;
                } else {
                        while (*e && (uri ? *e != '&' : !strchr(" \t\n\r", *e)))
                                e++;
                }
                tb_store_secret_add(sec, &n, TB_STORE_MAX_SECRETS, v, (size_t)(e - v));
        }
        return n;
}

/* \p s of \p len decoded (%XX in a URI, \x in a quoted key=value string)
 * into \p out, which has room for len + 1. @returns the decoded length. */
static size_t tb_store_secret_decode(const char *s, size_t len, bool uri, char *out) {
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
                int hi, lo;
                if (uri && s[i] == '%' && i + 2 < len && (hi = tb_hex_digit(s[i + 1])) >= 0 &&
                    (lo = tb_hex_digit(s[i + 2])) >= 0) {
                        out[o++] = (char)(hi * 16 + lo);
                        i += 2;
                } else if (!uri && s[i] == '\\' && i + 1 < len) {
                        out[o++] = s[++i];
                } else {
                        out[o++] = s[i];
                }
        }
        out[o] = '\0';
        return o;
}

void tb_store_oneline_redacted(const char *conninfo, const char *in, char *out,
                               size_t out_size) {
        if (!out_size)
                return;
        tb_store_secret_t sec[2 * TB_STORE_MAX_SECRETS];
        size_t n = conninfo ? tb_store_secrets(conninfo, sec) : 0;
        if (!n) {
                tb_store_oneline(in, out, out_size);
                return;
        }
        /* The decoded spelling of each too (a message may quote either). */
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
                total += sec[i].len + 1;
        char *dec = malloc(total);
        size_t line_size = strlen(in ? in : "") + 1;
        char *line = malloc(line_size);
        if (!dec || !line) {
                free(dec);
                free(line);
                /* never risk printing the secret: say nothing rather */
                tb_snprintf(out, out_size, "(message withheld: out of memory)");
                return;
        }
        bool uri = !strncmp(conninfo, "postgresql://", 13) || !strncmp(conninfo, "postgres://", 11);
        size_t nraw = n;
        char *d = dec;
        for (size_t i = 0; i < nraw; i++) {
                size_t dl = tb_store_secret_decode(sec[i].s, sec[i].len, uri, d);
                if (dl != sec[i].len || memcmp(d, sec[i].s, dl))
                        tb_store_secret_add(sec, &n, 2 * TB_STORE_MAX_SECRETS, d, dl);
                d += sec[i].len + 1;
        }
        tb_store_oneline(in, line, line_size);
        size_t o = 0;
        for (const char *p = line; *p && o + 1 < out_size;) {
                size_t hit = 0;
                for (size_t i = 0; i < n; i++)
                        if (sec[i].len > hit && !strncmp(p, sec[i].s, sec[i].len))
                                hit = sec[i].len;
                if (hit) {
                        for (const char *m = TB_STORE_MASK; *m && o + 1 < out_size; m++)
                                out[o++] = *m;
                        p += hit;
                } else {
                        out[o++] = *p++;
                }
        }
        out[o] = '\0';
        free(dec);
        free(line);
}

/* PostgreSQL reports NOTICEs and, on a session it ends by itself
 * (pg_terminate_backend, shutdown), the FATAL reason as an unsolicited
 * message: route them to our log rather than libpq's stderr default. */
static void tb_store_notice(void *arg, const PGresult *res) {
        (void)arg;
        const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        char line[512];
        tb_store_oneline(msg ? msg : PQresultErrorMessage(res), line, sizeof(line));
        if (sev && (!strcmp(sev, "WARNING") || !strcmp(sev, "FATAL") ||
                    !strcmp(sev, "PANIC") || !strcmp(sev, "ERROR")))
                tb_warn(TB_STORE_SUBSYS, "PostgreSQL %s: %s", sev, line);
        else
                tb_debug(TB_STORE_SUBSYS, "PostgreSQL %s: %s", sev ? sev : "NOTICE", line);
}

static PGconn *tb_store_connect(const tb_store_t *store) {
        /* Entries before "dbname" are defaults the URL may override; a
         * connect_timeout bounds how long an acquire can hang on a dead host.
         * The options (the statement timeout) too: a URL with its own
         * options= is the operator's explicit choice. */
        const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL,
                              NULL};
        const char *vals[] = {"10", "taskbus", store->url, NULL, NULL};
        if (store->options[0]) {
                keys[2] = "options";
                vals[2] = store->options;
                keys[3] = "dbname";
                vals[3] = store->url;
        }
        PGconn *conn = PQconnectdbParams(keys, vals, 1);
        if (conn)
                PQsetNoticeReceiver(conn, tb_store_notice, NULL);
        return conn;
}

/* ---- pool -------------------------------------------------------------- */

tb_err_t tb_store_open(const tb_config_t *conf, tb_store_t **out, char *errstr,
                       size_t errstr_size) {
        return tb_store_open_with(conf, conf ? conf->pg_pool_size : 0, 0, out, errstr,
                                  errstr_size);
}

tb_err_t tb_store_open_with(const tb_config_t *conf, int64_t size, int64_t statement_timeout_ms,
                            tb_store_t **out, char *errstr, size_t errstr_size) {
        tb_store_t *store = NULL;
        tb_err_t err;
        bool lock_init = false, cond_init = false;

        *out = NULL;
        if (!conf || !conf->pg_url || !*conf->pg_url)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "postgres.url: empty; set it in the config file or with "
                                 "TASKBUS_PG, e.g. \"postgresql://taskbus@127.0.0.1:5432/taskbus\"");
        if (size < 1 || size > 1000)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "pool size %lld is out of range; use 1 to 1000 "
                                 "(postgres.pool_size, api.pool_size)",
                                 (long long)size);

        store = calloc(1, sizeof(*store));
        if (!store)
                goto nomem;
        store->size = (int)size;
        if (statement_timeout_ms > 0)
                snprintf(store->options, sizeof(store->options), "-c statement_timeout=%lld",
                         (long long)statement_timeout_ms);
        store->url = strdup(conf->pg_url);
        store->slots = calloc((size_t)store->size, sizeof(*store->slots));
        if (!store->url || !store->slots)
                goto nomem;
        if (pthread_mutex_init(&store->lock, NULL))
                goto nomem;
        lock_init = true;
        /* Monotonic: a wall-clock step must not stretch an acquire timeout. */
        if (tb_cond_init_mono(&store->freed) != TB_OK)
                goto nomem;
        cond_init = true;

        /* The first connection now, so a wrong URL or a down server is
         * reported at start-up rather than on the first request. */
        PGconn *conn = tb_store_connect(store);
        if (!conn)
                goto nomem;
        store->slots[0].conn = conn;
        if (PQstatus(conn) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline_redacted(store->url, PQerrorMessage(conn), msg, sizeof(msg));
                /* Name the target by its parts: the URL may hold a password. */
                err = tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                "postgres.url: cannot connect to PostgreSQL (host %s, port %s, "
                                "database %s, user %s): %s; check postgres.url / TASKBUS_PG "
                                "and that the server is running",
                                PQhost(conn) ? PQhost(conn) : "?",
                                PQport(conn) ? PQport(conn) : "?",
                                PQdb(conn) ? PQdb(conn) : "?",
                                PQuser(conn) ? PQuser(conn) : "?", msg);
                goto fail;
        }
        *out = store;
        return TB_OK;

nomem:
        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                        "postgres: out of memory opening the connection pool");
fail:
        if (store) {
                if (store->slots && store->slots[0].conn)
                        PQfinish(store->slots[0].conn);
                if (cond_init)
                        pthread_cond_destroy(&store->freed);
                if (lock_init)
                        pthread_mutex_destroy(&store->lock);
                free(store->slots);
                free(store->url);
                free(store);
        }
        return err;
}

void tb_store_destroy(tb_store_t *store) {
        if (!store)
                return;
        int busy = 0;
        for (int i = 0; i < store->size; i++) {
                if (store->slots[i].busy)
                        busy++;
                if (store->slots[i].conn)
                        PQfinish(store->slots[i].conn);
        }
        if (busy)
                tb_error(TB_STORE_SUBSYS,
                         "pool destroyed with %d connection(s) still borrowed: release "
                         "every connection before tb_store_destroy()", busy);
        pthread_cond_destroy(&store->freed);
        pthread_mutex_destroy(&store->lock);
        free(store->slots);
        free(store->url);
        free(store);
}

/*
 * A server that ended an idle session (pg_terminate_backend, restart, idle
 * timeout) has sent its FATAL and closed the socket, but libpq only notices
 * on the next read, i.e. when the borrower's first query fails. Reading
 * what is already waiting on the socket turns that into CONNECTION_BAD
 * here, without a round trip. A peer that vanished silently (network cut)
 * is still only found by the first query: tb_store_exec() then returns
 * TB_ERR_PG and the next acquire resets the connection.
 */
static void tb_store_probe(PGconn *conn) {
        for (int i = 0; i < 8 && PQstatus(conn) == CONNECTION_OK; i++) {
                struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
                if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0)
                        return;
                if (!PQconsumeInput(conn))
                        return;
                /* Parse what arrived: an unsolicited FATAL goes to the notice
                 * receiver (logged); NOTIFYs stay queued for PQnotifies(). */
                (void)PQisBusy(conn);
        }
}

static void tb_store_prepare(const tb_store_t *store, PGconn *conn, bool force_reset) {
        if (!force_reset)
                tb_store_probe(conn);
        if (!force_reset && PQstatus(conn) == CONNECTION_OK)
                return;
        if (!force_reset) {
                char msg[512];
                tb_store_oneline_redacted(store->url, PQerrorMessage(conn), msg, sizeof(msg));
                tb_warn(TB_STORE_SUBSYS, "connection to PostgreSQL lost (%s); reconnecting",
                        *msg ? msg : "no reason given");
        }
        PQreset(conn);
        if (PQstatus(conn) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline_redacted(store->url, PQerrorMessage(conn), msg, sizeof(msg));
                tb_warn(TB_STORE_SUBSYS, "reconnecting to PostgreSQL failed: %s", msg);
        }
}

PGconn *tb_store_acquire_timeout(tb_store_t *store, int timeout_ms) {
        struct timespec deadline;
        tb_store_slot_t *slot = NULL;

        if (!store)
                return NULL;
        if (timeout_ms >= 0)
                deadline = tb_mono_deadline(timeout_ms);

        pthread_mutex_lock(&store->lock);
        for (;;) {
                /* Prefer a connected idle slot; else connect a fresh one. */
                for (int i = 0; i < store->size && !slot; i++)
                        if (!store->slots[i].busy && store->slots[i].conn)
                                slot = &store->slots[i];
                for (int i = 0; i < store->size && !slot; i++)
                        if (!store->slots[i].busy)
                                slot = &store->slots[i];
                if (slot)
                        break;
                int rc = 0;
                store->waiting++;
                if (timeout_ms >= 0)
                        rc = pthread_cond_timedwait(&store->freed, &store->lock, &deadline);
                else
                        pthread_cond_wait(&store->freed, &store->lock);
                store->waiting--;
                if (rc == ETIMEDOUT) {
                        /* one last look: the slot may have been freed just now */
                        for (int i = 0; i < store->size && !slot; i++)
                                if (!store->slots[i].busy)
                                        slot = &store->slots[i];
                        if (slot)
                                break;
                        pthread_mutex_unlock(&store->lock);
                        return NULL;
                }
        }
        slot->busy = true;
        PGconn *conn = slot->conn;
        bool force_reset = slot->reset;
        slot->reset = false;
        pthread_mutex_unlock(&store->lock);

        if (conn) {
                tb_store_prepare(store, conn, force_reset);
                return conn;
        }
        conn = tb_store_connect(store);
        pthread_mutex_lock(&store->lock);
        slot->conn = conn;
        if (!conn) {
                slot->busy = false;
                pthread_cond_signal(&store->freed);
        }
        pthread_mutex_unlock(&store->lock);
        if (!conn) {
                tb_error(TB_STORE_SUBSYS, "out of memory creating a PostgreSQL connection");
                return NULL;
        }
        if (PQstatus(conn) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline_redacted(store->url, PQerrorMessage(conn), msg, sizeof(msg));
                tb_warn(TB_STORE_SUBSYS, "connecting to PostgreSQL failed: %s", msg);
        }
        return conn;
}

PGconn *tb_store_acquire(tb_store_t *store) { return tb_store_acquire_timeout(store, -1); }

/* Leave \p conn as a new borrower expects it: idle, outside a transaction.
 * @returns false if that needs a reconnect (done by the next acquire). */
static bool tb_store_clean(PGconn *conn) {
        if (PQstatus(conn) != CONNECTION_OK)
                return true; /* the next acquire's probe resets it anyway */
        switch (PQtransactionStatus(conn)) {
        case PQTRANS_IDLE:
                return true;
        case PQTRANS_INTRANS:
        case PQTRANS_INERROR: {
                /* Normal on error paths (begin, a statement fails, release). */
                tb_debug(TB_STORE_SUBSYS, "connection released inside a transaction: rolling back");
                PGresult *r = PQexec(conn, "ROLLBACK");
                bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK &&
                          PQtransactionStatus(conn) == PQTRANS_IDLE;
                PQclear(r);
                return ok;
        }
        case PQTRANS_ACTIVE:
                /* A query (or COPY) still in flight from asynchronous use:
                 * draining it safely is not worth the cases; start afresh. */
                tb_warn(TB_STORE_SUBSYS,
                        "connection released while a query was still running; it will be "
                        "reconnected");
                return false;
        case PQTRANS_UNKNOWN:
        default:
                return false;
        }
}

void tb_store_release(tb_store_t *store, PGconn *conn) {
        if (!store || !conn)
                return;
        tb_store_slot_t *slot = NULL;
        pthread_mutex_lock(&store->lock);
        for (int i = 0; i < store->size && !slot; i++)
                if (store->slots[i].conn == conn && store->slots[i].busy)
                        slot = &store->slots[i];
        pthread_mutex_unlock(&store->lock);
        if (!slot) {
                tb_error(TB_STORE_SUBSYS,
                         "tb_store_release: connection %p is not borrowed from this pool "
                         "(released twice?); ignored", (void *)conn);
                return;
        }
        /* The slot stays busy while we clean it: nobody else can take it. */
        bool clean = tb_store_clean(conn);
        pthread_mutex_lock(&store->lock);
        slot->reset = !clean;
        slot->busy = false;
        pthread_cond_signal(&store->freed);
        pthread_mutex_unlock(&store->lock);
}

void tb_store_stats(tb_store_t *store, tb_store_stats_t *st) {
        memset(st, 0, sizeof(*st));
        if (!store)
                return;
        pthread_mutex_lock(&store->lock);
        st->size = store->size;
        st->waiting = store->waiting;
        for (int i = 0; i < store->size; i++) {
                if (store->slots[i].busy)
                        st->in_use++;
                if (store->slots[i].conn || store->slots[i].busy)
                        st->open++;
        }
        pthread_mutex_unlock(&store->lock);
}

/* ---- one connection, outside the pool ------------------------------------ */

tb_err_t tb_store_connect_one(const char *conninfo, PGconn **out, char *errstr,
                              size_t errstr_size) {
        PGconn *conn = PQconnectdb(conninfo);
        *out = NULL;
        if (conn && PQstatus(conn) == CONNECTION_OK) {
                *out = conn;
                return TB_OK;
        }
        char m[512];
        tb_store_oneline_redacted(conninfo, conn ? PQerrorMessage(conn) : "out of memory", m,
                                  sizeof(m));
        PQfinish(conn);
        return tb_seterr(errstr, errstr_size, TB_ERR_PG, "%s", m);
}

/* ---- statements ---------------------------------------------------------- */

static tb_err_t tb_store_sqlstate_err(const char *sqlstate) {
        if (!sqlstate)
                return TB_ERR_PG;
        /* unique_violation, serialization_failure, deadlock_detected: see
         * store.h, all mean "another writer won; retry or report". */
        if (!strcmp(sqlstate, "23505") || !strcmp(sqlstate, "40001") ||
            !strcmp(sqlstate, "40P01"))
                return TB_ERR_CONFLICT;
        return TB_ERR_PG;
}

/* The 1-based line of \p sql holding character \p pos (the server counts
 * characters, not bytes; our SQL is UTF-8). */
static int tb_store_line_of(const char *sql, long pos) {
        int line = 1;
        long ch = 0;
        for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
                if ((*p & 0xC0) != 0x80 && ++ch >= pos)
                        break;
                if (*p == '\n')
                        line++;
        }
        return line;
}

/* The SQLSTATE of this thread's last statement (tb_store_last_sqlstate()). */
static __thread char tb_store_last_state[6];

const char *tb_store_last_sqlstate(void) {
        return tb_store_last_state;
}

/*
 * Turn a result into our error convention. \p sql, when given, is used to
 * name the line of a syntax error (multi-line migration files).
 */
tb_err_t tb_store_result_err(PGconn *conn, const PGresult *r, const char *what,
                             const char *sql, char *errstr, size_t errstr_size) {
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        char msg[1024], extra[1024] = "", where[64] = "";
        const char *last = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        tb_snprintf(tb_store_last_state, sizeof(tb_store_last_state), "%s",
                    last ? last : PQstatus(conn) == CONNECTION_BAD ? "08006" : "");

        if (!what)
                what = "postgres";
        switch (st) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
                return TB_OK;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: COPY is not supported through tb_store_exec()", what);
        default:
                break;
        }

        const char *sqlstate = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        if (PQstatus(conn) == CONNECTION_BAD || !primary) {
                /* No server message: the connection broke, or libpq refused
                 * the call itself (out of memory, wrong parameter count). */
                const char *m = PQerrorMessage(conn);
                if (r && (!m || !*m))
                        m = PQresultErrorMessage(r);
                tb_store_oneline(m, msg, sizeof(msg));
                if (PQstatus(conn) == CONNECTION_BAD)
                        return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                         "%s: lost the connection to PostgreSQL: %s%s%s%s", what,
                                         *msg ? msg : "no reason given",
                                         sqlstate ? " [SQLSTATE " : "", sqlstate ? sqlstate : "",
                                         sqlstate ? "]" : "");
                return tb_seterr(errstr, errstr_size, TB_ERR_PG, "%s: %s", what,
                                 *msg ? msg : "libpq failed without a message (out of memory?)");
        }

        tb_store_oneline(primary, msg, sizeof(msg));
        const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
        const char *hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
        const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
        if (detail || hint) {
                char d[480], h[480];
                tb_store_oneline(detail, d, sizeof(d));
                tb_store_oneline(hint, h, sizeof(h));
                tb_snprintf(extra, sizeof(extra), " (%s%s%s)", d,
                            !*h ? "" : *d ? "; hint: " : "hint: ", h);
        }
        if (sql && pos)
                tb_snprintf(where, sizeof(where), " at line %d",
                            tb_store_line_of(sql, strtol(pos, NULL, 10)));
        return tb_seterr(errstr, errstr_size, tb_store_sqlstate_err(sqlstate),
                         "%s%s: %s%s [SQLSTATE %s]", what, where, msg, extra,
                         sqlstate ? sqlstate : "?????");
}

void tb_store_array_add(tb_buf_t *b, const char *s) {
        tb_buf_append(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        tb_buf_append(b, "\\", 1);
                tb_buf_append(b, s, 1);
        }
        tb_buf_append(b, "\"", 1);
}

/* ---- statements built at run time ------------------------------------------ */

void tb_store_union_per_element(tb_buf_t *sql, const char *branch, const char *column, int param,
                                size_t n, const char *order) {
        for (size_t k = 1; k <= n; k++)
                tb_buf_printf(sql,
                              "%s(%sAND %s = ($%d::text[])[%zu] "
                              "AND ($%d::text[])[%zu] <> ALL (($%d::text[])[1:%zu]) %s) ",
                              k > 1 ? "UNION ALL " : "", branch, column, param, k, param, k,
                              param, k - 1, order);
}

tb_err_t tb_store_exec_built(PGconn *conn, const char *what, tb_buf_t *sql, int nparams,
                             const char *const *params, PGresult **res, char *errstr,
                             size_t errstr_size) {
        tb_err_t err = sql->data ? tb_store_exec(conn, what, sql->data, nparams, params, res,
                                                 errstr, errstr_size)
                                 : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                             "%s: out of memory", what);
        tb_buf_free(sql);
        return err;
}

/* ---- COPY ----------------------------------------------------------------- */

void tb_store_copy_field(tb_buf_t *b, const char *s, bool last) {
        if (!s) {
                tb_buf_append(b, "\\N", 2);
        } else {
                const char *run = s;
                for (; *s; s++) {
                        const char *esc = *s == '\\'   ? "\\\\"
                                          : *s == '\t' ? "\\t"
                                          : *s == '\n' ? "\\n"
                                          : *s == '\r' ? "\\r"
                                                       : NULL;
                        if (!esc)
                                continue;
                        tb_buf_append(b, run, (size_t)(s - run));
                        tb_buf_append(b, esc, 2);
                        run = s + 1;
                }
                tb_buf_append(b, run, (size_t)(s - run));
        }
        tb_buf_append(b, last ? "\n" : "\t", 1);
}

tb_err_t tb_store_copy_in(PGconn *conn, const char *what, const char *sql, const char *data,
                          size_t len, char *errstr, size_t errstr_size) {
        PGresult *r = PQexec(conn, sql);
        if (PQresultStatus(r) != PGRES_COPY_IN) {
                tb_err_t err = tb_store_result_err(conn, r, what, NULL, errstr, errstr_size);
                PQclear(r);
                return err ? err
                           : tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                       "%s: the statement is not a COPY FROM STDIN", what);
        }
        PQclear(r);
        /* in slices: libpq buffers what it cannot send at once */
        const size_t slice = 1 << 20;
        bool sent = true;
        for (size_t off = 0; sent && off < len; off += slice)
                sent = PQputCopyData(conn, data + off,
                                     (int)(len - off < slice ? len - off : slice)) == 1;
        if (PQputCopyEnd(conn, sent ? NULL : "taskbus: could not send the rows") != 1)
                return tb_store_result_err(conn, NULL, what, NULL, errstr, errstr_size);
        tb_err_t err = TB_OK;
        while ((r = PQgetResult(conn))) {
                tb_err_t e = tb_store_result_err(conn, r, what, NULL, errstr, errstr_size);
                if (!err)
                        err = e;
                PQclear(r);
        }
        if (!err && !sent)
                err = tb_store_result_err(conn, NULL, what, NULL, errstr, errstr_size);
        return err;
}

/* ---- pipelines ------------------------------------------------------------ */

/* Statements queued in this thread's pipeline since its last sync. */
static __thread int tb_store_pipe_queued;

/* Sync the pipeline and read every result up to the sync; the first failure
 * is returned (the statements after it were skipped by the server). */
static tb_err_t tb_store_pipeline_sync(PGconn *conn, char *errstr, size_t errstr_size) {
        tb_err_t err = TB_OK;
        tb_store_pipe_queued = 0;
        if (!PQpipelineSync(conn))
                return tb_store_result_err(conn, NULL, "pipeline sync", NULL, errstr,
                                           errstr_size);
        for (;;) {
                PGresult *r = PQgetResult(conn);
                if (!r) {
                        /* between two statements' results; a broken connection
                         * never delivers the sync */
                        if (PQstatus(conn) != CONNECTION_OK) {
                                if (!err)
                                        err = tb_store_result_err(conn, NULL, "pipeline",
                                                                  NULL, errstr, errstr_size);
                                break;
                        }
                        continue;
                }
                ExecStatusType st = PQresultStatus(r);
                if (st == PGRES_PIPELINE_SYNC) {
                        PQclear(r);
                        break;
                }
                if (st != PGRES_PIPELINE_ABORTED && !err)
                        err = tb_store_result_err(conn, r, "pipelined statement", NULL, errstr,
                                                  errstr_size);
                PQclear(r);
        }
        if (!err)
                tb_store_last_state[0] = '\0';
        return err;
}

tb_err_t tb_store_pipeline_begin(PGconn *conn, char *errstr, size_t errstr_size) {
        tb_store_pipe_queued = 0;
        if (!PQenterPipelineMode(conn))
                return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                 "pipeline: cannot enter pipeline mode (a query is pending?)");
        return TB_OK;
}

tb_err_t tb_store_pipeline_end(PGconn *conn, char *errstr, size_t errstr_size) {
        if (PQpipelineStatus(conn) == PQ_PIPELINE_OFF)
                return TB_OK;
        char lost[8];
        tb_err_t err = tb_store_pipeline_sync(conn, errstr, errstr_size);
        /* keep the failure's SQLSTATE for the caller's classification */
        tb_snprintf(lost, sizeof(lost), "%s", tb_store_last_state);
        if (!PQexitPipelineMode(conn) && !err)
                err = tb_seterr(errstr, errstr_size, TB_ERR_PG, "pipeline: cannot leave "
                                "pipeline mode: %s", PQerrorMessage(conn));
        tb_snprintf(tb_store_last_state, sizeof(tb_store_last_state), "%s", lost);
        return err;
}

tb_err_t tb_store_exec(PGconn *conn, const char *what, const char *sql, int nparams,
                       const char *const *params, PGresult **res, char *errstr,
                       size_t errstr_size) {
        if (res)
                *res = NULL;
        if (!conn || !sql || nparams < 0 || (nparams > 0 && !params))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "%s: tb_store_exec called without a connection, statement "
                                 "or parameters", what ? what : "postgres");
        if (PQpipelineStatus(conn) != PQ_PIPELINE_OFF) {
                if (!res) {
                        /* queued: its outcome is known at the next sync */
                        if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
                                return tb_store_result_err(conn, NULL, what, NULL, errstr,
                                                           errstr_size);
                        if (++tb_store_pipe_queued >= TB_STORE_PIPELINE_SYNC_EVERY)
                                return tb_store_pipeline_sync(conn, errstr, errstr_size);
                        return TB_OK;
                }
                /* a result is needed now: what is queued goes first, then
                 * this one alone, then the pipeline goes on */
                tb_err_t err = tb_store_pipeline_end(conn, errstr, errstr_size);
                if (!err)
                        err = tb_store_exec(conn, what, sql, nparams, params, res, errstr,
                                            errstr_size);
                tb_err_t err2 = PQenterPipelineMode(conn)
                                        ? TB_OK
                                        : tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                                    "pipeline: cannot enter pipeline mode");
                if (!err && err2 && res) {
                        PQclear(*res);
                        *res = NULL;
                }
                return err ? err : err2;
        }
        PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
        tb_err_t err = tb_store_result_err(conn, r, what, NULL, errstr, errstr_size);
        if (err || !res)
                PQclear(r);
        else
                *res = r;
        return err;
}

tb_err_t tb_store_begin(PGconn *conn, char *errstr, size_t errstr_size) {
        return tb_store_exec(conn, "begin transaction", "BEGIN", 0, NULL, NULL, errstr,
                             errstr_size);
}

tb_err_t tb_store_commit(PGconn *conn, char *errstr, size_t errstr_size) {
        PGresult *r = NULL;
        tb_err_t err = tb_store_exec(conn, "commit", "COMMIT", 0, NULL, &r, errstr,
                                     errstr_size);
        /* COMMIT of a failed transaction "succeeds" with the tag ROLLBACK. */
        if (!err && !strcmp(PQcmdStatus(r), "ROLLBACK"))
                err = tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                "commit: the transaction had already failed and was rolled "
                                "back; nothing was written");
        PQclear(r);
        return err;
}

void tb_store_rollback(PGconn *conn) {
        if (conn && PQstatus(conn) == CONNECTION_OK &&
            PQpipelineStatus(conn) != PQ_PIPELINE_OFF) {
                char ignored[256];
                (void)tb_store_pipeline_end(conn, ignored, sizeof(ignored));
        }
        if (!conn || PQstatus(conn) != CONNECTION_OK ||
            PQtransactionStatus(conn) == PQTRANS_IDLE)
                return;
        PQclear(PQexec(conn, "ROLLBACK"));
}

/* ---- results ------------------------------------------------------------- */

json_t *tb_store_json_ms(const PGresult *r, int row, int col) {
        if (PQgetisnull(r, row, col))
                return json_null();
        return json_integer((json_int_t)strtoll(PQgetvalue(r, row, col), NULL, 10));
}

tb_err_t tb_store_query_json(PGconn *conn, const char *what, const char *sql, int nparams,
                             const char *const *params, json_t *(*row)(const PGresult *, int),
                             json_t **out, char *errstr, size_t errstr_size) {
        PGresult *res = NULL;
        tb_err_t err;
        *out = NULL;
        if ((err = tb_store_exec(conn, what, sql, nparams, params, &res, errstr, errstr_size)))
                return err;
        json_t *rows = json_array();
        for (int i = 0; rows && i < PQntuples(res); i++)
                if (json_array_append_new(rows, row(res, i))) {
                        json_decref(rows);
                        rows = NULL;
                }
        PQclear(res);
        if (!rows)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "%s: out of memory", what);
        *out = rows;
        return TB_OK;
}
