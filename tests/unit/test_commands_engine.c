/**
 * @file test_commands_engine.c
 * @brief The commands decision engine (core/roles/commands/engine.h) without
 *        Kafka or PostgreSQL: commands go in as the role decodes them (built,
 *        then round-tripped through the Avro serde), the env authenticates
 *        test tokens on a test clock with predictable event ids, and the
 *        events and replies the engine produces are decoded with the serde.
 *        Covers create / update / pause / resume / run-now / delete, expected
 *        versions, a task of another group answered exactly like a missing
 *        one, validation errors and their field, the undo of a batch whose
 *        transaction failed, home regions, deleted tasks, authentication and
 *        the rate limit, and the rebuild path (events applied by epoch and
 *        version, partitions dropped).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h" /* tb_bus_partition_for: the partition a task id belongs to */
#include "commands/engine.h"
#include "config/config.h"
#include "serde/serde.h"
#include "support.h"
#include "task/task.h"

#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */
#define PARTITIONS 4
#define US_API "https://us.taskbus.example:8443"

static const char *const conf_eu =
        "region = \"eu\";\n"
        "topics = { partitions = 4; };\n"
        "replication = { region_apis = { us = \"" US_API "\"; }; };\n"
        "groups = { ops = { log_retention_max = \"7d\"; }; };\n";
static const char *const conf_us =
        "region = \"us\";\n"
        "topics = { partitions = 4; };\n";
/* one token per 100 s, two at once */
static const char *const conf_throttled =
        "region = \"eu\";\n"
        "topics = { partitions = 4; };\n"
        "api = { rate = 0.01; burst = 2; };\n";

#define ALICE "Bearer tok-alice" /* groups dev, ops */
#define BOB "Bearer tok-bob"     /* group dev */

static int64_t clock_ms = T0;
static int64_t sign_offset_ms; /* the signer's clock against the engine's */
static int64_t clock_us = 1000000;
static unsigned next_id;
static int auth_calls;
static unsigned next_command; /* command ids and signatures of the test */

static tb_config_t *conf;
static tb_cmd_engine_t *eng;

/* ---- the env: test tokens, clocks and ids ------------------------------------ */

static tb_principal_t *principal(const char *user, const char *const *groups) {
        tb_principal_t *p = calloc(1, sizeof(*p));
        cr_assert_not_null(p);
        snprintf(p->user_id, sizeof(p->user_id), "%s", user);
        snprintf(p->token_id, sizeof(p->token_id), "tok_%s", user);
        while (groups[p->group_cnt])
                p->group_cnt++;
        p->groups = calloc(p->group_cnt, sizeof(*p->groups));
        cr_assert_not_null(p->groups);
        for (size_t i = 0; i < p->group_cnt; i++) /* given sorted, as identity/ keeps them */
                p->groups[i] = strdup(groups[i]);
        return p;
}

/* The test's "signature check": the tb-principal header names the test
 * token (ALICE, BOB...), taken by its length. */
static tb_err_t env_authenticate(void *opaque, const tb_sign_record_t *rec, tb_principal_t **who,
                                 char *errstr, size_t errstr_size) {
        static const char *const alice_groups[] = {"dev", "ops", NULL};
        static const char *const bob_groups[] = {"dev", NULL};
        char authz[128] = "";
        (void)opaque;
        if (rec->principal && rec->principal_len < sizeof(authz))
                memcpy(authz, rec->principal, rec->principal_len);
        auth_calls++;
        if (!strcmp(authz, ALICE)) {
                *who = principal("alice", alice_groups);
                return TB_OK;
        }
        if (!strcmp(authz, BOB)) {
                *who = principal("bob", bob_groups);
                return TB_OK;
        }
        if (!strcmp(authz, "Bearer tok-store-down"))
                return tb_seterr(errstr, errstr_size, TB_ERR_PG, "connection refused");
        return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED, "unknown or revoked token");
}

static int64_t env_now_ms(void *opaque) {
        (void)opaque;
        return clock_ms;
}

static int64_t env_mono_us(void *opaque) {
        (void)opaque;
        return clock_us;
}

static void env_new_id(void *opaque, char id[37]) {
        (void)opaque;
        snprintf(id, 37, "00000000-0000-4000-8000-%012u", ++next_id);
}

static const tb_cmd_env_t env = {
        .authenticate = env_authenticate,
        .now_ms = env_now_ms,
        .mono_us = env_mono_us,
        .new_id = env_new_id,
};

static tb_config_t *load_conf(const char *text) {
        char errstr[1024];
        char *path = tbt_write_temp(".conf", text);
        cr_assert_not_null(path);
        tb_config_t *c = NULL;
        tb_err_t err = tb_config_load(path, &c, errstr, sizeof(errstr));
        unlink(path);
        free(path);
        cr_assert_eq(err, TB_OK, "%s", errstr);
        return c;
}

static tb_cmd_engine_t *engine_new(const tb_config_t *c) {
        char errstr[1024];
        tb_cmd_engine_t *e = NULL;
        cr_assert_eq(tb_cmd_engine_new(c, &env, &e, errstr, sizeof(errstr)), TB_OK, "%s", errstr);
        return e;
}

/* ---- what was decided ---------------------------------------------------------- */

static tb_cmd_verdict_t v;
static json_t *ev; /* the decoded TaskEvent of the last accepted command */

static void forget_last(void) {
        tb_cmd_verdict_clear(&v);
        if (ev)
                json_decref(ev);
        ev = NULL;
}

static void setup_with(const char *text) {
        /* the developer's shell may point at another stack */
        unsetenv("TASKBUS_REGION");
        unsetenv("TASKBUS_REGION_APIS");
        unsetenv("TASKBUS_REMOTE_REGIONS");
        clock_ms = T0;
        clock_us = 1000000;
        sign_offset_ms = 0;
        next_id = 0;
        next_command = 0;
        auth_calls = 0;
        conf = load_conf(text);
        eng = engine_new(conf);
}

static void setup(void) {
        setup_with(conf_eu);
}

static void setup_throttled(void) {
        setup_with(conf_throttled);
}

static void teardown(void) {
        forget_last();
        tb_cmd_engine_destroy(eng);
        tb_config_destroy(conf);
}

static int32_t part_of(const char *task_id) {
        return tb_bus_partition_for(task_id, strlen(task_id), PARTITIONS);
}

/** A TaskCommand as the role hands it over: encoded and decoded again. */
static json_t *command(const char *type, const char *task_id, long long expected_version,
                       const char *task) {
        char err[512], cid[48];
        /* each command its own id (the replay guard refuses a repeated one) */
        unsigned n = next_command++;
        snprintf(cid, sizeof(cid), n ? "cmd-of-the-test-%u" : "cmd-of-the-test", n);
        json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:I}", "command_id",
                              cid, "correlation_id", "corr-of-the-test", "type",
                              type, "task_id", task_id, "expected_version",
                              expected_version < 0 ? json_null()
                                                   : json_integer(expected_version),
                              "task", task ? json_string(task) : json_null(), "requested_at",
                              (json_int_t)clock_ms);
        cr_assert_not_null(c);
        tb_buf_t b = {0};
        cr_assert_eq(tb_serde_encode(TB_SCHEMA_TASK_COMMAND, c, &b, err, sizeof(err)), TB_OK,
                     "%s", err);
        json_decref(c);
        c = NULL;
        cr_assert_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_COMMAND, NULL, &c, err,
                                     sizeof(err)),
                     TB_OK, "%s", err);
        tb_buf_free(&b);
        return c;
}

/** A record's credentials: tb-principal \p authz (\p len bytes) and a fresh
 *  tb-auth of the test clock with a new signature; NULL \p authz: none. */
static tb_cmd_cred_t cred_of(const char *authz, size_t len, char auth[200]) {
        snprintf(auth, 200, "v1;kid=internal;ts=%lld;sig=%064x",
                 (long long)(clock_ms + sign_offset_ms), ++next_command);
        return authz ? (tb_cmd_cred_t){.principal = authz, .principal_len = len,
                                       .auth = auth, .auth_len = strlen(auth)}
                     : (tb_cmd_cred_t){0};
}

/** Decide \p c (consumed) on engine \p e as read from \p partition. */
static const tb_cmd_verdict_t *decide_on(tb_cmd_engine_t *e, json_t *c, const char *authz,
                                         int32_t partition) {
        char err[512], auth[200];
        forget_last();
        tb_cmd_cred_t cr = cred_of(authz, authz ? strlen(authz) : 0, auth);
        tb_cmd_engine_decide(e, c, &cr, partition, &v);
        json_decref(c);
        if (v.reason) {
                cr_assert_eq(v.event.len, 0, "a rejection (%s) carries no event", v.reason);
                cr_assert_gt(strlen(v.message), 5, "a rejection must say why");
        } else {
                cr_assert_gt(v.event.len, 0, "an accepted command carries its event");
                cr_assert_eq(tb_serde_decode(v.event.data, v.event.len, TB_SCHEMA_TASK_EVENT, NULL,
                                             &ev, err, sizeof(err)),
                             TB_OK, "%s", err);
        }
        return &v;
}

static const tb_cmd_verdict_t *ask_on(tb_cmd_engine_t *e, const char *authz, const char *type,
                                      const char *task_id, long long expected_version,
                                      const char *task) {
        return decide_on(e, command(type, task_id, expected_version, task), authz,
                         part_of(task_id));
}

