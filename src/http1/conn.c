/*
 * One HTTP/1.x server connection: read and parse requests (llhttp through sl_http_parser),
 * enforce the limits and timeouts of each state, hand complete requests to the listener's
 * dispatcher (its handler table), and write the responses back in order. The states and the
 * division of work with the dispatcher are in sluice/http1.h.
 *
 * Ownership: the connection owns its buffers and parser; memory is freed in the close
 * callback of the last handle (or at the last sl_http1_conn_release), after handler->dispose.
 *
 * @thread loop (the listener's)
 */
#include "sluice/http1.h"

#include <stdlib.h>
#include <string.h>

#include "http1_int.h"
#include "sluice/log.h"

/* Request bodies above this size do not keep their buffer between requests. */
#define BODY_KEEP_MAX (256 * 1024)

struct client_write {
  uv_write_t req;
  struct sl_buf buf;
};

static const char *const state_names[] = {"idle",    "head",     "body",  "answering",
                                          "writing", "draining", "closed"};

static void process_pending(struct sl_http1_conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

const char *sl_http1_state_name(enum sl_http1_state s) { return state_names[s]; }

static bool reading(const struct sl_http1_conn *c) {
  return c->state == SL_HTTP1_IDLE || c->state == SL_HTTP1_HEAD || c->state == SL_HTTP1_BODY;
}

void sl_http1_conn_hold(struct sl_http1_conn *c) { c->refs++; }

void sl_http1_conn_release(struct sl_http1_conn *c) {
  struct sl_http1_listener *l = c->listener;

  if (--c->refs > 0)
    return;
  if (l->h->dispose != NULL)
    l->h->dispose(c);
  sl_http_parser_dispose(&c->parser);
  sl_buf_dispose(&c->pending);
  sl_buf_dispose(&c->body);
  sl_buf_dispose(&c->out);
  free(c);
  sl__http1_listener_conn_freed(l);
}

static void on_handle_closed(uv_handle_t *h) { sl_http1_conn_release(h->data); }

void sl_http1_conn_close(struct sl_http1_conn *c) {
  struct sl_http1_listener *l = c->listener;

  if (c->state == SL_HTTP1_CLOSED)
    return;
  sl_log_debug("%sconn %s: close in state %s", l->settings->log_prefix, c->client_addr,
               state_names[c->state]);
  c->state = SL_HTTP1_CLOSED;
  if (l->h->cancel != NULL)
    l->h->cancel(c);
  sl__http1_listener_unlink(l, c);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct sl_http1_conn *c = h->data;

  (void)suggested;
  buf->base = c->listener->loop->read_buf;
  buf->len = sizeof(c->listener->loop->read_buf);
}

static void read_start(struct sl_http1_conn *c) {
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);

  if (r != 0 && r != UV_EALREADY)
    sl_http1_conn_close(c);
}

/* Stops reading until read_resume(). */
static void read_pause(struct sl_http1_conn *c) {
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->read_paused = true;
}

static void read_resume(struct sl_http1_conn *c) {
  if (c->read_paused && reading(c)) {
    c->read_paused = false;
    read_start(c);
  }
}

/* The request cannot be read on: answer <status> through the dispatcher and close after it. */
static void refuse(struct sl_http1_conn *c, enum sl_http1_refusal why, unsigned status) {
  uv_read_stop((uv_stream_t *)&c->tcp);
  sl_buf_reset(&c->pending);
  c->keep_alive = false;
  c->listener->h->refuse(c, why, status);
}

static void on_timeout(uv_timer_t *t) {
  struct sl_http1_conn *c = t->data;
  uint64_t now = uv_now(t->loop);

  if (c->deadline == UINT64_MAX)
    return; /* disarmed since: the timer lapses */
  if (now < c->deadline) {
    /* Armed for an earlier deadline that has moved on: wait for the rest. */
    uv_timer_start(&c->timer, on_timeout, c->deadline - now, 0);
    return;
  }
  c->deadline = UINT64_MAX;
  switch (c->state) {
  case SL_HTTP1_IDLE:
  case SL_HTTP1_WRITING:
  case SL_HTTP1_DRAINING:
    sl_http1_conn_close(c);
    break;
  case SL_HTTP1_ANSWERING:
    if (c->listener->h->timeout != NULL)
      c->listener->h->timeout(c);
    break;
  case SL_HTTP1_HEAD:
  case SL_HTTP1_BODY:
    refuse(c, SL_HTTP1_TIMEOUT, 408);
    break;
  default:
    break;
  }
}

