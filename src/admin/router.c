/*
 * Admin routing: the route table, the bearer-token check, JSON errors and
 * the built-in /, /metrics, /healthz and /readyz handlers (and, from
 * console.c, the web console's /ui).
 *
 * The table is small (a handful of routes), so matching is a linear scan for
 * the longest matching path; no allocation happens per request except the
 * response itself.
 *
 * @thread loop
 */
#include "admin_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/config.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/util.h"

/* Method names in the order an Allow header lists them. */
static const struct {
  unsigned bit;
  const char *name;
} method_names[] = {
    {SL_METHOD_GET, "GET"},         {SL_METHOD_HEAD, "HEAD"},   {SL_METHOD_POST, "POST"},
    {SL_METHOD_PUT, "PUT"},         {SL_METHOD_PATCH, "PATCH"}, {SL_METHOD_DELETE, "DELETE"},
    {SL_METHOD_OPTIONS, "OPTIONS"},
};

int sl_admin_route(struct sl_admin *a, unsigned methods, const char *path, unsigned flags,
                   sl_admin_handler_cb handler, void *arg) {
  struct sl_admin_route *grown, *r;
  size_t len;

  if (path == NULL || path[0] != '/' || handler == NULL || methods == 0)
    return UV_EINVAL;
  len = strlen(path);
  for (size_t i = 0; i < a->n_routes; i++) {
    if (strcmp(a->routes[i].path, path) == 0 && (a->routes[i].methods & methods) != 0)
      return UV_EEXIST;
  }
  grown = realloc(a->routes, (a->n_routes + 1) * sizeof(*grown));
  if (grown == NULL)
    return UV_ENOMEM;
  a->routes = grown;
  r = &grown[a->n_routes];
  r->path = strdup(path);
  if (r->path == NULL)
    return UV_ENOMEM;
  r->path_len = len;
  r->prefix = len > 1 && path[len - 1] == '/'; /* "/" itself is the index, not everything */
  r->methods = methods;
  r->flags = flags;
  r->handler = handler;
  r->arg = arg;
  a->n_routes++;
  return 0;
}

int sl_admin_describe(struct sl_admin *a, unsigned methods, const char *path, unsigned flags,
                      const char *what) {
  struct sl_admin_endpoint *grown, *e;

  grown = realloc(a->endpoints, (a->n_endpoints + 1) * sizeof(*grown));
  if (grown == NULL)
    return UV_ENOMEM;
  a->endpoints = grown;
  e = &grown[a->n_endpoints];
  e->methods = methods;
  e->flags = flags;
  e->path = strdup(path);
  e->what = strdup(what);
  if (e->path == NULL || e->what == NULL) {
    free(e->path);
    free(e->what);
    return UV_ENOMEM;
  }
  a->n_endpoints++;
  return 0;
}

void sl__admin_routes_dispose(struct sl_admin *a) {
  for (size_t i = 0; i < a->n_routes; i++)
    free(a->routes[i].path);
  free(a->routes);
  a->routes = NULL;
  a->n_routes = 0;
  for (size_t i = 0; i < a->n_endpoints; i++) {
    free(a->endpoints[i].path);
    free(a->endpoints[i].what);
  }
  free(a->endpoints);
  a->endpoints = NULL;
  a->n_endpoints = 0;
}

int sl_admin_response_header(struct sl_admin_response *resp, const char *name, const char *value) {
  return sl_buf_printf(&resp->headers, "%s: %s\r\n", name, value);
}

void sl_admin_response_error(struct sl_admin_response *resp, unsigned status, const char *message) {
  resp->status = status;
  resp->content_type = "application/json";
  sl_buf_reset(&resp->body);
  sl_buf_append_str(&resp->body, "{\"error\":");
  sl_json_append_string(&resp->body, message, strlen(message));
  sl_buf_append_str(&resp->body, "}\n");
}

/* The value of header <name> of <msg> and its length in <len>; NULL if absent. */
static const char *header_value(const struct sl_http_msg *msg, const char *name, size_t *len) {
  const struct sl_http_header *h = sl_http_msg_header(msg, name);

  if (h == NULL)
    return NULL;
  *len = h->value_len;
  return sl_http_msg_str(msg, h->value_off);
}

/*
 * Compares the presented token <got> (<got_len> bytes) with <want> in time
 * that depends only on the length of <want>, so that response timing does
 * not tell an attacker how many leading bytes of a guess were right.
 */
