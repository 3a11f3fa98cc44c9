/**
 * @file store/migrate.c
 * @brief The migration runner: the embedded migrations (schemas/sql/NNNN_name.sql)
 *        applied in order, once, each in its own transaction, recorded in
 *        schema_migrations (the one table this file owns).
 */
#include "store/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

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
