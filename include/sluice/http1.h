/*
 * HTTP/1.x server connections over libuv: the one connection core that both listeners run on.
 * The client listener (server/: routes, shapes and proxies) and the admin listener (admin/: its
 * own small API) are two dispatchers on it; each fills in a handler table and never touches a
 * socket, a timer or the parser's feeding itself.
 *
 * The core owns: accepting on a listener, the libuv TCP handle and timer of each connection and
 * their close callbacks, reading into the parser (sluice/http.h), the timeouts of each state,
 * the buffer of bytes read but not parsed yet (pipelining) and pausing reads when it is full,
 * writing responses with the accounting of writes in flight, keep-alive, and the lingering
 * close. A dispatcher owns what a request means: routing, the answer, logging and metrics.
 *
 * States of a connection:
 *
 *   IDLE -(first byte)-> HEAD -(head parsed: handler->head)-> BODY -(request read)->
 *   ANSWERING (handler->start; the dispatcher answers, at once or later) -(sl_http1_conn_done)->
 *   IDLE again; or WRITING first when the listener is <serial> and the response is not all
 *   taken by the kernel (reading stops until it is); or DRAINING when the connection must
 *   close: the last response is flushed, the write side shut down, and what the client still
 *   sends is read and dropped for a moment (a lingering close) so that an early answer such as
 *   413 is not destroyed by a TCP reset. CLOSED once closing has begun.
 *
 * While ANSWERING the connection goes on reading (so that a client that leaves is noticed), but
 * pipelined requests are only buffered up to SL_HTTP1_PENDING_MAX; beyond it they wait in the
 * kernel, which pushes back on the client. They are parsed once the answer is done.
 *
 * Requests the core refuses itself (malformed, or a head or body that did not come in time)
 * and requests the dispatcher refused from their head are answered through handler->refuse,
 * so that each listener keeps its own error format.
 *
 * Ownership: the core allocates each connection (settings->conn_size bytes, so that a
 * dispatcher's connection embeds struct sl_http1_conn as its first member) and frees it in the
 * close callback of its last handle, after handler->dispose; a dispatcher holds it longer with
 * sl_http1_conn_hold() (a callback still to come). A connection pointer thus stays valid for the
 * whole call stack that closes it. Memory handed to uv_write stays alive until the write's
 * callback, whatever completes first. A listener is freed once it was closed and its last
 * connection was freed.
 *
 * Per loop: a listener, its connections, their timers and the read buffer (borrowed from the
 * loop's struct sl_loop) all belong to one loop. Several loops each run their own listener.
 *
 * @thread loop (the listener's)
 */
#ifndef SLUICE_HTTP1_H
#define SLUICE_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/http.h"
#include "sluice/loop.h"

/* Pipelined bytes buffered while a request is answered. */
#define SL_HTTP1_PENDING_MAX (64 * 1024)
/* Response bytes in flight above which the client counts as congested (a proxied response
 * stops reading its upstream) and below which it drains again (handler->proceed). */
#define SL_HTTP1_WRITE_HIGH_WATER (256 * 1024)
#define SL_HTTP1_WRITE_LOW_WATER (64 * 1024)
/* How long a closing connection keeps reading what the client still sends. */
#define SL_HTTP1_LINGER_MS 2000

struct sl_http1_listener;

enum sl_http1_state {
  SL_HTTP1_IDLE,      /* between requests, waiting for the first byte */
  SL_HTTP1_HEAD,      /* reading a request head */
  SL_HTTP1_BODY,      /* reading a request body */
  SL_HTTP1_ANSWERING, /* the request is complete and the dispatcher answers it */
  SL_HTTP1_WRITING,   /* serial listeners: the response is being taken, reading stopped */
  SL_HTTP1_DRAINING,  /* last response written, closing once it is flushed */
  SL_HTTP1_CLOSED,
};

/* Why handler->refuse is called. */
enum sl_http1_refusal {
  SL_HTTP1_REFUSED,   /* the dispatcher's head callback asked for <status>; the body was read */
  SL_HTTP1_MALFORMED, /* the parser failed: <status> from sl_http_error_status(), closes */
  SL_HTTP1_TIMEOUT,   /* the head or the body did not come in time: 408, closes */
};

/*
 * A connection. The core's fields; a dispatcher embeds it as the first member of its own
 * connection (settings->conn_size) and finds that with sl_container_of. A dispatcher reads
 * <parser> (parser.msg is the current request), <body>, <client_addr> and <state>, appends its
 * response to <out>, and may clear <keep_alive> (the connection closes after the response).
 * The rest is the core's.
 */
