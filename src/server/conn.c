/*
 * The client listener's dispatcher: what a request to the proxy means. The connection itself
 * (reading, parsing, timeouts, writing, keep-alive, the lingering close) is the HTTP/1 core,
 * sluice/http1.h; this file is its handler table for the client listener:
 *
 *   begin    a request starts: it takes a reference on the running config;
 *   head     its head is parsed: origin-form only, status URLs, the route and its upstream
 *            slot (once per request), and 404 for no route;
 *   start    it is complete: a status URL (shape.c) or a routed request (shape.c, which
 *            forwards it through proxy.c, spills it or queues it);
 *   refuse   sluice's own text/plain errors, with the log line of each kind;
 *   timeout, proceed, shutdown, cancel: the shaping's timer, a client that took enough of a
 *            proxied response, a graceful stop and a client that left, passed to shape.c and
 *            proxy.c;
 *   end      the answer is done: access log and sluice_requests_total.
 *
 * Ownership: a connection holds a config reference for each request, released when the
 * request ends; the connection's memory is the core's.
 *
 * @thread loop
 */
#include "server_int.h"

#include <stdio.h>
#include <string.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/util.h"

static struct sl_conn *conn_of(struct sl_http1_conn *h) {
  return sl_container_of(h, struct sl_conn, h1);
}

void sl__conn_respond_json(struct sl_conn *c, unsigned status, const char *headers,
                           const char *body, size_t body_len) {
  struct sl_buf *o = &c->h1.out;
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
  if (!c->h1.keep_alive)
    r |= sl_buf_append_str(o, "Connection: close\r\n");
  r |= sl_buf_append(o, "\r\n", 2);
  if (c->h1.parser.msg.method != HTTP_HEAD)
    r |= sl_buf_append(o, body, body_len);
  if (r != 0) {
    sl_http1_conn_close(&c->h1);
    return;
  }
  c->status = status;
  c->bytes_out = body_len;
  sl_http1_conn_done(&c->h1);
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
    c->h1.keep_alive = false;
  if (sl_http1_conn_write(&c->h1, head, (size_t)hn) != 0 ||
      sl_http1_conn_write(&c->h1, body, (size_t)bn) != 0) {
    sl_http1_conn_close(&c->h1);
    return;
  }
  if (c->h1.parser.msg.method == HTTP_HEAD)
    c->h1.out.len -= (size_t)bn;
  sl_http1_conn_done(&c->h1);
}

/* Limits of the client listener under <cfg>: the connection core's share of cfg->limits. */
void sl__conn_limits(const struct sl_config *cfg, struct sl_http1_limits *lim) {
  *lim = (struct sl_http1_limits){
      .max_header_bytes = cfg->limits.max_header_bytes,
      .max_body_bytes = cfg->limits.max_body_bytes,
      .accept_timeout_ms = cfg->limits.header_timeout_ms,
      .header_timeout_ms = cfg->limits.header_timeout_ms,
      .body_timeout_ms = cfg->limits.body_timeout_ms,
      .idle_timeout_ms = cfg->limits.idle_timeout_ms,
      .write_timeout_ms = 0, /* a slow reader is bounded by TCP, as before */
  };
}

static int on_accept(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);
  const struct sl_config *cfg;

  c->srv = sl_http1_listener_data(h->listener);
  cfg = sl_server_config(c->srv);
  sl__proxy_init(c);
  if (sl_http1_listener_conns(h->listener) > cfg->limits.max_connections) {
    /* Over the limit: closing at once tells the client to back off, where
     * leaving it in the accept queue would only make it wait for a timeout. */
    sl_log_warn("max_connections (%u) reached: connection from %s refused",
                cfg->limits.max_connections, h->client_addr);
    return -1;
  }
  return 0;
}

static void on_begin(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);

  c->cfg = sl_config_ref((struct sl_config *)sl_server_config(c->srv));
  c->t_start_ns = sl_clock_mono_ns();
  c->outcome = SL_OUTCOME_ERROR; /* until an upstream or the spool takes it */
}

