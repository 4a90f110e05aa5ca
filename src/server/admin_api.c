/*
 * The admin API of the shaping layer, on the admin listener:
 *
 *   GET  /admin/upstreams                          state of every upstream (with its
 *                                                  circuit: state, failures, next probe)
 *   POST /admin/upstreams/<name>/pause | resume    stop / restart replay
 *   POST /admin/upstreams/<name>/rate?value=<r>    set the rate until the next reload
 *   GET  /admin/upstreams/<name>/dead[?after=<id>&limit=<n>|?id=<id>]
 *                                                  list dead letters (oldest first), a
 *                                                  page at a time, or one with its headers
 *   POST /admin/upstreams/<name>/dead/redrive[?id=<id>]   back to the queue
 *   POST /admin/upstreams/<name>/dead/purge[?id=<id>]     delete
 *
 * All protected by the admin token when one is set. Answers are JSON. Input
 * is checked before anything changes: a query parameter an action does not
 * take is a 400 naming it (a misspelt "?ID=" on purge must never mean "all"),
 * a rate must be a finite number above 0, an unknown upstream, action or
 * dead-letter id is a 404, and a known action asked with the wrong method a
 * 405 with an Allow header. The table "describe" is what GET / lists.
 *
 * Compatibility: other clients (sluicectl, the web console, scripts) read
 * these documents, so a change only adds fields and query parameters; a
 * request without the new parameters is answered as before.
 */
#include "server_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/admin.h"
#include "sluice/clock.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/util.h"

/* The most dead letters one GET lists (a page; ?limit= asks for fewer). */
#define DEAD_LIST_MAX 1000

/* What an upstream is doing, in one word: the drain held by an operator, held by its circuit
 * (open, or half-open with a probe out), or replaying as the budget allows. */
static const char *upstream_state(const struct sl_drain_info *info) {
  if (info->paused)
    return "paused";
  if (info->circuit != SL_CIRCUIT_CLOSED)
    return "circuit_open";
  return "flowing";
}

static void upstream_json(struct sl_buf *b, struct sl_drain *d) {
  struct sl_drain_info info;
  uint64_t now_ms = sl_clock_wall_ms();

  sl_drain_info(d, &info);
  sl_buf_append_str(b, "{\"name\":");
  sl_json_append_string(b, sl_drain_name(d), strlen(sl_drain_name(d)));
  sl_buf_printf(
      b,
      ",\"rate\":%g,\"paused\":%s,\"ready\":%llu,\"delayed\":%llu,\"inflight\":%llu,"
      "\"dead\":%llu,\"backlog_bytes\":%llu,\"state\":\"%s\",\"drained_since_empty\":%llu,"
      "\"oldest_ready_at\":",
      info.rate, info.paused ? "true" : "false", (unsigned long long)info.spool.ready,
      (unsigned long long)info.spool.delayed, (unsigned long long)info.spool.inflight,
      (unsigned long long)info.spool.dead, (unsigned long long)info.spool.backlog_bytes,
      upstream_state(&info), (unsigned long long)info.drained_since_empty);
  /* The oldest ready record: when it was accepted, and how long it has waited. */
  if (info.spool.oldest_ready_ms > 0) {
    char when[SL_CLOCK_RFC3339_LEN];
    uint64_t age = now_ms > info.spool.oldest_ready_ms ? now_ms - info.spool.oldest_ready_ms : 0;

    sl_buf_printf(b, "\"%s\",\"oldest_age_seconds\":%.1f",
                  sl_clock_format(info.spool.oldest_ready_ms, true, when), (double)age / 1e3);
  } else {
    sl_buf_append_str(b, "null,\"oldest_age_seconds\":null");
  }
  sl_buf_append_str(b, ",\"eta_seconds\":");
  /* eta_seconds is null while nothing drains: paused, or the circuit not closed. */
  if (info.eta_seconds >= 0)
    sl_buf_printf(b, "%.1f", info.eta_seconds);
  else
    sl_buf_append_str(b, "null");
  sl_buf_append_str(b, ",\"hold_until\":");
  /* Until when the backend's Retry-After (on a 429 or 503) holds the drain. */
  if (info.hold_until_ms > 0) {
    char when[SL_CLOCK_RFC3339_LEN];

    sl_buf_printf(b, "\"%s\"", sl_clock_format(info.hold_until_ms, true, when));
  } else {
    sl_buf_append_str(b, "null");
  }
  /* The adaptive rate: its bounds, and how often it moved, down by cause. */
  sl_buf_append_str(b, ",\"adaptive\":");
  if (info.adaptive) {
    sl_buf_printf(b, "{\"min_rate\":%g,\"max_rate\":%g,\"increases\":%llu,\"decreases\":{",
                  info.min_rate, info.max_rate, (unsigned long long)info.rate_increases);
    for (int i = 0; i < SL_ADAPTIVE_CAUSES; i++)
      sl_buf_printf(b, "%s\"%s\":%llu", i > 0 ? "," : "", sl_adaptive_cause_name(i),
                    (unsigned long long)info.rate_decreases[i]);
    sl_buf_append_str(b, "}}");
  } else {
    sl_buf_append_str(b, "null");
  }
  sl_buf_printf(b, ",\"circuit\":{\"state\":\"%s\",\"consecutive_failures\":%u,\"next_probe_at\":",
                sl_circuit_state_name(info.circuit), info.circuit_failures);
  if (info.next_probe_ms > 0) {
    char when[SL_CLOCK_RFC3339_LEN];

    sl_buf_printf(b, "\"%s\"}}", sl_clock_format(info.next_probe_ms, true, when));
  } else {
    sl_buf_append_str(b, "null}}");
  }
}

