/**
 * @file test_secrets.c
 * @brief No reusable secret in Kafka, logs or the database (issue 13):
 *        - a REST session (create, update, run now, delete) through the api
 *          role, then every topic of the stack read from the beginning (keys,
 *          headers, values), the daemon's log (at debug level), every file
 *          of the test stack's folder (Kafka's segments and logs included)
 *          and a pg_dump of the database: neither the token nor its secret
 *          part nor its signing key appears anywhere;
 *        - on task-commands: a command in the old bearer form, a replayed
 *          signed record, a record signed too long ago, a record whose value
 *          was changed after signing, a token of an unknown or another user:
 *          each REJECTED with the reason that says what is wrong;
 *        - an expired token (`taskbus admin token create --expires`) refused
 *          on REST and on Kafka; a token made without an internal key works
 *          on REST and is told on Kafka to create a new token.
 */
#include "identity/identity.h"
#include "identity/signing.h"
#include "serde/serde.h"
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tbt_stack_t st;
static pid_t daemon_pid;
static int api_port;
static char *conf_path;

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        api_port = tbt_free_port();
        cr_assert_gt(api_port, 0);
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\nlog_level = \"debug\";\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 10000.0; burst = 10000; };\n"
                              "executor = { lease = \"3s\"; grace = \"2s\"; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, api_port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        unlink(st.config_path);
        free(st.config_path);
        st.config_path = strdup(conf_path); /* the daemon and the CLI read this one */
        daemon_pid = tbt_daemon_start(&st, "api,commands,projector,scheduler,executor,archiver");
        char *out = NULL;
        bool up = false;
        for (int i = 0; i < 600 && !up; i++) {
                free(out);
                out = NULL;
                up = tbt_run(&out, "curl -s -o /dev/null -w '%%{http_code}' "
                                   "http://127.0.0.1:%d/healthz",
                             api_port) == 0 &&
                     out && !strncmp(out, "200", 3);
                if (!up)
                        usleep(100 * 1000);
        }
        free(out);
        if (!up) {
                char *log = tbt_daemon_log(&st);
                cr_assert_fail("the api did not come up:\n%s", log);
        }
}

static void teardown(void) {
        if (daemon_pid > 0)
                tbt_daemon_stop(daemon_pid, SIGTERM);
        tbt_stack_destroy(&st);
        if (conf_path)
                unlink(conf_path);
        free(conf_path);
}

/* One REST call with curl. @returns the HTTP status; the body goes to *body. */
static int rest(const char *method, const char *path, const char *token, const char *json,
                char **body) {
        char *out = NULL, *file = json ? tbt_write_temp(".json", json) : NULL;
        tbt_run(&out,
                "curl -s -w '\\n%%{http_code}' -X %s -H 'Authorization: Bearer %s' "
                "-H 'Content-Type: application/json' -H 'If-Match: *' %s%s%s "
                "'http://127.0.0.1:%d%s'",
                method, token, file ? "--data-binary '@" : "", file ? file : "",
                file ? "'" : "", api_port, path);
        if (file) {
                unlink(file);
                free(file);
        }
        cr_assert_not_null(out);
        char *nl = strrchr(out, '\n');
        int status = nl ? atoi(nl + 1) : 0;
        if (nl)
                *nl = '\0';
        if (body)
                *body = out;
        else
                free(out);
        return status;
}

/* How many times \p needle occurs in \p len bytes of \p hay. */
static int count_in(const char *hay, size_t len, const char *needle) {
        int n = 0;
        size_t nl = strlen(needle);
        for (const char *p = hay; (p = memmem(p, len - (size_t)(p - hay), needle, nl));
             p += nl)
                n++;
        return n;
}

static const char *task_body(const char *name) {
        static char b[512];
        snprintf(b, sizeof(b),
                 "{\"name\": \"%s\", \"script\": \"echo secret-test\", \"security_group\": "
                 "\"ops\", \"schedule\": {\"cron\": \"0 3 * * *\"}}",
                 name);
        return b;
}

