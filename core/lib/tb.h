/**
 * @file tb.h
 * @brief taskbus private umbrella header: the one error convention,
 *        logging, time helpers and small utilities shared by every
 *        subsystem in core/.
 *
 * Conventions (see docs/architecture.md):
 *  - Every public function is named tb_<subsystem>_<verb>.
 *  - Functions that can fail return tb_err_t (TB_OK == 0) and take a
 *    caller-owned `char *errstr, size_t errstr_size` that receives a
 *    human-readable message naming the field / key / file:line at fault.
 *  - Ownership is stated in each function's doc comment.
 */
#ifndef TB_H
#define TB_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>

/** Error codes. 0 is success; everything else carries an errstr. */
typedef enum tb_err {
        TB_OK = 0,
        TB_ERR_INVALID,     /**< bad input: a user can fix it */
        TB_ERR_NOT_FOUND,
        TB_ERR_CONFLICT,    /**< version / uniqueness conflict */
        TB_ERR_FORBIDDEN,
        TB_ERR_UNAUTHENTICATED,
        TB_ERR_THROTTLED,
        TB_ERR_IO,          /**< system call / file failure */
        TB_ERR_KAFKA,       /**< librdkafka reported an error */
        TB_ERR_PG,          /**< libpq reported an error */
        TB_ERR_TIMEOUT,
        TB_ERR_FENCED,      /**< a newer owner exists: stop using this handle */
        TB_ERR_NOMEM,
        TB_ERR_UNSUPPORTED,
        TB_ERR_INTERNAL,
} tb_err_t;

/** @returns a static, lower-case name for \p err ("invalid", "kafka"...). */
const char *tb_err_name(tb_err_t err);

/** Format into a caller-owned error buffer; always NUL-terminates.
 *  @returns \p err so that `return tb_seterr(...)` reads naturally. */
