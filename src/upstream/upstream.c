/*
 * Upstream keep-alive pool.
 *
 * Connection lifecycle: CONNECTING -> LENT -> IDLE -> LENT ... -> CLOSING, and
 * LENT -> DRAINING -> CLOSING for a connection released while its user's write
 * is still pending (the response came before the request was fully written):
 * it is never pooled, since the backend may still be reading that request's
 * body, and it closes once the write has ended (or after the response timeout).
 * Handle memory is freed only in the close callbacks (two handles: tcp and
 * timer); a pending write's callback runs before the tcp handle's close
 * callback, so the connection is still there for it. An upstream being
 * destroyed frees itself when its last connection has closed.
 */
#include "sluice/upstream.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"

enum upconn_state { UC_CONNECTING, UC_LENT, UC_IDLE, UC_DRAINING, UC_CLOSING };

/* Idle connections unused for this long are closed: backends commonly close
 * theirs after 60 s or more, and closing first avoids most races. */
#define IDLE_TIMEOUT_MS 30000

struct sl_upconn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect_req;
  struct sl_upstream *up;
  struct sl_upconn *prev, *next; /* in up->idle while idle, up->draining while draining */
  enum upconn_state state;
  unsigned reuses;
  int open_handles;
  bool reading;
  bool writing;         /* a write started by sl_upconn_write() has not called back yet */
  uv_write_cb write_cb; /* its callback */
  sl_upconn_ready_cb ready_cb;
  sl_upconn_read_cb read_cb;
  sl_upconn_timer_cb timer_cb;
  void *user;
};

struct sl_upstream {
  struct sl_loop *lp; /* its read buffer serves every connection */
  uv_loop_t *loop;
  const struct sl_upstream_config *cfg;
  struct sl_upconn *idle;
  unsigned n_idle;
  struct sl_upconn *draining; /* released with a write pending: close when it ends */
  unsigned n_conns;           /* every connection not yet freed */
  bool destroying;
};

static void list_push(struct sl_upconn **head, struct sl_upconn *c) {
  c->prev = NULL;
  c->next = *head;
  if (*head)
    (*head)->prev = c;
  *head = c;
}

