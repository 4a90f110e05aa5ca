/*
 * libFuzzer harness for the ledger journal's replay (src/ledger/journal.c):
 * the input becomes ledger.journal in a fresh directory, which
 * sl_ledger_journal_open reads into a ledger and a key index, renumbers and
 * compacts; the journal is then closed and the loop run until its last write.
 *
 * Input: one control byte, then the bytes of the file.
 *   bit 0:    re-sign: recompute the CRC of every frame found walking the
 *             file, so that mutations reach the frame decoders behind it
 *   bit 1:    ledger and key index of capacity 4 (eviction on load)
 *   bit 2:    open two hours after the seeds' time (their keys have expired)
 *   bits 3-4: the sync policy: batch, always, off, batch
 * Seeds are journals written by the journal itself (gen_seeds.c).
 *
 * Checks beyond the sanitizers: open fails only with a negative code; the
 * ledger and the key index pass their own invariant checks after the load;
 * and the file the journal left behind, compacted and closed, opens again
 * without a bad frame, as a clean close, with as many entries and keys.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "ledger/ledger_int.h"
#include "sluice/crc32c.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MODE_RESIGN 1u
#define MODE_SMALL 2u
#define MODE_LATER 4u
#define MODE_SYNC_SHIFT 3
#define SEED_NOW_MS 1700000000000ull /* the generator's clock (gen_seeds.c) */
#define HOUR_MS (3600ull * 1000)
#define HEADER_LEN 16 /* magic and version (docs/spool-format.md) */
#define FRAME_HEAD 8  /* u32 length, u32 CRC32C of the length and the body */

static void fail(const char *what, int64_t n) {
  fprintf(stderr, "fuzz_journal: %s (%" PRId64 ")\n", what, n);
  abort();
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Recomputes the CRC of each frame from the header on, up to a torn or zero one. */
static void resign(uint8_t *b, size_t len) {
  size_t off = HEADER_LEN;

  while (off + FRAME_HEAD <= len) {
    uint32_t n = get32(b + off), crc;

    if (n == 0 || n > len - off - FRAME_HEAD)
      break;
    crc = sl_crc32c(sl_crc32c(0, b + off, 4), b + off + FRAME_HEAD, n);
    for (int i = 0; i < 4; i++)
      b[off + 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    off += FRAME_HEAD + n;
  }
}

struct opened {
  struct sl_ledger *l;
  struct sl_dedupe *d;
  struct sl_ledger_journal *j;
  struct sl_ledger_journal_stats st;
};

/* Opens the journal at <path> on fresh indexes; returns what open returned. */
static int open_journal(uv_loop_t *loop, const char *path, unsigned mode, struct opened *o) {
  static const enum sl_ledger_journal_sync syncs[4] = {
      SL_LEDGER_JOURNAL_SYNC_BATCH, SL_LEDGER_JOURNAL_SYNC_ALWAYS, SL_LEDGER_JOURNAL_SYNC_OFF,
      SL_LEDGER_JOURNAL_SYNC_BATCH};
  size_t cap = (mode & MODE_SMALL) ? 4 : 1024;
  uint64_t now = SEED_NOW_MS + ((mode & MODE_LATER) ? 2 * HOUR_MS : 0);
  struct sl_ledger_journal_opts opts;
  const char *const *names;
  size_t n;
  int r;

  memset(o, 0, sizeof(*o));
  o->l = sl_ledger_create(cap);
  o->d = sl_dedupe_create(cap, HOUR_MS);
  if (o->l == NULL || o->d == NULL)
    abort();
  sl_ledger_journal_opts_init(&opts);
  opts.sync = syncs[(mode >> MODE_SYNC_SHIFT) & 3];
  opts.io = &sl_fuzz_io;
  r = sl_ledger_journal_open(loop, path, o->l, o->d, now, &opts, &o->j);
  if (r > 0)
    fail("sl_ledger_journal_open returned a positive code", r);
  if (sl__ledger_check(o->l) != 0 || sl__dedupe_check(o->d) != 0)
    fail("the ledger or the key index fails its invariants after a load",
         sl__ledger_check(o->l) != 0 ? sl__ledger_check(o->l) : sl__dedupe_check(o->d));
  if (r == 0) {
    sl_ledger_journal_stats(o->j, &o->st);
    n = sl_ledger_journal_names(o->j, &names);
    for (size_t i = 0; i < n; i++)
      if (names[i] != NULL)
        sl_fuzz_touch(names[i], strlen(names[i]));
  }
  return r;
}

/* Closes the journal (if open), runs the loop until it is done and frees the indexes. */
static void close_journal(uv_loop_t *loop, struct opened *o) {
  sl_ledger_journal_close(o->j);
  if (uv_run(loop, UV_RUN_DEFAULT) != 0)
    fail("the loop still has work after the journal closed", 0);
  sl_ledger_destroy(o->l);
  sl_dedupe_destroy(o->d);
}

static void run(const char *path, unsigned mode) {
  struct opened a, b;
  size_t entries, keys;
  uv_loop_t loop;

  if (uv_loop_init(&loop) != 0)
    abort();
  if (open_journal(&loop, path, mode, &a) != 0) {
    close_journal(&loop, &a);
  } else {
    entries = sl_ledger_count(a.l);
    keys = sl_dedupe_count(a.d);
    close_journal(&loop, &a);
    if (open_journal(&loop, path, mode, &b) != 0)
      fail("the journal written at open does not open again", 0);
    if (b.st.bad_offset >= 0 || !b.st.clean_start)
      fail("the journal written at open and closed cleanly reads as damaged", b.st.bad_offset);
    if (sl_ledger_count(b.l) != entries || sl_dedupe_count(b.d) != keys)
      fail("the journal written at open loses entries or keys", (int64_t)entries);
    close_journal(&loop, &b);
  }
  if (uv_loop_close(&loop) != 0)
    fail("a handle of the journal outlived its close", 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  sl_fuzz_quiet_log();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char dir[64], path[128];
  uint8_t *file;

  if (size < 1)
    return 0;
  file = malloc(size);
  if (file == NULL)
    abort();
  memcpy(file, data + 1, size - 1);
  if (data[0] & MODE_RESIGN)
    resign(file, size - 1);
  sl_fuzz_tmpdir(dir, sizeof(dir));
  sl_fuzz_write_file(dir, SL_LEDGER_JOURNAL_FILE, file, size - 1);
  free(file);
  snprintf(path, sizeof(path), "%s/" SL_LEDGER_JOURNAL_FILE, dir);
  run(path, data[0]);
  sl_fuzz_rm_rf(dir);
  return 0;
}
