/*
 * Ledger journal: round trip through the file, what is (not) journaled, the
 * renumbering of queued entries, a torn tail, a bad CRC, a bad header,
 * compaction at startup and at run time (with appends during it), key expiry
 * on load, the lock against a second process and the bound on the buffer;
 * and the fsync policy (issue 17): waiters run only after an fdatasync that
 * covered their frames, power-cut states (the file at its last fdatasync,
 * kept by a recording I/O table) hold every frame that was waited for, at
 * fixed and at random cut points, a failed fdatasync, frames taken back, a
 * waiter across a run-time compaction, and the zero-filled tail.
 * Each test works in a fresh temporary directory on a loop of its own.
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger/ledger_int.h"
#include "sluice/clock.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"

#define HEADER_LEN 16
#define ENTRY_FRAME 68  /* an entry frame without error text */
#define CLOSED_FRAME 16 /* the frame a clean close ends the file with */
#define HOUR_MS (3600ull * 1000)

struct fixture {
  char dir[64];
  char path[128];
  uv_loop_t loop;
  struct sl_ledger *l;
  struct sl_dedupe *d;
  struct sl_ledger_journal *j;
  uint64_t now;
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof(*f));

  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/sl-journal-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/" SL_LEDGER_JOURNAL_FILE, f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->now = sl_clock_wall_ms();
  *state = f;
  return 0;
}

