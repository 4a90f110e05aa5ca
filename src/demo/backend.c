/*
 * sluice-demo-backend: a deliberately slow HTTP/1.1 service for demos, tests and benchmarks.
 *
 * It simulates a service with a fixed number of workers: at most <capacity> requests are in
 * service at once, each for <service-time> (a uv timer, never a sleep); the rest wait in one
 * FIFO shared by all connections; beyond <queue> waiting it answers 503 at once. llhttp parses
 * keep-alive, pipelined (answered in order), HTTP/1.0, Content-Length and chunked requests.
 * The endpoints (see usage()) let tests provoke every backend behaviour a proxy must survive:
 * error statuses, chunked, close-delimited and truncated bodies, resets and stalls.
 *
 * Invariants: a connection's requests sit on its list in arrival order and are written only
 * from the head, so responses never overtake each other. A request is in exactly one state;
 * WAITING ones are also on the server FIFO and IN_SERVICE ones count in <in_service>. When a
 * connection goes away its unanswered requests are cancelled and give their place back (a
 * simplification: a real service would finish the work it had started).
 *
 * Threading: one thread, one uv loop. Handle memory is freed only in uv_close callbacks.
 */
#include "sluice/buf.h"
#include "sluice/http.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/units.h"

#include <llhttp.h>
#include <uv.h>

#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "sluice/util.h"

#define MAX_PIPELINE 64           /* pending requests per connection before reads pause */
#define MAX_LINE_BYTES 65536      /* request target, and all header lines together */
#define MAX_ECHO_BODY (8u << 20)  /* /echo returns at most this much of the body */
#define MAX_BIG_BODY (1ull << 30) /* largest /big/N */
#define FILL_SIZE 65536           /* /big bodies are views of one static pattern buffer */

enum req_state { REQ_PARSING, REQ_WAITING, REQ_IN_SERVICE, REQ_SLEEPING, REQ_READY };
enum req_kind {
  K_JSON,
  K_STATS,
  K_ECHO,
  K_CHUNK,
  K_CLOSE,
  K_TRUNC,
  K_RESET,
  K_SLEEP,
  K_BIG,
  K_ERROR
};

struct server {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint;
  llhttp_settings_t settings;
  uint64_t service_ms, requests;
  unsigned capacity, queue_max, in_service, waiting;
  bool verbose; /* a line per request; off by default, so that a demo burst stays readable */
  TAILQ_HEAD(, req) waiting_reqs; /* FIFO of WAITING requests of all connections */
};

struct conn {
  uv_tcp_t tcp;
  uv_shutdown_t shutdown;
  llhttp_t parser;
  struct server *srv;
  struct req *head, *tail, *parsing;
  unsigned npending;
  unsigned in_parse : 1, read_done : 1, read_paused : 1, closing : 1;
};

struct req {
  uv_timer_t timer; /* service or sleep timer; closed before the request is freed */
  struct conn *c;
  struct req *next;       /* next on the connection */
  TAILQ_ENTRY(req) wlink; /* on the server FIFO while WAITING */
  enum req_state state;
  enum req_kind kind;
  const char *method;
  int status, http_major, http_minor, keep_alive, close_after, in_field, demo_status,
      expect_continue;
  uint64_t seq, body_bytes, arg, fill_len; /* arg: MS of /sleep/MS or N of /big/N */
  size_t field_off, field_len;
  struct sl_buf target, head, body, resp; /* head: "Name: value\n" lines as received */
};

struct write_req {
  uv_write_t w;
  struct sl_buf data;
};

static char fill[FILL_SIZE];
/* One loop, and a request copies what it keeps during the read: one buffer serves all. */
static char read_buf[65536];

static void conn_flush(struct conn *c);
static void conn_close(struct conn *c);
static void build_response(struct req *r);
static void server_pump(struct server *s);

/* Parses the <len> bytes at <s> as a decimal number of at most <max> into <out>. Returns 0, or
 * -1 unless they are all digits. */