static const char *query_check(const char *q, const char *const *allowed, char *bad,
                               size_t bad_len);

static void on_list(const struct sl_admin_request *req, struct sl_admin_response *resp, void *arg) {
  struct sl_server *srv = arg;
  const struct sl_config *cfg = srv->cfg;
  char bad[64], msg[128];

  resp->content_type = "application/json";
  if (query_check(req->query, (const char *const[]){NULL}, bad, sizeof(bad)) != NULL) {
    snprintf(msg, sizeof(msg), "unknown query parameter: %s", bad);
    sl_admin_response_error(resp, 400, msg);
    return;
  }
  sl_buf_append_str(&resp->body, "{\"upstreams\":[");
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    struct sl_drain *d = sl__server_drain(srv, cfg->upstreams[i].name);

    if (d == NULL)
      continue;
    if (i > 0)
      sl_buf_append(&resp->body, ",", 1);
    upstream_json(&resp->body, d);
  }
  sl_buf_append_str(&resp->body, "]}\n");
}

/*
 * Checks the query string <q> against the parameter names in <allowed>
 * (NULL-terminated): returns NULL when every parameter is one of them, each
 * at most once, else the first one that is not, copied into <bad> (cut to
 * <bad_len>). Names are matched exactly: "?ID=" is not "?id=".
 */
static const char *query_check(const char *q, const char *const *allowed, char *bad,
                               size_t bad_len) {
  unsigned seen = 0;

  while (*q) {
    const char *end = strchr(q, '&');
    size_t part = end ? (size_t)(end - q) : strlen(q);
    const char *eq = memchr(q, '=', part);
    size_t name_len = eq ? (size_t)(eq - q) : part;
    size_t i;

    for (i = 0; allowed[i] != NULL; i++)
      if (strlen(allowed[i]) == name_len && memcmp(allowed[i], q, name_len) == 0)
        break;
    if (allowed[i] == NULL || (seen & (1u << i))) {
      snprintf(bad, bad_len, "%.*s", (int)name_len, q);
      return bad;
    }
    seen |= 1u << i;
    q += part + (end ? 1 : 0);
  }
  return NULL;
}

/* The value of query parameter <name> in <q>, copied into <out>; -1 if absent
 * or longer than <len> - 1. */
