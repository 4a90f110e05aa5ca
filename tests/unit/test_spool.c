/*
 * Spool unit tests: round trip, restart, torn tails at every byte offset,
 * flipped bits, out-of-order acks across a restart, GC, full, ENOSPC/EIO on
 * write and fdatasync, delayed records, retries and dead letters.
 *
 * Each test works in its own temporary directory and injects the wall clock
 * (delays) and the write-side I/O (failures) through sl_spool_opts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sluice/crc32c.h"
#include "sluice/log.h"
#include "sluice/spool.h"
#include "spool/spool_int.h"

/* ---- fixtures ------------------------------------------------------------------------ */

static uint64_t fake_now = 1700000000000ull;
/* Read by the spool's writer thread: atomic, so tests stay clean under TSan. */
static uint64_t clock_fn(void *arg) {
  (void)arg;
  return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}
static void advance(uint64_t ms) { __atomic_add_fetch(&fake_now, ms, __ATOMIC_RELAXED); }

/* Failure injection: the next <n> calls of a kind fail with <err>. The spool's threads read
 * these while the test sets them: atomics keep that clean under TSan. */
static int fail_pwrite_n, fail_pwrite_err, fail_sync_n, fail_sync_err, fail_trunc_n;
static bool take_failure(int *n) {
  int v = __atomic_load_n(n, __ATOMIC_ACQUIRE);
  while (v > 0)
    if (__atomic_compare_exchange_n(n, &v, v - 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      return true;
  return false;
}
static void set_failures(int *n, int v) { __atomic_store_n(n, v, __ATOMIC_RELEASE); }
/* A slow disk for the zero-fill of spare segments only (64 KiB writes of zeros). */
static int slow_zero_fill;
static bool all_zero(const void *b, size_t n) {
  const unsigned char *p = b;
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}
static ssize_t t_pwrite(int fd, const void *b, size_t n, off_t o) {
  if (__atomic_load_n(&slow_zero_fill, __ATOMIC_ACQUIRE) && n == 65536 && all_zero(b, n))
    usleep(20000);
  if (take_failure(&fail_pwrite_n)) {
    errno = __atomic_load_n(&fail_pwrite_err, __ATOMIC_ACQUIRE);
    return -1;
  }
  return pwrite(fd, b, n, o);
}
static int t_fdatasync(int fd) {
  if (take_failure(&fail_sync_n)) {
    errno = __atomic_load_n(&fail_sync_err, __ATOMIC_ACQUIRE);
    return -1;
  }
  return fdatasync(fd);
}
static int t_fsync(int fd) { return fsync(fd); }
static int t_ftruncate(int fd, off_t l) {
  if (take_failure(&fail_trunc_n)) {
    errno = EIO;
    return -1;
  }
  return ftruncate(fd, l);
}
static int t_rename(const char *a, const char *b) { return rename(a, b); }
static int t_unlink(const char *p) { return unlink(p); }
static const struct sl_io test_io = {.pwrite = t_pwrite,
                                     .fdatasync = t_fdatasync,
                                     .fsync = t_fsync,
                                     .ftruncate = t_ftruncate,
                                     .rename = t_rename,
                                     .unlink = t_unlink};

static char dir[256];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}
static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/sl-spool-test.XXXXXX");
  assert_non_null(mkdtemp(dir));
  __atomic_store_n(&fake_now, 1700000000000ull, __ATOMIC_RELAXED);
  set_failures(&fail_pwrite_n, 0);
  set_failures(&fail_sync_n, 0);
  set_failures(&fail_trunc_n, 0);
  /* The corruption tests log loudly by design; SPOOL_TEST_VERBOSE=1 shows it. */
  sl_log_set_level(getenv("SPOOL_TEST_VERBOSE") ? SL_LOG_DEBUG
                                                : (enum sl_log_level)(SL_LOG_ERROR + 1));
  return 0;
}
static int teardown(void **state) {
  (void)state;
  rm_rf(dir);
  return 0;
}

static struct sl_spool_opts base_opts(void) {
  struct sl_spool_opts o;
  sl_spool_opts_init(&o);
  o.name = "test";
  o.now_ms = clock_fn;
  o.io = &test_io;
  o.dict_train_records = 0;
  o.ack_interval_us = 0;
  return o;
}

/* For tests that read segment files by offset: no zero-filled tail, no spare file. */
static struct sl_spool_opts layout_opts(void) {
  struct sl_spool_opts o = base_opts();
  o.preallocate = false;
  return o;
}

static struct sl_spool *open_spool(const struct sl_spool_opts *o) {
  struct sl_spool *s = NULL;
  assert_int_equal(sl_spool_open(dir, o, &s), 0);
  return s;
}

/* Record <i>: a body of varying length that says which record it is. */
static char body_buf[8192];
static struct sl_spool_record make_rec(unsigned i) {
  struct sl_spool_record r;
  size_t n;
  memset(&r, 0, sizeof(r));
  memcpy(r.id, &i, sizeof(i));
  r.enqueue_ms = fake_now;
  r.method = "POST";
  r.method_len = 4;
  r.target = "/api/orders";
  r.target_len = strlen(r.target);
  r.headers = "content-type: application/json\r\n";
  r.headers_len = strlen(r.headers);
  n = (size_t)snprintf(body_buf, sizeof(body_buf), "{\"record\":%u,\"pad\":\"", i);
  for (unsigned k = 0; k < (i * 37) % 300; k++)
    body_buf[n++] = (char)('a' + (i + k) % 26);
  n += (size_t)snprintf(body_buf + n, sizeof(body_buf) - n, "\"}");
  r.body = body_buf;
  r.body_len = n;
  return r;
}

static unsigned rec_index(const struct sl_spool_record *r) {
  unsigned i;
  memcpy(&i, r->id, sizeof(i));
  return i;
}

static void check_rec(const struct sl_spool_record *r) {
  unsigned i = rec_index(r);
  struct sl_spool_record e = make_rec(i);
  assert_int_equal(r->body_len, e.body_len);
  assert_memory_equal(r->body, e.body, e.body_len);
  assert_int_equal(r->method_len, 4);
  assert_memory_equal(r->method, "POST", 4);
  assert_int_equal(r->headers_len, e.headers_len);
}

struct done {
  int calls;
  int last;
  int fails;
};
static void done_cb(void *arg, int status) {
  struct done *d = arg;
  d->calls++;
  d->last = status;
  if (status != 0)
    d->fails++;
}

static void settle(struct sl_spool *s) {
  sl_spool_wait_idle(s);
  sl_spool_poll_completions(s);
}

static void append_n(struct sl_spool *s, unsigned from, unsigned n, struct done *d) {
  for (unsigned i = from; i < from + n; i++) {
    struct sl_spool_record r = make_rec(i);
    assert_int_equal(sl_spool_append(s, &r, done_cb, d), 0);
  }
}

/* Takes every ready record; returns how many; marks seen[] and acks them if <ack>. */
static unsigned drain(struct sl_spool *s, unsigned char *seen, size_t nseen, bool ack) {
  struct sl_spool_item *it;
  unsigned n = 0;
  for (;;) {
    assert_int_equal(sl_spool_take(s, &it), 0);
    if (it == NULL)
      break;
    const struct sl_spool_record *r = sl_spool_item_record(it);
    check_rec(r);
    unsigned i = rec_index(r);
    if (seen) {
      assert_true(i < nseen);
      seen[i]++;
    }
    n++;
    if (ack)
      sl_spool_ack(s, it, NULL, NULL);
    else
      sl_spool_release(s, it), (void)0;
    if (!ack)
      break; /* released items come straight back: stop */
  }
  return n;
}

static int count_files(const char *prefix) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      n++;
  closedir(d);
  return n;
}

static void seg_file(const char *prefix, char *out, size_t len) {
  DIR *d = opendir(dir);
  struct dirent *e;
  out[0] = 0;
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      snprintf(out, len, "%s/%s", dir, e->d_name);
  closedir(d);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_round_trip(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  unsigned char seen[500] = {0};
  struct sl_spool_stats st;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 500, &d);
  settle(s);
  assert_int_equal(d.calls, 500);
  assert_int_equal(d.fails, 0);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 500);
  assert_int_equal(st.oldest_ready_ms, fake_now);
  assert_true(st.compressed_bytes_written > 0);
  assert_true(st.raw_bytes_written > st.compressed_bytes_written);
  assert_int_equal(drain(s, seen, 500, true), 500);
  for (int i = 0; i < 500; i++)
    assert_int_equal(seen[i], 1);
  settle(s);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 0);
  assert_int_equal(st.inflight, 0);
  sl_spool_close(s);
}