/* Closes the journal and runs the loop until its last write and close are done. */
static void close_journal(struct fixture *f) {
  sl_ledger_journal_close(f->j);
  f->j = NULL;
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

static void drop_structures(struct fixture *f) {
  sl_ledger_destroy(f->l);
  sl_dedupe_destroy(f->d);
  f->l = NULL;
  f->d = NULL;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  char p[160];

  if (f->j != NULL)
    close_journal(f);
  drop_structures(f);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  unlink(f->path);
  snprintf(p, sizeof(p), "%s.lock", f->path);
  unlink(p);
  snprintf(p, sizeof(p), "%s.tmp", f->path);
  unlink(p);
  rmdir(f->dir);
  free(f);
  return 0;
}

/* Fresh structures (ledger capacity <cap>, 1 h key window), opened on the file. */
static int open_with(struct fixture *f, size_t cap, const struct sl_ledger_journal_opts *opts) {
  int rc;

  drop_structures(f);
  f->l = sl_ledger_create(cap);
  f->d = sl_dedupe_create(64, HOUR_MS);
  assert_non_null(f->l);
  assert_non_null(f->d);
  rc = sl_ledger_journal_open(&f->loop, f->path, f->l, f->d, f->now, opts, &f->j);
  assert_int_equal(sl__ledger_check(f->l), 0);
  assert_int_equal(sl__dedupe_check(f->d), 0);
  return rc;
}

static void reopen(struct fixture *f) {
  if (f->j != NULL)
    close_journal(f);
  assert_int_equal(open_with(f, 1024, NULL), 0);
}

static struct sl_ledger_entry entry(unsigned n, enum sl_ledger_state state, uint64_t seq) {
  struct sl_ledger_entry e;

  memset(&e, 0, sizeof(e));
  e.id[0] = 0xab;
  e.id[14] = (uint8_t)(n >> 8);
  e.id[15] = (uint8_t)n;
  e.state = state;
  e.seq = seq;
  e.enqueued_ms = 1000 + n;
  e.updated_ms = 2000 + n;
  e.not_before_ms = 3000 + n;
  return e;
}

static void put(struct fixture *f, unsigned n, enum sl_ledger_state state, uint64_t seq) {
  struct sl_ledger_entry e = entry(n, state, seq);

  assert_int_equal(sl_ledger_put(f->l, &e), 0);
}

static struct sl_ledger_entry got(struct fixture *f, unsigned n) {
  struct sl_ledger_entry want = entry(n, SL_LEDGER_QUEUED, 0), e;

  memset(&e, 0, sizeof(e));
  assert_int_equal(sl_ledger_get(f->l, want.id, &e), 1);
  return e;
}

static int known(struct fixture *f, unsigned n) {
  struct sl_ledger_entry want = entry(n, SL_LEDGER_QUEUED, 0), e;

  return sl_ledger_get(f->l, want.id, &e);
}

static int key_id(struct fixture *f, uint16_t scope, const char *key, uint8_t id[16]) {
  return sl_dedupe_get(f->d, scope, key, strlen(key), f->now, id);
}

static off_t file_size(const char *path) {
  struct stat sb;

  assert_int_equal(stat(path, &sb), 0);
  return sb.st_size;
}

static struct sl_ledger_journal_stats stats(struct fixture *f) {
  struct sl_ledger_journal_stats st;

  sl_ledger_journal_stats(f->j, &st);
  return st;
}

/* ---- round trip --------------------------------------------------------- */

static void test_round_trip(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_entry e;
  uint8_t id[16];

  reopen(f);
  assert_int_equal(file_size(f->path), HEADER_LEN);
  put(f, 1, SL_LEDGER_QUEUED, 1);
  put(f, 2, SL_LEDGER_QUEUED, 2);
  e = entry(2, SL_LEDGER_DELIVERED, 2);
  e.status = 201;
  e.attempts = 1;
  e.upstream = 3;
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  e = entry(3, SL_LEDGER_DEAD, 3);
  e.attempts = 8;
  snprintf(e.error, sizeof(e.error), "connect failed: connection refused");
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  e = entry(1, SL_LEDGER_INFLIGHT, 1); /* in memory only */
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  assert_int_equal(sl_dedupe_put(f->d, 0, "k1", 2, entry(1, 0, 0).id, f->now), 0);
  assert_int_equal(sl_dedupe_put(f->d, 1, "k1", 2, entry(2, 0, 0).id, f->now), 0);
  assert_int_equal(sl_dedupe_put(f->d, 0, "gone", 4, entry(3, 0, 0).id, f->now), 0);
  assert_int_equal(sl_dedupe_remove(f->d, 0, "gone", 4), 0);
  /* 4 entries (the in-flight one is not written) and 4 key records. */
  assert_int_equal(stats(f).appended_records, 8);
  assert_int_equal(got(f, 1).state, SL_LEDGER_INFLIGHT);

  reopen(f);
  assert_int_equal(sl_ledger_count(f->l), 3);
  e = got(f, 1);
  assert_int_equal(e.state, SL_LEDGER_QUEUED); /* in flight is queued after a restart */
  assert_int_equal(e.enqueued_ms, 1001);
  e = got(f, 2);
  assert_int_equal(e.state, SL_LEDGER_DELIVERED);
  assert_int_equal(e.status, 201);
  assert_int_equal(e.attempts, 1);
  assert_int_equal(e.upstream, 3);
  assert_int_equal(e.seq, 2);
  assert_int_equal(e.enqueued_ms, 1002);
  assert_int_equal(e.updated_ms, 2002);
  assert_int_equal(e.not_before_ms, 3002);
  e = got(f, 3);
  assert_int_equal(e.state, SL_LEDGER_DEAD);
  assert_int_equal(e.attempts, 8);
  assert_string_equal(e.error, "connect failed: connection refused");
  assert_int_equal(key_id(f, 0, "k1", id), 1);
  assert_memory_equal(id, entry(1, 0, 0).id, 16);
  assert_int_equal(key_id(f, 1, "k1", id), 1);
  assert_memory_equal(id, entry(2, 0, 0).id, 16);
  assert_int_equal(key_id(f, 0, "gone", id), 0);
  assert_int_equal(stats(f).bad_offset, -1);
  /* The startup compaction left one frame per entry and key. */
  assert_int_equal(file_size(f->path),
                   HEADER_LEN + 3 * ENTRY_FRAME + 34 /* the error */ + 2 * (8 + 32 + 2));
}

/* Queued entries come back numbered 1, 2, ... per upstream in their order,
 * whatever numbers the previous run had reached. */
static void test_queued_renumbered(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_entry e;

  reopen(f);
  for (unsigned n = 1; n <= 6; n++) {
    e = entry(n, SL_LEDGER_QUEUED, 1000 + 10 * (7 - n)); /* later ids, smaller seqs */
    e.upstream = (uint16_t)(n % 2);
    assert_int_equal(sl_ledger_put(f->l, &e), 0);
  }
  e = entry(7, SL_LEDGER_DELIVERED, 5000);
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  reopen(f);
  /* Upstream 0: ids 6, 4, 2 in seq order; upstream 1: ids 5, 3, 1. */
  assert_int_equal(got(f, 6).seq, 1);
  assert_int_equal(got(f, 4).seq, 2);
  assert_int_equal(got(f, 2).seq, 3);
  assert_int_equal(got(f, 5).seq, 1);
  assert_int_equal(got(f, 3).seq, 2);
  assert_int_equal(got(f, 1).seq, 3);
  assert_int_equal(got(f, 7).seq, 5000); /* settled entries keep theirs */
}

/* An expired entry (state 7, issue 12's expiry) travels in an ENTRY2 frame
 * like the other later states and comes back after a restart. */
static void test_expired_round_trip(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_entry e;

  reopen(f);
  e = entry(1, SL_LEDGER_EXPIRED, 1);
  snprintf(e.error, sizeof(e.error), "expired");
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  put(f, 2, SL_LEDGER_QUEUED, 2);
  close_journal(f);

  reopen(f);
  assert_int_equal(stats(f).bad_offset, -1);
  e = got(f, 1);
  assert_int_equal(e.state, SL_LEDGER_EXPIRED);
  assert_string_equal(e.error, "expired");
  assert_int_equal(got(f, 2).state, SL_LEDGER_QUEUED);
}

/* The states added after the first format (purged, cancelled, lost) and the
 * held flag come back after a restart; they travel in ENTRY2 frames (type 5),
 * which an older reader skips, while the first four states keep the ENTRY
 * frames (type 1) that it reads. */
static void test_new_states_round_trip(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_entry e;
  uint8_t buf[4 * ENTRY_FRAME + 64];
  FILE *fp;
  size_t n;

  reopen(f);
  put(f, 1, SL_LEDGER_QUEUED, 1);
  put(f, 2, SL_LEDGER_PURGED, 2);
  e = entry(3, SL_LEDGER_CANCELLED, 3);
  e.flags = SL_LEDGER_F_HELD;
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  e = entry(4, SL_LEDGER_LOST, 4);
  snprintf(e.error, sizeof(e.error), "damaged spool unit");
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  close_journal(f);

  /* Frame types as written: 1, 5, 5, 5. */
  fp = fopen(f->path, "rb");
  assert_non_null(fp);
  n = fread(buf, 1, sizeof(buf), fp);
  fclose(fp);
  assert_true(n >= HEADER_LEN + 4 * ENTRY_FRAME);
  assert_int_equal(buf[HEADER_LEN + 8], 1);
  assert_int_equal(buf[HEADER_LEN + ENTRY_FRAME + 8], 5);
  assert_int_equal(buf[HEADER_LEN + 2 * ENTRY_FRAME + 8], 5);
  assert_int_equal(buf[HEADER_LEN + 3 * ENTRY_FRAME + 8], 5);

  reopen(f);
  assert_int_equal(stats(f).bad_offset, -1);
  assert_int_equal(sl_ledger_count(f->l), 4);
  assert_int_equal(got(f, 1).state, SL_LEDGER_QUEUED);
  assert_int_equal(got(f, 2).state, SL_LEDGER_PURGED);
  e = got(f, 3);
  assert_int_equal(e.state, SL_LEDGER_CANCELLED);
  assert_int_equal(e.flags, SL_LEDGER_F_HELD);
  e = got(f, 4);
  assert_int_equal(e.state, SL_LEDGER_LOST);
  assert_string_equal(e.error, "damaged spool unit");
  /* Only the queued entry is ranked: a held cancellation is no place in the line. */
  assert_int_equal(got(f, 1).seq, 1);

  /* Cleared, the flag stays cleared across another restart. */
  e = got(f, 3);
  e.flags = 0;
  assert_int_equal(sl_ledger_put(f->l, &e), 0);
  reopen(f);
  e = got(f, 3);
  assert_int_equal(e.state, SL_LEDGER_CANCELLED);
  assert_int_equal(e.flags, 0);
}

/* ---- damage ------------------------------------------------------------- */

static void write_entries(struct fixture *f, unsigned count) {
  reopen(f);
  for (unsigned n = 1; n <= count; n++)
    put(f, n, SL_LEDGER_QUEUED, n);
  close_journal(f);
  assert_int_equal(file_size(f->path), HEADER_LEN + (off_t)count * ENTRY_FRAME + CLOSED_FRAME);
}

static void test_torn_tail(void **state) {
  struct fixture *f = *state;

  write_entries(f, 5);
  assert_int_equal(truncate(f->path, HEADER_LEN + 4 * ENTRY_FRAME + 20), 0);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, HEADER_LEN + 4 * ENTRY_FRAME);
  assert_int_equal(stats(f).loaded_entries, 4);
  assert_true(known(f, 4));
  assert_false(known(f, 5));
  /* The compaction cut the torn frame off: the next load is clean, and
   * appends after it are read back. */
  put(f, 9, SL_LEDGER_QUEUED, 9);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, -1);
  assert_int_equal(sl_ledger_count(f->l), 5);
  assert_true(known(f, 9));

  /* A tail shorter than a frame head, too. */
  close_journal(f);
  assert_int_equal(truncate(f->path, file_size(f->path) - ENTRY_FRAME + 3), 0);
  reopen(f);
  assert_int_equal(sl_ledger_count(f->l), 4);
  assert_int_equal(stats(f).bad_offset, file_size(f->path));
}

