/*
 * Forwarding one request to its upstream and streaming the response back: the
 * client side of the exchange. The exchange itself (connection, writing the
 * request, parsing the response, the stale-connection retry, timeouts, and who
 * owns the request bytes while they are written) is include/sluice/exchange.h,
 * shared with the replayer.
 *
 * The request was read whole (its body is in the connection), so it goes out
 * with a Content-Length, from <upreq> (the head) and <body>, which the exchange
 * borrows: the connection leaves both alone until the exchange has ended, and
 * then finds them intact or emptied (a write still pending keeps the bytes).
 * The response is re-framed for the client as it arrives, and reading it
 * pauses while the client is too far behind.
 *
 * Failure classes, as nginx draws them: nothing of the response sent yet ->
 * 502 (refused, reset, bad response) or 504 (timeout) from sluice; response
 * head already sent -> the client connection is closed, so that a truncated
 * body is never passed off as complete.
 */
#include "server_int.h"

#include <stdlib.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/metrics.h"

static void release_inflight(struct sl_conn *c) {
  if (c->counted_inflight) {
    c->counted_inflight = false;
    sl_metrics_add(c->ustats->inflight, -1);
  }
}

static const char *upstream_name(const struct sl_conn *c) {
  return c->cfg->upstreams[c->route->upstream].name;
}

/* The exchange failed as <res> says. */
static void fail(struct sl_conn *c, const struct sl_upx_result *res) {
  unsigned status = res->error == UV_ETIMEDOUT ? 504 : 502;

  if (res->error == UV_ETIMEDOUT && c->drain != NULL)
    sl_drain_live_timed_out(c->drain);

  sl_log_warn("upstream %s: %s%s%s: %s (client %s)", upstream_name(c), res->what,
              res->detail ? ": " : "", res->detail ? res->detail : "", uv_strerror(res->error),
              c->h1.client_addr);
  if (c->head_sent) {
    sl_http1_conn_close(&c->h1);
    return;
  }
  sl__conn_respond_error(c, status, false);
}

/* The response is complete and handed to the client connection. */
static void complete(struct sl_conn *c) {
  if (c->ustats != NULL)
    sl_metrics_observe(c->ustats->duration, (double)c->t_upstream_ns / 1e9);
  sl_http1_conn_done(&c->h1);
}

static void on_upx_end(struct sl_upx *x, const struct sl_upx_result *res, void *user) {
  struct sl_conn *c = user;

  (void)x;
  release_inflight(c);
  c->upstream_paused = false;
  c->t_upstream_ns = res->duration_ns;
  if (res->error != 0) {
    /* Nothing reached the backend: the circuit hears of it, and a request that
     * may spill is queued instead of answered 502. */
    if (res->nothing_sent && sl__shape_spill_unsent(c, res->error))
      return;
    fail(c, res);
    return;
  }
  if (c->framing == SL_FRAME_CHUNKED && sl_buf_append(&c->h1.out, "0\r\n\r\n", 5) != 0) {
    sl_http1_conn_close(&c->h1); /* the body cannot be ended: it must not look complete */
    return;
  }
  if (sl_http1_conn_flush(&c->h1) != 0)
    return; /* the client is gone */
  complete(c);
}

static int on_upx_head(struct sl_upx *x, const struct sl_http_msg *m, void *user) {
  struct sl_conn *c = user;
  const struct sl_http_msg *req = &c->h1.parser.msg;
  bool client_11 = req->http_major == 1 && req->http_minor >= 1;

  (void)x;
  if (m->other_codings && !m->no_body) {
    sl_log_warn("upstream %s: bad response: transfer coding other than chunked", upstream_name(c));
    return UV_EPROTO;
  }
  if (m->no_body)
    c->framing = SL_FRAME_NONE;
  else if (m->content_length >= 0)
    c->framing = SL_FRAME_LENGTH;
  else if (client_11)
    c->framing = SL_FRAME_CHUNKED;
  else
    c->framing = SL_FRAME_CLOSE;
  if (c->framing == SL_FRAME_CLOSE)
    c->h1.keep_alive = false;
  c->status = m->status;
  c->outcome = SL_OUTCOME_FORWARDED;
  sl__shape_forward_answered(c, m); /* the circuit hears how the backend answered */
  if (sl_http_write_response_head(&c->h1.out, m, req, c->framing, c->h1.keep_alive) != 0)
    return UV_ENOMEM;
  c->head_sent = true;
  return 0;
}

