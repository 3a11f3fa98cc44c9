/**
 * @file api/deps.h
 * @brief Tasks that wait for others in the REST API (api/deps.c): the
 *        checks of a task's after at create and update (parents that exist
 *        in the caller's groups, no cycle), the refusal to delete a parent,
 *        and a task's parents and children in GET /v1/tasks/{id}.
 */
#ifndef TB_API_DEPS_H
#define TB_API_DEPS_H

#include "api/api.h"

#include <jansson.h>
#include <libpq-fe.h>

/** The caller's groups as a PostgreSQL text[] literal (caller frees; tasks.c). */
char *tb_api_tasks_groups_literal(const tb_principal_t *p);

/**
 * @brief Check the after of \p norm (a validated task, to be task \p id):
 *        each parent a task of the caller's groups, and no cycle through
 *        the tasks the projection holds. @returns false when answered (400
 *        field "after[i].task", or 503).
 */
bool tb_api_deps_check(tb_api_t *api, const tb_principal_t *p, const char *id,
                       const json_t *norm, tb_http_resp_t *resp);

/** @brief Refuse to delete task \p id while tasks wait for it: 409 naming
 *         those of the caller's groups. @returns false when answered. */
bool tb_api_deps_delete_check(tb_api_t *api, const tb_principal_t *p, const char *id,
                              tb_http_resp_t *resp);

/** @brief Add "parents" (its after, [] when none) and "children" (the ids of
 *         the tasks of the caller's groups whose after names it) to task \p t. */
tb_err_t tb_api_deps_annotate(PGconn *c, const tb_principal_t *p, json_t *t, char *err,
                              size_t errsz);

#endif /* TB_API_DEPS_H */
