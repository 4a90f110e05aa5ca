/*
 * One request/response exchange with an upstream: see include/sluice/exchange.h.
 *
 * States: IDLE -(start)-> CONNECT -(connection)-> RESPONSE -(complete, failed,
 * cancelled)-> IDLE. A stale pooled connection sends it back to CONNECT for one
 * fresh attempt, through RETRY when the abandoned attempt's write is still
 * pending: the retry then waits for that write's callback to hand the request
 * bytes back.
 *
 * Memory: the pending write (struct upx_write) is allocated on its own, only
 * when uv_try_write could not send everything, and owns the request bytes
 * until its callback; the exchange points at it and detaches it when it ends
 * (<x> NULL: the callback then only frees). The object itself is freed by
 * sl_upx_destroy(), deferred while one of its callbacks runs (<busy>). Every
 * call of user code is followed by a check of <gen>, which moves on whenever
 * an exchange ends or is cancelled: user code may end, restart or destroy it.
 */
#include "sluice/exchange.h"

#include <assert.h>
#include <stdlib.h>

#include "sluice/clock.h"
#include "sluice/log.h"

/* Response heads are not limited by the client limits: the backend is
 * trusted more, but not unboundedly. */
#define RESP_HEAD_MAX (64 * 1024)

enum upx_state { UPX_IDLE, UPX_CONNECT, UPX_RESPONSE, UPX_RETRY };

static const char *const state_names[] = {"idle", "connect", "response", "retry"};

struct upx_write {
  uv_write_t req;
  struct sl_buf bytes[2]; /* the request head and body, owned until the callback */
  struct sl_upx *x;       /* NULL once the exchange let go of it */
};

struct sl_upx {
  const struct sl_upx_callbacks *cb;
  void *user;
  enum upx_state state;
  unsigned gen;  /* changes whenever an exchange ends: see the file comment */
  unsigned busy; /* entries into the exchange (loop callbacks, API calls) running */
  bool dying;    /* destroyed while busy: freed when the outermost entry returns */
  bool clean;    /* the parser sits between messages; else it is reset on start */

  /* The current exchange. */
  struct sl_upstream *up;
  struct sl_upconn *uc;
  struct upx_write *write; /* its pending write, if any */
  struct sl_buf *head, *body;
  struct sl_http_parser resp;
  uint8_t method;
  bool idempotent;
  bool retried;
  bool sent;      /* a byte of the request was handed to a connection */
  bool paused;    /* reading stopped by sl_upx_pause() */
  int user_error; /* what a head or body callback refused the response with */
  uint64_t timeout_ms;
  uint64_t t_start_ns;
};

static void attempt(struct sl_upx *x, bool fresh);
static void on_read(struct sl_upconn *uc, ssize_t nread, const char *buf, void *arg);

static void upx_free(struct sl_upx *x) {
  sl_http_parser_dispose(&x->resp);
  free(x);
}

static void enter(struct sl_upx *x) { x->busy++; }

static void leave(struct sl_upx *x) {
  if (--x->busy == 0 && x->dying)
    upx_free(x);
}

static void write_free(struct upx_write *w) {
  sl_buf_dispose(&w->bytes[0]);
  sl_buf_dispose(&w->bytes[1]);
  free(w);
}

/* The exchange lets go of its pending write: the write keeps the bytes and
 * frees them when it calls back. */
static void detach_write(struct sl_upx *x) {
  if (x->write != NULL)
    x->write->x = NULL;
  x->write = NULL;
}

/* Leaves <x> idle: connection closed (or released by the caller first), write
 * detached. Every end goes through here, and it moves <gen> on. */
static void go_idle(struct sl_upx *x) {
  detach_write(x);
  if (x->uc != NULL)
    sl_upconn_abort(x->uc);
  x->uc = NULL;
  x->head = x->body = NULL;
  x->state = UPX_IDLE;
  x->gen++;
}

/*
 * Ends the exchange with <error> (0: the response is complete; then <reusable>
 * says whether the connection may be pooled) and calls the end callback last.
 */
static void end(struct sl_upx *x, int error, const char *what, const char *detail, bool reusable) {
  struct sl_upx_result res = {
      .error = error,
      .what = what,
      .detail = detail,
      .nothing_sent = error != 0 && !x->sent,
      .response_started = x->resp.started,
      .duration_ns = sl_clock_mono_ns() - x->t_start_ns,
      .head = error == 0 ? &x->resp.msg : NULL,
  };

  if (error == 0 && x->uc != NULL) {
    /* With the write still pending (an early answer) the pool closes the
     * connection once the write has ended, whatever <reusable> says. */
    sl_upconn_release(x->uc, reusable && x->write == NULL);
    x->uc = NULL;
  }
  x->clean = error == 0 && reusable;
  go_idle(x);
  x->cb->on_end(x, &res, x->user);
}

/* A reused connection that fails before any response byte was most likely
 * closed by the backend while idle: retry once, fresh, if that is safe. */
