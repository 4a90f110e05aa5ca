/*
 * Writes the seed corpora of the four harnesses (tests/fuzz/README.md):
 *
 *   gen_seeds <corpus dir>     (fills <corpus dir>/fuzz_http, fuzz_spool, ...)
 *
 * The spool and journal seeds are files made by the real code: segment files
 * of every store (compressed and stored units, a sealed segment with its
 * footer, a delay bucket, dead letters) and journals with every frame sluice
 * writes, each behind the control byte its harness reads. The HTTP and config
 * seeds are written out from the literals below. The clock is fixed, so the
 * output changes only when the formats do (zstd's output aside).
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"
#include "sluice/spool.h"

#define SEED_NOW_MS 1700000000000ull /* the harnesses' SEED_NOW_MS */
#define HOUR_MS (3600ull * 1000)

static const char *out_http, *out_spool, *out_config, *out_journal;

/* Writes <len> bytes behind control byte <mode> as seed <name> of <dir>. */
static void seed(const char *dir, const char *name, int mode, const void *data, size_t len) {
  uint8_t *b = malloc(len + 1);

  if (b == NULL)
    abort();
  b[0] = (uint8_t)mode;
  memcpy(b + 1, data, len);
  sl_fuzz_write_file(dir, name, mode < 0 ? b + 1 : b, mode < 0 ? len : len + 1);
  free(b);
}

static void *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *b = NULL;
  long n;

  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
      (b = malloc((size_t)n + 1)) == NULL || fread(b, 1, (size_t)n, f) != (size_t)n) {
    perror(path);
    exit(1);
  }
  fclose(f);
  *len = (size_t)n;
  return b;
}

/* ---- HTTP: control bytes (mode, limits, split seed), then the stream ---------------------- */

#define LIT(s) s, sizeof(s) - 1

static void http_seed(const char *name, int mode, int limit, int split, const char *s, size_t n) {
  char *b = malloc(n + 2);

  if (b == NULL)
    abort();
  b[0] = (char)limit;
  b[1] = (char)split;
  memcpy(b + 2, s, n);
  seed(out_http, name, mode, b, n + 2);
  free(b);
}

