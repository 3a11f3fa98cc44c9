/**
 * @file store/calendars.c
 * @brief The statements on calendars (store/calendars.h).
 */
#include "store/calendars.h"
#include "store/store.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_STORE_CAL_GROUPS "security_group = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))"

tb_err_t tb_store_calendar_put(PGconn *conn, const tb_store_calendar_t *cal,
                               int64_t expected_version, int64_t *version,
                               int64_t *updated_ms, bool *created, char *errstr,
                               size_t errstr_size) {
        char events[16], expected[24];
        snprintf(events, sizeof(events), "%d", cal->events);
        snprintf(expected, sizeof(expected), "%" PRId64, expected_version);
        const char *params[] = {cal->security_group, cal->name,   cal->timezone, cal->weekend,
                                cal->source,         events,      cal->updated_by, expected};
        PGresult *res = NULL;
        tb_err_t err;
        if (expected_version == 0)
                err = tb_store_exec(
                        conn, "create calendar",
                        "INSERT INTO calendars (security_group, name, timezone, weekend, source, "
                        "events, updated_by) VALUES ($1, $2, $3, $4, $5, $6::int, $7) "
                        "ON CONFLICT (security_group, name) DO NOTHING "
                        "RETURNING version, true, "
                        "(extract(epoch FROM updated_at) * 1000)::bigint",
                        7, params, &res, errstr, errstr_size);
        else if (expected_version < 0)
                err = tb_store_exec(
                        conn, "write calendar",
                        "INSERT INTO calendars (security_group, name, timezone, weekend, source, "
                        "events, updated_by) VALUES ($1, $2, $3, $4, $5, $6::int, $7) "
                        "ON CONFLICT (security_group, name) DO UPDATE SET "
                        "timezone = EXCLUDED.timezone, weekend = EXCLUDED.weekend, "
                        "source = EXCLUDED.source, events = EXCLUDED.events, "
                        "updated_by = EXCLUDED.updated_by, updated_at = now(), "
                        "version = calendars.version + 1 "
                        "RETURNING version, xmax = 0, "
                        "(extract(epoch FROM updated_at) * 1000)::bigint",
                        7, params, &res, errstr, errstr_size);
        else
                err = tb_store_exec(
                        conn, "write calendar",
                        "WITH cur AS (SELECT version FROM calendars "
                        "             WHERE security_group = $1 AND name = $2), "
                        "upd AS (UPDATE calendars SET timezone = $3, weekend = $4, source = $5, "
                        "        events = $6::int, updated_by = $7, updated_at = now(), "
                        "        version = version + 1 "
                        "        WHERE security_group = $1 AND name = $2 AND version = $8::bigint "
                        "        RETURNING version, updated_at) "
                        "SELECT (SELECT version FROM upd), (SELECT version FROM cur), "
                        "(SELECT (extract(epoch FROM updated_at) * 1000)::bigint FROM upd)",
                        8, params, &res, errstr, errstr_size);
        if (err)
                return err;
        *created = false;
        if (expected_version == 0 && PQntuples(res) == 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "calendar '%s' of group '%s' exists already: update it "
                                "(If-Match: its version) instead of creating it",
                                cal->name, cal->security_group);
        } else if (expected_version <= 0) {
                *version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
                *created = PQgetvalue(res, 0, 1)[0] == 't';
                *updated_ms = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        } else if (!PQgetisnull(res, 0, 0)) {
                *version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
                *updated_ms = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        } else if (PQgetisnull(res, 0, 1)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "calendar '%s' of group '%s' does not exist: leave out If-Match "
                                "to create it",
                                cal->name, cal->security_group);
        } else {
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "calendar '%s' is at version %s, not %" PRId64
                                " (If-Match): read it again and retry",
                                cal->name, PQgetvalue(res, 0, 1), expected_version);
        }
        PQclear(res);
        return err;
}

