/**
 * @file commands/engine.h
 * @brief The commands decision engine: what the commands role decides about
 *        a TaskCommand, without Kafka and without PostgreSQL.
 *
 * The engine owns:
 *  - the state map: for every task of the partitions the role holds, its
 *    current version, security group, deleted flag, normalized task,
 *    creation time and creator, and home-region epoch, as the last TaskEvent
 *    says (tb_cmd_engine_apply_event() feeds it while rebuilding); a deleted
 *    task stays until its owner evicts it (tb_cmd_engine_evict(), once the
 *    projection holds the deletion), so memory follows the live tasks;
 *  - the undo log: every state a decision replaced since the last
 *    tb_cmd_engine_commit(), so that the decisions of a batch whose
 *    transaction failed are taken back by tb_cmd_engine_rollback();
 *  - the per-user rate limit of commands (conf api_rate, api_burst);
 *  - the decision on one decoded TaskCommand, in this order: authentication
 *    (the record's signature headers, their freshness against
 *    commands.signature_max_age, the signature through the env, then the
 *    replay guard: a signature or (task, command id) already seen since the
 *    engine started is CONFLICT), rate limit, command type, task id, the record's
 *    partition (a task's state lives with the partition of its id), then
 *    visibility (a task deleted or of a security group the caller is not a
 *    member of is answered NOT_FOUND, exactly like a missing one), home
 *    region (only a task's home region writes it), expected version,
 *    validation with the one task validator (task/task.h; for a RUN_NOW,
 *    its params against the task's parameters, tb_task_params_resolve(),
 *    the values with the defaults filled going into the event's
 *    run_params; params on any other type are refused), group
 *    membership of the written task, then the group's quotas (max_tasks for
 *    a CREATE or an UPDATE that moves a task into the group, run_now_rate
 *    for a RUN_NOW: env group_quota); an accepted command yields its
 *    TaskEvent, Avro-encoded, and the new state;
 *  - the TaskReply answering a verdict (tb_cmd_engine_reply()).
 *
 * It does not own, and the role (commands/role.c, commands/rebuild.c) does:
 * reading task-commands and task-events, the transaction that writes the
 * event, the reply and the consumer offset together, rebalances, metrics,
 * and decoding the records. What the decision needs from outside comes
 * through tb_cmd_env_t: the authentication of a token (the role asks
 * identity/ on PostgreSQL, with a cache), the wall and monotonic clocks, and
 * event ids. The engine calls two pure functions of bus/ (the murmur2
 * partition of a key, the name of a topic) and no Kafka client.
 *
 * @locality not thread-safe: one thread drives an engine (the role's worker).
 */
#ifndef TB_CMD_ENGINE_H
#define TB_CMD_ENGINE_H

#include "tb.h"
#include "config/config.h"
#include "identity/identity.h"
#include "identity/signing.h"
#include <jansson.h>

/** The log subsystem of the commands role and its engine. */
#define TB_CMD_SUB "commands"

/** One task's current state, as the last event of task-events says. Owned by
 *  the engine; read-only outside it. */
typedef struct tb_cmd_task {
        struct tb_cmd_task *next; /* hash chain */
        /* the deleted entries, oldest first, for tb_cmd_engine_deleted() */
        struct tb_cmd_task *dprev, *dnext;
        char *id;
        int32_t partition;
        int64_t version;
        char *group;        /* security group of the last state */
        bool deleted;
        json_t *task;       /* normalized task; NULL once deleted */
        int64_t created_at;
        char *created_by;
        int64_t epoch;
        /* this state was read from task-events (rebuild, follower, or this
         * role's own event coming back through the follower) */
        bool logged;
} tb_cmd_task_t;

/** Most signatures and (task, command id) pairs the replay guard keeps
 *  (two per command); beyond it the oldest are forgotten. A record older than
 *  commands.signature_max_age is refused anyway, so the guard only has to
 *  cover that window. */
#define TB_CMD_SEEN_MAX 200000

/** What of a task-commands record proves who sent it (NULL: absent). */
typedef struct tb_cmd_cred {
        const void *authorization;  /**< the old bearer header: refused, with why */
        size_t authorization_len;
        const void *principal;      /**< tb-principal */
        size_t principal_len;
        const void *auth;           /**< tb-auth */
        size_t auth_len;
        const void *key;            /**< the record's key and value: what is signed */
        size_t key_len;
        const void *value;
        size_t value_len;
} tb_cmd_cred_t;

/** A security group's quotas as the engine applies them (`taskbus admin
 *  group set`); a negative value: unlimited. */
