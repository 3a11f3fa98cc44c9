/**
 * @file support_stack.c
 * @brief Implementation of tests/support_stack.h.
 */
#include "support_stack.h"

#include "identity/identity.h"
#include "identity/signing.h"
#include "serde/serde.h"
#include "support.h"

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TBT_DEFAULT_PG "postgresql://taskbus@127.0.0.1:55432/taskbus"
#define TBT_DEFAULT_KAFKA "127.0.0.1:9092"

static char tbt_base_pg[1024];
static char tbt_base_kafka[256];

/* Read the environment once, then keep it from overriding the test's stack. */
static void tbt_stack_env(void) {
        if (!tbt_base_pg[0]) {
                snprintf(tbt_base_pg, sizeof(tbt_base_pg), "%s",
                         tbt_env("TASKBUS_PG", tbt_env("TB_TEST_PG", TBT_DEFAULT_PG)));
                snprintf(tbt_base_kafka, sizeof(tbt_base_kafka), "%s",
                         tbt_env("TASKBUS_KAFKA", TBT_DEFAULT_KAFKA));
        }
        /* The daemons a test starts get everything from their own config
         * file: no override of the developer's stack may leak into them. */
        unsetenv("TASKBUS_PG");
        unsetenv("TASKBUS_CONFIG");
        unsetenv("TASKBUS_API_LISTEN");
        unsetenv("TASKBUS_REGION");
        unsetenv("TASKBUS_KEY_FILE");
}

/* The base connection string with dbname replaced, in key='value' form. */
static void tbt_pg_url_for(const char *dbname, char *out, size_t size) {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(tbt_base_pg, &perr);
        cr_assert_not_null(opts, "TASKBUS_PG '%s': %s", tbt_base_pg, perr ? perr : "?");
        size_t len = 0;
        out[0] = '\0';
        for (PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val || !*o->val || !strcmp(o->keyword, "dbname"))
                        continue;
                len += (size_t)snprintf(out + len, size - len, "%s='%s' ", o->keyword, o->val);
                cr_assert_lt(len, size);
        }
        snprintf(out + len, size - len, "dbname='%s'", dbname);
        PQconninfoFree(opts);
}

static void tbt_admin_sql(const char *sql) {
        char url[1024];
        tbt_pg_url_for("postgres", url, sizeof(url));
        PGconn *c = PQconnectdb(url);
        cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect %s: %s", url, PQerrorMessage(c));
        PGresult *r = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
}

void tbt_stack_drop_db(const char *name) {
        char sql[200];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
        tbt_admin_sql(sql);
}

void tbt_stack_new_db(tbt_stack_t *st, const char *name, char *url, size_t url_size) {
        char sql[200];
        cr_assert_lt(st->extra_db_cnt, 4);
        char *db = st->extra_db[st->extra_db_cnt++];
        snprintf(db, sizeof(st->extra_db[0]), "%s_%s", st->db, name);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
        tbt_admin_sql(sql);
        tbt_pg_url_for(db, url, url_size);
}

char *tbt_new_key_file(void) {
        /* 0600 (mkstemps), 32 random bytes in hex */
        unsigned char kraw[TB_SIGN_KEY_LEN];
        char khex[2 * TB_SIGN_KEY_LEN + 2];
        cr_assert_eq(tb_random_bytes(kraw, sizeof(kraw)), TB_OK);
        for (size_t i = 0; i < sizeof(kraw); i++)
                snprintf(khex + 2 * i, 3, "%02x", kraw[i]);
        strcat(khex, "\n");
        char *path = tbt_write_temp(".key", khex);
        cr_assert_not_null(path);
        return path;
}

