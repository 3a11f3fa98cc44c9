/**
 * @file config/table.c
 * @brief The property tables: every setting of taskbus.conf with its type,
 *        default, bounds, environment override and description, and what
 *        describes a property in messages and in docs/configuration.md.
 *
 * Adding a setting: add the field to tb_config_t (or tb_group_conf_t), add
 * one row to tb_config_props (or tb_config_group_props), regenerate the doc
 * with `taskbusd --config-doc > docs/configuration.md`. Nothing else.
 */
#include "config/config_internal.h"

#include <stddef.h>
#include <string.h>

#define F(field) offsetof(tb_config_t, field)
#define G(field) offsetof(tb_group_conf_t, field)
#define C(field) offsetof(tb_notify_channel_t, field)

/* The main table. Order is the order of the generated doc. */
const tb_config_prop_t tb_config_props[] = {
        {"region", TB_CT_STRING, F(region), 0, "local", 0, 0, NULL,
         "TASKBUS_REGION",
         "Name of the region this process runs in (letters, digits, '-', '_'). "
         "A task fires only in its home region."},
        {"node", TB_CT_STRING, F(node), 0, "", 0, 0, NULL, "TASKBUS_NODE",
         "This process's name in Kafka consumer groups (static membership) and "
         "transactional ids (letters, digits, '.', '_', '-'), the same at every start so a "
         "restart takes its partitions back at once instead of after the session timeout. "
         "Empty: the host name and a hash of the config file, region, api.listen, topic "
         "prefix and roles; a second taskbusd with the same on the same host gets "
         "HOST-PID instead. Set it explicitly when processes move between hosts."},
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
         "libpq connection string (URI or key=value form) of the projection database; every "
         "libpq parameter works, e.g. sslmode=verify-full&sslrootcert=CA.pem for TLS and "
         "passfile=FILE (mode 0600) for the password, which then stays out of the string "
         "(docs/deploy.md). taskbus never prints the string's password."},
        {"postgres.pool_size", TB_CT_INT, F(pg_pool_size), 0, "8", 1, 1000, NULL,
         NULL, "Connections per process in the PostgreSQL pool."},

        {"api.listen", TB_CT_STRING, F(api_listen), 0, "127.0.0.1:8080", 0, 0, NULL,
         "TASKBUS_API_LISTEN",
         "HOST:PORT the REST API listens on (\"[::1]:8080\" for IPv6; port 0 picks a free one)."},
        {"api.tls_cert", TB_CT_STRING, F(api_tls_cert), 0, NULL, 0, 0, NULL,
         "TASKBUS_API_TLS_CERT",
         "File holding the REST API's TLS certificate chain (PEM, the server's certificate "
         "first, then its intermediates). Set with api.tls_key, the API serves HTTPS only "
         "(a plain HTTP request on its port gets no answer); unset, plain HTTP. Read once, "
         "when the api role starts: replace the file and restart to renew."},
        {"api.tls_key", TB_CT_STRING, F(api_tls_key), 0, NULL, 0, 0, NULL,
         "TASKBUS_API_TLS_KEY",
         "File holding the private key of api.tls_cert (PEM, not encrypted). Mode 0600 "
         "(0640 is accepted with a warning; readable by others is refused). Read when the "
         "api role starts, its bytes wiped from memory once the TLS library has them."},
        {"api.threads", TB_CT_INT, F(api_threads), 0, "64", 1, 256, NULL, NULL,
         "Requests handled at once (the request slots); more wait up to api.queue_timeout, "
         "then get 503. A write holds its slot while it waits for its command's reply; a "
         "log follow holds none while it streams."},
        {"api.queue_timeout", TB_CT_DURATION, F(api_queue_timeout_ms), 0, "5s", TB_MS(10),
         TB_MIN(5), NULL, NULL,
         "How long a request waits for a free worker slot (api.threads) before 503 with "
         "Retry-After."},
        {"api.pool_size", TB_CT_INT, F(api_pool_size), 0, "8", 1, 1000, NULL, NULL,
         "Connections of the api role's own PostgreSQL pool (apart from postgres.pool_size, "
         "which the commands role authenticates Kafka commands with, so neither starves the "
         "other)."},
        {"api.statement_timeout", TB_CT_DURATION, F(api_statement_timeout_ms), 0, "10s",
         TB_MS(100), TB_MIN(10), NULL, NULL,
         "PostgreSQL cancels any statement the API runs for a request after this long (the "
         "request then gets 503)."},
        {"api.rate", TB_CT_DOUBLE, F(api_rate), 0, "50", 0.01, 1e6, NULL, NULL,
         "Sustained requests per second allowed per user (token bucket); beyond it 429."},
        {"api.burst", TB_CT_INT, F(api_burst), 0, "100", 1, 1000000, NULL, NULL,
         "Token bucket size: requests a user may send at once above api.rate."},
        {"api.reply_timeout", TB_CT_DURATION, F(api_reply_timeout_ms), 0, "10s",
         TB_MS(100), TB_MIN(5), NULL, NULL,
         "How long a write waits for the command handler's reply before answering 504."},
        {"api.max_body", TB_CT_SIZE, F(api_max_body), 0, "256KiB", TB_KIB(1),
         TB_MIB(64), NULL, NULL, "Largest request body accepted; larger gets 413 (before "
         "the body is read when Content-Length announces it; a chunked body is cut off "
         "when it passes the limit)."},
        {"api.max_connections", TB_CT_INT, F(api_max_connections), 0, "4096", 1, 100000,
         NULL, NULL,
         "Open HTTP connections, all clients together (one thread each, with a 512 KiB "
         "stack; the open-files limit is raised to fit); beyond it new connections are "
         "closed at once. Idle and slow connections cost a sleeping thread, not a request "
         "slot (api.threads)."},
        {"api.max_connections_per_client", TB_CT_INT, F(api_max_connections_per_client), 0,
         "32", 1, 100000, NULL, NULL,
         "Open HTTP connections from one client IP address; beyond it its new connections "
         "are closed at once."},
        {"api.header_timeout", TB_CT_DURATION, F(api_header_timeout_ms), 0, "10s", TB_MS(100),
         TB_MIN(10), NULL, NULL,
         "Time a client has to send a request's line and headers, counted from the "
         "connection's start or the previous response (the keep-alive idle time); then the "
         "connection is closed."},
        {"api.body_timeout", TB_CT_DURATION, F(api_body_timeout_ms), 0, "30s", TB_MS(100),
         TB_MIN(10), NULL, NULL,
         "Time a client has to send a request's body once its headers are in; then the "
         "connection is closed."},
        {"api.max_requests_per_connection", TB_CT_INT, F(api_max_requests_per_connection), 0,
         "1000", 1, 1000000, NULL, NULL,
         "Requests served on one keep-alive connection; the last gets Connection: close."},
        /* live logs (api/follow.c) */
        {"api.max_follows_per_user", TB_CT_INT, F(api_max_follows_per_user), 0, "8", 1, 10000,
         NULL, NULL,
         "Live log streams (GET /v1/runs/{id}/log?follow=true) one user may hold open at "
         "once, on one api process; one more gets 429."},
        {"api.max_follow_duration", TB_CT_DURATION, F(api_max_follow_duration_ms), 0, "10m",
         TB_SEC(1), TB_HOUR(24), NULL, NULL,
         "Longest a live log stream lasts; then it ends with a last line telling the client "
         "to reconnect with ?offset= (docs/api.md)."},
        {"api.session_ttl", TB_CT_DURATION, F(api_session_ttl_ms), 0, "12h", TB_SEC(1),
         TB_HOUR(24 * 30), NULL, NULL,
         "How long a web console session lasts after sign-in (POST /v1/session); then the "
         "cookie is refused and the user signs in again. A session also ends at once when "
         "its token is revoked or expires, or its user is disabled (docs/console.md)."},
        {"api.admin_group", TB_CT_STRING, F(api_admin_group), 0, NULL, 0, 0, NULL, NULL,
         "Security group of the administrators: its members may use the admin API "
         "(/v1/admin/: users, groups, tokens, the admin log) and see the console's admin "
         "screens, and GET /v1/me reports them as admins. Unset: nobody (the admin API "
         "answers 403). Tasks and runs stay limited to the caller's own security groups."},

        {"security.key_file", TB_CT_STRING, F(security_key_file), 0, NULL, 0, 0, NULL,
         "TASKBUS_KEY_FILE",
         "File holding the region's internal key: 64 hex digits (32 random bytes), mode "
         "0600, readable by taskbus only. The api role signs the commands it produces with "
         "it and the commands role checks them; token signing keys are stored encrypted "
         "under it. Required by the api and commands roles and by `taskbus admin user|token "
         "create` (tools/stack generates one: `openssl rand -hex 32`)."},
        {"commands.signature_max_age", TB_CT_DURATION, F(cmd_signature_max_age_ms), 0,
         "5m", TB_SEC(1), TB_HOUR(24), NULL, NULL,
         "How far a signed command's timestamp (tb-auth ts) may be from the commands "
         "role's clock; older or newer records are refused, so a captured record cannot be "
         "replayed later (docs/kafka-interface.md)."},
        {"commands.batch_linger", TB_CT_DURATION, F(cmd_batch_linger_ms), 0, "10ms",
         TB_MS(0), TB_SEC(10), NULL, NULL,
         "Group commit: how long a batch of commands waits for more once it holds what was "
         "available, when the role is busy (its previous batch held more than one command). "
         "An idle role commits a lone command at once, whatever this says; 0: never wait "
         "(batches are then what arrived during the previous commit)."},
        {"commands.batch_max", TB_CT_INT, F(cmd_batch_max), 0, "1000", 1, 100000, NULL,
         NULL, "Most commands decided and committed in one Kafka transaction."},
        {"commands.batch_bytes", TB_CT_SIZE, F(cmd_batch_bytes), 0, "4MiB", TB_KIB(1),
         TB_MIB(256), NULL, NULL,
         "A batch of commands closes once its records reach this size (a record larger "
         "than this is a batch of its own)."},
        {"projector.batch_linger", TB_CT_DURATION, F(proj_batch_linger_ms), 0, "10ms",
         TB_MS(0), TB_SEC(10), NULL, NULL,
         "How long a projector batch waits for more records once it holds what was "
         "available, when the projector is busy (its previous batch held more than one "
         "record); an idle projector applies a lone record at once."},
        {"projector.batch_max", TB_CT_INT, F(proj_batch_max), 0, "1000", 1, 100000, NULL,
         NULL, "Most records applied in one PostgreSQL transaction by the projector."},

        {"scheduler.misfire_cap", TB_CT_INT, F(sched_misfire_cap), 0, "100", 0,
         1000000, NULL, NULL,
         "Most missed fires of one task caught up after downtime or failover; "
         "older ones are skipped (0: skip all missed fires)."},
        {"scheduler.tick", TB_CT_DURATION, F(sched_tick_ms), 0, "50ms", TB_MS(1),
         TB_SEC(10), NULL, NULL,
         "Timer granularity: how often due timers are checked. Bounds fire latency."},
        {"scheduler.max_batch", TB_CT_INT, F(sched_max_batch), 0, "2000", 1, 100000,
         NULL, NULL, "Most fires emitted in one Kafka transaction."},
        {"scheduler.calendar_poll", TB_CT_DURATION, F(sched_calendar_poll_ms), 0, "2s",
         TB_MS(100), TB_MIN(10), NULL, NULL,
         "How often the scheduler asks PostgreSQL whether a business calendar changed "
         "(one cheap query: the count and versions of the calendars); a change is "
         "applied to the next fire of every task that names the calendar."},
        {"scheduler.dependency_poll", TB_CT_DURATION, F(sched_dependency_poll_ms), 0, "1s",
         TB_MS(100), TB_MIN(10), NULL, NULL,
         "How often the scheduler checks, in PostgreSQL, the parents of the tasks "
         "that wait for others (after) in the partitions it owns. Bounds how long "
         "after its parents' results a dependent task starts."},

        {"executor.plugin_paths", TB_CT_STRLIST, F(exec_plugin_paths),
         F(exec_plugin_path_cnt), NULL, 0, 0, NULL, NULL,
         "Plugin shared objects (.so paths) or directories to load; empty: the "
         "shell, container and ssh plugins of the default directory, the first that "
         "exists of <bindir>/../<libdir>/taskbus/plugins (an installed taskbusd), the "
         "build tree's plugins/, <libdir>/taskbus/plugins as configured at build time."},
        {"executor.max_concurrent", TB_CT_INT, F(exec_max_concurrent), 0, "1000", 1,
         100000, NULL, NULL, "Most runs one executor process runs at once. Runs beyond it wait "
         "in the run queue in PostgreSQL, taken as slots free: groups in turn, FIFO within a "
         "group, each group within its max_running quota (taskbus admin group set)."},
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
        {"executor.unclaimed_timeout", TB_CT_DURATION, F(exec_unclaimed_timeout_ms), 0, "15m",
         TB_SEC(1), TB_DURATION_MAX_MS, NULL, NULL,
         "How long after its nominal time (or its emission, when later: a backfill, a catch-up) a run may stay scheduled with no executor "
         "claiming it (none running for its partition or its executor, its RunRequest "
         "lost or expired from the runs topic); past it one executor records the run "
         "LOST with that reason. Set it above the longest backlog you accept "
         "(executor.max_concurrent reached)."},
        {"executor.log_delivery_timeout", TB_CT_DURATION, F(exec_log_delivery_timeout_ms), 0,
         "2m", TB_SEC(1), TB_HOUR(1), NULL, NULL,
         "How long a log chunk may wait for Kafka (message.timeout.ms of the executor's log "
         "producer); then it is counted lost and its gap marked in the log "
         "(docs/reliability.md)."},
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

        {"notify.timeout", TB_CT_DURATION, F(notify_timeout_ms), 0, "10s", TB_MS(100),
         TB_MIN(5), NULL, NULL,
         "Longest one delivery attempt of a notification may take (connecting, sending, "
         "the receiver's answer); then the attempt has failed."},
        {"notify.max_attempts", TB_CT_INT, F(notify_max_attempts), 0, "6", 1, 100, NULL, NULL,
         "Attempts to deliver one notification; after the last failed one it is recorded "
         "failed for good. A receiver's 4xx answer other than 408 and 429 ends it at once."},
        {"notify.backoff", TB_CT_DURATION, F(notify_backoff_ms), 0, "2s", TB_MS(10), TB_HOUR(1),
         NULL, NULL,
         "Wait before the second attempt of a notification; it doubles at each attempt up to "
         "notify.backoff_max."},
        {"notify.backoff_max", TB_CT_DURATION, F(notify_backoff_max_ms), 0, "5m", TB_MS(10),
         TB_DAY(1), NULL, NULL, "Longest wait between two attempts of a notification."},
        {"notify.log_lines", TB_CT_INT, F(notify_log_lines), 0, "20", 0, 1000, NULL, NULL,
         "Last lines of a run's output a notification carries (0: none)."},
        {"notify.log_bytes", TB_CT_SIZE, F(notify_log_bytes), 0, "4KiB", 0, TB_KIB(64), NULL,
         NULL, "Most bytes of those last lines."},

        {"archiver.history_retention", TB_CT_DURATION, F(history_retention_ms), 0,
         "1826d", TB_DAY(1), TB_DURATION_MAX_MS, NULL, NULL,
         "How long run history (runs and their results, and the notifications sent about "
         "them) is kept in PostgreSQL."},
        {"archiver.log_retention_default", TB_CT_DURATION,
         F(log_retention_default_ms), 0, "30d", TB_HOUR(1), TB_DURATION_MAX_MS, NULL,
         NULL,
         "How long archived run output is kept when a task does not say "
         "(a task's log_retention, capped by its group's log_retention_max)."},
        {"archiver.batch", TB_CT_INT, F(archiver_batch), 0, "1000", 1, 1000000, NULL,
         NULL, "Rows copied or deleted per archiver transaction."},
};

