/**
 * @file store/store.c
 * @brief The PostgreSQL layer: a lazily filled connection pool, statement
 *        helpers whose errors carry the server's message and SQLSTATE, and
 *        the embedded migrations (schemas/sql/NNNN_name.sql).
 *
 * Pool: a fixed array of postgres.pool_size slots guarded by one mutex and
 * one condition variable. A slot is connected the first time it is needed;
 * network work (connect, reset, health check) happens outside the mutex on
 * a slot already marked busy, so one slow server never blocks the threads
 * that only want an idle connection.
 */
#include "store/store.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#define TB_STORE_SUBSYS "store"

typedef struct tb_store_slot {
        PGconn *conn;    /* NULL until first borrowed */
        bool busy;       /* borrowed, or being connected */
        bool reset;      /* release could not clean it: reconnect before reuse */
} tb_store_slot_t;

struct tb_store {
        pthread_mutex_t lock;
        pthread_cond_t freed;   /* a slot became free */
        char *url;
        int size;
        int waiting;
        tb_store_slot_t *slots;
};

/* ---- small helpers ------------------------------------------------------- */

/* libpq messages span lines and end in '\n'; errstr is one line. */
static void tb_store_oneline(const char *in, char *out, size_t out_size) {
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

static PGconn *tb_store_connect(const char *url) {
        /* Entries before "dbname" are defaults the URL may override; a
         * connect_timeout bounds how long an acquire can hang on a dead host. */
        const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                                    NULL};
        const char *const vals[] = {"10", "taskbus", url, NULL};
        PGconn *conn = PQconnectdbParams(keys, vals, 1);
        if (conn)
                PQsetNoticeReceiver(conn, tb_store_notice, NULL);
        return conn;
}

/* ---- pool -------------------------------------------------------------- */

tb_err_t tb_store_open(const tb_config_t *conf, tb_store_t **out, char *errstr,
                       size_t errstr_size) {
        tb_store_t *store = NULL;
        tb_err_t err;
        bool lock_init = false, cond_init = false;

        *out = NULL;
        if (!conf || !conf->pg_url || !*conf->pg_url)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "postgres.url: empty; set it in the config file or with "
                                 "TASKBUS_PG, e.g. \"postgresql://taskbus@127.0.0.1:5432/taskbus\"");
        if (conf->pg_pool_size < 1 || conf->pg_pool_size > 1000)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "postgres.pool_size: %lld is out of range; use 1 to 1000",
                                 (long long)conf->pg_pool_size);

        store = calloc(1, sizeof(*store));
        if (!store)
                goto nomem;
        store->size = (int)conf->pg_pool_size;
        store->url = strdup(conf->pg_url);
        store->slots = calloc((size_t)store->size, sizeof(*store->slots));
        if (!store->url || !store->slots)
                goto nomem;
        if (pthread_mutex_init(&store->lock, NULL))
                goto nomem;
        lock_init = true;
        pthread_condattr_t ca;
        if (pthread_condattr_init(&ca))
                goto nomem;
        /* Monotonic: a wall-clock step must not stretch an acquire timeout. */
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        int rc = pthread_cond_init(&store->freed, &ca);
        pthread_condattr_destroy(&ca);
        if (rc)
                goto nomem;
        cond_init = true;

        /* The first connection now, so a wrong URL or a down server is
         * reported at start-up rather than on the first request. */
        PGconn *conn = tb_store_connect(store->url);
        if (!conn)
                goto nomem;
        store->slots[0].conn = conn;
        if (PQstatus(conn) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline(PQerrorMessage(conn), msg, sizeof(msg));
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

static void tb_store_prepare(PGconn *conn, bool force_reset) {
        if (!force_reset)
                tb_store_probe(conn);
        if (!force_reset && PQstatus(conn) == CONNECTION_OK)
                return;
        if (!force_reset) {
                char msg[512];
                tb_store_oneline(PQerrorMessage(conn), msg, sizeof(msg));
                tb_warn(TB_STORE_SUBSYS, "connection to PostgreSQL lost (%s); reconnecting",
                        *msg ? msg : "no reason given");
        }
        PQreset(conn);
        if (PQstatus(conn) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline(PQerrorMessage(conn), msg, sizeof(msg));
                tb_warn(TB_STORE_SUBSYS, "reconnecting to PostgreSQL failed: %s", msg);
        }
}

PGconn *tb_store_acquire_timeout(tb_store_t *store, int timeout_ms) {
        struct timespec deadline;
        tb_store_slot_t *slot = NULL;

        if (!store)
                return NULL;
        if (timeout_ms >= 0) {
                clock_gettime(CLOCK_MONOTONIC, &deadline);
                deadline.tv_sec += timeout_ms / 1000;
                deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
                if (deadline.tv_nsec >= 1000000000L) {
                        deadline.tv_sec++;
                        deadline.tv_nsec -= 1000000000L;
                }
        }

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
                tb_store_prepare(conn, force_reset);
                return conn;
        }
        conn = tb_store_connect(store->url);
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
                tb_store_oneline(PQerrorMessage(conn), msg, sizeof(msg));
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
static tb_err_t tb_store_result_err(PGconn *conn, const PGresult *r, const char *what,
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

tb_err_t tb_store_exec(PGconn *conn, const char *what, const char *sql, int nparams,
                       const char *const *params, PGresult **res, char *errstr,
                       size_t errstr_size) {
        if (res)
                *res = NULL;
        if (!conn || !sql || nparams < 0 || (nparams > 0 && !params))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "%s: tb_store_exec called without a connection, statement "
                                 "or parameters", what ? what : "postgres");
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
        if (!conn || PQstatus(conn) != CONNECTION_OK ||
            PQtransactionStatus(conn) == PQTRANS_IDLE)
                return;
        PQclear(PQexec(conn, "ROLLBACK"));
}

/* ---- migrations ---------------------------------------------------------- */

static tb_err_t tb_store_sha256_hex(const char *text, char out[65]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) || len != 32)
                return TB_ERR_INTERNAL;
        for (unsigned int i = 0; i < len; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
        return TB_OK;
}

