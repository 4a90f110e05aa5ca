/*
 * Unit tests for routing (src/config/route.c): longest prefix, segment
 * boundaries, host and method filters, the sort order of a loaded config, and
 * method names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "config/config_int.h"
#include "sluice/config.h"

#define UPSTREAMS                                                                                  \
  "upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; },\n"                               \
  "              { name = \"b\"; address = \"127.0.0.1:9001\"; } );\n"

static struct sl_config *load(const char *routes) {
  struct sl_config *cfg = NULL;
  char text[4096], err[512];

  snprintf(text, sizeof(text), UPSTREAMS "routes = (\n%s\n);\n", routes);
  if (sl_config_load_string(text, "t.conf", &cfg, err, sizeof(err)) != 0)
    fail_msg("config refused: %s", err);
  return cfg;
}

/* Returns the prefix of the route <path> takes (NULL if none), for
 * method <method> and Host <host> (NULL: no Host header). */
static const char *match(const struct sl_config *cfg, const char *method, const char *host,
                         const char *path) {
  const struct sl_route_config *r =
      sl_route_match(cfg, path, strlen(path), host, host != NULL ? strlen(host) : 0,
                     sl_method_bit(method, strlen(method)));

  return r != NULL ? r->prefix : NULL;
}

/* Like match() but names the route by its upstream, for routes that share a prefix. */
static const char *match_up(const struct sl_config *cfg, const char *method, const char *host,
                            const char *path) {
  const struct sl_route_config *r =
      sl_route_match(cfg, path, strlen(path), host, host != NULL ? strlen(host) : 0,
                     sl_method_bit(method, strlen(method)));

  return r != NULL ? r->upstream_name : "(none)";
}

static void test_longest_prefix(void **state) {
  /* Written shortest first: the loaded config must sort them. */
  struct sl_config *cfg = load("{ prefix = \"/\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/api\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/api/orders\"; upstream = \"b\"; }");

  (void)state;
  assert_string_equal(cfg->routes[0].prefix, "/api/orders");
  assert_string_equal(cfg->routes[1].prefix, "/api");
  assert_string_equal(cfg->routes[2].prefix, "/");
  assert_int_equal(cfg->routes[0].upstream, 1);
  assert_string_equal(match(cfg, "GET", NULL, "/api/orders"), "/api/orders");
  assert_string_equal(match(cfg, "GET", NULL, "/api/orders/17"), "/api/orders");
  assert_string_equal(match(cfg, "GET", NULL, "/api/orders/17/items"), "/api/orders");
  assert_string_equal(match(cfg, "GET", NULL, "/api/users"), "/api");
  assert_string_equal(match(cfg, "GET", NULL, "/api"), "/api");
  assert_string_equal(match(cfg, "GET", NULL, "/api/"), "/api");
  assert_string_equal(match(cfg, "GET", NULL, "/"), "/");
  assert_string_equal(match(cfg, "GET", NULL, "/index.html"), "/");
  sl_config_unref(cfg);
}

static void test_segment_boundary(void **state) {
  struct sl_config *cfg = load("{ prefix = \"/\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/api\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/api/orders\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/static/\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/img-\"; upstream = \"a\"; }");

  (void)state;
  assert_string_equal(match(cfg, "GET", NULL, "/api/ordersX"), "/api");
  assert_string_equal(match(cfg, "GET", NULL, "/api/orders-old/1"), "/api");
  assert_string_equal(match(cfg, "GET", NULL, "/apix"), "/");
  assert_string_equal(match(cfg, "GET", NULL, "/ap"), "/");
  /* Paths are compared byte for byte: case matters. */
  assert_string_equal(match(cfg, "GET", NULL, "/API/orders"), "/");
  /* A prefix ending in '/' matches plainly, but not the path without the slash. */
  assert_string_equal(match(cfg, "GET", NULL, "/static/a.css"), "/static/");
  assert_string_equal(match(cfg, "GET", NULL, "/static/"), "/static/");
  assert_string_equal(match(cfg, "GET", NULL, "/static"), "/");
  /* Other prefixes also match only whole segments. */
  assert_string_equal(match(cfg, "GET", NULL, "/img-1.png"), "/");
  assert_string_equal(match(cfg, "GET", NULL, "/img-/1.png"), "/img-");
  /* Only <path_len> bytes count: what follows (a query) is not looked at. */
  {
    const char *p = "/api/ordersX?x=1";
    const struct sl_route_config *r = sl_route_match(cfg, p, 11, NULL, 0, SL_METHOD_GET);

    assert_non_null(r);
    assert_string_equal(r->prefix, "/api/orders");
  }
  sl_config_unref(cfg);
}