static bool retry_stale(struct sl_upx *x) {
  if (!sl_upconn_stale_retry_ok(x->uc, x->retried, x->resp.started, x->idempotent))
    return false;
  sl_log_debug("upstream %s: pooled connection was closed (exchange %s), retrying",
               sl_upstream_config_of(x->up)->name, state_names[x->state]);
  x->retried = true;
  sl_upconn_abort(x->uc);
  x->uc = NULL;
  if (x->write != NULL) {
    x->state = UPX_RETRY; /* on_write sends it again once it has the bytes back */
    return true;
  }
  attempt(x, true);
  return true;
}

static void on_write(uv_write_t *req, int status) {
  struct upx_write *w = (struct upx_write *)req;
  struct sl_upx *x = w->x;

  if (x == NULL) {
    write_free(w);
    return;
  }
  /* The exchange still runs: the bytes go back to the caller's buffers,
   * which were left empty when they were moved here. */
  x->write = NULL;
  *x->head = w->bytes[0];
  if (x->body != NULL)
    *x->body = w->bytes[1];
  else
    sl_buf_dispose(&w->bytes[1]);
  free(w);
  enter(x);
  if (x->state == UPX_RETRY)
    attempt(x, true);
  else if (status < 0 && !retry_stale(x))
    end(x, status, "sending the request failed", NULL, false);
  leave(x);
}

static void on_timeout(struct sl_upconn *uc, void *arg) {
  struct sl_upx *x = arg;

  (void)uc;
  enter(x);
  end(x, UV_ETIMEDOUT, "no response in time", NULL, false);
  leave(x);
}

/* Writes what uv_try_write could not: the rest of <bufs> from byte <done> on.
 * The pending write takes over the request bytes. */
static int write_rest(struct sl_upx *x, uv_buf_t *bufs, unsigned nbufs, size_t done) {
  struct upx_write *w;
  unsigned i = 0;
  int r;

  if (done > 0)
    x->sent = true;
  while (i < nbufs && done >= bufs[i].len)
    done -= bufs[i++].len;
  if (i == nbufs)
    return 0;
  bufs[i].base += done;
  bufs[i].len -= done;
  w = malloc(sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  r = sl_upconn_write(x->uc, &w->req, bufs + i, nbufs - i, on_write);
  if (r != 0) {
    free(w);
    return r;
  }
  x->sent = true;
  w->x = x;
  x->write = w;
  w->bytes[0] = *x->head;
  sl_buf_init(x->head);
  if (x->body != NULL) {
    w->bytes[1] = *x->body;
    sl_buf_init(x->body);
  } else {
    sl_buf_init(&w->bytes[1]);
  }
  return 0;
}

static void send_request(struct sl_upx *x) {
  uv_buf_t bufs[2];
  unsigned nbufs = 1;
  int r;

  x->state = UPX_RESPONSE;
  x->paused = false;
  sl_http_parser_next(&x->resp, x->method == HTTP_HEAD);
  /* Reading first: once a byte is out, the answer can be seen. */
  r = sl_upconn_read_start(x->uc, on_read);
  if (r != 0) {
    end(x, r, "reading the response failed", NULL, false);
    return;
  }
  bufs[0] = uv_buf_init(x->head->base, (unsigned)x->head->len);
  if (x->body != NULL && x->body->len > 0)
    bufs[nbufs++] = uv_buf_init(x->body->base, (unsigned)x->body->len);
  /* Most requests fit the socket buffer: written now, without a write
   * request (which in libuv also costs an epoll_ctl when it completes). */
  r = uv_try_write(sl_upconn_stream(x->uc), bufs, nbufs);
  if (r >= 0 || r == UV_EAGAIN)
    r = write_rest(x, bufs, nbufs, r >= 0 ? (size_t)r : 0);
  if (r != 0) {
    if (!retry_stale(x))
      end(x, r, "sending the request failed", NULL, false);
    return;
  }
  sl_upconn_set_timer(x->uc, x->timeout_ms, on_timeout);
}

static void on_ready(struct sl_upconn *uc, int status, void *arg) {
  struct sl_upx *x = arg;

  (void)uc;
  enter(x);
  if (status < 0) {
    x->uc = NULL; /* already gone */
    end(x, status, "connect failed", NULL, false);
  } else {
    send_request(x);
  }
  leave(x);
}

static void attempt(struct sl_upx *x, bool fresh) {
  int r;

  x->state = UPX_CONNECT;
  r = sl_upstream_get(x->up, fresh, on_ready, x, &x->uc);
  if (r == 1) {
    send_request(x);
  } else if (r < 0) {
    x->uc = NULL;
    end(x, r, "connect failed", NULL, false);
  }
}

static int on_resp_head(struct sl_http_parser *p, struct sl_http_msg *m) {
  struct sl_upx *x = p->data;
  unsigned gen = x->gen;
  int r;

  if (m->status < 200 || x->cb->on_head == NULL)
    return 0; /* 1xx: interim, not passed on */
  r = x->cb->on_head(x, m, x->user);
  if (x->gen != gen)
    return -1; /* ended inside: stop parsing; on_read sees it */
  if (r != 0) {
    x->user_error = r;
    return -1;
  }
  return 0;
}

static int on_resp_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_upx *x = p->data;
  unsigned gen = x->gen;
  int r;

  if (x->cb->on_body == NULL)
    return 0;
  r = x->cb->on_body(x, data, len, x->user);
  if (x->gen != gen)
    return -1;
  if (r != 0) {
    x->user_error = r;
    return -1;
  }
  return 0;
}

