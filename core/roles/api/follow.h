/**
 * @file api/follow.h
 * @brief Live log followers of one api process (runs.c's
 *        GET /v1/runs/{id}/log?follow=true): the per-user cap
 *        (api.max_follows_per_user), one poller thread that reads the state
 *        of every followed run in ONE statement every TB_API_FOLLOW_POLL_MS
 *        and wakes the followers whose run changed (an in-process fan-out:
 *        a follower reads PostgreSQL only when its run has news), and the
 *        authorization re-check of a follower.
 */
#ifndef TB_API_FOLLOW_H
#define TB_API_FOLLOW_H

#include "api/api.h"

#include <stdbool.h>
#include <stdint.h>

/** How often the poller reads the followed runs' state. */
#define TB_API_FOLLOW_POLL_MS 150

typedef struct tb_api_follow tb_api_follow_t;

/** Start the poller (api->follows). @locality the role's start */
tb_err_t tb_api_follows_start(tb_api_t *api, char *errstr, size_t errstr_size);
/** Stop and free it, after the HTTP server stopped (no follower left). NULL ok. */
void tb_api_follows_stop(tb_api_t *api);

/**
 * Register a follower of \p run_id for \p user. @returns the follower (freed
 * by tb_api_follow_leave()), or NULL when \p user already holds
 * api.max_follows_per_user streams (*\p held: how many) or out of memory
 * (*\p held 0). @locality any thread
 */
tb_api_follow_t *tb_api_follow_join(tb_api_t *api, const char *user, const char *run_id,
                                    size_t *held);
/** Unregister and free \p f. NULL ok. */
void tb_api_follow_leave(tb_api_t *api, tb_api_follow_t *f);

/**
 * Wait up to \p ms for news of \p f's run (new chunks, a new status) since
 * the last call. @returns true if there is news. @locality f's stream thread
 */
bool tb_api_follow_wait(tb_api_t *api, tb_api_follow_t *f, int64_t ms);

/**
 * Re-check a follower's credentials through the authentication cache (its
 * documented delay: TB_API_AUTH_CACHE_MS): \p authorization is still valid
 * and its user is still a member of \p group. @returns 1 yes, 0 no (the
 * stream must end), -1 unknown right now (the database is down: go on).
 */
int tb_api_follow_authorized(tb_api_t *api, const char *authorization, const char *group);

#endif /* TB_API_FOLLOW_H */
