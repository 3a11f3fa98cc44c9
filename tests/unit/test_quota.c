/**
 * @file test_quota.c
 * @brief The grammar of a group quota's rate (`taskbus admin group set
 *        --run-now-rate R`): per second, per unit, unlimited, and the
 *        messages of what it refuses.
 */
#include "identity/identity.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static double rate(const char *text) {
        char err[256];
        double r = 0;
        cr_assert_eq(tb_identity_quota_rate_parse(text, &r, err, sizeof(err)), TB_OK,
                     "%s: %s", text, err);
        return r;
}

Test(quota, rates_per_second_and_per_unit) {
        cr_assert_float_eq(rate("5"), 5.0, 1e-12);
        cr_assert_float_eq(rate("0.5"), 0.5, 1e-12);
        cr_assert_float_eq(rate("2/s"), 2.0, 1e-12);
        cr_assert_float_eq(rate("10/min"), 10.0 / 60, 1e-12);
        cr_assert_float_eq(rate("100/h"), 100.0 / 3600, 1e-12);
        cr_assert_eq(rate("unlimited"), TB_STORE_QUOTA_UNLIMITED);
}

Test(quota, bad_rates_name_the_option_and_the_forms) {
        const char *bad[] = {"", "0", "-1", "fast", "10/fortnight", "5x", "nan", "inf",
                             "1/min/s", "1e-9"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char err[256] = "";
                double r = 0;
                cr_assert_eq(tb_identity_quota_rate_parse(bad[i], &r, err, sizeof(err)),
                             TB_ERR_INVALID, "'%s' accepted", bad[i]);
                cr_assert(strstr(err, "--run-now-rate"), "%s", err);
        }
}
