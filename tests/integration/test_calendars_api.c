/**
 * @file test_calendars_api.c
 * @brief /v1/calendars against a taskbusd child (the api role) on a private
 *        stack: tests/data/calendars/fr-holidays.ics PUT as text/calendar
 *        (201, its zone from X-WR-TIMEZONE, the weekend asked for), replaced
 *        with If-Match (200, version 2) and refused with a stale one (409);
 *        read back as JSON and as text/calendar byte for byte; listed; the
 *        security-group wall (another group's calendar is a 404, writing
 *        into a group one is not in a 403); the same name in two groups;
 *        and bad input answered 400/415 naming the field, with the reader's
 *        exact message (line and property) and nothing written; the CLI
 *        (`taskbus calendars`): create from --date/--range, create refused
 *        when it exists (If-None-Match: *), update keeping the days, show
 *        --ics, list, and delete refused while a task names the calendar.
 */
#include <criterion/criterion.h>

#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tbt_console_t con;
static char alice[96], bob[96], carol[96];
static char *fr_ics;

static char *read_data(const char *rel) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", tbt_source_dir(), rel);
        FILE *f = fopen(path, "rb");
        cr_assert(f, "cannot open %s", path);
        char *buf = calloc(1, 1 << 16);
        cr_assert(buf);
        size_t n = fread(buf, 1, (1 << 16) - 1, f);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_console_start_with(&con, "api", NULL);
        tbt_stack_user(&con.st, "alice", "ops", alice);
        tbt_stack_user(&con.st, "bob", "dev", bob);
        tbt_stack_user(&con.st, "carol", "dev,ops", carol);
        fr_ics = read_data("tests/data/calendars/fr-holidays.ics");
}

static void teardown(void) {
        free(fr_ics);
        tbt_console_stop(&con);
        curl_global_cleanup();
}

TestSuite(calendars_api, .init = setup, .fini = teardown, .timeout = 300);

#define expect_status(r, want)                                                                \
        cr_assert_eq((r).status, (want), "%s:%d: expected %d, got %ld: %s", __FILE__,          \
                     __LINE__, (want), (r).status, (r).body.data)

/* \p method \p path as \p authz with the extra header \p extra (NULL: none)
 * and \p body sent as \p type (NULL: application/json). */
static tbt_http_res_t req(const char *authz, const char *method, const char *path,
                          const char *type, const char *extra, const char *body) {
        char a[128], t[128];
        snprintf(a, sizeof(a), "Authorization: %s", authz);
        snprintf(t, sizeof(t), "Content-Type: %s", type ? type : "application/json");
        const char *h[] = {a, t, extra, NULL};
        return tbt_http_with(con.port, method, path, h, body);
}

static tbt_http_res_t put_ics(const char *authz, const char *path, const char *extra,
                              const char *body) {
        return req(authz, "PUT", path, "text/calendar; charset=utf-8", extra, body);
}

static const char *jstr(const tbt_http_res_t *r, const char *key) {
        const char *s = json_string_value(json_object_get(r->j, key));
        return s ? s : "(none)";
}

static const char *err_field(const tbt_http_res_t *r) {
        const char *f = json_string_value(json_object_get(json_object_get(r->j, "error"), "field"));
        return f ? f : "";
}

static const char *err_msg(const tbt_http_res_t *r) {
        const char *m =
                json_string_value(json_object_get(json_object_get(r->j, "error"), "message"));
        return m ? m : "";
}

/* The answer must be \p status naming \p field with message \p msg (NULL: any). */
static void expect_error(tbt_http_res_t r, long status, const char *field, const char *msg) {
        cr_expect_eq(r.status, status, "expected %ld, got %ld: %s", status, r.status,
                     r.body.data);
        cr_expect_str_eq(err_field(&r), field, "%s", r.body.data);
        if (msg)
                cr_expect_str_eq(err_msg(&r), msg, "%s", r.body.data);
        tbt_http_free(&r);
}

