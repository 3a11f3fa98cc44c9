/**
 * @file store/backfill.h
 * @brief The reads a backfill (roles/api/backfill.c) makes: which of a range's
 *        run ids the run history already holds, and how many backfill runs of
 *        a task are in flight. Reads only: runs rows are the projection's
 *        (store/runs.c), run_claims the executor's (store/claims.c).
 * @locality any thread; the caller's connection.
 */
#ifndef TB_STORE_BACKFILL_H
#define TB_STORE_BACKFILL_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdint.h>

/** Columns of tb_store_backfill_runs(). */
enum {
        TB_BF_RUN_ID = 0,
        TB_BF_STATUS,  /**< the runs row's status (lower case) */
        TB_BF_TRIGGER, /**< its trigger (lower case) */
        TB_BF_FINAL,   /**< "t" once the status is final */
        TB_BF_CLAIMED, /**< "t" while an executor's claim is not done */
};

/**
 * @brief The runs rows of task \p task_id among \p run_ids (a PostgreSQL
 *        text[] literal), TB_BF_* columns, in no order. One primary-key
 *        probe per id.
 */
tb_err_t tb_store_backfill_runs(PGconn *conn, const char *task_id, const char *run_ids,
                                PGresult **res, char *errstr, size_t errstr_size);

/**
 * @brief How many backfill runs of \p task_id are in flight: a runs row of
 *        trigger backfill whose status is not final, or whose executor claim
 *        is not done yet (its result can reach the projection before the
 *        claim is released, and the overlap policy counts claims).
 */
tb_err_t tb_store_backfill_in_flight(PGconn *conn, const char *task_id, int64_t *n,
                                     char *errstr, size_t errstr_size);

#endif /* TB_STORE_BACKFILL_H */
