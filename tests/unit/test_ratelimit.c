/**
 * @file test_ratelimit.c
 * @brief The per-key token bucket in core/lib/identity/ratelimit.c: burst then throttle,
 *        the refill rate, the exactness of retry-after, independent keys,
 *        eviction of idle buckets (and that it changes no decision), and
 *        thread safety. Time is passed in, so nothing here sleeps.
 */
#include "identity/ratelimit.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>

#define MS 1000LL /* microseconds per millisecond */
#define T0 (1000000LL * 1000) /* an arbitrary monotonic start: 1000 s */

Test(ratelimit, rejects_bad_parameters) {
        cr_assert_null(tb_ratelimit_new(0, 10));
        cr_assert_null(tb_ratelimit_new(-1, 10));
        cr_assert_null(tb_ratelimit_new(NAN, 10));
        cr_assert_null(tb_ratelimit_new(INFINITY, 10));
        cr_assert_null(tb_ratelimit_new(1, 0));
        tb_ratelimit_t *rl = tb_ratelimit_new(0.01, 1000000);
        cr_assert_not_null(rl);
        tb_ratelimit_free(rl);
        tb_ratelimit_free(NULL);
}

Test(ratelimit, burst_then_throttle) {
        tb_ratelimit_t *rl = tb_ratelimit_new(1.0, 5);
        int64_t retry = -1;
        for (int i = 0; i < 5; i++) {
                cr_assert(tb_ratelimit_take(rl, "alice", T0, &retry), "take %d of the burst", i);
                cr_assert_eq(retry, 0);
        }
        cr_assert_not(tb_ratelimit_take(rl, "alice", T0, &retry));
        cr_assert_eq(retry, 1000, "one token per second: retry after 1000 ms, got %lld",
                     (long long)retry);
        /* still throttled a moment later, with a correspondingly shorter wait */
        cr_assert_not(tb_ratelimit_take(rl, "alice", T0 + 400 * MS, &retry));
        cr_assert_eq(retry, 600);
        /* a NULL retry pointer is allowed */
        cr_assert_not(tb_ratelimit_take(rl, "alice", T0 + 400 * MS, NULL));
        tb_ratelimit_free(rl);
}

Test(ratelimit, refill_rate) {
        /* 10/s, no burst: over 10 s of attempts every millisecond exactly
         * one in 100 ms gets through */
        tb_ratelimit_t *rl = tb_ratelimit_new(10.0, 1);
        int allowed = 0;
        for (int64_t ms = 0; ms < 10000; ms++)
                allowed += tb_ratelimit_take(rl, "k", T0 + ms * MS, NULL);
        cr_assert_eq(allowed, 100, "allowed %d", allowed);
        tb_ratelimit_free(rl);

        /* with a burst of 20: the burst plus the rate */
        rl = tb_ratelimit_new(10.0, 20);
        allowed = 0;
        for (int64_t ms = 0; ms < 10000; ms++)
                allowed += tb_ratelimit_take(rl, "k", T0 + ms * MS, NULL);
        cr_assert_eq(allowed, 20 + 99, "allowed %d", allowed);
        tb_ratelimit_free(rl);

        /* a partly refilled bucket holds only what has accrued */
        rl = tb_ratelimit_new(2.0, 4);
        for (int i = 0; i < 4; i++)
                cr_assert(tb_ratelimit_take(rl, "k", T0, NULL));
        cr_assert_not(tb_ratelimit_take(rl, "k", T0, NULL));
        /* 1.5 s later: 3 tokens */
        for (int i = 0; i < 3; i++)
                cr_assert(tb_ratelimit_take(rl, "k", T0 + 1500 * MS, NULL), "token %d", i);
        cr_assert_not(tb_ratelimit_take(rl, "k", T0 + 1500 * MS, NULL));
        tb_ratelimit_free(rl);
}

Test(ratelimit, retry_after_is_exact) {
        const double rates[] = {0.3, 1.0, 3.0, 7.3, 50.0, 1000.0};
        const int64_t bursts[] = {1, 2, 5, 100};
        for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
                for (size_t b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
                        tb_ratelimit_t *rl = tb_ratelimit_new(rates[r], bursts[b]);
                        int64_t now = T0 + 123457; /* not on a millisecond boundary */
                        int64_t retry = 0;
                        while (tb_ratelimit_take(rl, "k", now, &retry))
                                ;
                        cr_assert_gt(retry, 0);
                        /* one millisecond early: still refused */
                        cr_assert_not(tb_ratelimit_take(rl, "k", now + (retry - 1) * MS, NULL),
                                      "rate %g burst %lld: allowed before retry_after %lld ms",
                                      rates[r], (long long)bursts[b], (long long)retry);
                        /* exactly at retry_after: allowed */
                        cr_assert(tb_ratelimit_take(rl, "k", now + retry * MS, NULL),
                                  "rate %g burst %lld: refused at retry_after %lld ms", rates[r],
                                  (long long)bursts[b], (long long)retry);
                        /* and the wait matches the rate (rounded up to the ms) */
                        int64_t expect = (int64_t)ceil(1000.0 / rates[r] - 1e-6);
                        cr_assert(retry == expect || retry == expect + 1 || retry == expect - 1,
                                  "rate %g: retry %lld, expected about %lld", rates[r],
                                  (long long)retry, (long long)expect);
                        tb_ratelimit_free(rl);
                }
        }
}

