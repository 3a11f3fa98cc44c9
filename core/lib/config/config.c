/**
 * @file config/config.c
 * @brief taskbus configuration: ONE table of typed properties drives the
 *        defaults, the parsing and validation of config/taskbus.conf
 *        (libconfig syntax), the environment overrides and the generated
 *        docs/configuration.md.
 *
 * Adding a setting: add the field to tb_config_t (or tb_group_conf_t), add
 * one row to tb_conf_props (or tb_group_props), regenerate the doc with
 * `taskbusd --config-doc > docs/configuration.md`. Nothing else.
 *
 * The `kafka`, `plugins` and `groups` top-level groups are not rows: their
 * member names are chosen by the operator, so they get their own walkers.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- units ------------------------------------------------------------- */

#define TB_MS(n) ((int64_t)(n))
#define TB_SEC(n) ((int64_t)(n) * 1000)
#define TB_MIN(n) ((int64_t)(n) * 60 * 1000)
#define TB_HOUR(n) ((int64_t)(n) * 3600 * 1000)
#define TB_DAY(n) ((int64_t)(n) * 86400 * 1000)
#define TB_KIB(n) ((int64_t)(n) * 1024)
#define TB_MIB(n) ((int64_t)(n) * 1024 * 1024)
#define TB_GIB(n) ((int64_t)(n) * 1024 * 1024 * 1024)
#define TB_TIB(n) ((int64_t)(n) * 1024 * 1024 * 1024 * 1024)

/* Anything longer is certainly a typo and would overflow ms arithmetic
 * downstream (timer wheels add durations to epoch ms). */
#define TB_DURATION_MAX_MS TB_DAY(365 * 1000)

/** Value types of the property table. */
typedef enum tb_conf_type {
        TB_CT_STRING,   /**< char *, NULL when unset and no default */
        TB_CT_INT,      /**< int64_t */
        TB_CT_BOOL,     /**< bool */
        TB_CT_DOUBLE,   /**< double */
        TB_CT_DURATION, /**< int64_t milliseconds */
        TB_CT_SIZE,     /**< int64_t bytes ("256KiB" or an integer) */
        TB_CT_STRLIST,  /**< char ** plus a size_t count at cnt_off */
        TB_CT_ENUM,     /**< char *, one of `enums` ("a|b|c") */
        TB_CT_MAP,      /**< tb_kv_t * plus a size_t count at cnt_off: a group
                         *   of NAME = "value" strings ("a=x,b=y" in string form) */
} tb_conf_type_t;

/** One typed property. Bounds are in the stored unit (ms, bytes). */
typedef struct tb_conf_prop {
        const char *name;   /**< dotted path, relative to its table */
        tb_conf_type_t type;
        size_t off;         /**< offsetof the field in the base struct */
        size_t cnt_off;     /**< string lists: offsetof the count */
        const char *def;    /**< default, as a user would write it; NULL: none */
        double min, max;    /**< numeric types only (min == max: unbounded) */
        const char *enums;  /**< enum values, '|'-separated */
        const char *env;    /**< environment variable overriding it, or NULL */
        const char *desc;
} tb_conf_prop_t;

#define F(field) offsetof(tb_config_t, field)
#define G(field) offsetof(tb_group_conf_t, field)

/* The main table. Order is the order of the generated doc. */
static const tb_conf_prop_t tb_conf_props[] = {
        {"region", TB_CT_STRING, F(region), 0, "local", 0, 0, NULL,
         "TASKBUS_REGION",
         "Name of the region this process runs in (letters, digits, '-', '_'). "
         "A task fires only in its home region."},
        {"log_level", TB_CT_ENUM, F(log_level), 0, "info", 0, 0,
         "debug|info|warn|error", NULL, "Minimum level of log lines written to stderr."},

        {"topics.prefix", TB_CT_STRING, F(topic_prefix), 0, "taskbus.", 0, 0, NULL,
         NULL,
         "Prefix of every Kafka topic name (\"taskbus.\" gives \"taskbus.task-events\"). "
         "Kafka topic characters only: letters, digits, '.', '_', '-'."},
        {"topics.partitions", TB_CT_INT, F(topic_partitions), 0, "6", 1, 10000, NULL,
         NULL,
         "Partitions of every task-keyed topic when taskbus creates them; all "
         "task-keyed topics share it so partition p holds the same tasks everywhere."},
        {"topics.replication", TB_CT_INT, F(topic_replication), 0, "1", 1, 32, NULL,
         NULL, "Replication factor of the topics taskbus creates (3 in production)."},
        {"topics.retention_commands", TB_CT_DURATION, F(retention_commands_ms), 0,
         "7d", TB_MIN(1), TB_DURATION_MAX_MS, NULL, NULL,
         "Retention of task-commands."},
        {"topics.retention_replies", TB_CT_DURATION, F(retention_replies_ms), 0,
         "1d", TB_MIN(1), TB_DURATION_MAX_MS, NULL, NULL,
         "Retention of task-replies."},
        {"topics.retention_runs", TB_CT_DURATION, F(retention_runs_ms), 0, "7d",
         TB_MIN(1), TB_DURATION_MAX_MS, NULL, NULL, "Retention of runs."},
        {"topics.retention_results", TB_CT_DURATION, F(retention_results_ms), 0,
         "30d", TB_MIN(1), TB_DURATION_MAX_MS, NULL, NULL,
         "Retention of run-results."},
        {"topics.retention_logs", TB_CT_DURATION, F(retention_logs_ms), 0, "30d",
         TB_MIN(1), TB_DURATION_MAX_MS, NULL, NULL,
         "Retention of run-logs (live output; the archiver keeps its own copy)."},
        {"topics.retention_dlq", TB_CT_DURATION, F(retention_dlq_ms), 0, "30d",
         TB_MIN(1), TB_DURATION_MAX_MS, NULL, NULL, "Retention of runs-dlq."},

        {"postgres.url", TB_CT_STRING, F(pg_url), 0,
         "postgresql://taskbus@127.0.0.1:55432/taskbus", 0, 0, NULL, "TASKBUS_PG",
         "libpq connection string (URI or key=value form) of the projection database."},
        {"postgres.pool_size", TB_CT_INT, F(pg_pool_size), 0, "8", 1, 1000, NULL,
         NULL, "Connections per process in the PostgreSQL pool."},

        {"api.listen", TB_CT_STRING, F(api_listen), 0, "127.0.0.1:8080", 0, 0, NULL,
         "TASKBUS_API_LISTEN",
         "HOST:PORT the REST API listens on (\"[::1]:8080\" for IPv6; port 0 picks a free one)."},
        {"api.threads", TB_CT_INT, F(api_threads), 0, "4", 1, 256, NULL, NULL,
         "HTTP worker threads."},
        {"api.rate", TB_CT_DOUBLE, F(api_rate), 0, "50", 0.01, 1e6, NULL, NULL,
         "Sustained requests per second allowed per user (token bucket); beyond it 429."},
        {"api.burst", TB_CT_INT, F(api_burst), 0, "100", 1, 1000000, NULL, NULL,
         "Token bucket size: requests a user may send at once above api.rate."},
        {"api.reply_timeout", TB_CT_DURATION, F(api_reply_timeout_ms), 0, "10s",
         TB_MS(100), TB_MIN(5), NULL, NULL,
         "How long a write waits for the command handler's reply before answering 504."},
        {"api.max_body", TB_CT_SIZE, F(api_max_body), 0, "256KiB", TB_KIB(1),
         TB_MIB(64), NULL, NULL, "Largest request body accepted; larger gets 413."},

        {"scheduler.misfire_cap", TB_CT_INT, F(sched_misfire_cap), 0, "100", 0,
         1000000, NULL, NULL,
         "Most missed fires of one task caught up after downtime or failover; "
         "older ones are skipped (0: skip all missed fires)."},
        {"scheduler.tick", TB_CT_DURATION, F(sched_tick_ms), 0, "50ms", TB_MS(1),
         TB_SEC(10), NULL, NULL,
         "Timer granularity: how often due timers are checked. Bounds fire latency."},
        {"scheduler.max_batch", TB_CT_INT, F(sched_max_batch), 0, "2000", 1, 100000,
         NULL, NULL, "Most fires emitted in one Kafka transaction."},

        {"executor.plugin_paths", TB_CT_STRLIST, F(exec_plugin_paths),
         F(exec_plugin_path_cnt), NULL, 0, 0, NULL, NULL,
         "Plugin shared objects (.so paths) or directories to load; empty: the "
         "built-in plugin directory."},
        {"executor.max_concurrent", TB_CT_INT, F(exec_max_concurrent), 0, "1000", 1,
         100000, NULL, NULL, "Most runs one executor process runs at once."},
        {"executor.lease", TB_CT_DURATION, F(exec_lease_ms), 0, "15s", TB_SEC(1),
         TB_HOUR(1), NULL, NULL,
         "How long an executor's claim on a running run stays valid without "
         "renewal; it renews well before expiry."},
        {"executor.grace", TB_CT_DURATION, F(exec_grace_ms), 0, "30s", 0, TB_HOUR(1),
         NULL, NULL,
         "Extra time after a lease expired before the run is declared lost "
         "(executor presumed dead) and failed."},
        {"executor.output_cap", TB_CT_SIZE, F(exec_output_cap), 0, "64MiB",
         TB_KIB(1), TB_GIB(16), NULL, NULL,
         "Most output kept per run; beyond it output is dropped and the run is "
         "marked truncated."},
        {"executor.kill_grace", TB_CT_DURATION, F(exec_kill_grace_ms), 0, "5s", 0,
         TB_MIN(10), NULL, NULL,
         "Time between SIGTERM and SIGKILL when a run is cancelled or times out."},
        {"executor.workdir", TB_CT_STRING, F(exec_workdir), 0, "/tmp", 0, 0, NULL,
         NULL, "Absolute directory under which runs get their working directories."},
        {"executor.allow_root", TB_CT_BOOL, F(exec_allow_root), 0, "false", 0, 0,
         NULL, NULL,
         "Allow tasks to run as root (a group's os_user = \"root\"); off by default."},

        {"replication.remote_regions", TB_CT_STRLIST, F(repl_remote_regions),
         F(repl_remote_region_cnt), NULL, 0, 0, NULL, "TASKBUS_REMOTE_REGIONS",
         "Other regions whose topics MirrorMaker 2 copies into this region's Kafka as "
         "\"REGION.<topics.prefix>task-events\" (and runs, run-results, run-logs). The "
         "projector, the commands role and the scheduler also read those copies, so "
         "tasks homed elsewhere are readable here and a failover can move them here. "
         "Empty: a single region. See docs/replication.md."},
        {"replication.region_apis", TB_CT_MAP, F(repl_region_apis), F(repl_region_api_cnt),
         NULL, 0, 0, NULL, "TASKBUS_REGION_APIS",
         "Base URL of each other region's REST API: a write for a task homed there is "
         "answered 307 with Location = that URL + the request path."},
        {"replication.region_kafka", TB_CT_MAP, F(repl_region_kafka),
         F(repl_region_kafka_cnt), NULL, 0, 0, NULL, "TASKBUS_REGION_KAFKA",
         "Bootstrap servers of each other region's Kafka. Read-only uses: the "
         "scheduler's start-up fence (below), `taskbus admin region status` (replication "
         "lag). Without it the fence is skipped."},
        {"replication.startup_fence", TB_CT_DURATION, F(repl_startup_fence_ms), 0, "60s", 0,
         TB_HOUR(1), NULL, NULL,
         "Before firing the tasks of a partition it just loaded, the scheduler waits until "
         "this region's copy of each other region's task-events holds that region's last "
         "event (read from replication.region_kafka), so a region coming back after a "
         "failover sees the HOME_MOVED events before it could fire a moved task. Bounded "
         "by this time when a region is unreachable (0: do not wait)."},

        {"archiver.history_retention", TB_CT_DURATION, F(history_retention_ms), 0,
         "1826d", TB_DAY(1), TB_DURATION_MAX_MS, NULL, NULL,
         "How long run history (runs and their results) is kept in PostgreSQL."},
        {"archiver.log_retention_default", TB_CT_DURATION,
         F(log_retention_default_ms), 0, "30d", TB_HOUR(1), TB_DURATION_MAX_MS, NULL,
         NULL,
         "How long archived run output is kept when a task does not say "
         "(a task's log_retention, capped by its group's log_retention_max)."},
        {"archiver.batch", TB_CT_INT, F(archiver_batch), 0, "1000", 1, 1000000, NULL,
         NULL, "Rows copied or deleted per archiver transaction."},
};