Test(secrets, no_token_material_in_kafka_logs_or_database, .init = setup, .fini = teardown,
     .timeout = 600) {
        char authz[96];
        tbt_stack_user(&st, "alice", "ops", authz);
        const char *token = authz + strlen("Bearer ");
        const char *secret = token + strlen("tbk_");
        unsigned char ksign[TB_SIGN_KEY_LEN];
        char ksign_hex[2 * TB_SIGN_KEY_LEN + 1];
        tb_sign_token_key(token, strlen(token), ksign);
        for (size_t i = 0; i < sizeof(ksign); i++)
                snprintf(ksign_hex + 2 * i, 3, "%02x", ksign[i]);

        /* the REST session */
        char *body = NULL;
        int s = rest("POST", "/v1/tasks", token, task_body("s1"), &body);
        cr_assert(s == 201 || s == 202, "create: %d %s", s, body);
        json_error_t je;
        json_t *j = json_loads(body, 0, &je);
        cr_assert_not_null(j, "%s", body);
        char id[200], path[300];
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
        json_decref(j);
        free(body);
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        s = rest("PUT", path, token, task_body("s1-renamed"), &body);
        cr_assert(s == 200 || s == 202, "update: %d %s", s, body);
        free(body);
        snprintf(path, sizeof(path), "/v1/tasks/%s/run", id);
        s = rest("POST", path, token, NULL, &body);
        cr_assert(s >= 200 && s < 300, "run now: %d %s", s, body);
        free(body);
        sleep(3); /* let the run happen and its output be logged */
        snprintf(path, sizeof(path), "/v1/tasks/%s", id);
        s = rest("DELETE", path, token, NULL, &body);
        cr_assert(s >= 200 && s < 300, "delete: %d %s", s, body);
        free(body);

        /* the commands the api produced carry a proof, not the token */
        char *out = NULL;
        char topic[256];
        tb_topic_name(st.conf, TB_TOPIC_COMMANDS, topic, sizeof(topic));
        cr_assert_eq(tbt_run(&out, "kcat -C -b '%s' -t '%s' -o beginning -e -q -f '%%h\\n'",
                             st.kafka, topic),
                     0);
        cr_assert(count_in(out, strlen(out), "tb-auth=v1;kid=internal;") >= 4, "%s", out);
        cr_assert(count_in(out, strlen(out), "tb-principal=user=alice;token=tok_") >= 4, "%s",
                  out);
        cr_assert_eq(count_in(out, strlen(out), "authorization"), 0, "%s", out);
        free(out);

        /* every topic of the stack from the beginning: keys, headers, values */
        out = NULL;
        cr_assert_eq(tbt_run(&out, "kcat -L -b '%s' | sed -n 's/^  topic \"\\(%s[^\"]*\\)\".*/\\1/p'",
                             st.kafka, st.prefix),
                     0);
        int topics = 0;
        char *save = NULL;
        for (char *t = strtok_r(out, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
                char *dump = NULL;
                cr_assert_eq(tbt_run(&dump,
                                     "kcat -C -b '%s' -t '%s' -o beginning -e -q "
                                     "-X isolation.level=read_uncommitted "
                                     "-f 'key=%%k headers=%%h value=%%s\\n'",
                                     st.kafka, t),
                             0, "reading %s", t);
                size_t n = dump ? strlen(dump) : 0;
                cr_assert_eq(count_in(dump ? dump : "", n, secret), 0, "the token is in %s", t);
                cr_assert_eq(count_in(dump ? dump : "", n, ksign_hex), 0,
                             "the signing key is in %s", t);
                free(dump);
                topics++;
        }
        free(out);
        cr_assert_geq(topics, 5, "the topics of %s were not listed", st.prefix);

        /* the daemon's log, at debug level */
        char *log = tbt_daemon_log(&st);
        cr_assert_gt(strlen(log), 100, "no daemon log");
        cr_assert_eq(count_in(log, strlen(log), secret), 0, "the token is in the daemon log");
        cr_assert_eq(count_in(log, strlen(log), ksign_hex), 0, "K_sign is in the daemon log");
        free(log);

        /* every file of the test stack's folder: Kafka's segments and logs, the
         * PostgreSQL log when it lives there */
        const char *dir = getenv("TASKBUS_STACK_DIR");
        if (dir && *dir) {
                out = NULL;
                /* -s: Kafka deletes other tests' segments while we read */
                tbt_run(&out, "grep -rlasF -e '%s' -e '%s' '%s'; true", secret, ksign_hex, dir);
                cr_assert(!out || !*out, "token material in files of %s:\n%s", dir, out);
                free(out);
        }

        /* the database */
        out = NULL;
        cr_assert_eq(tbt_run(&out, "pg_dump --no-owner -d \"%s\"", st.db_url), 0, "pg_dump: %s",
                     out ? out : "");
        size_t n = strlen(out);
        cr_assert_gt(n, 1000, "pg_dump printed too little");
        cr_assert_gt(count_in(out, n, "api_tokens"), 0);
        cr_assert_eq(count_in(out, n, secret), 0, "the token is in the database");
        cr_assert_eq(count_in(out, n, ksign_hex), 0, "K_sign is in the database in clear");
        free(out);

        /* the audit trail still names the user */
        char sql[300];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM task_history WHERE task_id = '%s' AND actor = 'alice'", id);
        char *c = tbt_sql_value(&st, sql);
        cr_assert(c && atoi(c) >= 3, "task_history rows by alice: %s", c ? c : "none");
        free(c);
}

/* ---- task-commands: what is refused -------------------------------------------------- */

static rd_kafka_t *g_prod;
static tbt_reader_t *g_replies;

/* Produce a TaskCommand with exactly the headers given; @returns its value. */
static tb_buf_t command_value(const char *type, const char *task_id, const char *task,
                              const char *corr, const char *cid) {
        char err[512];
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:n, s:o, s:I}", "command_id", cid,
                              "correlation_id", corr, "type", type, "task_id", task_id,
                              "expected_version", "task", task ? json_string(task) : json_null(),
                              "requested_at", (json_int_t)tb_now_ms());
        tb_buf_t buf = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_COMMAND, j, &buf, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(j);
        return buf;
}

