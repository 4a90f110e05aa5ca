/*
 * Header rules for proxying: which headers cross sluice, which it adds, and
 * how the message is framed anew on the other side (RFC 9110 7.6, RFC 9112 6).
 */
#include "sluice/http.h"

#include <string.h>
#include <strings.h>

#include "sluice/util.h"

struct name {
  const char *s;
  size_t len;
};
#define NAME(s)                                                                                    \
  { s, sizeof(s) - 1 }

/* Dropped in both directions, plus any header a Connection header names. */
static const struct name hop_by_hop[] = {
    NAME("connection"),       NAME("keep-alive"),        NAME("te"),
    NAME("trailer"),          NAME("transfer-encoding"), NAME("upgrade"),
    NAME("proxy-connection"),
};

/* Dropped from requests because sluice answers or re-frames them itself. */
static const struct name request_own[] = {
    NAME("content-length"),
    NAME("expect"),
    NAME("x-forwarded-proto"),
    NAME("x-forwarded-host"),
};

static bool name_in(const char *n, size_t len, const struct name *set, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (set[i].len == len && strncasecmp(n, set[i].s, len) == 0)
      return true;
  }
  return false;
}

bool sl_http_is_hop_by_hop(const char *name, size_t len) {
  if (len >= 6 && strncasecmp(name, "proxy-", 6) == 0)
    return true;
  return name_in(name, len, hop_by_hop, sl_countof(hop_by_hop));
}

/* Whether some Connection header of <m> lists <name> as a token. */
static bool named_by_connection(const struct sl_http_msg *m, const char *name, size_t len) {
  return sl_http_msg_has_token(m, "connection", name, len);
}

static bool has_connection_header(const struct sl_http_msg *m) { return m->n_connection > 0; }

/* Whether header <h> of <m> goes through to the other side at all. */
static bool passes(const struct sl_http_msg *m, const struct sl_http_header *h, bool conn_hdr) {
  const char *n = m->raw.base + h->name_off;

  if (sl_http_is_hop_by_hop(n, h->name_len))
    return false;
  if (h->name_len == 14 && strncasecmp(n, "content-length", 14) == 0)
    return false;
  return !conn_hdr || !named_by_connection(m, n, h->name_len);
}

static int append_header(struct sl_buf *out, const struct sl_http_msg *m,
                         const struct sl_http_header *h) {
  if (sl_buf_reserve(out, h->name_len + h->value_len + 4) != 0)
    return -1;
  memcpy(out->base + out->len, m->raw.base + h->name_off, h->name_len);
  out->len += h->name_len;
  out->base[out->len++] = ':';
  out->base[out->len++] = ' ';
  memcpy(out->base + out->len, m->raw.base + h->value_off, h->value_len);
  out->len += h->value_len;
  out->base[out->len++] = '\r';
  out->base[out->len++] = '\n';
  return 0;
}

/* Appends "<name>: <v>\r\n". */
static int append_field(struct sl_buf *out, const char *name, size_t name_len, const char *v,
                        size_t v_len) {
  int r = 0;

  r |= sl_buf_append(out, name, name_len);
  r |= sl_buf_append(out, ": ", 2);
  r |= sl_buf_append(out, v, v_len);
  r |= sl_buf_append(out, "\r\n", 2);
  return r;
}

#define FIELD(out, name, v, vlen) append_field(out, name, sizeof(name) - 1, v, vlen)

static const char *value_of(const struct sl_http_msg *m, const struct sl_http_header *h) {
  return m->raw.base + h->value_off;
}

/* "1.1 sluice" for the protocol version of <m>. */
static const char *via_token(const struct sl_http_msg *m) {
  return m->http_minor == 0 ? "1.0 sluice" : "1.1 sluice";
}

static bool name_eq(const struct sl_http_msg *m, const struct sl_http_header *h, const char *s,
                    size_t len) {
  return h->name_len == len && strncasecmp(m->raw.base + h->name_off, s, len) == 0;
}

/*
 * Appends one "<name>: v1, v2, ..., <last>" field that joins the values of
 * every <name> header of <m> (a list-valued header may arrive on several
 * lines, RFC 9110 5.3) and then <last>.
 */
static int append_joined(struct sl_buf *out, const struct sl_http_msg *m, const char *name,
                         size_t name_len, const char *last, size_t last_len) {
  int r = 0;

  r |= sl_buf_append(out, name, name_len);
  r |= sl_buf_append(out, ": ", 2);
  for (size_t i = 0; i < m->n_headers; i++) {
    const struct sl_http_header *h = &m->headers[i];

    if (!name_eq(m, h, name, name_len) || h->value_len == 0)
      continue;
    r |= sl_buf_append(out, value_of(m, h), h->value_len);
    r |= sl_buf_append(out, ", ", 2);
  }
  r |= sl_buf_append(out, last, last_len);
  r |= sl_buf_append(out, "\r\n", 2);
  return r;
}