/* Per security group policy: `groups = { NAME = { ... }; };`. */
const tb_config_prop_t tb_config_group_props[] = {
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
        {"allow_root", TB_CT_BOOL, G(allow_root), 0, "false", 0, 0, NULL, NULL,
         "Allow this group's containers to run as uid 0 (the container plugin's "
         "allow_root must be true as well); a task's user option never overrides it."},
};

/* A notification channel: `notify.channels = ( { name = "ops"; ... }, ... );`. */
const tb_config_prop_t tb_config_channel_props[] = {
        {"name", TB_CT_STRING, C(name), 0, NULL, 0, 0, NULL, NULL,
         "Required: what a task's notify rule names in `channel` (1 to 64 letters, digits, "
         "'.', '_', '-'; unique)."},
        {"type", TB_CT_ENUM, C(type), 0, "webhook", 0, 0, "webhook|smtp", NULL,
         "webhook: an HTTP POST of a JSON body, signed (X-Taskbus-Signature); smtp: a "
         "plain-text mail."},
        {"url", TB_CT_STRING, C(url), 0, NULL, 0, 0, NULL, NULL,
         "Required: the receiver, http:// or https:// for a webhook, smtp://HOST:PORT or "
         "smtps://HOST:PORT for mail."},
        {"secret_file", TB_CT_STRING, C(secret_file), 0, NULL, 0, 0, NULL, NULL,
         "File holding the secret, alone on one line, mode 0600 or 0400 (readable by its "
         "group or others is refused); relative to the config file's directory. A "
         "webhook's HMAC-SHA256 key (required for a webhook), the SMTP password (with "
         "username). Read when the config is loaded; never logged, never stored."},
        {"username", TB_CT_STRING, C(username), 0, NULL, 0, 0, NULL, NULL,
         "smtp: the login name (its password in secret_file); unset: no login."},
        {"from", TB_CT_STRING, C(from), 0, NULL, 0, 0, NULL, NULL,
         "smtp, required: the sender address (MAIL FROM and the From header)."},
        {"to", TB_CT_STRLIST, C(to), C(to_cnt), NULL, 0, 0, NULL, NULL,
         "smtp, required: the recipient addresses."},
};

