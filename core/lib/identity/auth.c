/**
 * @file identity/auth.c
 * @brief Principals and the authentication of bearer tokens against
 *        PostgreSQL (through store/identity.h); the token-format helpers the
 *        admin operations share.
 *
 * Tokens: 32 bytes from getrandom(2), shown once as "tbk_" + 64 hex digits.
 * Only SHA-256(token text) is stored (api_tokens.token_hash, unique), so a
 * lookup by hash is the comparison: nothing secret is compared byte by byte
 * in our code, and a database dump reveals no usable token.
 */
#include "identity/identity_internal.h"
#include "store/identity.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TB_IDENTITY_SUBSYS "identity"

_Static_assert(TB_HASH_LEN == TB_STORE_IDENTITY_HASH_LEN,
               "the store keys a token by the hash identity computes");

/** Longest Authorization value we even look at: a token is 68 bytes. */
#define TB_AUTH_MAX 512
/** Wait for a pooled connection at most this long while authenticating. */
#define TB_AUTH_ACQUIRE_MS 10000

/* ---- small helpers -------------------------------------------------------- */

static const char tb_identity_hexdig[] = "0123456789abcdef";

void tb_identity_hex(const unsigned char *in, size_t len, char *out) {
        for (size_t i = 0; i < len; i++) {
                out[2 * i] = tb_identity_hexdig[in[i] >> 4];
                out[2 * i + 1] = tb_identity_hexdig[in[i] & 15];
        }
        out[2 * len] = '\0';
}

