/**
 * @file identity/identity.h
 * @brief The identity subsystem: users, security groups, membership and API
 *        tokens (PostgreSQL); the authentication of bearer tokens shared by
 *        the REST API and the commands role, with its cache; the audited admin
 *        operations behind `taskbus admin user|token|group`, and the
 *        admin_audit log every admin action of the CLI writes to.
 *
 * A token is 32 random bytes, shown once as "tbk_" + 64 hex digits and
 * stored only as its SHA-256. Its public id ("tok_" + 12 hex digits of the
 * hash) names it for listing and revocation.
 *
 * Files: auth.c (principals, authentication, the token format), cache.c
 * (the authentication cache), admin.c (the admin operations and the audit
 * log). The statements on the tables are the store's: store/identity.h
 * (users, groups, membership, tokens) and store/audit.h (admin_audit). The
 * signing of Kafka commands and the internal key are signing.c
 * (identity/signing.h; the commands role checks signatures, not tokens). The
 * per-user rate limiter is a subsystem of its own: identity/ratelimit.h.
 */
#ifndef TB_IDENTITY_H
#define TB_IDENTITY_H

#include "tb.h"
#include "store/store.h"
#include "store/identity.h"

#include <jansson.h>

/** Longest user, group or security-group name (bytes). */
#define TB_IDENTITY_NAME_MAX 128

/** An authenticated caller. */
typedef struct tb_principal {
        char user_id[TB_IDENTITY_NAME_MAX + 1];
        char token_id[32];
        char **groups;        /**< sorted */
        size_t group_cnt;
} tb_principal_t;

/**
 * Authenticate "Bearer <token>" or a bare token. Results are cached for up to
 * \p cache_ms (0: no cache) so the hot path does not hit PostgreSQL on every
 * request; revocation and membership changes take effect within that time.
 * @returns TB_OK with *\p out (caller frees with tb_principal_free()),
 *          TB_ERR_UNAUTHENTICATED (missing, malformed, unknown, revoked token or
 *          disabled user: errstr says which, without revealing secrets), or
 *          TB_ERR_PG. @locality any thread.
 */
tb_err_t tb_identity_authenticate(tb_store_t *store, const char *authorization,
                                  int64_t cache_ms, tb_principal_t **out, char *errstr,
                                  size_t errstr_size);

/**
 * tb_identity_authenticate() of the token whose SHA-256 is \p hash (the key
 * api_tokens is looked up by): the same checks, messages and cache. The web
 * console's sessions (api/session.c) authenticate through it with the hash of
 * the token they were opened with, so a session is refused whenever its
 * token would be.
 * @locality any thread.
 */
tb_err_t tb_identity_authenticate_hash(tb_store_t *store, const unsigned char hash[32],
                                       int64_t cache_ms, tb_principal_t **out, char *errstr,
                                       size_t errstr_size);

/**
 * Drop every cached authentication result (all stores). Later calls go to
 * PostgreSQL again. Frees the cache's memory, so call it at shutdown too.
 * @locality any thread.
 */
void tb_identity_cache_clear(void);

/** @returns true if \p name is a valid user or group name: 1 to
 *  TB_IDENTITY_NAME_MAX characters from [A-Za-z0-9._@-]. */
bool tb_identity_name_valid(const char *name);

/**
 * Validate a user or group name; \p field names it in the message
 * ("user name 'a b' is invalid: use 1 to 128 characters from [A-Za-z0-9._@-]").
 * @returns TB_OK or TB_ERR_INVALID.
 */
tb_err_t tb_identity_name_check(const char *field, const char *name, char *errstr,
                                size_t errstr_size);

/** @returns true if \p p is a member of \p group. */
bool tb_principal_in_group(const tb_principal_t *p, const char *group);
/** Deep copy (caller frees). */
tb_principal_t *tb_principal_dup(const tb_principal_t *p);
void tb_principal_free(tb_principal_t *p);

/* ---- admin (CLI, directly on the database; each action recorded in
 *      admin_audit with the actor, what and when) ---------------------------
 *
 * Each function runs its own transaction on \p conn (which must be idle):
 * the change and its admin_audit row (actor, action such as "user.create",
 * target, details as JSON) commit together or not at all. Names are checked
 * with tb_identity_name_check() (TB_ERR_INVALID). Errors: TB_ERR_NOT_FOUND
 * (no such user / token / membership, with the command that fixes it),
 * TB_ERR_CONFLICT (already exists / already revoked / already a member),
 * TB_ERR_PG. Tokens are never stored or logged: only their SHA-256. */

/**
 * @brief Write one row of the admin log (table admin_audit): who did what,
 *        to what, when.
 *
 * Every admin action writes its row with this function, so that the log has
 * one format whatever command wrote it. It runs on \p conn as it is: inside
 * the caller's transaction, the change and its row commit together (the
 * functions below do that); outside one, the row commits on its own (an
 * action whose effect is not in this database, such as a region failover).
 * @param conn     a connection to the region's database.
 * @param actor    who acts, e.g. "admin:alice@host".
 * @param action   "<object>.<verb>", e.g. "user.create", "region.failover".
 * @param target   what it acted on (a user, a group, a token id, a region).
 * @param details  a JSON object with what else the row keeps, never a
 *                 secret; consumed (freed) in every case, so a json_pack()
 *                 result can be passed directly: NULL, the result of a failed
 *                 json_pack(), is TB_ERR_NOMEM.
 * @returns TB_OK, TB_ERR_NOMEM or TB_ERR_PG.
 * @locality the thread that holds \p conn.
 */
