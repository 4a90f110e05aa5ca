/*
 * Drain unit tests: the wake-ups of the replay scheduler. A drain that goes
 * to sleep while its spool holds a record it could replay stalls until some
 * unrelated event wakes it, so each test builds the state in which a
 * wake-up was once missed and checks that the drain's timer is armed for the
 * moment the record can go, then that the replay really starts.
 *
 * A real loop, a real spool in a temporary directory and a backend on
 * 127.0.0.1 that the test runs on the same loop. The drain reads the
 * monotonic clock through sl_clock_mono_ns(); this executable defines that
 * function (and sl_clock_wall_ms, which shares its object file) so that a
 * test can stop the loop thread's clock or script its next reading. Other
 * threads (the spool's) always read the real clock.
 *
 * pwrite is wrapped (-Wl,--wrap=pwrite): while <fail_writes> is set, every
 * write the spool makes fails with ENOSPC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <glob.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "sluice/clock.h"
#include "sluice/config.h"
#include "sluice/drain.h"
#include "sluice/expiry.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/spool.h"
#include "sluice/upstream.h"

#define MS 1000000ull

/* ---- the clock ------------------------------------------------------------------------ */

static pthread_t loop_thread;
static bool clock_frozen;     /* the loop thread reads <frozen_ns> */
static uint64_t frozen_ns;    /* loop thread only */
static uint64_t next_read_ns; /* when non-zero: the loop thread's next reading, once */

static uint64_t real_ns(clockid_t id) {
  struct timespec ts;

  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sl_clock_mono_ns(void) {
  uint64_t t;

  if (!pthread_equal(pthread_self(), loop_thread) || !clock_frozen)
    return real_ns(CLOCK_MONOTONIC);
  t = next_read_ns != 0 ? next_read_ns : frozen_ns;
  next_read_ns = 0;
  return t;
}

uint64_t sl_clock_wall_ms(void) { return real_ns(CLOCK_REALTIME) / MS; }

/* ---- failing writes ------------------------------------------------------------------- */

static volatile int fail_writes; /* read on the spool's threads: set only while they idle */

ssize_t __real_pwrite(int fd, const void *buf, size_t len, off_t off);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t len, off_t off);

ssize_t __wrap_pwrite(int fd, const void *buf, size_t len, off_t off) {
  if (__atomic_load_n(&fail_writes, __ATOMIC_SEQ_CST)) {
    errno = ENOSPC;
    return -1;
  }
  return __real_pwrite(fd, buf, len, off);
}

/* ---- a backend on the loop ------------------------------------------------------------ */

/* Accepts connections; with <status> non-zero answers each request (one per connection)
 * with that status and closes, else keeps the connection open without answering. */
struct backend {
  uv_tcp_t listener;
  int port;
  unsigned status;
  unsigned accepted, requests;
  uv_tcp_t *conns[8];
  unsigned nconns;
};

static void on_backend_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  static char mem[4096];

  (void)h;
  (void)hint;
  *buf = uv_buf_init(mem, sizeof(mem));
}

static void on_conn_closed(uv_handle_t *h) { free(h); }

static void on_answered(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, on_conn_closed);
  free(w);
}

static void on_backend_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct backend *b = s->data;
  static char resp[128];
  uv_write_t *w;
  uv_buf_t out;

  if (n < 0) {
    uv_read_stop(s);
    return;
  }
  /* The replays here carry no body: the request ends with its blank line. */
  if (n == 0 || memmem(buf->base, (size_t)n, "\r\n\r\n", 4) == NULL)
    return;
  b->requests++;
  if (b->status == 0)
    return;
  uv_read_stop(s);
  snprintf(resp, sizeof(resp), "HTTP/1.1 %u Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
           b->status);
  out = uv_buf_init(resp, (unsigned)strlen(resp));
  w = malloc(sizeof(*w));
  assert_non_null(w);
  assert_int_equal(uv_write(w, s, &out, 1, on_answered), 0);
}

static void on_backend_conn(uv_stream_t *l, int status) {
  struct backend *b = l->data;
  uv_tcp_t *c = malloc(sizeof(*c));

  assert_int_equal(status, 0);
  assert_non_null(c);
  uv_tcp_init(l->loop, c);
  assert_int_equal(uv_accept(l, (uv_stream_t *)c), 0);
  c->data = b;
  b->accepted++;
  if (b->status == 0) {
    assert_true(b->nconns < sizeof(b->conns) / sizeof(b->conns[0]));
    b->conns[b->nconns++] = c; /* held open, closed by backend_close */
  }
  uv_read_start((uv_stream_t *)c, on_backend_alloc, on_backend_read);
}

