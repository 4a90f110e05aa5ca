/*
 * The admin API of the shaping layer, on the admin listener:
 *
 *   GET  /admin/upstreams                          state of every upstream
 *   POST /admin/upstreams/<name>/pause | resume    stop / restart replay
 *   POST /admin/upstreams/<name>/rate?value=<r>    set the rate until the next reload
 *   GET  /admin/upstreams/<name>/dead              list dead letters (oldest first)
 *   POST /admin/upstreams/<name>/dead/redrive[?id=<id>]   back to the queue
 *   POST /admin/upstreams/<name>/dead/purge[?id=<id>]     delete
 *
 * All protected by the admin token when one is set. Answers are JSON.
 */
#include "conn_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/admin.h"
#include "sluice/log.h"

#define DEAD_LIST_MAX 1000

static void json_string(struct sl_buf *b, const char *s, size_t len) {
  sl_buf_append(b, "\"", 1);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];

    if (ch == '"' || ch == '\\')
      sl_buf_printf(b, "\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f)
      sl_buf_printf(b, "\\u%04x", ch);
    else
      sl_buf_append(b, s + i, 1);
  }
  sl_buf_append(b, "\"", 1);
}

static void upstream_json(struct sl_buf *b, struct sl_drain *d) {
  struct sl_drain_info info;

  sl_drain_info(d, &info);
  sl_buf_append_str(b, "{\"name\":");
  json_string(b, sl_drain_name(d), strlen(sl_drain_name(d)));
  sl_buf_printf(b,
                ",\"rate\":%g,\"paused\":%s,\"ready\":%llu,\"delayed\":%llu,\"inflight\":%llu,"
                "\"dead\":%llu,\"backlog_bytes\":%llu,\"eta_seconds\":",
                info.rate, info.paused ? "true" : "false", (unsigned long long)info.spool.ready,
                (unsigned long long)info.spool.delayed, (unsigned long long)info.spool.inflight,
                (unsigned long long)info.spool.dead, (unsigned long long)info.spool.backlog_bytes);
  if (info.eta_seconds >= 0)
    sl_buf_printf(b, "%.1f}", info.eta_seconds);
  else
    sl_buf_append_str(b, "null}");
}

