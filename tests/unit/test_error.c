/*
 * The error space (sluice/error.h): sl_strerror() names the project's codes,
 * errno values and so libuv's UV_E* codes, and the ranges do not collide.
 *
 * This test may include uv.h (util may not): it checks here that the values
 * util returns in place of libuv's (-ENOMEM for UV_ENOMEM and the like) are
 * the same numbers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "sluice/error.h"
#include "sluice/util.h"

_Static_assert(UV_ENOMEM == -ENOMEM, "util returns -ENOMEM where callers expect UV_ENOMEM");
_Static_assert(UV_EINVAL == -EINVAL, "util returns -EINVAL where callers expect UV_EINVAL");

static const int project_codes[] = {
    SL_ESPOOL_FULL,     SL_ESPOOL_CLOSED,    SL_ESPOOL_TOOBIG,  SL_ESPOOL_CORRUPT, SL_ESPOOL_LOCKED,
    SL_ESPOOL_NOTFOUND, SL_ELEDGER_NOTFOUND, SL_ELEDGER_BADKEY, SL_ELEDGER_LOCKED,
};

static void test_project_codes(void **state) {
  (void)state;
  assert_string_equal(sl_strerror(0), "success");
  assert_string_equal(sl_strerror(SL_ESPOOL_FULL), "spool full");
  assert_string_equal(sl_strerror(SL_ESPOOL_CLOSED), "spool closing");
  assert_string_equal(sl_strerror(SL_ESPOOL_TOOBIG), "record too large for the spool");
  assert_string_equal(sl_strerror(SL_ESPOOL_CORRUPT), "spool data corrupt");
  assert_string_equal(sl_strerror(SL_ESPOOL_LOCKED), "spool directory in use by another process");
  assert_string_equal(sl_strerror(SL_ESPOOL_NOTFOUND), "no such dead letter");
  assert_string_equal(sl_strerror(SL_ELEDGER_NOTFOUND), "no such request id or key");
  assert_string_equal(sl_strerror(SL_ELEDGER_BADKEY), "Idempotency-Key empty or too long");
  assert_string_equal(sl_strerror(SL_ELEDGER_LOCKED), "ledger journal in use by another process");
}

static void test_errno_and_uv_codes(void **state) {
  (void)state;
  assert_string_equal(sl_strerror(-ENOENT), strerror(ENOENT));
  assert_string_equal(sl_strerror(-ENOSPC), strerror(ENOSPC));
  assert_string_equal(sl_strerror(UV_ENOMEM), strerror(ENOMEM));
  assert_string_equal(sl_strerror(UV_ECONNREFUSED), strerror(ECONNREFUSED));
  assert_string_equal(sl_strerror(1), "unknown error");
  assert_string_equal(sl_strerror(-30000), "unknown error");
  assert_string_equal(sl_strerror(-1000000), "unknown error");
}

/* Each project code is unique, below every libuv code (UV_EOF, -4095, is the lowest), and
 * named. */
static void test_ranges_apart(void **state) {
  (void)state;
  for (size_t i = 0; i < sl_countof(project_codes); i++) {
    assert_true(project_codes[i] < UV_EOF);
    assert_string_not_equal(sl_strerror(project_codes[i]), "unknown error");
    for (size_t j = 0; j < i; j++)
      assert_int_not_equal(project_codes[i], project_codes[j]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_project_codes),
      cmocka_unit_test(test_errno_and_uv_codes),
      cmocka_unit_test(test_ranges_apart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
