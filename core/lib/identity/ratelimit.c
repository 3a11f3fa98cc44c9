/**
 * @file identity/ratelimit.c
 * @brief The per-key token-bucket rate limiter (identity/ratelimit.h).
 *
 * Rate limiter: the token bucket written as GCRA ("theoretical arrival
 * time") in integer nanoseconds, so retry-after is exact to the millisecond
 * and a bucket is one int64. A bucket whose TAT has passed is full, i.e.
 * identical to a missing one, which is why evicting idle buckets is lossless.
 */
#include "identity/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TB_RATELIMIT_SHARDS 16
#define TB_RATELIMIT_SWEEP_NS 1000000000LL /* sweep a shard at most once a second... */
#define TB_RATELIMIT_SWEEP_MIN 64          /* ...or when it doubled past this size */

typedef struct tb_ratelimit_bucket {
        struct tb_ratelimit_bucket *next;
        uint64_t hash;
        int64_t tat_ns; /* theoretical arrival time: full once <= now */
        char key[];
} tb_ratelimit_bucket_t;

typedef struct tb_ratelimit_shard {
        pthread_mutex_t lock;
        tb_ratelimit_bucket_t **slots;
        size_t nslots;   /* power of two */
        size_t count;
        size_t sweep_at; /* sweep when count reaches this */
        int64_t last_sweep_ns;
} tb_ratelimit_shard_t;

struct tb_ratelimit {
        int64_t interval_ns; /* 1 / rate */
        int64_t tau_ns;      /* (burst - 1) * interval: how far ahead TAT may run */
        tb_ratelimit_shard_t shards[TB_RATELIMIT_SHARDS];
};

static uint64_t tb_ratelimit_hash(const char *key) {
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
        for (int i = 0; i < TB_RATELIMIT_SHARDS; i++) {
                tb_ratelimit_shard_t *s = &rl->shards[i];
                pthread_mutex_init(&s->lock, NULL);
                s->nslots = 16;
                s->sweep_at = TB_RATELIMIT_SWEEP_MIN;
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
        for (int i = 0; i < TB_RATELIMIT_SHARDS; i++) {
                tb_ratelimit_shard_t *s = &rl->shards[i];
                for (size_t b = 0; b < s->nslots; b++) {
                        tb_ratelimit_bucket_t *e = s->slots[b];
                        while (e) {
                                tb_ratelimit_bucket_t *n = e->next;
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
static size_t tb_ratelimit_shard_sweep(tb_ratelimit_shard_t *s, int64_t now_ns) {
        size_t dropped = 0;
        for (size_t b = 0; b < s->nslots; b++) {
                tb_ratelimit_bucket_t **pp = &s->slots[b];
                while (*pp) {
                        tb_ratelimit_bucket_t *e = *pp;
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
        s->sweep_at = s->count * 2 > TB_RATELIMIT_SWEEP_MIN ? s->count * 2 : TB_RATELIMIT_SWEEP_MIN;
        return dropped;
}

/* Double the slot array when chains get long. @locks s->lock held. */
static void tb_ratelimit_shard_grow(tb_ratelimit_shard_t *s) {
        size_t n = s->nslots * 2;
        tb_ratelimit_bucket_t **slots = calloc(n, sizeof(*slots));
        if (!slots)
                return; /* longer chains, still correct */
        for (size_t b = 0; b < s->nslots; b++) {
                tb_ratelimit_bucket_t *e = s->slots[b];
                while (e) {
                        tb_ratelimit_bucket_t *next = e->next;
                        size_t i = (size_t)(e->hash / TB_RATELIMIT_SHARDS) & (n - 1);
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
        uint64_t h = tb_ratelimit_hash(key);
        tb_ratelimit_shard_t *s = &rl->shards[h % TB_RATELIMIT_SHARDS];
        bool allowed;

        pthread_mutex_lock(&s->lock);
        if (s->count >= s->sweep_at || now_ns - s->last_sweep_ns >= TB_RATELIMIT_SWEEP_NS)
                tb_ratelimit_shard_sweep(s, now_ns);
        size_t slot = (size_t)(h / TB_RATELIMIT_SHARDS) & (s->nslots - 1);
        tb_ratelimit_bucket_t *e = s->slots[slot];
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
                                        tb_ratelimit_shard_grow(s);
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
        for (int i = 0; i < TB_RATELIMIT_SHARDS; i++) {
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
        for (int i = 0; i < TB_RATELIMIT_SHARDS; i++) {
                pthread_mutex_lock(&rl->shards[i].lock);
                n += tb_ratelimit_shard_sweep(&rl->shards[i], now_ns);
                pthread_mutex_unlock(&rl->shards[i].lock);
        }
        return n;
}