static const tb_migration_t *tb_store_find_migration(const tb_migration_t *migs, int version) {
        for (const tb_migration_t *m = migs; m->name; m++)
                if (m->version == version)
                        return m;
        return NULL;
}

/* Run one migration and its schema_migrations row in one transaction. */
static tb_err_t tb_store_apply(PGconn *conn, const tb_migration_t *m, char *errstr,
                               size_t errstr_size) {
        char what[160], sum[65], ver[16];
        tb_err_t err;
        PGresult *r = NULL;
        int64_t t0 = tb_mono_us();

        tb_snprintf(what, sizeof(what), "migration %04d_%s", m->version, m->name);
        if (tb_store_sha256_hex(m->sql, sum))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "%s: cannot compute its SHA-256", what);
        if ((err = tb_store_begin(conn, errstr, errstr_size)))
                return err;
        /* The simple query protocol: a file holds many statements. */
        r = PQexec(conn, m->sql);
        if ((err = tb_store_result_err(conn, r, what, m->sql, errstr, errstr_size)))
                goto fail;
        if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "%s: the file ends the transaction itself (COMMIT/ROLLBACK/"
                                "BEGIN); remove those statements: each migration already "
                                "runs in its own transaction", what);
                goto fail;
        }
        PQclear(r);
        r = NULL;
        tb_snprintf(ver, sizeof(ver), "%d", m->version);
        const char *params[] = {ver, m->name, sum};
        if ((err = tb_store_exec(conn, what,
                                 "INSERT INTO schema_migrations (version, name, checksum, "
                                 "applied_at) VALUES ($1, $2, $3, now())",
                                 3, params, NULL, errstr, errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        tb_info(TB_STORE_SUBSYS, "applied %s in %lld ms", what,
                (long long)((tb_mono_us() - t0) / 1000));
        return TB_OK;

fail:
        PQclear(r);
        tb_store_rollback(conn);
        return err;
}

static tb_err_t tb_store_check_list(const tb_migration_t *migs, char *errstr,
                                    size_t errstr_size) {
        int prev = 0;
        for (const tb_migration_t *m = migs; m->name; m++) {
                if (m->version <= prev || !m->sql)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "migration %04d_%s: versions must be positive, "
                                         "unique and in increasing order, with SQL text",
                                         m->version, m->name);
                prev = m->version;
        }
        return TB_OK;
}

/* Compare what the database applied with \p migs; sets *\p max_applied. */
static tb_err_t tb_store_verify_applied(PGconn *conn, const tb_migration_t *migs,
                                        int *max_applied, char *errstr,
                                        size_t errstr_size) {
        PGresult *r = NULL;
        tb_err_t err;

        *max_applied = 0;
        if ((err = tb_store_exec(conn, "migrate: read schema_migrations",
                                 "SELECT version, name, checksum FROM schema_migrations "
                                 "ORDER BY version",
                                 0, NULL, &r, errstr, errstr_size)))
                return err;
        for (int i = 0; i < PQntuples(r); i++) {
                int version = atoi(PQgetvalue(r, i, 0));
                const char *name = PQgetvalue(r, i, 1);
                const char *sum = PQgetvalue(r, i, 2);
                const tb_migration_t *m = tb_store_find_migration(migs, version);
                char want[65];
                *max_applied = version;
                if (!m) {
                        tb_warn(TB_STORE_SUBSYS,
                                "the database has migration %04d_%s, which this taskbus does "
                                "not know: it is older than the database schema; upgrade it",
                                version, name);
                        continue;
                }
                if (tb_store_sha256_hex(m->sql, want)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                        "migration %04d_%s: cannot compute its SHA-256",
                                        m->version, m->name);
                        goto out;
                }
                if (strcmp(sum, want)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                        "migration %04d_%s was changed after it was applied "
                                        "(the database recorded SHA-256 %.12s..., this build "
                                        "has %.12s...): never edit an applied migration; "
                                        "restore schemas/sql/%04d_%s.sql and put the change "
                                        "in a new NNNN_name.sql",
                                        m->version, m->name, sum, want, m->version, m->name);
                        goto out;
                }
        }
        /* A migration below the newest applied one that never ran (two
         * branches each added one) would be skipped for good: refuse. */
        for (const tb_migration_t *m = migs; m->name && m->version < *max_applied; m++) {
                bool found = false;
                for (int i = 0; i < PQntuples(r) && !found; i++)
                        found = atoi(PQgetvalue(r, i, 0)) == m->version;
                if (!found) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                        "migration %04d_%s was never applied, but the newer "
                                        "migration %04d was: renumber %04d_%s.sql above %04d "
                                        "so that it runs",
                                        m->version, m->name, *max_applied, m->version, m->name,
                                        *max_applied);
                        goto out;
                }
        }