typedef struct tb_cmd_quota {
        int64_t max_tasks;     /**< live (not deleted) tasks of the group */
        double run_now_rate;   /**< RUN_NOW commands per second, whole group */
        /** Live tasks of the group in the task-events partitions this engine
         *  does not hold (another commands process's, read from the
         *  projection); 0 when the engine holds them all. */
        int64_t other_live;
} tb_cmd_quota_t;

/** What the engine needs from outside, provided by its owner. */
typedef struct tb_cmd_env {
        /** Check the signature of a record whose tb-auth header parsed and is
         *  fresh, and name its principal (tb_sign_verify()). @returns TB_OK
         *  with *\p who (the engine frees it with tb_principal_free()),
         *  TB_ERR_UNAUTHENTICATED with \p errstr saying why (sent to the
         *  caller), or any other error when authentication is unavailable. */
        tb_err_t (*authenticate)(void *opaque, const tb_sign_record_t *rec, tb_principal_t **who,
                                 char *errstr, size_t errstr_size);
        /** Wall clock, ms since the epoch: event and reply times, validation. */
        int64_t (*now_ms)(void *opaque);
        /** Monotonic clock, µs: the rate limiter. */
        int64_t (*mono_us)(void *opaque);
        /** A new event id (a UUID, NUL-terminated). */
        void (*new_id)(void *opaque, char id[37]);
        /** Optional (NULL: no quotas). The quotas of security group \p group
         *  (fills \p q; an unknown group has none). @returns TB_OK, or an
         *  error (\p errstr) when they cannot be read: the command is then
         *  rejected INTERNAL rather than let past its quota. */
        tb_err_t (*group_quota)(void *opaque, const char *group, tb_cmd_quota_t *q,
                                char *errstr, size_t errstr_size);
        /** Optional. Was task \p id ever written, though the engine holds no
         *  state for it? The engine forgets a deleted task once the projection
         *  holds its deletion (tb_cmd_engine_evict()), and a CREATE of that id
         *  must still be a CONFLICT. Asked only for a CREATE of an id the
         *  engine does not hold. NULL: never asked (an engine nothing is
         *  evicted from holds every deleted task itself). @returns TB_OK with
         *  *\p used and, when used, the security group it last had in
         *  \p group (only its members learn that it is deleted), or an error
         *  (the command is answered INTERNAL). */
        tb_err_t (*id_used)(void *opaque, const char *id, bool *used, char *group,
                            size_t group_size, char *errstr, size_t errstr_size);
        void *opaque;
} tb_cmd_env_t;

/** What was decided about one command. */
typedef struct tb_cmd_verdict {
        const char *reason;    /* NULL: accepted; else the TaskReply reason */
        char message[600];
        char field[128];       /* the field at fault ("" when none) */
        int64_t version;       /* accepted: the new version */
        tb_buf_t event;        /* accepted: the TaskEvent to write (Avro single-object),
                                * to the record's partition of task-events, keyed by
                                * the task id; empty when rejected */
} tb_cmd_verdict_t;

typedef struct tb_cmd_engine tb_cmd_engine_t;

/**
 * @brief A new engine with an empty state.
 * @param conf region, topic partitions and prefix, api_rate / api_burst,
 *             group policies, log retention and region APIs (not copied: it
 *             must outlive the engine).
 * @param env  copied; every function pointer is required.
 * @returns TB_OK with *\p out (caller frees with tb_cmd_engine_destroy()),
 *          TB_ERR_NOMEM, TB_ERR_INVALID (rate limit settings) or the error of
 *          loading the Avro schemas.
 */
tb_err_t tb_cmd_engine_new(const tb_config_t *conf, const tb_cmd_env_t *env,
                           tb_cmd_engine_t **out, char *errstr, size_t errstr_size);
/** Free the engine and its state; NULL allowed. */
void tb_cmd_engine_destroy(tb_cmd_engine_t *eng);

/** @returns the state of task \p id (deleted tasks included until they are
 *  evicted), or NULL. The pointer is valid until the next call that changes
 *  the state. */
const tb_cmd_task_t *tb_cmd_engine_get(const tb_cmd_engine_t *eng, const char *id);
/** @returns how many tasks the state holds (deleted ones not evicted yet included). */
size_t tb_cmd_engine_task_count(const tb_cmd_engine_t *eng);
/** @returns how many live (not deleted) tasks of security group \p group the
 *  state holds: the count the max_tasks quota is checked against. It is kept
 *  by the state map itself (every insert, removal and partition drop), so
 *  it follows the map whatever path changed it. */
int64_t tb_cmd_engine_live_count(const tb_cmd_engine_t *eng, const char *group);
/** @returns how many of them are deleted (not evicted yet). */
size_t tb_cmd_engine_deleted_count(const tb_cmd_engine_t *eng);

