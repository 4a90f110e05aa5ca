/*
 * Unit tests for sluicectl's parts (src/ctl): the command line, the dead-letter filters,
 * where it talks to (flags, environment, config file), the rendering of the status table
 * and of dead letters from JSON documents, and the HTTP client against a scripted server
 * on loopback (keep-alive, a kept-alive connection the server closed, a close-delimited
 * answer, timeouts, refused connections, an answer that is not HTTP).
 *
 * The scripted server runs on a thread of its own with blocking sockets, each accepted
 * connection served by the test's script; the client runs its loop on the test's thread.
 * Every socket has a receive timeout, and every client exchange the client's own timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ctl.h"
#include "sluice/util.h"

/* ---- the command line ---- */

/* Parses the words of <line> (space-separated) as sluicectl's command line. */
static int parse(const char *line, struct sl_ctl_args *a, char *err, size_t errlen) {
  static char buf[1024];
  char *argv[64];
  int argc = 0;

  snprintf(buf, sizeof(buf), "sluicectl %s", line);
  for (char *w = strtok(buf, " "); w != NULL && argc < 63; w = strtok(NULL, " "))
    argv[argc++] = w;
  argv[argc] = NULL;
  return sl_ctl_args_parse(argc, argv, a, err, errlen);
}

/* The arguments of <line>, which must parse (valid until the next parse). */
static const struct sl_ctl_args *parsed(const char *line) {
  static struct sl_ctl_args a;
  char err[512];

  if (parse(line, &a, err, sizeof(err)) != 0)
    fail_msg("'%s' does not parse: %s", line, err);
  return &a;
}

static void assert_parse_fails(const char *line, const char *want) {
  struct sl_ctl_args a;
  char err[512] = "";

  if (parse(line, &a, err, sizeof(err)) == 0)
    fail_msg("'%s' parsed, expected an error with '%s'", line, want);
  if (strstr(err, want) == NULL)
    fail_msg("'%s': error '%s' does not say '%s'", line, err, want);
}

static void test_args_commands(void **state) {
  const struct sl_ctl_args *a;

  (void)state;
  a = parsed("status");
  assert_int_equal(a->command, SL_CTL_STATUS);
  assert_null(a->upstream);
  assert_int_equal(a->timeout_ms, 5000);
  assert_false(a->timeout_given);

  a = parsed("status orders --watch -j");
  assert_string_equal(a->upstream, "orders");
  assert_true(a->watch && a->json);

  /* options before or after the command */
  a = parsed("-c /tmp/x.conf --admin 127.0.0.1:1 pause b --token t");
  assert_int_equal(a->command, SL_CTL_PAUSE);
  assert_string_equal(a->config, "/tmp/x.conf");
  assert_string_equal(a->admin, "127.0.0.1:1");
  assert_string_equal(a->token, "t");
  assert_string_equal(a->upstream, "b");

  a = parsed("rate b 2.5 --timeout 250ms");
  assert_int_equal(a->command, SL_CTL_RATE);
  assert_true(a->rate == 2.5);
  assert_int_equal(a->timeout_ms, 250);
  assert_true(a->timeout_given);

  assert_int_equal(parsed("reload")->command, SL_CTL_RELOAD);
  a = parsed("request 0123456789abcdef0123456789ABCDEF");
  assert_int_equal(a->command, SL_CTL_REQUEST);
  assert_string_equal(a->id, "0123456789abcdef0123456789ABCDEF");
  assert_int_equal(parsed("cancel 0123456789abcdef0123456789abcdef")->command, SL_CTL_CANCEL);
  assert_int_equal(parsed("--help")->command, SL_CTL_HELP);
  assert_int_equal(parsed("status -V")->command, SL_CTL_VERSION);
}