static int query_param(const char *q, const char *name, char *out, size_t len) {
  size_t n = strlen(name);

  while (*q) {
    const char *end = strchr(q, '&');
    size_t part = end ? (size_t)(end - q) : strlen(q);

    if (part > n && strncmp(q, name, n) == 0 && q[n] == '=') {
      if (part - n - 1 >= len)
        return -1;
      memcpy(out, q + n + 1, part - n - 1);
      out[part - n - 1] = '\0';
      return 0;
    }
    q += part + (end ? 1 : 0);
  }
  return -1;
}

/* Whether query string <q> has parameter <name>, with a value or without. */
static bool query_has(const char *q, const char *name) {
  size_t n = strlen(name);

  while (*q) {
    const char *end = strchr(q, '&');
    size_t part = end ? (size_t)(end - q) : strlen(q);

    if (part >= n && strncmp(q, name, n) == 0 && (part == n || q[n] == '='))
      return true;
    q += part + (end ? 1 : 0);
  }
  return false;
}

/*
 * Parses an admin rate: a finite number of requests per second above 0 and
 * at most 1e9. Returns 0 and sets <*rate>, or -1. 0 is refused (it would
 * lift the limit, not stop the drain: that is what pause is for), and so are
 * nan and inf, which strtod takes.
 */
static int parse_rate(const char *value, double *rate) {
  char *end;
  double r;

  if (value[0] == '\0')
    return -1;
  r = strtod(value, &end);
  if (*end != '\0' || !isfinite(r) || r <= 0 || r > 1e9)
    return -1;
  *rate = r;
  return 0;
}

/*
 * One listing of the dead store: every dead letter (<one> NULL), from the one
 * after <after> (when not NULL) on, at most <limit>; or only the one whose id
 * is <one>, with its headers.
 */
struct dead_list {
  struct sl_buf *b;
  struct sl_ledger *ledger; /* for the time each became dead; may be NULL */
  const uint8_t *after;     /* list those after this id; NULL: from the first */
  const uint8_t *one;       /* list this id only, in full; NULL: a page */
  bool skipping;            /* still before <after> */
  unsigned limit, n;
  bool more;           /* a dead letter was left out by <limit> */
  uint8_t last_id[16]; /* the last one listed: where the next page starts */
  uint64_t now_ms;
};

/* Appends the header block <fields> (<len> bytes of "Name: value\r\n" lines, as the spool
 * keeps them) to <b> as a JSON array of [name, value] pairs. */
static void append_headers(struct sl_buf *b, const char *fields, size_t len) {
  const char *p = fields, *end = fields + len;
  bool first = true;

  sl_buf_append_str(b, "[");
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    const char *v;

    if (line_end > p && line_end[-1] == '\r')
      line_end--;
    if (colon != NULL) {
      v = colon + 1;
      while (v < line_end && (*v == ' ' || *v == '\t'))
        v++;
      sl_buf_append_str(b, first ? "[" : ",[");
      sl_json_append_string(b, p, (size_t)(colon - p));
      sl_buf_append_str(b, ",");
      sl_json_append_string(b, v, (size_t)(line_end - v));
      sl_buf_append_str(b, "]");
      first = false;
    }
    p = eol ? eol + 1 : end;
  }
  sl_buf_append_str(b, "]");
}