bool tb_identity_is_lower_hex(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

tb_err_t tb_identity_sha256(const char *text, size_t len, unsigned char out[TB_HASH_LEN]) {
        unsigned int n = 0;
        if (!EVP_Digest(text, len, out, &n, EVP_sha256(), NULL) || n != TB_HASH_LEN)
                return TB_ERR_INTERNAL;
        return TB_OK;
}


static int tb_identity_strcmp_p(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Quote a user-supplied name for a message: printable ASCII only, bounded,
 * so a hostile argument cannot garble a terminal or a log line. */
void tb_identity_quote(const char *in, char *out, size_t out_size) {
        size_t o = 0;
        if (!out_size)
                return;
        for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p; p++) {
                if (o + 5 >= out_size) {
                        if (o + 4 < out_size) {
                                memcpy(out + o, "...", 3);
                                o += 3;
                        }
                        break;
                }
                if (*p >= 0x20 && *p < 0x7f) {
                        out[o++] = (char)*p;
                } else {
                        snprintf(out + o, out_size - o, "\\x%02x", *p);
                        o += 4;
                }
        }
        out[o] = '\0';
}

/* ---- principals ---------------------------------------------------------- */

void tb_principal_free(tb_principal_t *p) {
        if (!p)
                return;
        for (size_t i = 0; i < p->group_cnt; i++)
                free(p->groups[i]);
        free(p->groups);
        free(p);
}

tb_principal_t *tb_principal_dup(const tb_principal_t *p) {
        if (!p)
                return NULL;
        tb_principal_t *d = calloc(1, sizeof(*d));
        if (!d)
                return NULL;
        memcpy(d->user_id, p->user_id, sizeof(d->user_id));
        memcpy(d->token_id, p->token_id, sizeof(d->token_id));
        if (p->group_cnt) {
                d->groups = calloc(p->group_cnt, sizeof(char *));
                if (!d->groups)
                        goto fail;
                for (size_t i = 0; i < p->group_cnt; i++) {
                        if (!(d->groups[i] = strdup(p->groups[i])))
                                goto fail;
                        d->group_cnt++;
                }
        }
        return d;
fail:
        tb_principal_free(d);
        return NULL;
}

bool tb_principal_in_group(const tb_principal_t *p, const char *group) {
        if (!p || !group || !p->group_cnt)
                return false;
        /* groups are sorted (strcmp order): binary search */
        const char *key = group;
        return bsearch(&key, p->groups, p->group_cnt, sizeof(char *), tb_identity_strcmp_p) != NULL;
}

/* ---- authentication ------------------------------------------------------ */

/* Extract the token from "Bearer <token>" or a bare token into \p token. */
static tb_err_t tb_identity_parse_authorization(const char *auth, char token[TB_TOKEN_LEN + 1],
                                                char *errstr, size_t errstr_size) {
        static const char how[] = "send the header 'Authorization: Bearer <token>'";
        if (!auth)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "missing credentials: %s", how);
        size_t total = strnlen(auth, TB_AUTH_MAX + 1);
        if (total > TB_AUTH_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed credentials: the Authorization value is longer "
                                 "than %d bytes; %s",
                                 TB_AUTH_MAX, how);
        const char *p = auth;
        while (*p == ' ' || *p == '\t')
                p++;
        const char *end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' ||
                           end[-1] == '\n'))
                end--;
        if (end == p)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "missing credentials: %s", how);

        /* A scheme is a word followed by whitespace. */
        const char *sp = p;
        while (sp < end && *sp != ' ' && *sp != '\t')
                sp++;
        if (sp < end) {
                size_t slen = (size_t)(sp - p);
                if (slen != 6 || strncasecmp(p, "Bearer", 6) != 0) {
                        bool word = slen <= 20;
                        for (const char *c = p; word && c < sp; c++)
                                word = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                                       (*c >= '0' && *c <= '9') || *c == '-';
                        if (word)
                                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                                 "unsupported authorization scheme '%.*s': %s",
                                                 (int)slen, p, how);
                        return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                         "malformed credentials: %s", how);
                }
                p = sp;
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
        } else if (strncasecmp(p, "Bearer", 6) == 0 && end - p == 6) {
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "missing token after 'Bearer': %s", how);
        }
        size_t len = (size_t)(end - p);
        if (len != TB_TOKEN_LEN || strncmp(p, TB_TOKEN_PREFIX, TB_TOKEN_PREFIX_LEN) != 0 ||
            !tb_identity_is_lower_hex(p + TB_TOKEN_PREFIX_LEN, TB_TOKEN_LEN - TB_TOKEN_PREFIX_LEN))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed token: a taskbus token is '" TB_TOKEN_PREFIX
                                 "' followed by 64 lowercase hex digits; %s",
                                 how);
        memcpy(token, p, TB_TOKEN_LEN);
        token[TB_TOKEN_LEN] = '\0';
        return TB_OK;
}

/* Look the hash up in PostgreSQL and build the principal. */
/* The one answer to a token no row has, cached or not. */
static tb_err_t tb_identity_unknown_err(char *errstr, size_t errstr_size) {
        return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                         "unknown token: it was not issued by this taskbus or has been "
                         "deleted; ask an administrator for a new one");
}

