/*
 * Access log: one line per request on stdout (or log.access_file), written off
 * the loop.
 *
 * Lines collect in a buffer that goes to the threadpool with uv_fs_write when
 * it passes a threshold or when a short timer fires, so a slow terminal or a
 * full pipe never stalls request handling. While one write is in flight the
 * next lines collect in a second buffer; past a hard cap lines are dropped and
 * counted rather than letting memory grow without bound.
 *
 * Format (space-separated, one request per line):
 *   time client "METHOD target HTTP/x.y" status bytes upstream_seconds total_seconds
 */
#include "server_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/clock.h"
#include "sluice/log.h"

#define FLUSH_BYTES (32 * 1024)
#define FLUSH_MS 200
#define MAX_BUFFERED (4 * 1024 * 1024)

struct sl_access_log {
  uv_loop_t *loop;
  uv_timer_t timer;
  uv_fs_t req;
  struct sl_buf filling;
  struct sl_buf writing; /* owned by the write in flight */
  bool write_in_flight;
  bool closing;
  bool timer_closed;
  uint64_t dropped;
  time_t cached_sec;
  char cached_time[32];
};

static void start_write(struct sl_access_log *log);

static void free_log(struct sl_access_log *log) {
  sl_buf_dispose(&log->filling);
  sl_buf_dispose(&log->writing);
  free(log);
}

static void on_timer_closed(uv_handle_t *h) {
  struct sl_access_log *log = h->data;

  log->timer_closed = true;
  if (!log->write_in_flight)
    free_log(log);
}

static void on_written(uv_fs_t *req) {
  struct sl_access_log *log = req->data;

  uv_fs_req_cleanup(req);
  log->write_in_flight = false;
  sl_buf_reset(&log->writing);
  if (log->closing || log->filling.len >= FLUSH_BYTES)
    start_write(log); /* at close, the last lines */
  if (log->timer_closed && !log->write_in_flight)
    free_log(log);
}

static void start_write(struct sl_access_log *log) {
  struct sl_buf tmp;
  uv_buf_t b;

  if (log->write_in_flight || log->filling.len == 0)
    return;
  tmp = log->writing;
  log->writing = log->filling;
  log->filling = tmp;
  b = uv_buf_init(log->writing.base, (unsigned)log->writing.len);
  log->req.data = log;
  /* The output's descriptor is stable: a reopen (SIGUSR1) swaps the file under it. */
  if (uv_fs_write(log->loop, &log->req, sl_log_output_fd(SL_LOG_OUTPUT_ACCESS), &b, 1, -1,
                  on_written) == 0)
    log->write_in_flight = true;
  else
    sl_buf_reset(&log->writing);
}

static void on_timer(uv_timer_t *t) { start_write(t->data); }

struct sl_access_log *sl__access_log_create(uv_loop_t *loop) {
  struct sl_access_log *log = calloc(1, sizeof(*log));

  if (log == NULL)
    return NULL;
  log->loop = loop;
  uv_timer_init(loop, &log->timer);
  log->timer.data = log;
  /* The flush timer must not keep the loop alive on its own. */
  uv_timer_start(&log->timer, on_timer, FLUSH_MS, FLUSH_MS);
  uv_unref((uv_handle_t *)&log->timer);
  return log;
}

void sl__access_log_destroy(struct sl_access_log *log) {
  if (log == NULL)
    return;
  log->closing = true;
  start_write(log);
  uv_close((uv_handle_t *)&log->timer, on_timer_closed);
}

static const char *format_time(struct sl_access_log *log) {
  time_t now = (time_t)(sl_clock_wall_ms() / 1000);
  struct tm tm;

  if (now != log->cached_sec) {
    gmtime_r(&now, &tm);
    strftime(log->cached_time, sizeof(log->cached_time), "%Y-%m-%dT%H:%M:%SZ", &tm);
    log->cached_sec = now;
  }
  return log->cached_time;
}

void sl__access_log_write(struct sl_access_log *log, const struct sl_conn *c) {
  const struct sl_http_msg *m = &c->h1.parser.msg;
  uint64_t total_ns = sl_clock_mono_ns() - c->t_start_ns;
  const char *method = "-", *target = "-";
  int target_len = 1;

  if (log->closing)
    return;
  if (log->filling.len > MAX_BUFFERED) {
    log->dropped++;
    return;
  }
  if (c->h1.parser.head_done) {
    method = llhttp_method_name((llhttp_method_t)m->method);
    target = m->raw.base + m->target_off;
    target_len = (int)m->target_len;
  }
  sl_buf_printf(&log->filling, "%s %s \"%s %.*s HTTP/%u.%u\" %u %llu %.3f %.3f\n", format_time(log),
                c->h1.client_addr, method, target_len, target, m->http_major, m->http_minor,
                c->status, (unsigned long long)c->bytes_out, (double)c->t_upstream_ns / 1e9,
                (double)total_ns / 1e9);
  if (log->filling.len >= FLUSH_BYTES)
    start_write(log);
}
