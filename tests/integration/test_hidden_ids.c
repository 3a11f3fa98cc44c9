/**
 * @file test_hidden_ids.c
 * @brief A task of a security group the caller is not in reveals nothing,
 *        on REST and on Kafka (docs/kafka-interface.md, "Errors"): a Kafka
 *        CREATE of its id gets, word for word, the CONFLICT a live task of the
 *        caller's own group gets, whether the foreign task is live or
 *        deleted, while a fresh id is still accepted; UPDATE, DELETE,
 *        RUN_NOW, PAUSE on Kafka and PUT, DELETE, run, pause, GET on REST
 *        answer it exactly like an id that does not exist.
 */
#include "support.h"
#include "support_stack.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPLY_WAIT_MS 90000

static tbt_stack_t st;
static pid_t daemon_pid;
static int api_port;
static char *conf_path;
static rd_kafka_t *prod;
static tbt_reader_t *replies;

static void setup(void) {
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        api_port = tbt_free_port();
        cr_assert_gt(api_port, 0);
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "region = \"local\";\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; pool_size = 8; };\n"
                              "api = { listen = \"127.0.0.1:%d\"; reply_timeout = \"30s\"; "
                              "rate = 10000.0; burst = 10000; };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, api_port, st.kafka),
                     0);
        conf_path = tbt_write_temp(".conf", text);
        free(text);
        unlink(st.config_path);
        free(st.config_path);
        st.config_path = strdup(conf_path);
        daemon_pid = tbt_daemon_start(&st, "api,commands,projector");
        cr_assert(tbt_wait_until(tbt_http_up, &api_port, 60000), "the api did not come up");
        prod = tbt_stack_producer(&st);
        replies = tbt_reader_new(&st, TB_TOPIC_REPLIES, true);
}

static void teardown(void) {
        if (daemon_pid > 0)
                tbt_daemon_stop(daemon_pid, SIGTERM);
        tbt_reader_free(replies);
        if (prod)
                rd_kafka_destroy(prod);
        tbt_stack_destroy(&st);
        if (conf_path)
                unlink(conf_path);
        free(conf_path);
}

TestSuite(hidden_ids, .init = setup, .fini = teardown, .timeout = 400);

/* One REST call with curl. @returns the HTTP status; the body goes to *body. */
static int rest(const char *method, const char *path, const char *authz, const char *json,
                char **body) {
        char *out = NULL, *file = json ? tbt_write_temp(".json", json) : NULL;
        tbt_run(&out,
                "curl -s -w '\\n%%{http_code}' -X %s -H 'Authorization: %s' "
                "-H 'Content-Type: application/json' %s%s%s 'http://127.0.0.1:%d%s'",
                method, authz, file ? "--data-binary '@" : "", file ? file : "",
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

static char *task_body(const char *name, const char *group) {
        static char buf[4][512];
        static int k;
        char *b = buf[k++ % 4];
        snprintf(b, sizeof(buf[0]),
                 "{\"name\": \"%s\", \"script\": \"echo hi\", \"security_group\": \"%s\", "
                 "\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"}}",
                 name, group);
        return b;
}

/* Create a task through REST; its id goes to \p id. */
static void create(const char *authz, const char *name, const char *group, char id[64]) {
        char *body = NULL;
        int s = rest("POST", "/v1/tasks", authz, task_body(name, group), &body);
        cr_assert_eq(s, 201, "%d %s", s, body);
        json_t *j = json_loads(body, 0, NULL);
        cr_assert_not_null(j, "%s", body);
        snprintf(id, 64, "%s", json_string_value(json_object_get(j, "id")));
        cr_assert_neq(id[0], '\0', "%s", body);
        json_decref(j);
        free(body);
}

/* \p text with every \p id replaced by "<id>" (malloc'd). */
static char *templated(const char *text, const char *id) {
        size_t il = strlen(id);
        char *out = calloc(1, strlen(text) + 1), *o = out;
        for (const char *p = text; *p;) {
                if (il && !strncmp(p, id, il)) {
                        o += sprintf(o, "<id>");
                        p += il;
                } else {
                        *o++ = *p++;
                }
        }
        return out;
}

/* Send a command as \p authz on Kafka; its reply as "status|reason|field|message"
 * with the task id templated (malloc'd). */
static char *ask(const char *authz, const char *type, const char *task_id, const char *task) {
        char corr[37];
        tbt_send_command(&st, prod, type, task_id, -1, task, authz, NULL, corr);
        rd_kafka_flush(prod, 10000);
        const json_t *r = tbt_reader_wait(replies, "correlation_id", corr, REPLY_WAIT_MS);
        cr_assert_not_null(r, "no reply to %s %s", type, task_id);
        const json_t *f = json_object_get(r, "field");
        char *line = NULL;
        cr_assert_gt(asprintf(&line, "%s|%s|%s|%s",
                              json_string_value(json_object_get(r, "status")),
                              json_string_value(json_object_get(r, "reason")),
                              json_is_string(f) ? json_string_value(f) : "-",
                              json_string_value(json_object_get(r, "message"))),
                     0);
        char *t = templated(line, task_id);
        free(line);
        return t;
}

