/**
 * @file store/identity.h
 * @brief Owner of the identity tables (identity.c): users, security_groups,
 *        group_members and api_tokens. Every statement on them is here; what
 *        they mean (token format, hashing, caching, the audited admin
 *        operations, their messages) is identity/identity.h's.
 *
 * The functions run on \p conn as it is: inside the caller's transaction
 * (the admin operations hold one per action, with its audit row) or on
 * their own. Each reports a failure as "WHAT: server message" (tb_store_exec()),
 * WHAT naming the statement ("read user", "insert token"...).
 * @locality the thread that holds \p conn.
 */
#ifndef TB_STORE_IDENTITY_H
#define TB_STORE_IDENTITY_H

#include "tb.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

/** Bytes of a token hash (SHA-256), the key of api_tokens.token_hash. */
#define TB_STORE_IDENTITY_HASH_LEN 32

/** The row lock a read takes, held until the caller's transaction ends. */
typedef enum tb_store_identity_lock {
        TB_STORE_IDENTITY_NO_LOCK,
        /** FOR SHARE: the row cannot be deleted or changed meanwhile. */
        TB_STORE_IDENTITY_FOR_SHARE,
        /** FOR UPDATE: as FOR SHARE, and other lockers wait (read, then write). */
        TB_STORE_IDENTITY_FOR_UPDATE,
} tb_store_identity_lock_t;

/* ---- users --------------------------------------------------------------- */

/** Insert user \p user_id unless it exists; *\p created says whether it was new. */
tb_err_t tb_store_identity_user_insert(PGconn *conn, const char *user_id, bool *created,
                                       char *errstr, size_t errstr_size);
/**
 * Read user \p user_id, taking \p lock on its row: *\p exists, and
 * *\p disabled (may be NULL; false when the user does not exist).
 */
tb_err_t tb_store_identity_user_get(PGconn *conn, const char *user_id,
                                    tb_store_identity_lock_t lock, bool *exists, bool *disabled,
                                    char *errstr, size_t errstr_size);
/** Set users.disabled of \p user_id (no row: nothing happens). */
tb_err_t tb_store_identity_user_set_disabled(PGconn *conn, const char *user_id, bool disabled,
                                             char *errstr, size_t errstr_size);
/**
 * Every user, by id in "C" (byte) order, into *\p out (caller owns the
 * JSON array): {"id", "disabled": bool, "created_at": epoch ms, "groups":
 * its groups comma-separated in byte order, "" for none}.
 */
tb_err_t tb_store_identity_user_list(PGconn *conn, json_t **out, char *errstr,
                                     size_t errstr_size);

/* ---- security groups and membership ---------------------------------------- */

/** Insert security group \p group unless it exists; *\p created says whether it was new. */
tb_err_t tb_store_identity_group_insert(PGconn *conn, const char *group, bool *created,
                                        char *errstr, size_t errstr_size);
/** *\p exists: whether security group \p group exists. */
tb_err_t tb_store_identity_group_exists(PGconn *conn, const char *group, bool *exists,
                                        char *errstr, size_t errstr_size);
/**
 * Every group, by name in "C" order, into *\p out (caller owns the JSON
 * array): {"name", "members": count, "users": its members comma-separated in
 * byte order, "" for none}.
 */
tb_err_t tb_store_identity_group_list(PGconn *conn, json_t **out, char *errstr,
                                      size_t errstr_size);
/** Make \p user_id a member of \p group (both must exist) unless it is;
 *  *\p added (may be NULL) says whether it was not a member before. */
tb_err_t tb_store_identity_member_add(PGconn *conn, const char *group, const char *user_id,
                                      bool *added, char *errstr, size_t errstr_size);
/** Remove the membership of \p user_id in \p group; *\p removed says whether there was one. */
tb_err_t tb_store_identity_member_remove(PGconn *conn, const char *group, const char *user_id,
                                         bool *removed, char *errstr, size_t errstr_size);

/* ---- group quotas (schemas/sql/0008_group_quotas.sql) ----------------------- */

/** A quota value that is not limited (NULL in security_groups). */
#define TB_STORE_QUOTA_UNLIMITED (-1)
/** In tb_store_identity_quota_set(): leave this quota as it is. */
#define TB_STORE_QUOTA_KEEP (-2)

/** The quotas of one security group (`taskbus admin group set`). */
typedef struct tb_store_group_quota {
        int64_t max_tasks;    /**< live tasks; TB_STORE_QUOTA_UNLIMITED: no limit */
        int64_t max_running;  /**< runs running at once; TB_STORE_QUOTA_UNLIMITED: no limit */
        double run_now_rate;  /**< RUN_NOW per second; TB_STORE_QUOTA_UNLIMITED: no limit */
} tb_store_group_quota_t;

