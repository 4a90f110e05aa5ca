/*
 * The configuration: the file (libconfig syntax) and the command line turned
 * into one immutable object.
 *
 * A loaded config is never changed. A reload (SIGHUP) parses the file into a
 * new object and swaps the pointer; requests that started under the old one
 * keep a reference until they finish (sl_config_ref / sl_config_unref), so a
 * route or upstream they borrowed stays valid.
 *
 * Key names are the user interface and follow docs/configuration.md and
 * conf/sluice.conf. Every setting has a default; every error names the file
 * and line.
 *
 * @thread a config may be read from any thread; ref/unref are not atomic and
 *         belong to the thread that owns the loop.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sluice/log.h"

/* Bit for each method a route can name: see sl_method_bit(). */
enum sl_method_bits {
  SL_METHOD_GET = 1u << 0,
  SL_METHOD_HEAD = 1u << 1,
  SL_METHOD_POST = 1u << 2,
  SL_METHOD_PUT = 1u << 3,
  SL_METHOD_PATCH = 1u << 4,
  SL_METHOD_DELETE = 1u << 5,
  SL_METHOD_OPTIONS = 1u << 6,
  SL_METHOD_TRACE = 1u << 7,
  SL_METHOD_CONNECT = 1u << 8,
  SL_METHOD_OTHER = 1u << 9,
};
#define SL_METHODS_SPILL_DEFAULT                                                                   \
  (SL_METHOD_POST | SL_METHOD_PUT | SL_METHOD_PATCH | SL_METHOD_DELETE)

/* Returns the SL_METHOD_* bit of the method named <name> (<len> bytes, case-sensitive). */
unsigned sl_method_bit(const char *name, size_t len);

enum sl_fsync_policy { SL_FSYNC_ALWAYS, SL_FSYNC_BATCH, SL_FSYNC_OFF };
enum sl_route_mode { SL_MODE_ASYNC, SL_MODE_WAIT };

struct sl_listen_addr {
  char *text; /* as written, "host:port" */
  struct sockaddr_storage sa;
};

struct sl_retry_config {
  uint32_t max_attempts;       /* default 8 */
  uint64_t initial_backoff_ms; /* default 1s */
  uint64_t max_backoff_ms;     /* default 5m */
  double multiplier;           /* default 2.0, >= 1 */
  double jitter;               /* default 0.2, in [0, 1] */
};

struct sl_upstream_config {
  char *name;
  struct sl_listen_addr address; /* "host:port", host a literal IP or "localhost" */
  double rate;                   /* requests/s; 0 means unlimited (key absent) */
  uint32_t burst;                /* default: max(1, rate) */
  uint32_t max_inflight;         /* 0 = unlimited; default 0 */
  uint64_t connect_timeout_ms;   /* default 2s */
  uint64_t response_timeout_ms;  /* default 30s */
  uint32_t keepalive;            /* idle pooled connections kept; default 32 */
  uint64_t max_spool_bytes;      /* default 10GiB */
  bool paused;                   /* default false */
  struct sl_retry_config retry;
  /* Adaptive rate (sluice/adaptive.h): <rate> is where it starts, between these bounds. */
  bool adaptive;              /* default false */
  double min_rate;            /* with adaptive; default 1 (<rate> when that is lower) */
  double max_rate;            /* with adaptive; required */
  uint64_t target_latency_ms; /* with adaptive; 0 (default): latency not looked at */
  int line;                   /* where it was defined, for messages */
};

struct sl_route_config {
  char *prefix; /* path prefix, starts with '/' */
  size_t prefix_len;
  char *host;       /* NULL: any host; else matched case-insensitively, port ignored */
  unsigned methods; /* SL_METHOD_* mask that this route matches; 0 = any */
  char *upstream_name;
  size_t upstream;           /* index into sl_config.upstreams */
  bool spill;                /* default false */
  enum sl_route_mode mode;   /* default async */
  uint64_t wait_timeout_ms;  /* wait mode; default 30s */
  unsigned spill_methods;    /* methods that may spill: <methods> if given, else default set */
  uint64_t queue_timeout_ms; /* default 5s */
  uint64_t queue_ttl_ms;     /* a spilled request expires this long after acceptance; 0 = never */
  bool expire_drop; /* on_expire = "drop": settled unsent; default "dead" (a dead letter) */
  int line;
};