/* The parser failed on the response, or a callback refused it. */
static void fail_response(struct sl_upx *x) {
  int err = x->user_error != 0 ? x->user_error : UV_EPROTO;

  end(x, err, err == UV_ENOMEM ? "out of memory" : "bad response",
      x->user_error != 0 ? NULL : x->resp.error_reason, false);
}

static void on_eof(struct sl_upx *x, ssize_t err) {
  if (err == UV_EOF && x->resp.head_done && sl_http_parser_finish(&x->resp) == 0 &&
      x->resp.msg_done) {
    end(x, 0, NULL, NULL, false); /* a close-delimited body ends here */
    return;
  }
  if (retry_stale(x))
    return;
  if (!x->resp.started)
    end(x, (int)err, "closed without a response", NULL, false);
  else
    end(x, err == UV_EOF ? UV_ECONNRESET : (int)err, "response cut short", NULL, false);
}

static void on_read(struct sl_upconn *uc, ssize_t nread, const char *buf, void *arg) {
  struct sl_upx *x = arg;
  unsigned gen = x->gen;
  size_t done = 0;

  enter(x);
  if (nread < 0) {
    on_eof(x, nread);
    goto out;
  }
  while (done < (size_t)nread) {
    ssize_t n = sl_http_parser_feed(&x->resp, buf + done, (size_t)nread - done);

    if (x->gen != gen)
      goto out; /* a callback ended, cancelled or destroyed it */
    if (n < 0) {
      fail_response(x);
      goto out;
    }
    done += (size_t)n;
    if (!x->resp.msg_done)
      break;
    if (x->resp.msg.status >= 200) {
      /* Bytes after the response mean the backend is out of step: do not reuse. */
      end(x, 0, NULL, NULL, x->resp.msg.keep_alive && done == (size_t)nread);
      goto out;
    }
    sl_http_parser_next(&x->resp, x->method == HTTP_HEAD); /* after a 1xx, the final one */
  }
  if (x->cb->on_read != NULL) {
    x->cb->on_read(x, x->user);
    if (x->gen != gen)
      goto out;
  }
  sl_upconn_set_timer(uc, x->timeout_ms, on_timeout);
out:
  leave(x);
}

struct sl_upx *sl_upx_create(const struct sl_upx_callbacks *cbs, void *user) {
  struct sl_upx *x = calloc(1, sizeof(*x));

  if (x == NULL)
    return NULL;
  x->cb = cbs;
  x->user = user;
  x->clean = true;
  sl_http_parser_init(&x->resp, HTTP_RESPONSE, RESP_HEAD_MAX, 0, on_resp_head, on_resp_body, NULL,
                      x);
  return x;
}

void sl_upx_start(struct sl_upx *x, struct sl_upstream *up, const struct sl_upx_request *req) {
  assert(x->state == UPX_IDLE && !x->dying);
  if (!x->clean) {
    /* The last exchange left the parser inside a message (or after one that
     * closes its connection): start from a new one. */
    sl_http_parser_dispose(&x->resp);
    sl_http_parser_init(&x->resp, HTTP_RESPONSE, RESP_HEAD_MAX, 0, on_resp_head, on_resp_body, NULL,
                        x);
  }
  x->clean = false;
  x->up = up;
  x->head = req->head;
  x->body = req->body;
  x->method = req->method;
  x->idempotent = sl_http_method_idempotent(req->method);
  x->timeout_ms = req->timeout_ms;
  x->retried = false;
  x->sent = false;
  x->paused = false;
  x->user_error = 0;
  x->t_start_ns = sl_clock_mono_ns();
  enter(x);
  attempt(x, false);
  leave(x);
}

void sl_upx_cancel(struct sl_upx *x) {
  if (x == NULL || x->state == UPX_IDLE)
    return;
  x->clean = false;
  go_idle(x);
}

void sl_upx_destroy(struct sl_upx *x) {
  if (x == NULL)
    return;
  sl_upx_cancel(x);
  if (x->busy > 0)
    x->dying = true;
  else
    upx_free(x);
}

void sl_upx_pause(struct sl_upx *x) {
  if (x->state != UPX_RESPONSE || x->paused)
    return;
  sl_upconn_read_stop(x->uc);
  x->paused = true;
}

void sl_upx_resume(struct sl_upx *x) {
  int r;

  if (x->state != UPX_RESPONSE || !x->paused)
    return;
  x->paused = false;
  r = sl_upconn_read_start(x->uc, on_read);
  if (r != 0) {
    enter(x);
    end(x, r, "reading the response failed", NULL, false);
    leave(x);
  }
}

bool sl_upx_active(const struct sl_upx *x) { return x != NULL && x->state != UPX_IDLE; }
