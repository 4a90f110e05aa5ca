/*
 * Tests of the HTTP/1 connection core (sluice/http1.h) with a dispatcher of their own: the
 * order of pipelined answers, an answer given later while the next request waits, the
 * refusals (malformed, a head's status, a timeout), keep-alive, a connection held past its
 * close, and a listener's shutdown and close. The proxy and the admin API are the core's
 * other dispatchers; their own tests and the end-to-end tests exercise them.
 *
 * Everything runs on the test's thread: the loop turns without blocking while a plain
 * non-blocking client socket waits for the server's bytes (pump), bounded by a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "sluice/http1.h"
#include "sluice/loop.h"
#include "sluice/util.h"

#define DEADLINE_MS 5000

struct fixture {
  uv_loop_t loop;
  struct sl_loop lp;
  struct sl_http1_listener *l;
  unsigned port;
  bool answer_later; /* start keeps the request in <waiting> instead of answering */
  bool hold;         /* accept holds the connection in <held> */
  struct sl_http1_conn *waiting, *held;
  int n_start, n_end, n_refuse, n_cancel, n_dispose;
  enum sl_http1_refusal why;
  unsigned status;
  bool empty, closed;
};

/* The test's dispatcher: answers "200" with the target as the body. */
static struct fixture *fixture_of(struct sl_http1_conn *c) {
  return sl_http1_listener_data(c->listener);
}

static void answer(struct sl_http1_conn *c) {
  const struct sl_http_msg *m = &c->parser.msg;
  char head[128];
  int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n%s\r\n",
                   (unsigned)m->target_len, c->keep_alive ? "" : "Connection: close\r\n");

  assert_int_equal(sl_http1_conn_write(c, head, (size_t)n), 0);
  assert_int_equal(sl_http1_conn_write(c, sl_http_msg_str(m, m->target_off), m->target_len), 0);
  sl_http1_conn_done(c);
}

static int on_accept(struct sl_http1_conn *c) {
  struct fixture *f = fixture_of(c);

  if (f->hold) {
    sl_http1_conn_hold(c);
    f->held = c;
  }
  return 0;
}

static int on_head(struct sl_http1_conn *c, struct sl_http_msg *m) {
  (void)c;
  return strncmp(sl_http_msg_str(m, m->target_off), "/404", 4) == 0 ? 404 : 0;
}

static void on_start(struct sl_http1_conn *c) {
  struct fixture *f = fixture_of(c);

  f->n_start++;
  if (f->answer_later)
    f->waiting = c;
  else
    answer(c);
}

static void on_refuse(struct sl_http1_conn *c, enum sl_http1_refusal why, unsigned status) {
  struct fixture *f = fixture_of(c);
  char head[128];
  int n = snprintf(head, sizeof(head), "HTTP/1.1 %u X\r\nContent-Length: 0\r\n%s\r\n", status,
                   c->keep_alive ? "" : "Connection: close\r\n");

  f->n_refuse++;
  f->why = why;
  f->status = status;
  assert_int_equal(sl_http1_conn_write(c, head, (size_t)n), 0);
  sl_http1_conn_done(c);
}

static void on_end(struct sl_http1_conn *c) { fixture_of(c)->n_end++; }
static void on_cancel(struct sl_http1_conn *c) { fixture_of(c)->n_cancel++; }
static void on_dispose(struct sl_http1_conn *c) { fixture_of(c)->n_dispose++; }

static const struct sl_http1_handler handler = {
    .accept = on_accept,
    .head = on_head,
    .start = on_start,
    .refuse = on_refuse,
    .end = on_end,
    .cancel = on_cancel,
    .dispose = on_dispose,
};

static const struct sl_http1_settings settings = {
    .log_prefix = "test ",
    .conn_size = sizeof(struct sl_http1_conn),
    .handler = &handler,
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof(*f));
  struct sl_http1_limits lim = {
      .max_header_bytes = 8192,
      .max_body_bytes = 65536,
      .accept_timeout_ms = 2000,
      .header_timeout_ms = 100, /* short: the timeout test waits for it */
      .body_timeout_ms = 2000,
      .idle_timeout_ms = 2000,
  };
  struct sockaddr_in sa;
  char addr[80];

  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  sl_loop_init(&f->lp, &f->loop);
  f->l = sl_http1_listener_create(&f->lp, &settings, &lim, f);
  assert_non_null(f->l);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(
      sl_http1_listener_start(f->l, (struct sockaddr *)&sa, 16, addr, sizeof(addr), &f->port), 0);
  assert_true(f->port > 0);
  *state = f;
  return 0;
}

/* Turns the loop until <done>(<f>) or the deadline; fails at the deadline. */
static void pump(struct fixture *f, bool (*done)(struct fixture *f)) {
  for (int i = 0; i < DEADLINE_MS; i++) {
    if (done(f))
      return;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    poll(NULL, 0, 1);
  }
  fail_msg("deadline passed");
}

static void on_closed(void *arg) { ((struct fixture *)arg)->closed = true; }
static bool is_closed(struct fixture *f) { return f->closed; }

