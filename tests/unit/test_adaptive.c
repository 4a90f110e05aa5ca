/*
 * Adaptive rate controller: ramp-up, backoff on 429 (once per round), the
 * bounds, latency-driven decreases and recovery after a pause, all on a
 * driven clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sluice/adaptive.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* start 50/s in [10, 400], target 250 ms; step 8/s, to 70 %, rounds >= 100 ms, 10 s window */
static void setup(struct sl_adaptive *a, uint64_t target_ns) {
  struct sl_adaptive_params p;

  sl_adaptive_defaults(&p, 50, 10, 400, target_ns);
  sl_adaptive_init(a, &p, 0);
}

/* Answers <outcome> every <every_ns> from <*now> for <for_ns>, each <latency_ns> long;
 * fails if the rate ever leaves the bounds or (with <monotonic>) goes down. */
static void feed(struct sl_adaptive *a, uint64_t *now, uint64_t for_ns, uint64_t every_ns,
                 enum sl_adaptive_outcome outcome, uint64_t latency_ns, bool monotonic) {
  uint64_t end = *now + for_ns;

  while (*now < end) {
    double before = sl_adaptive_rate(a);

    *now += every_ns;
    sl_adaptive_observe(a, *now, outcome, latency_ns);
    assert_true(sl_adaptive_rate(a) >= a->p.min_rate && sl_adaptive_rate(a) <= a->p.max_rate);
    if (monotonic)
      assert_true(sl_adaptive_rate(a) >= before);
  }
}

static void test_defaults_and_start(void **state) {
  struct sl_adaptive a;
  struct sl_adaptive_params p;

  (void)state;
  sl_adaptive_defaults(&p, 50, 10, 400, 250 * MS);
  assert_true(p.increase_step == 8.0); /* 2 % of max_rate */
  assert_true(p.decrease_factor == 0.7);
  sl_adaptive_init(&a, &p, 0);
  assert_true(sl_adaptive_rate(&a) == 50);
  p.start_rate = 1000; /* a start outside the bounds is brought in */
  sl_adaptive_init(&a, &p, 0);
  assert_true(sl_adaptive_rate(&a) == 400);
  sl_adaptive_defaults(&p, 1, 0.5, 2, 0);
  assert_true(p.increase_step == 0.1); /* the least step */
}

static void test_ramp_up(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  /* Fast good answers, one every 10 ms: +8/s per 100 ms round. */
  feed(&a, &now, 2 * SEC, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  assert_in_range(a.increases, 18, 20);
  assert_true(sl_adaptive_rate(&a) >= 50 + 8 * 18 && sl_adaptive_rate(&a) <= 50 + 8 * 20);
  /* On and on: up to max_rate, and no further. */
  feed(&a, &now, 10 * SEC, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  assert_true(sl_adaptive_rate(&a) == 400);
  for (int c = 0; c < SL_ADAPTIVE_CAUSES; c++)
    assert_int_equal(a.decreases[c], 0);
}

static void test_no_answers_no_change(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  /* Errors that say nothing about load neither raise nor lower it. */
  feed(&a, &now, 2 * SEC, 10 * MS, SL_ADAPTIVE_NEUTRAL, 20 * MS, true);
  assert_true(sl_adaptive_rate(&a) == 50);
  /* A good answer after a long silence: one round's worth, not the silence's. */
  now += 60 * SEC;
  assert_true(sl_adaptive_observe(&a, now, SL_ADAPTIVE_OK, 20 * MS));
  assert_true(sl_adaptive_rate(&a) == 58);
}

static void test_backoff_on_429_once_per_round(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  feed(&a, &now, 2 * SEC, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  double peak = sl_adaptive_rate(&a);

  /* A burst of 30 429s within 30 ms: the answers to what was out. One decrease. */
  now += MS;
  assert_true(sl_adaptive_observe(&a, now, SL_ADAPTIVE_429, 20 * MS));
  assert_true(sl_adaptive_rate(&a) == peak * 0.7);
  for (int i = 0; i < 29; i++) {
    now += MS;
    assert_false(sl_adaptive_observe(&a, now, SL_ADAPTIVE_429, 20 * MS));
  }
  assert_true(sl_adaptive_rate(&a) == peak * 0.7);
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_429], 1);
  /* Good answers in a round that saw a refusal do not raise it. */
  now += 50 * MS;
  sl_adaptive_observe(&a, now, SL_ADAPTIVE_OK, 20 * MS);
  assert_true(sl_adaptive_rate(&a) == peak * 0.7);
  /* The next round's 429 is news: a second decrease. */
  now += 100 * MS;
  assert_true(sl_adaptive_observe(&a, now, SL_ADAPTIVE_429, 20 * MS));
  assert_true(sl_adaptive_rate(&a) == peak * 0.7 * 0.7);
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_429], 2);
}

