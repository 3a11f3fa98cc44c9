/**
 * @file store/notify.h
 * @brief Owner of the tables notify_state, notify_deliveries and
 *        notify_attempts (notify.c, schemas/sql/0016_notifications.sql):
 *        each task's last final outcome, the notifications the notifier
 *        decided, and every attempt to deliver them. What a notification
 *        means is the notifier role's (roles/notifier/), docs/notifications.md.
 *
 * The functions run on \p conn as it is (in the caller's transaction when
 * there is one) and report a failure as "WHAT: server message"
 * (tb_store_exec()).
 * @locality the thread that holds \p conn.
 */
#ifndef TB_STORE_NOTIFY_H
#define TB_STORE_NOTIFY_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/** A task's last final outcome (notify_state). */
typedef struct tb_store_notify_state {
        bool found;          /**< the task has one */
        char outcome[16];    /**< "succeeded" or "failed" */
        int64_t nominal_ms;  /**< of the run that set it */
        int attempt;
} tb_store_notify_state_t;

/** Read \p task_id's state (FOR UPDATE: in the caller's transaction). */
tb_err_t tb_store_notify_state_get(PGconn *conn, const char *task_id,
                                   tb_store_notify_state_t *out, char *errstr,
                                   size_t errstr_size);

/** Set \p task_id's outcome to \p outcome from run \p run_id, unless the
 *  stored one comes from a later (nominal_ms, attempt). */
tb_err_t tb_store_notify_state_set(PGconn *conn, const char *task_id, const char *outcome,
                                   const char *run_id, int64_t nominal_ms, int attempt,
                                   char *errstr, size_t errstr_size);

/** Forget \p task_id's state (the task was deleted). */
tb_err_t tb_store_notify_state_delete(PGconn *conn, const char *task_id, char *errstr,
                                      size_t errstr_size);

/** What a new notification holds. */
typedef struct tb_store_notify_new {
        const char *run_id;
        int rule_index;          /**< -1: a test */
        const char *event;
        const char *task_id;
        const char *security_group;
        const char *channel;
        const char *facts;       /**< JSON object text */
} tb_store_notify_new_t;

/** Insert a pending notification unless (run_id, rule_index, event) is there
 *  already; *\p id (when not NULL) is its id, 0 when it was there. */
tb_err_t tb_store_notify_insert(PGconn *conn, const tb_store_notify_new_t *n, int64_t *id,
                                char *errstr, size_t errstr_size);

/** Columns of tb_store_notify_claim(). */
enum {
        TB_STORE_NOTIFY_COL_ID = 0,
        TB_STORE_NOTIFY_COL_ATTEMPTS,  /**< counting the one claimed */
        TB_STORE_NOTIFY_COL_RUN,
        TB_STORE_NOTIFY_COL_EVENT,
        TB_STORE_NOTIFY_COL_CHANNEL,
        TB_STORE_NOTIFY_COL_FACTS,
        TB_STORE_NOTIFY_COL_AGE_MS,    /**< since the row was created */
};

/**
 * Claim at most \p limit pending notifications due now for one attempt each:
 * their attempt count is raised and their next attempt put \p lease_ms
 * ahead, so a notifier that dies mid-attempt leaves them to another after
 * that. Rows another notifier is claiming are skipped.
 * TB_STORE_NOTIFY_COL_* columns.
 */
tb_err_t tb_store_notify_claim(PGconn *conn, int limit, int64_t lease_ms, PGresult **res,
                               char *errstr, size_t errstr_size);

/** Put a claimed notification back, due in \p delay_ms, without counting the
 *  claim as an attempt (its run's output is not all copied yet). */
tb_err_t tb_store_notify_postpone(PGconn *conn, int64_t id, int64_t delay_ms, char *errstr,
                                  size_t errstr_size);

/**
 * Record attempt \p attempt of notification \p id (\p status_code 0: none;
 * \p error NULL: delivered) and its outcome: delivered, failed for good
 * (\p final), or pending again in \p retry_ms.
 */
tb_err_t tb_store_notify_record(PGconn *conn, int64_t id, int attempt, int status_code,
                                const char *error, int64_t duration_ms, bool final,
                                int64_t retry_ms, char *errstr, size_t errstr_size);

/**
 * The notifications of run \p run_id (or, with \p run_id NULL, the one whose
 * id is \p id) whose security group is in \p groups (a text[] literal; NULL:
 * any), as one JSON array text in column 0: each {id, run_id, task_id,
 * rule_index, event, channel, status, attempts, last_error, created_at,
 * finished_at, attempts_log: [{attempt, at, status_code, error,
 * duration_ms}]}.
 */
tb_err_t tb_store_notify_list(PGconn *conn, const char *run_id, int64_t id, const char *groups,
                              PGresult **res, char *errstr, size_t errstr_size);

/**
 * Insert a pending long_running notification (at most \p limit) for each
 * (run still running, long_running rule of its task) whose run started more
 * than the rule's after_ms ago and has none yet. Reads runs and tasks (the
 * projection's), writes only notify_deliveries. *\p inserted counts them.
 */
tb_err_t tb_store_notify_long_running(PGconn *conn, int limit, int64_t *inserted, char *errstr,
                                      size_t errstr_size);

/** Delete at most \p limit delivered or failed notifications (and their
 *  attempts) created more than \p keep_ms ago; *\p deleted counts them. */
tb_err_t tb_store_notify_purge(PGconn *conn, int64_t keep_ms, int limit, int64_t *deleted,
                               char *errstr, size_t errstr_size);

#endif /* TB_STORE_NOTIFY_H */
