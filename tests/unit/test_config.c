/*
 * Unit tests for config loading (src/config/config.c): every default, the
 * design's example, the shipped conf/sluice.conf, the defaults block of
 * docs/configuration.md, and each error with its exact "file:line: message".
 *
 * conf/sluice.conf and docs/configuration.md are found from this file's own
 * path (__FILE__ is absolute under CMake); argv[1], when given, names
 * conf/sluice.conf.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config_int.h"
#include "sluice/config.h"

static char example_path[4096];
static char docs_path[4096];

#define UP "upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; } );\n"
#define RT "routes = ( { prefix = \"/\"; upstream = \"a\"; } );\n"
#define MIN UP RT

static struct sl_config *load_ok(const char *text) {
  struct sl_config *cfg = NULL;
  char err[512];

  if (sl_config_load_string(text, "t.conf", &cfg, err, sizeof(err)) != 0)
    fail_msg("config refused: %s\n--- text ---\n%s", err, text);
  assert_non_null(cfg);
  return cfg;
}

/* Returns true when <text> is refused with exactly the message <want>; else
 * prints what happened and returns false. */
static bool refused_with(const char *text, const char *want) {
  struct sl_config *cfg = (struct sl_config *)&cfg; /* must be reset to NULL */
  char err[512];

  if (sl_config_load_string(text, "t.conf", &cfg, err, sizeof(err)) == 0) {
    sl_config_unref(cfg);
    print_error("config accepted, expected: %s\n--- text ---\n%s", want, text);
    return false;
  }
  if (cfg != NULL) {
    print_error("out pointer not reset on failure\n");
    return false;
  }
  if (strcmp(err, want) != 0) {
    print_error("wrong message\n want: %s\n  got: %s\n--- text ---\n%s", want, err, text);
    return false;
  }
  return true;
}

static void load_bad(const char *text, const char *want) {
  if (!refused_with(text, want))
    fail();
}

static uint16_t port_of(const struct sockaddr_storage *sa) {
  if (sa->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

static void assert_ipv4(const struct sl_listen_addr *a, const char *text, const char *ip,
                        uint16_t port) {
  char buf[INET_ADDRSTRLEN];

  assert_string_equal(a->text, text);
  assert_int_equal(a->sa.ss_family, AF_INET);
  inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->sa)->sin_addr, buf, sizeof(buf));
  assert_string_equal(buf, ip);
  assert_int_equal(port_of(&a->sa), port);
}

static void test_defaults(void **state) {
  struct sl_config *cfg = load_ok(MIN);
  const struct sl_upstream_config *u;
  const struct sl_route_config *r;

  (void)state;
  assert_int_equal(cfg->refs, 1);
  assert_string_equal(cfg->path, "t.conf");
  assert_ipv4(&cfg->listen, "0.0.0.0:8080", "0.0.0.0", 8080);
  assert_ipv4(&cfg->admin.listen, "127.0.0.1:9464", "127.0.0.1", 9464);
  assert_string_equal(cfg->admin.token, "");
  assert_null(cfg->admin.token_file);
  assert_null(cfg->pid_file);
  assert_int_equal(cfg->log.level, SL_LOG_INFO);
  assert_true(cfg->log.access);
  assert_null(cfg->log.file);
  assert_null(cfg->log.access_file);
  assert_int_equal(cfg->limits.max_header_bytes, 16 * 1024);
  assert_int_equal(cfg->limits.max_body_bytes, 8 * 1024 * 1024);
  assert_int_equal(cfg->limits.header_timeout_ms, 10000);
  assert_int_equal(cfg->limits.body_timeout_ms, 30000);
  assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
  assert_int_equal(cfg->limits.max_connections, 10000);
  assert_int_equal(cfg->limits.shutdown_timeout_ms, 10000);
  assert_int_equal(cfg->limits.max_delay_ms, 30ull * 86400 * 1000);
  assert_string_equal(cfg->spool.dir, "/var/lib/sluice");
  assert_int_equal(cfg->spool.fsync, SL_FSYNC_BATCH);
  assert_int_equal(cfg->spool.fsync_interval_ms, 0);
  assert_int_equal(cfg->spool.compression_level, 1);

  assert_int_equal(cfg->n_upstreams, 1);
  u = &cfg->upstreams[0];
  assert_string_equal(u->name, "a");
  assert_ipv4(&u->address, "127.0.0.1:9000", "127.0.0.1", 9000);
  assert_true(u->rate == 0.0);
  assert_int_equal(u->burst, 1);
  assert_int_equal(u->max_inflight, 0);
  assert_int_equal(u->connect_timeout_ms, 2000);
  assert_int_equal(u->response_timeout_ms, 30000);
  assert_int_equal(u->keepalive, 32);
  assert_int_equal(u->max_spool_bytes, 10ull << 30);
  assert_false(u->paused);
  assert_int_equal(u->retry.max_attempts, 8);
  assert_int_equal(u->retry.initial_backoff_ms, 1000);
  assert_int_equal(u->retry.max_backoff_ms, 300000);
  assert_true(u->retry.multiplier == 2.0);
  assert_true(u->retry.jitter == 0.2);
  assert_int_equal(u->line, 1);

  assert_int_equal(cfg->n_routes, 1);
  r = &cfg->routes[0];
  assert_string_equal(r->prefix, "/");
  assert_int_equal(r->prefix_len, 1);
  assert_null(r->host);
  assert_int_equal(r->methods, 0);
  assert_string_equal(r->upstream_name, "a");
  assert_int_equal(r->upstream, 0);
  assert_false(r->spill);
  assert_int_equal(r->mode, SL_MODE_ASYNC);
  assert_int_equal(r->wait_timeout_ms, 30000);
  assert_int_equal(r->spill_methods, SL_METHODS_SPILL_DEFAULT);
  assert_int_equal(r->queue_timeout_ms, 5000);
  assert_int_equal(r->queue_ttl_ms, 0);
  assert_false(r->expire_drop);
  assert_int_equal(r->line, 2);
  sl_config_unref(cfg);
}