static void test_fifo_order_and_policies(void **state) {
  enum sl_spool_fsync pol[3] = {SL_SPOOL_FSYNC_ALWAYS, SL_SPOOL_FSYNC_BATCH, SL_SPOOL_FSYNC_OFF};
  (void)state;
  for (int p = 0; p < 3; p++) {
    struct sl_spool_opts o = base_opts();
    struct done d = {0};
    struct sl_spool_item *it;
    o.fsync = pol[p];
    o.compression_level = p; /* 0 = stored raw */
    struct sl_spool *s = open_spool(&o);
    append_n(s, 1000 * (unsigned)p, 50, &d);
    settle(s);
    assert_int_equal(d.calls, 50);
    for (unsigned i = 0; i < 50; i++) {
      assert_int_equal(sl_spool_take(s, &it), 0);
      assert_non_null(it);
      assert_int_equal(rec_index(sl_spool_item_record(it)), 1000 * (unsigned)p + i);
      sl_spool_ack(s, it, NULL, NULL);
    }
    assert_int_equal(sl_spool_take(s, &it), 0);
    assert_null(it);
    sl_spool_close(s);
  }
}

static void test_restart(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  unsigned char seen[300] = {0};
  struct sl_spool_stats st;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 300, &d);
  settle(s);
  sl_spool_close(s);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 300);
  assert_int_equal(drain(s, seen, 300, true), 300);
  sl_spool_close(s);
  /* Acked before the close: nothing comes back. */
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 0);
  assert_int_equal(drain(s, NULL, 0, true), 0);
  sl_spool_close(s);
}

static void copy_file(const char *from, const char *to) {
  char buf[65536];
  int a = open(from, O_RDONLY), b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ssize_t n;
  assert_true(a >= 0 && b >= 0);
  while ((n = read(a, buf, sizeof(buf))) > 0)
    assert_int_equal(write(b, buf, (size_t)n), n);
  close(a);
  close(b);
}

/* Three units of one record each, the last one small; returns the segment path. */
static void three_units(char *seg, size_t len, off_t *unit_off) {
  struct sl_spool_opts o = layout_opts();
  struct done d = {0};
  struct stat sb;
  struct sl_spool *s = open_spool(&o);
  for (unsigned i = 0; i < 3; i++) {
    seg_file("ready-", seg, len);
    if (seg[0] && stat(seg, &sb) == 0)
      unit_off[i] = sb.st_size;
    else
      unit_off[i] = SL__SEG_HDR;
    struct sl_spool_record r = make_rec(i == 2 ? 0 : i + 1);
    if (i == 2)
      memcpy(r.id, (unsigned[]){2}, sizeof(unsigned));
    r.body_len = i == 2 ? 8 : r.body_len; /* keep the last unit small */
    assert_int_equal(sl_spool_append(s, &r, done_cb, &d), 0);
    settle(s);
  }
  sl_spool_close(s);
  seg_file("ready-", seg, len);
  stat(seg, &sb);
  unit_off[3] = sb.st_size;
}

static void test_torn_tail_every_offset(void **state) {
  char seg[512], saved[600];
  off_t uo[4];
  struct sl_spool_stats st;
  struct sl_spool_opts o = layout_opts();
  (void)state;

  three_units(seg, sizeof(seg), uo);
  snprintf(saved, sizeof(saved), "%s.orig", dir);
  copy_file(seg, saved);
  assert_true(uo[3] - uo[2] < 200);
  for (off_t cut = uo[2]; cut <= uo[3]; cut++) {
    struct sl_spool_item *it;
    unsigned got = 0;
    copy_file(saved, seg);
    assert_int_equal(truncate(seg, cut), 0);
    /* The acks file may mention nothing yet: no acks were made. */
    struct sl_spool *s = open_spool(&o);
    sl_spool_stats(s, &st);
    assert_int_equal(st.torn_tails, cut > uo[2] && cut < uo[3] ? 1 : 0);
    assert_int_equal(st.ready, cut == uo[3] ? 3 : 2);
    while (sl_spool_take(s, &it) == 0 && it != NULL) {
      got++;
      sl_spool_release(s, it);
      if (got > 2)
        break;
    }
    sl_spool_close(s);
    struct stat sb;
    stat(seg, &sb);
    assert_int_equal(sb.st_size, cut == uo[3] ? uo[3] : uo[2]);
    /* An append after the cut lands cleanly after the last valid unit. */
    s = open_spool(&o);
    struct done d = {0};
    append_n(s, 50, 1, &d);
    settle(s);
    assert_int_equal(d.fails, 0);
    sl_spool_close(s);
    s = open_spool(&o);
    sl_spool_stats(s, &st);
    assert_int_equal(st.ready, cut == uo[3] ? 4 : 3);
    assert_int_equal(st.torn_tails, 0);
    sl_spool_close(s);
  }
  unlink(saved);
}

/* Copies every file of <from> into a new directory <to>: what a crash would leave on disk. */
static void copy_dir(const char *from, const char *to) {
  DIR *d = opendir(from);
  struct dirent *e;
  char a[600], b[600];
  assert_int_equal(mkdir(to, 0700), 0);
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    snprintf(a, sizeof(a), "%s/%s", from, e->d_name);
    snprintf(b, sizeof(b), "%s/%s", to, e->d_name);
    copy_file(a, b);
  }
  closedir(d);
}

/* Ready files of <path> whose size is <size> and whose last byte is zero. */
static int zero_tailed_files(const char *path, off_t size) {
  DIR *d = opendir(path);
  struct dirent *e;
  char f[600];
  int n = 0;
  while ((e = readdir(d)) != NULL) {
    struct stat sb;
    unsigned char last = 1;
    snprintf(f, sizeof(f), "%s/%s", path, e->d_name);
    if (strncmp(e->d_name, "ready-", 6) != 0 || stat(f, &sb) != 0 || sb.st_size != size)
      continue;
    int fd = open(f, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &last, 1, size - 1), 1);
    close(fd);
    n += last == 0;
  }
  closedir(d);
  return n;
}

/*
 * Ready segments are written into preallocated, zero-filled files. A crash leaves the zero
 * tail (and maybe an unused spare) on disk: reopening must give back every record, in order,
 * without calling the zeros a torn write; sealed segments are cut to their footer.
 */
static void test_preallocated_segments(void **state) {
  struct sl_spool_opts o = base_opts();
  struct sl_spool_stats st;
  struct done d = {0};
  struct sl_spool *s, *c = NULL;
  unsigned char seen[400] = {0};
  char crash[300];
  (void)state;

  o.segment_bytes = 16384;
  o.block_bytes = 1024;
  s = open_spool(&o);
  for (unsigned k = 0; k < 10; k++) {
    append_n(s, k * 40, 40, &d);
    settle(s);
  }
  assert_int_equal(d.fails, 0);
  assert_int_equal(d.calls, 400);
  assert_true(count_files("ready-") >= 3);
  /* The segment being written (or the spare) still has its zero tail. */
  assert_true(zero_tailed_files(dir, 16384 + 2048) >= 1);
  snprintf(crash, sizeof(crash), "%s.crash", dir);
  copy_dir(dir, crash);
  sl_spool_close(s);

  assert_int_equal(sl_spool_open(crash, &o, &c), 0);
  sl_spool_stats(c, &st);
  assert_int_equal(st.ready, 400);
  assert_int_equal(st.torn_tails, 0);
  assert_int_equal(st.corrupt_units, 0);
  assert_int_equal(st.lost_records, 0);
  assert_int_equal(drain(c, seen, 400, true), 400);
  for (unsigned i = 0; i < 400; i++)
    assert_int_equal(seen[i], 1);
  sl_spool_close(c);
  rm_rf(crash);

  /* A clean close leaves no spare behind and every record still there. */
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 400);
  assert_int_equal(st.torn_tails, 0);
  sl_spool_close(s);
}