/* Per security group policy: `groups = { NAME = { ... }; };`. */
static const tb_conf_prop_t tb_group_props[] = {
        {"os_user", TB_CT_STRING, G(os_user), 0, "nobody", 0, 0, NULL, NULL,
         "OS user that this group's shell tasks run as (\"root\" needs executor.allow_root)."},
        {"log_retention_max", TB_CT_DURATION, G(log_retention_max_ms), 0, "30d",
         TB_HOUR(1), TB_DURATION_MAX_MS, NULL, NULL,
         "Longest log_retention a task of this group may ask for."},
        {"images", TB_CT_STRLIST, G(images), G(image_cnt), NULL, 0, 0, NULL, NULL,
         "Container images this group may run (exact references); empty: none."},
        {"network", TB_CT_ENUM, G(network), 0, "none", 0, 0, "none|bridge|host",
         NULL, "Most open container network mode this group may use."},
        {"memory_max", TB_CT_SIZE, G(memory_max_bytes), 0, "512MiB", TB_MIB(4),
         TB_TIB(1), NULL, NULL, "Memory cap of this group's containers."},
        {"cpus_max", TB_CT_DOUBLE, G(cpus_max), 0, "1.0", 0.01, 1024, NULL, NULL,
         "CPU cap of this group's containers (1.0 = one core)."},
        {"ssh_key", TB_CT_STRING, G(ssh_key), 0, NULL, 0, 0, NULL, NULL,
         "Private key file for this group's remote SSH tasks; unset: SSH tasks refused."},
        {"ssh_known_hosts", TB_CT_STRING, G(ssh_known_hosts), 0, NULL, 0, 0, NULL,
         NULL,
         "known_hosts file used to verify hosts of this group's SSH tasks; "
         "unset: SSH tasks refused."},
};

#undef F
#undef G

/* Top-level groups with their own walkers, listed among the valid keys. */
static const char *tb_conf_special[] = {"groups", "kafka", "plugins"};

#define TB_KAFKA_DEFAULT_BOOTSTRAP "127.0.0.1:9092"

/* librdkafka properties taskbus derives per role: a user value would break
 * consumer-group membership or transactional fencing. */
static const char *tb_kafka_managed[] = {"group.id", "transactional.id"};

/* Cross-field rules checked by tb_config_finalize(), for the doc. */
static const char *tb_conf_checks[] = {
        "`archiver.log_retention_default` must not exceed `archiver.history_retention` "
        "(logs would outlive the runs they belong to).",
        "Each `groups.NAME.log_retention_max` must not exceed `archiver.history_retention`.",
        "A group whose `os_user` is `root` needs `executor.allow_root = true`.",
        "`api.listen` must be HOST:PORT with a port from 0 to 65535.",
        "`postgres.url` must be accepted by libpq's connection string parser.",
        "`topics.prefix` may hold only letters, digits, '.', '_' and '-', "
        "and leave room for the longest topic name within Kafka's 249 characters.",
        "`region` must be 1 to 63 letters, digits, '-' or '_'.",
        "Each `replication.remote_regions` entry must be a region name other than "
        "`region`, listed once; every name in `replication.region_apis` and "
        "`replication.region_kafka` must be a region name other than `region`, and each "
        "`replication.region_apis` value an http:// or https:// URL.",
        "`executor.workdir` and every `executor.plugin_paths` entry must be absolute paths "
        "(whether they exist is checked when they are used).",
};

/* ---- small helpers ----------------------------------------------------- */

static void *tb_field(void *base, size_t off) { return (char *)base + off; }

static char *tb_strdup0(const char *s) { return s ? strdup(s) : NULL; }

static void tb_strlist_free(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/** Edit distance counting a swap of two neighbours as one edit (typos
 *  like "ulr" for "url"); capped for long strings, they are names. */
static size_t tb_edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (la > 64 || lb > 64)
                return (size_t)-1;
        size_t d[65][65];
        for (size_t i = 0; i <= la; i++)
                d[i][0] = i;
        for (size_t j = 0; j <= lb; j++)
                d[0][j] = j;
        for (size_t i = 1; i <= la; i++) {
                for (size_t j = 1; j <= lb; j++) {
                        size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
                        size_t best = d[i - 1][j - 1] + cost;
                        if (d[i - 1][j] + 1 < best)
                                best = d[i - 1][j] + 1;
                        if (d[i][j - 1] + 1 < best)
                                best = d[i][j - 1] + 1;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                            d[i - 2][j - 2] + 1 < best)
                                best = d[i - 2][j - 2] + 1;
                        d[i][j] = best;
                }
        }
        return d[la][lb];
}

static const char *tb_setting_type_name(const config_setting_t *s) {
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a floating-point number";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        case CONFIG_TYPE_GROUP:
                return "a group";
        default:
                return "an unknown type";
        }
}

static const char *tb_conf_type_name(tb_conf_type_t t) {
        switch (t) {
        case TB_CT_STRING:
                return "string";
        case TB_CT_INT:
                return "integer";
        case TB_CT_BOOL:
                return "boolean";
        case TB_CT_DOUBLE:
                return "number";
        case TB_CT_DURATION:
                return "duration";
        case TB_CT_SIZE:
                return "size";
        case TB_CT_STRLIST:
                return "list of strings";
        case TB_CT_ENUM:
                return "enum";
        case TB_CT_MAP:
                return "map of strings";
        }
        return "?";
}

/** What a value of type \p t looks like, for "expected ..." messages. */
static const char *tb_conf_type_expect(tb_conf_type_t t) {
        switch (t) {
        case TB_CT_STRING:
                return "a string";
        case TB_CT_INT:
                return "an integer";
        case TB_CT_BOOL:
                return "a boolean (true or false)";
        case TB_CT_DOUBLE:
                return "a number";
        case TB_CT_DURATION:
                return "a duration (a string like \"30s\", \"5m\", \"PT1H\", or an "
                       "integer number of seconds)";
        case TB_CT_SIZE:
                return "a size (an integer number of bytes or a string like \"256KiB\")";
        case TB_CT_STRLIST:
                return "a list of strings (like [\"a\", \"b\"])";
        case TB_CT_ENUM:
                return "a string";
        case TB_CT_MAP:
                return "a group of NAME = \"value\" strings (like { us = \"http://api.us:8080\"; })";
        }
        return "?";
}

/* ---- durations and sizes ------------------------------------------------- */

/**
 * Parse a decimal number "12" or "1.5" at *\p pp and scale it by \p unit
 * into *\p out exactly. @returns 0, or -1 not a number, -2 overflow,
 * -3 not a whole multiple of 1 (e.g. "1.5ms").
 */
static int tb_units_scaled_number(const char **pp, int64_t unit, int64_t *out) {
        const char *p = *pp;
        int64_t whole = 0, frac = 0, scale = 1;
        if (!isdigit((unsigned char)*p))
                return -1;
        for (; isdigit((unsigned char)*p); p++) {
                if (__builtin_mul_overflow(whole, 10, &whole) ||
                    __builtin_add_overflow(whole, *p - '0', &whole))
                        return -2;
        }
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p))
                        return -1;
                for (; isdigit((unsigned char)*p); p++) {
                        if (scale >= 1000000000) {
                                if (*p != '0')
                                        return -3;
                                continue;
                        }
                        frac = frac * 10 + (*p - '0');
                        scale *= 10;
                }
        }
        *pp = p;
        int64_t v;
        if (__builtin_mul_overflow(whole, unit, &v))
                return -2;
        /* frac < scale <= 1e9 and unit < 2^63 / 1e9 for all our units */
        __int128 f = (__int128)frac * unit;
        if (f % scale)
                return -3;
        if (__builtin_add_overflow(v, (int64_t)(f / scale), &v))
                return -2;
        *out = v;
        return 0;
}

static tb_err_t tb_units_duration_numerr(int rc, const char *s, char *errstr,
                                   size_t errstr_size) {
        if (rc == -2)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "duration \"%s\" is too large", s);
        if (rc == -3)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "duration \"%s\" is finer than a millisecond", s);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "invalid duration \"%s\": expected a number before each unit, "
                         "like \"30s\", \"1h30m\" or \"PT30S\"", s);
}

static tb_err_t tb_units_duration_parse_iso(const char *s, int64_t *ms, char *errstr,
                                      size_t errstr_size) {
        /* Designators in the order ISO 8601 requires; M means months
         * before T and minutes after it. */
        static const struct {
                char c;
                bool time;
                int64_t unit; /* 0: refused */
        } des[] = {
                {'Y', false, 0},        {'M', false, 0},
                {'W', false, TB_DAY(7)}, {'D', false, TB_DAY(1)},
                {'H', true, TB_HOUR(1)}, {'M', true, TB_MIN(1)},
                {'S', true, TB_SEC(1)},
        };
        const char *p = s + 1;
        bool in_time = false, any = false;
        size_t next = 0;
        int64_t total = 0;
        while (*p) {
                if (toupper((unsigned char)*p) == 'T') {
                        if (in_time)
                                goto bad;
                        in_time = true;
                        p++;
                        if (!*p)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "ISO 8601 duration \"%s\" has a 'T' "
                                                 "but no hours, minutes or seconds after it",
                                                 s);
                        continue;
                }
                const char *num = p;
                int64_t v;
                int rc = tb_units_scaled_number(&p, 1, &v);
                if (rc == -1)
                        goto bad;
                char c = (char)toupper((unsigned char)*p);
                size_t i;
                for (i = next; i < TB_ARRAY_LEN(des); i++)
                        if (des[i].c == c && des[i].time == in_time)
                                break;
                if (i == TB_ARRAY_LEN(des))
                        goto bad;
                if (!des[i].unit)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "ISO 8601 duration \"%s\": %s are not supported "
                                         "because their length varies; use weeks (W), "
                                         "days (D) or smaller units",
                                         s, c == 'Y' ? "years" : "months");
                int64_t part;
                rc = tb_units_scaled_number(&num, des[i].unit, &part);
                if (rc)
                        return tb_units_duration_numerr(rc, s, errstr, errstr_size);
                if (__builtin_add_overflow(total, part, &total))
                        return tb_units_duration_numerr(-2, s, errstr, errstr_size);
                next = i + 1;
                any = true;
                p++;
        }
        if (!any)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "ISO 8601 duration \"%s\" has no components; "
                                 "expected e.g. \"PT30S\" or \"P1DT2H\"", s);
        *ms = total;
        return TB_OK;
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "invalid ISO 8601 duration \"%s\": expected P[nW][nD][T[nH][nM][nS]], "
                         "like \"PT30S\" or \"P1DT2H\"", s);
}

