/*
 * Unit tests for the admin listener (src/admin): the built-in /metrics,
 * /healthz and /readyz, protected routes and the bearer token, 404 and 405,
 * keep-alive and pipelining, malformed and oversized requests, reload of the
 * token, a handler that closes the server, answers deferred by their handler (given
 * later, in the handler itself, after the client left, after the wait ran out, or never
 * because the server closed), and the web console's files (/ui).
 *
 * Each test runs the admin server in a libuv loop on a second thread and
 * talks to it from the test's thread over real loopback TCP with blocking
 * sockets, so that cmocka's asserts stay on the thread that runs the test.
 * Calls into the server (set_ready, set_config, close) go through a
 * uv_async_t to the loop thread. Time is bounded twice: a loop timer shuts
 * the server down after 5 s and marks the test failed, and every client
 * socket has a 5 s receive timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include "admin/admin_int.h"
#include "sluice/admin.h"
#include "sluice/config.h"
#include "sluice/metrics.h"

#define DEADLINE_MS 5000

#define UPSTREAMS_AND_ROUTES                                                                       \
  "upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; } );\n"                             \
  "routes = ( { prefix = \"/\"; upstream = \"a\"; } );\n"

static const char config_with_token[] =
    "admin = { listen = \"127.0.0.1:0\"; token = \"s3cret\"; };\n" UPSTREAMS_AND_ROUTES;

struct fixture;
typedef void (*loop_fn)(struct fixture *fx, void *arg);

struct fixture {
  uv_loop_t loop;
  struct sl_loop lp; /* its context: the read buffer */
  uv_thread_t thread;
  uv_timer_t deadline;
  uv_async_t call;
  uv_sem_t call_done;
  loop_fn call_fn;
  void *call_arg;
  struct sl_config *cfg;
  struct sl_metrics *reg;
  struct sl_admin *admin;
  unsigned port;
  bool timed_out;
  bool closed;
  char log[512];                      /* what sl_admin_start() logged */
  struct sl_admin_deferred *deferred; /* the answer deferring_handler put off */
};

static struct sl_config *load_config(const char *text) {
  struct sl_config *cfg = NULL;
  char err[256];

  if (sl_config_load_string(text, "admin-test.conf", &cfg, err, sizeof(err)) != 0)
    fail_msg("config: %s", err);
  return cfg;
}

/* ---- the loop thread ---- */

static void on_admin_closed(void *arg) {
  struct fixture *fx = arg;

  fx->closed = true;
}

static void shutdown_loop(struct fixture *fx) {
  sl_admin_close(fx->admin, on_admin_closed, fx);
  fx->admin = NULL;
  if (fx->deferred != NULL) { /* its owner must answer it whatever happened: nothing is sent */
    sl_admin_deferred_answer(fx->deferred);
    fx->deferred = NULL;
  }
  uv_close((uv_handle_t *)&fx->deadline, NULL);
  uv_close((uv_handle_t *)&fx->call, NULL);
}

static void on_deadline(uv_timer_t *t) {
  struct fixture *fx = t->data;

  fx->timed_out = true;
  shutdown_loop(fx);
}

static void on_call(uv_async_t *a) {
  struct fixture *fx = a->data;

  if (fx->call_fn != NULL)
    fx->call_fn(fx, fx->call_arg);
  fx->call_fn = NULL;
  uv_sem_post(&fx->call_done);
}

static void loop_thread(void *arg) {
  struct fixture *fx = arg;

  uv_run(&fx->loop, UV_RUN_DEFAULT);
}

/* Runs <fn>(fx, <arg>) on the loop thread and waits until it has run. */
static void on_loop(struct fixture *fx, loop_fn fn, void *arg) {
  assert_false(fx->timed_out);
  fx->call_fn = fn;
  fx->call_arg = arg;
  assert_int_equal(uv_async_send(&fx->call), 0);
  uv_sem_wait(&fx->call_done);
}

static void do_shutdown(struct fixture *fx, void *arg) {
  (void)arg;
  shutdown_loop(fx);
}

/* ---- fixture ---- */

/* Starts the server with stderr sent to a file, to check what it logs. */
static void start_capturing_log(struct fixture *fx) {
  FILE *tmp = tmpfile();
  int saved = dup(2);
  ssize_t n;

  assert_non_null(tmp);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fileno(tmp), 2), 2);
  assert_int_equal(sl_admin_start(fx->admin), 0);
  assert_int_equal(dup2(saved, 2), 2);
  close(saved);
  n = pread(fileno(tmp), fx->log, sizeof(fx->log) - 1, 0);
  fx->log[n > 0 ? n : 0] = '\0';
  fclose(tmp);
}