static int add_dead(void *arg, const struct sl_spool_record *rec) {
  struct dead_list *l = arg;
  char id[SL_LEDGER_ID_HEX + 1], when[SL_CLOCK_RFC3339_LEN];
  struct sl_ledger_entry e;
  unsigned status = sl_drain_error_status(rec->error, rec->error_len);

  if (l->one != NULL && memcmp(rec->id, l->one, 16) != 0)
    return 0;
  if (l->skipping) {
    l->skipping = memcmp(rec->id, l->after, 16) != 0;
    return 0;
  }
  if (l->n >= l->limit) {
    l->more = true;
    return 1;
  }
  if (l->n > 0)
    sl_buf_append(l->b, ",", 1);
  sl_ledger_id_format(rec->id, id);
  sl_buf_printf(l->b, "{\"id\":\"%s\",\"attempts\":%u,\"enqueued_at\":\"%s\",\"method\":", id,
                rec->attempts + 1, /* the record counts those before the last one */
                sl_clock_format(rec->enqueue_ms, true, when));
  sl_json_append_string(l->b, rec->method, rec->method_len);
  sl_buf_append_str(l->b, ",\"target\":");
  sl_json_append_string(l->b, rec->target, rec->target_len);
  sl_buf_append_str(l->b, ",\"error\":");
  sl_json_append_string(l->b, rec->error ? rec->error : "", rec->error ? rec->error_len : 0);
  /* Added for filters and the full view: the backend's last status (null when the last
   * attempt got no answer), the age, when it became dead (known while the ledger holds its
   * status), the body's size. */
  if (status != 0)
    sl_buf_printf(l->b, ",\"status\":%u", status);
  else
    sl_buf_append_str(l->b, ",\"status\":null");
  sl_buf_printf(l->b, ",\"age_seconds\":%.1f,\"dead_at\":",
                l->now_ms > rec->enqueue_ms ? (double)(l->now_ms - rec->enqueue_ms) / 1e3 : 0.0);
  if (l->ledger != NULL && sl_ledger_get(l->ledger, rec->id, &e) == 1 &&
      (e.state == SL_LEDGER_DEAD || e.state == SL_LEDGER_EXPIRED) && e.updated_ms > 0)
    sl_buf_printf(l->b, "\"%s\"", sl_clock_format(e.updated_ms, true, when));
  else
    sl_buf_append_str(l->b, "null");
  sl_buf_printf(l->b, ",\"body_bytes\":%zu", rec->body_len);
  if (l->one != NULL) {
    sl_buf_append_str(l->b, ",\"headers\":");
    append_headers(l->b, rec->headers, rec->headers_len);
  }
  sl_buf_append(l->b, "}", 1);
  memcpy(l->last_id, rec->id, 16);
  l->n++;
  return l->one != NULL; /* one id: stop there */
}

/* Parses ?limit=: a whole number from 1 to DEAD_LIST_MAX. Returns 0 or -1. */
static int parse_limit(const char *value, unsigned *limit) {
  char *end;
  unsigned long n;

  if (value[0] < '0' || value[0] > '9')
    return -1;
  n = strtoul(value, &end, 10);
  if (*end != '\0' || n < 1 || n > DEAD_LIST_MAX)
    return -1;
  *limit = (unsigned)n;
  return 0;
}

/*
 * GET /admin/upstreams/<name>/dead: a page of dead letters, oldest first, with
 * "next" (the id to give as ?after= for the next page, null after the last),
 * or with ?id= the one dead letter in full (404 if there is none).
 */
static void list_dead(struct sl_server *srv, struct sl_drain *d, const char *query,
                      struct sl_admin_response *resp) {
  struct dead_list l = {.b = &resp->body, .ledger = srv->ledger, .limit = DEAD_LIST_MAX};
  uint8_t after[16], one[16];
  char value[64], next[SL_LEDGER_ID_HEX + 1];
  int rc = 0;

  if (query_has(query, "id")) {
    if (query_param(query, "id", value, sizeof(value)) != 0 ||
        sl_ledger_id_parse(value, strlen(value), one) != 0) {
      sl_admin_response_error(resp, 400, "id must be 32 hex digits");
      return;
    }
    if (query_has(query, "after") || query_has(query, "limit")) {
      sl_admin_response_error(resp, 400, "?id= lists one dead letter: give it alone");
      return;
    }
    l.one = one;
  }
  if (query_has(query, "after")) {
    if (query_param(query, "after", value, sizeof(value)) != 0 ||
        sl_ledger_id_parse(value, strlen(value), after) != 0) {
      sl_admin_response_error(resp, 400, "after must be 32 hex digits (the \"next\" of a page)");
      return;
    }
    l.after = after;
    l.skipping = true;
  }
  if (query_has(query, "limit") && (query_param(query, "limit", value, sizeof(value)) != 0 ||
                                    parse_limit(value, &l.limit) != 0)) {
    sl_admin_response_error(resp, 400, "limit must be a whole number from 1 to 1000");
    return;
  }
  l.now_ms = sl_clock_wall_ms();
  sl_buf_append_str(&resp->body, "{\"dead\":[");
  if (sl_drain_spool(d) != NULL)
    rc = sl_spool_dead_list(sl_drain_spool(d), add_dead, &l);
  if (rc != 0) {
    sl_buf_reset(&resp->body);
    sl_admin_response_error(resp, 500, sl_strerror(rc));
    return;
  }
  if (l.one != NULL && l.n == 0) {
    sl_buf_reset(&resp->body);
    sl_admin_response_error(resp, 404, "no dead letter with that id");
    return;
  }
  if (l.skipping) {
    /* The page before ended at a dead letter that has gone since (redriven, purged): where
     * the next page starts is not known any more. */
    sl_buf_reset(&resp->body);
    sl_admin_response_error(resp, 404,
                            "no dead letter with the id given as after (redriven or purged "
                            "since): list again from the start");
    return;
  }
  sl_buf_append_str(&resp->body, "],\"next\":");
  if (l.more) {
    sl_ledger_id_format(l.last_id, next);
    sl_buf_printf(&resp->body, "\"%s\"}\n", next);
  } else {
    sl_buf_append_str(&resp->body, "null}\n");
  }
}