struct sl_http1_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uint64_t deadline; /* loop time (ms) the timeout is for; UINT64_MAX: none */
  struct sl_http1_listener *listener;
  struct sl_http1_conn *prev, *next; /* in the listener's list while open */
  enum sl_http1_state state;
  int refs; /* the two handles, plus sl_http1_conn_hold() */
  unsigned writes_in_flight;
  size_t write_bytes_in_flight;
  uint64_t body_timeout_ms; /* the body timeout in force when the request began */
  unsigned refused_status;  /* handler->head's status: the request is answered with it */
  bool processing;          /* parsing: an answer given meanwhile must not parse on itself */
  bool keep_alive;          /* after the current response */
  bool read_paused;         /* reads stopped: too many pipelined bytes, or WRITING */
  bool proceed_wanted;      /* handler->proceed once the client drains */

  struct sl_http_parser parser;
  struct sl_buf pending; /* client bytes read but not parsed yet */
  struct sl_buf body;    /* the current request's body (lent to the dispatcher until done) */
  struct sl_buf out;     /* response bytes not yet handed to the socket */
  char client_addr[46];  /* the peer's IP as text */
};

/* What a listener's connections may take. The listener copies them; a change applies to the
 * next use of each (a request's limits are fixed when its first byte comes). */
struct sl_http1_limits {
  uint64_t max_header_bytes;  /* the request head */
  uint64_t max_body_bytes;    /* 0: no limit */
  uint64_t accept_timeout_ms; /* from accept to the first byte */
  uint64_t header_timeout_ms; /* from the first byte to the end of the head */
  uint64_t body_timeout_ms;   /* between reads of the body (see body_timeout_total) */
  uint64_t idle_timeout_ms;   /* between requests on a kept-alive connection */
  uint64_t write_timeout_ms;  /* for a last response, or (serial) any, to be taken; 0: none */
};

/*
 * A dispatcher: the core calls these with the connection (never inside another of them,
 * except as said). Callbacks marked optional may be NULL. After each, the connection may be
 * CLOSED (the callback closed it, or closed the listener); it is still valid memory.
 */
struct sl_http1_handler {
  /* Optional. A connection was accepted and is in the listener's list: set up the
   * dispatcher's part. Return 0 to serve it, or nonzero to close it at once (a limit). */
  int (*accept)(struct sl_http1_conn *c);
  /* Optional. The first byte of a new request came; the core has set the parser's limits. */
  void (*begin)(struct sl_http1_conn *c);
  /* The head of the request is parsed, as <m>. Return 0 to read the body and answer (start),
   * a status (> 0) to read and drop the body and answer it through refuse, or -1 after
   * sl_http_parser_fail() to fail the request as malformed. The core then answers
   * "Expect: 100-continue" with 100 Continue unless the status is not 0 or the callback
   * cleared m->expect_continue (a request answered without regard to its body). */
  int (*head)(struct sl_http1_conn *c, struct sl_http_msg *m);
  /* The request (parser.msg, and body) is complete: answer it, now or later, and then call
   * sl_http1_conn_done() (or close the connection). The connection is ANSWERING meanwhile:
   * its timer is the dispatcher's (sl_http1_conn_arm) and reads are buffered. */
  void (*start)(struct sl_http1_conn *c);
  /* Answer the current request with sluice's own <status>, for reason <why>, then call
   * sl_http1_conn_done(). For MALFORMED and TIMEOUT keep_alive is already false. */
  void (*refuse)(struct sl_http1_conn *c, enum sl_http1_refusal why, unsigned status);
  /* Optional. The timer armed with sl_http1_conn_arm() ran out while ANSWERING. */
  void (*timeout)(struct sl_http1_conn *c);
  /* Optional. The client took enough of the response after sl_http1_conn_congested()
   * returned true: produce more. */
  void (*proceed)(struct sl_http1_conn *c);
  /* Optional. The answer is done (called by sl_http1_conn_done before the core forgets the
   * request): give back what the request held, log it, count it. */
  void (*end)(struct sl_http1_conn *c);
  /* Optional. A graceful shutdown found the connection ANSWERING: the dispatcher may answer
   * sooner. It closes after that answer either way. */
  void (*shutdown)(struct sl_http1_conn *c);
  /* Optional. The connection is closing (the client went away, an error, an abort): cancel
   * what the request started. Nothing can be written any more. */
  void (*cancel)(struct sl_http1_conn *c);
  /* Optional. The connection's memory is about to be freed: free the dispatcher's part. */
  void (*dispose)(struct sl_http1_conn *c);
};

