/*
 * libFuzzer harness for the llhttp wrapper (src/http/parser.c) and the header
 * rewriting that follows it (src/http/headers.c).
 *
 * Input: three control bytes, then the bytes of the stream.
 *   [0] bit 0: parse responses instead of requests; bit 1: small limits
 *   [1] the limits: max_header_bytes 16 + 8 * [1], max_body_bytes [1] + 1
 *   [2] seed of the choices: where the stream is split into sl_http_parser_feed
 *       calls, and whether each response answers a HEAD request
 * Every piece is copied into a buffer of its own exact size, so that a read
 * past the bytes the parser was given is an ASan report, not luck. Messages
 * are pipelined: after each one the parser is moved on with
 * sl_http_parser_next and fed the rest.
 *
 * Checks beyond the sanitizers: every offset of a parsed message stays inside
 * its buffer; the head sluice writes upstream for a request it accepted
 * (sl_http_write_request_head) parses again, strictly, as one complete request
 * with the same method and target; sl_http_fields_get finds what
 * sl_http_write_request_fields wrote, inside the block. A failed check aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sluice/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CONTROL_BYTES 3
#define MAX_FEEDS 100000 /* more calls than bytes means the parser stopped consuming */

struct run {
  struct sl_fuzz_rng rng;
  uint64_t body_bytes;
};

static void fail(const char *what, const char *detail, size_t len) {
  fprintf(stderr, "fuzz_http: %s\n%.*s\n", what, (int)len, detail ? detail : "");
  abort();
}

/* Every range a message names lies inside its raw buffer. */
static void check_msg(const struct sl_http_msg *m) {
  if ((uint64_t)m->target_off + m->target_len > m->raw.len ||
      (uint64_t)m->reason_off + m->reason_len > m->raw.len || m->n_headers > m->cap_headers)
    fail("message range outside its buffer", NULL, 0);
  for (size_t i = 0; i < m->n_headers; i++) {
    const struct sl_http_header *h = &m->headers[i];

    if ((uint64_t)h->name_off + h->name_len > m->raw.len ||
        (uint64_t)h->value_off + h->value_len > m->raw.len)
      fail("header range outside its buffer", NULL, 0);
  }
  sl_fuzz_touch(m->raw.base, m->raw.len);
}

/* Parses <head> (<len> bytes) as a request on its own; it must be one whole message. */
static void reparse(const struct sl_http_msg *orig, const char *head, size_t len) {
  struct sl_http_parser p;
  char *copy = malloc(len);
  ssize_t n;

  if (copy == NULL)
    abort();
  memcpy(copy, head, len);
  sl_http_parser_init(&p, HTTP_REQUEST, 0, 0, NULL, NULL, NULL, NULL);
  n = sl_http_parser_feed(&p, copy, len);
  if (n != (ssize_t)len || !p.msg_done)
    fail(p.error_reason ? p.error_reason : "the head written upstream is not one request", head,
         len);
  if (p.msg.method != orig->method || p.msg.target_len != orig->target_len ||
      memcmp(sl_http_msg_str(&p.msg, p.msg.target_off), sl_http_msg_str(orig, orig->target_off),
             orig->target_len) != 0)
    fail("the head written upstream changed the method or target", head, len);
  sl_http_parser_dispose(&p);
  free(copy);
}

/* Looks up <name> in the fields block; a value found must lie inside it. */
static bool field(const struct sl_buf *f, const char *name, const char **v, size_t *vlen) {
  if (!sl_http_fields_get(f->base, f->len, name, v, vlen))
    return false;
  if (*v < f->base || *v + *vlen > f->base + f->len)
    fail("sl_http_fields_get answered outside the block", f->base, f->len);
  return true;
}

static void check_fields(const struct sl_http_msg *m, const struct sl_buf *f) {
  const char *v;
  size_t vlen;
  char name[64];

  if (!field(f, "X-Forwarded-Proto", &v, &vlen) || vlen != 4 || memcmp(v, "http", 4) != 0)
    fail("no X-Forwarded-Proto: http among the fields written", f->base, f->len);
  if (!field(f, "host", &v, &vlen) || !field(f, "via", &v, &vlen))
    fail("no Host or Via among the fields written", f->base, f->len);
  field(f, "x-forwarded-for", &v, &vlen);
  /* A name the client sent, as a caller reading a stored request would ask for it. */
  if (m->n_headers > 0 && m->headers[0].name_len < sizeof(name)) {
    memcpy(name, sl_http_msg_str(m, m->headers[0].name_off), m->headers[0].name_len);
    name[m->headers[0].name_len] = '\0';
    field(f, name, &v, &vlen);
  }
}