tb_err_t tb_units_duration_parse(const char *s, int64_t *ms, char *errstr,
                           size_t errstr_size) {
        static const struct {
                const char *name;
                int64_t unit;
        } units[] = {
                {"ms", 1},           {"s", TB_SEC(1)},  {"m", TB_MIN(1)},
                {"h", TB_HOUR(1)},   {"d", TB_DAY(1)},  {"w", TB_DAY(7)},
        };
        if (!s || !*s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "empty duration: expected e.g. \"500ms\", \"30s\", "
                                 "\"5m\", \"2h\", \"7d\", \"1w\", \"PT30S\" or a "
                                 "number of seconds");
        if (*s == '-')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "duration \"%s\" is negative", s);
        int64_t total = 0;
        if (*s == 'P' || *s == 'p') {
                tb_err_t err = tb_units_duration_parse_iso(s, &total, errstr, errstr_size);
                if (err)
                        return err;
                goto check;
        }
        const char *p = s;
        /* A bare number is seconds, as in the config file's integer form. */
        {
                const char *q = s;
                int64_t v;
                int rc = tb_units_scaled_number(&q, TB_SEC(1), &v);
                if (rc == 0 && !*q) {
                        total = v;
                        goto check;
                }
        }
        while (*p) {
                const char *num = p;
                int64_t unscaled; /* parsed only to find where the number ends */
                int rc = tb_units_scaled_number(&p, 1, &unscaled);
                if (rc == -1 || rc == -2)
                        return tb_units_duration_numerr(rc, s, errstr, errstr_size);
                const char *u = p;
                while (isalpha((unsigned char)*p))
                        p++;
                size_t ulen = (size_t)(p - u);
                if (!ulen)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "duration \"%s\": a number needs a unit when "
                                         "combined with others (ms, s, m, h, d, w)", s);
                size_t i;
                for (i = 0; i < TB_ARRAY_LEN(units); i++)
                        if (strlen(units[i].name) == ulen &&
                            !strncmp(units[i].name, u, ulen))
                                break;
                if (i == TB_ARRAY_LEN(units))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "duration \"%s\": unknown unit '%.*s'; valid "
                                         "units: ms, s, m, h, d, w (months and years "
                                         "are not supported: their length varies)",
                                         s, (int)(ulen > 16 ? 16 : ulen), u);
                int64_t part;
                rc = tb_units_scaled_number(&num, units[i].unit, &part);
                if (rc)
                        return tb_units_duration_numerr(rc, s, errstr, errstr_size);
                if (__builtin_add_overflow(total, part, &total))
                        return tb_units_duration_numerr(-2, s, errstr, errstr_size);
        }
check:
        if (total > TB_DURATION_MAX_MS)
                return tb_units_duration_numerr(-2, s, errstr, errstr_size);
        *ms = total;
        return TB_OK;
}

tb_err_t tb_units_size_parse(const char *s, int64_t *bytes, char *errstr,
                       size_t errstr_size) {
        static const struct {
                const char *name;
                int64_t unit;
        } units[] = {
                {"", 1},
                {"B", 1},
                {"KiB", TB_KIB(1)},
                {"MiB", TB_MIB(1)},
                {"GiB", TB_GIB(1)},
                {"TiB", TB_TIB(1)},
                {"KB", 1000},
                {"MB", 1000 * 1000},
                {"GB", 1000 * 1000 * 1000},
                {"TB", (int64_t)1000 * 1000 * 1000 * 1000},
        };
        if (!s || !*s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "empty size: expected a number of bytes or e.g. "
                                 "\"256KiB\", \"64MiB\", \"1GiB\"");
        if (*s == '-')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "size \"%s\" is negative", s);
        const char *p = s;
        int64_t unscaled; /* parsed only to find where the number ends */
        if (tb_units_scaled_number(&p, 1, &unscaled) == -1)
                goto bad;
        const char *u = p;
        while (*p == ' ')
                u = ++p;
        for (size_t i = 0; i < TB_ARRAY_LEN(units); i++) {
                if (strcmp(u, units[i].name))
                        continue;
                const char *q = s;
                int rc = tb_units_scaled_number(&q, units[i].unit, bytes);
                if (rc == -2)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "size \"%s\" is too large", s);
                if (rc == -3)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "size \"%s\" is not a whole number of bytes", s);
                return TB_OK;
        }
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "invalid size \"%s\": expected a number of bytes, optionally "
                         "followed by B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, "
                         "GB, TB (powers of 1000)", s);
}

/** Compact human form of a duration: "1826d", "1h30m", "500ms". */
static void tb_units_duration_format(int64_t ms, char *buf, size_t size) {
        static const struct {
                const char *name;
                int64_t unit;
        } units[] = {{"d", TB_DAY(1)}, {"h", TB_HOUR(1)}, {"m", TB_MIN(1)},
                     {"s", TB_SEC(1)}, {"ms", 1}};
        size_t len = 0;
        buf[0] = '\0';
        if (ms <= 0) {
                tb_snprintf(buf, size, "%s", ms == 0 ? "0s" : "negative");
                return;
        }
        for (size_t i = 0; i < TB_ARRAY_LEN(units) && ms; i++) {
                if (ms < units[i].unit)
                        continue;
                int n = snprintf(buf + len, size - len, "%lld%s",
                                 (long long)(ms / units[i].unit), units[i].name);
                if (n < 0 || (size_t)n >= size - len)
                        return;
                len += (size_t)n;
                ms %= units[i].unit;
        }
}

static void tb_units_size_format(int64_t b, char *buf, size_t size) {
        static const struct {
                const char *name;
                int64_t unit;
        } units[] = {{"TiB", TB_TIB(1)}, {"GiB", TB_GIB(1)}, {"MiB", TB_MIB(1)},
                     {"KiB", TB_KIB(1)}};
        for (size_t i = 0; i < TB_ARRAY_LEN(units); i++) {
                if (b && b % units[i].unit == 0) {
                        tb_snprintf(buf, size, "%lld%s", (long long)(b / units[i].unit),
                                    units[i].name);
                        return;
                }
        }
        tb_snprintf(buf, size, "%lld", (long long)b);
}

/** A numeric value of \p p's type in the user's notation. */
static void tb_prop_format_num(const tb_conf_prop_t *p, double v, char *buf,
                               size_t size) {
        if (p->type == TB_CT_DURATION)
                tb_units_duration_format((int64_t)v, buf, size);
        else if (p->type == TB_CT_SIZE)
                tb_units_size_format((int64_t)v, buf, size);
        else
                tb_snprintf(buf, size, "%.15g", v);
}

/* ---- typed assignment ----------------------------------------------------- */

static tb_err_t tb_prop_range(const tb_conf_prop_t *p, const char *where,
                              double v, char *errstr, size_t errstr_size) {
        if (p->min == p->max || (v >= p->min && v <= p->max))
                return TB_OK;
        char val[48], lo[48], hi[48];
        tb_prop_format_num(p, v, val, sizeof(val));
        tb_prop_format_num(p, p->min, lo, sizeof(lo));
        tb_prop_format_num(p, p->max, hi, sizeof(hi));
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s: %s is out of range: minimum %s, maximum %s", where, val, lo,
                         hi);
}

static bool tb_enum_has(const char *enums, const char *v) {
        size_t vl = strlen(v);
        for (const char *e = enums; *e;) {
                const char *bar = strchr(e, '|');
                size_t el = bar ? (size_t)(bar - e) : strlen(e);
                if (el == vl && !strncmp(e, v, vl))
                        return true;
                if (!bar)
                        break;
                e = bar + 1;
        }
        return false;
}

/** The enum's values as "a, b, c" for messages and the doc. */
static void tb_enum_list(const char *enums, const char *quote, char *buf, size_t size) {
        size_t len = 0;
        buf[0] = '\0';
        for (const char *e = enums; *e;) {
                const char *bar = strchr(e, '|');
                int el = bar ? (int)(bar - e) : (int)strlen(e);
                int n = snprintf(buf + len, size - len, "%s%s%.*s%s",
                                 len ? ", " : "", quote, el, e, quote);
                if (n < 0 || (size_t)n >= size - len)
                        return;
                len += (size_t)n;
                if (!bar)
                        break;
                e = bar + 1;
        }
}

static void tb_prop_set_string(const tb_conf_prop_t *p, void *base, char *v) {
        char **f = tb_field(base, p->off);
        free(*f);
        *f = v;
}

static void tb_kvlist_free(tb_kv_t *kv, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(kv[i].key);
                free(kv[i].value);
        }
        free(kv);
}

static void tb_prop_set_map(const tb_conf_prop_t *p, void *base, tb_kv_t *kv, size_t n) {
        tb_kv_t **f = tb_field(base, p->off);
        size_t *cnt = tb_field(base, p->cnt_off);
        tb_kvlist_free(*f, *cnt);
        *f = kv;
        *cnt = n;
}

/** Append \p key = \p value (copied) to \p kv; a repeated name is an error
 *  naming \p where. */
