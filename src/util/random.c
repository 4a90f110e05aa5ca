#include "sluice/random.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#define POOL_BYTES 4096

static _Thread_local unsigned char pool[POOL_BYTES];
static _Thread_local size_t pool_left; /* unused bytes at the end of pool */

static int refill(void) {
  size_t have = 0;

  while (have < sizeof(pool)) {
    ssize_t n = getrandom(pool + have, sizeof(pool) - have, 0);
    if (n < 0 && errno == EINTR)
      continue; /* a signal during a request over 256 bytes */
    if (n <= 0)
      return -1;
    have += (size_t)n;
  }
  pool_left = sizeof(pool);
  return 0;
}

int sl_random_bytes(void *out, size_t len) {
  unsigned char *p = out;

  while (len > 0) {
    if (pool_left == 0 && refill() != 0)
      return -1;
    size_t n = len < pool_left ? len : pool_left;
    unsigned char *from = pool + sizeof(pool) - pool_left;
    memcpy(p, from, n);
    memset(from, 0, n); /* a byte handed out is not kept */
    pool_left -= n;
    p += n;
    len -= n;
  }
  return 0;
}