static void flip_byte(const char *path, off_t at) {
  int fd = open(path, O_RDWR);
  uint8_t b;

  assert_true(fd >= 0);
  assert_int_equal(pread(fd, &b, 1, at), 1);
  b ^= 0x10;
  assert_int_equal(pwrite(fd, &b, 1, at), 1);
  close(fd);
}

static void test_bad_crc(void **state) {
  struct fixture *f = *state;

  write_entries(f, 5);
  /* A byte inside the third entry's seq: its CRC no longer matches. The
   * frames after it are intact, but nothing after damage is trusted. */
  flip_byte(f->path, HEADER_LEN + 2 * ENTRY_FRAME + 8 + 30);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, HEADER_LEN + 2 * ENTRY_FRAME);
  assert_int_equal(sl_ledger_count(f->l), 2);
  assert_true(known(f, 1) && known(f, 2));
  assert_false(known(f, 3) || known(f, 5));

  /* A damaged length: rejected the same way. */
  close_journal(f);
  flip_byte(f->path, HEADER_LEN + ENTRY_FRAME + 1);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, HEADER_LEN + ENTRY_FRAME);
  assert_int_equal(sl_ledger_count(f->l), 1);
}

static void test_bad_header(void **state) {
  struct fixture *f = *state;
  int fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC, 0640);

  assert_true(fd >= 0);
  assert_int_equal(write(fd, "not a journal at all", 20), 20);
  close(fd);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, 0);
  assert_int_equal(sl_ledger_count(f->l), 0);
  assert_int_equal(file_size(f->path), HEADER_LEN); /* rewritten as an empty journal */
}

/* ---- compaction --------------------------------------------------------- */

static void test_compaction_at_startup(void **state) {
  struct fixture *f = *state;

  reopen(f);
  for (unsigned round = 0; round < 50; round++) {
    for (unsigned n = 1; n <= 10; n++)
      put(f, n, round == 49 ? SL_LEDGER_DELIVERED : SL_LEDGER_QUEUED, n);
  }
  close_journal(f);
  assert_int_equal(file_size(f->path), HEADER_LEN + 500 * ENTRY_FRAME + CLOSED_FRAME);
  reopen(f);
  assert_int_equal(stats(f).loaded_entries, 500);
  assert_int_equal(file_size(f->path), HEADER_LEN + 10 * ENTRY_FRAME);
  for (unsigned n = 1; n <= 10; n++)
    assert_int_equal(got(f, n).state, SL_LEDGER_DELIVERED);
}

/* The ledger's capacity bounds the file too: a load evicts as the ledger does. */
static void test_load_respects_capacity(void **state) {
  struct fixture *f = *state;

  write_entries(f, 20);
  close_journal(f);
  assert_int_equal(open_with(f, 8, NULL), 0);
  assert_int_equal(sl_ledger_count(f->l), 8);
  assert_true(known(f, 20) && !known(f, 12));
  assert_int_equal(file_size(f->path), HEADER_LEN + 8 * ENTRY_FRAME);
}

static void run_until_compacted(struct fixture *f, uint64_t compactions) {
  for (int i = 0; i < 10000 && stats(f).compactions < compactions; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(stats(f).compactions, compactions);
}

struct written {
  struct sl_ledger_journal_waiter w; /* first */
  bool done;
};

static void on_written(struct sl_ledger_journal_waiter *w, int status) {
  assert_int_equal(status, 0);
  ((struct written *)w)->done = true;
}

/* Runs the loop until every frame appended so far is written and synced (nothing left in
 * the journal's buffer), then until a compaction asked for now starts at once: on a slow
 * or busy machine the writes of a burst of updates lag behind, and a compaction that
 * starts behind them catches up their bytes too. */
static void start_compaction_when_idle(struct fixture *f) {
  struct written s = {0};

  sl_ledger_journal_flush(f->j);
  if (sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_written) == 0)
    for (int i = 0; i < 100000 && !s.done; i++)
      uv_run(&f->loop, UV_RUN_ONCE);
  for (int i = 0; i < 10000 && !stats(f).compacting; i++) {
    sl_ledger_journal_compact(f->j);
    if (!stats(f).compacting)
      uv_run(&f->loop, UV_RUN_ONCE); /* a file close of the last compaction still runs */
  }
  assert_true(stats(f).compacting);
}

