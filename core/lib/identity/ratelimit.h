/**
 * @file identity/ratelimit.h
 * @brief The rate limiter: a token bucket per key, in memory, thread-safe.
 *        The REST API and the commands role limit each user with it
 *        (api.rate, api.burst); it knows nothing of users: a key is a string.
 */
#ifndef TB_RATELIMIT_H
#define TB_RATELIMIT_H

#include "tb.h"

typedef struct tb_ratelimit tb_ratelimit_t;

/**
 * A token bucket per key: \p rate tokens/s, \p burst capacity. Buckets
 * that have refilled completely are forgotten (a full bucket is the same as
 * a new one), so memory follows the number of recently active keys.
 * @returns the limiter (caller frees with tb_ratelimit_free()), or NULL if
 *          \p rate is not > 0 and finite, \p burst < 1, or out of memory.
 */
tb_ratelimit_t *tb_ratelimit_new(double rate, int64_t burst);
/** Free the limiter and its buckets; NULL allowed. */
void tb_ratelimit_free(tb_ratelimit_t *rl);
/** @returns how many buckets are held right now (for metrics and tests).
 *  @locality any thread. */
size_t tb_ratelimit_size(tb_ratelimit_t *rl);
/** Forget every bucket that is full again at monotonic time \p now_us
 *  (tb_ratelimit_take() also does this now and then on its own shard; call
 *  this from a periodic timer to bound memory after a burst of keys).
 *  @returns how many were dropped. @locality any thread. */
size_t tb_ratelimit_sweep(tb_ratelimit_t *rl, int64_t now_us);
/**
 * Take one token for \p key at monotonic time \p now_us. @returns true if
 * allowed; otherwise false and *\p retry_after_ms (may be NULL) says when a
 * token will be available. @locality any thread.
 */
bool tb_ratelimit_take(tb_ratelimit_t *rl, const char *key, int64_t now_us,
                       int64_t *retry_after_ms);

#endif
