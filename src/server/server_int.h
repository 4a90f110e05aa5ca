/*
 * Layout shared by the server module's files: the server (server.c), the client
 * listener's dispatcher on the HTTP/1 core (conn.c), shaping (shape.c), the
 * forwarding of one request to its upstream (proxy.c), the status of the admin
 * API (admin_api.c), metrics (stats.c) and the access log (access_log.c).
 *
 * A client connection is the core's (sluice/http1.h) with the proxy's request
 * state around it. It answers one request at a time: pipelined requests wait
 * in the core's pending buffer, then in the kernel, which is also the
 * backpressure toward the client.
 *
 * Per loop and shared: a server, its listener, connections and access log are
 * per loop; the registry's slots lend each request a per-loop pool and a
 * per-upstream drain (sluice/loop.h says which state is which).
 *
 * @thread loop
 */
#ifndef SLUICE_SERVER_INT_H
#define SLUICE_SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/drain.h"
#include "sluice/exchange.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"
#include "sluice/http.h"
#include "sluice/http1.h"
#include "sluice/loop.h"
#include "sluice/registry.h"
#include "sluice/server.h"
#include "sluice/upstream.h"

struct sl_access_log;
struct sl_metrics;
struct sl_metric;
struct sl_proxy_stats;

/* What sluice did with a request, for sluice_requests_total{outcome}. */
enum sl_outcome {
  SL_OUTCOME_FORWARDED, /* sent upstream, whatever it answered */
  SL_OUTCOME_SPILLED,   /* stored in the spool */
  SL_OUTCOME_REJECTED,  /* refused by shaping: no room to wait or spill */
  SL_OUTCOME_ERROR,     /* answered by sluice with an error (bad request, no route, 502...) */
  SL_OUTCOME_COUNT,
};

/* Series of one route (label "route"), and of one upstream. */
struct sl_route_stats {
  char *label;
  struct sl_metric *outcome[SL_OUTCOME_COUNT];
  struct sl_metric *code_class[5];
  struct sl_metric *duration;
  struct sl_route_stats *next;
};

struct sl_upstream_stats {
  char *name;
  struct sl_metric *duration;
  struct sl_metric *inflight;
  struct sl_upstream_stats *next;
};

/* Run-time upstreams by name (server.c). */
struct upstream_slot;

/* How the last reload ended, for GET /admin/reload (server.c). */
enum sl_reload_result { SL_RELOAD_NONE, SL_RELOAD_SUCCESS, SL_RELOAD_FAILURE };
struct sl_server_reload_info {
  enum sl_reload_result result;
  uint64_t wall_ms; /* when it ended */
  char error[1024]; /* why it failed; "" otherwise */
  uint64_t successes, failures;
};

/* A POST /admin/reload waiting for the reload of generation <gen> to end (server.c). */
struct sl_server_reload_waiter {
  LIST_ENTRY(sl_server_reload_waiter) link;
  struct sl_admin_deferred *answer;
  uint64_t gen;
};

struct sl_server {
  uv_loop_t *loop;
  struct sl_http1_listener *listener; /* the client listener and its connections */
  uv_timer_t grace_timer;
  struct sl_config *cfg;
  struct sl_registry *registry;    /* upstreams, their ids, statuses and keys */
  struct sl_registry_slot **slots; /* of cfg's upstreams, parallel to cfg->upstreams */
  bool shutting_down;
  sl_server_shutdown_cb shutdown_cb;
  struct sl_access_log *access_log;
  struct sl_proxy_stats *stats;
  struct sl_route_stats **route_stats; /* parallel to cfg->routes */
  /* The registry's, borrowed for the request path: */
  struct sl_ledger *ledger;          /* spilled ids, for status URLs */
  struct sl_dedupe *dedupe;          /* Idempotency-Key repeats */
  struct sl_ledger_journal *journal; /* both, across restarts; NULL if nothing spilled at start */
  struct sl_route_stats *unrouted_stats;
  struct sl_server_reload_job *reload; /* the reload under way, NULL if none */
  bool reload_again;                   /* a reload was asked for meanwhile: run one more after */
  struct sl_server_reload_info last_reload;
  struct sl_metric *reloads_ok, *reloads_failed;
  /* POST /admin/reload: what it reloads, and the requests waiting for their reload's end. */
  char *reload_path;
  sl_server_reload_cb reload_cb;
  void *reload_arg;
  uint64_t reload_gen; /* generation of the last reload started */
  LIST_HEAD(, sl_server_reload_waiter) reload_waiters;
};

/*
 * A client connection: the core's connection (first, so that the core allocates the whole),
 * whose <body> is lent to the exchange while the request is forwarded, and the request's
 * state around it.
 */
struct sl_conn {
  struct sl_http1_conn h1;
  struct sl_server *srv;

  /* The current request. */
  struct sl_config *cfg; /* referenced for the request's lifetime */
  const struct sl_route_config *route;
  enum sl_outcome outcome;
  struct sl_route_stats *rstats;
  uint64_t t_start_ns;
  uint64_t t_upstream_start_ns; /* when the forward began (monotonic), for the circuit */
  uint64_t t_upstream_ns;       /* upstream time, 0 when none */
  unsigned status;
  uint64_t bytes_out;