static void backend_open(uv_loop_t *loop, struct backend *b, unsigned status) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  memset(b, 0, sizeof(*b));
  b->status = status;
  uv_tcp_init(loop, &b->listener);
  b->listener.data = b;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(&b->listener, (const struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&b->listener, 16, on_backend_conn), 0);
  assert_int_equal(uv_tcp_getsockname(&b->listener, (struct sockaddr *)&bound, &len), 0);
  b->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

static void backend_close(struct backend *b) {
  for (unsigned i = 0; i < b->nconns; i++)
    uv_close((uv_handle_t *)b->conns[i], on_conn_closed);
  uv_close((uv_handle_t *)&b->listener, NULL);
}

/* ---- fixture: one drain with its spool ------------------------------------------------ */

struct fixture {
  uv_loop_t loop;
  struct sl_loop lp; /* its context: the read buffer */
  char dir[64];
  struct backend backend;
  struct sl_config *cfg;
  struct sl_upstream *pool;
  struct sl_metrics *reg;
  struct sl_drain *drain;
  struct sl_ledger *ledger;
  uint8_t id[16];   /* of the last record spilled */
  uv_timer_t guard; /* bounds every wait: a stalled drain fails the test, never hangs it */
  bool guard_fired;
  bool spilled;
  bool open;
};

/* The fixture of the running test: the teardown closes it even after a failed assertion. */
static struct fixture the_fixture;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Starts a backend answering <status> (0: never) and a drain of upstream "b" with
 * <upstream_opts> (libconfig settings inside the upstream's braces). */
static void fixture_open(struct fixture *f, unsigned status, const char *upstream_opts) {
  char text[1024], err[256], spool_dir[96];

  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  sl_loop_init(&f->lp, &f->loop);
  uv_timer_init(&f->loop, &f->guard);
  f->guard.data = f;
  snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-drain.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  backend_open(&f->loop, &f->backend, status);
  snprintf(text, sizeof(text),
           "spool = { dir = \"%s\"; fsync = \"off\"; };\n"
           "upstreams = ( { name = \"b\"; address = \"127.0.0.1:%d\"; %s } );\n"
           "routes = ( { prefix = \"/\"; upstream = \"b\"; spill = true; } );\n",
           f->dir, f->backend.port, upstream_opts);
  assert_int_equal(sl_config_load_string(text, "test.conf", &f->cfg, err, sizeof(err)), 0);
  f->pool = sl_upstream_create(&f->lp, &f->cfg->upstreams[0]);
  f->reg = sl_metrics_create();
  f->ledger = sl_ledger_create(64);
  assert_non_null(f->pool);
  assert_non_null(f->reg);
  assert_non_null(f->ledger);
  snprintf(spool_dir, sizeof(spool_dir), "%s/b", f->dir);
  assert_int_equal(sl_drain_create(&f->loop, f->cfg, &f->cfg->upstreams[0], 0, f->pool, f->ledger,
                                   NULL, f->reg, spool_dir, &f->drain),
                   0);
  f->open = true;
}

static int fixture_close(void **state) {
  struct fixture *f = &the_fixture;

  (void)state;
  clock_frozen = false;
  next_read_ns = 0;
  __atomic_store_n(&fail_writes, 0, __ATOMIC_SEQ_CST);
  if (!f->open)
    return 0;
  f->open = false;
  sl_drain_destroy(f->drain);
  sl_upstream_destroy(f->pool);
  backend_close(&f->backend);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  sl_metrics_destroy(f->reg);
  sl_ledger_destroy(f->ledger);
  sl_config_unref(f->cfg);
  nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  return 0;
}

static void on_spilled(const struct sl_drain_spilled *res, void *arg) {
  struct fixture *f = arg;

  assert_int_equal(res->status, 0);
  f->spilled = true;
}

/* Spills one bodiless GET to the drain. */
static void spill_one(struct fixture *f) {
  struct sl_buf fields, body;

  sl_buf_init(&fields);
  sl_buf_init(&body);
  assert_int_equal(
      sl_drain_spill(f->drain, "GET", 3, "/x", 2, &fields, &body, 0, on_spilled, f, f->id), 0);
}

static void on_guard(uv_timer_t *t) {
  struct fixture *f = t->data;

  f->guard_fired = true;
}

/* Runs the loop until <*flag> (an unsigned counter) reaches <want>, or 5 s pass. */
static bool run_until(struct fixture *f, const unsigned *flag, unsigned want) {
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  while (*flag < want && !f->guard_fired)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->guard);
  return *flag >= want;
}

/* Runs the loop until the spill's completion has been handled by the drain, and stops right
 * there: UV_RUN_NOWAIT runs no timers after the callbacks, so the timer the drain armed for
 * the record has not fired yet when this returns, however slow the machine. */
