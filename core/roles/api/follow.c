/**
 * @file api/follow.c
 * @brief Live log followers (api/follow.h): the registry with its per-user
 *        cap, the poller that wakes followers whose run changed, and the
 *        authorization re-check.
 *
 * Why a poller and not LISTEN/NOTIFY: the archiver's inserts stay free of a
 * NOTIFY (which serializes committing transactions on PostgreSQL's notify
 * queue), and the cost is one statement per poll period per api process,
 * however many streams are open (docs/api.md "Live logs"). The poller holds
 * a pool connection only for that statement.
 */
#include "api/follow.h"
#include "api/api_internal.h"
#include "api/session.h"
#include "http/metrics.h"
#include "store/runs.h"

#include <stdlib.h>
#include <string.h>

struct tb_api_follow {
        struct tb_api_follow *next;
        char run_id[256];
        char user[TB_IDENTITY_NAME_MAX + 1];
        int64_t version;      /**< the poller's last view of the run */
        uint64_t changes;     /**< bumped by the poller when version changes */
        uint64_t seen;        /**< changes the follower has acted on */
};

struct tb_api_follows {
        pthread_mutex_t lock;
        pthread_cond_t cond;  /**< CLOCK_MONOTONIC: news, a new follower, or stop */
        tb_api_follow_t *list;
        size_t count;
        bool stop;
        pthread_t thr;
        bool started;
};

/* Read the followed runs' state once; wake those whose run changed. */
static void tb_api_follows_poll(tb_api_t *api) {
        struct tb_api_follows *fs = api->follows;
        tb_buf_t ids = {0};
        tb_buf_append(&ids, "{", 1);
        pthread_mutex_lock(&fs->lock);
        for (tb_api_follow_t *f = fs->list; f; f = f->next) {
                bool dup = false; /* one id per run, however many follow it */
                for (tb_api_follow_t *g = fs->list; g != f && !dup; g = g->next)
                        dup = !strcmp(g->run_id, f->run_id);
                if (!dup)
                        tb_store_array_add(&ids, f->run_id);
        }
        pthread_mutex_unlock(&fs->lock);
        tb_buf_append(&ids, "}", 2);
        PGconn *c = tb_store_acquire_timeout(api->store, 1000);
        PGresult *r = NULL;
        char err[512];
        if (!c)
                goto out;
        tb_err_t e = tb_store_runs_logs_versions(c, ids.data, &r, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_debug(TB_API_SUB, "live log poll: %s", err);
                goto out;
        }
        tb_metrics_add("taskbus_api_log_follow_polls_total", NULL, 1);
        bool woke = false;
        pthread_mutex_lock(&fs->lock);
        for (int i = 0; i < PQntuples(r); i++) {
                const char *id = PQgetvalue(r, i, 0);
                int64_t v = strtoll(PQgetvalue(r, i, 1), NULL, 10) * 1000003 ^
                            strtoll(PQgetvalue(r, i, 2), NULL, 10);
                for (tb_api_follow_t *f = fs->list; f; f = f->next) {
                        if (f->version == v || strcmp(f->run_id, id))
                                continue;
                        f->version = v;
                        f->changes++;
                        woke = true;
                }
        }
        if (woke)
                pthread_cond_broadcast(&fs->cond);
        pthread_mutex_unlock(&fs->lock);
out:
        PQclear(r);
        tb_buf_free(&ids);
}

static void *tb_api_follows_main(void *arg) {
        tb_api_t *api = arg;
        struct tb_api_follows *fs = api->follows;
        pthread_mutex_lock(&fs->lock);
        while (!fs->stop) {
                if (!fs->list) {
                        tb_cond_wait_ms(&fs->cond, &fs->lock, 1000);
                        continue;
                }
                pthread_mutex_unlock(&fs->lock);
                tb_api_follows_poll(api);
                pthread_mutex_lock(&fs->lock);
                if (!fs->stop)
                        tb_cond_wait_ms(&fs->cond, &fs->lock, TB_API_FOLLOW_POLL_MS);
        }
        pthread_mutex_unlock(&fs->lock);
        return NULL;
}

