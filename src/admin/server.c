/*
 * The admin listener: a dispatcher on the HTTP/1 connection core (sluice/http1.h), which
 * reads, times, writes and closes; this file turns a complete request into a struct
 * sl_admin_request for the router (router.c) and the answer back into bytes.
 *
 * Settings on the core: one request of a connection at a time (serial: while a response is
 * being written the connection stops reading, which bounds what a client that pipelines
 * without reading can make the server hold to one response plus one read), the timeouts of
 * sluice/admin.h, and a body timeout that counts from the end of the head. Errors of sluice's
 * own (malformed, timed out, not origin-form) are JSON and close the connection.
 *
 * A handler may defer its answer (sl_admin_defer): the connection then stays ANSWERING, its
 * timer armed for SL_ADMIN_DEFER_TIMEOUT_MS, until the answer's owner sends it.
 *
 * @thread loop
 */
#include "sluice/admin.h"

#include <stdlib.h>
#include <string.h>

#include "admin_int.h"
#include "sluice/http1.h"
#include "sluice/log.h"
#include "sluice/util.h"

/* An admin connection: the core's (first, so that the core allocates the whole) and the
 * deferred answer its request waits for, if any. */
struct admin_conn {
  struct sl_http1_conn h1;
  struct sl_admin_deferred *deferred;
};

/*
 * A deferred answer (sl_admin_defer). IN_HANDLER while the handler that made it runs (an
 * answer given then goes out as the handler returns), WAITING once its connection waits for
 * it, GONE once nothing waits any more (the client left, or the wait timed out): the answer
 * is then only freed. The connection and the answer point at each other while WAITING, and
 * whichever ends first unlinks the other, so neither outlives a pointer to it.
 */
struct sl_admin_deferred {
  enum { DEFER_IN_HANDLER, DEFER_WAITING, DEFER_GONE } state;
  bool answered;                 /* answered while IN_HANDLER */
  struct admin_conn *conn;       /* while WAITING */
  struct sl_admin_response resp; /* what the owner fills in */
};

/* Serialises <resp> into c->out. A HEAD request (<head>) gets the head only,
 * with the Content-Length of the body it would have had. An HTTP/1.0 client
 * (<http10>) is told when the connection stays open. Returns 0 or UV_ENOMEM. */
static int conn_serialise(struct sl_http1_conn *c, const struct sl_admin_response *resp, bool head,
                          bool http10) {
  int r = 0;

  r |=
      sl_buf_printf(&c->out,
                    "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Cache-Control: no-store\r\n",
                    resp->status, sl_http_reason(resp->status), resp->content_type, resp->body.len);
  r |= sl_buf_append(&c->out, resp->headers.base, resp->headers.len);
  if (!c->keep_alive)
    r |= sl_buf_append_str(&c->out, "Connection: close\r\n");
  else if (http10)
    r |= sl_buf_append_str(&c->out, "Connection: keep-alive\r\n");
  r |= sl_buf_append(&c->out, "\r\n", 2);
  if (!head)
    r |= sl_buf_append(&c->out, resp->body.base, resp->body.len);
  return r;
}

/* Sends <resp> for the current request; the core goes on to the next one. */
static void conn_respond(struct sl_http1_conn *c, const struct sl_admin_response *resp) {
  const struct sl_http_msg *m = &c->parser.msg;
  bool http10 = m->http_major == 1 && m->http_minor == 0;

  if (conn_serialise(c, resp, m->method == HTTP_HEAD, http10) != 0) {
    sl_http1_conn_close(c);
    return;
  }
  sl_http1_conn_done(c);
}

static void response_init(struct sl_admin_response *resp) {
  resp->status = 200;
  resp->content_type = "text/plain; charset=utf-8";
  sl_buf_init(&resp->headers);
  sl_buf_init(&resp->body);
  resp->deferred = NULL;
}

static void response_dispose(struct sl_admin_response *resp) {
  sl_buf_dispose(&resp->headers);
  sl_buf_dispose(&resp->body);
}

/* ---- deferred answers ---------------------------------------------------- */

struct sl_admin_deferred *sl_admin_defer(struct sl_admin_response *resp) {
  struct sl_admin_deferred *d = calloc(1, sizeof(*d));

  if (d == NULL)
    return NULL;
  d->state = DEFER_IN_HANDLER;
  response_init(&d->resp);
  resp->deferred = d;
  return d;
}

struct sl_admin_response *sl_admin_deferred_response(struct sl_admin_deferred *d) {
  return &d->resp;
}

static void deferred_free(struct sl_admin_deferred *d) {
  response_dispose(&d->resp);
  free(d);
}

/* Nothing waits for <d> any more: its connection forgets it, and it its connection. */
static void deferred_unlink(struct sl_admin_deferred *d) {
  if (d->conn != NULL)
    d->conn->deferred = NULL;
  d->conn = NULL;
  d->state = DEFER_GONE;
}

