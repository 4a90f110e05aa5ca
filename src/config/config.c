/*
 * Config loading: libconfig syntax into one validated, immutable struct
 * sl_config.
 *
 * Loading is all or nothing. Every default is set first, then each section is
 * read over it; the first problem stops the load with one message of the form
 * "file:line: <key path>: <what is wrong>" and frees everything built so far
 * (the config is calloc'ed, so sl_config_unref() can free a half-built one).
 * Unknown keys are errors at every level, because a misspelt key that was
 * silently ignored would leave a default in force that the operator believes
 * they changed.
 *
 * libconfig 1.5 (Debian 12) silently wraps integer literals that do not fit in
 * 32 bits unless they carry an L suffix (10737418240 becomes 2147483648 or
 * worse). check_int_literals() scans the text for such literals first so the
 * operator gets an error instead of a wrong limit.
 *
 * Key paths in messages are dotted, with list elements by index:
 * "limits.max_body_bytes", "upstreams[0].retry.jitter", "routes[2].upstream".
 *
 * @thread any; a config being built belongs to the loading thread only.
 */
#include "sluice/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_int.h"
#include "sluice/units.h"

#define MAX_UPSTREAM_NAME 64
#define KEY_PATH_MAX 128

/* State of one load: where messages go and what the file is called. */
struct ctx {
  const char *name; /* file name for settings that carry none (string input) */
  char *err;
  size_t errlen;
};

/* ---- messages ---------------------------------------------------------- */

/*
 * Writes "file:line: message" for setting <s> (or "file: message" when <s> is
 * NULL or has no line, e.g. a key that is missing from the whole file) into
 * the error buffer. Always returns -1 so callers can `return fail(...)`.
 */
__attribute__((format(printf, 3, 4))) static int fail(struct ctx *c, const config_setting_t *s,
                                                      const char *fmt, ...) {
  const char *file = c->name;
  unsigned line = 0;
  size_t n;
  int r;
  va_list ap;

  if (c->errlen == 0)
    return -1;
  if (s != NULL) {
    if (config_setting_source_file(s) != NULL)
      file = config_setting_source_file(s);
    line = config_setting_source_line(s);
  }
  if (line > 0)
    r = snprintf(c->err, c->errlen, "%s:%u: ", file, line);
  else
    r = snprintf(c->err, c->errlen, "%s: ", file);
  n = r < 0 ? 0 : (size_t)r;
  if (n >= c->errlen)
    return -1;
  va_start(ap, fmt);
  vsnprintf(c->err + n, c->errlen - n, fmt, ap);
  va_end(ap);
  return -1;
}

/* Returns "<where>.<key>", or <key> alone at the top level, in <buf> of
 * KEY_PATH_MAX bytes. Only a key that is itself absurdly long gets cut. */
static const char *key_path(char *buf, const char *where, const char *key) {
  int n;

  if (where[0] == '\0')
    n = snprintf(buf, KEY_PATH_MAX, "%s", key);
  else
    n = snprintf(buf, KEY_PATH_MAX, "%s.%s", where, key);
  if (n < 0)
    buf[0] = '\0';
  return buf;
}

/* How a value of <s>'s type is described after "got" in a type error. */
static const char *type_name(const config_setting_t *s) {
  switch (config_setting_type(s)) {
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64:
    return "an integer";
  case CONFIG_TYPE_FLOAT:
    return "a float";
  case CONFIG_TYPE_STRING:
    return "a string";
  case CONFIG_TYPE_BOOL:
    return "a boolean";
  case CONFIG_TYPE_ARRAY:
    return "an array [ ... ]";
  case CONFIG_TYPE_LIST:
    return "a list ( ... )";
  case CONFIG_TYPE_GROUP:
    return "a group { ... }";
  default:
    return "nothing";
  }
}

static int fail_type(struct ctx *c, const config_setting_t *s, const char *path,
                     const char *expected) {
  return fail(c, s, "%s: expected %s, got %s", path, expected, type_name(s));
}

/* Edit distance of two short keys, for "did you mean" hints. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[KEY_PATH_MAX];

  if (lb >= KEY_PATH_MAX || la >= KEY_PATH_MAX)
    return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];

    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);

      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/*
 * Fails on the first key of group <grp> that is not in the NULL-terminated
 * list <allowed>, suggesting the closest allowed key when it is near enough
 * to be a typo. Returns 0 or -1.
 */
static int check_keys(struct ctx *c, const config_setting_t *grp, const char *where,
                      const char *const *allowed) {
  for (int i = 0; i < config_setting_length(grp); i++) {
    const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
    const char *name = config_setting_name(s);
    const char *best = NULL;
    size_t best_d = 3; /* suggest only within two edits */
    char path[KEY_PATH_MAX];
    bool known = false;

    for (const char *const *k = allowed; *k != NULL; k++) {
      size_t d = edit_distance(name, *k);

      if (d == 0) {
        known = true;
        break;
      }
      /* A third of the longer name may differ: "listn" suggests "listen",
       * while "foo" is no typo of "log". */
      if (d < best_d && d * 3 <= (strlen(name) > strlen(*k) ? strlen(name) : strlen(*k))) {
        best_d = d;
        best = *k;
      }
    }
    if (known)
      continue;
    key_path(path, where, name);
    if (best != NULL)
      return fail(c, s, "%s: unknown setting (did you mean \"%s\"?)", path, best);
    return fail(c, s, "%s: unknown setting", path);
  }
  return 0;
}

/* ---- typed getters ------------------------------------------------------ */
/* Each looks up <key> in group <grp> (whose path is <where>). When the key is
 * absent it leaves <out> as it was (the default) and returns 0; when the value
 * has the wrong type or is out of range it fails with a message. */

static bool is_int(const config_setting_t *s) {
  return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

static int get_group(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                     const config_setting_t **out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];

  *out = NULL;
  if (s == NULL)
    return 0;
  if (!config_setting_is_group(s))
    return fail_type(c, s, key_path(path, where, key), "a group { ... }");
  *out = s;
  return 0;
}

static int get_string(struct ctx *c, const config_setting_t *grp, const char *where,
                      const char *key, const char **out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];

  if (s == NULL)
    return 0;
  if (config_setting_type(s) != CONFIG_TYPE_STRING)
    return fail_type(c, s, key_path(path, where, key), "a string");
  *out = config_setting_get_string(s);
  return 0;
}

/*
 * A string setting <key> of <grp> that names one of <names> (NULL-terminated): stores its
 * index in <*out>, or leaves <*out> alone when the key is absent. Anything else fails with
 * the names it may take ("must be \"a\" or \"b\", got \"x\"").
 */