static int on_upx_body(struct sl_upx *x, const char *data, size_t len, void *user) {
  struct sl_conn *c = user;
  int r = 0;

  (void)x;
  if (c->framing == SL_FRAME_CHUNKED) {
    r |= sl_buf_printf(&c->h1.out, "%zx\r\n", len);
    r |= sl_buf_append(&c->h1.out, data, len);
    r |= sl_buf_append(&c->h1.out, "\r\n", 2);
  } else {
    r = sl_buf_append(&c->h1.out, data, len);
  }
  c->bytes_out += len;
  return r != 0 ? UV_ENOMEM : 0;
}

/* One read of the response was passed on: hand it to the client, and stop
 * reading while the client is too far behind. */
static void on_upx_read(struct sl_upx *x, void *user) {
  struct sl_conn *c = user;

  if (sl_http1_conn_flush(&c->h1) != 0)
    return; /* the client is gone; closing it cancelled the exchange */
  if (sl_http1_conn_congested(&c->h1)) {
    sl_upx_pause(x);
    c->upstream_paused = true;
  }
}

static const struct sl_upx_callbacks upx_callbacks = {
    .on_head = on_upx_head,
    .on_body = on_upx_body,
    .on_read = on_upx_read,
    .on_end = on_upx_end,
};

void sl__proxy_start(struct sl_conn *c) {
  const struct sl_upstream_config *ucfg = &c->cfg->upstreams[c->route->upstream];
  struct sl_http_forward fwd = {
      .client_addr = c->h1.client_addr,
      .proto = "http",
      .upstream_host = ucfg->address.text,
      .body_len = c->h1.body.len,
  };
  struct sl_upx_request req = {
      .method = c->h1.parser.msg.method,
      .head = &c->upreq,
      .body = &c->h1.body,
      .timeout_ms = ucfg->response_timeout_ms,
  };

  c->upstream = c->slot != NULL ? c->slot->pool : NULL;
  c->ustats = c->slot != NULL ? c->slot->stats : NULL;
  c->head_sent = false;
  c->upstream_paused = false;
  sl_buf_reset(&c->upreq);
  if (c->upx == NULL)
    c->upx = sl_upx_create(&upx_callbacks, c); /* once per connection */
  if (c->upstream == NULL || c->upx == NULL ||
      sl_http_write_request_head(&c->upreq, &c->h1.parser.msg, &fwd) != 0) {
    sl__conn_respond_error(c, 503, true);
    return;
  }
  if (c->ustats != NULL) {
    c->counted_inflight = true;
    sl_metrics_inc(c->ustats->inflight);
  }
  sl_upx_start(c->upx, c->upstream, &req);
}

void sl__proxy_client_drained(struct sl_conn *c) {
  if (!c->upstream_paused)
    return;
  c->upstream_paused = false;
  sl_upx_resume(c->upx);
}

void sl__proxy_cancel(struct sl_conn *c) {
  release_inflight(c);
  c->upstream_paused = false;
  sl_upx_cancel(c->upx);
}

void sl__proxy_init(struct sl_conn *c) {
  sl_buf_init(&c->upreq);
  c->upx = NULL;
}

void sl__proxy_dispose(struct sl_conn *c) {
  sl_upx_destroy(c->upx);
  c->upx = NULL;
  sl_buf_dispose(&c->upreq);
}