void tbt_stack_create(tbt_stack_t *st, const tbt_stack_opts_t *opts) {
        tbt_stack_opts_t o = opts ? *opts : (tbt_stack_opts_t){0};
        char err[2048], sql[200];
        unsigned char rnd[5];
        memset(st, 0, sizeof(*st));
        tbt_stack_env();
        cr_assert_eq(tb_random_bytes(rnd, sizeof(rnd)), TB_OK);
        snprintf(st->id, sizeof(st->id), "%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4]);
        snprintf(st->prefix, sizeof(st->prefix), "t%s.", st->id);
        snprintf(st->db, sizeof(st->db), "tbtest_%s", st->id);
        snprintf(st->kafka, sizeof(st->kafka), "%s", tbt_base_kafka);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", st->db);
        tbt_admin_sql(sql);
        tbt_pg_url_for(st->db, st->db_url, sizeof(st->db_url));

        st->key_path = tbt_new_key_file();

        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\n"
                              "log_level = \"info\";\n"
                              "topics = { prefix = \"%s\"; partitions = %d; };\n"
                              "postgres = { url = \"%s\"; pool_size = 4; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; rate = %.6f; burst = %d; %s };\n"
                              "kafka = { bootstrap_servers = \"%s\"; %s };\n%s\n",
                              st->key_path, st->prefix, o.partitions > 0 ? o.partitions : 4,
                              st->db_url, o.api_port,
                              o.api_rate > 0 ? o.api_rate : 1000.0,
                              o.api_burst > 0 ? o.api_burst : 100000,
                              o.api_extra ? o.api_extra : "", st->kafka,
                              o.kafka_extra ? o.kafka_extra : "", o.extra ? o.extra : ""),
                     0);
        st->config_path = tbt_write_temp(".conf", text);
        free(text);
        cr_assert_not_null(st->config_path);
        st->log_path = tbt_write_temp(".log", "");
        cr_assert_not_null(st->log_path);
        cr_assert_eq(tb_config_load(st->config_path, &st->conf, err, sizeof(err)), TB_OK, "%s",
                     err);
        cr_assert_eq(tb_serde_init(err, sizeof(err)), TB_OK, "%s", err);
        /* tokens the test creates get their signing key sealed under it */
        tb_sign_key_clear();
        cr_assert_eq(tb_sign_key_init(st->conf, true, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_store_open(st->conf, &st->store, err, sizeof(err)), TB_OK, "%s", err);
        st->conn = tb_store_acquire(st->store);
        cr_assert_eq(tb_store_migrate(st->conn, NULL, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(tb_bus_topics_ensure(st->conf, 60000, err, sizeof(err)), TB_OK, "%s", err);
}

void tbt_stack_destroy(tbt_stack_t *st) {
        char err[1024];
        if (!st->conf)
                return;
        if (st->store) {
                tb_store_release(st->store, st->conn);
                tb_store_destroy(st->store);
        }
        if (tb_bus_topics_delete(st->conf, 30000, err, sizeof(err)) != TB_OK)
                fprintf(stderr, "teardown: deleting topics %s*: %s\n", st->prefix, err);
        for (int i = 0; i < st->extra_db_cnt; i++)
                tbt_stack_drop_db(st->extra_db[i]);
        tbt_stack_drop_db(st->db);
        tb_config_destroy(st->conf);
        if (st->config_path)
                unlink(st->config_path);
        if (st->log_path && !getenv("TBT_KEEP_LOGS"))
                unlink(st->log_path);
        free(st->config_path);
        free(st->log_path);
        if (st->key_path)
                unlink(st->key_path);
        free(st->key_path);
        memset(st, 0, sizeof(*st));
}

pid_t tbt_daemon_start(tbt_stack_t *st, const char *roles) {
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
        pid_t pid = fork();
        cr_assert_geq(pid, 0, "fork failed");
        if (pid == 0) {
                /* a daemon never outlives its test, even one that failed in setup */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(st->log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                        close(fd);
                }
                /* Criterion's test process may block signals; the daemon
                 * waits for SIGTERM with sigwait after blocking it itself */
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                execl(bin, bin, "--config", st->config_path, "--roles", roles, (char *)NULL);
                _exit(127);
        }
        return pid;
}

int tbt_daemon_stop(pid_t pid, int sig) {
        int status = 0;
        kill(pid, sig);
        for (int i = 0; i < 1200; i++) {
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid)
                        return status;
                usleep(50 * 1000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return status;
}

char *tbt_daemon_log(tbt_stack_t *st) {
        FILE *fp = fopen(st->log_path, "r");
        if (!fp)
                return strdup("");
        tb_buf_t b = {0};
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
                tb_buf_append(&b, chunk, n);
        fclose(fp);
        tb_buf_append(&b, "", 1);
        return b.data;
}

void tbt_stack_user(tbt_stack_t *st, const char *user, const char *groups, char authz[96]) {
        char err[1024], token[72], id[32];
        char *copy = strdup(groups), *save = NULL;
        const char *list[16];
        size_t n = 0;
        for (char *g = strtok_r(copy, ",", &save); g && n < 16; g = strtok_r(NULL, ",", &save))
                list[n++] = g;
        tb_err_t e = tb_identity_user_create(st->conn, "tester", user, list, n, token, id, err,
                                             sizeof(err));
        free(copy);
        cr_assert_eq(e, TB_OK, "create user %s: %s", user, err);
        snprintf(authz, 96, "Bearer %s", token);
}

rd_kafka_t *tbt_stack_producer(tbt_stack_t *st) {
        char err[1024];
        rd_kafka_t *rk = NULL;
        cr_assert_eq(tb_bus_producer_new(st->conf, NULL, &rk, err, sizeof(err)), TB_OK, "%s",
                     err);
        return rk;
}

void tbt_sign_command(tbt_stack_t *st, const char *authz, const void *key, size_t key_len,
                      const void *value, size_t value_len, int64_t skew_ms,
                      char principal[200], char auth[200]) {
        const char *tok = !strncmp(authz, "Bearer ", 7) ? authz + 7 : authz;
        unsigned char h[32], ksign[TB_SIGN_KEY_LEN];
        unsigned int n = 0;
        cr_assert(EVP_Digest(tok, strlen(tok), h, &n, EVP_sha256(), NULL));
        char tid[32], sql[128], sig[65];
        snprintf(tid, sizeof(tid), "tok_%02x%02x%02x%02x%02x%02x", h[0], h[1], h[2], h[3], h[4],
                 h[5]);
        snprintf(sql, sizeof(sql), "SELECT user_id FROM api_tokens WHERE id = '%s'", tid);
        char *user = tbt_sql_value(st, sql);
        snprintf(principal, 200, "user=%s;token=%s", user ? user : "nobody", tid);
        free(user);
        tb_sign_token_key(tok, strlen(tok), ksign);
        int64_t ts = tb_now_ms() + skew_ms;
        cr_assert_eq(tb_sign_compute(ksign, sizeof(ksign), tid, principal, ts, key, key_len, value,
                                     value_len, sig),
                     TB_OK);
        snprintf(auth, 200, "v1;kid=%s;ts=%" PRId64 ";sig=%s", tid, ts, sig);
}

void tbt_send_command(tbt_stack_t *st, rd_kafka_t *prod, const char *type, const char *task_id,
                      long long expected_version, const char *task_json, const char *authz,
                      const char *command_id, char corr[37]) {
        tbt_send_command_params(st, prod, type, task_id, expected_version, task_json, NULL,
                                authz, command_id, corr);
}

void tbt_send_command_params(tbt_stack_t *st, rd_kafka_t *prod, const char *type,
                             const char *task_id, long long expected_version,
                             const char *task_json, const json_t *params, const char *authz,
                             const char *command_id, char corr[37]) {
        char err[1024], cid[37];
        tb_uuid4(corr);
        tb_uuid4(cid);
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:o}", "command_id",
                              command_id ? command_id : cid, "correlation_id", corr, "type",
                              type, "task_id", task_id, "expected_version",
                              expected_version < 0 ? json_null() : json_integer(expected_version),
                              "task", task_json ? json_string(task_json) : json_null(),
                              "requested_at", (json_int_t)tb_now_ms(), "params",
                              params ? json_deep_copy(params) : json_object());
        cr_assert_not_null(j);
        tb_buf_t buf = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_COMMAND, j, &buf, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(j);
        tb_header_t h[3];
        size_t hn = 0;
        char principal[200], auth[200];
        const char *tok = authz && !strncmp(authz, "Bearer ", 7) ? authz + 7 : authz;
        if (tok && !strncmp(tok, "tbk_", 4)) {
                tbt_sign_command(st, tok, task_id, strlen(task_id), buf.data, buf.len, 0,
                                 principal, auth);
                h[hn++] = (tb_header_t){TB_SIGN_HDR_PRINCIPAL, principal, strlen(principal)};
                h[hn++] = (tb_header_t){TB_SIGN_HDR_AUTH, auth, strlen(auth)};
        } else if (authz) {
                h[hn++] = (tb_header_t){"authorization", authz, strlen(authz)};
        }
        h[hn++] = (tb_header_t){"correlation_id", corr, strlen(corr)};
        cr_assert_eq(tb_bus_produce(prod, st->conf, TB_TOPIC_COMMANDS, RD_KAFKA_PARTITION_UA,
                                    task_id, strlen(task_id), buf.data, buf.len, h, hn, false,
                                    err, sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&buf);
}

/* ---- readers ------------------------------------------------------------------ */

struct tbt_reader {
        rd_kafka_t *rk;
        json_t *values;
        int partitions;
        char topic[256];
        int64_t *eof_at; /* per partition: the highest offset an EOF was reported at, -1 before */
};

tbt_reader_t *tbt_reader_new(tbt_stack_t *st, tb_topic_t topic, bool read_committed) {
        char err[1024], name[256], group[300];
        rd_kafka_conf_t *c = NULL;
        cr_assert_eq(tb_bus_conf_new(st->conf, &c, err, sizeof(err)), TB_OK, "%s", err);
        snprintf(group, sizeof(group), "%stest-reader", st->prefix);
        const char *props[][2] = {
                {"group.id", group},
                {"isolation.level", read_committed ? "read_committed" : "read_uncommitted"},
                {"enable.auto.commit", "false"},
                {"enable.partition.eof", "true"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(props); i++)
                cr_assert_eq(rd_kafka_conf_set(c, props[i][0], props[i][1], err, sizeof(err)),
                             RD_KAFKA_CONF_OK, "%s", err);
        tbt_reader_t *r = calloc(1, sizeof(*r));
        r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        cr_assert_not_null(r->rk, "%s", err);
        rd_kafka_poll_set_consumer(r->rk);
        r->values = json_array();
        r->partitions = (int)st->conf->topic_partitions;
        r->eof_at = calloc((size_t)r->partitions, sizeof(int64_t));
        for (int p = 0; p < r->partitions; p++)
                r->eof_at[p] = -1;
        tb_topic_name(st->conf, topic, name, sizeof(name));
        snprintf(r->topic, sizeof(r->topic), "%s", name);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(r->partitions);
        for (int p = 0; p < r->partitions; p++)
                rd_kafka_topic_partition_list_add(l, name, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        cr_assert_eq(rd_kafka_assign(r->rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        return r;
}

void tbt_reader_free(tbt_reader_t *r) {
        if (!r)
                return;
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
        json_decref(r->values);
        free(r->eof_at);
        free(r);
}

size_t tbt_reader_poll(tbt_reader_t *r, int ms) {
        size_t added = 0;
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        do {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 50);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        if (m->partition >= 0 && m->partition < r->partitions &&
                            m->offset > r->eof_at[m->partition])
                                r->eof_at[m->partition] = m->offset;
                } else if (!m->err) {
                        json_t *v = NULL;
                        char err[512];
                        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_ANY, NULL, &v, err,
                                            sizeof(err)) != TB_OK)
                                v = json_object();
                        json_object_set_new(v, "_partition", json_integer(m->partition));
                        json_object_set_new(v, "_offset", json_integer(m->offset));
                        json_array_append_new(r->values, v);
                        added++;
                }
                rd_kafka_message_destroy(m);
        } while (tb_mono_us() < until);
        return added;
}

bool tbt_reader_drain(tbt_reader_t *r, int ms) {
        /* The end is the high watermark when the drain starts: a topic that is
         * written all the time (fires every second) never shows every partition
         * at EOF in the same poll, but each partition's EOF passes this mark. */
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        int64_t *mark = calloc((size_t)r->partitions, sizeof(int64_t));
        for (int p = 0; p < r->partitions; p++) {
                int64_t lo = 0, hi = 0;
                rd_kafka_resp_err_t e;
                while ((e = rd_kafka_query_watermark_offsets(r->rk, r->topic, p, &lo, &hi,
                                                             5000)) != 0 &&
                       tb_mono_us() < until)
                        tbt_reader_poll(r, 100);
                if (e) {
                        free(mark);
                        return false;
                }
                mark[p] = hi;
        }
        bool all = false;
        while (!all && tb_mono_us() < until) {
                tbt_reader_poll(r, 100);
                all = true;
                for (int p = 0; p < r->partitions; p++)
                        all &= r->eof_at[p] >= mark[p];
        }
        free(mark);
        return all;
}

const json_t *tbt_reader_values(const tbt_reader_t *r) { return r->values; }

json_t *tbt_reader_of_task(const tbt_reader_t *r, const char *task_id, const char *field,
                           const char *value) {
        json_t *out = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(r->values, i, v) {
                const char *t = json_string_value(json_object_get(v, "task_id"));
                const char *f = field ? json_string_value(json_object_get(v, field)) : NULL;
                if (!t || strcmp(t, task_id) || (field && (!f || strcmp(f, value))))
                        continue;
                json_array_append(out, v);
        }
        return out;
}

size_t tbt_reader_count(const tbt_reader_t *r, const char *task_id, const char *field,
                        const char *value) {
        json_t *a = tbt_reader_of_task(r, task_id, field, value);
        size_t n = json_array_size(a);
        json_decref(a);
        return n;
}

bool tbt_reader_wait_count(tbt_reader_t *r, const char *task_id, const char *field,
                           const char *value, size_t n, int ms) {
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        while (tbt_reader_count(r, task_id, field, value) < n) {
                if (tb_mono_us() >= until)
                        return false;
                tbt_reader_poll(r, 200);
        }
        return true;
}

const json_t *tbt_reader_wait(tbt_reader_t *r, const char *field, const char *value, int ms) {
        int64_t until = tb_mono_us() + (int64_t)ms * 1000;
        size_t checked = 0;
        for (;;) {
                for (; checked < json_array_size(r->values); checked++) {
                        const json_t *v = json_array_get(r->values, checked);
                        const char *s = json_string_value(json_object_get(v, field));
                        if (s && !strcmp(s, value))
                                return v;
                }
                if (tb_mono_us() >= until)
                        return NULL;
                tbt_reader_poll(r, 50);
        }
}

char *tbt_sql_value(tbt_stack_t *st, const char *sql) {
        char err[1024];
        PGresult *res = NULL;
        cr_assert_eq(tb_store_exec(st->conn, "test query", sql, 0, NULL, &res, err, sizeof(err)),
                     TB_OK, "%s", err);
        char *v = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? strdup(PQgetvalue(res, 0, 0))
                                                                 : NULL;
        PQclear(res);
        return v;
}

const json_t *tbt_reply_wait(tbt_stack_t *st, rd_kafka_t *prod, tbt_reader_t *replies,
                             const char *corr, int ms) {
        rd_kafka_flush(prod, 30000);
        const json_t *r = tbt_reader_wait(replies, "correlation_id", corr, ms);
        if (!r) {
                char *log = tbt_daemon_log(st);
                cr_log_error("daemon log:\n%s", log);
                free(log);
        }
        cr_assert_not_null(r, "no reply for correlation id %s", corr);
        return r;
}