static void test_args_dead(void **state) {
  const struct sl_ctl_args *a;

  (void)state;
  a = parsed("dead list");
  assert_int_equal(a->command, SL_CTL_DEAD_LIST);
  assert_false(sl_ctl_filter_narrows(&a->filter));

  a = parsed(
      "dead list --upstream b --status 5xx --older-than 1h --newer-than 2d --reason timeout");
  assert_string_equal(a->filter.upstream, "b");
  assert_true(a->filter.has_status);
  assert_int_equal(a->filter.status_class, 5);
  assert_int_equal(a->filter.older_ms, 3600000);
  assert_int_equal(a->filter.newer_ms, 2 * 86400000);
  assert_string_equal(a->filter.reason, "timeout");

  a = parsed("dead show 0123456789abcdef0123456789abcdef --upstream b");
  assert_int_equal(a->command, SL_CTL_DEAD_SHOW);
  assert_string_equal(a->id, "0123456789abcdef0123456789abcdef");

  a = parsed("dead redrive --status 503");
  assert_int_equal(a->command, SL_CTL_DEAD_REDRIVE);
  assert_int_equal(a->filter.status, 503);
  a = parsed("dead purge --all");
  assert_int_equal(a->command, SL_CTL_DEAD_PURGE);
  assert_true(a->all);
  a = parsed("dead purge --id 0123456789abcdef0123456789abcdef");
  assert_string_equal(a->filter.id, "0123456789abcdef0123456789abcdef");
}

static void test_args_mistakes(void **state) {
  (void)state;
  assert_parse_fails("", "no command given");
  assert_parse_fails("stats", "unknown command 'stats'");
  assert_parse_fails("dead", "dead needs a verb");
  assert_parse_fails("dead lst", "unknown verb 'lst'");
  assert_parse_fails("pause", "pause: missing argument");
  assert_parse_fails("pause a b", "pause: too many arguments");
  assert_parse_fails("rate b", "rate: missing argument");
  assert_parse_fails("rate b 0", "'0' is not a rate");
  assert_parse_fails("rate b nan", "'nan' is not a rate");
  assert_parse_fails("rate b 5x", "'5x' is not a rate");
  assert_parse_fails("request 123", "'123' is not a request id");
  assert_parse_fails("dead show xyz", "'xyz' is not a request id");
  assert_parse_fails("status --frobnicate", "unknown option --frobnicate");
  assert_parse_fails("status -q", "unknown option -q");
  assert_parse_fails("status --admin", "--admin needs a value");
  assert_parse_fails("status --timeout soon", "--timeout: 'soon' is not a duration");
  assert_parse_fails("status --timeout 0", "--timeout must be above 0");
  assert_parse_fails("pause b --watch", "--watch goes with status only");
  assert_parse_fails("status --reason x", "--reason goes with dead list, redrive and purge");
  assert_parse_fails("status --upstream b", "--upstream goes with the dead commands");
  assert_parse_fails("dead list --all", "--all goes with dead redrive and purge only");
  assert_parse_fails("dead redrive", "dead redrive acts on every dead letter");
  assert_parse_fails("dead purge", "dead purge acts on every dead letter");
  assert_parse_fails("dead purge --all --status 500", "--all and a filter exclude each other");
  assert_parse_fails("dead list --status 600", "--status: '600' is not an HTTP status");
  assert_parse_fails("dead list --status 5x", "--status: '5x'");
  assert_parse_fails("dead list --older-than 2h --newer-than 1h", "--newer-than must be longer");
  assert_parse_fails("dead list --id 42", "--id: '42' is not an id");
  assert_parse_fails("dead list --reason=", "--reason needs a text");
}

/* ---- filters ---- */

static json_t *doc_of(const char *text) {
  json_error_t jerr;
  json_t *d = json_loads(text, 0, &jerr);

  if (d == NULL)
    fail_msg("bad test JSON: %s: %s", jerr.text, text);
  return d;
}