static void run_until_spilled(struct fixture *f) {
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  while (!f->spilled && !f->guard_fired) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (!f->spilled)
      usleep(1000);
  }
  uv_timer_stop(&f->guard);
  assert_true(f->spilled);
}

struct timer_probe {
  const struct sl_drain *drain;
  bool armed;
  uint64_t due_in;
};

static void probe_handle(uv_handle_t *h, void *arg) {
  struct timer_probe *p = arg;

  /* The drain's own timer: the only timer whose data is the drain. */
  if (h->type == UV_TIMER && h->data == p->drain && uv_is_active(h)) {
    p->armed = true;
    p->due_in = uv_timer_get_due_in((uv_timer_t *)h);
  }
}

/* Milliseconds until the drain's timer fires; UINT64_MAX if it is not armed. */
static uint64_t drain_timer_due_in(struct fixture *f) {
  struct timer_probe p = {f->drain, false, 0};

  uv_walk(&f->loop, probe_handle, &p);
  return p.armed ? p.due_in : UINT64_MAX;
}

/* ---- tests ---------------------------------------------------------------------------- */

/*
 * A token arrives between the moment pump() looked at the budget and the
 * moment it armed its timer: the record taken is given back for want of a
 * token, and the timer must still be armed for that token, not skipped
 * because "a token is there now". (The drain stalled so in the kill -9
 * end-to-end test, after the restart, with records in the spool.)
 */
static void test_token_arriving_during_pump_is_not_missed(void **state) {
  struct fixture *f = &the_fixture;
  uint64_t t0 = real_ns(CLOCK_MONOTONIC);

  (void)state;
  clock_frozen = true;
  frozen_ns = t0;
  /* 10/s, burst 1: one token every 100 ms. */
  fixture_open(f, 0, "rate = 10.0; burst = 1;");
  /* A live request takes the one token; the spool is empty. */
  assert_int_equal(sl_drain_admit(f->drain, false), SL_SHAPER_FORWARD);
  sl_drain_release(f->drain);

  spill_one(f);
  /* The drain's pump for the spilled record reads the clock 0.1 ms before the next token;
   * every later reading is 0.1 ms after it, as if the take had taken 0.2 ms. */
  next_read_ns = t0 + 100 * MS - 100000;
  frozen_ns = t0 + 100 * MS + 100000;
  run_until_spilled(f);
  assert_int_equal(next_read_ns, 0); /* the pump did read the scripted moment */

  /* The token is 0.1 ms away from what pump() saw: the timer is armed for it (a
   * millisecond, the timer's resolution), not for some later poll, not never. */
  assert_true(drain_timer_due_in(f) <= 1);
  assert_true(run_until(f, &f->backend.accepted, 1));
}

/* Runs the loop until the backend has answered once and the drain's retry of that record
 * is on disk, then lets the spool finish and hands its completions to the drain. */
