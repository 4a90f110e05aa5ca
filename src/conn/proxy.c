/*
 * Forwarding one request to its upstream and streaming the response back.
 *
 * The request was read whole (its body is in the connection), so it goes out
 * as one write with a Content-Length, and it can be sent again: a pooled
 * connection that the backend closed just before our request is detected by
 * an EOF or reset before any response byte, and an idempotent request is then
 * retried once on a fresh connection.
 *
 * Failure classes, as nginx draws them: nothing of the response sent yet ->
 * 502 (refused, reset, bad response) or 504 (timeout) from sluice; response
 * head already sent -> the client connection is closed, so that a truncated
 * body is never passed off as complete.
 */
#include "conn_int.h"

#include <stdlib.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/metrics.h"

/* The upstream write outlives the connection if the client goes away while it
 * is pending, so it is allocated on its own and detached on cancel. */
struct upstream_write {
  uv_write_t req;
  struct sl_conn *c;
};

static void send_request(struct sl_conn *c);
static void on_upstream_read(struct sl_upconn *uc, ssize_t nread, const char *buf, void *user);

static void detach_write(struct sl_conn *c) {
  struct upstream_write *w = c->upwrite;

  if (w != NULL)
    w->c = NULL;
  c->upwrite = NULL;
}

static void release_upstream(struct sl_conn *c, bool reusable) {
  detach_write(c);
  if (c->counted_inflight) {
    c->counted_inflight = false;
    sl_metrics_add(c->ustats->inflight, -1);
  }
  if (c->uc == NULL)
    return;
  if (reusable)
    sl_upconn_release(c->uc, true);
  else
    sl_upconn_abort(c->uc);
  c->uc = NULL;
}

static const char *upstream_name(const struct sl_conn *c) {
  return c->cfg->upstreams[c->route->upstream].name;
}

/* The exchange failed with <err> (a UV_* code). */
static void fail(struct sl_conn *c, int err, const char *what) {
  unsigned status = err == UV_ETIMEDOUT ? 504 : 502;

  sl_log_warn("upstream %s: %s: %s (client %s)", upstream_name(c), what, uv_strerror(err),
              c->client_addr);
  release_upstream(c, false);
  c->t_upstream_ns = sl_clock_mono_ns() - c->t_upstream_start_ns;
  if (c->head_sent) {
    sl__conn_abort(c);
    return;
  }
  sl__conn_respond_error(c, status, false);
}

static void on_ready(struct sl_upconn *uc, int status, void *user) {
  struct sl_conn *c = user;

  (void)uc;
  if (status < 0) {
    c->uc = NULL;
    if (sl__shape_spill_unsent(c, status)) /* circuit hook: report; spill what may */
      return;
    fail(c, status, "connect failed");
    return;
  }
  send_request(c);
}

static void attempt(struct sl_conn *c, bool fresh) {
  int r = sl_upstream_get(c->upstream, fresh, on_ready, c, &c->uc);

  if (r == 1)
    send_request(c);
  else if (r < 0) {
    c->uc = NULL;
    if (!sl__shape_spill_unsent(c, r)) /* circuit hook: report; spill what may */
      fail(c, r, "connect failed");
  }
}

/* A reused connection that fails before any response byte was most likely
 * closed by the backend while idle: retry once, fresh, if that is safe. */
static bool retry_stale(struct sl_conn *c) {
  if (!sl_upconn_stale_retry_ok(c->uc, c->retried, c->resp.started,
                                sl_http_method_idempotent(c->parser.msg.method)))
    return false;
  sl_log_debug("upstream %s: pooled connection was closed, retrying", upstream_name(c));
  c->retried = true;
  release_upstream(c, false);
  attempt(c, true);
  return true;
}

static void on_upstream_write(uv_write_t *req, int status) {
  struct upstream_write *w = (struct upstream_write *)req;
  struct sl_conn *c = w->c;

  free(w);
  if (c == NULL)
    return;
  c->upwrite = NULL;
  if (status < 0 && !retry_stale(c))
    fail(c, status, "sending the request failed");
}

