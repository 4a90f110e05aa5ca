/*
 * One small HTTP/1.1 client over a uv_tcp_t, for sluicectl's calls to the admin listener
 * and the client listener. The answer is read with the project's llhttp wrapper
 * (sluice/http.h), the same strict parser sluice reads its backends' answers with.
 *
 * One exchange at a time: sl_ctl_http_request() writes the request, runs the loop until the
 * whole answer is in or the exchange failed, and returns. The connection is kept alive
 * between requests when the server allows it (bulk redrives and --watch send many), and a
 * request that meets a kept-alive connection the server has closed meanwhile is sent again
 * once on a new one.
 *
 * Every exchange is bounded by the timer (timeout_ms, from the connect to the last byte).
 * A failed or timed-out exchange gives its connection up: the connection's memory (and the
 * request bytes its write still uses) is freed in the handle's close callback, after libuv
 * has run the callbacks of its pending connect and write with UV_ECANCELED; a connection
 * given up no longer points at the client, so those callbacks only clean up.
 *
 * @thread main
 */
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/util.h"

#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_BODY_BYTES (256u * 1024 * 1024) /* a page of dead letters with headers fits */

struct sl_ctl_http_conn {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  struct sl_buf out;     /* the request, alive until the write's callback */
  struct sl_ctl_http *h; /* NULL once given up */
  bool connected;        /* the connect succeeded */
  bool served;           /* an exchange ended on it: it is a kept-alive connection */
};

/* One buffer for every read: each read callback feeds all of it to the parser. */
static char read_buf[64 * 1024];

void sl_ctl_response_init(struct sl_ctl_response *r) {
  r->status = 0;
  sl_buf_init(&r->body);
}

void sl_ctl_response_dispose(struct sl_ctl_response *r) { sl_buf_dispose(&r->body); }

void sl_ctl_http_init(struct sl_ctl_http *h, uv_loop_t *loop, const struct sockaddr_storage *sa,
                      const char *host, uint64_t timeout_ms) {
  memset(h, 0, sizeof(*h));
  h->loop = loop;
  h->sa = *sa;
  snprintf(h->host, sizeof(h->host), "%s", host);
  h->timeout_ms = timeout_ms;
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
}

static void on_conn_closed(uv_handle_t *handle) {
  struct sl_ctl_http_conn *conn = handle->data;

  sl_buf_dispose(&conn->out);
  free(conn);
}

/* Gives the connection up: closed now, freed once its handle is. */
static void drop_conn(struct sl_ctl_http *h) {
  struct sl_ctl_http_conn *conn = h->conn;

  if (conn == NULL)
    return;
  h->conn = NULL;
  conn->h = NULL;
  uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
}

/* The exchange ended, well (<err> 0) or not. */
static void finish(struct sl_ctl_http *h, int err, const char *what) {
  if (h->done || h->error != 0)
    return;
  uv_timer_stop(&h->timer);
  if (err != 0) {
    h->error = err;
    h->error_what = what;
    drop_conn(h);
    return;
  }
  h->done = true;
  if (h->conn == NULL)
    return;
  uv_read_stop((uv_stream_t *)&h->conn->tcp);
  h->conn->served = true;
  if (!h->parser.msg.keep_alive)
    drop_conn(h);
}

static void on_timeout(uv_timer_t *t) {
  struct sl_ctl_http *h = t->data;

  finish(h, UV_ETIMEDOUT,
         h->got_bytes                            ? "read"
         : h->conn != NULL && h->conn->connected ? "answer"
                                                 : "connect");
}

/* ---- the parser's callbacks ---- */

static int on_head(struct sl_http_parser *p, struct sl_http_msg *msg) {
  struct sl_ctl_http *h = p->data;

  h->resp->status = msg->status;
  return 0;
}

static int on_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_ctl_http *h = p->data;

  if (sl_buf_append(&h->resp->body, data, len) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static int on_done(struct sl_http_parser *p) {
  finish(p->data, 0, NULL);
  return 0;
}

/* ---- the connection's callbacks ---- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct sl_ctl_http_conn *conn = stream->data;
  struct sl_ctl_http *h = conn->h;

  if (h == NULL || nread == 0)
    return;
  if (nread < 0) {
    /* An answer delimited by the close completes here; anything else is cut short. */
    if (nread == UV_EOF && h->got_bytes && sl_http_parser_finish(&h->parser) == 0 && h->done)
      return;
    finish(h, (int)nread, "read");
    return;
  }
  h->got_bytes = true;
  if (sl_http_parser_feed(&h->parser, buf->base, (size_t)nread) < 0)
    finish(h, UV_EPROTO, "read");
}

static void on_write(uv_write_t *req, int status) {
  struct sl_ctl_http_conn *conn = req->data;

  if (conn->h != NULL && status < 0)
    finish(conn->h, status, "send");
}