static void produce(const char *task_id, const tb_buf_t *v, const tb_header_t *h, size_t hn) {
        char err[512];
        cr_assert_eq(tb_bus_produce(g_prod, st.conf, TB_TOPIC_COMMANDS, RD_KAFKA_PARTITION_UA,
                                    task_id, strlen(task_id), v->data, v->len, h, hn, true, err,
                                    sizeof(err)),
                     TB_OK, "%s", err);
}

/* The \p nth (1-based) reply with correlation id \p corr. */
static const json_t *reply_n(const char *corr, int nth) {
        int64_t until = tb_mono_us() + 60 * 1000000LL;
        for (;;) {
                int seen = 0;
                const json_t *vals = tbt_reader_values(g_replies), *r;
                size_t i;
                json_array_foreach(vals, i, r) {
                        const char *c = json_string_value(json_object_get(r, "correlation_id"));
                        if (c && !strcmp(c, corr) && ++seen == nth)
                                return r;
                }
                cr_assert_lt(tb_mono_us(), until, "no reply #%d for %s", nth, corr);
                tbt_reader_poll(g_replies, 200);
        }
}

static const char *rs(const json_t *r, const char *k) {
        const char *v = json_string_value(json_object_get(r, k));
        return v ? v : "";
}

/* Sign with \p authz's key at now + \p skew_ms and send; @returns the correlation id. */
static void send_signed(const char *authz, const char *type, const char *task_id,
                        const char *task, int64_t skew_ms, bool tamper, char corr[37],
                        tb_buf_t *v_out, char principal[200], char auth[200]) {
        char cid[37];
        tb_uuid4(corr);
        tb_uuid4(cid);
        tb_buf_t v = command_value(type, task_id, task, corr, cid);
        tbt_sign_command(&st, authz, task_id, strlen(task_id), v.data, v.len, skew_ms, principal,
                         auth);
        if (tamper)
                v.data[v.len - 2] ^= 1; /* requested_at's last byte (then params {}) */
        tb_header_t h[3] = {{TB_SIGN_HDR_PRINCIPAL, principal, strlen(principal)},
                            {TB_SIGN_HDR_AUTH, auth, strlen(auth)},
                            {"correlation_id", corr, strlen(corr)}};
        produce(task_id, &v, h, 3);
        if (v_out)
                *v_out = v;
        else
                tb_buf_free(&v);
}

