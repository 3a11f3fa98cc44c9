/**
 * @file test_calendar_apply.c
 * @brief A task's calendars applied, on a real stack (every role in one
 *        taskbusd): a calendar PUT from an .ics with an all-day holiday on
 *        today (UTC, computed when the test runs) and no weekend; task A
 *        every 2 s with EXCLUDE: its fires today are recorded
 *        skipped_calendar naming the calendar and none runs; task B the same
 *        with ROLL_NEXT: nothing runs today, the preview moves its next fire
 *        to tomorrow at the same time; then the calendar PUT again without
 *        the holiday: without touching the tasks, both fire again within
 *        seconds (A and B run). A daily task's occurrences over a week show
 *        the holiday and the weekend skipped, and with ROLL_NEXT rolled to
 *        the next business day (the collisions as duplicates), and a
 *        backfill step counts the skipped ones and emits only what runs.
 *        Validation: 400 naming calendars[i].rule / .calendar.
 */
#include <criterion/criterion.h>

#include "support.h"
#include "support_api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY_MS INT64_C(86400000)

static tbt_console_t con;
static char alice[96];

static void setup(void) {
        char tok[80];
        tbt_console_start(&con);
        tbt_console_user(&con, "alice", "ops", tok);
        snprintf(alice, sizeof(alice), "Bearer %s", tok);
}

static void teardown(void) { tbt_console_stop(&con); }

TestSuite(calendar_apply, .init = setup, .fini = teardown, .timeout = 600);

/* The first value of \p sql (static buffer). */
static const char *sql1(const char *sql) {
        static char buf[512];
        char *v = tbt_sql_value(&con.st, sql);
        snprintf(buf, sizeof(buf), "%s", v ? v : "(no row)");
        free(v);
        return buf;
}

/* YYYYMMDD of the UTC day of \p ms. */
static void ymd(int64_t ms, char out[9]) {
        char t[32];
        tb_time_format(ms, t); /* 2026-12-06T... */
        snprintf(out, 9, "%.4s%.2s%.2s", t, t + 5, t + 8);
}

/* PUT calendar \p name of ops with one all-day holiday from \p day (YYYYMMDD)
 * to \p end (exclusive) and weekend \p weekend. */
static void put_calendar(const char *name, const char *day, const char *end,
                         const char *weekend, int want) {
        char body[1024], path[200];
        snprintf(body, sizeof(body),
                 "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//taskbus//test//EN\r\n"
                 "BEGIN:VEVENT\r\nUID:%s-%s@test\r\nDTSTAMP:20260101T000000Z\r\n"
                 "DTSTART;VALUE=DATE:%s\r\nDTEND;VALUE=DATE:%s\r\nSUMMARY:Holiday\r\n"
                 "END:VEVENT\r\nEND:VCALENDAR\r\n",
                 name, day, day, end);
        snprintf(path, sizeof(path), "/v1/calendars/%s?security_group=ops&timezone=UTC&weekend=%s",
                 name, weekend);
        char a[128];
        snprintf(a, sizeof(a), "Authorization: %s", alice);
        const char *h[] = {a, "Content-Type: text/calendar", NULL};
        tbt_http_res_t r = tbt_http_with(con.port, "PUT", path, h, body);
        cr_assert_eq(r.status, want, "PUT %s: %ld %s", path, r.status, r.body.data);
        tbt_http_free(&r);
}

/* Create a task of ops; @returns its id (static buffer). */
static const char *create(const char *name, const char *schedule, const char *calendars,
                          bool paused) {
        static char id[64];
        char body[1024];
        snprintf(body, sizeof(body),
                 "{\"name\": \"%s\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"schedule\": %s, \"calendars\": %s, \"paused\": %s}",
                 name, schedule, calendars, paused ? "true" : "false");
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/tasks", alice, body);
        cr_assert_eq(r.status, 201, "create %s: %ld %s", name, r.status, r.body.data);
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.j, "id")));
        tbt_http_free(&r);
        return id;
}

/* The first of \p count previewed fires of an every-2s schedule under \p rule
 * of calendar \p cal (caller decrefs). */
