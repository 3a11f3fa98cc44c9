/**
 * @file support_stack.h
 * @brief Integration-test helpers for a private taskbus stack on the shared
 *        Kafka and PostgreSQL: a random topic prefix and a throwaway,
 *        migrated database, a config file naming them, taskbusd child
 *        processes, users with tokens, and Kafka readers for the topics.
 *
 * The stack reads TASKBUS_PG / TASKBUS_KAFKA (else the dev stack's
 * defaults) once, then removes TASKBUS_PG and TASKBUS_CONFIG from the
 * environment so neither this process nor its children override the test's
 * own database.
 */
#ifndef TB_TEST_SUPPORT_STACK_H
#define TB_TEST_SUPPORT_STACK_H

#include "bus/bus.h"
#include "config/config.h"
#include "store/store.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <sys/types.h>

/** Knobs of a stack; zero values take the defaults shown. */
typedef struct tbt_stack_opts {
        int partitions;     /**< topic partitions (4) */
        double api_rate;    /**< api.rate: commands/s per user (1000) */
        int api_burst;      /**< api.burst (100000) */
        const char *extra;  /**< more top-level config text, or NULL */
        const char *kafka_extra; /**< more lines inside `kafka = {...}`, or NULL */
        int api_port;       /**< api.listen's port on 127.0.0.1 (0) */
        const char *api_extra; /**< more lines inside `api = {...}`, or NULL */
} tbt_stack_opts_t;

/** One private stack. Fill with tbt_stack_create(), free with tbt_stack_destroy(). */
typedef struct tbt_stack {
        char id[16];          /**< random hex naming everything below */
        char prefix[32];      /**< topic prefix, "t<id>." */
        char db[64];          /**< database name, "tbtest_<id>" */
        char db_url[1024];    /**< libpq key=value string of the database */
        char kafka[256];      /**< bootstrap servers */
        char *config_path;    /**< temp config file (taskbusd --config) */
        char *log_path;       /**< where tbt_daemon_start() sends the daemon's output */
        tb_config_t *conf;    /**< the same config, loaded */
        tb_store_t *store;
        PGconn *conn;         /**< a connection of store, for the test's own SQL */
        char extra_db[4][80]; /**< databases made by tbt_stack_new_db() */
        int extra_db_cnt;
        char *key_path;       /**< the stack's internal key file (security.key_file) */
} tbt_stack_t;

/** A new internal key file (security.key_file: mode 0600, 64 hex digits);
 *  malloc'd path, the caller unlinks and frees it. */
char *tbt_new_key_file(void);

/** Create the database (migrated), the topics and the config file. Asserts. */
void tbt_stack_create(tbt_stack_t *st, const tbt_stack_opts_t *opts);
/** Delete the topics, drop the database, remove the files. */
void tbt_stack_destroy(tbt_stack_t *st);

/** Create another empty database (not migrated) "tbtest_<id>_<name>" on the
 *  same server and put its libpq key=value string in \p url; it is dropped
 *  by tbt_stack_destroy(). */
void tbt_stack_new_db(tbt_stack_t *st, const char *name, char *url, size_t url_size);
/** Drop database \p name (IF EXISTS, WITH FORCE). */
void tbt_stack_drop_db(const char *name);

/** Start `taskbusd --config <stack> --roles ROLES`, output appended to
 *  st->log_path. @returns the child's pid. */
pid_t tbt_daemon_start(tbt_stack_t *st, const char *roles);
/** Send \p sig and wait for the exit (SIGKILL after 60 s). @returns the
 *  wait status. */
int tbt_daemon_stop(pid_t pid, int sig);
/** @returns the daemon log so far (malloc'd, caller frees). */
char *tbt_daemon_log(tbt_stack_t *st);

/** Create a user in \p groups (comma-separated) and return its bearer
 *  header value "Bearer tbk_..." in \p authz (80 bytes). */
void tbt_stack_user(tbt_stack_t *st, const char *user, const char *groups, char authz[96]);