/* Sets up a running server for <config_text>; <timeout_ms>, when not 0,
 * replaces the request and idle timeouts. */
static int setup_with(void **state, const char *config_text, uint64_t timeout_ms) {
  static const char *const labels[] = {"upstream", NULL};
  struct fixture *fx = calloc(1, sizeof(*fx));
  struct sl_metric_family *f;

  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  sl_loop_init(&fx->lp, &fx->loop);
  fx->cfg = load_config(config_text);
  fx->reg = sl_metrics_create();
  f = sl_metrics_family(fx->reg, SL_METRIC_COUNTER, "sluice_requests_total", "Requests.", labels);
  sl_metrics_add(sl_metrics_series(f, (const char *[]){"orders"}), 3);
  fx->admin = sl_admin_create(&fx->lp, fx->cfg, fx->reg);
  assert_non_null(fx->admin);
  if (timeout_ms != 0)
    fx->admin->timeout_ms = fx->admin->idle_timeout_ms = timeout_ms;
  start_capturing_log(fx);
  fx->port = sl_admin_port(fx->admin);
  assert_true(fx->port > 0);

  uv_timer_init(&fx->loop, &fx->deadline);
  fx->deadline.data = fx;
  uv_timer_start(&fx->deadline, on_deadline, DEADLINE_MS, 0);
  uv_async_init(&fx->loop, &fx->call, on_call);
  fx->call.data = fx;
  assert_int_equal(uv_sem_init(&fx->call_done, 0), 0);
  assert_int_equal(uv_thread_create(&fx->thread, loop_thread, fx), 0);
  *state = fx;
  return 0;
}

static int setup(void **state) { return setup_with(state, config_with_token, 0); }
static int setup_short_timeouts(void **state) { return setup_with(state, config_with_token, 200); }

static int teardown(void **state) {
  struct fixture *fx = *state;
  bool timed_out = fx->timed_out;

  if (!timed_out)
    on_loop(fx, do_shutdown, NULL);
  uv_thread_join(&fx->thread);
  assert_true(fx->closed);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  uv_sem_destroy(&fx->call_done);
  sl_config_unref(fx->cfg);
  sl_metrics_destroy(fx->reg);
  free(fx);
  if (timed_out)
    fail_msg("test ran into the %d ms deadline", DEADLINE_MS);
  return 0;
}

/* ---- a blocking HTTP client ---- */

struct client {
  int fd;
  char buf[64 * 1024];
  size_t len; /* bytes read and not yet returned */
};

struct response {
  int status;
  char head[4096]; /* status line and headers, NUL-terminated */
  char *body;      /* NUL-terminated; free() it */
  size_t body_len;
};

static void client_open(struct client *c, const struct fixture *fx) {
  struct sockaddr_in sin;
  struct timeval tv = {.tv_sec = DEADLINE_MS / 1000};

  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)fx->port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->len = 0;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(c->fd >= 0);
  assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  assert_int_equal(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
}

static void client_close(struct client *c) {
  close(c->fd);
  c->fd = -1;
}

static void client_send(struct client *c, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    assert_true(n > 0);
    data += n;
    len -= (size_t)n;
  }
}

static void client_send_str(struct client *c, const char *s) { client_send(c, s, strlen(s)); }

/* Reads more into the buffer; returns the bytes read, 0 at EOF. */
static size_t client_fill(struct client *c) {
  ssize_t n;

  assert_true(c->len < sizeof(c->buf));
  n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
  if (n < 0)
    fail_msg("recv: %s", strerror(errno));
  c->len += (size_t)n;
  return (size_t)n;
}

/* Value of header <name> in <r>'s head, copied into <out>; false if absent. */
static bool header(const struct response *r, const char *name, char *out, size_t outlen) {
  char pat[128];
  const char *p, *end;

  snprintf(pat, sizeof(pat), "\r\n%s: ", name);
  p = strcasestr(r->head, pat);
  if (p == NULL)
    return false;
  p += strlen(pat);
  end = strstr(p, "\r\n");
  snprintf(out, outlen, "%.*s", (int)(end - p), p);
  return true;
}