static tb_err_t tb_kvlist_add(tb_kv_t **kv, size_t *n, const char *where, const char *key,
                              size_t key_len, const char *value, char *errstr,
                              size_t errstr_size) {
        for (size_t i = 0; i < *n; i++)
                if (strlen((*kv)[i].key) == key_len && !strncmp((*kv)[i].key, key, key_len))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: '%.*s' is given twice", where, (int)key_len, key);
        tb_kv_t *nk = realloc(*kv, (*n + 1) * sizeof(**kv));
        if (!nk)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        *kv = nk;
        nk[*n].key = strndup(key, key_len);
        nk[*n].value = strdup(value);
        if (!nk[*n].key || !nk[*n].value) {
                free(nk[*n].key);
                free(nk[*n].value);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        (*n)++;
        return TB_OK;
}

static void tb_prop_set_list(const tb_conf_prop_t *p, void *base, char **v, size_t n) {
        char ***f = tb_field(base, p->off);
        size_t *cnt = tb_field(base, p->cnt_off);
        tb_strlist_free(*f, *cnt);
        *f = v;
        *cnt = n;
}

/** Store an int64 of an integer-backed type after the range check. */
static tb_err_t tb_prop_set_i64(const tb_conf_prop_t *p, void *base, const char *where,
                                int64_t v, char *errstr, size_t errstr_size) {
        tb_err_t err = tb_prop_range(p, where, (double)v, errstr, errstr_size);
        if (err)
                return err;
        *(int64_t *)tb_field(base, p->off) = v;
        return TB_OK;
}

/**
 * Assign \p s, written as a user would (default, environment, or a string
 * in the file for durations and sizes). \p where prefixes messages.
 */
static tb_err_t tb_prop_set_from_string(const tb_conf_prop_t *p, void *base,
                                        const char *where, const char *s,
                                        char *errstr, size_t errstr_size) {
        char msg[256];
        int64_t v;
        switch (p->type) {
        case TB_CT_STRING: {
                char *d = tb_strdup0(s);
                if (s && !d)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                tb_prop_set_string(p, base, d);
                return TB_OK;
        }
        case TB_CT_ENUM: {
                if (!s || !tb_enum_has(p->enums, s)) {
                        char list[256];
                        tb_enum_list(p->enums, "", list, sizeof(list));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: '%s' is not one of %s", where,
                                         s ? s : "", list);
                }
                char *d = strdup(s);
                if (!d)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                tb_prop_set_string(p, base, d);
                return TB_OK;
        }
        case TB_CT_BOOL:
                if (s && (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")))
                        *(bool *)tb_field(base, p->off) = true;
                else if (s && (!strcmp(s, "false") || !strcmp(s, "0") ||
                               !strcmp(s, "no")))
                        *(bool *)tb_field(base, p->off) = false;
                else
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: expected true or false, got \"%s\"", where,
                                         s ? s : "");
                return TB_OK;
        case TB_CT_INT: {
                char *end;
                errno = 0;
                long long ll = s ? strtoll(s, &end, 10) : 0;
                if (!s || !*s || *end || errno)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: expected an integer, got \"%s\"", where,
                                         s ? s : "");
                return tb_prop_set_i64(p, base, where, ll, errstr, errstr_size);
        }
        case TB_CT_DOUBLE: {
                char *end;
                errno = 0;
                double d = s ? strtod(s, &end) : 0;
                if (!s || !*s || *end || errno || !isfinite(d))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: expected a number, got \"%s\"", where,
                                         s ? s : "");
                tb_err_t err = tb_prop_range(p, where, d, errstr, errstr_size);
                if (err)
                        return err;
                *(double *)tb_field(base, p->off) = d;
                return TB_OK;
        }
        case TB_CT_DURATION:
                if (tb_units_duration_parse(s, &v, msg, sizeof(msg)))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "%s: %s",
                                         where, msg);
                return tb_prop_set_i64(p, base, where, v, errstr, errstr_size);
        case TB_CT_SIZE:
                if (tb_units_size_parse(s, &v, msg, sizeof(msg)))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "%s: %s",
                                         where, msg);
                return tb_prop_set_i64(p, base, where, v, errstr, errstr_size);
        case TB_CT_STRLIST: {
                /* Comma-separated in string form (defaults, environment). */
                size_t n = 0;
                char **list = NULL;
                if (s && *s) {
                        for (const char *c = s; *c; c++)
                                n += *c == ',';
                        n++;
                        list = calloc(n, sizeof(*list));
                        if (!list)
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory");
                        const char *c = s;
                        for (size_t i = 0; i < n; i++) {
                                const char *comma = strchr(c, ',');
                                size_t len = comma ? (size_t)(comma - c) : strlen(c);
                                list[i] = strndup(c, len);
                                if (!list[i]) {
                                        tb_strlist_free(list, n);
                                        return tb_seterr(errstr, errstr_size,
                                                         TB_ERR_NOMEM, "out of memory");
                                }
                                c = comma ? comma + 1 : c + len;
                        }
                }
                tb_prop_set_list(p, base, list, n);
                return TB_OK;
        }
        case TB_CT_MAP: {
                /* "name=value,name=value" in string form (defaults, environment) */
                tb_kv_t *kv = NULL;
                size_t n = 0;
                const char *c = s ? s : "";
                while (*c) {
                        const char *comma = strchr(c, ',');
                        size_t len = comma ? (size_t)(comma - c) : strlen(c);
                        const char *eq = memchr(c, '=', len);
                        if (!eq || eq == c) {
                                tb_kvlist_free(kv, n);
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: expected NAME=VALUE pairs separated by "
                                                 "commas, got \"%.*s\"",
                                                 where, (int)len, c);
                        }
                        char *val = strndup(eq + 1, len - (size_t)(eq + 1 - c));
                        tb_err_t err = val ? tb_kvlist_add(&kv, &n, where, c, (size_t)(eq - c),
                                                           val, errstr, errstr_size)
                                           : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                       "out of memory");
                        free(val);
                        if (err) {
                                tb_kvlist_free(kv, n);
                                return err;
                        }
                        c = comma ? comma + 1 : c + len;
                }
                tb_prop_set_map(p, base, kv, n);
                return TB_OK;
        }
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "%s: bad property type",
                         where);
}

/** Assign a libconfig setting to \p p, checking its type. */
static tb_err_t tb_prop_set_from_setting(const tb_conf_prop_t *p, void *base,
                                         const char *where,
                                         const config_setting_t *s, char *errstr,
                                         size_t errstr_size) {
        int t = config_setting_type(s);
        bool is_int = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
        switch (p->type) {
        case TB_CT_STRING:
        case TB_CT_ENUM:
                if (t != CONFIG_TYPE_STRING)
                        goto type;
                return tb_prop_set_from_string(p, base, where,
                                               config_setting_get_string(s), errstr,
                                               errstr_size);
        case TB_CT_BOOL:
                if (t != CONFIG_TYPE_BOOL)
                        goto type;
                *(bool *)tb_field(base, p->off) = config_setting_get_bool(s) != 0;
                return TB_OK;
        case TB_CT_INT:
                if (!is_int)
                        goto type;
                return tb_prop_set_i64(p, base, where, config_setting_get_int64(s),
                                       errstr, errstr_size);
        case TB_CT_DOUBLE: {
                if (!is_int && t != CONFIG_TYPE_FLOAT)
                        goto type;
                double d = is_int ? (double)config_setting_get_int64(s)
                                  : config_setting_get_float(s);
                tb_err_t err = tb_prop_range(p, where, d, errstr, errstr_size);
                if (err)
                        return err;
                *(double *)tb_field(base, p->off) = d;
                return TB_OK;
        }
        case TB_CT_DURATION:
        case TB_CT_SIZE:
                if (t == CONFIG_TYPE_STRING)
                        return tb_prop_set_from_string(p, base, where,
                                                       config_setting_get_string(s),
                                                       errstr, errstr_size);
                if (!is_int)
                        goto type;
                {
                        long long n = config_setting_get_int64(s);
                        int64_t v;
                        if (n < 0)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: %lld is negative", where, n);
                        if (p->type == TB_CT_SIZE)
                                v = n;
                        else if (__builtin_mul_overflow((int64_t)n, TB_SEC(1), &v) ||
                                 v > TB_DURATION_MAX_MS)
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: %lld seconds is too large", where, n);
                        return tb_prop_set_i64(p, base, where, v, errstr, errstr_size);
                }
        case TB_CT_STRLIST: {
                if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
                        goto type;
                int n = config_setting_length(s);
                char **list = n > 0 ? calloc((size_t)n, sizeof(*list)) : NULL;
                if (n > 0 && !list)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                for (int i = 0; i < n; i++) {
                        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                                tb_strlist_free(list, (size_t)n);
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s[%d]: expected a string, got %s", where,
                                                 i, tb_setting_type_name(e));
                        }
                        list[i] = strdup(config_setting_get_string(e));
                        if (!list[i]) {
                                tb_strlist_free(list, (size_t)n);
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory");
                        }
                }
                tb_prop_set_list(p, base, list, (size_t)(n > 0 ? n : 0));
                return TB_OK;
        }
        case TB_CT_MAP: {
                if (!config_setting_is_group(s))
                        goto type;
                tb_kv_t *kv = NULL;
                size_t n = 0;
                int len = config_setting_length(s);
                for (int i = 0; i < len; i++) {
                        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                        const char *name = config_setting_name(e);
                        tb_err_t err;
                        if (config_setting_type(e) != CONFIG_TYPE_STRING)
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "%s.%s: expected a string, got %s", where, name,
                                                tb_setting_type_name(e));
                        else
                                err = tb_kvlist_add(&kv, &n, where, name, strlen(name),
                                                    config_setting_get_string(e), errstr,
                                                    errstr_size);
                        if (err) {
                                tb_kvlist_free(kv, n);
                                return err;
                        }
                }
                tb_prop_set_map(p, base, kv, n);
                return TB_OK;
        }
        }
type:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "%s: expected %s, got %s",
                         where, tb_conf_type_expect(p->type), tb_setting_type_name(s));
}

static void tb_props_free(const tb_conf_prop_t *props, size_t n, void *base) {
        for (size_t i = 0; i < n; i++) {
                const tb_conf_prop_t *p = &props[i];
                if (p->type == TB_CT_STRING || p->type == TB_CT_ENUM) {
                        char **f = tb_field(base, p->off);
                        free(*f);
                        *f = NULL;
                } else if (p->type == TB_CT_STRLIST) {
                        tb_prop_set_list(p, base, NULL, 0);
                } else if (p->type == TB_CT_MAP) {
                        tb_prop_set_map(p, base, NULL, 0);
                }
        }
}