/* The actions below /admin/upstreams/<name>/ and the methods each takes. */
static const struct {
  const char *action;
  unsigned methods;
} actions[] = {
    {"pause", SL_METHOD_POST}, {"resume", SL_METHOD_POST},       {"rate", SL_METHOD_POST},
    {"dead", SL_METHOD_GET},   {"dead/redrive", SL_METHOD_POST}, {"dead/purge", SL_METHOD_POST},
};

static const char *const no_params[] = {NULL};
static const char *const rate_params[] = {"value", NULL};
static const char *const id_params[] = {"id", NULL};
static const char *const list_params[] = {"id", "after", "limit", NULL};

/* 405 for <action>, with an Allow header naming <methods>. */
static void wrong_method(struct sl_admin_response *resp, unsigned methods) {
  sl_admin_response_error(resp, 405, "method not allowed");
  sl_admin_response_header(resp, "Allow", (methods & SL_METHOD_GET) ? "GET, HEAD" : "POST");
}

/* /admin/upstreams/<name>/<action>: everything below the list. */
static void on_upstream(const struct sl_admin_request *req, struct sl_admin_response *resp,
                        void *arg) {
  struct sl_server *srv = arg;
  static const char base[] = "/admin/upstreams/";
  const char *name = req->path + sizeof(base) - 1;
  const char *slash = strchr(name, '/');
  char uname[128], value[64], bad[64], msg[128];
  const char *action;
  const char *const *params;
  struct sl_drain *d;
  uint8_t id[16];
  size_t a;
  int rc;

  resp->content_type = "application/json";
  if (slash == NULL || (size_t)(slash - name) >= sizeof(uname)) {
    sl_admin_response_error(resp, 404, "use /admin/upstreams/<name>/<action>");
    return;
  }
  memcpy(uname, name, (size_t)(slash - name));
  uname[slash - name] = '\0';
  action = slash + 1;
  for (a = 0; a < sl_countof(actions); a++)
    if (strcmp(action, actions[a].action) == 0)
      break;
  if (a == sl_countof(actions)) {
    sl_admin_response_error(resp, 404, "unknown action (GET / lists the endpoints)");
    return;
  }
  if (!(req->method &
        (actions[a].methods | ((actions[a].methods & SL_METHOD_GET) ? SL_METHOD_HEAD : 0)))) {
    wrong_method(resp, actions[a].methods);
    return;
  }
  params = strcmp(action, "rate") == 0        ? rate_params
           : strcmp(action, "dead") == 0      ? list_params
           : strncmp(action, "dead/", 5) == 0 ? id_params
                                              : no_params;
  if (query_check(req->query, params, bad, sizeof(bad)) != NULL) {
    snprintf(msg, sizeof(msg), "unknown or repeated query parameter: %s", bad);
    sl_admin_response_error(resp, 400, msg);
    return;
  }
  d = sl__server_drain(srv, uname);
  if (d == NULL) {
    sl_admin_response_error(resp, 404, "no such upstream");
    return;
  }
  if (strcmp(action, "pause") == 0) {
    sl_drain_pause(d, true);
  } else if (strcmp(action, "resume") == 0) {
    sl_drain_pause(d, false);
  } else if (strcmp(action, "rate") == 0) {
    double rate;

    if (query_param(req->query, "value", value, sizeof(value)) != 0 ||
        parse_rate(value, &rate) != 0) {
      sl_admin_response_error(resp, 400,
                              "give the rate as ?value=<requests per second>, a finite number "
                              "above 0 (to stop the drain, use pause)");
      return;
    }
    sl_drain_set_rate(d, rate);
  } else if (strcmp(action, "dead") == 0) {
    list_dead(srv, d, req->query, resp);
    return;
  } else {
    /* The query passed query_check: if there is one, it is the id. */
    bool one = req->query[0] != '\0';
    bool redrive = action[5] == 'r';

    if (one && (query_param(req->query, "id", value, sizeof(value)) != 0 ||
                sl_ledger_id_parse(value, strlen(value), id) != 0)) {
      sl_admin_response_error(resp, 400, "id must be 32 hex digits");
      return;
    }
    rc = sl_drain_dead_op(d, redrive, one ? id : NULL);
    if (rc == SL_ESPOOL_NOTFOUND) {
      sl_admin_response_error(resp, 404, "no dead letter with that id");
      return;
    }
    if (rc == SL_ESPOOL_CLOSED) {
      sl_admin_response_error(resp, 409, "this upstream has no spool");
      return;
    }
    if (rc != 0) {
      sl_admin_response_error(resp, 500, sl_strerror(rc));
      return;
    }
    resp->status = 202;
    sl_buf_printf(&resp->body, "{\"%s\":\"%s\"}\n", redrive ? "redrive" : "purge",
                  one ? value : "all");
    return;
  }
  upstream_json(&resp->body, d);
  sl_buf_append(&resp->body, "\n", 1);
}

