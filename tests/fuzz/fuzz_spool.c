/*
 * libFuzzer harness for the spool's recovery and reading (src/spool/): the
 * input becomes one segment file of a fresh spool directory, which is then
 * opened (recovery: footer, torn tails, corrupt units, resync), drained with
 * sl_spool_take, settled, listed (dead letters), scanned and closed.
 *
 * Input: one control byte, then the bytes of the segment file.
 *   bits 0-1: the store the file is named for: 0 the one its header names
 *             (ready if none), 1 ready, 2 delay, 3 dead
 *   bit 2:    re-sign: store the store in the header and recompute the CRCs
 *             of the segment header and of every unit found walking the file,
 *             so that mutations reach the decoders behind the CRC checks
 *   bit 3:    give every record taken back (release) instead of acking it
 *   bit 4:    the wall clock at the seeds' time (delayed records not yet due)
 *             instead of far in the future (everything due)
 * The file name takes its sequence number (and a delay bucket's start and
 * width) from the segment header, as the writer names files, so that a file
 * made by the spool is found whole. Seeds are such files (gen_seeds.c).
 *
 * Checks beyond the sanitizers: open fails only with a negative code and every
 * record view points at bytes that can be read. For a file that was not
 * re-signed, whose CRCs therefore came from the spool itself (so the input is
 * a real segment with damage), also: once the takes run dry nothing is ready
 * or in flight, nor delayed without a due time to come (sl_spool_next_due_ms);
 * a record appended then is the next one taken; and after everything taken was
 * acked and the spool closed cleanly, a second open hands none of it out
 * again. A re-signed file can vouch for anything (a footer counting records
 * its units do not hold), and the spool trusts what its CRCs vouch for; there
 * only the sanitizers judge.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sluice/crc32c.h"
#include "sluice/spool.h"
#include "spool/spool_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MODE_STORE 3u
#define MODE_RESIGN 4u
#define MODE_RELEASE 8u
#define MODE_SEED_CLOCK 16u
/* The generator's clock (gen_seeds.c) and one where all its delays have passed. */
#define SEED_NOW_MS 1700000000000ull
#define FAR_NOW_MS 4102444800000ull /* 2100-01-01 */
/* Bounds the work of one input: a small unit may decompress to many records. */
#define MAX_TAKES 4096
#define MAX_ORD 65536

static void fail(const char *what, uint64_t n) {
  fprintf(stderr, "fuzz_spool: %s (%" PRIu64 ")\n", what, n);
  abort();
}

static uint64_t clock_fn(void *arg) { return *(const uint64_t *)arg; }

static void touch_record(const struct sl_spool_record *r) {
  sl_fuzz_touch(r->method, r->method_len);
  sl_fuzz_touch(r->target, r->target_len);
  sl_fuzz_touch(r->headers, r->headers_len);
  sl_fuzz_touch(r->body, r->body_len);
  sl_fuzz_touch(r->error, r->error_len);
}

static int count_record(void *arg, const struct sl_spool_record *r) {
  touch_record(r);
  (*(uint64_t *)arg)++;
  return 0;
}

/*
 * Keeps the ordinals a re-signed unit claims (its first ordinal; a footer's record
 * count too) under MAX_ORD. A file of a few KB made by the writer holds far fewer
 * records; a re-signed header claiming four billion makes recovery mark that many
 * records lost, one bit at a time (minutes and 512 MiB of bitmap): the cost of
 * trusting what a valid CRC vouches for, not of damage, which a CRC catches.
 */
static void bound_ordinals(uint8_t *unit, size_t avail) {
  sl_le_put32(unit + 12, sl_le_get32(unit + 12) % MAX_ORD);
  if (unit[3] == SL__UNIT_FOOTER && avail >= SL__UNIT_HDR + 4)
    sl_le_put32(unit + SL__UNIT_HDR, sl_le_get32(unit + SL__UNIT_HDR) % MAX_ORD);
}