static int teardown(void **state) {
  struct fixture *f = *state;

  sl_http1_listener_close(f->l, on_closed, f);
  pump(f, is_closed); /* which is once every connection was freed */
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

static int client(struct fixture *f) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

static void client_send(int fd, const char *s) {
  assert_int_equal(send(fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

/*
 * Turns the loop and reads from <fd> into <buf> (<len> bytes, NUL-terminated) until it holds
 * <want> (not NULL) or the server closed (<want> NULL). Returns the bytes read.
 */
static size_t client_read(struct fixture *f, int fd, char *buf, size_t len, const char *want) {
  size_t n = 0;

  buf[0] = '\0';
  for (int i = 0; i < DEADLINE_MS; i++) {
    ssize_t r = recv(fd, buf + n, len - 1 - n, MSG_DONTWAIT);

    if (r > 0) {
      n += (size_t)r;
      buf[n] = '\0';
    }
    if ((want != NULL && strstr(buf, want) != NULL) || (want == NULL && r == 0))
      return n;
    assert_true(r >= 0 || errno == EAGAIN || errno == EWOULDBLOCK);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    poll(NULL, 0, 1);
  }
  fail_msg("deadline passed; read so far: %s", buf);
  return n;
}

static void test_pipelined_answers_in_order(void **state) {
  struct fixture *f = *state;
  int fd = client(f);
  char buf[1024];

  client_send(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /bb HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(f, fd, buf, sizeof(buf), "\r\n\r\n/bb");
  assert_non_null(strstr(buf, "\r\n\r\n/aHTTP/1.1 200"));
  assert_int_equal(f->n_start, 2);
  assert_int_equal(f->n_end, 2);
  close(fd);
}

static bool started_one(struct fixture *f) { return f->n_start == 1; }
static bool started_two(struct fixture *f) { return f->n_start == 2; }

/* An answer given later: the pipelined request behind it waits, then is answered after it. */
static void test_answer_later_holds_next(void **state) {
  struct fixture *f = *state;
  int fd = client(f);
  char buf[1024];

  f->answer_later = true;
  client_send(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /bb HTTP/1.1\r\nHost: x\r\n\r\n");
  pump(f, started_one);
  for (int i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->n_start, 1);
  assert_int_equal(f->waiting->state, SL_HTTP1_ANSWERING);
  answer(f->waiting);
  pump(f, started_two);
  answer(f->waiting);
  client_read(f, fd, buf, sizeof(buf), "\r\n\r\n/bb");
  assert_non_null(strstr(buf, "\r\n\r\n/aHTTP/1.1 200"));
  close(fd);
}

/* A malformed request (no Host) is refused with the parser's status, and the connection
 * closes after the answer. */
static void test_malformed_refused_and_closed(void **state) {
  struct fixture *f = *state;
  int fd = client(f);
  char buf[1024];

  client_send(fd, "GET /a HTTP/1.1\r\n\r\n");
  client_read(f, fd, buf, sizeof(buf), NULL);
  assert_non_null(strstr(buf, "HTTP/1.1 400 X\r\n"));
  assert_non_null(strstr(buf, "Connection: close\r\n"));
  assert_int_equal(f->why, SL_HTTP1_MALFORMED);
  assert_int_equal(f->n_start, 0);
  assert_int_equal(f->n_end, 1);
  close(fd);
}

/* A status from the head: the body is read and dropped, the answer goes out and the
 * connection stays open for the next request. */
static void test_head_status_keeps_connection(void **state) {
  struct fixture *f = *state;
  int fd = client(f);
  char buf[1024];

  client_send(fd, "POST /404 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(f, fd, buf, sizeof(buf), "\r\n\r\n/a");
  assert_non_null(strstr(buf, "HTTP/1.1 404 X\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200"));
  assert_int_equal(f->why, SL_HTTP1_REFUSED);
  assert_int_equal(f->status, 404);
  assert_int_equal(f->n_start, 1);
  assert_int_equal(f->n_end, 2);
  close(fd);
}

/* A head that does not come in time: 408, and closed. */
static void test_head_timeout(void **state) {
  struct fixture *f = *state;
  int fd = client(f);
  char buf[1024];

  client_send(fd, "GET /a HTTP/1.1\r\nHo");
  client_read(f, fd, buf, sizeof(buf), NULL);
  assert_non_null(strstr(buf, "HTTP/1.1 408 X\r\n"));
  assert_int_equal(f->why, SL_HTTP1_TIMEOUT);
  close(fd);
}

static bool cancelled(struct fixture *f) { return f->n_cancel == 1; }
static bool disposed(struct fixture *f) { return f->n_dispose == 1; }

/* A connection held by its dispatcher outlives its close until released. */
static void test_hold_until_release(void **state) {
  struct fixture *f = *state;
  int fd;

  f->hold = true;
  fd = client(f);
  close(fd);
  pump(f, cancelled);
  for (int i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->n_dispose, 0);
  assert_int_equal(f->held->state, SL_HTTP1_CLOSED);
  sl_http1_conn_release(f->held);
  assert_int_equal(f->n_dispose, 1);
  pump(f, disposed);
}

static void on_empty(struct sl_http1_listener *l, void *arg) {
  (void)l;
  ((struct fixture *)arg)->empty = true;
}

static bool is_empty(struct fixture *f) { return f->empty; }
static bool accepted_two(struct fixture *f) { return sl_http1_listener_conns(f->l) == 2; }

/* A graceful shutdown closes idle connections, and the busy one after its answer. */
static void test_shutdown(void **state) {
  struct fixture *f = *state;
  int idle = client(f), busy = client(f);
  char buf[1024];

  f->answer_later = true;
  client_send(busy, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  pump(f, accepted_two);
  pump(f, started_one);
  sl_http1_listener_shutdown(f->l, on_empty, f);
  assert_int_equal(sl_http1_listener_conns(f->l), 1);
  client_read(f, idle, buf, sizeof(buf), NULL);
  assert_string_equal(buf, "");
  answer(f->waiting);
  client_read(f, busy, buf, sizeof(buf), NULL); /* the answer, then the lingering close's FIN */
  assert_string_equal(buf, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n/a");
  assert_false(f->empty);
  close(busy);
  pump(f, is_empty);
  close(idle);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_pipelined_answers_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_answer_later_holds_next, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_refused_and_closed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_head_status_keeps_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(test_head_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hold_until_release, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