  /* Shaping (shape.c): what happens to a request routed to a drain. */
  enum {
    SHAPE_NONE,
    SHAPE_QUEUED,     /* waiting in memory for a slot */
    SHAPE_SPILLING,   /* the spool append is in flight */
    SHAPE_WATCHING,   /* wait mode: spilled, held for the replay's answer */
    SHAPE_JOURNALING, /* a cancellation's 200 waits for its journal frame */
  } shape;
  bool status_query;  /* the target is a status URL */
  bool holds_slot;    /* forwarded under the budget: give it back when done */
  bool spill_pending; /* an append callback will still come: do not free */
  struct sl_drain *drain;
  struct sl_drain_waiter waiter;
  struct sl_drain_watch watch;
  struct sl_ledger_journal_waiter jwait; /* SHAPE_JOURNALING */
  uint8_t spill_id[16];                  /* also the cancelled id while SHAPE_JOURNALING */
  uint64_t expiry_ttl_ms;                /* if spilled, it expires this long after; 0: never */

  /* Forwarding (proxy.c). */
  struct sl_registry_slot *slot;    /* the route's upstream: pool, drain, id (conn.c) */
  struct sl_upstream *upstream;     /* the pool the exchange in flight uses */
  struct sl_upstream_stats *ustats; /* and its series, until the exchange ended */
  bool counted_inflight;
  struct sl_upx *upx;  /* the upstream exchange, made once per connection */
  struct sl_buf upreq; /* request head for the upstream; with <body>, lent to <upx> */
  enum sl_http_framing framing;
  bool head_sent;       /* response head already written to the client */
  bool upstream_paused; /* upstream reads stopped until the client drains */
};

/* conn.c */
/* The client listener's settings and handler table on the HTTP/1 core. */
extern const struct sl_http1_settings sl__conn_settings;
/* The core's limits for the client listener under <cfg>, into <lim>. */
void sl__conn_limits(const struct sl_config *cfg, struct sl_http1_limits *lim);
/* Answers the current request with sluice's own <status> and a short body. */
void sl__conn_respond_error(struct sl_conn *c, unsigned status, bool close_after);
/* Answers with <status>, extra header lines <headers> ("Name: v\r\n"...) and a
 * JSON <body>. */
void sl__conn_respond_json(struct sl_conn *c, unsigned status, const char *headers,
                           const char *body, size_t body_len);

/* shape.c */
/* Forwards, spills or queues the complete request according to its drain. */
void sl__shape_start(struct sl_conn *c);
/* Answers a status URL. */
void sl__shape_status(struct sl_conn *c);
/* The request ended (answered or the client left): give back what it held. */
void sl__shape_finish(struct sl_conn *c);
/* The connection's timer fired while the request is shaped. */
void sl__shape_timeout(struct sl_conn *c);
/*
 * The forward of the current request failed with <err> before any byte of it
 * reached the backend (the connect was refused or timed out). Reports the
 * failure to the upstream's circuit; if the route may spill the request, it
 * is spilled (202, or held in wait mode) and true is returned: nothing was
 * sent, so queuing it is safe. False if it cannot spill: the caller answers
 * the error. The request and its body must still be in <c>.
 */
bool sl__shape_spill_unsent(struct sl_conn *c, int err);
/* The backend answered the forwarded request with <m>: its status reported to the
 * upstream's drain (sl_drain_live_answered): its circuit (a success closes it; 502, 503,
 * 504, 429 are failures), a 429 or 503 with Retry-After's hold, its adaptive rate. */
void sl__shape_forward_answered(struct sl_conn *c, const struct sl_http_msg *m);

/* proxy.c */
void sl__proxy_start(struct sl_conn *c);
/* Called when the client's write queue drained below the low watermark. */
void sl__proxy_client_drained(struct sl_conn *c);
/* The client went away: release the upstream side. */
void sl__proxy_cancel(struct sl_conn *c);
void sl__proxy_init(struct sl_conn *c);
void sl__proxy_dispose(struct sl_conn *c);

/* server.c */
/* The upstream slot of route <r> of config <cfg> (NULL <r>: NULL): from the table of the
 * running config, without a string compare, or by name for a request from before a reload. */
struct sl_registry_slot *sl__server_slot(struct sl_server *srv, const struct sl_config *cfg,
                                         const struct sl_route_config *r);
/* The drain of upstream <name>; NULL if unknown. */
struct sl_drain *sl__server_drain(struct sl_server *srv, const char *name);

/* Whether a drain is rebuilding statuses and keys from its spool (sl_drain_rebuilding). */
bool sl__server_rebuilding(struct sl_server *srv);

/* The upstream name of id <id> (status entries, key scopes), NULL if unknown: an upstream
 * from before a restart, since removed. */
const char *sl__server_upstream_name(const struct sl_server *srv, uint16_t id);
/* The series of route <r> of config <cfg> (NULL <r>: requests no route matched). */
struct sl_route_stats *sl__server_route_stats(struct sl_server *srv, const struct sl_config *cfg,
                                              const struct sl_route_config *r);

/* stats.c */
struct sl_proxy_stats *sl__stats_create(struct sl_metrics *reg);
void sl__stats_destroy(struct sl_proxy_stats *st);
/* Find or create the series of a route or upstream; NULL on ENOMEM (logged). */
struct sl_route_stats *sl__stats_route(struct sl_proxy_stats *st, const struct sl_route_config *r);
struct sl_upstream_stats *sl__stats_upstream(struct sl_proxy_stats *st, const char *name);
/* Counts one answered request. Accepts NULL <rs>. */
void sl__stats_request_done(struct sl_route_stats *rs, enum sl_outcome outcome, unsigned status,
                            double seconds);

/* access_log.c */
struct sl_access_log *sl__access_log_create(uv_loop_t *loop);
/* Writes the lines still buffered, then frees (the loop must run on). */
void sl__access_log_destroy(struct sl_access_log *log);
void sl__access_log_write(struct sl_access_log *log, const struct sl_conn *c);

#endif
