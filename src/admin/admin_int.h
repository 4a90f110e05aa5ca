/*
 * Layout shared by the admin module's files: the listener's dispatcher on the
 * HTTP/1 core (server.c), the routes, built-in handlers and token check
 * (router.c) and the web console's files (console.c).
 *
 * Lifetime: the server is freed by sl_admin_close() once its listener and
 * every connection have been freed (sluice/http1.h); connections are freed in
 * the close callback of their last handle, so a connection pointer stays valid
 * for the whole call stack that closes it (a handler may call sl_admin_close()).
 *
 * @thread loop
 */
#ifndef SLUICE_ADMIN_INT_H
#define SLUICE_ADMIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/admin.h"
#include "sluice/buf.h"
#include "sluice/http.h"

#define SL_ADMIN_MAX_HEAD (16 * 1024)
#define SL_ADMIN_MAX_BODY (1024 * 1024)
#define SL_ADMIN_TIMEOUT_MS 10000      /* to send a head, a body; to take a response */
#define SL_ADMIN_IDLE_TIMEOUT_MS 60000 /* between requests on a kept-alive connection */
#define SL_ADMIN_MAX_CONNS 64

struct sl_admin_route {
  char *path;
  size_t path_len;
  bool prefix; /* <path> ends in '/': matches every path below it */
  unsigned methods;
  unsigned flags;
  sl_admin_handler_cb handler;
  void *arg;
};

/* One line of the endpoint list that GET / answers (sl_admin_describe). */
struct sl_admin_endpoint {
  unsigned methods;
  unsigned flags;
  char *path;
  char *what;
};

struct sl_http1_listener;

struct sl_admin {
  struct sl_http1_listener *listener; /* the socket and the connections (sluice/http1.h) */
  struct sl_metrics *metrics;
  char *listen_text; /* as configured, to notice a change on reload */
  struct sockaddr_storage listen_sa;
  char *token; /* "" = no token */
  bool ready;
  char *ready_reason;
  struct sl_admin_route *routes;
  size_t n_routes;
  struct sl_admin_endpoint *endpoints; /* for GET /, in the order described */
  size_t n_endpoints;
  unsigned port;
  uint64_t timeout_ms;       /* SL_ADMIN_TIMEOUT_MS; tests shorten these before the start */
  uint64_t idle_timeout_ms;  /* SL_ADMIN_IDLE_TIMEOUT_MS */
  uint64_t defer_timeout_ms; /* SL_ADMIN_DEFER_TIMEOUT_MS: how long a deferred answer may take */
  bool closing;
  sl_admin_close_cb close_cb;
  void *close_arg;
};

/* router.c: registers the built-in routes. Returns 0 or UV_ENOMEM. */
int sl__admin_builtin_routes(struct sl_admin *a);

/* router.c: answers <req> into <resp> (initialised by the caller): routing,
 * 404/405, the token check, then the handler. */
void sl__admin_dispatch(struct sl_admin *a, const struct sl_admin_request *req,
                        struct sl_admin_response *resp);

/* router.c: frees the routes. */
void sl__admin_routes_dispose(struct sl_admin *a);

/* A file compiled into the binary: the web console's page, stylesheet, script and icon
 * (src/admin/console/), turned into <data> by scripts/embed.cmake at build time. <data> has
 * <len> bytes and a NUL after them. */
struct sl__admin_file {
  const char *name; /* "console.js": the name in src/admin/console/ */
  const unsigned char *data;
  size_t len;
};

/* The generated console_files.c in the build directory: every file, sorted by name. */
extern const struct sl__admin_file sl__admin_files[];
extern const size_t sl__admin_n_files;

/* console.c: registers GET /ui and the files below /ui/. Returns 0 or UV_ENOMEM. */
int sl__admin_console_routes(struct sl_admin *a);

#endif