static void list_remove(struct sl_upconn **head, struct sl_upconn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    *head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void idle_push(struct sl_upstream *up, struct sl_upconn *c) {
  list_push(&up->idle, c);
  up->n_idle++;
}

static void idle_remove(struct sl_upstream *up, struct sl_upconn *c) {
  list_remove(&up->idle, c);
  up->n_idle--;
}

static void maybe_free_upstream(struct sl_upstream *up) {
  if (up->destroying && up->n_conns == 0)
    free(up);
}

static void on_handle_closed(uv_handle_t *h) {
  struct sl_upconn *c = h->data;
  struct sl_upstream *up = c->up;

  if (--c->open_handles > 0)
    return;
  free(c);
  up->n_conns--;
  maybe_free_upstream(up);
}

static void upconn_close(struct sl_upconn *c) {
  if (c->state == UC_CLOSING)
    return;
  if (c->state == UC_IDLE)
    idle_remove(c->up, c);
  else if (c->state == UC_DRAINING)
    list_remove(&c->up->draining, c);
  c->state = UC_CLOSING;
  c->ready_cb = NULL;
  c->read_cb = NULL;
  c->timer_cb = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

struct sl_upstream *sl_upstream_create(struct sl_loop *lp, const struct sl_upstream_config *cfg) {
  struct sl_upstream *up = calloc(1, sizeof(*up));

  if (up == NULL)
    return NULL;
  up->lp = lp;
  up->loop = lp->uv;
  up->cfg = cfg;
  return up;
}

const struct sl_upstream_config *sl_upstream_config_of(const struct sl_upstream *up) {
  return up->cfg;
}

static void close_idle(struct sl_upstream *up) {
  while (up->idle != NULL)
    upconn_close(up->idle);
}

static void close_draining(struct sl_upstream *up) {
  while (up->draining != NULL)
    upconn_close(up->draining);
}

void sl_upstream_update(struct sl_upstream *up, const struct sl_upstream_config *cfg) {
  bool moved = memcmp(&up->cfg->address.sa, &cfg->address.sa, sizeof(cfg->address.sa)) != 0;

  up->cfg = cfg;
  if (moved)
    close_idle(up);
  while (up->n_idle > cfg->keepalive)
    upconn_close(up->idle);
}

void sl_upstream_destroy(struct sl_upstream *up) {
  if (up == NULL)
    return;
  up->destroying = true;
  close_idle(up);
  close_draining(up);
  maybe_free_upstream(up);
}

/* Reads land in the loop's read buffer: every read is consumed before the callback returns
 * (sluice/loop.h), so one buffer serves all connections of the loop. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct sl_upconn *c = h->data;

  (void)suggested;
  buf->base = c->up->lp->read_buf;
  buf->len = sizeof(c->up->lp->read_buf);
}

static void on_timer(uv_timer_t *t) {
  struct sl_upconn *c = t->data;

  if (c->state == UC_IDLE || c->state == UC_DRAINING) {
    upconn_close(c);
    return;
  }
  if (c->state == UC_CONNECTING) {
    sl_upconn_ready_cb cb = c->ready_cb;
    void *user = c->user;
    upconn_close(c);
    if (cb)
      cb(c, UV_ETIMEDOUT, user);
    return;
  }
  if (c->timer_cb)
    c->timer_cb(c, c->user);
}

static void on_connect(uv_connect_t *req, int status) {
  struct sl_upconn *c = req->data;
  sl_upconn_ready_cb cb = c->ready_cb;

  if (c->state != UC_CONNECTING)
    return; /* aborted or timed out: already closing */
  uv_timer_stop(&c->timer);
  if (status < 0) {
    upconn_close(c);
  } else {
    c->state = UC_LENT;
    uv_tcp_nodelay(&c->tcp, 1);
  }
  if (cb)
    cb(c, status, c->user);
}

static struct sl_upconn *upconn_new(struct sl_upstream *up) {
  struct sl_upconn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return NULL;
  c->up = up;
  if (uv_tcp_init(up->loop, &c->tcp) != 0) {
    free(c);
    return NULL;
  }
  uv_timer_init(up->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->connect_req.data = c;
  c->open_handles = 2;
  up->n_conns++;
  return c;
}

int sl_upstream_get(struct sl_upstream *up, bool fresh, sl_upconn_ready_cb cb, void *user,
                    struct sl_upconn **out) {
  struct sl_upconn *c;
  int r;

  if (!fresh && up->idle != NULL) {
    c = up->idle;
    idle_remove(up, c);
    uv_timer_stop(&c->timer);
    c->state = UC_LENT;
    c->reuses++;
    c->user = user;
    *out = c;
    return 1;
  }
  c = upconn_new(up);
  if (c == NULL)
    return UV_ENOMEM;
  c->state = UC_CONNECTING;
  c->ready_cb = cb;
  c->user = user;
  r = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&up->cfg->address.sa,
                     on_connect);
  if (r != 0) {
    c->ready_cb = NULL;
    upconn_close(c);
    return r;
  }
  uv_timer_start(&c->timer, on_timer, up->cfg->connect_timeout_ms, 0);
  *out = c;
  return 0;
}

uv_stream_t *sl_upconn_stream(struct sl_upconn *uc) { return (uv_stream_t *)&uc->tcp; }

bool sl_upconn_stale_retry_ok(const struct sl_upconn *uc, bool retried, bool response_started,
                              bool idempotent) {
  return uc != NULL && sl_upconn_reuses(uc) > 0 && !retried && !response_started && idempotent;
}

unsigned sl_upconn_reuses(const struct sl_upconn *uc) { return uc->reuses; }

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct sl_upconn *c = s->data;

  if (nread == 0)
    return;
  if (c->state == UC_IDLE) {
    /* An idle connection has nothing to say: EOF, an error or stray bytes
     * (a late "408" some servers send) all mean it is no longer usable. */
    upconn_close(c);
    return;
  }
  if (c->state == UC_DRAINING) {
    if (nread < 0)
      upconn_close(c); /* the backend closed first: the write is cancelled */
    return;            /* anything else is dropped: the response was already read */
  }
  if (c->read_cb)
    c->read_cb(c, nread, buf->base, c->user);
}