static int parse_num(const char *s, size_t len, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (len == 0 || len > 19)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v > max)
    return -1;
  *out = v;
  return 0;
}

/* Parses a status code <s> of <len> bytes into <r>; one that is not a final status is a 400. */
static void set_status(struct req *r, const char *s, size_t len) {
  uint64_t v;
  r->status = parse_num(s, len, 599, &v) == 0 && v >= 200 ? (int)v : 400;
}

/* ---- requests: admission, service timers, cancellation ---- */

/* Marks <r> answered; the connection writes it once everything before it is written. */
static void req_ready(struct req *r) {
  r->state = REQ_READY;
  if (!r->c->in_parse)
    conn_flush(r->c);
}

static void on_service_done(uv_timer_t *t) {
  struct req *r = t->data;
  r->c->srv->in_service--;
  server_pump(r->c->srv);
  build_response(r);
  req_ready(r);
}

static void on_sleep_done(uv_timer_t *t) {
  struct req *r = t->data;
  build_response(r);
  req_ready(r);
}

/* Moves waiting requests into service while there is a free slot. Call when one frees up. */
static void server_pump(struct server *s) {
  while (s->in_service < s->capacity && !TAILQ_EMPTY(&s->waiting_reqs)) {
    struct req *r = TAILQ_FIRST(&s->waiting_reqs);
    TAILQ_REMOVE(&s->waiting_reqs, r, wlink);
    s->waiting--;
    s->in_service++;
    r->state = REQ_IN_SERVICE;
    uv_timer_start(&r->timer, on_service_done, s->service_ms, 0);
  }
}

/* Routes the completely parsed <r>: answered now, after a sleep, or after service. */
static void req_dispatch(struct req *r) {
  struct server *s = r->c->srv;
  if (r->kind == K_STATS || r->kind == K_ERROR) {
    build_response(r);
    req_ready(r);
    return;
  }
  r->seq = ++s->requests;
  if (r->kind == K_SLEEP) {
    r->state = REQ_SLEEPING;
    uv_timer_start(&r->timer, on_sleep_done, r->arg, 0);
  } else if (s->in_service < s->capacity) {
    s->in_service++;
    r->state = REQ_IN_SERVICE;
    uv_timer_start(&r->timer, on_service_done, s->service_ms, 0);
  } else if (s->waiting < s->queue_max) {
    r->state = REQ_WAITING;
    TAILQ_INSERT_TAIL(&s->waiting_reqs, r, wlink);
    s->waiting++;
  } else {
    r->kind = K_JSON;
    r->status = 503;
    build_response(r);
    req_ready(r);
  }
}

/* Appends a new request to <c>. Returns it, or NULL when out of memory. */
static struct req *req_new(struct conn *c) {
  struct req *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  uv_timer_init(&c->srv->loop, &r->timer);
  r->timer.data = r;
  r->c = c;
  r->status = 200;
  sl_buf_init(&r->target);
  sl_buf_init(&r->head);
  sl_buf_init(&r->body);
  sl_buf_init(&r->resp);
  *(c->tail ? &c->tail->next : &c->head) = r;
  c->tail = r;
  c->npending++;
  return r;
}

static void on_req_closed(uv_handle_t *h) {
  struct req *r = h->data;
  sl_buf_dispose(&r->target);
  sl_buf_dispose(&r->head);
  sl_buf_dispose(&r->body);
  sl_buf_dispose(&r->resp);
  free(r);
}

/* Cancels <r> wherever it is, giving back its slot or FIFO place, and frees it. The caller
 * must have unlinked it from its connection and must call server_pump() afterwards. */
static void req_destroy(struct req *r) {
  struct server *s = r->c->srv;
  if (r->state == REQ_WAITING) {
    TAILQ_REMOVE(&s->waiting_reqs, r, wlink);
    s->waiting--;
  } else if (r->state == REQ_IN_SERVICE) {
    s->in_service--;
  }
  r->c->npending--;
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, on_req_closed);
}

/* ---- responses ---- */

/* Writes the status line and headers of <r> into <r->resp>. A negative <body_len> writes no
 * Content-Length: the body is chunked (<chunked>), close-delimited, or absent. */