/* The endpoints as GET / lists them. */
static const struct {
  unsigned methods;
  const char *path, *what;
} describe[] = {
    {SL_METHOD_GET, "/admin/upstreams", "state of every upstream"},
    {SL_METHOD_POST, "/admin/upstreams/<name>/pause", "stop replaying the backlog"},
    {SL_METHOD_POST, "/admin/upstreams/<name>/resume", "replay the backlog again"},
    {SL_METHOD_POST, "/admin/upstreams/<name>/rate?value=<r>",
     "set the rate (requests/s, finite, above 0) until the next reload"},
    {SL_METHOD_GET, "/admin/upstreams/<name>/dead[?after=<id>&limit=<n>]",
     "list dead letters, oldest first, up to 1000 a page (\"next\": the after of the next page)"},
    {SL_METHOD_GET, "/admin/upstreams/<name>/dead?id=<id>",
     "one dead letter in full, with its request headers"},
    {SL_METHOD_POST, "/admin/upstreams/<name>/dead/redrive[?id=<id>]",
     "queue one dead letter, or all, again"},
    {SL_METHOD_POST, "/admin/upstreams/<name>/dead/purge[?id=<id>]",
     "delete one dead letter, or all"},
};

int sl_server_register_admin(struct sl_server *srv, struct sl_admin *admin) {
  int rc =
      sl_admin_route(admin, SL_METHOD_GET, "/admin/upstreams", SL_ADMIN_PROTECTED, on_list, srv);

  /* Every method reaches the handler, which knows which action takes which
   * and answers 405 with the right Allow header. */
  if (rc == 0)
    rc = sl_admin_route(admin,
                        SL_METHOD_GET | SL_METHOD_POST | SL_METHOD_PUT | SL_METHOD_PATCH |
                            SL_METHOD_DELETE | SL_METHOD_OPTIONS,
                        "/admin/upstreams/", SL_ADMIN_PROTECTED, on_upstream, srv);
  for (size_t i = 0; rc == 0 && i < sl_countof(describe); i++)
    rc = sl_admin_describe(admin, describe[i].methods, describe[i].path, SL_ADMIN_PROTECTED,
                           describe[i].what);
  return rc;
}