static int on_head(struct sl_http1_conn *h, struct sl_http_msg *m) {
  struct sl_conn *c = conn_of(h);
  const struct sl_http_header *host = sl_http_msg_header(m, "host");
  const char *target = sl_http_msg_str(m, m->target_off);
  const char *q;
  size_t path_len;

  /* The parser has checked the head as HTTP (version, Host, framing). What
   * sluice refuses beyond that closes the connection at once, unread body and
   * all: absolute-form and CONNECT are for forward proxies. */
  if (target[0] != '/') {
    sl_http_parser_fail(&h->parser, SL_HTTP_EBADMSG, "request target not in origin form");
    return -1;
  }
  q = memchr(target, '?', m->target_len);
  path_len = q ? (size_t)(q - target) : m->target_len;
  if (path_len > strlen(c->cfg->status_prefix) &&
      memcmp(target, c->cfg->status_prefix, strlen(c->cfg->status_prefix)) == 0) {
    c->status_query = true;     /* answered by sluice, never routed */
    m->expect_continue = false; /* nor is its body asked for */
    return 0;
  }
  c->route =
      sl_route_match(c->cfg, target, path_len, host ? sl_http_msg_str(m, host->value_off) : NULL,
                     host ? host->value_len : 0,
                     sl_method_bit(llhttp_method_name((llhttp_method_t)m->method),
                                   strlen(llhttp_method_name((llhttp_method_t)m->method))));
  c->rstats = sl__server_route_stats(c->srv, c->cfg, c->route);
  c->slot = sl__server_slot(c->srv, c->cfg, c->route); /* once per request */
  return c->route == NULL ? 404 : 0;
}

/* A complete request: a status URL, or a routed one to shape. */
static void on_start(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);

  if (c->status_query)
    sl__shape_status(c);
  else
    sl__shape_start(c);
}

/* A request sluice refuses as such (bad version, Host, framing or target) fails in the parser
 * and closes its connection; a request it merely has no route for gets its 404 once read, and
 * the connection stays open. */
static void on_refuse(struct sl_http1_conn *h, enum sl_http1_refusal why, unsigned status) {
  struct sl_conn *c = conn_of(h);

  if (why == SL_HTTP1_MALFORMED)
    sl_log_info("conn %s: bad request: %s", h->client_addr,
                h->parser.error_reason ? h->parser.error_reason : "malformed");
  else if (why == SL_HTTP1_TIMEOUT)
    sl_log_info("conn %s: request %s timed out", h->client_addr,
                h->state == SL_HTTP1_HEAD ? "head" : "body");
  sl__conn_respond_error(c, status, why != SL_HTTP1_REFUSED || status != 404);
}

static void on_timeout(struct sl_http1_conn *h) { sl__shape_timeout(conn_of(h)); }

static void on_proceed(struct sl_http1_conn *h) { sl__proxy_client_drained(conn_of(h)); }

/* The answer is done: log and count it, and forget the request. */
static void on_end(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);

  sl__shape_finish(c);
  if (c->cfg != NULL && c->cfg->log.access)
    sl__access_log_write(c->srv->access_log, c);
  /* Status URL lookups are sluice's own API, not traffic through a route. */
  if (!c->status_query)
    sl__stats_request_done(c->rstats ? c->rstats : c->srv->unrouted_stats, c->outcome, c->status,
                           (double)(sl_clock_mono_ns() - c->t_start_ns) / 1e9);
  sl_config_unref(c->cfg);
  c->cfg = NULL;
  c->route = NULL;
  c->slot = NULL;
  c->rstats = NULL;
  c->status_query = false;
  c->drain = NULL;
  c->status = 0;
  c->bytes_out = 0;
  c->t_upstream_ns = 0;
}

/* A graceful shutdown: a client held in wait mode gets its 202 now. */
static void on_shutdown(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);

  if (c->shape == SHAPE_WATCHING)
    sl__shape_timeout(c);
}

static void on_cancel(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);

  sl__proxy_cancel(c);
  sl__shape_finish(c);
}

static void on_dispose(struct sl_http1_conn *h) {
  struct sl_conn *c = conn_of(h);

  sl__proxy_dispose(c);
  sl_config_unref(c->cfg);
}

static const struct sl_http1_handler handler = {
    .accept = on_accept,
    .begin = on_begin,
    .head = on_head,
    .start = on_start,
    .refuse = on_refuse,
    .timeout = on_timeout,
    .proceed = on_proceed,
    .end = on_end,
    .shutdown = on_shutdown,
    .cancel = on_cancel,
    .dispose = on_dispose,
};

const struct sl_http1_settings sl__conn_settings = {
    .log_prefix = "",
    .conn_size = sizeof(struct sl_conn),
    .serial = false,
    .body_timeout_total = false,
    .handler = &handler,
};