/*
 * Sets the connection's one timeout <ms> from now. Every request moves it three or four
 * times (head, body, done, idle), and re-arming a libuv timer is a heap operation: so a
 * timer already due no later than the new deadline is left alone, and when it fires early
 * it re-arms itself for the rest (on_timeout). Only a deadline earlier than the armed one
 * re-arms at once.
 */
static void arm_timer(struct sl_http1_conn *c, uint64_t ms) {
  c->deadline = uv_now(c->timer.loop) + ms;
  if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

void sl_http1_conn_arm(struct sl_http1_conn *c, uint64_t ms) { arm_timer(c, ms); }

void sl_http1_conn_disarm(struct sl_http1_conn *c) { c->deadline = UINT64_MAX; }

static void stop_timer(struct sl_http1_conn *c) {
  c->deadline = UINT64_MAX;
  uv_timer_stop(&c->timer);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* The last response is out: send FIN, then read and drop for a moment. */
static void linger(struct sl_http1_conn *c) {
  uv_shutdown_t *req = malloc(sizeof(*req));

  if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    sl_http1_conn_close(c);
    return;
  }
  sl_buf_reset(&c->pending);
  arm_timer(c, SL_HTTP1_LINGER_MS);
  read_start(c);
}

/* Waits for the next request: parses what is buffered, and reads on. */
static void go_idle(struct sl_http1_conn *c) {
  c->state = SL_HTTP1_IDLE;
  arm_timer(c, c->listener->limits.idle_timeout_ms);
  if (!c->processing) {
    process_pending(c);
    read_resume(c);
  }
}

static void on_client_write(uv_write_t *req, int status) {
  struct client_write *w = (struct client_write *)req;
  struct sl_http1_conn *c = req->handle->data;

  c->writes_in_flight--;
  c->write_bytes_in_flight -= w->buf.len;
  sl_buf_dispose(&w->buf);
  free(w);
  if (c->state == SL_HTTP1_CLOSED)
    return;
  if (status < 0) {
    sl_log_debug("%sconn %s: write failed: %s", c->listener->settings->log_prefix, c->client_addr,
                 uv_strerror(status));
    sl_http1_conn_close(c);
    return;
  }
  if (c->writes_in_flight > 0 || c->out.len > 0) {
    if (c->proceed_wanted && c->write_bytes_in_flight < SL_HTTP1_WRITE_LOW_WATER) {
      c->proceed_wanted = false;
      c->listener->h->proceed(c);
    }
  } else if (c->state == SL_HTTP1_DRAINING) {
    linger(c);
  } else if (c->state == SL_HTTP1_WRITING) {
    go_idle(c);
  } else if (c->proceed_wanted) {
    c->proceed_wanted = false;
    c->listener->h->proceed(c);
  }
}

int sl_http1_conn_flush(struct sl_http1_conn *c) {
  struct client_write *w;
  uv_buf_t b;
  int r;

  if (c->out.len == 0 || c->state == SL_HTTP1_CLOSED)
    return 0;
  if (c->writes_in_flight == 0) {
    /* Most responses fit the socket buffer: write them now, without a request. */
    b = uv_buf_init(c->out.base, (unsigned)c->out.len);
    r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)c->out.len) {
      c->out.len = 0;
      return 0;
    }
    if (r > 0)
      sl_buf_consume(&c->out, (size_t)r);
    else if (r != UV_EAGAIN)
      goto fail;
  }
  w = malloc(sizeof(*w));
  if (w == NULL) {
    r = UV_ENOMEM;
    goto fail;
  }
  w->buf = c->out;
  sl_buf_init(&c->out);
  b = uv_buf_init(w->buf.base, (unsigned)w->buf.len);
  r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_client_write);
  if (r != 0) {
    sl_buf_dispose(&w->buf);
    free(w);
    goto fail;
  }
  c->writes_in_flight++;
  c->write_bytes_in_flight += w->buf.len;
  return 0;