static void run_until_retry_written(struct fixture *f) {
  struct sl_spool *spool = sl_drain_spool(f->drain);
  struct sl_spool_stats st;

  assert_true(run_until(f, &f->backend.requests, 1));
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  for (;;) {
    sl_spool_stats(spool, &st);
    if ((st.delayed + st.ready == 1 && st.inflight == 0) || f->guard_fired)
      break;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  uv_timer_stop(&f->guard);
  assert_int_equal(st.delayed + st.ready, 1);
  assert_int_equal(st.inflight, 0);
  sl_spool_wait_idle(spool);
  sl_spool_poll_completions(spool);
}

/*
 * A failed replay is rescheduled through sl_spool_retry(): the copy lands in
 * the delayed store on the writer thread after pump() last looked at the
 * spool's next due time. Once the copy is durable the drain must arm its
 * timer for it; nothing else is going to wake it.
 */
static void test_retry_copy_wakes_the_drain(void **state) {
  struct fixture *f = &the_fixture;

  (void)state;
  fixture_open(f, 500,
               "retry = { max_attempts = 3; initial_backoff = \"100ms\"; max_backoff = \"100ms\";"
               " multiplier = 1.0; jitter = 0.0; };");
  spill_one(f);
  run_until_retry_written(f);
  /* Due 100 ms after the failure, less the time it took to get here. */
  assert_true(drain_timer_due_in(f) <= 100);
  assert_true(run_until(f, &f->backend.requests, 2));
}

/* The value of the series "<name>{upstream="b",outcome="<outcome>"}" in the exposition. */
/* The value of the sample <series> (name and labels, as rendered), -1 if absent. */
static double sample(struct fixture *f, const char *series) {
  struct sl_buf text;
  const char *p;
  double v = -1;

  sl_buf_init(&text);
  assert_int_equal(sl_metrics_render(f->reg, &text), 0);
  assert_int_equal(sl_buf_append(&text, "", 1), 0);
  p = strstr(text.base, series);
  if (p != NULL && p[strlen(series)] == ' ')
    v = strtod(p + strlen(series) + 1, NULL);
  sl_buf_dispose(&text);
  return v;
}

static double drained(struct fixture *f, const char *outcome) {
  char series[128];

  snprintf(series, sizeof(series), "sluice_drained_total{upstream=\"b\",outcome=\"%s\"}", outcome);
  return sample(f, series);
}

static enum sl_ledger_state ledger_state(struct fixture *f) {
  struct sl_ledger_entry e;

  assert_int_equal(sl_ledger_get(f->ledger, f->id, &e), 1);
  return e.state;
}

/*
 * dead_letter_counted_before_the_move: a record that failed its last attempt
 * read "dead" and was counted as dead-lettered before the spool had moved it
 * to the dead store. When the move fails (here: the disk is full), the spool
 * gives the record back and it is replayed again, so it is not dead: the
 * status, the counter and the dead store must agree on that, and change once
 * a move succeeds.
 */
static void test_dead_letter_counted_only_after_the_move(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_spool_stats st;

  (void)state;
  fixture_open(f, 500,
               "retry = { max_attempts = 1; initial_backoff = \"20ms\"; max_backoff = \"20ms\";"
               " multiplier = 1.0; jitter = 0.0; };");
  spill_one(f);
  run_until_spilled(f);
  sl_spool_wait_idle(sl_drain_spool(f->drain));
  /* From here every spool write fails: the first replay's dead-letter move with it. The
   * record comes back and is replayed a second time. */
  __atomic_store_n(&fail_writes, 1, __ATOMIC_SEQ_CST);
  assert_true(run_until(f, &f->backend.requests, 2));
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.dead, 0);
  assert_int_not_equal(ledger_state(f), SL_LEDGER_DEAD);
  assert_true(drained(f, "dead") == 0);

  /* Space again: the next move succeeds, and only now is the request dead. */
  sl_spool_wait_idle(sl_drain_spool(f->drain));
  __atomic_store_n(&fail_writes, 0, __ATOMIC_SEQ_CST);
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  while (!f->guard_fired && (ledger_state(f) != SL_LEDGER_DEAD || drained(f, "dead") != 1))
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->guard);
  assert_int_equal(ledger_state(f), SL_LEDGER_DEAD);
  assert_true(drained(f, "dead") == 1);
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.dead, 1);
}

/* The value of the counter series "<name>{upstream="b"}", -1 if absent. */
static double counter(struct fixture *f, const char *name) {
  char series[160];

  snprintf(series, sizeof(series), "%s{upstream=\"b\"}", name);
  return sample(f, series);
}

/*
 * A record the spool hands out although its status already reads
 * "delivered": its delivery was journaled, but a crash took the spool's ack
 * checkpoint. It is settled without being sent again, and counted.
 */
static void test_record_already_delivered_is_not_sent_again(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_ledger_entry e;
  struct sl_spool_stats st;

  (void)state;
  fixture_open(f, 200, "paused = true;");
  spill_one(f);
  run_until_spilled(f);
  assert_int_equal(sl_ledger_get(f->ledger, f->id, &e), 1);
  e.state = SL_LEDGER_DELIVERED;
  e.status = 200;
  e.attempts = 1;
  assert_int_equal(sl_ledger_put(f->ledger, &e), 0);
  assert_true(counter(f, "sluice_drain_redelivery_skipped_total") == 0);
  sl_drain_pause(f->drain, false);
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  do {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    sl_spool_stats(sl_drain_spool(f->drain), &st);
  } while (!f->guard_fired && (st.ready > 0 || st.inflight > 0));
  uv_timer_stop(&f->guard);
  assert_int_equal(st.ready + st.inflight, 0);
  assert_int_equal(f->backend.requests, 0);
  assert_true(counter(f, "sluice_drain_redelivery_skipped_total") == 1);
  assert_true(drained(f, "delivered") == 0);
  assert_int_equal(ledger_state(f), SL_LEDGER_DELIVERED);
}

/* The value of "sluice_expired_total{upstream="b",outcome="<outcome>"}", -1 if absent. */
static double expired(struct fixture *f, const char *outcome) {
  char series[128];

  snprintf(series, sizeof(series), "sluice_expired_total{upstream=\"b\",outcome=\"%s\"}", outcome);
  return sample(f, series);
}

/* Spills one bodiless GET whose deadline (sluice/expiry.h) passed long ago, to the drain
 * (paused by the caller), and waits until it is stored. */
