/*
 * The admin listener and its connections.
 *
 * Connection states: IDLE -(first byte)-> HEAD -(head parsed)-> BODY
 * -(complete: the handler runs at once)-> WRITING -(response taken)-> IDLE,
 * or LINGER when the connection must close: the write side is shut down and
 * what the client still sends is read and dropped for a moment, so that a
 * last response is not destroyed by a TCP reset. Every state but CLOSED has
 * its timer running (see the limits in sluice/admin.h).
 *
 * One request is handled at a time: while a response is being written the
 * connection stops reading, which bounds what a client that pipelines
 * without reading can make the server hold to one response plus one read.
 *
 * @thread loop
 */
#include "sluice/admin.h"

#include <stdlib.h>
#include <string.h>

#include "admin_int.h"
#include "sluice/log.h"

enum admin_conn_state { AC_IDLE, AC_HEAD, AC_BODY, AC_WRITING, AC_LINGER, AC_CLOSED };
static const char *const state_names[] = {"idle", "head", "body", "writing", "linger", "closed"};

struct sl_admin_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  struct sl_admin *admin;
  struct sl_admin_conn *prev, *next;
  enum admin_conn_state state;
  int open_handles;
  bool close_after;      /* close once the current response is out */
  bool processing;       /* inside conn_process(): it picks up the next request itself */
  unsigned error_status; /* answer with this instead of routing */
  struct sl_http_parser parser;
  struct sl_buf pending; /* bytes read and not yet parsed */
  struct sl_buf body;
  struct sl_buf out;
};

struct admin_write {
  uv_write_t req;
  struct sl_buf buf;
};

static char read_buf[16 * 1024];

static void conn_process(struct sl_admin_conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void maybe_free(struct sl_admin *a) {
  sl_admin_close_cb cb;
  void *arg;

  if (!a->closing || !a->listener_closed || a->n_alive > 0)
    return;
  cb = a->close_cb;
  arg = a->close_arg;
  sl__admin_routes_dispose(a);
  free(a->listen_text);
  free(a->token);
  free(a->ready_reason);
  free(a);
  if (cb != NULL)
    cb(arg);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  struct sl_admin_conn *c = h->data;
  struct sl_admin *a = c->admin;

  if (--c->open_handles > 0)
    return;
  sl_http_parser_dispose(&c->parser);
  sl_buf_dispose(&c->pending);
  sl_buf_dispose(&c->body);
  sl_buf_dispose(&c->out);
  free(c);
  a->n_alive--;
  maybe_free(a);
}

static void conn_close(struct sl_admin_conn *c) {
  struct sl_admin *a = c->admin;

  if (c->state == AC_CLOSED)
    return;
  sl_log_debug("admin conn: close in state %s", state_names[c->state]);
  c->state = AC_CLOSED;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  a->n_conns--;
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timeout(uv_timer_t *t);

static void arm_timer(struct sl_admin_conn *c, uint64_t ms) {
  uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = read_buf;
  buf->len = sizeof(read_buf);
}

static void read_start(struct sl_admin_conn *c) {
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);

  if (r != 0 && r != UV_EALREADY)
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* The last response is out: send FIN, then read and drop for a moment. */
static void linger(struct sl_admin_conn *c) {
  uv_shutdown_t *req = malloc(sizeof(*req));

  if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    conn_close(c);
    return;
  }
  c->state = AC_LINGER;
  sl_buf_reset(&c->pending);
  arm_timer(c, SL_ADMIN_LINGER_MS);
  read_start(c);
}

/* The response has been handed to the kernel: go on with the connection. */
static void response_sent(struct sl_admin_conn *c) {
  if (c->close_after || c->admin->closing) {
    linger(c);
    return;
  }
  c->state = AC_IDLE;
  arm_timer(c, c->admin->idle_timeout_ms);
  if (!c->processing)
    conn_process(c);
}

static void on_write(uv_write_t *req, int status) {
  struct admin_write *w = (struct admin_write *)req;
  struct sl_admin_conn *c = req->handle->data;

  sl_buf_dispose(&w->buf);
  free(w);
  if (c->state == AC_CLOSED)
    return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  response_sent(c);
}

/* Writes c->out. Most responses fit the socket buffer and go at once; the
 * rest waits in a write request, with reading stopped until it completes. */
static void conn_flush(struct sl_admin_conn *c) {
  struct admin_write *w;
  uv_buf_t b = uv_buf_init(c->out.base, (unsigned)c->out.len);
  int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);

  if (r == (int)c->out.len) {
    sl_buf_reset(&c->out);
    response_sent(c);
    return;
  }
  if (r < 0 && r != UV_EAGAIN)
    goto fail;
  if (r > 0)
    sl_buf_consume(&c->out, (size_t)r);
  w = malloc(sizeof(*w));
  if (w == NULL)
    goto fail;
  w->buf = c->out;
  sl_buf_init(&c->out);
  b = uv_buf_init(w->buf.base, (unsigned)w->buf.len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    sl_buf_dispose(&w->buf);
    free(w);
    goto fail;
  }
  uv_read_stop((uv_stream_t *)&c->tcp);
  arm_timer(c, c->admin->timeout_ms);
  return;

fail:
  conn_close(c);
}