static void expect(const json_t *r, const char *reason, const char *needle) {
        cr_assert_str_eq(rs(r, "status"), reason ? "REJECTED" : "ACCEPTED", "%s: %s",
                         rs(r, "reason"), rs(r, "message"));
        if (reason) {
                cr_assert_str_eq(rs(r, "reason"), reason, "%s", rs(r, "message"));
                cr_assert(strstr(rs(r, "message"), needle), "'%s' not in: %s", needle,
                          rs(r, "message"));
        }
}

static void kafka_setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        daemon_pid = tbt_daemon_start(&st, "commands");
        g_prod = tbt_stack_producer(&st);
        g_replies = tbt_reader_new(&st, TB_TOPIC_REPLIES, true);
}

static void kafka_teardown(void) {
        tbt_reader_free(g_replies);
        if (g_prod)
                rd_kafka_destroy(g_prod);
        if (daemon_pid > 0)
                tbt_daemon_stop(daemon_pid, SIGTERM);
        tbt_stack_destroy(&st);
}

Test(secrets, kafka_refuses_old_form_replays_stale_and_forged_records, .init = kafka_setup,
     .fini = kafka_teardown, .timeout = 300) {
        char alice[96], bob[96], corr[37], id[37], principal[200], auth[200];
        tbt_stack_user(&st, "alice", "ops", alice);
        tbt_stack_user(&st, "bob", "dev", bob);
        tb_uuid4(id);
        const char *body = task_body("k1");

        /* a signed command is accepted; the same record again is a replay */
        tb_buf_t v = {0};
        send_signed(alice, "CREATE", id, body, 0, false, corr, &v, principal, auth);
        expect(reply_n(corr, 1), NULL, NULL);
        tb_header_t h[3] = {{TB_SIGN_HDR_PRINCIPAL, principal, strlen(principal)},
                            {TB_SIGN_HDR_AUTH, auth, strlen(auth)},
                            {"correlation_id", corr, strlen(corr)}};
        produce(id, &v, h, 3);
        expect(reply_n(corr, 2), "CONFLICT", "replayed record");
        cr_assert_str_eq(rs(reply_n(corr, 2), "field"), "command_id");
        tb_buf_free(&v);

        /* the old form: the token in an authorization header */
        char cid[37];
        tb_uuid4(corr);
        tb_uuid4(cid);
        v = command_value("PAUSE", id, NULL, corr, cid);
        tb_header_t old[2] = {{"authorization", alice, strlen(alice)},
                              {"correlation_id", corr, strlen(corr)}};
        produce(id, &v, old, 2);
        tb_buf_free(&v);
        const json_t *r = reply_n(corr, 1);
        expect(r, "UNAUTHENTICATED", "bearer tokens are no longer accepted on Kafka");
        expect(r, "UNAUTHENTICATED", "docs/kafka-interface.md");

        /* signed 10 minutes ago (or ahead): outside commands.signature_max_age */
        send_signed(alice, "PAUSE", id, NULL, -10 * 60 * 1000, false, corr, NULL, principal,
                    auth);
        expect(reply_n(corr, 1), "UNAUTHENTICATED", "signature_max_age");
        send_signed(alice, "PAUSE", id, NULL, 10 * 60 * 1000, false, corr, NULL, principal,
                    auth);
        expect(reply_n(corr, 1), "UNAUTHENTICATED", "ahead of");

        /* the value changed after signing */
        send_signed(alice, "PAUSE", id, NULL, 0, true, corr, NULL, principal, auth);
        expect(reply_n(corr, 1), "UNAUTHENTICATED", "does not match");

        /* bob's key cannot speak for alice: principal says alice, kid is bob's */
        char cid2[37], corr2[37];
        tb_uuid4(corr2);
        tb_uuid4(cid2);
        v = command_value("PAUSE", id, NULL, corr2, cid2);
        char bp[200], ba[200];
        tbt_sign_command(&st, bob, id, strlen(id), v.data, v.len, 0, bp, ba);
        char *semi = strstr(bp, ";token=");
        char forged[200];
        snprintf(forged, sizeof(forged), "user=alice%s", semi);
        tb_header_t fh[3] = {{TB_SIGN_HDR_PRINCIPAL, forged, strlen(forged)},
                             {TB_SIGN_HDR_AUTH, ba, strlen(ba)},
                             {"correlation_id", corr2, strlen(corr2)}};
        produce(id, &v, fh, 3);
        tb_buf_free(&v);
        expect(reply_n(corr2, 1), "UNAUTHENTICATED", "does not own");
}