static void spill_expired(struct fixture *f, bool drop) {
  struct sl_buf fields, body;

  sl_buf_init(&fields);
  sl_buf_init(&body);
  assert_int_equal(sl_buf_append_str(&fields, "Host: b\r\n"), 0);
  assert_int_equal(sl_expiry_append(&fields, 1, drop), 0);
  assert_int_equal(
      sl_drain_spill(f->drain, "GET", 3, "/x", 2, &fields, &body, 0, on_spilled, f, f->id), 0);
  sl_buf_dispose(&fields);
  run_until_spilled(f);
}

/* Runs the loop until <f>'s record reads <want> in the ledger, or 5 s pass. */
static void run_until_state(struct fixture *f, enum sl_ledger_state want) {
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  while (!f->guard_fired && ledger_state(f) != want)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->guard);
  assert_int_equal(ledger_state(f), want);
}

/*
 * An expired record with on_expire "drop" is never sent: it is settled, reads
 * "expired" and is counted, spending no attempt.
 */
static void test_expired_record_dropped(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_ledger_entry e;
  struct sl_spool_stats st;

  (void)state;
  fixture_open(f, 200, "paused = true;");
  spill_expired(f, true);
  assert_true(expired(f, "drop") == 0);
  sl_drain_pause(f->drain, false);
  run_until_state(f, SL_LEDGER_EXPIRED);
  sl_spool_wait_idle(sl_drain_spool(f->drain));
  uv_run(&f->loop, UV_RUN_NOWAIT);
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.ready + st.inflight + st.dead, 0);
  assert_int_equal(f->backend.requests, 0);
  assert_true(expired(f, "drop") == 1);
  assert_true(expired(f, "dead") == 0);
  assert_true(drained(f, "dead") == 0);
  assert_int_equal(sl_ledger_get(f->ledger, f->id, &e), 1);
  assert_int_equal(e.attempts, 0);
  assert_string_equal(e.error, "expired");
}

/*
 * An expired record with on_expire "dead" reads "expired" only once the dead
 * store has it: while the move fails (the disk is full) it is given back, and
 * neither sent nor counted; once a move succeeds it is a dead letter.
 */
static void test_expired_dead_letter_only_after_the_move(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_spool_stats st;

  (void)state;
  fixture_open(f, 200, "paused = true;");
  spill_expired(f, false);
  sl_spool_wait_idle(sl_drain_spool(f->drain));
  __atomic_store_n(&fail_writes, 1, __ATOMIC_SEQ_CST);
  sl_drain_pause(f->drain, false);
  /* Long enough for the move to be tried and fail (the writer's ENOSPC). */
  uv_timer_start(&f->guard, on_guard, 300, 0);
  f->guard_fired = false;
  while (!f->guard_fired)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->guard);
  sl_spool_wait_idle(sl_drain_spool(f->drain));
  uv_run(&f->loop, UV_RUN_NOWAIT);
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.dead, 0);
  assert_int_not_equal(ledger_state(f), SL_LEDGER_EXPIRED);
  assert_true(expired(f, "dead") == 0);

  __atomic_store_n(&fail_writes, 0, __ATOMIC_SEQ_CST);
  run_until_state(f, SL_LEDGER_EXPIRED);
  assert_true(expired(f, "dead") == 1);
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.dead, 1);
  assert_int_equal(f->backend.requests, 0);
  assert_true(drained(f, "dead") == 0);
}

/* A spill is "being stored" from sl_drain_spill() until its answer: a repeat
 * of its Idempotency-Key meanwhile must not be answered 202 (shape.c). */
static void test_spilling_until_answered(void **state) {
  struct fixture *f = &the_fixture;
  uint8_t other[16] = {1};

  (void)state;
  fixture_open(f, 200, "paused = true;");
  spill_one(f);
  assert_true(sl_drain_spilling(f->drain, f->id));
  assert_false(sl_drain_spilling(f->drain, other));
  run_until_spilled(f);
  assert_false(sl_drain_spilling(f->drain, f->id));
}

/*
 * A dead-letter move is durable before its "dead" status is journaled: after
 * a crash between the two the status reads "queued". Opening the spool reads
 * the dead store and sets the status back to what it holds.
 */