static int on_head(struct sl_http_parser *p, struct sl_http_msg *m) {
  struct run *r = p->data;
  static const struct sl_http_forward fwd = {
      .client_addr = "192.0.2.1", .proto = "http", .upstream_host = "backend:80", .body_len = 0};
  struct sl_buf out;

  check_msg(m);
  sl_buf_init(&out);
  if (p->ll.type == HTTP_REQUEST) {
    if (sl_http_write_request_head(&out, m, &fwd) != 0)
      abort(); /* out of memory: ASan's allocator would have said so first */
    reparse(m, out.base, out.len);
    sl_buf_reset(&out);
    if (sl_http_write_request_fields(&out, m, &fwd) != 0)
      abort();
    check_fields(m, &out);
  } else {
    struct sl_http_msg req = {.http_major = 1,
                              .http_minor = (uint8_t)(sl_fuzz_rng_next(&r->rng) & 1)};
    enum sl_http_framing framing = (enum sl_http_framing)(sl_fuzz_rng_next(&r->rng) % 4);

    if (sl_http_write_response_head(&out, m, &req, framing, m->keep_alive) != 0)
      abort();
  }
  sl_buf_dispose(&out);
  return 0;
}

static int on_body(struct sl_http_parser *p, const char *at, size_t len) {
  struct run *r = p->data;

  if (!p->head_done || len == 0)
    fail("body bytes before the head, or none", NULL, 0);
  sl_fuzz_touch(at, len);
  r->body_bytes += len;
  return 0;
}

/* The size of the next piece: often one byte, the rest anything up to what is left. */
static size_t piece(struct run *r, size_t left) {
  uint32_t x = sl_fuzz_rng_next(&r->rng);

  if (x % 4 == 0)
    return 1;
  return 1 + (x >> 2) % left;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct sl_http_parser p;
  struct run r = {0};
  uint64_t max_header = 0, max_body = 0;
  size_t off = CONTROL_BYTES;
  unsigned feeds = 0;

  if (size < CONTROL_BYTES)
    return 0;
  if (data[0] & 2) {
    max_header = 16 + 8 * (uint64_t)data[1];
    max_body = (uint64_t)data[1] + 1;
  }
  sl_fuzz_rng_init(&r.rng, data[2]);
  sl_http_parser_init(&p, (data[0] & 1) ? HTTP_RESPONSE : HTTP_REQUEST, max_header, max_body,
                      on_head, on_body, NULL, &r);
  while (off < size && feeds++ < MAX_FEEDS) {
    size_t n = piece(&r, size - off);
    char *buf = malloc(n);
    ssize_t used;

    if (buf == NULL)
      abort();
    memcpy(buf, data + off, n);
    used = sl_http_parser_feed(&p, buf, n);
    free(buf);
    if (used < 0)
      break;
    if ((size_t)used > n || ((size_t)used < n && !p.msg_done))
      fail("feed consumed more than it was given, or stopped short", NULL, 0);
    off += (size_t)used;
    if (p.msg_done) {
      check_msg(&p.msg);
      sl_http_parser_next(&p, (sl_fuzz_rng_next(&r.rng) & 7) == 0);
    }
  }
  /* The peer closes: a close-delimited response ends here, anything else begun is cut. */
  if (p.error == SL_HTTP_OK && off >= size && p.started)
    sl_http_parser_finish(&p);
  if (p.error != SL_HTTP_OK) {
    unsigned status = sl_http_error_status(p.error);

    if (status < 400 || status > 599 || p.error_reason == NULL)
      fail("an error without a 4xx/5xx status or a reason", NULL, 0);
    sl_fuzz_touch(p.error_reason, strlen(p.error_reason));
  }
  sl_http_parser_dispose(&p);
  return 0;
}