static const tb_cmd_verdict_t *ask(const char *authz, const char *type, const char *task_id,
                                   long long expected_version, const char *task) {
        return ask_on(eng, authz, type, task_id, expected_version, task);
}

static void expect_accepted(int64_t version, const char *event_type) {
        cr_assert_null(v.reason, "rejected: %s: %s (field %s)", v.reason, v.message, v.field);
        cr_assert_eq(v.version, version, "version %lld expected, got %lld", (long long)version,
                     (long long)v.version);
        cr_assert_str_eq(v.message, event_type);
        cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), event_type);
        cr_assert_eq(json_integer_value(json_object_get(ev, "version")), version);
}

static void expect_rejected(const char *reason, const char *field) {
        cr_assert_not_null(v.reason, "expected %s, accepted", reason);
        cr_assert_str_eq(v.reason, reason, "reason %s (message: %s)", v.reason, v.message);
        cr_assert_str_eq(v.field, field, "field '%s', expected '%s' (message: %s)", v.field,
                         field, v.message);
}

static const char *evs(const char *key) {
        const char *s = json_string_value(json_object_get(ev, key));
        cr_assert_not_null(s, "event has no string %s", key);
        return s;
}

static int64_t evi(const char *key) {
        const json_t *j = json_object_get(ev, key);
        cr_assert(json_is_integer(j), "event has no integer %s", key);
        return json_integer_value(j);
}

static const json_t *ev_task(void) {
        return json_object_get(ev, "task");
}

/** The event's changed_fields, comma-joined. */
static char *changed(void) {
        static char buf[512];
        size_t i, n = 0;
        json_t *f;
        buf[0] = '\0';
        json_array_foreach(json_object_get(ev, "changed_fields"), i, f)
                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", i ? "," : "",
                                      json_string_value(f));
        return buf;
}

/** A task in the REST shape; \p extra ("" or ", \"k\": v") is appended. */
static char *task_json(const char *name, const char *group, const char *extra) {
        static char buf[4][1024];
        static int k;
        char *b = buf[k++ % 4];
        snprintf(b, sizeof(buf[0]),
                 "{\"name\": \"%s\", \"script\": \"echo hello\", \"security_group\": \"%s\", "
                 "\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"UTC\"}%s}",
                 name, group, extra);
        return b;
}

static const tb_cmd_task_t *state(const char *task_id) {
        return tb_cmd_engine_get(eng, task_id);
}

static json_t *reply_of(tb_cmd_engine_t *e, const char *task_id, tb_buf_t *raw) {
        char err[512];
        tb_buf_t b = {0};
        json_t *r = NULL;
        cr_assert(tb_cmd_engine_reply(e, "corr-1", "cmd-1", task_id, &v, &b));
        cr_assert_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_REPLY, NULL, &r, err,
                                     sizeof(err)),
                     TB_OK, "%s", err);
        if (raw)
                *raw = b;
        else
                tb_buf_free(&b);
        return r;
}

TestSuite(commands_engine, .init = setup, .fini = teardown);

/* ---- the lifecycle of a task ----------------------------------------------------- */