tb_err_t tb_seterr(char *errstr, size_t errstr_size, tb_err_t err,
                   const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* ---- logging ---------------------------------------------------------- */

typedef enum tb_log_level {
        TB_LOG_DEBUG = 0,
        TB_LOG_INFO,
        TB_LOG_WARN,
        TB_LOG_ERROR,
} tb_log_level_t;

/** Set the minimum level printed (default INFO). Thread-safe. */
void tb_log_set_level(tb_log_level_t level);
/** Parse "debug|info|warn|error"; @returns -1 if unknown. */
int tb_log_level_parse(const char *name);
/** Log one line to stderr: "<UTC time> <level> <subsystem>: message".
 *  @locality any thread. */
void tb_log(tb_log_level_t level, const char *subsys, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define tb_debug(sub, ...) tb_log(TB_LOG_DEBUG, sub, __VA_ARGS__)
#define tb_info(sub, ...)  tb_log(TB_LOG_INFO, sub, __VA_ARGS__)
#define tb_warn(sub, ...)  tb_log(TB_LOG_WARN, sub, __VA_ARGS__)
#define tb_error(sub, ...) tb_log(TB_LOG_ERROR, sub, __VA_ARGS__)

/* ---- time ---------------------------------------------------------------- */

/** Wall clock, milliseconds since the Unix epoch (UTC). */
int64_t tb_now_ms(void);
/** Monotonic clock in microseconds (for durations and timeouts). */
int64_t tb_mono_us(void);

/**
 * @brief Initialise \p cv on CLOCK_MONOTONIC, so that a step of the wall
 *        clock neither stretches nor cuts a timed wait on it. Wait on it with
 *        tb_cond_wait_ms() or pthread_cond_timedwait() and tb_mono_deadline().
 * @returns TB_OK, or TB_ERR_NOMEM when pthreads is out of resources (its only
 *          failure on Linux); nothing to destroy then.
 */
tb_err_t tb_cond_init_mono(pthread_cond_t *cv);
/** The CLOCK_MONOTONIC instant \p ms from now (a negative \p ms is now), as
 *  pthread_cond_timedwait() on a tb_cond_init_mono() condition wants it. */
struct timespec tb_mono_deadline(int64_t ms);
/**
 * @brief Wait on \p cv (made by tb_cond_init_mono(), \p mu held) for at most
 *        \p ms milliseconds; as with any condition wait, it may wake early.
 * @returns false when the time ran out, true when woken.
 */
bool tb_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
/** Format epoch milliseconds as RFC 3339 UTC ("2026-01-02T03:04:05.678Z";
 *  the fraction is omitted when zero). \p buf must hold 32 bytes. */
void tb_time_format(int64_t ms, char buf[32]);

/** The value of hex digit \p c (either case), or -1 when it is not one. */
int tb_hex_digit(int c);
/** Parse an RFC 3339 instant (with Z or a numeric offset) into epoch ms.
 *  @returns TB_ERR_INVALID with a message if malformed. */
tb_err_t tb_time_parse(const char *s, int64_t *ms, char *errstr,
                       size_t errstr_size);

/* ---- small utilities ----------------------------------------------------- */
/** What tb_file_read() allows of a file's permission bits. */
typedef enum {
        TB_FILE_PUBLIC,  /**< any mode (a certificate) */
        TB_FILE_SECRET,  /**< others' access refused, its group's warned about */
        TB_FILE_PRIVATE, /**< group's or others' access refused (a key of taskbus's own) */
} tb_file_access_t;

/**
 * Read all of the regular file \p path, of at most \p max bytes, which the
 * setting \p setting names and which holds \p what ("the secret", "the API's
 * private key"): every message names both, and one that the user can fix
 * ends with \p fix when the file cannot be opened. *\p out is a malloc'd,
 * NUL-terminated copy that the caller owns (explicit_bzero a secret before
 * freeing it), *\p out_len its length.
 * @returns TB_ERR_IO when the file cannot be opened or read, TB_ERR_INVALID
 *          when it is not a regular file, too large, or readable by others
 *          than \p access allows.
 */
tb_err_t tb_file_read(const char *setting, const char *path, const char *what, size_t max,
                      tb_file_access_t access, const char *fix, char **out, size_t *out_len,
                      char *errstr, size_t errstr_size);


/**
 * @brief Grow an array for appending: to twice *\p cap elements of
 *        \p elem_size bytes, or to \p first when it has none yet.
 * @returns the new array, *\p cap updated (the old pointer is gone, as with
 *          realloc()); or NULL when out of memory, \p arr and *\p cap untouched.
 */
void *tb_array_grow(void *arr, size_t *cap, size_t elem_size, size_t first);

/** Random UUID v4 string into \p out (37 bytes). Uses getrandom(2). */
void tb_uuid4(char out[37]);
/** Fill \p buf with \p len cryptographically random bytes. */
tb_err_t tb_random_bytes(void *buf, size_t len);
/** snprintf that never overflows; @returns true if it was truncated. */
bool tb_snprintf(char *buf, size_t size, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define TB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/** An edit distance between two names, for "did you mean" hints. */
typedef size_t tb_name_distance_fn(const char *a, const char *b);

/**
 * For "unknown name" messages: write the \p n valid \p names into \p list
 * as "a, b, c" (cut short when it does not fit) and find the one nearest to
 * \p key.
 * @returns the first of the names at the smallest \p distance from \p key
 *          when that is at most \p max_distance, else NULL.
 */
const char *tb_names_nearest(const char *key, const char *const *names, size_t n,
                             tb_name_distance_fn *distance, size_t max_distance,
                             char *list, size_t list_size);

/** A growable byte buffer. Zero-initialise; free with tb_buf_free(). */
typedef struct tb_buf {
        char *data;
        size_t len;
        size_t cap;
} tb_buf_t;

/** Append \p len bytes; @returns TB_ERR_NOMEM on allocation failure. */
tb_err_t tb_buf_append(tb_buf_t *buf, const void *data, size_t len);
/** Append formatted text (not NUL-counted in len, but kept NUL-terminated). */
tb_err_t tb_buf_printf(tb_buf_t *buf, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/** Release the storage and zero the struct. */
void tb_buf_free(tb_buf_t *buf);

#endif /* TB_H */