Test(secrets, expired_and_pre_signing_tokens, .init = setup, .fini = teardown,
     .timeout = 300) {
        char alice[96];
        tbt_stack_user(&st, "alice", "ops", alice);
        g_prod = tbt_stack_producer(&st);
        g_replies = tbt_reader_new(&st, TB_TOPIC_REPLIES, true);

        /* a token that expires in 2 s, made by the CLI */
        char *out = NULL;
        int rc = tbt_run(&out, "%s/bin/taskbus admin token create alice --expires 2s --config %s",
                         tbt_build_dir(), conf_path);
        cr_assert_eq(rc, 0, "token create --expires: %s", out ? out : "");
        char *t = strstr(out, "token: tbk_");
        cr_assert_not_null(t, "%s", out);
        char tok[72];
        snprintf(tok, sizeof(tok), "%.68s", t + strlen("token: "));
        free(out);
        char *body = NULL;
        cr_assert_eq(rest("GET", "/v1/tasks", tok, NULL, &body), 200, "%s", body);
        free(body);
        body = NULL;
        sleep(3);
        /* REST: refused once expired (the api's cache holds a result 1 s) */
        int s = 0;
        for (int i = 0; i < 100 && s != 401; i++) {
                free(body);
                body = NULL;
                s = rest("GET", "/v1/tasks", tok, NULL, &body);
                if (s != 401)
                        usleep(100 * 1000);
        }
        cr_assert_eq(s, 401, "%s", body);
        cr_assert(strstr(body, "expired"), "%s", body);
        free(body);
        /* Kafka: refused too */
        char corr[37], id[37], principal[200], auth[200];
        tb_uuid4(id);
        send_signed(tok, "CREATE", id, task_body("e1"), 0, false, corr, NULL, principal, auth);
        expect(reply_n(corr, 1), "UNAUTHENTICATED", "expired");

        /* a token created with no internal key (as before signing): REST only */
        char err[512], old_tok[72], old_id[32];
        tb_sign_key_clear();
        cr_assert_eq(tb_identity_token_create(st.conn, "test", "alice", old_tok, old_id, err,
                                              sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_eq(tb_sign_key_init(st.conf, true, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(rest("GET", "/v1/tasks", old_tok, NULL, &body), 200, "%s", body);
        free(body);
        send_signed(old_tok, "CREATE", id, task_body("e2"), 0, false, corr, NULL, principal,
                    auth);
        expect(reply_n(corr, 1), "UNAUTHENTICATED", "create a new token");
        tbt_reader_free(g_replies);
        g_replies = NULL;
        rd_kafka_destroy(g_prod);
        g_prod = NULL;
}