/* Client-sent X-Sluice-* headers are sluice's own vocabulary (directives to
 * sluice, provenance it adds on replay): they never reach a backend as sent. */
static bool is_sluice_header(const struct sl_http_msg *m, const struct sl_http_header *h) {
  return h->name_len >= 9 && strncasecmp(m->raw.base + h->name_off, "x-sluice-", 9) == 0;
}

int sl_http_write_request_fields(struct sl_buf *out, const struct sl_http_msg *req,
                                 const struct sl_http_forward *fwd) {
  const struct sl_http_header *host = NULL;
  bool conn_hdr = has_connection_header(req);
  int r = 0;

  for (size_t i = 0; i < req->n_headers && r == 0; i++) {
    const struct sl_http_header *h = &req->headers[i];

    if (!passes(req, h, conn_hdr) || is_sluice_header(req, h) ||
        name_in(req->raw.base + h->name_off, h->name_len, request_own, sl_countof(request_own)))
      continue;
    /* These two are merged with what sluice adds, so they are written below. */
    if (name_eq(req, h, "x-forwarded-for", 15) || name_eq(req, h, "via", 3))
      continue;
    if (host == NULL && name_eq(req, h, "host", 4))
      host = h;
    r |= append_header(out, req, h);
  }
  if (host == NULL)
    r |= FIELD(out, "Host", fwd->upstream_host, strlen(fwd->upstream_host));
  r |= append_joined(out, req, "X-Forwarded-For", 15, fwd->client_addr, strlen(fwd->client_addr));
  r |= FIELD(out, "X-Forwarded-Proto", fwd->proto, strlen(fwd->proto));
  if (host != NULL)
    r |= FIELD(out, "X-Forwarded-Host", value_of(req, host), host->value_len);
  r |= append_joined(out, req, "Via", 3, via_token(req), 10);
  return r ? -1 : 0;
}

bool sl_http_fields_get(const char *fields, size_t len, const char *name, const char **value,
                        size_t *value_len) {
  size_t name_len = strlen(name);
  const char *end = fields + len;

  for (const char *line = fields; line < end;) {
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    const char *stop = eol != NULL ? eol : end;

    if ((size_t)(stop - line) > name_len && line[name_len] == ':' &&
        strncasecmp(line, name, name_len) == 0) {
      const char *v = line + name_len + 1;

      while (v < stop && (*v == ' ' || *v == '\t'))
        v++;
      if (stop > v && stop[-1] == '\r')
        stop--;
      *value = v;
      *value_len = (size_t)(stop - v);
      return true;
    }
    line = eol != NULL ? eol + 1 : end;
  }
  return false;
}

int sl_http_write_request_line(struct sl_buf *out, const char *method, size_t method_len,
                               const char *target, size_t target_len) {
  int r = 0;

  r |= sl_buf_append(out, method, method_len);
  r |= sl_buf_append(out, " ", 1);
  r |= sl_buf_append(out, target, target_len);
  r |= sl_buf_append(out, " HTTP/1.1\r\n", 11);
  return r ? -1 : 0;
}

int sl_http_write_content_length(struct sl_buf *out, const char *method, size_t method_len,
                                 uint64_t body_len) {
  int r = 0;

  /* A body always travels with a Content-Length: sluice has read it whole. Methods
   * whose requests usually carry one get an explicit 0 as RFC 9110 8.6 asks. */
  if (body_len > 0 || (method_len == 4 && memcmp(method, "POST", 4) == 0) ||
      (method_len == 3 && memcmp(method, "PUT", 3) == 0) ||
      (method_len == 5 && memcmp(method, "PATCH", 5) == 0)) {
    r |= sl_buf_append(out, "Content-Length: ", 16);
    r |= sl_buf_append_u64(out, body_len);
    r |= sl_buf_append(out, "\r\n", 2);
  }
  return r ? -1 : 0;
}

int sl_http_write_request_head(struct sl_buf *out, const struct sl_http_msg *req,
                               const struct sl_http_forward *fwd) {
  const char *method = llhttp_method_name((llhttp_method_t)req->method);
  size_t method_len = strlen(method);
  int r = 0;

  r |= sl_http_write_request_line(out, method, method_len, req->raw.base + req->target_off,
                                  req->target_len);
  r |= sl_http_write_request_fields(out, req, fwd);
  r |= sl_http_write_content_length(out, method, method_len, fwd->body_len);
  r |= sl_buf_append(out, "\r\n", 2);
  return r ? -1 : 0;
}