/**
 * @brief The deleted tasks the state holds, oldest first: up to \p max of
 *        them into \p out (borrowed: valid until the next call that changes
 *        the state). @returns how many.
 *
 * Memory is bounded by the live tasks: the owner asks the projection which
 * of these deletions it holds and evicts those (tb_cmd_engine_evict()); a
 * later CREATE of the id asks env.id_used, UPDATE and the others answer
 * NOT_FOUND as for any id the state does not hold.
 */
size_t tb_cmd_engine_deleted(const tb_cmd_engine_t *eng, const tb_cmd_task_t **out, size_t max);
/**
 * @brief Forget deleted task \p id if the state holds it deleted at
 *        \p version. Between batches only (no decision waiting for its
 *        commit: those may be rolled back). @returns true if it was evicted.
 */
bool tb_cmd_engine_evict(tb_cmd_engine_t *eng, const char *id, int64_t version);

/**
 * @brief Apply one decoded TaskEvent of partition \p partition (rebuild and
 *        follow paths). An event that is not newer, by (epoch, version),
 *        than what is held is ignored: the role's own events come back
 *        through the follower, and a failover's higher epoch wins. Not
 *        undoable: call between batches.
 */
void tb_cmd_engine_apply_event(tb_cmd_engine_t *eng, int32_t partition, const json_t *ev);
/**
 * @brief Put the state of a live task read from a snapshot of the projection
 *        (the tasks table at a known offset of task-events), before the
 *        events after that offset are applied: \p task is the normalized
 *        task as the projection stores it (owned by the engine from now on).
 *        The same rule as tb_cmd_engine_apply_event(): ignored unless newer.
 */
void tb_cmd_engine_load_task(tb_cmd_engine_t *eng, int32_t partition, const char *id,
                             int64_t version, int64_t epoch, json_t *task, int64_t created_at,
                             const char *created_by);
/** Forget every task of partition \p partition (revoked, or about to be rebuilt). */
void tb_cmd_engine_drop_partition(tb_cmd_engine_t *eng, int32_t partition);

/**
 * @brief Decide one command and, when it is accepted, apply its new state
 *        (the replaced state goes to the undo log).
 * @param command   the decoded TaskCommand (Avro JSON shape: type, task_id,
 *                  expected_version, task as a JSON string, command_id).
 * @param cred      the record's signature headers, key and value (NULL: none).
 * @param partition the task-commands partition the record came from.
 * @param v         filled (zero it first); release with tb_cmd_verdict_clear().
 *
 * A rejection is a successful decision: v->reason says which ("NOT_FOUND",
 * "CONFLICT", ...), v->field names the field at fault. The caller writes
 * v->event and the reply in the batch's transaction, then calls
 * tb_cmd_engine_commit() once it committed or tb_cmd_engine_rollback() when
 * it did not.
 */
void tb_cmd_engine_decide(tb_cmd_engine_t *eng, const json_t *command, const tb_cmd_cred_t *cred,
                          int32_t partition, tb_cmd_verdict_t *v);

/** The batch's transaction committed: forget the replaced states. */
void tb_cmd_engine_commit(tb_cmd_engine_t *eng);
/** The batch's transaction was aborted: put back every state replaced since
 *  the last commit, newest first. */
void tb_cmd_engine_rollback(tb_cmd_engine_t *eng);

/**
 * @brief The TaskReply for \p v, Avro-encoded into \p out (appended; caller
 *        frees with tb_buf_free()). replied_at is the env's wall clock.
 * @returns false (and logs why) when no reply can be sent: an id is not
 *          valid UTF-8, or the reply does not encode.
 */
bool tb_cmd_engine_reply(tb_cmd_engine_t *eng, const char *correlation_id,
                         const char *command_id, const char *task_id,
                         const tb_cmd_verdict_t *v, tb_buf_t *out);

/**
 * @brief Fill \p v as the INVALID_ARGUMENT answer to a record that did not
 *        decode as a TaskCommand, \p derr being the serde's error; its field
 *        is the one serde names ("task_id"), or "fingerprint".
 */
void tb_cmd_engine_undecodable(tb_cmd_verdict_t *v, const char *derr);

/** Fill \p v as a rejection for \p reason; \p field may be NULL. */
void tb_cmd_reject(tb_cmd_verdict_t *v, const char *reason, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/** Release what a verdict holds (its event) and zero it. */
void tb_cmd_verdict_clear(tb_cmd_verdict_t *v);

/** @returns the string member \p key of a decoded command or event, "" when
 *  absent or not a string. */
const char *tb_cmd_jstr(const json_t *o, const char *key);
/** @returns true if \p s is valid UTF-8 (so it can go into a reply). */
bool tb_cmd_utf8_ok(const char *s);

#endif /* TB_CMD_ENGINE_H */
