/**
 * @file store/tasks.c
 * @brief The task table family: tasks and task_history (store/tasks.h).
 */
#include "store/tasks.h"

#include "store/runs.h"
#include "store/store.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* epoch milliseconds as text, for the 'epoch' + ms interval expressions */
#define TB_STORE_TASKS_TS(n) "('epoch'::timestamptz + $" #n "::bigint * interval '1 millisecond')"

/* Columns of TB_STORE_TASKS_COL_*: keep both in step. */
#define TB_STORE_TASKS_COLS                                                                  \
        "id, version, spec::text, paused, (extract(epoch FROM created_at) * 1000)::bigint, " \
        "(extract(epoch FROM updated_at) * 1000)::bigint, created_by, "                      \
        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

tb_err_t tb_store_tasks_get(PGconn *conn, const char *id, const char *groups, PGresult **res,
                            char *errstr, size_t errstr_size) {
        const char *params[2] = {id, groups};
        return tb_store_exec(conn, "read task",
                             "SELECT " TB_STORE_TASKS_COLS " FROM tasks "
                             "WHERE id = $1 AND security_group = ANY($2::text[])",
                             2, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_home(PGconn *conn, const char *id, const char *groups, char *home,
                             size_t home_size, char *errstr, size_t errstr_size) {
        const char *params[2] = {id, groups};
        PGresult *r = NULL;
        home[0] = '\0';
        tb_err_t e = tb_store_exec(conn, "read task home",
                                   "SELECT home_region FROM tasks WHERE id = $1 AND "
                                   "security_group = ANY($2::text[])",
                                   2, params, &r, errstr, errstr_size);
        if (e)
                return e;
        if (PQntuples(r) == 1)
                tb_snprintf(home, home_size, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        return TB_OK;
}

/*
 * One page over the caller's groups in keyset order. The index
 * tasks_group_created (security_group, created_at DESC, id DESC) is in keyset
 * order within one group only; across groups a plain "security_group =
 * ANY(...) ORDER BY" reads every row of those groups and sorts them (1M
 * tasks: a Sort of the whole set; a UNION ALL of unlimited branches was
 * planned the same way, bitmap scans of each group then one sort). So the
 * statement is a UNION ALL of one branch per group, each an index scan of
 * its group in keyset order from the cursor on, LIMITed to the page, and
 * only those at most groups x page rows are merged: a page costs the same at
 * any depth. The filters are checked along
 * those scans; a name_prefix may instead be read from tasks_group_name (the
 * names in byte order, migration 0011) and sorted, when the planner
 * estimates it cheaper. Element k of $1 names branch k's group (a branch repeating an
 * earlier element is planned away); beyond TB_STORE_TASKS_MERGE_MAX groups
 * (and for none) one LATERAL scan per group with a LIMIT, sorted together,
 * serves instead.
 * EXPLAIN on 1M tasks: docs/bench-results/reads-plans.txt.
 */
#define TB_STORE_TASKS_MERGE_MAX 64
#define TB_STORE_TASKS_PAGE_WHERE                                                              \
        "AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::text)) "   \
        "AND ($4::text IS NULL OR (starts_with(name COLLATE \"C\", $4::text) "              \
        "AND name COLLATE \"C\" >= $4::text AND ($8::text IS NULL OR name COLLATE \"C\" < $8::text))) " \
        "AND ($5::boolean IS NULL OR paused = $5::boolean) "                                  \
        "AND ($6::jsonb IS NULL OR labels @> $6::jsonb) "                                     \
        "AND ($9::text[] IS NULL OR " TB_STORE_RUNS_LAST_OUTCOME("tasks.id") " = ANY($9::text[])) "
#define TB_STORE_TASKS_PAGE_ORDER "ORDER BY created_at DESC, id DESC LIMIT $7::int"

/* With a name_prefix and no other filter, a deferred join: each group's
 * matching keys come from an index-only scan of the prefix's range of
 * tasks_group_name (which INCLUDEs created_at and id), the page is chosen
 * among those keys, and only its rows are fetched. Unused parameters are
 * typed (and NULL) so that both forms take the same nine. */
#define TB_STORE_TASKS_PREFIX_KEYS_WHERE                                                       \
        "AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::text)) "   \
        "AND starts_with(name COLLATE \"C\", $4::text) AND name COLLATE \"C\" >= $4::text "    \
        "AND ($8::text IS NULL OR name COLLATE \"C\" < $8::text) "                            \
        "AND $5::boolean IS NULL AND $6::jsonb IS NULL AND $9::text[] IS NULL "

/* The least string above every string that starts with \p prefix, in byte
 * order: its last character's code point plus one (UTF-8 keeps code point
 * order), into \p out; "" when there is none (U+10FFFF, or not UTF-8). */
static void tb_store_tasks_prefix_end(const char *prefix, char *out, size_t out_size) {
        size_t n = strlen(prefix), start = n;
        out[0] = '\0';
        while (start > 0 && ((unsigned char)prefix[start - 1] & 0xC0) == 0x80)
                start--;
        if (start == 0 || n + 1 > out_size || n - --start > 4)
                return;
        const unsigned char *c = (const unsigned char *)prefix + start;
        size_t len = n - start;
        uint32_t cp = len == 1 ? c[0]
                      : len == 2 ? (uint32_t)(c[0] & 0x1F) << 6 | (c[1] & 0x3F)
                      : len == 3 ? (uint32_t)(c[0] & 0x0F) << 12 | (uint32_t)(c[1] & 0x3F) << 6 | (c[2] & 0x3F)
                                 : (uint32_t)(c[0] & 0x07) << 18 | (uint32_t)(c[1] & 0x3F) << 12 |
                                           (uint32_t)(c[2] & 0x3F) << 6 | (c[3] & 0x3F);
        cp = cp == 0xD7FF ? 0xE000 : cp + 1;
        if (cp > 0x10FFFF || start + 4 + 1 > out_size)
                return;
        memcpy(out, prefix, start);
        char *o = out + start;
        if (cp < 0x80) {
                *o++ = (char)cp;
        } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | cp >> 6);
                *o++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | cp >> 12);
                *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
        } else {
                *o++ = (char)(0xF0 | cp >> 18);
                *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
                *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
        }
        *o = '\0';
}