static void put_head(struct req *r, const char *type, int64_t body_len, int chunked) {
  struct sl_buf *b = &r->resp;
  sl_buf_printf(b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", r->status,
                sl_http_reason((unsigned)r->status), type);
  if (body_len >= 0)
    sl_buf_printf(b, "Content-Length: %" PRId64 "\r\n", body_len);
  if (chunked)
    sl_buf_append_str(b, "Transfer-Encoding: chunked\r\n");
  if (r->close_after)
    sl_buf_append_str(b, "Connection: close\r\n");
  else if (r->http_major == 1 && r->http_minor == 0)
    sl_buf_append_str(b, "Connection: keep-alive\r\n");
  if (r->status == 503)
    sl_buf_append_str(b, "Retry-After: 1\r\n");
  sl_buf_append_str(b, "\r\n");
}

/* Fills <r->resp> with the complete answer to <r>, by endpoint and status. */
static void build_response(struct req *r) {
  struct server *s = r->c->srv;
  int is_head = strcmp(r->method, "HEAD") == 0;
  int no_body = r->status == 204 || r->status == 304;
  const char *type = "application/json";
  struct sl_buf body;

  sl_buf_init(&body);
  r->close_after = !r->keep_alive;
  /* Special framings need a body; HTTP/1.0 cannot read chunked, so it gets close-delimited. */
  if ((no_body || is_head) && r->kind >= K_CHUNK && r->kind <= K_BIG && r->kind != K_RESET)
    r->kind = K_JSON;
  if (r->kind == K_CHUNK && r->http_minor == 0)
    r->kind = K_CLOSE;

  switch (r->kind) {
  case K_STATS:
    sl_buf_printf(&body, "{\"requests\":%" PRIu64 ",\"in_service\":%u,\"waiting\":%u}\n",
                  s->requests, s->in_service, s->waiting);
    break;
  case K_ECHO:
    type = "text/plain";
    sl_buf_printf(&body, "%s %.*s HTTP/%d.%d\n", r->method, (int)r->target.len, r->target.base,
                  r->http_major, r->http_minor);
    sl_buf_append(&body, r->head.base, r->head.len);
    sl_buf_append(&body, "\n", 1);
    sl_buf_append(&body, r->body.base, r->body.len);
    break;
  case K_CHUNK:
    put_head(r, "text/plain", -1, 1);
    for (int i = 1; i <= 4; i++) {
      char line[32];
      int len = snprintf(line, sizeof(line), "chunk %d of 4\n", i);
      sl_buf_printf(&r->resp, "%x\r\n%s\r\n", (unsigned)len, line);
    }
    sl_buf_append_str(&r->resp, "0\r\n\r\n");
    goto done;
  case K_CLOSE:
    r->close_after = 1;
    put_head(r, "text/plain", -1, 0);
    sl_buf_append_str(&r->resp, "this body ends where the connection closes\n");
    goto done;
  case K_TRUNC:
    r->close_after = 1;
    put_head(r, "application/octet-stream", 1000, 0);
    sl_buf_append(&r->resp, fill, 100);
    goto done;
  case K_RESET:
    r->close_after = 1;
    goto done;
  case K_BIG:
    put_head(r, "application/octet-stream", (int64_t)r->arg, 0);
    r->fill_len = r->arg;
    goto done;
  case K_ERROR:
    r->close_after = 1;
    sl_buf_append_str(&body, "{\"ok\":false,\"error\":\"bad request\"}\n");
    break;
  default:
    sl_buf_printf(&body,
                  "{\"ok\":%s,\"method\":\"%s\",\"path\":", r->status < 400 ? "true" : "false",
                  r->method);
    sl_json_append_string(&body, r->target.base, r->target.len);
    sl_buf_printf(&body, ",\"body_bytes\":%" PRIu64 ",\"seq\":%" PRIu64 "}\n", r->body_bytes,
                  r->seq);
    break;
  }
  put_head(r, type, no_body ? -1 : (int64_t)body.len, 0);
  if (!no_body && !is_head)
    sl_buf_append(&r->resp, body.base, body.len);
done:
  sl_buf_dispose(&body);
}