Test(commands_engine, create_writes_the_event_and_the_state) {
        ask(ALICE, "CREATE", "t-create", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");
        cr_assert_str_eq(evs("task_id"), "t-create");
        cr_assert_str_eq(evs("event_id"), "00000000-0000-4000-8000-000000000001");
        cr_assert_str_eq(evs("actor"), "alice");
        cr_assert_str_eq(evs("created_by"), "alice");
        cr_assert_str_eq(evs("command_id"), "cmd-of-the-test");
        cr_assert_eq(evi("at"), T0);
        cr_assert_eq(evi("created_at"), T0);
        cr_assert_eq(evi("epoch"), 0);
        const json_t *t = ev_task();
        cr_assert_str_eq(json_string_value(json_object_get(t, "name")), "backup");
        cr_assert_str_eq(json_string_value(json_object_get(t, "security_group")), "ops");
        cr_assert_str_eq(json_string_value(json_object_get(t, "user_id")), "alice");
        cr_assert_str_eq(json_string_value(json_object_get(t, "home_region")), "eu",
                         "home_region defaults to this region");
        cr_assert(strstr(changed(), "name") && strstr(changed(), "script"), "changed: %s",
                  changed());

        const tb_cmd_task_t *s = state("t-create");
        cr_assert_not_null(s);
        cr_assert_eq(s->version, 1);
        cr_assert_str_eq(s->group, "ops");
        cr_assert_not(s->deleted);
        cr_assert_str_eq(s->created_by, "alice");
        cr_assert_eq(s->created_at, T0);
        cr_assert_eq(s->partition, part_of("t-create"));
        cr_assert_eq(tb_cmd_engine_task_count(eng), 1);
}

/* A command that reaches the engine late (a broker failover between the api
 * and the commands role) is judged, and its task created, as of its
 * signature: its one-shot is not "in the past", its creation is not late. */
Test(commands_engine, a_delayed_command_is_judged_as_of_its_signature) {
        char at[32], body[512];
        sign_offset_ms = -4000;
        tb_time_format(T0 - 2000, at);
        snprintf(body, sizeof(body),
                 "{\"name\": \"late\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"schedule\": {\"once\": \"%s\"}}", at);
        ask(ALICE, "CREATE", "t-late", -1, body);
        expect_accepted(1, "CREATED");
        cr_assert_eq(evi("created_at"), T0 - 4000, "created when it was signed");
        cr_assert_eq(evi("at"), T0, "the event itself is of now");
        cr_assert_eq(state("t-late")->created_at, T0 - 4000);
        /* in the past when it was signed: refused as before */
        tb_time_format(T0 - 5500, at);
        snprintf(body, sizeof(body),
                 "{\"name\": \"later\", \"script\": \"true\", \"security_group\": \"ops\", "
                 "\"schedule\": {\"once\": \"%s\"}}", at);
        ask(ALICE, "CREATE", "t-later", -1, body);
        expect_rejected("INVALID_ARGUMENT", "schedule.once");
        /* a signature ahead of the engine's clock does not move creation ahead */
        sign_offset_ms = 3000;
        ask(ALICE, "CREATE", "t-ahead", -1, task_json("ahead", "ops", ""));
        expect_accepted(1, "CREATED");
        cr_assert_eq(evi("created_at"), T0);
}

Test(commands_engine, update_pause_resume_run_now_delete) {
        ask(ALICE, "CREATE", "t-life", 0, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");

        clock_ms = T0 + 1000;
        ask(ALICE, "UPDATE", "t-life", 1,
            task_json("backup", "ops", ", \"labels\": {\"team\": \"storage\"}"));
        expect_accepted(2, "UPDATED");
        cr_assert_str_eq(changed(), "labels");
        cr_assert_eq(evi("at"), T0 + 1000);
        cr_assert_eq(evi("created_at"), T0, "an update keeps the creation time");
        cr_assert_str_eq(evs("created_by"), "alice");

        clock_ms = T0 + 2000;
        ask(BOB, "CREATE", "t-other", -1, task_json("other", "dev", ""));
        expect_accepted(1, "CREATED");

        ask(ALICE, "PAUSE", "t-life", -1, NULL);
        expect_accepted(3, "PAUSED");
        cr_assert_str_eq(changed(), "paused");
        cr_assert(json_is_true(json_object_get(ev_task(), "paused")));
        cr_assert(json_is_true(json_object_get(state("t-life")->task, "paused")));

        ask(ALICE, "RESUME", "t-life", 3, NULL);
        expect_accepted(4, "RESUMED");
        cr_assert_str_eq(changed(), "paused");
        cr_assert(json_is_false(json_object_get(ev_task(), "paused")));

        json_t *before = json_deep_copy(state("t-life")->task);
        ask(ALICE, "RUN_NOW", "t-life", -1, NULL);
        expect_accepted(5, "RUN_REQUESTED");
        cr_assert_str_eq(changed(), "", "a run-now changes nothing: %s", changed());
        cr_assert(json_equal(before, state("t-life")->task));
        cr_assert_str_eq(json_string_value(json_object_get(ev_task(), "name")), "backup");
        json_decref(before);

        clock_ms = T0 + 3000;
        ask(ALICE, "DELETE", "t-life", 5, NULL);
        expect_accepted(6, "DELETED");
        cr_assert(json_is_null(ev_task()), "a DELETED event carries no task");
        cr_assert_str_eq(changed(), "");
        cr_assert_eq(evi("created_at"), T0);
        const tb_cmd_task_t *s = state("t-life");
        cr_assert_not_null(s, "a deleted task stays known (its id is not reusable)");
        cr_assert(s->deleted);
        cr_assert_null(s->task);
        cr_assert_eq(s->version, 6);
        cr_assert_str_eq(s->group, "ops", "the group of the last state is kept");

        /* the other task saw none of it */
        cr_assert_eq(state("t-other")->version, 1);
        cr_assert_str_eq(state("t-other")->created_by, "bob");
}

Test(commands_engine, a_deleted_task_is_not_found_and_its_id_not_reusable) {
        ask(ALICE, "CREATE", "t-gone", -1, task_json("backup", "ops", ""));
        ask(ALICE, "DELETE", "t-gone", -1, NULL);
        expect_accepted(2, "DELETED");
        const char *types[] = {"UPDATE", "PAUSE", "RESUME", "RUN_NOW", "DELETE"};
        for (size_t i = 0; i < TB_ARRAY_LEN(types); i++) {
                ask(ALICE, types[i], "t-gone", -1,
                    !strcmp(types[i], "UPDATE") ? task_json("backup", "ops", "") : NULL);
                expect_rejected("NOT_FOUND", "task_id");
                cr_assert(strstr(v.message, "not found"), "%s", v.message);
        }
        ask(ALICE, "CREATE", "t-gone", -1, task_json("backup", "ops", ""));
        expect_rejected("CONFLICT", "task_id");
        cr_assert(strstr(v.message, "(deleted)"), "%s", v.message);
        cr_assert_eq(state("t-gone")->version, 2);
        cr_assert(state("t-gone")->deleted);
}

Test(commands_engine, expected_version_conflicts) {
        ask(ALICE, "CREATE", "t-ver", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");

        ask(ALICE, "UPDATE", "t-ver", 7, task_json("renamed", "ops", ""));
        expect_rejected("CONFLICT", "expected_version");
        cr_assert(strstr(v.message, "at version 1"), "%s", v.message);
        ask(ALICE, "PAUSE", "t-ver", 0, NULL);
        expect_rejected("CONFLICT", "expected_version");
        ask(ALICE, "DELETE", "t-ver", 2, NULL);
        expect_rejected("CONFLICT", "expected_version");
        cr_assert_eq(state("t-ver")->version, 1);
        cr_assert_str_eq(json_string_value(json_object_get(state("t-ver")->task, "name")),
                         "backup");
        cr_assert_not(state("t-ver")->deleted);

        ask(ALICE, "CREATE", "t-ver", -1, task_json("again", "ops", ""));
        expect_rejected("CONFLICT", "task_id");
        cr_assert(strstr(v.message, "already exists"), "%s", v.message);

        ask(ALICE, "CREATE", "t-new", 3, task_json("new", "ops", ""));
        expect_rejected("CONFLICT", "expected_version");
        cr_assert(strstr(v.message, "does not exist yet"), "%s", v.message);
        cr_assert_null(state("t-new"));

        ask(ALICE, "CREATE", "t-new", 0, task_json("new", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "PAUSE", "t-ver", 1, NULL);
        expect_accepted(2, "PAUSED");
}

/* ---- authorization ------------------------------------------------------------- */

Test(commands_engine, a_task_of_another_group_is_answered_like_a_missing_one) {
        tb_cmd_engine_t *empty = engine_new(conf);
        ask(ALICE, "CREATE", "t-ops", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");

        const char *types[] = {"UPDATE", "PAUSE", "RESUME", "RUN_NOW", "DELETE"};
        for (size_t i = 0; i < TB_ARRAY_LEN(types); i++) {
                const char *body =
                        !strcmp(types[i], "UPDATE") ? task_json("mine", "dev", "") : NULL;
                tb_buf_t hidden, missing;
                /* bob (dev) on the engine that holds alice's ops task ... */
                ask_on(eng, BOB, types[i], "t-ops", 1, body);
                expect_rejected("NOT_FOUND", "task_id");
                tb_cmd_verdict_t seen = v;
                json_decref(reply_of(eng, "t-ops", &hidden));
                /* ... and on an engine where the task does not exist */
                ask_on(empty, BOB, types[i], "t-ops", 1, body);
                expect_rejected("NOT_FOUND", "task_id");
                cr_assert_str_eq(seen.message, v.message, "%s: '%s' vs '%s'", types[i],
                                 seen.message, v.message);
                json_decref(reply_of(empty, "t-ops", &missing));
                cr_assert_eq(hidden.len, missing.len, "%s: replies differ", types[i]);
                cr_assert_eq(memcmp(hidden.data, missing.data, hidden.len), 0,
                             "%s: replies differ", types[i]);
                tb_buf_free(&hidden);
                tb_buf_free(&missing);
        }
        cr_assert_eq(state("t-ops")->version, 1, "nothing applied");
        cr_assert_null(tb_cmd_engine_get(empty, "t-ops"));

        /* bob cannot create a task in a group he is not in */
        ask(BOB, "CREATE", "t-bob", -1, task_json("sneaky", "ops", ""));
        expect_rejected("FORBIDDEN", "security_group");
        cr_assert(strstr(v.message, "'bob' is not a member of group 'ops'"), "%s", v.message);
        cr_assert_null(state("t-bob"));
        /* nor can alice move hers to a group she is not in */
        ask(ALICE, "UPDATE", "t-ops", 1, task_json("backup", "qa", ""));
        expect_rejected("FORBIDDEN", "security_group");
        cr_assert_str_eq(state("t-ops")->group, "ops");
        /* but she can move it to another of hers, and then bob sees it */
        ask(ALICE, "UPDATE", "t-ops", 1, task_json("backup", "dev", ""));
        expect_accepted(2, "UPDATED");
        cr_assert(strstr(changed(), "security_group"), "changed: %s", changed());
        cr_assert_str_eq(state("t-ops")->group, "dev");
        ask(BOB, "PAUSE", "t-ops", 2, NULL);
        expect_accepted(3, "PAUSED");
        cr_assert_str_eq(evs("actor"), "bob");
        cr_assert_str_eq(evs("created_by"), "alice");
        tb_cmd_engine_destroy(empty);
}

/* A CREATE of an id held in a group bob is not in: the reply is byte for byte
 * the one bob gets for an id held by a live task of his own group, whether
 * the foreign task is live or deleted; a fresh id is still his to take. */
Test(commands_engine, a_create_of_a_foreign_id_reveals_nothing_about_its_task) {
        tb_cmd_engine_t *gone = engine_new(conf), *mine = engine_new(conf);
        ask_on(eng, ALICE, "CREATE", "t-held", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");
        ask_on(gone, ALICE, "CREATE", "t-held", -1, task_json("backup", "ops", ""));
        ask_on(gone, ALICE, "DELETE", "t-held", -1, NULL);
        expect_accepted(2, "DELETED");
        ask_on(mine, BOB, "CREATE", "t-held", -1, task_json("his", "dev", ""));
        expect_accepted(1, "CREATED");

        tb_cmd_engine_t *engines[] = {eng, gone, mine};
        tb_buf_t replies[3];
        char messages[3][sizeof(v.message)];
        for (size_t i = 0; i < 3; i++) {
                /* with and without an expected version: the same answer */
                ask_on(engines[i], BOB, "CREATE", "t-held", 0, task_json("again", "dev", ""));
                expect_rejected("CONFLICT", "task_id");
                ask_on(engines[i], BOB, "CREATE", "t-held", -1, task_json("again", "dev", ""));
                expect_rejected("CONFLICT", "task_id");
                cr_assert(strstr(v.message, "already exists; choose a new id"), "%s", v.message);
                cr_assert_null(strstr(v.message, "deleted"), "%s", v.message);
                snprintf(messages[i], sizeof(messages[i]), "%s", v.message);
                json_decref(reply_of(engines[i], "t-held", &replies[i]));
        }
        for (size_t i = 1; i < 3; i++) {
                cr_assert_str_eq(messages[0], messages[i]);
                cr_assert_eq(replies[0].len, replies[i].len, "reply %zu differs", i);
                cr_assert_eq(memcmp(replies[0].data, replies[i].data, replies[0].len), 0,
                             "reply %zu differs", i);
        }
        for (size_t i = 0; i < 3; i++)
                tb_buf_free(&replies[i]);
        /* the owner of the deleted task is still told */
        ask_on(gone, ALICE, "CREATE", "t-held", -1, task_json("backup", "ops", ""));
        expect_rejected("CONFLICT", "task_id");
        cr_assert(strstr(v.message, "(deleted)"), "%s", v.message);
        /* and a fresh id is created as ever */
        ask_on(eng, BOB, "CREATE", "t-fresh", -1, task_json("new", "dev", ""));
        expect_accepted(1, "CREATED");
        tb_cmd_engine_destroy(gone);
        tb_cmd_engine_destroy(mine);
}

Test(commands_engine, authentication) {
        decide_on(eng, command("CREATE", "t-auth", -1, task_json("a", "ops", "")), NULL,
                  part_of("t-auth"));
        expect_rejected("UNAUTHENTICATED", "");
        cr_assert(strstr(v.message, "authorization"), "%s", v.message);
        cr_assert_eq(auth_calls, 0, "no header: nothing to authenticate");

        ask("Bearer tok-nobody", "CREATE", "t-auth", -1, task_json("a", "ops", ""));
        expect_rejected("UNAUTHENTICATED", "");
        cr_assert_str_eq(v.message, "unknown or revoked token");

        ask("Bearer tok-store-down", "CREATE", "t-auth", -1, task_json("a", "ops", ""));
        expect_rejected("INTERNAL", "");
        cr_assert_str_eq(v.message, "authentication unavailable: connection refused");

        /* the header is taken by its length, not up to a NUL */
        const char *padded = ALICE "garbage";
        forget_last();
        json_t *c = command("CREATE", "t-auth", -1, task_json("a", "ops", ""));
        char auth[200];
        tb_cmd_cred_t cr = cred_of(padded, strlen(ALICE), auth);
        tb_cmd_engine_decide(eng, c, &cr, part_of("t-auth"), &v);
        json_decref(c);
        cr_assert_null(v.reason, "%s: %s", v.reason, v.message);
        cr_assert_eq(auth_calls, 3);
        cr_assert_eq(state("t-auth")->version, 1);
}

Test(commands_engine, old_form_stale_signatures_and_replays) {
        /* the old bearer header: refused with what changed, nothing authenticated */
        char auth[200];
        json_t *c = command("CREATE", "t-sig", -1, task_json("a", "ops", ""));
        tb_cmd_cred_t old = {.authorization = ALICE, .authorization_len = strlen(ALICE)};
        forget_last();
        tb_cmd_engine_decide(eng, c, &old, part_of("t-sig"), &v);
        json_decref(c);
        expect_rejected("UNAUTHENTICATED", "");
        cr_assert(strstr(v.message, "bearer tokens are no longer accepted on Kafka") &&
                          strstr(v.message, "docs/kafka-interface.md"),
                  "%s", v.message);
        cr_assert_eq(auth_calls, 0);

        /* signed 5 min + 1 ms ago, or ahead: refused before any lookup */
        int64_t now = clock_ms;
        clock_ms = now - (5 * 60 * 1000 + 1);
        tb_cmd_cred_t cr = cred_of(ALICE, strlen(ALICE), auth);
        clock_ms = now;
        c = command("CREATE", "t-sig", -1, task_json("a", "ops", ""));
        forget_last();
        tb_cmd_engine_decide(eng, c, &cr, part_of("t-sig"), &v);
        json_decref(c);
        expect_rejected("UNAUTHENTICATED", "");
        cr_assert(strstr(v.message, "signature_max_age") && strstr(v.message, "behind"), "%s",
                  v.message);
        clock_ms = now + 5 * 60 * 1000 + 1;
        cr = cred_of(ALICE, strlen(ALICE), auth);
        clock_ms = now;
        c = command("CREATE", "t-sig", -1, task_json("a", "ops", ""));
        forget_last();
        tb_cmd_engine_decide(eng, c, &cr, part_of("t-sig"), &v);
        json_decref(c);
        expect_rejected("UNAUTHENTICATED", "");
        cr_assert(strstr(v.message, "ahead of"), "%s", v.message);
        cr_assert_eq(auth_calls, 0);

        /* the same record twice: the second is a replay */
        cr = cred_of(ALICE, strlen(ALICE), auth);
        json_t *rec = command("RUN_NOW", "t-sig", -1, NULL);
        ask(ALICE, "CREATE", "t-sig", -1, task_json("a", "ops", ""));
        expect_accepted(1, "CREATED");
        forget_last();
        tb_cmd_engine_decide(eng, rec, &cr, part_of("t-sig"), &v);
        cr_assert_null(v.reason, "%s: %s", v.reason, v.message);
        tb_cmd_engine_commit(eng);
        forget_last();
        tb_cmd_engine_decide(eng, rec, &cr, part_of("t-sig"), &v);
        expect_rejected("CONFLICT", "command_id");
        cr_assert(strstr(v.message, "replayed record"), "%s", v.message);
        /* the same command id re-signed (a new signature) is a replay too */
        cr = cred_of(ALICE, strlen(ALICE), auth);
        forget_last();
        tb_cmd_engine_decide(eng, rec, &cr, part_of("t-sig"), &v);
        expect_rejected("CONFLICT", "command_id");
        json_decref(rec);

        /* a batch that did not commit is decided again, not taken for a replay */
        rec = command("RUN_NOW", "t-sig", -1, NULL);
        cr = cred_of(ALICE, strlen(ALICE), auth);
        forget_last();
        tb_cmd_engine_decide(eng, rec, &cr, part_of("t-sig"), &v);
        cr_assert_null(v.reason, "%s: %s", v.reason, v.message);
        tb_cmd_engine_rollback(eng);
        forget_last();
        tb_cmd_engine_decide(eng, rec, &cr, part_of("t-sig"), &v);
        cr_assert_null(v.reason, "after a rollback: %s: %s", v.reason, v.message);
        json_decref(rec);
}

/* ---- validation ------------------------------------------------------------------ */

Test(commands_engine, validation_errors_name_the_field) {
        ask(ALICE, "CREATE", "t-bad", -1, NULL);
        expect_rejected("INVALID_ARGUMENT", "task");
        ask(ALICE, "CREATE", "t-bad", -1, "{\"name\": ");
        expect_rejected("INVALID_ARGUMENT", "task");
        cr_assert(strstr(v.message, "not valid JSON"), "%s", v.message);
        ask(ALICE, "CREATE", "t-bad", -1,
            "{\"name\": \"n\", \"script\": \"x\", \"security_group\": \"ops\", "
            "\"schedule\": {\"cron\": \"61 * * * *\", \"timezone\": \"UTC\"}}");
        expect_rejected("INVALID_ARGUMENT", "schedule.cron");
        ask(ALICE, "CREATE", "t-bad", -1, task_json("n", "ops", ", \"executor\": \"telnet\""));
        expect_rejected("INVALID_ARGUMENT", "executor");
        ask(ALICE, "CREATE", "t-bad", -1, task_json("n", "ops", ", \"colour\": \"blue\""));
        expect_rejected("INVALID_ARGUMENT", "colour");
        /* groups.ops.log_retention_max = 7d; other groups: the default, 30d */
        ask(ALICE, "CREATE", "t-bad", -1, task_json("n", "ops", ", \"log_retention\": \"20d\""));
        expect_rejected("INVALID_ARGUMENT", "log_retention");
        ask(ALICE, "CREATE", "t-bad", -1, task_json("n", "dev", ", \"log_retention\": \"20d\""));
        expect_accepted(1, "CREATED");
        cr_assert_eq(json_integer_value(json_object_get(ev_task(), "log_retention_ms")),
                     INT64_C(20) * 86400 * 1000, "the cap is ops's, not dev's");
        ask(ALICE, "CREATE", "t-bad2", -1, task_json("n", "ops", ", \"user_id\": \"mallory\""));
        expect_rejected("FORBIDDEN", "user_id");

        /* an update is validated the same way, and leaves the state alone */
        ask(ALICE, "UPDATE", "t-bad", 1,
            task_json("n", "dev", ", \"retries\": {\"max_attempts\": 0}"));
        expect_rejected("INVALID_ARGUMENT", "retries.max_attempts");
        cr_assert_eq(state("t-bad")->version, 1);

        /* the command itself */
        ask(ALICE, "CREATE", "", -1, task_json("n", "ops", ""));
        expect_rejected("INVALID_ARGUMENT", "task_id");
        json_t *c = command("PAUSE", "t-bad", -1, NULL);
        json_object_set_new(c, "type", json_string("EXPLODE"));
        decide_on(eng, c, ALICE, part_of("t-bad"));
        expect_rejected("INVALID_ARGUMENT", "type");
        cr_assert(strstr(v.message, "'EXPLODE'"), "%s", v.message);

        /* a record on another partition than its task id's */
        int32_t wrong = (part_of("t-bad3") + 1) % PARTITIONS;
        decide_on(eng, command("CREATE", "t-bad3", -1, task_json("n", "ops", "")), ALICE,
                  wrong);
        expect_rejected("INVALID_ARGUMENT", "task_id");
        cr_assert(strstr(v.message, "taskbus.task-commands") && strstr(v.message, "murmur2"),
                  "%s", v.message);
        cr_assert_null(state("t-bad3"));
        cr_assert_null(state("t-bad2"));
        cr_assert_eq(tb_cmd_engine_task_count(eng), 1);
}

/* ---- batches: commit and rollback ---------------------------------------------- */

Test(commands_engine, rollback_of_a_failed_batch_restores_the_state) {
        ask(ALICE, "CREATE", "t-undo", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");
        tb_cmd_engine_commit(eng);
        json_t *committed = json_deep_copy(state("t-undo")->task);

        /* a batch of four decisions, then its transaction fails */
        clock_ms = T0 + 5000;
        ask(ALICE, "UPDATE", "t-undo", 1, task_json("renamed", "dev", ""));
        expect_accepted(2, "UPDATED");
        ask(ALICE, "PAUSE", "t-undo", 2, NULL);
        expect_accepted(3, "PAUSED");
        ask(ALICE, "CREATE", "t-undo-new", -1, task_json("new", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "DELETE", "t-undo", 3, NULL);
        expect_accepted(4, "DELETED");
        cr_assert_eq(tb_cmd_engine_task_count(eng), 2);

        tb_cmd_engine_rollback(eng);
        const tb_cmd_task_t *s = state("t-undo");
        cr_assert_not_null(s);
        cr_assert_eq(s->version, 1);
        cr_assert_not(s->deleted);
        cr_assert_str_eq(s->group, "ops");
        cr_assert(json_equal(s->task, committed), "the task is back as committed");
        cr_assert_eq(s->created_at, T0);
        cr_assert_null(state("t-undo-new"), "a task created by the failed batch is gone");
        cr_assert_eq(tb_cmd_engine_task_count(eng), 1);

        /* the batch read again is judged against the restored state */
        ask(ALICE, "UPDATE", "t-undo", 1, task_json("renamed", "dev", ""));
        expect_accepted(2, "UPDATED");
        ask(ALICE, "CREATE", "t-undo-new", -1, task_json("new", "ops", ""));
        expect_accepted(1, "CREATED");
        tb_cmd_engine_commit(eng);
        /* a rollback after the commit has nothing to take back */
        tb_cmd_engine_rollback(eng);
        cr_assert_eq(state("t-undo")->version, 2);
        cr_assert_str_eq(state("t-undo")->group, "dev");
        cr_assert_not_null(state("t-undo-new"));
        json_decref(committed);
}

/* ---- regions ----------------------------------------------------------------------- */

Test(commands_engine, writes_for_a_task_homed_elsewhere_are_refused) {
        /* created here with another home */
        ask(ALICE, "CREATE", "t-us", -1, task_json("backup", "ops", ", \"home_region\": \"us\""));
        expect_rejected("FORBIDDEN", "home_region");
        cr_assert(strstr(v.message, "region 'us'") && strstr(v.message, US_API), "%s",
                  v.message);
        cr_assert_null(state("t-us"));

        /* a task created in us, whose event reached this region (rebuild / follower) */
        tb_config_t *us_conf = load_conf(conf_us);
        tb_cmd_engine_t *us = engine_new(us_conf);
        ask_on(us, ALICE, "CREATE", "t-us", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");
        cr_assert_str_eq(json_string_value(json_object_get(ev_task(), "home_region")), "us");
        tb_cmd_engine_apply_event(eng, part_of("t-us"), ev);
        cr_assert_eq(state("t-us")->version, 1);

        const char *types[] = {"UPDATE", "PAUSE", "RESUME", "RUN_NOW", "DELETE"};
        for (size_t i = 0; i < TB_ARRAY_LEN(types); i++) {
                ask(ALICE, types[i], "t-us", 1,
                    !strcmp(types[i], "UPDATE") ? task_json("backup", "ops", "") : NULL);
                expect_rejected("FORBIDDEN", "home_region");
        }
        cr_assert_eq(state("t-us")->version, 1);
        /* its home region still writes it */
        ask_on(us, ALICE, "PAUSE", "t-us", 1, NULL);
        expect_accepted(2, "PAUSED");

        /* an update cannot move a task's home */
        ask(ALICE, "CREATE", "t-eu", -1, task_json("backup", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "UPDATE", "t-eu", 1, task_json("backup", "ops", ", \"home_region\": \"us\""));
        expect_rejected("FORBIDDEN", "home_region");
        cr_assert(strstr(v.message, "cannot move"), "%s", v.message);
        ask(ALICE, "UPDATE", "t-eu", 1, task_json("backup", "ops", ", \"home_region\": \"eu\""));
        expect_accepted(2, "UPDATED");

        tb_cmd_engine_destroy(us);
        tb_config_destroy(us_conf);
}

/* ---- rebuilding ---------------------------------------------------------------------- */

Test(commands_engine, events_apply_by_epoch_and_version) {
        tb_cmd_engine_t *replica = engine_new(conf);
        json_t *evs_seen[3];
        ask(ALICE, "CREATE", "t-ev", -1, task_json("backup", "ops", ""));
        evs_seen[0] = json_incref(ev);
        ask(ALICE, "PAUSE", "t-ev", -1, NULL);
        evs_seen[1] = json_incref(ev);
        ask(ALICE, "DELETE", "t-ev", -1, NULL);
        evs_seen[2] = json_incref(ev);

        int32_t p = part_of("t-ev");
        tb_cmd_engine_apply_event(replica, p, evs_seen[0]);
        tb_cmd_engine_apply_event(replica, p, evs_seen[1]);
        const tb_cmd_task_t *s = tb_cmd_engine_get(replica, "t-ev");
        cr_assert_eq(s->version, 2);
        cr_assert(json_is_true(json_object_get(s->task, "paused")));
        cr_assert_str_eq(s->created_by, "alice");
        cr_assert_eq(s->created_at, T0);
        /* an older event again (our own, back through the follower): ignored */
        tb_cmd_engine_apply_event(replica, p, evs_seen[0]);
        s = tb_cmd_engine_get(replica, "t-ev");
        cr_assert_eq(s->version, 2);
        cr_assert(json_is_true(json_object_get(s->task, "paused")));

        /* a failover's higher epoch wins over a higher version */
        json_t *moved = json_deep_copy(evs_seen[0]);
        json_object_set_new(moved, "epoch", json_integer(1));
        tb_cmd_engine_apply_event(replica, p, moved);
        s = tb_cmd_engine_get(replica, "t-ev");
        cr_assert_eq(s->version, 1);
        cr_assert_eq(s->epoch, 1);
        cr_assert(json_is_false(json_object_get(s->task, "paused")));
        /* and the next write carries that epoch */
        ask_on(replica, ALICE, "PAUSE", "t-ev", 1, NULL);
        expect_accepted(2, "PAUSED");
        cr_assert_eq(evi("epoch"), 1);
        /* the old epoch's DELETED (version 3) no longer counts */
        tb_cmd_engine_apply_event(replica, p, evs_seen[2]);
        cr_assert_not(tb_cmd_engine_get(replica, "t-ev")->deleted);

        /* a DELETED event (no task in it): known as deleted, the group kept */
        tb_cmd_engine_t *other = engine_new(conf);
        tb_cmd_engine_apply_event(other, p, evs_seen[0]);
        tb_cmd_engine_apply_event(other, p, evs_seen[2]);
        s = tb_cmd_engine_get(other, "t-ev");
        cr_assert(s->deleted);
        cr_assert_null(s->task);
        cr_assert_eq(s->version, 3);
        cr_assert_str_eq(s->group, "ops");
        tb_cmd_engine_destroy(other);

        for (size_t i = 0; i < TB_ARRAY_LEN(evs_seen); i++)
                json_decref(evs_seen[i]);
        json_decref(moved);
        tb_cmd_engine_destroy(replica);
}

Test(commands_engine, dropping_a_partition_forgets_only_its_tasks) {
        /* two ids on different partitions */
        const char *a = "t-drop-0", *b = NULL;
        char name[32];
        for (int i = 1; i < 100 && !b; i++) {
                snprintf(name, sizeof(name), "t-drop-%d", i);
                if (part_of(name) != part_of(a))
                        b = name;
        }
        cr_assert_not_null(b);
        ask(ALICE, "CREATE", a, -1, task_json("a", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "CREATE", b, -1, task_json("b", "ops", ""));
        expect_accepted(1, "CREATED");
        tb_cmd_engine_commit(eng);
        tb_cmd_engine_drop_partition(eng, part_of(a));
        cr_assert_null(state(a));
        cr_assert_not_null(state(b));
        cr_assert_eq(tb_cmd_engine_task_count(eng), 1);
        /* a command for a dropped task finds nothing (its partition is another
         * member's, or about to be rebuilt) */
        ask(ALICE, "PAUSE", a, -1, NULL);
        expect_rejected("NOT_FOUND", "task_id");
}

/* ---- the rate limit -------------------------------------------------------------- */

TestSuite(commands_engine_rate, .init = setup_throttled, .fini = teardown);

Test(commands_engine_rate, is_per_user) {
        ask(ALICE, "CREATE", "t-rl", -1, task_json("a", "ops", ""));
        expect_accepted(1, "CREATED");
        /* a rejected command takes a token too */
        ask(ALICE, "PAUSE", "t-rl", 9, NULL);
        expect_rejected("CONFLICT", "expected_version");
        ask(ALICE, "PAUSE", "t-rl", -1, NULL);
        expect_rejected("THROTTLED", "");
        cr_assert(strstr(v.message, "'alice'") && strstr(v.message, "retry after"), "%s",
                  v.message);
        cr_assert_eq(state("t-rl")->version, 1);
        /* bob has his own bucket */
        ask(BOB, "CREATE", "t-rl-bob", -1, task_json("b", "dev", ""));
        expect_accepted(1, "CREATED");
        /* rate 0.01/s: a token 100 s later (monotonic clock) */
        clock_us += INT64_C(101) * 1000000;
        ask(ALICE, "PAUSE", "t-rl", -1, NULL);
        expect_accepted(2, "PAUSED");
        ask(ALICE, "RESUME", "t-rl", -1, NULL);
        expect_rejected("THROTTLED", "");
}

/* ---- replies ------------------------------------------------------------------------ */

Test(commands_engine, replies) {
        clock_ms = T0 + 42;
        ask(ALICE, "CREATE", "t-reply", -1, task_json("a", "ops", ""));
        json_t *r = reply_of(eng, "t-reply", NULL);
        cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "ACCEPTED");
        cr_assert_str_eq(json_string_value(json_object_get(r, "reason")), "NONE");
        cr_assert_str_eq(json_string_value(json_object_get(r, "message")), "CREATED");
        cr_assert(json_is_null(json_object_get(r, "field")));
        cr_assert_eq(json_integer_value(json_object_get(r, "version")), 1);
        cr_assert_eq(json_integer_value(json_object_get(r, "replied_at")), T0 + 42);
        cr_assert_str_eq(json_string_value(json_object_get(r, "correlation_id")), "corr-1");
        cr_assert_str_eq(json_string_value(json_object_get(r, "task_id")), "t-reply");
        json_decref(r);

        ask(ALICE, "UPDATE", "t-reply", 5, task_json("a", "ops", ""));
        r = reply_of(eng, "t-reply", NULL);
        cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "REJECTED");
        cr_assert_str_eq(json_string_value(json_object_get(r, "reason")), "CONFLICT");
        cr_assert_str_eq(json_string_value(json_object_get(r, "field")), "expected_version");
        cr_assert(json_is_null(json_object_get(r, "version")));
        cr_assert_str_eq(json_string_value(json_object_get(r, "message")), v.message);
        json_decref(r);

        /* no reply can carry an id that is not UTF-8 */
        tb_buf_t b = {0};
        cr_assert_not(tb_cmd_engine_reply(eng, "corr-\xff\xfe", "cmd-1", "t-reply", &v, &b));
        tb_buf_free(&b);
}

/* ---- hostile commands: refused before any event, naming the field --------------- */

/** A CREATE of a valid task whose member \p key is replaced by \p val (stolen). */
static void decide_hostile(const char *task_id, const char *key, json_t *val) {
        json_t *c = command("CREATE", task_id, -1, task_json("n", "ops", ""));
        if (key)
                json_object_set_new(c, key, val);
        decide_on(eng, c, ALICE, part_of(task_id));
}

static void expect_hostile_refused(const char *field, const char *needle) {
        expect_rejected("INVALID_ARGUMENT", field);
        cr_assert(strstr(v.message, needle), "'%s' not in: %s", needle, v.message);
        cr_assert_eq(v.event.len, 0);
        cr_assert_eq(tb_cmd_engine_task_count(eng), 0, "a hostile command changed the state");
        /* the reply is sendable and echoes no hostile id */
        json_t *r = reply_of(eng, "", NULL);
        cr_assert_str_eq(json_string_value(json_object_get(r, "status")), "REJECTED");
        cr_assert_str_eq(json_string_value(json_object_get(r, "field")), field);
        json_decref(r);
}

Test(commands_engine, hostile_commands_name_the_field) {
        char big[8001];
        memset(big, 'a', 8000);
        big[8000] = '\0';
        decide_hostile(big, NULL, NULL);
        expect_hostile_refused("task_id", "task_id: 8000 characters, at most 128 allowed "
                                          "([A-Za-z0-9._:-])");
        decide_hostile("a/b", NULL, NULL);
        expect_hostile_refused("task_id", "'/' at position 2");
        decide_hostile("a b", NULL, NULL);
        expect_hostile_refused("task_id", "a space at position 2");
        decide_hostile("ab", "task_id", json_stringn("a\0b", 3));
        expect_hostile_refused("task_id", "a NUL byte at position 2");
        decide_hostile("t-h", "command_id", json_string(big));
        expect_hostile_refused("command_id", "command_id: 8000 characters, at most 128");
        decide_hostile("t-h", "command_id", json_stringn("c\0d", 3));
        expect_hostile_refused("command_id", "a NUL byte");
        decide_hostile("t-h", "correlation_id", json_string("caf\xc3\xa9"));
        expect_hostile_refused("correlation_id", "byte 0xC3");
        decide_hostile("t-h", "expected_version", json_integer(-3));
        expect_hostile_refused("expected_version", "-3 is negative");
        /* year 99999 and before 1970 */
        decide_hostile("t-h", "requested_at", json_integer(INT64_C(3093527980800000)));
        expect_hostile_refused("requested_at", "is not a time");
        decide_hostile("t-h", "requested_at", json_integer(-1));
        expect_hostile_refused("requested_at", "is not a time");

        /* the task's JSON text */
        size_t n = 10 * 1024 * 1024;
        char *huge = malloc(n + 1);
        cr_assert_not_null(huge);
        memset(huge, ' ', n);
        huge[0] = '{';
        huge[n - 1] = '}';
        huge[n] = '\0';
        decide_hostile("t-h", "task", json_string(huge));
        expect_hostile_refused("task", "10485760 bytes of JSON");
        free(huge);
        n = 10000;
        char *deep = malloc(2 * n + 1);
        cr_assert_not_null(deep);
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        deep[2 * n] = '\0';
        decide_hostile("t-h", "task", json_string(deep));
        expect_hostile_refused("task", "nested more than 32 levels");
        free(deep);
        const char *t = "{\"name\": \"n\", \"script\": \"x\", \"security_group\": \"ops\", "
                        "\"schedule\": {\"every\": \"1h\"}}";
        char withnul[256];
        size_t tl = strlen(t);
        memcpy(withnul, t, tl);
        memcpy(withnul + tl, "\0{}", 3);
        decide_hostile("t-h", "task", json_stringn(withnul, tl + 3));
        expect_hostile_refused("task", "a NUL byte at byte");
        /* escaped NUL, controls and impossible values: the validator names the field */
        decide_hostile("t-h", "task", json_string(task_json("a\\u0000b", "ops", "")));
        expect_hostile_refused("name", "NUL");
        decide_hostile("t-h", "task",
                       json_string(task_json("n", "ops", ", \"labels\": {\"k\": \"a\\u0000\"}")));
        expect_hostile_refused("labels.k", "NUL");
        decide_hostile("t-h", "task",
                       json_string("{\"name\": \"n\", \"script\": \"x\", \"security_group\": "
                                   "\"ops\", \"schedule\": {\"every\": \"-PT5S\"}}"));
        expect_hostile_refused("schedule.every", "schedule.every");
        decide_hostile("t-h", "task",
                       json_string("{\"name\": \"n\", \"script\": \"x\", \"security_group\": "
                                   "\"ops\", \"schedule\": {\"once\": "
                                   "\"99999-01-01T00:00:00Z\"}}"));
        expect_hostile_refused("schedule.once", "schedule.once");

        /* and then a good one is accepted, built from the validated values */
        unsigned this_cmd = next_command;
        ask(ALICE, "CREATE", "t-after", -1, task_json("n", "ops", ""));
        expect_accepted(1, "CREATED");
        cr_assert_str_eq(evs("task_id"), "t-after");
        char want[48];
        snprintf(want, sizeof(want), "cmd-of-the-test-%u", this_cmd);
        cr_assert_str_eq(evs("command_id"), want);
}

Test(commands_engine, replies_echo_no_hostile_id) {
        char big[300];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        decide_hostile(big, NULL, NULL);
        expect_rejected("INVALID_ARGUMENT", "task_id");
        char err[512];
        tb_buf_t b = {0};
        json_t *r = NULL;
        cr_assert(tb_cmd_engine_reply(eng, "corr-1", "cmd with\ttab", big, &v, &b));
        cr_assert_eq(tb_serde_decode(b.data, b.len, TB_SCHEMA_TASK_REPLY, NULL, &r, err,
                                     sizeof(err)),
                     TB_OK, "%s", err);
        cr_assert_str_eq(json_string_value(json_object_get(r, "task_id")), "");
        cr_assert_str_eq(json_string_value(json_object_get(r, "command_id")), "");
        cr_assert_str_eq(json_string_value(json_object_get(r, "correlation_id")), "corr-1");
        json_decref(r);
        tb_buf_free(&b);
}

Test(commands_engine, undecodable_records_name_the_field) {
        tb_cmd_verdict_t u;
        memset(&u, 0, sizeof(u));
        tb_cmd_engine_undecodable(&u, "TaskCommand.task_id: string is not valid UTF-8 (at "
                                      "byte 12 of the message)");
        cr_assert_str_eq(u.reason, "INVALID_ARGUMENT");
        cr_assert_str_eq(u.field, "task_id");
        cr_assert(strstr(u.message, "not valid UTF-8") && strstr(u.message, "TaskCommand.avsc"),
                  "%s", u.message);
        tb_cmd_engine_undecodable(&u, "unknown schema fingerprint 0123456789abcdef: not one of "
                                      "the 7 known schemas");
        cr_assert_str_eq(u.field, "fingerprint");
        tb_cmd_engine_undecodable(&u, "message too short: 3 bytes");
        cr_assert_str_eq(u.field, "");
        tb_cmd_verdict_clear(&u);
}

/* ---- group quotas ------------------------------------------------------------------ */

static bool quota_fails;

/* ops: at most 2 live tasks; dev: one RUN_NOW per 2 s */
static tb_err_t env_group_quota(void *opaque, const char *group, tb_cmd_quota_t *q,
                                char *errstr, size_t errstr_size) {
        (void)opaque;
        if (quota_fails)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG, "database down");
        *q = (tb_cmd_quota_t){.max_tasks = !strcmp(group, "ops") ? 2 : -1,
                              .run_now_rate = !strcmp(group, "dev") ? 0.5 : -1};
        return TB_OK;
}

static void setup_quotas(void) {
        setup();
        tb_cmd_engine_destroy(eng);
        tb_cmd_env_t qenv = env;
        qenv.group_quota = env_group_quota;
        char errstr[1024];
        cr_assert_eq(tb_cmd_engine_new(conf, &qenv, &eng, errstr, sizeof(errstr)), TB_OK, "%s",
                     errstr);
        quota_fails = false;
}

TestSuite(commands_engine_quota, .init = setup_quotas, .fini = teardown);

Test(commands_engine_quota, max_tasks_counts_live_tasks_of_the_group) {
        ask(ALICE, "CREATE", "q-1", -1, task_json("a", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "CREATE", "q-2", -1, task_json("b", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "CREATE", "q-3", -1, task_json("c", "ops", ""));
        expect_rejected("FORBIDDEN", "max_tasks");
        cr_assert(strstr(v.message, "has 2 live tasks and its quota max_tasks is 2"), "%s",
                  v.message);
        cr_assert_eq(tb_cmd_engine_live_count(eng, "ops"), 2);
        ask(ALICE, "CREATE", "q-d", -1, task_json("d", "dev", ""));
        expect_accepted(1, "CREATED"); /* another group is not limited */
        tb_cmd_engine_commit(eng);

        /* a batch that deletes and creates, rolled back: the count comes back */
        ask(ALICE, "DELETE", "q-1", 1, NULL);
        expect_accepted(2, "DELETED");
        cr_assert_eq(tb_cmd_engine_live_count(eng, "ops"), 1);
        ask(ALICE, "CREATE", "q-3", -1, task_json("c", "ops", ""));
        expect_accepted(1, "CREATED");
        tb_cmd_engine_rollback(eng);
        cr_assert_eq(tb_cmd_engine_live_count(eng, "ops"), 2);

        /* moving a task into the full group is refused; within it, an update is not */
        ask(ALICE, "UPDATE", "q-d", 1, task_json("d", "ops", ""));
        expect_rejected("FORBIDDEN", "max_tasks");
        ask(ALICE, "UPDATE", "q-2", 1, task_json("b2", "ops", ""));
        expect_accepted(2, "UPDATED");
        /* a delete makes room */
        ask(ALICE, "DELETE", "q-1", 1, NULL);
        expect_accepted(2, "DELETED");
        ask(ALICE, "UPDATE", "q-d", 1, task_json("d", "ops", ""));
        expect_accepted(2, "UPDATED");
        cr_assert_eq(tb_cmd_engine_live_count(eng, "ops"), 2);
        cr_assert_eq(tb_cmd_engine_live_count(eng, "dev"), 0);
        tb_cmd_engine_commit(eng);

        /* the count follows the partitions held */
        tb_cmd_engine_drop_partition(eng, part_of("q-2"));
        cr_assert_eq(tb_cmd_engine_live_count(eng, "ops"), part_of("q-d") == part_of("q-2") ? 0 : 1);

        /* quotas that cannot be read refuse rather than let a create past them */
        quota_fails = true;
        ask(ALICE, "CREATE", "q-9", -1, task_json("z", "ops", ""));
        expect_rejected("INTERNAL", "");
        cr_assert(strstr(v.message, "database down"), "%s", v.message);
}

Test(commands_engine_quota, run_now_rate_per_group) {
        ask(BOB, "CREATE", "r-1", -1, task_json("a", "dev", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "CREATE", "r-2", -1, task_json("b", "dev", ""));
        expect_accepted(1, "CREATED");
        ask(BOB, "RUN_NOW", "r-1", -1, NULL);
        expect_accepted(2, "RUN_REQUESTED");
        /* the group's rate, whoever asks, whatever the task */
        ask(ALICE, "RUN_NOW", "r-2", -1, NULL);
        expect_rejected("THROTTLED", "run_now_rate");
        cr_assert(strstr(v.message, "retry after 2000 ms"), "%s", v.message);
        clock_us += 1999000;
        ask(ALICE, "RUN_NOW", "r-2", -1, NULL);
        expect_rejected("THROTTLED", "run_now_rate");
        cr_assert(strstr(v.message, "retry after 1 ms"), "%s", v.message);
        clock_us += 1000;
        ask(ALICE, "RUN_NOW", "r-2", -1, NULL);
        expect_accepted(2, "RUN_REQUESTED");
        /* other commands are not counted */
        ask(ALICE, "PAUSE", "r-2", -1, NULL);
        expect_accepted(3, "PAUSED");
}

/* ---- memory bounded by the live tasks: deleted tasks evicted --------------------- */

#if defined(__SANITIZE_ADDRESS__)
/* ASan's allocator (sanitizer/allocator_interface.h, not installed here) */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) {
        return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
static size_t heap_in_use(void) {
        return mallinfo2().uordblks;
}
#endif

/* The projection as the role asks it (env.id_used): the ids it has events
 * of. A test double for task_history, fed by project_deleted(). */
static json_t *projected_ids;
static long long projected_bytes; /* what the double itself took of the heap */
static bool id_used_fails;

static tb_err_t env_id_used(void *opaque, const char *id, bool *used, char *group,
                            size_t group_size, char *errstr, size_t errstr_size) {
        (void)opaque;
        if (id_used_fails)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "no PostgreSQL connection within 5 s");
        const json_t *g = json_object_get(projected_ids, id);
        *used = g != NULL;
        snprintf(group, group_size, "%s", g ? json_string_value(g) : "");
        return TB_OK;
}

static void setup_evicting(void) {
        setup_with(conf_eu);
        tb_cmd_engine_destroy(eng);
        tb_cmd_env_t e = env;
        e.id_used = env_id_used;
        char errstr[1024];
        cr_assert_eq(tb_cmd_engine_new(conf, &e, &eng, errstr, sizeof(errstr)), TB_OK, "%s",
                     errstr);
        projected_ids = json_object();
        id_used_fails = false;
}

static void teardown_evicting(void) {
        teardown();
        json_decref(projected_ids);
        projected_ids = NULL;
}

/* What the role does once the projection holds the deletions: every deleted
 * task the state holds goes to the projection's ids and is evicted.
 * @returns how many were evicted. */
static size_t project_deleted(void) {
        const tb_cmd_task_t *del[512];
        size_t total = 0, n;
        while ((n = tb_cmd_engine_deleted(eng, del, TB_ARRAY_LEN(del))) > 0) {
                char ids[512][64], groups[512][TB_TASK_GROUP_MAX + 1];
                int64_t vers[512];
                for (size_t i = 0; i < n; i++) {
                        snprintf(ids[i], sizeof(ids[i]), "%s", del[i]->id);
                        snprintf(groups[i], sizeof(groups[i]), "%s",
                                 del[i]->group ? del[i]->group : "");
                        vers[i] = del[i]->version;
                }
                for (size_t i = 0; i < n; i++) {
                        size_t h = heap_in_use();
                        json_object_set_new(projected_ids, ids[i], json_string(groups[i]));
                        projected_bytes += (long long)heap_in_use() - (long long)h;
                        cr_assert(tb_cmd_engine_evict(eng, ids[i], vers[i]), "%s", ids[i]);
                }
                total += n;
        }
        return total;
}

/* n create+delete pairs of new ids (prefix, from number first), committed
 * every 100 commands like the role's batches, evicted every 1,000 pairs. */
static void create_delete_pairs(const char *prefix, int first, int n) {
        char id[64];
        for (int i = first; i < first + n; i++) {
                snprintf(id, sizeof(id), "%s-%d", prefix, i);
                ask(ALICE, "CREATE", id, -1, task_json("churn", "ops", ""));
                cr_assert_null(v.reason, "%s: %s", id, v.message);
                ask(ALICE, "DELETE", id, 1, NULL);
                cr_assert_null(v.reason, "%s: %s", id, v.message);
                if ((i + 1) % 50 == 0)
                        tb_cmd_engine_commit(eng);
                if ((i + 1) % 1000 == 0)
                        project_deleted();
                clock_us += 1000000; /* the rate limit refills */
                clock_ms += 1;
        }
        tb_cmd_engine_commit(eng);
        project_deleted();
        forget_last();
}

TestSuite(commands_engine_evict, .init = setup_evicting, .fini = teardown_evicting);

Test(commands_engine_evict, memory_after_100000_create_delete_pairs_back_near_its_start,
     .timeout = 900) {
        /* ten tasks stay live throughout */
        char id[64];
        for (int i = 0; i < 10; i++) {
                snprintf(id, sizeof(id), "live-%d", i);
                ask(ALICE, "CREATE", id, -1, task_json("stays", "ops", ""));
                expect_accepted(1, "CREATED");
        }
        tb_cmd_engine_commit(eng);
        /* The replay guard remembers the last TB_CMD_SEEN_MAX signatures and
         * command ids whatever happens to tasks (two per command): fill it
         * first, so what is measured is the state map alone. */
        create_delete_pairs("warm", 0, TB_CMD_SEEN_MAX / 4 + 1000);
        size_t tasks0 = tb_cmd_engine_task_count(eng), heap0 = heap_in_use();
        projected_bytes = 0;
        cr_assert_eq(tasks0, 10);

        /* while deletions are not projected the state holds them */
        for (int i = 0; i < 3; i++) {
                snprintf(id, sizeof(id), "held-%d", i);
                ask(ALICE, "CREATE", id, -1, task_json("x", "ops", ""));
                ask(ALICE, "DELETE", id, 1, NULL);
        }
        tb_cmd_engine_commit(eng);
        cr_assert_eq(tb_cmd_engine_deleted_count(eng), 3);
        cr_assert_eq(tb_cmd_engine_task_count(eng), 13);
        project_deleted();

        create_delete_pairs("churn", 0, 100000);
        size_t tasks1 = tb_cmd_engine_task_count(eng), heap1 = heap_in_use();
        /* the projection's double (every id ever deleted) is not the engine's */
        long long grew = (long long)heap1 - (long long)heap0 - projected_bytes;
        cr_log_info("state: %zu tasks before, %zu after 100,000 create+delete pairs; engine "
                    "heap %+lld bytes (heap %zu -> %zu, of which the test's projection double "
                    "%lld)",
                    tasks0, tasks1, grew, heap0, heap1, projected_bytes);
        cr_assert_eq(tasks1, tasks0, "the state holds the live tasks only");
        cr_assert_eq(tb_cmd_engine_deleted_count(eng), 0);
        /* Without eviction the 100,000 deleted tasks held ~20 MB. The bound
         * leaves room for the allocator's own bookkeeping and the json
         * objects of the replay guard (fixed count, varying key lengths). */
        cr_assert_lt(grew, 1024 * 1024, "the engine's heap grew by %lld bytes", grew);
        /* the live tasks are untouched */
        ask(ALICE, "PAUSE", "live-3", 1, NULL);
        expect_accepted(2, "PAUSED");
}

Test(commands_engine_evict, an_evicted_deleted_task_is_answered_as_before) {
        ask(ALICE, "CREATE", "t-gone", -1, task_json("gone", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "DELETE", "t-gone", 1, NULL);
        expect_accepted(2, "DELETED");
        /* not before its batch committed: a rollback would need it */
        cr_assert_not(tb_cmd_engine_evict(eng, "t-gone", 2));
        tb_cmd_engine_commit(eng);
        cr_assert_not(tb_cmd_engine_evict(eng, "t-gone", 1), "only at its deleted version");
        ask(ALICE, "CREATE", "t-live", -1, task_json("live", "ops", ""));
        tb_cmd_engine_commit(eng);
        cr_assert_not(tb_cmd_engine_evict(eng, "t-live", 1), "a live task is never evicted");
        cr_assert_eq(project_deleted(), 1);
        cr_assert_null(state("t-gone"));
        cr_assert_eq(tb_cmd_engine_task_count(eng), 1);

        /* every command answers as when the deleted state was held */
        const char *types[] = {"UPDATE", "PAUSE", "RESUME", "RUN_NOW", "DELETE"};
        for (size_t i = 0; i < TB_ARRAY_LEN(types); i++) {
                ask(ALICE, types[i], "t-gone", -1,
                    !strcmp(types[i], "UPDATE") ? task_json("back", "ops", "") : NULL);
                expect_rejected("NOT_FOUND", "task_id");
        }
        ask(ALICE, "CREATE", "t-gone", -1, task_json("again", "ops", ""));
        expect_rejected("CONFLICT", "task_id");
        cr_assert(strstr(v.message, "already exists (deleted)"), "%s", v.message);
        /* bob, not in the group, learns the same "taken" */
        ask(BOB, "CREATE", "t-gone", -1, task_json("again", "dev", ""));
        expect_rejected("CONFLICT", "task_id");
        /* an unknown id is created; a failing lookup is an INTERNAL answer,
         * never a silent acceptance */
        id_used_fails = true;
        ask(ALICE, "CREATE", "t-new", -1, task_json("new", "ops", ""));
        expect_rejected("INTERNAL", "");
        cr_assert(strstr(v.message, "t-new") && strstr(v.message, "retry"), "%s", v.message);
        id_used_fails = false;
        ask(ALICE, "CREATE", "t-new", -1, task_json("new", "ops", ""));
        expect_accepted(1, "CREATED");
        /* a rolled back DELETE leaves nothing to evict */
        tb_cmd_engine_commit(eng);
        ask(ALICE, "DELETE", "t-new", 1, NULL);
        expect_accepted(2, "DELETED");
        tb_cmd_engine_rollback(eng);
        cr_assert_eq(tb_cmd_engine_deleted_count(eng), 0);
        cr_assert_not(state("t-new")->deleted);
}

/* The state of a snapshot (live tasks only, as the projection's tasks table
 * holds them before an offset) plus the events after it equals the state of
 * every event from the first one. */
Test(commands_engine_evict, snapshot_plus_tail_equals_the_events_from_zero) {
        enum { TASKS = 40 };
        json_t *log = json_array(); /* every event, in order */
        char id[32];
        for (int round = 0; round < 4; round++)
                for (int i = 0; i < TASKS; i++) {
                        snprintf(id, sizeof(id), "t-snap-%d", i);
                        const tb_cmd_task_t *s = state(id);
                        if (!s && round == 0)
                                ask(ALICE, "CREATE", id, -1, task_json("s", "ops", ""));
                        else if (s && !s->deleted && (i + round) % 5 == 0)
                                ask(ALICE, "DELETE", id, -1, NULL);
                        else if (s && !s->deleted && (i + round) % 2)
                                ask(ALICE, "PAUSE", id, -1, NULL);
                        else if (s && !s->deleted)
                                ask(ALICE, "UPDATE", id, -1,
                                    task_json(round % 2 ? "odd" : "even",
                                              i % 3 ? "ops" : "dev", ""));
                        else
                                continue;
                        if (!v.reason)
                                json_array_append(log, ev);
                        clock_ms += 1000;
                }
        tb_cmd_engine_commit(eng);
        size_t total = json_array_size(log);
        for (size_t x = 0; x <= total; x += total / 7 + 1) {
                /* from zero */
                tb_cmd_engine_t *zero = engine_new(conf), *snap = engine_new(conf);
                for (size_t k = 0; k < total; k++)
                        tb_cmd_engine_apply_event(zero, 0, json_array_get(log, k));
                /* the projection before x: the newest state of each task, none
                 * for a deleted one, then the events from x on */
                tb_cmd_engine_t *proj = engine_new(conf);
                for (size_t k = 0; k < x; k++)
                        tb_cmd_engine_apply_event(proj, 0, json_array_get(log, k));
                for (int i = 0; i < TASKS; i++) {
                        snprintf(id, sizeof(id), "t-snap-%d", i);
                        const tb_cmd_task_t *p = tb_cmd_engine_get(proj, id);
                        if (p && !p->deleted)
                                tb_cmd_engine_load_task(snap, 0, id, p->version, p->epoch,
                                                        json_deep_copy(p->task), p->created_at,
                                                        p->created_by);
                }
                tb_cmd_engine_destroy(proj);
                for (size_t k = x; k < total; k++)
                        tb_cmd_engine_apply_event(snap, 0, json_array_get(log, k));
                for (int i = 0; i < TASKS; i++) {
                        snprintf(id, sizeof(id), "t-snap-%d", i);
                        const tb_cmd_task_t *a = tb_cmd_engine_get(zero, id);
                        const tb_cmd_task_t *b = tb_cmd_engine_get(snap, id);
                        cr_assert_not_null(a);
                        if (a->deleted) {
                                /* gone, or held deleted: both answer the same */
                                cr_assert(!b || b->deleted, "%s deleted, snapshot %zu", id, x);
                                continue;
                        }
                        cr_assert_not_null(b, "%s live, missing from snapshot %zu", id, x);
                        cr_assert_eq(a->version, b->version);
                        cr_assert_eq(a->epoch, b->epoch);
                        cr_assert_eq(a->created_at, b->created_at);
                        cr_assert_str_eq(a->created_by, b->created_by);
                        cr_assert_str_eq(a->group, b->group);
                        cr_assert(json_equal(a->task, b->task), "%s: task differs at %zu", id,
                                  x);
                }
                tb_cmd_engine_destroy(zero);
                tb_cmd_engine_destroy(snap);
        }
        json_decref(log);
}

/* ---- RUN_NOW parameter values -------------------------------------------- */

/** A RUN_NOW of \p task_id with TaskCommand.params \p params (JSON text). */
static const tb_cmd_verdict_t *run_now_with(const char *task_id, const char *params) {
        json_t *c = command("RUN_NOW", task_id, -1, NULL);
        json_object_set_new(c, "params", json_loads(params, 0, NULL));
        return decide_on(eng, c, ALICE, part_of(task_id));
}

Test(commands_engine, run_now_params_are_checked_and_filled_into_run_params) {
        ask(ALICE, "CREATE", "t-par", 0,
            task_json("deploy", "ops",
                      ", \"parameters\": [{\"name\": \"ENV\", \"allowed\": [\"dev\", \"prod\"], "
                      "\"default\": \"dev\"}, {\"name\": \"N\", \"type\": \"INT\"}]"));
        expect_accepted(1, "CREATED");
        cr_assert_eq(json_array_size(json_object_get(ev_task(), "parameters")), 2,
                     "the declaration is in the event's TaskSpec");

        run_now_with("t-par", "{\"N\": \"5\"}");
        expect_accepted(2, "RUN_REQUESTED");
        json_t *want = json_pack("{s:s, s:s}", "ENV", "dev", "N", "5");
        cr_assert(json_equal(json_object_get(ev, "run_params"), want), "run_params %s",
                  json_dumps(json_object_get(ev, "run_params"), JSON_COMPACT));
        json_decref(want);

        run_now_with("t-par", "{\"N\": \"5\", \"ENV\": \"qa\"}");
        expect_rejected("INVALID_ARGUMENT", "params.ENV");
        cr_assert(strstr(v.message, "allowed: dev, prod"), "%s", v.message);
        run_now_with("t-par", "{}");
        expect_rejected("INVALID_ARGUMENT", "params.N");
        run_now_with("t-par", "{\"N\": \"x\"}");
        expect_rejected("INVALID_ARGUMENT", "params.N");
        run_now_with("t-par", "{\"N\": \"1\", \"M\": \"1\"}");
        expect_rejected("INVALID_ARGUMENT", "params.M");
        cr_assert_eq(state("t-par")->version, 2, "a refused run-now writes nothing");

        /* values only on a RUN_NOW */
        json_t *c = command("PAUSE", "t-par", -1, NULL);
        json_object_set_new(c, "params", json_pack("{s:s}", "N", "1"));
        decide_on(eng, c, ALICE, part_of("t-par"));
        expect_rejected("INVALID_ARGUMENT", "params");

        /* a task without parameters: a run-now with none has {} */
        ask(ALICE, "CREATE", "t-nopar", 0, task_json("plain", "ops", ""));
        expect_accepted(1, "CREATED");
        ask(ALICE, "RUN_NOW", "t-nopar", -1, NULL);
        expect_accepted(2, "RUN_REQUESTED");
        cr_assert_eq(json_object_size(json_object_get(ev, "run_params")), 0);
}
