/*
 * Shaping on the client side: a complete request routed to an upstream is
 * forwarded under the upstream's budget, spilled to its spool (202, or held
 * in wait mode for the replay's answer), or queued in memory for a slot and
 * refused with 503 + Retry-After when the wait runs out. Also the status URL
 * and Idempotency-Key answers, which come from the ledger, and the
 * cancellation of a queued request (DELETE on its status URL).
 *
 * While the upstream's circuit is not closed (sluice/circuit.h), a request
 * on a spill route is spilled without trying the backend, and one on a
 * live-only route gets 503 with Retry-After (the time to the next probe)
 * unless it may go as the probe. A forward whose connect fails is spilled
 * too when its route spills (sl__shape_spill_unsent): nothing was sent.
 *
 * A connection with an append in flight holds a reference (spill_pending):
 * if the client goes away meanwhile, the record is still stored and the
 * connection is freed when the callback comes.
 */
#include "server_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/admin.h"
#include "sluice/clock.h"
#include "sluice/expiry.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/replay.h"
#include "sluice/units.h"
#include "sluice/util.h"

static const struct sl_http_header *header(struct sl_conn *c, const char *name) {
  return sl_http_msg_header(&c->h1.parser.msg, name);
}

/* Copies the value of <h> into <out> (NUL-terminated); -1 if it does not fit. */
static int header_value(struct sl_conn *c, const struct sl_http_header *h, char *out, size_t len) {
  if (h->value_len >= len)
    return -1;
  memcpy(out, sl_http_msg_str(&c->h1.parser.msg, h->value_off), h->value_len);
  out[h->value_len] = '\0';
  return 0;
}

/* Writes <ms> as a duration in its largest whole unit ("30d", "90m"). */
static void format_duration(uint64_t ms, char *out, size_t len) {
  static const struct {
    uint64_t ms;
    const char *unit;
  } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};

  for (size_t i = 0; i < sl_countof(units); i++) {
    if (ms % units[i].ms == 0) {
      snprintf(out, len, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].unit);
      return;
    }
  }
}

/*
 * The not-before time a client asked for with X-Sluice-Delay or
 * X-Sluice-Not-Before, as wall-clock ms in <out> (0 for none). A delay must
 * parse and lie within limits.max_delay of now: a value beyond it, or one too
 * large to hold at all, is refused rather than left to wrap around to a time
 * in the past and be delivered at once. Returns 0, or -1 with a one-line
 * reason for the client (no double quotes) in <why> of <len> bytes.
 */
static int requested_not_before(struct sl_conn *c, uint64_t *out, char *why, size_t len) {
  const struct sl_http_header *delay = header(c, "x-sluice-delay");
  const struct sl_http_header *nb = header(c, "x-sluice-not-before");
  uint64_t now = sl_clock_wall_ms(), max = c->cfg->limits.max_delay_ms, v;
  const char *name = delay != NULL ? "X-Sluice-Delay" : "X-Sluice-Not-Before";
  char tmp[64], max_text[32], *end;

  *out = 0;
  if (delay != NULL) {
    if (header_value(c, delay, tmp, sizeof(tmp)) != 0 || sl_duration_parse(tmp, &v) != 0) {
      snprintf(why, len, "X-Sluice-Delay is not a duration such as 90s or 1h30m, or too large");
      return -1;
    }
  } else if (nb == NULL) {
    return 0;
  } else if (header_value(c, nb, tmp, sizeof(tmp)) != 0) {
    snprintf(why, len, "X-Sluice-Not-Before is neither Unix seconds nor an HTTP date");
    return -1;
  } else if (tmp[0] >= '0' && tmp[0] <= '9') {
    unsigned long long secs = strtoull(tmp, &end, 10); /* ULLONG_MAX on overflow */

    if (*end != '\0') {
      snprintf(why, len, "X-Sluice-Not-Before is neither Unix seconds nor an HTTP date");
      return -1;
    }
    /* Any time past year 9999 is beyond every max_delay, and secs * 1000
     * cannot overflow below it. */
    v = secs > 253402300799ull ? UINT64_MAX : secs * 1000 > now ? secs * 1000 - now : 0;
  } else {
    /* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is 29 bytes: its year
     * has four digits, so the time it names fits in ms. */
    v = strlen(tmp) == 29 ? sl_replay_parse_retry_after(tmp, strlen(tmp), now) : 0;
    if (v == 0 && (strlen(tmp) != 29 || strchr(tmp, ',') == NULL)) {
      snprintf(why, len, "X-Sluice-Not-Before is neither Unix seconds nor an HTTP date");
      return -1;
    }
  }
  if (v > max || v > UINT64_MAX - now) {
    format_duration(max, max_text, sizeof(max_text));
    snprintf(why, len, "%s is beyond limits.max_delay (%s) from now", name, max_text);
    return -1;
  }
  *out = now + (v > 0 ? v : 1);
  return 0;
}

