/*
 * Client connections: read and parse requests (llhttp through sl_http_parser),
 * enforce limits and timeouts, hand complete requests to proxy.c, and write
 * responses back in order.
 *
 * States: IDLE -(first byte)-> HEAD -(head parsed)-> BODY -(complete)-> PROXY
 * -(answered)-> IDLE again, or DRAINING when the connection must close: the
 * last response is flushed, the write side shut down, and what the client
 * still sends is read and dropped for a moment (a lingering close) so that an
 * early answer such as 413 is not destroyed by a TCP reset.
 *
 * Ownership: the connection owns its buffers and parser; it holds a config
 * reference for each request. Memory is freed in the last close callback.
 */
#include "conn_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/clock.h"
#include "sluice/log.h"

/* Stop reading the upstream when this much response is queued for a slow
 * client; resume below the low mark. */
#define WRITE_HIGH_WATER (256 * 1024)
#define WRITE_LOW_WATER (64 * 1024)
/* How long a closing connection keeps reading what the client still sends. */
#define LINGER_MS 2000
/* Pipelined bytes buffered while a request is answered. */
#define PENDING_MAX (64 * 1024)
/* Request bodies above this size do not keep their buffer between requests. */
#define BODY_KEEP_MAX (256 * 1024)

struct client_write {
  uv_write_t req;
  struct sl_buf buf;
};

static const char *const state_names[] = {"idle", "head", "body", "proxy", "draining", "closed"};

/* Client reads land here; each is parsed before the callback returns and the
 * unparsed rest is copied into the connection's <pending> buffer. */
static char read_buf[64 * 1024];