static void test_host(void **state) {
  struct sl_config *cfg =
      load("{ prefix = \"/\"; upstream = \"a\"; },\n"
           "{ prefix = \"/\"; upstream = \"b\"; host = \"API.example.com\"; },\n"
           "{ prefix = \"/v6\"; upstream = \"b\"; host = \"[::1]\"; }");

  (void)state;
  /* The host route comes first among the equal "/" prefixes even though it
   * is written second. */
  assert_non_null(cfg->routes[1].host);
  assert_null(cfg->routes[2].host);
  assert_string_equal(match_up(cfg, "GET", "api.example.com", "/x"), "b");
  assert_string_equal(match_up(cfg, "GET", "API.Example.COM", "/x"), "b");
  assert_string_equal(match_up(cfg, "GET", "api.example.com:8080", "/x"), "b");
  assert_string_equal(match_up(cfg, "GET", "api.example.com.", "/x"), "b");
  assert_string_equal(match_up(cfg, "GET", "api.example.com.:80", "/x"), "b");
  assert_string_equal(match_up(cfg, "GET", "api.example.co", "/x"), "a");
  assert_string_equal(match_up(cfg, "GET", "api.example.comm", "/x"), "a");
  assert_string_equal(match_up(cfg, "GET", "www.example.com", "/x"), "a");
  assert_string_equal(match_up(cfg, "GET", "", "/x"), "a");
  assert_string_equal(match_up(cfg, "GET", NULL, "/x"), "a");
  /* A bracketed IPv6 host keeps its brackets; the port after them is ignored. */
  assert_string_equal(match(cfg, "GET", "[::1]:8080", "/v6/a"), "/v6");
  assert_string_equal(match(cfg, "GET", "[::1]", "/v6"), "/v6");
  assert_string_equal(match(cfg, "GET", "[::2]:8080", "/v6/a"), "/");
  assert_string_equal(match(cfg, "GET", "127.0.0.1:8080", "/v6/a"), "/");
  sl_config_unref(cfg);
}

static void test_methods_fall_through(void **state) {
  struct sl_config *cfg =
      load("{ prefix = \"/api\"; upstream = \"a\"; },\n"
           "{ prefix = \"/api/orders\"; upstream = \"b\"; methods = [\"POST\", \"PUT\"];\n"
           "  spill = true; }");
  const struct sl_route_config *r;

  (void)state;
  assert_string_equal(match(cfg, "POST", NULL, "/api/orders"), "/api/orders");
  assert_string_equal(match(cfg, "PUT", NULL, "/api/orders/3"), "/api/orders");
  assert_string_equal(match(cfg, "GET", NULL, "/api/orders/3"), "/api");
  assert_string_equal(match(cfg, "DELETE", NULL, "/api/orders/3"), "/api");
  assert_string_equal(match(cfg, "PROPFIND", NULL, "/api/orders/3"), "/api");
  r = sl_route_match(cfg, "/api/orders", 11, NULL, 0, SL_METHOD_POST);
  assert_non_null(r);
  assert_true(r->spill);
  assert_int_equal(r->spill_methods, SL_METHOD_POST | SL_METHOD_PUT);
  sl_config_unref(cfg);
}

static void test_equal_prefix_methods_first(void **state) {
  /* A catch-all written above a methods route at the same prefix must not hide it. */
  struct sl_config *cfg = load("{ prefix = \"/x\"; upstream = \"a\"; },\n"
                               "{ prefix = \"/x\"; upstream = \"b\"; methods = [\"POST\"]; }");

  (void)state;
  assert_string_equal(match_up(cfg, "POST", NULL, "/x"), "b");
  assert_string_equal(match_up(cfg, "GET", NULL, "/x"), "a");
  sl_config_unref(cfg);
}

