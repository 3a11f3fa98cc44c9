/**
 * @file identity/identity.c
 * @brief Users, groups and API tokens in PostgreSQL; bearer-token
 *        authentication with a small in-process cache; the audited admin
 *        operations; the per-key rate limiter.
 *
 * Tokens: 32 bytes from getrandom(2), shown once as "tbk_" + 64 hex digits.
 * Only SHA-256(token text) is stored (api_tokens.token_hash, unique), so a
 * lookup by hash is the comparison: nothing secret is compared byte by byte
 * in our code, and a database dump reveals no usable token.
 *
 * Cache: positive results only, keyed by (store, token hash), bounded, each
 * entry living cache_ms. Negative results are never cached so that a token
 * created a moment ago works at once and so that guessing cannot fill memory.
 *
 * Rate limiter: the token bucket written as GCRA ("theoretical arrival
 * time") in integer nanoseconds, so retry-after is exact to the millisecond
 * and a bucket is one int64. A bucket whose TAT has passed is full, i.e.
 * identical to a missing one, which is why evicting idle buckets is lossless.
 */
#include "identity/identity.h"

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TB_ID_SUBSYS "identity"

#define TB_TOKEN_PREFIX "tbk_"
#define TB_TOKEN_PREFIX_LEN 4
#define TB_TOKEN_RAW_LEN 32
#define TB_TOKEN_LEN (TB_TOKEN_PREFIX_LEN + 2 * TB_TOKEN_RAW_LEN) /* 68 */
#define TB_TOKEN_ID_PREFIX "tok_"
#define TB_TOKEN_ID_HEX 12
#define TB_HASH_LEN 32

/** Longest Authorization value we even look at: a token is 68 bytes. */
#define TB_AUTH_MAX 512
/** Wait for a pooled connection at most this long while authenticating. */
#define TB_AUTH_ACQUIRE_MS 10000

#define TB_ID_CACHE_BUCKETS 1024
#define TB_ID_CACHE_MAX 4096

/* ---- small helpers -------------------------------------------------------- */

static const char tb_hexdig[] = "0123456789abcdef";

static void tb_id_hex(const unsigned char *in, size_t len, char *out) {
        for (size_t i = 0; i < len; i++) {
                out[2 * i] = tb_hexdig[in[i] >> 4];
                out[2 * i + 1] = tb_hexdig[in[i] & 15];
        }
        out[2 * len] = '\0';
}