#undef F
#undef G
#undef C

/* Top-level groups with their own walkers, listed among the valid keys. */
const char *tb_config_special_groups[] = {"groups", "kafka", "plugins"};

const size_t tb_config_props_cnt = TB_ARRAY_LEN(tb_config_props);
const size_t tb_config_group_props_cnt = TB_ARRAY_LEN(tb_config_group_props);
const size_t tb_config_channel_props_cnt = TB_ARRAY_LEN(tb_config_channel_props);
const size_t tb_config_special_groups_cnt = TB_ARRAY_LEN(tb_config_special_groups);
_Static_assert(TB_ARRAY_LEN(tb_config_props) <= TB_CONFIG_PROPS_MAX,
               "raise TB_CONFIG_PROPS_MAX in config/config_internal.h");
_Static_assert(TB_ARRAY_LEN(tb_config_special_groups) <= TB_CONFIG_SPECIAL_MAX,
               "raise TB_CONFIG_SPECIAL_MAX in config/config_internal.h");

/* librdkafka properties taskbus derives per role: a user value would break
 * consumer-group membership or transactional fencing. */
const char *tb_config_kafka_managed[] = {"group.id", "transactional.id"};
const size_t tb_config_kafka_managed_cnt = TB_ARRAY_LEN(tb_config_kafka_managed);