tb_err_t tb_store_calendar_get(PGconn *conn, const char *groups_json, const char *name,
                               tb_store_calendar_t *out, int *found, char *errstr,
                               size_t errstr_size) {
        const char *params[] = {groups_json, name};
        PGresult *res = NULL;
        memset(out, 0, sizeof(*out));
        *found = 0;
        tb_err_t err = tb_store_exec(
                conn, "read calendar",
                "SELECT security_group, name, timezone, weekend, source, events, version, "
                "(extract(epoch FROM created_at) * 1000)::bigint, "
                "(extract(epoch FROM updated_at) * 1000)::bigint, updated_by "
                "FROM calendars WHERE " TB_STORE_CAL_GROUPS " AND name = $2 "
                "ORDER BY security_group LIMIT 2",
                2, params, &res, errstr, errstr_size);
        if (err)
                return err;
        *found = PQntuples(res);
        if (*found == 1) {
                tb_snprintf(out->security_group, sizeof(out->security_group), "%s",
                            PQgetvalue(res, 0, 0));
                tb_snprintf(out->name, sizeof(out->name), "%s", PQgetvalue(res, 0, 1));
                tb_snprintf(out->timezone, sizeof(out->timezone), "%s", PQgetvalue(res, 0, 2));
                tb_snprintf(out->weekend, sizeof(out->weekend), "%s", PQgetvalue(res, 0, 3));
                out->source = strdup(PQgetvalue(res, 0, 4));
                out->events = atoi(PQgetvalue(res, 0, 5));
                out->version = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
                out->created_ms = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
                out->updated_ms = strtoll(PQgetvalue(res, 0, 8), NULL, 10);
                tb_snprintf(out->updated_by, sizeof(out->updated_by), "%s",
                            PQgetvalue(res, 0, 9));
                if (!out->source)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                        "read calendar: out of memory");
        }
        PQclear(res);
        return err;
}

tb_err_t tb_store_calendar_list(PGconn *conn, const char *groups_json, PGresult **res,
                                char *errstr, size_t errstr_size) {
        const char *params[] = {groups_json};
        return tb_store_exec(
                conn, "list calendars",
                "SELECT security_group, name, timezone, weekend, events, version, "
                "(extract(epoch FROM updated_at) * 1000)::bigint, "
                "updated_by FROM calendars WHERE " TB_STORE_CAL_GROUPS
                " ORDER BY security_group, name LIMIT 1000",
                1, params, res, errstr, errstr_size);
}

tb_err_t tb_store_calendar_delete(PGconn *conn, const char *group, const char *name,
                                  int64_t expected_version, char *users, size_t users_size,
                                  char *errstr, size_t errstr_size) {
        char expected[24];
        snprintf(expected, sizeof(expected), "%" PRId64, expected_version);
        const char *params[] = {group, name, expected};
        PGresult *res = NULL;
        users[0] = '\0';
        /* One statement: no task can be found using it after the check. A
         * task created naming it at the same moment is what the scheduler's
         * missing-calendar rule is for (docs/scheduling.md). */
        tb_err_t err = tb_store_exec(
                conn, "delete calendar",
                "WITH users AS (SELECT id FROM tasks WHERE security_group = $1 AND "
                "spec->'calendars' @> jsonb_build_array(jsonb_build_object('calendar', $2::text)) "
                "ORDER BY id LIMIT 6), "
                "del AS (DELETE FROM calendars WHERE security_group = $1 AND name = $2 "
                "AND ($3::bigint < 0 OR version = $3::bigint) "
                "AND NOT EXISTS (SELECT 1 FROM users) RETURNING version) "
                "SELECT (SELECT string_agg(id, ', ' ORDER BY id) FROM users), "
                "(SELECT count(*) FROM users), (SELECT version FROM del), "
                "(SELECT version FROM calendars WHERE security_group = $1 AND name = $2)",
                3, params, &res, errstr, errstr_size);
        if (err)
                return err;
        if (!PQgetisnull(res, 0, 0)) {
                tb_snprintf(users, users_size, "%s%s", PQgetvalue(res, 0, 0),
                            atoi(PQgetvalue(res, 0, 1)) > 5 ? ", ..." : "");
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "calendar '%s' is named by tasks of group '%s' (%s): remove it "
                                "from their calendars first",
                                name, group, users);
        } else if (!PQgetisnull(res, 0, 2)) {
                err = TB_OK;
        } else if (PQgetisnull(res, 0, 3)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "no calendar '%s' in group '%s'", name, group);
        } else {
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "calendar '%s' is at version %s, not %" PRId64
                                " (If-Match): read it again and retry",
                                name, PQgetvalue(res, 0, 3), expected_version);
        }
        PQclear(res);
        return err;
}

