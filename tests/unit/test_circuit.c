/*
 * Circuit: the states, the threshold counted in steps (requests that failed
 * together are one step), the probe backoff growing per probe and capped, a
 * lost probe given up, and any success closing it, all on a driven clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sluice/circuit.h"

#define MS 1000000ull
#define SEC 1000000000ull

static void init(struct sl_circuit *c) { sl_circuit_init(c, 3, 1 * SEC, 4 * SEC, 10 * SEC); }

/* Opens it with three failures one after another, the last at <t>. */
static void open_at(struct sl_circuit *c, uint64_t t) {
  assert_int_equal(sl_circuit_failure(c, t - 30 * MS, t - 20 * MS), SL_CIRCUIT_SAME);
  assert_int_equal(sl_circuit_failure(c, t - 20 * MS, t - 10 * MS), SL_CIRCUIT_SAME);
  assert_int_equal(sl_circuit_failure(c, t - 10 * MS, t), SL_CIRCUIT_OPENED);
}

static void test_threshold(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  assert_int_equal(c.state, SL_CIRCUIT_CLOSED);
  assert_true(sl_circuit_allow(&c, 0));
  assert_int_equal(sl_circuit_failure(&c, 0, 1 * MS), SL_CIRCUIT_SAME);
  assert_int_equal(sl_circuit_failure(&c, 2 * MS, 3 * MS), SL_CIRCUIT_SAME);
  assert_int_equal(c.failures, 2);
  assert_int_equal(c.state, SL_CIRCUIT_CLOSED);
  assert_int_equal(sl_circuit_failure(&c, 4 * MS, 5 * MS), SL_CIRCUIT_OPENED);
  assert_int_equal(c.state, SL_CIRCUIT_OPEN);
  assert_int_equal(c.failures, 3);
  assert_false(sl_circuit_allow(&c, 5 * MS));
  assert_int_equal(sl_circuit_wait_ns(&c, 5 * MS), 1 * SEC);
  assert_string_equal(sl_circuit_state_name(c.state), "open");
}

/* A success between failures starts the count again. */
static void test_success_resets_count(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  sl_circuit_failure(&c, 0, 1 * MS);
  sl_circuit_failure(&c, 2 * MS, 3 * MS);
  assert_int_equal(sl_circuit_success(&c), SL_CIRCUIT_SAME);
  assert_int_equal(c.failures, 0);
  assert_int_equal(sl_circuit_failure(&c, 4 * MS, 5 * MS), SL_CIRCUIT_SAME);
  assert_int_equal(c.state, SL_CIRCUIT_CLOSED);
}

/* 32 replays out together when the backend goes away: one step, not 32. */
static void test_concurrent_failures_are_one_step(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  for (unsigned i = 0; i < 32; i++)
    assert_int_equal(sl_circuit_failure(&c, 100 * MS + i, 200 * MS + i), SL_CIRCUIT_SAME);
  assert_int_equal(c.failures, 1);
  assert_int_equal(c.state, SL_CIRCUIT_CLOSED);
  /* The next ones, started after that failure, are steps. */
  sl_circuit_failure(&c, 300 * MS, 310 * MS);
  assert_int_equal(sl_circuit_failure(&c, 400 * MS, 410 * MS), SL_CIRCUIT_OPENED);
  /* Stragglers of the same outage do not move the probe further away. */
  uint64_t next = c.next_probe_ns;
  assert_int_equal(sl_circuit_failure(&c, 350 * MS, 500 * MS), SL_CIRCUIT_SAME);
  assert_int_equal(c.next_probe_ns, next);
  assert_int_equal(c.failures, 3);
}

/* Probes go one at a time; the wait grows per failed probe (1, 2, 4 s) and
 * stops at the cap (4 s). */
static void test_probe_backoff(void **state) {
  static const uint64_t waits[] = {1 * SEC, 2 * SEC, 4 * SEC, 4 * SEC, 4 * SEC};
  struct sl_circuit c;
  uint64_t t = 1 * SEC;

  (void)state;
  init(&c);
  open_at(&c, t);
  for (unsigned i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
    assert_int_equal(sl_circuit_wait_ns(&c, t), waits[i]);
    assert_false(sl_circuit_allow(&c, t + waits[i] - 1));
    t += waits[i];
    assert_true(sl_circuit_allow(&c, t)); /* the probe */
    assert_int_equal(c.state, SL_CIRCUIT_HALF_OPEN);
    assert_false(sl_circuit_allow(&c, t));           /* one at a time */
    assert_false(sl_circuit_allow(&c, t + 5 * SEC)); /* still out */
    t += 50 * MS;
    assert_int_equal(sl_circuit_failure(&c, t - 50 * MS, t), SL_CIRCUIT_OPENED);
    assert_int_equal(c.state, SL_CIRCUIT_OPEN);
    assert_int_equal(c.failures, 3 + i + 1);
  }
  assert_int_equal(c.probes_failed, 5);
}

