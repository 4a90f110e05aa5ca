/*
 * Crash-state tests (issue 17, part 3): randomized workloads over the spool
 * and the ledger journal run through crashfs; each run's log is then cut at
 * sync points and at random points between, and every cut is materialized
 * into several states a power cut may leave (the worst one: nothing unsynced
 * survives; random ones between; now and then the process-crash one). Each
 * state is reopened by the real recovery code and checked:
 *   spool: recovery succeeds and reports nothing lost or corrupt; every
 *     record whose append (retry, dead-letter move, redrive) completed is
 *     there, byte for byte, unless a settlement of it was under way; a record
 *     whose ack or purge completed never comes back; every record found is
 *     one the workload gave the spool before the cut, in a version not yet
 *     superseded (nothing is delivered that was never accepted);
 *   journal: it opens; every status and key found is one that was put; every
 *     status and key whose write completed (under the fsync policy: written
 *     and fdatasynced, so its answer may have left) is there, and so is every
 *     one covered by a finished compaction (see README.md).
 *
 * Environment: CRASH_STATES (states to run, default below), CRASH_SEED (first
 * seed; run r uses seed + r), CRASH_KEEP=1 keeps the failing state's
 * directory, CRASH_PROGRESS=1 prints a line per run; the states are built under
 * $TMPDIR, by default /dev/shm if it is writable (a tmpfs: three times faster), else /tmp. A
 * failure prints the seed, the run, the cut and the state. The workload's threads (the spool's
 * writer, syncer and preparer) make the log's interleaving vary from one run to the next; the seed
 * fixes the workload and every choice made on the log, and the failing state is kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "crashfs.h"
#include "sluice/clock.h"
#include "sluice/endian.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"
#include "sluice/log.h"
#include "sluice/recover.h"
#include "sluice/spool.h"

#define DEFAULT_STATES 20000
#define STATES_PER_RUN 120
#define SPOOL_RUNS 4 /* spool runs, then a journal run and an accept run */

/* Marks: the test's events in the crashfs log. */
enum {
  M_ISSUE = 1, /* a = record, b = version: handed to the spool */
  M_LIVE,      /* a, b: its append/retry/dead/redrive completed */
  M_SETTLE,    /* a: an ack or purge was issued */
  M_GONE,      /* a: its ack or purge completed */
  J_ISSUE,     /* a = entry, b = version: put into the journal */
  J_KEY,       /* a = key: put */
  J_ANSWERED,  /* every entry and key issued so far must survive */
  A_ANSWERED,  /* a = request: its spill completed, its 202 may have left */
  A_ACKED,     /* a = request: its ack (after its durable "delivered") completed */
};

/* The kinds of run, in turn: spool runs, then one of each of the others. */
enum run_kind { RUN_SPOOL, RUN_JOURNAL, RUN_ACCEPT };

static uint64_t base_seed = 17, states_target = DEFAULT_STATES, states_run, runs;
static bool keep_failed, journal_strict, progress;
static char root[256], img[300];
static uint64_t rng;