/* How a listener serves. Borrowed: must outlive the listener (a static const is usual). */
struct sl_http1_settings {
  const char *log_prefix; /* before "conn" and "accept" in log lines: "" or "admin " */
  size_t conn_size;       /* of the dispatcher's connection, >= sizeof(struct sl_http1_conn) */
  /* The next request of a connection is parsed only once the previous response was taken
   * whole by the kernel (with limits.write_timeout_ms for that): a client that pipelines
   * without reading can make the server hold one response and one read at most. */
  bool serial;
  /* The body timeout counts from the end of the head, not from the last read. */
  bool body_timeout_total;
  const struct sl_http1_handler *handler;
};

/* Called once a graceful shutdown has no connection left (sl_http1_listener_shutdown). */
typedef void (*sl_http1_empty_cb)(struct sl_http1_listener *l, void *arg);
/* Called once a closed listener and its last connection have been freed. */
typedef void (*sl_http1_closed_cb)(void *arg);

/*
 * Creates a listener on loop <lp> (borrowed; outlives the listener) that serves as <settings>
 * say within <limits> (copied), for a dispatcher whose own state is <data>
 * (sl_http1_listener_data). Returns NULL on ENOMEM.
 */
struct sl_http1_listener *sl_http1_listener_create(struct sl_loop *lp,
                                                   const struct sl_http1_settings *settings,
                                                   const struct sl_http1_limits *limits,
                                                   void *data);

/* Replaces the limits (copied), for what starts from now on. */
void sl_http1_listener_set_limits(struct sl_http1_listener *l,
                                  const struct sl_http1_limits *limits);

/*
 * Binds to <sa>, listens with <backlog> and reads back the address bound: "host:port" or
 * "[host]:port" into <addr> (<addr_len> bytes) and the port into <port>. Returns 0 or a UV_*
 * error, which the caller logs.
 */
int sl_http1_listener_start(struct sl_http1_listener *l, const struct sockaddr *sa, int backlog,
                            char *addr, size_t addr_len, unsigned *port);

/* The dispatcher's state given to sl_http1_listener_create(). */
void *sl_http1_listener_data(const struct sl_http1_listener *l);

/* The connections open (closing ones not counted), including one being accepted. */
unsigned sl_http1_listener_conns(const struct sl_http1_listener *l);

/*
 * Graceful stop: stops accepting; idle connections close now, busy ones after their current
 * response (handler->shutdown tells one that is ANSWERING). <cb>(<l>, <arg>) runs once no
 * connection is open: at once from here if none is, else from the close of the last one, so
 * it must not free the listener itself (run from a fresh loop turn for that). Once only.
 */
void sl_http1_listener_shutdown(struct sl_http1_listener *l, sl_http1_empty_cb cb, void *arg);

/* Closes every open connection now, dropping what is unsent (the grace period is over). */
void sl_http1_listener_abort(struct sl_http1_listener *l);

/*
 * Stops listening, closes every connection (responses not yet sent are dropped), and frees
 * the listener once its handle is closed and its last connection freed; then calls
 * <cb>(<arg>) if <cb> is not NULL. That is from here when nothing is left to wait for
 * (after a completed shutdown), else from a later callback: the loop must run on.
 * Accepts NULL.
 */
void sl_http1_listener_close(struct sl_http1_listener *l, sl_http1_closed_cb cb, void *arg);

/* Queues <len> bytes of <data> for the client. Returns 0 or UV_ENOMEM. */
static inline int sl_http1_conn_write(struct sl_http1_conn *c, const void *data, size_t len) {
  return sl_buf_append(&c->out, data, len);
}

/* Hands the queued bytes to the socket. Returns 0, or a UV_* error after which the connection
 * is closed. */
int sl_http1_conn_flush(struct sl_http1_conn *c);

/*
 * The current request is fully answered (its response queued in <out>): handler->end runs,
 * the response is flushed, and the connection goes on to the next request, or closes as
 * keep_alive and a shutdown say. Does nothing on a CLOSED connection.
 */
void sl_http1_conn_done(struct sl_http1_conn *c);

/* Closes at once, dropping anything unsent (a truncated response must not look complete). */
void sl_http1_conn_close(struct sl_http1_conn *c);

/* Whether the client is too far behind for more response bytes to be produced; if so,
 * handler->proceed runs once it has caught up. */
bool sl_http1_conn_congested(struct sl_http1_conn *c);

/* While ANSWERING: arms the connection's timer <ms> from now (handler->timeout), or disarms it
 * until the next arm. */
void sl_http1_conn_arm(struct sl_http1_conn *c, uint64_t ms);
void sl_http1_conn_disarm(struct sl_http1_conn *c);

/* Keeps the connection's memory past its close until a matching sl_http1_conn_release(), for
 * a callback that will still come with it. */
void sl_http1_conn_hold(struct sl_http1_conn *c);
void sl_http1_conn_release(struct sl_http1_conn *c);

/* The state's name, for logs. */
const char *sl_http1_state_name(enum sl_http1_state s);

#endif
