/**
 * @file schedule/timerheap.h
 * @brief A binary min-heap of timers (due time, id) with an index from id to
 *        heap position, so a timer can be re-keyed or removed in O(log n)
 *        without searching. The scheduler keeps one timer per task slot, so
 *        each tick only looks at the timers that are due: no full scan.
 *
 * Ids are small dense integers (the scheduler's task slots); the position
 * index is an array indexed by id, grown on demand.
 * @locality one thread (no locking).
 */
#ifndef TB_TIMERHEAP_H
#define TB_TIMERHEAP_H

#include "tb.h"

/** One timer. */
typedef struct tb_timer {
        int64_t due_ms; /**< when it is due (epoch ms) */
        uint32_t id;    /**< the owner's id (task slot) */
} tb_timer_t;

/** The heap. Zero-initialise (or tb_timerheap_init()); free with
 *  tb_timerheap_free(). */
typedef struct tb_timerheap {
        tb_timer_t *heap;  /**< heap[0] is the earliest */
        size_t len;
        size_t cap;
        uint32_t *pos;     /**< pos[id] = heap index + 1, 0 = not in the heap */
        size_t pos_cap;
} tb_timerheap_t;

/** Zero \p h. */
void tb_timerheap_init(tb_timerheap_t *h);
/** Release the storage and zero \p h. */
void tb_timerheap_free(tb_timerheap_t *h);

/**
 * @brief Insert timer \p id or move it to \p due_ms if it is already there.
 * @returns TB_OK or TB_ERR_NOMEM (the heap is unchanged then).
 */
tb_err_t tb_timerheap_set(tb_timerheap_t *h, uint32_t id, int64_t due_ms);

/** Remove timer \p id; no-op when absent. */
void tb_timerheap_remove(tb_timerheap_t *h, uint32_t id);

/** @returns true if \p id has a timer; *\p due_ms (may be NULL) gets its time. */
bool tb_timerheap_get(const tb_timerheap_t *h, uint32_t id, int64_t *due_ms);

/** @returns the earliest timer, or NULL when the heap is empty (the pointer
 *  is valid until the next change). */
const tb_timer_t *tb_timerheap_peek(const tb_timerheap_t *h);

/** Remove the earliest timer into *\p out. @returns false if empty. */
bool tb_timerheap_pop(tb_timerheap_t *h, tb_timer_t *out);

/** @returns the number of timers. */
static inline size_t tb_timerheap_size(const tb_timerheap_t *h) { return h->len; }

#endif /* TB_TIMERHEAP_H */