Test(calendars_api, put_get_replace_and_the_group_wall) {
        char etag[64];
        tbt_http_res_t r = put_ics(alice, "/v1/calendars/fr?security_group=ops&weekend=sun,sat",
                                   NULL, fr_ics);
        expect_status(r, 201);
        cr_expect_str_eq(jstr(&r, "name"), "fr");
        cr_expect_str_eq(jstr(&r, "security_group"), "ops");
        cr_expect_str_eq(jstr(&r, "timezone"), "Europe/Paris", "from X-WR-TIMEZONE");
        cr_expect_str_eq(jstr(&r, "weekend"), "sat,sun");
        cr_expect_eq(json_integer_value(json_object_get(r.j, "events")), 6);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "version")), 1);
        cr_expect_str_eq(jstr(&r, "updated_by"), "alice");
        cr_expect_str_eq(tbt_http_header(&r, "ETag", etag, sizeof(etag)), "\"1\"");
        tbt_http_free(&r);
        tbt_wait_sql(&con.st,
                     "SELECT version || ' ' || timezone || ' ' || weekend || ' ' || events "
                     "FROM calendars WHERE security_group = 'ops' AND name = 'fr'",
                     "1 Europe/Paris sat,sun 6", 10000);

        /* replaced at version 1: version 2, another zone, no weekend */
        r = put_ics(alice, "/v1/calendars/fr?security_group=ops&timezone=UTC", "If-Match: \"1\"",
                    fr_ics);
        expect_status(r, 200);
        cr_expect_eq(json_integer_value(json_object_get(r.j, "version")), 2);
        cr_expect_str_eq(jstr(&r, "timezone"), "UTC");
        cr_expect_str_eq(jstr(&r, "weekend"), "");
        tbt_http_free(&r);
        /* a stale If-Match is refused and writes nothing */
        expect_error(put_ics(alice, "/v1/calendars/fr?security_group=ops&weekend=fri",
                             "If-Match: \"1\"", fr_ics),
                     409, "If-Match",
                     "calendar 'fr' is at version 2, not 1 (If-Match): read it again and retry");
        expect_error(put_ics(alice, "/v1/calendars/nope?security_group=ops", "If-Match: \"1\"",
                             fr_ics),
                     404, "If-Match",
                     "calendar 'nope' of group 'ops' does not exist: leave out If-Match to "
                     "create it");
        tbt_wait_sql(&con.st,
                     "SELECT version || ' ' || weekend || ' ' || "
                     "(SELECT count(*) FROM calendars) FROM calendars WHERE name = 'fr'",
                     "2  1", 10000);

        /* read back: JSON with the source, and the source alone */
        r = req(alice, "GET", "/v1/calendars/fr", NULL, NULL, NULL);
        expect_status(r, 200);
        cr_expect_str_eq(jstr(&r, "ics"), fr_ics);
        cr_expect_str_eq(jstr(&r, "timezone"), "UTC");
        cr_expect_eq(json_integer_value(json_object_get(r.j, "version")), 2);
        cr_expect_str_eq(tbt_http_header(&r, "ETag", etag, sizeof(etag)), "\"2\"");
        tbt_http_free(&r);
        r = req(alice, "GET", "/v1/calendars/fr?security_group=ops", NULL,
                "Accept: text/calendar", NULL);
        expect_status(r, 200);
        cr_expect_str_eq(tbt_http_header(&r, "Content-Type", etag, sizeof(etag)),
                         "text/calendar; charset=utf-8");
        cr_expect_eq(r.body.len, strlen(fr_ics));
        cr_expect(!memcmp(r.body.data, fr_ics, r.body.len), "the source differs");
        tbt_http_free(&r);
        r = req(alice, "GET", "/v1/calendars", NULL, NULL, NULL);
        expect_status(r, 200);
        json_t *items = json_object_get(r.j, "calendars");
        cr_assert_eq(json_array_size(items), 1, "%s", r.body.data);
        cr_expect_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "name")),
                         "fr");
        cr_expect_null(json_object_get(json_array_get(items, 0), "ics"), "no source in a list");
        tbt_http_free(&r);

        /* the group wall: bob (dev) neither sees nor writes ops' calendar */
        expect_error(req(bob, "GET", "/v1/calendars/fr", NULL, NULL, NULL), 404, "",
                     "no calendar 'fr' in your security groups");
        expect_error(req(bob, "GET", "/v1/calendars/fr?security_group=ops", NULL, NULL, NULL),
                     403, "security_group",
                     "security_group: you are not a member of 'ops'; your groups: dev");
        expect_error(put_ics(bob, "/v1/calendars/fr?security_group=ops", NULL, fr_ics), 403,
                     "security_group",
                     "security_group: you are not a member of 'ops'; your groups: dev");
        r = req(bob, "GET", "/v1/calendars", NULL, NULL, NULL);
        expect_status(r, 200);
        cr_expect_eq(json_array_size(json_object_get(r.j, "calendars")), 0, "%s", r.body.data);
        tbt_http_free(&r);

        /* the same name in another group: carol, in both, must say which */
        r = put_ics(bob, "/v1/calendars/fr?security_group=dev", NULL, fr_ics);
        expect_status(r, 201);
        tbt_http_free(&r);
        expect_error(req(carol, "GET", "/v1/calendars/fr", NULL, NULL, NULL), 409,
                     "security_group",
                     "calendar 'fr' exists in several of your groups: name one with "
                     "?security_group=");
        r = req(carol, "GET", "/v1/calendars/fr?security_group=dev", NULL, NULL, NULL);
        expect_status(r, 200);
        cr_expect_str_eq(jstr(&r, "security_group"), "dev");
        cr_expect_str_eq(jstr(&r, "updated_by"), "bob");
        tbt_http_free(&r);
        r = req(carol, "GET", "/v1/calendars", NULL, NULL, NULL);
        expect_status(r, 200);
        cr_expect_eq(json_array_size(json_object_get(r.j, "calendars")), 2, "%s", r.body.data);
        tbt_http_free(&r);
}