static void on_response_timeout(struct sl_upconn *uc, void *user) {
  struct sl_conn *c = user;

  (void)uc;
  fail(c, UV_ETIMEDOUT, "no response in time");
}

/* Writes what uv_try_write could not; the rest of <bufs> from byte <done> on. */
static int write_rest(struct sl_conn *c, uv_buf_t *bufs, unsigned nbufs, size_t done) {
  struct upstream_write *w;
  unsigned i = 0;
  int r;

  while (i < nbufs && done >= bufs[i].len)
    done -= bufs[i++].len;
  if (i == nbufs)
    return 0;
  bufs[i].base += done;
  bufs[i].len -= done;
  w = malloc(sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->c = c;
  c->upwrite = w;
  r = uv_write(&w->req, sl_upconn_stream(c->uc), bufs + i, nbufs - i, on_upstream_write);
  if (r != 0) {
    free(w);
    c->upwrite = NULL;
  }
  return r;
}

static void send_request(struct sl_conn *c) {
  uv_buf_t bufs[2];
  unsigned nbufs = c->body.len ? 2 : 1;
  int r;

  c->t_upstream_start_ns = sl_clock_mono_ns();
  if (c->ustats != NULL && !c->counted_inflight) {
    c->counted_inflight = true;
    sl_metrics_inc(c->ustats->inflight);
  }
  sl_http_parser_next(&c->resp, c->parser.msg.method == HTTP_HEAD);
  bufs[0] = uv_buf_init(c->upreq.base, (unsigned)c->upreq.len);
  bufs[1] = uv_buf_init(c->body.base, (unsigned)c->body.len);
  /* Most requests fit the socket buffer: written now, without a write
   * request (which in libuv also costs an epoll_ctl when it completes). */
  r = uv_try_write(sl_upconn_stream(c->uc), bufs, nbufs);
  if (r >= 0 || r == UV_EAGAIN)
    r = write_rest(c, bufs, nbufs, r >= 0 ? (size_t)r : 0);
  if (r != 0) {
    if (!retry_stale(c))
      fail(c, r, "sending the request failed");
    return;
  }
  r = sl_upconn_read_start(c->uc, on_upstream_read);
  if (r != 0) {
    fail(c, r, "reading the response failed");
    return;
  }
  sl_upconn_set_timer(c->uc, sl_upstream_config_of(c->upstream)->response_timeout_ms,
                      on_response_timeout);
}

void sl__proxy_start(struct sl_conn *c) {
  const struct sl_upstream_config *ucfg = &c->cfg->upstreams[c->route->upstream];
  struct sl_http_forward fwd = {
      .client_addr = c->client_addr,
      .proto = "http",
      .upstream_host = ucfg->address.text,
      .body_len = c->body.len,
  };

  c->upstream = sl__server_upstream(c->srv, ucfg->name, &c->ustats);
  c->head_sent = false;
  c->resp_done = false;
  c->retried = false;
  c->upstream_paused = false;
  sl_buf_reset(&c->upreq);
  if (c->upstream == NULL || sl_http_write_request_head(&c->upreq, &c->parser.msg, &fwd) != 0) {
    sl__conn_respond_error(c, 503, true);
    return;
  }
  attempt(c, false);
}

static int on_resp_head(struct sl_http_parser *p, struct sl_http_msg *m) {
  struct sl_conn *c = p->data;
  const struct sl_http_msg *req = &c->parser.msg;
  bool client_11 = req->http_major == 1 && req->http_minor >= 1;

  if (m->status < 200)
    return 0; /* 1xx: interim, not passed on (the Expect exchange was ours) */
  if (m->other_codings && !m->no_body) {
    sl_http_parser_fail(p, SL_HTTP_EBADMSG, "transfer coding other than chunked");
    return -1;
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
    c->keep_alive = false;
  c->status = m->status;
  c->outcome = SL_OUTCOME_FORWARDED;
  sl__shape_forward_answered(c, m->status); /* circuit hook: the backend answered */
  if (sl_http_write_response_head(&c->out, m, req, c->framing, c->keep_alive) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  c->head_sent = true;
  return 0;
}

static int on_resp_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_conn *c = p->data;
  int r = 0;

  if (c->framing == SL_FRAME_CHUNKED) {
    r |= sl_buf_printf(&c->out, "%zx\r\n", len);
    r |= sl_buf_append(&c->out, data, len);
    r |= sl_buf_append(&c->out, "\r\n", 2);
  } else {
    r = sl_buf_append(&c->out, data, len);
  }
  c->bytes_out += len;
  if (r != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static int on_resp_done(struct sl_http_parser *p) {
  struct sl_conn *c = p->data;

  if (p->msg.status < 200)
    return 0;
  c->resp_done = true;
  if (c->framing == SL_FRAME_CHUNKED && sl_buf_append(&c->out, "0\r\n\r\n", 5) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static void complete(struct sl_conn *c, bool reusable) {
  c->t_upstream_ns = sl_clock_mono_ns() - c->t_upstream_start_ns;
  if (c->ustats != NULL)
    sl_metrics_observe(c->ustats->duration, (double)c->t_upstream_ns / 1e9);
  release_upstream(c, reusable);
  sl__conn_request_done(c);
}

static void on_upstream_eof(struct sl_conn *c, ssize_t err) {
  if (err == UV_EOF && c->head_sent && sl_http_parser_finish(&c->resp) == 0 && c->resp_done) {
    /* A close-delimited body ends here. */
    if (sl__conn_flush(c) == 0)
      complete(c, false);
    return;
  }
  if (retry_stale(c))
    return;
  if (!c->resp.started)
    fail(c, (int)err, "closed without a response");
  else
    fail(c, err == UV_EOF ? UV_ECONNRESET : (int)err, "response cut short");
}

static void on_upstream_read(struct sl_upconn *uc, ssize_t nread, const char *buf, void *user) {
  struct sl_conn *c = user;
  size_t done = 0;

  if (nread < 0) {
    on_upstream_eof(c, nread);
    return;
  }
  while (done < (size_t)nread) {
    ssize_t n = sl_http_parser_feed(&c->resp, buf + done, (size_t)nread - done);

    if (n < 0) {
      sl_log_warn("upstream %s: bad response: %s", upstream_name(c),
                  c->resp.error_reason ? c->resp.error_reason : "malformed");
      fail(c, UV_EPROTO, "bad response");
      return;
    }
    done += (size_t)n;
    if (!c->resp.msg_done)
      break;
    if (c->resp.msg.status >= 200)
      break;
    sl_http_parser_next(&c->resp, c->parser.msg.method == HTTP_HEAD);
  }
  if (sl__conn_flush(c) != 0)
    return; /* the client is gone; closing it released the upstream */
  if (c->resp_done) {
    /* Bytes after the response mean the backend is out of step: do not reuse. */
    complete(c, c->resp.msg.keep_alive && done == (size_t)nread);
    return;
  }
  sl_upconn_set_timer(uc, sl_upstream_config_of(c->upstream)->response_timeout_ms,
                      on_response_timeout);
  if (sl__conn_client_congested(c)) {
    sl_upconn_read_stop(uc);
    c->upstream_paused = true;
  }
}

void sl__proxy_client_drained(struct sl_conn *c) {
  if (!c->upstream_paused || c->uc == NULL)
    return;
  c->upstream_paused = false;
  if (sl_upconn_read_start(c->uc, on_upstream_read) != 0)
    fail(c, UV_EIO, "reading the response failed");
}

void sl__proxy_cancel(struct sl_conn *c) { release_upstream(c, false); }

void sl__proxy_init(struct sl_conn *c) {
  sl_buf_init(&c->upreq);
  c->upwrite = NULL;
  /* Response heads are not limited by the client limits: the backend is trusted
   * more, but not unboundedly. */
  sl_http_parser_init(&c->resp, HTTP_RESPONSE, 64 * 1024, 0, on_resp_head, on_resp_body,
                      on_resp_done, c);
}

void sl__proxy_dispose(struct sl_conn *c) {
  detach_write(c);
  sl_buf_dispose(&c->upreq);
  sl_http_parser_dispose(&c->resp);
}
