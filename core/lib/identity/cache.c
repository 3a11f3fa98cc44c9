/**
 * @file identity/cache.c
 * @brief The in-process cache of authentication results.
 *
 * Cache: positive results keyed by (store, token hash), bounded, each entry
 * living cache_ms. Beside it, unknown tokens (no such hash) are remembered
 * for cache_ms in a fixed direct-mapped table, so a client sending bogus
 * tokens costs no PostgreSQL round trip and cannot grow memory (a colliding
 * entry is simply overwritten). Revoked, expired and disabled are not cached
 * as failures: they are rare and a new token must work at once.
 */
#include "identity/identity_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TB_IDENTITY_CACHE_BUCKETS 1024
#define TB_IDENTITY_CACHE_MAX 4096

/* ---- authentication cache ------------------------------------------------ */

typedef struct tb_identity_cache_entry {
        struct tb_identity_cache_entry *next;
        const void *store;
        unsigned char hash[TB_HASH_LEN];
        int64_t expires_us; /* monotonic */
        tb_principal_t *principal;
} tb_identity_cache_entry_t;

static struct {
        pthread_mutex_t lock;
        tb_identity_cache_entry_t *buckets[TB_IDENTITY_CACHE_BUCKETS];
        size_t count;
} tb_identity_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t tb_identity_cache_slot(const unsigned char hash[TB_HASH_LEN]) {
        /* SHA-256 output is uniform: its first bytes are a fine hash */
        uint32_t h = (uint32_t)hash[0] | (uint32_t)hash[1] << 8 | (uint32_t)hash[2] << 16 |
                     (uint32_t)hash[3] << 24;
        return h % TB_IDENTITY_CACHE_BUCKETS;
}

static void tb_identity_cache_entry_free(tb_identity_cache_entry_t *e) {
        tb_principal_free(e->principal);
        free(e);
}

/* Drop expired entries (every entry if \p all). @locks tb_identity_cache.lock held. */
static void tb_identity_cache_prune(int64_t now_us, bool all) {
        for (size_t b = 0; b < TB_IDENTITY_CACHE_BUCKETS; b++) {
                tb_identity_cache_entry_t **pp = &tb_identity_cache.buckets[b];
                while (*pp) {
                        tb_identity_cache_entry_t *e = *pp;
                        if (all || e->expires_us <= now_us) {
                                *pp = e->next;
                                tb_identity_cache_entry_free(e);
                                tb_identity_cache.count--;
                        } else {
                                pp = &e->next;
                        }
                }
        }
}

/* Drop the entry closest to expiry. @locks tb_identity_cache.lock held. */
static void tb_identity_cache_evict_one(void) {
        tb_identity_cache_entry_t **victim = NULL;
        for (size_t b = 0; b < TB_IDENTITY_CACHE_BUCKETS; b++)
                for (tb_identity_cache_entry_t **pp = &tb_identity_cache.buckets[b]; *pp;
                     pp = &(*pp)->next)
                        if (!victim || (*pp)->expires_us < (*victim)->expires_us)
                                victim = pp;
        if (victim) {
                tb_identity_cache_entry_t *e = *victim;
                *victim = e->next;
                tb_identity_cache_entry_free(e);
                tb_identity_cache.count--;
        }
}

/* @returns a copy of the cached principal (caller frees), or NULL on a miss. */
tb_principal_t *tb_identity_cache_get(const void *store, const unsigned char hash[TB_HASH_LEN]) {
        tb_principal_t *p = NULL;
        int64_t now = tb_mono_us();
        pthread_mutex_lock(&tb_identity_cache.lock);
        tb_identity_cache_entry_t **pp = &tb_identity_cache.buckets[tb_identity_cache_slot(hash)];
        while (*pp) {
                tb_identity_cache_entry_t *e = *pp;
                if (e->store == store && !memcmp(e->hash, hash, TB_HASH_LEN)) {
                        if (e->expires_us > now) {
                                p = tb_principal_dup(e->principal);
                        } else {
                                *pp = e->next;
                                tb_identity_cache_entry_free(e);
                                tb_identity_cache.count--;
                        }
                        break;
                }
                pp = &e->next;
        }
        pthread_mutex_unlock(&tb_identity_cache.lock);
        return p;
}