static void test_compaction_at_run_time(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_journal_opts opts;
  uint64_t before;

  sl_ledger_journal_opts_init(&opts);
  opts.compact_min_bytes = 16 * 1024;
  opts.flush_bytes = 1024;
  assert_int_equal(open_with(f, 64, &opts), 0);
  /* 40 ids updated over and over: the file passes 16 KiB and is compacted
   * by itself, more than once, while the updates go on. */
  for (unsigned round = 0; round < 40; round++) {
    for (unsigned n = 1; n <= 40; n++) {
      struct sl_ledger_entry e = entry(n, SL_LEDGER_QUEUED, n);
      e.attempts = round;
      assert_int_equal(sl_ledger_put(f->l, &e), 0);
    }
    uv_run(&f->loop, UV_RUN_NOWAIT);
  }
  assert_int_equal(sl_dedupe_put(f->d, 0, "key", 3, entry(1, 0, 0).id, f->now), 0);
  sl_ledger_journal_flush(f->j);
  run_until_compacted(f, stats(f).compactions > 0 ? stats(f).compactions : 1);
  /* One started by itself may still be running: the explicit one below must be new. */
  for (int i = 0; i < 10000 && stats(f).compacting; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_false(stats(f).compacting);
  before = stats(f).compactions;
  /* An explicit compaction with appends while its job runs: they are
   * caught up in the new file. */
  start_compaction_when_idle(f);
  for (unsigned n = 1; n <= 40; n++)
    put(f, n, SL_LEDGER_DELIVERED, n);
  run_until_compacted(f, before + 1);
  assert_true(stats(f).file_bytes < 16 * 1024); /* the file itself may have zeros ahead */
  assert_int_equal(stats(f).failed, 0);
  close_journal(f);
  assert_true(file_size(f->path) < 8 * 1024); /* a snapshot plus the catch-up */

  assert_int_equal(open_with(f, 64, NULL), 0);
  assert_int_equal(stats(f).bad_offset, -1);
  assert_int_equal(sl_ledger_count(f->l), 40);
  for (unsigned n = 1; n <= 40; n++) {
    assert_int_equal(got(f, n).state, SL_LEDGER_DELIVERED);
    assert_int_equal(got(f, n).attempts, 0);
  }
  {
    uint8_t id[16];
    assert_int_equal(key_id(f, 0, "key", id), 1);
  }
}

/* Closing while a compaction runs: the close waits for it and the file stays whole. */
static void test_close_during_compaction(void **state) {
  struct fixture *f = *state;

  write_entries(f, 30);
  reopen(f);
  for (unsigned n = 1; n <= 30; n++)
    put(f, n, SL_LEDGER_DELIVERED, n);
  sl_ledger_journal_flush(f->j);
  for (int i = 0; i < 1000 && stats(f).file_bytes < HEADER_LEN + 60 * ENTRY_FRAME; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(stats(f).file_bytes, HEADER_LEN + 60 * ENTRY_FRAME);
  sl_ledger_journal_compact(f->j); /* starts at once: no write is in flight */
  put(f, 31, SL_LEDGER_QUEUED, 31);
  close_journal(f);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, -1);
  assert_int_equal(sl_ledger_count(f->l), 31);
  assert_int_equal(got(f, 30).state, SL_LEDGER_DELIVERED);
  assert_true(known(f, 31));
  assert_int_equal(access(f->dir, F_OK), 0);
  {
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
    assert_int_equal(access(tmp, F_OK), -1); /* an abandoned temp file is removed */
  }
}

/* ---- keys --------------------------------------------------------------- */

static void test_key_expiry_on_load(void **state) {
  struct fixture *f = *state;
  uint8_t id[16];

  reopen(f);
  assert_int_equal(sl_dedupe_put(f->d, 0, "old", 3, entry(1, 0, 0).id, f->now - 2 * HOUR_MS), 0);
  assert_int_equal(sl_dedupe_put(f->d, 0, "edge", 4, entry(2, 0, 0).id, f->now - HOUR_MS), 0);
  assert_int_equal(sl_dedupe_put(f->d, 0, "young", 5, entry(3, 0, 0).id, f->now - 60000), 0);
  reopen(f);
  assert_int_equal(stats(f).expired_keys, 2);
  assert_int_equal(stats(f).loaded_keys, 1);
  assert_int_equal(sl_dedupe_count(f->d), 1);
  assert_int_equal(key_id(f, 0, "old", id), 0);
  assert_int_equal(key_id(f, 0, "edge", id), 0);
  assert_int_equal(key_id(f, 0, "young", id), 1);
  assert_memory_equal(id, entry(3, 0, 0).id, 16);

  /* A later start, past the young key's window, forgets it too. */
  close_journal(f);
  f->now += HOUR_MS;
  reopen(f);
  assert_int_equal(stats(f).expired_keys, 1);
  assert_int_equal(sl_dedupe_count(f->d), 0);

  /* A window of 0 keeps nothing. */
  put(f, 1, SL_LEDGER_QUEUED, 1);
  assert_int_equal(sl_dedupe_put(f->d, 0, "k", 1, entry(1, 0, 0).id, f->now), 0);
  close_journal(f);
  drop_structures(f);
  f->l = sl_ledger_create(16);
  f->d = sl_dedupe_create(16, 0);
  assert_int_equal(sl_ledger_journal_open(&f->loop, f->path, f->l, f->d, f->now, NULL, &f->j), 0);
  assert_int_equal(sl_dedupe_count(f->d), 0);
  assert_int_equal(sl_ledger_count(f->l), 1);
}

/* ---- process and resources --------------------------------------------- */

static void test_locked(void **state) {
  struct fixture *f = *state;
  struct sl_ledger *l2 = sl_ledger_create(16);
  struct sl_dedupe *d2 = sl_dedupe_create(16, HOUR_MS);
  struct sl_ledger_journal *j2 = NULL;

  reopen(f);
  put(f, 1, SL_LEDGER_QUEUED, 1);
  assert_int_equal(sl_ledger_journal_open(&f->loop, f->path, l2, d2, f->now, NULL, &j2),
                   SL_ELEDGER_LOCKED);
  assert_null(j2);
  sl_ledger_destroy(l2);
  sl_dedupe_destroy(d2);
}

static void test_pending_bound(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_journal_opts opts;

  sl_ledger_journal_opts_init(&opts);
  opts.max_pending_bytes = 10 * ENTRY_FRAME;
  opts.flush_bytes = 1u << 20;
  assert_int_equal(open_with(f, 64, &opts), 0);
  for (unsigned n = 1; n <= 15; n++) /* the loop never runs: nothing is written */
    put(f, n, SL_LEDGER_QUEUED, n);
  assert_int_equal(stats(f).appended_records, 10);
  assert_int_equal(stats(f).dropped_records, 5);
  assert_int_equal(sl_ledger_count(f->l), 15); /* the ledger itself is not affected */
  close_journal(f);
  /* No CLOSED frame: with frames dropped, the file alone is not the whole story. */
  assert_int_equal(file_size(f->path), HEADER_LEN + 10 * ENTRY_FRAME);
}

/* Upstream names by id survive a reopen and both kinds of compaction; a name is not a key. */
static void test_upstream_names(void **state) {
  struct fixture *f = *state;
  struct sl_ledger_journal_opts opts;
  const char *const *names;
  char long_name[SL_LEDGER_JOURNAL_NAME_MAX + 2];

  assert_int_equal(open_with(f, 64, NULL), 0);
  assert_int_equal(sl_ledger_journal_names(f->j, &names), 0);
  assert_int_equal(sl_ledger_journal_put_name(f->j, 0, "orders"), 0);
  assert_int_equal(sl_ledger_journal_put_name(f->j, 2, "billing"), 0);
  memset(long_name, 'x', sizeof(long_name) - 1);
  long_name[sizeof(long_name) - 1] = '\0';
  assert_int_equal(sl_ledger_journal_put_name(f->j, 3, long_name), -EINVAL);
  assert_int_equal(sl_ledger_journal_put_name(f->j, 4, ""), -EINVAL);
  put(f, 1, SL_LEDGER_QUEUED, 1);
  reopen(f); /* the startup compaction rewrites the file: the names go with it */
  assert_int_equal(sl_ledger_journal_names(f->j, &names), 3);
  assert_string_equal(names[0], "orders");
  assert_null(names[1]);
  assert_string_equal(names[2], "billing");
  assert_int_equal(sl_ledger_count(f->l), 1);
  close_journal(f);

  /* A run-time compaction keeps them too. */
  sl_ledger_journal_opts_init(&opts);
  opts.compact_min_bytes = 1024;
  opts.flush_bytes = 256;
  assert_int_equal(open_with(f, 64, &opts), 0);
  for (unsigned round = 0; round < 20; round++) {
    for (unsigned n = 1; n <= 10; n++)
      put(f, n, SL_LEDGER_QUEUED, n);
    uv_run(&f->loop, UV_RUN_NOWAIT);
  }
  sl_ledger_journal_flush(f->j);
  for (int i = 0; i < 10000 && (stats(f).compactions == 0 || stats(f).compacting); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(stats(f).compactions > 0);
  reopen(f);
  assert_int_equal(sl_ledger_journal_names(f->j, &names), 3);
  assert_string_equal(names[0], "orders");
  assert_string_equal(names[2], "billing");
}

/* ---- fsync policy: group commit and power cuts -------------------------- */

/*
 * A recording I/O table: every pwrite goes to the file, every fdatasync is
 * counted and keeps a copy of the whole file as it is at that moment: what a
 * power cut that drops every write not followed by an fdatasync leaves of
 * the journal (its crash state). Writes and syncs come one at a time, from
 * the journal's one job in flight. A non-zero <fail_sync> makes fdatasync
 * fail with that errno.
 */
static struct {
  int syncs, writes, fail_sync;
  off_t synced_size;
  uint8_t *synced; /* the file at the last fdatasync */
} rec_io;

static ssize_t rec_pwrite(int fd, const void *buf, size_t len, off_t off) {
  __atomic_add_fetch(&rec_io.writes, 1, __ATOMIC_SEQ_CST);
  return pwrite(fd, buf, len, off);
}

static int rec_fdatasync(int fd) {
  struct stat sb;

  if (rec_io.fail_sync != 0) {
    errno = rec_io.fail_sync;
    return -1;
  }
  assert_int_equal(fstat(fd, &sb), 0);
  free(rec_io.synced);
  rec_io.synced = malloc((size_t)sb.st_size + 1);
  assert_non_null(rec_io.synced);
  assert_int_equal(pread(fd, rec_io.synced, (size_t)sb.st_size, 0), sb.st_size);
  __atomic_store_n(&rec_io.synced_size, sb.st_size, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&rec_io.syncs, 1, __ATOMIC_SEQ_CST);
  return fdatasync(fd);
}

static const struct sl_io rec_table = {.pwrite = rec_pwrite, .fdatasync = rec_fdatasync};

static void open_recording(struct fixture *f, enum sl_ledger_journal_sync sync) {
  struct sl_ledger_journal_opts opts;

  free(rec_io.synced);
  memset(&rec_io, 0, sizeof(rec_io));
  sl_ledger_journal_opts_init(&opts);
  opts.sync = sync;
  opts.io = &rec_table;
  assert_int_equal(open_with(f, 1024, &opts), 0);
  rec_io.synced_size = file_size(f->path); /* the startup compaction's file is synced */
  /* The startup compaction wrote through the table too: count from here. */
  __atomic_store_n(&rec_io.writes, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&rec_io.syncs, 0, __ATOMIC_SEQ_CST);
}

/* Whether the copy taken at the last fdatasync holds the journal's first
 * <len> bytes as they are in the file now. */
static bool synced_holds(struct fixture *f, size_t len) {
  uint8_t *now = malloc(len + 1);
  int fd = open(f->path, O_RDONLY);
  bool ok;

  assert_non_null(now);
  assert_true(fd >= 0);
  ok = rec_io.synced != NULL && (size_t)rec_io.synced_size >= len &&
       pread(fd, now, len, 0) == (ssize_t)len && memcmp(now, rec_io.synced, len) == 0;
  close(fd);
  free(now);
  return ok;
}

/* Puts the copy taken at the last fdatasync in place of the file: the power cut. */
static void cut_to_synced(struct fixture *f, const uint8_t *copy, off_t size) {
  int fd = open(f->path, O_WRONLY | O_TRUNC);

  assert_true(fd >= 0);
  assert_int_equal(write(fd, copy, (size_t)size), size);
  close(fd);
}

/* What a waiter saw when its callback ran. */
struct seen {
  struct sl_ledger_journal_waiter w; /* first */
  int calls, status, syncs;
  bool frames_synced; /* the first <want> bytes were in the synced copy */
  size_t want;
  struct fixture *f;
};

static void on_durable(struct sl_ledger_journal_waiter *w, int status) {
  struct seen *s = (struct seen *)w;

  s->calls++;
  s->status = status;
  s->syncs = __atomic_load_n(&rec_io.syncs, __ATOMIC_SEQ_CST);
  if (s->f != NULL)
    s->frames_synced = synced_holds(s->f, s->want);
}

static void run_until_called(struct fixture *f, const struct seen *s) {
  for (int i = 0; i < 100000 && s->calls == 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(s->calls, 1);
}

/* Under batch, a waiter's callback runs only after an fdatasync that covered
 * its frames: the file's size at that sync includes them. */
static void test_sync_waiter_runs_after_fdatasync(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};
  off_t start;

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_BATCH);
  start = file_size(f->path);
  s.f = f;
  s.want = (size_t)start + ENTRY_FRAME + 8 + 32 + 2;
  put(f, 1, SL_LEDGER_QUEUED, 1);
  assert_int_equal(sl_dedupe_put(f->d, 0, "k1", 2, entry(1, 0, 0).id, f->now), 0);
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  assert_int_equal(rec_io.writes, 0); /* nothing written before the loop runs */
  run_until_called(f, &s);
  assert_int_equal(s.status, 0);
  assert_true(s.syncs >= 1);
  assert_true(s.frames_synced); /* the entry and the key were in the file at that sync */
  assert_int_equal(stats(f).durable_bytes, stats(f).appended_bytes);
  /* Durable already: nothing to wait for. */
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 1);
  /* A group: many frames, then one wait, one write and one fdatasync. */
  for (unsigned n = 2; n <= 50; n++)
    put(f, n, SL_LEDGER_QUEUED, n);
  s.calls = 0;
  {
    int syncs = rec_io.syncs;
    assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable),
                     0);
    run_until_called(f, &s);
    assert_int_equal(rec_io.syncs, syncs + 1);
  }
  /* unwait takes a waiter back: its callback never runs. */
  put(f, 51, SL_LEDGER_QUEUED, 51);
  s.calls = 0;
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  sl_ledger_journal_unwait(&s.w);
  sl_ledger_journal_unwait(&s.w); /* not waiting: a no-op */
  close_journal(f);
  assert_int_equal(s.calls, 0);
}