/* The config shape from the design brief, verbatim. */
static const char design_example[] =
    "listen = \"0.0.0.0:8080\";\n"
    "admin  = { listen = \"127.0.0.1:9464\"; token = \"\"; };\n"
    "log    = { level = \"info\"; access = true; };\n"
    "limits = { max_header_bytes = \"16KiB\"; max_body_bytes = \"8MiB\"; header_timeout = "
    "\"10s\";\n"
    "           body_timeout = \"30s\"; idle_timeout = \"60s\"; max_connections = 10000; };\n"
    "spool  = { dir = \"/var/lib/sluice\"; fsync = \"batch\"; fsync_interval = \"2ms\";\n"
    "           compression_level = 3; };\n"
    "upstreams = (\n"
    "  { name = \"orders\"; address = \"127.0.0.1:9000\";\n"
    "    rate = 200.0; burst = 50; max_inflight = 32;          # one budget: live + replay\n"
    "    connect_timeout = \"2s\"; response_timeout = \"30s\"; keepalive = 32;\n"
    "    max_spool_bytes = \"10GiB\"; paused = false;\n"
    "    retry = { max_attempts = 8; initial_backoff = \"1s\"; max_backoff = \"5m\";\n"
    "              multiplier = 2.0; jitter = 0.2; }; }\n"
    ");\n"
    "routes = (\n"
    "  { prefix = \"/api/orders\"; upstream = \"orders\"; spill = true; mode = \"async\";\n"
    "    methods = [ \"POST\", \"PUT\", \"PATCH\", \"DELETE\" ]; },\n"
    "  { prefix = \"/\"; upstream = \"orders\"; spill = false; queue_timeout = \"5s\"; }\n"
    ");\n";

static void test_design_example(void **state) {
  struct sl_config *cfg = load_ok(design_example);
  const struct sl_upstream_config *u;

  (void)state;
  assert_int_equal(cfg->n_upstreams, 1);
  u = sl_config_upstream(cfg, "orders");
  assert_ptr_equal(u, &cfg->upstreams[0]);
  assert_null(sl_config_upstream(cfg, "order"));
  assert_true(u->rate == 200.0);
  assert_int_equal(u->burst, 50);
  assert_int_equal(u->max_inflight, 32);
  assert_int_equal(u->max_spool_bytes, 10ull << 30);
  assert_int_equal(u->line, 9);
  assert_int_equal(cfg->n_routes, 2);
  assert_string_equal(cfg->routes[0].prefix, "/api/orders");
  assert_true(cfg->routes[0].spill);
  assert_int_equal(cfg->routes[0].methods, SL_METHODS_SPILL_DEFAULT);
  assert_int_equal(cfg->routes[0].spill_methods, SL_METHODS_SPILL_DEFAULT);
  assert_int_equal(cfg->routes[0].line, 17);
  assert_string_equal(cfg->routes[1].prefix, "/");
  assert_false(cfg->routes[1].spill);
  assert_int_equal(cfg->routes[1].line, 19);
  sl_config_unref(cfg);
}

static void test_every_setting(void **state) {
  struct sl_config *cfg =
      load_ok("listen = \"[::1]:0\";\n"
              "admin = { listen = \"localhost:9465\"; token = \"s3cret\"; };\n"
              "log = { level = \"debug\"; access = false; file = \"/var/log/s/e.log\";\n"
              "  access_file = \"a.log\"; };\n"
              "pid_file = \"/run/s.pid\";\n"
              "limits = { max_header_bytes = 8192; max_body_bytes = \"1.5MiB\";\n"
              "  header_timeout = 5; body_timeout = 2.5; idle_timeout = \"1m30s\";\n"
              "  max_connections = 7; shutdown_timeout = \"0s\"; max_delay = \"1d12h\"; };\n"
              "spool = { dir = \"./spool\"; fsync = \"always\"; fsync_interval = \"250ms\";\n"
              "  compression_level = 19; };\n"
              "upstreams = (\n"
              "  { name = \"slow-1.x_y\"; address = \"[2001:db8::7]:8443\"; rate = 3;\n"
              "    max_inflight = 2; connect_timeout = \"100ms\"; response_timeout = \"2m\";\n"
              "    keepalive = 0; max_spool_bytes = 10737418240L; paused = true;\n"
              "    retry = { max_attempts = 1; initial_backoff = \"2s\"; max_backoff = \"2s\";\n"
              "      multiplier = 1; jitter = 1; };\n"
              "    adaptive = true; min_rate = 0.5; max_rate = 30; target_latency = \"250ms\"; },\n"
              "  { name = \"b\"; address = \"LOCALHOST:1\"; rate = 0.5; }\n"
              ");\n"
              "routes = (\n"
              "  { prefix = \"/x\"; host = \"API.Example.com\"; methods = [\"GET\", \"POST\"];\n"
              "    upstream = \"b\"; spill = true; mode = \"wait\"; wait_timeout = \"0\";\n"
              "    queue_timeout = 0; }\n"
              ");\n");
  const struct sl_upstream_config *u, *b;
  const struct sl_route_config *r;
  char buf[INET6_ADDRSTRLEN];

  (void)state;
  assert_string_equal(cfg->listen.text, "[::1]:0");
  assert_int_equal(cfg->listen.sa.ss_family, AF_INET6);
  inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&cfg->listen.sa)->sin6_addr, buf, sizeof(buf));
  assert_string_equal(buf, "::1");
  assert_int_equal(port_of(&cfg->listen.sa), 0);
  assert_ipv4(&cfg->admin.listen, "localhost:9465", "127.0.0.1", 9465);
  assert_string_equal(cfg->admin.token, "s3cret");
  assert_int_equal(cfg->log.level, SL_LOG_DEBUG);
  assert_false(cfg->log.access);
  assert_string_equal(cfg->log.file, "/var/log/s/e.log");
  assert_string_equal(cfg->log.access_file, "a.log");
  assert_string_equal(cfg->pid_file, "/run/s.pid");
  assert_int_equal(cfg->limits.max_header_bytes, 8192);
  assert_int_equal(cfg->limits.max_body_bytes, 1572864);
  assert_int_equal(cfg->limits.header_timeout_ms, 5000);
  assert_int_equal(cfg->limits.body_timeout_ms, 2500);
  assert_int_equal(cfg->limits.idle_timeout_ms, 90000);
  assert_int_equal(cfg->limits.max_connections, 7);
  assert_int_equal(cfg->limits.shutdown_timeout_ms, 0);
  assert_int_equal(cfg->limits.max_delay_ms, 36ull * 3600 * 1000);
  assert_string_equal(cfg->spool.dir, "./spool");
  assert_int_equal(cfg->spool.fsync, SL_FSYNC_ALWAYS);
  assert_int_equal(cfg->spool.fsync_interval_ms, 250);
  assert_int_equal(cfg->spool.compression_level, 19);

  u = &cfg->upstreams[0];
  assert_string_equal(u->name, "slow-1.x_y");
  assert_int_equal(u->address.sa.ss_family, AF_INET6);
  assert_int_equal(port_of(&u->address.sa), 8443);
  assert_true(u->rate == 3.0);
  assert_int_equal(u->burst, 3); /* max(1, rate) */
  assert_int_equal(u->max_inflight, 2);
  assert_int_equal(u->connect_timeout_ms, 100);
  assert_int_equal(u->response_timeout_ms, 120000);
  assert_int_equal(u->keepalive, 0);
  assert_int_equal(u->max_spool_bytes, 10737418240ull);
  assert_true(u->paused);
  assert_int_equal(u->retry.max_attempts, 1);
  assert_int_equal(u->retry.initial_backoff_ms, 2000);
  assert_int_equal(u->retry.max_backoff_ms, 2000);
  assert_true(u->retry.multiplier == 1.0);
  assert_true(u->retry.jitter == 1.0);
  assert_true(u->adaptive);
  assert_true(u->min_rate == 0.5);
  assert_true(u->max_rate == 30.0);
  assert_int_equal(u->target_latency_ms, 250);
  b = &cfg->upstreams[1];
  assert_ipv4(&b->address, "LOCALHOST:1", "127.0.0.1", 1);
  assert_true(b->rate == 0.5);
  assert_int_equal(b->burst, 1); /* max(1, rate) */
  assert_false(b->adaptive);
  assert_int_equal(b->target_latency_ms, 0);

  r = &cfg->routes[0];
  assert_string_equal(r->host, "api.example.com"); /* stored lower-case */
  assert_int_equal(r->methods, SL_METHOD_GET | SL_METHOD_POST);
  assert_int_equal(r->spill_methods, SL_METHOD_GET | SL_METHOD_POST);
  assert_int_equal(r->upstream, 1);
  assert_true(r->spill);
  assert_int_equal(r->mode, SL_MODE_WAIT);
  assert_int_equal(r->wait_timeout_ms, 0);
  assert_int_equal(r->queue_timeout_ms, 0);
  sl_config_unref(cfg);
}