/** An idempotent producer on the stack's Kafka (caller destroys). */
rd_kafka_t *tbt_stack_producer(tbt_stack_t *st);

/**
 * Sign a task-commands record (\p key, \p value) the way an external
 * producer holding the token of \p authz ("Bearer tbk_..." or the bare token)
 * does (docs/kafka-interface.md): tb-principal names the token's user (read
 * from the database; "nobody" for a token it does not know) and token id,
 * tb-auth is signed with K_sign at now + \p skew_ms.
 */
void tbt_sign_command(tbt_stack_t *st, const char *authz, const void *key, size_t key_len,
                      const void *value, size_t value_len, int64_t skew_ms,
                      char principal[200], char auth[200]);

/**
 * Produce a TaskCommand on the stack's task-commands (asynchronous: flush
 * \p prod before waiting for its reply). \p expected_version < 0 is null;
 * \p task_json, \p authz and \p command_id (NULL: a new UUID) may be NULL.
 * An \p authz holding a taskbus token signs the record with it
 * (tbt_sign_command()); any other \p authz goes out as the old
 * `authorization` header (refused since commands are signed).
 * The new correlation id goes to \p corr.
 */
void tbt_send_command(tbt_stack_t *st, rd_kafka_t *prod, const char *type, const char *task_id,
                      long long expected_version, const char *task_json, const char *authz,
                      const char *command_id, char corr[37]);
/** tbt_send_command() with TaskCommand.params \p params (an object of
 *  strings; NULL: {}). */
void tbt_send_command_params(tbt_stack_t *st, rd_kafka_t *prod, const char *type,
                             const char *task_id, long long expected_version,
                             const char *task_json, const json_t *params, const char *authz,
                             const char *command_id, char corr[37]);

/** A reader of every partition of a topic from the beginning (assign-only). */
typedef struct tbt_reader tbt_reader_t;
tbt_reader_t *tbt_reader_new(tbt_stack_t *st, tb_topic_t topic, bool read_committed);
void tbt_reader_free(tbt_reader_t *r);
/** Read what is available for up to \p ms; decoded values are appended to
 *  the reader's list (undecodable records are appended as JSON null).
 *  @returns how many were added. */
size_t tbt_reader_poll(tbt_reader_t *r, int ms);
/** Read until every partition reached the end it had when the call began
 *  (its high watermark then), or \p ms passed. Records written meanwhile may
 *  or may not be read. @returns true if it reached that end. */
bool tbt_reader_drain(tbt_reader_t *r, int ms);
/** The decoded values read so far (borrowed): each is the value with
 *  "_partition" and "_offset" added. */
const json_t *tbt_reader_values(const tbt_reader_t *r);
/** Wait up to \p ms for a value whose \p field equals \p value; borrowed. */
const json_t *tbt_reader_wait(tbt_reader_t *r, const char *field, const char *value, int ms);
/** The values read so far whose "task_id" is \p task_id and, unless \p field
 *  is NULL, whose string \p field is \p value: a new array (caller decrefs). */
json_t *tbt_reader_of_task(const tbt_reader_t *r, const char *task_id, const char *field,
                           const char *value);
/** How many values tbt_reader_of_task() would return. */
size_t tbt_reader_count(const tbt_reader_t *r, const char *task_id, const char *field,
                        const char *value);
/** Poll \p r until tbt_reader_count() reaches \p n, up to \p ms. @returns
 *  whether it did. */
bool tbt_reader_wait_count(tbt_reader_t *r, const char *task_id, const char *field,
                           const char *value, size_t n, int ms);

/** Flush \p prod, then wait up to \p ms for the TaskReply with correlation id
 *  \p corr on \p replies (borrowed); asserts that it came, printing the
 *  daemon log when it did not. */
const json_t *tbt_reply_wait(tbt_stack_t *st, rd_kafka_t *prod, tbt_reader_t *replies,
                             const char *corr, int ms);

/** Run one SQL statement on the stack's database and return the first
 *  column of the first row (malloc'd, NULL if no row). Asserts success. */
char *tbt_sql_value(tbt_stack_t *st, const char *sql);

#endif
