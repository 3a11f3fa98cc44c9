/**
 * @file test_timerheap.c
 * @brief core/lib/schedule/timerheap.c against a naive reference: random inserts,
 *        re-keys and removals, then pops come out in (due, id) order.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "schedule/timerheap.h"

#define N 5000

Test(timerheap, empty) {
        tb_timerheap_t h;
        tb_timer_t t;
        tb_timerheap_init(&h);
        cr_assert_null(tb_timerheap_peek(&h));
        cr_assert_not(tb_timerheap_pop(&h, &t));
        tb_timerheap_remove(&h, 42); /* absent: no-op */
        cr_assert_eq(tb_timerheap_size(&h), 0);
        tb_timerheap_free(&h);
}

Test(timerheap, random_ops_match_reference) {
        static int64_t ref[N];  /* due per id, -1 = absent */
        tb_timerheap_t h;
        tb_timerheap_init(&h);
        srand(7);
        for (int i = 0; i < N; i++)
                ref[i] = -1;
        for (int op = 0; op < 100000; op++) {
                uint32_t id = (uint32_t)(rand() % N);
                int r = rand() % 10;
                if (r < 6) {
                        int64_t due = rand() % 100000;
                        cr_assert_eq(tb_timerheap_set(&h, id, due), TB_OK);
                        ref[id] = due;
                } else if (r < 9) {
                        tb_timerheap_remove(&h, id);
                        ref[id] = -1;
                } else {
                        tb_timer_t t;
                        if (tb_timerheap_pop(&h, &t)) {
                                /* the reference minimum */
                                int64_t best = -1;
                                uint32_t bid = 0;
                                for (uint32_t i = 0; i < N; i++)
                                        if (ref[i] >= 0 && (best < 0 || ref[i] < best)) {
                                                best = ref[i];
                                                bid = i;
                                        }
                                cr_assert_eq(t.due_ms, best);
                                cr_assert_eq(t.id, bid);
                                ref[t.id] = -1;
                        }
                }
                int64_t d;
                cr_assert_eq(tb_timerheap_get(&h, id, &d), ref[id] >= 0);
                if (ref[id] >= 0)
                        cr_assert_eq(d, ref[id]);
        }
        size_t cnt = 0;
        for (int i = 0; i < N; i++)
                cnt += ref[i] >= 0;
        cr_assert_eq(tb_timerheap_size(&h), cnt);
        tb_timer_t prev = {.due_ms = -1, .id = 0}, t;
        while (tb_timerheap_pop(&h, &t)) {
                cr_assert(t.due_ms > prev.due_ms || (t.due_ms == prev.due_ms && t.id > prev.id),
                          "out of order: (%lld,%u) after (%lld,%u)", (long long)t.due_ms, t.id,
                          (long long)prev.due_ms, prev.id);
                cr_assert_eq(ref[t.id], t.due_ms);
                prev = t;
                cnt--;
        }
        cr_assert_eq(cnt, 0);
        tb_timerheap_free(&h);
}