static json_t *preview_first(const char *cal, const char *rule) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"schedule\": {\"every\": \"2s\"}, \"count\": 3, \"security_group\": \"ops\", "
                 "\"calendars\": [{\"calendar\": \"%s\", \"rule\": \"%s\"}]}",
                 cal, rule);
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/schedule/preview", alice, body);
        cr_assert_eq(r.status, 200, "preview: %ld %s", r.status, r.body.data);
        json_t *f = json_incref(json_array_get(json_object_get(r.j, "fires"), 0));
        cr_assert(f, "no fire: %s", r.body.data);
        tbt_http_free(&r);
        return f;
}

static const char *fstr(const json_t *o, const char *k) {
        const char *s = json_string_value(json_object_get(o, k));
        return s ? s : "(null)";
}

/* The count of task \p id's runs WHERE \p cond. */
static int runs_where(const char *id, const char *cond) {
        char q[512];
        snprintf(q, sizeof(q), "SELECT count(*) FROM runs WHERE task_id = '%s' AND %s", id, cond);
        return atoi(sql1(q));
}

static bool wait_runs(const char *id, const char *cond, int want, int ms) {
        for (int waited = 0; waited < ms; waited += 200) {
                if (runs_where(id, cond) >= want)
                        return true;
                usleep(200 * 1000);
        }
        return false;
}

Test(calendar_apply, holiday_today_then_the_update_applies_to_every_task) {
        int64_t now = tb_now_ms();
        char today[9], tomorrow[9];
        ymd(now, today);
        ymd(now + DAY_MS, tomorrow);
        if (now % DAY_MS > DAY_MS - 120000)
                cr_log_warn("the UTC day ends within 2 minutes: the holiday may end mid-test");
        put_calendar("hol", today, tomorrow, "none", 201);

        char a[64], b[64];
        snprintf(a, sizeof(a), "%s",
                 create("cal-a", "{\"every\": \"2s\"}",
                        "[{\"calendar\": \"hol\", \"rule\": \"exclude\"}]", false));
        snprintf(b, sizeof(b), "%s",
                 create("cal-b", "{\"every\": \"2s\"}",
                        "[{\"calendar\": \"hol\", \"rule\": \"ROLL_NEXT\"}]", false));

        /* A: skipped, naming the calendar; never run */
        cr_assert(wait_runs(a, "status = 'skipped_calendar'", 3, 30000),
                  "A's fires are not recorded skipped_calendar: %d",
                  runs_where(a, "true"));
        char q[512];
        snprintf(q, sizeof(q),
                 "SELECT error FROM runs WHERE task_id = '%s' AND status = 'skipped_calendar' "
                 "LIMIT 1",
                 a);
        const char *err = sql1(q);
        cr_expect(strstr(err, "calendar 'hol'") && strstr(err, "exclude"),
                  "the reason names the calendar: %s", err);
        cr_expect_eq(runs_where(a, "status <> 'skipped_calendar'"), 0, "A ran today");
        /* B: nothing at all today (its first fire waits for tomorrow) */
        snprintf(q, sizeof(q), "SELECT string_agg(status || ': ' || coalesce(error, ''), ' | ') "
                 "FROM runs WHERE task_id = '%s'", b);
        cr_expect_eq(runs_where(b, "true"), 0, "B ran or was recorded today: %s", sql1(q));

        /* the preview shows both, with reasons */
        json_t *f = preview_first("hol", "EXCLUDE");
        cr_expect_str_eq(fstr(f, "verdict"), "skipped");
        cr_expect(strstr(fstr(f, "reason"), "calendar 'hol' (exclude)"), "%s", fstr(f, "reason"));
        cr_expect_str_eq(fstr(f, "calendar"), "hol");
        json_decref(f);
        f = preview_first("hol", "ROLL_NEXT");
        cr_expect_str_eq(fstr(f, "verdict"), "moved");
        const char *ft = fstr(f, "fire_time"), *at = fstr(f, "at");
        char want_day[16];
        snprintf(want_day, sizeof(want_day), "%.4s-%.2s-%.2s", tomorrow, tomorrow + 4,
                 tomorrow + 6);
        cr_expect(!strncmp(ft, want_day, 10), "moved to tomorrow: %s", ft);
        cr_expect_str_eq(ft + 10, at + 10, "the same time of day: %s vs %s", ft, at);
        cr_expect(strstr(fstr(f, "reason"), "hol"), "%s", fstr(f, "reason"));
        json_decref(f);
        /* taskbus schedule next --task previews B with its calendars */
        char *out = NULL;
        int rc = tbt_run(&out,
                         "HOME=/nonexistent TASKBUS_API=http://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                         "%s/bin/taskbus schedule next --task %s --count 2 2>&1",
                         con.port, alice + strlen("Bearer "), tbt_build_dir(), b);
        cr_expect_eq(rc, 0, "schedule next: %s", out);
        cr_expect(strstr(out, "moved from") && strstr(out, "calendar 'hol' (roll_next): moved to"),
                  "schedule next shows the roll: %s", out);
        cr_expect(!strncmp(out, want_day, 10), "the first line is tomorrow's instant: %s", out);
        free(out);

        /* the calendar without today's holiday: both fire again, tasks untouched */
        char far[9], far_end[9];
        ymd(now + 400 * DAY_MS, far);
        ymd(now + 401 * DAY_MS, far_end);
        put_calendar("hol", far, far_end, "none", 200);
        int64_t t0 = tb_now_ms();
        f = preview_first("hol", "ROLL_NEXT");
        cr_expect_str_eq(fstr(f, "verdict"), "fire");
        int64_t fire_ms = 0;
        char terr[128];
        cr_expect_eq(tb_time_parse(fstr(f, "fire_time"), &fire_ms, terr, sizeof(terr)), TB_OK);
        cr_expect(fire_ms - t0 < 5000, "the next fire is within seconds: %s",
                  fstr(f, "fire_time"));
        json_decref(f);
        cr_assert(wait_runs(a, "status = 'succeeded'", 1, 30000), "A does not run after the update");
        cr_assert(wait_runs(b, "status = 'succeeded'", 1, 30000), "B does not run after the update");
        int64_t took = tb_now_ms() - t0;
        fprintf(stderr, "test_calendar_apply: both tasks ran %" PRId64 " ms after the calendar "
                "update\n", took);
        cr_expect(took < 20000, "the update took effect in %" PRId64 " ms", took);
        /* and B's run is at a nominal time of today: the run id stayed nominal */
        cr_expect_eq(runs_where(b, "status = 'skipped_calendar'"), 0);
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", a);
        tbt_http_res_t r = tbt_http(con.port, "DELETE", path, alice, NULL);
        tbt_http_free(&r);
        snprintf(path, sizeof(path), "/v1/tasks/%s", b);
        r = tbt_http(con.port, "DELETE", path, alice, NULL);
        tbt_http_free(&r);
}