/* Serialises <resp> into c->out. A HEAD request (<head>) gets the head only,
 * with the Content-Length of the body it would have had. An HTTP/1.0 client
 * (<http10>) is told when the connection stays open. Returns 0 or UV_ENOMEM. */
static int conn_serialise(struct sl_admin_conn *c, const struct sl_admin_response *resp, bool head,
                          bool http10) {
  int r = 0;

  r |=
      sl_buf_printf(&c->out,
                    "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Cache-Control: no-store\r\n",
                    resp->status, sl_http_reason(resp->status), resp->content_type, resp->body.len);
  r |= sl_buf_append(&c->out, resp->headers.base, resp->headers.len);
  if (c->close_after)
    r |= sl_buf_append_str(&c->out, "Connection: close\r\n");
  else if (http10)
    r |= sl_buf_append_str(&c->out, "Connection: keep-alive\r\n");
  r |= sl_buf_append(&c->out, "\r\n", 2);
  if (!head)
    r |= sl_buf_append(&c->out, resp->body.base, resp->body.len);
  return r;
}

/* Forgets the request just answered, so the parser can take the next one. */
static void request_reset(struct sl_admin_conn *c) {
  c->error_status = 0;
  sl_buf_reset(&c->body);
  sl_http_parser_next(&c->parser, false);
}

/* Sends <resp> for the current request and gets ready for the next one. */
static void conn_respond(struct sl_admin_conn *c, const struct sl_admin_response *resp) {
  const struct sl_http_msg *m = &c->parser.msg;
  bool http10 = m->http_major == 1 && m->http_minor == 0;

  c->state = AC_WRITING;
  if (conn_serialise(c, resp, m->method == HTTP_HEAD, http10) != 0) {
    conn_close(c);
    return;
  }
  request_reset(c);
  conn_flush(c);
}

static void response_init(struct sl_admin_response *resp) {
  resp->status = 200;
  resp->content_type = "text/plain; charset=utf-8";
  sl_buf_init(&resp->headers);
  sl_buf_init(&resp->body);
}

static void response_dispose(struct sl_admin_response *resp) {
  sl_buf_dispose(&resp->headers);
  sl_buf_dispose(&resp->body);
}

/* Answers with an error of sluice's own and closes: after a malformed or
 * timed-out request the connection cannot be trusted to be in step. */
static void conn_respond_error(struct sl_admin_conn *c, unsigned status, const char *message) {
  struct sl_admin_response resp;

  response_init(&resp);
  sl_admin_response_error(&resp, status, message);
  c->close_after = true;
  conn_respond(c, &resp);
  response_dispose(&resp);
}

/* A complete request: route it, run its handler and answer. */
static void conn_handle(struct sl_admin_conn *c) {
  struct sl_http_msg *m = &c->parser.msg;
  const char *method = llhttp_method_name((llhttp_method_t)m->method);
  struct sl_admin_request req;
  struct sl_admin_response resp;
  char *target, *q;

  uv_timer_stop(&c->timer);
  c->close_after = !m->keep_alive;
  if (c->error_status != 0) {
    conn_respond_error(c, c->error_status, sl_http_reason(c->error_status));
    return;
  }
  /* Handlers get NUL-terminated strings: the path and the query are cut
   * from a copy of the target, and the body gets a NUL after its end. */
  target = malloc(m->target_len + 1);
  if (target == NULL || sl_buf_append(&c->body, "", 1) != 0) {
    free(target);
    conn_close(c);
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
  sl__admin_dispatch(c->admin, &req, &resp);
  free(target);
  if (c->state != AC_CLOSED) /* the handler may have closed the server */
    conn_respond(c, &resp);
  response_dispose(&resp);
}

/* Parses what is pending, one request at a time, answering each as soon as it
 * is complete; stops while a response is being written. */
static void conn_process(struct sl_admin_conn *c) {
  c->processing = true;
  while (c->pending.len > 0 &&
         (c->state == AC_IDLE || c->state == AC_HEAD || c->state == AC_BODY)) {
    ssize_t n;

    if (c->state == AC_IDLE) {
      c->state = AC_HEAD;
      arm_timer(c, c->admin->timeout_ms);
    }
    n = sl_http_parser_feed(&c->parser, c->pending.base, c->pending.len);
    if (n < 0) {
      sl_buf_reset(&c->pending);
      conn_respond_error(c, sl_http_error_status(c->parser.error),
                         c->parser.error_reason ? c->parser.error_reason : "bad request");
      break;
    }
    sl_buf_consume(&c->pending, (size_t)n);
    if (!c->parser.msg_done)
      continue;
    conn_handle(c);
  }
  c->processing = false;
  if (c->state == AC_IDLE || c->state == AC_HEAD || c->state == AC_BODY)
    read_start(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct sl_admin_conn *c = s->data;

  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF or an error: a half-sent request is dropped, as is a lingering
     * connection; there is nobody left to answer. */
    conn_close(c);
    return;
  }
  if (c->state == AC_LINGER)
    return; /* dropped */
  if (sl_buf_append(&c->pending, buf->base, (size_t)nread) != 0) {
    conn_close(c);
    return;
  }
  conn_process(c);
}

static void on_timeout(uv_timer_t *t) {
  struct sl_admin_conn *c = t->data;

  if (c->state == AC_HEAD || c->state == AC_BODY) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    sl_buf_reset(&c->pending);
    conn_respond_error(c, 408, "request timeout");
    return;
  }
  conn_close(c);
}