/* Reads one response; <head_only> for the answer to a HEAD request. */
static void client_read(struct client *c, struct response *r, bool head_only) {
  char *end;
  char cl[32];
  size_t head_len, body_len = 0;

  while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
    if (client_fill(c) == 0)
      fail_msg("EOF before a complete response head");
  }
  head_len = (size_t)(end - c->buf) + 4;
  assert_true(head_len < sizeof(r->head));
  memcpy(r->head, c->buf, head_len);
  r->head[head_len] = '\0';
  assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
  if (!head_only) {
    assert_true(header(r, "Content-Length", cl, sizeof(cl)));
    body_len = strtoul(cl, NULL, 10);
  }
  while (c->len < head_len + body_len) {
    if (client_fill(c) == 0)
      fail_msg("EOF before a complete response body");
  }
  r->body = malloc(body_len + 1);
  memcpy(r->body, c->buf + head_len, body_len);
  r->body[body_len] = '\0';
  r->body_len = body_len;
  memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
  c->len -= head_len + body_len;
}

/* Asserts that the server closes the connection with nothing more sent. */
static void client_expect_eof(struct client *c) {
  assert_int_equal(c->len, 0);
  assert_int_equal(client_fill(c), 0);
}

/* One request on a new connection; returns the response. */
static void request(struct fixture *fx, const char *req, struct response *r) {
  struct client c;

  client_open(&c, fx);
  client_send_str(&c, req);
  client_read(&c, r, strncmp(req, "HEAD ", 5) == 0);
  client_close(&c);
}

static void assert_header(const struct response *r, const char *name, const char *want) {
  char got[256];

  if (!header(r, name, got, sizeof(got)))
    fail_msg("no %s header in\n%s", name, r->head);
  assert_string_equal(got, want);
}

/* One request on a new connection, which must answer <status> and, when <name> is not NULL,
 * header <name> with value <want>; the body is dropped. */
static void assert_answer(struct fixture *fx, const char *req, int status, const char *name,
                          const char *want) {
  struct response r;

  request(fx, req, &r);
  free(r.body);
  if (r.status != status)
    fail_msg("%s: status %d, not %d", req, r.status, status);
  if (name != NULL)
    assert_header(&r, name, want);
}

/* ---- tests ---- */

static void test_start_logs_real_port(void **state) {
  struct fixture *fx = *state;
  char want[64];

  snprintf(want, sizeof(want), "admin listening on 127.0.0.1:%u\n", fx->port);
  if (strstr(fx->log, want) == NULL)
    fail_msg("log does not say \"%s\":\n%s", want, fx->log);
}

