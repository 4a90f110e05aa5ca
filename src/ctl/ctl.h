/*
 * sluicectl: the command-line client of sluice's admin API (and of the status URLs on the
 * client listener). Declarations shared by its files, each with one job:
 *
 *   args.c      the command line into struct sl_ctl_args (no I/O)
 *   filter.c    which dead letters a --status/--older-than/--reason filter keeps (no I/O)
 *   target.c    where to talk and with which token: flags, environment, the config file
 *   http.c      one small HTTP/1.1 client over a uv_tcp_t, with keep-alive and a timeout
 *   call.c      a call to the admin API or the listener: the answer as JSON, or one error
 *               line and the exit status it means
 *   render.c    JSON documents into the text a person reads (no I/O)
 *   cmd_*.c     the commands
 *   main.c      wiring
 *
 * Everything runs on one libuv loop on the main thread. A command runs its calls one after
 * the other: each runs the loop until its exchange has ended (never from inside a callback
 * of the loop), so a command reads like a script and still never waits without a timeout.
 *
 * @thread main
 */
#ifndef SLUICE_CTL_H
#define SLUICE_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/http.h"

/* Exit statuses, as sluicectl(1) lists them. */
enum sl_ctl_exit {
  SL_CTL_OK = 0,
  SL_CTL_EFAILED = 1,        /* the server refused or failed the operation (other 4xx, 5xx) */
  SL_CTL_EUSAGE = 2,         /* bad command line */
  SL_CTL_EUNREACHABLE = 3,   /* no connection, no answer in time, or not an HTTP answer */
  SL_CTL_EAUTH = 4,          /* 401: the token is missing or wrong */
  SL_CTL_ENOTFOUND = 5,      /* 404: no such upstream, dead letter or request */
  SL_CTL_ECONFIG = 6,        /* the config file cannot be read or has an error */
  SL_CTL_EINTERRUPTED = 130, /* Ctrl-C during a bulk redrive or purge */
};

/* The default config file, as sluice's. */
#define SL_CTL_DEFAULT_CONFIG "/etc/sluice/sluice.conf"
#define SL_CTL_DEFAULT_TIMEOUT_MS 5000
#define SL_CTL_TOKEN_ENV "SLUICE_ADMIN_TOKEN"

/* ---- args.c ------------------------------------------------------------------------------ */

enum sl_ctl_command {
  SL_CTL_HELP,
  SL_CTL_VERSION,
  SL_CTL_STATUS,
  SL_CTL_PAUSE,
  SL_CTL_RESUME,
  SL_CTL_RATE,
  SL_CTL_RELOAD,
  SL_CTL_DEAD_LIST,
  SL_CTL_DEAD_SHOW,
  SL_CTL_DEAD_REDRIVE,
  SL_CTL_DEAD_PURGE,
  SL_CTL_REQUEST,
  SL_CTL_CANCEL,
};

/* Which dead letters a dead command acts on. Each part is off unless its has_ flag is set;
 * a dead letter must match every part that is on. */
struct sl_ctl_filter {
  const char *upstream; /* --upstream: one upstream; NULL: all */
  const char *id;       /* --id: one dead letter */
  bool has_status;
  unsigned status;       /* --status 503: that status; --status 5xx: 500 to 599 */
  unsigned status_class; /* 1..5 when a class was given (status is then 0) */
  bool has_older, has_newer;
  uint64_t older_ms, newer_ms; /* --older-than, --newer-than: age since it was accepted */
  const char *reason;          /* --reason: a substring of the last error, any case */
};

struct sl_ctl_args {
  enum sl_ctl_command command;
  const char *config; /* -c; NULL: the default file, if it exists */
  const char *admin;  /* --admin HOST:PORT */
  const char *listen; /* --listen HOST:PORT (request, cancel) */
  const char *token;  /* --token */
  uint64_t timeout_ms;
  bool timeout_given; /* --timeout was given (reload waits longer otherwise) */
  bool json, watch, all;
  const char *upstream; /* status [UPSTREAM], pause, resume, rate */
  double rate;          /* rate UPSTREAM N */
  const char *id;       /* dead show ID, request ID, cancel ID */
  struct sl_ctl_filter filter;
};

/*
 * Parses the command line <argc>, <argv> (argv[0] is the program) into <out>. Options may
 * come before or after the command. Returns 0, or -1 with a one-line reason in <err>
 * (<errlen> bytes): the caller prints it with the usage and exits SL_CTL_EUSAGE.
 */
