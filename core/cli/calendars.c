/**
 * @file cli/calendars.c
 * @brief `taskbus calendars create|update|delete|list|show`: business
 *        calendars through the REST API (/v1/calendars, api/calendars.c).
 *
 * A calendar's days come from an iCalendar file (--ics), or from dates and
 * date ranges given as flags (--date, --range), which this file writes as
 * the all-day VEVENTs of an .ics; the API reads and checks either the same
 * way. create refuses to replace a calendar (If-None-Match: *); update reads
 * the calendar first and writes it back at that version (If-Match), keeping
 * its days when no new ones are given, so two updates at once never
 * silently undo each other.
 * Exit status: 0 ok, 1 the server or the system refused, 2 usage error.
 */
#include "cli.h"
#include "rest.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/** Largest .ics read from a file (the API's limit is 1 MiB). */
#define TB_CLI_CAL_ICS_MAX (1024 * 1024)

static const char tb_cli_cal_usage_text[] =
        "usage: taskbus calendars COMMAND [ARGS...]\n"
        "\n"
        "  create NAME --group G DAYS [--timezone Z] [--weekend sat,sun]\n"
        "                         create a calendar (fails if it exists)\n"
        "  update NAME [--group G] [DAYS] [--timezone Z] [--weekend sat,sun]\n"
        "                         replace its days, zone or weekend (the others are kept)\n"
        "  delete NAME [--group G]  delete it (refused while tasks name it)\n"
        "  list [--group G]       the calendars of your groups\n"
        "  show NAME [--group G] [--ics]\n"
        "                         one calendar; --ics prints its iCalendar source\n"
        "\n"
        "DAYS, any of (repeatable, together):\n"
        "  --ics FILE             an iCalendar file (RFC 5545 VEVENTs: holidays exported\n"
        "                         from a calendar program; - reads stdin)\n"
        "  --date YYYY-MM-DD      one day\n"
        "  --range FROM..TO       the days FROM to TO, both included (YYYY-MM-DD)\n"
        "\n"
        "  --timezone Z           the IANA zone its days are in (default: the file's\n"
        "                         X-WR-TIMEZONE, else UTC)\n"
        "  --weekend DAYS         weekdays it also contains: sat,sun / fri,sat / none\n"
        "  --json                 print the API's JSON\n"
        "  --api URL              API base URL (default $TASKBUS_API, config, "
        TB_CLI_REST_DEFAULT_API ")\n"
        "  --token TOKEN          API token (default $TASKBUS_TOKEN or the config file)\n"
        "  --cacert FILE          CA certificate verifying an https:// API\n"
        "  -h, --help             this help\n";

static void tb_cli_cal_usage(FILE *fp) { fputs(tb_cli_cal_usage_text, fp); }

/** What the flags said. */
typedef struct tb_cli_cal_opts {
        const char *group, *ics, *timezone, *weekend, *api, *token, *cacert;
        bool json, source;
        char *kept_tz, *kept_weekend; /**< update: the current ones (owned) */
        tb_buf_t days; /**< VEVENTs from --date and --range */
        int ndays;
} tb_cli_cal_opts_t;

/* Parse YYYY-MM-DD into a UTC midnight; @returns false if it is not one. */
static bool tb_cli_cal_day(const char *s, size_t n, time_t *out) {
        struct tm tm = {0};
        char buf[11];
        if (n != 10)
                return false;
        memcpy(buf, s, 10);
        buf[10] = '\0';
        const char *end = strptime(buf, "%Y-%m-%d", &tm);
        if (!end || *end)
                return false;
        int mday = tm.tm_mday, mon = tm.tm_mon;
        *out = timegm(&tm);
        gmtime_r(out, &tm); /* 2026-02-30 comes back as March */
        return tm.tm_mday == mday && tm.tm_mon == mon;
}

/* Append one all-day VEVENT covering [from, to] (UTC midnights). */
static void tb_cli_cal_event(tb_cli_cal_opts_t *o, time_t from, time_t to) {
        struct tm a, b;
        time_t end = to + 86400; /* DTEND of an all-day event is exclusive */
        gmtime_r(&from, &a);
        gmtime_r(&end, &b);
        tb_buf_printf(&o->days,
                      "BEGIN:VEVENT\r\nUID:taskbus-cli-%d@calendars\r\nDTSTART;VALUE=DATE:"
                      "%04d%02d%02d\r\nDTEND;VALUE=DATE:%04d%02d%02d\r\nEND:VEVENT\r\n",
                      ++o->ndays, a.tm_year + 1900, a.tm_mon + 1, a.tm_mday, b.tm_year + 1900,
                      b.tm_mon + 1, b.tm_mday);
}

