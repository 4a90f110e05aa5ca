/*
 * What the drainer adds to an upstream exchange (include/sluice/exchange.h):
 * the request as ready bytes, the whole response kept in memory up to a bound,
 * Retry-After read, and a start that never calls back before it returns. See
 * include/sluice/replay.h.
 */
#include "sluice/replay.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/clock.h"
#include "sluice/exchange.h"
#include "sluice/util.h"

struct sl_replay {
  struct sl_upx *x;
  struct sl_buf req;  /* lent to the exchange: emptied if its write outlives the replay */
  struct sl_buf body; /* the response body kept */
  bool truncated;
  bool starting; /* inside sl_replay_start: failures are returned, not called back */
  int early_error;
  size_t max_body;
  sl_replay_cb cb;
  void *arg;
};

static void replay_free(struct sl_replay *r) {
  sl_upx_destroy(r->x); /* inside its callback: freed once that returns */
  sl_buf_dispose(&r->req);
  sl_buf_dispose(&r->body);
  free(r);
}

static int on_head(struct sl_upx *x, const struct sl_http_msg *head, void *arg) {
  struct sl_replay *r = arg;

  (void)x;
  (void)head;
  sl_buf_reset(&r->body);
  r->truncated = false;
  return 0;
}

static int on_body(struct sl_upx *x, const char *data, size_t len, void *arg) {
  struct sl_replay *r = arg;
  size_t room = r->max_body > r->body.len ? r->max_body - r->body.len : 0;

  (void)x;
  if (len > room) {
    r->truncated = true;
    len = room;
  }
  return sl_buf_append(&r->body, data, len) != 0 ? UV_ENOMEM : 0;
}

static void on_end(struct sl_upx *x, const struct sl_upx_result *res, void *arg) {
  struct sl_replay *r = arg;
  struct sl_replay_result out = {
      .error = res->error,
      .what = res->what,
      .nothing_sent = res->nothing_sent,
      .duration_ns = res->duration_ns,
  };

  (void)x;
  if (r->starting) {
    r->early_error = res->error != 0 ? res->error : UV_EIO;
    return;
  }
  if (res->error == 0) {
    const struct sl_http_header *ra = sl_http_msg_header(res->head, "retry-after");

    out.status = res->head->status;
    out.head = res->head;
    out.body = &r->body;
    out.truncated = r->truncated;
    if (ra != NULL)
      out.retry_after_ms = sl_replay_parse_retry_after(sl_http_msg_str(res->head, ra->value_off),
                                                       ra->value_len, sl_clock_wall_ms());
  }
  r->cb(&out, r->arg);
  replay_free(r);
}

static const struct sl_upx_callbacks replay_callbacks = {
    .on_head = on_head,
    .on_body = on_body,
    .on_end = on_end,
};

/* The llhttp method of the request line at <req> (<len> bytes), or -1. */
static int method_of(const char *req, size_t len) {
#define METHOD_NAME(num, name, string) {#string, HTTP_##name},
  static const struct {
    const char *name;
    int method;
  } methods[] = {HTTP_ALL_METHOD_MAP(METHOD_NAME)};
#undef METHOD_NAME
  const char *sp = memchr(req, ' ', len);
  size_t n = sp != NULL ? (size_t)(sp - req) : 0;

  for (size_t i = 0; n > 0 && i < sl_countof(methods); i++) {
    if (strlen(methods[i].name) == n && memcmp(methods[i].name, req, n) == 0)
      return methods[i].method;
  }
  return -1;
}

int sl_replay_start(struct sl_upstream *pool, const char *req, size_t len, uint64_t timeout_ms,
                    size_t max_body, sl_replay_cb cb, void *arg, struct sl_replay **out) {
  struct sl_replay *r;
  int method = method_of(req, len);
  int rc;

  if (method < 0)
    return UV_EINVAL;
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return UV_ENOMEM;
  r->max_body = max_body;
  r->cb = cb;
  r->arg = arg;
  sl_buf_init(&r->req);
  sl_buf_init(&r->body);
  r->x = sl_upx_create(&replay_callbacks, r);
  if (r->x == NULL || sl_buf_append(&r->req, req, len) != 0) {
    replay_free(r);
    return UV_ENOMEM;
  }
  /* A failure at once is returned here, not through <cb>, so that the
   * callback never runs before the caller has the replay. */
  r->starting = true;
  sl_upx_start(
      r->x, pool,
      &(struct sl_upx_request){
          .method = (uint8_t)method, .head = &r->req, .body = NULL, .timeout_ms = timeout_ms});
  r->starting = false;
  if (r->early_error != 0) {
    rc = r->early_error;
    replay_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

void sl_replay_cancel(struct sl_replay *r) {
  if (r == NULL)
    return;
  replay_free(r); /* cancels the exchange: its connection is closed */
}

uint64_t sl_replay_parse_retry_after(const char *value, size_t len, uint64_t now_ms) {
  char tmp[64];
  struct tm tm;
  char *end;
  unsigned long long secs;
  time_t t;

  if (len == 0 || len >= sizeof(tmp))
    return 0;
  memcpy(tmp, value, len);
  tmp[len] = '\0';
  if (tmp[0] >= '0' && tmp[0] <= '9') {
    secs = strtoull(tmp, &end, 10);
    return *end == '\0' && secs < 86400ull * 365 ? secs * 1000 : 0;
  }
  memset(&tm, 0, sizeof(tm));
  end = strptime(tmp, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == NULL || *end != '\0')
    return 0;
  t = timegm(&tm);
  if (t < 0 || (uint64_t)t * 1000 <= now_ms)
    return 0;
  return (uint64_t)t * 1000 - now_ms;
}
