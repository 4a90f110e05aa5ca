/*
 * CRC32C: known vectors, chaining, and the hardware path against the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/crc32c.h"

static void test_vectors(void **state) {
  uint8_t zeros[32] = {0}, ones[32], inc[32];
  (void)state;

  memset(ones, 0xff, sizeof(ones));
  for (int i = 0; i < 32; i++)
    inc[i] = (uint8_t)i;
  /* RFC 3720 (iSCSI) appendix B.4 test patterns. */
  assert_int_equal(sl_crc32c(0, zeros, 32), 0x8A9136AAu);
  assert_int_equal(sl_crc32c(0, ones, 32), 0x62A8AB43u);
  assert_int_equal(sl_crc32c(0, inc, 32), 0x46DD794Eu);
  assert_int_equal(sl_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(sl_crc32c_sw(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(sl_crc32c(0, "", 0), 0);
}

static void test_chain_and_paths_agree(void **state) {
  uint8_t buf[4099];
  (void)state;

  srand(7);
  for (size_t i = 0; i < sizeof(buf); i++)
    buf[i] = (uint8_t)rand();
  for (size_t len = 0; len < sizeof(buf); len += 1 + len / 3) {
    for (size_t off = 0; off < 9 && off < len; off++) {
      uint32_t whole = sl_crc32c(0, buf + off, len - off);
      assert_int_equal(whole, sl_crc32c_sw(0, buf + off, len - off));
      size_t cut = (len - off) / 2;
      assert_int_equal(whole,
                       sl_crc32c(sl_crc32c(0, buf + off, cut), buf + off + cut, len - off - cut));
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors),
      cmocka_unit_test(test_chain_and_paths_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
