/*
 * Unit tests for the proxying header rules (src/http/headers.c): the request
 * head sent upstream and the response head sent to the client, built from
 * messages the parser produced and compared byte for byte.
 *
 * A test that fails here only because sl_http_* still has the bug it names is
 * kept failing on purpose: it is the regression test for that bug.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sluice/http.h"

/* What every request head ends with for the default forward (Host present). */
#define XF(host)                                                                                   \
  "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: " host "\r\n"
#define VIA11 "Via: 1.1 sluice\r\n"

/* Parses <in> (a whole message, or a head whose body is close-delimited) into
 * <p>, which the caller disposes. <to_head>: a response to a HEAD request. */
static void parse(struct sl_http_parser *p, llhttp_type_t type, const char *in, bool to_head) {
  size_t len = strlen(in);
  ssize_t n;

  sl_http_parser_init(p, type, 0, 0, NULL, NULL, NULL, NULL);
  sl_http_parser_next(p, to_head);
  n = sl_http_parser_feed(p, in, len);
  if (n != (ssize_t)len || !p->head_done) {
    enum sl_http_error err = p->error;

    sl_http_parser_dispose(p);
    fail_msg("parse: consumed %zd of %zu bytes, error %d: %s", n, len, err, in);
  }
}

/* Prints <len> bytes of <s> with CR, LF and other control bytes escaped. */
static void print_escaped(const char *label, const char *s, size_t len) {
  char line[4096];
  size_t o = 0;

  for (size_t i = 0; i < len && o + 8 < sizeof(line); i++) {
    unsigned char c = (unsigned char)s[i];

    if (c == '\r')
      o += (size_t)snprintf(line + o, sizeof(line) - o, "\\r");
    else if (c == '\n')
      o += (size_t)snprintf(line + o, sizeof(line) - o, "\\n\n    ");
    else if (c == '\t')
      o += (size_t)snprintf(line + o, sizeof(line) - o, "\\t");
    else if (c < 0x20 || c >= 0x7f)
      o += (size_t)snprintf(line + o, sizeof(line) - o, "\\x%02x", c);
    else
      line[o++] = (char)c;
  }
  line[o] = '\0';
  print_error("%s:\n    %s\n", label, line);
}

/* Compares <out> with <want>; disposes the given objects before failing. */
static void check_output(struct sl_buf *out, const char *want, struct sl_http_parser *a,
                         struct sl_http_parser *b) {
  size_t n = strlen(want);
  bool ok = out->len == n && (n == 0 || memcmp(out->base, want, n) == 0);

  if (!ok) {
    print_escaped("got", out->base ? out->base : "", out->len);
    print_escaped("want", want, n);
  }
  sl_buf_dispose(out);
  sl_http_parser_dispose(a);
  if (b != NULL)
    sl_http_parser_dispose(b);
  if (!ok)
    fail_msg("the head written differs from the one expected");
}

static const struct sl_http_forward default_fwd = {
    .client_addr = "192.0.2.7",
    .proto = "http",
    .upstream_host = "backend:8080",
    .body_len = 0,
};

/* Parses request <in>, writes its upstream head with <body_len> and compares. */
static void expect_request(const char *in, uint64_t body_len, const char *want) {
  struct sl_http_parser p;
  struct sl_http_forward fwd = default_fwd;
  struct sl_buf out;

  fwd.body_len = body_len;
  parse(&p, HTTP_REQUEST, in, false);
  sl_buf_init(&out);
  assert_int_equal(sl_http_write_request_head(&out, &p.msg, &fwd), 0);
  check_output(&out, want, &p, NULL);
}

