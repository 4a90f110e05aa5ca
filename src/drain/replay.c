/*
 * One upstream exchange for the drainer: write the request, read the whole
 * response into memory, report. See include/sluice/replay.h.
 */
#include "sluice/replay.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/clock.h"
#include "sluice/log.h"

struct sl_replay {
  struct sl_upstream *pool;
  struct sl_upconn *uc;
  struct sl_buf req;
  struct sl_buf body;
  struct sl_http_parser resp;
  uv_write_t *write; /* pending write, detached on cancel */
  bool idempotent;
  bool head_request;
  bool retried;
  bool truncated;
  bool starting; /* inside sl_replay_start: failures are returned, not called back */
  int early_error;
  uint64_t timeout_ms;
  size_t max_body;
  sl_replay_cb cb;
  void *arg;
};

struct replay_write {
  uv_write_t req;
  struct sl_replay *r; /* NULL once the replay is gone */
};

static void send_request(struct sl_replay *r);

static void replay_free(struct sl_replay *r) {
  if (r->write != NULL)
    ((struct replay_write *)r->write)->r = NULL;
  sl_buf_dispose(&r->req);
  sl_buf_dispose(&r->body);
  sl_http_parser_dispose(&r->resp);
  free(r);
}

static void finish(struct sl_replay *r, int error, const char *what) {
  struct sl_replay_result res = {.error = error, .what = what};
  bool reusable = false;

  if (r->starting) {
    if (r->uc != NULL)
      sl_upconn_abort(r->uc);
    r->uc = NULL;
    r->early_error = error != 0 ? error : UV_EIO;
    return;
  }
  if (error == 0) {
    const struct sl_http_header *ra = sl_http_msg_header(&r->resp.msg, "retry-after");

    res.status = r->resp.msg.status;
    res.head = &r->resp.msg;
    res.body = &r->body;
    res.truncated = r->truncated;
    if (ra != NULL)
      res.retry_after_ms = sl_replay_parse_retry_after(sl_http_msg_str(&r->resp.msg, ra->value_off),
                                                       ra->value_len, sl_clock_wall_ms());
    reusable = r->resp.msg.keep_alive;
  }
  if (r->uc != NULL) {
    if (reusable)
      sl_upconn_release(r->uc, true);
    else
      sl_upconn_abort(r->uc);
    r->uc = NULL;
  }
  r->cb(&res, r->arg);
  replay_free(r);
}

static void attempt(struct sl_replay *r, bool fresh);

/* A reused connection that fails before any response byte was most likely
 * closed by the backend while idle. */
static bool retry_stale(struct sl_replay *r) {
  if (!sl_upconn_stale_retry_ok(r->uc, r->retried, r->resp.started, r->idempotent))
    return false;
  r->retried = true;
  sl_upconn_abort(r->uc);
  r->uc = NULL;
  if (r->write != NULL) {
    ((struct replay_write *)r->write)->r = NULL;
    r->write = NULL;
  }
  attempt(r, true);
  return true;
}

static void on_ready(struct sl_upconn *uc, int status, void *arg) {
  struct sl_replay *r = arg;

  (void)uc;
  if (status < 0) {
    r->uc = NULL;
    finish(r, status, "connect failed");
    return;
  }
  send_request(r);
}

static void attempt(struct sl_replay *r, bool fresh) {
  int rc = sl_upstream_get(r->pool, fresh, on_ready, r, &r->uc);

  if (rc == 1)
    send_request(r);
  else if (rc < 0) {
    r->uc = NULL;
    finish(r, rc, "connect failed");
  }
}

static void on_timeout(struct sl_upconn *uc, void *arg) {
  (void)uc;
  finish(arg, UV_ETIMEDOUT, "no response in time");
}