int sl_ctl_args_parse(int argc, char **argv, struct sl_ctl_args *out, char *err, size_t errlen);

/* The usage text. */
extern const char sl_ctl_usage[];

/* ---- filter.c ---------------------------------------------------------------------------- */

/* Parses --status <text>: "503" or a class "5xx". Returns 0 or -1. */
int sl_ctl_filter_set_status(struct sl_ctl_filter *f, const char *text);

/* Whether <f> narrows the dead letters at all (redrive and purge without one need --all). */
bool sl_ctl_filter_narrows(const struct sl_ctl_filter *f);

/* Whether dead letter <dl> (an element of GET .../dead's "dead" array) matches <f>. The
 * upstream part is the caller's (it lists one upstream at a time). */
bool sl_ctl_filter_match(const struct sl_ctl_filter *f, const json_t *dl);

/* ---- target.c ---------------------------------------------------------------------------- */

/* Where sluicectl talks to and with which token. */
struct sl_ctl_target {
  struct sockaddr_storage admin_sa;
  char admin[80]; /* "127.0.0.1:9464", for messages and the Host header */
  struct sockaddr_storage listen_sa;
  char listen[80];
  char *token;            /* NULL: none */
  char *status_prefix;    /* "/_sluice/requests/" */
  char *config;           /* the config file read, NULL if none */
  const char *token_from; /* where the token came from, for the 401 message */
};

/*
 * Fills <t> from <args>, the environment (<getenv_fn>, getenv in the program) and the
 * config file: the one -c names (it must load), else the default file when it exists, else
 * the built-in defaults (admin 127.0.0.1:9464, listener 127.0.0.1:8080, no token). Flags
 * win over the environment, which wins over the file. An address that listens on every
 * interface (0.0.0.0, [::]) is reached on loopback. Returns 0, or an exit status
 * (SL_CTL_ECONFIG, SL_CTL_EUSAGE) with a one-line reason in <err>. sl_ctl_target_dispose()
 * frees it.
 */
int sl_ctl_target_resolve(const struct sl_ctl_args *args, char *(*getenv_fn)(const char *),
                          struct sl_ctl_target *t, char *err, size_t errlen);
void sl_ctl_target_dispose(struct sl_ctl_target *t);

/* ---- http.c ------------------------------------------------------------------------------ */

struct sl_ctl_http_conn;

/* A client of one server: one connection at a time, kept alive between requests. */
struct sl_ctl_http {
  uv_loop_t *loop;
  struct sockaddr_storage sa;
  char host[80]; /* "host:port": the Host header and messages */
  uint64_t timeout_ms;
  struct sl_ctl_http_conn *conn; /* NULL when not connected */
  uv_timer_t timer;
  /* The exchange under way. */
  struct sl_ctl_response *resp;
  struct sl_http_parser parser;
  bool done;
  int error;              /* 0, or why the exchange failed (UV_ECONNREFUSED, UV_ETIMEDOUT, ...) */
  const char *error_what; /* the step that failed: "connect", "send", "read" */
  bool got_bytes;         /* a byte of the answer came */
};

struct sl_ctl_response {
  unsigned status;
  struct sl_buf body;
};

/* Prepares <h> for the server at <sa> ("host:port" <host>) with <timeout_ms> per exchange. */
void sl_ctl_http_init(struct sl_ctl_http *h, uv_loop_t *loop, const struct sockaddr_storage *sa,
                      const char *host, uint64_t timeout_ms);

/*
 * Sends <method> <target> (with "Authorization: Bearer <token>" when <token> is not NULL)
 * and runs the loop until the whole answer is in <resp> (initialised by the caller; its body
 * is replaced) or the exchange failed. A request on a kept-alive connection that the server
 * had closed is sent once more on a new one. Returns 0, or a UV_* code (UV_ETIMEDOUT after
 * timeout_ms, UV_ECANCELED after sl_ctl_http_abort, UV_EPROTO for an answer that is not
 * HTTP); h->error_what says which step failed.
 */
int sl_ctl_http_request(struct sl_ctl_http *h, const char *method, const char *target,
                        const char *token, struct sl_ctl_response *resp);

/* Ends the exchange under way with UV_ECANCELED (from a signal callback). */
void sl_ctl_http_abort(struct sl_ctl_http *h);

/* Closes the connection and the timer; runs the loop until they are closed. */
void sl_ctl_http_dispose(struct sl_ctl_http *h);

void sl_ctl_response_init(struct sl_ctl_response *r);
void sl_ctl_response_dispose(struct sl_ctl_response *r);

