/*
 * A call to the admin API or to the client listener: the request through http.c, the answer
 * as JSON (jansson), and every way it can go wrong turned into one line on stderr and the
 * exit status sluicectl(1) gives it. The commands only read answers that went well, and
 * name what a 404 means for them ("no upstream named X").
 *
 * @thread main
 */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sl_ctl_error(const char *fmt, ...) {
  va_list ap;

  fputs("sluicectl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

const char *sl_ctl_doc_error(const json_t *doc, const char *fallback) {
  const char *e = json_string_value(json_object_get(doc, "error"));

  return e != NULL && e[0] != '\0' ? e : fallback;
}

bool sl_ctl_path_segment_ok(const char *name) {
  if (name[0] == '\0')
    return false;
  for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
    if (*p <= ' ' || *p >= 0x7f || strchr("/?#%\"<>\\^`{|}", *p) != NULL)
      return false;
  return true;
}

/* Says why an exchange with <h> failed with <rc>. */
static void report_transport(const struct sl_ctl_http *h, const char *where, int rc) {
  if (rc == UV_ETIMEDOUT) {
    sl_ctl_error("no answer from %s %s within %llu ms (--timeout)", where, h->host,
                 (unsigned long long)h->timeout_ms);
  } else if (h->error_what != NULL && strcmp(h->error_what, "connect") == 0) {
    sl_ctl_error("cannot connect to %s %s: %s", where, h->host, uv_strerror(rc));
  } else if (rc == UV_EPROTO) {
    sl_ctl_error("%s %s did not answer in HTTP: is it sluice's?", where, h->host);
  } else {
    sl_ctl_error("lost the connection to %s %s: %s", where, h->host, uv_strerror(rc));
  }
}

int sl_ctl_call(struct sl_ctl *ctl, const struct sl_ctl_call *call, json_t **doc,
                unsigned *status) {
  struct sl_ctl_http *h = call->on_listener ? &ctl->client : &ctl->admin;
  const char *where = call->on_listener ? "the listener" : "the admin listener";
  const char *token = call->on_listener && !call->token ? NULL : ctl->target->token;
  struct sl_ctl_response resp;
  json_error_t jerr;
  int rc;

  *doc = NULL;
  sl_ctl_response_init(&resp);
  rc = sl_ctl_http_request(h, call->method, call->target, token, &resp);
  if (rc != 0) {
    sl_ctl_response_dispose(&resp);
    if (rc == UV_ECANCELED || ctl->interrupted)
      return SL_CTL_EINTERRUPTED;
    report_transport(h, where, rc);
    return SL_CTL_EUNREACHABLE;
  }
  if (status != NULL)
    *status = resp.status;
  *doc = json_loadb(resp.body.base ? resp.body.base : "", resp.body.len, 0, &jerr);
  sl_ctl_response_dispose(&resp);
  if (resp.status == 401) {
    if (ctl->target->token == NULL)
      sl_ctl_error("%s %s answered 401: token missing or wrong (none was given: set --token, "
                   "$" SL_CTL_TOKEN_ENV " or admin.token in the config)",
                   where, h->host);
    else
      sl_ctl_error("%s %s answered 401: token missing or wrong (the one from %s)", where, h->host,
                   ctl->target->token_from);
    json_decref(*doc);
    *doc = NULL;
    return SL_CTL_EAUTH;
  }
  if (*doc == NULL) {
    sl_ctl_error("%s %s answered %u with something that is not JSON: is it sluice's?", where,
                 h->host, resp.status);
    return SL_CTL_EUNREACHABLE;
  }
  if (call->own_errors || (resp.status >= 200 && resp.status < 300))
    return 0;
  if (resp.status == 404) {
    if (call->not_found != NULL)
      sl_ctl_error("%s", call->not_found);
    else
      sl_ctl_error("%s (404 from %s %s)", sl_ctl_doc_error(*doc, "not found"), where, h->host);
    rc = SL_CTL_ENOTFOUND;
  } else {
    sl_ctl_error("%s (%u from %s %s)", sl_ctl_doc_error(*doc, "failed"), resp.status, where,
                 h->host);
    rc = SL_CTL_EFAILED;
  }
  json_decref(*doc);
  *doc = NULL;
  return rc;
}

int sl_ctl_upstreams(struct sl_ctl *ctl, json_t **list) {
  const struct sl_ctl_call call = {.method = "GET", .target = "/admin/upstreams"};
  int rc = sl_ctl_call(ctl, &call, list, NULL);

  if (rc == 0 && !json_is_array(json_object_get(*list, "upstreams"))) {
    sl_ctl_error("the admin listener %s answered GET /admin/upstreams without \"upstreams\"",
                 ctl->admin.host);
    json_decref(*list);
    *list = NULL;
    return SL_CTL_EUNREACHABLE;
  }
  return rc;
}

void sl_ctl_print_json(const struct sl_ctl *ctl, const json_t *doc) {
  json_dumpf(doc, stdout,
             (ctl->tty && !ctl->args->watch ? JSON_INDENT(2) : JSON_COMPACT) |
                 JSON_REAL_PRECISION(15));
  fputc('\n', stdout);
  fflush(stdout);
}
