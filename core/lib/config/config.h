/**
 * @file config/config.h
 * @brief taskbus configuration: config/taskbus.conf in libconfig syntax,
 *        parsed against ONE table of typed properties (config/table.c) that
 *        also generates docs/configuration.md.
 *
 * Keys are dotted paths of libconfig groups ("postgres.url" is
 * `postgres = { url = "..."; };`). Unknown keys are rejected with the list
 * of valid ones; every error names file:line and the key.
 *
 * Special groups:
 *  - `kafka = { bootstrap_servers = "..."; ... }` is passed through to
 *    librdkafka, each name with '_' turned into '.' (libconfig names cannot
 *    hold dots); a property librdkafka refuses is a fatal error carrying
 *    librdkafka's own message.
 *  - `plugins = { <name> = { ... }; }`: each plugin's own group, handed to
 *    that plugin as key/value strings (the plugin validates its keys).
 *  - `groups = { <security group> = { ... }; }`: per-security-group policy
 *    (see the property table: keys under "groups.*").
 *
 * Files: config/table.c the property tables; config/assign.c typed
 * assignment of one value; config/load.c the file walk, the special groups,
 * the environment and the config's lifetime; config/finalize.c the
 * cross-field checks; config/lexer.c the integer-width pre-scan;
 * config/doc.c docs/configuration.md. Durations and sizes are parsed by
 * units.h.
 */
#ifndef TB_CONFIG_H
#define TB_CONFIG_H

#include "tb.h"
#include "units.h"
#include <stdio.h>

/** A key/value pair (strings owned by the tb_config_t). */
typedef struct tb_kv {
        char *key;
        char *value;
} tb_kv_t;

/** Per-security-group policy, from `groups = { NAME = {...}; }`. */
typedef struct tb_group_conf {
        char *name;
        char *os_user;               /**< OS user that shell tasks run as */
        int64_t log_retention_max_ms; /**< cap on a task's log_retention */
        char **images;               /**< container image allow-list */
        size_t image_cnt;
        char *network;               /**< container network mode allowed */
        int64_t memory_max_bytes;    /**< container memory cap */
        double cpus_max;             /**< container CPU cap */
        char *ssh_key;               /**< ssh private key path */
        char *ssh_known_hosts;       /**< ssh known_hosts path */
        bool allow_root;             /**< containers may run as uid 0 (with the plugin's allow_root) */
} tb_group_conf_t;

/** A plugin's own config group. */
typedef struct tb_plugin_conf {
        char *name;
        tb_kv_t *kv;
        size_t kv_cnt;
        /** "FILE:LINE" of each kv (parallel to kv), so the plugin host can
         *  report a key the plugin refuses as "FILE:LINE: plugins.NAME.KEY: ...". */
        char **kv_where;
} tb_plugin_conf_t;

/** A notification channel, from `notify.channels = ( { name = ...; }, ... );`
 *  (docs/notifications.md). */
typedef struct tb_notify_channel {
        char *name;        /**< what a task's notify rule names */
        char *type;        /**< "webhook" or "smtp" */
        char *url;         /**< http(s):// of the receiver, or smtp(s)://host:port */
        char *secret_file; /**< webhook: the HMAC key; smtp: the password (with username) */
        char *secret;      /**< read from secret_file at load (wiped on destroy), or NULL */
        size_t secret_len;
        char *username;    /**< smtp: the login name, or NULL: no login */
        char *from;        /**< smtp: the sender address */
        char **to;         /**< smtp: the recipients */
        size_t to_cnt;
} tb_notify_channel_t;