Test(calendar_apply, a_week_of_daily_occurrences) {
        /* Wednesday 2026-11-25 is a holiday; Saturday and Sunday the weekend */
        put_calendar("wk", "20261125", "20261126", "sat,sun", 201);
        char ex[64], roll[64];
        snprintf(ex, sizeof(ex), "%s",
                 create("daily-ex", "{\"cron\": \"0 9 * * *\"}",
                        "[{\"calendar\": \"wk\", \"rule\": \"EXCLUDE\"}]", true));
        snprintf(roll, sizeof(roll), "%s",
                 create("daily-roll", "{\"cron\": \"0 9 * * *\"}",
                        "[{\"calendar\": \"wk\", \"rule\": \"ROLL_NEXT\"}]", true));
        static const char *const want_ex[] = {"fire", "fire", "skipped", "fire",
                                              "fire", "skipped", "skipped"};
        static const char *const want_roll[] = {"fire",  "fire", "moved",    "duplicate",
                                                "fire", "moved", "duplicate"};
        static const char *const roll_to[] = {"2026-11-23", "2026-11-24", "2026-11-26", NULL,
                                              "2026-11-27", "2026-11-30", NULL};
        for (int k = 0; k < 2; k++) {
                char path[256];
                snprintf(path, sizeof(path),
                         "/v1/tasks/%s/occurrences?from=2026-11-23T00:00:00Z&to=2026-11-30T00:00:00Z",
                         k ? roll : ex);
                tbt_http_res_t r = tbt_http(con.port, "GET", path, alice, NULL);
                cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body.data);
                json_t *items = json_object_get(r.j, "items");
                cr_assert_eq(json_array_size(items), 7, "%s", r.body.data);
                cr_expect_eq(json_integer_value(json_object_get(r.j, "skipped")), k ? 2 : 3,
                             "%s", r.body.data);
                for (size_t i = 0; i < 7; i++) {
                        json_t *o = json_array_get(items, i);
                        const char *v = fstr(o, "verdict");
                        cr_expect_str_eq(v, k ? want_roll[i] : want_ex[i], "day %zu: %s", i,
                                         json_dumps(o, JSON_COMPACT));
                        if (k && roll_to[i])
                                cr_expect(!strncmp(fstr(o, "fire_time"), roll_to[i], 10) &&
                                                  !strcmp(fstr(o, "fire_time") + 10, "T09:00:00Z"),
                                          "day %zu runs at %s", i, fstr(o, "fire_time"));
                        if (!k && i == 2)
                                cr_expect(strstr(fstr(o, "reason"), "2026-11-25 is in calendar 'wk'"),
                                          "%s", fstr(o, "reason"));
                }
                tbt_http_free(&r);
        }
        /* a backfill step emits only what runs, and counts the others */
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s/backfill", roll);
        tbt_http_res_t r = tbt_http(con.port, "POST", path, alice,
                                    "{\"from\": \"2026-11-23T00:00:00Z\", "
                                    "\"to\": \"2026-11-30T00:00:00Z\", \"max_parallel\": 1}");
        cr_assert(r.status == 202 || r.status == 200, "%ld %s", r.status, r.body.data);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "skipped")), 2, "%s", r.body.data);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "emitted")), 1, "%s", r.body.data);
        tbt_http_free(&r);
}

