/**
 * @file api/projwait.c
 * @brief Read your writes: the projection watcher (LISTEN
 *        taskbus_projection on its own connection) and the waits of handlers
 *        until the projection shows a task version (tb_api_wait_projected()).
 */
#include "api/api_internal.h"
#include "store/tasks.h"
#include "task/task.h"
#include <stdlib.h>
#include <errno.h>
#include <poll.h>
#include <string.h>

/* ---- projection watcher ----------------------------------------------------- */

/* Mark every waiter whose task reached its version in the projection. */
static void tb_api_proj_check(tb_api_t *api, PGconn *conn) {
        tb_buf_t ids = {0}, vers = {0};
        tb_buf_append(&ids, "{", 1);
        tb_buf_append(&vers, "{", 1);
        int n = 0;
        pthread_mutex_lock(&api->lock);
        for (struct tb_api_projwait *w = api->projwaits; w; w = w->next) {
                if (w->done)
                        continue;
                tb_store_array_add(&ids, w->task_id);
                tb_buf_printf(&vers, "%s%" PRId64, n ? "," : "", w->version);
                n++;
        }
        pthread_mutex_unlock(&api->lock);
        tb_buf_append(&ids, "}", 2);
        tb_buf_append(&vers, "}", 2);
        PGconn *pooled = NULL;
        if (n == 0)
                goto out;
        if (!conn || PQstatus(conn) != CONNECTION_OK)
                conn = pooled = tb_store_acquire_timeout(api->store, 100);
        if (!conn)
                goto out;
        PGresult *res = NULL;
        char err[512];
        if (tb_store_tasks_projected(conn, ids.data, vers.data, &res, err, sizeof(err))) {
                tb_debug(TB_API_SUB, "%s", err);
                goto out;
        }
        pthread_mutex_lock(&api->lock);
        for (int i = 0; i < PQntuples(res); i++) {
                const char *id = PQgetvalue(res, i, 0);
                int64_t v = strtoll(PQgetvalue(res, i, 1), NULL, 10);
                for (struct tb_api_projwait *w = api->projwaits; w; w = w->next) {
                        if (!w->done && w->version == v && !strcmp(w->task_id, id)) {
                                w->done = true;
                                pthread_cond_signal(&w->cv);
                        }
                }
        }
        pthread_mutex_unlock(&api->lock);
        PQclear(res);
out:
        if (pooled)
                tb_store_release(api->store, pooled);
        tb_buf_free(&ids);
        tb_buf_free(&vers);
}

static PGconn *tb_api_listen_connect(tb_api_t *api) {
        /* named like the pool's connections (pg_stat_activity) unless the URL names it */
        const char *keys[] = {"fallback_application_name", "dbname", NULL};
        const char *vals[] = {"taskbus", api->ctx->conf->pg_url, NULL};
        PGconn *c = PQconnectdbParams(keys, vals, 1);
        if (!c || PQstatus(c) != CONNECTION_OK) {
                char msg[512];
                tb_store_oneline_redacted(api->ctx->conf->pg_url, c ? PQerrorMessage(c) : "oom",
                                          msg, sizeof(msg));
                tb_debug(TB_API_SUB, "projection listener: %s", msg);
                PQfinish(c);
                return NULL;
        }
        PGresult *r = PQexec(c, "LISTEN taskbus_projection");
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
                PQfinish(c);
                return NULL;
        }
        return c;
}

/* ---- notifications: one per projector batch ------------------------------------ */

/* The task versions of recent notifications (a ring), guarded by api->lock. */
struct tb_api_projseen {
        struct {
                char id[TB_TASK_ID_MAX + 1];
                int64_t version;
        } e[TB_API_PROJ_SEEN];
        size_t next;
};

/* Whether a notification said that task \p id reached \p version or later.
 * Caller holds api->lock. */
static bool tb_api_proj_seen(const tb_api_t *api, const char *id, int64_t version) {
        const struct tb_api_projseen *s = api->projseen;
        for (size_t i = 0; s && i < TB_API_PROJ_SEEN; i++)
                if (s->e[i].version >= version && s->e[i].id[0] && !strcmp(s->e[i].id, id))
                        return true;
        return false;
}

/*
 * One notification of the projector (projection.h): "ID VERSION" per task
 * event of the batch, comma-separated. Every wait it satisfies is woken, and
 * the versions are kept for waits registered just after. @returns false when
 * the payload names no version (it did not fit, or an older projector sent
 * ids only): the caller checks by a query.
 */
