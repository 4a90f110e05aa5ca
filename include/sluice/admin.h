/*
 * The admin listener: a small HTTP/1.1 server on its own address
 * (admin.listen, 127.0.0.1:9464 by default) for Prometheus and operators.
 *
 * Built-in routes, never behind the token:
 *   GET /         the endpoints, with their methods (JSON; see sl_admin_describe)
 *   GET /metrics  the registry's text exposition (text/plain; version=0.0.4)
 *   GET /healthz  200 "ok": the process is alive and its loop turns
 *   GET /readyz   200 "ready", or 503 with the reason given to
 *                 sl_admin_set_ready() (shutting down, spool unavailable)
 *   GET /ui       the web console, a page for a browser, and GET /ui/<name> its
 *                 files (compiled in: src/admin/console.c, docs/console.md)
 * Other modules add routes with sl_admin_route(); a route flagged
 * SL_ADMIN_PROTECTED requires "Authorization: Bearer <admin.token>" when the
 * token is not empty. Errors are JSON: {"error":"..."}.
 *
 * Requests are read with the project's strict parser. Limits: a 16 KiB head,
 * a 1 MiB body, 10 s to send a head or a body, 10 s for a response to be
 * taken, 60 s idle between requests on a kept-alive connection, 64
 * connections at a time. Handlers run synchronously on the loop, one request
 * of a connection at a time, responses in order.
 *
 * The admin server copies what it needs from the config (token, address), so
 * it holds no reference on it. Its connections run on the HTTP/1 core
 * (sluice/http1.h), as the client listener's do.
 *
 * Per loop: the admin listener and its connections belong to one loop; what
 * its handlers report (metrics, drains, spools) is the process's.
 *
 * @thread loop
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/http.h"
#include "sluice/loop.h"
#include "sluice/metrics.h"

struct sl_admin;

/* A parsed request, borrowed: valid only while the handler runs. */
struct sl_admin_request {
  unsigned method;  /* SL_METHOD_* bit */
  const char *path; /* the target up to '?', not decoded, NUL-terminated */
  size_t path_len;
  const char *query; /* after '?', "" when none, NUL-terminated */
  size_t query_len;
  const char *body; /* the whole body, "" when none, NUL-terminated */
  size_t body_len;
  const struct sl_http_msg *msg; /* headers: sl_http_msg_header() */
};

struct sl_admin_deferred;

/* The response a handler fills in. It starts as 200, text/plain, empty. */
struct sl_admin_response {
  unsigned status;
  const char *content_type; /* static or outliving the handler */
  struct sl_buf headers;    /* extra header lines, see sl_admin_response_header() */
  struct sl_buf body;
  struct sl_admin_deferred *deferred; /* the admin's: set by sl_admin_defer() */
};

/* Answers <req> by filling <resp>; <arg> is the one given to sl_admin_route(). */
typedef void (*sl_admin_handler_cb)(const struct sl_admin_request *req,
                                    struct sl_admin_response *resp, void *arg);

/* Called when sl_admin_close() has finished and the server is freed. */
typedef void (*sl_admin_close_cb)(void *arg);

/* Route flags. */
#define SL_ADMIN_PROTECTED 1u /* requires the bearer token when one is configured */

/*
 * Creates an admin server on the loop of <lp> for cfg->admin (copied) that
 * serves <metrics> at /metrics (NULL: an empty exposition). <lp> and <metrics>
 * must outlive the server. Returns NULL on ENOMEM.
 */
struct sl_admin *sl_admin_create(struct sl_loop *lp, const struct sl_config *cfg,
                                 struct sl_metrics *metrics);

/* Binds and listens on cfg->admin.listen and logs "admin listening on
 * HOST:PORT" with the port actually bound. Returns 0 or a UV_* error (logged). */
int sl_admin_start(struct sl_admin *a);

/* The bound port after sl_admin_start(), else 0. */
unsigned sl_admin_port(const struct sl_admin *a);

/* Takes the token of a reloaded <cfg> at once; a changed listen address is
 * logged and needs a restart. */
int sl_admin_set_config(struct sl_admin *a, const struct sl_config *cfg);