static int get_choice(struct ctx *c, const config_setting_t *grp, const char *where,
                      const char *key, const char *const names[], int *out) {
  const char *v = NULL;
  char path[KEY_PATH_MAX], allowed[128];
  size_t n = 0, len = 0;

  if (get_string(c, grp, where, key, &v) != 0)
    return -1;
  if (v == NULL)
    return 0;
  for (; names[n] != NULL; n++) {
    if (strcmp(v, names[n]) == 0) {
      *out = (int)n;
      return 0;
    }
  }
  for (size_t i = 0; i < n && len < sizeof(allowed); i++)
    len += (size_t)snprintf(allowed + len, sizeof(allowed) - len, "%s\"%s\"",
                            i == 0      ? ""
                            : i + 1 < n ? ", "
                                        : " or ",
                            names[i]);
  return fail(c, config_setting_get_member(grp, key), "%s: must be %s, got \"%s\"",
              key_path(path, where, key), allowed, v);
}

/* Replaces the heap string <*dst> by a copy of <src>. */
static int set_string(struct ctx *c, const config_setting_t *s, char **dst, const char *src) {
  char *copy = strdup(src);

  if (copy == NULL)
    return fail(c, s, "out of memory");
  free(*dst);
  *dst = copy;
  return 0;
}

/* A path: a string that is not empty. When <key> is present, replaces <*out> (NULL, or a
 * default) by a copy of it; when absent, leaves <*out> as it is. */
static int get_path(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                    char **out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  const char *text = NULL;
  char path[KEY_PATH_MAX];

  if (get_string(c, grp, where, key, &text) != 0)
    return -1;
  if (text == NULL)
    return 0;
  if (text[0] == '\0')
    return fail(c, s, "%s: must not be empty", key_path(path, where, key));
  return set_string(c, s, out, text);
}

static int get_bool(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                    bool *out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];

  if (s == NULL)
    return 0;
  if (config_setting_type(s) != CONFIG_TYPE_BOOL)
    return fail_type(c, s, key_path(path, where, key), "true or false");
  *out = config_setting_get_bool(s) != 0;
  return 0;
}

/* An integer in [<min>, <max>]. */
static int get_int(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                   long long min, long long max, long long *out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];
  long long v;

  if (s == NULL)
    return 0;
  key_path(path, where, key);
  if (!is_int(s))
    return fail_type(c, s, path, "an integer");
  v = config_setting_get_int64(s);
  if (v < min)
    return fail(c, s, "%s: must be at least %lld, got %lld", path, min, v);
  if (v > max)
    return fail(c, s, "%s: must be at most %lld, got %lld", path, max, v);
  *out = v;
  return 0;
}

static int get_u32(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                   uint32_t min, uint32_t *out) {
  long long v = *out;

  if (get_int(c, grp, where, key, min, UINT32_MAX, &v) != 0)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

/* A float or an integer, finite. Range checks are left to the caller, which
 * knows how to phrase them; <*sp> is set to the setting for its message. */
static int get_number(struct ctx *c, const config_setting_t *grp, const char *where,
                      const char *key, double *out, const config_setting_t **sp) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];
  double v;

  *sp = s;
  if (s == NULL)
    return 0;
  key_path(path, where, key);
  if (is_int(s))
    v = (double)config_setting_get_int64(s);
  else if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
    v = config_setting_get_float(s);
  else
    return fail_type(c, s, path, "a number");
  if (!isfinite(v))
    return fail(c, s, "%s: must be a finite number", path);
  *out = v;
  return 0;
}

/* The value of integer setting <s> (<path> in messages), which must not be negative. */
static int get_nonnegative(struct ctx *c, const config_setting_t *s, const char *path,
                           uint64_t *out) {
  long long i = config_setting_get_int64(s);

  if (i < 0)
    return fail(c, s, "%s: must not be negative, got %lld", path, i);
  *out = (uint64_t)i;
  return 0;
}

/* A size: a string with a unit ("64KiB") or an integer number of bytes. The
 * result must be at least <min>. */
static int get_size(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                    uint64_t min, uint64_t *out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];
  uint64_t v;

  if (s == NULL)
    return 0;
  key_path(path, where, key);
  if (is_int(s)) {
    if (get_nonnegative(c, s, path, &v) != 0)
      return -1;
  } else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
    if (sl_size_parse(config_setting_get_string(s), &v) != 0)
      return fail(c, s, "%s: bad size \"%s\"", path, config_setting_get_string(s));
  } else {
    return fail_type(c, s, path, "a size (a string like \"64KiB\" or an integer byte count)");
  }
  if (v < min) {
    if (min == 1)
      return fail(c, s, "%s: must be greater than 0", path);
    return fail(c, s, "%s: must be at least %" PRIu64 " bytes", path, min);
  }
  *out = v;
  return 0;
}

/* A duration: a string with units ("1h30m", "250ms"), or a number of seconds
 * (an integer, or a float for fractions). Stored in milliseconds, rounded
 * down; the result must be at least <min_ms>. */
static int get_duration(struct ctx *c, const config_setting_t *grp, const char *where,
                        const char *key, uint64_t min_ms, uint64_t *out) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];
  uint64_t v;

  if (s == NULL)
    return 0;
  key_path(path, where, key);
  if (is_int(s)) {
    if (get_nonnegative(c, s, path, &v) != 0)
      return -1;
    if (v > UINT64_MAX / 1000)
      return fail(c, s, "%s: too large", path);
    v *= 1000;
  } else if (config_setting_type(s) == CONFIG_TYPE_FLOAT) {
    double f = config_setting_get_float(s);

    if (!(f >= 0))
      return fail(c, s, "%s: must not be negative, got %g", path, f);
    if (!(f * 1000.0 < 18446744073709551615.0))
      return fail(c, s, "%s: too large", path);
    v = (uint64_t)(f * 1000.0);
  } else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
    if (sl_duration_parse(config_setting_get_string(s), &v) != 0)
      return fail(c, s, "%s: bad duration \"%s\"", path, config_setting_get_string(s));
  } else {
    return fail_type(c, s, path,
                     "a duration (a string like \"30s\" or an integer number of seconds)");
  }
  if (v < min_ms)
    return fail(c, s, "%s: must be greater than 0", path);
  *out = v;
  return 0;
}

/* ---- addresses ---------------------------------------------------------- */

/*
 * Parses "host:port" into <sa>. The host is an IPv4 literal, a bracketed IPv6
 * literal or "localhost" (127.0.0.1); names are refused because resolving
 * them would block the loop and make a reload depend on DNS. Port 0 is
 * allowed only when <allow_any_port> (a listener on an ephemeral port).
 * Returns 0, or -1 with <*why> set to the reason.
 */