/* adaptive = true: min_rate defaults to 1/s, or to rate when that is lower; no latency target. */
static void test_adaptive_defaults(void **state) {
  struct sl_config *cfg = load_ok("upstreams = (\n"
                                  "  { name = \"a\"; address = \"127.0.0.1:1\"; rate = 50; "
                                  "adaptive = true; max_rate = 400; },\n"
                                  "  { name = \"b\"; address = \"127.0.0.1:2\"; rate = 0.5; "
                                  "adaptive = true; max_rate = 0.5; }\n"
                                  ");\n" RT);

  (void)state;
  assert_true(cfg->upstreams[0].adaptive);
  assert_true(cfg->upstreams[0].min_rate == 1.0);
  assert_true(cfg->upstreams[0].max_rate == 400.0);
  assert_int_equal(cfg->upstreams[0].target_latency_ms, 0);
  assert_true(cfg->upstreams[1].min_rate == 0.5);
  sl_config_unref(cfg);
}

/*
 * The block of docs/configuration.md that lists the defaults: the first fenced block after
 * "Everything else has the default shown below". Returns it (malloc'd) or fails.
 */
static char *docs_defaults_block(void) {
  FILE *f = fopen(docs_path, "r");
  char *text, *start, *end;
  long n;

  if (f == NULL)
    fail_msg("cannot open %s", docs_path);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  text = malloc((size_t)n + 1);
  assert_non_null(text);
  assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
  text[n] = '\0';
  fclose(f);
  start = strstr(text, "Everything else has the default shown below");
  if (start == NULL || (start = strstr(start, "\n```\n")) == NULL ||
      (end = strstr(start + 5, "\n```\n")) == NULL)
    fail_msg("%s: no defaults block", docs_path);
  start += 5;
  memmove(text, start, (size_t)(end - start + 1));
  text[end - start + 1] = '\0';
  return text;
}

/* Regression: the defaults block of docs/configuration.md showed values that are not the
 * defaults (fsync_interval "2ms", compression_level 3, a rate, burst and max_inflight). Loaded,
 * it must equal a file that gives only the required settings, field by field. */
static void test_docs_defaults_block(void **state) {
  char *block = docs_defaults_block();
  struct sl_config *d = load_ok(block);
  struct sl_config *m =
      load_ok("upstreams = ( { name = \"orders\"; address = \"127.0.0.1:9000\"; } );\n"
              "routes = ( { prefix = \"/\"; upstream = \"orders\"; } );\n");
  const struct sl_upstream_config *du = &d->upstreams[0], *mu = &m->upstreams[0];
  const struct sl_route_config *dr = &d->routes[0], *mr = &m->routes[0];

  (void)state;
  assert_string_equal(d->listen.text, m->listen.text);
  assert_string_equal(d->admin.listen.text, m->admin.listen.text);
  assert_string_equal(d->admin.token, m->admin.token);
  assert_null(d->admin.token_file);
  assert_null(d->pid_file);
  assert_int_equal(d->log.level, m->log.level);
  assert_int_equal(d->log.access, m->log.access);
  assert_null(d->log.file);
  assert_null(d->log.access_file);
  assert_int_equal(d->limits.max_header_bytes, m->limits.max_header_bytes);
  assert_int_equal(d->limits.max_body_bytes, m->limits.max_body_bytes);
  assert_int_equal(d->limits.header_timeout_ms, m->limits.header_timeout_ms);
  assert_int_equal(d->limits.body_timeout_ms, m->limits.body_timeout_ms);
  assert_int_equal(d->limits.idle_timeout_ms, m->limits.idle_timeout_ms);
  assert_int_equal(d->limits.max_connections, m->limits.max_connections);
  assert_int_equal(d->limits.shutdown_timeout_ms, m->limits.shutdown_timeout_ms);
  assert_string_equal(d->spool.dir, m->spool.dir);
  assert_int_equal(d->spool.fsync, m->spool.fsync);
  assert_int_equal(d->spool.fsync_interval_ms, m->spool.fsync_interval_ms);
  assert_int_equal(d->spool.compression_level, m->spool.compression_level);
  assert_string_equal(d->status_prefix, m->status_prefix);
  assert_int_equal(d->dedupe_window_ms, m->dedupe_window_ms);

  assert_int_equal(d->n_upstreams, 1);
  assert_string_equal(du->address.text, mu->address.text);
  assert_true(du->rate == mu->rate);
  assert_int_equal(du->burst, mu->burst);
  assert_int_equal(du->max_inflight, mu->max_inflight);
  assert_int_equal(du->connect_timeout_ms, mu->connect_timeout_ms);
  assert_int_equal(du->response_timeout_ms, mu->response_timeout_ms);
  assert_int_equal(du->keepalive, mu->keepalive);
  assert_int_equal(du->max_spool_bytes, mu->max_spool_bytes);
  assert_int_equal(du->paused, mu->paused);
  assert_int_equal(du->adaptive, mu->adaptive);
  assert_int_equal(du->retry.max_attempts, mu->retry.max_attempts);
  assert_int_equal(du->retry.initial_backoff_ms, mu->retry.initial_backoff_ms);
  assert_int_equal(du->retry.max_backoff_ms, mu->retry.max_backoff_ms);
  assert_true(du->retry.multiplier == mu->retry.multiplier);
  assert_true(du->retry.jitter == mu->retry.jitter);

  assert_int_equal(d->n_routes, 1);
  assert_string_equal(dr->prefix, mr->prefix);
  assert_null(dr->host);
  assert_int_equal(dr->methods, mr->methods);
  assert_int_equal(dr->spill, mr->spill);
  assert_int_equal(dr->mode, mr->mode);
  assert_int_equal(dr->wait_timeout_ms, mr->wait_timeout_ms);
  assert_int_equal(dr->spill_methods, mr->spill_methods);
  assert_int_equal(dr->queue_timeout_ms, mr->queue_timeout_ms);
  assert_int_equal(dr->queue_ttl_ms, mr->queue_ttl_ms);
  assert_int_equal(dr->expire_drop, mr->expire_drop);
  sl_config_unref(d);
  sl_config_unref(m);
  free(block);
}

