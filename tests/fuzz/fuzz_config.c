/*
 * libFuzzer harness for the config loader (src/config/): the input, made a
 * NUL-terminated string, goes through sl_config_load_string, which is
 * libconfig's parser followed by sluice's validation of every setting.
 *
 * Checks beyond the sanitizers: a refusal comes with a non-empty message; an
 * accepted config is consistent: each upstream is found by its name, each
 * route names an upstream that exists, and a request for a route's own prefix
 * (with its host and one of its methods) is routed somewhere.
 *
 * Inputs that contain "@include" are skipped: libconfig would open the file
 * they name (any path, /dev/zero too), which tests the file system, not the
 * loader. libconfig 1.5 leaks on an unterminated string: lsan.supp (README.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sluice/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_config: %s: %s\n", what, detail ? detail : "");
  abort();
}

static void check(const struct sl_config *cfg) {
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    if (sl_config_upstream(cfg, cfg->upstreams[i].name) == NULL)
      fail("an upstream is not found by its name", cfg->upstreams[i].name);
  }
  for (size_t i = 0; i < cfg->n_routes; i++) {
    const struct sl_route_config *rt = &cfg->routes[i], *m;
    unsigned method = rt->methods ? rt->methods & -rt->methods : 1u; /* its lowest bit */

    if (rt->upstream >= cfg->n_upstreams)
      fail("a route names no upstream", rt->prefix);
    m = sl_route_match(cfg, rt->prefix, rt->prefix_len, rt->host, rt->host ? strlen(rt->host) : 0,
                       method);
    if (m == NULL || m->upstream >= cfg->n_upstreams)
      fail("a route's own prefix is not routed", rt->prefix);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  sl_fuzz_quiet_log();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct sl_config *cfg = NULL;
  char err[512];
  char *text = malloc(size + 1);

  if (text == NULL)
    abort();
  memcpy(text, data, size);
  text[size] = '\0';
  if (strstr(text, "@include") == NULL) {
    if (sl_config_load_string(text, "fuzz.conf", &cfg, err, sizeof(err)) == 0) {
      check(cfg);
      sl_config_unref(sl_config_ref(cfg));
      sl_config_unref(cfg);
    } else if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL) {
      fail("a refusal without a message", NULL);
    }
  }
  free(text);
  return 0;
}
