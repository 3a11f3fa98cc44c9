/**
 * @file store/notify.c
 * @brief The statements on notify_state, notify_deliveries and
 *        notify_attempts (store/notify.h).
 */
#include "store/notify.h"
#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tb_err_t tb_store_notify_state_get(PGconn *conn, const char *task_id,
                                   tb_store_notify_state_t *out, char *errstr,
                                   size_t errstr_size) {
        const char *p[] = {task_id};
        PGresult *r = NULL;
        memset(out, 0, sizeof(*out));
        tb_err_t err = tb_store_exec(conn, "read notify_state",
                                     "SELECT outcome, nominal_ms, attempt FROM notify_state "
                                     "WHERE task_id = $1 FOR UPDATE",
                                     1, p, &r, errstr, errstr_size);
        if (err)
                return err;
        if (PQntuples(r) == 1) {
                out->found = true;
                tb_snprintf(out->outcome, sizeof(out->outcome), "%s", PQgetvalue(r, 0, 0));
                out->nominal_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                out->attempt = atoi(PQgetvalue(r, 0, 2));
        }
        PQclear(r);
        return TB_OK;
}

tb_err_t tb_store_notify_state_set(PGconn *conn, const char *task_id, const char *outcome,
                                   const char *run_id, int64_t nominal_ms, int attempt,
                                   char *errstr, size_t errstr_size) {
        char nom[32], att[16];
        snprintf(nom, sizeof(nom), "%" PRId64, nominal_ms);
        snprintf(att, sizeof(att), "%d", attempt);
        const char *p[] = {task_id, outcome, run_id, nom, att};
        return tb_store_exec(conn, "write notify_state",
                             "INSERT INTO notify_state (task_id, outcome, run_id, nominal_ms, "
                             "attempt) VALUES ($1, $2, $3, $4::bigint, $5::int) "
                             "ON CONFLICT (task_id) DO UPDATE SET outcome = EXCLUDED.outcome, "
                             "run_id = EXCLUDED.run_id, nominal_ms = EXCLUDED.nominal_ms, "
                             "attempt = EXCLUDED.attempt, updated_at = now() "
                             "WHERE (notify_state.nominal_ms, notify_state.attempt) <= "
                             "(EXCLUDED.nominal_ms, EXCLUDED.attempt)",
                             5, p, NULL, errstr, errstr_size);
}

tb_err_t tb_store_notify_state_delete(PGconn *conn, const char *task_id, char *errstr,
                                      size_t errstr_size) {
        const char *p[] = {task_id};
        return tb_store_exec(conn, "delete notify_state",
                             "DELETE FROM notify_state WHERE task_id = $1", 1, p, NULL, errstr,
                             errstr_size);
}

tb_err_t tb_store_notify_insert(PGconn *conn, const tb_store_notify_new_t *n, int64_t *id,
                                char *errstr, size_t errstr_size) {
        char rule[16];
        snprintf(rule, sizeof(rule), "%d", n->rule_index);
        const char *p[] = {n->run_id,         rule,       n->event, n->task_id,
                           n->security_group, n->channel, n->facts};
        PGresult *r = NULL;
        tb_err_t err = tb_store_exec(
                conn, "insert notify_deliveries",
                "INSERT INTO notify_deliveries (run_id, rule_index, event, task_id, "
                "security_group, channel, facts) VALUES ($1, $2::int, $3, $4, $5, $6, $7::jsonb) "
                "ON CONFLICT (run_id, rule_index, event) DO NOTHING RETURNING id",
                7, p, &r, errstr, errstr_size);
        if (err)
                return err;
        if (id)
                *id = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        PQclear(r);
        return TB_OK;
}

tb_err_t tb_store_notify_claim(PGconn *conn, int limit, int64_t lease_ms, PGresult **res,
                               char *errstr, size_t errstr_size) {
        char lim[16], lease[32];
        snprintf(lim, sizeof(lim), "%d", limit);
        snprintf(lease, sizeof(lease), "%" PRId64, lease_ms);
        const char *p[] = {lim, lease};
        return tb_store_exec(
                conn, "claim notify_deliveries",
                "UPDATE notify_deliveries d SET attempts = d.attempts + 1, "
                "next_attempt_at = now() + $2::bigint * interval '1 millisecond' "
                "FROM (SELECT id FROM notify_deliveries WHERE status = 'pending' AND "
                "next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1::int "
                "FOR UPDATE SKIP LOCKED) c WHERE d.id = c.id "
                "RETURNING d.id, d.attempts, d.run_id, d.event, d.channel, d.facts::text, "
                "(extract(epoch FROM now() - d.created_at) * 1000)::bigint",
                2, p, res, errstr, errstr_size);
}

tb_err_t tb_store_notify_postpone(PGconn *conn, int64_t id, int64_t delay_ms, char *errstr,
                                  size_t errstr_size) {
        char ids[32], delay[32];
        snprintf(ids, sizeof(ids), "%" PRId64, id);
        snprintf(delay, sizeof(delay), "%" PRId64, delay_ms);
        const char *p[] = {ids, delay};
        return tb_store_exec(conn, "postpone notify_deliveries",
                             "UPDATE notify_deliveries SET attempts = attempts - 1, "
                             "next_attempt_at = now() + $2::bigint * interval '1 millisecond' "
                             "WHERE id = $1::bigint AND status = 'pending'",
                             2, p, NULL, errstr, errstr_size);
}

