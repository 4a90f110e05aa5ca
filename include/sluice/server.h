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
 * Per loop and shared: the listener, its connections, the access log and the
 * grace timer are per loop (the loop of the struct sl_loop given at create);
 * the registry it builds holds per-loop pools next to per-upstream drains,
 * spools and the ledger (sluice/loop.h draws the line).
 *
 * @thread loop
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <uv.h>

#include "sluice/config.h"
#include "sluice/loop.h"

struct sl_server;

/* Called once a graceful shutdown has finished: every client connection closed. */
typedef void (*sl_server_shutdown_cb)(struct sl_server *srv);

/* Creates a server for <cfg> (takes a reference) on the loop of <lp> (borrowed: outlives the
 * server). Returns NULL on ENOMEM. */
struct sl_server *sl_server_create(struct sl_loop *lp, struct sl_config *cfg);

/* Binds and listens on cfg->listen. Returns 0 or a UV_* error (logged). */
int sl_server_start(struct sl_server *srv);

/*
 * How a reload ended: <status> 0 and <cfg> (borrowed: take a reference to keep
 * it) the config requests use from now on; or a negative code, <cfg> NULL and
 * <error> the reason, with the running config kept whole.
 */
typedef void (*sl_server_reload_cb)(struct sl_server *srv, const struct sl_config *cfg, int status,
                                    const char *error, void *arg);

/*
 * Reloads the config file <path> as a transaction, without blocking the
 * loop: parses it on the threadpool, then opens and recovers on the
 * threadpool every spool the new config needs that is not open yet (an
 * upstream new to the config that a route spills to, or one a route starts
 * spilling to), and only if all of that succeeded switches to it for the
 * requests that start from then on; requests in flight finish under the
 * config they started with. On any failure the spools opened for it are
 * closed and the running config stays as it was. Either way the outcome is
 * logged, counted in sluice_config_reloads_total{result="success"|"failure"}
 * and shown at GET /admin/reload (sl_server_register_reload_admin), and then
 * <cb>(srv, ..., <arg>) runs on the loop, unless the server is destroyed
 * first. A reload asked for while one runs makes one more run after it
 * (several make one), with the same <cb>. During a shutdown it does nothing.
 */
void sl_server_reload(struct sl_server *srv, const char *path, sl_server_reload_cb cb, void *arg);

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

/*
 * Adds GET /admin/reload to <admin>, behind the token: JSON with the last
 * reload's result ("none", "success", "failure"), its time (RFC 3339, UTC),
 * its error (null unless it failed), whether one is running, and the counts
 * of successes and failures.
 *
 * And POST /admin/reload, behind the token too: the reload SIGHUP runs
 * (sl_server_reload of <path> with <cb> and <arg>, which the caller gives
 * SIGHUP's reload as well), answered once it has ended with the document GET
 * gives: 200 when it applied; when it failed, 422 if the file has an error
 * (its "file:line: message" in "error" and "last_error"), 503 if sluice is
 * shutting down, 500 for anything else (a spool that cannot be opened). A
 * POST while a reload runs is answered by the one that runs after it, which
 * reads the file again. <path> is copied. Returns 0 or a UV_* code.
 */
int sl_server_register_reload_admin(struct sl_server *srv, struct sl_admin *admin, const char *path,
                                    sl_server_reload_cb cb, void *arg);

/* Frees the server after its shutdown completed. Accepts NULL. */
void sl_server_destroy(struct sl_server *srv);

#endif