/* Bytes of the regular files in the spool directory, as du -b counts them. */
static uint64_t files_bytes(void) {
  DIR *d = opendir(dir);
  struct dirent *e;
  uint64_t n = 0;

  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    char path[600];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
      n += (uint64_t)sb.st_size;
  }
  closedir(d);
  return n;
}

/* Waits (up to 5 s, for the spare's preparer) until the files add up to the stats: the
 * disk bytes plus the preallocated zeros, plus the 64-byte header of a spare not in use. */
static void check_files_add_up(struct sl_spool *s, struct sl_spool_stats *st) {
  uint64_t files = 0;

  for (int i = 0; i < 500; i++) {
    sl_spool_stats(s, st);
    files = files_bytes();
    if (files == st->disk_bytes + st->prealloc_bytes ||
        (st->prealloc_bytes > 0 && files == st->disk_bytes + st->prealloc_bytes + 64))
      return;
    usleep(10000);
  }
  fail_msg("files hold %llu bytes; disk_bytes %llu + prealloc_bytes %llu",
           (unsigned long long)files, (unsigned long long)st->disk_bytes,
           (unsigned long long)st->prealloc_bytes);
}

/*
 * Regression: backlog bytes were the bytes of every file (delivered records included) and the
 * zeros of preallocated segments were counted nowhere, so the metrics did not add up to du.
 * Now disk_bytes + prealloc_bytes is the size of the files, through rolls, deletions and a
 * reopen; backlog_bytes is the data of unsettled records and 0 once all are acked.
 */
static void test_byte_counts_match_files(void **state) {
  struct sl_spool_opts o = base_opts();
  struct sl_spool_stats st;
  struct done d = {0};
  struct sl_spool *s;
  (void)state;

  o.segment_bytes = 16384;
  o.block_bytes = 1024;
  s = open_spool(&o);
  for (unsigned k = 0; k < 10; k++) {
    append_n(s, k * 40, 40, &d);
    settle(s);
  }
  assert_int_equal(d.fails, 0);
  /* A spare, or the zero tail of the current segment. The spare is zero-filled on the
   * preparer thread, which a busy machine may not have run yet. */
  for (int i = 0; i < 500; i++) {
    sl_spool_stats(s, &st);
    if (st.prealloc_bytes > 0)
      break;
    usleep(10000);
  }
  assert_true(st.prealloc_bytes > 0);
  check_files_add_up(s, &st);
  assert_int_equal(st.backlog_bytes, st.compressed_bytes_written);
  assert_true(st.backlog_bytes < st.disk_bytes);

  assert_int_equal(drain(s, NULL, 0, true), 400);
  settle(s);
  check_files_add_up(s, &st);
  assert_int_equal(st.backlog_bytes, 0);
  sl_spool_close(s);

  s = open_spool(&o); /* recovery counts the zero tail of the segment it goes on with */
  check_files_add_up(s, &st);
  assert_int_equal(st.backlog_bytes, 0);
  append_n(s, 400, 40, &d);
  settle(s);
  check_files_add_up(s, &st);
  assert_true(st.backlog_bytes > 0);
  sl_spool_close(s);
}

/*
 * A spare prepared slowly, while a segment created without it filled, was delivered and was
 * deleted: the reader has passed that segment's (higher) sequence number, so the spare must
 * not become the ready log's next segment, or what is appended to it is never read.
 */
static void test_late_spare_is_not_used(void **state) {
  struct sl_spool_opts o = base_opts();
  struct sl_spool_item *it;
  struct done d = {0};
  struct sl_spool *s;
  (void)state;

  o.segment_bytes = 4u << 20;
  __atomic_store_n(&slow_zero_fill, 1, __ATOMIC_RELEASE);
  s = open_spool(&o);
  append_n(s, 0, 70000, &d); /* over 1 MiB before the spare is ready: a segment without it */
  settle(s);
  assert_int_equal(d.fails, 0);
  assert_int_equal(drain(s, NULL, 0, true), 70000);
  settle(s);
  /* The delivered segment is rolled and deleted meanwhile (checkpoint, gc). */
  for (int i = 0; i < 200 && count_files("ready-") > 1; i++)
    usleep(10000);
  assert_int_equal(count_files("ready-"), 1); /* the spare, still being filled */
  __atomic_store_n(&slow_zero_fill, 0, __ATOMIC_RELEASE);
  usleep(1000000); /* the spare is done (a few steps of 256 KiB, 2 ms apart) */
  append_n(s, 100, 1, &d);
  settle(s);
  assert_int_equal(d.fails, 0);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_non_null(it);
  assert_int_equal(rec_index(sl_spool_item_record(it)), 100);
  sl_spool_ack(s, it, NULL, NULL);
  sl_spool_close(s);
}

static void test_flipped_bits(void **state) {
  char seg[512], saved[600];
  off_t uo[4];
  struct sl_spool_opts o = layout_opts();
  (void)state;

  three_units(seg, sizeof(seg), uo);
  snprintf(saved, sizeof(saved), "%s.orig", dir);
  copy_file(seg, saved);
  /* Every byte of the middle unit's header and a spread of its payload; every byte of the
   * segment header. */
  for (off_t pos = 0; pos < uo[3]; pos++) {
    bool hdr = pos < SL__SEG_HDR;
    bool mid = pos >= uo[1] && pos < uo[2];
    if (!hdr && !(mid && (pos < uo[1] + SL__UNIT_HDR || pos % 7 == 0)))
      continue;
    for (int bit = 0; bit < 8; bit += hdr || pos >= uo[1] + SL__UNIT_HDR ? 8 : 3) {
      struct sl_spool_stats st;
      struct sl_spool_item *it;
      unsigned char seen[4] = {0};
      unsigned char c;
      copy_file(saved, seg);
      int fd = open(seg, O_RDWR);
      assert_int_equal(pread(fd, &c, 1, pos), 1);
      c ^= (unsigned char)(1u << bit);
      assert_int_equal(pwrite(fd, &c, 1, pos), 1);
      close(fd);
      struct sl_spool *s = open_spool(&o);
      while (sl_spool_take(s, &it) == 0 && it != NULL) {
        unsigned i = rec_index(sl_spool_item_record(it));
        assert_true(i < 4);
        seen[i]++;
        sl_spool_ack(s, it, NULL, NULL);
      }
      sl_spool_stats(s, &st);
      if (hdr) {
        /* A bad segment header: the file is left out, and counted. */
        assert_true(st.corrupt_units >= 1);
        assert_int_equal(seen[1] + seen[2], 0);
      } else {
        assert_int_equal(seen[1], 1);
        assert_int_equal(seen[2], 1);
        assert_int_equal(seen[0] + seen[3], 0 + seen[3]);
        assert_true(st.corrupt_units >= 1);
        assert_int_equal(st.lost_records, 1);
      }
      sl_spool_close(s);
      /* The spool stays usable. */
      s = open_spool(&o);
      sl_spool_close(s);
      rm_rf(dir);
      mkdir(dir, 0755);
    }
  }
  unlink(saved);
}

static int count_cb(void *arg, const struct sl_spool_record *r) {
  (void)r;
  (*(unsigned *)arg)++;
  return 0;
}

/*
 * Opens a spool holding one damaged segment, scans it and takes everything: the records
 * listed are those handed out, each ordinal once; nothing is left ready or in flight
 * uncounted but the <lost> records, and after the acks nothing comes back. Returns how many
 * were handed out.
 */
static unsigned drain_damaged(uint64_t lost) {
  struct sl_spool_opts o = layout_opts();
  struct sl_spool_stats st;
  struct sl_spool_item *it;
  unsigned char taken[8] = {0};
  unsigned scanned = 0, n = 0;

  struct sl_spool *s = open_spool(&o);
  assert_int_equal(sl_spool_scan(s, count_cb, &scanned), 0);
  while (sl_spool_take(s, &it) == 0 && it != NULL) {
    assert_true(it->ord < sizeof(taken));
    assert_int_equal(taken[it->ord]++, 0);
    n++;
    sl_spool_ack(s, it, NULL, NULL);
  }
  assert_int_equal(scanned, n);
  assert_int_equal(sl_spool_lost_records(s), lost);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 0);
  assert_int_equal(st.inflight, 0);
  sl_spool_close(s);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 0);
  assert_int_equal(drain(s, NULL, 0, true), 0);
  sl_spool_close(s);
  return n;
}

