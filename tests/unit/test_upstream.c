/*
 * Upstream unit tests: the exchange (include/sluice/exchange.h) over the pool,
 * against a backend on 127.0.0.1 that the test runs on the same loop.
 *
 * The regression of issue 9: a backend that answers before it has read the
 * request body ended the exchange while the body's write was pending, and the
 * connection was pooled and the body freed or reused. Here the answer comes
 * first and the backend holds off reading; the test checks that the bytes the
 * backend eventually reads are exactly the request, that the exchange had let
 * the pending write keep them (the caller's buffer is empty at the end), and
 * that the next exchange gets a new connection. Also: a refused connect says
 * nothing was sent, leaves the request intact and takes little time; an
 * exchange destroyed while its write is pending frees nothing under it.
 *
 * A watchdog timer (unreferenced) fails a test whose loop would not end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/exchange.h"
#include "sluice/upstream.h"

#define BODY_BYTES (8u << 20) /* far more than the socket buffers take at once */
#define HOLD_MS 50

/* ---- the backend ---------------------------------------------------------------------- */

struct backend;

struct bconn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  struct backend *b;
  struct sl_buf in; /* every byte received */
  bool answered;
  bool eof;
  int open;
};

struct backend {
  uv_tcp_t listener;
  int port;
  bool answer;  /* answer "200 ok" as soon as a head is in */
  bool reading; /* read again HOLD_MS after answering (else: never again) */
  bool mute;    /* never read at all */
  bool stopped;
  unsigned accepts;
  struct bconn *conns[4];
};

static void bconn_closed(uv_handle_t *h) {
  struct bconn *bc = h->data;

  if (--bc->open == 0)
    bc->eof = true; /* kept for the checks: freed by backend_free() */
}

static void bconn_close(struct bconn *bc) {
  if (uv_is_closing((uv_handle_t *)&bc->tcp))
    return;
  uv_close((uv_handle_t *)&bc->tcp, bconn_closed);
  uv_close((uv_handle_t *)&bc->timer, bconn_closed);
}

static void b_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char mem[64 * 1024];

  (void)h;
  (void)suggested;
  buf->base = mem;
  buf->len = sizeof(mem);
}

static void b_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void b_resume(uv_timer_t *t) {
  struct bconn *bc = t->data;

  uv_read_start((uv_stream_t *)&bc->tcp, b_alloc, b_read);
}

static void b_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void b_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  struct bconn *bc = s->data;

  if (nread < 0) {
    bconn_close(bc);
    return;
  }
  assert_int_equal(sl_buf_append(&bc->in, buf->base, (size_t)nread), 0);
  if (!bc->b->answer || bc->answered || memmem(bc->in.base, bc->in.len, "\r\n\r\n", 4) == NULL)
    return;
  /* The head is in: answer now, before the body, and stop reading for a while. */
  uv_write_t *w = malloc(sizeof(*w));
  uv_buf_t b = uv_buf_init((char *)resp, sizeof(resp) - 1);

  assert_non_null(w);
  assert_int_equal(uv_write(w, s, &b, 1, b_written), 0);
  bc->answered = true;
  uv_read_stop(s);
  if (bc->b->reading)
    uv_timer_start(&bc->timer, b_resume, HOLD_MS, 0);
}

static void b_accept(uv_stream_t *server, int status) {
  struct backend *b = server->data;
  struct bconn *bc = calloc(1, sizeof(*bc));

  assert_int_equal(status, 0);
  assert_non_null(bc);
  assert_true(b->accepts < 4);
  b->conns[b->accepts++] = bc;
  bc->b = b;
  bc->open = 2;
  sl_buf_init(&bc->in);
  uv_tcp_init(server->loop, &bc->tcp);
  uv_timer_init(server->loop, &bc->timer);
  bc->tcp.data = bc;
  bc->timer.data = bc;
  assert_int_equal(uv_accept(server, (uv_stream_t *)&bc->tcp), 0);
  if (!b->mute)
    uv_read_start((uv_stream_t *)&bc->tcp, b_alloc, b_read);
}

static void backend_start(uv_loop_t *loop, struct backend *b, bool answer, bool reading) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  memset(b, 0, sizeof(*b));
  b->answer = answer;
  b->reading = reading;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(loop, &b->listener);
  b->listener.data = b;
  assert_int_equal(uv_tcp_bind(&b->listener, (const struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&b->listener, 16, b_accept), 0);
  uv_tcp_getsockname(&b->listener, (struct sockaddr *)&bound, &len);
  b->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

/* Stops listening. Connections close when their peer closes, or now with <conns>. */
static void backend_stop(struct backend *b, bool conns) {
  if (!b->stopped)
    uv_close((uv_handle_t *)&b->listener, NULL);
  b->stopped = true;
  for (unsigned i = 0; conns && i < b->accepts; i++)
    bconn_close(b->conns[i]);
}

static void backend_free(struct backend *b) {
  for (unsigned i = 0; i < b->accepts; i++) {
    sl_buf_dispose(&b->conns[i]->in);
    free(b->conns[i]);
  }
}

/* ---- the client side ------------------------------------------------------------------ */

struct fixture {
  uv_loop_t loop;
  struct sl_loop lp; /* its context: the read buffer */
  uv_timer_t watchdog;
  uv_timer_t poll; /* waits for the first backend connection to close, then cleans up */
  struct backend backend;
  struct sl_upstream_config cfg;
  struct sl_upstream *up;
  struct sl_upx *x;
  struct sl_buf head, body, expect;
  bool chain; /* the first end starts a GET on the same exchange object */
  unsigned ends;
  struct sl_upx_result res[2];
  unsigned status[2];
  size_t body_len_at_end[2];
};

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fail_msg("the loop did not finish in time");
}