/* Parses request <req_in> and response <resp_in>, writes the client head. */
static void expect_response(const char *req_in, const char *resp_in, enum sl_http_framing framing,
                            bool keep_alive, const char *want) {
  struct sl_http_parser req, resp;
  struct sl_buf out;

  parse(&req, HTTP_REQUEST, req_in, false);
  parse(&resp, HTTP_RESPONSE, resp_in, strncmp(req_in, "HEAD ", 5) == 0);
  sl_buf_init(&out);
  assert_int_equal(sl_http_write_response_head(&out, &resp.msg, &req.msg, framing, keep_alive), 0);
  check_output(&out, want, &req, &resp);
}

#define REQ11 "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
#define REQ10 "GET / HTTP/1.0\r\n\r\n"
#define HEAD11 "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"

/* ---- Requests ---------------------------------------------------------------- */

static void test_request_end_to_end_kept(void **state) {
  (void)state;
  expect_request("GET /path?q=1&r=%20 HTTP/1.1\r\n"
                 "Host: example.com\r\n"
                 "user-agent: curl/8.0\r\n"
                 "Accept: */*\r\n"
                 "X-Spaces:   a  b\tc\r\n"
                 "X-Empty:\r\n"
                 "Cookie: a=1\r\n"
                 "X-Bin: \x80\xff\r\n"
                 "Cookie: b=2\r\n"
                 "\r\n",
                 0,
                 "GET /path?q=1&r=%20 HTTP/1.1\r\n"
                 "Host: example.com\r\n"
                 "user-agent: curl/8.0\r\n"
                 "Accept: */*\r\n"
                 "X-Spaces: a  b\tc\r\n"
                 "X-Empty: \r\n"
                 "Cookie: a=1\r\n"
                 "X-Bin: \x80\xff\r\n"
                 "Cookie: b=2\r\n" XF("example.com") VIA11 "\r\n");
}

static void test_request_hop_by_hop_dropped(void **state) {
  (void)state;
  expect_request("GET / HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "Connection: keep-alive\r\n"
                 "Keep-Alive: timeout=5\r\n"
                 "X-Keep-1: 1\r\n"
                 "TE: trailers\r\n"
                 "Trailer: X-T\r\n"
                 "Upgrade: h2c\r\n"
                 "Proxy-Connection: keep-alive\r\n"
                 "Proxy-Authorization: Basic eDp5\r\n"
                 "PROXY-Foo: 1\r\n"
                 "proxy-: 1\r\n"
                 "X-Keep-2: 2\r\n"
                 "Proxy: not-a-proxy-header\r\n"
                 "\r\n",
                 0,
                 "GET / HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "X-Keep-1: 1\r\n"
                 "X-Keep-2: 2\r\n"
                 "Proxy: not-a-proxy-header\r\n" XF("h") VIA11 "\r\n");
  /* An upgrade request goes on as a plain one. */
  expect_request("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Key: k\r\n\r\n",
                 0, "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n" XF("h") VIA11 "\r\n");
}

static void test_request_connection_named_dropped(void **state) {
  (void)state;
  expect_request("GET / HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "X-A: 1\r\n"
                 "Connection:  x-a ,X-B\t, ,\r\n"
                 "X-B: 2\r\n"
                 "X-AB: 3\r\n"
                 "connection:x-c\r\n"
                 "x-c: 4\r\n"
                 "CONNECTION: close,X-E  \r\n"
                 "X-D: 5\r\n"
                 "X-E: 6\r\n"
                 "X-C-D: 7\r\n"
                 "\r\n",
                 0,
                 "GET / HTTP/1.1\r\n"
                 "Host: h\r\n"
                 "X-AB: 3\r\n"
                 "X-D: 5\r\n"
                 "X-C-D: 7\r\n" XF("h") VIA11 "\r\n");
}