int sl_http_write_response_head(struct sl_buf *out, const struct sl_http_msg *resp,
                                const struct sl_http_msg *req, enum sl_http_framing framing,
                                bool keep_alive) {
  bool conn_hdr = has_connection_header(resp);
  int r = 0;

  /* Always HTTP/1.1: a server sends its own version (RFC 9110 6.2); framing
   * below is what adapts to a 1.0 client. */
  (void)req;
  r |= sl_buf_append(out, "HTTP/1.1 ", 9);
  r |= sl_buf_append_u64(out, resp->status);
  r |= sl_buf_append(out, " ", 1);
  if (resp->reason_len > 0)
    r |= sl_buf_append(out, resp->raw.base + resp->reason_off, resp->reason_len);
  else
    r |= sl_buf_append_str(out, sl_http_reason(resp->status));
  r |= sl_buf_append(out, "\r\n", 2);
  for (size_t i = 0; i < resp->n_headers && r == 0; i++) {
    const struct sl_http_header *h = &resp->headers[i];

    if (!passes(resp, h, conn_hdr))
      continue;
    if (name_eq(resp, h, "via", 3))
      continue;
    r |= append_header(out, resp, h);
  }
  r |= append_joined(out, resp, "Via", 3, via_token(resp), 10);
  switch (framing) {
  case SL_FRAME_NONE:
    /* HEAD and 304 may announce the length of the body they do not carry. */
    if (resp->content_length < 0 || resp->status == 204 || resp->status < 200)
      break;
    /* fall through */
  case SL_FRAME_LENGTH:
    r |= sl_buf_append(out, "Content-Length: ", 16);
    r |= sl_buf_append_u64(out, (unsigned long long)resp->content_length);
    r |= sl_buf_append(out, "\r\n", 2);
    break;
  case SL_FRAME_CHUNKED:
    r |= sl_buf_append_str(out, "Transfer-Encoding: chunked\r\n");
    break;
  case SL_FRAME_CLOSE:
    break;
  }
  if (!keep_alive)
    r |= sl_buf_append_str(out, "Connection: close\r\n");
  else if (req->http_major == 1 && req->http_minor == 0)
    r |= sl_buf_append_str(out, "Connection: keep-alive\r\n");
  r |= sl_buf_append(out, "\r\n", 2);
  return r ? -1 : 0;
}

/*
 * The IANA HTTP Status Code Registry (RFC 9110 15 and the RFCs it lists),
 * indexed by code. 306 and 418 are reserved and 510 is obsoleted there, so
 * they have no phrase; neither has any code the registry does not name.
 */
static const char *const reasons[600] = {
    [100] = "Continue",
    [101] = "Switching Protocols",
    [102] = "Processing",
    [103] = "Early Hints",
    [200] = "OK",
    [201] = "Created",
    [202] = "Accepted",
    [203] = "Non-Authoritative Information",
    [204] = "No Content",
    [205] = "Reset Content",
    [206] = "Partial Content",
    [207] = "Multi-Status",
    [208] = "Already Reported",
    [226] = "IM Used",
    [300] = "Multiple Choices",
    [301] = "Moved Permanently",
    [302] = "Found",
    [303] = "See Other",
    [304] = "Not Modified",
    [305] = "Use Proxy",
    [307] = "Temporary Redirect",
    [308] = "Permanent Redirect",
    [400] = "Bad Request",
    [401] = "Unauthorized",
    [402] = "Payment Required",
    [403] = "Forbidden",
    [404] = "Not Found",
    [405] = "Method Not Allowed",
    [406] = "Not Acceptable",
    [407] = "Proxy Authentication Required",
    [408] = "Request Timeout",
    [409] = "Conflict",
    [410] = "Gone",
    [411] = "Length Required",
    [412] = "Precondition Failed",
    [413] = "Content Too Large",
    [414] = "URI Too Long",
    [415] = "Unsupported Media Type",
    [416] = "Range Not Satisfiable",
    [417] = "Expectation Failed",
    [421] = "Misdirected Request",
    [422] = "Unprocessable Content",
    [423] = "Locked",
    [424] = "Failed Dependency",
    [425] = "Too Early",
    [426] = "Upgrade Required",
    [428] = "Precondition Required",
    [429] = "Too Many Requests",
    [431] = "Request Header Fields Too Large",
    [451] = "Unavailable For Legal Reasons",
    [500] = "Internal Server Error",
    [501] = "Not Implemented",
    [502] = "Bad Gateway",
    [503] = "Service Unavailable",
    [504] = "Gateway Timeout",
    [505] = "HTTP Version Not Supported",
    [506] = "Variant Also Negotiates",
    [507] = "Insufficient Storage",
    [508] = "Loop Detected",
    [511] = "Network Authentication Required",
};

const char *sl_http_reason(unsigned status) {
  if (status < sl_countof(reasons) && reasons[status] != NULL)
    return reasons[status];
  return "";
}