tb_err_t tb_store_notify_record(PGconn *conn, int64_t id, int attempt, int status_code,
                                const char *error, int64_t duration_ms, bool final,
                                int64_t retry_ms, char *errstr, size_t errstr_size) {
        char ids[32], att[16], code[16], dur[32], retry[32];
        snprintf(ids, sizeof(ids), "%" PRId64, id);
        snprintf(att, sizeof(att), "%d", attempt);
        snprintf(code, sizeof(code), "%d", status_code);
        snprintf(dur, sizeof(dur), "%" PRId64, duration_ms);
        snprintf(retry, sizeof(retry), "%" PRId64, retry_ms);
        const char *status = !error ? "delivered" : final ? "failed" : "pending";
        const char *p[] = {ids, att, status_code ? code : NULL, error, dur, status, retry};
        return tb_store_exec(
                conn, "record notify_attempts",
                "WITH a AS (INSERT INTO notify_attempts (delivery_id, attempt, status_code, error, "
                "duration_ms) VALUES ($1::bigint, $2::int, $3::int, $4, $5::int) "
                "ON CONFLICT (delivery_id, attempt) DO NOTHING) "
                "UPDATE notify_deliveries SET status = $6, last_error = $4, "
                "next_attempt_at = now() + $7::bigint * interval '1 millisecond', "
                "finished_at = CASE WHEN $6 = 'pending' THEN NULL ELSE now() END "
                "WHERE id = $1::bigint",
                7, p, NULL, errstr, errstr_size);
}

tb_err_t tb_store_notify_list(PGconn *conn, const char *run_id, int64_t id, const char *groups,
                              PGresult **res, char *errstr, size_t errstr_size) {
        char ids[32];
        snprintf(ids, sizeof(ids), "%" PRId64, id);
        const char *p[] = {run_id, ids, groups};
        return tb_store_exec(
                conn, "read notify_deliveries",
                "SELECT COALESCE(json_agg(json_build_object("
                "'id', d.id, 'run_id', d.run_id, 'task_id', d.task_id, "
                "'rule_index', d.rule_index, 'event', d.event, 'channel', d.channel, "
                "'status', d.status, 'attempts', d.attempts, 'last_error', d.last_error, "
                "'created_at', to_char(d.created_at AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                "'finished_at', to_char(d.finished_at AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                "'attempts_log', (SELECT COALESCE(json_agg(json_build_object("
                "'attempt', a.attempt, 'at', to_char(a.at AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'status_code', a.status_code, "
                "'error', a.error, 'duration_ms', a.duration_ms) ORDER BY a.attempt), '[]') "
                "FROM notify_attempts a WHERE a.delivery_id = d.id)) ORDER BY d.id), '[]')::text "
                "FROM notify_deliveries d WHERE (CASE WHEN $1::text IS NULL "
                "THEN d.id = $2::bigint ELSE d.run_id = $1 END) "
                "AND ($3::text[] IS NULL OR d.security_group = ANY($3::text[]))",
                3, p, res, errstr, errstr_size);
}

/* Runs still going past a long_running rule's after_ms, without their
 * notification yet: one row each, facts built here from runs and tasks. */
static const char tb_store_notify_sql_long[] =
        "INSERT INTO notify_deliveries (run_id, rule_index, event, task_id, security_group, "
        "channel, facts) "
        "SELECT r.run_id, (x.i - 1)::int, 'long_running', r.task_id, t.security_group, "
        "x.rule->>'channel', json_build_object("
        "'task', json_build_object('id', t.id, 'name', t.name, 'security_group', "
        "t.security_group), "
        "'run', json_build_object('id', r.run_id, 'nominal_time', "
        "to_char(r.nominal_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
        "'attempt', r.attempt, 'status', r.status, 'started_at', "
        "to_char(r.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
        "'host', r.host), "
        "'after_ms', (x.rule->>'after_ms')::bigint, "
        "'running_for_ms', (extract(epoch FROM now() - r.started_at) * 1000)::bigint)::jsonb "
        "FROM runs r JOIN tasks t ON t.id = r.task_id "
        "CROSS JOIN LATERAL jsonb_array_elements(t.spec->'notify') WITH ORDINALITY AS x(rule, i) "
        "WHERE r.status = 'running' AND r.started_at IS NOT NULL "
        "AND x.rule->'on' ? 'long_running' AND jsonb_typeof(x.rule->'after_ms') = 'number' "
        "AND r.started_at < now() - (x.rule->>'after_ms')::bigint * interval '1 millisecond' "
        "LIMIT $1::int "
        "ON CONFLICT (run_id, rule_index, event) DO NOTHING";

tb_err_t tb_store_notify_long_running(PGconn *conn, int limit, int64_t *inserted, char *errstr,
                                      size_t errstr_size) {
        char lim[16];
        snprintf(lim, sizeof(lim), "%d", limit);
        const char *p[] = {lim};
        PGresult *r = NULL;
        tb_err_t err = tb_store_exec(conn, "decide long_running notifications",
                                     tb_store_notify_sql_long, 1, p, &r, errstr, errstr_size);
        if (!err && inserted)
                *inserted = strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        return err;
}

tb_err_t tb_store_notify_purge(PGconn *conn, int64_t keep_ms, int limit, int64_t *deleted,
                               char *errstr, size_t errstr_size) {
        char keep[32], lim[16];
        snprintf(keep, sizeof(keep), "%" PRId64, keep_ms);
        snprintf(lim, sizeof(lim), "%d", limit);
        const char *p[] = {keep, lim};
        PGresult *r = NULL;
        /* attempts go with their delivery (ON DELETE CASCADE) */
        tb_err_t err = tb_store_exec(
                conn, "purge notify_deliveries",
                "DELETE FROM notify_deliveries WHERE id IN (SELECT id FROM notify_deliveries "
                "WHERE status <> 'pending' AND created_at < now() - $1::bigint * "
                "interval '1 millisecond' LIMIT $2::int)",
                2, p, &r, errstr, errstr_size);
        if (!err && deleted)
                *deleted = strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        return err;
}