static void gen_http(void) {
  http_seed("req_get", 0, 0, 1,
            LIT("GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"));
  http_seed("req_pipelined", 0, 0, 7,
            LIT("POST /orders HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nIdempotency-Key: k1\r\n"
                "X-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\n\r\nhello"
                "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n0\r\nTrailer-A: 1\r\n\r\n"
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  http_seed("req_hop_by_hop", 0, 0, 3,
            LIT("DELETE /r/1 HTTP/1.1\r\nHost: a:8080\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\n"
                "Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Auth: x\r\n"
                "X-Sluice-Delay: 10s\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"));
  http_seed("req_limits", 2, 8, 9,
            LIT("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"));
  http_seed("req_bad", 0, 0, 5,
            LIT("GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n"
                "\r\n"));
  http_seed(
      "resp_length", 1, 0, 2,
      LIT("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.0 up\r\n\r\nabc"
          "HTTP/1.1 204 No Content\r\n\r\n"
          "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"));
  http_seed("resp_chunked", 1, 0, 4,
            LIT("HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\nConnection: x\r\n\r\n"
                "a\r\n0123456789\r\n0\r\n\r\n"));
  http_seed("resp_close", 1, 0, 6, LIT("HTTP/1.0 200 OK\r\nServer: s\r\n\r\nuntil the close"));
}

/* ---- config: the control byte is absent (mode < 0): the input is the text ------------------ */

static void gen_config(void) {
  static const char minimal[] = "upstreams = ( { name = \"a\"; address = \"127.0.0.1:9000\"; } );\n"
                                "routes = ( { prefix = \"/\"; upstream = \"a\"; } );\n";
  static const char full[] =
      "listen = \"127.0.0.1:8080\";\n"
      "admin = { listen = \"[::1]:9464\"; token = \"t\"; };\n"
      "log = { level = \"warn\"; access = false; };\n"
      "limits = { max_header_bytes = \"16KiB\"; max_body_bytes = 8388608; header_timeout = "
      "\"10s\";\n  body_timeout = 0.25; idle_timeout = \"1h30m\"; max_connections = 10;\n"
      "  shutdown_timeout = \"250ms\"; max_delay = \"30d\"; };\n"
      "status_prefix = \"/_s/r/\";\ndedupe_window = \"24h\";\n"
      "spool = { dir = \"./spool\"; fsync = \"always\"; fsync_interval = \"2ms\"; "
      "compression_level = 3; };\n"
      "upstreams = (\n"
      "  { name = \"a\"; address = \"localhost:9000\"; rate = 200.0; burst = 50; max_inflight = "
      "32;\n"
      "    connect_timeout = \"2s\"; response_timeout = \"30s\"; keepalive = 0;\n"
      "    max_spool_bytes = 10737418240L; paused = true;\n"
      "    retry = { max_attempts = 8; initial_backoff = \"1s\"; max_backoff = \"5m\";\n"
      "              multiplier = 2.0; jitter = 0.2; }; },\n"
      "  { name = \"b-2.x\"; address = \"[::1]:80\"; }\n);\n"
      "routes = (\n"
      "  { prefix = \"/api/orders\"; host = \"Orders.example.com\"; methods = [\"POST\", "
      "\"PUT\"];\n"
      "    upstream = \"a\"; spill = true; mode = \"wait\"; wait_timeout = \"30s\";\n"
      "    queue_timeout = \"5s\"; },\n"
      "  { prefix = \"/api/\"; methods = [\"GET\"]; upstream = \"b-2.x\"; },\n"
      "  { prefix = \"/\"; upstream = \"a\"; spill = false; queue_timeout = 0; }\n);\n";

  seed(out_config, "minimal.conf", -1, minimal, sizeof(minimal) - 1);
  seed(out_config, "full.conf", -1, full, sizeof(full) - 1);
  /* A string where libconfig's grammar has no place for one: libconfig leaks it (lsan.supp). */
  seed(out_config, "string_at_syntax_error.conf", -1,
       LIT("listen = \"127.0.0.1:8080\";\nlog = { level \"warn\"; };\n"));
  seed(out_config, "empty_string_at_syntax_error.conf", -1,
       LIT("listen = \"127.0.0.1:8080\";\nadmin = { token \"\"; };\n"));
}

/* ---- spool: segment files made by the spool ------------------------------------------------ */

static uint64_t seed_clock(void *arg) {
  (void)arg;
  return SEED_NOW_MS;
}

static struct sl_spool *spool_open(const char *dir, int level, uint64_t segment_bytes) {
  struct sl_spool_opts o;
  struct sl_spool *s;

  sl_spool_opts_init(&o);
  o.fsync = SL_SPOOL_FSYNC_OFF;
  o.preallocate = false;
  o.io = &sl_fuzz_io;
  o.dict_train_records = 0; /* a dictionary lives in a file of its own */
  o.ack_interval_us = 0;
  o.compression_level = level;
  o.now_ms = seed_clock;
  if (segment_bytes)
    o.segment_bytes = segment_bytes;
  if (sl_spool_open(dir, &o, &s) != 0)
    abort();
  return s;
}

static void append(struct sl_spool *s, unsigned i, uint64_t not_before_ms) {
  char target[32], headers[96], body[64];
  struct sl_spool_record r = {.enqueue_ms = SEED_NOW_MS + i, .not_before_ms = not_before_ms};

  memset(r.id, 0, sizeof(r.id));
  r.id[0] = 0x5e;
  r.id[15] = (uint8_t)i;
  r.attempts = i % 3;
  r.method = i % 2 ? "PUT" : "POST";
  r.method_len = strlen(r.method);
  r.target = target;
  r.target_len = (size_t)snprintf(target, sizeof(target), "/orders/%u", i);
  r.headers = headers;
  r.headers_len =
      (size_t)snprintf(headers, sizeof(headers),
                       "Host: a\r\nIdempotency-Key: key-%u\r\nX-Forwarded-Proto: http\r\n", i);
  r.body = body;
  r.body_len = (size_t)snprintf(body, sizeof(body), "{\"order\": %u, \"qty\": %u}", i, i * 7);
  if (sl_spool_append(s, &r, NULL, NULL) != 0)
    abort();
}

/* Writes every segment file of <dir> as a seed named <prefix>-<file> with control byte <mode>. */
static void collect_segments(const char *dir, const char *prefix, int mode) {
  DIR *d = opendir(dir);
  struct dirent *e;

  if (d == NULL)
    abort();
  while ((e = readdir(d)) != NULL) {
    char path[512], name[512];
    size_t len, n = strlen(e->d_name);
    void *b;

    if (n < 5 || strcmp(e->d_name + n - 4, ".seg") != 0)
      continue;
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    snprintf(name, sizeof(name), "%s-%.*s", prefix, (int)(n - 4), e->d_name);
    b = read_all(path, &len);
    seed(out_spool, name, mode, b, len);
    free(b);
  }
  closedir(d);
}

static void settle(struct sl_spool *s) {
  sl_spool_wait_idle(s);
  sl_spool_poll_completions(s);
}

/* Bits of the spool harness's control byte (fuzz_spool.c). */
#define SPOOL_RESIGN 4
#define SPOOL_RELEASE 8
#define SPOOL_SEED_CLOCK 16

static void gen_spool(void) {
  char dir[64];
  struct sl_spool *s;
  struct sl_spool_item *it;

  /* zstd units; one settled record (the checkpoint is not part of the input). */
  sl_fuzz_tmpdir(dir, sizeof(dir));
  s = spool_open(dir, 1, 0);
  for (unsigned i = 0; i < 6; i++)
    append(s, i, 0);
  settle(s);
  for (unsigned i = 6; i < 9; i++)
    append(s, i, 0);
  settle(s);
  sl_spool_close(s);
  collect_segments(dir, "zstd", 0);
  collect_segments(dir, "zstd-resign", SPOOL_RESIGN);
  sl_fuzz_rm_rf(dir);

  /* Stored units, read and given back. */
  sl_fuzz_tmpdir(dir, sizeof(dir));
  s = spool_open(dir, 0, 0);
  for (unsigned i = 0; i < 4; i++)
    append(s, i, 0);
  settle(s);
  sl_spool_close(s);
  collect_segments(dir, "stored", SPOOL_RELEASE);
  sl_fuzz_rm_rf(dir);

  /* Tiny segments: the first ones roll and are sealed with a footer. */
  sl_fuzz_tmpdir(dir, sizeof(dir));
  s = spool_open(dir, 0, 512);
  for (unsigned i = 0; i < 8; i++) {
    append(s, i, 0);
    settle(s);
  }
  sl_spool_close(s);
  collect_segments(dir, "sealed", 0);
  collect_segments(dir, "sealed-resign", SPOOL_RESIGN);
  sl_fuzz_rm_rf(dir);

  /* A delay bucket (due later), and dead letters. */
  sl_fuzz_tmpdir(dir, sizeof(dir));
  s = spool_open(dir, 1, 0);
  for (unsigned i = 0; i < 3; i++)
    append(s, i, SEED_NOW_MS + 60000 + i);
  append(s, 9, 0);
  settle(s);
  if (sl_spool_take(s, &it) != 0 || it == NULL || sl_spool_dead(s, it, "HTTP 500 x8", NULL, NULL))
    abort();
  settle(s);
  sl_spool_close(s);
  collect_segments(dir, "delay-dead", SPOOL_RESIGN);
  collect_segments(dir, "delay-dead-notdue", SPOOL_SEED_CLOCK);
  sl_fuzz_rm_rf(dir);
}

/* ---- ledger journal: written by the journal ------------------------------------------------ */

#define JOURNAL_RESIGN 1
#define JOURNAL_SMALL 2
#define JOURNAL_LATER 4
#define JOURNAL_SYNC_OFF (2 << 3)

static void put(struct sl_ledger *l, unsigned i, enum sl_ledger_state state, uint8_t flags,
                const char *error) {
  struct sl_ledger_entry e;

  memset(&e, 0, sizeof(e));
  e.id[0] = 0x1d;
  e.id[15] = (uint8_t)i;
  e.state = state;
  e.upstream = (uint16_t)(i % 2);
  e.status = state == SL_LEDGER_DELIVERED ? 201 : 0;
  e.flags = flags;
  e.attempts = i % 4;
  e.seq = i + 1;
  e.enqueued_ms = SEED_NOW_MS - 1000 + i;
  e.updated_ms = SEED_NOW_MS + i;
  e.not_before_ms = i == 2 ? SEED_NOW_MS + 5000 : 0;
  snprintf(e.error, sizeof(e.error), "%s", error);
  if (sl_ledger_put(l, &e) != 0)
    abort();
}

static void gen_journal(void) {
  char dir[64], path[128];
  uv_loop_t loop;
  struct sl_ledger *l = sl_ledger_create(64);
  struct sl_dedupe *d = sl_dedupe_create(64, HOUR_MS);
  struct sl_ledger_journal_opts opts;
  struct sl_ledger_journal *j;
  uint8_t id[16] = {0x1d};
  void *b;
  size_t len;

  sl_fuzz_tmpdir(dir, sizeof(dir));
  snprintf(path, sizeof(path), "%s/" SL_LEDGER_JOURNAL_FILE, dir);
  sl_ledger_journal_opts_init(&opts);
  opts.sync = SL_LEDGER_JOURNAL_SYNC_OFF; /* no zero-filled tail: small seeds */
  opts.io = &sl_fuzz_io;
  if (l == NULL || d == NULL || uv_loop_init(&loop) != 0 ||
      sl_ledger_journal_open(&loop, path, l, d, SEED_NOW_MS, &opts, &j) != 0)
    abort();
  if (sl_ledger_journal_put_name(j, 0, "orders") != 0 || sl_ledger_journal_put_name(j, 1, "b-2.x"))
    abort();
  put(l, 0, SL_LEDGER_QUEUED, 0, "");
  put(l, 1, SL_LEDGER_QUEUED, 0, "");
  put(l, 2, SL_LEDGER_QUEUED, 0, "connect refused");
  put(l, 1, SL_LEDGER_DELIVERED, 0, "");
  put(l, 3, SL_LEDGER_DEAD, 0, "HTTP 503 after 8 attempts");
  put(l, 4, SL_LEDGER_CANCELLED, SL_LEDGER_F_HELD, "");
  put(l, 5, SL_LEDGER_LOST, 0, "damaged unit in ready-0000000000000001.seg");
  put(l, 6, SL_LEDGER_PURGED, 0, "");
  if (sl_dedupe_put(d, 0, "key-1", 5, id, SEED_NOW_MS - 1000) != 0 ||
      sl_dedupe_put(d, 1, "key-2", 5, id, SEED_NOW_MS) != 0 ||
      sl_dedupe_remove(d, 1, "key-2", 5) != 0)
    abort();
  sl_ledger_journal_close(j);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);

  b = read_all(path, &len);
  seed(out_journal, "closed", 0, b, len);
  seed(out_journal, "closed-resign-small", JOURNAL_RESIGN | JOURNAL_SMALL, b, len);
  seed(out_journal, "closed-later-off", JOURNAL_LATER | JOURNAL_SYNC_OFF, b, len);
  /* Without its CLOSED frame (16 bytes): what a crash leaves. */
  seed(out_journal, "unclean-resign", JOURNAL_RESIGN, b, len - 16);
  free(b);
  sl_fuzz_rm_rf(dir);
}

int main(int argc, char **argv) {
  static char dirs[4][512];
  static const char *const names[4] = {"fuzz_http", "fuzz_spool", "fuzz_config", "fuzz_journal"};

  if (argc != 2) {
    fprintf(stderr, "usage: %s <corpus dir>  (writes <corpus dir>/fuzz_<name>/...)\n", argv[0]);
    return 2;
  }
  mkdir(argv[1], 0755);
  for (int i = 0; i < 4; i++) {
    snprintf(dirs[i], sizeof(dirs[i]), "%s/%s", argv[1], names[i]);
    mkdir(dirs[i], 0755);
  }
  out_http = dirs[0];
  out_spool = dirs[1];
  out_config = dirs[2];
  out_journal = dirs[3];
  sl_fuzz_quiet_log();
  gen_http();
  gen_config();
  gen_spool();
  gen_journal();
  return 0;
}
