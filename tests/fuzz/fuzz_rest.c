/**
 * @file fuzz_rest.c
 * @brief libFuzzer target: a REST request body taken the way POST /v1/tasks
 *        takes it (json_loadb with JSON_REJECT_DUPLICATES, object only),
 *        validated by tb_task_validate() with a fixed context, then carried
 *        to the Avro TaskSpec, encoded inside a TaskEvent, decoded and
 *        converted back. The same bytes, NUL-terminated, are also fed to
 *        the opaque list cursor decoder of api_tasks.c.
 *
 * Invariants checked (a violation abort()s, so libFuzzer reports it):
 *  - a body the validator accepts has a normalized form that validates to
 *    itself (idempotence: a GET body can be PUT back unchanged);
 *  - the normalized task converts to a TaskSpec that the serde encodes,
 *    decodes, and tb_task_from_spec() turns back into the same task;
 *  - a cursor that parses has the documented shape.
 *
 * The cursor parser is file-local to core/roles/api/tasks.c, so that file is
 * compiled into this harness: its definitions take the place of the copy
 * in libtbcore.a (the linker never pulls api_tasks.o, whose every symbol
 * is then already defined), and nothing in core needed a test-only export.
 */
#include "api/tasks.c"

#include "serde/serde.h"

#include <stdio.h>
#include <stdlib.h>

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
        char cur[512], ts[40], id[200], raw[64];
        if (size >= sizeof(cur))
                size = sizeof(cur) - 1;
        memcpy(cur, data, size);
        cur[size] = '\0';
        if (tb_api_cursor_parse(cur, ts, id)) {
                if (strlen(ts) != 27 || ts[26] != 'Z' || !tb_api_id_ok(id))
                        tb_fuzz_fail("cursor parsed into a malformed keyset", NULL, NULL);
        }
        /* the history cursor decodes into a 64-byte buffer */
        ssize_t n = tb_api_unb64url(cur, raw, sizeof(raw));
        if (n >= (ssize_t)sizeof(raw))
                tb_fuzz_fail("unb64url overran its buffer", NULL, NULL);
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