Test(ratelimit, keys_are_independent) {
        tb_ratelimit_t *rl = tb_ratelimit_new(1.0, 3);
        for (int i = 0; i < 3; i++)
                cr_assert(tb_ratelimit_take(rl, "alice", T0, NULL));
        cr_assert_not(tb_ratelimit_take(rl, "alice", T0, NULL));
        for (int i = 0; i < 3; i++)
                cr_assert(tb_ratelimit_take(rl, "bob", T0, NULL), "bob's token %d", i);
        cr_assert_not(tb_ratelimit_take(rl, "bob", T0, NULL));
        /* a key that is a prefix of another is a different key */
        cr_assert(tb_ratelimit_take(rl, "al", T0, NULL));
        cr_assert(tb_ratelimit_take(rl, "", T0, NULL));
        cr_assert_eq(tb_ratelimit_size(rl), 4);
        tb_ratelimit_free(rl);
}

Test(ratelimit, idle_buckets_are_evicted) {
        /* 100/s, burst 10: one take leaves a bucket full again after 10 ms */
        tb_ratelimit_t *rl = tb_ratelimit_new(100.0, 10);
        char key[32];
        for (int i = 0; i < 1000; i++) {
                snprintf(key, sizeof(key), "user-%d", i);
                cr_assert(tb_ratelimit_take(rl, key, T0, NULL));
        }
        cr_assert_eq(tb_ratelimit_size(rl), 1000);
        cr_assert_eq(tb_ratelimit_sweep(rl, T0 + 9 * MS), 0, "not yet full: kept");
        cr_assert_eq(tb_ratelimit_size(rl), 1000);
        cr_assert_eq(tb_ratelimit_sweep(rl, T0 + 10 * MS), 1000);
        cr_assert_eq(tb_ratelimit_size(rl), 0);

        /* a throttled key is never evicted early: eviction changes no decision */
        for (int i = 0; i < 10; i++)
                cr_assert(tb_ratelimit_take(rl, "busy", T0, NULL));
        int64_t retry = 0;
        cr_assert_not(tb_ratelimit_take(rl, "busy", T0, &retry));
        cr_assert_eq(retry, 10);
        cr_assert_eq(tb_ratelimit_sweep(rl, T0 + 50 * MS), 0);
        /* drained 10 at T0: 5 back after 50 ms, not 10 */
        int allowed = 0;
        while (tb_ratelimit_take(rl, "busy", T0 + 50 * MS, NULL))
                allowed++;
        cr_assert_eq(allowed, 5);
        tb_ratelimit_free(rl);
}

Test(ratelimit, take_evicts_on_its_own) {
        tb_ratelimit_t *rl = tb_ratelimit_new(100.0, 10);
        char key[32];
        for (int i = 0; i < 1000; i++) {
                snprintf(key, sizeof(key), "old-%d", i);
                tb_ratelimit_take(rl, key, T0, NULL);
        }
        cr_assert_eq(tb_ratelimit_size(rl), 1000);
        /* much later, a stream of other keys: the old ones go away without
         * anyone calling tb_ratelimit_sweep() */
        for (int i = 0; i < 500; i++) {
                snprintf(key, sizeof(key), "new-%d", i);
                cr_assert(tb_ratelimit_take(rl, key, T0 + 5000 * MS, NULL));
        }
        cr_assert_eq(tb_ratelimit_size(rl), 500, "size %zu", tb_ratelimit_size(rl));
        /* and an evicted key starts with a full burst */
        for (int i = 0; i < 10; i++)
                cr_assert(tb_ratelimit_take(rl, "old-1", T0 + 5000 * MS, NULL));
        cr_assert_not(tb_ratelimit_take(rl, "old-1", T0 + 5000 * MS, NULL));
        tb_ratelimit_free(rl);
}

typedef struct rl_thread_arg {
        tb_ratelimit_t *rl;
        int allowed;
} rl_thread_arg_t;

static void *rl_thread(void *arg) {
        rl_thread_arg_t *a = arg;
        char key[16];
        for (int i = 0; i < 2000; i++) {
                /* one shared key, and keys shared by all threads in turn */
                a->allowed += tb_ratelimit_take(a->rl, "shared", T0, NULL);
                snprintf(key, sizeof(key), "k%d", i % 50);
                tb_ratelimit_take(a->rl, key, T0, NULL);
        }
        return NULL;
}

Test(ratelimit, threads_share_one_budget) {
        tb_ratelimit_t *rl = tb_ratelimit_new(1.0, 100);
        pthread_t th[4];
        rl_thread_arg_t args[4];
        for (int i = 0; i < 4; i++) {
                args[i] = (rl_thread_arg_t){rl, 0};
                cr_assert_eq(pthread_create(&th[i], NULL, rl_thread, &args[i]), 0);
        }
        int total = 0;
        for (int i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                total += args[i].allowed;
        }
        cr_assert_eq(total, 100, "exactly the burst across threads, got %d", total);
        cr_assert_eq(tb_ratelimit_size(rl), 51);
        tb_ratelimit_free(rl);
}