/* Under "off", as before the policy: nothing to wait for, no fdatasync. */
static void test_sync_off_never_waits(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_OFF);
  put(f, 1, SL_LEDGER_QUEUED, 1);
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 1);
  for (int i = 0; i < 1000 && __atomic_load_n(&rec_io.writes, __ATOMIC_SEQ_CST) == 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(rec_io.syncs, 0);
  /* The close syncs its last group, CLOSED frame included, whatever the policy. */
  close_journal(f);
  assert_int_equal(rec_io.syncs, 1);
  assert_true(rec_io.writes >= 1);
  assert_int_equal(s.calls, 0);
}

/*
 * journal_not_fsynced (issue 17): the journal was appended without fsync, so
 * a power cut took every status and key since the start. Here every frame
 * whose waiter ran (what the proxy answered) must be in the file cut to its
 * size at the last fdatasync; frames nobody waited for may be gone.
 */
static void test_power_cut_keeps_what_was_answered(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};
  off_t cut;
  uint8_t *copy, id[16];

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_BATCH);
  for (unsigned n = 1; n <= 20; n++) {
    put(f, n, SL_LEDGER_QUEUED, n);
    if (n % 2 == 0) {
      char key[8];
      snprintf(key, sizeof(key), "k%u", n);
      assert_int_equal(sl_dedupe_put(f->d, 0, key, strlen(key), entry(n, 0, 0).id, f->now), 0);
    }
    if (n % 5 == 0) {
      s.calls = 0;
      assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable),
                       0);
      run_until_called(f, &s);
      assert_int_equal(s.status, 0);
    }
  }
  put(f, 5, SL_LEDGER_DELIVERED, 5); /* answered: its ack may go */
  s.calls = 0;
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  run_until_called(f, &s);
  /* The cut: what was synced so far survives. */
  cut = __atomic_load_n(&rec_io.synced_size, __ATOMIC_SEQ_CST);
  copy = rec_io.synced;
  rec_io.synced = NULL;
  put(f, 21, SL_LEDGER_QUEUED, 21); /* nobody waited for it */
  close_journal(f);
  cut_to_synced(f, copy, cut);
  free(copy);
  reopen(f);
  assert_int_equal(stats(f).bad_offset, -1);
  for (unsigned n = 1; n <= 20; n++) {
    assert_int_equal(known(f, n), 1);
    if (n % 2 == 0) {
      char key[8];
      snprintf(key, sizeof(key), "k%u", n);
      assert_int_equal(key_id(f, 0, key, id), 1);
      assert_memory_equal(id, entry(n, 0, 0).id, 16);
    }
  }
  assert_int_equal(got(f, 5).state, SL_LEDGER_DELIVERED);
  assert_int_equal(known(f, 21), 0);
}