/* --date or --range; @returns false (after saying why) on a bad value. */
static bool tb_cli_cal_days_flag(tb_cli_cal_opts_t *o, const char *flag, const char *v) {
        time_t from, to;
        const char *dots = strstr(v, "..");
        bool range = !strcmp(flag, "--range");
        if (range ? dots && tb_cli_cal_day(v, (size_t)(dots - v), &from) &&
                            tb_cli_cal_day(dots + 2, strlen(dots + 2), &to)
                  : tb_cli_cal_day(v, strlen(v), &from)) {
                if (!range)
                        to = from;
                if (to < from) {
                        tb_cli_fail("calendars: %s: '%s' ends before it starts", flag, v);
                        return false;
                }
                if ((to - from) / 86400 > 3660) {
                        tb_cli_fail("calendars: %s: '%s' is longer than 10 years", flag, v);
                        return false;
                }
                tb_cli_cal_event(o, from, to);
                return true;
        }
        tb_cli_fail("calendars: %s: expected %s, got '%s'", flag,
                    range ? "FROM..TO, two dates YYYY-MM-DD (e.g. 2026-08-01..2026-08-15)"
                          : "a date YYYY-MM-DD (e.g. 2026-12-25)",
                    v);
        return false;
}

/* Parse the flags after the subcommand; @returns -1 to go on, else the
 * exit status. */
static int tb_cli_cal_parse(int argc, char **argv, tb_cli_cal_opts_t *o) {
        enum { O_GROUP = 1000, O_ICS, O_DATE, O_RANGE, O_TZ, O_WEEKEND, O_JSON, O_SOURCE,
               O_API, O_TOKEN, O_CACERT };
        static const struct option lo[] = {
                {"group", required_argument, NULL, O_GROUP},
                {"ics", required_argument, NULL, O_ICS},
                {"date", required_argument, NULL, O_DATE},
                {"range", required_argument, NULL, O_RANGE},
                {"timezone", required_argument, NULL, O_TZ},
                {"weekend", required_argument, NULL, O_WEEKEND},
                {"json", no_argument, NULL, O_JSON},
                {"api", required_argument, NULL, O_API},
                {"token", required_argument, NULL, O_TOKEN},
                {"cacert", required_argument, NULL, O_CACERT},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        static const struct option show_lo = {"ics", no_argument, NULL, O_SOURCE};
        struct option all[sizeof(lo) / sizeof(lo[0])];
        memcpy(all, lo, sizeof(lo));
        if (!strcmp(argv[0], "show"))
                all[1] = show_lo; /* show --ics: print the source */
        int c;
        optind = 0;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "h", all, NULL)) != -1) {
                switch (c) {
                case 'h': tb_cli_cal_usage(stdout); return 0;
                case O_GROUP: o->group = optarg; break;
                case O_ICS: o->ics = optarg; break;
                case O_DATE:
                case O_RANGE:
                        if (!tb_cli_cal_days_flag(o, c == O_DATE ? "--date" : "--range", optarg))
                                return 2;
                        break;
                case O_TZ: o->timezone = optarg; break;
                case O_WEEKEND: o->weekend = optarg; break;
                case O_JSON: o->json = true; break;
                case O_SOURCE: o->source = true; break;
                case O_API: o->api = optarg; break;
                case O_TOKEN: o->token = optarg; break;
                case O_CACERT: o->cacert = optarg; break;
                default: tb_cli_cal_usage(stderr); return 2;
                }
        }
        return -1;
}

/* The .ics to send: the file's text with the flags' events added before its
 * END:VCALENDAR, or a calendar of the flags' events alone; \p keep (an
 * update's current source) when neither is given. NULL after an error. */
static char *tb_cli_cal_body(tb_cli_cal_opts_t *o, const char *keep) {
        tb_buf_t b = {0};
        if (o->ics) {
                FILE *f = strcmp(o->ics, "-") ? fopen(o->ics, "rb") : stdin;
                if (!f) {
                        tb_cli_fail("calendars: --ics: cannot open '%s': %m", o->ics);
                        return NULL;
                }
                char chunk[8192];
                size_t n;
                while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 &&
                       b.len <= TB_CLI_CAL_ICS_MAX)
                        tb_buf_append(&b, chunk, n);
                bool err = ferror(f);
                if (f != stdin)
                        fclose(f);
                if (err || b.len > TB_CLI_CAL_ICS_MAX) {
                        tb_cli_fail("calendars: --ics: '%s': %s", o->ics,
                                    err ? "read error" : "larger than 1 MiB");
                        tb_buf_free(&b);
                        return NULL;
                }
                tb_buf_append(&b, "", 1);
                b.len--;
        } else if (!o->ndays && keep) {
                return strdup(keep);
        }
        if (!o->ndays) {
                if (!o->ics) {
                        tb_cli_fail("calendars: no days: give --ics FILE, --date or --range");
                        return NULL;
                }
                return (char *)b.data;
        }
        tb_buf_t out = {0};
        const char *end = b.data ? strstr(b.data, "END:VCALENDAR") : NULL;
        if (b.data && !end) {
                tb_cli_fail("calendars: --ics: '%s' has no END:VCALENDAR line", o->ics);
                tb_buf_free(&b);
                return NULL;
        }
        if (b.data)
                tb_buf_append(&out, b.data, (size_t)(end - b.data));
        else
                tb_buf_printf(&out, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
                                    "PRODID:-//taskbus//taskbus calendars//EN\r\n");
        tb_buf_append(&out, o->days.data, o->days.len);
        tb_buf_printf(&out, "%s", end ? end : "END:VCALENDAR\r\n");
        tb_buf_free(&b);
        return (char *)out.data;
}

