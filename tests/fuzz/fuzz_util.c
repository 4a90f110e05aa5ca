/*
 * Helpers shared by the libFuzzer harnesses: see fuzz_util.h.
 */
#include "fuzz_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/log.h"

static int no_sync(int fd) {
  (void)fd;
  return 0;
}

const struct sl_io sl_fuzz_io = {.fsync = no_sync, .fdatasync = no_sync};

void sl_fuzz_tmpdir(char *out, size_t len) {
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

  if ((size_t)snprintf(out, len, "%s/sl-fuzz.XXXXXX", base) >= len || mkdtemp(out) == NULL) {
    perror("sl_fuzz_tmpdir");
    abort();
  }
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void sl_fuzz_rm_rf(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

void sl_fuzz_write_file(const char *dir, const char *name, const void *data, size_t len) {
  char path[512];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "wb");
  if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
    perror(path);
    abort();
  }
}

void sl_fuzz_rng_init(struct sl_fuzz_rng *r, uint64_t seed) {
  r->s = seed * 0x9e3779b97f4a7c15ull + 1; /* never 0, which xorshift cannot leave */
}

uint32_t sl_fuzz_rng_next(struct sl_fuzz_rng *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 7;
  r->s ^= r->s << 17;
  return (uint32_t)(r->s >> 32);
}

void sl_fuzz_touch(const void *p, size_t len) {
  const volatile unsigned char *b = p;
  unsigned char sum = 0;

  for (size_t i = 0; i < len; i++)
    sum ^= b[i];
  (void)sum;
}

void sl_fuzz_quiet_log(void) {
  if (getenv("SLUICE_FUZZ_VERBOSE") == NULL)
    sl_log_set_level((enum sl_log_level)(SL_LOG_ERROR + 1));
}