/* A failed fdatasync stops the journal: waiters get the error, later waits
 * return at once, the ledger goes on. */
static void test_failed_sync_wakes_waiters_with_the_error(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_ALWAYS);
  rec_io.fail_sync = EIO;
  put(f, 1, SL_LEDGER_QUEUED, 1);
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  run_until_called(f, &s);
  assert_int_equal(s.status, -EIO);
  assert_int_equal(stats(f).failed, 1);
  put(f, 2, SL_LEDGER_QUEUED, 2);
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 1);
  assert_int_equal(known(f, 2), 1);
  rec_io.fail_sync = 0;
}

/* Frames nobody waits for are written without an fdatasync (a spilled
 * request's status and key: its spool record holds them); a waiter that
 * comes later gets a sync of its own, with nothing new to write. */
static void test_unwaited_frames_are_written_unsynced(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};
  uint64_t start;

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_BATCH);
  start = stats(f).file_bytes;
  for (unsigned n = 1; n <= 10; n++)
    put(f, n, SL_LEDGER_QUEUED, n);
  for (int i = 0; i < 100000 && stats(f).file_bytes == start; i++)
    uv_run(&f->loop, UV_RUN_ONCE); /* the group goes within flush_delay_ms */
  assert_true(rec_io.writes >= 1);
  assert_int_equal(rec_io.syncs, 0);
  assert_true(stats(f).durable_bytes < stats(f).appended_bytes);
  s.f = f;
  s.want = (size_t)file_size(f->path);
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  run_until_called(f, &s);
  assert_int_equal(s.status, 0);
  assert_int_equal(rec_io.syncs, 1);
  assert_true(s.frames_synced);
  assert_int_equal(stats(f).durable_bytes, stats(f).appended_bytes);
}