static int parse_addr(const char *text, bool allow_any_port, struct sockaddr_storage *sa,
                      const char **why) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *colon, *hs = text;
  size_t hlen;
  unsigned long port = 0;
  bool v6 = false;

  if (text[0] == '[') {
    const char *end = strchr(text, ']');

    if (end == NULL) {
      *why = "missing ']' after the IPv6 address";
      return -1;
    }
    hs = text + 1;
    hlen = (size_t)(end - hs);
    colon = end + 1;
    if (*colon != ':') {
      *why = "expected \"host:port\"";
      return -1;
    }
    v6 = true;
  } else {
    colon = strrchr(text, ':');
    if (colon == NULL) {
      *why = "expected \"host:port\"";
      return -1;
    }
    if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
      *why = "an IPv6 address must be in brackets, as in \"[::1]:9000\"";
      return -1;
    }
    hlen = (size_t)(colon - text);
  }
  if (hlen == 0) {
    *why = "missing host";
    return -1;
  }
  if (colon[1] == '\0') {
    *why = "missing port";
    return -1;
  }
  for (const char *p = colon + 1; *p != '\0'; p++) {
    if (*p < '0' || *p > '9' || p - colon > 5) {
      *why = "port must be a number from 1 to 65535";
      return -1;
    }
    port = port * 10 + (unsigned long)(*p - '0');
  }
  if (port > 65535 || (port == 0 && !allow_any_port)) {
    *why = "port must be a number from 1 to 65535";
    return -1;
  }
  memset(sa, 0, sizeof(*sa));
  if (hlen >= sizeof(host))
    goto not_literal;
  memcpy(host, hs, hlen);
  host[hlen] = '\0';
  if (v6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;

    if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
      *why = "bad IPv6 address";
      return -1;
    }
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    return 0;
  }
  {
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;

    if (strcasecmp(host, "localhost") == 0) {
      s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
      goto not_literal;
    }
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    return 0;
  }
not_literal:
  *why = "host must be an IP address or \"localhost\" (host names are not resolved)";
  return -1;
}

int sl_config_parse_addr(const char *text, bool allow_any_port, struct sockaddr_storage *sa,
                         const char **why) {
  return parse_addr(text, allow_any_port, sa, why);
}

static bool addr_unspecified(const struct sockaddr_storage *sa) {
  if (sa->ss_family == AF_INET)
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
  return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

/* Reads the address at <key> of <grp> into <a>. A listener may use port 0 and
 * the unspecified address; an upstream needs a real one of each. */
static int get_addr(struct ctx *c, const config_setting_t *grp, const char *where, const char *key,
                    bool listener, struct sl_listen_addr *a) {
  const config_setting_t *s = config_setting_get_member(grp, key);
  char path[KEY_PATH_MAX];
  const char *text = NULL, *why = NULL;
  struct sockaddr_storage sa;

  if (get_string(c, grp, where, key, &text) != 0)
    return -1;
  if (text == NULL)
    return 0;
  key_path(path, where, key);
  if (parse_addr(text, listener, &sa, &why) != 0)
    return fail(c, s, "%s: bad address \"%s\": %s", path, text, why);
  if (!listener && addr_unspecified(&sa))
    return fail(c, s, "%s: bad address \"%s\": cannot connect to the unspecified address", path,
                text);
  if (set_string(c, s, &a->text, text) != 0)
    return -1;
  a->sa = sa;
  return 0;
}

/* Sets <a> to the built-in default <text>, which must parse. */
static int set_default_addr(struct ctx *c, struct sl_listen_addr *a, const char *text) {
  const char *why;

  if (parse_addr(text, true, &a->sa, &why) != 0)
    return fail(c, NULL, "internal error: bad default address \"%s\"", text);
  return set_string(c, NULL, &a->text, text);
}

/* ---- 32-bit integer literals ------------------------------------------- */

/*
 * Fails on the first integer literal in <text> that libconfig 1.5 would wrap
 * because it does not fit in 32 bits and has no L suffix. A small lexer skips
 * strings, comments and names so that only real literals are looked at.
 */
static int check_int_literals(struct ctx *c, const char *text) {
  const char *p = text;
  unsigned line = 1;

  while (*p != '\0') {
    if (*p == '\n') {
      line++;
      p++;
    } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
      while (*p != '\0' && *p != '\n')
        p++;
    } else if (p[0] == '/' && p[1] == '*') {
      p += 2;
      while (*p != '\0' && !(p[0] == '*' && p[1] == '/'))
        line += *p++ == '\n';
      if (*p != '\0')
        p += 2;
    } else if (*p == '"') {
      p++;
      while (*p != '\0' && *p != '"') {
        if (*p == '\\' && p[1] != '\0')
          p++;
        line += *p++ == '\n';
      }
      if (*p != '\0')
        p++;
    } else if (isalpha((unsigned char)*p) || *p == '*' || *p == '_' || *p == '@') {
      p++;
      while (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '*')
        p++;
    } else if (isdigit((unsigned char)*p) ||
               ((*p == '-' || *p == '+') && isdigit((unsigned char)p[1]))) {
      const char *start = p, *digits;
      bool hex, is_float = false;
      char lit[64];
      long long v;
      char *end;

      p++;
      digits = isdigit((unsigned char)*start) ? start : start + 1;
      hex = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X');
      for (;;) {
        if (isalnum((unsigned char)*p)) {
          if (!hex && (*p == 'e' || *p == 'E'))
            is_float = true;
          p++;
        } else if (*p == '.') {
          is_float = true;
          p++;
        } else if ((*p == '+' || *p == '-') && !hex && (p[-1] == 'e' || p[-1] == 'E')) {
          p++;
        } else {
          break;
        }
      }
      if (is_float || p[-1] == 'L' || p[-1] == 'l')
        continue;
      if ((size_t)(p - start) >= sizeof(lit)) {
        v = LLONG_MAX;
      } else {
        memcpy(lit, start, (size_t)(p - start));
        lit[p - start] = '\0';
        errno = 0;
        v = strtoll(lit, &end, hex ? 16 : 10);
        if (errno == ERANGE)
          v = LLONG_MAX;
        else if (*end != '\0')
          continue; /* not a number libconfig would take; its parser has spoken */
      }
      if (v > INT32_MAX || v < INT32_MIN) {
        if (c->errlen > 0)
          snprintf(c->err, c->errlen,
                   "%s:%u: integer %.*s does not fit in 32 bits; add an L suffix (%.*sL) or, "
                   "for a size, write it as a string with a unit (\"10GiB\")",
                   c->name, line, (int)(p - start), start, (int)(p - start), start);
        return -1;
      }
    } else {
      p++;
    }
  }
  return 0;
}