static void test_example_file(void **state) {
  struct sl_config *cfg = NULL;
  char err[512] = "";

  (void)state;
  if (sl_config_load(example_path, &cfg, err, sizeof(err)) != 0)
    fail_msg("%s: %s", example_path, err);
  assert_string_equal(cfg->path, example_path);
  assert_ipv4(&cfg->listen, "127.0.0.1:8080", "127.0.0.1", 8080);
  assert_ipv4(&cfg->admin.listen, "127.0.0.1:9464", "127.0.0.1", 9464);
  assert_string_equal(cfg->spool.dir, "./spool");
  assert_non_null(sl_config_upstream(cfg, "demo"));
  assert_ipv4(&cfg->upstreams[0].address, "127.0.0.1:9000", "127.0.0.1", 9000);
  assert_true(cfg->n_routes >= 2);
  assert_string_equal(cfg->routes[cfg->n_routes - 1].prefix, "/");
  sl_config_unref(cfg);
}

/* Writes <text> to a new temporary file and returns its path in <path>. */
static void write_temp(char *path, size_t len, const char *text) {
  const char *dir = getenv("TMPDIR");
  FILE *f;
  int fd;

  snprintf(path, len, "%s/sluice-test-config-XXXXXX", dir != NULL ? dir : "/tmp");
  fd = mkstemp(path);
  assert_true(fd >= 0);
  f = fdopen(fd, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static void test_file_errors(void **state) {
  struct sl_config *cfg = NULL;
  char path[512], want[1024], err[1024];

  (void)state;
  assert_int_equal(sl_config_load("/nonexistent/sluice.conf", &cfg, err, sizeof(err)), -1);
  assert_null(cfg);
  assert_string_equal(err, "/nonexistent/sluice.conf: cannot open: No such file or directory");

  /* A syntax error names the file and the line. */
  write_temp(path, sizeof(path), "listen = \"127.0.0.1:1\";\nlimits = {\n  oops\n};\n" MIN);
  assert_int_equal(sl_config_load(path, &cfg, err, sizeof(err)), -1);
  snprintf(want, sizeof(want), "%s:4: syntax error", path);
  assert_string_equal(err, want);
  unlink(path);

  /* So does a semantic one, with the path as given. */
  write_temp(path, sizeof(path), MIN "\n\nspool = { fsync = \"sometimes\"; };\n");
  assert_int_equal(sl_config_load(path, &cfg, err, sizeof(err)), -1);
  snprintf(want, sizeof(want),
           "%s:5: spool.fsync: must be \"always\", \"batch\" or \"off\", got \"sometimes\"", path);
  assert_string_equal(err, want);
  unlink(path);

  /* A file that is fine loads, with its path kept. */
  write_temp(path, sizeof(path), MIN);
  assert_int_equal(sl_config_load(path, &cfg, err, sizeof(err)), 0);
  assert_string_equal(cfg->path, path);
  sl_config_unref(cfg);
  unlink(path);
}

struct bad_case {
  const char *text;
  const char *msg;
};

static const struct bad_case bad_cases[] = {
    /* libconfig syntax errors */
    {"listen = \"127.0.0.1:1\"\nlimits = { ; };\n" MIN, "t.conf:2: syntax error"},
    /* an unclosed group is only noticed at the end of the text */
    {"log = { level = \"info\";\n" MIN, "t.conf:4: syntax error"},
    {"listen = \"1.2.3.4:1\";\nlisten = \"1.2.3.4:2\";\n" MIN, "t.conf:2: duplicate setting name"},
    {MIN "x = [ 1, \"a\" ];\n", "t.conf:3: mismatched element type in array"},

    /* unknown settings, at every level */
    {MIN "foo = 1;\n", "t.conf:3: foo: unknown setting"},
    {MIN "\nlistn = \"1.2.3.4:5\";\n",
     "t.conf:4: listn: unknown setting (did you mean \"listen\"?)"},
    {"admin = { listen = \"127.0.0.1:1\"; tokn = \"x\"; };\n" MIN,
     "t.conf:1: admin.tokn: unknown setting (did you mean \"token\"?)"},
    {"log = { access = true; format = \"json\"; };\n" MIN, "t.conf:1: log.format: unknown setting"},
    {"limits = {\n  max_bodybytes = 1;\n};\n" MIN,
     "t.conf:2: limits.max_bodybytes: unknown setting (did you mean \"max_body_bytes\"?)"},
    {"spool = { compression = 3; };\n" MIN, "t.conf:1: spool.compression: unknown setting"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n  rates = 5; } );\n" RT,
     "t.conf:2: upstreams[0].rates: unknown setting (did you mean \"rate\"?)"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { max_attempt = 3; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.max_attempt: unknown setting (did you mean \"max_attempts\"?)"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; methdos = [\"GET\"]; } );\n",
     "t.conf:2: routes[0].methdos: unknown setting (did you mean \"methods\"?)"},

    /* wrong types */
    {"listen = 8080;\n" MIN, "t.conf:1: listen: expected a string, got an integer"},
    {"admin = \"127.0.0.1:9464\";\n" MIN,
     "t.conf:1: admin: expected a group { ... }, got a string"},
    {"log = { access = \"yes\"; };\n" MIN,
     "t.conf:1: log.access: expected true or false, got a string"},
    {"limits = { max_connections = \"100\"; };\n" MIN,
     "t.conf:1: limits.max_connections: expected an integer, got a string"},
    {"limits = { max_body_bytes = true; };\n" MIN,
     "t.conf:1: limits.max_body_bytes: expected a size (a string like \"64KiB\" or an integer "
     "byte count), got a boolean"},
    {"limits = { max_body_bytes = 1.5; };\n" MIN,
     "t.conf:1: limits.max_body_bytes: expected a size (a string like \"64KiB\" or an integer "
     "byte count), got a float"},
    {"limits = { idle_timeout = [ 1 ]; };\n" MIN,
     "t.conf:1: limits.idle_timeout: expected a duration (a string like \"30s\" or an integer "
     "number of seconds), got an array [ ... ]"},
    {"spool = { compression_level = 3.0; };\n" MIN,
     "t.conf:1: spool.compression_level: expected an integer, got a float"},
    {"upstreams = { name = \"a\"; };\n" RT,
     "t.conf:1: upstreams: expected a list ( { ... }, ... ), got a group { ... }"},
    {"upstreams = ( \"a\" );\n" RT,
     "t.conf:1: upstreams[0]: expected a group { ... }, got a string"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; rate = \"fast\"; } );\n" RT,
     "t.conf:1: upstreams[0].rate: expected a number, got a string"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; paused = 1; } );\n" RT,
     "t.conf:1: upstreams[0].paused: expected true or false, got an integer"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; retry = 3; } );\n" RT,
     "t.conf:1: upstreams[0].retry: expected a group { ... }, got an integer"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; methods = \"GET\"; } );\n",
     "t.conf:2: routes[0].methods: expected an array of method names like [ \"POST\", \"PUT\" ], "
     "got a string"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; methods = ( \"GET\", 1 ); } );\n",
     "t.conf:2: routes[0].methods: expected method names (strings), got an integer"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; spill = \"true\"; } );\n",
     "t.conf:2: routes[0].spill: expected true or false, got a string"},

    /* bad values: sizes, durations, numbers */
    {"limits = { max_body_bytes = \"12XB\"; };\n" MIN,
     "t.conf:1: limits.max_body_bytes: bad size \"12XB\""},
    {"limits = { max_header_bytes = \"0KiB\"; };\n" MIN,
     "t.conf:1: limits.max_header_bytes: must be greater than 0"},
    {"limits = { max_body_bytes = -1; };\n" MIN,
     "t.conf:1: limits.max_body_bytes: must not be negative, got -1"},
    {"limits = { header_timeout = \"10 sec\"; };\n" MIN,
     "t.conf:1: limits.header_timeout: bad duration \"10 sec\""},
    {"limits = { body_timeout = 0; };\n" MIN,
     "t.conf:1: limits.body_timeout: must be greater than 0"},
    {"limits = { idle_timeout = -5; };\n" MIN,
     "t.conf:1: limits.idle_timeout: must not be negative, got -5"},
    {"limits = { idle_timeout = -0.5; };\n" MIN,
     "t.conf:1: limits.idle_timeout: must not be negative, got -0.5"},
    {"limits = { max_delay = 0; };\n" MIN, "t.conf:1: limits.max_delay: must be greater than 0"},
    {MIN "limits = {\n  max_delay = \"30 days\";\n};\n",
     "t.conf:4: limits.max_delay: bad duration \"30 days\""},
    {"limits = { max_delay = \"99999999999999999999d\"; };\n" MIN,
     "t.conf:1: limits.max_delay: bad duration \"99999999999999999999d\""},
    {"limits = { max_delay = -1; };\n" MIN,
     "t.conf:1: limits.max_delay: must not be negative, got -1"},
    {"limits = { max_delay = true; };\n" MIN,
     "t.conf:1: limits.max_delay: expected a duration (a string like \"30s\" or an integer number "
     "of seconds), got a boolean"},
    {"limits = { max_connections = 0; };\n" MIN,
     "t.conf:1: limits.max_connections: must be at least 1, got 0"},
    {"limits = { max_connections = 5000000000L; };\n" MIN,
     "t.conf:1: limits.max_connections: must be at most 4294967295, got 5000000000"},
    {"limits = { max_body_bytes = 10737418240; };\n" MIN,
     "t.conf:1: integer 10737418240 does not fit in 32 bits; add an L suffix (10737418240L) or, "
     "for a size, write it as a string with a unit (\"10GiB\")"},
    {MIN "\n\nlimits = { max_connections = 0x100000000; };\n",
     "t.conf:5: integer 0x100000000 does not fit in 32 bits; add an L suffix (0x100000000L) or, "
     "for a size, write it as a string with a unit (\"10GiB\")"},
    {"log = { level = \"verbose\"; };\n" MIN,
     "t.conf:1: log.level: must be \"debug\", \"info\", \"warn\" or \"error\", got \"verbose\""},
    {"spool = { fsync = \"never\"; };\n" MIN,
     "t.conf:1: spool.fsync: must be \"always\", \"batch\" or \"off\", got \"never\""},
    {"spool = { compression_level = 20; };\n" MIN,
     "t.conf:1: spool.compression_level: must be at most 19, got 20"},
    {"spool = { compression_level = 0; };\n" MIN,
     "t.conf:1: spool.compression_level: must be at least 1, got 0"},
    {"spool = { dir = \"\"; };\n" MIN, "t.conf:1: spool.dir: must not be empty"},
    /* the operator's files: pid, logs, token */
    {MIN "pid_file = \"\";\n", "t.conf:3: pid_file: must not be empty"},
    {MIN "\npid_file = 1;\n", "t.conf:4: pid_file: expected a string, got an integer"},
    {MIN "pidfile = \"/run/s.pid\";\n",
     "t.conf:3: pidfile: unknown setting (did you mean \"pid_file\"?)"},
    {"log = {\n  file = \"\"; };\n" MIN, "t.conf:2: log.file: must not be empty"},
    {"log = { access_file = true; };\n" MIN,
     "t.conf:1: log.access_file: expected a string, got a boolean"},
    {"log = { acces_file = \"a.log\"; };\n" MIN,
     "t.conf:1: log.acces_file: unknown setting (did you mean \"access_file\"?)"},
    {"admin = { token_file = \"\"; };\n" MIN, "t.conf:1: admin.token_file: must not be empty"},
    {"admin = { token = \"x\";\n  token_file = \"/etc/passwd\"; };\n" MIN,
     "t.conf:2: admin.token_file: set either token or token_file, not both"},
    {"admin = { token_file = \"/nonexistent/token\"; };\n" MIN,
     "t.conf:1: admin.token_file: cannot open /nonexistent/token: No such file or directory"},
    {"admin = {\n  token_file = \"/\"; };\n" MIN,
     "t.conf:2: admin.token_file: cannot read /: Is a directory"},
    {"spool = { fsync_interval = \"-1ms\"; };\n" MIN,
     "t.conf:1: spool.fsync_interval: bad duration \"-1ms\""},

    /* addresses */
    {"listen = \"example.com:80\";\n" MIN,
     "t.conf:1: listen: bad address \"example.com:80\": host must be an IP address or "
     "\"localhost\" (host names are not resolved)"},
    {"listen = \"8080\";\n" MIN, "t.conf:1: listen: bad address \"8080\": expected \"host:port\""},
    {"listen = \":8080\";\n" MIN, "t.conf:1: listen: bad address \":8080\": missing host"},
    {"listen = \"127.0.0.1:\";\n" MIN,
     "t.conf:1: listen: bad address \"127.0.0.1:\": missing port"},
    {"listen = \"127.0.0.1:65536\";\n" MIN,
     "t.conf:1: listen: bad address \"127.0.0.1:65536\": port must be a number from 1 to 65535"},
    {"listen = \"127.0.0.1:80a\";\n" MIN,
     "t.conf:1: listen: bad address \"127.0.0.1:80a\": port must be a number from 1 to 65535"},
    {"listen = \"::1:8080\";\n" MIN,
     "t.conf:1: listen: bad address \"::1:8080\": an IPv6 address must be in brackets, as in "
     "\"[::1]:9000\""},
    {"listen = \"[::1:8080\";\n" MIN,
     "t.conf:1: listen: bad address \"[::1:8080\": missing ']' after the IPv6 address"},
    {"listen = \"[::g]:8080\";\n" MIN,
     "t.conf:1: listen: bad address \"[::g]:8080\": bad IPv6 address"},
    {"listen = \"256.0.0.1:80\";\n" MIN,
     "t.conf:1: listen: bad address \"256.0.0.1:80\": host must be an IP address or \"localhost\" "
     "(host names are not resolved)"},
    {"admin = { listen = \"[::1]\"; };\n" MIN,
     "t.conf:1: admin.listen: bad address \"[::1]\": expected \"host:port\""},
    {"upstreams = ( { name = \"a\"; address = \"backend.internal:9000\"; } );\n" RT,
     "t.conf:1: upstreams[0].address: bad address \"backend.internal:9000\": host must be an IP "
     "address or \"localhost\" (host names are not resolved)"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:0\"; } );\n" RT,
     "t.conf:1: upstreams[0].address: bad address \"127.0.0.1:0\": port must be a number from 1 "
     "to 65535"},
    {"upstreams = ( { name = \"a\"; address = \"0.0.0.0:9000\"; } );\n" RT,
     "t.conf:1: upstreams[0].address: bad address \"0.0.0.0:9000\": cannot connect to the "
     "unspecified address"},

    /* upstreams */
    {RT, "t.conf: no upstreams: define at least one in \"upstreams = ( { ... } );\""},
    {"upstreams = ();\n" RT, "t.conf:1: upstreams: empty; define at least one upstream"},
    {"upstreams = [];\n" RT, "t.conf:1: upstreams: empty; define at least one upstream"},
    {"upstreams = ( { address = \"127.0.0.1:9000\"; } );\n" RT,
     "t.conf:1: upstreams[0]: missing \"name\""},
    {"upstreams = ( { name = \"a\"; } );\n" RT, "t.conf:1: upstreams[0]: missing \"address\""},
    {"upstreams = ( { name = \"a/b\"; address = \"127.0.0.1:9000\"; } );\n" RT,
     "t.conf:1: upstreams[0].name: bad name \"a/b\": use 1 to 64 letters, digits, '_', '-' or "
     "'.', starting with a letter or digit"},
    {"upstreams = ( { name = \"..\"; address = \"127.0.0.1:9000\"; } );\n" RT,
     "t.conf:1: upstreams[0].name: bad name \"..\": use 1 to 64 letters, digits, '_', '-' or "
     "'.', starting with a letter or digit"},
    {"upstreams = (\n  { name = \"a\"; address = \"127.0.0.1:9000\"; },\n"
     "  { name = \"b\"; address = \"127.0.0.1:9001\"; },\n"
     "  { name = \"a\"; address = \"127.0.0.1:9002\"; }\n);\n" RT,
     "t.conf:4: upstreams[2].name: duplicate upstream \"a\" (first defined at line 2)"},
/* adaptive rate: bounds in order, with adaptive only, each error at its key's line */
#define AD "upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
    {AD "rate = 50;\nmin_rate = 5; } );\n" RT,
     "t.conf:3: upstreams[0].min_rate: only with adaptive = true"},
    {AD "rate = 50; adaptive = false;\ntarget_latency = \"1s\"; } );\n" RT,
     "t.conf:3: upstreams[0].target_latency: only with adaptive = true"},
    {AD "adaptive = true;\nmax_rate = 100; } );\n" RT,
     "t.conf:2: upstreams[0].adaptive: needs rate, the rate to start from"},
    {AD "rate = 50;\nadaptive = true; } );\n" RT,
     "t.conf:3: upstreams[0].adaptive: needs max_rate, the highest rate it may reach"},
    {AD "rate = 50; adaptive = true; max_rate = 100;\nmin_rate = 60; } );\n" RT,
     "t.conf:3: upstreams[0].min_rate: 60 is above rate (50); want min_rate <= rate <= "
     "max_rate"},
    {AD "rate = 50; adaptive = true;\nmax_rate = 40; } );\n" RT,
     "t.conf:3: upstreams[0].max_rate: 40 is below rate (50); want min_rate <= rate <= "
     "max_rate"},
    {AD "rate = 50; adaptive = true; max_rate = 100;\nmin_rate = 0; } );\n" RT,
     "t.conf:3: upstreams[0].min_rate: must be greater than 0, got 0"},
    {AD "rate = 50; adaptive = \"yes\"; max_rate = 100; } );\n" RT,
     "t.conf:2: upstreams[0].adaptive: expected true or false, got a string"},
    {AD "rate = 50; adaptive = true; max_rate = 100;\ntarget_latency = \"fast\"; } );\n" RT,
     "t.conf:3: upstreams[0].target_latency: bad duration \"fast\""},
#undef AD
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; rate = 0; } );\n" RT,
     "t.conf:1: upstreams[0].rate: must be greater than 0, got 0 (leave rate out for no limit)"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; rate = -2.5; } );\n" RT,
     "t.conf:1: upstreams[0].rate: must be greater than 0, got -2.5 (leave rate out for no "
     "limit)"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; burst = 0; } );\n" RT,
     "t.conf:1: upstreams[0].burst: must be at least 1, got 0"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; max_inflight = -1; } );\n" RT,
     "t.conf:1: upstreams[0].max_inflight: must be at least 0, got -1"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; connect_timeout = \"0s\"; } "
     ");\n" RT,
     "t.conf:1: upstreams[0].connect_timeout: must be greater than 0"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; max_spool_bytes = \"10GB!\"; } "
     ");\n" RT,
     "t.conf:1: upstreams[0].max_spool_bytes: bad size \"10GB!\""},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { max_attempts = 0; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.max_attempts: must be at least 1, got 0"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { initial_backoff = \"10s\";\n    max_backoff = \"5s\"; }; } );\n" RT,
     "t.conf:3: upstreams[0].retry.max_backoff: must be at least initial_backoff (10000 ms), got "
     "5000 ms"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { max_backoff = \"500ms\"; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.max_backoff: must be at least initial_backoff (1000 ms), got "
     "500 ms"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { multiplier = 0.5; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.multiplier: must be at least 1, got 0.5"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { jitter = 1.5; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.jitter: must be between 0 and 1, got 1.5"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { jitter = -0.1; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.jitter: must be between 0 and 1, got -0.1"},
    {"upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\";\n"
     "  retry = { initial_backoff = 0; }; } );\n" RT,
     "t.conf:2: upstreams[0].retry.initial_backoff: must be greater than 0"},

    /* routes */
    {UP, "t.conf: no routes: define at least one in \"routes = ( { ... } );\""},
    {UP "routes = ();\n", "t.conf:2: routes: empty; define at least one route"},
    {UP "routes = ( { upstream = \"a\"; } );\n", "t.conf:2: routes[0]: missing \"prefix\""},
    {UP "routes = ( { prefix = \"/\"; } );\n", "t.conf:2: routes[0]: missing \"upstream\""},
    {UP "routes = ( { prefix = \"api\"; upstream = \"a\"; } );\n",
     "t.conf:2: routes[0].prefix: bad prefix \"api\": must start with '/' and hold no blank, '?' "
     "or '#'"},
    {UP "routes = ( { prefix = \"/a?b\"; upstream = \"a\"; } );\n",
     "t.conf:2: routes[0].prefix: bad prefix \"/a?b\": must start with '/' and hold no blank, '?' "
     "or '#'"},
    {UP "routes = ( { prefix = \"\"; upstream = \"a\"; } );\n",
     "t.conf:2: routes[0].prefix: bad prefix \"\": must start with '/' and hold no blank, '?' or "
     "'#'"},
    {UP "routes = (\n  { prefix = \"/\"; upstream = \"a\"; },\n"
        "  { prefix = \"/x\"; upstream = \"nope\"; }\n);\n",
     "t.conf:4: routes[1].upstream: no upstream named \"nope\""},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; host = \"example.com:8080\"; } );\n",
     "t.conf:2: routes[0].host: bad host \"example.com:8080\": give a name or address without a "
     "port"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; host = \"\"; } );\n",
     "t.conf:2: routes[0].host: must not be empty; leave host out to match any host"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; methods = [ \"GET\", \"get\" ]; } );\n",
     "t.conf:2: routes[0].methods: unknown method \"get\" (methods are upper case: GET, HEAD, "
     "POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT)"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\";\n  methods = (\n \"FETCH\" ); } );\n",
     "t.conf:4: routes[0].methods: unknown method \"FETCH\" (methods are upper case: GET, HEAD, "
     "POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT)"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; methods = []; } );\n",
     "t.conf:2: routes[0].methods: empty; leave methods out to match every method"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; mode = \"sync\"; } );\n",
     "t.conf:2: routes[0].mode: must be \"async\" or \"wait\", got \"sync\""},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; wait_timeout = \"forever\"; } );\n",
     "t.conf:2: routes[0].wait_timeout: bad duration \"forever\""},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; queue_timeout = -1; } );\n",
     "t.conf:2: routes[0].queue_timeout: must not be negative, got -1"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\";\n  queue_ttl = \"soon\"; } );\n",
     "t.conf:3: routes[0].queue_ttl: bad duration \"soon\""},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; queue_ttl = \"0s\"; } );\n",
     "t.conf:2: routes[0].queue_ttl: must be greater than 0"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; queue_ttl = -5; } );\n",
     "t.conf:2: routes[0].queue_ttl: must not be negative, got -5"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; queue_ttl = true; } );\n",
     "t.conf:2: routes[0].queue_ttl: expected a duration (a string like \"30s\" or an integer "
     "number of seconds), got a boolean"},
    {UP "limits = { max_delay = \"1h\"; };\n"
        "routes = ( { prefix = \"/\"; upstream = \"a\"; queue_ttl = \"2h\"; } );\n",
     "t.conf:3: routes[0].queue_ttl: longer than limits.max_delay (3600000 ms)"},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; on_expire = \"keep\"; } );\n",
     "t.conf:2: routes[0].on_expire: must be \"dead\" or \"drop\", got \"keep\""},
    {UP "routes = ( { prefix = \"/\"; upstream = \"a\"; on_expire = 1; } );\n",
     "t.conf:2: routes[0].on_expire: expected a string, got an integer"},
    {UP "routes = (\n  { prefix = \"/api\"; upstream = \"a\"; },\n"
        "  { prefix = \"/\"; upstream = \"a\"; },\n"
        "  { prefix = \"/api\"; upstream = \"a\"; spill = true; }\n);\n",
     "t.conf:5: routes[2]: duplicate route: routes[0] (line 3) has the same prefix, host and "
     "methods"},
    {UP "routes = (\n  { prefix = \"/\"; upstream = \"a\"; host = \"A.example\";\n"
        "    methods = [\"POST\", \"GET\"]; },\n"
        "  { prefix = \"/\"; upstream = \"a\"; host = \"a.EXAMPLE\";\n"
        "    methods = [\"GET\", \"POST\"]; }\n);\n",
     "t.conf:5: routes[1]: duplicate route: routes[0] (line 3) has the same prefix, host and "
     "methods"},
};