static tb_err_t tb_identity_lookup(tb_store_t *store, const unsigned char hash[TB_HASH_LEN],
                                   tb_principal_t **out, bool *unknown, char *errstr,
                                   size_t errstr_size) {
        tb_store_identity_auth_t *row = NULL;
        tb_principal_t *p = NULL;
        tb_err_t err;

        PGconn *conn = tb_store_acquire_timeout(store, TB_AUTH_ACQUIRE_MS);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                 "authenticate: no PostgreSQL connection free within %d ms "
                                 "(raise postgres.pool_size?)",
                                 TB_AUTH_ACQUIRE_MS);
        if ((err = tb_store_identity_token_find(conn, hash, &row, errstr, errstr_size)))
                goto done;
        if (!row) {
                *unknown = true;
                err = tb_identity_unknown_err(errstr, errstr_size);
                goto done;
        }
        const char *token_id = row->token_id;
        const char *user_id = row->user_id;
        if (row->revoked) {
                char q[48];
                tb_identity_quote(token_id, q, sizeof(q));
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "token %s has been revoked; ask an administrator for a new one", q);
                goto done;
        }
        if (row->expired) {
                char q[48];
                tb_identity_quote(token_id, q, sizeof(q));
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "token %s has expired; ask an administrator for a new one", q);
                goto done;
        }
        if (row->user_disabled) {
                char q[160];
                tb_identity_quote(user_id, q, sizeof(q));
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "user '%s' is disabled; an administrator can enable it with: "
                                "taskbus admin user enable %s",
                                q, q);
                goto done;
        }
        if (strlen(user_id) >= sizeof(p->user_id) || strlen(token_id) >= sizeof(p->token_id)) {
                /* only reachable if someone bypassed our validation with SQL */
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "the token's user or id in the database is too long; "
                                "recreate them with taskbus admin");
                goto done;
        }
        if (!(p = calloc(1, sizeof(*p)))) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "authenticate: out of memory");
                goto done;
        }
        memcpy(p->user_id, user_id, strlen(user_id) + 1);
        memcpy(p->token_id, token_id, strlen(token_id) + 1);
        /* The principal takes the group list over. */
        p->groups = row->groups;
        p->group_cnt = row->group_cnt;
        row->groups = NULL;
        row->group_cnt = 0;
        /* The store returns them in "C" order, strcmp order already; sorting
         * again keeps tb_principal_in_group() correct whatever the SQL. */
        if (p->group_cnt)
                qsort(p->groups, p->group_cnt, sizeof(char *), tb_identity_strcmp_p);

        if (row->touch_due) {
                /* At most once a minute per token (the store skips it when
                 * another authenticator was faster). */
                char uerr[512];
                if (tb_store_identity_token_touch(conn, token_id, uerr, sizeof(uerr)) != TB_OK)
                        tb_warn(TB_IDENTITY_SUBSYS, "%s", uerr); /* bookkeeping only */
        }
        *out = p;
        p = NULL;
        err = TB_OK;
done:
        tb_principal_free(p);
        tb_store_identity_auth_free(row);
        tb_store_release(store, conn);
        return err;
}

tb_err_t tb_identity_authenticate(tb_store_t *store, const char *authorization,
                                  int64_t cache_ms, tb_principal_t **out, char *errstr,
                                  size_t errstr_size) {
        char token[TB_TOKEN_LEN + 1];
        unsigned char hash[TB_HASH_LEN];
        tb_err_t err;

        if (!out)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "authenticate: no output pointer");
        *out = NULL;
        if (!store)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "authenticate: no store");
        if ((err = tb_identity_parse_authorization(authorization, token, errstr, errstr_size)))
                return err;
        err = tb_identity_sha256(token, TB_TOKEN_LEN, hash);
        explicit_bzero(token, sizeof(token));
        if (err)
                return tb_seterr(errstr, errstr_size, err, "authenticate: SHA-256 failed");
        return tb_identity_authenticate_hash(store, hash, cache_ms, out, errstr, errstr_size);
}

tb_err_t tb_identity_authenticate_hash(tb_store_t *store, const unsigned char hash[32],
                                       int64_t cache_ms, tb_principal_t **out, char *errstr,
                                       size_t errstr_size) {
        tb_principal_t *p = NULL;
        tb_err_t err;
        if (!out || !store)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "authenticate: no output pointer or store");
        *out = NULL;
        if (cache_ms > 0 && (p = tb_identity_cache_get(store, hash))) {
                *out = p;
                return TB_OK;
        }
        if (cache_ms > 0 && tb_identity_cache_unknown(store, hash))
                return tb_identity_unknown_err(errstr, errstr_size);
        bool unknown = false;
        if ((err = tb_identity_lookup(store, hash, &p, &unknown, errstr, errstr_size))) {
                if (unknown && cache_ms > 0)
                        tb_identity_cache_put_unknown(store, hash, cache_ms);
                return err;
        }
        if (cache_ms > 0)
                tb_identity_cache_put(store, hash, p, cache_ms);
        *out = p;
        return TB_OK;
}