static void test_request_content_length(void **state) {
  (void)state;
  /* Rewritten to the body that follows. */
  expect_request("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\n"
                 "Content-Type: text/plain\r\n\r\nhello",
                 5,
                 "POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n" XF("h") VIA11
                 "Content-Length: 5\r\n\r\n");
  /* A chunked body is sent with its length. */
  expect_request("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                 11, "POST /p HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "Content-Length: 11\r\n\r\n");
  /* An empty POST says so. */
  expect_request("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 0,
                 "POST /p HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "Content-Length: 0\r\n\r\n");
  expect_request("POST /p HTTP/1.1\r\nHost: h\r\n\r\n", 0,
                 "POST /p HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "Content-Length: 0\r\n\r\n");
  /* An empty GET has none, even when the client sent one. */
  expect_request("GET /g HTTP/1.1\r\nHost: h\r\n\r\n", 0,
                 "GET /g HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "\r\n");
  expect_request("GET /g HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 0,
                 "GET /g HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "\r\n");
  /* Any method with a body gets its length. */
  expect_request("DELETE /d HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 3,
                 "DELETE /d HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "Content-Length: 3\r\n\r\n");
}

static void test_request_expect_dropped(void **state) {
  (void)state;
  expect_request(
      "POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
      "X-After: 1\r\n\r\nok",
      2, "POST /p HTTP/1.1\r\nHost: h\r\nX-After: 1\r\n" XF("h") VIA11 "Content-Length: 2\r\n\r\n");
}

static void test_request_x_forwarded_for(void **state) {
  (void)state;
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nX-Keep: 1\r\n\r\n",
                 0,
                 "GET / HTTP/1.1\r\nHost: h\r\nX-Keep: 1\r\n"
                 "X-Forwarded-For: 203.0.113.9, 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n" VIA11 "\r\n");
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-for: 203.0.113.9, 10.1.2.3\r\n\r\n", 0,
                 "GET / HTTP/1.1\r\nHost: h\r\n"
                 "X-Forwarded-For: 203.0.113.9, 10.1.2.3, 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n" VIA11 "\r\n");
}

/*
 * Regression: of several X-Forwarded-For header lines only the last is forwarded,
 * so the addresses of the earlier hops are lost. Several lines of one field
 * are one comma-separated list (RFC 9110 5.3); the proxy appends to it all.
 */
static void test_request_x_forwarded_for_several_lines(void **state) {
  (void)state;
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\n"
                 "X-Forwarded-For: 198.51.100.4, 10.0.0.1\r\n\r\n",
                 0,
                 "GET / HTTP/1.1\r\nHost: h\r\n"
                 "X-Forwarded-For: 203.0.113.9, 198.51.100.4, 10.0.0.1, 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n" VIA11 "\r\n");
}

static void test_request_x_forwarded_proto_host(void **state) {
  (void)state;
  /* Client-supplied ones are replaced by what sluice saw. */
  expect_request("GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nHost: shop.example\r\n"
                 "x-forwarded-host: evil.example\r\nX-Forwarded-Host: evil2.example\r\n\r\n",
                 0, "GET / HTTP/1.1\r\nHost: shop.example\r\n" XF("shop.example") VIA11 "\r\n");
  /* Without a Host there is no X-Forwarded-Host, not even the client's. */
  expect_request("GET / HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n", 0,
                 "GET / HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-For: 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nVia: 1.0 sluice\r\n\r\n");
}

static void test_request_via(void **state) {
  (void)state;
  expect_request(
      "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 fred, 1.1 p.example\r\n\r\n", 0,
      "GET / HTTP/1.1\r\nHost: h\r\n" XF("h") "Via: 1.0 fred, 1.1 p.example, 1.1 sluice\r\n\r\n");
  /* The protocol named is the one the request was received with. */
  expect_request("GET / HTTP/1.0\r\nHost: h\r\n\r\n", 0,
                 "GET / HTTP/1.1\r\nHost: h\r\n" XF("h") "Via: 1.0 sluice\r\n\r\n");
}

/* Regression: as for X-Forwarded-For, only the last of several Via lines is kept. */
static void test_request_via_several_lines(void **state) {
  (void)state;
  expect_request(
      "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 fred\r\nVia: 1.1 p.example\r\n\r\n", 0,
      "GET / HTTP/1.1\r\nHost: h\r\n" XF("h") "Via: 1.0 fred, 1.1 p.example, 1.1 sluice\r\n\r\n");
}

static void test_request_host_added(void **state) {
  (void)state;
  expect_request("GET /x HTTP/1.0\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n", 0,
                 "GET /x HTTP/1.1\r\nAccept: */*\r\nHost: backend:8080\r\n"
                 "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n"
                 "Via: 1.0 sluice\r\n\r\n");
  /* The request line is rebuilt: method, target as received, HTTP/1.1. */
  expect_request("OPTIONS * HTTP/1.0\r\n\r\n", 0,
                 "OPTIONS * HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-For: 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nVia: 1.0 sluice\r\n\r\n");
}

/*
 * Regression: trailer fields of a chunked request end up in the head sent upstream
 * (the parser appends them to the header table, and the head is written once
 * the body is in). RFC 9110 6.5.1: trailer fields are not merged into the
 * header section.
 */
static void test_request_trailers_not_forwarded(void **state) {
  (void)state;
  expect_request("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
                 5, "POST /p HTTP/1.1\r\nHost: h\r\n" XF("h") VIA11 "Content-Length: 5\r\n\r\n");
}

/* ---- Responses --------------------------------------------------------------- */

#define RESP_CL                                                                                    \
  "HTTP/1.1 200 OK\r\n"                                                                            \
  "Content-Type: text/plain\r\n"                                                                   \
  "Content-Length: 5\r\n"                                                                          \
  "Connection: keep-alive, X-Hop\r\n"                                                              \
  "X-Hop: 1\r\n"                                                                                   \
  "Keep-Alive: timeout=5\r\n"                                                                      \
  "Proxy-Authenticate: Basic\r\n"                                                                  \
  "Trailer: X-T\r\n"                                                                               \
  "Upgrade: h2c\r\n"                                                                               \
  "Set-Cookie: a=1\r\n"                                                                            \
  "Set-Cookie: b=2\r\n"                                                                            \
  "\r\n"                                                                                           \
  "hello"
#define RESP_CL_OUT                                                                                \
  "HTTP/1.1 200 OK\r\n"                                                                            \
  "Content-Type: text/plain\r\n"                                                                   \
  "Set-Cookie: a=1\r\n"                                                                            \
  "Set-Cookie: b=2\r\n" VIA11 "Content-Length: 5\r\n"

static void test_response_length(void **state) {
  (void)state;
  expect_response(REQ11, RESP_CL, SL_FRAME_LENGTH, true, RESP_CL_OUT "\r\n");
  expect_response(REQ11, RESP_CL, SL_FRAME_LENGTH, false, RESP_CL_OUT "Connection: close\r\n\r\n");
  expect_response(REQ10, RESP_CL, SL_FRAME_LENGTH, true,
                  RESP_CL_OUT "Connection: keep-alive\r\n\r\n");
  expect_response(REQ10, RESP_CL, SL_FRAME_LENGTH, false, RESP_CL_OUT "Connection: close\r\n\r\n");
}

static void test_response_chunked(void **state) {
  (void)state;
  expect_response(REQ11, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
                  SL_FRAME_CHUNKED, true,
                  "HTTP/1.1 200 OK\r\nX-A: 1\r\n" VIA11 "Transfer-Encoding: chunked\r\n\r\n");
  /* A close-delimited upstream body is chunked for a 1.1 client. */
  expect_response(REQ11, "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n", SL_FRAME_CHUNKED, true,
                  "HTTP/1.1 200 OK\r\nX-A: 1\r\nVia: 1.0 sluice\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
}

static void test_response_close(void **state) {
  (void)state;
  expect_response(REQ10, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
                  SL_FRAME_CLOSE, false,
                  "HTTP/1.1 200 OK\r\nX-A: 1\r\n" VIA11 "Connection: close\r\n\r\n");
  expect_response(REQ10, "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n", SL_FRAME_CLOSE, false,
                  "HTTP/1.1 200 OK\r\nVia: 1.0 sluice\r\nConnection: close\r\n\r\n");
}

static void test_response_no_body(void **state) {
  (void)state;
  expect_response(REQ11, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", SL_FRAME_NONE, true,
                  "HTTP/1.1 204 No Content\r\nX-A: 1\r\n" VIA11 "\r\n");
  /* A 204 never carries a Content-Length, even if upstream sent one. */
  expect_response(REQ11, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", SL_FRAME_NONE,
                  true, "HTTP/1.1 204 No Content\r\n" VIA11 "\r\n");
  /* 304 and HEAD may announce the length of the body they do not carry. */
  expect_response(REQ11, "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n",
                  SL_FRAME_NONE, true,
                  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n" VIA11
                  "Content-Length: 10\r\n\r\n");
  expect_response(REQ11, "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n", SL_FRAME_NONE, true,
                  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n" VIA11 "\r\n");
  expect_response(HEAD11, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", SL_FRAME_NONE, true,
                  "HTTP/1.1 200 OK\r\n" VIA11 "Content-Length: 100\r\n\r\n");
  expect_response(HEAD11, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", SL_FRAME_NONE,
                  false, "HTTP/1.1 200 OK\r\n" VIA11 "Connection: close\r\n\r\n");
}

static void test_response_status_line(void **state) {
  (void)state;
  /* Always HTTP/1.1, with the upstream's reason when it gave one. */
  expect_response(REQ11, "HTTP/1.0 404 Nope, not here\r\nContent-Length: 0\r\n\r\n",
                  SL_FRAME_LENGTH, true,
                  "HTTP/1.1 404 Nope, not here\r\nVia: 1.0 sluice\r\nContent-Length: 0\r\n\r\n");
  expect_response(REQ10, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", SL_FRAME_LENGTH, false,
                  "HTTP/1.1 200 OK\r\n" VIA11 "Content-Length: 0\r\nConnection: close\r\n\r\n");
  /* Otherwise the standard one. */
  expect_response(REQ11, "HTTP/1.1 201 \r\nContent-Length: 0\r\n\r\n", SL_FRAME_LENGTH, true,
                  "HTTP/1.1 201 Created\r\n" VIA11 "Content-Length: 0\r\n\r\n");
  expect_response(REQ11, "HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n", SL_FRAME_LENGTH, true,
                  "HTTP/1.1 503 Service Unavailable\r\n" VIA11 "Content-Length: 0\r\n\r\n");
  /* A code the registry does not name: an empty reason, as the status line allows. */
  expect_response(REQ11, "HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n", SL_FRAME_LENGTH, true,
                  "HTTP/1.1 299 \r\n" VIA11 "Content-Length: 0\r\n\r\n");
  expect_response(REQ11, "HTTP/1.1 505\r\nContent-Length: 0\r\n\r\n", SL_FRAME_LENGTH, true,
                  "HTTP/1.1 505 HTTP Version Not Supported\r\n" VIA11 "Content-Length: 0\r\n\r\n");
}

static void test_response_via(void **state) {
  (void)state;
  expect_response(REQ11, "HTTP/1.1 200 OK\r\nVia: 1.1 cdn\r\nContent-Length: 0\r\n\r\n",
                  SL_FRAME_LENGTH, true,
                  "HTTP/1.1 200 OK\r\nVia: 1.1 cdn, 1.1 sluice\r\nContent-Length: 0\r\n\r\n");
}

static void test_is_hop_by_hop(void **state) {
  static const char *const hop[] = {
      "Connection",
      "connection",
      "Keep-Alive",
      "TE",
      "te",
      "Trailer",
      "Transfer-Encoding",
      "Upgrade",
      "UPGRADE",
      "Proxy-Connection",
      "Proxy-Authorization",
      "Proxy-Authenticate",
      "proxy-anything",
      "Proxy-",
  };
  static const char *const e2e[] = {
      "Host",
      "Content-Length",
      "Content-Type",
      "Proxy",
      "Proxy_Connection",
      "TEX",
      "T",
      "Trailers",
      "Connections",
      "Via",
      "X-Forwarded-For",
      "Expect",
      "Cookie",
      "",
  };

  (void)state;
  for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
    if (!sl_http_is_hop_by_hop(hop[i], strlen(hop[i])))
      fail_msg("%s is hop-by-hop", hop[i]);
  }
  for (size_t i = 0; i < sizeof(e2e) / sizeof(e2e[0]); i++) {
    if (sl_http_is_hop_by_hop(e2e[i], strlen(e2e[i])))
      fail_msg("%s is not hop-by-hop", e2e[i]);
  }
  /* Only <len> bytes count. */
  assert_true(sl_http_is_hop_by_hop("TE: x", 2));
  assert_false(sl_http_is_hop_by_hop("Connection", 4));
}

/* A stored header block gives back the fields the proxy wrote into it: the
 * rebuild after an unclean stop reads a spilled request's Idempotency-Key so. */
static void test_fields_get(void **state) {
  struct sl_http_parser p;
  struct sl_buf fields;
  const char *v;
  size_t len;

  (void)state;
  parse(&p, HTTP_REQUEST,
        "POST /orders HTTP/1.1\r\nHost: shop\r\nidempotency-key:  k-42 \r\n"
        "Idempotency-Key: second\r\nContent-Length: 0\r\n\r\n",
        false);
  sl_buf_init(&fields);
  assert_int_equal(sl_http_write_request_fields(&fields, &p.msg, &default_fwd), 0);
  assert_true(sl_http_fields_get(fields.base, fields.len, "Idempotency-Key", &v, &len));
  assert_int_equal(len, 4); /* the first field, its value without the spaces around it */
  assert_memory_equal(v, "k-42", 4);
  assert_true(sl_http_fields_get(fields.base, fields.len, "host", &v, &len));
  assert_int_equal(len, 4);
  assert_memory_equal(v, "shop", 4);
  /* Names match whole: a prefix or a longer name is not the field. */
  assert_false(sl_http_fields_get(fields.base, fields.len, "Idempotency", &v, &len));
  assert_false(sl_http_fields_get(fields.base, fields.len, "Hosts", &v, &len));
  /* A block cut short, an empty value, an empty block. */
  assert_true(sl_http_fields_get("A: 1\r\nKey: v", 12, "key", &v, &len));
  assert_int_equal(len, 1);
  assert_true(sl_http_fields_get("Key:\r\n", 6, "Key", &v, &len));
  assert_int_equal(len, 0);
  assert_false(sl_http_fields_get("", 0, "Key", &v, &len));
  sl_buf_dispose(&fields);
  sl_http_parser_dispose(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_end_to_end_kept),
      cmocka_unit_test(test_request_hop_by_hop_dropped),
      cmocka_unit_test(test_request_connection_named_dropped),
      cmocka_unit_test(test_request_content_length),
      cmocka_unit_test(test_request_expect_dropped),
      cmocka_unit_test(test_request_x_forwarded_for),
      cmocka_unit_test(test_request_x_forwarded_for_several_lines),
      cmocka_unit_test(test_request_x_forwarded_proto_host),
      cmocka_unit_test(test_request_via),
      cmocka_unit_test(test_request_via_several_lines),
      cmocka_unit_test(test_request_host_added),
      cmocka_unit_test(test_request_trailers_not_forwarded),
      cmocka_unit_test(test_response_length),
      cmocka_unit_test(test_response_chunked),
      cmocka_unit_test(test_response_close),
      cmocka_unit_test(test_response_no_body),
      cmocka_unit_test(test_response_status_line),
      cmocka_unit_test(test_response_via),
      cmocka_unit_test(test_is_hop_by_hop),
      cmocka_unit_test(test_fields_get),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