/* Recomputes the header CRC of the segment and the CRCs of each unit found. */
static void resign(uint8_t *b, size_t len, int store) {
  size_t off = SL__SEG_HDR;

  if (len < SL__SEG_HDR)
    return;
  b[10] = (uint8_t)store;
  sl_le_put32(b + 60, sl_crc32c(0, b, 60));
  while (off + SL__UNIT_HDR <= len) {
    uint32_t plen;

    if (memcmp(b + off, "SLU", 3) != 0) {
      off++; /* bytes that are no unit: look for the next one */
      continue;
    }
    plen = sl_le_get32(b + off + 4);
    bound_ordinals(b + off, len - off);
    if (plen <= len - off - SL__UNIT_HDR)
      sl_le_put32(b + off + 36, sl_crc32c(0, b + off + SL__UNIT_HDR, plen));
    sl_le_put32(b + off + 44, sl_crc32c(0, b + off, 44));
    if (plen > len - off - SL__UNIT_HDR)
      break;
    off += SL__UNIT_HDR + plen;
  }
}

/* The file name the writer would give the segment whose header is <b>. */
static void seg_name(const uint8_t *b, size_t len, int store, char *out, size_t outlen) {
  uint64_t seq = 1, start = 0, width = 1;

  if (len >= SL__SEG_HDR) {
    seq = sl_le_get64(b + 16);
    start = sl_le_get64(b + 24);
    width = sl_le_get64(b + 32) ? sl_le_get64(b + 32) : 1;
  }
  if (store == SL__STORE_DELAY)
    snprintf(out, outlen, "delay-%016" PRIx64 "-%" PRIu64 "-%" PRIu64 ".seg", seq, start, width);
  else
    snprintf(out, outlen, "%s-%016" PRIx64 ".seg", store == SL__STORE_DEAD ? "dead" : "ready", seq);
}

static int open_spool(const char *dir, uint64_t *now, struct sl_spool **out) {
  struct sl_spool_opts o;

  sl_spool_opts_init(&o);
  o.name = "fuzz";
  o.fsync = SL_SPOOL_FSYNC_OFF;
  o.preallocate = false;
  o.io = &sl_fuzz_io;
  o.dict_train_records = 0;
  o.ack_interval_us = 0;
  o.now_ms = clock_fn;
  o.clock_arg = now;
  return sl_spool_open(dir, &o, out);
}

/* Takes up to MAX_TAKES records into <items>; returns how many. <*dry> says
 * whether the takes ended because nothing more was ready (not an error or the bound). */
static size_t take_all(struct sl_spool *s, struct sl_spool_item **items, bool *dry) {
  size_t n = 0;

  *dry = false;
  while (n < MAX_TAKES) {
    struct sl_spool_item *it = NULL;

    if (sl_spool_take(s, &it) != 0)
      break;
    if (it == NULL) {
      *dry = true;
      break;
    }
    touch_record(sl_spool_item_record(it));
    items[n++] = it;
  }
  return n;
}

static void append_done(void *arg, int status) { *(int *)arg = status; }

/* Appends a record once the takes ran dry and takes it: the writer goes on in the
 * recovered segment, and the next take must hand that record out (the reader's place
 * in a damaged segment must not pass the ordinals the writer gives next). Returns 1 with
 * the item in <out>, or 0 if the append itself failed. */
static size_t append_take(struct sl_spool *s, uint64_t now, struct sl_spool_item **out) {
  static const uint8_t id[16] = "appended-by-fuzz";
  struct sl_spool_record rec;
  struct sl_spool_item *it = NULL;
  int status = 1;

  memset(&rec, 0, sizeof(rec));
  memcpy(rec.id, id, sizeof(id));
  rec.method = "POST";
  rec.method_len = 4;
  rec.target = "/fuzz";
  rec.target_len = 5;
  rec.enqueue_ms = now;
  if (sl_spool_append(s, &rec, append_done, &status) != 0)
    return 0;
  sl_spool_wait_idle(s);
  sl_spool_poll_completions(s);
  if (status != 0)
    return 0;
  if (sl_spool_take(s, &it) != 0 || it == NULL ||
      memcmp(sl_spool_item_record(it)->id, id, sizeof(id)) != 0)
    fail("a record appended after the takes ran dry is not the next one handed out", it != NULL);
  *out = it;
  return 1;
}

