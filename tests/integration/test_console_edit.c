/**
 * @file test_console_edit.c
 * @brief The console's task detail and editor screens and the schedule
 *        preview they use, against a taskbusd child running every role on a
 *        private stack (tbt_console_start(), shared with
 *        test_console_browser.c).
 *
 * schedule_preview: POST /v1/schedule/preview through real HTTP: the DST
 * gap and overlap of Europe/Paris under each policy (instants, local times,
 * offsets and notes), an every schedule from its anchor, expires_at ending
 * the list, a bad cron and a bad time zone refused with the very field and
 * message a task create gets, the count bounds, unknown fields, bad times,
 * and no token.
 *
 * editor_detail_conflict_delete: tests/console/console_edit.py in a real
 * headless Chromium: a task created in the editor with a bad cron first (the
 * field shows the API's message) and then a good one, the live preview while
 * typing, the detail page's next fires, two sessions editing one task (the
 * second sees the other version, then re-applies its change on top), the
 * change history with its diff, and a delete with its confirmation. Its
 * screenshots are artefacts in <build>/artefacts/console_edit/, never
 * committed. A missing chromium, chromium-driver or python3-selenium fails.
 */
#include <criterion/criterion.h>

#include "support.h"
#include "support_api.h"

#include <stdio.h>
#include <string.h>

static tbt_console_t con;

static void setup(void) { tbt_console_start(&con); }

static void teardown(void) { tbt_console_stop(&con); }

TestSuite(console_edit, .init = setup, .fini = teardown, .timeout = 600);

/* ---- the preview endpoint ------------------------------------------------------------ */

static char authz[96];

/** POST /v1/schedule/preview with \p body; asserts the status. */
static tbt_http_res_t preview(const char *body, long want) {
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/schedule/preview", authz, body);
        cr_assert_eq(r.status, want, "preview %s: expected %ld, got %ld: %s", body, want, r.status,
                     r.body.data);
        return r;
}

/** Fire \p i of \p r is at \p at, local \p local, note \p dst, offset changed or not. */
static void fire_is(const tbt_http_res_t *r, size_t i, const char *at, const char *local,
                    const char *dst, bool changed) {
        json_t *f = json_array_get(json_object_get(r->j, "fires"), i);
        cr_assert_not_null(f, "no fire %zu in %s", i, r->body.data);
        cr_assert_str_eq(json_string_value(json_object_get(f, "at")), at, "fire %zu: %s", i,
                         r->body.data);
        cr_assert_str_eq(json_string_value(json_object_get(f, "local")), local, "fire %zu: %s", i,
                         r->body.data);
        cr_assert_str_eq(json_string_value(json_object_get(f, "dst")), dst, "fire %zu: %s", i,
                         r->body.data);
        cr_assert_eq(json_is_true(json_object_get(f, "offset_changed")), changed,
                     "fire %zu offset_changed: %s", i, r->body.data);
}

static size_t fire_count(const tbt_http_res_t *r) {
        return json_array_size(json_object_get(r->j, "fires"));
}

/** A 400 naming \p field; its message into \p msg. */
static void refused(const char *body, const char *field, char *msg, size_t size) {
        tbt_http_res_t r = preview(body, 400);
        json_t *e = json_object_get(r.j, "error");
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")), field, "%s -> %s", body,
                         r.body.data);
        if (msg)
                snprintf(msg, size, "%s", json_string_value(json_object_get(e, "message")));
        tbt_http_free(&r);
}

/** The 400 of a task create with \p schedule: its field and message must be \p field and
 *  \p msg, the preview's. */
static void create_refuses_alike(const char *schedule, const char *field, const char *msg) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"name\": \"n\", \"script\": \"true\", \"security_group\": \"ga\", "
                 "\"schedule\": %s}",
                 schedule);
        tbt_http_res_t r = tbt_http(con.port, "POST", "/v1/tasks", authz, body);
        cr_assert_eq(r.status, 400, "create %s: %ld %s", body, r.status, r.body.data);
        json_t *e = json_object_get(r.j, "error");
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")), field, "%s", r.body.data);
        cr_assert_str_eq(json_string_value(json_object_get(e, "message")), msg,
                         "the preview and a create say different things: %s", r.body.data);
        tbt_http_free(&r);
}