tb_err_t tb_api_follows_start(tb_api_t *api, char *errstr, size_t errstr_size) {
        struct tb_api_follows *fs = calloc(1, sizeof(*fs));
        if (!fs)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        pthread_mutex_init(&fs->lock, NULL);
        tb_cond_init_mono(&fs->cond);
        api->follows = fs;
        tb_metrics_describe("taskbus_api_log_follows", "gauge",
                            "Live log streams open on this api process.");
        tb_metrics_describe("taskbus_api_log_follow_polls_total", "counter",
                            "Statements the live log poller ran (one per period for all "
                            "streams).");
        tb_metrics_set("taskbus_api_log_follows", NULL, 0);
        if (pthread_create(&fs->thr, NULL, tb_api_follows_main, api))
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                 "api: cannot start the live log poller");
        fs->started = true;
        return TB_OK;
}

void tb_api_follows_stop(tb_api_t *api) {
        struct tb_api_follows *fs = api->follows;
        if (!fs)
                return;
        pthread_mutex_lock(&fs->lock);
        fs->stop = true;
        pthread_cond_broadcast(&fs->cond);
        pthread_mutex_unlock(&fs->lock);
        if (fs->started)
                pthread_join(fs->thr, NULL);
        while (fs->list) { /* none once the HTTP server stopped; freed all the same */
                tb_api_follow_t *f = fs->list;
                fs->list = f->next;
                free(f);
        }
        pthread_cond_destroy(&fs->cond);
        pthread_mutex_destroy(&fs->lock);
        free(fs);
        api->follows = NULL;
}

tb_api_follow_t *tb_api_follow_join(tb_api_t *api, const char *user, const char *run_id,
                                    size_t *held) {
        struct tb_api_follows *fs = api->follows;
        size_t mine = 0;
        *held = 0;
        pthread_mutex_lock(&fs->lock);
        for (tb_api_follow_t *f = fs->list; f; f = f->next)
                mine += !strcmp(f->user, user);
        tb_api_follow_t *f = NULL;
        if (mine < (size_t)api->ctx->conf->api_max_follows_per_user &&
            (f = calloc(1, sizeof(*f)))) {
                tb_snprintf(f->run_id, sizeof(f->run_id), "%s", run_id);
                tb_snprintf(f->user, sizeof(f->user), "%s", user);
                f->version = -1;
                f->next = fs->list;
                fs->list = f;
                fs->count++;
                tb_metrics_set("taskbus_api_log_follows", NULL, (double)fs->count);
                pthread_cond_broadcast(&fs->cond); /* the poller may be idle */
        } else if (!f) {
                *held = mine;
        }
        pthread_mutex_unlock(&fs->lock);
        return f;
}

void tb_api_follow_leave(tb_api_t *api, tb_api_follow_t *f) {
        struct tb_api_follows *fs = api->follows;
        if (!f)
                return;
        pthread_mutex_lock(&fs->lock);
        for (tb_api_follow_t **pp = &fs->list; *pp; pp = &(*pp)->next) {
                if (*pp == f) {
                        *pp = f->next;
                        fs->count--;
                        break;
                }
        }
        tb_metrics_set("taskbus_api_log_follows", NULL, (double)fs->count);
        pthread_mutex_unlock(&fs->lock);
        free(f);
}

bool tb_api_follow_wait(tb_api_t *api, tb_api_follow_t *f, int64_t ms) {
        struct tb_api_follows *fs = api->follows;
        pthread_mutex_lock(&fs->lock);
        if (f->seen == f->changes && !fs->stop && ms > 0)
                tb_cond_wait_ms(&fs->cond, &fs->lock, ms);
        bool news = f->seen != f->changes;
        f->seen = f->changes;
        pthread_mutex_unlock(&fs->lock);
        return news;
}

int tb_api_follow_authorized(tb_api_t *api, const char *authorization, const char *group) {
        tb_principal_t *p = NULL;
        char err[512];
        tb_err_t e = tb_api_credential_authenticate(api, authorization, &p, err, sizeof(err));
        if (e == TB_ERR_UNAUTHENTICATED)
                return 0;
        if (e) {
                tb_debug(TB_API_SUB, "live log: re-checking its token: %s", err);
                return -1;
        }
        int ok = tb_principal_in_group(p, group) ? 1 : 0;
        tb_principal_free(p);
        return ok;
}