/*
 * Damage that leaves valid units where recovery does not expect them (found by
 * fuzz_spool): recovery counts records that the ready cursor and the scan must
 * then reach, or settle as lost, the same way.
 */
static void test_units_out_of_place(void **state) {
  struct sl_spool_opts o = layout_opts();
  struct sl_spool *s;
  struct done d = {0};
  struct stat sb;
  char seg[512];
  off_t uo[4];
  uint8_t *b, *out, f[SL__FOOTER_SIZE];
  struct sl__unit u = {0};
  size_t n;
  int fd;
  (void)state;

  three_units(seg, sizeof(seg), uo);
  b = malloc((size_t)uo[3]);
  out = malloc((size_t)uo[3] * 2);
  assert_non_null(b);
  assert_non_null(out);
  fd = open(seg, O_RDONLY);
  assert_int_equal(pread(fd, b, (size_t)uo[3], 0), uo[3]);
  close(fd);
  /* A footer, as the writer seals a segment with, but amid the data: the cursor stopped
   * there (leaving records 1 and 2 ready forever) while recovery and the scan went on. */
  memset(f, 0, sizeof(f));
  u.type = SL__UNIT_FOOTER;
  u.payload_len = u.raw_len = SL__FOOTER_PAYLOAD;
  u.payload_crc = sl_crc32c(0, f + SL__UNIT_HDR, SL__FOOTER_PAYLOAD);
  sl__unit_encode(f, &u);
  n = 0;
  memcpy(out, b, (size_t)uo[1]);
  n += (size_t)uo[1];
  memcpy(out + n, f, sizeof(f));
  n += sizeof(f);
  memcpy(out + n, b + uo[1], (size_t)(uo[3] - uo[1]));
  n += (size_t)(uo[3] - uo[1]);
  fd = open(seg, O_WRONLY | O_TRUNC);
  assert_int_equal(write(fd, out, n), (ssize_t)n);
  close(fd);
  assert_int_equal(drain_damaged(0), 3);

  /* A stray copy of the first unit after the second: ordinal 0 was handed out twice. */
  rm_rf(dir);
  mkdir(dir, 0755);
  n = (size_t)uo[2];
  memcpy(out, b, n);
  memcpy(out + n, b + uo[0], (size_t)(uo[1] - uo[0]));
  n += (size_t)(uo[1] - uo[0]);
  memcpy(out + n, b + uo[2], (size_t)(uo[3] - uo[2]));
  n += (size_t)(uo[3] - uo[2]);
  fd = open(seg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_int_equal(write(fd, out, n), (ssize_t)n);
  close(fd);
  assert_int_equal(drain_damaged(0), 3);

  /* The header of a unit with the next one at the end of its payload, the rest of it
   * garbage: recovery resyncs into that unit and counts it; the cursor and the scan skip
   * the damaged unit by its header's extent, so that record is settled as lost. Units
   * stored uncompressed, the middle one large enough to hold the last. */
  rm_rf(dir);
  mkdir(dir, 0755);
  o.compression_level = 0;
  s = open_spool(&o);
  for (unsigned i = 0; i < 3; i++) {
    struct sl_spool_record r = make_rec(i == 1 ? 7 : i); /* 7: a 259-byte pad */
    assert_int_equal(sl_spool_append(s, &r, done_cb, &d), 0);
    settle(s);
    seg_file("ready-", seg, sizeof(seg));
    assert_int_equal(stat(seg, &sb), 0);
    uo[i + 1] = sb.st_size;
  }
  sl_spool_close(s);
  assert_int_equal(d.fails, 0);
  assert_true(uo[3] - uo[2] <= uo[2] - uo[1] - SL__UNIT_HDR);
  fd = open(seg, O_RDWR);
  assert_int_equal(pread(fd, out, (size_t)(uo[3] - uo[2]), uo[2]), uo[3] - uo[2]);
  assert_int_equal(pwrite(fd, out, (size_t)(uo[3] - uo[2]), uo[2] - (uo[3] - uo[2])),
                   uo[3] - uo[2]);
  memset(out, 0xab, (size_t)(uo[2] - uo[1]));
  n = (size_t)(uo[2] - (uo[3] - uo[2]) - (uo[1] + SL__UNIT_HDR)); /* garbage before it */
  assert_int_equal(pwrite(fd, out, n, uo[1] + SL__UNIT_HDR), (ssize_t)n);
  assert_int_equal(ftruncate(fd, uo[2]), 0);
  close(fd);
  assert_int_equal(drain_damaged(2), 1);
  free(b);
  free(out);
}

static void test_out_of_order_acks_restart(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0}, a = {0};
  struct sl_spool_item *items[200];
  unsigned char seen[200] = {0};
  (void)state;

  o.block_bytes = 2048; /* several units */
  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 200, &d);
  settle(s);
  for (int i = 0; i < 200; i++) {
    assert_int_equal(sl_spool_take(s, &items[i]), 0);
    assert_non_null(items[i]);
  }
  /* Ack the odd ones, from the back. */
  for (int i = 199; i >= 0; i--)
    if (i % 2)
      sl_spool_ack(s, items[i], done_cb, &a);
  settle(s);
  assert_int_equal(a.calls, 100);
  assert_int_equal(a.fails, 0);
  sl_spool_close(s); /* the even ones were in flight: they come back */
  s = open_spool(&o);
  assert_int_equal(drain(s, seen, 200, false) + 0, 1);
  sl_spool_close(s);
  s = open_spool(&o);
  memset(seen, 0, sizeof(seen));
  assert_int_equal(drain(s, seen, 200, true), 100);
  for (int i = 0; i < 200; i++)
    assert_int_equal(seen[i], i % 2 ? 0 : 1);
  sl_spool_close(s);
}

static void test_gc_deletes_segments(void **state) {
  struct sl_spool_opts o = layout_opts();
  struct done d = {0};
  struct sl_spool_stats st;
  (void)state;

  o.segment_bytes = 4096;
  o.block_bytes = 1024;
  struct sl_spool *s = open_spool(&o);
  for (int k = 0; k < 10; k++) {
    append_n(s, (unsigned)k * 40, 40, &d);
    settle(s);
  }
  assert_true(count_files("ready-") >= 5);
  assert_int_equal(drain(s, NULL, 0, true), 400);
  settle(s);
  settle(s);
  /* Only the segment still open for appends is left. */
  assert_int_equal(count_files("ready-"), 1);
  sl_spool_stats(s, &st);
  assert_int_equal(st.segments, 1);
  assert_true(st.disk_bytes < 8192);
  sl_spool_close(s);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 0);
  sl_spool_close(s);
}

static void full_case(uint64_t segment_bytes) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_record r;
  int i, err = 0;

  rm_rf(dir);
  mkdir(dir, 0755);
  o.max_bytes = 64 * 1024;
  o.segment_bytes = segment_bytes;
  o.compression_level = 0;
  struct sl_spool *s = open_spool(&o);
  for (i = 0; i < 10000; i++) {
    r = make_rec((unsigned)i);
    err = sl_spool_append(s, &r, done_cb, &d);
    if (err != 0)
      break;
    if (i % 10 == 0)
      settle(s);
  }
  assert_int_equal(err, SL_ESPOOL_FULL);
  assert_string_equal(sl_strerror(err), "spool full");
  settle(s);
  assert_int_equal(d.fails, 0);
  /* Delivering frees whole segments, and appends succeed again. */
  drain(s, NULL, 0, true);
  settle(s);
  settle(s);
  struct sl_spool_stats st;
  sl_spool_stats(s, &st);
  assert_true(st.disk_bytes < 8192);
  r = make_rec(1);
  assert_int_equal(sl_spool_append(s, &r, done_cb, &d), 0);
  settle(s);
  assert_int_equal(d.fails, 0);
  sl_spool_close(s);
}

static void test_full(void **state) {
  (void)state;
  full_case(8192); /* many small segments */
  /* One segment larger than the limit: the segment still open for appends must be given
   * back too once everything in it is delivered (regression: the spool stayed full). */
  full_case(64u << 20);
}