Test(console_edit, schedule_preview) {
        char token[80];
        tbt_console_user(&con, "alice", "ga", token);
        snprintf(authz, sizeof(authz), "Bearer %s", token);

        /* spring forward in Paris, 2027-03-28: 02:00-02:59 does not exist */
        tbt_http_res_t r = preview("{\"schedule\": {\"cron\": \"30 2 * * *\", \"timezone\": "
                                   "\"Europe/Paris\"}, \"count\": 3, "
                                   "\"from\": \"2027-03-26T12:00:00Z\"}",
                                   200);
        cr_assert_eq(fire_count(&r), 3, "%s", r.body.data);
        fire_is(&r, 0, "2027-03-27T01:30:00Z", "2027-03-27T02:30:00+01:00", "none", false);
        fire_is(&r, 1, "2027-03-28T01:00:00Z", "2027-03-28T03:00:00+02:00", "shifted", true);
        fire_is(&r, 2, "2027-03-29T00:30:00Z", "2027-03-29T02:30:00+02:00", "none", false);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "timezone")), "Europe/Paris");
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "from")), "2027-03-26T12:00:00Z");
        cr_assert(json_is_false(json_object_get(r.j, "ended")), "%s", r.body.data);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.j, "schedule"),
                                                           "dst_gap")),
                         "shift", "the normalized schedule: %s", r.body.data);
        json_t *f1 = json_array_get(json_object_get(r.j, "fires"), 1);
        cr_assert_eq(json_integer_value(json_object_get(f1, "offset_seconds")), 7200);
        tbt_http_free(&r);
        r = preview("{\"schedule\": {\"cron\": \"30 2 * * *\", \"timezone\": \"Europe/Paris\", "
                    "\"dst_gap\": \"skip\"}, \"count\": 2, \"from\": \"2027-03-26T12:00:00Z\"}",
                    200);
        fire_is(&r, 0, "2027-03-27T01:30:00Z", "2027-03-27T02:30:00+01:00", "none", false);
        fire_is(&r, 1, "2027-03-29T00:30:00Z", "2027-03-29T02:30:00+02:00", "none", true);
        tbt_http_free(&r);

        /* fall back, 2027-10-31: 02:00-02:59 happens twice */
        r = preview("{\"schedule\": {\"cron\": \"30 2 * * *\", \"timezone\": \"Europe/Paris\", "
                    "\"dst_overlap\": \"both\"}, \"count\": 3, \"from\": \"2027-10-30T12:00:00Z\"}",
                    200);
        fire_is(&r, 0, "2027-10-31T00:30:00Z", "2027-10-31T02:30:00+02:00", "overlap_first", false);
        fire_is(&r, 1, "2027-10-31T01:30:00Z", "2027-10-31T02:30:00+01:00", "overlap_second", true);
        fire_is(&r, 2, "2027-11-01T01:30:00Z", "2027-11-01T02:30:00+01:00", "none", false);
        tbt_http_free(&r);
        r = preview("{\"schedule\": {\"cron\": \"30 2 * * *\", \"timezone\": \"Europe/Paris\"}, "
                    "\"count\": 2, \"from\": \"2027-10-30T12:00:00Z\"}",
                    200);
        fire_is(&r, 0, "2027-10-31T00:30:00Z", "2027-10-31T02:30:00+02:00", "overlap_first", false);
        fire_is(&r, 1, "2027-11-01T01:30:00Z", "2027-11-01T02:30:00+01:00", "none", true);
        tbt_http_free(&r);
        r = preview("{\"schedule\": {\"cron\": \"30 2 * * *\", \"timezone\": \"Europe/Paris\", "
                    "\"dst_overlap\": \"last\"}, \"count\": 1, \"from\": \"2027-10-30T12:00:00Z\"}",
                    200);
        fire_is(&r, 0, "2027-10-31T01:30:00Z", "2027-10-31T02:30:00+01:00", "overlap_second", true);
        tbt_http_free(&r);

        /* every: counted from its anchor, local times in UTC; expires_at ends it */
        r = preview("{\"schedule\": {\"every\": \"90m\"}, \"count\": 2, "
                    "\"from\": \"2030-01-01T00:00:00Z\", \"anchor\": \"2029-12-31T23:00:00Z\"}",
                    200);
        fire_is(&r, 0, "2030-01-01T00:30:00Z", "2030-01-01T00:30:00+00:00", "none", false);
        fire_is(&r, 1, "2030-01-01T02:00:00Z", "2030-01-01T02:00:00+00:00", "none", false);
        cr_assert_str_eq(json_string_value(json_object_get(r.j, "timezone")), "UTC");
        tbt_http_free(&r);
        r = preview("{\"schedule\": {\"cron\": \"0 3 * * *\"}, \"count\": 10, "
                    "\"from\": \"2030-01-01T00:00:00Z\", \"expires_at\": \"2030-01-03T00:00:00Z\"}",
                    200);
        cr_assert_eq(fire_count(&r), 2, "expires_at ends it: %s", r.body.data);
        cr_assert(json_is_true(json_object_get(r.j, "ended")), "%s", r.body.data);
        tbt_http_free(&r);

        /* count: 10 by default, 1 to 100 */
        r = preview("{\"schedule\": {\"every\": \"1m\"}}", 200);
        cr_assert_eq(fire_count(&r), 10, "%s", r.body.data);
        tbt_http_free(&r);
        r = preview("{\"schedule\": {\"every\": \"1m\"}, \"count\": 100}", 200);
        cr_assert_eq(fire_count(&r), 100, "%s", r.body.data);
        tbt_http_free(&r);
        char msg[512];
        refused("{\"schedule\": {\"every\": \"1m\"}, \"count\": 0}", "count", msg, sizeof(msg));
        cr_assert(strstr(msg, "from 1 to 100"), "%s", msg);
        refused("{\"schedule\": {\"every\": \"1m\"}, \"count\": 101}", "count", NULL, 0);
        refused("{\"schedule\": {\"every\": \"1m\"}, \"count\": \"5\"}", "count", NULL, 0);

        /* a bad schedule: the very field and message of a create */
        refused("{\"schedule\": {\"cron\": \"0 25 * * *\"}}", "schedule.cron", msg, sizeof(msg));
        cr_assert(strstr(msg, "hour"), "the message names the cron field: %s", msg);
        create_refuses_alike("{\"cron\": \"0 25 * * *\"}", "schedule.cron", msg);
        refused("{\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"Europe/Pariss\"}}",
                "schedule.timezone", msg, sizeof(msg));
        create_refuses_alike("{\"cron\": \"0 3 * * *\", \"timezone\": \"Europe/Pariss\"}",
                             "schedule.timezone", msg);
        refused("{\"schedule\": {\"every\": \"500ms\"}}", "schedule.every", msg, sizeof(msg));
        create_refuses_alike("{\"every\": \"500ms\"}", "schedule.every", msg);
        refused("{\"schedule\": {\"once\": \"2001-01-01T00:00:00Z\"}}", "schedule.once", NULL, 0);
        refused("{\"count\": 3}", "schedule", NULL, 0);

        /* the preview's own fields */
        refused("{\"schedule\": {\"every\": \"1m\"}, \"cuont\": 3}", "cuont", NULL, 0);
        refused("{\"schedule\": {\"every\": \"1m\"}, \"from\": \"yesterday\"}", "from", NULL, 0);
        refused("{\"schedule\": {\"every\": \"1m\"}, \"anchor\": 5}", "anchor", NULL, 0);
        r = preview("[1]", 400);
        tbt_http_free(&r);

        /* authenticated like every route */
        r = tbt_http(con.port, "POST", "/v1/schedule/preview", NULL,
                     "{\"schedule\": {\"every\": \"1m\"}}");
        cr_assert_eq(r.status, 401, "no token: %ld", r.status);
        tbt_http_free(&r);
}

/* ---- the screens, in a browser --------------------------------------------------------- */

Test(console_edit, editor_detail_conflict_delete) {
        char alice[80], carol[80], env[600];
        tbt_console_user(&con, "alice", "ga", alice);
        tbt_console_user(&con, "carol", "ga", carol);
        snprintf(env, sizeof(env), "TB_ALICE='%s' TB_CAROL='%s' TB_IMG_DIR='%s/artefacts/console_edit'",
                 alice, carol, tbt_build_dir());
        tbt_console_browser(&con, "console_edit.py", env, "console_edit");
}