static void test_errors(void **state) {
  size_t failed = 0;

  (void)state;
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
    failed += !refused_with(bad_cases[i].text, bad_cases[i].msg);
  assert_int_equal(failed, 0);
}

/* Routes that differ in host or methods are not duplicates. */
static void test_not_duplicates(void **state) {
  struct sl_config *cfg =
      load_ok(UP "routes = (\n"
                 "  { prefix = \"/api\"; upstream = \"a\"; },\n"
                 "  { prefix = \"/api/\"; upstream = \"a\"; },\n"
                 "  { prefix = \"/api\"; upstream = \"a\"; host = \"x\"; },\n"
                 "  { prefix = \"/api\"; upstream = \"a\"; host = \"y\"; },\n"
                 "  { prefix = \"/api\"; upstream = \"a\"; methods = [\"GET\"]; }\n"
                 ");\n");

  (void)state;
  assert_int_equal(cfg->n_routes, 5);
  sl_config_unref(cfg);
}

/* Long literals are fine where libconfig keeps them: with L, in strings, in
 * comments, as floats. */
static void test_int_literals(void **state) {
  struct sl_config *cfg = load_ok("# 99999999999 in a comment\n"
                                  "/* 99999999999 */ // 99999999999\n"
                                  "admin = { token = \"99999999999\"; };\n"
                                  "limits = { max_body_bytes = 99999999999L;\n"
                                  "  max_header_bytes = 2147483647; idle_timeout = 1e10; };\n" MIN);

  (void)state;
  assert_int_equal(cfg->limits.max_body_bytes, 99999999999ull);
  assert_int_equal(cfg->limits.max_header_bytes, 2147483647);
  assert_int_equal(cfg->limits.idle_timeout_ms, 10000000000000ull);
  assert_string_equal(cfg->admin.token, "99999999999");
  sl_config_unref(cfg);
  load_bad("limits = { max_connections = -2147483649; };\n" MIN,
           "t.conf:1: integer -2147483649 does not fit in 32 bits; add an L suffix "
           "(-2147483649L) or, for a size, write it as a string with a unit (\"10GiB\")");
}