Test(hidden_ids, a_foreign_id_answers_like_one_of_your_own_or_a_missing_one) {
        char alice[96], bob[96], live[64], gone[64], mine[64], fresh[64], missing[64];
        tbt_stack_user(&st, "alice", "ops", alice);
        tbt_stack_user(&st, "bob", "dev", bob);
        create(alice, "alices", "ops", live);
        create(alice, "deleted", "ops", gone);
        char path[200];
        snprintf(path, sizeof(path), "/v1/tasks/%s", gone);
        cr_assert_eq(rest("DELETE", path, alice, NULL, NULL), 204);
        create(bob, "bobs", "dev", mine);

        /* Kafka CREATE: foreign live, foreign deleted, and bob's own: one answer */
        char *own = ask(bob, "CREATE", mine, task_body("again", "dev"));
        cr_assert_str_eq(own, "REJECTED|CONFLICT|task_id|task_id: a task with id '<id>' already "
                              "exists; choose a new id");
        char *a = ask(bob, "CREATE", live, task_body("again", "dev"));
        cr_assert_str_eq(a, own, "a live task of another group");
        char *d = ask(bob, "CREATE", gone, task_body("again", "dev"));
        cr_assert_str_eq(d, own, "a deleted task of another group");
        free(a);
        free(d);
        /* its owner is told it is deleted; a fresh id is created as ever */
        d = ask(alice, "CREATE", gone, task_body("again", "ops"));
        cr_assert(strstr(d, "already exists (deleted)"), "%s", d);
        free(d);
        snprintf(fresh, sizeof(fresh), "fresh-%s", st.id);
        a = ask(bob, "CREATE", fresh, task_body("new", "dev"));
        cr_assert(!strncmp(a, "ACCEPTED|NONE", 13), "%s", a);
        free(a);
        free(own);

        /* Kafka UPDATE, DELETE, RUN_NOW, PAUSE: as for an id that does not exist */
        snprintf(missing, sizeof(missing), "missing-%s", st.id);
        static const char *const types[] = {"UPDATE", "DELETE", "RUN_NOW", "PAUSE"};
        for (size_t i = 0; i < TB_ARRAY_LEN(types); i++) {
                const char *body = !strcmp(types[i], "UPDATE") ? task_body("x", "dev") : NULL;
                char *hidden = ask(bob, types[i], live, body);
                char *none = ask(bob, types[i], missing, body);
                cr_assert_str_eq(hidden, none, "%s", types[i]);
                cr_assert(!strncmp(hidden, "REJECTED|NOT_FOUND|task_id|", 27), "%s", hidden);
                free(hidden);
                free(none);
        }

        /* REST: PUT, DELETE, run, pause, GET */
        static const char *const calls[][2] = {
                {"PUT", ""}, {"DELETE", ""}, {"POST", "/run"}, {"POST", "/pause"}, {"GET", ""}};
        for (size_t i = 0; i < TB_ARRAY_LEN(calls); i++) {
                char p1[200], p2[200], *b1 = NULL, *b2 = NULL;
                snprintf(p1, sizeof(p1), "/v1/tasks/%s%s", live, calls[i][1]);
                snprintf(p2, sizeof(p2), "/v1/tasks/%s%s", missing, calls[i][1]);
                const char *body = !strcmp(calls[i][0], "PUT") ? task_body("x", "dev") : NULL;
                int s1 = rest(calls[i][0], p1, bob, body, &b1);
                int s2 = rest(calls[i][0], p2, bob, body, &b2);
                cr_assert_eq(s1, 404, "%s %s: %d %s", calls[i][0], p1, s1, b1);
                cr_assert_eq(s2, s1, "%s: %d vs %d", calls[i][0], s1, s2);
                char *t1 = templated(b1, live), *t2 = templated(b2, missing);
                cr_assert_str_eq(t1, t2, "%s %s", calls[i][0], calls[i][1]);
                free(t1);
                free(t2);
                free(b1);
                free(b2);
        }
        /* nothing of it changed alice's task */
        char *v = NULL;
        snprintf(path, sizeof(path), "SELECT version || '|' || paused FROM tasks WHERE id = '%s'",
                 live);
        v = tbt_sql_value(&st, path);
        cr_assert_str_eq(v, "1|false");
        free(v);
}
