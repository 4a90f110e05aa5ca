/*
 * Expiry of a spilled request: when it stops being worth sending.
 *
 * A route's queue_ttl and a client's X-Sluice-Expires-After header each give
 * a time to live counted from acceptance (delays and retries included); the
 * shorter wins. The deadline travels with the spooled record, as one
 * internal field among its stored header fields,
 *
 *     X-Sluice-Expiry: <wall-clock ms since the epoch> dead|drop
 *
 * so that it survives a restart or a crash without a change of the spool's
 * format (old records simply have none), and so that the drain, which holds
 * no route, knows what to do with the record: dead-letter it with the reason
 * "expired", or drop it. Client-sent X-Sluice-* fields are never stored
 * (sl_http_write_request_fields), so the field in a record is always
 * sluice's own; the drain leaves it out of the request it replays.
 *
 * Pure functions, no I/O.
 * @thread any
 */
#ifndef SLUICE_EXPIRY_H
#define SLUICE_EXPIRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"

/* The internal field's name, as stored. */
#define SL_EXPIRY_FIELD "X-Sluice-Expiry"

/*
 * The time to live of a request: the shorter of the route's <route_ttl_ms>
 * (0: none) and the X-Sluice-Expires-After value <header> (NULL: none; a
 * duration such as "30m", as X-Sluice-Delay). Stores it in <out> (0: the
 * request never expires) and returns 0; or returns -1 with a one-line reason
 * for the client (no double quotes) in <why> of <len> bytes: a malformed or
 * zero header, or one beyond <max_delay_ms> (whose text form is <max_text>).
 */
int sl_expiry_ttl(const char *header, uint64_t route_ttl_ms, uint64_t max_delay_ms,
                  const char *max_text, uint64_t *out, char *why, size_t len);

/* The deadline of a request accepted at <now_ms> with time to live <ttl_ms>
 * (not 0); saturates rather than wraps. */
uint64_t sl_expiry_deadline(uint64_t now_ms, uint64_t ttl_ms);

/* Appends the internal field for <deadline_ms> and the outcome <drop> to a
 * stored field block. Returns 0 or -1 (ENOMEM). */
int sl_expiry_append(struct sl_buf *fields, uint64_t deadline_ms, bool drop);

/* Reads the internal field back from a stored field block: true with the
 * deadline and the outcome, or false if the record has none (or a malformed
 * one, which is then treated as none: the record is delivered). */
bool sl_expiry_get(const char *fields, size_t len, uint64_t *deadline_ms, bool *drop);

/* Appends the stored field block <fields> without its internal expiry field,
 * as the backend is to see it. Returns 0 or -1 (ENOMEM). */
int sl_expiry_strip(struct sl_buf *out, const char *fields, size_t len);

#endif