/* Failures of requests older than the probe are not the probe's result. */
static void test_stale_failure_in_half_open(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  open_at(&c, 1 * SEC);
  assert_true(sl_circuit_allow(&c, 2 * SEC));
  assert_int_equal(sl_circuit_failure(&c, 900 * MS, 2 * SEC + 1), SL_CIRCUIT_SAME);
  assert_int_equal(c.state, SL_CIRCUIT_HALF_OPEN);
}

static void test_probe_success_closes(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  open_at(&c, 1 * SEC);
  assert_true(sl_circuit_allow(&c, 2 * SEC));
  assert_int_equal(sl_circuit_success(&c), SL_CIRCUIT_CLOSED_AGAIN);
  assert_int_equal(c.state, SL_CIRCUIT_CLOSED);
  assert_int_equal(c.failures, 0);
  assert_true(sl_circuit_allow(&c, 2 * SEC));
  assert_int_equal(sl_circuit_wait_ns(&c, 2 * SEC), 0);
  /* The backoff starts over at the next outage. */
  open_at(&c, 10 * SEC);
  assert_int_equal(sl_circuit_wait_ns(&c, 10 * SEC), 1 * SEC);
  assert_int_equal(c.transitions, 4);
}

/* A live request that succeeds while the circuit is open closes it too. */
static void test_live_success_closes_open(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  open_at(&c, 1 * SEC);
  assert_int_equal(sl_circuit_success(&c), SL_CIRCUIT_CLOSED_AGAIN);
  assert_true(sl_circuit_allow(&c, 1 * SEC));
}

/* A probe whose result never comes is given up after the probe timeout. */
static void test_lost_probe(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  open_at(&c, 1 * SEC);
  assert_true(sl_circuit_allow(&c, 2 * SEC));
  assert_int_equal(sl_circuit_wait_ns(&c, 3 * SEC), 9 * SEC);
  assert_false(sl_circuit_allow(&c, 12 * SEC - 1));
  assert_true(sl_circuit_allow(&c, 12 * SEC));
  /* Without a timeout, it waits for the result. */
  sl_circuit_init(&c, 1, 1 * SEC, 1 * SEC, 0);
  sl_circuit_failure(&c, 0, 1);
  assert_true(sl_circuit_allow(&c, 2 * SEC));
  assert_int_equal(sl_circuit_wait_ns(&c, 100 * SEC), UINT64_MAX);
  assert_false(sl_circuit_allow(&c, 100 * SEC));
}

static void test_bounds(void **state) {
  struct sl_circuit c;

  (void)state;
  sl_circuit_init(&c, 0, 0, 0, 0);
  assert_int_equal(c.threshold, 1);
  assert_int_equal(sl_circuit_failure(&c, 0, 1), SL_CIRCUIT_OPENED);
  assert_true(sl_circuit_wait_ns(&c, 1) <= 1);
  assert_string_equal(sl_circuit_state_name(SL_CIRCUIT_HALF_OPEN), "half-open");
  assert_string_equal(sl_circuit_state_name(SL_CIRCUIT_CLOSED), "closed");
}

/* Resume or reload: the next probe is due at once, the circuit stays open. */
static void test_probe_now(void **state) {
  struct sl_circuit c;

  (void)state;
  init(&c);
  sl_circuit_probe_now(&c, 1 * SEC);
  assert_int_equal(c.state, SL_CIRCUIT_CLOSED);
  open_at(&c, 1 * SEC);
  sl_circuit_probe_now(&c, 1 * SEC + 1);
  assert_int_equal(c.state, SL_CIRCUIT_OPEN);
  assert_int_equal(sl_circuit_wait_ns(&c, 1 * SEC + 1), 0);
  assert_true(sl_circuit_allow(&c, 1 * SEC + 1));
}

static void test_status_classes(void **state) {
  (void)state;
  assert_true(sl_circuit_status_fails(502));
  assert_true(sl_circuit_status_fails(503));
  assert_true(sl_circuit_status_fails(504));
  assert_true(sl_circuit_status_fails(429));
  assert_false(sl_circuit_status_fails(500)); /* the request's own failure */
  assert_false(sl_circuit_status_fails(200));
  assert_false(sl_circuit_status_fails(404));
  assert_false(sl_circuit_status_fails(408));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_threshold),
      cmocka_unit_test(test_success_resets_count),
      cmocka_unit_test(test_concurrent_failures_are_one_step),
      cmocka_unit_test(test_probe_backoff),
      cmocka_unit_test(test_stale_failure_in_half_open),
      cmocka_unit_test(test_probe_success_closes),
      cmocka_unit_test(test_live_success_closes_open),
      cmocka_unit_test(test_lost_probe),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_status_classes),
      cmocka_unit_test(test_probe_now),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