static tb_err_t tb_props_defaults(const tb_conf_prop_t *props, size_t n, void *base,
                                  char *errstr, size_t errstr_size) {
        for (size_t i = 0; i < n; i++) {
                char where[128];
                tb_snprintf(where, sizeof(where), "default of %s", props[i].name);
                tb_err_t err = tb_prop_set_from_string(&props[i], base, where,
                                                       props[i].def, errstr, errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}

/* ---- loading ------------------------------------------------------------- */

#define TB_ORIGIN_MAX 512

/** Where each main property's value came from, for finalize's messages. */
typedef struct tb_conf_ctx {
        const char *path;
        const char *dir;  /* include directory: the config file's own */
        char origin[TB_ARRAY_LEN(tb_conf_props)][TB_ORIGIN_MAX];
        unsigned *group_line; /* per tb_config_t.groups entry */
        rd_kafka_conf_t *rk_conf; /* scratch: validates the kafka group */
} tb_conf_ctx_t;

/** "FILE:LINE: " for \p s. Settings from an @included file carry the name
 *  as written; show it relative to the include directory like libconfig
 *  resolved it. */
static void tb_loc(const tb_conf_ctx_t *ctx, const config_setting_t *s, char *buf,
                   size_t size) {
        const char *f = config_setting_source_file(s);
        unsigned line = config_setting_source_line(s);
        if (!f || !strcmp(f, ctx->path))
                tb_snprintf(buf, size, "%s:%u: ", ctx->path, line);
        else if (f[0] == '/' || !ctx->dir || !strcmp(ctx->dir, "."))
                tb_snprintf(buf, size, "%s:%u: ", f, line);
        else
                tb_snprintf(buf, size, "%s/%s:%u: ", ctx->dir, f, line);
}

static int tb_cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/**
 * Unknown key \p key at relative level \p rel_prefix ("" or "api.") of
 * \p props: list the valid keys there and suggest the closest one.
 */
static tb_err_t tb_unknown_key(const tb_conf_ctx_t *ctx, const config_setting_t *s,
                               const tb_conf_prop_t *props, size_t n,
                               const char *rel_prefix, const char *disp_group,
                               const char **extra, size_t extra_cnt,
                               char *errstr, size_t errstr_size) {
        const char *names[TB_ARRAY_LEN(tb_conf_props) + 8];
        size_t len[TB_ARRAY_LEN(names)];
        size_t cnt = 0, pl = strlen(rel_prefix);
        for (size_t i = 0; i < n && cnt < TB_ARRAY_LEN(names); i++) {
                if (strncmp(props[i].name, rel_prefix, pl))
                        continue;
                const char *rest = props[i].name + pl;
                const char *dot = strchr(rest, '.');
                size_t l = dot ? (size_t)(dot - rest) : strlen(rest);
                bool dup = false;
                for (size_t j = 0; j < cnt; j++)
                        if (len[j] == l && !strncmp(names[j], rest, l))
                                dup = true;
                if (!dup) {
                        names[cnt] = rest;
                        len[cnt++] = l;
                }
        }
        /* Copy out as NUL-terminated names so they can be sorted. */
        char buf[TB_ARRAY_LEN(names)][64];
        const char *sorted[TB_ARRAY_LEN(names) + TB_ARRAY_LEN(tb_conf_special)];
        size_t sc = 0;
        for (size_t i = 0; i < cnt; i++) {
                tb_snprintf(buf[i], sizeof(buf[i]), "%.*s", (int)len[i], names[i]);
                sorted[sc++] = buf[i];
        }
        for (size_t i = 0; i < extra_cnt && sc < TB_ARRAY_LEN(sorted); i++)
                sorted[sc++] = extra[i];
        qsort(sorted, sc, sizeof(sorted[0]), tb_cmp_str);

        const char *key = config_setting_name(s);
        char list[1024] = "";
        size_t ll = 0, best_d = (size_t)-1;
        const char *best = NULL;
        for (size_t i = 0; i < sc; i++) {
                int w = snprintf(list + ll, sizeof(list) - ll, "%s%s", i ? ", " : "",
                                 sorted[i]);
                if (w > 0 && (size_t)w < sizeof(list) - ll)
                        ll += (size_t)w;
                size_t d = tb_edit_distance(key, sorted[i]);
                if (d < best_d) {
                        best_d = d;
                        best = sorted[i];
                }
        }
        /* Suggest only near misses: a third of the name, at least one edit. */
        size_t klen = strlen(key);
        size_t limit = klen / 3 > 1 ? klen / 3 : 1;
        char hint[128] = "";
        if (best && best_d <= limit)
                tb_snprintf(hint, sizeof(hint), " (did you mean '%s'?)", best);
        char loc[512];
        tb_loc(ctx, s, loc, sizeof(loc));
        if (*disp_group)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%sunknown key '%s.%s'; valid keys in '%s': %s%s", loc,
                                 disp_group, key, disp_group, list, hint);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%sunknown key '%s'; valid top-level keys: %s%s", loc, key, list,
                         hint);
}

/**
 * Apply every member of libconfig group \p grp to \p props/\p base.
 * \p rel_prefix is the property-name prefix of this level ("" or "api."),
 * \p disp_prefix the full dotted path for messages ("" , "groups.ops").
 * \p origin, if non-NULL, receives "FILE:LINE: key" per property index.
 */
static tb_err_t tb_walk(tb_conf_ctx_t *ctx, const config_setting_t *grp,
                        const tb_conf_prop_t *props, size_t n, void *base,
                        const char *rel_prefix, const char *disp_prefix,
                        char (*origin)[TB_ORIGIN_MAX], char *errstr, size_t errstr_size) {
        int cnt = config_setting_length(grp);
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
                const char *name = config_setting_name(s);
                char rel[256], disp[256], where[768];
                tb_snprintf(rel, sizeof(rel), "%s%s", rel_prefix, name);
                tb_snprintf(disp, sizeof(disp), "%s%s%s", disp_prefix,
                            *disp_prefix ? "." : "", name);
                bool top = !*rel_prefix && !*disp_prefix;
                bool special = false;
                for (size_t j = 0; top && j < TB_ARRAY_LEN(tb_conf_special); j++)
                        special |= !strcmp(name, tb_conf_special[j]);
                if (special)
                        continue;
                tb_loc(ctx, s, where, sizeof(where));
                tb_snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s",
                            disp);
                size_t rl = strlen(rel);
                bool is_prefix = false;
                size_t k;
                for (k = 0; k < n; k++) {
                        if (!strcmp(props[k].name, rel))
                                break;
                        if (!strncmp(props[k].name, rel, rl) && props[k].name[rl] == '.')
                                is_prefix = true;
                }
                if (k < n) {
                        tb_err_t err = tb_prop_set_from_setting(&props[k], base, where, s,
                                                                errstr, errstr_size);
                        if (err)
                                return err;
                        if (origin)
                                tb_snprintf(origin[k], sizeof(origin[k]), "%s", where);
                        continue;
                }
                if (is_prefix) {
                        if (!config_setting_is_group(s))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: expected a group ({ ... }), got %s",
                                                 where, tb_setting_type_name(s));
                        char sub[260];
                        tb_snprintf(sub, sizeof(sub), "%s.", rel);
                        tb_err_t err = tb_walk(ctx, s, props, n, base, sub, disp, origin,
                                               errstr, errstr_size);
                        if (err)
                                return err;
                        continue;
                }
                return tb_unknown_key(ctx, s, props, n, rel_prefix, disp_prefix,
                                      top ? tb_conf_special : NULL,
                                      top ? TB_ARRAY_LEN(tb_conf_special) : 0, errstr,
                                      errstr_size);
        }
        return TB_OK;
}

/** A scalar setting as a string (for kafka and plugin pass-through). */
static tb_err_t tb_scalar_string(const tb_conf_ctx_t *ctx, const config_setting_t *s,
                                 const char *disp, char **out, char *errstr,
                                 size_t errstr_size) {
        char buf[64];
        const char *v = buf;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING:
                v = config_setting_get_string(s);
                break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                tb_snprintf(buf, sizeof(buf), "%lld", config_setting_get_int64(s));
                break;
        case CONFIG_TYPE_FLOAT: {
                /* Shortest form that reads back as the same double. */
                double d = config_setting_get_float(s);
                for (int prec = 6; prec <= 17; prec++) {
                        tb_snprintf(buf, sizeof(buf), "%.*g", prec, d);
                        if (strtod(buf, NULL) == d)
                                break;
                }
                break;
        }
        case CONFIG_TYPE_BOOL:
                v = config_setting_get_bool(s) ? "true" : "false";
                break;
        default: {
                char loc[512];
                tb_loc(ctx, s, loc, sizeof(loc));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s%s: expected a string, number or boolean, got %s", loc,
                                 disp, tb_setting_type_name(s));
        }
        }
        *out = strdup(v);
        return *out ? TB_OK
                    : tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
}

/** Validate one librdkafka property on the scratch conf. */
static tb_err_t tb_kafka_check(tb_conf_ctx_t *ctx, const char *where, const char *key,
                               const char *value, char *errstr, size_t errstr_size) {
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_kafka_managed); i++)
                if (!strcmp(key, tb_kafka_managed[i]))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: \"%s\" is set by taskbus for each role; "
                                         "remove it",
                                         where, key);
        char rkerr[512];
        if (rd_kafka_conf_set(ctx->rk_conf, key, value, rkerr, sizeof(rkerr)) !=
            RD_KAFKA_CONF_OK)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: librdkafka: %s", where, rkerr);
        return TB_OK;
}

/** Set (or replace) kafka property \p key in \p conf; takes \p value. */
static tb_err_t tb_kafka_put(tb_config_t *conf, const char *key, char *value,
                             char *errstr, size_t errstr_size) {
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                if (!strcmp(conf->kafka[i].key, key)) {
                        free(conf->kafka[i].value);
                        conf->kafka[i].value = value;
                        return TB_OK;
                }
        }
        tb_kv_t *kv = realloc(conf->kafka, (conf->kafka_cnt + 1) * sizeof(*kv));
        char *k = strdup(key);
        if (!kv || !k) {
                if (kv)
                        conf->kafka = kv;
                free(k);
                free(value);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        conf->kafka = kv;
        conf->kafka[conf->kafka_cnt].key = k;
        conf->kafka[conf->kafka_cnt].value = value;
        conf->kafka_cnt++;
        return TB_OK;
}

static tb_err_t tb_load_kafka(tb_conf_ctx_t *ctx, tb_config_t *conf,
                              const config_setting_t *grp, char *errstr,
                              size_t errstr_size) {
        int cnt = config_setting_length(grp);
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
                char disp[256], key[256], where[768];
                tb_snprintf(disp, sizeof(disp), "kafka.%s", config_setting_name(s));
                tb_snprintf(key, sizeof(key), "%s", config_setting_name(s));
                for (char *c = key; *c; c++)
                        if (*c == '_')
                                *c = '.';
                tb_loc(ctx, s, where, sizeof(where));
                tb_snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s",
                            disp);
                char *value = NULL;
                tb_err_t err = tb_scalar_string(ctx, s, disp, &value, errstr, errstr_size);
                if (err)
                        return err;
                err = tb_kafka_check(ctx, where, key, value, errstr, errstr_size);
                if (err) {
                        free(value);
                        return err;
                }
                err = tb_kafka_put(conf, key, value, errstr, errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}

static tb_err_t tb_load_plugins(tb_conf_ctx_t *ctx, tb_config_t *conf,
                                const config_setting_t *grp, char *errstr,
                                size_t errstr_size) {
        int cnt = config_setting_length(grp);
        if (cnt <= 0)
                return TB_OK;
        conf->plugins = calloc((size_t)cnt, sizeof(*conf->plugins));
        if (!conf->plugins)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *ps = config_setting_get_elem(grp, (unsigned)i);
                char disp[256];
                tb_snprintf(disp, sizeof(disp), "plugins.%s", config_setting_name(ps));
                if (!config_setting_is_group(ps)) {
                        char loc[512];
                        tb_loc(ctx, ps, loc, sizeof(loc));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s%s: expected a group ({ key = value; ... }), "
                                         "got %s",
                                         loc, disp, tb_setting_type_name(ps));
                }
                tb_plugin_conf_t *pc = &conf->plugins[conf->plugin_cnt++];
                pc->name = strdup(config_setting_name(ps));
                int kc = config_setting_length(ps);
                if (kc > 0) {
                        pc->kv = calloc((size_t)kc, sizeof(*pc->kv));
                        pc->kv_where = calloc((size_t)kc, sizeof(*pc->kv_where));
                }
                if (!pc->name || (kc > 0 && (!pc->kv || !pc->kv_where)))
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                for (int j = 0; j < kc; j++) {
                        const config_setting_t *s = config_setting_get_elem(ps, (unsigned)j);
                        char kdisp[512];
                        tb_snprintf(kdisp, sizeof(kdisp), "%s.%s", disp,
                                    config_setting_name(s));
                        tb_kv_t *kv = &pc->kv[pc->kv_cnt];
                        char loc[512];
                        tb_loc(ctx, s, loc, sizeof(loc));
                        loc[strlen(loc) - 2] = '\0'; /* drop the ": " */
                        kv->key = strdup(config_setting_name(s));
                        pc->kv_where[pc->kv_cnt] = strdup(loc);
                        if (!kv->key || !pc->kv_where[pc->kv_cnt])
                                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                 "out of memory");
                        pc->kv_cnt++;
                        tb_err_t err = tb_scalar_string(ctx, s, kdisp, &kv->value, errstr,
                                                        errstr_size);
                        if (err)
                                return err;
                }
        }
        return TB_OK;
}