static void test_filter(void **state) {
  struct sl_ctl_filter f;
  json_t *a = doc_of("{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":503,"
                     "\"age_seconds\":7200.0,\"error\":\"HTTP 503\"}");
  json_t *b = doc_of("{\"id\":\"ffffffffffffffffffffffffffffffff\",\"status\":null,"
                     "\"age_seconds\":30.5,\"error\":\"response: connection timed out\"}");

  (void)state;
  memset(&f, 0, sizeof(f));
  assert_true(sl_ctl_filter_match(&f, a));
  assert_true(sl_ctl_filter_match(&f, b));

  assert_int_equal(sl_ctl_filter_set_status(&f, "503"), 0);
  assert_true(sl_ctl_filter_match(&f, a));
  assert_false(sl_ctl_filter_match(&f, b)); /* no answer: no status matches */
  assert_int_equal(sl_ctl_filter_set_status(&f, "500"), 0);
  assert_false(sl_ctl_filter_match(&f, a));
  assert_int_equal(sl_ctl_filter_set_status(&f, "5XX"), 0);
  assert_true(sl_ctl_filter_match(&f, a));
  assert_int_equal(sl_ctl_filter_set_status(&f, "4xx"), 0);
  assert_false(sl_ctl_filter_match(&f, a));
  assert_int_equal(sl_ctl_filter_set_status(&f, "abc"), -1);
  assert_int_equal(sl_ctl_filter_set_status(&f, "0xx"), -1);
  assert_int_equal(sl_ctl_filter_set_status(&f, "5000"), -1);

  memset(&f, 0, sizeof(f));
  f.has_older = true;
  f.older_ms = 3600 * 1000; /* accepted more than an hour ago */
  assert_true(sl_ctl_filter_match(&f, a));
  assert_false(sl_ctl_filter_match(&f, b));
  memset(&f, 0, sizeof(f));
  f.has_newer = true;
  f.newer_ms = 60 * 1000; /* within the last minute */
  assert_false(sl_ctl_filter_match(&f, a));
  assert_true(sl_ctl_filter_match(&f, b));

  memset(&f, 0, sizeof(f));
  f.reason = "TIMED OUT";
  assert_false(sl_ctl_filter_match(&f, a));
  assert_true(sl_ctl_filter_match(&f, b));
  assert_true(sl_ctl_filter_narrows(&f));

  memset(&f, 0, sizeof(f));
  f.id = "0123456789ABCDEF0123456789ABCDEF"; /* ids compare without case */
  assert_true(sl_ctl_filter_match(&f, a));
  assert_false(sl_ctl_filter_match(&f, b));
  json_decref(a);
  json_decref(b);
}

/* ---- where to talk ---- */

static const char *fake_token;
static char *fake_getenv(const char *name) {
  return strcmp(name, SL_CTL_TOKEN_ENV) == 0 ? (char *)fake_token : NULL;
}

/* Writes <text> to a new temporary file and returns its path (static). */
static const char *temp_config(const char *text) {
  static char path[64];
  FILE *f;
  int fd;

  snprintf(path, sizeof(path), "/tmp/test_ctl.XXXXXX");
  fd = mkstemp(path);
  assert_true(fd >= 0);
  f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  return path;
}

#define UPSTREAMS                                                                                  \
  "upstreams = ( { name = \"b\"; address = \"127.0.0.1:9000\"; } );\n"                             \
  "routes = ( { prefix = \"/\"; upstream = \"b\"; } );\n"

static void test_target(void **state) {
  struct sl_ctl_args a;
  struct sl_ctl_target t;
  char err[1024];
  const char *conf = temp_config("listen = \"0.0.0.0:8181\";\n"
                                 "admin = { listen = \"127.0.0.2:9555\"; token = \"filetok\"; };\n"
                                 "status_prefix = \"/_q/\";\n" UPSTREAMS);
  char line[256];

  (void)state;
  /* the file gives everything */
  snprintf(line, sizeof(line), "-c %s cancel 0123456789abcdef0123456789abcdef", conf);
  assert_int_equal(parse(line, &a, err, sizeof(err)), 0);
  fake_token = NULL;
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), 0);
  assert_string_equal(t.admin, "127.0.0.2:9555");
  assert_string_equal(t.listen, "127.0.0.1:8181"); /* every interface: reached on loopback */
  assert_string_equal(t.token, "filetok");
  assert_string_equal(t.token_from, "admin.token in the config");
  assert_string_equal(t.status_prefix, "/_q/");
  assert_string_equal(t.config, conf);
  sl_ctl_target_dispose(&t);

  /* the environment wins over the file, the flags over both */
  fake_token = "envtok";
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), 0);
  assert_string_equal(t.token, "envtok");
  sl_ctl_target_dispose(&t);
  snprintf(line, sizeof(line), "-c %s --token flagtok --admin [::1]:7 status", conf);
  assert_int_equal(parse(line, &a, err, sizeof(err)), 0);
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), 0);
  assert_string_equal(t.token, "flagtok");
  assert_string_equal(t.token_from, "--token");
  assert_string_equal(t.admin, "[::1]:7");
  sl_ctl_target_dispose(&t);

  /* flags alone: no file read, the listener's defaults */
  fake_token = NULL;
  assert_int_equal(parse("--admin 127.0.0.1:1 --token x --listen localhost:81 request "
                         "0123456789abcdef0123456789abcdef",
                         &a, err, sizeof(err)),
                   0);
  a.config = conf; /* request needs the status prefix: it comes from the file */
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), 0);
  assert_string_equal(t.listen, "127.0.0.1:81");
  sl_ctl_target_dispose(&t);

  /* mistakes */
  assert_int_equal(parse("--admin nowhere status", &a, err, sizeof(err)), 0);
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), SL_CTL_EUSAGE);
  assert_non_null(strstr(err, "the admin address 'nowhere' (--admin)"));
  assert_int_equal(parse("--admin 127.0.0.1:0 --token x status", &a, err, sizeof(err)), 0);
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), SL_CTL_EUSAGE);
  assert_non_null(strstr(err, "has port 0"));
  assert_int_equal(parse("-c /nonexistent/sluice.conf status", &a, err, sizeof(err)), 0);
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), SL_CTL_ECONFIG);
  assert_non_null(strstr(err, "/nonexistent/sluice.conf"));
  unlink(conf);
  conf = temp_config("listen = \"127.0.0.1:1\"; nonsense = ;\n");
  snprintf(line, sizeof(line), "-c %s status", conf);
  assert_int_equal(parse(line, &a, err, sizeof(err)), 0);
  assert_int_equal(sl_ctl_target_resolve(&a, fake_getenv, &t, err, sizeof(err)), SL_CTL_ECONFIG);
  assert_non_null(strstr(err, ":1:")); /* file:line: message, from the config loader */
  unlink(conf);
}

