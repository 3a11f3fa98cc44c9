/**
 * @file test_util.c
 * @brief core/lib/util.c (tb.h): tb_names_nearest(), the "valid names and
 *        did you mean" helper of config's unknown keys and task's unknown
 *        fields; the monotonic condition variables and deadlines.
 */
#include "tb.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Differing bytes at the same position, plus the length difference. */
static size_t test_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), d = la > lb ? la - lb : lb - la;
        for (size_t i = 0; i < la && i < lb; i++)
                d += a[i] != b[i];
        return d;
}

Test(util, names_nearest) {
        static const char *const names[] = {"listen", "threads", "rate", "burst"};
        char list[64];
        const char *best = tb_names_nearest("thread", names, 4, test_distance, 1, list,
                                            sizeof(list));
        cr_assert_str_eq(list, "listen, threads, rate, burst");
        cr_assert_str_eq(best, "threads");

        /* Nearest at distance 2 ("rate" and "burst" are farther) but above the limit. */
        cr_assert_null(tb_names_nearest("raxy", names, 4, test_distance, 1, list,
                                        sizeof(list)));
        cr_assert_str_eq(tb_names_nearest("raxy", names, 4, test_distance, 2, list,
                                          sizeof(list)),
                         "rate");

        /* A tie goes to the first name. */
        static const char *const tie[] = {"ab", "ba"};
        cr_assert_str_eq(tb_names_nearest("aa", tie, 2, test_distance, 5, list, sizeof(list)),
                         "ab");

        /* A list that does not fit is cut short and stays terminated. */
        char small[16];
        tb_names_nearest("x", names, 4, test_distance, 0, small, sizeof(small));
        cr_assert_str_eq(small, "listen, threads");

        /* No names: an empty list and no suggestion. */
        cr_assert_null(tb_names_nearest("x", names, 0, test_distance, 99, list, sizeof(list)));
        cr_assert_str_eq(list, "");
}

static int64_t test_mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Test(util, mono_deadline_and_cond_wait) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        struct timespec d = tb_mono_deadline(1500);
        int64_t ahead = ((int64_t)d.tv_sec - now.tv_sec) * 1000 +
                        (d.tv_nsec - now.tv_nsec) / 1000000;
        cr_assert(ahead >= 1500 && ahead < 1600, "deadline %lld ms ahead", (long long)ahead);
        cr_assert(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
        struct timespec past = tb_mono_deadline(-5);
        cr_assert(past.tv_sec < now.tv_sec + 2, "a negative wait is not in the future");

        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        pthread_cond_t cv;
        cr_assert_eq(tb_cond_init_mono(&cv), TB_OK);
        pthread_mutex_lock(&mu);
        int64_t t0 = test_mono_ms();
        /* Nobody signals: the wait must time out after ~50 ms, not never. */
        while (tb_cond_wait_ms(&cv, &mu, 50 - (test_mono_ms() - t0)))
                ;
        int64_t took = test_mono_ms() - t0;
        pthread_mutex_unlock(&mu);
        cr_assert(took >= 50 && took < 5000, "waited %lld ms", (long long)took);
        pthread_cond_destroy(&cv);
}

Test(util, array_grow) {
        size_t cap = 0;
        int *a = tb_array_grow(NULL, &cap, sizeof(*a), 4);
        cr_assert_not_null(a);
        cr_assert_eq(cap, 4, "starts at first");
        for (int i = 0; i < 4; i++)
                a[i] = i;
        int *b = tb_array_grow(a, &cap, sizeof(*b), 4);
        cr_assert_not_null(b);
        cr_assert_eq(cap, 8, "then doubles");
        for (int i = 0; i < 4; i++)
                cr_assert_eq(b[i], i, "keeps the elements");
        size_t huge = SIZE_MAX / 2;
        cr_assert_null(tb_array_grow(b, &huge, sizeof(*b), 4), "an overflowing size is refused");
        cr_assert_eq(huge, SIZE_MAX / 2, "capacity untouched on failure");
        free(b);
}