/* The answer to creating \p calendars must be a 400 naming \p field. */
static void refused(const char *calendars, const char *field, const char *msg) {
        char body[2048];
        snprintf(body, sizeof(body),
                 "{\"name\": \"bad\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"schedule\": {\"every\": \"1h\"}, \"calendars\": %s}",
                 calendars);
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/tasks", alice, body);
        cr_expect_eq(r.status, 400, "%s: %ld %s", calendars, r.status, r.body.data);
        json_t *e = json_object_get(r.j, "error");
        cr_expect_str_eq(fstr(e, "field"), field, "%s", r.body.data);
        cr_expect(strstr(fstr(e, "message"), msg), "%s: %s", msg, r.body.data);
        tbt_http_free(&r);
}

Test(calendar_apply, validation_names_the_field) {
        put_calendar("v1", "20300101", "20300102", "sat,sun", 201);
        put_calendar("v2", "20300101", "20300102", "none", 201);
        refused("[{\"calendar\": \"v1\", \"rule\": \"EXCLUDE\"}, {\"calendar\": \"v2\", "
                "\"rule\": \"sideways\"}]",
                "calendars[1].rule", "one of EXCLUDE, ONLY, ROLL_NEXT, ROLL_PREVIOUS");
        refused("[{\"calendar\": \"v1\", \"rule\": \"ROLL_NEXT\"}, {\"calendar\": \"v2\", "
                "\"rule\": \"ROLL_PREVIOUS\"}]",
                "calendars[1].rule", "cannot both be used");
        refused("[{\"calendar\": \"v1\"}, {\"calendar\": \"v1\", \"rule\": \"ONLY\"}]",
                "calendars[1].calendar", "already named by calendars[0]");
        refused("[{\"calendar\": \"no such\"}]", "calendars[0].calendar", "not a calendar name");
        refused("[{\"calendar\": \"absent\"}]", "calendars[0].calendar",
                "calendar 'absent' does not exist in group 'ops'");
        refused("[{\"calendar\": \"a\"},{\"calendar\": \"b\"},{\"calendar\": \"c\"},"
                "{\"calendar\": \"d\"},{\"calendar\": \"e\"},{\"calendar\": \"f\"},"
                "{\"calendar\": \"g\"},{\"calendar\": \"h\"},{\"calendar\": \"i\"}]",
                "calendars", "at most 8");
        refused("{\"calendar\": \"v1\"}", "calendars", "an array");
        /* accepted: the normalized rule is the Avro symbol */
        const char *id = create("ok", "{\"every\": \"1h\"}",
                                "[{\"calendar\": \"v1\", \"rule\": \"only\"}]", true);
        char path[128];
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        tbt_http_res_t r = tbt_http(con.port, "GET", path, alice, NULL);
        cr_assert_eq(r.status, 200);
        json_t *c = json_array_get(json_object_get(r.j, "calendars"), 0);
        cr_expect_str_eq(fstr(c, "calendar"), "v1");
        cr_expect_str_eq(fstr(c, "rule"), "ONLY");
        tbt_http_free(&r);
}