static void on_list(const struct sl_admin_request *req, struct sl_admin_response *resp, void *arg) {
  struct sl_server *srv = arg;
  const struct sl_config *cfg = srv->cfg;

  (void)req;
  resp->content_type = "application/json";
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

/* The value of query parameter <name> in <q>, copied into <out>; -1 if absent. */
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

struct dead_list {
  struct sl_buf *b;
  unsigned n;
};

static int add_dead(void *arg, const struct sl_spool_record *rec) {
  struct dead_list *l = arg;
  char id[SL_LEDGER_ID_HEX + 1];

  if (l->n > 0)
    sl_buf_append(l->b, ",", 1);
  sl_ledger_id_format(rec->id, id);
  {
    time_t t = (time_t)(rec->enqueue_ms / 1000);
    struct tm tm;
    char when[40];

    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    sl_buf_printf(l->b,
                  "{\"id\":\"%s\",\"attempts\":%u,\"enqueued_at\":\"%s.%03uZ\",\"method\":", id,
                  rec->attempts + 1, /* the record counts those before the last one */
                  when, (unsigned)(rec->enqueue_ms % 1000));
  }
  json_string(l->b, rec->method, rec->method_len);
  sl_buf_append_str(l->b, ",\"target\":");
  json_string(l->b, rec->target, rec->target_len);
  sl_buf_append_str(l->b, ",\"error\":");
  json_string(l->b, rec->error ? rec->error : "", rec->error ? rec->error_len : 0);
  sl_buf_append(l->b, "}", 1);
  return ++l->n >= DEAD_LIST_MAX;
}

static void on_dead_op_done(void *arg, int status) {
  struct sl_drain *d = arg;

  if (status != 0 && status != SL_ESPOOL_NOTFOUND)
    sl_log_warn("spool %s: dead-letter operation failed: %s", sl_drain_name(d),
                sl_spool_strerror(status));
  sl_drain_kick(d); /* redriven records are ready now */
}

/* /admin/upstreams/<name>/<action>: everything below the list. */
static void on_upstream(const struct sl_admin_request *req, struct sl_admin_response *resp,
                        void *arg) {
  struct sl_server *srv = arg;
  static const char base[] = "/admin/upstreams/";
  const char *name = req->path + sizeof(base) - 1;
  const char *slash = strchr(name, '/');
  char uname[128], value[64];
  const char *action;
  struct sl_drain *d;
  uint8_t id[16];
  int rc;

  resp->content_type = "application/json";
  if (slash == NULL || (size_t)(slash - name) >= sizeof(uname)) {
    sl_admin_response_error(resp, 404, "use /admin/upstreams/<name>/<action>");
    return;
  }
  memcpy(uname, name, (size_t)(slash - name));
  uname[slash - name] = '\0';
  action = slash + 1;
  d = sl__server_drain(srv, uname);
  if (d == NULL) {
    sl_admin_response_error(resp, 404, "no such upstream");
    return;
  }
  if (req->method == SL_METHOD_POST && strcmp(action, "pause") == 0) {
    sl_drain_pause(d, true);
  } else if (req->method == SL_METHOD_POST && strcmp(action, "resume") == 0) {
    sl_drain_pause(d, false);
  } else if (req->method == SL_METHOD_POST && strcmp(action, "rate") == 0) {
    char *end;
    double rate;

    if (query_param(req->query, "value", value, sizeof(value)) != 0 ||
        (rate = strtod(value, &end), *end != '\0') || rate < 0 || rate > 1e9) {
      sl_admin_response_error(resp, 400, "give the rate as ?value=<requests per second>");
      return;
    }
    sl_drain_set_rate(d, rate);
  } else if (strcmp(action, "dead") == 0 && req->method == SL_METHOD_GET) {
    struct dead_list l = {&resp->body, 0};

    if (sl_drain_spool(d) == NULL) {
      sl_buf_append_str(&resp->body, "{\"dead\":[]}\n");
      return;
    }
    sl_buf_append_str(&resp->body, "{\"dead\":[");
    rc = sl_spool_dead_list(sl_drain_spool(d), add_dead, &l);
    sl_buf_append_str(&resp->body, "]}\n");
    if (rc != 0) {
      sl_buf_reset(&resp->body);
      sl_admin_response_error(resp, 500, sl_spool_strerror(rc));
    }
    return;
  } else if (req->method == SL_METHOD_POST &&
             (strcmp(action, "dead/redrive") == 0 || strcmp(action, "dead/purge") == 0)) {
    bool one = query_param(req->query, "id", value, sizeof(value)) == 0;
    bool redrive = action[5] == 'r';

    if (one && sl_ledger_id_parse(value, strlen(value), id) != 0) {
      sl_admin_response_error(resp, 400, "id must be 32 hex digits");
      return;
    }
    if (sl_drain_spool(d) == NULL) {
      sl_admin_response_error(resp, 409, "this upstream has no spool");
      return;
    }
    rc = redrive ? sl_spool_dead_redrive(sl_drain_spool(d), one ? id : NULL, on_dead_op_done, d)
                 : sl_spool_dead_purge(sl_drain_spool(d), one ? id : NULL, on_dead_op_done, d);
    if (rc != 0) {
      sl_admin_response_error(resp, 500, sl_spool_strerror(rc));
      return;
    }
    resp->status = 202;
    sl_buf_printf(&resp->body, "{\"%s\":\"%s\"}\n", redrive ? "redrive" : "purge",
                  one ? value : "all");
    return;
  } else {
    sl_admin_response_error(resp, 404, "unknown action");
    return;
  }
  upstream_json(&resp->body, d);
  sl_buf_append(&resp->body, "\n", 1);
}

int sl_server_register_admin(struct sl_server *srv, struct sl_admin *admin) {
  int rc =
      sl_admin_route(admin, SL_METHOD_GET, "/admin/upstreams", SL_ADMIN_PROTECTED, on_list, srv);

  if (rc == 0)
    rc = sl_admin_route(admin, SL_METHOD_GET | SL_METHOD_POST, "/admin/upstreams/",
                        SL_ADMIN_PROTECTED, on_upstream, srv);
  return rc;
}