static void conn_process_pending(struct sl_conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

void sl__conn_unref(struct sl_conn *c) {
  if (--c->open_handles > 0)
    return;
  sl__proxy_dispose(c);
  sl_http_parser_dispose(&c->parser);
  sl_buf_dispose(&c->pending);
  sl_buf_dispose(&c->body);
  sl_buf_dispose(&c->out);
  sl_config_unref(c->cfg);
  free(c);
}

static void on_handle_closed(uv_handle_t *h) { sl__conn_unref(h->data); }

static void conn_close(struct sl_conn *c) {
  if (c->state == CONN_CLOSED)
    return;
  sl_log_debug("conn %s: close in state %s", c->client_addr, state_names[c->state]);
  c->state = CONN_CLOSED;
  sl__proxy_cancel(c);
  sl__shape_finish(c);
  sl__server_conn_closed(c->srv, c);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void sl__conn_abort(struct sl_conn *c) { conn_close(c); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = read_buf;
  buf->len = sizeof(read_buf);
}

static void read_start(struct sl_conn *c) {
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);

  if (r != 0 && r != UV_EALREADY)
    conn_close(c);
}

static void on_timeout(uv_timer_t *t) {
  struct sl_conn *c = t->data;
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
  case CONN_IDLE:
  case CONN_DRAINING:
    conn_close(c);
    break;
  case CONN_PROXY:
    sl__shape_timeout(c);
    break;
  case CONN_HEAD:
  case CONN_BODY:
    sl_log_info("conn %s: request %s timed out", c->client_addr,
                c->state == CONN_HEAD ? "head" : "body");
    uv_read_stop((uv_stream_t *)&c->tcp);
    sl__conn_respond_error(c, 408, true);
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
static void arm_timer(struct sl_conn *c, uint64_t ms) {
  c->deadline = uv_now(c->timer.loop) + ms;
  if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

void sl__conn_arm(struct sl_conn *c, uint64_t ms) { arm_timer(c, ms); }

void sl__conn_disarm(struct sl_conn *c) { c->deadline = UINT64_MAX; }

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* The last response is out: send FIN, then read and drop for a moment. */
static void linger(struct sl_conn *c) {
  uv_shutdown_t *req = malloc(sizeof(*req));

  if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    conn_close(c);
    return;
  }
  arm_timer(c, LINGER_MS);
  read_start(c);
}

static void on_client_write(uv_write_t *req, int status) {
  struct client_write *w = (struct client_write *)req;
  struct sl_conn *c = req->handle->data;

  c->writes_in_flight--;
  c->write_bytes_in_flight -= w->buf.len;
  sl_buf_dispose(&w->buf);
  free(w);
  if (c->state == CONN_CLOSED)
    return;
  if (status < 0) {
    sl_log_debug("conn %s: write failed: %s", c->client_addr, uv_strerror(status));
    conn_close(c);
    return;
  }
  if (c->state == CONN_DRAINING && c->writes_in_flight == 0 && c->out.len == 0)
    linger(c);
  else if (c->upstream_paused && c->write_bytes_in_flight < WRITE_LOW_WATER)
    sl__proxy_client_drained(c);
}

int sl__conn_write(struct sl_conn *c, const void *data, size_t len) {
  return sl_buf_append(&c->out, data, len);
}

int sl__conn_flush(struct sl_conn *c) {
  struct client_write *w;
  uv_buf_t b;
  int r;

  if (c->out.len == 0 || c->state == CONN_CLOSED)
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
  sl_log_debug("conn %s: write failed: %s", c->client_addr, uv_strerror(r));
  conn_close(c);
  return r;
}

bool sl__conn_client_congested(const struct sl_conn *c) {
  return c->write_bytes_in_flight > WRITE_HIGH_WATER;
}

static void reset_request(struct sl_conn *c) {
  sl_config_unref(c->cfg);
  c->cfg = NULL;
  c->route = NULL;
  c->slot = NULL;
  c->error_status = 0;
  c->rstats = NULL;
  c->status_query = false;
  c->drain = NULL;
  c->status = 0;
  c->bytes_out = 0;
  c->t_upstream_ns = 0;
  if (c->body.cap > BODY_KEEP_MAX)
    sl_buf_dispose(&c->body);
  else
    sl_buf_reset(&c->body);
  sl_http_parser_next(&c->parser, false);
}

void sl__conn_request_done(struct sl_conn *c) {
  if (c->state == CONN_CLOSED)
    return;
  sl__shape_finish(c);
  if (c->cfg != NULL && c->cfg->log.access)
    sl__access_log_write(c->srv->access_log, c);
  /* Status URL lookups are sluice's own API, not traffic through a route. */
  if (!c->status_query)
    sl__stats_request_done(c->rstats ? c->rstats : c->srv->unrouted_stats, c->outcome, c->status,
                           (double)(sl_clock_mono_ns() - c->t_start_ns) / 1e9);
  reset_request(c);
  if (!c->keep_alive || c->srv->shutting_down) {
    c->state = CONN_DRAINING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    if (sl__conn_flush(c) == 0 && c->state == CONN_DRAINING && c->writes_in_flight == 0)
      linger(c);
    return;
  }
  c->state = CONN_IDLE;
  arm_timer(c, sl_server_config(c->srv)->limits.idle_timeout_ms);
  if (sl__conn_flush(c) != 0)
    return;
  if (!c->processing) {
    conn_process_pending(c);
    if (c->read_paused &&
        (c->state == CONN_IDLE || c->state == CONN_HEAD || c->state == CONN_BODY)) {
      c->read_paused = false;
      read_start(c);
    }
  }
}

void sl__conn_respond_json(struct sl_conn *c, unsigned status, const char *headers,
                           const char *body, size_t body_len) {
  struct sl_buf *o = &c->out;
  int r = 0;

  r |= sl_buf_append(o, "HTTP/1.1 ", 9);
  r |= sl_buf_append_u64(o, status);
  r |= sl_buf_append(o, " ", 1);
  r |= sl_buf_append_str(o, sl_http_reason(status));
  r |= sl_buf_append_str(o, "\r\nContent-Type: application/json\r\nContent-Length: ");
  r |= sl_buf_append_u64(o, body_len);
  r |= sl_buf_append(o, "\r\n", 2);
  if (headers != NULL)
    r |= sl_buf_append_str(o, headers);
  if (!c->keep_alive)
    r |= sl_buf_append_str(o, "Connection: close\r\n");
  r |= sl_buf_append(o, "\r\n", 2);
  if (c->parser.msg.method != HTTP_HEAD)
    r |= sl_buf_append(o, body, body_len);
  if (r != 0) {
    conn_close(c);
    return;
  }
  c->status = status;
  c->bytes_out = body_len;
  sl__conn_request_done(c);
}

void sl__conn_respond_error(struct sl_conn *c, unsigned status, bool close_after) {
  char head[256];
  char body[96];
  int bn, hn;

  bn = snprintf(body, sizeof(body), "%u %s\n", status, sl_http_reason(status));
  hn = snprintf(head, sizeof(head),
                "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n",
                status, sl_http_reason(status), bn, close_after ? "Connection: close\r\n" : "");
  c->status = status;
  c->bytes_out = (uint64_t)bn;
  if (close_after)
    c->keep_alive = false;
  if (sl__conn_write(c, head, (size_t)hn) != 0 || sl__conn_write(c, body, (size_t)bn) != 0) {
    conn_close(c);
    return;
  }
  if (c->parser.msg.method == HTTP_HEAD)
    c->out.len -= (size_t)bn;
  sl__conn_request_done(c);
}

static void start_request(struct sl_conn *c) {
  const struct sl_config *cfg = sl_server_config(c->srv);

  c->cfg = sl_config_ref((struct sl_config *)cfg);
  c->parser.max_header_bytes = cfg->limits.max_header_bytes;
  c->parser.max_body_bytes = cfg->limits.max_body_bytes;
  c->t_start_ns = sl_clock_mono_ns();
  c->outcome = SL_OUTCOME_ERROR; /* until an upstream or the spool takes it */
  c->state = CONN_HEAD;
  arm_timer(c, cfg->limits.header_timeout_ms);
}

static int on_req_head(struct sl_http_parser *p, struct sl_http_msg *m) {
  struct sl_conn *c = p->data;
  const struct sl_http_header *host = sl_http_msg_header(m, "host");
  const char *target = sl_http_msg_str(m, m->target_off);
  const char *q;
  size_t path_len;

  /* The parser has checked the head as HTTP (version, Host, framing). What
   * sluice refuses beyond that closes the connection at once, unread body and
   * all: absolute-form and CONNECT are for forward proxies. */
  if (target[0] != '/') {
    sl_http_parser_fail(p, SL_HTTP_EBADMSG, "request target not in origin form");
    return -1;
  }
  c->state = CONN_BODY;
  arm_timer(c, c->cfg->limits.body_timeout_ms);
  q = memchr(target, '?', m->target_len);
  path_len = q ? (size_t)(q - target) : m->target_len;
  if (path_len > strlen(c->cfg->status_prefix) &&
      memcmp(target, c->cfg->status_prefix, strlen(c->cfg->status_prefix)) == 0) {
    c->status_query = true; /* answered by sluice, never routed */
    return 0;
  }
  c->route =
      sl_route_match(c->cfg, target, path_len, host ? sl_http_msg_str(m, host->value_off) : NULL,
                     host ? host->value_len : 0,
                     sl_method_bit(llhttp_method_name((llhttp_method_t)m->method),
                                   strlen(llhttp_method_name((llhttp_method_t)m->method))));
  if (c->route == NULL)
    c->error_status = 404;
  c->rstats = sl__server_route_stats(c->srv, c->cfg, c->route);
  c->slot = sl__server_slot(c->srv, c->cfg, c->route); /* once per request */
  if (m->expect_continue && m->http_minor >= 1 && c->error_status == 0 &&
      (m->chunked || m->content_length > 0)) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (sl__conn_write(c, cont, sizeof(cont) - 1) != 0)
      return -1;
    sl__conn_flush(c);
  }
  return 0;
}

static int on_req_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_conn *c = p->data;

  if (c->error_status != 0)
    return 0; /* read and dropped: the answer does not depend on it */
  if (sl_buf_append(&c->body, data, len) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory for the body");
    return -1;
  }
  return 0;
}

