/*
 * Retry-After (RFC 9110 10.2.3): delay-seconds or an HTTP-date, as the drain
 * and the live path read it; whatever else is ignored (0).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/replay.h"

/* Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date, in ms since the epoch. */
#define RFC_DATE_MS 784111777000ull

static uint64_t parse(const char *v, uint64_t now_ms) {
  return sl_replay_parse_retry_after(v, strlen(v), now_ms);
}

static void test_delay_seconds(void **state) {
  (void)state;
  assert_int_equal(parse("2", 0), 2000);
  assert_int_equal(parse("120", 5), 120000);
  assert_int_equal(parse("0", 0), 0); /* no wait asked */
}

static void test_http_date(void **state) {
  (void)state;
  assert_int_equal(parse("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - 3000), 3000);
  /* A date already past asks for no wait. */
  assert_int_equal(parse("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS), 0);
  assert_int_equal(parse("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS + 1), 0);
}

static void test_bad_values_ignored(void **state) {
  static const char *const bad[] = {
      "",
      "-1",
      "1.5",
      "2 ",
      " 2",
      "2s",
      "abc",
      "99999999999999999999999",
      "Sun, 06 Nov 1994 08:49:37",
      "Sunday, 06-Nov-94 08:49:37 GMT x",
      "31536000000",
  };

  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(parse(bad[i], 0), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_delay_seconds),
      cmocka_unit_test(test_http_date),
      cmocka_unit_test(test_bad_values_ignored),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