static void inject_case(int which, int err) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_stats st;
  unsigned char seen[40] = {0};

  rm_rf(dir);
  mkdir(dir, 0755);
  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 10, &d);
  settle(s);
  assert_int_equal(d.fails, 0);
  if (which == 0 || which == 2) {
    set_failures(&fail_pwrite_err, err);
    set_failures(&fail_trunc_n, which == 2 ? 1000 : 0);
    set_failures(&fail_pwrite_n, 1000);
  } else {
    set_failures(&fail_sync_err, err);
    set_failures(&fail_sync_n, 1000);
  }
  append_n(s, 10, 10, &d); /* whatever the grouping, all ten fail */
  settle(s);
  set_failures(&fail_pwrite_n, 0);
  set_failures(&fail_sync_n, 0);
  set_failures(&fail_trunc_n, 0);
  assert_int_equal(d.fails, 10);
  assert_int_equal(d.last, -err);
  sl_spool_stats(s, &st);
  assert_int_equal(st.last_error, -err);
  assert_int_equal(st.ready, 10);
  /* Space is back: appends succeed again and the spool is consistent. */
  append_n(s, 20, 10, &d);
  settle(s);
  assert_int_equal(d.fails, 10);
  sl_spool_stats(s, &st);
  assert_int_equal(st.last_error, 0);
  assert_int_equal(st.ready, 20);
  sl_spool_close(s);
  s = open_spool(&o);
  assert_int_equal(drain(s, seen, 40, true), 20);
  for (int i = 0; i < 30; i++)
    assert_int_equal(seen[i], i >= 10 && i < 20 ? 0 : 1);
  sl_spool_close(s);
}

static void test_enospc_eio(void **state) {
  (void)state;
  inject_case(0, ENOSPC);
  inject_case(0, EIO);
  inject_case(1, ENOSPC);
  inject_case(1, EIO);
  /* Write fails and the cut back fails too: the file is sealed, its cancelled records are
   * settled and never delivered, and the next append goes to a fresh segment. */
  inject_case(2, ENOSPC);
  inject_case(2, EIO);
}

static void test_delayed(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_item *it;
  struct sl_spool_stats st;
  uint64_t t0 = fake_now;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  /* 100 delayed records due in reverse order of appending, spread over 5 minutes. */
  for (unsigned i = 0; i < 100; i++) {
    struct sl_spool_record r = make_rec(1000 + i);
    r.not_before_ms = t0 + 1000 + (99 - i) * 3000;
    assert_int_equal(sl_spool_append(s, &r, done_cb, &d), 0);
  }
  append_n(s, 0, 5, &d); /* ready ones, appended after the delayed */
  settle(s);
  sl_spool_stats(s, &st);
  assert_int_equal(st.delayed, 100);
  assert_int_equal(st.ready, 5);
  /* Ready records never wait behind delayed ones. */
  for (unsigned i = 0; i < 5; i++) {
    assert_int_equal(sl_spool_take(s, &it), 0);
    assert_non_null(it);
    assert_true(rec_index(sl_spool_item_record(it)) < 5);
    sl_spool_ack(s, it, NULL, NULL);
  }
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_null(it);
  assert_int_equal(sl_spool_next_due_ms(s) <= t0 + 1000, true);
  sl_spool_close(s);
  /* They survive a restart and come due in due-time order. */
  s = open_spool(&o);
  unsigned got = 0, last = 2000;
  while (got < 100) {
    advance(1000);
    settle(s);
    while (sl_spool_take(s, &it) == 0 && it != NULL) {
      const struct sl_spool_record *r = sl_spool_item_record(it);
      assert_true(r->not_before_ms <= fake_now);
      /* due order = reverse of the index */
      assert_true(rec_index(r) < last);
      last = rec_index(r);
      got++;
      sl_spool_ack(s, it, NULL, NULL);
    }
    assert_true(fake_now < t0 + 400000);
  }
  settle(s);
  sl_spool_stats(s, &st);
  assert_int_equal(st.delayed, 0);
  /* Buckets whose window passed and whose records are all acked are deleted. */
  advance(3600 * 1000);
  settle(s);
  settle(s);
  assert_int_equal(count_files("delay-"), 0);
  sl_spool_close(s);
}

static void test_retry(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0}, rd = {0};
  struct sl_spool_item *it;
  struct sl_spool_stats st;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 2, &d);
  settle(s);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_int_equal(rec_index(sl_spool_item_record(it)), 0);
  assert_int_equal(sl_spool_retry(s, it, fake_now + 5000, done_cb, &rd), 0);
  settle(s);
  assert_int_equal(rd.calls, 1);
  assert_int_equal(rd.last, 0);
  sl_spool_stats(s, &st);
  assert_int_equal(st.delayed, 1);
  assert_int_equal(st.ready, 1);
  /* Record 1 is ready now; record 0 comes back after its backoff, attempts + 1. */
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_int_equal(rec_index(sl_spool_item_record(it)), 1);
  sl_spool_ack(s, it, NULL, NULL);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_null(it);
  advance(5000);
  settle(s);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_non_null(it);
  assert_int_equal(rec_index(sl_spool_item_record(it)), 0);
  assert_int_equal(sl_spool_item_record(it)->attempts, 1);
  check_rec(sl_spool_item_record(it));
  /* Retry at once: back to the ready log. */
  assert_int_equal(sl_spool_retry(s, it, 0, done_cb, &rd), 0);
  settle(s);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_non_null(it);
  assert_int_equal(sl_spool_item_record(it)->attempts, 2);
  sl_spool_ack(s, it, NULL, NULL);
  settle(s);
  sl_spool_close(s);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready + st.delayed, 0);
  sl_spool_close(s);
}

struct listed {
  int n;
  char err[64];
  unsigned idx[16];
};
static int list_cb(void *arg, const struct sl_spool_record *r) {
  struct listed *l = arg;
  snprintf(l->err, sizeof(l->err), "%.*s", (int)r->error_len, r->error);
  l->idx[l->n++ % 16] = rec_index(r);
  return 0;
}

static void test_dead_letters(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0}, dd = {0};
  struct sl_spool_item *it;
  struct sl_spool_stats st;
  struct listed l = {0};
  uint8_t id[16] = {0};
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 3, &d);
  settle(s);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(sl_spool_take(s, &it), 0);
    assert_int_equal(sl_spool_dead(s, it, "HTTP 500 after 8 attempts", done_cb, &dd), 0);
  }
  settle(s);
  assert_int_equal(dd.fails, 0);
  sl_spool_stats(s, &st);
  assert_int_equal(st.dead, 3);
  assert_int_equal(st.ready, 0);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_null(it); /* kept apart */
  sl_spool_close(s);
  s = open_spool(&o);
  assert_int_equal(sl_spool_dead_list(s, list_cb, &l), 0);
  assert_int_equal(l.n, 3);
  assert_string_equal(l.err, "HTTP 500 after 8 attempts");
  /* Redrive one by id. */
  memcpy(id, (unsigned[]){1}, sizeof(unsigned));
  assert_int_equal(sl_spool_dead_redrive(s, id, done_cb, &dd), 0);
  settle(s);
  assert_int_equal(dd.last, 0);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_non_null(it);
  assert_int_equal(rec_index(sl_spool_item_record(it)), 1);
  assert_int_equal(sl_spool_item_record(it)->attempts, 0);
  assert_int_equal(sl_spool_item_record(it)->error_len, 0);
  sl_spool_ack(s, it, NULL, NULL);
  /* Unknown id. */
  memcpy(id, (unsigned[]){77}, sizeof(unsigned));
  assert_int_equal(sl_spool_dead_purge(s, id, done_cb, &dd), 0);
  settle(s);
  assert_int_equal(dd.last, SL_ESPOOL_NOTFOUND);
  /* Purge one, redrive all (the last one). */
  memcpy(id, (unsigned[]){0}, sizeof(unsigned));
  assert_int_equal(sl_spool_dead_purge(s, id, done_cb, &dd), 0);
  settle(s);
  assert_int_equal(dd.last, 0);
  sl_spool_stats(s, &st);
  assert_int_equal(st.dead, 1);
  assert_int_equal(sl_spool_dead_redrive(s, NULL, done_cb, &dd), 0);
  settle(s);
  sl_spool_stats(s, &st);
  assert_int_equal(st.dead, 0);
  assert_int_equal(st.ready, 1);
  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_int_equal(rec_index(sl_spool_item_record(it)), 2);
  sl_spool_ack(s, it, NULL, NULL);
  settle(s);
  settle(s);
  /* Only the dead segment still open for appends may stay; it holds nothing. */
  assert_true(count_files("dead-") <= 1);
  sl_spool_stats(s, &st);
  assert_int_equal(st.dead, 0);
  sl_spool_close(s);
}