static int on_req_done(struct sl_http_parser *p) {
  struct sl_conn *c = p->data;

  c->state = CONN_PROXY;
  c->keep_alive = p->msg.keep_alive;
  sl__conn_disarm(c);
  return 0;
}

/* A complete request: answer it ourselves or forward it. */
static void dispatch(struct sl_conn *c) {
  /* A request sluice refuses as such (bad version, Host, framing or target)
   * fails in the parser and closes its connection there; a request it merely
   * has no route for gets its 404 once read, and the connection stays open. */
  if (c->error_status != 0)
    sl__conn_respond_error(c, c->error_status, c->error_status != 404);
  else if (c->status_query)
    sl__shape_status(c);
  else
    sl__shape_start(c);
}

/* Parses requests from <data> while the connection is ready for one. Returns
 * the bytes consumed; the rest waits until the current request is answered. */
static size_t conn_feed(struct sl_conn *c, const char *data, size_t len) {
  size_t done = 0;

  while (done < len && (c->state == CONN_IDLE || c->state == CONN_HEAD || c->state == CONN_BODY)) {
    ssize_t n;

    if (c->state == CONN_IDLE)
      start_request(c);
    n = sl_http_parser_feed(&c->parser, data + done, len - done);
    if (n < 0) {
      sl_log_info("conn %s: bad request: %s", c->client_addr,
                  c->parser.error_reason ? c->parser.error_reason : "malformed");
      uv_read_stop((uv_stream_t *)&c->tcp);
      sl__conn_respond_error(c, sl_http_error_status(c->parser.error), true);
      return len;
    }
    done += (size_t)n;
    if (c->parser.msg_done)
      dispatch(c);
  }
  return done;
}

