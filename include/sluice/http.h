/*
 * HTTP/1.x message model and the llhttp wrapper that fills it. No I/O.
 *
 * A parser turns bytes into one `struct sl_http_msg` at a time: the request
 * or status line and headers are copied into the message's own buffer (so
 * they outlive the network buffer they came from), body bytes are handed to
 * the caller's on_body callback as borrowed slices that are valid only during
 * the call. After a complete message the parser pauses: bytes after it (a
 * pipelined request) are left for the caller to feed once it is ready.
 *
 * Parsing is strict. A request with Content-Length and Transfer-Encoding,
 * duplicate or invalid Content-Length, bad chunk framing, invalid header
 * bytes or bare LF line ends is an error: nothing of it may be forwarded.
 * So is a request that breaks a rule of RFC 9112 about the head as a whole:
 * an HTTP-version other than 1.x (or none, HTTP/0.9), a missing or repeated
 * Host, a Transfer-Encoding that is empty or does not end in chunked, or one
 * that names a coding besides chunked. Such requests fail at the end of the
 * head, before any body byte is read, so the answer never waits for a body
 * that would only be dropped.
 *
 * @thread owner only
 */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <llhttp.h>

#include "sluice/buf.h"

struct sl_http_header {
  uint32_t name_off, name_len;
  uint32_t value_off, value_len;
};

struct sl_http_msg {
  struct sl_buf raw; /* target, reason, header names and values */
  struct sl_http_header *headers;
  size_t n_headers, cap_headers;
  uint32_t target_off, target_len; /* requests */
  uint32_t reason_off, reason_len; /* responses */
  uint8_t method;                  /* llhttp_method_t, requests */
  uint16_t status;                 /* responses */
  uint8_t http_major, http_minor;
  int64_t content_length; /* -1 when absent */
  bool chunked;
  bool other_codings;   /* Transfer-Encoding names a coding besides chunked */
  bool keep_alive;      /* llhttp_should_keep_alive() at the end of the head */
  bool expect_continue; /* request had "Expect: 100-continue" */
  bool no_body;         /* response has no body (HEAD, 1xx, 204, 304) */
  /* How many headers of each name the parser's own checks read, counted once as
   * each name ends: a message without them costs those checks no scan. */
  uint32_t n_host, n_content_length, n_transfer_encoding, n_connection, n_expect;
};

static inline const char *sl_http_msg_str(const struct sl_http_msg *m, uint32_t off) {
  return m->raw.base + off;
}

/* Finds the first header named <name> (case-insensitive); NULL if absent. */
const struct sl_http_header *sl_http_msg_header(const struct sl_http_msg *m, const char *name);

/* Whether some header named <name> of <m> lists <token> (<len> bytes) as one
 * of its comma-separated elements, compared case-insensitively with the
 * optional whitespace (SP and HTAB) around each element ignored (RFC 9110 5.6.1). */
bool sl_http_msg_has_token(const struct sl_http_msg *m, const char *name, const char *token,
                           size_t len);

/*
 * Why a message failed to parse: a state kept in the parser (<error>) and
 * turned into a response status, not an error return, so it stays a small
 * positive enum outside the negative error space of sluice/error.h. The
 * parser's functions report a failure with -1 and leave the reason here.
 */
enum sl_http_error {
  SL_HTTP_OK = 0,
  SL_HTTP_EBADMSG,      /* malformed: 400 (request) or 502 (response) */
  SL_HTTP_EHEADERSIZE,  /* head over the limit: 431 */
  SL_HTTP_EBODYSIZE,    /* body over the limit: 413 */
  SL_HTTP_EUNSUPPORTED, /* e.g. Expect other than 100-continue: 417 */
  SL_HTTP_EVERSION,     /* HTTP-version other than 1.x, or none (HTTP/0.9): 505 */
  SL_HTTP_ECODING,      /* a transfer coding besides chunked: 501 */
  SL_HTTP_ENOMEM,
};

/* The status a server answers a request parse error <e> with. */
unsigned sl_http_error_status(enum sl_http_error e);

struct sl_http_parser;

/* Called once the head is complete. Return 0 to go on, -1 to stop with an error
 * the callback has recorded in the parser (sl_http_parser_fail). */
typedef int (*sl_http_head_cb)(struct sl_http_parser *p, struct sl_http_msg *msg);
/* Body bytes, valid only during the call. */
typedef int (*sl_http_body_cb)(struct sl_http_parser *p, const char *data, size_t len);
/* The message is complete; the parser pauses after this returns. */
typedef int (*sl_http_done_cb)(struct sl_http_parser *p);

struct sl_http_parser {
  llhttp_t ll;
  llhttp_settings_t settings;
  struct sl_http_msg msg;
  uint64_t max_header_bytes;
  uint64_t max_body_bytes;
  uint64_t header_bytes;
  uint64_t body_bytes;
  enum sl_http_error error;
  const char *error_reason;            /* static text for logs */
  bool in_field, field_done, in_value; /* where in a header line llhttp is */
  bool head_done;
  bool started; /* a byte of the current message was seen */
  bool msg_done;
  bool response_to_head; /* responses: the request was HEAD */
  /* Bare-LF scan of a request head (see parser.c). */
  bool scan_done, scan_seen_text, scan_line_empty;
  bool scan_line1_done;  /* the request line has ended */
  uint8_t scan_line1_sp; /* SP bytes in the request line, up to 2 */
  bool trailer_pause;    /* paused at the last chunk to scan the trailers */
  char scan_prev;
  sl_http_head_cb on_head;
  sl_http_body_cb on_body;
  sl_http_done_cb on_done;
  void *data; /* for the caller */
};

