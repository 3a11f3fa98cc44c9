/**
 * @file api/session.c
 * @brief The web console's sign-in (docs/console.md): POST /v1/session
 *        exchanges an API token for a session cookie, GET /v1/me says who
 *        the caller is, DELETE /v1/session signs out; and the
 *        authentication of a request by its session cookie, with the CSRF
 *        check of cookie writes, for api.c's auth hook.
 *
 * A session id is "tbs_" + 64 hex digits of getrandom(2), sent once in the
 * Set-Cookie of the sign-in and stored only as its SHA-256
 * (store/sessions.h), bound to the token it was opened with. A request with
 * the cookie authenticates that token through tb_identity_authenticate_hash():
 * the same checks, cache and principal as a bearer token, so the same
 * security groups apply to every route and a revoked or expired token, or a
 * disabled user, ends its sessions within the authentication cache time.
 *
 * CSRF: SameSite=Strict keeps other sites' requests from carrying the
 * cookie; on top of it every write made with the cookie must carry the
 * header X-Taskbus-CSRF with HMAC-SHA256(internal key, session id), which
 * the page learns from POST /v1/session or GET /v1/me and a cross-site form
 * cannot send.
 */
#include "api/api_internal.h"
#include "api/session.h"
#include "api/util.h"
#include "http/tls.h"
#include "identity/signing.h"
#include "store/sessions.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#define TB_API_SESSION_PREFIX "tbs_"
#define TB_API_SESSION_ID_LEN (4 + 64)
#define TB_API_SESSION_CSRF_INFO "taskbus/console-csrf/v1\n"
/** Expired sessions deleted per sign-in (housekeeping as we go). */
#define TB_API_SESSION_PURGE_BATCH 100
/** Longest sign-in body we parse: {"token": "tbk_..."} is 80 bytes. */
#define TB_API_SESSION_BODY_MAX 4096

/* ---- ids, hashes and the CSRF value ---------------------------------------- */

static bool tb_api_session_id_ok(const char *sid) {
        if (!sid || strlen(sid) != TB_API_SESSION_ID_LEN ||
            strncmp(sid, TB_API_SESSION_PREFIX, 4) != 0)
                return false;
        for (const char *c = sid + 4; *c; c++)
                if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
                        return false;
        return true;
}

static tb_err_t tb_api_session_hash(const char *sid, unsigned char out[32]) {
        unsigned int n = 0;
        if (!EVP_Digest(sid, strlen(sid), out, &n, EVP_sha256(), NULL) || n != 32)
                return TB_ERR_INTERNAL;
        return TB_OK;
}

/* The CSRF value of session \p sid: 64 hex digits. */
static tb_err_t tb_api_session_csrf(const char *sid, char out[65]) {
        const unsigned char *k = tb_sign_key();
        unsigned char mac[32], msg[sizeof(TB_API_SESSION_CSRF_INFO) + TB_API_SESSION_ID_LEN];
        unsigned int n = 0;
        size_t il = strlen(TB_API_SESSION_CSRF_INFO), sl = strlen(sid);
        if (!k || sl > TB_API_SESSION_ID_LEN)
                return TB_ERR_INTERNAL;
        memcpy(msg, TB_API_SESSION_CSRF_INFO, il);
        memcpy(msg + il, sid, sl);
        if (!HMAC(EVP_sha256(), k, TB_SIGN_KEY_LEN, msg, il + sl, mac, &n) || n != 32)
                return TB_ERR_INTERNAL;
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
                out[2 * i] = hex[mac[i] >> 4];
                out[2 * i + 1] = hex[mac[i] & 15];
        }
        out[64] = '\0';
        return TB_OK;
}

/* Is \p sent the CSRF value of \p sid? Compared in constant time. */
static bool tb_api_session_csrf_ok(const char *sid, const char *sent) {
        char want[65];
        if (!sent || strlen(sent) != 64 || tb_api_session_csrf(sid, want))
                return false;
        return CRYPTO_memcmp(want, sent, 64) == 0;
}