static void test_dead_store_restores_statuses_at_open(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_ledger_entry e;
  struct sl_spool_stats st;
  char spool_dir[1024];

  (void)state;
  fixture_open(f, 500,
               "retry = { max_attempts = 1; initial_backoff = \"20ms\"; max_backoff = \"20ms\";"
               " multiplier = 1.0; jitter = 0.0; };");
  spill_one(f);
  run_until_spilled(f);
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  while (!f->guard_fired && ledger_state(f) != SL_LEDGER_DEAD)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->guard);
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.dead, 1);
  /* The crash: the "dead" frame is lost, the status reads queued. */
  assert_int_equal(sl_ledger_get(f->ledger, f->id, &e), 1);
  e.state = SL_LEDGER_QUEUED;
  e.error[0] = '\0';
  assert_int_equal(sl_ledger_put(f->ledger, &e), 0);
  sl_drain_destroy(f->drain);
  for (int i = 0; i < 10; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  snprintf(spool_dir, sizeof(spool_dir), "%s/b", f->dir);
  assert_int_equal(sl_drain_create(&f->loop, f->cfg, &f->cfg->upstreams[0], 0, f->pool, f->ledger,
                                   NULL, f->reg, spool_dir, &f->drain),
                   0);
  assert_int_equal(ledger_state(f), SL_LEDGER_DEAD);
  assert_int_equal(sl_ledger_get(f->ledger, f->id, &e), 1);
  assert_true(e.error[0] != '\0'); /* the last error, from the dead letter */
}

/*
 * After an unclean stop the journal may lack the statuses and keys of the
 * last requests spilled (a 202 waits for the spool record alone): the drain
 * that adopts the spool takes a census and rebuilds them, and says it is
 * rebuilding until it is done (status URLs and keys answer 503 meanwhile).
 */
static void on_census_guard(uv_timer_t *t) { *(bool *)t->data = true; }

static void test_census_after_unclean_stop(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_ledger *fresh = sl_ledger_create(64);
  struct sl_dedupe *keys = sl_dedupe_create(64, 3600000);
  struct sl_ledger_journal *j = NULL;
  struct sl_buf fields, body;
  struct sl_ledger_entry e;
  uint8_t ids[3][16], got[16];
  char spool_dir[700], path[700];
  bool fired = false;
  uv_timer_t guard;

  (void)state;
  fixture_open(f, 0, "paused = true;");
  sl_buf_init(&fields);
  sl_buf_init(&body);
  assert_int_equal(sl_buf_append_str(&fields, "Host: b\r\nIdempotency-Key: order-7\r\n"), 0);
  for (int i = 0; i < 3; i++) {
    f->spilled = false;
    assert_int_equal(sl_drain_spill(f->drain, "POST", 4, "/x", 2, i == 1 ? &fields : &body, &body,
                                    0, on_spilled, f, ids[i]),
                     0);
    run_until_spilled(f);
  }
  sl_buf_dispose(&fields);
  sl_drain_destroy(f->drain);
  for (int i = 0; i < 10; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  /* The restart: a ledger and key index from a journal that was not closed cleanly
   * (here, none at all), so they know nothing of the three. */
  snprintf(path, sizeof(path), "%s/" SL_LEDGER_JOURNAL_FILE, f->dir);
  assert_int_equal(
      sl_ledger_journal_open(&f->loop, path, fresh, keys, sl_clock_wall_ms(), NULL, &j), 0);
  assert_true(sl_ledger_journal_unclean(fresh));
  sl_ledger_destroy(f->ledger);
  f->ledger = fresh;
  snprintf(spool_dir, sizeof(spool_dir), "%s/b", f->dir);
  assert_int_equal(sl_drain_create(&f->loop, f->cfg, &f->cfg->upstreams[0], 0, f->pool, f->ledger,
                                   keys, f->reg, spool_dir, &f->drain),
                   0);
  assert_true(sl_drain_rebuilding(f->drain));
  assert_int_equal(sl_ledger_get(f->ledger, ids[0], &e), 0);
  uv_timer_init(&f->loop, &guard);
  guard.data = &fired;
  uv_timer_start(&guard, on_census_guard, 5000, 0);
  while (sl_drain_rebuilding(f->drain) && !fired)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  assert_false(sl_drain_rebuilding(f->drain));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(sl_ledger_get(f->ledger, ids[i], &e), 1);
    assert_int_equal(e.state, SL_LEDGER_QUEUED);
    assert_int_equal(e.seq, (uint64_t)i + 1); /* its rank in the spool */
  }
  assert_int_equal(sl_dedupe_get(keys, 0, "order-7", 7, sl_clock_wall_ms(), got), 1);
  assert_memory_equal(got, ids[1], 16);
  /* Closed cleanly, the journal holds them all: the next start takes no census. */
  sl_drain_destroy(f->drain);
  f->drain = NULL;
  sl_ledger_journal_close(j);
  sl_dedupe_destroy(keys);
  keys = sl_dedupe_create(64, 3600000);
  fresh = sl_ledger_create(64);
  /* The close finishes on the threadpool: its lock goes last. */
  for (int i = 0, rc = SL_ELEDGER_LOCKED; rc != 0; i++) {
    assert_true(i < 500);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(2000);
    rc = sl_ledger_journal_open(&f->loop, path, fresh, keys, sl_clock_wall_ms(), NULL, &j);
    assert_true(rc == 0 || rc == SL_ELEDGER_LOCKED);
  }
  assert_false(sl_ledger_journal_unclean(fresh));
  sl_ledger_destroy(f->ledger);
  f->ledger = fresh;
  assert_int_equal(sl_drain_create(&f->loop, f->cfg, &f->cfg->upstreams[0], 0, f->pool, f->ledger,
                                   keys, f->reg, spool_dir, &f->drain),
                   0);
  assert_false(sl_drain_rebuilding(f->drain));
  assert_int_equal(sl_ledger_get(f->ledger, ids[2], &e), 1);
  assert_int_equal(sl_dedupe_get(keys, 0, "order-7", 7, sl_clock_wall_ms(), got), 1);
  sl_drain_destroy(f->drain);
  f->drain = NULL;
  sl_ledger_journal_close(j); /* detached at once; fixture_close runs the loop to its end */
  sl_dedupe_destroy(keys);
  /* fixture_close destroys the drain it holds: give it a fresh one without a ledger. */
  assert_int_equal(sl_drain_create(&f->loop, f->cfg, &f->cfg->upstreams[0], 0, f->pool, NULL, NULL,
                                   f->reg, spool_dir, &f->drain),
                   0);
}