static void tb_group_free(tb_group_conf_t *g) {
        tb_props_free(tb_group_props, TB_ARRAY_LEN(tb_group_props), g);
        free(g->name);
}

static tb_err_t tb_load_groups(tb_conf_ctx_t *ctx, tb_config_t *conf,
                               const config_setting_t *grp, char *errstr,
                               size_t errstr_size) {
        int cnt = config_setting_length(grp);
        if (cnt <= 0)
                return TB_OK;
        conf->groups = calloc((size_t)cnt, sizeof(*conf->groups));
        ctx->group_line = calloc((size_t)cnt, sizeof(*ctx->group_line));
        if (!conf->groups || !ctx->group_line)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < cnt; i++) {
                const config_setting_t *gs = config_setting_get_elem(grp, (unsigned)i);
                char disp[256];
                tb_snprintf(disp, sizeof(disp), "groups.%s", config_setting_name(gs));
                if (!config_setting_is_group(gs)) {
                        char loc[512];
                        tb_loc(ctx, gs, loc, sizeof(loc));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s%s: expected a group ({ os_user = \"...\"; "
                                         "... }), got %s",
                                         loc, disp, tb_setting_type_name(gs));
                }
                tb_group_conf_t *g = &conf->groups[conf->group_cnt];
                ctx->group_line[conf->group_cnt] = config_setting_source_line(gs);
                conf->group_cnt++;
                g->name = strdup(config_setting_name(gs));
                if (!g->name)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                tb_err_t err = tb_props_defaults(tb_group_props,
                                                 TB_ARRAY_LEN(tb_group_props), g, errstr,
                                                 errstr_size);
                if (!err)
                        err = tb_walk(ctx, gs, tb_group_props,
                                      TB_ARRAY_LEN(tb_group_props), g, "", disp, NULL,
                                      errstr, errstr_size);
                if (err)
                        return err;
        }
        return TB_OK;
}

static size_t tb_prop_index(const char *name) {
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_conf_props); i++)
                if (!strcmp(tb_conf_props[i].name, name))
                        return i;
        return 0; /* only called with names from the table */
}

/** Environment overrides: after the file, before finalize. */
static tb_err_t tb_apply_env(tb_conf_ctx_t *ctx, tb_config_t *conf, char *errstr,
                             size_t errstr_size) {
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_conf_props); i++) {
                const tb_conf_prop_t *p = &tb_conf_props[i];
                const char *v = p->env ? getenv(p->env) : NULL;
                if (!v || !*v)
                        continue;
                char where[TB_ORIGIN_MAX];
                tb_snprintf(where, sizeof(where), "%s (from environment variable %s)",
                            p->name, p->env);
                tb_err_t err = tb_prop_set_from_string(p, conf, where, v, errstr,
                                                       errstr_size);
                if (err)
                        return err;
                tb_snprintf(ctx->origin[i], sizeof(ctx->origin[i]), "%s", where);
        }
        const char *k = getenv("TASKBUS_KAFKA");
        if (k && *k) {
                tb_err_t err = tb_kafka_check(
                        ctx, "kafka.bootstrap_servers (from environment variable "
                             "TASKBUS_KAFKA)",
                        "bootstrap.servers", k, errstr, errstr_size);
                if (err)
                        return err;
                char *v = strdup(k);
                if (!v)
                        return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                return tb_kafka_put(conf, "bootstrap.servers", v, errstr, errstr_size);
        }
        return TB_OK;
}

static bool tb_name_chars_ok(const char *s, const char *extra) {
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
                        return false;
        return true;
}

/** Cross-field checks (tb_conf_checks lists them for the doc). */
static tb_err_t tb_config_finalize(tb_conf_ctx_t *ctx, tb_config_t *conf, char *errstr,
                                   size_t errstr_size) {
#define ORIGIN(name) ctx->origin[tb_prop_index(name)]
        char a[48], b[48];
        if (conf->log_retention_default_ms > conf->history_retention_ms) {
                tb_units_duration_format(conf->log_retention_default_ms, a, sizeof(a));
                tb_units_duration_format(conf->history_retention_ms, b, sizeof(b));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %s exceeds archiver.history_retention (%s): logs "
                                 "would outlive their runs; lower it or raise "
                                 "archiver.history_retention",
                                 ORIGIN("archiver.log_retention_default"), a, b);
        }
        for (size_t i = 0; i < conf->group_cnt; i++) {
                const tb_group_conf_t *g = &conf->groups[i];
                if (g->log_retention_max_ms > conf->history_retention_ms) {
                        tb_units_duration_format(g->log_retention_max_ms, a, sizeof(a));
                        tb_units_duration_format(conf->history_retention_ms, b, sizeof(b));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s:%u: groups.%s.log_retention_max: %s exceeds "
                                         "archiver.history_retention (%s)",
                                         ctx->path, ctx->group_line[i], g->name, a, b);
                }
                if (g->os_user && !strcmp(g->os_user, "root") && !conf->exec_allow_root)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s:%u: groups.%s.os_user: \"root\" is refused "
                                         "unless executor.allow_root = true",
                                         ctx->path, ctx->group_line[i], g->name);
                if (g->os_user && !*g->os_user)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s:%u: groups.%s.os_user: must not be empty",
                                         ctx->path, ctx->group_line[i], g->name);
        }

        /* api.listen: HOST:PORT, HOST may be a bracketed IPv6 address. */
        const char *listen = conf->api_listen ? conf->api_listen : "";
        const char *colon = strrchr(listen, ':');
        bool ok = colon && colon != listen && colon[1];
        if (ok && listen[0] == '[')
                ok = colon > listen + 1 && colon[-1] == ']';
        if (ok) {
                char *end;
                errno = 0;
                long port = strtol(colon + 1, &end, 10);
                ok = !*end && !errno && port >= 0 && port <= 65535 &&
                     isdigit((unsigned char)colon[1]);
        }
        if (!ok)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not HOST:PORT (e.g. \"127.0.0.1:8080\", "
                                 "\"[::1]:8080\", port 0 to 65535)",
                                 ORIGIN("api.listen"), listen);

        char *pqerr = NULL;
        PQconninfoOption *opts = PQconninfoParse(conf->pg_url ? conf->pg_url : "", &pqerr);
        if (!opts || !conf->pg_url || !*conf->pg_url) {
                tb_err_t err = tb_seterr(
                        errstr, errstr_size, TB_ERR_INVALID,
                        "%s: not a valid libpq connection string: %s", ORIGIN("postgres.url"),
                        pqerr ? pqerr : "empty; expected e.g. \"postgresql://user@host:5432/db\"");
                /* libpq's messages end in a newline; keep errstr one line. */
                size_t el = strlen(errstr ? errstr : "");
                if (el && errstr[el - 1] == '\n')
                        errstr[el - 1] = '\0';
                PQfreemem(pqerr);
                PQconninfoFree(opts);
                return err;
        }
        PQconninfoFree(opts);

        /* Kafka topic names: [A-Za-z0-9._-], at most 249; the longest of ours is
         * "scheduler-checkpoints". */
        size_t plen = strlen(conf->topic_prefix ? conf->topic_prefix : "");
        if (!tb_name_chars_ok(conf->topic_prefix ? conf->topic_prefix : "", "._-") ||
            plen + strlen("scheduler-checkpoints") > 249)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" cannot prefix a Kafka topic name: use only "
                                 "letters, digits, '.', '_' and '-', at most 228 characters",
                                 ORIGIN("topics.prefix"), conf->topic_prefix);

        size_t rlen = strlen(conf->region ? conf->region : "");
        if (!rlen || rlen > 63 || !tb_name_chars_ok(conf->region, "-_"))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not a region name: use 1 to 63 letters, "
                                 "digits, '-' or '_'",
                                 ORIGIN("region"), conf->region ? conf->region : "");

        for (size_t i = 0; i < conf->repl_remote_region_cnt; i++) {
                const char *r = conf->repl_remote_regions[i];
                size_t l = strlen(r);
                if (!l || l > 63 || !tb_name_chars_ok(r, "-_"))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s[%zu]: \"%s\" is not a region name: use 1 to 63 "
                                         "letters, digits, '-' or '_'",
                                         ORIGIN("replication.remote_regions"), i, r);
                if (!strcmp(r, conf->region))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s[%zu]: \"%s\" is this region (`region`): list only "
                                         "the other regions",
                                         ORIGIN("replication.remote_regions"), i, r);
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(r, conf->repl_remote_regions[j]))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s[%zu]: \"%s\" is listed twice",
                                                 ORIGIN("replication.remote_regions"), i, r);
        }
        const struct {
                const char *key;
                const tb_kv_t *kv;
                size_t n;
                bool url;
        } maps[] = {
                {"replication.region_apis", conf->repl_region_apis, conf->repl_region_api_cnt,
                 true},
                {"replication.region_kafka", conf->repl_region_kafka,
                 conf->repl_region_kafka_cnt, false},
        };
        for (size_t m = 0; m < TB_ARRAY_LEN(maps); m++)
                for (size_t i = 0; i < maps[m].n; i++) {
                        const tb_kv_t *kv = &maps[m].kv[i];
                        size_t l = strlen(kv->key);
                        if (!l || l > 63 || !tb_name_chars_ok(kv->key, "-_") ||
                            !strcmp(kv->key, conf->region))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s.%s: \"%s\" must name another region (1 to "
                                                 "63 letters, digits, '-' or '_', not `region`)",
                                                 ORIGIN(maps[m].key), kv->key, kv->key);
                        if (!kv->value[0] ||
                            (maps[m].url && strncmp(kv->value, "http://", 7) &&
                             strncmp(kv->value, "https://", 8)))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s.%s: \"%s\" is not %s", ORIGIN(maps[m].key),
                                                 kv->key, kv->value,
                                                 maps[m].url ? "an http:// or https:// URL"
                                                             : "a list of HOST:PORT");
                }

        if (!conf->exec_workdir || conf->exec_workdir[0] != '/')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not an absolute path",
                                 ORIGIN("executor.workdir"),
                                 conf->exec_workdir ? conf->exec_workdir : "");
        for (size_t i = 0; i < conf->exec_plugin_path_cnt; i++)
                if (conf->exec_plugin_paths[i][0] != '/')
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s[%zu]: \"%s\" is not an absolute path",
                                         ORIGIN("executor.plugin_paths"), i,
                                         conf->exec_plugin_paths[i]);
#undef ORIGIN
        return TB_OK;
}

/* ---- integer width pre-scan --------------------------------------------- */

/*
 * libconfig 1.5 stores an integer literal without the L suffix in 32 bits
 * and silently wraps anything larger (memory_max = 5368709120 reads as
 * 1GiB). It keeps no trace of the original text, so the only way to refuse
 * such values is to look at the literals before libconfig parses them.
 * This is a lexer for just enough of libconfig's syntax: comments, strings,
 * names (which may contain digits and '-'), numbers and @include.
 */
