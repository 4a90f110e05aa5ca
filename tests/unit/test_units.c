/*
 * Unit tests for sizes and durations (src/util/units.c): every unit, the
 * fraction rules, the overflow edges and input that must be refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sluice/units.h"

static uint64_t size_ok(const char *s) {
  uint64_t v = 12345;

  if (sl_size_parse(s, &v) != 0)
    fail_msg("size \"%s\" was refused", s);
  return v;
}

static void size_bad(const char *s) {
  uint64_t v = 12345;

  if (sl_size_parse(s, &v) == 0)
    fail_msg("size \"%s\" was accepted as %llu", s, (unsigned long long)v);
  assert_int_equal(v, 12345); /* untouched on failure */
}

static uint64_t dur_ok(const char *s) {
  uint64_t v = 12345;

  if (sl_duration_parse(s, &v) != 0)
    fail_msg("duration \"%s\" was refused", s);
  return v;
}

static void dur_bad(const char *s) {
  uint64_t v = 12345;

  if (sl_duration_parse(s, &v) == 0)
    fail_msg("duration \"%s\" was accepted as %llu ms", s, (unsigned long long)v);
  assert_int_equal(v, 12345);
}

static void test_size_units(void **state) {
  (void)state;
  assert_int_equal(size_ok("0"), 0);
  assert_int_equal(size_ok("123"), 123);
  assert_int_equal(size_ok("123B"), 123);
  assert_int_equal(size_ok("1K"), 1024);
  assert_int_equal(size_ok("1KiB"), 1024);
  assert_int_equal(size_ok("1KB"), 1000);
  assert_int_equal(size_ok("64KiB"), 65536);
  assert_int_equal(size_ok("1M"), 1048576);
  assert_int_equal(size_ok("8MiB"), 8388608);
  assert_int_equal(size_ok("1MB"), 1000000);
  assert_int_equal(size_ok("1G"), 1073741824ull);
  assert_int_equal(size_ok("10GiB"), 10737418240ull);
  assert_int_equal(size_ok("1GB"), 1000000000ull);
  assert_int_equal(size_ok("1T"), 1099511627776ull);
  assert_int_equal(size_ok("2TiB"), 2199023255552ull);
  assert_int_equal(size_ok("3TB"), 3000000000000ull);
}

static void test_size_case_blanks_fractions(void **state) {
  (void)state;
  assert_int_equal(size_ok("16kib"), 16384);
  assert_int_equal(size_ok("16kb"), 16000);
  assert_int_equal(size_ok("5b"), 5);
  assert_int_equal(size_ok("64 KiB"), 65536);
  assert_int_equal(size_ok(" 1M "), 1048576);
  assert_int_equal(size_ok("1.5KiB"), 1536);
  assert_int_equal(size_ok("0.5GiB"), 536870912ull);
  assert_int_equal(size_ok("1.5"), 1); /* rounded down to whole bytes */
  assert_int_equal(size_ok("0.0001KiB"), 0);
  /* Digits past the sixth fraction digit are read but do not count. */
  assert_int_equal(size_ok("1.00000099MB"), 1000000);
}

static void test_size_overflow(void **state) {
  (void)state;
  assert_int_equal(size_ok("18446744073709551615"), UINT64_MAX);
  assert_int_equal(size_ok("18446744073709551615B"), UINT64_MAX);
  size_bad("18446744073709551616");
  size_bad("99999999999999999999999");
  assert_int_equal(size_ok("16777215TiB"), 16777215ull << 40);
  size_bad("16777216TiB");
  size_bad("18446744073709551615K");
}

static void test_size_garbage(void **state) {
  (void)state;
  size_bad("");
  size_bad("   ");
  size_bad("KiB");
  size_bad("12XB");
  size_bad("-1");
  size_bad("+1");
  size_bad("1.");
  size_bad(".5K");
  size_bad("1..5K");
  size_bad("1KiBB");
  size_bad("1 K iB");
  size_bad("1K2");
  size_bad("0x10");
  size_bad("1e3");
  size_bad("1PiB");
  size_bad("1 2");
  assert_int_equal(sl_size_parse(NULL, &(uint64_t){0}), -1);
}

static void test_duration_units(void **state) {
  (void)state;
  assert_int_equal(dur_ok("0"), 0);
  assert_int_equal(dur_ok("30"), 30000); /* a bare number is seconds */
  assert_int_equal(dur_ok("250ms"), 250);
  assert_int_equal(dur_ok("30s"), 30000);
  assert_int_equal(dur_ok("5m"), 300000);
  assert_int_equal(dur_ok("2h"), 7200000);
  assert_int_equal(dur_ok("1d"), 86400000);
  assert_int_equal(dur_ok("0s"), 0);
}

static void test_duration_compound_fractions(void **state) {
  (void)state;
  assert_int_equal(dur_ok("1h30m"), 5400000);
  assert_int_equal(dur_ok("1m30s"), 90000);
  assert_int_equal(dur_ok("1s500ms"), 1500);
  assert_int_equal(dur_ok("1d2h3m4s5ms"), 93784005);
  assert_int_equal(dur_ok("1h 30m"), 5400000);
  assert_int_equal(dur_ok("1.5s"), 1500);
  assert_int_equal(dur_ok("0.25"), 250);
  assert_int_equal(dur_ok("1.5h"), 5400000);
  assert_int_equal(dur_ok("0.5ms"), 0); /* rounded down to whole milliseconds */
  assert_int_equal(dur_ok("2ms"), 2);
}

static void test_duration_overflow(void **state) {
  (void)state;
  /* UINT64_MAX ms is 18446744073709551 s plus 615 ms. */
  assert_int_equal(dur_ok("18446744073709551615ms"), UINT64_MAX);
  dur_bad("18446744073709551616ms");
  assert_int_equal(dur_ok("18446744073709551s"), 18446744073709551000ull);
  dur_bad("18446744073709552s");
  dur_bad("18446744073709552");
  dur_bad("213503982335d");
  dur_bad("18446744073709551s1s");
  dur_bad("99999999999999999999999s");
}

static void test_duration_garbage(void **state) {
  (void)state;
  dur_bad("");
  dur_bad(" ");
  dur_bad("s");
  dur_bad("ms");
  dur_bad("-1s");
  dur_bad("1x");
  dur_bad("1h30"); /* a bare number only stands alone */
  dur_bad("30 5");
  dur_bad("5sec");
  dur_bad("5mins");
  dur_bad("1S"); /* units are lower case */
  dur_bad("1H");
  dur_bad("1us");
  dur_bad("1.s");
  dur_bad(".5s");
  dur_bad("1e3s");
  dur_bad("1s ms");
  assert_int_equal(sl_duration_parse(NULL, &(uint64_t){0}), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_size_units),        cmocka_unit_test(test_size_case_blanks_fractions),
      cmocka_unit_test(test_size_overflow),     cmocka_unit_test(test_size_garbage),
      cmocka_unit_test(test_duration_units),    cmocka_unit_test(test_duration_compound_fractions),
      cmocka_unit_test(test_duration_overflow), cmocka_unit_test(test_duration_garbage),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