/* Opens the spool again after a clean close: nothing acked may come back. */
static void reopen_check(const char *dir, uint64_t *now) {
  struct sl_spool *s = NULL;
  struct sl_spool_item *it = NULL;

  if (open_spool(dir, now, &s) != 0)
    fail("a spool closed cleanly does not open again", 0);
  sl_spool_wait_idle(s);
  if (sl_spool_take(s, &it) == 0 && it != NULL)
    fail("an acked record is handed out again after a clean close",
         sl_spool_item_record(it)->attempts);
  sl_spool_close(s);
}

static void run(const char *dir, unsigned mode, uint64_t *now) {
  static struct sl_spool_item *items[MAX_TAKES];
  bool strict = !(mode & MODE_RESIGN);
  struct sl_spool *s = NULL;
  struct sl_spool_stats st;
  uint64_t scanned = 0, dead = 0;
  size_t n;
  bool dry;
  int r;

  r = open_spool(dir, now, &s);
  if (r != 0) {
    if (r > 0)
      fail("sl_spool_open returned a positive code", (uint64_t)r);
    return;
  }
  sl_spool_wait_idle(s); /* the writer indexes the delay buckets that are due */
  sl_spool_stats(s, &st);
  sl_spool_scan(s, count_record, &scanned);
  sl_spool_dead_list(s, count_record, &dead);
  n = take_all(s, items, &dry);
  sl_spool_stats(s, &st);
  if (strict && dry && (st.ready != 0 || st.inflight != n))
    fail("the takes ran dry with records still ready, or in flight uncounted", st.ready);
  if (strict && dry && st.delayed != 0 && sl_spool_next_due_ms(s) == UINT64_MAX)
    fail("delayed records that nothing will make due", st.delayed);
  if (strict && dry)
    n += append_take(s, *now, items + n);
  for (size_t i = 0; i < n; i++) {
    if (mode & MODE_RELEASE)
      sl_spool_release(s, items[i]);
    else
      sl_spool_ack(s, items[i], NULL, NULL);
  }
  sl_spool_wait_idle(s);
  sl_spool_stats(s, &st);
  if (strict && !(mode & MODE_RELEASE) && st.inflight != 0)
    fail("records in flight after every one was acked", st.inflight);
  sl_spool_close(s);
  if (strict && !(mode & MODE_RELEASE) && dry)
    reopen_check(dir, now);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  sl_fuzz_quiet_log();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int stores[4] = {0, SL__STORE_READY, SL__STORE_DELAY, SL__STORE_DEAD};
  char dir[64], name[128];
  uint64_t now;
  uint8_t *seg;
  unsigned mode;
  int store;

  if (size < 1)
    return 0;
  mode = data[0];
  seg = malloc(size); /* never 0 bytes: the control byte is among them */
  if (seg == NULL)
    abort();
  memcpy(seg, data + 1, size - 1);
  store = stores[mode & MODE_STORE];
  if (store == 0)
    store = size - 1 >= SL__SEG_HDR && seg[10] >= SL__STORE_READY && seg[10] <= SL__STORE_DEAD
                ? seg[10]
                : SL__STORE_READY;
  if (mode & MODE_RESIGN)
    resign(seg, size - 1, store);
  seg_name(seg, size - 1, store, name, sizeof(name));
  now = (mode & MODE_SEED_CLOCK) ? SEED_NOW_MS : FAR_NOW_MS;
  sl_fuzz_tmpdir(dir, sizeof(dir));
  sl_fuzz_write_file(dir, name, seg, size - 1);
  free(seg);
  run(dir, mode, &now);
  sl_fuzz_rm_rf(dir);
  return 0;
}