static bool tb_id_is_lower_hex(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

static tb_err_t tb_id_sha256(const char *text, size_t len, unsigned char out[TB_HASH_LEN]) {
        unsigned int n = 0;
        if (!EVP_Digest(text, len, out, &n, EVP_sha256(), NULL) || n != TB_HASH_LEN)
                return TB_ERR_INTERNAL;
        return TB_OK;
}

/* The bytea text form PostgreSQL accepts as a parameter: "\x" + hex. */
static void tb_id_bytea_param(const unsigned char hash[TB_HASH_LEN],
                              char out[2 * TB_HASH_LEN + 3]) {
        out[0] = '\\';
        out[1] = 'x';
        tb_id_hex(hash, TB_HASH_LEN, out + 2);
}

static void tb_id_token_id(const unsigned char hash[TB_HASH_LEN], char out[32]) {
        char hex[2 * TB_HASH_LEN + 1];
        tb_id_hex(hash, TB_HASH_LEN, hex);
        snprintf(out, 32, TB_TOKEN_ID_PREFIX "%.*s", TB_TOKEN_ID_HEX, hex);
}

static int tb_id_strcmp_p(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

bool tb_identity_name_valid(const char *name) {
        if (!name)
                return false;
        size_t n = 0;
        for (const char *p = name; *p; p++, n++) {
                char c = *p;
                if (n >= TB_IDENTITY_NAME_MAX)
                        return false;
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' || c == '-'))
                        return false;
        }
        return n > 0;
}

/* Quote a user-supplied name for a message: printable ASCII only, bounded,
 * so a hostile argument cannot garble a terminal or a log line. */
static void tb_id_quote(const char *in, char *out, size_t out_size) {
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

tb_err_t tb_identity_name_check(const char *field, const char *name, char *errstr,
                                size_t errstr_size) {
        if (tb_identity_name_valid(name))
                return TB_OK;
        char q[96];
        tb_id_quote(name, q, sizeof(q));
        size_t len = name ? strlen(name) : 0;
        if (len == 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s is empty: use 1 to %d characters from [A-Za-z0-9._@-]",
                                 field, TB_IDENTITY_NAME_MAX);
        if (len > TB_IDENTITY_NAME_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s '%s' is too long (%zu characters): use 1 to %d "
                                 "characters from [A-Za-z0-9._@-]",
                                 field, q, len, TB_IDENTITY_NAME_MAX);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s '%s' is invalid: use 1 to %d characters from [A-Za-z0-9._@-]",
                         field, q, TB_IDENTITY_NAME_MAX);
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
        return bsearch(&key, p->groups, p->group_cnt, sizeof(char *), tb_id_strcmp_p) != NULL;
}

/* ---- authentication cache ------------------------------------------------ */

typedef struct tb_id_cache_entry {
        struct tb_id_cache_entry *next;
        const void *store;
        unsigned char hash[TB_HASH_LEN];
        int64_t expires_us; /* monotonic */
        tb_principal_t *principal;
} tb_id_cache_entry_t;

static struct {
        pthread_mutex_t lock;
        tb_id_cache_entry_t *buckets[TB_ID_CACHE_BUCKETS];
        size_t count;
} tb_id_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t tb_id_cache_slot(const unsigned char hash[TB_HASH_LEN]) {
        /* SHA-256 output is uniform: its first bytes are a fine hash */
        uint32_t h = (uint32_t)hash[0] | (uint32_t)hash[1] << 8 | (uint32_t)hash[2] << 16 |
                     (uint32_t)hash[3] << 24;
        return h % TB_ID_CACHE_BUCKETS;
}

static void tb_id_cache_entry_free(tb_id_cache_entry_t *e) {
        tb_principal_free(e->principal);
        free(e);
}

/* Drop expired entries (every entry if \p all). @locks tb_id_cache.lock held. */
static void tb_id_cache_prune(int64_t now_us, bool all) {
        for (size_t b = 0; b < TB_ID_CACHE_BUCKETS; b++) {
                tb_id_cache_entry_t **pp = &tb_id_cache.buckets[b];
                while (*pp) {
                        tb_id_cache_entry_t *e = *pp;
                        if (all || e->expires_us <= now_us) {
                                *pp = e->next;
                                tb_id_cache_entry_free(e);
                                tb_id_cache.count--;
                        } else {
                                pp = &e->next;
                        }
                }
        }
}

/* Drop the entry closest to expiry. @locks tb_id_cache.lock held. */
static void tb_id_cache_evict_one(void) {
        tb_id_cache_entry_t **victim = NULL;
        for (size_t b = 0; b < TB_ID_CACHE_BUCKETS; b++)
                for (tb_id_cache_entry_t **pp = &tb_id_cache.buckets[b]; *pp; pp = &(*pp)->next)
                        if (!victim || (*pp)->expires_us < (*victim)->expires_us)
                                victim = pp;
        if (victim) {
                tb_id_cache_entry_t *e = *victim;
                *victim = e->next;
                tb_id_cache_entry_free(e);
                tb_id_cache.count--;
        }
}

/* @returns a copy of the cached principal (caller frees), or NULL on a miss. */
static tb_principal_t *tb_id_cache_get(const void *store, const unsigned char hash[TB_HASH_LEN]) {
        tb_principal_t *p = NULL;
        int64_t now = tb_mono_us();
        pthread_mutex_lock(&tb_id_cache.lock);
        tb_id_cache_entry_t **pp = &tb_id_cache.buckets[tb_id_cache_slot(hash)];
        while (*pp) {
                tb_id_cache_entry_t *e = *pp;
                if (e->store == store && !memcmp(e->hash, hash, TB_HASH_LEN)) {
                        if (e->expires_us > now) {
                                p = tb_principal_dup(e->principal);
                        } else {
                                *pp = e->next;
                                tb_id_cache_entry_free(e);
                                tb_id_cache.count--;
                        }
                        break;
                }
                pp = &e->next;
        }
        pthread_mutex_unlock(&tb_id_cache.lock);
        return p;
}

static void tb_id_cache_put(const void *store, const unsigned char hash[TB_HASH_LEN],
                            const tb_principal_t *p, int64_t cache_ms) {
        tb_id_cache_entry_t *n = calloc(1, sizeof(*n));
        if (!n || !(n->principal = tb_principal_dup(p))) {
                free(n);
                return; /* not caching is always correct */
        }
        int64_t now = tb_mono_us();
        n->store = store;
        memcpy(n->hash, hash, TB_HASH_LEN);
        n->expires_us = cache_ms > INT64_MAX / 1000 - now ? INT64_MAX : now + cache_ms * 1000;

        pthread_mutex_lock(&tb_id_cache.lock);
        size_t slot = tb_id_cache_slot(hash);
        for (tb_id_cache_entry_t **pp = &tb_id_cache.buckets[slot]; *pp; pp = &(*pp)->next) {
                tb_id_cache_entry_t *e = *pp;
                if (e->store == store && !memcmp(e->hash, hash, TB_HASH_LEN)) {
                        *pp = e->next; /* another thread filled it: replace */
                        tb_id_cache_entry_free(e);
                        tb_id_cache.count--;
                        break;
                }
        }
        if (tb_id_cache.count >= TB_ID_CACHE_MAX)
                tb_id_cache_prune(now, false);
        while (tb_id_cache.count >= TB_ID_CACHE_MAX)
                tb_id_cache_evict_one();
        n->next = tb_id_cache.buckets[slot];
        tb_id_cache.buckets[slot] = n;
        tb_id_cache.count++;
        pthread_mutex_unlock(&tb_id_cache.lock);
}

void tb_identity_cache_clear(void) {
        pthread_mutex_lock(&tb_id_cache.lock);
        tb_id_cache_prune(0, true);
        pthread_mutex_unlock(&tb_id_cache.lock);
}

/* ---- authentication ------------------------------------------------------ */

/* Extract the token from "Bearer <token>" or a bare token into \p token. */
static tb_err_t tb_id_parse_authorization(const char *auth, char token[TB_TOKEN_LEN + 1],
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
            !tb_id_is_lower_hex(p + TB_TOKEN_PREFIX_LEN, TB_TOKEN_LEN - TB_TOKEN_PREFIX_LEN))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "malformed token: a taskbus token is '" TB_TOKEN_PREFIX
                                 "' followed by 64 lowercase hex digits; %s",
                                 how);
        memcpy(token, p, TB_TOKEN_LEN);
        token[TB_TOKEN_LEN] = '\0';
        return TB_OK;
}