static uint64_t rnd(void) {
  uint64_t x = rng += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

/* ---- spool oracle ---------------------------------------------------------------------- */

#define MAXV 24

struct ver {
  struct sl_spool_record rec;
  char *blob;
};

struct rid {
  struct ver v[MAXV];
  int nver;
  int where; /* workload: 0 ready/delayed, 1 dead, 2 settled */
  /* replay */
  int issued, live;
  bool settling, gone;
};

static struct rid *ids;
static size_t nids, capids;
static uint64_t run_seed;

static void ver_set(struct ver *v, const struct sl_spool_record *r) {
  size_t n = r->method_len + r->target_len + r->headers_len + r->body_len + r->error_len;
  char *p = malloc(n ? n : 1);

  assert_non_null(p);
  v->rec = *r;
  v->blob = p;
#define COPY(f)                                                                                    \
  if (r->f##_len > 0)                                                                              \
    memcpy(p, r->f, r->f##_len);                                                                   \
  v->rec.f = p;                                                                                    \
  p += r->f##_len
  COPY(method);
  COPY(target);
  COPY(headers);
  COPY(body);
  COPY(error);
#undef COPY
}

/* Whether the <n> bytes at <a> and <b> are the same (either may be NULL when <n> is 0). */
static bool same(const void *a, const void *b, size_t n) { return n == 0 || memcmp(a, b, n) == 0; }

static bool rec_equal(const struct sl_spool_record *a, const struct sl_spool_record *b) {
  return memcmp(a->id, b->id, 16) == 0 && a->enqueue_ms == b->enqueue_ms &&
         a->not_before_ms == b->not_before_ms && a->attempts == b->attempts &&
         a->method_len == b->method_len && same(a->method, b->method, a->method_len) &&
         a->target_len == b->target_len && same(a->target, b->target, a->target_len) &&
         a->headers_len == b->headers_len && same(a->headers, b->headers, a->headers_len) &&
         a->body_len == b->body_len && same(a->body, b->body, a->body_len) &&
         a->error_len == b->error_len && same(a->error, b->error, a->error_len);
}

/* The record index in <id>, or -1 if it is not one of this run's. */
static long idx_of(const uint8_t *id) {
  uint32_t i = sl_le_get32(id);
  uint64_t s;

  memcpy(&s, id + 4, 8);
  if (s != run_seed || i >= nids)
    return -1;
  return (long)i;
}

static void ids_free(void) {
  for (size_t i = 0; i < nids; i++)
    for (int k = 0; k < ids[i].nver; k++)
      free(ids[i].v[k].blob);
  free(ids);
  ids = NULL;
  nids = capids = 0;
}

/* ---- spool workload -------------------------------------------------------------------- */

static uint64_t fake_now;

static uint64_t clock_fn(void *arg) {
  (void)arg;
  return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}

struct cbarg {
  int kind; /* M_LIVE or M_GONE */
  uint32_t idx, ver;
  uint32_t *many; /* redrive all: these records, each at its last version */
  size_t nmany;
};

static int cb_failures;

static void on_done(void *arg, int status) {
  struct cbarg *a = arg;

  if (status != 0) {
    fprintf(stderr,
            "crash: seed %" PRIu64 ": an operation on record %u failed in the workload: %s\n",
            run_seed, a->idx, sl_strerror(status));
    cb_failures++;
  } else if (a->many != NULL) {
    for (size_t i = 0; i < a->nmany; i++)
      crashfs_mark(M_LIVE, a->many[i], (uint64_t)(ids[a->many[i]].nver - 1));
  } else {
    crashfs_mark((uint32_t)a->kind, a->idx, a->ver);
  }
  free(a->many);
  free(a);
}

static struct cbarg *cb_new(int kind, uint32_t idx, uint32_t ver) {
  struct cbarg *a = calloc(1, sizeof(*a));

  assert_non_null(a);
  a->kind = kind;
  a->idx = idx;
  a->ver = ver;
  return a;
}

static size_t body_size(void) {
  uint64_t r = below(100);

  if (r < 60)
    return (size_t)below(300);
  if (r < 90)
    return (size_t)(300 + below(5000));
  return (size_t)(5000 + below(70000));
}

static void fill(char *p, size_t n) {
  /* Half text that compresses, half noise that does not. */
  static const char text[] = "{\"order\":12345,\"item\":\"widget\",\"qty\":3} ";
  for (size_t i = 0; i < n; i++)
    p[i] = (i / 64) % 2 ? (char)rnd() : text[i % (sizeof(text) - 1)];
}

static void append_one(struct sl_spool *s) {
  struct sl_spool_record r;
  struct rid *d;
  char target[32], headers[256];
  char *body;
  size_t blen = body_size();
  uint32_t idx = (uint32_t)nids;

  if (nids == capids) {
    capids = capids ? capids * 2 : 256;
    ids = realloc(ids, capids * sizeof(*ids));
    assert_non_null(ids);
  }
  d = &ids[nids++];
  memset(d, 0, sizeof(*d));
  memset(&r, 0, sizeof(r));
  sl_le_put32(r.id, idx);
  memcpy(r.id + 4, &run_seed, 8);
  r.enqueue_ms = clock_fn(NULL) - below(1000);
  if (below(5) == 0)
    r.not_before_ms = clock_fn(NULL) + 200 + below(5000);
  r.method = below(2) ? "POST" : "PUT";
  r.method_len = strlen(r.method);
  snprintf(target, sizeof(target), "/t/%u", idx);
  r.target = target;
  r.target_len = strlen(target);
  r.headers_len = (size_t)below(sizeof(headers));
  fill(headers, r.headers_len);
  r.headers = headers;
  body = malloc(blen ? blen : 1);
  assert_non_null(body);
  fill(body, blen);
  r.body = body;
  r.body_len = blen;
  ver_set(&d->v[0], &r);
  d->nver = 1;
  free(body);
  crashfs_mark(M_ISSUE, idx, 0);
  assert_int_equal(sl_spool_append(s, &d->v[0].rec, on_done, cb_new(M_LIVE, idx, 0)), 0);
}

/* Adds the next version of record <idx>, made from <from> as the spool makes it. */
static uint32_t new_version(uint32_t idx, const struct sl_spool_record *from) {
  struct rid *d = &ids[idx];

  ver_set(&d->v[d->nver], from);
  crashfs_mark(M_ISSUE, idx, (uint64_t)d->nver);
  return (uint32_t)d->nver++;
}

#define MAX_INFLIGHT 32
static struct sl_spool_item *inflight[MAX_INFLIGHT];
static size_t ninflight;

static uint32_t item_idx(struct sl_spool_item *it) {
  const struct sl_spool_record *r = sl_spool_item_record(it);
  long i = idx_of(r->id);
  bool known = false;

  if (i < 0)
    fail_msg("the spool handed out a record it was never given");
  for (int k = 0; k < ids[i].nver; k++)
    known |= rec_equal(r, &ids[i].v[k].rec);
  if (!known)
    fail_msg("the spool handed out record %ld altered", i);
  return (uint32_t)i;
}

static void settle_one(struct sl_spool *s, size_t at) {
  struct sl_spool_item *it = inflight[at];
  uint32_t idx = item_idx(it);
  struct sl_spool_record r = *sl_spool_item_record(it);
  uint64_t p = below(100);

  inflight[at] = inflight[--ninflight];
  if (ids[idx].nver >= MAXV || p < 55) {
    crashfs_mark(M_SETTLE, idx, 0);
    ids[idx].where = 2;
    assert_int_equal(sl_spool_ack(s, it, on_done, cb_new(M_GONE, idx, 0)), 0);
  } else if (p < 75) {
    uint64_t due = clock_fn(NULL) + (below(3) ? 100 + below(4000) : 0);
    uint32_t v;
    r.attempts++;
    r.not_before_ms = due;
    r.error_len = 0;
    v = new_version(idx, &r);
    assert_int_equal(sl_spool_retry(s, it, due, on_done, cb_new(M_LIVE, idx, v)), 0);
  } else if (p < 88) {
    static const char err[] = "502 from the backend after 3 attempts";
    uint32_t v;
    r.not_before_ms = 0;
    r.error = err;
    r.error_len = strlen(err);
    v = new_version(idx, &r);
    ids[idx].where = 1;
    assert_int_equal(sl_spool_dead(s, it, err, on_done, cb_new(M_LIVE, idx, v)), 0);
  } else {
    sl_spool_release(s, it);
  }
}

static struct sl_spool_record redriven(uint32_t idx) {
  struct sl_spool_record r = ids[idx].v[ids[idx].nver - 1].rec;

  r.attempts = 0;
  r.not_before_ms = 0;
  r.error_len = 0;
  return r;
}

static void dead_step(struct sl_spool *s) {
  uint32_t *dead = NULL;
  size_t n = 0;
  uint64_t p = below(3);

  for (size_t i = 0; i < nids; i++)
    if (ids[i].where == 1 && ids[i].nver < MAXV) {
      dead = realloc(dead, (n + 1) * sizeof(*dead));
      assert_non_null(dead);
      dead[n++] = (uint32_t)i;
    }
  if (n == 0) {
    free(dead);
    return;
  }
  if (p == 0) { /* redrive all */
    struct cbarg *a = cb_new(M_LIVE, 0, 0);
    for (size_t i = 0; i < n; i++) {
      struct sl_spool_record r = redriven(dead[i]);
      new_version(dead[i], &r);
      ids[dead[i]].where = 0;
    }
    a->many = dead;
    a->nmany = n;
    assert_int_equal(sl_spool_dead_redrive(s, NULL, on_done, a), 0);
    return;
  }
  uint32_t idx = dead[below(n)];
  free(dead);
  if (p == 1) {
    struct sl_spool_record r = redriven(idx);
    uint32_t v = new_version(idx, &r);
    ids[idx].where = 0;
    assert_int_equal(
        sl_spool_dead_redrive(s, ids[idx].v[0].rec.id, on_done, cb_new(M_LIVE, idx, v)), 0);
  } else {
    crashfs_mark(M_SETTLE, idx, 0);
    ids[idx].where = 2;
    assert_int_equal(sl_spool_dead_purge(s, ids[idx].v[0].rec.id, on_done, cb_new(M_GONE, idx, 0)),
                     0);
  }
}

struct spool_run {
  struct sl_spool_opts o;
  const char *what;
};

static void spool_workload(struct spool_run *run) {
  char path[400];
  struct sl_spool *s = NULL;
  unsigned steps = 60 + (unsigned)below(140);

  snprintf(path, sizeof(path), "%s/spool/up%" PRIu64, root, run_seed % 3);
  assert_int_equal(sl_spool_open(path, &run->o, &s), 0);
  for (unsigned step = 0; step < steps; step++) {
    uint64_t p = below(100);
    if (p < 40) {
      unsigned n = 1 + (unsigned)below(6);
      for (unsigned k = 0; k < n; k++)
        append_one(s);
      if (run->o.batch_appends)
        sl_spool_flush(s);
    } else if (p < 70) {
      unsigned n = (unsigned)below(5);
      for (unsigned k = 0; k < n && ninflight < MAX_INFLIGHT; k++) {
        struct sl_spool_item *it = NULL;
        assert_int_equal(sl_spool_take(s, &it), 0);
        if (it == NULL)
          break;
        item_idx(it);
        inflight[ninflight++] = it;
      }
      for (size_t k = ninflight; k-- > 0;)
        if (below(3) == 0)
          settle_one(s, k);
    } else if (p < 76) {
      sl_spool_wait_idle(s); /* every dead-letter move issued is in the dead store */
      sl_spool_poll_completions(s);
      dead_step(s);
      /* The writer runs a batch's appends and moves before its redrives and purges: a
       * dead-letter move issued after a "redrive all" but taken in the same batch would be
       * redriven too. Let it run alone, so the workload knows what it did. */
      sl_spool_wait_idle(s);
    } else if (p < 88) {
      __atomic_add_fetch(&fake_now, 100 + below(3000), __ATOMIC_RELAXED);
      sl_spool_wait_idle(s);
    } else {
      sl_spool_wait_idle(s);
    }
    sl_spool_poll_completions(s);
  }
  while (ninflight > 0)
    settle_one(s, ninflight - 1);
  sl_spool_wait_idle(s);
  sl_spool_poll_completions(s);
  sl_spool_close(s);
  assert_int_equal(cb_failures, 0);
}

/* ---- spool checks ---------------------------------------------------------------------- */

struct found {
  int *count;
  char *err;
  size_t errlen;
};

static int on_scan(void *arg, const struct sl_spool_record *rec) {
  struct found *f = arg;
  long i = idx_of(rec->id);
  struct rid *d;
  int lo;
  bool ok = false;

  if (i < 0) {
    snprintf(f->err, f->errlen, "a record that was never appended is in the spool");
    return 1;
  }
  d = &ids[i];
  if (d->gone) {
    snprintf(f->err, f->errlen, "record %ld came back after its ack or purge completed", i);
    return 1;
  }
  lo = d->live >= 0 ? d->live : 0;
  for (int k = lo; k <= d->issued; k++)
    ok |= rec_equal(rec, &d->v[k].rec);
  if (!ok) {
    bool older = false;
    for (int k = 0; k < lo; k++)
      older |= rec_equal(rec, &d->v[k].rec);
    snprintf(f->err, f->errlen, "record %ld is there %s (versions %d..%d allowed)", i,
             older ? "in a version superseded by a completed move" : "altered or never accepted",
             lo, d->issued);
    return 1;
  }
  f->count[i]++;
  return 0;
}

static void check_spool_state(const char *dir, char *err, size_t errlen) {
  char path[400];
  struct sl_spool_opts o;
  struct sl_spool_stats st;
  struct sl_spool *s = NULL;
  int *count = calloc(nids ? nids : 1, sizeof(*count));
  struct found f = {count, err, errlen};
  int rc;

  assert_non_null(count);
  err[0] = '\0';
  snprintf(path, sizeof(path), "%s/spool/up%" PRIu64, dir, run_seed % 3);
  sl_spool_opts_init(&o);
  o.io = crashfs_nosync_io();
  o.preallocate = false;
  o.dict_train_records = 0;
  o.now_ms = clock_fn;
  rc = sl_spool_open(path, &o, &s);
  if (rc != 0) {
    snprintf(err, errlen, "recovery failed: %s", sl_strerror(rc));
    free(count);
    return;
  }
  rc = sl_spool_scan(s, on_scan, &f);
  sl_spool_stats(s, &st);
  sl_spool_close(s);
  if (err[0] == '\0' && rc != 0)
    snprintf(err, errlen, "reading the recovered spool failed: %s", sl_strerror(rc));
  if (err[0] == '\0' && (st.lost_records != 0 || st.corrupt_units != 0))
    snprintf(err, errlen,
             "recovery reports %" PRIu64 " record(s) lost, %" PRIu64 " corrupt unit(s)",
             st.lost_records, st.corrupt_units);
  for (size_t i = 0; i < nids && err[0] == '\0'; i++) {
    const struct rid *d = &ids[i];
    if (d->live >= 0 && !d->settling && !d->gone && count[i] == 0)
      snprintf(err, errlen, "record %zu (version %d) is lost: its completion had fired", i,
               d->live);
  }
  free(count);
}

static void spool_mark(const struct crashfs_rec *r) {
  struct rid *d;

  if (r->a >= nids)
    fail_msg("a mark names record %" PRIu64 " of %zu", r->a, nids);
  d = &ids[r->a];
  switch (r->kind) {
  case M_ISSUE:
    if ((int)r->b > d->issued)
      d->issued = (int)r->b;
    break;
  case M_LIVE:
    if ((int)r->b > d->live)
      d->live = (int)r->b;
    break;
  case M_SETTLE:
    d->settling = true;
    break;
  case M_GONE:
    d->gone = true;
    break;
  }
}

/* ---- journal workload and checks ------------------------------------------------------- */

#define JIDS 48
#define JVERS 32
#define JKEYS 32
static uint64_t J_NOW; /* the wall clock at the run's start: compactions expire keys by it */

struct jent {
  struct sl_ledger_entry v[JVERS];
  int nver;
  int issued, answered; /* replay */
};

struct jkey {
  uint32_t entry; /* the id it names: entry <entry>'s */
  bool put;       /* workload */
  bool issued, answered;
};

static struct jent jents[JIDS];
static struct jkey jkeys[JKEYS];

static void jid(uint32_t n, uint8_t id[16]) {
  memset(id, 0x5a, 16);
  id[0] = (uint8_t)n;
  memcpy(id + 4, &run_seed, 8);
}

static void jkey_name(uint32_t k, char *out, size_t cap) {
  snprintf(out, cap, "key-%" PRIu64 "-%u", run_seed, k);
}

static void journal_answer_all(void) { crashfs_mark(J_ANSWERED, 0, 0); }

static void on_journaled(struct sl_ledger_journal_waiter *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
}

/* What an answer that depends on the frames appended so far does: waits
 * until they are durable (a cancellation's 200, a delivered record's ack). */
static void journal_wait_all(uv_loop_t *loop, struct sl_ledger *l) {
  struct sl_ledger_journal_waiter w;

  if (sl_ledger_journal_wait(l, &w, sl_ledger_journal_mark(l), on_journaled) == 0)
    uv_run(loop, UV_RUN_DEFAULT);
  assert_null(w.j); /* called, or nothing to wait for */
}

static void journal_workload(void) {
  J_NOW = sl_clock_wall_ms();
  char path[400];
  uv_loop_t loop;
  struct sl_ledger *l = sl_ledger_create(4096);
  struct sl_dedupe *d = sl_dedupe_create(1024, 3600000);
  struct sl_ledger_journal_opts o;
  struct sl_ledger_journal *j = NULL;
  unsigned steps = 40 + (unsigned)below(80);
  static const enum sl_ledger_state states[] = {SL_LEDGER_QUEUED, SL_LEDGER_DELIVERED,
                                                SL_LEDGER_DEAD, SL_LEDGER_CANCELLED};

  memset(jents, 0, sizeof(jents));
  memset(jkeys, 0, sizeof(jkeys));
  sl_ledger_journal_opts_init(&o);
  o.io = crashfs_io();
  snprintf(path, sizeof(path), "%s/db%" PRIu64 "/" SL_LEDGER_JOURNAL_FILE, root, run_seed % 2);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(sl_ledger_journal_open(&loop, path, l, d, J_NOW, &o, &j), 0);
  for (unsigned step = 0; step < steps; step++) {
    uint64_t p = below(100);
    if (p < 50) {
      uint32_t n = (uint32_t)below(JIDS);
      struct jent *e = &jents[n];
      struct sl_ledger_entry *v;
      if (e->nver == JVERS)
        continue;
      v = &e->v[e->nver];
      memset(v, 0, sizeof(*v));
      jid(n, v->id);
      v->state = states[below(4)];
      v->status = v->state == SL_LEDGER_DELIVERED ? 200 + (uint16_t)below(300) : 0;
      v->attempts = (uint32_t)below(5);
      v->enqueued_ms = J_NOW - 1000 + n;
      v->updated_ms = J_NOW + step;
      if (v->state == SL_LEDGER_DEAD)
        snprintf(v->error, sizeof(v->error), "dead after %u", v->attempts);
      crashfs_mark(J_ISSUE, n, (uint64_t)e->nver);
      e->nver++;
      assert_int_equal(sl_ledger_put(l, v), 0);
    } else if (p < 65) {
      uint32_t k = (uint32_t)below(JKEYS);
      char key[64];
      uint8_t id[16];
      if (jkeys[k].put)
        continue; /* a key is put once: a retry with it is answered as a repeat */
      jkeys[k].put = true;
      jkeys[k].entry = (uint32_t)below(JIDS);
      jkey_name(k, key, sizeof(key));
      jid(jkeys[k].entry, id);
      crashfs_mark(J_KEY, k, 0);
      assert_int_equal(sl_dedupe_put(d, 1, key, strlen(key), id, J_NOW), 0);
    } else if (p < 75) {
      sl_ledger_journal_flush(j);
      uv_run(&loop, UV_RUN_DEFAULT); /* written; synced only if somebody waits */
    } else if (p < 85) {
      journal_wait_all(&loop, l);
      if (journal_strict)
        journal_answer_all();
    } else {
      struct sl_ledger_journal_stats a, b;
      sl_ledger_journal_flush(j);
      uv_run(&loop, UV_RUN_DEFAULT);
      sl_ledger_journal_stats(j, &a);
      sl_ledger_journal_compact(j);
      uv_run(&loop, UV_RUN_DEFAULT);
      sl_ledger_journal_stats(j, &b);
      if (b.compactions > a.compactions)
        journal_answer_all(); /* the snapshot held everything written before it */
    }
  }
  sl_ledger_journal_close(j);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

static void journal_mark(const struct crashfs_rec *r) {
  if (r->kind == J_ISSUE) {
    jents[r->a].issued = (int)r->b + 1; /* versions 0..issued-1 */
  } else if (r->kind == J_KEY) {
    jkeys[r->a].issued = true;
  } else if (r->kind == J_ANSWERED) {
    for (int n = 0; n < JIDS; n++)
      jents[n].answered = jents[n].issued;
    for (int k = 0; k < JKEYS; k++)
      jkeys[k].answered = jkeys[k].issued;
  }
}

static bool jent_equal(const struct sl_ledger_entry *a, const struct sl_ledger_entry *b) {
  /* seq is renumbered at load; the rest comes back as put. */
  return a->state == b->state && a->status == b->status && a->attempts == b->attempts &&
         a->enqueued_ms == b->enqueued_ms && a->updated_ms == b->updated_ms &&
         strcmp(a->error, b->error) == 0;
}

static void check_journal_state(const char *dir, char *err, size_t errlen) {
  char path[400];
  uv_loop_t loop;
  struct sl_ledger *l = sl_ledger_create(4096);
  struct sl_dedupe *d = sl_dedupe_create(1024, 3600000);
  struct sl_ledger_journal_opts o;
  struct sl_ledger_journal *j = NULL;
  int rc;

  err[0] = '\0';
  sl_ledger_journal_opts_init(&o);
  o.io = crashfs_nosync_io();
  snprintf(path, sizeof(path), "%s/db%" PRIu64 "/" SL_LEDGER_JOURNAL_FILE, dir, run_seed % 2);
  assert_int_equal(uv_loop_init(&loop), 0);
  rc = sl_ledger_journal_open(&loop, path, l, d, J_NOW, &o, &j);
  if (rc != 0) {
    snprintf(err, errlen, "the journal does not open: %s", uv_strerror(rc));
  } else {
    for (uint32_t n = 0; n < JIDS && err[0] == '\0'; n++) {
      struct sl_ledger_entry e;
      uint8_t id[16];
      const struct jent *je = &jents[n];
      bool ok = false;
      jid(n, id);
      if (sl_ledger_get(l, id, &e) != 1) {
        if (je->answered > 0)
          snprintf(err, errlen, "status %u (version %d) is lost", n, je->answered - 1);
        continue;
      }
      /* The answered version or a later one issued before the cut. */
      for (int k = je->answered > 0 ? je->answered - 1 : 0; k < je->issued; k++)
        ok |= jent_equal(&e, &je->v[k]);
      if (!ok)
        snprintf(err, errlen, "status %u reads %s, which is %s", n, sl_ledger_state_name(e.state),
                 je->issued == 0 ? "never put" : "not its last answered state or a later one");
    }
    for (uint32_t k = 0; k < JKEYS && err[0] == '\0'; k++) {
      char key[64];
      uint8_t id[16], want[16];
      int got;
      jkey_name(k, key, sizeof(key));
      got = sl_dedupe_get(d, 1, key, strlen(key), J_NOW, id);
      jid(jkeys[k].entry, want);
      if (got == 1 && (!jkeys[k].issued || memcmp(id, want, 16) != 0))
        snprintf(err, errlen, "Idempotency-Key %u is known but was %s", k,
                 jkeys[k].issued ? "put with another id" : "never put");
      else if (got != 1 && jkeys[k].answered)
        snprintf(err, errlen, "Idempotency-Key %u is forgotten", k);
    }
    sl_ledger_journal_close(j);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

/* ---- accept workload and checks -------------------------------------------------------- */

/*
 * The spill path as the drain runs it: a spilled request's 202 waits for its
 * spool record alone; its "queued" entry (at the append's completion) and its
 * Idempotency-Key (at spill time) go to the journal unsynced; a delivery is
 * journaled and waited for before its ack. After a cut, the journal and the
 * spool are reopened and, when the journal was not closed cleanly, the
 * statuses and keys it lacks are rebuilt from the spool (sluice/recover.h),
 * as each drain does. Then every answered request must have a status, and
 * its key if it had one; one whose record is gone must read "delivered".
 */
#define AREQS 400
#define A_UPSTREAM 1

struct areq {
  bool keyed;
  bool answered, acked; /* replay */
};

static struct areq areqs[AREQS];
static size_t nareqs;
static uint64_t A_NOW;

struct accept_ctx {
  uv_loop_t loop;
  struct sl_ledger *l;
  struct sl_dedupe *d;
  struct sl_ledger_journal *j;
  struct sl_spool *s;
};

static struct accept_ctx actx;
static unsigned adeliveries; /* waiting for their "delivered" frame */

static void areq_id(uint32_t i, uint8_t id[16]) {
  memset(id, 0x3c, 16);
  memcpy(id, &i, 4);
  memcpy(id + 4, &run_seed, 8);
}

static void areq_key(uint32_t i, char *out, size_t cap) {
  snprintf(out, cap, "order-%" PRIu64 "-%u", run_seed, i);
}

static void on_accepted(void *arg, int status) {
  uint32_t i = (uint32_t)(uintptr_t)arg;
  struct sl_ledger_entry e, seen;

  assert_int_equal(status, 0);
  memset(&e, 0, sizeof(e));
  areq_id(i, e.id);
  e.state = SL_LEDGER_QUEUED;
  e.upstream = A_UPSTREAM;
  e.seq = i + 1;
  e.enqueued_ms = A_NOW;
  e.updated_ms = A_NOW;
  if (sl_ledger_get(actx.l, e.id, &seen) != 1)
    sl_ledger_put(actx.l, &e);
  crashfs_mark(A_ANSWERED, i, 0);
}

static void spill_one(void) {
  struct sl_spool_record r;
  char headers[400], key[64], body[600];
  uint32_t i = (uint32_t)nareqs++;
  int n;

  memset(&r, 0, sizeof(r));
  areq_id(i, r.id);
  areqs[i].keyed = below(2) == 0;
  areq_key(i, key, sizeof(key));
  n = snprintf(headers, sizeof(headers), "Host: backend\r\n%s%s%sContent-Type: text/plain\r\n",
               areqs[i].keyed ? "Idempotency-Key: " : "", areqs[i].keyed ? key : "",
               areqs[i].keyed ? "\r\n" : "");
  r.enqueue_ms = A_NOW;
  if (below(5) == 0)
    r.not_before_ms = clock_fn(NULL) + 1000 + below(5000);
  r.method = "POST";
  r.method_len = 4;
  r.target = "/orders";
  r.target_len = 7;
  r.headers = headers;
  r.headers_len = (size_t)n;
  r.body_len = (size_t)below(sizeof(body));
  fill(body, r.body_len);
  r.body = body;
  assert_int_equal(sl_spool_append(actx.s, &r, on_accepted, (void *)(uintptr_t)i), 0);
  /* Put before the append completes, as the proxy does: a repeat finds it. */
  if (areqs[i].keyed)
    assert_int_equal(sl_dedupe_put(actx.d, A_UPSTREAM, key, strlen(key), r.id, A_NOW), 0);
}

struct delivery {
  struct sl_ledger_journal_waiter w; /* first */
  struct sl_spool_item *item;
  uint32_t i;
};

static void on_acked(void *arg, int status) {
  assert_int_equal(status, 0);
  crashfs_mark(A_ACKED, (uint32_t)(uintptr_t)arg, 0);
}

/* Its "delivered" frame is durable: the ack may go (ack_when_journaled). */
static void on_delivered(struct sl_ledger_journal_waiter *w, int status) {
  struct delivery *dl = (struct delivery *)w;

  assert_int_equal(status, 0);
  assert_int_equal(sl_spool_ack(actx.s, dl->item, on_acked, (void *)(uintptr_t)dl->i), 0);
  free(dl);
  adeliveries--;
}

static void deliver_some(void) {
  for (unsigned k = (unsigned)below(4); k > 0; k--) {
    struct sl_spool_item *it = NULL;
    struct sl_ledger_entry e;
    struct delivery *dl;
    uint32_t i;

    assert_int_equal(sl_spool_take(actx.s, &it), 0);
    if (it == NULL)
      return;
    memcpy(e.id, sl_spool_item_record(it)->id, 16);
    memcpy(&i, e.id, 4);
    if (sl_ledger_get(actx.l, e.id, &e) != 1) { /* taken before its completion ran */
      sl_spool_release(actx.s, it);
      return;
    }
    e.state = SL_LEDGER_DELIVERED;
    e.status = 200;
    e.updated_ms = A_NOW + 1;
    assert_int_equal(sl_ledger_put(actx.l, &e), 0);
    dl = calloc(1, sizeof(*dl));
    assert_non_null(dl);
    dl->item = it;
    dl->i = i;
    adeliveries++;
    if (sl_ledger_journal_wait(actx.l, &dl->w, sl_ledger_journal_mark(actx.l), on_delivered) != 0)
      on_delivered(&dl->w, 0);
  }
}

static void random_spool_opts(struct sl_spool_opts *o);

static void accept_pump(void) {
  uv_run(&actx.loop, UV_RUN_NOWAIT);
  sl_spool_poll_completions(actx.s);
}

static void accept_workload(void) {
  char path[400];
  struct sl_spool_opts o;
  struct sl_ledger_journal_opts jo;
  unsigned steps = 40 + (unsigned)below(80);

  A_NOW = sl_clock_wall_ms();
  memset(areqs, 0, sizeof(areqs));
  nareqs = 0;
  memset(&actx, 0, sizeof(actx));
  assert_int_equal(uv_loop_init(&actx.loop), 0);
  actx.l = sl_ledger_create(4096);
  actx.d = sl_dedupe_create(1024, 3600000);
  sl_ledger_journal_opts_init(&jo);
  jo.io = crashfs_io();
  snprintf(path, sizeof(path), "%s/acc/" SL_LEDGER_JOURNAL_FILE, root);
  assert_int_equal(sl_ledger_journal_open(&actx.loop, path, actx.l, actx.d, A_NOW, &jo, &actx.j),
                   0);
  random_spool_opts(&o);
  snprintf(path, sizeof(path), "%s/acc/up", root);
  assert_int_equal(sl_spool_open(path, &o, &actx.s), 0);
  for (unsigned step = 0; step < steps && nareqs + 8 < AREQS; step++) {
    uint64_t p = below(100);
    if (p < 45) {
      for (unsigned n = 1 + (unsigned)below(6); n > 0; n--)
        spill_one();
      if (o.batch_appends)
        sl_spool_flush(actx.s);
    } else if (p < 65) {
      deliver_some();
    } else if (p < 90) {
      accept_pump();
    } else {
      sl_spool_wait_idle(actx.s);
      accept_pump();
    }
  }
  while (adeliveries > 0)
    uv_run(&actx.loop, UV_RUN_ONCE);
  sl_spool_wait_idle(actx.s);
  accept_pump();
  sl_spool_close(actx.s);
  sl_ledger_journal_close(actx.j);
  uv_run(&actx.loop, UV_RUN_DEFAULT);
  uv_loop_close(&actx.loop);
  sl_ledger_destroy(actx.l);
  sl_dedupe_destroy(actx.d);
}

static void accept_mark(const struct crashfs_rec *r) {
  if (r->a >= nareqs)
    fail_msg("a mark names request %" PRIu64 " of %zu", r->a, nareqs);
  if (r->kind == A_ANSWERED)
    areqs[r->a].answered = true;
  else if (r->kind == A_ACKED)
    areqs[r->a].acked = true;
}

struct held {
  struct sl_recover *rec;
  bool in_spool[AREQS];
  bool stray;
};

static int on_held(void *arg, const struct sl_spool_record *rec) {
  struct held *h = arg;
  uint32_t i;
  uint64_t seed;

  memcpy(&i, rec->id, 4);
  memcpy(&seed, rec->id + 4, 8);
  if (seed != run_seed || i >= nareqs)
    h->stray = true;
  else
    h->in_spool[i] = true;
  return h->rec != NULL ? sl_recover_add(h->rec, rec) : 0;
}

static void check_accept_state(const char *dir, char *err, size_t errlen) {
  char path[400];
  uv_loop_t loop;
  struct sl_ledger *l = sl_ledger_create(4096);
  struct sl_dedupe *d = sl_dedupe_create(1024, 3600000);
  struct sl_ledger_journal_opts jo;
  struct sl_ledger_journal *j = NULL;
  struct sl_spool_opts o;
  struct sl_spool *s = NULL;
  struct held *h = calloc(1, sizeof(*h));
  struct sl_recover_counts counts = {0};
  bool unclean;
  int rc;

  assert_non_null(h);
  err[0] = '\0';
  assert_int_equal(uv_loop_init(&loop), 0);
  sl_ledger_journal_opts_init(&jo);
  jo.io = crashfs_nosync_io();
  snprintf(path, sizeof(path), "%s/acc/" SL_LEDGER_JOURNAL_FILE, dir);
  rc = sl_ledger_journal_open(&loop, path, l, d, A_NOW, &jo, &j);
  if (rc != 0) {
    snprintf(err, errlen, "the journal does not open: %s", uv_strerror(rc));
    goto out;
  }
  unclean = sl_ledger_journal_unclean(l);
  sl_spool_opts_init(&o);
  o.io = crashfs_nosync_io();
  o.preallocate = false;
  o.dict_train_records = 0;
  o.now_ms = clock_fn;
  snprintf(path, sizeof(path), "%s/acc/up", dir);
  rc = sl_spool_open(path, &o, &s);
  if (rc != 0) {
    snprintf(err, errlen, "spool recovery failed: %s", sl_strerror(rc));
    goto out;
  }
  h->rec = unclean ? sl_recover_create() : NULL;
  rc = sl_spool_scan(s, on_held, h);
  if (rc != 0) {
    snprintf(err, errlen, "reading the recovered spool failed: %s", sl_strerror(rc));
    goto out;
  }
  if (h->stray) {
    snprintf(err, errlen, "the spool holds a record that was never spilled");
    goto out;
  }
  if (h->rec != NULL)
    sl_recover_apply(h->rec, l, d, A_UPSTREAM, A_NOW, &counts);
  for (uint32_t i = 0; i < nareqs && err[0] == '\0'; i++) {
    struct sl_ledger_entry e;
    uint8_t id[16], got[16];
    char key[64];

    areq_id(i, id);
    areq_key(i, key, sizeof(key));
    if (!areqs[i].answered)
      continue;
    if (sl_ledger_get(l, id, &e) != 1)
      snprintf(err, errlen, "request %u was answered 202 and its status is lost (journal %s)", i,
               unclean ? "unclean, rebuilt from the spool" : "closed cleanly");
    else if (!h->in_spool[i] && e.state != SL_LEDGER_DELIVERED)
      snprintf(err, errlen, "request %u left the spool but reads %s", i,
               sl_ledger_state_name(e.state));
    else if (areqs[i].acked && h->in_spool[i])
      snprintf(err, errlen, "request %u came back after its ack completed", i);
    else if (areqs[i].keyed && (sl_dedupe_get(d, A_UPSTREAM, key, strlen(key), A_NOW, got) != 1 ||
                                memcmp(got, id, 16) != 0))
      snprintf(err, errlen, "request %u was answered 202 and its Idempotency-Key is forgotten", i);
  }

out:
  if (s != NULL)
    sl_spool_close(s);
  sl_ledger_journal_close(j);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sl_recover_destroy(h->rec);
  free(h);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

/* ---- cutting --------------------------------------------------------------------------- */

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

/*
 * Replays the log of the run just made and checks up to <budget> states: cuts after every
 * sync and at random points between, a sample of them if there are more than the budget
 * allows, each materialized as the worst state, two random ones and (every fourth cut) the
 * process-crash state.
 */
static const char *kind_name(enum run_kind kind) {
  return kind == RUN_JOURNAL ? "journal" : kind == RUN_ACCEPT ? "accept" : "spool";
}

static void cut_and_check(enum run_kind kind, uint64_t budget) {
  size_t n, ncand = 0, ncuts, next = 0;
  const struct crashfs_rec *log = crashfs_log(&n);
  size_t *cand = malloc((n + 1) * sizeof(*cand));
  char err[512];

  assert_non_null(cand);
  for (size_t i = 1; i <= n; i++)
    if (log[i - 1].op == CRASHFS_SYNC || i == n || below(40) == 0)
      cand[ncand++] = i;
  ncuts = budget / 3 < ncand ? (size_t)(budget / 3) : ncand;
  if (ncuts == 0)
    ncuts = 1;                         /* the last few states of a run */
  for (size_t i = 0; i < ncuts; i++) { /* a random sample, kept in log order */
    size_t k = i + (size_t)below(ncand - i), t = cand[i];
    cand[i] = cand[k];
    cand[k] = t;
  }
  qsort(cand, ncuts, sizeof(*cand), cmp_size);
  crashfs_replay_begin();
  for (size_t i = 0; i <= n && next < ncuts; i++) {
    while (next < ncuts && cand[next] == i) {
      int variants = next % 4 == 0 ? 4 : 3;
      for (int v = 0; v < variants; v++) {
        enum crashfs_mode mode = v == 0   ? CRASHFS_DROP_ALL
                                 : v == 3 ? CRASHFS_KEEP_ALL
                                          : CRASHFS_RANDOM;
        uint64_t vseed = rnd();
        crashfs_rm_rf(img);
        assert_int_equal(mkdir(img, 0755), 0);
        assert_int_equal(crashfs_materialize(img, mode, vseed), 0);
        if (kind == RUN_JOURNAL)
          check_journal_state(img, err, sizeof(err));
        else if (kind == RUN_ACCEPT)
          check_accept_state(img, err, sizeof(err));
        else
          check_spool_state(img, err, sizeof(err));
        states_run++;
        if (err[0] != '\0') {
          char kept[400] = "";
          if (keep_failed) {
            snprintf(kept, sizeof(kept), "%s.failed", img);
            crashfs_rm_rf(kept);
            rename(img, kept);
          }
          fail_msg("CRASH STATE FAILED: %s\n  seed %" PRIu64 " (run %" PRIu64 ", %s), cut after "
                   "operation %zu of %zu, %s state (choices seed %" PRIu64 ")%s%s\n"
                   "  rerun: CRASH_SEED=%" PRIu64 " CRASH_STATES=%" PRIu64 " CRASH_KEEP=1%s",
                   err, run_seed, runs, kind_name(kind), i, n,
                   mode == CRASHFS_DROP_ALL   ? "worst"
                   : mode == CRASHFS_KEEP_ALL ? "process-crash"
                                              : "random",
                   vseed, kept[0] ? "; kept in " : "", kept, base_seed, states_target,
                   journal_strict ? " CRASH_JOURNAL=strict" : "");
        }
      }
      crashfs_rm_rf(img);
      next++;
    }
    if (i < n) {
      if (log[i].op == CRASHFS_MARK) {
        if (kind == RUN_JOURNAL)
          journal_mark(&log[i]);
        else if (kind == RUN_ACCEPT)
          accept_mark(&log[i]);
        else
          spool_mark(&log[i]);
      } else {
        crashfs_replay_apply(i);
      }
    }
  }
  if (crashfs_violations() != 0)
    fail_msg("seed %" PRIu64 ": %" PRIu64 " operation(s) bypassed the I/O table", run_seed,
             crashfs_violations());
  free(cand);
}

static void random_spool_opts(struct sl_spool_opts *o) {
  static const size_t blocks[] = {2048, 8192, 65536};
  static const int levels[] = {0, 1, 3};

  sl_spool_opts_init(o);
  o->name = "crash";
  o->io = crashfs_io();
  o->now_ms = clock_fn;
  o->fsync = below(3) ? SL_SPOOL_FSYNC_BATCH : SL_SPOOL_FSYNC_ALWAYS;
  o->sync_delay_us = below(3) == 0 ? 200 : 0;
  o->segment_bytes = 16384 + below(6) * 16384;
  o->preallocate = below(2);
  o->batch_appends = below(2);
  o->block_bytes = blocks[below(3)];
  o->compression_level = levels[below(3)];
  o->dict_train_records = below(4) == 0 ? 40 : 0;
  o->dict_bytes = 4096;
  o->ack_interval_us = below(2) ? 0 : 500;
}

static void one_run(enum run_kind kind, uint64_t budget) {
  const char *tmp = getenv("TMPDIR");

  if (tmp == NULL || tmp[0] == '\0')
    tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(root, sizeof(root), "%s/sl-crash.XXXXXX", tmp);
  assert_non_null(mkdtemp(root));
  snprintf(img, sizeof(img), "%s.img", root);
  assert_int_equal(crashfs_start(root), 0);
  rng = run_seed * 0x2545f4914f6cdd1dull + 1;
  __atomic_store_n(&fake_now, 1700000000000ull, __ATOMIC_RELAXED);
  cb_failures = 0;
  ninflight = 0;
  if (kind == RUN_JOURNAL) {
    journal_workload();
  } else if (kind == RUN_ACCEPT) {
    accept_workload();
    for (size_t i = 0; i < nareqs; i++)
      areqs[i].answered = areqs[i].acked = false;
  } else {
    struct spool_run run;
    random_spool_opts(&run.o);
    spool_workload(&run);
    for (size_t i = 0; i < nids; i++) {
      ids[i].issued = -1;
      ids[i].live = -1;
      ids[i].settling = ids[i].gone = false;
    }
  }
  crashfs_stop();
  cut_and_check(kind, budget);
  crashfs_free();
  ids_free();
  crashfs_rm_rf(root);
}

static void crash_states(void **state) {
  uint64_t t0 = sl_clock_mono_ns();
  (void)state;

  while (states_run < states_target) {
    uint64_t turn = runs % (SPOOL_RUNS + 2);
    enum run_kind kind = turn == SPOOL_RUNS  ? RUN_JOURNAL
                         : turn > SPOOL_RUNS ? RUN_ACCEPT
                                             : RUN_SPOOL;
    uint64_t left = states_target - states_run;
    uint64_t t = sl_clock_mono_ns();
    run_seed = base_seed + runs;
    one_run(kind, left < STATES_PER_RUN ? left : STATES_PER_RUN);
    runs++;
    if (progress)
      fprintf(
          stderr, "crash: run %" PRIu64 " (seed %" PRIu64 ", %s) in %.2f s; %" PRIu64 " states\n",
          runs - 1, run_seed, kind_name(kind), (double)(sl_clock_mono_ns() - t) / 1e9, states_run);
  }
  printf("crash: %" PRIu64 " states checked in %" PRIu64 " runs (seeds %" PRIu64 "..%" PRIu64
         ") in %.1f s; journal checks: %s\n",
         states_run, runs, base_seed, base_seed + runs - 1, (double)(sl_clock_mono_ns() - t0) / 1e9,
         journal_strict ? "strict (every completed write)" : "compactions");
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(crash_states)};
  const char *e;

  if ((e = getenv("CRASH_STATES")) != NULL)
    states_target = strtoull(e, NULL, 10);
  if ((e = getenv("CRASH_SEED")) != NULL)
    base_seed = strtoull(e, NULL, 10);
  keep_failed = getenv("CRASH_KEEP") != NULL;
  progress = getenv("CRASH_PROGRESS") != NULL;
  /* The journal follows the fsync policy: every frame whose write completed (its answer could
   * leave) must survive. CRASH_JOURNAL=compactions holds it only to its compactions. */
  journal_strict = (e = getenv("CRASH_JOURNAL")) == NULL || strcmp(e, "compactions") != 0;
  sl_log_set_level(getenv("CRASH_VERBOSE") ? SL_LOG_DEBUG : (enum sl_log_level)(SL_LOG_ERROR + 1));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
