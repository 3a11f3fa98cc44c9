/**
 * @file api/admin.h
 * @brief The admin routes under /v1/admin/ (admin.c): users, groups and
 *        membership, tokens and the admin log, for members of
 *        api.admin_group only, through lib/identity's audited operations.
 *        Internal to the api role.
 */
#ifndef TB_API_ADMIN_H
#define TB_API_ADMIN_H

#include "api/api.h"

/** @returns whether \p p is a member of api.admin_group (false when it is
 *  not set): what GET /v1/me calls `admin`, and what /v1/admin/ requires. */
bool tb_api_admin_member(const tb_api_t *api, const tb_principal_t *p);

/** Answer 403 (saying why and how to fix it) unless the caller is an admin.
 *  @returns whether it is. */
bool tb_api_admin_allowed(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp);

/** POST /v1/admin/notify/test (notify.c): a test notification to a channel;
 *  GET /v1/admin/notify/deliveries/{id}: one notification and its attempts. */
tb_api_route_fn tb_api_notify_test, tb_api_notify_delivery;

/** GET and POST /v1/admin/users; POST /v1/admin/users/{user}/disable and /enable. */
tb_api_route_fn tb_api_admin_users_list, tb_api_admin_users_create, tb_api_admin_users_disable,
        tb_api_admin_users_enable;
/** GET and POST /v1/admin/users/{user}/tokens; POST /v1/admin/tokens/{token_id}/revoke. */
tb_api_route_fn tb_api_admin_tokens_list, tb_api_admin_tokens_create, tb_api_admin_tokens_revoke;
/** GET /v1/admin/groups; POST /v1/admin/groups/{group}/members; DELETE
 *  /v1/admin/groups/{group}/members/{user}. */
tb_api_route_fn tb_api_admin_groups_list, tb_api_admin_members_add, tb_api_admin_members_remove;
/** GET /v1/admin/audit: the admin log, newest first, keyset pages. */
tb_api_route_fn tb_api_admin_audit;

#endif /* TB_API_ADMIN_H */