void tb_store_calendar_clear(tb_store_calendar_t *cal) {
        free(cal->source);
        memset(cal, 0, sizeof(*cal));
}

tb_err_t tb_store_calendar_build(const tb_store_calendar_t *cal, tb_calendar_t **out,
                                 char *errstr, size_t errstr_size) {
        char err[400];
        const tb_tz_t *tz = NULL;
        unsigned weekend = 0;
        tb_ics_t *ics = NULL;
        *out = NULL;
        tb_err_t e = tb_ics_parse(cal->source ? cal->source : "",
                                  cal->source ? strlen(cal->source) : 0, &ics, err, sizeof(err));
        if (!e)
                e = tb_tz_open(cal->timezone, &tz, err, sizeof(err));
        if (!e)
                e = tb_calendar_weekend_parse(cal->weekend, &weekend, err, sizeof(err));
        if (!e)
                e = tb_calendar_new(cal->name, tz, weekend, ics, out, err, sizeof(err));
        tb_ics_free(ics);
        if (e)
                return tb_seterr(errstr, errstr_size, e,
                                 "calendar '%s' of group '%s' (version %" PRId64
                                 ") cannot be built: %s",
                                 cal->name, cal->security_group, cal->version, err);
        return TB_OK;
}

tb_err_t tb_store_calendar_resolve(PGconn *conn, const char *group,
                                   const tb_task_calendar_t *rules, size_t n,
                                   tb_task_cals_t *out, char *errstr, size_t errstr_size) {
        memset(out, 0, sizeof(*out));
        json_t *g = json_pack("[s]", group ? group : "");
        char *groups = g ? json_dumps(g, JSON_COMPACT) : NULL;
        json_decref(g);
        if (!groups)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "resolve calendars: out of "
                                 "memory");
        tb_err_t err = TB_OK;
        for (size_t i = 0; i < n && i < TB_TASK_CALENDARS_MAX; i++) {
                tb_store_calendar_t row;
                int found = 0;
                out->rules[i].kind = rules[i].rule;
                out->n = i + 1;
                if ((err = tb_store_calendar_get(conn, groups, rules[i].name, &row, &found,
                                                 errstr, errstr_size)))
                        break;
                if (found != 1) {
                        if (!out->unresolved[0])
                                tb_snprintf(out->unresolved, sizeof(out->unresolved),
                                            "calendar '%s' does not exist in group '%s'",
                                            rules[i].name, group ? group : "");
                        continue;
                }
                char berr[sizeof(out->unresolved)];
                if (tb_store_calendar_build(&row, &out->owned[i], berr, sizeof(berr)) != TB_OK &&
                    !out->unresolved[0])
                        tb_snprintf(out->unresolved, sizeof(out->unresolved), "%s", berr);
                out->rules[i].calendar = out->owned[i];
                tb_store_calendar_clear(&row);
        }
        free(groups);
        if (err)
                tb_task_cals_clear(out);
        return err;
}

tb_err_t tb_store_calendar_signature(PGconn *conn, char *sig, size_t sig_size, char *errstr,
                                     size_t errstr_size) {
        PGresult *res = NULL;
        tb_err_t err = tb_store_exec(conn, "calendars signature",
                                     "SELECT count(*) || '/' || coalesce(sum(version), 0) "
                                     "FROM calendars",
                                     0, NULL, &res, errstr, errstr_size);
        if (err)
                return err;
        tb_snprintf(sig, sig_size, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        return TB_OK;
}

tb_err_t tb_store_calendar_all(PGconn *conn, PGresult **res, char *errstr, size_t errstr_size) {
        return tb_store_exec(conn, "read calendars",
                             "SELECT security_group, name, timezone, weekend, source, version "
                             "FROM calendars ORDER BY security_group, name",
                             0, NULL, res, errstr, errstr_size);
}