void sl_admin_deferred_answer(struct sl_admin_deferred *d) {
  struct admin_conn *ac = d->conn;

  if (d->state == DEFER_IN_HANDLER) {
    d->answered = true; /* on_start sends it as the handler returns */
    return;
  }
  if (d->state == DEFER_WAITING) {
    deferred_unlink(d);
    sl_http1_conn_disarm(&ac->h1);
    if (ac->h1.state == SL_HTTP1_ANSWERING)
      conn_respond(&ac->h1, &d->resp);
  }
  deferred_free(d);
}

/* The wait of a deferred answer ran out: the client gets 504 now, the answer is dropped later. */
static void on_timeout(struct sl_http1_conn *c) {
  struct admin_conn *ac = sl_container_of(c, struct admin_conn, h1);
  struct sl_admin_response resp;

  if (ac->deferred == NULL)
    return;
  deferred_unlink(ac->deferred);
  response_init(&resp);
  sl_admin_response_error(&resp, 504, "no answer in time (the operation may still complete)");
  conn_respond(c, &resp);
  response_dispose(&resp);
}

static void on_dispose(struct sl_http1_conn *c) {
  struct admin_conn *ac = sl_container_of(c, struct admin_conn, h1);

  if (ac->deferred != NULL)
    deferred_unlink(ac->deferred);
}

/* Answers with an error of sluice's own and closes: after a malformed or
 * timed-out request the connection cannot be trusted to be in step. */
static void on_refuse(struct sl_http1_conn *c, enum sl_http1_refusal why, unsigned status) {
  struct sl_admin_response resp;
  const char *message = why == SL_HTTP1_TIMEOUT ? "request timeout"
                        : why == SL_HTTP1_REFUSED
                            ? sl_http_reason(status)
                            : (c->parser.error_reason ? c->parser.error_reason : "bad request");

  response_init(&resp);
  sl_admin_response_error(&resp, status, message);
  c->keep_alive = false;
  conn_respond(c, &resp);
  response_dispose(&resp);
}

/* A complete request: route it, run its handler and answer. */
static void on_start(struct sl_http1_conn *c) {
  struct admin_conn *ac = sl_container_of(c, struct admin_conn, h1);
  struct sl_admin_deferred *d;
  struct sl_admin *a = sl_http1_listener_data(c->listener);
  struct sl_http_msg *m = &c->parser.msg;
  const char *method = llhttp_method_name((llhttp_method_t)m->method);
  struct sl_admin_request req;
  struct sl_admin_response resp;
  char *target, *q;

  /* Handlers get NUL-terminated strings: the path and the query are cut
   * from a copy of the target, and the body gets a NUL after its end. */
  target = malloc(m->target_len + 1);
  if (target == NULL || sl_buf_append(&c->body, "", 1) != 0) {
    free(target);
    sl_http1_conn_close(c);
    return;
  }
  memcpy(target, sl_http_msg_str(m, m->target_off), m->target_len);
  target[m->target_len] = '\0';
  q = memchr(target, '?', m->target_len);
  req.method = sl_method_bit(method, strlen(method));
  req.path = target;
  req.path_len = q ? (size_t)(q - target) : m->target_len;
  req.query = q ? q + 1 : "";
  req.query_len = q ? m->target_len - req.path_len - 1 : 0;
  if (q != NULL)
    *q = '\0';
  req.body = c->body.base;
  req.body_len = c->body.len - 1;
  req.msg = m;

  response_init(&resp);
  sl__admin_dispatch(a, &req, &resp);
  free(target);
  d = resp.deferred;
  if (d != NULL && !d->answered) {
    /* The owner answers later; the connection waits, bounded in time. */
    if (c->state == SL_HTTP1_CLOSED) { /* the handler closed the server */
      d->state = DEFER_GONE;
    } else {
      d->state = DEFER_WAITING;
      d->conn = ac;
      ac->deferred = d;
      sl_http1_conn_arm(c, a->defer_timeout_ms);
    }
  } else if (c->state != SL_HTTP1_CLOSED) { /* the handler may have closed the server */
    conn_respond(c, d != NULL ? &d->resp : &resp);
  }
  if (d != NULL && d->answered)
    deferred_free(d);
  response_dispose(&resp);
}

static int on_head(struct sl_http1_conn *c, struct sl_http_msg *m) {
  (void)c;
  if (m->http_major != 1)
    return 505;
  if (m->target_len == 0 || sl_http_msg_str(m, m->target_off)[0] != '/')
    return 400; /* origin-form only */
  return 0;
}

static int on_accept(struct sl_http1_conn *c) {
  if (sl_http1_listener_conns(c->listener) > SL_ADMIN_MAX_CONNS) {
    sl_log_warn("admin: more than %d connections, closing a new one", SL_ADMIN_MAX_CONNS);
    return -1;
  }
  return 0;
}