/* Look the hash up in PostgreSQL and build the principal. */
static tb_err_t tb_id_lookup(tb_store_t *store, const unsigned char hash[TB_HASH_LEN],
                             tb_principal_t **out, char *errstr, size_t errstr_size) {
        char hparam[2 * TB_HASH_LEN + 3];
        tb_id_bytea_param(hash, hparam);
        const char *params[] = {hparam};
        PGresult *res = NULL;
        tb_principal_t *p = NULL;
        tb_err_t err;

        PGconn *conn = tb_store_acquire_timeout(store, TB_AUTH_ACQUIRE_MS);
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG,
                                 "authenticate: no PostgreSQL connection free within %d ms "
                                 "(raise postgres.pool_size?)",
                                 TB_AUTH_ACQUIRE_MS);
        /* One row per group (or one row with a NULL group); the token row is
         * found through the unique index on token_hash. */
        err = tb_store_exec(conn, "authenticate: look up token",
                            "SELECT t.id, t.user_id, t.revoked_at IS NOT NULL, u.disabled, "
                            "       (t.last_used_at IS NULL OR "
                            "        t.last_used_at < now() - interval '1 minute'), "
                            "       m.group_name "
                            "FROM api_tokens t JOIN users u ON u.id = t.user_id "
                            "LEFT JOIN group_members m ON m.user_id = t.user_id "
                            "WHERE t.token_hash = $1::bytea "
                            "ORDER BY m.group_name COLLATE \"C\"",
                            1, params, &res, errstr, errstr_size);
        if (err)
                goto done;
        int rows = PQntuples(res);
        if (rows == 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "unknown token: it was not issued by this taskbus or has been "
                                "deleted; ask an administrator for a new one");
                goto done;
        }
        const char *token_id = PQgetvalue(res, 0, 0);
        const char *user_id = PQgetvalue(res, 0, 1);
        if (!strcmp(PQgetvalue(res, 0, 2), "t")) {
                char q[48];
                tb_id_quote(token_id, q, sizeof(q));
                err = tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                "token %s has been revoked; ask an administrator for a new one", q);
                goto done;
        }
        if (!strcmp(PQgetvalue(res, 0, 3), "t")) {
                char q[160];
                tb_id_quote(user_id, q, sizeof(q));
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
        if (!(p = calloc(1, sizeof(*p))))
                goto nomem;
        memcpy(p->user_id, user_id, strlen(user_id) + 1);
        memcpy(p->token_id, token_id, strlen(token_id) + 1);
        if (!PQgetisnull(res, 0, 5)) {
                if (!(p->groups = calloc((size_t)rows, sizeof(char *))))
                        goto nomem;
                for (int i = 0; i < rows; i++) {
                        if (!(p->groups[i] = strdup(PQgetvalue(res, i, 5))))
                                goto nomem;
                        p->group_cnt++;
                }
                /* ORDER BY ... COLLATE "C" is strcmp order already; sorting
                 * again keeps tb_principal_in_group() correct whatever the SQL. */
                qsort(p->groups, p->group_cnt, sizeof(char *), tb_id_strcmp_p);
        }

        if (!strcmp(PQgetvalue(res, 0, 4), "t")) {
                /* At most once a minute per token: the WHERE makes racing
                 * authenticators (other threads, other processes) skip it. */
                char uerr[512];
                const char *uparams[] = {token_id};
                if (tb_store_exec(conn, "authenticate: update last_used_at",
                                  "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 "
                                  "AND (last_used_at IS NULL OR "
                                  "     last_used_at < now() - interval '1 minute')",
                                  1, uparams, NULL, uerr, sizeof(uerr)) != TB_OK)
                        tb_warn(TB_ID_SUBSYS, "%s", uerr); /* bookkeeping only */
        }
        *out = p;
        p = NULL;
        err = TB_OK;
        goto done;
nomem:
        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "authenticate: out of memory");
done:
        tb_principal_free(p);
        PQclear(res);
        tb_store_release(store, conn);
        return err;
}