out:
        PQclear(r);
        return err;
}

tb_err_t tb_store_migrate_list(PGconn *conn, const tb_migration_t *migs, int *applied,
                               char *errstr, size_t errstr_size) {
        tb_err_t err;
        PGresult *r = NULL;
        bool locked = false;
        int max_applied = 0, n = 0, last = 0;
        char key[24];
        const char *key_param[] = {key};

        if (applied)
                *applied = 0;
        tb_snprintf(key, sizeof(key), "%lld", (long long)TB_STORE_MIGRATION_LOCK);
        if ((err = tb_store_check_list(migs, errstr, errstr_size)))
                return err;
        if (!conn || PQstatus(conn) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline(conn ? PQerrorMessage(conn) : "no connection", msg, sizeof(msg));
                return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                 "migrate: not connected to PostgreSQL: %s", msg);
        }
        if (PQtransactionStatus(conn) != PQTRANS_IDLE)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "migrate: the connection is inside a transaction; migrations "
                                 "need an idle connection (each runs in its own transaction)");

        /* Session lock: concurrent migrators (several taskbusd starting at
         * once) queue here, and each then sees the others' work. */
        if ((err = tb_store_exec(conn, "migrate: take the migration lock",
                                 "SELECT pg_try_advisory_lock($1::bigint)", 1, key_param,
                                 &r, errstr, errstr_size)))
                goto fail;
        locked = !strcmp(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
        r = NULL;
        if (!locked) {
                tb_info(TB_STORE_SUBSYS, "another process is migrating the database; waiting "
                                         "for it to finish");
                if ((err = tb_store_exec(conn, "migrate: wait for the migration lock",
                                         "SELECT pg_advisory_lock($1::bigint)", 1,
                                         key_param, NULL, errstr, errstr_size)))
                        goto fail;
                locked = true;
        }

        if ((err = tb_store_exec(conn, "migrate: create schema_migrations",
                                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 " version int PRIMARY KEY,"
                                 " name text NOT NULL,"
                                 " checksum text NOT NULL,"
                                 " applied_at timestamptz NOT NULL DEFAULT now())",
                                 0, NULL, NULL, errstr, errstr_size)))
                goto fail;
        if ((err = tb_store_verify_applied(conn, migs, &max_applied, errstr, errstr_size)))
                goto fail;
        for (const tb_migration_t *m = migs; m->name; m++) {
                if (m->version <= max_applied)
                        continue;
                if ((err = tb_store_apply(conn, m, errstr, errstr_size)))
                        goto fail;
                n++;
                last = m->version;
                if (applied)
                        *applied = n;
        }
        if (n)
                tb_info(TB_STORE_SUBSYS, "database schema migrated to version %d (%d applied)",
                        last, n);
fail:
        PQclear(r);
        if (locked) {
                /* A broken connection has lost the lock with its session. */
                tb_store_rollback(conn);
                if (PQstatus(conn) == CONNECTION_OK)
                        PQclear(PQexecParams(conn, "SELECT pg_advisory_unlock($1::bigint)", 1,
                                             NULL, key_param, NULL, NULL, 0));
        }
        return err;
}

tb_err_t tb_store_migrate(PGconn *conn, int *applied, char *errstr, size_t errstr_size) {
        return tb_store_migrate_list(conn, tb_migrations, applied, errstr, errstr_size);
}

tb_err_t tb_store_schema_version(PGconn *conn, int *version, char *errstr,
                                 size_t errstr_size) {
        PGresult *r = NULL;
        tb_err_t err;

        *version = 0;
        if ((err = tb_store_exec(conn, "schema version: look for schema_migrations",
                                 "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL,
                                 &r, errstr, errstr_size)))
                return err;
        bool exists = !strcmp(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
        if (!exists)
                return TB_OK;
        if ((err = tb_store_exec(conn, "schema version: read schema_migrations",
                                 "SELECT coalesce(max(version), 0) FROM schema_migrations", 0,
                                 NULL, &r, errstr, errstr_size)))
                return err;
        *version = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        return TB_OK;
}