static int on_head(struct sl_http_parser *p, struct sl_http_msg *m) {
  struct sl_admin_conn *c = p->data;

  c->state = AC_BODY;
  arm_timer(c, c->admin->timeout_ms);
  if (m->http_major != 1)
    c->error_status = 505;
  else if (m->target_len == 0 || sl_http_msg_str(m, m->target_off)[0] != '/')
    c->error_status = 400; /* origin-form only */
  if (m->expect_continue && m->http_minor >= 1 && c->error_status == 0 &&
      (m->chunked || m->content_length > 0)) {
    /* curl asks before a body over 1 KiB. Nothing else is queued on the
     * socket at this point, so these few bytes go out whole or not at all. */
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);

    if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != (int)b.len) {
      sl_http_parser_fail(p, SL_HTTP_EBADMSG, "could not send 100 Continue");
      return -1;
    }
  }
  return 0;
}

static int on_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_admin_conn *c = p->data;

  if (c->error_status != 0)
    return 0;
  if (sl_buf_append(&c->body, data, len) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static void on_connection(uv_stream_t *listener, int status) {
  struct sl_admin *a = listener->data;
  struct sl_admin_conn *c;

  if (status < 0) {
    sl_log_warn("admin accept: %s", uv_strerror(status));
    return;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  uv_tcp_init(a->loop, &c->tcp);
  uv_timer_init(a->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->admin = a;
  c->open_handles = 2;
  c->state = AC_IDLE;
  sl_http_parser_init(&c->parser, HTTP_REQUEST, SL_ADMIN_MAX_HEAD, SL_ADMIN_MAX_BODY, on_head,
                      on_body, NULL, c);
  c->next = a->conns;
  if (a->conns != NULL)
    a->conns->prev = c;
  a->conns = c;
  a->n_conns++;
  a->n_alive++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || a->n_conns > SL_ADMIN_MAX_CONNS) {
    if (a->n_conns > SL_ADMIN_MAX_CONNS)
      sl_log_warn("admin: more than %d connections, closing a new one", SL_ADMIN_MAX_CONNS);
    conn_close(c);
    return;
  }
  arm_timer(c, c->admin->idle_timeout_ms);
  read_start(c);
}

struct sl_admin *sl_admin_create(uv_loop_t *loop, const struct sl_config *cfg,
                                 struct sl_metrics *metrics) {
  struct sl_admin *a = calloc(1, sizeof(*a));

  if (a == NULL)
    return NULL;
  a->loop = loop;
  a->metrics = metrics;
  a->ready = true;
  a->timeout_ms = SL_ADMIN_TIMEOUT_MS;
  a->idle_timeout_ms = SL_ADMIN_IDLE_TIMEOUT_MS;
  a->listen_sa = cfg->admin.listen.sa;
  a->listen_text = strdup(cfg->admin.listen.text ? cfg->admin.listen.text : "");
  a->token = strdup(cfg->admin.token ? cfg->admin.token : "");
  uv_tcp_init(loop, &a->listener);
  a->listener.data = a;
  if (a->listen_text == NULL || a->token == NULL || sl__admin_builtin_routes(a) != 0) {
    sl_admin_destroy(a);
    return NULL;
  }
  return a;
}

int sl_admin_start(struct sl_admin *a) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char host[64];
  int r;

  r = uv_tcp_bind(&a->listener, (const struct sockaddr *)&a->listen_sa, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
  if (r == 0)
    r = uv_tcp_getsockname(&a->listener, (struct sockaddr *)&ss, &len);
  if (r != 0) {
    sl_log_error("admin listen on %s: %s", a->listen_text, uv_strerror(r));
    return r;
  }
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
    a->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    sl_log_info("admin listening on [%s]:%u", host, a->port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
    a->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    sl_log_info("admin listening on %s:%u", host, a->port);
  }
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

static void on_listener_closed(uv_handle_t *h) {
  struct sl_admin *a = h->data;

  a->listener_closed = true;
  maybe_free(a);
}

void sl_admin_close(struct sl_admin *a, sl_admin_close_cb cb, void *arg) {
  if (a == NULL || a->closing)
    return;
  a->closing = true;
  a->close_cb = cb;
  a->close_arg = arg;
  while (a->conns != NULL)
    conn_close(a->conns);
  uv_close((uv_handle_t *)&a->listener, on_listener_closed);
}

void sl_admin_destroy(struct sl_admin *a) { sl_admin_close(a, NULL, NULL); }
