/*
 * Routing: which route a request takes, by path prefix, Host and method.
 *
 * Invariant relied on by sl_route_match(): a loaded config keeps its routes in
 * the order sl__routes_sort() gives them (longest prefix first), so the first
 * route that matches is the most specific one and the scan can stop there.
 * Route hosts are stored lower-case, without a port.
 *
 * The scan is linear. Configs have tens of routes, and a linear scan over a
 * small array beats a trie until there are hundreds.
 *
 * @thread any (reads an immutable config)
 */
#include "sluice/config.h"

#include <string.h>
#include <strings.h>

#include "config/config_int.h"
#include "sluice/util.h"

static const struct {
  const char *name;
  unsigned bit;
} methods[] = {
    {"GET", SL_METHOD_GET},         {"HEAD", SL_METHOD_HEAD},   {"POST", SL_METHOD_POST},
    {"PUT", SL_METHOD_PUT},         {"PATCH", SL_METHOD_PATCH}, {"DELETE", SL_METHOD_DELETE},
    {"OPTIONS", SL_METHOD_OPTIONS}, {"TRACE", SL_METHOD_TRACE}, {"CONNECT", SL_METHOD_CONNECT},
};

unsigned sl_method_bit(const char *name, size_t len) {
  for (size_t i = 0; i < sl_countof(methods); i++) {
    if (strlen(methods[i].name) == len && memcmp(methods[i].name, name, len) == 0)
      return methods[i].bit;
  }
  return SL_METHOD_OTHER;
}

bool sl__method_known(const char *name) {
  return sl_method_bit(name, strlen(name)) != SL_METHOD_OTHER;
}

/* Sort key comparison: negative when <a> must be tried before <b>. */
static int route_order(const struct sl_route_config *a, const struct sl_route_config *b) {
  if (a->prefix_len != b->prefix_len)
    return a->prefix_len > b->prefix_len ? -1 : 1;
  if ((a->host != NULL) != (b->host != NULL))
    return a->host != NULL ? -1 : 1;
  if ((a->methods != 0) != (b->methods != 0))
    return a->methods != 0 ? -1 : 1;
  return 0;
}

void sl__routes_sort(struct sl_route_config *routes, size_t n) {
  /* Insertion sort: stable, so file order breaks the remaining ties, and
   * quick for the few dozen routes a config has. */
  for (size_t i = 1; i < n; i++) {
    struct sl_route_config r = routes[i];
    size_t j = i;

    while (j > 0 && route_order(&r, &routes[j - 1]) < 0) {
      routes[j] = routes[j - 1];
      j--;
    }
    routes[j] = r;
  }
}

bool sl__route_same(const struct sl_route_config *a, const struct sl_route_config *b) {
  if (a->prefix_len != b->prefix_len || memcmp(a->prefix, b->prefix, a->prefix_len) != 0)
    return false;
  if (a->methods != b->methods)
    return false;
  if (a->host == NULL || b->host == NULL)
    return a->host == b->host;
  return strcasecmp(a->host, b->host) == 0;
}

/*
 * Compares a request's Host header (<host>, <len> bytes) to a route's host
 * <want> (lower-case, no port). The port of the header is ignored, a bracketed
 * IPv6 literal keeps its brackets, and one trailing dot (a fully qualified
 * "example.com.") is ignored too.
 */
static bool host_match(const char *want, const char *host, size_t len) {
  size_t n = 0;

  if (host == NULL)
    return false;
  if (len > 0 && host[0] == '[') {
    while (n < len && host[n] != ']')
      n++;
    if (n < len)
      n++; /* keep the ']' */
  } else {
    while (n < len && host[n] != ':')
      n++;
  }
  if (n > 1 && host[n - 1] == '.')
    n--;
  return strlen(want) == n && strncasecmp(want, host, n) == 0;
}

/*
 * A prefix matches at a path-segment boundary ("/api/orders" takes
 * "/api/orders" and "/api/orders/1" but not "/api/ordersX"), or plainly when
 * it ends in '/' (so "/" takes every path).
 */
static bool prefix_match(const struct sl_route_config *r, const char *path, size_t len) {
  size_t n = r->prefix_len;

  if (len < n || memcmp(path, r->prefix, n) != 0)
    return false;
  return len == n || r->prefix[n - 1] == '/' || path[n] == '/';
}

const struct sl_route_config *sl_route_match(const struct sl_config *cfg, const char *path,
                                             size_t path_len, const char *host, size_t host_len,
                                             unsigned method_bit) {
  for (size_t i = 0; i < cfg->n_routes; i++) {
    const struct sl_route_config *r = &cfg->routes[i];

    if (r->methods != 0 && (r->methods & method_bit) == 0)
      continue;
    if (r->host != NULL && !host_match(r->host, host, host_len))
      continue;
    if (!prefix_match(r, path, path_len))
      continue;
    return r;
  }
  return NULL;
}