/* Writes the request and reads the answer. */
static void send_request(struct sl_ctl_http *h) {
  struct sl_ctl_http_conn *conn = h->conn;
  uv_buf_t b = uv_buf_init(conn->out.base, (unsigned)conn->out.len);
  int rc;

  conn->write.data = conn;
  rc = uv_write(&conn->write, (uv_stream_t *)&conn->tcp, &b, 1, on_write);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
  if (rc != 0)
    finish(h, rc, "send");
}

static void on_connect(uv_connect_t *req, int status) {
  struct sl_ctl_http_conn *conn = req->data;

  if (conn->h == NULL)
    return;
  if (status < 0) {
    finish(conn->h, status, "connect");
    return;
  }
  conn->connected = true;
  send_request(conn->h);
}

/* Opens a new connection; the request follows once it is up. */
static int open_conn(struct sl_ctl_http *h) {
  struct sl_ctl_http_conn *conn = calloc(1, sizeof(*conn));
  int rc;

  if (conn == NULL)
    return UV_ENOMEM;
  sl_buf_init(&conn->out);
  rc = uv_tcp_init(h->loop, &conn->tcp);
  if (rc != 0) {
    free(conn);
    return rc;
  }
  conn->tcp.data = conn;
  conn->connect.data = conn;
  conn->h = h;
  h->conn = conn;
  uv_tcp_nodelay(&conn->tcp, 1);
  rc = uv_tcp_connect(&conn->connect, &conn->tcp, (const struct sockaddr *)&h->sa, on_connect);
  if (rc != 0) {
    drop_conn(h);
    return rc;
  }
  return 0;
}

/* Runs one exchange on the connection there is, or a new one. Returns 0 or its error. */
static int exchange(struct sl_ctl_http *h, const char *method, const char *target,
                    const char *token) {
  bool reuse = h->conn != NULL;
  struct sl_ctl_http_conn *conn;
  int rc;

  h->done = false;
  h->error = 0;
  h->error_what = NULL;
  h->got_bytes = false;
  h->resp->status = 0;
  sl_buf_reset(&h->resp->body);
  sl_http_parser_init(&h->parser, HTTP_RESPONSE, MAX_HEAD_BYTES, MAX_BODY_BYTES, on_head, on_body,
                      on_done, h);
  if (!reuse && (rc = open_conn(h)) != 0) {
    h->error = rc;
    h->error_what = "connect";
    return rc;
  }
  conn = h->conn;
  sl_buf_reset(&conn->out);
  if (sl_buf_printf(&conn->out,
                    "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sluicectl/%s\r\n"
                    "Accept: application/json\r\nContent-Length: 0\r\n",
                    method, target, h->host, SLUICE_VERSION) != 0 ||
      (token != NULL && sl_buf_printf(&conn->out, "Authorization: Bearer %s\r\n", token) != 0) ||
      sl_buf_append_str(&conn->out, "\r\n") != 0) {
    h->error = UV_ENOMEM;
    h->error_what = "send";
    drop_conn(h);
    uv_run(h->loop, UV_RUN_DEFAULT);
    return UV_ENOMEM;
  }
  uv_timer_start(&h->timer, on_timeout, h->timeout_ms, 0);
  if (reuse)
    send_request(h);
  uv_run(h->loop, UV_RUN_DEFAULT);
  if (!h->done && h->error == 0) { /* nothing left to wait for, and no end: cannot be */
    h->error = UV_EPROTO;
    h->error_what = "read";
    drop_conn(h);
    uv_run(h->loop, UV_RUN_DEFAULT);
  }
  return h->done ? 0 : h->error;
}

int sl_ctl_http_request(struct sl_ctl_http *h, const char *method, const char *target,
                        const char *token, struct sl_ctl_response *resp) {
  bool reused = h->conn != NULL && h->conn->served;
  int rc;

  h->resp = resp;
  rc = exchange(h, method, target, token);
  /* A kept-alive connection the server closed while it was idle (its idle timeout): the
   * request did not reach it, so it goes once more on a new connection. Should it have
   * reached it after all, no harm is done: every call sluicectl makes may be repeated (a
   * pause, a rate, a reload, a redrive or purge of one id, which then finds it gone). */
  if (rc != 0 && reused && !h->got_bytes &&
      (rc == UV_EOF || rc == UV_ECONNRESET || rc == UV_EPIPE)) {
    sl_http_parser_dispose(&h->parser);
    rc = exchange(h, method, target, token);
  }
  sl_http_parser_dispose(&h->parser);
  h->resp = NULL;
  return rc;
}

void sl_ctl_http_abort(struct sl_ctl_http *h) {
  if (h->resp != NULL)
    finish(h, UV_ECANCELED, "interrupted");
}

void sl_ctl_http_dispose(struct sl_ctl_http *h) {
  drop_conn(h);
  uv_close((uv_handle_t *)&h->timer, NULL);
  uv_run(h->loop, UV_RUN_DEFAULT);
}
