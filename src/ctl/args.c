/*
 * The command line of sluicectl into struct sl_ctl_args. No I/O: a mistake comes back as one
 * line for the caller to print with the usage (exit 2), before anything is sent.
 *
 * Options may stand before or after the command (GNU getopt permutes them). Options that
 * say where and how to talk (-c, --admin, --listen, --token, --timeout, --json) go with
 * every command; the others belong to one command each, and given to another they are a
 * mistake rather than silently ignored.
 *
 * @thread main
 */
#include "ctl.h"

#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/ledger.h"
#include "sluice/units.h"
#include "sluice/util.h"

const char sl_ctl_usage[] =
    "usage: sluicectl [OPTIONS] COMMAND [ARGS]\n"
    "commands:\n"
    "  status [UPSTREAM] [--watch]    state, rate, backlog, oldest age and ETA of each upstream\n"
    "  pause UPSTREAM                 stop replaying its backlog (spilling goes on)\n"
    "  resume UPSTREAM                replay it again\n"
    "  rate UPSTREAM N                set its rate to N requests/s until the next reload\n"
    "  reload                         reload the config file, as SIGHUP does\n"
    "  dead list [FILTERS]            list dead letters\n"
    "  dead show ID                   one dead letter in full\n"
    "  dead redrive FILTERS | --all   queue the matching dead letters again\n"
    "  dead purge FILTERS | --all     delete the matching dead letters\n"
    "  request ID                     the status of a spilled request\n"
    "  cancel ID                      cancel a queued request\n"
    "filters (dead):\n"
    "  --upstream NAME  --id ID  --status CODE|Nxx  --older-than DURATION\n"
    "  --newer-than DURATION  --reason TEXT\n"
    "options:\n"
    "  -c, --config FILE     config file to read the addresses and token from\n"
    "                        (default " SL_CTL_DEFAULT_CONFIG ", if it exists)\n"
    "  --admin HOST:PORT     the admin listener (default: admin.listen)\n"
    "  --listen HOST:PORT    the client listener, for request and cancel (default: listen)\n"
    "  --token TOKEN         the admin token (default: $" SL_CTL_TOKEN_ENV ", then admin.token)\n"
    "  --timeout DURATION    per request (default 5s)\n"
    "  -j, --json            print the server's JSON\n"
    "  -w, --watch           status: redraw every second until Ctrl-C\n"
    "  -h, --help            this text;  -V, --version  the version\n"
    "exit status: 0 ok, 1 refused or failed, 2 usage, 3 unreachable, 4 token missing or wrong,\n"
    "             5 not found, 6 config file error, 130 interrupted (see sluicectl(1))\n";

enum {
  OPT_ADMIN = 256,
  OPT_LISTEN,
  OPT_TOKEN,
  OPT_TIMEOUT,
  OPT_UPSTREAM,
  OPT_ID,
  OPT_STATUS,
  OPT_OLDER,
  OPT_NEWER,
  OPT_REASON,
  OPT_ALL,
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"admin", required_argument, NULL, OPT_ADMIN},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, 'j'},
    {"watch", no_argument, NULL, 'w'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"upstream", required_argument, NULL, OPT_UPSTREAM},
    {"id", required_argument, NULL, OPT_ID},
    {"status", required_argument, NULL, OPT_STATUS},
    {"older-than", required_argument, NULL, OPT_OLDER},
    {"newer-than", required_argument, NULL, OPT_NEWER},
    {"reason", required_argument, NULL, OPT_REASON},
    {"all", no_argument, NULL, OPT_ALL},
    {NULL, 0, NULL, 0},
};

/* The commands and how many arguments each takes after its name (dead's verbs counted
 * with it: "dead show" takes one). */
static const struct {
  const char *name, *verb;
  enum sl_ctl_command command;
  int min_args, max_args;
} commands[] = {
    {"status", NULL, SL_CTL_STATUS, 0, 1},      {"pause", NULL, SL_CTL_PAUSE, 1, 1},
    {"resume", NULL, SL_CTL_RESUME, 1, 1},      {"rate", NULL, SL_CTL_RATE, 2, 2},
    {"reload", NULL, SL_CTL_RELOAD, 0, 0},      {"dead", "list", SL_CTL_DEAD_LIST, 0, 0},
    {"dead", "show", SL_CTL_DEAD_SHOW, 1, 1},   {"dead", "redrive", SL_CTL_DEAD_REDRIVE, 0, 0},
    {"dead", "purge", SL_CTL_DEAD_PURGE, 0, 0}, {"request", NULL, SL_CTL_REQUEST, 1, 1},
    {"cancel", NULL, SL_CTL_CANCEL, 1, 1},      {"help", NULL, SL_CTL_HELP, 0, 0},
    {"version", NULL, SL_CTL_VERSION, 0, 0},
};