static void test_no_match(void **state) {
  struct sl_config *cfg =
      load("{ prefix = \"/api\"; upstream = \"a\"; },\n"
           "{ prefix = \"/admin\"; upstream = \"a\"; host = \"admin.local\"; },\n"
           "{ prefix = \"/w\"; upstream = \"a\"; methods = [\"POST\"]; }");

  (void)state;
  assert_null(match(cfg, "GET", NULL, "/"));
  assert_null(match(cfg, "GET", NULL, "/ap"));
  assert_null(match(cfg, "GET", NULL, "/apiary"));
  assert_null(match(cfg, "GET", "other.local", "/admin"));
  assert_null(match(cfg, "GET", NULL, "/admin"));
  assert_string_equal(match(cfg, "GET", "admin.local", "/admin/x"), "/admin");
  assert_null(match(cfg, "GET", NULL, "/w"));
  assert_null(sl_route_match(cfg, "", 0, NULL, 0, SL_METHOD_GET));
  sl_config_unref(cfg);
}

static void test_sort_is_stable(void **state) {
  struct sl_route_config r[6];

  (void)state;
  memset(r, 0, sizeof(r));
  r[0].prefix = "/"; /* file order 0..5 kept in upstream for checking */
  r[1].prefix = "/ab";
  r[2].prefix = "/a";
  r[3].prefix = "/ab";
  r[3].host = "h";
  r[4].prefix = "/ab";
  r[4].methods = SL_METHOD_GET;
  r[5].prefix = "/ab";
  for (size_t i = 0; i < 6; i++) {
    r[i].prefix_len = strlen(r[i].prefix);
    r[i].upstream = i;
  }
  sl__routes_sort(r, 6);
  assert_int_equal(r[0].upstream, 3); /* host first */
  assert_int_equal(r[1].upstream, 4); /* then methods */
  assert_int_equal(r[2].upstream, 1); /* then file order */
  assert_int_equal(r[3].upstream, 5);
  assert_int_equal(r[4].upstream, 2);
  assert_int_equal(r[5].upstream, 0);
}

static void test_method_bit(void **state) {
  (void)state;
  assert_int_equal(sl_method_bit("GET", 3), SL_METHOD_GET);
  assert_int_equal(sl_method_bit("HEAD", 4), SL_METHOD_HEAD);
  assert_int_equal(sl_method_bit("POST", 4), SL_METHOD_POST);
  assert_int_equal(sl_method_bit("PUT", 3), SL_METHOD_PUT);
  assert_int_equal(sl_method_bit("PATCH", 5), SL_METHOD_PATCH);
  assert_int_equal(sl_method_bit("DELETE", 6), SL_METHOD_DELETE);
  assert_int_equal(sl_method_bit("OPTIONS", 7), SL_METHOD_OPTIONS);
  assert_int_equal(sl_method_bit("TRACE", 5), SL_METHOD_TRACE);
  assert_int_equal(sl_method_bit("CONNECT", 7), SL_METHOD_CONNECT);
  assert_int_equal(sl_method_bit("GETX", 3), SL_METHOD_GET); /* only <len> bytes */
  assert_int_equal(sl_method_bit("GETX", 4), SL_METHOD_OTHER);
  assert_int_equal(sl_method_bit("get", 3), SL_METHOD_OTHER); /* case-sensitive */
  assert_int_equal(sl_method_bit("PROPFIND", 8), SL_METHOD_OTHER);
  assert_int_equal(sl_method_bit("", 0), SL_METHOD_OTHER);
  assert_true(sl__method_known("PATCH"));
  assert_false(sl__method_known("Patch"));
  assert_false(sl__method_known(""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_longest_prefix),
      cmocka_unit_test(test_segment_boundary),
      cmocka_unit_test(test_host),
      cmocka_unit_test(test_methods_fall_through),
      cmocka_unit_test(test_equal_prefix_methods_first),
      cmocka_unit_test(test_no_match),
      cmocka_unit_test(test_sort_is_stable),
      cmocka_unit_test(test_method_bit),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
