/**
 * @file support.h
 * @brief Helpers shared by the Criterion tests: locating the build and the
 *        stack the tests run against, running commands, waiting for
 *        conditions (never fixed sleeps).
 */
#ifndef TB_TEST_SUPPORT_H
#define TB_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tb.h" /* tb_buf_t */

/** $TB_BUILD_DIR (set by ctest), or "build". */
const char *tbt_build_dir(void);
/** $TB_SOURCE_DIR (set by ctest), or ".". */
const char *tbt_source_dir(void);
/** Environment variable or a default. */
const char *tbt_env(const char *name, const char *dflt);

/**
 * The PostgreSQL server the tests use, as a URL without a database
 * ("postgresql://taskbus@127.0.0.1:55433"): $TB_TEST_PG, else $TASKBUS_PG
 * (set by tools/test) without its database, else the dev stack's.
 * @returns \p buf.
 */
const char *tbt_pg_server(char *buf, size_t size);

/**
 * Run a shell command, capturing stdout+stderr (merged) into a malloc'd
 * string (*out, caller frees; may be NULL). @returns the exit status, or
 * -1 if it could not run or was killed by a signal.
 */
int tbt_run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Poll \p cond every 50 ms until it is true or \p timeout_ms passes. */
bool tbt_wait_until(bool (*cond)(void *), void *arg, int timeout_ms);

/** Write \p text to a new temp file; @returns its malloc'd path. */
char *tbt_write_temp(const char *suffix, const char *text);

/** A TCP port of 127.0.0.1 free right now (for a daemon's api.listen). */
int tbt_free_port(void);

/** A tbt_wait_until() condition: does an HTTP server answer /healthz on
 *  127.0.0.1, port *(int *)\p port? */
bool tbt_http_up(void *port);

/** Read up to \p max records written as hex, one a line ('#' lines are
 *  comments), from \p rel under the source tree (tests/data/...) into
 *  \p out (caller frees each with tb_buf_free()). @returns how many; 0 if
 *  the file cannot be read. */
size_t tbt_hex_records(const char *rel, tb_buf_t *out, size_t max);

#endif