/*
 * Failing replays open the upstream's circuit: the drain then holds the
 * record until the first probe, 1 s later, and must arm its timer for it;
 * with the circuit open nothing else wakes it. While it is open the drain
 * reports no ETA; the probe's success closes it.
 */
static void test_open_circuit_wakes_the_drain_for_its_probe(void **state) {
  struct fixture *f = &the_fixture;
  struct sl_drain_info info;
  uint64_t t3, waited;

  (void)state;
  fixture_open(f, 503,
               "retry = { max_attempts = 8; initial_backoff = \"50ms\"; max_backoff = \"50ms\";"
               " multiplier = 1.0; jitter = 0.0; };");
  spill_one(f);
  assert_true(run_until(f, &f->backend.requests, SL_CIRCUIT_THRESHOLD));
  t3 = real_ns(CLOCK_MONOTONIC);
  /* The third failure's retry copy is durable, and the drain has seen it. */
  run_until_retry_written(f);
  sl_drain_info(f->drain, &info);
  assert_int_equal(info.circuit, SL_CIRCUIT_OPEN);
  assert_int_equal(info.circuit_failures, SL_CIRCUIT_THRESHOLD);
  assert_true(info.next_probe_ms > 0);
  assert_true(info.eta_seconds < 0);
  assert_true(drain_timer_due_in(f) <= 1000);
  f->backend.status = 200;
  assert_true(run_until(f, &f->backend.requests, SL_CIRCUIT_THRESHOLD + 1));
  waited = real_ns(CLOCK_MONOTONIC) - t3;
  /* Not the record's 50 ms backoff: the circuit's first probe wait. */
  assert_true(waited >= 900 * MS);
  assert_true(waited < 3000 * MS);
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    sl_drain_info(f->drain, &info);
  } while (info.circuit != SL_CIRCUIT_CLOSED && !f->guard_fired);
  uv_timer_stop(&f->guard);
  assert_int_equal(info.circuit, SL_CIRCUIT_CLOSED);
  assert_int_equal(info.circuit_failures, 0);
  assert_int_equal(info.next_probe_ms, 0);
}

/* ---- records lost to damage ----------------------------------------------------------- */

/* Closes the drain and opens it again on the same spool and ledger, as a restart would. */
static void drain_reopen(struct fixture *f) {
  char spool_dir[96];

  sl_drain_destroy(f->drain);
  f->drain = NULL;
  for (int i = 0; i < 3; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  snprintf(spool_dir, sizeof(spool_dir), "%s/b", f->dir);
  assert_int_equal(sl_drain_create(&f->loop, f->cfg, &f->cfg->upstreams[0], 0, f->pool, f->ledger,
                                   NULL, f->reg, spool_dir, &f->drain),
                   0);
}

/* Flips a byte in the payload of the first unit of the first ready segment. */
static void damage_first_unit(struct fixture *f) {
  char pattern[128];
  glob_t g;
  FILE *fp;
  int c;

  snprintf(pattern, sizeof(pattern), "%s/b/ready-*.seg", f->dir);
  assert_int_equal(glob(pattern, 0, NULL, &g), 0);
  fp = fopen(g.gl_pathv[0], "r+b");
  globfree(&g);
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 64 + 48 + 4, SEEK_SET), 0);
  c = fgetc(fp);
  assert_int_equal(fseek(fp, 64 + 48 + 4, SEEK_SET), 0);
  fputc(c ^ 0xff, fp);
  assert_int_equal(fclose(fp), 0);
}