static void fixture_init(struct fixture *f, int port) {
  struct sockaddr_in *sin = (struct sockaddr_in *)&f->cfg.address.sa;

  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  sl_loop_init(&f->lp, &f->loop);
  uv_timer_init(&f->loop, &f->watchdog);
  uv_timer_start(&f->watchdog, on_watchdog, 20000, 0);
  uv_unref((uv_handle_t *)&f->watchdog);
  f->cfg.name = "b";
  f->cfg.address.text = "127.0.0.1";
  uv_ip4_addr("127.0.0.1", port, sin);
  f->cfg.connect_timeout_ms = 2000;
  f->cfg.response_timeout_ms = 5000;
  f->cfg.keepalive = 4;
  sl_buf_init(&f->head);
  sl_buf_init(&f->body);
  sl_buf_init(&f->expect);
}

static void fixture_run(struct fixture *f) {
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&f->watchdog, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void fixture_free(struct fixture *f) {
  sl_buf_dispose(&f->head);
  sl_buf_dispose(&f->body);
  sl_buf_dispose(&f->expect);
  free(f);
}

/* A POST with a patterned body of <n> bytes in <f>'s head and body; <expect> gets both. */
static void make_post(struct fixture *f, size_t n) {
  sl_buf_reset(&f->head);
  sl_buf_reset(&f->body);
  assert_int_equal(
      sl_buf_printf(&f->head, "POST /x HTTP/1.1\r\nHost: b\r\nContent-Length: %zu\r\n\r\n", n), 0);
  assert_int_equal(sl_buf_reserve(&f->body, n), 0);
  for (size_t i = 0; i < n; i++)
    f->body.base[i] = (char)('a' + (i * 7 + i / 4096) % 26);
  f->body.len = n;
  assert_int_equal(sl_buf_append(&f->expect, f->head.base, f->head.len), 0);
  assert_int_equal(sl_buf_append(&f->expect, f->body.base, f->body.len), 0);
}

static void on_poll(uv_timer_t *t) {
  struct fixture *f = t->data;

  if (f->backend.accepts > 0 && !f->backend.conns[0]->eof)
    return;
  uv_close((uv_handle_t *)t, NULL);
  sl_upstream_destroy(f->up);
  f->up = NULL;
  backend_stop(&f->backend, false);
}

static void on_end(struct sl_upx *x, const struct sl_upx_result *res, void *user) {
  struct fixture *f = user;
  unsigned i = f->ends++;

  assert_true(i < 2);
  f->res[i] = *res;
  f->status[i] = res->error == 0 ? res->head->status : 0;
  f->res[i].head = NULL;
  f->body_len_at_end[i] = f->body.len;
  if (i == 0 && f->chain) {
    /* The next exchange, started from inside the end callback. */
    struct sl_upx_request req = {.method = HTTP_GET, .head = &f->head, .timeout_ms = 5000};

    sl_buf_reset(&f->head);
    assert_int_equal(sl_buf_append_str(&f->head, "GET /y HTTP/1.1\r\nHost: b\r\n\r\n"), 0);
    sl_upx_start(x, f->up, &req);
    return;
  }
  /* Done: destroyed from inside its own callback, as the replayer does. */
  sl_upx_destroy(x);
  f->x = NULL;
  /* Destroying the upstream would close a connection still writing (that is what a
   * shutdown does): first let the backend read the whole request. */
  uv_timer_init(&f->loop, &f->poll);
  f->poll.data = f;
  uv_timer_start(&f->poll, on_poll, 0, 10);
}

static const struct sl_upx_callbacks callbacks = {.on_end = on_end};

/* ---- tests ---------------------------------------------------------------------------- */

/* Issue 9: early answer, body write pending; then the next exchange. */
static void test_early_answer_keeps_bytes_and_connection_not_pooled(void **state) {
  struct fixture *f = malloc(sizeof(*f));
  struct backend *b;

  (void)state;
  assert_non_null(f);
  fixture_init(f, 0);
  b = &f->backend;
  backend_start(&f->loop, b, true, true);
  uv_ip4_addr("127.0.0.1", b->port, (struct sockaddr_in *)&f->cfg.address.sa);
  f->up = sl_upstream_create(&f->lp, &f->cfg);
  f->x = sl_upx_create(&callbacks, f);
  assert_non_null(f->up);
  assert_non_null(f->x);
  f->chain = true;
  make_post(f, BODY_BYTES);
  sl_upx_start(f->x, f->up,
               &(struct sl_upx_request){
                   .method = HTTP_POST, .head = &f->head, .body = &f->body, .timeout_ms = 5000});
  fixture_run(f);

  assert_int_equal(f->ends, 2);
  assert_int_equal(f->res[0].error, 0);
  assert_int_equal(f->status[0], 200);
  /* The answer came while the body was being written: the write kept the bytes. */
  assert_int_equal(f->body_len_at_end[0], 0);
  assert_int_equal(f->res[1].error, 0);
  assert_int_equal(f->status[1], 200);
  /* The first connection was not pooled: the GET came on a second one. */
  assert_int_equal(b->accepts, 2);
  /* ... and the backend read exactly the POST on the first, then saw it close. */
  assert_true(b->conns[0]->eof);
  assert_int_equal(b->conns[0]->in.len, f->expect.len);
  assert_memory_equal(b->conns[0]->in.base, f->expect.base, f->expect.len);
  assert_non_null(memmem(b->conns[1]->in.base, b->conns[1]->in.len, "GET /y ", 7));
  backend_free(b);
  fixture_free(f);
}

/* A refused connect: nothing sent, the request intact, the time of the attempt only. */
static void test_refused_connect_nothing_sent(void **state) {
  struct fixture *f = malloc(sizeof(*f));
  struct backend *b;
  int port;

  (void)state;
  assert_non_null(f);
  fixture_init(f, 0);
  b = &f->backend;
  backend_start(&f->loop, b, false, false);
  port = b->port;
  backend_stop(b, false); /* now nothing listens there */
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&f->cfg.address.sa);
  f->up = sl_upstream_create(&f->lp, &f->cfg);
  f->x = sl_upx_create(&callbacks, f);
  make_post(f, 1000);
  sl_upx_start(f->x, f->up,
               &(struct sl_upx_request){
                   .method = HTTP_POST, .head = &f->head, .body = &f->body, .timeout_ms = 5000});
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->ends, 1);
  assert_int_equal(f->res[0].error, UV_ECONNREFUSED);
  assert_true(f->res[0].nothing_sent);
  assert_false(f->res[0].response_started);
  assert_true(f->res[0].duration_ns < 1000000000ull);
  /* Intact, so that it may be queued instead. */
  assert_int_equal(f->body_len_at_end[0], 1000);
  assert_int_equal(f->head.len + f->body.len, f->expect.len);
  assert_memory_equal(f->body.base, f->expect.base + f->head.len, 1000);
  fixture_run(f);
  fixture_free(f);
}

