/**
 * @file api/session.h
 * @brief The web console's sessions (session.c): the routes POST/DELETE
 *        /v1/session and GET /v1/me, and the authentication of a request by
 *        its session cookie for api.c's auth hook and the live log's
 *        re-checks (runs.c). Internal to the api role.
 */
#ifndef TB_API_SESSION_H
#define TB_API_SESSION_H

#include "api/api.h"

/** The cookie that carries the session id. */
#define TB_API_SESSION_COOKIE "taskbus_session"
/** The header a write made with the cookie must carry. */
#define TB_API_SESSION_CSRF_HDR "X-Taskbus-CSRF"
/** How tb_api_credential() marks a session id (not a bearer scheme). */
#define TB_API_SESSION_CRED "Session "

/** @returns the session cookie of \p req, or NULL. */
const char *tb_api_session_cookie(tb_http_req_t *req);

/**
 * @brief Authenticate session id \p sid: the session must exist and not
 *        have expired, and its token must authenticate as a bearer token
 *        would (tb_identity_authenticate_hash()).
 * @returns TB_OK with *\p out (caller frees), TB_ERR_UNAUTHENTICATED (the
 *          reason, for the client), or TB_ERR_PG.
 * @locality an HTTP connection thread.
 */
tb_err_t tb_api_session_authenticate(tb_api_t *api, const char *sid, tb_principal_t **out,
                                     char *errstr, size_t errstr_size);

/**
 * @brief The auth hook's session path: authenticate \p sid, then refuse a
 *        write (any method but GET and HEAD) without the right CSRF header
 *        (403 csrf_required). @returns false with \p resp answered.
 */
bool tb_api_session_auth(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                         const char *sid, tb_principal_t **out);

/**
 * @brief What \p req authenticated with, to check again later (a live log
 *        re-checks it): the Authorization header, or TB_API_SESSION_CRED +
 *        the session id; "" when neither. Kept in memory only.
 */
void tb_api_credential(tb_http_req_t *req, char *out, size_t out_size);

/** @brief Authenticate a tb_api_credential() value again (same returns as
 *         tb_api_session_authenticate()). */
tb_err_t tb_api_credential_authenticate(tb_api_t *api, const char *cred, tb_principal_t **out,
                                        char *errstr, size_t errstr_size);

/** POST /v1/session, GET /v1/me, DELETE /v1/session. */
tb_api_route_fn tb_api_session_create, tb_api_session_me, tb_api_session_delete;

#endif /* TB_API_SESSION_H */
