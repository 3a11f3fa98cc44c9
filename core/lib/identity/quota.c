/**
 * @file identity/quota.c
 * @brief Security-group quotas as the roles read them: a short cache in
 *        front of security_groups (store/identity.h), and the grammar of a
 *        rate ("5", "0.5/s", "10/min", "100/h").
 */
#include "identity/identity.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* group -> [fetched at (monotonic µs), max_tasks, max_running, run_now_rate] */
static pthread_mutex_t tb_quota_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *tb_quota_cache;

/* Most groups cached; beyond it the cache starts over (a lookup more). */
#define TB_QUOTA_CACHE_MAX 10000

tb_err_t tb_identity_quota_get(tb_store_t *store, const char *group, int64_t cache_ms,
                               tb_store_group_quota_t *q, char *errstr, size_t errstr_size) {
        int64_t now = tb_mono_us();
        pthread_mutex_lock(&tb_quota_lock);
        json_t *e = json_object_get(tb_quota_cache, group);
        if (e && now - json_integer_value(json_array_get(e, 0)) < cache_ms * 1000) {
                q->max_tasks = json_integer_value(json_array_get(e, 1));
                q->max_running = json_integer_value(json_array_get(e, 2));
                q->run_now_rate = json_real_value(json_array_get(e, 3));
                pthread_mutex_unlock(&tb_quota_lock);
                return TB_OK;
        }
        pthread_mutex_unlock(&tb_quota_lock);

        PGconn *c = tb_store_acquire_timeout(store, 2000);
        if (!c)
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                 "no PostgreSQL connection free within 2 s");
        bool found = false;
        tb_err_t err = tb_store_identity_quota_get(c, group, &found, q, errstr, errstr_size);
        tb_store_release(store, c);
        if (err)
                return err;
        pthread_mutex_lock(&tb_quota_lock);
        if (!tb_quota_cache || json_object_size(tb_quota_cache) >= TB_QUOTA_CACHE_MAX) {
                json_decref(tb_quota_cache);
                tb_quota_cache = json_object();
        }
        if (tb_quota_cache)
                json_object_set_new(tb_quota_cache, group,
                                    json_pack("[I, I, I, f]", (json_int_t)now,
                                              (json_int_t)q->max_tasks,
                                              (json_int_t)q->max_running, q->run_now_rate));
        pthread_mutex_unlock(&tb_quota_lock);
        return TB_OK;
}

void tb_identity_quota_cache_clear(void) {
        pthread_mutex_lock(&tb_quota_lock);
        json_decref(tb_quota_cache);
        tb_quota_cache = NULL;
        pthread_mutex_unlock(&tb_quota_lock);
}

tb_err_t tb_identity_quota_rate_parse(const char *text, double *per_s, char *errstr,
                                      size_t errstr_size) {
        static const struct {
                const char *unit;
                double seconds;
        } units[] = {{"s", 1}, {"sec", 1}, {"min", 60}, {"m", 60}, {"h", 3600}, {"hour", 3600}};
        char *end = NULL;
        if (!text || !*text)
                goto bad;
        if (!strcmp(text, "unlimited") || !strcmp(text, "none")) {
                *per_s = TB_STORE_QUOTA_UNLIMITED;
                return TB_OK;
        }
        double n = strtod(text, &end);
        if (end == text || !isfinite(n) || n <= 0)
                goto bad;
        double seconds = 1;
        if (*end == '/') {
                size_t i = 0;
                for (; i < TB_ARRAY_LEN(units); i++)
                        if (!strcmp(end + 1, units[i].unit))
                                break;
                if (i == TB_ARRAY_LEN(units))
                        goto bad;
                seconds = units[i].seconds;
        } else if (*end) {
                goto bad;
        }
        *per_s = n / seconds;
        if (*per_s < 1e-6 || *per_s > 1e6)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "--run-now-rate: '%s' is outside 1/1000000 s to 1000000/s",
                                 text);
        return TB_OK;
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "--run-now-rate: '%s' is not a rate: give RUN_NOW commands per "
                         "second (\"5\", \"0.5\") or per unit (\"10/min\", \"100/h\", "
                         "\"2/s\"), or \"unlimited\"",
                         text ? text : "");
}