/* ---- sections ----------------------------------------------------------- */

static const char *const top_keys[] = {"listen",        "admin",     "log",    "limits",
                                       "spool",         "upstreams", "routes", "status_prefix",
                                       "dedupe_window", "pid_file",  NULL};
static const char *const admin_keys[] = {"listen", "token", "token_file", NULL};
static const char *const log_keys[] = {"level", "access", "file", "access_file", NULL};
static const char *const limits_keys[] = {"max_header_bytes", "max_body_bytes", "header_timeout",
                                          "body_timeout",     "idle_timeout",   "max_connections",
                                          "shutdown_timeout", "max_delay",      NULL};
static const char *const spool_keys[] = {"dir", "fsync", "fsync_interval", "compression_level",
                                         NULL};
static const char *const upstream_keys[] = {"name",
                                            "address",
                                            "rate",
                                            "burst",
                                            "max_inflight",
                                            "connect_timeout",
                                            "response_timeout",
                                            "keepalive",
                                            "max_spool_bytes",
                                            "paused",
                                            "retry",
                                            "adaptive",
                                            "min_rate",
                                            "max_rate",
                                            "target_latency",
                                            NULL};
static const char *const retry_keys[] = {"max_attempts", "initial_backoff", "max_backoff",
                                         "multiplier",   "jitter",          NULL};
static const char *const route_keys[] = {
    "prefix",       "host",          "methods",   "upstream",  "spill", "mode",
    "wait_timeout", "queue_timeout", "queue_ttl", "on_expire", NULL};

static int set_defaults(struct ctx *c, struct sl_config *cfg) {
  if (set_default_addr(c, &cfg->listen, "0.0.0.0:8080") != 0 ||
      set_default_addr(c, &cfg->admin.listen, "127.0.0.1:9464") != 0 ||
      set_string(c, NULL, &cfg->admin.token, "") != 0 ||
      set_string(c, NULL, &cfg->spool.dir, "/var/lib/sluice") != 0 ||
      set_string(c, NULL, &cfg->status_prefix, "/_sluice/requests/") != 0)
    return -1;
  cfg->dedupe_window_ms = 24 * 3600 * 1000;
  cfg->log.level = SL_LOG_INFO;
  cfg->log.access = true;
  cfg->limits.max_header_bytes = 16 * 1024;
  cfg->limits.max_body_bytes = 8 * 1024 * 1024;
  cfg->limits.header_timeout_ms = 10 * 1000;
  cfg->limits.body_timeout_ms = 30 * 1000;
  cfg->limits.idle_timeout_ms = 60 * 1000;
  cfg->limits.max_connections = 10000;
  cfg->limits.shutdown_timeout_ms = 10 * 1000;
  cfg->limits.max_delay_ms = 30ull * 24 * 3600 * 1000;
  cfg->spool.fsync = SL_FSYNC_BATCH;
  cfg->spool.fsync_interval_ms = 0; /* natural group commit: see docs */
  /* Level 1: the block and dictionary do most of the work; higher levels
   * cost the writer more than they save (docs/spool-format.md). */
  cfg->spool.compression_level = 1;
  return 0;
}

/* Top-level keys of the spill path: the status URL prefix and the
 * Idempotency-Key window. */
static int parse_spill_keys(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *s = config_setting_get_member(root, "status_prefix");
  const char *prefix = NULL;
  size_t n;

  if (get_duration(c, root, "", "dedupe_window", 0, &cfg->dedupe_window_ms) != 0 ||
      get_string(c, root, "", "status_prefix", &prefix) != 0)
    return -1;
  if (prefix == NULL)
    return 0;
  n = strlen(prefix);
  /* It must end in '/' so that "<prefix><id>" is one path segment below it. */
  if (n < 2 || prefix[0] != '/' || prefix[n - 1] != '/' || strchr(prefix, '?') != NULL)
    return fail(c, s, "status_prefix: must start and end with '/', e.g. \"/_sluice/requests/\"");
  return set_string(c, s, &cfg->status_prefix, prefix);
}

#define MAX_TOKEN_BYTES 4096

/*
 * Reads the admin token from the file <path> (the setting <s>): the file's content without
 * the blanks and line ends around it, which must be one non-empty word of visible characters
 * (a bearer token cannot hold a blank). Stores a copy in <*out>. Blocks on the file: a
 * reload loads its config on the threadpool.
 */
static int read_token_file(struct ctx *c, const config_setting_t *s, const char *path, char **out) {
  char buf[MAX_TOKEN_BYTES + 1];
  FILE *f = fopen(path, "rb");
  char *start = buf, *end;
  size_t n;
  int rc = -1;

  if (f == NULL)
    return fail(c, s, "admin.token_file: cannot open %s: %s", path, strerror(errno));
  n = fread(buf, 1, sizeof(buf), f);
  if (ferror(f)) {
    fail(c, s, "admin.token_file: cannot read %s: %s", path, strerror(errno));
    goto done;
  }
  if (n > MAX_TOKEN_BYTES) {
    fail(c, s, "admin.token_file: %s is larger than %d bytes: it must hold the token alone", path,
         MAX_TOKEN_BYTES);
    goto done;
  }
  end = buf + n;
  while (start < end && isspace((unsigned char)*start))
    start++;
  while (end > start && isspace((unsigned char)end[-1]))
    end--;
  if (start == end) {
    fail(c, s, "admin.token_file: %s is empty", path);
    goto done;
  }
  for (const char *p = start; p < end; p++) {
    if ((unsigned char)*p <= ' ' || *p == 0x7f) {
      fail(c, s, "admin.token_file: the token in %s holds a blank or control character", path);
      goto done;
    }
  }
  *end = '\0';
  rc = set_string(c, s, out, start);
done:
  fclose(f);
  explicit_bzero(buf, sizeof(buf)); /* no copy of the secret left on the stack */
  return rc;
}

static int parse_admin(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *g;
  const char *token = NULL;

  if (get_group(c, root, "", "admin", &g) != 0)
    return -1;
  if (g == NULL)
    return 0;
  if (check_keys(c, g, "admin", admin_keys) != 0 ||
      get_addr(c, g, "admin", "listen", true, &cfg->admin.listen) != 0 ||
      get_string(c, g, "admin", "token", &token) != 0 ||
      get_path(c, g, "admin", "token_file", &cfg->admin.token_file) != 0)
    return -1;
  if (token != NULL && cfg->admin.token_file != NULL)
    return fail(c, config_setting_get_member(g, "token_file"),
                "admin.token_file: set either token or token_file, not both");
  if (cfg->admin.token_file != NULL)
    return read_token_file(c, config_setting_get_member(g, "token_file"), cfg->admin.token_file,
                           &cfg->admin.token);
  if (token != NULL && set_string(c, g, &cfg->admin.token, token) != 0)
    return -1;
  return 0;
}