/** The typed configuration. Every field has a row in the property table. */
typedef struct tb_config {
        char *path;                 /**< file it was loaded from, or "(defaults)" */
        char *region;
        char *node;                 /**< node name ("" = derived at start) */
        char *log_level;

        /* topics */
        char *topic_prefix;
        int64_t topic_partitions;
        int64_t topic_replication;
        int64_t retention_commands_ms;
        int64_t retention_replies_ms;
        int64_t retention_runs_ms;
        int64_t retention_results_ms;
        int64_t retention_logs_ms;
        int64_t retention_dlq_ms;

        /* postgres */
        char *pg_url;
        int64_t pg_pool_size;

        /* api */
        char *api_listen;           /**< "127.0.0.1:8080" */
        char *api_tls_cert;         /**< PEM certificate chain file, or NULL: plain HTTP */
        char *api_tls_key;          /**< PEM private key file (set with api_tls_cert) */
        int64_t api_threads;
        int64_t api_queue_timeout_ms;
        int64_t api_pool_size;
        int64_t api_statement_timeout_ms;
        double api_rate;            /**< requests/s per user */
        int64_t api_burst;
        int64_t api_reply_timeout_ms;
        int64_t api_max_body;
        int64_t api_max_connections;          /**< open connections, all clients */
        int64_t api_max_connections_per_client; /**< per client IP address */
        int64_t api_header_timeout_ms;        /**< request line + headers, and keep-alive idle */
        int64_t api_body_timeout_ms;          /**< the body, after the headers */
        int64_t api_max_requests_per_connection; /**< keep-alive requests, then close */
        int64_t api_max_follows_per_user;     /**< live log streams per user */
        int64_t api_max_follow_duration_ms;   /**< then a live log stream ends */
        int64_t api_session_ttl_ms;           /**< a console session lasts this long */
        char *api_admin_group;                /**< its members are the console's admins; NULL: none */

        /* security and command signatures (identity/signing.h) */
        char *security_key_file;    /**< the internal key file; NULL: none */
        int64_t cmd_signature_max_age_ms;

        /* group commit (commands/role.c, bus/pgsink.c) */
        int64_t cmd_batch_linger_ms; /**< a busy batch waits this long for more */
        int64_t cmd_batch_max;       /**< most commands per Kafka transaction */
        int64_t cmd_batch_bytes;     /**< a batch closes once its records reach this */
        int64_t proj_batch_linger_ms; /**< a busy projector batch waits this long for more */
        int64_t proj_batch_max;      /**< most records per projector transaction */

        /* scheduler */
        int64_t sched_misfire_cap;
        int64_t sched_tick_ms;
        int64_t sched_calendar_poll_ms;
        int64_t sched_max_batch;
        int64_t sched_dependency_poll_ms; /**< scheduler/after.c's poll period */

        /* executor */
        char **exec_plugin_paths;
        size_t exec_plugin_path_cnt;
        int64_t exec_max_concurrent;
        int64_t exec_lease_ms;
        int64_t exec_grace_ms;
        int64_t exec_output_cap;
        int64_t exec_kill_grace_ms;
        int64_t exec_unclaimed_timeout_ms; /**< a run nobody claimed is LOST past it */
        int64_t exec_log_delivery_timeout_ms; /**< log producer's message.timeout.ms */
        char *exec_workdir;
        bool exec_allow_root;

        /* archiver / retention */
        int64_t history_retention_ms;
        int64_t log_retention_default_ms;
        int64_t archiver_batch;

        /* notifier (docs/notifications.md) */
        int64_t notify_timeout_ms;     /**< one delivery attempt's limit */
        int64_t notify_max_attempts;   /**< then a delivery is failed for good */
        int64_t notify_backoff_ms;     /**< before the second attempt, doubling */
        int64_t notify_backoff_max_ms;
        int64_t notify_log_lines;      /**< the last lines of a run's output sent */
        int64_t notify_log_bytes;      /**< ... and at most this many bytes of them */
        tb_notify_channel_t *notify_channels;
        size_t notify_channel_cnt;

        /* replication (docs/replication.md) */
        char **repl_remote_regions;  /**< other regions whose topics are mirrored here */
        size_t repl_remote_region_cnt;
        tb_kv_t *repl_region_apis;   /**< region -> REST API base URL */
        size_t repl_region_api_cnt;
        tb_kv_t *repl_region_kafka;  /**< region -> bootstrap servers */
        size_t repl_region_kafka_cnt;
        int64_t repl_startup_fence_ms;

        /* pass-through and dynamic groups */
        tb_kv_t *kafka;             /**< librdkafka properties, dotted names */
        size_t kafka_cnt;
        tb_plugin_conf_t *plugins;
        size_t plugin_cnt;
        tb_group_conf_t *groups;
        size_t group_cnt;
        /** Policy of security groups not listed in `groups`: the table's
         *  defaults (name "*"). See tb_config_group_policy(). */
        tb_group_conf_t group_default;
} tb_config_t;

/**
 * Load and validate \p path. On success *\p out is owned by the caller
 * (tb_config_destroy()). Errors read "FILE:LINE: x.y: message" (unknown
 * keys: "FILE:LINE: unknown key 'x.y'; valid keys in 'x': ...").
 * Includes librdkafka validation of the `kafka` group.
 * Order: defaults, then the file, then the environment overrides
 * (TASKBUS_REGION, TASKBUS_PG, TASKBUS_API_LISTEN, TASKBUS_KAFKA), then the
 * cross-field checks. \p path NULL means no file: defaults plus the
 * environment, fully validated (what taskbusd uses without a config file).
 * @returns TB_ERR_IO if the file cannot be read, TB_ERR_INVALID otherwise.
 */
tb_err_t tb_config_load(const char *path, tb_config_t **out, char *errstr,
                        size_t errstr_size);

/** A configuration holding only defaults, no environment overrides
 *  (caller owns it). NULL only when out of memory. */
tb_config_t *tb_config_defaults(void);

/** Free everything. NULL is allowed. */
void tb_config_destroy(tb_config_t *conf);

/** Whether librdkafka property \p key (dotted) holds a secret (sasl.password,
 *  ssl.key.password, ...): its value is never printed, and the `kafka` group
 *  may read it from a file (`sasl_password_file`). */
bool tb_config_kafka_secret(const char *key);

/** Look up a security group's policy; NULL when the group has none. */
const tb_group_conf_t *tb_config_group(const tb_config_t *conf, const char *name);

/** The policy that applies to security group \p name: its `groups` entry,
 *  or conf->group_default when it has none. Never NULL for a non-NULL
 *  \p conf; owned by \p conf. */
const tb_group_conf_t *tb_config_group_policy(const tb_config_t *conf,
                                              const char *name);

/** Look up notification channel \p name; NULL when the config has none. */
const tb_notify_channel_t *tb_config_notify_channel(const tb_config_t *conf, const char *name);

/** Look up a plugin's config group; NULL if absent. */
const tb_plugin_conf_t *tb_config_plugin(const tb_config_t *conf, const char *name);

/** The value of \p key in a plugin's group (owned by the config), or NULL.
 *  \p pc may be NULL (a plugin without a group). */
const char *tb_plugin_conf_get(const tb_plugin_conf_t *pc, const char *key);

/** Write docs/configuration.md (markdown generated from the table). */
void tb_config_write_doc(FILE *fp);

#endif /* TB_CONFIG_H */