static bool token_equal(const char *got, size_t got_len, const char *want) {
  size_t want_len = strlen(want);
  unsigned char diff = got_len != want_len;

  for (size_t i = 0; i < want_len; i++)
    diff |= (unsigned char)(want[i] ^ (i < got_len ? got[i] : 0));
  return diff == 0;
}

int sl_admin_check_token(const char *token, const struct sl_http_msg *msg) {
  const char *v;
  size_t n;

  if (token == NULL || token[0] == '\0')
    return 0;
  if ((v = header_value(msg, "authorization", &n)) == NULL)
    return UV_EPERM;
  if (n > 7 && strncasecmp(v, "bearer ", 7) == 0) {
    v += 7;
    n -= 7;
    while (n > 0 && *v == ' ')
      v++, n--;
    if (token_equal(v, n, token))
      return 0;
  }
  return UV_EACCES;
}

/* Checks "Authorization: Bearer <token>". Returns true when the request may
 * go on; else fills <resp> with 401 (RFC 6750 3). */
static bool authorized(const struct sl_admin *a, const struct sl_admin_request *req,
                       struct sl_admin_response *resp) {
  int rc = sl_admin_check_token(a->token, req->msg);

  if (rc == 0)
    return true;
  if (rc == UV_EPERM) {
    sl_admin_response_error(resp, 401, "missing bearer token");
    sl_admin_response_header(resp, "WWW-Authenticate", "Bearer");
    return false;
  }
  sl_admin_response_error(resp, 401, "invalid bearer token");
  sl_admin_response_header(resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
  return false;
}

/*
 * A browser sends Origin with every POST, and a page of another site can make one (a plain
 * form needs no CORS preflight): without a token, any web page the operator opens could
 * pause an upstream or purge dead letters. A state-changing request that names an origin
 * other than the admin listener's own (scheme "http", the Host it was sent to) is refused;
 * tools such as sluicectl and curl send no Origin and are not affected. Returns true when
 * the request may go on; else fills <resp> with 403.
 */
static bool same_origin(const struct sl_admin_request *req, struct sl_admin_response *resp) {
  static const char scheme[] = "http://";
  const char *origin, *host;
  size_t olen, hlen = 0;

  if (req->method & (SL_METHOD_GET | SL_METHOD_HEAD))
    return true;
  origin = header_value(req->msg, "origin", &olen);
  if (origin == NULL)
    return true;
  host = header_value(req->msg, "host", &hlen);
  if (host != NULL && olen == sizeof(scheme) - 1 + hlen &&
      strncasecmp(origin, scheme, sizeof(scheme) - 1) == 0 &&
      strncasecmp(origin + sizeof(scheme) - 1, host, hlen) == 0)
    return true;
  sl_admin_response_error(resp, 403,
                          "cross-origin request refused: the Origin is not this "
                          "admin listener");
  return false;
}

static bool path_matches(const struct sl_admin_route *r, const struct sl_admin_request *req) {
  if (r->prefix)
    return req->path_len >= r->path_len && memcmp(req->path, r->path, r->path_len) == 0;
  return req->path_len == r->path_len && memcmp(req->path, r->path, r->path_len) == 0;
}

/* The methods a route answers: GET routes answer HEAD too. */
static unsigned route_methods(const struct sl_admin_route *r) {
  return r->methods | ((r->methods & SL_METHOD_GET) ? SL_METHOD_HEAD : 0);
}

/* Appends the names of the methods in <methods> to <out>, each as <quote>d
 * and separated by <sep> ("GET, HEAD" for an Allow header). */
static void method_list(struct sl_buf *out, unsigned methods, const char *sep, const char *quote) {
  bool first = true;

  for (size_t i = 0; i < sl_countof(method_names); i++) {
    if (!(methods & method_names[i].bit))
      continue;
    sl_buf_printf(out, "%s%s%s%s", first ? "" : sep, quote, method_names[i].name, quote);
    first = false;
  }
}

static void method_not_allowed(struct sl_admin_response *resp, unsigned allow) {
  struct sl_buf list;

  sl_buf_init(&list);
  method_list(&list, allow, ", ", "");
  sl_buf_append(&list, "", 1);
  sl_admin_response_error(resp, 405, "method not allowed");
  if (list.base != NULL)
    sl_admin_response_header(resp, "Allow", list.base);
  sl_buf_dispose(&list);
}

void sl__admin_dispatch(struct sl_admin *a, const struct sl_admin_request *req,
                        struct sl_admin_response *resp) {
  const struct sl_admin_route *best = NULL, *hit = NULL;
  unsigned allow = 0;

  for (size_t i = 0; i < a->n_routes; i++) {
    if (path_matches(&a->routes[i], req) &&
        (best == NULL || a->routes[i].path_len > best->path_len))
      best = &a->routes[i];
  }
  if (best == NULL) {
    sl_admin_response_error(resp, 404, "not found");
    return;
  }
  /* Every route with the best path: one may take the method, or all of
   * them together make the Allow list. */
  for (size_t i = 0; i < a->n_routes; i++) {
    const struct sl_admin_route *r = &a->routes[i];

    if (strcmp(r->path, best->path) != 0)
      continue;
    allow |= route_methods(r);
    if (hit == NULL && (route_methods(r) & req->method))
      hit = r;
  }
  if (hit == NULL) {
    method_not_allowed(resp, allow);
    return;
  }
  if (!same_origin(req, resp))
    return;
  if ((hit->flags & SL_ADMIN_PROTECTED) && !authorized(a, req, resp))
    return;
  hit->handler(req, resp, hit->arg);
}

static void on_metrics(const struct sl_admin_request *req, struct sl_admin_response *resp,
                       void *arg) {
  struct sl_admin *a = arg;

  (void)req;
  resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  if (a->metrics != NULL && sl_metrics_render(a->metrics, &resp->body) != 0)
    sl_admin_response_error(resp, 500, "out of memory");
}

/* GET /: the endpoints, so that an operator (or a script) need not guess. */
static void on_index(const struct sl_admin_request *req, struct sl_admin_response *resp,
                     void *arg) {
  struct sl_admin *a = arg;

  (void)req;
  resp->content_type = "application/json";
  sl_buf_append_str(&resp->body, "{\"endpoints\":[");
  for (size_t i = 0; i < a->n_endpoints; i++) {
    const struct sl_admin_endpoint *e = &a->endpoints[i];

    sl_buf_append_str(&resp->body, i > 0 ? ",\n{\"path\":" : "\n{\"path\":");
    sl_json_append_string(&resp->body, e->path, strlen(e->path));
    sl_buf_append_str(&resp->body, ",\"methods\":[");
    method_list(&resp->body, e->methods | ((e->methods & SL_METHOD_GET) ? SL_METHOD_HEAD : 0), ",",
                "\"");
    sl_buf_printf(&resp->body, "],\"token\":%s,\"what\":",
                  (e->flags & SL_ADMIN_PROTECTED) && a->token[0] != '\0' ? "true" : "false");
    sl_json_append_string(&resp->body, e->what, strlen(e->what));
    sl_buf_append_str(&resp->body, "}");
  }
  sl_buf_append_str(&resp->body, "\n]}\n");
}

static void on_healthz(const struct sl_admin_request *req, struct sl_admin_response *resp,
                       void *arg) {
  (void)req;
  (void)arg;
  sl_buf_append_str(&resp->body, "ok\n");
}

static void on_readyz(const struct sl_admin_request *req, struct sl_admin_response *resp,
                      void *arg) {
  struct sl_admin *a = arg;

  (void)req;
  if (a->ready) {
    sl_buf_append_str(&resp->body, "ready\n");
    return;
  }
  resp->status = 503;
  sl_buf_printf(&resp->body, "%s\n", a->ready_reason ? a->ready_reason : "not ready");
}

int sl__admin_builtin_routes(struct sl_admin *a) {
  int r = 0;

  r |= sl_admin_route(a, SL_METHOD_GET, "/", 0, on_index, a);
  r |= sl_admin_route(a, SL_METHOD_GET, "/metrics", 0, on_metrics, a);
  r |= sl_admin_route(a, SL_METHOD_GET, "/healthz", 0, on_healthz, a);
  r |= sl_admin_route(a, SL_METHOD_GET, "/readyz", 0, on_readyz, a);
  r |= sl_admin_describe(a, SL_METHOD_GET, "/", 0, "this list");
  r |= sl_admin_describe(a, SL_METHOD_GET, "/metrics", 0, "Prometheus metrics");
  r |= sl_admin_describe(a, SL_METHOD_GET, "/healthz", 0, "200 while the process runs");
  r |= sl_admin_describe(a, SL_METHOD_GET, "/readyz", 0, "200 when ready, else 503 and why");
  r |= sl__admin_console_routes(a);
  return r ? UV_ENOMEM : 0;
}