static const struct sl_http1_handler handler = {
    .accept = on_accept,
    .head = on_head,
    .start = on_start,
    .refuse = on_refuse,
    .timeout = on_timeout,
    .dispose = on_dispose,
};

/* One request at a time, as the header says: a response must be taken before the next
 * request is read, which bounds what a client that pipelines without reading can make the
 * server hold; the body timeout counts from the head. */
static const struct sl_http1_settings settings = {
    .log_prefix = "admin ",
    .conn_size = sizeof(struct admin_conn),
    .serial = true,
    .body_timeout_total = true,
    .handler = &handler,
};

/* The core's limits from the admin's (which tests shorten before the start). */
static void admin_limits(const struct sl_admin *a, struct sl_http1_limits *lim) {
  *lim = (struct sl_http1_limits){
      .max_header_bytes = SL_ADMIN_MAX_HEAD,
      .max_body_bytes = SL_ADMIN_MAX_BODY,
      .accept_timeout_ms = a->idle_timeout_ms,
      .header_timeout_ms = a->timeout_ms,
      .body_timeout_ms = a->timeout_ms,
      .idle_timeout_ms = a->idle_timeout_ms,
      .write_timeout_ms = a->timeout_ms,
  };
}

struct sl_admin *sl_admin_create(struct sl_loop *lp, const struct sl_config *cfg,
                                 struct sl_metrics *metrics) {
  struct sl_admin *a = calloc(1, sizeof(*a));
  struct sl_http1_limits lim;

  if (a == NULL)
    return NULL;
  a->metrics = metrics;
  a->ready = true;
  a->timeout_ms = SL_ADMIN_TIMEOUT_MS;
  a->idle_timeout_ms = SL_ADMIN_IDLE_TIMEOUT_MS;
  a->defer_timeout_ms = SL_ADMIN_DEFER_TIMEOUT_MS;
  a->listen_sa = cfg->admin.listen.sa;
  a->listen_text = strdup(cfg->admin.listen.text ? cfg->admin.listen.text : "");
  a->token = strdup(cfg->admin.token ? cfg->admin.token : "");
  admin_limits(a, &lim);
  a->listener = sl_http1_listener_create(lp, &settings, &lim, a);
  if (a->listener == NULL || a->listen_text == NULL || a->token == NULL ||
      sl__admin_builtin_routes(a) != 0) {
    sl_admin_destroy(a);
    return NULL;
  }
  return a;
}

int sl_admin_start(struct sl_admin *a) {
  struct sl_http1_limits lim;
  char addr[80];
  int r;

  admin_limits(a, &lim);
  sl_http1_listener_set_limits(a->listener, &lim);
  r = sl_http1_listener_start(a->listener, (const struct sockaddr *)&a->listen_sa, 128, addr,
                              sizeof(addr), &a->port);
  if (r != 0) {
    sl_log_error("admin listen on %s: %s", a->listen_text, uv_strerror(r));
    return r;
  }
  sl_log_info("admin listening on %s", addr);
  return 0;
}

unsigned sl_admin_port(const struct sl_admin *a) { return a->port; }

int sl_admin_set_config(struct sl_admin *a, const struct sl_config *cfg) {
  char *token = strdup(cfg->admin.token ? cfg->admin.token : "");

  if (token == NULL)
    return UV_ENOMEM;
  free(a->token);
  a->token = token;
  if (cfg->admin.listen.text != NULL && strcmp(cfg->admin.listen.text, a->listen_text) != 0)
    sl_log_warn("admin.listen changed from %s to %s: takes effect after a restart", a->listen_text,
                cfg->admin.listen.text);
  return 0;
}

void sl_admin_set_ready(struct sl_admin *a, bool ready, const char *reason) {
  free(a->ready_reason);
  a->ready_reason = (!ready && reason != NULL) ? strdup(reason) : NULL;
  a->ready = ready;
}

/* The listener and its last connection are freed: the admin server goes too. */
static void on_listener_closed(void *arg) {
  struct sl_admin *a = arg;
  sl_admin_close_cb cb = a->close_cb;
  void *cb_arg = a->close_arg;

  sl__admin_routes_dispose(a);
  free(a->listen_text);
  free(a->token);
  free(a->ready_reason);
  free(a);
  if (cb != NULL)
    cb(cb_arg);
}

void sl_admin_close(struct sl_admin *a, sl_admin_close_cb cb, void *arg) {
  if (a == NULL || a->closing)
    return;
  a->closing = true;
  a->close_cb = cb;
  a->close_arg = arg;
  if (a->listener != NULL)
    sl_http1_listener_close(a->listener, on_listener_closed, a);
  else
    on_listener_closed(a);
}

void sl_admin_destroy(struct sl_admin *a) { sl_admin_close(a, NULL, NULL); }