/* ---- rendering ---- */

static void test_duration(void **state) {
  char s[32];

  (void)state;
  sl_ctl_format_duration(0.04, s, sizeof(s));
  assert_string_equal(s, "0.0s");
  sl_ctl_format_duration(3.26, s, sizeof(s));
  assert_string_equal(s, "3.3s");
  sl_ctl_format_duration(42, s, sizeof(s));
  assert_string_equal(s, "42s");
  sl_ctl_format_duration(125, s, sizeof(s));
  assert_string_equal(s, "2m05s");
  sl_ctl_format_duration(3 * 3600 + 600, s, sizeof(s));
  assert_string_equal(s, "3h10m");
  sl_ctl_format_duration(2 * 86400 + 4 * 3600 + 59, s, sizeof(s));
  assert_string_equal(s, "2d04h");
  sl_ctl_format_duration(-1, s, sizeof(s));
  assert_string_equal(s, "0.0s");
}

static const char status_doc[] =
    "{\"upstreams\":["
    "{\"name\":\"orders\",\"rate\":50,\"paused\":false,\"ready\":1200,\"delayed\":3,"
    "\"inflight\":8,\"dead\":4,\"state\":\"flowing\",\"drained_since_empty\":1808,"
    "\"oldest_age_seconds\":130.2,\"eta_seconds\":24.2},"
    "{\"name\":\"audit\",\"rate\":0,\"paused\":true,\"ready\":0,\"delayed\":0,\"inflight\":0,"
    "\"dead\":0,\"state\":\"paused\",\"drained_since_empty\":0,\"oldest_age_seconds\":null,"
    "\"eta_seconds\":null},"
    "{\"name\":\"billing-backend\",\"rate\":2.5,\"paused\":false,\"ready\":0,\"delayed\":0,"
    "\"inflight\":0,\"dead\":1,\"state\":\"circuit_open\",\"drained_since_empty\":10,"
    "\"oldest_age_seconds\":null,\"eta_seconds\":null}]}";

/* The status table of <doc> (only <only>, with <bars>) as a string in <out>. */
static const char *status_text(struct sl_buf *out, const json_t *doc, const char *only, bool bars) {
  sl_buf_reset(out);
  assert_int_equal(sl_ctl_render_status(out, doc, only, bars), 0);
  sl_buf_append(out, "", 1);
  return out->base;
}