/* /v1/calendars/NAME?security_group=G... into \p path. */
static void tb_cli_cal_path(tb_buf_t *path, const char *name, const tb_cli_cal_opts_t *o,
                            bool put) {
        tb_cli_rest_path(path, "/v1/calendars", name, NULL);
        tb_cli_rest_query(path, "security_group", o->group);
        if (put) {
                tb_cli_rest_query(path, "timezone", o->timezone);
                tb_cli_rest_query(path, "weekend", o->weekend);
        }
}

static const char *tb_cli_cal_str(const json_t *j, const char *k) {
        const char *s = json_string_value(json_object_get(j, k));
        return s ? s : "";
}

static void tb_cli_cal_print(const json_t *c, bool json) {
        if (json) {
                tb_cli_print_json(c);
                return;
        }
        printf("%s (group %s): %" JSON_INTEGER_FORMAT " events, zone %s, weekend %s, version "
               "%" JSON_INTEGER_FORMAT ", updated %s by %s\n",
               tb_cli_cal_str(c, "name"), tb_cli_cal_str(c, "security_group"),
               json_integer_value(json_object_get(c, "events")), tb_cli_cal_str(c, "timezone"),
               *tb_cli_cal_str(c, "weekend") ? tb_cli_cal_str(c, "weekend") : "none",
               json_integer_value(json_object_get(c, "version")),
               tb_cli_cal_str(c, "updated_at"), tb_cli_cal_str(c, "updated_by"));
}

/* create / update: PUT the calendar. */
static int tb_cli_cal_put(const tb_cli_rest_t *rest, const char *name, tb_cli_cal_opts_t *o,
                          bool create) {
        char version[24] = "", *keep = NULL;
        int rc = 0;
        if (!create) { /* its version, group and days as they are now */
                tb_buf_t path = {0};
                tb_cli_cal_path(&path, name, o, false);
                tb_cli_rest_req_t get = {.method = "GET", .path = path.data, .ok = 200};
                tb_cli_rest_resp_t cur = {0};
                rc = tb_cli_rest_do(rest, &get, &cur);
                tb_buf_free(&path);
                if (!rc) {
                        snprintf(version, sizeof(version), "%" JSON_INTEGER_FORMAT,
                                 json_integer_value(json_object_get(cur.json, "version")));
                        keep = strdup(tb_cli_cal_str(cur.json, "ics"));
                        /* what is not given stays as it is */
                        if (!o->timezone)
                                o->timezone = o->kept_tz =
                                        strdup(tb_cli_cal_str(cur.json, "timezone"));
                        if (!o->weekend)
                                o->weekend = o->kept_weekend = strdup(
                                        *tb_cli_cal_str(cur.json, "weekend")
                                                ? tb_cli_cal_str(cur.json, "weekend")
                                                : "none");
                        if (!o->group) /* the group it was found in */
                                o->group = strdup(tb_cli_cal_str(cur.json, "security_group"));
                }
                tb_cli_rest_resp_free(&cur);
                if (rc)
                        return rc;
        } else if (!o->group) {
                tb_cli_fail("calendars create: --group is required (the security group the "
                            "calendar belongs to)");
                return 2;
        }
        char *body = tb_cli_cal_body(o, keep);
        free(keep);
        if (!body)
                return 2;
        tb_buf_t path = {0};
        tb_cli_cal_path(&path, name, o, true);
        tb_cli_rest_req_t put = {.method = "PUT",
                                 .path = path.data,
                                 .body = body,
                                 .content_type = "text/calendar; charset=utf-8",
                                 .if_match = create ? NULL : version,
                                 .create_only = create,
                                 .ok = create ? 201 : 200};
        tb_cli_rest_resp_t resp = {0};
        rc = tb_cli_rest_do(rest, &put, &resp);
        if (!rc)
                tb_cli_cal_print(resp.json, o->json);
        tb_cli_rest_resp_free(&resp);
        tb_buf_free(&path);
        free(body);
        return rc;
}