/*
 * Prepares <p> to parse requests (<type> HTTP_REQUEST) or responses
 * (HTTP_RESPONSE). <max_header_bytes> and <max_body_bytes> (0 = no limit)
 * bound each message; a body over the limit fails as soon as it is announced
 * (by its Content-Length, or by the size line of the chunk that would cross it). Call
 * sl_http_parser_dispose() when done.
 */
void sl_http_parser_init(struct sl_http_parser *p, llhttp_type_t type, uint64_t max_header_bytes,
                         uint64_t max_body_bytes, sl_http_head_cb on_head, sl_http_body_cb on_body,
                         sl_http_done_cb on_done, void *data);
void sl_http_parser_dispose(struct sl_http_parser *p);

/* Starts a new message (after the previous one completed). For responses,
 * <response_to_head> says that the request was HEAD, so the body is empty. */
void sl_http_parser_next(struct sl_http_parser *p, bool response_to_head);

/*
 * Feeds <len> bytes. Returns the number consumed: all of them, or fewer when
 * the message completed (the rest belongs to the next message; call
 * sl_http_parser_next() and feed it again). Returns -1 on error, with
 * p->error and p->error_reason set.
 */
ssize_t sl_http_parser_feed(struct sl_http_parser *p, const char *data, size_t len);

/* Tells the parser the peer closed. A close-delimited response completes
 * here (on_done runs); anything else incomplete becomes an error. Returns 0 or -1. */
int sl_http_parser_finish(struct sl_http_parser *p);

/* Records an error from inside a callback; the callback then returns -1. */
void sl_http_parser_fail(struct sl_http_parser *p, enum sl_http_error err, const char *reason);

/* Returns true for methods that are idempotent (RFC 9110 9.2.2). */
bool sl_http_method_idempotent(uint8_t method);

/* The reason phrase registered for <status> (RFC 9110 15 and the IANA HTTP
 * Status Code Registry); "" for a code without one, which makes a valid
 * status line all the same. Every status line sluice writes takes it from here. */
const char *sl_http_reason(unsigned status);

/*
 * Header rewriting for proxying (RFC 9110 7.6.1): the hop-by-hop headers
 * (Connection and the headers it names, Keep-Alive, TE, Trailer, Upgrade,
 * Proxy-*) are dropped, framing headers are dropped so that the writer can
 * frame the message anew.
 */
struct sl_http_forward {
  const char *client_addr;   /* text IP of the client, for X-Forwarded-For */
  const char *proto;         /* "http" */
  const char *upstream_host; /* "host:port", used when the request has no Host */
  uint64_t body_len;         /* body bytes that follow the head */
};

/* Appends the request head to send upstream: request line (HTTP/1.1), the
 * end-to-end headers, X-Forwarded-*, Via and Content-Length. Returns 0 or -1 (ENOMEM). */
int sl_http_write_request_head(struct sl_buf *out, const struct sl_http_msg *req,
                               const struct sl_http_forward *fwd);

/* The parts of it, for a request stored now and sent later (a spilled one):
 * the header fields alone ("Name: value\r\n" lines: end-to-end headers,
 * X-Forwarded-*, Via; client-sent X-Sluice-* dropped), the request line, and
 * the Content-Length line when one is due. Each returns 0 or -1 (ENOMEM). */
int sl_http_write_request_fields(struct sl_buf *out, const struct sl_http_msg *req,
                                 const struct sl_http_forward *fwd);
/* Finds the first field <name> (case-insensitive) in a block written by
 * sl_http_write_request_fields, read back from the spool: sets <*value> and
 * <*value_len> (pointing into <fields>) and returns true, or returns false. */
bool sl_http_fields_get(const char *fields, size_t len, const char *name, const char **value,
                        size_t *value_len);
int sl_http_write_request_line(struct sl_buf *out, const char *method, size_t method_len,
                               const char *target, size_t target_len);
int sl_http_write_content_length(struct sl_buf *out, const char *method, size_t method_len,
                                 uint64_t body_len);

enum sl_http_framing {
  SL_FRAME_NONE,    /* no body (HEAD, 204, 304) */
  SL_FRAME_LENGTH,  /* Content-Length */
  SL_FRAME_CHUNKED, /* re-chunked for an HTTP/1.1 client */
  SL_FRAME_CLOSE,   /* delimited by closing the connection (HTTP/1.0 client) */
};

/* Appends the response head for the client. <keep_alive> says whether the
 * connection stays open after it; <framing> how the body is framed (a
 * Content-Length comes from <resp>). Returns 0 or UV_ENOMEM. */
int sl_http_write_response_head(struct sl_buf *out, const struct sl_http_msg *resp,
                                const struct sl_http_msg *req, enum sl_http_framing framing,
                                bool keep_alive);

/* Whether header <name> (<len> bytes) is hop-by-hop for every message. */
bool sl_http_is_hop_by_hop(const char *name, size_t len);

#endif