static void test_render_status(void **state) {
  json_t *doc = doc_of(status_doc);
  struct sl_buf out;

  (void)state;
  sl_buf_init(&out);
  assert_string_equal(
      status_text(&out, doc, NULL, false),
      "UPSTREAM         STATE              RATE  INFLIGHT     READY  DELAYED    DEAD   OLDEST "
      "     ETA\n"
      "orders           flowing            50/s         8      1200        3       4    2m10s "
      "     24s\n"
      "audit            paused        unlimited         0         0        0       0        - "
      "       -\n"
      "billing-backend  circuit open      2.5/s         0         0        0       1        - "
      "       -\n");

  /* on a terminal, a bar under each upstream whose line has moved: 1808 of 1808 + 1208 */
  assert_string_equal(status_text(&out, doc, "orders", true),
                      "UPSTREAM  STATE              RATE  INFLIGHT     READY  DELAYED    DEAD   "
                      "OLDEST      ETA\n"
                      "orders    flowing            50/s         8      1200        3       4    "
                      "2m10s      24s\n"
                      "          [########################----------------]  59%  1808 drained, "
                      "1208 left\n");
  assert_non_null(strstr(status_text(&out, doc, "billing-backend", true),
                         "[########################################] 100%  10 drained, "
                         "0 left\n"));
  assert_null(
      strstr(status_text(&out, doc, "audit", true), "[")); /* nothing moved through it: no bar */
  sl_buf_reset(&out);
  assert_int_equal(sl_ctl_render_status(&out, doc, "nope", false), -1);

  assert_true(sl_ctl_drain_progress(json_array_get(json_object_get(doc, "upstreams"), 1)) < 0);
  assert_true(sl_ctl_drain_progress(json_array_get(json_object_get(doc, "upstreams"), 2)) == 1.0);
  sl_buf_dispose(&out);
  json_decref(doc);
}

static void test_render_dead(void **state) {
  json_t *dl = doc_of("{\"id\":\"0123456789abcdef0123456789abcdef\",\"attempts\":3,"
                      "\"enqueued_at\":\"2026-05-04T10:11:12.345Z\",\"method\":\"POST\","
                      "\"target\":\"/orders/1\",\"error\":\"HTTP 503\",\"status\":503,"
                      "\"age_seconds\":75.0,\"dead_at\":\"2026-05-04T10:11:20.000Z\","
                      "\"body_bytes\":12,\"headers\":[[\"Host\",\"shop\"],"
                      "[\"Content-Type\",\"application/json\"]]}");
  struct sl_buf out;

  (void)state;
  sl_buf_init(&out);
  sl_ctl_render_dead_header(&out);
  sl_ctl_render_dead_row(&out, "orders", dl);
  sl_buf_append(&out, "", 1);
  assert_string_equal(out.base,
                      "UPSTREAM      ID                                STATUS  ATTEMPTS      AGE  "
                      "ERROR                     REQUEST\n"
                      "orders        0123456789abcdef0123456789abcdef     503         3    1m15s  "
                      "HTTP 503                  POST /orders/1\n");
  sl_buf_reset(&out);
  sl_ctl_render_dead_show(&out, "orders", dl);
  sl_buf_append(&out, "", 1);
  assert_string_equal(out.base, "id:           0123456789abcdef0123456789abcdef\n"
                                "upstream:     orders\n"
                                "request:      POST /orders/1\n"
                                "last error:   HTTP 503\n"
                                "last status:  503\n"
                                "attempts:     3\n"
                                "accepted at:  2026-05-04T10:11:12.345Z (1m15s ago)\n"
                                "dead since:   2026-05-04T10:11:20.000Z\n"
                                "body:         12 bytes\n"
                                "headers:\n"
                                "  Host: shop\n"
                                "  Content-Type: application/json\n");
  sl_buf_dispose(&out);
  json_decref(dl);
}

static void test_render_request(void **state) {
  static const struct {
    const char *doc, *want;
  } cases[] = {
      {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"queued\",\"attempts\":0,"
       "\"position\":41,\"eta_seconds\":0.2}",
       "id:           0123456789abcdef0123456789abcdef\n"
       "status:       queued\n"
       "attempts:     0\n"
       "position:     41\n"
       "eta:          0.2s\n"},
      /* delayed, or waiting for a retry, while the drain is held */
      {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"queued\",\"attempts\":1,"
       "\"position\":null,\"not_before\":\"2026-05-04T10:00:00Z\",\"eta_seconds\":null,"
       "\"error\":\"HTTP 500\"}",
       "id:           0123456789abcdef0123456789abcdef\n"
       "status:       queued\n"
       "attempts:     1\n"
       "position:     - (due at a time)\n"
       "not before:   2026-05-04T10:00:00Z\n"
       "eta:          - (the drain is held)\n"
       "last error:   HTTP 500\n"},
      {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"delivered\",\"attempts\":2,"
       "\"code\":201,\"delivered_at\":\"2026-05-04T10:00:01Z\"}",
       "id:           0123456789abcdef0123456789abcdef\n"
       "status:       delivered\n"
       "attempts:     2\n"
       "answer:       201\n"
       "delivered at: 2026-05-04T10:00:01Z\n"},
  };
  struct sl_buf out;

  (void)state;
  sl_buf_init(&out);
  for (size_t i = 0; i < sl_countof(cases); i++) {
    json_t *doc = doc_of(cases[i].doc);

    sl_buf_reset(&out);
    sl_ctl_render_request(&out, doc);
    sl_buf_append(&out, "", 1);
    assert_string_equal(out.base, cases[i].want);
    json_decref(doc);
  }
  sl_buf_dispose(&out);
}