/* ---- connections ---- */

static void on_written(uv_write_t *w, int status) {
  struct write_req *wr = (struct write_req *)w;
  if (status < 0 && !uv_is_closing((uv_handle_t *)w->handle))
    conn_close(w->handle->data);
  sl_buf_dispose(&wr->data);
  free(wr);
}

/* Queues <data> on <c>, then <fill_len> bytes of the fill pattern. Takes <data>'s memory,
 * leaving <data> empty, whether or not it succeeds. Returns 0 or a negative UV error. */
static int conn_write(struct conn *c, struct sl_buf *data, uint64_t fill_len) {
  size_t nbufs = 1 + (size_t)((fill_len + FILL_SIZE - 1) / FILL_SIZE);
  struct write_req *wr = malloc(sizeof(*wr));
  uv_buf_t one, *bufs = nbufs == 1 ? &one : calloc(nbufs, sizeof(*bufs)); /* uv_write copies it */
  int err = UV_ENOMEM;

  if (wr == NULL || bufs == NULL) {
    sl_buf_dispose(data);
    goto fail;
  }
  wr->data = *data;
  sl_buf_init(data);
  bufs[0] = uv_buf_init(wr->data.base, (unsigned)wr->data.len);
  for (size_t i = 1; i < nbufs; i++) {
    uint64_t left = fill_len - (i - 1) * FILL_SIZE;
    bufs[i] = uv_buf_init(fill, left < FILL_SIZE ? (unsigned)left : FILL_SIZE);
  }
  err = uv_write(&wr->w, (uv_stream_t *)&c->tcp, bufs, (unsigned)nbufs, on_written);
  if (err < 0) {
    sl_buf_dispose(&wr->data);
    goto fail;
  }
  if (bufs != &one)
    free(bufs);
  return 0;
fail:
  free(wr);
  if (bufs != &one)
    free(bufs);
  return err;
}

/* Cancels every request of <c> that has not been written. */
static void conn_drop_reqs(struct conn *c) {
  while (c->head != NULL) {
    struct req *r = c->head;
    c->head = r->next;
    req_destroy(r);
  }
  c->tail = c->parsing = NULL;
  server_pump(c->srv);
}

static void on_conn_closed(uv_handle_t *h) { free(h->data); }

/* Closes <c> at once, dropping queued writes and unanswered requests. */
static void conn_close(struct conn *c) {
  c->closing = 1;
  conn_drop_reqs(c);
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *sh, int status) {
  (void)status;
  if (!uv_is_closing((uv_handle_t *)sh->handle))
    uv_close((uv_handle_t *)sh->handle, on_conn_closed);
}

/* Closes <c> after its queued writes are sent; with <reset>, sends a TCP RST instead when
 * nothing is queued. */