const char *tb_api_session_cookie(tb_http_req_t *req) {
        return MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, TB_API_SESSION_COOKIE);
}

/* ---- authentication ---------------------------------------------------------- */

tb_err_t tb_api_session_authenticate(tb_api_t *api, const char *sid, tb_principal_t **out,
                                     char *errstr, size_t errstr_size) {
        unsigned char h[32], token_hash[32];
        *out = NULL;
        if (!tb_api_session_id_ok(sid))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed session cookie '" TB_API_SESSION_COOKIE
                                 "': sign in again (POST /v1/session)");
        if (tb_api_session_hash(sid, h))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "session: SHA-256 failed");
        PGconn *conn = tb_store_acquire_timeout(api->store, 10000);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                 "session: no PostgreSQL connection free within 10 s "
                                 "(raise api.pool_size?)");
        bool found = false;
        int64_t expires_ms = 0;
        tb_err_t err = tb_store_session_find(conn, h, &found, token_hash, &expires_ms, errstr,
                                             errstr_size);
        tb_store_release(api->store, conn);
        if (err)
                return err;
        if (!found)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "the console session has expired or was signed out: sign in "
                                 "again (POST /v1/session with an API token)");
        char why[512];
        err = tb_identity_authenticate_hash(api->store, token_hash, TB_API_AUTH_CACHE_MS, out,
                                            why, sizeof(why));
        explicit_bzero(token_hash, sizeof(token_hash));
        if (err == TB_ERR_UNAUTHENTICATED)
                return tb_seterr(errstr, errstr_size, err,
                                 "the console session ended: its %s", why);
        if (err)
                return tb_seterr(errstr, errstr_size, err, "%s", why);
        return TB_OK;
}

void tb_api_credential(tb_http_req_t *req, char *out, size_t out_size) {
        const char *h = tb_http_header(req, "Authorization");
        const char *sid = tb_api_session_cookie(req);
        if (h && *h)
                tb_snprintf(out, out_size, "%s", h);
        else if (sid && *sid)
                tb_snprintf(out, out_size, "%s%s", TB_API_SESSION_CRED, sid);
        else
                out[0] = '\0';
}

tb_err_t tb_api_credential_authenticate(tb_api_t *api, const char *cred, tb_principal_t **out,
                                        char *errstr, size_t errstr_size) {
        size_t pl = strlen(TB_API_SESSION_CRED);
        if (!strncmp(cred, TB_API_SESSION_CRED, pl))
                return tb_api_session_authenticate(api, cred + pl, out, errstr, errstr_size);
        return tb_identity_authenticate(api->store, cred, TB_API_AUTH_CACHE_MS, out, errstr,
                                        errstr_size);
}

bool tb_api_session_auth(tb_api_t *api, tb_http_req_t *req, tb_http_resp_t *resp,
                         const char *sid, tb_principal_t **out) {
        char err[768];
        tb_err_t e = tb_api_session_authenticate(api, sid, out, err, sizeof(err));
        if (e)
                return tb_api_auth_failed(resp, e, "session", err, NULL);
        bool safe = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
        if (!safe && !tb_api_session_csrf_ok(sid, tb_http_header(req, TB_API_SESSION_CSRF_HDR))) {
                tb_principal_free(*out);
                *out = NULL;
                tb_http_error(resp, 403, "csrf_required", TB_API_SESSION_CSRF_HDR,
                              "a %s made with the console's session cookie needs the header "
                              TB_API_SESSION_CSRF_HDR " set to the 'csrf' value that POST "
                              "/v1/session and GET /v1/me answer; it is missing or wrong",
                              req->method);
                return false;
        }
        return true;
}

/* ---- routes ----------------------------------------------------------------------- */

/* Secure when the API speaks HTTPS, or a TLS reverse proxy says the browser
 * does (X-Forwarded-Proto): the flag only narrows where the cookie goes. */
static bool tb_api_session_secure(tb_api_t *api, tb_http_req_t *req) {
        const char *fp = tb_http_header(req, "X-Forwarded-Proto");
        return tb_http_tls_wanted(api->ctx->conf) || (fp && !strcmp(fp, "https"));
}

