/*
 * Private helpers shared by the config module's files (config.c parses,
 * route.c matches) and their unit tests.
 *
 * @thread any (pure functions on a config that is not yet shared)
 */
#ifndef SLUICE_CONFIG_INT_H
#define SLUICE_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/config.h"

/*
 * Sorts <n> routes in place into matching order: longest prefix first; among
 * equal prefixes a route with a host before one without, then a route with
 * methods before one without, then file order. The tie rules make sure a more
 * specific route is never hidden by a catch-all written above it.
 */
void sl__routes_sort(struct sl_route_config *routes, size_t n);

/* True when <a> and <b> would match exactly the same requests (same prefix,
 * host compared case-insensitively, same methods). */
bool sl__route_same(const struct sl_route_config *a, const struct sl_route_config *b);

/* True when <name> (NUL-terminated) is one of the methods a route may list:
 * GET HEAD POST PUT PATCH DELETE OPTIONS TRACE CONNECT. */
bool sl__method_known(const char *name);

#endif