/* Which command-specific options were given, to refuse them where they do not belong. */
struct seen {
  const char *watch, *all, *dead_filter, *upstream_opt;
};

/* Writes the reason into <err> and returns -1. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static bool valid_id(const char *s) {
  uint8_t id[16];

  return sl_ledger_id_parse(s, strlen(s), id) == 0;
}

/* Parses a duration option's <value> into <*ms>. */
static int duration_option(const char *name, const char *value, uint64_t *ms, char *err,
                           size_t errlen) {
  if (sl_duration_parse(value, ms) != 0) {
    snprintf(err, errlen, "%s: '%s' is not a duration (e.g. 30s, 15m, 2h, 1d, 1h30m)", name, value);
    return -1;
  }
  return 0;
}

/* Where the options that only store their text (-c, --admin, --listen, --token) go; NULL for
 * the others. */
static const char **text_option(struct sl_ctl_args *out, int c) {
  switch (c) {
  case 'c':
    return &out->config;
  case OPT_ADMIN:
    return &out->admin;
  case OPT_LISTEN:
    return &out->listen;
  case OPT_TOKEN:
    return &out->token;
  default:
    return NULL;
  }
}

/* Reads the options; the other words are left in argv[optind..] for the command. */
static int parse_options(int argc, char **argv, struct sl_ctl_args *out, struct seen *seen,
                         char *err, size_t errlen) {
  int c;

  optind = 0; /* glibc: start afresh (the tests parse many command lines) */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":c:jwhV", long_options, NULL)) != -1) {
    const char *opt = argv[optind - 1];
    const char **text = text_option(out, c);

    if (text != NULL) {
      *text = optarg;
      continue;
    }
    switch (c) {
    case OPT_TIMEOUT:
      if (duration_option("--timeout", optarg, &out->timeout_ms, err, errlen) != 0)
        return -1;
      out->timeout_given = true;
      if (out->timeout_ms == 0)
        return fail(err, errlen, "--timeout must be above 0");
      break;
    case 'j':
      out->json = true;
      break;
    case 'w':
      out->watch = true;
      seen->watch = "--watch";
      break;
    case 'h':
      out->command = SL_CTL_HELP;
      return 1;
    case 'V':
      out->command = SL_CTL_VERSION;
      return 1;
    case OPT_UPSTREAM:
      out->filter.upstream = optarg;
      seen->upstream_opt = "--upstream";
      break;
    case OPT_ID:
      if (!valid_id(optarg))
        return fail(err, errlen, "--id: '%s' is not an id (32 hex digits)", optarg);
      out->filter.id = optarg;
      seen->dead_filter = "--id";
      break;
    case OPT_STATUS:
      if (sl_ctl_filter_set_status(&out->filter, optarg) != 0)
        return fail(err, errlen, "--status: '%s' is not an HTTP status (503) or class (5xx)",
                    optarg);
      seen->dead_filter = "--status";
      break;
    case OPT_OLDER:
    case OPT_NEWER: {
      bool older = c == OPT_OLDER;

      seen->dead_filter = older ? "--older-than" : "--newer-than";
      if (duration_option(seen->dead_filter, optarg,
                          older ? &out->filter.older_ms : &out->filter.newer_ms, err, errlen) != 0)
        return -1;
      *(older ? &out->filter.has_older : &out->filter.has_newer) = true;
      break;
    }
    case OPT_REASON:
      if (optarg[0] == '\0')
        return fail(err, errlen, "--reason needs a text to look for");
      out->filter.reason = optarg;
      seen->dead_filter = "--reason";
      break;
    case OPT_ALL:
      out->all = true;
      seen->all = "--all";
      break;
    case ':':
      return fail(err, errlen, "%s needs a value", opt);
    default:
      if (optopt != 0) {
        char name[3] = {'-', (char)optopt, '\0'};
        return fail(err, errlen, "unknown option %s", name);
      }
      return fail(err, errlen, "unknown option %s", opt);
    }
  }
  return 0;
}