/* sl_spool_scan: every record not settled, in every store (ready, delayed, dead, taken and
 * in flight included), and none that was acked. */
static int scan_cb(void *arg, const struct sl_spool_record *r) {
  unsigned char *seen = arg;
  unsigned i = rec_index(r);
  assert_true(i < 16);
  seen[i]++;
  return 0;
}

static void test_scan(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_item *it, *held;
  unsigned char seen[16] = {0};
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 6, &d);
  {
    struct sl_spool_record r = make_rec(6);
    r.not_before_ms = fake_now + 3600 * 1000; /* delayed */
    assert_int_equal(sl_spool_append(s, &r, done_cb, &d), 0);
  }
  settle(s);
  assert_int_equal(sl_spool_take(s, &it), 0); /* 0: acked */
  sl_spool_ack(s, it, NULL, NULL);
  assert_int_equal(sl_spool_take(s, &it), 0); /* 1: dead */
  assert_int_equal(sl_spool_dead(s, it, "gone", done_cb, &d), 0);
  assert_int_equal(sl_spool_take(s, &held), 0); /* 2: in flight */
  settle(s);
  assert_int_equal(sl_spool_scan(s, scan_cb, seen), 0);
  assert_int_equal(seen[0], 0);
  for (unsigned i = 1; i <= 6; i++)
    assert_int_equal(seen[i], 1);
  assert_int_equal(sl_spool_lost_records(s), 0);
  sl_spool_release(s, held);
  sl_spool_close(s);
}

/* sl_spool_track_begin/_end: the ids of every record committed in between, the copies of
 * retries and dead-letter moves included; nothing from before, nothing after. */
static void track_cb(void *arg, const uint8_t id[16]) {
  unsigned char *seen = arg;
  unsigned i;
  memcpy(&i, id, sizeof(i));
  assert_true(i < 16);
  seen[i]++;
}

static void test_scan_tracks_commits(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_item *it;
  unsigned char seen[16] = {0};
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 4, &d);
  settle(s);
  sl_spool_track_begin(s);
  append_n(s, 4, 1, &d);
  assert_int_equal(sl_spool_take(s, &it), 0); /* 0: retried, a copy in the delayed store */
  assert_int_equal(sl_spool_retry(s, it, fake_now + 60000, done_cb, &d), 0);
  assert_int_equal(sl_spool_take(s, &it), 0); /* 1: dead-lettered, a copy in the dead store */
  assert_int_equal(sl_spool_dead(s, it, "gone", done_cb, &d), 0);
  assert_int_equal(sl_spool_take(s, &it), 0); /* 2: acked, nothing written */
  assert_int_equal(sl_spool_ack(s, it, NULL, NULL), 0);
  settle(s);
  assert_int_equal(sl_spool_track_end(s, track_cb, seen), 0);
  assert_int_equal(seen[0], 1);
  assert_int_equal(seen[1], 1);
  assert_int_equal(seen[2], 0);
  assert_int_equal(seen[3], 0);
  assert_int_equal(seen[4], 1);
  /* Not tracking any more. */
  append_n(s, 5, 1, &d);
  settle(s);
  memset(seen, 0, sizeof(seen));
  assert_int_equal(sl_spool_track_end(s, track_cb, seen), 0);
  assert_int_equal(seen[5], 0);
  assert_int_equal(d.fails, 0);
  sl_spool_close(s);
}

/*
 * sl_spool_scan on another thread while the owner appends, takes, acks, retries and
 * dead-letters, with small segments that roll and are deleted: no race (ASan/TSan), and
 * every record held once it is all over was read by the last scan or committed after
 * sl_spool_track_begin, although records moved between stores under the scans.
 */
#define SCAN_RACE_MAX 6000
struct scan_race {
  struct sl_spool *s;
  unsigned char last[SCAN_RACE_MAX]; /* read by the last scan */
  int rounds, err;
  bool done; /* atomic */
};

static int race_cb(void *arg, const struct sl_spool_record *r) {
  struct scan_race *sr = arg;
  unsigned i = rec_index(r);
  if (i < SCAN_RACE_MAX)
    sr->last[i] = 1;
  return 0;
}

static void *race_scanner(void *arg) {
  struct scan_race *sr = arg;
  for (int k = 0; k < sr->rounds && sr->err == 0; k++) {
    memset(sr->last, 0, sizeof(sr->last));
    sr->err = sl_spool_scan(sr->s, race_cb, sr);
  }
  __atomic_store_n(&sr->done, true, __ATOMIC_RELEASE);
  return NULL;
}

static int mark_cb(void *arg, const struct sl_spool_record *r) {
  unsigned char *held = arg;
  unsigned i = rec_index(r);
  assert_true(i < SCAN_RACE_MAX);
  held[i] = 1;
  return 0;
}

static void mark_tracked(void *arg, const uint8_t id[16]) {
  unsigned char *t = arg;
  unsigned i;
  memcpy(&i, id, sizeof(i));
  assert_true(i < SCAN_RACE_MAX);
  t[i] = 1;
}

static void test_scan_beside_owner(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  static struct scan_race sr;
  static unsigned char tracked[SCAN_RACE_MAX], held[SCAN_RACE_MAX];
  pthread_t th;
  unsigned i = 1000;
  (void)state;

  o.fsync = SL_SPOOL_FSYNC_OFF;
  o.segment_bytes = 16 * 1024;
  o.block_bytes = 2048;
  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, i, &d);
  settle(s);
  memset(&sr, 0, sizeof(sr));
  memset(tracked, 0, sizeof(tracked));
  memset(held, 0, sizeof(held));
  sr.s = s;
  sr.rounds = 20;
  sl_spool_track_begin(s);
  assert_int_equal(pthread_create(&th, NULL, race_scanner, &sr), 0);
  while (!__atomic_load_n(&sr.done, __ATOMIC_ACQUIRE) && i < SCAN_RACE_MAX) {
    struct sl_spool_item *it;
    append_n(s, i, 1, &d);
    sl_spool_flush(s);
    assert_int_equal(sl_spool_take(s, &it), 0);
    if (it != NULL) {
      switch (i % 4) {
      case 0:
        assert_int_equal(sl_spool_retry(s, it, fake_now + 3, done_cb, &d), 0);
        break;
      case 1:
        assert_int_equal(sl_spool_dead(s, it, "gone", done_cb, &d), 0);
        break;
      default:
        assert_int_equal(sl_spool_ack(s, it, NULL, NULL), 0);
      }
    }
    if (i % 64 == 0)
      assert_int_equal(sl_spool_dead_redrive(s, NULL, done_cb, &d), 0);
    advance(1);
    sl_spool_poll_completions(s);
    i++;
  }
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(sr.err, 0);
  settle(s);
  assert_int_equal(sl_spool_track_end(s, mark_tracked, tracked), 0);
  assert_int_equal(sl_spool_scan(s, mark_cb, held), 0);
  for (unsigned k = 0; k < SCAN_RACE_MAX; k++)
    if (held[k] && !sr.last[k] && !tracked[k])
      fail_msg("record %u is held but was neither scanned nor tracked", k);
  assert_int_equal(d.fails, 0);
  sl_spool_close(s);
}

static void test_dictionary(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  unsigned char seen[3000] = {0};
  (void)state;

  o.dict_train_records = 500;
  o.dict_bytes = 16384;
  struct sl_spool *s = open_spool(&o);
  for (int k = 0; k < 30; k++) {
    append_n(s, (unsigned)k * 100, 100, &d);
    settle(s);
    /* Let the trainer finish (seconds under ThreadSanitizer): its dictionary file. */
    for (int t = 0; k == 10 && t < 2000 && count_files("dict-") == 0; t++)
      usleep(10000);
  }
  assert_int_equal(d.fails, 0);
  sl_spool_close(s);
  assert_int_equal(count_files("dict-"), 1);
  s = open_spool(&o);
  assert_int_equal(drain(s, seen, 3000, true), 3000);
  sl_spool_close(s);
}