static int parse_log(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *g;
  const char *level = NULL;

  if (get_group(c, root, "", "log", &g) != 0)
    return -1;
  if (g == NULL)
    return 0;
  if (check_keys(c, g, "log", log_keys) != 0 || get_string(c, g, "log", "level", &level) != 0 ||
      get_bool(c, g, "log", "access", &cfg->log.access) != 0 ||
      get_path(c, g, "log", "file", &cfg->log.file) != 0 ||
      get_path(c, g, "log", "access_file", &cfg->log.access_file) != 0)
    return -1;
  if (level != NULL && sl_log_level_parse(level, &cfg->log.level) != 0)
    return fail(c, config_setting_get_member(g, "level"),
                "log.level: must be \"debug\", \"info\", \"warn\" or \"error\", got \"%s\"", level);
  return 0;
}

static int parse_limits(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *g;

  if (get_group(c, root, "", "limits", &g) != 0)
    return -1;
  if (g == NULL)
    return 0;
  if (check_keys(c, g, "limits", limits_keys) != 0 ||
      get_size(c, g, "limits", "max_header_bytes", 1, &cfg->limits.max_header_bytes) != 0 ||
      get_size(c, g, "limits", "max_body_bytes", 0, &cfg->limits.max_body_bytes) != 0 ||
      get_duration(c, g, "limits", "header_timeout", 1, &cfg->limits.header_timeout_ms) != 0 ||
      get_duration(c, g, "limits", "body_timeout", 1, &cfg->limits.body_timeout_ms) != 0 ||
      get_duration(c, g, "limits", "idle_timeout", 1, &cfg->limits.idle_timeout_ms) != 0 ||
      get_u32(c, g, "limits", "max_connections", 1, &cfg->limits.max_connections) != 0 ||
      get_duration(c, g, "limits", "shutdown_timeout", 0, &cfg->limits.shutdown_timeout_ms) != 0 ||
      get_duration(c, g, "limits", "max_delay", 1, &cfg->limits.max_delay_ms) != 0)
    return -1;
  return 0;
}

static int parse_spool(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *g;
  const char *fsync = NULL;
  long long level = cfg->spool.compression_level;

  if (get_group(c, root, "", "spool", &g) != 0)
    return -1;
  if (g == NULL)
    return 0;
  if (check_keys(c, g, "spool", spool_keys) != 0 ||
      get_path(c, g, "spool", "dir", &cfg->spool.dir) != 0 ||
      get_string(c, g, "spool", "fsync", &fsync) != 0 ||
      get_duration(c, g, "spool", "fsync_interval", 0, &cfg->spool.fsync_interval_ms) != 0 ||
      get_int(c, g, "spool", "compression_level", 1, 19, &level) != 0)
    return -1;
  cfg->spool.compression_level = (int)level;
  if (fsync != NULL) {
    if (strcmp(fsync, "always") == 0)
      cfg->spool.fsync = SL_FSYNC_ALWAYS;
    else if (strcmp(fsync, "batch") == 0)
      cfg->spool.fsync = SL_FSYNC_BATCH;
    else if (strcmp(fsync, "off") == 0)
      cfg->spool.fsync = SL_FSYNC_OFF;
    else
      return fail(c, config_setting_get_member(g, "fsync"),
                  "spool.fsync: must be \"always\", \"batch\" or \"off\", got \"%s\"", fsync);
  }
  return 0;
}

/*
 * Returns the list at <key> of <root> in <*out>, failing when it is missing,
 * not a list, or empty: a proxy without upstreams or routes could only answer
 * 404, which is never what the operator meant. <what> names an element.
 */
/* The list <key> of <root>, which must hold at least one <what>, and room for its <*n>
 * elements of <size> bytes, zeroed, in <*elems>. Returns 0 or -1 (the error is in <c>). */
/* The list <key> of <root>, checked to hold at least one <what>; NULL (after fail()) if not. */
static const config_setting_t *get_list(struct ctx *c, const config_setting_t *root,
                                        const char *key, const char *what) {
  const config_setting_t *s = config_setting_get_member(root, key);

  if (s == NULL) {
    fail(c, NULL, "no %s: define at least one in \"%s = ( { ... } );\"", key, key);
    return NULL;
  }
  if (config_setting_length(s) == 0 && (config_setting_is_list(s) || config_setting_is_array(s))) {
    fail(c, s, "%s: empty; define at least one %s", key, what);
    return NULL;
  }
  if (!config_setting_is_list(s)) {
    fail_type(c, s, key, "a list ( { ... }, ... )");
    return NULL;
  }
  return s;
}

/* Zeroed room for the elements of <list>, <size> bytes each; NULL (after fail()) if none. */
static void *alloc_elems(struct ctx *c, const config_setting_t *list, size_t size) {
  void *elems = calloc((size_t)config_setting_length(list), size);

  if (elems == NULL)
    fail(c, list, "out of memory");
  return elems;
}

typedef int (*elem_parser)(struct ctx *c, const config_setting_t *g, size_t idx,
                           struct sl_config *cfg);

/* Parses the elements of <list> with <parse>. <*count> grows with each element begun,
 * so that unref frees what a failed one got. Returns 0 or -1. */
static int parse_elems(struct ctx *c, const config_setting_t *list, size_t *count,
                       elem_parser parse, struct sl_config *cfg) {
  size_t n = (size_t)config_setting_length(list);

  for (size_t i = 0; i < n; i++) {
    *count = i + 1;
    if (parse(c, config_setting_get_elem(list, (unsigned)i), i, cfg) != 0)
      return -1;
  }
  return 0;
}

static bool upstream_name_ok(const char *name) {
  size_t n = strlen(name);

  if (n == 0 || n > MAX_UPSTREAM_NAME || !isalnum((unsigned char)name[0]))
    return false;
  for (size_t i = 0; i < n; i++) {
    if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-' && name[i] != '.')
      return false;
  }
  return true;
}