static void test_metrics(void **state) {
  struct fixture *fx = *state;
  struct response r;

  request(fx, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  assert_string_equal(r.body, "# HELP sluice_requests_total Requests.\n"
                              "# TYPE sluice_requests_total counter\n"
                              "sluice_requests_total{upstream=\"orders\"} 3\n");
  free(r.body);
  /* Never behind the token, and neither are the health checks. */
  assert_null(strstr(r.head, "WWW-Authenticate"));
}

static void test_healthz(void **state) {
  struct fixture *fx = *state;
  struct response r;

  request(fx, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "ok\n");
  free(r.body);
  request(fx, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_header(&r, "Content-Length", "3");
  assert_int_equal(r.body_len, 0);
  free(r.body);
}

struct ready_args {
  bool ready;
  const char *reason;
};

static void do_set_ready(struct fixture *fx, void *arg) {
  struct ready_args *a = arg;

  sl_admin_set_ready(fx->admin, a->ready, a->reason);
}

static void test_readyz_toggle(void **state) {
  struct fixture *fx = *state;
  struct ready_args not_ready = {false, "shutting down"}, ready = {true, NULL};
  struct ready_args no_reason = {false, NULL};
  struct response r;

  request(fx, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "ready\n");
  free(r.body);

  on_loop(fx, do_set_ready, &not_ready);
  request(fx, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 503);
  assert_string_equal(r.body, "shutting down\n");
  free(r.body);

  on_loop(fx, do_set_ready, &no_reason);
  request(fx, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 503);
  assert_string_equal(r.body, "not ready\n");
  free(r.body);

  on_loop(fx, do_set_ready, &ready);
  request(fx, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "ready\n");
  free(r.body);
}

/* Echoes the request as JSON-ish text. */
static void echo_handler(const struct sl_admin_request *req, struct sl_admin_response *resp,
                         void *arg) {
  resp->content_type = "application/json";
  sl_admin_response_header(resp, "X-Arg", (const char *)arg);
  sl_buf_printf(&resp->body, "{\"method\":%u,\"path\":\"%s\",\"query\":\"%s\",\"body\":\"%s\"}",
                req->method, req->path, req->query, req->body);
  if (strlen(req->path) != req->path_len || strlen(req->query) != req->query_len ||
      strlen(req->body) != req->body_len)
    resp->status = 500;
}

struct route_args {
  unsigned methods;
  const char *path;
  unsigned flags;
  int result;
};

static void do_route(struct fixture *fx, void *arg) {
  struct route_args *a = arg;

  a->result = sl_admin_route(fx->admin, a->methods, a->path, a->flags, echo_handler, "tag");
}

static void add_route(struct fixture *fx, unsigned methods, const char *path, unsigned flags,
                      int want) {
  struct route_args a = {methods, path, flags, 1};

  on_loop(fx, do_route, &a);
  assert_int_equal(a.result, want);
}

static void do_set_config(struct fixture *fx, void *arg) {
  assert_int_equal(sl_admin_set_config(fx->admin, arg), 0);
}

static void test_protected_route(void **state) {
  struct fixture *fx = *state;
  struct sl_config *cfg2;
  struct response r;
  char want[128];

  add_route(fx, SL_METHOD_GET | SL_METHOD_POST, "/admin/spool/", SL_ADMIN_PROTECTED, 0);

  /* No token. */
  request(fx, "GET /admin/spool/orders HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 401);
  assert_header(&r, "WWW-Authenticate", "Bearer");
  assert_header(&r, "Content-Type", "application/json");
  assert_string_equal(r.body, "{\"error\":\"missing bearer token\"}\n");
  free(r.body);

  /* Wrong tokens: another value, a prefix, a longer one, another scheme. */
  static const char *const wrong[] = {"Bearer nope",    "Bearer s3cre", "Bearer s3cret!",
                                      "Basic czNjcmV0", "Bearer",       "s3cret"};
  for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
    char req[256];
    snprintf(req, sizeof(req),
             "GET /admin/spool/orders HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n", wrong[i]);
    request(fx, req, &r);
    assert_int_equal(r.status, 401);
    assert_header(&r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    assert_string_equal(r.body, "{\"error\":\"invalid bearer token\"}\n");
    free(r.body);
  }

  /* The right one, with a query and a body. */
  request(fx,
          "POST /admin/spool/orders?limit=5 HTTP/1.1\r\nHost: x\r\n"
          "Authorization: bearer s3cret\r\nContent-Length: 5\r\n\r\nhello",
          &r);
  assert_int_equal(r.status, 200);
  assert_header(&r, "X-Arg", "tag");
  snprintf(want, sizeof(want),
           "{\"method\":%u,\"path\":\"/admin/spool/orders\",\"query\":\"limit=5\","
           "\"body\":\"hello\"}",
           (unsigned)SL_METHOD_POST);
  assert_string_equal(r.body, want);
  free(r.body);

  /* A reload changes the token at once; an empty one opens the route. */
  cfg2 = load_config(
      "admin = { listen = \"127.0.0.1:0\"; token = \"other\"; };\n" UPSTREAMS_AND_ROUTES);
  on_loop(fx, do_set_config, cfg2);
  sl_config_unref(cfg2); /* the server keeps copies, not the config */
  request(fx, "GET /admin/spool/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n", &r);
  assert_int_equal(r.status, 401);
  free(r.body);
  request(fx, "GET /admin/spool/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer other\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  free(r.body);
  cfg2 = load_config(UPSTREAMS_AND_ROUTES);
  on_loop(fx, do_set_config, cfg2);
  sl_config_unref(cfg2);
  request(fx, "GET /admin/spool/x HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  free(r.body);
}

/* A state-changing request from a page of another site (its Origin is not the listener's
 * own) is refused even with no token set; GET, same-origin POSTs (the console) and tools
 * that send no Origin go through. */
static void test_cross_origin(void **state) {
  struct fixture *fx = *state;
  struct response r;

  add_route(fx, SL_METHOD_GET | SL_METHOD_POST, "/go", 0, 0);
  request(fx,
          "POST /go HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nOrigin: http://evil.example\r\n"
          "Content-Length: 0\r\n\r\n",
          &r);
  assert_int_equal(r.status, 403);
  assert_non_null(strstr(r.body, "cross-origin request refused"));
  free(r.body);
  /* The same host on another port, or https, is another origin. */
  assert_answer(fx,
                "POST /go HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nOrigin: http://127.0.0.1:9465\r\n"
                "Content-Length: 0\r\n\r\n",
                403, NULL, NULL);
  assert_answer(fx,
                "POST /go HTTP/1.1\r\nHost: 127.0.0.1:9464\r\n"
                "Origin: https://127.0.0.1:9464\r\nContent-Length: 0\r\n\r\n",
                403, NULL, NULL);
  assert_answer(fx,
                "POST /go HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nOrigin: null\r\n"
                "Content-Length: 0\r\n\r\n",
                403, NULL, NULL);
  assert_answer(fx,
                "POST /go HTTP/1.1\r\nHost: 127.0.0.1:9464\r\n"
                "Origin: http://127.0.0.1:9464\r\nContent-Length: 0\r\n\r\n",
                200, NULL, NULL);
  assert_answer(fx, "POST /go HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 200, NULL, NULL);
  assert_answer(fx, "GET /go HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\r\n", 200, NULL,
                NULL);
}

static void test_not_found_and_method(void **state) {
  struct fixture *fx = *state;
  struct response r;

  request(fx, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 404);
  assert_header(&r, "Content-Type", "application/json");
  assert_string_equal(r.body, "{\"error\":\"not found\"}\n");
  free(r.body);

  /* Exact paths: no match below them or with a longer name. */
  assert_answer(fx, "GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL, NULL);
  assert_answer(fx, "GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL, NULL);

  request(fx, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
  assert_int_equal(r.status, 405);
  assert_header(&r, "Allow", "GET, HEAD");
  assert_string_equal(r.body, "{\"error\":\"method not allowed\"}\n");
  free(r.body);

  /* Two routes on one path: both methods are allowed, the others listed. */
  add_route(fx, SL_METHOD_DELETE, "/admin/x", 0, 0);
  add_route(fx, SL_METHOD_PUT, "/admin/x", 0, 0);
  add_route(fx, SL_METHOD_PUT | SL_METHOD_GET, "/admin/x", 0, UV_EEXIST);
  add_route(fx, SL_METHOD_GET, "admin/y", 0, UV_EINVAL);
  add_route(fx, 0, "/admin/y", 0, UV_EINVAL);
  request(fx, "PUT /admin/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  free(r.body);
  request(fx, "GET /admin/x HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 405);
  assert_header(&r, "Allow", "PUT, DELETE");
  free(r.body);
}

/* GET / lists the endpoints (the built-in ones and those described by other modules), with
 * their methods; "/" is an exact path, not a prefix of every other one. */
static void do_describe(struct fixture *fx, void *arg) {
  (void)arg;
  assert_int_equal(sl_admin_describe(fx->admin, SL_METHOD_POST, "/admin/x/<name>/go",
                                     SL_ADMIN_PROTECTED, "makes \"x\" go"),
                   0);
}

static void test_index(void **state) {
  struct fixture *fx = *state;
  struct response r;

  on_loop(fx, do_describe, NULL);
  request(fx, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_header(&r, "Content-Type", "application/json");
  assert_non_null(strstr(r.body, "{\"path\":\"/metrics\",\"methods\":[\"GET\",\"HEAD\"],"
                                 "\"token\":false,\"what\":\"Prometheus metrics\"}"));
  assert_non_null(strstr(r.body, "{\"path\":\"/admin/x/<name>/go\",\"methods\":[\"POST\"],"
                                 "\"token\":true,\"what\":\"makes \\\"x\\\" go\"}"));
  free(r.body);
  assert_answer(fx, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "Allow",
                "GET, HEAD");
  assert_answer(fx, "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL, NULL);
}

/* GET /ui and the files below it: the embedded bytes, each with its type, the console's
 * security headers, never behind the token; anything else below /ui/ is a 404. */
static void test_console(void **state) {
  struct fixture *fx = *state;
  struct response r;
  char req[256], type[128];
  bool page = false;

  request(fx, "GET /ui HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_header(&r, "Content-Type", "text/html; charset=utf-8");
  assert_header(&r, "Cache-Control", "no-store");
  assert_header(&r, "X-Content-Type-Options", "nosniff");
  assert_header(&r, "Referrer-Policy", "no-referrer");
  assert_true(header(&r, "Content-Security-Policy", type, sizeof(type)));
  assert_non_null(strstr(type, "default-src 'none'"));
  assert_non_null(strstr(r.head, "script-src 'self';"));
  assert_null(strstr(r.head, "unsafe-"));
  assert_non_null(strstr(r.body, "<script type=\"module\" src=\"ui/console.js\">"));
  free(r.body);

  assert_true(sl__admin_n_files >= 4);
  for (size_t i = 0; i < sl__admin_n_files; i++) {
    const struct sl__admin_file *f = &sl__admin_files[i];
    const char *dot = strrchr(f->name, '.');

    page |= strcmp(f->name, "console.html") == 0;
    snprintf(req, sizeof(req), "GET /ui/%s HTTP/1.1\r\nHost: x\r\n\r\n", f->name);
    request(fx, req, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, f->len);
    assert_memory_equal(r.body, f->data, f->len);
    assert_true(header(&r, "Content-Type", type, sizeof(type)));
    /* Every file of the console has a type of its own: a new kind needs a line in console.c. */
    assert_non_null(dot);
    assert_string_not_equal(type, "application/octet-stream");
    if (strcmp(dot, ".js") == 0)
      assert_string_equal(type, "text/javascript; charset=utf-8"); /* modules need it */
    assert_true(header(&r, "Content-Security-Policy", type, sizeof(type)));
    free(r.body);
  }
  assert_true(page);

  request(fx, "HEAD /ui/console.js HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  free(r.body);
  assert_answer(fx, "GET /ui/ HTTP/1.1\r\nHost: x\r\n\r\n", 308, "Location", "../ui");
  request(fx, "GET /ui/nope.js HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 404);
  assert_string_equal(r.body, "{\"error\":\"no such console file\"}\n");
  free(r.body);
  assert_answer(fx, "GET /ui/../metrics HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL, NULL);
  assert_answer(fx, "GET /ui/console.js/x HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL, NULL);
  assert_answer(fx, "GET /uix HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL, NULL);
  assert_answer(fx, "POST /ui HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "Allow",
                "GET, HEAD");
  request(fx, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_non_null(strstr(r.body, "{\"path\":\"/ui\",\"methods\":[\"GET\",\"HEAD\"],"
                                 "\"token\":false,"));
  free(r.body);
}

static void test_keep_alive(void **state) {
  struct fixture *fx = *state;
  struct client c;
  struct response r;

  client_open(&c, fx);
  /* Two requests one after the other on one connection. */
  client_send_str(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(&c, &r, false);
  assert_int_equal(r.status, 200);
  assert_null(strstr(r.head, "Connection: close"));
  free(r.body);
  client_send_str(&c, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(&c, &r, false);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "ready\n");
  free(r.body);

  /* Three pipelined in one write, answered in order; the last one closes. */
  client_send_str(&c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                      "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  client_read(&c, &r, false);
  assert_int_equal(r.status, 404);
  free(r.body);
  client_read(&c, &r, true);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  free(r.body);
  client_read(&c, &r, false);
  assert_int_equal(r.status, 200);
  assert_header(&r, "Connection", "close");
  assert_non_null(strstr(r.body, "sluice_requests_total"));
  free(r.body);
  client_expect_eof(&c);
  client_close(&c);

  /* HTTP/1.0: closed after the response unless asked to keep it. */
  client_open(&c, fx);
  client_send_str(&c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  client_read(&c, &r, false);
  assert_header(&r, "Connection", "keep-alive");
  free(r.body);
  client_send_str(&c, "GET /healthz HTTP/1.0\r\n\r\n");
  client_read(&c, &r, false);
  assert_int_equal(r.status, 200);
  assert_header(&r, "Connection", "close");
  free(r.body);
  client_expect_eof(&c);
  client_close(&c);
}

/* Sends <req> (<len> bytes) and expects <status>, a JSON error and a close. */
static void expect_error_close_n(struct fixture *fx, const char *req, size_t len, int status) {
  struct client c;
  struct response r;

  client_open(&c, fx);
  client_send(&c, req, len);
  client_read(&c, &r, false);
  assert_int_equal(r.status, status);
  assert_header(&r, "Connection", "close");
  assert_header(&r, "Content-Type", "application/json");
  assert_true(strncmp(r.body, "{\"error\":\"", 10) == 0);
  free(r.body);
  client_expect_eof(&c);
  client_close(&c);
}

static void expect_error_close(struct fixture *fx, const char *req, int status) {
  expect_error_close_n(fx, req, strlen(req), status);
}

static void test_malformed(void **state) {
  static const char big_head[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ";
  struct fixture *fx = *state;
  char *req;
  size_t n;

  expect_error_close(fx, "GARBAGE\r\n\r\n", 400);
  expect_error_close(fx, "GET /healthz HTTP/1.1\nHost: x\n\n", 400); /* bare LF */
  expect_error_close(fx, "GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400);
  expect_error_close(fx, "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505);
  expect_error_close(fx, "POST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413);

  /* A head over 16 KiB. */
  n = strlen(big_head);
  req = malloc(n + 20000);
  memcpy(req, big_head, n);
  memset(req + n, 'a', 20000);
  expect_error_close_n(fx, req, n + 20000, 431);
  free(req);

  /* The server is still fine. */
  struct response r;
  request(fx, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
  assert_int_equal(r.status, 200);
  free(r.body);
}

static void test_timeouts(void **state) {
  struct fixture *fx = *state;
  struct client c;
  struct response r;
  uint64_t t0;

  /* A head that never ends, and a body that never comes: 408, closed. */
  expect_error_close(fx, "GET /healthz HTTP/1.1\r\nHo", 408);
  expect_error_close(fx, "PUT /admin/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 408);

  /* An idle connection is closed without a word, after the idle timeout. */
  t0 = uv_hrtime();
  client_open(&c, fx);
  client_expect_eof(&c);
  client_close(&c);
  assert_true(uv_hrtime() - t0 >= 150 * 1000000ull);

  /* Between requests too. */
  client_open(&c, fx);
  client_send_str(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(&c, &r, false);
  assert_int_equal(r.status, 200);
  free(r.body);
  client_expect_eof(&c);
  client_close(&c);
}

static void test_expect_continue(void **state) {
  struct fixture *fx = *state;
  struct client c;
  struct response r;

  add_route(fx, SL_METHOD_POST, "/echo", 0, 0);
  client_open(&c, fx);
  client_send_str(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                      "Content-Length: 5\r\n\r\n");
  client_read(&c, &r, true);
  assert_int_equal(r.status, 100);
  free(r.body);
  client_send_str(&c, "12345");
  client_read(&c, &r, false);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "\"body\":\"12345\""));
  free(r.body);
  client_close(&c);
}

static void test_max_connections(void **state) {
  struct fixture *fx = *state;
  struct client *c = calloc(SL_ADMIN_MAX_CONNS + 1, sizeof(*c));
  struct response r;

  assert_non_null(c);
  for (int i = 0; i <= SL_ADMIN_MAX_CONNS; i++)
    client_open(&c[i], fx);
  /* The one over the limit is closed; the others are served. */
  client_expect_eof(&c[SL_ADMIN_MAX_CONNS]);
  client_send_str(&c[0], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(&c[0], &r, false);
  assert_int_equal(r.status, 200);
  free(r.body);
  for (int i = 0; i <= SL_ADMIN_MAX_CONNS; i++)
    client_close(&c[i]);
  free(c);
}

static void closing_handler(const struct sl_admin_request *req, struct sl_admin_response *resp,
                            void *arg) {
  struct fixture *fx = arg;

  (void)req;
  sl_buf_append_str(&resp->body, "bye\n");
  shutdown_loop(fx);
}

static void do_route_closing(struct fixture *fx, void *arg) {
  (void)arg;
  assert_int_equal(sl_admin_route(fx->admin, SL_METHOD_POST, "/quit", 0, closing_handler, fx), 0);
}

/* A handler may close the whole server; the connection just goes away. */
static void test_handler_closes_server(void **state) {
  struct fixture *fx = *state;
  struct client c, idle;

  on_loop(fx, do_route_closing, NULL);
  client_open(&idle, fx);
  client_open(&c, fx);
  client_send_str(&c, "POST /quit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(client_fill(&c), 0);
  assert_int_equal(client_fill(&idle), 0);
  client_close(&c);
  client_close(&idle);
  uv_thread_join(&fx->thread);
  assert_true(fx->closed);
  /* The loop has ended: teardown must not call into it. */
  fx->timed_out = false;
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  uv_sem_destroy(&fx->call_done);
  sl_config_unref(fx->cfg);
  sl_metrics_destroy(fx->reg);
  free(fx);
  *state = NULL;
}

/* POST /wait puts its answer off (into fx->deferred); POST /wait?now answers it at once,
 * from inside the handler. */
static void deferring_handler(const struct sl_admin_request *req, struct sl_admin_response *resp,
                              void *arg) {
  struct fixture *fx = arg;
  struct sl_admin_deferred *d = sl_admin_defer(resp);

  sl_buf_append_str(&resp->body, "not sent\n"); /* what the handler's own response says */
  if (strcmp(req->query, "now") == 0) {
    sl_buf_append_str(&sl_admin_deferred_response(d)->body, "now\n");
    sl_admin_deferred_answer(d);
    return;
  }
  fx->deferred = d;
}

static void do_route_deferring(struct fixture *fx, void *arg) {
  (void)arg;
  assert_int_equal(sl_admin_route(fx->admin, SL_METHOD_POST, "/wait", 0, deferring_handler, fx), 0);
}

static void do_peek(struct fixture *fx, void *arg) { *(bool *)arg = fx->deferred != NULL; }

/* Waits until the handler has deferred its answer. */
static void wait_deferred(struct fixture *fx) {
  for (int i = 0; i < 200; i++) {
    bool deferred;

    on_loop(fx, do_peek, &deferred);
    if (deferred)
      return;
    usleep(10 * 1000);
  }
  fail_msg("the handler never deferred its answer");
}

/* Answers the deferred request (the handler has deferred it). */
static void do_answer(struct fixture *fx, void *arg) {
  struct sl_admin_response *resp = sl_admin_deferred_response(fx->deferred);

  (void)arg;
  resp->status = 201;
  resp->content_type = "application/json";
  sl_buf_append_str(&resp->body, "{\"later\":true}\n");
  sl_admin_deferred_answer(fx->deferred);
  fx->deferred = NULL;
}

/* Answers the deferred request once its handler has run. */
static void answer_when_deferred(struct fixture *fx) {
  wait_deferred(fx);
  on_loop(fx, do_answer, NULL);
}

/* Reads the next response on <c> and checks its <status> and <body>. */
static void read_expect(struct client *c, int status, const char *body) {
  struct response r;

  client_read(c, &r, false);
  assert_int_equal(r.status, status);
  if (strstr(r.body, body) == NULL)
    fail_msg("the %d answer does not say '%s': %s", status, body, r.body);
  free(r.body);
}

static void do_short_defer(struct fixture *fx, void *arg) {
  (void)arg;
  fx->admin->defer_timeout_ms = 200;
}

static void test_deferred(void **state) {
  static const char wait_req[] = "POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
  struct fixture *fx = *state;
  struct client c;
  char buf[16];

  on_loop(fx, do_route_deferring, NULL);

  /* Answered later: nothing comes until then; the connection goes on after it. */
  client_open(&c, fx);
  client_send_str(&c, wait_req);
  usleep(100 * 1000);
  assert_int_equal(recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
  answer_when_deferred(fx);
  read_expect(&c, 201, "{\"later\":true}\n");
  /* Answered by the handler itself, as it returns. */
  client_send_str(&c, "POST /wait?now HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  read_expect(&c, 200, "now\n");
  client_close(&c);

  /* The client leaves first: the answer is dropped (and freed). */
  client_open(&c, fx);
  client_send_str(&c, wait_req);
  usleep(50 * 1000);
  client_close(&c);
  usleep(50 * 1000);
  answer_when_deferred(fx);

  /* The wait runs out: 504, the connection goes on, the late answer is dropped. */
  on_loop(fx, do_short_defer, NULL);
  client_open(&c, fx);
  client_send_str(&c, wait_req);
  read_expect(&c, 504, "no answer in time");
  answer_when_deferred(fx);
  client_send_str(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  read_expect(&c, 200, "ok\n");
  client_close(&c);

  /* The server closes while an answer is put off (its owner answers it then: teardown). */
  client_open(&c, fx);
  client_send_str(&c, wait_req);
  wait_deferred(fx);
  client_close(&c);
}

static int teardown_maybe(void **state) { return *state ? teardown(state) : 0; }

static void on_closed_flag(void *arg) { *(bool *)arg = true; }

static void test_bind_failure(void **state) {
  uv_loop_t loop;
  struct sl_loop lp; /* its context: the read buffer */
  struct sl_config *cfg =
      load_config("admin = { listen = \"192.0.2.1:1\"; };\n" UPSTREAMS_AND_ROUTES); /* not ours */
  struct sl_admin *a;
  bool closed = false;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  sl_loop_init(&lp, &loop);
  a = sl_admin_create(&lp, cfg, NULL);
  assert_non_null(a);
  assert_true(sl_admin_start(a) < 0);
  assert_int_equal(sl_admin_port(a), 0);
  sl_admin_close(a, on_closed_flag, &closed);
  sl_admin_close(NULL, NULL, NULL);
  sl_admin_destroy(NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(closed);
  assert_int_equal(uv_loop_close(&loop), 0);
  sl_config_unref(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_start_logs_real_port, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
      cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
      cmocka_unit_test_setup_teardown(test_readyz_toggle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_protected_route, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cross_origin, setup, teardown),
      cmocka_unit_test_setup_teardown(test_not_found_and_method, setup, teardown),
      cmocka_unit_test_setup_teardown(test_index, setup, teardown),
      cmocka_unit_test_setup_teardown(test_console, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup_short_timeouts, teardown),
      cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_connections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_handler_closes_server, setup, teardown_maybe),
      cmocka_unit_test_setup_teardown(test_deferred, setup, teardown),
      cmocka_unit_test(test_bind_failure),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