static void test_release_and_reject(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_item *it, *it2;
  struct sl_spool_record r = make_rec(1);
  (void)state;

  struct sl_spool_stats st;
  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 2, &d);
  settle(s);
  assert_int_equal(sl_spool_take(s, &it), 0);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 1);
  assert_int_equal(st.inflight, 1);
  sl_spool_release(s, it);
  /* Given back: ready again, counted once (regression: counted twice). */
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 2);
  assert_int_equal(st.inflight, 0);
  assert_int_equal(sl_spool_take(s, &it2), 0);
  assert_int_equal(rec_index(sl_spool_item_record(it2)), 0);
  sl_spool_ack(s, it2, NULL, NULL);
  r.body_len = SL_SPOOL_RECORD_MAX;
  assert_int_equal(sl_spool_append(s, &r, NULL, NULL), SL_ESPOOL_TOOBIG);
  /* A second open of the same directory is refused. */
  struct sl_spool *s2 = NULL;
  assert_int_equal(sl_spool_open(dir, &o, &s2), SL_ESPOOL_LOCKED);
  sl_spool_close(s); /* record 1 never taken, stays */
  s = open_spool(&o);
  assert_int_equal(drain(s, NULL, 0, true), 1);
  sl_spool_close(s);
}

/* Several sealed segments (read back through their footers), then one goes missing. */
static void test_missing_segment_and_footers(void **state) {
  struct sl_spool_opts o = layout_opts(); /* names segments by sequence number */
  struct done d = {0};
  struct sl_spool_stats st;
  unsigned char seen[400] = {0};
  char path[600];
  (void)state;

  o.segment_bytes = 4096;
  o.block_bytes = 1024;
  struct sl_spool *s = open_spool(&o);
  for (int k = 0; k < 10; k++) {
    append_n(s, (unsigned)k * 40, 40, &d);
    settle(s);
  }
  sl_spool_close(s);
  int nseg = count_files("ready-");
  assert_true(nseg >= 5);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 400);
  assert_int_equal(st.torn_tails + st.corrupt_units, 0);
  sl_spool_close(s);
  /* Remove the second segment: the others stay readable, in order. */
  snprintf(path, sizeof(path), "%s/ready-%016x.seg", dir, 2);
  assert_int_equal(unlink(path), 0);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_true(st.ready < 400 && st.ready > 300);
  unsigned n = drain(s, seen, 400, true);
  assert_int_equal(n, st.ready);
  unsigned last = 0;
  for (unsigned i = 0; i < 400; i++)
    if (seen[i])
      last = i;
  assert_int_equal(last, 399);
  sl_spool_close(s);
}

/* More delay buckets than the writer keeps descriptors for (64): all written, all due. */
static void test_many_buckets(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_item *it;
  uint64_t t0 = fake_now, last_due = 0;
  unsigned got = 0;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  for (int round = 0; round < 2; round++) {
    for (unsigned i = 0; i < 150; i++) {
      struct sl_spool_record r = make_rec(round * 150 + i);
      r.not_before_ms = t0 + 2000 + (uint64_t)((i * 7919) % 150) * 1000;
      assert_int_equal(sl_spool_append(s, &r, done_cb, &d), 0);
    }
    settle(s);
  }
  assert_int_equal(d.fails, 0);
  assert_true(count_files("delay-") > 64);
  sl_spool_close(s);
  s = open_spool(&o);
  while (got < 300) {
    advance(1000);
    settle(s);
    while (sl_spool_take(s, &it) == 0 && it != NULL) {
      const struct sl_spool_record *r = sl_spool_item_record(it);
      assert_true(r->not_before_ms >= last_due);
      last_due = r->not_before_ms;
      check_rec(r);
      got++;
      sl_spool_ack(s, it, NULL, NULL);
    }
    assert_true(fake_now < t0 + 400000);
  }
  sl_spool_close(s);
}

/* A damaged checkpoint is ignored with an error: records come back (at-least-once). */
static void test_corrupt_checkpoint(void **state) {
  struct sl_spool_opts o = base_opts();
  struct done d = {0};
  struct sl_spool_stats st;
  char path[600];
  unsigned char c;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 20, &d);
  settle(s);
  struct sl_spool_item *it;
  for (int i = 0; i < 10; i++) {
    assert_int_equal(sl_spool_take(s, &it), 0);
    sl_spool_ack(s, it, NULL, NULL);
  }
  settle(s);
  sl_spool_close(s);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 10);
  sl_spool_close(s);
  snprintf(path, sizeof(path), "%s/acks", dir);
  int fd = open(path, O_RDWR);
  assert_int_equal(pread(fd, &c, 1, 30), 1);
  c ^= 0x10;
  assert_int_equal(pwrite(fd, &c, 1, 30), 1);
  close(fd);
  s = open_spool(&o);
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready, 20);
  assert_true(st.corrupt_units >= 1);
  sl_spool_close(s);
}

/* ---- stats: kept up to date, read without I/O ------------------------------------------ */

/* Read system calls this thread has made (/proc/thread-self/io), or -1 where the kernel does
 * not count them. Each call makes one read itself. */
