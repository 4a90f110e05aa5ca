/*
 * Shaper: token bucket arithmetic, the in-flight cap, reconfiguration and the
 * FORWARD / SPILL / QUEUE decision, all on a driven clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sluice/shaper.h"

#define MS 1000000ull
#define SEC 1000000000ull

static unsigned acquire_all(struct sl_shaper *s, uint64_t now) {
  unsigned n = 0;

  while (sl_shaper_try_acquire(s, now))
    n++;
  return n;
}

static void test_burst_then_rate(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 10.0, 5, 0, 0);
  assert_int_equal(acquire_all(&s, 0), 5); /* the saved-up burst */
  assert_int_equal(acquire_all(&s, 99 * MS), 0);
  assert_int_equal(acquire_all(&s, 100 * MS), 1);  /* one token per 100 ms */
  assert_int_equal(acquire_all(&s, 1100 * MS), 5); /* refilled, capped at burst */
}

/* In any window of T seconds, at most burst + rate * T starts. */
static void test_window_bound(void **state) {
  struct sl_shaper s;
  uint64_t started[4000];
  unsigned n = 0;

  (void)state;
  sl_shaper_init(&s, 50.0, 20, 0, 0);
  for (uint64_t t = 0; t < 10 * SEC && n < 4000; t += MS) {
    while (sl_shaper_try_acquire(&s, t) && n < 4000)
      started[n++] = t;
  }
  assert_in_range(n, 500, 520); /* 20 + 50 * 10 */
  for (unsigned i = 0; i < n; i++) {
    unsigned in_window = 0;
    for (unsigned j = i; j < n && started[j] < started[i] + SEC; j++)
      in_window++;
    assert_true(in_window <= 20 + 50);
  }
}

static void test_fractional_rate(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 0.5, 1, 0, 0);
  assert_true(sl_shaper_try_acquire(&s, 0));
  assert_false(sl_shaper_try_acquire(&s, 1999 * MS));
  assert_true(sl_shaper_try_acquire(&s, 2000 * MS));
}

static void test_unlimited(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 0, 1, 0, 0);
  assert_int_equal(sl_shaper_token_wait_ns(&s, 0), 0);
  for (int i = 0; i < 100000; i++)
    assert_true(sl_shaper_try_acquire(&s, 0));
}

static void test_inflight_cap(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 0, 1, 2, 0);
  assert_true(sl_shaper_try_acquire(&s, 0));
  assert_true(sl_shaper_try_acquire(&s, 0));
  assert_true(sl_shaper_full(&s));
  assert_false(sl_shaper_try_acquire(&s, 10 * SEC));
  sl_shaper_release(&s);
  assert_true(sl_shaper_try_acquire(&s, 10 * SEC));
}

static void test_token_wait(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 4.0, 1, 0, 0);
  assert_int_equal(sl_shaper_token_wait_ns(&s, 0), 0);
  assert_true(sl_shaper_try_acquire(&s, 0));
  uint64_t w = sl_shaper_token_wait_ns(&s, 0);
  assert_in_range(w, 250 * MS, 250 * MS + 1000);
  assert_false(sl_shaper_try_acquire(&s, w - 1000));
  assert_true(sl_shaper_try_acquire(&s, w));
}

/* A reload keeps in-flight counts and clamps saved tokens to the new burst. */
static void test_configure_keeps_state(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 100.0, 100, 10, 0);
  assert_true(sl_shaper_try_acquire(&s, 0));
  assert_true(sl_shaper_try_acquire(&s, 0));
  sl_shaper_configure(&s, 1.0, 3, 3, 0);
  assert_int_equal(s.inflight, 2);
  assert_true(sl_shaper_try_acquire(&s, 0)); /* third in-flight place */
  assert_false(sl_shaper_try_acquire(&s, 0));
  sl_shaper_release(&s);
  assert_true(sl_shaper_try_acquire(&s, 0)); /* tokens: 3 clamped, 2 left */
  sl_shaper_release(&s);
  assert_true(sl_shaper_try_acquire(&s, 0));
  sl_shaper_release(&s);
  assert_false(sl_shaper_try_acquire(&s, 0)); /* bucket empty: 1/s now */
  assert_true(sl_shaper_try_acquire(&s, SEC));
}

static void test_decide(void **state) {
  struct sl_shaper s;

  (void)state;
  sl_shaper_init(&s, 1.0, 1, 0, 0);
  /* Backlog: a spillable request queues behind it, a live-only one goes first. */
  assert_int_equal(sl_shaper_decide(&s, 0, true, true, false), SL_SHAPER_SPILL);
  assert_int_equal(s.inflight, 0);
  assert_int_equal(sl_shaper_decide(&s, 0, false, true, false), SL_SHAPER_FORWARD);
  /* No budget left. */
  assert_int_equal(sl_shaper_decide(&s, 0, true, false, false), SL_SHAPER_SPILL);
  assert_int_equal(sl_shaper_decide(&s, 0, false, false, false), SL_SHAPER_QUEUE);
  /* Budget back, but a live request is waiting ahead. */
  assert_int_equal(sl_shaper_decide(&s, 2 * SEC, false, false, true), SL_SHAPER_QUEUE);
  assert_int_equal(sl_shaper_decide(&s, 2 * SEC, false, false, false), SL_SHAPER_FORWARD);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_burst_then_rate),       cmocka_unit_test(test_window_bound),
      cmocka_unit_test(test_fractional_rate),       cmocka_unit_test(test_unlimited),
      cmocka_unit_test(test_inflight_cap),          cmocka_unit_test(test_token_wait),
      cmocka_unit_test(test_configure_keeps_state), cmocka_unit_test(test_decide),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