static int parse_retry(struct ctx *c, const config_setting_t *up, const char *upath,
                       struct sl_retry_config *r) {
  const config_setting_t *g, *s;
  char where[KEY_PATH_MAX], path[KEY_PATH_MAX];

  r->max_attempts = 8;
  r->initial_backoff_ms = 1000;
  r->max_backoff_ms = 5 * 60 * 1000;
  r->multiplier = 2.0;
  r->jitter = 0.2;
  if (get_group(c, up, upath, "retry", &g) != 0)
    return -1;
  if (g == NULL)
    return 0;
  key_path(where, upath, "retry");
  if (check_keys(c, g, where, retry_keys) != 0 ||
      get_u32(c, g, where, "max_attempts", 1, &r->max_attempts) != 0 ||
      get_duration(c, g, where, "initial_backoff", 1, &r->initial_backoff_ms) != 0 ||
      get_duration(c, g, where, "max_backoff", 1, &r->max_backoff_ms) != 0)
    return -1;
  if (r->max_backoff_ms < r->initial_backoff_ms)
    return fail(c, config_setting_get_member(g, "max_backoff"),
                "%s: must be at least initial_backoff (%" PRIu64 " ms), got %" PRIu64 " ms",
                key_path(path, where, "max_backoff"), r->initial_backoff_ms, r->max_backoff_ms);
  if (get_number(c, g, where, "multiplier", &r->multiplier, &s) != 0)
    return -1;
  if (s != NULL && r->multiplier < 1.0)
    return fail(c, s, "%s: must be at least 1, got %g", key_path(path, where, "multiplier"),
                r->multiplier);
  if (get_number(c, g, where, "jitter", &r->jitter, &s) != 0)
    return -1;
  if (s != NULL && (r->jitter < 0.0 || r->jitter > 1.0))
    return fail(c, s, "%s: must be between 0 and 1, got %g", key_path(path, where, "jitter"),
                r->jitter);
  return 0;
}

/* The adaptive rate's keys of upstream <g> (<where> in messages): its bounds hold
 * min_rate <= rate <= max_rate, and they mean nothing without adaptive = true. */
static int parse_adaptive(struct ctx *c, const config_setting_t *g, const char *where,
                          struct sl_upstream_config *u) {
  const config_setting_t *min_s, *max_s, *on_s = config_setting_get_member(g, "adaptive");
  const config_setting_t *target_s = config_setting_get_member(g, "target_latency");

  u->adaptive = false;
  u->min_rate = 0;
  u->max_rate = 0;
  u->target_latency_ms = 0;
  if (get_bool(c, g, where, "adaptive", &u->adaptive) != 0 ||
      get_number(c, g, where, "min_rate", &u->min_rate, &min_s) != 0 ||
      get_number(c, g, where, "max_rate", &u->max_rate, &max_s) != 0 ||
      get_duration(c, g, where, "target_latency", 1, &u->target_latency_ms) != 0)
    return -1;
  if (!u->adaptive) {
    const config_setting_t *stray = min_s != NULL ? min_s : max_s != NULL ? max_s : target_s;

    if (stray != NULL)
      return fail(c, stray, "%s.%s: only with adaptive = true", where, config_setting_name(stray));
    return 0;
  }
  if (config_setting_get_member(g, "rate") == NULL)
    return fail(c, on_s, "%s.adaptive: needs rate, the rate to start from", where);
  if (max_s == NULL)
    return fail(c, on_s, "%s.adaptive: needs max_rate, the highest rate it may reach", where);
  if (min_s == NULL)
    u->min_rate = u->rate < 1.0 ? u->rate : 1.0;
  else if (!(u->min_rate > 0))
    return fail(c, min_s, "%s.min_rate: must be greater than 0, got %g", where, u->min_rate);
  if (u->min_rate > u->rate)
    return fail(c, min_s, "%s.min_rate: %g is above rate (%g); want min_rate <= rate <= max_rate",
                where, u->min_rate, u->rate);
  if (u->max_rate < u->rate)
    return fail(c, max_s, "%s.max_rate: %g is below rate (%g); want min_rate <= rate <= max_rate",
                where, u->max_rate, u->rate);
  return 0;
}

static int parse_upstream(struct ctx *c, const config_setting_t *g, size_t idx,
                          struct sl_config *cfg) {
  struct sl_upstream_config *u = &cfg->upstreams[idx];
  const config_setting_t *s;
  const char *name = NULL;
  char where[KEY_PATH_MAX];
  bool burst_set;

  snprintf(where, sizeof(where), "upstreams[%zu]", idx);
  u->line = (int)config_setting_source_line(g);
  if (!config_setting_is_group(g))
    return fail_type(c, g, where, "a group { ... }");
  if (check_keys(c, g, where, upstream_keys) != 0 || get_string(c, g, where, "name", &name) != 0)
    return -1;
  if (name == NULL)
    return fail(c, g, "%s: missing \"name\"", where);
  s = config_setting_get_member(g, "name");
  if (!upstream_name_ok(name))
    return fail(c, s,
                "%s.name: bad name \"%s\": use 1 to %d letters, digits, '_', '-' or '.', "
                "starting with a letter or digit",
                where, name, MAX_UPSTREAM_NAME);
  for (size_t i = 0; i < idx; i++) {
    if (strcmp(cfg->upstreams[i].name, name) == 0)
      return fail(c, s, "%s.name: duplicate upstream \"%s\" (first defined at line %d)", where,
                  name, cfg->upstreams[i].line);
  }
  if (set_string(c, s, &u->name, name) != 0)
    return -1;
  if (config_setting_get_member(g, "address") == NULL)
    return fail(c, g, "%s: missing \"address\"", where);
  if (get_addr(c, g, where, "address", false, &u->address) != 0)
    return -1;

  u->rate = 0;
  u->max_inflight = 0;
  u->connect_timeout_ms = 2 * 1000;
  u->response_timeout_ms = 30 * 1000;
  u->keepalive = 32;
  u->max_spool_bytes = 10ull * 1024 * 1024 * 1024;
  u->paused = false;
  if (get_number(c, g, where, "rate", &u->rate, &s) != 0)
    return -1;
  if (s != NULL && !(u->rate > 0))
    return fail(c, s, "%s.rate: must be greater than 0, got %g (leave rate out for no limit)",
                where, u->rate);
  burst_set = config_setting_get_member(g, "burst") != NULL;
  u->burst = 1;
  if (get_u32(c, g, where, "burst", 1, &u->burst) != 0 ||
      get_u32(c, g, where, "max_inflight", 0, &u->max_inflight) != 0 ||
      get_duration(c, g, where, "connect_timeout", 1, &u->connect_timeout_ms) != 0 ||
      get_duration(c, g, where, "response_timeout", 1, &u->response_timeout_ms) != 0 ||
      get_u32(c, g, where, "keepalive", 0, &u->keepalive) != 0 ||
      get_size(c, g, where, "max_spool_bytes", 1, &u->max_spool_bytes) != 0 ||
      get_bool(c, g, where, "paused", &u->paused) != 0 || parse_retry(c, g, where, &u->retry) != 0)
    return -1;
  if (parse_adaptive(c, g, where, u) != 0)
    return -1;
  /* One second's worth of tokens lets a steady stream at <rate> through
   * without queuing while still bounding the spike the backend sees. */
  if (!burst_set && u->rate > 1.0)
    u->burst = u->rate >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)u->rate;
  return 0;
}