#define TB_INCLUDE_DEPTH_MAX 10

static tb_err_t tb_scan_file(tb_conf_ctx_t *ctx, const char *file, int depth,
                             char *errstr, size_t errstr_size);

/** Check one integer literal [tok, end) at \p line. */
static tb_err_t tb_scan_int(const char *file, unsigned line, const char *tok,
                            const char *end, char *errstr, size_t errstr_size) {
        bool neg = *tok == '-';
        const char *d = tok + (*tok == '-' || *tok == '+');
        bool hex = d[0] == '0' && (d[1] == 'x' || d[1] == 'X');
        bool wide = end > d && (end[-1] == 'L' || end[-1] == 'l');
        const char *digits = hex ? d + 2 : d;
        const char *dend = wide ? end - 1 : end;
        /* unsigned magnitude with saturation */
        unsigned __int128 mag = 0;
        for (const char *c = digits; c < dend; c++) {
                int v = isdigit((unsigned char)*c) ? *c - '0'
                                                   : (tolower((unsigned char)*c) - 'a' + 10);
                mag = mag * (hex ? 16 : 10) + (unsigned)v;
                if (mag > ((unsigned __int128)1 << 70))
                        break;
        }
        unsigned __int128 lim = wide ? (unsigned __int128)INT64_MAX : INT32_MAX;
        if (neg && !hex)
                lim += 1;
        if (mag <= lim)
                return TB_OK;
        int len = (int)(end - tok);
        if (wide)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s:%u: integer %.*s does not fit in 64 bits", file, line,
                                 len > 40 ? 40 : len, tok);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s:%u: integer %.*s does not fit in 32 bits: write %.*sL "
                         "(libconfig would silently truncate it)",
                         file, line, len > 40 ? 40 : len, tok, len > 40 ? 40 : len, tok);
}

static tb_err_t tb_scan_text(tb_conf_ctx_t *ctx, const char *file, const char *p,
                             int depth, char *errstr, size_t errstr_size) {
        unsigned line = 1;
        bool line_start = true;
        while (*p) {
                char c = *p;
                if (c == '\n') {
                        line++;
                        line_start = true;
                        p++;
                        continue;
                }
                if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
                        p++;
                        continue;
                }
                bool was_start = line_start;
                line_start = false;
                if (c == '#' || (c == '/' && p[1] == '/')) {
                        while (*p && *p != '\n')
                                p++;
                        continue;
                }
                if (c == '/' && p[1] == '*') {
                        for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                                line += *p == '\n';
                        p += *p ? 2 : 0;
                        continue;
                }
                if (c == '"') {
                        for (p++; *p && *p != '"'; p++) {
                                if (*p == '\\' && p[1])
                                        p++;
                                line += *p == '\n';
                        }
                        p += *p ? 1 : 0;
                        continue;
                }
                if (c == '@' && was_start && !strncmp(p, "@include", 8)) {
                        const char *q = p + 8;
                        while (*q == ' ' || *q == '\t')
                                q++;
                        if (*q == '"') {
                                const char *e = strchr(q + 1, '"');
                                if (e && !memchr(q + 1, '\n', (size_t)(e - q - 1))) {
                                        char inc[1024];
                                        int n = (int)(e - q - 1);
                                        /* libconfig 1.5 prepends the include
                                         * directory even to absolute paths. */
                                        if (q[1] == '/')
                                                return tb_seterr(
                                                        errstr, errstr_size, TB_ERR_INVALID,
                                                        "%s:%u: @include \"%.*s\": write the "
                                                        "path relative to %s (includes are "
                                                        "resolved from the main config "
                                                        "file's directory)",
                                                        file, line, n, q + 1, ctx->dir);
                                        tb_snprintf(inc, sizeof(inc), "%s/%.*s", ctx->dir, n,
                                                    q + 1);
                                        tb_err_t err = tb_scan_file(ctx, inc, depth + 1,
                                                                    errstr, errstr_size);
                                        if (err)
                                                return err;
                                }
                        }
                        while (*p && *p != '\n')
                                p++;
                        continue;
                }
                if (isalpha((unsigned char)c) || c == '*') {
                        while (isalnum((unsigned char)*p) || *p == '-' || *p == '_' ||
                               *p == '*')
                                p++;
                        continue;
                }
                if (isdigit((unsigned char)c) ||
                    ((c == '-' || c == '+') && isdigit((unsigned char)p[1]))) {
                        const char *tok = p;
                        p += c == '-' || c == '+';
                        bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
                        if (hex) {
                                p += 2;
                                while (isxdigit((unsigned char)*p))
                                        p++;
                        } else {
                                while (isdigit((unsigned char)*p))
                                        p++;
                                if (*p == '.' || *p == 'e' || *p == 'E') {
                                        /* a float: not our concern */
                                        while (isalnum((unsigned char)*p) || *p == '.' ||
                                               ((*p == '-' || *p == '+') &&
                                                (p[-1] == 'e' || p[-1] == 'E')))
                                                p++;
                                        continue;
                                }
                        }
                        if (*p == 'L' || *p == 'l')
                                p++;
                        tb_err_t err = tb_scan_int(file, line, tok, p, errstr, errstr_size);
                        if (err)
                                return err;
                        continue;
                }
                p++;
        }
        return TB_OK;
}

static tb_err_t tb_scan_file(tb_conf_ctx_t *ctx, const char *file, int depth,
                             char *errstr, size_t errstr_size) {
        /* Unreadable or too deep: libconfig's own error says it better. */
        if (depth > TB_INCLUDE_DEPTH_MAX)
                return TB_OK;
        FILE *fp = fopen(file, "r");
        if (!fp)
                return TB_OK;
        tb_buf_t buf = {0};
        char chunk[4096];
        size_t n;
        tb_err_t err = TB_OK;
        while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
                if (tb_buf_append(&buf, chunk, n)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                        break;
                }
        }
        fclose(fp);
        if (!err && buf.len && !memchr(buf.data, '\0', buf.len)) {
                if (!tb_buf_append(&buf, "", 1))
                        err = tb_scan_text(ctx, file, buf.data, depth, errstr, errstr_size);
        }
        tb_buf_free(&buf);
        return err;
}

void tb_config_destroy(tb_config_t *conf) {
        if (!conf)
                return;
        tb_props_free(tb_conf_props, TB_ARRAY_LEN(tb_conf_props), conf);
        free(conf->path);
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                free(conf->kafka[i].key);
                free(conf->kafka[i].value);
        }
        free(conf->kafka);
        for (size_t i = 0; i < conf->plugin_cnt; i++) {
                for (size_t j = 0; j < conf->plugins[i].kv_cnt; j++) {
                        free(conf->plugins[i].kv[j].key);
                        free(conf->plugins[i].kv[j].value);
                        free(conf->plugins[i].kv_where[j]);
                }
                free(conf->plugins[i].kv);
                free(conf->plugins[i].kv_where);
                free(conf->plugins[i].name);
        }
        free(conf->plugins);
        for (size_t i = 0; i < conf->group_cnt; i++)
                tb_group_free(&conf->groups[i]);
        free(conf->groups);
        tb_group_free(&conf->group_default);
        free(conf);
}

/** Defaults only; on failure (a bad table row) NULL with errstr set. */
static tb_config_t *tb_config_new_defaults(char *errstr, size_t errstr_size) {
        tb_config_t *conf = calloc(1, sizeof(*conf));
        if (!conf) {
                tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                return NULL;
        }
        conf->path = strdup("(defaults)");
        char *bootstrap = strdup(TB_KAFKA_DEFAULT_BOOTSTRAP);
        if (!conf->path || !bootstrap) {
                free(bootstrap);
                tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto fail;
        }
        conf->group_default.name = strdup("*");
        if (!conf->group_default.name) {
                tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto fail;
        }
        if (tb_props_defaults(tb_conf_props, TB_ARRAY_LEN(tb_conf_props), conf, errstr,
                              errstr_size) ||
            tb_props_defaults(tb_group_props, TB_ARRAY_LEN(tb_group_props),
                              &conf->group_default, errstr, errstr_size) ||
            tb_kafka_put(conf, "bootstrap.servers", bootstrap, errstr, errstr_size))
                goto fail;
        return conf;
fail:
        tb_config_destroy(conf);
        return NULL;
}

tb_config_t *tb_config_defaults(void) {
        char errstr[256];
        tb_config_t *conf = tb_config_new_defaults(errstr, sizeof(errstr));
        if (!conf)
                tb_error("config", "defaults: %s", errstr);
        return conf;
}

tb_err_t tb_config_load(const char *path, tb_config_t **out, char *errstr,
                        size_t errstr_size) {
        tb_conf_ctx_t *ctx = calloc(1, sizeof(*ctx));
        tb_config_t *conf = NULL;
        config_t cfg;
        bool cfg_init = false;
        char *dir = NULL;
        tb_err_t err;

        *out = NULL;
        if (!ctx)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        ctx->path = path ? path : "(defaults)";
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_conf_props); i++)
                tb_snprintf(ctx->origin[i], sizeof(ctx->origin[i]), "%s (default)",
                            tb_conf_props[i].name);
        ctx->rk_conf = rd_kafka_conf_new();
        conf = tb_config_new_defaults(errstr, errstr_size);
        if (!ctx->rk_conf || !conf) {
                err = conf ? tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory")
                           : TB_ERR_INTERNAL;
                goto fail;
        }

        if (path) {
                /* libconfig says only "file I/O error": get the real reason. */
                struct stat st;
                FILE *fp = fopen(path, "r");
                if (!fp || fstat(fileno(fp), &st) || !S_ISREG(st.st_mode)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                        "cannot read config file %s: %s", path,
                                        fp ? "not a regular file" : strerror(errno));
                        if (fp)
                                fclose(fp);
                        goto fail;
                }
                fclose(fp);
                free(conf->path);
                conf->path = strdup(path);
                dir = strdup(path);
                if (!conf->path || !dir) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                        goto fail;
                }
                /* @include paths are relative to the main file's directory. */
                char *slash = strrchr(dir, '/');
                if (slash)
                        slash[slash == dir ? 1 : 0] = '\0';
                ctx->dir = slash ? dir : ".";
                err = tb_scan_file(ctx, path, 0, errstr, errstr_size);
                if (err)
                        goto fail;
                config_init(&cfg);
                cfg_init = true;
                config_set_include_dir(&cfg, ctx->dir);
                if (!config_read_file(&cfg, path)) {
                        const char *ef = config_error_file(&cfg);
                        const char *et = config_error_text(&cfg);
                        if (!et)
                                et = "unknown error";
                        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                                err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                                "%s: cannot read config file: %s",
                                                ef ? ef : path, et);
                        else
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "%s:%d: %s%s", ef ? ef : path,
                                                config_error_line(&cfg),
                                                strstr(et, "syntax error") ? ""
                                                                           : "syntax error: ",
                                                et);
                        goto fail;
                }
                const config_setting_t *root = config_root_setting(&cfg);
                /* The special groups first: they have their own walkers. */
                int cnt = config_setting_length(root);
                for (int i = 0; i < cnt; i++) {
                        const config_setting_t *s = config_setting_get_elem(root,
                                                                            (unsigned)i);
                        const char *name = config_setting_name(s);
                        bool special = false;
                        for (size_t j = 0; j < TB_ARRAY_LEN(tb_conf_special); j++)
                                special |= !strcmp(name, tb_conf_special[j]);
                        if (special && !config_setting_is_group(s)) {
                                char loc[512];
                                tb_loc(ctx, s, loc, sizeof(loc));
                                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                "%s%s: expected a group ({ ... }), got %s",
                                                loc, name, tb_setting_type_name(s));
                                goto fail;
                        }
                        if (!strcmp(name, "kafka"))
                                err = tb_load_kafka(ctx, conf, s, errstr, errstr_size);
                        else if (!strcmp(name, "plugins"))
                                err = tb_load_plugins(ctx, conf, s, errstr, errstr_size);
                        else if (!strcmp(name, "groups"))
                                err = tb_load_groups(ctx, conf, s, errstr, errstr_size);
                        else
                                err = TB_OK;
                        if (err)
                                goto fail;
                }
                /* Then the typed table (tb_walk skips the special groups). */
                err = tb_walk(ctx, root, tb_conf_props, TB_ARRAY_LEN(tb_conf_props),
                              conf, "", "", ctx->origin, errstr, errstr_size);
                if (err)
                        goto fail;
        }

        err = tb_apply_env(ctx, conf, errstr, errstr_size);
        if (!err)
                err = tb_config_finalize(ctx, conf, errstr, errstr_size);
        if (err)
                goto fail;

        *out = conf;
        conf = NULL;