static json_t *tb_api_session_me_json(tb_api_t *api, const tb_principal_t *p) {
        json_t *groups = json_array();
        for (size_t i = 0; i < p->group_cnt; i++)
                json_array_append_new(groups, json_string(p->groups[i]));
        const char *ag = api->ctx->conf->api_admin_group;
        bool admin = ag && *ag && tb_principal_in_group(p, ag);
        return json_pack("{s:s, s:o, s:b, s:s}", "user", p->user_id, "groups", groups, "admin",
                         admin, "token_id", p->token_id);
}

void tb_api_session_create(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        static const char how[] = "send {\"token\": \"tbk_...\"} (a token from `taskbus admin "
                                  "user create` or `taskbus admin token create`)";
        if (req->body.len > TB_API_SESSION_BODY_MAX) {
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "the sign-in body is larger than %d bytes: %s",
                              TB_API_SESSION_BODY_MAX, how);
                return;
        }
        json_error_t je;
        json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, &je);
        if (!json_is_object(body)) {
                json_decref(body);
                tb_http_error(resp, 400, "invalid_argument", NULL,
                              "the body is not a JSON object: %s", how);
                return;
        }
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v) {
                if (strcmp(key, "token") != 0) {
                        char q[64];
                        tb_snprintf(q, sizeof(q), "%s", key);
                        for (char *c = q; *c; c++)
                                if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                                        *c = '?';
                        tb_http_error(resp, 400, "invalid_argument", q,
                                      "unknown field '%s': %s", q, how);
                        json_decref(body);
                        return;
                }
        }
        const char *token = json_string_value(json_object_get(body, "token"));
        if (!token || !*token) {
                json_decref(body);
                tb_http_error(resp, 400, "invalid_argument", "token",
                              "field 'token' is missing or not a string: %s", how);
                return;
        }
        char err[512];
        tb_principal_t *p = NULL;
        tb_err_t e = tb_identity_authenticate(api->store, token, TB_API_AUTH_CACHE_MS, &p, err,
                                              sizeof(err));
        json_decref(body);
        if (e == TB_ERR_UNAUTHENTICATED) {
                tb_http_error(resp, 401, "unauthenticated", "token", "%s", err);
                return;
        }
        if (e) {
                tb_warn(TB_API_SUB, "sign-in: %s", err);
                tb_http_error(resp, 503, "unavailable", NULL,
                              "cannot check the token right now (the database is unavailable); "
                              "retry later");
                tb_http_add_header(resp, "Retry-After", "5");
                return;
        }
        int64_t retry_ms = 0;
        if (!tb_ratelimit_take(api->rl, p->user_id, tb_mono_us(), &retry_ms)) {
                char ra[32];
                int64_t secs = (retry_ms + 999) / 1000;
                tb_snprintf(ra, sizeof(ra), "%" PRId64, secs < 1 ? 1 : secs);
                tb_http_error(resp, 429, "throttled", NULL, "user '%s' exceeds api.rate; retry "
                              "after %s s", p->user_id, ra);
                tb_http_add_header(resp, "Retry-After", ra);
                tb_principal_free(p);
                return;
        }
        unsigned char raw[32], h[32];
        char sid[TB_API_SESSION_ID_LEN + 1], csrf[65];
        static const char hex[] = "0123456789abcdef";
        if (tb_random_bytes(raw, sizeof(raw)) != TB_OK) {
                tb_principal_free(p);
                tb_http_error(resp, 500, "internal", NULL, "no random bytes for a session id");
                return;
        }
        memcpy(sid, TB_API_SESSION_PREFIX, 4);
        for (int i = 0; i < 32; i++) {
                sid[4 + 2 * i] = hex[raw[i] >> 4];
                sid[4 + 2 * i + 1] = hex[raw[i] & 15];
        }
        sid[TB_API_SESSION_ID_LEN] = '\0';
        explicit_bzero(raw, sizeof(raw));
        int64_t ttl_ms = api->ctx->conf->api_session_ttl_ms;
        if (tb_api_session_hash(sid, h) || tb_api_session_csrf(sid, csrf)) {
                tb_principal_free(p);
                tb_http_error(resp, 500, "internal", NULL, "cannot derive the session's keys");
                return;
        }
        PGconn *conn = tb_api_conn(api, resp);
        if (!conn) {
                tb_principal_free(p);
                return;
        }
        int64_t purged = 0;
        char perr[512];
        if (tb_store_session_purge(conn, TB_API_SESSION_PURGE_BATCH, &purged, perr,
                                   sizeof(perr)))
                tb_warn(TB_API_SUB, "%s", perr); /* housekeeping only */
        e = tb_store_session_insert(conn, h, p->token_id, ttl_ms, err, sizeof(err));
        tb_store_release(api->store, conn);
        if (e) {
                tb_principal_free(p);
                tb_api_db_error(resp, err);
                return;
        }
        char cookie[256], exp[32];
        tb_snprintf(cookie, sizeof(cookie),
                    TB_API_SESSION_COOKIE "=%s; Path=/; Max-Age=%" PRId64
                    "; HttpOnly; SameSite=Strict%s",
                    sid, ttl_ms / 1000, tb_api_session_secure(api, req) ? "; Secure" : "");
        tb_time_format(tb_now_ms() + ttl_ms, exp);
        json_t *j = tb_api_session_me_json(api, p);
        json_object_set_new(j, "csrf", json_string(csrf));
        json_object_set_new(j, "expires_at", json_string(exp));
        tb_info(TB_API_SUB, "user '%s' signed in to the console with token %s", p->user_id,
                p->token_id);
        tb_principal_free(p);
        explicit_bzero(sid, sizeof(sid));
        tb_http_add_header(resp, "Set-Cookie", cookie);
        tb_http_add_header(resp, "Cache-Control", "no-store");
        explicit_bzero(cookie, sizeof(cookie));
        tb_http_json(resp, 201, j);
}