tb_err_t tb_identity_audit(PGconn *conn, const char *actor, const char *action,
                           const char *target, json_t *details, char *errstr,
                           size_t errstr_size);

/** Create user \p user_id in \p groups (created when missing; duplicates
 *  ignored; zero groups allowed) and a first token. \p token_out receives the
 *  token (shown once), \p token_id_out its id. TB_ERR_CONFLICT if the user
 *  exists. Audit action "user.create". */
tb_err_t tb_identity_user_create(PGconn *conn, const char *actor, const char *user_id,
                                 const char *const *groups, size_t group_cnt,
                                 char token_out[72], char token_id_out[32], char *errstr,
                                 size_t errstr_size);
/** Disable (\p disabled true) or enable a user: a disabled user's tokens stop
 *  authenticating (within the cache time). Setting the current state again
 *  succeeds and is audited with "changed": false. Audit action
 *  "user.disable" / "user.enable". */
tb_err_t tb_identity_user_disable(PGconn *conn, const char *actor, const char *user_id,
                                  bool disabled, char *errstr, size_t errstr_size);
/** Create another token for an existing user (TB_ERR_NOT_FOUND names the
 *  command that creates the user). Audit action "token.create". */
tb_err_t tb_identity_token_create(PGconn *conn, const char *actor, const char *user_id,
                                  char token_out[72], char token_id_out[32], char *errstr,
                                  size_t errstr_size);
/** tb_identity_token_create() with an expiry: after \p expires_at_ms (ms
 *  since the epoch; 0 = never) the token authenticates nowhere. Audit action
 *  "token.create" with "expires_at_ms" in its details. */
tb_err_t tb_identity_token_create_expiring(PGconn *conn, const char *actor,
                                           const char *user_id, int64_t expires_at_ms,
                                           char token_out[72], char token_id_out[32],
                                           char *errstr, size_t errstr_size);
/** Revoke one token by id ("tok_..."). TB_ERR_CONFLICT if already revoked;
 *  given the secret token instead of its id, refuses without echoing it.
 *  Audit action "token.revoke". */
tb_err_t tb_identity_token_revoke(PGconn *conn, const char *actor, const char *token_id,
                                  char *errstr, size_t errstr_size);
/** Add an existing user to \p group (created when missing). TB_ERR_CONFLICT
 *  if already a member. Audit action "group.add-member". */
tb_err_t tb_identity_group_add_member(PGconn *conn, const char *actor, const char *group,
                                      const char *user_id, char *errstr, size_t errstr_size);
/** Remove a membership (the group itself stays: tasks may belong to it).
 *  TB_ERR_NOT_FOUND if not a member. Audit action "group.remove-member". */
tb_err_t tb_identity_group_remove_member(PGconn *conn, const char *actor, const char *group,
                                         const char *user_id, char *errstr, size_t errstr_size);

/* ---- group quotas (quota.c; admin.c for the audited change) ----------------
 *
 * Quotas of a security group (schemas/sql/0008_group_quotas.sql): max_tasks
 * (live tasks; the commands role refuses a create beyond it), max_running
 * (runs running at once over every executor; beyond it runs wait in the
 * group's FIFO queue), run_now_rate (RUN_NOW commands per second for the
 * whole group). Every quota defaults to unlimited. */

/** Quota cache time of the roles: a change takes effect within it. */
#define TB_IDENTITY_QUOTA_CACHE_MS 1000

/**
 * @brief The quotas of \p group, cached for \p cache_ms (0: read now).
 * An unknown group has no quotas (all TB_STORE_QUOTA_UNLIMITED).
 * @returns TB_OK, TB_ERR_TIMEOUT (no connection within 2 s) or TB_ERR_PG.
 * @locality any thread
 */
tb_err_t tb_identity_quota_get(tb_store_t *store, const char *group, int64_t cache_ms,
                               tb_store_group_quota_t *q, char *errstr, size_t errstr_size);
/** Forget the cached quotas (tests, shutdown). @locality any thread */
void tb_identity_quota_cache_clear(void);
/**
 * @brief Parse a rate: a number per second ("5", "0.5"), or per unit
 *        ("10/min", "100/h", "2/s"), or "unlimited" (TB_STORE_QUOTA_UNLIMITED).
 * @returns TB_OK with *\p per_s, or TB_ERR_INVALID naming --run-now-rate.
 */
tb_err_t tb_identity_quota_rate_parse(const char *text, double *per_s, char *errstr,
                                      size_t errstr_size);
/**
 * @brief Change the quotas of an existing group (fields of \p set: a value,
 *        TB_STORE_QUOTA_UNLIMITED or TB_STORE_QUOTA_KEEP); *\p now receives
 *        them after the change. TB_ERR_NOT_FOUND names `taskbus admin group
 *        list`; TB_ERR_INVALID for a negative count. Audit action
 *        "group.set-quota" with the quotas before and after.
 */
tb_err_t tb_identity_group_quota_set(PGconn *conn, const char *actor, const char *group,
                                     const tb_store_group_quota_t *set,
                                     tb_store_group_quota_t *now, char *errstr,
                                     size_t errstr_size);

#endif
