/*
 * JSON output: string escaping, the one piece of JSON every writer needs.
 *
 * The admin API, the admin index and the demo backend build their JSON with
 * sl_buf_printf; whatever text in it comes from outside (a request target, an
 * error message, an upstream's reply stored with a dead letter) goes through
 * sl_json_append_string, so the document stays valid JSON and valid UTF-8
 * whatever bytes arrived.
 *
 * @thread any (no shared state)
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stddef.h>

#include "sluice/buf.h"

/*
 * Appends the <len> bytes at <s> to <b> as one JSON string, quotes included.
 * <s> need not be NUL-terminated and may hold any bytes:
 *   - '"' and '\' are escaped with a backslash; \n, \r and \t are written as
 *     such, the other C0 controls and DEL as \u00XX;
 *   - valid UTF-8 (RFC 3629: shortest form, no surrogates, at most U+10FFFF)
 *     is copied unchanged;
 *   - every byte that does not belong to a valid sequence (a stray
 *     continuation byte, a truncated sequence, an overlong form, a
 *     surrogate, a lead byte above F4) becomes one \ufffd.
 * Returns 0, or -ENOMEM with <b> as it was before the call.
 */
int sl_json_append_string(struct sl_buf *b, const char *s, size_t len);

#endif
