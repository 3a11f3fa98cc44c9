/**
 * @file store/calendars.h
 * @brief Owner of the table calendars (calendars.c): business calendars as
 *        PUT /v1/calendars/{name} stored them (schemas/sql/0015_calendars.sql).
 *        Every statement on it is here; what a calendar means (the iCalendar
 *        reader, the rules) is schedule/ics.h and schedule/calendar.h, and
 *        who may read or write one is the api role's (api/calendars.c).
 *
 * A calendar is keyed by (security_group, name). The functions run on
 * \p conn as it is and report a failure as "WHAT: server message"
 * (tb_store_exec()).
 * @locality the thread that holds \p conn.
 */
#ifndef TB_STORE_CALENDARS_H
#define TB_STORE_CALENDARS_H

#include "tb.h"
#include "schedule/calendar.h"
#include "task/task.h"

#include <libpq-fe.h>
#include <stdint.h>

/** One row of calendars. */
typedef struct tb_store_calendar {
        char security_group[129];
        char name[129];
        char timezone[65];
        char weekend[32];        /**< "sat,sun", "" for none */
        char *source;            /**< the .ics text (owned; tb_store_calendar_clear()) */
        int events;              /**< VEVENTs read from it */
        int64_t version;         /**< 1 on the first PUT */
        int64_t created_ms, updated_ms;
        char updated_by[129];
} tb_store_calendar_t;

/**
 * Insert or replace the calendar (\p cal's group, name, timezone, weekend,
 * source, events and updated_by; the rest is ignored).
 * @param expected_version  -1: write whatever is there; 0: create only
 *                          (TB_ERR_CONFLICT when it exists); else only
 *                          replace the calendar at exactly this version.
 * @param version  receives the version written.
 * @param updated_ms  receives its updated_at (ms since the epoch).
 * @param created  receives whether the row is new.
 * @returns TB_OK; TB_ERR_CONFLICT when \p expected_version is not the
 *          current one (the message names both), TB_ERR_NOT_FOUND when it
 *          was given but there is no such calendar; TB_ERR_PG.
 */
tb_err_t tb_store_calendar_put(PGconn *conn, const tb_store_calendar_t *cal,
                               int64_t expected_version, int64_t *version,
                               int64_t *updated_ms, bool *created, char *errstr,
                               size_t errstr_size);

/**
 * Read calendar \p name of one of the groups \p groups_json (a JSON array
 * of group names, as text). *\p found is the number of groups that have
 * one: \p out is filled only when it is exactly 1 (caller clears it).
 */
tb_err_t tb_store_calendar_get(PGconn *conn, const char *groups_json, const char *name,
                               tb_store_calendar_t *out, int *found, char *errstr,
                               size_t errstr_size);

/**
 * The calendars of the groups \p groups_json, by group then name, without
 * their source: *\p res has the columns security_group, name, timezone,
 * weekend, events, version, updated_at (ms since the epoch), updated_by
 * (caller PQclear()s it).
 */
tb_err_t tb_store_calendar_list(PGconn *conn, const char *groups_json, PGresult **res,
                                char *errstr, size_t errstr_size);

/**
 * Delete calendar \p name of \p group, unless a task of the group names it
 * in its calendars (tasks is read, never written: its owner is the
 * projector).
 * @param expected_version  -1: whatever its version; else only at it.
 * @param users  receives the ids of up to 5 tasks naming it ("" if none).
 * @returns TB_OK; TB_ERR_CONFLICT when tasks name it or the version is
 *          another (the message says which); TB_ERR_NOT_FOUND; TB_ERR_PG.
 */
tb_err_t tb_store_calendar_delete(PGconn *conn, const char *group, const char *name,
                                  int64_t expected_version, char *users, size_t users_size,
                                  char *errstr, size_t errstr_size);
/** Free \p cal's source and zero it. */
void tb_store_calendar_clear(tb_store_calendar_t *cal);

/**
 * Build \p cal's calendar (tb_calendar_new() of its source, zone and
 * weekend) into *\p out (caller frees). A stored calendar was built before
 * it was stored, so a failure here means the row was changed behind the
 * API or this version reads it differently: the message says which.
 */
tb_err_t tb_store_calendar_build(const tb_store_calendar_t *cal, tb_calendar_t **out,
                                 char *errstr, size_t errstr_size);

/**
 * Resolve a task's \p n rules \p rules against group \p group's
 * calendars into \p out (caller tb_task_cals_clear()s it): each calendar
 * read and built. A missing one leaves out->unresolved = "calendar 'x' does
 * not exist in group 'g'", one that does not build its reason.
 * @returns TB_OK (even when unresolved), TB_ERR_PG when PostgreSQL failed.
 */
tb_err_t tb_store_calendar_resolve(PGconn *conn, const char *group,
                                   const tb_task_calendar_t *rules, size_t n,
                                   tb_task_cals_t *out, char *errstr, size_t errstr_size);

/**
 * A cheap signature of the whole table: it changes whenever a calendar is
 * written or removed (count and the sum of versions; the scheduler polls it).
 */
tb_err_t tb_store_calendar_signature(PGconn *conn, char *sig, size_t sig_size, char *errstr,
                                     size_t errstr_size);

/**
 * Every calendar of every group with its source: *\p res has the columns
 * security_group, name, timezone, weekend, source, version (caller
 * PQclear()s it). For the scheduler, which serves every group.
 */
tb_err_t tb_store_calendar_all(PGconn *conn, PGresult **res, char *errstr, size_t errstr_size);

#endif /* TB_STORE_CALENDARS_H */
