/**
 * @file fuzz_rest.c
 * @brief libFuzzer target: a REST request body taken the way POST /v1/tasks
 *        takes it (json_loadb with JSON_REJECT_DUPLICATES, object only),
 *        validated by tb_task_validate() with a fixed context, then carried
 *        to the Avro TaskSpec, encoded inside a TaskEvent, decoded and
 *        converted back. The same bytes, NUL-terminated, are also fed to
 *        the decoder of the API's keyset cursor (api/cursor.h) for each list.
 *
 * Invariants checked (a violation abort()s, so libFuzzer reports it):
 *  - a body the validator accepts has a normalized form that validates to
 *    itself (idempotence: a GET body can be PUT back unchanged);
 *  - the normalized task converts to a TaskSpec that the serde encodes,
 *    decodes, and tb_task_from_spec() turns back into the same task;
 *  - a cursor that decodes is of the list asked for, has its list's shape,
 *    decodes for that list only, and encodes back to the very same token
 *    (one token per keyset); a refused one says why.
 *
 * Everything is reached through headers: the harness links tbroles like
 * any other program.
 */
#include "api/cursor.h"
#include "api/util.h"
#include "serde/serde.h"
#include "task/task.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 2026-01-01T00:00:00Z: fixed so that a run is reproducible. */
#define TB_FUZZ_NOW_MS INT64_C(1767225600000)
#define TB_FUZZ_DAY_MS INT64_C(86400000)

static void tb_fuzz_fail(const char *what, const json_t *a, const json_t *b) {
        char *da = a ? json_dumps(a, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        char *db = b ? json_dumps(b, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "fuzz_rest: %s\n  a: %s\n  b: %s\n", what, da ? da : "(none)",
                db ? db : "(none)");
        free(da);
        free(db);
        abort();
}

static void tb_fuzz_cursor(const uint8_t *data, size_t size) {
        static const tb_api_cursor_list_t lists[] = {TB_API_CURSOR_TASKS, TB_API_CURSOR_RUNS,
                                                     TB_API_CURSOR_HISTORY};
        char tok[512];
        int accepted = 0;
        if (size >= sizeof(tok))
                size = sizeof(tok) - 1;
        memcpy(tok, data, size);
        tok[size] = '\0';
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
                tb_api_cursor_t c;
                char err[256] = "", again[TB_API_CURSOR_TOKEN_MAX];
                if (tb_api_cursor_decode(tok, lists[i], &c, err, sizeof(err)) != TB_OK) {
                        if (!err[0])
                                tb_fuzz_fail("a refused cursor has no error message", NULL, NULL);
                        continue;
                }
                accepted++;
                if (c.list != lists[i] || strlen(c.key) > TB_API_CURSOR_KEY_MAX ||
                    strlen(c.id) > TB_API_CURSOR_ID_MAX)
                        tb_fuzz_fail("cursor decoded out of bounds", NULL, NULL);
                bool shaped = c.list == TB_API_CURSOR_HISTORY
                                      ? !c.id[0]
                                      : tb_api_id_ok(c.id) &&
                                                (c.list != TB_API_CURSOR_TASKS ||
                                                 (strlen(c.key) == 27 && c.key[26] == 'Z'));
                if (!shaped)
                        tb_fuzz_fail("cursor decoded into a malformed keyset", NULL, NULL);
                if (tb_api_cursor_encode(&c, again, err, sizeof(err)) != TB_OK ||
                    strcmp(again, tok))
                        tb_fuzz_fail("a decoded cursor does not encode back to its token", NULL,
                                     NULL);
        }
        if (accepted > 1)
                tb_fuzz_fail("one cursor decodes for two lists", NULL, NULL);
}

/** Spec -> TaskEvent -> Avro -> TaskEvent -> spec; returns the decoded
 *  spec (new ref) or aborts. */