static void conn_finish(struct conn *c, int reset) {
  c->closing = 1;
  conn_drop_reqs(c);
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (reset && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
    if (uv_tcp_close_reset(&c->tcp, on_conn_closed) < 0)
      conn_close(c);
  } else if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    conn_close(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  (void)size;
  *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

/* Writes every answered request at the head of <c>, in order, then closes or resumes reading
 * as the written responses and the client's state require. */
static void conn_flush(struct conn *c) {
  struct req *r;
  while (!c->closing && (r = c->head) != NULL && r->state == REQ_READY) {
    int close_after = r->close_after, reset = r->kind == K_RESET, err = 0;
    c->head = r->next;
    if (c->head == NULL)
      c->tail = NULL;
    if (!reset) {
      if (c->srv->verbose)
        sl_log_info("%s %.*s -> %d", r->method, (int)r->target.len, r->target.base, r->status);
      err = conn_write(c, &r->resp, r->fill_len);
    }
    req_destroy(r);
    if (err < 0)
      conn_close(c);
    else if (close_after)
      conn_finish(c, reset);
  }
  if (c->closing)
    return;
  if (c->head == NULL && c->read_done) {
    conn_finish(c, 0);
  } else if (c->read_paused && c->npending < MAX_PIPELINE) {
    c->read_paused = 0;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  struct conn *c = st->data;
  llhttp_errno_t err;

  if (n < 0 && n != UV_EOF) {
    conn_close(c);
    return;
  }
  if (n == UV_EOF) {
    /* The client is done sending; answer what it sent in full, then close. */
    c->read_done = 1;
    uv_read_stop(st);
    if (c->parsing != NULL) {
      c->parsing->kind = K_RESET;
      c->parsing->close_after = 1;
      c->parsing->state = REQ_READY;
      c->parsing = NULL;
    }
    conn_flush(c);
    return;
  }
  c->in_parse = 1;
  err = llhttp_execute(&c->parser, buf->base, (size_t)n);
  c->in_parse = 0;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    c->read_done = 1; /* the last request asked to close, or wants a protocol we lack */
  } else if (err != HPE_OK) {
    struct req *r = c->parsing ? c->parsing : req_new(c);
    c->read_done = 1;
    c->parsing = NULL;
    if (r == NULL) {
      conn_close(c);
      return;
    }
    r->kind = K_ERROR;
    r->status = 400;
    r->method = "-";
    req_dispatch(r);
  }
  if (c->read_done || c->npending >= MAX_PIPELINE) {
    uv_read_stop(st);
    c->read_paused = !c->read_done;
  }
  conn_flush(c);
}

/* ---- llhttp callbacks: copy what a response needs out of the shared read buffer ---- */

#define CONN(p) ((struct conn *)(p)->data)
#define REQ(p) (CONN(p)->parsing)

static int append_limited(struct sl_buf *b, const char *at, size_t len) {
  return b->len + len > MAX_LINE_BYTES || sl_buf_append(b, at, len) < 0 ? -1 : 0;
}

static int on_message_begin(llhttp_t *p) {
  CONN(p)->parsing = req_new(CONN(p));
  return REQ(p) ? 0 : -1;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  return append_limited(&REQ(p)->target, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  struct req *r = REQ(p);
  if (!r->in_field) {
    r->in_field = 1;
    r->field_off = r->head.len;
  }
  return append_limited(&r->head, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
  struct req *r = REQ(p);
  r->in_field = 0;
  r->field_len = r->head.len - r->field_off;
  return append_limited(&r->head, ": ", 2);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  return append_limited(&REQ(p)->head, at, len);
}

static int on_header_value_complete(llhttp_t *p) {
  struct req *r = REQ(p);
  const char *field = r->head.base + r->field_off;
  size_t voff = r->field_off + r->field_len + 2;
  if (r->field_len == 13 && strncasecmp(field, "X-Demo-Status", 13) == 0) {
    set_status(r, r->head.base + voff, r->head.len - voff);
    r->demo_status = 1;
  } else if (r->field_len == 6 && strncasecmp(field, "Expect", 6) == 0) {
    r->expect_continue =
        r->head.len - voff == 12 && strncasecmp(field + 8, "100-continue", 12) == 0;
  }
  return append_limited(&r->head, "\n", 1);
}

/* Picks the endpoint from the path (the target without its query). */
static int on_headers_complete(llhttp_t *p) {
  static const struct {
    const char *path;
    enum req_kind kind;
  } exact[] = {{"/_stats", K_STATS}, {"/echo", K_ECHO},      {"/chunked", K_CHUNK},
               {"/close", K_CLOSE},  {"/truncate", K_TRUNC}, {"/reset", K_RESET}};
  struct req *r = REQ(p);
  const char *t = r->target.base ? r->target.base : "";
  size_t len = r->target.len, q = 0;
  while (q < len && t[q] != '?')
    q++;
  r->method = llhttp_method_name((llhttp_method_t)p->method);
  r->http_major = p->http_major;
  r->http_minor = p->http_minor;
  for (size_t i = 0; i < sl_countof(exact); i++)
    if (q == strlen(exact[i].path) && memcmp(t, exact[i].path, q) == 0)
      r->kind = exact[i].kind;
#define HAS(lit) (q > sizeof(lit) - 1 && memcmp(t, lit, sizeof(lit) - 1) == 0)
  if (HAS("/status/") && !r->demo_status)
    set_status(r, t + 8, q - 8);
  else if (HAS("/sleep/") && parse_num(t + 7, q - 7, UINT32_MAX, &r->arg) == 0)
    r->kind = K_SLEEP;
  else if (HAS("/big/") && parse_num(t + 5, q - 5, MAX_BIG_BODY, &r->arg) == 0)
    r->kind = K_BIG;
#undef HAS
  /* A client waiting for "100 Continue" before it sends the body gets it at once, unless
   * earlier responses are still due on this connection: then it must wait for its turn. */
  if (r->expect_continue && r->http_minor >= 1 && CONN(p)->head == r) {
    struct sl_buf b;
    sl_buf_init(&b);
    if (sl_buf_append_str(&b, "HTTP/1.1 100 Continue\r\n\r\n") < 0 ||
        conn_write(CONN(p), &b, 0) < 0)
      return -1;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct req *r = REQ(p);
  r->body_bytes += len;
  if (r->kind == K_ECHO && r->body.len + len <= MAX_ECHO_BODY)
    return sl_buf_append(&r->body, at, len) < 0 ? -1 : 0;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  struct req *r = REQ(p);
  r->keep_alive = llhttp_should_keep_alive(p);
  CONN(p)->parsing = NULL;
  req_dispatch(r);
  /* Nothing may follow a request that asked to close: stop parsing right here. */
  return r->keep_alive ? 0 : HPE_PAUSED;
}

/* ---- server ---- */

static void on_connection(uv_stream_t *l, int status) {
  struct server *s = l->data;
  struct conn *c;
  if (status < 0 || (c = calloc(1, sizeof(*c))) == NULL)
    return;
  c->srv = s;
  c->tcp.data = c;
  uv_tcp_init(&s->loop, &c->tcp);
  llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
  c->parser.data = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Closes <h> for shutdown. Request timers are skipped: each belongs to a connection, which
 * closes them when it drops its requests. */
static void close_handle(uv_handle_t *h, void *arg) {
  struct server *s = arg;
  if (uv_is_closing(h) || h->type == UV_TIMER)
    return;
  if (h->type == UV_TCP && h != (uv_handle_t *)&s->listener)
    conn_close(h->data);
  else
    uv_close(h, NULL);
}

/* SIGTERM/SIGINT: close every handle so that uv_run() returns and main() exits 0. */
static void on_signal(uv_signal_t *sig, int signum) {
  (void)signum;
  uv_walk(sig->loop, close_handle, sig->data);
}

/* Binds and listens on the IPv4 <hostport> ("127.0.0.1:9000", port 0 for any), then prints the real
 * address on stdout. Returns 0 or a negative UV error. */
static int server_listen(struct server *s, const char *hostport) {
  char host[64], name[64];
  const char *colon = strrchr(hostport, ':');
  struct sockaddr_in sa;
  int len = sizeof(sa), err = UV_EINVAL;
  uint64_t port;

  if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host) ||
      parse_num(colon + 1, strlen(colon + 1), 65535, &port) < 0)
    goto fail;
  memcpy(host, hostport, (size_t)(colon - hostport));
  host[colon - hostport] = '\0';
  if ((err = uv_ip4_addr(host, (int)port, &sa)) < 0 ||
      (err = uv_tcp_init(&s->loop, &s->listener)) < 0)
    goto fail;
  s->listener.data = s;
  if ((err = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0)) < 0 ||
      (err = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)) < 0 ||
      (err = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &len)) < 0)
    goto fail;
  uv_ip4_name(&sa, name, sizeof(name));
  printf("listening on %s:%d\n", name, ntohs(sa.sin_port));
  fflush(stdout);
  return 0;
fail:
  if (s->listener.loop != NULL)
    uv_close((uv_handle_t *)&s->listener, NULL);
  fprintf(stderr, "sluice-demo-backend: cannot listen on %s: %s\n", hostport, uv_strerror(err));
  return err;
}

static void usage(FILE *f) {
  fputs("usage: sluice-demo-backend [--listen HOST:PORT] [--service-time DUR] [--capacity N]\n"
        "                           [--queue N] [-v | --verbose] [--quiet]\n"
        "A slow HTTP/1.1 service: <capacity> requests in service at once for <service-time>\n"
        "each, <queue> more waiting, 503 beyond. Defaults: 127.0.0.1:9000, 20ms, 4, 1024.\n"
        "It logs its settings at start; -v adds a line per request, --quiet leaves warnings only.\n"
        "Endpoints: any path (JSON summary), /status/NNN, /echo, /chunked, /close, /truncate,\n"
        "/reset, /sleep/MS, /big/N, /_stats; header X-Demo-Status: NNN sets the status.\n",
        f);
}

int main(int argc, char **argv) {
  static struct server s; /* static: big, and its handles must outlive every callback */
  const char *listen = "127.0.0.1:9000";
  uint64_t v;

  TAILQ_INIT(&s.waiting_reqs);
  s.service_ms = 20;
  s.capacity = 4;
  s.queue_max = 1024;
  for (int i = 1; i < argc; i++) {
    const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(opt, "--quiet") == 0) {
      sl_log_set_level(SL_LOG_WARN);
      continue;
    }
    if (strcmp(opt, "-v") == 0 || strcmp(opt, "--verbose") == 0) {
      s.verbose = true;
      continue;
    }
    if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (val == NULL)
      goto bad_usage;
    i++;
    if (strcmp(opt, "--listen") == 0)
      listen = val;
    else if (strcmp(opt, "--service-time") == 0 && sl_duration_parse(val, &s.service_ms) == 0)
      continue;
    else if (strcmp(opt, "--capacity") == 0 && parse_num(val, strlen(val), UINT_MAX, &v) == 0 &&
             v > 0)
      s.capacity = (unsigned)v;
    else if (strcmp(opt, "--queue") == 0 && parse_num(val, strlen(val), UINT_MAX, &v) == 0)
      s.queue_max = (unsigned)v;
    else
      goto bad_usage;
  }

  signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < sizeof(fill); i++)
    fill[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i % 64];
  s.settings = (llhttp_settings_t){.on_message_begin = on_message_begin,
                                   .on_url = on_url,
                                   .on_header_field = on_header_field,
                                   .on_header_field_complete = on_header_field_complete,
                                   .on_header_value = on_header_value,
                                   .on_header_value_complete = on_header_value_complete,
                                   .on_headers_complete = on_headers_complete,
                                   .on_body = on_body,
                                   .on_message_complete = on_message_complete};

  if (uv_loop_init(&s.loop) < 0)
    return 1;
  if (server_listen(&s, listen) < 0) {
    uv_run(&s.loop, UV_RUN_NOWAIT); /* let a half-made listener close */
    uv_loop_close(&s.loop);
    return 1;
  }
  if (s.service_ms > 0)
    sl_log_info("service time %" PRIu64 "ms, capacity %u (%" PRIu64
                " requests/s at most), queue %u",
                s.service_ms, s.capacity, s.capacity * 1000 / s.service_ms, s.queue_max);
  else
    sl_log_info("service time 0ms, capacity %u, queue %u", s.capacity, s.queue_max);
  uv_signal_init(&s.loop, &s.sigterm);
  uv_signal_init(&s.loop, &s.sigint);
  s.sigterm.data = s.sigint.data = &s;
  uv_signal_start(&s.sigterm, on_signal, SIGTERM);
  uv_signal_start(&s.sigint, on_signal, SIGINT);
  uv_run(&s.loop, UV_RUN_DEFAULT);
  return uv_loop_close(&s.loop) == 0 ? 0 : 1;
bad_usage:
  usage(stderr);
  return 2;
}
