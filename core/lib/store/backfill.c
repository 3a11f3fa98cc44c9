/**
 * @file store/backfill.c
 * @brief A backfill's reads of runs and run_claims (store/backfill.h).
 */
#include "store/backfill.h"

#include "store/store.h"

#include <stdlib.h>

#define TB_STORE_BF_CLAIM_OPEN                                                                \
        "EXISTS (SELECT 1 FROM run_claims c WHERE c.run_id = r.run_id AND c.state <> 'done')"

tb_err_t tb_store_backfill_runs(PGconn *conn, const char *task_id, const char *run_ids,
                                PGresult **res, char *errstr, size_t errstr_size) {
        const char *p[] = {task_id, run_ids};
        return tb_store_exec(conn, "backfill: runs of the range",
                             "SELECT r.run_id, r.status, r.trigger, "
                             "taskbus_run_status_rank(r.status) = 2, " TB_STORE_BF_CLAIM_OPEN " "
                             "FROM runs r WHERE r.run_id = ANY($2::text[]) AND r.task_id = $1",
                             2, p, res, errstr, errstr_size);
}

tb_err_t tb_store_backfill_in_flight(PGconn *conn, const char *task_id, int64_t *n,
                                     char *errstr, size_t errstr_size) {
        const char *p[] = {task_id};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "backfill: runs in flight",
                                   "SELECT count(*) FROM runs r WHERE r.task_id = $1 AND "
                                   "r.trigger = 'backfill' AND "
                                   "(taskbus_run_status_rank(r.status) < 2 OR "
                                   TB_STORE_BF_CLAIM_OPEN ")",
                                   1, p, &r, errstr, errstr_size);
        if (e)
                return e;
        *n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        return TB_OK;
}