Test(calendars_api, bad_input_names_the_field) {
        const char *bysetpos = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261225\r\n"
                               "RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1\r\nEND:VEVENT\r\n"
                               "END:VCALENDAR\r\n";
        expect_error(put_ics(alice, "/v1/calendars/bad?security_group=ops", NULL, bysetpos), 400,
                     "ics",
                     "ics: line 4: RRULE: BYSETPOS is not supported (supported: FREQ, INTERVAL, "
                     "COUNT, UNTIL, BYMONTH, BYMONTHDAY, BYDAY, WKST)");
        expect_error(put_ics(alice, "/v1/calendars/bad?security_group=ops", NULL, ""), 400, "ics",
                     "ics: the input is empty (BEGIN:VCALENDAR expected)");
        expect_error(req(alice, "PUT", "/v1/calendars/bad?security_group=ops", NULL, NULL,
                         fr_ics),
                     415, "Content-Type",
                     "Content-Type: send the iCalendar file as text/calendar (got "
                     "application/json)");
        expect_error(put_ics(alice, "/v1/calendars/bad", NULL, fr_ics), 400, "security_group",
                     "security_group: required: the group the calendar belongs to "
                     "(?security_group=; your groups: ops)");
        expect_error(put_ics(alice, "/v1/calendars/bad?security_group=ops&timezone=Mars/Olympus",
                             NULL, fr_ics),
                     400, "timezone",
                     "timezone: unknown time zone 'Mars/Olympus' (use an IANA name such as "
                     "'Europe/London' or 'UTC')");
        expect_error(put_ics(alice, "/v1/calendars/bad?security_group=ops&weekend=saturday", NULL,
                             fr_ics),
                     400, "weekend",
                     "weekend: 'saturday' is not a weekday (use mon, tue, wed, thu, fri, sat, "
                     "sun, comma-separated, or none)");
        expect_error(put_ics(alice,
                             "/v1/calendars/bad?security_group=ops&weekend=mon,tue,wed,thu,fri,"
                             "sat,sun",
                             NULL, fr_ics),
                     400, "weekend",
                     "calendar 'bad': weekend: every day of the week leaves no business day "
                     "(name at most six weekdays)");
        expect_error(put_ics(alice, "/v1/calendars/bad?security_group=ops&tz=UTC", NULL, fr_ics),
                     400, "tz", NULL);
        expect_error(put_ics(alice, "/v1/calendars/bad?security_group=ops", "If-Match: soon",
                             fr_ics),
                     400, "If-Match",
                     "If-Match: expected the calendar's ETag, a version in quotes like \"3\" "
                     "(W/\"3\", a bare 3 or * are also accepted)");
        expect_error(put_ics(alice, "/v1/calendars/a%20b?security_group=ops", NULL, fr_ics), 400,
                     "name", "name: a calendar name is 1 to 128 of A-Z a-z 0-9 - _ . :");
        expect_error(req(alice, "GET", "/v1/calendars/bad", NULL, NULL, NULL), 404, "",
                     "no calendar 'bad' in your security groups");
        /* nothing of it was written */
        tbt_wait_sql(&con.st, "SELECT count(*) FROM calendars", "0", 10000);
}

/* `taskbus calendars ARGS` as \p authz; @returns its exit status, *out its
 * output (stdout and stderr). */
static int cli(char **out, const char *authz, const char *args) {
        return tbt_run(out, "HOME=/nonexistent TASKBUS_API=http://127.0.0.1:%d "
                            "TASKBUS_TOKEN='%s' %s/bin/taskbus calendars %s 2>&1",
                       con.port, authz + strlen("Bearer "), tbt_build_dir(), args);
}

#define expect_cli(want_rc, out, authz, args, ...)                                            \
        do {                                                                                   \
                free(out);                                                                     \
                out = NULL;                                                                    \
                int rc_ = cli(&out, authz, args);                                              \
                cr_assert_eq(rc_, want_rc, "taskbus calendars %s: exit %d: %s", args, rc_,     \
                             out);                                                             \
        } while (0)