tb_err_t tb_identity_authenticate(tb_store_t *store, const char *authorization,
                                  int64_t cache_ms, tb_principal_t **out, char *errstr,
                                  size_t errstr_size) {
        char token[TB_TOKEN_LEN + 1];
        unsigned char hash[TB_HASH_LEN];
        tb_principal_t *p = NULL;
        tb_err_t err;

        if (!out)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "authenticate: no output pointer");
        *out = NULL;
        if (!store)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "authenticate: no store");
        if ((err = tb_id_parse_authorization(authorization, token, errstr, errstr_size)))
                return err;
        err = tb_id_sha256(token, TB_TOKEN_LEN, hash);
        explicit_bzero(token, sizeof(token));
        if (err)
                return tb_seterr(errstr, errstr_size, err, "authenticate: SHA-256 failed");

        if (cache_ms > 0 && (p = tb_id_cache_get(store, hash))) {
                *out = p;
                return TB_OK;
        }
        if ((err = tb_id_lookup(store, hash, &p, errstr, errstr_size)))
                return err;
        if (cache_ms > 0)
                tb_id_cache_put(store, hash, p, cache_ms);
        *out = p;
        return TB_OK;
}

/* ---- admin operations ---------------------------------------------------- */

/* Write the admin_audit row; \p details is consumed. */
static tb_err_t tb_id_audit(PGconn *conn, const char *actor, const char *action,
                            const char *target, json_t *details, char *errstr,
                            size_t errstr_size) {
        char *text = details ? json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(details);
        if (!text)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                 "audit %s: cannot encode the details", action);
        const char *params[] = {actor, action, target, text};
        tb_err_t err = tb_store_exec(conn, "write admin_audit",
                                     "INSERT INTO admin_audit (actor, action, target, details) "
                                     "VALUES ($1, $2, $3, $4::jsonb)",
                                     4, params, NULL, errstr, errstr_size);
        free(text);
        return err;
}

static tb_err_t tb_id_check_actor(const char *actor, char *errstr, size_t errstr_size) {
        if (!actor || !*actor || strlen(actor) > 512)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "actor: must name who performs the action (1 to 512 bytes)");
        return TB_OK;
}

/* Start an admin transaction after the common checks. */
static tb_err_t tb_id_begin(PGconn *conn, const char *actor, char *errstr, size_t errstr_size) {
        tb_err_t err;
        if (!conn)
                return tb_seterr(errstr, errstr_size, TB_ERR_PG, "no PostgreSQL connection");
        if ((err = tb_id_check_actor(actor, errstr, errstr_size)))
                return err;
        return tb_store_begin(conn, errstr, errstr_size);
}

/* Run a statement and report whether it returned at least one row. */
static tb_err_t tb_id_exec_any(PGconn *conn, const char *what, const char *sql, int nparams,
                               const char *const *params, bool *found, char *errstr,
                               size_t errstr_size) {
        PGresult *res = NULL;
        tb_err_t err = tb_store_exec(conn, what, sql, nparams, params, &res, errstr, errstr_size);
        if (!err)
                *found = PQntuples(res) > 0;
        PQclear(res);
        return err;
}

static tb_err_t tb_id_no_user(const char *user_id, char *errstr, size_t errstr_size) {
        return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                         "no user '%s'; create it with: taskbus admin user create %s "
                         "--groups GROUP",
                         user_id, user_id);
}

/* Generate a token for \p user_id and insert its hash (inside the caller's
 * transaction). */
static tb_err_t tb_id_token_insert(PGconn *conn, const char *user_id, char token_out[72],
                                   char token_id_out[32], char *errstr, size_t errstr_size) {
        /* The 48-bit public id may collide (the 256-bit hash will not): on
         * a collision ON CONFLICT inserts nothing and we draw again. */
        for (int attempt = 0; attempt < 5; attempt++) {
                unsigned char raw[TB_TOKEN_RAW_LEN], hash[TB_HASH_LEN];
                char token[TB_TOKEN_LEN + 1], id[32], hparam[2 * TB_HASH_LEN + 3];
                if (tb_random_bytes(raw, sizeof(raw)) != TB_OK)
                        return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                         "token: getrandom failed");
                memcpy(token, TB_TOKEN_PREFIX, TB_TOKEN_PREFIX_LEN);
                tb_id_hex(raw, sizeof(raw), token + TB_TOKEN_PREFIX_LEN);
                explicit_bzero(raw, sizeof(raw));
                if (tb_id_sha256(token, TB_TOKEN_LEN, hash) != TB_OK) {
                        explicit_bzero(token, sizeof(token));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                         "token: SHA-256 failed");
                }
                tb_id_token_id(hash, id);
                tb_id_bytea_param(hash, hparam);
                const char *params[] = {id, user_id, hparam};
                bool inserted = false;
                tb_err_t err = tb_id_exec_any(conn, "insert token",
                                              "INSERT INTO api_tokens (id, user_id, token_hash) "
                                              "VALUES ($1, $2, $3::bytea) ON CONFLICT DO NOTHING "
                                              "RETURNING id",
                                              3, params, &inserted, errstr, errstr_size);
                if (err) {
                        explicit_bzero(token, sizeof(token));
                        return err;
                }
                if (inserted) {
                        memcpy(token_out, token, TB_TOKEN_LEN + 1);
                        memcpy(token_id_out, id, strlen(id) + 1);
                        explicit_bzero(token, sizeof(token));
                        return TB_OK;
                }
                explicit_bzero(token, sizeof(token));
        }
        return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                         "token: 5 id collisions in a row; is the random source broken?");
}