static int parse_upstreams(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *list = get_list(c, root, "upstreams", "upstream");

  if (list == NULL || (cfg->upstreams = alloc_elems(c, list, sizeof(*cfg->upstreams))) == NULL)
    return -1;
  return parse_elems(c, list, &cfg->n_upstreams, parse_upstream, cfg);
}

static int parse_methods(struct ctx *c, const config_setting_t *g, const char *where,
                         unsigned *out) {
  const config_setting_t *s = config_setting_get_member(g, "methods");
  char path[KEY_PATH_MAX];
  unsigned mask = 0;

  if (s == NULL)
    return 0;
  key_path(path, where, "methods");
  if (!config_setting_is_array(s) && !config_setting_is_list(s))
    return fail_type(c, s, path, "an array of method names like [ \"POST\", \"PUT\" ]");
  if (config_setting_length(s) == 0)
    return fail(c, s, "%s: empty; leave methods out to match every method", path);
  for (int i = 0; i < config_setting_length(s); i++) {
    const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
    const char *m;

    if (config_setting_type(e) != CONFIG_TYPE_STRING)
      return fail_type(c, e, path, "method names (strings)");
    m = config_setting_get_string(e);
    if (!sl__method_known(m))
      return fail(c, e,
                  "%s: unknown method \"%s\" (methods are upper case: GET, HEAD, POST, PUT, "
                  "PATCH, DELETE, OPTIONS, TRACE, CONNECT)",
                  path, m);
    mask |= sl_method_bit(m, strlen(m));
  }
  *out = mask;
  return 0;
}

/* Checks a route's path prefix: it starts with '/', and holds no query,
 * fragment, blank or control character, which a request path never has. */
static bool prefix_ok(const char *p) {
  if (p[0] != '/')
    return false;
  for (; *p != '\0'; p++) {
    if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#')
      return false;
  }
  return true;
}

/* Checks a route's host and stores it lower-case in <*dst>. A port is refused:
 * the request's port is ignored when matching, so one here could never match. */
static int set_route_host(struct ctx *c, const config_setting_t *s, const char *where,
                          const char *host, char **dst) {
  size_t n = strlen(host);
  bool bracketed = n > 2 && host[0] == '[' && host[n - 1] == ']';

  if (n == 0)
    return fail(c, s, "%s.host: must not be empty; leave host out to match any host", where);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)host[i];

    if (ch <= ' ' || ch == 0x7f || ch == '/' || (ch == ':' && !bracketed))
      return fail(c, s, "%s.host: bad host \"%s\": give a name or address without a port", where,
                  host);
  }
  if (set_string(c, s, dst, host) != 0)
    return -1;
  for (char *p = *dst; *p != '\0'; p++)
    *p = (char)tolower((unsigned char)*p);
  return 0;
}

/*
 * A route's expiry: queue_ttl (a duration of at least 1ms, within
 * limits.max_delay, as X-Sluice-Expires-After is) and on_expire.
 */
static int parse_expiry(struct ctx *c, const config_setting_t *g, const char *where,
                        uint64_t max_delay_ms, struct sl_route_config *r) {
  static const char *const outcomes[] = {"dead", "drop", NULL};
  int drop = 0;

  if (get_duration(c, g, where, "queue_ttl", 1, &r->queue_ttl_ms) != 0)
    return -1;
  if (r->queue_ttl_ms > max_delay_ms)
    return fail(c, config_setting_get_member(g, "queue_ttl"),
                "%s.queue_ttl: longer than limits.max_delay (%llu ms)", where,
                (unsigned long long)max_delay_ms);
  if (get_choice(c, g, where, "on_expire", outcomes, &drop) != 0)
    return -1;
  r->expire_drop = drop == 1;
  return 0;
}

static int parse_route(struct ctx *c, const config_setting_t *g, size_t idx,
                       struct sl_config *cfg) {
  struct sl_route_config *r = &cfg->routes[idx];
  static const char *const modes[] = {"async", "wait", NULL}; /* enum sl_route_mode's order */
  const char *prefix = NULL, *host = NULL, *upstream = NULL;
  int mode = SL_MODE_ASYNC;
  const config_setting_t *s;
  char where[KEY_PATH_MAX];
  bool found = false;

  snprintf(where, sizeof(where), "routes[%zu]", idx);
  r->line = (int)config_setting_source_line(g);
  r->wait_timeout_ms = 30 * 1000;
  r->queue_timeout_ms = 5 * 1000;
  if (!config_setting_is_group(g))
    return fail_type(c, g, where, "a group { ... }");
  if (check_keys(c, g, where, route_keys) != 0 || get_string(c, g, where, "prefix", &prefix) != 0 ||
      get_string(c, g, where, "host", &host) != 0 ||
      get_string(c, g, where, "upstream", &upstream) != 0 ||
      get_choice(c, g, where, "mode", modes, &mode) != 0)
    return -1;
  r->mode = (enum sl_route_mode)mode;

  if (prefix == NULL)
    return fail(c, g, "%s: missing \"prefix\"", where);
  s = config_setting_get_member(g, "prefix");
  if (!prefix_ok(prefix))
    return fail(c, s,
                "%s.prefix: bad prefix \"%s\": must start with '/' and hold no blank, '?' or '#'",
                where, prefix);
  if (set_string(c, s, &r->prefix, prefix) != 0)
    return -1;
  r->prefix_len = strlen(prefix);

  if (host != NULL &&
      set_route_host(c, config_setting_get_member(g, "host"), where, host, &r->host) != 0)
    return -1;

  if (upstream == NULL)
    return fail(c, g, "%s: missing \"upstream\"", where);
  s = config_setting_get_member(g, "upstream");
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    if (strcmp(cfg->upstreams[i].name, upstream) == 0) {
      r->upstream = i;
      found = true;
      break;
    }
  }
  if (!found)
    return fail(c, s, "%s.upstream: no upstream named \"%s\"", where, upstream);
  if (set_string(c, s, &r->upstream_name, upstream) != 0)
    return -1;

  if (parse_methods(c, g, where, &r->methods) != 0 ||
      get_bool(c, g, where, "spill", &r->spill) != 0 ||
      get_duration(c, g, where, "wait_timeout", 0, &r->wait_timeout_ms) != 0 ||
      get_duration(c, g, where, "queue_timeout", 0, &r->queue_timeout_ms) != 0)
    return -1;
  r->spill_methods = r->methods != 0 ? r->methods : SL_METHODS_SPILL_DEFAULT;
  if (parse_expiry(c, g, where, cfg->limits.max_delay_ms, r) != 0)
    return -1;

  for (size_t i = 0; i < idx; i++) {
    if (sl__route_same(&cfg->routes[i], r))
      return fail(c, g,
                  "%s: duplicate route: routes[%zu] (line %d) has the same prefix, host and "
                  "methods",
                  where, i, cfg->routes[i].line);
  }
  return 0;
}

