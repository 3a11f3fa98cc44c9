/**
 * @file schedule/occurrences.c
 * @brief A schedule's occurrences in a range (tb_schedule_next() walked
 *        forward, never a second cron engine) and the run id of a fire.
 */
#include "schedule/occurrences.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

tb_err_t tb_schedule_occurrences(const tb_schedule_t *s, int64_t from_ms, int64_t to_ms,
                                 size_t max, int64_t **out, size_t *cnt, char *errstr,
                                 size_t errstr_size) {
        *out = NULL;
        *cnt = 0;
        if (!max || max > TB_SCHEDULE_OCCURRENCES_MAX)
                max = TB_SCHEDULE_OCCURRENCES_MAX;
        char f[32], t[32];
        tb_time_format(from_ms, f);
        tb_time_format(to_ms, t);
        if (to_ms <= from_ms)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "to: %s is not after from %s; the range is [from, to)", t, f);
        int64_t *v = NULL;
        size_t n = 0, cap = 0;
        int64_t at = from_ms - 1; /* next() is strictly after: from itself counts */
        for (;;) {
                int64_t next = 0;
                tb_err_t err = tb_schedule_next(s, at, &next, NULL, errstr, errstr_size);
                if (err == TB_ERR_NOT_FOUND || (!err && next >= to_ms))
                        break;
                if (err) {
                        free(v);
                        return err;
                }
                if (n == max) {
                        /* v[max - 1] is the last that fits: to = it + 1 ms holds max */
                        char last[32];
                        tb_time_format(v[max - 1], last);
                        free(v);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "to: the range from %s to %s holds more than %zu "
                                         "occurrences; use a smaller range (the %zuth is at "
                                         "%s: a `to` just after it fits)",
                                         f, t, max, max, last);
                }
                if (n == cap) {
                        size_t nc = cap ? cap * 2 : 64;
                        int64_t *nv = realloc(v, nc * sizeof(*nv));
                        if (!nv) {
                                free(v);
                                return TB_ERR_NOMEM;
                        }
                        v = nv;
                        cap = nc;
                }
                v[n++] = next;
                at = next;
        }
        *out = v;
        *cnt = n;
        return TB_OK;
}

void tb_schedule_run_id(const char *task_id, int64_t nominal_ms, int attempt, char out[33]) {
        char in[512];
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        int n = snprintf(in, sizeof(in), "%s|%" PRId64 "|%d", task_id, nominal_ms, attempt);
        if (n < 0 || (size_t)n >= sizeof(in))
                n = (int)sizeof(in) - 1;
        EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
        static const char hx[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
                out[2 * i] = hx[md[i] >> 4];
                out[2 * i + 1] = hx[md[i] & 15];
        }
        out[32] = 0;
}