void tb_api_session_me(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const tb_principal_t *p = tb_api_principal(req);
        json_t *j = tb_api_session_me_json(api, p);
        const char *h = tb_http_header(req, "Authorization");
        const char *sid = tb_api_session_cookie(req);
        char csrf[65];
        bool session = !(h && *h) && sid;
        json_object_set_new(j, "auth", json_string(session ? "session" : "token"));
        if (session && tb_api_session_csrf(sid, csrf) == TB_OK)
                json_object_set_new(j, "csrf", json_string(csrf));
        tb_http_add_header(resp, "Cache-Control", "no-store");
        tb_http_json(resp, 200, j);
}

void tb_api_session_delete(void *app, tb_http_req_t *req, tb_http_resp_t *resp) {
        tb_api_t *api = app;
        const char *h = tb_http_header(req, "Authorization");
        const char *sid = tb_api_session_cookie(req);
        if ((h && *h) || !sid) {
                tb_http_error(resp, 404, "not_found", NULL,
                              "no console session in this request: DELETE /v1/session signs "
                              "out the session of its cookie, and a bearer token has none "
                              "(revoke a token with `taskbus admin token revoke`)");
                return;
        }
        unsigned char hsh[32];
        char err[512];
        if (tb_api_session_hash(sid, hsh)) {
                tb_http_error(resp, 500, "internal", NULL, "session: SHA-256 failed");
                return;
        }
        PGconn *conn = tb_api_conn(api, resp);
        if (!conn)
                return;
        bool deleted = false;
        tb_err_t e = tb_store_session_delete(conn, hsh, &deleted, err, sizeof(err));
        tb_store_release(api->store, conn);
        if (e) {
                tb_api_db_error(resp, err);
                return;
        }
        char cookie[160];
        tb_snprintf(cookie, sizeof(cookie),
                    TB_API_SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict%s",
                    tb_api_session_secure(api, req) ? "; Secure" : "");
        tb_http_add_header(resp, "Set-Cookie", cookie);
        tb_info(TB_API_SUB, "user '%s' signed out of the console", tb_api_principal(req)->user_id);
        resp->status = 204;
        resp->body.len = 0;
}