fail:
        if (cfg_init)
                config_destroy(&cfg);
        free(dir);
        if (ctx->rk_conf)
                rd_kafka_conf_destroy(ctx->rk_conf);
        free(ctx->group_line);
        free(ctx);
        tb_config_destroy(conf);
        return err;
}

const tb_group_conf_t *tb_config_group(const tb_config_t *conf, const char *name) {
        for (size_t i = 0; conf && name && i < conf->group_cnt; i++)
                if (!strcmp(conf->groups[i].name, name))
                        return &conf->groups[i];
        return NULL;
}

const tb_group_conf_t *tb_config_group_policy(const tb_config_t *conf,
                                              const char *name) {
        const tb_group_conf_t *g = tb_config_group(conf, name);
        return g ? g : conf ? &conf->group_default : NULL;
}

const tb_plugin_conf_t *tb_config_plugin(const tb_config_t *conf, const char *name) {
        for (size_t i = 0; conf && name && i < conf->plugin_cnt; i++)
                if (!strcmp(conf->plugins[i].name, name))
                        return &conf->plugins[i];
        return NULL;
}

const char *tb_plugin_conf_get(const tb_plugin_conf_t *pc, const char *key) {
        for (size_t i = 0; pc && key && i < pc->kv_cnt; i++)
                if (!strcmp(pc->kv[i].key, key))
                        return pc->kv[i].value;
        return NULL;
}

/* ---- documentation -------------------------------------------------------- */

static void tb_doc_prop_row(FILE *fp, const tb_conf_prop_t *p, const char *prefix) {
        char def[256], range[256] = "";
        const char *type = tb_conf_type_name(p->type);
        if (!p->def)
                tb_snprintf(def, sizeof(def), "%s",
                            p->type == TB_CT_STRLIST ? "`[]`"
                            : p->type == TB_CT_MAP   ? "`{}`"
                                                     : "(unset)");
        else if (p->type == TB_CT_STRING || p->type == TB_CT_ENUM ||
                 p->type == TB_CT_DURATION || p->type == TB_CT_SIZE)
                tb_snprintf(def, sizeof(def), "`\"%s\"`", p->def);
        else
                tb_snprintf(def, sizeof(def), "`%s`", p->def);
        if (p->type == TB_CT_ENUM) {
                tb_enum_list(p->enums, "`", range, sizeof(range));
        } else if (p->min != p->max) {
                char lo[48], hi[48];
                tb_prop_format_num(p, p->min, lo, sizeof(lo));
                tb_prop_format_num(p, p->max, hi, sizeof(hi));
                tb_snprintf(range, sizeof(range), "%s .. %s", lo, hi);
        }
        fprintf(fp, "| `%s%s` | %s | %s | %s | %s", prefix, p->name, type, def, range,
                p->desc);
        if (p->env)
                fprintf(fp, " Overridden by `%s`.", p->env);
        fprintf(fp, " |\n");
}

void tb_config_write_doc(FILE *fp) {
        fprintf(fp,
                "# taskbus configuration\n"
                "\n"
                "<!-- Generated from the property table in core/lib/config/ by\n"
                "     `taskbusd --config-doc > docs/configuration.md`. Do not edit:\n"
                "     tests/unit/test_config.c fails when this file is stale. -->\n"
                "\n"
                "taskbus reads one file in [libconfig](https://hyperrealm.github.io/libconfig/)\n"
                "syntax; `config/taskbus.conf` is the documented development config, and\n"
                "`taskbusd --check-config FILE` validates a file without starting anything.\n"
                "A dotted key is a nested group: `postgres.url` is written\n"
                "\n"
                "```\n"
                "postgres = {\n"
                "        url = \"postgresql://taskbus@db.example:5432/taskbus\";\n"
                "};\n"
                "```\n"
                "\n"
                "Every key is optional and has the default below. An unknown key, a value\n"
                "of the wrong type or out of range is a fatal error naming FILE:LINE and the\n"
                "key (an unknown key also lists the valid keys of its group). `@include\n"
                "\"file\"` is resolved relative to the main config file's directory.\n"
                "\n"
                "## Value types\n"
                "\n"
                "| type | written as |\n"
                "|---|---|\n"
                "| string | `\"text\"` |\n"
                "| integer | `42` (`42L` beyond 32 bits) |\n"
                "| number | `1.5` or an integer |\n"
                "| boolean | `true` or `false` |\n"
                "| enum | one of the listed strings |\n"
                "| list of strings | `[\"a\", \"b\"]` or `()` for none |\n"
                "| map of strings | a group `{ us = \"http://api.us:8080\"; }`; in an "
                "environment variable `us=http://api.us:8080,ap=...` |\n"
                "| duration | a string: `\"500ms\"`, `\"30s\"`, `\"5m\"`, `\"2h\"`, `\"7d\"`, "
                "`\"1w\"`, combinations such as `\"1h30m\"`, decimals such as `\"1.5h\"`, an "
                "ISO 8601 duration `\"PT30S\"` or `\"P1DT2H\"` (no years or months: their "
                "length varies); or an integer number of seconds |\n"
                "| size | an integer number of bytes, or a string such as `\"256KiB\"`, "
                "`\"64MiB\"`, `\"1GiB\"` (powers of 1024) or `\"500KB\"`, `\"1MB\"` "
                "(powers of 1000) |\n"
                "\n"
                "## Environment overrides\n"
                "\n"
                "These win over the file, so a second stack can run beside another one\n"
                "(the tests use them). Empty means unset.\n"
                "\n"
                "| variable | overrides |\n"
                "|---|---|\n");
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_conf_props); i++)
                if (tb_conf_props[i].env)
                        fprintf(fp, "| `%s` | `%s` |\n", tb_conf_props[i].env,
                                tb_conf_props[i].name);
        fprintf(fp, "| `TASKBUS_KAFKA` | `kafka.bootstrap_servers` (librdkafka "
                    "`bootstrap.servers`) |\n");

        fprintf(fp, "\n## Settings\n");
        const char *last = NULL;
        size_t last_len = 0;
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_conf_props); i++) {
                const tb_conf_prop_t *p = &tb_conf_props[i];
                const char *dot = strchr(p->name, '.');
                size_t gl = dot ? (size_t)(dot - p->name) : 0;
                if (!last || gl != last_len || strncmp(last, p->name, gl)) {
                        if (gl)
                                fprintf(fp, "\n### %.*s\n", (int)gl, p->name);
                        else
                                fprintf(fp, "\n### top level\n");
                        fprintf(fp, "\n| key | type | default | range | description |\n"
                                    "|---|---|---|---|---|\n");
                        last = p->name;
                        last_len = gl;
                }
                tb_doc_prop_row(fp, p, "");
        }

        fprintf(fp,
                "\n## groups: per security group policy\n"
                "\n"
                "`groups = { NAME = { ... }; };` sets the policy of the security group\n"
                "NAME (the group a task belongs to). Its keys are typed and checked like\n"
                "the settings above. A group that is not listed, and any key a listed\n"
                "group leaves out, gets the defaults below.\n"
                "\n"
                "```\n"
                "groups = {\n"
                "        ops = {\n"
                "                os_user = \"nobody\";\n"
                "                log_retention_max = \"90d\";\n"
                "                images = [\"alpine:3.19\"];\n"
                "                network = \"none\";\n"
                "                memory_max = \"512MiB\";\n"
                "                cpus_max = 1.0;\n"
                "        };\n"
                "};\n"
                "```\n"
                "\n"
                "| key | type | default | range | description |\n"
                "|---|---|---|---|---|\n");
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_group_props); i++)
                tb_doc_prop_row(fp, &tb_group_props[i], "groups.NAME.");

        fprintf(fp,
                "\n## kafka: librdkafka properties\n"
                "\n"
                "Every key of the `kafka` group is passed to librdkafka (producers and\n"
                "consumers alike) with each `_` turned into `.`, because libconfig names\n"
                "cannot hold dots: `bootstrap_servers` is `bootstrap.servers`. Values may be\n"
                "any string, number or boolean. Each property is checked by librdkafka\n"
                "while loading; one it refuses is a fatal error carrying librdkafka's\n"
                "message. See librdkafka's CONFIGURATION.md for the properties.\n"
                "\n"
                "- Default: `bootstrap.servers = \"%s\"`.\n",
                TB_KAFKA_DEFAULT_BOOTSTRAP);
        fprintf(fp, "- Refused because taskbus sets them per role:");
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_kafka_managed); i++)
                fprintf(fp, "%s `%s`", i ? "," : "", tb_kafka_managed[i]);
        fprintf(fp,
                ".\n"
                "\n"
                "```\n"
                "kafka = {\n"
                "        bootstrap_servers = \"broker1:9092,broker2:9092\";\n"
                "        security_protocol = \"sasl_ssl\";\n"
                "        message_max_bytes = 2000000;\n"
                "};\n"
                "```\n"
                "\n"
                "## plugins: executor plugin settings\n"
                "\n"
                "`plugins = { NAME = { key = value; ... }; };` hands the group NAME to the\n"
                "executor plugin NAME as key/value strings (numbers and booleans are\n"
                "turned into text). The plugin checks its own keys when it is loaded.\n"
                "\n"
                "```\n"
                "plugins = {\n"
                "        shell = { shell = \"/bin/sh\"; };\n"
                "};\n"
                "```\n"
                "\n"
                "## Cross-field checks\n"
                "\n"
                "After every value is read (file, then environment), these are checked:\n"
                "\n");
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_conf_checks); i++)
                fprintf(fp, "- %s\n", tb_conf_checks[i]);
}