/* ---- the HTTP client against a scripted server ---- */

/* What the server does with each connection it accepts, in order. */
enum step {
  ANSWER_KEEP,  /* read one request, answer it, keep the connection for the next step */
  ANSWER_CLOSE, /* read one request, answer with a close-delimited body, close */
  CLOSE_IDLE,   /* close the connection without reading (a kept-alive one the server drops) */
  SILENT,       /* read the request and never answer (until the client goes) */
  GARBAGE,      /* answer something that is not HTTP */
};

struct server {
  int fd;
  unsigned port;
  pthread_t thread;
  const enum step *steps;
  size_t n_steps;
  char last_request[4096]; /* the last request head read */
  int connections;
};

static int read_request(int fd, char *out, size_t len) {
  size_t n = 0;

  while (n + 1 < len) {
    ssize_t r = recv(fd, out + n, len - 1 - n, 0);

    if (r <= 0)
      return -1;
    n += (size_t)r;
    out[n] = '\0';
    if (strstr(out, "\r\n\r\n") != NULL)
      return 0;
  }
  return -1;
}

static void send_str(int fd, const char *s) {
  ssize_t r = send(fd, s, strlen(s), MSG_NOSIGNAL);

  (void)r;
}

static void *serve(void *arg) {
  struct server *s = arg;
  int c = -1;

  for (size_t i = 0; i < s->n_steps; i++) {
    if (c < 0) {
      struct timeval tv = {.tv_sec = 5};

      c = accept(s->fd, NULL, NULL);
      if (c < 0)
        return NULL;
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      s->connections++;
    }
    switch (s->steps[i]) {
    case ANSWER_KEEP:
      if (read_request(c, s->last_request, sizeof(s->last_request)) == 0)
        send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: 11\r\n\r\n{\"ok\":true}");
      break;
    case ANSWER_CLOSE:
      if (read_request(c, s->last_request, sizeof(s->last_request)) == 0)
        send_str(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"closed\":1}");
      close(c);
      c = -1;
      break;
    case CLOSE_IDLE:
      close(c);
      c = -1;
      break;
    case SILENT: {
      char drain[256];

      read_request(c, s->last_request, sizeof(s->last_request));
      while (recv(c, drain, sizeof(drain), 0) > 0) /* until the client gives up */
        ;
      close(c);
      c = -1;
      break;
    }
    case GARBAGE:
      read_request(c, s->last_request, sizeof(s->last_request));
      send_str(c, "SSH-2.0-OpenSSH_9.2\r\n\r\n");
      close(c);
      c = -1;
      break;
    }
  }
  if (c >= 0)
    close(c);
  return NULL;
}

static void server_start(struct server *s, const enum step *steps, size_t n) {
  struct sockaddr_in sin = {.sin_family = AF_INET};
  socklen_t len = sizeof(sin);

  memset(s, 0, sizeof(*s));
  s->steps = steps;
  s->n_steps = n;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(s->fd >= 0);
  assert_int_equal(bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(listen(s->fd, 8), 0);
  assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sin, &len), 0);
  s->port = ntohs(sin.sin_port);
  assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct server *s) {
  shutdown(s->fd, SHUT_RDWR);
  pthread_join(s->thread, NULL);
  close(s->fd);
}

/* A client of 127.0.0.1:<port> on <loop>, with <timeout_ms>. */
static void client_init(struct sl_ctl_http *h, uv_loop_t *loop, unsigned port,
                        uint64_t timeout_ms) {
  struct sockaddr_storage ss;
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  char host[32];

  memset(&ss, 0, sizeof(ss));
  sin->sin_family = AF_INET;
  sin->sin_port = htons((uint16_t)port);
  sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  snprintf(host, sizeof(host), "127.0.0.1:%u", port);
  sl_ctl_http_init(h, loop, &ss, host, timeout_ms);
}