static void test_causes(void **state) {
  static const struct {
    enum sl_adaptive_outcome outcome;
    enum sl_adaptive_cause cause;
    const char *name;
  } cases[] = {
      {SL_ADAPTIVE_429, SL_ADAPTIVE_CAUSE_429, "429"},
      {SL_ADAPTIVE_503, SL_ADAPTIVE_CAUSE_503, "503"},
      {SL_ADAPTIVE_RETRY_AFTER, SL_ADAPTIVE_CAUSE_RETRY_AFTER, "retry_after"},
      {SL_ADAPTIVE_TIMEOUT, SL_ADAPTIVE_CAUSE_TIMEOUT, "timeout"},
  };
  struct sl_adaptive a;

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    setup(&a, 250 * MS);
    assert_true(sl_adaptive_observe(&a, SEC, cases[i].outcome, 0));
    assert_true(sl_adaptive_rate(&a) == 35);
    for (int c = 0; c < SL_ADAPTIVE_CAUSES; c++)
      assert_int_equal(a.decreases[c], c == (int)cases[i].cause ? 1 : 0);
    assert_string_equal(sl_adaptive_cause_name(cases[i].cause), cases[i].name);
  }
  assert_string_equal(sl_adaptive_cause_name(SL_ADAPTIVE_CAUSE_LATENCY), "latency");
  /* A timeout's time is no latency sample. */
  setup(&a, 250 * MS);
  sl_adaptive_observe(&a, SEC, SL_ADAPTIVE_TIMEOUT, 30 * SEC);
  assert_int_equal(a.srtt_ns, 0);
  assert_int_equal(a.count, 0);
}

static void test_floor(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  /* A 503 every 100 ms for 3 s: down by 30 % a round, to min_rate and no lower. */
  feed(&a, &now, 3 * SEC, 100 * MS, SL_ADAPTIVE_503, 20 * MS, false);
  assert_true(sl_adaptive_rate(&a) == 10);
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_503], 30);
}

static void test_latency_decrease(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  /* One slow answer in 20 is under the 90th percentile: no decrease, the rate still grows. */
  for (int i = 0; i < 200; i++) {
    now += 10 * MS;
    sl_adaptive_observe(&a, now, SL_ADAPTIVE_OK, i % 20 == 0 ? 900 * MS : 20 * MS);
  }
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY], 0);
  assert_true(sl_adaptive_rate(&a) > 100);
  double before = sl_adaptive_rate(&a);

  /* The backend slows down past the target: good answers, too slow. The rate goes down,
   * once a round (the round grows with the smoothed latency, 400 ms here). */
  feed(&a, &now, 3 * SEC, 10 * MS, SL_ADAPTIVE_OK, 400 * MS, false);
  assert_true(sl_adaptive_rate(&a) < before * 0.7);
  assert_in_range(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY], 2, 12);
  assert_true(sl_adaptive_p90_ns(&a, now) > 250 * MS);
  /* Back under the target: it grows again. */
  before = sl_adaptive_rate(&a);
  feed(&a, &now, 3 * SEC, 10 * MS, SL_ADAPTIVE_OK, 30 * MS, false);
  assert_true(sl_adaptive_rate(&a) > before);
  assert_true(sl_adaptive_p90_ns(&a, now) <= 250 * MS);
}

static void test_one_slow_spell_one_decrease(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  feed(&a, &now, SEC, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  /* Slow answers until the latency lowers the rate once... */
  for (int i = 0; i < 500 && a.decreases[SL_ADAPTIVE_CAUSE_LATENCY] == 0; i++) {
    now += 10 * MS;
    sl_adaptive_observe(&a, now, SL_ADAPTIVE_OK, 400 * MS);
  }
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY], 1);
  /* ...then fast ones: the slow samples described the old rate and went with it, so they
   * do not lower the new one again. */
  feed(&a, &now, 2 * SEC, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY], 1);
}

static void test_no_target_ignores_latency(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 0);
  feed(&a, &now, 3 * SEC, 10 * MS, SL_ADAPTIVE_OK, 2 * SEC, true);
  assert_true(sl_adaptive_rate(&a) > 50);
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY], 0);
}

static void test_recovery_after_pause(void **state) {
  struct sl_adaptive a;
  uint64_t now = 0;

  (void)state;
  setup(&a, 250 * MS);
  /* Slow answers take it down; then the backend is left alone for a minute. */
  feed(&a, &now, 5 * SEC, 10 * MS, SL_ADAPTIVE_OK, 600 * MS, false);
  double low = sl_adaptive_rate(&a);

  assert_true(low < 50);
  now += 60 * SEC;
  assert_true(sl_adaptive_rate(&a) == low); /* silence changes nothing */
  /* Fast answers after the pause: the old slow samples are out of the window, so the
   * first rounds already grow it (the smoothed latency still lengthens the rounds for a
   * while), and it recovers past its start within a few seconds. */
  feed(&a, &now, 200 * MS, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  assert_true(sl_adaptive_rate(&a) > low);
  assert_true(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY] > 0);
  uint64_t latency_cuts = a.decreases[SL_ADAPTIVE_CAUSE_LATENCY];

  feed(&a, &now, 5 * SEC, 10 * MS, SL_ADAPTIVE_OK, 20 * MS, true);
  assert_true(sl_adaptive_rate(&a) > 50);
  assert_int_equal(a.decreases[SL_ADAPTIVE_CAUSE_LATENCY], latency_cuts);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_start),
      cmocka_unit_test(test_ramp_up),
      cmocka_unit_test(test_no_answers_no_change),
      cmocka_unit_test(test_backoff_on_429_once_per_round),
      cmocka_unit_test(test_causes),
      cmocka_unit_test(test_floor),
      cmocka_unit_test(test_latency_decrease),
      cmocka_unit_test(test_one_slow_spell_one_decrease),
      cmocka_unit_test(test_no_target_ignores_latency),
      cmocka_unit_test(test_recovery_after_pause),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