/* The config that reads its token from the file <path>, its text in <text> of <len> bytes. */
static const char *token_file_config(char *text, size_t len, const char *path) {
  snprintf(text, len, "admin = {\n  token_file = \"%s\"; };\n" MIN, path);
  return text;
}

/* admin.token_file: the file's token without the blanks and line ends around it; read
 * again on each load (a reload); an empty or blank file, a token with a blank inside or
 * a file too large for a token are errors with the setting's line. */
static void test_token_file(void **state) {
  char path[512], text[1024], want[1024], big[5000];
  struct sl_config *cfg;

  (void)state;
  write_temp(path, sizeof(path), "  s3cret-token\r\n\n");
  cfg = load_ok(token_file_config(text, sizeof(text), path));
  assert_string_equal(cfg->admin.token, "s3cret-token");
  assert_string_equal(cfg->admin.token_file, path);
  sl_config_unref(cfg);
  unlink(path);

  write_temp(path, sizeof(path), "next");
  cfg = load_ok(token_file_config(text, sizeof(text), path));
  assert_string_equal(cfg->admin.token, "next");
  sl_config_unref(cfg);
  unlink(path);

  static const char *const bad[][2] = {
      {"", "is empty"},
      {" \n\t\n", "is empty"},
      {"two words\n", "holds a blank or control character"},
      {"nul\001byte", "holds a blank or control character"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    write_temp(path, sizeof(path), bad[i][0]);
    if (strcmp(bad[i][1], "is empty") == 0)
      snprintf(want, sizeof(want), "t.conf:2: admin.token_file: %s is empty", path);
    else
      snprintf(want, sizeof(want), "t.conf:2: admin.token_file: the token in %s %s", path,
               bad[i][1]);
    load_bad(token_file_config(text, sizeof(text), path), want);
    unlink(path);
  }
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  write_temp(path, sizeof(path), big);
  snprintf(want, sizeof(want),
           "t.conf:2: admin.token_file: %s is larger than 4096 bytes: it must hold the token "
           "alone",
           path);
  load_bad(token_file_config(text, sizeof(text), path), want);
  unlink(path);
}

static void test_refcount(void **state) {
  struct sl_config *cfg = load_ok(MIN);

  (void)state;
  assert_ptr_equal(sl_config_ref(cfg), cfg);
  assert_int_equal(cfg->refs, 2);
  sl_config_unref(cfg);
  assert_int_equal(cfg->refs, 1);
  assert_string_equal(cfg->upstreams[0].name, "a"); /* still alive */
  sl_config_unref(cfg);                             /* frees; ASan checks */
  sl_config_unref(NULL);
}

/* A short error buffer truncates the message but stays a C string. */
static void test_small_errbuf(void **state) {
  struct sl_config *cfg = NULL;
  char err[12];

  (void)state;
  memset(err, 'x', sizeof(err));
  assert_int_equal(sl_config_load_string(RT, "t.conf", &cfg, err, sizeof(err)), -1);
  assert_string_equal(err, "t.conf: no ");
  assert_int_equal(sl_config_load_string("x = ;", "t.conf", &cfg, err, sizeof(err)), -1);
  assert_string_equal(err, "t.conf:1: s");
  assert_int_equal(sl_config_load_string(RT, "t.conf", &cfg, err, 0), -1);
  assert_null(cfg);
}

/* Locates conf/sluice.conf next to this source file's tests/unit/. */
static void find_example(int argc, char **argv) {
  const char *self = __FILE__;
  const char *tail = strstr(self, "tests/unit/test_config.c");

  if (tail == NULL)
    snprintf(docs_path, sizeof(docs_path), "docs/configuration.md");
  else
    snprintf(docs_path, sizeof(docs_path), "%.*sdocs/configuration.md", (int)(tail - self), self);
  if (argc > 1) {
    snprintf(example_path, sizeof(example_path), "%s", argv[1]);
    return;
  }
  if (tail == NULL) {
    snprintf(example_path, sizeof(example_path), "conf/sluice.conf");
    return;
  }
  snprintf(example_path, sizeof(example_path), "%.*sconf/sluice.conf", (int)(tail - self), self);
}

/* A route's expiry keys: durations in every form get_duration takes, and both outcomes. */
static void test_route_expiry(void **state) {
  struct sl_config *cfg = load_ok(
      "upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; } );\n"
      "limits = { max_delay = \"2h\"; };\n"
      "routes = (\n"
      "  { prefix = \"/a\"; upstream = \"a\"; queue_ttl = \"30m\"; on_expire = \"drop\"; },\n"
      "  { prefix = \"/b\"; upstream = \"a\"; queue_ttl = 90; on_expire = \"dead\"; },\n"
      "  { prefix = \"/c\"; upstream = \"a\"; queue_ttl = \"2h\"; },\n"
      "  { prefix = \"/d\"; upstream = \"a\"; queue_ttl = 0.25; }\n"
      ");\n");

  (void)state;
  assert_int_equal(cfg->routes[0].queue_ttl_ms, 30 * 60 * 1000);
  assert_true(cfg->routes[0].expire_drop);
  assert_int_equal(cfg->routes[1].queue_ttl_ms, 90 * 1000);
  assert_false(cfg->routes[1].expire_drop);
  assert_int_equal(cfg->routes[2].queue_ttl_ms, 2 * 3600 * 1000); /* max_delay itself is fine */
  assert_false(cfg->routes[2].expire_drop);
  assert_int_equal(cfg->routes[3].queue_ttl_ms, 250);
  sl_config_unref(cfg);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),       cmocka_unit_test(test_design_example),
      cmocka_unit_test(test_every_setting),  cmocka_unit_test(test_adaptive_defaults),
      cmocka_unit_test(test_example_file),   cmocka_unit_test(test_docs_defaults_block),
      cmocka_unit_test(test_file_errors),    cmocka_unit_test(test_errors),
      cmocka_unit_test(test_not_duplicates), cmocka_unit_test(test_int_literals),
      cmocka_unit_test(test_token_file),     cmocka_unit_test(test_refcount),
      cmocka_unit_test(test_small_errbuf),   cmocka_unit_test(test_route_expiry),
  };

  find_example(argc, argv);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