static void on_destroy_timer(uv_timer_t *t) {
  struct fixture *f = t->data;

  if (f->body.len != 0)
    return; /* not connected yet: the write has not taken the bytes over */
  /* The body is being written to a backend that does not read. */
  sl_upx_destroy(f->x);
  f->x = NULL;
  assert_int_equal(f->head.len, 0); /* emptied too: the pending write owns the bytes */
  sl_buf_dispose(&f->head);
  sl_buf_dispose(&f->body);
  sl_upstream_destroy(f->up);
  f->up = NULL;
  backend_stop(&f->backend, true);
  uv_close((uv_handle_t *)t, NULL);
}

/* Destroyed with the write pending: the write's callback (cancelled) frees the
 * bytes, nothing earlier; ASan checks both halves. */
static void test_destroy_with_pending_write(void **state) {
  struct fixture *f = malloc(sizeof(*f));
  uv_timer_t t;

  (void)state;
  assert_non_null(f);
  fixture_init(f, 0);
  backend_start(&f->loop, &f->backend, false, false);
  f->backend.mute = true;
  uv_ip4_addr("127.0.0.1", f->backend.port, (struct sockaddr_in *)&f->cfg.address.sa);
  f->up = sl_upstream_create(&f->lp, &f->cfg);
  f->x = sl_upx_create(&callbacks, f);
  make_post(f, BODY_BYTES);
  sl_upx_start(f->x, f->up,
               &(struct sl_upx_request){
                   .method = HTTP_POST, .head = &f->head, .body = &f->body, .timeout_ms = 5000});
  uv_timer_init(&f->loop, &t);
  t.data = f;
  uv_timer_start(&t, on_destroy_timer, 5, 5);
  fixture_run(f);
  assert_int_equal(f->ends, 0);
  backend_free(&f->backend);
  fixture_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_early_answer_keeps_bytes_and_connection_not_pooled),
      cmocka_unit_test(test_refused_connect_nothing_sent),
      cmocka_unit_test(test_destroy_with_pending_write),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