static json_t *tb_fuzz_serde_round_trip(const json_t *spec) {
        char errstr[512];
        json_t *ev = json_pack("{ss ss sI ss sI ss ss s[] sO sI ss sI}", "event_id", "e1",
                               "task_id", "t1", "version", (json_int_t)1, "type", "CREATED",
                               "at", (json_int_t)TB_FUZZ_NOW_MS, "actor", "alice",
                               "command_id", "", "changed_fields", "task", spec,
                               "created_at", (json_int_t)TB_FUZZ_NOW_MS, "created_by",
                               "alice", "epoch", (json_int_t)0);
        if (!ev)
                tb_fuzz_fail("json_pack of the TaskEvent failed", spec, NULL);
        tb_buf_t buf = {0};
        if (tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &buf, errstr, sizeof(errstr))) {
                fprintf(stderr, "encode: %s\n", errstr);
                tb_fuzz_fail("a validated task's TaskEvent does not encode", spec, NULL);
        }
        json_t *back = NULL;
        tb_schema_id_t got = TB_SCHEMA_ANY;
        if (tb_serde_decode(buf.data, buf.len, TB_SCHEMA_ANY, &got, &back, errstr,
                            sizeof(errstr))) {
                fprintf(stderr, "decode: %s\n", errstr);
                tb_fuzz_fail("an encoded TaskEvent does not decode", spec, NULL);
        }
        if (got != TB_SCHEMA_TASK_EVENT || !json_equal(ev, back))
                tb_fuzz_fail("TaskEvent changed through Avro", ev, back);
        json_t *task = json_incref(json_object_get(back, "task"));
        json_decref(back);
        json_decref(ev);
        tb_buf_free(&buf);
        return task;
}

static void tb_fuzz_task(const uint8_t *data, size_t size) {
        static const tb_task_vctx_t v = {
                .now_ms = TB_FUZZ_NOW_MS,
                .user_id = "alice",
                .default_region = "local",
                .log_retention_default_ms = 30 * TB_FUZZ_DAY_MS,
                .log_retention_max_ms = 90 * TB_FUZZ_DAY_MS,
                .executors = NULL, /* as the API: the executor role checks names */
        };
        json_error_t je;
        json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
        json_t *norm = NULL, *again = NULL, *spec = NULL, *dspec = NULL, *back = NULL;
        if (!body || !json_is_object(body))
                goto out;
        tb_task_err_t te;
        memset(&te, 0, sizeof(te));
        tb_err_t e = tb_task_validate(body, &v, &norm, &te);
        if (e != TB_OK) {
                if (norm)
                        tb_fuzz_fail("a refused body still produced a task", body, norm);
                if (!te.message[0])
                        tb_fuzz_fail("a refused body has no error message", body, NULL);
                goto out;
        }
        if (!norm)
                tb_fuzz_fail("an accepted body produced no task", body, NULL);
        memset(&te, 0, sizeof(te));
        if (tb_task_validate(norm, &v, &again, &te) != TB_OK) {
                fprintf(stderr, "revalidate: %s: %s\n", te.field, te.message);
                tb_fuzz_fail("the normalized task is refused", body, norm);
        }
        if (!json_equal(norm, again))
                tb_fuzz_fail("normalizing twice changes the task", norm, again);
        if (!(spec = tb_task_to_spec(norm)))
                tb_fuzz_fail("tb_task_to_spec failed on a normalized task", norm, NULL);
        dspec = tb_fuzz_serde_round_trip(spec);
        if (!(back = tb_task_from_spec(dspec)))
                tb_fuzz_fail("tb_task_from_spec failed on a decoded spec", norm, dspec);
        if (!json_equal(norm, back))
                tb_fuzz_fail("task changed through TaskSpec and Avro", norm, back);
out:
        json_decref(back);
        json_decref(dspec);
        json_decref(spec);
        json_decref(again);
        json_decref(norm);
        json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        tb_fuzz_task(data, size);
        tb_fuzz_cursor(data, size);
        return 0;
}