static int start_reading(struct sl_upconn *uc) {
  int r;

  /* Reading stays on across requests and idle time (on_read looks at the
   * state), which saves an epoll_ctl pair per request. */
  if (uc->reading)
    return 0;
  r = uv_read_start((uv_stream_t *)&uc->tcp, on_alloc, on_read);
  uc->reading = r == 0;
  return r;
}

int sl_upconn_read_start(struct sl_upconn *uc, sl_upconn_read_cb cb) {
  uc->read_cb = cb;
  return start_reading(uc);
}

void sl_upconn_read_stop(struct sl_upconn *uc) {
  uv_read_stop((uv_stream_t *)&uc->tcp);
  uc->reading = false;
}

void sl_upconn_set_timer(struct sl_upconn *uc, uint64_t ms, sl_upconn_timer_cb cb) {
  uc->timer_cb = cb;
  if (ms == 0)
    uv_timer_stop(&uc->timer);
  else
    uv_timer_start(&uc->timer, on_timer, ms, 0);
}

static void on_write(uv_write_t *req, int status) {
  struct sl_upconn *c = req->handle->data;
  uv_write_cb cb = c->write_cb;

  c->writing = false;
  c->write_cb = NULL;
  if (c->state == UC_DRAINING)
    upconn_close(c); /* its exchange is over: the connection only waited for this */
  cb(req, status);
}

int sl_upconn_write(struct sl_upconn *uc, uv_write_t *req, const uv_buf_t bufs[], unsigned nbufs,
                    uv_write_cb cb) {
  int r;

  assert(uc->state == UC_LENT && !uc->writing);
  r = uv_write(req, (uv_stream_t *)&uc->tcp, bufs, nbufs, on_write);
  if (r != 0)
    return r;
  uc->writing = true;
  uc->write_cb = cb;
  return 0;
}

/* Released with a write pending: wait for it (bounded by the response
 * timeout), then close. Reading goes on so that the backend's close is seen;
 * what it sends is dropped. */
static void start_draining(struct sl_upconn *uc) {
  sl_log_debug("upstream %s: answered before the request was written; closing the connection "
               "once the write ends",
               uc->up->cfg->name);
  uc->state = UC_DRAINING;
  list_push(&uc->up->draining, uc);
  if (start_reading(uc) != 0) {
    upconn_close(uc);
    return;
  }
  uv_timer_start(&uc->timer, on_timer, uc->up->cfg->response_timeout_ms, 0);
}

void sl_upconn_release(struct sl_upconn *uc, bool reusable) {
  struct sl_upstream *up = uc->up;

  if (uc->state != UC_LENT)
    return;
  uc->read_cb = NULL;
  uc->timer_cb = NULL;
  uc->user = NULL;
  if (uc->writing && !up->destroying) {
    start_draining(uc);
    return;
  }
  if (!reusable || uc->writing || up->destroying || up->n_idle >= up->cfg->keepalive) {
    upconn_close(uc);
    return;
  }
  uc->state = UC_IDLE;
  idle_push(up, uc);
  /* Reading while idle is how a backend's close is noticed before the
   * connection is handed out again. */
  if (start_reading(uc) != 0) {
    upconn_close(uc);
    return;
  }
  uv_timer_start(&uc->timer, on_timer, IDLE_TIMEOUT_MS, 0);
}

void sl_upconn_abort(struct sl_upconn *uc) { upconn_close(uc); }