static void finish_loop(struct sl_ctl_http *h, uv_loop_t *loop) {
  sl_ctl_http_dispose(h);
  assert_int_equal(uv_loop_close(loop), 0);
}

static void body_is(const struct sl_ctl_response *r, const char *want) {
  assert_int_equal(r->body.len, strlen(want));
  assert_memory_equal(r->body.base, want, r->body.len);
}

static void test_http_keepalive_and_reconnect(void **state) {
  /* two answers on one connection; then the server drops it while idle; the third request
   * goes again on a new connection; the fourth gets a close-delimited answer */
  static const enum step steps[] = {ANSWER_KEEP, ANSWER_KEEP, CLOSE_IDLE, ANSWER_KEEP,
                                    ANSWER_CLOSE};
  struct server s;
  uv_loop_t loop;
  struct sl_ctl_http h;
  struct sl_ctl_response r;

  (void)state;
  server_start(&s, steps, sl_countof(steps));
  assert_int_equal(uv_loop_init(&loop), 0);
  client_init(&h, &loop, s.port, 3000);
  sl_ctl_response_init(&r);
  assert_int_equal(sl_ctl_http_request(&h, "GET", "/admin/upstreams", "tok", &r), 0);
  assert_int_equal(r.status, 200);
  body_is(&r, "{\"ok\":true}");
  assert_non_null(strstr(s.last_request, "GET /admin/upstreams HTTP/1.1\r\n"));
  assert_non_null(strstr(s.last_request, "\r\nAuthorization: Bearer tok\r\n"));
  assert_int_equal(sl_ctl_http_request(&h, "POST", "/x", NULL, &r), 0);
  assert_null(strstr(s.last_request, "Authorization"));
  assert_int_equal(s.connections, 1);
  usleep(100 * 1000); /* the server closes the idle connection */
  assert_int_equal(sl_ctl_http_request(&h, "GET", "/again", NULL, &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(s.last_request, "GET /again "));
  assert_int_equal(s.connections, 2);
  assert_int_equal(sl_ctl_http_request(&h, "GET", "/last", NULL, &r), 0);
  body_is(&r, "{\"closed\":1}");
  sl_ctl_response_dispose(&r);
  finish_loop(&h, &loop);
  server_stop(&s);
}

static void test_http_failures(void **state) {
  static const enum step steps[] = {SILENT, GARBAGE};
  struct server s;
  uv_loop_t loop;
  struct sl_ctl_http h;
  struct sl_ctl_response r;
  unsigned port;

  (void)state;
  server_start(&s, steps, sl_countof(steps));
  assert_int_equal(uv_loop_init(&loop), 0);
  client_init(&h, &loop, s.port, 300);
  sl_ctl_response_init(&r);
  /* no answer within the timeout */
  assert_int_equal(sl_ctl_http_request(&h, "GET", "/", NULL, &r), UV_ETIMEDOUT);
  assert_string_equal(h.error_what, "answer");
  /* not HTTP */
  assert_int_equal(sl_ctl_http_request(&h, "GET", "/", NULL, &r), UV_EPROTO);
  sl_ctl_response_dispose(&r);
  finish_loop(&h, &loop);
  port = s.port;
  server_stop(&s);

  /* nobody listens any more */
  assert_int_equal(uv_loop_init(&loop), 0);
  client_init(&h, &loop, port, 300);
  sl_ctl_response_init(&r);
  assert_int_equal(sl_ctl_http_request(&h, "GET", "/", NULL, &r), UV_ECONNREFUSED);
  assert_string_equal(h.error_what, "connect");
  sl_ctl_response_dispose(&r);
  finish_loop(&h, &loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_args_commands),  cmocka_unit_test(test_args_dead),
      cmocka_unit_test(test_args_mistakes),  cmocka_unit_test(test_filter),
      cmocka_unit_test(test_target),         cmocka_unit_test(test_duration),
      cmocka_unit_test(test_render_status),  cmocka_unit_test(test_render_dead),
      cmocka_unit_test(test_render_request), cmocka_unit_test(test_http_keepalive_and_reconnect),
      cmocka_unit_test(test_http_failures),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