/* Makes /readyz answer 200 (<ready>) or 503 with <reason> (copied; NULL for
 * "not ready"). */
void sl_admin_set_ready(struct sl_admin *a, bool ready, const char *reason);

/*
 * Routes requests whose method is in <methods> (SL_METHOD_* bits; GET also
 * answers HEAD) and whose path is <path>, or starts with <path> when it ends
 * in '/' (except "/" itself, which is exact), to <handler>(req, resp, <arg>). The longest matching
 * path wins; a path that matches with another method gets 405 and an Allow header. <flags> is 0 or
 * SL_ADMIN_PROTECTED. <path> is copied. Returns 0, UV_EEXIST when the same path and a method are
 * taken, UV_EINVAL or UV_ENOMEM.
 */
int sl_admin_route(struct sl_admin *a, unsigned methods, const char *path, unsigned flags,
                   sl_admin_handler_cb handler, void *arg);

/*
 * Adds a line to the endpoint list GET / answers: <path> (a pattern for
 * people, e.g. "/admin/upstreams/<name>/pause"), the <methods> it takes,
 * whether it needs the token (<flags> SL_ADMIN_PROTECTED) and what it does
 * (<what>). Both strings are copied. Returns 0 or UV_ENOMEM.
 */
int sl_admin_describe(struct sl_admin *a, unsigned methods, const char *path, unsigned flags,
                      const char *what);

/*
 * Checks the "Authorization: Bearer <token>" header of <msg> against
 * <token>, in time that does not depend on how much of a guess was right.
 * Every listener that guards something with admin.token uses this one
 * function. Returns 0 when <token> is NULL or empty or the right token was
 * sent, UV_EPERM when none was sent, UV_EACCES when another was: answer 401
 * with "WWW-Authenticate: Bearer" (UV_EPERM) or
 * "WWW-Authenticate: Bearer error=\"invalid_token\"" (UV_EACCES).
 */
int sl_admin_check_token(const char *token, const struct sl_http_msg *msg);

/* Adds header line "<name>: <value>" to <resp>. Returns 0 or UV_ENOMEM. */
int sl_admin_response_header(struct sl_admin_response *resp, const char *name, const char *value);

/* Makes <resp> a JSON error: <status> and {"error":"<message>"}. */
void sl_admin_response_error(struct sl_admin_response *resp, unsigned status, const char *message);

/*
 * An answer given later, for a handler that must wait for something before
 * it can answer (POST /admin/reload waits for the reload). The handler calls
 * sl_admin_defer(<resp>) and returns; what it put in <resp> is not sent. The
 * request's connection then waits, reading no further request, until the
 * owner of the returned handle fills sl_admin_deferred_response() and calls
 * sl_admin_deferred_answer(), or until SL_ADMIN_DEFER_TIMEOUT_MS have passed
 * (the client gets 504; the later answer is dropped). Answering inside the
 * handler itself is allowed too (the answer goes out as it returns).
 *
 * The handle is the caller's until sl_admin_deferred_answer(), which must be
 * called exactly once whatever happened to the connection (it then frees the
 * handle, and sends nothing when the client has gone). Returns NULL on ENOMEM
 * (the handler then answers at once, e.g. 500).
 */
#define SL_ADMIN_DEFER_TIMEOUT_MS 60000
struct sl_admin_deferred *sl_admin_defer(struct sl_admin_response *resp);

/* The response to fill in before sl_admin_deferred_answer(): 200, text/plain, empty at first. */
struct sl_admin_response *sl_admin_deferred_response(struct sl_admin_deferred *d);

/* Sends the response of <d> if its request still waits for it, and frees <d>. */
void sl_admin_deferred_answer(struct sl_admin_deferred *d);

/*
 * Stops listening, closes every connection (responses not yet sent are
 * dropped), frees the server once its handles are closed and then calls
 * <cb>(<arg>) if <cb> is not NULL. The loop must run on. Accepts NULL.
 */
void sl_admin_close(struct sl_admin *a, sl_admin_close_cb cb, void *arg);

/* sl_admin_close() without a callback. Accepts NULL. */
void sl_admin_destroy(struct sl_admin *a);

#endif