Test(calendars_api, cli_create_update_show_list_and_delete_in_use) {
        char *out = NULL;
        expect_cli(0, out, alice, "create hol --group ops --date 2026-12-25 "
                                  "--range 2026-08-01..2026-08-15 --timezone Europe/Paris");
        cr_expect(strstr(out, "hol (group ops): 2 events, zone Europe/Paris, weekend none, "
                              "version 1"),
                  "%s", out);
        /* the days as the API stores them: two all-day events */
        expect_cli(0, out, alice, "show hol --ics");
        cr_expect(strstr(out, "DTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261226"), "%s",
                  out);
        cr_expect(strstr(out, "DTSTART;VALUE=DATE:20260801\r\nDTEND;VALUE=DATE:20260816"), "%s",
                  out);
        /* create never replaces */
        expect_cli(1, out, alice, "create hol --group ops --date 2026-01-01");
        cr_expect(strstr(out, "409 conflict: calendar 'hol' of group 'ops' exists already"), "%s",
                  out);
        expect_error(put_ics(alice, "/v1/calendars/hol?security_group=ops",
                             "If-None-Match: \"3\"", fr_ics),
                     400, "If-None-Match", NULL);
        /* update: the weekend changes, the days stay; the group is found */
        expect_cli(0, out, alice, "update hol --weekend sat,sun");
        cr_expect(strstr(out, "hol (group ops): 2 events, zone Europe/Paris, weekend sat,sun, "
                              "version 2"),
                  "%s", out);
        /* a file with the flags' days added */
        char args[1200];
        snprintf(args, sizeof(args), "update hol --ics %s/tests/data/calendars/fr-holidays.ics "
                 "--date 2027-03-01", tbt_source_dir());
        expect_cli(0, out, alice, args);
        cr_expect(strstr(out, "7 events, zone Europe/Paris, weekend sat,sun, version 3"), "%s",
                  out);
        expect_cli(0, out, alice, "list");
        cr_expect(strstr(out, "hol") && strstr(out, "ops") && strstr(out, "sat,sun"), "%s", out);
        expect_cli(0, out, bob, "list");
        cr_expect(strstr(out, "no calendars"), "bob sees no calendar of ops: %s", out);
        /* bad flags name themselves */
        expect_cli(2, out, alice, "create x --group ops --date 2026-02-30");
        cr_expect(strstr(out, "--date: expected a date YYYY-MM-DD"), "%s", out);
        expect_cli(2, out, alice, "create x --group ops --range 2026-02-03..2026-02-01");
        cr_expect(strstr(out, "--range: '2026-02-03..2026-02-01' ends before it starts"), "%s",
                  out);
        expect_cli(2, out, alice, "create x --group ops");
        cr_expect(strstr(out, "no days"), "%s", out);

        /* a task naming the calendar (its projected row, as the projector
         * writes it): deleting the calendar is refused, naming the task */
        const char *id = "7d4c1a52-0b8e-4d5f-9a31-3c2f6e8b9d10";
        char q[1024];
        snprintf(q, sizeof(q),
                 "INSERT INTO tasks (id, version, name, security_group, user_id, spec, "
                 "created_at, created_by, updated_at, event_partition, event_offset) VALUES "
                 "('%s', 1, 'uses-hol', 'ops', 'alice', '{\"calendars\": [{\"calendar\": "
                 "\"hol\", \"rule\": \"EXCLUDE\"}]}', now(), 'alice', now(), 0, 0)",
                 id);
        PQclear(PQexec(con.st.conn, q));
        snprintf(q, sizeof(q), "SELECT count(*) FROM tasks WHERE id = '%s'", id);
        tbt_wait_sql(&con.st, q, "1", 30000);
        expect_cli(1, out, alice, "delete hol");
        cr_expect(strstr(out, "409 conflict: calendar 'hol' is named by tasks of group 'ops'") &&
                          strstr(out, id),
                  "%s", out);
        expect_cli(1, out, bob, "delete hol");
        cr_expect(strstr(out, "404"), "another group's calendar is not found: %s", out);
        /* once the task is gone, it can go */
        snprintf(q, sizeof(q), "DELETE FROM tasks WHERE id = '%s'", id);
        PQclear(PQexec(con.st.conn, q));
        snprintf(q, sizeof(q), "SELECT count(*) FROM tasks WHERE id = '%s'", id);
        tbt_wait_sql(&con.st, q, "0", 30000);
        expect_error(req(alice, "DELETE", "/v1/calendars/hol", NULL, "If-Match: \"1\"", NULL),
                     409, "If-Match", "calendar 'hol' is at version 3, not 1 (If-Match): read it "
                                      "again and retry");
        expect_cli(0, out, alice, "delete hol");
        cr_expect(strstr(out, "deleted calendar hol"), "%s", out);
        expect_cli(1, out, alice, "show hol");
        cr_expect(strstr(out, "404"), "%s", out);
        tbt_wait_sql(&con.st, "SELECT count(*) FROM calendars", "0", 10000);
        free(out);
}