struct sl_config {
  unsigned refs;
  char *path; /* file it was loaded from */

  struct sl_listen_addr listen; /* default "0.0.0.0:8080" */

  char *pid_file; /* NULL: none (pid_file absent) */

  struct {
    struct sl_listen_addr listen; /* default "127.0.0.1:9464" */
    char *token;                  /* "" = none; the file's content when token_file is set */
    char *token_file;             /* NULL: the token is the token setting */
  } admin;

  struct {
    enum sl_log_level level; /* default info */
    bool access;             /* default true */
    char *file;              /* the error log; NULL: stderr */
    char *access_file;       /* the access log; NULL: stdout */
  } log;

  struct {
    uint64_t max_header_bytes;    /* default 16KiB */
    uint64_t max_body_bytes;      /* default 8MiB */
    uint64_t header_timeout_ms;   /* default 10s */
    uint64_t body_timeout_ms;     /* default 30s */
    uint64_t idle_timeout_ms;     /* default 60s */
    uint32_t max_connections;     /* default 10000 */
    uint64_t shutdown_timeout_ms; /* grace period for in-flight requests; default 10s */
    uint64_t max_delay_ms;        /* longest X-Sluice-Delay / Not-Before; default 30d */
  } limits;

  struct {
    char *dir;                  /* default "/var/lib/sluice" */
    enum sl_fsync_policy fsync; /* default batch */
    uint64_t fsync_interval_ms; /* default 0: natural group commit */
    int compression_level;      /* default 1, 1..19 */
  } spool;

  char *status_prefix;       /* status URLs: <prefix><id>; default "/_sluice/requests/" */
  uint64_t dedupe_window_ms; /* Idempotency-Key window; default 24h, 0 = off */

  struct sl_upstream_config *upstreams;
  size_t n_upstreams;
  struct sl_route_config *routes; /* sorted by prefix length, longest first */
  size_t n_routes;
};

/*
 * Loads and validates the file at <path>. On success stores a new config with
 * one reference in <out> and returns 0. On failure returns -1 and writes
 * "file:line: message" (NUL-terminated) into <err> of <errlen> bytes.
 */
int sl_config_load(const char *path, struct sl_config **out, char *err, size_t errlen);

/* Same, from a string; <name> stands for the file name in messages. */
int sl_config_load_string(const char *text, const char *name, struct sl_config **out, char *err,
                          size_t errlen);

struct sl_config *sl_config_ref(struct sl_config *cfg);
/* Drops a reference; the last one frees. Accepts NULL. */
void sl_config_unref(struct sl_config *cfg);

/*
 * Parses "host:port" as the config reads every address: the host an IPv4
 * literal, a bracketed IPv6 literal or "localhost" (names are not resolved),
 * the port 1 to 65535, or 0 too when <allow_any_port>. Fills <sa> and returns
 * 0, or returns -1 with <*why> set to the reason (static text).
 */
int sl_config_parse_addr(const char *text, bool allow_any_port, struct sockaddr_storage *sa,
                         const char **why);

/* Finds an upstream by name; NULL if none. */
const struct sl_upstream_config *sl_config_upstream(const struct sl_config *cfg, const char *name);

/*
 * Routing: the route whose prefix is the longest match of <path> (<path_len>
 * bytes, no query string) among those whose host and methods also match.
 * <host> may be NULL (no Host header); <method_bit> is an SL_METHOD_* bit.
 * A prefix matches at a path-segment boundary or as a plain prefix when it
 * ends in '/'. Returns NULL when nothing matches (the caller answers 404).
 */
const struct sl_route_config *sl_route_match(const struct sl_config *cfg, const char *path,
                                             size_t path_len, const char *host, size_t host_len,
                                             unsigned method_bit);

#endif