/* A clean close ends the file with a CLOSED frame, and only then does the
 * next open trust the file alone; a missing file, a file cut before its end
 * (a crash) or one with its CLOSED frame torn off is unclean. */
static void test_clean_close_marker(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};
  uint8_t *copy;
  off_t size;
  int fd;

  reopen(f); /* no file yet */
  assert_true(sl_ledger_journal_unclean(f->l));
  assert_int_equal(stats(f).clean_start, 0);
  put(f, 1, SL_LEDGER_QUEUED, 1);
  reopen(f); /* closed cleanly */
  assert_false(sl_ledger_journal_unclean(f->l));
  assert_int_equal(stats(f).clean_start, 1);
  assert_int_equal(got(f, 1).state, SL_LEDGER_QUEUED);
  /* The state a crash leaves: everything written and synced, no close. */
  put(f, 2, SL_LEDGER_DELIVERED, 2);
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  run_until_called(f, &s);
  size = file_size(f->path);
  copy = malloc((size_t)size);
  assert_non_null(copy);
  fd = open(f->path, O_RDONLY);
  assert_int_equal(pread(fd, copy, (size_t)size, 0), size);
  close(fd);
  close_journal(f);
  fd = open(f->path, O_WRONLY | O_TRUNC);
  assert_int_equal(write(fd, copy, (size_t)size), size);
  close(fd);
  free(copy);
  assert_int_equal(open_with(f, 1024, NULL), 0);
  assert_true(sl_ledger_journal_unclean(f->l));
  assert_int_equal(got(f, 2).state, SL_LEDGER_DELIVERED);
  /* Closed cleanly, then the CLOSED frame torn: unclean. */
  close_journal(f);
  assert_int_equal(truncate(f->path, file_size(f->path) - 1), 0);
  assert_int_equal(open_with(f, 1024, NULL), 0);
  assert_true(sl_ledger_journal_unclean(f->l));
  assert_int_equal(got(f, 2).state, SL_LEDGER_DELIVERED);
}

/* During a run-time compaction, frames written to the temp file count as
 * durable only once it is renamed over the journal: a waiter on them runs
 * after the compaction completed, and a cut then keeps them. */
static void test_waiter_during_compaction(void **state) {
  struct fixture *f = *state;
  struct seen s = {0};

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_BATCH);
  for (unsigned n = 1; n <= 30; n++)
    put(f, n, SL_LEDGER_QUEUED, n);
  s.calls = 0;
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  run_until_called(f, &s);
  sl_ledger_journal_compact(f->j); /* no write in flight: starts now */
  assert_true(stats(f).compacting);
  for (unsigned n = 1; n <= 30; n++)
    put(f, n, SL_LEDGER_DELIVERED, n);
  s.calls = 0;
  assert_int_equal(sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable), 0);
  run_until_called(f, &s);
  assert_int_equal(s.status, 0);
  close_journal(f);
  reopen(f);
  for (unsigned n = 1; n <= 30; n++)
    assert_int_equal(got(f, n).state, SL_LEDGER_DELIVERED);
}

/* A crash leaves the zero-filled tail of a file written under a sync policy:
 * the load ends there cleanly. Zeros followed by anything else are damage. */
static void test_zero_tail_is_a_clean_end(void **state) {
  struct fixture *f = *state;
  off_t end;
  int fd;

  write_entries(f, 3);
  close_journal(f);
  end = file_size(f->path);
  assert_int_equal(truncate(f->path, end + 300000), 0);
  assert_int_equal(open_with(f, 64, NULL), 0);
  assert_int_equal(stats(f).bad_offset, -1);
  assert_int_equal(sl_ledger_count(f->l), 3);
  close_journal(f);
  assert_int_equal(file_size(f->path), end); /* rewritten without the zeros */

  assert_int_equal(truncate(f->path, end + 100), 0);
  fd = open(f->path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "x", 1), 1);
  close(fd);
  assert_int_equal(open_with(f, 64, NULL), 0);
  assert_int_equal(stats(f).bad_offset, end);
  assert_int_equal(sl_ledger_count(f->l), 3);
}