tb_err_t tb_store_tasks_list(PGconn *conn, const char *groups, size_t group_cnt,
                             const char *cur_key, const char *cur_id, const char *name_prefix,
                             const char *paused, const char *labels, const char *last_outcome,
                             const char *limit, PGresult **res, char *errstr,
                             size_t errstr_size) {
        /* the prefix's range in byte order as well: the index tasks_group_name
         * serves it, and its estimate (with starts_with()'s) lets the planner
         * prefer that index over the keyset scan when the prefix is rare */
        char end[512];
        if (name_prefix)
                tb_store_tasks_prefix_end(name_prefix, end, sizeof(end));
        const char *params[9] = {groups, cur_key, cur_id,  name_prefix,
                                 paused, labels,  limit,   name_prefix && *end ? end : NULL,
                                 last_outcome};
        tb_buf_t sql = {0};
        bool merge = group_cnt > 0 && group_cnt <= TB_STORE_TASKS_MERGE_MAX;
        if (merge && name_prefix && !paused && !labels && !last_outcome) {
                tb_buf_printf(&sql, "SELECT " TB_STORE_TASKS_COLS " FROM (SELECT k.id FROM (");
                tb_store_union_per_element(&sql, "SELECT id, created_at FROM tasks WHERE true "
                                                 TB_STORE_TASKS_PREFIX_KEYS_WHERE,
                                           "security_group", 1, group_cnt,
                                           TB_STORE_TASKS_PAGE_ORDER);
                tb_buf_printf(&sql, ") AS k ORDER BY k.created_at DESC, k.id DESC LIMIT $7::int) "
                                    "AS p JOIN tasks USING (id) " TB_STORE_TASKS_PAGE_ORDER);
                return tb_store_exec_built(conn, "list tasks", &sql, 9, params, res, errstr,
                                           errstr_size);
        }
        tb_buf_printf(&sql, "SELECT " TB_STORE_TASKS_COLS " FROM (");
        if (!merge)
                tb_buf_printf(&sql, "SELECT t.* FROM (SELECT DISTINCT unnest($1::text[]) AS grp) "
                                    "AS g CROSS JOIN LATERAL (SELECT * FROM tasks "
                                    "WHERE security_group = g.grp " TB_STORE_TASKS_PAGE_WHERE
                                    TB_STORE_TASKS_PAGE_ORDER ") AS t");
        else
                tb_store_union_per_element(&sql, "SELECT * FROM tasks WHERE true "
                                                 TB_STORE_TASKS_PAGE_WHERE,
                                           "security_group", 1, group_cnt,
                                           TB_STORE_TASKS_PAGE_ORDER);
        tb_buf_printf(&sql, ") AS t " TB_STORE_TASKS_PAGE_ORDER);
        return tb_store_exec_built(conn, "list tasks", &sql, 9, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_schedules(PGconn *conn, const char *groups, PGresult **res,
                                  char *errstr, size_t errstr_size) {
        const char *params[1] = {groups};
        /* only what tb_task_schedule() reads of the spec */
        return tb_store_exec(conn, "read schedules",
                             "SELECT id, name, security_group, jsonb_strip_nulls("
                             "jsonb_build_object('schedule', spec->'schedule', 'expires_at', "
                             "spec->'expires_at', 'jitter', spec->'jitter'))::text, "
                             "(extract(epoch FROM created_at) * 1000)::bigint FROM tasks "
                             "WHERE security_group = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) "
                             "AND NOT paused ORDER BY id",
                             1, params, res, errstr, errstr_size);
}

#define TB_STORE_TASKS_HISTORY_COLS                                                          \
        "SELECT version, type, (extract(epoch FROM at) * 1000)::bigint, actor, "            \
        "command_id, array_to_json(changed_fields)::text, spec::text "                       \
        "FROM task_history WHERE task_id = $1 "                                              \
        "AND security_group = ANY($2::text[]) "

tb_err_t tb_store_tasks_history_at(PGconn *conn, const char *id, const char *groups,
                                   const char *at_ms, PGresult **res, char *errstr,
                                   size_t errstr_size) {
        const char *params[3] = {id, groups, at_ms};
        return tb_store_exec(conn, "task state at",
                             TB_STORE_TASKS_HISTORY_COLS
                             "AND at <= to_timestamp($3::bigint / 1000.0) "
                             "ORDER BY version DESC LIMIT 1",
                             3, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_history_page(PGconn *conn, const char *id, const char *groups,
                                     const char *after_version, const char *limit,
                                     PGresult **res, char *errstr, size_t errstr_size) {
        const char *params[4] = {id, groups, after_version, limit};
        return tb_store_exec(conn, "task history",
                             TB_STORE_TASKS_HISTORY_COLS
                             "AND ($3::bigint IS NULL OR version > $3::bigint) "
                             "ORDER BY version LIMIT $4::int",
                             4, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_history_all(PGconn *conn, const char *id, PGresult **res, char *errstr,
                                    size_t errstr_size) {
        const char *p[] = {id};
        return tb_store_exec(conn, "read task_history",
                             "SELECT version, (extract(epoch FROM at) * 1000)::bigint, actor, type, "
                             "command_id, array_to_json(changed_fields)::text, spec::text, "
                             "security_group FROM task_history WHERE task_id = $1 ORDER BY version",
                             1, p, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_projected(PGconn *conn, const char *ids, const char *versions,
                                  PGresult **res, char *errstr, size_t errstr_size) {
        /* task_history has every version, also the DELETED one */
        const char *sql =
                "SELECT w.id, w.v FROM unnest($1::text[], $2::bigint[]) AS w(id, v) "
                "WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = w.id AND t.version >= w.v) "
                "OR EXISTS (SELECT 1 FROM task_history h WHERE h.task_id = w.id "
                "AND h.version >= w.v)";
        const char *params[2] = {ids, versions};
        return tb_store_exec(conn, "projection check", sql, 2, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_homed_in(PGconn *conn, const char *region, PGresult **res,
                                 char *errstr, size_t errstr_size) {
        const char *params[] = {region};
        return tb_store_exec(conn, "tasks homed in the failed region",
                             "SELECT id, version, epoch, spec::text, "
                             "(extract(epoch FROM created_at) * 1000)::bigint, created_by "
                             "FROM tasks WHERE home_region = $1 ORDER BY id",
                             1, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_count(PGconn *conn, int64_t *count, char *errstr, size_t errstr_size) {
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "count", "SELECT count(*) FROM tasks", 0, NULL, &r,
                                   errstr, errstr_size);
        if (e)
                return e;
        *count = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        return TB_OK;
}

tb_err_t tb_store_tasks_truncate(PGconn *conn, char *errstr, size_t errstr_size) {
        return tb_store_exec(conn, "empty the projection", "TRUNCATE tasks, task_history", 0,
                             NULL, NULL, errstr, errstr_size);
}

tb_err_t tb_store_tasks_partition_cursor(PGconn *conn, const char *cursor, int32_t partition,
                                         const char *region, char *errstr, size_t errstr_size) {
        char pstr[16], sql[1024];
        tb_snprintf(pstr, sizeof(pstr), "%" PRId32, partition);
        tb_snprintf(sql, sizeof(sql),
                    "DECLARE %s NO SCROLL CURSOR FOR SELECT id, "
                    "version, spec::text, "
                    "(extract(epoch FROM created_at) * 1000)::bigint, epoch, "
                    /* a task a failover moved here: where its old home's
                     * scheduled fires stopped (replicated runs) */
                    "CASE WHEN epoch > 0 AND home_region = $2 THEN "
                    "(SELECT (extract(epoch FROM max(COALESCE(r.last_nominal_time, "
                    "r.nominal_time))) * 1000)::bigint "
                    "FROM runs r WHERE r.task_id = tasks.id AND r.trigger IN "
                    "('schedule', 'misfire')) END "
                    "FROM tasks WHERE event_partition = $1::int",
                    cursor);
        const char *cparams[] = {pstr, region};
        return tb_store_exec(conn, "declare load cursor", sql, 2, cparams, NULL, errstr,
                             errstr_size);
}

tb_err_t tb_store_tasks_snapshot_cursor(PGconn *conn, const char *cursor, int32_t partition,
                                        char *errstr, size_t errstr_size) {
        char pstr[16], sql[512];
        tb_snprintf(pstr, sizeof(pstr), "%" PRId32, partition);
        tb_snprintf(sql, sizeof(sql),
                    "DECLARE %s NO SCROLL CURSOR FOR SELECT id, version, epoch, spec::text, "
                    "(extract(epoch FROM created_at) * 1000)::bigint, created_by "
                    "FROM tasks WHERE event_partition = $1::int",
                    cursor);
        const char *params[] = {pstr};
        return tb_store_exec(conn, "declare snapshot cursor", sql, 1, params, NULL, errstr,
                             errstr_size);
}

tb_err_t tb_store_tasks_ids_used(PGconn *conn, const char *ids, PGresult **res, char *errstr,
                                 size_t errstr_size) {
        const char *params[] = {ids};
        /* task_history has a row for every event the projection applied */
        return tb_store_exec(conn, "task ids used",
                             "SELECT DISTINCT ON (task_id) task_id, security_group "
                             "FROM task_history WHERE task_id = ANY($1::text[]) "
                             "ORDER BY task_id, version DESC",
                             1, params, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_newer_exists(PGconn *conn, const char *id, int64_t epoch, int64_t version,
                                     bool *newer, char *errstr, size_t errstr_size) {
        char e[32], v[32];
        PGresult *r = NULL;
        tb_snprintf(e, sizeof(e), "%" PRId64, epoch);
        tb_snprintf(v, sizeof(v), "%" PRId64, version);
        const char *params[] = {id, e, v};
        tb_err_t err = tb_store_exec(conn, "newer task event",
                                     "SELECT EXISTS (SELECT 1 FROM task_history WHERE task_id = $1 "
                                     "AND (epoch, version) > ($2::bigint, $3::bigint))",
                                     3, params, &r, errstr, errstr_size);
        if (!err)
                *newer = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        return err;
}

/* ---- the projection's writes --------------------------------------------------- */

/* What an upsert of a task row changes, and only to a higher (epoch,
 * version): regions: a higher home-region epoch wins, then the higher version. */
#define TB_STORE_TASKS_UPSERT_SET                                                              \
        "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, name = EXCLUDED.name, "   \
        "security_group = EXCLUDED.security_group, user_id = EXCLUDED.user_id, "              \
        "spec = EXCLUDED.spec, paused = EXCLUDED.paused, labels = EXCLUDED.labels, "          \
        "home_region = EXCLUDED.home_region, epoch = EXCLUDED.epoch, "                        \
        "created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by, "                \
        "updated_at = EXCLUDED.updated_at, event_partition = EXCLUDED.event_partition, "      \
        "event_offset = EXCLUDED.event_offset "                                               \
        "WHERE (tasks.epoch, tasks.version) < (EXCLUDED.epoch, EXCLUDED.version)"
#define TB_STORE_TASKS_COLUMNS                                                                 \
        "INSERT INTO tasks (id, version, name, security_group, user_id, spec, paused, labels, " \
        "home_region, epoch, created_at, created_by, updated_at, event_partition, event_offset) "

static const char tb_store_tasks_sql_upsert[] =
        TB_STORE_TASKS_COLUMNS
        "SELECT $1, $2::bigint, $3, $4, $5, $6::jsonb, $7::boolean, $8::jsonb, $9, $10::bigint, "
        TB_STORE_TASKS_TS(11) ", $12, " TB_STORE_TASKS_TS(13) ", $14::int, $15::bigint "
        /* a task deleted at a later version stays deleted when an older
         * event is applied again */
        "WHERE NOT EXISTS (SELECT 1 FROM task_history h WHERE h.task_id = $1 "
        "AND (h.epoch, h.version) > ($10::bigint, $2::bigint) AND h.type = 'DELETED') "
        TB_STORE_TASKS_UPSERT_SET;

static const char tb_store_tasks_sql_delete[] =
        "DELETE FROM tasks WHERE id = $1 AND (epoch, version) < ($3::bigint, $2::bigint)";

static const char tb_store_tasks_sql_history[] =
        "INSERT INTO task_history (task_id, version, event_id, type, at, actor, command_id, "
        "changed_fields, spec, security_group, source_region, epoch) "
        "VALUES ($1, $2::bigint, $3, $4, " TB_STORE_TASKS_TS(5) ", $6, $7, "
        "ARRAY(SELECT jsonb_array_elements_text($8::jsonb)), $9::jsonb, "
        /* a DELETED event carries no task: keep the group it had */
        "COALESCE($10, (SELECT h.security_group FROM task_history h WHERE h.task_id = $1 "
        "AND h.version < $2::bigint ORDER BY h.version DESC LIMIT 1), ''), $11, $12::bigint) "
        "ON CONFLICT DO NOTHING";

tb_err_t tb_store_tasks_history_insert(PGconn *conn, const char *const params[12],
                                       char *errstr, size_t errstr_size) {
        return tb_store_exec(conn, "insert task_history", tb_store_tasks_sql_history, 12, params,
                             NULL, errstr, errstr_size);
}

tb_err_t tb_store_tasks_upsert(PGconn *conn, const char *const params[15], char *errstr,
                               size_t errstr_size) {
        return tb_store_exec(conn, "upsert task", tb_store_tasks_sql_upsert, 15, params, NULL,
                             errstr, errstr_size);
}

tb_err_t tb_store_tasks_delete(PGconn *conn, const char *id, const char *version,
                               const char *epoch, char *errstr, size_t errstr_size) {
        const char *dp[] = {id, version, epoch};
        return tb_store_exec(conn, "delete task", tb_store_tasks_sql_delete, 3, dp, NULL, errstr,
                             errstr_size);
}

tb_err_t tb_store_tasks_group_count(PGconn *conn, const char *group, const int32_t *parts,
                                    size_t n, int64_t *count, char *errstr,
                                    size_t errstr_size) {
        tb_buf_t arr = {0};
        char num[16];
        *count = 0;
        tb_buf_append(&arr, "{", 1);
        for (size_t i = 0; i < n; i++) {
                tb_snprintf(num, sizeof(num), "%s%" PRId32, i ? "," : "", parts[i]);
                tb_buf_append(&arr, num, strlen(num));
        }
        if (tb_buf_append(&arr, "}", 2) != TB_OK) {
                tb_buf_free(&arr);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "count tasks: out of memory");
        }
        const char *p[] = {group, (const char *)arr.data};
        PGresult *r = NULL;
        tb_err_t e = tb_store_exec(conn, "count a group's tasks",
                                   "SELECT count(*) FROM tasks WHERE security_group = $1 AND "
                                   "event_partition = ANY($2::int[])",
                                   2, p, &r, errstr, errstr_size);
        tb_buf_free(&arr);
        if (!e)
                *count = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        return e;
}

/* ---- the set-based projection of a batch (taskbus replay) -------------------------- */

/*
 * A batch of task events is copied into a temporary table of the session
 * (emptied at every commit), then merged with three statements that keep the
 * rules of the per-event statements above (projection/projection.c):
 *  - history: one row per event, once; an event without a task (DELETED)
 *    takes the group of the task's nearest earlier version, in the batch or
 *    already in task_history;
 *  - tasks: only each task's newest event of the batch, by (epoch, version),
 *    matters: one row can take one event per statement, and the older ones
 *    would be overwritten by it anyway. With a task it is upserted unless a
 *    later DELETED is in history; without one the row is deleted unless it
 *    is at that (epoch, version) or later.
 */
static const char tb_store_tasks_sql_stage[] =
        "CREATE TEMP TABLE IF NOT EXISTS tb_task_events_stage ("
        "seq int NOT NULL, task_id text NOT NULL, version bigint NOT NULL, "
        "event_id text NOT NULL, type text NOT NULL, at_ms bigint NOT NULL, "
        "actor text NOT NULL, command_id text NOT NULL, changed_fields jsonb NOT NULL, "
        "spec jsonb, security_group text, source_region text NOT NULL, epoch bigint NOT NULL, "
        "name text, user_id text, paused boolean, labels jsonb, home_region text, "
        "created_at_ms bigint, created_by text, event_partition int, event_offset bigint) "
        "ON COMMIT DELETE ROWS";

static const char tb_store_tasks_sql_stage_copy[] =
        "COPY tb_task_events_stage (seq, task_id, version, event_id, type, at_ms, actor, "
        "command_id, changed_fields, spec, security_group, source_region, epoch, name, user_id, "
        "paused, labels, home_region, created_at_ms, created_by, event_partition, event_offset) "
        "FROM STDIN";

#define TB_STORE_TASKS_STAGE_TS(col) "('epoch'::timestamptz + " col " * interval '1 millisecond')"

static const char tb_store_tasks_sql_stage_history[] =
        "WITH w AS (SELECT s.*, count(s.security_group) OVER (PARTITION BY s.task_id "
        "ORDER BY s.version, s.seq ROWS UNBOUNDED PRECEDING) AS gseq "
        "FROM tb_task_events_stage s), "
        /* the group of the batch's nearest earlier event that has one */
        "f AS (SELECT w.*, first_value(w.security_group) OVER k AS bgroup, "
        "first_value(w.version) OVER k AS bversion FROM w "
        "WINDOW k AS (PARTITION BY w.task_id, w.gseq ORDER BY w.version, w.seq)) "
        "INSERT INTO task_history (task_id, version, event_id, type, at, actor, command_id, "
        "changed_fields, spec, security_group, source_region, epoch) "
        "SELECT f.task_id, f.version, f.event_id, f.type, " TB_STORE_TASKS_STAGE_TS("f.at_ms") ", "
        "f.actor, f.command_id, ARRAY(SELECT jsonb_array_elements_text(f.changed_fields)), "
        "f.spec, CASE WHEN f.security_group IS NOT NULL THEN f.security_group ELSE "
        "COALESCE((SELECT h.security_group FROM task_history h WHERE h.task_id = f.task_id "
        "AND h.version < f.version AND (f.gseq = 0 OR h.version > f.bversion) "
        "ORDER BY h.version DESC LIMIT 1), f.bgroup, '') END, f.source_region, f.epoch "
        "FROM f ORDER BY f.seq ON CONFLICT DO NOTHING";

/* each task's newest event of the batch */
#define TB_STORE_TASKS_STAGE_LAST                                                               \
        "(SELECT DISTINCT ON (task_id) * FROM tb_task_events_stage "                           \
        "ORDER BY task_id, epoch DESC, version DESC, seq DESC) AS l "

static const char tb_store_tasks_sql_stage_delete[] =
        "DELETE FROM tasks t USING " TB_STORE_TASKS_STAGE_LAST
        "WHERE l.spec IS NULL AND t.id = l.task_id AND (t.epoch, t.version) < (l.epoch, l.version)";

static const char tb_store_tasks_sql_stage_upsert[] =
        TB_STORE_TASKS_COLUMNS
        "SELECT l.task_id, l.version, l.name, l.security_group, l.user_id, l.spec, l.paused, "
        "l.labels, l.home_region, l.epoch, " TB_STORE_TASKS_STAGE_TS("l.created_at_ms") ", "
        "l.created_by, " TB_STORE_TASKS_STAGE_TS("l.at_ms") ", l.event_partition, l.event_offset "
        "FROM " TB_STORE_TASKS_STAGE_LAST
        "WHERE l.spec IS NOT NULL AND NOT EXISTS (SELECT 1 FROM task_history h "
        "WHERE h.task_id = l.task_id AND (h.epoch, h.version) > (l.epoch, l.version) "
        "AND h.type = 'DELETED') " TB_STORE_TASKS_UPSERT_SET;

tb_err_t tb_store_tasks_stage(PGconn *conn, const char *rows, size_t len, char *errstr,
                              size_t errstr_size) {
        tb_err_t err;
        /* "already exists, skipping" is no news */
        if ((err = tb_store_exec(conn, "quiet notices", "SET LOCAL client_min_messages = warning",
                                 0, NULL, NULL, errstr, errstr_size)) ||
            (err = tb_store_exec(conn, "create the staging table", tb_store_tasks_sql_stage, 0,
                                 NULL, NULL, errstr, errstr_size)) ||
            (err = tb_store_copy_in(conn, "copy task events", tb_store_tasks_sql_stage_copy, rows,
                                    len, errstr, errstr_size)))
                return err;
        /* a temporary table has no statistics of its own: the merge's plan needs them */
        return tb_store_exec(conn, "analyze the staging table", "ANALYZE tb_task_events_stage",
                             0, NULL, NULL, errstr, errstr_size);
}

tb_err_t tb_store_tasks_stage_merge(PGconn *conn, char *errstr, size_t errstr_size) {
        tb_err_t err;
        if ((err = tb_store_exec(conn, "merge task_history", tb_store_tasks_sql_stage_history, 0,
                                 NULL, NULL, errstr, errstr_size)) ||
            (err = tb_store_exec(conn, "merge deleted tasks", tb_store_tasks_sql_stage_delete, 0,
                                 NULL, NULL, errstr, errstr_size)))
                return err;
        return tb_store_exec(conn, "merge tasks", tb_store_tasks_sql_stage_upsert, 0, NULL, NULL,
                             errstr, errstr_size);
}

tb_err_t tb_store_tasks_get_any(PGconn *conn, const char *id, PGresult **res, char *errstr,
                                size_t errstr_size) {
        const char *params[1] = {id};
        return tb_store_exec(conn, "read task", "SELECT name, security_group, spec::text "
                             "FROM tasks WHERE id = $1",
                             1, params, res, errstr, errstr_size);
}

/* ---- tasks that wait for others ------------------------------------------------ */

tb_err_t tb_store_tasks_dependents(PGconn *conn, const char *parts, const char *region,
                                   PGresult **res, char *errstr, size_t errstr_size) {
        const char *p[] = {parts, region ? region : ""};
        return tb_store_exec(conn, "read dependent tasks",
                             "SELECT id, version, spec::text, "
                             "(extract(epoch FROM created_at) * 1000)::bigint, event_partition FROM tasks "
                             "WHERE spec ? 'after' AND event_partition = ANY($1::int[]) "
                             "AND NOT paused AND home_region IN ('', $2) ORDER BY id",
                             2, p, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_after_graph(PGconn *conn, PGresult **res, char *errstr,
                                    size_t errstr_size) {
        return tb_store_exec(conn, "read the dependency graph",
                             "SELECT id, (spec->'after')::text, security_group FROM tasks "
                             "WHERE spec ? 'after'", 0,
                             NULL, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_visible_ids(PGconn *conn, const char *ids, const char *groups,
                                    PGresult **res, char *errstr, size_t errstr_size) {
        const char *p[] = {ids, groups};
        return tb_store_exec(conn, "read parent tasks",
                             "SELECT id FROM tasks WHERE id = ANY($1::text[]) "
                             "AND security_group = ANY($2::text[])",
                             2, p, res, errstr, errstr_size);
}

tb_err_t tb_store_tasks_children(PGconn *conn, const char *id, int limit, PGresult **res,
                                 char *errstr, size_t errstr_size) {
        char lim[16];
        tb_snprintf(lim, sizeof(lim), "%d", limit);
        const char *p[] = {id, lim};
        return tb_store_exec(conn, "read child tasks",
                             "SELECT id, security_group FROM tasks WHERE spec ? 'after' AND "
                             "spec->'after' @> jsonb_build_array(jsonb_build_object('task', "
                             "$1::text)) ORDER BY id LIMIT $2::int",
                             2, p, res, errstr, errstr_size);
}
