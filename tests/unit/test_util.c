/**
 * @file test_util.c
 * @brief core/lib/util.c (tb.h): tb_names_nearest(), the "valid names and
 *        did you mean" helper of config's unknown keys and task's unknown
 *        fields.
 */
#include "tb.h"

#include <criterion/criterion.h>
#include <string.h>

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