/*
 * The time to live of the request if it is spilled (sluice/expiry.h): the
 * shorter of its route's queue_ttl and X-Sluice-Expires-After, into
 * c->expiry_ttl_ms. Returns 0, or -1 with a reason for the client in <why>.
 */
static int requested_ttl(struct sl_conn *c, char *why, size_t len) {
  const struct sl_http_header *h = header(c, "x-sluice-expires-after");
  uint64_t max = c->cfg->limits.max_delay_ms;
  char tmp[64], max_text[32];

  format_duration(max, max_text, sizeof(max_text));
  if (h != NULL && header_value(c, h, tmp, sizeof(tmp)) != 0) {
    snprintf(why, len, "X-Sluice-Expires-After is not a duration such as 30s or 1h30m");
    return -1;
  }
  return sl_expiry_ttl(h != NULL ? tmp : NULL, c->route->queue_ttl_ms, max, max_text,
                       &c->expiry_ttl_ms, why, len);
}

/*
 * A bounded JSON writer for the status body: every 202 carries one, so the common fields are
 * appended directly rather than through snprintf's format parsing.
 */
struct json_out {
  char *p;
  size_t len, n;
};

static void put(struct json_out *o, const char *s, size_t len) {
  if (o->n + len < o->len) {
    memcpy(o->p + o->n, s, len);
    o->n += len;
  }
}

static void put_str(struct json_out *o, const char *s) { put(o, s, strlen(s)); }