fail:
  sl_log_debug("%sconn %s: write failed: %s", c->listener->settings->log_prefix, c->client_addr,
               uv_strerror(r));
  sl_http1_conn_close(c);
  return r;
}

bool sl_http1_conn_congested(struct sl_http1_conn *c) {
  if (c->write_bytes_in_flight <= SL_HTTP1_WRITE_HIGH_WATER)
    return false;
  c->proceed_wanted = true;
  return true;
}

/* Forgets the request just answered, so the parser can take the next one. */
static void reset_request(struct sl_http1_conn *c) {
  c->refused_status = 0;
  c->proceed_wanted = false;
  if (c->body.cap > BODY_KEEP_MAX)
    sl_buf_dispose(&c->body);
  else
    sl_buf_reset(&c->body);
  sl_http_parser_next(&c->parser, false);
}

void sl_http1_conn_done(struct sl_http1_conn *c) {
  struct sl_http1_listener *l = c->listener;

  if (c->state == SL_HTTP1_CLOSED)
    return;
  if (l->h->end != NULL)
    l->h->end(c);
  reset_request(c);
  if (!c->keep_alive || l->shutting_down) {
    c->state = SL_HTTP1_DRAINING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (sl_http1_conn_flush(c) != 0 || c->state != SL_HTTP1_DRAINING)
      return;
    if (c->writes_in_flight == 0)
      linger(c);
    else if (l->limits.write_timeout_ms != 0)
      arm_timer(c, l->limits.write_timeout_ms);
    else
      stop_timer(c);
    return;
  }
  if (sl_http1_conn_flush(c) != 0)
    return;
  if (l->settings->serial && c->writes_in_flight > 0) {
    /* The next request waits until this response is taken. */
    c->state = SL_HTTP1_WRITING;
    read_pause(c);
    arm_timer(c, l->limits.write_timeout_ms);
    return;
  }
  go_idle(c);
}

static void begin_request(struct sl_http1_conn *c) {
  const struct sl_http1_limits *lim = &c->listener->limits;

  c->parser.max_header_bytes = lim->max_header_bytes;
  c->parser.max_body_bytes = lim->max_body_bytes;
  c->body_timeout_ms = lim->body_timeout_ms;
  c->state = SL_HTTP1_HEAD;
  arm_timer(c, lim->header_timeout_ms);
  if (c->listener->h->begin != NULL)
    c->listener->h->begin(c);
}

static int on_req_head(struct sl_http_parser *p, struct sl_http_msg *m) {
  struct sl_http1_conn *c = p->data;
  int r;

  c->state = SL_HTTP1_BODY;
  arm_timer(c, c->body_timeout_ms);
  r = c->listener->h->head(c, m);
  if (r < 0)
    return -1;
  c->refused_status = (unsigned)r;
  if (m->expect_continue && m->http_minor >= 1 && r == 0 && (m->chunked || m->content_length > 0)) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    if (sl_http1_conn_write(c, cont, sizeof(cont) - 1) != 0)
      return -1;
    sl_http1_conn_flush(c);
  }
  return 0;
}

static int on_req_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_http1_conn *c = p->data;

  if (c->refused_status != 0)
    return 0; /* read and dropped: the answer does not depend on it */
  if (sl_buf_append(&c->body, data, len) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory for the body");
    return -1;
  }
  return 0;
}

static int on_req_done(struct sl_http_parser *p) {
  struct sl_http1_conn *c = p->data;

  c->state = SL_HTTP1_ANSWERING;
  c->keep_alive = p->msg.keep_alive;
  c->deadline = UINT64_MAX;
  return 0;
}

/* Parses requests from <data> while the connection is ready for one. Returns the bytes
 * consumed; the rest waits until the current request is answered. */
static size_t feed(struct sl_http1_conn *c, const char *data, size_t len) {
  const struct sl_http1_handler *h = c->listener->h;
  size_t done = 0;

  while (done < len && reading(c)) {
    ssize_t n;

    if (c->state == SL_HTTP1_IDLE)
      begin_request(c);
    n = sl_http_parser_feed(&c->parser, data + done, len - done);
    if (n < 0) {
      refuse(c, SL_HTTP1_MALFORMED, sl_http_error_status(c->parser.error));
      return len;
    }
    done += (size_t)n;
    if (!c->parser.msg_done)
      continue;
    if (c->refused_status != 0)
      h->refuse(c, SL_HTTP1_REFUSED, c->refused_status);
    else
      h->start(c);
  }
  return done;
}

