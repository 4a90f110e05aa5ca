/*
 * The proxy server: the client listener, its connections and the upstream
 * pools, driven by one libuv loop.
 *
 * The server holds a reference to the current config. A reload swaps it:
 * new requests use the new routes and upstream settings at once, requests in
 * flight finish under the config they started with, and no connection is
 * dropped. The listen address is bound once; a reload that changes it is
 * logged and ignored until a restart.
 *
 * @thread loop
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <uv.h>

#include "sluice/config.h"

struct sl_server;

/* Called once a graceful shutdown has finished: every client connection closed. */
typedef void (*sl_server_shutdown_cb)(struct sl_server *srv);

/* Creates a server for <cfg> (takes a reference). Returns NULL on ENOMEM. */
struct sl_server *sl_server_create(uv_loop_t *loop, struct sl_config *cfg);

/* Binds and listens on cfg->listen. Returns 0 or a UV_* error (logged). */
int sl_server_start(struct sl_server *srv);

/* Switches to <cfg> (takes a reference) for requests that start from now on. */
void sl_server_reload(struct sl_server *srv, struct sl_config *cfg);

/* The config new requests use (borrowed). */
const struct sl_config *sl_server_config(const struct sl_server *srv);

/*
 * Graceful shutdown: stops accepting, closes idle connections, lets requests
 * in flight finish for up to limits.shutdown_timeout, then closes the rest.
 * <cb> runs when no client connection is left.
 */
void sl_server_shutdown(struct sl_server *srv, sl_server_shutdown_cb cb);

struct sl_admin;
/* Adds the shaping admin API (/admin/upstreams...) to <admin>. Returns 0 or a UV_* code. */
int sl_server_register_admin(struct sl_server *srv, struct sl_admin *admin);

/* Frees the server after its shutdown completed. Accepts NULL. */
void sl_server_destroy(struct sl_server *srv);

#endif