static void put_u64(struct json_out *o, uint64_t v) {
  char d[20];
  size_t i = sizeof(d);

  do {
    d[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  put(o, d + i, sizeof(d) - i);
}

/* <seconds> with one decimal. */
static void put_tenths(struct json_out *o, double seconds) {
  double t = seconds * 10 + 0.5;
  uint64_t tenths = t < 0 ? 0 : t < 1e18 ? (uint64_t)t : 1000000000000000000ull;

  put_u64(o, tenths / 10);
  put(o, ".", 1);
  put_u64(o, tenths % 10);
}

/* Writes the JSON status of ledger entry <e> into <out>; returns its length. */
static int status_json(struct sl_conn *c, const struct sl_ledger_entry *e, char *out, size_t len) {
  char id[SL_LEDGER_ID_HEX + 1];
  struct json_out o = {out, len, 0};
  struct sl_drain *d = NULL;

  sl_ledger_id_format(e->id, id);
  const char *upstream = sl__server_upstream_name(c->srv, e->upstream);
  if (upstream != NULL)
    d = sl__server_drain(c->srv, upstream);
  put_str(&o, "{\"id\":\"");
  put_str(&o, id);
  put_str(&o, "\",\"status\":\"");
  put_str(&o, sl_ledger_state_name(e->state));
  put_str(&o, "\",\"attempts\":");
  put_u64(&o, e->attempts);
  uint64_t now_ms = sl_clock_wall_ms();

  if (e->state == SL_LEDGER_QUEUED && e->not_before_ms > now_ms) {
    /* Delayed, or waiting for a retry: due at a time, not at a place in the line. */
    char when[SL_CLOCK_RFC3339_LEN];
    uint64_t pos;
    double eta = 0;

    /* A held drain (paused, circuit open) knows no time: the ETA is null. */
    if (d != NULL)
      sl_drain_position(d, e->seq, &pos, &eta);
    put_str(&o, ",\"position\":null,\"not_before\":\"");
    put_str(&o, sl_clock_format(e->not_before_ms, false, when));
    put_str(&o, "\",\"eta_seconds\":");
    if (eta >= 0)
      put_tenths(&o, (double)(e->not_before_ms - now_ms) / 1e3);
    else
      put_str(&o, "null");
  } else if (e->state == SL_LEDGER_QUEUED && d != NULL) {
    uint64_t pos;
    double eta;

    sl_drain_position(d, e->seq, &pos, &eta);
    put_str(&o, ",\"position\":");
    put_u64(&o, pos);
    put_str(&o, ",\"eta_seconds\":");
    if (eta >= 0)
      put_tenths(&o, eta);
    else
      put_str(&o, "null");
  }
  if (e->state == SL_LEDGER_DELIVERED) {
    char when[SL_CLOCK_RFC3339_LEN];

    put_str(&o, ",\"code\":");
    put_u64(&o, e->status);
    put_str(&o, ",\"delivered_at\":\"");
    put_str(&o, sl_clock_format(e->updated_ms, false, when));
    put_str(&o, "\"");
  }
  if (e->error[0] != '\0') {
    struct sl_buf error;

    sl_buf_init(&error);
    put_str(&o, ",\"error\":");
    if (sl_json_append_string(&error, e->error, strlen(e->error)) == 0)
      put(&o, error.base, error.len);
    else
      put_str(&o, "null");
    sl_buf_dispose(&error);
  }
  put_str(&o, "}\n");
  return (int)o.n;
}

/* The scope of a route's Idempotency-Keys: its upstream's id, so a key means the same upstream
 * after a reload or restart that reorders the config. */
static uint16_t key_scope(const struct sl_conn *c) { return c->slot->id; }

/* 202 Accepted for id <id>, with its status and a Location to its status URL. */
static void respond_accepted(struct sl_conn *c, const uint8_t *id) {
  struct sl_ledger_entry e;
  char body[512], headers[256], hex[SL_LEDGER_ID_HEX + 1];
  int n;

  sl_ledger_id_format(id, hex);
  if (sl_ledger_get(c->srv->ledger, id, &e) != 1) {
    memset(&e, 0, sizeof(e));
    memcpy(e.id, id, 16);
  }
  n = status_json(c, &e, body, sizeof(body));
  snprintf(headers, sizeof(headers), "Location: %s%s\r\n", c->cfg->status_prefix, hex);
  c->outcome = SL_OUTCOME_SPILLED;
  sl__conn_respond_json(c, 202, headers, body, (size_t)n);
}

static void respond_unavailable(struct sl_conn *c, const char *why) {
  char headers[64], body[160];
  int n;

  snprintf(headers, sizeof(headers), "Retry-After: %u\r\n",
           c->drain ? sl_drain_retry_after(c->drain) : 1);
  n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", why);
  c->outcome = SL_OUTCOME_REJECTED;
  sl__conn_respond_json(c, 503, headers, body, (size_t)n);
}

/* The cancellation of <c->spill_id> is durable (or the journal failed, and
 * said so): its 200 goes now, with the status as it is now. */
static void on_cancel_journaled(struct sl_ledger_journal_waiter *w, int status) {
  struct sl_conn *c = sl_container_of(w, struct sl_conn, jwait);
  struct sl_ledger_entry e;
  char body[512];
  int n;

  (void)status;
  c->shape = SHAPE_NONE;
  if (sl_ledger_get(c->srv->ledger, c->spill_id, &e) != 1) {
    memset(&e, 0, sizeof(e));
    memcpy(e.id, c->spill_id, 16);
    e.state = SL_LEDGER_CANCELLED;
  }
  n = status_json(c, &e, body, sizeof(body));
  sl__conn_respond_json(c, 200, "Cache-Control: no-store\r\n", body, (size_t)n);
}

/*
 * DELETE on a status URL: cancels a queued or delayed request (ledger entry
 * <e>) so that it is never delivered. Needs the admin token when one is set,
 * checked by the admin listener's own function. Answers 200 with the status
 * ("cancelled"), 409 with the status when it is past cancelling (in flight,
 * delivered, dead...), 401 without the right token.
 */
static void cancel_request(struct sl_conn *c, struct sl_ledger_entry *e) {
  const char *upstream = sl__server_upstream_name(c->srv, e->upstream);
  struct sl_drain *d = upstream != NULL ? sl__server_drain(c->srv, upstream) : NULL;
  char body[512];
  int rc, n;

  rc = sl_admin_check_token(c->cfg->admin.token, &c->h1.parser.msg);
  if (rc != 0) {
    static const char missing[] = "{\"error\":\"missing bearer token\"}\n";
    static const char invalid[] = "{\"error\":\"invalid bearer token\"}\n";

    if (rc == UV_EPERM)
      sl__conn_respond_json(c, 401, "WWW-Authenticate: Bearer\r\n", missing, sizeof(missing) - 1);
    else
      sl__conn_respond_json(c, 401, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", invalid,
                            sizeof(invalid) - 1);
    return;
  }
  rc = d != NULL ? sl_drain_cancel_request(d, e->id, e) : SL_ELEDGER_NOTFOUND;
  if (rc == SL_ELEDGER_NOTFOUND) {
    static const char msg[] = "{\"error\":\"unknown request id\"}\n";
    sl__conn_respond_json(c, 404, NULL, msg, sizeof(msg) - 1);
    return;
  }
  if (rc != 0 && rc != UV_EBUSY) {
    static const char msg[] = "{\"error\":\"could not cancel: out of memory\"}\n";
    sl__conn_respond_json(c, 500, NULL, msg, sizeof(msg) - 1);
    return;
  }
  /* A cancellation is written to the journal now rather than within its
   * usual delay, and under a sync policy its 200 waits until it is durable:
   * the client is told it holds, a power cut included. */
  if (rc == 0 && c->srv->journal != NULL) {
    sl_ledger_journal_flush(c->srv->journal);
    if (sl_ledger_journal_wait(c->srv->ledger, &c->jwait, sl_ledger_journal_mark(c->srv->ledger),
                               on_cancel_journaled) == 0) {
      memcpy(c->spill_id, e->id, 16);
      c->shape = SHAPE_JOURNALING;
      return;
    }
  }
  n = status_json(c, e, body, sizeof(body));
  sl__conn_respond_json(c, rc == 0 ? 200 : 409, "Cache-Control: no-store\r\n", body, (size_t)n);
}

void sl__shape_status(struct sl_conn *c) {
  const struct sl_http_msg *m = &c->h1.parser.msg;
  const char *target = sl_http_msg_str(m, m->target_off);
  size_t plen = strlen(c->cfg->status_prefix);
  const char *q = memchr(target, '?', m->target_len);
  size_t len = (q ? (size_t)(q - target) : m->target_len) - plen;
  struct sl_ledger_entry e;
  uint8_t id[16];
  char body[512];
  int n;

  if (m->method != HTTP_GET && m->method != HTTP_HEAD && m->method != HTTP_DELETE) {
    static const char msg[] = "{\"error\":\"status URLs answer GET, HEAD and DELETE\"}\n";
    sl__conn_respond_json(c, 405, "Allow: GET, HEAD, DELETE\r\n", msg, sizeof(msg) - 1);
    return;
  }
  if (sl_ledger_id_parse(target + plen, len, id) != 0) {
    static const char msg[] = "{\"error\":\"unknown request id\"}\n";
    sl__conn_respond_json(c, 404, NULL, msg, sizeof(msg) - 1);
    return;
  }
  if (sl_ledger_get(c->srv->ledger, id, &e) != 1) {
    static const char msg[] = "{\"error\":\"unknown request id\"}\n";
    /* After an unclean stop the id may be one of the records whose status the
     * spools are still telling again: not "unknown" until they are done. */
    static const char busy[] = "{\"error\":\"statuses are being rebuilt from the spool after "
                               "an unclean stop; retry shortly\"}\n";

    if (sl__server_rebuilding(c->srv))
      sl__conn_respond_json(c, 503, "Retry-After: 1\r\n", busy, sizeof(busy) - 1);
    else
      sl__conn_respond_json(c, 404, NULL, msg, sizeof(msg) - 1);
    return;
  }
  if (m->method == HTTP_DELETE) {
    cancel_request(c, &e);
    return;
  }
  n = status_json(c, &e, body, sizeof(body));
  sl__conn_respond_json(c, 200, "Cache-Control: no-store\r\n", body, (size_t)n);
}

/* ---- wait mode --------------------------------------------------------- */

static void on_replayed(const struct sl_http_msg *head, const struct sl_buf *body, void *arg) {
  struct sl_conn *c = arg;
  struct sl_http_msg resp = *head;

  sl_http1_conn_disarm(&c->h1);
  c->shape = SHAPE_NONE;
  c->status = head->status;
  c->outcome = SL_OUTCOME_SPILLED;
  resp.content_length = (int64_t)body->len;
  if (sl_http_write_response_head(&c->h1.out, &resp, &c->h1.parser.msg,
                                  head->no_body ? SL_FRAME_NONE : SL_FRAME_LENGTH,
                                  c->h1.keep_alive) != 0 ||
      (!head->no_body && c->h1.parser.msg.method != HTTP_HEAD &&
       sl_http1_conn_write(&c->h1, body->base, body->len) != 0)) {
    sl_http1_conn_close(&c->h1);
    return;
  }
  c->bytes_out = body->len;
  sl_http1_conn_done(&c->h1);
}

/* ---- spill ------------------------------------------------------------- */

static void on_spilled(const struct sl_drain_spilled *res, void *arg) {
  struct sl_conn *c = arg;
  const struct sl_http_header *key;

  c->spill_pending = false;
  if (c->h1.state == SL_HTTP1_CLOSED) {
    sl_http1_conn_release(&c->h1);
    return;
  }
  sl_http1_conn_release(&c->h1);
  c->shape = SHAPE_NONE;
  if (res->status != 0) {
    key = header(c, "idempotency-key");
    if (key != NULL)
      sl_dedupe_remove(c->srv->dedupe, key_scope(c),
                       sl_http_msg_str(&c->h1.parser.msg, key->value_off), key->value_len);
    sl_log_warn("spool %s: request not stored: %s", sl_drain_name(c->drain),
                sl_strerror(res->status));
    respond_unavailable(c, res->status == SL_ESPOOL_FULL ? "spool full" : "spool unavailable");
    return;
  }
  if (c->route->mode == SL_MODE_WAIT && c->route->wait_timeout_ms > 0) {
    memcpy(c->watch.id, res->id, 16);
    c->watch.cb = on_replayed;
    c->watch.arg = c;
    sl_drain_watch(c->drain, &c->watch);
    c->shape = SHAPE_WATCHING;
    sl_http1_conn_arm(&c->h1, c->route->wait_timeout_ms);
    return;
  }
  respond_accepted(c, res->id);
}

static void spill(struct sl_conn *c, uint64_t not_before_ms) {
  const struct sl_http_msg *m = &c->h1.parser.msg;
  const char *method = llhttp_method_name((llhttp_method_t)m->method);
  const struct sl_upstream_config *ucfg = &c->cfg->upstreams[c->route->upstream];
  const struct sl_http_header *key = header(c, "idempotency-key");
  struct sl_http_forward fwd = {
      .client_addr = c->h1.client_addr,
      .proto = "http",
      .upstream_host = ucfg->address.text,
      .body_len = c->h1.body.len,
  };
  int rc;

  sl_buf_reset(&c->upreq);
  if (sl_http_write_request_fields(&c->upreq, m, &fwd) != 0 ||
      (c->expiry_ttl_ms != 0 &&
       sl_expiry_append(&c->upreq, sl_expiry_deadline(sl_clock_wall_ms(), c->expiry_ttl_ms),
                        c->route->expire_drop) != 0)) {
    respond_unavailable(c, "out of memory");
    return;
  }
  rc = sl_drain_spill(c->drain, method, strlen(method), sl_http_msg_str(m, m->target_off),
                      m->target_len, &c->upreq, &c->h1.body, not_before_ms, on_spilled, c,
                      c->spill_id);
  if (rc != 0) {
    sl_log_warn("spool %s: request refused: %s", sl_drain_name(c->drain), sl_strerror(rc));
    respond_unavailable(c, rc == SL_ESPOOL_FULL ? "spool full" : "spool unavailable");
    return;
  }
  /* Recorded before the append completes, so that a repeat arriving
   * meanwhile finds it rather than queueing a second copy. */
  if (key != NULL)
    sl_dedupe_put(c->srv->dedupe, key_scope(c), sl_http_msg_str(m, key->value_off), key->value_len,
                  c->spill_id, sl_clock_wall_ms());
  c->shape = SHAPE_SPILLING;
  c->spill_pending = true;
  sl_http1_conn_hold(&c->h1); /* the append's callback holds the connection */
}

/* ---- forward ----------------------------------------------------------- */

/* Forwards the request under its drain. Its start time is what the circuit
 * compares with its last failure and its probe: the request's own start may
 * be long before (a keep-alive connection's wait for it, a slow body). */
static void forward(struct sl_conn *c) {
  c->t_upstream_start_ns = sl_clock_mono_ns();
  sl__proxy_start(c);
}

/* ---- queue ------------------------------------------------------------- */

static void on_granted(struct sl_drain_waiter *w) {
  struct sl_conn *c = sl_container_of(w, struct sl_conn, waiter);

  sl_http1_conn_disarm(&c->h1);
  c->shape = SHAPE_NONE;
  c->holds_slot = true;
  if (!sl_drain_circuit_allow(c->drain)) {
    respond_unavailable(c, "upstream unavailable");
    return;
  }
  forward(c);
}

void sl__shape_timeout(struct sl_conn *c) {
  switch (c->shape) {
  case SHAPE_QUEUED:
    sl_drain_cancel(c->drain, &c->waiter);
    c->shape = SHAPE_NONE;
    respond_unavailable(c, "upstream busy");
    break;
  case SHAPE_WATCHING:
    /* wait_timeout passed: the record stays queued; answer 202 now. */
    sl_drain_unwatch(c->drain, &c->watch);
    c->shape = SHAPE_NONE;
    respond_accepted(c, c->watch.id);
    break;
  default:
    break;
  }
}

void sl__shape_finish(struct sl_conn *c) {
  switch (c->shape) {
  case SHAPE_QUEUED:
    sl_drain_cancel(c->drain, &c->waiter);
    break;
  case SHAPE_WATCHING:
    sl_drain_unwatch(c->drain, &c->watch);
    break;
  case SHAPE_JOURNALING:
    sl_ledger_journal_unwait(&c->jwait); /* the cancellation holds; its answer is not sent */
    break;
  default:
    break; /* SPILLING: the append goes on; its callback finds the connection closed */
  }
  c->shape = SHAPE_NONE;
  if (c->holds_slot) {
    c->holds_slot = false;
    sl_drain_release(c->drain);
  }
}

void sl__shape_start(struct sl_conn *c) {
  const struct sl_route_config *route = c->route;
  const struct sl_http_msg *m = &c->h1.parser.msg;
  const char *method = llhttp_method_name((llhttp_method_t)m->method);
  const struct sl_http_header *key;
  bool spillable;
  uint64_t not_before = 0;
  uint8_t id[16];
  char why[128];

  c->drain = c->slot != NULL ? c->slot->drain : NULL;
  if (c->drain == NULL) {
    sl__proxy_start(c);
    return;
  }
  spillable = route->spill && (route->spill_methods & sl_method_bit(method, strlen(method))) &&
              sl_drain_can_spill(c->drain);
  if (requested_ttl(c, why, sizeof(why)) != 0 ||
      requested_not_before(c, &not_before, why, sizeof(why)) != 0 ||
      (not_before != 0 && !spillable)) {
    char body[192];
    int n;

    if (not_before != 0)
      snprintf(why, sizeof(why), "delayed delivery on a route that does not spill");
    n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", why);
    sl__conn_respond_json(c, 400, NULL, body,
                          (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1);
    return;
  }
  key = spillable ? header(c, "idempotency-key") : NULL;
  if (key != NULL) {
    int hit = sl_dedupe_get(c->srv->dedupe, key_scope(c), sl_http_msg_str(m, key->value_off),
                            key->value_len, sl_clock_wall_ms(), id);
    if (hit == SL_ELEDGER_BADKEY) {
      static const char bad[] = "{\"error\":\"Idempotency-Key must be 1 to 256 bytes\"}\n";
      sl__conn_respond_json(c, 400, NULL, bad, sizeof(bad) - 1);
      return;
    }
    if (hit == 1 && sl_drain_spilling(c->drain, id)) {
      /* The first request with this key is still on its way to disk: a 202
       * now would promise what its failure, or a power cut, could take back
       * (as draft-ietf-httpapi-idempotency-key-header answers a key in use). */
      static const char busy[] =
          "{\"error\":\"a request with this Idempotency-Key is still being stored\"}\n";
      sl__conn_respond_json(c, 409, "Retry-After: 1\r\n", busy, sizeof(busy) - 1);
      return;
    }
    if (hit == 1) {
      respond_accepted(c, id); /* a repeat: the first request's id and status */
      return;
    }
    if (sl_drain_rebuilding(c->drain)) {
      /* After an unclean stop the key may be one the spool is still telling
       * again: accepting it now could queue a request twice. */
      static const char busy[] = "{\"error\":\"Idempotency-Keys are being rebuilt from the "
                                 "spool after an unclean stop; retry shortly\"}\n";
      c->outcome = SL_OUTCOME_REJECTED;
      sl__conn_respond_json(c, 503, "Retry-After: 1\r\n", busy, sizeof(busy) - 1);
      return;
    }
  }
  if (not_before != 0) {
    spill(c, not_before);
    return;
  }
  if (!sl_drain_circuit_closed(c->drain)) {
    /* The backend cannot be reached: queue what may be queued; a live-only
     * request goes only as the probe. */
    if (spillable) {
      spill(c, 0);
      return;
    }
    /* The probe must go now: one that waited for a slot would hold the
     * probe's turn without sending anything. */
    if (sl_drain_admit(c->drain, false) != SL_SHAPER_FORWARD) {
      respond_unavailable(c, "upstream unavailable");
      return;
    }
    c->holds_slot = true;
    if (!sl_drain_circuit_allow(c->drain)) {
      respond_unavailable(c, "upstream unavailable"); /* the slot goes back at the end */
      return;
    }
    forward(c);
    return;
  }
  switch (sl_drain_admit(c->drain, spillable)) {
  case SL_SHAPER_FORWARD:
    c->holds_slot = true;
    forward(c);
    break;
  case SL_SHAPER_SPILL:
    spill(c, 0);
    break;
  case SL_SHAPER_QUEUE:
    if (route->queue_timeout_ms == 0) {
      respond_unavailable(c, "upstream busy");
      break;
    }
    c->shape = SHAPE_QUEUED;
    c->waiter.granted = on_granted;
    sl_http1_conn_arm(&c->h1, route->queue_timeout_ms);
    sl_drain_wait(c->drain, &c->waiter);
    break;
  }
}

/* Whether the current request may be spilled to its drain. */
static bool can_spill(struct sl_conn *c) {
  const char *method = llhttp_method_name((llhttp_method_t)c->h1.parser.msg.method);

  return c->drain != NULL && c->route->spill &&
         (c->route->spill_methods & sl_method_bit(method, strlen(method))) &&
         sl_drain_can_spill(c->drain);
}

bool sl__shape_spill_unsent(struct sl_conn *c, int err) {
  if (c->drain == NULL)
    return false;
  sl_drain_report(c->drain, false, c->t_upstream_start_ns);
  if (!can_spill(c) || c->head_sent)
    return false;
  sl_log_warn("upstream %s: connect failed: %s; nothing was sent, request spilled (client %s)",
              sl_drain_name(c->drain), uv_strerror(err), c->h1.client_addr);
  if (c->holds_slot) {
    /* The slot was for the live forward; the record takes its turn in the drain. */
    c->holds_slot = false;
    sl_drain_release(c->drain);
  }
  spill(c, 0);
  return true;
}

void sl__shape_forward_answered(struct sl_conn *c, const struct sl_http_msg *m) {
  const struct sl_http_header *ra;
  uint64_t retry_after_ms = 0;

  if (c->drain == NULL)
    return;
  ra = (m->status == 429 || m->status == 503) ? sl_http_msg_header(m, "retry-after") : NULL;
  if (ra != NULL)
    retry_after_ms = sl_replay_parse_retry_after(sl_http_msg_str(m, ra->value_off), ra->value_len,
                                                 sl_clock_wall_ms());
  sl_drain_live_answered(c->drain, m->status, retry_after_ms, c->t_upstream_start_ns);
}
