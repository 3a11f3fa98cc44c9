/**
 * @file notifier/notifier.h
 * @brief What the files of the notifier role share: the role's state, the
 *        decision (decide.c: a RunResult and the task's rules into
 *        notifications) and the sender (send.c: delivering the pending ones
 *        to webhook and SMTP channels). docs/notifications.md.
 */
#ifndef TB_NOTIFIER_H
#define TB_NOTIFIER_H

#include "bus/pgsink.h"
#include "daemon.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct tb_notifier {
        tb_ctx_t *ctx;
        tb_pgsink_t *sink;
        size_t decided;          /**< notifications of the batch being applied */
        pthread_t sender;
        bool sender_started;
        atomic_bool stop;
        pthread_mutex_t mu;
        pthread_cond_t cv;       /**< wakes the sender: a batch decided notifications */
        bool wake;
} tb_notifier_t;

/**
 * Decide the notifications of RunResult \p rr (decoded) for its task's
 * rules and insert them, with the task's new outcome, on \p conn (the sink's
 * open transaction). *\p decided counts the inserted ones.
 * @returns TB_OK, or the store's error.
 * @locality the sink's thread.
 */
tb_err_t tb_notifier_decide(PGconn *conn, const json_t *rr, size_t *decided, char *errstr,
                            size_t errstr_size);

/** Start / stop the sender thread of \p nt. */
tb_err_t tb_notifier_sender_start(tb_notifier_t *nt, char *errstr, size_t errstr_size);
void tb_notifier_sender_stop(tb_notifier_t *nt);

/** Wake the sender (notifications were committed). @locality any thread. */
void tb_notifier_wake(tb_notifier_t *nt);

#endif