/* Loads the journal image <copy> of <size> bytes in a directory of its own
 * and checks that ids 1..<n_ids> whose bit is set in <known_ids> have an
 * entry and that keys "r<id>" whose bit is set in <known_keys> are there. */
static void check_image(struct fixture *f, const uint8_t *copy, off_t size,
                        const uint8_t *known_ids, const uint8_t *known_keys, unsigned n_ids) {
  char dir[64], path[128], p2[160];
  struct sl_ledger *l = sl_ledger_create(8192); /* room for every id: no eviction */
  struct sl_dedupe *d = sl_dedupe_create(8192, HOUR_MS);
  struct sl_ledger_journal *j = NULL;
  struct sl_ledger_journal_stats st;
  int fd;

  snprintf(dir, sizeof(dir), "/tmp/sl-journal-cut-XXXXXX");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/" SL_LEDGER_JOURNAL_FILE, dir);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, copy, (size_t)size), size);
  close(fd);
  assert_int_equal(sl_ledger_journal_open(&f->loop, path, l, d, f->now, NULL, &j), 0);
  sl_ledger_journal_stats(j, &st);
  assert_int_equal(st.bad_offset, -1); /* a zero tail or a clean end, never damage */
  for (unsigned n = 1; n <= n_ids; n++) {
    struct sl_ledger_entry want = entry(n, SL_LEDGER_QUEUED, 0), e;
    char key[16];
    uint8_t id[16];

    if (known_ids[n / 8] & (1u << (n % 8)))
      assert_int_equal(sl_ledger_get(l, want.id, &e), 1);
    snprintf(key, sizeof(key), "r%u", n);
    if (known_keys[n / 8] & (1u << (n % 8))) {
      assert_int_equal(sl_dedupe_get(d, 0, key, strlen(key), f->now, id), 1);
      assert_memory_equal(id, want.id, 16);
    }
  }
  sl_ledger_journal_close(j);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
  unlink(path);
  snprintf(p2, sizeof(p2), "%s.lock", path);
  unlink(p2);
  rmdir(dir);
}

/*
 * Random appends of entries and keys (each a new id or key, so that a frame
 * missing from a cut is seen), with a wait now and then; each wait's
 * callback is a cut point: the file as it was at the fdatasync before it
 * (the copy the recording table keeps) must load without damage and hold
 * every entry and key appended before the wait. 6,000 frames take the file
 * past its first 256 KiB of zeros, so cuts fall on both sides of a
 * preallocation step.
 */
static void test_random_cuts_keep_waited_frames(void **state) {
  struct fixture *f = *state;
  enum { IDS = 6000 };
  uint8_t ids[IDS / 8 + 1] = {0}, keys[IDS / 8 + 1] = {0};
  unsigned seed = 17, cuts = 0;

  open_recording(f, SL_LEDGER_JOURNAL_SYNC_BATCH);
  for (unsigned op = 0; op < 6000; op++) {
    unsigned n = op + 1, r = (unsigned)rand_r(&seed) % 100; /* each op a new id or key */

    if (r < 60) {
      struct sl_ledger_entry e = entry(n, r < 40 ? SL_LEDGER_QUEUED : SL_LEDGER_DELIVERED, n);
      assert_int_equal(sl_ledger_put(f->l, &e), 0);
      if (r < 20)
        sl_ledger_journal_flush(f->j); /* a cancellation's frame: its group goes at once */
      ids[n / 8] |= (uint8_t)(1u << (n % 8));
    } else if (r < 75) {
      char key[16];

      snprintf(key, sizeof(key), "r%u", n);
      if (sl_dedupe_put(f->d, 0, key, strlen(key), entry(n, 0, 0).id, f->now) == 0)
        keys[n / 8] |= (uint8_t)(1u << (n % 8));
    } else if (r < 77) {
      struct seen s = {0};
      uint8_t want_ids[sizeof(ids)], want_keys[sizeof(keys)];

      memcpy(want_ids, ids, sizeof(ids));
      memcpy(want_keys, keys, sizeof(keys));
      if (sl_ledger_journal_wait(f->l, &s.w, sl_ledger_journal_mark(f->l), on_durable) == 0)
        run_until_called(f, &s);
      assert_int_equal(s.status, 0);
      cuts++;
      if (rec_io.synced != NULL) {
        off_t size = __atomic_load_n(&rec_io.synced_size, __ATOMIC_SEQ_CST);
        uint8_t *copy = malloc((size_t)size + 1);

        assert_non_null(copy);
        memcpy(copy, rec_io.synced, (size_t)size);
        check_image(f, copy, size, want_ids, want_keys, IDS);
        free(copy);
      }
    } else if (r < 90) {
      uv_run(&f->loop, UV_RUN_NOWAIT); /* groups go out while appends go on */
    }
  }
  assert_true(cuts > 50);
  assert_true(stats(f).file_bytes > 256 * 1024);
  assert_int_equal(stats(f).failed, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queued_renumbered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_new_states_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_expired_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_crc, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_header, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compaction_at_startup, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_respects_capacity, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compaction_at_run_time, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_during_compaction, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_expiry_on_load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_locked, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pending_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_upstream_names, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_waiter_runs_after_fdatasync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_off_never_waits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_power_cut_keeps_what_was_answered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_sync_wakes_waiters_with_the_error, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_unwaited_frames_are_written_unsynced, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clean_close_marker, setup, teardown),
      cmocka_unit_test_setup_teardown(test_waiter_during_compaction, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zero_tail_is_a_clean_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_random_cuts_keep_waited_frames, setup, teardown),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);

  free(rec_io.synced);
  return failed;
}