/**
 * Read the quotas of \p group: *\p found says whether the group exists; *\p q
 * is all TB_STORE_QUOTA_UNLIMITED when it does not.
 */
tb_err_t tb_store_identity_quota_get(PGconn *conn, const char *group, bool *found,
                                     tb_store_group_quota_t *q, char *errstr,
                                     size_t errstr_size);
/**
 * Change the quotas of \p group: each field of \p set is a new value,
 * TB_STORE_QUOTA_UNLIMITED (no limit) or TB_STORE_QUOTA_KEEP. *\p found says
 * whether the group exists (nothing changes when it does not); *\p now
 * receives the quotas after the change.
 */
tb_err_t tb_store_identity_quota_set(PGconn *conn, const char *group,
                                     const tb_store_group_quota_t *set, bool *found,
                                     tb_store_group_quota_t *now, char *errstr,
                                     size_t errstr_size);

/* ---- API tokens ---------------------------------------------------------- */

/**
 * Insert token \p token_id of \p user_id, stored as its \p hash only, unless
 * that id or hash is taken; *\p inserted says whether it was inserted (a
 * collision of the short public id inserts nothing: draw another).
 */
tb_err_t tb_store_identity_token_insert(PGconn *conn, const char *token_id, const char *user_id,
                                        const unsigned char hash[TB_STORE_IDENTITY_HASH_LEN],
                                        bool *inserted, char *errstr, size_t errstr_size);

/** A token row as its revocation reads it. */
typedef struct tb_store_identity_token_state {
        char *user_id;          /**< the owner; the caller free()s it */
        bool revoked;
        int64_t revoked_ms;     /**< epoch ms, when \c revoked */
} tb_store_identity_token_state_t;

/**
 * Read token \p token_id FOR UPDATE (the caller's transaction then revokes
 * it or not): *\p found, and if found *\p st (st->user_id is then the
 * caller's; NULL when not found or on error).
 */
tb_err_t tb_store_identity_token_lock(PGconn *conn, const char *token_id, bool *found,
                                      tb_store_identity_token_state_t *st, char *errstr,
                                      size_t errstr_size);
/** Set revoked_at = now() on token \p token_id. */
tb_err_t tb_store_identity_token_revoke(PGconn *conn, const char *token_id, char *errstr,
                                        size_t errstr_size);
/**
 * The tokens of \p user_id (NULL: of every user), by user in "C" order,
 * then creation, then id, into *\p out (caller owns the JSON array):
 * {"id", "user_id", "created_at": epoch ms, "revoked_at", "last_used_at" and
 * "expires_at": epoch ms or null}. Never the hash.
 */
tb_err_t tb_store_identity_token_list(PGconn *conn, const char *user_id, json_t **out,
                                      char *errstr, size_t errstr_size);

/** What authentication needs of the token with a given hash. */
typedef struct tb_store_identity_auth {
        char *token_id;      /**< api_tokens.id */
        char *user_id;
        bool revoked;
        bool user_disabled;
        bool expired;        /**< api_tokens.expires_at has passed */
        /** last_used_at is NULL or older than a minute: call
         *  tb_store_identity_token_touch() (at most once a minute). */
        bool touch_due;
        char **groups;       /**< the user's groups, "C" (strcmp) order */
        size_t group_cnt;
} tb_store_identity_auth_t;

/**
 * Find the token whose hash is \p hash (through the unique index on
 * token_hash), with its user's state and groups. *\p out: NULL when no token
 * has that hash, else owned by the caller (tb_store_identity_auth_free()).
 * Errors read "authenticate: ...".
 */
tb_err_t tb_store_identity_token_find(PGconn *conn,
                                      const unsigned char hash[TB_STORE_IDENTITY_HASH_LEN],
                                      tb_store_identity_auth_t **out, char *errstr,
                                      size_t errstr_size);
/** Free \p a and its strings; NULL allowed. */
void tb_store_identity_auth_free(tb_store_identity_auth_t *a);
/**
 * Set last_used_at = now() on token \p token_id unless it was set within the
 * last minute: racing authenticators (threads, processes) write it once.
 */
tb_err_t tb_store_identity_token_touch(PGconn *conn, const char *token_id, char *errstr,
                                       size_t errstr_size);

#endif /* TB_STORE_IDENTITY_H */