static void process_pending(struct sl_http1_conn *c) {
  size_t n;

  if (c->processing || c->pending.len == 0)
    return;
  c->processing = true;
  n = feed(c, c->pending.base, c->pending.len);
  if (c->state != SL_HTTP1_CLOSED)
    sl_buf_consume(&c->pending, n);
  c->processing = false;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct sl_http1_conn *c = s->data;
  size_t n;

  if (nread == 0)
    return;
  if (nread < 0) {
    if (c->state == SL_HTTP1_HEAD || c->state == SL_HTTP1_BODY || c->state == SL_HTTP1_ANSWERING)
      sl_log_debug("%sconn %s: client closed in state %s", c->listener->settings->log_prefix,
                   c->client_addr, state_names[c->state]);
    sl_http1_conn_close(c);
    return;
  }
  if (c->state == SL_HTTP1_DRAINING)
    return; /* lingering: dropped */
  if (c->state == SL_HTTP1_BODY && !c->listener->settings->body_timeout_total)
    arm_timer(c, c->body_timeout_ms);
  if (c->pending.len > 0 || !reading(c)) {
    if (sl_buf_append(&c->pending, buf->base, (size_t)nread) != 0) {
      sl_http1_conn_close(c);
      return;
    }
    process_pending(c);
  } else {
    c->processing = true;
    n = feed(c, buf->base, (size_t)nread);
    c->processing = false;
    if (n < (size_t)nread && c->state != SL_HTTP1_CLOSED &&
        sl_buf_append(&c->pending, buf->base + n, (size_t)nread - n) != 0) {
      sl_http1_conn_close(c);
      return;
    }
  }
  /* Reading goes on while a request is answered (so that a client that goes away is
   * noticed), but pipelined requests are only buffered up to a bound; beyond it they wait in
   * the kernel, which pushes back on the client. */
  if (c->state == SL_HTTP1_ANSWERING && c->pending.len >= SL_HTTP1_PENDING_MAX)
    read_pause(c);
}

static void peer_name(struct sl_http1_conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);

  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, c->client_addr, sizeof(c->client_addr));
  else
    uv_ip4_name((struct sockaddr_in *)&ss, c->client_addr, sizeof(c->client_addr));
}

void sl__http1_conn_accept(struct sl_http1_listener *l) {
  struct sl_http1_conn *c = calloc(1, l->settings->conn_size);

  if (c == NULL)
    return;
  uv_tcp_init(l->loop->uv, &c->tcp);
  uv_timer_init(l->loop->uv, &c->timer);
  c->deadline = UINT64_MAX;
  c->tcp.data = c;
  c->timer.data = c;
  c->listener = l;
  c->refs = 2;
  sl_http_parser_init(&c->parser, HTTP_REQUEST, l->limits.max_header_bytes,
                      l->limits.max_body_bytes, on_req_head, on_req_body, on_req_done, c);
  sl_buf_init(&c->pending);
  sl_buf_init(&c->body);
  sl_buf_init(&c->out);
  l->n_alive++;
  if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) != 0) {
    c->state = SL_HTTP1_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    return;
  }
  peer_name(c);
  c->next = l->conns;
  if (l->conns != NULL)
    l->conns->prev = c;
  l->conns = c;
  l->n_conns++;
  if (l->h->accept != NULL && l->h->accept(c) != 0) {
    sl_http1_conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->state = SL_HTTP1_IDLE;
  arm_timer(c, l->limits.accept_timeout_ms);
  read_start(c);
}

void sl__http1_conn_shutdown(struct sl_http1_conn *c) {
  if (c->state == SL_HTTP1_IDLE)
    sl_http1_conn_close(c);
  else if (c->state == SL_HTTP1_ANSWERING && c->listener->h->shutdown != NULL)
    c->listener->h->shutdown(c);
  /* Busy connections close after their response (sl_http1_conn_done checks
   * shutting_down); the dispatcher bounds the wait (sl_http1_listener_abort). */
}
