/**
 * @file schedule/timerheap.c
 * @brief The scheduler's timer heap (see timerheap.h).
 */
#include "schedule/timerheap.h"

#include <stdlib.h>
#include <string.h>

void tb_timerheap_init(tb_timerheap_t *h) { memset(h, 0, sizeof(*h)); }

void tb_timerheap_free(tb_timerheap_t *h) {
        free(h->heap);
        free(h->pos);
        memset(h, 0, sizeof(*h));
}

/* Ties are broken by id so the order is total and deterministic. */
static bool tb_timer_less(const tb_timer_t *a, const tb_timer_t *b) {
        return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->id < b->id);
}

static void tb_timerheap_place(tb_timerheap_t *h, size_t i, tb_timer_t t) {
        h->heap[i] = t;
        h->pos[t.id] = (uint32_t)(i + 1);
}

static void tb_timerheap_up(tb_timerheap_t *h, size_t i) {
        tb_timer_t t = h->heap[i];
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (!tb_timer_less(&t, &h->heap[parent]))
                        break;
                tb_timerheap_place(h, i, h->heap[parent]);
                i = parent;
        }
        tb_timerheap_place(h, i, t);
}

static void tb_timerheap_down(tb_timerheap_t *h, size_t i) {
        tb_timer_t t = h->heap[i];
        for (;;) {
                size_t l = 2 * i + 1, best = i;
                const tb_timer_t *bt = &t;
                if (l < h->len && tb_timer_less(&h->heap[l], bt)) {
                        best = l;
                        bt = &h->heap[l];
                }
                if (l + 1 < h->len && tb_timer_less(&h->heap[l + 1], bt))
                        best = l + 1;
                if (best == i)
                        break;
                tb_timerheap_place(h, i, h->heap[best]);
                i = best;
        }
        tb_timerheap_place(h, i, t);
}

tb_err_t tb_timerheap_set(tb_timerheap_t *h, uint32_t id, int64_t due_ms) {
        if (id >= h->pos_cap) {
                size_t ncap = h->pos_cap ? h->pos_cap : 1024;
                while (ncap <= id)
                        ncap *= 2;
                uint32_t *np = realloc(h->pos, ncap * sizeof(*np));
                if (!np)
                        return TB_ERR_NOMEM;
                memset(np + h->pos_cap, 0, (ncap - h->pos_cap) * sizeof(*np));
                h->pos = np;
                h->pos_cap = ncap;
        }
        uint32_t p = h->pos[id];
        if (p) {
                size_t i = p - 1;
                int64_t old = h->heap[i].due_ms;
                h->heap[i].due_ms = due_ms;
                if (due_ms < old)
                        tb_timerheap_up(h, i);
                else if (due_ms > old)
                        tb_timerheap_down(h, i);
                return TB_OK;
        }
        if (h->len == h->cap) {
                tb_timer_t *nh = tb_array_grow(h->heap, &h->cap, sizeof(*nh), 1024);
                if (!nh)
                        return TB_ERR_NOMEM;
                h->heap = nh;
        }
        h->heap[h->len] = (tb_timer_t){.due_ms = due_ms, .id = id};
        h->len++;
        tb_timerheap_up(h, h->len - 1);
        return TB_OK;
}

void tb_timerheap_remove(tb_timerheap_t *h, uint32_t id) {
        if (id >= h->pos_cap || !h->pos[id])
                return;
        size_t i = h->pos[id] - 1;
        h->pos[id] = 0;
        h->len--;
        if (i == h->len)
                return;
        /* the last timer fills the hole, then settles either way */
        uint32_t moved = h->heap[h->len].id;
        tb_timerheap_place(h, i, h->heap[h->len]);
        tb_timerheap_up(h, i);
        if (h->pos[moved] - 1 == i)
                tb_timerheap_down(h, i);
}

bool tb_timerheap_get(const tb_timerheap_t *h, uint32_t id, int64_t *due_ms) {
        if (id >= h->pos_cap || !h->pos[id])
                return false;
        if (due_ms)
                *due_ms = h->heap[h->pos[id] - 1].due_ms;
        return true;
}

const tb_timer_t *tb_timerheap_peek(const tb_timerheap_t *h) { return h->len ? &h->heap[0] : NULL; }

bool tb_timerheap_pop(tb_timerheap_t *h, tb_timer_t *out) {
        if (!h->len)
                return false;
        *out = h->heap[0];
        tb_timerheap_remove(h, out->id);
        return true;
}