/* librdkafka properties that hold secrets: never printed, and each may come
 * from a file instead (`sasl_password_file`, mode 0600). */
static const char *tb_config_kafka_secrets[] = {"sasl.password", "ssl.key.password",
                                                "ssl.keystore.password",
                                                "sasl.oauthbearer.client.secret"};

bool tb_config_kafka_secret(const char *key) {
        for (size_t i = 0; i < TB_ARRAY_LEN(tb_config_kafka_secrets); i++)
                if (!strcmp(key, tb_config_kafka_secrets[i]))
                        return true;
        return false;
}

/* Per value type: its name in the doc, and what a value looks like for
 * "expected ..." messages. */
static const struct {
        const char *name;
        const char *expect;
} tb_config_types[] = {
        [TB_CT_STRING] = {"string", "a string"},
        [TB_CT_INT] = {"integer", "an integer"},
        [TB_CT_BOOL] = {"boolean", "a boolean (true or false)"},
        [TB_CT_DOUBLE] = {"number", "a number"},
        [TB_CT_DURATION] = {"duration", "a duration (a string like \"30s\", \"5m\", "
                                        "\"PT1H\", or an integer number of seconds)"},
        [TB_CT_SIZE] = {"size", "a size (an integer number of bytes or a string like "
                                "\"256KiB\")"},
        [TB_CT_STRLIST] = {"list of strings", "a list of strings (like [\"a\", \"b\"])"},
        [TB_CT_ENUM] = {"enum", "a string"},
        [TB_CT_MAP] = {"map of strings", "a group of NAME = \"value\" strings (like { us = "
                                         "\"http://api.us:8080\"; })"},
};
/* TB_CT_MAP is the last type: a new one needs its row above. */
_Static_assert(TB_ARRAY_LEN(tb_config_types) == TB_CT_MAP + 1,
               "every tb_config_type_t needs a row in tb_config_types");

const char *tb_config_type_name(tb_config_type_t t) {
        return (size_t)t < TB_ARRAY_LEN(tb_config_types) && tb_config_types[t].name
                       ? tb_config_types[t].name
                       : "?";
}

/** What a value of type \p t looks like, for "expected ..." messages. */
const char *tb_config_type_expect(tb_config_type_t t) {
        return (size_t)t < TB_ARRAY_LEN(tb_config_types) && tb_config_types[t].expect
                       ? tb_config_types[t].expect
                       : "?";
}

/** A numeric value of \p p's type in the user's notation. */
void tb_config_prop_format_num(const tb_config_prop_t *p, double v, char *buf,
                               size_t size) {
        if (p->type == TB_CT_DURATION)
                tb_units_duration_format((int64_t)v, buf, size);
        else if (p->type == TB_CT_SIZE)
                tb_units_size_format((int64_t)v, buf, size);
        else
                tb_snprintf(buf, size, "%.15g", v);
}

bool tb_config_enum_has(const char *enums, const char *v) {
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
void tb_config_enum_list(const char *enums, const char *quote, char *buf, size_t size) {
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