/* ---- call.c ------------------------------------------------------------------------------ */

/* Everything a command uses: the target, the two clients, the output's kind. */
struct sl_ctl {
  const struct sl_ctl_args *args;
  struct sl_ctl_target *target;
  uv_loop_t *loop;
  struct sl_ctl_http admin;  /* the admin listener */
  struct sl_ctl_http client; /* the client listener (status URLs) */
  bool tty;                  /* stdout is a terminal */
  bool err_tty;              /* stderr is a terminal (progress lines) */
  volatile bool interrupted; /* Ctrl-C */
  uv_signal_t sigint;
  uv_timer_t tick; /* --watch, and the pause between redraws */
};

/* One call: the request, and what its answers mean. */
struct sl_ctl_call {
  bool on_listener; /* to the client listener (status URLs), else the admin listener */
  const char *method, *target;
  bool token;            /* send the token (always to the admin listener) */
  const char *not_found; /* the error line for a 404; NULL: the server's own message */
  bool own_errors;       /* the caller reads every answer but 401 itself */
};

/*
 * Makes <call> and parses the answer's JSON into <*doc> (the caller json_decref()s it). On
 * a 2xx (any answer but 401 with <call>->own_errors) returns 0 and stores the status in
 * <*status> (may be NULL); otherwise prints one error line on stderr and returns the exit
 * status it means (SL_CTL_EINTERRUPTED, without a line, after Ctrl-C).
 */
int sl_ctl_call(struct sl_ctl *ctl, const struct sl_ctl_call *call, json_t **doc, unsigned *status);

/* The "error" of an error answer <doc>, or <fallback>. */
const char *sl_ctl_doc_error(const json_t *doc, const char *fallback);

/* Whether <name> can stand as one segment of a request path as it is (the admin API reads
 * its paths undecoded): no byte that would need percent-encoding. */
bool sl_ctl_path_segment_ok(const char *name);

/* Prints "sluicectl: <fmt>" and a newline on stderr. */
void sl_ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The upstream names of GET /admin/upstreams, for commands over every upstream: fills
 * <*list> (the caller json_decref()s it) with the document. Returns 0 or an exit status. */
int sl_ctl_upstreams(struct sl_ctl *ctl, json_t **list);

/* Prints <doc> as JSON on stdout: indented on a terminal, one line otherwise. */
void sl_ctl_print_json(const struct sl_ctl *ctl, const json_t *doc);

/* ---- render.c ---------------------------------------------------------------------------- */

/* <seconds> as a person reads a duration: "0.4s", "42s", "2m05s", "3h10m", "2d04h". */
void sl_ctl_format_duration(double seconds, char *out, size_t len);

/* The drain's progress of upstream <u> (an element of GET /admin/upstreams' "upstreams"),
 * from 0 to 1: what was drained since the line was last empty, over that plus what is ready
 * or in flight now. Returns -1 when there is nothing to show (nothing drained, nothing
 * left). */
double sl_ctl_drain_progress(const json_t *u);

/*
 * Appends the status table of <doc> (GET /admin/upstreams) to <out>: one row per upstream,
 * or only <only> when not NULL, and under each row a progress bar of its drain when <bars>
 * (a terminal). Returns 0, or -1 when <only> is not among them.
 */
int sl_ctl_render_status(struct sl_buf *out, const json_t *doc, const char *only, bool bars);

/* The header and a row of the dead-letter table (sluicectl dead list). */
void sl_ctl_render_dead_header(struct sl_buf *out);
void sl_ctl_render_dead_row(struct sl_buf *out, const char *upstream, const json_t *dl);

/* One dead letter in full (sluicectl dead show), <dl> from GET .../dead?id=. */
void sl_ctl_render_dead_show(struct sl_buf *out, const char *upstream, const json_t *dl);

/* A request's status (sluicectl request), <doc> from its status URL. */
void sl_ctl_render_request(struct sl_buf *out, const json_t *doc);

/* ---- the commands (cmd_*.c); each returns the exit status -------------------------------- */

int sl_ctl_cmd_status(struct sl_ctl *ctl);
int sl_ctl_cmd_upstream(struct sl_ctl *ctl); /* pause, resume, rate */
int sl_ctl_cmd_reload(struct sl_ctl *ctl);
int sl_ctl_cmd_dead(struct sl_ctl *ctl);
int sl_ctl_cmd_request(struct sl_ctl *ctl); /* request, cancel */

#endif
