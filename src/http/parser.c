/*
 * llhttp wrapper: copies the head of one message into `struct sl_http_msg`,
 * streams its body to the caller and pauses at its end.
 *
 * Header pieces may arrive split over several reads, so each llhttp span
 * callback appends to the message's raw buffer and the header table stores
 * offsets, not pointers (the buffer may move as it grows).
 */
#include "sluice/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void msg_reset(struct sl_http_msg *m) {
  sl_buf_reset(&m->raw);
  m->n_headers = 0;
  m->target_off = m->target_len = 0;
  m->reason_off = m->reason_len = 0;
  m->method = 0;
  m->status = 0;
  m->http_major = m->http_minor = 0;
  m->content_length = -1;
  m->chunked = false;
  m->other_codings = false;
  m->keep_alive = false;
  m->expect_continue = false;
  m->no_body = false;
  m->n_host = m->n_content_length = m->n_transfer_encoding = 0;
  m->n_connection = m->n_expect = 0;
}

static struct sl_http_parser *parser_of(llhttp_t *ll) { return (struct sl_http_parser *)ll; }

/* Copies <len> bytes of the head into the message. (The size limit is enforced
 * on the wire bytes, in scan(), so whitespace llhttp skips counts too.) */
static int head_append(struct sl_http_parser *p, const char *at, size_t len) {
  p->started = true;
  if (sl_buf_append(&p->msg.raw, at, len) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static int on_message_begin(llhttp_t *ll) {
  parser_of(ll)->started = true;
  return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len) {
  struct sl_http_parser *p = parser_of(ll);

  if (p->msg.target_len == 0)
    p->msg.target_off = (uint32_t)p->msg.raw.len;
  p->msg.target_len += (uint32_t)len;
  return head_append(p, at, len);
}

static int on_status(llhttp_t *ll, const char *at, size_t len) {
  struct sl_http_parser *p = parser_of(ll);

  if (p->msg.reason_len == 0)
    p->msg.reason_off = (uint32_t)p->msg.raw.len;
  p->msg.reason_len += (uint32_t)len;
  return head_append(p, at, len);
}

/*
 * Header callbacks. llhttp reports a header as field spans, field-complete,
 * value spans, value-complete. llhttp accepts a header with an empty name
 * (": v"); it is rejected here, as no backend can make sense of it.
 */
static int on_header_field(llhttp_t *ll, const char *at, size_t len) {
  struct sl_http_parser *p = parser_of(ll);
  struct sl_http_msg *m = &p->msg;

  if (p->head_done)
    return 0; /* a trailer field: dropped, as the body is re-framed */
  if (!p->in_field) {
    if (m->n_headers == m->cap_headers) {
      size_t cap = m->cap_headers ? m->cap_headers * 2 : 32;
      struct sl_http_header *h = realloc(m->headers, cap * sizeof(*h));
      if (h == NULL) {
        sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
        return -1;
      }
      m->headers = h;
      m->cap_headers = cap;
    }
    m->headers[m->n_headers].name_off = (uint32_t)m->raw.len;
    m->headers[m->n_headers].name_len = 0;
    m->headers[m->n_headers].value_off = (uint32_t)m->raw.len;
    m->headers[m->n_headers].value_len = 0;
    m->n_headers++;
    p->in_field = true;
  }
  m->headers[m->n_headers - 1].name_len += (uint32_t)len;
  return head_append(p, at, len);
}

static int empty_name(struct sl_http_parser *p);

static bool header_is(const struct sl_http_msg *m, const struct sl_http_header *h,
                      const char *name) {
  size_t n = strlen(name);
  return h->name_len == n && strncasecmp(m->raw.base + h->name_off, name, n) == 0;
}

/* Counts header <h> of <m> if it is one whose presence the head's checks need. */
static void count_name(struct sl_http_msg *m, const struct sl_http_header *h) {
  switch (h->name_len) {
  case 4:
    m->n_host += header_is(m, h, "host");
    break;
  case 6:
    m->n_expect += header_is(m, h, "expect");
    break;
  case 10:
    m->n_connection += header_is(m, h, "connection");
    break;
  case 14:
    m->n_content_length += header_is(m, h, "content-length");
    break;
  case 17:
    m->n_transfer_encoding += header_is(m, h, "transfer-encoding");
    break;
  default:
    break;
  }
}

static int on_header_field_complete(llhttp_t *ll) {
  struct sl_http_parser *p = parser_of(ll);

  if (p->head_done)
    return 0;
  if (!p->in_field || p->msg.headers[p->msg.n_headers - 1].name_len == 0)
    return empty_name(p);
  count_name(&p->msg, &p->msg.headers[p->msg.n_headers - 1]);
  p->in_field = false;
  p->field_done = true;
  return 0;
}

static int empty_name(struct sl_http_parser *p) {
  sl_http_parser_fail(p, SL_HTTP_EBADMSG, "empty header name");
  return -1;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len) {
  struct sl_http_parser *p = parser_of(ll);
  struct sl_http_header *h;

  if (p->head_done)
    return 0;
  if (!p->in_value) {
    if (!p->field_done)
      return empty_name(p);
    p->in_value = true;
    p->msg.headers[p->msg.n_headers - 1].value_off = (uint32_t)p->msg.raw.len;
  }
  h = &p->msg.headers[p->msg.n_headers - 1];
  h->value_len += (uint32_t)len;
  return head_append(p, at, len);
}

static int on_header_value_complete(llhttp_t *ll) {
  struct sl_http_parser *p = parser_of(ll);
  struct sl_http_header *h;

  if (p->head_done)
    return 0;
  if (!p->field_done)
    return empty_name(p);
  /* llhttp drops the whitespace before a value but keeps what follows it. */
  h = &p->msg.headers[p->msg.n_headers - 1];
  while (h->value_len > 0 && (p->msg.raw.base[h->value_off + h->value_len - 1] == ' ' ||
                              p->msg.raw.base[h->value_off + h->value_len - 1] == '\t'))
    h->value_len--;
  p->in_value = false;
  p->field_done = false;
  return 0;
}

static bool value_is(const struct sl_http_msg *m, const struct sl_http_header *h,
                     const char *value) {
  size_t n = strlen(value);
  return h->value_len == n && strncasecmp(m->raw.base + h->value_off, value, n) == 0;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* Whether the value of <h> is empty once optional whitespace is set aside. */
static bool value_blank(const struct sl_http_msg *m, const struct sl_http_header *h) {
  for (uint32_t i = 0; i < h->value_len; i++) {
    if (!is_ows(m->raw.base[h->value_off + i]))
      return false;
  }
  return true;
}

bool sl_http_msg_has_token(const struct sl_http_msg *m, const char *name, const char *token,
                           size_t len) {
  for (size_t i = 0; i < m->n_headers; i++) {
    const struct sl_http_header *h = &m->headers[i];
    const char *v, *end;

    if (!header_is(m, h, name))
      continue;
    v = m->raw.base + h->value_off;
    end = v + h->value_len;
    while (v < end) {
      const char *tok, *tok_end;

      while (v < end && (is_ows(*v) || *v == ','))
        v++;
      tok = v;
      while (v < end && *v != ',')
        v++;
      tok_end = v;
      while (tok_end > tok && is_ows(tok_end[-1]))
        tok_end--;
      if ((size_t)(tok_end - tok) == len && strncasecmp(tok, token, len) == 0)
        return true;
    }
  }
  return false;
}

/*
 * Whether the connection stays open after the message. llhttp matches the
 * Connection token "close" only without whitespace after it, so "close<TAB>"
 * would keep open a connection the client asked to close: the tokens are read
 * again here with the whitespace rules of RFC 9110 5.6.1. (A "keep-alive<TAB>"
 * that llhttp missed on HTTP/1.0 is left to close the connection: llhttp
 * refuses a second message after one it took as the last, and a close loses
 * nothing but the reuse.)
 */
static bool keep_alive(llhttp_t *ll, const struct sl_http_msg *m) {
  return llhttp_should_keep_alive(ll) &&
         !(m->n_connection > 0 && sl_http_msg_has_token(m, "connection", "close", 5));
}

/*
 * The rules of RFC 9112 about a request head as a whole, which llhttp does
 * not check. Each failure is final and answered at once, before any body byte:
 * - HTTP/1.x only (2.4): a major version other than 1 gets 505.
 * - Transfer-Encoding (6.1, 6.3): present with Content-Length, empty, or not
 *   ending in chunked, the body length is not known: 400, as a request a
 *   backend could frame differently must not cross. A coding besides chunked
 *   sluice cannot keep, as it re-frames the body: 501.
 * - Host (3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0.
 * Returns 0, or -1 with the error recorded.
 */
static int check_request(struct sl_http_parser *p, const struct sl_http_msg *m) {
  size_t hosts = m->n_host, tes = m->n_transfer_encoding;
  bool cl = m->n_content_length > 0, blank_te = false;

  if (m->http_major != 1) {
    sl_http_parser_fail(p, SL_HTTP_EVERSION, "HTTP version not supported");
    return -1;
  }
  for (size_t i = 0; tes > 0 && i < m->n_headers; i++) {
    const struct sl_http_header *h = &m->headers[i];

    if (header_is(m, h, "transfer-encoding"))
      blank_te |= value_blank(m, h);
  }
  if (tes > 0 && cl) {
    sl_http_parser_fail(p, SL_HTTP_EBADMSG, "Transfer-Encoding with Content-Length");
    return -1;
  }
  if (blank_te || (tes > 0 && !m->chunked)) {
    sl_http_parser_fail(p, SL_HTTP_EBADMSG, "Transfer-Encoding empty or not ending in chunked");
    return -1;
  }
  if (m->other_codings) {
    sl_http_parser_fail(p, SL_HTTP_ECODING, "transfer coding other than chunked");
    return -1;
  }
  if (hosts > 1 || (hosts == 0 && m->http_minor >= 1)) {
    sl_http_parser_fail(p, SL_HTTP_EBADMSG, hosts ? "more than one Host" : "no Host");
    return -1;
  }
  return 0;
}

static int on_headers_complete(llhttp_t *ll) {
  struct sl_http_parser *p = parser_of(ll);
  struct sl_http_msg *m = &p->msg;

  m->http_major = ll->http_major;
  m->http_minor = ll->http_minor;
  m->method = ll->method;
  m->status = ll->status_code;
  m->keep_alive = keep_alive(ll, m);
  m->chunked = (ll->flags & F_CHUNKED) != 0;
  if (ll->flags & F_CONTENT_LENGTH)
    m->content_length = (int64_t)ll->content_length;
  for (size_t i = 0; m->n_transfer_encoding > 0 && i < m->n_headers; i++) {
    if (header_is(m, &m->headers[i], "transfer-encoding") &&
        !value_is(m, &m->headers[i], "chunked"))
      m->other_codings = true;
  }
  p->head_done = true;

  if (ll->type == HTTP_REQUEST) {
    if (check_request(p, m) != 0)
      return -1;
    for (size_t i = 0; m->n_expect > 0 && i < m->n_headers; i++) {
      if (!header_is(m, &m->headers[i], "expect"))
        continue;
      if (!value_is(m, &m->headers[i], "100-continue")) {
        sl_http_parser_fail(p, SL_HTTP_EUNSUPPORTED, "unsupported Expect");
        return -1;
      }
      m->expect_continue = true;
    }
    if (ll->upgrade) {
      /* Upgrades (WebSocket, h2c) are not proxied: the request is served as a
       * plain one and Upgrade is dropped as a hop-by-hop header. */
      ll->upgrade = 0;
    }
    if (p->max_body_bytes && m->content_length > 0 &&
        (uint64_t)m->content_length > p->max_body_bytes) {
      sl_http_parser_fail(p, SL_HTTP_EBODYSIZE, "body too large");
      return -1;
    }
  } else {
    unsigned s = m->status;
    m->no_body = p->response_to_head || (s >= 100 && s < 200) || s == 204 || s == 304;
  }
  if (p->on_head != NULL && p->on_head(p, m) != 0) {
    if (p->error == SL_HTTP_OK)
      sl_http_parser_fail(p, SL_HTTP_EBADMSG, "rejected by caller");
    return -1;
  }
  /* 1 tells llhttp that this response has no body whatever its headers say:
   * llhttp knows HEAD only if told, and would read a 304's Content-Length. */
  return (ll->type == HTTP_RESPONSE && m->no_body) ? 1 : 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len) {
  struct sl_http_parser *p = parser_of(ll);

  p->body_bytes += len;
  if (p->max_body_bytes && p->body_bytes > p->max_body_bytes) {
    sl_http_parser_fail(p, SL_HTTP_EBODYSIZE, "body too large");
    return -1;
  }
  if (p->on_body != NULL && p->on_body(p, at, len) != 0) {
    if (p->error == SL_HTTP_OK)
      sl_http_parser_fail(p, SL_HTTP_EBADMSG, "rejected by caller");
    return -1;
  }
  return 0;
}

/*
 * A chunk size line has been read (llhttp holds the size in content_length).
 * A chunk that would take the body over the limit fails here, at its size
 * line, rather than after its data has been read or waited for: a client that
 * announces a huge chunk gets its 413 at once. The last chunk of a request
 * pauses, so that feed() can scan the trailer section for bare LF the way it
 * scans the head.
 */
static int on_chunk_header(llhttp_t *ll) {
  struct sl_http_parser *p = parser_of(ll);

  if (p->max_body_bytes && ll->content_length > p->max_body_bytes - p->body_bytes) {
    sl_http_parser_fail(p, SL_HTTP_EBODYSIZE, "chunk too large for the body limit");
    return -1;
  }
  if (ll->type != HTTP_REQUEST || ll->content_length != 0)
    return 0;
  p->trailer_pause = true;
  return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *ll) {
  struct sl_http_parser *p = parser_of(ll);

  p->msg_done = true;
  if (p->on_done != NULL && p->on_done(p) != 0) {
    if (p->error == SL_HTTP_OK)
      sl_http_parser_fail(p, SL_HTTP_EBADMSG, "rejected by caller");
    return -1;
  }
  return HPE_PAUSED;
}

void sl_http_parser_init(struct sl_http_parser *p, llhttp_type_t type, uint64_t max_header_bytes,
                         uint64_t max_body_bytes, sl_http_head_cb on_head,
                         sl_http_body_cb on_body_cb, sl_http_done_cb on_done, void *data) {
  memset(p, 0, sizeof(*p));
  llhttp_settings_init(&p->settings);
  p->settings.on_message_begin = on_message_begin;
  p->settings.on_url = on_url;
  p->settings.on_status = on_status;
  p->settings.on_header_field = on_header_field;
  p->settings.on_header_field_complete = on_header_field_complete;
  p->settings.on_header_value = on_header_value;
  p->settings.on_header_value_complete = on_header_value_complete;
  p->settings.on_headers_complete = on_headers_complete;
  p->settings.on_body = on_body;
  p->settings.on_chunk_header = on_chunk_header;
  p->settings.on_message_complete = on_message_complete;
  llhttp_init(&p->ll, type, &p->settings);
  sl_buf_init(&p->msg.raw);
  p->max_header_bytes = max_header_bytes;
  p->max_body_bytes = max_body_bytes;
  p->on_head = on_head;
  p->on_body = on_body_cb;
  p->on_done = on_done;
  p->data = data;
  p->scan_line_empty = true;
  msg_reset(&p->msg);
}

void sl_http_parser_dispose(struct sl_http_parser *p) {
  sl_buf_dispose(&p->msg.raw);
  free(p->msg.headers);
  p->msg.headers = NULL;
  p->msg.cap_headers = p->msg.n_headers = 0;
}

void sl_http_parser_next(struct sl_http_parser *p, bool response_to_head) {
  msg_reset(&p->msg);
  p->header_bytes = 0;
  p->body_bytes = 0;
  p->error = SL_HTTP_OK;
  p->error_reason = NULL;
  p->in_value = false;
  p->in_field = false;
  p->field_done = false;
  p->head_done = false;
  p->started = false;
  p->msg_done = false;
  p->response_to_head = response_to_head;
  p->trailer_pause = false;
  p->scan_done = false;
  p->scan_seen_text = false;
  p->scan_line_empty = true;
  p->scan_prev = 0;
  p->scan_line1_done = false;
  p->scan_line1_sp = 0;
  if (llhttp_get_errno(&p->ll) == HPE_PAUSED)
    llhttp_resume(&p->ll);
}

void sl_http_parser_fail(struct sl_http_parser *p, enum sl_http_error err, const char *reason) {
  if (p->error != SL_HTTP_OK)
    return;
  p->error = err;
  p->error_reason = reason;
}

/*
 * The bytes of one line, <len> > 0 of them, no LF among them (a line may come
 * in several pieces). Carries the checks of scan() that look at a line's text.
 */
static int scan_text(struct sl_http_parser *p, const char *s, size_t len) {
  size_t i = 0;

  /* Only CR so far on this line: the line's text starts at its first other byte. */
  while (p->scan_line_empty && i < len && s[i] == '\r')
    i++;
  if (i < len) {
    /* Obsolete line folding (RFC 9112 5.2): rejected, as a proxy may, rather
     * than passed on to be split differently downstream. */
    if (p->scan_line_empty && p->scan_seen_text && p->ll.type == HTTP_REQUEST &&
        (s[i] == ' ' || s[i] == '\t')) {
      sl_http_parser_fail(p, SL_HTTP_EBADMSG, "obsolete header line folding");
      return -1;
    }
    p->scan_seen_text = true;
    p->scan_line_empty = false;
  }
  for (; !p->scan_line1_done && p->scan_line1_sp < 2 && i < len; i++)
    p->scan_line1_sp += s[i] == ' ';
  p->scan_prev = s[len - 1];
  return 0;
}

/*
 * The wire-level checks llhttp does not make. It takes (even in strict mode)
 * a bare LF as the end of the request line, of the head and of the trailers,
 * and folded header lines. A proxy must not: a backend that reads the same
 * bytes differently is how request smuggling starts. So request heads and
 * trailer sections are scanned before llhttp sees them, up to the blank line
 * that ends them (after something other than blank lines was seen). The same
 * scan counts head bytes as they are on the wire for max_header_bytes.
 */
static int scan(struct sl_http_parser *p, const char *data, size_t len) {
  bool strict = p->ll.type == HTTP_REQUEST;
  size_t i = 0;

  /* Line by line, with memchr finding each end: the head is scanned at the
   * speed of memchr rather than a branch per byte. */
  while (i < len && !p->scan_done) {
    const char *lf = memchr(data + i, '\n', len - i);
    size_t end = lf != NULL ? (size_t)(lf - data) : len;

    if (end > i && scan_text(p, data + i, end - i) != 0)
      return -1;
    if (lf == NULL) {
      i = len;
      break;
    }
    if (strict && p->scan_prev != '\r') {
      sl_http_parser_fail(p, SL_HTTP_EBADMSG, "bare LF line end");
      return -1;
    }
    if (p->scan_seen_text)
      p->scan_line1_done = true;
    if (p->scan_line_empty && p->scan_seen_text)
      p->scan_done = true;
    p->scan_line_empty = true;
    p->scan_prev = '\n';
    i = end + 1;
  }
  p->header_bytes += i;
  if (p->max_header_bytes && p->header_bytes > p->max_header_bytes) {
    sl_http_parser_fail(p, SL_HTTP_EHEADERSIZE, "header too large");
    return -1;
  }
  return 0;
}

/* Restarts the scan at the start of a trailer section. */
static void scan_trailers(struct sl_http_parser *p) {
  p->scan_done = false;
  p->scan_seen_text = true;
  p->scan_line_empty = true;
  p->scan_prev = 0;
}

/*
 * Whether llhttp has taken a request line with one space, method and target
 * but no HTTP-version, and waits for the rest: an HTTP/0.9 request, which
 * llhttp parses as one whose headers follow. Its client sends no headers and
 * could not read a status line either; it is refused at the end of the line
 * rather than left to the header timeout. (A line llhttp finds bad for another
 * reason is its error, whether it came whole or byte by byte.)
 */
static bool http09(const struct sl_http_parser *p) {
  return p->ll.type == HTTP_REQUEST && p->scan_line1_done && p->scan_line1_sp == 1 && !p->head_done;
}

/*
 * Whether llhttp's error <e> is a request in a version of HTTP it does not
 * speak: the HTTP/2 connection preface ("PRI * HTTP/2.0", which llhttp stops
 * at), or a well-formed HTTP-version other than 1.0, 1.1 (and 0.9 and 2.0,
 * which check_request refuses). llhttp gives the last the same code as a
 * malformed version, so its reason text, a constant of llhttp, tells them apart.
 */
static bool version_error(const struct sl_http_parser *p, llhttp_errno_t e) {
  const char *reason = llhttp_get_error_reason(&p->ll);

  if (p->ll.type != HTTP_REQUEST)
    return false;
  return e == HPE_PAUSED_H2_UPGRADE || (e == HPE_INVALID_VERSION && reason != NULL &&
                                        strcmp(reason, "Invalid HTTP version") == 0);
}

ssize_t sl_http_parser_feed(struct sl_http_parser *p, const char *data, size_t len) {
  size_t off = 0;
  llhttp_errno_t e;

  if (p->error != SL_HTTP_OK)
    return -1; /* errors are final */
  if (p->msg_done)
    return 0;
  for (;;) {
    if (!p->scan_done && scan(p, data + off, len - off) != 0)
      return -1;
    e = llhttp_execute(&p->ll, data + off, len - off);
    if (e == HPE_OK && http09(p)) {
      sl_http_parser_fail(p, SL_HTTP_EVERSION, "no HTTP version (HTTP/0.9)");
      return -1;
    }
    if (e == HPE_OK)
      return (ssize_t)len;
    if (e == HPE_PAUSED && p->msg_done)
      return llhttp_get_error_pos(&p->ll) - data;
    if (e != HPE_PAUSED || !p->trailer_pause)
      break;
    p->trailer_pause = false;
    off = (size_t)(llhttp_get_error_pos(&p->ll) - data);
    llhttp_resume(&p->ll);
    scan_trailers(p);
  }
  if (p->error == SL_HTTP_OK)
    sl_http_parser_fail(p, version_error(p, e) ? SL_HTTP_EVERSION : SL_HTTP_EBADMSG,
                        llhttp_get_error_reason(&p->ll));
  return -1;
}

int sl_http_parser_finish(struct sl_http_parser *p) {
  llhttp_errno_t e;

  if (p->msg_done)
    return 0;
  e = llhttp_finish(&p->ll);
  if ((e == HPE_OK || e == HPE_PAUSED) && p->msg_done)
    return 0;
  sl_http_parser_fail(p, SL_HTTP_EBADMSG, "connection closed before the message was complete");
  return -1;
}

const struct sl_http_header *sl_http_msg_header(const struct sl_http_msg *m, const char *name) {
  for (size_t i = 0; i < m->n_headers; i++) {
    if (header_is(m, &m->headers[i], name))
      return &m->headers[i];
  }
  return NULL;
}

bool sl_http_method_idempotent(uint8_t method) {
  switch (method) {
  case HTTP_GET:
  case HTTP_HEAD:
  case HTTP_PUT:
  case HTTP_DELETE:
  case HTTP_OPTIONS:
  case HTTP_TRACE:
    return true;
  default:
    return false;
  }
}

unsigned sl_http_error_status(enum sl_http_error e) {
  switch (e) {
  case SL_HTTP_EHEADERSIZE:
    return 431;
  case SL_HTTP_EBODYSIZE:
    return 413;
  case SL_HTTP_EUNSUPPORTED:
    return 417;
  case SL_HTTP_EVERSION:
    return 505;
  case SL_HTTP_ECODING:
    return 501;
  case SL_HTTP_ENOMEM:
    return 503;
  default:
    return 400;
  }
}