static void conn_process_pending(struct sl_conn *c) {
  size_t n;

  if (c->processing || c->pending.len == 0)
    return;
  c->processing = true;
  n = conn_feed(c, c->pending.base, c->pending.len);
  if (c->state != CONN_CLOSED)
    sl_buf_consume(&c->pending, n);
  c->processing = false;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct sl_conn *c = s->data;
  size_t n;

  if (nread == 0)
    return;
  if (nread < 0) {
    if (c->state == CONN_HEAD || c->state == CONN_BODY || c->state == CONN_PROXY)
      sl_log_debug("conn %s: client closed in state %s", c->client_addr, state_names[c->state]);
    conn_close(c);
    return;
  }
  if (c->state == CONN_DRAINING)
    return; /* lingering: dropped */
  if (c->state == CONN_BODY)
    arm_timer(c, c->cfg->limits.body_timeout_ms);
  if (c->pending.len > 0 || c->state == CONN_PROXY) {
    if (sl_buf_append(&c->pending, buf->base, (size_t)nread) != 0) {
      conn_close(c);
      return;
    }
    conn_process_pending(c);
  } else {
    c->processing = true;
    n = conn_feed(c, buf->base, (size_t)nread);
    c->processing = false;
    if (n < (size_t)nread && c->state != CONN_CLOSED &&
        sl_buf_append(&c->pending, buf->base + n, (size_t)nread - n) != 0) {
      conn_close(c);
      return;
    }
  }
  /* Reading goes on while a request is answered (so that a client that goes
   * away is noticed), but pipelined requests are only buffered up to a bound;
   * beyond it they wait in the kernel, which pushes back on the client. */
  if (c->state == CONN_PROXY && c->pending.len >= PENDING_MAX) {
    uv_read_stop(s);
    c->read_paused = true;
  }
}

void sl__conn_accept(struct sl_server *srv) {
  const struct sl_config *cfg = srv->cfg;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  struct sl_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->deadline = UINT64_MAX;
  c->tcp.data = c;
  c->timer.data = c;
  c->srv = srv;
  c->open_handles = 2;
  sl_http_parser_init(&c->parser, HTTP_REQUEST, cfg->limits.max_header_bytes,
                      cfg->limits.max_body_bytes, on_req_head, on_req_body, on_req_done, c);
  sl_buf_init(&c->pending);
  sl_buf_init(&c->body);
  sl_buf_init(&c->out);
  sl__proxy_init(c);
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp) != 0) {
    c->state = CONN_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    return;
  }
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, c->client_addr, sizeof(c->client_addr));
    else
      uv_ip4_name((struct sockaddr_in *)&ss, c->client_addr, sizeof(c->client_addr));
  }
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->n_conns++;
  if (srv->n_conns > cfg->limits.max_connections) {
    /* Over the limit: closing at once tells the client to back off, where
     * leaving it in the accept queue would only make it wait for a timeout. */
    sl_log_warn("max_connections (%u) reached: connection from %s refused",
                cfg->limits.max_connections, c->client_addr);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->state = CONN_IDLE;
  arm_timer(c, cfg->limits.header_timeout_ms);
  read_start(c);
}

void sl__conn_shutdown(struct sl_conn *c) {
  if (c->state == CONN_IDLE)
    conn_close(c);
  else if (c->state == CONN_PROXY && c->shape == SHAPE_WATCHING)
    sl__shape_timeout(c); /* a client held in wait mode gets its 202 now */
  /* Busy connections close after their response (request_done checks
   * shutting_down); the server's grace timer bounds the wait. */
}