void tb_identity_cache_put(const void *store, const unsigned char hash[TB_HASH_LEN],
                           const tb_principal_t *p, int64_t cache_ms) {
        tb_identity_cache_entry_t *n = calloc(1, sizeof(*n));
        if (!n || !(n->principal = tb_principal_dup(p))) {
                free(n);
                return; /* not caching is always correct */
        }
        int64_t now = tb_mono_us();
        n->store = store;
        memcpy(n->hash, hash, TB_HASH_LEN);
        n->expires_us = cache_ms > INT64_MAX / 1000 - now ? INT64_MAX : now + cache_ms * 1000;

        pthread_mutex_lock(&tb_identity_cache.lock);
        size_t slot = tb_identity_cache_slot(hash);
        for (tb_identity_cache_entry_t **pp = &tb_identity_cache.buckets[slot]; *pp;
             pp = &(*pp)->next) {
                tb_identity_cache_entry_t *e = *pp;
                if (e->store == store && !memcmp(e->hash, hash, TB_HASH_LEN)) {
                        *pp = e->next; /* another thread filled it: replace */
                        tb_identity_cache_entry_free(e);
                        tb_identity_cache.count--;
                        break;
                }
        }
        if (tb_identity_cache.count >= TB_IDENTITY_CACHE_MAX)
                tb_identity_cache_prune(now, false);
        while (tb_identity_cache.count >= TB_IDENTITY_CACHE_MAX)
                tb_identity_cache_evict_one();
        n->next = tb_identity_cache.buckets[slot];
        tb_identity_cache.buckets[slot] = n;
        tb_identity_cache.count++;
        pthread_mutex_unlock(&tb_identity_cache.lock);
}

/* ---- unknown tokens ---------------------------------------------------------- */

#define TB_IDENTITY_UNKNOWN_SLOTS 4096

static struct {
        pthread_mutex_t lock;
        struct {
                const void *store;
                unsigned char hash[TB_HASH_LEN];
                int64_t until_us; /* monotonic; 0: empty */
        } slot[TB_IDENTITY_UNKNOWN_SLOTS];
} tb_identity_unknown = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t tb_identity_unknown_slot(const unsigned char hash[TB_HASH_LEN]) {
        /* SHA-256 output is uniform: its bytes 4..7 are a fine hash too */
        uint32_t h = (uint32_t)hash[4] | (uint32_t)hash[5] << 8 | (uint32_t)hash[6] << 16 |
                     (uint32_t)hash[7] << 24;
        return h % TB_IDENTITY_UNKNOWN_SLOTS;
}

bool tb_identity_cache_unknown(const void *store, const unsigned char hash[TB_HASH_LEN]) {
        size_t i = tb_identity_unknown_slot(hash);
        pthread_mutex_lock(&tb_identity_unknown.lock);
        bool hit = tb_identity_unknown.slot[i].store == store &&
                   tb_identity_unknown.slot[i].until_us > tb_mono_us() &&
                   !memcmp(tb_identity_unknown.slot[i].hash, hash, TB_HASH_LEN);
        pthread_mutex_unlock(&tb_identity_unknown.lock);
        return hit;
}

void tb_identity_cache_put_unknown(const void *store, const unsigned char hash[TB_HASH_LEN],
                                   int64_t cache_ms) {
        size_t i = tb_identity_unknown_slot(hash);
        pthread_mutex_lock(&tb_identity_unknown.lock);
        tb_identity_unknown.slot[i].store = store;
        memcpy(tb_identity_unknown.slot[i].hash, hash, TB_HASH_LEN);
        tb_identity_unknown.slot[i].until_us = tb_mono_us() + cache_ms * 1000;
        pthread_mutex_unlock(&tb_identity_unknown.lock);
}

void tb_identity_cache_clear(void) {
        pthread_mutex_lock(&tb_identity_cache.lock);
        tb_identity_cache_prune(0, true);
        pthread_mutex_unlock(&tb_identity_cache.lock);
        pthread_mutex_lock(&tb_identity_unknown.lock);
        memset(tb_identity_unknown.slot, 0, sizeof(tb_identity_unknown.slot));
        pthread_mutex_unlock(&tb_identity_unknown.lock);
}