static bool tb_api_proj_notified(tb_api_t *api, const char *payload) {
        if (!payload || !*payload)
                return false;
        size_t named = 0;
        pthread_mutex_lock(&api->lock);
        for (const char *p = payload; *p;) {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t)(comma - p) : strlen(p);
                const char *sp = memchr(p, ' ', len);
                if (sp && (size_t)(sp - p) <= TB_TASK_ID_MAX) {
                        size_t idlen = (size_t)(sp - p);
                        int64_t v = strtoll(sp + 1, NULL, 10);
                        named++;
                        struct tb_api_projseen *s = api->projseen;
                        if (s) {
                                memcpy(s->e[s->next].id, p, idlen);
                                s->e[s->next].id[idlen] = '\0';
                                s->e[s->next].version = v;
                                s->next = (s->next + 1) % TB_API_PROJ_SEEN;
                        }
                        for (struct tb_api_projwait *w = api->projwaits; w; w = w->next)
                                if (!w->done && w->version <= v && strlen(w->task_id) == idlen &&
                                    !memcmp(w->task_id, p, idlen)) {
                                        w->done = true;
                                        pthread_cond_signal(&w->cv);
                                }
                }
                p += len;
                if (*p == ',')
                        p++;
        }
        pthread_mutex_unlock(&api->lock);
        /* ids without versions (a projector of an older release): a query */
        return named > 0;
}

/*
 * One thread answers every read-your-writes wait. Each projector batch sends
 * ONE notification naming its task versions: the waits it names are woken
 * from it, without a query. A query checks every pending wait only when a
 * notification names nothing (its payload did not fit), every
 * TB_API_PROJ_RECHECK_MS in case one was missed, and every
 * TB_API_PROJ_POLL_MS while the listener is down.
 */
void *tb_api_proj_main(void *arg) {
        tb_api_t *api = arg;
        PGconn *conn = NULL;
        int64_t next_connect = 0, last_check = 0;
        bool need_check = false;
        struct tb_api_projseen *seen = calloc(1, sizeof(*seen));
        pthread_mutex_lock(&api->lock);
        api->projseen = seen; /* NULL (out of memory): the queries answer */
        pthread_mutex_unlock(&api->lock);
        while (!atomic_load(&api->stop)) {
                if (!conn && tb_mono_us() >= next_connect) {
                        conn = tb_api_listen_connect(api);
                        next_connect = tb_mono_us() + 1000000;
                        need_check = true; /* notifications may have been missed */
                }
                pthread_mutex_lock(&api->lock);
                bool have = false;
                for (struct tb_api_projwait *w = api->projwaits; w && !have; w = w->next)
                        have = !w->done;
                pthread_mutex_unlock(&api->lock);
                int64_t now = tb_mono_us();
                if (have && (need_check || !conn ||
                             now - last_check >= TB_API_PROJ_RECHECK_MS * 1000)) {
                        tb_api_proj_check(api, conn);
                        last_check = now;
                        need_check = false;
                }
                struct pollfd fds[2] = {{.fd = api->wake_fd, .events = POLLIN},
                                        {.fd = conn ? PQsocket(conn) : -1, .events = POLLIN}};
                poll(fds, 2, !have ? 200 : conn ? TB_API_PROJ_RECHECK_MS : TB_API_PROJ_POLL_MS);
                if (fds[0].revents & POLLIN) {
                        uint64_t v;
                        if (read(api->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                                tb_debug(TB_API_SUB, "wake: %s", strerror(errno));
                }
                if (conn && fds[1].revents) {
                        if (!PQconsumeInput(conn)) {
                                tb_warn(TB_API_SUB, "projection listener lost: %s",
                                        PQerrorMessage(conn));
                                PQfinish(conn);
                                conn = NULL;
                                continue;
                        }
                        PGnotify *nt;
                        while ((nt = PQnotifies(conn))) {
                                if (!tb_api_proj_notified(api, nt->extra))
                                        need_check = true;
                                PQfreemem(nt);
                        }
                }
        }
        PQfinish(conn);
        pthread_mutex_lock(&api->lock);
        api->projseen = NULL;
        pthread_mutex_unlock(&api->lock);
        free(seen);
        return NULL;
}

bool tb_api_wait_projected(tb_api_t *api, const char *task_id, int64_t version,
                           int64_t deadline_us) {
        struct tb_api_projwait w = {.version = version};
        tb_snprintf(w.task_id, sizeof(w.task_id), "%s", task_id);
        tb_cond_init_mono(&w.cv);
        pthread_mutex_lock(&api->lock);
        /* its batch's notification may have come before this wait */
        w.done = tb_api_proj_seen(api, w.task_id, version);
        bool wake = !api->projwaits;
        w.next = api->projwaits;
        api->projwaits = &w;
        pthread_mutex_unlock(&api->lock);
        uint64_t one = 1;
        /* the first pending wait shortens the watcher's poll */
        if (wake && !w.done && write(api->wake_fd, &one, sizeof(one)) < 0)
                tb_debug(TB_API_SUB, "wake: %s", strerror(errno));
        pthread_mutex_lock(&api->lock);
        while (!w.done && tb_api_cond_wait_until(&w.cv, &api->lock, deadline_us))
                ;
        for (struct tb_api_projwait **pp = &api->projwaits; *pp; pp = &(*pp)->next) {
                if (*pp == &w) {
                        *pp = w.next;
                        break;
                }
        }
        bool done = w.done;
        pthread_mutex_unlock(&api->lock);
        pthread_cond_destroy(&w.cv);
        return done;
}