static int parse_routes(struct ctx *c, const config_setting_t *root, struct sl_config *cfg) {
  const config_setting_t *list = get_list(c, root, "routes", "route");

  if (list == NULL || (cfg->routes = alloc_elems(c, list, sizeof(*cfg->routes))) == NULL ||
      parse_elems(c, list, &cfg->n_routes, parse_route, cfg) != 0)
    return -1;
  sl__routes_sort(cfg->routes, cfg->n_routes);
  return 0;
}

/* ---- load --------------------------------------------------------------- */

static void config_free(struct sl_config *cfg) {
  free(cfg->path);
  free(cfg->listen.text);
  free(cfg->pid_file);
  free(cfg->admin.listen.text);
  free(cfg->admin.token);
  free(cfg->admin.token_file);
  free(cfg->log.file);
  free(cfg->log.access_file);
  free(cfg->spool.dir);
  free(cfg->status_prefix);
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    free(cfg->upstreams[i].name);
    free(cfg->upstreams[i].address.text);
  }
  free(cfg->upstreams);
  for (size_t i = 0; i < cfg->n_routes; i++) {
    free(cfg->routes[i].prefix);
    free(cfg->routes[i].host);
    free(cfg->routes[i].upstream_name);
  }
  free(cfg->routes);
  free(cfg);
}

/*
 * Builds a config from the parsed tree <lc> whose main text is <text>. On
 * success stores it in <out> with one reference; on failure frees whatever
 * was built. Returns 0 or -1.
 */
static int build(struct ctx *c, config_t *lc, const char *text, struct sl_config **out) {
  const config_setting_t *root = config_root_setting(lc);
  struct sl_config *cfg;

  if (check_int_literals(c, text) != 0)
    return -1;
  cfg = calloc(1, sizeof(*cfg));
  if (cfg == NULL)
    return fail(c, NULL, "out of memory");
  cfg->refs = 1;
  if (set_string(c, NULL, &cfg->path, c->name) != 0 || set_defaults(c, cfg) != 0 ||
      check_keys(c, root, "", top_keys) != 0 ||
      get_addr(c, root, "", "listen", true, &cfg->listen) != 0 ||
      get_path(c, root, "", "pid_file", &cfg->pid_file) != 0 || parse_admin(c, root, cfg) != 0 ||
      parse_log(c, root, cfg) != 0 || parse_limits(c, root, cfg) != 0 ||
      parse_spool(c, root, cfg) != 0 || parse_upstreams(c, root, cfg) != 0 ||
      parse_routes(c, root, cfg) != 0 || parse_spill_keys(c, root, cfg) != 0)
    goto fail;
  *out = cfg;
  return 0;

fail:
  config_free(cfg);
  return -1;
}

/* Reports the syntax error libconfig found in <lc>. */
static int fail_syntax(struct ctx *c, const config_t *lc) {
  const char *file = config_error_file(lc) != NULL ? config_error_file(lc) : c->name;

  if (c->errlen > 0)
    snprintf(c->err, c->errlen, "%s:%d: %s", file, config_error_line(lc),
             config_error_text(lc) != NULL ? config_error_text(lc) : "syntax error");
  return -1;
}

/* Reads the whole file at <path> into a NUL-terminated heap string. */
static char *read_file(struct ctx *c, const char *path) {
  FILE *f = fopen(path, "rb");
  char *text = NULL;
  size_t len = 0, cap = 0;

  if (f == NULL) {
    fail(c, NULL, "cannot open: %s", strerror(errno));
    return NULL;
  }
  for (;;) {
    size_t n;

    if (cap - len < 4096) {
      char *p = realloc(text, cap + 65536);

      if (p == NULL) {
        fail(c, NULL, "out of memory");
        goto fail;
      }
      text = p;
      cap += 65536;
    }
    n = fread(text + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
  }
  if (ferror(f)) {
    fail(c, NULL, "cannot read: %s", strerror(errno));
    goto fail;
  }
  fclose(f);
  text[len] = '\0';
  return text;

fail:
  fclose(f);
  free(text);
  return NULL;
}

int sl_config_load(const char *path, struct sl_config **out, char *err, size_t errlen) {
  struct ctx c = {path, err, errlen};
  config_t lc;
  char *text;
  int rc = -1;

  *out = NULL;
  if (errlen > 0)
    err[0] = '\0';
  /* Read once ourselves for a precise I/O error and for the literal check,
   * then let libconfig read the file so that its settings and @include files
   * carry their file names. */
  text = read_file(&c, path);
  if (text == NULL)
    return -1;
  config_init(&lc);
  if (config_read_file(&lc, path) != CONFIG_TRUE) {
    if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
      fail(&c, NULL, "cannot read: %s", strerror(errno));
    else
      fail_syntax(&c, &lc);
    goto done;
  }
  rc = build(&c, &lc, text, out);
done:
  config_destroy(&lc);
  free(text);
  return rc;
}

int sl_config_load_string(const char *text, const char *name, struct sl_config **out, char *err,
                          size_t errlen) {
  struct ctx c = {name, err, errlen};
  config_t lc;
  int rc = -1;

  *out = NULL;
  if (errlen > 0)
    err[0] = '\0';
  config_init(&lc);
  if (config_read_string(&lc, text) != CONFIG_TRUE)
    fail_syntax(&c, &lc);
  else
    rc = build(&c, &lc, text, out);
  config_destroy(&lc);
  return rc;
}

struct sl_config *sl_config_ref(struct sl_config *cfg) {
  cfg->refs++;
  return cfg;
}

void sl_config_unref(struct sl_config *cfg) {
  if (cfg == NULL)
    return;
  if (--cfg->refs == 0)
    config_free(cfg);
}

const struct sl_upstream_config *sl_config_upstream(const struct sl_config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    if (strcmp(cfg->upstreams[i].name, name) == 0)
      return &cfg->upstreams[i];
  }
  return NULL;
}