static enum sl_ledger_state state_of(struct fixture *f, const uint8_t *id) {
  struct sl_ledger_entry e;

  assert_int_equal(sl_ledger_get(f->ledger, id, &e), 1);
  return e.state;
}

/* Spills three records, one unit each, into a paused drain, then damages the first unit and
 * reopens the drain: the spool counts one record lost at open. */
static void spill_three_and_damage(struct fixture *f, uint8_t ids[3][16]) {
  struct sl_spool_stats st;

  fixture_open(f, 200, "paused = true;");
  for (int i = 0; i < 3; i++) {
    f->spilled = false;
    spill_one(f);
    run_until_spilled(f);
    memcpy(ids[i], f->id, 16);
    assert_int_equal(state_of(f, ids[i]), SL_LEDGER_QUEUED);
  }
  sl_drain_destroy(f->drain);
  f->drain = NULL;
  damage_first_unit(f);
  drain_reopen(f);
  sl_spool_stats(sl_drain_spool(f->drain), &st);
  assert_int_equal(st.lost_records, 1);
}

/*
 * lost_scan_on_the_loop: matching the ledger against the spool after damage read and
 * decompressed the whole spool on the event loop. The scan now runs on the threadpool: the
 * drain is created without reading the spool, and the status changes to "lost" once the
 * loop has run the scan's completion.
 */
static void test_lost_scan_runs_off_the_loop(void **state) {
  struct fixture *f = &the_fixture;
  uint8_t ids[3][16];
  unsigned lost = 0;

  (void)state;
  spill_three_and_damage(f, ids);
  /* sl_drain_create returned: the scan is queued, nothing applied on the loop yet. */
  assert_int_equal(state_of(f, ids[0]), SL_LEDGER_QUEUED);
  f->guard_fired = false;
  uv_timer_start(&f->guard, on_guard, 5000, 0);
  while (!lost && !f->guard_fired) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    lost = state_of(f, ids[0]) == SL_LEDGER_LOST;
    if (!lost)
      usleep(1000);
  }
  uv_timer_stop(&f->guard);
  assert_true(lost);
  assert_int_equal(state_of(f, ids[1]), SL_LEDGER_QUEUED);
  assert_int_equal(state_of(f, ids[2]), SL_LEDGER_QUEUED);
}

/*
 * The drain is destroyed while its scan is queued or has run but not completed on the loop:
 * the spool closes only once the worker is off it, the job is freed by its completion (ASan
 * finds a leak or a use after free otherwise), and nothing is applied to the ledger.
 */
static void test_destroy_during_lost_scan(void **state) {
  struct fixture *f = &the_fixture;
  uint8_t ids[3][16];

  (void)state;
  for (int round = 0; round < 2; round++) {
    spill_three_and_damage(f, ids);
    if (round == 1)
      usleep(20000); /* the worker has most likely finished: the completion is pending */
    sl_drain_destroy(f->drain);
    f->drain = NULL;
    for (int i = 0; i < 10; i++)
      uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(state_of(f, ids[0]), SL_LEDGER_QUEUED);
    fixture_close(NULL);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_token_arriving_during_pump_is_not_missed, fixture_close),
      cmocka_unit_test_teardown(test_retry_copy_wakes_the_drain, fixture_close),
      cmocka_unit_test_teardown(test_dead_letter_counted_only_after_the_move, fixture_close),
      cmocka_unit_test_teardown(test_open_circuit_wakes_the_drain_for_its_probe, fixture_close),
      cmocka_unit_test_teardown(test_lost_scan_runs_off_the_loop, fixture_close),
      cmocka_unit_test_teardown(test_destroy_during_lost_scan, fixture_close),
      cmocka_unit_test_teardown(test_record_already_delivered_is_not_sent_again, fixture_close),
      cmocka_unit_test_teardown(test_spilling_until_answered, fixture_close),
      cmocka_unit_test_teardown(test_expired_record_dropped, fixture_close),
      cmocka_unit_test_teardown(test_expired_dead_letter_only_after_the_move, fixture_close),
      cmocka_unit_test_teardown(test_dead_store_restores_statuses_at_open, fixture_close),
      cmocka_unit_test_teardown(test_census_after_unclean_stop, fixture_close),
  };

  loop_thread = pthread_self();
  sl_log_set_level(SL_LOG_WARN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
