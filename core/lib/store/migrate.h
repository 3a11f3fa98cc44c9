/**
 * @file store/migrate.h
 * @brief The versioned migrations in schemas/sql/ (embedded at build time),
 *        applied in order, once, recorded in schema_migrations (migrate.c,
 *        the owner of that table).
 */
#ifndef TB_STORE_MIGRATE_H
#define TB_STORE_MIGRATE_H

#include "tb.h"
#include <libpq-fe.h>

/** One embedded migration. */
typedef struct tb_migration {
        int version;
        const char *name;
        const char *sql;
} tb_migration_t;

/** NULL-terminated (name == NULL) table, sorted by version, generated at build time. */
extern const tb_migration_t tb_migrations[];

/**
 * Apply every migration newer than the database's, each in its own
 * transaction, under an advisory lock (so concurrent callers serialize).
 * *\p applied (may be NULL) receives how many ran.
 */
tb_err_t tb_store_migrate(PGconn *conn, int *applied, char *errstr, size_t errstr_size);
/**
 * tb_store_migrate() with an explicit table \p migs (same shape as
 * tb_migrations[]: sorted by version, ended by name == NULL).
 *
 * Under pg_advisory_lock(TB_STORE_MIGRATION_LOCK) it creates
 * schema_migrations(version, name, checksum = SHA-256 hex of the SQL,
 * applied_at) if missing, then runs each migration newer than the highest
 * applied version in its own transaction together with its
 * schema_migrations row. \p conn must be idle (outside a transaction).
 * Errors:
 *  - TB_ERR_CONFLICT: an applied migration's checksum differs from \p migs
 *    ("migration 0001_init was changed after it was applied..."), or a
 *    migration older than the newest applied one was never applied.
 *  - TB_ERR_INVALID: \p migs is not sorted, or a migration ends its own
 *    transaction (COMMIT/ROLLBACK inside the file).
 *  - TB_ERR_PG: the server refused a statement; the message names the
 *    migration and the line of its file. Nothing of that migration is kept.
 * Migrations applied before the error stay applied (*\p applied counts them).
 */
tb_err_t tb_store_migrate_list(PGconn *conn, const tb_migration_t *migs, int *applied,
                               char *errstr, size_t errstr_size);

/** The advisory lock key held while migrating ("taskbus" in ASCII). */
#define TB_STORE_MIGRATION_LOCK 0x7461736b627573LL
/** The highest applied version (0 if none). */
tb_err_t tb_store_schema_version(PGconn *conn, int *version, char *errstr, size_t errstr_size);

#endif /* TB_STORE_MIGRATE_H */