/* Whether the options in <seen> fit out->command; if not, says which does not. */
static int check_options(const struct sl_ctl_args *out, const struct seen *seen, char *err,
                         size_t errlen) {
  enum sl_ctl_command cmd = out->command;
  bool dead_bulk =
      cmd == SL_CTL_DEAD_LIST || cmd == SL_CTL_DEAD_REDRIVE || cmd == SL_CTL_DEAD_PURGE;

  if (seen->watch != NULL && cmd != SL_CTL_STATUS)
    return fail(err, errlen, "%s goes with status only", seen->watch);
  if (seen->dead_filter != NULL && !dead_bulk)
    return fail(err, errlen, "%s goes with dead list, redrive and purge only", seen->dead_filter);
  if (seen->upstream_opt != NULL && !dead_bulk && cmd != SL_CTL_DEAD_SHOW)
    return fail(err, errlen,
                "%s goes with the dead commands (status, pause, resume and rate take the "
                "upstream as an argument)",
                seen->upstream_opt);
  if (seen->all != NULL && cmd != SL_CTL_DEAD_REDRIVE && cmd != SL_CTL_DEAD_PURGE)
    return fail(err, errlen, "%s goes with dead redrive and purge only", seen->all);
  if ((cmd == SL_CTL_DEAD_REDRIVE || cmd == SL_CTL_DEAD_PURGE) && out->all &&
      sl_ctl_filter_narrows(&out->filter))
    return fail(err, errlen, "--all and a filter exclude each other");
  if ((cmd == SL_CTL_DEAD_REDRIVE || cmd == SL_CTL_DEAD_PURGE) && !out->all &&
      !sl_ctl_filter_narrows(&out->filter))
    return fail(err, errlen,
                "dead %s acts on every dead letter of every upstream only with --all; or "
                "narrow it with --upstream, --id, --status, --older-than, --newer-than or "
                "--reason",
                cmd == SL_CTL_DEAD_REDRIVE ? "redrive" : "purge");
  if (out->filter.has_older && out->filter.has_newer &&
      out->filter.newer_ms <= out->filter.older_ms)
    return fail(err, errlen, "--newer-than must be longer than --older-than, or nothing can match");
  return 0;
}

/* Reads the command's arguments <words> (<n> of them). */
static int parse_arguments(struct sl_ctl_args *out, char **words, int n, char *err, size_t errlen) {
  switch (out->command) {
  case SL_CTL_STATUS:
    out->upstream = n > 0 ? words[0] : NULL;
    break;
  case SL_CTL_PAUSE:
  case SL_CTL_RESUME:
    out->upstream = words[0];
    break;
  case SL_CTL_RATE: {
    char *end;

    out->upstream = words[0];
    out->rate = strtod(words[1], &end);
    if (words[1][0] == '\0' || *end != '\0' || !isfinite(out->rate) || out->rate <= 0 ||
        out->rate > 1e9)
      return fail(err, errlen,
                  "rate: '%s' is not a rate: give requests per second, a number above 0 "
                  "(to stop the drain, use pause)",
                  words[1]);
    break;
  }
  case SL_CTL_DEAD_SHOW:
  case SL_CTL_REQUEST:
  case SL_CTL_CANCEL:
    if (!valid_id(words[0]))
      return fail(err, errlen, "'%s' is not a request id (32 hex digits)", words[0]);
    out->id = words[0];
    break;
  default:
    break;
  }
  return 0;
}

int sl_ctl_args_parse(int argc, char **argv, struct sl_ctl_args *out, char *err, size_t errlen) {
  struct seen seen = {0};
  char **words;
  int n, rc;
  size_t i;

  memset(out, 0, sizeof(*out));
  out->timeout_ms = SL_CTL_DEFAULT_TIMEOUT_MS;
  rc = parse_options(argc, argv, out, &seen, err, errlen);
  if (rc != 0)
    return rc < 0 ? -1 : 0; /* 1: --help or --version, which end the parse */
  words = argv + optind;
  n = argc - optind;
  if (n == 0)
    return fail(err, errlen, "no command given");
  for (i = 0; i < sl_countof(commands); i++) {
    if (strcmp(words[0], commands[i].name) != 0)
      continue;
    if (commands[i].verb == NULL || (n > 1 && strcmp(words[1], commands[i].verb) == 0))
      break;
  }
  if (i == sl_countof(commands)) {
    if (strcmp(words[0], "dead") == 0) {
      if (n > 1)
        return fail(err, errlen, "dead: unknown verb '%s' (list, show, redrive, purge)", words[1]);
      return fail(err, errlen, "dead needs a verb: list, show, redrive or purge");
    }
    return fail(err, errlen, "unknown command '%s'", words[0]);
  }
  out->command = commands[i].command;
  words += commands[i].verb ? 2 : 1;
  n -= commands[i].verb ? 2 : 1;
  if (n < commands[i].min_args || n > commands[i].max_args) {
    snprintf(err, errlen, "%s%s%s: %s", commands[i].name, commands[i].verb ? " " : "",
             commands[i].verb ? commands[i].verb : "",
             n < commands[i].min_args ? "missing argument" : "too many arguments");
    return -1;
  }
  if (parse_arguments(out, words, n, err, errlen) != 0)
    return -1;
  return check_options(out, &seen, err, errlen);
}
