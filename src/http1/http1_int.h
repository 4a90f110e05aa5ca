/*
 * Layout shared by the http1 module's files: the listener (listener.c: accept, the list of
 * connections, shutdown, close) and the connection state machine (conn.c).
 *
 * @thread loop (the listener's)
 */
#ifndef SLUICE_HTTP1_INT_H
#define SLUICE_HTTP1_INT_H

#include <stdbool.h>
#include <uv.h>

#include "sluice/http1.h"

struct sl_http1_listener {
  uv_tcp_t tcp;
  struct sl_loop *loop; /* its read buffer serves every connection of the listener */
  const struct sl_http1_settings *settings;
  const struct sl_http1_handler *h; /* settings->handler */
  struct sl_http1_limits limits;
  void *data;                  /* the dispatcher's */
  struct sl_http1_conn *conns; /* open connections */
  unsigned n_conns;            /* open connections */
  unsigned n_alive;            /* connections not yet freed (closing ones too) */
  bool shutting_down;          /* busy connections close after their response */
  bool closing;                /* sl_http1_listener_close() was called */
  bool handle_closed;
  sl_http1_empty_cb empty_cb;
  void *empty_arg;
  sl_http1_closed_cb closed_cb;
  void *closed_arg;
};

/* conn.c: serves a connection just accepted on <l>. */
void sl__http1_conn_accept(struct sl_http1_listener *l);
/* conn.c: starts a graceful close of <c>: at once when idle, else after its response. */
void sl__http1_conn_shutdown(struct sl_http1_conn *c);

/* listener.c: <c> is closing: it leaves the list (and a shutdown may be complete). */
void sl__http1_listener_unlink(struct sl_http1_listener *l, struct sl_http1_conn *c);
/* listener.c: a connection of <l> was freed (the listener may now be). */
void sl__http1_listener_conn_freed(struct sl_http1_listener *l);

#endif