static long long thread_reads(void) {
  char buf[1024];
  const char *p;
  int fd = open("/proc/thread-self/io", O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

  if (fd >= 0)
    close(fd);
  if (n <= 0)
    return -1;
  buf[n] = 0;
  p = strstr(buf, "syscr: ");
  return p != NULL ? strtoll(p + 7, NULL, 10) : -1;
}

/* sl_spool_stats into <st>, checking that it reads nothing: the reads of this thread go up
 * by the one read of thread_reads() only. */
static void stats_no_read(struct sl_spool *s, struct sl_spool_stats *st) {
  long long a = thread_reads(), b = thread_reads();

  sl_spool_stats(s, st);
  long long c = thread_reads();
  if (a >= 0)
    assert_int_equal(c - b, b - a);
}

/* Appends record <i>, accepted at <enq> and due at <due> (0: ready). */
static void append_at(struct sl_spool *s, unsigned i, uint64_t enq, uint64_t due, struct done *d) {
  struct sl_spool_record r = make_rec(i);

  r.enqueue_ms = enq;
  r.not_before_ms = due;
  assert_int_equal(sl_spool_append(s, &r, done_cb, d), 0);
}

static struct sl_spool_item *take_index(struct sl_spool *s, unsigned want) {
  struct sl_spool_item *it = NULL;

  assert_int_equal(sl_spool_take(s, &it), 0);
  assert_non_null(it);
  assert_int_equal(rec_index(sl_spool_item_record(it)), want);
  return it;
}

/* Stats without reading: the ready and delayed counts and the oldest ready record. */
static void expect_ready(struct sl_spool *s, uint64_t ready, uint64_t delayed, uint64_t oldest) {
  struct sl_spool_stats st;

  stats_no_read(s, &st);
  assert_int_equal(st.ready, ready);
  assert_int_equal(st.delayed, delayed);
  assert_int_equal(st.oldest_ready_ms, oldest);
}

/*
 * Regression: a stats call read and decompressed the next unit of the ready log on the
 * owner's thread whenever the cursor had used up its unit, to learn the oldest ready record.
 * Now the take that uses a unit up reads the next one, and when the cursor has read the log
 * to its end, the writer's next commit tells it the time of its first record: the figure is
 * exact, across segment rolls and a reopen, and stats never read.
 */
static void test_stats_oldest_ready_without_reading(void **state) {
  struct sl_spool_opts o = layout_opts();
  struct sl_spool_item *it[6];
  struct done d = {0};
  uint64_t t0 = fake_now;
  (void)state;

  o.segment_bytes = 128; /* any group fills one: each group rolls */
  struct sl_spool *s = open_spool(&o);
  expect_ready(s, 0, 0, 0);
  /* Two units of three records, one group each, accepted at t0 + 0..2 and t0 + 10..12. */
  for (unsigned u = 0; u < 2; u++) {
    for (unsigned i = 0; i < 3; i++)
      append_at(s, 3 * u + i, t0 + 10 * u + i, 0, &d);
    settle(s);
  }
  assert_int_equal(d.fails, 0);
  assert_true(count_files("ready-") >= 2);
  expect_ready(s, 6, 0, t0);
  for (unsigned i = 0; i < 3; i++)
    it[i] = take_index(s, i);
  /* The first unit is used up: the next ready record is the first of the second. */
  expect_ready(s, 3, 0, t0 + 10);
  it[3] = take_index(s, 3);
  expect_ready(s, 2, 0, t0 + 11);
  /* Given back, a record is the oldest ready one again. */
  sl_spool_release(s, it[0]);
  expect_ready(s, 3, 0, t0);
  it[0] = take_index(s, 0);
  it[4] = take_index(s, 4);
  it[5] = take_index(s, 5);
  for (unsigned i = 0; i < 6; i++)
    sl_spool_ack(s, it[i], NULL, NULL);
  expect_ready(s, 0, 0, 0);
  /* Read to its end, the cursor waits: the groups written after that roll the segment. */
  append_at(s, 6, t0 + 20, 0, &d);
  append_at(s, 7, t0 + 21, 0, &d);
  settle(s);
  append_at(s, 8, t0 + 30, 0, &d);
  settle(s);
  expect_ready(s, 3, 0, t0 + 20);
  sl_spool_ack(s, take_index(s, 6), NULL, NULL);
  sl_spool_ack(s, take_index(s, 7), NULL, NULL);
  expect_ready(s, 1, 0, t0 + 30);
  settle(s);
  sl_spool_close(s);
  /* Reopened, with its first segments delivered: the open reads the first unit left. */
  s = open_spool(&o);
  expect_ready(s, 1, 0, t0 + 30);
  sl_spool_ack(s, take_index(s, 8), NULL, NULL);
  expect_ready(s, 0, 0, 0);
  sl_spool_close(s);
}

/* Delayed records move to ready as their time comes, counted and dated without reading,
 * and are taken in due-time order before the ready log. */
static void test_stats_due_as_time_passes(void **state) {
  struct sl_spool_opts o = base_opts();
  struct sl_spool_item *it;
  struct done d = {0};
  uint64_t t0 = fake_now;
  (void)state;

  struct sl_spool *s = open_spool(&o);
  append_at(s, 0, t0 - 50, t0 + 2000, &d);
  append_at(s, 1, t0 - 40, t0 + 3000, &d);
  append_at(s, 2, t0 - 60, t0 + 5000, &d);
  append_at(s, 3, t0, 0, &d);
  append_at(s, 4, t0 + 1, 0, &d);
  settle(s);
  assert_int_equal(d.fails, 0);
  expect_ready(s, 2, 3, t0);
  assert_true(sl_spool_next_due_ms(s) <= t0 + 2000); /* its bucket's start, not yet indexed */
  advance(2000);
  settle(s); /* the writer indexes the buckets coming due */
  expect_ready(s, 3, 2, t0 - 50);
  advance(1000);
  settle(s);
  expect_ready(s, 4, 1, t0 - 50);
  it = take_index(s, 0);
  expect_ready(s, 3, 1, t0 - 40);
  /* Given back, a delayed record counts as ready, not as delayed. */
  sl_spool_release(s, it);
  expect_ready(s, 4, 1, t0 - 50);
  sl_spool_ack(s, take_index(s, 0), NULL, NULL);
  sl_spool_ack(s, take_index(s, 1), NULL, NULL);
  expect_ready(s, 2, 1, t0);
  assert_true(sl_spool_next_due_ms(s) > fake_now && sl_spool_next_due_ms(s) <= t0 + 5000);
  advance(2000);
  settle(s);
  expect_ready(s, 3, 0, t0 - 60);
  assert_int_equal(sl_spool_next_due_ms(s), t0 + 5000);
  for (unsigned i = 2; i < 5; i++)
    sl_spool_ack(s, take_index(s, i), NULL, NULL);
  expect_ready(s, 0, 0, 0);
  assert_int_equal(sl_spool_next_due_ms(s), UINT64_MAX);
  sl_spool_close(s);
}

/* Checks the stats' backlog_bytes against the segments: the sum of their integer shares, and
 * within a byte per segment of the sum of real shares stats used to compute at each call. */
static void check_backlog(struct sl_spool *s) {
  const struct sl__segvec *vecs[3] = {&s->ready, &s->delay, &s->dead};
  struct sl_spool_stats st;
  uint64_t sum = 0, n = 0;
  double real = 0;

  settle(s);
  sl_spool_stats(s, &st);
  pthread_mutex_lock(&s->mu);
  for (int v = 0; v < 3; v++)
    for (size_t i = 0; i < vecs[v]->n; i++, n++) {
      const struct sl__seg *seg = vecs[v]->v[i];
      uint64_t data = seg->committed > SL__SEG_HDR ? seg->committed - SL__SEG_HDR : 0;

      if (seg->nrec > seg->nacked) {
        sum += data * (seg->nrec - seg->nacked) / seg->nrec;
        real += (double)data * (double)(seg->nrec - seg->nacked) / (double)seg->nrec;
      }
    }
  pthread_mutex_unlock(&s->mu);
  assert_int_equal(st.backlog_bytes, sum);
  assert_true((double)sum <= real + 1e-6 && real < (double)(sum + n) + 1e-6);
}

/* backlog_bytes, kept up to date as records are appended and settled, never drifts from the
 * segments it sums: appends, acks, retries, dead letters, a failed write, a redrive and a
 * reopen. */
static void test_stats_backlog_bytes_kept(void **state) {
  struct sl_spool_opts o = layout_opts(); /* no spare: the failures below hit the group */
  struct sl_spool_item *it[60];
  struct done d = {0};
  (void)state;

  o.segment_bytes = 16384;
  o.block_bytes = 1024;
  struct sl_spool *s = open_spool(&o);
  append_n(s, 0, 200, &d);
  check_backlog(s);
  for (unsigned i = 0; i < 60; i++)
    it[i] = take_index(s, i);
  for (unsigned i = 0; i < 30; i++)
    sl_spool_ack(s, it[i], NULL, NULL);
  check_backlog(s);
  for (unsigned i = 30; i < 35; i++)
    assert_int_equal(sl_spool_retry(s, it[i], fake_now + 5000, NULL, NULL), 0);
  for (unsigned i = 35; i < 40; i++)
    assert_int_equal(sl_spool_retry(s, it[i], 0, NULL, NULL), 0);
  for (unsigned i = 40; i < 45; i++)
    assert_int_equal(sl_spool_dead(s, it[i], "gone", NULL, NULL), 0);
  for (unsigned i = 45; i < 50; i++)
    sl_spool_release(s, it[i]);
  check_backlog(s);
  /* A failed fdatasync whose cut fails too: the group's records are settled in place. */
  set_failures(&fail_sync_n, 1);
  __atomic_store_n(&fail_sync_err, EIO, __ATOMIC_RELEASE);
  set_failures(&fail_trunc_n, 1);
  append_n(s, 500, 10, &d);
  check_backlog(s);
  assert_true(d.fails > 0); /* the first group (the others may go to a new segment) */
  set_failures(&fail_sync_n, 0);
  set_failures(&fail_trunc_n, 0);
  assert_int_equal(sl_spool_dead_redrive(s, NULL, NULL, NULL), 0);
  check_backlog(s);
  sl_spool_close(s); /* the items still out are given back */
  s = open_spool(&o);
  check_backlog(s);
  advance(6000);
  settle(s); /* the writer indexes the retries' bucket, now due */
  struct sl_spool_item *one;
  while (sl_spool_take(s, &one) == 0 && one != NULL)
    sl_spool_ack(s, one, NULL, NULL);
  check_backlog(s);
  struct sl_spool_stats st;
  sl_spool_stats(s, &st);
  assert_int_equal(st.ready + st.delayed + st.inflight, 0);
  assert_int_equal(st.backlog_bytes, 0);
  sl_spool_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fifo_order_and_policies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flipped_bits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_units_out_of_place, setup, teardown),
      cmocka_unit_test_setup_teardown(test_out_of_order_acks_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gc_deletes_segments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_full, setup, teardown),
      cmocka_unit_test_setup_teardown(test_enospc_eio, setup, teardown),
      cmocka_unit_test_setup_teardown(test_delayed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scan_tracks_commits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scan_beside_owner, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dictionary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_release_and_reject, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_segment_and_footers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_checkpoint, setup, teardown),
      cmocka_unit_test_setup_teardown(test_preallocated_segments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_byte_counts_match_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_late_spare_is_not_used, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_buckets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stats_oldest_ready_without_reading, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stats_due_as_time_passes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stats_backlog_bytes_kept, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
