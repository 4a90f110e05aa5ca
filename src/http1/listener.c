/*
 * An HTTP/1.x listener: the listening socket, the list of its open connections, graceful
 * shutdown and close. The connections themselves are conn.c.
 *
 * Lifetime: sl_http1_listener_close() closes the socket and every open connection; the
 * listener is freed once the socket's close callback has run and its last connection was freed
 * (a connection outlives its close while its handles close or a dispatcher holds it), so a
 * connection never points at a freed listener.
 *
 * @thread loop (the listener's)
 */
#include "sluice/http1.h"

#include <stdio.h>
#include <stdlib.h>

#include "http1_int.h"
#include "sluice/log.h"

static void on_connection(uv_stream_t *s, int status) {
  struct sl_http1_listener *l = s->data;

  if (status < 0) {
    sl_log_warn("%saccept: %s", l->settings->log_prefix, uv_strerror(status));
    return;
  }
  sl__http1_conn_accept(l);
}

struct sl_http1_listener *sl_http1_listener_create(struct sl_loop *lp,
                                                   const struct sl_http1_settings *settings,
                                                   const struct sl_http1_limits *limits,
                                                   void *data) {
  struct sl_http1_listener *l = calloc(1, sizeof(*l));

  if (l == NULL)
    return NULL;
  l->loop = lp;
  l->settings = settings;
  l->h = settings->handler;
  l->limits = *limits;
  l->data = data;
  uv_tcp_init(lp->uv, &l->tcp);
  l->tcp.data = l;
  return l;
}

void sl_http1_listener_set_limits(struct sl_http1_listener *l,
                                  const struct sl_http1_limits *limits) {
  l->limits = *limits;
}

int sl_http1_listener_start(struct sl_http1_listener *l, const struct sockaddr *sa, int backlog,
                            char *addr, size_t addr_len, unsigned *port) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char host[64];
  int r;

  r = uv_tcp_bind(&l->tcp, sa, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&l->tcp, backlog, on_connection);
  if (r == 0)
    r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
  if (r != 0)
    return r;
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
    *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    snprintf(addr, addr_len, "[%s]:%u", host, *port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(addr, addr_len, "%s:%u", host, *port);
  }
  return 0;
}

void *sl_http1_listener_data(const struct sl_http1_listener *l) { return l->data; }

unsigned sl_http1_listener_conns(const struct sl_http1_listener *l) { return l->n_conns; }

static void maybe_free(struct sl_http1_listener *l) {
  sl_http1_closed_cb cb;
  void *arg;

  if (!l->closing || !l->handle_closed || l->n_alive > 0)
    return;
  cb = l->closed_cb;
  arg = l->closed_arg;
  free(l);
  if (cb != NULL)
    cb(arg);
}

void sl__http1_listener_unlink(struct sl_http1_listener *l, struct sl_http1_conn *c) {
  sl_http1_empty_cb cb;

  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (l->conns == c)
    l->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  l->n_conns--;
  if (l->n_conns == 0 && l->empty_cb != NULL) {
    cb = l->empty_cb;
    l->empty_cb = NULL;
    cb(l, l->empty_arg);
  }
}

void sl__http1_listener_conn_freed(struct sl_http1_listener *l) {
  l->n_alive--;
  maybe_free(l);
}

static void on_listener_closed(uv_handle_t *h) {
  struct sl_http1_listener *l = h->data;

  l->handle_closed = true;
  maybe_free(l);
}

static void close_socket(struct sl_http1_listener *l) {
  if (!uv_is_closing((uv_handle_t *)&l->tcp))
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

void sl_http1_listener_shutdown(struct sl_http1_listener *l, sl_http1_empty_cb cb, void *arg) {
  struct sl_http1_conn *c, *next;

  if (l->shutting_down)
    return;
  l->shutting_down = true;
  close_socket(l);
  for (c = l->conns; c != NULL; c = next) {
    next = c->next;
    sl__http1_conn_shutdown(c);
  }
  if (l->n_conns == 0) {
    if (cb != NULL)
      cb(l, arg);
    return;
  }
  l->empty_cb = cb;
  l->empty_arg = arg;
}

void sl_http1_listener_abort(struct sl_http1_listener *l) {
  while (l->conns != NULL)
    sl_http1_conn_close(l->conns);
}

void sl_http1_listener_close(struct sl_http1_listener *l, sl_http1_closed_cb cb, void *arg) {
  if (l == NULL || l->closing)
    return;
  l->closing = true;
  l->shutting_down = true;
  l->empty_cb = NULL;
  l->closed_cb = cb;
  l->closed_arg = arg;
  sl_http1_listener_abort(l);
  close_socket(l);
  maybe_free(l); /* a shutdown may have closed the socket, and the connections gone, before */
}