tb_err_t tb_identity_user_create(PGconn *conn, const char *actor, const char *user_id,
                                 const char *const *groups, size_t group_cnt,
                                 char token_out[72], char token_id_out[32], char *errstr,
                                 size_t errstr_size) {
        tb_err_t err;
        json_t *jgroups = NULL, *jcreated = NULL;
        bool found = false;

        if ((err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        if (group_cnt && !groups)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "groups: NULL list");
        for (size_t i = 0; i < group_cnt; i++)
                if ((err = tb_identity_name_check("group name", groups[i], errstr, errstr_size)))
                        return err;
        if ((err = tb_id_begin(conn, actor, errstr, errstr_size)))
                return err;

        const char *up[] = {user_id};
        if ((err = tb_id_exec_any(conn, "insert user",
                                  "INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING "
                                  "RETURNING id",
                                  1, up, &found, errstr, errstr_size)))
                goto fail;
        if (!found) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "user '%s' already exists; give it another token with: "
                                "taskbus admin token create %s",
                                user_id, user_id);
                goto fail;
        }
        jgroups = json_array();
        jcreated = json_array();
        if (!jgroups || !jcreated)
                goto nomem;
        for (size_t i = 0; i < group_cnt; i++) {
                bool dup = false;
                for (size_t j = 0; j < i && !dup; j++)
                        dup = !strcmp(groups[i], groups[j]);
                if (dup)
                        continue;
                const char *gp[] = {groups[i], user_id};
                if ((err = tb_id_exec_any(conn, "create group",
                                          "INSERT INTO security_groups (name) VALUES ($1) "
                                          "ON CONFLICT DO NOTHING RETURNING name",
                                          1, gp, &found, errstr, errstr_size)))
                        goto fail;
                if (found && json_array_append_new(jcreated, json_string(groups[i])))
                        goto nomem;
                if ((err = tb_store_exec(conn, "add group member",
                                         "INSERT INTO group_members (group_name, user_id) "
                                         "VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                         2, gp, NULL, errstr, errstr_size)))
                        goto fail;
                if (json_array_append_new(jgroups, json_string(groups[i])))
                        goto nomem;
        }
        if ((err = tb_id_token_insert(conn, user_id, token_out, token_id_out, errstr,
                                      errstr_size)))
                goto fail;
        json_t *details = json_pack("{s:o, s:o, s:s}", "groups", jgroups, "created_groups",
                                    jcreated, "token_id", token_id_out);
        jgroups = jcreated = NULL; /* "o" steals them, even on failure */
        if ((err = tb_id_audit(conn, actor, "user.create", user_id, details, errstr,
                               errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        return TB_OK;
nomem:
        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "user create: out of memory");
fail:
        json_decref(jgroups);
        json_decref(jcreated);
        tb_store_rollback(conn);
        explicit_bzero(token_out, 72);
        return err;
}

tb_err_t tb_identity_user_disable(PGconn *conn, const char *actor, const char *user_id,
                                  bool disabled, char *errstr, size_t errstr_size) {
        tb_err_t err;
        PGresult *res = NULL;
        if ((err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        if ((err = tb_id_begin(conn, actor, errstr, errstr_size)))
                return err;
        const char *p[] = {user_id, disabled ? "true" : "false"};
        if ((err = tb_store_exec(conn, "read user",
                                 "SELECT disabled FROM users WHERE id = $1 FOR UPDATE", 1, p,
                                 &res, errstr, errstr_size)))
                goto fail;
        if (PQntuples(res) == 0) {
                err = tb_id_no_user(user_id, errstr, errstr_size);
                goto fail;
        }
        bool was = !strcmp(PQgetvalue(res, 0, 0), "t");
        PQclear(res);
        res = NULL;
        if (was != disabled &&
            (err = tb_store_exec(conn, disabled ? "disable user" : "enable user",
                                 "UPDATE users SET disabled = $2::boolean WHERE id = $1", 2, p,
                                 NULL, errstr, errstr_size)))
                goto fail;
        if ((err = tb_id_audit(conn, actor, disabled ? "user.disable" : "user.enable", user_id,
                               json_pack("{s:b}", "changed", was != disabled), errstr,
                               errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        return TB_OK;
fail:
        PQclear(res);
        tb_store_rollback(conn);
        return err;
}

tb_err_t tb_identity_token_create(PGconn *conn, const char *actor, const char *user_id,
                                  char token_out[72], char token_id_out[32], char *errstr,
                                  size_t errstr_size) {
        tb_err_t err;
        bool found = false;
        if ((err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        if ((err = tb_id_begin(conn, actor, errstr, errstr_size)))
                return err;
        const char *p[] = {user_id};
        /* FOR SHARE: a concurrent delete of the user cannot slip in between */
        if ((err = tb_id_exec_any(conn, "read user",
                                  "SELECT 1 FROM users WHERE id = $1 FOR SHARE", 1, p, &found,
                                  errstr, errstr_size)))
                goto fail;
        if (!found) {
                err = tb_id_no_user(user_id, errstr, errstr_size);
                goto fail;
        }
        if ((err = tb_id_token_insert(conn, user_id, token_out, token_id_out, errstr,
                                      errstr_size)))
                goto fail;
        if ((err = tb_id_audit(conn, actor, "token.create", token_id_out,
                               json_pack("{s:s}", "user", user_id), errstr, errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        return TB_OK;
fail:
        tb_store_rollback(conn);
        explicit_bzero(token_out, 72);
        return err;
}

tb_err_t tb_identity_token_revoke(PGconn *conn, const char *actor, const char *token_id,
                                  char *errstr, size_t errstr_size) {
        tb_err_t err;
        PGresult *res = NULL;
        size_t len = token_id ? strlen(token_id) : 0;

        if (len >= TB_TOKEN_PREFIX_LEN && !strncmp(token_id, TB_TOKEN_PREFIX, TB_TOKEN_PREFIX_LEN))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "token id: that is a secret token, not a token id; pass its "
                                 "id (tok_...) as shown by: taskbus admin token list USER");
        if (len != 4 + TB_TOKEN_ID_HEX || strncmp(token_id, TB_TOKEN_ID_PREFIX, 4) != 0 ||
            !tb_id_is_lower_hex(token_id + 4, TB_TOKEN_ID_HEX)) {
                char q[64];
                tb_id_quote(token_id, q, sizeof(q));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "token id '%s' is invalid: expected '" TB_TOKEN_ID_PREFIX
                                 "' followed by %d lowercase hex digits, as shown by: "
                                 "taskbus admin token list",
                                 q, TB_TOKEN_ID_HEX);
        }
        if ((err = tb_id_begin(conn, actor, errstr, errstr_size)))
                return err;
        const char *p[] = {token_id};
        if ((err = tb_store_exec(conn, "read token",
                                 "SELECT user_id, revoked_at IS NOT NULL, "
                                 "       (extract(epoch FROM revoked_at) * 1000)::bigint "
                                 "FROM api_tokens WHERE id = $1 FOR UPDATE",
                                 1, p, &res, errstr, errstr_size)))
                goto fail;
        if (PQntuples(res) == 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                "no token '%s'; list tokens with: taskbus admin token list",
                                token_id);
                goto fail;
        }
        if (!strcmp(PQgetvalue(res, 0, 1), "t")) {
                char at[32];
                tb_time_format(strtoll(PQgetvalue(res, 0, 2), NULL, 10), at);
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "token %s was already revoked at %s", token_id, at);
                goto fail;
        }
        json_t *details = json_pack("{s:s}", "user", PQgetvalue(res, 0, 0));
        PQclear(res);
        res = NULL;
        if ((err = tb_store_exec(conn, "revoke token",
                                 "UPDATE api_tokens SET revoked_at = now() WHERE id = $1", 1, p,
                                 NULL, errstr, errstr_size))) {
                json_decref(details);
                goto fail;
        }
        if ((err = tb_id_audit(conn, actor, "token.revoke", token_id, details, errstr,
                               errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        return TB_OK;
fail:
        PQclear(res);
        tb_store_rollback(conn);
        return err;
}

tb_err_t tb_identity_group_add_member(PGconn *conn, const char *actor, const char *group,
                                      const char *user_id, char *errstr, size_t errstr_size) {
        tb_err_t err;
        bool found = false, created = false;
        if ((err = tb_identity_name_check("group name", group, errstr, errstr_size)) ||
            (err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        if ((err = tb_id_begin(conn, actor, errstr, errstr_size)))
                return err;
        const char *p[] = {group, user_id};
        if ((err = tb_id_exec_any(conn, "read user", "SELECT 1 FROM users WHERE id = $1 FOR SHARE",
                                  1, p + 1, &found, errstr, errstr_size)))
                goto fail;
        if (!found) {
                err = tb_id_no_user(user_id, errstr, errstr_size);
                goto fail;
        }
        if ((err = tb_id_exec_any(conn, "create group",
                                  "INSERT INTO security_groups (name) VALUES ($1) "
                                  "ON CONFLICT DO NOTHING RETURNING name",
                                  1, p, &created, errstr, errstr_size)))
                goto fail;
        if ((err = tb_id_exec_any(conn, "add group member",
                                  "INSERT INTO group_members (group_name, user_id) "
                                  "VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING user_id",
                                  2, p, &found, errstr, errstr_size)))
                goto fail;
        if (!found) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                "user '%s' is already a member of group '%s'", user_id, group);
                goto fail;
        }
        if ((err = tb_id_audit(conn, actor, "group.add-member", group,
                               json_pack("{s:s, s:b}", "user", user_id, "created_group",
                                         created),
                               errstr, errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        return TB_OK;
fail:
        tb_store_rollback(conn);
        return err;
}

tb_err_t tb_identity_group_remove_member(PGconn *conn, const char *actor, const char *group,
                                         const char *user_id, char *errstr, size_t errstr_size) {
        tb_err_t err;
        bool found = false;
        if ((err = tb_identity_name_check("group name", group, errstr, errstr_size)) ||
            (err = tb_identity_name_check("user name", user_id, errstr, errstr_size)))
                return err;
        if ((err = tb_id_begin(conn, actor, errstr, errstr_size)))
                return err;
        const char *p[] = {group, user_id};
        if ((err = tb_id_exec_any(conn, "remove group member",
                                  "DELETE FROM group_members WHERE group_name = $1 "
                                  "AND user_id = $2 RETURNING user_id",
                                  2, p, &found, errstr, errstr_size)))
                goto fail;
        if (!found) {
                bool user = false, grp = false;
                if ((err = tb_id_exec_any(conn, "read user", "SELECT 1 FROM users WHERE id = $1",
                                          1, p + 1, &user, errstr, errstr_size)) ||
                    (err = tb_id_exec_any(conn, "read group",
                                          "SELECT 1 FROM security_groups WHERE name = $1", 1, p,
                                          &grp, errstr, errstr_size)))
                        goto fail;
                if (!user)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND, "no user '%s'",
                                        user_id);
                else if (!grp)
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                        "no group '%s'; list groups with: taskbus admin group list",
                                        group);
                else
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                        "user '%s' is not a member of group '%s'", user_id, group);
                goto fail;
        }
        if ((err = tb_id_audit(conn, actor, "group.remove-member", group,
                               json_pack("{s:s}", "user", user_id), errstr, errstr_size)))
                goto fail;
        if ((err = tb_store_commit(conn, errstr, errstr_size)))
                goto fail;
        return TB_OK;
fail:
        tb_store_rollback(conn);
        return err;
}

/* ---- rate limiting ------------------------------------------------------- */

#define TB_RL_SHARDS 16
#define TB_RL_SWEEP_NS 1000000000LL /* sweep a shard at most once a second... */
#define TB_RL_SWEEP_MIN 64          /* ...or when it doubled past this size */

typedef struct tb_rl_bucket {
        struct tb_rl_bucket *next;
        uint64_t hash;
        int64_t tat_ns; /* theoretical arrival time: full once <= now */
        char key[];
} tb_rl_bucket_t;

typedef struct tb_rl_shard {
        pthread_mutex_t lock;
        tb_rl_bucket_t **slots;
        size_t nslots;   /* power of two */
        size_t count;
        size_t sweep_at; /* sweep when count reaches this */
        int64_t last_sweep_ns;
} tb_rl_shard_t;

struct tb_ratelimit {
        int64_t interval_ns; /* 1 / rate */
        int64_t tau_ns;      /* (burst - 1) * interval: how far ahead TAT may run */
        tb_rl_shard_t shards[TB_RL_SHARDS];
};

static uint64_t tb_rl_hash(const char *key) {
        uint64_t h = 14695981039346656037ULL; /* FNV-1a */
        for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
                h ^= *p;
                h *= 1099511628211ULL;
        }
        return h ^ (h >> 29);
}

tb_ratelimit_t *tb_ratelimit_new(double rate, int64_t burst) {
        if (!(rate > 0) || !isfinite(rate) || burst < 1)
                return NULL;
        tb_ratelimit_t *rl = calloc(1, sizeof(*rl));
        if (!rl)
                return NULL;
        double iv = 1e9 / rate;
        rl->interval_ns = iv >= 9e18 ? INT64_MAX / 2 : (iv < 1 ? 1 : llround(iv));
        rl->tau_ns = burst - 1 > (INT64_MAX / 2) / rl->interval_ns
                             ? INT64_MAX / 2
                             : (burst - 1) * rl->interval_ns;
        for (int i = 0; i < TB_RL_SHARDS; i++) {
                tb_rl_shard_t *s = &rl->shards[i];
                pthread_mutex_init(&s->lock, NULL);
                s->nslots = 16;
                s->sweep_at = TB_RL_SWEEP_MIN;
                if (!(s->slots = calloc(s->nslots, sizeof(*s->slots)))) {
                        for (int j = 0; j <= i; j++) {
                                free(rl->shards[j].slots);
                                pthread_mutex_destroy(&rl->shards[j].lock);
                        }
                        free(rl);
                        return NULL;
                }
        }
        return rl;
}

void tb_ratelimit_free(tb_ratelimit_t *rl) {
        if (!rl)
                return;
        for (int i = 0; i < TB_RL_SHARDS; i++) {
                tb_rl_shard_t *s = &rl->shards[i];
                for (size_t b = 0; b < s->nslots; b++) {
                        tb_rl_bucket_t *e = s->slots[b];
                        while (e) {
                                tb_rl_bucket_t *n = e->next;
                                free(e);
                                e = n;
                        }
                }
                free(s->slots);
                pthread_mutex_destroy(&s->lock);
        }
        free(rl);
}

/* Drop full buckets. @locks s->lock held. */
static size_t tb_rl_shard_sweep(tb_rl_shard_t *s, int64_t now_ns) {
        size_t dropped = 0;
        for (size_t b = 0; b < s->nslots; b++) {
                tb_rl_bucket_t **pp = &s->slots[b];
                while (*pp) {
                        tb_rl_bucket_t *e = *pp;
                        if (e->tat_ns <= now_ns) {
                                *pp = e->next;
                                free(e);
                                dropped++;
                        } else {
                                pp = &e->next;
                        }
                }
        }
        s->count -= dropped;
        s->last_sweep_ns = now_ns;
        s->sweep_at = s->count * 2 > TB_RL_SWEEP_MIN ? s->count * 2 : TB_RL_SWEEP_MIN;
        return dropped;
}

/* Double the slot array when chains get long. @locks s->lock held. */
static void tb_rl_shard_grow(tb_rl_shard_t *s) {
        size_t n = s->nslots * 2;
        tb_rl_bucket_t **slots = calloc(n, sizeof(*slots));
        if (!slots)
                return; /* longer chains, still correct */
        for (size_t b = 0; b < s->nslots; b++) {
                tb_rl_bucket_t *e = s->slots[b];
                while (e) {
                        tb_rl_bucket_t *next = e->next;
                        size_t i = (size_t)(e->hash / TB_RL_SHARDS) & (n - 1);
                        e->next = slots[i];
                        slots[i] = e;
                        e = next;
                }
        }
        free(s->slots);
        s->slots = slots;
        s->nslots = n;
}

bool tb_ratelimit_take(tb_ratelimit_t *rl, const char *key, int64_t now_us,
                       int64_t *retry_after_ms) {
        if (retry_after_ms)
                *retry_after_ms = 0;
        if (!rl)
                return true;
        if (!key)
                key = "";
        int64_t now_ns = now_us > INT64_MAX / 2000 ? INT64_MAX / 2 : now_us * 1000;
        uint64_t h = tb_rl_hash(key);
        tb_rl_shard_t *s = &rl->shards[h % TB_RL_SHARDS];
        bool allowed;

        pthread_mutex_lock(&s->lock);
        if (s->count >= s->sweep_at || now_ns - s->last_sweep_ns >= TB_RL_SWEEP_NS)
                tb_rl_shard_sweep(s, now_ns);
        size_t slot = (size_t)(h / TB_RL_SHARDS) & (s->nslots - 1);
        tb_rl_bucket_t *e = s->slots[slot];
        while (e && (e->hash != h || strcmp(e->key, key)))
                e = e->next;
        int64_t tat = e && e->tat_ns > now_ns ? e->tat_ns : now_ns;
        if (tat - now_ns <= rl->tau_ns) {
                allowed = true;
                tat += rl->interval_ns;
                if (!e) {
                        size_t klen = strlen(key);
                        e = malloc(sizeof(*e) + klen + 1);
                        if (e) {
                                memcpy(e->key, key, klen + 1);
                                e->hash = h;
                                e->next = s->slots[slot];
                                s->slots[slot] = e;
                                s->count++;
                                if (s->count > s->nslots * 2)
                                        tb_rl_shard_grow(s);
                        }
                        /* out of memory: allow without tracking (fail open) */
                }
                if (e)
                        e->tat_ns = tat;
        } else {
                allowed = false;
                if (retry_after_ms) {
                        /* the earliest now' with tat - now' <= tau, rounded up to ms */
                        int64_t wait_ns = tat - rl->tau_ns - now_ns;
                        *retry_after_ms = (wait_ns + 999999) / 1000000;
                }
        }
        pthread_mutex_unlock(&s->lock);
        return allowed;
}

size_t tb_ratelimit_size(tb_ratelimit_t *rl) {
        size_t n = 0;
        if (!rl)
                return 0;
        for (int i = 0; i < TB_RL_SHARDS; i++) {
                pthread_mutex_lock(&rl->shards[i].lock);
                n += rl->shards[i].count;
                pthread_mutex_unlock(&rl->shards[i].lock);
        }
        return n;
}

size_t tb_ratelimit_sweep(tb_ratelimit_t *rl, int64_t now_us) {
        size_t n = 0;
        if (!rl)
                return 0;
        int64_t now_ns = now_us > INT64_MAX / 2000 ? INT64_MAX / 2 : now_us * 1000;
        for (int i = 0; i < TB_RL_SHARDS; i++) {
                pthread_mutex_lock(&rl->shards[i].lock);
                n += tb_rl_shard_sweep(&rl->shards[i], now_ns);
                pthread_mutex_unlock(&rl->shards[i].lock);
        }
        return n;
}