static int on_body(struct sl_http_parser *p, const char *data, size_t len) {
  struct sl_replay *r = p->data;
  size_t room = r->max_body > r->body.len ? r->max_body - r->body.len : 0;

  if (len > room) {
    r->truncated = true;
    len = room;
  }
  if (sl_buf_append(&r->body, data, len) != 0) {
    sl_http_parser_fail(p, SL_HTTP_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static void on_read(struct sl_upconn *uc, ssize_t nread, const char *buf, void *arg) {
  struct sl_replay *r = arg;
  size_t done = 0;

  if (nread < 0) {
    if (nread == UV_EOF && r->resp.head_done && sl_http_parser_finish(&r->resp) == 0) {
      finish(r, 0, NULL); /* close-delimited body */
      return;
    }
    if (!retry_stale(r))
      finish(r, r->resp.started ? UV_ECONNRESET : (int)nread,
             r->resp.started ? "response cut short" : "closed without a response");
    return;
  }
  while (done < (size_t)nread) {
    ssize_t n = sl_http_parser_feed(&r->resp, buf + done, (size_t)nread - done);

    if (n < 0) {
      finish(r, UV_EPROTO, "bad response");
      return;
    }
    done += (size_t)n;
    if (!r->resp.msg_done)
      break;
    if (r->resp.msg.status >= 200) {
      if (done != (size_t)nread)
        r->resp.msg.keep_alive = false; /* out of step: do not reuse */
      finish(r, 0, NULL);
      return;
    }
    /* A 1xx interim response: the final one follows. */
    sl_http_parser_next(&r->resp, r->head_request);
    sl_buf_reset(&r->body);
  }
  sl_upconn_set_timer(uc, r->timeout_ms, on_timeout);
}

static void on_write(uv_write_t *req, int status) {
  struct replay_write *w = (struct replay_write *)req;
  struct sl_replay *r = w->r;

  free(w);
  if (r == NULL)
    return;
  r->write = NULL;
  if (status < 0 && !retry_stale(r))
    finish(r, status, "sending the request failed");
}

static void send_request(struct sl_replay *r) {
  struct replay_write *w = malloc(sizeof(*w));
  uv_buf_t b = uv_buf_init(r->req.base, (unsigned)r->req.len);

  if (w == NULL) {
    finish(r, UV_ENOMEM, "out of memory");
    return;
  }
  w->r = r;
  r->write = &w->req;
  sl_http_parser_next(&r->resp, r->head_request);
  sl_buf_reset(&r->body);
  r->truncated = false;
  if (uv_write(&w->req, sl_upconn_stream(r->uc), &b, 1, on_write) != 0) {
    free(w);
    r->write = NULL;
    if (!retry_stale(r))
      finish(r, UV_EPIPE, "sending the request failed");
    return;
  }
  if (sl_upconn_read_start(r->uc, on_read) != 0) {
    finish(r, UV_EIO, "reading the response failed");
    return;
  }
  sl_upconn_set_timer(r->uc, r->timeout_ms, on_timeout);
}

int sl_replay_start(struct sl_upstream *pool, const char *req, size_t len, bool idempotent,
                    bool head_request, uint64_t timeout_ms, size_t max_body, sl_replay_cb cb,
                    void *arg, struct sl_replay **out) {
  struct sl_replay *r = calloc(1, sizeof(*r));
  int rc;

  if (r == NULL)
    return UV_ENOMEM;
  r->pool = pool;
  r->idempotent = idempotent;
  r->head_request = head_request;
  r->timeout_ms = timeout_ms;
  r->max_body = max_body;
  r->cb = cb;
  r->arg = arg;
  sl_buf_init(&r->req);
  sl_buf_init(&r->body);
  sl_http_parser_init(&r->resp, HTTP_RESPONSE, 64 * 1024, 0, NULL, on_body, NULL, r);
  if (sl_buf_append(&r->req, req, len) != 0) {
    replay_free(r);
    return UV_ENOMEM;
  }
  /* The first attempt reports a failure to start here, not through <cb>, so
   * that the callback never runs before the caller has the replay. */
  rc = sl_upstream_get(pool, false, on_ready, r, &r->uc);
  if (rc < 0) {
    r->uc = NULL;
    replay_free(r);
    return rc;
  }
  if (rc == 1) {
    r->starting = true;
    send_request(r);
    r->starting = false;
    if (r->early_error != 0) {
      rc = r->early_error;
      replay_free(r);
      return rc;
    }
  }
  *out = r;
  return 0;
}

void sl_replay_cancel(struct sl_replay *r) {
  if (r == NULL)
    return;
  if (r->uc != NULL)
    sl_upconn_abort(r->uc);
  r->uc = NULL;
  replay_free(r);
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