static void tb_cli_cal_header(void) {
        printf("%-24s %-16s %6s %-20s %-8s %7s\n", "NAME", "GROUP", "EVENTS", "TIMEZONE",
               "WEEKEND", "VERSION");
}

static void tb_cli_cal_row(const json_t *c) {
        printf("%-24s %-16s %6" JSON_INTEGER_FORMAT " %-20s %-8s %7" JSON_INTEGER_FORMAT "\n",
               tb_cli_cal_str(c, "name"), tb_cli_cal_str(c, "security_group"),
               json_integer_value(json_object_get(c, "events")), tb_cli_cal_str(c, "timezone"),
               *tb_cli_cal_str(c, "weekend") ? tb_cli_cal_str(c, "weekend") : "none",
               json_integer_value(json_object_get(c, "version")));
}

/* list, show, delete: one request. */
static int tb_cli_cal_read(const tb_cli_rest_t *rest, const char *sub, const char *name,
                           const tb_cli_cal_opts_t *o) {
        tb_buf_t path = {0};
        if (name) {
                tb_cli_cal_path(&path, name, o, false);
        } else {
                tb_buf_printf(&path, "/v1/calendars");
                tb_cli_rest_query(&path, "security_group", o->group);
        }
        bool del = !strcmp(sub, "delete");
        tb_cli_rest_req_t req = {.method = del ? "DELETE" : "GET",
                                 .path = path.data,
                                 .accept = o->source ? "text/calendar" : NULL,
                                 .ok = del ? 204 : 200};
        tb_cli_rest_resp_t resp = {0};
        int rc = tb_cli_rest_do(rest, &req, &resp);
        tb_buf_free(&path);
        if (rc) {
                tb_cli_rest_resp_free(&resp);
                return rc;
        }
        if (del) {
                printf("deleted calendar %s\n", name);
        } else if (o->source) {
                fwrite(resp.body.data, 1, resp.body.len, stdout);
        } else if (name) {
                tb_cli_cal_print(resp.json, o->json);
        } else if (o->json) {
                tb_cli_print_json(resp.json);
        } else {
                const json_t *items = json_object_get(resp.json, "calendars");
                if (!json_array_size(items)) {
                        printf("no calendars\n");
                } else {
                        tb_cli_cal_header();
                        for (size_t i = 0; i < json_array_size(items); i++)
                                tb_cli_cal_row(json_array_get(items, i));
                }
        }
        tb_cli_rest_resp_free(&resp);
        return 0;
}

int tb_cli_calendars(int argc, char **argv) {
        int rc;
        if (tb_cli_group_usage(argc, argv, tb_cli_cal_usage, &rc))
                return rc;
        static const char *const subs[] = {"create", "update", "delete", "list", "show", NULL};
        const char *sub = argv[1];
        bool known = false;
        for (const char *const *s = subs; *s; s++)
                known |= !strcmp(sub, *s);
        if (!known) {
                tb_cli_fail("calendars: unknown command '%s'", sub);
                tb_cli_cal_usage(stderr);
                return 2;
        }
        tb_cli_cal_opts_t o = {0};
        const char *group_flag;
        if ((rc = tb_cli_cal_parse(argc - 1, argv + 1, &o)) >= 0) {
                tb_buf_free(&o.days);
                return rc;
        }
        group_flag = o.group;
        bool named = strcmp(sub, "list") != 0;
        if (argc - 1 - optind != (named ? 1 : 0)) {
                tb_cli_fail("calendars %s: expected %s", sub,
                            named ? "exactly one calendar NAME" : "no argument");
                tb_buf_free(&o.days);
                return 2;
        }
        const char *name = named ? argv[1 + optind] : NULL;
        bool writes = !strcmp(sub, "create") || !strcmp(sub, "update");
        if (!writes && (o.ics || o.ndays || o.timezone || o.weekend)) {
                tb_cli_fail("calendars %s: --ics, --date, --range, --timezone and --weekend "
                            "are for create and update",
                            sub);
                tb_buf_free(&o.days);
                return 2;
        }
        tb_cli_rest_t rest;
        char err[1024];
        rc = 1;
        if (tb_cli_rest_open(&rest, o.api, o.token, o.cacert, err, sizeof(err))) {
                tb_cli_fail("%s", err);
        } else {
                rc = writes ? tb_cli_cal_put(&rest, name, &o, !strcmp(sub, "create"))
                            : tb_cli_cal_read(&rest, sub, name, &o);
                tb_cli_rest_close(&rest);
        }
        if (o.group != group_flag)
                free((char *)o.group);
        free(o.kept_tz);
        free(o.kept_weekend);
        tb_buf_free(&o.days);
        return rc;
}
